/* Noise tables and step lists as diffusers (torch f32 + numpy f64) and ComfyUI (LDM f64
 * tables, torch f32 schedulers) compute them. */
#include "sampling/schedule.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"

#if defined(__clang__)
#    pragma STDC FP_CONTRACT OFF
#endif

/* ---------------------------------------------------------------------------------- */
/* Name tables                                                                         */
/* ---------------------------------------------------------------------------------- */

static const struct {
    const char        *name;
    imgd_schedule_kind kind;
    bool               diffusers;
    const char        *doc;
} schedule_rows[] = {
    {"default", IMGD_SCHEDULE_DEFAULT, true,
     "diffusers' scheduler class for the sampler, spacing from the scheduler config"},
    {"normal", IMGD_SCHEDULE_NORMAL, false, "ComfyUI normal: timesteps evenly spaced"},
    {"karras", IMGD_SCHEDULE_KARRAS, false, "ComfyUI karras: Karras et al. rho = 7"},
    {"exponential", IMGD_SCHEDULE_EXPONENTIAL, false, "ComfyUI exponential: log-sigma linear"},
    {"sgm_uniform", IMGD_SCHEDULE_SGM_UNIFORM, false,
     "ComfyUI sgm_uniform: steps + 1 timesteps, the last dropped"},
    {"simple", IMGD_SCHEDULE_SIMPLE, false, "ComfyUI simple: every n-th table sigma"},
    {"ddim_uniform", IMGD_SCHEDULE_DDIM_UNIFORM, false,
     "ComfyUI ddim_uniform: table sigmas at a fixed stride"},
    {"leading", IMGD_SCHEDULE_LEADING, true, "diffusers class with timestep_spacing leading"},
    {"trailing", IMGD_SCHEDULE_TRAILING, true, "diffusers class with timestep_spacing trailing"},
    {"linspace", IMGD_SCHEDULE_LINSPACE, true, "diffusers class with timestep_spacing linspace"},
};
_Static_assert(IMGD_ARRAY_LEN(schedule_rows) == IMGD_SCHEDULE_COUNT - 1,
               "one row per schedule kind");

static int schedule_row(imgd_schedule_kind k) {
    for (size_t i = 0; i < IMGD_ARRAY_LEN(schedule_rows); i++) {
        if (schedule_rows[i].kind == k) return (int)i;
    }
    return -1;
}

const char *imgd_schedule_kind_name(imgd_schedule_kind k) {
    int i = schedule_row(k);
    return i < 0 ? NULL : schedule_rows[i].name;
}

const char *imgd_schedule_kind_doc(imgd_schedule_kind k) {
    int i = schedule_row(k);
    return i < 0 ? NULL : schedule_rows[i].doc;
}

bool imgd_schedule_kind_is_diffusers(imgd_schedule_kind k) {
    int i = schedule_row(k);
    return i >= 0 && schedule_rows[i].diffusers;
}

imgd_status imgd_schedule_kind_parse(const char *name, imgd_schedule_kind *out) {
    for (size_t i = 0; name && i < IMGD_ARRAY_LEN(schedule_rows); i++) {
        if (strcmp(name, schedule_rows[i].name) == 0) {
            *out = schedule_rows[i].kind;
            return IMGD_OK;
        }
    }
    return imgd_fail(IMGD_E_INVALID_ARG,
                     "unknown schedule '%s': expected default, normal, karras, exponential, "
                     "sgm_uniform, simple, ddim_uniform, leading, trailing or linspace",
                     name ? name : "(null)");
}

static const char *const beta_names[] = {NULL, "scaled_linear", "linear", "squaredcos_cap_v2"};
_Static_assert(IMGD_ARRAY_LEN(beta_names) == IMGD_BETA_COUNT, "one name per beta schedule");
static const char *const spacing_names[] = {NULL, "linspace", "leading", "trailing"};
_Static_assert(IMGD_ARRAY_LEN(spacing_names) == IMGD_SPACING_COUNT, "one name per spacing");

