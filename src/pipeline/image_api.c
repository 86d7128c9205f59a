/* The public image calls (imgd.h) over the pipeline's image codecs. */
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "pipeline/image.h"

imgd_status imgd_image_read(const char *path, imgd_image_u8 *out) {
    if (!path || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_image_read: NULL argument");
    imgd_image  im = {0};
    imgd_status st = imgd_image_load(path, NULL, &im);
    if (st != IMGD_OK) return st;
    *out = (imgd_image_u8){im.w, im.h, im.c, im.px};
    return IMGD_OK;
}

void imgd_image_u8_free(imgd_image_u8 *img) {
    if (!img) return;
    imgd_free(img->px);
    memset(img, 0, sizeof *img);
}

imgd_status imgd_image_write(const char *path, const imgd_image_u8 *img, const char *parameters,
                             int32_t quality) {
    if (!path || !img) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_image_write: NULL argument");
    if (quality < 0 || quality > 100)
        return imgd_fail(IMGD_E_INVALID_ARG, "image quality %d: expected 1..100 (0 = default)",
                         (int)quality);
    imgd_image_save_params sp = imgd_image_save_params_default();
    imgd_status            st = imgd_image_format_from_path(path, &sp.format);
    if (st != IMGD_OK) return st;
    sp.quality    = quality ? quality : 95;
    sp.parameters = parameters;
    imgd_image im = {img->w, img->h, img->c, img->px};
    return imgd_image_save(&im, path, &sp);
}
