/* matmul through cuBLAS: f32 operands (IMGD_GPU_MATH_F32, no TF32), or operands rounded to
 * fp16/bf16 in the node's scratch (IMGD_GPU_MATH_F16/BF16); f32 accumulation and f32 results
 * either way. Also the GEMM helper conv2d.c uses.
 *
 * cuBLAS is column-major; a row-major C[M,N] = A[M,K] B[K,N] is computed as the column-major
 * C^T = B^T A^T, i.e. gemm(m = N, n = M, k = K, "A" = B, "B" = A). Each row-major operand is
 * presented either as-is or transposed, whichever of its last two dims has unit stride. The
 * cuBLAS calls themselves, and which kernel each GEMM runs, are gemm_lt.c's. */
#include <limits.h>
#include <string.h>

#include "base/error.h"
#include "base/text.h"
#include "cuda_impl.h"

/* ---- operand layout ------------------------------------------------------------------------ */

/* Row-major P [rows][cols] with element strides (sr, sc), to be passed where cuBLAS expects
 * op(X) = P^T (cols x rows, column-major). Returns false when no (op, ld) describes it. */
static bool gemm_layout(int64_t rows, int64_t cols, int64_t sr, int64_t sc, cublasOperation_t *op,
                        int64_t *ld) {
    if (sc == 1 || cols == 1) { /* X = P^T: X(c, r) at c + r * ld */
        int64_t l = rows == 1 ? cols : sr;
        if (l >= (cols > 1 ? cols : 1)) {
            *op = CUBLAS_OP_N;
            *ld = l;
            return true;
        }
    }
    if (sr == 1 || rows == 1) { /* X = P as column-major rows x cols: X(r, c) at r + c * ld */
        int64_t l = cols == 1 ? rows : sc;
        if (l >= (rows > 1 ? rows : 1)) {
            *op = CUBLAS_OP_T;
            *ld = l;
            return true;
        }
    }
    return false;
}

/* Element offset of batch bt (row-major over out's batch dims) in x, broadcasting x's batch
 * dims (right-aligned; size 1 repeats). */
static int64_t batch_offset(const imgd_tensor *x, const imgd_tensor *out, int64_t bt) {
    int32_t nd  = out->n_dims;
    int64_t off = 0;
    for (int32_t d = nd - 3; d >= 0; d--) {
        int64_t i = bt % out->shape[d];
        bt /= out->shape[d];
        int32_t xd = d - (nd - x->n_dims);
        if (xd >= 0 && x->shape[xd] != 1) off += i * x->stride[xd];
    }
    return off;
}

typedef struct mm_geom {
    int64_t           M, N, K, batches;
    cublasOperation_t op_a, op_b; /* cuBLAS ops for the operands A (= our b) and B (= our a) */
    int64_t           ld_a, ld_b;
} mm_geom;

/* Geometry of n = a x b with the operands described by a and b (n's sources, or contiguous
 * copies of them). */
static bool mm_geometry(const imgd_tensor *n, const imgd_tensor *a, const imgd_tensor *b,
                        mm_geom *g) {
    int32_t na = a->n_dims, nb = b->n_dims, nd = n->n_dims;
    g->M       = n->shape[nd - 2];
    g->N       = n->shape[nd - 1];
    g->K       = a->shape[na - 1];
    g->batches = g->M * g->N > 0 ? imgd_tensor_numel(n) / (g->M * g->N) : 0;
    g->op_a = g->op_b = CUBLAS_OP_N;
    g->ld_a = g->ld_b = 1;
    if (g->K == 0 || g->batches == 0) /* no GEMM: the output is the bias or zeros */
        return g->M <= INT_MAX && g->N <= INT_MAX;
    if (!gemm_layout(g->K, g->N, b->stride[nb - 2], b->stride[nb - 1], &g->op_a, &g->ld_a))
        return false;
    if (!gemm_layout(g->M, g->K, a->stride[na - 2], a->stride[na - 1], &g->op_b, &g->ld_b))
        return false;
    return g->M <= INT_MAX && g->N <= INT_MAX && g->K <= INT_MAX && g->ld_a <= INT_MAX &&
           g->ld_b <= INT_MAX && g->batches <= INT_MAX;
}

/* ---- shared GEMM helpers ----------------------------------------------------------------- */

size_t cuda_align_up(size_t n) {
    return (n + 255) & ~(size_t)255;
}

