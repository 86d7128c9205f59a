/* Internals shared by the CPU backend's files: the backend object, the kernel table row,
 * and small inline math that gcc vectorises (exp, erf, f16/bf16 conversion).
 *
 * Kernel files are compiled with -O3 -ffp-contract=fast (CMakeLists.txt). Hot loops are
 * written as plain C and cloned per ISA with CPU_CLONES (gcc target_clones: an AVX-512,
 * an AVX2+FMA and a baseline version, picked at load time by ifunc), so the same source
 * runs on any x86-64 and uses AVX-512 where the CPU has it. */
#ifndef IMGD_TENSOR_CPU_CPU_IMPL_H
#define IMGD_TENSOR_CPU_CPU_IMPL_H

#include <dnnl.h>
#include <stdbool.h>
#include <string.h>

#include "base/pool.h"
#include "tensor/backend.h"

/* Not under TSan: ifunc resolvers run during relocation, before the TSan runtime that
 * instruments them is up. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#    define CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#    define CPU_CLONES
#endif

typedef struct cpu_backend {
    imgd_backend  base;
    imgd_pool    *pool;
    bool          owns_pool;
    uint32_t      n_threads;
    imgd_cpu_math math;   /* resolved: F32 or BF16 */
    imgd_cpu_gemm gemm;   /* resolved: DNNL or OPENBLAS */
    bool          avx512; /* AVX-512F/BW/VL/DQ usable for the hand-written kernels */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    void (*omp_set)(int); /* omp_set_num_threads, NULL when OpenMP is not loaded */
    bool     profile;     /* IMGD_PROFILE set: time every node, print per op at free */
    double   prof_s[IMGD_OP_COUNT];
    uint64_t prof_n[IMGD_OP_COUNT];
} cpu_backend;

/* One row per op in backend.c's table. */
typedef struct cpu_kernel {
    /* May be NULL. Sets n->scratch_bytes and n->backend_data. */
    imgd_status (*prepare)(cpu_backend *cb, imgd_tensor *n);
    /* May be NULL. Frees n->backend_data. */
    void (*release)(cpu_backend *cb, imgd_tensor *n);
    /* Required for executed ops. Never allocates. */
    imgd_status (*run)(cpu_backend *cb, const imgd_tensor *n);
} cpu_kernel;

/* ---- threading helpers ------------------------------------------------------------------ */

/* Runs fn over [0, n) on the pool, or inline when n * cost_per_item is below ~64k units of
 * work (waking threads costs more than it saves). */
void cpu_parallel(cpu_backend *cb, size_t n, size_t cost_per_item, imgd_pool_fn fn, void *ctx);

/* Maps a oneDNN status to IMGD_E_DEVICE/NOMEM with a message naming what failed. */
imgd_status cpu_dnnl_fail(dnnl_status_t s, const char *what);

/* ---- oneDNN helpers (dnnl_util.c) -------------------------------------------------------- */

/* A reorder from a plain tensor into a buffer in the node's scratch (or back). */
typedef struct cpu_reorder {
    dnnl_primitive_t prim;
    dnnl_memory_t    from, to;
    size_t           off;  /* byte offset of the reordered buffer in scratch */
    size_t           size; /* its bytes; 0 when no reorder is needed */
} cpu_reorder;

size_t cpu_align_up(size_t n); /* to IMGD_TENSOR_ALIGN */
/* A memory object for md whose handle is set at replay. */
dnnl_status_t cpu_dnnl_mem(cpu_backend *cb, const dnnl_memory_desc_t *md, dnnl_memory_t *out);
/* Creates a reorder plain -> chosen (chosen -> plain when back) unless the descs are equal
 * (then r->size stays 0); appends its buffer to the scratch layout at *scratch. */
dnnl_status_t cpu_reorder_new(cpu_backend *cb, const dnnl_memory_desc_t *plain,
                              const dnnl_memory_desc_t *chosen, bool back, cpu_reorder *r,
                              size_t *scratch);
/* Runs r between plain memory and its buffer in scratch. */
dnnl_status_t cpu_reorder_run(cpu_backend *cb, cpu_reorder *r, const void *plain,
                              unsigned char *scratch, bool back);
void          cpu_reorder_free(cpu_reorder *r);
/* True when oneDNN picked its reference (unoptimised, orders of magnitude slower)
 * implementation for pd: callers then try another formulation. */
bool cpu_dnnl_is_ref(const_dnnl_primitive_desc_t pd);

/* ---- kernels (one file per family) ------------------------------------------------------- */

