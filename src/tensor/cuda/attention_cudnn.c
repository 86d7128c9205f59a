/* Attention through cuDNN's fused scaled-dot-product operation (backend graph API,
 * CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, cuDNN 9.x), IMGD_CUDA_ATTN=cudnn.
 *
 * At plan time each attention node that cuDNN can take (f16/bf16 math; q, k, v and the output
 * stored in the math type; no mask; one head dim, a multiple of 8, that the mma kernel takes
 * too (its fallback); unit stride along it and the other strides multiples of 8) gets an operation
 * graph of the one SDPA operation over Q, K, V [B, H, L, D] (the tensors' [B, L, H, D] strides
 * permuted, so no copies), O and the scale passed by value; cuDNN's heuristics (mode A) list engine
 * configurations and the first whose execution plan finalizes is kept with its workspace
 * (at the start of the node's scratch). A node cuDNN refuses takes the mma kernel instead,
 * as does a run whose operands are not 16-byte aligned (attention_tune.c decides, and with
 * IMGD_CUDA_VERBOSE=1 says which and why). */
#include "cuda_impl.h"

#ifdef IMGD_HAVE_CUDNN
#    include <string.h>

#    include "base/alloc.h"
#    include "base/error.h"
#    include "base/text.h"
#    include "kernels.h"

enum {
    SDPA_Q     = 1,
    SDPA_K     = 2,
    SDPA_V     = 3,
    SDPA_O     = 4,
    SDPA_SCALE = 5,
    SDPA_N     = 5
};

/* t [B, L, H, D] as cuDNN's [B, H, L, D]: dims and strides (elements). */
static void bhsd(const imgd_tensor *t, int64_t dims[4], int64_t strides[4]) {
    dims[0]    = t->shape[0];
    dims[1]    = t->shape[2];
    dims[2]    = t->shape[1];
    dims[3]    = t->shape[3];
    strides[0] = t->stride[0];
    strides[1] = t->stride[2];
    strides[2] = t->stride[1];
    strides[3] = t->stride[3];
}

/* Why cuDNN's SDPA cannot take n in this backend, or NULL. */
static const char *sdpa_refusal(const cuda_backend *cb, const imgd_tensor *n) {
    const imgd_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2];
    int32_t            mt = cuda_math_cuk(cb);
    if (!cb->dnn) return "no cuDNN handle (IMGD_CUDA_CUDNN=0)";
    if (!cuda_math_low(cb)) return "f32 math";
    if (n->src[3]) return "a mask";
    if (q->n_dims != 4 || k->n_dims != 4 || v->n_dims != 4 || n->n_dims != 4) return "not 4-d";
    if (cuda_cuk_of(q) != mt || cuda_cuk_of(k) != mt || cuda_cuk_of(v) != mt ||
        cuda_cuk_of(n) != mt)
        return "an operand or the output not stored in the math type";
    int64_t D = q->shape[3];
    if (k->shape[3] != D || v->shape[3] != D || D % 8)
        return "head dims differ or not a multiple of 8";
    if (!imgd_tensor_is_contiguous(n)) return "a strided output";
    const imgd_tensor *ts[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        if (ts[i]->stride[3] != 1) return "a strided head dim";
        for (int d = 0; d < 3; d++)
            if (ts[i]->stride[d] % 8) return "a stride not a multiple of 8 elements";
    }
    return NULL;
}

/* Every descriptor behind the plan, kept while it lives, destroyed in reverse order. */
typedef struct sdpa_state {
    cuda_bdesc     t[SDPA_N], op, graph;
    cuda_dnn_plans plans; /* one */
} sdpa_state;

static void sdpa_free(sdpa_state *st) {
    if (!st) return;
    cuda_dnn_plans_free(&st->plans);
    if (st->graph) (void)cudnnBackendDestroyDescriptor(st->graph);
    if (st->op) (void)cudnnBackendDestroyDescriptor(st->op);
    for (int i = 0; i < SDPA_N; i++)
        if (st->t[i]) (void)cudnnBackendDestroyDescriptor(st->t[i]);
    imgd_free(st);
}

