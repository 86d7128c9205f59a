/* Reference backend: vtable, element access, and the layout, elementwise and embedding
 * kernels. Every kernel walks the output's logical index space one element at a time and
 * reads inputs through their strides, so it is obviously right and slow. */
#include "tensor/ref.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "formats/dtype.h"
#include "formats/quant.h"
#include "tensor/ops.h"
#include "tensor/ref_impl.h"
#include "tensor/tensor_impl.h"

/* ---- element access ------------------------------------------------------------------ */

void ref_store(const imgd_tensor *t, int64_t off, double v) {
    unsigned char *p = t->data;
    float          f = (float)v;
    uint16_t       h;
    switch (t->dtype) {
    case IMGD_DTYPE_F32: memcpy(p + off * 4, &f, 4); break;
    case IMGD_DTYPE_F16:
        h = imgd_f32_to_f16(f);
        memcpy(p + off * 2, &h, 2);
        break;
    case IMGD_DTYPE_BF16:
        h = imgd_f32_to_bf16(f);
        memcpy(p + off * 2, &h, 2);
        break;
    default: IMGD_ASSERT(false);
    }
}

void ref_unravel(const imgd_tensor *t, int64_t lin, int64_t *idx) {
    for (int32_t d = t->n_dims - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? lin % t->shape[d] : 0;
        lin    = t->shape[d] ? lin / t->shape[d] : 0;
    }
}

int64_t ref_offset(const imgd_tensor *t, const int64_t *idx) {
    int64_t off = 0;
    for (int32_t d = 0; d < t->n_dims; d++) off += idx[d] * t->stride[d];
    return off;
}

int64_t ref_bcast_offset(const imgd_tensor *src, int32_t out_dims, const int64_t *idx) {
    int64_t off = 0;
    for (int32_t d = 0; d < src->n_dims; d++) {
        int64_t i = idx[d + out_dims - src->n_dims];
        off += (src->shape[d] == 1 ? 0 : i) * src->stride[d];
    }
    return off;
}

double ref_at(const imgd_tensor *t, int64_t lin) {
    int64_t idx[IMGD_MAX_DIMS];
    ref_unravel(t, lin, idx);
    return ref_load(t, ref_offset(t, idx));
}

/* ---- layout ---------------------------------------------------------------------------- */

static void ref_cast(const imgd_tensor *n) {
    int64_t N = imgd_tensor_numel(n);
    for (int64_t i = 0; i < N; i++) ref_store(n, i, ref_at(n->src[0], i));
}

static void ref_dequantize(const imgd_tensor *n) {
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(n->src[0]->dtype);
    uint64_t                 nb = (uint64_t)imgd_tensor_numel(n) / tr->block_elems;
    imgd_status st = imgd_quant_dequantize(n->src[0]->dtype, n->src[0]->data, nb, n->data);
    IMGD_ASSERT(st == IMGD_OK); /* supports_op checked the dtype */
}

static void ref_concat(const imgd_tensor *n) {
    int64_t N    = imgd_tensor_numel(n), idx[IMGD_MAX_DIMS];
    int32_t axis = (int32_t)n->ip[0];
    for (int64_t i = 0; i < N; i++) {
        ref_unravel(n, i, idx);
        int s = 0;
        while (idx[axis] >= n->src[s]->shape[axis]) idx[axis] -= n->src[s++]->shape[axis];
        ref_store(n, i, ref_load(n->src[s], ref_offset(n->src[s], idx)));
    }
}

static void ref_pad(const imgd_tensor *n) {
    int64_t N = imgd_tensor_numel(n), idx[IMGD_MAX_DIMS];
    for (int64_t i = 0; i < N; i++) {
        ref_unravel(n, i, idx);
        bool inside = true;
        for (int32_t d = 0; d < n->n_dims; d++) {
            idx[d] -= n->ip[(size_t)2 * d];
            if (idx[d] < 0 || idx[d] >= n->src[0]->shape[d]) inside = false;
        }
        ref_store(n, i,
                  inside ? ref_load(n->src[0], ref_offset(n->src[0], idx)) : (double)n->fp[0]);
    }
}

static void ref_upsample(const imgd_tensor *n) {
    int64_t N = imgd_tensor_numel(n), idx[IMGD_MAX_DIMS];
    for (int64_t i = 0; i < N; i++) {
        ref_unravel(n, i, idx);
        idx[n->n_dims - 1] /= 2;
        idx[n->n_dims - 2] /= 2;
        ref_store(n, i, ref_load(n->src[0], ref_offset(n->src[0], idx)));
    }
}

/* ---- elementwise ------------------------------------------------------------------------- */

