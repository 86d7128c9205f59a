// Dequantization of ggml blocks on the device with the host's block decoders
// (formats/quant_blocks.h), so a weight expands to the same bits on both: one thread per
// block, staged through shared memory so loads and stores are coalesced and vectorised. And
// the product of a few rows of x with a quantized weight read in its blocks (no expanded copy).
#include "device_impl.h"

#define QB_FN static __device__ __forceinline__
#ifdef CUK_EMU
#    define QB_HALF(u) imgd_f16_to_f32(u)
#else
#    define QB_HALF(u) __half2float(__ushort_as_half(u))
#endif
#include "formats/quant_blocks.h"

typedef void (*qb_decode)(const uint8_t *b, float *y);

/* Copies n bytes from src to shared dst (lane of `lanes` threads): 16-byte words when
 * vec = 16 (src 16-byte aligned), 4-byte words when vec = 4, else bytes; the bytes past the
 * last whole word one by one. dst is 16-byte aligned. */
__device__ __forceinline__ void qb_stage(uint8_t *dst, const uint8_t *src, int n, int vec, int lane,
                                         int lanes) {
    int done = 0;
    if (vec == 16) {
        const int w = n / 16;
        for (int i = lane; i < w; i += lanes)
            reinterpret_cast<uint4 *>(dst)[i] = reinterpret_cast<const uint4 *>(src)[i];
        done = w * 16;
    } else if (vec == 4) {
        const int w = n / 4;
        for (int i = lane; i < w; i += lanes)
            reinterpret_cast<uint32_t *>(dst)[i] = reinterpret_cast<const uint32_t *>(src)[i];
        done = w * 4;
    }
    for (int i = done + lane; i < n; i += lanes) dst[i] = src[i];
}

/* The widest word (16, 4 or 1 bytes) every address src + k * step (k >= 0) is aligned to. */
static inline int qb_vec(const void *src, size_t step) {
    uintptr_t a = (uintptr_t)src | (uintptr_t)step;
    return (a & 15u) == 0 ? 16 : (a & 3u) == 0 ? 4 : 1;
}

/* ---- dequantization ---------------------------------------------------------------------- */

/* Blocks per CTA: one thread per block, 8192 values per CTA (256 threads for 32-value blocks,
 * 32 for 256-value super-blocks). */
#define DQ_VALUES 8192

/* A CTA expands T consecutive blocks: their bytes are loaded into shared memory by
 * consecutive threads (coalesced, in words of vec bytes), each thread decodes one block from
 * there into a padded shared row (E + 1 floats: no bank conflicts), and the CTA's T * E
 * contiguous values are stored by consecutive threads (coalesced; 8 per thread in 16-byte
 * stores when out8). */
template <int E, int BYTES, qb_decode DECODE>
__global__ void k_dequant(void *out, int32_t odt, const uint8_t *src, int64_t n_blocks, int vec,
                          bool out8) {
    constexpr int    T = DQ_VALUES / E;
    __shared__ uint4 in_w[(T * BYTES + 15) / 16]; /* 16-byte aligned */
    __shared__ float out_s[T * (E + 1)];
    uint8_t         *in_s     = reinterpret_cast<uint8_t *>(in_w);
    const int        tid      = (int)threadIdx.x;
    const int64_t    n_chunks = (n_blocks + T - 1) / T;
    for (int64_t c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        const int64_t b0 = c * T;
        const int     nb = (int)(n_blocks - b0 < T ? n_blocks - b0 : T);
        qb_stage(in_s, src + b0 * BYTES, nb * BYTES, vec, tid, T);
        __syncthreads();
        if (tid < nb) {
            float y[E];
            DECODE(in_s + tid * BYTES, y);
            for (int j = 0; j < E; j++) out_s[tid * (E + 1) + j] = y[j];
        }
        __syncthreads();
        if (out8) { /* E is a multiple of 8: a thread's 8 values lie in one block's row */
            for (int i = tid * CUK_VEC; i < nb * E; i += T * CUK_VEC) {
                float v[CUK_VEC];
                for (int j = 0; j < CUK_VEC; j++) v[j] = out_s[(i / E) * (E + 1) + i % E + j];
                cuk_st8(out, odt, b0 * E + i, v);
            }
        } else {
            for (int i = tid; i < nb * E; i += T)
                cuk_st(out, odt, b0 * E + i, out_s[(i / E) * (E + 1) + i % E]);
        }
        __syncthreads();
    }
}

