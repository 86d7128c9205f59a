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
