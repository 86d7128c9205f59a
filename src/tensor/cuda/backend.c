/* CUDA backend: the vtable, device memory, weight and input uploads, and node dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"
#include "cuda_impl.h"
#include "formats/dtype.h"
#include "formats/quant.h"
#include "tensor/cuda/cuda.h"

/* ---- errors and addresses --------------------------------------------------------------- */

imgd_status cuda_fail(cudaError_t e, const char *call, const char *what) {
    (void)cudaGetLastError(); /* clear a non-sticky error so later calls start clean */
    imgd_status st = e == cudaErrorMemoryAllocation ? IMGD_E_NOMEM : IMGD_E_DEVICE;
    return imgd_fail(st, "cuda: %s: %s failed: %s (%s)", what ? what : "?", call,
                     cudaGetErrorName(e), cudaGetErrorString(e));
}

imgd_status cublas_fail(cublasStatus_t s, const char *call, const char *what) {
    imgd_status st = s == CUBLAS_STATUS_ALLOC_FAILED ? IMGD_E_NOMEM : IMGD_E_DEVICE;
    return imgd_fail(st, "cuda: %s: %s failed: %s (%s)", what ? what : "?", call,
                     cublasGetStatusName(s), cublasGetStatusString(s));
}

#ifdef IMGD_HAVE_CUDNN
imgd_status cudnn_fail(cudnnStatus_t s, const char *call, const char *what) {
    imgd_status st = s == CUDNN_STATUS_ALLOC_FAILED ? IMGD_E_NOMEM : IMGD_E_DEVICE;
    return imgd_fail(st, "cuda: %s: %s failed: %s (set IMGD_CUDA_CUDNN=0 to use im2col + GEMM)",
                     what ? what : "?", call, cudnnGetErrorString(s));
}
#endif

static int32_t cuk_of_dtype(imgd_dtype dt) {
    return dt == IMGD_DTYPE_F16 ? CUK_F16 : dt == IMGD_DTYPE_BF16 ? CUK_BF16 : CUK_F32;
}

int32_t cuda_cuk_of(const imgd_tensor *t) {
    const imgd_tensor *s = t->storage;
    if (s->kind == IMGD_TENSOR_ACTIVATION && s->op != IMGD_OP_NONE && s->backend_data &&
        cuda_node_of(s)->half_dt)
        return cuda_node_of(s)->half_dt;
    return cuk_of_dtype(t->dtype);
}

size_t cuda_store_bytes(const imgd_tensor *t) {
    return (size_t)imgd_tensor_numel(t) * (cuda_cuk_of(t) == CUK_F32 ? 4 : 2);
}

void *cuda_dptr(const imgd_tensor *t) {
    const imgd_tensor *s = t->storage;
    if (!s->backend_data) return t->data;
    if (s->kind == IMGD_TENSOR_ACTIVATION) {
        const cuda_node *ns   = s->op != IMGD_OP_NONE ? cuda_node_of(s) : NULL;
        unsigned char   *base = ns && ns->folded ? ns->dev : s->data;
        /* half storage: the planner placed views at f32 offsets; elements are 2 bytes */
        if (ns && ns->half_dt) return base + (size_t)t->offset * 2;
        if (!ns || !ns->folded) return t->data;
        return base + (size_t)((const unsigned char *)t->data - (const unsigned char *)s->data);
    }
    size_t off = (size_t)((const unsigned char *)t->data - (const unsigned char *)s->data);
    return (unsigned char *)s->backend_data + off;
}

cuk_tensor cuda_desc(const imgd_tensor *t) {
    cuk_tensor d;
    memset(&d, 0, sizeof d);
    d.data       = cuda_dptr(t);
    d.dtype      = cuda_cuk_of(t);
    d.n_dims     = t->n_dims;
    d.contiguous = imgd_tensor_is_contiguous(t);
    for (int32_t i = 0; i < t->n_dims && i < CUK_MAX_DIMS; i++) {
        d.shape[i]  = t->shape[i];
        d.stride[i] = t->stride[i];
    }
    return d;
}

/* ---- vtable: memory --------------------------------------------------------------------- */

static const char *cuda_name(const imgd_backend *be) {
    IMGD_UNUSED(be);
    return "cuda";
}

#define MIB(b) ((double)(b) / 1048576.0)

/* The advice every out-of-device-memory error ends with. */
#define VRAM_ADVICE                                                                                \
    "run the text encoders / VAE on the CPU (--offload te,vae), use --precision f16, a smaller "   \
    "size or batch, or free the device (other processes, other models)"

/* A graph's planned activations (and other backend buffers): checked against the device's
 * free memory first, so a card that is too small is named with the numbers. */
static imgd_status cuda_alloc(imgd_backend *be, size_t n, void **out) {
    cuda_backend *cb = be->ctx;
    void         *p  = NULL;
    char          what[64];
    (void)imgd_fmt(what, sizeof what, "allocating %zu bytes on device %d", n, cb->device);
    CUDA_TRY(cudaSetDevice(cb->device), what);
    size_t fr = 0, total = 0;
    CUDA_TRY(cudaMemGetInfo(&fr, &total), what);
    if (n > fr)
        return imgd_fail(IMGD_E_NOMEM,
                         "cuda: device %d needs %.0f MiB more for a graph's activations but has "
                         "%.0f MiB free of %.0f MiB; " VRAM_ADVICE,
                         cb->device, MIB(n), MIB(fr), MIB(total));
    CUDA_TRY(cudaMalloc(&p, n), what); /* 256-byte aligned: >= IMGD_TENSOR_ALIGN */
    IMGD_LOG(IMGD_LOG_DEBUG, "cuda", "alloc", "device %d: %.1f MiB of activations (%.0f MiB free)",
             cb->device, MIB(n), MIB(fr - n));
    *out = p;
    return IMGD_OK;
}

static void cuda_buffer_free(imgd_backend *be, void *p) {
    IMGD_UNUSED(be);
    if (p) (void)cudaFree(p);
}

static imgd_status cuda_read(imgd_backend *be, const void *src, void *dst, size_t n) {
    return cuda_exec_read(be->ctx, src, dst, n);
}

/* ---- vtable: support -------------------------------------------------------------------- */

