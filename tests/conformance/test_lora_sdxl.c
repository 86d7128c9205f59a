/* SDXL adapters and the refiner hand-off on sdxl-narrow: a kohya LoRA written with the LDM module
 * names kohya's SDXL trainer uses (lora_unet_input_blocks_4_1_..., lora_unet_middle_block_1_...,
 * lora_unet_output_blocks_2_2_conv, lora_te1_ / lora_te2_) binds every module to the
 * diffusers weight it changes, in the folder and the single file (OpenCLIP's fused
 * in_proj for TE2); applied through the pipeline it changes the image, and taking it off
 * gives the base image back bit for bit. An SDXL embedding (clip_l + clip_g) loads. */
#include <math.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/text.h"
#include "formats/safetensors.h"
#include "pipeline/pipeline.h"
#include "test.h"
#include "util.h"

#define RANK 2

typedef struct mod {
    const char *kohya, *canonical;
    int64_t     out, in, k; /* k = 0: linear; 3: 3x3 conv */
} mod;

static const mod k_mods[] = {
    {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
     "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", 16, 16, 0},
    {"lora_unet_middle_block_1_proj_in", "unet.mid_block.attentions.0.proj_in.weight", 32, 32, 0},
    {"lora_unet_input_blocks_3_0_op", "unet.down_blocks.0.downsamplers.0.conv.weight", 8, 8, 3},
    {"lora_unet_output_blocks_2_2_conv", "unet.up_blocks.0.upsamplers.0.conv.weight", 32, 32, 3},
    {"lora_unet_output_blocks_3_0_out_layers_3", "unet.up_blocks.1.resnets.0.conv2.weight", 16, 16,
     3},
    {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
     "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight", 16, 16, 0},
    {"lora_te2_text_model_encoder_layers_1_self_attn_v_proj",
     "text_encoder_2.text_model.encoder.layers.1.self_attn.v_proj.weight", 16, 16, 0},
};
#define N_MODS ((int)IMGD_ARRAY_LEN(k_mods))

static uint32_t g_rng = 12345;
static float    small_value(void) {
       g_rng = g_rng * 1664525u + 1013904223u;
       return (float)((int32_t)(g_rng >> 24) % 9 - 4) / 8.0f;
}

static bool write_lora(const char *path) {
    imgd_st_entry e[3 * N_MODS];
    char          names[3 * N_MODS][160];
    memset(e, 0, sizeof e);
    for (size_t i = 0; i < (size_t)N_MODS; i++) {
        const mod *m = &k_mods[i];
        (void)imgd_fmt(names[3 * i], sizeof names[0], "%s.lora_down.weight", m->kohya);
        (void)imgd_fmt(names[3 * i + 1], sizeof names[0], "%s.lora_up.weight", m->kohya);
        (void)imgd_fmt(names[3 * i + 2], sizeof names[0], "%s.alpha", m->kohya);
        e[3 * i]     = (imgd_st_entry){.name = names[3 * i], .dtype = IMGD_DTYPE_F32};
        e[3 * i + 1] = (imgd_st_entry){.name = names[3 * i + 1], .dtype = IMGD_DTYPE_F32};
        e[3 * i + 2] = (imgd_st_entry){.name = names[3 * i + 2], .dtype = IMGD_DTYPE_F32};
        if (m->k) {
            e[3 * i].n_dims     = 4;
            e[3 * i + 1].n_dims = 4;
            memcpy(e[3 * i].shape, (int64_t[]){RANK, m->in, m->k, m->k}, 4 * sizeof(int64_t));
            memcpy(e[3 * i + 1].shape, (int64_t[]){m->out, RANK, 1, 1}, 4 * sizeof(int64_t));
        } else {
            e[3 * i].n_dims     = 2;
            e[3 * i + 1].n_dims = 2;
            memcpy(e[3 * i].shape, (int64_t[]){RANK, m->in}, 2 * sizeof(int64_t));
            memcpy(e[3 * i + 1].shape, (int64_t[]){m->out, RANK}, 2 * sizeof(int64_t));
        }
    }
    const char     *mk[] = {"ss_base_model_version"}, *mv[] = {"sdxl_base_v1-0"};
    imgd_st_writer *wr = NULL;
    if (imgd_st_writer_open(path, e, (size_t)3 * N_MODS, mk, mv, 1, &wr) != IMGD_OK) return false;
    bool ok = true;
    for (int t = 0; t < 3 * N_MODS && ok; t++) {
        size_t n = 1;
        for (int32_t d = 0; d < e[t].n_dims; d++) n *= (size_t)e[t].shape[d];
        for (size_t i = 0; i < n && ok; i++) {
            float v = e[t].n_dims ? small_value() : (float)RANK;
            ok      = imgd_st_writer_write(wr, &v, 4) == IMGD_OK;
        }
    }
    if (!ok) {
        imgd_st_writer_abort(wr);
        return false;
    }
    return imgd_st_writer_close(wr) == IMGD_OK;
}

