// Scaled-dot-product attention on tensor cores without materialising the scores (flash
// attention, FA1-style on WMMA fragments), for f16/bf16 math.
//
// Block: 4 warps and 64 query rows (16 per warp) of one (batch, head). Q (pre-scaled), and per
// tile of 64 keys K and V, are converted from their stored dtype into the math type in shared
// memory, zero-padded to DP (the head dim rounded up to a multiple of 16) and beyond the last
// key; each warp keeps its Q rows as WMMA fragments in registers. Per tile each warp computes
// its 16 x 64 scores S = Q K^T with WMMA (f32 accumulation) into shared memory; two lanes per
// row then add the mask, update the row's running max and sum (online softmax, f32, in
// registers), write the probabilities P in the math type and rescale the row's output
// accumulator O (f32, shared memory) when its max moved; then O += P V with WMMA. At the end O
// is divided by the row sums and written [B, Lq, H, D] in the output's dtype. Keys past Lk and
// -inf scores contribute exactly zero; a row whose scores are all -inf gives zeros, as the
// other kernels.
#include "attention_tile.h"

#ifndef CUK_EMU
#    include <mma.h>
#endif

using namespace nvcuda;

#define FA_BQ    64 /* query rows per block (16 per warp) */
#define FA_BK    64 /* keys per tile */
#define FA_WARPS 4
#define FA_SLD   (FA_BK + 4) /* row stride of the f32 scores (floats) */
#define FA_PLD   (FA_BK + 8) /* row stride of the probabilities (math-type elements) */

/* Shared memory of a block for head dim DP, in bytes. */
static size_t fa_shmem(int DP, size_t elem) {
    size_t ld = (size_t)DP + 8;
    return 3 * FA_BQ * ld * elem                               /* Q, K, V tiles */
           + FA_WARPS * 16 * (size_t)FA_SLD * sizeof(float)    /* scores */
           + FA_WARPS * 16 * (size_t)FA_PLD * elem             /* probabilities */
           + FA_WARPS * 16 * ((size_t)DP + 4) * sizeof(float); /* output accumulators */
}

