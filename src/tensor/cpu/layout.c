/* CPU layout kernels: strided copy and cast, dequantization, concat, pad, nearest
 * upsampling and average pooling. Copies are element-size generic (2- or 4-byte types). */
#include "base/error.h"
#include "cpu_impl.h"
#include "formats/dtype.h"
#include "formats/quant.h"

/* ---- strided copy with conversion ------------------------------------------------------- */

/* A copy of `shape` elements from src (strides ss) to dst (strides ds), dims already
 * collapsed; rows are the innermost dim. */
typedef struct copy_ctx {
    const unsigned char *src;
    unsigned char       *dst;
    imgd_dtype           st, dt;
    size_t               ses, des; /* element sizes */
    int32_t              nd;
    int64_t              shape[IMGD_MAX_DIMS];
    int64_t              ss[IMGD_MAX_DIMS];
    int64_t              ds[IMGD_MAX_DIMS];
    size_t               piece, pieces; /* each row is copied in `pieces` tasks of `piece`
                                           elements (the last shorter): a contiguous tensor
                                           is one row, and still uses every thread */
} copy_ctx;

static float load_f(const unsigned char *p, imgd_dtype dt) {
    uint16_t h;
    float    f;
    if (dt == IMGD_DTYPE_F32) {
        memcpy(&f, p, 4);
        return f;
    }
    memcpy(&h, p, 2);
    return dt == IMGD_DTYPE_F16 ? cpu_f16_to_f32(h) : cpu_bf16_to_f32(h);
}

static void store_f(unsigned char *p, imgd_dtype dt, float f) {
    uint16_t h;
    if (dt == IMGD_DTYPE_F32) {
        memcpy(p, &f, 4);
        return;
    }
    h = dt == IMGD_DTYPE_F16 ? imgd_f32_to_f16(f) : cpu_f32_to_bf16(f);
    memcpy(p, &h, 2);
}

/* Contiguous f16/bf16 -> f32 rows, the common case of a cast (weights stored in 16 bits). */
CPU_CLONES static void widen_row(const uint16_t *restrict s, float *restrict d, size_t n,
                                 bool f16) {
    if (f16)
        for (size_t i = 0; i < n; i++) d[i] = cpu_f16_to_f32(s[i]);
    else
        for (size_t i = 0; i < n; i++) d[i] = cpu_bf16_to_f32(s[i]);
}

static void copy_row(const copy_ctx *c, const unsigned char *s, unsigned char *d, size_t n) {
    int64_t si = c->ss[c->nd - 1], di = c->ds[c->nd - 1];
    if (c->st == c->dt && si == 1 && di == 1) {
        memcpy(d, s, n * c->ses);
    } else if (c->dt == IMGD_DTYPE_F32 && c->st != IMGD_DTYPE_F32 && si == 1 && di == 1) {
        uint16_t buf[256]; /* aligned copy, since s may be only 2-byte aligned */
        for (size_t i = 0; i < n; i += 256) {
            size_t k = IMGD_MIN((size_t)256, n - i);
            memcpy(buf, s + i * 2, k * 2);
            widen_row(buf, (float *)(void *)(d + i * 4), k, c->st == IMGD_DTYPE_F16);
        }
    } else if (c->st == c->dt && c->ses == 4) {
        for (size_t i = 0; i < n; i++) memcpy(d + (int64_t)i * di * 4, s + (int64_t)i * si * 4, 4);
    } else if (c->st == c->dt) {
        for (size_t i = 0; i < n; i++) memcpy(d + (int64_t)i * di * 2, s + (int64_t)i * si * 2, 2);
    } else {
        for (size_t i = 0; i < n; i++)
            store_f(d + (int64_t)i * di * (int64_t)c->des, c->dt,
                    load_f(s + (int64_t)i * si * (int64_t)c->ses, c->st));
    }
}

static void copy_task(void *p, size_t tb, size_t te) {
    const copy_ctx *c     = p;
    size_t          inner = (size_t)c->shape[c->nd - 1];
    for (size_t t = tb; t < te; t++) {
        size_t  r = t / c->pieces, off = (t % c->pieces) * c->piece;
        int64_t so = (int64_t)off * c->ss[c->nd - 1], dof = (int64_t)off * c->ds[c->nd - 1];
        int64_t x = (int64_t)r;
        for (int32_t d = c->nd - 2; d >= 0; d--) {
            int64_t i = x % c->shape[d];
            x /= c->shape[d];
            so += i * c->ss[d];
            dof += i * c->ds[d];
        }
        copy_row(c, c->src + so * (int64_t)c->ses, c->dst + dof * (int64_t)c->des,
                 IMGD_MIN(c->piece, inner - off));
    }
}

