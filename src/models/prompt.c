/* A1111 prompt parsing and chunking (see prompt.h). The parser is a hand-written form of
 * A1111's re_attention scanner; each branch names the regex alternative it stands for. */
#include "models/prompt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"

#define WEIGHT_STEPS_MAX (1u << 24) /* multiply_range work before IMGD_E_TOO_LARGE */
#define ROUND_MUL        1.1
#define SQUARE_MUL       (1 / 1.1)

static const char BREAK_WORD[] = "BREAK";

/* ---- Unicode helpers (Python re semantics for str patterns) ---------------------------- */

/* Decodes one code point of well-formed UTF-8 at s[*i], advancing *i. */
static int32_t u8_next(const char *str, size_t *i) {
    const uint8_t *s = (const uint8_t *)str;
    uint32_t       c = s[*i];
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

/* \s: str.isspace() (bidi WS, B, S or category Zs). */
static bool py_space(int32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
    if (utf8proc_category(c) == UTF8PROC_CATEGORY_ZS) return true;
    utf8proc_propval_t b = utf8proc_get_property(c)->bidi_class;
    return b == UTF8PROC_BIDI_CLASS_WS || b == UTF8PROC_BIDI_CLASS_B || b == UTF8PROC_BIDI_CLASS_S;
}

/* \w: letters, numbers, '_'. */
static bool py_word(int32_t c) {
    if (c < 0x80) {
        return c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    }
    utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* \d: value 0..9 of a decimal digit (category Nd, any script), or -1. Unicode encodes
 * decimal digits in complete runs 0..9, so the value is the offset in its run mod 10. */
static int digit_value(int32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9' ? c - '0' : -1;
    if (utf8proc_category(c) != UTF8PROC_CATEGORY_ND) return -1;
    int32_t z = c;
    while (z > 0 && utf8proc_category(z - 1) == UTF8PROC_CATEGORY_ND) z--;
    return (int)((c - z) % 10);
}

/* The character before s[i] is a word character (i > 0; well-formed UTF-8). */
static bool word_before(const char *s, size_t i) {
    size_t j = i - 1;
    while (j > 0 && ((uint8_t)s[j] & 0xC0) == 0x80) j--;
    return py_word(u8_next(s, &j));
}

/* Index after the run of \s at s[j]. */
static size_t skip_space(const char *s, size_t n, size_t j) {
    while (j < n) {
        size_t t = j;
        if (!py_space(u8_next(s, &t))) break;
        j = t;
    }
    return j;
}

/* ---- pieces (A1111's res list) ------------------------------------------------------- */

typedef struct piece {
    const char *s; /* borrowed: the prompt or a static string */
    size_t      n;
    double      w;
} piece;

typedef struct parser {
    piece  *res;
    size_t  n, cap;
    size_t *round, n_round, cap_round; /* A1111's round_brackets: indices into res */
    size_t *square, n_square, cap_square;
    size_t  steps; /* multiply_range work so far */
} parser;

static imgd_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return IMGD_OK;
    size_t n = *cap ? *cap * 2 : 16, bytes;
    if (n < need) n = need;
    if (!imgd_size_mul(n, elem, &bytes)) return imgd_fail(IMGD_E_NOMEM, "prompt: size overflow");
    void *q = imgd_realloc(*p, bytes);
    if (!q) return imgd_fail(IMGD_E_NOMEM, "prompt: out of memory (%zu bytes)", bytes);
    *p   = q;
    *cap = n;
    return IMGD_OK;
}

static imgd_status add_piece(parser *ps, const char *s, size_t n, double w) {
    imgd_status st = grow((void **)&ps->res, &ps->cap, ps->n + 1, sizeof *ps->res);
    if (st != IMGD_OK) return st;
    ps->res[ps->n++] = (piece){s, n, w};
    return IMGD_OK;
}

static imgd_status push_index(size_t **v, size_t *n, size_t *cap, size_t x) {
    imgd_status st = grow((void **)v, cap, *n + 1, sizeof **v);
    if (st != IMGD_OK) return st;
    (*v)[(*n)++] = x;
    return IMGD_OK;
}

/* multiply_range: every piece from start on gets multiplied (A1111 is quadratic here; the
 * step budget keeps a hostile prompt from stalling a worker). */
static imgd_status multiply_range(parser *ps, size_t start, double m) {
    ps->steps += ps->n - start;
    if (ps->steps > WEIGHT_STEPS_MAX) {
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "prompt nests brackets too deeply to weight (over %u steps); remove "
                         "unclosed '(' or '['",
                         WEIGHT_STEPS_MAX);
    }
    for (size_t p = start; p < ps->n; p++) ps->res[p].w *= m;
    return IMGD_OK;
}