/* The operation graph of n's SDPA in st->graph (st->t, st->op), finalized. */
static cudnnStatus_t sdpa_graph(const cuda_backend *cb, const imgd_tensor *n, sdpa_state *st) {
    cudnnDataType_t dt = cuda_math_cuk(cb) == CUK_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    int64_t         dims[4], strides[4], one[4] = {1, 1, 1, 1};
    cudnnStatus_t   s = CUDNN_STATUS_SUCCESS;
    for (int i = 0; i < 4 && s == CUDNN_STATUS_SUCCESS; i++) {
        bhsd(i < 3 ? n->src[i] : n, dims, strides);
        s = cuda_dnn_tensor(&st->t[i], SDPA_Q + i, dt, 4, dims, strides, 0);
    }
    if (s == CUDNN_STATUS_SUCCESS)
        s = cuda_dnn_tensor(&st->t[4], SDPA_SCALE, CUDNN_DATA_FLOAT, 4, one, one,
                            CUDA_DNN_BY_VALUE);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, &st->op);
    static const cudnnBackendAttributeName_t attrs[SDPA_N] = {
        CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC,
        CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC,
        CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC};
    for (int i = 0; i < SDPA_N && s == CUDNN_STATUS_SUCCESS; i++)
        s = cuda_dnn_set_desc(st->op, attrs[i], st->t[i]);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(st->op);
    if (s == CUDNN_STATUS_SUCCESS) s = cuda_dnn_graph(cb, &st->op, 1, &st->graph);
    return s;
}

bool cuda_attn_cudnn_plan(cuda_backend *cb, imgd_tensor *n, char *why, size_t why_cap) {
    cuda_node  *ns      = cuda_node_of(n);
    const char *refusal = sdpa_refusal(cb, n);
    if (refusal) {
        (void)imgd_fmt(why, why_cap, "%s", refusal);
        return false;
    }
    sdpa_state   *st = imgd_calloc(1, sizeof *st);
    cudnnStatus_t s  = st ? sdpa_graph(cb, n, st) : CUDNN_STATUS_ALLOC_FAILED;
    if (s == CUDNN_STATUS_SUCCESS)
        s = cuda_dnn_plans_make(cb, st->graph, 1, INT64_MAX, false, &st->plans);
    if (s != CUDNN_STATUS_SUCCESS) {
        (void)imgd_fmt(why, why_cap, "cuDNN %zu: %s", cudnnGetVersion(), cudnnGetErrorString(s));
        sdpa_free(st);
        return false;
    }
    ns->sdpa_plan = st;
    ns->ws_bytes  = (size_t)st->plans.ws[0];
    return true;
}

void cuda_attn_cudnn_release(cuda_node *ns) {
    sdpa_free(ns->sdpa_plan);
    ns->sdpa_plan = NULL;
}

cudnnStatus_t cuda_attn_cudnn_exec(const cuda_backend *cb, const cuda_node *ns, float scale,
                                   void *const ptrs[4], void *ws) {
    static const int64_t uids[SDPA_N] = {SDPA_Q, SDPA_K, SDPA_V, SDPA_O, SDPA_SCALE};
    void                *all[SDPA_N]  = {ptrs[0], ptrs[1], ptrs[2], ptrs[3], &scale};
    return cuda_dnn_exec(cb, ((const sdpa_state *)ns->sdpa_plan)->plans.plan[0], SDPA_N, uids, all,
                         ws);
}

imgd_status cuda_attn_cudnn(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    const cuda_node *ns = cuda_node_of(n);
    void *ptrs[4] = {cuda_dptr(n->src[0]), cuda_dptr(n->src[1]), cuda_dptr(n->src[2]), n->data};
    for (int i = 0; i < 4; i++)
        if (((uintptr_t)ptrs[i] & 15u) != 0) return cuda_attn_wmma(cb, n, what);
    cudnnStatus_t s =
        cuda_attn_cudnn_exec(cb, ns, n->fp[0], ptrs, ns->ws_bytes ? n->scratch : NULL);
    if (s != CUDNN_STATUS_SUCCESS) return cudnn_fail(s, "cudnnBackendExecute (SDPA)", what);
    return IMGD_OK;
}

#endif
