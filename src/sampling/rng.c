/* torch-compatible generators: mt19937 + torch's CPU normal kernels, Philox4x32-10 + the
 * CUDA grid-stride mapping. See rng.h for what is exact and what is approximate. */
#include "sampling/rng.h"

#include <math.h>
#include <string.h>

#include "base/error.h"

/* Every float expression below must round after each operation, exactly as the vector
 * intrinsics torch uses do: no contraction into FMA (gcc's ISO mode already has it off). */
#if defined(__clang__)
#    pragma STDC FP_CONTRACT OFF
#endif

/* ---------------------------------------------------------------------------------- */
/* mt19937 (the engine torch's CPUGeneratorImpl wraps)                                 */
/* ---------------------------------------------------------------------------------- */

#define MT_M          397
#define MT_MATRIX_A   0x9908b0dfu
#define MT_UPPER_MASK 0x80000000u
#define MT_LOWER_MASK 0x7fffffffu

static void mt_seed(imgd_rng *r, uint64_t seed) {
    r->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t j = 1; j < IMGD_RNG_MT_N; j++) {
        uint32_t p = r->mt[j - 1];
        r->mt[j]   = 1812433253u * (p ^ (p >> 30)) + j;
    }
    r->mt_next = IMGD_RNG_MT_N;
}

static void mt_twist(imgd_rng *r) {
    uint32_t *s = r->mt;
    for (uint32_t i = 0; i < IMGD_RNG_MT_N; i++) {
        uint32_t y = (s[i] & MT_UPPER_MASK) | (s[(i + 1) % IMGD_RNG_MT_N] & MT_LOWER_MASK);
        uint32_t v = s[(i + MT_M) % IMGD_RNG_MT_N] ^ (y >> 1);
        s[i]       = (y & 1u) ? v ^ MT_MATRIX_A : v;
    }
    r->mt_next = 0;
}