static double gelu_erf(double x) {
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

static double unary(imgd_op op, double x, const float *fp) {
    switch (op) {
    case IMGD_OP_GELU: return gelu_erf(x);
    case IMGD_OP_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    case IMGD_OP_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case IMGD_OP_SILU: return x / (1.0 + exp(-x));
    case IMGD_OP_CLAMP: return fmin(fmax(x, (double)fp[0]), (double)fp[1]);
    case IMGD_OP_SCALE: return x * (double)fp[0] + (double)fp[1];
    default: IMGD_ASSERT(false); return 0;
    }
}

static void ref_unary(const imgd_tensor *n) {
    int64_t N = imgd_tensor_numel(n);
    for (int64_t i = 0; i < N; i++) ref_store(n, i, unary(n->op, ref_at(n->src[0], i), n->fp));
}

static void ref_geglu(const imgd_tensor *n) {
    int64_t D = n->shape[n->n_dims - 1], rows = imgd_tensor_numel(n) / (D ? D : 1);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < D; j++) {
            double a = ref_at(n->src[0], r * 2 * D + j), b = ref_at(n->src[0], r * 2 * D + D + j);
            ref_store(n, r * D + j, a * gelu_erf(b));
        }
}

static void ref_binary(const imgd_tensor *n) {
    int64_t N = imgd_tensor_numel(n), idx[IMGD_MAX_DIMS];
    for (int64_t i = 0; i < N; i++) {
        ref_unravel(n, i, idx);
        double a = ref_load(n->src[0], ref_bcast_offset(n->src[0], n->n_dims, idx));
        double b = ref_load(n->src[1], ref_bcast_offset(n->src[1], n->n_dims, idx));
        double r = n->op == IMGD_OP_ADD   ? a + b
                   : n->op == IMGD_OP_SUB ? a - b
                   : n->op == IMGD_OP_MUL ? a * b
                                          : a / b;
        ref_store(n, i, r);
    }
}

/* ---- embeddings -------------------------------------------------------------------------- */

static void ref_timestep(const imgd_tensor *n) {
    int64_t N = n->shape[0], dim = n->ip[0], half = dim / 2;
    bool    flip = n->ip[1] != 0;
    double  maxp = (double)n->fp[0], shift = (double)n->fp[1];
    for (int64_t b = 0; b < N; b++) {
        double t = ref_at(n->src[0], b);
        for (int64_t i = 0; i < half; i++) {
            double f = exp(-log(maxp) * (double)i / ((double)half - shift));
            double s = sin(t * f), c = cos(t * f);
            ref_store(n, b * dim + i, flip ? c : s);
            ref_store(n, b * dim + half + i, flip ? s : c);
        }
        if (dim % 2) ref_store(n, b * dim + dim - 1, 0.0);
    }
}

static void ref_rope(const imgd_tensor *n) {
    int64_t B = n->shape[0], L = n->shape[1], H = n->shape[2], D = n->shape[3];
    int64_t nr = n->ip[1], half = nr / 2;
    bool    neox = n->ip[0] == IMGD_ROPE_NEOX;
    for (int64_t b = 0; b < B; b++)
        for (int64_t l = 0; l < L; l++)
            for (int64_t h = 0; h < H; h++) {
                int64_t base = ((b * L + l) * H + h) * D;
                int64_t A    = n->ip[2];
                for (int64_t i = 0; i < half; i++) {
                    int32_t a   = 0;
                    double  e   = imgd_rope_pair_exp(n->ip, i, &a);
                    double  ang = ref_at(n->src[1], l * A + a) * pow((double)n->fp[0], e);
                    int64_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
                    double  x0 = ref_at(n->src[0], base + i0), x1 = ref_at(n->src[0], base + i1);
                    ref_store(n, base + i0, x0 * cos(ang) - x1 * sin(ang));
                    ref_store(n, base + i1, x1 * cos(ang) + x0 * sin(ang));
                }
                for (int64_t i = nr; i < D; i++)
                    ref_store(n, base + i, ref_at(n->src[0], base + i));
            }
}

/* Dequantize-then-f32 reference of linear_quant: each weight block is expanded on its own
 * (at most 256 values) and the dot products accumulate in double. */
static void ref_linear_quant(const imgd_tensor *n) {
    const imgd_tensor       *x = n->src[0], *w = n->src[1], *bias = n->src[2];
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(w->dtype);
    int64_t                  N = w->shape[0], K = w->shape[1], M = imgd_tensor_numel(x) / K;
    int64_t                  be = tr->block_elems, nb = K / be;
    float                    blk[256];
    IMGD_ASSERT(be <= 256);
    const unsigned char *wd = w->data;
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < N; j++) {
            double acc = bias ? ref_at(bias, j) : 0.0;
            for (int64_t b = 0; b < nb; b++) {
                imgd_status st = imgd_quant_dequantize(
                    w->dtype, wd + (size_t)(j * nb + b) * tr->block_bytes, 1, blk);
                IMGD_ASSERT(st == IMGD_OK); /* supports_op checked the dtype */
                for (int64_t k = 0; k < be; k++)
                    acc += ref_at(x, m * K + b * be + k) * (double)blk[k];
            }
            ref_store(n, m * N + j, acc);
        }
}

/* ---- dispatch ---------------------------------------------------------------------------- */

typedef void (*ref_kernel)(const imgd_tensor *n);

