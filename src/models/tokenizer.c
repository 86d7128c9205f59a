/* CLIP byte-level BPE tokenizer (see tokenizer.h for the behaviour reproduced).
 *
 * Layout: vocabulary strings live in one blob (added tokens are separate heap strings);
 * merges become an open-addressing table from a pair of symbol ids to (rank, merged id), so
 * BPE runs on integer ids. BPE itself is the heap form of transformers' loop (lowest rank
 * first, all of its non-overlapping occurrences left to right), O(n log n) in the word
 * length, so a pathological one-word prompt cannot stall a worker. Words seen before come
 * from a small mutex-guarded cache. */
#include "models/tokenizer.h"

#include <pthread.h>
#include <string.h>
#include <utf8proc.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"
#include "base/map.h"
#include "base/text.h"

/* ---- limits and constants ------------------------------------------------------------- */

#define FILE_BYTES_MAX    (64u << 20) /* vocab.json / merges.txt */
#define VOCAB_MAX         (1u << 24)  /* ids, base + added */
#define MERGES_MAX        48894u      /* transformers: merges.txt lines [1 : 49152 - 256 - 2 + 1] */
#define CACHE_SLOTS       8192u       /* word cache table size (power of two) */
#define CACHE_ENTRIES     4096u       /* cleared when it holds this many words */
#define CACHE_WORD_MAX    64u         /* longer words are not cached */
#define EMBED_VECTORS_MAX 75u         /* imgd_clip_tok_add_embedding: one prompt chunk */

static const char SOT[] = "<|startoftext|>";
static const char EOT[] = "<|endoftext|>";

/* ---- types ---------------------------------------------------------------------------- */

typedef struct cache_slot {
    uint64_t hash; /* 0: empty */
    int32_t *ids;  /* n ids, then the key bytes (NUL-terminated), one allocation */
    uint32_t n;    /* ids */
    uint32_t len;  /* key bytes */
} cache_slot;

/* The only state encoding changes, hence behind a pointer (writable through a const
 * tokenizer) and a lock. */
typedef struct word_cache {
    pthread_mutex_t mu;
    size_t          n; /* words held */
    cache_slot      slot[CACHE_SLOTS];
} word_cache;

struct imgd_clip_tok {
    char      **tok;       /* id -> token; [0, n_base) point into blob, the rest are owned */
    size_t      n_vocab;   /* ids in use (base + added) */
    size_t      n_base;    /* vocab.json's size */
    size_t      tok_alloc; /* slots in tok */
    char       *blob;      /* vocab.json token strings, NUL-separated */
    imgd_strmap vocab;     /* vocab.json token -> id (keys borrowed from blob) */

    uint64_t *pair_key;  /* (left << 32 | right), PAIR_EMPTY when unused */
    int32_t  *pair_rank; /* merge rank (line index after the header) */
    int32_t  *pair_out;  /* id of the merged symbol */
    size_t    pair_mask; /* table size - 1 */

    int32_t byte_id[256];     /* byte-level symbol of each byte */
    int32_t byte_end_id[256]; /* the same with "</w>" (last symbol of a word) */
    int32_t bos, eos, pad;

    uint8_t *added_special; /* per added id (id - n_base): 1 = special, 0 = whole word */
    size_t   added_special_cap;
    int32_t *split; /* special token ids, matched anywhere before cleanup */
    size_t   n_split, split_cap;
    uint8_t  split_first[256]; /* 1 for the first byte of some special token */

    word_cache *cache; /* NULL when it could not be set up: encoding works without */
};

#define PAIR_EMPTY UINT64_MAX

/* Growable id array. */
typedef struct ivec {
    int32_t *v;
    size_t   n, cap;
} ivec;

/* Per-call working memory, reused across the words of one encode. */
typedef struct scratch {
    int32_t  *cp; /* cleaned code points of a segment */
    size_t    cp_cap;
    int32_t  *nfc; /* NFC result */
    size_t    nfc_cap;
    uint8_t  *u8; /* UTF-8 of a segment (for utf8proc) or of one pre-token */
    size_t    u8_cap;
    int32_t  *low; /* one lowercased piece */
    size_t    low_cap;
    int32_t  *sym; /* BPE: symbol ids, prev, next (3 arrays of m) */
    size_t    sym_cap;
    uint64_t *heap; /* BPE candidates (rank << 32 | position) */
    size_t    heap_cap;
    ivec      out;
} scratch;

/* ---- small helpers -------------------------------------------------------------------- */

/* Ensures *p holds at least need elements of size elem. */
static imgd_status grow_buf(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return IMGD_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need) {
        if (!imgd_size_mul(n, 2, &n)) return imgd_fail(IMGD_E_NOMEM, "tokenizer: size overflow");
    }
    size_t bytes;
    if (!imgd_size_mul(n, elem, &bytes)) return imgd_fail(IMGD_E_NOMEM, "tokenizer: size overflow");
    void *q = imgd_realloc(*p, bytes);
    if (!q) return imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory (%zu bytes)", bytes);
    *p   = q;
    *cap = n;
    return IMGD_OK;
}

static imgd_status ivec_push(ivec *v, int32_t x) {
    if (v->n == v->cap) {
        imgd_status st = grow_buf((void **)&v->v, &v->cap, v->n + 1, sizeof *v->v);
        if (st != IMGD_OK) return st;
    }
    v->v[v->n++] = x;
    return IMGD_OK;
}

static imgd_status ivec_append(ivec *v, const int32_t *x, size_t n) {
    imgd_status st = grow_buf((void **)&v->v, &v->cap, v->n + n, sizeof *v->v);
    if (st != IMGD_OK) return st;
    memcpy(v->v + v->n, x, n * sizeof *x);
    v->n += n;
    return IMGD_OK;
}

/* Decodes one code point of well-formed UTF-8 at s[*i], advancing *i. */
static int32_t u8_next(const uint8_t *s, size_t *i) {
    uint32_t c = s[*i];
    if (c < 0x80) {
        *i += 1;
        return (int32_t)c;
    }
    size_t k = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : 3;
    c &= k == 1 ? 0x1Fu : k == 2 ? 0x0Fu : 0x07u;
    for (size_t j = 1; j <= k; j++) c = (c << 6) | (s[*i + j] & 0x3Fu);
    *i += k + 1;
    return (int32_t)c;
}

