/* T5 tokenizer against ../shared/conformance/flux-narrow/goldens/t5_tokenizer_cases.json
 * (sentencepiece + transformers' slow T5Tokenizer, legacy=True): for every case the raw
 * SentencePiece pieces, the ids with </s> and the 64 ids FluxPipeline feeds T5; and the ids
 * stored in goldens/t5_encoder.safetensors for the pipeline prompt and "". */
#include "base/alloc.h"
#include "base/json.h"
#include "base/map.h"
#include "base/text.h"
#include "golden.h"
#include "models/t5_tokenizer.h"
#include "test.h"
#include "util.h"

static char        g_kit[4096]; /* .../conformance/flux-narrow */
static const char *g_shared;

static cJSON *load_cases(void) {
    char path[4200];
    imgd_fmt(path, sizeof path, "%s/goldens/t5_tokenizer_cases.json", g_kit);
    char  *buf = NULL;
    size_t len = 0;
    cJSON *js  = NULL;
    if (imgd_file_read_all(path, 64u << 20, &buf, &len) != IMGD_OK ||
        imgd_json_parse(path, buf, len, 64u << 20, 16, &js) != IMGD_OK)
        fprintf(stderr, "%s: %s\n", path, imgd_last_error());
    imgd_free(buf);
    return js;
}

static bool same_ids(const char *what, const char *prompt, const int32_t *ids, size_t n,
                     const cJSON *a) {
    size_t m = (size_t)cJSON_GetArraySize(a);
    size_t i = 0;
    for (const cJSON *e = a ? a->child : NULL; e && i < n; e = e->next, i++) {
        if ((int32_t)e->valuedouble != ids[i]) {
            fprintf(stderr, "%s of \"%s\": [%zu] = %d, expected %d\n", what, prompt, i, ids[i],
                    (int32_t)e->valuedouble);
            return false;
        }
    }
    if (m != n) {
        fprintf(stderr, "%s of \"%s\": %zu ids, expected %zu\n", what, prompt, n, m);
        return false;
    }
    return true;
}

static bool same_pieces(const char *prompt, const char *pieces, size_t n, const cJSON *a) {
    size_t      i = 0;
    const char *p = pieces;
    for (const cJSON *e = a ? a->child : NULL; e; e = e->next, i++) {
        if (i >= n || strcmp(p, e->valuestring) != 0) {
            fprintf(stderr, "pieces of \"%s\": [%zu] = '%s', expected '%s'\n", prompt, i,
                    i < n ? p : "(none)", e->valuestring);
            return false;
        }
        p += strlen(p) + 1;
    }
    if (i != n) fprintf(stderr, "pieces of \"%s\": %zu, expected %zu\n", prompt, n, i);
    return i == n;
}

/* One case: pieces, ids_untruncated, ids_64. */
static bool check_case(const imgd_t5_tok *t, const cJSON *c) {
    const char *prompt = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
    int32_t    *ids    = NULL;
    char       *pcs    = NULL;
    size_t      n      = 0;
    bool        good   = true;
    imgd_status st     = imgd_t5_tok_sp_encode(t, prompt, &ids, &pcs, &n);
    CHECK_MSG(st == IMGD_OK, "\"%s\": %s", prompt, imgd_last_error());
    if (st != IMGD_OK) return false;
    good = same_pieces(prompt, pcs, n, cJSON_GetObjectItemCaseSensitive(c, "pieces"));
    imgd_free(ids);
    imgd_free(pcs);
    ids = NULL;
    st  = imgd_t5_tok_encode(t, prompt, &ids, &n);
    CHECK_MSG(st == IMGD_OK, "\"%s\": %s", prompt, imgd_last_error());
    if (st != IMGD_OK) return false;
    int32_t *full = imgd_malloc((n + 1) * sizeof *full);
    if (!full) return false;
    memcpy(full, ids, n * sizeof *ids);
    size_t nf = n;
    if (nf == 0 || full[nf - 1] != imgd_t5_tok_eos(t)) full[nf++] = imgd_t5_tok_eos(t);
    good = same_ids("ids_untruncated", prompt, full, nf,
                    cJSON_GetObjectItemCaseSensitive(c, "ids_untruncated")) &&
           good;
    imgd_free(full);
    imgd_free(ids);
    int32_t row[64];
    size_t  n_text = 0;
    CHECK_STATUS(imgd_t5_tok_encode_padded(t, prompt, 64, row, &n_text), IMGD_OK);
    CHECK_EQ_INT(n_text, n);
    good =
        same_ids("ids_64", prompt, row, 64, cJSON_GetObjectItemCaseSensitive(c, "ids_64")) && good;
    return good;
}

