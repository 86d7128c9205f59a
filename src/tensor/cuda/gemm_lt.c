/* The cuBLAS calls of the backend's GEMMs: cublasGemmEx, and cuBLASLt with the bias, a GELU and a
 * residual in the epilogue; and which kernel runs each GEMM (IMGD_CUDA_GEMM).
 *
 * heuristic: a GEMM with something in its epilogue runs cuBLASLt's first heuristic algorithm, a
 * plain one cublasGemmEx (CUBLAS_GEMM_DEFAULT).
 *
 * auto (the default in f16/bf16 math) and tune: each GEMM of at least CUDA_GEMM_TUNE_FLOP
 * (tune: every GEMM) runs the fastest of up to CUDA_GEMM_TUNE_ALGOS algorithms cuBLASLt's
 * heuristic offers and, for a plain GEMM, cublasGemmEx. Each runs on the GEMM's own operands
 * with its output (and a residual that is the output) in a buffer of its own at the output's
 * alignment, once to warm up and CUDA_TUNE_REPS times between two events (tune.c). The
 * heuristic ranks by a model of the card; the model is not the card, and which tile shape wins
 * depends on the problem's shape, so the choice is measured where it runs. Alignments select
 * kernels, and a plan's addresses exist only once its buffer is allocated, so the timing happens
 * in the plan's first compute, which runs node by node for that (exec.c); later computes replay
 * its CUDA graph. A choice is remembered per backend by everything that selects a kernel
 * (shapes, layouts, types, epilogue, the operands' alignments), so a network's repeated layers
 * and later plans time nothing. Smaller GEMMs, and GEMMs whose output buffer does not fit with
 * CUDA_TUNE_SPARE free, take what heuristic takes.
 *
 * IMGD_CUDA_VERBOSE=1 prints each timed GEMM's candidates and choice. */
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "cuda.h"
#include "cuda_impl.h"

#define CUDA_GEMM_TUNE_FLOP  1e8
#define CUDA_GEMM_TUNE_ALGOS 8

/* What selects a kernel: everything but the addresses, and their alignments. Zero-filled
 * before it is set (the cache compares bytes). */
typedef struct lt_key {
    int64_t  m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, batches;
    int32_t  op_a, op_b, math, dt, epi, residual;
    uint32_t al_a, al_b, al_c, al_d;
} lt_key;

enum {
    PICK_NONE = -1,   /* cuBLASLt has no algorithm and the GEMM is not plain: the caller runs it
                         another way */
    PICK_GEMMEX = -2, /* cublasGemmEx */
};

/* A GEMM's kernel (cb->picks[CUDA_TUNER_GEMM]). */
typedef struct cuda_lt_pick {
    lt_key               key;
    int32_t              pick; /* PICK_NONE, PICK_GEMMEX, or algo's rank in the heuristic's list */
    bool                 decided; /* timed, or not to be (no room for it): kept as it is */
    bool                 timed;
    cublasLtMatmulAlgo_t algo;
} cuda_lt_pick;

/* ---- cublasGemmEx ---------------------------------------------------------------------------- */

static cublasStatus_t gemm_ex(cuda_backend *cb, cublasOperation_t op_a, cublasOperation_t op_b,
                              int64_t m, int64_t n, int64_t k, float alpha, const void *A,
                              int64_t lda, int64_t stride_a, const void *B, int64_t ldb,
                              int64_t stride_b, float beta, void *C, cudaDataType_t ct, int64_t ldc,
                              int64_t stride_c, int64_t batches) {
    cudaDataType_t t = cuda_math_type(cb);
    if (batches == 1)
        return cublasGemmEx(cb->blas, op_a, op_b, (int)m, (int)n, (int)k, &alpha, A, t, (int)lda, B,
                            t, (int)ldb, &beta, C, ct, (int)ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT);
    return cublasGemmStridedBatchedEx(cb->blas, op_a, op_b, (int)m, (int)n, (int)k, &alpha, A, t,
                                      (int)lda, stride_a, B, t, (int)ldb, stride_b, &beta, C, ct,
                                      (int)ldc, stride_c, (int)batches, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT);
}

