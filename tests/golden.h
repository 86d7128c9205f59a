/* Reading golden tensors of the conformance kit in tests. */
#ifndef IMGD_TEST_GOLDEN_H
#define IMGD_TEST_GOLDEN_H

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

#endif
