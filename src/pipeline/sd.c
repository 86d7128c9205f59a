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
    p.sampler   = "euler";
    p.schedule  = "default";
    p.steps     = 20;
    p.cfg       = 7.5f;
    p.width     = 512;
    p.height    = 512;
    p.batch     = 1;
    p.clip_skip = 1;
    p.strength  = 0.75f;
    p.mask_blur = 4;
    p.rng       = IMGD_RNG_MODE_CPU;
    return p;
}

/* ---- kept graphs ------------------------------------------------------------------- */

static void graph_drop(imgd_sd_graph *k) {
    imgd_graph_free(k->g);
    memset(k, 0, sizeof *k);
}

void imgd_sd_graphs_free(imgd_model *m) {
    graph_drop(&m->g_te);
    graph_drop(&m->g_unet);
    graph_drop(&m->g_dec);
    graph_drop(&m->g_enc);
}

imgd_wbind *imgd_sd_vae_bind(imgd_model *m) {
    return m->vae_wb ? m->vae_wb : m->wb;
}

imgd_wbind *imgd_sd_unet_bind(imgd_model *m) {
    return m->unet_wb ? m->unet_wb : m->wb;
}

/* Plans and allocates a freshly built graph on the model's backend. */
static imgd_status finish_graph(imgd_model *m, imgd_sd_graph *k, const char *what) {
    imgd_plan_info info;
    imgd_status    st = imgd_graph_plan(k->g, m->be, &info);
    if (st == IMGD_OK) st = imgd_graph_alloc(k->g, NULL, 0);
    if (st != IMGD_OK) {
        graph_drop(k);
        return imgd_fail_prefix(st, "%s graph", what);
    }
    IMGD_LOG(IMGD_LOG_DEBUG, "pipeline", "graph_planned", "%s: %zu nodes, %.1f MB activations",
             what, (size_t)info.n_nodes, (double)info.activation_bytes / 1e6);
    return IMGD_OK;
}

static imgd_status new_graph(imgd_sd_graph *k) {
    graph_drop(k);
    return imgd_graph_new(NULL, &k->g);
}

/* ---- text encoder ------------------------------------------------------------------- */

/* The text-encoder graph for `batch` sequences with hidden state `layer` (0 = last hidden
 * state after the final LayerNorm; -k = hidden_states[-k] with the final LayerNorm, A1111
 * clip skip k). */
static imgd_status te_graph(imgd_model *m, int32_t batch, int32_t layer) {
    imgd_sd_graph *k = &m->g_te;
    if (k->g && k->batch == batch && k->variant == layer) return IMGD_OK;
    imgd_status st = new_graph(k);
    if (st != IMGD_OK) return st;
    k->batch               = batch;
    k->variant             = layer;
    k->in[0]               = imgd_graph_input(k->g, "embeds", IMGD_DTYPE_F32, 3,
                                              (const int64_t[]){batch, TOK_LEN, m->te.hidden});
    imgd_clip_text_req req = imgd_clip_text_req_default();
    imgd_clip_text_out out;
    memset(&out, 0, sizeof out);
    req.last_hidden_state = true;
    if (layer != 0) {
        req.hidden          = true;
        req.hidden_final_ln = true;
        req.layer           = layer;
    }
    st = imgd_clip_text_build(k->g, m->wb, "text_encoder", &m->te, batch, k->in[0], &req, &out);
    if (st != IMGD_OK) {
        graph_drop(k);
        return st;
    }
    k->out[0] = out.last_hidden_state;
    k->out[1] = layer == 0 ? out.last_hidden_state : out.hidden;
    imgd_graph_output(k->g, k->out[0]);
    imgd_graph_output(k->g, k->out[1]);
    return finish_graph(m, k, "text encoder");
}

/* Conditioning of the positive and negative prompts: each [n_chunks * 77, hidden] with
 * the same n_chunks (the shorter is padded with the empty prompt's chunk, as A1111 does),
 * A1111 emphasis applied per chunk. *cond and *uncond are imgd_malloc'd. */
