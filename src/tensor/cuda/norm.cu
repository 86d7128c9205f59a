// Normalisation kernels: one block per group (group_norm) or per row (layer_norm, rms_norm,
// softmax). Statistics are accumulated in double, in two passes (mean, then squared
// deviations), so they match the double-accumulating reference on long rows.
#include "device_impl.h"

#define NORM_THREADS 256

/* Sum of v over the block (all threads get the result). red: NORM_THREADS doubles. */
__device__ double block_sum(double v, double *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads(); /* red may still be read from a previous call */
    if (lane == 0) red[w] = v;
    __syncthreads();
    double t = 0;
    for (int i = 0; i < (int)(blockDim.x / 32); i++) t += red[i];
    return t;
}

__device__ float block_max(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float t = red[0];
    for (int i = 1; i < (int)(blockDim.x / 32); i++) t = fmaxf(t, red[i]);
    return t;
}

/* Group norm in two kernels over chunks of each group (a group of an SD 1.5 UNet at 64x64
 * holds 40,960 values, one of the SDXL VAE at 1024x1024 16.8 M: one block per group left most
 * of the GPU idle). Pass 1: every (group, chunk) block writes the double sum and sum of squares
 * of its chunk. Pass 2: every (group, chunk) block reduces its group's partials to the mean
 * and variance (double: E[x^2] - mean^2 keeps the f32 inputs' precision) and normalises its
 * chunk, with gamma, beta and SiLU fused. */
#define GN_CHUNK_MIN 8192

static int64_t gn_chunk(int64_t cnt) {
    int64_t c = GN_CHUNK_MIN;
    while ((cnt + c - 1) / c > 65535) c *= 2;
    return c;
}

/* The partials (two doubles per (group, chunk)), then two floats per group (mean and 1 / std:
 * the NHWC pass). */
extern "C" size_t cuk_group_norm_scratch(int64_t N, int64_t C, int64_t S, int64_t G) {
    if (G < 1 || N * C * S == 0) return 0;
    int64_t cnt = C / G * S, chunks = (cnt + gn_chunk(cnt) - 1) / gn_chunk(cnt);
    return (size_t)(N * G * chunks) * 2 * sizeof(double) + (size_t)(N * G) * 2 * sizeof(float);
}

/* V: CUK_VEC elements per load (S a multiple of CUK_VEC, x and out 16-byte aligned), each
 * vector's sums taken in f32 before they join the double ones. */
template <bool V>
__global__ void k_gn_partial(double *part, const void *x, int32_t xdt, int64_t cnt, int64_t chunk) {
    __shared__ double red[NORM_THREADS / 32];
    const int64_t     bg = blockIdx.x, p = blockIdx.y, P = gridDim.y;
    const int64_t     i0 = p * chunk, i1 = i0 + chunk < cnt ? i0 + chunk : cnt;
    double            s = 0, q = 0;
    if (V) {
        for (int64_t i = i0 + (int64_t)threadIdx.x * CUK_VEC; i < i1;
             i += (int64_t)blockDim.x * CUK_VEC) {
            float v[CUK_VEC], vs = 0.0f, vq = 0.0f;
            cuk_ld8(x, xdt, bg * cnt + i, v);
            for (int k = 0; k < CUK_VEC; k++) {
                vs += v[k];
                vq += v[k] * v[k];
            }
            s += (double)vs;
            q += (double)vq;
        }
    } else {
        for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
            double v = (double)cuk_ld(x, xdt, bg * cnt + i);
            s += v;
            q += v * v;
        }
    }
    s = block_sum(s, red);
    q = block_sum(q, red);
    if (threadIdx.x == 0) {
        part[(bg * P + p) * 2]     = s;
        part[(bg * P + p) * 2 + 1] = q;
    }
}

__device__ __forceinline__ float gn_one(float x, float m, float rstd, const float *gamma,
                                        const float *beta, int64_t c, int32_t silu) {
    float y = (x - m) * rstd;
    if (gamma) y *= gamma[c];
    if (beta) y += beta[c];
    return silu ? y / (1.0f + expf(-y)) : y;
}

