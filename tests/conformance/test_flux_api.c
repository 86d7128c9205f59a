/* FLUX.1 through the public API (imgd_model_load + imgd_generate) against
 * ../shared/conformance/flux-narrow: txt2img_flux (the dev diffusers folder) and
 * txt2img_schnell (the partial schnell/ folder with the dev folder's encoders and VAE given
 * as load params), and both BFL single files with separate encoders / VAE. The recorded
 * initial latents are replayed through imgd_gen_params.noise (unpacked: the pipeline draws
 * [B, 16, H/8, W/8] and packs). Image tolerance (kit README): max abs <= 2e-3 and mean abs
 * <= 1e-4 on [0, 1]. Also: batch 2, cancellation, the infotext, and load / request errors
 * that name what was wrong (missing T5, wrong files as --t5 / --clip-l, no VAE). */
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends.h"
#include "base/alloc.h"
#include "base/text.h"
#include "golden.h"
#include "imgd.h"
#include "models/flux.h"
#include "test.h"
#include "util.h"

#define PROMPT "a photograph of an astronaut riding a horse, highly detailed"

static const char *g_shared;
static char        g_kit[4096];

static const char *kit(char *buf, const char *rel) {
    (void)imgd_fmt(buf, 4096, "%s/%s", g_kit, rel);
    return buf;
}

/* Supplies the golden's unpacked initial latents for every image of the draw. */
typedef struct tape {
    float z[16 * 16 * 16];
    int   draws;
} tape;

static bool replay(float *out, size_t n, void *user) {
    tape *t = user;
    if (n % 4096 != 0) return false;
    for (size_t i = 0; i < n; i += 4096) memcpy(out + i, t->z, sizeof t->z);
    t->draws++;
    return true;
}

static imgd_load_params load_params(void) {
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.backend          = tb_primary();
    return lp;
}

static imgd_gen_params gen_params(tape *t) {
    imgd_gen_params p     = imgd_gen_params_default();
    p.prompt              = PROMPT;
    p.width               = 128;
    p.height              = 128;
    p.steps               = 4;
    p.guidance            = 3.5f;
    p.max_sequence_length = 64;
    p.noise               = replay;
    p.noise_user          = t;
    return p;
}

/* max / mean |a - b| of the image against the golden; checks the kit's tolerance. */
static void compare(const char *what, const float *got, const float *ref, size_t n) {
    double mx = 0, sum = 0;
    bool   finite = true;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!isfinite(got[i])) finite = false;
        if (d > mx) mx = d;
        sum += d;
    }
    printf("  %-44s image max|err| %.3g (tol 2e-3), mean %.3g (tol 1e-4)\n", what, mx,
           sum / (double)n);
    CHECK_MSG(finite && mx <= 2e-3 && sum / (double)n <= 1e-4, "%s: image max %g mean %g", what, mx,
              sum / (double)n);
}

/* Loads path with lp, generates the golden's request and compares the image. */
static void run_case(const char *what, const char *path, const imgd_load_params *lp,
                     const char *golden, bool dev) {
    imgd_weights    *gd = tg_open_golden(g_shared, golden);
    imgd_model      *m  = NULL;
    imgd_gen_result *r  = NULL;
    tape             t;
    memset(&t, 0, sizeof t);
    REQUIRE(gd != NULL);
    size_t       ni = 0, nimg = 0;
    const float *init = tg_golden(gd, "initial_latents", &ni);
    const float *img  = tg_golden(gd, "image", &nimg);
    REQUIRE(init && img && ni == 4096 && nimg == (size_t)3 * 128 * 128);
    imgd_flux_unpack(init, 1, 16, 16, 16, t.z);
    CHECK_STATUS(imgd_model_load(path, lp, &m), IMGD_OK);
    REQUIRE(m != NULL);
    CHECK_EQ_INT(imgd_model_default_steps(m), dev ? 28 : 4);
    CHECK(imgd_model_has_guidance(m) == dev);
    int32_t w = 0, h = 0;
    imgd_model_native_size(m, &w, &h);
    CHECK(w == 1024 && h == 1024);
    imgd_gen_params p = gen_params(&t);
    if (!dev) p.guidance = 0.0f;
    CHECK_STATUS(imgd_generate(m, &p, &r), IMGD_OK);
    REQUIRE(r != NULL && r->n == 1 && r->pixels);
    CHECK_EQ_INT(t.draws, 1);
    CHECK_EQ_INT(r->steps_run, 4);
    CHECK(r->images[0].w == 128 && r->images[0].h == 128 && r->images[0].c == 3);
    compare(what, r->pixels, img, nimg);
    CHECK_MSG(r->infotext && strstr(r->infotext, "Steps: 4, Sampler: Euler"), "%s", r->infotext);
    CHECK_MSG((strstr(r->infotext, "Distilled CFG Scale: 3.5") != NULL) == dev, "%s", r->infotext);
done:
    imgd_gen_result_free(r);
    imgd_model_free(m);
    imgd_weights_free(gd);
}