const char *imgd_beta_schedule_name(imgd_beta_schedule b) {
    return (b > 0 && b < IMGD_BETA_COUNT) ? beta_names[b] : NULL;
}

imgd_status imgd_beta_schedule_parse(const char *name, imgd_beta_schedule *out) {
    for (int i = 1; name && i < IMGD_BETA_COUNT; i++) {
        if (strcmp(name, beta_names[i]) == 0) {
            *out = (imgd_beta_schedule)i;
            return IMGD_OK;
        }
    }
    return imgd_fail(IMGD_E_UNSUPPORTED,
                     "beta_schedule '%s' is not supported: expected scaled_linear, linear or "
                     "squaredcos_cap_v2",
                     name ? name : "(null)");
}

const char *imgd_spacing_name(imgd_spacing s) {
    return (s > 0 && s < IMGD_SPACING_COUNT) ? spacing_names[s] : NULL;
}

imgd_status imgd_spacing_parse(const char *name, imgd_spacing *out) {
    for (int i = 1; name && i < IMGD_SPACING_COUNT; i++) {
        if (strcmp(name, spacing_names[i]) == 0) {
            *out = (imgd_spacing)i;
            return IMGD_OK;
        }
    }
    return imgd_fail(IMGD_E_UNSUPPORTED,
                     "timestep_spacing '%s' is not supported: expected linspace, leading or "
                     "trailing",
                     name ? name : "(null)");
}

/* ---------------------------------------------------------------------------------- */
/* torch.linspace and numpy helpers                                                    */
/* ---------------------------------------------------------------------------------- */

/* torch's linspace kernel: elements before `halfway` count up from start, the rest down
 * from end. cpu_serial_kernel_vec hands out whole vectors (`lanes` wide, two per loop
 * turn) computed as base + k * step from the vector's first element; the tail runs the
 * scalar formula. */
void imgd_schedule_torch_linspace(float start, float end, int64_t steps, float *out) {
    const int64_t lanes = 8; /* Vectorized<float> on AVX2 */
    if (steps <= 0) return;
    if (steps == 1) {
        out[0] = start;
        return;
    }
    const float   step    = (end - start) / (float)(steps - 1);
    const int64_t halfway = steps / 2;
    int64_t       idx     = 0;
    for (; idx + 2 * lanes <= steps;) {
        for (int v = 0; v < 2; v++, idx += lanes) {
            float base =
                idx < halfway ? start + step * (float)idx : end - step * (float)(steps - idx - 1);
            out[idx] = base;
            for (int64_t k = 1; k < lanes; k++) out[idx + k] = base + (float)k * step;
        }
    }
    for (; idx < steps; idx++) {
        out[idx] =
            idx < halfway ? start + step * (float)idx : end - step * (float)(steps - idx - 1);
    }
}

void imgd_schedule_torch_linspace_f64(double start, double end, int64_t steps, double *out) {
    const int64_t lanes = 4; /* Vectorized<double> on AVX2 */
    if (steps <= 0) return;
    if (steps == 1) {
        out[0] = start;
        return;
    }
    const double  step    = (end - start) / (double)(steps - 1);
    const int64_t halfway = steps / 2;
    int64_t       idx     = 0;
    for (; idx + 2 * lanes <= steps;) {
        for (int v = 0; v < 2; v++, idx += lanes) {
            double base =
                idx < halfway ? start + step * (double)idx : end - step * (double)(steps - idx - 1);
            out[idx] = base;
            for (int64_t k = 1; k < lanes; k++) out[idx + k] = base + (double)k * step;
        }
    }
    for (; idx < steps; idx++) {
        out[idx] =
            idx < halfway ? start + step * (double)idx : end - step * (double)(steps - idx - 1);
    }
}

void imgd_schedule_np_linspace(double start, double stop, int64_t num, bool endpoint, double *out) {
    if (num <= 0) return;
    const int64_t div   = endpoint ? num - 1 : num;
    const double  delta = stop - start;
    const double  step  = div > 0 ? delta / (double)div : (double)NAN;
    for (int64_t i = 0; i < num; i++) {
        double y;
        if (div > 0 && step != 0.0) {
            y = (double)i * step;
        } else if (div > 0) {
            y = (double)i / (double)div * delta;
        } else {
            y = (double)i * delta;
        }
        out[i] = y + start;
    }
    if (endpoint && num > 1) out[num - 1] = stop;
}

