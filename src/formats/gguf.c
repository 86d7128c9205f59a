/* GGUF reader (versions 2 and 3; version 1 is refused).
 *
 * Layout, all little-endian:
 *   "GGUF"  u32 version  u64 tensor_count  u64 kv_count
 *   kv_count × { string key, u32 value_type, value }
 *   tensor_count × { string name, u32 n_dims, u64 ne[n_dims] (ne[0] innermost),
 *                    u32 ggml_type, u64 offset (relative to the data section) }
 *   zero padding up to a multiple of general.alignment (u32, default 32)
 *   data section
 * A string is a u64 byte length followed by that many bytes (no NUL). An array value is
 * u32 element_type, u64 count, then the elements.
 *
 * Nothing read from the file is trusted before it is checked: every length against the
 * bytes that remain and against header_size_max (which caps everything before the data
 * section), every count against the least space its items could take before anything
 * is allocated, keys and names for UTF-8 and uniqueness, each tensor's dims, type,
 * alignment and span, and spans against each other. Metadata is kept as text (see
 * append_value); tensors are zero-copy views into `data`. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/weights.h"

#define GGUF_ALIGNMENT_DEFAULT 32u
#define ARRAY_TEXT_MAX         64 /* longer arrays become "[array of N <type>]" in metadata */
#define ARRAY_DEPTH_MAX        8  /* arrays nested deeper than this are refused */
#define NAME_SHOW              96 /* at most this many bytes of a name are quoted in messages */
#define KV_SIZE_MIN            13 /* key length u64 + value type u32 + a 1-byte value */
#define TENSOR_SIZE_MIN        24 /* name length u64 + n_dims u32 + type u32 + offset u64 */

/* ---- tables ------------------------------------------------------------------------ */

typedef enum gguf_vtype {
    GGUF_UINT8   = 0,
    GGUF_INT8    = 1,
    GGUF_UINT16  = 2,
    GGUF_INT16   = 3,
    GGUF_UINT32  = 4,
    GGUF_INT32   = 5,
    GGUF_FLOAT32 = 6,
    GGUF_BOOL    = 7,
    GGUF_STRING  = 8,
    GGUF_ARRAY   = 9,
    GGUF_UINT64  = 10,
    GGUF_INT64   = 11,
    GGUF_FLOAT64 = 12,
    GGUF_VTYPE_COUNT
} gguf_vtype;

/* size: bytes of a fixed-size value, 0 for variable-size ones; size_min: the least bytes
 * one value can take (used to refuse counts that cannot fit). */
static const struct {
    const char *name;
    uint32_t    size, size_min;
} k_vtypes[] = {
    [GGUF_UINT8] = {"uint8", 1, 1},     [GGUF_INT8] = {"int8", 1, 1},
    [GGUF_UINT16] = {"uint16", 2, 2},   [GGUF_INT16] = {"int16", 2, 2},
    [GGUF_UINT32] = {"uint32", 4, 4},   [GGUF_INT32] = {"int32", 4, 4},
    [GGUF_FLOAT32] = {"float32", 4, 4}, [GGUF_BOOL] = {"bool", 1, 1},
    [GGUF_STRING] = {"string", 0, 8},   [GGUF_ARRAY] = {"array", 0, 12},
    [GGUF_UINT64] = {"uint64", 8, 8},   [GGUF_INT64] = {"int64", 8, 8},
    [GGUF_FLOAT64] = {"float64", 8, 8},
};
_Static_assert(IMGD_ARRAY_LEN(k_vtypes) == GGUF_VTYPE_COUNT, "gguf value type table");

#define NO_DTYPE (-1)

/* ggml_type ids as GGUF stores them (ggml.h; append-only there too). dt is the imgd
 * dtype, or NO_DTYPE for a type that exists (or existed) in ggml but is not readable
 * here; ids past the end of the table are unknown. */
