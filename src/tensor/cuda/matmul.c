/* matmul and conv2d through cuBLAS (f32 in, f32 accumulate, no TF32), and the cuBLASLt fp16
 * GEMM throughput probe the bench compares against.
 *
 * cuBLAS is column-major; a row-major C[M,N] = A[M,K] B[K,N] is computed as the column-major
 * C^T = B^T A^T, i.e. gemm(m = N, n = M, k = K, "A" = B, "B" = A). Each row-major operand is
 * presented either as-is or transposed, whichever of its last two dims has unit stride. */
#include <cublasLt.h>
#include <limits.h>

#include "base/error.h"
#include "cuda_impl.h"
#include "tensor/cuda/cuda.h"

/* ---- operand layout ------------------------------------------------------------------------ */

/* Row-major P [rows][cols] with element strides (sr, sc), to be passed where cuBLAS expects
 * op(X) = P^T (cols x rows, column-major). Returns false when no (op, ld) describes it. */
static bool gemm_layout(int64_t rows, int64_t cols, int64_t sr, int64_t sc, cublasOperation_t *op,
                        int64_t *ld) {
    if (sc == 1 || cols == 1) { /* X = P^T: X(c, r) at c + r * ld */
        int64_t l = rows == 1 ? cols : sr;
        if (l >= (cols > 1 ? cols : 1)) {
            *op = CUBLAS_OP_N;
            *ld = l;
            return true;
        }
    }
    if (sr == 1 || rows == 1) { /* X = P as column-major rows x cols: X(r, c) at r + c * ld */
        int64_t l = cols == 1 ? rows : sc;
        if (l >= (rows > 1 ? rows : 1)) {
            *op = CUBLAS_OP_T;
            *ld = l;
            return true;
        }
    }
    return false;
}

/* Element offset of batch bt (row-major over out's batch dims) in x, broadcasting x's batch
 * dims (right-aligned; size 1 repeats). */
static int64_t batch_offset(const imgd_tensor *x, const imgd_tensor *out, int64_t bt) {
    int32_t nd  = out->n_dims;
    int64_t off = 0;
    for (int32_t d = nd - 3; d >= 0; d--) {
        int64_t i = bt % out->shape[d];
        bt /= out->shape[d];
        int32_t xd = d - (nd - x->n_dims);
        if (xd >= 0 && x->shape[xd] != 1) off += i * x->stride[xd];
    }
    return off;
}

typedef struct mm_geom {
    int64_t           M, N, K, batches;
    cublasOperation_t op_a, op_b; /* cuBLAS ops for the operands A (= our b) and B (= our a) */
    int64_t           ld_a, ld_b;
} mm_geom;

static bool mm_geometry(const imgd_tensor *n, mm_geom *g) {
    const imgd_tensor *a = n->src[0], *b = n->src[1];
    int32_t            na = a->n_dims, nb = b->n_dims, nd = n->n_dims;
    g->M       = n->shape[nd - 2];
    g->N       = n->shape[nd - 1];
    g->K       = a->shape[na - 1];
    g->batches = g->M * g->N > 0 ? imgd_tensor_numel(n) / (g->M * g->N) : 0;
    g->op_a = g->op_b = CUBLAS_OP_N;
    g->ld_a = g->ld_b = 1;
    if (g->K == 0 || g->batches == 0) /* no GEMM: the output is the bias or zeros */
        return g->M <= INT_MAX && g->N <= INT_MAX;
    if (!gemm_layout(g->K, g->N, b->stride[nb - 2], b->stride[nb - 1], &g->op_a, &g->ld_a))
        return false;
    if (!gemm_layout(g->M, g->K, a->stride[na - 2], a->stride[na - 1], &g->op_b, &g->ld_b))
        return false;
    return g->M <= INT_MAX && g->N <= INT_MAX && g->K <= INT_MAX && g->ld_a <= INT_MAX &&
           g->ld_b <= INT_MAX && g->batches <= INT_MAX;
}