size_t imgd_schedule_np_arange(double start, double stop, double step, double *out, size_t cap) {
    double len_f = ceil((stop - start) / step);
    if (!(len_f > 0)) return 0;
    size_t len = (size_t)len_f;
    if (cap > 0) out[0] = start;
    if (len > 1 && cap > 1) out[1] = start + step;
    /* numpy's fill: the increment is re-derived from the first two values. */
    double delta = (start + step) - start;
    for (size_t i = 2; i < len && i < cap; i++) out[i] = start + (double)i * delta;
    return len;
}

double imgd_schedule_np_interp(double x, const float *fp, size_t n) {
    if (n == 0) return (double)NAN;
    if (isnan(x)) return x;
    if (x < 0.0) return (double)fp[0];
    if (x >= (double)(n - 1)) return (double)fp[n - 1];
    size_t j = (size_t)floor(x);
    if ((double)j == x) return (double)fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    return slope * (x - (double)j) + (double)fp[j];
}

/* ---------------------------------------------------------------------------------- */
/* diffusers tables                                                                    */
/* ---------------------------------------------------------------------------------- */

static double alpha_bar_cos(double t) {
    double c = cos((t + 0.008) / 1.008 * 3.14159265358979323846 / 2.0);
    return c * c;
}

static imgd_status check_table_args(int32_t n_train, double beta_start, double beta_end) {
    if (n_train < 2 || n_train > IMGD_SCHEDULE_TRAIN_MAX) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "num_train_timesteps %d is outside 2..%d: check the scheduler config",
                         (int)n_train, IMGD_SCHEDULE_TRAIN_MAX);
    }
    if (!(beta_start > 0.0 && beta_start < 1.0 && beta_end > 0.0 && beta_end < 1.0)) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "beta_start %g / beta_end %g must be in (0, 1): check the scheduler "
                         "config",
                         beta_start, beta_end);
    }
    return IMGD_OK;
}

void imgd_schedule_rescale_zero_snr(float *ac, size_t n) {
    if (!ac || n < 2) return;
    /* torch f32 throughout, as diffusers computes it */
    float  a0 = sqrtf(ac[0]), aT = sqrtf(ac[n - 1]), k = a0 / (a0 - aT);
    float  prev = 0.0f;
    double cum  = 1.0;
    for (size_t i = 0; i < n; i++) {
        float s   = (sqrtf(ac[i]) - aT) * k;
        float bar = s * s;
        /* alphas = bar[i] / bar[i - 1] (bar[0] first), betas = 1 - alphas, the scheduler's
         * alphas = 1 - betas, and torch's CPU cumprod (double accumulator) of them */
        float alpha = i == 0 ? bar : bar / prev;
        float beta  = 1.0f - alpha;
        prev        = bar;
        cum *= (double)(1.0f - beta);
        ac[i] = (float)cum;
    }
    ac[n - 1] = 0x1p-24f;
}

