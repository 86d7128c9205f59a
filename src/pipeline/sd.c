/* SD 1.x / 2.x generation: prompt -> CLIP conditioning -> sampling loop over the UNet ->
 * VAE decode, with img2img and inpainting, as diffusers' StableDiffusion(Img2Img|Inpaint)
 * pipelines compute it (the conformance kit's goldens), and A1111's prompt conventions. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/text.h"
#include "models/prompt.h"
#include "pipeline/flux.h"
#include "pipeline/image.h"
#include "pipeline/infotext.h"
#include "pipeline/pipeline.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"

#define TOK_LEN IMGD_PROMPT_CHUNK_LEN

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

imgd_gen_params imgd_gen_params_default(void) {
    imgd_gen_params p;
    memset(&p, 0, sizeof p);
    p.sampler                  = "euler";
    p.schedule                 = "default";
    p.steps                    = 20;
    p.cfg                      = 7.5f;
    p.width                    = 512;
    p.height                   = 512;
    p.batch                    = 1;
    p.clip_skip                = 1;
    p.strength                 = 0.75f;
    p.mask_blur                = 4;
    p.rng                      = IMGD_RNG_MODE_CPU;
    p.aesthetic_score          = 6.0f;
    p.negative_aesthetic_score = 2.5f;
    p.refiner_switch           = 0.8f;
    p.guidance                 = 3.5f;
    return p;
}

/* ---- kept graphs ------------------------------------------------------------------- */

void imgd_sd_graph_drop(imgd_sd_graph *k) {
    imgd_graph_free(k->g);
    memset(k, 0, sizeof *k);
}

void imgd_sd_graphs_free(imgd_model *m) {
    imgd_sd_te_graphs_drop(m);
    imgd_sd_graph_drop(&m->g_unet);
    imgd_sd_graph_drop(&m->g_dec);
    imgd_sd_graph_drop(&m->g_enc);
    imgd_vae_tiler_free(m->vae_tiler);
    m->vae_tiler = NULL;
}

imgd_wbind *imgd_sd_vae_bind(imgd_model *m) {
    return m->vae_wb ? m->vae_wb : m->wb;
}

imgd_wbind *imgd_sd_unet_bind(imgd_model *m) {
    return m->unet_wb ? m->unet_wb : m->wb;
}

imgd_status imgd_sd_graph_finish(imgd_backend *be, imgd_sd_graph *k, const char *what) {
    imgd_plan_info info;
    imgd_status    st = imgd_graph_plan(k->g, be, &info);
    if (st == IMGD_OK) st = imgd_graph_alloc(k->g, NULL, 0);
    if (st != IMGD_OK) {
        imgd_sd_graph_drop(k);
        return imgd_fail_prefix(st, "%s graph", what);
    }
    IMGD_LOG(IMGD_LOG_DEBUG, "pipeline", "graph_planned", "%s: %zu nodes, %.1f MB activations",
             what, (size_t)info.n_nodes, (double)info.activation_bytes / 1e6);
    return IMGD_OK;
}

imgd_status imgd_sd_graph_new(imgd_sd_graph *k) {
    imgd_sd_graph_drop(k);
    return imgd_graph_new(NULL, &k->g);
}

/* ---- VAE ---------------------------------------------------------------------------- */

imgd_backend *imgd_model_vae_backend(const imgd_model *m) {
    return m->vae_be ? m->vae_be : m->be;
}

imgd_backend *imgd_model_te_backend(const imgd_model *m) {
    return m->te_be ? m->te_be : m->be;
}

/* Latents above this many latent pixels are decoded in tiles (seams blended). */
#define TILED_DECODE_PIXELS ((int64_t)96 * 96)

/* Decodes B latents [B, zc, h, w] (diffusion scale) into [B, 3, 8h, 8w] images in [0, 1]. */
static imgd_status vae_decode(imgd_model *m, const float *latents, int32_t B, int32_t h, int32_t w,
                              float *image) {
    int32_t zc = m->vae.latent_channels, S = imgd_vae_scale(&m->vae);
    size_t  nl = (size_t)B * zc * h * w, ni = (size_t)B * 3 * ((size_t)h * S) * ((size_t)w * S);
    float  *z = imgd_malloc(nl * sizeof *z);
    if (!z) return imgd_fail(IMGD_E_NOMEM, "out of memory decoding");
    for (size_t i = 0; i < nl; i++) z[i] = latents[i] / m->vae_scale + m->vae_shift;
    imgd_status st = IMGD_OK;
    if ((int64_t)h * w > TILED_DECODE_PIXELS) {
        imgd_vae_tiling t = imgd_vae_tiling_default();
        t.keep            = &m->vae_tiler; /* the next decode of this size plans nothing */
        st = imgd_vae_decode_tiled(imgd_sd_vae_bind(m), imgd_model_vae_backend(m), "vae", &m->vae,
                                   &t, z, B, h, w, image, NULL);
    } else {
        imgd_sd_graph *k = &m->g_dec;
        if (!k->g || k->batch != B || k->h != h || k->w != w) {
            st = imgd_sd_graph_new(k);
            if (st == IMGD_OK) {
                k->batch = B;
                k->h     = h;
                k->w     = w;
                k->in[0] = imgd_graph_input(k->g, "latent", IMGD_DTYPE_F32, 4,
                                            (const int64_t[]){B, zc, h, w});
                imgd_vae_decode_out o;
                memset(&o, 0, sizeof o);
                st = imgd_vae_decode_build(k->g, imgd_sd_vae_bind(m), "vae", &m->vae, k->in[0], &o);
                if (st == IMGD_OK) {
                    k->out[0] = o.image;
                    imgd_graph_output(k->g, o.image);
                    st = imgd_sd_graph_finish(imgd_model_vae_backend(m), k, "VAE decoder");
                } else {
                    imgd_sd_graph_drop(k);
                }
            }
        }
        if (st == IMGD_OK) st = imgd_tensor_bind(k->in[0], z);
        if (st == IMGD_OK) st = imgd_graph_compute(k->g);
        if (st == IMGD_OK) st = imgd_graph_read_f32(k->g, k->out[0], image, ni);
    }
    imgd_free(z);
    if (st != IMGD_OK) return st;
    for (size_t i = 0; i < ni; i++) {
        float v  = image[i] / 2.0f + 0.5f;
        image[i] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    }
    return IMGD_OK;
}

imgd_status imgd_vae_encode_sample(imgd_sd_graph *k, imgd_backend *be, imgd_wbind *wb,
                                   const imgd_vae_cfg *cfg, float shift, float scale,
                                   const float *image, int32_t H, int32_t W, const float *noise,
                                   float *latent) {
    int32_t     S = imgd_vae_scale(cfg), zc = cfg->latent_channels;
    int32_t     h = H / S, w = W / S;
    imgd_status st = IMGD_OK;
    if (!k->g || k->h != H || k->w != W) {
        st = imgd_sd_graph_new(k);
        if (st != IMGD_OK) return st;
        k->h = H;
        k->w = W;
        k->in[0] =
            imgd_graph_input(k->g, "image", IMGD_DTYPE_F32, 4, (const int64_t[]){1, 3, H, W});
        imgd_vae_encode_out o;
        memset(&o, 0, sizeof o);
        st = imgd_vae_encode_build(k->g, wb, "vae", cfg, k->in[0], &o);
        if (st != IMGD_OK) {
            imgd_sd_graph_drop(k);
            return st;
        }
        k->out[0] = o.mean;
        k->out[1] = o.logvar;
        imgd_graph_output(k->g, o.mean);
        imgd_graph_output(k->g, o.logvar);
        st = imgd_sd_graph_finish(be, k, "VAE encoder");
        if (st != IMGD_OK) return st;
    }
    size_t n      = (size_t)zc * h * w;
    float *mean   = imgd_malloc(n * sizeof *mean);
    float *logvar = imgd_malloc(n * sizeof *logvar);
    if (!mean || !logvar) st = imgd_fail(IMGD_E_NOMEM, "out of memory encoding");
    if (st == IMGD_OK) st = imgd_tensor_bind(k->in[0], (void *)(uintptr_t)image);
    if (st == IMGD_OK) st = imgd_graph_compute(k->g);
    if (st == IMGD_OK) st = imgd_graph_read_f32(k->g, k->out[0], mean, n);
    if (st == IMGD_OK) st = imgd_graph_read_f32(k->g, k->out[1], logvar, n);
    if (st == IMGD_OK) {
        imgd_vae_posterior_sample(mean, logvar, noise, n, latent);
        for (size_t i = 0; i < n; i++) latent[i] = (latent[i] - shift) * scale;
    }
    imgd_free(mean);
    imgd_free(logvar);
    return st;
}

