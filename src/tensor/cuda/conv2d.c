/* conv2d through cuDNN (builds with cuDNN, IMGD_CUDA_CUDNN not 0): in f16/bf16 math an
 * execution plan of its graph API (below, IMGD_CUDA_CONV_GRAPH), else (f32, no plan, the
 * graph API off) cudnnConvolutionForward, the algorithm picked at plan time by
 * cudnnGetConvolutionForwardAlgorithm_v7 among those that need at most CUDNN_WS_MAX of
 * workspace (kept at the end of the node's scratch).
 * f32 math: f32 tensors, FMA math (no TF32) and only the GEMM-family and direct algorithms
 * (no Winograd/FFT), the bias prefilled and blended with beta = 1. f16/bf16 math: x read in
 * place when stored in that type (else rounded into scratch), the weight a plan-time constant
 * (cuda_resolve_const), y in that type in scratch, then stored with the bias added (one
 * cuk_ewise pass); f32 accumulation. An ADD right after the convolution that only it feeds
 * (a ResNet's residual or time embedding) is done in the same pass (cuda_plan_residuals):
 * its output is written there and the ADD is skipped. In f16/bf16 math the tensors may
 * instead be NHWC, transposed in and out around cuDNN (IMGD_CUDA_CONV_NHWC; the layout tuner
 * below times both). A node cuDNN has no algorithm for falls back to im2col.
 *
 * Otherwise im2col + one cuBLAS GEMM per image (and per chunk of output pixels when the
 * column buffer would pass IM2COL_BYTES_MAX). 1x1 convolutions with stride 1 and no padding
 * use the input as the column matrix directly. In IMGD_GPU_MATH_F16/BF16 the weights are
 * read as a plan-time constant (or rounded into scratch) and the columns are written in that
 * type.
 *
 * Per image, row-major out[O][P] = w[O][CK] col[CK][P]; column-major that is
 * out^T (P x O, ld P) = col^T (P x CK, ld P) w^T (CK x O, ld CK). */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "cuda_impl.h"

#define IM2COL_BYTES_MAX ((size_t)256 << 20)
#define CUDNN_WS_MAX     ((size_t)256 << 20)

typedef struct conv_geom {
    int64_t N, C, H, W, O, KH, KW, OH, OW, P, CK, chunk;
    int64_t sh, sw, ph, pw;
    bool    direct; /* 1x1, stride 1, no padding: the input is its own column matrix */
} conv_geom;

static void conv_geometry(const imgd_tensor *n, size_t es, conv_geom *g) {
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
    int64_t cap = (int64_t)(IM2COL_BYTES_MAX / es) / (g->CK ? g->CK : 1);
    g->chunk    = g->P < cap ? g->P : (cap > 0 ? cap : 1);
}

bool cuda_conv2d_supported(const imgd_tensor *n) {
    conv_geom g;
    for (int i = 0; i < 3; i++) {
        const imgd_tensor *s = n->src[i];
        if (i < 2 && !s) return false;
        if (s && (s->dtype != IMGD_DTYPE_F32 || !imgd_tensor_is_contiguous(s))) return false;
    }
    if (n->n_dims != 4 || n->src[0]->n_dims != 4 || n->src[1]->n_dims != 4) return false;
    conv_geometry(n, 4, &g);
    return g.P <= INT_MAX && g.CK <= INT_MAX && g.O <= INT_MAX && g.H * g.W <= INT_MAX;
}

/* Scratch: [weights in the GEMM type, when not f32][columns, or the whole input for a direct
 * conv in the GEMM type]. */
static size_t weights_bytes(const cuda_backend *cb, const imgd_tensor *n, const conv_geom *g) {
    const cuda_node *ns = cuda_node_of(n);
    if (!cuda_math_low(cb) || (ns && ns->cnst[1])) return 0;
    return cuda_align_up((size_t)(g->O * g->CK) * cuda_math_size(cb));
}

/* ---- cuDNN's graph API ---------------------------------------------------------------------
 * In f16/bf16 math (IMGD_CUDA_CONV_GRAPH, default 1) each layout's convolution is also an
 * operation graph of one CONVOLUTION_FORWARD operation over X, W and Y (their NCHW or NHWC /
 * KRSC strides, the math type, f32 compute), and its execution plans are those of cuDNN's
 * heuristics that finalize with at most CUDNN_WS_MAX of workspace, leaving out engines that
 * compile their kernel at plan time (NVRTC, seconds each; IMGD_CUDA_CONV_GRAPH=rtc admits them):
 * the first, or where the layout tuner times the node, each of the first CONV_PLANS_TIMED
 * against the legacy algorithm. Only the plan taken is kept. f32 math keeps the legacy API's
 * FMA algorithms. */

#ifdef IMGD_HAVE_CUDNN
#    define CONV_PLANS_TIMED 4

enum {
    CONV_X = 1,
    CONV_W = 2,
    CONV_Y = 3
};

typedef struct conv_graph {
    cuda_bdesc     t[3], cd, op, graph; /* x, w, y; the convolution; its graph */
    cuda_dnn_plans plans;
} conv_graph;

static void conv_graph_free(conv_graph *cg) {
    if (!cg) return;
    cuda_dnn_plans_free(&cg->plans);
    cuda_bdesc all[] = {cg->graph, cg->op, cg->cd, cg->t[2], cg->t[1], cg->t[0]};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) (void)cudnnBackendDestroyDescriptor(all[i]);
    imgd_free(cg);
}

/* Dims and strides of an [n, c, h, w] tensor stored NCHW, or NHWC (a filter: KRSC). */
static void dims_of(int64_t n, int64_t c, int64_t h, int64_t w, bool nhwc, int64_t d[4],
                    int64_t s[4]) {
    d[0] = n;
    d[1] = c;
    d[2] = h;
    d[3] = w;
    s[0] = c * h * w;
    s[1] = nhwc ? 1 : h * w;
    s[2] = nhwc ? w * c : w;
    s[3] = nhwc ? c : 1;
}

/* The convolution descriptor of g (2 spatial dims, cross-correlation, f32 compute). */
static cudnnStatus_t conv_desc(const conv_geom *g, cuda_bdesc *cd) {
    int64_t                nsd = 2, pad[2] = {g->ph, g->pw}, str[2] = {g->sh, g->sw};
    int64_t                dil[2] = {1, 1};
    cudnnDataType_t        ct     = CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode   = CUDNN_CROSS_CORRELATION;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, cd);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(*cd, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1,
                                     &ct);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(*cd, CUDNN_ATTR_CONVOLUTION_CONV_MODE,
                                     CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(*cd, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1,
                                     &nsd);
    const cudnnBackendAttributeName_t a[4] = {
        CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES,
        CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS};
    const int64_t *v[4] = {dil, str, pad, pad};
    for (int i = 0; i < 4 && s == CUDNN_STATUS_SUCCESS; i++)
        s = cudnnBackendSetAttribute(*cd, a[i], CUDNN_TYPE_INT64, 2, v[i]);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(*cd);
    return s;
}