imgd_status imgd_schedule_alphas_cumprod(imgd_beta_schedule b, int32_t n_train, double beta_start,
                                         double beta_end, float *out) {
    imgd_status st = check_table_args(n_train, beta_start, beta_end);
    if (st != IMGD_OK) return st;
    /* betas into out, then alphas = 1 - betas (f32) and the cumprod torch's CPU kernel
     * computes (double accumulator, each entry rounded to f32). The linspace endpoints are
     * rounded to f32 (torch's Scalar conversion) but the points and their squares come out
     * as float64 rounded once: that is what reproduces the kit's tables (all 13 sigmas the
     * goldens pin, bit for bit); a pure-f32 linspace and square is off by 1-2 ulps on a
     * few entries. */
    double *x = imgd_malloc((size_t)n_train * sizeof *x);
    if (!x) return imgd_fail(IMGD_E_NOMEM, "noise table of %d entries", (int)n_train);
    switch (b) {
    case IMGD_BETA_SCALED_LINEAR:
        imgd_schedule_torch_linspace_f64((double)(float)sqrt(beta_start),
                                         (double)(float)sqrt(beta_end), n_train, x);
        for (int32_t i = 0; i < n_train; i++) out[i] = (float)(x[i] * x[i]);
        break;
    case IMGD_BETA_LINEAR:
        imgd_schedule_torch_linspace_f64((double)(float)beta_start, (double)(float)beta_end,
                                         n_train, x);
        for (int32_t i = 0; i < n_train; i++) out[i] = (float)x[i];
        break;
    case IMGD_BETA_SQUAREDCOS_CAP_V2:
        for (int32_t i = 0; i < n_train; i++) {
            double t1 = (double)i / n_train, t2 = (double)(i + 1) / n_train;
            double beta = 1.0 - alpha_bar_cos(t2) / alpha_bar_cos(t1);
            out[i]      = (float)(beta < 0.999 ? beta : 0.999);
        }
        break;
    default: imgd_free(x); return imgd_fail(IMGD_E_INVALID_ARG, "unknown beta schedule %d", (int)b);
    }
    imgd_free(x);
    double acc = 1.0;
    for (int32_t i = 0; i < n_train; i++) {
        float alpha = 1.0f - out[i];
        acc *= (double)alpha;
        out[i] = (float)acc;
    }
    return IMGD_OK;
}

void imgd_schedule_sigmas(const float *ac, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = sqrtf((1.0f - ac[i]) / ac[i]);
}

void imgd_schedule_spacing_timesteps(imgd_spacing sp, int32_t n_train, int32_t steps,
                                     int32_t steps_offset, bool plus_one, bool round_linspace,
                                     double *out) {
    const int32_t pts = plus_one ? steps + 1 : steps;
    if (steps <= 0) return;
    switch (sp) {
    case IMGD_SPACING_LEADING: {
        int64_t ratio = n_train / pts;
        for (int32_t i = 0; i < steps; i++) {
            /* descending; plus_one drops the smallest of steps + 1 points */
            int64_t k = plus_one ? (int64_t)steps - i : (int64_t)steps - 1 - i;
            out[i]    = (double)(k * ratio + steps_offset);
        }
        break;
    }
    case IMGD_SPACING_TRAILING: {
        double ratio = (double)n_train / steps;
        size_t len   = imgd_schedule_np_arange((double)n_train, 0.0, -ratio, NULL, 0);
        /* np.arange(n_train, 0, -ratio).round() - 1, computed element by element */
        double delta = ((double)n_train - ratio) - (double)n_train;
        for (int32_t i = 0; i < steps; i++) {
            double v;
            if ((size_t)i >= len) {
                v = 0.0;
            } else if (i == 0) {
                v = (double)n_train;
            } else if (i == 1) {
                v = (double)n_train - ratio;
            } else {
                v = (double)n_train + (double)i * delta;
            }
            out[i] = nearbyint(v) - 1.0;
        }
        break;
    }
    case IMGD_SPACING_LINSPACE:
    default: {
        if (plus_one) {
            /* np.linspace(0, n_train - 1, steps + 1).round()[::-1][:-1] */
            const double step = (double)(n_train - 1) / (double)steps; /* numpy's step */
            for (int32_t i = 0; i < steps; i++) {
                double v = i == 0 ? (double)(n_train - 1) : (double)(steps - i) * step;
                out[i]   = nearbyint(v);
            }
            break;
        }
        /* np.linspace(0, n_train - 1, steps)[::-1] (.round() for DDIM/DDPM/PNDM) */
        imgd_schedule_np_linspace(0.0, (double)(n_train - 1), steps, true, out);
        for (int32_t i = 0; i < steps / 2; i++) {
            double t           = out[i];
            out[i]             = out[steps - 1 - i];
            out[steps - 1 - i] = t;
        }
        if (round_linspace) {
            for (int32_t i = 0; i < steps; i++) out[i] = nearbyint(out[i]);
        }
        break;
    }
    }
}

