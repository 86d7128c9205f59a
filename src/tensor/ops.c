/* Graph builders (STYLE M4): each public imgd_op_<name> checks the sticky state and calls
 * a static <name>_impl that validates shapes, inserts the conversions the kernel needs and
 * appends one node. Shapes are checked here so kernels can trust them. */
#include "tensor/ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "formats/dtype.h"
#include "tensor/tensor_impl.h"

/* ---- helpers ---------------------------------------------------------------------------- */

#define FAIL_NULL(g, ...)                                                                          \
    do {                                                                                           \
        imgd_graph_fail((g), IMGD_E_INVALID_ARG, __VA_ARGS__);                                     \
        return NULL;                                                                               \
    } while (0)

/* True when the builder may proceed: the graph is healthy and both required inputs are
 * present (pass the same tensor twice for one input). A NULL input on a healthy graph is
 * the caller's mistake and becomes the sticky error; on a failed graph it is the expected
 * propagation of an earlier error. */
static bool live(imgd_graph *g, const char *op, const imgd_tensor *a, const imgd_tensor *b) {
    if (!g || g->status != IMGD_OK) return false;
    if (!a || !b) {
        imgd_graph_fail(g, IMGD_E_INVALID_ARG, "%s: input tensor is NULL", op);
        return false;
    }
    return true;
}

static imgd_tensor *new_node(imgd_graph *g, imgd_op op, imgd_dtype dtype, int32_t n_dims,
                             const int64_t *shape) {
    imgd_tensor *t = imgd_graph_new_tensor(g, dtype, n_dims, shape);
    if (!t) return NULL;
    t->op   = op;
    t->kind = IMGD_TENSOR_ACTIVATION;
    return t;
}

static bool norm_axis(imgd_graph *g, const char *op, int32_t axis, int32_t n_dims, int32_t *out) {
    int32_t a = axis < 0 ? axis + n_dims : axis;
    if (a < 0 || a >= n_dims) {
        imgd_graph_fail(g, IMGD_E_INVALID_ARG, "%s: axis %d out of range for %d dims", op,
                        (int)axis, (int)n_dims);
        return false;
    }
    *out = a;
    return true;
}

static bool is_float16ish(imgd_dtype dt) {
    return dt == IMGD_DTYPE_F16 || dt == IMGD_DTYPE_BF16;
}

static bool is_plain_float(imgd_dtype dt) {
    return dt == IMGD_DTYPE_F32 || is_float16ish(dt);
}

static void shape_str(const imgd_tensor *t, char *buf, size_t cap) {
    size_t k = 0;
    buf[0]   = '\0';
    for (int32_t i = 0; i < t->n_dims && k + 1 < cap; i++) {
        int w = snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)t->shape[i]);
        if (w < 0) break;
        k += (size_t)w;
    }
}

static imgd_tensor *cast_impl(imgd_graph *g, imgd_tensor *x, imgd_dtype dtype) {
    if (!is_plain_float(dtype) || !is_plain_float(x->dtype))
        FAIL_NULL(g, "cast: %s -> %s is not supported (f32/f16/bf16)", imgd_dtype_name(x->dtype),
                  imgd_dtype_name(dtype));
    imgd_tensor *t = new_node(g, IMGD_OP_CAST, dtype, x->n_dims, x->shape);
    if (t) t->src[0] = x;
    return t;
}

static imgd_tensor *dequantize_impl(imgd_graph *g, imgd_tensor *w) {
    if (!imgd_dtype_traits_of(w->dtype)->is_quant)
        FAIL_NULL(g, "dequantize: %s is not a quantized type", imgd_dtype_name(w->dtype));
    if (w->op != IMGD_OP_NONE) FAIL_NULL(g, "dequantize: source must be a weight or input");
    imgd_tensor *t = new_node(g, IMGD_OP_DEQUANTIZE, IMGD_DTYPE_F32, w->n_dims, w->shape);
    if (t) t->src[0] = w;
    return t;
}

/* Any float or quantized tensor as f32 (same layout when already f32). */
static imgd_tensor *to_f32(imgd_graph *g, imgd_tensor *x) {
    if (!x) return NULL;
    if (x->dtype == IMGD_DTYPE_F32) return x;
    if (imgd_dtype_traits_of(x->dtype)->is_quant) return dequantize_impl(g, x);
    if (is_float16ish(x->dtype)) return cast_impl(g, x, IMGD_DTYPE_F32);
    FAIL_NULL(g, "%s tensors are not supported as op inputs (use f32/f16/bf16/quantized)",
              imgd_dtype_name(x->dtype));
}

static imgd_tensor *to_f32_cont(imgd_graph *g, imgd_tensor *x) {
    x = to_f32(g, x);
    if (x && !imgd_tensor_is_contiguous(x)) x = cast_impl(g, x, IMGD_DTYPE_F32);
    return x;
}

/* f32 with a unit innermost stride (rows may be strided). */
static imgd_tensor *to_f32_rows(imgd_graph *g, imgd_tensor *x) {
    x = to_f32(g, x);
    if (x && x->n_dims > 0 && x->shape[x->n_dims - 1] > 1 && x->stride[x->n_dims - 1] != 1)
        x = cast_impl(g, x, IMGD_DTYPE_F32);
    return x;
}

/* A 1-D f32 parameter of length n (gamma, beta, bias), or NULL when p is NULL. *bad is set
 * when p is present but wrong. */
static imgd_tensor *param_vec(imgd_graph *g, const char *op, const char *what, imgd_tensor *p,
                              int64_t n, bool *bad) {
    if (!p) return NULL;
    if (p->n_dims != 1 || p->shape[0] != n) {
        char s[96];
        shape_str(p, s, sizeof s);
        imgd_graph_fail(g, IMGD_E_INVALID_ARG, "%s: %s has shape [%s], expected [%lld]", op, what,
                        s, (long long)n);
        *bad = true;
        return NULL;
    }
    imgd_tensor *t = to_f32_cont(g, p);
    if (!t) *bad = true;
    return t;
}

