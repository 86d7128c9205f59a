/* CUDA backend: the vtable, device memory, weight and input uploads, and node dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
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

void *cuda_dptr(const imgd_tensor *t) {
    const imgd_tensor *s = t->storage;
    if (s->kind == IMGD_TENSOR_ACTIVATION || !s->backend_data) return t->data;
    size_t off = (size_t)((const unsigned char *)t->data - (const unsigned char *)s->data);
    return (unsigned char *)s->backend_data + off;
}

cuk_tensor cuda_desc(const imgd_tensor *t) {
    cuk_tensor d;
    memset(&d, 0, sizeof d);
    d.data       = cuda_dptr(t);
    d.dtype      = t->dtype == IMGD_DTYPE_F16    ? CUK_F16
                   : t->dtype == IMGD_DTYPE_BF16 ? CUK_BF16
                                                 : CUK_F32;
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

static imgd_status cuda_alloc(imgd_backend *be, size_t n, void **out) {
    cuda_backend *cb = be->ctx;
    void         *p  = NULL;
    char          what[64];
    (void)imgd_fmt(what, sizeof what, "allocating %zu bytes on device %d", n, cb->device);
    CUDA_TRY(cudaSetDevice(cb->device), what);
    CUDA_TRY(cudaMalloc(&p, n), what); /* 256-byte aligned: >= IMGD_TENSOR_ALIGN */
    *out = p;
    return IMGD_OK;
}

static void cuda_buffer_free(imgd_backend *be, void *p) {
    IMGD_UNUSED(be);
    if (p) (void)cudaFree(p);
}

static imgd_status cuda_read(imgd_backend *be, const void *src, void *dst, size_t n) {
    cuda_backend *cb = be->ctx;
    CUDA_TRY(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, cb->stream), "reading a result");
    CUDA_TRY(cudaStreamSynchronize(cb->stream), "reading a result");
    return IMGD_OK;
}

/* ---- vtable: support -------------------------------------------------------------------- */

static bool dequant_supported(const imgd_tensor *n) {
    static const imgd_dtype ok[] = {
        IMGD_DTYPE_Q4_0, IMGD_DTYPE_Q4_1, IMGD_DTYPE_Q5_0, IMGD_DTYPE_Q5_1, IMGD_DTYPE_Q8_0,
        IMGD_DTYPE_Q2_K, IMGD_DTYPE_Q3_K, IMGD_DTYPE_Q4_K, IMGD_DTYPE_Q5_K, IMGD_DTYPE_Q6_K};
    /* dequantized on the host at plan time, so the source must be a constant weight */
    if (n->src[0]->storage->kind != IMGD_TENSOR_WEIGHT || n->dtype != IMGD_DTYPE_F32) return false;
    for (size_t i = 0; i < IMGD_ARRAY_LEN(ok); i++)
        if (n->src[0]->dtype == ok[i]) return true;
    return false;
}

static bool cuda_supports(const imgd_backend *be, const imgd_tensor *n) {
    IMGD_UNUSED(be);
    if (n->n_dims > CUK_MAX_DIMS) return false;
    switch (n->op) {
    case IMGD_OP_DEQUANTIZE: return dequant_supported(n);
    case IMGD_OP_MATMUL: return cuda_matmul_supported(n);
    case IMGD_OP_CONV2D: return cuda_conv2d_supported(n);
    default: return cuda_op_supported(n);
    }
}

/* ---- vtable: prepare and release --------------------------------------------------------- */

/* Frees every device copy: leaves' (weights, inputs) and dequantized weights'. */
static void cuda_release(imgd_backend *be, imgd_graph *g) {
    IMGD_UNUSED(be);
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        imgd_tensor *t = imgd_graph_tensor(g, i);
        if (t->backend_data) (void)cudaFree(t->backend_data);
        t->backend_data = NULL;
    }
}

/* Device copy of leaf storage s; a weight's bytes are uploaded now, once. */
static imgd_status upload_leaf(cuda_backend *cb, imgd_tensor *s) {
    char what[160];
    (void)imgd_fmt(what, sizeof what, "%s '%s' (%zu bytes)",
                   s->kind == IMGD_TENSOR_WEIGHT ? "uploading weight" : "allocating input",
                   s->name ? s->name : "?", s->nbytes);
    void *p = NULL;
    CUDA_TRY(cudaMalloc(&p, s->nbytes ? s->nbytes : 1), what);
    s->backend_data = p; /* release frees it, even when the copy below fails */
    if (s->kind == IMGD_TENSOR_WEIGHT && s->nbytes)
        CUDA_TRY(cudaMemcpyAsync(p, s->data, s->nbytes, cudaMemcpyHostToDevice, cb->stream), what);
    return IMGD_OK;
}

/* A quantized weight is expanded to f32 on the host and kept on the device; the node then
 * only copies it into its output. */
