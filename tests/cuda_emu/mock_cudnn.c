/* Host stand-ins for the cuDNN calls the cuda backend makes (legacy convolution API), for the
 * emulated build (tests/cuda_emu/run.sh). The convolution is a direct loop with f32
 * accumulation over NCHW or NHWC tensors (4d descriptors, plain or with explicit strides) and
 * NCHW / NHWC (KRSC) filters, blended as y = alpha * conv + beta * y. It checks what cuDNN
 * checks (matching data types, channel counts and output dims, workspace size) and writes a
 * NaN pattern over the workspace it is given, so a workspace that overlaps an operand or the
 * output shows up as a wrong result. The algorithm lists offer a tensor-op algorithm first
 * (TF32 in f32, which the backend must refuse) so the choice logic runs as on a GPU. */
#include <cudnn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "mock.h"

struct cudnnContext {
    cudaStream_t stream;
};
struct cudnnTensorStruct {
    cudnnDataType_t dt;
    int             n, c, h, w;
    int             sn, sc, sh, sw; /* element strides */
    bool            set;
};
struct cudnnFilterStruct {
    cudnnDataType_t     dt;
    cudnnTensorFormat_t fmt;
    int                 k, c, h, w;
    bool                set;
};
struct cudnnConvolutionStruct {
    int             ph, pw, u, v, dh, dw;
    cudnnMathType_t math;
    bool            set;
};

#define MOCK_WS_PRECOMP 4096 /* workspace the tensor-op algorithm asks for */
#define MOCK_WS_GEMM    2048 /* and the explicit-GEMM one */

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    *h = imgd_calloc(1, sizeof **h);
    return *h ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    imgd_free(h);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}
size_t cudnnGetVersion(void) {
    return 90000;
}
const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
    default: return "CUDNN_STATUS (mock)";
    }
}