static imgd_tensor *view_of(imgd_graph *g, imgd_tensor *x, int32_t n_dims, const int64_t *shape,
                            const int64_t *stride, int64_t offset) {
    imgd_tensor *t = new_node(g, IMGD_OP_VIEW, x->dtype, n_dims, shape);
    if (!t) return NULL;
    for (int32_t i = 0; i < n_dims; i++) t->stride[i] = stride[i];
    t->offset  = offset;
    t->src[0]  = x;
    t->storage = x->storage;
    t->kind    = x->storage->kind;
    return t;
}

static bool no_quant_view(imgd_graph *g, const char *op, const imgd_tensor *x) {
    if (!imgd_dtype_traits_of(x->dtype)->is_quant) return true;
    imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                    "%s: views of quantized (%s) tensors are not "
                    "supported; dequantize first",
                    op, imgd_dtype_name(x->dtype));
    return false;
}

/* ---- layout and views ------------------------------------------------------------------ */

imgd_tensor *imgd_op_cast(imgd_graph *g, imgd_tensor *x, imgd_dtype dtype) {
    if (!live(g, "cast", x, x)) return NULL;
    return cast_impl(g, x, dtype);
}

imgd_tensor *imgd_op_cont(imgd_graph *g, imgd_tensor *x) {
    if (!live(g, "cont", x, x)) return NULL;
    if (imgd_dtype_traits_of(x->dtype)->is_quant) return x; /* always contiguous */
    return cast_impl(g, x, x->dtype);
}

imgd_tensor *imgd_op_dequantize(imgd_graph *g, imgd_tensor *w) {
    if (!live(g, "dequantize", w, w)) return NULL;
    return dequantize_impl(g, w);
}

static imgd_tensor *reshape_impl(imgd_graph *g, imgd_tensor *x, int32_t n_dims,
                                 const int64_t *shape) {
    if (n_dims < 0 || n_dims > IMGD_MAX_DIMS || (n_dims > 0 && !shape))
        FAIL_NULL(g, "reshape: bad dims %d", (int)n_dims);
    int64_t s[IMGD_MAX_DIMS], known = 1, numel = imgd_tensor_numel(x);
    int32_t infer = -1;
    for (int32_t i = 0; i < n_dims; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0)
            infer = i;
        else if (s[i] < 0)
            FAIL_NULL(g, "reshape: dim %d is %lld", (int)i, (long long)s[i]);
        else
            known *= s[i];
    }
    if (infer >= 0) {
        if (known == 0 || numel % known != 0) FAIL_NULL(g, "reshape: cannot infer dim %d", infer);
        s[infer] = numel / known;
        known *= s[infer];
    }
    if (known != numel)
        FAIL_NULL(g, "reshape: %lld elements cannot become %lld", (long long)numel,
                  (long long)known);
    if (imgd_dtype_traits_of(x->dtype)->is_quant) {
        if (x->op != IMGD_OP_NONE || n_dims == 0 ||
            s[n_dims - 1] % imgd_dtype_traits_of(x->dtype)->block_elems != 0)
            FAIL_NULL(g, "reshape: a quantized tensor keeps whole blocks in its last dim");
    } else if (!imgd_tensor_is_contiguous(x)) {
        x = cast_impl(g, x, x->dtype);
        if (!x) return NULL;
    }
    int64_t st[IMGD_MAX_DIMS], acc = 1;
    for (int32_t i = n_dims - 1; i >= 0; i--) {
        st[i] = acc;
        acc *= s[i];
    }
    return view_of(g, x, n_dims, s, st, x->offset);
}

imgd_tensor *imgd_op_reshape(imgd_graph *g, imgd_tensor *x, int32_t n_dims, const int64_t *shape) {
    if (!live(g, "reshape", x, x)) return NULL;
    return reshape_impl(g, x, n_dims, shape);
}

static imgd_tensor *permute_impl(imgd_graph *g, imgd_tensor *x, const int32_t *perm) {
    int64_t s[IMGD_MAX_DIMS] = {0}, st[IMGD_MAX_DIMS] = {0};
    bool    seen[IMGD_MAX_DIMS] = {false};
    for (int32_t i = 0; i < x->n_dims; i++) {
        int32_t p = perm[i] < 0 ? perm[i] + x->n_dims : perm[i];
        if (p < 0 || p >= x->n_dims || seen[p])
            FAIL_NULL(g, "permute: entry %d (%d) is not a permutation of %d dims", (int)i,
                      (int)perm[i], (int)x->n_dims);
        seen[p] = true;
        s[i]    = x->shape[p];
        st[i]   = x->stride[p];
    }
    return view_of(g, x, x->n_dims, s, st, x->offset);
}

imgd_tensor *imgd_op_permute(imgd_graph *g, imgd_tensor *x, const int32_t *perm) {
    if (!live(g, "permute", x, x) || !no_quant_view(g, "permute", x)) return NULL;
    if (!perm) FAIL_NULL(g, "permute: perm is NULL");
    return permute_impl(g, x, perm);
}

imgd_tensor *imgd_op_transpose(imgd_graph *g, imgd_tensor *x, int32_t d0, int32_t d1) {
    if (!live(g, "transpose", x, x) || !no_quant_view(g, "transpose", x)) return NULL;
    int32_t a, b, perm[IMGD_MAX_DIMS];
    if (!norm_axis(g, "transpose", d0, x->n_dims, &a) ||
        !norm_axis(g, "transpose", d1, x->n_dims, &b))
        return NULL;
    for (int32_t i = 0; i < x->n_dims; i++) perm[i] = i;
    perm[a] = b;
    perm[b] = a;
    return permute_impl(g, x, perm);
}

