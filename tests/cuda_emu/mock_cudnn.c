/* Host stand-ins for the cuDNN calls the cuda backend makes (legacy convolution API), for the
 * emulated build (tests/cuda_emu/run.sh). The convolution is a direct loop with f32
 * accumulation over NCHW or NHWC tensors (4d descriptors, plain or with explicit strides) and
 * NCHW / NHWC (KRSC) filters, blended as y = alpha * conv + beta * y. It checks what cuDNN
 * checks (matching data types, channel counts and output dims, workspace size) and writes a
 * NaN pattern over the workspace it is given, so a workspace that overlaps an operand or the
 * output shows up as a wrong result. The algorithm lists offer a tensor-op algorithm first
 * (TF32 in f32, which the backend must refuse) so the choice logic runs as on a GPU. The
 * backend (graph) API part answers the fused SDPA operation (below). */
#include <cudnn.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "mock.h"

struct cudnnContext {
    cudaStream_t stream;
    int          slow_fmt; /* CUDA_EMU_SLOW_CONV=nchw|nhwc when the handle is made: convolutions
                              with filters in that layout take MOCK_SLOW_MS longer on the
                              events' clock, so the backend's layout tuner has a known answer
                              (the host runs the transposes of NHWC slower); -1: none */
    unsigned slow_engines; /* CUDA_EMU_SLOW_ENGINE=list of k and "legacy": graph convolutions
                              run by engine k (bit k), and legacy ones (bit 8), take
                              MOCK_SLOW_MS longer (the tuner must avoid them) */
    bool no_conv_graph;    /* CUDA_EMU_CONV_GRAPH=0: no engine for a convolution graph */
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
#define MOCK_SLOW_MS    1e4  /* a CUDA_EMU_SLOW_CONV convolution's time on the events' clock */
#define MOCK_WS_GEMM    2048 /* and the explicit-GEMM one */

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    *h = imgd_calloc(1, sizeof **h);
    if (!*h) return CUDNN_STATUS_ALLOC_FAILED;
    const char *slow = getenv("CUDA_EMU_SLOW_CONV");
    (*h)->slow_fmt   = !slow                       ? -1
                       : strcmp(slow, "nchw") == 0 ? (int)CUDNN_TENSOR_NCHW
                       : strcmp(slow, "nhwc") == 0 ? (int)CUDNN_TENSOR_NHWC
                                                   : -1;
    const char *eng  = getenv("CUDA_EMU_SLOW_ENGINE");
    for (const char *c = eng; c && *c; c += strcspn(c, ",") + (c[strcspn(c, ",")] ? 1 : 0))
        (*h)->slow_engines |=
            strncmp(c, "legacy", 6) == 0 ? 1u << 8 : 1u << (strtol(c, NULL, 10) & 7);
    const char *cg      = getenv("CUDA_EMU_CONV_GRAPH");
    (*h)->no_conv_graph = cg && strcmp(cg, "0") == 0;
    return CUDNN_STATUS_SUCCESS;
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

/* One 2-D convolution through its tensors' element strides: x (n, c, h, w), the filter
 * (k, c, r, s), y (n, k, oh, ow), all of type dt. */
typedef struct mock_geom {
    int64_t        n, c, h, w, k, r, s, oh, ow;
    int64_t        xs[4], ws[4], ys[4];
    int64_t        pad[2], str[2], dil[2];
    cudaDataType_t dt;
} mock_geom;

/* Strided elements of a 4-d tensor into a dense f32 array in (a, b, c, d) order. */
static void unpack4(float *dst, const void *src, cudaDataType_t dt, const int64_t dims[4],
                    const int64_t st[4]) {
    for (int64_t a = 0; a < dims[0]; a++)
        for (int64_t b = 0; b < dims[1]; b++)
            for (int64_t c = 0; c < dims[2]; c++)
                for (int64_t d = 0; d < dims[3]; d++)
                    *dst++ = mock_ld(src, dt, a * st[0] + b * st[1] + c * st[2] + d * st[3]);
}

/* y = alpha * conv(x, w) + beta * y (beta 0: y not read), f32 accumulation over operands
 * unpacked to f32 once; nan_out writes NaN instead (a broken engine). */
static cudnnStatus_t direct_conv(const mock_geom *g, const void *x, const void *w, void *y,
                                 float alpha, float beta, bool nan_out) {
    const int64_t xd[4] = {g->n, g->c, g->h, g->w}, wd[4] = {g->k, g->c, g->r, g->s};
    float        *xf = imgd_malloc((size_t)(g->n * g->c * g->h * g->w) * sizeof *xf);
    float        *wf = imgd_malloc((size_t)(g->k * g->c * g->r * g->s) * sizeof *wf);
    if (!xf || !wf) {
        imgd_free(xf);
        imgd_free(wf);
        return CUDNN_STATUS_ALLOC_FAILED;
    }
    unpack4(xf, x, g->dt, xd, g->xs);
    unpack4(wf, w, g->dt, wd, g->ws);
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t k = 0; k < g->k; k++)
            for (int64_t oy = 0; oy < g->oh; oy++)
                for (int64_t ox = 0; ox < g->ow; ox++) {
                    float acc = 0.0f;
                    for (int64_t c = 0; c < g->c; c++) {
                        const float *xc = xf + (n * g->c + c) * g->h * g->w;
                        const float *wc = wf + (k * g->c + c) * g->r * g->s;
                        for (int64_t r = 0; r < g->r; r++) {
                            int64_t iy = oy * g->str[0] - g->pad[0] + r * g->dil[0];
                            if (iy < 0 || iy >= g->h) continue;
                            for (int64_t q = 0; q < g->s; q++) {
                                int64_t ix = ox * g->str[1] - g->pad[1] + q * g->dil[1];
                                if (ix < 0 || ix >= g->w) continue;
                                acc += xc[iy * g->w + ix] * wc[r * g->s + q];
                            }
                        }
                    }
                    int64_t o = n * g->ys[0] + k * g->ys[1] + oy * g->ys[2] + ox * g->ys[3];
                    float   v = alpha * acc;
                    if (beta != 0.0f) v += beta * mock_ld(y, g->dt, o);
                    mock_st(y, g->dt, o, nan_out ? NAN : v);
                }
    imgd_free(xf);
    imgd_free(wf);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      const cudnnTensorDescriptor_t xd, const void *x,
                                      const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cd,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes,
                                      const void *beta, const cudnnTensorDescriptor_t yd, void *y) {
    cudnnStatus_t s = check(xd, wd, cd, yd);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if ((int)wd->fmt == h->slow_fmt || (h->slow_engines & (1u << 8)))
        mock_clock_advance(MOCK_SLOW_MS);
    size_t need = algo_ws(algo);
    if (ws_bytes < need || (need && !ws) || !x || !w || !y) return CUDNN_STATUS_BAD_PARAM;
    if (need) memset(ws, 0xff, need); /* NaN in every float type */
    bool      krsc = wd->fmt == CUDNN_TENSOR_NHWC;
    mock_geom g    = {
           .n   = xd->n,
           .c   = xd->c,
           .h   = xd->h,
           .w   = xd->w,
           .k   = wd->k,
           .r   = wd->h,
           .s   = wd->w,
           .oh  = yd->h,
           .ow  = yd->w,
           .xs  = {xd->sn, xd->sc, xd->sh, xd->sw},
           .ws  = {(int64_t)wd->c * wd->h * wd->w, krsc ? 1 : (int64_t)wd->h * wd->w,
               krsc ? (int64_t)wd->w * wd->c : wd->w, krsc ? wd->c : 1},
           .ys  = {yd->sn, yd->sc, yd->sh, yd->sw},
           .pad = {cd->ph, cd->pw},
           .str = {cd->u, cd->v},
           .dil = {cd->dh, cd->dw},
           .dt  = cuda_type(xd->dt),
    };
    return direct_conv(&g, x, w, y, *(const float *)alpha, *(const float *)beta, false);
}