static const struct {
    const char *name;
    int         dt;
} k_ggml_types[] = {
    {"F32", IMGD_DTYPE_F32},   {"F16", IMGD_DTYPE_F16},   {"Q4_0", IMGD_DTYPE_Q4_0},
    {"Q4_1", IMGD_DTYPE_Q4_1}, {"Q4_2", NO_DTYPE},        {"Q4_3", NO_DTYPE},
    {"Q5_0", IMGD_DTYPE_Q5_0}, {"Q5_1", IMGD_DTYPE_Q5_1}, {"Q8_0", IMGD_DTYPE_Q8_0},
    {"Q8_1", IMGD_DTYPE_Q8_1}, {"Q2_K", IMGD_DTYPE_Q2_K}, {"Q3_K", IMGD_DTYPE_Q3_K},
    {"Q4_K", IMGD_DTYPE_Q4_K}, {"Q5_K", IMGD_DTYPE_Q5_K}, {"Q6_K", IMGD_DTYPE_Q6_K},
    {"Q8_K", NO_DTYPE},        {"IQ2_XXS", NO_DTYPE},     {"IQ2_XS", NO_DTYPE},
    {"IQ3_XXS", NO_DTYPE},     {"IQ1_S", NO_DTYPE},       {"IQ4_NL", NO_DTYPE},
    {"IQ3_S", NO_DTYPE},       {"IQ2_S", NO_DTYPE},       {"IQ4_XS", NO_DTYPE},
    {"I8", IMGD_DTYPE_I8},     {"I16", IMGD_DTYPE_I16},   {"I32", IMGD_DTYPE_I32},
    {"I64", IMGD_DTYPE_I64},   {"F64", IMGD_DTYPE_F64},   {"IQ1_M", NO_DTYPE},
    {"BF16", IMGD_DTYPE_BF16}, {"Q4_0_4_4", NO_DTYPE},    {"Q4_0_4_8", NO_DTYPE},
    {"Q4_0_8_8", NO_DTYPE},    {"TQ1_0", NO_DTYPE},       {"TQ2_0", NO_DTYPE},
    {"IQ4_NL_4_4", NO_DTYPE},  {"IQ4_NL_4_8", NO_DTYPE},  {"IQ4_NL_8_8", NO_DTYPE},
    {"MXFP4", NO_DTYPE},
};

/* ---- byte reader ------------------------------------------------------------------- */

typedef struct rd {
    const char    *file; /* for messages */
    const uint8_t *data;
    uint64_t       size; /* bytes in data */
    uint64_t       pos;
    uint64_t       cap;        /* header_size_max: no header byte may lie at or past it */
    char           field[160]; /* what is being read, for messages */
} rd;

static void rd_field(rd *r, const char *fmt, ...) IMGD_PRINTF(2, 3);

static void rd_field(rd *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(r->field, sizeof r->field, fmt, ap); /* truncation is fine here */
    va_end(ap);
}

/* Checks that n more header bytes exist in the file and under the cap. */
static imgd_status rd_need(rd *r, uint64_t n, const char *what) {
    if (n > r->size - r->pos) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: %s: %s of %" PRIu64 " bytes at offset %" PRIu64
                         " runs past the end of the file (%" PRIu64
                         " bytes); the file is truncated or corrupt",
                         r->file, r->field, what, n, r->pos, r->size);
    }
    if (n > r->cap || r->pos > r->cap - n) {
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "%s: %s: %s of %" PRIu64 " bytes at offset %" PRIu64
                         " would make the header exceed header_size_max (%" PRIu64
                         " bytes); raise header_size_max if the file is trusted",
                         r->file, r->field, what, n, r->pos, r->cap);
    }
    return IMGD_OK;
}

/* Refuses `count` items of at least `each` bytes that cannot fit in what remains. */
static imgd_status rd_count_fits(rd *r, uint64_t count, uint64_t each, const char *what) {
    uint64_t left = r->size - r->pos;
    if (count > left / each) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: %s: %" PRIu64 " %s cannot fit in the %" PRIu64
                         " bytes that remain (each needs at least %" PRIu64
                         "); the header is corrupt",
                         r->file, r->field, count, what, left, each);
    }
    uint64_t cap_left = r->cap > r->pos ? r->cap - r->pos : 0;
    if (count > cap_left / each) {
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "%s: %s: %" PRIu64 " %s would make the header exceed header_size_max "
                         "(%" PRIu64 " bytes); raise header_size_max if the file is trusted",
                         r->file, r->field, count, what, r->cap);
    }
    return IMGD_OK;
}