static imgd_tensor *narrow_impl(imgd_graph *g, imgd_tensor *x, int32_t axis, int64_t start,
                                int64_t len) {
    int32_t a;
    if (!norm_axis(g, "narrow", axis, x->n_dims, &a)) return NULL;
    if (start < 0 || len < 0 || start + len > x->shape[a])
        FAIL_NULL(g, "narrow: [%lld, %lld) outside dim %d of size %lld", (long long)start,
                  (long long)(start + len), (int)a, (long long)x->shape[a]);
    int64_t s[IMGD_MAX_DIMS];
    memcpy(s, x->shape, sizeof s);
    s[a] = len;
    return view_of(g, x, x->n_dims, s, x->stride, x->offset + start * x->stride[a]);
}

imgd_tensor *imgd_op_narrow(imgd_graph *g, imgd_tensor *x, int32_t axis, int64_t start,
                            int64_t len) {
    if (!live(g, "narrow", x, x) || !no_quant_view(g, "narrow", x)) return NULL;
    return narrow_impl(g, x, axis, start, len);
}

imgd_status imgd_op_split(imgd_graph *g, imgd_tensor *x, int32_t axis, int32_t n,
                          const int64_t *sizes, imgd_tensor **outs) {
    if (!live(g, "split", x, x) || !no_quant_view(g, "split", x)) return imgd_graph_status(g);
    int32_t a;
    if (!norm_axis(g, "split", axis, x->n_dims, &a)) return g->status;
    if (n < 1 || n > 64 || !sizes || !outs)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "split: bad piece count %d", (int)n);
    int64_t sum = 0;
    for (int32_t i = 0; i < n; i++) sum += sizes[i] < 0 ? x->shape[a] + 1 : sizes[i];
    if (sum != x->shape[a])
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "split: sizes sum to %lld, dim is %lld",
                               (long long)sum, (long long)x->shape[a]);
    imgd_tensor *tmp[64];
    int64_t      start = 0;
    for (int32_t i = 0; i < n; start += sizes[i], i++) {
        tmp[i] = narrow_impl(g, x, a, start, sizes[i]);
        if (!tmp[i]) return g->status;
    }
    memcpy(outs, tmp, (size_t)n * sizeof *outs);
    return IMGD_OK;
}

imgd_tensor *imgd_op_view(imgd_graph *g, imgd_tensor *x, int32_t n_dims, const int64_t *shape,
                          const int64_t *stride, int64_t offset) {
    if (!live(g, "view", x, x) || !no_quant_view(g, "view", x)) return NULL;
    if (n_dims < 0 || n_dims > IMGD_MAX_DIMS || (n_dims > 0 && (!shape || !stride)) || offset < 0)
        FAIL_NULL(g, "view: bad dims, shape, stride or offset");
    int64_t hi = x->offset + offset, empty = 0;
    for (int32_t i = 0; i < n_dims; i++) {
        if (shape[i] < 0 || stride[i] < 0) FAIL_NULL(g, "view: negative shape or stride");
        if (shape[i] == 0)
            empty = 1;
        else
            hi += (shape[i] - 1) * stride[i];
    }
    if (!empty && hi >= imgd_tensor_numel(x->storage))
        FAIL_NULL(g, "view: reaches element %lld of a storage of %lld", (long long)hi,
                  (long long)imgd_tensor_numel(x->storage));
    return view_of(g, x, n_dims, shape, stride, x->offset + offset);
}

static imgd_tensor *concat_impl(imgd_graph *g, int32_t n, imgd_tensor *const *srcs, int32_t axis) {
    imgd_tensor *s[IMGD_TENSOR_SRC_MAX] = {0};
    bool         same                   = true;
    for (int32_t i = 0; i < n; i++) {
        s[i] = srcs[i];
        if (!is_plain_float(s[i]->dtype) && !imgd_dtype_traits_of(s[i]->dtype)->is_quant)
            FAIL_NULL(g, "concat: input %d has dtype %s", (int)i, imgd_dtype_name(s[i]->dtype));
        if (s[i]->dtype != s[0]->dtype || !is_plain_float(s[i]->dtype)) same = false;
    }
    for (int32_t i = 0; i < n && !same; i++)
        if (!(s[i] = to_f32(g, s[i]))) return NULL;
    int32_t a;
    if (!norm_axis(g, "concat", axis, s[0]->n_dims, &a)) return NULL;
    int64_t shape[IMGD_MAX_DIMS];
    memcpy(shape, s[0]->shape, sizeof shape);
    for (int32_t i = 1; i < n; i++) {
        bool ok = s[i]->n_dims == s[0]->n_dims;
        for (int32_t d = 0; ok && d < s[0]->n_dims; d++)
            ok = d == a || s[i]->shape[d] == s[0]->shape[d];
        if (!ok) {
            char b0[96], b1[96];
            shape_str(s[0], b0, sizeof b0);
            shape_str(s[i], b1, sizeof b1);
            FAIL_NULL(g, "concat: input %d [%s] does not match input 0 [%s] off axis %d", (int)i,
                      b1, b0, (int)a);
        }
        shape[a] += s[i]->shape[a];
    }
    imgd_tensor *t = new_node(g, IMGD_OP_CONCAT, s[0]->dtype, s[0]->n_dims, shape);
    if (!t) return NULL;
    for (int32_t i = 0; i < n; i++) t->src[i] = s[i];
    t->ip[0] = a;
    return t;
}

imgd_tensor *imgd_op_concat(imgd_graph *g, int32_t n, imgd_tensor *const *srcs, int32_t axis) {
    if (!g || g->status != IMGD_OK) return NULL;
    if (n < 1 || n > IMGD_TENSOR_SRC_MAX || !srcs)
        FAIL_NULL(g, "concat: %d inputs (expected 1..%d)", (int)n, IMGD_TENSOR_SRC_MAX);
    for (int32_t i = 0; i < n; i++)
        if (!srcs[i]) return NULL;
    return concat_impl(g, n, srcs, axis);
}