bool cuda_math_low(const cuda_backend *cb) {
    return cb->math != IMGD_GPU_MATH_F32;
}

int32_t cuda_math_cuk(const cuda_backend *cb) {
    return cb->math == IMGD_GPU_MATH_BF16  ? CUK_BF16
           : cb->math == IMGD_GPU_MATH_F16 ? CUK_F16
                                           : CUK_F32;
}

cudaDataType_t cuda_math_type(const cuda_backend *cb) {
    return cb->math == IMGD_GPU_MATH_BF16  ? CUDA_R_16BF
           : cb->math == IMGD_GPU_MATH_F16 ? CUDA_R_16F
                                           : CUDA_R_32F;
}

size_t cuda_math_size(const cuda_backend *cb) {
    return cuda_math_low(cb) ? 2 : 4;
}

imgd_status cuda_to_math(cuda_backend *cb, const imgd_tensor *t, void *dst, const char *what) {
    cuk_tensor src = cuda_desc(t), out = cuda_desc(t);
    out.data       = dst;
    out.dtype      = cuda_math_cuk(cb);
    out.contiguous = 1;
    cudaError_t e  = cuk_copy(&out, &src, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cuk_copy (to the GEMM type)", what);
    return IMGD_OK;
}

imgd_status cuda_copy_new(cuda_backend *cb, const cuk_tensor *src, int32_t dtype, void **out,
                          const char *what) {
    int64_t n = 1;
    for (int32_t i = 0; i < src->n_dims; i++) n *= src->shape[i];
    size_t bytes = (size_t)n * (dtype == CUK_F32 ? 4 : 2);
    void  *p     = NULL;
    CUDA_TRY(cudaMalloc(&p, bytes ? bytes : 1), what);
    *out = p; /* the caller's release frees it, even when the copy below fails */
    if (!bytes) return IMGD_OK;
    cuk_tensor o = *src;
    o.data       = p;
    o.dtype      = dtype;
    o.contiguous = 1;
    CUDA_TRY(cuk_copy(&o, src, cb->stream), what);
    return IMGD_OK;
}

imgd_status cuda_gemm_out_init(cuda_backend *cb, const imgd_tensor *n, int64_t inner, int64_t nb,
                               const char *what, float *beta) {
    const imgd_tensor *bias = n->src[2];
    *beta                   = 0.0f;
    if (!bias) return IMGD_OK;
    cuk_operand b = {cuda_dptr(bias), CUK_F32, 0, inner, nb};
    cudaError_t e = cuk_ewise(n->data, cuda_cuk_of(n), imgd_tensor_numel(n), CUK_ADD, NULL, &b,
                              NULL, cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cuk_ewise (bias prefill)", what);
    *beta = 1.0f;
    return IMGD_OK;
}

imgd_status cuda_gemm_a(cuda_backend *cb, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m,
                        int64_t n, int64_t k, float alpha, const void *A, int64_t lda,
                        int64_t stride_a, const void *B, int64_t ldb, int64_t stride_b, float beta,
                        float *C, int64_t ldc, int64_t stride_c, int64_t batches,
                        const char *what) {
    return cuda_gemm_t(cb, op_a, op_b, m, n, k, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C,
                       CUDA_R_32F, ldc, stride_c, batches, what);
}

imgd_status cuda_gemm(cuda_backend *cb, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m,
                      int64_t n, int64_t k, const void *A, int64_t lda, int64_t stride_a,
                      const void *B, int64_t ldb, int64_t stride_b, float beta, float *C,
                      int64_t ldc, int64_t stride_c, int64_t batches, const char *what) {
    return cuda_gemm_a(cb, op_a, op_b, m, n, k, 1.0f, A, lda, stride_a, B, ldb, stride_b, beta, C,
                       ldc, stride_c, batches, what);
}

/* Device address of constant f32 bias b (a weight, or a folded cast of one, or views of
 * those), or NULL when b is computed per run. */
static unsigned char *const_bias(const imgd_tensor *b) {
    const imgd_tensor *s = b->storage;
    if (s->op == IMGD_OP_NONE)
        return s->kind == IMGD_TENSOR_WEIGHT && s->backend_data
                   ? (unsigned char *)s->backend_data + (size_t)b->offset * 4
                   : NULL;
    const cuda_node *ns = cuda_node_of(s);
    if (!ns || !ns->folded || ns->half_dt) return NULL;
    return (unsigned char *)ns->dev + (size_t)b->offset * 4;
}

imgd_status cuda_gemm_bias_prepare(cuda_backend *cb, imgd_tensor *n) {
    cuda_node         *ns = cuda_node_of(n);
    const imgd_tensor *b  = n->src[2];
    if (!cb->use_lt || !ns || ns->lq_rows || !b || b->dtype != IMGD_DTYPE_F32 ||
        !imgd_tensor_is_contiguous(b))
        return IMGD_OK;
    unsigned char *p = const_bias(b);
    if (!p) return IMGD_OK;
    ns->lt_bias_dt = cuda_cuk_of(n);
    if (ns->lt_bias_dt == CUK_F32) {
        ns->lt_bias = p;
        return IMGD_OK;
    }
    char what[160];
    (void)imgd_fmt(what, sizeof what, "converting bias '%s' to the output type",
                   b->storage->name ? b->storage->name : "?");
    cuk_tensor src = cuda_desc(b);
    src.data       = p;
    src.dtype      = CUK_F32;
    imgd_status cs = cuda_copy_new(cb, &src, ns->lt_bias_dt, &ns->lt_bias_owned, what);
    if (cs == IMGD_OK) ns->lt_bias = ns->lt_bias_owned;
    return cs;
}

/* ---- constant operands ------------------------------------------------------------------- */

/* The weight leaf whose values operand t reads, with t's offset and strides valid in that
 * weight's contiguous layout: t is the weight or a view of it, or t is a cast of a
 * contiguous weight leaf (same shape and layout as the cast's output) or a view of it. */
static const imgd_tensor *const_weight(const imgd_tensor *t) {
    const imgd_tensor *s = t->storage;
    if (s->op == IMGD_OP_NONE) return s->kind == IMGD_TENSOR_WEIGHT ? s : NULL;
    if (s->op != IMGD_OP_CAST) return NULL;
    const imgd_tensor *w = s->src[0];
    if (!w || w->op != IMGD_OP_NONE || w->kind != IMGD_TENSOR_WEIGHT || w->storage != w ||
        w->offset != 0 || !imgd_tensor_is_contiguous(w) || !imgd_tensor_same_shape(w, s))
        return NULL;
    return w;
}

const imgd_tensor *cuda_const_weight(const cuda_backend *cb, const imgd_tensor *n, int s) {
    const imgd_tensor *t = n->src[s];
    if (!cb->direct_weights || !cuda_math_low(cb) || !t) return NULL;
    const imgd_tensor *w = const_weight(t);
    if (!w ||
        (w->dtype != IMGD_DTYPE_F32 && w->dtype != IMGD_DTYPE_F16 && w->dtype != IMGD_DTYPE_BF16))
        return NULL;
    return w;
}

static bool in_math_type(const cuda_backend *cb, const imgd_tensor *w) {
    return w->dtype == (cb->math == IMGD_GPU_MATH_BF16 ? IMGD_DTYPE_BF16 : IMGD_DTYPE_F16);
}

size_t cuda_const_copy_bytes(const cuda_backend *cb, const imgd_tensor *n, int s) {
    const imgd_tensor *w = cuda_const_weight(cb, n, s);
    return w && !in_math_type(cb, w)
               ? cuda_align_up((size_t)imgd_tensor_numel(w) * cuda_math_size(cb))
               : 0;
}

imgd_status cuda_resolve_const(cuda_backend *cb, imgd_tensor *n, int s) {
    cuda_node         *st = cuda_node_of(n);
    const imgd_tensor *t  = n->src[s];
    const imgd_tensor *w  = st ? cuda_const_weight(cb, n, s) : NULL;
    if (!w || !w->backend_data) return IMGD_OK;
    size_t es   = cuda_math_size(cb);
    size_t skip = (size_t)t->offset * es;
    if (in_math_type(cb, w)) {
        st->cnst[s] = (const unsigned char *)w->backend_data + skip; /* as uploaded */
        return IMGD_OK;
    }
    char what[160];
    (void)imgd_fmt(what, sizeof what, "converting weight '%s' to the GEMM type",
                   w->name ? w->name : "?");
    cuk_tensor  src = cuda_desc(w);
    imgd_status cs  = cuda_copy_new(cb, &src, cuda_math_cuk(cb), &st->owned[s], what);
    if (cs == IMGD_OK) st->cnst[s] = (const unsigned char *)st->owned[s] + skip;
    return cs;
}

size_t cuda_readers(imgd_graph *g, const imgd_tensor *n) {
    size_t k = 0;
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *e = imgd_graph_exec_node(g, i);
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++) k += e->src[s] && e->src[s]->storage == n;
    }
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        const imgd_tensor *t = imgd_graph_tensor(g, i);
        k += t->is_output && t->storage == n;
    }
    return k;
}