template <bool V>
__global__ void k_gn_apply(void *out, int32_t odt, const void *x, int32_t xdt, const double *part,
                           const float *gamma, const float *beta, int64_t cnt, int64_t chunk,
                           int64_t S, int64_t cpg, int64_t G, float eps, int32_t silu) {
    __shared__ double red[NORM_THREADS / 32];
    const int64_t     bg = blockIdx.x, p = blockIdx.y, P = gridDim.y, g = bg % G;
    double            s = 0, q = 0;
    for (int64_t k = threadIdx.x; k < P; k += blockDim.x) {
        s += part[(bg * P + k) * 2];
        q += part[(bg * P + k) * 2 + 1];
    }
    s                 = block_sum(s, red);
    q                 = block_sum(q, red);
    const double mean = s / (double)cnt;
    double       var  = q / (double)cnt - mean * mean;
    if (var < 0) var = 0;
    const float   rstd = (float)(1.0 / sqrt(var + (double)eps));
    const float   m    = (float)mean;
    const int64_t i0 = p * chunk, i1 = i0 + chunk < cnt ? i0 + chunk : cnt;
    if (V) { /* the channel is constant over a vector; 32-bit division where S fits */
        const bool s32 = S < ((int64_t)1 << 31) && i1 < ((int64_t)1 << 31);
        for (int64_t i = i0 + (int64_t)threadIdx.x * CUK_VEC; i < i1;
             i += (int64_t)blockDim.x * CUK_VEC) {
            int64_t c = g * cpg + (s32 ? (int64_t)((uint32_t)i / (uint32_t)S) : i / S);
            float   v[CUK_VEC];
            cuk_ld8(x, xdt, bg * cnt + i, v);
            for (int k = 0; k < CUK_VEC; k++) v[k] = gn_one(v[k], m, rstd, gamma, beta, c, silu);
            cuk_st8(out, odt, bg * cnt + i, v);
        }
    } else {
        for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
            cuk_st(
                out, odt, bg * cnt + i,
                gn_one(cuk_ld(x, xdt, bg * cnt + i), m, rstd, gamma, beta, g * cpg + i / S, silu));
    }
}

/* NHWC output: each group's mean and 1 / std from its P partials (one thread per group), ... */
__global__ void k_gn_stats(float *st, const double *part, int64_t NG, int64_t P, int64_t cnt,
                           float eps) {
    CUK_FOR(i, NG) {
        double s = 0, q = 0;
        for (int64_t k = 0; k < P; k++) {
            s += part[(i * P + k) * 2];
            q += part[(i * P + k) * 2 + 1];
        }
        const double mean = s / (double)cnt;
        double       var  = q / (double)cnt - mean * mean;
        if (var < 0) var = 0;
        st[2 * i]     = (float)mean;
        st[2 * i + 1] = (float)(1.0 / sqrt(var + (double)eps));
    }
}

/* ... then 32x32 tiles of each image's [C, S] through shared memory (as cuk_transpose_ewise),
 * normalised on the way in and written out [N, S, C]: reads along S and writes along C both
 * coalesced. */
#define GN_TILE 32

__global__ void k_gn_apply_nhwc(void *out, int32_t odt, const void *x, int32_t xdt, const float *st,
                                const float *gamma, const float *beta, int64_t N, int64_t C,
                                int64_t S, int64_t cpg, int64_t G, int32_t silu, int64_t tiles_c,
                                int64_t tiles_s) {
    __shared__ float tile[GN_TILE][GN_TILE + 1];
    const int        tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    const int64_t    per = tiles_c * tiles_s, tiles = N * per;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
        int64_t z = t / per, rem = t - z * per;
        int64_t c0 = rem / tiles_s * GN_TILE, s0 = rem % tiles_s * GN_TILE;
        for (int j = ty; j < GN_TILE; j += GN_TILE / 8) {
            int64_t c = c0 + j, p = s0 + tx;
            if (c < C && p < S) {
                int64_t gi  = z * G + c / cpg;
                tile[j][tx] = gn_one(cuk_ld(x, xdt, (z * C + c) * S + p), st[2 * gi],
                                     st[2 * gi + 1], gamma, beta, c, silu);
            }
        }
        __syncthreads();
        for (int j = ty; j < GN_TILE; j += GN_TILE / 8) {
            int64_t p = s0 + j, c = c0 + tx;
            if (c < C && p < S) cuk_st(out, odt, (z * S + p) * C + c, tile[tx][j]);
        }
        __syncthreads(); /* the tile is refilled by the next iteration */
    }
}