static imgd_status encode_prompts(imgd_model *m, const char *pos, const char *neg,
                                  int32_t clip_skip, bool skip_neg, float **cond, float **uncond,
                                  int32_t *n_tokens) {
    imgd_prompt_chunks cp, cn, ce;
    memset(&cp, 0, sizeof cp);
    memset(&cn, 0, sizeof cn);
    memset(&ce, 0, sizeof ce);
    int32_t     pad = imgd_clip_tok_eos(m->tok);
    imgd_status st  = imgd_prompt_encode(m->tok, pos ? pos : "", pad, &cp);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "prompt");
    st = imgd_prompt_encode(m->tok, neg ? neg : "", pad, &cn);
    if (st != IMGD_OK) st = imgd_fail_prefix(st, "negative prompt");
    if (st == IMGD_OK) st = imgd_prompt_encode(m->tok, "", pad, &ce);
    size_t   n     = cp.n_chunks > cn.n_chunks ? cp.n_chunks : cn.n_chunks;
    size_t   total = 2 * n, H = (size_t)m->te.hidden;
    int32_t *ids = NULL;
    float   *wts = NULL, *emb = NULL, *z = NULL, *zl = NULL;
    if (st == IMGD_OK) {
        ids = imgd_malloc(total * TOK_LEN * sizeof *ids);
        wts = imgd_malloc(total * TOK_LEN * sizeof *wts);
        emb = imgd_malloc(total * TOK_LEN * H * sizeof *emb);
        z   = imgd_malloc(total * TOK_LEN * H * sizeof *z);
        zl  = imgd_malloc(total * TOK_LEN * H * sizeof *zl);
        if (!ids || !wts || !emb || !z || !zl)
            st = imgd_fail(IMGD_E_NOMEM, "out of memory encoding prompts");
    }
    /* rows 0..n-1: negative chunks, n..2n-1: positive chunks (missing ones: empty chunk) */
    for (size_t c = 0; st == IMGD_OK && c < total; c++) {
        const imgd_prompt_chunks *src = c < n ? &cn : &cp;
        size_t                    i   = c < n ? c : c - n;
        const int32_t            *id  = i < src->n_chunks ? src->ids + i * TOK_LEN : ce.ids;
        const float              *w   = i < src->n_chunks ? src->weights + i * TOK_LEN : ce.weights;
        memcpy(ids + c * TOK_LEN, id, TOK_LEN * sizeof *ids);
        memcpy(wts + c * TOK_LEN, w, TOK_LEN * sizeof *wts);
    }
    int32_t layer = clip_skip > 1 ? -clip_skip : 0;
    if (st == IMGD_OK && clip_skip > m->te.layers)
        st = imgd_fail(IMGD_E_INVALID_ARG, "clip_skip %d: the text encoder has %d layers",
                       (int)clip_skip, (int)m->te.layers);
    if (st == IMGD_OK)
        st = imgd_clip_text_embed(m->wb, "text_encoder", &m->te, ids, (int32_t)total, TOK_LEN, NULL,
                                  0, emb);
    if (st == IMGD_OK) st = te_graph(m, (int32_t)total, layer);
    if (st == IMGD_OK) st = imgd_tensor_bind(m->g_te.in[0], emb);
    if (st == IMGD_OK) st = imgd_graph_compute(m->g_te.g);
    if (st == IMGD_OK) st = imgd_graph_read_f32(m->g_te.g, m->g_te.out[1], z, total * TOK_LEN * H);
    /* diffusers applies clip skip to the positive prompt only: negative rows then take the
     * last hidden state */
    if (st == IMGD_OK && layer != 0 && !skip_neg) {
        st = imgd_graph_read_f32(m->g_te.g, m->g_te.out[0], zl, total * TOK_LEN * H);
        if (st == IMGD_OK) memcpy(z, zl, n * TOK_LEN * H * sizeof *z);
    }
    for (size_t c = 0; st == IMGD_OK && c < total; c++)
        imgd_prompt_apply_weights(z + c * TOK_LEN * H, TOK_LEN, H, wts + c * TOK_LEN);
    if (st == IMGD_OK) {
        *uncond = z;
        *cond   = imgd_malloc(n * TOK_LEN * H * sizeof **cond);
        if (!*cond) {
            st = imgd_fail(IMGD_E_NOMEM, "out of memory encoding prompts");
        } else {
            memcpy(*cond, z + n * TOK_LEN * H, n * TOK_LEN * H * sizeof **cond);
            z         = NULL; /* now *uncond; its first n chunks are the negative prompt */
            *n_tokens = (int32_t)(n * TOK_LEN);
        }
    }
    imgd_free(ids);
    imgd_free(wts);
    imgd_free(emb);
    imgd_free(z);
    imgd_free(zl);
    imgd_prompt_chunks_free(&cp);
    imgd_prompt_chunks_free(&cn);
    imgd_prompt_chunks_free(&ce);
    return st;
}

