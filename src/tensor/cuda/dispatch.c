/* Host side of the kernels in layout.cu, elementwise.cu, norm.cu and attention.cu: checks what
 * each op's kernel handles (supports_op) and launches it for a node. */
#include <string.h>

#include "base/error.h"
#include "cuda_impl.h"

/* ---- support ------------------------------------------------------------------------------ */

static bool plain_float(imgd_dtype dt) {
    return dt == IMGD_DTYPE_F32 || dt == IMGD_DTYPE_F16 || dt == IMGD_DTYPE_BF16;
}

static bool f32_cont(const imgd_tensor *t) {
    return !t || (t->dtype == IMGD_DTYPE_F32 && imgd_tensor_is_contiguous(t));
}

/* q/k/v: f32 with a unit innermost stride is what the builder guarantees; the kernel reads
 * any strides, so only dtype and head size are checked. */
static bool attention_supported(const imgd_tensor *n) {
    const imgd_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2], *m = n->src[3];
    for (int i = 0; i < 3; i++)
        if (n->src[i]->n_dims != 4 || !plain_float(n->src[i]->dtype)) return false;
    if (q->shape[3] > CUK_ATTN_D_MAX || v->shape[3] > CUK_ATTN_D_MAX) return false;
    if (q->shape[0] > 65535 || q->shape[2] > 65535 || k->shape[1] < 1) return false;
    return !m || (m->dtype == IMGD_DTYPE_F32 && m->n_dims >= 1 && m->n_dims <= 4);
}

void cuda_group_norm_prepare(imgd_tensor *n) {
    const imgd_tensor *x = n->src[0];
    int64_t            N = x->shape[0], C = x->n_dims > 1 ? x->shape[1] : 1;
    int64_t            S = N * C > 0 ? imgd_tensor_numel(x) / (N * C) : 0;
    n->scratch_bytes     = cuk_group_norm_scratch(N, C, S, n->ip[0]);
}

bool cuda_op_supported(const imgd_tensor *n) {
    for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++)
        if (n->src[s] && n->src[s]->n_dims > CUK_MAX_DIMS) return false;
    switch (n->op) {
    case IMGD_OP_CAST:
    case IMGD_OP_PAD:
    case IMGD_OP_UPSAMPLE_NEAREST: return plain_float(n->dtype) && plain_float(n->src[0]->dtype);
    case IMGD_OP_CONCAT:
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++)
            if (n->src[s] && !plain_float(n->src[s]->dtype)) return false;
        return plain_float(n->dtype);
    case IMGD_OP_AVG_POOL2D:
        return n->dtype == IMGD_DTYPE_F32 && f32_cont(n->src[0]) && n->n_dims >= 2;
    case IMGD_OP_GROUP_NORM:
    case IMGD_OP_LAYER_NORM:
    case IMGD_OP_RMS_NORM:
        return f32_cont(n->src[0]) && f32_cont(n->src[1]) && f32_cont(n->src[2]) && n->n_dims >= 1;
    case IMGD_OP_SOFTMAX:
    case IMGD_OP_GEGLU: return f32_cont(n->src[0]) && n->n_dims >= 1;
    case IMGD_OP_ATTENTION: return attention_supported(n);
    case IMGD_OP_GELU:
    case IMGD_OP_GELU_TANH:
    case IMGD_OP_QUICK_GELU:
    case IMGD_OP_SILU:
    case IMGD_OP_CLAMP:
    case IMGD_OP_SCALE:
    case IMGD_OP_TIMESTEP_EMBEDDING: return plain_float(n->src[0]->dtype);
    case IMGD_OP_ADD:
    case IMGD_OP_SUB:
    case IMGD_OP_MUL:
    case IMGD_OP_DIV: return plain_float(n->src[0]->dtype) && plain_float(n->src[1]->dtype);
    case IMGD_OP_ROPE:
        return n->n_dims == 4 && n->ip[2] >= 1 && n->ip[2] <= CUK_ROPE_AXES_MAX &&
               plain_float(n->src[0]->dtype) && plain_float(n->src[1]->dtype);
    default: return false;
    }
}

/* ---- launches ------------------------------------------------------------------------------ */

/* src described with out's shape, broadcasting (numpy rules, right-aligned): stride 0 along
 * the dims src lacks or has size 1. */
static cuk_tensor broadcast_desc(const imgd_tensor *src, const imgd_tensor *out) {
    cuk_tensor d  = cuda_desc(src);
    int32_t    nd = out->n_dims, off = nd - src->n_dims;
    d.n_dims     = nd;
    d.contiguous = imgd_tensor_same_shape(src, out) && imgd_tensor_is_contiguous(src);
    for (int32_t i = nd - 1; i >= 0; i--) {
        int32_t si  = i - off;
        d.shape[i]  = out->shape[i];
        d.stride[i] = si >= 0 && src->shape[si] != 1 ? src->stride[si] : 0;
    }
    return d;
}

