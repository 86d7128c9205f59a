/* Weight binding: canonical names to graph weights over the mapped file (see wbind.h). */
#include "models/wbind.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/arena.h"
#include "base/error.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/weights.h"

#define NAME_CAP 512

struct override {
    char       *key; /* owned */
    imgd_dtype  dtype;
    const void *data;
};

struct imgd_wbind {
    const imgd_weights    *w;
    const imgd_model_info *mi;
    imgd_keymap           *km;
    pthread_mutex_t        copy_mu; /* guards copies and copied (a binder may be shared) */
    imgd_arena             copies;  /* transposed tensors */
    imgd_strmap            copied;  /* canonical -> pointer (as size_t) into copies */
    imgd_strmap            over;    /* canonical -> index into ov (merged adapters) */
    struct override       *ov;
    size_t                 n_ov, alloc_ov;
    imgd_wbind_adapt_fn    adapt;
    void                  *adapt_user;
};

imgd_status imgd_wbind_new(const imgd_weights *w, const imgd_model_info *mi, imgd_wbind **out) {
    if (!w || !mi || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_wbind_new: NULL argument");
    *out          = NULL;
    imgd_wbind *b = imgd_calloc(1, sizeof *b);
    if (!b) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    b->w  = w;
    b->mi = mi;
    pthread_mutex_init(&b->copy_mu, NULL);
    imgd_arena_init(&b->copies, 0);
    imgd_strmap_init(&b->copied);
    imgd_strmap_init(&b->over);
    imgd_status st = imgd_keymap_build(w, mi, &b->km);
    if (st != IMGD_OK) {
        imgd_wbind_free(b);
        return st;
    }
    *out = b;
    return IMGD_OK;
}

void imgd_wbind_free(imgd_wbind *b) {
    if (!b) return;
    imgd_wbind_override_clear(b);
    imgd_free(b->ov);
    imgd_keymap_free(b->km);
    imgd_strmap_free(&b->copied);
    imgd_arena_free(&b->copies);
    pthread_mutex_destroy(&b->copy_mu);
    imgd_free(b);
}

const imgd_weights *imgd_wbind_weights(const imgd_wbind *b) {
    return b->w;
}

const imgd_model_info *imgd_wbind_info(const imgd_wbind *b) {
    return b->mi;
}

bool imgd_wbind_has(const imgd_wbind *b, const char *canonical) {
    return b && canonical && imgd_keymap_find(b->km, canonical) != NULL;
}

bool imgd_wbind_dtype(const imgd_wbind *b, const char *canonical, imgd_dtype *out) {
    const imgd_km_entry *e = b && canonical ? imgd_keymap_find(b->km, canonical) : NULL;
    if (!e || !out) return false;
    *out = b->w->t[e->src].dtype;
    return true;
}

/* Bytes of one row (all dims after the first) of t; 0 when a quantized row does not tile
 * into whole blocks. */
static size_t row_bytes_of(const imgd_wtensor *t);

bool imgd_wbind_view(const imgd_wbind *b, const char *canonical, imgd_dtype *dtype,
                     const void **data, uint64_t *nbytes) {
    const imgd_km_entry *e = b && canonical ? imgd_keymap_find(b->km, canonical) : NULL;
    if (!e || !dtype || !data || !nbytes) return false;
    const imgd_wtensor *t = &b->w->t[e->src];
    if (e->op == IMGD_KM_SAME || e->op == IMGD_KM_SQUEEZE) {
        *data   = t->data;
        *nbytes = t->nbytes;
    } else if (e->op == IMGD_KM_ROWS && row_bytes_of(t)) {
        size_t rb = row_bytes_of(t);
        *data     = t->data + (size_t)e->row_begin * rb;
        *nbytes   = (uint64_t)(e->row_end - e->row_begin) * rb;
    } else {
        return false;
    }
    *dtype = t->dtype;
    return true;
}

/* Canonical shape of an entry. */
static int32_t entry_shape(const imgd_wbind *b, const imgd_km_entry *e, int64_t *shape) {
    const imgd_wtensor *t = &b->w->t[e->src];
    int32_t             n = t->n_dims;
    for (int32_t i = 0; i < IMGD_MAX_DIMS; i++) shape[i] = i < n ? t->shape[i] : 1;
    switch (e->op) {
    case IMGD_KM_SQUEEZE:
        while (n > 2 && shape[n - 1] == 1) n--;
        break;
    case IMGD_KM_ROWS: shape[0] = e->row_end - e->row_begin; break;
    case IMGD_KM_TRANSPOSE:
        if (n == 2) {
            int64_t s = shape[0];
            shape[0]  = shape[1];
            shape[1]  = s;
        }
        break;
    default: break;
    }
    return n;
}

int32_t imgd_wbind_shape(const imgd_wbind *b, const char *canonical, int64_t *shape) {
    const imgd_km_entry *e = b && canonical ? imgd_keymap_find(b->km, canonical) : NULL;
    if (!e) return -1;
    return entry_shape(b, e, shape);
}

static void shape_str(int32_t n, const int64_t *s, char *out, size_t cap) {
    size_t k = 0;
    out[0]   = '\0';
    for (int32_t i = 0; i < n && k + 24 < cap; i++) {
        int m = snprintf(out + k, cap - k, "%s%lld", i ? ", " : "[", (long long)s[i]);
        if (m < 0) break;
        k += (size_t)m;
    }
    (void)imgd_fmt(out + k, cap - k, n ? "]" : "[]");
}

/* Bytes of one row (all dims after the first) of t; 0 when a quantized row does not tile
 * into whole blocks. */
static size_t row_bytes_of(const imgd_wtensor *t) {
    const imgd_dtype_traits *tr  = imgd_dtype_traits_of(t->dtype);
    uint64_t                 row = 1;
    for (int32_t i = 1; i < t->n_dims; i++) row *= (uint64_t)t->shape[i];
    if (row % tr->block_elems != 0) return 0;
    return (size_t)(row / tr->block_elems) * tr->block_bytes;
}

/* Copies (once) the canonical layout of a transposed or half-swapped entry into the
 * binder's arena; NULL when impossible or out of memory. */
static const void *entry_copy(imgd_wbind *b, const char *canonical, const imgd_km_entry *e,
                              const int64_t *cshape, int32_t cn) {
    const imgd_wtensor      *t    = &b->w->t[e->src];
    const imgd_dtype_traits *tr   = imgd_dtype_traits_of(t->dtype);
    size_t                   prev = 0;
    if (imgd_strmap_get(&b->copied, canonical, &prev)) return (const void *)prev;
    uint8_t *d = NULL;
    if (e->op == IMGD_KM_SWAP_HALVES) {
        size_t rb = row_bytes_of(t), half = (size_t)(t->shape[0] / 2) * rb;
        if (rb == 0 || t->shape[0] % 2 != 0) return NULL;
        d = imgd_arena_alloc(&b->copies, 2 * half);
        if (!d) return NULL;
        memcpy(d, t->data + half, half);
        memcpy(d + half, t->data, half);
    } else { /* transpose */
        if (tr->is_quant || cn != 2) return NULL;
        size_t  es = tr->block_bytes;
        int64_t r = cshape[0], c = cshape[1]; /* canonical [r, c] = source [c, r] */
        d = imgd_arena_alloc(&b->copies, (size_t)(r * c) * es);
        if (!d) return NULL;
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++)
                memcpy(d + (size_t)(i * c + j) * es, t->data + (size_t)(j * r + i) * es, es);
    }
    char *key = imgd_arena_strndup(&b->copies, canonical, strlen(canonical));
    if (!key || imgd_strmap_put(&b->copied, key, (size_t)d, NULL) != IMGD_OK) return NULL;
    return d;
}