/* Index of the residual operand when ADD `add` can take n's result in n's kernel, else -1.
 * A GEMM reads it as C with D's layout (same shape, contiguous, D's storage type); a cuDNN
 * convolution's epilogue (cuk_ewise) reads any operand whose broadcast is a flat run. */
static int residual_src(const imgd_tensor *n, const imgd_tensor *add) {
    int s = add->src[0] == n ? 1 : add->src[1] == n ? 0 : -1;
    if (s < 0 || add->src[s]->storage == n) return -1;
    const imgd_tensor *r = add->src[s];
    cuk_operand        o;
    if (n->op == IMGD_OP_CONV2D) return cuda_operand(r, add, &o) ? s : -1;
    if (!imgd_tensor_same_shape(r, add) || !imgd_tensor_is_contiguous(r) ||
        cuda_cuk_of(r) != cuda_cuk_of(add))
        return -1;
    return s;
}

/* Whether n can run next (an ADD or GELU_TANH) in its kernel: a GEMM through cuBLASLt (its
 * bias, if any, in the epilogue in next's storage type), or a cuDNN convolution (an ADD). */
static bool fusable(const cuda_backend *cb, const imgd_tensor *n, const imgd_tensor *next) {
    const cuda_node *ns = cuda_node_of(n);
    if (n->op == IMGD_OP_CONV2D) return cb->conv_add && ns->cudnn && next->op == IMGD_OP_ADD;
    if (n->op != IMGD_OP_MATMUL && n->op != IMGD_OP_LINEAR_QUANT) return false;
    if (!cb->use_lt || ns->lq_rows ||
        (n->src[2] && (!ns->lt_bias || ns->lt_bias_dt != cuda_cuk_of(next))))
        return false;
    return next->op == IMGD_OP_ADD || (next->op == IMGD_OP_GELU_TANH && next->src[0] == n);
}

