/* FLUX.1 flow matching and latents against diffusers (../shared/conformance/flux-narrow):
 * the FlowMatchEuler schedule (mu, timesteps, sigmas of txt2img_flux / txt2img_schnell and
 * the manifest), every Euler step of both pipelines replayed from the recorded latents with
 * our transformer's velocity, the whole 4-step loop, and the FLUX VAE (16 latent channels,
 * no quant convs, scale then shift): vae_decode / vae_encode goldens and the pipelines'
 * final images, on the cpu and ref backends. */
#include <math.h>

#include "backends.h"
#include "base/alloc.h"
#include "base/map.h"
#include "base/text.h"
#include "detect/detect.h"
#include "golden.h"
#include "models/flux.h"
#include "models/vae.h"
#include "models/wbind.h"
#include "pipeline/flux_gen.h"
#include "sampling/flow.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

#define k_backends (tb_backends()->name)

/* max |a - b| <= rel * max(1, max|ref|) (abs when rel < 0: tolerance -rel); prints. */
static void check_close(const float *got, const float *ref, size_t n, double rel,
                        const char *what) {
    double err = 0.0, mx = 0.0;
    bool   finite = true;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = false;
        err = fmax(err, fabs((double)got[i] - (double)ref[i]));
        mx  = fmax(mx, fabs((double)ref[i]));
    }
    double tol = rel < 0 ? -rel : rel * fmax(1.0, mx);
    printf("  %-52s max|err| %.3g (tol %.3g, max|ref| %.3g)\n", what, err, tol, mx);
    CHECK_MSG(finite && err <= tol, "%s: max error %g > %g", what, err, tol);
}

static imgd_weights *open_rel(const char *shared, const char *rel) {
    char path[4096];
    imgd_fmt(path, sizeof path, "%s/conformance/flux-narrow/%s", shared, rel);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
    return w;
}

/* ---- schedule -------------------------------------------------------------------------- */

/* The kit's scheduler_config.json (dev: diffusers/, schnell: schnell/). */
static imgd_flow_params params_of(bool dev) {
    imgd_flow_params p      = {0};
    const char      *shared = tu_shared_dir();
    char             path[4096], *text = NULL;
    size_t           len = 0;
    imgd_fmt(path, sizeof path, "%s/conformance/flux-narrow/%s/scheduler/scheduler_config.json",
             shared ? shared : ".", dev ? "diffusers" : "schnell");
    CHECK_STATUS(imgd_file_read_all(path, 1u << 20, &text, &len), IMGD_OK);
    if (text) CHECK_STATUS(imgd_flow_params_from_json(path, text, len, &p), IMGD_OK);
    imgd_free(text);
    return p;
}

static imgd_flow_schedule *schedule_of(bool dev, int32_t steps, int64_t seq_len) {
    imgd_flow_params p = params_of(dev);
    double           base[16];
    imgd_flow_flux_sigmas(steps, base);
    imgd_flow_schedule *s = NULL;
    CHECK_STATUS(imgd_flow_schedule_new(&p, steps, base, imgd_flow_mu(&p, seq_len), &s), IMGD_OK);
    return s;
}

