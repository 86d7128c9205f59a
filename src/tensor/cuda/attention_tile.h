/* What the two tensor-core flash-attention kernels (attention_wmma.cu, attention_mma.cu) share:
 * the math types and the loads of a tile of Q, K or V rows into shared memory in the math type,
 * converted from any stored dtype and layout. Blocks are FA_THREADS threads; a tile is ROWS
 * rows of DP (the head dim D rounded up to 16) values with row stride DP + 8, zero beyond D and
 * beyond the last row. (*.cu only.) */
#ifndef IMGD_TENSOR_CUDA_ATTENTION_TILE_H
#define IMGD_TENSOR_CUDA_ATTENTION_TILE_H

#include "device_impl.h"

#define FA_THREADS 128 /* 4 warps */

template <class T> struct fa_type;
template <> struct fa_type<__half> {
    static constexpr int32_t                 dtype = CUK_F16;
    static __device__ __forceinline__ __half from(float v) {
        return __float2half_rn(v);
    }
    /* two values as one 32-bit register of an MMA fragment, lo in the low half */
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        return cuk_pack_f16x2(lo, hi);
    }
};
template <> struct fa_type<__nv_bfloat16> {
    static constexpr int32_t                        dtype = CUK_BF16;
    static __device__ __forceinline__ __nv_bfloat16 from(float v) {
        return __float2bfloat16_rn(v);
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        return cuk_pack_bf16x2(lo, hi);
    }
};

/* The four values of a vector load, as f32: four f32, or four 16-bit values of dtype dt. */
__device__ __forceinline__ void fa_unpack(const float4 &v, int32_t dt, float o[4]) {
    (void)dt;
    o[0] = v.x;
    o[1] = v.y;
    o[2] = v.z;
    o[3] = v.w;
}

__device__ __forceinline__ void fa_unpack(const uint2 &v, int32_t dt, float o[4]) {
    const uint16_t h[4] = {(uint16_t)(v.x & 0xffffu), (uint16_t)(v.x >> 16),
                           (uint16_t)(v.y & 0xffffu), (uint16_t)(v.y >> 16)};
    for (int j = 0; j < 4; j++) o[j] = cuk_ld(h, dt, j);
}

/* Rows [r0, r0 + ROWS) of src (row stride ld elements of type E, four at a time as V) into
 * dst, times mul; the loads of a pass are issued before any store so their latency overlaps. */
template <class T, int DP, int ROWS, class V, class E>
__device__ __forceinline__ void fa_load_vec(T *dst, const E *src, int32_t dt, int64_t ld,
                                            int64_t r0, int64_t L, int64_t D, float mul) {
    constexpr int Q4 = DP / 4, N4 = ROWS * Q4, PASS = 8; /* vectors per pass and thread */
    for (int e0 = 0; e0 < N4; e0 += PASS * FA_THREADS) {
        V v[PASS];
#pragma unroll
        for (int u = 0; u < PASS; u++) {
            int e = e0 + u * FA_THREADS + (int)threadIdx.x;
            int r = e / Q4, d = (e % Q4) * 4;
            memset(&v[u], 0, sizeof v[u]);
            if (e < N4 && r0 + r < L && d < D)
                v[u] = *reinterpret_cast<const V *>(src + (r0 + r) * ld + d);
        }
#pragma unroll
        for (int u = 0; u < PASS; u++) {
            int e = e0 + u * FA_THREADS + (int)threadIdx.x;
            if (e >= N4) break;
            int   r = e / Q4, d = (e % Q4) * 4;
            T    *o = dst + r * (DP + 8) + d;
            float f[4];
            fa_unpack(v[u], dt, f);
            for (int j = 0; j < 4; j++) o[j] = fa_type<T>::from(f[j] * mul);
        }
    }
}

/* Loads rows [r0, r0 + ROWS) of t (a [B, L, H, D] tensor at batch b, head h) into dst
 * [ROWS][DP + 8], times mul, zero beyond L and D. Rows with unit stride and D % 4 == 0 (every
 * SD / SDXL / FLUX head) go four values at a time (16 bytes of f32, 8 of f16/bf16); other
 * layouts element by element. */
