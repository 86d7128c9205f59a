/* ControlNet control-image preprocessing (pipeline/control_pre.h): OpenCV-compatible canny
 * on hand-checked images, the thresholds, invert, A1111's resize modes (sizes, offsets,
 * fill colour) and the whole prepare path. */
#include "base/alloc.h"
#include "pipeline/control_pre.h"
#include "test.h"

/* A w x h gray image, value bg, with rectangles [x0, x1) x [y0, y1) of value v. */
static bool gray(imgd_image *img, int32_t w, int32_t h, uint8_t bg) {
    if (imgd_image_init(img, w, h, 1) != IMGD_OK) return false;
    memset(img->px, bg, (size_t)w * (size_t)h);
    return true;
}

static void rect(imgd_image *img, int32_t x0, int32_t y0, int32_t x1, int32_t y1, uint8_t v) {
    for (int32_t y = y0; y < y1; y++)
        for (int32_t x = x0; x < x1; x++) img->px[(size_t)y * (size_t)img->w + (size_t)x] = v;
}

static uint8_t at(const imgd_image *img, int32_t x, int32_t y) {
    return img->px[((size_t)y * (size_t)img->w + (size_t)x) * (size_t)img->c];
}

static int32_t count_on(const imgd_image *img) {
    int32_t n = 0;
    for (size_t i = 0; i < (size_t)img->w * (size_t)img->h; i++) n += img->px[i] == 255;
    return n;
}

/* A white 16x16 square at (8, 8) on black, 32x32. The Sobel L1 magnitude across a side is
 * 4 * 255 = 1020 on both pixels next to the step; OpenCV's suppression keeps the first of
 * the pair along +x / +y (m > previous, m >= next): column 7 and column 23, row 7 and row
 * 23. */
static void test_control_pre_canny_square_edges_on_its_border(void) {
    imgd_image sq = {0}, e = {0};
    if (!gray(&sq, 32, 32, 0)) return;
    rect(&sq, 8, 8, 24, 24, 255);
    CHECK_STATUS(imgd_control_canny(&sq, 100, 200, &e), IMGD_OK);
    if (e.px) {
        CHECK_EQ_INT(e.c, 1);
        for (int32_t t = 10; t < 22; t++) { /* the sides, away from the corners */
            CHECK_EQ_INT(at(&e, 7, t), 255);
            CHECK_EQ_INT(at(&e, 23, t), 255);
            CHECK_EQ_INT(at(&e, t, 7), 255);
            CHECK_EQ_INT(at(&e, t, 23), 255);
            CHECK_EQ_INT(at(&e, 8, t), 0);
            CHECK_EQ_INT(at(&e, 24, t), 0);
            CHECK_EQ_INT(at(&e, t, 8), 0);
            CHECK_EQ_INT(at(&e, t, 24), 0);
            CHECK_EQ_INT(at(&e, 16, t), 0); /* inside */
            CHECK_EQ_INT(at(&e, 2, t), 0);  /* outside */
        }
        /* nothing off the two rings of columns/rows 7..8 and 23..24 */
        for (int32_t y = 0; y < 32; y++)
            for (int32_t x = 0; x < 32; x++) {
                bool near = (x >= 6 && x <= 25 && y >= 6 && y <= 25) &&
                            !(x >= 9 && x <= 22 && y >= 9 && y <= 22);
                if (!near) CHECK_MSG(at(&e, x, y) == 0, "edge at (%d, %d)", (int)x, (int)y);
            }
    }
    imgd_image_free(&e);
    /* across a side the magnitude is 1020 (corners reach 1530): with low = high = 1019 the
     * sides are edges, with 1020 (m > threshold fails) they are not; with high above every
     * magnitude nothing is strong, so nothing is an edge; low > high are swapped */
    CHECK_STATUS(imgd_control_canny(&sq, 1019, 1019, &e), IMGD_OK);
    if (e.px) CHECK(at(&e, 7, 16) == 255 && at(&e, 16, 23) == 255);
    imgd_image_free(&e);
    CHECK_STATUS(imgd_control_canny(&sq, 1020, 1020, &e), IMGD_OK);
    if (e.px) CHECK(at(&e, 7, 16) == 0 && at(&e, 16, 23) == 0 && count_on(&e) > 0);
    imgd_image_free(&e);
    CHECK_STATUS(imgd_control_canny(&sq, 100, 2000, &e), IMGD_OK);
    if (e.px) CHECK_EQ_INT(count_on(&e), 0);
    imgd_image_free(&e);
    CHECK_STATUS(imgd_control_canny(&sq, 200, 100, &e), IMGD_OK);
    if (e.px) CHECK(at(&e, 7, 16) == 255 && at(&e, 23, 16) == 255);
    imgd_image_free(&e);
    imgd_image_free(&sq);
}