static void test_conformance_t5_tokenizer_cases(void) {
    imgd_t5_tok *t = NULL;
    char         dir[4200];
    imgd_fmt(dir, sizeof dir, "%s/diffusers/tokenizer_2", g_kit);
    cJSON *js = load_cases();
    REQUIRE(js != NULL);
    CHECK_STATUS(imgd_t5_tok_load(dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    CHECK_EQ_INT(imgd_t5_tok_piece_count(t), 2000);
    CHECK_EQ_INT(imgd_t5_tok_vocab_size(t), 2100);
    CHECK_EQ_INT(imgd_t5_tok_pad(t), 0);
    CHECK_EQ_INT(imgd_t5_tok_eos(t), 1);
    CHECK_EQ_INT(imgd_t5_tok_unk(t), 2);
    char        buf[24];
    const char *x0 = imgd_t5_tok_token(t, 2099, buf, sizeof buf);
    CHECK(x0 && strcmp(x0, "<extra_id_0>") == 0);
    int total = 0, ok = 0;
    for (const cJSON *c = js->child; c; c = c->next) {
        total++;
        bool good = check_case(t, c);
        CHECK_MSG(good, "case \"%s\" differs",
                  cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring);
        ok += good;
    }
    printf("t5 tokenizer cases: %d/%d match\n", ok, total);
    CHECK_EQ_INT(total, 61);
    CHECK_EQ_INT(ok, 61);
done:
    imgd_t5_tok_free(t);
    cJSON_Delete(js);
}

/* The same spiece.model loaded as a file (no tokenizer_config.json: 100 extra ids). */
static void test_conformance_t5_tokenizer_file_equals_folder(void) {
    imgd_t5_tok *t = NULL;
    char         path[4200];
    imgd_fmt(path, sizeof path, "%s/diffusers/tokenizer_2/spiece.model", g_kit);
    CHECK_STATUS(imgd_t5_tok_load(path, &t), IMGD_OK);
    REQUIRE(t != NULL);
    int32_t *ids = NULL;
    size_t   n   = 0;
    CHECK_STATUS(imgd_t5_tok_encode(t, "<extra_id_99> and <extra_id_5>", &ids, &n), IMGD_OK);
    CHECK_EQ_INT(n, 3);
    if (n == 3) {
        CHECK_EQ_INT(ids[0], 2000);
        CHECK_EQ_INT(ids[1], 10);
        CHECK_EQ_INT(ids[2], 2094);
    }
    imgd_free(ids);
done:
    imgd_t5_tok_free(t);
}

/* goldens/t5_encoder.safetensors input_ids = the tokenizer on [prompt, ""]. */
static void test_conformance_t5_tokenizer_encoder_ids(void) {
    imgd_weights *w = tg_open_golden(g_shared, "flux-narrow/goldens/t5_encoder.safetensors");
    imgd_t5_tok  *t = NULL;
    char          dir[4200];
    imgd_fmt(dir, sizeof dir, "%s/diffusers/tokenizer_2", g_kit);
    REQUIRE(w != NULL);
    CHECK_STATUS(imgd_t5_tok_load(dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    imgd_tensor_info ti;
    CHECK_STATUS(imgd_weights_find(w, "input_ids", &ti), IMGD_OK);
    REQUIRE(ti.dtype == IMGD_DTYPE_I32 && ti.n_dims == 2 && ti.shape[0] == 2 && ti.shape[1] == 64);
    const char *prompts[2] = {"a photograph of an astronaut riding a horse, highly detailed", ""};
    for (int b = 0; b < 2; b++) {
        int32_t row[64];
        CHECK_STATUS(imgd_t5_tok_encode_padded(t, prompts[b], 64, row, NULL), IMGD_OK);
        CHECK_MSG(memcmp(row, (const int32_t *)ti.data + (size_t)b * 64, sizeof row) == 0,
                  "ids of prompt %d differ from t5_encoder.safetensors input_ids", b);
    }
done:
    imgd_t5_tok_free(t);
    imgd_weights_free(w);
}

int main(void) {
    g_shared = tu_shared_dir();
    if (!g_shared) {
        TEST_SKIP("../shared/conformance absent: T5 tokenizer cases not checked");
        TEST_END();
    }
    imgd_fmt(g_kit, sizeof g_kit, "%s/conformance/flux-narrow", g_shared);
    RUN(test_conformance_t5_tokenizer_cases);
    RUN(test_conformance_t5_tokenizer_file_equals_folder);
    RUN(test_conformance_t5_tokenizer_encoder_ids);
    TEST_END();
}