/* Decodes the code point that ends just before s[i] (i > 0, well-formed UTF-8). */
static int32_t u8_prev(const uint8_t *s, size_t i) {
    size_t j = i - 1;
    while (j > 0 && (s[j] & 0xC0) == 0x80) j--;
    return u8_next(s, &j);
}

static size_t u8_put(int32_t cp, uint8_t *d) {
    uint32_t c = (uint32_t)cp;
    if (c < 0x80) {
        d[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        d[0] = (uint8_t)(0xC0 | (c >> 6));
        d[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        d[0] = (uint8_t)(0xE0 | (c >> 12));
        d[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        d[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    d[0] = (uint8_t)(0xF0 | (c >> 18));
    d[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    d[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    d[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* Offset of the first byte that breaks well-formed UTF-8 (no overlongs, surrogates or code
 * points past U+10FFFF), or n when s[0..n) is well-formed. */
static size_t u8_bad_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t   k;
        uint32_t lo;
        if ((c & 0xE0) == 0xC0) {
            k  = 1;
            lo = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k  = 2;
            lo = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k  = 3;
            lo = 0x10000;
        } else {
            return i;
        }
        if (n - i <= k) return i;
        uint32_t cp = c & (0x3Fu >> k);
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + j] & 0x3Fu);
        }
        if (cp < lo || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += k + 1;
    }
    return n;
}

static int ascii_lower(int c) {
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* ---- Unicode classes (utf8proc data, Python semantics) -------------------------------- */

static utf8proc_category_t cat(int32_t c) {
    return utf8proc_category(c);
}

static bool is_letter(int32_t c) { /* \p{L} */
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    utf8proc_category_t k = cat(c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static bool is_number(int32_t c) { /* \p{N} */
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = cat(c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/* Python str.isspace(): bidi class WS, B or S, or category Zs. */
static bool py_space(int32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
    if (cat(c) == UTF8PROC_CATEGORY_ZS) return true;
    utf8proc_propval_t b = utf8proc_get_property(c)->bidi_class;
    return b == UTF8PROC_BIDI_CLASS_WS || b == UTF8PROC_BIDI_CLASS_B || b == UTF8PROC_BIDI_CLASS_S;
}

/* transformers' _is_control: any category C* except \t \n \r (unassigned included). */
static bool bert_control(int32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    if (c < 0x80) return c < 0x20 || c == 0x7F;
    utf8proc_category_t k = cat(c);
    return k == UTF8PROC_CATEGORY_CN || (k >= UTF8PROC_CATEGORY_CC && k <= UTF8PROC_CATEGORY_CO);
}

/* transformers' _is_whitespace: \t \n \r space, or Zs. */
static bool bert_space(int32_t c) {
    if (c < 0x80) return c == ' ' || c == '\t' || c == '\n' || c == '\r';
    return cat(c) == UTF8PROC_CATEGORY_ZS;
}

/* transformers' _is_chinese_char (CJK Unified Ideographs blocks and compatibility ones). */
static bool cjk(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Word characters for added-token boundaries: letters, digits, marks, '_'. */
static bool word_char(int32_t c) {
    if (c < 0x80) return c == '_' || is_letter(c) || (c >= '0' && c <= '9');
    utf8proc_category_t k = cat(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_NO);
}

/* Unicode "Cased" (Lowercase | Uppercase | Lt), approximated by category, a case mapping,
 * or Other_Lowercase letters without one (ª º). Only decides final sigma. */
static bool cased(int32_t c) {
    utf8proc_category_t k = cat(c);
    if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT) {
        return true;
    }
    if (c == 0xAA || c == 0xBA) return true;
    return utf8proc_tolower(c) != c || utf8proc_toupper(c) != c;
}

/* Unicode "Case_Ignorable": Mn Me Cf Lm Sk, or Word_Break MidLetter/MidNumLet/Single_Quote. */
static bool case_ignorable(int32_t c) {
    static const int32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
                                  0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                  0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(mid); i++) {
        if (c == mid[i]) return true;
    }
    utf8proc_category_t k = cat(c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK;
}

/* Python's handling of U+03A3 in str.lower(): final sigma when preceded by a cased letter
 * and not followed by one (case-ignorable characters skipped on both sides). */
static int32_t lower_sigma(const int32_t *s, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && case_ignorable(s[j - 1])) j--;
    if (j == 0 || !cased(s[j - 1])) return 0x3C3;
    j = i + 1;
    while (j < n && case_ignorable(s[j])) j++;
    return (j == n || !cased(s[j])) ? 0x3C2 : 0x3C3;
}

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256+k. */
static void bytes_to_unicode(int32_t map[256]) {
    int32_t n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        map[b]         = printable ? b : 256 + n++;
    }
}

/* ---- merge table ---------------------------------------------------------------------- */

static size_t pair_slot(const imgd_clip_tok *t, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 29) & t->pair_mask;
}

/* Rank of merging (a, b), or -1; the merged id goes to *out. */
static int32_t pair_find(const imgd_clip_tok *t, int32_t a, int32_t b, int32_t *out) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t j = pair_slot(t, key);; j = (j + 1) & t->pair_mask) {
        if (t->pair_key[j] == key) {
            *out = t->pair_out[j];
            return t->pair_rank[j];
        }
        if (t->pair_key[j] == PAIR_EMPTY) return -1;
    }
}

/* Inserts or overwrites (a later duplicate line wins, as in transformers' dict). */
static void pair_put(imgd_clip_tok *t, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t   j   = pair_slot(t, key);
    while (t->pair_key[j] != PAIR_EMPTY && t->pair_key[j] != key) j = (j + 1) & t->pair_mask;
    t->pair_key[j]  = key;
    t->pair_rank[j] = rank;
    t->pair_out[j]  = merged;
}

/* ---- word cache ----------------------------------------------------------------------- */

static uint64_t bytes_hash(const uint8_t *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h | 1; /* 0 marks an empty slot */
}

static const char *slot_key(const cache_slot *e) {
    return (const char *)(e->ids + e->n);
}

static void cache_clear(word_cache *c) {
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        imgd_free(c->slot[i].ids);
        c->slot[i] = (cache_slot){0};
    }
    c->n = 0;
}

/* The cached ids of word w[0..m) (hash h), or NULL. Caller holds the lock. */
static const cache_slot *cache_get(const word_cache *c, const uint8_t *w, size_t m, uint64_t h) {
    for (size_t j = h & (CACHE_SLOTS - 1);; j = (j + 1) & (CACHE_SLOTS - 1)) {
        const cache_slot *e = &c->slot[j];
        if (!e->hash) return NULL;
        if (e->hash == h && e->len == m && memcmp(slot_key(e), w, m) == 0) return e;
    }
}

/* Remembers a word; does nothing when out of memory (the cache is an optimisation).
 * Caller holds the lock. */
static void cache_put(word_cache *c, const uint8_t *w, size_t m, uint64_t h, const int32_t *ids,
                      size_t n) {
    if (c->n >= CACHE_ENTRIES) cache_clear(c);
    int32_t *blk = imgd_malloc(n * sizeof *ids + m + 1);
    if (!blk) return;
    memcpy(blk, ids, n * sizeof *ids);
    char *key = (char *)(blk + n);
    memcpy(key, w, m);
    key[m]   = '\0';
    size_t j = h & (CACHE_SLOTS - 1);
    while (c->slot[j].hash) j = (j + 1) & (CACHE_SLOTS - 1);
    c->slot[j] = (cache_slot){.hash = h, .ids = blk, .n = (uint32_t)n, .len = (uint32_t)m};
    c->n++;
}

static void cache_free(word_cache *c) {
    if (!c) return;
    cache_clear(c);
    pthread_mutex_destroy(&c->mu);
    imgd_free(c);
}

static word_cache *cache_new(void) {
    word_cache *c = imgd_calloc(1, sizeof *c);
    if (c && pthread_mutex_init(&c->mu, NULL) != 0) {
        imgd_free(c);
        c = NULL;
    }
    return c;
}

/* ---- loading -------------------------------------------------------------------------- */

static const char HOWTO[] = "put the Hugging Face CLIPTokenizer files vocab.json and merges.txt "
                            "there (the tokenizer/ folder of a diffusers model)";

static imgd_status read_tok_file(const char *dir, const char *name, char **buf, size_t *len) {
    char *path = imgd_path_join(dir, name);
    if (!path) return imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory");
    imgd_status st;
    if (!imgd_path_is_file(path)) {
        st = imgd_fail(IMGD_E_IO, "tokenizer folder '%s' has no %s: %s", dir, name, HOWTO);
    } else {
        st = imgd_file_read_all(path, FILE_BYTES_MAX, buf, len);
        if (st != IMGD_OK) st = imgd_fail_prefix(st, "tokenizer %s", name);
    }
    imgd_free(path);
    return st;
}

/* Looks a token up: vocab.json's by hash, added ones (few: textual-inversion words) by
 * scanning. */
static bool vocab_id(const imgd_clip_tok *t, const char *s, int32_t *id) {
    size_t v;
    if (imgd_strmap_get(&t->vocab, s, &v)) {
        *id = (int32_t)v;
        return true;
    }
    for (size_t i = t->n_base; i < t->n_vocab; i++) {
        if (strcmp(t->tok[i], s) == 0) {
            *id = (int32_t)i;
            return true;
        }
    }
    return false;
}

/* vocab.json text buf[0..len); `where` names the source in messages. */
static imgd_status load_vocab(imgd_clip_tok *t, const char *where, const char *buf, size_t len) {
    cJSON      *root = NULL;
    imgd_status st   = imgd_json_parse("vocab.json", buf, len, FILE_BYTES_MAX, 8, &root);
    if (st != IMGD_OK) {
        st = imgd_fail_prefix(st, "%s", where);
        goto done;
    }
    if (!cJSON_IsObject(root) || !root->child) {
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: vocab.json is not a non-empty JSON object of "
                       "token -> id; %s",
                       where, HOWTO);
        goto done;
    }
    size_t n = 0, bytes = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        n++;
        bytes += strlen(it->string) + 1;
    }
    if (n > VOCAB_MAX) {
        st = imgd_fail(IMGD_E_TOO_LARGE, "%s: vocab.json has %zu tokens (at most %u)", where, n,
                       VOCAB_MAX);
        goto done;
    }
    t->blob      = imgd_malloc(bytes);
    t->tok_alloc = n + 16;
    t->tok       = imgd_calloc(t->tok_alloc, sizeof *t->tok);
    if (!t->blob || !t->tok) {
        st = imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory loading vocab.json");
        goto done;
    }
    char *p = t->blob;
    for (const cJSON *it = root->child; it; it = it->next) {
        double d = it->valuedouble;
        if (!cJSON_IsNumber(it) || !(d >= 0 && d < (double)n) || d != (double)(int64_t)d) {
            st = imgd_fail(IMGD_E_FORMAT,
                           "%s: vocab.json token '%s' has id %s; ids must be "
                           "the integers 0..%zu, each used once",
                           where, it->string, cJSON_IsNumber(it) ? "out of range" : "not a number",
                           n - 1);
            goto done;
        }
        size_t id = (size_t)d;
        if (t->tok[id]) {
            st = imgd_fail(IMGD_E_FORMAT, "%s: vocab.json uses id %zu twice ('%s' and '%s')", where,
                           id, t->tok[id], it->string);
            goto done;
        }
        size_t k = strlen(it->string) + 1;
        memcpy(p, it->string, k);
        t->tok[id] = p;
        p += k;
        st = imgd_strmap_put(&t->vocab, t->tok[id], id, NULL);
        if (st == IMGD_E_INVALID_ARG) {
            st = imgd_fail(IMGD_E_FORMAT, "%s: vocab.json lists token '%s' twice", where,
                           it->string);
        }
        if (st != IMGD_OK) goto done;
    }
    t->n_base = t->n_vocab = n;
done:
    cJSON_Delete(root);
    return st;
}

/* The byte-level symbols and the special tokens every CLIP vocabulary has. */
static imgd_status load_symbols(imgd_clip_tok *t, const char *where) {
    int32_t map[256];
    bytes_to_unicode(map);
    for (int b = 0; b < 256; b++) {
        char   s[16];
        size_t k = u8_put(map[b], (uint8_t *)s);
        memcpy(s + k, "</w>", 5);
        bool ok = vocab_id(t, s, &t->byte_end_id[b]);
        s[k]    = '\0';
        ok      = ok && vocab_id(t, s, &t->byte_id[b]);
        if (!ok) {
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: vocab.json lacks the byte-level token '%s' "
                             "(byte 0x%02x) or its '</w>' form: not a CLIP BPE vocabulary; %s",
                             where, s, b, HOWTO);
        }
    }
    if (!vocab_id(t, SOT, &t->bos) || !vocab_id(t, EOT, &t->eos)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: vocab.json lacks '%s' or '%s': not a CLIP "
                         "vocabulary; %s",
                         where, SOT, EOT, HOWTO);
    }
    return IMGD_OK;
}

