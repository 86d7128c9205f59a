/* Internals shared by sampler.c (diffusers schedulers, API) and sampler_kdiff.c
 * (k-diffusion samplers, UniPC). Not for use outside src/sampling. */
#ifndef IMGD_SAMPLING_SAMPLER_IMPL_H
#define IMGD_SAMPLING_SAMPLER_IMPL_H

#include "sampling/sampler.h"

struct imgd_sampler {
    imgd_sampler_params p; /* class defaults resolved */
    bool                kdiff;
    int32_t             order; /* diffusers scheduler.order (1, or 2 for heun/dpmpp_sde) */
    int32_t             iters; /* loop iterations of a full run */
    int32_t             n_train;
    int32_t             ratio;    /* n_train / steps (DDIM, DDPM, PNDM previous timestep) */
    float              *ac;       /* alphas_cumprod[n_train] (diffusers, f32) */
    float               final_ac; /* final_alpha_cumprod (ddim, pndm, lcm) */
    float              *ts;       /* timesteps[iters] as the UNet gets them */
    int32_t            *its;      /* integer timesteps[iters] (ddim, ddpm, pndm, lcm) */
    float              *sig;      /* sigmas[n_sig] (diffusers scheduler.sigmas / ComfyUI) */
    size_t              n_sig;
    float               init_sigma;
    float              *ktab, *klog; /* ComfyUI sigma / log-sigma table [n_train] */
};

/* One run's scratch and state. */
typedef struct imgd_sampler_state {
    const imgd_sampler    *s;
    const imgd_sampler_io *io;
    size_t                 n;
    float                 *xin;   /* model input */
    float                 *mo;    /* model output */
    float                 *noise; /* last draw */
    float                 *b[8];  /* per-sampler history */
} imgd_sampler_state;

/* Calls the denoiser at timestep t and noise level sigma on x, divided by
 * sqrt(sigma^2 + 1) when scale is set (else unchanged); the output lands in r->mo. */
imgd_status imgd_sampler_model(imgd_sampler_state *r, const float *x, float t, float sigma,
                               bool scale);

/* Draws n standard-normal floats into r->noise. */
imgd_status imgd_sampler_draw(imgd_sampler_state *r);

/* Calls on_step when set. */
imgd_status imgd_sampler_notify(imgd_sampler_state *r, int32_t step, float *x);

/* k-diffusion runs (sampler_kdiff.c). */
imgd_status imgd_sampler_run_kdiff(imgd_sampler_state *r, float *x, int32_t first);

/* UniPC over a sigma list (k-diffusion sigmas; x is the VP sample x / sqrt(1 + s^2)):
 * diffusers' UniPCMultistep (bh2, order 2) and ComfyUI's (bh1, order 3) share it.
 * ts[i] is the UNet timestep of sigma i. */
typedef struct imgd_unipc_cfg {
    const float *sig; /* n_sig entries, the last the final target (never 0) */
    const float *ts;  /* n_sig - 1 UNet timesteps */
    int32_t      n_sig;
    int32_t      order; /* max order, 1..3 */
    bool         bh2;   /* B(h) = expm1(h) (bh2) or h (bh1) */
    bool         lower_order_final;
} imgd_unipc_cfg;
imgd_status imgd_sampler_unipc(imgd_sampler_state *r, const imgd_unipc_cfg *c, float *x,
                               int32_t first);

/* x0 from a model output at k-diffusion sigma (VP sample): DPM/UniPC convert_model_output. */
void imgd_sampler_vp_x0(const imgd_sampler *s, float sigma, const float *x, const float *mo,
                        float *x0, size_t n);

#endif
