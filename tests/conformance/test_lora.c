/* Adapters against the conformance goldens: the kohya and PEFT LoRA of sd15-narrow at scales
 * 1.0 and 0.5 (goldens/lora.safetensors: UNet and text-encoder outputs), merged and unmerged;
 * the whole pipeline with the LoRA at 0.7 (txt2img_euler_lora0.7, structured and as a prompt
 * tag); textual inversion (ids, vectors, text-encoder output). Also: merge -> unmerge gives
 * back every weight bit for bit (hashes), synthetic LyCORIS files (LoCon conv, LoHa, LoKr)
 * against a merge computed here, unmatched keys counted, a LoRA for another family refused. */
#include <math.h>

#include "base/alloc.h"
#include "base/text.h"
#include "formats/safetensors.h"
#include "golden.h"
#include "models/prompt.h"
#include "pipeline/pipeline.h"
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

static char        g_dir[4096]; /* sd15-narrow */
static const char *g_shared;    /* ../shared */

static imgd_model *load_model(const char *const *emb, size_t n_emb, const char *lora_dir) {
    imgd_load_params lp = imgd_load_params_default();
    lp.embeddings       = emb;
    lp.n_embeddings     = n_emb;
    lp.lora_dir         = lora_dir;
    return tg_load_sd15(g_shared, lp);
}

/* Runs a graph built by fn on the model's backend, binding ins and reading out. */
static bool run_unet(imgd_model *m, imgd_weights *gd, float *out, size_t n) {
    imgd_graph *g = NULL;
    if (imgd_graph_new(NULL, &g) != IMGD_OK) return false;
    imgd_tensor *x = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4, (int64_t[]){2, 4, 32, 32});
    imgd_tensor *t = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){2});
    imgd_tensor *c = imgd_graph_input(g, "c", IMGD_DTYPE_F32, 3, (int64_t[]){2, 77, 16});
    imgd_tensor *o = NULL;
    imgd_status  st =
        imgd_unet_build(g, imgd_sd_unet_bind(m), "unet", &m->unet, x, t, c, NULL, NULL, &o);
    const float *gx = tg_golden_n(gd, "unet.sample", (size_t)2 * 4 * 32 * 32),
                *gt = tg_golden_n(gd, "unet.timestep", 2);
    const float *gc = tg_golden_n(gd, "unet.encoder_hidden_states", (size_t)2 * 77 * 16);
    if (st == IMGD_OK && gx && gt && gc) {
        imgd_graph_output(g, o);
        st = imgd_graph_plan(g, m->be, NULL);
        if (st == IMGD_OK) st = imgd_graph_alloc(g, NULL, 0);
        if (st == IMGD_OK) st = imgd_tensor_bind(x, (void *)(uintptr_t)gx);
        if (st == IMGD_OK) st = imgd_tensor_bind(t, (void *)(uintptr_t)gt);
        if (st == IMGD_OK) st = imgd_tensor_bind(c, (void *)(uintptr_t)gc);
        if (st == IMGD_OK) st = imgd_graph_compute(g);
        if (st == IMGD_OK) st = imgd_graph_read_f32(g, o, out, n);
    }
    CHECK_MSG(st == IMGD_OK, "unet: %s", imgd_last_error());
    imgd_graph_free(g);
    return st == IMGD_OK;
}