static bool merges_space(char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F);
}

/* Splits the NUL-terminated line s into exactly two whitespace-separated fields (written
 * in place); false for any other number of fields. */
static bool split_merge(char *s, char **a, char **b) {
    char *f[3];
    int   nf = 0;
    while (*s && nf < 3) {
        while (merges_space(*s)) s++;
        if (!*s) break;
        f[nf++] = s;
        while (*s && !merges_space(*s)) s++;
        if (*s) *s++ = '\0';
    }
    if (nf != 2) return false;
    *a = f[0];
    *b = f[1];
    return true;
}

/* Adds merge `a b` of the given rank. A merge whose parts are not tokens can never apply
 * (transformers keeps it, unused); its result must be a token. */
static imgd_status add_merge(imgd_clip_tok *t, const char *where, char *joined, size_t rank,
                             const char *a, const char *b) {
    int32_t ia, ib, io;
    if (!vocab_id(t, a, &ia) || !vocab_id(t, b, &ib)) return IMGD_OK;
    size_t la = strlen(a), lb = strlen(b);
    memcpy(joined, a, la);
    memcpy(joined + la, b, lb + 1);
    if (!vocab_id(t, joined, &io)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: merges.txt merge %zu ('%s %s') makes '%s', "
                         "which vocab.json lacks (files from different tokenizers?); %s",
                         where, rank + 1, a, b, joined, HOWTO);
    }
    pair_put(t, ia, ib, (int32_t)rank, io);
    return IMGD_OK;
}

