/* A1111 prompt parsing, chunking, textual-inversion expansion and emphasis, on the tiny
 * generated tokenizer of tests/tok_fixture.h (every letter its own token; "cat", "dog",
 * "red" one token each). Expected parses are A1111's parse_prompt_attention outputs
 * (printed by Python, so the weights are exact doubles). */
#include "base/alloc.h"
#include "models/prompt.h"
#include "models/tokenizer.h"
#include "test.h"
#include "tok_fixture.h"

static char           g_dir[4096];
static imgd_clip_tok *g_tok; /* NULL when loading failed (under allocation-failure tests) */

#define MAX_SEGS 12

typedef struct parse_case {
    const char *prompt;
    size_t      n;
    struct {
        const char *text;
        double      weight;
    } seg[MAX_SEGS];
} parse_case;

static const parse_case g_parse_cases[] = {
    {"normal text", 1, {{"normal text", 1.0}}},
    {"an (important) word", 3, {{"an ", 1.0}, {"important", 1.1}, {" word", 1.0}}},
    {"(unbalanced)", 1, {{"unbalanced", 1.1}}},
    {"\\(literal\\]", 1, {{"(literal]", 1.0}}},
    {"(unnecessary)(parens)", 1, {{"unnecessaryparens", 1.1}}},
    {"a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     9,
     {{"a ", 1.0},
      {"house", 1.5730000000000004},
      {" ", 1.1},
      {"on", 1.0},
      {" a ", 1.1},
      {"hill", 0.55},
      {", sun, ", 1.1},
      {"sky", 1.4641000000000006},
      {".", 1.1}}},
    {"([a])", 1, {{"a", 1.0}}},
    {"[[a]]", 1, {{"a", 0.8264462809917354}}},
    {"((a))", 1, {{"a", 1.2100000000000002}}},
    {"[a]", 1, {{"a", 0.9090909090909091}}},
    {"(a: 0.5 )", 1, {{"a", 0.5}}},
    {"(a:-1)", 1, {{"a", -1.0}}},
    {"(a:+2)", 1, {{"a", 2.0}}},
    {"(a:.5)", 1, {{"a", 0.5}}},
    {"(a:5.)", 1, {{"a", 5.0}}},
    {"(a:\xEF\xBC\x91.\xEF\xBC\x95)", 1, {{"a", 1.5}}}, /* fullwidth digits: \d and float() */
    {"a:1.5)", 1, {{"a:1.5)", 1.0}}},
    {")))(((", 1, {{")))", 1.0}}},
    {"(a]", 1, {{"a]", 1.1}}},
    {"[a", 1, {{"a", 0.9090909090909091}}},
    {"a\\b", 1, {{"ab", 1.0}}},
    {"\\\\(x)", 2, {{"\\", 1.0}, {"x", 1.1}}},
    {"a BREAK b", 3, {{"a", 1.0}, {"BREAK", -1.0}, {"b", 1.0}}},
    {"aBREAK b", 1, {{"aBREAK b", 1.0}}},
    {"a\nBREAK\tb", 3, {{"a", 1.0}, {"BREAK", -1.0}, {"b", 1.0}}},
    {"BREAK", 3, {{"", 1.0}, {"BREAK", -1.0}, {"", 1.0}}},
    {"(a BREAK b)", 3, {{"a", 1.1}, {"BREAK", -1.1}, {"b", 1.1}}},
    {"a_BREAK", 1, {{"a_BREAK", 1.0}}},
    {"BREAK BREAK", 5, {{"", 1.0}, {"BREAK", -1.0}, {"", 1.0}, {"BREAK", -1.0}, {"", 1.0}}},
    {"a  BREAK  BREAK  b",
     5,
     {{"a", 1.0}, {"BREAK", -1.0}, {"", 1.0}, {"BREAK", -1.0}, {"b", 1.0}}},
    {"[a:b:0.5]", 1, {{"a:b:0.5", 0.9090909090909091}}},
    {"", 1, {{"", 1.0}}},
    {"\\", 1, {{"", 1.0}}},
    {"x\\", 1, {{"x", 1.0}}},
    {"(((", 1, {{"", 1.0}}},
    {"(:1)", 1, {{"", 1.0}}},
    {"(BREAK:-1)", 3, {{"", -1.0}, {"BREAK", 1.0}, {"", -1.0}}},
    {"a BREAK\xC3\xA9", 1, {{"a BREAK\xC3\xA9", 1.0}}}, /* é is a word character */
    {"a\xC3\xA9 BREAK", 3, {{"a\xC3\xA9", 1.0}, {"BREAK", -1.0}, {"", 1.0}}},
    {"(a:1.5) b [c]", 3, {{"a", 1.5}, {" b ", 1.0}, {"c", 0.9090909090909091}}},
    {"(c)at", 2, {{"c", 1.1}, {"at", 1.0}}},
    /* A1111 raises on float("1.2.3"); imgd reads the ':' as text (see prompt.h) */
    {"(a:1.2.3)", 1, {{"a:1.2.3", 1.1}}},
    {"(a:.)", 1, {{"a:.", 1.1}}},
};

