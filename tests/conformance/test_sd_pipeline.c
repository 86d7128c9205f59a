/* Whole SD 1.x pipelines through the public API against the conformance goldens:
 * txt2img with every sampler of the kit, clip skip, 256x256, img2img and both kinds of
 * inpainting, for every layout of the same model (diffusers folder, .safetensors, .ckpt).
 * The recorded random draws are replayed through imgd_gen_params.noise, so the images
 * must match diffusers within the kit's tolerances (final image in [0,1]: max abs <= 2e-3,
 * mean abs <= 1e-4). Also: same seed twice is bit-identical, and a batch of 2 equals two
 * batch-1 runs given the same noise. */
#include <math.h>
#include <string.h>

#include "backends.h"
#include "base/alloc.h"
#include "base/text.h"
#include "pipeline/pipeline.h"
#include "tensor/backend.h"
#include "test.h"
#include "util.h"

typedef struct replay {
    imgd_weights *g;       /* the golden file */
    int           next;    /* next noise.NN */
    bool          initial; /* the first draw is initial_latents (txt2img passes latents) */
    int           draws;
} replay;

static bool golden_f32(imgd_weights *g, const char *name, const float **data, size_t *n) {
    imgd_tensor_info t;
    if (imgd_weights_find(g, name, &t) != IMGD_OK || t.dtype != IMGD_DTYPE_F32) return false;
    *data = t.data;
    *n    = (size_t)(t.nbytes / 4);
    return true;
}

static bool replay_noise(float *out, size_t n, void *user) {
    replay      *r = user;
    const float *d = NULL;
    size_t       k = 0;
    char         name[64];
    if (r->initial && r->draws == 0)
        (void)imgd_fmt(name, sizeof name, "initial_latents");
    else
        (void)imgd_fmt(name, sizeof name, "noise.%02d", r->next++);
    r->draws++;
    if (!golden_f32(r->g, name, &d, &k) || k != n) {
        fprintf(stderr, "replay: no golden draw '%s' of %zu values (have %zu)\n", name, n, k);
        return false;
    }
    memcpy(out, d, n * sizeof *out);
    return true;
}

typedef struct pcase {
    const char *golden; /* under sd15-narrow/goldens/ */
    const char *sampler, *schedule;
    int32_t     clip_skip, size;
    const char *init, *mask; /* PNGs under goldens/ */
    float       strength;
    int32_t     steps;
    bool        inpaint_unet; /* the 9-channel UNet of sd15-narrow-inpaint */
} pcase;

static const pcase k_cases[] = {
    {"txt2img_euler", "euler", "linspace", 1, 128, NULL, NULL, 0, 5, false},
    {"txt2img_euler_a", "euler_ancestral", "linspace", 1, 128, NULL, NULL, 0, 5, false},
    {"txt2img_heun", "heun", "linspace", 1, 128, NULL, NULL, 0, 5, false},
    {"txt2img_ddim", "ddim", "leading", 1, 128, NULL, NULL, 0, 5, false},
    {"txt2img_ddpm", "ddpm", "leading", 1, 128, NULL, NULL, 0, 5, false},
    {"txt2img_pndm", "pndm", "leading", 1, 128, NULL, NULL, 0, 5, false},
    {"txt2img_dpmpp_2m", "dpmpp_2m", "linspace", 1, 128, NULL, NULL, 0, 5, false},
    {"txt2img_dpmpp_2m_karras", "dpmpp_2m", "karras", 1, 128, NULL, NULL, 0, 5, false},
    {"txt2img_euler_clipskip", "euler", "linspace", 2, 128, NULL, NULL, 0, 5, false},
    {"txt2img_euler_256", "euler", "linspace", 1, 256, NULL, NULL, 0, 5, false},
    {"img2img_euler", "euler", "linspace", 1, 128, "img2img_init.png", NULL, 0.6f, 10, false},
    {"inpaint_legacy4ch_euler", "euler", "linspace", 1, 128, "inpaint_legacy4ch_euler_init.png",
     "inpaint_legacy4ch_euler_mask.png", 1.0f, 5, false},
    {"inpaint_9ch_euler", "euler", "linspace", 1, 128, "inpaint_9ch_euler_init.png",
     "inpaint_9ch_euler_mask.png", 1.0f, 5, true},
};