/* Hysteresis: a weak edge (contrast 100: magnitude 400) touching a strong one (1020) is
 * kept; the same weak edge alone is dropped; lowering high above 400 keeps it alone. */
static void test_control_pre_canny_hysteresis(void) {
    imgd_image im = {0}, e = {0};
    if (!gray(&im, 48, 32, 0)) return;
    rect(&im, 4, 4, 20, 12, 255);  /* strong block */
    rect(&im, 4, 12, 20, 28, 100); /* weak block right below: its side continues the strong */
    rect(&im, 30, 8, 44, 24, 100); /* weak block alone */
    CHECK_STATUS(imgd_control_canny(&im, 300, 1000, &e), IMGD_OK);
    if (e.px) {
        CHECK_EQ_INT(at(&e, 3, 8), 255);  /* left side of the strong block */
        CHECK_EQ_INT(at(&e, 3, 20), 255); /* left side of the weak block below, connected */
        CHECK_EQ_INT(at(&e, 29, 16), 0);  /* the lone weak block */
    }
    imgd_image_free(&e);
    CHECK_STATUS(imgd_control_canny(&im, 300, 399, &e), IMGD_OK);
    if (e.px) CHECK_EQ_INT(at(&e, 29, 16), 255);
    imgd_image_free(&e);
    imgd_image_free(&im);
}

/* Colour: each pixel takes the channel with the largest gradient, so a red-only step is an
 * edge like a gray one; RGBA's alpha is ignored. */
static void test_control_pre_canny_colour_takes_strongest_channel(void) {
    imgd_image im = {0}, e = {0};
    if (imgd_image_init(&im, 16, 16, 4) != IMGD_OK) return;
    for (int32_t y = 0; y < 16; y++)
        for (int32_t x = 0; x < 16; x++) {
            uint8_t *p = im.px + ((size_t)y * 16 + (size_t)x) * 4;
            p[0]       = x >= 8 ? 255 : 0;
            p[1] = p[2] = 0;
            p[3]        = (uint8_t)(y * 16); /* alpha varies: must not make edges */
        }
    CHECK_STATUS(imgd_control_canny(&im, 100, 200, &e), IMGD_OK);
    if (e.px) {
        CHECK_EQ_INT(at(&e, 7, 8), 255);
        CHECK_EQ_INT(count_on(&e), 16);
    }
    imgd_image_free(&e);
    imgd_image_free(&im);
}

