/* safetensors reader and writer.
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data area.
 * Every tensor's span must lie inside the data area; spans are contiguous, do not
 * overlap, and cover the data area exactly. */
#include "formats/safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/json.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/weights.h"

#define MAX_EXACT_INT 9007199254740992.0 /* 2^53: larger JSON numbers are not exact */

static const struct {
    const char *name;
    imgd_dtype  dt;
} k_st_dtypes[] = {
    {"F64", IMGD_DTYPE_F64},   {"F32", IMGD_DTYPE_F32},         {"F16", IMGD_DTYPE_F16},
    {"BF16", IMGD_DTYPE_BF16}, {"I64", IMGD_DTYPE_I64},         {"I32", IMGD_DTYPE_I32},
    {"I16", IMGD_DTYPE_I16},   {"I8", IMGD_DTYPE_I8},           {"U8", IMGD_DTYPE_U8},
    {"BOOL", IMGD_DTYPE_BOOL}, {"F8_E4M3", IMGD_DTYPE_F8_E4M3}, {"F8_E5M2", IMGD_DTYPE_F8_E5M2},
    {"U16", IMGD_DTYPE_U16},   {"U32", IMGD_DTYPE_U32},         {"U64", IMGD_DTYPE_U64},
};

/* ---- reader ----------------------------------------------------------------------- */

typedef struct span {
    const cJSON *item;
    uint64_t     begin, end;
    imgd_dtype   dt;
    int32_t      n_dims;
    int64_t      shape[IMGD_MAX_DIMS];
} span;

static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d > MAX_EXACT_INT || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static imgd_status read_meta(const char *name, const cJSON *meta, imgd_weights *w) {
    if (cJSON_IsNull(meta)) return IMGD_OK;
    if (!cJSON_IsObject(meta))
        return imgd_fail(IMGD_E_FORMAT, "%s: __metadata__ must be an object of strings", name);
    imgd_strmap seen;
    imgd_strmap_init(&seen);
    imgd_status st = IMGD_OK;
    for (const cJSON *e = meta->child; e && st == IMGD_OK; e = e->next) {
        if (!cJSON_IsString(e)) {
            st = imgd_fail(IMGD_E_FORMAT,
                           "%s: __metadata__ value of '%s' is not a string (safetensors metadata "
                           "is a string-to-string map)",
                           name, e->string);
        } else if (!imgd_utf8_valid(e->string, strlen(e->string)) ||
                   !imgd_utf8_valid(e->valuestring, strlen(e->valuestring))) {
            st = imgd_fail(IMGD_E_FORMAT, "%s: __metadata__ entry is not valid UTF-8", name);
        } else if (imgd_strmap_put(&seen, e->string, 0, NULL) != IMGD_OK) {
            st = imgd_fail(IMGD_E_FORMAT, "%s: __metadata__ key '%s' appears twice", name,
                           e->string);
        } else {
            st = imgd_weights_meta_set(w, e->string, e->valuestring);
        }
    }
    imgd_strmap_free(&seen);
    return st;
}

static imgd_status parse_entry(const char *name, const cJSON *e, span *s) {
    const char *tn = e->string;
    if (!cJSON_IsObject(e))
        return imgd_fail(IMGD_E_FORMAT, "%s: header entry '%s' is not an object", name, tn);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' has no string field 'dtype'", name, tn);
    size_t i;
    for (i = 0; i < IMGD_ARRAY_LEN(k_st_dtypes); i++)
        if (strcmp(dt->valuestring, k_st_dtypes[i].name) == 0) break;
    if (i == IMGD_ARRAY_LEN(k_st_dtypes))
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: tensor '%s' has unknown dtype '%.32s' (known: F64 F32 F16 BF16 I64 "
                         "I32 I16 I8 U8 BOOL F8_E4M3 F8_E5M2)",
                         name, tn, dt->valuestring);
    s->dt = k_st_dtypes[i].dt;
    if (!cJSON_IsArray(sh))
        return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' has no array field 'shape'", name, tn);
    int n = cJSON_GetArraySize(sh);
    if (n > IMGD_MAX_DIMS)
        return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' has %d dimensions (at most %d)", name, tn,
                         n, IMGD_MAX_DIMS);
    s->n_dims = n;
    int k     = 0;
    for (const cJSON *d = sh->child; d; d = d->next, k++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: tensor '%s' shape[%d] is not a non-negative integer", name, tn,
                             k);
        s->shape[k] = (int64_t)v;
    }
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !json_uint(of->child, &s->begin) ||
        !json_uint(of->child->next, &s->end))
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: tensor '%s' needs 'data_offsets' as [begin, end] non-negative "
                         "integers",
                         name, tn);
    if (s->end < s->begin)
        return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' data_offsets end %llu < begin %llu", name,
                         tn, (unsigned long long)s->end, (unsigned long long)s->begin);
    s->item = e;
    return IMGD_OK;
}