static bool cuda_supports(const imgd_backend *be, const imgd_tensor *n) {
    IMGD_UNUSED(be);
    if (n->n_dims > CUK_MAX_DIMS) return false;
    switch (n->op) {
    case IMGD_OP_DEQUANTIZE: return cuda_dequantize_supported(n);
    case IMGD_OP_LINEAR_QUANT: return cuda_linear_quant_supported(n);
    case IMGD_OP_MATMUL: return cuda_matmul_supported(n);
    case IMGD_OP_CONV2D: return cuda_conv2d_supported(n);
    default: return cuda_op_supported(n);
    }
}

/* ---- vtable: prepare and release --------------------------------------------------------- */

static void node_free(cuda_node *st) {
    if (!st) return;
    if (st->dev) (void)cudaFree(st->dev);
    for (int s = 0; s < 2; s++)
        if (st->owned[s]) (void)cudaFree(st->owned[s]);
    if (st->lt_bias_owned) (void)cudaFree(st->lt_bias_owned);
    cuda_conv2d_release(st);
#ifdef IMGD_HAVE_CUDNN
    cuda_attn_cudnn_release(st);
#endif
    imgd_free(st);
}

/* ---- shared weight copies ------------------------------------------------------------------ */

/* 64 bytes sampled across the buffer and its last byte, FNV-1a: tells a buffer rewritten in
 * place (a merged LoRA, a freed and reused address) from the one uploaded, without reading
 * it all. */
static uint64_t host_fingerprint(const void *p, size_t n) {
    const unsigned char *b    = p;
    uint64_t             h    = 1469598103934665603ULL ^ (uint64_t)n;
    size_t               step = n > 64 ? n / 64 : 1;
    for (size_t i = 0; i < n; i += step) h = (h ^ b[i]) * 1099511628211ULL;
    if (n) h = (h ^ b[n - 1]) * 1099511628211ULL;
    return h;
}

/* The copy of weight leaf s another plan holds, or NULL. The bytes are sampled only when a
 * copy of the same address and size exists (a plan refused for its size reads nothing). */
static cuda_weight *weight_find(cuda_backend *cb, const imgd_tensor *s) {
    bool     have_fp = false;
    uint64_t fp      = 0;
    for (size_t i = 0; i < cb->n_wts; i++) {
        if (cb->wts[i].host != s->data || cb->wts[i].nbytes != s->nbytes) continue;
        if (!have_fp) fp = host_fingerprint(s->data, s->nbytes);
        have_fp = true;
        if (cb->wts[i].fp == fp) return &cb->wts[i];
    }
    return NULL;
}

/* A plan lets go of weight copy dev (freed when no plan holds it). */
static void weight_drop(cuda_backend *cb, void *dev) {
    for (size_t i = 0; i < cb->n_wts; i++) {
        if (cb->wts[i].dev != dev) continue;
        if (--cb->wts[i].refs == 0) {
            (void)cudaFree(dev);
            cb->wts[i] = cb->wts[--cb->n_wts];
        }
        return;
    }
    (void)cudaFree(dev); /* not shared (its entry could not be recorded) */
}

/* Frees every device copy (leaves': weights, inputs) and every node's state. */
static void cuda_release(imgd_backend *be, imgd_graph *g) {
    cuda_backend *cb = be->ctx;
    cuda_exec_forget(cb, g);
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        imgd_tensor *t = imgd_graph_tensor(g, i);
        if (!t->backend_data) continue;
        if (t->op == IMGD_OP_NONE && t->kind == IMGD_TENSOR_WEIGHT)
            weight_drop(cb, t->backend_data);
        else if (t->op == IMGD_OP_NONE)
            (void)cudaFree(t->backend_data);
        else
            node_free(t->backend_data);
        t->backend_data = NULL;
    }
}

/* Device copy of leaf storage s: an input's memory, or a weight's bytes, uploaded now unless
 * another plan holds a copy of the same bytes (then shared). */
static imgd_status upload_leaf(cuda_backend *cb, imgd_tensor *s) {
    char what[160];
    (void)imgd_fmt(what, sizeof what, "%s '%s' (%zu bytes)",
                   s->kind == IMGD_TENSOR_WEIGHT ? "uploading weight" : "allocating input",
                   s->name ? s->name : "?", s->nbytes);
    if (s->kind == IMGD_TENSOR_WEIGHT) {
        cuda_weight *have = weight_find(cb, s);
        if (have) {
            have->refs++;
            s->backend_data = have->dev;
            return IMGD_OK;
        }
    }
    void *p = NULL;
    CUDA_TRY(cudaMalloc(&p, s->nbytes ? s->nbytes : 1), what);
    s->backend_data = p; /* release frees it, even when the copy below fails */
    if (s->kind != IMGD_TENSOR_WEIGHT) return IMGD_OK;
    if (s->nbytes)
        CUDA_TRY(cudaMemcpyAsync(p, s->data, s->nbytes, cudaMemcpyHostToDevice, cb->stream), what);
    if (cb->n_wts == cb->cap_wts) {
        size_t       cap = cb->cap_wts ? cb->cap_wts * 2 : 256;
        cuda_weight *w   = imgd_realloc(cb->wts, cap * sizeof *w);
        if (!w) return IMGD_OK; /* kept unshared: weight_drop frees it */
        cb->wts     = w;
        cb->cap_wts = cap;
    }
    cb->wts[cb->n_wts++] =
        (cuda_weight){s->data, s->nbytes, host_fingerprint(s->data, s->nbytes), p, 1};
    return IMGD_OK;
}

/* Folds DEQUANTIZE node n: its weight's blocks are expanded on the device into the node's
 * own memory, in its storage type. The blocks go up to a temporary buffer unless another node
 * already uploaded the weight. */
