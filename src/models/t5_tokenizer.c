/* T5 tokenizer: SentencePiece unigram from spiece.model (see t5_tokenizer.h). The
 * behaviour follows sentencepiece's normalizer.cc (Normalize, NormalizePrefix),
 * unigram_model.cc (EncodeOptimized) and sentencepiece_processor.cc (unknown-run merging,
 * byte fallback), and transformers' T5Tokenizer (legacy) for special tokens and </s>. */
#include "models/t5_tokenizer.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/json.h"
#include "base/map.h"
#include "base/text.h"

/* sentencepiece.ModelProto.SentencePiece.Type */
enum {
    PT_NORMAL  = 1,
    PT_UNKNOWN = 2,
    PT_CONTROL = 3,
    PT_USER    = 4,
    PT_UNUSED  = 5,
    PT_BYTE    = 6
};

#define UNK_PENALTY 10.0f          /* unigram_model.cc kUnkPenalty */
#define SPACE_SYM   "\xe2\x96\x81" /* U+2581, kSpaceSymbol */
#define NAME_CAP    256

struct imgd_t5_tok {
    char      name[NAME_CAP]; /* for messages */
    char     *blob;           /* piece strings, each NUL-terminated */
    uint32_t *off, *len;      /* piece i = blob[off[i] .. off[i] + len[i]) */
    float    *score;
    uint8_t  *type;
    int32_t   n_pieces, n_extra;
    uint32_t *slots; /* hash of matchable pieces: id + 1, 0 = empty */
    size_t    n_slots;
    uint32_t  max_len; /* longest matchable piece, bytes */
    float     min_score, max_score;
    int32_t   unk, eos, pad;
    int32_t   byte_id[256]; /* byte_fallback: id of <0xXX>, unk when absent */
    bool      add_dummy_prefix, remove_extra_ws, escape_ws, byte_fallback, ws_suffix, has_user;
    uint32_t *trie; /* precompiled charsmap: darts-clone units */
    size_t    n_trie;
    char     *norm; /* replacement strings (NUL-terminated; one extra NUL at the end) */
    size_t    n_norm;
};

/* ---- protobuf wire format ---------------------------------------------------------------- */

typedef struct pb {
    const uint8_t *base, *p, *end;
    const char    *file;
} pb;

/* One field: number, wire type and value (varint/fixed value or a length-delimited span). */
typedef struct pb_field {
    uint32_t       num, wire;
    uint64_t       v;
    const uint8_t *data;
    size_t         len;
    size_t         at; /* byte offset of the tag in the file */
} pb_field;

static imgd_status pb_varint(pb *r, uint64_t *v, const char *what) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: %s truncated at byte %zu (the file is cut short or not a "
                             "sentencepiece model; use the spiece.model of the tokenizer_2 folder)",
                             r->file, what, (size_t)(r->p - r->base));
        uint8_t c = *r->p++;
        x |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *v = x;
            return IMGD_OK;
        }
    }
    return imgd_fail(IMGD_E_FORMAT, "%s: %s at byte %zu is longer than 10 bytes (corrupt file)",
                     r->file, what, (size_t)(r->p - r->base));
}

/* Reads the next field of the message spanning r; false at its end (st stays IMGD_OK). */
static bool pb_next(pb *r, pb_field *f, imgd_status *st) {
    *st = IMGD_OK;
    if (r->p >= r->end) return false;
    memset(f, 0, sizeof *f);
    f->at      = (size_t)(r->p - r->base);
    uint64_t t = 0;
    if ((*st = pb_varint(r, &t, "field tag")) != IMGD_OK) return false;
    f->num  = (uint32_t)(t >> 3);
    f->wire = (uint32_t)(t & 7);
    if (t >> 3 == 0 || t >> 3 > 536870911u) {
        *st =
            imgd_fail(IMGD_E_FORMAT, "%s: field number %llu at byte %zu is invalid (corrupt file)",
                      r->file, (unsigned long long)(t >> 3), f->at);
        return false;
    }
    size_t left = (size_t)(r->end - r->p);
    switch (f->wire) {
    case 0: *st = pb_varint(r, &f->v, "varint"); break;
    case 1:
    case 5: {
        size_t w = f->wire == 1 ? 8 : 4;
        if (left < w) {
            *st = imgd_fail(IMGD_E_FORMAT,
                            "%s: %zu-byte field %u at byte %zu runs past the end "
                            "of its message (%zu bytes left)",
                            r->file, w, f->num, f->at, left);
            break;
        }
        for (size_t i = 0; i < w; i++) f->v |= (uint64_t)r->p[i] << (8 * i);
        r->p += w;
        break;
    }
    case 2: {
        uint64_t n = 0;
        if ((*st = pb_varint(r, &n, "length")) != IMGD_OK) break;
        left = (size_t)(r->end - r->p);
        if (n > left) {
            *st = imgd_fail(IMGD_E_FORMAT,
                            "%s: field %u at byte %zu says %llu bytes but only "
                            "%zu remain in its message (truncated or corrupt file)",
                            r->file, f->num, f->at, (unsigned long long)n, left);
            break;
        }
        f->data = r->p;
        f->len  = (size_t)n;
        r->p += n;
        break;
    }
    default:
        *st = imgd_fail(IMGD_E_FORMAT,
                        "%s: field %u at byte %zu has wire type %u (groups and "
                        "unknown types are not valid in a sentencepiece model)",
                        r->file, f->num, f->at, f->wire);
    }
    return *st == IMGD_OK;
}