static imgd_status check_spans(const char *name, span *sp, size_t n, uint64_t data_size) {
    qsort(sp, n, sizeof *sp, cmp_span);
    uint64_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (sp[i].end > data_size)
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: tensor '%s' span [%llu, %llu) lies past the end of the data "
                             "area (%llu bytes); the file is truncated or its header is wrong",
                             name, sp[i].item->string, (unsigned long long)sp[i].begin,
                             (unsigned long long)sp[i].end, (unsigned long long)data_size);
        if (sp[i].begin < pos)
            return imgd_fail(
                IMGD_E_FORMAT, "%s: tensor '%s' span [%llu, %llu) overlaps another tensor", name,
                sp[i].item->string, (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end);
        if (sp[i].begin > pos)
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: gap of %llu unreferenced bytes before tensor '%s' at data offset "
                             "%llu",
                             name, (unsigned long long)(sp[i].begin - pos), sp[i].item->string,
                             (unsigned long long)pos);
        pos = sp[i].end;
    }
    if (pos != data_size)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: %llu trailing bytes after the last tensor are not referenced by the "
                         "header",
                         name, (unsigned long long)(data_size - pos));
    return IMGD_OK;
}

imgd_status imgd_safetensors_read(const char *name, const uint8_t *data, uint64_t size,
                                  const imgd_open_limits *lim, imgd_weights *w) {
    if (size < 8)
        return imgd_fail(IMGD_E_FORMAT, "%s: %llu bytes is too short for a safetensors header",
                         name, (unsigned long long)size);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)data[i] << (8 * i);
    if (hlen > size - 8)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: header length %llu exceeds the file size %llu; the file is "
                         "truncated or not safetensors",
                         name, (unsigned long long)hlen, (unsigned long long)size);
    if (hlen > lim->header_size_max)
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "%s: header length %llu exceeds the cap of %llu bytes (raise "
                         "header_size_max if the file is trusted)",
                         name, (unsigned long long)hlen, (unsigned long long)lim->header_size_max);
    const char *hdr = (const char *)data + 8;
    if (hlen < 2 || hdr[0] != '{')
        return imgd_fail(IMGD_E_FORMAT, "%s: header does not start with a JSON object", name);
    if (!imgd_utf8_valid(hdr, (size_t)hlen))
        return imgd_fail(IMGD_E_FORMAT, "%s: header is not valid UTF-8 (or contains NUL)", name);
    cJSON      *root = NULL;
    span       *sp   = NULL;
    imgd_strmap seen;
    imgd_strmap_init(&seen);
    imgd_status st =
        imgd_json_parse(name, hdr, (size_t)hlen, (size_t)lim->header_size_max, 64, &root);
    if (st != IMGD_OK) goto done;
    if (!cJSON_IsObject(root)) {
        st = imgd_fail(IMGD_E_FORMAT, "%s: header is not a JSON object", name);
        goto done;
    }
    size_t n = 0;
    for (const cJSON *e = root->child; e; e = e->next) n++;
    sp = imgd_calloc(n ? n : 1, sizeof *sp);
    if (!sp) {
        st = imgd_fail(IMGD_E_NOMEM, "%s: out of memory for %zu header entries", name, n);
        goto done;
    }
    size_t nt = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!imgd_utf8_valid(e->string, strlen(e->string))) {
            st = imgd_fail(IMGD_E_FORMAT, "%s: a tensor name is not valid UTF-8", name);
            goto done;
        }
        if (imgd_strmap_put(&seen, e->string, 0, NULL) != IMGD_OK) {
            st = imgd_fail(IMGD_E_FORMAT, "%s: header key '%s' appears twice; names must be unique",
                           name, e->string);
            goto done;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            st = read_meta(name, e, w);
        } else {
            st = parse_entry(name, e, &sp[nt++]);
        }
        if (st != IMGD_OK) goto done;
    }
    uint64_t data_off  = 8 + hlen;
    uint64_t data_size = size - data_off;
    st                 = check_spans(name, sp, nt, data_size);
    if (st != IMGD_OK) goto done;
    for (size_t i = 0; i < nt; i++) {
        const char *tn = sp[i].item->string;
        st             = imgd_weights_add(w, tn, strlen(tn), sp[i].dt, sp[i].n_dims, sp[i].shape,
                                          data + data_off + sp[i].begin, sp[i].end - sp[i].begin);
        if (st != IMGD_OK) {
            st = imgd_fail_prefix(st, "%s", name);
            goto done;
        }
    }
done:
    imgd_strmap_free(&seen);
    imgd_free(sp);
    cJSON_Delete(root);
    return st;
}

/* ---- writer ----------------------------------------------------------------------- */

struct imgd_st_writer {
    FILE    *f;
    char    *path;
    uint64_t expect; /* data bytes the header declares */
    uint64_t written;
    uint64_t total;
};

