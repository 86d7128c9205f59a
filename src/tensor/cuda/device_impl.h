/* Device helpers shared by the CUDA kernel files (*.cu only): element loads and stores in
 * the three float dtypes, index arithmetic, launch geometry. */
#ifndef IMGD_TENSOR_CUDA_DEVICE_IMPL_H
#define IMGD_TENSOR_CUDA_DEVICE_IMPL_H

#include <stdint.h>

#include "kernels.h"

/* CUK_EMU: compiled by a host C++ compiler with tests/cuda_emu/cuda_emu.h force-included
 * (tests/cuda_emu/run.sh), which defines the launch, shared-memory and element helpers. */
#ifndef CUK_EMU
#    include <cuda_bf16.h>
#    include <cuda_fp16.h>
/* kernel<<<grid, block, shared bytes, stream>>>(args), spelled so an emulator can replace it */
#    define CUK_LAUNCH(k, grid, block, shmem, stream) k<<<grid, block, shmem, stream>>>
/* the block's dynamic shared memory as `T name[]` */
#    define CUK_DYN_SHARED(T, name) extern __shared__ T name[]
#endif

#define CUK_THREADS 256

/* Blocks for a grid-stride loop over b blocks' worth of work (b > 0): b, capped. */
static inline unsigned cuk_grid(int64_t b) {
#ifdef CUK_EMU
    return (unsigned)(b > 4 ? 4 : b); /* the emulator's threads are costly; loops cover the rest */
#else
    return (unsigned)(b > 65536 ? 65536 : b);
#endif
}

/* Blocks for a grid-stride loop over n items (n > 0). */
static inline unsigned cuk_blocks(int64_t n) {
    return cuk_grid((n + CUK_THREADS - 1) / CUK_THREADS);
}

static inline int64_t cuk_numel(const cuk_tensor *t) {
    int64_t n = 1;
    for (int32_t i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

#ifndef CUK_EMU
__device__ __forceinline__ float cuk_ld(const void *p, int32_t dtype, int64_t off) {
    if (dtype == CUK_F32) return static_cast<const float *>(p)[off];
    if (dtype == CUK_F16) return __half2float(static_cast<const __half *>(p)[off]);
    return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[off]);
}

__device__ __forceinline__ void cuk_st(void *p, int32_t dtype, int64_t off, float v) {
    if (dtype == CUK_F32)
        static_cast<float *>(p)[off] = v;
    else if (dtype == CUK_F16)
        static_cast<__half *>(p)[off] = __float2half_rn(v);
    else
        static_cast<__nv_bfloat16 *>(p)[off] = __float2bfloat16_rn(v);
}
#endif

/* Element offset (through strides) of the row-major linear index lin of t's shape. */
__device__ __forceinline__ int64_t cuk_off(const cuk_tensor &t, int64_t lin) {
    if (t.contiguous) return lin;
    int64_t off = 0;
    for (int32_t d = t.n_dims - 1; d >= 0; d--) {
        int64_t n = t.shape[d];
        off += (lin % n) * t.stride[d];
        lin /= n;
    }
    return off;
}

/* Value of t at logical linear index lin, as f32. */
__device__ __forceinline__ float cuk_at(const cuk_tensor &t, int64_t lin) {
    return cuk_ld(t.data, t.dtype, cuk_off(t, lin));
}

/* What both attention kernels (attention.cu, attention_wmma.cu) take. */
struct cuk_attn_args {
    cuk_tensor   q, k, v;
    void        *out;
    int32_t      odt;
    const float *mask;
    int64_t      ms[4]; /* mask strides over (b, h, i, j); 0 without a mask */
    float        scale;
};

static inline cuk_attn_args cuk_attn_args_make(void *out, int32_t odt, const cuk_tensor *q,
                                               const cuk_tensor *k, const cuk_tensor *v,
                                               const float *mask, const int64_t *mstride,
                                               float scale) {
    cuk_attn_args a;
    a.q     = *q;
    a.k     = *k;
    a.v     = *v;
    a.out   = out;
    a.odt   = odt;
    a.mask  = mask;
    a.scale = scale;
    for (int i = 0; i < 4; i++) a.ms[i] = mask ? mstride[i] : 0;
    return a;
}

#define CUK_FOR(i, n)                                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)blockDim.x * gridDim.x)

#endif