static imgd_tensor *pad_impl(imgd_graph *g, imgd_tensor *x, const int64_t *before,
                             const int64_t *after, float value) {
    if (x->n_dims > IMGD_TENSOR_IPARAMS / 2) FAIL_NULL(g, "pad: at most 8 dims");
    if (!is_plain_float(x->dtype)) x = to_f32(g, x);
    if (x && !imgd_tensor_is_contiguous(x)) x = cast_impl(g, x, x->dtype);
    if (!x) return NULL;
    int64_t shape[IMGD_MAX_DIMS];
    for (int32_t d = 0; d < x->n_dims; d++) {
        if (before[d] < 0 || after[d] < 0) FAIL_NULL(g, "pad: negative padding on dim %d", d);
        shape[d] = x->shape[d] + before[d] + after[d];
    }
    imgd_tensor *t = new_node(g, IMGD_OP_PAD, x->dtype, x->n_dims, shape);
    if (!t) return NULL;
    t->src[0] = x;
    for (int32_t d = 0; d < x->n_dims; d++) {
        t->ip[(size_t)2 * d]     = before[d];
        t->ip[(size_t)2 * d + 1] = after[d];
    }
    t->fp[0] = value;
    return t;
}

imgd_tensor *imgd_op_pad(imgd_graph *g, imgd_tensor *x, const int64_t *before, const int64_t *after,
                         float value) {
    if (!live(g, "pad", x, x)) return NULL;
    if (x->n_dims > 0 && (!before || !after)) FAIL_NULL(g, "pad: before/after NULL");
    return pad_impl(g, x, before, after, value);
}

imgd_tensor *imgd_op_upsample_nearest2x(imgd_graph *g, imgd_tensor *x) {
    if (!live(g, "upsample", x, x)) return NULL;
    if (x->n_dims < 2) FAIL_NULL(g, "upsample: needs at least 2 dims");
    if (!is_plain_float(x->dtype)) x = to_f32(g, x);
    if (x && !imgd_tensor_is_contiguous(x)) x = cast_impl(g, x, x->dtype);
    if (!x) return NULL;
    int64_t shape[IMGD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->n_dims - 1] *= 2;
    shape[x->n_dims - 2] *= 2;
    imgd_tensor *t = new_node(g, IMGD_OP_UPSAMPLE_NEAREST, x->dtype, x->n_dims, shape);
    if (t) t->src[0] = x;
    return t;
}