static imgd_model *load(const char *shared, const char *layout, const char *lora_dir) {
    char             path[4096], tok[4096];
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.arch.te_heads    = 4;
    if (strstr(layout, ".safetensors")) lp.arch.groups = 4;
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/sdxl-narrow/diffusers/tokenizer", shared);
    (void)imgd_fmt(path, sizeof path, "%s/conformance/sdxl-narrow/%s", shared, layout);
    lp.tokenizer_dir = tok;
    lp.lora_dir      = lora_dir;
    imgd_model *m    = NULL;
    imgd_status st   = imgd_model_load(path, &lp, &m);
    CHECK_MSG(st == IMGD_OK, "load %s: %s", path, imgd_last_error());
    return m;
}

static float *gen_ref(imgd_model *m, const imgd_lora_spec *l, imgd_model *refiner, float sw) {
    imgd_gen_params p = imgd_gen_params_default();
    p.prompt          = "a red fox";
    p.steps           = 4;
    p.cfg             = 5.0f;
    p.width = p.height  = 64;
    p.seed              = 9;
    p.loras             = l;
    p.n_loras           = l ? 1 : 0;
    p.refiner           = refiner;
    p.refiner_switch    = sw;
    imgd_gen_result *r  = NULL;
    imgd_status      st = imgd_generate(m, &p, &r);
    CHECK_MSG(st == IMGD_OK, "generate: %s", imgd_last_error());
    if (st != IMGD_OK) return NULL;
    float *px = r->pixels;
    r->pixels = NULL;
    imgd_gen_result_free(r);
    return px;
}

static float *gen(imgd_model *m, const imgd_lora_spec *l) {
    return gen_ref(m, l, NULL, 0.8f);
}

static double max_diff(const float *a, const float *b) {
    double d = 0;
    for (size_t i = 0; i < (size_t)3 * 64 * 64; i++) d = fmax(d, fabs((double)a[i] - (double)b[i]));
    return d;
}

static void test_lora_sdxl_ldm_names_bind_and_apply(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: SDXL LoRA names not checked");
        return;
    }
    char dir[4096], path[4096];
    tu_tmp_path(dir, sizeof dir, "lora-sdxl");
    mkdir(dir, 0755);
    (void)imgd_fmt(path, sizeof path, "%s/xl_ldm.safetensors", dir);
    CHECK(write_lora(path));
    static const char *const layouts[] = {"diffusers", "sdxl-narrow.safetensors"};
    for (size_t li = 0; li < IMGD_ARRAY_LEN(layouts); li++) {
        imgd_model *m = load(shared, layouts[li], dir);
        if (!m) continue;
        imgd_wbind *binds[1] = {m->wb};
        imgd_lora  *l        = NULL;
        CHECK_STATUS(imgd_lora_load(path, binds, 1, m->mi->family, &l), IMGD_OK);
        if (l) {
            CHECK_MSG(l->n_unmatched == 0, "%s: %zu unmatched (e.g. %s)", layouts[li],
                      l->n_unmatched, l->n_unmatched ? l->unmatched[0] : "");
            CHECK_EQ_INT(l->n_mods, (size_t)N_MODS);
            for (int i = 0; i < N_MODS; i++) {
                bool found = false;
                for (size_t j = 0; j < l->n_mods; j++)
                    found = found || strcmp(l->mods[j].target, k_mods[i].canonical) == 0;
                CHECK_MSG(found, "%s: %s not bound to %s", layouts[li], k_mods[i].kohya,
                          k_mods[i].canonical);
            }
            imgd_lora_free(l);
        }
        /* through the pipeline: on changes the image, off restores it exactly */
        imgd_lora_spec spec = {path, 1.0f, NAN, IMGD_LORA_MODE_AUTO};
        float         *base = gen(m, NULL), *with = gen(m, &spec), *again = gen(m, NULL);
        if (base && with && again) {
            size_t n  = (size_t)3 * 64 * 64;
            double dl = 0;
            for (size_t i = 0; i < n; i++) dl = fmax(dl, fabs((double)with[i] - (double)base[i]));
            printf("sdxl lora %-24s max |with - base| %.3g\n", layouts[li], dl);
            CHECK_MSG(dl > 1e-3, "%s: the LoRA changed nothing", layouts[li]);
            CHECK_MSG(memcmp(base, again, n * sizeof *base) == 0,
                      "%s: the base image did not come back after the LoRA", layouts[li]);
        }
        imgd_free(base);
        imgd_free(with);
        imgd_free(again);
        imgd_model_free(m);
    }
}