static const char *shared_or_skip(void) {
    const char *s = tu_shared_dir();
    if (!s) TEST_SKIP("../shared/conformance absent: pipeline goldens not checked");
    return s;
}

/* backend NULL: cpu, or $IMGD_TEST_BACKEND */
static imgd_model *load_on(const char *shared, const char *layout, bool inpaint,
                           const char *backend, uint32_t offload, imgd_precision prec) {
    char             path[4096], tok[4096], unet[4096];
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = prec;
    lp.backend          = backend ? backend : tb_primary();
    lp.offload          = offload;
    /* the narrow text encoder has 4 heads: not in the shapes, not in the LDM yaml */
    lp.arch.te_heads = 4;
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/sd15-narrow/diffusers/tokenizer", shared);
    lp.tokenizer_dir = tok;
    if (inpaint) { /* the base folder with the 9-channel inpainting UNet */
        (void)imgd_fmt(path, sizeof path, "%s/conformance/sd15-narrow/diffusers", shared);
        (void)imgd_fmt(unet, sizeof unet, "%s/conformance/sd15-narrow-inpaint/unet", shared);
        lp.unet = unet;
    } else if (strcmp(layout, "diffusers") == 0) {
        (void)imgd_fmt(path, sizeof path, "%s/conformance/sd15-narrow/diffusers", shared);
    } else {
        (void)imgd_fmt(path, sizeof path, "%s/conformance/sd15-narrow/sd15-narrow.%s", shared,
                       layout);
    }
    imgd_model *m  = NULL;
    imgd_status st = imgd_model_load(path, &lp, &m);
    CHECK_MSG(st == IMGD_OK, "load %s: %s", path, imgd_last_error());
    return m;
}

static imgd_model *load(const char *shared, const char *layout, bool inpaint) {
    return load_on(shared, layout, inpaint, NULL, 0, IMGD_PRECISION_F32);
}

static bool load_png(const char *shared, const char *name, imgd_image_u8 *img) {
    char p[4096];
    (void)imgd_fmt(p, sizeof p, "%s/conformance/sd15-narrow/goldens/%s", shared, name);
    imgd_status st = imgd_image_read(p, img);
    CHECK_MSG(st == IMGD_OK, "%s: %s", p, imgd_last_error());
    return st == IMGD_OK;
}

/* Runs one case on model m and compares the image; returns the max abs error. */
/* Image tolerances against the goldens: f32 compute, and (GPU) f16 / bf16 compute, where
 * every GEMM operand, attention score and (in the CUDA backend) stored activation is rounded
 * to 11 / 8 significant bits. */
#define TOL_F32_MAX   2e-3
#define TOL_F32_MEAN  1e-4
#define TOL_F16_MAX   3e-2
#define TOL_F16_MEAN  3e-3
#define TOL_BF16_MAX  1.5e-1
#define TOL_BF16_MEAN 1.5e-2