static imgd_status vae_encode(imgd_model *m, const float *image, int32_t H, int32_t W,
                              const float *noise, float *latent) {
    return imgd_vae_encode_sample(&m->g_enc, imgd_model_vae_backend(m), imgd_sd_vae_bind(m),
                                  &m->vae, m->vae_shift, m->vae_scale, image, H, W, noise, latent);
}

/* ---- scheduler config ----------------------------------------------------------------- */

/* The scheduler config: SD 1.5's standard one (single files), overlaid with the model's
 * scheduler/scheduler_config.json when it has one (diffusers folders), as diffusers'
 * Scheduler.from_config(pipe.scheduler.config) does. Parsed once per model. */
static imgd_status sched_config(imgd_model *m, imgd_sampler_params *out) {
    if (m->has_sched) {
        *out = m->sched;
        return IMGD_OK;
    }
    imgd_sampler_params sp = imgd_sampler_params_default();
    sp.prediction = m->prediction == IMGD_PRED_V ? IMGD_PREDICTION_V : IMGD_PREDICTION_EPSILON;
    /* SDXL's released scheduler configs (base and refiner) space timesteps "leading" */
    if (m->n_time_ids > 0) sp.spacing = IMGD_SPACING_LEADING;
    /* zero-terminal-SNR fine-tunes (NoobAI-XL v-pred and others) mark single files with a
     * "ztsnr" tensor: their schedule ends at zero SNR, spaced trailing */
    size_t zt = 0;
    if (imgd_strmap_get(&m->w->index, "ztsnr", &zt)) {
        sp.rescale_zero_snr = true;
        sp.spacing          = IMGD_SPACING_TRAILING;
    }
    const char *text = imgd_weights_meta_find(m->w, "scheduler/scheduler_config.json");
    imgd_status st   = IMGD_OK;
    if (text) {
        cJSON *j = NULL;
        st = imgd_json_parse("scheduler/scheduler_config.json", text, strlen(text), 1u << 20, 16,
                             &j);
        if (st != IMGD_OK) return st;
        const cJSON *v;
#define NUM(key) ((v = cJSON_GetObjectItemCaseSensitive(j, key)) != NULL && cJSON_IsNumber(v))
#define STR(key) ((v = cJSON_GetObjectItemCaseSensitive(j, key)) != NULL && cJSON_IsString(v))
        if (NUM("num_train_timesteps")) sp.num_train_timesteps = (int32_t)v->valuedouble;
        if (NUM("beta_start")) sp.beta_start = v->valuedouble;
        if (NUM("beta_end")) sp.beta_end = v->valuedouble;
        if (NUM("steps_offset")) sp.steps_offset = (int32_t)v->valuedouble;
        v = cJSON_GetObjectItemCaseSensitive(j, "set_alpha_to_one");
        if (v && cJSON_IsBool(v)) sp.set_alpha_to_one = cJSON_IsTrue(v);
        v = cJSON_GetObjectItemCaseSensitive(j, "rescale_betas_zero_snr");
        if (v && cJSON_IsBool(v)) sp.rescale_zero_snr = cJSON_IsTrue(v);
        if (STR("beta_schedule") &&
            imgd_beta_schedule_parse(v->valuestring, &sp.beta_schedule) != IMGD_OK)
            st = imgd_fail_prefix(IMGD_E_FORMAT, "%s: scheduler/scheduler_config.json", m->path);
        if (st == IMGD_OK && STR("timestep_spacing") &&
            imgd_spacing_parse(v->valuestring, &sp.spacing) != IMGD_OK)
            st = imgd_fail_prefix(IMGD_E_FORMAT, "%s: scheduler/scheduler_config.json", m->path);
#undef NUM
#undef STR
        cJSON_Delete(j);
    }
    if (st != IMGD_OK) return st;
    m->sched     = sp;
    m->has_sched = true;
    *out         = sp;
    return IMGD_OK;
}

/* The sampler's params for a request: the model's scheduler config with the request's
 * sampler, schedule and steps. */
static imgd_status sampler_params(imgd_model *m, const imgd_gen_params *p,
                                  imgd_sampler_params *sp) {
    imgd_sampler_kind  kind;
    imgd_schedule_kind sched;
    imgd_status        st = imgd_sampler_kind_parse(p->sampler ? p->sampler : "euler", &kind);
    if (st != IMGD_OK) return st;
    st = imgd_schedule_kind_parse(p->schedule ? p->schedule : "default", &sched);
    if (st == IMGD_OK) st = sched_config(m, sp);
    if (st != IMGD_OK) return st;
    sp->kind     = kind;
    sp->schedule = sched;
    sp->steps    = p->steps;
    return IMGD_OK;
}

/* ---- generate ------------------------------------------------------------------------- */

static imgd_status check_params(const imgd_model *m, const imgd_gen_params *p) {
    int32_t S = imgd_vae_scale(&m->vae);
    if (!p->prompt) return imgd_fail(IMGD_E_INVALID_ARG, "prompt is required");
    if (p->width < S || p->height < S || p->width % S || p->height % S || p->width > 16384 ||
        p->height > 16384)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "size %dx%d: width and height must be multiples of %d in %d..16384",
                         (int)p->width, (int)p->height, (int)S, (int)S);
    if (p->steps < 1 || p->steps > 1000)
        return imgd_fail(IMGD_E_INVALID_ARG, "steps %d: expected 1..1000", (int)p->steps);
    if (p->batch < 1 || p->batch > 64)
        return imgd_fail(IMGD_E_INVALID_ARG, "batch %d: expected 1..64", (int)p->batch);
    if (!isfinite(p->cfg) || p->cfg < 0 || p->cfg > 100)
        return imgd_fail(IMGD_E_INVALID_ARG, "cfg %g: expected 0..100", (double)p->cfg);
    if (p->clip_skip < 1 || p->clip_skip > imgd_sd_clip_skip_max(m))
        return imgd_fail(IMGD_E_INVALID_ARG, "clip_skip %d: expected 1..%d (A1111 numbering)",
                         (int)p->clip_skip, (int)imgd_sd_clip_skip_max(m));
    if (p->init && (!isfinite(p->strength) || p->strength <= 0 || p->strength > 1))
        return imgd_fail(IMGD_E_INVALID_ARG, "strength %g: expected (0, 1]", (double)p->strength);
    if (p->mask && !p->init)
        return imgd_fail(IMGD_E_INVALID_ARG, "a mask needs an init image to inpaint");
    if (p->mask_blur < 0 || p->mask_blur > 256)
        return imgd_fail(IMGD_E_INVALID_ARG, "mask_blur %d: expected 0..256", (int)p->mask_blur);
    imgd_status cst = imgd_sd_control_check(p);
    if (cst != IMGD_OK) return cst;
    if (p->refiner) {
        const imgd_model *rf = p->refiner;
        if (rf == m)
            return imgd_fail(IMGD_E_INVALID_ARG, "refiner: the model itself; give another one");
        if (!isfinite(p->refiner_switch) || p->refiner_switch <= 0 || p->refiner_switch >= 1)
            return imgd_fail(IMGD_E_INVALID_ARG, "refiner_switch %g: expected (0, 1)",
                             (double)p->refiner_switch);
        if (m->n_time_ids == 0 || rf->n_time_ids == 0)
            return imgd_fail(IMGD_E_UNSUPPORTED,
                             "refiner %s: a base -> refiner hand-off needs two SDXL models (%s "
                             "is %s)",
                             rf->path, rf->n_time_ids ? m->path : rf->path,
                             imgd_family_name((rf->n_time_ids ? m : rf)->mi->family));
        if (m->unet.in_channels != 4 || rf->unet.in_channels != 4 ||
            rf->unet.out_channels != m->unet.out_channels ||
            rf->vae.latent_channels != m->vae.latent_channels)
            return imgd_fail(IMGD_E_UNSUPPORTED,
                             "refiner %s: its UNet takes %d channels and the base's %d; the "
                             "hand-off needs two 4-channel (not inpainting) UNets",
                             rf->path, (int)rf->unet.in_channels, (int)m->unet.in_channels);
    }
    if (m->unet.in_channels == 9 && !p->mask)
        return imgd_fail(
            IMGD_E_INVALID_ARG,
            "%s is an inpainting model (9-channel UNet): give an init image and a mask", m->path);
    if (m->unet.in_channels != 4 && m->unet.in_channels != 9)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: a UNet with %d input channels (e.g. "
                         "instruct-pix2pix) is not supported yet",
                         m->path, (int)m->unet.in_channels);
    for (const imgd_image_u8 *im = p->init; im; im = im == p->init ? p->mask : NULL)
        if (!im->px || im->w < 1 || im->h < 1 || (im->c != 1 && im->c != 3 && im->c != 4))
            return imgd_fail(IMGD_E_INVALID_ARG, "%s image: empty or not 1, 3 or 4 channels",
                             im == p->init ? "init" : "mask");
    return IMGD_OK;
}