extern "C" cudaError_t cuk_group_norm(void *out, int32_t odt, const void *x, int32_t xdt,
                                      const float *gamma, const float *beta, int64_t N, int64_t C,
                                      int64_t S, int64_t G, float eps, int32_t silu,
                                      int32_t out_nhwc, double *scratch, cudaStream_t s) {
    if (N * C * S == 0) return cudaSuccess;
    if (G < 1 || C % G != 0 || N * G > 0x7fffffff || !scratch) return cudaErrorInvalidValue;
    const int64_t cnt = C / G * S, chunk = gn_chunk(cnt);
    const dim3    grid((unsigned)(N * G), (unsigned)((cnt + chunk - 1) / chunk));
    const bool    vec = S % CUK_VEC == 0 && cuk_vec_ok(x) && cuk_vec_ok(out);
    if (vec) {
        CUK_LAUNCH(k_gn_partial<true>, grid, NORM_THREADS, 0, s)(scratch, x, xdt, cnt, chunk);
    } else {
        CUK_LAUNCH(k_gn_partial<false>, grid, NORM_THREADS, 0, s)(scratch, x, xdt, cnt, chunk);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (out_nhwc) {
        float  *st = (float *)(scratch + (size_t)(N * G) * grid.y * 2);
        int64_t tc = (C + GN_TILE - 1) / GN_TILE, ts = (S + GN_TILE - 1) / GN_TILE;
        CUK_LAUNCH(k_gn_stats, cuk_blocks(N * G), CUK_THREADS, 0, s)
        (st, scratch, N * G, (int64_t)grid.y, cnt, eps);
        e = cudaGetLastError();
        if (e != cudaSuccess) return e;
        CUK_LAUNCH(k_gn_apply_nhwc, cuk_grid(N * tc * ts), dim3(GN_TILE, 8), 0, s)
        (out, odt, x, xdt, st, gamma, beta, N, C, S, C / G, G, silu, tc, ts);
        return cudaGetLastError();
    }
    if (vec) {
        CUK_LAUNCH(k_gn_apply<true>, grid, NORM_THREADS, 0, s)
        (out, odt, x, xdt, scratch, gamma, beta, cnt, chunk, S, C / G, G, eps, silu);
    } else {
        CUK_LAUNCH(k_gn_apply<false>, grid, NORM_THREADS, 0, s)
        (out, odt, x, xdt, scratch, gamma, beta, cnt, chunk, S, C / G, G, eps, silu);
    }
    return cudaGetLastError();
}

/* Row kernels: blockIdx.x is a row in [0, rows) (rows split over gridDim.y when large). */
__device__ __forceinline__ int64_t row_index() {
    return (int64_t)blockIdx.y * gridDim.x + blockIdx.x;
}

static dim3 row_grid(int64_t rows) {
    int64_t x = rows < 65535 ? rows : 65535;
    return dim3((unsigned)x, (unsigned)((rows + x - 1) / x));
}

__global__ void k_layer_norm(void *out, int32_t odt, const void *x, int32_t xdt, const float *gamma,
                             const float *beta, int64_t rows, int64_t D, float eps) {
    __shared__ double red[NORM_THREADS / 32];
    int64_t           r = row_index();
    if (r >= rows) return; /* uniform per block */
    const int64_t xr = r * D;
    double        s  = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += (double)cuk_ld(x, xdt, xr + i);
    double mean = block_sum(s, red) / (double)D;
    double v    = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        double d = (double)cuk_ld(x, xdt, xr + i) - mean;
        v += d * d;
    }
    float rstd = (float)(1.0 / sqrt(block_sum(v, red) / (double)D + (double)eps));
    float m    = (float)mean;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        float y = (cuk_ld(x, xdt, xr + i) - m) * rstd;
        if (gamma) y *= gamma[i];
        if (beta) y += beta[i];
        cuk_st(out, odt, xr + i, y);
    }
}

/* layer_norm (RMS: rms_norm) on rows of up to 256 * C elements (D a multiple of CUK_VEC, x
 * and out 16-byte aligned): one warp per row, the row in registers (C vectors per lane), warp
 * shuffles for the sums; the block-per-row kernels spend more on their block reductions than
 * on the memory of an SD transformer's rows (320..1280) or FLUX's q/k heads (128).
 * Statistics as there: double, mean then squared deviations. */
#define LN_WARPS 8

