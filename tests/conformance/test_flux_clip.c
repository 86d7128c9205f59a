/* FLUX's CLIP conditioning against ../shared/conformance/flux-narrow/goldens/
 * clip_text_encoder.safetensors: the kit's CLIP tokenizer (diffusers/tokenizer) gives the
 * stored input_ids for [pipeline prompt, ""], and the 2-layer narrow CLIPTextModel
 * (diffusers/text_encoder) gives last_hidden_state and pooler_output (final LayerNorm at
 * the first eos_token_id 49407, no projection: FLUX's pooled_projections input). Backends
 * "cpu" and "ref" (or $IMGD_TEST_BACKEND). Tolerance: max |a - b| <= 1e-4 * max(1, max|ref|). */
#include <math.h>

#include "backends.h"
#include "base/alloc.h"
#include "base/text.h"
#include "golden.h"
#include "models/clip_text.h"
#include "models/tokenizer.h"
#include "tensor/backend.h"
#include "test.h"
#include "util.h"

#define L_CLIP 77

static const char *g_shared;
static const char *k_prompts[2] = {"a photograph of an astronaut riding a horse, highly detailed",
                                   ""};

static void compare(const char *what, const char *be, const float *got, const float *ref,
                    size_t n) {
    double err = 0, amax = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= err)) err = d;
        if (fabs((double)ref[i]) > amax) amax = fabs((double)ref[i]);
    }
    double tol = 1e-4 * (amax > 1 ? amax : 1);
    printf("  flux-narrow CLIP %-4s %-18s max|err| %.3g (tol %.3g, max|ref| %.3g)\n", be, what, err,
           tol, amax);
    CHECK_MSG(err <= tol, "%s %s: max error %g > %g", be, what, err, tol);
}

/* The CLIP tokenizer reproduces the golden ids (BOS, tokens, EOS, padded with 49407). */
static void test_flux_clip_tokenizer_gives_golden_ids(void) {
    char           dir[4200];
    imgd_clip_tok *t = NULL;
    imgd_weights  *gw =
        tg_open_golden(g_shared, "flux-narrow/goldens/clip_text_encoder.safetensors");
    imgd_fmt(dir, sizeof dir, "%s/conformance/flux-narrow/diffusers/tokenizer", g_shared);
    REQUIRE(gw != NULL);
    CHECK_STATUS(imgd_clip_tok_load(dir, &t), IMGD_OK);
    REQUIRE(t != NULL);
    imgd_tensor_info ti;
    CHECK_STATUS(imgd_weights_find(gw, "input_ids", &ti), IMGD_OK);
    REQUIRE(ti.dtype == IMGD_DTYPE_I32 && ti.n_dims == 2 && ti.shape[0] == 2 &&
            ti.shape[1] == L_CLIP);
    for (size_t b = 0; b < 2; b++) {
        int32_t *ids = NULL, row[L_CLIP];
        size_t   n   = 0;
        CHECK_STATUS(imgd_clip_tok_encode(t, k_prompts[b], &ids, &n), IMGD_OK);
        if (!ids) continue;
        size_t k = n < L_CLIP - 2 ? n : L_CLIP - 2;
        row[0]   = imgd_clip_tok_bos(t);
        for (size_t i = 0; i < k; i++) row[1 + i] = ids[i];
        row[1 + k] = imgd_clip_tok_eos(t);
        for (size_t i = k + 2; i < L_CLIP; i++) row[i] = imgd_clip_tok_pad(t);
        CHECK_MSG(memcmp(row, (const int32_t *)ti.data + b * L_CLIP, sizeof row) == 0,
                  "CLIP ids of prompt %zu differ from the golden input_ids", b);
        imgd_free(ids);
    }
done:
    imgd_clip_tok_free(t);
    imgd_weights_free(gw);
}