/* ---- VAE ---------------------------------------------------------------------------- */

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
        st = imgd_vae_decode_tiled(imgd_sd_vae_bind(m), m->be, "vae", &m->vae, &t, z, B, h, w,
                                   image, NULL);
    } else {
        imgd_sd_graph *k = &m->g_dec;
        if (!k->g || k->batch != B || k->h != h || k->w != w) {
            st = new_graph(k);
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
                    st = finish_graph(m, k, "VAE decoder");
                } else {
                    graph_drop(k);
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

/* Encodes one image [1, 3, H, W] in [-1, 1] into its posterior sample times the scaling
 * factor: (mean + std * noise) * scale, latents [1, zc, H/8, W/8]. noise_out receives the
 * draw (caller-supplied noise of the same size). */
static imgd_status vae_encode(imgd_model *m, const float *image, int32_t H, int32_t W,
                              const float *noise, float *latent) {
    int32_t        S = imgd_vae_scale(&m->vae), zc = m->vae.latent_channels;
    int32_t        h = H / S, w = W / S;
    imgd_sd_graph *k  = &m->g_enc;
    imgd_status    st = IMGD_OK;
    if (!k->g || k->h != H || k->w != W) {
        st = new_graph(k);
        if (st != IMGD_OK) return st;
        k->h = H;
        k->w = W;
        k->in[0] =
            imgd_graph_input(k->g, "image", IMGD_DTYPE_F32, 4, (const int64_t[]){1, 3, H, W});
        imgd_vae_encode_out o;
        memset(&o, 0, sizeof o);
        st = imgd_vae_encode_build(k->g, imgd_sd_vae_bind(m), "vae", &m->vae, k->in[0], &o);
        if (st != IMGD_OK) {
            graph_drop(k);
            return st;
        }
        k->out[0] = o.mean;
        k->out[1] = o.logvar;
        imgd_graph_output(k->g, o.mean);
        imgd_graph_output(k->g, o.logvar);
        st = finish_graph(m, k, "VAE encoder");
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
        for (size_t i = 0; i < n; i++) latent[i] = (latent[i] - m->vae_shift) * m->vae_scale;
    }
    imgd_free(mean);
    imgd_free(logvar);
    return st;
}

/* ---- UNet with classifier-free guidance --------------------------------------------- */

typedef struct run_ctx {
    imgd_model            *m;
    const imgd_gen_params *p;
    int32_t                B, h, w, cin, len, ub; /* ub: UNet batch (2B with CFG, else B) */
    bool                   cfg_on;
    float                 *ctx;           /* [ub, len, D] conditioning, bound once */
    float                 *x_unet;        /* [ub, cin, h, w] */
    float                 *t_unet;        /* [ub] */
    float                 *out_unet;      /* [ub, 4, h, w] */
    const float           *mask_lat;      /* inpainting: [h, w] latent mask (1 = repaint) */
    const float           *masked_lat;    /* 9-channel: [1, 4, h, w] masked-image latents */
    const float           *image_lat;     /* 4-channel inpainting: [1, 4, h, w] image latents */
    const float           *inpaint_noise; /* 4-channel inpainting: the initial noise draw */
    const imgd_sampler    *sampler;
    imgd_rng               rng;
    double                 t0;
    int32_t                steps_run;
} run_ctx;

static imgd_status unet_graph(run_ctx *r) {
    imgd_model    *m = r->m;
    imgd_sd_graph *k = &m->g_unet;
    if (k->g && k->batch == r->ub && k->h == r->h && k->w == r->w && k->len == r->len)
        return IMGD_OK;
    imgd_status st = new_graph(k);
    if (st != IMGD_OK) return st;
    k->batch = r->ub;
    k->h     = r->h;
    k->w     = r->w;
    k->len   = r->len;
    k->in[0] = imgd_graph_input(k->g, "x", IMGD_DTYPE_F32, 4,
                                (const int64_t[]){r->ub, r->cin, r->h, r->w});
    k->in[1] = imgd_graph_input(k->g, "t", IMGD_DTYPE_F32, 1, (const int64_t[]){r->ub});
    k->in[2] = imgd_graph_input(k->g, "ctx", IMGD_DTYPE_F32, 3,
                                (const int64_t[]){r->ub, r->len, m->unet.context_dim});
    st = imgd_unet_build(k->g, imgd_sd_unet_bind(m), "unet", &m->unet, k->in[0], k->in[1], k->in[2],
                         NULL, NULL, &k->out[0]);
    if (st != IMGD_OK) {
        graph_drop(k);
        return st;
    }
    imgd_graph_output(k->g, k->out[0]);
    return finish_graph(m, k, "UNet");
}

/* The sampler's model call: x_in [B, 4, h, w] -> guided model output. */
static imgd_status denoise(void *user, const float *x_in, size_t n, float t, float sigma,
                           float *out) {
    (void)sigma;
    run_ctx *r  = user;
    size_t   hw = (size_t)r->h * r->w, per = 4 * hw, cper = (size_t)r->cin * hw;
    if (n != (size_t)r->B * per) return imgd_fail(IMGD_E_INTERNAL, "denoise: %zu floats", n);
    for (int32_t u = 0; u < r->ub; u++) {
        int32_t b   = u % r->B;
        float  *dst = r->x_unet + (size_t)u * cper;
        memcpy(dst, x_in + (size_t)b * per, per * sizeof *dst);
        if (r->cin == 9) { /* concat(latents, mask, masked-image latents) */
            memcpy(dst + per, r->mask_lat, hw * sizeof *dst);
            memcpy(dst + per + hw, r->masked_lat, per * sizeof *dst);
        }
        r->t_unet[u] = t;
    }
    imgd_sd_graph *k  = &r->m->g_unet;
    imgd_status    st = imgd_tensor_bind(k->in[0], r->x_unet);
    if (st == IMGD_OK) st = imgd_tensor_bind(k->in[1], r->t_unet);
    if (st == IMGD_OK) st = imgd_tensor_bind(k->in[2], r->ctx);
    if (st == IMGD_OK) st = imgd_graph_compute(k->g);
    if (st == IMGD_OK) st = imgd_graph_read_f32(k->g, k->out[0], r->out_unet, (size_t)r->ub * per);
    if (st != IMGD_OK) return st;
    if (!r->cfg_on) {
        memcpy(out, r->out_unet, n * sizeof *out);
        return IMGD_OK;
    }
    const float *eu = r->out_unet, *ec = r->out_unet + n;
    float        g = r->p->cfg;
    for (size_t i = 0; i < n; i++) out[i] = eu[i] + g * (ec[i] - eu[i]);
    return IMGD_OK;
}

static imgd_status draw_noise(void *user, float *out, size_t n) {
    run_ctx *r = user;
    if (r->p->noise) {
        if (!r->p->noise(out, n, r->p->noise_user))
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "the noise callback supplied no draw of %zu values", n);
        return IMGD_OK;
    }
    imgd_rng_randn(&r->rng, out, n);
    return IMGD_OK;
}

static imgd_status on_step(void *user, int32_t step, int32_t steps, float *x, size_t n) {
    run_ctx *r = user;
    r->steps_run++;
    if (r->image_lat) { /* 4-channel inpainting: keep the known region on the schedule */
        size_t hw = (size_t)r->h * r->w, per = 4 * hw;
        float *known = imgd_malloc(per * sizeof *known);
        if (!known) return imgd_fail(IMGD_E_NOMEM, "out of memory");
        imgd_status st = IMGD_OK;
        for (int32_t b = 0; st == IMGD_OK && b < r->B; b++) {
            if (step + 1 < steps)
                st = imgd_sampler_add_noise(r->sampler, r->image_lat,
                                            r->inpaint_noise + (size_t)b * per, per, step + 1,
                                            known);
            else
                memcpy(known, r->image_lat, per * sizeof *known);
            for (size_t c = 0; st == IMGD_OK && c < 4; c++)
                for (size_t i = 0; i < hw; i++) {
                    float  mk = r->mask_lat[i];
                    size_t j  = (size_t)b * per + c * hw + i;
                    x[j]      = (1.0f - mk) * known[c * hw + i] + mk * x[j];
                }
        }
        imgd_free(known);
        if (st != IMGD_OK) return st;
    }
    (void)n;
    if (r->p->on_step && !r->p->on_step(step + 1, steps, now_s() - r->t0, r->p->user))
        return imgd_fail(IMGD_E_CANCELLED, "cancelled at step %d of %d", (int)(step + 1),
                         (int)steps);
    return IMGD_OK;
}

/* ---- scheduler config ----------------------------------------------------------------- */

/* The sampler's config: SD 1.5's standard one (single files), overlaid with the model's
 * scheduler/scheduler_config.json when it has one (diffusers folders), as diffusers'
 * Scheduler.from_config(pipe.scheduler.config) does. */
static imgd_status sampler_params(const imgd_model *m, const imgd_gen_params *p,
                                  imgd_sampler_params *sp) {
    *sp            = imgd_sampler_params_default();
    imgd_status st = imgd_sampler_kind_parse(p->sampler ? p->sampler : "euler", &sp->kind);
    if (st != IMGD_OK) return st;
    st = imgd_schedule_kind_parse(p->schedule ? p->schedule : "default", &sp->schedule);
    if (st != IMGD_OK) return st;
    sp->steps        = p->steps;
    sp->prediction   = m->prediction == IMGD_PRED_V ? IMGD_PREDICTION_V : IMGD_PREDICTION_EPSILON;
    const char *text = imgd_weights_meta_find(m->w, "scheduler/scheduler_config.json");
    if (!text) return IMGD_OK;
    cJSON *j = NULL;
    st = imgd_json_parse("scheduler/scheduler_config.json", text, strlen(text), 1u << 20, 16, &j);
    if (st != IMGD_OK) return st;
    const cJSON *v;
#define NUM(key) ((v = cJSON_GetObjectItemCaseSensitive(j, key)) != NULL && cJSON_IsNumber(v))
#define STR(key) ((v = cJSON_GetObjectItemCaseSensitive(j, key)) != NULL && cJSON_IsString(v))
    if (NUM("num_train_timesteps")) sp->num_train_timesteps = (int32_t)v->valuedouble;
    if (NUM("beta_start")) sp->beta_start = v->valuedouble;
    if (NUM("beta_end")) sp->beta_end = v->valuedouble;
    if (NUM("steps_offset")) sp->steps_offset = (int32_t)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "set_alpha_to_one")) && cJSON_IsBool(v))
        sp->set_alpha_to_one = cJSON_IsTrue(v);
    if (STR("beta_schedule") &&
        imgd_beta_schedule_parse(v->valuestring, &sp->beta_schedule) != IMGD_OK)
        st = imgd_fail_prefix(IMGD_E_FORMAT, "%s: scheduler/scheduler_config.json", m->path);
    if (st == IMGD_OK && STR("timestep_spacing") &&
        imgd_spacing_parse(v->valuestring, &sp->spacing) != IMGD_OK)
        st = imgd_fail_prefix(IMGD_E_FORMAT, "%s: scheduler/scheduler_config.json", m->path);