imgd_tensor *imgd_op_avg_pool2d(imgd_graph *g, imgd_tensor *x, int32_t kernel, int32_t stride,
                                int32_t pad) {
    if (!live(g, "avg_pool2d", x, x)) return NULL;
    if (x->n_dims < 2) FAIL_NULL(g, "avg_pool2d: needs at least 2 dims");
    if (kernel < 1 || stride < 1 || pad < 0 || pad > kernel / 2)
        FAIL_NULL(g, "avg_pool2d: kernel %d, stride %d, pad %d (need pad <= kernel/2)", kernel,
                  stride, pad);
    x = to_f32_cont(g, x);
    if (!x) return NULL;
    int64_t shape[IMGD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    for (int32_t d = x->n_dims - 2; d < x->n_dims; d++) {
        int64_t span = x->shape[d] + 2 * (int64_t)pad - kernel;
        if (span < 0) FAIL_NULL(g, "avg_pool2d: kernel %d larger than padded dim", kernel);
        shape[d] = span / stride + 1;
    }
    imgd_tensor *t = new_node(g, IMGD_OP_AVG_POOL2D, IMGD_DTYPE_F32, x->n_dims, shape);
    if (!t) return NULL;
    t->src[0] = x;
    t->ip[0]  = kernel;
    t->ip[1]  = stride;
    t->ip[2]  = pad;
    return t;
}

/* ---- dense -------------------------------------------------------------------------------- */

/* Makes one of the last two dims unit-stride (what BLAS-style kernels address). */
static imgd_tensor *gemm_operand(imgd_graph *g, imgd_tensor *x) {
    x = to_f32(g, x);
    if (!x) return NULL;
    int32_t n  = x->n_dims;
    bool    ok = x->stride[n - 1] == 1 || x->stride[n - 2] == 1 || x->shape[n - 1] == 1 ||
              x->shape[n - 2] == 1;
    return ok ? x : cast_impl(g, x, IMGD_DTYPE_F32);
}

static imgd_tensor *matmul_impl(imgd_graph *g, imgd_tensor *a, imgd_tensor *b, bool ta, bool tb,
                                imgd_tensor *bias) {
    if (a->n_dims < 2 || b->n_dims < 2) FAIL_NULL(g, "matmul: operands need at least 2 dims");
    if (ta) a = imgd_op_transpose(g, to_f32(g, a), -1, -2);
    if (tb) b = imgd_op_transpose(g, to_f32(g, b), -1, -2);
    a = a ? gemm_operand(g, a) : NULL;
    b = b ? gemm_operand(g, b) : NULL;
    if (!a || !b) return NULL;
    int64_t M = a->shape[a->n_dims - 2], K = a->shape[a->n_dims - 1];
    int64_t K2 = b->shape[b->n_dims - 2], N = b->shape[b->n_dims - 1];
    char    sa[96], sb[96];
    shape_str(a, sa, sizeof sa);
    shape_str(b, sb, sizeof sb);
    if (K != K2)
        FAIL_NULL(g, "matmul: [%s] x [%s]: inner dims %lld and %lld differ", sa, sb, (long long)K,
                  (long long)K2);
    int32_t nd = IMGD_MAX(a->n_dims, b->n_dims);
    int64_t shape[IMGD_MAX_DIMS];
    for (int32_t i = 0; i < nd - 2; i++) {
        int32_t ia = i - (nd - a->n_dims), ib = i - (nd - b->n_dims);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            FAIL_NULL(g, "matmul: batch dims of [%s] and [%s] do not broadcast", sa, sb);
        shape[i] = da == 1 ? db : da;
    }
    shape[nd - 2] = M;
    shape[nd - 1] = N;
    bool bad      = false;
    bias          = param_vec(g, "matmul", "bias", bias, N, &bad);
    if (bad) return NULL;
    imgd_tensor *t = new_node(g, IMGD_OP_MATMUL, IMGD_DTYPE_F32, nd, shape);
    if (!t) return NULL;
    t->src[0] = a;
    t->src[1] = b;
    t->src[2] = bias;
    return t;
}

imgd_tensor *imgd_op_matmul(imgd_graph *g, imgd_tensor *a, imgd_tensor *b, bool trans_a,
                            bool trans_b, imgd_tensor *bias) {
    if (!live(g, "matmul", a, b)) return NULL;
    if (!b) FAIL_NULL(g, "matmul: b is NULL");
    return matmul_impl(g, a, b, trans_a, trans_b, bias);
}

static imgd_tensor *linear_quant_impl(imgd_graph *g, imgd_tensor *x, imgd_tensor *w,
                                      imgd_tensor *bias) {
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(w->dtype);
    if (!tr->is_quant || w->op != IMGD_OP_NONE || w->n_dims != 2)
        FAIL_NULL(g, "linear_quant: w must be a 2-D quantized weight [out, in], got %s",
                  imgd_dtype_name(w->dtype));
    int64_t N = w->shape[0], K = w->shape[1];
    if (K % tr->block_elems != 0)
        FAIL_NULL(g, "linear_quant: in = %lld is not a multiple of the %s block (%u)", (long long)K,
                  imgd_dtype_name(w->dtype), (unsigned)tr->block_elems);
    if (x->n_dims < 1 || x->shape[x->n_dims - 1] != K)
        FAIL_NULL(g, "linear_quant: x's last dim must be %lld (the weight's in)", (long long)K);
    bool bad = false;
    bias     = param_vec(g, "linear_quant", "bias", bias, N, &bad);
    x        = to_f32_cont(g, x);
    if (bad || !x) return NULL;
    int64_t shape[IMGD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->n_dims - 1] = N;
    imgd_tensor *t       = new_node(g, IMGD_OP_LINEAR_QUANT, IMGD_DTYPE_F32, x->n_dims, shape);
    if (!t) return NULL;
    t->src[0] = x;
    t->src[1] = w;
    t->src[2] = bias;
    return t;
}

imgd_tensor *imgd_op_linear_quant(imgd_graph *g, imgd_tensor *x, imgd_tensor *w,
                                  imgd_tensor *bias) {
    if (!live(g, "linear_quant", x, w)) return NULL;
    if (!w) FAIL_NULL(g, "linear_quant: w is NULL");
    return linear_quant_impl(g, x, w, bias);
}

imgd_tensor *imgd_op_linear(imgd_graph *g, imgd_tensor *x, imgd_tensor *w, imgd_tensor *bias) {
    if (!live(g, "linear", x, w)) return NULL;
    if (!w || w->n_dims != 2) FAIL_NULL(g, "linear: weight must be [out, in]");
    if (g->fuse_quant_linear && imgd_dtype_traits_of(w->dtype)->is_quant && w->op == IMGD_OP_NONE &&
        w->shape[1] % imgd_dtype_traits_of(w->dtype)->block_elems == 0)
        return linear_quant_impl(g, x, w, bias);
    if (x->n_dims == 1) {
        imgd_tensor *x2 = reshape_impl(g, x, 2, (int64_t[]){1, x->shape[0]});
        imgd_tensor *y  = x2 ? matmul_impl(g, x2, w, false, true, bias) : NULL;
        return y ? reshape_impl(g, y, 1, &y->shape[1]) : NULL;
    }
    return matmul_impl(g, x, w, false, true, bias);
}

static imgd_tensor *conv2d_impl(imgd_graph *g, imgd_tensor *x, imgd_tensor *w, imgd_tensor *bias,
                                const int32_t sp[4]) {
    if (x->n_dims != 4 || w->n_dims != 4) FAIL_NULL(g, "conv2d: x and w must be 4-D");
    char sx[96], sw[96];
    shape_str(x, sx, sizeof sx);
    shape_str(w, sw, sizeof sw);
    if (x->shape[1] != w->shape[1])
        FAIL_NULL(g, "conv2d: x [%s] has %lld channels, w [%s] expects %lld (groups=1 only)", sx,
                  (long long)x->shape[1], sw, (long long)w->shape[1]);
    if (sp[0] < 1 || sp[1] < 1 || sp[2] < 0 || sp[3] < 0)
        FAIL_NULL(g, "conv2d: stride %d,%d / pad %d,%d", sp[0], sp[1], sp[2], sp[3]);
    int64_t oh = (x->shape[2] + 2 * (int64_t)sp[2] - w->shape[2]),
            ow = (x->shape[3] + 2 * (int64_t)sp[3] - w->shape[3]);
    if (oh < 0 || ow < 0) FAIL_NULL(g, "conv2d: kernel [%s] larger than padded input [%s]", sw, sx);
    int64_t shape[4] = {x->shape[0], w->shape[0], oh / sp[0] + 1, ow / sp[1] + 1};
    bool    bad      = false;
    bias             = param_vec(g, "conv2d", "bias", bias, w->shape[0], &bad);
    x                = to_f32_cont(g, x);
    w                = to_f32_cont(g, w);
    if (bad || !x || !w) return NULL;
    imgd_tensor *t = new_node(g, IMGD_OP_CONV2D, IMGD_DTYPE_F32, 4, shape);
    if (!t) return NULL;
    t->src[0] = x;
    t->src[1] = w;
    t->src[2] = bias;
    for (int i = 0; i < 4; i++) t->ip[i] = sp[i];
    return t;
}

imgd_tensor *imgd_op_conv2d_ex(imgd_graph *g, imgd_tensor *x, imgd_tensor *w, imgd_tensor *bias,
                               int32_t stride_h, int32_t stride_w, int32_t pad_h, int32_t pad_w) {
    if (!live(g, "conv2d", x, w)) return NULL;
    if (!w) FAIL_NULL(g, "conv2d: w is NULL");
    const int32_t sp[4] = {stride_h, stride_w, pad_h, pad_w};
    return conv2d_impl(g, x, w, bias, sp);
}

imgd_tensor *imgd_op_conv2d(imgd_graph *g, imgd_tensor *x, imgd_tensor *w, imgd_tensor *bias,
                            int32_t stride, int32_t pad) {
    return imgd_op_conv2d_ex(g, x, w, bias, stride, stride, pad, pad);
}

/* ---- normalisation and attention --------------------------------------------------------- */

static imgd_tensor *group_norm_impl(imgd_graph *g, imgd_tensor *x, int32_t groups, float eps,
                                    imgd_tensor *gamma, imgd_tensor *beta, bool silu) {
    if (x->n_dims < 2) FAIL_NULL(g, "group_norm: x needs [N, C, ...]");
    int64_t C = x->shape[1];
    if (groups < 1 || C % groups != 0)
        FAIL_NULL(g, "group_norm: %lld channels do not split into %d groups", (long long)C,
                  (int)groups);
    bool bad = false;
    gamma    = param_vec(g, "group_norm", "gamma", gamma, C, &bad);
    beta     = bad ? NULL : param_vec(g, "group_norm", "beta", beta, C, &bad);
    x        = to_f32_cont(g, x);
    if (bad || !x) return NULL;
    imgd_tensor *t = new_node(g, IMGD_OP_GROUP_NORM, IMGD_DTYPE_F32, x->n_dims, x->shape);
    if (!t) return NULL;
    t->src[0] = x;
    t->src[1] = gamma;
    t->src[2] = beta;
    t->ip[0]  = groups;
    t->ip[1]  = silu;
    t->fp[0]  = eps;
    return t;
}

imgd_tensor *imgd_op_group_norm(imgd_graph *g, imgd_tensor *x, int32_t groups, float eps,
                                imgd_tensor *gamma, imgd_tensor *beta, bool silu) {
    if (!live(g, "group_norm", x, x)) return NULL;
    return group_norm_impl(g, x, groups, eps, gamma, beta, silu);
}

static imgd_tensor *row_norm(imgd_graph *g, imgd_op op, imgd_tensor *x, float eps,
                             imgd_tensor *gamma, imgd_tensor *beta) {
    const char *name = imgd_op_name(op);
    if (x->n_dims < 1) FAIL_NULL(g, "%s: x needs at least 1 dim", name);
    int64_t D   = x->shape[x->n_dims - 1];
    bool    bad = false;
    gamma       = param_vec(g, name, "gamma", gamma, D, &bad);
    beta        = bad ? NULL : param_vec(g, name, "beta", beta, D, &bad);
    x           = to_f32_cont(g, x);
    if (bad || !x) return NULL;
    imgd_tensor *t = new_node(g, op, IMGD_DTYPE_F32, x->n_dims, x->shape);
    if (!t) return NULL;
    t->src[0] = x;
    t->src[1] = gamma;
    t->src[2] = beta;
    t->fp[0]  = eps;
    return t;
}

imgd_tensor *imgd_op_layer_norm(imgd_graph *g, imgd_tensor *x, float eps, imgd_tensor *gamma,
                                imgd_tensor *beta) {
    if (!live(g, "layer_norm", x, x)) return NULL;
    return row_norm(g, IMGD_OP_LAYER_NORM, x, eps, gamma, beta);
}

imgd_tensor *imgd_op_rms_norm(imgd_graph *g, imgd_tensor *x, float eps, imgd_tensor *gamma) {
    if (!live(g, "rms_norm", x, x)) return NULL;
    return row_norm(g, IMGD_OP_RMS_NORM, x, eps, gamma, NULL);
}

imgd_tensor *imgd_op_softmax(imgd_graph *g, imgd_tensor *x, float scale) {
    if (!live(g, "softmax", x, x)) return NULL;
    if (x->n_dims < 1) FAIL_NULL(g, "softmax: x needs at least 1 dim");
    x = to_f32_cont(g, x);
    if (!x) return NULL;
    imgd_tensor *t = new_node(g, IMGD_OP_SOFTMAX, IMGD_DTYPE_F32, x->n_dims, x->shape);
    if (!t) return NULL;
    t->src[0] = x;
    t->fp[0]  = scale;
    return t;
}

static bool attention_shapes(imgd_graph *g, const imgd_tensor *q, const imgd_tensor *k,
                             const imgd_tensor *v, const imgd_tensor *mask) {
    char sq[96], sk[96], sv[96];
    shape_str(q, sq, sizeof sq);
    shape_str(k, sk, sizeof sk);
    shape_str(v, sv, sizeof sv);
    if (q->n_dims != 4 || k->n_dims != 4 || v->n_dims != 4 || q->shape[0] != k->shape[0] ||
        q->shape[0] != v->shape[0] || q->shape[2] != k->shape[2] || q->shape[2] != v->shape[2] ||
        k->shape[1] != v->shape[1] || q->shape[3] != k->shape[3] || k->shape[1] < 1) {
        imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                        "attention: q [%s], k [%s], v [%s] are not [B,Lq,H,D], [B,Lk,H,D], "
                        "[B,Lk,H,Dv]",
                        sq, sk, sv);
        return false;
    }
    if (!mask) return true;
    const int64_t want[4] = {q->shape[0], q->shape[2], q->shape[1], k->shape[1]};
    bool          ok      = mask->n_dims >= 1 && mask->n_dims <= 4;
    for (int32_t i = 0; ok && i < mask->n_dims; i++) {
        int64_t m = mask->shape[mask->n_dims - 1 - i], w = want[3 - i];
        ok = m == w || m == 1;
    }
    if (!ok) {
        char sm[96];
        shape_str(mask, sm, sizeof sm);
        imgd_graph_fail(
            g, IMGD_E_INVALID_ARG,
            "attention: mask [%s] does not broadcast to [B,H,Lq,Lk] = [%lld,%lld,%lld,%lld]", sm,
            (long long)want[0], (long long)want[1], (long long)want[2], (long long)want[3]);
    }
    return ok;
}