static void run_backend(const char *be_name, imgd_wbind *b, const imgd_clip_text_cfg *cfg,
                        const imgd_weights *gw, const int32_t *ids) {
    imgd_graph        *g   = NULL;
    imgd_backend      *be  = NULL;
    float             *emb = imgd_malloc((size_t)2 * L_CLIP * (size_t)cfg->hidden * sizeof(float));
    float             *lhs = imgd_malloc((size_t)2 * L_CLIP * (size_t)cfg->hidden * sizeof(float));
    float              sel[2 * L_CLIP], pooled[2 * 64];
    imgd_clip_text_out out;
    REQUIRE(emb && lhs && cfg->hidden <= 64);
    CHECK_STATUS(imgd_clip_text_embed(b, "text_encoder", cfg, ids, 2, L_CLIP, NULL, 0, emb),
                 IMGD_OK);
    imgd_clip_text_pool_select(ids, 2, L_CLIP, 49407, sel); /* config eos_token_id */
    CHECK_STATUS(imgd_backend_new(be_name, NULL, &be), IMGD_OK);
    CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
    REQUIRE(be && g);
    imgd_tensor *x =
        imgd_graph_input(g, "embeds", IMGD_DTYPE_F32, 3, (int64_t[]){2, L_CLIP, cfg->hidden});
    imgd_clip_text_req req = imgd_clip_text_req_default();
    req.pooled             = true;
    CHECK_STATUS(imgd_clip_text_build(g, b, "text_encoder", cfg, 2, x, &req, &out), IMGD_OK);
    REQUIRE(imgd_graph_status(g) == IMGD_OK);
    imgd_graph_output(g, out.last_hidden_state);
    imgd_graph_output(g, out.pooled);
    CHECK_STATUS(imgd_graph_plan(g, be, NULL), IMGD_OK);
    CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(x, emb), IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(out.pool_select, sel), IMGD_OK);
    CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
    size_t       n_l = 0, n_p = 0;
    const float *rl = tg_golden(gw, "last_hidden_state", &n_l);
    const float *rp = tg_golden(gw, "pooler_output", &n_p);
    REQUIRE(rl && rp && n_l == (size_t)2 * L_CLIP * (size_t)cfg->hidden &&
            n_p == (size_t)2 * (size_t)cfg->hidden);
    CHECK_STATUS(imgd_graph_read_f32(g, out.last_hidden_state, lhs, n_l), IMGD_OK);
    CHECK_STATUS(imgd_graph_read_f32(g, out.pooled, pooled, n_p), IMGD_OK);
    compare("last_hidden_state", be_name, lhs, rl, n_l);
    compare("pooler_output", be_name, pooled, rp, n_p);
done:
    imgd_graph_free(g);
    imgd_backend_free(be);
    imgd_free(emb);
    imgd_free(lhs);
}

static void test_flux_clip_pooled_matches_goldens(void) {
    char             path[4200];
    imgd_weights    *w  = NULL;
    imgd_model_info *mi = NULL;
    imgd_wbind      *b  = NULL;
    imgd_weights    *gw =
        tg_open_golden(g_shared, "flux-narrow/goldens/clip_text_encoder.safetensors");
    imgd_fmt(path, sizeof path, "%s/conformance/flux-narrow/diffusers", g_shared);
    REQUIRE(gw != NULL);
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
    REQUIRE(w != NULL);
    CHECK_STATUS(imgd_model_detect(w, &mi), IMGD_OK);
    REQUIRE(mi != NULL);
    CHECK_EQ_INT(imgd_model_info_family(mi), IMGD_FAMILY_FLUX_DEV);
    CHECK_STATUS(imgd_wbind_new(w, mi, &b), IMGD_OK);
    REQUIRE(b != NULL);
    const imgd_te_config *te = NULL;
    for (int32_t i = 0; i < mi->n_te; i++)
        if (mi->te[i].component && strcmp(mi->te[i].component, "text_encoder") == 0)
            te = &mi->te[i];
    REQUIRE(te != NULL && te->type == IMGD_TE_CLIP_HF);
    imgd_clip_text_cfg cfg;
    CHECK_STATUS(imgd_clip_text_cfg_init(&cfg, te, 0), IMGD_OK); /* heads from config.json */
    CHECK_EQ_INT(cfg.heads, 4);
    CHECK_EQ_INT(cfg.layers, 2);
    imgd_tensor_info ti;
    CHECK_STATUS(imgd_weights_find(gw, "input_ids", &ti), IMGD_OK);
    REQUIRE(ti.dtype == IMGD_DTYPE_I32 && ti.shape[0] == 2 && ti.shape[1] == L_CLIP);
    for (size_t bi = 0; bi < tb_backends()->n; bi++)
        run_backend(tb_backends()->name[bi], b, &cfg, gw, ti.data);
done:
    imgd_wbind_free(b);
    imgd_model_info_free(mi);
    imgd_weights_free(w);
    imgd_weights_free(gw);
}

int main(void) {
    g_shared = tu_shared_dir();
    if (!g_shared) {
        TEST_SKIP("../shared/conformance absent: FLUX CLIP goldens not checked");
        TEST_END();
    }
    RUN(test_flux_clip_tokenizer_gives_golden_ids);
    RUN(test_flux_clip_pooled_matches_goldens);
    TEST_END();
}
