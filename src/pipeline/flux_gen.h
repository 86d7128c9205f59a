/* FLUX.1 generation from text embeddings: FluxPipeline's denoising loop and decode, i.e.
 * everything after the text encoders. Given the T5 output (prompt_embeds), the CLIP pooled
 * output and the initial packed latents (noise), it runs the transformer graph (built and
 * planned once, replayed every step) under the flow-matching Euler schedule (dynamic
 * shifting from the image size, FluxPipeline's linspace sigmas), unpacks the latents,
 * undoes the VAE scale and shift, decodes and returns the image in [0, 1].
 *
 *     imgd_flux_gen_params p = imgd_flux_gen_params_default();
 *     p.transformer = tb; p.cfg = &fcfg; p.vae = vb; p.vae_cfg = &vcfg; p.be = be;
 *     p.height = p.width = 1024; p.steps = 28; p.guidance = 3.5f;
 *     imgd_flux_generate(&p, embeds, pooled, 1, 512, latents, image);
 *
 * Thread-safety: one call at a time per binder and backend (they are used unsynchronised). */
#ifndef IMGD_PIPELINE_FLUX_GEN_H
#define IMGD_PIPELINE_FLUX_GEN_H

#include <stdatomic.h>

#include "models/flux.h"
#include "models/vae.h"
#include "sampling/flow.h"
#include "tensor/backend.h"

/* A planned transformer graph kept between calls (imgd_flux_gen_params.keep). */
typedef struct imgd_flux_denoiser imgd_flux_denoiser;

/* Releases a kept graph. NULL is a no-op. */
void imgd_flux_denoiser_free(imgd_flux_denoiser *d);

typedef struct imgd_flux_gen_params {
    imgd_wbind          *transformer;          /* required; canonical "transformer.*" (borrowed) */
    const imgd_flux_cfg *cfg;                  /* required */
    imgd_wbind          *vae;                  /* NULL: no decode (image_out must be NULL) */
    const imgd_vae_cfg  *vae_cfg;              /* required with vae */
    float                vae_scale, vae_shift; /* 0.3611, 0.1159 */
    imgd_backend        *be;                   /* required (borrowed) */
    imgd_backend        *vae_be;               /* the decode's; NULL = be */
    imgd_flow_params     flow;                 /* scheduler_config.json; default FLUX.1-dev */
    int32_t              steps;                /* 1..1000 (dev 28-50, schnell 4) */
    float                guidance;             /* distilled guidance (dev only; 3.5) */
    int64_t              height, width;        /* image pixels, multiples of 16 */
    const atomic_int    *cancel;               /* borrowed, polled between nodes; NULL = none */
    /* called after each step with the packed latents; may be NULL; non-OK stops the run */
    imgd_flow_step_fn on_step;
    void             *step_user;
    /* NULL: the transformer graph is built, planned and freed per call. Else *keep holds the
     * graph between calls (NULL at first): reused while batch, txt_len, height and width
     * stay the same, rebuilt otherwise (a GPU backend then uploads the weights once, not per
     * call). It belongs to one transformer, cfg and backend; the caller frees it with
     * imgd_flux_denoiser_free. */
    imgd_flux_denoiser **keep;
    /* img2img (FluxImg2ImgPipeline): the packed image latents [B, N, 64] (VAE posterior
     * sample, shifted and scaled) and the first iteration; the run starts from
     * sigma_first * latents + (1 - sigma_first) * init_latents (scale_noise) and runs
     * iterations first_step..steps-1. NULL / 0: txt2img. */
    const float *init_latents;
    int32_t      first_step;
} imgd_flux_gen_params;

/* FLUX.1-dev defaults: flow = imgd_flow_params_default(), 28 steps, guidance 3.5, 1024 x
 * 1024, VAE scale 0.3611 / shift 0.1159; pointers NULL. */
imgd_flux_gen_params imgd_flux_gen_params_default(void);

/* Runs the loop and the decode for B prompts.
 *   embeds   [B, T, cfg->context_dim] T5 output, pooled [B, cfg->pooled_dim] CLIP pooled
 *            (borrowed, read during the call).
 *   latents  [B, (height/16)(width/16), 64] packed initial latents (FluxPipeline: noise,
 *            not multiplied by any sigma); updated in place to the final latents.
 *   image    NULL, or [B, 3, height, width] receiving clamp(decode / 2 + 0.5, 0, 1).
 * Returns IMGD_OK; IMGD_E_INVALID_ARG naming the bad parameter (sizes, a missing binder,
 * an image buffer without a VAE); the transformer's / VAE's build errors (IMGD_E_FORMAT for
 * weights that do not fit); IMGD_E_CANCELLED; IMGD_E_NOMEM; backend errors. On error the
 * latents hold the partial result and image is undefined. */
imgd_status imgd_flux_generate(const imgd_flux_gen_params *p, const float *embeds,
                               const float *pooled, int64_t batch, int64_t txt_len, float *latents,
                               float *image);

/* Builds, plans and allocates the transformer graph for batch x txt_len prompts at
 * p->height x p->width into *p->keep (required), as imgd_flux_generate would on its first
 * call, without running it: a later imgd_flux_generate with the same shape only runs steps
 * (benchmarks time the two apart). A kept graph of another shape is replaced. Returns
 * IMGD_OK, IMGD_E_INVALID_ARG (as imgd_flux_generate; keep NULL), the build and plan errors;
 * *p->keep is then NULL. */
imgd_status imgd_flux_denoiser_prepare(const imgd_flux_gen_params *p, const float *embeds,
                                       const float *pooled, int64_t batch, int64_t txt_len);

/* The planned transformer graph of a kept denoiser (for FLOP counts and tests); borrowed,
 * valid until imgd_flux_denoiser_free(d). NULL for NULL. */
const imgd_graph *imgd_flux_denoiser_graph(const imgd_flux_denoiser *d);

#endif