/* mu, timesteps and sigmas equal the recorded ones (relative 1e-6: the README's bar). */
static void test_flow_schedule_matches_pipelines(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: flow schedule not checked");
        return;
    }
    static const char *const rel[2] = {"goldens/txt2img_schnell.safetensors",
                                       "goldens/txt2img_flux.safetensors"};
    for (int dev = 0; dev < 2; dev++) {
        imgd_weights *gd = open_rel(shared, rel[dev]);
        if (!gd) continue;
        imgd_flow_params    p  = params_of(dev);
        imgd_flow_schedule *s  = schedule_of(dev, 4, 64);
        size_t              nt = 0, ns = 0, nm = 0;
        const float        *t = tg_golden(gd, "timesteps", &nt), *sg = tg_golden(gd, "sigmas", &ns);
        if (s && t && sg && nt == 4 && ns == 5) {
            check_close(imgd_flow_timesteps(s), t, 4, 1e-6,
                        dev ? "dev timesteps" : "schnell timesteps");
            check_close(imgd_flow_sigmas(s), sg, 5, 1e-6, dev ? "dev sigmas" : "schnell sigmas");
            CHECK(imgd_flow_timesteps(s)[0] == 1000.0f && imgd_flow_sigmas(s)[4] == 0.0f);
        }
        if (dev) {
            const float *mu = tg_golden(gd, "mu", &nm);
            double       m  = imgd_flow_mu(&p, 64);
            CHECK_NEAR(m, 0.4675, 1e-12);
            if (mu) CHECK_NEAR((float)m, mu[0], 1e-7);
            printf("  mu(64 tokens) = %.10g\n", m);
        }
        imgd_flow_schedule_free(s);
        imgd_weights_free(gd);
    }
    /* bad configurations name the field */
    imgd_flow_params    p      = imgd_flow_params_default();
    imgd_flow_schedule *s      = NULL;
    double              bad[2] = {1.0, 1.5};
    CHECK_STATUS(imgd_flow_schedule_new(&p, 2, bad, 0.5, &s), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "sigmas[1]"), "%s", imgd_last_error());
    CHECK_STATUS(imgd_flow_schedule_new(&p, 4, NULL, (double)NAN, &s), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "mu"), "%s", imgd_last_error());
    CHECK_STATUS(imgd_flow_schedule_new(&p, 0, NULL, 0.5, &s), IMGD_E_INVALID_ARG);
    CHECK(s == NULL);
    /* the scheduler's own spacing (SD3 style, static shift 3: applied to the table and again) */
    p.use_dynamic_shifting = false;
    CHECK_STATUS(imgd_flow_schedule_new(&p, 3, NULL, 0.0, &s), IMGD_OK);
    if (s) {
        const float *sg   = imgd_flow_sigmas(s);
        double       smin = 3.0 * 0.001 / (1.0 + 2.0 * 0.001), mid = (1.0 + smin) / 2.0;
        CHECK_NEAR(sg[0], 1.0, 1e-7);
        CHECK_NEAR(sg[1], 3.0 * mid / (1.0 + 2.0 * mid), 1e-6);
        CHECK_NEAR(sg[2], 3.0 * smin / (1.0 + 2.0 * smin), 1e-6);
        CHECK(sg[3] == 0.0f);
    }
    imgd_flow_schedule_free(s);
}

/* ---- transformer for the loop ---------------------------------------------------------- */

typedef struct denoiser {
    imgd_weights    *w;
    imgd_model_info *mi;
    imgd_wbind      *b;
    imgd_flux_cfg    cfg;
    imgd_graph      *g;
    imgd_backend    *be;
    imgd_tensor     *x, *t, *out;
    float            tval, guidance;
    float            ids[128 * 3];
} denoiser;

static void denoiser_free(denoiser *d) {
    imgd_graph_free(d->g);
    imgd_backend_free(d->be);
    imgd_wbind_free(d->b);
    imgd_model_info_free(d->mi);
    imgd_weights_free(d->w);
    memset(d, 0, sizeof *d);
}

/* The transformer of `rel` on the pipeline golden's text embeddings, x and t bound per call. */
static bool denoiser_open(denoiser *d, const char *shared, const char *rel, const imgd_weights *gd,
                          const char *backend) {
    memset(d, 0, sizeof *d);
    d->w = open_rel(shared, rel);
    if (d->w) CHECK_STATUS(imgd_model_detect(d->w, &d->mi), IMGD_OK);
    if (d->mi) CHECK_STATUS(imgd_wbind_new(d->w, d->mi, &d->b), IMGD_OK);
    if (d->b) CHECK_STATUS(imgd_flux_cfg_from_detect(d->mi, &d->cfg), IMGD_OK);
    if (d->b && d->cfg.n_axes == 0) { /* a BFL file has no config.json: the narrow rope axes */
        d->cfg.n_axes       = 3;
        d->cfg.axes_dims[0] = 2;
        d->cfg.axes_dims[1] = 2;
        d->cfg.axes_dims[2] = 4;
    }
    CHECK_STATUS(imgd_backend_new(backend, NULL, &d->be), IMGD_OK);
    CHECK_STATUS(imgd_graph_new(NULL, &d->g), IMGD_OK);
    size_t       ne = 0, np = 0;
    const float *pe = tg_golden(gd, "prompt_embeds", &ne),
                *pp = tg_golden(gd, "pooled_prompt_embeds", &np);
    if (!d->b || !d->be || !d->g || !pe || !pp) return false;
    imgd_flux_ids(64, 16, 16, d->ids);
    imgd_flux_inputs in = {0};
    imgd_graph      *g  = d->g;
    d->x                = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 3, (int64_t[]){1, 64, 64});
    d->t                = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){1});
    in.x                = d->x;
    in.t                = d->t;
    in.ctx              = imgd_graph_input(g, "ctx", IMGD_DTYPE_F32, 3, (int64_t[]){1, 64, 32});
    in.pooled           = imgd_graph_input(g, "pooled", IMGD_DTYPE_F32, 2, (int64_t[]){1, 16});
    in.ids              = imgd_graph_input(g, "ids", IMGD_DTYPE_F32, 2, (int64_t[]){128, 3});
    if (d->cfg.guidance_embed) {
        in.guidance = imgd_graph_input(g, "guidance", IMGD_DTYPE_F32, 1, (int64_t[]){1});
        d->guidance = 3.5f;
        if (in.guidance) CHECK_STATUS(imgd_tensor_bind(in.guidance, &d->guidance), IMGD_OK);
    }
    if (!in.ctx || !in.pooled || !in.ids || !d->x || !d->t) return false;
    CHECK_STATUS(imgd_tensor_bind(in.ctx, (void *)(uintptr_t)pe), IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(in.pooled, (void *)(uintptr_t)pp), IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(in.ids, d->ids), IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(d->t, &d->tval), IMGD_OK);
    CHECK_STATUS(imgd_flux_build(g, d->b, "transformer", &d->cfg, &in, NULL, &d->out), IMGD_OK);
    imgd_graph_output(g, d->out);
    CHECK_STATUS(imgd_graph_plan(g, d->be, NULL), IMGD_OK);
    CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
    return imgd_graph_status(g) == IMGD_OK;
}