/* Copies (and converts) src[shape] into dst with the given element strides. */
static void copy_strided(cpu_backend *cb, int32_t nd, const int64_t *shape, const void *src,
                         imgd_dtype st, const int64_t *ss, void *dst, imgd_dtype dt,
                         const int64_t *ds) {
    copy_ctx c     = {src, dst, st, dt, imgd_dtype_size(st), imgd_dtype_size(dt), 0, {0},
                      {0}, {0}, 0,  1};
    int64_t  numel = 1;
    for (int32_t d = 0; d < nd; d++) {
        numel *= shape[d];
        if (shape[d] == 1) continue;
        int32_t k = c.nd;
        if (k > 0 && c.ss[k - 1] == ss[d] * shape[d] && c.ds[k - 1] == ds[d] * shape[d]) {
            c.shape[k - 1] *= shape[d];
            c.ss[k - 1] = ss[d];
            c.ds[k - 1] = ds[d];
            continue;
        }
        c.shape[k] = shape[d];
        c.ss[k]    = ss[d];
        c.ds[k]    = ds[d];
        c.nd++;
    }
    if (numel == 0) return;
    if (c.nd == 0) {
        c.nd       = 1;
        c.shape[0] = 1;
        c.ss[0] = c.ds[0] = 1;
    }
    size_t inner = (size_t)c.shape[c.nd - 1], rows = (size_t)numel / inner;
    /* pieces of at least 16k elements, enough of them for every thread */
    c.piece  = inner;
    c.pieces = 1;
    if (rows < 4 * (size_t)cb->n_threads && inner > 32768) {
        size_t want = (4 * (size_t)cb->n_threads + rows - 1) / rows;
        c.piece     = IMGD_MAX((size_t)16384, (inner + want - 1) / want);
        c.pieces    = (inner + c.piece - 1) / c.piece;
    }
    cpu_parallel(cb, rows * c.pieces, IMGD_MIN(c.piece, inner) * 2, copy_task, &c);
}

imgd_status cpu_cast(cpu_backend *cb, const imgd_tensor *n) {
    const imgd_tensor *s = n->src[0];
    copy_strided(cb, n->n_dims, n->shape, s->data, s->dtype, s->stride, n->data, n->dtype,
                 n->stride);
    return IMGD_OK;
}

/* ---- dequantize -------------------------------------------------------------------------- */

typedef struct deq_ctx {
    const unsigned char *src;
    float               *dst;
    imgd_dtype           dt;
    size_t               block_bytes, block_elems;
    imgd_status          st;
} deq_ctx;

static void deq_task(void *p, size_t b, size_t e) {
    deq_ctx    *c  = p;
    imgd_status st = imgd_quant_dequantize(c->dt, c->src + b * c->block_bytes, e - b,
                                           c->dst + b * c->block_elems);
    if (st != IMGD_OK) c->st = st; /* only possible for a dtype supports_op rejected */
}

imgd_status cpu_dequantize(cpu_backend *cb, const imgd_tensor *n) {
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(n->src[0]->dtype);
    deq_ctx                  c  = {n->src[0]->data, n->data,         n->src[0]->dtype,
                                   tr->block_bytes, tr->block_elems, IMGD_OK};
    cpu_parallel(cb, (size_t)imgd_tensor_numel(n) / tr->block_elems, (size_t)tr->block_elems * 4,
                 deq_task, &c);
    return c.st;
}

/* ---- concat ------------------------------------------------------------------------------ */

imgd_status cpu_concat(cpu_backend *cb, const imgd_tensor *n) {
    int32_t axis = (int32_t)n->ip[0];
    int64_t off  = 0;
    size_t  es   = imgd_dtype_size(n->dtype);
    for (int s = 0; s < IMGD_TENSOR_SRC_MAX && n->src[s]; s++) {
        const imgd_tensor *x = n->src[s];
        unsigned char     *d = (unsigned char *)n->data + (size_t)(off * n->stride[axis]) * es;
        copy_strided(cb, x->n_dims, x->shape, x->data, x->dtype, x->stride, d, n->dtype, n->stride);
        off += x->shape[axis];
    }
    return IMGD_OK;
}

/* ---- pad ---------------------------------------------------------------------------------- */

typedef struct pad_ctx {
    const imgd_tensor *n;
    size_t             es;
    unsigned char      fill[4]; /* the pad value in the tensor's dtype */
} pad_ctx;

static void fill_row(unsigned char *d, size_t count, const pad_ctx *c) {
    for (size_t i = 0; i < count; i++) memcpy(d + i * c->es, c->fill, c->es);
}

/* Each output row (innermost dim) is either wholly padding or before|source row|after. */
static void pad_task(void *p, size_t rb, size_t re) {
    const pad_ctx     *c = p;
    const imgd_tensor *n = c->n, *x = n->src[0];
    int32_t            nd = n->n_dims;
    int64_t W = n->shape[nd - 1], before = n->ip[(size_t)2 * (nd - 1)], xw = x->shape[nd - 1];
    for (size_t r = rb; r < re; r++) {
        unsigned char *d  = (unsigned char *)n->data + r * (size_t)W * c->es;
        int64_t        rr = (int64_t)r, so = 0;
        bool           in = true;
        for (int32_t k = nd - 2; k >= 0; k--) {
            int64_t i = rr % n->shape[k] - n->ip[(size_t)2 * k];
            rr /= n->shape[k];
            if (i < 0 || i >= x->shape[k]) in = false;
            so += i * x->stride[k];
        }
        if (!in) {
            fill_row(d, (size_t)W, c);
            continue;
        }
        fill_row(d, (size_t)before, c);
        memcpy(d + (size_t)before * c->es, (const unsigned char *)x->data + (size_t)so * c->es,
               (size_t)xw * c->es);
        fill_row(d + (size_t)(before + xw) * c->es, (size_t)(W - before - xw), c);
    }
}

