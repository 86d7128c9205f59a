/* CPU fused attention (flash-attention style): for each (batch, head, block of BQ queries)
 * the keys are visited in blocks of BK with an online softmax, so only a BK x BQ tile of
 * scores ever exists (per thread, in planned scratch).
 *
 * Everything is kept with the query index as the vector lane:
 *   QT  [D][BQ]   scale * Q of the block, transposed once per block;
 *   S   [BK][BQ]  S[j][i] = K[j] . QT[:, i], computed from K's rows as they lie in memory;
 *   OT  [Dv][BQ]  the running output, transposed: OT[e][i] += sum_j V[j][e] * P[j][i].
 * So the softmax statistics (max, sum, rescale) are vertical vector ops, both products
 * use all 16 lanes of every vector whatever D and Dv are (40, 64, 80, 128 or odd), and K
 * and V are read in place through their strides. The two micro-kernels that do the FLOPs
 * have an AVX-512 version (register-blocked, used when the CPU has AVX-512) and a portable
 * one that gcc vectorises. */
#include <math.h>

#include "base/error.h"
#include "cpu_impl.h"

#if defined(__x86_64__) && defined(__GNUC__)
#    include <immintrin.h>
#    define ATTN_AVX512 1
#endif

#define BQ 64  /* queries per block: 4 AVX-512 vectors */
#define BK 128 /* keys per block: the S tile (32 KiB) stays in L1 */

typedef struct attn_ctx {
    const float *q, *k, *v, *mask;
    float       *o;
    int64_t      B, Lq, Lk, H, D, Dv;
    int64_t      qs[4], ks[4], vs[4], ms[4]; /* ms: broadcast strides over [B, H, Lq, Lk] */
    float        scale;
    size_t       q_blocks;
    float       *scratch;
    size_t       per_thread; /* floats */
    bool         avx512;
} attn_ctx;

/* Scratch floats per thread: QT [D x BQ], S [BK x BQ], OT [Dv x BQ], m, l, corr [BQ]. */
static size_t per_thread_floats(int64_t D, int64_t Dv) {
    size_t f = ((size_t)D + (size_t)BK + (size_t)Dv + 3) * BQ;
    return (f + 15) & ~(size_t)15;
}

imgd_status cpu_attention_prepare(cpu_backend *cb, imgd_tensor *n) {
    size_t f         = per_thread_floats(n->src[0]->shape[3], n->src[2]->shape[3]);
    n->scratch_bytes = f * sizeof(float) * cb->n_threads;
    return IMGD_OK;
}

/* ---- portable micro-kernels ---------------------------------------------------------- */

/* S[j][0..BQ) = sum_d K[j][d] * QT[d][0..BQ) for j < kb. */
CPU_CLONES static void scores_c(const attn_ctx *c, const float *k0, const float *restrict qt,
                                float *restrict s, int64_t      kb) {
    for (int64_t j = 0; j < kb; j++) {
        const float *kr    = k0 + j * c->ks[1];
        float *restrict sr = s + j * BQ;
        for (int i = 0; i < BQ; i++) sr[i] = 0.0f;
        for (int64_t d = 0; d < c->D; d++) {
            float        kv = kr[d];
            const float *qd = qt + d * BQ;
            for (int i = 0; i < BQ; i++) sr[i] += kv * qd[i];
        }
    }
}

/* OT[e][0..BQ) += sum_j V[j][e] * P[j][0..BQ). */
CPU_CLONES static void pv_c(const attn_ctx *c, const float *v0, const float *restrict p,
                            float *restrict ot, int64_t     kb) {
    for (int64_t e = 0; e < c->Dv; e++) {
        float *restrict orow = ot + e * BQ;
        for (int64_t j = 0; j < kb; j++) {
            float        vj = v0[j * c->vs[1] + e];
            const float *pj = p + j * BQ;
            for (int i = 0; i < BQ; i++) orow[i] += vj * pj[i];
        }
    }
}

/* ---- AVX-512 micro-kernels ------------------------------------------------------------- */

#ifdef ATTN_AVX512
#    define AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

/* R rows of a row-major operand (K rows for scores, V columns for P V) against the four
 * lane vectors of a [n][BQ] operand: R x 4 accumulators, the row value broadcast. Rows past
 * `valid` are clamped to the last valid one and not stored. */
