/* Samplers: the denoising loop of Stable Diffusion, model-agnostic. The sampler owns the
 * schedule and the update rule; the pipeline supplies a denoiser callback (the UNet with
 * classifier-free guidance), a noise source (the RNG, or recorded draws) and an optional
 * per-step callback.
 *
 * Two families of semantics, chosen by the schedule:
 *   diffusers  (schedule default / leading / trailing / linspace): the scheduler class
 *              diffusers 0.27 uses for the sampler (euler -> EulerDiscreteScheduler,
 *              euler_ancestral -> EulerAncestralDiscrete, heun -> HeunDiscrete,
 *              dpmpp_2m -> DPMSolverMultistep dpmsolver++ midpoint, dpmpp_2m_sde -> the
 *              same with sde-dpmsolver++, dpmpp_sde -> DPMSolverSDE, ddim -> DDIM,
 *              ddpm -> DDPM, pndm -> PNDM with skip_prk_steps, lcm -> LCM, uni_pc ->
 *              UniPCMultistep bh2), built from the scheduler config in the params, with
 *              the same float32 operations in the same order as torch, so a run fed the
 *              same model outputs and noise reproduces diffusers' latents to the last bit
 *              or close to it. One loop iteration per entry of timesteps (Heun and
 *              DPMSolverSDE make two per step after the first).
 *   ComfyUI    (normal, karras, exponential, sgm_uniform, simple, ddim_uniform): ComfyUI's
 *              scheduler over ModelSamplingDiscrete's float64 table, driving the
 *              k-diffusion sampler (sample_euler, sample_euler_ancestral, sample_heun,
 *              sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_sde, sample_lcm,
 *              sample_ddpm; ddim runs sample_euler, as ComfyUI's ddim does; uni_pc runs
 *              UniPC bh1 of order min(3, steps - 1) as ComfyUI's does). The UNet gets
 *              ComfyUI's integer timestep (nearest log-sigma); x lives in k-diffusion
 *              space (x = latent + sigma * noise). pndm has no k-diffusion form:
 *              IMGD_E_UNSUPPORTED.
 * The stochastic k-diffusion samplers that ComfyUI drives with a Brownian tree
 * (dpmpp_sde, dpmpp_2m_sde) take plain standard-normal draws from the noise callback here,
 * as do diffusers' DPMSolverSDE (torchsde's tree is not reproduced).
 *
 * Batches: x is any number of latents laid end to end (all share the schedule); n counts
 * floats. A sampler object is immutable after imgd_sampler_new: several runs may use it
 * at once from different threads. */
#ifndef IMGD_SAMPLING_SAMPLER_H
#define IMGD_SAMPLING_SAMPLER_H

#include <stdbool.h>

#include "sampling/rng.h"
#include "sampling/schedule.h"

/* CLI names: euler, euler_ancestral, heun, dpmpp_2m, dpmpp_2m_sde, dpmpp_sde, ddim, ddpm,
 * pndm, lcm, uni_pc. Append-only. */
typedef enum imgd_sampler_kind {
    IMGD_SAMPLER_EULER           = 1,
    IMGD_SAMPLER_EULER_ANCESTRAL = 2,
    IMGD_SAMPLER_HEUN            = 3,
    IMGD_SAMPLER_DPMPP_2M        = 4,
    IMGD_SAMPLER_DPMPP_2M_SDE    = 5,
    IMGD_SAMPLER_DPMPP_SDE       = 6,
    IMGD_SAMPLER_DDIM            = 7,
    IMGD_SAMPLER_DDPM            = 8,
    IMGD_SAMPLER_PNDM            = 9,
    IMGD_SAMPLER_LCM             = 10,
    IMGD_SAMPLER_UNI_PC          = 11,
    IMGD_SAMPLER_COUNT
} imgd_sampler_kind;

/* What the denoiser returns (diffusers prediction_type). Append-only. */
typedef enum imgd_sampler_pred {
    IMGD_PREDICTION_EPSILON = 1,
    IMGD_PREDICTION_V       = 2, /* v_prediction (SD 2.x 768) */
    IMGD_PREDICTION_SAMPLE  = 3, /* x0 ("sample"); not every sampler accepts it */
    IMGD_PREDICTION_COUNT
} imgd_sampler_pred;