imgd_tensor *imgd_op_attention(imgd_graph *g, imgd_tensor *q, imgd_tensor *k, imgd_tensor *v,
                               imgd_tensor *mask, float scale) {
    if (!live(g, "attention", q, k)) return NULL;
    if (!k || !v) FAIL_NULL(g, "attention: k or v is NULL");
    if (!attention_shapes(g, q, k, v, mask)) return NULL;
    q = to_f32_rows(g, q);
    k = to_f32_rows(g, k);
    v = to_f32_rows(g, v);
    if (mask) mask = to_f32_rows(g, mask);
    if (!q || !k || !v || (g->status != IMGD_OK)) return NULL;
    int64_t      shape[4] = {q->shape[0], q->shape[1], q->shape[2], v->shape[3]};
    imgd_tensor *t        = new_node(g, IMGD_OP_ATTENTION, IMGD_DTYPE_F32, 4, shape);
    if (!t) return NULL;
    t->src[0] = q;
    t->src[1] = k;
    t->src[2] = v;
    t->src[3] = mask;
    t->fp[0]  = scale > 0.0f ? scale : 1.0f / sqrtf((float)q->shape[3]);
    return t;
}

/* ---- elementwise ------------------------------------------------------------------------- */

static imgd_tensor *unary_impl(imgd_graph *g, imgd_op op, imgd_tensor *x, float f0, float f1) {
    x = to_f32_cont(g, x);
    if (!x) return NULL;
    imgd_tensor *t = new_node(g, op, IMGD_DTYPE_F32, x->n_dims, x->shape);
    if (!t) return NULL;
    t->src[0] = x;
    t->fp[0]  = f0;
    t->fp[1]  = f1;
    return t;
}