static double run_case_tol(const char *shared, imgd_model *m, const pcase *c, const char *layout,
                           double tol_max, double tol_mean) {
    char gpath[4096];
    (void)imgd_fmt(gpath, sizeof gpath, "%s/conformance/sd15-narrow/goldens/%s.safetensors", shared,
                   c->golden);
    replay r = {0};
    CHECK_MSG(imgd_weights_open(gpath, NULL, &r.g) == IMGD_OK, "%s: %s", gpath, imgd_last_error());
    if (!r.g) return (double)INFINITY;
    r.initial            = !c->init;
    imgd_image_u8   init = {0}, mask = {0};
    imgd_gen_params p = imgd_gen_params_default();
    p.prompt          = "a photograph of an astronaut riding a horse, highly detailed";
    p.negative        = "blurry, low quality, deformed";
    p.sampler         = c->sampler;
    p.schedule        = c->schedule;
    p.steps           = c->steps;
    p.cfg             = 7.5f;
    p.width = p.height        = c->size;
    p.clip_skip               = c->clip_skip;
    p.clip_skip_positive_only = true; /* the goldens are diffusers' */
    p.noise                   = replay_noise;
    p.noise_user              = &r;
    p.mask_blur               = 0;
    if (c->init && load_png(shared, c->init, &init)) {
        p.init     = &init;
        p.strength = c->strength;
    }
    if (c->mask && load_png(shared, c->mask, &mask)) p.mask = &mask;
    imgd_gen_result *res = NULL;
    imgd_status      st  = imgd_generate(m, &p, &res);
    CHECK_MSG(st == IMGD_OK, "%s (%s): %s", c->golden, layout, imgd_last_error());
    double       mx = (double)INFINITY, mean = (double)INFINITY;
    const float *ref = NULL;
    size_t       n   = 0;
    if (st == IMGD_OK && golden_f32(r.g, "image", &ref, &n)) {
        CHECK_EQ_INT(n, (size_t)3 * c->size * c->size);
        double sum = 0;
        mx         = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)res->pixels[i] - (double)ref[i]);
            mx       = d > mx ? d : mx;
            sum += d;
        }
        mean = sum / (double)n;
        printf("%-26s %-10s image max abs %.3g mean abs %.3g (%d draws, %d steps, %.2fs)\n",
               c->golden, layout, mx, mean, r.draws, (int)res->steps_run, res->t_total_s);
        CHECK_MSG(mx <= tol_max && mean <= tol_mean,
                  "%s (%s): image max abs %g, mean abs %g (tolerance %g, %g)", c->golden, layout,
                  mx, mean, tol_max, tol_mean);
    }
    imgd_gen_result_free(res);
    imgd_image_u8_free(&init);
    imgd_image_u8_free(&mask);
    imgd_weights_free(r.g);
    return mx;
}

static double run_case(const char *shared, imgd_model *m, const pcase *c, const char *layout) {
    return run_case_tol(shared, m, c, layout, TOL_F32_MAX, TOL_F32_MEAN);
}

static void test_sd_pipeline_matches_goldens_every_layout(void) {
    const char *shared = shared_or_skip();
    if (!shared) return;
    static const char *const layouts[] = {"diffusers", "safetensors", "ckpt"};
    for (size_t l = 0; l < IMGD_ARRAY_LEN(layouts); l++) {
        imgd_model *m = load(shared, layouts[l], false);
        if (!m) continue;
        for (size_t i = 0; i < IMGD_ARRAY_LEN(k_cases); i++) {
            if (k_cases[i].inpaint_unet) continue;
            /* every case on the folder; the single files run a representative subset */
            if (l > 0 && i != 0 && strcmp(k_cases[i].golden, "img2img_euler") != 0) continue;
            run_case(shared, m, &k_cases[i], layouts[l]);
        }
        imgd_model_free(m);
    }
    imgd_model *m = load(shared, "diffusers", true);
    for (size_t i = 0; m && i < IMGD_ARRAY_LEN(k_cases); i++)
        if (k_cases[i].inpaint_unet) run_case(shared, m, &k_cases[i], "diffusers");
    imgd_model_free(m);
}

/* SDXL: both text encoders, the pooled embedding and time ids, the leading-spaced Euler
 * schedule of the model's config and the 0.13025 VAE, for the folder and the single file. */