/* A text run: re.split(r"\s*\bBREAK\b\s*", text), a ("BREAK", -1) piece between parts. */
static imgd_status add_text(parser *ps, const char *s, size_t n) {
    size_t      pos = 0; /* start of the current part */
    imgd_status st  = IMGD_OK;
    for (size_t k = 0; st == IMGD_OK && k + 5 <= n;) {
        const char *hit = memchr(s + k, 'B', n - k);
        if (!hit) break;
        k = (size_t)(hit - s);
        if (k + 5 > n) break;
        bool ok = memcmp(s + k, BREAK_WORD, 5) == 0 && (k == 0 || !word_before(s, k));
        if (ok && k + 5 < n) {
            size_t j = k + 5;
            ok       = !py_word(u8_next(s, &j));
        }
        if (!ok) {
            k++;
            continue;
        }
        /* the match starts at the whitespace run before BREAK (not before pos) */
        size_t a = k;
        while (a > pos) {
            size_t j = a - 1;
            while (j > pos && ((uint8_t)s[j] & 0xC0) == 0x80) j--;
            size_t t = j;
            if (!py_space(u8_next(s, &t))) break;
            a = j;
        }
        size_t b = skip_space(s, n, k + 5);
        st       = add_piece(ps, s + pos, a - pos, 1.0);
        if (st == IMGD_OK) st = add_piece(ps, BREAK_WORD, 5, -1.0);
        pos = k = b;
    }
    if (st == IMGD_OK) st = add_piece(ps, s + pos, n - pos, 1.0);
    return st;
}

/* Python float() of an ASCII string of digits with at most one '.' (sign handled by the
 * caller); false when float() would raise (no digit, two dots). */
static bool parse_decimal(const char *a, size_t n, double *out) {
    size_t digits = 0, dots = 0, frac = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] == '.') {
            dots++;
        } else {
            digits++;
            frac += dots;
        }
    }
    if (digits == 0 || dots > 1) return false;
    /* <= 15 digits and <= 22 fraction digits: mantissa and 10^frac are exact doubles, so
     * one division rounds correctly, as Python does. */
    size_t sig = 0; /* significant digits: from the first non-zero one */
    for (size_t i = 0; i < n; i++) {
        if (a[i] != '.' && (sig > 0 || a[i] != '0')) sig++;
    }
    if (sig <= 15 && frac <= 22) {
        double m = 0, p = 1;
        for (size_t i = 0; i < n; i++) {
            if (a[i] != '.') m = m * 10 + (a[i] - '0');
        }
        for (size_t i = 0; i < frac; i++) p *= 10;
        *out = m / p;
        return true;
    }
    char  *end = NULL;
    double v   = strtod(a, &end);
    if (end != a + n) return false;
    *out = v;
    return true;
}

/* The alternative :\s*([+-]?[.\d]+)\s*\) at s[i] == ':' : its length, or 0 when it does not
 * match or float() would reject the number (see prompt.h). */
