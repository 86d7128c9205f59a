/* CLIP BPE tokenizer on a tiny generated vocabulary (tests/tok_fixture.h): loading and its
 * errors, BPE, special and added tokens, concurrency. The full vocabulary is checked against
 * transformers in tests/conformance/test_clip_tokenizer.c. */
#include <pthread.h>

#include "base/alloc.h"
#include "models/tokenizer.h"
#include "test.h"
#include "tok_fixture.h"

static char g_dir[4096];

static int32_t id_of(const imgd_clip_tok *t, const char *tok) {
    int32_t id = -1;
    if (!imgd_clip_tok_lookup(t, tok, &id)) fprintf(stderr, "no token '%s'\n", tok);
    return id;
}

/* Encodes text and compares with the token strings in want (NULL-terminated). */
static bool encodes_to(const imgd_clip_tok *t, const char *text, const char *const *want) {
    int32_t *ids = NULL;
    size_t   n   = 0;
    if (imgd_clip_tok_encode(t, text, &ids, &n) != IMGD_OK) {
        fprintf(stderr, "encode \"%s\": %s\n", text, imgd_last_error());
        return false;
    }
    bool   ok = true;
    size_t i  = 0;
    for (; want[i]; i++) {
        const char *got = i < n ? imgd_clip_tok_token(t, ids[i]) : NULL;
        if (!got || strcmp(got, want[i]) != 0) {
            fprintf(stderr, "\"%s\"[%zu]: got '%s', want '%s'\n", text, i, got ? got : "(end)",
                    want[i]);
            ok = false;
            break;
        }
    }
    if (ok && i != n) {
        fprintf(stderr, "\"%s\": %zu tokens, want %zu\n", text, n, i);
        ok = false;
    }
    imgd_free(ids);
    return ok;
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[4096];
    imgd_fmt(path, sizeof path, "%s/%s", dir, name);
    CHECK(tu_write_file(path, text, strlen(text)) == 0);
}

/* ---- loading ----------------------------------------------------------------------------- */

static void test_tokenizer_loads_generated_vocab(void) {
    imgd_clip_tok *t = NULL;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_EQ_INT(imgd_clip_tok_vocab_size(t), 512 + 7 + 2);
    CHECK_EQ_INT(imgd_clip_tok_bos(t), 519);
    CHECK_EQ_INT(imgd_clip_tok_eos(t), 520);
    CHECK_EQ_INT(imgd_clip_tok_pad(t), 520);
    CHECK_STR(imgd_clip_tok_token(t, 0), "!");
    CHECK_STR(imgd_clip_tok_token(t, 256), "!</w>");
    CHECK(imgd_clip_tok_token(t, 521) == NULL);
    CHECK(imgd_clip_tok_token(t, -1) == NULL);
done:
    imgd_clip_tok_free(t);
}

static void test_tokenizer_missing_folder_names_it(void) {
    imgd_clip_tok *t = NULL;
    CHECK_STATUS(imgd_clip_tok_load("/nonexistent/imgd-tok", &t), IMGD_E_IO);
    CHECK(t == NULL);
    CHECK(strstr(imgd_last_error(), "/nonexistent/imgd-tok") != NULL);
    CHECK(strstr(imgd_last_error(), "vocab.json") != NULL); /* says what to put there */
}

/* Makes a folder holding copies of the fixture with one file replaced (NULL = removed). */
static void make_variant(char *dir, size_t cap, const char *tag, const char *name,
                         const char *text) {
    CHECK(tf_make_tokenizer(tag, dir, cap) == 0);
    char path[4096];
    imgd_fmt(path, sizeof path, "%s/%s", dir, name);
    if (text) {
        write_text(dir, name, text);
    } else {
        (void)remove(path);
    }
}