static imgd_status prepare_dequantize(cuda_backend *cb, imgd_tensor *n) {
    const imgd_tensor       *w  = n->src[0];
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(w->dtype);
    size_t                   nb = imgd_tensor_nbytes(n);
    float                   *h  = imgd_malloc(nb ? nb : 1);
    if (!h)
        return imgd_fail(IMGD_E_NOMEM, "cuda: dequantizing '%s': out of host memory",
                         w->storage->name ? w->storage->name : "?");
    /* w may be a view (views get their address at compute): locate it in its storage */
    const unsigned char *src = (const unsigned char *)w->storage->data +
                               (size_t)w->offset / tr->block_elems * tr->block_bytes;
    imgd_status st =
        imgd_quant_dequantize(w->dtype, src, (uint64_t)imgd_tensor_numel(n) / tr->block_elems, h);
    void       *p = NULL;
    cudaError_t e = cudaSuccess;
    if (st == IMGD_OK) {
        e = cudaMalloc(&p, nb ? nb : 1);
        if (e == cudaSuccess) n->backend_data = p;
        if (e == cudaSuccess) e = cudaMemcpy(p, h, nb, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) st = cuda_fail(e, "cudaMalloc/cudaMemcpy", "dequantized weight");
    }
    imgd_free(h);
    IMGD_UNUSED(cb);
    return st;
}

static imgd_status cuda_prepare(imgd_backend *be, imgd_graph *g) {
    cuda_backend *cb = be->ctx;
    CUDA_TRY(cudaSetDevice(cb->device), "prepare");
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        imgd_tensor *n  = imgd_graph_exec_node(g, i);
        imgd_status  st = IMGD_OK;
        if (n->op == IMGD_OP_DEQUANTIZE) {
            st = prepare_dequantize(cb, n);
        } else {
            for (int s = 0; s < IMGD_TENSOR_SRC_MAX && st == IMGD_OK; s++) {
                imgd_tensor *src = n->src[s] ? n->src[s]->storage : NULL;
                if (src && src->kind != IMGD_TENSOR_ACTIVATION && !src->backend_data)
                    st = upload_leaf(cb, src);
            }
            if (n->op == IMGD_OP_CONV2D) cuda_conv2d_prepare(cb, n);
            if (n->op == IMGD_OP_MATMUL) cuda_matmul_prepare(cb, n);
        }
        if (st != IMGD_OK)
            return imgd_fail_prefix(st, "cuda: preparing node %zu (%s)", i, imgd_op_name(n->op));
    }
    CUDA_TRY(cudaStreamSynchronize(cb->stream), "uploading weights");
    return IMGD_OK;
}

/* ---- vtable: run -------------------------------------------------------------------------- */

static imgd_status upload_inputs(cuda_backend *cb, imgd_graph *g) {
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        const imgd_tensor *t = imgd_graph_tensor(g, i);
        if (t->kind != IMGD_TENSOR_INPUT || !t->backend_data || !t->nbytes) continue;
        char what[160];
        (void)imgd_fmt(what, sizeof what, "uploading input '%s'", t->name ? t->name : "?");
        CUDA_TRY(cudaMemcpyAsync(t->backend_data, t->data, t->nbytes, cudaMemcpyHostToDevice,
                                 cb->stream),
                 what);
    }
    return IMGD_OK;
}

static imgd_status run_node(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    switch (n->op) {
    case IMGD_OP_DEQUANTIZE:
        CUDA_TRY(cudaMemcpyAsync(n->data, n->backend_data, imgd_tensor_nbytes(n),
                                 cudaMemcpyDeviceToDevice, cb->stream),
                 what);
        return IMGD_OK;
    case IMGD_OP_MATMUL: return cuda_matmul(cb, n, what);
    case IMGD_OP_CONV2D: return cuda_conv2d(cb, n, what);
    default: return cuda_run_op(cb, n, what);
    }
}

static imgd_status cuda_run(imgd_backend *be, imgd_graph *g) {
    cuda_backend *cb = be->ctx;
    CUDA_TRY(cudaSetDevice(cb->device), "compute");
    imgd_status st = upload_inputs(cb, g);
    for (size_t i = 0; st == IMGD_OK && i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n = imgd_graph_exec_node(g, i);
        if (imgd_graph_cancel_requested(g)) {
            st = imgd_fail(IMGD_E_CANCELLED, "compute cancelled before node %zu", i);
            break;
        }
        char what[96];
        (void)imgd_fmt(what, sizeof what, "node %zu (%s)", i, imgd_op_name(n->op));
        st = run_node(cb, n, what);
        if (st == IMGD_OK && cb->sync_each) {
            cudaError_t e = cudaStreamSynchronize(cb->stream);
            if (e != cudaSuccess) st = cuda_fail(e, "kernel (IMGD_CUDA_SYNC)", what);
        }
    }
    /* Waits for the queued work, so an asynchronous fault is reported by this compute. */
    cudaError_t e = cudaStreamSynchronize(cb->stream);
    if (st == IMGD_OK && e != cudaSuccess) st = cuda_fail(e, "cudaStreamSynchronize", "compute");
    return st;
}

static void cuda_free(imgd_backend *be) {
    cuda_backend *cb = be->ctx;
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

static imgd_status cuda_init(cuda_backend *cb, const imgd_backend_params *p) {
    if ((unsigned)p->gpu_math >= IMGD_GPU_MATH_COUNT)
        return imgd_fail(IMGD_E_INVALID_ARG, "cuda: gpu_math %d out of range", (int)p->gpu_math);
    cb->math      = p->gpu_math;
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
    CUDA_TRY(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking), "creating a stream");
    CUBLAS_TRY(cublasCreate(&cb->blas), "creating the cuBLAS handle");
    CUBLAS_TRY(cublasSetStream(cb->blas, cb->stream), "cuBLAS stream");
    /* default math keeps f32 GEMMs in f32 (TF32 is opt-in): results are compared with the
     * reference at f32 tolerances */
    CUBLAS_TRY(cublasSetMathMode(cb->blas, CUBLAS_DEFAULT_MATH), "cuBLAS math mode");
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