/* ---- the backend (graph) API: the fused SDPA operation and the convolution ---------------- */

/* A backend descriptor: its type, the attributes set on it (copied), finalized or not. The
 * operation graph may hold one SDPA_FWD or one CONVOLUTION_FORWARD operation. For SDPA the
 * heuristics offer one engine configuration, whose plan asks for MOCK_WS_SDPA bytes of
 * workspace; execution computes softmax(scale Q K^T) V per (batch, head) in f32 from the variant
 * pack's pointers (tensors [B, H, L, D] through their strides, f16 or bf16). For a convolution
 * they offer MOCK_CONV_ENGINES configurations with different workspaces (none with
 * CUDA_EMU_CONV_GRAPH=0), engine 1 a runtime-compiled one (a behaviour note) that writes NaN,
 * so a backend that takes it fails; execution is the direct loop of the legacy API through the
 * three tensors' strides, and an engine CUDA_EMU_SLOW_ENGINE names, or a filter in layout
 * CUDA_EMU_SLOW_CONV, takes MOCK_SLOW_MS longer on the events' clock. Workspaces are NaN-filled
 * when executed. Setting an attribute on a finalized descriptor, a missing or inconsistent
 * attribute, a variant pack without a tensor's uid: CUDNN_STATUS_BAD_PARAM, as cuDNN. */