static imgd_status denoise(void *user, const float *x, size_t n, float t, float *v) {
    denoiser   *d  = user;
    imgd_status st = imgd_tensor_bind(d->x, (void *)(uintptr_t)x);
    d->tval        = t;
    if (st == IMGD_OK) st = imgd_graph_compute(d->g);
    return st == IMGD_OK ? imgd_graph_read_f32(d->g, d->out, v, n) : st;
}

/* Each step from the recorded previous latents (transformer tolerance), then the whole
 * loop from initial_latents (end-to-end tolerance 1e-3 * max|ref|). */
static void test_flow_euler_steps_reproduce_pipelines(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX sampling loop not checked");
        return;
    }
    static const struct {
        const char *golden, *model, *label;
        bool        dev;
    } cases[] = {
        {"goldens/txt2img_flux.safetensors", "diffusers", "dev", true},
        {"goldens/txt2img_schnell.safetensors", "flux-narrow-schnell-transformer-bfl.safetensors",
         "schnell bfl", false},
    };
    for (size_t ci = 0; ci < IMGD_ARRAY_LEN(cases); ci++) {
        imgd_weights       *gd = open_rel(shared, cases[ci].golden);
        denoiser            d;
        imgd_flow_schedule *s = schedule_of(cases[ci].dev, 4, 64);
        bool   ok = gd && s && denoiser_open(&d, shared, cases[ci].model, gd, tb_primary());
        float *x  = imgd_malloc((size_t)64 * 64 * sizeof *x);
        float *v  = imgd_malloc((size_t)64 * 64 * sizeof *v);
        char   what[128];
        for (int32_t i = 0; ok && x && v && i < 4; i++) {
            char   prev[48], next[48];
            size_t n0 = 0, n1 = 0;
            imgd_fmt(prev, sizeof prev, "latents_after_step.%02d", (int)i - 1);
            imgd_fmt(next, sizeof next, "latents_after_step.%02d", (int)i);
            const float *x0 = tg_golden(gd, i == 0 ? "initial_latents" : prev, &n0);
            const float *x1 = tg_golden(gd, next, &n1);
            if (!x0 || !x1 || n0 != 4096 || n1 != 4096) break;
            memcpy(x, x0, 4096 * sizeof *x);
            CHECK_STATUS(denoise(&d, x, 4096, imgd_flow_model_t(s, i), v), IMGD_OK);
            imgd_flow_step(s, i, x, v, 4096);
            imgd_fmt(what, sizeof what, "%s step %d from recorded latents", cases[ci].label,
                     (int)i);
            check_close(x, x1, 4096, 1e-4, what);
        }
        size_t       n0 = 0, nf = 0;
        const float *init = ok ? tg_golden(gd, "initial_latents", &n0) : NULL;
        const float *fin  = ok ? tg_golden(gd, "latents_after_step.03", &nf) : NULL;
        if (init && fin && x && v) {
            memcpy(x, init, 4096 * sizeof *x);
            CHECK_STATUS(imgd_flow_run(s, x, 4096, 0, v, denoise, &d, NULL, NULL), IMGD_OK);
            imgd_fmt(what, sizeof what, "%s 4-step loop final latents", cases[ci].label);
            check_close(x, fin, 4096, 1e-3, what);
            CHECK_STATUS(imgd_flow_run(s, x, 4096, 5, v, denoise, &d, NULL, NULL),
                         IMGD_E_INVALID_ARG);
        }
        imgd_free(x);
        imgd_free(v);
        if (ok || d.w) denoiser_free(&d);
        imgd_flow_schedule_free(s);
        imgd_weights_free(gd);
    }
}