__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <int C, bool RMS>
__global__ void k_norm_warp(void *out, int32_t odt, const void *x, int32_t xdt, const float *gamma,
                            const float *beta, int64_t rows, int64_t D, float eps) {
    const int64_t r    = (int64_t)blockIdx.x * LN_WARPS + threadIdx.x / 32;
    const int     lane = threadIdx.x % 32;
    if (r >= rows) return; /* uniform per warp */
    const int64_t xr = r * D, nv = D / CUK_VEC;
    float         v[C][CUK_VEC];
    double        s = 0;
#pragma unroll
    for (int c = 0; c < C; c++) { /* unrolled with a guard, so v stays in registers */
        int64_t j = lane + 32 * c;
        if (j < nv) {
            cuk_ld8(x, xdt, xr + j * CUK_VEC, v[c]);
            for (int k = 0; k < CUK_VEC; k++) s += (double)v[c][k];
        }
    }
    const double mean = RMS ? 0.0 : warp_sum(s) / (double)D;
    double       q    = 0;
#pragma unroll
    for (int c = 0; c < C; c++) {
        if (lane + 32 * c < nv) {
            for (int k = 0; k < CUK_VEC; k++) {
                double d = (double)v[c][k] - mean;
                q += d * d;
            }
        }
    }
    const float rstd = (float)(1.0 / sqrt(warp_sum(q) / (double)D + (double)eps));
    const float m    = (float)mean;
#pragma unroll
    for (int c = 0; c < C; c++) {
        int64_t j = lane + 32 * c;
        if (j < nv) {
            for (int k = 0; k < CUK_VEC; k++) {
                int64_t i = j * CUK_VEC + k;
                float   y = RMS ? v[c][k] * rstd : (v[c][k] - m) * rstd;
                if (gamma) y *= gamma[i];
                if (!RMS && beta) y += beta[i];
                v[c][k] = y;
            }
            cuk_st8(out, odt, xr + j * CUK_VEC, v[c]);
        }
    }
}

/* Launches k_norm_warp when the shape allows (else returns false). */
template <bool RMS>
static bool norm_warp(void *out, int32_t odt, const void *x, int32_t xdt, const float *gamma,
                      const float *beta, int64_t rows, int64_t D, float eps, cudaStream_t s) {
    const int64_t per = (D / CUK_VEC + 31) / 32; /* vectors per lane */
    if (D % CUK_VEC != 0 || per > 8 || !cuk_vec_ok(x) || !cuk_vec_ok(out) ||
        (rows + LN_WARPS - 1) / LN_WARPS > 0x7fffffff)
        return false;
    const unsigned g = (unsigned)((rows + LN_WARPS - 1) / LN_WARPS);
    if (per <= 1) {
        CUK_LAUNCH((k_norm_warp<1, RMS>), g, 32 * LN_WARPS, 0, s)
        (out, odt, x, xdt, gamma, beta, rows, D, eps);
    } else if (per <= 2) {
        CUK_LAUNCH((k_norm_warp<2, RMS>), g, 32 * LN_WARPS, 0, s)
        (out, odt, x, xdt, gamma, beta, rows, D, eps);
    } else if (per <= 4) {
        CUK_LAUNCH((k_norm_warp<4, RMS>), g, 32 * LN_WARPS, 0, s)
        (out, odt, x, xdt, gamma, beta, rows, D, eps);
    } else {
        CUK_LAUNCH((k_norm_warp<8, RMS>), g, 32 * LN_WARPS, 0, s)
        (out, odt, x, xdt, gamma, beta, rows, D, eps);
    }
    return true;
}

extern "C" cudaError_t cuk_layer_norm(void *out, int32_t odt, const void *x, int32_t xdt,
                                      const float *gamma, const float *beta, int64_t rows,
                                      int64_t D, float eps, cudaStream_t s) {
    if (rows * D == 0) return cudaSuccess;
    if (norm_warp<false>(out, odt, x, xdt, gamma, beta, rows, D, eps, s)) return cudaGetLastError();
    CUK_LAUNCH(k_layer_norm, row_grid(rows), NORM_THREADS, 0, s)
    (out, odt, x, xdt, gamma, beta, rows, D, eps);
    return cudaGetLastError();
}

__global__ void k_rms_norm(void *out, int32_t odt, const void *x, int32_t xdt, const float *gamma,
                           int64_t rows, int64_t D, float eps) {
    __shared__ double red[NORM_THREADS / 32];
    int64_t           r = row_index();
    if (r >= rows) return;
    const int64_t xr = r * D;
    double        ss = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        double v = (double)cuk_ld(x, xdt, xr + i);
        ss += v * v;
    }
    float rs = (float)(1.0 / sqrt(block_sum(ss, red) / (double)D + (double)eps));
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        float y = cuk_ld(x, xdt, xr + i) * rs;
        if (gamma) y *= gamma[i];
        cuk_st(out, odt, xr + i, y);
    }
}

extern "C" cudaError_t cuk_rms_norm(void *out, int32_t odt, const void *x, int32_t xdt,
                                    const float *gamma, int64_t rows, int64_t D, float eps,
                                    cudaStream_t s) {
    if (rows * D == 0) return cudaSuccess;
    if (norm_warp<true>(out, odt, x, xdt, gamma, NULL, rows, D, eps, s)) return cudaGetLastError();
    CUK_LAUNCH(k_rms_norm, row_grid(rows), NORM_THREADS, 0, s)
    (out, odt, x, xdt, gamma, rows, D, eps);
    return cudaGetLastError();
}

