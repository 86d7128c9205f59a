/* CPU elementwise kernels: activations, GEGLU, broadcasting binary ops, timestep embedding
 * and RoPE. Inputs are contiguous f32 (the builders guarantee it). */
#include <math.h>

#include "cpu_impl.h"
#include "tensor/ops.h"

/* ---- unary ------------------------------------------------------------------------------- */

typedef struct unary_ctx {
    const float *x;
    float       *y;
    imgd_op      op;
    float        f0, f1;
} unary_ctx;

/* One loop per op so each vectorises on its own; the switch is outside the loops. */
CPU_CLONES static void unary_range(const unary_ctx *c, size_t b, size_t e) {
    const float *restrict x = c->x;
    float *restrict y       = c->y;
    float f0 = c->f0, f1 = c->f1;
    switch (c->op) {
    case IMGD_OP_GELU:
        for (size_t i = b; i < e; i++) y[i] = cpu_gelu(x[i]);
        break;
    case IMGD_OP_GELU_TANH:
        for (size_t i = b; i < e; i++) {
            float v = x[i];
            y[i]    = 0.5f * v * (1.0f + cpu_tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
        }
        break;
    case IMGD_OP_QUICK_GELU:
        for (size_t i = b; i < e; i++) y[i] = x[i] * cpu_sigmoid(1.702f * x[i]);
        break;
    case IMGD_OP_SILU:
        for (size_t i = b; i < e; i++) y[i] = x[i] * cpu_sigmoid(x[i]);
        break;
    case IMGD_OP_CLAMP:
        for (size_t i = b; i < e; i++) {
            float v = x[i] < f0 ? f0 : x[i];
            y[i]    = v > f1 ? f1 : v;
        }
        break;
    case IMGD_OP_SCALE:
        for (size_t i = b; i < e; i++) y[i] = x[i] * f0 + f1;
        break;
    default: break;
    }
}

static void unary_task(void *p, size_t b, size_t e) {
    unary_range(p, b, e);
}

imgd_status cpu_unary(cpu_backend *cb, const imgd_tensor *n) {
    unary_ctx c = {n->src[0]->data, n->data, n->op, n->fp[0], n->fp[1]};
    cpu_parallel(cb, (size_t)imgd_tensor_numel(n), 8, unary_task, &c);
    return IMGD_OK;
}

/* ---- GEGLU ------------------------------------------------------------------------------ */

typedef struct geglu_ctx {
    const float *x;
    float       *y;
    size_t       D;
} geglu_ctx;

CPU_CLONES static void geglu_rows(const geglu_ctx *c, size_t b, size_t e) {
    size_t D = c->D;
    for (size_t r = b; r < e; r++) {
        const float *restrict a = c->x + r * 2 * D;
        const float *restrict g = a + D;
        float *restrict y       = c->y + r * D;
        for (size_t j = 0; j < D; j++) y[j] = a[j] * cpu_gelu(g[j]);
    }
}

static void geglu_task(void *p, size_t b, size_t e) {
    geglu_rows(p, b, e);
}

imgd_status cpu_geglu(cpu_backend *cb, const imgd_tensor *n) {
    size_t    D = (size_t)n->shape[n->n_dims - 1];
    geglu_ctx c = {n->src[0]->data, n->data, D};
    if (D == 0) return IMGD_OK;
    cpu_parallel(cb, (size_t)imgd_tensor_numel(n) / D, D * 8, geglu_task, &c);
    return IMGD_OK;
}

/* ---- binary with broadcasting ---------------------------------------------------------- */

/* The output is split into rows of its (collapsed) innermost dim; a and b step through
 * their rows with broadcast-aware strides and read their innermost elements with stride 1
 * or 0 (broadcast). Dims that are contiguous for out, a and b alike are merged first. */
typedef struct bin_ctx {
    const float *a, *b;
    float       *y;
    imgd_op      op;
    int32_t      nd;                   /* collapsed dims */
    int64_t      shape[IMGD_MAX_DIMS]; /* collapsed output shape */
    int64_t      sa[IMGD_MAX_DIMS];    /* element strides of a per collapsed dim */
    int64_t      sb[IMGD_MAX_DIMS];
    size_t       inner; /* shape[nd-1] */
    size_t       chunk; /* inner elements per task */
    size_t       chunks_per_row;
} bin_ctx;

CPU_CLONES static void bin_span(imgd_op op, const float *restrict a, int64_t sa,
                                const float *restrict b, int64_t sb, float *restrict y, size_t n) {
#define BIN_LOOP(EXPR)                                                                             \
    do {                                                                                           \
        if (sa == 1 && sb == 1)                                                                    \
            for (size_t i = 0; i < n; i++) {                                                       \
                float va = a[i], vb = b[i];                                                        \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
        else if (sa == 1)                                                                          \
            for (size_t i = 0; i < n; i++) {                                                       \
                float va = a[i], vb = b[0];                                                        \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
        else if (sb == 1)                                                                          \
            for (size_t i = 0; i < n; i++) {                                                       \
                float va = a[0], vb = b[i];                                                        \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
        else                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                       \
                float va = a[0], vb = b[0];                                                        \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
    } while (0)
    switch (op) {
    case IMGD_OP_ADD: BIN_LOOP(va + vb); break;
    case IMGD_OP_SUB: BIN_LOOP(va - vb); break;
    case IMGD_OP_MUL: BIN_LOOP(va * vb); break;
    default: BIN_LOOP(va / vb); break;
    }
#undef BIN_LOOP
}

static void bin_task(void *p, size_t tb, size_t te) {
    const bin_ctx *c = p;
    for (size_t t = tb; t < te; t++) {
        size_t  row = t / c->chunks_per_row, j0 = (t % c->chunks_per_row) * c->chunk;
        size_t  len = IMGD_MIN(c->chunk, c->inner - j0);
        int64_t oa = 0, ob = 0, r = (int64_t)row;
        for (int32_t d = c->nd - 2; d >= 0; d--) {
            int64_t i = r % c->shape[d];
            r /= c->shape[d];
            oa += i * c->sa[d];
            ob += i * c->sb[d];
        }
        int64_t ia = c->sa[c->nd - 1], ib = c->sb[c->nd - 1];
        bin_span(c->op, c->a + oa + (int64_t)j0 * ia, ia, c->b + ob + (int64_t)j0 * ib, ib,
                 c->y + row * c->inner + j0, len);
    }
}

/* Broadcast strides of src against an output of nd dims (0 where src broadcasts). */
static void bcast_strides(const imgd_tensor *src, int32_t nd, int64_t *s) {
    for (int32_t d = 0; d < nd; d++) {
        int32_t i = d - (nd - src->n_dims);
        s[d]      = (i < 0 || src->shape[i] == 1) ? 0 : src->stride[i];
    }
}

static void bin_collapse(bin_ctx *c, const imgd_tensor *n) {
    int64_t sa[IMGD_MAX_DIMS], sb[IMGD_MAX_DIMS];
    bcast_strides(n->src[0], n->n_dims, sa);
    bcast_strides(n->src[1], n->n_dims, sb);
    int32_t k = 0;
    for (int32_t d = 0; d < n->n_dims; d++) {
        if (n->shape[d] == 1) continue;
        if (k > 0 && c->sa[k - 1] == sa[d] * n->shape[d] && c->sb[k - 1] == sb[d] * n->shape[d]) {
            c->shape[k - 1] *= n->shape[d];
            c->sa[k - 1] = sa[d];
            c->sb[k - 1] = sb[d];
            continue;
        }
        c->shape[k] = n->shape[d];
        c->sa[k]    = sa[d];
        c->sb[k]    = sb[d];
        k++;
    }
    if (k == 0) {
        c->shape[0] = 1;
        c->sa[0] = c->sb[0] = 0;
        k                   = 1;
    }
    c->nd = k;
}

imgd_status cpu_binary(cpu_backend *cb, const imgd_tensor *n) {
    bin_ctx c = {.a = n->src[0]->data, .b = n->src[1]->data, .y = n->data, .op = n->op};
    size_t  N = (size_t)imgd_tensor_numel(n);
    if (N == 0) return IMGD_OK;
    bin_collapse(&c, n);
    c.inner          = (size_t)c.shape[c.nd - 1];
    c.chunk          = IMGD_MIN(c.inner, (size_t)16384);
    c.chunks_per_row = (c.inner + c.chunk - 1) / c.chunk;
    size_t tasks     = N / c.inner * c.chunks_per_row;
    cpu_parallel(cb, tasks, c.chunk, bin_task, &c);
    return IMGD_OK;
}

/* ---- timestep embedding ----------------------------------------------------------------- */

imgd_status cpu_timestep(cpu_backend *cb, const imgd_tensor *n) {
    IMGD_UNUSED(cb);
    const float *t = n->src[0]->data;
    float       *y = n->data;
    int64_t      N = n->shape[0], dim = n->ip[0], half = dim / 2;
    bool         flip = n->ip[1] != 0;
    double       k    = -log((double)n->fp[0]) / ((double)half - (double)n->fp[1]);
    for (int64_t b = 0; b < N; b++) {
        float *row = y + b * dim;
        for (int64_t i = 0; i < half; i++) {
            double a = (double)t[b] * exp(k * (double)i);
            float  s = (float)sin(a), co = (float)cos(a);
            row[i]        = flip ? co : s;
            row[half + i] = flip ? s : co;
        }
        if (dim % 2) row[dim - 1] = 0.0f;
    }
    return IMGD_OK;
}

/* ---- RoPE -------------------------------------------------------------------------------- */

#define ROPE_FREQS 256

typedef struct rope_ctx {
    const float   *x, *pos;
    float         *y;
    int64_t        L, H, D, n_rot, A;
    bool           neox;
    float          theta;
    const int64_t *ip;
    double         freq[ROPE_FREQS]; /* pair frequency when n_rot/2 <= ROPE_FREQS */
    int32_t        axis[ROPE_FREQS]; /* pair axis (column of pos) */
} rope_ctx;

#define ROPE_CHUNK 64 /* rotation pairs whose cos/sin are computed at a time */

/* Rows are (b, l); the angles of a row are computed once per chunk of pairs and shared by
 * its H heads. */
static void rope_task(void *p, size_t rb, size_t re) {
    const rope_ctx *c    = p;
    int64_t         half = c->n_rot / 2;
    float           cs[ROPE_CHUNK], sn[ROPE_CHUNK];
    for (size_t r = rb; r < re; r++) {
        const float *pos = c->pos + ((int64_t)r % c->L) * c->A;
        for (int64_t i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            int64_t m = IMGD_MIN((int64_t)ROPE_CHUNK, half - i0);
            for (int64_t i = 0; i < m; i++) {
                double  f;
                int32_t a;
                if (half <= ROPE_FREQS) {
                    f = c->freq[i0 + i];
                    a = c->axis[i0 + i];
                } else {
                    f = pow((double)c->theta, imgd_rope_pair_exp(c->ip, i0 + i, &a));
                }
                double ang = (double)pos[a] * f;
                cs[i]      = (float)cos(ang);
                sn[i]      = (float)sin(ang);
            }
            for (int64_t h = 0; h < c->H; h++) {
                const float *x = c->x + ((int64_t)r * c->H + h) * c->D;
                float       *y = c->y + ((int64_t)r * c->H + h) * c->D;
                for (int64_t i = 0; i < m; i++) {
                    int64_t k = i0 + i, a = c->neox ? k : 2 * k, b = c->neox ? k + half : 2 * k + 1;
                    float   x0 = x[a], x1 = x[b];
                    y[a] = x0 * cs[i] - x1 * sn[i];
                    y[b] = x1 * cs[i] + x0 * sn[i];
                }
            }
        }
        for (int64_t h = 0; h < c->H; h++) {
            const float *x = c->x + ((int64_t)r * c->H + h) * c->D;
            float       *y = c->y + ((int64_t)r * c->H + h) * c->D;
            for (int64_t i = c->n_rot; i < c->D; i++) y[i] = x[i];
        }
    }
}

imgd_status cpu_rope(cpu_backend *cb, const imgd_tensor *n) {
    rope_ctx c = {n->src[0]->data,
                  n->src[1]->data,
                  n->data,
                  n->shape[1],
                  n->shape[2],
                  n->shape[3],
                  n->ip[1],
                  n->ip[2],
                  n->ip[0] == IMGD_ROPE_NEOX,
                  n->fp[0],
                  n->ip,
                  {0},
                  {0}};
    for (int64_t i = 0; i < c.n_rot / 2 && i < ROPE_FREQS; i++)
        c.freq[i] = pow((double)c.theta, imgd_rope_pair_exp(n->ip, i, &c.axis[i]));
    cpu_parallel(cb, (size_t)(n->shape[0] * n->shape[1]), (size_t)(c.H * c.D * 8), rope_task, &c);
    return IMGD_OK;
}