void cuda_plan_residuals(cuda_backend *cb, imgd_graph *g) {
    for (size_t i = 0; i + 1 < imgd_graph_exec_count(g); i++) {
        imgd_tensor *n = imgd_graph_exec_node(g, i), *next = imgd_graph_exec_node(g, i + 1);
        cuda_node   *ns = cuda_node_of(n), *xs = cuda_node_of(next);
        if (!ns || !xs || ns->is_out || ns->folded || xs->folded || n->storage != n ||
            next->storage != next || cuda_readers(g, n) != 1 || !imgd_tensor_same_shape(n, next) ||
            !imgd_tensor_is_contiguous(next) || !fusable(cb, n, next))
            continue;
        int s = next->op == IMGD_OP_ADD ? residual_src(n, next) : -1;
        if (next->op == IMGD_OP_ADD && s < 0) continue;
        ns->fused        = next;
        ns->res_src      = s;
        next->plan_early = true; /* nothing the GEMM reads may share its memory */
    }
}

/* ---- matmul --------------------------------------------------------------------------------- */

bool cuda_matmul_supported(const imgd_tensor *n) {
    mm_geom g;
    if (n->n_dims < 2 || n->dtype != IMGD_DTYPE_F32) return false;
    if (n->src[0]->dtype != IMGD_DTYPE_F32 || n->src[1]->dtype != IMGD_DTYPE_F32) return false;
    if (n->src[2] && (n->src[2]->dtype != IMGD_DTYPE_F32 || !imgd_tensor_is_contiguous(n->src[2])))
        return false;
    return mm_geometry(n, n->src[0], n->src[1], &g);
}

/* Scratch per run: the operands that are not constants, rounded to the GEMM type. */
static size_t operand_scratch(const cuda_backend *cb, const imgd_tensor *n, int s) {
    const cuda_node *st = cuda_node_of(n);
    if (!cuda_math_low(cb) || (st && st->cnst[s])) return 0;
    return cuda_align_up((size_t)imgd_tensor_numel(n->src[s]) * cuda_math_size(cb));
}