bool cuda_matmul_supported(const imgd_tensor *n) {
    mm_geom g;
    if (n->n_dims < 2 || n->dtype != IMGD_DTYPE_F32) return false;
    if (n->src[0]->dtype != IMGD_DTYPE_F32 || n->src[1]->dtype != IMGD_DTYPE_F32) return false;
    if (n->src[2] && (n->src[2]->dtype != IMGD_DTYPE_F32 || !imgd_tensor_is_contiguous(n->src[2])))
        return false;
    return mm_geometry(n, &g);
}

/* Prefills out with the bias (then beta = 1), or zeroes it when K == 0. */
static imgd_status mm_init_out(cuda_backend *cb, const imgd_tensor *n, int64_t inner, int64_t nb,
                               const char *what, float *beta) {
    const imgd_tensor *bias = n->src[2];
    *beta                   = 0.0f;
    if (bias) {
        cudaError_t e =
            cuk_fill_bias(n->data, cuda_dptr(bias), imgd_tensor_numel(n), inner, nb, cb->stream);
        if (e != cudaSuccess) return cuda_fail(e, "cuk_fill_bias", what);
        *beta = 1.0f;
    }
    return IMGD_OK;
}

imgd_status cuda_matmul(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    mm_geom g;
    if (!mm_geometry(n, &g))
        return imgd_fail(IMGD_E_INTERNAL, "cuda: %s: operand layout changed since planning", what);
    if (g.batches == 0) return IMGD_OK;
    float       beta = 0.0f;
    imgd_status st   = mm_init_out(cb, n, 1, g.N, what, &beta);
    if (st != IMGD_OK) return st;
    if (g.K == 0) {
        if (!n->src[2])
            CUDA_TRY(cudaMemsetAsync(n->data, 0, imgd_tensor_nbytes(n), cb->stream), what);
        return IMGD_OK;
    }
    const float *A = cuda_dptr(n->src[1]), *B = cuda_dptr(n->src[0]);
    float       *C     = n->data;
    const float  alpha = 1.0f;
    int64_t      sa    = batch_offset(n->src[1], n, 1 % g.batches),
            sb         = batch_offset(n->src[0], n, 1 % g.batches);
    bool uniform       = true;
    for (int64_t bt = 2; bt < g.batches && uniform; bt++)
        uniform =
            batch_offset(n->src[1], n, bt) == bt * sa && batch_offset(n->src[0], n, bt) == bt * sb;
    if (uniform) {
        CUBLAS_TRY(cublasSgemmStridedBatched(cb->blas, g.op_a, g.op_b, (int)g.N, (int)g.M, (int)g.K,
                                             &alpha, A, (int)g.ld_a, sa, B, (int)g.ld_b, sb, &beta,
                                             C, (int)g.N, g.M * g.N, (int)g.batches),
                   what);
        return IMGD_OK;
    }
    for (int64_t bt = 0; bt < g.batches; bt++)
        CUBLAS_TRY(cublasSgemm(cb->blas, g.op_a, g.op_b, (int)g.N, (int)g.M, (int)g.K, &alpha,
                               A + batch_offset(n->src[1], n, bt), (int)g.ld_a,
                               B + batch_offset(n->src[0], n, bt), (int)g.ld_b, &beta,
                               C + bt * g.M * g.N, (int)g.N),
                   what);
    return IMGD_OK;
}

/* ---- conv2d: im2col + GEMM --------------------------------------------------------------------
 */

#define IM2COL_BYTES_MAX ((size_t)256 << 20) /* column buffer cap; larger images go in chunks */

typedef struct conv_geom {
    int64_t N, C, H, W, O, KH, KW, OH, OW, P, CK, chunk;
    int64_t sh, sw, ph, pw;
    bool    direct; /* 1x1, stride 1, no padding: the input is its own column matrix */
} conv_geom;

static void conv_geometry(const imgd_tensor *n, conv_geom *g) {
    const imgd_tensor *x = n->src[0], *w = n->src[1];
    g->N        = x->shape[0];
    g->C        = x->shape[1];
    g->H        = x->shape[2];
    g->W        = x->shape[3];
    g->O        = w->shape[0];
    g->KH       = w->shape[2];
    g->KW       = w->shape[3];
    g->OH       = n->shape[2];
    g->OW       = n->shape[3];
    g->sh       = n->ip[0];
    g->sw       = n->ip[1];
    g->ph       = n->ip[2];
    g->pw       = n->ip[3];
    g->P        = g->OH * g->OW;
    g->CK       = g->C * g->KH * g->KW;
    g->direct   = g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
    int64_t cap = (int64_t)(IM2COL_BYTES_MAX / sizeof(float)) / (g->CK ? g->CK : 1);
    g->chunk    = g->P < cap ? g->P : (cap > 0 ? cap : 1);
}

