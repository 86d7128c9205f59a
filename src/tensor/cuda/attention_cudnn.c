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

typedef cudnnBackendDescriptor_t bdesc;

static cudnnStatus_t set_desc(bdesc d, cudnnBackendAttributeName_t a, bdesc v) {
    return cudnnBackendSetAttribute(d, a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
}

/* A finalized tensor descriptor: dims/strides (4), uid, dtype; by_value: a host scalar. */
static cudnnStatus_t tensor(bdesc *out, int64_t uid, cudnnDataType_t dt, const int64_t dims[4],
                            const int64_t strides[4], bool by_value) {
    bdesc         t     = NULL;
    int64_t       align = by_value ? 4 : 16;
    cudnnStatus_t s     = cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1,
                                     &align);
    if (s == CUDNN_STATUS_SUCCESS && by_value)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1,
                                     &by_value);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(t);
    if (s != CUDNN_STATUS_SUCCESS && t) (void)cudnnBackendDestroyDescriptor(t);
    *out = s == CUDNN_STATUS_SUCCESS ? t : NULL;
    return s;
}

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

#    define SDPA_CFGS 8 /* engine configurations tried, in the heuristics' order */

/* Every descriptor behind a plan, kept while the plan lives (cuDNN's API does not say that a
 * finalized descriptor owns copies of those set on it), destroyed in reverse order. */
typedef struct sdpa_state {
    bdesc t[SDPA_N], op, graph, heur, cfgs[SDPA_CFGS], plan;
} sdpa_state;

static void sdpa_free(sdpa_state *st) {
    if (!st) return;
    bdesc *all[] = {&st->plan, &st->heur, &st->graph, &st->op};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (*all[i]) (void)cudnnBackendDestroyDescriptor(*all[i]);
    for (int i = 0; i < SDPA_CFGS; i++)
        if (st->cfgs[i]) (void)cudnnBackendDestroyDescriptor(st->cfgs[i]);
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
        s = tensor(&st->t[i], SDPA_Q + i, dt, dims, strides, false);
    }
    if (s == CUDNN_STATUS_SUCCESS)
        s = tensor(&st->t[4], SDPA_SCALE, CUDNN_DATA_FLOAT, one, one, true);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, &st->op);
    static const cudnnBackendAttributeName_t attrs[SDPA_N] = {
        CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC,
        CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC,
        CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC};
    for (int i = 0; i < SDPA_N && s == CUDNN_STATUS_SUCCESS; i++)
        s = set_desc(st->op, attrs[i], st->t[i]);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(st->op);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &st->graph);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(st->graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE,
                                     1, &cb->dnn);
    if (s == CUDNN_STATUS_SUCCESS) s = set_desc(st->graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, st->op);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(st->graph);
    return s;
}

/* The first of the heuristics' engine configurations for st->graph whose execution plan
 * finalizes: st->plan and its workspace bytes. */
static cudnnStatus_t sdpa_plan(const cuda_backend *cb, sdpa_state *st, int64_t *ws) {
    int64_t                count = 0;
    cudnnBackendHeurMode_t mode  = CUDNN_HEUR_MODE_A;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &st->heur);
    if (s == CUDNN_STATUS_SUCCESS)
        s = set_desc(st->heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, st->graph);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(st->heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1,
                                     &mode);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(st->heur);
    for (int i = 0; i < SDPA_CFGS && s == CUDNN_STATUS_SUCCESS; i++)
        s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &st->cfgs[i]);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(st->heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, SDPA_CFGS, &count, st->cfgs);
    if (s == CUDNN_STATUS_SUCCESS && count < 1) s = CUDNN_STATUS_NOT_SUPPORTED;
    cudnnStatus_t last = s;
    for (int64_t i = 0; s == CUDNN_STATUS_SUCCESS && i < count && i < SDPA_CFGS && !st->plan; i++) {
        bdesc p = NULL;
        last    = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p);
        if (last == CUDNN_STATUS_SUCCESS)
            last = cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE,
                                            1, &cb->dnn);
        if (last == CUDNN_STATUS_SUCCESS)
            last = set_desc(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, st->cfgs[i]);
        if (last == CUDNN_STATUS_SUCCESS) last = cudnnBackendFinalize(p);
        int64_t got = 0;
        if (last == CUDNN_STATUS_SUCCESS)
            last = cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                            CUDNN_TYPE_INT64, 1, &got, ws);
        if (last == CUDNN_STATUS_SUCCESS && (got != 1 || *ws < 0)) last = CUDNN_STATUS_BAD_PARAM;
        if (last == CUDNN_STATUS_SUCCESS)
            st->plan = p;
        else if (p)
            (void)cudnnBackendDestroyDescriptor(p);
    }
    return s != CUDNN_STATUS_SUCCESS ? s : st->plan ? CUDNN_STATUS_SUCCESS : last;
}

bool cuda_attn_cudnn_plan(cuda_backend *cb, imgd_tensor *n, char *why, size_t why_cap) {
    cuda_node  *ns      = cuda_node_of(n);
    const char *refusal = sdpa_refusal(cb, n);
    if (refusal) {
        (void)imgd_fmt(why, why_cap, "%s", refusal);
        return false;
    }
    sdpa_state   *st = imgd_calloc(1, sizeof *st);
    int64_t       ws = 0;
    cudnnStatus_t s  = st ? sdpa_graph(cb, n, st) : CUDNN_STATUS_ALLOC_FAILED;
    if (s == CUDNN_STATUS_SUCCESS) s = sdpa_plan(cb, st, &ws);
    if (s != CUDNN_STATUS_SUCCESS) {
        (void)imgd_fmt(why, why_cap, "cuDNN %zu: %s", cudnnGetVersion(), cudnnGetErrorString(s));
        sdpa_free(st);
        return false;
    }
    ns->sdpa_plan = st;
    ns->ws_bytes  = (size_t)ws;
    return true;
}

void cuda_attn_cudnn_release(cuda_node *ns) {
    sdpa_free(ns->sdpa_plan);
    ns->sdpa_plan = NULL;
}

cudnnStatus_t cuda_attn_cudnn_exec(const cuda_backend *cb, const cuda_node *ns, float scale,
                                   void *const ptrs[4], void *ws) {
    int64_t       uids[SDPA_N] = {SDPA_Q, SDPA_K, SDPA_V, SDPA_O, SDPA_SCALE};
    void         *all[SDPA_N]  = {ptrs[0], ptrs[1], ptrs[2], ptrs[3], &scale};
    bdesc         vp           = NULL;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                                     SDPA_N, uids);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                                     SDPA_N, all);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                                     &ws);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(vp);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendExecute(cb->dnn, ((const sdpa_state *)ns->sdpa_plan)->plan, vp);
    if (vp) (void)cudnnBackendDestroyDescriptor(vp);
    return s;
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
