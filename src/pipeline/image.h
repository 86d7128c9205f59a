/* Image input and output for the generation pipeline.
 *
 * Decoding: PNG (libpng), JPEG (libjpeg-turbo) and WebP (libwebp) from a file or a memory
 * buffer. The format is found from the first bytes, never from a file name. Every decoder
 * refuses images over a pixel cap before it allocates them, and a corrupt input gets an
 * IMGD_E_FORMAT message that names the source and the problem.
 *
 * Encoding: PNG with the A1111 generation parameters in a `parameters` tEXt chunk (iTXt
 * when the text is not Latin-1), JPEG and WebP with the same text in an EXIF UserComment,
 * which is where A1111 and civitai read them back. Files are written atomically.
 *
 * Pixel processing: float conversions for the VAE, Lanczos / nearest resizing, the inpaint
 * mask path (alpha or luminance, Gaussian blur, nearest downscale to latent size).
 *
 * Typical img2img / inpaint input path:
 *
 *     imgd_image img = {0}, rgb = {0}, sized = {0};
 *     imgd_image_load("init.png", NULL, &img);          // c = 1, 3 or 4
 *     imgd_image_to_rgb(&img, &rgb);                     // alpha flattened on white
 *     imgd_image_resize(&rgb, W, H, IMGD_RESIZE_LANCZOS, &sized);
 *     imgd_image_to_nchw(&sized, x);                     // x: float[3*H*W] in [0,1]
 *
 *     imgd_image msrc = {0}, mask = {0}, msized = {0};
 *     imgd_image_load("mask.png", NULL, &msrc);
 *     imgd_image_to_mask(&msrc, &mask);                  // c = 1, 255 = repaint
 *     imgd_image_resize(&mask, W, H, IMGD_RESIZE_LANCZOS, &msized);
 *     imgd_image_blur(&msized, 4.0f, IMGD_BLUR_PIL);     // A1111 "Mask blur: 4"
 *     imgd_image_gray_to_float(&msized, m);              // m: float[H*W]
 *     imgd_mask_to_latent(m, W, H, W / 8, H / 8, lm);    // binarised, nearest
 *
 * Every call returns an imgd_status (statuses listed per function); error text is in
 * imgd_last_error(). The A1111 text itself is built by pipeline/infotext.h.
 * Thread-safety: every function is safe from any thread on distinct images.
 * Layer: pipeline; depends on base only. Since: 0.1 */
#ifndef IMGD_PIPELINE_IMAGE_H
#define IMGD_PIPELINE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* ---- the image -------------------------------------------------------------------------- */

/* An 8-bit image, rows top to bottom, pixels left to right, channels interleaved:
 *   c == 1  gray (luminance)
 *   c == 3  R, G, B
 *   c == 4  R, G, B, A (straight, not premultiplied; 255 = opaque)
 * The row stride is exactly w * c bytes. px is owned by the image (imgd_malloc) and
 * released with imgd_image_free(). A zeroed struct ({0}) is an empty image. */
typedef struct imgd_image {
    int32_t  w, h; /* pixels, >= 1 for a non-empty image */
    int32_t  c;    /* channels: 1, 3 or 4 */
    uint8_t *px;   /* w * h * c bytes */
} imgd_image;

/* Default pixel cap of the decoders: 8192 x 8192. */
#define IMGD_IMAGE_PIXELS_MAX_DEFAULT ((uint64_t)8192 * 8192)

/* Allocates a zero-filled w x h image with c channels into *out (which is overwritten, not
 * freed). Returns IMGD_E_INVALID_ARG (w or h < 1, c not 1/3/4), IMGD_E_TOO_LARGE (the byte
 * size overflows), IMGD_E_NOMEM. *out is written only on success. */
imgd_status imgd_image_init(imgd_image *out, int32_t w, int32_t h, int32_t c);

/* Releases px and zeroes the struct. NULL and empty images are no-ops. */
void imgd_image_free(imgd_image *img);

/* ---- formats ---------------------------------------------------------------------------- */

typedef enum imgd_image_format {
    IMGD_IMAGE_FORMAT_PNG  = 1,
    IMGD_IMAGE_FORMAT_JPEG = 2,
    IMGD_IMAGE_FORMAT_WEBP = 3,
    IMGD_IMAGE_FORMAT_COUNT
} imgd_image_format;

/* "png", "jpeg", "webp", or "unknown" for a value outside the enum. */
const char *imgd_image_format_name(imgd_image_format fmt);

/* Finds the format from the first bytes (magic numbers; names play no part). name is used
 * in messages only. Returns IMGD_E_FORMAT (empty, or not an image we know; the message
 * shows the first bytes), IMGD_E_UNSUPPORTED (a recognised image format we do not read:
 * GIF, BMP, TIFF, AVIF/HEIF; the message names it). *out is written only on success. */
imgd_status imgd_image_sniff(const void *data, size_t size, const char *name,
                             imgd_image_format *out);

/* Output format from a path's extension (.png, .jpg, .jpeg, .webp; case-insensitive), for
 * callers that choose the format of a file they write. IMGD_E_INVALID_ARG otherwise. */