imgd_tensor *imgd_op_gelu(imgd_graph *g, imgd_tensor *x) {
    return live(g, "gelu", x, x) ? unary_impl(g, IMGD_OP_GELU, x, 0, 0) : NULL;
}

imgd_tensor *imgd_op_gelu_tanh(imgd_graph *g, imgd_tensor *x) {
    return live(g, "gelu_tanh", x, x) ? unary_impl(g, IMGD_OP_GELU_TANH, x, 0, 0) : NULL;
}

imgd_tensor *imgd_op_quick_gelu(imgd_graph *g, imgd_tensor *x) {
    return live(g, "quick_gelu", x, x) ? unary_impl(g, IMGD_OP_QUICK_GELU, x, 0, 0) : NULL;
}

imgd_tensor *imgd_op_silu(imgd_graph *g, imgd_tensor *x) {
    return live(g, "silu", x, x) ? unary_impl(g, IMGD_OP_SILU, x, 0, 0) : NULL;
}

imgd_tensor *imgd_op_clamp(imgd_graph *g, imgd_tensor *x, float lo, float hi) {
    if (!live(g, "clamp", x, x)) return NULL;
    if (!(lo <= hi)) FAIL_NULL(g, "clamp: lo %g > hi %g", (double)lo, (double)hi);
    return unary_impl(g, IMGD_OP_CLAMP, x, lo, hi);
}

imgd_tensor *imgd_op_scale(imgd_graph *g, imgd_tensor *x, float s, float b) {
    return live(g, "scale", x, x) ? unary_impl(g, IMGD_OP_SCALE, x, s, b) : NULL;
}

imgd_tensor *imgd_op_geglu(imgd_graph *g, imgd_tensor *x) {
    if (!live(g, "geglu", x, x)) return NULL;
    if (x->n_dims < 1 || x->shape[x->n_dims - 1] % 2 != 0)
        FAIL_NULL(g, "geglu: last dim must be even");
    x = to_f32_cont(g, x);
    if (!x) return NULL;
    int64_t shape[IMGD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->n_dims - 1] /= 2;
    imgd_tensor *t = new_node(g, IMGD_OP_GEGLU, IMGD_DTYPE_F32, x->n_dims, shape);
    if (t) t->src[0] = x;
    return t;
}

static imgd_tensor *binary_impl(imgd_graph *g, imgd_op op, imgd_tensor *a, imgd_tensor *b) {
    int32_t nd = IMGD_MAX(a->n_dims, b->n_dims);
    int64_t shape[IMGD_MAX_DIMS];
    for (int32_t i = 0; i < nd; i++) {
        int32_t ia = i - (nd - a->n_dims), ib = i - (nd - b->n_dims);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[96], sb[96];
            shape_str(a, sa, sizeof sa);
            shape_str(b, sb, sizeof sb);
            FAIL_NULL(g, "%s: shapes [%s] and [%s] do not broadcast", imgd_op_name(op), sa, sb);
        }
        shape[i] = da == 1 ? db : da;
    }
    a = to_f32_cont(g, a);
    b = to_f32_cont(g, b);
    if (!a || !b) return NULL;
    imgd_tensor *t = new_node(g, op, IMGD_DTYPE_F32, nd, shape);
    if (!t) return NULL;
    t->src[0] = a;
    t->src[1] = b;
    return t;
}

imgd_tensor *imgd_op_add(imgd_graph *g, imgd_tensor *a, imgd_tensor *b) {
    if (!live(g, "add", a, b)) return NULL;
    if (!b) FAIL_NULL(g, "add: b is NULL");
    return binary_impl(g, IMGD_OP_ADD, a, b);
}