/* The init image as [1, 3, H, W] in [-1, 1], resized (Lanczos) to W x H. */
imgd_status imgd_sd_prep_image(const imgd_image_u8 *src, int32_t W, int32_t H, float *out) {
    imgd_image  in = {src->w, src->h, src->c, src->px}, rgb = {0}, sized = {0};
    imgd_status st = imgd_image_to_rgb(&in, &rgb);
    if (st == IMGD_OK && (rgb.w != W || rgb.h != H))
        st = imgd_image_resize(&rgb, W, H, IMGD_RESIZE_LANCZOS, &sized);
    if (st == IMGD_OK) st = imgd_image_to_nchw(sized.px ? &sized : &rgb, out);
    for (size_t i = 0; st == IMGD_OK && i < (size_t)3 * W * H; i++) out[i] = 2.0f * out[i] - 1.0f;
    imgd_image_free(&rgb);
    imgd_image_free(&sized);
    return st;
}

/* The mask as [H, W] in [0, 1] (1 = repaint), resized to W x H and blurred. */
static imgd_status prep_mask(const imgd_image_u8 *src, int32_t W, int32_t H, int32_t blur,
                             float *out) {
    imgd_image  in = {src->w, src->h, src->c, src->px}, mk = {0}, sized = {0};
    imgd_status st = imgd_image_to_mask(&in, &mk);
    if (st == IMGD_OK && (mk.w != W || mk.h != H))
        st = imgd_image_resize(&mk, W, H, IMGD_RESIZE_LANCZOS, &sized);
    imgd_image *use = sized.px ? &sized : &mk;
    if (st == IMGD_OK && blur > 0) st = imgd_image_blur(use, (float)blur, IMGD_BLUR_PIL);
    if (st == IMGD_OK) st = imgd_image_gray_to_float(use, out);
    imgd_image_free(&mk);
    imgd_image_free(&sized);
    return st;
}

/* sd-webui-controlnet's infotext entry of one unit ("ControlNet 0": "Module: canny, Model:
 * name, Weight: 1, ..."); the model by file name only (no server path). */
static void control_entry(const imgd_control_spec *c, char *out, size_t cap) {
    static const char *const k_module[IMGD_CONTROL_PRE_COUNT] = {
        "none", "canny", "scribble", "threshold", "invert (from white bg & black line)"};
    static const char *const k_resize[IMGD_CONTROL_RESIZE_COUNT] = {
        "Just Resize", "Crop and Resize", "Resize and Fill"};
    char        name[256], thr[96] = "";
    const char *b = c->path ? strrchr(c->path, '/') : NULL;
    (void)imgd_fmt(name, sizeof name, "%s", b ? b + 1 : c->path ? c->path : "");
    char *dot = strrchr(name, '.');
    if (dot && dot != name) *dot = '\0';
    int32_t pre = c->preprocess >= 0 && c->preprocess < IMGD_CONTROL_PRE_COUNT ? c->preprocess : 0;
    int32_t rm =
        c->resize_mode >= 0 && c->resize_mode < IMGD_CONTROL_RESIZE_COUNT ? c->resize_mode : 0;
    if (pre == IMGD_CONTROL_PRE_CANNY)
        (void)imgd_fmt(thr, sizeof thr, ", Threshold A: %g, Threshold B: %g", (double)c->low,
                       (double)c->high);
    else if (pre == IMGD_CONTROL_PRE_SCRIBBLE || pre == IMGD_CONTROL_PRE_LINEART)
        (void)imgd_fmt(thr, sizeof thr, ", Threshold A: %g", (double)c->threshold);
    (void)imgd_fmt(out, cap,
                   "Module: %s, Model: %s, Weight: %g, Resize Mode: %s%s, Guidance Start: %g, "
                   "Guidance End: %g, Control Mode: %s",
                   k_module[pre], name, (double)c->scale, k_resize[rm], thr, (double)c->start,
                   (double)c->end, c->guess_mode ? "ControlNet is more important" : "Balanced");
}

static imgd_status infotext(imgd_model *m, const imgd_gen_params *p, char **out) {
    imgd_a1111_info in = imgd_a1111_info_default();
    in.prompt          = p->prompt;
    in.negative_prompt = p->negative;
    in.steps           = p->steps;
    in.sampler         = imgd_a1111_sampler_name(p->sampler ? p->sampler : "euler");
    in.schedule        = imgd_a1111_schedule_name(p->schedule ? p->schedule : "default");
    in.cfg_scale       = (double)p->cfg;
    in.seed            = p->seed;
    in.has_seed        = !p->noise;
    in.width           = p->width;
    in.height          = p->height;
    in.model           = m->name;
    in.clip_skip       = p->clip_skip;
    in.rng             = p->rng == IMGD_RNG_MODE_CPU ? "CPU" : NULL;
    if (p->init) in.denoising_strength = (double)p->strength;
    if (p->mask) in.mask_blur = p->mask_blur;
    /* extra_generation_params as A1111 and sd-webui-controlnet write them */
    char        rsw[32];
    char        keys[IMGD_CONTROL_MAX][24], vals[IMGD_CONTROL_MAX][512];
    const char *extra[2 * (IMGD_CONTROL_MAX + 5)]; /* hypernet 2, lora 1, refiner 2 */
    char       *hashes = NULL, *hn_names = NULL, *hn_weights = NULL;
    imgd_status st = imgd_sd_lora_hashes(m, p, &hashes);
    size_t      k  = 0;
    if (st == IMGD_OK) st = imgd_sd_hypernet_info(m, p, &hn_names, &hn_weights);
    if (st == IMGD_OK && hn_names) { /* A1111 before extra networks: one hypernetwork */
        extra[2 * k]     = "Hypernet";
        extra[2 * k + 1] = hn_names;
        extra[2 * k + 2] = "Hypernet strength";
        extra[2 * k + 3] = hn_weights;
        k += 2;
    }
    if (st == IMGD_OK && hashes) {
        extra[2 * k]     = "Lora hashes";
        extra[2 * k + 1] = hashes;
        k++;
    }
    for (int32_t i = 0; st == IMGD_OK && p->controls && i < p->n_controls && i < IMGD_CONTROL_MAX;
         i++) {
        (void)imgd_fmt(keys[i], sizeof keys[i], "ControlNet %d", (int)i);
        control_entry(&p->controls[i], vals[i], sizeof vals[i]);
        extra[2 * k]     = keys[i];
        extra[2 * k + 1] = vals[i];
        k++;
    }
    if (p->refiner) { /* A1111 1.6+: the refiner checkpoint and the switch fraction */
        (void)imgd_fmt(rsw, sizeof rsw, "%.7g", (double)p->refiner_switch); /* 0.8 */
        extra[2 * k]     = "Refiner";
        extra[2 * k + 1] = p->refiner->name;
        extra[2 * k + 2] = "Refiner switch at";
        extra[2 * k + 3] = rsw;
        k += 2;
    }
    in.extra   = extra;
    in.n_extra = k;
    if (st == IMGD_OK) st = imgd_a1111_parameters(&in, out);
    imgd_free(hashes);
    imgd_free(hn_names);
    imgd_free(hn_weights);
    return st;
}

/* ---- the batched sampling loop ------------------------------------------------------ */

/* One request of a batch and what it owns. Slots: its latents are x[x_off .. x_off + B)
 * of the loop's x; its UNet rows u_off.. are [uncond B (cfg_on only), cond B], the layout
 * of a lone run. */
typedef struct item {
    const imgd_gen_params *p;
    imgd_gen_item_result  *out;
    imgd_status            st;     /* IMGD_OK until the item fails or is cancelled */
    bool                   placed; /* has slots in the loop */
    bool                   live;   /* placed and still sampled and reported */
    bool                   cfg_on; /* adds an unconditional half to the UNet batch */
    int32_t                B, x_off, u_off, len, steps_run;
    imgd_rng               rng;
    imgd_sd_text           txt[2];        /* its conditioning per stage ([len, D] each half) */
    float                  tids[2][2][8]; /* SDXL time ids per stage: [0] unconditional, [1]
                                             conditional */
    float *img;                           /* init image [3, H, W] in [-1, 1] (then masked) */
    float *mask;                          /* [H, W] in [0, 1] */
    float *mask_lat;                      /* [h, w] latent mask (1 = repaint) */
    float *image_lat;                     /* init image latents [4, h, w] */
    float *masked_lat;                    /* masked-image latents [4, h, w] */
    float *noise;                         /* the initial draw [B, 4, h, w] */
    float *vae_noise;                     /* [4, h, w] */
    double t_enc;
} item;