static pb pb_sub(const pb *r, const pb_field *f) {
    pb s = {r->base, f->data, f->data + f->len, r->file};
    return s;
}

/* A field that must be of wire type `wire`. */
static imgd_status pb_want(const pb *r, const pb_field *f, uint32_t wire, const char *what) {
    if (f->wire == wire) return IMGD_OK;
    return imgd_fail(IMGD_E_FORMAT, "%s: %s (field %u at byte %zu) has wire type %u, expected %u",
                     r->file, what, f->num, f->at, f->wire, wire);
}

/* ---- model loading ----------------------------------------------------------------------- */

typedef struct piece_in {
    const uint8_t *s;
    size_t         len;
    float          score;
    uint32_t       type;
    size_t         at;
} piece_in;

typedef struct load_ctx {
    piece_in      *p;
    size_t         n, alloc;
    uint64_t       model_type;
    const uint8_t *charsmap;
    size_t         charsmap_len;
} load_ctx;

static imgd_status parse_piece(pb *r, const pb_field *outer, load_ctx *c) {
    if (c->n >= IMGD_T5_TOK_PIECES_MAX)
        return imgd_fail(IMGD_E_TOO_LARGE, "%s: more than %u pieces", r->file,
                         IMGD_T5_TOK_PIECES_MAX);
    if (c->n == c->alloc) {
        size_t    na = c->alloc ? c->alloc * 2 : 1024;
        piece_in *np = imgd_realloc(c->p, na * sizeof *np);
        if (!np) return imgd_fail(IMGD_E_NOMEM, "out of memory reading %s", r->file);
        c->p     = np;
        c->alloc = na;
    }
    piece_in    pi        = {NULL, 0, 0.0f, PT_NORMAL, outer->at};
    bool        has_piece = false;
    pb          s         = pb_sub(r, outer);
    pb_field    f;
    imgd_status st = IMGD_OK;
    while (pb_next(&s, &f, &st)) {
        if (f.num == 1) {
            if ((st = pb_want(r, &f, 2, "piece string")) != IMGD_OK) return st;
            pi.s      = f.data;
            pi.len    = f.len;
            has_piece = true;
        } else if (f.num == 2) {
            if ((st = pb_want(r, &f, 5, "piece score")) != IMGD_OK) return st;
            uint32_t u = (uint32_t)f.v;
            memcpy(&pi.score, &u, sizeof u);
        } else if (f.num == 3) {
            if ((st = pb_want(r, &f, 0, "piece type")) != IMGD_OK) return st;
            if (f.v < PT_NORMAL || f.v > PT_BYTE)
                return imgd_fail(IMGD_E_FORMAT,
                                 "%s: piece %zu (byte %zu) has type %llu (valid: "
                                 "1..6)",
                                 r->file, c->n, f.at, (unsigned long long)f.v);
            pi.type = (uint32_t)f.v;
        }
    }
    if (st != IMGD_OK) return st;
    if (!has_piece || pi.len == 0)
        return imgd_fail(IMGD_E_FORMAT, "%s: piece %zu (byte %zu) has an empty string", r->file,
                         c->n, outer->at);
    if (pi.len > IMGD_T5_TOK_PIECE_LEN_MAX)
        return imgd_fail(IMGD_E_FORMAT, "%s: piece %zu is %zu bytes long (at most %u supported)",
                         r->file, c->n, pi.len, IMGD_T5_TOK_PIECE_LEN_MAX);
    if (!imgd_utf8_valid((const char *)pi.s, pi.len))
        return imgd_fail(IMGD_E_FORMAT, "%s: piece %zu (byte %zu) is not well-formed UTF-8",
                         r->file, c->n, outer->at);
    if (!isfinite(pi.score))
        return imgd_fail(IMGD_E_FORMAT, "%s: piece %zu has a non-finite score", r->file, c->n);
    c->p[c->n++] = pi;
    return IMGD_OK;
}

static imgd_status parse_trainer(pb *r, const pb_field *outer, load_ctx *c, imgd_t5_tok *t) {
    pb          s = pb_sub(r, outer);
    pb_field    f;
    imgd_status st = IMGD_OK;
    while (pb_next(&s, &f, &st)) {
        if (f.num != 3 && f.num != 24 && f.num != 35) continue;
        if ((st = pb_want(r, &f, 0, "trainer_spec flag")) != IMGD_OK) return st;
        if (f.num == 3) c->model_type = f.v;
        if (f.num == 24) t->ws_suffix = f.v != 0;
        if (f.num == 35) t->byte_fallback = f.v != 0;
    }
    return st;
}

static imgd_status parse_normalizer(pb *r, const pb_field *outer, load_ctx *c, imgd_t5_tok *t) {
    pb          s = pb_sub(r, outer);
    pb_field    f;
    imgd_status st = IMGD_OK;
    while (pb_next(&s, &f, &st)) {
        if (f.num == 2) {
            if ((st = pb_want(r, &f, 2, "precompiled_charsmap")) != IMGD_OK) return st;
            c->charsmap     = f.data;
            c->charsmap_len = f.len;
        } else if (f.num >= 3 && f.num <= 5) {
            if ((st = pb_want(r, &f, 0, "normalizer_spec flag")) != IMGD_OK) return st;
            bool v = f.v != 0;
            if (f.num == 3) t->add_dummy_prefix = v;
            if (f.num == 4) t->remove_extra_ws = v;
            if (f.num == 5) t->escape_ws = v;
        }
    }
    return st;
}

