/* Host stand-ins for the CUDA runtime and cuBLAS calls the cuda backend makes, for the
 * emulated build (tests/cuda_emu/run.sh): device memory is host memory, copies are memcpy,
 * streams are synchronous, and the GEMMs are plain column-major loops that also check
 * cuBLAS's leading-dimension rules. */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "formats/dtype.h"
#include "mock.h"

/* ---- runtime -------------------------------------------------------------------------------- */

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    (void)d;
    return cudaSuccess;
}
/* Device memory is host memory, 256-byte aligned as cudaMalloc's, behind a header holding
 * the block and the size, so cudaMemGetInfo reports what is allocated (of an 8 GiB device, 4
 * GiB of it free at start: every test_ops configuration's backend holds its cuBLAS workspace,
 * and the tuners want CUDA_TUNE_SPARE left over). */
#define MOCK_ALIGN 256
static size_t g_allocated;

cudaError_t cudaMalloc(void **p, size_t n) {
    unsigned char *b = imgd_malloc(2 * MOCK_ALIGN + (n ? n : 1));
    *p               = NULL;
    if (!b) return cudaErrorMemoryAllocation;
    unsigned char *d = b + MOCK_ALIGN + (MOCK_ALIGN - (uintptr_t)b % MOCK_ALIGN) % MOCK_ALIGN;
    memcpy(d - sizeof b - sizeof n, &b, sizeof b);
    memcpy(d - sizeof n, &n, sizeof n);
    g_allocated += n;
    *p = d;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    unsigned char *d = p, *b = NULL;
    size_t         n = 0;
    memcpy(&b, d - sizeof b - sizeof n, sizeof b);
    memcpy(&n, d - sizeof n, sizeof n);
    g_allocated -= n;
    imgd_free(b);
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
    *t = (size_t)8 << 30;
    *f = g_allocated < ((size_t)4 << 30) ? ((size_t)4 << 30) - g_allocated : 0;
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

/* IMGD_EMU_CC_MAJOR (default 9) as the compute capability, so the sm_80 paths can be
 * checked and turned off */
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d) {
    (void)d;
    const char *cc = getenv("IMGD_EMU_CC_MAJOR");
    *v             = 0;
    if (a == cudaDevAttrComputeCapabilityMajor) *v = cc && *cc ? (int)strtol(cc, NULL, 10) : 9;
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags) {
    (void)flags;
    *p = imgd_malloc(n ? n : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void *p) {
    imgd_free(p);
    return cudaSuccess;
}
/* Streams run synchronously here, so there is nothing to capture: capture is refused and
 * the backend's eager fallback runs (tests/cuda_emu checks that path; replays run on a GPU). */
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode m) {
    (void)s;
    (void)m;
    return cudaErrorStreamCaptureUnsupported;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *st) {
    (void)s;
    *st = cudaStreamCaptureStatusNone;
    return cudaSuccess;
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
/* Events: timestamps of the (synchronous) host run, plus what mock_clock_advance added. */
#include <time.h>
static double g_clock_ahead_ms;
void          mock_clock_advance(double ms) {
             g_clock_ahead_ms += ms;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t)imgd_calloc(1, sizeof(double));
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    struct timespec ts;
    (void)s;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    *(double *)(void *)e = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6 + g_clock_ahead_ms;
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
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    (void)e; /* runs are synchronous */
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    imgd_free(e);
    return cudaSuccess;
}

/* ---- cuBLAS ---------------------------------------------------------------------------------- */

/* CUDA_EMU_SLOW_GEMM=LIST, read when a handle is made: a comma list of ranks in cuBLASLt's
 * heuristic answer (0 its first algorithm) and "gemmex"; those algorithms, and cublasGemmEx,
 * take MOCK_GEMM_SLOW_MS longer on the events' clock, so a timed choice has a known answer. */
#define MOCK_GEMM_SLOW_MS 1e4
#define MOCK_LT_ALGOS     3 /* algorithms the heuristic offers */
#define SLOW_GEMMEX       (1u << 31)

struct cublasContext {
    bool slow;
};
struct cublasLtContext {
    uint32_t slow_ranks;
};

