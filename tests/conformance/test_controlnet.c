/* ControlNet against diffusers (../shared/conformance/sd15-narrow):
 *   - goldens/controlnet.safetensors: the hint embedding, the 12 down + mid residuals at
 *     scale 1.0 and 0.5, and the UNet output with them added, for both layouts of the same
 *     ControlNet (diffusers folder, original single file control_model.*), within the
 *     README's tolerance max|a - b| <= 1e-4 * max(1, max|ref|);
 *   - goldens/txt2img_euler_controlnet.safetensors: the whole pipeline through the public
 *     API (scale 0.8), both layouts: image max abs <= 2e-3, mean abs <= 1e-4;
 *   - two ControlNets at once (0.3 + 0.5 of the same weights) equal one at 0.8 (residuals
 *     are summed);
 *   - start/end fractions: a window no step falls in gives the plain txt2img_euler image;
 *     a window of the first step only differs from both;
 *   - guess mode runs, changes the image, and scales as logspace(-1, 0, 13). */
#include <math.h>

#include "base/alloc.h"
#include "base/text.h"
#include "golden.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "models/wbind.h"
#include "pipeline/pipeline.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

static const struct {
    const char *rel, *label;
} k_layouts[] = {{"sd15-narrow/controlnet/diffusers", "folder"},
                 {"sd15-narrow/controlnet/control_narrow.safetensors", "single file"}};

/* ---- goldens ---------------------------------------------------------------------------- */

static const float *golden_get(imgd_weights *w, const char *name, imgd_tensor_info *ti) {
    if (imgd_weights_find(w, name, ti) != IMGD_OK || ti->dtype != IMGD_DTYPE_F32) {
        CHECK_MSG(0, "golden: no f32 tensor '%s'", name);
        return NULL;
    }
    return ti->data;
}

static imgd_tensor *golden_input(imgd_graph *g, imgd_weights *w, const char *name) {
    imgd_tensor_info ti;
    const float     *d = golden_get(w, name, &ti);
    if (!d) return NULL;
    imgd_tensor *t = imgd_graph_input(g, name, IMGD_DTYPE_F32, ti.n_dims, ti.shape);
    if (t) CHECK_STATUS(imgd_tensor_bind(t, (void *)(uintptr_t)d), IMGD_OK);
    return t;
}

/* max |got * scale - ref| against the README tolerance; prints it. */
static void compare_buf(const float *got, float scale, size_t n, imgd_weights *w, const char *name,
                        const char *what) {
    imgd_tensor_info ti;
    const float     *ref = golden_get(w, name, &ti);
    if (!ref) return;
    CHECK_EQ_INT(ti.nbytes, n * sizeof(float));
    if (ti.nbytes != n * sizeof(float)) return;
    double err = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)(got[i] * scale) - (double)ref[i]));
        mx  = fmax(mx, fabs((double)ref[i]));
    }
    double tol = 1e-4 * fmax(1.0, mx);
    printf("  %-12s %-30s max|err| %.3g (tol %.3g, max|ref| %.3g)\n", what, name, err, tol, mx);
    CHECK_MSG(isfinite(err) && err <= tol, "%s: %s max error %g > %g", what, name, err, tol);
}

static float *read_tensor(imgd_graph *g, const imgd_tensor *t, size_t *n) {
    *n       = (size_t)imgd_tensor_numel(t);
    float *d = imgd_malloc(*n * sizeof *d);
    if (d) CHECK_STATUS(imgd_graph_read_f32(g, t, d, *n), IMGD_OK);
    return d;
}

typedef struct net {
    imgd_weights       *w;
    imgd_model_info    *mi;
    imgd_wbind         *b;
    imgd_controlnet_cfg cfg;
} net;

static void net_free(net *n) {
    imgd_wbind_free(n->b);
    imgd_model_info_free(n->mi);
    imgd_weights_free(n->w);
    memset(n, 0, sizeof *n);
}