template <class T, int DP> __global__ void k_flash_wmma(cuk_attn_args a) {
    constexpr int LD = DP + 8, OLD = DP + 4;
    CUK_DYN_SHARED(unsigned char, smem);
    T     *qs = reinterpret_cast<T *>(smem);
    T     *ks = qs + FA_BQ * LD;
    T     *vs = ks + FA_BK * LD;
    float *ss = reinterpret_cast<float *>(vs + FA_BK * LD);
    T     *ps = reinterpret_cast<T *>(ss + FA_WARPS * 16 * FA_SLD);
    float *os = reinterpret_cast<float *>(ps + FA_WARPS * 16 * FA_PLD);

    const int     warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t b = blockIdx.z, h = blockIdx.y, q0 = (int64_t)blockIdx.x * FA_BQ;
    const int64_t Lq = a.q.shape[1], Lk = a.k.shape[1], D = a.q.shape[3];
    float        *sw = ss + warp * 16 * FA_SLD;
    T            *pw = ps + warp * 16 * FA_PLD;
    float        *ow = os + warp * 16 * OLD;
    const int     r = lane / 2, half = lane % 2; /* this lane's row and half of the columns */
    const int64_t i = q0 + warp * 16 + r;        /* its query row */

    fa_load<T, DP, FA_BQ>(qs, a.q, b, h, q0, Lq, D, a.scale);
    for (int c = half * (DP / 2); c < (half + 1) * (DP / 2); c++) ow[r * OLD + c] = 0.0f;
    __syncthreads();
    /* the warp's Q rows stay in registers for every key tile */
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fq[DP / 16];
    for (int kk = 0; kk < DP / 16; kk++)
        wmma::load_matrix_sync(fq[kk], qs + warp * 16 * LD + kk * 16, LD);
    float        m = -INFINITY, l = 0.0f;
    const float *mrow =
        a.mask && i < Lq ? a.mask + b * a.ms[0] + h * a.ms[1] + i * a.ms[2] : nullptr;

    for (int64_t j0 = 0; j0 < Lk; j0 += FA_BK) {
        __syncthreads(); /* the previous tile is no longer read (and Q is loaded) */
        fa_load<T, DP, FA_BK>(ks, a.k, b, h, j0, Lk, D, 1.0f);
        fa_load<T, DP, FA_BK>(vs, a.v, b, h, j0, Lk, D, 1.0f);
        __syncthreads();

        /* S = Q K^T for this warp's 16 rows */
        for (int t = 0; t < FA_BK / 16; t++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < DP / 16; kk++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fk;
                wmma::load_matrix_sync(fk, ks + t * 16 * LD + kk * 16, LD);
                wmma::mma_sync(acc, fq[kk], fk, acc);
            }
            wmma::store_matrix_sync(sw + t * 16, acc, FA_SLD, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax: this lane's 32 columns of row r, held in registers (__expf: the
         * probabilities are rounded to 11 or 8 bits right after) */
        const int c0 = half * (FA_BK / 2);
        float     sv[FA_BK / 2];
        float     mt = -INFINITY;
#pragma unroll
        for (int c = 0; c < FA_BK / 2; c++) {
            const int64_t j = j0 + c0 + c;
            float         s = j < Lk ? sw[r * FA_SLD + c0 + c] : -INFINITY;
            if (mrow && j < Lk) s += mrow[j * a.ms[3]];
            sv[c] = s;
            mt    = fmaxf(mt, s);
        }
        mt               = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        const float mn   = fmaxf(m, mt);
        float       corr = 0.0f, ps_sum = 0.0f;
        if (mn != -INFINITY) corr = m == -INFINITY ? 0.0f : __expf(m - mn);
#pragma unroll
        for (int c = 0; c < FA_BK / 2; c++) {
            float p = (mn == -INFINITY || sv[c] == -INFINITY) ? 0.0f : __expf(sv[c] - mn);
            ps_sum += p;
            pw[r * FA_PLD + c0 + c] = fa_type<T>::from(p);
        }
        ps_sum += __shfl_xor_sync(0xffffffffu, ps_sum, 1);
        l = l * corr + ps_sum;
        m = mn;
        if (corr != 1.0f) /* the row's max moved: rescale what it has accumulated */
            for (int c = half * (DP / 2); c < (half + 1) * (DP / 2); c++) ow[r * OLD + c] *= corr;
        __syncwarp();

        /* O += P V */
        for (int t = 0; t < DP / 16; t++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, ow + t * 16, OLD, wmma::mem_row_major);
            for (int kk = 0; kk < FA_BK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fp;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fv;
                wmma::load_matrix_sync(fp, pw + kk * 16, FA_PLD);
                wmma::load_matrix_sync(fv, vs + kk * 16 * LD + t * 16, LD);
                wmma::mma_sync(acc, fp, fv, acc);
            }
            wmma::store_matrix_sync(ow + t * 16, acc, OLD, wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (i >= Lq) return;
    const int64_t H   = a.q.shape[2];
    const float   inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int64_t o   = ((b * Lq + i) * H + h) * D;
    for (int c = half * (DP / 2); c < (half + 1) * (DP / 2); c++)
        if (c < D) cuk_st(a.out, a.odt, o + c, ow[r * OLD + c] * inv);
}

template <class T, int DP> static cudaError_t fa_launch(const cuk_attn_args &a, cudaStream_t s) {
    return fa_launch_kernel(k_flash_wmma<T, DP>, fa_shmem(DP, sizeof(T)), FA_BQ, a, s);
}

extern "C" cudaError_t cuk_attention_wmma(void *out, int32_t odt, const cuk_tensor *q,
                                          const cuk_tensor *k, const cuk_tensor *v,
                                          const float *mask, const int64_t *mstride, float scale,
                                          int32_t math, cudaStream_t s) {
    const int64_t D = q->shape[3];
    if (cuk_numel(q) == 0) return cudaSuccess;
    cudaError_t e = fa_check(q, k, v, math);
    if (e != cudaSuccess) return e;
    cuk_attn_args a = cuk_attn_args_make(out, odt, q, k, v, mask, mstride, scale);
    if (math == CUK_BF16) return FA_DISPATCH(fa_launch, __nv_bfloat16, D, a, s);
    return FA_DISPATCH(fa_launch, __half, D, a, s);
}