/* Splits the charsmap blob: uint32 trie size, trie units, replacement strings. */
static imgd_status load_charsmap(imgd_t5_tok *t, const load_ctx *c) {
    if (!c->charsmap_len) return IMGD_OK; /* identity normalizer */
    const uint8_t *b = c->charsmap;
    if (c->charsmap_len <= 4)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: precompiled_charsmap is %zu bytes (at least 5 "
                         "expected: the blob is broken)",
                         t->name, c->charsmap_len);
    uint32_t ts =
        (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if ((size_t)ts >= c->charsmap_len - 4 || ts % 4 != 0 || ts == 0)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: precompiled_charsmap trie size %u does not fit its "
                         "%zu-byte blob or is not a multiple of 4 (corrupt normalizer)",
                         t->name, ts, c->charsmap_len);
    t->n_trie = ts / 4;
    t->n_norm = c->charsmap_len - 4 - ts;
    t->trie   = imgd_malloc(ts);
    t->norm   = imgd_malloc(t->n_norm + 1);
    if (!t->trie || !t->norm) return imgd_fail(IMGD_E_NOMEM, "out of memory reading %s", t->name);
    for (size_t i = 0; i < t->n_trie; i++) {
        const uint8_t *u = b + 4 + 4 * i;
        t->trie[i] =
            (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    }
    memcpy(t->norm, b + 4 + ts, t->n_norm);
    t->norm[t->n_norm] = '\0';
    return IMGD_OK;
}

static uint32_t fnv_step(uint32_t h, uint8_t c) {
    return (h ^ c) * 16777619u;
}

/* Matchable pieces (sentencepiece's trie holds NORMAL, USER_DEFINED and UNUSED). */
static bool matchable(uint8_t type) {
    return type == PT_NORMAL || type == PT_USER || type == PT_UNUSED;
}

static imgd_status build_index(imgd_t5_tok *t) {
    size_t ns = 16;
    while (ns < (size_t)t->n_pieces * 2) ns *= 2;
    t->slots   = imgd_calloc(ns, sizeof *t->slots);
    t->n_slots = ns;
    if (!t->slots) return imgd_fail(IMGD_E_NOMEM, "out of memory reading %s", t->name);
    for (int32_t i = 0; i < t->n_pieces; i++) {
        if (!matchable(t->type[i])) continue;
        const char *s = t->blob + t->off[i];
        uint32_t    h = 2166136261u;
        for (uint32_t k = 0; k < t->len[i]; k++) h = fnv_step(h, (uint8_t)s[k]);
        size_t j = h & (ns - 1);
        while (t->slots[j]) {
            int32_t o = (int32_t)t->slots[j] - 1;
            if (t->len[o] == t->len[i] && memcmp(t->blob + t->off[o], s, t->len[i]) == 0)
                return imgd_fail(IMGD_E_FORMAT, "%s: piece '%s' is defined twice (ids %d and %d)",
                                 t->name, s, o, i);
            j = (j + 1) & (ns - 1);
        }
        t->slots[j] = (uint32_t)i + 1;
        if (t->len[i] > t->max_len) t->max_len = t->len[i];
        if (t->type[i] == PT_USER) t->has_user = true;
    }
    return IMGD_OK;
}

/* Id of piece s[0..n) among matchable pieces with hash h, or -1. */
static int32_t lookup(const imgd_t5_tok *t, const char *s, size_t n, uint32_t h) {
    size_t j = h & (t->n_slots - 1);
    while (t->slots[j]) {
        int32_t o = (int32_t)t->slots[j] - 1;
        if (t->len[o] == n && memcmp(t->blob + t->off[o], s, n) == 0) return o;
        j = (j + 1) & (t->n_slots - 1);
    }
    return -1;
}

/* Id of a piece of any type by its string (linear: load time only), or -1. */
static int32_t find_any(const imgd_t5_tok *t, const char *s) {
    size_t n = strlen(s);
    for (int32_t i = 0; i < t->n_pieces; i++)
        if (t->len[i] == n && memcmp(t->blob + t->off[i], s, n) == 0) return i;
    return -1;
}

static imgd_status copy_pieces(imgd_t5_tok *t, const load_ctx *c) {
    size_t total = 0;
    for (size_t i = 0; i < c->n; i++) total += c->p[i].len + 1; /* bounded by the file size */
    t->n_pieces = (int32_t)c->n;
    t->blob     = imgd_malloc(total ? total : 1);
    t->off      = imgd_malloc(c->n * sizeof *t->off);
    t->len      = imgd_malloc(c->n * sizeof *t->len);
    t->score    = imgd_malloc(c->n * sizeof *t->score);
    t->type     = imgd_malloc(c->n);
    if (!t->blob || !t->off || !t->len || !t->score || !t->type)
        return imgd_fail(IMGD_E_NOMEM, "out of memory reading %s", t->name);
    size_t o      = 0;
    t->min_score  = INFINITY;
    t->max_score  = -INFINITY;
    int32_t n_unk = 0;
    for (size_t i = 0; i < c->n; i++) {
        memcpy(t->blob + o, c->p[i].s, c->p[i].len);
        t->blob[o + c->p[i].len] = '\0';
        t->off[i]                = (uint32_t)o;
        t->len[i]                = (uint32_t)c->p[i].len;
        t->score[i]              = c->p[i].score;
        t->type[i]               = (uint8_t)c->p[i].type;
        o += c->p[i].len + 1;
        if (t->type[i] == PT_NORMAL) {
            if (t->score[i] < t->min_score) t->min_score = t->score[i];
            if (t->score[i] > t->max_score) t->max_score = t->score[i];
        }
        if (t->type[i] == PT_UNKNOWN) {
            t->unk = (int32_t)i;
            n_unk++;
        }
    }
    if (!isfinite(t->min_score)) t->min_score = 0.0f;
    if (!isfinite(t->max_score)) t->max_score = 0.0f;
    if (n_unk != 1)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: %s unknown piece (type UNKNOWN, '<unk>'); a "
                         "sentencepiece model has exactly one",
                         t->name, n_unk ? "more than one" : "no");
    return IMGD_OK;
}

