/* Shared helpers of the reference kernels (ref.c, ref_nn.c). */
#ifndef IMGD_TENSOR_REF_IMPL_H
#define IMGD_TENSOR_REF_IMPL_H

#include "tensor/tensor.h"

/* Value of element `off` (elements from t->data) as double. */
double ref_load(const imgd_tensor *t, int64_t off);
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