bool cuda_conv2d_supported(const imgd_tensor *n) {
    conv_geom g;
    for (int i = 0; i < 3; i++) {
        const imgd_tensor *s = n->src[i];
        if (i < 2 && !s) return false;
        if (s && (s->dtype != IMGD_DTYPE_F32 || !imgd_tensor_is_contiguous(s))) return false;
    }
    conv_geometry(n, &g);
    return g.P <= INT_MAX && g.CK <= INT_MAX && g.O <= INT_MAX;
}

void cuda_conv2d_prepare(imgd_tensor *n) {
    conv_geom g;
    conv_geometry(n, &g);
    n->scratch_bytes = g.direct ? 0 : (size_t)(g.CK * g.chunk) * sizeof(float);
}

imgd_status cuda_conv2d(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    conv_geom g;
    conv_geometry(n, &g);
    if (g.N * g.O * g.P == 0) return IMGD_OK;
    float       beta = 0.0f;
    imgd_status st   = mm_init_out(cb, n, g.P, g.O, what, &beta);
    if (st != IMGD_OK) return st;
    if (g.CK == 0) {
        if (!n->src[2])
            CUDA_TRY(cudaMemsetAsync(n->data, 0, imgd_tensor_nbytes(n), cb->stream), what);
        return IMGD_OK;
    }
    const float *x = cuda_dptr(n->src[0]), *w = cuda_dptr(n->src[1]);
    float       *col = n->scratch, *out = n->data;
    const float  alpha = 1.0f;
    for (int64_t b = 0; b < g.N; b++) {
        const float *xb = x + b * g.C * g.H * g.W;
        float       *ob = out + b * g.O * g.P;
        if (g.direct) { /* out_b^T (P x O) = x_b^T (P x C) * w^T (C x O), column-major */
            CUBLAS_TRY(cublasSgemm(cb->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)g.P, (int)g.O, (int)g.C,
                                   &alpha, xb, (int)g.P, w, (int)g.C, &beta, ob, (int)g.P),
                       what);
            continue;
        }
        for (int64_t p0 = 0; p0 < g.P; p0 += g.chunk) {
            int64_t     pc = g.P - p0 < g.chunk ? g.P - p0 : g.chunk;
            cudaError_t e  = cuk_im2col(col, xb, g.C, g.H, g.W, g.KH, g.KW, g.sh, g.sw, g.ph, g.pw,
                                        g.OW, p0, pc, cb->stream);
            if (e != cudaSuccess) return cuda_fail(e, "cuk_im2col", what);
            /* out_b[:, p0:p0+pc]^T (pc x O, ld P) = col^T (pc x CK) * w^T (CK x O) */
            CUBLAS_TRY(cublasSgemm(cb->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)pc, (int)g.O, (int)g.CK,
                                   &alpha, col, (int)pc, w, (int)g.CK, &beta, ob + p0, (int)g.P),
                       what);
        }
    }
    return IMGD_OK;
}

/* ---- fp16 GEMM throughput (cuBLASLt) ------------------------------------------------------- */

typedef struct lt_bench {
    cublasLtHandle_t           lt;
    cublasLtMatmulDesc_t       op;
    cublasLtMatrixLayout_t     la, lb, lc;
    cublasLtMatmulPreference_t pref;
    void                      *a, *b, *c, *ws;
    cudaEvent_t                t0, t1;
} lt_bench;

#define LT_WORKSPACE ((size_t)64 << 20)

