/* Reading golden tensors of the conformance kit in tests. */
#ifndef IMGD_TEST_GOLDEN_H
#define IMGD_TEST_GOLDEN_H

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
