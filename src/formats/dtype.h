/* Element types: sizes, names, conversions between float formats, and dequantization. */
#ifndef IMGD_FORMATS_DTYPE_H
#define IMGD_FORMATS_DTYPE_H

#include <stdbool.h>

#include "base/base.h"

typedef struct imgd_dtype_traits {
    const char *name;        /* safetensors spelling */
    uint32_t    block_elems; /* 1 for plain types, 32 or 256 for quantized blocks */
    uint32_t    block_bytes; /* bytes per block (element size for plain types) */
    bool        is_float;    /* floating point (incl. f8 and quantized) */
    bool        is_quant;
} imgd_dtype_traits;

const imgd_dtype_traits *imgd_dtype_traits_of(imgd_dtype dt);

/* Bytes of a tensor of `shape` (row-major, innermost last). For quantized types the
 * innermost dimension must be a multiple of the block size. IMGD_E_FORMAT on a negative
 * dim, a bad innermost dim or overflow (message says which, without a file name). */
imgd_status imgd_dtype_nbytes(imgd_dtype dt, int32_t n_dims, const int64_t *shape, uint64_t *out);

/* Number of elements; false on overflow or a negative dim. */
bool imgd_shape_numel(int32_t n_dims, const int64_t *shape, uint64_t *out);

float    imgd_f16_to_f32(uint16_t h);
uint16_t imgd_f32_to_f16(float f); /* round to nearest even, overflow to inf */
float    imgd_bf16_to_f32(uint16_t h);
uint16_t imgd_f32_to_bf16(float f); /* round to nearest even, NaN stays NaN */
float    imgd_f8e4m3_to_f32(uint8_t v);
float    imgd_f8e5m2_to_f32(uint8_t v);

/* Converts n elements (a multiple of the block size for quantized types) of a float
 * dtype (F32/F16/BF16/F64/F8/quantized) to f32. IMGD_E_UNSUPPORTED for integer types. */
imgd_status imgd_dtype_to_f32(imgd_dtype dt, const void *src, uint64_t n, float *dst);

/* Converts n f32 values to dst in F32, F16 or BF16. IMGD_E_UNSUPPORTED otherwise. */
imgd_status imgd_dtype_from_f32(imgd_dtype dt, const float *src, uint64_t n, void *dst);

#endif