static uint32_t slow_gemm_env(void) {
    const char *s = getenv("CUDA_EMU_SLOW_GEMM");
    uint32_t    m = 0;
    while (s && *s) {
        size_t n = strcspn(s, ",");
        if (n == 6 && strncmp(s, "gemmex", 6) == 0)
            m |= SLOW_GEMMEX;
        else if (n == 1 && *s >= '0' && *s <= '9')
            m |= 1u << (*s - '0');
        s += n + (s[n] == ',');
    }
    return m;
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = imgd_calloc(1, sizeof **h);
    if (!*h) return CUBLAS_STATUS_ALLOC_FAILED;
    (*h)->slow = (slow_gemm_env() & SLOW_GEMMEX) != 0;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    imgd_free(h);
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

float mock_ld(const void *p, cudaDataType_t t, int64_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return t == CUDA_R_16F ? imgd_f16_to_f32(h) : imgd_bf16_to_f32(h);
}

void mock_st(void *p, cudaDataType_t t, int64_t i, float v) {
    if (t == CUDA_R_32F)
        ((float *)p)[i] = v;
    else
        ((uint16_t *)p)[i] = t == CUDA_R_16F ? imgd_f32_to_f16(v) : imgd_f32_to_bf16(v);
}

/* One GEMM as both cuBLAS stand-ins run it: D = alpha op(A) op(B) + beta C (+ bias per row,
 * then cuBLASLt's tanh GELU), column-major, C read and D written with leading dimension ldd
 * (C may be D). op(A) and op(B) are unpacked to f32 rows over k once and accumulated in
 * double. */
typedef struct mock_gemm {
    cublasOperation_t ta, tb;
    int64_t           m, n, k, lda, ldb, ldd;
    const void       *A, *B, *C, *bias;
    void             *D;
    cudaDataType_t    at, ct;
    float             alpha, beta;
    bool              gelu;
} mock_gemm;

/* false when out of host memory */
static bool gemm_run(const mock_gemm *g) {
    const int64_t m = g->m, n = g->n, k = g->k;
    float        *a = imgd_malloc((size_t)(m * k + 1) * sizeof *a);
    float        *b = imgd_malloc((size_t)(n * k + 1) * sizeof *b);
    if (!a || !b) {
        imgd_free(a);
        imgd_free(b);
        return false;
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < k; p++)
            a[i * k + p] =
                mock_ld(g->A, g->at, g->ta == CUBLAS_OP_N ? i + p * g->lda : p + i * g->lda);
    for (int64_t j = 0; j < n; j++)
        for (int64_t p = 0; p < k; p++)
            b[j * k + p] =
                mock_ld(g->B, g->at, g->tb == CUBLAS_OP_N ? p + j * g->ldb : j + p * g->ldb);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            const float *ar = a + i * k, *br = b + j * k;
            double       v = 0;
            for (int64_t p = 0; p < k; p++) v += (double)ar[p] * (double)br[p];
            int64_t ci = i + j * g->ldd;
            v *= (double)g->alpha;
            if (g->beta != 0.0f) v += (double)g->beta * (double)mock_ld(g->C, g->ct, ci);
            if (g->bias) v += (double)mock_ld(g->bias, g->ct, i);
            if (g->gelu) /* cuBLASLt's GELU: the tanh approximation */
                v = 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            mock_st(g->D, g->ct, ci, (float)v);
        }
    imgd_free(a);
    imgd_free(b);
    return true;
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
    const mock_gemm g = {.ta    = ta,
                         .tb    = tb,
                         .m     = m,
                         .n     = n,
                         .k     = k,
                         .lda   = lda,
                         .ldb   = ldb,
                         .ldd   = ldc,
                         .A     = A,
                         .B     = B,
                         .C     = C,
                         .D     = C,
                         .at    = at,
                         .ct    = ct,
                         .alpha = alpha,
                         .beta  = beta};
    if (!gemm_run(&g)) {
        fprintf(stderr, "mock cuBLAS: out of host memory\n");
        return 1;
    }
    return 0;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType_t at,
                            int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                            void *C, cudaDataType_t ct, int ldc, cublasComputeType_t comp,
                            cublasGemmAlgo_t algo) {
    (void)algo;
    if ((ct != CUDA_R_32F && ct != at) || comp != CUBLAS_COMPUTE_32F || bt != at)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (h->slow) mock_clock_advance(MOCK_GEMM_SLOW_MS);
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

/* ---- cuBLASLt ---------------------------------------------------------------------------------
 * Descriptors keep their attributes in the opaque words; the matmul checks the pointers against
 * the alignments the preference declared (a real kernel chosen for them would fault or
 * misread), and the bias type against cuBLASLt's rule (the type of D). */

enum {
    LD_TYPE,
    LD_ROWS,
    LD_COLS,
    LD_LD,
    LD_BATCH,
    LD_STRIDE
};
enum {
    MD_TA,
    MD_TB,
    MD_EPI,
    MD_BIAS,
    MD_BIAS_T
};
enum {
    PF_WS,
    PF_AL_A,
    PF_AL_B,
    PF_AL_C,
    PF_AL_D
};

size_t cublasLtGetVersion(void) {
    return 130000;
}
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = imgd_calloc(1, sizeof **h);
    if (!*h) return CUBLAS_STATUS_ALLOC_FAILED;
    (*h)->slow_ranks = slow_gemm_env() & ~SLOW_GEMMEX;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    imgd_free(h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    *l = imgd_calloc(1, sizeof **l);
    if (!*l) return CUBLAS_STATUS_ALLOC_FAILED;
    (*l)->data[LD_TYPE]  = (uint64_t)t;
    (*l)->data[LD_ROWS]  = rows;
    (*l)->data[LD_COLS]  = cols;
    (*l)->data[LD_LD]    = (uint64_t)ld;
    (*l)->data[LD_BATCH] = 1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t          l,
                                                cublasLtMatrixLayoutAttribute_t a, const void *v,
                                                size_t n) {
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && n == sizeof(int32_t)) {
        int32_t c;
        memcpy(&c, v, n);
        l->data[LD_BATCH] = (uint64_t)c;
    } else if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && n == sizeof(int64_t)) {
        memcpy(&l->data[LD_STRIDE], v, n);
    } else {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    imgd_free(l);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c,
                                        cudaDataType_t scale) {
    if (c != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = imgd_calloc(1, sizeof **d);
    if (!*d) return CUBLAS_STATUS_ALLOC_FAILED;
    (*d)->data[MD_EPI]    = CUBLASLT_EPILOGUE_DEFAULT;
    (*d)->data[MD_BIAS_T] = (uint64_t)-1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t           d,
                                              cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n) {
    int32_t i32 = 0;
    if (n == sizeof i32) memcpy(&i32, v, n);
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: d->data[MD_TA] = (uint64_t)i32; break;
    case CUBLASLT_MATMUL_DESC_TRANSB: d->data[MD_TB] = (uint64_t)i32; break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: d->data[MD_EPI] = (uint64_t)i32; break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: d->data[MD_BIAS_T] = (uint64_t)(int64_t)i32; break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (n != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->data[MD_BIAS], v, n);
        break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
    return n == sizeof i32 || a == CUBLASLT_MATMUL_DESC_BIAS_POINTER ? CUBLAS_STATUS_SUCCESS
                                                                     : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    imgd_free(d);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = imgd_calloc(1, sizeof **p);
    if (!*p) return CUBLAS_STATUS_ALLOC_FAILED;
    for (int i = PF_AL_A; i <= PF_AL_D; i++) (*p)->data[i] = 256;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t           p,
                                                    cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *v, size_t n) {
    uint32_t u32 = 0;
    switch (a) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        if (n != sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&p->data[PF_WS], v, n);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
        if (n != sizeof u32) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&u32, v, n);
        p->data[PF_AL_A + (a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES)] = u32;
        return CUBLAS_STATUS_SUCCESS;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    imgd_free(p);
    return CUBLAS_STATUS_SUCCESS;
}