static void test_flux_api_dev_folder_matches_txt2img(void) {
    char             a[4096];
    imgd_load_params lp = load_params();
    run_case("dev diffusers folder", kit(a, "diffusers"), &lp,
             "flux-narrow/goldens/txt2img_flux.safetensors", true);
}

static void test_flux_api_schnell_partial_folder_matches_txt2img(void) {
    char             a[4096], c[4096], t5[4096], v[4096];
    imgd_load_params lp = load_params();
    lp.clip_l           = kit(c, "diffusers/text_encoder"); /* tokenizer/ beside it */
    lp.t5               = kit(t5, "diffusers/text_encoder_2");
    lp.vae              = kit(v, "diffusers/vae");
    run_case("schnell partial folder + encoders", kit(a, "schnell"), &lp,
             "flux-narrow/goldens/txt2img_schnell.safetensors", false);
}

static void test_flux_api_bfl_single_files_match_txt2img(void) {
    char             a[4096], d[4096], v[4096];
    imgd_load_params lp = load_params();
    lp.clip_l = lp.t5    = kit(d, "diffusers"); /* a whole pipeline folder holds both */
    lp.vae               = kit(v, "diffusers/vae");
    lp.arch.rope_axes[0] = 2;
    lp.arch.rope_axes[1] = 2;
    lp.arch.rope_axes[2] = 4;
    run_case("dev BFL single file", kit(a, "flux-narrow-transformer-bfl.safetensors"), &lp,
             "flux-narrow/goldens/txt2img_flux.safetensors", true);
    run_case("schnell BFL single file", kit(a, "flux-narrow-schnell-transformer-bfl.safetensors"),
             &lp, "flux-narrow/goldens/txt2img_schnell.safetensors", false);
}

/* The files people download, side by side, found without flags: flux.safetensors (BFL),
 * clip_l.safetensors, t5xxl_fp16.safetensors, ae.safetensors, spiece.model, tokenizer/. */
static void test_flux_api_finds_parts_beside_single_file(void) {
    static const struct {
        const char *link, *target;
    } files[] = {
        {"flux.safetensors", "flux-narrow-transformer-bfl.safetensors"},
        {"clip_l.safetensors", "diffusers/text_encoder/model.safetensors"},
        {"t5xxl_fp16.safetensors", "diffusers/text_encoder_2/model.safetensors"},
        {"ae.safetensors", "diffusers/vae/diffusion_pytorch_model.safetensors"},
        {"spiece.model", "diffusers/tokenizer_2/spiece.model"},
        {"tokenizer", "diffusers/tokenizer"},
    };
    char dir[4096], link[4200], target[4096];
    tu_tmp_path(dir, sizeof dir, "flux_api_side_by_side");
    (void)mkdir(dir, 0755);
    for (size_t i = 0; i < IMGD_ARRAY_LEN(files); i++) {
        (void)imgd_fmt(link, sizeof link, "%s/%s", dir, files[i].link);
        (void)unlink(link);
        CHECK(symlink(kit(target, files[i].target), link) == 0);
    }
    imgd_load_params lp  = load_params();
    lp.arch.te_heads     = 4; /* a bare narrow CLIP file: heads are not in its shapes */
    lp.arch.groups       = 4; /* nor the narrow VAE's GroupNorm groups */
    lp.arch.rope_axes[0] = 2;
    lp.arch.rope_axes[1] = 2;
    lp.arch.rope_axes[2] = 4;
    (void)imgd_fmt(link, sizeof link, "%s/flux.safetensors", dir);
    run_case("dev BFL file, parts found beside it", link, &lp,
             "flux-narrow/goldens/txt2img_flux.safetensors", true);
}

static bool cancel_at_2(int32_t step, int32_t steps, double elapsed_s, void *user) {
    (void)steps;
    (void)elapsed_s;
    *(int32_t *)user = step;
    return step < 2;
}