static void lt_free(lt_bench *t) {
    if (t->t0) (void)cudaEventDestroy(t->t0);
    if (t->t1) (void)cudaEventDestroy(t->t1);
    (void)cudaFree(t->a);
    (void)cudaFree(t->b);
    (void)cudaFree(t->c);
    (void)cudaFree(t->ws);
    if (t->pref) (void)cublasLtMatmulPreferenceDestroy(t->pref);
    if (t->la) (void)cublasLtMatrixLayoutDestroy(t->la);
    if (t->lb) (void)cublasLtMatrixLayoutDestroy(t->lb);
    if (t->lc) (void)cublasLtMatrixLayoutDestroy(t->lc);
    if (t->op) (void)cublasLtMatmulDescDestroy(t->op);
    if (t->lt) (void)cublasLtDestroy(t->lt);
}

static imgd_status lt_setup(lt_bench *t, int32_t m, int32_t n, int32_t k) {
    const char *w  = "fp16 GEMM probe";
    size_t      ws = LT_WORKSPACE;
    CUDA_TRY(cudaMalloc(&t->a, (size_t)m * (size_t)k * 2), w);
    CUDA_TRY(cudaMalloc(&t->b, (size_t)k * (size_t)n * 2), w);
    CUDA_TRY(cudaMalloc(&t->c, (size_t)m * (size_t)n * 2), w);
    CUDA_TRY(cudaMalloc(&t->ws, ws), w);
    /* 0x3c00 halves = 1.0 would make every product exact; 0x2e66 ~ 0.1 keeps sums finite */
    CUDA_TRY(cudaMemset(t->a, 0x2e, (size_t)m * (size_t)k * 2), w);
    CUDA_TRY(cudaMemset(t->b, 0x2e, (size_t)k * (size_t)n * 2), w);
    CUDA_TRY(cudaEventCreate(&t->t0), w);
    CUDA_TRY(cudaEventCreate(&t->t1), w);
    CUBLAS_TRY(cublasLtCreate(&t->lt), w);
    CUBLAS_TRY(cublasLtMatmulDescCreate(&t->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), w);
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&t->la, CUDA_R_16F, (uint64_t)m, (uint64_t)k, m), w);
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&t->lb, CUDA_R_16F, (uint64_t)k, (uint64_t)n, k), w);
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&t->lc, CUDA_R_16F, (uint64_t)m, (uint64_t)n, m), w);
    CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&t->pref), w);
    CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(
                   t->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
               w);
    return IMGD_OK;
}

static imgd_status lt_run(lt_bench *t, int32_t m, int32_t n, int32_t k, int32_t reps,
                          double *tflops) {
    const char                     *w = "fp16 GEMM probe";
    cublasLtMatmulHeuristicResult_t res;
    int                             n_res = 0;
    const float                     alpha = 1.0f, beta = 0.0f;
    CUBLAS_TRY(cublasLtMatmulAlgoGetHeuristic(t->lt, t->op, t->la, t->lb, t->lc, t->lc, t->pref, 1,
                                              &res, &n_res),
               w);
    if (n_res < 1) return imgd_fail(IMGD_E_DEVICE, "cuda: %s: cuBLASLt has no fp16 algorithm", w);
    for (int32_t r = -1; r < reps; r++) {
        if (r == 0) CUDA_TRY(cudaEventRecord(t->t0, 0), w);
        CUBLAS_TRY(cublasLtMatmul(t->lt, t->op, &alpha, t->a, t->la, t->b, t->lb, &beta, t->c,
                                  t->lc, t->c, t->lc, &res.algo, t->ws, LT_WORKSPACE, 0),
                   w);
    }
    CUDA_TRY(cudaEventRecord(t->t1, 0), w);
    CUDA_TRY(cudaEventSynchronize(t->t1), w);
    float ms = 0.0f;
    CUDA_TRY(cudaEventElapsedTime(&ms, t->t0, t->t1), w);
    *tflops = 2.0 * m * (double)n * k * reps / ((double)ms * 1e-3) / 1e12;
    return IMGD_OK;
}

imgd_status imgd_cuda_gemm_f16_tflops(int32_t m, int32_t n, int32_t k, int32_t reps,
                                      double *tflops) {
    if (m < 1 || n < 1 || k < 1 || reps < 1 || !tflops)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_cuda_gemm_f16_tflops: bad arguments");
    lt_bench    t  = {0};
    imgd_status st = lt_setup(&t, m, n, k);
    if (st == IMGD_OK) st = lt_run(&t, m, n, k, reps, tflops);
    lt_free(&t);
    return st;
}