static bool run_te(imgd_model *m, const int32_t *ids, int32_t B, float *out) {
    size_t      n   = (size_t)B * 77 * 16;
    float      *emb = imgd_malloc(n * sizeof *emb);
    imgd_graph *g   = NULL;
    imgd_status st  = emb ? imgd_clip_text_embed(m->wb, "text_encoder", &m->te[0].cfg, ids, B, 77,
                                                 m->te[0].ti_rows, m->n_ti, emb)
                          : IMGD_E_NOMEM;
    if (st == IMGD_OK) st = imgd_graph_new(NULL, &g);
    if (st == IMGD_OK) {
        imgd_tensor       *x = imgd_graph_input(g, "e", IMGD_DTYPE_F32, 3, (int64_t[]){B, 77, 16});
        imgd_clip_text_req r = imgd_clip_text_req_default();
        imgd_clip_text_out o;
        st = imgd_clip_text_build(g, m->wb, "text_encoder", &m->te[0].cfg, B, x, &r, &o);
        if (st == IMGD_OK) {
            imgd_graph_output(g, o.last_hidden_state);
            st = imgd_graph_plan(g, m->be, NULL);
            if (st == IMGD_OK) st = imgd_graph_alloc(g, NULL, 0);
            if (st == IMGD_OK) st = imgd_tensor_bind(x, emb);
            if (st == IMGD_OK) st = imgd_graph_compute(g);
            if (st == IMGD_OK) st = imgd_graph_read_f32(g, o.last_hidden_state, out, n);
        }
    }
    CHECK_MSG(st == IMGD_OK, "text encoder: %s", imgd_last_error());
    imgd_graph_free(g);
    imgd_free(emb);
    return st == IMGD_OK;
}

static imgd_status apply(imgd_model *m, const char *path, float w, int32_t mode) {
    imgd_gen_params p  = imgd_gen_params_default();
    imgd_lora_spec  ls = {path, w, NAN, mode};
    p.prompt           = "";
    p.loras            = path ? &ls : NULL;
    p.n_loras          = path ? 1 : 0;
    return imgd_sd_lora_apply(m, &p);
}

/* FNV-1a over the bytes every canonical weight binds to now. */
static uint64_t weights_hash(imgd_model *m) {
    imgd_graph *g = NULL;
    uint64_t    h = 1469598103934665603ull;
    if (imgd_graph_new(NULL, &g) != IMGD_OK) return 0;
    const char *c;
    for (size_t i = 0; (c = imgd_wbind_name_at(m->wb, i)) != NULL; i++) {
        imgd_tensor *t = imgd_wbind_get(m->wb, g, c, 0, NULL);
        if (!t) continue;
        const uint8_t *d = t->data;
        for (size_t k = 0; k < imgd_tensor_nbytes(t); k++) h = (h ^ d[k]) * 1099511628211ull;
    }
    imgd_graph_free(g);
    return h;
}

/* ---- goldens ------------------------------------------------------------------------------- */

static void test_lora_unet_and_text_encoder_goldens(void) {
    char gp[4096], kohya[4096], peft[4096];
    (void)imgd_fmt(gp, sizeof gp, "%s/goldens/lora.safetensors", g_dir);
    (void)imgd_fmt(kohya, sizeof kohya, "%s/lora/narrow-lora_kohya.safetensors", g_dir);
    (void)imgd_fmt(peft, sizeof peft, "%s/lora/narrow-lora_peft.safetensors", g_dir);
    imgd_weights *gd = NULL;
    CHECK_STATUS(imgd_weights_open(gp, NULL, &gd), IMGD_OK);
    imgd_model *m = load_model(NULL, 0, NULL);
    if (!gd || !m) goto done;
    size_t           nu = (size_t)2 * 4 * 32 * 32, nt = (size_t)4 * 77 * 16;
    float           *ou = imgd_malloc(nu * 4), *ot = imgd_malloc(nt * 4);
    int32_t          ids[4 * 77];
    imgd_tensor_info ti;
    CHECK_STATUS(imgd_weights_find(gd, "text_encoder.input_ids", &ti), IMGD_OK);
    memcpy(ids, ti.data, sizeof ids);
    uint64_t    h0       = weights_hash(m);
    const char *files[2] = {kohya, peft};
    for (int f = 0; f < 2; f++)
        for (int32_t mode = IMGD_LORA_MODE_MERGE; mode <= IMGD_LORA_MODE_UNMERGED; mode++)
            for (int k = 0; k < 2; k++) {
                float s = k ? 0.5f : 1.0f;
                char  nu_name[64], nt_name[80];
                (void)imgd_fmt(nu_name, sizeof nu_name, "unet.out_scale_%.1f", (double)s);
                (void)imgd_fmt(nt_name, sizeof nt_name, "text_encoder.last_hidden_state_scale_%.1f",
                               (double)s);
                imgd_status st = apply(m, files[f], s, mode);
                CHECK_MSG(st == IMGD_OK, "apply: %s", imgd_last_error());
                if (st != IMGD_OK) continue;
                if (mode == IMGD_LORA_MODE_MERGE) CHECK(weights_hash(m) != h0);
                if (mode == IMGD_LORA_MODE_UNMERGED) CHECK(weights_hash(m) == h0);
                const float *ru = tg_golden_n(gd, nu_name, nu), *rt = tg_golden_n(gd, nt_name, nt);
                if (ru && run_unet(m, gd, ou, nu)) {
                    double e = tg_rel_err(ou, ru, nu);
                    printf("  %s %s s=%.1f unet: max err %.2e\n", f ? "peft" : "kohya",
                           mode == 1 ? "merged" : "unmerged", (double)s, e);
                    CHECK_MSG(e <= 1e-4, "unet error %g", e);
                }
                if (rt && run_te(m, ids, 4, ot)) {
                    double e = tg_rel_err(ot, rt, nt);
                    printf("  %s %s s=%.1f text encoder: max err %.2e\n", f ? "peft" : "kohya",
                           mode == 1 ? "merged" : "unmerged", (double)s, e);
                    CHECK_MSG(e <= 1e-4, "text encoder error %g", e);
                }
            }
    /* removing the LoRA: the base weights bit for bit, and the base outputs */
    CHECK_STATUS(apply(m, kohya, 1.0f, IMGD_LORA_MODE_MERGE), IMGD_OK);
    CHECK_STATUS(apply(m, NULL, 0, 0), IMGD_OK);
    CHECK(weights_hash(m) == h0);
    CHECK(imgd_wbind_override_count(m->wb) == 0);
    const float *r0 = tg_golden_n(gd, "unet.out_no_lora", nu);
    if (r0 && run_unet(m, gd, ou, nu)) CHECK(tg_rel_err(ou, r0, nu) <= 1e-4);
    imgd_free(ou);
    imgd_free(ot);
done:
    imgd_model_free(m);
    imgd_weights_free(gd);
}

