/* Reading golden tensors of the conformance kit in tests. */
#ifndef IMGD_TEST_GOLDEN_H
#define IMGD_TEST_GOLDEN_H

#include <math.h>
#include <stdio.h>

#include "base/text.h"
#include "imgd.h"
#include "test.h"

/* A golden tensor's f32 data (borrowed from w) and element count, or NULL after a failed
 * check naming the tensor. */
static inline const float *tg_golden(const imgd_weights *w, const char *name, size_t *n) {
    imgd_tensor_info t;
    if (imgd_weights_find(w, name, &t) != IMGD_OK || t.dtype != IMGD_DTYPE_F32) {
        CHECK_MSG(0, "golden tensor '%s' missing or not F32", name);
        return NULL;
    }
    *n = (size_t)(t.nbytes / sizeof(float));
    return t.data;
}

/* A golden tensor of exactly n f32 values, or NULL after a failed check naming it. */
static inline const float *tg_golden_n(const imgd_weights *w, const char *name, size_t n) {
    size_t       got = 0;
    const float *d   = tg_golden(w, name, &got);
    if (d && got != n) {
        CHECK_MSG(0, "golden tensor '%s' has %zu values, expected %zu", name, got, n);
        return NULL;
    }
    return d;
}

/* max |a - ref| / max(1, max |ref|) over n values (NaN counts as the largest error). */
static inline double tg_rel_err(const float *a, const float *ref, size_t n) {
    double e = 0, mx = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        if (!(d <= e)) e = d;
        if (fabs((double)ref[i]) > mx) mx = fabs((double)ref[i]);
    }
    return e / mx;
}

/* Opens shared/conformance/REL (a failed check when it cannot be opened); NULL then. */
static inline imgd_weights *tg_open_golden(const char *shared, const char *rel) {
    char path[4096];
    (void)snprintf(path, sizeof path, "%s/conformance/%s", shared, rel);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
    return w;
}

/* Loads the kit's sd15-narrow diffusers folder in f32 with its tokenizer and 4 text-encoder
 * heads, on top of lp (the caller's adapter fields: lora_dir, embeddings, hypernet_dir...);
 * a failed check naming the error and NULL when it cannot be loaded. */
static inline imgd_model *tg_load_sd15(const char *shared, imgd_load_params lp) {
    char path[4096], tok[4096];
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/sd15-narrow/diffusers/tokenizer", shared);
    (void)imgd_fmt(path, sizeof path, "%s/conformance/sd15-narrow/diffusers", shared);
    lp.precision     = IMGD_PRECISION_F32;
    lp.arch.te_heads = 4;
    lp.tokenizer_dir = tok;
    imgd_model *m    = NULL;
    imgd_status st   = imgd_model_load(path, &lp, &m);
    CHECK_MSG(st == IMGD_OK, "load %s: %s", path, imgd_last_error());
    return m;
}

#endif
