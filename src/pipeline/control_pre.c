/* ControlNet control images: preprocessors without a model and A1111's resize modes (see
 * control_pre.h). */
#include "pipeline/control_pre.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"

/* ---- names (one table each) ----------------------------------------------------------- */

static const char *const k_pre_names[IMGD_CONTROL_PRE_COUNT]       = {"none", "canny", "scribble",
                                                                      "lineart", "invert"};
static const char *const k_resize_names[IMGD_CONTROL_RESIZE_COUNT] = {"just", "crop", "fill"};
_Static_assert(IMGD_ARRAY_LEN(k_pre_names) == IMGD_CONTROL_PRE_COUNT, "preprocessor names");
_Static_assert(IMGD_ARRAY_LEN(k_resize_names) == IMGD_CONTROL_RESIZE_COUNT, "resize names");

const char *imgd_control_pre_name(int32_t pre) {
    return pre >= 0 && pre < IMGD_CONTROL_PRE_COUNT ? k_pre_names[pre] : NULL;
}

bool imgd_control_pre_parse(const char *name, int32_t *out) {
    for (int32_t i = 0; name && i < IMGD_CONTROL_PRE_COUNT; i++) {
        if (strcmp(name, k_pre_names[i]) == 0) {
            if (out) *out = i;
            return true;
        }
    }
    return false;
}

const char *imgd_control_resize_name(int32_t mode) {
    return mode >= 0 && mode < IMGD_CONTROL_RESIZE_COUNT ? k_resize_names[mode] : NULL;
}

bool imgd_control_resize_parse(const char *name, int32_t *out) {
    for (int32_t i = 0; name && i < IMGD_CONTROL_RESIZE_COUNT; i++) {
        if (strcmp(name, k_resize_names[i]) == 0) {
            if (out) *out = i;
            return true;
        }
    }
    return false;
}

imgd_control_spec imgd_control_spec_default(void) {
    imgd_control_spec s;
    memset(&s, 0, sizeof s);
    s.scale       = 1.0f;
    s.start       = 0.0f;
    s.end         = 1.0f;
    s.preprocess  = IMGD_CONTROL_PRE_NONE;
    s.low         = 100.0f;
    s.high        = 200.0f;
    s.threshold   = 127.0f;
    s.resize_mode = IMGD_CONTROL_RESIZE_JUST;
    return s;
}

static bool image_ok(const imgd_image *img) {
    return img && img->px && img->w >= 1 && img->h >= 1 &&
           (img->c == 1 || img->c == 3 || img->c == 4);
}

/* ---- canny ------------------------------------------------------------------------------- */

/* OpenCV's fixed-point tan(22.5 deg) and its shift (imgproc/src/canny.cpp). */
#define CANNY_SHIFT 15
#define CANNY_TG22  13573

/* Per-pixel gradient of the channel with the largest L1 magnitude (first on ties), Sobel
 * 3x3 with replicated borders. */
static void sobel_max(const imgd_image *img, int32_t *dx, int32_t *dy, int32_t *mag) {
    int32_t w = img->w, h = img->h, cn = img->c == 4 ? 3 : img->c, C = img->c;
    for (int32_t y = 0; y < h; y++) {
        int32_t ym = y > 0 ? y - 1 : 0, yp = y + 1 < h ? y + 1 : h - 1;
        for (int32_t x = 0; x < w; x++) {
            int32_t xm = x > 0 ? x - 1 : 0, xp = x + 1 < w ? x + 1 : w - 1;
            int32_t bx = 0, by = 0, bm = -1;
            for (int32_t k = 0; k < cn; k++) {
#define P(yy, xx) ((int32_t)img->px[((size_t)(yy) * (size_t)w + (size_t)(xx)) * (size_t)C + k])
                int32_t gx =
                    (P(ym, xp) - P(ym, xm)) + 2 * (P(y, xp) - P(y, xm)) + (P(yp, xp) - P(yp, xm));
                int32_t gy =
                    (P(yp, xm) - P(ym, xm)) + 2 * (P(yp, x) - P(ym, x)) + (P(yp, xp) - P(ym, xp));
#undef P
                int32_t m = abs(gx) + abs(gy);
                if (m > bm) {
                    bm = m;
                    bx = gx;
                    by = gy;
                }
            }
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            dx[i]    = bx;
            dy[i]    = by;
            mag[i]   = bm;
        }
    }
}

/* Magnitude at (x, y), 0 outside the image (OpenCV pads its magnitude rows with zeros). */
static int32_t mag_at(const int32_t *mag, int32_t w, int32_t h, int32_t x, int32_t y) {
    if (x < 0 || y < 0 || x >= w || y >= h) return 0;
    return mag[(size_t)y * (size_t)w + (size_t)x];
}