typedef struct replay {
    imgd_weights *g;
    int           draws;
} replay;

static bool replay_noise(float *out, size_t n, void *user) {
    replay *r = user;
    if (r->draws++ != 0) { /* Euler's per-step draws are multiplied by s_churn = 0 */
        memset(out, 0, n * sizeof *out);
        return true;
    }
    const float *d = tg_golden_n(r->g, "initial_latents", n);
    if (d) memcpy(out, d, n * sizeof *out);
    return d != NULL;
}

static void test_lora_txt2img_pipeline_golden(void) {
    char gp[4096], kohya[4096], dir[4096], png[4096];
    (void)imgd_fmt(gp, sizeof gp, "%s/goldens/txt2img_euler_lora0.7.safetensors", g_dir);
    (void)imgd_fmt(dir, sizeof dir, "%s/lora", g_dir);
    (void)imgd_fmt(kohya, sizeof kohya, "%s/narrow-lora_kohya.safetensors", dir);
    imgd_model *m = load_model(NULL, 0, dir);
    replay      r = {0};
    CHECK_STATUS(imgd_weights_open(gp, NULL, &r.g), IMGD_OK);
    for (int c = 0; m && r.g && c < 3; c++) {
        imgd_gen_params p  = imgd_gen_params_default();
        imgd_lora_spec  ls = {kohya, 0.7f, NAN,
                             c == 0 ? IMGD_LORA_MODE_MERGE : IMGD_LORA_MODE_UNMERGED};
        p.prompt           = "a photograph of an astronaut riding a horse, highly detailed";
        if (c == 2) { /* the A1111 tag, looked up in lora_dir */
            (void)imgd_fmt(png, sizeof png, "%s <lora:narrow-lora_kohya:0.7>", p.prompt);
            p.prompt = png;
        } else {
            p.loras   = &ls;
            p.n_loras = 1;
        }
        p.negative           = "blurry, low quality, deformed";
        p.steps              = 5;
        p.width              = 128;
        p.height             = 128;
        p.schedule           = "linspace";
        p.noise              = replay_noise;
        p.noise_user         = &r;
        r.draws              = 0;
        imgd_gen_result *res = NULL;
        imgd_status      st  = imgd_generate(m, &p, &res);
        CHECK_MSG(st == IMGD_OK, "generate: %s", imgd_last_error());
        const float *ref = tg_golden_n(r.g, "image", (size_t)3 * 128 * 128);
        if (st == IMGD_OK && ref) {
            double mx = 0, mean = 0;
            for (size_t i = 0; i < (size_t)3 * 128 * 128; i++) {
                double d = fabs((double)res->pixels[i] - (double)ref[i]);
                mx       = d > mx ? d : mx;
                mean += d;
            }
            mean /= 3 * 128 * 128;
            printf("  txt2img_euler_lora0.7 (%s): max %.2e mean %.2e\n",
                   c == 0   ? "merged"
                   : c == 1 ? "unmerged"
                            : "prompt tag",
                   mx, mean);
            CHECK(mx <= 2e-3 && mean <= 1e-4);
        }
        imgd_gen_result_free(res);
    }
    imgd_weights_free(r.g);
    imgd_model_free(m);
}