static size_t match_weight(const char *s, size_t n, size_t i, double *w) {
    size_t j   = skip_space(s, n, i + 1), t;
    bool   neg = false;
    if (j < n && (s[j] == '+' || s[j] == '-')) {
        neg = s[j] == '-';
        j++;
    }
    char   num[64];
    size_t k = 0, count = 0;
    bool   long_num = false;
    while (j < n) {
        t         = j;
        int32_t c = u8_next(s, &t);
        int     d = c == '.' ? -2 : digit_value(c);
        if (d == -1) break;
        if (k + 1 < sizeof num) {
            num[k++] = (char)(d == -2 ? '.' : '0' + d);
        } else {
            long_num = true;
        }
        count++;
        j = t;
    }
    if (count == 0) return 0;
    j = skip_space(s, n, j);
    if (j >= n || s[j] != ')') return 0;
    num[k] = '\0';
    double v;
    if (long_num || !parse_decimal(num, k, &v) || !isfinite(v)) return 0;
    *w = neg ? -v : v;
    return j + 1 - i;
}

/* One step of the re_attention scanner at s[*i]. */
static imgd_status parse_step(parser *ps, const char *s, size_t n, size_t *i) {
    char   c = s[*i];
    double w;
    size_t k;
    if (c == '\\') { /* \\\( \\\) \\\[ \\] \\\\ and a lone \\ */
        bool esc = *i + 1 < n && strchr("()[]\\", s[*i + 1]) != NULL;
        *i += esc ? 2 : 1;
        return add_piece(ps, s + *i - 1, esc ? 1 : 0, 1.0);
    }
    if (c == '(') {
        (*i)++;
        return push_index(&ps->round, &ps->n_round, &ps->cap_round, ps->n);
    }
    if (c == '[') {
        (*i)++;
        return push_index(&ps->square, &ps->n_square, &ps->cap_square, ps->n);
    }
    if (c == ':' && (k = match_weight(s, n, *i, &w)) > 0) {
        size_t at = *i;
        *i += k;
        if (ps->n_round) return multiply_range(ps, ps->round[--ps->n_round], w);
        return add_text(ps, s + at, k); /* no '(' open: the whole match is text */
    }
    if (c == ')' && ps->n_round) {
        (*i)++;
        return multiply_range(ps, ps->round[--ps->n_round], ROUND_MUL);
    }
    if (c == ']' && ps->n_square) {
        (*i)++;
        return multiply_range(ps, ps->square[--ps->n_square], SQUARE_MUL);
    }
    if (c == ':' || c == ')' || c == ']') {
        (*i)++;
        return add_text(ps, s + *i - 1, 1);
    }
    size_t j = *i; /* [^\\()\[\]:]+ */
    while (j < n && !strchr("\\()[]:", s[j])) j++;
    size_t at = *i;
    *i        = j;
    return add_text(ps, s + at, j - at);
}

/* Merges runs of equal weight into out (texts concatenated into one buffer). */
static imgd_status merge_runs(const parser *ps, imgd_prompt_parsed *out) {
    size_t bytes = 0, groups = 0;
    for (size_t i = 0; i < ps->n; i++) {
        bytes += ps->res[i].n + 1;
        if (i == 0 || ps->res[i].w != ps->res[i - 1].w) groups++;
    }
    out->buf  = imgd_malloc(bytes);
    out->segs = imgd_calloc(groups, sizeof *out->segs);
    if (!out->buf || !out->segs) return imgd_fail(IMGD_E_NOMEM, "prompt: out of memory");
    char  *p = out->buf;
    size_t g = 0;
    for (size_t i = 0; i < ps->n; i++) {
        if (i > 0 && ps->res[i].w == ps->res[i - 1].w) {
            p--; /* continue the previous text: drop its NUL */
        } else {
            out->segs[g++] = (imgd_prompt_seg){p, ps->res[i].w};
        }
        memcpy(p, ps->res[i].s, ps->res[i].n);
        p += ps->res[i].n;
        *p++ = '\0';
    }
    out->n = g;
    return IMGD_OK;
}