imgd_status cpu_pad(cpu_backend *cb, const imgd_tensor *n) {
    pad_ctx c = {n, imgd_dtype_size(n->dtype), {0}};
    store_f(c.fill, n->dtype, n->fp[0]);
    if (n->n_dims == 0) {
        memcpy(n->data, n->src[0]->data, c.es);
        return IMGD_OK;
    }
    int64_t W = n->shape[n->n_dims - 1];
    if (W == 0 || imgd_tensor_numel(n) == 0) return IMGD_OK;
    cpu_parallel(cb, (size_t)(imgd_tensor_numel(n) / W), (size_t)W, pad_task, &c);
    return IMGD_OK;
}

/* ---- nearest upsample x2 -------------------------------------------------------------------- */

typedef struct up_ctx {
    const unsigned char *x;
    unsigned char       *y;
    size_t               W, es; /* source width */
} up_ctx;

CPU_CLONES static void up_row32(const uint32_t *restrict s, uint32_t *restrict d, size_t W) {
    for (size_t i = 0; i < W; i++) {
        d[2 * i]     = s[i];
        d[2 * i + 1] = s[i];
    }
}

CPU_CLONES static void up_row16(const uint16_t *restrict s, uint16_t *restrict d, size_t W) {
    for (size_t i = 0; i < W; i++) {
        d[2 * i]     = s[i];
        d[2 * i + 1] = s[i];
    }
}

/* One task per source row: writes output rows 2r and 2r+1. */
static void up_task(void *p, size_t rb, size_t re) {
    const up_ctx *c = p;
    size_t        W = c->W, rowb = W * c->es;
    for (size_t r = rb; r < re; r++) {
        unsigned char *d = c->y + r * 4 * rowb;
        if (c->es == 4)
            up_row32((const uint32_t *)(const void *)(c->x + r * rowb), (uint32_t *)(void *)d, W);
        else
            up_row16((const uint16_t *)(const void *)(c->x + r * rowb), (uint16_t *)(void *)d, W);
        memcpy(d + 2 * rowb, d, 2 * rowb);
    }
}

imgd_status cpu_upsample(cpu_backend *cb, const imgd_tensor *n) {
    const imgd_tensor *x = n->src[0];
    up_ctx c = {x->data, n->data, (size_t)x->shape[x->n_dims - 1], imgd_dtype_size(n->dtype)};
    if (c.W == 0 || imgd_tensor_numel(x) == 0) return IMGD_OK;
    cpu_parallel(cb, (size_t)imgd_tensor_numel(x) / c.W, c.W * 4, up_task, &c);
    return IMGD_OK;
}

/* ---- average pool ---------------------------------------------------------------------------- */

typedef struct pool_ctx {
    const float *x;
    float       *y;
    int64_t      H, W, OH, OW, k, s, p;
} pool_ctx;

static void avg_pool_task(void *pp, size_t b, size_t e) {
    const pool_ctx *c   = pp;
    float           inv = 1.0f / (float)(c->k * c->k);
    for (size_t pl = b; pl < e; pl++) {
        const float *x = c->x + (int64_t)pl * c->H * c->W;
        float       *y = c->y + (int64_t)pl * c->OH * c->OW;
        for (int64_t oy = 0; oy < c->OH; oy++)
            for (int64_t ox = 0; ox < c->OW; ox++) {
                float   acc = 0.0f;
                int64_t y0 = oy * c->s - c->p, x0 = ox * c->s - c->p;
                for (int64_t ky = IMGD_MAX(0, -y0); ky < c->k && y0 + ky < c->H; ky++)
                    for (int64_t kx = IMGD_MAX(0, -x0); kx < c->k && x0 + kx < c->W; kx++)
                        acc += x[(y0 + ky) * c->W + x0 + kx];
                y[oy * c->OW + ox] = acc * inv;
            }
    }
}

imgd_status cpu_avg_pool2d(cpu_backend *cb, const imgd_tensor *n) {
    const imgd_tensor *x  = n->src[0];
    int32_t            nd = n->n_dims;
    pool_ctx c  = {x->data,          n->data,  x->shape[nd - 2], x->shape[nd - 1], n->shape[nd - 2],
                   n->shape[nd - 1], n->ip[0], n->ip[1],         n->ip[2]};
    int64_t  hw = c.H * c.W;
    int64_t  planes = hw > 0 ? imgd_tensor_numel(x) / hw : 0;
    cpu_parallel(cb, (size_t)planes, (size_t)(c.OH * c.OW * c.k * c.k), avg_pool_task, &c);
    return IMGD_OK;
}