double imgd_schedule_sigma_to_t(double sigma, const float *log_sigmas, size_t n) {
    /* numpy 1.x: the float64 log-sigma meets float32 arrays, so it is rounded to f32 first
     * and the weight is computed in f32; the final blend is float64. */
    double  log_sigma = log(sigma > 1e-10 ? sigma : 1e-10);
    float   ls32      = (float)log_sigma;
    int64_t low       = 0;
    for (size_t j = 0; j < n; j++) {
        if (ls32 - log_sigmas[j] >= 0.0f) low = (int64_t)j;
    }
    if (low > (int64_t)n - 2) low = (int64_t)n - 2;
    float lo = log_sigmas[low], hi = log_sigmas[low + 1];
    float w = (lo - ls32) / (lo - hi);
    if (w < 0.0f) w = 0.0f;
    if (w > 1.0f) w = 1.0f;
    return (double)(1.0f - w) * (double)low + (double)w * (double)(low + 1);
}

void imgd_schedule_karras_f64(double sigma_min, double sigma_max, int32_t n, double *out) {
    const double rho         = 7.0;
    double       min_inv_rho = pow(sigma_min, 1.0 / rho);
    double       max_inv_rho = pow(sigma_max, 1.0 / rho);
    imgd_schedule_np_linspace(0.0, 1.0, n, true, out);
    for (int32_t i = 0; i < n; i++) {
        out[i] = pow(max_inv_rho + out[i] * (min_inv_rho - max_inv_rho), rho);
    }
}

/* ---------------------------------------------------------------------------------- */
/* ComfyUI                                                                             */
/* ---------------------------------------------------------------------------------- */

imgd_status imgd_schedule_comfy_table(imgd_beta_schedule b, int32_t n_train, double beta_start,
                                      double beta_end, float *sigmas, float *log_sigmas) {
    imgd_status st = check_table_args(n_train, beta_start, beta_end);
    if (st != IMGD_OK) return st;
    double *betas = imgd_malloc((size_t)n_train * sizeof *betas);
    if (!betas) return imgd_fail(IMGD_E_NOMEM, "noise table of %d entries", (int)n_train);
    switch (b) {
    case IMGD_BETA_SCALED_LINEAR:
        imgd_schedule_torch_linspace_f64(sqrt(beta_start), sqrt(beta_end), n_train, betas);
        for (int32_t i = 0; i < n_train; i++) betas[i] = betas[i] * betas[i];
        break;
    case IMGD_BETA_LINEAR:
        imgd_schedule_torch_linspace_f64(beta_start, beta_end, n_train, betas);
        break;
    case IMGD_BETA_SQUAREDCOS_CAP_V2:
        for (int32_t i = 0; i < n_train; i++) {
            double t1 = (double)i / n_train, t2 = (double)(i + 1) / n_train;
            double beta = 1.0 - alpha_bar_cos(t2) / alpha_bar_cos(t1);
            betas[i]    = beta < 0.999 ? beta : 0.999;
        }
        break;
    default:
        imgd_free(betas);
        return imgd_fail(IMGD_E_INVALID_ARG, "unknown beta schedule %d", (int)b);
    }
    double ac = 1.0;
    for (int32_t i = 0; i < n_train; i++) {
        ac *= 1.0 - betas[i];
        double s      = sqrt((1.0 - ac) / ac);
        sigmas[i]     = (float)s;
        log_sigmas[i] = (float)log(s);
    }
    imgd_free(betas);
    return IMGD_OK;
}

float imgd_schedule_comfy_sigma(const float *log_sigmas, size_t n, float t) {
    if (t < 0.0f) t = 0.0f;
    if (t > (float)(n - 1)) t = (float)(n - 1);
    float lo = floorf(t), hi = ceilf(t);
    float w = t - truncf(t);
    float a = (1.0f - w) * log_sigmas[(size_t)lo];
    float b = w * log_sigmas[(size_t)hi];
    return expf(a + b);
}