/* Batch 2 from one draw: both images equal the golden; cancel; request errors. */
/* The dev golden (its initial latents into t, its image into *img / *nimg) and the dev
 * folder loaded into *m; false (with what failed checked) when either is missing. */
static bool open_dev(tape *t, imgd_weights **gd, imgd_model **m, const float **img, size_t *nimg) {
    char             a[4096];
    imgd_load_params lp = load_params();
    size_t           ni = 0;
    memset(t, 0, sizeof *t);
    *gd = tg_open_golden(g_shared, "flux-narrow/goldens/txt2img_flux.safetensors");
    if (!*gd) return false;
    const float *init = tg_golden(*gd, "initial_latents", &ni);
    *img              = tg_golden(*gd, "image", nimg);
    CHECK(init && *img && ni == 4096);
    if (!init || !*img || ni != 4096) return false;
    imgd_flux_unpack(init, 1, 16, 16, 16, t->z);
    CHECK_STATUS(imgd_model_load(kit(a, "diffusers"), &lp, m), IMGD_OK);
    return *m != NULL;
}

static void test_flux_api_batch_cancel_and_request_errors(void) {
    imgd_model      *m  = NULL;
    imgd_gen_result *r  = NULL;
    imgd_weights    *gd = NULL;
    tape             t;
    size_t           nimg = 0;
    const float     *img  = NULL;
    REQUIRE(open_dev(&t, &gd, &m, &img, &nimg));
    imgd_gen_params p = gen_params(&t);
    p.batch           = 2;
    CHECK_STATUS(imgd_generate(m, &p, &r), IMGD_OK);
    REQUIRE(r != NULL && r->n == 2);
    compare("dev batch 2, image 0", r->pixels, img, nimg);
    compare("dev batch 2, image 1", r->pixels + nimg, img, nimg);
    imgd_gen_result_free(r);
    r = NULL;
    /* cancelled from on_step after step 2 */
    int32_t seen = 0;
    p            = gen_params(&t);
    p.on_step    = cancel_at_2;
    p.user       = &seen;
    CHECK_STATUS(imgd_generate(m, &p, &r), IMGD_E_CANCELLED);
    CHECK(r == NULL);
    CHECK_EQ_INT(seen, 2);
    /* the seed path draws with the torch CPU generator: same seed, same image */
    imgd_gen_result *r1 = NULL, *r2 = NULL;
    p       = gen_params(&t);
    p.noise = NULL;
    p.seed  = 42;
    CHECK_STATUS(imgd_generate(m, &p, &r1), IMGD_OK);
    CHECK_STATUS(imgd_generate(m, &p, &r2), IMGD_OK);
    if (r1 && r2) {
        CHECK(memcmp(r1->pixels, r2->pixels, nimg * sizeof(float)) == 0);
        CHECK(memcmp(r1->pixels, img, nimg * sizeof(float)) != 0);
        CHECK_MSG(strstr(r1->infotext, "Seed: 42"), "%s", r1->infotext);
    }
    imgd_gen_result_free(r1);
    imgd_gen_result_free(r2);
    /* the kept transformer graph, replayed with another prompt and then the golden's: the
     * new embeddings and guidance reach it */
    r1 = r2    = NULL;
    p          = gen_params(&t);
    p.prompt   = "a bowl of fruit";
    p.guidance = 1.0f;
    CHECK_STATUS(imgd_generate(m, &p, &r1), IMGD_OK);
    p = gen_params(&t);
    CHECK_STATUS(imgd_generate(m, &p, &r2), IMGD_OK);
    if (r1 && r2) {
        CHECK(memcmp(r1->pixels, img, nimg * sizeof(float)) != 0);
        compare("dev, kept graph after another prompt", r2->pixels, img, nimg);
    }
    imgd_gen_result_free(r1);
    imgd_gen_result_free(r2);
    /* requests FLUX cannot run, each named */
    static const struct {
        const char *field, *needle;
    } bad[] = {{"negative", "negative prompt"}, {"width", "multiples of 16"},
               {"sampler", "sampler"},          {"clip_skip", "clip_skip"},
               {"guidance", "guidance"},        {"max_sequence_length", "max_sequence_length"}};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(bad); i++) {
        p = gen_params(&t);
        if (i == 0) p.negative = "blurry";
        if (i == 1) p.width = 120;
        if (i == 2) p.sampler = "dpmpp_2m";
        if (i == 3) p.clip_skip = 2;
        if (i == 4) p.guidance = NAN;
        if (i == 5) p.max_sequence_length = 513;
        CHECK_STATUS(imgd_generate(m, &p, &r), IMGD_E_INVALID_ARG);
        CHECK_MSG(strstr(imgd_last_error(), bad[i].needle), "%s: %s", bad[i].field,
                  imgd_last_error());
    }
    char key[IMGD_GEN_BATCH_KEY_MAX];
    p = gen_params(&t);
    CHECK_STATUS(imgd_gen_batch_key(m, &p, key, sizeof key), IMGD_OK);
    CHECK_STR(key, "128x128 steps=4 flux");
