/* Quantized (ggml block) weights on the device: DEQUANTIZE and LINEAR_QUANT.
 *
 * Both expand blocks with cuk_dequant (quant.cu, the host's decoders compiled for the device).
 * A DEQUANTIZE of a weight is a constant: backend.c folds it once at plan time into the
 * node's own memory, in its storage type (the math type in f16/bf16 math). LINEAR_QUANT keeps
 * the weight in its blocks on the device (a 12B-parameter FLUX in Q8_0 takes 12.7 GB instead
 * of 24 GB in f16) and expands it per run, IMGD_CUDA_LQ_TILE values of whole rows at a time, into
 * the node's scratch in the GEMM type; each tile is one cuBLAS GEMM over all rows of x into
 * the matching columns of y, so the expanded copy never exceeds one tile. Tiles are whole
 * multiples of 64 rows, so each tile's columns of y start 128-byte aligned (cuBLAS picks slow
 * kernels for misaligned operands).
 *
 * A linear_quant with at most CUK_LQ_ROWS rows of x (FLUX's modulation, time and guidance
 * linears at batch 1) is memory bound: expanding its weight to read it back costs five times
 * the bytes of reading the blocks once, so a 32-value block type takes cuk_linear_quant_rows
 * instead (cuda_node.lq_rows, IMGD_CUDA_LQ_ROWS=0 turns it off).
 *
 * Where the device has the memory (IMGD_CUDA_LQ_EXPAND=auto, the default: every expanded
 * weight of the plan fits beside the uploads with CUDA_LQ_EXPAND_SPARE left over; =1
 * always, =0 never), the other linear_quant nodes expand their weight once at plan time
 * into memory of their own (cuda_node.owned[1], in the math type) and run one GEMM over it;
 * the blocks, then read by nothing, are dropped. FLUX.1-dev in Q8_0 then takes 24 GB in bf16
 * instead of 12.7, and each step is plain GEMMs instead of expanding 12 G weights. */
#include <limits.h>

#include "base/error.h"
#include "cuda_impl.h"
#include "formats/dtype.h"

#define CUDA_LQ_ROW_ALIGN 64 /* tile rows are a multiple of this (but for the last tile) */

int32_t cuda_quant_type(imgd_dtype dt) {
    switch (dt) {
    case IMGD_DTYPE_Q4_0: return CUK_Q4_0;
    case IMGD_DTYPE_Q4_1: return CUK_Q4_1;
    case IMGD_DTYPE_Q5_0: return CUK_Q5_0;
    case IMGD_DTYPE_Q5_1: return CUK_Q5_1;
    case IMGD_DTYPE_Q8_0: return CUK_Q8_0;
    case IMGD_DTYPE_Q8_1: return CUK_Q8_1;
    case IMGD_DTYPE_Q2_K: return CUK_Q2_K;
    case IMGD_DTYPE_Q3_K: return CUK_Q3_K;
    case IMGD_DTYPE_Q4_K: return CUK_Q4_K;
    case IMGD_DTYPE_Q5_K: return CUK_Q5_K;
    case IMGD_DTYPE_Q6_K: return CUK_Q6_K;
    default: return -1;
    }
}

/* A quantized constant weight (or a contiguous view of one) the device can expand. */
static bool quant_weight(const imgd_tensor *w) {
    return w->storage->kind == IMGD_TENSOR_WEIGHT && cuda_quant_type(w->dtype) >= 0 &&
           imgd_tensor_is_contiguous(w);
}

bool cuda_dequantize_supported(const imgd_tensor *n) {
    return n->dtype == IMGD_DTYPE_F32 && quant_weight(n->src[0]);
}

size_t cuda_quant_offset(const imgd_tensor *w) {
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(w->dtype);
    return (size_t)w->offset / tr->block_elems * tr->block_bytes;
}