/* merges.txt text buf[0..len), modified in place; buf[len] must be writable. */
static imgd_status load_merges(imgd_clip_tok *t, const char *where, char *buf, size_t len) {
    char       *joined = NULL;
    imgd_status st     = IMGD_OK;
    size_t      cap    = 1; /* table for MERGES_MAX pairs at <= 50% load */
    while (cap < 2 * (size_t)MERGES_MAX) cap *= 2;
    t->pair_key  = imgd_malloc(cap * sizeof *t->pair_key);
    t->pair_rank = imgd_malloc(cap * sizeof *t->pair_rank);
    t->pair_out  = imgd_malloc(cap * sizeof *t->pair_out);
    joined       = imgd_malloc(len + 1);
    if (!t->pair_key || !t->pair_rank || !t->pair_out || !joined) {
        st = imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory loading merges.txt");
        goto done;
    }
    memset(t->pair_key, 0xFF, cap * sizeof *t->pair_key);
    t->pair_mask = cap - 1;

    /* Python: read().strip().split("\n")[1 : 48895] */
    char *s = buf, *end = buf + len;
    while (s < end && merges_space(*s)) s++;
    while (end > s && merges_space(end[-1])) end--;
    *end        = '\n';
    char *e     = memchr(s, '\n', (size_t)(end - s) + 1);
    s           = e + 1; /* the "#version" header line */
    size_t rank = 0;
    while (s <= end && rank < MERGES_MAX) {
        e  = memchr(s, '\n', (size_t)(end - s) + 1);
        *e = '\0';
        char *a, *b;
        if (split_merge(s, &a, &b)) st = add_merge(t, where, joined, rank, a, b);
        if (st != IMGD_OK) goto done;
        rank++;
        s = e + 1;
    }
    bool any = false;
    for (size_t j = 0; j <= t->pair_mask && !any; j++) any = t->pair_key[j] != PAIR_EMPTY;
    if (!any) {
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: merges.txt has no usable merge (expected a '#version' line, then "
                       "one 'left right' pair per line); %s",
                       where, HOWTO);
    }
done:
    imgd_free(joined);
    return st;
}