bool cuda_operand(const imgd_tensor *src, const imgd_tensor *out, cuk_operand *o) {
    cuk_tensor d = broadcast_desc(src, out);
    return cuk_operand_of(&d, o) != 0;
}

static int32_t unary_code(imgd_op op) {
    switch (op) {
    case IMGD_OP_GELU: return CUK_GELU;
    case IMGD_OP_GELU_TANH: return CUK_GELU_TANH;
    case IMGD_OP_QUICK_GELU: return CUK_QUICK_GELU;
    case IMGD_OP_SILU: return CUK_SILU;
    case IMGD_OP_CLAMP: return CUK_CLAMP;
    default: return CUK_SCALE;
    }
}

static int32_t binary_code(imgd_op op) {
    switch (op) {
    case IMGD_OP_ADD: return CUK_ADD;
    case IMGD_OP_SUB: return CUK_SUB;
    case IMGD_OP_MUL: return CUK_MUL;
    default: return CUK_DIV;
    }
}

static int64_t rows_of(const imgd_tensor *t, int64_t D) {
    return D ? imgd_tensor_numel(t) / D : 0;
}

static cudaError_t launch_concat(const imgd_tensor *n, cudaStream_t s) {
    cuk_tensor srcs[IMGD_TENSOR_SRC_MAX];
    int32_t    k = 0;
    for (int i = 0; i < IMGD_TENSOR_SRC_MAX; i++)
        if (n->src[i]) srcs[k++] = cuda_desc(n->src[i]);
    cuk_tensor out = cuda_desc(n);
    return cuk_concat(&out, srcs, k, (int32_t)n->ip[0], s);
}

static cudaError_t launch_pad(const imgd_tensor *n, cudaStream_t s) {
    int64_t before[CUK_MAX_DIMS] = {0};
    for (int32_t d = 0; d < n->n_dims; d++) before[d] = n->ip[(size_t)2 * d];
    cuk_tensor out = cuda_desc(n), src = cuda_desc(n->src[0]);
    return cuk_pad(&out, &src, before, n->fp[0], s);
}

bool cuda_attn_wmma_supported(const cuda_backend *cb, const imgd_tensor *n) {
    const imgd_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2];
    if (!cuda_math_low(cb) || !attention_supported(n)) return false;
    int64_t D = q->shape[3];
    return D <= CUK_ATTN_WMMA_D_MAX && k->shape[3] == D && v->shape[3] == D &&
           imgd_tensor_is_contiguous(n);
}

void cuda_mask_strides(const imgd_tensor *m, int64_t ms[4]) {
    for (int d = 0; d < 4; d++) ms[d] = 0;
    if (!m) return;
    for (int32_t i = 0; i < m->n_dims; i++) {
        int32_t d = 4 - m->n_dims + i;
        ms[d]     = m->shape[i] == 1 ? 0 : m->stride[i];
    }
}

static cudaError_t launch_attention(const imgd_tensor *n, cudaStream_t s) {
    cuk_tensor         q = cuda_desc(n->src[0]), k = cuda_desc(n->src[1]), v = cuda_desc(n->src[2]);
    const imgd_tensor *m = n->src[3];
    int64_t            ms[4];
    cuda_mask_strides(m, ms);
    return cuk_attention(n->data, cuda_cuk_of(n), &q, &k, &v, m ? cuda_dptr(m) : NULL, ms, n->fp[0],
                         s);
}

cudaError_t cuda_attn_tc_launch(const cuda_backend *cb, const imgd_tensor *n, void *out,
                                const void *const src[4], int32_t mtiles) {
    cuk_tensor         q = cuda_desc(n->src[0]), k = cuda_desc(n->src[1]), v = cuda_desc(n->src[2]);
    const imgd_tensor *m = n->src[3];
    int64_t            ms[4];
    cuda_mask_strides(m, ms);
    q.data = (void *)(uintptr_t)src[0];
    k.data = (void *)(uintptr_t)src[1];
    v.data = (void *)(uintptr_t)src[2];
    if (cb->attn == CUDA_ATTN_WMMA)
        return cuk_attention_wmma(out, cuda_cuk_of(n), &q, &k, &v, m ? src[3] : NULL, ms, n->fp[0],
                                  cuda_math_cuk(cb), cb->stream);
    return cuk_attention_mma(out, cuda_cuk_of(n), &q, &k, &v, m ? src[3] : NULL, ms, n->fp[0],
                             cuda_math_cuk(cb), mtiles, cb->stream);
}

imgd_status cuda_attn_wmma(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    const cuda_node *ns     = cuda_node_of(n);
    const void      *src[4] = {cuda_dptr(n->src[0]), cuda_dptr(n->src[1]), cuda_dptr(n->src[2]),
                          n->src[3] ? cuda_dptr(n->src[3]) : NULL};
    int32_t          mt     = ns && ns->mtiles ? ns->mtiles : cb->attn_mtiles;
    cudaError_t      e      = cuda_attn_tc_launch(cb, n, n->data, src, mt);
    if (e != cudaSuccess)
        return cuda_fail(e, cb->attn == CUDA_ATTN_WMMA ? "cuk_attention_wmma" : "cuk_attention_mma",
                         what);
    return IMGD_OK;
}