done:
    imgd_gen_result_free(r);
    imgd_model_free(m);
    imgd_weights_free(gd);
}

/* img2img as FluxImg2ImgPipeline: the VAE posterior sample is drawn before the noise;
 * strength 1 starts from sigma 1 (pure noise), so with the replayed draw it gives the
 * txt2img image bit for bit; t_start = int(N - N * strength) sets the steps run; inpainting
 * and a strength outside (0, 1] are refused by name. */
static void test_flux_api_img2img(void) {
    imgd_model      *m  = NULL;
    imgd_gen_result *r0 = NULL, *r1 = NULL, *r2 = NULL;
    imgd_weights    *gd = NULL;
    tape             t;
    size_t           nimg = 0;
    const float     *img  = NULL;
    REQUIRE(open_dev(&t, &gd, &m, &img, &nimg));
    imgd_gen_params p = gen_params(&t);
    CHECK_STATUS(imgd_generate(m, &p, &r0), IMGD_OK);
    REQUIRE(r0 != NULL && r0->n == 1);
    /* the txt2img image, at another size, as the init image */
    imgd_image_u8 src = r0->images[0];
    src.w             = 64;
    src.h             = 128 * 128 / 64 / 2; /* 64 x 128 of the first rows: resized to 128 */
    t.draws           = 0;
    p                 = gen_params(&t);
    p.init            = &src;
    p.strength        = 1.0f;
    CHECK_STATUS(imgd_generate(m, &p, &r1), IMGD_OK);
    REQUIRE(r1 != NULL);
    CHECK_EQ_INT(t.draws, 2); /* posterior sample, then the noise */
    CHECK_EQ_INT(r1->steps_run, 4);
    CHECK_MSG(memcmp(r1->pixels, r0->pixels, nimg * sizeof(float)) == 0,
              "img2img at strength 1 differs from txt2img with the same noise");
    CHECK_MSG(strstr(r1->infotext, "Denoising strength: 1"), "%s", r1->infotext);
    static const struct {
        float   strength;
        int32_t steps_run;
    } k_runs[] = {{0.6f, 3}, {0.5f, 2}, {0.1f, 1}, {0.75f, 3}};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_runs); i++) {
        p          = gen_params(&t);
        p.init     = &src;
        p.strength = k_runs[i].strength;
        CHECK_STATUS(imgd_generate(m, &p, &r2), IMGD_OK);
        if (!r2) continue;
        CHECK_MSG(r2->steps_run == k_runs[i].steps_run, "strength %g: %d steps run, want %d",
                  (double)k_runs[i].strength, (int)r2->steps_run, (int)k_runs[i].steps_run);
        CHECK(memcmp(r2->pixels, r0->pixels, nimg * sizeof(float)) != 0);
        imgd_gen_result_free(r2);
        r2 = NULL;
    }
    p          = gen_params(&t);
    p.init     = &src;
    p.strength = 0.0f;
    CHECK_STATUS(imgd_generate(m, &p, &r2), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "strength"), "%s", imgd_last_error());
    p.strength = 0.5f;
    p.mask     = &src;
    CHECK_STATUS(imgd_generate(m, &p, &r2), IMGD_E_UNSUPPORTED);
    CHECK_MSG(strstr(imgd_last_error(), "inpainting"), "%s", imgd_last_error());
done:
    imgd_gen_result_free(r0);
    imgd_gen_result_free(r1);
    imgd_gen_result_free(r2);
    imgd_model_free(m);
    imgd_weights_free(gd);
}