imgd_status cuda_gemm_t(cuda_backend *cb, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m,
                        int64_t n, int64_t k, float alpha, const void *A, int64_t lda,
                        int64_t stride_a, const void *B, int64_t ldb, int64_t stride_b, float beta,
                        void *C, cudaDataType_t ct, int64_t ldc, int64_t stride_c, int64_t batches,
                        const char *what) {
    cublasStatus_t s = gemm_ex(cb, op_a, op_b, m, n, k, alpha, A, lda, stride_a, B, ldb, stride_b,
                               beta, C, ct, ldc, stride_c, batches);
    if (s == CUBLAS_STATUS_SUCCESS) return IMGD_OK;
    return cublas_fail(s, batches == 1 ? "cublasGemmEx" : "cublasGemmStridedBatchedEx", what);
}

/* g as a plain cublasGemmEx (no bias, residual or GELU) writing D. */
static cublasStatus_t gemm_ex_args(cuda_backend *cb, const cuda_lt_args *g, void *D) {
    return gemm_ex(cb, g->op_a, g->op_b, g->m, g->n, g->k, 1.0f, g->A, g->lda, g->stride_a, g->B,
                   g->ldb, g->stride_b, 0.0f, D, g->dt, g->ldc, g->stride_c, g->batches);
}

/* ---- cuBLASLt ----------------------------------------------------------------------------------
 */

/* Largest power of two up to 256 that divides p's address (cuBLASLt's alignment preference:
 * by default it assumes 256 and would pick kernels an offset view cannot feed). */
static uint32_t ptr_align(const void *p) {
    uintptr_t a  = (uintptr_t)p;
    uint32_t  al = 256;
    while (al > 1 && (a & (al - 1)) != 0) al >>= 1;
    return al;
}

static cublasStatus_t lt_layout(cublasLtMatrixLayout_t *l, cudaDataType_t t, int64_t rows,
                                int64_t cols, int64_t ld, int64_t batches, int64_t stride) {
    cublasStatus_t s = cublasLtMatrixLayoutCreate(l, t, (uint64_t)rows, (uint64_t)cols, ld);
    if (s != CUBLAS_STATUS_SUCCESS || batches <= 1) return s;
    int32_t bc = (int32_t)batches;
    s = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    return cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                            &stride, sizeof stride);
}

static const void *lt_c(const cuda_lt_args *g) {
    return g->C ? g->C : g->D;
}

static bool lt_plain(const cuda_lt_args *g) {
    return !g->bias && !g->C && !g->gelu;
}

