/* libFuzzer target: the image decoders (PNG, JPEG, WebP, chosen by magic bytes) on
 * arbitrary bytes. On success the image goes through the input path the pipeline uses
 * (flatten, mask, a small resize, blur, NCHW), so those see fuzzer-shaped images too. */
#include <stdint.h>

#include "base/alloc.h"
#include "pipeline/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    imgd_image_limits lim = {.pixels_max = 1u << 20}; /* keep each input fast */
    imgd_image        img = {0}, rgb = {0}, mask = {0}, small = {0};
    if (imgd_image_decode(data, size, "fuzz", &lim, &img) != IMGD_OK) return 0;
    if (imgd_image_to_rgb(&img, &rgb) == IMGD_OK &&
        imgd_image_resize(&rgb, 9, 7, IMGD_RESIZE_LANCZOS, &small) == IMGD_OK) {
        float *x = imgd_malloc(sizeof *x * 3 * 9 * 7);
        if (x) (void)imgd_image_to_nchw(&small, x);
        imgd_free(x);
    }
    if (imgd_image_to_mask(&img, &mask) == IMGD_OK) {
        (void)imgd_image_blur(&mask, 2.0f, IMGD_BLUR_PIL);
    }
    imgd_image_free(&img);
    imgd_image_free(&rgb);
    imgd_image_free(&mask);
    imgd_image_free(&small);
    return 0;
}