imgd_status cuda_matmul_prepare(cuda_backend *cb, imgd_tensor *n) {
    for (int s = 0; s < 2; s++) {
        imgd_status st = cuda_resolve_const(cb, n, s);
        if (st != IMGD_OK) return st;
    }
    n->scratch_bytes = operand_scratch(cb, n, 0) + operand_scratch(cb, n, 1);
    return IMGD_OK;
}

/* Whether byte ranges [a, a + na) and [b, b + nb) overlap. */
static bool overlaps(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return na && nb && x < y + nb && y < x + na;
}

bool cuda_fused_out_ok(const imgd_tensor *n, const void *pa, const void *pb) {
    const cuda_node   *ns   = cuda_node_of(n);
    const imgd_tensor *next = ns->fused;
    void              *D    = cuda_dptr(next);
    size_t             nd   = cuda_store_bytes(next);
    if (overlaps(D, nd, pa, cuda_store_bytes(n->src[0]->storage)) ||
        overlaps(D, nd, pb, cuda_store_bytes(n->src[1]->storage)) ||
        overlaps(D, nd, n->scratch, n->scratch_bytes))
        return false;
    if (next->op != IMGD_OP_ADD) return true;
    /* the residual may be D itself when it has D's shape (read before written, element by
     * element); a broadcast one may not overlap it */
    const imgd_tensor *r = next->src[ns->res_src];
    const void        *C = cuda_dptr(r);
    return (C == D && imgd_tensor_same_shape(r, next)) ||
           !overlaps(D, nd, C, cuda_store_bytes(r->storage));
}

bool cuda_fused_args(cuda_backend *cb, const imgd_tensor *n, const void *pa, const void *pb,
                     cuda_lt_args *f) {
    const cuda_node   *ns   = cuda_node_of(n);
    const imgd_tensor *next = ns->fused;
    const bool         add  = next->op == IMGD_OP_ADD;
    if (!cuda_fused_out_ok(n, pa, pb)) return false;
    f->D    = cuda_dptr(next);
    f->C    = add ? cuda_dptr(next->src[ns->res_src]) : NULL;
    f->gelu = !add;
    f->bias = ns->lt_bias;
    f->dt   = cuda_cuk_of(next) == CUK_F32 ? CUDA_R_32F : cuda_math_type(cb);
    return true;
}

/* A contiguous row-major descriptor of t's shape (for an operand copied into scratch). */
static imgd_tensor contiguous_like(const imgd_tensor *t) {
    imgd_tensor c = *t;
    int64_t     s = 1;
    for (int32_t i = c.n_dims - 1; i >= 0; i--) {
        c.stride[i] = s;
        s *= c.shape[i];
    }
    return c;
}