template <int E, int BYTES, qb_decode DECODE>
static cudaError_t launch_dequant(void *out, int32_t odt, const void *src, int64_t n_blocks,
                                  cudaStream_t s) {
    constexpr int T = DQ_VALUES / E;
    void (*kernel)(void *, int32_t, const uint8_t *, int64_t, int, bool) =
        k_dequant<E, BYTES, DECODE>;
    /* chunk c starts c * T * BYTES bytes in: T * BYTES is a multiple of 4, of 16 for some types */
    const int vec = qb_vec(src, (size_t)T * BYTES);
    CUK_LAUNCH(kernel, cuk_grid((n_blocks + T - 1) / T), T, 0, s)
    (out, odt, static_cast<const uint8_t *>(src), n_blocks, vec, cuk_vec_ok(out));
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_dequant(void *out, int32_t odt, const void *src, int32_t qtype,
                                   int64_t n_blocks, cudaStream_t s) {
    if (n_blocks <= 0) return cudaSuccess;
    switch (qtype) {
    case CUK_Q4_0: return launch_dequant<QB_QK, 18, qb_deq_q4_0>(out, odt, src, n_blocks, s);
    case CUK_Q4_1: return launch_dequant<QB_QK, 20, qb_deq_q4_1>(out, odt, src, n_blocks, s);
    case CUK_Q5_0: return launch_dequant<QB_QK, 22, qb_deq_q5_0>(out, odt, src, n_blocks, s);
    case CUK_Q5_1: return launch_dequant<QB_QK, 24, qb_deq_q5_1>(out, odt, src, n_blocks, s);
    case CUK_Q8_0: return launch_dequant<QB_QK, 34, qb_deq_q8_0>(out, odt, src, n_blocks, s);
    case CUK_Q8_1: return launch_dequant<QB_QK, 36, qb_deq_q8_1>(out, odt, src, n_blocks, s);
    case CUK_Q2_K: return launch_dequant<QB_QK_K, 84, qb_deq_q2_k>(out, odt, src, n_blocks, s);
    case CUK_Q3_K: return launch_dequant<QB_QK_K, 110, qb_deq_q3_k>(out, odt, src, n_blocks, s);
    case CUK_Q4_K: return launch_dequant<QB_QK_K, 144, qb_deq_q4_k>(out, odt, src, n_blocks, s);
    case CUK_Q5_K: return launch_dequant<QB_QK_K, 176, qb_deq_q5_k>(out, odt, src, n_blocks, s);
    case CUK_Q6_K: return launch_dequant<QB_QK_K, 210, qb_deq_q6_k>(out, odt, src, n_blocks, s);
    default: return cudaErrorInvalidValue;
    }
}

/* ---- a few rows of x times a quantized weight ---------------------------------------------- */

/* The k-chunk a CTA takes per step: 32 blocks of 32 values, one per lane of each warp. */
#define LQ_CHUNK (32 * QB_QK)
#define LQ_WARPS (CUK_THREADS / 32)

/* y [M, N] = x [M, K] w^T (+ bias), M <= CUK_LQ_ROWS, for 32-value block types. Each warp
 * takes one row n of w, a CTA LQ_WARPS rows; per k-chunk the CTA stages x's chunk in f32 (a
 * float of padding per 32: lane l reads values l * 32.. without bank conflicts) and each warp
 * its row's 32 blocks (coalesced, words of vec bytes); lane l decodes block l and adds its dot
 * products with the M rows of x; the lanes' sums meet through shuffles. */
template <int BYTES, qb_decode DECODE>
__global__ void __launch_bounds__(CUK_THREADS)
    k_lq_rows(void *y, int32_t ydt, const void *x, int32_t xdt, const uint8_t *w, int vec,
              const void *bias, int32_t bdt, int32_t M, int32_t N, int32_t K) {
    __shared__ float xs[CUK_LQ_ROWS][LQ_CHUNK + LQ_CHUNK / 32];
    __shared__ uint4 ws_w[LQ_WARPS][2 * BYTES]; /* 32 * BYTES bytes per warp, 16-byte aligned */
    const int        tid = (int)threadIdx.x, lane = tid % 32, wp = tid / 32;
    const int        nb  = K / QB_QK; /* blocks per row of w */
    const size_t     row = (size_t)nb * BYTES;
    for (int64_t n0 = (int64_t)blockIdx.x * LQ_WARPS; n0 < N; n0 += (int64_t)gridDim.x * LQ_WARPS) {
        const int64_t n  = n0 + wp;
        uint8_t      *ws = reinterpret_cast<uint8_t *>(ws_w[wp]);
        float         acc[CUK_LQ_ROWS];
        for (int m = 0; m < CUK_LQ_ROWS; m++) acc[m] = 0.0f;
        for (int k0 = 0; k0 < K; k0 += LQ_CHUNK) {
            const int kc = K - k0 < LQ_CHUNK ? K - k0 : LQ_CHUNK, cnt = kc / QB_QK;
            __syncthreads(); /* the previous chunk is read */
            for (int i = tid; i < M * kc; i += CUK_THREADS) {
                const int m = i / kc, k = i % kc;
                xs[m][k + k / 32] = cuk_ld(x, xdt, (int64_t)m * K + k0 + k);
            }
            if (n < N)
                qb_stage(ws, w + (size_t)n * row + (size_t)(k0 / QB_QK) * BYTES, cnt * BYTES, vec,
                         lane, 32);
            __syncthreads();
            if (n < N && lane < cnt) {
                float v[QB_QK];
                DECODE(ws + lane * BYTES, v);
#pragma unroll
                for (int m = 0; m < CUK_LQ_ROWS; m++) { /* unrolled: acc stays in registers */
                    if (m >= M) break;
                    const float *xr = &xs[m][lane * 33];
                    float        s  = 0.0f;
                    for (int j = 0; j < QB_QK; j++) s += v[j] * xr[j];
                    acc[m] += s;
                }
            }
        }
#pragma unroll
        for (int m = 0; m < CUK_LQ_ROWS; m++) {
            if (m >= M) break;
            float s = acc[m];
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0 && n < N)
                cuk_st(y, ydt, (int64_t)m * N + n, bias ? s + cuk_ld(bias, bdt, n) : s);
        }
    }
}