static void test_prompt_parse_matches_a1111(void) {
    for (size_t i = 0; i < IMGD_ARRAY_LEN(g_parse_cases); i++) {
        const parse_case  *c = &g_parse_cases[i];
        imgd_prompt_parsed p;
        imgd_status        st = imgd_prompt_parse(c->prompt, &p);
        CHECK_MSG(st == IMGD_OK, "\"%s\": %s", c->prompt, imgd_last_error());
        if (st != IMGD_OK) continue;
        bool ok = p.n == c->n;
        for (size_t k = 0; ok && k < c->n; k++) {
            ok =
                strcmp(p.segs[k].text, c->seg[k].text) == 0 && p.segs[k].weight == c->seg[k].weight;
        }
        if (!ok) {
            fprintf(stderr, "\"%s\" parsed as:", c->prompt);
            for (size_t k = 0; k < p.n; k++) {
                fprintf(stderr, " [\"%s\", %.17g]", p.segs[k].text, p.segs[k].weight);
            }
            fputc('\n', stderr);
        }
        CHECK_MSG(ok, "case %zu", i);
        imgd_prompt_parsed_free(&p);
    }
}

static void test_prompt_parse_rejects_bad_input(void) {
    imgd_prompt_parsed p;
    CHECK_STATUS(imgd_prompt_parse("a \xFF b", &p), IMGD_E_INVALID_ARG);
    CHECK(p.segs == NULL && p.n == 0);
    CHECK_STATUS(imgd_prompt_parse(NULL, &p), IMGD_E_INVALID_ARG);
    /* "(a(a(a..." unclosed: A1111's weighting is quadratic; capped */
    size_t n = (size_t)3 * 6000;
    char  *s = imgd_malloc(n + 1);
    if (!s) return;
    for (size_t i = 0; i < n; i += 3) memcpy(s + i, "(a ", 3);
    s[n] = '\0';
    CHECK_STATUS(imgd_prompt_parse(s, &p), IMGD_E_TOO_LARGE);
    /* many unclosed brackets before the text are cheap and fine */
    memset(s, '(', n - 1);
    s[n - 1] = 'a';
    CHECK_STATUS(imgd_prompt_parse(s, &p), IMGD_OK);
    imgd_prompt_parsed_free(&p);
    imgd_free(s);
    s = imgd_malloc(IMGD_PROMPT_BYTES_MAX + 2);
    if (!s) return;
    memset(s, 'a', IMGD_PROMPT_BYTES_MAX + 1);
    s[IMGD_PROMPT_BYTES_MAX + 1] = '\0';
    CHECK_STATUS(imgd_prompt_parse(s, &p), IMGD_E_TOO_LARGE);
    imgd_free(s);
}

/* ---- chunking ---------------------------------------------------------------------------- */