/* Data for the entry in its canonical layout (a view into the file, or a copy). Row ranges
 * of quantized tensors are views too when a row is whole blocks. */
static const void *entry_data(imgd_wbind *b, const char *canonical, const imgd_km_entry *e,
                              const int64_t *cshape, int32_t cn) {
    const imgd_wtensor *t = &b->w->t[e->src];
    if (e->op == IMGD_KM_SAME || e->op == IMGD_KM_SQUEEZE) return t->data;
    if (e->op == IMGD_KM_ROWS) {
        size_t rb = row_bytes_of(t);
        return rb ? t->data + (size_t)e->row_begin * rb : NULL;
    }
    return entry_copy(b, canonical, e, cshape, cn);
}

static bool is_f8(imgd_dtype dt) {
    return dt == IMGD_DTYPE_F8_E4M3 || dt == IMGD_DTYPE_F8_E5M2;
}

/* fp8 weights (e4m3 / e5m2 safetensors) upcast once to f16, which holds every fp8 value
 * exactly (3 or 2 mantissa bits, exponents inside f16's range); kept in the binder's arena
 * under "f16:" + the canonical name. src is the fp8 data in canonical layout. */
static const void *f8_upcast(imgd_wbind *b, const char *canonical, imgd_dtype dt, const void *src,
                             const int64_t *cshape, int32_t cn) {
    char key[NAME_CAP + 8];
    if (!src || !imgd_fmt(key, sizeof key, "f16:%s", canonical)) return NULL;
    size_t prev = 0;
    if (imgd_strmap_get(&b->copied, key, &prev)) return (const void *)prev;
    uint64_t n = 1;
    for (int32_t i = 0; i < cn; i++) n *= (uint64_t)cshape[i];
    uint16_t *d = imgd_arena_alloc(&b->copies, (size_t)n * sizeof *d);
    if (!d) return NULL;
    const uint8_t *p = src;
    for (uint64_t i = 0; i < n; i++)
        d[i] = imgd_f32_to_f16(dt == IMGD_DTYPE_F8_E4M3 ? imgd_f8e4m3_to_f32(p[i])
                                                        : imgd_f8e5m2_to_f32(p[i]));
    char *k = imgd_arena_strndup(&b->copies, key, strlen(key));
    if (!k || imgd_strmap_put(&b->copied, k, (size_t)d, NULL) != IMGD_OK) return NULL;
    return d;
}