static imgd_status fold_dequantize(cuda_backend *cb, imgd_tensor *n, cuda_node *ns) {
    const imgd_tensor *w = n->src[0], *s = w->storage;
    char               what[160];
    (void)imgd_fmt(what, sizeof what, "dequantizing weight '%s' (%s)", s->name ? s->name : "?",
                   imgd_dtype_name(w->dtype));
    size_t      off = cuda_quant_offset(w), qbytes = imgd_tensor_nbytes(w);
    const void *src = s->backend_data ? (const unsigned char *)s->backend_data + off : NULL;
    void       *tmp = NULL, *p = NULL;
    if (!src) {
        CUDA_TRY(cudaMalloc(&tmp, qbytes ? qbytes : 1), what);
        cudaError_t e = cudaMemcpyAsync(tmp, (const unsigned char *)s->data + off, qbytes,
                                        cudaMemcpyHostToDevice, cb->stream);
        if (e != cudaSuccess) {
            (void)cudaFree(tmp);
            return cuda_fail(e, "cudaMemcpyAsync", what);
        }
        src = tmp;
    }
    cudaError_t e  = cudaMalloc(&p, cuda_store_bytes(n) ? cuda_store_bytes(n) : 1);
    imgd_status st = e == cudaSuccess ? IMGD_OK : cuda_fail(e, "cudaMalloc", what);
    if (st == IMGD_OK) {
        ns->dev = p;
        st      = cuda_dequant(cb, w, src, p, cuda_cuk_of(n), what);
    }
    if (tmp) { /* the kernel reads it: wait before freeing */
        e = cudaStreamSynchronize(cb->stream);
        if (st == IMGD_OK && e != cudaSuccess) st = cuda_fail(e, "cudaStreamSynchronize", what);
        (void)cudaFree(tmp);
    }
    ns->folded = st == IMGD_OK;
    return st;
}

/* A CAST runs only when something reads its result as data: a node other than a GEMM that
 * reads the cast weight directly (cuda_node.cnst), or the caller (a graph output). */
static void mark_skipped_casts(imgd_graph *g) {
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n  = imgd_graph_exec_node(g, i);
        const cuda_node   *ns = cuda_node_of(n);
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++) {
            const imgd_tensor *src = n->src[s] ? n->src[s]->storage : NULL;
            if (!src || src->op != IMGD_OP_CAST || !src->backend_data) continue;
            if (!(s < 2 && ns && ns->cnst[s])) cuda_node_of(src)->needed = true;
        }
    }
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        const imgd_tensor *t = imgd_graph_tensor(g, i);
        if (t->is_output && t->storage->op == IMGD_OP_CAST && t->storage->backend_data)
            cuda_node_of(t->storage)->needed = true;
    }
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        cuda_node *ns = cuda_node_of(imgd_graph_exec_node(g, i));
        if (imgd_graph_exec_node(g, i)->op == IMGD_OP_CAST && ns) ns->skip = !ns->needed;
    }
}

/* Marks the nodes whose results the caller reads (graph outputs, or views of them). */
static void mark_outputs(imgd_graph *g) {
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        const imgd_tensor *t = imgd_graph_tensor(g, i);
        if (t->is_output && t->storage->op != IMGD_OP_NONE && t->storage->backend_data)
            cuda_node_of(t->storage)->is_out = true;
    }
}

/* Constants are computed once, at plan time, into the node's own device memory: a CAST of a
 * weight of at most CUDA_FOLD_MAX elements (biases and norm scales; larger casts in f32 math
 * would double the weights' memory, and in f16/bf16 math GEMMs read their weights directly),
 * in f32, before plan_storage; and a DEQUANTIZE, in its storage type, after it. Not for nodes
 * the caller reads (graph outputs): an output DEQUANTIZE runs each time from its uploaded
 * weight. */
#define CUDA_FOLD_MAX ((int64_t)1 << 20)

static imgd_status fold_casts(cuda_backend *cb, imgd_graph *g) {
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        imgd_tensor       *n  = imgd_graph_exec_node(g, i);
        cuda_node         *ns = cuda_node_of(n);
        const imgd_tensor *w  = n->src[0] ? n->src[0]->storage : NULL;
        if (!ns || ns->is_out || n->op != IMGD_OP_CAST || ns->skip || !w || w->op != IMGD_OP_NONE ||
            w->kind != IMGD_TENSOR_WEIGHT || imgd_tensor_numel(n) > CUDA_FOLD_MAX)
            continue;
        char what[160];
        (void)imgd_fmt(what, sizeof what, "folding the cast of weight '%s'",
                       w->name ? w->name : "?");
        cuk_tensor src = cuda_desc(n->src[0]);
        /* a view of the weight gets its address at compute: locate it in the weight now */
        src.data = (unsigned char *)w->backend_data +
                   (size_t)n->src[0]->offset * imgd_dtype_size(n->src[0]->dtype);
        imgd_status st = cuda_copy_new(cb, &src, cuda_desc(n).dtype, &ns->dev, what);
        if (st != IMGD_OK) return st;
        ns->folded = true;
    }
    return IMGD_OK;
}

static imgd_status fold_dequantizes(cuda_backend *cb, imgd_graph *g) {
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        imgd_tensor *n  = imgd_graph_exec_node(g, i);
        cuda_node   *ns = cuda_node_of(n);
        if (n->op != IMGD_OP_DEQUANTIZE || !ns) continue;
        imgd_tensor *w  = n->src[0]->storage;
        imgd_status  st = IMGD_OK;
        if (!ns->is_out)
            st = fold_dequantize(cb, n, ns);
        else if (!w->backend_data)
            st = upload_leaf(cb, w);
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

/* Operands kernels read as raw f32 (biases, norm scales, attention masks): their producers
 * keep f32 storage. */
static bool raw_f32_operand(const imgd_tensor *n, int s) {
    switch (n->op) {
    case IMGD_OP_MATMUL:
    case IMGD_OP_CONV2D:
    case IMGD_OP_LINEAR_QUANT: return s == 2;
    case IMGD_OP_GROUP_NORM:
    case IMGD_OP_LAYER_NORM:
    case IMGD_OP_RMS_NORM: return s == 1 || s == 2;
    case IMGD_OP_ATTENTION: return s == 3;
    default: return false;
    }
}

/* cuda_backend.half_act: which f32 activations are stored in the math type. Not: graph
 * outputs (the host reads f32), folded casts (f32 copies), skipped casts, conv2d through im2col
 * (its GEMM writes f32), raw-f32 operands. */
static void plan_storage(cuda_backend *cb, imgd_graph *g) {
    if (!cb->half_act || !cuda_math_low(cb)) return;
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        imgd_tensor *n  = imgd_graph_exec_node(g, i);
        cuda_node   *ns = cuda_node_of(n);
        if (!ns || n->dtype != IMGD_DTYPE_F32 || n->storage != n || ns->folded || ns->is_out ||
            ns->skip || (n->op == IMGD_OP_CONV2D && !ns->cudnn))
            continue;
        ns->half_dt = cuda_math_cuk(cb);
    }
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n = imgd_graph_exec_node(g, i);
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++) {
            const imgd_tensor *p = n->src[s] ? n->src[s]->storage : NULL;
            if (p && raw_f32_operand(n, s) && p->op != IMGD_OP_NONE && p->backend_data)
                cuda_node_of(p)->half_dt = 0;
        }
    }
}