#define MOCK_ATTRS        16
#define MOCK_WS_SDPA      1024
#define MOCK_CONV_ENGINES 4
#define MOCK_CONV_RTC     1

typedef struct mock_attr {
    cudnnBackendAttributeName_t name;
    cudnnBackendAttributeType_t type;
    int64_t                     n;
    unsigned char              *data;
} mock_attr;

typedef struct mock_bdesc {
    cudnnBackendDescriptorType_t type;
    mock_attr                    attrs[MOCK_ATTRS];
    int                          n_attrs;
    bool                         final;
    struct mock_bdesc           *graph; /* engine configuration, plan: its operation graph */
    int                          eng;   /* ... and its engine (a convolution's: 0 to 3) */
} mock_bdesc;

/* Workspace bytes of convolution engine e. */
static int64_t conv_engine_ws(int e) {
    return e == 0 ? 4096 : e == 3 ? 2048 : 0;
}

static size_t attr_size(cudnnBackendAttributeType_t t) {
    switch (t) {
    case CUDNN_TYPE_HANDLE: return sizeof(cudnnHandle_t);
    case CUDNN_TYPE_DATA_TYPE: return sizeof(cudnnDataType_t);
    case CUDNN_TYPE_BOOLEAN: return sizeof(bool);
    case CUDNN_TYPE_INT64: return sizeof(int64_t);
    case CUDNN_TYPE_FLOAT: return sizeof(float);
    case CUDNN_TYPE_VOID_PTR: return sizeof(void *);
    case CUDNN_TYPE_HEUR_MODE: return sizeof(cudnnBackendHeurMode_t);
    case CUDNN_TYPE_CONVOLUTION_MODE: return sizeof(cudnnConvolutionMode_t);
    case CUDNN_TYPE_BEHAVIOR_NOTE: return sizeof(cudnnBackendBehaviorNote_t);
    case CUDNN_TYPE_BACKEND_DESCRIPTOR: return sizeof(cudnnBackendDescriptor_t);
    default: return 0;
    }
}

static const mock_attr *attr(const mock_bdesc *d, cudnnBackendAttributeName_t name,
                             cudnnBackendAttributeType_t type) {
    for (int i = 0; i < d->n_attrs; i++)
        if (d->attrs[i].name == name) return d->attrs[i].type == type ? &d->attrs[i] : NULL;
    return NULL;
}

/* The single descriptor of attribute name, finalized and of type want, or NULL. */
static mock_bdesc *attr_desc(const mock_bdesc *d, cudnnBackendAttributeName_t name,
                             cudnnBackendDescriptorType_t want) {
    const mock_attr *a = attr(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR);
    if (!a || a->n != 1) return NULL;
    mock_bdesc *v;
    memcpy(&v, a->data, sizeof v);
    return v && v->final && v->type == want ? v : NULL;
}