static imgd_tensor *bind(imgd_wbind *b, imgd_graph *g, const char *canonical, int32_t n_dims,
                         const int64_t *shape, bool optional) {
    if (!g || imgd_graph_status(g) != IMGD_OK) return NULL;
    if (!b) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "weight '%s': no weights bound", canonical);
        return NULL;
    }
    const imgd_km_entry *e = imgd_keymap_find(b->km, canonical);
    if (!e) {
        if (!optional)
            (void)imgd_graph_fail(g, IMGD_E_FORMAT,
                                  "%s: tensor '%s' is missing (the model's detected layout has "
                                  "no tensor for it; the file may be incomplete or another "
                                  "architecture)",
                                  b->w->path, canonical);
        return NULL;
    }
    int64_t cs[IMGD_MAX_DIMS];
    int32_t cn = entry_shape(b, e, cs);
    if (n_dims > 0) {
        bool ok = n_dims == cn;
        for (int32_t i = 0; ok && i < n_dims; i++) ok = shape[i] < 0 || shape[i] == cs[i];
        if (!ok) {
            char want[160], got[160];
            shape_str(n_dims, shape, want, sizeof want);
            shape_str(cn, cs, got, sizeof got);
            (void)imgd_graph_fail(g, IMGD_E_FORMAT,
                                  "%s: tensor '%s' (stored as '%s') has shape %s but the "
                                  "network built from the detected config expects %s",
                                  b->w->path, canonical, b->w->t[e->src].name, got, want);
            return NULL;
        }
    }
    size_t oi = 0;
    if (b->n_ov && imgd_strmap_get(&b->over, canonical, &oi))
        return imgd_graph_weight(g, canonical, b->ov[oi].dtype, cn, cs, b->ov[oi].data);
    imgd_dtype dt = b->w->t[e->src].dtype;
    pthread_mutex_lock(&b->copy_mu);
    const void *data = entry_data(b, canonical, e, cs, cn);
    if (is_f8(dt)) {
        data = f8_upcast(b, canonical, dt, data, cs, cn);
        dt   = IMGD_DTYPE_F16;
    }
    pthread_mutex_unlock(&b->copy_mu);
    if (!data) {
        (void)imgd_graph_fail(
            g, IMGD_E_UNSUPPORTED, "%s: tensor '%s' (stored as '%s', %s) cannot be bound: %s",
            b->w->path, canonical, b->w->t[e->src].name, imgd_dtype_name(b->w->t[e->src].dtype),
            imgd_dtype_traits_of(b->w->t[e->src].dtype)->is_quant
                ? "a transposed quantized tensor, or fused rows that split quantized blocks"
                : "out of memory");
        return NULL;
    }
    return imgd_graph_weight(g, canonical, dt, cn, cs, data);
}