static imgd_status finish_ids(imgd_t5_tok *t) {
    t->eos = find_any(t, "</s>");
    t->pad = find_any(t, "<pad>");
    if (t->eos < 0 || t->pad < 0)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: no '%s' piece: not a T5 tokenizer model (T5's "
                         "spiece.model has <pad> = 0, </s> = 1, <unk> = 2)",
                         t->name, t->eos < 0 ? "</s>" : "<pad>");
    for (int b = 0; b < 256; b++) {
        char name[8];
        (void)imgd_fmt(name, sizeof name, "<0x%02X>", b);
        int32_t id    = t->byte_fallback ? find_any(t, name) : -1;
        t->byte_id[b] = id >= 0 && t->type[id] == PT_BYTE ? id : t->unk;
    }
    return IMGD_OK;
}

static imgd_status parse_model(imgd_t5_tok *t, const uint8_t *data, size_t len) {
    load_ctx c    = {0};
    c.model_type  = 1;
    pb          r = {data, data, data + len, t->name};
    pb_field    f;
    imgd_status st = IMGD_OK;
    while (st == IMGD_OK && pb_next(&r, &f, &st)) {
        if (f.num < 1 || f.num > 3) continue; /* self_test_data, denormalizer_spec, unknown */
        st = pb_want(&r, &f, 2,
                     f.num == 1   ? "pieces"
                     : f.num == 2 ? "trainer_spec"
                                  : "normalizer_spec");
        if (st != IMGD_OK) break;
        if (f.num == 1) st = parse_piece(&r, &f, &c);
        if (f.num == 2) st = parse_trainer(&r, &f, &c, t);
        if (f.num == 3) st = parse_normalizer(&r, &f, &c, t);
    }
    if (st == IMGD_OK && c.n == 0)
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: no pieces (an empty or non-sentencepiece file; T5's "
                       "tokenizer is tokenizer_2/spiece.model in a FLUX diffusers folder)",
                       t->name);
    if (st == IMGD_OK && c.model_type != 1)
        st = imgd_fail(IMGD_E_UNSUPPORTED,
                       "%s: model_type %llu (%s); only unigram models "
                       "(T5's) are supported",
                       t->name, (unsigned long long)c.model_type,
                       c.model_type == 2   ? "BPE"
                       : c.model_type == 3 ? "word"
                       : c.model_type == 4 ? "char"
                                           : "unknown");
    if (st == IMGD_OK) st = copy_pieces(t, &c);
    if (st == IMGD_OK) st = build_index(t);
    if (st == IMGD_OK) st = load_charsmap(t, &c);
    if (st == IMGD_OK) st = finish_ids(t);
    imgd_free(c.p);
    return st;
}