static imgd_status build_header(const imgd_st_entry *e, size_t n, const char *const *mk,
                                const char *const *mv, size_t n_meta, imgd_buf *b,
                                uint64_t *data_bytes) {
    imgd_status st  = imgd_buf_puts(b, "{");
    uint64_t    off = 0;
    if (st == IMGD_OK && n_meta) {
        st = imgd_buf_puts(b, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta && st == IMGD_OK; i++) {
            if (i) st = imgd_buf_puts(b, ",");
            if (st == IMGD_OK) st = imgd_buf_json_str(b, mk[i]);
            if (st == IMGD_OK) st = imgd_buf_puts(b, ":");
            if (st == IMGD_OK) st = imgd_buf_json_str(b, mv[i]);
        }
        if (st == IMGD_OK) st = imgd_buf_puts(b, "}");
    }
    for (size_t i = 0; i < n && st == IMGD_OK; i++) {
        if (imgd_dtype_traits_of(e[i].dtype)->is_quant)
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "tensor '%s': safetensors cannot store %s; dequantize first",
                             e[i].name, imgd_dtype_name(e[i].dtype));
        uint64_t nb;
        st = imgd_dtype_nbytes(e[i].dtype, e[i].n_dims, e[i].shape, &nb);
        if (st != IMGD_OK) return imgd_fail_prefix(st, "tensor '%s'", e[i].name);
        if (i || n_meta) st = imgd_buf_puts(b, ",");
        if (st == IMGD_OK) st = imgd_buf_json_str(b, e[i].name);
        if (st == IMGD_OK)
            st = imgd_buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", imgd_dtype_name(e[i].dtype));
        for (int d = 0; d < e[i].n_dims && st == IMGD_OK; d++)
            st = imgd_buf_printf(b, d ? ",%lld" : "%lld", (long long)e[i].shape[d]);
        if (st == IMGD_OK)
            st = imgd_buf_printf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                 (unsigned long long)off + (unsigned long long)nb);
        off += nb;
    }
    if (st == IMGD_OK) st = imgd_buf_puts(b, "}");
    while (st == IMGD_OK && (b->len % 8) != 0) st = imgd_buf_puts(b, " ");
    *data_bytes = off;
    return st;
}

imgd_status imgd_st_writer_open(const char *path, const imgd_st_entry *entries, size_t n,
                                const char *const *meta_k, const char *const *meta_v, size_t n_meta,
                                imgd_st_writer **out) {
    imgd_buf b;
    imgd_buf_init(&b, 0);
    uint64_t        data_bytes = 0;
    imgd_st_writer *wr         = NULL;
    imgd_status     st         = build_header(entries, n, meta_k, meta_v, n_meta, &b, &data_bytes);
    if (st != IMGD_OK) goto fail;
    wr = imgd_calloc(1, sizeof *wr);
    if (!wr || !(wr->path = imgd_strdup(path))) {
        st = imgd_fail(IMGD_E_NOMEM, "out of memory");
        goto fail;
    }
    wr->f = fopen(path, "wb");
    if (!wr->f) {
        st = imgd_fail(IMGD_E_IO, "%s: cannot create: %s", path, strerror(errno));
        goto fail;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)b.len >> (8 * i));
    if (fwrite(len8, 1, 8, wr->f) != 8 || fwrite(b.data, 1, b.len, wr->f) != b.len) {
        st = imgd_fail(IMGD_E_IO, "%s: write failed: %s", path, strerror(errno));
        goto fail;
    }
    wr->expect = data_bytes;
    wr->total  = 8 + b.len + data_bytes;
    imgd_buf_free(&b);
    *out = wr;
    return IMGD_OK;
fail:
    imgd_buf_free(&b);
    imgd_st_writer_abort(wr);
    return st;
}

imgd_status imgd_st_writer_write(imgd_st_writer *wr, const void *data, size_t n) {
    if (n > wr->expect - wr->written)
        return imgd_fail(IMGD_E_INVALID_ARG, "%s: more tensor data than the header declares",
                         wr->path);
    if (n && fwrite(data, 1, n, wr->f) != n)
        return imgd_fail(IMGD_E_IO, "%s: write failed: %s", wr->path, strerror(errno));
    wr->written += n;
    return IMGD_OK;
}

uint64_t imgd_st_writer_total(const imgd_st_writer *wr) {
    return wr->total;
}

imgd_status imgd_st_writer_close(imgd_st_writer *wr) {
    imgd_status st = IMGD_OK;
    if (wr->written != wr->expect)
        st = imgd_fail(IMGD_E_INVALID_ARG, "%s: %llu of %llu tensor bytes written", wr->path,
                       (unsigned long long)wr->written, (unsigned long long)wr->expect);
    if (st == IMGD_OK && (fflush(wr->f) != 0 || fsync(fileno(wr->f)) != 0))
        st = imgd_fail(IMGD_E_IO, "%s: flush failed: %s", wr->path, strerror(errno));
    if (fclose(wr->f) != 0 && st == IMGD_OK)
        st = imgd_fail(IMGD_E_IO, "%s: close failed: %s", wr->path, strerror(errno));
    wr->f = NULL;
    if (st != IMGD_OK) {
        imgd_st_writer_abort(wr);
        return st;
    }
    imgd_free(wr->path);
    imgd_free(wr);
    return IMGD_OK;
}

void imgd_st_writer_abort(imgd_st_writer *wr) {
    if (!wr) return;
    /* Best effort: the file is being discarded and the caller already has an error. */
    if (wr->f) (void)fclose(wr->f);
    if (wr->path) (void)remove(wr->path);
    imgd_free(wr->path);
    imgd_free(wr);
}