static imgd_status prepare_node(cuda_backend *cb, imgd_tensor *n) {
    cuda_node *state = imgd_calloc(1, sizeof *state);
    if (!state) return imgd_fail(IMGD_E_NOMEM, "cuda: node state: out of host memory");
    n->backend_data = state; /* release frees it, even when a step below fails */
    if (n->op == IMGD_OP_DEQUANTIZE) return IMGD_OK; /* fold_dequantizes */
    imgd_status st = IMGD_OK;
    for (int s = 0; s < IMGD_TENSOR_SRC_MAX && st == IMGD_OK; s++) {
        imgd_tensor *src = n->src[s] ? n->src[s]->storage : NULL;
        if (src && src->op == IMGD_OP_NONE && src->kind != IMGD_TENSOR_ACTIVATION &&
            !src->backend_data)
            st = upload_leaf(cb, src);
    }
    /* a cast of a weight: its source is uploaded too (GEMMs may read it directly) */
    if (st == IMGD_OK && n->op == IMGD_OP_CONV2D) st = cuda_conv2d_prepare(cb, n);
    if (st == IMGD_OK && n->op == IMGD_OP_MATMUL) st = cuda_matmul_prepare(cb, n);
    if (st == IMGD_OK && n->op == IMGD_OP_LINEAR_QUANT) st = cuda_linear_quant_prepare(cb, n);
    if (st == IMGD_OK && n->op == IMGD_OP_GROUP_NORM) cuda_group_norm_prepare(n);
    if (st == IMGD_OK && n->op == IMGD_OP_ATTENTION) {
        const bool tc =
            cb->attn == CUDA_ATTN_WMMA || cb->attn == CUDA_ATTN_MMA || cb->attn == CUDA_ATTN_CUDNN;
        state->attn_wmma = tc && cuda_attn_wmma_supported(cb, n);
        /* wmma / mma fall back to gemm (head dims over CUK_ATTN_WMMA_D_MAX, e.g. the VAE's
         * 512) */
        state->attn_gemm =
            !state->attn_wmma && (cb->attn == CUDA_ATTN_GEMM || tc) && cuda_attn_gemm_supported(n);
        if (state->attn_gemm) cuda_attn_gemm_prepare(cb, n);
    }
    return st;
}

static void count_paths(const imgd_graph *g, imgd_cuda_paths *p) {
    memset(p, 0, sizeof *p);
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n  = imgd_graph_exec_node(g, i);
        const cuda_node   *ns = cuda_node_of(n);
        if (!ns) continue;
        if (n->op == IMGD_OP_CONV2D) {
            p->conv_cudnn += ns->cudnn;
            p->conv_nhwc += ns->nhwc;
            p->conv_x_nhwc += ns->x_nhwc;
            p->conv_graph += ns->cgraph != NULL;
            p->conv_graph_other += ns->cgraph && ns->cplan > 0;
            p->conv_im2col += !ns->cudnn;
        }
        if (n->op == IMGD_OP_ATTENTION) {
            p->attn_gemm += ns->attn_gemm;
            p->attn_tc += ns->attn_wmma;
            p->attn_cudnn += ns->attn_cudnn;
            p->attn_flash += !ns->attn_gemm && !ns->attn_wmma && !ns->attn_cudnn;
        }
        if (n->op == IMGD_OP_CAST) {
            p->casts++;
            p->casts_skipped += ns->skip;
        }
        if (n->op == IMGD_OP_LINEAR_QUANT) {
            p->lq_rows += ns->lq_rows;
            p->lq_expanded += ns->owned[1] != NULL;
            p->lq_tiles += !ns->lq_rows && ns->owned[1] == NULL;
        }
        p->folded += ns->folded;
        p->half_act += ns->half_dt != 0;
        p->lt_bias += ns->lt_bias != NULL;
        p->fused_add += ns->fused && ns->fused->op == IMGD_OP_ADD;
        p->fused_gelu += ns->fused && ns->fused->op == IMGD_OP_GELU_TANH;
        for (int s = 0; s < 2; s++) {
            p->weights_direct += ns->cnst[s] && !ns->owned[s];
            p->weights_converted += ns->owned[s] != NULL && n->op != IMGD_OP_LINEAR_QUANT;
        }
    }
}

/* IMGD_CUDA_VERBOSE=1: one line per plan saying which path each GEMM-family node took. */
static void report_paths(const cuda_backend *cb, imgd_graph *g) {
    imgd_cuda_paths p;
    count_paths(g, &p);
    fprintf(
        stderr,
        "cuda: plan of %zu nodes (%s math): conv2d %d cuDNN (%d through its graph API, %d NHWC, "
        "%d of them reading x as their group norm wrote it) + %d im2col; attention %d "
        "cuDNN SDPA + %d %s + %d gemm + %d flash; weight operands %d as uploaded + %d converted at "
        "plan; casts %d of %d "
        "skipped; %d constants folded at plan; %d activations stored in the math type; %d GEMMs "
        "with the bias in the cuBLASLt epilogue; %d residual adds and %d GELUs run in their GEMM "
        "or convolution; linear_quant %d expanded at plan + %d expanded per tile + %d read in "
        "blocks\n",
        imgd_graph_exec_count(g), cb->math == IMGD_GPU_MATH_F32 ? "f32" : "f16/bf16", p.conv_cudnn,
        p.conv_graph, p.conv_nhwc, p.conv_x_nhwc, p.conv_im2col, p.attn_cudnn, p.attn_tc,
        cb->attn == CUDA_ATTN_WMMA ? "wmma" : "mma", p.attn_gemm, p.attn_flash, p.weights_direct,
        p.weights_converted, p.casts_skipped, p.casts, p.folded, p.half_act, p.lt_bias, p.fused_add,
        p.fused_gelu, p.lq_expanded, p.lq_tiles, p.lq_rows);
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (const void *const *)a, y = (uintptr_t) * (const void *const *)b;
    return x < y ? -1 : x > y;
}