/* ---- VAE ----------------------------------------------------------------------------------- */

typedef struct vae {
    imgd_weights    *w;
    imgd_model_info *mi;
    imgd_wbind      *b;
    imgd_vae_cfg     cfg;
} vae;

static bool vae_open(vae *m, const char *shared) {
    memset(m, 0, sizeof *m);
    m->w = open_rel(shared, "diffusers");
    if (m->w) CHECK_STATUS(imgd_model_detect(m->w, &m->mi), IMGD_OK);
    if (m->mi) CHECK_STATUS(imgd_wbind_new(m->w, m->mi, &m->b), IMGD_OK);
    if (m->b) CHECK_STATUS(imgd_vae_cfg_init(&m->cfg, &m->mi->vae, 0), IMGD_OK);
    if (!m->b) return false;
    CHECK(m->mi->has_vae);
    CHECK_EQ_INT(m->cfg.latent_channels, 16);
    CHECK_EQ_INT(m->cfg.groups, 4);
    CHECK(!m->cfg.quant_conv);
    CHECK_NEAR(m->mi->vae.scaling_factor, 0.3611f, 1e-7);
    CHECK_NEAR(m->mi->vae.shift_factor, 0.1159f, 1e-7);
    return true;
}

static void vae_free(vae *m) {
    imgd_wbind_free(m->b);
    imgd_model_info_free(m->mi);
    imgd_weights_free(m->w);
}

/* decoder_input = unpacked / scaling + shift, in f32 as torch. */
static void decoder_input(const vae *m, const float *packed, int64_t h, float *out) {
    imgd_flux_unpack(packed, 1, 16, h, h, out);
    for (int64_t i = 0; i < 16 * h * h; i++) {
        float q = out[i] / m->mi->vae.scaling_factor;
        out[i]  = q + m->mi->vae.shift_factor;
    }
}

/* Decodes z [1, 16, h, h] on backend; image (and mid block) compared when names given. */
static void vae_decode_check(vae *m, const char *backend, const float *z, int64_t h,
                             const imgd_weights *gd, bool pipeline_image, const char *label) {
    imgd_graph   *g  = NULL;
    imgd_backend *be = NULL;
    CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
    CHECK_STATUS(imgd_backend_new(backend, NULL, &be), IMGD_OK);
    imgd_tensor *zt =
        g ? imgd_graph_input(g, "z", IMGD_DTYPE_F32, 4, (int64_t[]){1, 16, h, h}) : NULL;
    imgd_vae_decode_out o = {0};
    if (zt && be) {
        CHECK_STATUS(imgd_tensor_bind(zt, (void *)(uintptr_t)z), IMGD_OK);
        CHECK_STATUS(imgd_vae_decode_build(g, m->b, "vae", &m->cfg, zt, &o), IMGD_OK);
        imgd_graph_output(g, o.image);
        imgd_graph_output(g, o.mid_block);
        CHECK_STATUS(imgd_graph_plan(g, be, NULL), IMGD_OK);
        CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
        CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
    }
    size_t       n = 0, nm = 0;
    const float *ref = tg_golden(gd, "image", &n);
    float       *img = ref ? imgd_malloc(n * sizeof *img) : NULL;
    char         what[128];
    if (img && o.image && imgd_graph_read_f32(g, o.image, img, n) == IMGD_OK) {
        if (pipeline_image) { /* clamp(decode / 2 + 0.5, 0, 1), abs 2e-3 */
            for (size_t i = 0; i < n; i++) img[i] = fminf(fmaxf(img[i] / 2.0f + 0.5f, 0.0f), 1.0f);
            imgd_fmt(what, sizeof what, "%s image [0,1] (%s)", label, backend);
            check_close(img, ref, n, -2e-3, what);
        } else {
            imgd_fmt(what, sizeof what, "%s image (%s)", label, backend);
            check_close(img, ref, n, 1e-4, what);
            const float *mid = tg_golden(gd, "decoder_mid_block", &nm);
            float       *mg  = mid ? imgd_malloc(nm * sizeof *mg) : NULL;
            if (mg && imgd_graph_read_f32(g, o.mid_block, mg, nm) == IMGD_OK) {
                imgd_fmt(what, sizeof what, "%s decoder_mid_block (%s)", label, backend);
                check_close(mg, mid, nm, 1e-4, what);
            }
            imgd_free(mg);
        }
    } else {
        CHECK_MSG(0, "%s: no decoded image", label);
    }
    imgd_free(img);
    imgd_graph_free(g);
    imgd_backend_free(be);
}