static int32_t tok(const char *s) {
    int32_t id = -1;
    if (!g_tok || !imgd_clip_tok_lookup(g_tok, s, &id)) fprintf(stderr, "no token '%s'\n", s);
    return id;
}

/* "w w w ..." (count words) into a heap string. */
static char *repeat_word(const char *w, size_t count) {
    size_t k = strlen(w) + 1, n = k * count;
    char  *s = imgd_malloc(n + 1);
    if (!s) return NULL;
    for (size_t i = 0; i < count; i++) {
        memcpy(s + i * k, w, k - 1);
        s[i * k + k - 1] = ' ';
    }
    s[n] = '\0';
    return s;
}

/* Checks row c of pc: BOS, the n ids of body, EOS up to 77; with pad != EOS everything
 * after the first EOS is pad. */
static bool row_is(const imgd_prompt_chunks *pc, size_t c, const int32_t *body, size_t n,
                   int32_t pad) {
    if (c >= pc->n_chunks || n > IMGD_PROMPT_CHUNK_TOKENS) return false;
    int32_t want[IMGD_PROMPT_CHUNK_LEN];
    int32_t eos = imgd_clip_tok_eos(g_tok);
    want[0]     = imgd_clip_tok_bos(g_tok);
    for (size_t i = 1; i < IMGD_PROMPT_CHUNK_LEN; i++) want[i] = i <= n ? body[i - 1] : eos;
    for (size_t i = n + 2; i < IMGD_PROMPT_CHUNK_LEN; i++) want[i] = pad;
    const int32_t *r = pc->ids + c * IMGD_PROMPT_CHUNK_LEN;
    if (memcmp(r, want, sizeof want) == 0) return true;
    fprintf(stderr, "chunk %zu:", c);
    for (size_t i = 0; i < IMGD_PROMPT_CHUNK_LEN; i++) fprintf(stderr, " %d", r[i]);
    fputc('\n', stderr);
    return false;
}

/* imgd_prompt_encode that reports failures (for REQUIRE). */
static bool enc(const imgd_clip_tok *t, const char *prompt, int32_t pad, imgd_prompt_chunks *pc) {
    imgd_status st = imgd_prompt_encode(t, prompt, pad, pc);
    if (st != IMGD_OK) fprintf(stderr, "\"%.40s\": %s\n", prompt, imgd_last_error());
    return st == IMGD_OK;
}

static void fill(int32_t *v, size_t n, int32_t x) {
    for (size_t i = 0; i < n; i++) v[i] = x;
}

static void test_prompt_chunks_long_prompt_in_75s(void) {
    imgd_prompt_chunks pc = {0};
    char              *s  = repeat_word("a", 80);
    int32_t            a[75];
    REQUIRE(g_tok && s);
    fill(a, 75, tok("a</w>"));
    REQUIRE(enc(g_tok, s, imgd_clip_tok_eos(g_tok), &pc));
    CHECK_EQ_INT(pc.n_chunks, 2);
    CHECK_EQ_INT(pc.n_tokens, 80);
    CHECK(row_is(&pc, 0, a, 75, imgd_clip_tok_eos(g_tok)));
    CHECK(row_is(&pc, 1, a, 5, imgd_clip_tok_eos(g_tok)));
    for (size_t i = 0; i < (size_t)2 * IMGD_PROMPT_CHUNK_LEN && pc.weights; i++) {
        CHECK(pc.weights[i] == 1.0f);
    }
    imgd_prompt_chunks_free(&pc);
    /* SDXL's second tokenizer pads with 0 after the first EOS */
    REQUIRE(enc(g_tok, s, 0, &pc));
    CHECK(row_is(&pc, 0, a, 75, 0));
    CHECK(row_is(&pc, 1, a, 5, 0));
done:
    imgd_prompt_chunks_free(&pc);
    imgd_free(s);
}