imgd_status imgd_prompt_parse(const char *prompt, imgd_prompt_parsed *out) {
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_prompt_parse: NULL argument");
    memset(out, 0, sizeof *out);
    if (!prompt) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_prompt_parse: NULL prompt");
    size_t n = strnlen(prompt, IMGD_PROMPT_BYTES_MAX + 1);
    if (n > IMGD_PROMPT_BYTES_MAX) {
        return imgd_fail(IMGD_E_TOO_LARGE, "prompt is longer than %zu bytes",
                         IMGD_PROMPT_BYTES_MAX);
    }
    if (!imgd_utf8_valid(prompt, n)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "prompt is not valid UTF-8; send UTF-8 text");
    }
    parser      ps = {0};
    imgd_status st = IMGD_OK;
    for (size_t i = 0; st == IMGD_OK && i < n;) st = parse_step(&ps, prompt, n, &i);
    /* unclosed brackets apply to the end, in the order they were opened */
    for (size_t k = 0; st == IMGD_OK && k < ps.n_round; k++) {
        st = multiply_range(&ps, ps.round[k], ROUND_MUL);
    }
    for (size_t k = 0; st == IMGD_OK && k < ps.n_square; k++) {
        st = multiply_range(&ps, ps.square[k], SQUARE_MUL);
    }
    if (st == IMGD_OK && ps.n == 0) st = add_piece(&ps, "", 0, 1.0);
    if (st == IMGD_OK) st = merge_runs(&ps, out);
    imgd_free(ps.res);
    imgd_free(ps.round);
    imgd_free(ps.square);
    if (st != IMGD_OK) imgd_prompt_parsed_free(out);
    return st;
}

void imgd_prompt_parsed_free(imgd_prompt_parsed *p) {
    if (!p) return;
    imgd_free(p->segs);
    imgd_free(p->buf);
    memset(p, 0, sizeof *p);
}

/* ---- chunking (A1111 tokenize_line) ---------------------------------------------------- */

typedef struct chunker {
    int32_t            bos, eos, pad, comma;
    int32_t            backtrack;
    int32_t            cur[IMGD_PROMPT_CHUNK_TOKENS];  /* chunk.tokens */
    float              curw[IMGD_PROMPT_CHUNK_TOKENS]; /* chunk.multipliers */
    size_t             len;
    long               last_comma; /* -1: none */
    imgd_prompt_chunks out;
    size_t             ids_cap, w_cap; /* elements allocated in out.ids / out.weights */
} chunker;

static imgd_status next_chunk(chunker *c, bool is_last) {
    c->out.n_tokens += is_last ? c->len : IMGD_PROMPT_CHUNK_TOKENS;
    size_t rows;
    if (!imgd_size_mul(c->out.n_chunks + 1, IMGD_PROMPT_CHUNK_LEN, &rows)) {
        return imgd_fail(IMGD_E_NOMEM, "prompt: size overflow");
    }
    imgd_status st = grow((void **)&c->out.ids, &c->ids_cap, rows, sizeof *c->out.ids);
    if (st == IMGD_OK) st = grow((void **)&c->out.weights, &c->w_cap, rows, sizeof *c->out.weights);
    if (st != IMGD_OK) return st;
    int32_t *row = c->out.ids + c->out.n_chunks * IMGD_PROMPT_CHUNK_LEN;
    float   *w   = c->out.weights + c->out.n_chunks * IMGD_PROMPT_CHUNK_LEN;
    row[0]       = c->bos;
    w[0]         = 1.0f;
    for (size_t i = 0; i < IMGD_PROMPT_CHUNK_TOKENS; i++) {
        row[1 + i] = i < c->len ? c->cur[i] : c->eos;
        w[1 + i]   = i < c->len ? c->curw[i] : 1.0f;
    }
    row[IMGD_PROMPT_CHUNK_LEN - 1] = c->eos;
    w[IMGD_PROMPT_CHUNK_LEN - 1]   = 1.0f;
    if (c->pad != c->eos) { /* process_tokens: pad everything after the first EOS */
        size_t k = 0;
        while (row[k] != c->eos) k++;
        for (k++; k < IMGD_PROMPT_CHUNK_LEN; k++) row[k] = c->pad;
    }
    c->out.n_chunks++;
    c->len        = 0;
    c->last_comma = -1;
    return IMGD_OK;
}

/* Vector tokens of an added token W: W, W_1, W_2, ... while those are added tokens
 * (diffusers' maybe_convert_prompt). Returns the count, 0 for an ordinary token. */