imgd_status cuda_dequant(cuda_backend *cb, const imgd_tensor *w, const void *src, void *out,
                         int32_t odt, const char *what) {
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(w->dtype);
    int64_t                  nb = imgd_tensor_numel(w) / tr->block_elems;
    cudaError_t e = cuk_dequant(out, odt, src, cuda_quant_type(w->dtype), nb, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cuk_dequant", what);
    return IMGD_OK;
}

/* ---- linear_quant --------------------------------------------------------------------------- */

bool cuda_linear_quant_supported(const imgd_tensor *n) {
    const imgd_tensor *x = n->src[0], *w = n->src[1], *bias = n->src[2];
    if (n->dtype != IMGD_DTYPE_F32 || n->n_dims < 1 || w->n_dims != 2 || !quant_weight(w))
        return false;
    if (x->dtype != IMGD_DTYPE_F32 && x->dtype != IMGD_DTYPE_F16 && x->dtype != IMGD_DTYPE_BF16)
        return false;
    if (bias && (bias->dtype != IMGD_DTYPE_F32 || !imgd_tensor_is_contiguous(bias))) return false;
    int64_t N = w->shape[0], K = w->shape[1], M = K ? imgd_tensor_numel(x) / K : 0;
    return M <= INT_MAX && N <= INT_MAX && K <= INT_MAX;
}

static int64_t lq_tile_rows(const cuda_backend *cb, const imgd_tensor *n) {
    int64_t N = n->src[1]->shape[0], K = n->src[1]->shape[1];
    int64_t t = K > 0 ? cb->lq_tile / K / CUDA_LQ_ROW_ALIGN * CUDA_LQ_ROW_ALIGN : N;
    if (t < CUDA_LQ_ROW_ALIGN) t = CUDA_LQ_ROW_ALIGN;
    return t < N ? t : N;
}

/* Whether n takes cuk_linear_quant_rows: few rows of x, a 32-value block type. */
static bool lq_rows_path(const cuda_backend *cb, const imgd_tensor *n) {
    const imgd_tensor       *w  = n->src[1];
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(w->dtype);
    int64_t                  K = w->shape[1], M = K ? imgd_tensor_numel(n->src[0]) / K : 0;
    return cb->lq_rows && M >= 1 && M <= CUK_LQ_ROWS && tr->block_elems == 32 && K % 32 == 0 &&
           K > 0;
}

/* Scratch: x in the GEMM type (when it is not stored so, contiguous), then one tile. */
static size_t lq_x_bytes(const cuda_backend *cb, const imgd_tensor *n) {
    return cuda_align_up((size_t)imgd_tensor_numel(n->src[0]) * cuda_math_size(cb));
}

size_t cuda_lq_expand_bytes(const cuda_backend *cb, const imgd_tensor *n) {
    const imgd_tensor *w = n->src[1];
    if (n->op != IMGD_OP_LINEAR_QUANT || !cuda_linear_quant_supported(n) || lq_rows_path(cb, n))
        return 0;
    return cuda_align_up((size_t)imgd_tensor_numel(w) * cuda_math_size(cb));
}

imgd_status cuda_linear_quant_prepare(cuda_backend *cb, imgd_tensor *n) {
    cuda_node *ns    = cuda_node_of(n);
    size_t     xb    = cuda_lq_expand_bytes(cb, n);
    ns->lq_rows      = lq_rows_path(cb, n);
    n->scratch_bytes = lq_x_bytes(cb, n);
    if (cb->lq_expand_plan && xb > 0 && imgd_tensor_numel(n->src[0]) > 0) {
        const imgd_tensor *w = n->src[1];
        void              *e = NULL;
        cudaError_t        r = cudaMalloc(&e, xb);
        if (r == cudaSuccess) {
            ns->owned[1]   = e; /* release frees it, even when the expansion fails */
            ns->cnst[1]    = e;
            imgd_status st = cuda_dequant(cb, w, cuda_dptr(w), e, cuda_math_cuk(cb),
                                          "linear_quant: expanding the weight at plan time");
            return st;
        }
        (void)cudaGetLastError();
        if (cb->lq_expand == CUDA_LQX_ON)
            return cuda_fail(r, "cudaMalloc", "linear_quant: the weight expanded at plan time");
    }
    if (!ns->lq_rows)
        n->scratch_bytes +=
            (size_t)lq_tile_rows(cb, n) * (size_t)n->src[1]->shape[1] * cuda_math_size(cb);
    return IMGD_OK;
}

/* y [M, N] from x (px: [M, K] in the GEMM type) tile by tile. lt: NULL, the output is n's
 * (beta: prefilled or not) and each tile a cublasGemmEx; else each tile runs through cuBLASLt
 * with lt's epilogue (D, its type dt, bias, residual C and gelu; *ran false when cuBLASLt had
 * no algorithm for a tile). */
static imgd_status lq_tiles(cuda_backend *cb, const imgd_tensor *n, const void *px,
                            const cuda_lt_args *lt, float beta, bool *ran, const char *what) {
    const imgd_tensor       *w  = n->src[1];
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(w->dtype);
    int64_t                  N = w->shape[0], K = w->shape[1], M = imgd_tensor_numel(n->src[0]) / K;
    cudaDataType_t ct  = lt ? lt->dt : cuda_cuk_of(n) == CUK_F32 ? CUDA_R_32F : cuda_math_type(cb);
    size_t         ces = ct == CUDA_R_32F ? 4 : 2;
    size_t         row = (size_t)(K / tr->block_elems) * tr->block_bytes;
    const unsigned char *wq   = cuda_dptr(w);
    const void          *full = cuda_node_of(n)->cnst[1]; /* expanded at plan time */
    unsigned char       *tile =
        full ? (unsigned char *)(uintptr_t)full : (unsigned char *)n->scratch + lq_x_bytes(cb, n);
    unsigned char *y = lt ? lt->D : n->data;
    int64_t        T = full ? N : lq_tile_rows(cb, n);
    *ran             = true;
    for (int64_t n0 = 0; n0 < N && *ran; n0 += T) {
        int64_t     t    = N - n0 < T ? N - n0 : T;
        imgd_tensor part = *w; /* the tile's rows, for the block count */
        part.shape[0]    = t;
        imgd_status st =
            full ? IMGD_OK
                 : cuda_dequant(cb, &part, wq + (size_t)n0 * row, tile, cuda_math_cuk(cb), what);
        if (st != IMGD_OK) return st;
        /* column-major y^T [N, M] (ld N), rows n0.. = tile [t, K] x^T */
        if (lt) {
            const unsigned char *bias = lt->bias, *C = lt->C;
            cuda_lt_args         f = {.op_a    = CUBLAS_OP_T,
                                      .op_b    = CUBLAS_OP_N,
                                      .m       = t,
                                      .n       = M,
                                      .k       = K,
                                      .lda     = K,
                                      .ldb     = K,
                                      .ldc     = N,
                                      .batches = 1,
                                      .A       = tile,
                                      .B       = px,
                                      .bias    = bias ? bias + (size_t)n0 * ces : NULL,
                                      .C       = C ? C + (size_t)n0 * ces : NULL,
                                      .D       = y + (size_t)n0 * ces,
                                      .dt      = ct,
                                      .gelu    = lt->gelu};
            st                     = cuda_gemm_lt(cb, &f, ran, what);
        } else
            st = cuda_gemm_t(cb, CUBLAS_OP_T, CUBLAS_OP_N, t, M, K, 1.0f, tile, K, 0, px, K, 0,
                             beta, y + (size_t)n0 * ces, ct, N, 0, 1, what);
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

/* y = x w^T + bias through cuk_linear_quant_rows: x as stored when contiguous, else in the
 * math type in the scratch; the node after it, if fused, runs itself. */
static imgd_status lq_rows(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    const imgd_tensor *x = n->src[0], *w = n->src[1], *bias = n->src[2];
    int64_t            N = w->shape[0], K = w->shape[1], M = imgd_tensor_numel(x) / K;
    const void        *px  = cuda_dptr(x);
    int32_t            xdt = cuda_cuk_of(x);
    if (!imgd_tensor_is_contiguous(x)) {
        imgd_status st = cuda_to_math(cb, x, n->scratch, what);
        if (st != IMGD_OK) return st;
        px  = n->scratch;
        xdt = cuda_math_cuk(cb);
    }
    cudaError_t e = cuk_linear_quant_rows(n->data, cuda_cuk_of(n), px, xdt, cuda_dptr(w),
                                          cuda_quant_type(w->dtype), bias ? cuda_dptr(bias) : NULL,
                                          bias ? cuda_cuk_of(bias) : CUK_F32, (int32_t)M,
                                          (int32_t)N, (int32_t)K, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cuk_linear_quant_rows", what);
    return IMGD_OK;
}

imgd_status cuda_linear_quant(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    const imgd_tensor *x = n->src[0], *w = n->src[1];
    const cuda_node   *ns = cuda_node_of(n);
    int64_t            N = w->shape[0], K = w->shape[1], M = K ? imgd_tensor_numel(x) / K : 0;
    /* the fused node runs itself unless the tiles below write its result this run */
    if (ns && ns->fused) cuda_node_of(ns->fused)->gemm_done = false;
    if (M == 0 || N == 0) return IMGD_OK;
    imgd_status st = IMGD_OK;
    if (K == 0) {
        float beta = 0.0f;
        st         = cuda_gemm_out_init(cb, n, 1, N, what, &beta);
        if (st == IMGD_OK && !n->src[2])
            CUDA_TRY(cudaMemsetAsync(n->data, 0, cuda_store_bytes(n), cb->stream), what);
        return st;
    }
    if (ns && ns->lq_rows) return lq_rows(cb, n, what);
    const void *px = cuda_dptr(x);
    if (cuda_cuk_of(x) != cuda_math_cuk(cb) || !imgd_tensor_is_contiguous(x)) {
        st = cuda_to_math(cb, x, n->scratch, what);
        if (st != IMGD_OK) return st;
        px = n->scratch;
    }
    bool         ran   = false;
    cuda_lt_args fused = {.gelu = false};
    if (ns && ns->fused &&
        cuda_fused_args(cb, n, px, ns->cnst[1] ? ns->cnst[1] : cuda_dptr(w), &fused)) {
        /* the node after it, its output written here (a tile cuBLASLt cannot run: that node
         * runs itself from this node's output, computed below) */
        st                                 = lq_tiles(cb, n, px, &fused, 0.0f, &ran, what);
        cuda_node_of(ns->fused)->gemm_done = st == IMGD_OK && ran;
        if (st != IMGD_OK || ran) return st;
    }
    /* a constant bias in the epilogue; plain tiles with their kernel chosen (IMGD_CUDA_GEMM).
     * A tile cuBLASLt cannot run: all again, the other way */
    if (ns && (ns->lt_bias || (!n->src[2] && cuda_gemm_tuned(cb)))) {
        cuda_lt_args lt = {.bias = ns->lt_bias,
                           .D    = n->data,
                           .dt   = cuda_cuk_of(n) == CUK_F32 ? CUDA_R_32F : cuda_math_type(cb)};
        st              = lq_tiles(cb, n, px, &lt, 0.0f, &ran, what);
        if (st != IMGD_OK || ran) return st;
    }
    float beta = 0.0f;
    st         = cuda_gemm_out_init(cb, n, 1, N, what, &beta);
    if (st != IMGD_OK) return st;
    return lq_tiles(cb, n, px, NULL, beta, &ran, what);
}