static void test_tokenizer_missing_files_are_named(void) {
    static const char *const files[] = {"vocab.json", "merges.txt"};
    for (size_t i = 0; i < 2; i++) {
        char           dir[4096];
        imgd_clip_tok *t = NULL;
        make_variant(dir, sizeof dir, "tok-missing", files[i], NULL);
        CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_E_IO);
        CHECK(strstr(imgd_last_error(), files[i]) != NULL);
        CHECK(strstr(imgd_last_error(), dir) != NULL);
        tf_remove_tokenizer(dir);
    }
}

static void test_tokenizer_rejects_malformed_vocab(void) {
    static const char *const bad[] = {
        "[1, 2]",                                         /* not an object */
        "{}",                                             /* empty */
        "{\"a\": 0, \"b\": 0}",                           /* id used twice */
        "{\"a\": 0, \"b\": 5}",                           /* id out of range */
        "{\"a\": 0.5}",                                   /* not an integer */
        "{\"a\": \"0\"}",                                 /* not a number */
        "{\"a\": 0, \"b\": 1",                            /* truncated */
        "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1}", /* no byte-level tokens */
    };
    for (size_t i = 0; i < IMGD_ARRAY_LEN(bad); i++) {
        char           dir[4096];
        imgd_clip_tok *t = NULL;
        make_variant(dir, sizeof dir, "tok-badvocab", "vocab.json", bad[i]);
        CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_E_FORMAT);
        CHECK_MSG(strstr(imgd_last_error(), "vocab.json") != NULL, "case %zu: %s", i,
                  imgd_last_error());
        CHECK(t == NULL);
        tf_remove_tokenizer(dir);
    }
}

static void test_tokenizer_rejects_merge_result_not_in_vocab(void) {
    char           dir[4096];
    imgd_clip_tok *t = NULL;
    make_variant(dir, sizeof dir, "tok-badmerge", "merges.txt", "#version: 0.2\nc a\nx y\n");
    CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "'xy'") != NULL);
    tf_remove_tokenizer(dir);
    /* only a header: no merge at all */
    make_variant(dir, sizeof dir, "tok-nomerge", "merges.txt", "#version: 0.2\n");
    CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_E_FORMAT);
    tf_remove_tokenizer(dir);
}

static void test_tokenizer_merges_crlf_and_no_final_newline(void) {
    char           dir[4096];
    imgd_clip_tok *t = NULL;
    make_variant(dir, sizeof dir, "tok-crlf", "merges.txt",
                 "#version: 0.2\r\nc a\r\nca t</w>\r\nd o\r\n\r\nbad line here\r\ndo g</w>");
    CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_OK);
    if (t) {
        CHECK(encodes_to(t, "cat dog", (const char *const[]){"cat</w>", "dog</w>", NULL}));
    }
    imgd_clip_tok_free(t);
    tf_remove_tokenizer(dir);
}

static void test_tokenizer_config_pad_token_is_special(void) {
    char           dir[4096];
    imgd_clip_tok *t = NULL;
    make_variant(dir, sizeof dir, "tok-config", "tokenizer_config.json",
                 "{\"added_tokens_decoder\": {\"0\": {\"content\": \"!\", \"special\": true}},"
                 " \"pad_token\": \"!\"}");
    CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_EQ_INT(imgd_clip_tok_pad(t), 0);
    /* "!" is split out anywhere (id 0, not "!</w>"), as transformers' trie does */
    CHECK(encodes_to(t, "hi!", (const char *const[]){"h", "i</w>", "!", NULL}));
    imgd_clip_tok_free(t);
    t = NULL;
    /* special_tokens_map.json is the fallback; "<|endoftext|>" as pad means EOS */
    char path[4096];
    imgd_fmt(path, sizeof path, "%s/tokenizer_config.json", dir);
    (void)remove(path);
    write_text(dir, "special_tokens_map.json",
               "{\"pad_token\": {\"content\": \"<|endoftext|>\", \"lstrip\": false}}");
    CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_EQ_INT(imgd_clip_tok_pad(t), imgd_clip_tok_eos(t));
    CHECK(encodes_to(t, "hi!", (const char *const[]){"h", "i</w>", "!</w>", NULL}));
    imgd_clip_tok_free(t);
    t = NULL;
    write_text(dir, "special_tokens_map.json", "{not json");
    CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "special_tokens_map.json") != NULL);
    imgd_fmt(path, sizeof path, "%s/special_tokens_map.json", dir);
    (void)remove(path);