imgd_tensor *imgd_wbind_get(imgd_wbind *b, imgd_graph *g, const char *canonical, int32_t n_dims,
                            const int64_t *shape) {
    return bind(b, g, canonical, n_dims, shape, false);
}

static imgd_tensor *vbind(imgd_wbind *b, imgd_graph *g, int32_t n_dims, const int64_t *shape,
                          bool optional, const char *fmt, va_list ap) IMGD_PRINTF(6, 0);

static imgd_tensor *vbind(imgd_wbind *b, imgd_graph *g, int32_t n_dims, const int64_t *shape,
                          bool optional, const char *fmt, va_list ap) {
    char name[NAME_CAP];
    int  n = vsnprintf(name, sizeof name, fmt, ap);
    if (n < 0 || (size_t)n >= sizeof name) {
        if (g) (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "weight name too long: %.64s...", name);
        return NULL;
    }
    return bind(b, g, name, n_dims, shape, optional);
}

imgd_tensor *imgd_wbind_getf(imgd_wbind *b, imgd_graph *g, int32_t n_dims, const int64_t *shape,
                             const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    imgd_tensor *t = vbind(b, g, n_dims, shape, false, fmt, ap);
    va_end(ap);
    return t;
}

imgd_tensor *imgd_wbind_optf(imgd_wbind *b, imgd_graph *g, int32_t n_dims, const int64_t *shape,
                             const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    imgd_tensor *t = vbind(b, g, n_dims, shape, true, fmt, ap);
    va_end(ap);
    return t;
}

imgd_status imgd_wbind_read_f32(const imgd_wbind *b, const char *canonical, float *dst, size_t n) {
    const imgd_km_entry *e = b && canonical ? imgd_keymap_find(b->km, canonical) : NULL;
    if (!e)
        return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' is missing", b ? b->w->path : "?",
                         canonical ? canonical : "?");
    const imgd_wtensor *t = &b->w->t[e->src];
    if (imgd_dtype_traits_of(t->dtype)->is_quant || e->op == IMGD_KM_TRANSPOSE ||
        e->op == IMGD_KM_SWAP_HALVES)
        return imgd_fail(IMGD_E_UNSUPPORTED, "%s: tensor '%s': %s cannot be read on the host",
                         b->w->path, canonical, imgd_dtype_name(t->dtype));
    int64_t  cs[IMGD_MAX_DIMS];
    int32_t  cn    = entry_shape(b, e, cs);
    uint64_t numel = 1;
    for (int32_t i = 0; i < cn; i++) numel *= (uint64_t)cs[i];
    if (numel != n)
        return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' has %llu elements, expected %zu",
                         b->w->path, canonical, (unsigned long long)numel, n);
    size_t      es  = imgd_dtype_traits_of(t->dtype)->block_bytes;
    const void *src = t->data;
    if (e->op == IMGD_KM_ROWS) {
        uint64_t row = 1;
        for (int32_t i = 1; i < t->n_dims; i++) row *= (uint64_t)t->shape[i];
        src = t->data + (uint64_t)e->row_begin * row * es;
    }
    return imgd_dtype_to_f32(t->dtype, src, n, dst);
}