/* OpenCV's non-maximum suppression: whether (x, y) survives along its gradient direction. */
static bool nms_keep(const int32_t *mag, const int32_t *dx, const int32_t *dy, int32_t w, int32_t h,
                     int32_t x, int32_t y) {
    size_t  i  = (size_t)y * (size_t)w + (size_t)x;
    int32_t m  = mag[i];
    int32_t xs = dx[i], ys = dy[i];
    int64_t ax = abs(xs), ay = (int64_t)abs(ys) << CANNY_SHIFT;
    int64_t tg22x = ax * CANNY_TG22;
    if (ay < tg22x) return m > mag_at(mag, w, h, x - 1, y) && m >= mag_at(mag, w, h, x + 1, y);
    int64_t tg67x = tg22x + (ax << (CANNY_SHIFT + 1));
    if (ay > tg67x) return m > mag_at(mag, w, h, x, y - 1) && m >= mag_at(mag, w, h, x, y + 1);
    int32_t s = (xs ^ ys) < 0 ? -1 : 1;
    return m > mag_at(mag, w, h, x - s, y - 1) && m > mag_at(mag, w, h, x + s, y + 1);
}

/* Hysteresis: every strong pixel (2) spreads to 8-connected weak ones (1); out = 255 on
 * the strong set. stack holds w * h indices. */
static void hysteresis(uint8_t *map, size_t *stack, int32_t w, int32_t h, uint8_t *out) {
    size_t n = (size_t)w * (size_t)h, top = 0;
    for (size_t i = 0; i < n; i++)
        if (map[i] == 2) stack[top++] = i;
    while (top > 0) {
        size_t  i = stack[--top];
        int32_t x = (int32_t)(i % (size_t)w), y = (int32_t)(i / (size_t)w);
        for (int32_t ddy = -1; ddy <= 1; ddy++) {
            for (int32_t ddx = -1; ddx <= 1; ddx++) {
                int32_t nx = x + ddx, ny = y + ddy;
                if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                size_t j = (size_t)ny * (size_t)w + (size_t)nx;
                if (map[j] != 1) continue;
                map[j]       = 2;
                stack[top++] = j;
            }
        }
    }
    for (size_t i = 0; i < n; i++) out[i] = map[i] == 2 ? 255 : 0;
}

imgd_status imgd_control_canny(const imgd_image *img, float low, float high, imgd_image *out) {
    if (!image_ok(img) || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "canny: empty image or not 1, 3 or 4 channels");
    if (!isfinite(low) || !isfinite(high) || low < 0 || high < 0 || low > 1e6f || high > 1e6f)
        return imgd_fail(IMGD_E_INVALID_ARG, "canny thresholds %g, %g: expected 0..2040",
                         (double)low, (double)high);
    if (low > high) {
        float t = low;
        low     = high;
        high    = t;
    }
    int32_t     lo = (int32_t)floorf(low), hi = (int32_t)floorf(high);
    int32_t     w = img->w, h = img->h;
    size_t      n   = (size_t)w * (size_t)h;
    int32_t    *dx  = imgd_malloc(n * sizeof *dx);
    int32_t    *dy  = imgd_malloc(n * sizeof *dy);
    int32_t    *mag = imgd_malloc(n * sizeof *mag);
    uint8_t    *map = imgd_malloc(n);
    size_t     *stk = imgd_malloc(n * sizeof *stk);
    imgd_image  res = {0};
    imgd_status st =
        dx && dy && mag && map && stk ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "canny: out of memory");
    if (st == IMGD_OK) st = imgd_image_init(&res, w, h, 1);
    if (st == IMGD_OK) {
        sobel_max(img, dx, dy, mag);
        /* 0: not an edge, 1: weak candidate, 2: strong */
        for (int32_t y = 0; y < h; y++) {
            for (int32_t x = 0; x < w; x++) {
                size_t  i = (size_t)y * (size_t)w + (size_t)x;
                int32_t m = mag[i];
                map[i]    = 0;
                if (m > lo && nms_keep(mag, dx, dy, w, h, x, y)) map[i] = m > hi ? 2 : 1;
            }
        }
        hysteresis(map, stk, w, h, res.px);
        *out = res;
    }
    imgd_free(dx);
    imgd_free(dy);
    imgd_free(mag);
    imgd_free(map);
    imgd_free(stk);
    return st;
}

/* ---- thresholds, invert ------------------------------------------------------------------ */