/* The content of a transformers token entry: "tok" or {"content": "tok", ...}; NULL. */
static const char *token_content(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* Optional tokenizer_config.json (else special_tokens_map.json): its added tokens become
 * special tokens and pad_token sets the pad id (SDXL's tokenizer_2: "!" = 0). */
static imgd_status load_config(imgd_clip_tok *t, const char *dir) {
    static const char *const names[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (size_t f = 0; f < IMGD_ARRAY_LEN(names); f++) {
        char *path = imgd_path_join(dir, names[f]);
        if (!path) return imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory");
        bool here = imgd_path_is_file(path);
        imgd_free(path);
        if (!here) continue;
        char       *buf = NULL;
        size_t      len = 0;
        cJSON      *js  = NULL;
        imgd_status st  = read_tok_file(dir, names[f], &buf, &len);
        if (st == IMGD_OK) st = imgd_json_parse(names[f], buf, len, FILE_BYTES_MAX, 16, &js);
        imgd_free(buf);
        if (st == IMGD_OK && !cJSON_IsObject(js)) {
            st = imgd_fail(IMGD_E_FORMAT, "tokenizer folder '%s': %s is not a JSON object", dir,
                           names[f]);
        }
        const cJSON *added = cJSON_GetObjectItemCaseSensitive(js, "added_tokens_decoder");
        for (const cJSON *e = added ? added->child : NULL; st == IMGD_OK && e; e = e->next) {
            const char *c = token_content(e);
            if (c) st = imgd_clip_tok_add_special(t, c, NULL);
        }
        const char *pad = token_content(cJSON_GetObjectItemCaseSensitive(js, "pad_token"));
        if (st == IMGD_OK && pad) st = imgd_clip_tok_add_special(t, pad, &t->pad);
        cJSON_Delete(js);
        if (st != IMGD_OK) return imgd_fail_prefix(st, "tokenizer folder '%s': %s", dir, names[f]);
        break;
    }
    return IMGD_OK;
}

/* Builds a tokenizer from the two files' text (merges is modified; merges[mlen] writable). */
static imgd_status load_common(const char *where, const char *vocab, size_t vlen, char *merges,
                               size_t mlen, imgd_clip_tok **out) {
    imgd_clip_tok *t = imgd_calloc(1, sizeof *t);
    if (!t) return imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory");
    imgd_strmap_init(&t->vocab);
    imgd_status st = load_vocab(t, where, vocab, vlen);
    if (st == IMGD_OK) st = load_symbols(t, where);
    if (st == IMGD_OK) st = load_merges(t, where, merges, mlen);
    if (st == IMGD_OK) {
        t->pad = t->eos;
        st     = imgd_clip_tok_add_special(t, SOT, NULL);
        if (st == IMGD_OK) st = imgd_clip_tok_add_special(t, EOT, NULL);
    }
    if (st == IMGD_OK) t->cache = cache_new(); /* NULL (out of memory): no cache */
    if (st != IMGD_OK) {
        imgd_clip_tok_free(t);
        return st;
    }
    *out = t;
    return IMGD_OK;
}

imgd_status imgd_clip_tok_load(const char *dir, imgd_clip_tok **out) {
    if (!dir || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_tok_load: NULL argument");
    if (!imgd_path_is_dir(dir)) {
        return imgd_fail(IMGD_E_IO, "tokenizer folder '%s' does not exist or is not a folder: %s",
                         dir, HOWTO);
    }
    char          *where = NULL, *vocab = NULL, *merges = NULL;
    size_t         vlen = 0, mlen = 0, wlen = strlen(dir) + 32;
    imgd_clip_tok *t  = NULL;
    imgd_status    st = read_tok_file(dir, "vocab.json", &vocab, &vlen);
    if (st == IMGD_OK) st = read_tok_file(dir, "merges.txt", &merges, &mlen);
    if (st == IMGD_OK) {
        where = imgd_malloc(wlen);
        st    = where ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory");
    }
    if (st == IMGD_OK) {
        (void)imgd_fmt(where, wlen, "tokenizer folder '%s'", dir); /* sized to fit */
        /* imgd_file_read_all NUL-terminates: merges[mlen] is writable */
        st = load_common(where, vocab, vlen, merges, mlen, &t);
    }
    if (st == IMGD_OK) st = load_config(t, dir);
    imgd_free(where);
    imgd_free(vocab);
    imgd_free(merges);
    if (st != IMGD_OK) {
        imgd_clip_tok_free(t);
        return st;
    }
    *out = t;
    return IMGD_OK;
}

imgd_status imgd_clip_tok_load_mem(const char *vocab_json, size_t vocab_len, const char *merges_txt,
                                   size_t merges_len, imgd_clip_tok **out) {
    if (!vocab_json || !merges_txt || !out) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_tok_load_mem: NULL argument");
    }
    if (vocab_len > FILE_BYTES_MAX || merges_len > FILE_BYTES_MAX) {
        return imgd_fail(IMGD_E_TOO_LARGE, "tokenizer: vocab.json or merges.txt over %u bytes",
                         FILE_BYTES_MAX);
    }
    char *m = imgd_malloc(merges_len + 1);
    if (!m) return imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory");
    memcpy(m, merges_txt, merges_len);
    m[merges_len] = '\0';
    imgd_status st =
        load_common("tokenizer (in memory)", vocab_json, vocab_len, m, merges_len, out);
    imgd_free(m);
    return st;
}

void imgd_clip_tok_free(imgd_clip_tok *t) {
    if (!t) return;
    cache_free(t->cache);
    for (size_t i = t->n_base; i < t->n_vocab; i++) imgd_free(t->tok[i]);
    imgd_free(t->tok);
    imgd_free(t->added_special);
    imgd_free(t->split);
    imgd_free(t->blob);
    imgd_strmap_free(&t->vocab);
    imgd_free(t->pair_key);
    imgd_free(t->pair_rank);
    imgd_free(t->pair_out);
    imgd_free(t);
}

/* ---- BPE ------------------------------------------------------------------------------ */

static void heap_push(uint64_t *h, size_t *n, uint64_t x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= x) break;
        h[i] = h[p];
        i    = p;
    }
    h[i] = x;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], x = h[--(*n)];
    size_t   i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (x <= h[c]) break;
        h[i] = h[c];
        i    = c;
    }
    if (*n) h[i] = x;
    return top;
}

/* Pushes the candidate merge of symbols at positions i and nx[i], if there is one. */
static void push_pair(const imgd_clip_tok *t, const int32_t *id, const int32_t *nx, int32_t i,
                      uint64_t *h, size_t *hn) {
    if (i < 0 || nx[i] < 0) return;
    int32_t out;
    int32_t r = pair_find(t, id[i], id[nx[i]], &out);
    if (r >= 0) heap_push(h, hn, ((uint64_t)(uint32_t)r << 32) | (uint32_t)i);
}

/* BPE of one pre-token (its UTF-8 bytes w[0..m), m >= 1), appended to sc->out. Same result
 * as transformers' loop: take the lowest-ranked adjacent pair, merge every non-overlapping
 * occurrence left to right, repeat. Positions keep the index of the left symbol, so heap
 * order (rank, position) is that left-to-right order within one rank. */