static uint64_t le_at(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static imgd_status rd_u32(rd *r, uint32_t *out) {
    imgd_status st = rd_need(r, 4, "a u32");
    if (st != IMGD_OK) return st;
    *out = (uint32_t)le_at(r->data + r->pos, 4);
    r->pos += 4;
    return IMGD_OK;
}

static imgd_status rd_u64(rd *r, uint64_t *out) {
    imgd_status st = rd_need(r, 8, "a u64");
    if (st != IMGD_OK) return st;
    *out = le_at(r->data + r->pos, 8);
    r->pos += 8;
    return IMGD_OK;
}

/* A GGUF string; *s points into the file (not NUL-terminated). */
static imgd_status rd_str(rd *r, const char **s, uint64_t *len) {
    uint64_t    n;
    imgd_status st = rd_u64(r, &n);
    if (st == IMGD_OK) st = rd_need(r, n, "a string");
    if (st != IMGD_OK) return st;
    *s   = (const char *)r->data + r->pos;
    *len = n;
    r->pos += n;
    return IMGD_OK;
}

static int show_len(uint64_t len) {
    return (int)(len < NAME_SHOW ? len : NAME_SHOW);
}

/* ---- metadata values as text ------------------------------------------------------- */

/* Shortest decimal text that reads back as the same value. */
static imgd_status append_float(imgd_buf *out, double v, bool is_f32) {
    char buf[40];
    if (isnan(v)) return imgd_buf_puts(out, "nan");
    if (isinf(v)) return imgd_buf_puts(out, v < 0 ? "-inf" : "inf");
    for (int prec = 1; prec <= 17; prec++) {
        (void)imgd_fmt(buf, sizeof buf, "%.*g", prec, v); /* fits: at most 24 chars */
        if (is_f32 ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
    }
    return imgd_buf_puts(out, buf);
}

/* Reads one fixed-size value of type t; appends its text when out is non-NULL. */
static imgd_status append_scalar(rd *r, uint32_t t, imgd_buf *out) {
    uint32_t       size = k_vtypes[t].size;
    imgd_status    st   = rd_need(r, size, k_vtypes[t].name);
    const uint8_t *p    = r->data + r->pos;
    if (st != IMGD_OK) return st;
    r->pos += size;
    uint64_t u = le_at(p, (int)size);
    if (t == GGUF_BOOL && u > 1) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: %s: bool value is %" PRIu64 ", expected 0 or 1; the file is corrupt",
                         r->file, r->field, u);
    }
    if (!out) return IMGD_OK;
    switch ((gguf_vtype)t) {
    case GGUF_UINT8:
    case GGUF_UINT16:
    case GGUF_UINT32:
    case GGUF_UINT64: return imgd_buf_printf(out, "%" PRIu64, u);
    case GGUF_INT8: return imgd_buf_printf(out, "%d", (int)(int8_t)(uint8_t)u);
    case GGUF_INT16: return imgd_buf_printf(out, "%d", (int)(int16_t)(uint16_t)u);
    case GGUF_INT32: return imgd_buf_printf(out, "%" PRId32, (int32_t)(uint32_t)u);
    case GGUF_INT64: return imgd_buf_printf(out, "%" PRId64, (int64_t)u);
    case GGUF_BOOL: return imgd_buf_puts(out, u ? "true" : "false");
    case GGUF_FLOAT32: {
        float    f;
        uint32_t bits = (uint32_t)u;
        memcpy(&f, &bits, 4);
        return append_float(out, (double)f, true);
    }
    case GGUF_FLOAT64: {
        double d;
        memcpy(&d, &u, 8);
        return append_float(out, d, false);
    }
    default: break;
    }
    return imgd_fail(IMGD_E_INTERNAL, "%s: %s: value type %u is not a scalar", r->file, r->field,
                     t);
}

static imgd_status append_value(rd *r, uint32_t t, int depth, imgd_buf *out, bool quote);

/* An array value: "[1, 2, 3]", "[\"a\", \"b\"]", nested "[[1], []]"; arrays longer than
 * ARRAY_TEXT_MAX become "[array of N <type>]" and their elements are only bounds-checked.
 * Recursion (through append_value) is capped at ARRAY_DEPTH_MAX levels. */