/* The finalized operation graph of g's convolution in layout nhwc, in cg. */
static cudnnStatus_t conv_graph_build(const cuda_backend *cb, const conv_geom *g, bool nhwc,
                                      conv_graph *cg) {
    cudnnDataType_t dt = cb->math == IMGD_GPU_MATH_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    const int64_t   shp[3][4] = {
          {g->N, g->C, g->H, g->W}, {g->O, g->C, g->KH, g->KW}, {g->N, g->O, g->OH, g->OW}};
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    for (int i = 0; i < 3 && s == CUDNN_STATUS_SUCCESS; i++) {
        int64_t d[4], st[4];
        dims_of(shp[i][0], shp[i][1], shp[i][2], shp[i][3], nhwc, d, st);
        s = cuda_dnn_tensor(&cg->t[i], CONV_X + i, dt, 4, d, st, 0);
    }
    if (s == CUDNN_STATUS_SUCCESS) s = conv_desc(g, &cg->cd);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                         &cg->op);
    const cudnnBackendAttributeName_t a[4] = {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                                              CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC};
    const cuda_bdesc                  v[4] = {cg->t[0], cg->t[1], cg->t[2], cg->cd};
    for (int i = 0; i < 4 && s == CUDNN_STATUS_SUCCESS; i++)
        s = cuda_dnn_set_desc(cg->op, a[i], v[i]);
    float alpha = 1.0f, beta = 0.0f;
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(cg->op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                     CUDNN_TYPE_FLOAT, 1, &alpha);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(cg->op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                                     CUDNN_TYPE_FLOAT, 1, &beta);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(cg->op);
    if (s == CUDNN_STATUS_SUCCESS) s = cuda_dnn_graph(cb, &cg->op, 1, &cg->graph);
    return s;
}

/* Up to max graph-API plans of g's convolution in layout nhwc (*out; NULL, with the reason on
 * stderr under IMGD_CUDA_VERBOSE=1, where cuDNN makes none: the legacy API runs it). */
static imgd_status conv_graph_new(cuda_backend *cb, const conv_geom *g, bool nhwc, int32_t max,
                                  conv_graph **out) {
    *out = NULL;
    if (!cb->conv_graph || !cuda_math_low(cb)) return IMGD_OK;
    conv_graph *cg = imgd_calloc(1, sizeof *cg);
    if (!cg) return imgd_fail(IMGD_E_NOMEM, "cuda: conv2d: out of host memory");
    double        t0 = cuda_now_s();
    cudnnStatus_t s  = conv_graph_build(cb, g, nhwc, cg);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cuda_dnn_plans_make(cb, cg->graph, max, (int64_t)CUDNN_WS_MAX, cb->conv_graph < 2,
                                &cg->plans);
    cb->conv_plan_s += cuda_now_s() - t0;
    cb->conv_plan_n++;
    if (s != CUDNN_STATUS_SUCCESS) {
        if (cb->verbose)
            fprintf(stderr, "cuda: conv2d %s: no cuDNN graph plan (%s), legacy API\n",
                    nhwc ? "NHWC" : "NCHW", cudnnGetErrorString(s));
        conv_graph_free(cg);
        return IMGD_OK;
    }
    *out = cg;
    return IMGD_OK;
}

/* How one convolution runs: a graph execution plan, or else cuDNN's legacy algorithm. */
typedef struct conv_way {
    cuda_bdesc plan; /* NULL: the legacy algorithm */
    int32_t    algo;
    size_t     ws; /* workspace bytes there are */
} conv_way;

/* One layout's candidates: cudnn_pick's legacy algorithm (found) and the graph's plans (gr),
 * pick the one taken (a plan index, -1 the legacy algorithm). */
typedef struct conv_layout {
    cudnnConvolutionFwdAlgoPerf_t perf;
    size_t                        ws;
    bool                          found;
    conv_graph                   *gr;
    int32_t                       pick;
} conv_layout;

static bool layout_usable(const conv_layout *l) {
    return l->found || l->gr;
}

/* The workspace the layout's candidates need at most. */
static size_t layout_ws(const conv_layout *l) {
    size_t ws = l->found ? l->ws : 0;
    for (int32_t i = 0; l->gr && i < l->gr->plans.n; i++)
        if ((size_t)l->gr->plans.ws[i] > ws) ws = (size_t)l->gr->plans.ws[i];
    return ws;
}

/* The larger of two layouts' workspaces (the scratch a timed convolution plans for). */
static size_t layouts_ws(const conv_layout lay[2]) {
    size_t a = layout_ws(&lay[0]), b = layout_ws(&lay[1]);
    return a > b ? a : b;
}

static void layouts_free(conv_layout lay[2]) {
    for (int l = 0; l < 2; l++) {
        conv_graph_free(lay[l].gr);
        lay[l].gr = NULL;
    }
}

/* Whether l has candidate i (a plan index, -1 the legacy algorithm). */
static bool layout_has(const conv_layout *l, int32_t i) {
    return i < 0 ? l->found : l->gr && i < l->gr->plans.n;
}

/* Candidate i of l (a plan index, -1 the legacy algorithm) with ws bytes of workspace. */
static conv_way layout_way(const conv_layout *l, int32_t i, size_t ws) {
    conv_way w = {i >= 0 && l->gr ? l->gr->plans.plan[i] : NULL, (int32_t)l->perf.algo, ws};
    return w;
}
#endif

/* ---- cuDNN ---------------------------------------------------------------------------------- */

void cuda_conv2d_release(cuda_node *st) {
#ifdef IMGD_HAVE_CUDNN
    conv_graph_free(st->cgraph);
    st->cgraph = NULL;
    if (st->conv_pending) layouts_free(st->conv_pending);
    if (st->xd) (void)cudnnDestroyTensorDescriptor(st->xd);
    if (st->yd) (void)cudnnDestroyTensorDescriptor(st->yd);
    if (st->wd) (void)cudnnDestroyFilterDescriptor(st->wd);
    if (st->cd) (void)cudnnDestroyConvolutionDescriptor(st->cd);
    st->xd = st->yd = NULL;
    st->wd          = NULL;
    st->cd          = NULL;
    imgd_free(st->conv_pending);
    st->conv_pending = NULL;
#else
    IMGD_UNUSED(st);
#endif
}

#ifdef IMGD_HAVE_CUDNN
/* Scratch of a cuDNN conv in f16/bf16 math: [weight unless constant][x][y][workspace]. */
static size_t cudnn_x_bytes(const cuda_backend *cb, const conv_geom *g) {
    return cuda_math_low(cb) ? cuda_align_up((size_t)(g->N * g->C * g->H * g->W) * 2) : 0;
}
static size_t cudnn_y_bytes(const cuda_backend *cb, const conv_geom *g) {
    return cuda_math_low(cb) ? cuda_align_up((size_t)(g->N * g->O * g->P) * 2) : 0;
}