static const ref_kernel k_ref_kernels[] = {
    [IMGD_OP_NONE]               = NULL,
    [IMGD_OP_VIEW]               = NULL,
    [IMGD_OP_CAST]               = ref_cast,
    [IMGD_OP_DEQUANTIZE]         = ref_dequantize,
    [IMGD_OP_CONCAT]             = ref_concat,
    [IMGD_OP_PAD]                = ref_pad,
    [IMGD_OP_UPSAMPLE_NEAREST]   = ref_upsample,
    [IMGD_OP_AVG_POOL2D]         = ref_avg_pool2d,
    [IMGD_OP_MATMUL]             = ref_matmul,
    [IMGD_OP_CONV2D]             = ref_conv2d,
    [IMGD_OP_GROUP_NORM]         = ref_group_norm,
    [IMGD_OP_LAYER_NORM]         = ref_layer_norm,
    [IMGD_OP_RMS_NORM]           = ref_rms_norm,
    [IMGD_OP_SOFTMAX]            = ref_softmax,
    [IMGD_OP_ATTENTION]          = ref_attention,
    [IMGD_OP_GELU]               = ref_unary,
    [IMGD_OP_GELU_TANH]          = ref_unary,
    [IMGD_OP_QUICK_GELU]         = ref_unary,
    [IMGD_OP_SILU]               = ref_unary,
    [IMGD_OP_GEGLU]              = ref_geglu,
    [IMGD_OP_CLAMP]              = ref_unary,
    [IMGD_OP_SCALE]              = ref_unary,
    [IMGD_OP_ADD]                = ref_binary,
    [IMGD_OP_SUB]                = ref_binary,
    [IMGD_OP_MUL]                = ref_binary,
    [IMGD_OP_DIV]                = ref_binary,
    [IMGD_OP_TIMESTEP_EMBEDDING] = ref_timestep,
    [IMGD_OP_ROPE]               = ref_rope,
    [IMGD_OP_LINEAR_QUANT]       = ref_linear_quant,
};
_Static_assert(IMGD_ARRAY_LEN(k_ref_kernels) == IMGD_OP_COUNT, "one reference kernel per op");

/* ---- backend ------------------------------------------------------------------------------ */

static const char *ref_name(const imgd_backend *be) {
    IMGD_UNUSED(be);
    return "ref";
}

static imgd_status ref_alloc(imgd_backend *be, size_t n, void **out) {
    IMGD_UNUSED(be);
    return imgd_host_buffer_alloc("ref", n, out);
}

static void ref_buffer_free(imgd_backend *be, void *p) {
    IMGD_UNUSED(be);
    imgd_host_buffer_free(p);
}

static bool ref_supports(const imgd_backend *be, const imgd_tensor *n) {
    IMGD_UNUSED(be);
    if ((unsigned)n->op >= IMGD_OP_COUNT || !k_ref_kernels[n->op]) return false;
    if (n->op == IMGD_OP_ATTENTION && n->src[1]->shape[1] > 4096) return false; /* row buffer */
    if (n->op == IMGD_OP_DEQUANTIZE || n->op == IMGD_OP_LINEAR_QUANT) {
        const imgd_dtype        dt   = n->src[n->op == IMGD_OP_LINEAR_QUANT ? 1 : 0]->dtype;
        static const imgd_dtype ok[] = {
            IMGD_DTYPE_Q4_0, IMGD_DTYPE_Q4_1, IMGD_DTYPE_Q5_0, IMGD_DTYPE_Q5_1, IMGD_DTYPE_Q8_0,
            IMGD_DTYPE_Q2_K, IMGD_DTYPE_Q3_K, IMGD_DTYPE_Q4_K, IMGD_DTYPE_Q5_K, IMGD_DTYPE_Q6_K};
        for (size_t i = 0; i < IMGD_ARRAY_LEN(ok); i++)
            if (dt == ok[i]) return true;
        return false;
    }
    return true;
}

static imgd_status ref_run(imgd_backend *be, imgd_graph *g) {
    IMGD_UNUSED(be);
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n = imgd_graph_exec_node(g, i);
        if (imgd_graph_cancel_requested(g))
            return imgd_fail(IMGD_E_CANCELLED, "compute cancelled before node %zu", i);
        k_ref_kernels[n->op](n);
    }
    return IMGD_OK;
}

static void ref_free(imgd_backend *be) {
    imgd_free(be);
}

static const struct imgd_backend_i k_ref_iface = {
    .name        = ref_name,
    .alloc       = ref_alloc,
    .buffer_free = ref_buffer_free,
    .supports_op = ref_supports,
    .prepare     = NULL,
    .release     = NULL,
    .run         = ref_run,
    .read        = NULL,
    .free        = ref_free,
};

imgd_status imgd_ref_backend_new(const imgd_backend_params *params, imgd_backend **out) {
    IMGD_UNUSED(params);
    imgd_backend *be = imgd_calloc(1, sizeof *be);
    if (!be) return imgd_fail(IMGD_E_NOMEM, "ref backend: out of memory");
    be->iface = &k_ref_iface;
    *out      = be;
    return IMGD_OK;
}
