/* Shared helpers of the reference kernels (ref.c, ref_nn.c). */
#ifndef IMGD_TENSOR_REF_IMPL_H
#define IMGD_TENSOR_REF_IMPL_H

#include <string.h>

#include "base/error.h"
#include "formats/dtype.h"
#include "tensor/tensor.h"

/* Value of element `off` (elements from t->data) as double. Inline: the kernels call it per
 * multiply-add, and as a call it was half of the sanitizer build's conformance test time. */
static inline double ref_load(const imgd_tensor *t, int64_t off) {
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case IMGD_DTYPE_F32: {
        float v;
        memcpy(&v, p + off * 4, 4);
        return (double)v;
    }
    case IMGD_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, p + off * 2, 2);
        return (double)imgd_f16_to_f32(h);
    }
    case IMGD_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, p + off * 2, 2);
        return (double)imgd_bf16_to_f32(h);
    }
    default:
        IMGD_ASSERT(false); /* supports_op admits f32/f16/bf16 only */
        return 0;
    }
}
/* Stores v at element `off` of t (rounding to t's dtype). */
void ref_store(const imgd_tensor *t, int64_t off, double v);
/* Splits a row-major linear index of t's logical shape into idx. */
void ref_unravel(const imgd_tensor *t, int64_t lin, int64_t *idx);
/* Element offset of idx (t's dims) through t's strides. */
int64_t ref_offset(const imgd_tensor *t, const int64_t *idx);
/* Offset in src of output index idx (out_dims dims) with numpy broadcasting: src dims are
 * right-aligned and size-1 dims read index 0. */
int64_t ref_bcast_offset(const imgd_tensor *src, int32_t out_dims, const int64_t *idx);
/* Value of t at logical linear index lin. */
double ref_at(const imgd_tensor *t, int64_t lin);

void ref_matmul(const imgd_tensor *n);
void ref_conv2d(const imgd_tensor *n);
void ref_group_norm(const imgd_tensor *n);
void ref_layer_norm(const imgd_tensor *n);
void ref_rms_norm(const imgd_tensor *n);
void ref_softmax(const imgd_tensor *n);
void ref_attention(const imgd_tensor *n);
void ref_avg_pool2d(const imgd_tensor *n);

#endif