static cublasLtEpilogue_t lt_epilogue(const cuda_lt_args *g) {
    return g->bias ? (g->gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                   : (g->gelu ? CUBLASLT_EPILOGUE_GELU : CUBLASLT_EPILOGUE_DEFAULT);
}

static void lt_key_of(const cuda_backend *cb, const cuda_lt_args *g, lt_key *key) {
    memset(key, 0, sizeof *key); /* padding too */
    key->m        = g->m;
    key->n        = g->n;
    key->k        = g->k;
    key->lda      = g->lda;
    key->ldb      = g->ldb;
    key->ldc      = g->ldc;
    key->stride_a = g->stride_a;
    key->stride_b = g->stride_b;
    key->stride_c = g->stride_c;
    key->batches  = g->batches;
    key->op_a     = (int32_t)g->op_a;
    key->op_b     = (int32_t)g->op_b;
    key->math     = (int32_t)cuda_math_type(cb);
    key->dt       = (int32_t)g->dt;
    key->epi      = (int32_t)lt_epilogue(g);
    key->residual = g->C != NULL;
    key->al_a     = ptr_align(g->A);
    key->al_b     = ptr_align(g->B);
    key->al_c     = ptr_align(lt_c(g));
    key->al_d     = ptr_align(g->D);
}

/* g's cuBLASLt operation: descriptor and layouts (lt_ops_free destroys them). */
typedef struct lt_ops {
    cublasLtMatmulDesc_t   op;
    cublasLtMatrixLayout_t la, lb, lc;
    const char            *call; /* the call that failed */
} lt_ops;

static void lt_ops_free(lt_ops *o) {
    if (o->lc) (void)cublasLtMatrixLayoutDestroy(o->lc);
    if (o->lb) (void)cublasLtMatrixLayoutDestroy(o->lb);
    if (o->la) (void)cublasLtMatrixLayoutDestroy(o->la);
    if (o->op) (void)cublasLtMatmulDescDestroy(o->op);
}

static cublasStatus_t lt_ops_new(cuda_backend *cb, const cuda_lt_args *g, lt_ops *o) {
    cudaDataType_t     t   = cuda_math_type(cb);
    cublasLtEpilogue_t epi = lt_epilogue(g);
    int32_t            bt = (int32_t)g->dt, ta = (int32_t)g->op_a, tb = (int32_t)g->op_b;
    memset(o, 0, sizeof *o);
    o->call          = "cublasLtMatmulDescCreate";
    cublasStatus_t s = cublasLtMatmulDescCreate(&o->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
#define LT_STEP(c)                                                                                 \
    do {                                                                                           \
        if (s == CUBLAS_STATUS_SUCCESS) {                                                          \
            o->call = #c;                                                                          \
            s       = (c);                                                                         \
        }                                                                                          \
    } while (0)
    LT_STEP(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_STEP(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT_STEP(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (g->bias) {
        LT_STEP(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias,
                                               sizeof g->bias));
        LT_STEP(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                               sizeof bt));
    }
    LT_STEP(lt_layout(&o->la, t, g->op_a == CUBLAS_OP_N ? g->m : g->k,
                      g->op_a == CUBLAS_OP_N ? g->k : g->m, g->lda, g->batches, g->stride_a));
    LT_STEP(lt_layout(&o->lb, t, g->op_b == CUBLAS_OP_N ? g->k : g->n,
                      g->op_b == CUBLAS_OP_N ? g->n : g->k, g->ldb, g->batches, g->stride_b));
    LT_STEP(lt_layout(&o->lc, g->dt, g->m, g->n, g->ldc, g->batches, g->stride_c));
#undef LT_STEP
    return s;
}

/* Up to `want` algorithms cuBLASLt's heuristic offers for key (best first) into res, *n of
 * them (0 when it has none: not an error). */
static cublasStatus_t lt_heuristic(cuda_backend *cb, const lt_key *key, const lt_ops *o, int want,
                                   cublasLtMatmulHeuristicResult_t *res, int *n) {
    cublasLtMatmulPreference_t pref = NULL;
    uint64_t                   ws   = CUDA_BLAS_WS;
    cublasStatus_t             s    = cublasLtMatmulPreferenceCreate(&pref);
    const struct {
        cublasLtMatmulPreferenceAttributes_t a;
        uint32_t                             v;
    } al[] = {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key->al_a},
              {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key->al_b},
              {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key->al_c},
              {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key->al_d}};
    *n     = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &ws, sizeof ws);
    for (size_t i = 0; i < IMGD_ARRAY_LEN(al) && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(pref, al[i].a, &al[i].v, sizeof al[i].v);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(cb->lt, o->op, o->la, o->lb, o->lc, o->lc, pref, want,
                                           res, n);
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS && *n < 1)) {
        *n = 0;
        return CUBLAS_STATUS_SUCCESS;
    }
    return s;
}

static cublasStatus_t lt_run(cuda_backend *cb, const cuda_lt_args *g, const lt_ops *o,
                             const cublasLtMatmulAlgo_t *algo, const void *C, void *D) {
    float alpha = 1.0f, beta = g->C ? 1.0f : 0.0f;
    return cublasLtMatmul(cb->lt, o->op, &alpha, g->A, o->la, g->B, o->lb, &beta, C, o->lc, D,
                          o->lc, algo, cb->blas_ws, CUDA_BLAS_WS, cb->stream);
}

/* ---- choosing ----------------------------------------------------------------------------------
 */

/* One candidate's run into the trial output D (C: the residual, or D where it is the output). */
typedef struct lt_trial {
    cuda_backend               *cb;
    const cuda_lt_args         *g;
    const lt_ops               *o;
    const cublasLtMatmulAlgo_t *algo; /* NULL: cublasGemmEx */
    const void                 *C;
    void                       *D;
} lt_trial;

static bool lt_trial_run(void *ctx) {
    const lt_trial *t = ctx;
    cublasStatus_t  s =
        t->algo ? lt_run(t->cb, t->g, t->o, t->algo, t->C, t->D) : gemm_ex_args(t->cb, t->g, t->D);
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    (void)cudaGetLastError(); /* a candidate that fails is not chosen */
    return false;
}

/* Bytes from D's first element to one past its last. */
static size_t lt_d_bytes(const cuda_lt_args *g) {
    int64_t last = (g->batches - 1) * g->stride_c + (g->n - 1) * g->ldc + g->m;
    return (size_t)last * (g->dt == CUDA_R_32F ? 4u : 2u);
}