/* ---- host-side reads and binder-owned constants ------------------------------------------ */

imgd_status imgd_wbind_gather_rows_f32(const imgd_wbind *b, const char *canonical,
                                       const int32_t *ids, size_t n, float *out) {
    if (!b || !canonical || (n && (!ids || !out)))
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_wbind_gather_rows_f32: NULL argument");
    const imgd_km_entry *e = imgd_keymap_find(b->km, canonical);
    if (!e) return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' is missing", b->w->path, canonical);
    const imgd_wtensor      *t  = &b->w->t[e->src];
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(t->dtype);
    int64_t                  cs[IMGD_MAX_DIMS];
    int32_t                  cn = entry_shape(b, e, cs);
    if (cn != 2 || t->n_dims != 2)
        return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' (stored as '%s') is not a 2-D table",
                         b->w->path, canonical, t->name);
    int64_t rows = cs[0], width = cs[1];
    if (e->op == IMGD_KM_TRANSPOSE || e->op == IMGD_KM_SWAP_HALVES ||
        (tr->is_quant && width % tr->block_elems != 0))
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: tensor '%s' (%s): rows of a transposed or block-misaligned table "
                         "cannot be gathered",
                         b->w->path, canonical, imgd_dtype_name(t->dtype));
    size_t         row_bytes = (size_t)(width / tr->block_elems) * tr->block_bytes;
    const uint8_t *base      = t->data;
    if (e->op == IMGD_KM_ROWS) base += (size_t)e->row_begin * row_bytes;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= rows)
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "%s: row id %d at index %zu is outside '%s' (%lld rows)", b->w->path,
                             ids[i], i, canonical, (long long)rows);
        imgd_status st = imgd_dtype_to_f32(t->dtype, base + (size_t)ids[i] * row_bytes,
                                           (uint64_t)width, out + i * (size_t)width);
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

/* A binder-owned constant: element count, then the values. */
typedef struct const_blob {
    size_t n;
    float  v[];
} const_blob;

/* The binder's copy of constant `key` (mkey: its map key), made from data on first use;
 * NULL with a sticky error on g. Called with copy_mu held. */
static const const_blob *const_blob_get(imgd_wbind *b, imgd_graph *g, const char *key,
                                        const char *mkey, size_t n, const float *data) {
    size_t            prev = 0;
    const const_blob *blob = NULL;
    if (imgd_strmap_get(&b->copied, mkey, &prev)) {
        blob = (const const_blob *)prev;
        if (blob->n != n) {
            (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                                  "constant '%s' exists with %zu elements, asked for %zu", key,
                                  blob->n, n);
            return NULL;
        }
    } else {
        size_t bytes = 0;
        if (!data) {
            (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "constant '%s': no data", key);
            return NULL;
        }
        const_blob *nb   = NULL;
        char       *kcpy = NULL;
        if (imgd_size_mul(n, sizeof(float), &bytes) &&
            imgd_size_add(bytes, sizeof(const_blob), &bytes))
            nb = imgd_arena_alloc(&b->copies, bytes);
        if (nb) kcpy = imgd_arena_strndup(&b->copies, mkey, strlen(mkey));
        if (!nb || !kcpy || imgd_strmap_put(&b->copied, kcpy, (size_t)nb, NULL) != IMGD_OK) {
            (void)imgd_graph_fail(g, IMGD_E_NOMEM, "constant '%s': out of memory", key);
            return NULL;
        }
        nb->n = n;
        if (n) memcpy(nb->v, data, n * sizeof(float));
        blob = nb;
    }
    return blob;
}