static void test_sd_pipeline_sdxl_matches_golden(void) {
    const char *shared = shared_or_skip();
    if (!shared) return;
    static const char *const layouts[] = {"diffusers", "sdxl-narrow.safetensors"};
    for (size_t l = 0; l < IMGD_ARRAY_LEN(layouts); l++) {
        char             path[4096], tok[4096], gpath[4096];
        imgd_load_params lp = imgd_load_params_default();
        lp.precision        = IMGD_PRECISION_F32;
        lp.backend          = tb_primary();
        lp.arch.te_heads    = 4;       /* both narrow encoders; not in the single file's shapes */
        if (l > 0) lp.arch.groups = 4; /* the LDM yaml has no field for GroupNorm groups */
        (void)imgd_fmt(tok, sizeof tok, "%s/conformance/sdxl-narrow/diffusers/tokenizer", shared);
        (void)imgd_fmt(path, sizeof path, "%s/conformance/sdxl-narrow/%s", shared, layouts[l]);
        lp.tokenizer_dir = tok;
        imgd_model *m    = NULL;
        imgd_status st   = imgd_model_load(path, &lp, &m);
        CHECK_MSG(st == IMGD_OK, "load %s: %s", path, imgd_last_error());
        if (!m) continue;
        (void)imgd_fmt(gpath, sizeof gpath,
                       "%s/conformance/sdxl-narrow/goldens/txt2img_euler.safetensors", shared);
        replay r = {0};
        CHECK_MSG(imgd_weights_open(gpath, NULL, &r.g) == IMGD_OK, "%s: %s", gpath,
                  imgd_last_error());
        r.initial         = true;
        imgd_gen_params p = imgd_gen_params_default();
        p.prompt          = "a cinematic photo of a red fox in the snow, 35mm";
        p.negative        = "cartoon, painting, lowres";
        p.sampler         = "euler";
        p.steps           = 5;
        p.cfg             = 5.0f;
        p.width = p.height = 128;
        p.orig_width = p.orig_height = p.target_width = p.target_height = 1024;
        p.noise                                                         = replay_noise;
        p.noise_user                                                    = &r;
        imgd_gen_result *res                                            = NULL;
        st = r.g ? imgd_generate(m, &p, &res) : IMGD_E_IO;
        CHECK_MSG(st == IMGD_OK, "sdxl %s: %s", layouts[l], imgd_last_error());
        const float *ref = NULL;
        size_t       n   = 0;
        if (st == IMGD_OK && golden_f32(r.g, "image", &ref, &n) && n == (size_t)3 * 128 * 128) {
            double mx = 0, sum = 0;
            for (size_t i = 0; i < n; i++) {
                double d = fabs((double)res->pixels[i] - (double)ref[i]);
                mx       = d > mx ? d : mx;
                sum += d;
            }
            printf("sdxl txt2img_euler %-24s image max abs %.3g mean abs %.3g (%.2fs)\n",
                   layouts[l], mx, sum / (double)n, res->t_total_s);
            CHECK_MSG(mx <= 2e-3 && sum / (double)n <= 1e-4, "sdxl %s: image max abs %g",
                      layouts[l], mx);
        } else if (st == IMGD_OK) {
            CHECK_MSG(0, "sdxl golden image missing or of another size");
        }
        imgd_gen_result_free(res);
        imgd_weights_free(r.g);
        imgd_model_free(m);
    }
}

/* Same seed twice: bit-identical; each image of a batch of 2 equals a batch-1 run given
 * that image's share of every draw (initial noise and the ancestral per-step noise). */
typedef struct tape {
    float        *buf; /* every draw of a run, in order */
    size_t        n, cap, pos;
    int32_t       half; /* replay: 0 = all, 1 = first half of each draw, 2 = second half */
    bool          record;
    imgd_rng_mode mode;
    uint64_t      seed;
} tape;

static bool tape_noise(float *out, size_t n, void *user) {
    tape *t = user;
    if (t->record) { /* a simple reproducible source: sin of a counter */
        if (t->n + n > t->cap) return false;
        for (size_t i = 0; i < n; i++) {
            double x         = (double)(t->n + i) * 12.9898 + (double)t->seed;
            t->buf[t->n + i] = (float)(sin(x) * 1.7);
        }
        memcpy(out, t->buf + t->n, n * sizeof *out);
        t->n += n;
        return true;
    }
    /* replay: the draw at pos was 2n floats in the batch run; take one half */
    if (t->pos + 2 * n > t->n) return false;
    memcpy(out, t->buf + t->pos + (t->half == 2 ? n : 0), n * sizeof *out);
    t->pos += 2 * n;
    return true;
}