/* MOCK_LT_ALGOS "algorithms" (as many as asked for), each remembering the alignments it was
 * chosen for (its first four words) and its rank (the fifth). */
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl,
                                              cublasLtMatmulPreference_t p, int req,
                                              cublasLtMatmulHeuristicResult_t *res, int *n_res) {
    (void)h;
    (void)a;
    (void)b;
    (void)c;
    *n_res = 0;
    if (req < 1) return CUBLAS_STATUS_INVALID_VALUE;
    /* the documented bias type: D's (default -1 means D's) */
    if (d->data[MD_BIAS_T] != (uint64_t)-1 && d->data[MD_BIAS_T] != dl->data[LD_TYPE])
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->data[MD_EPI] != CUBLASLT_EPILOGUE_DEFAULT && d->data[MD_EPI] != CUBLASLT_EPILOGUE_BIAS &&
        d->data[MD_EPI] != CUBLASLT_EPILOGUE_GELU && d->data[MD_EPI] != CUBLASLT_EPILOGUE_GELU_BIAS)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    for (int r = 0; r < req && r < MOCK_LT_ALGOS; r++) {
        memset(&res[r], 0, sizeof res[r]);
        for (int i = 0; i < 4; i++) res[r].algo.data[i] = p->data[PF_AL_A + i];
        res[r].algo.data[4] = (uint64_t)r;
        res[r].state        = CUBLAS_STATUS_SUCCESS;
        *n_res              = r + 1;
    }
    return CUBLAS_STATUS_SUCCESS;
}