static void test_prompt_chunks_empty_prompt(void) {
    imgd_prompt_chunks pc = {0};
    REQUIRE(g_tok);
    REQUIRE(enc(g_tok, "", imgd_clip_tok_eos(g_tok), &pc));
    CHECK_EQ_INT(pc.n_chunks, 1);
    CHECK_EQ_INT(pc.n_tokens, 0);
    CHECK(row_is(&pc, 0, NULL, 0, imgd_clip_tok_eos(g_tok)));
    imgd_prompt_chunks_free(&pc);
    /* -1: the tokenizer's own pad id (EOS here) */
    REQUIRE(enc(g_tok, "", -1, &pc));
    CHECK(row_is(&pc, 0, NULL, 0, imgd_clip_tok_pad(g_tok)));
done:
    imgd_prompt_chunks_free(&pc);
}

/* 70 x "a", ",", 10 x "b": the 76th token would split the chunk, the comma is 5 back, so
 * the 4 "b" after it move to the next chunk (A1111 comma_padding_backtrack). */
static void test_prompt_chunks_comma_backtrack(void) {
    imgd_prompt_chunks pc = {0};
    char              *as = repeat_word("a", 70);
    char              *bs = repeat_word("b", 10);
    char              *s  = NULL;
    int32_t            body[75];
    REQUIRE(g_tok && as && bs);
    s = imgd_malloc(strlen(as) + strlen(bs) + 3);
    REQUIRE(s);
    memcpy(s, as, strlen(as));
    memcpy(s + strlen(as), ", ", 2);
    memcpy(s + strlen(as) + 2, bs, strlen(bs) + 1);
    REQUIRE(enc(g_tok, s, imgd_clip_tok_eos(g_tok), &pc));
    CHECK_EQ_INT(pc.n_chunks, 2);
    CHECK_EQ_INT(pc.n_tokens, 75 + 10);
    fill(body, 70, tok("a</w>"));
    body[70] = tok(",</w>");
    CHECK(row_is(&pc, 0, body, 71, imgd_clip_tok_eos(g_tok)));
    fill(body, 10, tok("b</w>"));
    CHECK(row_is(&pc, 1, body, 10, imgd_clip_tok_eos(g_tok)));
    imgd_prompt_chunks_free(&pc);
    /* backtracking off: a plain cut after 75 */
    imgd_prompt_opts o = imgd_prompt_opts_default();
    o.comma_backtrack  = 0;
    REQUIRE(imgd_prompt_encode_opts(g_tok, s, &o, &pc) == IMGD_OK);
    fill(body, 70, tok("a</w>"));
    body[70] = tok(",</w>");
    fill(body + 71, 4, tok("b</w>"));
    CHECK(row_is(&pc, 0, body, 75, imgd_clip_tok_eos(g_tok)));
    fill(body, 6, tok("b</w>"));
    CHECK(row_is(&pc, 1, body, 6, imgd_clip_tok_eos(g_tok)));
    imgd_prompt_chunks_free(&pc);
    /* the comma more than 20 tokens back: no backtracking */
    imgd_free(s);
    s = imgd_malloc(strlen(bs) + 4);
    imgd_free(bs);
    bs = repeat_word("b", 80);
    REQUIRE(s && bs);
    imgd_free(s);
    s = imgd_malloc(strlen(bs) + 4);
    REQUIRE(s);
    memcpy(s, "a, ", 3);
    memcpy(s + 3, bs, strlen(bs) + 1);
    REQUIRE(enc(g_tok, s, imgd_clip_tok_eos(g_tok), &pc));
    CHECK_EQ_INT(pc.n_chunks, 2);
    body[0] = tok("a</w>");
    body[1] = tok(",</w>");
    fill(body + 2, 73, tok("b</w>"));
    CHECK(row_is(&pc, 0, body, 75, imgd_clip_tok_eos(g_tok)));
    CHECK(row_is(&pc, 1, body + 2, 7, imgd_clip_tok_eos(g_tok)));
done:
    imgd_prompt_chunks_free(&pc);
    imgd_free(as);
    imgd_free(bs);
    imgd_free(s);
}