static void test_flux_vae_decode(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX VAE decode not checked");
        return;
    }
    vae           m;
    imgd_weights *gd = open_rel(shared, "goldens/vae_decode.safetensors");
    if (!gd || !vae_open(&m, shared)) {
        imgd_weights_free(gd);
        return;
    }
    size_t       np = 0, nd = 0;
    const float *packed = tg_golden(gd, "latents_packed", &np);
    const float *di     = tg_golden(gd, "decoder_input", &nd);
    float        z[16 * 8 * 8];
    if (packed && di && np == 1024 && nd == 1024) {
        decoder_input(&m, packed, 8, z);
        check_close(z, di, 1024, 1e-6, "vae_decode decoder_input (unpack, /s + shift)");
        for (size_t bi = 0; bi < tb_backends()->n; bi++)
            vae_decode_check(&m, k_backends[bi], di, 8, gd, false, "vae_decode");
    }
    /* the pipelines' final images from their recorded final latents */
    static const char *const pipes[2] = {"goldens/txt2img_flux.safetensors",
                                         "goldens/txt2img_schnell.safetensors"};
    for (int pi = 0; pi < 2; pi++) {
        imgd_weights *pg = open_rel(shared, pipes[pi]);
        size_t        nf = 0, ndi = 0;
        const float  *fin = pg ? tg_golden(pg, "latents_after_step.03", &nf) : NULL;
        const float  *pdi = pg ? tg_golden(pg, "decoder_input", &ndi) : NULL;
        float        *zz  = imgd_malloc((size_t)16 * 16 * 16 * sizeof *zz);
        if (fin && pdi && zz && nf == 4096 && ndi == 4096) {
            decoder_input(&m, fin, 16, zz);
            check_close(zz, pdi, 4096, 1e-6, pi ? "schnell decoder_input" : "dev decoder_input");
            vae_decode_check(&m, tb_primary(), pdi, 16, pg, true, pi ? "schnell" : "dev");
        }
        imgd_free(zz);
        imgd_weights_free(pg);
    }
    vae_free(&m);
    imgd_weights_free(gd);
}