typedef struct imgd_sampler_params {
    imgd_sampler_kind  kind;
    imgd_schedule_kind schedule;
    int32_t            steps;    /* inference steps, 1..1000 (and <= num_train_timesteps) */
    float              eta;      /* k-diffusion ancestral/SDE eta, >= 0; 1 = ComfyUI */
    float              ddim_eta; /* DDIM eta (diffusers), 0 = deterministic */
    /* scheduler config (diffusers scheduler_config.json; defaults = SD 1.5's) */
    int32_t            num_train_timesteps;  /* 1000 */
    double             beta_start, beta_end; /* 0.00085, 0.012 */
    imgd_beta_schedule beta_schedule;        /* scaled_linear */
    imgd_sampler_pred  prediction;           /* epsilon */
    imgd_spacing       spacing;              /* 0 = the class default (linspace for euler,
                                                euler_ancestral, heun, dpm*, uni_pc;
                                                leading for ddim, ddpm, pndm, lcm) */
    int32_t steps_offset;                    /* 1 (SD 1.5 config) */
    int32_t solver_order;                    /* dpmpp_2m*, uni_pc; 0 = 2 */
    int32_t original_inference_steps;        /* lcm; 0 = 50 */
    float   timestep_scaling;                /* lcm; 0 = 10 */
    bool    set_alpha_to_one;                /* ddim, pndm, lcm final alpha (false) */
    bool    use_karras_sigmas;               /* diffusers' Karras option (euler, heun,
                                                dpm*, uni_pc) */
    bool rescale_zero_snr;                   /* rescale_betas_zero_snr: the schedule ends at
                                                zero SNR (Lin et al. 2023); its last
                                                alphas_cumprod becomes 2^-24 as diffusers'
                                                Euler sets it, so sigmas stay finite */
} imgd_sampler_params;

/* SD 1.5's scheduler config, euler, schedule default, 20 steps, eta 1, ddim_eta 0. */
imgd_sampler_params imgd_sampler_params_default(void);

typedef struct imgd_sampler imgd_sampler;

/* The model call. x_in: the model input for this evaluation (already scaled as the
 * scheduler's scale_model_input / ComfyUI's calculate_input does; always the VP sample
 * alpha * x0 + sqrt(1 - alpha^2) * eps with alpha = 1 / sqrt(sigma^2 + 1)); t: the
 * timestep value the UNet embeds (fractional for Euler-family diffusers schedulers);
 * sigma: the noise level of this evaluation in k-diffusion units (for DDIM, DDPM, PNDM
 * and LCM sqrt((1 - ac_t) / ac_t)); out: receives n floats of model output in
 * params.prediction's parameterisation (after CFG). Borrowed pointers, valid for the
 * call only. Return IMGD_OK or an error to stop the run (it is passed through). */
typedef imgd_status (*imgd_sampler_denoise_fn)(void *user, const float *x_in, size_t n, float t,
                                               float sigma, float *out);
/* Supplies the next random draw: n standard-normal floats (one torch.randn of x's shape). */
typedef imgd_status (*imgd_sampler_noise_fn)(void *user, float *out, size_t n);
/* Called after each loop iteration (step = its index in timesteps, 0-based; steps = the
 * number of iterations the full schedule has). x may be modified in place (inpainting
 * blends the known region here). Return non-OK to stop (e.g. IMGD_E_CANCELLED). */
typedef imgd_status (*imgd_sampler_step_fn)(void *user, int32_t step, int32_t steps, float *x,
                                            size_t n);

typedef struct imgd_sampler_io {
    imgd_sampler_denoise_fn denoise; /* required */
    void                   *denoise_user;
    imgd_sampler_noise_fn   noise; /* required when the sampler draws noise, else may be NULL */
    void                   *noise_user;
    imgd_sampler_step_fn    on_step; /* may be NULL */
    void                   *step_user;
} imgd_sampler_io;

