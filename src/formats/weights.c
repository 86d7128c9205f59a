#include "formats/weights.h"

#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "formats/dtype.h"

/* ---- limits ----------------------------------------------------------------------- */

imgd_open_params imgd_open_params_default(void) {
    imgd_open_params p = {0};
    return p;
}

void imgd_open_limits_from(const imgd_open_params *p, imgd_open_limits *out) {
    out->header_size_max  = (p && p->header_size_max) ? p->header_size_max : 100u << 20;
    out->pickle_ops_max   = (p && p->pickle_ops_max) ? p->pickle_ops_max : 50000000u;
    out->inflate_size_max = (p && p->inflate_size_max) ? p->inflate_size_max : 64ull << 30;
    out->variant          = p ? p->variant : NULL;
}

static const char *const k_format_names[] = {"unknown", "safetensors", "ckpt", "gguf", "diffusers"};
_Static_assert(IMGD_ARRAY_LEN(k_format_names) == IMGD_FORMAT_COUNT, "format names");

const char *imgd_format_name(imgd_format f) {
    if ((unsigned)f >= IMGD_FORMAT_COUNT) return "unknown";
    return k_format_names[f];
}

/* ---- container -------------------------------------------------------------------- */

imgd_status imgd_weights_new(imgd_format fmt, const char *path, imgd_weights **out) {
    imgd_weights *w = imgd_calloc(1, sizeof *w);
    if (!w) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    w->format = fmt;
    w->path   = imgd_strdup(path ? path : "");
    if (!w->path) {
        imgd_free(w);
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    imgd_arena_init(&w->arena, 0);
    imgd_strmap_init(&w->index);
    *out = w;
    return IMGD_OK;
}

void imgd_weights_free(imgd_weights *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_maps; i++) imgd_map_free(w->maps[i]);
    for (size_t i = 0; i < w->n_bufs; i++) imgd_free(w->bufs[i]);
    imgd_free(w->maps);
    imgd_free(w->bufs);
    imgd_free(w->t);
    imgd_free(w->meta_k);
    imgd_free(w->meta_v);
    imgd_strmap_free(&w->index);
    imgd_arena_free(&w->arena);
    imgd_free(w->path);
    imgd_free(w);
}

static bool grow(void **p, size_t *alloc, size_t need, size_t elem) {
    if (need <= *alloc) return true;
    size_t na = *alloc ? *alloc * 2 : 16;
    while (na < need) na *= 2;
    size_t bytes;
    if (!imgd_size_mul(na, elem, &bytes)) return false;
    void *np = imgd_realloc(*p, bytes);
    if (!np) return false;
    *p     = np;
    *alloc = na;
    return true;
}

imgd_status imgd_weights_add(imgd_weights *w, const char *name, size_t name_len, imgd_dtype dt,
                             int32_t n_dims, const int64_t *shape, const void *data,
                             uint64_t nbytes) {
    if (name_len == 0) return imgd_fail(IMGD_E_FORMAT, "a tensor has an empty name");
    if (!imgd_utf8_valid(name, name_len))
        return imgd_fail(IMGD_E_FORMAT, "a tensor name is not valid UTF-8 (or contains NUL)");
    if ((unsigned)dt >= IMGD_DTYPE_COUNT)
        return imgd_fail(IMGD_E_FORMAT, "tensor '%.*s' has an unknown dtype %d", (int)name_len,
                         name, (int)dt);
    if (n_dims < 0 || n_dims > IMGD_MAX_DIMS)
        return imgd_fail(IMGD_E_FORMAT, "tensor '%.*s' has %d dimensions (at most %d supported)",
                         (int)name_len, name, (int)n_dims, IMGD_MAX_DIMS);
    uint64_t    expect;
    imgd_status st = imgd_dtype_nbytes(dt, n_dims, shape, &expect);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "tensor '%.*s'", (int)name_len, name);
    if (expect != nbytes)
        return imgd_fail(IMGD_E_FORMAT,
                         "tensor '%.*s': shape × %s size is %llu bytes but its span is %llu bytes",
                         (int)name_len, name, imgd_dtype_name(dt), (unsigned long long)expect,
                         (unsigned long long)nbytes);
    if (!grow((void **)&w->t, &w->alloc, w->n + 1, sizeof *w->t))
        return imgd_fail(IMGD_E_NOMEM, "out of memory adding tensor %zu", w->n);
    char *nm = imgd_arena_strndup(&w->arena, name, name_len);
    if (!nm) return imgd_fail(IMGD_E_NOMEM, "out of memory adding tensor %zu", w->n);
    st = imgd_strmap_put(&w->index, nm, w->n, NULL);
    if (st == IMGD_E_INVALID_ARG)
        return imgd_fail(IMGD_E_FORMAT, "tensor name '%s' appears twice; names must be unique", nm);
    if (st != IMGD_OK) return st;
    imgd_wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name   = nm;
    t->data   = data;
    t->nbytes = nbytes;
    t->dtype  = dt;
    t->n_dims = n_dims;
    for (int i = 0; i < IMGD_MAX_DIMS; i++) t->shape[i] = i < n_dims ? shape[i] : 1;
    return IMGD_OK;
}