/* Device memory prepare will take: weights not yet uploaded (each storage once) and the f32
 * expansions of quantized weights (DEQUANTIZE; their blocks go up to a temporary buffer). */
static imgd_status upload_need(cuda_backend *cb, imgd_graph *g, size_t *need, size_t *n_weights) {
    size_t       cap = 0, k = 0;
    const void **seen = NULL;
    *need = *n_weights = 0;
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n = imgd_graph_exec_node(g, i);
        if (n->op == IMGD_OP_DEQUANTIZE) *need += imgd_tensor_nbytes(n);
        /* copies converted at plan time (the weights they come from may be dropped after) */
        if (n->op == IMGD_OP_MATMUL || n->op == IMGD_OP_CONV2D)
            for (int s = n->op == IMGD_OP_MATMUL ? 0 : 1; s < 2; s++)
                *need += cuda_const_copy_bytes(cb, n, s);
        if (n->op == IMGD_OP_CONV2D) *need += cuda_conv2d_copy_bytes(cb, n);
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++) {
            const imgd_tensor *w = n->src[s] ? n->src[s]->storage : NULL;
            if (!w || w->op != IMGD_OP_NONE || w->kind == IMGD_TENSOR_ACTIVATION || w->backend_data)
                continue;
            if (k == cap) {
                cap             = cap ? cap * 2 : 1024;
                const void **ns = imgd_realloc(seen, cap * sizeof *ns);
                if (!ns) {
                    imgd_free(seen);
                    return imgd_fail(IMGD_E_NOMEM, "cuda: planning: out of host memory");
                }
                seen = ns;
            }
            seen[k++] = w;
        }
    }
    if (k) qsort(seen, k, sizeof *seen, cmp_ptr);
    for (size_t i = 0; i < k; i++) {
        if (i && seen[i] == seen[i - 1]) continue;
        const imgd_tensor *w = seen[i];
        if (w->kind == IMGD_TENSOR_WEIGHT && weight_find(cb, w))
            continue; /* another plan's copy serves */
        *need += w->nbytes;
        *n_weights += w->kind == IMGD_TENSOR_WEIGHT;
    }
    imgd_free(seen);
    return IMGD_OK;
}

/* Drops the device copies of weights that no node of plan g reads any more, when no other
 * plan holds them: every reader keeps its own copy made at plan time (a conv2d's KRSC
 * weight, a GEMM operand converted to the math type: cuda_node.owned) or is a CAST that is
 * skipped or folded. So a converted weight does not hold its memory twice. */
static void drop_unread_weights(cuda_backend *cb, imgd_graph *g) {
    size_t nt   = imgd_graph_tensor_count(g);
    bool  *read = imgd_calloc(nt ? nt : 1, sizeof *read);
    if (!read) return; /* keeps them all */
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n  = imgd_graph_exec_node(g, i);
        const cuda_node   *ns = cuda_node_of(n);
        bool               gemm =
            n->op == IMGD_OP_CONV2D || n->op == IMGD_OP_MATMUL || n->op == IMGD_OP_LINEAR_QUANT;
        if (n->op == IMGD_OP_CAST && ns && (ns->skip || ns->folded)) continue;
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++) {
            const imgd_tensor *st = n->src[s] ? n->src[s]->storage : NULL;
            if (!st) continue;
            bool own = gemm && s < 2 && ns && ns->owned[s];
            if (st->op == IMGD_OP_CAST && st->src[0] && s < 2 && ns && ns->cnst[s] && !own)
                read[st->src[0]->storage->id] = true; /* a GEMM reads the cast's weight */
            else if (!own)
                read[st->id] = true;
        }
    }
    size_t dropped = 0, bytes = 0;
    for (size_t i = 0; i < nt; i++) {
        imgd_tensor *t = imgd_graph_tensor(g, i);
        if (t->is_output) read[t->storage->id] = true;
    }
    for (size_t i = 0; i < nt; i++) {
        imgd_tensor *t = imgd_graph_tensor(g, i);
        if (t->op != IMGD_OP_NONE || t->kind != IMGD_TENSOR_WEIGHT || !t->backend_data ||
            read[t->id])
            continue;
        for (size_t k = 0; k < cb->n_wts; k++) {
            if (cb->wts[k].dev != t->backend_data || cb->wts[k].refs != 1) continue;
            bytes += t->nbytes;
            dropped++;
            weight_drop(cb, t->backend_data);
            t->backend_data = NULL;
            break;
        }
    }
    imgd_free(read);
    if (cb->verbose && dropped)
        fprintf(stderr,
                "cuda: %zu weight uploads (%.1f MiB) dropped: only converted copies are read\n",
                dropped, (double)bytes / (1024.0 * 1024.0));
}

/* Whether plan g expands its linear_quant weights at plan time (cb->lq_expand): auto when
 * they fit beside need (the uploads) with CUDA_LQ_EXPAND_SPARE left of free; adds them to
 * need when it does. */
static bool plan_lq_expand(cuda_backend *cb, imgd_graph *g, size_t fr, size_t *need) {
    size_t bytes = 0;
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++)
        bytes += cuda_lq_expand_bytes(cb, imgd_graph_exec_node(g, i));
    bool on = bytes > 0 &&
              (cb->lq_expand == CUDA_LQX_ON ||
               (cb->lq_expand == CUDA_LQX_AUTO && *need + bytes + CUDA_LQ_EXPAND_SPARE <= fr));
    if (on) *need += bytes;
    if (bytes > 0 && cb->verbose)
        fprintf(stderr,
                "cuda: linear_quant weights %s at plan time (%.1f MiB in the math type; "
                "%.0f MiB free, %.0f MiB of other uploads)\n",
                on ? "expanded" : "not expanded", MIB(bytes), MIB(fr),
                MIB(*need - (on ? bytes : 0)));
    return on;
}

