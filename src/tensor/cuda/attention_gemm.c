/* Attention as batched GEMMs on tensor cores (IMGD_CUDA_ATTN=gemm; the default in f16/bf16
 * math): per batch b, chunk of heads [h0, h0 + hc) and chunk of query rows [i0, i0 + qc),
 *
 *   S = scale Q K^T   one cublasGemmStridedBatchedEx over the heads, f32 scores in scratch;
 *   P = softmax(S + mask)  cuk_attn_softmax, in the GEMM type;
 *   O = P V           one cublasGemmStridedBatchedEx, f32 into the node's [B, Lq, H, Dv].
 *
 * In f16 math the scores are stored in f16 (rounded from the f32 accumulation, as f16
 * inference frameworks do) and the probabilities overwrite them, which halves the memory
 * traffic of the largest attentions; bf16 keeps f32 scores (8 significant bits would move
 * exp() by percents).
 *
 * Chunks keep the scores and probabilities within ATTN_CHUNK_BYTES. In f16/bf16 math q, k
 * and v are rounded into scratch first (contiguous [B, L, H, D]); in f32 they are read in
 * place when their rows are unit-stride, else copied.
 *
 * Row-major [L][D] with row stride ld is, for cuBLAS (column-major), a D x L matrix with
 * leading dimension ld, so the scores' transpose S^T (Lk x qc, ld Lk) = K (op T) Q (op N),
 * and O^T (Dv x qc, ld H Dv) = V (op N) P^T (op N, ld Lk). Heads are the batch: head strides
 * are the operands' stride[2]. */
#include <limits.h>

#include "base/error.h"
#include "cuda_impl.h"

#define ATTN_CHUNK_BYTES ((size_t)256 << 20)

typedef struct attn_geom {
    int64_t B, Lq, Lk, H, D, Dv;
    int64_t hc, qc; /* chunk: heads, query rows */
} attn_geom;

/* Scores in f16, the probabilities written over them (f16 math). */
static bool scores_low(const cuda_backend *cb) {
    return cb->math == IMGD_GPU_MATH_F16;
}

/* Bytes per score (and the probability that may share its place). */
static size_t score_row_bytes(const cuda_backend *cb) {
    return scores_low(cb) ? 2 : sizeof(float) + cuda_math_size(cb);
}

static void attn_geometry(const cuda_backend *cb, const imgd_tensor *n, attn_geom *g) {
    const imgd_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2];
    g->B             = q->shape[0];
    g->Lq            = q->shape[1];
    g->H             = q->shape[2];
    g->D             = q->shape[3];
    g->Lk            = k->shape[1];
    g->Dv            = v->shape[3];
    size_t  row      = (size_t)(g->Lk > 0 ? g->Lk : 1) * score_row_bytes(cb);
    int64_t rows_max = (int64_t)(ATTN_CHUNK_BYTES / row);
    if (rows_max < 1) rows_max = 1;
    if (g->Lq <= rows_max) {
        g->qc = g->Lq > 0 ? g->Lq : 1;
        g->hc = rows_max / g->qc;
        if (g->hc > g->H) g->hc = g->H;
        if (g->hc < 1) g->hc = 1;
    } else {
        g->hc = 1;
        g->qc = rows_max;
    }
}

bool cuda_attn_gemm_supported(const imgd_tensor *n) {
    const imgd_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2];
    int64_t            H = q->shape[2], D = q->shape[3], Dv = v->shape[3], Lk = k->shape[1];
    if (D < 1 || Dv < 1 || Lk < 1) return false;
    return H * D <= INT_MAX && H * Dv <= INT_MAX && Lk <= INT_MAX && q->shape[1] <= INT_MAX &&
           (int64_t)(ATTN_CHUNK_BYTES / 8) <= INT_MAX;
}

/* Whether t ([B, L, H, D], f32) can be a GEMM operand as it is: unit-stride rows, row
 * stride a valid leading dimension. */
static bool in_place(const cuda_backend *cb, const imgd_tensor *t) {
    /* f32 in f32 math, or (half activations) already in the math type */
    if (cuda_cuk_of(t) != cuda_math_cuk(cb)) return false;
    int64_t D = t->shape[3];
    return (t->stride[3] == 1 || D == 1) && t->stride[1] >= D && t->stride[1] <= INT_MAX &&
           t->stride[0] >= 0 && t->stride[2] >= 0;
}

static size_t operand_bytes(const cuda_backend *cb, const imgd_tensor *t) {
    return cuda_align_up((size_t)imgd_tensor_numel(t) * cuda_math_size(cb));
}

static size_t scores_bytes(const cuda_backend *cb, const attn_geom *g) {
    return cuda_align_up((size_t)(g->hc * g->qc * g->Lk) * (scores_low(cb) ? 2 : sizeof(float)));
}