// NOLINTNEXTLINE(misc-no-recursion): depth capped by ARRAY_DEPTH_MAX
static imgd_status append_array(rd *r, int depth, imgd_buf *out) {
    uint32_t    et;
    uint64_t    count;
    imgd_status st = IMGD_OK;
    if (depth >= ARRAY_DEPTH_MAX) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: %s: arrays are nested deeper than %d levels; the file is corrupt or "
                         "hostile",
                         r->file, r->field, ARRAY_DEPTH_MAX);
    }
    st = rd_u32(r, &et);
    if (st == IMGD_OK) st = rd_u64(r, &count);
    if (st != IMGD_OK) return st;
    if (et >= GGUF_VTYPE_COUNT) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: %s: array element type %u is unknown (expected 0..%d); the file is "
                         "corrupt or from a newer GGUF version",
                         r->file, r->field, et, GGUF_VTYPE_COUNT - 1);
    }
    st = rd_count_fits(r, count, k_vtypes[et].size_min, "array elements");
    if (st != IMGD_OK) return st;
    bool show = out && count <= ARRAY_TEXT_MAX;
    if (out && !show) {
        st = imgd_buf_printf(out, "[array of %" PRIu64 " %s]", count, k_vtypes[et].name);
    }
    if (!show && k_vtypes[et].size && et != GGUF_BOOL) { /* skip plain numbers at once */
        if (st == IMGD_OK) st = rd_need(r, count * k_vtypes[et].size, "array data");
        if (st == IMGD_OK) r->pos += count * k_vtypes[et].size;
        return st;
    }
    if (show) st = imgd_buf_puts(out, "[");
    for (uint64_t i = 0; i < count && st == IMGD_OK; i++) {
        if (show && i) st = imgd_buf_puts(out, ", ");
        if (st == IMGD_OK) st = append_value(r, et, depth + 1, show ? out : NULL, true);
    }
    if (show && st == IMGD_OK) st = imgd_buf_puts(out, "]");
    return st;
}

/* Reads one value of type t (already checked < GGUF_VTYPE_COUNT) and appends its text
 * to out when non-NULL. Strings are copied as is at the top level and JSON-quoted inside
 * arrays; a string whose text is kept must be valid UTF-8 without NUL. */
// NOLINTNEXTLINE(misc-no-recursion): depth capped by ARRAY_DEPTH_MAX in append_array
static imgd_status append_value(rd *r, uint32_t t, int depth, imgd_buf *out, bool quote) {
    if (t == GGUF_ARRAY) return append_array(r, depth, out);
    if (t != GGUF_STRING) return append_scalar(r, t, out);
    const char *s;
    uint64_t    len;
    imgd_status st = rd_str(r, &s, &len);
    if (st != IMGD_OK || !out) return st;
    if (!imgd_utf8_valid(s, (size_t)len)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: %s: string value is not valid UTF-8 (or contains NUL); the file is "
                         "corrupt",
                         r->file, r->field);
    }
    if (!quote) return imgd_buf_append(out, s, (size_t)len);
    char *tmp = imgd_strndup(s, (size_t)len);
    if (!tmp) return imgd_fail(IMGD_E_NOMEM, "%s: %s: out of memory", r->file, r->field);
    st = imgd_buf_json_str(out, tmp);
    imgd_free(tmp);
    return st;
}

/* ---- key/value section ------------------------------------------------------------- */

static imgd_status read_alignment(rd *r, uint32_t type, uint32_t *align, imgd_buf *text) {
    if (type != GGUF_UINT32) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: general.alignment: has type %s, expected uint32; the file was "
                         "written by a broken converter",
                         r->file, k_vtypes[type].name);
    }
    uint32_t    a;
    imgd_status st = rd_u32(r, &a);
    if (st != IMGD_OK) return st;
    if (a == 0 || (a & (a - 1)) != 0) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: general.alignment: %u is not a nonzero power of two; the file is "
                         "corrupt",
                         r->file, a);
    }
    *align = a;
    return imgd_buf_printf(text, "%u", a);
}