static imgd_status cuda_prepare(imgd_backend *be, imgd_graph *g) {
    cuda_backend *cb = be->ctx;
    CUDA_TRY(cudaSetDevice(cb->device), "prepare");
    size_t need = 0, n_weights = 0, fr = 0, total = 0;
    cb->lq_expand_plan = false;
    imgd_status pre    = upload_need(cb, g, &need, &n_weights);
    if (pre != IMGD_OK) return pre;
    CUDA_TRY(cudaMemGetInfo(&fr, &total), "prepare");
    cb->lq_expand_plan = plan_lq_expand(cb, g, fr, &need);
    char dev[128];
    imgd_cuda_device_name(dev, sizeof dev);
    if (need > fr)
        return imgd_fail(IMGD_E_NOMEM,
                         "cuda: device %d (%s) needs %.0f MiB for this graph's %zu weights (and "
                         "their copies converted at plan time) but has %.0f MiB free of %.0f "
                         "MiB; " VRAM_ADVICE,
                         cb->device, dev, MIB(need), n_weights, MIB(fr), MIB(total));
    IMGD_LOG(IMGD_LOG_INFO, "cuda", "plan",
             "device %d (%s): %zu nodes, uploading %zu weights and converting copies (%.1f "
             "MiB); %.0f MiB free of %.0f MiB before",
             cb->device, dev, imgd_graph_exec_count(g), n_weights, MIB(need), MIB(fr), MIB(total));
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        imgd_tensor *n  = imgd_graph_exec_node(g, i);
        imgd_status  st = prepare_node(cb, n);
        if (st != IMGD_OK)
            return imgd_fail_prefix(st, "cuda: preparing node %zu (%s)", i, imgd_op_name(n->op));
    }
    mark_skipped_casts(g);
    mark_outputs(g);
    imgd_status st = fold_casts(cb, g);
    if (st == IMGD_OK) plan_storage(cb, g);
    if (st == IMGD_OK) st = fold_dequantizes(cb, g);
    for (size_t i = 0; i < imgd_graph_exec_count(g) && st == IMGD_OK; i++) {
        imgd_tensor *n = imgd_graph_exec_node(g, i);
        if (n->op == IMGD_OP_MATMUL || n->op == IMGD_OP_LINEAR_QUANT)
            st = cuda_gemm_bias_prepare(cb, n);
    }
    if (st == IMGD_OK) cuda_plan_residuals(cb, g);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "cuda: preparing constants");
    st = cuda_conv2d_choose(cb, g);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "cuda: choosing the convolutions' layouts");
    st = cuda_attn_choose(cb, g);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "cuda: choosing the attention kernels");
    CUDA_TRY(cudaStreamSynchronize(cb->stream), "uploading weights");
    drop_unread_weights(cb, g);
    if (cb->verbose) report_paths(cb, g);
    cuda_tune_save(cb);
    return IMGD_OK;
}

/* ---- vtable: run -------------------------------------------------------------------------- */

imgd_status cuda_run_node(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    if (cuda_node_of(n) && (cuda_node_of(n)->folded || cuda_node_of(n)->gemm_done)) return IMGD_OK;
    switch (n->op) {
    case IMGD_OP_DEQUANTIZE: /* a graph output (others are folded) */
        return cuda_dequant(cb, n->src[0], cuda_dptr(n->src[0]), n->data, cuda_cuk_of(n), what);
    case IMGD_OP_LINEAR_QUANT: return cuda_linear_quant(cb, n, what);
    case IMGD_OP_MATMUL: return cuda_matmul(cb, n, what);
    case IMGD_OP_CONV2D: return cuda_conv2d(cb, n, what);
    case IMGD_OP_ATTENTION:
#ifdef IMGD_HAVE_CUDNN
        if (cuda_node_of(n)->attn_cudnn) return cuda_attn_cudnn(cb, n, what);
#endif
        if (cuda_node_of(n)->attn_wmma) return cuda_attn_wmma(cb, n, what);
        if (cuda_node_of(n)->attn_gemm) return cuda_attn_gemm(cb, n, what);
        return cuda_run_op(cb, n, what);
    case IMGD_OP_CAST:
        if (cuda_node_of(n)->skip) return IMGD_OK;
        return cuda_run_op(cb, n, what);
    default: return cuda_run_op(cb, n, what);
    }
}

static imgd_status cuda_run(imgd_backend *be, imgd_graph *g) {
    return cuda_exec_run(be->ctx, g);
}

static void cuda_free(imgd_backend *be) {
    cuda_backend *cb = be->ctx;
    if (cb->stream) (void)cudaStreamSynchronize(cb->stream);
    cuda_exec_free(cb);
#ifdef IMGD_HAVE_CUDNN
    if (cb->dnn) (void)cudnnDestroy(cb->dnn);
#endif
    for (size_t i = 0; i < cb->n_wts; i++) (void)cudaFree(cb->wts[i].dev); /* plans left */
    cuda_tune_save(cb);
    imgd_free(cb->tune_path);
    for (int t = 0; t < CUDA_TUNER_N; t++) cuda_tune_free(&cb->picks[t]);
    imgd_free(cb->wts);
    if (cb->lt) (void)cublasLtDestroy(cb->lt);
    if (cb->blas) (void)cublasDestroy(cb->blas);
    if (cb->stream) (void)cudaStreamDestroy(cb->stream);
    imgd_free(cb);
}

static const struct imgd_backend_i k_cuda_iface = {
    .name        = cuda_name,
    .alloc       = cuda_alloc,
    .buffer_free = cuda_buffer_free,
    .supports_op = cuda_supports,
    .prepare     = cuda_prepare,
    .release     = cuda_release,
    .run         = cuda_run,
    .read        = cuda_read,
    .free        = cuda_free,
};

imgd_status imgd_cuda_plan_paths(const imgd_backend *be, const imgd_graph *g, imgd_cuda_paths *p) {
    if (!be || be->iface != &k_cuda_iface || !g || !p)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_cuda_plan_paths: needs a cuda backend and a "
                                             "graph planned on it");
    count_paths(g, p);
    return IMGD_OK;
}