#undef NUM
#undef STR
    cJSON_Delete(j);
    return st;
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
    if (p->clip_skip < 1 || p->clip_skip > m->te.layers)
        return imgd_fail(IMGD_E_INVALID_ARG, "clip_skip %d: expected 1..%d (A1111 numbering)",
                         (int)p->clip_skip, (int)m->te.layers);
    if (p->init && (!isfinite(p->strength) || p->strength <= 0 || p->strength > 1))
        return imgd_fail(IMGD_E_INVALID_ARG, "strength %g: expected (0, 1]", (double)p->strength);
    if (p->mask && !p->init)
        return imgd_fail(IMGD_E_INVALID_ARG, "a mask needs an init image to inpaint");
    if (p->mask_blur < 0 || p->mask_blur > 256)
        return imgd_fail(IMGD_E_INVALID_ARG, "mask_blur %d: expected 0..256", (int)p->mask_blur);
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
static imgd_status prep_image(const imgd_image_u8 *src, int32_t W, int32_t H, float *out) {
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

static imgd_status infotext(const imgd_model *m, const imgd_gen_params *p, char **out) {
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
    return imgd_a1111_parameters(&in, out);
}

void imgd_gen_result_free(imgd_gen_result *r) {
    if (!r) return;
    for (int32_t i = 0; r->images && i < r->n; i++) imgd_free(r->images[i].px);
    imgd_free(r->images);
    imgd_free(r->pixels);
    imgd_free(r->infotext);
    imgd_free(r);
}

imgd_status imgd_generate(imgd_model *m, const imgd_gen_params *params, imgd_gen_result **out) {
    if (!m || !params || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_generate: NULL argument");
    const imgd_gen_params *p  = params;
    imgd_status            st = check_params(m, p);
    if (st != IMGD_OK) return st;
    imgd_sampler_params sp;
    st = sampler_params(m, p, &sp);
    if (st != IMGD_OK) return st;
    imgd_sampler *smp = NULL;
    st                = imgd_sampler_new(&sp, &smp);
    if (st != IMGD_OK) return st;

    run_ctx r;
    memset(&r, 0, sizeof r);
    int32_t S = imgd_vae_scale(&m->vae);
    r.m       = m;
    r.p       = p;
    r.sampler = smp;
    r.B       = p->batch;
    r.h       = p->height / S;
    r.w       = p->width / S;
    r.cin     = m->unet.in_channels;
    r.cfg_on  = p->cfg > 1.0f;
    r.ub      = r.cfg_on ? 2 * r.B : r.B;
    r.t0      = now_s();
    imgd_rng_init(&r.rng, p->rng == IMGD_RNG_MODE_PHILOX ? IMGD_RNG_PHILOX : IMGD_RNG_CPU, p->seed);

    size_t hw = (size_t)r.h * r.w, per = 4 * hw, n = (size_t)r.B * per;
    size_t HW   = (size_t)p->width * p->height;
    float *cond = NULL, *uncond = NULL, *x = NULL, *img = NULL, *mask = NULL, *mask_lat = NULL;
    float *noise = NULL, *image_lat = NULL, *masked_lat = NULL, *vae_noise = NULL;
    float *pixels          = NULL;
    imgd_gen_result *res   = NULL;
    double           t_enc = now_s();
    st = encode_prompts(m, p->prompt, p->negative, p->clip_skip, !p->clip_skip_positive_only, &cond,
                        &uncond, &r.len);
    t_enc    = now_s() - t_enc;
    size_t D = (size_t)m->unet.context_dim;
    if (st == IMGD_OK && (size_t)m->te.hidden != D)
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: text encoder width %d does not match the UNet's "
                       "cross-attention width %d",
                       m->path, (int)m->te.hidden, (int)D);
    if (st == IMGD_OK) {
        size_t L   = (size_t)r.len;
        r.ctx      = imgd_malloc((size_t)r.ub * L * D * sizeof *r.ctx);
        r.x_unet   = imgd_malloc((size_t)r.ub * r.cin * hw * sizeof *r.x_unet);
        r.t_unet   = imgd_malloc((size_t)r.ub * sizeof *r.t_unet);
        r.out_unet = imgd_malloc((size_t)r.ub * per * sizeof *r.out_unet);
        x          = imgd_malloc(n * sizeof *x);
        noise      = imgd_malloc(n * sizeof *noise);
        if (!r.ctx || !r.x_unet || !r.t_unet || !r.out_unet || !x || !noise)
            st = imgd_fail(IMGD_E_NOMEM, "out of memory");
        for (int32_t u = 0; st == IMGD_OK && u < r.ub; u++) {
            const float *src = (r.cfg_on && u < r.B) ? uncond : cond;
            memcpy(r.ctx + (size_t)u * L * D, src, L * D * sizeof *src);
        }
    }
    if (st == IMGD_OK) st = unet_graph(&r);

    /* starting latents, with the draws in diffusers' order */
    int32_t first = 0;
    if (st == IMGD_OK && p->init) {
        img       = imgd_malloc(3 * HW * sizeof *img);
        vae_noise = imgd_malloc(per * sizeof *vae_noise);
        image_lat = imgd_malloc(per * sizeof *image_lat);
        if (!img || !vae_noise || !image_lat) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
        if (st == IMGD_OK) st = prep_image(p->init, p->width, p->height, img);
        if (st == IMGD_OK && p->mask) {
            mask     = imgd_malloc(HW * sizeof *mask);
            mask_lat = imgd_malloc(hw * sizeof *mask_lat);
            if (!mask || !mask_lat) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
            if (st == IMGD_OK) st = prep_mask(p->mask, p->width, p->height, p->mask_blur, mask);
            if (st == IMGD_OK)
                st = imgd_mask_to_latent(mask, p->width, p->height, r.w, r.h, mask_lat);
            r.mask_lat = mask_lat;
        }
    }
    double strength = p->init ? (double)p->strength : 1.0;
    if (st == IMGD_OK) first = p->init ? imgd_sampler_first_step(smp, strength) : 0;
    if (st == IMGD_OK && first >= imgd_sampler_iterations(smp))
        st = imgd_fail(IMGD_E_INVALID_ARG, "strength %g with %d steps runs no step; raise either",
                       strength, (int)p->steps);
    bool encode_init = p->init && (!p->mask || (r.cin == 4) || strength < 1.0);
    if (st == IMGD_OK && encode_init) { /* image latents (noise draw: the posterior sample) */
        st = draw_noise(&r, vae_noise, per);
        if (st == IMGD_OK) st = vae_encode(m, img, p->width, p->height, vae_noise, image_lat);
    }
    if (st == IMGD_OK) st = draw_noise(&r, noise, n);
    if (st == IMGD_OK) {
        if (p->init && strength < 1.0) {
            for (int32_t b = 0; st == IMGD_OK && b < r.B; b++)
                st = imgd_sampler_add_noise(smp, image_lat, noise + (size_t)b * per, per, first,
                                            x + (size_t)b * per);
        } else {
            float s = imgd_sampler_init_noise_sigma(smp);
            for (size_t i = 0; i < n; i++) x[i] = noise[i] * s;
        }
    }
    if (st == IMGD_OK && p->mask) {
        /* masked image (binarised mask < 0.5 keeps), encoded: the 9-channel conditioning;
         * diffusers draws it for 4-channel models too (and does not use it) */
        for (size_t c = 0; c < 3; c++)
            for (size_t i = 0; i < HW; i++) img[c * HW + i] *= mask[i] >= 0.5f ? 0.0f : 1.0f;
        masked_lat = imgd_malloc(per * sizeof *masked_lat);
        if (!masked_lat) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
        if (st == IMGD_OK) st = draw_noise(&r, vae_noise, per);
        if (st == IMGD_OK) st = vae_encode(m, img, p->width, p->height, vae_noise, masked_lat);
        r.masked_lat = masked_lat;
        if (r.cin == 4) {
            r.image_lat     = image_lat;
            r.inpaint_noise = noise;
        }
    }

    double t_smp = now_s();
    if (st == IMGD_OK) {
        imgd_sampler_io io = {denoise, &r, draw_noise, &r, on_step, &r};
        st                 = imgd_sampler_run(smp, x, n, first, &io);
    }
    t_smp = now_s() - t_smp;

    double t_dec = now_s();
    if (st == IMGD_OK) {
        pixels = imgd_malloc((size_t)r.B * 3 * HW * sizeof *pixels);
        res    = imgd_calloc(1, sizeof *res);
        if (!pixels || !res) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    if (st == IMGD_OK) st = vae_decode(m, x, r.B, r.h, r.w, pixels);
    t_dec = now_s() - t_dec;
    if (st == IMGD_OK) {
        res->images = imgd_calloc((size_t)r.B, sizeof *res->images);
        if (!res->images) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    for (int32_t b = 0; st == IMGD_OK && b < r.B; b++) {
        imgd_image im = {0};
        st            = imgd_image_from_nchw(pixels + (size_t)b * 3 * HW, p->width, p->height, &im);
        if (st == IMGD_OK) {
            res->images[b] = (imgd_image_u8){im.w, im.h, im.c, im.px};
            res->n         = b + 1;
        }
    }
    if (st == IMGD_OK) st = infotext(m, p, &res->infotext);
    if (st == IMGD_OK) {
        res->pixels     = pixels;
        pixels          = NULL;
        res->t_encode_s = t_enc;
        res->t_sample_s = t_smp;
        res->t_decode_s = t_dec;
        res->t_total_s  = now_s() - r.t0;
        res->steps_run  = r.steps_run;
        *out            = res;
        res             = NULL;
    }
    imgd_gen_result_free(res);
    imgd_free(pixels);
    imgd_free(cond);
    imgd_free(uncond);
    imgd_free(x);
    imgd_free(noise);
    imgd_free(img);
    imgd_free(mask);
    imgd_free(mask_lat);
    imgd_free(image_lat);
    imgd_free(masked_lat);
    imgd_free(vae_noise);
    imgd_free(r.ctx);
    imgd_free(r.x_unet);
    imgd_free(r.t_unet);
    imgd_free(r.out_unet);
    imgd_sampler_free(smp);
    return st;
}