/* f32 math keeps the conformance results: no tensor-core (TF32) kernels, no Winograd/FFT. */
static bool algo_ok(const cuda_backend *cb, const cudnnConvolutionFwdAlgoPerf_t *p) {
    if (p->status != CUDNN_STATUS_SUCCESS || p->memory > CUDNN_WS_MAX) return false;
    if (cuda_math_low(cb)) return true;
    if (p->mathType == CUDNN_TENSOR_OP_MATH || p->mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
        return false;
    return p->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
           p->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
           p->algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM ||
           p->algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}

/* Creates ns's descriptors once and sets them for layout ns->nhwc. */
static imgd_status cudnn_describe(cuda_backend *cb, const conv_geom *g, cuda_node *ns,
                                  const char *what) {
    cudnnDataType_t dt = cb->math == IMGD_GPU_MATH_BF16  ? CUDNN_DATA_BFLOAT16
                         : cb->math == IMGD_GPU_MATH_F16 ? CUDNN_DATA_HALF
                                                         : CUDNN_DATA_FLOAT;
    if (!ns->xd) CUDNN_TRY(cudnnCreateTensorDescriptor(&ns->xd), what);
    if (!ns->yd) CUDNN_TRY(cudnnCreateTensorDescriptor(&ns->yd), what);
    if (!ns->wd) CUDNN_TRY(cudnnCreateFilterDescriptor(&ns->wd), what);
    if (!ns->cd) CUDNN_TRY(cudnnCreateConvolutionDescriptor(&ns->cd), what);
    cudnnTensorFormat_t fmt = ns->nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    CUDNN_TRY(
        cudnnSetTensor4dDescriptor(ns->xd, fmt, dt, (int)g->N, (int)g->C, (int)g->H, (int)g->W),
        what);
    CUDNN_TRY(
        cudnnSetTensor4dDescriptor(ns->yd, fmt, dt, (int)g->N, (int)g->O, (int)g->OH, (int)g->OW),
        what);
    CUDNN_TRY(
        cudnnSetFilter4dDescriptor(ns->wd, dt, fmt, (int)g->O, (int)g->C, (int)g->KH, (int)g->KW),
        what);
    CUDNN_TRY(cudnnSetConvolution2dDescriptor(ns->cd, (int)g->ph, (int)g->pw, (int)g->sh,
                                              (int)g->sw, 1, 1, CUDNN_CROSS_CORRELATION,
                                              CUDNN_DATA_FLOAT),
              what);
    CUDNN_TRY(cudnnSetConvolutionMathType(ns->cd, cuda_math_low(cb) ? CUDNN_TENSOR_OP_MATH
                                                                    : CUDNN_FMA_MATH),
              what);
    int on = 0, oc = 0, oh = 0, ow = 0;
    CUDNN_TRY(cudnnGetConvolution2dForwardOutputDim(ns->cd, ns->xd, ns->wd, &on, &oc, &oh, &ow),
              what);
    if (on != g->N || oc != g->O || oh != g->OH || ow != g->OW)
        return imgd_fail(IMGD_E_INTERNAL,
                         "cuda: conv2d: cuDNN output %dx%dx%dx%d differs from the graph's "
                         "%lldx%lldx%lldx%lld",
                         on, oc, oh, ow, (long long)g->N, (long long)g->O, (long long)g->OH,
                         (long long)g->OW);
    return IMGD_OK;
}

/* A KRSC (OHWI) copy of the constant weight cnst[1] (OIHW, contiguous, in the math type) for
 * NHWC convolution, in new device memory *out (the caller's, even when the copy fails). */
static imgd_status krsc_new(cuda_backend *cb, const conv_geom *g, const cuda_node *ns, void **out) {
    int64_t    hw  = g->KH * g->KW;
    cuk_tensor src = {(void *)(uintptr_t)ns->cnst[1], cuda_math_cuk(cb),        4, 0, 0,
                      {g->O, g->KH, g->KW, g->C},     {g->C * hw, g->KW, 1, hw}};
    *out           = NULL;
    return cuda_copy_new(cb, &src, cuda_math_cuk(cb), out,
                         "conv2d: the weight in cuDNN's NHWC (KRSC) layout");
}

/* Makes krsc (a krsc_new copy) the node's weight (owned[1]). */
static void krsc_install(cuda_node *ns, void *krsc) {
    if (ns->owned[1]) (void)cudaFree(ns->owned[1]);
    ns->owned[1] = krsc;
    ns->cnst[1]  = krsc;
}

/* cuDNN's algorithm for ns's descriptors: the first acceptable one of its heuristic (or timed,
 * IMGD_CUDA_CUDNN_FIND) list whose workspace fits, with its math type set on ns->cd; *found
 * false when there is none. */
static imgd_status cudnn_pick(cuda_backend *cb, cuda_node *ns, cudnnConvolutionFwdAlgoPerf_t *pick,
                              size_t *ws_out, bool *found) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int                           got = 0;
    *found                            = false;
    if (cb->cudnn_find) /* timed on the device, fastest first (IMGD_CUDA_CUDNN_FIND) */
        CUDNN_TRY(cudnnFindConvolutionForwardAlgorithm(cb->dnn, ns->xd, ns->wd, ns->cd, ns->yd,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got,
                                                       perf),
                  "conv2d: timing the cuDNN algorithms");
    else
        CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(cb->dnn, ns->xd, ns->wd, ns->cd, ns->yd,
                                                         CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got,
                                                         perf),
                  "conv2d: choosing the cuDNN algorithm");
    for (int i = 0; i < got; i++) {
        if (!algo_ok(cb, &perf[i])) continue;
        cudnnMathType_t mt = cuda_math_low(cb) ? perf[i].mathType : CUDNN_FMA_MATH;
        size_t          ws = 0;
        if (cudnnSetConvolutionMathType(ns->cd, mt) != CUDNN_STATUS_SUCCESS ||
            cudnnGetConvolutionForwardWorkspaceSize(cb->dnn, ns->xd, ns->wd, ns->cd, ns->yd,
                                                    perf[i].algo, &ws) != CUDNN_STATUS_SUCCESS ||
            ws > CUDNN_WS_MAX)
            continue;
        *pick   = perf[i];
        *ws_out = ws;
        *found  = true;
        return IMGD_OK;
    }
    return IMGD_OK;
}

/* Whether NHWC beats cuDNN's NCHW choice `nchw` (found or not): the guess of
 * IMGD_CUDA_CONV_NHWC=guess, and of auto for convolutions it does not time. Measured on an
 * H100 (SD 1.5 f16, batch 2): NCHW half tensors make cuDNN transform the weight in every run,
 * which costs most where the weight outweighs the activation (1280 channels at 8x8: 109 us
 * NCHW, 39 NHWC); where the activation is larger, the two transposes around NHWC cost more
 * (320 channels at 64x64: 57 us NCHW, 90 NHWC); and where cuDNN has no tensor-core NCHW
 * algorithm at all (the VAE's 256 channels at 512x512: 10.5 ms NCHW, 1.5 ms NHWC). */
static bool nhwc_wins(const conv_geom *g, const cudnnConvolutionFwdAlgoPerf_t *nchw, bool found) {
    int64_t w = g->O * g->CK, x = g->N * g->C * g->H * g->W;
    return !found || nchw->mathType == CUDNN_DEFAULT_MATH || nchw->mathType == CUDNN_FMA_MATH ||
           w >= x;
}

