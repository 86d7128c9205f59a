/* conv2d through cuDNN (builds with cuDNN, IMGD_CUDA_CUDNN not 0): cudnnConvolutionForward,
 * NCHW, the algorithm picked at plan time by cudnnGetConvolutionForwardAlgorithm_v7 among
 * those that need at most CUDNN_WS_MAX of workspace (kept at the end of the node's scratch).
 * f32 math: f32 tensors, FMA math (no TF32) and only the GEMM-family and direct algorithms
 * (no Winograd/FFT), the bias prefilled and blended with beta = 1. f16/bf16 math: x read in
 * place when stored in that type (else rounded into scratch), the weight a plan-time constant
 * (cuda_resolve_const), y in that type in scratch, then stored with the bias added (one
 * cuk_ewise pass); f32 accumulation. An ADD right after the convolution that only it feeds
 * (a ResNet's residual or time embedding) is done in the same pass (cuda_plan_residuals):
 * its output is written there and the ADD is skipped. A node cuDNN has no algorithm for
 * falls back to im2col.
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

/* ---- cuDNN ---------------------------------------------------------------------------------- */

void cuda_conv2d_release(cuda_node *st) {
#ifdef IMGD_HAVE_CUDNN
    if (st->xd) (void)cudnnDestroyTensorDescriptor(st->xd);
    if (st->yd) (void)cudnnDestroyTensorDescriptor(st->yd);
    if (st->wd) (void)cudnnDestroyFilterDescriptor(st->wd);
    if (st->cd) (void)cudnnDestroyConvolutionDescriptor(st->cd);
    st->xd = st->yd = NULL;
    st->wd          = NULL;
    st->cd          = NULL;
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

/* Replaces the constant weight cnst[1] (OIHW, contiguous, in the math type) with a KRSC
 * (OHWI) copy for NHWC convolution; the copy is the node's (owned[1]). */
static imgd_status weight_to_krsc(cuda_backend *cb, const conv_geom *g, cuda_node *ns) {
    int64_t     hw   = g->KH * g->KW;
    cuk_tensor  src  = {(void *)(uintptr_t)ns->cnst[1], cuda_math_cuk(cb),        4, 0, 0,
                        {g->O, g->KH, g->KW, g->C},     {g->C * hw, g->KW, 1, hw}};
    void       *krsc = NULL;
    imgd_status st   = cuda_copy_new(cb, &src, cuda_math_cuk(cb), &krsc,
                                     "conv2d: the weight in cuDNN's NHWC (KRSC) layout");
    if (st != IMGD_OK) {
        if (krsc) (void)cudaFree(krsc);
        return st;
    }
    if (ns->owned[1]) (void)cudaFree(ns->owned[1]);
    ns->owned[1] = krsc;
    ns->cnst[1]  = krsc;
    return IMGD_OK;
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

/* Whether NHWC beats cuDNN's NCHW choice `nchw` (found or not) under IMGD_CUDA_CONV_NHWC=auto.
 * Measured on an H100 (SD 1.5 f16, batch 2): NCHW half tensors make cuDNN transform the
 * weight in every run, which costs most where the weight outweighs the activation (1280
 * channels at 8x8: 109 us NCHW, 39 NHWC); where the activation is larger, the two transposes
 * around NHWC cost more (320 channels at 64x64: 57 us NCHW, 90 NHWC); and where cuDNN has no
 * tensor-core NCHW algorithm at all (the VAE's 256 channels at 512x512: 10.5 ms NCHW, 1.5 ms
 * NHWC). */
static bool nhwc_wins(const conv_geom *g, const cudnnConvolutionFwdAlgoPerf_t *nchw, bool found) {
    int64_t w = g->O * g->CK, x = g->N * g->C * g->H * g->W;
    return !found || nchw->mathType == CUDNN_DEFAULT_MATH || nchw->mathType == CUDNN_FMA_MATH ||
           w >= x;
}

/* Sets ns->cudnn, algo and ws_bytes when cuDNN has an acceptable algorithm; leaves ns->cudnn
 * false (im2col) otherwise. NHWC (ns->nhwc) in f16/bf16 math when the weight is a
 * contiguous constant, x is contiguous, and IMGD_CUDA_CONV_NHWC asks for it (1) or nhwc_wins
 * (auto). Errors only for failing descriptor calls and device memory. */
static imgd_status cudnn_prepare(cuda_backend *cb, const imgd_tensor *n, const conv_geom *g,
                                 cuda_node *ns) {
    const char *what = "conv2d: cuDNN descriptors";
    if (g->N * g->C * g->H * g->W > INT_MAX || g->N * g->O * g->P > INT_MAX || g->CK == 0 ||
        g->N * g->O * g->P == 0)
        return IMGD_OK;
    bool can = cb->conv_nhwc != CUDA_NHWC_OFF && cuda_math_low(cb) && ns->cnst[1] &&
               imgd_tensor_is_contiguous(n->src[1]) && imgd_tensor_is_contiguous(n->src[0]);
    cudnnConvolutionFwdAlgoPerf_t perf  = {0};
    size_t                        ws    = 0;
    bool                          found = false;
    ns->nhwc                            = can && cb->conv_nhwc == CUDA_NHWC_ON;
    imgd_status st                      = cudnn_describe(cb, g, ns, what);
    if (st == IMGD_OK) st = cudnn_pick(cb, ns, &perf, &ws, &found);
    if (st == IMGD_OK && can && !ns->nhwc && nhwc_wins(g, &perf, found)) {
        ns->nhwc = true;
        st       = cudnn_describe(cb, g, ns, what);
        if (st == IMGD_OK) st = cudnn_pick(cb, ns, &perf, &ws, &found);
    }
    if (st != IMGD_OK) return st;
    if (!found) {
        ns->nhwc = false; /* im2col */
        return IMGD_OK;
    }
    ns->cudnn    = true;
    ns->algo     = (int32_t)perf.algo;
    ns->ws_bytes = ws;
    if (ns->nhwc && (st = weight_to_krsc(cb, g, ns)) != IMGD_OK) return st;
    if (cb->verbose)
        fprintf(stderr,
                "cuda: conv2d [%lld,%lld,%lld,%lld] -> %lld %lldx%lld: cuDNN %s algo %d, math %d, "
                "%.1f us (%s), workspace %zu\n",
                (long long)g->N, (long long)g->C, (long long)g->H, (long long)g->W, (long long)g->O,
                (long long)g->KH, (long long)g->KW, ns->nhwc ? "NHWC" : "NCHW", (int)perf.algo,
                (int)perf.mathType, (double)perf.time * 1e3, cb->cudnn_find ? "timed" : "heuristic",
                ws);
    return IMGD_OK;
}

/* NHWC (f16/bf16 math): x (contiguous NCHW, any dtype) transposed into scratch xs in the
 * math type, convolved into y (NHWC, after it in scratch), and y transposed into the output
 * with the bias and the fused ADD's operand added (cuk_transpose_ewise). */
static imgd_status nhwc_run(cuda_backend *cb, const imgd_tensor *n, const conv_geom *g, void *xs,
                            const void *x, const void *w, void *ws, const char *what) {
    const cuda_node   *ns    = cuda_node_of(n);
    const imgd_tensor *bias  = n->src[2];
    const int32_t      mt    = cuda_math_cuk(cb);
    void              *y     = (unsigned char *)xs + cudnn_x_bytes(cb, g);
    const float        alpha = 1.0f, beta = 0.0f;
    cudaError_t e = cuk_transpose_ewise(xs, mt, x, cuda_cuk_of(n->src[0]), g->N, g->C, g->H * g->W,
                                        NULL, NULL, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cuk_transpose_ewise (x to NHWC)", what);
    CUDNN_TRY(cudnnConvolutionForward(cb->dnn, &alpha, ns->xd, xs, ns->wd, w, ns->cd,
                                      (cudnnConvolutionFwdAlgo_t)ns->algo, ws, ns->ws_bytes, &beta,
                                      ns->yd, y),
              what);
    cuk_operand        bo  = {bias ? cuda_dptr(bias) : NULL, CUK_F32, 0, g->P, g->O}, ro;
    const imgd_tensor *fz  = ns->fused && cuda_fused_out_ok(n, x, w) &&
                                    cuda_operand(ns->fused->src[ns->res_src], ns->fused, &ro)
                                 ? ns->fused
                                 : NULL;
    const imgd_tensor *out = fz ? fz : n;
    e = cuk_transpose_ewise(out->data, cuda_cuk_of(out), y, mt, g->N, g->P, g->O, &bo,
                            fz ? &ro : NULL, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cuk_transpose_ewise (y to NCHW)", what);
    if (fz) cuda_node_of(fz)->gemm_done = true;
    return IMGD_OK;
}

/* f32 math: y = conv + beta * y with y prefilled with the bias (and the fused ADD's other
 * operand, y then being the ADD's output). f16/bf16 math: y in the math type (in scratch,
 * or the node's output when it is stored so and has neither bias nor fused ADD), then
 * out = y + bias (+ the fused operand) in one pass (cuk_ewise). */
static imgd_status cudnn_run(cuda_backend *cb, const imgd_tensor *n, const conv_geom *g,
                             const char *what) {
    const cuda_node          *ns    = cuda_node_of(n);
    const float               alpha = 1.0f;
    unsigned char            *sc    = n->scratch;
    size_t                    wb = weights_bytes(cb, n, g), xb = cudnn_x_bytes(cb, g);
    size_t                    yb   = cudnn_y_bytes(cb, g);
    void                     *ws   = ns->ws_bytes ? sc + wb + xb + yb : NULL;
    cudnnConvolutionFwdAlgo_t algo = (cudnnConvolutionFwdAlgo_t)ns->algo;
    const imgd_tensor        *src = n->src[0], *bias = n->src[2];
    int64_t                   total = g->N * g->O * g->P;
    cuk_operand               bo    = {bias ? cuda_dptr(bias) : NULL, CUK_F32, 0, g->P, g->O}, ro;
    const void               *w     = ns->cnst[1];
    imgd_status               st    = IMGD_OK;
    if (!w) {
        w  = cuda_math_low(cb) ? sc : cuda_dptr(n->src[1]);
        st = cuda_math_low(cb) ? cuda_to_math(cb, n->src[1], sc, what) : IMGD_OK;
    }
    const void *x = cuda_dptr(src);
    if (ns->nhwc) return nhwc_run(cb, n, g, sc + wb, x, w, ws, what);
    /* half activations are read in place; anything else is rounded into scratch */
    if (cuda_math_low(cb) &&
        !(cuda_cuk_of(src) == cuda_math_cuk(cb) && imgd_tensor_is_contiguous(src)) &&
        st == IMGD_OK) {
        st = cuda_to_math(cb, src, sc + wb, what);
        x  = sc + wb;
    }
    if (st != IMGD_OK) return st;
    /* the fused ADD's output written here, its other operand (planned flat) read as ro */
    const imgd_tensor *fz  = ns->fused && cuda_fused_out_ok(n, x, w) &&
                                    cuda_operand(ns->fused->src[ns->res_src], ns->fused, &ro)
                                 ? ns->fused
                                 : NULL;
    const imgd_tensor *out = fz ? fz : n;
    if (!cuda_math_low(cb)) {
        float beta = 0.0f;
        if (bias || fz) {
            cudaError_t e = cuk_ewise(out->data, CUK_F32, total, CUK_ADD, NULL, &bo,
                                      fz ? &ro : NULL, cb->stream);
            if (e != cudaSuccess) return cuda_fail(e, "cuk_ewise (bias prefill)", what);
            beta = 1.0f;
        }
        CUDNN_TRY(cudnnConvolutionForward(cb->dnn, &alpha, ns->xd, x, ns->wd, w, ns->cd, algo, ws,
                                          ns->ws_bytes, &beta, ns->yd, out->data),
                  what);
        if (fz) cuda_node_of(fz)->gemm_done = true;
        return IMGD_OK;
    }
    bool        direct_out = !bias && !fz && cuda_cuk_of(n) == cuda_math_cuk(cb);
    void       *y          = direct_out ? n->data : sc + wb + xb;
    const float beta       = 0.0f;
    CUDNN_TRY(cudnnConvolutionForward(cb->dnn, &alpha, ns->xd, x, ns->wd, w, ns->cd, algo, ws,
                                      ns->ws_bytes, &beta, ns->yd, y),
              what);
    if (direct_out) return IMGD_OK;
    cuk_operand yo = {y, cuda_math_cuk(cb), 0, 1, total};
    cudaError_t e  = cuk_ewise(out->data, cuda_cuk_of(out), total, CUK_ADD, &yo, &bo,
                              fz ? &ro : NULL, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cuk_ewise (conv2d epilogue)", what);
    if (fz) cuda_node_of(fz)->gemm_done = true;
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
    if (cb->conv_nhwc == CUDA_NHWC_AUTO && g.O * g.CK < g.N * g.C * g.H * g.W) return 0;
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
