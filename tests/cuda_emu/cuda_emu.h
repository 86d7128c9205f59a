// Host emulation of the CUDA features the kernels in src/tensor/cuda/*.cu use, so they can be
// compiled by g++ (-DCUK_EMU -include cuda_emu.h) and checked against the reference on a
// machine without a GPU.
// Blocks run one after another; the threads of a block are fibers that switch at barriers,
// so __syncthreads and the warp shuffles (exchanged through a per-warp barrier) behave as on
// a GPU. Function-local __shared__ arrays become statics (shared by the block's threads;
// blocks never overlap).
#ifndef IMGD_TESTS_CUDA_EMU_H
#define IMGD_TESTS_CUDA_EMU_H

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime_api.h>
#include <deque>
#include <memory>
#include <sys/mman.h>
#include <type_traits>
#include <ucontext.h>
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
#define __launch_bounds__(...)

/* the C++ overload nvcc's cuda_runtime.h provides */
template <class T> cudaError_t cudaFuncSetAttribute(T *fn, cudaFuncAttribute a, int v) {
    (void)fn;
    (void)a;
    (void)v;
    return cudaSuccess;
}

namespace cuk_emu {
/* A block's threads are fibers on the launching thread: each runs until it waits at a barrier
 * or ends, then the next runnable one resumes. Switching fibers costs no kernel thread start,
 * no futex and no scheduler round trip, which threads per CUDA thread did (most of an
 * emulated test's time). On x86-64 a switch saves the callee-saved registers and swaps stack
 * pointers (cuk_emu_switch below, no system call); elsewhere it is ucontext's swapcontext.
 * A barrier whose waiters can never be released (a __syncthreads some threads skip) aborts
 * with a message instead of hanging. */
#if defined(__x86_64__)
typedef void   *context; /* the saved stack pointer */
extern "C" void cuk_emu_switch(context *save, context to);
/* weak: every translation unit that includes this header defines it */
__asm__(".text\n.weak cuk_emu_switch\n.type cuk_emu_switch,@function\ncuk_emu_switch:\n"
        "pushq %rbp\npushq %rbx\npushq %r12\npushq %r13\npushq %r14\npushq %r15\n"
        "movq %rsp, (%rdi)\nmovq %rsi, %rsp\n"
        "popq %r15\npopq %r14\npopq %r13\npopq %r12\npopq %rbx\npopq %rbp\nret\n"
        ".size cuk_emu_switch, .-cuk_emu_switch\n");
inline void ctx_switch(context *save, context *to) {
    cuk_emu_switch(save, *to);
}
#else
typedef ucontext_t context;
inline void        ctx_switch(context *save, context *to) {
           swapcontext(save, to);
}
#endif
struct barrier {
    unsigned              expected = 0, count = 0;
    std::vector<unsigned> waiters;
};
struct async_copy {
    void       *dst;
    const void *src;
    int         n;
};
struct fiber {
    context                              ctx;
    void                                *stack = nullptr;
    dim3                                 tid;
    bool                                 done     = false;
    uint64_t                             shuffles = 0; /* exchange calls in this block */
    std::vector<async_copy>              open;         /* cp.async copies not yet committed */
    std::vector<std::vector<async_copy>> groups;
};
struct block_ctx {
    dim3                       grid, block;
    barrier                    bar;
    std::vector<barrier>       warp_bar;
    std::vector<double>        slots; /* 2 per thread (exchange): two halves */
    std::vector<uint64_t>      wide;  /* CUK_EMU_WIDE per thread (gather) */
    std::vector<float>         mma;   /* CUK_EMU_MMA per warp (cuk_mma16816's A and B) */
    std::vector<unsigned char> dyn;
    std::deque<unsigned>       runq;
};
inline block_ctx                          *g_block;
inline dim3                                tl_tid, tl_bid; /* the running fiber's */
inline unsigned                            tl_lin;
inline context                             g_sched;
inline std::vector<std::unique_ptr<fiber>> g_fibers;
inline void (*g_body)(void *);
inline void     *g_body_arg;
constexpr size_t k_stack = 512 * 1024, k_guard = 4096;

inline fiber &cur() {
    return *g_fibers[tl_lin];
}
inline void fiber_entry() {
    g_body(g_body_arg);
    cur().done = true;
#if defined(__x86_64__)
    ctx_switch(&cur().ctx, &g_sched); /* never resumed */
    __builtin_unreachable();
#endif /* else returning resumes g_sched (uc_link) */
}

/* f's context set to start fiber_entry on its own stack. */
inline void ctx_start(fiber &f) {
    char *top = static_cast<char *>(f.stack) + k_guard + k_stack;
#if defined(__x86_64__)
    /* cuk_emu_switch pops 6 registers and returns into fiber_entry, which then sees the stack
     * as a called function does (rsp + 8 aligned to 16) */
    auto *sp = reinterpret_cast<uintptr_t *>(top) - 8;
    std::memset(sp, 0, 8 * sizeof *sp);
    sp[6] = reinterpret_cast<uintptr_t>(&fiber_entry);
    f.ctx = sp;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp   = top - k_stack;
    f.ctx.uc_stack.ss_size = k_stack;
    f.ctx.uc_link          = &g_sched;
    makecontext(&f.ctx, fiber_entry, 0);
#endif
}
inline void arrive_and_wait(barrier &b) {
    if (++b.count == b.expected) {
        b.count = 0;
        for (unsigned w : b.waiters) g_block->runq.push_back(w);
        b.waiters.clear();
        return;
    }
    b.waiters.push_back(tl_lin);
    ctx_switch(&cur().ctx, &g_sched);
}

template <class T> T *dyn_shared() {
    return reinterpret_cast<T *>(g_block->dyn.data());
}

/* One barrier per shuffle: the slots alternate between two halves (the lane's count of
 * shuffles so far picks one), so a lane that has read its value and writes the next
 * shuffle's cannot overwrite one another lane has still to read: it writes the other half,
 * and cannot come back to this one before every lane has arrived at the next barrier. */
template <class T> T exchange(T v, unsigned src_lane) {
    const unsigned w              = tl_lin / 32;
    const size_t   half           = (cur().shuffles++ & 1) * (g_block->slots.size() / 2);
    g_block->slots[half + tl_lin] = (double)v;
    arrive_and_wait(g_block->warp_bar[w]);
    return (T)g_block->slots[half + w * 32 + src_lane];
}

/* Every lane's n (<= CUK_EMU_WIDE) 64-bit values of its warp: all[lane * n + i]. */
#define CUK_EMU_WIDE 16
#define CUK_EMU_MMA  (16 * 16 + 16 * 8)
inline void gather(const uint64_t *mine, int n, uint64_t *all) {
    unsigned w = tl_lin / 32;
    for (int i = 0; i < n; i++) g_block->wide[(size_t)tl_lin * CUK_EMU_WIDE + i] = mine[i];
    arrive_and_wait(g_block->warp_bar[w]);
    for (unsigned l = 0; l < 32; l++)
        for (int i = 0; i < n; i++)
            all[l * n + i] = g_block->wide[(size_t)(w * 32 + l) * CUK_EMU_WIDE + i];
    arrive_and_wait(g_block->warp_bar[w]);
}

/* Runs body(arg) as every thread of one block. */
inline void run_block(block_ctx &c, unsigned nt, void (*body)(void *), void *arg) {
    while (g_fibers.size() < nt) {
        auto  f = std::make_unique<fiber>();
        void *m = mmap(nullptr, k_stack + k_guard, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (m == MAP_FAILED) {
            std::fprintf(stderr, "cuda_emu: no memory for a fiber stack\n");
            std::abort();
        }
        mprotect(m, k_guard, PROT_NONE); /* an overflow faults instead of corrupting */
        f->stack = m;
        g_fibers.push_back(std::move(f));
    }
    g_block    = &c;
    g_body     = body;
    g_body_arg = arg;
    for (unsigned t = 0; t < nt; t++) {
        fiber &f   = *g_fibers[t];
        f.tid      = dim3(t % c.block.x, (t / c.block.x) % c.block.y, t / (c.block.x * c.block.y));
        f.done     = false;
        f.shuffles = 0;
        f.open.clear();
        f.groups.clear();
        ctx_start(f);
        c.runq.push_back(t);
    }
    unsigned done = 0;
    while (!c.runq.empty()) {
        unsigned t = c.runq.front();
        c.runq.pop_front();
        tl_lin = t;
        tl_tid = g_fibers[t]->tid;
        ctx_switch(&g_sched, &g_fibers[t]->ctx);
        if (g_fibers[t]->done) done++;
    }
    if (done != nt) {
        std::fprintf(stderr,
                     "cuda_emu: block (%u,%u,%u): %u of %u threads wait at a barrier the others "
                     "never reach (a __syncthreads or warp operation not every thread runs)\n",
                     tl_bid.x, tl_bid.y, tl_bid.z, nt - done, nt);
        std::abort();
    }
    g_block = nullptr;
}

template <class K> struct launcher {
    K                          k;
    dim3                       grid, block;
    size_t                     shmem;
    template <class... A> void operator()(A... args) {
        unsigned nt   = block.x * block.y * block.z;
        auto     call = [&] { k(args...); };
        auto     body = [](void *p) { (*static_cast<decltype(call) *>(p))(); };
        /* one context for the launch: every buffer but dynamic shared memory is written
         * before it is read, and the barriers are back at zero after each block */
        block_ctx c;
        c.grid         = grid;
        c.block        = block;
        c.bar.expected = nt;
        c.warp_bar.resize((nt + 31) / 32);
        for (unsigned w = 0; w < c.warp_bar.size(); w++)
            c.warp_bar[w].expected = nt - w * 32 < 32 ? nt - w * 32 : 32;
        c.slots.assign(2 * (size_t)nt, 0.0);
        c.wide.assign((size_t)nt * CUK_EMU_WIDE, 0);
        c.mma.assign(c.warp_bar.size() * CUK_EMU_MMA, 0.0f);
        for (unsigned bz = 0; bz < grid.z; bz++)
            for (unsigned by = 0; by < grid.y; by++)
                for (unsigned bx = 0; bx < grid.x; bx++) {
                    c.dyn.assign(shmem + 16, 0);
                    tl_bid = dim3(bx, by, bz);
                    run_block(c, nt, body, &call);
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
    cuk_emu::arrive_and_wait(cuk_emu::g_block->bar);
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
    cuk_emu::arrive_and_wait(cuk_emu::g_block->warp_bar[cuk_emu::tl_lin / 32]);
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

/* ---- the sm_80 building blocks of device_impl.h ---- */
inline void cuk_cp_async16(void *dst, const void *src, int src_bytes) {
    cuk_emu::cur().open.push_back({dst, src, src_bytes});
}
inline void cuk_cp_async_commit() {
    cuk_emu::fiber &f = cuk_emu::cur();
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}
template <int N> void cuk_cp_async_wait() {
    auto &g = cuk_emu::cur().groups;
    while (g.size() > (size_t)N) {
        for (const auto &c : g.front()) {
            std::memcpy(c.dst, c.src, (size_t)c.n);
            std::memset(static_cast<char *>(c.dst) + c.n, 0, (size_t)(16 - c.n));
        }
        g.erase(g.begin());
    }
}

/* ldmatrix: the lanes' row addresses are exchanged, then each lane picks its elements */
inline void cuk_emu_ldsm(uint32_t r[4], const void *row, bool trans) {
    uint64_t mine = (uint64_t)(uintptr_t)row, all[32];
    cuk_emu::gather(&mine, 1, all);
    const unsigned l = cuk_emu::tl_lin % 32;
    for (unsigned i = 0; i < 4; i++) {
        uint16_t e[2];
        for (unsigned j = 0; j < 2; j++) {
            unsigned rr = trans ? 2 * (l % 4) + j : l / 4, cc = trans ? l / 4 : 2 * (l % 4) + j;
            e[j] = reinterpret_cast<const uint16_t *>((uintptr_t)all[8 * i + rr])[cc];
        }
        r[i] = (uint32_t)e[0] | (uint32_t)e[1] << 16;
    }
}
inline void cuk_ldsm_x4(uint32_t r[4], const void *row) {
    cuk_emu_ldsm(r, row, false);
}
inline void cuk_ldsm_x4_t(uint32_t r[4], const void *row) {
    cuk_emu_ldsm(r, row, true);
}

/* mma.m16n8k16: every lane writes its fragments' elements, as f32, into its warp's A (16x16)
 * and B (16x8) in the block context; after a warp barrier each lane computes its part of D
 * from them (f32 accumulation, as the tensor cores), and a second barrier keeps the matrices
 * until every lane has read them. */
template <class T> void cuk_mma16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    auto h = [](uint32_t reg, int j) {
        uint16_t v = (uint16_t)(reg >> (16 * j));
        return std::is_same<T, __half>::value ? imgd_f16_to_f32(v) : imgd_bf16_to_f32(v);
    };
    const unsigned w = cuk_emu::tl_lin / 32;
    const int      l = (int)(cuk_emu::tl_lin % 32), g = l / 4, c = 2 * (l % 4);
    float         *A = cuk_emu::g_block->mma.data() + (size_t)w * CUK_EMU_MMA, *B = A + 16 * 16;
    for (int j = 0; j < 2; j++) {
        A[g * 16 + c + j]           = h(a[0], j);
        A[(g + 8) * 16 + c + j]     = h(a[1], j);
        A[g * 16 + c + 8 + j]       = h(a[2], j);
        A[(g + 8) * 16 + c + 8 + j] = h(a[3], j);
        B[(c + j) * 8 + g]          = h(b[0], j);
        B[(c + 8 + j) * 8 + g]      = h(b[1], j);
    }
    cuk_emu::arrive_and_wait(cuk_emu::g_block->warp_bar[w]);
    float out[4];
    for (int i = 0; i < 4; i++) {
        int   row = g + 8 * (i / 2), col = c + i % 2;
        float acc = d[i];
        for (int k = 0; k < 16; k++) acc += A[row * 16 + k] * B[k * 8 + col];
        out[i] = acc;
    }
    cuk_emu::arrive_and_wait(cuk_emu::g_block->warp_bar[w]);
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

inline uint32_t cuk_pack_f16x2(float lo, float hi) {
    return (uint32_t)imgd_f32_to_f16(lo) | (uint32_t)imgd_f32_to_f16(hi) << 16;
}
inline uint32_t cuk_pack_bf16x2(float lo, float hi) {
    return (uint32_t)imgd_f32_to_bf16(lo) | (uint32_t)imgd_f32_to_bf16(hi) << 16;
}

inline float cuk_ld(const void *p, int32_t dtype, int64_t off) {
    if (dtype == CUK_F32) return static_cast<const float *>(p)[off];
    uint16_t h = static_cast<const uint16_t *>(p)[off];
    return dtype == CUK_F16 ? imgd_f16_to_f32(h) : imgd_bf16_to_f32(h);
}

inline float cuk_u16_f32(uint16_t h, int32_t dtype) {
    return dtype == CUK_F16 ? imgd_f16_to_f32(h) : imgd_bf16_to_f32(h);
}
inline uint16_t cuk_f32_u16(float v, int32_t dtype) {
    return dtype == CUK_F16 ? imgd_f32_to_f16(v) : imgd_f32_to_bf16(v);
}

inline void cuk_st(void *p, int32_t dtype, int64_t off, float v) {
    if (dtype == CUK_F32)
        static_cast<float *>(p)[off] = v;
    else
        static_cast<uint16_t *>(p)[off] =
            dtype == CUK_F16 ? imgd_f32_to_f16(v) : imgd_f32_to_bf16(v);
}

#endif