imgd_status imgd_cuda_tune_costs(const imgd_backend *be, imgd_cuda_tune_cost *c) {
    if (!be || be->iface != &k_cuda_iface || !c)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_cuda_tune_costs: needs a cuda backend");
    const cuda_backend *cb = be->ctx;
    c->attn_s              = cb->tune_s[CUDA_TUNER_ATTN];
    c->conv_s              = cb->tune_s[CUDA_TUNER_CONV];
    c->gemm_s              = cb->tune_s[CUDA_TUNER_GEMM];
    c->attn_n              = cb->tune_n[CUDA_TUNER_ATTN];
    c->conv_n              = cb->tune_n[CUDA_TUNER_CONV];
    c->gemm_n              = cb->tune_n[CUDA_TUNER_GEMM];
    c->conv_plan_s         = cb->conv_plan_s;
    c->conv_plan_n         = cb->conv_plan_n;
    return IMGD_OK;
}

imgd_status imgd_cuda_gemm_picks(const imgd_backend *be, imgd_cuda_gemm_stats *s) {
    if (!be || be->iface != &k_cuda_iface || !s)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_cuda_gemm_picks: needs a cuda backend");
    cuda_gemm_stats(be->ctx, s);
    return IMGD_OK;
}

/* ---- construction and device queries ----------------------------------------------------- */

int imgd_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

static int env_device(void) {
    const char *s = getenv("IMGD_CUDA_DEVICE");
    if (!s || !*s) return 0;
    char *end = NULL;
    long  v   = strtol(s, &end, 10);
    return end && *end == '\0' && v >= 0 && v < 1024 ? (int)v : -1;
}

/* An on/off switch from the environment: unset or empty = dflt, "0" = off, else on. */
static bool env_flag(const char *name, bool dflt) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    return strcmp(s, "0") != 0;
}

static imgd_status env_paths(cuda_backend *cb) {
    cb->verbose        = env_flag("IMGD_CUDA_VERBOSE", false);
    cb->direct_weights = env_flag("IMGD_CUDA_DIRECT_WEIGHTS", true);
    cb->graphs         = env_flag("IMGD_CUDA_GRAPH", true);
    cb->half_act       = env_flag("IMGD_CUDA_HALF_ACT", true);
    cb->use_lt         = env_flag("IMGD_CUDA_LT", true);
    cb->profile        = getenv("IMGD_PROFILE") != NULL;
    cb->profile_nodes  = cb->profile && strcmp(getenv("IMGD_PROFILE"), "nodes") == 0;
#ifdef IMGD_HAVE_CUDNN
    cb->use_cudnn  = env_flag("IMGD_CUDA_CUDNN", true);
    cb->cudnn_find = env_flag("IMGD_CUDA_CUDNN_FIND", false);
    cb->conv_add   = env_flag("IMGD_CUDA_CONV_ADD", true);
    cb->norm_nhwc  = env_flag("IMGD_CUDA_NORM_NHWC", true);
    const char *cg = getenv("IMGD_CUDA_CONV_GRAPH");
    cb->conv_graph = cg && strcmp(cg, "rtc") == 0 ? 2 : env_flag("IMGD_CUDA_CONV_GRAPH", true);
#else
    cb->use_cudnn = false;
#endif
    cb->lq_rows    = env_flag("IMGD_CUDA_LQ_ROWS", true);
    const char *lx = getenv("IMGD_CUDA_LQ_EXPAND");
    if (!lx || !*lx || strcmp(lx, "auto") == 0)
        cb->lq_expand = CUDA_LQX_AUTO;
    else if (strcmp(lx, "0") == 0)
        cb->lq_expand = CUDA_LQX_OFF;
    else if (strcmp(lx, "1") == 0)
        cb->lq_expand = CUDA_LQX_ON;
    else
        return imgd_fail(IMGD_E_INVALID_ARG, "cuda: IMGD_CUDA_LQ_EXPAND='%s' is not 0, 1 or auto",
                         lx);
    const char *lt = getenv("IMGD_CUDA_LQ_TILE");
    cb->lq_tile    = (int64_t)1 << 23;
    if (lt && *lt) {
        char     *end = NULL;
        long long v   = strtoll(lt, &end, 10);
        if (*end || v < 1024 || v > ((long long)1 << 30))
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "cuda: IMGD_CUDA_LQ_TILE='%s' is not a count of weight values in "
                             "1024..2^30 (default 8388608)",
                             lt);
        cb->lq_tile = v;
    }
    const char *mt  = getenv("IMGD_CUDA_ATTN_MTILES");
    cb->attn_mtiles = 0;
    if (mt && *mt && strcmp(mt, "auto") != 0) {
        if (strcmp(mt, "1") != 0 && strcmp(mt, "2") != 0)
            return imgd_fail(IMGD_E_INVALID_ARG, "cuda: IMGD_CUDA_ATTN_MTILES='%s' is not 1|2|auto",
                             mt);
        cb->attn_mtiles = mt[0] - '0';
    }
    const char *nh = getenv("IMGD_CUDA_CONV_NHWC");
    if (!nh || !*nh || strcmp(nh, "auto") == 0)
        cb->conv_nhwc = CUDA_NHWC_AUTO;
    else if (strcmp(nh, "tune") == 0 || strcmp(nh, "guess") == 0)
        cb->conv_nhwc = nh[0] == 't' ? CUDA_NHWC_TUNE : CUDA_NHWC_GUESS;
    else if (strcmp(nh, "0") == 0 || strcmp(nh, "1") == 0)
        cb->conv_nhwc = nh[0] == '1' ? CUDA_NHWC_ON : CUDA_NHWC_OFF;
    else
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "cuda: IMGD_CUDA_CONV_NHWC='%s' is not 0, 1, auto, tune or guess", nh);
    const char *gs = getenv("IMGD_CUDA_GEMM");
    if (!gs || !*gs || strcmp(gs, "auto") == 0)
        cb->gemm_sel = CUDA_GEMM_AUTO;
    else if (strcmp(gs, "tune") == 0)
        cb->gemm_sel = CUDA_GEMM_TUNE;
    else if (strcmp(gs, "heuristic") == 0)
        cb->gemm_sel = CUDA_GEMM_HEURISTIC;
    else
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "cuda: IMGD_CUDA_GEMM='%s' is not auto, tune or heuristic", gs);
    if (!cuda_math_low(cb) || !cb->use_lt) cb->gemm_sel = CUDA_GEMM_HEURISTIC;
    /* f32 math: flash for wmma / mma (tensor cores would round to f16); mma needs sm_80 */
    const char *a = getenv("IMGD_CUDA_ATTN");
    cb->attn_tune = 0;
    if (!a || !*a || strcmp(a, "auto") == 0 || strcmp(a, "tune") == 0 || strcmp(a, "mma") == 0) {
        cb->attn      = cuda_math_low(cb) ? CUDA_ATTN_MMA : CUDA_ATTN_FLASH;
        cb->attn_tune = !cuda_math_low(cb)            ? 0
                        : a && strcmp(a, "tune") == 0 ? 2
                        : a && strcmp(a, "mma") == 0  ? 0
                                                      : 1;
    } else if (strcmp(a, "gemm") == 0)
        cb->attn = CUDA_ATTN_GEMM;
    else if (strcmp(a, "wmma") == 0)
        cb->attn = cuda_math_low(cb) ? CUDA_ATTN_WMMA : CUDA_ATTN_FLASH;
    else if (strcmp(a, "cudnn") == 0)
        cb->attn = !cuda_math_low(cb) ? CUDA_ATTN_FLASH
                   : cb->use_cudnn    ? CUDA_ATTN_CUDNN
                                      : CUDA_ATTN_MMA;
    else if (strcmp(a, "flash") == 0)
        cb->attn = CUDA_ATTN_FLASH;
    else
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "cuda: IMGD_CUDA_ATTN='%s' is not auto|tune|mma|wmma|gemm|flash|cudnn", a);
    return IMGD_OK;
}