static imgd_status bpe_compute(const imgd_clip_tok *t, scratch *sc, const uint8_t *w, size_t m) {
    imgd_status st = grow_buf((void **)&sc->sym, &sc->sym_cap, 3 * m, sizeof *sc->sym);
    if (st == IMGD_OK) st = grow_buf((void **)&sc->heap, &sc->heap_cap, 3 * m, sizeof *sc->heap);
    if (st != IMGD_OK) return st;
    int32_t *id = sc->sym, *pv = sc->sym + m, *nx = sc->sym + 2 * m;
    for (size_t i = 0; i < m; i++) {
        id[i] = i + 1 < m ? t->byte_id[w[i]] : t->byte_end_id[w[i]];
        pv[i] = (int32_t)i - 1;
        nx[i] = i + 1 < m ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < m; i++) push_pair(t, id, nx, (int32_t)i, sc->heap, &hn);
    while (hn > 0) {
        /* Every queued entry of this rank is the same bigram; take them in position order.
         * Pairs created meanwhile have other ranks and wait for the next round. */
        uint32_t rank = (uint32_t)(sc->heap[0] >> 32);
        while (hn > 0 && (uint32_t)(sc->heap[0] >> 32) == rank) {
            int32_t p = (int32_t)(uint32_t)heap_pop(sc->heap, &hn);
            int32_t q = nx[p];
            int32_t merged;
            if (id[p] < 0 || q < 0 || pair_find(t, id[p], id[q], &merged) != (int32_t)rank) {
                continue; /* stale: a symbol changed since it was queued */
            }
            id[p] = merged;
            id[q] = -1;
            nx[p] = nx[q];
            if (nx[q] >= 0) pv[nx[q]] = p;
            /* A new pair can never have this rank (its symbols differ from the bigram's),
             * so pushing inside the loop does not disturb the round. */
            push_pair(t, id, nx, pv[p], sc->heap, &hn);
            push_pair(t, id, nx, p, sc->heap, &hn);
        }
    }
    for (int32_t i = 0; i >= 0; i = nx[i]) {
        st = ivec_push(&sc->out, id[i]);
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

static imgd_status bpe_word(const imgd_clip_tok *t, scratch *sc, const uint8_t *w, size_t m) {
    /* transformers' bpe cache starts with the two special tokens */
    if (m == sizeof SOT - 1 && memcmp(w, SOT, m) == 0) return ivec_push(&sc->out, t->bos);
    if (m == sizeof EOT - 1 && memcmp(w, EOT, m) == 0) return ivec_push(&sc->out, t->eos);
    if (m == 1) return ivec_push(&sc->out, t->byte_end_id[w[0]]);
    word_cache *c = m <= CACHE_WORD_MAX ? t->cache : NULL;
    uint64_t    h = 0;
    imgd_status st;
    if (c) {
        h = bytes_hash(w, m);
        pthread_mutex_lock(&c->mu);
        const cache_slot *e = cache_get(c, w, m, h);
        st                  = e ? ivec_append(&sc->out, e->ids, e->n) : IMGD_OK;
        pthread_mutex_unlock(&c->mu);
        if (e) return st;
    }
    size_t start = sc->out.n;
    st           = bpe_compute(t, sc, w, m);
    if (st != IMGD_OK || !c) return st;
    pthread_mutex_lock(&c->mu);
    if (!cache_get(c, w, m, h)) cache_put(c, w, m, h, sc->out.v + start, sc->out.n - start);
    pthread_mutex_unlock(&c->mu);
    return IMGD_OK;
}

/* ---- pre-tokenization ----------------------------------------------------------------- */

/* Length of the case-insensitive match of ASCII literal lit at s[0..n) (the CLIP regex has
 * IGNORECASE; in lowercased text only U+017F LONG S also folds, to 's'), or 0. */
static size_t match_lit(const int32_t *s, size_t n, const char *lit) {
    size_t k = 0;
    for (; lit[k]; k++) {
        if (k >= n) return 0;
        int32_t c = s[k];
        if (c == 0x17F) c = 's';
        if (c < 0x80) c = ascii_lower(c);
        if (c != lit[k]) return 0;
    }
    return k;
}

/* Length of the contraction alternative ('s 't 're 've 'm 'll 'd) at s, or 0. */
static size_t match_contraction(const int32_t *s, size_t n) {
    static const char *const alts[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    if (n < 2 || s[0] != '\'') return 0;
    for (size_t i = 0; i < IMGD_ARRAY_LEN(alts); i++) {
        size_t k = match_lit(s, n, alts[i]);
        if (k) return k;
    }
    return 0;
}

/* U+0345 COMBINING GREEK YPOGEGRAMMENI: under IGNORECASE it case-folds to a letter, so the
 * regex's [^\s\p{L}\p{N}] refuses it while [\p{L}] does not take it either: no alternative
 * matches it and findall skips it, like whitespace. */
static bool regex_skips(int32_t c) {
    return c == 0x345 || py_space(c);
}

static imgd_status emit_token(const imgd_clip_tok *t, scratch *sc, const int32_t *s, size_t n) {
    imgd_status st = grow_buf((void **)&sc->u8, &sc->u8_cap, 4 * n, 1);
    if (st != IMGD_OK) return st;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += u8_put(s[i], sc->u8 + m);
    return bpe_word(t, sc, sc->u8, m);
}

/* The CLIP regex over one lowercased piece (no whitespace inside), BPE for each match. */
static imgd_status regex_piece(const imgd_clip_tok *t, scratch *sc, const int32_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t k = 0;
        if (s[i] == '<') {
            k = match_lit(s + i, n - i, SOT);
            if (!k) k = match_lit(s + i, n - i, EOT);
        } else if (s[i] == '\'') {
            k = match_contraction(s + i, n - i);
        }
        if (!k) {
            if (regex_skips(s[i])) {
                i++;
                continue;
            }
            if (is_letter(s[i])) {
                while (i + k < n && is_letter(s[i + k])) k++;
            } else if (is_number(s[i])) {
                k = 1;
            } else {
                while (i + k < n && !is_letter(s[i + k]) && !is_number(s[i + k]) &&
                       !regex_skips(s[i + k])) {
                    k++;
                }
            }
        }
        imgd_status st = emit_token(t, sc, s + i, k);
        if (st != IMGD_OK) return st;
        i += k;
    }
    return IMGD_OK;
}

/* Python str.lower() of s[0..n) into sc->low; returns the length. */
static imgd_status lower_piece(scratch *sc, const int32_t *s, size_t n, size_t *out_n) {
    imgd_status st = grow_buf((void **)&sc->low, &sc->low_cap, 2 * n + 1, sizeof *sc->low);
    if (st != IMGD_OK) return st;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = s[i];
        if (c < 0x80) {
            sc->low[k++] = ascii_lower(c);
        } else if (c == 0x130) { /* SpecialCasing: İ -> i + COMBINING DOT ABOVE */
            sc->low[k++] = 'i';
            sc->low[k++] = 0x307;
        } else if (c == 0x3A3) {
            sc->low[k++] = lower_sigma(s, n, i);
        } else {
            sc->low[k++] = utf8proc_tolower(c);
        }
    }
    *out_n = k;
    return IMGD_OK;
}

/* NFC of sc->cp[0..n) into sc->nfc (via utf8proc); returns the length. */
static imgd_status nfc(scratch *sc, size_t n, size_t *out_n) {
    size_t need;
    if (!imgd_size_mul(n, 4, &need)) return imgd_fail(IMGD_E_NOMEM, "tokenizer: size overflow");
    imgd_status st = grow_buf((void **)&sc->u8, &sc->u8_cap, need + 1, 1);
    if (st != IMGD_OK) return st;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += u8_put(sc->cp[i], sc->u8 + m);
    const utf8proc_option_t opt = (utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    utf8proc_ssize_t        r   = utf8proc_decompose(sc->u8, (utf8proc_ssize_t)m, NULL, 0, opt);
    if (r < 0) return imgd_fail(IMGD_E_INTERNAL, "tokenizer: NFC: %s", utf8proc_errmsg(r));
    st = grow_buf((void **)&sc->nfc, &sc->nfc_cap, (size_t)r + 1, sizeof *sc->nfc);
    if (st != IMGD_OK) return st;
    r = utf8proc_decompose(sc->u8, (utf8proc_ssize_t)m, sc->nfc, r, opt);
    if (r >= 0) r = utf8proc_normalize_utf32(sc->nfc, r, opt);
    if (r < 0) return imgd_fail(IMGD_E_INTERNAL, "tokenizer: NFC: %s", utf8proc_errmsg(r));
    *out_n = (size_t)r;
    return IMGD_OK;
}

/* One stretch of text between special/added tokens: transformers' BasicTokenizer cleanup
 * (controls dropped, whitespace to ' ', CJK spaced, NFC, split, lowercase), then the regex
 * and BPE. s[0..n) is well-formed UTF-8. */
static imgd_status encode_segment(const imgd_clip_tok *t, scratch *sc, const uint8_t *s, size_t n) {
    size_t need;
    if (!imgd_size_mul(n, 3, &need)) return imgd_fail(IMGD_E_NOMEM, "tokenizer: size overflow");
    imgd_status st = grow_buf((void **)&sc->cp, &sc->cp_cap, need + 1, sizeof *sc->cp);
    if (st != IMGD_OK) return st;
    size_t k        = 0;
    bool   composed = true; /* below U+0300 everything is already NFC */
    for (size_t i = 0; i < n;) {
        int32_t c = u8_next(s, &i);
        if (c == 0 || c == 0xFFFD || bert_control(c)) continue;
        if (bert_space(c)) {
            sc->cp[k++] = ' ';
        } else if (cjk(c)) {
            sc->cp[k++] = ' ';
            sc->cp[k++] = c;
            sc->cp[k++] = ' ';
            composed    = false;
        } else {
            sc->cp[k++] = c;
            if (c >= 0x300) composed = false;
        }
    }
    const int32_t *u  = sc->cp;
    size_t         un = k;
    if (!composed) {
        st = nfc(sc, k, &un);
        if (st != IMGD_OK) return st;
        u = sc->nfc;
    }
    for (size_t i = 0; i < un;) {
        if (py_space(u[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < un && !py_space(u[j])) j++;
        size_t ln;
        st = lower_piece(sc, u + i, j - i, &ln);
        if (st == IMGD_OK) st = regex_piece(t, sc, sc->low, ln);
        if (st != IMGD_OK) return st;
        i = j;
    }
    return IMGD_OK;
}

/* ---- encode --------------------------------------------------------------------------- */

/* Id of the longest special token at s[i..) (exact bytes, anywhere: transformers' trie of
 * added tokens), its byte length in *len; -1 when none. */
static int32_t match_split(const imgd_clip_tok *t, const uint8_t *s, size_t n, size_t i,
                           size_t *len) {
    int32_t best = -1;
    size_t  blen = 0;
    for (size_t k = 0; k < t->n_split; k++) {
        const char *w = t->tok[t->split[k]];
        size_t      m = strlen(w);
        if (m > blen && m <= n - i && memcmp(s + i, w, m) == 0) {
            best = t->split[k];
            blen = m;
        }
    }
    *len = blen;
    return best;
}

/* Id of the longest added token matching s[i..) as a whole word, its byte length in *len;
 * -1 when none. The caller checked that the character before i is not a word character. */
static int32_t match_added(const imgd_clip_tok *t, const uint8_t *s, size_t n, size_t i,
                           size_t *len) {
    int32_t best = -1;
    size_t  blen = 0;
    for (size_t id = t->n_base; id < t->n_vocab; id++) {
        if (t->added_special[id - t->n_base]) continue;
        const uint8_t *w = (const uint8_t *)t->tok[id];
        size_t         k = 0;
        while (w[k] && i + k < n && ascii_lower(w[k]) == ascii_lower(s[i + k])) k++;
        if (w[k] || k <= blen) continue;
        if (i + k < n) {
            size_t j = i + k;
            if (word_char(u8_next(s, &j))) continue;
        }
        best = (int32_t)id;
        blen = k;
    }
    *len = blen;
    return best;
}

static void scratch_free(scratch *sc) {
    imgd_free(sc->cp);
    imgd_free(sc->nfc);
    imgd_free(sc->u8);
    imgd_free(sc->low);
    imgd_free(sc->sym);
    imgd_free(sc->heap);
    imgd_free(sc->out.v);
}

imgd_status imgd_clip_tok_encode(const imgd_clip_tok *t, const char *text, int32_t **ids,
                                 size_t *n) {
    if (!t || !text || !ids || !n) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_tok_encode: NULL argument");
    }
    size_t len = strnlen(text, (size_t)IMGD_CLIP_TOK_TEXT_MAX + 1);
    if (len > IMGD_CLIP_TOK_TEXT_MAX) {
        return imgd_fail(IMGD_E_TOO_LARGE, "prompt text is longer than %u bytes",
                         IMGD_CLIP_TOK_TEXT_MAX);
    }
    const uint8_t *s   = (const uint8_t *)text;
    size_t         bad = u8_bad_at(s, len);
    if (bad < len) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "prompt text is not valid UTF-8 at byte %zu (0x%02x); send UTF-8", bad,
                         s[bad]);
    }
    scratch     sc         = {0};
    imgd_status st         = ivec_push(&sc.out, 0); /* never hand back NULL */
    size_t      seg        = 0;
    bool        after_word = false; /* the character before i is a word character */
    sc.out.n               = 0;
    bool has_added         = t->n_vocab > t->n_base;
    for (size_t i = 0; st == IMGD_OK && i < len;) {
        size_t  k  = 0;
        int32_t id = t->split_first[s[i]] ? match_split(t, s, len, i, &k) : -1;
        if (id < 0 && has_added && !after_word) id = match_added(t, s, len, i, &k);
        if (id >= 0) {
            if (i > seg) st = encode_segment(t, &sc, s + seg, i - seg);
            if (st == IMGD_OK) st = ivec_push(&sc.out, id);
            i += k;
            seg        = i;
            after_word = word_char(u8_prev(s, i));
            continue;
        }
        after_word = word_char(u8_next(s, &i));
    }
    if (st == IMGD_OK && len > seg) st = encode_segment(t, &sc, s + seg, len - seg);
    if (st == IMGD_OK) {
        *ids     = sc.out.v;
        *n       = sc.out.n;
        sc.out.v = NULL;
    }
    scratch_free(&sc);
    return st;
}

/* ---- getters -------------------------------------------------------------------------- */

int32_t imgd_clip_tok_bos(const imgd_clip_tok *t) {
    return t->bos;
}

int32_t imgd_clip_tok_eos(const imgd_clip_tok *t) {
    return t->eos;
}

int32_t imgd_clip_tok_pad(const imgd_clip_tok *t) {
    return t->pad;
}

size_t imgd_clip_tok_vocab_size(const imgd_clip_tok *t) {
    return t->n_vocab;
}

const char *imgd_clip_tok_token(const imgd_clip_tok *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_vocab ? t->tok[id] : NULL;
}

bool imgd_clip_tok_lookup(const imgd_clip_tok *t, const char *token, int32_t *id) {
    return token && vocab_id(t, token, id);
}

bool imgd_clip_tok_is_added(const imgd_clip_tok *t, int32_t id) {
    return id >= 0 && (size_t)id >= t->n_base && (size_t)id < t->n_vocab &&
           !t->added_special[(size_t)id - t->n_base];
}

/* ---- added tokens --------------------------------------------------------------------- */

static imgd_status check_word(const imgd_clip_tok *t, const char *word) {
    size_t n = strnlen(word, IMGD_CLIP_TOK_WORD_MAX + 1);
    if (n == 0 || n > IMGD_CLIP_TOK_WORD_MAX) {
        return imgd_fail(IMGD_E_INVALID_ARG, "added token must be 1..%u bytes, got %s%zu",
                         IMGD_CLIP_TOK_WORD_MAX, n > IMGD_CLIP_TOK_WORD_MAX ? "over " : "", n);
    }
    const uint8_t *s = (const uint8_t *)word;
    if (u8_bad_at(s, n) < n) {
        return imgd_fail(IMGD_E_INVALID_ARG, "added token '%s' is not valid UTF-8", word);
    }
    for (size_t i = 0; i < n;) {
        int32_t c = u8_next(s, &i);
        if (py_space(c) || bert_control(c)) {
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "added token '%s' contains whitespace or a control character "
                             "(U+%04X); trigger words are single words",
                             word, (unsigned)c);
        }
    }
    int32_t id;
    if (vocab_id(t, word, &id)) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "token '%s' is already in the vocabulary (id %d); choose another "
                         "trigger word",
                         word, id);
    }
    return IMGD_OK;
}

