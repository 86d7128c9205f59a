// Scaled-dot-product attention on tensor cores without materialising the scores, FA2-style on
// the sm_80 mma.sync / ldmatrix / cp.async instructions (device_impl.h), for f16/bf16 math.
//
// Block: 4 warps and BQ = 16 MI query rows per warp of one (batch, head). Q and, per tile of
// 64 keys, K and V go into shared memory in the math type, zero-padded to DP (the head dim
// rounded up to 16) and past the last key: with cp.async where the tensor is stored in the
// math type with 16-byte rows (the tile after the current one is in flight while the current
// one is computed), else converted through registers (attention_tile.h). Everything a warp
// computes stays in registers: its Q fragments, the scores S = Q K^T of the tile (f32), the
// online softmax (running max and sum per row, in base 2 with the scale folded in), the
// probabilities, which the S accumulators already hold in the A-fragment layout of P V, and
// the output accumulator O (f32). At the end O is divided by the row sums and written
// [B, Lq, H, D] in the output's dtype. Keys past Lk and -inf scores contribute exactly zero;
// a row whose scores are all -inf gives zeros, as the other kernels.
#include "attention_tile.h"

#define FM_BK    64 /* keys per tile */
#define FM_WARPS (FA_THREADS / 32)
#define FM_LOG2E 1.4426950408889634f

/* Shared memory of a block: Q [16 MI FM_WARPS][DP + 8], two stages of K and V [FM_BK][DP + 8]. */
static size_t fm_shmem(int DP, int MI, size_t elem) {
    return ((size_t)16 * MI * FM_WARPS + 4 * FM_BK) * ((size_t)DP + 8) * elem;
}

/* Whether t's rows at (b, h) can be copied with cp.async: stored in the math type, unit
 * element stride, every row start on 16 bytes. */
__device__ __forceinline__ bool fm_async(const cuk_tensor &t, int32_t math, int64_t D) {
    return t.dtype == math && t.stride[3] == 1 && D % 8 == 0 && t.stride[0] % 8 == 0 &&
           t.stride[1] % 8 == 0 && t.stride[2] % 8 == 0 && ((uintptr_t)t.data & 15) == 0;
}

/* Rows [r0, r0 + ROWS) of t at (b, h) into dst [ROWS][DP + 8]: issued as cp.async copies
 * (async: landed after the next cuk_cp_async_wait that retires them) or loaded now. */
template <class T, int DP, int ROWS>
__device__ __forceinline__ void fm_tile(T *dst, const cuk_tensor &t, bool async, int64_t b,
                                        int64_t h, int64_t r0, int64_t L, int64_t D) {
    if (!async) {
        fa_load<T, DP, ROWS>(dst, t, b, h, r0, L, D, 1.0f);
        return;
    }
    constexpr int C   = DP / 8; /* 16-byte chunks per row */
    const T      *src = static_cast<const T *>(t.data) + b * t.stride[0] + h * t.stride[2];
    for (int e = threadIdx.x; e < ROWS * C; e += FA_THREADS) {
        const int  r = e / C, d = (e % C) * 8;
        const bool in = r0 + r < L && d < D;
        const T   *s  = in ? src + (r0 + r) * t.stride[1] + d : src;
        cuk_cp_async16(dst + r * (DP + 8) + d, s, in ? 16 : 0);
    }
}

