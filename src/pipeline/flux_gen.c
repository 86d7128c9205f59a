/* FLUX.1 generation from text embeddings (see flux_gen.h), following diffusers 0.30
 * pipelines/flux/pipeline_flux.py: sigmas linspace(1, 1/N, N), mu from the packed image
 * sequence length, model timestep t / 1000, guidance as given, Euler steps, then
 * unpack -> latents / scale + shift -> VAE decode -> clamp(x / 2 + 0.5). */
#include "pipeline/flux_gen.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "formats/dtype.h"
#include "tensor/ops.h"

imgd_flux_gen_params imgd_flux_gen_params_default(void) {
    imgd_flux_gen_params p = {0};
    p.flow                 = imgd_flow_params_default();
    p.vae_scale            = 0.3611f;
    p.vae_shift            = 0.1159f;
    p.steps                = 28;
    p.guidance             = 3.5f;
    p.height               = 1024;
    p.width                = 1024;
    return p;
}

/* ---- the transformer, replayed per step --------------------------------------------------- */

struct imgd_flux_denoiser {
    imgd_graph  *g;
    imgd_tensor *x, *t, *ctx, *pooled, *out;
    float       *tv, *gv, *ids; /* [B] timesteps, [B] guidance, [T + N, 3] ids */
    int64_t      B, T, h, w;    /* the shape it was built for (h, w: latent pixels) */
};
typedef struct imgd_flux_denoiser denoiser;

void imgd_flux_denoiser_free(imgd_flux_denoiser *d) {
    if (!d) return;
    imgd_graph_free(d->g);
    imgd_free(d->tv);
    imgd_free(d->gv);
    imgd_free(d->ids);
    imgd_free(d);
}

/* Whether the transformer's quantized weights stay in their blocks (linear_quant, on a
 * backend that runs it for every quantized type the weights use: cpu, ref, cuda) rather than
 * each being dequantized to an f32 activation before its matmul (a backend that lacks
 * linear_quant for one of the types). Real FLUX.1-dev is 12B parameters: 48 GB in f32. */
static bool fuse_quant(const imgd_flux_gen_params *p) {
    bool asked[IMGD_DTYPE_COUNT] = {false};
    for (size_t i = 0;; i++) {
        const char *name = imgd_wbind_name_at(p->transformer, i);
        imgd_dtype  dt;
        if (!name) break;
        if (strncmp(name, "transformer.", 12) != 0 ||
            !imgd_wbind_dtype(p->transformer, name, &dt) || (unsigned)dt >= IMGD_DTYPE_COUNT ||
            asked[dt] || !imgd_dtype_traits_of(dt)->is_quant)
            continue;
        asked[dt] = true;
        if (!imgd_backend_supports_linear_quant(p->be, dt)) return false;
    }
    return true;
}

static imgd_status denoiser_build(denoiser *d, const imgd_flux_gen_params *p, int64_t B,
                                  int64_t T) {
    const imgd_flux_cfg *c = p->cfg;
    int64_t              h = p->height / 8, w = p->width / 8, N = (h / 2) * (w / 2);
    imgd_graph_params    gp = imgd_graph_params_default();
    gp.fuse_quant_linear    = fuse_quant(p);
    imgd_status st          = imgd_graph_new(&gp, &d->g);
    if (st != IMGD_OK) return st;
    d->B   = B;
    d->T   = T;
    d->h   = h;
    d->w   = w;
    d->tv  = imgd_calloc((size_t)B, sizeof *d->tv);
    d->gv  = imgd_calloc((size_t)B, sizeof *d->gv);
    d->ids = imgd_malloc((size_t)(T + N) * 3 * sizeof *d->ids);
    if (!d->tv || !d->gv || !d->ids) return imgd_fail(IMGD_E_NOMEM, "flux: out of memory");
    imgd_flux_ids(T, h, w, d->ids);
    imgd_graph      *g  = d->g;
    imgd_flux_inputs in = {0};
    in.x = d->x = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 3, (int64_t[]){B, N, c->in_channels});
    in.t = d->t = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){B});
    in.ctx      = d->ctx =
        imgd_graph_input(g, "ctx", IMGD_DTYPE_F32, 3, (int64_t[]){B, T, c->context_dim});
    in.pooled = d->pooled =
        imgd_graph_input(g, "pooled", IMGD_DTYPE_F32, 2, (int64_t[]){B, c->pooled_dim});
    in.ids = imgd_graph_input(g, "ids", IMGD_DTYPE_F32, 2, (int64_t[]){T + N, 3});
    if (c->guidance_embed)
        in.guidance = imgd_graph_input(g, "guidance", IMGD_DTYPE_F32, 1, (int64_t[]){B});
    st = imgd_graph_status(g);
    if (st == IMGD_OK) st = imgd_tensor_bind(in.ids, d->ids);
    if (st == IMGD_OK) st = imgd_tensor_bind(d->t, d->tv);
    if (st == IMGD_OK && in.guidance) st = imgd_tensor_bind(in.guidance, d->gv);
    if (st == IMGD_OK)
        st = imgd_flux_build(g, p->transformer, "transformer", c, &in, NULL, &d->out);
    if (st != IMGD_OK) return st;
    imgd_graph_output(g, d->out);
    st = imgd_graph_plan(g, p->be, NULL);
    return st == IMGD_OK ? imgd_graph_alloc(g, NULL, 0) : st;
}