static imgd_status cuda_init(cuda_backend *cb, const imgd_backend_params *p) {
    if ((unsigned)p->gpu_math >= IMGD_GPU_MATH_COUNT)
        return imgd_fail(IMGD_E_INVALID_ARG, "cuda: gpu_math %d out of range", (int)p->gpu_math);
    cb->math       = p->gpu_math;
    imgd_status st = env_paths(cb);
    if (st != IMGD_OK) return st;
    int         n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return imgd_fail(IMGD_E_UNSUPPORTED, "cuda: no usable CUDA device (%s)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    cb->device = env_device();
    if (cb->device < 0 || cb->device >= n)
        return imgd_fail(IMGD_E_INVALID_ARG, "cuda: IMGD_CUDA_DEVICE='%s' is not in [0, %d)",
                         getenv("IMGD_CUDA_DEVICE"), n);
    const char *sync = getenv("IMGD_CUDA_SYNC");
    cb->sync_each    = sync && *sync && strcmp(sync, "0") != 0;
    CUDA_TRY(cudaSetDevice(cb->device), "selecting the device");
    int major = 0;
    CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, cb->device),
             "compute capability");
    if ((cb->attn == CUDA_ATTN_MMA || cb->attn == CUDA_ATTN_CUDNN) && major < 8) {
        cb->attn      = CUDA_ATTN_WMMA; /* no mma.sync bf16, no cuDNN SDPA */
        cb->attn_tune = 0;
    }
    CUDA_TRY(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking), "creating a stream");
    CUBLAS_TRY(cublasCreate(&cb->blas), "creating the cuBLAS handle");
    CUBLAS_TRY(cublasSetStream(cb->blas, cb->stream), "cuBLAS stream");
    /* an explicit workspace: a captured graph then holds no allocation of cuBLAS's own; the
     * cuBLASLt calls (same stream) share it */
    CUDA_TRY(cudaMalloc(&cb->blas_ws, CUDA_BLAS_WS), "allocating the cuBLAS workspace");
    CUBLAS_TRY(cublasSetWorkspace(cb->blas, cb->blas_ws, CUDA_BLAS_WS), "cuBLAS workspace");
    if (cb->use_lt) CUBLAS_TRY(cublasLtCreate(&cb->lt), "creating the cuBLASLt handle");
    /* default math keeps f32 GEMMs in f32 (TF32 is opt-in): results are compared with the
     * reference at f32 tolerances */
    CUBLAS_TRY(cublasSetMathMode(cb->blas, CUBLAS_DEFAULT_MATH), "cuBLAS math mode");
#ifdef IMGD_HAVE_CUDNN
    if (cb->use_cudnn) {
        CUDNN_TRY(cudnnCreate(&cb->dnn), "creating the cuDNN handle");
        CUDNN_TRY(cudnnSetStream(cb->dnn, cb->stream), "cuDNN stream");
    }
#endif
    cuda_tune_load(cb);
    return IMGD_OK;
}

imgd_status imgd_cuda_backend_new(const imgd_backend_params *params, imgd_backend **out) {
    imgd_backend_params p = params ? *params : imgd_backend_params_default();
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "cuda backend: out is NULL");
    cuda_backend *cb = imgd_calloc(1, sizeof *cb);
    if (!cb) return imgd_fail(IMGD_E_NOMEM, "cuda backend: out of memory");
    cb->base.iface = &k_cuda_iface;
    cb->base.ctx   = cb;
    imgd_status st = cuda_init(cb, &p);
    if (st != IMGD_OK) {
        cuda_free(&cb->base);
        return st;
    }
    *out = &cb->base;
    return IMGD_OK;
}

imgd_status imgd_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    size_t f = 0, t = 0;
    CUDA_TRY(cudaMemGetInfo(&f, &t), "memory info");
    *free_bytes  = f;
    *total_bytes = t;
    return IMGD_OK;
}

void imgd_cuda_device_name(char *buf, size_t cap) {
    struct cudaDeviceProp p;
    int                   dev = env_device();
    if (cap == 0) return;
    buf[0] = '\0';
    if (cudaGetDeviceProperties(&p, dev < 0 ? 0 : dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    (void)imgd_fmt(buf, cap, "%s", p.name);
}