template <class T, int DP, int MI>
__global__ void __launch_bounds__(FA_THREADS) k_flash_mma(cuk_attn_args a) {
#if defined(CUK_EMU) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    constexpr int LD = DP + 8, KT = DP / 16, NT = DP / 8, SN = FM_BK / 8, BQ = 16 * MI * FM_WARPS;
    CUK_DYN_SHARED(unsigned char, smem);
    T *qs = reinterpret_cast<T *>(smem);
    T *kv = qs + BQ * LD; /* stage s: K at kv + 2 s FM_BK LD, V after it */

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = 2 * (lane % 4);
    const int mi = lane >> 3, mr = lane & 7; /* ldmatrix: this lane's matrix and row */
    const int64_t b = blockIdx.z, h = blockIdx.y, q0 = (int64_t)blockIdx.x * BQ;
    const int64_t Lq = a.q.shape[1], Lk = a.k.shape[1], D = a.q.shape[3];
    const int32_t mt = fa_type<T>::dtype;
    const bool    qa = fm_async(a.q, mt, D), ka = fm_async(a.k, mt, D), va = fm_async(a.v, mt, D);
    const float   sl2 = a.scale * FM_LOG2E;

    fm_tile<T, DP, BQ>(qs, a.q, qa, b, h, q0, Lq, D);
    fm_tile<T, DP, FM_BK>(kv, a.k, ka, b, h, 0, Lk, D);
    fm_tile<T, DP, FM_BK>(kv + FM_BK * LD, a.v, va, b, h, 0, Lk, D);
    cuk_cp_async_commit();

    /* per m-tile i (16 rows): rows g and g + 8 of this warp's rows 16 (warp MI + i) */
    uint32_t     qf[MI][KT][4];
    float        o[MI][NT][4];
    float        m[MI][2], l[MI][2];
    const float *mrow[MI][2];
#    pragma unroll
    for (int i = 0; i < MI; i++) {
#    pragma unroll
        for (int n = 0; n < NT; n++)
#    pragma unroll
            for (int e = 0; e < 4; e++) o[i][n][e] = 0.0f;
#    pragma unroll
        for (int r = 0; r < 2; r++) {
            const int64_t row = q0 + 16 * (warp * MI + i) + g + 8 * r;
            m[i][r]           = -INFINITY;
            l[i][r]           = 0.0f;
            mrow[i][r] =
                a.mask && row < Lq ? a.mask + b * a.ms[0] + h * a.ms[1] + row * a.ms[2] : nullptr;
        }
    }

    cuk_cp_async_wait<0>(); /* Q and the first tile */
    __syncthreads();
#    pragma unroll
    for (int i = 0; i < MI; i++)
#    pragma unroll
        for (int kk = 0; kk < KT; kk++)
            cuk_ldsm_x4(qf[i][kk], qs + (16 * (warp * MI + i) + (mi & 1) * 8 + mr) * LD + kk * 16 +
                                       (mi >> 1) * 8);

    const int64_t tiles = (Lk + FM_BK - 1) / FM_BK;
    for (int64_t t = 0; t < tiles; t++) {
        const T *ks = kv + (t & 1) * 2 * FM_BK * LD, *vs = ks + FM_BK * LD;
        if (t + 1 < tiles) { /* the next tile into the other stage, read last in step t - 1 */
            T *kn = kv + ((t + 1) & 1) * 2 * FM_BK * LD;
            fm_tile<T, DP, FM_BK>(kn, a.k, ka, b, h, (t + 1) * FM_BK, Lk, D);
            fm_tile<T, DP, FM_BK>(kn + FM_BK * LD, a.v, va, b, h, (t + 1) * FM_BK, Lk, D);
        }
        cuk_cp_async_commit();
        cuk_cp_async_wait<1>(); /* all but the group just issued: this tile */
        __syncthreads();

        /* S = Q K^T: key n-tiles n and n + 1 from one ldmatrix per k-step */
        float s[MI][SN][4];
#    pragma unroll
        for (int i = 0; i < MI; i++)
#    pragma unroll
            for (int n = 0; n < SN; n++)
#    pragma unroll
                for (int e = 0; e < 4; e++) s[i][n][e] = 0.0f;
#    pragma unroll
        for (int n = 0; n < SN; n += 2)
#    pragma unroll
            for (int kk = 0; kk < KT; kk++) {
                uint32_t r[4];
                cuk_ldsm_x4(r, ks + (n * 8 + (mi >> 1) * 8 + mr) * LD + kk * 16 + (mi & 1) * 8);
#    pragma unroll
                for (int i = 0; i < MI; i++) {
                    cuk_mma16816<T>(s[i][n], qf[i][kk], r);
                    cuk_mma16816<T>(s[i][n + 1], qf[i][kk], r + 2);
                }
            }

        /* online softmax in base 2: x = (S scale + mask) log2(e) */
        const int64_t j0 = t * FM_BK;
#    pragma unroll
        for (int i = 0; i < MI; i++) {
            float mx[2] = {-INFINITY, -INFINITY};
#    pragma unroll
            for (int n = 0; n < SN; n++)
#    pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int     r = e >> 1;
                    const int64_t j = j0 + n * 8 + c + (e & 1);
                    float         x = -INFINITY;
                    if (j < Lk) {
                        x = s[i][n][e] * sl2;
                        if (mrow[i][r]) x += mrow[i][r][j * a.ms[3]] * FM_LOG2E;
                    }
                    s[i][n][e] = x;
                    mx[r]      = fmaxf(mx[r], x);
                }
            float base[2];
#    pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r]            = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r]            = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                const float mn   = fmaxf(m[i][r], mx[r]);
                base[r]          = mn == -INFINITY ? 0.0f : mn; /* all -inf so far: p = 0 */
                const float corr = exp2f(m[i][r] - base[r]);
                m[i][r]          = mn;
                l[i][r] *= corr;
#    pragma unroll
                for (int n = 0; n < NT; n++) {
                    o[i][n][2 * r] *= corr;
                    o[i][n][2 * r + 1] *= corr;
                }
            }
#    pragma unroll
            for (int n = 0; n < SN; n++)
#    pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[i][n][e] = exp2f(s[i][n][e] - base[e >> 1]);
                    l[i][e >> 1] += s[i][n][e];
                }
        }

        /* O += P V: the S accumulators of key n-tiles 2 kk and 2 kk + 1 are P's A fragment
         * for keys 16 kk..; V's B fragments (transposed loads) for d n-tiles n and n + 1 */