/* A denoiser for the call: the kept one when its shape fits, else a new one (stored in
 * p->keep when given); then this call's embeddings, guidance and cancel flag. */
static imgd_status denoiser_get(denoiser **out, const imgd_flux_gen_params *p, const float *embeds,
                                const float *pooled, int64_t B, int64_t T) {
    denoiser *d = p->keep ? *p->keep : NULL;
    if (d && (d->B != B || d->T != T || d->h != p->height / 8 || d->w != p->width / 8)) {
        imgd_flux_denoiser_free(d);
        d        = NULL;
        *p->keep = NULL;
    }
    imgd_status st = IMGD_OK;
    if (!d) {
        d = imgd_calloc(1, sizeof *d);
        if (!d) return imgd_fail(IMGD_E_NOMEM, "flux: out of memory");
        st = denoiser_build(d, p, B, T);
        if (st != IMGD_OK) {
            imgd_flux_denoiser_free(d);
            return st;
        }
        if (p->keep) *p->keep = d;
    }
    for (int64_t b = 0; b < B; b++) d->gv[b] = p->guidance;
    imgd_graph_set_cancel(d->g, p->cancel);
    st = imgd_tensor_bind(d->ctx, (void *)(uintptr_t)embeds);
    if (st == IMGD_OK) st = imgd_tensor_bind(d->pooled, (void *)(uintptr_t)pooled);
    if (st != IMGD_OK && !p->keep) imgd_flux_denoiser_free(d);
    *out = st == IMGD_OK || p->keep ? d : NULL;
    return st;
}

static imgd_status denoise(void *user, const float *x, size_t n, float t, float *v) {
    denoiser *d = user;
    for (int64_t b = 0; b < d->B; b++) d->tv[b] = t;
    imgd_status st = imgd_tensor_bind(d->x, (void *)(uintptr_t)x);
    if (st == IMGD_OK) st = imgd_graph_compute(d->g);
    return st == IMGD_OK ? imgd_graph_read_f32(d->g, d->out, v, n) : st;
}

/* ---- decode ------------------------------------------------------------------------------- */

static imgd_status decode(const imgd_flux_gen_params *p, const float *latents, int64_t B,
                          float *image) {
    int64_t     h = p->height / 8, w = p->width / 8, zn = B * 16 * h * w;
    float      *z = imgd_malloc((size_t)zn * sizeof *z);
    imgd_graph *g = NULL;
    if (!z) return imgd_fail(IMGD_E_NOMEM, "flux: out of memory for the latents");
    imgd_flux_unpack(latents, B, 16, h, w, z);
    for (int64_t i = 0; i < zn; i++) {
        float q = z[i] / p->vae_scale; /* torch: latents / scaling_factor + shift_factor */
        z[i]    = q + p->vae_shift;
    }
    imgd_status st = imgd_graph_new(NULL, &g);
    if (st == IMGD_OK) {
        imgd_tensor *zt = imgd_graph_input(g, "z", IMGD_DTYPE_F32, 4, (int64_t[]){B, 16, h, w});
        imgd_vae_decode_out o = {0};
        st                    = imgd_graph_status(g);
        if (st == IMGD_OK) st = imgd_tensor_bind(zt, z);
        if (st == IMGD_OK) st = imgd_vae_decode_build(g, p->vae, "vae", p->vae_cfg, zt, &o);
        if (st == IMGD_OK) {
            imgd_graph_output(g, o.image);
            imgd_graph_set_cancel(g, p->cancel);
            st = imgd_graph_plan(g, p->vae_be ? p->vae_be : p->be, NULL);
        }
        if (st == IMGD_OK) st = imgd_graph_alloc(g, NULL, 0);
        if (st == IMGD_OK) st = imgd_graph_compute(g);
        size_t n = (size_t)(B * 3 * p->height * p->width);
        if (st == IMGD_OK) st = imgd_graph_read_f32(g, o.image, image, n);
        for (size_t i = 0; st == IMGD_OK && i < n; i++) {
            float v  = image[i] / 2.0f + 0.5f;
            image[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
    }
    imgd_graph_free(g);
    imgd_free(z);
    return st;
}

/* ---- entry points ------------------------------------------------------------------------- */

static imgd_status check(const imgd_flux_gen_params *p, const float *embeds, const float *pooled,
                         int64_t B, int64_t T, const float *latents, const float *image) {
    if (!p || !p->transformer || !p->cfg || !p->be || !embeds || !pooled || !latents)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flux: transformer, cfg, backend, embeds, pooled and latents are "
                         "required");
    if (image && (!p->vae || !p->vae_cfg))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flux: an image was asked for but no VAE (vae and vae_cfg) was given");
    if (B < 1 || B > 64 || T < 1 || T > 4096)
        return imgd_fail(IMGD_E_INVALID_ARG, "flux: batch %lld (1..64) / txt_len %lld (1..4096)",
                         (long long)B, (long long)T);
    if (p->height < 16 || p->width < 16 || p->height % 16 != 0 || p->width % 16 != 0 ||
        p->height > 8192 || p->width > 8192)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flux: %lld x %lld pixels; FLUX needs multiples of 16 (VAE 8 x 2x2 "
                         "packing), 16..8192",
                         (long long)p->width, (long long)p->height);
    if (p->cfg->in_channels != 64)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "flux: the transformer takes %d input channels; plain txt2img needs 64 "
                         "(FLUX.1 Fill / control variants are not supported here)",
                         (int)p->cfg->in_channels);
    if (image && p->vae_cfg->latent_channels != 16)
        return imgd_fail(IMGD_E_INVALID_ARG, "flux: the VAE has %d latent channels, FLUX uses 16",
                         (int)p->vae_cfg->latent_channels);
    if (image && !(p->vae_scale > 0.0f))
        return imgd_fail(IMGD_E_INVALID_ARG, "flux: vae_scale %g must be positive",
                         (double)p->vae_scale);
    return IMGD_OK;
}