imgd_status imgd_control_threshold(const imgd_image *img, float threshold, bool dark_lines,
                                   imgd_image *out) {
    if (!image_ok(img) || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "threshold: empty image or not 1, 3 or 4 channels");
    if (!isfinite(threshold) || threshold < 0 || threshold > 255)
        return imgd_fail(IMGD_E_INVALID_ARG, "threshold %g: expected 0..255", (double)threshold);
    imgd_image  res = {0};
    imgd_status st  = imgd_image_init(&res, img->w, img->h, 1);
    if (st != IMGD_OK) return st;
    size_t  n  = (size_t)img->w * (size_t)img->h;
    int32_t cn = img->c == 4 ? 3 : img->c;
    for (size_t i = 0; i < n; i++) {
        uint8_t m = 255;
        for (int32_t k = 0; k < cn; k++) {
            uint8_t v = img->px[i * (size_t)img->c + (size_t)k];
            m         = v < m ? v : m;
        }
        bool on   = dark_lines ? (float)m < threshold : (float)m > threshold;
        res.px[i] = on ? 255 : 0;
    }
    *out = res;
    return IMGD_OK;
}

imgd_status imgd_control_invert(const imgd_image *img, imgd_image *out) {
    if (!image_ok(img) || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "invert: empty image or not 1, 3 or 4 channels");
    imgd_image  res = {0};
    imgd_status st  = imgd_image_init(&res, img->w, img->h, img->c);
    if (st != IMGD_OK) return st;
    size_t n = (size_t)img->w * (size_t)img->h * (size_t)img->c;
    for (size_t i = 0; i < n; i++) {
        bool alpha = img->c == 4 && i % 4 == 3;
        res.px[i]  = alpha ? img->px[i] : (uint8_t)(255 - img->px[i]);
    }
    *out = res;
    return IMGD_OK;
}

/* ---- resize modes ------------------------------------------------------------------------ */

bool imgd_control_fit_geometry(int32_t w, int32_t h, int32_t W, int32_t H, int32_t mode,
                               int32_t *rw, int32_t *rh, int32_t *ox, int32_t *oy) {
    if (w < 1 || h < 1 || W < 1 || H < 1 || mode < 0 || mode >= IMGD_CONTROL_RESIZE_COUNT)
        return false;
    int32_t a = W, b = H, x = 0, y = 0;
    if (mode != IMGD_CONTROL_RESIZE_JUST) {
        double k0 = (double)H / (double)h, k1 = (double)W / (double)w;
        double k = mode == IMGD_CONTROL_RESIZE_CROP ? fmax(k0, k1) : fmin(k0, k1);
        /* np.round: half to even, which nearbyint does in the default rounding mode */
        a = (int32_t)fmax(1.0, nearbyint((double)w * k));
        b = (int32_t)fmax(1.0, nearbyint((double)h * k));
        if (mode == IMGD_CONTROL_RESIZE_CROP) {
            x = a > W ? (a - W) / 2 : 0;
            y = b > H ? (b - H) / 2 : 0;
        } else {
            x = W > a ? (W - a) / 2 : 0;
            y = H > b ? (H - b) / 2 : 0;
        }
    }
    if (rw) *rw = a;
    if (rh) *rh = b;
    if (ox) *ox = x;
    if (oy) *oy = y;
    return true;
}

/* Median of each channel over the border pixels (first and last row, first and last
 * column, corners counted twice), as numpy's median of A1111's borders: the mean of the two
 * middle values for an even count, truncated to 8 bits. */
static void border_median(const imgd_image *img, uint8_t *color) {
    int32_t w = img->w, h = img->h, C = img->c;
    for (int32_t k = 0; k < C; k++) {
        size_t hist[256];
        memset(hist, 0, sizeof hist);
        size_t n = 0;
        for (int32_t x = 0; x < w; x++) {
            hist[img->px[(size_t)x * (size_t)C + (size_t)k]]++;
            hist[img->px[((size_t)(h - 1) * (size_t)w + (size_t)x) * (size_t)C + (size_t)k]]++;
            n += 2;
        }
        for (int32_t y = 0; y < h; y++) {
            hist[img->px[((size_t)y * (size_t)w) * (size_t)C + (size_t)k]]++;
            hist[img->px[((size_t)y * (size_t)w + (size_t)(w - 1)) * (size_t)C + (size_t)k]]++;
            n += 2;
        }
        /* values at sorted positions n/2 - 1 and n/2 (n is even) */
        size_t lo_pos = n / 2 - 1, hi_pos = n / 2, seen = 0;
        int    lo = -1, hi = -1;
        for (int v = 0; v < 256 && hi < 0; v++) {
            if (lo < 0 && seen + hist[v] > lo_pos) lo = v;
            if (seen + hist[v] > hi_pos) hi = v;
            seen += hist[v];
        }
        color[k] = (uint8_t)((lo + hi) / 2);
    }
}

