/* ControlNet control images: the built-in preprocessors that need no model (canny edges,
 * scribble / lineart thresholds, invert) and the resize modes of A1111's ControlNet
 * extension (just resize, crop and resize, resize and fill), ending in the [3, H, W] float
 * image in [0, 1] that diffusers' ControlNet pipeline feeds the model.
 *
 *     imgd_image rgb = ..., edges = {0}, fitted = {0};
 *     imgd_control_canny(&rgb, 100, 200, &edges);                       // c = 1, 0 / 255
 *     imgd_control_fit(&edges, 512, 512, IMGD_CONTROL_RESIZE_CROP, true, &fitted);
 *     imgd_image_to_nchw(&fitted, x);                                   // [3, 512, 512]
 *
 * Every call returns IMGD_OK, IMGD_E_INVALID_ARG (empty image, bad size or mode) or
 * IMGD_E_NOMEM / IMGD_E_TOO_LARGE from the allocation; *out is written only on success
 * (overwritten, not freed). Thread-safety: safe from any thread on distinct images.
 * Layer: pipeline. */
#ifndef IMGD_PIPELINE_CONTROL_PRE_H
#define IMGD_PIPELINE_CONTROL_PRE_H

#include "imgd.h"
#include "pipeline/image.h"

/* OpenCV's cv2.Canny(img, low, high) with its defaults (aperture 3, L1 gradient), which is
 * what A1111's canny preprocessor and controlnet_aux's CannyDetector call: per channel 3x3
 * Sobel with replicated borders; at each pixel the channel of largest |dx| + |dy|;
 * non-maximum suppression along the gradient direction quantised to 0/45/90/135 degrees
 * with OpenCV's tie rules (fixed-point tan 22.5 degrees; magnitude 0 outside the image);
 * pixels above floor(high) are edges, pixels above floor(low) are edges when 8-connected to
 * one (hysteresis). low > high are swapped, as OpenCV does. img: c = 1, 3 or 4 (alpha is
 * ignored). out: c = 1, 255 = edge, 0 elsewhere. */
imgd_status imgd_control_canny(const imgd_image *img, float low, float high, imgd_image *out);

/* Binarises on the darkest channel m = min(R, G, B) (gray: the value), as A1111's
 * preprocessors do: dark_lines true (scribble: black strokes on white) gives 255 where
 * m < threshold; false (lineart "threshold": white lines on black) 255 where m > threshold.
 * out: c = 1. */
imgd_status imgd_control_threshold(const imgd_image *img, float threshold, bool dark_lines,
                                   imgd_image *out);

/* 255 - v on every colour channel (A1111's "invert": white background, black lines). The
 * channel count is kept; alpha is copied. */
imgd_status imgd_control_invert(const imgd_image *img, imgd_image *out);

/* Where a w x h image lands in a W x H target under a resize mode (A1111's detectmap_proc):
 *   JUST  rw x rh = W x H, offset 0.
 *   CROP  k = max(W / w, H / h); rw = round(w k), rh = round(h k) (round half to even, as
 *         numpy); the target is the window at (ox, oy) = ((rw - W) / 2, (rh - H) / 2) of
 *         the resized image (floor division).
 *   FILL  k = min(W / w, H / h); same rounding; the resized image is pasted at (ox, oy) =
 *         ((W - rw) / 2, (H - rh) / 2) of the target, the rest is the median colour of the
 *         source's border pixels.
 * Returns false for sizes < 1 or an unknown mode. */
bool imgd_control_fit_geometry(int32_t w, int32_t h, int32_t W, int32_t H, int32_t mode,
                               int32_t *rw, int32_t *rh, int32_t *ox, int32_t *oy);

/* Resizes img (any channel count) to W x H under mode with Pillow's Lanczos. binary: the
 * image is a 0/255 map (canny, scribble, lineart): the result is re-binarised at 127 so
 * edges stay hard, as A1111's high-quality resize of binary maps does. */
imgd_status imgd_control_fit(const imgd_image *img, int32_t W, int32_t H, int32_t mode, bool binary,
                             imgd_image *out);

/* spec's preprocessor alone on an RGB image (none: a copy); *binary tells whether the
 * result is a 0/255 map (canny, scribble, lineart) for imgd_control_fit. */
imgd_status imgd_control_preprocess(const imgd_image *rgb, const imgd_control_spec *spec,
                                    imgd_image *out, bool *binary);

/* The whole path of one control image: to RGB (alpha on white), the spec's preprocessor,
 * the resize mode to W x H, then [3, H, W] floats in [0, 1] into out (3 W H floats). */
imgd_status imgd_control_prepare(const imgd_image_u8 *src, const imgd_control_spec *spec, int32_t W,
                                 int32_t H, float *out);

#endif