static imgd_status read_kv(rd *r, uint64_t i, imgd_strmap *seen, imgd_arena *keys, imgd_weights *w,
                           uint32_t *align) {
    const char *k;
    uint64_t    klen;
    uint32_t    type;
    imgd_buf    text;
    rd_field(r, "key/value %" PRIu64 " key", i);
    imgd_status st = rd_str(r, &k, &klen);
    if (st != IMGD_OK) return st;
    if (klen == 0) {
        return imgd_fail(IMGD_E_FORMAT, "%s: key/value %" PRIu64 ": the key is empty", r->file, i);
    }
    if (!imgd_utf8_valid(k, (size_t)klen)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: key/value %" PRIu64 ": the key is not valid UTF-8 (or contains NUL)",
                         r->file, i);
    }
    char *key = imgd_arena_strndup(keys, k, (size_t)klen);
    if (!key) return imgd_fail(IMGD_E_NOMEM, "%s: out of memory reading keys", r->file);
    st = imgd_strmap_put(seen, key, (size_t)i, NULL);
    if (st == IMGD_E_INVALID_ARG) {
        return imgd_fail(IMGD_E_FORMAT, "%s: key '%.*s' appears twice; keys must be unique",
                         r->file, show_len(klen), key);
    }
    if (st != IMGD_OK) return st;
    rd_field(r, "key '%.*s'", show_len(klen), key);
    st = rd_u32(r, &type);
    if (st != IMGD_OK) return st;
    if (type >= GGUF_VTYPE_COUNT) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: key '%.*s': value type %u is unknown (expected 0..%d); the file is "
                         "corrupt or from a newer GGUF version",
                         r->file, show_len(klen), key, type, GGUF_VTYPE_COUNT - 1);
    }
    /* Metadata text never grows much past the bytes it came from (see append_array). */
    imgd_buf_init(&text, (size_t)IMGD_MIN(r->cap, SIZE_MAX / 16) * 8);
    if (strcmp(key, "general.alignment") == 0) {
        st = read_alignment(r, type, align, &text);
    } else {
        st = append_value(r, type, 0, &text, false);
    }
    if (st == IMGD_OK) st = imgd_weights_meta_set(w, key, text.data ? text.data : "");
    imgd_buf_free(&text);
    return st;
}

static imgd_status read_kvs(rd *r, uint64_t n_kv, imgd_weights *w, uint32_t *align) {
    imgd_strmap seen;
    imgd_arena  keys;
    imgd_status st = IMGD_OK;
    imgd_strmap_init(&seen);
    imgd_arena_init(&keys, 0);
    for (uint64_t i = 0; i < n_kv && st == IMGD_OK; i++) st = read_kv(r, i, &seen, &keys, w, align);
    imgd_strmap_free(&seen);
    imgd_arena_free(&keys);
    return st;
}

/* ---- tensor infos ------------------------------------------------------------------ */

typedef struct tinfo {
    const char *name; /* in the file, not NUL-terminated */
    size_t      name_len;
    int64_t     shape[IMGD_MAX_DIMS]; /* row-major: ne reversed */
    int32_t     n_dims;
    imgd_dtype  dt;
    uint64_t    offset; /* relative to the data section */
    uint64_t    nbytes;
} tinfo;

static imgd_status read_tensor_type(rd *r, const tinfo *t, imgd_dtype *out) {
    uint32_t    id;
    imgd_status st = rd_u32(r, &id);
    if (st != IMGD_OK) return st;
    if (id >= IMGD_ARRAY_LEN(k_ggml_types)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: tensor '%.*s': ggml type %u is unknown; the file is corrupt or "
                         "needs a newer imgd",
                         r->file, show_len(t->name_len), t->name, id);
    }
    if (k_ggml_types[id].dt == NO_DTYPE) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: tensor '%.*s': ggml type %s (%u) is not supported; re-quantize the "
                         "model to F16, BF16, Q8_0, Q4_0..Q5_1 or Q2_K..Q6_K",
                         r->file, show_len(t->name_len), t->name, k_ggml_types[id].name, id);
    }
    *out = (imgd_dtype)k_ggml_types[id].dt;
    return IMGD_OK;
}