imgd_status imgd_image_format_from_path(const char *path, imgd_image_format *out);

/* ---- decoding --------------------------------------------------------------------------- */

typedef struct imgd_image_limits {
    uint64_t pixels_max; /* w * h; 0 = IMGD_IMAGE_PIXELS_MAX_DEFAULT */
} imgd_image_limits;

/* Decodes a PNG, JPEG or WebP image from memory.
 *
 * data, size  the encoded bytes; borrowed for the call only.
 * name        names the source in messages ("init.png", "request.mask"); may be NULL.
 * lim         may be NULL for defaults.
 * out         on IMGD_OK receives a new image (overwritten, not freed); untouched on failure.
 *
 * What comes out:
 *   - gray stays c = 1; gray with alpha (or with a tRNS colour) becomes RGBA;
 *   - RGB is c = 3; anything with alpha is c = 4 (palette + tRNS included);
 *   - PNG: 1/2/4-bit gray is scaled to 8 bits, palettes expanded, 16-bit samples reduced
 *     to their high byte (as Pillow does for RGB), interlaced images de-interlaced;
 *     gamma, sRGB and ICC chunks are ignored (as Pillow and A1111 do);
 *   - JPEG: gray stays gray, YCbCr becomes RGB, CMYK/YCCK become RGB (Adobe inversion
 *     handled), and the EXIF orientation is applied (as A1111's exif_transpose does);
 *   - WebP: the still image; animated WebP is refused.
 *
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (NULL data with size > 0, or NULL out);
 * IMGD_E_FORMAT (corrupt or truncated; the message names the source and the problem);
 * IMGD_E_UNSUPPORTED (GIF, BMP, TIFF, AVIF/HEIF, animated WebP); IMGD_E_TOO_LARGE (over
 * lim->pixels_max; the message gives the size and the limit); IMGD_E_NOMEM. */
imgd_status imgd_image_decode(const void *data, size_t size, const char *name,
                              const imgd_image_limits *lim, imgd_image *out);

/* Like imgd_image_decode on the contents of the file at path (named in messages). Also
 * IMGD_E_IO when the file cannot be opened or is not a regular file. */
imgd_status imgd_image_load(const char *path, const imgd_image_limits *lim, imgd_image *out);

/* ---- encoding --------------------------------------------------------------------------- */

typedef struct imgd_image_save_params {
    imgd_image_format format;  /* required */
    int32_t           quality; /* JPEG and lossy WebP: 1..100, 0 = 80 (A1111's default); lossless
                                  WebP: compression effort 0..100, 0 = 80 */
    const char *parameters;    /* A1111 generation parameters (imgd_a1111_parameters in
                                  pipeline/infotext.h), UTF-8;
                                  NULL = none. Borrowed for the call. PNG: a `parameters` tEXt
                                  chunk, iTXt when not Latin-1. JPEG/WebP: EXIF UserComment
                                  ("UNICODE" + UTF-16, as A1111 writes with piexif) */
    bool lossless;             /* WebP only: lossless, with the RGB under transparent pixels
                                  kept exactly */
} imgd_image_save_params;

/* PNG, quality 0 (default), no parameters, lossy. */
imgd_image_save_params imgd_image_save_params_default(void);

/* Encodes img into a new buffer.
 *
 * img must be non-empty with c = 1, 3 or 4. PNG keeps the channels as they are (gray,
 * RGB, RGBA). JPEG has no alpha: RGBA is flattened on white first. WebP: gray is
 * expanded to RGB, alpha is kept.
 * out, len  on IMGD_OK *out receives a buffer owned by the caller (release with imgd_free)
 *           of *len bytes; untouched on failure.
 *
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (empty image, bad channel count, bad format or
 * quality, parameters not valid UTF-8); IMGD_E_TOO_LARGE (JPEG/WebP side over 65535 or
 * 16383, or parameters too long for one JPEG EXIF segment: about 32000 characters; PNG has
 * no such limit); IMGD_E_NOMEM; IMGD_E_INTERNAL (the codec library failed; the message
 * has its text). */
imgd_status imgd_image_encode(const imgd_image *img, const imgd_image_save_params *params,
                              uint8_t **out, size_t *len);

/* Encodes img and writes it to path atomically: a temporary file in the same folder is
 * written, fsynced and renamed over path, so readers never see a partial image. Returns
 * the statuses of imgd_image_encode and IMGD_E_IO (cannot create, write or rename; the
 * message has the path and errno text). On failure path is untouched and the temporary
 * file removed. */
imgd_status imgd_image_save(const imgd_image *img, const char *path,
                            const imgd_image_save_params *params);

/* ---- conversions ------------------------------------------------------------------------ */

/* A new c = 3 image: gray replicated, RGBA flattened on white exactly as Pillow's
 * alpha_composite over an opaque white background (≈ (a·c + 255·(255 − a)) / 255; what A1111
 * does to init images), RGB copied. IMGD_E_INVALID_ARG, IMGD_E_NOMEM.
 * *out is overwritten, not freed. */
imgd_status imgd_image_to_rgb(const imgd_image *img, imgd_image *out);