static void test_flux_vae_encode(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX VAE encode not checked");
        return;
    }
    vae           m;
    imgd_weights *gd = open_rel(shared, "goldens/vae_encode.safetensors");
    if (!gd || !vae_open(&m, shared)) {
        imgd_weights_free(gd);
        return;
    }
    size_t       ni = 0, n = 0;
    const float *image = tg_golden(gd, "image", &ni);
    for (size_t bi = 0; image && ni == (size_t)3 * 64 * 64 && bi < tb_backends()->n; bi++) {
        imgd_graph   *g  = NULL;
        imgd_backend *be = NULL;
        CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
        CHECK_STATUS(imgd_backend_new(k_backends[bi], NULL, &be), IMGD_OK);
        imgd_tensor *x =
            g ? imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4, (int64_t[]){1, 3, 64, 64}) : NULL;
        imgd_vae_encode_out o = {0};
        if (x && be) {
            CHECK_STATUS(imgd_tensor_bind(x, (void *)(uintptr_t)image), IMGD_OK);
            CHECK_STATUS(imgd_vae_encode_build(g, m.b, "vae", &m.cfg, x, &o), IMGD_OK);
            imgd_graph_output(g, o.moments);
            imgd_graph_output(g, o.mean);
            imgd_graph_output(g, o.logvar);
            CHECK_STATUS(imgd_graph_plan(g, be, NULL), IMGD_OK);
            CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
            CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
        }
        static const char *const names[3] = {"moments", "mean", "logvar"};
        imgd_tensor *const       outs[3]  = {o.moments, o.mean, o.logvar};
        float                    buf[32 * 64], lat[16 * 64], packed[16 * 64];
        for (int k = 0; k < 3; k++) {
            const float *ref = tg_golden(gd, names[k], &n);
            char         what[96];
            if (!ref || !outs[k] || n > IMGD_ARRAY_LEN(buf)) continue;
            CHECK_STATUS(imgd_graph_read_f32(g, outs[k], buf, n), IMGD_OK);
            imgd_fmt(what, sizeof what, "vae_encode %s (%s)", names[k], k_backends[bi]);
            check_close(buf, ref, n, 1e-4, what);
            if (k == 2) { /* std = exp(logvar / 2) */
                float        sd[16 * 64];
                const float *rs = tg_golden(gd, "std", &n);
                imgd_vae_posterior_std(buf, 1024, sd);
                if (rs && n == 1024) check_close(sd, rs, 1024, 1e-4, "vae_encode std");
            }
            if (k == 1) { /* (mean - shift) * scale, packed */
                for (int i = 0; i < 1024; i++) {
                    float d = buf[i] - m.mi->vae.shift_factor;
                    lat[i]  = d * m.mi->vae.scaling_factor;
                }
                imgd_flux_pack(lat, 1, 16, 8, 8, packed);
                const float *rp = tg_golden(gd, "latents_mode_scaled_packed", &n);
                if (rp && n == 1024)
                    check_close(packed, rp, 1024, 1e-4, "vae_encode latents_mode_scaled_packed");
            }
        }
        imgd_graph_free(g);
        imgd_backend_free(be);
    }
    vae_free(&m);
    imgd_weights_free(gd);
}

/* Activation memory from the plan alone: the narrow model grows with the image, and
 * FLUX.1-dev's real configuration at 1024x1024 with 512 text tokens plans on the cpu
 * backend without any weights. */
static void test_flux_plan_info_without_weights(void) {
    imgd_backend *be = NULL;
    CHECK_STATUS(imgd_backend_new("cpu", NULL, &be), IMGD_OK);
    if (!be) return;
    imgd_flux_cfg c  = {0};
    c.in_channels    = 64;
    c.out_channels   = 64;
    c.hidden         = 3072;
    c.heads          = 24;
    c.head_dim       = 128;
    c.depth          = 19;
    c.depth_single   = 38;
    c.context_dim    = 4096;
    c.pooled_dim     = 768;
    c.mlp_hidden     = 4 * 3072;
    c.n_axes         = 3;
    c.axes_dims[0]   = 16;
    c.axes_dims[1]   = 56;
    c.axes_dims[2]   = 56;
    c.theta          = 10000.0f;
    c.eps            = 1e-6f;
    c.guidance_embed = true;
    imgd_plan_info a = {0}, b = {0};
    double         t0 = tu_now_s();
    CHECK_STATUS(imgd_flux_plan_info(&c, 1, 64, 64, 512, be, &a), IMGD_OK);
    CHECK_STATUS(imgd_flux_plan_info(&c, 1, 128, 128, 512, be, &b), IMGD_OK);
    printf("  FLUX.1-dev activations (cpu plan): 512x512 %.1f MiB, 1024x1024 %.1f MiB (%u nodes, "
           "%.2f s to plan both)\n",
           (double)a.activation_bytes / 1048576.0, (double)b.activation_bytes / 1048576.0,
           b.n_nodes, tu_now_s() - t0);
    CHECK(a.activation_bytes > ((size_t)32 << 20) && b.activation_bytes > a.activation_bytes);
    CHECK(b.activation_bytes < ((size_t)16 << 30));
    CHECK(b.activation_bytes < b.naive_bytes / 4);
    c.axes_dims[2] = 50;
    CHECK_STATUS(imgd_flux_plan_info(&c, 1, 128, 128, 512, be, &b), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_flux_plan_info(&c, 1, 127, 128, 512, be, &b), IMGD_E_INVALID_ARG);
    imgd_backend_free(be);
}

/* imgd_flux_generate from the recorded text embeddings and initial latents reproduces both
 * pipelines: final latents (1e-3 * max|ref|) and the [0, 1] image (2e-3), dev from the
 * diffusers folder (transformer and VAE from one binder), schnell from the BFL file with the
 * folder's VAE. */