__global__ void k_softmax(void *out, int32_t odt, const void *x, int32_t xdt, int64_t rows,
                          int64_t D, float scale) {
    __shared__ double red[NORM_THREADS / 32];
    __shared__ float  redf[NORM_THREADS / 32];
    int64_t           r = row_index();
    if (r >= rows) return;
    const int64_t xr = r * D;
    float         mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        mx = fmaxf(mx, cuk_ld(x, xdt, xr + i) * scale);
    mx         = block_max(mx, redf);
    double sum = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        sum += (double)expf(cuk_ld(x, xdt, xr + i) * scale - mx);
    float inv = (float)(1.0 / block_sum(sum, red));
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        cuk_st(out, odt, xr + i, expf(cuk_ld(x, xdt, xr + i) * scale - mx) * inv);
}

extern "C" cudaError_t cuk_softmax(void *out, int32_t odt, const void *x, int32_t xdt, int64_t rows,
                                   int64_t D, float scale, cudaStream_t s) {
    if (rows * D == 0) return cudaSuccess;
    CUK_LAUNCH(k_softmax, row_grid(rows), NORM_THREADS, 0, s)(out, odt, x, xdt, rows, D, scale);
    return cudaGetLastError();
}

/* Rows of the attention scores, one block per row (grid-stride over rows). */
struct attn_sm_args {
    void        *P;
    int32_t      pdt, sdt;
    const void  *S;
    int64_t      rows, qc, Lk;
    const float *mask;
    int64_t      ms[4];
    int64_t      b, h0, i0;
};

__global__ void k_attn_softmax(attn_sm_args a) {
    __shared__ double red[NORM_THREADS / 32];
    __shared__ float  redf[NORM_THREADS / 32];
    for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) { /* uniform per block */
        const int64_t sr = r * a.Lk;                           /* the row's first score */
        const int64_t hl = r / a.qc, il = r % a.qc;
        const float  *mr =
            a.mask ? a.mask + a.b * a.ms[0] + (a.h0 + hl) * a.ms[1] + (a.i0 + il) * a.ms[2]
                    : nullptr;
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < a.Lk; j += blockDim.x)
            mx = fmaxf(mx, cuk_ld(a.S, a.sdt, sr + j) + (mr ? mr[j * a.ms[3]] : 0.0f));
        mx         = block_max(mx, redf);
        double sum = 0;
        if (mx != -INFINITY)
            for (int64_t j = threadIdx.x; j < a.Lk; j += blockDim.x)
                sum +=
                    (double)expf(cuk_ld(a.S, a.sdt, sr + j) + (mr ? mr[j * a.ms[3]] : 0.0f) - mx);
        sum       = block_sum(sum, red);
        float inv = sum > 0 ? (float)(1.0 / sum) : 0.0f;
        for (int64_t j = threadIdx.x; j < a.Lk; j += blockDim.x) {
            float p =
                mx == -INFINITY
                    ? 0.0f
                    : expf(cuk_ld(a.S, a.sdt, sr + j) + (mr ? mr[j * a.ms[3]] : 0.0f) - mx) * inv;
            cuk_st(a.P, a.pdt, r * a.Lk + j, p);
        }
    }
}

extern "C" cudaError_t cuk_attn_softmax(void *P, int32_t p_dtype, const void *S, int32_t s_dtype,
                                        int64_t hc, int64_t qc, int64_t Lk, const float *mask,
                                        const int64_t *ms, int64_t b, int64_t h0, int64_t i0,
                                        cudaStream_t s) {
    attn_sm_args a;
    a.P    = P;
    a.pdt  = p_dtype;
    a.sdt  = s_dtype;
    a.S    = S;
    a.rows = hc * qc;
    a.qc   = qc;
    a.Lk   = Lk;
    a.mask = mask;
    for (int i = 0; i < 4; i++) a.ms[i] = mask ? ms[i] : 0;
    a.b  = b;
    a.h0 = h0;
    a.i0 = i0;
    if (a.rows * Lk == 0) return cudaSuccess;
#ifdef CUK_EMU
    int64_t grid = a.rows < 4 ? a.rows : 4; /* the emulator's threads are costly */
#else
    int64_t grid = a.rows < 65535 ? a.rows : 65535;
#endif
    CUK_LAUNCH(k_attn_softmax, (unsigned)grid, NORM_THREADS, 0, s)(a);
    return cudaGetLastError();
}
