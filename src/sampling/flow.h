/* Flow matching: diffusers' FlowMatchEulerDiscreteScheduler (0.30) as FluxPipeline and
 * StableDiffusion3Pipeline drive it. The model predicts a velocity v; a step is the Euler
 * update x <- x + (sigma_{i+1} - sigma_i) * v; the model's timestep input is sigma * 1000
 * (FLUX divides it by 1000 again: imgd_flow_model_t).
 *
 * Schedules, computed as diffusers computes them:
 *   base sigmas   FluxPipeline passes linspace(1, 1/N, N) (float64); without them (SD3) the
 *                 scheduler's own linspace(sigma_max * T, sigma_min * T, N) / T over its
 *                 f32 training table (which carries the static shift when dynamic shifting
 *                 is off, so that shift applies twice: diffusers' behaviour).
 *   shift         dynamic: sigma' = e^mu / (e^mu + (1/sigma - 1)), mu from the image
 *                 sequence length (imgd_flow_mu); static: shift*sigma / (1 + (shift-1)*sigma).
 *                 Both in float64, then rounded to f32; timesteps = sigma' * T in f32 and
 *                 sigmas gets a final 0.
 *
 * A schedule is immutable after imgd_flow_schedule_new: safe to share between threads. */
#ifndef IMGD_SAMPLING_FLOW_H
#define IMGD_SAMPLING_FLOW_H

#include <stdbool.h>

#include "base/base.h"

/* scheduler_config.json of a flow-matching model. */
typedef struct imgd_flow_params {
    int32_t num_train_timesteps;  /* T, 1000 */
    double  shift;                /* static shift (> 0), 1.0 = none; SD3 3.0 */
    double  base_shift;           /* dynamic shifting: mu at base_image_seq_len (0.5) */
    double  max_shift;            /* mu at max_image_seq_len (1.15) */
    int32_t base_image_seq_len;   /* 256 */
    int32_t max_image_seq_len;    /* 4096 */
    bool    use_dynamic_shifting; /* FLUX.1-dev: true; schnell: false */
} imgd_flow_params;

/* FLUX.1-dev's config: T 1000, shift 3.0 (unused), dynamic shifting 0.5..1.15 over
 * 256..4096 tokens. */
imgd_flow_params imgd_flow_params_default(void);

/* FluxPipeline's calculate_shift: mu = m * image_seq_len + b on the line through
 * (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), extrapolated outside
 * (float64). image_seq_len = packed image tokens = (H/16)(W/16). */
double imgd_flow_mu(const imgd_flow_params *p, int64_t image_seq_len);

/* Reads a FlowMatchEulerDiscreteScheduler scheduler_config.json (text[0..len), `what` names
 * it in errors): fields absent from it keep diffusers' class defaults (T 1000, shift 1.0,
 * no dynamic shifting, 0.5 / 1.15 over 256 / 4096). IMGD_E_FORMAT (not JSON, or a field of
 * the wrong type: the message names it), IMGD_E_UNSUPPORTED (another _class_name),
 * IMGD_E_INVALID_ARG (a value out of range). *out written only on success. */
imgd_status imgd_flow_params_from_json(const char *what, const char *text, size_t len,
                                       imgd_flow_params *out);

typedef struct imgd_flow_schedule imgd_flow_schedule;

/* Builds the schedule of `steps` (1..1000) iterations.
 *   sigmas  NULL: the scheduler's own spacing (SD3); else `steps` base sigmas in (0, 1]
 *           (FluxPipeline: imgd_flow_flux_sigmas), copied.
 *   mu      used only with dynamic shifting (finite).
 * IMGD_E_INVALID_ARG naming the bad field (steps, shift, a sigma outside (0, 1], a non-
 * finite mu, a config whose base and max sequence lengths coincide); IMGD_E_NOMEM. *out
 * written only on success; free with imgd_flow_schedule_free. */
imgd_status imgd_flow_schedule_new(const imgd_flow_params *p, int32_t steps, const double *sigmas,
                                   double mu, imgd_flow_schedule **out);
void        imgd_flow_schedule_free(imgd_flow_schedule *s);

/* FluxPipeline's base sigmas: out[i] = linspace(1, 1/steps, steps)[i] (numpy float64). */
void imgd_flow_flux_sigmas(int32_t steps, double *out);

/* The iterations (= steps), scheduler.timesteps (count = steps) and scheduler.sigmas
 * (count = steps + 1, last 0). Borrowed until imgd_flow_schedule_free. */
int32_t      imgd_flow_steps(const imgd_flow_schedule *s);
const float *imgd_flow_timesteps(const imgd_flow_schedule *s);
const float *imgd_flow_sigmas(const imgd_flow_schedule *s);

/* The timestep FluxPipeline feeds the transformer at iteration i: timesteps[i] / 1000 in
 * f32 (the transformer multiplies it by 1000 again). */
float imgd_flow_model_t(const imgd_flow_schedule *s, int32_t i);

/* One Euler step of iteration i (0 <= i < steps) on n floats in place:
 * x += (sigmas[i+1] - sigmas[i]) * v, in f32 as torch computes it. */
void imgd_flow_step(const imgd_flow_schedule *s, int32_t i, float *x, const float *v, size_t n);

/* img2img start (scale_noise): out = sigma_i * noise + (1 - sigma_i) * x0 (out may alias
 * x0 or noise). IMGD_E_INVALID_ARG for i outside the schedule. */
imgd_status imgd_flow_scale_noise(const imgd_flow_schedule *s, int32_t i, const float *x0,
                                  const float *noise, size_t n, float *out);

/* The model call of a run: x [n] the current latents, t the model timestep
 * (imgd_flow_model_t), v receives n floats of velocity. Return non-OK to stop. */
typedef imgd_status (*imgd_flow_denoise_fn)(void *user, const float *x, size_t n, float t,
                                            float *v);
/* Called after each step (0-based); may modify x. Return non-OK to stop. */
typedef imgd_status (*imgd_flow_step_fn)(void *user, int32_t step, int32_t steps, float *x,
                                         size_t n);

/* Runs iterations first_step..steps-1 on x (n floats, in place): the denoise callback, then
 * imgd_flow_step, then on_step (may be NULL). v_scratch: n floats the caller provides.
 * Returns IMGD_OK, IMGD_E_INVALID_ARG (first_step outside [0, steps], NULL x/denoise), or
 * the first error a callback returned (x then holds the partial result). */
imgd_status imgd_flow_run(const imgd_flow_schedule *s, float *x, size_t n, int32_t first_step,
                          float *v_scratch, imgd_flow_denoise_fn denoise, void *denoise_user,
                          imgd_flow_step_fn on_step, void *step_user);

#endif