imgd_status imgd_control_fit(const imgd_image *img, int32_t W, int32_t H, int32_t mode, bool binary,
                             imgd_image *out) {
    int32_t rw = 0, rh = 0, ox = 0, oy = 0;
    if (!image_ok(img) || !out ||
        !imgd_control_fit_geometry(img->w, img->h, W, H, mode, &rw, &rh, &ox, &oy))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "control image resize: empty image, target %dx%d or mode %d invalid",
                         (int)W, (int)H, (int)mode);
    imgd_image  sized = {0}, res = {0};
    imgd_status st = imgd_image_resize(img, rw, rh, IMGD_RESIZE_LANCZOS, &sized);
    if (st == IMGD_OK) st = imgd_image_init(&res, W, H, img->c);
    if (st != IMGD_OK) {
        imgd_image_free(&sized);
        return st;
    }
    size_t  C = (size_t)img->c;
    uint8_t fill[4];
    border_median(img, fill);
    for (int32_t y = 0; y < H; y++) {
        for (int32_t x = 0; x < W; x++) {
            uint8_t *d = res.px + ((size_t)y * (size_t)W + (size_t)x) * C;
            /* source pixel in the resized image: the window (crop) or the pasted area (fill) */
            int32_t sx = mode == IMGD_CONTROL_RESIZE_FILL ? x - ox : x + ox;
            int32_t sy = mode == IMGD_CONTROL_RESIZE_FILL ? y - oy : y + oy;
            if (sx < 0 || sy < 0 || sx >= rw || sy >= rh) {
                memcpy(d, fill, C);
                continue;
            }
            memcpy(d, sized.px + ((size_t)sy * (size_t)rw + (size_t)sx) * C, C);
        }
    }
    if (binary) {
        size_t n = (size_t)W * (size_t)H * C;
        for (size_t i = 0; i < n; i++) res.px[i] = res.px[i] > 127 ? 255 : 0;
    }
    imgd_image_free(&sized);
    *out = res;
    return IMGD_OK;
}

/* ---- the whole path ------------------------------------------------------------------------ */

imgd_status imgd_control_preprocess(const imgd_image *rgb, const imgd_control_spec *spec,
                                    imgd_image *out, bool *binary) {
    if (!rgb || !spec || !out || !binary || !rgb->px)
        return imgd_fail(IMGD_E_INVALID_ARG, "control image: NULL or empty");
    *binary = false;
    switch (spec->preprocess) {
    case IMGD_CONTROL_PRE_NONE: return imgd_image_to_rgb(rgb, out); /* a copy */
    case IMGD_CONTROL_PRE_CANNY:
        *binary = true;
        return imgd_control_canny(rgb, spec->low, spec->high, out);
    case IMGD_CONTROL_PRE_SCRIBBLE:
    case IMGD_CONTROL_PRE_LINEART:
        *binary = true;
        return imgd_control_threshold(rgb, spec->threshold,
                                      spec->preprocess == IMGD_CONTROL_PRE_SCRIBBLE, out);
    case IMGD_CONTROL_PRE_INVERT: return imgd_control_invert(rgb, out);
    default:
        return imgd_fail(IMGD_E_INVALID_ARG, "control preprocess %d: expected 0..%d",
                         (int)spec->preprocess, (int)IMGD_CONTROL_PRE_COUNT - 1);
    }
}

imgd_status imgd_control_prepare(const imgd_image_u8 *src, const imgd_control_spec *spec, int32_t W,
                                 int32_t H, float *out) {
    if (!src || !spec || !out || !src->px)
        return imgd_fail(IMGD_E_INVALID_ARG, "control image: NULL or empty");
    imgd_image  in = {src->w, src->h, src->c, src->px}, rgb = {0}, pre = {0}, fit = {0};
    bool        binary = false;
    imgd_status st     = imgd_image_to_rgb(&in, &rgb);
    if (st == IMGD_OK && spec->preprocess != IMGD_CONTROL_PRE_NONE)
        st = imgd_control_preprocess(&rgb, spec, &pre, &binary);
    const imgd_image *cur = pre.px ? &pre : &rgb;
    if (st == IMGD_OK && (cur->w != W || cur->h != H)) {
        st  = imgd_control_fit(cur, W, H, spec->resize_mode, binary, &fit);
        cur = &fit;
    }
    if (st == IMGD_OK) st = imgd_image_to_nchw(cur, out);
    imgd_image_free(&rgb);
    imgd_image_free(&pre);
    imgd_image_free(&fit);
    return st;
}