static void test_sd_pipeline_seed_repeatable_and_batch_consistent(void) {
    const char *shared = shared_or_skip();
    if (!shared) return;
    imgd_model *m = load(shared, "diffusers", false);
    if (!m) return;
    imgd_gen_params p = imgd_gen_params_default();
    p.prompt          = "a red house";
    p.width = p.height = 64;
    p.steps            = 3;
    p.seed             = 1234;
    p.sampler          = "euler_ancestral";
    imgd_gen_result *a = NULL, *b = NULL, *c = NULL, *h[2] = {NULL, NULL};
    CHECK_STATUS(imgd_generate(m, &p, &a), IMGD_OK);
    CHECK_STATUS(imgd_generate(m, &p, &b), IMGD_OK);
    size_t n = (size_t)3 * 64 * 64;
    if (a && b) CHECK(memcmp(a->pixels, b->pixels, n * sizeof(float)) == 0);

    tape t   = {0};
    t.cap    = (size_t)1 << 20;
    t.buf    = imgd_malloc(t.cap * sizeof *t.buf);
    t.record = true;
    if (!t.buf) goto done;
    p.batch      = 2;
    p.noise      = tape_noise;
    p.noise_user = &t;
    CHECK_STATUS(imgd_generate(m, &p, &c), IMGD_OK);
    t.record = false;
    p.batch  = 1;
    for (int k = 0; k < 2; k++) {
        t.pos  = 0;
        t.half = k + 1;
        CHECK_STATUS(imgd_generate(m, &p, &h[k]), IMGD_OK);
    }
    for (int k = 0; c && k < 2; k++) {
        if (!h[k]) continue;
        double mx = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)c->pixels[(size_t)k * n + i] - (double)h[k]->pixels[i]);
            mx       = d > mx ? d : mx;
        }
        printf("batch image %d vs batch-1 run: max abs %.3g\n", k, mx);
        CHECK_MSG(mx <= 1e-4, "batch image %d differs from its batch-1 run by %g", k, mx);
    }
done:
    imgd_free(t.buf);
    imgd_gen_result_free(a);
    imgd_gen_result_free(b);
    imgd_gen_result_free(c);
    imgd_gen_result_free(h[0]);
    imgd_gen_result_free(h[1]);
    imgd_model_free(m);
}

static void test_sd_pipeline_bad_requests_are_named(void) {
    const char *shared = shared_or_skip();
    if (!shared) return;
    imgd_model *m = load(shared, "diffusers", false);
    if (!m) return;
    imgd_gen_params  p   = imgd_gen_params_default();
    imgd_gen_result *res = NULL;
    p.prompt             = "x";
    p.width              = 100;
    CHECK_STATUS(imgd_generate(m, &p, &res), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "multiples of 8") != NULL);
    p.width   = 64;
    p.height  = 64;
    p.sampler = "euler_b";
    CHECK_STATUS(imgd_generate(m, &p, &res), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "euler_b") != NULL);
    p.sampler   = "euler";
    p.clip_skip = 40;
    CHECK_STATUS(imgd_generate(m, &p, &res), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "clip_skip") != NULL);
    CHECK(res == NULL);
    imgd_model_free(m);
    /* a LoRA is not a model to generate with */
    char path[4096];
    (void)imgd_fmt(path, sizeof path,
                   "%s/conformance/sd15-narrow/lora/narrow-lora_kohya.safetensors", shared);
    imgd_model *bad = NULL;
    CHECK_STATUS(imgd_model_load(path, NULL, &bad), IMGD_E_UNSUPPORTED);
    CHECK(strstr(imgd_last_error(), "lora") != NULL);
    CHECK(bad == NULL);
}

/* --offload: the text encoder and the VAE run on the cpu backend while the UNet runs on
 * another (ref here; a GPU in use): each part is where it was sent, and txt2img and img2img
 * (the VAE encoder too) still match the goldens. */