imgd_status imgd_flux_denoiser_prepare(const imgd_flux_gen_params *p, const float *embeds,
                                       const float *pooled, int64_t batch, int64_t txt_len) {
    float       lat = 0.0f; /* check() wants latents; none are read */
    imgd_status st  = check(p, embeds, pooled, batch, txt_len, &lat, NULL);
    if (st != IMGD_OK) return st;
    if (!p->keep) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_flux_denoiser_prepare: keep is NULL");
    denoiser *d = NULL;
    return denoiser_get(&d, p, embeds, pooled, batch, txt_len);
}

const imgd_graph *imgd_flux_denoiser_graph(const imgd_flux_denoiser *d) {
    return d ? d->g : NULL;
}

imgd_status imgd_flux_generate(const imgd_flux_gen_params *p, const float *embeds,
                               const float *pooled, int64_t batch, int64_t txt_len, float *latents,
                               float *image) {
    imgd_status st = check(p, embeds, pooled, batch, txt_len, latents, image);
    if (st != IMGD_OK) return st;
    int64_t             N = (p->height / 16) * (p->width / 16);
    size_t              n = (size_t)(batch * N * 64);
    double              sigmas[1000];
    imgd_flow_schedule *s = NULL;
    denoiser           *d = NULL;
    float              *v = NULL;
    if (p->steps < 1 || p->steps > 1000)
        return imgd_fail(IMGD_E_INVALID_ARG, "flux: steps = %d (expected 1..1000)", (int)p->steps);
    imgd_flow_flux_sigmas(p->steps, sigmas);
    st = imgd_flow_schedule_new(&p->flow, p->steps, sigmas, imgd_flow_mu(&p->flow, N), &s);
    if (st == IMGD_OK) st = denoiser_get(&d, p, embeds, pooled, batch, txt_len);
    if (st == IMGD_OK) {
        v = imgd_malloc(n * sizeof *v);
        if (!v) st = imgd_fail(IMGD_E_NOMEM, "flux: out of memory for the velocity");
    }
    if (st == IMGD_OK && (p->first_step < 0 || p->first_step >= p->steps))
        st = imgd_fail(IMGD_E_INVALID_ARG, "flux: first_step %d: expected 0..%d",
                       (int)p->first_step, (int)p->steps - 1);
    if (st == IMGD_OK && p->init_latents)
        st = imgd_flow_scale_noise(s, p->first_step, p->init_latents, latents, n, latents);
    if (st == IMGD_OK)
        st = imgd_flow_run(s, latents, n, p->first_step, v, denoise, d, p->on_step, p->step_user);
    imgd_free(v);
    if (!p->keep) imgd_flux_denoiser_free(d); /* its activations go before the decode's */
    imgd_flow_schedule_free(s);
    if (st == IMGD_OK && image) st = decode(p, latents, batch, image);
    return st;
}