static bool net_open(net *n, const char *shared, const char *rel) {
    char path[4096];
    memset(n, 0, sizeof *n);
    imgd_fmt(path, sizeof path, "%s/conformance/%s", shared, rel);
    CHECK_STATUS(imgd_weights_open(path, NULL, &n->w), IMGD_OK);
    if (n->w) CHECK_STATUS(imgd_model_detect(n->w, &n->mi), IMGD_OK);
    if (n->mi) CHECK_STATUS(imgd_wbind_new(n->w, n->mi, &n->b), IMGD_OK);
    if (n->b) CHECK_STATUS(imgd_controlnet_cfg_from_detect(n->mi, n->b, &n->cfg), IMGD_OK);
    if (!n->b) {
        net_free(n);
        return false;
    }
    n->cfg.unet.groups = 4; /* the narrow kit: not in the single file's shapes */
    CHECK_EQ_INT(n->cfg.hint_blocks, 6);
    CHECK_EQ_INT(n->cfg.cond_channels, 3);
    return true;
}

/* ---- residuals and UNet output ------------------------------------------------------------ */

/* The UNet of the narrow model with residuals res (already scaled) against `golden`. */
static void unet_with_residuals(const char *shared, imgd_weights *gw, float *const *res,
                                const size_t *res_n, int32_t n_res, const char *golden,
                                const char *what) {
    net  u; /* the UNet, opened like a ControlNet's encoder (no cfg from the hint encoder) */
    char path[4096];
    memset(&u, 0, sizeof u);
    imgd_fmt(path, sizeof path, "%s/conformance/sd15-narrow/diffusers", shared);
    CHECK_STATUS(imgd_weights_open(path, NULL, &u.w), IMGD_OK);
    if (u.w) CHECK_STATUS(imgd_model_detect(u.w, &u.mi), IMGD_OK);
    if (u.mi) CHECK_STATUS(imgd_wbind_new(u.w, u.mi, &u.b), IMGD_OK);
    imgd_unet_cfg cfg;
    if (!u.b || imgd_unet_cfg_from_detect(u.mi, &cfg) != IMGD_OK) {
        net_free(&u);
        return;
    }
    imgd_backend *be = NULL;
    imgd_graph   *g  = NULL;
    CHECK_STATUS(imgd_backend_new("cpu", NULL, &be), IMGD_OK);
    CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
    imgd_unet_extra ex = {0};
    for (int32_t i = 0; g && i < n_res; i++) {
        imgd_tensor_info ti;
        char             name[64];
        if (i + 1 < n_res)
            imgd_fmt(name, sizeof name, "scale_1.0.down_block_res.%02d", (int)i);
        else
            imgd_fmt(name, sizeof name, "scale_1.0.mid_block_res");
        if (!golden_get(gw, name, &ti)) continue; /* for the shape */
        imgd_tensor *t = imgd_graph_input(g, name, IMGD_DTYPE_F32, ti.n_dims, ti.shape);
        CHECK_EQ_INT((size_t)imgd_tensor_numel(t), res_n[i]);
        if (t) CHECK_STATUS(imgd_tensor_bind(t, res[i]), IMGD_OK);
        if (i + 1 < n_res)
            ex.down_res[i] = t;
        else
            ex.mid_res = t;
    }
    ex.n_down_res    = n_res - 1;
    imgd_tensor *out = NULL;
    CHECK_STATUS(imgd_unet_build(g, u.b, "unet", &cfg, golden_input(g, gw, "sample"),
                                 golden_input(g, gw, "timestep"),
                                 golden_input(g, gw, "encoder_hidden_states"), &ex, NULL, &out),
                 IMGD_OK);
    imgd_graph_output(g, out);
    CHECK_STATUS(imgd_graph_plan(g, be, NULL), IMGD_OK);
    CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
    if (out && imgd_graph_status(g) == IMGD_OK) {
        CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
        size_t n = 0;
        float *o = read_tensor(g, out, &n);
        if (o) compare_buf(o, 1.0f, n, gw, golden, what);
        imgd_free(o);
    }
    imgd_graph_free(g);
    imgd_backend_free(be);
    net_free(&u);
}

/* The ControlNet from the control image (hint encoder included) gives the recorded hint
 * embedding and residuals; scaled by 0.5 they give the 0.5 set; the UNet with them added
 * gives the recorded outputs. Both layouts. */