static void test_control_pre_thresholds_and_invert(void) {
    imgd_image im = {0}, s = {0}, l = {0}, inv = {0};
    if (imgd_image_init(&im, 3, 1, 3) != IMGD_OK) return;
    const uint8_t px[9] = {0, 0, 0, 200, 90, 255, 255, 255, 255}; /* black, min 90, white */
    memcpy(im.px, px, sizeof px);
    CHECK_STATUS(imgd_control_threshold(&im, 127, true, &s), IMGD_OK);
    CHECK_STATUS(imgd_control_threshold(&im, 127, false, &l), IMGD_OK);
    CHECK_STATUS(imgd_control_invert(&im, &inv), IMGD_OK);
    if (s.px && l.px && inv.px) {
        CHECK(s.px[0] == 255 && s.px[1] == 255 && s.px[2] == 0); /* dark strokes -> white */
        CHECK(l.px[0] == 0 && l.px[1] == 0 && l.px[2] == 255);   /* min over channels */
        CHECK(inv.c == 3 && inv.px[0] == 255 && inv.px[3] == 55 && inv.px[4] == 165 &&
              inv.px[8] == 0);
    }
    CHECK_STATUS(imgd_control_threshold(&im, 300, true, &s), IMGD_E_INVALID_ARG);
    imgd_image_free(&s);
    imgd_image_free(&l);
    imgd_image_free(&inv);
    imgd_image_free(&im);
}

/* A1111's detectmap_proc geometry. */
static void test_control_pre_resize_mode_sizes_and_offsets(void) {
    static const struct {
        int32_t w, h, W, H, mode, rw, rh, ox, oy;
    } k_cases[] = {
        {200, 100, 64, 64, IMGD_CONTROL_RESIZE_JUST, 64, 64, 0, 0},
        {200, 100, 64, 64, IMGD_CONTROL_RESIZE_CROP, 128, 64, 32, 0},
        {200, 100, 64, 64, IMGD_CONTROL_RESIZE_FILL, 64, 32, 0, 16},
        {100, 300, 64, 96, IMGD_CONTROL_RESIZE_CROP, 64, 192, 0, 48},
        {100, 300, 64, 96, IMGD_CONTROL_RESIZE_FILL, 32, 96, 16, 0},
        /* numpy rounds half to even: 2 * 1.25 = 2.5 -> 2; 4 * 2.5 = 10 */
        {4, 2, 5, 5, IMGD_CONTROL_RESIZE_FILL, 5, 2, 0, 1},
        {4, 2, 5, 5, IMGD_CONTROL_RESIZE_CROP, 10, 5, 2, 0},
        /* same aspect: no crop, no fill */
        {32, 16, 64, 32, IMGD_CONTROL_RESIZE_CROP, 64, 32, 0, 0},
        {32, 16, 64, 32, IMGD_CONTROL_RESIZE_FILL, 64, 32, 0, 0},
    };
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_cases); i++) {
        int32_t rw = -1, rh = -1, ox = -1, oy = -1;
        CHECK(imgd_control_fit_geometry(k_cases[i].w, k_cases[i].h, k_cases[i].W, k_cases[i].H,
                                        k_cases[i].mode, &rw, &rh, &ox, &oy));
        CHECK_MSG(rw == k_cases[i].rw && rh == k_cases[i].rh && ox == k_cases[i].ox &&
                      oy == k_cases[i].oy,
                  "case %zu: %dx%d at (%d, %d)", i, (int)rw, (int)rh, (int)ox, (int)oy);
    }
    CHECK(!imgd_control_fit_geometry(0, 1, 1, 1, 0, NULL, NULL, NULL, NULL));
    CHECK(!imgd_control_fit_geometry(1, 1, 1, 1, 3, NULL, NULL, NULL, NULL));
}