imgd_tensor *imgd_wbind_const_f32(imgd_wbind *b, imgd_graph *g, const char *key, int32_t n_dims,
                                  const int64_t *shape, const float *data) {
    if (!g || imgd_graph_status(g) != IMGD_OK) return NULL;
    if (!b || !key || (n_dims > 0 && !shape) || n_dims < 0 || n_dims > IMGD_MAX_DIMS) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_wbind_const_f32: bad argument");
        return NULL;
    }
    char mkey[NAME_CAP];
    if (!imgd_fmt(mkey, sizeof mkey, "const:%s", key)) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "constant name too long: %.64s...", key);
        return NULL;
    }
    size_t n = 1;
    for (int32_t i = 0; i < n_dims; i++)
        if (shape[i] < 0 || !imgd_size_mul(n, (size_t)shape[i], &n)) {
            (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "constant '%s': bad shape", key);
            return NULL;
        }
    pthread_mutex_lock(&b->copy_mu);
    const const_blob *blob = const_blob_get(b, g, key, mkey, n, data);
    pthread_mutex_unlock(&b->copy_mu);
    if (!blob) return NULL;
    return imgd_graph_weight(g, key, IMGD_DTYPE_F32, n_dims, shape, blob->v);
}

/* ---- adapters ------------------------------------------------------------------------------ */

imgd_status imgd_wbind_override(imgd_wbind *b, const char *canonical, imgd_dtype dtype,
                                const void *data) {
    if (!b || !canonical || !data)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_wbind_override: NULL argument");
    if (!imgd_keymap_find(b->km, canonical))
        return imgd_fail(IMGD_E_FORMAT, "%s: no tensor '%s' to override", b->w->path, canonical);
    size_t prev = 0;
    if (imgd_strmap_get(&b->over, canonical, &prev))
        return imgd_fail(IMGD_E_INVALID_ARG, "'%s' is already overridden", canonical);
    if (b->n_ov == b->alloc_ov) {
        size_t           na = b->alloc_ov ? 2 * b->alloc_ov : 64, bytes = 0;
        struct override *nv = NULL;
        if (imgd_size_mul(na, sizeof *nv, &bytes)) nv = imgd_realloc(b->ov, bytes);
        if (!nv) return imgd_fail(IMGD_E_NOMEM, "out of memory");
        b->ov       = nv;
        b->alloc_ov = na;
    }
    char *key = imgd_strdup(canonical);
    if (!key) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (imgd_strmap_put(&b->over, key, b->n_ov, NULL) != IMGD_OK) {
        imgd_free(key);
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    b->ov[b->n_ov++] = (struct override){key, dtype, data};
    return IMGD_OK;
}

void imgd_wbind_override_clear(imgd_wbind *b) {
    if (!b) return;
    imgd_strmap_free(&b->over);
    imgd_strmap_init(&b->over);
    for (size_t i = 0; i < b->n_ov; i++) imgd_free(b->ov[i].key);
    b->n_ov = 0;
}

size_t imgd_wbind_override_count(const imgd_wbind *b) {
    return b ? b->n_ov : 0;
}

const char *imgd_wbind_name_at(const imgd_wbind *b, size_t i) {
    return b && i < b->km->n ? b->km->e[i].canonical : NULL;
}

void imgd_wbind_set_adapter(imgd_wbind *b, imgd_wbind_adapt_fn fn, void *user) {
    if (!b) return;
    b->adapt      = fn;
    b->adapt_user = fn ? user : NULL;
}

imgd_tensor *imgd_wbind_adapt(imgd_wbind *b, imgd_graph *g, imgd_wbind_site site, int32_t stride,
                              int32_t pad, imgd_tensor *x, imgd_tensor *y, const char *fmt, ...) {
    if (!b || !b->adapt || !x || !y) return y;
    char    name[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof name) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "adapter: weight name too long");
        return NULL;
    }
    return b->adapt(b->adapt_user, g, name, site, stride, pad, x, y);
}
