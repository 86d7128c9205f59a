/* Host stand-ins for the CUDA runtime and cuBLAS calls the cuda backend makes, for the
 * emulated build (tests/cuda_emu/run.sh): device memory is host memory, copies are memcpy,
 * streams are synchronous, and the GEMMs are plain column-major loops that also check
 * cuBLAS's leading-dimension rules. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "formats/dtype.h"

/* ---- runtime -------------------------------------------------------------------------------- */

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    (void)d;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = imgd_malloc(n ? n : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p) {
    imgd_free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k) {
    (void)k;
    if (n) memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k,
                            cudaStream_t st) {
    (void)st;
    return cudaMemcpy(d, s, n, k);
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st) {
    (void)st;
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned f) {
    (void)f;
    *s = (cudaStream_t)(uintptr_t)1;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    return cudaSuccess;
}
const char *cudaGetErrorName(cudaError_t e) {
    return e == cudaSuccess ? "cudaSuccess" : "cudaError(mock)";
}
const char *cudaGetErrorString(cudaError_t e) {
    return cudaGetErrorName(e);
}
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) {
    *f = (size_t)1 << 30;
    *t = (size_t)2 << 30;
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void *fn, enum cudaFuncAttribute a, int v) {
    (void)fn;
    (void)a;
    (void)v;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    (void)d;
    memset(p, 0, sizeof *p);
    (void)snprintf(p->name, sizeof p->name, "emulated");
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags) {
    (void)flags;
    return cudaMalloc(p, n);
}
cudaError_t cudaFreeHost(void *p) {
    return cudaFree(p);
}
/* Streams run synchronously here, so there is nothing to capture: capture is refused and
 * the backend's eager fallback runs (tests/cuda_emu checks that path; replays run on a GPU). */
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode m) {
    (void)s;
    (void)m;
    return cudaErrorStreamCaptureUnsupported;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    (void)s;
    *g = NULL;
    return cudaErrorStreamCaptureInvalidated;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long f) {
    (void)g;
    (void)f;
    *e = NULL;
    return cudaErrorNotSupported;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
    (void)e;
    (void)s;
    return cudaErrorNotSupported;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    (void)e;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    (void)g;
    return cudaSuccess;
}
/* Events: timestamps of the (synchronous) host run. */
#include <time.h>
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t)imgd_calloc(1, sizeof(double));
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    struct timespec ts;
    (void)s;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    *(double *)(void *)e = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
    return cudaSuccess;
}
cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned f) {
    (void)f;
    return cudaEventRecord(e, s);
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)(*(double *)(void *)b - *(double *)(void *)a);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    imgd_free(e);
    return cudaSuccess;
}

/* ---- cuBLAS ---------------------------------------------------------------------------------- */

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = (cublasHandle_t)(uintptr_t)1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    (void)h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    (void)h;
    (void)s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    (void)h;
    (void)m;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *w, size_t n) {
    (void)h;
    (void)w;
    (void)n;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusName(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_(mock)";
}
const char *cublasGetStatusString(cublasStatus_t s) {
    return cublasGetStatusName(s);
}

static float ld(const void *p, cudaDataType_t t, int64_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return t == CUDA_R_16F ? imgd_f16_to_f32(h) : imgd_bf16_to_f32(h);
}

static void st(void *p, cudaDataType_t t, int64_t i, float v) {
    if (t == CUDA_R_32F)
        ((float *)p)[i] = v;
    else
        ((uint16_t *)p)[i] = t == CUDA_R_16F ? imgd_f32_to_f16(v) : imgd_f32_to_bf16(v);
}

static int gemm1(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                 const void *A, cudaDataType_t at, int lda, const void *B, int ldb, float beta,
                 void *C, cudaDataType_t ct, int ldc) {
    int ra = ta == CUBLAS_OP_N ? m : k, rb = tb == CUBLAS_OP_N ? k : n;
    if (lda < (ra > 1 ? ra : 1) || ldb < (rb > 1 ? rb : 1) || ldc < (m > 1 ? m : 1)) {
        fprintf(stderr,
                "mock cuBLAS: bad leading dimension (m %d n %d k %d lda %d ldb %d ldc %d)\n", m, n,
                k, lda, ldb, ldc);
        return 1;
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int p = 0; p < k; p++) {
                float a = ta == CUBLAS_OP_N ? ld(A, at, i + (int64_t)p * lda)
                                            : ld(A, at, p + (int64_t)i * lda);
                float b = tb == CUBLAS_OP_N ? ld(B, at, p + (int64_t)j * ldb)
                                            : ld(B, at, j + (int64_t)p * ldb);
                acc += (double)a * (double)b;
            }
            int64_t ci = i + (int64_t)j * ldc;
            acc *= (double)alpha;
            st(C, ct, ci, (float)(beta == 0.0f ? acc : acc + (double)beta * (double)ld(C, ct, ci)));
        }
    return 0;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType_t at,
                            int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                            void *C, cudaDataType_t ct, int ldc, cublasComputeType_t comp,
                            cublasGemmAlgo_t algo) {
    (void)h;
    (void)algo;
    if ((ct != CUDA_R_32F && ct != at) || comp != CUBLAS_COMPUTE_32F || bt != at)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return gemm1(ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, ldb, *(const float *)beta,
                 C, ct, ldc)
               ? CUBLAS_STATUS_INVALID_VALUE
               : CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t at,
                                          int lda, long long sa, const void *B, cudaDataType_t bt,
                                          int ldb, long long sb, const void *beta, void *C,
                                          cudaDataType_t ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t comp, cublasGemmAlgo_t algo) {
    size_t es = at == CUDA_R_32F ? 4 : 2;
    for (int b = 0; b < batch; b++) {
        cublasStatus_t s =
            cublasGemmEx(h, ta, tb, m, n, k, alpha, (const char *)A + b * sa * es, at, lda,
                         (const char *)B + b * sb * es, bt, ldb, beta,
                         (char *)C + b * sc * (ct == CUDA_R_32F ? 4 : 2), ct, ldc, comp, algo);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}