/* elementwise.c */
imgd_status cpu_unary(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_geglu(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_binary(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_timestep(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_rope(cpu_backend *cb, const imgd_tensor *n);
/* layout.c */
imgd_status cpu_cast(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_dequantize(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_concat(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_pad(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_upsample(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_avg_pool2d(cpu_backend *cb, const imgd_tensor *n);
/* norm.c */
imgd_status cpu_group_norm(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_layer_norm(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_rms_norm(cpu_backend *cb, const imgd_tensor *n);
imgd_status cpu_softmax(cpu_backend *cb, const imgd_tensor *n);
/* attention.c */
imgd_status cpu_attention_prepare(cpu_backend *cb, imgd_tensor *n);
imgd_status cpu_attention(cpu_backend *cb, const imgd_tensor *n);
/* matmul.c */
imgd_status cpu_matmul_prepare(cpu_backend *cb, imgd_tensor *n);
void        cpu_matmul_release(cpu_backend *cb, imgd_tensor *n);
imgd_status cpu_matmul(cpu_backend *cb, const imgd_tensor *n);
/* quant_matmul.c */
imgd_status cpu_linear_quant_prepare(cpu_backend *cb, imgd_tensor *n);
imgd_status cpu_linear_quant(cpu_backend *cb, const imgd_tensor *n);
/* conv2d.c */
imgd_status cpu_conv2d_prepare(cpu_backend *cb, imgd_tensor *n);
void        cpu_conv2d_release(cpu_backend *cb, imgd_tensor *n);
imgd_status cpu_conv2d(cpu_backend *cb, const imgd_tensor *n);

/* ---- inline math (vectorisable: no calls, no branches that gcc cannot if-convert) ------- */

static inline float cpu_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t cpu_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* e^x, relative error ~2 ulp (Cephes expf polynomial, Cody-Waite reduction). Inputs below
 * -87.3 give 0, above 88 saturate to e^88; NaN propagates. */
static inline float cpu_expf(float x) {
    float xc   = x > 88.0f ? 88.0f : x;
    xc         = xc < -87.3f ? -87.3f : xc;
    float   r  = xc * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: round to integer */
    int32_t ni = (int32_t)cpu_f32_bits(r) - 0x4B400000;
    float   n  = r - 12582912.0f;
    float   t  = xc - n * 0.693359375f;
    t          = t + n * 2.12194440e-4f;
    float y    = 1.9875691500e-4f;
    y          = y * t + 1.3981999507e-3f;
    y          = y * t + 8.3334519073e-3f;
    y          = y * t + 4.1665795894e-2f;
    y          = y * t + 1.6666665459e-1f;
    y          = y * t + 5.0000001201e-1f;
    y          = y * t * t + t + 1.0f;
    float s    = cpu_bits_f32((uint32_t)(ni + 127) << 23);
    return x < -87.3f ? 0.0f : y * s;
}

/* erf(x), absolute error < 1.5e-7 (Abramowitz & Stegun 7.1.26). */
static inline float cpu_erff(float x) {
    float a = x < 0.0f ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float p = 1.061405429f;
    p       = p * t - 1.453152027f;
    p       = p * t + 1.421413741f;
    p       = p * t - 0.284496736f;
    p       = p * t + 0.254829592f;
    float r = 1.0f - p * t * cpu_expf(-a * a);
    return x < 0.0f ? -r : r;
}

static inline float cpu_sigmoid(float x) {
    return 1.0f / (1.0f + cpu_expf(-x));
}

static inline float cpu_gelu(float x) {
    return 0.5f * x * (1.0f + cpu_erff(x * 0.70710678118654752f));
}

/* tanh through exp; |x| is clamped at 9 where tanh is 1 to float precision. */
static inline float cpu_tanhf(float x) {
    float c = x > 9.0f ? 9.0f : (x < -9.0f ? -9.0f : x);
    return 1.0f - 2.0f / (cpu_expf(2.0f * c) + 1.0f);
}

static inline float cpu_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu;
    /* normals and subnormals: shift into an f32 exponent field and rescale by 2^112 */
    float f = cpu_bits_f32(em << 13) * 5.192296858534828e+33f;
    f       = em >= 0x7c00u ? cpu_bits_f32((em << 13) | 0x7f800000u) : f;
    return cpu_bits_f32(cpu_f32_bits(f) | sign);
}

static inline float cpu_bf16_to_f32(uint16_t h) {
    return cpu_bits_f32((uint32_t)h << 16);
}

/* Round to nearest even; NaN stays a quiet NaN. */
static inline uint16_t cpu_f32_to_bf16(float f) {
    uint32_t u = cpu_f32_bits(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : r);
}

#endif
