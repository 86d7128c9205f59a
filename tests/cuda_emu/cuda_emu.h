// Host emulation of the CUDA features the kernels in src/tensor/cuda/*.cu use, so they can be
// compiled by g++ (-DCUK_EMU -include cuda_emu.h) and checked against the reference on a
// machine without a GPU.
// Blocks run one after another; the threads of a block are real threads, so __syncthreads
// and the warp shuffles (exchanged through a per-warp barrier) behave as on a GPU. Function-
// local __shared__ arrays become statics (shared by the block's threads; blocks never overlap).
#ifndef IMGD_TESTS_CUDA_EMU_H
#define IMGD_TESTS_CUDA_EMU_H

#include <barrier>
#include <cmath>
#include <cstring>
#include <cuda_runtime_api.h>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "tensor/cuda/kernels.h"

extern "C" { /* formats/dtype.h (C only) */
float    imgd_f16_to_f32(uint16_t h);
float    imgd_bf16_to_f32(uint16_t h);
uint16_t imgd_f32_to_f16(float f);
uint16_t imgd_f32_to_bf16(float f);
}

#undef __global__
#undef __device__
#undef __forceinline__
#undef __shared__
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__      static

/* the C++ overload nvcc's cuda_runtime.h provides */
template <class T> cudaError_t cudaFuncSetAttribute(T *fn, cudaFuncAttribute a, int v) {
    (void)fn;
    (void)a;
    (void)v;
    return cudaSuccess;
}

namespace cuk_emu {
struct block_ctx {
    dim3                                         grid, block;
    std::unique_ptr<std::barrier<>>              bar;
    std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
    std::vector<double>                          slots;
    std::vector<unsigned char>                   dyn;
};
inline block_ctx            *g_block;
inline thread_local dim3     tl_tid, tl_bid;
inline thread_local unsigned tl_lin;

template <class T> T *dyn_shared() {
    return reinterpret_cast<T *>(g_block->dyn.data());
}

template <class T> T exchange(T v, unsigned src_lane) {
    unsigned w             = tl_lin / 32;
    g_block->slots[tl_lin] = (double)v;
    g_block->warp_bar[w]->arrive_and_wait();
    T r = (T)g_block->slots[w * 32 + src_lane];
    g_block->warp_bar[w]->arrive_and_wait();
    return r;
}

template <class K> struct launcher {
    K                          k;
    dim3                       grid, block;
    size_t                     shmem;
    template <class... A> void operator()(A... args) {
        unsigned nt = block.x * block.y * block.z;
        for (unsigned bz = 0; bz < grid.z; bz++)
            for (unsigned by = 0; by < grid.y; by++)
                for (unsigned bx = 0; bx < grid.x; bx++) {
                    block_ctx c;
                    c.grid  = grid;
                    c.block = block;
                    c.bar   = std::make_unique<std::barrier<>>(nt);
                    for (unsigned w = 0; w < (nt + 31) / 32; w++)
                        c.warp_bar.push_back(
                            std::make_unique<std::barrier<>>(nt - w * 32 < 32 ? nt - w * 32 : 32));
                    c.slots.assign(nt, 0.0);
                    c.dyn.assign(shmem + 16, 0);
                    g_block = &c;
                    std::vector<std::thread> th;
                    for (unsigned t = 0; t < nt; t++)
                        th.emplace_back([&, t] {
                            tl_bid = dim3(bx, by, bz);
                            tl_tid =
                                dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                            tl_lin = t;
                            k(args...);
                        });
                    for (auto &x : th) x.join();
                    g_block = nullptr;
                }
    }
};
template <class K> launcher<K> launch(K k, dim3 g, dim3 b, size_t sm) {
    return launcher<K>{k, g, b, sm};
}
} // namespace cuk_emu

#define threadIdx cuk_emu::tl_tid
#define blockIdx  cuk_emu::tl_bid
#define blockDim  (cuk_emu::g_block->block)
#define gridDim   (cuk_emu::g_block->grid)

inline void __syncthreads() {
    cuk_emu::g_block->bar->arrive_and_wait();
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    return cuk_emu::exchange(v, (cuk_emu::tl_lin % 32) ^ (unsigned)o);
}
template <class T> T __shfl_sync(unsigned, T v, int src) {
    return cuk_emu::exchange(v, (unsigned)src);
}

#define CUK_LAUNCH(k, g, b, sm, st) cuk_emu::launch(k, dim3(g), dim3(b), (size_t)(sm))
#define CUK_DYN_SHARED(T, name)     T *name = cuk_emu::dyn_shared<T>()

inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    cuk_emu::g_block->warp_bar[cuk_emu::tl_lin / 32]->arrive_and_wait();
}

inline float4 make_float4(float x, float y, float z, float w) {
    float4 v;
    v.x = x;
    v.y = y;
    v.z = z;
    v.w = w;
    return v;
}

inline float __expf(float x) {
    return expf(x);
}

inline uint2 make_uint2(unsigned x, unsigned y) {
    uint2 v;
    v.x = x;
    v.y = y;
    return v;
}

/* fp16 / bf16 scalars as their bits */
struct __half {
    uint16_t x;
};
struct __nv_bfloat16 {
    uint16_t x;
};
inline __half __float2half_rn(float v) {
    return __half{imgd_f32_to_f16(v)};
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
    return __nv_bfloat16{imgd_f32_to_bf16(v)};
}

/* WMMA: every lane of a warp holds the whole 16x16 tile and computes the whole product (the
 * results are the same in every lane); each *_sync is a warp barrier before and after, as the
 * warp-synchronous originals are. */
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t {
    mem_row_major,
    mem_col_major
};
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    float x[16 * 16];
};
inline float emu_f(float v) {
    return v;
}
inline float emu_f(__half v) {
    return imgd_f16_to_f32(v.x);
}
inline float emu_f(__nv_bfloat16 v) {
    return imgd_bf16_to_f32(v.x);
}
template <class Use, class T, class L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    __syncwarp();
    const bool rm = std::is_same<L, row_major>::value;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = emu_f(rm ? p[r * ldm + c] : p[c * ldm + r]);
    __syncwarp();
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p,
                             unsigned ldm, layout_t l) {
    __syncwarp();
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
    __syncwarp();
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                              unsigned ldm, layout_t l) {
    __syncwarp();
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
    __syncwarp();
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float> &f, float v) {
    for (float &x : f.x) x = v;
}
template <class TA, class LA, class TB, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>       &d,
              const fragment<matrix_a, 16, 16, 16, TA, LA>   &a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>   &b,
              const fragment<accumulator, 16, 16, 16, float> &c) {
    float t[16 * 16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float acc = c.x[i * 16 + j];
            for (int k = 0; k < 16; k++) acc += a.x[i * 16 + k] * b.x[k * 16 + j];
            t[i * 16 + j] = acc;
        }
    std::memcpy(d.x, t, sizeof t);
}
} // namespace nvcuda::wmma

inline float cuk_ld(const void *p, int32_t dtype, int64_t off) {
    if (dtype == CUK_F32) return static_cast<const float *>(p)[off];
    uint16_t h = static_cast<const uint16_t *>(p)[off];
    return dtype == CUK_F16 ? imgd_f16_to_f32(h) : imgd_bf16_to_f32(h);
}

inline void cuk_st(void *p, int32_t dtype, int64_t off, float v) {
    if (dtype == CUK_F32)
        static_cast<float *>(p)[off] = v;
    else
        static_cast<uint16_t *>(p)[off] =
            dtype == CUK_F16 ? imgd_f32_to_f16(v) : imgd_f32_to_bf16(v);
}

#endif