uint32_t imgd_rng_u32(imgd_rng *r) {
    if (r->mt_next >= IMGD_RNG_MT_N) mt_twist(r);
    uint32_t y = r->mt[r->mt_next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* generator->random64(): the first 32-bit draw is the high word. */
static uint64_t mt_u64(imgd_rng *r) {
    uint64_t hi = imgd_rng_u32(r);
    uint64_t lo = imgd_rng_u32(r);
    return (hi << 32) | lo;
}

/* at::uniform_real_distribution<float>(0, 1): 24 random bits. */
static float uniform_f32(imgd_rng *r) {
    return (float)(imgd_rng_u32(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* at::uniform_real_distribution<double>(0, 1): 53 random bits of random64(). */
static double uniform_f64(imgd_rng *r) {
    return (double)(mt_u64(r) & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* at::normal_distribution<double>: Box-Muller with the sine cached in the generator. */
static double normal_f64(imgd_rng *r) {
    if (r->has_normal) {
        r->has_normal = false;
        return r->next_normal;
    }
    const double pi    = 3.14159265358979323846;
    double       u1    = uniform_f64(r);
    double       u2    = uniform_f64(r);
    double       rad   = sqrt(-2.0 * log1p(-u2));
    double       theta = 2.0 * pi * u1;
    r->next_normal     = rad * sin(theta);
    r->has_normal      = true;
    return rad * cos(theta);
}

/* ---------------------------------------------------------------------------------- */
/* avx_mathfun.h (Cephes log and sincos) as torch's x86-64 wheels evaluate them, lane by */
/* lane. gcc builds that kernel with -mavx2 -mfma and its default -ffp-contract=fast, so  */
/* every multiply whose only use is one add/sub is fused: fmaf() marks exactly those (the */
/* first multiply in statement order wins when both operands of an add are products).   */
/* This reproduces torch's output bit for bit (checked on the conformance kit's seeded   */
/* latents); without the fusions 1% of the values differ in the last bit. The constants */
/* are double literals narrowed to float, as the originals are.                         */
/* ---------------------------------------------------------------------------------- */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float cephes_logf(float x) {
    const float sqrthf = (float)0.707106781186547524;
    const float p[9]   = {(float)7.0376836292E-2,  (float)-1.1514610310E-1, (float)1.1676998740E-1,
                          (float)-1.2420140846E-1, (float)1.4249322787E-1,  (float)-1.6668057665E-1,
                          (float)2.0000714765E-1,  (float)-2.4999993993E-1, (float)3.3333331174E-1};
    const float q1     = (float)-2.12194440e-4;
    const float q2     = (float)0.693359375;

    bool invalid = !(x > 0.0f);
    if (x < u2f(0x00800000u)) x = u2f(0x00800000u); /* cut off denormals */
    int32_t imm0 = (int32_t)(f2u(x) >> 23);
    x            = u2f((f2u(x) & ~0x7f800000u) | f2u(0.5f));
    imm0 -= 0x7f;
    float e   = (float)imm0;
    e         = e + 1.0f;
    bool  lt  = x < sqrthf;
    float tmp = lt ? x : 0.0f;
    x         = x - 1.0f;
    e         = e - (lt ? 1.0f : 0.0f);
    x         = x + tmp;
    float z   = x * x;
    float y   = p[0];
    for (int i = 1; i < 9; i++) y = fmaf(y, x, p[i]);
    y   = y * x;
    tmp = e * q1;
    y   = fmaf(y, z, tmp);
    y   = fmaf(-z, 0.5f, y);
    x   = x + y;
    x   = fmaf(e, q2, x);
    return invalid ? u2f(0xffffffffu) : x;
}

static void cephes_sincosf(float xin, float *s, float *c) {
    const float dp1  = (float)-0.78515625;
    const float dp2  = (float)-2.4187564849853515625e-4;
    const float dp3  = (float)-3.77489497744594108e-8;
    const float sp0  = (float)-1.9515295891E-4;
    const float sp1  = (float)8.3321608736E-3;
    const float sp2  = (float)-1.6666654611E-1;
    const float cp0  = (float)2.443315711809948E-005;
    const float cp1  = (float)-1.388731625493765E-003;
    const float cp2  = (float)4.166664568298827E-002;
    const float fopi = (float)1.27323954473516;

    uint32_t sign_sin = f2u(xin) & 0x80000000u;
    float    x        = u2f(f2u(xin) & 0x7fffffffu);
    float    y        = x * fopi;
    int32_t  j        = (int32_t)y; /* cvttps: truncation */
    j                 = (j + 1) & ~1;
    y                 = (float)j;
    uint32_t swap_sin = ((uint32_t)j & 4u) << 29;
    bool     poly1    = (j & 2) == 0;
    uint32_t sign_cos = (~(uint32_t)(j - 2) & 4u) << 29;
    sign_sin ^= swap_sin;

    x = fmaf(y, dp1, x);
    x = fmaf(y, dp2, x);
    x = fmaf(y, dp3, x);

    float z  = x * x;
    float yc = fmaf(cp0, z, cp1);
    yc       = fmaf(yc, z, cp2);
    yc       = yc * z;
    float h  = z * 0.5f;
    yc       = fmaf(yc, z, -h);
    yc       = yc + 1.0f;

    float ys = fmaf(sp0, z, sp1);
    ys       = fmaf(ys, z, sp2);
    ys       = ys * z;
    ys       = fmaf(ys, x, x);

    /* The selection adds an exact 0 to the chosen polynomial, as the original does. */
    float sin_v = poly1 ? 0.0f + ys : yc + 0.0f;
    float cos_v = poly1 ? yc + 0.0f : 0.0f + ys;
    *s          = u2f(f2u(sin_v) ^ sign_sin);
    *c          = u2f(f2u(cos_v) ^ sign_cos);
}

/* ---------------------------------------------------------------------------------- */
/* torch.randn on CPU                                                                  */
/* ---------------------------------------------------------------------------------- */

/* normal_fill_16_AVX2 with mean 0, std 1 (its final fma(n, 1, 0) is exact). */
static void normal_fill_16_avx2(float *d) {
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1     = 1.0f - d[j];
        float u2     = d[j + 8];
        float lg     = cephes_logf(u1);
        float radius = sqrtf(-2.0f * lg);
        float theta  = two_pi * u2;
        float st, ct;
        cephes_sincosf(theta, &st, &ct);
        d[j]     = radius * ct;
        d[j + 8] = radius * st;
    }
}

/* normal_fill_16 (the scalar template) with mean 0, std 1. */
static void normal_fill_16_scalar(float *d) {
    for (int j = 0; j < 8; j++) {
        float u1     = 1.0f - d[j];
        float u2     = d[j + 8];
        float radius = sqrtf(-2.0f * logf(u1));
        float theta  = (float)(2.0 * 3.14159265358979323846 * (double)u2);
        float c      = radius * cosf(theta);
        float s      = radius * sinf(theta);
        d[j]         = c * 1.0f + 0.0f;
        d[j + 8]     = s * 1.0f + 0.0f;
    }
}

static void randn_cpu(imgd_rng *r, float *out, size_t n) {
    if (n < 16) {
        for (size_t i = 0; i < n; i++) out[i] = (float)normal_f64(r);
        return;
    }
    void (*fill16)(float *) =
        r->kind == IMGD_RNG_CPU_SCALAR ? normal_fill_16_scalar : normal_fill_16_avx2;
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(r);
    for (size_t i = 0; i + 16 <= n; i += 16) fill16(out + i);
    if (n % 16 != 0) {
        float *d = out + n - 16; /* recompute the last 16 from fresh uniforms */
        for (int i = 0; i < 16; i++) d[i] = uniform_f32(r);
        fill16(d);
    }
}

/* ---------------------------------------------------------------------------------- */
/* Philox4x32-10 and torch's CUDA mapping                                              */
/* ---------------------------------------------------------------------------------- */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void imgd_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1          = (uint32_t)p1;
        c3          = (uint32_t)p0;
        c0          = n0;
        c2          = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* curand's Philox_State_Incr(state, n): adds n to the low 64 bits of the counter. */
static void philox_ctr_add(uint32_t c[4], uint64_t n) {
    uint32_t nlo = (uint32_t)n, nhi = (uint32_t)(n >> 32);
    c[0] += nlo;
    if (c[0] < nlo) nhi++;
    c[1] += nhi;
    if (nhi <= c[1]) return;
    if (++c[2]) return;
    ++c[3];
}

static void philox_ctr_inc(uint32_t c[4]) {
    if (++c[0]) return;
    if (++c[1]) return;
    if (++c[2]) return;
    ++c[3];
}

/* _curand_box_muller on the device: x, y -> (sin, cos) * sqrt(-2 log u). */
static void philox_box_muller(uint32_t x, uint32_t y, float *a, float *b) {
    const float inv32     = 2.3283064e-10f;
    const float inv32_2pi = 2.3283064e-10f * 6.2831855f;
    float       u         = fmaf((float)x, inv32, inv32 / 2.0f);
    float       v         = fmaf((float)y, inv32_2pi, inv32_2pi / 2.0f);
    float       s         = sqrtf(-2.0f * logf(u));
    *a                    = sinf(v) * s;
    *b                    = cosf(v) * s;
}

static void randn_philox(imgd_rng *r, float *out, size_t n) {
    const uint64_t block = 256, unroll = 4;
    uint64_t       grid = (n + block - 1) / block;
    if (r->philox_blocks && grid > r->philox_blocks) grid = r->philox_blocks;
    const uint64_t threads = grid * block;
    const uint64_t calls   = (n - 1) / (threads * unroll) + 1; /* curand_normal4 per thread */
    const uint64_t offset  = r->philox_offset;
    r->philox_offset += calls * unroll; /* counter_offset, already a multiple of 4 */

    const uint32_t key[2] = {(uint32_t)r->seed, (uint32_t)(r->seed >> 32)};
    for (uint64_t idx = 0; idx < threads && idx < n; idx++) {
        /* curand_init(seed, subsequence = idx, offset): subsequence in the high 64 bits. */
        uint32_t ctr[4] = {0, 0, (uint32_t)idx, (uint32_t)(idx >> 32)};
        philox_ctr_add(ctr, offset / 4);
        for (uint64_t li0 = idx; li0 < n; li0 += threads * unroll) {
            uint32_t bits[4];
            float    v[4];
            imgd_rng_philox4x32_10(ctr, key, bits);
            philox_ctr_inc(ctr);
            philox_box_muller(bits[0], bits[1], &v[0], &v[1]);
            philox_box_muller(bits[2], bits[3], &v[2], &v[3]);
            for (uint64_t ii = 0; ii < unroll; ii++) {
                uint64_t li = li0 + threads * ii;
                if (li < n) out[li] = v[ii];
            }
        }
    }
}

static void rand_philox(imgd_rng *r, float *out, size_t n) {
    const uint64_t block = 256, unroll = 4;
    uint64_t       grid = (n + block - 1) / block;
    if (r->philox_blocks && grid > r->philox_blocks) grid = r->philox_blocks;
    const uint64_t threads = grid * block;
    const uint64_t calls   = (n - 1) / (threads * unroll) + 1;
    const uint64_t offset  = r->philox_offset;
    r->philox_offset += calls * unroll;

    const uint32_t key[2] = {(uint32_t)r->seed, (uint32_t)(r->seed >> 32)};
    const float    inv32  = 2.3283064e-10f;
    for (uint64_t idx = 0; idx < threads && idx < n; idx++) {
        uint32_t ctr[4] = {0, 0, (uint32_t)idx, (uint32_t)(idx >> 32)};
        philox_ctr_add(ctr, offset / 4);
        for (uint64_t li0 = idx; li0 < n; li0 += threads * unroll) {
            uint32_t bits[4];
            imgd_rng_philox4x32_10(ctr, key, bits);
            philox_ctr_inc(ctr);
            for (uint64_t ii = 0; ii < unroll; ii++) {
                uint64_t li = li0 + threads * ii;
                if (li >= n) continue;
                /* curand_uniform4 is in (0, 1]; torch maps 1 back to 0. */
                float u = fmaf((float)bits[ii], inv32, inv32 / 2.0f);
                out[li] = u == 1.0f ? 0.0f : u;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------- */
/* API                                                                                 */
/* ---------------------------------------------------------------------------------- */

void imgd_rng_init(imgd_rng *r, imgd_rng_kind kind, uint64_t seed) {
    memset(r, 0, sizeof *r);
    if (kind != IMGD_RNG_CPU_SCALAR && kind != IMGD_RNG_PHILOX) kind = IMGD_RNG_CPU;
    r->kind = kind;
    r->seed = seed;
    mt_seed(r, seed);
}

void imgd_rng_randn(imgd_rng *r, float *out, size_t n) {
    if (n == 0) return;
    if (r->kind == IMGD_RNG_PHILOX) {
        randn_philox(r, out, n);
    } else {
        randn_cpu(r, out, n);
    }
}

void imgd_rng_rand(imgd_rng *r, float *out, size_t n) {
    if (n == 0) return;
    if (r->kind == IMGD_RNG_PHILOX) {
        rand_philox(r, out, n);
        return;
    }
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(r);
}

void imgd_rng_philox_blocks(imgd_rng *r, uint32_t max_blocks) {
    r->philox_blocks = max_blocks;
}

static const struct {
    const char   *name;
    imgd_rng_kind kind;
} rng_names[] = {
    {"cpu", IMGD_RNG_CPU},       {"cpu_scalar", IMGD_RNG_CPU_SCALAR},
    {"philox", IMGD_RNG_PHILOX}, {"cuda", IMGD_RNG_PHILOX},
    {"nv", IMGD_RNG_PHILOX},
};

const char *imgd_rng_kind_name(imgd_rng_kind kind) {
    switch (kind) {
    case IMGD_RNG_CPU: return "cpu";
    case IMGD_RNG_CPU_SCALAR: return "cpu_scalar";
    case IMGD_RNG_PHILOX: return "philox";
    default: return NULL;
    }
}

imgd_status imgd_rng_kind_parse(const char *name, imgd_rng_kind *out) {
    if (name) {
        for (size_t i = 0; i < IMGD_ARRAY_LEN(rng_names); i++) {
            if (strcmp(name, rng_names[i].name) == 0) {
                *out = rng_names[i].kind;
                return IMGD_OK;
            }
        }
    }
    return imgd_fail(IMGD_E_INVALID_ARG, "unknown rng '%s': expected cpu, cpu_scalar or philox",
                     name ? name : "(null)");
}