done:
    imgd_clip_tok_free(t);
    tf_remove_tokenizer(dir);
}

/* ---- encoding ---------------------------------------------------------------------------- */

static void test_tokenizer_bpe_merges_by_rank(void) {
    imgd_clip_tok *t = NULL;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK(encodes_to(t, "cat", (const char *const[]){"cat</w>", NULL}));
    CHECK(encodes_to(t, "CAT  Dog", (const char *const[]){"cat</w>", "dog</w>", NULL}));
    CHECK(encodes_to(t, "cats", (const char *const[]){"ca", "t", "s</w>", NULL}));
    CHECK(encodes_to(t, "red's", (const char *const[]){"red</w>", "'s</w>", NULL}));
    CHECK(encodes_to(t, "a1b", (const char *const[]){"a</w>", "1</w>", "b</w>", NULL}));
    CHECK(encodes_to(t, "x!?y", (const char *const[]){"x</w>", "!", "?</w>", "y</w>", NULL}));
    CHECK(encodes_to(t, "", (const char *const[]){NULL}));
    CHECK(encodes_to(t, " \t\n ", (const char *const[]){NULL}));
    /* a byte outside the printable set maps to its 256+k character: é = C3 A9 */
    CHECK(encodes_to(t, "\xC3\xA9", (const char *const[]){"\xC3\x83", "\xC2\xA9</w>", NULL}));
done:
    imgd_clip_tok_free(t);
}

static void test_tokenizer_specials_anywhere(void) {
    imgd_clip_tok *t = NULL;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK(encodes_to(t, "a<|endoftext|>b",
                     (const char *const[]){"a</w>", "<|endoftext|>", "b</w>", NULL}));
    CHECK(
        encodes_to(t, "!<|startoftext|>", (const char *const[]){"!</w>", "<|startoftext|>", NULL}));
    /* upper case is no special token before cleanup, but after lowercasing the regex and
     * the BPE cache still make it one (transformers does the same) */
    CHECK(encodes_to(t, "<|ENDOFTEXT|>", (const char *const[]){"<|endoftext|>", NULL}));
done:
    imgd_clip_tok_free(t);
}

static void test_tokenizer_rejects_invalid_utf8(void) {
    imgd_clip_tok *t   = NULL;
    int32_t       *ids = NULL;
    size_t         n   = 0;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_STATUS(imgd_clip_tok_encode(t, "ab\xC3", &ids, &n), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "byte 2") != NULL);
    CHECK_STATUS(imgd_clip_tok_encode(t, "\xED\xA0\x80", &ids, &n), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_clip_tok_encode(t, "\xC0\xAF", &ids, &n), IMGD_E_INVALID_ARG);
    CHECK(ids == NULL);
done:
    imgd_clip_tok_free(t);
}

static void test_tokenizer_long_word_is_not_quadratic(void) {
    imgd_clip_tok *t   = NULL;
    char          *s   = NULL;
    int32_t       *ids = NULL;
    size_t         n = 0, len = 400000;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    s = imgd_malloc(len + 1);
    REQUIRE(t && s);
    for (size_t i = 0; i < len; i++) s[i] = "ca"[i % 2];
    s[len] = '\0';
    CHECK_STATUS(imgd_clip_tok_encode(t, s, &ids, &n), IMGD_OK);
    CHECK_EQ_INT(n, len / 2 + 1); /* "ca" x 199999, then "c" "a</w>" */
    if (ids && n == len / 2 + 1) {
        CHECK_EQ_INT(ids[0], id_of(t, "ca"));
        CHECK_EQ_INT(ids[n - 1], id_of(t, "a</w>"));
    }
done:
    imgd_free(ids);
    imgd_free(s);
    imgd_clip_tok_free(t);
}