int32_t imgd_schedule_comfy_timestep(const float *log_sigmas, size_t n, float sigma) {
    float   ls   = logf(sigma);
    int32_t best = 0;
    float   bd   = INFINITY;
    for (size_t j = 0; j < n; j++) {
        float d = fabsf(ls - log_sigmas[j]);
        if (d < bd) {
            bd   = d;
            best = (int32_t)j;
        }
    }
    return best;
}

size_t imgd_schedule_comfy(imgd_schedule_kind kind, const float *sigmas, const float *log_sigmas,
                           size_t n, int32_t steps, float *out) {
    if (steps < 1 || n < 2) return 0;
    const float sigma_min = sigmas[0], sigma_max = sigmas[n - 1];
    switch (kind) {
    case IMGD_SCHEDULE_NORMAL:
    case IMGD_SCHEDULE_SGM_UNIFORM: {
        float start = (float)imgd_schedule_comfy_timestep(log_sigmas, n, sigma_max);
        float end   = (float)imgd_schedule_comfy_timestep(log_sigmas, n, sigma_min);
        if (kind == IMGD_SCHEDULE_SGM_UNIFORM) {
            /* linspace(start, end, steps + 1)[:-1]: out has room for steps + 2 */
            imgd_schedule_torch_linspace(start, end, steps + 1, out);
        } else {
            imgd_schedule_torch_linspace(start, end, steps, out);
        }
        for (int32_t i = 0; i < steps; i++) {
            out[i] = imgd_schedule_comfy_sigma(log_sigmas, n, out[i]);
        }
        out[steps] = 0.0f;
        return (size_t)steps + 1;
    }
    case IMGD_SCHEDULE_KARRAS: {
        const double rho         = 7.0;
        double       min_inv_rho = pow((double)sigma_min, 1.0 / rho);
        double       max_inv_rho = pow((double)sigma_max, 1.0 / rho);
        imgd_schedule_torch_linspace(0.0f, 1.0f, steps, out);
        for (int32_t i = 0; i < steps; i++) {
            float v = out[i] * (float)(min_inv_rho - max_inv_rho);
            v       = (float)max_inv_rho + v;
            out[i]  = powf(v, (float)rho);
        }
        out[steps] = 0.0f;
        return (size_t)steps + 1;
    }
    case IMGD_SCHEDULE_EXPONENTIAL: {
        imgd_schedule_torch_linspace((float)log((double)sigma_max), (float)log((double)sigma_min),
                                     steps, out);
        for (int32_t i = 0; i < steps; i++) out[i] = expf(out[i]);
        out[steps] = 0.0f;
        return (size_t)steps + 1;
    }
    case IMGD_SCHEDULE_SIMPLE: {
        double ss = (double)n / (double)steps;
        for (int32_t i = 0; i < steps; i++) {
            size_t k = (size_t)((double)i * ss);
            out[i]   = sigmas[n - 1 - (k < n ? k : n - 1)];
        }
        out[steps] = 0.0f;
        return (size_t)steps + 1;
    }
    case IMGD_SCHEDULE_DDIM_UNIFORM: {
        size_t  len        = 0;
        bool    zero_first = fabs((double)sigmas[1]) <= 0.00001;
        int32_t s          = zero_first ? steps + 1 : steps;
        size_t  ss         = n / (size_t)s;
        if (ss < 1) ss = 1;
        /* ascending list [0?, sigmas[1], sigmas[1 + ss], ...], then reversed */
        size_t cnt = 0;
        for (size_t x = 1; x < n; x += ss) cnt++;
        if (cnt + (zero_first ? 0 : 1) > (size_t)steps + 2) return 0;
        if (!zero_first) out[len++] = 0.0f;
        for (size_t x = 1; x < n; x += ss) out[len++] = sigmas[x];
        for (size_t i = 0; i < len / 2; i++) {
            float t          = out[i];
            out[i]           = out[len - 1 - i];
            out[len - 1 - i] = t;
        }
        return len;
    }
    default: return 0;
    }
}