imgd_status imgd_weights_meta_set(imgd_weights *w, const char *key, const char *value) {
    char *v = imgd_arena_strndup(&w->arena, value, strlen(value));
    if (!v) return imgd_fail(IMGD_E_NOMEM, "out of memory adding metadata");
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_k[i], key) == 0) {
            w->meta_v[i] = v;
            return IMGD_OK;
        }
    }
    size_t ak = w->alloc_meta;
    if (!grow((void **)&w->meta_k, &ak, w->n_meta + 1, sizeof *w->meta_k) ||
        !grow((void **)&w->meta_v, &w->alloc_meta, w->n_meta + 1, sizeof *w->meta_v))
        return imgd_fail(IMGD_E_NOMEM, "out of memory adding metadata");
    char *k = imgd_arena_strndup(&w->arena, key, strlen(key));
    if (!k) return imgd_fail(IMGD_E_NOMEM, "out of memory adding metadata");
    w->meta_k[w->n_meta] = k;
    w->meta_v[w->n_meta] = v;
    w->n_meta++;
    return IMGD_OK;
}

imgd_status imgd_weights_own_map(imgd_weights *w, imgd_map *m) {
    if (!grow((void **)&w->maps, &w->alloc_maps, w->n_maps + 1, sizeof *w->maps)) {
        imgd_map_free(m);
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    w->maps[w->n_maps++] = m;
    return IMGD_OK;
}

imgd_status imgd_weights_own_buf(imgd_weights *w, void *buf) {
    if (!grow((void **)&w->bufs, &w->alloc_bufs, w->n_bufs + 1, sizeof *w->bufs)) {
        imgd_free(buf);
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    w->bufs[w->n_bufs++] = buf;
    return IMGD_OK;
}

imgd_status imgd_weights_absorb(imgd_weights *dst, imgd_weights *src, const char *prefix) {
    imgd_status st      = IMGD_OK;
    size_t      plen    = strlen(prefix);
    char       *scratch = NULL;
    size_t      scap    = 0;
    /* Ownership first, so nothing leaks whatever fails below. */
    for (size_t i = 0; i < src->n_maps && st == IMGD_OK; i++) {
        st           = imgd_weights_own_map(dst, src->maps[i]);
        src->maps[i] = NULL;
    }
    src->n_maps = 0;
    for (size_t i = 0; i < src->n_bufs && st == IMGD_OK; i++) {
        st           = imgd_weights_own_buf(dst, src->bufs[i]);
        src->bufs[i] = NULL;
    }
    src->n_bufs = 0;
    for (size_t i = 0; i < src->n && st == IMGD_OK; i++) {
        const imgd_wtensor *t   = &src->t[i];
        size_t              len = strlen(t->name);
        if (plen + len + 1 > scap) {
            scap     = plen + len + 1;
            char *ns = imgd_realloc(scratch, scap);
            if (!ns) {
                st = imgd_fail(IMGD_E_NOMEM, "out of memory");
                break;
            }
            scratch = ns;
        }
        memcpy(scratch, prefix, plen);
        memcpy(scratch + plen, t->name, len + 1);
        st = imgd_weights_add(dst, scratch, plen + len, t->dtype, t->n_dims, t->shape, t->data,
                              t->nbytes);
    }
    for (size_t i = 0; i < src->n_meta && st == IMGD_OK; i++) {
        size_t len = strlen(src->meta_k[i]);
        if (plen + len + 1 > scap) {
            scap     = plen + len + 1;
            char *ns = imgd_realloc(scratch, scap);
            if (!ns) {
                st = imgd_fail(IMGD_E_NOMEM, "out of memory");
                break;
            }
            scratch = ns;
        }
        memcpy(scratch, prefix, plen);
        memcpy(scratch + plen, src->meta_k[i], len + 1);
        st = imgd_weights_meta_set(dst, scratch, src->meta_v[i]);
    }
    dst->file_bytes += src->file_bytes;
    imgd_free(scratch);
    imgd_weights_free(src);
    return st;
}

/* ---- opening ---------------------------------------------------------------------- */

static imgd_status sniff(const char *path, const uint8_t *d, uint64_t n, imgd_format *out) {
    if (n >= 4 && memcmp(d, "GGUF", 4) == 0)
        *out = IMGD_FORMAT_GGUF;
    else if (n >= 4 && memcmp(d, "PK\x03\x04", 4) == 0)
        *out = IMGD_FORMAT_CKPT;
    else if (n >= 4 && memcmp(d, "PK\x05\x06", 4) == 0)
        *out = IMGD_FORMAT_CKPT; /* empty zip */
    else if (n >= 9 && d[8] == '{')
        *out = IMGD_FORMAT_SAFETENSORS;
    else if (n >= 2 && d[0] == 0x80 && d[1] <= 5)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: a legacy (pre-1.6, non-zip) PyTorch file; re-save it with "
                         "torch.save in a current PyTorch or convert it to .safetensors",
                         path);
    else if (n == 0)
        return imgd_fail(IMGD_E_FORMAT, "%s: the file is empty", path);
    else
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: not a recognised weight file (expected safetensors, a PyTorch zip "
                         "checkpoint, GGUF, or a diffusers folder)",
                         path);
    return IMGD_OK;
}

imgd_status imgd_weights_read_file(const char *path, const imgd_open_limits *lim,
                                   imgd_format *fmt_out, imgd_weights **out) {
    imgd_map   *m  = NULL;
    imgd_status st = imgd_map_open(path, &m);
    if (st != IMGD_OK) return st;
    imgd_format fmt = IMGD_FORMAT_SAFETENSORS;
    st              = sniff(path, m->data, m->size, &fmt);
    if (st != IMGD_OK) {
        imgd_map_free(m);
        return st;
    }
    imgd_weights *w = NULL;
    st              = imgd_weights_new(fmt, path, &w);
    if (st != IMGD_OK || !w) {
        imgd_map_free(m);
        return st != IMGD_OK ? st : imgd_fail(IMGD_E_INTERNAL, "%s: no weights container", path);
    }
    w->file_bytes    = m->size;
    const uint8_t *d = m->data;
    uint64_t       n = m->size;
    st               = imgd_weights_own_map(w, m);
    if (st == IMGD_OK) {
        switch (fmt) {
        case IMGD_FORMAT_SAFETENSORS: st = imgd_safetensors_read(path, d, n, lim, w); break;
        case IMGD_FORMAT_CKPT: st = imgd_ckpt_read(path, d, n, lim, w); break;
        case IMGD_FORMAT_GGUF: st = imgd_gguf_read(path, d, n, lim, w); break;
        default: st = imgd_fail(IMGD_E_INTERNAL, "%s: unexpected format", path); break;
        }
    }
    if (st != IMGD_OK) {
        imgd_weights_free(w);
        return st;
    }
    if (fmt_out) *fmt_out = fmt;
    *out = w;
    return IMGD_OK;
}

imgd_status imgd_weights_open(const char *path, const imgd_open_params *params,
                              imgd_weights **out) {
    if (!path || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_weights_open: path and out are required");
    imgd_open_limits lim;
    imgd_open_limits_from(params, &lim);
    if (imgd_path_is_dir(path)) {
        imgd_weights *w  = NULL;
        imgd_status   st = imgd_weights_new(IMGD_FORMAT_DIFFUSERS, path, &w);
        if (st != IMGD_OK) return st;
        st = imgd_diffusers_read(path, &lim, w);
        if (st != IMGD_OK) {
            imgd_weights_free(w);
            return st;
        }
        *out = w;
        return IMGD_OK;
    }
    return imgd_weights_read_file(path, &lim, NULL, out);
}

/* ---- public getters --------------------------------------------------------------- */

imgd_format imgd_weights_format(const imgd_weights *w) {
    return w->format;
}

size_t imgd_weights_tensor_count(const imgd_weights *w) {
    return w->n;
}

static void fill_info(const imgd_wtensor *t, imgd_tensor_info *out) {
    out->name   = t->name;
    out->data   = t->data;
    out->nbytes = t->nbytes;
    out->dtype  = t->dtype;
    out->n_dims = t->n_dims;
    memcpy(out->shape, t->shape, sizeof out->shape);
}

imgd_status imgd_weights_tensor(const imgd_weights *w, size_t i, imgd_tensor_info *out) {
    if (!w || !out || i >= w->n)
        return imgd_fail(IMGD_E_INVALID_ARG, "tensor index %zu out of range (count %zu)", i,
                         w ? w->n : 0);
    fill_info(&w->t[i], out);
    return IMGD_OK;
}

imgd_status imgd_weights_find(const imgd_weights *w, const char *name, imgd_tensor_info *out) {
    size_t i;
    if (!w || !name || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_weights_find: NULL argument");
    if (!imgd_strmap_get(&w->index, name, &i))
        return imgd_fail(IMGD_E_INVALID_ARG, "%s: no tensor named '%s'", w->path, name);
    fill_info(&w->t[i], out);
    return IMGD_OK;
}

size_t imgd_weights_meta_count(const imgd_weights *w) {
    return w->n_meta;
}

imgd_status imgd_weights_meta(const imgd_weights *w, size_t i, const char **key,
                              const char **value) {
    if (!w || i >= w->n_meta)
        return imgd_fail(IMGD_E_INVALID_ARG, "metadata index %zu out of range", i);
    if (key) *key = w->meta_k[i];
    if (value) *value = w->meta_v[i];
    return IMGD_OK;
}

const char *imgd_weights_meta_find(const imgd_weights *w, const char *key) {
    for (size_t i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_k[i], key) == 0) return w->meta_v[i];
    return NULL;
}
