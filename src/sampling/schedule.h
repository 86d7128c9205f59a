/* Noise schedules: the tables and step lists diffusers and ComfyUI compute, computed the
 * way they compute them, so timesteps and sigmas match theirs to the last bit where the
 * arithmetic allows.
 *
 * Two tables exist for the same beta schedule:
 *   diffusers  betas from f32-rounded endpoints with the points (and, for scaled_linear,
 *              their squares) rounded to f32 once; alphas = 1 - betas and alphas_cumprod
 *              in f32 (cumprod accumulating in double, as torch's CPU kernel does),
 *              sigmas = sqrt((1 - ac) / ac) in f32; spacings from numpy in float64. This
 *              reproduces every sigma the conformance goldens pin, bit for bit.
 *   ComfyUI    the LDM make_beta_schedule in float64 (its "linear" is diffusers'
 *              scaled_linear), sigmas and log-sigmas rounded to f32 at the end.
 * torch.linspace (ComfyUI's schedulers) is emulated with the AVX2 kernel's vector width (8
 * lanes for float, 4 for double), which decides how some elements round; AVX-512 machines
 * use 16/8 lanes and may differ in the last bit (a relative 1e-7 effect).
 *
 * Arrays are caller-provided; nothing here allocates except where a status is returned. */
#ifndef IMGD_SAMPLING_SCHEDULE_H
#define IMGD_SAMPLING_SCHEDULE_H

#include <stdbool.h>

#include "base/base.h"

/* diffusers' beta_schedule. Append-only. */
typedef enum imgd_beta_schedule {
    IMGD_BETA_SCALED_LINEAR     = 1, /* linspace(sqrt(start), sqrt(end))^2; LDM "linear" */
    IMGD_BETA_LINEAR            = 2, /* linspace(start, end) */
    IMGD_BETA_SQUAREDCOS_CAP_V2 = 3, /* betas_for_alpha_bar, cosine, max_beta 0.999 */
    IMGD_BETA_COUNT
} imgd_beta_schedule;

/* diffusers' timestep_spacing. Append-only. */
typedef enum imgd_spacing {
    IMGD_SPACING_LINSPACE = 1,
    IMGD_SPACING_LEADING  = 2,
    IMGD_SPACING_TRAILING = 3,
    IMGD_SPACING_COUNT
} imgd_spacing;

/* What --schedule selects. DEFAULT, LEADING, TRAILING and LINSPACE run diffusers' scheduler
 * class for the sampler (DEFAULT with the spacing of the scheduler config); the others are
 * ComfyUI's schedulers driving k-diffusion samplers. Append-only. */
typedef enum imgd_schedule_kind {
    IMGD_SCHEDULE_DEFAULT      = 1,
    IMGD_SCHEDULE_NORMAL       = 2,
    IMGD_SCHEDULE_KARRAS       = 3,
    IMGD_SCHEDULE_EXPONENTIAL  = 4,
    IMGD_SCHEDULE_SGM_UNIFORM  = 5,
    IMGD_SCHEDULE_SIMPLE       = 6,
    IMGD_SCHEDULE_DDIM_UNIFORM = 7,
    IMGD_SCHEDULE_LEADING      = 8,
    IMGD_SCHEDULE_TRAILING     = 9,
    IMGD_SCHEDULE_LINSPACE     = 10,
    IMGD_SCHEDULE_COUNT
} imgd_schedule_kind;

/* Most train timesteps any table here accepts (a configured cap; real models use 1000). */
#define IMGD_SCHEDULE_TRAIN_MAX 100000

/* ---- names (generated from one table each) --------------------------------------- */

const char *imgd_schedule_kind_name(imgd_schedule_kind k); /* NULL when unknown */
const char *imgd_schedule_kind_doc(imgd_schedule_kind k);
/* Parses a --schedule name; IMGD_E_INVALID_ARG listing the names. */
imgd_status imgd_schedule_kind_parse(const char *name, imgd_schedule_kind *out);
/* True for the kinds that run diffusers' scheduler classes. */
bool imgd_schedule_kind_is_diffusers(imgd_schedule_kind k);

const char *imgd_beta_schedule_name(imgd_beta_schedule b);
imgd_status imgd_beta_schedule_parse(const char *name, imgd_beta_schedule *out);
const char *imgd_spacing_name(imgd_spacing s);
imgd_status imgd_spacing_parse(const char *name, imgd_spacing *out);