imgd_tensor *imgd_op_sub(imgd_graph *g, imgd_tensor *a, imgd_tensor *b) {
    if (!live(g, "sub", a, b)) return NULL;
    if (!b) FAIL_NULL(g, "sub: b is NULL");
    return binary_impl(g, IMGD_OP_SUB, a, b);
}

imgd_tensor *imgd_op_mul(imgd_graph *g, imgd_tensor *a, imgd_tensor *b) {
    if (!live(g, "mul", a, b)) return NULL;
    if (!b) FAIL_NULL(g, "mul: b is NULL");
    return binary_impl(g, IMGD_OP_MUL, a, b);
}

imgd_tensor *imgd_op_div(imgd_graph *g, imgd_tensor *a, imgd_tensor *b) {
    if (!live(g, "div", a, b)) return NULL;
    if (!b) FAIL_NULL(g, "div: b is NULL");
    return binary_impl(g, IMGD_OP_DIV, a, b);
}

/* ---- embeddings -------------------------------------------------------------------------- */

imgd_tensor *imgd_op_timestep_embedding(imgd_graph *g, imgd_tensor *t, int32_t dim,
                                        bool flip_sin_to_cos, float shift, float max_period) {
    if (!live(g, "timestep_embedding", t, t)) return NULL;
    if (t->n_dims != 1 || dim < 2) FAIL_NULL(g, "timestep_embedding: t must be [N], dim >= 2");
    int32_t half = dim / 2;
    if (!((float)half - shift > 0.0f) || !(max_period > 0.0f))
        FAIL_NULL(g, "timestep_embedding: dim/2 - shift and max_period must be positive");
    t = to_f32_cont(g, t);
    if (!t) return NULL;
    int64_t      shape[2] = {t->shape[0], dim};
    imgd_tensor *y        = new_node(g, IMGD_OP_TIMESTEP_EMBEDDING, IMGD_DTYPE_F32, 2, shape);
    if (!y) return NULL;
    y->src[0] = t;
    y->ip[0]  = dim;
    y->ip[1]  = flip_sin_to_cos;
    y->fp[0]  = max_period;
    y->fp[1]  = shift;
    return y;
}

static imgd_tensor *rope_impl(imgd_graph *g, imgd_tensor *x, imgd_tensor *pos, imgd_rope_mode mode,
                              int32_t n_axes, const int32_t *dims, float theta) {
    int64_t D = x->shape[3], n_rot = 0;
    for (int32_t a = 0; a < n_axes; a++) {
        if (dims[a] < 2 || dims[a] % 2 != 0)
            FAIL_NULL(g, "rope: axis %d has %d dims; every axis needs an even number >= 2", (int)a,
                      (int)dims[a]);
        n_rot += dims[a];
    }
    if (n_rot > D || (unsigned)mode >= IMGD_ROPE_MODE_COUNT || !(theta > 0.0f))
        FAIL_NULL(g, "rope: %lld rotated dims must be <= head dim %lld; theta > 0",
                  (long long)n_rot, (long long)D);
    x   = to_f32_cont(g, x);
    pos = to_f32_cont(g, pos);
    if (!x || !pos) return NULL;
    imgd_tensor *t = new_node(g, IMGD_OP_ROPE, IMGD_DTYPE_F32, 4, x->shape);
    if (!t) return NULL;
    t->src[0] = x;
    t->src[1] = pos;
    t->ip[0]  = mode;
    t->ip[1]  = n_rot;
    t->ip[2]  = n_axes;
    for (int32_t a = 0; a < n_axes; a++) t->ip[3 + a] = dims[a];
    t->fp[0] = theta;
    return t;
}

imgd_tensor *imgd_op_rope(imgd_graph *g, imgd_tensor *x, imgd_tensor *pos, imgd_rope_mode mode,
                          int32_t n_rot, float theta) {
    if (!live(g, "rope", x, pos)) return NULL;
    if (!pos) FAIL_NULL(g, "rope: pos is NULL");
    if (x->n_dims != 4 || pos->n_dims != 1 || pos->shape[0] != x->shape[1])
        FAIL_NULL(g, "rope: x must be [B, L, H, D] and pos [L]");
    int64_t D = x->shape[3];
    if (n_rot == 0) n_rot = (int32_t)D;
    if (n_rot < 2 || n_rot > D || n_rot % 2 != 0 || (unsigned)mode >= IMGD_ROPE_MODE_COUNT ||
        !(theta > 0.0f))
        FAIL_NULL(g, "rope: n_rot %d must be even and <= D %lld; theta > 0", (int)n_rot,
                  (long long)D);
    return rope_impl(g, x, pos, mode, 1, &n_rot, theta);
}

imgd_tensor *imgd_op_rope_nd(imgd_graph *g, imgd_tensor *x, imgd_tensor *pos, imgd_rope_mode mode,
                             int32_t n_axes, const int32_t *axes_dims, float theta) {
    if (!live(g, "rope_nd", x, pos)) return NULL;
    if (!pos || !axes_dims) FAIL_NULL(g, "rope_nd: pos or axes_dims is NULL");
    if (n_axes < 1 || n_axes > IMGD_ROPE_AXES_MAX)
        FAIL_NULL(g, "rope_nd: %d axes (expected 1..%d)", (int)n_axes, IMGD_ROPE_AXES_MAX);
    if (x->n_dims != 4 || pos->n_dims != 2 || pos->shape[0] != x->shape[1] ||
        pos->shape[1] != n_axes)
        FAIL_NULL(g, "rope_nd: x must be [B, L, H, D] and pos [L, %d] (x has %d dims, L %lld)",
                  (int)n_axes, (int)x->n_dims, (long long)(x->n_dims > 1 ? x->shape[1] : 0));
    return rope_impl(g, x, pos, mode, n_axes, axes_dims, theta);
}