static imgd_status read_tensor_info(rd *r, uint64_t i, uint32_t align, tinfo *t) {
    uint64_t len;
    uint32_t n_dims;
    rd_field(r, "tensor %" PRIu64 " name", i);
    imgd_status st = rd_str(r, &t->name, &len);
    if (st != IMGD_OK) return st;
    if (len == 0 || !imgd_utf8_valid(t->name, (size_t)len)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: tensor %" PRIu64 ": the name is empty or not valid UTF-8 (or "
                         "contains NUL); the file is corrupt",
                         r->file, i);
    }
    t->name_len = (size_t)len;
    rd_field(r, "tensor '%.*s'", show_len(len), t->name);
    st = rd_u32(r, &n_dims);
    if (st != IMGD_OK) return st;
    if (n_dims > IMGD_MAX_DIMS) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: tensor '%.*s': n_dims is %u, at most %d dimensions are supported",
                         r->file, show_len(len), t->name, n_dims, IMGD_MAX_DIMS);
    }
    t->n_dims = (int32_t)n_dims;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        st = rd_u64(r, &ne);
        if (st != IMGD_OK) return st;
        if (ne > (uint64_t)INT64_MAX) {
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: tensor '%.*s': dimension ne[%u] = %" PRIu64
                             " overflows int64; the file is corrupt",
                             r->file, show_len(len), t->name, d, ne);
        }
        t->shape[n_dims - 1 - d] = (int64_t)ne; /* ne[0] is innermost: reverse */
    }
    st = read_tensor_type(r, t, &t->dt);
    if (st == IMGD_OK) st = rd_u64(r, &t->offset);
    if (st != IMGD_OK) return st;
    if (t->offset % align != 0) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: tensor '%.*s': offset %" PRIu64
                         " is not aligned to %u (general.alignment); the file is corrupt",
                         r->file, show_len(len), t->name, t->offset, align);
    }
    st = imgd_dtype_nbytes(t->dt, t->n_dims, t->shape, &t->nbytes);
    if (st != IMGD_OK) {
        return imgd_fail_prefix(st, "%s: tensor '%.*s'", r->file, show_len(len), t->name);
    }
    return IMGD_OK;
}

static int cmp_offset(const void *a, const void *b) {
    const tinfo *x = *(const tinfo *const *)a, *y = *(const tinfo *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* Every span inside the data section, and no two non-empty spans overlapping. */
static imgd_status check_spans(const char *file, tinfo *ti, size_t n, uint64_t data_size) {
    const tinfo **order = NULL;
    imgd_status   st    = IMGD_OK;
    for (size_t i = 0; i < n; i++) {
        const tinfo *t = &ti[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: tensor '%.*s': %" PRIu64 " bytes at data offset %" PRIu64
                             " run past the end of the data section (%" PRIu64
                             " bytes); the file is truncated or its offsets are wrong",
                             file, show_len(t->name_len), t->name, t->nbytes, t->offset, data_size);
        }
    }
    if (n < 2) return IMGD_OK;
    order = imgd_calloc(n, sizeof *order);
    if (!order) return imgd_fail(IMGD_E_NOMEM, "%s: out of memory for %zu tensors", file, n);
    for (size_t i = 0; i < n; i++) order[i] = &ti[i];
    qsort(order, n, sizeof *order, cmp_offset);
    const tinfo *last = NULL; /* the non-empty span that reaches furthest so far */
    for (size_t i = 0; i < n && st == IMGD_OK; i++) {
        const tinfo *t = order[i];
        if (t->nbytes == 0) continue;
        if (last && t->offset < last->offset + last->nbytes) {
            st = imgd_fail(IMGD_E_FORMAT,
                           "%s: tensor '%.*s': data at offset %" PRIu64
                           " overlaps tensor '%.*s' at offset %" PRIu64 "; the file is corrupt",
                           file, show_len(t->name_len), t->name, t->offset,
                           show_len(last->name_len), last->name, last->offset);
        } else {
            last = t;
        }
    }
    imgd_free(order);
    return st;
}

/* ---- reader ------------------------------------------------------------------------ */

static imgd_status read_header(rd *r, uint64_t *n_tensors, uint64_t *n_kv) {
    uint32_t version;
    if (r->size < 4 || memcmp(r->data, "GGUF", 4) != 0) {
        return imgd_fail(IMGD_E_FORMAT, "%s: magic: the file does not start with \"GGUF\"",
                         r->file);
    }
    r->pos = 4;
    rd_field(r, "version");
    imgd_status st = rd_u32(r, &version);
    if (st != IMGD_OK) return st;
    if (version == 1) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: version: GGUF version 1 (32-bit counts, 2023) is not supported; "
                         "re-convert the model with a current llama.cpp or stable-diffusion.cpp",
                         r->file);
    }
    if (version != 0 && (version & 0xFFFF) == 0) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: version: the file is big-endian GGUF; convert it to little-endian",
                         r->file);
    }
    if (version == 0 || version > 3) {
        return imgd_fail(version == 0 ? IMGD_E_FORMAT : IMGD_E_UNSUPPORTED,
                         "%s: version: GGUF version %u is not supported (2 and 3 are)", r->file,
                         version);
    }
    rd_field(r, "tensor count");
    st = rd_u64(r, n_tensors);
    if (st == IMGD_OK) st = rd_count_fits(r, *n_tensors, TENSOR_SIZE_MIN, "tensor infos");
    rd_field(r, "key/value count");
    if (st == IMGD_OK) st = rd_u64(r, n_kv);
    if (st == IMGD_OK) st = rd_count_fits(r, *n_kv, KV_SIZE_MIN, "key/value pairs");
    if (st != IMGD_OK) return st;
    /* Both sections together; each term fits in the file on its own, so none overflows. */
    uint64_t least = *n_kv * KV_SIZE_MIN + *n_tensors * TENSOR_SIZE_MIN;
    if (least > r->size - r->pos) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: counts: %" PRIu64 " key/value pairs and %" PRIu64
                         " tensor infos need at least %" PRIu64 " bytes but %" PRIu64
                         " remain; the header is corrupt",
                         r->file, *n_kv, *n_tensors, least, r->size - r->pos);
    }
    return IMGD_OK;
}