/* Appends token w (copied) as a new id; special: matched anywhere instead of as a word. */
static imgd_status append_token(imgd_clip_tok *t, const char *word, bool special, int32_t *id) {
    if (t->n_vocab >= VOCAB_MAX) {
        return imgd_fail(IMGD_E_TOO_LARGE, "tokenizer: vocabulary full (%u ids)", VOCAB_MAX);
    }
    size_t      k  = t->n_vocab - t->n_base;
    imgd_status st = grow_buf((void **)&t->tok, &t->tok_alloc, t->n_vocab + 1, sizeof *t->tok);
    if (st == IMGD_OK) {
        st = grow_buf((void **)&t->added_special, &t->added_special_cap, k + 1,
                      sizeof *t->added_special);
    }
    if (st != IMGD_OK) return st;
    char *w = imgd_strdup(word);
    if (!w) return imgd_fail(IMGD_E_NOMEM, "tokenizer: out of memory adding '%s'", word);
    t->tok[t->n_vocab]  = w;
    t->added_special[k] = special;
    if (id) *id = (int32_t)t->n_vocab;
    t->n_vocab++;
    return IMGD_OK;
}

imgd_status imgd_clip_tok_add_token(imgd_clip_tok *t, const char *word, int32_t *id) {
    if (!t || !word) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_tok_add_token: NULL argument");
    imgd_status st = check_word(t, word);
    return st == IMGD_OK ? append_token(t, word, false, id) : st;
}

