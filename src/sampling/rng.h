/* Random number generators that reproduce torch's, so a seed gives the same noise as
 * diffusers, ComfyUI and A1111.
 *
 * IMGD_RNG_CPU         torch's CPU generator (mt19937) and torch.randn / torch.rand for float32
 *                      as x86-64 builds of torch compute them. torch.randn of n >= 16 elements
 *                      uses the AVX2 kernel (normal_fill_AVX2: n uniforms, Box-Muller on
 *                      blocks of 16 with avx_mathfun's log/sincos, the last 16 recomputed
 *                      from 16 fresh uniforms when n % 16 != 0); torch dispatches it on every
 *                      AVX2 and AVX-512 CPU (normal_stub has no AVX-512 kernel). It is
 *                      reproduced bit for bit: the same float operations in the same order,
 *                      including the FMAs gcc contracts in the wheels (verified on the
 *                      conformance kit, whose latents and noise are seeded CPU draws).
 *                      n < 16 uses at::normal_distribution<double> (Box-Muller in double on
 *                      53-bit uniforms, the second value cached in the generator for the next
 *                      draw, as torch caches it), reproduced with libm's log1p/sin/cos.
 * IMGD_RNG_CPU_SCALAR  the same generator with torch's scalar kernel for n >= 16
 *                      (normal_fill: float logf/cosf/sinf), which builds without AVX2 use
 *                      (arm64 Linux, Apple silicon). Exact where the platform libm agrees
 *                      with glibc's logf/sinf/cosf (it does for glibc; Apple's may differ in
 *                      the last bit of some values).
 * IMGD_RNG_PHILOX      torch's CUDA generator: Philox4x32-10 keyed by the 64-bit seed, one
 *                      curand_init(seed, subsequence = thread, offset) per thread of
 *                      distribution_nullary_kernel's grid-stride loop, curand_normal4 per
 *                      iteration (element li = idx + k*4T + ii*T gets value ii of the float4),
 *                      and the generator's offset advanced by the kernel's counter_offset per
 *                      call. Counters, keys and uniforms are exact; the Box-Muller transform
 *                      uses libm sinf/cosf where the GPU uses the __sincosf intrinsic, so
 *                      values agree to about 1e-6 absolute, not bit for bit. The thread
 *                      count T depends on the GPU once a tensor needs more blocks of 256
 *                      threads than the GPU runs at once (SMs x maxThreadsPerSM/256); the
 *                      default reproduces every tensor that fits in one wave (any latent of
 *                      SD 1.x/2.x at 512-1024 px on current GPUs); imgd_rng_philox_blocks()
 *                      sets the limit of a given GPU for larger ones.
 *
 * An imgd_rng is a plain value (no heap): initialise with imgd_rng_init, copy freely.
 * Not thread-safe: one generator per thread, like torch's. */
#ifndef IMGD_SAMPLING_RNG_H
#define IMGD_SAMPLING_RNG_H

#include <stdbool.h>

#include "base/base.h"

typedef enum imgd_rng_kind {
    IMGD_RNG_CPU        = 1,
    IMGD_RNG_CPU_SCALAR = 2,
    IMGD_RNG_PHILOX     = 3,
    IMGD_RNG_KIND_COUNT
} imgd_rng_kind;

#define IMGD_RNG_MT_N 624

typedef struct imgd_rng {
    imgd_rng_kind kind;
    uint64_t      seed;
    /* mt19937 (CPU kinds) */
    uint32_t mt[IMGD_RNG_MT_N];
    uint32_t mt_next;    /* next state word to temper; IMGD_RNG_MT_N = twist first */
    bool     has_normal; /* torch's cached second Box-Muller value (n < 16 draws) */
    double   next_normal;
    /* Philox (CUDA kind) */
    uint64_t philox_offset; /* torch's philox_offset_per_thread, a multiple of 4 */
    uint32_t philox_blocks; /* max resident blocks of 256 threads, 0 = unlimited */
} imgd_rng;

/* Seeds like torch.manual_seed(seed) (CPU kinds: mt19937 seeded with the low 32 bits, the
 * cached normal cleared; PHILOX: key = seed, offset 0). An unknown kind is treated as
 * IMGD_RNG_CPU. Cannot fail. */
void imgd_rng_init(imgd_rng *r, imgd_rng_kind kind, uint64_t seed);

/* One torch.randn(n) call (float32, contiguous; any shape of n elements draws the same
 * values). n == 0 draws nothing. */
void imgd_rng_randn(imgd_rng *r, float *out, size_t n);

/* One torch.rand(n) call (float32 uniforms in [0, 1)). */
void imgd_rng_rand(imgd_rng *r, float *out, size_t n);

/* The next raw mt19937 output (CPU kinds; what torch's generator.random() returns). */
uint32_t imgd_rng_u32(imgd_rng *r);

/* Limits the Philox grid to max_blocks blocks of 256 threads (a GPU's
 * multiProcessorCount * (maxThreadsPerMultiProcessor / 256), e.g. 82 * 6 = 492 on an RTX
 * 3090); 0 = unlimited (the default). Only tensors larger than max_blocks * 256 elements
 * are affected. */
void imgd_rng_philox_blocks(imgd_rng *r, uint32_t max_blocks);

/* Philox4x32-10 of one counter and key (exposed for tests: Random123 known answers). */
void imgd_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* "cpu", "cpu_scalar", "philox"; NULL for an unknown kind. */
const char *imgd_rng_kind_name(imgd_rng_kind kind);

/* Parses a kind name (also "cuda" and "nv" for philox). IMGD_E_INVALID_ARG naming the
 * accepted names; *out written only on success. */
imgd_status imgd_rng_kind_parse(const char *name, imgd_rng_kind *out);

#endif