static void test_controlnet_residuals_match_diffusers(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: ControlNet goldens not checked");
        return;
    }
    char          gp[4096];
    imgd_weights *gw = NULL;
    imgd_fmt(gp, sizeof gp, "%s/conformance/sd15-narrow/goldens/controlnet.safetensors", shared);
    CHECK_STATUS(imgd_weights_open(gp, NULL, &gw), IMGD_OK);
    if (!gw) return;
    for (size_t li = 0; li < IMGD_ARRAY_LEN(k_layouts); li++) {
        net n;
        if (!net_open(&n, shared, k_layouts[li].rel)) continue;
        imgd_backend *be = NULL;
        imgd_graph   *g  = NULL;
        CHECK_STATUS(imgd_backend_new("cpu", NULL, &be), IMGD_OK);
        CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
        imgd_tensor *res[IMGD_UNET_SKIPS_MAX + 1], *emb = NULL;
        int32_t      nr = imgd_unet_skip_count(&n.cfg.unet) + 1;
        CHECK_EQ_INT(nr, 13);
        CHECK_STATUS(imgd_controlnet_build(g, n.b, "controlnet", &n.cfg,
                                           golden_input(g, gw, "sample"),
                                           golden_input(g, gw, "timestep"),
                                           golden_input(g, gw, "encoder_hidden_states"), NULL,
                                           golden_input(g, gw, "controlnet_cond"), res, &emb),
                     IMGD_OK);
        imgd_graph_output(g, emb);
        CHECK_STATUS(imgd_graph_plan(g, be, NULL), IMGD_OK);
        CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
        if (imgd_graph_status(g) == IMGD_OK && imgd_graph_compute(g) == IMGD_OK) {
            float *buf[IMGD_UNET_SKIPS_MAX + 1] = {0};
            size_t bn[IMGD_UNET_SKIPS_MAX + 1] = {0}, en = 0;
            float *e = read_tensor(g, emb, &en);
            if (e) compare_buf(e, 1.0f, en, gw, "controlnet_cond_embedding", k_layouts[li].label);
            imgd_free(e);
            for (int32_t i = 0; i < nr; i++) buf[i] = read_tensor(g, res[i], &bn[i]);
            static const struct {
                const char *name;
                float       s;
            } scales[] = {{"scale_1.0", 1.0f}, {"scale_0.5", 0.5f}};
            for (size_t si = 0; si < IMGD_ARRAY_LEN(scales); si++) {
                for (int32_t i = 0; i < nr && buf[i]; i++) {
                    char name[64];
                    if (i + 1 < nr)
                        imgd_fmt(name, sizeof name, "%s.down_block_res.%02d", scales[si].name,
                                 (int)i);
                    else
                        imgd_fmt(name, sizeof name, "%s.mid_block_res", scales[si].name);
                    compare_buf(buf[i], scales[si].s, bn[i], gw, name, k_layouts[li].label);
                }
                float *scaled[IMGD_UNET_SKIPS_MAX + 1] = {0};
                bool   ok                              = true;
                for (int32_t i = 0; i < nr; i++) {
                    scaled[i] = buf[i] ? imgd_malloc(bn[i] * sizeof(float)) : NULL;
                    ok        = ok && scaled[i];
                    for (size_t j = 0; scaled[i] && j < bn[i]; j++)
                        scaled[i][j] = buf[i][j] * scales[si].s;
                }
                char name[64];
                imgd_fmt(name, sizeof name, "%s.unet_out", scales[si].name);
                if (ok) unet_with_residuals(shared, gw, scaled, bn, nr, name, k_layouts[li].label);
                for (int32_t i = 0; i < nr; i++) imgd_free(scaled[i]);
            }
            for (int32_t i = 0; i < nr; i++) imgd_free(buf[i]);
        }
        imgd_graph_free(g);
        imgd_backend_free(be);
        net_free(&n);
    }
    imgd_weights_free(gw);
}

/* ---- whole pipeline ---------------------------------------------------------------------- */

typedef struct replay {
    imgd_weights *g;
    int           draws;
} replay;

/* The first draw is initial_latents; Euler's per-step draws are unused (s_churn 0) and
 * not in this golden: zeros. */
static bool replay_noise(float *out, size_t n, void *user) {
    replay          *r = user;
    imgd_tensor_info ti;
    if (r->draws++ > 0) {
        memset(out, 0, n * sizeof *out);
        return true;
    }
    if (imgd_weights_find(r->g, "initial_latents", &ti) != IMGD_OK || ti.nbytes != n * 4)
        return false;
    memcpy(out, ti.data, n * sizeof *out);
    return true;
}

static imgd_model *load_model(const char *shared) {
    return tg_load_sd15(shared, imgd_load_params_default());
}