static bool attr_i64(const mock_bdesc *d, cudnnBackendAttributeName_t name, int64_t n,
                     int64_t *out) {
    const mock_attr *a = attr(d, name, CUDNN_TYPE_INT64);
    if (!a || a->n != n) return false;
    memcpy(out, a->data, (size_t)n * sizeof *out);
    return true;
}

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t t,
                                           cudnnBackendDescriptor_t    *out) {
    switch (t) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR:
    case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR:
    case CUDNN_BACKEND_ENGINE_DESCRIPTOR:
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR:
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: break;
    default: return CUDNN_STATUS_NOT_SUPPORTED;
    }
    mock_bdesc *d = imgd_calloc(1, sizeof *d);
    if (!d) return CUDNN_STATUS_ALLOC_FAILED;
    d->type = t;
    *out    = d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t desc) {
    mock_bdesc *d = desc;
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    for (int i = 0; i < d->n_attrs; i++) imgd_free(d->attrs[i].data);
    imgd_free(d);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t    desc,
                                       cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t n,
                                       const void *values) {
    mock_bdesc *d  = desc;
    size_t      es = attr_size(type);
    if (!d || d->final || !es || n < 1 || !values) return CUDNN_STATUS_BAD_PARAM;
    mock_attr *a = NULL;
    for (int i = 0; i < d->n_attrs && !a; i++)
        if (d->attrs[i].name == name) a = &d->attrs[i];
    if (!a) {
        if (d->n_attrs == MOCK_ATTRS) return CUDNN_STATUS_BAD_PARAM;
        a = &d->attrs[d->n_attrs++];
    }
    unsigned char *copy = imgd_malloc((size_t)n * es);
    if (!copy) return CUDNN_STATUS_ALLOC_FAILED;
    memcpy(copy, values, (size_t)n * es);
    imgd_free(a->data);
    *a = (mock_attr){name, type, n, copy};
    return CUDNN_STATUS_SUCCESS;
}

/* A finalized [b, h, s, d] tensor of the SDPA operation: dims, strides, dtype and uid. */
typedef struct mock_t {
    int64_t         dims[4], strides[4], uid;
    cudnnDataType_t dt;
    bool            by_value;
} mock_t;