static imgd_status expand(const imgd_clip_tok *t, int32_t tok, int32_t *ids, size_t *n) {
    *n = 0;
    if (!imgd_clip_tok_is_added(t, tok)) return IMGD_OK;
    const char *word = imgd_clip_tok_token(t, tok);
    char        name[IMGD_CLIP_TOK_WORD_MAX + 32];
    ids[(*n)++] = tok;
    for (;;) {
        int32_t id;
        if (!imgd_fmt(name, sizeof name, "%s_%zu", word, *n) ||
            !imgd_clip_tok_lookup(t, name, &id) || !imgd_clip_tok_is_added(t, id)) {
            return IMGD_OK;
        }
        if (*n == IMGD_PROMPT_CHUNK_TOKENS) {
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "embedding '%s' expands to more than %d tokens (one chunk)", word,
                             IMGD_PROMPT_CHUNK_TOKENS);
        }
        ids[(*n)++] = id;
    }
}

/* The token loop of tokenize_line for one segment. */
static imgd_status chunk_tokens(const imgd_clip_tok *t, chunker *c, const int32_t *toks, size_t n,
                                float weight) {
    int32_t     exp[IMGD_PROMPT_CHUNK_TOKENS];
    imgd_status st = IMGD_OK;
    for (size_t pos = 0; st == IMGD_OK && pos < n; pos++) {
        int32_t tok = toks[pos];
        if (tok == c->comma) {
            c->last_comma = (long)c->len;
        } else if (c->backtrack != 0 && c->len == IMGD_PROMPT_CHUNK_TOKENS && c->last_comma != -1 &&
                   (long)c->len - c->last_comma <= c->backtrack) {
            /* move the tokens after the last comma into the next chunk */
            size_t  at = (size_t)c->last_comma + 1, nr = c->len - at;
            int32_t rt[IMGD_PROMPT_CHUNK_TOKENS];
            float   rw[IMGD_PROMPT_CHUNK_TOKENS];
            memcpy(rt, c->cur + at, nr * sizeof *rt);
            memcpy(rw, c->curw + at, nr * sizeof *rw);
            c->len = at;
            st     = next_chunk(c, false);
            if (st != IMGD_OK) return st;
            memcpy(c->cur, rt, nr * sizeof *rt);
            memcpy(c->curw, rw, nr * sizeof *rw);
            c->len = nr;
        }
        if (c->len == IMGD_PROMPT_CHUNK_TOKENS) st = next_chunk(c, false);
        size_t ne = 0;
        if (st == IMGD_OK) st = expand(t, tok, exp, &ne);
        if (st != IMGD_OK) return st;
        if (ne == 0) {
            c->cur[c->len]    = tok;
            c->curw[c->len++] = weight;
            continue;
        }
        if (c->len + ne > IMGD_PROMPT_CHUNK_TOKENS) st = next_chunk(c, false);
        for (size_t k = 0; st == IMGD_OK && k < ne; k++) {
            c->cur[c->len]    = exp[k];
            c->curw[c->len++] = weight;
        }
    }
    return st;
}

imgd_prompt_opts imgd_prompt_opts_default(void) {
    return (imgd_prompt_opts){
        .pad_id = -1, .comma_backtrack = IMGD_PROMPT_COMMA_BACKTRACK, .no_emphasis = false};
}