/* The golden's control image as 8-bit RGB (its values are k / 255). */
static bool control_image(imgd_weights *g, imgd_image_u8 *img) {
    imgd_tensor_info ti;
    const float     *d = golden_get(g, "control_image", &ti);
    if (!d || ti.n_dims != 4) return false;
    int32_t H = (int32_t)ti.shape[2], W = (int32_t)ti.shape[3];
    img->px = imgd_malloc((size_t)3 * W * H);
    if (!img->px) return false;
    img->w = W;
    img->h = H;
    img->c = 3;
    for (int32_t c = 0; c < 3; c++)
        for (int32_t i = 0; i < W * H; i++)
            img->px[(size_t)i * 3 + (size_t)c] =
                (uint8_t)lrintf(d[(size_t)c * (size_t)(W * H) + (size_t)i] * 255.0f);
    return true;
}

typedef struct gen_case {
    imgd_control_spec spec[2];
    int32_t           n;
} gen_case;

/* Runs the golden's txt2img with the given controls; returns the pixels (caller frees) */
static float *generate(imgd_model *m, imgd_weights *g, const imgd_control_spec *c, int32_t n,
                       const char *what) {
    replay          r = {g, 0};
    imgd_gen_params p = imgd_gen_params_default();
    p.prompt          = "a photograph of an astronaut riding a horse, highly detailed";
    p.negative        = "blurry, low quality, deformed";
    p.sampler         = "euler";
    p.schedule        = "linspace";
    p.steps           = 5;
    p.cfg             = 7.5f;
    p.width = p.height        = 128;
    p.clip_skip_positive_only = true;
    p.noise                   = replay_noise;
    p.noise_user              = &r;
    p.controls                = c;
    p.n_controls              = n;
    imgd_gen_result *res      = NULL;
    imgd_status      st       = imgd_generate(m, &p, &res);
    CHECK_MSG(st == IMGD_OK, "%s: %s", what, imgd_last_error());
    if (st != IMGD_OK) return NULL;
    float *px   = res->pixels;
    res->pixels = NULL;
    imgd_gen_result_free(res);
    return px;
}

/* max and mean |a - ref| over the 3 x 128 x 128 image; prints them. */
static void image_err(const float *a, const float *ref, const char *what, double *mx,
                      double *mean) {
    size_t n = (size_t)3 * 128 * 128;
    double s = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        m        = d > m ? d : m;
        s += d;
    }
    *mx   = m;
    *mean = s / (double)n;
    printf("  %-44s image max abs %.3g mean abs %.3g\n", what, m, *mean);
}

static void check_image(const float *a, imgd_weights *g, const char *name, const char *what) {
    imgd_tensor_info ti;
    const float     *ref = golden_get(g, name, &ti);
    if (!a || !ref) return;
    double mx, mean;
    image_err(a, ref, what, &mx, &mean);
    CHECK_MSG(mx <= 2e-3 && mean <= 1e-4, "%s: image max abs %g, mean abs %g", what, mx, mean);
}

