/* T5 (SentencePiece unigram) tokenizer on hand-built models (tests/spm_fixture.h): the
 * protobuf reader's error paths, the charsmap normalizer, Viterbi, unknown runs, byte
 * fallback, user-defined symbols, special tokens, truncation and padding. The real
 * flux-narrow spiece.model is checked against transformers in
 * tests/conformance/test_t5_tokenizer.c. */
#include "base/alloc.h"
#include "base/error.h"
#include "models/t5_tokenizer.h"
#include "spm_fixture.h"
#include "test.h"

#define SP "\xe2\x96\x81"

typedef struct spec {
    const uint8_t *charsmap;
    size_t         charsmap_len;
    uint64_t       model_type; /* 0: not written (unigram) */
    bool           byte_fallback, user, no_unk, dup, no_eos;
} spec;

/* pieces 0..: <pad> </s> <unk> ▁ ▁hello ▁world ▁he llo h e l o w r d A fi [<sep>] [bytes] */
static void build(sf_buf *o, const spec *s) {
    memset(o, 0, sizeof *o);
    sf_piece(o, "<pad>", 0, 3);
    if (!s->no_eos) sf_piece(o, "</s>", 0, 3);
    if (!s->no_unk) sf_piece(o, "<unk>", 0, 2);
    sf_piece(o, SP, -2.0f, 0);
    sf_piece(o, SP "hello", -3.0f, 0);
    sf_piece(o, SP "world", -4.0f, 0);
    sf_piece(o, SP "he", -3.0f, 0);
    sf_piece(o, "llo", -3.5f, 0);
    const char *singles[] = {"h", "e", "l", "o", "w", "r", "d", "A", "fi"};
    for (size_t i = 0; i < sizeof singles / sizeof *singles; i++) sf_piece(o, singles[i], -5, 0);
    if (s->dup) sf_piece(o, "llo", -6.0f, 0);
    if (s->user) sf_piece(o, "<sep>", 0.0f, 4);
    if (s->byte_fallback) {
        sf_piece(o, "<0xE4>", 0, 6);
        sf_piece(o, "<0xB8>", 0, 6);
        sf_piece(o, "<0xAD>", 0, 6);
    }
    sf_buf *t = imgd_calloc(1, sizeof *t);
    if (!t) return;
    if (s->model_type) sf_u64(t, 3, s->model_type);
    sf_u64(t, 4, 20);
    if (s->byte_fallback) sf_u64(t, 35, 1);
    sf_u64(t, 41, UINT64_MAX); /* bos_id -1 as protobuf writes it */
    sf_len(o, 2, t->b, t->n);
    memset(t, 0, sizeof *t);
    sf_str(t, 1, "nmt_nfkc");
    if (s->charsmap) sf_len(t, 2, s->charsmap, s->charsmap_len);
    sf_len(o, 3, t->b, t->n);
    imgd_free(t);
}

static imgd_status load(const sf_buf *o, imgd_t5_tok **t) {
    return imgd_t5_tok_load_mem(o->b, o->n, "test.model", 100, t);
}

/* Pieces of text joined by '|' equal want. */
static bool pieces_are(const imgd_t5_tok *t, const char *text, const char *want) {
    int32_t *ids = NULL;
    char    *pcs = NULL;
    size_t   n   = 0;
    if (imgd_t5_tok_sp_encode(t, text, &ids, &pcs, &n) != IMGD_OK) {
        fprintf(stderr, "encode \"%s\": %s\n", text, imgd_last_error());
        return false;
    }
    char        got[1024] = "";
    size_t      k         = 0;
    const char *p         = pcs;
    for (size_t i = 0; i < n; i++) {
        k += (size_t)snprintf(got + k, sizeof got - k, "%s%s", i ? "|" : "", p);
        p += strlen(p) + 1;
    }
    bool ok = strcmp(got, want) == 0;
    if (!ok) fprintf(stderr, "\"%s\": pieces '%s', want '%s'\n", text, got, want);
    imgd_free(ids);
    imgd_free(pcs);
    return ok;
}