imgd_status imgd_prompt_encode_opts(const imgd_clip_tok *t, const char *prompt,
                                    const imgd_prompt_opts *opts, imgd_prompt_chunks *out) {
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_prompt_encode: NULL argument");
    memset(out, 0, sizeof *out);
    if (!t || !prompt) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_prompt_encode: NULL argument");
    imgd_prompt_opts o = opts ? *opts : imgd_prompt_opts_default();
    if (o.pad_id < -1 || (o.pad_id >= 0 && (size_t)o.pad_id >= imgd_clip_tok_vocab_size(t))) {
        return imgd_fail(IMGD_E_INVALID_ARG, "prompt: pad id %d is not a token id (0..%zu, or -1)",
                         o.pad_id, imgd_clip_tok_vocab_size(t) - 1);
    }
    if (o.comma_backtrack < 0 || o.comma_backtrack > IMGD_PROMPT_CHUNK_TOKENS) {
        return imgd_fail(IMGD_E_INVALID_ARG, "prompt: comma_backtrack %d is outside 0..%d",
                         o.comma_backtrack, IMGD_PROMPT_CHUNK_TOKENS);
    }
    chunker *c = imgd_calloc(1, sizeof *c);
    if (!c) return imgd_fail(IMGD_E_NOMEM, "prompt: out of memory");
    c->bos        = imgd_clip_tok_bos(t);
    c->eos        = imgd_clip_tok_eos(t);
    c->pad        = o.pad_id < 0 ? imgd_clip_tok_pad(t) : o.pad_id;
    c->backtrack  = o.comma_backtrack;
    c->last_comma = -1;
    if (!imgd_clip_tok_lookup(t, ",</w>", &c->comma)) c->comma = -1;

    imgd_prompt_parsed ps  = {0};
    int32_t           *ids = NULL;
    size_t             n   = 0;
    imgd_status        st;
    if (o.no_emphasis) {
        size_t len = strnlen(prompt, IMGD_PROMPT_BYTES_MAX + 1);
        st         = len > IMGD_PROMPT_BYTES_MAX
                         ? imgd_fail(IMGD_E_TOO_LARGE, "prompt is longer than %zu bytes",
                                     IMGD_PROMPT_BYTES_MAX)
                         : imgd_clip_tok_encode(t, prompt, &ids, &n);
        if (st == IMGD_OK) st = chunk_tokens(t, c, ids, n, 1.0f);
        imgd_free(ids);
    } else {
        st = imgd_prompt_parse(prompt, &ps);
        for (size_t i = 0; st == IMGD_OK && i < ps.n; i++) {
            const imgd_prompt_seg *sg = &ps.segs[i];
            if (sg->weight == -1.0 && strcmp(sg->text, BREAK_WORD) == 0) {
                st = next_chunk(c, false);
                continue;
            }
            st = imgd_clip_tok_encode(t, sg->text, &ids, &n);
            if (st == IMGD_OK) st = chunk_tokens(t, c, ids, n, (float)sg->weight);
            imgd_free(ids);
            ids = NULL;
        }
    }
    if (st == IMGD_OK && (c->len > 0 || c->out.n_chunks == 0)) st = next_chunk(c, true);
    imgd_prompt_parsed_free(&ps);
    if (st == IMGD_OK) {
        *out = c->out;
    } else {
        imgd_prompt_chunks_free(&c->out);
    }
    imgd_free(c);
    return st;
}

imgd_status imgd_prompt_encode(const imgd_clip_tok *t, const char *prompt, int32_t pad_id,
                               imgd_prompt_chunks *out) {
    imgd_prompt_opts o = imgd_prompt_opts_default();
    o.pad_id           = pad_id;
    return imgd_prompt_encode_opts(t, prompt, &o, out);
}

void imgd_prompt_chunks_free(imgd_prompt_chunks *c) {
    if (!c) return;
    imgd_free(c->ids);
    imgd_free(c->weights);
    memset(c, 0, sizeof *c);
}

/* ---- emphasis ------------------------------------------------------------------------ */

static float mean_of(const float *z, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)z[i];
    return (float)(s / (double)n);
}

void imgd_prompt_apply_weights(float *z, size_t tokens, size_t width, const float *weights) {
    size_t n;
    if (!z || !weights || !imgd_size_mul(tokens, width, &n) || n == 0) return;
    float m0 = mean_of(z, n);
    for (size_t i = 0; i < tokens; i++) {
        for (size_t j = 0; j < width; j++) z[i * width + j] *= weights[i];
    }
    float m1 = mean_of(z, n);
    if (m1 == 0.0f || isinf(m1) || isnan(m1)) return;
    float k = m0 / m1;
    for (size_t i = 0; i < n; i++) z[i] *= k;
}