/* A noise callback drawing from an imgd_rng (user = imgd_rng *). Cannot fail. */
imgd_status imgd_sampler_noise_from_rng(void *user, float *out, size_t n);

/* Builds a sampler: the schedule is computed here. p is copied.
 * IMGD_E_INVALID_ARG (steps, eta, config out of range; the message names the field),
 * IMGD_E_UNSUPPORTED (pndm with a ComfyUI schedule, a prediction type a sampler lacks),
 * IMGD_E_NOMEM. *out written only on success; free with imgd_sampler_free. */
imgd_status imgd_sampler_new(const imgd_sampler_params *p, imgd_sampler **out);
void        imgd_sampler_free(imgd_sampler *s);

/* The params it was built with (class defaults resolved). */
const imgd_sampler_params *imgd_sampler_config(const imgd_sampler *s);

/* True when the run follows k-diffusion (a ComfyUI schedule). */
bool imgd_sampler_is_kdiffusion(const imgd_sampler *s);

/* diffusers' scheduler.timesteps (one per loop iteration) / ComfyUI's timestep of each
 * sigma but the last. *t is borrowed until imgd_sampler_free. Returns the count. */
size_t imgd_sampler_timesteps(const imgd_sampler *s, const float **t);

/* diffusers' scheduler.sigmas (empty for DDIM, DDPM, PNDM, LCM: they have none) /
 * ComfyUI's sigma list (last entry 0). Borrowed. Returns the count. */
size_t imgd_sampler_sigmas(const imgd_sampler *s, const float **sigmas);

/* Number of loop iterations of a full run (= the timesteps count). */
int32_t imgd_sampler_iterations(const imgd_sampler *s);

/* Initial latents for txt2img are noise * init_noise_sigma (diffusers' property; ComfyUI:
 * sqrt(1 + sigma_0^2) when sigma_0 is the table's largest sigma, else sigma_0). */
float imgd_sampler_init_noise_sigma(const imgd_sampler *s);

/* img2img/inpaint: the first loop iteration for `strength` in (0, 1], as diffusers'
 * get_timesteps: t_start = steps - min(int(steps * strength), steps), times the
 * scheduler order (2 for heun and dpmpp_sde in diffusers mode). steps when nothing runs. */
int32_t imgd_sampler_first_step(const imgd_sampler *s, double strength);

/* scheduler.add_noise(x0, noise, timesteps[step]) into out (may alias x0): sigma-based
 * samplers x0 + sigma * noise, the others sqrt(ac) * x0 + sqrt(1 - ac) * noise.
 * IMGD_E_INVALID_ARG for a step outside the schedule. */
imgd_status imgd_sampler_add_noise(const imgd_sampler *s, const float *x0, const float *noise,
                                   size_t n, int32_t step, float *out);

/* Runs the loop from iteration first_step (0 for txt2img, imgd_sampler_first_step() for
 * img2img) to the end, updating x (n floats) in place; x must already be the starting
 * latents (noise * init_noise_sigma, or add_noise's result). Returns IMGD_OK, the first
 * error a callback returned, IMGD_E_INVALID_ARG (first_step out of range, NULL noise for a
 * sampler that draws), IMGD_E_NOMEM. On error x holds the partial result. Thread-safety:
 * safe to run one sampler from several threads on different x. */
imgd_status imgd_sampler_run(const imgd_sampler *s, float *x, size_t n, int32_t first_step,
                             const imgd_sampler_io *io);

/* ---- names (from one table) ------------------------------------------------------- */

const char *imgd_sampler_kind_name(imgd_sampler_kind k); /* NULL when unknown */
const char *imgd_sampler_kind_doc(imgd_sampler_kind k);
imgd_status imgd_sampler_kind_parse(const char *name, imgd_sampler_kind *out);
const char *imgd_sampler_pred_name(imgd_sampler_pred p); /* epsilon, v_prediction, sample */
imgd_status imgd_sampler_pred_parse(const char *name, imgd_sampler_pred *out);

#endif