static bool aligned(const void *ptr, uint64_t al) {
    return al == 0 || (uintptr_t)ptr % al == 0;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t la, const void *B,
                              cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                              cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ldl,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes,
                              cudaStream_t s) {
    (void)ws;
    (void)ws_bytes;
    (void)s;
    if (algo->data[4] < 32 && (h->slow_ranks >> algo->data[4]) & 1u)
        mock_clock_advance(MOCK_GEMM_SLOW_MS);
    if (!aligned(A, algo->data[0]) || !aligned(B, algo->data[1]) || !aligned(C, algo->data[2]) ||
        !aligned(D, algo->data[3])) {
        fprintf(stderr, "mock cuBLASLt: a pointer is less aligned than the preference said\n");
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    if (lc != ldl) return CUBLAS_STATUS_NOT_SUPPORTED; /* what the backend uses */
    cublasOperation_t ta = (cublasOperation_t)d->data[MD_TA],
                      tb = (cublasOperation_t)d->data[MD_TB];
    cudaDataType_t at = (cudaDataType_t)la->data[LD_TYPE], ct = (cudaDataType_t)ldl->data[LD_TYPE];
    int64_t        m = (int64_t)ldl->data[LD_ROWS], n = (int64_t)ldl->data[LD_COLS];
    int64_t        k       = (int64_t)(ta == CUBLAS_OP_N ? la->data[LD_COLS] : la->data[LD_ROWS]);
    int64_t        batches = (int64_t)ldl->data[LD_BATCH];
    if ((int64_t)(ta == CUBLAS_OP_N ? la->data[LD_ROWS] : la->data[LD_COLS]) != m ||
        (int64_t)(tb == CUBLAS_OP_N ? lb->data[LD_ROWS] : lb->data[LD_COLS]) != k ||
        (int64_t)(tb == CUBLAS_OP_N ? lb->data[LD_COLS] : lb->data[LD_ROWS]) != n ||
        la->data[LD_BATCH] != (uint64_t)batches || lb->data[LD_BATCH] != (uint64_t)batches ||
        (cudaDataType_t)lb->data[LD_TYPE] != at) {
        fprintf(stderr, "mock cuBLASLt: layouts disagree (m %lld n %lld k %lld)\n", (long long)m,
                (long long)n, (long long)k);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const void *bias = NULL;
    memcpy(&bias, &d->data[MD_BIAS], sizeof bias);
    uint64_t epi       = d->data[MD_EPI];
    bool     with_bias = epi == CUBLASLT_EPILOGUE_BIAS || epi == CUBLASLT_EPILOGUE_GELU_BIAS;
    bool     gelu      = epi == CUBLASLT_EPILOGUE_GELU || epi == CUBLASLT_EPILOGUE_GELU_BIAS;
    size_t   es = at == CUDA_R_32F ? 4 : 2, cs = ct == CUDA_R_32F ? 4 : 2;
    for (int64_t bt = 0; bt < batches; bt++) {
        const int64_t   st_a = (int64_t)la->data[LD_STRIDE], st_b = (int64_t)lb->data[LD_STRIDE];
        const int64_t   st_d = (int64_t)ldl->data[LD_STRIDE];
        const mock_gemm g    = {.ta    = ta,
                                .tb    = tb,
                                .m     = m,
                                .n     = n,
                                .k     = k,
                                .lda   = (int64_t)la->data[LD_LD],
                                .ldb   = (int64_t)lb->data[LD_LD],
                                .ldd   = (int64_t)ldl->data[LD_LD],
                                .A     = (const char *)A + bt * st_a * (int64_t)es,
                                .B     = (const char *)B + bt * st_b * (int64_t)es,
                                .C     = (const char *)C + bt * st_d * (int64_t)cs,
                                .bias  = with_bias ? bias : NULL,
                                .D     = (char *)D + bt * st_d * (int64_t)cs,
                                .at    = at,
                                .ct    = ct,
                                .alpha = *(const float *)alpha,
                                .beta  = *(const float *)beta,
                                .gelu  = gelu};
        if (!gemm_run(&g)) return CUBLAS_STATUS_ALLOC_FAILED;
    }
    return CUBLAS_STATUS_SUCCESS;
}
