/* The cuBLASLt fp16 GEMM throughput probe the bench compares the UNet's TFLOP/s against:
 * fp16 inputs and output, f32 accumulation, the heuristic's first algorithm, timed with
 * CUDA events on the default stream. */
#include <cublasLt.h>

#include "base/error.h"
#include "cuda_impl.h"
#include "tensor/cuda/cuda.h"

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