/* Where one f16/bf16 cuDNN convolution reads and writes: the node's tensors and scratch, or
 * the layout tuner's buffers. */
typedef struct conv_io {
    const void        *x;      /* contiguous NCHW */
    int32_t            xt;     /* its cuk type */
    const void        *w;      /* the weight in the math type (KRSC for NHWC) */
    void              *out;    /* NCHW: the node's output, or the fused ADD's */
    int32_t            ot;     /* its cuk type */
    cuk_operand        bias;   /* data NULL: none */
    const cuk_operand *res;    /* the fused ADD's other operand, or NULL */
    bool               x_nhwc; /* NHWC: x is NHWC already, in the math type (its group norm
                                  wrote it so): no transpose in */
    void *xs;                  /* x in the math type: NHWC, or NCHW when xt is not the math type */
    void *y;                   /* the convolution's result in the math type */
    void *ws;                  /* cuDNN's workspace */
} conv_io;

static bool aligned16(const void *p) {
    return ((uintptr_t)p & 15u) == 0;
}

/* One f16/bf16 convolution run way (a graph plan for layout nhwc, or the legacy algorithm with
 * ns's descriptors set for it). NHWC: x transposed into xs, convolved into y, y transposed
 * into out with the bias and res added (cuk_transpose_ewise). NCHW: x rounded into xs unless
 * it is in the math type, y in the math type (out itself when that is its type and there is
 * neither bias nor res), then out = y + bias + res in one pass (cuk_ewise). A graph plan
 * reads and writes 16-byte aligned tensors: x is copied into xs, and y kept in scratch,
 * where they are not. */