template <int BYTES, qb_decode DECODE>
static cudaError_t launch_lq_rows(void *y, int32_t ydt, const void *x, int32_t xdt, const void *w,
                                  const void *bias, int32_t bdt, int32_t M, int32_t N, int32_t K,
                                  cudaStream_t s) {
    void (*kernel)(void *, int32_t, const void *, int32_t, const uint8_t *, int, const void *,
                   int32_t, int32_t, int32_t, int32_t) = k_lq_rows<BYTES, DECODE>;
    /* a row of w is K / 32 blocks; a warp's chunk starts 32 blocks further on */
    const int vec = qb_vec(w, (size_t)(K / QB_QK) * BYTES | 32 * BYTES);
    CUK_LAUNCH(kernel, cuk_grid((N + LQ_WARPS - 1) / LQ_WARPS), CUK_THREADS, 0, s)
    (y, ydt, x, xdt, static_cast<const uint8_t *>(w), vec, bias, bdt, M, N, K);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_linear_quant_rows(void *y, int32_t ydt, const void *x, int32_t xdt,
                                             const void *w, int32_t qtype, const void *bias,
                                             int32_t bdt, int32_t M, int32_t N, int32_t K,
                                             cudaStream_t s) {
    if (M < 1 || M > CUK_LQ_ROWS || N < 1 || K < QB_QK || K % QB_QK) return cudaErrorInvalidValue;
    switch (qtype) {
    case CUK_Q4_0: return launch_lq_rows<18, qb_deq_q4_0>(y, ydt, x, xdt, w, bias, bdt, M, N, K, s);
    case CUK_Q4_1: return launch_lq_rows<20, qb_deq_q4_1>(y, ydt, x, xdt, w, bias, bdt, M, N, K, s);
    case CUK_Q5_0: return launch_lq_rows<22, qb_deq_q5_0>(y, ydt, x, xdt, w, bias, bdt, M, N, K, s);
    case CUK_Q5_1: return launch_lq_rows<24, qb_deq_q5_1>(y, ydt, x, xdt, w, bias, bdt, M, N, K, s);
    case CUK_Q8_0: return launch_lq_rows<34, qb_deq_q8_0>(y, ydt, x, xdt, w, bias, bdt, M, N, K, s);
    case CUK_Q8_1: return launch_lq_rows<36, qb_deq_q8_1>(y, ydt, x, xdt, w, bias, bdt, M, N, K, s);
    default: return cudaErrorInvalidValue;
    }
}