/* Fill: the pad is the border's median colour; crop: the centre window. */
static void test_control_pre_fill_and_crop_pixels(void) {
    imgd_image im = {0}, f = {0}, c = {0};
    if (!gray(&im, 8, 8, 200)) return; /* border 200, a black centre */
    rect(&im, 2, 2, 6, 6, 0);
    CHECK_STATUS(imgd_control_fit(&im, 16, 8, IMGD_CONTROL_RESIZE_FILL, false, &f), IMGD_OK);
    if (f.px) {
        CHECK(f.w == 16 && f.h == 8);
        CHECK_EQ_INT(at(&f, 0, 4), 200); /* pad: median of the border */
        CHECK_EQ_INT(at(&f, 15, 4), 200);
        CHECK_EQ_INT(at(&f, 8, 4), 0); /* the pasted image's centre at x 4 + 4 */
    }
    CHECK_STATUS(imgd_control_fit(&im, 4, 8, IMGD_CONTROL_RESIZE_CROP, false, &c), IMGD_OK);
    if (c.px) { /* k = 1: the window x 2..5 of the source: all black */
        CHECK(c.w == 4 && c.h == 8);
        CHECK_EQ_INT(at(&c, 0, 4), 0);
        CHECK_EQ_INT(at(&c, 3, 4), 0);
        CHECK_EQ_INT(at(&c, 0, 0), 200);
    }
    imgd_image_free(&f);
    imgd_image_free(&c);
    imgd_image_free(&im);
}

/* The whole path: any size in, [3, H, W] floats out; a binary map stays binary. */
static void test_control_pre_prepare_any_size(void) {
    imgd_image sq = {0};
    if (!gray(&sq, 50, 30, 0)) return;
    rect(&sq, 10, 5, 40, 25, 255);
    imgd_image_u8     src = {sq.w, sq.h, sq.c, sq.px};
    imgd_control_spec s   = imgd_control_spec_default();
    float            *out = imgd_malloc((size_t)3 * 64 * 48 * sizeof *out);
    for (int32_t mode = 0; out && mode < IMGD_CONTROL_RESIZE_COUNT; mode++) {
        s.preprocess  = IMGD_CONTROL_PRE_CANNY;
        s.resize_mode = mode;
        CHECK_STATUS(imgd_control_prepare(&src, &s, 64, 48, out), IMGD_OK);
        int32_t on  = 0;
        bool    bin = true;
        for (size_t i = 0; i < (size_t)3 * 64 * 48; i++) {
            bin = bin && (out[i] == 0.0f || out[i] == 1.0f);
            on += out[i] == 1.0f;
        }
        CHECK_MSG(bin && on > 0, "mode %s: binary %d, %d on", imgd_control_resize_name(mode),
                  (int)bin, (int)on);
    }
    s.preprocess  = IMGD_CONTROL_PRE_INVERT;
    s.resize_mode = IMGD_CONTROL_RESIZE_JUST;
    if (out) {
        CHECK_STATUS(imgd_control_prepare(&src, &s, 50, 30, out), IMGD_OK); /* same size */
        CHECK(out[0] == 1.0f && out[2 * 50 * 30 + 15 * 50 + 25] == 0.0f);
    }
    imgd_free(out);
    imgd_image_free(&sq);
}

static void test_control_pre_names_round_trip(void) {
    for (int32_t i = 0; i < IMGD_CONTROL_PRE_COUNT; i++) {
        int32_t v = -1;
        CHECK(imgd_control_pre_parse(imgd_control_pre_name(i), &v) && v == i);
    }
    for (int32_t i = 0; i < IMGD_CONTROL_RESIZE_COUNT; i++) {
        int32_t v = -1;
        CHECK(imgd_control_resize_parse(imgd_control_resize_name(i), &v) && v == i);
    }
    CHECK(!imgd_control_pre_parse("depth", NULL));
    CHECK(imgd_control_pre_name(IMGD_CONTROL_PRE_COUNT) == NULL);
}

int main(void) {
    RUN(test_control_pre_canny_square_edges_on_its_border);
    RUN(test_control_pre_canny_hysteresis);
    RUN(test_control_pre_canny_colour_takes_strongest_channel);
    RUN(test_control_pre_thresholds_and_invert);
    RUN(test_control_pre_resize_mode_sizes_and_offsets);
    RUN(test_control_pre_fill_and_crop_pixels);
    RUN(test_control_pre_prepare_any_size);
    RUN(test_control_pre_names_round_trip);
    TEST_END();
}