static cudaError_t launch(const imgd_tensor *n, cudaStream_t s) {
    const imgd_tensor *x  = n->src[0];
    int64_t            D  = n->n_dims ? n->shape[n->n_dims - 1] : 1;
    int32_t            od = cuda_cuk_of(n), xd = x ? cuda_cuk_of(x) : CUK_F32;
    cuk_tensor         out, a, b;
    switch (n->op) {
    case IMGD_OP_CAST:
        out = cuda_desc(n);
        a   = cuda_desc(x);
        return cuk_copy(&out, &a, s);
    case IMGD_OP_CONCAT: return launch_concat(n, s);
    case IMGD_OP_PAD: return launch_pad(n, s);
    case IMGD_OP_UPSAMPLE_NEAREST:
        out = cuda_desc(n);
        a   = cuda_desc(x);
        return cuk_upsample2x(&out, &a, s);
    case IMGD_OP_AVG_POOL2D: {
        int32_t nd = n->n_dims;
        int64_t H = x->shape[nd - 2], W = x->shape[nd - 1];
        int64_t OH = n->shape[nd - 2], OW = n->shape[nd - 1];
        int64_t planes = H * W > 0 ? imgd_tensor_numel(x) / (H * W) : 0;
        return cuk_avg_pool2d(n->data, od, cuda_dptr(x), xd, planes, H, W, OH, OW,
                              (int32_t)n->ip[0], (int32_t)n->ip[1], (int32_t)n->ip[2], s);
    }
    case IMGD_OP_GROUP_NORM: {
        int64_t N = x->shape[0], C = x->shape[1];
        int64_t S = N * C > 0 ? imgd_tensor_numel(x) / (N * C) : 0;
        return cuk_group_norm(n->data, od, cuda_dptr(x), xd,
                              n->src[1] ? cuda_dptr(n->src[1]) : NULL,
                              n->src[2] ? cuda_dptr(n->src[2]) : NULL, N, C, S, n->ip[0], n->fp[0],
                              (int32_t)n->ip[1], (int32_t)cuda_node_of(n)->out_nhwc, n->scratch, s);
    }
    case IMGD_OP_LAYER_NORM:
        return cuk_layer_norm(
            n->data, od, cuda_dptr(x), xd, n->src[1] ? cuda_dptr(n->src[1]) : NULL,
            n->src[2] ? cuda_dptr(n->src[2]) : NULL, rows_of(n, D), D, n->fp[0], s);
    case IMGD_OP_RMS_NORM:
        return cuk_rms_norm(n->data, od, cuda_dptr(x), xd, n->src[1] ? cuda_dptr(n->src[1]) : NULL,
                            rows_of(n, D), D, n->fp[0], s);
    case IMGD_OP_SOFTMAX:
        return cuk_softmax(n->data, od, cuda_dptr(x), xd, rows_of(n, D), D, n->fp[0], s);
    case IMGD_OP_ATTENTION: return launch_attention(n, s);
    case IMGD_OP_GEGLU: return cuk_geglu(n->data, od, cuda_dptr(x), xd, rows_of(n, D), D, s);
    case IMGD_OP_ADD:
    case IMGD_OP_SUB:
    case IMGD_OP_MUL:
    case IMGD_OP_DIV:
        out = cuda_desc(n);
        a   = broadcast_desc(n->src[0], n);
        b   = broadcast_desc(n->src[1], n);
        return cuk_binary(&out, &a, &b, binary_code(n->op), s);
    case IMGD_OP_TIMESTEP_EMBEDDING:
        a = cuda_desc(x);
        return cuk_timestep(n->data, od, &a, n->shape[0], n->ip[0], (int32_t)n->ip[1], n->fp[0],
                            n->fp[1], s);
    case IMGD_OP_ROPE: {
        cuk_rope_axes axes = {(int32_t)n->ip[2], {0}};
        for (int32_t i = 0; i < axes.n && i < CUK_ROPE_AXES_MAX; i++)
            axes.d[i] = (int32_t)n->ip[3 + i];
        a = cuda_desc(x);
        b = cuda_desc(n->src[1]);
        return cuk_rope(n->data, od, &a, &b, n->ip[0] == 0, n->ip[1], &axes, n->fp[0], s);
    }
    default: /* the unary family */
        a = cuda_desc(x);
        return cuk_unary(n->data, od, &a, unary_code(n->op), n->fp[0], n->fp[1], s);
    }
}

imgd_status cuda_run_op(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    cudaError_t e = launch(n, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "kernel launch", what);
    return IMGD_OK;
}