/* A UNet and the conditioning the batch runs it on, bound once per batch. */
typedef struct stage {
    imgd_model *m;
    int32_t     len;    /* context tokens */
    float      *ctx;    /* [ub, len, D] */
    float      *pooled; /* SDXL: [ub, P] pooled text embeddings */
    float      *tids;   /* SDXL: [ub, K] time ids */
} stage;

typedef struct run_ctx {
    imgd_model           *m;
    item                 *it;
    size_t                n_it;
    int32_t               live;             /* items still running */
    int32_t               B, h, w, cin, ub; /* B: latents of all items; ub: UNet batch */
    stage                 sg[2];            /* the base, then the refiner (n_sg 2) */
    int32_t               n_sg;
    int32_t               cur;      /* the stage of the current iteration */
    int32_t               cur_step; /* the iteration cur was chosen for */
    float                 cutoff;   /* refiner from timesteps below this on */
    float                *x_unet;   /* [ub, cin, h, w] */
    float                *t_unet;   /* [ub] */
    float                *out_unet; /* [ub, 4, h, w] */
    float                *known;    /* [4, h, w]: 4-channel inpainting blend */
    const imgd_sampler   *sampler;
    double                t0;
    imgd_sd_control_run  *ctl;       /* the batch's ControlNets; NULL = none */
    imgd_sd_control_item *ctl_items; /* [n_it] */
    int32_t               first;     /* the loop's first iteration */
    int32_t               step;      /* the iteration the next model calls belong to */
    bool                  stopped;   /* the loop stopped because no item runs */
} run_ctx;

/* Item i failed (or was cancelled) with st; the current message is its error. */
static void item_fail(run_ctx *r, size_t i, imgd_status st) {
    item *it = &r->it[i];
    if (it->live) r->live--;
    it->live = false;
    it->st   = st;
    (void)imgd_fmt(it->out->error, sizeof it->out->error, "%s", imgd_last_error());
}

/* A batch-wide failure: every item still without one gets st. */
static void fail_running(run_ctx *r, imgd_status st) {
    for (size_t i = 0; i < r->n_it; i++)
        if (r->it[i].st == IMGD_OK) item_fail(r, i, st);
}

/* The callbacks' verdict: go on while an item runs; stop the loop when none does (each item
 * holds its own status). */
static imgd_status any_live(run_ctx *r) {
    if (r->live > 0) return IMGD_OK;
    r->stopped = true;
    return IMGD_E_CANCELLED;
}

static imgd_status unet_graph(run_ctx *r, const stage *sg) {
    imgd_model    *m     = sg->m;
    imgd_sd_graph *k     = &m->g_unet;
    int32_t        n_res = r->ctl && m == r->m ? imgd_unet_skip_count(&m->unet) + 1 : 0;
    if (k->g && k->batch == r->ub && k->h == r->h && k->w == r->w && k->len == sg->len &&
        k->n_res == n_res)
        return IMGD_OK;
    imgd_status st = imgd_sd_graph_new(k);
    if (st != IMGD_OK) return st;
    k->batch = r->ub;
    k->h     = r->h;
    k->w     = r->w;
    k->len   = sg->len;
    k->in[0] = imgd_graph_input(k->g, "x", IMGD_DTYPE_F32, 4,
                                (const int64_t[]){r->ub, r->cin, r->h, r->w});
    k->in[1] = imgd_graph_input(k->g, "t", IMGD_DTYPE_F32, 1, (const int64_t[]){r->ub});
    k->in[2] = imgd_graph_input(k->g, "ctx", IMGD_DTYPE_F32, 3,
                                (const int64_t[]){r->ub, sg->len, m->unet.context_dim});
    imgd_unet_extra ex;
    memset(&ex, 0, sizeof ex);
    k->in[3] = k->in[4] = NULL;
    if (m->n_time_ids > 0) {
        ex.text_embeds = k->in[3] = imgd_graph_input(k->g, "text_embeds", IMGD_DTYPE_F32, 2,
                                                     (const int64_t[]){r->ub, m->pooled_dim});
        ex.time_ids = k->in[4] = imgd_graph_input(k->g, "time_ids", IMGD_DTYPE_F32, 2,
                                                  (const int64_t[]){r->ub, m->n_time_ids});
    }
    for (int32_t i = 0; i < n_res; i++) { /* ControlNet residual inputs, the mid one last */
        int32_t ch = m->unet.widths[m->unet.n_levels - 1], div = 1 << (m->unet.n_levels - 1);
        if (i + 1 < n_res) imgd_unet_skip_shape(&m->unet, i, &ch, &div);
        k->res[i] = imgd_graph_input(k->g, "control_res", IMGD_DTYPE_F32, 4,
                                     (const int64_t[]){r->ub, ch, imgd_unet_div_size(r->h, div),
                                                       imgd_unet_div_size(r->w, div)});
        if (i + 1 < n_res) ex.down_res[i] = k->res[i];
    }
    k->n_res       = n_res;
    ex.n_down_res  = n_res > 0 ? n_res - 1 : 0;
    ex.mid_res     = n_res > 0 ? k->res[n_res - 1] : NULL;
    ex.n_hypernets = imgd_sd_hypernets(m, &ex.hypernets, &ex.hypernet_weights);
    st = imgd_unet_build(k->g, imgd_sd_unet_bind(m), "unet", &m->unet, k->in[0], k->in[1], k->in[2],
                         (n_res || m->n_time_ids || ex.n_hypernets) ? &ex : NULL, NULL, &k->out[0]);
    if (st != IMGD_OK) {
        imgd_sd_graph_drop(k);
        return st;
    }
    imgd_graph_output(k->g, k->out[0]);
    return imgd_sd_graph_finish(m->be, k, "UNet");
}

/* Fills the UNet input rows of every placed item (stopped items: zeros). */
static void unet_inputs(run_ctx *r, const float *x_in, float t) {
    size_t hw = (size_t)r->h * r->w, per = 4 * hw, cper = (size_t)r->cin * hw;
    for (size_t i = 0; i < r->n_it; i++) {
        const item *it = &r->it[i];
        if (!it->placed) continue;
        int32_t nu = it->cfg_on ? 2 * it->B : it->B;
        for (int32_t u = 0; u < nu; u++) {
            float *dst               = r->x_unet + (size_t)(it->u_off + u) * cper;
            r->t_unet[it->u_off + u] = t;
            if (!it->live) {
                memset(dst, 0, cper * sizeof *dst);
                continue;
            }
            memcpy(dst, x_in + (size_t)(it->x_off + u % it->B) * per, per * sizeof *dst);
            if (r->cin == 9) { /* concat(latents, mask, masked-image latents) */
                memcpy(dst + per, it->mask_lat, hw * sizeof *dst);
                memcpy(dst + per + hw, it->masked_lat, per * sizeof *dst);
            }
        }
    }
}

/* The sampler's model call: x_in [B, 4, h, w] -> each item's guided model output. */
static imgd_status denoise(void *user, const float *x_in, size_t n, float t, float sigma,
                           float *out) {
    (void)sigma;
    run_ctx *r   = user;
    size_t   per = 4 * (size_t)r->h * r->w;
    if (n != (size_t)r->B * per) return imgd_fail(IMGD_E_INTERNAL, "denoise: %zu floats", n);
    unet_inputs(r, x_in, t);
    if (r->cur_step != r->step) { /* the iteration's first call picks its stage */
        r->cur_step = r->step;
        r->cur      = r->n_sg > 1 && t < r->cutoff ? 1 : 0;
    }
    const stage   *sg = &r->sg[r->cur];
    imgd_sd_graph *k  = &sg->m->g_unet;
    imgd_status    st = unet_graph(r, sg);
    if (st == IMGD_OK && r->ctl && r->cur == 0) {
        int32_t iters = imgd_sampler_iterations(r->sampler);
        st = imgd_sd_control_step(r->ctl, r->x_unet, r->cin, r->t_unet, sg->ctx, sg->pooled,
                                  sg->tids, r->step - r->first, iters - r->first);
        for (int32_t i = 0; st == IMGD_OK && i < k->n_res; i++)
            st = imgd_tensor_bind(k->res[i], imgd_sd_control_res(r->ctl, i));
    }
    if (st == IMGD_OK) st = imgd_tensor_bind(k->in[0], r->x_unet);
    if (st == IMGD_OK) st = imgd_tensor_bind(k->in[1], r->t_unet);
    if (st == IMGD_OK) st = imgd_tensor_bind(k->in[2], sg->ctx);
    if (st == IMGD_OK && k->in[3]) st = imgd_tensor_bind(k->in[3], sg->pooled);
    if (st == IMGD_OK && k->in[4]) st = imgd_tensor_bind(k->in[4], sg->tids);
    if (st == IMGD_OK) st = imgd_graph_compute(k->g);
    if (st == IMGD_OK) st = imgd_graph_read_f32(k->g, k->out[0], r->out_unet, (size_t)r->ub * per);
    if (st != IMGD_OK) return st;
    for (size_t i = 0; i < r->n_it; i++) {
        const item *it = &r->it[i];
        if (!it->placed) continue;
        float       *o  = out + (size_t)it->x_off * per;
        size_t       nb = (size_t)it->B * per;
        const float *eu = r->out_unet + (size_t)it->u_off * per, *ec = eu + nb;
        if (!it->live) {
            memset(o, 0, nb * sizeof *o);
        } else if (!it->cfg_on) {
            memcpy(o, eu, nb * sizeof *o);
        } else {
            float g = it->p->cfg;
            for (size_t j = 0; j < nb; j++) o[j] = eu[j] + g * (ec[j] - eu[j]);
        }
    }
    return IMGD_OK;
}