static void test_prompt_chunks_break(void) {
    imgd_prompt_chunks pc = {0};
    int32_t            a = 0, b = 0;
    REQUIRE(g_tok);
    a = tok("a</w>");
    b = tok("b</w>");
    REQUIRE(enc(g_tok, "a BREAK b", imgd_clip_tok_eos(g_tok), &pc));
    CHECK_EQ_INT(pc.n_chunks, 2);
    CHECK_EQ_INT(pc.n_tokens, 76);
    CHECK(row_is(&pc, 0, &a, 1, imgd_clip_tok_eos(g_tok)));
    CHECK(row_is(&pc, 1, &b, 1, imgd_clip_tok_eos(g_tok)));
    imgd_prompt_chunks_free(&pc);
    /* a trailing BREAK adds no empty chunk; a leading one does (as in A1111) */
    REQUIRE(enc(g_tok, "a BREAK", imgd_clip_tok_eos(g_tok), &pc));
    CHECK_EQ_INT(pc.n_chunks, 1);
    imgd_prompt_chunks_free(&pc);
    REQUIRE(enc(g_tok, "BREAK a", imgd_clip_tok_eos(g_tok), &pc));
    CHECK_EQ_INT(pc.n_chunks, 2);
    CHECK(row_is(&pc, 0, NULL, 0, imgd_clip_tok_eos(g_tok)));
    CHECK(row_is(&pc, 1, &a, 1, imgd_clip_tok_eos(g_tok)));
    imgd_prompt_chunks_free(&pc);
    /* inside brackets BREAK is weighted text (A1111 quirk) */
    REQUIRE(enc(g_tok, "(a BREAK b)", imgd_clip_tok_eos(g_tok), &pc));
    CHECK_EQ_INT(pc.n_chunks, 1);
    CHECK_EQ_INT(pc.ids[2], tok("b"));
    CHECK(pc.weights[2] == (float)-1.1);
done:
    imgd_prompt_chunks_free(&pc);
}

static void test_prompt_chunks_weights(void) {
    imgd_prompt_chunks pc = {0};
    REQUIRE(g_tok);
    REQUIRE(enc(g_tok, "(cat:1.5) dog [red]", imgd_clip_tok_eos(g_tok), &pc));
    int32_t body[3] = {tok("cat</w>"), tok("dog</w>"), tok("red</w>")};
    CHECK(row_is(&pc, 0, body, 3, imgd_clip_tok_eos(g_tok)));
    CHECK(pc.weights[0] == 1.0f);
    CHECK(pc.weights[1] == 1.5f);
    CHECK(pc.weights[2] == 1.0f);
    CHECK(pc.weights[3] == (float)(1 / 1.1));
    for (size_t i = 4; i < IMGD_PROMPT_CHUNK_LEN; i++) CHECK(pc.weights[i] == 1.0f);
    imgd_prompt_chunks_free(&pc);
    /* each weight segment is tokenized on its own: "(c)at" is not "cat" */
    REQUIRE(enc(g_tok, "(c)at", imgd_clip_tok_eos(g_tok), &pc));
    int32_t split[3] = {tok("c</w>"), tok("a"), tok("t</w>")};
    CHECK(row_is(&pc, 0, split, 3, imgd_clip_tok_eos(g_tok)));
    CHECK(pc.weights[1] == (float)1.1 && pc.weights[2] == 1.0f);
    imgd_prompt_chunks_free(&pc);
    /* emphasis off: the brackets are text */
    imgd_prompt_opts o = imgd_prompt_opts_default();
    o.no_emphasis      = true;
    REQUIRE(imgd_prompt_encode_opts(g_tok, "(cat)", &o, &pc) == IMGD_OK);
    int32_t raw[3] = {tok("(</w>"), tok("cat</w>"), tok(")</w>")};
    CHECK(row_is(&pc, 0, raw, 3, imgd_clip_tok_eos(g_tok)));
    CHECK(pc.weights[2] == 1.0f);
done:
    imgd_prompt_chunks_free(&pc);
}