static bool op_tensor(const mock_bdesc *op, cudnnBackendAttributeName_t name, mock_t *t) {
    const mock_bdesc *d = attr_desc(op, name, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const mock_attr  *dt;
    if (!d || !attr_i64(d, CUDNN_ATTR_TENSOR_DIMENSIONS, 4, t->dims) ||
        !attr_i64(d, CUDNN_ATTR_TENSOR_STRIDES, 4, t->strides) ||
        !attr_i64(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, 1, &t->uid) ||
        !(dt = attr(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE)))
        return false;
    memcpy(&t->dt, dt->data, sizeof t->dt);
    const mock_attr *bv = attr(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN);
    t->by_value         = bv && bv->data[0];
    return true;
}

/* Q, K, V, O, scale of a finalized-to-be SDPA operation, checked as cuDNN would. */
static bool sdpa_tensors(const mock_bdesc *op, mock_t t[5]) {
    static const cudnnBackendAttributeName_t names[5] = {
        CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC,
        CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC,
        CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC};
    for (int i = 0; i < 5; i++)
        if (!op_tensor(op, names[i], &t[i])) return false;
    const int64_t *q = t[0].dims, *k = t[1].dims, *v = t[2].dims, *o = t[3].dims;
    for (int i = 0; i < 4; i++) {
        if ((t[i].dt != CUDNN_DATA_HALF && t[i].dt != CUDNN_DATA_BFLOAT16) || t[i].dt != t[0].dt ||
            t[i].by_value || t[i].strides[3] != 1)
            return false;
        for (int j = 0; j < i; j++)
            if (t[i].uid == t[j].uid) return false;
    }
    if (memcmp(q, o, sizeof t[0].dims) != 0 || memcmp(k, v, sizeof t[0].dims) != 0 ||
        k[0] != q[0] || k[1] != q[1] || k[3] != q[3] || q[3] % 8)
        return false;
    return t[4].by_value && t[4].dt == CUDNN_DATA_FLOAT;
}

/* A convolution: x, w, y and the descriptor's paddings, strides and dilations. */
typedef struct mock_conv {
    mock_t  t[3];
    int64_t pre[2], post[2], str[2], dil[2];
} mock_conv;

static bool conv_desc_ok(const mock_bdesc *cd, mock_conv *c) {
    int64_t          nsd = 0;
    const mock_attr *ct  = attr(cd, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE);
    const mock_attr *md  = attr(cd, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE);
    if (!ct || !md || !attr_i64(cd, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, 1, &nsd) || nsd != 2 ||
        !attr_i64(cd, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, 2, c->pre) ||
        !attr_i64(cd, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, 2, c->post) ||
        !attr_i64(cd, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, 2, c->str) ||
        !attr_i64(cd, CUDNN_ATTR_CONVOLUTION_DILATIONS, 2, c->dil))
        return false;
    cudnnDataType_t        t;
    cudnnConvolutionMode_t m;
    memcpy(&t, ct->data, sizeof t);
    memcpy(&m, md->data, sizeof m);
    for (int i = 0; i < 2; i++)
        if (c->pre[i] < 0 || c->post[i] < 0 || c->str[i] < 1 || c->dil[i] < 1) return false;
    return t == CUDNN_DATA_FLOAT && m == CUDNN_CROSS_CORRELATION;
}

/* x, w, y and the descriptor of a finalized-to-be convolution, checked as cuDNN would: one
 * data type, distinct uids, channel counts and output dims that agree, alpha 1 and beta 0
 * (all the backend sets). */
static bool conv_op_ok(const mock_bdesc *op, mock_conv *c) {
    static const cudnnBackendAttributeName_t names[3] = {
        CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
        CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y};
    for (int i = 0; i < 3; i++)
        if (!op_tensor(op, names[i], &c->t[i]) || c->t[i].by_value || !dt_ok(c->t[i].dt) ||
            c->t[i].dt != c->t[0].dt || (i && c->t[i].uid == c->t[i - 1].uid))
            return false;
    const mock_bdesc *cd = attr_desc(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                                     CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    const mock_attr  *al =
        attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT);
    const mock_attr *be = attr(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT);
    float            a = 0.0f, b = 1.0f;
    if (!cd || !al || !be || !conv_desc_ok(cd, c) || c->t[0].uid == c->t[2].uid) return false;
    memcpy(&a, al->data, sizeof a);
    memcpy(&b, be->data, sizeof b);
    const int64_t *x = c->t[0].dims, *w = c->t[1].dims, *y = c->t[2].dims;
    if (a != 1.0f || b != 0.0f || x[1] != w[1] || y[0] != x[0] || y[1] != w[0]) return false;
    for (int i = 0; i < 2; i++) {
        int64_t span = c->dil[i] * (w[2 + i] - 1) + 1;
        if (y[2 + i] != (x[2 + i] + c->pre[i] + c->post[i] - span) / c->str[i] + 1) return false;
    }
    return true;
}

/* The graph's one operation (SDPA or convolution), or NULL. */
static mock_bdesc *graph_op(const mock_bdesc *g) {
    mock_bdesc *op =
        attr_desc(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
    return op ? op
              : attr_desc(g, CUDNN_ATTR_OPERATIONGRAPH_OPS,
                          CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
}

static bool conv_graph(const mock_bdesc *g) {
    return graph_op(g)->type == CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR;
}

static cudnnHandle_t graph_handle(const mock_bdesc *g) {
    const mock_attr *h = attr(g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE);
    cudnnHandle_t    v = NULL;
    if (h) memcpy(&v, h->data, sizeof v);
    return v;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t desc) {
    mock_bdesc *d = desc;
    if (!d || d->final) return CUDNN_STATUS_BAD_PARAM;
    int64_t   v[4];
    mock_t    t[5];
    mock_conv c;
    bool      ok = false;
    switch (d->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: {
        const mock_attr *dims = attr(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64);
        const mock_attr *str  = attr(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64);
        ok = dims && str && dims->n == str->n && attr_i64(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, 1, v) &&
             attr(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE);
        break;
    }
    case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR: ok = sdpa_tensors(d, t); break;
    case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR: ok = conv_desc_ok(d, &c); break;
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR: ok = conv_op_ok(d, &c); break;
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
        ok = attr(d, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE) && graph_op(d);
        break;
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
        ok = attr(d, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE) &&
             attr_desc(d, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                       CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
        break;
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: {
        const mock_bdesc *cfg = attr_desc(d, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                          CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
        ok = attr(d, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE) && cfg && cfg->graph;
        if (ok) {
            d->graph = cfg->graph;
            d->eng   = cfg->eng;
        }
        break;
    }
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: {
        const mock_attr *ids = attr(d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64);
        const mock_attr *ptr = attr(d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR);
        ok                   = ids && ptr && ids->n == ptr->n &&
             attr(d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR);
        break;
    }
    default: break; /* an engine configuration is filled by the heuristics, not finalized */
    }
    if (!ok) return CUDNN_STATUS_BAD_PARAM;
    d->final = true;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const desc,
                                       cudnnBackendAttributeName_t    name,
                                       cudnnBackendAttributeType_t type, int64_t requested,
                                       int64_t *count, void *values) {
    const mock_bdesc *d = desc;
    if (!d || !d->final || !count) return CUDNN_STATUS_BAD_PARAM;
    if (d->type == CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR && name == CUDNN_ATTR_ENGINEHEUR_RESULTS &&
        type == CUDNN_TYPE_BACKEND_DESCRIPTOR) {
        mock_bdesc *g = attr_desc(d, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                  CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
        *count        = !conv_graph(g) ? 1 : graph_handle(g)->no_conv_graph ? 0 : MOCK_CONV_ENGINES;
        for (int64_t i = 0; i < *count && i < requested; i++) {
            mock_bdesc *cfg = ((cudnnBackendDescriptor_t *)values)[i];
            if (!cfg || cfg->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR)
                return CUDNN_STATUS_BAD_PARAM;
            cfg->graph = g;
            cfg->eng   = (int)i;
            cfg->final = true;
        }
        return CUDNN_STATUS_SUCCESS;
    }
    if (d->type == CUDNN_BACKEND_ENGINECFG_DESCRIPTOR && name == CUDNN_ATTR_ENGINECFG_ENGINE &&
        type == CUDNN_TYPE_BACKEND_DESCRIPTOR && requested >= 1) {
        mock_bdesc *eng = ((cudnnBackendDescriptor_t *)values)[0];
        if (!eng || eng->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR) return CUDNN_STATUS_BAD_PARAM;
        eng->graph = d->graph;
        eng->eng   = d->eng;
        eng->final = true;
        *count     = 1;
        return CUDNN_STATUS_SUCCESS;
    }
    if (d->type == CUDNN_BACKEND_ENGINE_DESCRIPTOR && name == CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE &&
        type == CUDNN_TYPE_BEHAVIOR_NOTE) {
        *count = conv_graph(d->graph) && d->eng == MOCK_CONV_RTC ? 1 : 0;
        if (*count && requested >= 1)
            ((cudnnBackendBehaviorNote_t *)values)[0] = CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION;
        return CUDNN_STATUS_SUCCESS;
    }
    if (d->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR &&
        name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE && type == CUDNN_TYPE_INT64 &&
        requested >= 1) {
        *count             = 1;
        *(int64_t *)values = conv_graph(d->graph) ? conv_engine_ws(d->eng) : MOCK_WS_SDPA;
        return CUDNN_STATUS_SUCCESS;
    }
    return CUDNN_STATUS_NOT_SUPPORTED;
}

/* The pointer the variant pack gives uid, or NULL. */
static void *pack_ptr(const mock_bdesc *vp, int64_t uid) {
    const mock_attr *ids = attr(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64);
    const mock_attr *ptr = attr(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR);
    for (int64_t i = 0; i < ids->n; i++) {
        int64_t u;
        void   *p;
        memcpy(&u, ids->data + i * (int64_t)sizeof u, sizeof u);
        memcpy(&p, ptr->data + i * (int64_t)sizeof p, sizeof p);
        if (u == uid) return p;
    }
    return NULL;
}

static int64_t mock_at(const mock_t *t, int64_t a, int64_t b, int64_t c, int64_t d) {
    return a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3];
}

/* Plan p's convolution on the variant pack's pointers. */
static cudnnStatus_t conv_execute(cudnnHandle_t h, const mock_bdesc *p, const mock_bdesc *vp) {
    mock_conv c;
    if (!conv_op_ok(graph_op(p->graph), &c)) return CUDNN_STATUS_BAD_PARAM;
    void *ptr[3];
    for (int i = 0; i < 3; i++)
        if (!(ptr[i] = pack_ptr(vp, c.t[i].uid))) return CUDNN_STATUS_BAD_PARAM;
    void   *ws;
    int64_t need = conv_engine_ws(p->eng);
    memcpy(&ws, attr(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR)->data, sizeof ws);
    if (need && !ws) return CUDNN_STATUS_BAD_PARAM;
    if (need) memset(ws, 0xff, (size_t)need); /* NaN in every float type */
    const mock_t *x = &c.t[0], *w = &c.t[1], *y = &c.t[2];
    bool krsc = w->strides[1] < w->strides[3]; /* the filter's layout, for CUDA_EMU_SLOW_CONV */
    if ((h->slow_engines & (1u << (p->eng & 7))) ||
        (krsc ? (int)CUDNN_TENSOR_NHWC : (int)CUDNN_TENSOR_NCHW) == h->slow_fmt)
        mock_clock_advance(MOCK_SLOW_MS);
    mock_geom g = {
        .n   = x->dims[0],
        .c   = x->dims[1],
        .h   = x->dims[2],
        .w   = x->dims[3],
        .k   = w->dims[0],
        .r   = w->dims[2],
        .s   = w->dims[3],
        .oh  = y->dims[2],
        .ow  = y->dims[3],
        .pad = {c.pre[0], c.pre[1]},
        .str = {c.str[0], c.str[1]},
        .dil = {c.dil[0], c.dil[1]},
        .dt  = cuda_type(x->dt),
    };
    memcpy(g.xs, x->strides, sizeof g.xs);
    memcpy(g.ws, w->strides, sizeof g.ws);
    memcpy(g.ys, y->strides, sizeof g.ys);
    return direct_conv(&g, ptr[0], ptr[1], ptr[2], 1.0f, 0.0f, p->eng == MOCK_CONV_RTC);
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t h, cudnnBackendDescriptor_t plan,
                                  cudnnBackendDescriptor_t pack) {
    const mock_bdesc *p = plan, *vp = pack;
    mock_t            t[5];
    if (!h || !p || !vp || !p->final || !vp->final ||
        p->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR ||
        vp->type != CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)
        return CUDNN_STATUS_BAD_PARAM;
    if (conv_graph(p->graph)) return conv_execute(h, p, vp);
    if (!sdpa_tensors(graph_op(p->graph), t)) return CUDNN_STATUS_BAD_PARAM;
    void *ptr[5];
    for (int i = 0; i < 5; i++)
        if (!(ptr[i] = pack_ptr(vp, t[i].uid))) return CUDNN_STATUS_BAD_PARAM;
    void *ws;
    memcpy(&ws, attr(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR)->data, sizeof ws);
    if (!ws) return CUDNN_STATUS_BAD_PARAM;
    memset(ws, 0xff, MOCK_WS_SDPA); /* NaN in every float type */
    cudaDataType_t dt    = cuda_type(t[0].dt);
    float          scale = *(const float *)ptr[4];
    int64_t        B = t[0].dims[0], H = t[0].dims[1], Lq = t[0].dims[2], D = t[0].dims[3];
    int64_t        Lk = t[1].dims[2];
    float         *s  = imgd_malloc((size_t)Lk * sizeof *s);
    if (!s) return CUDNN_STATUS_ALLOC_FAILED;
    for (int64_t b = 0; b < B; b++)
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < Lq; i++) {
                float mx = -INFINITY, sum = 0.0f;
                for (int64_t j = 0; j < Lk; j++) {
                    float acc = 0.0f;
                    for (int64_t d = 0; d < D; d++)
                        acc += mock_ld(ptr[0], dt, mock_at(&t[0], b, hh, i, d)) *
                               mock_ld(ptr[1], dt, mock_at(&t[1], b, hh, j, d));
                    s[j] = acc * scale;
                    mx   = s[j] > mx ? s[j] : mx;
                }
                for (int64_t j = 0; j < Lk; j++) sum += (s[j] = expf(s[j] - mx));
                for (int64_t d = 0; d < D; d++) {
                    float acc = 0.0f;
                    for (int64_t j = 0; j < Lk; j++)
                        acc += s[j] * mock_ld(ptr[2], dt, mock_at(&t[2], b, hh, j, d));
                    mock_st(ptr[3], dt, mock_at(&t[3], b, hh, i, d), acc / sum);
                }
            }
    imgd_free(s);
    return CUDNN_STATUS_SUCCESS;
}
