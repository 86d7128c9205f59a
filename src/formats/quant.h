/* GGML block quantization formats: dequantization to f32.
 * Block layouts follow ggml (ggml-common.h); all values little-endian. */
#ifndef IMGD_FORMATS_QUANT_H
#define IMGD_FORMATS_QUANT_H

#include "base/base.h"

/* Dequantizes n_blocks consecutive blocks of dtype (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1,
 * Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) from src into dst (n_blocks * block_elems floats).
 * IMGD_E_UNSUPPORTED for other dtypes. */
imgd_status imgd_quant_dequantize(imgd_dtype dt, const void *src, uint64_t n_blocks, float *dst);

#endif
