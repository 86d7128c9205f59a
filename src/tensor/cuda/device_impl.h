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
/* One f16 / bf16 value (dtype) as its 16 bits, and back. */
__device__ __forceinline__ float cuk_u16_f32(uint16_t h, int32_t dtype) {
    return dtype == CUK_F16 ? __half2float(__ushort_as_half(h))
                            : __bfloat162float(__ushort_as_bfloat16(h));
}
__device__ __forceinline__ uint16_t cuk_f32_u16(float v, int32_t dtype) {
    return dtype == CUK_F16 ? __half_as_ushort(__float2half_rn(v))
                            : __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
#endif

/* Vector access: CUK_VEC consecutive elements in one or two 16-byte transactions. off is a
 * multiple of CUK_VEC and p 16-byte aligned (cuk_vec_ok on the host). */
#define CUK_VEC 8

static inline bool cuk_vec_ok(const void *p) {
    return ((uintptr_t)p & 15u) == 0;
}

__device__ __forceinline__ void cuk_ld8(const void *p, int32_t dtype, int64_t off, float v[8]) {
    if (dtype == CUK_F32) {
        const float4 *q = reinterpret_cast<const float4 *>(static_cast<const float *>(p) + off);
        float4        a = q[0], b = q[1];
        v[0] = a.x;
        v[1] = a.y;
        v[2] = a.z;
        v[3] = a.w;
        v[4] = b.x;
        v[5] = b.y;
        v[6] = b.z;
        v[7] = b.w;
        return;
    }
    uint4    u    = *reinterpret_cast<const uint4 *>(static_cast<const uint16_t *>(p) + off);
    uint32_t w[4] = {u.x, u.y, u.z, u.w};
    for (int k = 0; k < 4; k++) {
        v[2 * k]     = cuk_u16_f32((uint16_t)(w[k] & 0xffffu), dtype);
        v[2 * k + 1] = cuk_u16_f32((uint16_t)(w[k] >> 16), dtype);
    }
}

__device__ __forceinline__ void cuk_st8(void *p, int32_t dtype, int64_t off, const float v[8]) {
    if (dtype == CUK_F32) {
        float4 *q = reinterpret_cast<float4 *>(static_cast<float *>(p) + off);
        q[0]      = make_float4(v[0], v[1], v[2], v[3]);
        q[1]      = make_float4(v[4], v[5], v[6], v[7]);
        return;
    }
    uint32_t w[4];
    for (int k = 0; k < 4; k++)
        w[k] = (uint32_t)cuk_f32_u16(v[2 * k], dtype) | (uint32_t)cuk_f32_u16(v[2 * k + 1], dtype)
                                                            << 16;
    uint4 u;
    u.x                                                          = w[0];
    u.y                                                          = w[1];
    u.z                                                          = w[2];
    u.w                                                          = w[3];
    *reinterpret_cast<uint4 *>(static_cast<uint16_t *>(p) + off) = u;
}

/* Tensor-core building blocks of sm_80 and later, as PTX (the emulator defines its own):
 * cp.async copies, ldmatrix fragment loads and the m16n8k16 MMA with f32 accumulation.
 * Fragment layouts are those of the PTX ISA ("Matrix fragments for mma.m16n8k16"): with
 * g = lane / 4 and c = 2 * (lane % 4), A (16 x 16, row) holds a0 = (g, c..c+1),
 * a1 = (g + 8, c..), a2 = (g, c + 8..), a3 = (g + 8, c + 8..); B (16 x 8, col) holds
 * b0 = (c..c+1, g), b1 = (c + 8.., g); C/D (16 x 8, f32) hold (g, c), (g, c + 1), (g + 8, c),
 * (g + 8, c + 1). */
#if !defined(CUK_EMU) && (!defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800)
__device__ __forceinline__ uint32_t cuk_smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
/* 16 bytes from global src to shared dst (both 16-byte aligned), asynchronously; the bytes
 * past src_bytes (0 or 16) are zeros. */
__device__ __forceinline__ void cuk_cp_async16(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(cuk_smem_u32(dst)),
                 "l"(src), "r"(src_bytes));
}
/* Closes the group of this thread's cp.async copies issued since the last commit. */
__device__ __forceinline__ void cuk_cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}
/* Waits until at most N of this thread's committed groups are still in flight. */
template <int N> __device__ __forceinline__ void cuk_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
/* Four 8 x 8 16-bit matrices from shared memory; lanes 8i..8i+7 give the rows of matrix i.
 * r[i] of lane l: row l / 4, columns 2 (l % 4) and + 1 (trans: rows 2 (l % 4) and + 1,
 * column l / 4). */
__device__ __forceinline__ void cuk_ldsm_x4(uint32_t r[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(cuk_smem_u32(row)));
}
__device__ __forceinline__ void cuk_ldsm_x4_t(uint32_t r[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(cuk_smem_u32(row)));
}
/* d += A B on one warp, A and B f16 (T = __half) or bf16. */
template <class T>
__device__ __forceinline__ void cuk_mma16816(float d[4], const uint32_t a[4], const uint32_t b[2]);
template <>
__device__ __forceinline__ void cuk_mma16816<__half>(float d[4], const uint32_t a[4],
                                                     const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void cuk_mma16816<__nv_bfloat16>(float d[4], const uint32_t a[4],
                                                            const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

#ifndef CUK_EMU
/* lo and hi rounded to f16 / bf16 in one 32-bit register, lo in the low half */
__device__ __forceinline__ uint32_t cuk_pack_f16x2(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
__device__ __forceinline__ uint32_t cuk_pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
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

/* Flat kernels index with 32-bit integers where every index fits (I = uint32_t): 64-bit
 * division costs tens of instructions per element, more than the memory traffic of a
 * half-precision elementwise op on a current GPU. Below 2^31, i + the grid's stride cannot
 * wrap. */
static inline bool cuk_idx32(int64_t n) {
    return n < ((int64_t)1 << 31);
}

/* A grid-stride loop over [0, n) in index type I. */
#define CUK_FOR_I(I, i, n)                                                                         \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (I)blockDim.x * gridDim.x)

/* Launches kernel template k over `items` work items (CUK_THREADS per block) as k<uint32_t>
 * when i32, else k<int64_t>; args are its leading arguments, items its last (in that type). */
#define CUK_LAUNCH_I(i32, k, items, s, ...)                                                        \
    do {                                                                                           \
        if (i32) CUK_LAUNCH(k<uint32_t>, cuk_blocks(items), CUK_THREADS, 0, s)                     \
        (__VA_ARGS__, (uint32_t)(items));                                                          \
        else CUK_LAUNCH(k<int64_t>, cuk_blocks(items), CUK_THREADS, 0, s)(__VA_ARGS__,             \
                                                                          (int64_t)(items));       \
    } while (0)

#define CUK_FOR(i, n)                                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)blockDim.x * gridDim.x)

#endif