static void test_sd_pipeline_offload(void) {
    uint32_t bits = 99;
    CHECK(imgd_offload_parse("te,vae", &bits) && bits == (IMGD_OFFLOAD_TE | IMGD_OFFLOAD_VAE));
    CHECK(imgd_offload_parse("vae", &bits) && bits == IMGD_OFFLOAD_VAE);
    CHECK(imgd_offload_parse("", &bits) && bits == 0);
    CHECK(!imgd_offload_parse("gpu", &bits) && bits == 0);
    CHECK(imgd_offload_parse("none", &bits) && bits == 0);
    const char *shared = shared_or_skip();
    if (!shared) return;
    imgd_model *m = load_on(shared, "diffusers", false, "ref", IMGD_OFFLOAD_TE | IMGD_OFFLOAD_VAE,
                            IMGD_PRECISION_F32);
    if (!m) return;
    CHECK(m->te_be && m->te_be == m->vae_be);
    CHECK(strcmp(imgd_backend_name(m->be), "ref") == 0);
    CHECK(strcmp(imgd_backend_name(imgd_model_te_backend(m)), "cpu") == 0);
    CHECK(strcmp(imgd_backend_name(imgd_model_vae_backend(m)), "cpu") == 0);
    run_case(shared, m, &k_cases[0], "ref+offload");
    run_case(shared, m, &k_cases[10], "ref+offload");
    imgd_model_free(m);
    m = load_on(shared, "diffusers", false, "ref", IMGD_OFFLOAD_TE, IMGD_PRECISION_F32);
    if (m) {
        CHECK(m->te_be && !m->vae_be);
        imgd_model_free(m);
    }
    /* the cpu backend itself: nothing to offload */
    m = load_on(shared, "diffusers", false, "cpu", IMGD_OFFLOAD_TE | IMGD_OFFLOAD_VAE,
                IMGD_PRECISION_F32);
    if (m) {
        CHECK(!m->te_be && !m->vae_be);
        imgd_model_free(m);
    }
    imgd_load_params lp = imgd_load_params_default();
    lp.backend          = "ref";
    lp.offload          = 4;
    imgd_model *bad     = NULL;
    char        path[4096];
    (void)imgd_fmt(path, sizeof path, "%s/conformance/sd15-narrow/diffusers", shared);
    CHECK_EQ_INT(imgd_model_load(path, &lp, &bad), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "offload") != NULL);
    CHECK(bad == NULL);
}

/* On a GPU backend (IMGD_TEST_BACKEND=cuda), f16 and bf16 compute against the same goldens
 * within the looser tolerances above: txt2img, img2img and 9-channel inpainting. */
static void test_sd_pipeline_low_precision_on_gpu(void) {
    if (strcmp(tb_primary(), "cuda") != 0) {
        TEST_SKIP("f16/bf16 goldens: the backend under test is %s, not cuda "
                  "(IMGD_TEST_BACKEND=cuda)",
                  tb_primary());
        return;
    }
    const char *shared = shared_or_skip();
    if (!shared) return;
    static const imgd_precision precs[] = {IMGD_PRECISION_F16, IMGD_PRECISION_BF16};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(precs); i++) {
        bool        f16  = precs[i] == IMGD_PRECISION_F16;
        const char *name = f16 ? "cuda-f16" : "cuda-bf16";
        double tmax = f16 ? TOL_F16_MAX : TOL_BF16_MAX, tmean = f16 ? TOL_F16_MEAN : TOL_BF16_MEAN;
        imgd_model *m = load_on(shared, "diffusers", false, NULL, 0, precs[i]);
        if (m) {
            run_case_tol(shared, m, &k_cases[0], name, tmax, tmean);
            run_case_tol(shared, m, &k_cases[10], name, tmax, tmean);
            imgd_model_free(m);
        }
        m = load_on(shared, "diffusers", true, NULL, 0, precs[i]);
        if (m) {
            run_case_tol(shared, m, &k_cases[12], name, tmax, tmean);
            imgd_model_free(m);
        }
    }
}

int main(void) {
    imgd_log_level_set(IMGD_LOG_WARN);
    RUN(test_sd_pipeline_matches_goldens_every_layout);
    RUN(test_sd_pipeline_sdxl_matches_golden);
    RUN(test_sd_pipeline_seed_repeatable_and_batch_consistent);
    RUN(test_sd_pipeline_bad_requests_are_named);
    RUN(test_sd_pipeline_offload);
    RUN(test_sd_pipeline_low_precision_on_gpu);
    TEST_END();
}