static void test_tokenizer_text_cap(void) {
    imgd_clip_tok *t   = NULL;
    char          *s   = NULL;
    int32_t       *ids = NULL;
    size_t         n = 0, len = IMGD_CLIP_TOK_TEXT_MAX + 1;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    s = imgd_malloc(len + 1);
    REQUIRE(t && s);
    memset(s, 'a', len);
    s[len] = '\0';
    CHECK_STATUS(imgd_clip_tok_encode(t, s, &ids, &n), IMGD_E_TOO_LARGE);
done:
    imgd_free(s);
    imgd_clip_tok_free(t);
}

/* ---- added tokens ------------------------------------------------------------------------ */

static void test_tokenizer_added_token_whole_word(void) {
    imgd_clip_tok *t = NULL;
    int32_t        a = -1, b = -1;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_STATUS(imgd_clip_tok_add_token(t, "narrowti", &a), IMGD_OK);
    CHECK_STATUS(imgd_clip_tok_add_token(t, "narrowti_1", &b), IMGD_OK);
    CHECK_EQ_INT(a, 521);
    CHECK_EQ_INT(b, 522);
    CHECK_EQ_INT(imgd_clip_tok_vocab_size(t), 523);
    CHECK(imgd_clip_tok_is_added(t, a) && !imgd_clip_tok_is_added(t, 5));
    CHECK(encodes_to(t, "a narrowti narrowti_1, NarrowTI.",
                     (const char *const[]){"a</w>", "narrowti", "narrowti_1", ",</w>", "narrowti",
                                           ".</w>", NULL}));
    /* not a whole word: ordinary BPE */
    CHECK(encodes_to(t, "xnarrowti",
                     (const char *const[]){"x", "n", "a", "r", "r", "o", "w", "t", "i</w>", NULL}));
    CHECK(encodes_to(t, "narrowtiy",
                     (const char *const[]){"n", "a", "r", "r", "o", "w", "t", "i", "y</w>", NULL}));
    /* rejected words leave the vocabulary as it was */
    CHECK_STATUS(imgd_clip_tok_add_token(t, "narrowti", NULL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_clip_tok_add_token(t, "cat</w>", NULL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_clip_tok_add_token(t, "", NULL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_clip_tok_add_token(t, "two words", NULL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_clip_tok_add_token(t, "bad\xFF", NULL), IMGD_E_INVALID_ARG);
    CHECK_EQ_INT(imgd_clip_tok_vocab_size(t), 523);
done:
    imgd_clip_tok_free(t);
}

static void test_tokenizer_add_embedding_is_atomic(void) {
    imgd_clip_tok *t     = NULL;
    int32_t        first = -1, id = -1;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_STATUS(imgd_clip_tok_add_embedding(t, "emb", 3, &first), IMGD_OK);
    CHECK_EQ_INT(first, 521);
    CHECK(imgd_clip_tok_lookup(t, "emb_2", &id) && id == 523);
    /* "zz_1" exists: adding embedding "zz" with 2 vectors must add nothing */
    CHECK_STATUS(imgd_clip_tok_add_token(t, "zz_1", NULL), IMGD_OK);
    size_t before = imgd_clip_tok_vocab_size(t);
    CHECK_STATUS(imgd_clip_tok_add_embedding(t, "zz", 2, NULL), IMGD_E_INVALID_ARG);
    CHECK_EQ_INT(imgd_clip_tok_vocab_size(t), before);
    CHECK(!imgd_clip_tok_lookup(t, "zz", &id));
    CHECK_STATUS(imgd_clip_tok_add_embedding(t, "y", 0, NULL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_clip_tok_add_embedding(t, "y", 76, NULL), IMGD_E_INVALID_ARG);
done:
    imgd_clip_tok_free(t);
}

static void test_tokenizer_add_special_longest_wins(void) {
    imgd_clip_tok *t = NULL;
    int32_t        a = -1, b = -1, c = -1;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_STATUS(imgd_clip_tok_add_special(t, "<x>", &a), IMGD_OK);
    CHECK_STATUS(imgd_clip_tok_add_special(t, "<x>>", &b), IMGD_OK);
    CHECK_STATUS(imgd_clip_tok_add_special(t, "<x>", &c), IMGD_OK); /* again: same id */
    CHECK_EQ_INT(a, c);
    CHECK(!imgd_clip_tok_is_added(t, a)); /* special, not a whole-word token */
    CHECK(encodes_to(t, "q<x>>r<x>", (const char *const[]){"q</w>", "<x>>", "r</w>", "<x>", NULL}));
    CHECK_STATUS(imgd_clip_tok_add_special(t, "", NULL), IMGD_E_INVALID_ARG);
done:
    imgd_clip_tok_free(t);
}

/* ---- threads ----------------------------------------------------------------------------- */

static const char g_text[] = "red cat, dog! cats and dogs; the quick brown fox";

typedef struct enc_job {
    const imgd_clip_tok *t;
    const int32_t       *want; /* the ids of g_text */
    size_t               n;
    int                  fails;
} enc_job;

static void *encode_many(void *arg) {
    enc_job *j = arg;
    for (int i = 0; i < 2000; i++) {
        int32_t *ids = NULL;
        size_t   n   = 0;
        if (imgd_clip_tok_encode(j->t, g_text, &ids, &n) != IMGD_OK || n != j->n ||
            memcmp(ids, j->want, n * sizeof *ids) != 0) {
            j->fails++;
        }
        imgd_free(ids);
    }
    return NULL;
}

static void test_tokenizer_concurrent_encodes_agree(void) {
    imgd_clip_tok *t    = NULL;
    int32_t       *want = NULL;
    size_t         n    = 0;
    CHECK_STATUS(imgd_clip_tok_load(g_dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    REQUIRE(imgd_clip_tok_encode(t, g_text, &want, &n) == IMGD_OK);
    CHECK_EQ_INT(n, 31);
    pthread_t th[4];
    enc_job   jobs[4];
    int       started = 0;
    for (int i = 0; i < 4; i++) {
        jobs[i] = (enc_job){t, want, n, 0};
        if (pthread_create(&th[i], NULL, encode_many, &jobs[i]) == 0) started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(jobs[i].fails, 0);
    }
done:
    imgd_free(want);
    imgd_clip_tok_free(t);
}

int main(void) {
    if (tf_make_tokenizer("tok-unit", g_dir, sizeof g_dir) != 0) {
        fprintf(stderr, "cannot write the test tokenizer under %s\n", tu_tmpdir());
        return 1;
    }
    RUN(test_tokenizer_loads_generated_vocab);
    RUN(test_tokenizer_missing_folder_names_it);
    RUN(test_tokenizer_missing_files_are_named);
    RUN(test_tokenizer_rejects_malformed_vocab);
    RUN(test_tokenizer_rejects_merge_result_not_in_vocab);
    RUN(test_tokenizer_merges_crlf_and_no_final_newline);
    RUN(test_tokenizer_config_pad_token_is_special);
    RUN(test_tokenizer_bpe_merges_by_rank);
    RUN(test_tokenizer_specials_anywhere);
    RUN(test_tokenizer_rejects_invalid_utf8);
    RUN(test_tokenizer_long_word_is_not_quadratic);
    RUN(test_tokenizer_text_cap);
    RUN(test_tokenizer_added_token_whole_word);
    RUN(test_tokenizer_add_embedding_is_atomic);
    RUN(test_tokenizer_add_special_longest_wins);
    RUN(test_tokenizer_concurrent_encodes_agree);
    tf_remove_tokenizer(g_dir);
    TEST_END();
}