#    define TILE(NAME, R)                                                                          \
        AVX512_FN static inline __attribute__((always_inline)) void NAME(                          \
            const float *const *rows, int64_t step, const float *lanes, int64_t n, float *out,     \
            int valid, bool accumulate) {                                                          \
            __m512 acc[(R)][4];                                                                    \
            for (int r = 0; r < (R); r++)                                                          \
                for (int x = 0; x < 4; x++)                                                        \
                    acc[r][x] = accumulate && r < valid                                            \
                                    ? _mm512_loadu_ps(out + (int64_t)r * BQ + 16 * (int64_t)x)     \
                                    : _mm512_setzero_ps();                                         \
            for (int64_t t = 0; t < n; t++) {                                                      \
                const float *lt = lanes + t * BQ;                                                  \
                __m512       l0 = _mm512_loadu_ps(lt), l1 = _mm512_loadu_ps(lt + 16);              \
                __m512       l2 = _mm512_loadu_ps(lt + 32), l3 = _mm512_loadu_ps(lt + 48);         \
                for (int r = 0; r < (R); r++) {                                                    \
                    __m512 b  = _mm512_set1_ps(rows[r][t * step]);                                 \
                    acc[r][0] = _mm512_fmadd_ps(b, l0, acc[r][0]);                                 \
                    acc[r][1] = _mm512_fmadd_ps(b, l1, acc[r][1]);                                 \
                    acc[r][2] = _mm512_fmadd_ps(b, l2, acc[r][2]);                                 \
                    acc[r][3] = _mm512_fmadd_ps(b, l3, acc[r][3]);                                 \
                }                                                                                  \
            }                                                                                      \
            for (int r = 0; r < (R) && r < valid; r++)                                             \
                for (int x = 0; x < 4; x++)                                                        \
                    _mm512_storeu_ps(out + (int64_t)r * BQ + 16 * (int64_t)x, acc[r][x]);          \
        }
TILE(tile6, 6)
TILE(tile5, 5)
TILE(tile4, 4)
#    undef TILE

/* S = K QT: rows are K rows (step 1 along d), lanes are QT rows. */
AVX512_FN static void scores_avx512(const attn_ctx *c, const float *k0, const float *qt, float *s,
                                    int64_t kb) {
    for (int64_t j0 = 0; j0 < kb; j0 += 6) {
        const float *kr[6];
        for (int r = 0; r < 6; r++) kr[r] = k0 + IMGD_MIN(j0 + r, kb - 1) * c->ks[1];
        tile6(kr, 1, qt, c->D, s + j0 * BQ, (int)IMGD_MIN((int64_t)6, kb - j0), false);
    }
}

/* Rows per output tile for Dv: the choice among 6, 5, 4 that wastes the fewest rows. */
static int pv_rows(int64_t Dv) {
    int best = 6;
    for (int r = 5; r >= 4; r--)
        if ((Dv + r - 1) / r * r < (Dv + best - 1) / best * best) best = r;
    return best;
}

/* OT += V^T P: rows are V columns (step = V's row stride along j), lanes are P rows. */
AVX512_FN static void pv_avx512(const attn_ctx *c, const float *v0, const float *p, float *ot,
                                int64_t kb) {
    int R = pv_rows(c->Dv);
    for (int64_t e0 = 0; e0 < c->Dv; e0 += R) {
        const float *vc[6];
        int          valid = (int)IMGD_MIN((int64_t)R, c->Dv - e0);
        for (int r = 0; r < R; r++) vc[r] = v0 + IMGD_MIN(e0 + r, c->Dv - 1);
        float *out = ot + e0 * BQ;
        if (R == 6)
            tile6(vc, c->vs[1], p, kb, out, valid, true);
        else if (R == 5)
            tile5(vc, c->vs[1], p, kb, out, valid, true);
        else
            tile4(vc, c->vs[1], p, kb, out, valid, true);
    }
}

/* cpu_expf on 16 lanes, the same reduction and polynomial with the multiply-adds fused. */
AVX512_FN static inline __attribute__((always_inline)) __m512 exp512(__m512 x) {
    const __m512 shift = _mm512_set1_ps(12582912.0f);
    /* min/max return their second operand when one is NaN: NaN stays NaN, as in cpu_expf */
    __m512  xc = _mm512_max_ps(_mm512_set1_ps(-87.3f), _mm512_min_ps(_mm512_set1_ps(88.0f), x));
    __m512  r  = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), shift);
    __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(r), _mm512_set1_epi32(0x4B400000));
    __m512  n  = _mm512_sub_ps(r, shift);
    __m512  t  = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    t          = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), t);
    __m512 y   = _mm512_set1_ps(1.9875691500e-4f);
    y          = _mm512_fmadd_ps(y, t, _mm512_set1_ps(1.3981999507e-3f));
    y          = _mm512_fmadd_ps(y, t, _mm512_set1_ps(8.3334519073e-3f));
    y          = _mm512_fmadd_ps(y, t, _mm512_set1_ps(4.1665795894e-2f));
    y          = _mm512_fmadd_ps(y, t, _mm512_set1_ps(1.6666665459e-1f));
    y          = _mm512_fmadd_ps(y, t, _mm512_set1_ps(5.0000001201e-1f));
    y          = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(y, t), t, t), _mm512_set1_ps(1.0f));
    __m512 sc =
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23));
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
    return _mm512_maskz_mul_ps((__mmask16)~under, y, sc);
}