/* ---- textual inversion ------------------------------------------------------------------- */

static void test_prompt_embedding_expands(void) {
    imgd_clip_tok     *t     = NULL;
    imgd_prompt_chunks pc    = {0};
    char              *s     = NULL;
    int32_t            first = -1;
    REQUIRE(imgd_clip_tok_load(g_dir, &t) == IMGD_OK);
    REQUIRE(imgd_clip_tok_add_embedding(t, "emb", 3, &first) == IMGD_OK);
    int32_t x = 0, y = 0;
    REQUIRE(imgd_clip_tok_lookup(t, "x</w>", &x) && imgd_clip_tok_lookup(t, "y</w>", &y));
    int32_t eos = imgd_clip_tok_eos(t);
    REQUIRE(enc(t, "x emb y", eos, &pc));
    int32_t want[5] = {x, first, first + 1, first + 2, y};
    CHECK(pc.n_chunks == 1 && memcmp(pc.ids + 1, want, sizeof want) == 0);
    CHECK_EQ_INT(pc.n_tokens, 5);
    imgd_prompt_chunks_free(&pc);
    /* weighted: all vectors get the weight; upper case still matches */
    REQUIRE(enc(t, "(EMB:1.25)", eos, &pc));
    CHECK(pc.ids[1] == first && pc.ids[3] == first + 2 && pc.ids[4] == eos);
    CHECK(pc.weights[1] == 1.25f && pc.weights[3] == 1.25f && pc.weights[4] == 1.0f);
    imgd_prompt_chunks_free(&pc);
    /* a vector token written out is not expanded again; part of a word is not a trigger */
    REQUIRE(enc(t, "emb_1 embx", eos, &pc));
    CHECK(pc.ids[1] == first + 1 && pc.ids[2] != first);
    imgd_prompt_chunks_free(&pc);
    /* never split across chunks: 74 tokens, then 3 vectors go to the next chunk */
    s = repeat_word("x", 74);
    REQUIRE(s);
    size_t n  = strlen(s);
    char  *s2 = imgd_realloc(s, n + 4);
    REQUIRE(s2);
    s = s2;
    memcpy(s + n, "emb", 4);
    REQUIRE(enc(t, s, eos, &pc));
    CHECK_EQ_INT(pc.n_chunks, 2);
    CHECK_EQ_INT(pc.n_tokens, 75 + 3);
    if (pc.n_chunks == 2) {
        CHECK(pc.ids[74] == x && pc.ids[75] == eos);
        CHECK(pc.ids[77 + 1] == first && pc.ids[77 + 3] == first + 2 && pc.ids[77 + 4] == eos);
    }
done:
    imgd_prompt_chunks_free(&pc);
    imgd_free(s);
    imgd_clip_tok_free(t);
}

/* ---- malformed input --------------------------------------------------------------------- */