imgd_status imgd_gguf_read(const char *name, const uint8_t *data, uint64_t size,
                           const imgd_open_limits *lim, imgd_weights *w) {
    rd       r         = {.file = name, .data = data, .size = size, .cap = lim->header_size_max};
    tinfo   *ti        = NULL;
    uint32_t align     = GGUF_ALIGNMENT_DEFAULT;
    uint64_t n_tensors = 0, n_kv = 0;

    imgd_status st = read_header(&r, &n_tensors, &n_kv);
    if (st == IMGD_OK) st = read_kvs(&r, n_kv, w, &align);
    if (st != IMGD_OK) goto fail;
    rd_field(&r, "tensor infos");
    st = rd_count_fits(&r, n_tensors, TENSOR_SIZE_MIN, "tensor infos");
    if (st != IMGD_OK) goto fail;
    if (n_tensors) {
        ti = imgd_calloc((size_t)n_tensors, sizeof *ti);
        if (!ti) {
            st = imgd_fail(IMGD_E_NOMEM, "%s: out of memory for %" PRIu64 " tensor infos", name,
                           n_tensors);
            goto fail;
        }
    }
    for (uint64_t i = 0; i < n_tensors && st == IMGD_OK; i++) {
        st = read_tensor_info(&r, i, align, &ti[i]);
    }
    if (st != IMGD_OK) goto fail;

    /* The data section starts at the next multiple of the alignment. */
    uint64_t pad      = (align - r.pos % align) % align;
    uint64_t data_off = r.pos + pad; /* pos <= size and pad < 2^32: no overflow */
    if (n_tensors && data_off > size) {
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: data section: starts at byte %" PRIu64 " (padded to %u) but the file "
                       "has %" PRIu64 " bytes; the file is truncated",
                       name, data_off, align, size);
        goto fail;
    }
    st = check_spans(name, ti, (size_t)n_tensors, n_tensors ? size - data_off : 0);
    for (uint64_t i = 0; i < n_tensors && st == IMGD_OK; i++) {
        const tinfo *t = &ti[i];
        st             = imgd_weights_add(w, t->name, t->name_len, t->dt, t->n_dims, t->shape,
                                          data + data_off + t->offset, t->nbytes);
        if (st != IMGD_OK) st = imgd_fail_prefix(st, "%s", name);
    }
fail:
    imgd_free(ti);
    return st;
}