imgd_status cuda_matmul(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    const imgd_tensor *a = n->src[0], *b = n->src[1];
    imgd_tensor        ca, cbt;
    const void        *pa = cuda_dptr(a), *pb = cuda_dptr(b);
    size_t             es = cuda_math_size(cb);
    const cuda_node   *ns = cuda_node_of(n);
    /* the fused node runs itself unless the GEMM below writes its result this run */
    if (ns && ns->fused) cuda_node_of(ns->fused)->gemm_done = false;
    if (cuda_math_low(cb)) { /* constants as resolved; others rounded into scratch */
        unsigned char *sa = n->scratch, *sb = sa + operand_scratch(cb, n, 0);
        imgd_status    st = IMGD_OK;
        if (ns && ns->cnst[0]) {
            pa = ns->cnst[0];
        } else if (cuda_cuk_of(a) == cuda_math_cuk(cb)) {
            /* stored in the math type already (half activations): read in place */
        } else {
            ca = contiguous_like(a);
            st = cuda_to_math(cb, a, sa, what);
            pa = sa;
            a  = &ca;
        }
        if (ns && ns->cnst[1]) {
            pb = ns->cnst[1];
        } else if (cuda_cuk_of(b) == cuda_math_cuk(cb)) {
            /* in place, as above */
        } else if (st == IMGD_OK) {
            cbt = contiguous_like(b);
            st  = cuda_to_math(cb, b, sb, what);
            pb  = sb;
            b   = &cbt;
        }
        if (st != IMGD_OK) return st;
    }
    mm_geom g;
    if (!mm_geometry(n, a, b, &g)) { /* an in-place operand cuBLAS cannot read: copy it */
        if (a == n->src[0] && cuda_math_low(cb) && !(ns && ns->cnst[0])) {
            ca             = contiguous_like(a);
            imgd_status cs = cuda_to_math(cb, a, n->scratch, what);
            if (cs != IMGD_OK) return cs;
            pa = n->scratch;
            a  = &ca;
        }
        if (b == n->src[1] && cuda_math_low(cb) && !(ns && ns->cnst[1])) {
            cbt               = contiguous_like(b);
            unsigned char *sb = (unsigned char *)n->scratch + operand_scratch(cb, n, 0);
            imgd_status    cs = cuda_to_math(cb, b, sb, what);
            if (cs != IMGD_OK) return cs;
            pb = sb;
            b  = &cbt;
        }
        if (!mm_geometry(n, a, b, &g))
            return imgd_fail(IMGD_E_INTERNAL, "cuda: %s: operand layout changed since planning",
                             what);
    }
    if (g.batches == 0) return IMGD_OK;
    const unsigned char *A = pb, *B = pa; /* cuBLAS "A" is our b */
    unsigned char       *C   = n->data;
    cudaDataType_t       ct  = cuda_cuk_of(n) == CUK_F32 ? CUDA_R_32F : cuda_math_type(cb);
    size_t               ces = ct == CUDA_R_32F ? 4 : 2;
    int64_t              one = g.batches > 1 ? 1 : 0;
    int64_t              sa = batch_offset(b, n, one), sb = batch_offset(a, n, one);
    bool                 uniform = true;
    for (int64_t bt = 2; bt < g.batches && uniform; bt++)
        uniform = batch_offset(b, n, bt) == bt * sa && batch_offset(a, n, bt) == bt * sb;
    /* a weight shared by every batch (a linear layer over [B, L, K]) whose activation rows
     * are evenly spaced across batches: one GEMM over all B * L rows */
    int64_t rows = g.M, nb = g.batches;
    if (uniform && nb > 1 && sa == 0 && g.op_b == CUBLAS_OP_N && sb == g.M * g.ld_b &&
        g.M * nb <= INT_MAX) {
        rows = g.M * nb;
        nb   = 1;
    }
    cuda_lt_args lt = {g.op_a,     g.op_b, g.N, rows, g.K,  g.ld_a, g.ld_b, g.N, sa,   sb,
                       rows * g.N, nb,     A,   B,    NULL, NULL,   C,      ct,  false};
    cuda_lt_args f  = lt;
    if (ns && ns->fused && uniform && g.K > 0 && cuda_fused_args(cb, n, pa, pb, &f)) {
        /* the node after this GEMM: its output written here */
        bool        ran                    = false;
        imgd_status ls                     = cuda_gemm_lt(cb, &f, &ran, what);
        cuda_node_of(ns->fused)->gemm_done = ls == IMGD_OK && ran;
        if (ls != IMGD_OK || ran) return ls;
    }
    /* a constant bias in the epilogue; a plain GEMM with its kernel chosen (IMGD_CUDA_GEMM) */
    if (uniform && g.K > 0 && ((ns && ns->lt_bias) || (!n->src[2] && cuda_gemm_tuned(cb)))) {
        bool ran       = false;
        lt.bias        = ns ? ns->lt_bias : NULL;
        imgd_status ls = cuda_gemm_lt(cb, &lt, &ran, what);
        if (ls != IMGD_OK || ran) return ls;
    }
    float       beta = 0.0f;
    imgd_status st   = cuda_gemm_out_init(cb, n, 1, g.N, what, &beta);
    if (st != IMGD_OK) return st;
    if (g.K == 0) {
        if (!n->src[2])
            CUDA_TRY(cudaMemsetAsync(n->data, 0, cuda_store_bytes(n), cb->stream), what);
        return IMGD_OK;
    }
    if (uniform)
        return cuda_gemm_t(cb, g.op_a, g.op_b, g.N, rows, g.K, 1.0f, A, g.ld_a, sa, B, g.ld_b, sb,
                           beta, C, ct, g.N, rows * g.N, nb, what);
    for (int64_t bt = 0; bt < g.batches; bt++) {
        st = cuda_gemm_t(cb, g.op_a, g.op_b, g.N, g.M, g.K, 1.0f,
                         A + (size_t)batch_offset(b, n, bt) * es, g.ld_a, 0,
                         B + (size_t)batch_offset(a, n, bt) * es, g.ld_b, 0, beta,
                         C + (size_t)(bt * g.M * g.N) * ces, ct, g.N, 0, 1, what);
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}