/* The item's next draw: its noise callback, else its own generator. */
static imgd_status item_draw(item *it, float *out, size_t n) {
    if (it->p->noise) {
        if (!it->p->noise(out, n, it->p->noise_user))
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "the noise callback supplied no draw of %zu values", n);
        return IMGD_OK;
    }
    imgd_rng_randn(&it->rng, out, n);
    return IMGD_OK;
}

/* The sampler's draw over the whole batch: each item's share from its own source, in the
 * order a lone run draws it. */
static imgd_status draw_noise(void *user, float *out, size_t n) {
    run_ctx *r   = user;
    size_t   per = 4 * (size_t)r->h * r->w;
    if (n != (size_t)r->B * per) return imgd_fail(IMGD_E_INTERNAL, "draw: %zu floats", n);
    for (size_t i = 0; i < r->n_it; i++) {
        item *it = &r->it[i];
        if (!it->placed) continue;
        float      *dst = out + (size_t)it->x_off * per;
        size_t      nb  = (size_t)it->B * per;
        imgd_status st  = it->live ? item_draw(it, dst, nb) : IMGD_OK;
        if (st != IMGD_OK) item_fail(r, i, st);
        if (!it->live) memset(dst, 0, nb * sizeof *dst);
    }
    return any_live(r);
}

/* 4-channel inpainting: keeps the known region of the item's latents on the schedule. */
static imgd_status blend_known(run_ctx *r, const item *it, int32_t step, int32_t steps, float *x) {
    size_t hw = (size_t)r->h * r->w, per = 4 * hw;
    for (int32_t b = 0; b < it->B; b++) {
        imgd_status st = IMGD_OK;
        if (step + 1 < steps)
            st = imgd_sampler_add_noise(r->sampler, it->image_lat, it->noise + (size_t)b * per, per,
                                        step + 1, r->known);
        else
            memcpy(r->known, it->image_lat, per * sizeof *r->known);
        if (st != IMGD_OK) return st;
        float *xb = x + (size_t)(it->x_off + b) * per;
        for (size_t c = 0; c < 4; c++)
            for (size_t i = 0; i < hw; i++) {
                float mk       = it->mask_lat[i];
                xb[c * hw + i] = (1.0f - mk) * r->known[c * hw + i] + mk * xb[c * hw + i];
            }
    }
    return IMGD_OK;
}

static imgd_status on_step(void *user, int32_t step, int32_t steps, float *x, size_t n) {
    run_ctx *r = user;
    (void)n;
    r->step = step + 1;
    for (size_t i = 0; i < r->n_it; i++) {
        item *it = &r->it[i];
        if (!it->live) continue;
        it->steps_run++;
        imgd_status st = IMGD_OK;
        if (r->cin == 4 && it->p->mask) st = blend_known(r, it, step, steps, x);
        if (st == IMGD_OK && it->p->on_step &&
            !it->p->on_step(step + 1, steps, now_s() - r->t0, it->p->user))
            st = imgd_fail(IMGD_E_CANCELLED, "cancelled at step %d of %d", (int)(step + 1),
                           (int)steps);
        if (st != IMGD_OK) item_fail(r, i, st);
    }
    return any_live(r);
}
void imgd_gen_result_free(imgd_gen_result *r) {
    if (!r) return;
    for (int32_t i = 0; r->images && i < r->n; i++) imgd_free(r->images[i].px);
    imgd_free(r->images);
    imgd_free(r->pixels);
    imgd_free(r->infotext);
    imgd_free(r);
}

/* ---- what a batch shares ------------------------------------------------------------ */

/* The fields every item of a batch must share (imgd.h lists them). */
typedef struct batch_sig {
    int32_t            width, height, steps, chunks;
    imgd_sampler_kind  sampler;
    imgd_schedule_kind schedule;
    bool               init;
    float              strength;  /* with init only, else 0 */
    uint64_t           loras;     /* imgd_sd_lora_sig; 0 = none */
    uint64_t           hypernets; /* imgd_sd_hypernet_sig; 0 = none */
    int32_t            n_controls;
    uint64_t           controls; /* FNV-1a of the ControlNet paths, in order */
    const imgd_model  *refiner;
    float              refiner_switch; /* with a refiner only, else 0 */
} batch_sig;

/* FNV-1a 64 over the control paths, each followed by a NUL. */
static uint64_t controls_hash(const imgd_gen_params *p) {
    uint64_t h = 1469598103934665603u;
    for (int32_t k = 0; p->controls && k < p->n_controls; k++) {
        const char *c = p->controls[k].path ? p->controls[k].path : "";
        for (size_t i = 0; i <= strlen(c); i++) {
            h ^= (uint8_t)c[i];
            h *= 1099511628211u;
        }
    }
    return h;
}

static imgd_status prompt_chunks(const imgd_model *m, const char *text, size_t *n) {
    imgd_prompt_chunks c;
    char              *bare = NULL;
    memset(&c, 0, sizeof c);
    imgd_status st = imgd_sd_prompt_strip(text, &bare);
    if (st == IMGD_OK) st = imgd_prompt_encode(m->tok, bare, imgd_clip_tok_eos(m->tok), &c);
    imgd_free(bare);
    if (st != IMGD_OK) return st;
    *n = c.n_chunks;
    imgd_prompt_chunks_free(&c);
    return IMGD_OK;
}

/* The batch signature of p; on failure *field names the field that could not be read. */
static imgd_status sig_of(const imgd_model *m, const imgd_gen_params *p, batch_sig *s,
                          const char **field) {
    memset(s, 0, sizeof *s);
    s->width          = p->width;
    s->height         = p->height;
    s->steps          = p->steps;
    s->init           = p->init != NULL;
    s->strength       = p->init ? p->strength : 0.0f;
    s->n_controls     = p->controls ? p->n_controls : 0;
    s->controls       = controls_hash(p);
    s->refiner        = p->refiner;
    s->refiner_switch = p->refiner ? p->refiner_switch : 0.0f;
    *field            = "sampler";
    imgd_status st    = imgd_sampler_kind_parse(p->sampler ? p->sampler : "euler", &s->sampler);
    if (st != IMGD_OK) return st;
    *field = "schedule";
    st     = imgd_schedule_kind_parse(p->schedule ? p->schedule : "default", &s->schedule);
    if (st != IMGD_OK) return st;
    size_t np = 0, nn = 0;
    *field = "prompt";
    st     = prompt_chunks(m, p->prompt, &np);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "prompt");
    *field = "negative";
    st     = prompt_chunks(m, p->negative, &nn);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "negative prompt");
    *field = "loras";
    st     = imgd_sd_lora_sig(m, p, &s->loras);
    if (st != IMGD_OK) return st;
    *field = "hypernets";
    st     = imgd_sd_hypernet_sig(m, p, &s->hypernets);
    if (st != IMGD_OK) return st;
    *field    = NULL;
    s->chunks = (int32_t)(np > nn ? np : nn);
    return IMGD_OK;
}

static bool same_float(float a, float b) {
    uint32_t ua, ub;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    return ua == ub;
}