static void test_controlnet_pipeline_matches_golden(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: ControlNet pipeline not checked");
        return;
    }
    char          gp[4096], pp[4096], cn[2][4096];
    imgd_weights *g = NULL, *plain = NULL;
    imgd_fmt(gp, sizeof gp,
             "%s/conformance/sd15-narrow/goldens/txt2img_euler_controlnet.safetensors", shared);
    imgd_fmt(pp, sizeof pp, "%s/conformance/sd15-narrow/goldens/txt2img_euler.safetensors", shared);
    CHECK_STATUS(imgd_weights_open(gp, NULL, &g), IMGD_OK);
    CHECK_STATUS(imgd_weights_open(pp, NULL, &plain), IMGD_OK);
    imgd_model   *m   = g && plain ? load_model(shared) : NULL;
    imgd_image_u8 img = {0};
    if (!m || !control_image(g, &img)) goto done;
    for (size_t li = 0; li < 2; li++)
        imgd_fmt(cn[li], sizeof cn[li], "%s/conformance/%s", shared, k_layouts[li].rel);

    imgd_control_spec s = imgd_control_spec_default();
    s.image             = &img;
    s.scale             = 0.8f;
    for (size_t li = 0; li < 2; li++) { /* each layout alone */
        char what[96];
        imgd_fmt(what, sizeof what, "txt2img_euler_controlnet (%s)", k_layouts[li].label);
        s.path   = cn[li];
        float *a = generate(m, g, &s, 1, what);
        check_image(a, g, "image", what);
        imgd_free(a);
    }

    /* two at once: 0.3 (folder) + 0.5 (single file) of the same weights = 0.8 */
    imgd_control_spec two[2] = {s, s};
    two[0].path              = cn[0];
    two[0].scale             = 0.3f;
    two[1].path              = cn[1];
    two[1].scale             = 0.5f;
    float *a                 = generate(m, g, two, 2, "two ControlNets 0.3 + 0.5");
    check_image(a, g, "image", "two ControlNets 0.3 + 0.5");
    imgd_free(a);

    /* a window no step of 5 falls in ([0.9, 1]: step 4 starts at 0.8): the plain image */
    s.path  = cn[0];
    s.start = 0.9f;
    a       = generate(m, g, &s, 1, "window [0.9, 1]");
    check_image(a, plain, "image", "window [0.9, 1] = txt2img_euler");
    imgd_free(a);

    /* the first step only: differs from both */
    s.start = 0.0f;
    s.end   = 0.2f;
    a       = generate(m, g, &s, 1, "window [0, 0.2]");
    imgd_tensor_info ti, tp;
    const float     *ref = golden_get(g, "image", &ti), *pl = golden_get(plain, "image", &tp);
    if (a && ref && pl) {
        double mx1, mx2, mean;
        image_err(a, ref, "window [0, 0.2] vs full control", &mx1, &mean);
        image_err(a, pl, "window [0, 0.2] vs no control", &mx2, &mean);
        CHECK(mx1 > 1e-2 && mx2 > 1e-2);
    }
    imgd_free(a);

    /* one batch, two items with different start/end: each as alone */
    {
        replay            r1 = {g, 0}, r2 = {g, 0};
        imgd_control_spec c1 = imgd_control_spec_default(), c2;
        c1.image             = &img;
        c1.scale             = 0.8f;
        c1.path              = cn[0];
        c2                   = c1;
        c2.start             = 0.9f;
        imgd_gen_params p1   = imgd_gen_params_default(), p2;
        p1.prompt            = "a photograph of an astronaut riding a horse, highly detailed";
        p1.negative          = "blurry, low quality, deformed";
        p1.schedule          = "linspace";
        p1.steps             = 5;
        p1.width = p1.height            = 128;
        p1.clip_skip_positive_only      = true;
        p1.noise                        = replay_noise;
        p1.controls                     = &c1;
        p1.n_controls                   = 1;
        p2                              = p1;
        p1.noise_user                   = &r1;
        p2.noise_user                   = &r2;
        p2.controls                     = &c2;
        const imgd_gen_params *items[2] = {&p1, &p2};
        imgd_gen_item_result   out[2];
        CHECK_STATUS(imgd_generate_many(m, items, 2, out), IMGD_OK);
        if (out[0].result && out[1].result) {
            check_image(out[0].result->pixels, g, "image", "batch item 0: full control");
            check_image(out[1].result->pixels, plain, "image", "batch item 1: [0.9, 1] = plain");
        }
        imgd_gen_result_free(out[0].result);
        imgd_gen_result_free(out[1].result);
        /* another ControlNet file: not batchable */
        c2.path           = cn[1];
        const char *field = NULL;
        CHECK(!imgd_gen_params_batchable(m, &p1, &p2, &field));
        CHECK_STR(field, "controls");
        char k1[IMGD_GEN_BATCH_KEY_MAX], k2[IMGD_GEN_BATCH_KEY_MAX];
        CHECK_STATUS(imgd_gen_batch_key(m, &p1, k1, sizeof k1), IMGD_OK);
        CHECK_STATUS(imgd_gen_batch_key(m, &p2, k2, sizeof k2), IMGD_OK);
        CHECK(strcmp(k1, k2) != 0 && strstr(k1, "controls=1:"));
    }

    /* guess mode: runs, differs from the normal run */
    s.end        = 1.0f;
    s.guess_mode = true;
    a            = generate(m, g, &s, 1, "guess mode");
    if (a && ref) {
        double mx, mean;
        image_err(a, ref, "guess mode vs normal", &mx, &mean);
        CHECK(isfinite(mx) && mx > 1e-2);
    }
    imgd_free(a);