/* A new c = 1 inpainting mask, 255 = repaint, 0 = keep:
 *   - an RGBA image with any alpha below 255 gives its alpha channel (A1111: a mask drawn
 *     on a transparent layer repaints where it is opaque);
 *   - otherwise the luminance, L = (19595 R + 38470 G + 7471 B + 32768) >> 16, which is
 *     Pillow's convert("L") (what A1111 and diffusers do to masks); gray is copied.
 * The values are not binarised here: imgd_mask_to_latent and the 9-channel conditioning
 * binarise at 0.5. IMGD_E_INVALID_ARG, IMGD_E_NOMEM. */
imgd_status imgd_image_to_mask(const imgd_image *img, imgd_image *out);

/* Writes the image as 3 float planes [3, h, w] (NCHW without the batch) in [0, 1]:
 * out[(ch·h + y)·w + x] = px / 255. Gray is replicated; RGBA is flattened on white as in
 * imgd_image_to_rgb. out must hold 3·w·h floats. IMGD_E_INVALID_ARG on an empty image. */
imgd_status imgd_image_to_nchw(const imgd_image *img, float *out);

/* The inverse for VAE output: in is [3, h, w] in [0, 1]; each value is clamped to [0, 1]
 * and stored as round(x·255) (NaN becomes 0), which is how the conformance PNGs were made.
 * out receives a new c = 3 image (overwritten, not freed). IMGD_E_INVALID_ARG (NULL, w or
 * h < 1), IMGD_E_TOO_LARGE, IMGD_E_NOMEM. */
imgd_status imgd_image_from_nchw(const float *in, int32_t w, int32_t h, imgd_image *out);

/* Writes a c = 1 image as floats in [0, 1] (px / 255), row-major [h, w]. out must hold w·h
 * floats. IMGD_E_INVALID_ARG when img is empty or not c = 1. */
imgd_status imgd_image_gray_to_float(const imgd_image *img, float *out);

/* ---- resizing, blur, masks -------------------------------------------------------------- */

typedef enum imgd_resize_filter {
    /* Pillow's Image.resize(LANCZOS) bit for bit: separable Lanczos-3 whose support
     * widens by the scale factor when shrinking, 22-bit fixed-point weights, horizontal
     * pass first, 8-bit clip between passes. A1111's "Just resize" without an upscaler and
     * diffusers' image processor both use it. */
    IMGD_RESIZE_LANCZOS = 1,
    /* Pillow's NEAREST: source index floor((i + 0.5) · in / out). */
    IMGD_RESIZE_NEAREST = 2,
    IMGD_RESIZE_FILTER_COUNT
} imgd_resize_filter;

/* Resizes img to w x h into a new image with the same channel count (channels are
 * filtered independently: flatten alpha first, as A1111 does, if it matters). Same size
 * copies. IMGD_E_INVALID_ARG (empty image, w or h < 1, bad filter), IMGD_E_TOO_LARGE,
 * IMGD_E_NOMEM. *out is overwritten, not freed. */
imgd_status imgd_image_resize(const imgd_image *img, int32_t w, int32_t h,
                              imgd_resize_filter filter, imgd_image *out);

typedef enum imgd_blur_kind {
    /* Pillow's ImageFilter.GaussianBlur(radius) bit for bit: three extended box blurs
     * whose combined variance is radius² (Gwosdek et al.), horizontal then vertical,
     * edges extended. diffusers' mask_processor.blur and A1111 before 1.6 use it. */
    IMGD_BLUR_PIL = 1,
    /* A1111 1.6+ mask blur: cv2.GaussianBlur with sigma = radius and kernel size
     * 2·int(2.5·radius + 0.5) + 1, first along x then along y with 8-bit rounding between
     * (A1111 makes two calls), reflect-101 borders. Computed in double precision: OpenCV's
     * 8-bit fixed-point kernel is not reproduced, so a value may differ by a level. */
    IMGD_BLUR_A1111 = 2,
    IMGD_BLUR_KIND_COUNT
} imgd_blur_kind;

/* Blurs img in place with a Gaussian of the given radius in pixels (A1111's mask_blur).
 * radius <= 0 leaves the image unchanged. Any channel count. IMGD_E_INVALID_ARG (empty
 * image, radius not finite or over 1000, bad kind), IMGD_E_NOMEM (the image is then
 * unchanged). */
imgd_status imgd_image_blur(imgd_image *img, float radius, imgd_blur_kind kind);

/* The latent-space inpainting mask, as diffusers builds it: mask is [h, w] in [0, 1]
 * (1 = repaint), resized to [lh, lw] with torch's interpolate(mode="nearest") (source
 * index min(floor(i · in / out), in − 1), in float) and binarised: out = mask >= 0.5 ? 1 :
 * 0. Usually lw = w / 8, lh = h / 8. out must hold lw·lh floats. IMGD_E_INVALID_ARG on
 * NULL pointers or sizes < 1. */
imgd_status imgd_mask_to_latent(const float *mask, int32_t w, int32_t h, int32_t lw, int32_t lh,
                                float *out);

#endif