/* The first field in which a and b differ (NULL: none); why receives both values. */
static const char *sig_diff(const batch_sig *a, const batch_sig *b, char *why, size_t cap) {
    const char *f = NULL;
    if (a->width != b->width) {
        f = "width";
        (void)imgd_fmt(why, cap, "%d vs %d", (int)a->width, (int)b->width);
    } else if (a->height != b->height) {
        f = "height";
        (void)imgd_fmt(why, cap, "%d vs %d", (int)a->height, (int)b->height);
    } else if (a->steps != b->steps) {
        f = "steps";
        (void)imgd_fmt(why, cap, "%d vs %d", (int)a->steps, (int)b->steps);
    } else if (a->sampler != b->sampler) {
        f = "sampler";
        (void)imgd_fmt(why, cap, "%s vs %s", imgd_sampler_kind_name(a->sampler),
                       imgd_sampler_kind_name(b->sampler));
    } else if (a->schedule != b->schedule) {
        f = "schedule";
        (void)imgd_fmt(why, cap, "%s vs %s", imgd_schedule_kind_name(a->schedule),
                       imgd_schedule_kind_name(b->schedule));
    } else if (a->init != b->init) {
        f = "init";
        (void)imgd_fmt(why, cap, "%s vs %s", a->init ? "an init image" : "none",
                       b->init ? "an init image" : "none");
    } else if (!same_float(a->strength, b->strength)) {
        f = "strength";
        (void)imgd_fmt(why, cap, "%.9g vs %.9g", (double)a->strength, (double)b->strength);
    } else if (a->chunks != b->chunks) {
        f = "prompt";
        (void)imgd_fmt(why, cap, "%d vs %d chunks of 75 tokens", (int)a->chunks, (int)b->chunks);
    } else if (a->loras != b->loras) {
        f = "loras";
        (void)imgd_fmt(why, cap, "different LoRA sets");
    } else if (a->hypernets != b->hypernets) {
        f = "hypernets";
        (void)imgd_fmt(why, cap, "different hypernetwork sets");
    } else if (a->refiner != b->refiner || !same_float(a->refiner_switch, b->refiner_switch)) {
        f = "refiner";
        (void)imgd_fmt(why, cap, "%s vs %s", a->refiner ? a->refiner->path : "none",
                       b->refiner ? b->refiner->path : "none");
    } else if (a->n_controls != b->n_controls || a->controls != b->controls) {
        f = "controls";
        (void)imgd_fmt(why, cap, "%d vs %d ControlNets%s", (int)a->n_controls, (int)b->n_controls,
                       a->n_controls == b->n_controls ? ", other files" : "");
    }
    return f;
}

bool imgd_gen_params_batchable(const imgd_model *m, const imgd_gen_params *a,
                               const imgd_gen_params *b, const char **field) {
    const char *f = "params";
    char        why[128];
    batch_sig   sa, sb;
    if (m && m->flux) {
        char ka[IMGD_GEN_BATCH_KEY_MAX], kb[IMGD_GEN_BATCH_KEY_MAX];
        if (a && b && imgd_flux_batch_key(m, a, ka, sizeof ka) == IMGD_OK &&
            imgd_flux_batch_key(m, b, kb, sizeof kb) == IMGD_OK)
            f = a->width != b->width     ? "width"
                : a->height != b->height ? "height"
                : a->steps != b->steps   ? "steps"
                                         : NULL;
        if (field) *field = f;
        return f == NULL;
    }
    if (m && a && b && sig_of(m, a, &sa, &f) == IMGD_OK && sig_of(m, b, &sb, &f) == IMGD_OK)
        f = sig_diff(&sa, &sb, why, sizeof why);
    if (field) *field = f;
    return f == NULL;
}

imgd_status imgd_gen_batch_key(const imgd_model *m, const imgd_gen_params *p, char *buf,
                               size_t cap) {
    if (!m || !p || !buf) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_gen_batch_key: NULL argument");
    if (m->flux) return imgd_flux_batch_key(m, p, buf, cap);
    batch_sig   s;
    const char *field = NULL;
    imgd_status st    = sig_of(m, p, &s, &field);
    if (st != IMGD_OK) return st;
    char init[32], full[512], key[IMGD_GEN_BATCH_KEY_MAX];
    if (s.init)
        (void)imgd_fmt(init, sizeof init, "%.9g", (double)s.strength);
    else
        (void)imgd_fmt(init, sizeof init, "none");
    (void)imgd_fmt(full, sizeof full, "%dx%d steps=%d sampler=%s schedule=%s init=%s chunks=%d",
                   (int)s.width, (int)s.height, (int)s.steps, imgd_sampler_kind_name(s.sampler),
                   imgd_schedule_kind_name(s.schedule), init, (int)s.chunks);
    size_t base = strlen(full), kl = base;
    /* the adapters: each a hash, a few dozen bytes at most */
    if (s.loras)
        (void)imgd_fmt(full + kl, sizeof full - kl, " loras=%016llx", (unsigned long long)s.loras);
    kl = strlen(full);
    if (s.hypernets)
        (void)imgd_fmt(full + kl, sizeof full - kl, " hn=%016llx", (unsigned long long)s.hypernets);
    kl = strlen(full);
    if (s.n_controls > 0)
        (void)imgd_fmt(full + kl, sizeof full - kl, " controls=%d:%016llx", (int)s.n_controls,
                       (unsigned long long)s.controls);
    kl = strlen(full);
    if (s.refiner)
        (void)imgd_fmt(full + kl, sizeof full - kl, " refiner=%016llx:%.9g",
                       (unsigned long long)imgd_str_hash(s.refiner->path),
                       (double)s.refiner_switch);
    /* too long with every adapter named: the adapters' part becomes one hash of it */
    if (strlen(full) < sizeof key)
        (void)imgd_fmt(key, sizeof key, "%s", full);
    else if (!imgd_fmt(key, sizeof key, "%.*s adapters=%016llx", (int)base, full,
                       (unsigned long long)imgd_str_hash(full + base)))
        return imgd_fail(IMGD_E_INTERNAL, "batch key longer than %d bytes",
                         (int)IMGD_GEN_BATCH_KEY_MAX);
    if (strlen(key) >= cap)
        return imgd_fail(IMGD_E_TOO_LARGE, "imgd_gen_batch_key: %zu bytes needed, cap %zu",
                         strlen(key) + 1, cap);
    memcpy(buf, key, strlen(key) + 1);
    return IMGD_OK;
}

/* ---- generate ----------------------------------------------------------------------- */

/* Checks every item alone, then that the valid ones share a batch signature; builds the
 * sampler from the first valid item. Non-OK: the whole call is refused. */
static imgd_status batch_check(run_ctx *r, imgd_sampler **smp) {
    batch_sig   lead, s;
    size_t      li     = SIZE_MAX;
    int32_t     images = 0;
    const char *field  = NULL;
    char        why[128];
    for (size_t i = 0; i < r->n_it; i++) {
        item *it = &r->it[i];
        if (it->st != IMGD_OK) continue;
        imgd_status st = check_params(r->m, it->p);
        if (st == IMGD_OK) st = sig_of(r->m, it->p, li == SIZE_MAX ? &lead : &s, &field);
        if (st != IMGD_OK) {
            item_fail(r, i, st);
            continue;
        }
        images += it->p->batch;
        if (li == SIZE_MAX) {
            li = i;
            continue;
        }
        field = sig_diff(&lead, &s, why, sizeof why);
        if (field)
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "items %zu and %zu differ in %s (%s): only requests with the same "
                             "width, height, steps, sampler, schedule, init/strength and prompt "
                             "length in 75-token chunks share a batch (imgd_gen_batch_key)",
                             li, i, field, why);
    }
    if (li == SIZE_MAX) return IMGD_OK; /* every item failed alone */
    if (images > IMGD_GEN_MANY_IMAGES_MAX)
        return imgd_fail(IMGD_E_TOO_LARGE, "the items ask for %d images; one batch runs at most %d",
                         (int)images, (int)IMGD_GEN_MANY_IMAGES_MAX);
    imgd_sampler_params sp;
    imgd_status         st = sampler_params(r->m, r->it[li].p, &sp);
    if (st == IMGD_OK) st = imgd_sampler_new(&sp, smp);
    return st;
}

/* SDXL micro-conditioning ids of a request, [0] for the unconditional half and [1] for the
 * conditional one: (orig h, orig w, crop top, crop left, target h, target w), the refiner
 * (5 ids) with the aesthetic score instead of the target size. */
static void time_ids(const imgd_model *m, const imgd_gen_params *p, float ids[2][8]) {
    float oh = (float)(p->orig_height > 0 ? p->orig_height : p->height);
    float ow = (float)(p->orig_width > 0 ? p->orig_width : p->width);
    float th = (float)(p->target_height > 0 ? p->target_height : p->height);
    float tw = (float)(p->target_width > 0 ? p->target_width : p->width);
    for (int h = 0; h < 2; h++) {
        float *d = ids[h];
        d[0]     = oh;
        d[1]     = ow;
        d[2]     = (float)p->crop_top;
        d[3]     = (float)p->crop_left;
        if (m->n_time_ids == 5) {
            d[4] = h ? p->aesthetic_score : p->negative_aesthetic_score;
        } else {
            d[4] = th;
            d[5] = tw;
        }
    }
}