/* ---- numeric building blocks (exposed for tests) ---------------------------------- */

/* torch.linspace(start, end, steps) in float32 / float64 on CPU (steps >= 1). */
void imgd_schedule_torch_linspace(float start, float end, int64_t steps, float *out);
void imgd_schedule_torch_linspace_f64(double start, double end, int64_t steps, double *out);

/* numpy.linspace(start, stop, num, endpoint) in float64. */
void imgd_schedule_np_linspace(double start, double stop, int64_t num, bool endpoint, double *out);

/* numpy.arange(start, stop, step) for float64: writes min(len, cap) values, returns len. */
size_t imgd_schedule_np_arange(double start, double stop, double step, double *out, size_t cap);

/* numpy.interp(x, arange(n), fp) in float64. */
double imgd_schedule_np_interp(double x, const float *fp, size_t n);

/* ---- diffusers tables -------------------------------------------------------------- */

/* diffusers' rescale_zero_terminal_snr applied to an alphas_cumprod table of n entries in
 * place (sqrt(alphas_cumprod) shifted so the last is 0 and scaled so the first is kept,
 * then the cumulative product of the implied alphas), with the last entry set to 2^-24
 * as diffusers' Euler scheduler does (a finite last sigma). */
void imgd_schedule_rescale_zero_snr(float *ac, size_t n);

/* alphas_cumprod[n_train] as diffusers builds it (torch f32). IMGD_E_INVALID_ARG for
 * n_train outside 2..IMGD_SCHEDULE_TRAIN_MAX or betas outside (0, 1). */
imgd_status imgd_schedule_alphas_cumprod(imgd_beta_schedule b, int32_t n_train, double beta_start,
                                         double beta_end, float *out);

/* sigmas[i] = sqrt((1 - ac[i]) / ac[i]) in f32 (torch). */
void imgd_schedule_sigmas(const float *ac, size_t n, float *out);

/* Timesteps of a diffusers spacing, as float64 (integral for leading/trailing and
 * rounded linspace; fractional for plain linspace). plus_one selects the
 * DPMSolver/UniPC form (steps + 1 points, the last dropped). round_linspace rounds
 * linspace values (DDIM, DDPM, PNDM). Writes `steps` values in descending order (PNDM
 * reverses them itself). */
void imgd_schedule_spacing_timesteps(imgd_spacing sp, int32_t n_train, int32_t steps,
                                     int32_t steps_offset, bool plus_one, bool round_linspace,
                                     double *out);

/* diffusers' _sigma_to_t: fractional timestep of sigma by log-sigma interpolation
 * (log_sigmas = log of the f32 sigma table, ascending with t). */
double imgd_schedule_sigma_to_t(double sigma, const float *log_sigmas, size_t n);

/* diffusers' _convert_to_karras in float64: n sigmas from sigma_max down to sigma_min. */
void imgd_schedule_karras_f64(double sigma_min, double sigma_max, int32_t n, double *out);

/* ---- ComfyUI (ModelSamplingDiscrete + comfy/samplers.py schedulers) ---------------- */

/* The float64 LDM table rounded to f32: sigmas[n_train] and log_sigmas[n_train]. */
imgd_status imgd_schedule_comfy_table(imgd_beta_schedule b, int32_t n_train, double beta_start,
                                      double beta_end, float *sigmas, float *log_sigmas);

/* ModelSamplingDiscrete.sigma(t) (log-linear interpolation in f32) and .timestep(sigma)
 * (index of the nearest log-sigma). */
float   imgd_schedule_comfy_sigma(const float *log_sigmas, size_t n, float t);
int32_t imgd_schedule_comfy_timestep(const float *log_sigmas, size_t n, float sigma);

/* One of ComfyUI's schedulers (NORMAL, KARRAS, EXPONENTIAL, SGM_UNIFORM, SIMPLE,
 * DDIM_UNIFORM) for `steps` steps: writes the sigma list (its last entry 0) into out,
 * which must hold steps + 2 floats, and returns its length (steps + 1, except
 * ddim_uniform: one per table stride, up to steps + 2). 0 for a kind that is not a ComfyUI
 * scheduler, steps < 1, or a ddim_uniform list longer than steps + 2 (steps > n / 2). */
size_t imgd_schedule_comfy(imgd_schedule_kind kind, const float *sigmas, const float *log_sigmas,
                           size_t n, int32_t steps, float *out);

#endif