/* Base -> refiner hand-off: a refiner with the base's own weights gives the base's image;
 * with a LoRA on the base only, the hand-off result differs from both the LoRA run and the
 * plain run (the refiner ran the late steps); bad refiners are refused by name. */
static void test_sdxl_refiner_handoff(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: SDXL refiner hand-off not checked");
        return;
    }
    char dir[4096], path[4096];
    tu_tmp_path(dir, sizeof dir, "lora-sdxl-ref");
    mkdir(dir, 0755);
    (void)imgd_fmt(path, sizeof path, "%s/xl_ldm.safetensors", dir);
    CHECK(write_lora(path));
    imgd_model *m = load(shared, "diffusers", dir);
    imgd_model *r = load(shared, "sdxl-narrow.safetensors", NULL);
    if (m && r) {
        imgd_lora_spec spec  = {path, 1.0f, NAN, IMGD_LORA_MODE_AUTO};
        float         *plain = gen_ref(m, NULL, NULL, 0.8f);
        float         *same  = gen_ref(m, NULL, r, 0.5f);
        float         *lora  = gen_ref(m, &spec, NULL, 0.8f);
        float         *hand  = gen_ref(m, &spec, r, 0.5f);
        if (plain && same && lora && hand) {
            double d_same = max_diff(plain, same), d_lora = max_diff(hand, lora);
            double d_plain = max_diff(hand, plain);
            printf("refiner: same weights %.3g, hand-off vs LoRA-only %.3g, vs plain %.3g\n",
                   d_same, d_lora, d_plain);
            CHECK_MSG(d_same <= 1e-5, "a same-weights refiner changed the image by %g", d_same);
            CHECK_MSG(d_lora > 1e-3 && d_plain > 1e-3, "the refiner did not run (%g, %g)", d_lora,
                      d_plain);
        }
        imgd_free(plain);
        imgd_free(same);
        imgd_free(lora);
        imgd_free(hand);
        imgd_gen_params p = imgd_gen_params_default();
        p.prompt          = "x";
        p.width = p.height   = 64;
        p.refiner            = r;
        p.refiner_switch     = 1.5f;
        imgd_gen_result *res = NULL;
        CHECK_STATUS(imgd_generate(m, &p, &res), IMGD_E_INVALID_ARG);
        CHECK(strstr(imgd_last_error(), "refiner_switch") != NULL);
        p.refiner_switch = 0.8f;
        p.refiner        = m;
        CHECK_STATUS(imgd_generate(m, &p, &res), IMGD_E_INVALID_ARG);
        imgd_gen_result_free(res);
    }
    imgd_model_free(m);
    imgd_model_free(r);
}

/* clip_l + clip_g embedding: one token of two vectors, each part in its encoder. */
static void test_sdxl_embedding_loads_both_parts(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: SDXL embedding not checked");
        return;
    }
    char path[4096];
    tu_tmp_path(path, sizeof path, "xlemb.safetensors");
    imgd_st_entry e[2] = {
        {.name = "clip_g", .dtype = IMGD_DTYPE_F32, .n_dims = 2, .shape = {2, 16}},
        {.name = "clip_l", .dtype = IMGD_DTYPE_F32, .n_dims = 2, .shape = {2, 16}}};
    imgd_st_writer *wr = NULL;
    CHECK_STATUS(imgd_st_writer_open(path, e, 2, NULL, NULL, 0, &wr), IMGD_OK);
    for (int i = 0; wr && i < 64; i++) {
        float v = (float)i / 8.0f;
        CHECK_STATUS(imgd_st_writer_write(wr, &v, 4), IMGD_OK);
    }
    if (wr) CHECK_STATUS(imgd_st_writer_close(wr), IMGD_OK);
    char             mp[4096], tok[4096];
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.arch.te_heads    = 4;
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/sdxl-narrow/diffusers/tokenizer", shared);
    (void)imgd_fmt(mp, sizeof mp, "%s/conformance/sdxl-narrow/diffusers", shared);
    const char *embs[1] = {path};
    lp.tokenizer_dir    = tok;
    lp.embeddings       = embs;
    lp.n_embeddings     = 1;
    imgd_model *m       = NULL;
    CHECK_STATUS(imgd_model_load(mp, &lp, &m), IMGD_OK);
    if (m) {
        CHECK_EQ_INT(m->n_ti, 2);
        /* clip_l (the file's second tensor: values 32/8..) goes to text_encoder, clip_g
         * (first: 0..) to text_encoder_2 */
        CHECK(m->te[0].ti_rows[0] == 4.0f && m->te[1].ti_rows[0] == 0.0f);
        imgd_model_free(m);
    }
}

int main(void) {
    RUN(test_lora_sdxl_ldm_names_bind_and_apply);
    RUN(test_sdxl_embedding_loads_both_parts);
    RUN(test_sdxl_refiner_handoff);
    TEST_END();
}
