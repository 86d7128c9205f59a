/* cuDNN's backend (graph) API: the descriptor plumbing that the fused SDPA operation
 * (attention_cudnn.c) and the convolution (conv2d.c) share. A graph's tensors and operations
 * are finalized descriptors; cuDNN's heuristics (mode A) list engine configurations for the
 * operation graph, and the first whose execution plan finalizes with at most the allowed
 * workspace are kept, in the heuristics' order, with every descriptor they were made from (cuDNN's
 * API does not say that a finalized descriptor owns copies of those set on it). A plan runs with a
 * variant pack of (uid, device pointer) pairs and the workspace. */
#include "cuda_impl.h"

#ifdef IMGD_HAVE_CUDNN
#    include <string.h>

cudnnStatus_t cuda_dnn_set_desc(cuda_bdesc d, cudnnBackendAttributeName_t a, cuda_bdesc v) {
    return cudnnBackendSetAttribute(d, a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
}

cudnnStatus_t cuda_dnn_tensor(cuda_bdesc *out, int64_t uid, cudnnDataType_t dt, int32_t nd,
                              const int64_t *dims, const int64_t *strides, uint32_t flags) {
    cuda_bdesc    t     = NULL;
    bool          byval = (flags & CUDA_DNN_BY_VALUE) != 0, virt = (flags & CUDA_DNN_VIRTUAL) != 0;
    int64_t       align = byval ? 4 : 16;
    cudnnStatus_t s     = cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, nd, dims);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, nd, strides);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1,
                                     &align);
    if (s == CUDNN_STATUS_SUCCESS && byval)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1,
                                     &byval);
    if (s == CUDNN_STATUS_SUCCESS && virt)
        s = cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(t);
    if (s != CUDNN_STATUS_SUCCESS && t) (void)cudnnBackendDestroyDescriptor(t);
    *out = s == CUDNN_STATUS_SUCCESS ? t : NULL;
    return s;
}

cudnnStatus_t cuda_dnn_graph(const cuda_backend *cb, const cuda_bdesc *ops, int32_t n_ops,
                             cuda_bdesc *graph) {
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, graph);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(*graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1,
                                     &cb->dnn);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(*graph, CUDNN_ATTR_OPERATIONGRAPH_OPS,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, n_ops, ops);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(*graph);
    return s;
}

/* Whether configuration cfg's engine compiles its kernel at plan time (NVRTC): a behaviour
 * note of its engine. An engine whose notes cannot be read counts as precompiled. */
static bool runtime_compiled(cuda_bdesc cfg) {
    cuda_bdesc                 eng = NULL;
    int64_t                    got = 0, n = 0;
    cudnnBackendBehaviorNote_t notes[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &eng);
    if (s == CUDNN_STATUS_SUCCESS && got == 1)
        s = cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                     CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, notes);
    if (eng) (void)cudnnBackendDestroyDescriptor(eng);
    bool rtc = false;
    for (int64_t i = 0;
         s == CUDNN_STATUS_SUCCESS && got == 1 && i < n && i < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; i++)
        rtc = rtc || notes[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION;
    return rtc;
}

/* A finalized execution plan of configuration cfg in *out with its workspace in *ws. */
static cudnnStatus_t plan_of(const cuda_backend *cb, cuda_bdesc cfg, cuda_bdesc *out, int64_t *ws) {
    cuda_bdesc    p   = NULL;
    int64_t       got = 0;
    cudnnStatus_t s   = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1,
                                     &cb->dnn);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cuda_dnn_set_desc(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfg);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(p);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64,
                                     1, &got, ws);
    if (s == CUDNN_STATUS_SUCCESS && (got != 1 || *ws < 0)) s = CUDNN_STATUS_BAD_PARAM;
    if (s != CUDNN_STATUS_SUCCESS && p) (void)cudnnBackendDestroyDescriptor(p);
    *out = s == CUDNN_STATUS_SUCCESS ? p : NULL;
    return s;
}

cudnnStatus_t cuda_dnn_plans_make(const cuda_backend *cb, cuda_bdesc graph, int32_t max,
                                  int64_t ws_max, bool precompiled, cuda_dnn_plans *p) {
    int64_t                count = 0;
    cudnnBackendHeurMode_t mode  = CUDNN_HEUR_MODE_A;
    memset(p, 0, sizeof *p);
    max             = max < 1 ? 1 : max > CUDA_DNN_PLANS ? CUDA_DNN_PLANS : max;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &p->heur);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cuda_dnn_set_desc(p->heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(p->heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1,
                                     &mode);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(p->heur);
    for (int i = 0; i < CUDA_DNN_CFGS && s == CUDNN_STATUS_SUCCESS; i++)
        s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &p->cfgs[i]);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendGetAttribute(p->heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, CUDA_DNN_CFGS, &count, p->cfgs);
    if (s == CUDNN_STATUS_SUCCESS && count < 1) s = CUDNN_STATUS_NOT_SUPPORTED;
    cudnnStatus_t last = s;
    for (int64_t i = 0; s == CUDNN_STATUS_SUCCESS && i < count && i < CUDA_DNN_CFGS && p->n < max;
         i++) {
        if (precompiled && runtime_compiled(p->cfgs[i])) {
            last = CUDNN_STATUS_NOT_SUPPORTED;
            continue;
        }
        int64_t ws = 0;
        last       = plan_of(cb, p->cfgs[i], &p->plan[p->n], &ws);
        if (last == CUDNN_STATUS_SUCCESS && ws > ws_max) {
            (void)cudnnBackendDestroyDescriptor(p->plan[p->n]);
            p->plan[p->n] = NULL;
            last          = CUDNN_STATUS_NOT_SUPPORTED;
        }
        if (last == CUDNN_STATUS_SUCCESS) p->ws[p->n++] = ws;
    }
    return s != CUDNN_STATUS_SUCCESS ? s : p->n ? CUDNN_STATUS_SUCCESS : last;
}

void cuda_dnn_plans_keep(cuda_dnn_plans *p, int32_t keep) {
    if (keep < 0 || keep >= p->n) return;
    for (int32_t i = 0; i < p->n; i++)
        if (i != keep && p->plan[i]) (void)cudnnBackendDestroyDescriptor(p->plan[i]);
    p->plan[0] = p->plan[keep];
    p->ws[0]   = p->ws[keep];
    for (int32_t i = 1; i < p->n; i++) p->plan[i] = NULL;
    p->n = 1;
}

void cuda_dnn_plans_free(cuda_dnn_plans *p) {
    for (int32_t i = 0; i < CUDA_DNN_PLANS; i++)
        if (p->plan[i]) (void)cudnnBackendDestroyDescriptor(p->plan[i]);
    if (p->heur) (void)cudnnBackendDestroyDescriptor(p->heur);
    for (int i = 0; i < CUDA_DNN_CFGS; i++)
        if (p->cfgs[i]) (void)cudnnBackendDestroyDescriptor(p->cfgs[i]);
    memset(p, 0, sizeof *p);
}

cudnnStatus_t cuda_dnn_exec(const cuda_backend *cb, cuda_bdesc plan, int32_t n, const int64_t *uids,
                            void *const *ptrs, void *ws) {
    cuda_bdesc    vp = NULL;
    cudnnStatus_t s  = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n,
                                     uids);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                                     n, ptrs);
    if (s == CUDNN_STATUS_SUCCESS)
        s = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                                     &ws);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(vp);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendExecute(cb->dnn, plan, vp);
    if (vp) (void)cudnnBackendDestroyDescriptor(vp);
    return s;
}
#endif