static void lt_describe(const cuda_lt_args *g, char *buf, size_t cap) {
    (void)snprintf(buf, cap, "gemm %lldx%lldx%lld%s%s%s%s%s", (long long)g->m, (long long)g->n,
                   (long long)g->k, g->batches > 1 ? " batched" : "", g->bias ? " +bias" : "",
                   g->C ? " +residual" : "", g->gelu ? " +gelu" : "",
                   g->dt == CUDA_R_32F ? " f32 out" : "");
}

/* The pick without timing: cuBLASLt's first algorithm where the GEMM has an epilogue,
 * cublasGemmEx where it is plain (res, n: the heuristic's list). */
static void lt_pick_default(const cuda_lt_args *g, const cublasLtMatmulHeuristicResult_t *res,
                            int n, cuda_lt_pick *p) {
    p->timed = false;
    if (lt_plain(g)) {
        p->pick = PICK_GEMMEX;
        return;
    }
    p->pick = n > 0 ? 0 : PICK_NONE;
    if (n > 0) p->algo = res[0].algo;
}

/* Times the candidates (the heuristic's res[0..n) and, for a plain GEMM, cublasGemmEx) into p;
 * the default pick where the output buffer does not fit or every candidate failed. */
static void lt_time(cuda_backend *cb, const cuda_lt_args *g, const lt_ops *o,
                    const cublasLtMatmulHeuristicResult_t *res, int n, cuda_lt_pick *p) {
    size_t         bytes = lt_d_bytes(g) + 256, fr = 0;
    size_t         skew = (uintptr_t)g->D & 255; /* the trial output at D's alignment */
    char           desc[160], why[160];
    cuda_tune_bufs tb;
    float          ms[CUDA_GEMM_TUNE_ALGOS + 1];
    int            cands = lt_plain(g); /* cublasGemmEx, and the heuristic's usable algorithms */
    for (int i = 0; i < n; i++) cands += res[i].state == CUBLAS_STATUS_SUCCESS;
    lt_pick_default(g, res, n, p);
    p->decided = true;
    if (cands < 2) return; /* nothing to choose between */
    lt_describe(g, desc, sizeof desc);
    if (!cuda_tune_room(bytes, &fr)) {
        if (cb->verbose)
            fprintf(stderr, "cuda: %s: not timed: its output takes %.1f MiB (%.0f free)\n", desc,
                    (double)bytes / (1024.0 * 1024.0), (double)fr / (1024.0 * 1024.0));
        return;
    }
    if (!cuda_tune_bufs_new(cb, CUDA_TUNER_GEMM, bytes, &tb, why, sizeof why)) {
        if (cb->verbose) fprintf(stderr, "cuda: %s: not timed: %s\n", desc, why);
        return;
    }
    void    *D = tb.buf + skew;
    lt_trial t = {cb, g, o, NULL, g->C && g->C != g->D ? g->C : D, D};
    int      c = n, best = -1; /* candidate c: res[c] for c < n, cublasGemmEx for c == n */
    for (int i = 0; i <= n; i++) {
        ms[i] = -1.0f;
        if (i == n && !lt_plain(g)) break;
        if (i < n && res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        t.algo = i < n ? &res[i].algo : NULL;
        ms[i]  = cuda_tune_time(cb, &tb, lt_trial_run, &t);
        if (ms[i] >= 0.0f && (best < 0 || ms[i] < ms[best])) best = i;
    }
    cuda_tune_bufs_free(&tb);
    if (best >= 0) {
        p->timed = true;
        p->pick  = best == c ? PICK_GEMMEX : best;
        if (best < c) p->algo = res[best].algo;
    }
    if (!cb->verbose) return;
    char   line[512];
    size_t k = 0;
    for (int i = 0; i <= n && k < sizeof line; i++) {
        if (i == n && !lt_plain(g)) break;
        int w = i < n ? snprintf(line + k, sizeof line - k, " #%d %.3f", i, (double)ms[i])
                      : snprintf(line + k, sizeof line - k, " gemmex %.3f", (double)ms[i]);
        k += w > 0 ? (size_t)w : 0;
    }
    char took[48];
    if (best < 0)
        (void)snprintf(took, sizeof took, "the untimed default (every candidate failed)");
    else if (best == c)
        (void)snprintf(took, sizeof took, "gemmex");
    else
        (void)snprintf(took, sizeof took, "#%d", best);
    fprintf(stderr, "cuda: %s: timed (ms per run, < 0 failed):%s; took %s\n", desc, line, took);
}

/* Whether IMGD_CUDA_GEMM times g: tune, or auto from CUDA_GEMM_TUNE_FLOP. */
static bool lt_timed(const cuda_backend *cb, const cuda_lt_args *g) {
    double flop = 2.0 * (double)g->m * (double)g->n * (double)g->k * (double)g->batches;
    return cb->gemm_sel == CUDA_GEMM_TUNE ||
           (cb->gemm_sel == CUDA_GEMM_AUTO && flop >= CUDA_GEMM_TUNE_FLOP);
}

/* g's pick: remembered, or made now (timed when IMGD_CUDA_GEMM asks and the stream is not being
 * captured: a capture's first compute runs untimed and times in a later eager one). */
static cublasStatus_t lt_pick(cuda_backend *cb, const cuda_lt_args *g, const lt_ops *o,
                              const cuda_lt_pick **out) {
    lt_key key;
    lt_key_of(cb, g, &key);
    cuda_lt_pick *p    = cuda_tune_find(&cb->picks[CUDA_TUNER_GEMM], &key, sizeof key);
    bool          time = lt_timed(cb, g);
    *out               = p;
    if (p && (p->decided || !time)) return CUBLAS_STATUS_SUCCESS;
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusActive;
    if (time && cudaStreamIsCapturing(cb->stream, &cs) != cudaSuccess) {
        (void)cudaGetLastError();
        cs = cudaStreamCaptureStatusActive;
    }
    cublasLtMatmulHeuristicResult_t res[CUDA_GEMM_TUNE_ALGOS];
    int                             n = 0;
    cublasStatus_t s = lt_heuristic(cb, &key, o, time ? CUDA_GEMM_TUNE_ALGOS : 1, res, &n);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!p) {
        p = cuda_tune_add(&cb->picks[CUDA_TUNER_GEMM], sizeof *p);
        if (!p) return CUBLAS_STATUS_ALLOC_FAILED;
        p->key = key;
    }
    if (time && cs == cudaStreamCaptureStatusNone)
        lt_time(cb, g, o, res, n, p);
    else
        lt_pick_default(g, res, n, p);
    *out = p;
    return CUBLAS_STATUS_SUCCESS;
}