static bool error_has(const char *what) {
    bool ok = strstr(imgd_last_error(), what) != NULL;
    if (!ok) fprintf(stderr, "error '%s' lacks '%s'\n", imgd_last_error(), what);
    return ok;
}

/* Loading o must fail with want and a message containing what (the tokenizer is freed
 * should it load anyway, e.g. when an injected allocation failure changed the fixture). */
static void expect_load_fails(const sf_buf *o, imgd_status want, const char *what) {
    imgd_t5_tok *t = NULL;
    CHECK_STATUS(load(o, &t), want);
    CHECK(error_has(what));
    imgd_t5_tok_free(t);
}

/* ---- loading and the protobuf reader ----------------------------------------------------- */

static void test_t5_tokenizer_loads_minimal_model(void) {
    sf_buf      *o = imgd_calloc(1, sizeof *o);
    imgd_t5_tok *t = NULL;
    REQUIRE(o != NULL);
    build(o, &(spec){0});
    CHECK_STATUS(load(o, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_EQ_INT(imgd_t5_tok_piece_count(t), 17);
    CHECK_EQ_INT(imgd_t5_tok_vocab_size(t), 117);
    CHECK_EQ_INT(imgd_t5_tok_pad(t), 0);
    CHECK_EQ_INT(imgd_t5_tok_eos(t), 1);
    CHECK_EQ_INT(imgd_t5_tok_unk(t), 2);
    CHECK(pieces_are(t, "hello world", SP "hello|" SP "world"));
    CHECK(pieces_are(t, "  hello   world  ", SP "hello|" SP "world")); /* extra spaces go */
    CHECK(pieces_are(t, "   ", ""));
    CHECK(pieces_are(t, "hellod", SP "hello|d"));
done:
    imgd_t5_tok_free(t);
    imgd_free(o);
}

static void test_t5_tokenizer_truncated_model_never_crashes(void) {
    sf_buf *o = imgd_calloc(1, sizeof *o);
    REQUIRE(o != NULL);
    build(o, &(spec){0});
    for (size_t n = 0; n < o->n; n++) {
        imgd_t5_tok *t  = NULL;
        imgd_status  st = imgd_t5_tok_load_mem(o->b, n, "cut.model", 100, &t);
        CHECK_MSG(st == IMGD_OK || st == IMGD_E_FORMAT, "prefix %zu: %s", n, imgd_status_name(st));
        if (st == IMGD_OK) {
            int32_t *ids = NULL;
            size_t   k   = 0;
            CHECK_STATUS(imgd_t5_tok_encode(t, "hello world", &ids, &k), IMGD_OK);
            imgd_free(ids);
        }
        imgd_t5_tok_free(t);
    }
done:
    imgd_free(o);
}

static void test_t5_tokenizer_rejects_malformed_protobuf(void) {
    imgd_t5_tok  *t          = NULL;
    const uint8_t past_end[] = {0x0a, 100, 'a', 'b', 'c'};
    CHECK_STATUS(imgd_t5_tok_load_mem(past_end, sizeof past_end, "x", 100, &t), IMGD_E_FORMAT);
    CHECK(error_has("remain"));
    const uint8_t long_varint[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK_STATUS(imgd_t5_tok_load_mem(long_varint, sizeof long_varint, "x", 100, &t),
                 IMGD_E_FORMAT);
    CHECK(error_has("longer than 10 bytes"));
    const uint8_t group[] = {0x0b, 0x0c};
    CHECK_STATUS(imgd_t5_tok_load_mem(group, sizeof group, "x", 100, &t), IMGD_E_FORMAT);
    CHECK(error_has("wire type 3"));
    const uint8_t field0[] = {0x02, 0x00};
    CHECK_STATUS(imgd_t5_tok_load_mem(field0, sizeof field0, "x", 100, &t), IMGD_E_FORMAT);
    CHECK(error_has("field number 0"));
    const uint8_t pieces_varint[] = {0x08, 0x05};
    CHECK_STATUS(imgd_t5_tok_load_mem(pieces_varint, sizeof pieces_varint, "x", 100, &t),
                 IMGD_E_FORMAT);
    CHECK(error_has("pieces"));
    const uint8_t piece_str_varint[] = {0x0a, 0x02, 0x08, 0x01}; /* piece: field 1 as varint */
    CHECK_STATUS(imgd_t5_tok_load_mem(piece_str_varint, sizeof piece_str_varint, "x", 100, &t),
                 IMGD_E_FORMAT);
    CHECK(error_has("piece string"));
    const uint8_t fixed_cut[] = {0x0a, 0x03, 0x15, 0x00, 0x00}; /* score with 2 of 4 bytes */
    CHECK_STATUS(imgd_t5_tok_load_mem(fixed_cut, sizeof fixed_cut, "x", 100, &t), IMGD_E_FORMAT);
    CHECK(error_has("runs past the end"));
    CHECK_STATUS(imgd_t5_tok_load_mem("", 0, "x", 100, &t), IMGD_E_FORMAT);
    CHECK(error_has("no pieces"));
    CHECK(t == NULL);
    imgd_t5_tok_free(t);
}

static void test_t5_tokenizer_rejects_bad_pieces(void) {
    sf_buf *o = imgd_calloc(1, sizeof *o);
    REQUIRE(o != NULL);
    build(o, &(spec){.no_unk = true});
    expect_load_fails(o, IMGD_E_FORMAT, "no unknown piece");
    build(o, &(spec){.dup = true});
    expect_load_fails(o, IMGD_E_FORMAT, "'llo' is defined twice");
    build(o, &(spec){.no_eos = true});
    expect_load_fails(o, IMGD_E_FORMAT, "</s>");
    build(o, &(spec){.model_type = 2});
    expect_load_fails(o, IMGD_E_UNSUPPORTED, "BPE");
    memset(o, 0, sizeof *o);
    sf_piece(o, "<unk>", 0, 2);
    sf_piece(o, "x", 0, 9);
    expect_load_fails(o, IMGD_E_FORMAT, "type 9");
    memset(o, 0, sizeof *o);
    sf_piece(o, "", 0, 0);
    expect_load_fails(o, IMGD_E_FORMAT, "empty string");
    memset(o, 0, sizeof *o);
    sf_piece(o, "\xff", 0, 0);
    expect_load_fails(o, IMGD_E_FORMAT, "UTF-8");
    memset(o, 0, sizeof *o);
    sf_piece(o, "x", NAN, 0);
    expect_load_fails(o, IMGD_E_FORMAT, "non-finite");
done:
    imgd_free(o);
}

static void test_t5_tokenizer_rejects_broken_charsmap(void) {
    sf_buf      *o    = imgd_calloc(1, sizeof *o);
    imgd_t5_tok *t    = NULL;
    uint8_t      cm[] = {0x40, 0x00, 0x00, 0x00, 0x01, 0x02}; /* trie of 64 bytes in 6 */
    REQUIRE(o != NULL);
    build(o, &(spec){.charsmap = cm, .charsmap_len = sizeof cm});
    expect_load_fails(o, IMGD_E_FORMAT, "trie size");
    /* a rule whose replacement offset lies past the string table: "A" -> offset 0 ("x"),
     * "B" -> offset 2 ("y"); cutting "y\0" off leaves B pointing past the table */
    const char *from[] = {"A", "B"}, *to[] = {"x", "y"};
    uint8_t     blob[512];
    size_t      n = sf_charsmap(from, to, 2, blob, sizeof blob);
    REQUIRE(n > 8);
    build(o, &(spec){.charsmap = blob, .charsmap_len = n - 2});
    CHECK_STATUS(load(o, &t), IMGD_OK);
    REQUIRE(t != NULL);
    int32_t *ids = NULL;
    size_t   k   = 0;
    CHECK_STATUS(imgd_t5_tok_encode(t, "B", &ids, &k), IMGD_E_FORMAT);
    CHECK(error_has("past its"));
    imgd_free(ids); /* (set only if it wrongly succeeded) */
    ids = NULL;
    CHECK_STATUS(imgd_t5_tok_encode(t, "A hello", &ids, &k), IMGD_OK); /* other rules work */
    imgd_free(ids);
done:
    imgd_t5_tok_free(t);
    imgd_free(o);
}

/* ---- encoding ---------------------------------------------------------------------------- */

static void test_t5_tokenizer_charsmap_rules_apply(void) {
    sf_buf      *o      = imgd_calloc(1, sizeof *o);
    imgd_t5_tok *t      = NULL;
    const char  *from[] = {"\xef\xbc\xa1", "\xef\xac\x81", "\xe3\x80\x80", "\xef\xbc"};
    const char  *to[]   = {"A", "fi", " ", "?"}; /* fullwidth A, ligature fi, U+3000 */
    uint8_t      blob[4096];
    size_t       n = sf_charsmap(from, to, 4, blob, sizeof blob);
    REQUIRE(o != NULL && n > 0);
    build(o, &(spec){.charsmap = blob, .charsmap_len = n});
    CHECK_STATUS(load(o, &t), IMGD_OK);
    REQUIRE(t != NULL);
    /* longest rule wins (U+FF21 over its 2-byte prefix); U+3000 is a space, collapsed */
    CHECK(pieces_are(t, "\xef\xbc\xa1\xef\xac\x81\xe3\x80\x80 hello", SP "|A|fi|" SP "hello"));
    CHECK(pieces_are(t, "\xe3\x80\x80hello\xe3\x80\x80", SP "hello"));
done:
    imgd_t5_tok_free(t);
    imgd_free(o);
}

static void test_t5_tokenizer_unknown_runs_merge(void) {
    sf_buf      *o = imgd_calloc(1, sizeof *o);
    imgd_t5_tok *t = NULL;
    REQUIRE(o != NULL);
    build(o, &(spec){0});
    CHECK_STATUS(load(o, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK(pieces_are(t, "hello \xe4\xb8\xad\xe6\x96\x87",
                     SP "hello|" SP "|\xe4\xb8\xad\xe6\x96\x87"));
    int32_t *ids = NULL;
    size_t   n   = 0;
    CHECK_STATUS(imgd_t5_tok_encode(t, "hello \xe4\xb8\xad\xe6\x96\x87!", &ids, &n), IMGD_OK);
    CHECK_EQ_INT(n, 3); /* ▁hello ▁ <unk> (中文! is one run) */
    if (n == 3) CHECK_EQ_INT(ids[2], 2);
    imgd_free(ids);
    ids = NULL;
    CHECK_STATUS(imgd_t5_tok_encode(t, "bad \xff utf8", &ids, &n), IMGD_E_INVALID_ARG);
    CHECK(error_has("offset 4"));
    imgd_free(ids);
done:
    imgd_t5_tok_free(t);
    imgd_free(o);
}

static void test_t5_tokenizer_byte_fallback_and_user_symbols(void) {
    sf_buf      *o = imgd_calloc(1, sizeof *o);
    imgd_t5_tok *t = NULL;
    REQUIRE(o != NULL);
    build(o, &(spec){.byte_fallback = true, .user = true});
    CHECK_STATUS(load(o, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK(pieces_are(t, "\xe4\xb8\xad", SP "|<0xE4>|<0xB8>|<0xAD>"));
    CHECK(pieces_are(t, "hello<sep>world", SP "hello|<sep>|w|o|r|l|d"));
done:
    imgd_t5_tok_free(t);
    imgd_free(o);
}

static void test_t5_tokenizer_specials_eos_and_padding(void) {
    sf_buf      *o = imgd_calloc(1, sizeof *o);
    imgd_t5_tok *t = NULL;
    REQUIRE(o != NULL);
    build(o, &(spec){0});
    CHECK_STATUS(load(o, &t), IMGD_OK);
    REQUIRE(t != NULL);
    int32_t row[8];
    size_t  n_text = 0;
    /* 17 pieces + 100 extra ids: <extra_id_0> = 116, <extra_id_99> = 17 */
    CHECK_STATUS(imgd_t5_tok_encode_padded(t, "<extra_id_0>hello</s>", 8, row, &n_text), IMGD_OK);
    int32_t want1[8] = {116, 4, 1, 0, 0, 0, 0, 0}; /* ends with </s>: none added */
    CHECK(memcmp(row, want1, sizeof row) == 0);
    CHECK_EQ_INT(n_text, 3);
    CHECK_STATUS(imgd_t5_tok_encode_padded(t, "<extra_id_99> <pad><unk>", 8, row, NULL), IMGD_OK);
    int32_t want2[8] = {17, 0, 2, 1, 0, 0, 0, 0};
    CHECK(memcmp(row, want2, sizeof row) == 0);
    /* not special: out of range, leading zero, unterminated */
    int32_t *ids = NULL;
    size_t   n   = 0;
    CHECK_STATUS(imgd_t5_tok_encode(t, "<extra_id_100><extra_id_01><extra_id_5", &ids, &n),
                 IMGD_OK);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] < 17);
    imgd_free(ids);
    CHECK_STATUS(imgd_t5_tok_encode_padded(t, "hello hello hello hello hello", 4, row, &n_text),
                 IMGD_OK);
    int32_t want3[4] = {4, 4, 4, 1}; /* truncated to max_len - 1, then </s> */
    CHECK(memcmp(row, want3, sizeof want3) == 0);
    CHECK_EQ_INT(n_text, 5);
    CHECK_STATUS(imgd_t5_tok_encode_padded(t, "", 3, row, NULL), IMGD_OK);
    CHECK(row[0] == 1 && row[1] == 0 && row[2] == 0);
    CHECK_STATUS(imgd_t5_tok_encode_padded(t, "x", 0, row, NULL), IMGD_E_INVALID_ARG);
    char        buf[24];
    const char *x99 = imgd_t5_tok_token(t, 17, buf, sizeof buf);
    CHECK(x99 && strcmp(x99, "<extra_id_99>") == 0);
    CHECK(imgd_t5_tok_token(t, 117, buf, sizeof buf) == NULL);
    CHECK_STR(imgd_t5_tok_token(t, 4, NULL, 0), SP "hello");
done:
    imgd_t5_tok_free(t);
    imgd_free(o);
}

static void test_t5_tokenizer_load_errors_name_the_path(void) {
    imgd_t5_tok *t = NULL;
    CHECK_STATUS(imgd_t5_tok_load("/nonexistent/spiece.model", &t), IMGD_E_IO);
    CHECK(error_has("/nonexistent/spiece.model"));
    CHECK_STATUS(imgd_t5_tok_load("/", &t), IMGD_E_IO);
    CHECK(error_has("no spiece.model"));
    CHECK(t == NULL);
    imgd_t5_tok_free(t);
}

int main(void) {
    RUN(test_t5_tokenizer_loads_minimal_model);
    RUN(test_t5_tokenizer_truncated_model_never_crashes);
    RUN(test_t5_tokenizer_rejects_malformed_protobuf);
    RUN(test_t5_tokenizer_rejects_bad_pieces);
    RUN(test_t5_tokenizer_rejects_broken_charsmap);
    RUN(test_t5_tokenizer_charsmap_rules_apply);
    RUN(test_t5_tokenizer_unknown_runs_merge);
    RUN(test_t5_tokenizer_byte_fallback_and_user_symbols);
    RUN(test_t5_tokenizer_specials_eos_and_padding);
    RUN(test_t5_tokenizer_load_errors_name_the_path);
    TEST_END();
}