static void test_textual_inversion_golden(void) {
    const char *ext[2] = {"pt", "safetensors"};
    char        gp[4096], ep[4096];
    (void)imgd_fmt(gp, sizeof gp, "%s/goldens/textual_inversion.safetensors", g_dir);
    imgd_weights *gd = NULL;
    CHECK_STATUS(imgd_weights_open(gp, NULL, &gd), IMGD_OK);
    static const char *const prompts[3] = {"a photo of narrowti in a forest", "narrowti",
                                           "narrowti, narrowti and a cat"};
    for (int e = 0; gd && e < 2; e++) {
        (void)imgd_fmt(ep, sizeof ep, "%s/textual_inversion/narrowti.%s", g_dir, ext[e]);
        const char *list[1] = {ep};
        imgd_model *m       = load_model(list, 1, NULL);
        if (!m) continue;
        CHECK(m->n_ti == 2);
        const float *rows = tg_golden_n(gd, "token_embedding_rows_49408_49409", 32);
        /* bit-identical rows: compare the bit patterns, not the float values */
        for (int32_t i = 0; rows && i < 32; i++) {
            uint32_t a, b;
            memcpy(&a, &rows[i], 4);
            memcpy(&b, &m->te[0].ti_rows[i], 4);
            CHECK(a == b);
        }
        imgd_tensor_info ti;
        CHECK_STATUS(imgd_weights_find(gd, "input_ids", &ti), IMGD_OK);
        int32_t ids[3 * 77];
        for (int i = 0; i < 3; i++) {
            imgd_prompt_chunks pc;
            CHECK_STATUS(imgd_prompt_encode(m->tok, prompts[i], -1, &pc), IMGD_OK);
            memcpy(ids + (size_t)i * 77, pc.ids, 77 * sizeof *ids);
            imgd_prompt_chunks_free(&pc);
        }
        CHECK(memcmp(ids, ti.data, sizeof ids) == 0);
        float       *out = imgd_malloc((size_t)3 * 77 * 16 * sizeof *out);
        const float *ref = tg_golden_n(gd, "last_hidden_state", (size_t)3 * 77 * 16);
        if (out && ref && run_te(m, ids, 3, out)) {
            double err = tg_rel_err(out, ref, (size_t)3 * 77 * 16);
            printf("  textual inversion (.%s): text encoder max err %.2e\n", ext[e], err);
            CHECK(err <= 1e-4);
        }
        imgd_free(out);
        imgd_model_free(m);
    }
    imgd_weights_free(gd);
}

/* ---- synthetic LyCORIS ---------------------------------------------------------------------- */

typedef struct syn {
    const char *name;
    int32_t     n_dims;
    int64_t     shape[4];
    float       v[288];
} syn;

static float rnd(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xFFFF) / 65536.0f - 0.5f;
}