imgd_status cuda_gemm_lt(cuda_backend *cb, const cuda_lt_args *g, bool *ran, const char *what) {
    lt_ops              o;
    const cuda_lt_pick *p = NULL;
    *ran                  = false;
    cublasStatus_t s      = lt_ops_new(cb, g, &o);
    const char    *call   = o.call;
    if (s == CUBLAS_STATUS_SUCCESS) {
        call = "cublasLtMatmulAlgoGetHeuristic";
        s    = lt_pick(cb, g, &o, &p);
    }
    if (s == CUBLAS_STATUS_SUCCESS && p->pick == PICK_GEMMEX) {
        call = g->batches == 1 ? "cublasGemmEx" : "cublasGemmStridedBatchedEx";
        s    = gemm_ex_args(cb, g, g->D);
        *ran = s == CUBLAS_STATUS_SUCCESS;
    } else if (s == CUBLAS_STATUS_SUCCESS && p->pick != PICK_NONE) {
        call = "cublasLtMatmul";
        s    = lt_run(cb, g, &o, &p->algo, lt_c(g), g->D);
        *ran = s == CUBLAS_STATUS_SUCCESS;
    }
    lt_ops_free(&o);
    return s == CUBLAS_STATUS_SUCCESS ? IMGD_OK : cublas_fail(s, call, what);
}

size_t cuda_gemm_pick_size(void) {
    return sizeof(cuda_lt_pick);
}

bool cuda_gemm_tuned(const cuda_backend *cb) {
    return cb->gemm_sel != CUDA_GEMM_HEURISTIC;
}

void cuda_gemm_stats(const cuda_backend *cb, imgd_cuda_gemm_stats *s) {
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < cb->picks[CUDA_TUNER_GEMM].n; i++) {
        const cuda_lt_pick *p =
            (const cuda_lt_pick *)(cb->picks[CUDA_TUNER_GEMM].items + i * sizeof *p);
        s->shapes++;
        s->timed += p->timed;
        s->lt_first += p->pick == 0;
        s->lt_other += p->pick > 0;
        s->gemm_ex += p->pick == PICK_GEMMEX;
        s->none += p->pick == PICK_NONE;
    }
}