imgd_status imgd_t5_tok_load_mem(const void *data, size_t len, const char *name, int32_t extra_ids,
                                 imgd_t5_tok **out) {
    if (!data || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_tok_load_mem: NULL argument");
    if (!name) name = "spiece.model (in memory)";
    if (len > IMGD_T5_TOK_FILE_MAX)
        return imgd_fail(IMGD_E_TOO_LARGE, "%s: %zu bytes (at most %u)", name, len,
                         IMGD_T5_TOK_FILE_MAX);
    if (extra_ids < 0 || extra_ids > 1000)
        return imgd_fail(IMGD_E_INVALID_ARG, "%s: %d extra ids (0..1000)", name, extra_ids);
    imgd_t5_tok *t = imgd_calloc(1, sizeof *t);
    if (!t) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    (void)imgd_fmt(t->name, sizeof t->name, "%s", name);
    t->add_dummy_prefix = t->remove_extra_ws = t->escape_ws = true; /* proto defaults */
    t->n_extra                                              = extra_ids;
    imgd_status st                                          = parse_model(t, data, len);
    if (st != IMGD_OK) {
        imgd_t5_tok_free(t);
        return st;
    }
    *out = t;
    return IMGD_OK;
}

/* tokenizer_config.json: extra_ids and legacy. */
static imgd_status read_config(const char *dir, int32_t *extra) {
    char *path = imgd_path_join(dir, "tokenizer_config.json");
    if (!path) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st  = IMGD_OK;
    char       *buf = NULL;
    size_t      n   = 0;
    cJSON      *js  = NULL;
    if (!imgd_path_is_file(path)) goto done;
    st = imgd_file_read_all(path, 16u << 20, &buf, &n);
    if (st == IMGD_OK) st = imgd_json_parse(path, buf, n, 16u << 20, 32, &js);
    if (st != IMGD_OK) goto done;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(js, "extra_ids");
    if (cJSON_IsNumber(e)) {
        if (e->valuedouble < 0 || e->valuedouble > 1000 || e->valuedouble != floor(e->valuedouble))
            st = imgd_fail(IMGD_E_FORMAT, "%s: extra_ids %g is not an integer in 0..1000", path,
                           e->valuedouble);
        else
            *extra = (int32_t)e->valuedouble;
    }
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(js, "legacy");
    if (st == IMGD_OK && cJSON_IsFalse(l))
        st = imgd_fail(
            IMGD_E_UNSUPPORTED,
            "%s: legacy=false T5 tokenization is not supported "
            "(FLUX.1 and SD3 use legacy=true; set \"legacy\": true to tokenize as they do)",
            path);
done:
    cJSON_Delete(js);
    imgd_free(buf);
    imgd_free(path);
    return st;
}

imgd_status imgd_t5_tok_load(const char *path, imgd_t5_tok **out) {
    if (!path || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_tok_load: NULL argument");
    int32_t     extra = 100;
    char       *file = NULL, *buf = NULL;
    size_t      n  = 0;
    imgd_status st = IMGD_OK;
    if (imgd_path_is_dir(path)) {
        file = imgd_path_join(path, "spiece.model");
        if (!file) return imgd_fail(IMGD_E_NOMEM, "out of memory");
        if (!imgd_path_is_file(file)) {
            st = imgd_fail(IMGD_E_IO,
                           "%s: no spiece.model in this folder (the T5 tokenizer is "
                           "tokenizer_2/spiece.model in a FLUX.1 diffusers folder)",
                           path);
            goto done;
        }
        st = read_config(path, &extra);
    } else {
        file = imgd_strdup(path);
        if (!file) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    if (st == IMGD_OK) st = imgd_file_read_all(file, IMGD_T5_TOK_FILE_MAX, &buf, &n);
    if (st == IMGD_OK) st = imgd_t5_tok_load_mem(buf, n, file, extra, out);
done:
    imgd_free(buf);
    imgd_free(file);
    return st;
}

void imgd_t5_tok_free(imgd_t5_tok *t) {
    if (!t) return;
    imgd_free(t->blob);
    imgd_free(t->off);
    imgd_free(t->len);
    imgd_free(t->score);
    imgd_free(t->type);
    imgd_free(t->slots);
    imgd_free(t->trie);
    imgd_free(t->norm);
    imgd_free(t);
}

/* ---- normalizer -------------------------------------------------------------------------- */

/* UTF-8 sequence length from the lead byte, as sentencepiece's OneCharLen (1 for stray
 * continuation bytes). */
static size_t one_char_len(uint8_t c) {
    static const uint8_t k[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return k[c >> 4];
}

/* Longest charsmap rule matching a prefix of s[0..n): its key length and replacement
 * offset; 0 when none. darts-clone commonPrefixSearch with every index checked. */
static size_t charsmap_match(const imgd_t5_tok *t, const uint8_t *s, size_t n, uint32_t *value) {
    if (!t->n_trie) return 0;
    size_t   best = 0;
    uint32_t unit = t->trie[0];
    size_t   id   = (unit >> 10) << ((unit & (1u << 9)) >> 6);
    for (size_t i = 0; i < n; i++) {
        id ^= s[i];
        if (id >= t->n_trie) break;
        unit = t->trie[id];
        if ((unit & ((1u << 31) | 0xffu)) != s[i]) break;
        id ^= (unit >> 10) << ((unit & (1u << 9)) >> 6);
        if (id >= t->n_trie) break;
        if ((unit >> 8) & 1u) {
            best   = i + 1;
            *value = t->trie[id] & 0x7fffffffu;
        }
    }
    return best;
}

/* Normalizes one prefix of in[0..n): the replacement (*rep, *rep_len) and the bytes
 * consumed. */
static imgd_status normalize_prefix(const imgd_t5_tok *t, const char *in, size_t n,
                                    const char **rep, size_t *rep_len, size_t *used) {
    if (t->has_user) { /* user-defined symbols pass through unnormalized, longest first */
        uint32_t h    = 2166136261u;
        size_t   best = 0;
        for (size_t k = 0; k < n && k < t->max_len; k++) {
            h          = fnv_step(h, (uint8_t)in[k]);
            int32_t id = lookup(t, in, k + 1, h);
            if (id >= 0 && t->type[id] == PT_USER) best = k + 1;
        }
        if (best) {
            *rep     = in;
            *rep_len = best;
            *used    = best;
            return IMGD_OK;
        }
    }
    uint32_t v = 0;
    size_t   m = charsmap_match(t, (const uint8_t *)in, n, &v);
    if (m) {
        if (v >= t->n_norm)
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: precompiled_charsmap rule points at offset %u "
                             "past its %zu-byte string table (corrupt normalizer)",
                             t->name, v, t->n_norm);
        *rep     = t->norm + v;
        *rep_len = strlen(*rep); /* terminated: norm has a NUL at n_norm */
        *used    = m;
        return IMGD_OK;
    }
    size_t c = one_char_len((uint8_t)in[0]);
    *rep     = in;
    *rep_len = c < n ? c : n;
    *used    = *rep_len;
    return IMGD_OK;
}

static bool ends_with(const imgd_buf *b, const char *s, size_t n) {
    return b->len >= n && memcmp(b->data + b->len - n, s, n) == 0;
}

/* sentencepiece Normalizer::Normalize (without the offset map). */
static imgd_status normalize(const imgd_t5_tok *t, const char *in, size_t n, imgd_buf *out) {
    const char *ws  = t->escape_ws ? SPACE_SYM : " ";
    size_t      wsl = strlen(ws);
    const char *rep = NULL;
    size_t      rl = 0, used = 0;
    imgd_status st = IMGD_OK;
    if (t->remove_extra_ws) { /* leading whitespace */
        while (n > 0) {
            if ((st = normalize_prefix(t, in, n, &rep, &rl, &used)) != IMGD_OK) return st;
            if (rl != 1 || rep[0] != ' ') break;
            in += used;
            n -= used;
        }
    }
    if (n == 0) return IMGD_OK;
    if (!t->ws_suffix && t->add_dummy_prefix && (st = imgd_buf_append(out, ws, wsl)) != IMGD_OK)
        return st;
    bool prev_space = t->remove_extra_ws;
    while (n > 0 && st == IMGD_OK) {
        if ((st = normalize_prefix(t, in, n, &rep, &rl, &used)) != IMGD_OK) return st;
        while (prev_space && rl > 0 && rep[0] == ' ') {
            rep++;
            rl--;
        }
        if (rl > 0) {
            for (size_t k = 0; k < rl && st == IMGD_OK; k++)
                st = t->escape_ws && rep[k] == ' ' ? imgd_buf_append(out, SPACE_SYM, 3)
                                                   : imgd_buf_append(out, rep + k, 1);
            prev_space = rep[rl - 1] == ' ';
        }
        in += used;
        n -= used;
        if (!t->remove_extra_ws) prev_space = false;
    }
    if (st != IMGD_OK) return st;
    if (t->remove_extra_ws)
        while (ends_with(out, ws, wsl)) {
            out->len -= wsl;
            out->data[out->len] = '\0';
        }
    if (t->ws_suffix && t->add_dummy_prefix) st = imgd_buf_append(out, ws, wsl);
    return st;
}

/* ---- unigram Viterbi --------------------------------------------------------------------- */

typedef struct seg {
    int32_t  id;
    uint32_t start, len; /* in the normalized text */
} seg;

/* Growable list of output pieces. */
typedef struct seglist {
    seg   *s;
    size_t n, alloc;
} seglist;

static imgd_status seg_push(seglist *l, int32_t id, size_t start, size_t len) {
    if (l->n == l->alloc) {
        size_t na = l->alloc ? l->alloc * 2 : 64;
        seg   *ns = imgd_realloc(l->s, na * sizeof *ns);
        if (!ns) return imgd_fail(IMGD_E_NOMEM, "out of memory tokenizing");
        l->s     = ns;
        l->alloc = na;
    }
    l->s[l->n++] = (seg){id, (uint32_t)start, (uint32_t)len};
    return IMGD_OK;
}

typedef struct node {
    float   score;
    int32_t id, starts_at; /* starts_at -1: not reached */
} node;

/* unigram_model.cc EncodeOptimized over s[0..n), then sentencepiece_processor.cc's merge of
 * unknown runs (or byte fallback); appends to out. */
static imgd_status viterbi(const imgd_t5_tok *t, const char *s, size_t n, seglist *out) {
    if (n == 0) return IMGD_OK;
    node *best = imgd_malloc((n + 1) * sizeof *best);
    if (!best) return imgd_fail(IMGD_E_NOMEM, "out of memory tokenizing");
    for (size_t i = 0; i <= n; i++) best[i] = (node){0.0f, -1, -1};
    const float unk_score = t->min_score - UNK_PENALTY;
    for (size_t at = 0; at < n;) {
        const float here   = best[at].score;
        size_t      mblen  = one_char_len((uint8_t)s[at]);
        bool        single = false;
        if (mblen > n - at) mblen = n - at;
        uint32_t h = 2166136261u;
        for (size_t k = at; k < n && k - at < t->max_len; k++) {
            h          = fnv_step(h, (uint8_t)s[k]);
            int32_t id = lookup(t, s + at, k + 1 - at, h);
            if (id < 0 || t->type[id] == PT_UNUSED) continue;
            size_t length = k + 1 - at;
            node  *tn     = &best[k + 1];
            /* user-defined pieces get a bonus so they always win (computed in double as
             * sentencepiece's length * max_score_ - 0.1) */
            double cand = t->type[id] == PT_USER
                              ? (double)length * (double)t->max_score - 0.1 + (double)here
                              : (double)(t->score[id] + here);
            if (tn->starts_at == -1 || cand > (double)tn->score) {
                tn->score     = (float)cand;
                tn->starts_at = (int32_t)at;
                tn->id        = id;
            }
            if (length == mblen) single = true;
        }
        if (!single) {
            node *tn   = &best[at + mblen];
            float cand = unk_score + here;
            if (tn->starts_at == -1 || cand > tn->score) {
                tn->score     = cand;
                tn->starts_at = (int32_t)at;
                tn->id        = t->unk;
            }
        }
        at += mblen;
    }
    /* backtrack into a reversed list, then emit forward with the unknown handling */
    seglist     rev = {0};
    imgd_status st  = IMGD_OK;
    for (size_t end = n; end > 0 && st == IMGD_OK;) {
        const node *nd = &best[end];
        if (nd->starts_at < 0 || (size_t)nd->starts_at >= end) {
            st = imgd_fail(IMGD_E_INTERNAL, "T5 tokenizer: broken Viterbi path at byte %zu", end);
            break;
        }
        st  = seg_push(&rev, nd->id, (size_t)nd->starts_at, end - (size_t)nd->starts_at);
        end = (size_t)nd->starts_at;
    }
    bool prev_unk = false;
    for (size_t i = rev.n; i-- > 0 && st == IMGD_OK;) {
        seg  g      = rev.s[i];
        bool is_unk = g.id == t->unk;
        if (is_unk && t->byte_fallback) {
            for (uint32_t k = 0; k < g.len && st == IMGD_OK; k++)
                st = seg_push(out, t->byte_id[(uint8_t)s[g.start + k]], g.start + k, 1);
        } else if (is_unk && prev_unk) {
            out->s[out->n - 1].len += g.len;
        } else {
            st = seg_push(out, g.id, g.start, g.len);
        }
        prev_unk = is_unk;
    }
    imgd_free(rev.s);
    imgd_free(best);
    return st;
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* SentencePiece encode of text[0..n): normalized text kept in norm (offsets of segs refer
 * to it; segs from earlier calls refer to earlier parts of norm). */
static imgd_status sp_encode_run(const imgd_t5_tok *t, const char *text, size_t n, imgd_buf *norm,
                                 seglist *segs) {
    imgd_buf one;
    imgd_buf_init(&one, (size_t)IMGD_T5_TOK_TEXT_MAX * 4);
    imgd_status st = normalize(t, text, n, &one);
    if (st == IMGD_OK && one.len) {
        size_t base = norm->len, first = segs->n;
        st = imgd_buf_append(norm, one.data, one.len);
        if (st == IMGD_OK) st = viterbi(t, one.data, one.len, segs);
        for (size_t i = first; i < segs->n; i++) segs->s[i].start += (uint32_t)base;
    }
    imgd_buf_free(&one);
    return st;
}

static imgd_status check_text(const char *text, size_t *n) {
    size_t len = strnlen(text, (size_t)IMGD_T5_TOK_TEXT_MAX + 1);
    if (len > IMGD_T5_TOK_TEXT_MAX)
        return imgd_fail(IMGD_E_TOO_LARGE, "T5 tokenizer: text longer than %u bytes",
                         IMGD_T5_TOK_TEXT_MAX);
    if (!imgd_utf8_valid(text, len)) {
        size_t bad = 0; /* first character that does not decode */
        while (bad < len) {
            size_t c = one_char_len((uint8_t)text[bad]);
            if (c > len - bad || !imgd_utf8_valid(text + bad, c)) break;
            bad += c;
        }
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "T5 tokenizer: text is not well-formed UTF-8 "
                         "(first bad byte near offset %zu); send UTF-8 text",
                         bad);
    }
    *n = len;
    return IMGD_OK;
}

static imgd_status ids_of(const seglist *l, int32_t **ids, size_t *n) {
    int32_t *v = imgd_malloc((l->n ? l->n : 1) * sizeof *v);
    if (!v) return imgd_fail(IMGD_E_NOMEM, "out of memory tokenizing");
    for (size_t i = 0; i < l->n; i++) v[i] = l->s[i].id;
    *ids = v;
    *n   = l->n;
    return IMGD_OK;
}

imgd_status imgd_t5_tok_sp_encode(const imgd_t5_tok *t, const char *text, int32_t **ids,
                                  char **pieces, size_t *n) {
    if (!t || !text || !ids || !n)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_tok_sp_encode: NULL argument");
    size_t      len = 0;
    imgd_status st  = check_text(text, &len);
    if (st != IMGD_OK) return st;
    imgd_buf norm, pcs;
    imgd_buf_init(&norm, (size_t)IMGD_T5_TOK_TEXT_MAX * 4);
    imgd_buf_init(&pcs, (size_t)IMGD_T5_TOK_TEXT_MAX * 8);
    seglist segs = {0};
    st           = sp_encode_run(t, text, len, &norm, &segs);
    for (size_t i = 0; st == IMGD_OK && pieces && i < segs.n; i++) {
        const seg  *g    = &segs.s[i];
        bool        byte = t->byte_fallback && t->type[g->id] == PT_BYTE;
        const char *p    = byte ? t->blob + t->off[g->id] : norm.data + g->start;
        size_t      pl   = byte ? t->len[g->id] : g->len;
        st               = imgd_buf_append(&pcs, p, pl);
        if (st == IMGD_OK) st = imgd_buf_append(&pcs, "", 1);
    }
    int32_t *v = NULL;
    size_t   k = 0;
    char    *p = NULL;
    if (st == IMGD_OK && pieces) {
        p = pcs.data ? imgd_buf_take(&pcs) : imgd_calloc(1, 1); /* never NULL on success */
        if (!p) st = imgd_fail(IMGD_E_NOMEM, "out of memory tokenizing");
    }
    if (st == IMGD_OK) st = ids_of(&segs, &v, &k);
    if (st == IMGD_OK) {
        *ids = v;
        *n   = k;
        if (pieces) *pieces = p;
    } else {
        imgd_free(p);
    }
    imgd_free(segs.s);
    imgd_buf_free(&norm);
    imgd_buf_free(&pcs);
    return st;
}

/* Length of the special token at s (transformers' added tokens), with its id; 0 if none. */
static size_t special_at(const imgd_t5_tok *t, const char *s, int32_t *id) {
    if (s[0] != '<') return 0;
    static const char *const names[3] = {"<pad>", "</s>", "<unk>"};
    const int32_t            vals[3]  = {t->pad, t->eos, t->unk};
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(names[i]);
        if (strncmp(s, names[i], l) == 0) {
            *id = vals[i];
            return l;
        }
    }
    if (strncmp(s, "<extra_id_", 10) != 0) return 0;
    size_t  k = 10;
    int32_t v = 0;
    while (s[k] >= '0' && s[k] <= '9' && k < 15) v = v * 10 + (s[k++] - '0');
    if (k == 10 || s[k] != '>' || (s[10] == '0' && k > 11) || v >= t->n_extra) return 0;
    *id = t->n_pieces - 1 + t->n_extra - v;
    return k + 1;
}

imgd_status imgd_t5_tok_encode(const imgd_t5_tok *t, const char *text, int32_t **ids, size_t *n) {
    if (!t || !text || !ids || !n)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_tok_encode: NULL argument");
    size_t      len = 0;
    imgd_status st  = check_text(text, &len);
    if (st != IMGD_OK) return st;
    imgd_buf norm;
    imgd_buf_init(&norm, (size_t)IMGD_T5_TOK_TEXT_MAX * 4);
    seglist segs = {0};
    size_t  from = 0;
    for (size_t i = 0; i <= len && st == IMGD_OK;) {
        int32_t sid = 0;
        size_t  sl  = i < len ? special_at(t, text + i, &sid) : 0;
        if (i < len && !sl) {
            i++;
            continue;
        }
        st = sp_encode_run(t, text + from, i - from, &norm, &segs);
        if (st == IMGD_OK && sl) st = seg_push(&segs, sid, 0, 0);
        if (!sl) break;
        i += sl;
        from = i;
    }
    if (st == IMGD_OK) st = ids_of(&segs, ids, n);
    imgd_free(segs.s);
    imgd_buf_free(&norm);
    return st;
}

imgd_status imgd_t5_tok_encode_padded(const imgd_t5_tok *t, const char *text, int32_t max_len,
                                      int32_t *out, size_t *n_text) {
    if (!out || max_len < 1 || max_len > (1 << 20))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "imgd_t5_tok_encode_padded: max_len %d (1..%d) or "
                         "NULL output",
                         max_len, 1 << 20);
    int32_t    *ids = NULL;
    size_t      n   = 0;
    imgd_status st  = imgd_t5_tok_encode(t, text, &ids, &n);
    if (st != IMGD_OK) return st;
    /* prepare_for_model: keep max_len - 1 ids (one special token is added), then
     * _add_eos_if_not_present, then pad */
    size_t keep = n < (size_t)max_len - 1 ? n : (size_t)max_len - 1;
    size_t k    = 0;
    for (; k < keep; k++) out[k] = ids[k];
    if (k == 0 || out[k - 1] != t->eos) out[k++] = t->eos;
    for (; k < (size_t)max_len; k++) out[k] = t->pad;
    if (n_text) *n_text = n;
    imgd_free(ids);
    return IMGD_OK;
}

/* ---- getters ----------------------------------------------------------------------------- */

size_t imgd_t5_tok_vocab_size(const imgd_t5_tok *t) {
    return (size_t)t->n_pieces + (size_t)t->n_extra;
}

size_t imgd_t5_tok_piece_count(const imgd_t5_tok *t) {
    return (size_t)t->n_pieces;
}

int32_t imgd_t5_tok_eos(const imgd_t5_tok *t) {
    return t->eos;
}

int32_t imgd_t5_tok_pad(const imgd_t5_tok *t) {
    return t->pad;
}

int32_t imgd_t5_tok_unk(const imgd_t5_tok *t) {
    return t->unk;
}

const char *imgd_t5_tok_token(const imgd_t5_tok *t, int32_t id, char *buf, size_t cap) {
    if (!t || id < 0) return NULL;
    if (id < t->n_pieces) return t->blob + t->off[id];
    if (id >= t->n_pieces + t->n_extra || !buf) return NULL;
    if (!imgd_fmt(buf, cap, "<extra_id_%d>", t->n_pieces - 1 + t->n_extra - id)) return NULL;
    return buf;
}