static int64_t syn_numel(const syn *t) {
    int64_t n = 1;
    for (int32_t i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

static bool write_syn(const char *path, syn *t, int n, const char *mk, const char *mv) {
    imgd_st_entry e[16] = {0};
    for (int i = 0; i < n; i++) {
        memset(&e[i], 0, sizeof e[i]);
        e[i].name   = t[i].name;
        e[i].dtype  = IMGD_DTYPE_F32;
        e[i].n_dims = t[i].n_dims;
        for (int d = 0; d < t[i].n_dims; d++) e[i].shape[d] = t[i].shape[d];
    }
    imgd_st_writer *wr   = NULL;
    const char     *k[1] = {mk}, *v[1] = {mv};
    if (imgd_st_writer_open(path, e, (size_t)n, k, v, mk ? 1 : 0, &wr) != IMGD_OK) return false;
    for (int i = 0; i < n; i++)
        if (imgd_st_writer_write(wr, t[i].v, (size_t)syn_numel(&t[i]) * 4) != IMGD_OK) {
            imgd_st_writer_abort(wr);
            return false;
        }
    return imgd_st_writer_close(wr) == IMGD_OK;
}

#define CONV   "lora_unet_down_blocks_0_resnets_0_conv1"
#define TOQ    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
#define FF2    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2"
#define W_CONV "unet.down_blocks.0.resnets.0.conv1.weight"
#define W_TOQ  "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
#define W_FF2  "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"

static void test_lycoris_synthetic_merge_matches_hand_computation(void) {
    static syn t[13] = {
        {CONV ".lora_down.weight", 4, {2, 8, 3, 3}, {0}},
        {CONV ".lora_up.weight", 4, {8, 2, 1, 1}, {0}},
        {CONV ".alpha", 0, {0}, {0}},
        {TOQ ".hada_w1_a", 2, {8, 2}, {0}},
        {TOQ ".hada_w1_b", 2, {2, 8}, {0}},
        {TOQ ".hada_w2_a", 2, {8, 2}, {0}},
        {TOQ ".hada_w2_b", 2, {2, 8}, {0}},
        {TOQ ".alpha", 0, {0}, {0}},
        {FF2 ".lokr_w1", 2, {2, 4}, {0}},
        {FF2 ".lokr_w2_a", 2, {4, 2}, {0}},
        {FF2 ".lokr_w2_b", 2, {2, 8}, {0}},
        {FF2 ".alpha", 0, {0}, {0}},
        {"lora_unet_no_such_module.lora_down.weight", 2, {2, 8}, {0}},
    };
    uint32_t seed = 7;
    for (int i = 0; i < 13; i++)
        for (int64_t j = 0; j < syn_numel(&t[i]); j++) t[i].v[j] = rnd(&seed);
    t[2].v[0] = t[7].v[0] = t[11].v[0] = 1.0f; /* alpha 1 over dim 2: scale 0.5 */
    char path[4096], bad[4096];
    tu_tmp_path(path, sizeof path, "lycoris_syn.safetensors");
    tu_tmp_path(bad, sizeof bad, "lora_sdxl.safetensors");
    CHECK(write_syn(path, t, 13, "ss_base_model_version", "sd_v1"));
    CHECK(write_syn(bad, t, 3, "ss_base_model_version", "sdxl_base_v1-0"));
    imgd_model *m = load_model(NULL, 0, NULL);
    if (!m) return;
    imgd_wbind *bind[1] = {m->wb};
    imgd_lora  *l       = NULL;
    CHECK_STATUS(imgd_lora_load(path, bind, 1, m->mi->family, &l), IMGD_OK);
    if (l) {
        CHECK(l->n_mods == 3);
        CHECK(l->n_unmatched == 1);
        CHECK(l->n_unmatched && strstr(l->unmatched[0], "no_such_module") != NULL);
    }
    imgd_lora_free(l);
    l = NULL;
    CHECK_STATUS(imgd_lora_load(bad, bind, 1, m->mi->family, &l), IMGD_E_UNSUPPORTED);
    CHECK(strstr(imgd_last_error(), imgd_family_name(IMGD_FAMILY_SDXL)) != NULL);
    imgd_lora_free(l);

    /* hand merge at weight 0.8: W + 0.8 * 0.5 * delta */
    static float base[3][576], want[3][576];
    const char  *names[3] = {W_CONV, W_TOQ, W_FF2};
    size_t       ns[3]    = {(size_t)8 * 8 * 9, 64, 256};
    for (int k = 0; k < 3; k++)
        CHECK_STATUS(imgd_wbind_read_f32(m->wb, names[k], base[k], ns[k]), IMGD_OK);
    float s = 0.8f * 0.5f;
    for (int o = 0; o < 8; o++) /* LoCon: up [8, 2] @ down [2, 72] */
        for (int j = 0; j < 72; j++) {
            float d = 0;
            for (int r = 0; r < 2; r++) d += t[1].v[o * 2 + r] * t[0].v[r * 72 + j];
            want[0][o * 72 + j] = base[0][o * 72 + j] + s * d;
        }
    for (int o = 0; o < 8; o++) /* LoHa: (w1a @ w1b) * (w2a @ w2b) */
        for (int j = 0; j < 8; j++) {
            float a = 0, b = 0;
            for (int r = 0; r < 2; r++) {
                a += t[3].v[o * 2 + r] * t[4].v[r * 8 + j];
                b += t[5].v[o * 2 + r] * t[6].v[r * 8 + j];
            }
            want[1][o * 8 + j] = base[1][o * 8 + j] + s * a * b;
        }
    for (int i = 0; i < 2; i++) /* LoKr: kron(w1 [2, 4], w2a @ w2b [4, 8]) -> [8, 32] */
        for (int j = 0; j < 4; j++)
            for (int p = 0; p < 4; p++)
                for (int q = 0; q < 8; q++) {
                    float w2 = 0;
                    for (int r = 0; r < 2; r++) w2 += t[9].v[p * 2 + r] * t[10].v[r * 8 + q];
                    int idx      = (i * 4 + p) * 32 + j * 8 + q;
                    want[2][idx] = base[2][idx] + s * t[8].v[i * 4 + j] * w2;
                }
    CHECK_STATUS(apply(m, path, 0.8f, IMGD_LORA_MODE_MERGE), IMGD_OK);
    imgd_graph *g = NULL;
    CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
    for (int k = 0; g && k < 3; k++) {
        imgd_tensor *w   = imgd_wbind_get(m->wb, g, names[k], 0, NULL);
        double       err = 0;
        for (size_t i = 0; w && i < ns[k]; i++) {
            double d = fabs((double)((const float *)w->data)[i] - (double)want[k][i]);
            err      = d > err ? d : err;
        }
        printf("  synthetic %s merged: max err %.2e\n",
               k == 0   ? "LoCon conv"
               : k == 1 ? "LoHa"
                        : "LoKr",
               err);
        CHECK(w && err <= 1e-6);
    }
    imgd_graph_free(g);
    /* unmerged (conv hook, full deltas) gives the merged UNet output */
    char gp[4096];
    (void)imgd_fmt(gp, sizeof gp, "%s/goldens/lora.safetensors", g_dir);
    imgd_weights *gd = NULL;
    size_t        nu = (size_t)2 * 4 * 32 * 32;
    float        *om = imgd_malloc(nu * 4), *ou = imgd_malloc(nu * 4);
    CHECK_STATUS(imgd_weights_open(gp, NULL, &gd), IMGD_OK);
    if (gd && om && ou && run_unet(m, gd, om, nu) &&
        apply(m, path, 0.8f, IMGD_LORA_MODE_UNMERGED) == IMGD_OK && run_unet(m, gd, ou, nu)) {
        double e = tg_rel_err(ou, om, nu);
        printf("  synthetic LyCORIS unmerged vs merged UNet: max err %.2e\n", e);
        CHECK(e <= 1e-5);
    }
    imgd_free(om);
    imgd_free(ou);
    imgd_weights_free(gd);
    imgd_model_free(m);
}

int main(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: LoRA goldens not checked");
        TEST_END();
    }
    g_shared = shared;
    (void)imgd_fmt(g_dir, sizeof g_dir, "%s/conformance/sd15-narrow", shared);
    RUN(test_lora_unet_and_text_encoder_goldens);
    RUN(test_lora_txt2img_pipeline_golden);
    RUN(test_textual_inversion_golden);
    RUN(test_lycoris_synthetic_merge_matches_hand_computation);
    TEST_END();
}