static void test_prompt_malformed_never_fails(void) {
    static const char *const prompts[] = {
        ")))",
        "(((",
        "]]][[[",
        "(a:",
        "(a:1",
        "(a:1.5",
        "(a:)",
        "(a:-)",
        "(a:.)",
        "(a::1)",
        "a:b:c",
        "\\",
        "\\\\\\",
        "\\x",
        "(\\)",
        "[\\]",
        "(:)",
        "([)]",
        "[(])",
        "BREAK",
        "BREAKBREAK",
        " BREAK ",
        "(BREAK)",
        "(:1e5)",
        "(a:1e5)",
        "(a:99999999999999999999999999999999999999)",
        "(a:0)",
        "((a:0))",
        "::::",
        "<|endoftext|>(a)<|startoftext|>",
        "\xE3\x80\x80(\xE6\x97\xA5:2)\xE3\x80\x80",
    };
    REQUIRE(g_tok);
    for (size_t i = 0; i < IMGD_ARRAY_LEN(prompts); i++) {
        imgd_prompt_chunks pc;
        imgd_status        st = imgd_prompt_encode(g_tok, prompts[i], 0, &pc);
        CHECK_MSG(st == IMGD_OK, "\"%s\": %s", prompts[i], imgd_last_error());
        if (st == IMGD_OK) {
            CHECK(pc.n_chunks >= 1 && pc.ids[0] == imgd_clip_tok_bos(g_tok));
            CHECK(pc.ids[IMGD_PROMPT_CHUNK_LEN - 1] == imgd_clip_tok_eos(g_tok) ||
                  pc.ids[IMGD_PROMPT_CHUNK_LEN - 1] == 0);
        }
        imgd_prompt_chunks_free(&pc);
    }
    imgd_prompt_chunks pc;
    CHECK_STATUS(imgd_prompt_encode(g_tok, "a", 1 << 30, &pc), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_prompt_encode(g_tok, "a \xC3", 0, &pc), IMGD_E_INVALID_ARG);
    CHECK(pc.ids == NULL && pc.n_chunks == 0);
    imgd_prompt_opts o = imgd_prompt_opts_default();
    o.comma_backtrack  = 76;
    CHECK_STATUS(imgd_prompt_encode_opts(g_tok, "a", &o, &pc), IMGD_E_INVALID_ARG);
done:
    return;
}

/* ---- emphasis ---------------------------------------------------------------------------- */

static void test_prompt_apply_weights_restores_mean(void) {
    float z[3][4] = {{1, 2, 3, 4}, {-1, 0.5f, 2, 8}, {0.25f, 0.25f, 1, 3}};
    float w[3]    = {1.0f, 1.5f, 0.5f};
    float ref[3][4];
    memcpy(ref, z, sizeof z);
    imgd_prompt_apply_weights(&z[0][0], 3, 4, w);
    double m0 = 0, m1 = 0, mz = 0;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 4; j++) {
            m0 += (double)ref[i][j] / 12;
            m1 += (double)(ref[i][j] * w[i]) / 12;
            mz += (double)z[i][j] / 12;
        }
    }
    CHECK_NEAR(mz, m0, 1e-6); /* the mean is restored */
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 4; j++) {
            CHECK_NEAR(z[i][j], (double)(ref[i][j] * w[i]) * (m0 / m1), 1e-5);
        }
    }
    /* all-ones weights change nothing, bit for bit */
    float ones[3] = {1, 1, 1};
    memcpy(z, ref, sizeof z);
    imgd_prompt_apply_weights(&z[0][0], 3, 4, ones);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 4; j++) CHECK(z[i][j] == ref[i][j]);
    }
    /* zero mean after weighting: no rescale (A1111 would divide by zero) */
    float zz[2] = {1, -1}, ww[2] = {1, 1};
    imgd_prompt_apply_weights(zz, 2, 1, ww);
    CHECK(zz[0] == 1.0f && zz[1] == -1.0f);
}

int main(void) {
    if (tf_make_tokenizer("tok-prompt", g_dir, sizeof g_dir) != 0) {
        fprintf(stderr, "cannot write the test tokenizer under %s\n", tu_tmpdir());
        return 1;
    }
    if (imgd_clip_tok_load(g_dir, &g_tok) != IMGD_OK) {
        fprintf(stderr, "tokenizer: %s\n", imgd_last_error());
    }
    RUN(test_prompt_parse_matches_a1111);
    RUN(test_prompt_parse_rejects_bad_input);
    RUN(test_prompt_chunks_long_prompt_in_75s);
    RUN(test_prompt_chunks_empty_prompt);
    RUN(test_prompt_chunks_comma_backtrack);
    RUN(test_prompt_chunks_break);
    RUN(test_prompt_chunks_weights);
    RUN(test_prompt_embedding_expands);
    RUN(test_prompt_malformed_never_fails);
    RUN(test_prompt_apply_weights_restores_mean);
    imgd_clip_tok_free(g_tok);
    tf_remove_tokenizer(g_dir);
    TEST_END();
}