done:
    imgd_image_u8_free(&img);
    imgd_model_free(m);
    imgd_weights_free(g);
    imgd_weights_free(plain);
}

/* diffusers' controlnet_keep and guess-mode scales. */
static void test_controlnet_keep_and_guess_scales(void) {
    /* 5 steps, [0, 0.2]: only step 0; [0.4, 1]: steps 2..4; [0.9, 1]: none */
    static const struct {
        float start, end;
        bool  keep[5];
    } k_cases[] = {{0.0f, 0.2f, {true, false, false, false, false}},
                   {0.4f, 1.0f, {false, false, true, true, true}},
                   {0.9f, 1.0f, {false, false, false, false, false}},
                   {0.0f, 1.0f, {true, true, true, true, true}},
                   {0.2f, 0.8f, {false, true, true, true, false}}};
    for (size_t c = 0; c < IMGD_ARRAY_LEN(k_cases); c++)
        for (int32_t i = 0; i < 5; i++)
            CHECK_MSG(imgd_sd_control_keep(i, 5, k_cases[c].start, k_cases[c].end) ==
                          k_cases[c].keep[i],
                      "[%g, %g] step %d", (double)k_cases[c].start, (double)k_cases[c].end, (int)i);
    CHECK_NEAR(imgd_controlnet_guess_scale(0, 13), 0.1, 1e-7);
    CHECK_NEAR(imgd_controlnet_guess_scale(12, 13), 1.0, 1e-7);
    CHECK_NEAR(imgd_controlnet_guess_scale(6, 13), pow(10.0, -0.5), 1e-6);
    CHECK_NEAR(imgd_controlnet_guess_scale(3, 13), pow(10.0, -0.75), 1e-6);
}

/* Sizes that are multiples of 8 but not of 64 (latent 17x15: the UNet's halvings round up
 * and its upsamplers cut back, as diffusers' forward_upsample_size): txt2img, and with a
 * ControlNet whose residuals take the rounded-up sizes. */
static void test_odd_sizes(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: odd sizes not checked");
        return;
    }
    char          gp[4096], cn[4096];
    imgd_weights *g = NULL;
    imgd_fmt(gp, sizeof gp,
             "%s/conformance/sd15-narrow/goldens/txt2img_euler_controlnet.safetensors", shared);
    imgd_fmt(cn, sizeof cn, "%s/conformance/%s", shared, k_layouts[0].rel);
    CHECK_STATUS(imgd_weights_open(gp, NULL, &g), IMGD_OK);
    imgd_model   *m   = g ? load_model(shared) : NULL;
    imgd_image_u8 img = {0};
    if (!m || !control_image(g, &img)) goto done;
    imgd_control_spec s = imgd_control_spec_default();
    s.image             = &img;
    s.path              = cn;
    for (int32_t k = 0; k < 2; k++) {
        imgd_gen_params p    = imgd_gen_params_default();
        p.prompt             = "a photograph of an astronaut riding a horse";
        p.steps              = 2;
        p.seed               = 3;
        p.width              = k ? 120 : 136;
        p.height             = k ? 136 : 120;
        p.controls           = k ? &s : NULL;
        p.n_controls         = k;
        imgd_gen_result *res = NULL;
        imgd_status      st  = imgd_generate(m, &p, &res);
        CHECK_MSG(st == IMGD_OK, "%dx%d%s: %s", (int)p.width, (int)p.height,
                  k ? " with a ControlNet" : "", imgd_last_error());
        if (st != IMGD_OK) continue;
        CHECK(res->n == 1 && res->images[0].w == p.width && res->images[0].h == p.height);
        size_t n  = (size_t)3 * (size_t)p.width * (size_t)p.height;
        float  lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            lo = fminf(lo, res->pixels[i]);
            hi = fmaxf(hi, res->pixels[i]);
        }
        CHECK_MSG(isfinite(lo) && isfinite(hi) && hi > lo, "pixels %g..%g", (double)lo, (double)hi);
        imgd_gen_result_free(res);
    }
done:
    imgd_free(img.px);
    imgd_model_free(m);
    imgd_weights_free(g);
}

int main(void) {
    RUN(test_controlnet_keep_and_guess_scales);
    RUN(test_odd_sizes);
    RUN(test_controlnet_residuals_match_diffusers);
    RUN(test_controlnet_pipeline_matches_golden);
    TEST_END();
}