static imgd_status conv_exec_low(cuda_backend *cb, const cuda_node *ns, const conv_geom *g,
                                 bool nhwc, const conv_way *way, const conv_io *io,
                                 const char *what) {
    const int32_t mt    = cuda_math_cuk(cb);
    const int64_t total = g->N * g->O * g->P, xn = g->N * g->C * g->H * g->W;
    const float   alpha = 1.0f, beta = 0.0f;
    const void   *x = io->x;
    cudaError_t   e = cudaSuccess;
    if (nhwc && !io->x_nhwc) {
        e = cuk_transpose_ewise(io->xs, mt, io->x, io->xt, g->N, g->C, g->H * g->W, NULL, NULL,
                                cb->stream);
        if (e != cudaSuccess) return cuda_fail(e, "cuk_transpose_ewise (x to NHWC)", what);
        x = io->xs;
    } /* else NHWC x as its group norm wrote it, or NCHW x */
    if (x == io->x && (io->xt != mt || (way->plan && !aligned16(x)))) {
        cuk_operand xo = {io->x, io->xt, 0, 1, xn}; /* flat: NCHW, or NHWC as the norm wrote it */
        e              = cuk_ewise(io->xs, mt, xn, CUK_ADD, &xo, NULL, NULL, cb->stream);
        if (e != cudaSuccess) return cuda_fail(e, "cuk_ewise (x to the math type)", what);
        x = io->xs;
    }
    const bool direct_out =
        !nhwc && !io->bias.data && !io->res && io->ot == mt && (!way->plan || aligned16(io->out));
    void *y = direct_out ? io->out : io->y;
    if (way->plan) {
        static const int64_t uids[3] = {CONV_X, CONV_W, CONV_Y};
        void *const          ptrs[3] = {(void *)(uintptr_t)x, (void *)(uintptr_t)io->w, y};
        cudnnStatus_t        s       = cuda_dnn_exec(cb, way->plan, 3, uids, ptrs, io->ws);
        if (s != CUDNN_STATUS_SUCCESS)
            return cudnn_fail(s,
                              "cudnnBackendExecute (convolution plan; IMGD_CUDA_CONV_GRAPH=0 "
                              "runs the legacy API)",
                              what);
    } else {
        CUDNN_TRY(cudnnConvolutionForward(cb->dnn, &alpha, ns->xd, x, ns->wd, io->w, ns->cd,
                                          (cudnnConvolutionFwdAlgo_t)way->algo, io->ws, way->ws,
                                          &beta, ns->yd, y),
                  what);
    }
    if (direct_out) return IMGD_OK;
    if (nhwc) {
        e = cuk_transpose_ewise(io->out, io->ot, y, mt, g->N, g->P, g->O, &io->bias, io->res,
                                cb->stream);
        if (e != cudaSuccess) return cuda_fail(e, "cuk_transpose_ewise (y to NCHW)", what);
        return IMGD_OK;
    }
    cuk_operand yo = {y, mt, 0, 1, total};
    e = cuk_ewise(io->out, io->ot, total, CUK_ADD, &yo, &io->bias, io->res, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cuk_ewise (conv2d epilogue)", what);
    return IMGD_OK;
}

/* f32 math: y = conv + beta * y with y prefilled with the bias (and the fused ADD's other
 * operand, y then being the ADD's output). f16/bf16 math: conv_exec_low on the node's
 * scratch ([weight unless constant][x][y][workspace]), x rounded into it first when NCHW
 * reads it and it is not contiguous. */
static imgd_status cudnn_run(cuda_backend *cb, const imgd_tensor *n, const conv_geom *g,
                             const char *what) {
    const cuda_node   *ns = cuda_node_of(n);
    unsigned char     *sc = n->scratch;
    size_t             wb = weights_bytes(cb, n, g), xb = cudnn_x_bytes(cb, g);
    size_t             yb  = cudnn_y_bytes(cb, g);
    void              *ws  = ns->ws_bytes ? sc + wb + xb + yb : NULL;
    const imgd_tensor *src = n->src[0], *bias = n->src[2];
    cuk_operand        bo = {bias ? cuda_dptr(bias) : NULL, CUK_F32, 0, g->P, g->O}, ro;
    const void        *w  = ns->cnst[1];
    imgd_status        st = IMGD_OK;
    if (!w) {
        w  = cuda_math_low(cb) ? sc : cuda_dptr(n->src[1]);
        st = cuda_math_low(cb) ? cuda_to_math(cb, n->src[1], sc, what) : IMGD_OK;
    }
    const void *x  = cuda_dptr(src);
    int32_t     xt = cuda_cuk_of(src);
    if (!ns->nhwc && cuda_math_low(cb) && !imgd_tensor_is_contiguous(src) && st == IMGD_OK) {
        st = cuda_to_math(cb, src, sc + wb, what);
        x  = sc + wb;
        xt = cuda_math_cuk(cb);
    }
    if (st != IMGD_OK) return st;
    /* the fused ADD's output written here, its other operand (planned flat) read as ro */
    const imgd_tensor *fz  = ns->fused && cuda_fused_out_ok(n, x, w) &&
                                    cuda_operand(ns->fused->src[ns->res_src], ns->fused, &ro)
                                 ? ns->fused
                                 : NULL;
    const imgd_tensor *out = fz ? fz : n;
    if (cuda_math_low(cb)) {
        conv_io  io  = {x,
                        xt,
                        w,
                        out->data,
                        cuda_cuk_of(out),
                        bo,
                      fz ? &ro : NULL,
                        ns->nhwc && ns->x_nhwc,
                        sc + wb,
                        sc + wb + xb,
                        ws};
        conv_way way = {ns->cgraph ? ((conv_graph *)ns->cgraph)->plans.plan[0] : NULL, ns->algo,
                        ns->ws_bytes};
        st           = conv_exec_low(cb, ns, g, ns->nhwc, &way, &io, what);
        if (st == IMGD_OK && fz) cuda_node_of(fz)->gemm_done = true;
        return st;
    }
    float alpha = 1.0f, beta = 0.0f;
    if (bias || fz) {
        cudaError_t e = cuk_ewise(out->data, CUK_F32, g->N * g->O * g->P, CUK_ADD, NULL, &bo,
                                  fz ? &ro : NULL, cb->stream);
        if (e != cudaSuccess) return cuda_fail(e, "cuk_ewise (bias prefill)", what);
        beta = 1.0f;
    }
    CUDNN_TRY(cudnnConvolutionForward(cb->dnn, &alpha, ns->xd, x, ns->wd, w, ns->cd,
                                      (cudnnConvolutionFwdAlgo_t)ns->algo, ws, ns->ws_bytes, &beta,
                                      ns->yd, out->data),
              what);
    if (fz) cuda_node_of(fz)->gemm_done = true;
    return IMGD_OK;
}

/* ---- the layout tuner (IMGD_CUDA_CONV_NHWC=auto|tune) ---------------------------------------
 * Both layouts run on the node's shapes in buffers of their own (zeros: the speed does not
 * depend on the values), the transposes and epilogue included, once to warm up and
 * CUDA_TUNE_REPS times between two events (tune.c), and the faster is kept, remembered per
 * conv_key so a UNet's repeated blocks and later plans time nothing. Not timed (nhwc_wins
 * guesses) where the buffers would pass CUDA_TUNE_BYTES_MAX or leave less than
 * CUDA_TUNE_SPARE of device memory free. */

#    define CUDA_CONV_TUNE_FLOP 1e8

/* Sets ns's descriptors for layout nhwc and picks its legacy algorithm and up to max graph
 * plans into *l (the first plan taken, else the legacy algorithm). */
static imgd_status layout_pick(cuda_backend *cb, const conv_geom *g, cuda_node *ns, bool nhwc,
                               int32_t max, conv_layout *l) {
    memset(l, 0, sizeof *l);
    ns->nhwc       = nhwc;
    imgd_status st = cudnn_describe(cb, g, ns, "conv2d: cuDNN descriptors");
    if (st == IMGD_OK) st = cudnn_pick(cb, ns, &l->perf, &l->ws, &l->found);
    if (st == IMGD_OK) st = conv_graph_new(cb, g, nhwc, max, &l->gr);
    l->pick = l->gr ? 0 : -1;
    return st;
}

/* Sets ns's descriptors back to layout nhwc with its algorithm's math type (l, picked before). */
static imgd_status layout_use(cuda_backend *cb, const conv_geom *g, cuda_node *ns, bool nhwc,
                              const conv_layout *l) {
    const char *what = "conv2d: cuDNN descriptors";
    ns->nhwc         = nhwc;
    imgd_status st   = cudnn_describe(cb, g, ns, what);
    if (st == IMGD_OK) CUDNN_TRY(cudnnSetConvolutionMathType(ns->cd, l->perf.mathType), what);
    return st;
}

/* What decides the timings (zero-filled before it is set: compared with memcmp). */
typedef struct conv_key {
    int64_t geom[11]; /* N, C, H, W, O, KH, KW, sh, sw, ph, pw */
    int32_t xt, ot, bias, math, res, xn, graph;
} conv_key;

typedef struct conv_pick {
    conv_key key;
    bool     nhwc;
    float    ms[2];   /* NCHW, NHWC: the faster candidate's; < 0: none ran */
    int32_t  pick[2]; /* and which it is (conv_layout.pick) */
} conv_pick;

static void conv_make_key(const cuda_backend *cb, const imgd_tensor *n, const conv_geom *g,
                          conv_key *k) {
    memset(k, 0, sizeof *k);
    const int64_t v[11] = {g->N, g->C, g->H, g->W, g->O, g->KH, g->KW, g->sh, g->sw, g->ph, g->pw};
    memcpy(k->geom, v, sizeof v);
    k->xt    = cuda_cuk_of(n->src[0]);
    k->ot    = cuda_cuk_of(n);
    k->bias  = n->src[2] != NULL;
    k->math  = cuda_math_cuk(cb);
    k->res   = cuda_node_of(n)->fused != NULL;
    k->xn    = cuda_node_of(n)->x_nhwc;
    k->graph = cb->conv_graph;
}

typedef struct conv_trial {
    cuda_backend    *cb;
    const cuda_node *ns;
    const conv_geom *g;
    bool             nhwc;
    conv_way         way;
    const conv_io   *io;
} conv_trial;

/* false when the run failed (its error cleared: a candidate that fails is not chosen) */
static bool conv_trial_run(void *ctx) {
    const conv_trial *t = ctx;
    imgd_status       st =
        conv_exec_low(t->cb, t->ns, t->g, t->nhwc, &t->way, t->io, "conv2d: timing a layout");
    if (st == IMGD_OK) return true;
    imgd_error_clear();
    (void)cudaGetLastError();
    return false;
}

/* Times both layouts (lay[0] NCHW, lay[1] NHWC, both usable) of node n, each candidate of
 * each (its graph plans and legacy algorithm), into ms (each layout's fastest) and lay[].pick
 * (which it is), with the KRSC weight it makes for NHWC (*krsc, the caller's); *timed false,
 * with why, where the copy and the buffers do not fit (then *krsc is not made). Leaves ns's
 * descriptors NHWC. */
static imgd_status conv_time(cuda_backend *cb, const imgd_tensor *n, const conv_geom *g,
                             cuda_node *ns, conv_layout lay[2], void **krsc, float ms[2],
                             bool *timed, char *why, size_t why_cap) {
    /* what the runs read and write: x as stored, the output (the fused ADD's where there is
     * one) and its residual operand */
    const imgd_tensor *fz     = ns->fused;
    const bool         x_nhwc = ns->x_nhwc; /* NHWC reads x as its group norm writes it */
    const int32_t      ot     = cuda_cuk_of(fz ? fz : n);
    const int32_t      rt     = fz ? cuda_cuk_of(fz->src[ns->res_src]) : CUK_F32;
    const size_t       xes    = cuda_cuk_of(n->src[0]) == CUK_F32 ? 4 : 2;
    const size_t       oes = ot == CUK_F32 ? 4 : 2, ny = (size_t)(g->N * g->O * g->P);
    const size_t       off_o  = cuda_align_up((size_t)(g->N * g->C * g->H * g->W) * xes);
    const size_t       off_xs = off_o + cuda_align_up((size_t)(g->N * g->O * g->P) * oes);
    const size_t       off_y  = off_xs + cudnn_x_bytes(cb, g);
    const size_t       off_b  = off_y + cudnn_y_bytes(cb, g);
    const size_t       off_r  = off_b + cuda_align_up((size_t)g->O * 4);
    const size_t       off_ws = off_r + (fz ? cuda_align_up(ny * (rt == CUK_F32 ? 4 : 2)) : 0);
    const size_t       ws_max = layouts_ws(lay);
    const size_t       total  = off_ws + cuda_align_up(ws_max);
    const size_t       wbytes = cuda_align_up((size_t)(g->O * g->CK) * cuda_math_size(cb));
    size_t             fr     = 0;
    char               nomem[128];
    cuda_tune_bufs     tb;
    *timed = false;
    ms[0] = ms[1] = -1.0f;
    if (!cuda_tune_room(total + wbytes, &fr)) {
        (void)snprintf(why, why_cap,
                       "guessed, not timed: its KRSC weight and buffers take %.1f MiB (%.0f free)",
                       (double)(total + wbytes) / (1024.0 * 1024.0),
                       (double)fr / (1024.0 * 1024.0));
        return IMGD_OK;
    }
    imgd_status st = krsc_new(cb, g, ns, krsc);
    if (st != IMGD_OK) return st;
    if (!cuda_tune_bufs_new(cb, CUDA_TUNER_CONV, total, &tb, nomem, sizeof nomem)) {
        (void)snprintf(why, why_cap, "guessed, not timed: %s", nomem);
        return IMGD_OK;
    }
    const cuk_operand res = {tb.buf + off_r, rt, 0, 1, (int64_t)ny};
    for (int l = 0; l < 2 && st == IMGD_OK; l++) {
        conv_io io = {tb.buf,
                      cuda_cuk_of(n->src[0]),
                      l ? *krsc : ns->cnst[1],
                      tb.buf + off_o,
                      ot,
                      {n->src[2] ? tb.buf + off_b : NULL, CUK_F32, 0, g->P, g->O},
                      fz ? &res : NULL,
                      l == 1 && x_nhwc,
                      tb.buf + off_xs,
                      tb.buf + off_y,
                      ws_max ? tb.buf + off_ws : NULL};
        st         = layout_use(cb, g, ns, l == 1, &lay[l]);
        /* the graph's plans, then the legacy algorithm */
        int32_t np = lay[l].gr ? lay[l].gr->plans.n : 0;
        for (int32_t i = 0; i < np + 1 && st == IMGD_OK; i++) {
            int32_t c = i < np ? i : -1;
            if (c < 0 && !lay[l].found) break;
            conv_trial t   = {cb, ns, g, l == 1, layout_way(&lay[l], c, ws_max), &io};
            float      ms1 = cuda_tune_time(cb, &tb, conv_trial_run, &t);
            if (ms1 >= 0.0f && (ms[l] < 0.0f || ms1 < ms[l])) {
                ms[l]       = ms1;
                lay[l].pick = c;
            }
        }
    }
    *timed = st == IMGD_OK;
    cuda_tune_bufs_free(&tb);
    return st;
}

/* Whether IMGD_CUDA_CONV_NHWC times this convolution: tune, or auto from CUDA_CONV_TUNE_FLOP. */
static bool conv_timed(const cuda_backend *cb, const conv_geom *g) {
    double flop = 2.0 * (double)g->N * (double)g->O * (double)g->P * (double)g->CK;
    return cb->conv_nhwc == CUDA_NHWC_TUNE ||
           (cb->conv_nhwc == CUDA_NHWC_AUTO && flop >= CUDA_CONV_TUNE_FLOP);
}

/* The layout of node n (lay: both found; ns's descriptors NHWC, and left so) as timed now, with
 * the KRSC weight conv_time makes (*krsc, the caller's), or before for its conv_key: *nhwc and *how
 * set, ms its timings. Left as guessed, *how = why, where there is no room to time it. */
static imgd_status conv_choose(cuda_backend *cb, const imgd_tensor *n, const conv_geom *g,
                               cuda_node *ns, conv_layout lay[2], bool *nhwc, void **krsc,
                               float ms[2], const char **how, char *why, size_t why_cap) {
    conv_key key;
    conv_make_key(cb, n, g, &key);
    const conv_pick *known = cuda_tune_find(&cb->picks[CUDA_TUNER_CONV], &key, sizeof key);
    if (known) {
        *nhwc = known->nhwc;
        memcpy(ms, known->ms, 2 * sizeof *ms);
        for (int l = 0; l < 2; l++) /* else layout_pick's default */
            if (layout_has(&lay[l], known->pick[l])) lay[l].pick = known->pick[l];
        *how = "remembered";
        return IMGD_OK;
    }
    bool        timed = false;
    imgd_status st    = conv_time(cb, n, g, ns, lay, krsc, ms, &timed, why, why_cap);
    if (st != IMGD_OK || !timed || (ms[0] < 0.0f && ms[1] < 0.0f)) {
        if (st == IMGD_OK && timed)
            (void)snprintf(why, why_cap, "guessed: neither layout ran when timed");
        *how = why;
        return st;
    }
    *nhwc        = ms[1] >= 0.0f && (ms[0] < 0.0f || ms[1] < ms[0]);
    *how         = "timed";
    conv_pick *p = cuda_tune_add(&cb->picks[CUDA_TUNER_CONV], sizeof *p);
    if (p) {
        p->key  = key;
        p->nhwc = *nhwc;
        memcpy(p->ms, ms, sizeof p->ms);
        p->pick[0] = lay[0].pick;
        p->pick[1] = lay[1].pick;
    }
    return IMGD_OK;
}

/* Installs layout nhwc on ns (its descriptors now in layout cur; krsc: a KRSC copy made already,
 * or NULL): the descriptors, the KRSC weight for NHWC, the candidate lay[nhwc].pick (its graph
 * plan kept in ns->cgraph, or the legacy algorithm) and its workspace. Where lay[nhwc] has no
 * candidate, im2col (ns->cudnn false). Takes both layouts' graphs (freeing the unused). */
static imgd_status layout_apply(cuda_backend *cb, const conv_geom *g, cuda_node *ns,
                                conv_layout lay[2], bool nhwc, bool cur, void *krsc) {
    conv_layout *l  = &lay[nhwc];
    imgd_status  st = IMGD_OK;
    conv_graph_free(lay[!nhwc].gr);
    lay[!nhwc].gr = NULL;
    if (l->pick < 0 || !l->gr) { /* the legacy algorithm */
        conv_graph_free(l->gr);
        l->gr   = NULL;
        l->pick = -1;
    }
    if (cur != nhwc) st = layout_use(cb, g, ns, nhwc, l);
    bool any = l->gr || l->found;
    if (st == IMGD_OK && any && nhwc && !krsc) st = krsc_new(cb, g, ns, &krsc);
    if (st != IMGD_OK || !any) {
        if (krsc) (void)cudaFree(krsc);
        conv_graph_free(l->gr);
        l->gr     = NULL;
        ns->nhwc  = false; /* im2col */
        ns->cudnn = false;
        return st;
    }
    if (nhwc)
        krsc_install(ns, krsc);
    else if (krsc)
        (void)cudaFree(krsc);
    ns->nhwc     = nhwc;
    ns->cudnn    = true;
    ns->algo     = (int32_t)l->perf.algo;
    ns->ws_bytes = l->ws;
    if (l->gr) {
        ns->cplan = l->pick;
        cuda_dnn_plans_keep(&l->gr->plans, l->pick);
        ns->ws_bytes = (size_t)l->gr->plans.ws[0];
        ns->cgraph   = l->gr;
        l->gr        = NULL;
    }
    return IMGD_OK;
}

/* IMGD_CUDA_VERBOSE=1: the node's layout, how it runs (l, as applied) and how the layout was
 * chosen. */
static void layout_report(const cuda_backend *cb, const conv_geom *g, const cuda_node *ns,
                          const conv_layout *l, const float ms[2], const char *how) {
    if (!cb->verbose) return;
    fprintf(stderr, "cuda: conv2d [%lld,%lld,%lld,%lld] -> %lld %lldx%lld: cuDNN %s ",
            (long long)g->N, (long long)g->C, (long long)g->H, (long long)g->W, (long long)g->O,
            (long long)g->KH, (long long)g->KW, ns->nhwc ? "NHWC" : "NCHW");
    if (ns->cgraph)
        fprintf(stderr, "graph plan %d of the heuristics' acceptable ones", (int)l->pick);
    else
        fprintf(stderr, "legacy algo %d, math %d, %.1f us (%s)", (int)l->perf.algo,
                (int)l->perf.mathType, (double)l->perf.time * 1e3,
                cb->cudnn_find ? "timed" : "heuristic");
    fprintf(stderr, ", workspace %zu; layout %s", ns->ws_bytes,
            *how ? how : "by IMGD_CUDA_CONV_NHWC");
    if (ms[0] >= 0.0f || ms[1] >= 0.0f)
        fprintf(stderr, " (NCHW %.3f ms, NHWC %.3f ms)", (double)ms[0], (double)ms[1]);
    fprintf(stderr, "\n");
}

/* Sets ns->cudnn, algo and ws_bytes when cuDNN has an acceptable algorithm; leaves ns->cudnn
 * false (im2col) otherwise. NHWC (ns->nhwc) in f16/bf16 math when the weight is a contiguous
 * constant, x is contiguous, and IMGD_CUDA_CONV_NHWC asks for it (1) or nhwc_wins guesses it
 * (guess, and auto below CUDA_CONV_TUNE_FLOP). A convolution the tuner times (auto, tune) with
 * an algorithm in both layouts keeps both (ns->conv_pending) and the workspace of the larger:
 * cuda_conv2d_choose times them once the storage types and fused residuals are planned. A layout
 * cuDNN has no algorithm for is not taken. Errors only for failing descriptor calls and device
 * memory. */
static imgd_status cudnn_prepare(cuda_backend *cb, const imgd_tensor *n, const conv_geom *g,
                                 cuda_node *ns) {
    if (g->N * g->C * g->H * g->W > INT_MAX || g->N * g->O * g->P > INT_MAX || g->CK == 0 ||
        g->N * g->O * g->P == 0)
        return IMGD_OK;
    bool can = cb->conv_nhwc != CUDA_NHWC_OFF && cuda_math_low(cb) && ns->cnst[1] &&
               imgd_tensor_is_contiguous(n->src[1]) && imgd_tensor_is_contiguous(n->src[0]);
    conv_layout lay[2];
    memset(lay, 0, sizeof lay);
    bool        nhwc = can && cb->conv_nhwc == CUDA_NHWC_ON, cur = nhwc;
    bool        timed = can && !nhwc && conv_timed(cb, g);
    int32_t     plans = timed ? CONV_PLANS_TIMED : 1;
    imgd_status st    = layout_pick(cb, g, ns, nhwc, plans, &lay[nhwc]);
    const float ms[2] = {-1.0f, -1.0f};
    const char *how   = !can ? "the only layout" : nhwc ? "IMGD_CUDA_CONV_NHWC=1" : "guessed";
    bool        guess = st == IMGD_OK && can && !nhwc && nhwc_wins(g, &lay[0].perf, lay[0].found);
    if (st == IMGD_OK && (timed || guess)) {
        st   = layout_pick(cb, g, ns, true, plans, &lay[1]);
        cur  = true;
        nhwc = guess && layout_usable(&lay[1]);
        if (st == IMGD_OK && timed && layout_usable(&lay[0]) && layout_usable(&lay[1])) {
            ns->conv_pending = imgd_malloc(sizeof lay);
            if (!ns->conv_pending) {
                layouts_free(lay);
                return imgd_fail(IMGD_E_NOMEM, "cuda: conv2d: out of host memory");
            }
            memcpy(ns->conv_pending, lay, sizeof lay);
            ns->cudnn    = true; /* NCHW or NHWC: cuda_conv2d_choose */
            ns->nhwc     = nhwc;
            ns->algo     = (int32_t)lay[nhwc].perf.algo;
            ns->ws_bytes = layouts_ws(lay);
            return IMGD_OK;
        }
    }
    if (st != IMGD_OK) {
        layouts_free(lay);
        return st;
    }
    st = layout_apply(cb, g, ns, lay, nhwc, cur, NULL);
    if (st == IMGD_OK && ns->cudnn) layout_report(cb, g, ns, &lay[nhwc], ms, how);
    return st;
}

/* Whether conv2d n's x can come in NHWC from the group norm that computes it: the norm's own
 * storage (not a view, not a graph output), stored in the math type, read by n alone. */
static bool norm_feeds(const cuda_backend *cb, imgd_graph *gr, const imgd_tensor *n) {
    const imgd_tensor *x  = n->src[0];
    const cuda_node   *xs = cuda_node_of(x);
    return cb->norm_nhwc && x == x->storage && x->op == IMGD_OP_GROUP_NORM && x->n_dims == 4 &&
           xs && !xs->is_out && !xs->folded && cuda_cuk_of(x) == cuda_math_cuk(cb) &&
           cuda_readers(gr, x) == 1;
}

imgd_status cuda_conv2d_choose(cuda_backend *cb, imgd_graph *gr) {
    for (size_t i = 0; i < imgd_graph_exec_count(gr); i++) {
        imgd_tensor *n  = imgd_graph_exec_node(gr, i);
        cuda_node   *ns = cuda_node_of(n);
        if (n->op != IMGD_OP_CONV2D || !ns || !ns->cudnn) continue;
        /* what NHWC would read (timed so where the layout is still open), kept where NHWC is
         * taken */
        ns->x_nhwc = (ns->conv_pending || ns->nhwc) && norm_feeds(cb, gr, n);
        if (!ns->conv_pending) {
            if (ns->x_nhwc) cuda_node_of(n->src[0])->out_nhwc = true;
            continue;
        }
        conv_layout lay[2];
        memcpy(lay, ns->conv_pending, sizeof lay);
        imgd_free(ns->conv_pending);
        ns->conv_pending = NULL;
        conv_geom g;
        conv_geometry(n, cuda_math_size(cb), &g);
        bool        nhwc  = ns->nhwc; /* the guess */
        size_t      ws    = ns->ws_bytes;
        void       *krsc  = NULL;
        float       ms[2] = {-1.0f, -1.0f};
        const char *how   = "guessed";
        char        why[160];
        /* the descriptors are NHWC: left so by cudnn_prepare and by conv_choose */
        imgd_status st = conv_choose(cb, n, &g, ns, lay, &nhwc, &krsc, ms, &how, why, sizeof why);
        if (st == IMGD_OK) {
            st = layout_apply(cb, &g, ns, lay, nhwc, true, krsc);
        } else {
            if (krsc) (void)cudaFree(krsc);
            layouts_free(lay);
        }
        if (st != IMGD_OK) return imgd_fail_prefix(st, "cuda: node %zu (conv2d) layout", i);
        ns->ws_bytes = ws; /* the scratch was planned for the larger workspace */
        ns->x_nhwc   = ns->x_nhwc && ns->cudnn && ns->nhwc;
        if (ns->x_nhwc) cuda_node_of(n->src[0])->out_nhwc = true;
        layout_report(cb, &g, ns, &lay[nhwc], ms, how);
    }
    return IMGD_OK;
}

size_t cuda_conv_pick_size(void) {
    return sizeof(conv_pick);
}
#else
size_t cuda_conv_pick_size(void) {
    return 0;
}

imgd_status cuda_conv2d_choose(cuda_backend *cb, imgd_graph *g) {
    IMGD_UNUSED(cb);
    IMGD_UNUSED(g);
    return IMGD_OK;
}
#endif

/* ---- prepare and run ------------------------------------------------------------------------ */

size_t cuda_conv2d_copy_bytes(const cuda_backend *cb, const imgd_tensor *n) {
#ifdef IMGD_HAVE_CUDNN
    if (!cb->use_cudnn || cb->conv_nhwc == CUDA_NHWC_OFF || !cuda_const_weight(cb, n, 1) ||
        !imgd_tensor_is_contiguous(n->src[0]) || !imgd_tensor_is_contiguous(n->src[1]))
        return 0;
    conv_geom g;
    conv_geometry(n, cuda_math_size(cb), &g);
    /* what nhwc_wins guesses (the tuner makes a copy it was not counted for only where it
     * finds the room, and the upload the copy replaces is dropped) */
    if (cb->conv_nhwc != CUDA_NHWC_ON && g.O * g.CK < g.N * g.C * g.H * g.W) return 0;
    return cuda_align_up((size_t)(g.O * g.CK) * cuda_math_size(cb));
#else
    IMGD_UNUSED(cb);
    IMGD_UNUSED(n);
    return 0;
#endif
}

imgd_status cuda_conv2d_prepare(cuda_backend *cb, imgd_tensor *n) {
    conv_geom g;
    size_t    es = cuda_math_size(cb);
    conv_geometry(n, es, &g);
    imgd_status st = cuda_resolve_const(cb, n, 1);
    if (st != IMGD_OK) return st;
#ifdef IMGD_HAVE_CUDNN
    cuda_node *ns = cuda_node_of(n);
    if (cb->use_cudnn && ns) {
        st = cudnn_prepare(cb, n, &g, ns);
        if (st != IMGD_OK) return st;
        if (ns->cudnn) {
            n->scratch_bytes = weights_bytes(cb, n, &g) + cudnn_x_bytes(cb, &g) +
                               cudnn_y_bytes(cb, &g) + ns->ws_bytes;
            return IMGD_OK;
        }
    }
#endif
    size_t cols      = g.direct ? (cuda_math_low(cb) ? (size_t)(g.N * g.C * g.H * g.W) * es : 0)
                                : (size_t)(g.CK * g.chunk) * es;
    n->scratch_bytes = weights_bytes(cb, n, &g) + cols;
    return IMGD_OK;
}

imgd_status cuda_conv2d(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    conv_geom g;
    size_t    es = cuda_math_size(cb);
    conv_geometry(n, es, &g);
    /* the fused ADD runs itself unless the epilogue below writes its result this run */
    const cuda_node *ns = cuda_node_of(n);
    if (ns && ns->fused) cuda_node_of(ns->fused)->gemm_done = false;
    if (g.N * g.O * g.P == 0) return IMGD_OK;
#ifdef IMGD_HAVE_CUDNN
    if (ns && ns->cudnn) return cudnn_run(cb, n, &g, what);
#endif
    float       beta = 0.0f;
    imgd_status st   = cuda_gemm_out_init(cb, n, g.P, g.O, what, &beta);
    if (st != IMGD_OK) return st;
    if (g.CK == 0) {
        if (!n->src[2])
            CUDA_TRY(cudaMemsetAsync(n->data, 0, cuda_store_bytes(n), cb->stream), what);
        return IMGD_OK;
    }
    unsigned char       *scratch = n->scratch;
    const unsigned char *x = cuda_dptr(n->src[0]), *w = cuda_dptr(n->src[1]);
    unsigned char       *col = scratch ? scratch + weights_bytes(cb, n, &g) : NULL;
    float               *out = n->data;
    if (cuda_math_low(cb)) {
        if (ns && ns->cnst[1]) {
            w = ns->cnst[1];
        } else {
            st = cuda_to_math(cb, n->src[1], scratch, what);
            w  = scratch;
        }
        if (st == IMGD_OK && g.direct) {
            st = cuda_to_math(cb, n->src[0], col, what);
            x  = col;
        }
        if (st != IMGD_OK) return st;
    }
    /* x converted (1x1), or read by im2col as stored */
    size_t x_es = cuda_math_low(cb) && g.direct       ? es
                  : cuda_cuk_of(n->src[0]) == CUK_F32 ? sizeof(float)
                                                      : 2;
    for (int64_t b = 0; b < g.N; b++) {
        const unsigned char *xb = x + (size_t)(b * g.C * g.H * g.W) * x_es;
        float               *ob = out + b * g.O * g.P;
        if (g.direct) { /* out_b^T (P x O) = x_b^T (P x C) w^T (C x O) */
            st = cuda_gemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, g.P, g.O, g.C, xb, g.P, 0, w, g.C, 0, beta,
                           ob, g.P, 0, 1, what);
            if (st != IMGD_OK) return st;
            continue;
        }
        for (int64_t p0 = 0; p0 < g.P; p0 += g.chunk) {
            int64_t     pc = g.P - p0 < g.chunk ? g.P - p0 : g.chunk;
            cudaError_t e =
                cuk_im2col(col, cuda_math_cuk(cb), xb, cuda_cuk_of(n->src[0]), g.C, g.H, g.W, g.KH,
                           g.KW, g.sh, g.sw, g.ph, g.pw, g.OW, p0, pc, cb->stream);
            if (e != cudaSuccess) return cuda_fail(e, "cuk_im2col", what);
            /* out_b[:, p0:p0+pc]^T (pc x O, ld P) = col^T (pc x CK) w^T (CK x O) */
            st = cuda_gemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, pc, g.O, g.CK, col, pc, 0, w, g.CK, 0,
                           beta, ob + p0, g.P, 0, 1, what);
            if (st != IMGD_OK) return st;
        }
    }
    return IMGD_OK;
}