/* Each valid item's generator and text conditioning. */
static void batch_encode(run_ctx *r) {
    for (size_t i = 0; i < r->n_it; i++) {
        item                  *it = &r->it[i];
        const imgd_gen_params *p  = it->p;
        if (it->st != IMGD_OK) continue;
        imgd_rng_init(&it->rng, p->rng == IMGD_RNG_MODE_PHILOX ? IMGD_RNG_PHILOX : IMGD_RNG_CPU,
                      p->seed);
        double      t0   = now_s();
        char       *bare = NULL;
        imgd_status st   = imgd_sd_prompt_strip(p->prompt, &bare);
        if (st == IMGD_OK)
            st = imgd_sd_encode(r->m, bare, p->negative, p->clip_skip, !p->clip_skip_positive_only,
                                &it->txt[0]);
        if (st == IMGD_OK) time_ids(r->m, p, it->tids[0]);
        if (st == IMGD_OK && p->refiner) {
            st = imgd_sd_encode(p->refiner, bare, p->negative, 1, true, &it->txt[1]);
            if (st == IMGD_OK) time_ids(p->refiner, p, it->tids[1]);
            if (st != IMGD_OK) st = imgd_fail_prefix(st, "refiner");
        }
        imgd_free(bare);
        it->t_enc = now_s() - t0;
        if (st != IMGD_OK) item_fail(r, i, st);
    }
}

/* The batch's ControlNets: each placed item's rows, then the shared run (r->ctl). */
static imgd_status control_layout(run_ctx *r) {
    bool any = false;
    for (size_t i = 0; i < r->n_it; i++) any = any || (r->it[i].placed && r->it[i].p->n_controls);
    if (!any) return IMGD_OK;
    r->ctl_items = imgd_calloc(r->n_it, sizeof *r->ctl_items);
    if (!r->ctl_items) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (size_t i = 0; i < r->n_it; i++) {
        const item *it = &r->it[i];
        if (!it->placed) continue;
        r->ctl_items[i] = (imgd_sd_control_item){it->p, it->u_off, it->B, it->cfg_on};
    }
    return imgd_sd_control_begin(r->m, r->ctl_items, r->n_it, r->ub, r->h, r->w, r->sg[0].len,
                                 &r->ctl);
}

/* Places the encoded items in the batch, allocates the loop's buffers (x: zeroed, n
 * floats), fills the conditioning and plans the UNet. Non-OK: batch-wide failure. */
/* Fills stage g's conditioning rows for every placed item. */
static imgd_status stage_fill(run_ctx *r, int32_t g) {
    stage      *sg = &r->sg[g];
    imgd_model *m  = sg->m;
    size_t      L = (size_t)sg->len, D = (size_t)m->unet.context_dim;
    size_t      P = (size_t)m->pooled_dim, K = (size_t)m->n_time_ids;
    sg->ctx = imgd_malloc((size_t)r->ub * L * D * sizeof *sg->ctx);
    if (K) {
        sg->pooled = imgd_malloc((size_t)r->ub * P * sizeof *sg->pooled);
        sg->tids   = imgd_malloc((size_t)r->ub * K * sizeof *sg->tids);
    }
    if (!sg->ctx || (K && (!sg->pooled || !sg->tids)))
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (size_t i = 0; i < r->n_it; i++) {
        const item         *it = &r->it[i];
        const imgd_sd_text *tx = &it->txt[g];
        int32_t             nu = it->cfg_on ? 2 * it->B : it->B;
        for (int32_t u = 0; it->placed && u < nu; u++) {
            bool         un  = it->cfg_on && u < it->B;
            const float *src = un ? tx->uncond : tx->cond;
            size_t       row = (size_t)it->u_off + (size_t)u;
            memcpy(sg->ctx + row * L * D, src, L * D * sizeof *src);
            if (!K) continue;
            memcpy(sg->pooled + row * P, un ? tx->upooled : tx->pooled, P * sizeof(float));
            memcpy(sg->tids + row * K, it->tids[g][un ? 0 : 1], K * sizeof(float));
        }
    }
    return IMGD_OK;
}

/* Places the encoded items in the batch, allocates the loop's buffers (x: zeroed, n
 * floats), fills the conditioning of every stage and plans the base UNet. Non-OK:
 * batch-wide failure. */
static imgd_status batch_layout(run_ctx *r, const imgd_gen_params *lp, float **x, size_t *n) {
    imgd_model *m = r->m;
    int32_t     S = imgd_vae_scale(&m->vae);
    r->h          = lp->height / S;
    r->w          = lp->width / S;
    r->cin        = m->unet.in_channels;
    r->sg[0].m    = m;
    r->n_sg       = 1;
    r->cur_step   = -1;
    if (lp->refiner) {
        r->sg[1].m = lp->refiner;
        r->n_sg    = 2;
        /* diffusers' denoising_end / denoising_start cut-off */
        r->cutoff = (float)round(1000.0 - (double)lp->refiner_switch * 1000.0);
    }
    for (size_t i = 0; i < r->n_it; i++) {
        item *it = &r->it[i];
        if (it->st != IMGD_OK) continue;
        for (int32_t g = 0; g < r->n_sg; g++)
            if (r->live > 0 && it->txt[g].len != r->sg[g].len)
                return imgd_fail(IMGD_E_INTERNAL, "item %zu: %d context tokens, batch %d", i,
                                 (int)it->txt[g].len, (int)r->sg[g].len);
        it->placed = it->live = true;
        it->B                 = it->p->batch;
        it->cfg_on            = it->p->cfg > 1.0f;
        it->x_off             = r->B;
        it->u_off             = r->ub;
        for (int32_t g = 0; g < r->n_sg; g++) r->sg[g].len = it->txt[g].len;
        r->B += it->B;
        r->ub += it->cfg_on ? 2 * it->B : it->B;
        r->live++;
    }
    size_t hw = (size_t)r->h * r->w, per = 4 * hw;
    r->x_unet   = imgd_malloc((size_t)r->ub * r->cin * hw * sizeof *r->x_unet);
    r->t_unet   = imgd_malloc((size_t)r->ub * sizeof *r->t_unet);
    r->out_unet = imgd_malloc((size_t)r->ub * per * sizeof *r->out_unet);
    r->known    = imgd_malloc(per * sizeof *r->known);
    *n          = (size_t)r->B * per;
    *x          = imgd_calloc(*n, sizeof **x);
    if (!r->x_unet || !r->t_unet || !r->out_unet || !r->known || !*x)
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = IMGD_OK;
    for (int32_t g = 0; st == IMGD_OK && g < r->n_sg; g++) st = stage_fill(r, g);
    if (st == IMGD_OK) st = control_layout(r);
    return st == IMGD_OK ? unet_graph(r, &r->sg[0]) : st;
}

/* The item's starting latents in x (its B latents), with its draws in diffusers' order. */
static imgd_status item_start(run_ctx *r, item *it, int32_t first, float *x) {
    imgd_model            *m  = r->m;
    const imgd_gen_params *p  = it->p;
    size_t                 hw = (size_t)r->h * r->w, per = 4 * hw, n = (size_t)it->B * per;
    size_t                 HW = (size_t)p->width * p->height;
    imgd_status            st = IMGD_OK;
    it->noise                 = imgd_malloc(n * sizeof *it->noise);
    if (!it->noise) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (p->init) {
        it->img       = imgd_malloc(3 * HW * sizeof *it->img);
        it->vae_noise = imgd_malloc(per * sizeof *it->vae_noise);
        it->image_lat = imgd_malloc(per * sizeof *it->image_lat);
        if (!it->img || !it->vae_noise || !it->image_lat)
            return imgd_fail(IMGD_E_NOMEM, "out of memory");
        st = imgd_sd_prep_image(p->init, p->width, p->height, it->img);
    }
    if (st == IMGD_OK && p->mask) {
        it->mask     = imgd_malloc(HW * sizeof *it->mask);
        it->mask_lat = imgd_malloc(hw * sizeof *it->mask_lat);
        if (!it->mask || !it->mask_lat) return imgd_fail(IMGD_E_NOMEM, "out of memory");
        st = prep_mask(p->mask, p->width, p->height, p->mask_blur, it->mask);
        if (st == IMGD_OK)
            st = imgd_mask_to_latent(it->mask, p->width, p->height, r->w, r->h, it->mask_lat);
    }
    double strength    = p->init ? (double)p->strength : 1.0;
    bool   encode_init = p->init && (!p->mask || (r->cin == 4) || strength < 1.0);
    if (st == IMGD_OK && encode_init) { /* image latents (noise draw: the posterior sample) */
        st = item_draw(it, it->vae_noise, per);
        if (st == IMGD_OK)
            st = vae_encode(m, it->img, p->width, p->height, it->vae_noise, it->image_lat);
    }
    if (st == IMGD_OK) st = item_draw(it, it->noise, n);
    if (st == IMGD_OK && p->init && strength < 1.0) {
        for (int32_t b = 0; st == IMGD_OK && b < it->B; b++)
            st = imgd_sampler_add_noise(r->sampler, it->image_lat, it->noise + (size_t)b * per, per,
                                        first, x + (size_t)b * per);
    } else if (st == IMGD_OK) {
        float s = imgd_sampler_init_noise_sigma(r->sampler);
        for (size_t i = 0; i < n; i++) x[i] = it->noise[i] * s;
    }
    if (st == IMGD_OK && p->mask) {
        /* masked image (binarised mask < 0.5 keeps), encoded: the 9-channel conditioning;
         * diffusers draws it for 4-channel models too (and does not use it) */
        for (size_t c = 0; c < 3; c++)
            for (size_t i = 0; i < HW; i++)
                it->img[c * HW + i] *= it->mask[i] >= 0.5f ? 0.0f : 1.0f;
        it->masked_lat = imgd_malloc(per * sizeof *it->masked_lat);
        if (!it->masked_lat) return imgd_fail(IMGD_E_NOMEM, "out of memory");
        st = item_draw(it, it->vae_noise, per);
        if (st == IMGD_OK)
            st = vae_encode(m, it->img, p->width, p->height, it->vae_noise, it->masked_lat);
    }
    return st;
}