/* softmax_tile on the four lane vectors of a query block (the same update, vectorised by
 * hand so it does not depend on the compiler's vectoriser). */
AVX512_FN static void softmax_avx512(float *s, int64_t kb, float *m, float *l, float *corr) {
    for (int64_t x0 = 0; x0 < BQ; x0 += 16) {
        __m512 mo = _mm512_loadu_ps(m + x0), mn = mo;
        for (int64_t j = 0; j < kb; j++) mn = _mm512_max_ps(_mm512_loadu_ps(s + j * BQ + x0), mn);
        /* a query whose keys are all masked so far keeps reference 0 */
        __mmask16 none = _mm512_cmp_ps_mask(mn, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
        __m512    ref  = _mm512_mask_mov_ps(mn, none, _mm512_setzero_ps());
        __m512    cr   = exp512(_mm512_sub_ps(mo, ref));
        __m512    sum  = _mm512_mul_ps(_mm512_loadu_ps(l + x0), cr);
        _mm512_storeu_ps(corr + x0, cr);
        _mm512_storeu_ps(m + x0, mn);
        for (int64_t j = 0; j < kb; j++) {
            float *sj = s + j * BQ + x0;
            __m512 p  = exp512(_mm512_sub_ps(_mm512_loadu_ps(sj), ref));
            _mm512_storeu_ps(sj, p);
            sum = _mm512_add_ps(sum, p);
        }
        _mm512_storeu_ps(l + x0, sum);
    }
}
#endif

/* ---- online softmax over one score tile ---------------------------------------------- */

/* Columns are queries. Updates m and l, overwrites S with P = exp(S - m_new), and returns
 * in corr the factor the running output must be multiplied by. */
CPU_CLONES static void softmax_tile(float *restrict s, int64_t kb, float *restrict m,
                                    float *restrict l, float *restrict corr) {
    float mn[BQ], ref[BQ];
    for (int i = 0; i < BQ; i++) mn[i] = m[i];
    for (int64_t j = 0; j < kb; j++)
        for (int i = 0; i < BQ; i++) mn[i] = s[j * BQ + i] > mn[i] ? s[j * BQ + i] : mn[i];
    for (int i = 0; i < BQ; i++) {
        ref[i]  = mn[i] == -INFINITY ? 0.0f : mn[i]; /* everything masked so far */
        corr[i] = cpu_expf(m[i] - ref[i]);
        l[i] *= corr[i];
        m[i] = mn[i];
    }
    for (int64_t j = 0; j < kb; j++)
        for (int i = 0; i < BQ; i++) {
            float p       = cpu_expf(s[j * BQ + i] - ref[i]);
            s[j * BQ + i] = p;
            l[i] += p;
        }
}

CPU_CLONES static void scale_rows(float *restrict ot, int64_t Dv, const float *restrict corr) {
    for (int64_t e = 0; e < Dv; e++)
        for (int i = 0; i < BQ; i++) ot[e * BQ + i] *= corr[i];
}

/* ---- one query block -------------------------------------------------------------------- */

static void add_mask(const attn_ctx *c, float *s, int64_t b, int64_t h, int64_t i0, int64_t qb,
                     int64_t j0, int64_t kb) {
    const float *m = c->mask + b * c->ms[0] + h * c->ms[1];
    for (int64_t i = 0; i < qb; i++)
        for (int64_t j = 0; j < kb; j++)
            s[j * BQ + i] += m[(i0 + i) * c->ms[2] + (j0 + j) * c->ms[3]];
}

/* The AVX-512 micro-kernel when the CPU has it, else the portable one. */
#ifdef ATTN_AVX512
#    define DISPATCH(c, AVX512_CALL, PORTABLE_CALL)                                                \
        do {                                                                                       \
            if ((c)->avx512)                                                                       \
                (AVX512_CALL);                                                                     \
            else                                                                                   \
                (PORTABLE_CALL);                                                                   \
        } while (0)
#else
#    define DISPATCH(c, AVX512_CALL, PORTABLE_CALL) (PORTABLE_CALL)
#endif

static void query_block(const attn_ctx *c, size_t task, float *ws) {
    size_t  per_bh = c->q_blocks;
    int64_t bh = (int64_t)(task / per_bh), b = bh / c->H, h = bh % c->H;
    int64_t i0 = (int64_t)(task % per_bh) * BQ, qb = IMGD_MIN((int64_t)BQ, c->Lq - i0);
    float  *qt = ws, *s = qt + c->D * BQ, *ot = s + (size_t)BK * BQ, *m = ot + c->Dv * BQ;
    float  *l = m + BQ, *corr = l + BQ;
    /* QT[d][i] = scale * Q[i][d]; missing queries are zero columns */
    const float *q = c->q + b * c->qs[0] + h * c->qs[2];
    for (int64_t d = 0; d < c->D; d++)
        for (int64_t i = 0; i < BQ; i++)
            qt[d * BQ + i] = i < qb ? q[(i0 + i) * c->qs[1] + d] * c->scale : 0.0f;
    memset(ot, 0, (size_t)(c->Dv * BQ) * sizeof *ot);
    for (int i = 0; i < BQ; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    const float *k = c->k + b * c->ks[0] + h * c->ks[2];
    const float *v = c->v + b * c->vs[0] + h * c->vs[2];
    for (int64_t j0 = 0; j0 < c->Lk; j0 += BK) {
        int64_t      kb = IMGD_MIN((int64_t)BK, c->Lk - j0);
        const float *kj = k + j0 * c->ks[1], *vj = v + j0 * c->vs[1];
        DISPATCH(c, scores_avx512(c, kj, qt, s, kb), scores_c(c, kj, qt, s, kb));
        if (c->mask) add_mask(c, s, b, h, i0, qb, j0, kb);
        DISPATCH(c, softmax_avx512(s, kb, m, l, corr), softmax_tile(s, kb, m, l, corr));
        scale_rows(ot, c->Dv, corr);
        DISPATCH(c, pv_avx512(c, vj, s, ot, kb), pv_c(c, vj, s, ot, kb));
    }
    /* out[b, i, h, e] = OT[e][i] / l[i] */
    for (int64_t i = 0; i < qb; i++) {
        float *dst = c->o + ((b * c->Lq + i0 + i) * c->H + h) * c->Dv;
        float  inv = 1.0f / l[i];
        for (int64_t e = 0; e < c->Dv; e++) dst[e] = ot[e * BQ + i] * inv;
    }
}

static void attn_task(void *p, size_t b, size_t e, uint32_t tid) {
    const attn_ctx *c  = p;
    float          *ws = c->scratch + (size_t)tid * c->per_thread;
    for (size_t t = b; t < e; t++) query_block(c, t, ws);
}

/* ---- entry ------------------------------------------------------------------------------- */

static void mask_strides(const imgd_tensor *mask, int64_t *ms) {
    for (int d = 0; d < 4; d++) {
        int32_t i = d - (4 - mask->n_dims);
        ms[d]     = (i < 0 || mask->shape[i] == 1) ? 0 : mask->stride[i];
    }
}

imgd_status cpu_attention(cpu_backend *cb, const imgd_tensor *n) {
    const imgd_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2], *mask = n->src[3];
    attn_ctx           c = {.q       = q->data,
                            .k       = k->data,
                            .v       = v->data,
                            .o       = n->data,
                            .B       = q->shape[0],
                            .Lq      = q->shape[1],
                            .Lk      = k->shape[1],
                            .H       = q->shape[2],
                            .D       = q->shape[3],
                            .Dv      = v->shape[3],
                            .scale   = n->fp[0],
                            .scratch = n->scratch,
                            .avx512  = cb->avx512};
    if (imgd_tensor_numel(n) == 0) return IMGD_OK;
    for (int d = 0; d < 4; d++) {
        c.qs[d] = q->stride[d];
        c.ks[d] = k->stride[d];
        c.vs[d] = v->stride[d];
    }
    if (mask) {
        c.mask = mask->data;
        mask_strides(mask, c.ms);
    }
    c.per_thread = per_thread_floats(c.D, c.Dv);
    c.q_blocks   = (size_t)((c.Lq + BQ - 1) / BQ);
    size_t tasks = (size_t)(c.B * c.H) * c.q_blocks;
    if (cb->n_threads < 2 || tasks < 2)
        attn_task(&c, 0, tasks, 0);
    else
        imgd_pool_run_tid(cb->pool, tasks, attn_task, &c);
    return IMGD_OK;
}