imgd_status imgd_clip_tok_add_special(imgd_clip_tok *t, const char *token, int32_t *id) {
    if (!t || !token) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_tok_add_special: NULL argument");
    }
    size_t n = strnlen(token, IMGD_CLIP_TOK_WORD_MAX + 1);
    if (n == 0 || n > IMGD_CLIP_TOK_WORD_MAX || u8_bad_at((const uint8_t *)token, n) < n) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "special token must be 1..%u bytes of UTF-8 (got %zu bytes)",
                         IMGD_CLIP_TOK_WORD_MAX, n);
    }
    int32_t x;
    bool    known = vocab_id(t, token, &x);
    for (size_t k = 0; known && k < t->n_split; k++) {
        if (t->split[k] == x) {
            if (id) *id = x;
            return IMGD_OK;
        }
    }
    imgd_status st = grow_buf((void **)&t->split, &t->split_cap, t->n_split + 1, sizeof *t->split);
    if (st == IMGD_OK && !known) st = append_token(t, token, true, &x);
    if (st != IMGD_OK) return st;
    if ((size_t)x >= t->n_base) t->added_special[(size_t)x - t->n_base] = 1;
    t->split[t->n_split++]            = x;
    t->split_first[(uint8_t)token[0]] = 1;
    if (id) *id = x;
    return IMGD_OK;
}

imgd_status imgd_clip_tok_add_embedding(imgd_clip_tok *t, const char *word, size_t n_vectors,
                                        int32_t *first_id) {
    if (!t || !word) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_tok_add_embedding: NULL argument");
    }
    if (n_vectors == 0 || n_vectors > EMBED_VECTORS_MAX) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "embedding '%s' has %zu vectors; 1..%u fit in a prompt chunk", word,
                         n_vectors, EMBED_VECTORS_MAX);
    }
    /* Check every name first so that a clash adds nothing. */
    char        name[IMGD_CLIP_TOK_WORD_MAX + 32];
    imgd_status st = check_word(t, word);
    for (size_t k = 1; st == IMGD_OK && k < n_vectors; k++) {
        if (!imgd_fmt(name, sizeof name, "%s_%zu", word, k)) {
            st = imgd_fail(IMGD_E_INVALID_ARG, "embedding name '%s' is too long", word);
        } else {
            st = check_word(t, name);
        }
    }
    if (st != IMGD_OK) return st;
    size_t before = t->n_vocab;
    for (size_t k = 0; st == IMGD_OK && k < n_vectors; k++) {
        if (k > 0) (void)imgd_fmt(name, sizeof name, "%s_%zu", word, k); /* fits: checked */
        st = imgd_clip_tok_add_token(t, k == 0 ? word : name, NULL);
    }
    if (st != IMGD_OK) { /* out of memory part way: take back what was added */
        while (t->n_vocab > before) imgd_free(t->tok[--t->n_vocab]);
        return st;
    }
    if (first_id) *first_id = (int32_t)before;
    return IMGD_OK;
}