/* Decodes the item's latents into its result. */
static imgd_status item_finish(run_ctx *r, item *it, const float *x, double t_smp) {
    const imgd_gen_params *p      = it->p;
    size_t                 HW     = (size_t)p->width * p->height;
    imgd_gen_result       *res    = imgd_calloc(1, sizeof *res);
    float                 *pixels = imgd_malloc((size_t)it->B * 3 * HW * sizeof *pixels);
    imgd_status            st     = IMGD_OK;
    if (!pixels || !res) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    double t_dec = now_s();
    if (st == IMGD_OK) st = vae_decode(r->m, x, it->B, r->h, r->w, pixels);
    t_dec = now_s() - t_dec;
    if (st == IMGD_OK) {
        res->images = imgd_calloc((size_t)it->B, sizeof *res->images);
        if (!res->images) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    for (int32_t b = 0; st == IMGD_OK && b < it->B; b++) {
        imgd_image im = {0};
        st            = imgd_image_from_nchw(pixels + (size_t)b * 3 * HW, p->width, p->height, &im);
        if (st == IMGD_OK) {
            res->images[b] = (imgd_image_u8){im.w, im.h, im.c, im.px};
            res->n         = b + 1;
        }
    }
    if (st == IMGD_OK) st = infotext(r->m, p, &res->infotext);
    if (st == IMGD_OK) {
        res->pixels     = pixels;
        res->t_encode_s = it->t_enc;
        res->t_sample_s = t_smp;
        res->t_decode_s = t_dec;
        res->t_total_s  = now_s() - r->t0;
        res->steps_run  = it->steps_run;
        it->out->result = res;
        return IMGD_OK;
    }
    imgd_gen_result_free(res);
    imgd_free(pixels);
    return st;
}

static void item_release(item *it) {
    imgd_sd_text_free(&it->txt[0]);
    imgd_sd_text_free(&it->txt[1]);
    imgd_free(it->img);
    imgd_free(it->mask);
    imgd_free(it->mask_lat);
    imgd_free(it->image_lat);
    imgd_free(it->masked_lat);
    imgd_free(it->noise);
    imgd_free(it->vae_noise);
}

/* Starts every placed item, runs the loop and decodes the items still running. */
static void batch_run(run_ctx *r, const imgd_gen_params *lp, float *x, size_t n) {
    size_t  per   = 4 * (size_t)r->h * r->w;
    double  str   = lp->init ? (double)lp->strength : 1.0;
    int32_t first = lp->init ? imgd_sampler_first_step(r->sampler, str) : 0;
    r->first      = first;
    r->step       = first;
    if (first >= imgd_sampler_iterations(r->sampler)) {
        fail_running(r, imgd_fail(IMGD_E_INVALID_ARG,
                                  "strength %g with %d steps runs no step; raise either", str,
                                  (int)lp->steps));
        return;
    }
    for (size_t i = 0; i < r->n_it; i++) {
        item *it = &r->it[i];
        if (!it->live) continue;
        imgd_status st = item_start(r, it, first, x + (size_t)it->x_off * per);
        if (st != IMGD_OK) {
            item_fail(r, i, st);
            memset(x + (size_t)it->x_off * per, 0, (size_t)it->B * per * sizeof *x);
        }
    }
    double      t_smp = now_s();
    imgd_status st    = IMGD_OK;
    if (r->live > 0) {
        imgd_sampler_io io = {denoise, r, draw_noise, r, on_step, r};
        st                 = imgd_sampler_run(r->sampler, x, n, first, &io);
    }
    t_smp = now_s() - t_smp;
    if (st != IMGD_OK && !r->stopped) fail_running(r, st);
    for (size_t i = 0; i < r->n_it; i++) {
        item *it = &r->it[i];
        if (!it->live) continue;
        st = item_finish(r, it, x + (size_t)it->x_off * per, t_smp);
        if (st != IMGD_OK) item_fail(r, i, st);
    }
}

imgd_status imgd_generate_many(imgd_model *m, const imgd_gen_params *const *items, size_t n,
                               imgd_gen_item_result *out) {
    if (!m || !items || !out || n == 0)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_generate_many: NULL argument or no items");
    if (m->flux) return imgd_flux_generate_many(m, items, n, out);
    run_ctx r;
    memset(&r, 0, sizeof r);
    memset(out, 0, n * sizeof *out);
    r.m    = m;
    r.n_it = n;
    r.t0   = now_s();
    r.it   = n <= IMGD_GEN_MANY_IMAGES_MAX ? imgd_calloc(n, sizeof *r.it) : NULL;
    if (!r.it) {
        imgd_status st = n > IMGD_GEN_MANY_IMAGES_MAX
                             ? imgd_fail(IMGD_E_TOO_LARGE, "%zu items; one batch runs at most %d",
                                         n, (int)IMGD_GEN_MANY_IMAGES_MAX)
                             : imgd_fail(IMGD_E_NOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            out[i].status = st;
            (void)imgd_fmt(out[i].error, sizeof out[i].error, "%s", imgd_last_error());
        }
        return st;
    }
    for (size_t i = 0; i < n; i++) {
        r.it[i].p   = items[i];
        r.it[i].out = &out[i];
        if (!items[i]) item_fail(&r, i, imgd_fail(IMGD_E_INVALID_ARG, "item %zu is NULL", i));
    }
    imgd_sampler *smp = NULL;
    float        *x   = NULL;
    size_t        nx  = 0;
    imgd_status   st  = batch_check(&r, &smp);
    if (st != IMGD_OK) fail_running(&r, st);
    for (size_t i = 0; smp && i < n; i++) { /* the batch's LoRA set (batch_check: all equal) */
        if (r.it[i].st != IMGD_OK) continue;
        st = imgd_sd_lora_apply(m, r.it[i].p);
        if (st == IMGD_OK) st = imgd_sd_hypernet_apply(m, r.it[i].p);
        if (st != IMGD_OK) fail_running(&r, st);
        break;
    }
    if (smp) batch_encode(&r);
    const imgd_gen_params *lp = NULL;
    for (size_t i = 0; i < n && !lp; i++)
        if (r.it[i].st == IMGD_OK) lp = r.it[i].p;
    r.sampler = smp;
    if (lp) {
        st = batch_layout(&r, lp, &x, &nx);
        if (st == IMGD_OK)
            batch_run(&r, lp, x, nx);
        else
            fail_running(&r, st);
    }
    imgd_status ret = IMGD_OK;
    for (size_t i = 0; i < n; i++) {
        out[i].status = r.it[i].st;
        if (ret == IMGD_OK && r.it[i].st != IMGD_OK) {
            ret = r.it[i].st;
            (void)imgd_fail(ret, "%s", out[i].error); /* later work may have set others */
        }
        item_release(&r.it[i]);
    }
    imgd_free(x);
    for (int32_t g = 0; g < 2; g++) {
        imgd_free(r.sg[g].ctx);
        imgd_free(r.sg[g].pooled);
        imgd_free(r.sg[g].tids);
    }
    imgd_free(r.x_unet);
    imgd_free(r.t_unet);
    imgd_free(r.out_unet);
    imgd_free(r.known);
    imgd_sd_control_free(r.ctl);
    imgd_free(r.ctl_items);
    imgd_free(r.it);
    imgd_sampler_free(smp);
    return ret;
}

imgd_status imgd_generate(imgd_model *m, const imgd_gen_params *params, imgd_gen_result **out) {
    if (!m || !params || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_generate: NULL argument");
    imgd_gen_item_result r;
    imgd_status          st = imgd_generate_many(m, &params, 1, &r);
    if (st == IMGD_OK) *out = r.result;
    return st;
}