template <class T, int DP, int ROWS>
__device__ __forceinline__ void fa_load(T *dst, const cuk_tensor &t, int64_t b, int64_t h,
                                        int64_t r0, int64_t L, int64_t D, float mul) {
    const int64_t base = b * t.stride[0] + h * t.stride[2];
    const bool    f32  = t.dtype == CUK_F32;
    const bool    vec  = t.stride[3] == 1 && D % 4 == 0 && t.stride[1] % 4 == 0 && base % 4 == 0 &&
                     ((uintptr_t)t.data & (f32 ? 15 : 7)) == 0;
    if (vec && f32) {
        fa_load_vec<T, DP, ROWS, float4>(dst, static_cast<const float *>(t.data) + base, t.dtype,
                                         t.stride[1], r0, L, D, mul);
        return;
    }
    if (vec) {
        fa_load_vec<T, DP, ROWS, uint2>(dst, static_cast<const uint16_t *>(t.data) + base, t.dtype,
                                        t.stride[1], r0, L, D, mul);
        return;
    }
    for (int e = threadIdx.x; e < ROWS * DP; e += FA_THREADS) {
        int     r = e / DP, d = e % DP;
        int64_t row = r0 + r;
        float   v   = 0.0f;
        if (row < L && d < D)
            v = cuk_ld(t.data, t.dtype, base + row * t.stride[1] + d * t.stride[3]) * mul;
        dst[r * (DP + 8) + d] = fa_type<T>::from(v);
    }
}

/* cudaErrorInvalidValue for what the tensor-core kernels do not take: head dims over
 * CUK_ATTN_WMMA_D_MAX or differing between q, k and v, grids over 65535 heads or batches, math
 * other than CUK_F16 / CUK_BF16. */
static inline cudaError_t fa_check(const cuk_tensor *q, const cuk_tensor *k, const cuk_tensor *v,
                                   int32_t math) {
    const int64_t D = q->shape[3];
    if (D > CUK_ATTN_WMMA_D_MAX || v->shape[3] != D || k->shape[3] != D || q->shape[2] > 65535 ||
        q->shape[0] > 65535 || (math != CUK_F16 && math != CUK_BF16))
        return cudaErrorInvalidValue;
    return cudaSuccess;
}

/* Launches kern with FA_THREADS threads a block over (blocks of bq queries, heads, batches)
 * and shmem bytes of dynamic shared memory (opted into past the default 48 KiB). */
static cudaError_t fa_launch_kernel(void (*kern)(cuk_attn_args), size_t shmem, int64_t bq,
                                    const cuk_attn_args &a, cudaStream_t s) {
    if (shmem > 48 * 1024) {
        cudaError_t e =
            cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem);
        if (e != cudaSuccess) return e;
    }
    dim3 grid((unsigned)((a.q.shape[1] + bq - 1) / bq), (unsigned)a.q.shape[2],
              (unsigned)a.q.shape[0]);
    CUK_LAUNCH(kern, grid, FA_THREADS, shmem, s)(a);
    return cudaGetLastError();
}

/* The largest head dim of a kernel instance for head dim D (D <= CUK_ATTN_WMMA_D_MAX), which
 * fa_dispatch-style switches instantiate: 32, 48, 64, 80, 96, 128 or 160. */
#define FA_DISPATCH(LAUNCH, T, D, ...)                                                             \
    ((D) <= 32    ? LAUNCH<T, 32>(__VA_ARGS__)                                                     \
     : (D) <= 48  ? LAUNCH<T, 48>(__VA_ARGS__)                                                     \
     : (D) <= 64  ? LAUNCH<T, 64>(__VA_ARGS__)                                                     \
     : (D) <= 80  ? LAUNCH<T, 80>(__VA_ARGS__)                                                     \
     : (D) <= 96  ? LAUNCH<T, 96>(__VA_ARGS__)                                                     \
     : (D) <= 128 ? LAUNCH<T, 128>(__VA_ARGS__)                                                    \
                  : LAUNCH<T, 160>(__VA_ARGS__))

#endif