#    pragma unroll
        for (int kk = 0; kk < SN / 2; kk++) {
            uint32_t p[MI][4];
#    pragma unroll
            for (int i = 0; i < MI; i++) {
                p[i][0] = fa_type<T>::pack(s[i][2 * kk][0], s[i][2 * kk][1]);
                p[i][1] = fa_type<T>::pack(s[i][2 * kk][2], s[i][2 * kk][3]);
                p[i][2] = fa_type<T>::pack(s[i][2 * kk + 1][0], s[i][2 * kk + 1][1]);
                p[i][3] = fa_type<T>::pack(s[i][2 * kk + 1][2], s[i][2 * kk + 1][3]);
            }
#    pragma unroll
            for (int n = 0; n < NT; n += 2) {
                uint32_t r[4];
                cuk_ldsm_x4_t(r, vs + (kk * 16 + (mi & 1) * 8 + mr) * LD + n * 8 + (mi >> 1) * 8);
#    pragma unroll
                for (int i = 0; i < MI; i++) {
                    cuk_mma16816<T>(o[i][n], p[i], r);
                    cuk_mma16816<T>(o[i][n + 1], p[i], r + 2);
                }
            }
        }
        __syncthreads(); /* every warp is done with this stage before it is refilled */
    }

    const int64_t H = a.q.shape[2];
#    pragma unroll
    for (int i = 0; i < MI; i++)
#    pragma unroll
        for (int r = 0; r < 2; r++) {
            float sum = l[i][r];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const int64_t row = q0 + 16 * (warp * MI + i) + g + 8 * r;
            if (row >= Lq) continue;
            const float   inv = sum > 0.0f ? 1.0f / sum : 0.0f;
            const int64_t off = ((b * Lq + row) * H + h) * D;
#    pragma unroll
            for (int n = 0; n < NT; n++) {
                const int64_t d = n * 8 + c;
                if (a.odt == mt && D % 2 == 0 && d + 1 < D) { /* a 4-byte aligned pair */
                    *reinterpret_cast<uint32_t *>(static_cast<T *>(a.out) + off + d) =
                        fa_type<T>::pack(o[i][n][2 * r] * inv, o[i][n][2 * r + 1] * inv);
                    continue;
                }
                if (d < D) cuk_st(a.out, a.odt, off + d, o[i][n][2 * r] * inv);
                if (d + 1 < D) cuk_st(a.out, a.odt, off + d + 1, o[i][n][2 * r + 1] * inv);
            }
        }
#endif
}

template <class T, int DP, int MI>
static cudaError_t fm_launch_mi(const cuk_attn_args &a, cudaStream_t s) {
    return fa_launch_kernel(k_flash_mma<T, DP, MI>, fm_shmem(DP, MI, sizeof(T)), 16 * MI * FM_WARPS,
                            a, s);
}

/* mtiles: 16-row m-tiles per warp, 1 or 2 (K and V fragments serve both; more registers);
 * 0: 2 up to head dim 32, where sm_90 keeps both in registers without spilling, else 1 */
template <class T, int DP>
static cudaError_t fm_launch(const cuk_attn_args &a, int32_t mtiles, cudaStream_t s) {
    if (mtiles == 2 || (mtiles == 0 && DP <= 32)) return fm_launch_mi<T, DP, 2>(a, s);
    return fm_launch_mi<T, DP, 1>(a, s);
}

extern "C" cudaError_t cuk_attention_mma(void *out, int32_t odt, const cuk_tensor *q,
                                         const cuk_tensor *k, const cuk_tensor *v,
                                         const float *mask, const int64_t *mstride, float scale,
                                         int32_t math, int32_t mtiles, cudaStream_t s) {
    const int64_t D = q->shape[3];
    if (cuk_numel(q) == 0) return cudaSuccess;
    cudaError_t e = fa_check(q, k, v, math);
    if (e != cudaSuccess) return e;
    if (mtiles < 0 || mtiles > 2) return cudaErrorInvalidValue;
    cuk_attn_args a = cuk_attn_args_make(out, odt, q, k, v, mask, mstride, scale);
    if (math == CUK_BF16) return FA_DISPATCH(fm_launch, __nv_bfloat16, D, a, mtiles, s);
    return FA_DISPATCH(fm_launch, __half, D, a, mtiles, s);
}