static void test_flux_generate_reproduces_txt2img(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX generation not checked");
        return;
    }
    vae m;
    if (!vae_open(&m, shared)) return;
    static const struct {
        const char *golden, *model, *label;
        bool        dev;
    } cases[] = {
        {"goldens/txt2img_flux.safetensors", NULL, "dev", true},
        {"goldens/txt2img_schnell.safetensors", "flux-narrow-schnell-transformer-bfl.safetensors",
         "schnell", false},
    };
    imgd_backend *be = NULL;
    CHECK_STATUS(imgd_backend_new(tb_primary(), NULL, &be), IMGD_OK);
    for (size_t ci = 0; be && ci < IMGD_ARRAY_LEN(cases); ci++) {
        imgd_weights    *gd = open_rel(shared, cases[ci].golden), *tw = NULL;
        imgd_model_info *tmi = NULL;
        imgd_wbind      *tb  = m.b;
        if (cases[ci].model) {
            tw = open_rel(shared, cases[ci].model);
            if (tw) CHECK_STATUS(imgd_model_detect(tw, &tmi), IMGD_OK);
            tb = NULL;
            if (tmi) CHECK_STATUS(imgd_wbind_new(tw, tmi, &tb), IMGD_OK);
        }
        imgd_flux_cfg fc;
        size_t        ne = 0, np = 0, ni = 0, nf = 0, nimg = 0;
        const float  *pe   = gd ? tg_golden(gd, "prompt_embeds", &ne) : NULL;
        const float  *pp   = gd ? tg_golden(gd, "pooled_prompt_embeds", &np) : NULL;
        const float  *init = gd ? tg_golden(gd, "initial_latents", &ni) : NULL;
        const float  *fin  = gd ? tg_golden(gd, "latents_after_step.03", &nf) : NULL;
        const float  *img  = gd ? tg_golden(gd, "image", &nimg) : NULL;
        float        *x = imgd_malloc(4096 * sizeof *x), *im = imgd_malloc(nimg * sizeof *im);
        if (tb && pe && pp && init && fin && img && x && im &&
            imgd_flux_cfg_from_detect(imgd_wbind_info(tb), &fc) == IMGD_OK) {
            if (fc.n_axes == 0) { /* the BFL file: the narrow rope axes */
                fc.n_axes       = 3;
                fc.axes_dims[0] = 2;
                fc.axes_dims[1] = 2;
                fc.axes_dims[2] = 4;
            }
            imgd_flux_gen_params p = imgd_flux_gen_params_default();
            p.transformer          = tb;
            p.cfg                  = &fc;
            p.vae                  = m.b;
            p.vae_cfg              = &m.cfg;
            p.be                   = be;
            p.flow                 = params_of(cases[ci].dev);
            p.steps                = 4;
            p.height = p.width = 128;
            memcpy(x, init, 4096 * sizeof *x);
            CHECK_STATUS(imgd_flux_generate(&p, pe, pp, 1, 64, x, im), IMGD_OK);
            char what[96];
            imgd_fmt(what, sizeof what, "generate %s final latents", cases[ci].label);
            check_close(x, fin, 4096, 1e-3, what);
            imgd_fmt(what, sizeof what, "generate %s image [0,1]", cases[ci].label);
            check_close(im, img, nimg, -2e-3, what);
            p.height = 120;
            CHECK_STATUS(imgd_flux_generate(&p, pe, pp, 1, 64, x, im), IMGD_E_INVALID_ARG);
            CHECK_MSG(strstr(imgd_last_error(), "multiples of 16"), "%s", imgd_last_error());
        } else {
            CHECK_MSG(0, "%s: setup failed", cases[ci].label);
        }
        imgd_free(x);
        imgd_free(im);
        if (tb != m.b) imgd_wbind_free(tb);
        imgd_model_info_free(tmi);
        imgd_weights_free(tw);
        imgd_weights_free(gd);
    }
    imgd_backend_free(be);
    vae_free(&m);
}

int main(void) {
    RUN(test_flow_schedule_matches_pipelines);
    RUN(test_flow_euler_steps_reproduce_pipelines);
    RUN(test_flux_vae_decode);
    RUN(test_flux_vae_encode);
    RUN(test_flux_plan_info_without_weights);
    RUN(test_flux_generate_reproduces_txt2img);
    TEST_END();
}