void cuda_attn_gemm_prepare(cuda_backend *cb, imgd_tensor *n) {
    attn_geom g;
    attn_geometry(cb, n, &g);
    size_t ops = 0;
    for (int s = 0; s < 3; s++) ops += operand_bytes(cb, n->src[s]);
    n->scratch_bytes = ops + scores_bytes(cb, &g) +
                       (scores_low(cb) ? 0 : (size_t)(g.hc * g.qc * g.Lk) * cuda_math_size(cb));
}

/* An operand at its device address with its element strides, or copied into dst
 * (contiguous, the GEMM type). */
typedef struct attn_operand {
    const unsigned char *p;
    int64_t              s[4];
} attn_operand;

static imgd_status operand(cuda_backend *cb, const imgd_tensor *t, unsigned char *dst,
                           const char *what, attn_operand *o) {
    if (in_place(cb, t)) {
        o->p = cuda_dptr(t);
        for (int i = 0; i < 4; i++) o->s[i] = t->stride[i];
        return IMGD_OK;
    }
    o->p    = dst;
    o->s[3] = 1;
    o->s[2] = t->shape[3];
    o->s[1] = t->shape[2] * t->shape[3];
    o->s[0] = t->shape[1] * o->s[1];
    return cuda_to_math(cb, t, dst, what);
}

imgd_status cuda_attn_gemm(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    attn_geom g;
    attn_geometry(cb, n, &g);
    if (g.B * g.Lq * g.H * g.Dv == 0) return IMGD_OK;
    unsigned char *sc = n->scratch;
    attn_operand   q, k, v;
    size_t         es = cuda_math_size(cb);
    imgd_status    st = operand(cb, n->src[0], sc, what, &q);
    sc += operand_bytes(cb, n->src[0]);
    if (st == IMGD_OK) st = operand(cb, n->src[1], sc, what, &k);
    sc += operand_bytes(cb, n->src[1]);
    if (st == IMGD_OK) st = operand(cb, n->src[2], sc, what, &v);
    sc += operand_bytes(cb, n->src[2]);
    if (st != IMGD_OK) return st;
    void              *S   = sc;
    void              *P   = scores_low(cb) ? S : sc + scores_bytes(cb, &g);
    cudaDataType_t     st_ = scores_low(cb) ? CUDA_R_16F : CUDA_R_32F;
    int32_t            sdt = scores_low(cb) ? CUK_F16 : CUK_F32;
    const imgd_tensor *m   = n->src[3];
    int64_t            ms[4];
    cuda_mask_strides(m, ms);
    const float   *mask  = m ? cuda_dptr(m) : NULL;
    unsigned char *out   = n->data;
    cudaDataType_t ot    = cuda_cuk_of(n) == CUK_F32 ? CUDA_R_32F : cuda_math_type(cb);
    size_t         oes   = ot == CUDA_R_32F ? 4 : 2;
    float          scale = n->fp[0];
    for (int64_t b = 0; b < g.B; b++)
        for (int64_t h0 = 0; h0 < g.H; h0 += g.hc)
            for (int64_t i0 = 0; i0 < g.Lq; i0 += g.qc) {
                int64_t              hc = g.H - h0 < g.hc ? g.H - h0 : g.hc;
                int64_t              qc = g.Lq - i0 < g.qc ? g.Lq - i0 : g.qc;
                const unsigned char *Q =
                    q.p + (size_t)(b * q.s[0] + i0 * q.s[1] + h0 * q.s[2]) * es;
                const unsigned char *K = k.p + (size_t)(b * k.s[0] + h0 * k.s[2]) * es;
                const unsigned char *V = v.p + (size_t)(b * v.s[0] + h0 * v.s[2]) * es;
                st =
                    cuda_gemm_t(cb, CUBLAS_OP_T, CUBLAS_OP_N, g.Lk, qc, g.D, scale, K, k.s[1],
                                k.s[2], Q, q.s[1], q.s[2], 0.0f, S, st_, g.Lk, qc * g.Lk, hc, what);
                if (st != IMGD_OK) return st;
                cudaError_t e = cuk_attn_softmax(P, cuda_math_cuk(cb), S, sdt, hc, qc, g.Lk, mask,
                                                 ms, b, h0, i0, cb->stream);
                if (e != cudaSuccess) return cuda_fail(e, "cuk_attn_softmax", what);
                st = cuda_gemm_t(cb, CUBLAS_OP_N, CUBLAS_OP_N, g.Dv, qc, g.Lk, 1.0f, V, v.s[1],
                                 v.s[2], P, g.Lk, qc * g.Lk, 0.0f,
                                 out + (size_t)(((b * g.Lq + i0) * g.H + h0) * g.Dv) * oes, ot,
                                 g.H * g.Dv, g.Dv, hc, what);
                if (st != IMGD_OK) return st;
            }
    return IMGD_OK;
}