/* ---- descriptors ---------------------------------------------------------------------------- */

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    *d = imgd_calloc(1, sizeof **d);
    return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    imgd_free(d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    *d = imgd_calloc(1, sizeof **d);
    return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    imgd_free(d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    *d = imgd_calloc(1, sizeof **d);
    return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    imgd_free(d);
    return CUDNN_STATUS_SUCCESS;
}

static bool dt_ok(cudnnDataType_t dt) {
    return dt == CUDNN_DATA_FLOAT || dt == CUDNN_DATA_HALF || dt == CUDNN_DATA_BFLOAT16;
}

cudnnStatus_t cudnnSetTensor4dDescriptorEx(cudnnTensorDescriptor_t d, cudnnDataType_t dt, int n,
                                           int c, int h, int w, int sn, int sc, int sh, int sw) {
    if (!dt_ok(dt) || n <= 0 || c <= 0 || h <= 0 || w <= 0 || sn <= 0 || sc <= 0 || sh <= 0 ||
        sw <= 0)
        return CUDNN_STATUS_BAD_PARAM;
    *d = (struct cudnnTensorStruct){dt, n, c, h, w, sn, sc, sh, sw, true};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t fmt,
                                         cudnnDataType_t dt, int n, int c, int h, int w) {
    if (fmt == CUDNN_TENSOR_NCHW)
        return cudnnSetTensor4dDescriptorEx(d, dt, n, c, h, w, c * h * w, h * w, w, 1);
    if (fmt == CUDNN_TENSOR_NHWC)
        return cudnnSetTensor4dDescriptorEx(d, dt, n, c, h, w, h * w * c, 1, w * c, c);
    return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t dt,
                                         cudnnTensorFormat_t fmt, int k, int c, int h, int w) {
    if (!dt_ok(dt) || k <= 0 || c <= 0 || h <= 0 || w <= 0 ||
        (fmt != CUDNN_TENSOR_NCHW && fmt != CUDNN_TENSOR_NHWC))
        return CUDNN_STATUS_BAD_PARAM;
    *d = (struct cudnnFilterStruct){dt, fmt, k, c, h, w, true};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw, int u,
                                              int v, int dh, int dw, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
    if (ph < 0 || pw < 0 || u <= 0 || v <= 0 || dh <= 0 || dw <= 0 ||
        mode != CUDNN_CROSS_CORRELATION || compute != CUDNN_DATA_FLOAT)
        return CUDNN_STATUS_BAD_PARAM;
    d->ph  = ph;
    d->pw  = pw;
    d->u   = u;
    d->v   = v;
    d->dh  = dh;
    d->dw  = dw;
    d->set = true;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t cd,
                                                    const cudnnTensorDescriptor_t      x,
                                                    const cudnnFilterDescriptor_t w, int *n, int *c,
                                                    int *h, int *wo) {
    if (!cd->set || !x->set || !w->set || x->c != w->c) return CUDNN_STATUS_BAD_PARAM;
    *n  = x->n;
    *c  = w->k;
    *h  = (x->h + 2 * cd->ph - (cd->dh * (w->h - 1) + 1)) / cd->u + 1;
    *wo = (x->w + 2 * cd->pw - (cd->dw * (w->w - 1) + 1)) / cd->v + 1;
    return *h > 0 && *wo > 0 ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM;
}

/* ---- algorithms ----------------------------------------------------------------------------- */

static size_t algo_ws(cudnnConvolutionFwdAlgo_t a) {
    return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ? MOCK_WS_PRECOMP
           : a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM                ? MOCK_WS_GEMM
                                                                 : 0;
}

/* The problem as cuDNN would check it before offering or running anything. */
static cudnnStatus_t check(const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                           const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t y) {
    int n = 0, c = 0, h = 0, wo = 0;
    if (!y->set) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t s = cudnnGetConvolution2dForwardOutputDim(cd, x, w, &n, &c, &h, &wo);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (n != y->n || c != y->c || h != y->h || wo != y->w) return CUDNN_STATUS_BAD_PARAM;
    if (x->dt != w->dt || x->dt != y->dt) return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t algos(const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                           const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t y,
                           int want, int *got, cudnnConvolutionFwdAlgoPerf_t *perf) {
    cudnnStatus_t s = check(x, w, cd, y);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    bool                      half = x->dt != CUDNN_DATA_FLOAT;
    cudnnConvolutionFwdAlgo_t a[3] = {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                                      CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
                                      CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM};
    cudnnMathType_t m[3] = {half ? CUDNN_TENSOR_OP_MATH : CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
                            half ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH,
                            half ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH};
    *got = 0;
    for (int i = 0; i < 3 && *got < want; i++) {
        cudnnConvolutionFwdAlgoPerf_t *p = &perf[(*got)++];
        memset(p, 0, sizeof *p);
        p->algo     = a[i];
        p->status   = CUDNN_STATUS_SUCCESS;
        p->time     = (float)(i + 1);
        p->memory   = algo_ws(a[i]);
        p->mathType = m[i];
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t                      h,
                                                     const cudnnTensorDescriptor_t      x,
                                                     const cudnnFilterDescriptor_t      w,
                                                     const cudnnConvolutionDescriptor_t cd,
                                                     const cudnnTensorDescriptor_t y, int want,
                                                     int *got, cudnnConvolutionFwdAlgoPerf_t *p) {
    (void)h;
    return algos(x, w, cd, y, want, got, p);
}

/* Timing changes nothing here: the same list as the heuristic. */
cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                   const cudnnFilterDescriptor_t      w,
                                                   const cudnnConvolutionDescriptor_t cd,
                                                   const cudnnTensorDescriptor_t y, int want,
                                                   int *got, cudnnConvolutionFwdAlgoPerf_t *p) {
    return cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, cd, y, want, got, p);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t                      h,
                                                      const cudnnTensorDescriptor_t      x,
                                                      const cudnnFilterDescriptor_t      w,
                                                      const cudnnConvolutionDescriptor_t cd,
                                                      const cudnnTensorDescriptor_t      y,
                                                      cudnnConvolutionFwdAlgo_t a, size_t *sz) {
    (void)h;
    cudnnStatus_t s = check(x, w, cd, y);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    *sz = algo_ws(a);
    return CUDNN_STATUS_SUCCESS;
}

/* ---- forward -------------------------------------------------------------------------------- */

static cudaDataType_t cuda_type(cudnnDataType_t t) {
    return t == CUDNN_DATA_FLOAT ? CUDA_R_32F : t == CUDNN_DATA_HALF ? CUDA_R_16F : CUDA_R_16BF;
}

/* Element offset of filter element (k, c, r, s). */
static int64_t w_at(const cudnnFilterDescriptor_t w, int k, int c, int r, int s) {
    if (w->fmt == CUDNN_TENSOR_NHWC) return (((int64_t)k * w->h + r) * w->w + s) * w->c + c;
    return (((int64_t)k * w->c + c) * w->h + r) * w->w + s;
}

static int64_t t_at(const cudnnTensorDescriptor_t t, int n, int c, int h, int w) {
    return (int64_t)n * t->sn + (int64_t)c * t->sc + (int64_t)h * t->sh + (int64_t)w * t->sw;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      const cudnnTensorDescriptor_t xd, const void *x,
                                      const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cd,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes,
                                      const void *beta, const cudnnTensorDescriptor_t yd, void *y) {
    (void)h;
    cudnnStatus_t s = check(xd, wd, cd, yd);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    size_t need = algo_ws(algo);
    if (ws_bytes < need || (need && !ws) || !x || !w || !y) return CUDNN_STATUS_BAD_PARAM;
    if (need) memset(ws, 0xff, need); /* NaN in every float type */
    float a = *(const float *)alpha, b = *(const float *)beta;
    for (int n = 0; n < yd->n; n++)
        for (int k = 0; k < yd->c; k++)
            for (int oy = 0; oy < yd->h; oy++)
                for (int ox = 0; ox < yd->w; ox++) {
                    float acc = 0.0f;
                    for (int c = 0; c < wd->c; c++)
                        for (int r = 0; r < wd->h; r++) {
                            int iy = oy * cd->u - cd->ph + r * cd->dh;
                            if (iy < 0 || iy >= xd->h) continue;
                            for (int q = 0; q < wd->w; q++) {
                                int ix = ox * cd->v - cd->pw + q * cd->dw;
                                if (ix < 0 || ix >= xd->w) continue;
                                acc += mock_ld(x, cuda_type(xd->dt), t_at(xd, n, c, iy, ix)) *
                                       mock_ld(w, cuda_type(wd->dt), w_at(wd, k, c, r, q));
                            }
                        }
                    int64_t o = t_at(yd, n, k, oy, ox);
                    float   v = a * acc;
                    if (b != 0.0f) v += b * mock_ld(y, cuda_type(yd->dt), o);
                    mock_st(y, cuda_type(yd->dt), o, v);
                }
    return CUDNN_STATUS_SUCCESS;
}