/* Load errors name the file, what is missing or wrong, and the param that fixes it. */
static void test_flux_api_load_errors_name_the_fix(void) {
    char             a[4096], d[4096], c[4096], t5[4096], v[4096], x[4096];
    imgd_model      *m     = NULL;
    const char      *bfl   = kit(a, "flux-narrow-transformer-bfl.safetensors");
    imgd_load_params base  = load_params();
    base.arch.rope_axes[0] = 2;
    base.arch.rope_axes[1] = 2;
    base.arch.rope_axes[2] = 4;
    base.clip_l            = kit(c, "diffusers/text_encoder");
    base.vae               = kit(v, "diffusers/vae");
    /* no T5 anywhere beside the BFL file */
    imgd_load_params lp = base;
    CHECK_STATUS(imgd_model_load(bfl, &lp, &m), IMGD_E_FORMAT);
    CHECK_MSG(strstr(imgd_last_error(), "T5") && strstr(imgd_last_error(), "--t5") &&
                  strstr(imgd_last_error(), "looked for"),
              "%s", imgd_last_error());
    CHECK(m == NULL);
    /* a VAE, and the CLIP encoder, given as --t5 */
    lp    = base;
    lp.t5 = kit(t5, "diffusers/vae");
    CHECK_STATUS(imgd_model_load(bfl, &lp, &m), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "--t5") && strstr(imgd_last_error(), "without a T5"), "%s",
              imgd_last_error());
    lp.t5 = kit(t5, "diffusers/text_encoder");
    CHECK_STATUS(imgd_model_load(bfl, &lp, &m), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "--t5"), "%s", imgd_last_error());
    /* the T5 given as --clip-l */
    lp        = base;
    lp.t5     = kit(t5, "diffusers/text_encoder_2");
    lp.clip_l = kit(x, "diffusers/text_encoder_2");
    CHECK_STATUS(imgd_model_load(bfl, &lp, &m), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "--clip-l") && strstr(imgd_last_error(), "CLIP"), "%s",
              imgd_last_error());
    /* a file that does not exist */
    lp    = base;
    lp.t5 = kit(t5, "no-such-t5xxl_fp16.safetensors");
    CHECK(imgd_model_load(bfl, &lp, &m) != IMGD_OK);
    CHECK_MSG(strstr(imgd_last_error(), "--t5"), "%s", imgd_last_error());
    /* no VAE */
    lp     = base;
    lp.t5  = kit(t5, "diffusers/text_encoder_2");
    lp.vae = NULL;
    CHECK_STATUS(imgd_model_load(bfl, &lp, &m), IMGD_E_FORMAT);
    CHECK_MSG(strstr(imgd_last_error(), "--vae") && strstr(imgd_last_error(), "ae.safetensors"),
              "%s", imgd_last_error());
    /* a T5 tokenizer path without spiece.model */
    lp              = base;
    lp.t5           = kit(t5, "diffusers/text_encoder_2");
    lp.t5_tokenizer = kit(x, "diffusers/tokenizer");
    CHECK(imgd_model_load(bfl, &lp, &m) != IMGD_OK);
    CHECK_MSG(strstr(imgd_last_error(), "--t5-tokenizer"), "%s", imgd_last_error());
    /* narrow BFL file without rope axes: says what to set */
    lp                   = base;
    lp.t5                = kit(t5, "diffusers/text_encoder_2");
    lp.arch.rope_axes[0] = 0;
    CHECK_STATUS(imgd_model_load(bfl, &lp, &m), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "--rope-axes"), "%s", imgd_last_error());
    /* the schnell folder alone: its encoders are missing */
    lp = load_params();
    CHECK_STATUS(imgd_model_load(kit(d, "schnell"), &lp, &m), IMGD_E_FORMAT);
    CHECK_MSG(strstr(imgd_last_error(), "--clip-l"), "%s", imgd_last_error());
    CHECK(m == NULL);
}

int main(void) {
    g_shared = tu_shared_dir();
    if (!g_shared) {
        TEST_SKIP("../shared/conformance absent: FLUX public API not checked");
        TEST_END();
    }
    (void)imgd_fmt(g_kit, sizeof g_kit, "%s/conformance/flux-narrow", g_shared);
    imgd_log_level_set(IMGD_LOG_WARN);
    RUN(test_flux_api_dev_folder_matches_txt2img);
    RUN(test_flux_api_schnell_partial_folder_matches_txt2img);
    RUN(test_flux_api_bfl_single_files_match_txt2img);
    RUN(test_flux_api_finds_parts_beside_single_file);
    RUN(test_flux_api_batch_cancel_and_request_errors);
    RUN(test_flux_api_img2img);
    RUN(test_flux_api_load_errors_name_the_fix);
    TEST_END();
}
