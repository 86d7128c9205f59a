/* Sampler API, schedules of diffusers' scheduler classes and their step functions, written
 * as the same float32 tensor operations diffusers 0.27 performs, in the same order (0-dim
 * tensor arithmetic is f32; `s / t` with a Python scalar s is torch's reciprocal(t) * s). */
#include "sampling/sampler.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "sampling/sampler_impl.h"

#if defined(__clang__)
#    pragma STDC FP_CONTRACT OFF
#endif

/* ---------------------------------------------------------------------------------- */
/* Registry                                                                            */
/* ---------------------------------------------------------------------------------- */

typedef struct sampler_row {
    const char       *name;
    imgd_sampler_kind kind;
    imgd_spacing      spacing; /* diffusers class default */
    bool              draws;   /* draws noise in diffusers mode (ddim: only with eta > 0) */
    const char       *doc;
} sampler_row;

static const sampler_row sampler_rows[] = {
    {"euler", IMGD_SAMPLER_EULER, IMGD_SPACING_LINSPACE, true,
     "Euler (EulerDiscreteScheduler / k-diffusion sample_euler)"},
    {"euler_ancestral", IMGD_SAMPLER_EULER_ANCESTRAL, IMGD_SPACING_LINSPACE, true,
     "Euler ancestral (EulerAncestralDiscreteScheduler / sample_euler_ancestral)"},
    {"heun", IMGD_SAMPLER_HEUN, IMGD_SPACING_LINSPACE, false,
     "Heun, 2 model calls per step (HeunDiscreteScheduler / sample_heun)"},
    {"dpmpp_2m", IMGD_SAMPLER_DPMPP_2M, IMGD_SPACING_LINSPACE, false,
     "DPM++ 2M (DPMSolverMultistepScheduler dpmsolver++ / sample_dpmpp_2m)"},
    {"dpmpp_2m_sde", IMGD_SAMPLER_DPMPP_2M_SDE, IMGD_SPACING_LINSPACE, true,
     "DPM++ 2M SDE (DPMSolverMultistep sde-dpmsolver++ / sample_dpmpp_2m_sde)"},
    {"dpmpp_sde", IMGD_SAMPLER_DPMPP_SDE, IMGD_SPACING_LINSPACE, true,
     "DPM++ SDE, 2 model calls per step (DPMSolverSDEScheduler / sample_dpmpp_sde)"},
    {"ddim", IMGD_SAMPLER_DDIM, IMGD_SPACING_LEADING, false,
     "DDIM (DDIMScheduler; ComfyUI runs Euler)"},
    {"ddpm", IMGD_SAMPLER_DDPM, IMGD_SPACING_LEADING, true, "DDPM (DDPMScheduler / sample_ddpm)"},
    {"pndm", IMGD_SAMPLER_PNDM, IMGD_SPACING_LEADING, false,
     "PLMS (PNDMScheduler, skip_prk_steps; diffusers schedules only)"},
    {"lcm", IMGD_SAMPLER_LCM, IMGD_SPACING_LEADING, true,
     "LCM (LCMScheduler / sample_lcm) for latent-consistency models"},
    {"uni_pc", IMGD_SAMPLER_UNI_PC, IMGD_SPACING_LINSPACE, false,
     "UniPC (UniPCMultistepScheduler bh2 / ComfyUI uni_pc bh1)"},
};
_Static_assert(IMGD_ARRAY_LEN(sampler_rows) == IMGD_SAMPLER_COUNT - 1, "one row per sampler");

static const sampler_row *row_of(imgd_sampler_kind k) {
    for (size_t i = 0; i < IMGD_ARRAY_LEN(sampler_rows); i++) {
        if (sampler_rows[i].kind == k) return &sampler_rows[i];
    }
    return NULL;
}

const char *imgd_sampler_kind_name(imgd_sampler_kind k) {
    const sampler_row *r = row_of(k);
    return r ? r->name : NULL;
}

const char *imgd_sampler_kind_doc(imgd_sampler_kind k) {
    const sampler_row *r = row_of(k);
    return r ? r->doc : NULL;
}

imgd_status imgd_sampler_kind_parse(const char *name, imgd_sampler_kind *out) {
    for (size_t i = 0; name && i < IMGD_ARRAY_LEN(sampler_rows); i++) {
        if (strcmp(name, sampler_rows[i].name) == 0) {
            *out = sampler_rows[i].kind;
            return IMGD_OK;
        }
    }
    return imgd_fail(IMGD_E_INVALID_ARG,
                     "unknown sampler '%s': expected euler, euler_ancestral, heun, dpmpp_2m, "
                     "dpmpp_2m_sde, dpmpp_sde, ddim, ddpm, pndm, lcm or uni_pc",
                     name ? name : "(null)");
}

static const char *const prediction_names[] = {NULL, "epsilon", "v_prediction", "sample"};
_Static_assert(IMGD_ARRAY_LEN(prediction_names) == IMGD_PREDICTION_COUNT, "one name each");

const char *imgd_sampler_pred_name(imgd_sampler_pred p) {
    return (p > 0 && p < IMGD_PREDICTION_COUNT) ? prediction_names[p] : NULL;
}

imgd_status imgd_sampler_pred_parse(const char *name, imgd_sampler_pred *out) {
    for (int i = 1; name && i < IMGD_PREDICTION_COUNT; i++) {
        if (strcmp(name, prediction_names[i]) == 0) {
            *out = (imgd_sampler_pred)i;
            return IMGD_OK;
        }
    }
    return imgd_fail(IMGD_E_UNSUPPORTED,
                     "prediction_type '%s' is not supported: expected epsilon, v_prediction or "
                     "sample",
                     name ? name : "(null)");
}

imgd_sampler_params imgd_sampler_params_default(void) {
    imgd_sampler_params p;
    memset(&p, 0, sizeof p);
    p.kind                = IMGD_SAMPLER_EULER;
    p.schedule            = IMGD_SCHEDULE_DEFAULT;
    p.steps               = 20;
    p.eta                 = 1.0f;
    p.ddim_eta            = 0.0f;
    p.num_train_timesteps = 1000;
    p.beta_start          = 0.00085;
    p.beta_end            = 0.012;
    p.beta_schedule       = IMGD_BETA_SCALED_LINEAR;
    p.prediction          = IMGD_PREDICTION_EPSILON;
    p.spacing             = (imgd_spacing)0;
    p.steps_offset        = 1;
    return p;
}

/* ---------------------------------------------------------------------------------- */
/* Schedules of the diffusers classes                                                  */
/* ---------------------------------------------------------------------------------- */

static imgd_status alloc_lists(imgd_sampler *s, size_t iters, size_t n_sig) {
    s->ts  = imgd_calloc(iters ? iters : 1, sizeof *s->ts);
    s->its = imgd_calloc(iters ? iters : 1, sizeof *s->its);
    s->sig = imgd_calloc(n_sig ? n_sig : 1, sizeof *s->sig);
    if (!s->ts || !s->its || !s->sig) return imgd_fail(IMGD_E_NOMEM, "sampler schedule");
    s->iters = (int32_t)iters;
    s->n_sig = n_sig;
    return IMGD_OK;
}

static float max_of(const float *v, size_t n) {
    float m = v[0];
    for (size_t i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* Euler, Euler ancestral, Heun, DPMSolverSDE: interpolated (or Karras) sigmas. */
static imgd_status setup_sigma_family(imgd_sampler *s, const float *tab, const float *logtab,
                                      double *td, double *sd) {
    const imgd_sampler_params *p = &s->p;
    const int32_t              n = p->steps;
    const bool f32_ts            = p->kind != IMGD_SAMPLER_DPMPP_SDE; /* np.float32 timesteps */
    imgd_schedule_spacing_timesteps(p->spacing, s->n_train, n, p->steps_offset, false, false, td);
    for (int32_t i = 0; i < n; i++) {
        if (f32_ts) td[i] = (double)(float)td[i];
        sd[i] = imgd_schedule_np_interp(td[i], tab, (size_t)s->n_train);
    }
    if (p->use_karras_sigmas) {
        double lo = sd[n - 1], hi = sd[0];
        imgd_schedule_karras_f64(lo, hi, n, sd);
        for (int32_t i = 0; i < n; i++) {
            td[i] = imgd_schedule_sigma_to_t(sd[i], logtab, (size_t)s->n_train);
            if (f32_ts) td[i] = (double)(float)td[i];
        }
    }
    const bool twice  = p->kind == IMGD_SAMPLER_HEUN || p->kind == IMGD_SAMPLER_DPMPP_SDE;
    s->order          = twice ? 2 : 1;
    size_t      iters = twice ? (size_t)(2 * n - 1) : (size_t)n;
    imgd_status st    = alloc_lists(s, iters, iters + 1);
    if (st != IMGD_OK) return st;
    if (!twice) {
        for (int32_t i = 0; i < n; i++) {
            s->ts[i]  = (float)td[i];
            s->sig[i] = (float)sd[i];
        }
        s->sig[n] = 0.0f;
    } else {
        /* sigmas [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]; timesteps [t0, t1, t1, ...] with
         * DPMSolverSDE's odd entries replaced by the midpoints' timesteps. */
        s->ts[0]  = (float)td[0];
        s->sig[0] = (float)sd[0];
        for (int32_t i = 1; i < n; i++) {
            size_t j     = 2 * (size_t)i; /* entries j - 1 and j repeat step i */
            s->ts[j - 1] = s->ts[j] = (float)td[i];
            s->sig[j - 1] = s->sig[j] = (float)sd[i];
            if (p->kind == IMGD_SAMPLER_DPMPP_SDE) {
                double t0 = -log(sd[i - 1]), t1 = -log(sd[i]);
                double tp = t0 + (t1 - t0) * 0.5;
                s->ts[j - 1] =
                    (float)imgd_schedule_sigma_to_t(exp(-tp), logtab, (size_t)s->n_train);
            }
        }
        s->sig[2 * n - 1] = 0.0f;
    }
    float mx      = max_of(s->sig, s->n_sig);
    s->init_sigma = (p->spacing == IMGD_SPACING_LINSPACE || p->spacing == IMGD_SPACING_TRAILING)
                        ? mx
                        : sqrtf(mx * mx + 1.0f);
    return IMGD_OK;
}

/* DPMSolverMultistep and UniPC: steps + 1 spacing points, integer timesteps. */
static imgd_status setup_multistep(imgd_sampler *s, const float *tab, const float *logtab,
                                   double *td, double *sd) {
    const imgd_sampler_params *p     = &s->p;
    const int32_t              n     = p->steps;
    const bool                 unipc = p->kind == IMGD_SAMPLER_UNI_PC;
    imgd_schedule_spacing_timesteps(p->spacing, s->n_train, n, p->steps_offset, true, false, td);
    if (p->use_karras_sigmas) {
        imgd_schedule_karras_f64((double)tab[0], (double)tab[s->n_train - 1], n, sd);
        for (int32_t i = 0; i < n; i++) {
            td[i] = nearbyint(imgd_schedule_sigma_to_t(sd[i], logtab, (size_t)s->n_train));
        }
    } else {
        for (int32_t i = 0; i < n; i++) sd[i] = imgd_schedule_np_interp(td[i], tab, s->n_train);
    }
    imgd_status st = alloc_lists(s, (size_t)n, (size_t)n + 1);
    if (st != IMGD_OK) return st;
    for (int32_t i = 0; i < n; i++) {
        s->its[i] = (int32_t)td[i];
        s->ts[i]  = (float)td[i];
        s->sig[i] = (float)sd[i];
    }
    /* DPMSolver: final_sigmas_type "zero". UniPC (0.27): sigma_min, or the last Karras
     * sigma repeated. */
    s->sig[n]     = !unipc ? 0.0f : p->use_karras_sigmas ? s->sig[n - 1] : tab[0];
    s->order      = 1;
    s->init_sigma = 1.0f;
    return IMGD_OK;
}

/* DDIM, DDPM, PNDM, LCM: integer timesteps over alphas_cumprod. */
static imgd_status setup_discrete(imgd_sampler *s, double *td) {
    const imgd_sampler_params *p = &s->p;
    const int32_t              n = p->steps;
    s->order                     = 1;
    s->init_sigma                = 1.0f;
    s->ratio                     = s->n_train / n;
    s->final_ac                  = p->set_alpha_to_one ? 1.0f : s->ac[0];
    if (p->kind == IMGD_SAMPLER_LCM) {
        int32_t orig = p->original_inference_steps;
        int32_t k    = s->n_train / orig;
        if (orig > s->n_train || n > orig || orig / n < 1) {
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "lcm: steps %d must be at most original_inference_steps %d (<= "
                             "num_train_timesteps %d)",
                             (int)n, (int)orig, (int)s->n_train);
        }
        imgd_status st = alloc_lists(s, (size_t)n, 1);
        if (st != IMGD_OK) return st;
        /* lcm_origin_timesteps reversed: (orig - j) * k - 1; indices floor(linspace(0,
         * orig, n, endpoint=False)). */
        imgd_schedule_np_linspace(0.0, (double)orig, n, false, td);
        for (int32_t i = 0; i < n; i++) {
            int32_t j = (int32_t)floor(td[i]);
            s->its[i] = (orig - j) * k - 1;
            s->ts[i]  = (float)s->its[i];
        }
        return IMGD_OK;
    }
    imgd_schedule_spacing_timesteps(p->spacing, s->n_train, n, p->steps_offset, false, true, td);
    if (p->kind == IMGD_SAMPLER_PNDM) {
        /* plms_timesteps = concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1] over ascending ts:
         * descending, with the second entry repeated. */
        size_t      iters = n >= 2 ? (size_t)n + 1 : 1;
        imgd_status st    = alloc_lists(s, iters, 1);
        if (st != IMGD_OK) return st;
        size_t k    = 0;
        s->its[k++] = (int32_t)td[0];
        for (int32_t i = 1; i < n; i++) {
            s->its[k++] = (int32_t)td[i];
            if (i == 1) s->its[k++] = (int32_t)td[1];
        }
        for (size_t i = 0; i < iters; i++) s->ts[i] = (float)s->its[i];
        return IMGD_OK;
    }
    imgd_status st = alloc_lists(s, (size_t)n, 1);
    if (st != IMGD_OK) return st;
    for (int32_t i = 0; i < n; i++) {
        s->its[i] = (int32_t)td[i];
        s->ts[i]  = (float)td[i];
    }
    return IMGD_OK;
}

/* ComfyUI: the schedule over the float64 table; timesteps = nearest table index. */
static imgd_status setup_comfy(imgd_sampler *s) {
    const imgd_sampler_params *p  = &s->p;
    size_t                     nt = (size_t)s->n_train;
    s->ktab                       = imgd_malloc(nt * sizeof *s->ktab);
    s->klog                       = imgd_malloc(nt * sizeof *s->klog);
    float *list                   = imgd_malloc(((size_t)p->steps + 2) * sizeof *list);
    if (!s->ktab || !s->klog || !list) {
        imgd_free(list);
        return imgd_fail(IMGD_E_NOMEM, "sampler schedule");
    }
    imgd_status st = imgd_schedule_comfy_table(p->beta_schedule, s->n_train, p->beta_start,
                                               p->beta_end, s->ktab, s->klog);
    size_t      len =
        st == IMGD_OK ? imgd_schedule_comfy(p->schedule, s->ktab, s->klog, nt, p->steps, list) : 0;
    if (st == IMGD_OK && len < 2) {
        st = imgd_fail(IMGD_E_INVALID_ARG, "schedule %s cannot make %d steps",
                       imgd_schedule_kind_name(p->schedule), (int)p->steps);
    }
    if (st == IMGD_OK) st = alloc_lists(s, len - 1, len);
    if (st == IMGD_OK) {
        memcpy(s->sig, list, len * sizeof *list);
        for (size_t i = 0; i + 1 < len; i++) {
            s->its[i] = imgd_schedule_comfy_timestep(s->klog, nt, s->sig[i]);
            s->ts[i]  = (float)s->its[i];
        }
        float s0 = s->sig[0], smax = s->ktab[nt - 1];
        bool  max_denoise =
            fabs((double)smax - (double)s0) <= 1e-5 * fmax(fabs((double)smax), fabs((double)s0)) ||
            s0 > smax;
        s->init_sigma = max_denoise ? sqrtf(1.0f + s0 * s0) : s0;
        s->order      = 1;
    }
    imgd_free(list);
    return st;
}

static imgd_status check_params(const imgd_sampler_params *p) {
    if (!row_of(p->kind)) return imgd_fail(IMGD_E_INVALID_ARG, "unknown sampler %d", (int)p->kind);
    if (!imgd_schedule_kind_name(p->schedule)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "unknown schedule %d", (int)p->schedule);
    }
    if (p->num_train_timesteps < 2 || p->num_train_timesteps > IMGD_SCHEDULE_TRAIN_MAX) {
        return imgd_fail(IMGD_E_INVALID_ARG, "num_train_timesteps %d is outside 2..%d",
                         (int)p->num_train_timesteps, IMGD_SCHEDULE_TRAIN_MAX);
    }
    if (p->steps < 1 || p->steps > 1000 || p->steps > p->num_train_timesteps) {
        return imgd_fail(IMGD_E_INVALID_ARG, "steps %d is outside 1..%d", (int)p->steps,
                         (int)(p->num_train_timesteps < 1000 ? p->num_train_timesteps : 1000));
    }
    if (!(p->eta >= 0.0f) || !(p->ddim_eta >= 0.0f)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "eta %g / ddim_eta %g must be >= 0", (double)p->eta,
                         (double)p->ddim_eta);
    }
    if (!imgd_sampler_pred_name(p->prediction)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "unknown prediction type %d", (int)p->prediction);
    }
    if (p->spacing && !imgd_spacing_name(p->spacing)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "unknown timestep spacing %d", (int)p->spacing);
    }
    if (p->steps_offset < 0 || p->steps_offset >= p->num_train_timesteps) {
        return imgd_fail(IMGD_E_INVALID_ARG, "steps_offset %d is out of range",
                         (int)p->steps_offset);
    }
    return IMGD_OK;
}

static imgd_status resolve(imgd_sampler *s) {
    imgd_sampler_params *p = &s->p;
    if (p->schedule == IMGD_SCHEDULE_LEADING) p->spacing = IMGD_SPACING_LEADING;
    if (p->schedule == IMGD_SCHEDULE_TRAILING) p->spacing = IMGD_SPACING_TRAILING;
    if (p->schedule == IMGD_SCHEDULE_LINSPACE) p->spacing = IMGD_SPACING_LINSPACE;
    const sampler_row *row = row_of(p->kind);
    if (!row) return imgd_fail(IMGD_E_INVALID_ARG, "unknown sampler %d", (int)p->kind);
    if (!p->spacing) p->spacing = row->spacing;
    if (!p->solver_order) p->solver_order = 2;
    if (!p->original_inference_steps) p->original_inference_steps = 50;
    if (p->timestep_scaling == 0.0f) p->timestep_scaling = 10.0f;
    s->kdiff   = !imgd_schedule_kind_is_diffusers(p->schedule);
    s->n_train = p->num_train_timesteps;
    if (p->solver_order < 1 || p->solver_order > 3) {
        return imgd_fail(IMGD_E_INVALID_ARG, "solver_order %d is outside 1..3",
                         (int)p->solver_order);
    }
    if (s->kdiff && p->kind == IMGD_SAMPLER_PNDM) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "pndm has no k-diffusion form: use schedule default, leading, trailing "
                         "or linspace with it");
    }
    bool sigma_based =
        p->kind != IMGD_SAMPLER_DDIM && p->kind != IMGD_SAMPLER_DDPM && p->kind != IMGD_SAMPLER_LCM;
    if (p->prediction == IMGD_PREDICTION_SAMPLE && (sigma_based || s->kdiff)) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "prediction_type sample is supported by ddim, ddpm and lcm with a "
                         "diffusers schedule only");
    }
    return IMGD_OK;
}

void imgd_sampler_free(imgd_sampler *s) {
    if (!s) return;
    imgd_free(s->ac);
    imgd_free(s->ts);
    imgd_free(s->its);
    imgd_free(s->sig);
    imgd_free(s->ktab);
    imgd_free(s->klog);
    imgd_free(s);
}

imgd_status imgd_sampler_new(const imgd_sampler_params *p, imgd_sampler **out) {
    if (!p || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_sampler_new: NULL argument");
    imgd_status st = check_params(p);
    if (st != IMGD_OK) return st;
    imgd_sampler *s   = imgd_calloc(1, sizeof *s);
    float        *tab = NULL, *logtab = NULL;
    double       *td = NULL, *sd = NULL;
    if (!s) return imgd_fail(IMGD_E_NOMEM, "sampler");
    s->p = *p;
    st   = resolve(s);
    if (st != IMGD_OK) goto fail;
    size_t nt = (size_t)s->n_train, ns = (size_t)p->steps + 2;
    s->ac  = imgd_malloc(nt * sizeof *s->ac);
    tab    = imgd_malloc(nt * sizeof *tab);
    logtab = imgd_malloc(nt * sizeof *logtab);
    td     = imgd_malloc(ns * sizeof *td);
    sd     = imgd_malloc(ns * sizeof *sd);
    if (!s->ac || !tab || !logtab || !td || !sd) {
        st = imgd_fail(IMGD_E_NOMEM, "sampler tables");
        goto fail;
    }
    st = imgd_schedule_alphas_cumprod(s->p.beta_schedule, s->n_train, s->p.beta_start,
                                      s->p.beta_end, s->ac);
    if (st != IMGD_OK) goto fail;
    if (s->p.rescale_zero_snr) imgd_schedule_rescale_zero_snr(s->ac, nt);
    imgd_schedule_sigmas(s->ac, nt, tab);
    for (size_t i = 0; i < nt; i++) logtab[i] = logf(tab[i]);
    if (s->kdiff) {
        st = setup_comfy(s);
    } else {
        switch (s->p.kind) {
        case IMGD_SAMPLER_EULER:
        case IMGD_SAMPLER_EULER_ANCESTRAL:
        case IMGD_SAMPLER_HEUN:
        case IMGD_SAMPLER_DPMPP_SDE: st = setup_sigma_family(s, tab, logtab, td, sd); break;
        case IMGD_SAMPLER_DPMPP_2M:
        case IMGD_SAMPLER_DPMPP_2M_SDE:
        case IMGD_SAMPLER_UNI_PC: st = setup_multistep(s, tab, logtab, td, sd); break;
        default: st = setup_discrete(s, td); break;
        }
    }
    if (st != IMGD_OK) goto fail;
    imgd_free(tab);
    imgd_free(logtab);
    imgd_free(td);
    imgd_free(sd);
    *out = s;
    return IMGD_OK;
fail:
    imgd_free(tab);
    imgd_free(logtab);
    imgd_free(td);
    imgd_free(sd);
    imgd_sampler_free(s);
    return st;
}

const imgd_sampler_params *imgd_sampler_config(const imgd_sampler *s) {
    return &s->p;
}

bool imgd_sampler_is_kdiffusion(const imgd_sampler *s) {
    return s->kdiff;
}

size_t imgd_sampler_timesteps(const imgd_sampler *s, const float **t) {
    *t = s->ts;
    return (size_t)s->iters;
}

size_t imgd_sampler_sigmas(const imgd_sampler *s, const float **sigmas) {
    bool none = !s->kdiff && (s->p.kind == IMGD_SAMPLER_DDIM || s->p.kind == IMGD_SAMPLER_DDPM ||
                              s->p.kind == IMGD_SAMPLER_PNDM || s->p.kind == IMGD_SAMPLER_LCM);
    *sigmas   = s->sig;
    return none ? 0 : s->n_sig;
}

int32_t imgd_sampler_iterations(const imgd_sampler *s) {
    return s->iters;
}

float imgd_sampler_init_noise_sigma(const imgd_sampler *s) {
    return s->init_sigma;
}

int32_t imgd_sampler_first_step(const imgd_sampler *s, double strength) {
    int32_t steps = s->p.steps;
    double  x     = (double)steps * strength;
    int32_t init  = x <= 0.0 ? 0 : x >= (double)steps ? steps : (int32_t)x;
    int32_t start = steps - init;
    int32_t first = start * (s->kdiff ? 1 : s->order);
    return first < s->iters ? first : s->iters;
}

imgd_status imgd_sampler_add_noise(const imgd_sampler *s, const float *x0, const float *noise,
                                   size_t n, int32_t step, float *out) {
    if (step < 0 || step >= s->iters) {
        return imgd_fail(IMGD_E_INVALID_ARG, "add_noise: step %d is outside 0..%d", (int)step,
                         (int)s->iters - 1);
    }
    const imgd_sampler_params *p           = &s->p;
    bool                       sigma_noise = s->kdiff || p->kind == IMGD_SAMPLER_EULER ||
                       p->kind == IMGD_SAMPLER_EULER_ANCESTRAL || p->kind == IMGD_SAMPLER_HEUN ||
                       p->kind == IMGD_SAMPLER_DPMPP_SDE;
    if (sigma_noise) {
        float sigma = s->sig[step];
        for (size_t i = 0; i < n; i++) out[i] = x0[i] + noise[i] * sigma;
        return IMGD_OK;
    }
    float a, b;
    if (p->kind == IMGD_SAMPLER_DPMPP_2M || p->kind == IMGD_SAMPLER_DPMPP_2M_SDE ||
        p->kind == IMGD_SAMPLER_UNI_PC) {
        float sigma = s->sig[step]; /* _sigma_to_alpha_sigma_t */
        a           = 1.0f / sqrtf(sigma * sigma + 1.0f);
        b           = sigma * a;
    } else {
        float ac = s->ac[s->its[step]];
        a        = sqrtf(ac);
        b        = sqrtf(1.0f - ac);
    }
    for (size_t i = 0; i < n; i++) out[i] = a * x0[i] + b * noise[i];
    return IMGD_OK;
}

/* ---------------------------------------------------------------------------------- */
/* Run helpers                                                                         */
/* ---------------------------------------------------------------------------------- */

imgd_status imgd_sampler_noise_from_rng(void *user, float *out, size_t n) {
    imgd_rng_randn((imgd_rng *)user, out, n);
    return IMGD_OK;
}

imgd_status imgd_sampler_model(imgd_sampler_state *r, const float *x, float t, float sigma,
                               bool scale) {
    if (scale) {
        float div = sqrtf(sigma * sigma + 1.0f);
        for (size_t i = 0; i < r->n; i++) r->xin[i] = x[i] / div;
    } else {
        memcpy(r->xin, x, r->n * sizeof *x);
    }
    return r->io->denoise(r->io->denoise_user, r->xin, r->n, t, sigma, r->mo);
}

/* Noise level of an alphas_cumprod timestep (DDIM, DDPM, PNDM, LCM). */
static float ac_sigma(const imgd_sampler *s, int32_t t) {
    return sqrtf((1.0f - s->ac[t]) / s->ac[t]);
}

imgd_status imgd_sampler_draw(imgd_sampler_state *r) {
    if (!r->io->noise) {
        return imgd_fail(IMGD_E_INVALID_ARG, "sampler %s draws noise: io.noise must be set",
                         imgd_sampler_kind_name(r->s->p.kind));
    }
    return r->io->noise(r->io->noise_user, r->noise, r->n);
}

imgd_status imgd_sampler_notify(imgd_sampler_state *r, int32_t step, float *x) {
    if (!r->io->on_step) return IMGD_OK;
    return r->io->on_step(r->io->step_user, step, r->s->iters, x, r->n);
}

/* x0 from the model output (the x0-parameterisation of k-diffusion sigmas, VP sample). */
void imgd_sampler_vp_x0(const imgd_sampler *s, float sigma, const float *x, const float *mo,
                        float *x0, size_t n) {
    float alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
    float sigma_t = sigma * alpha_t;
    if (s->p.prediction == IMGD_PREDICTION_V) {
        for (size_t i = 0; i < n; i++) x0[i] = alpha_t * x[i] - sigma_t * mo[i];
    } else {
        for (size_t i = 0; i < n; i++) x0[i] = (x[i] - sigma_t * mo[i]) / alpha_t;
    }
}

/* diffusers' pred_original_sample for the sigma-scaled (Euler family) schedulers. */
static void sigma_x0(const imgd_sampler *s, float sigma, const float *x, const float *mo, float *x0,
                     size_t n) {
    if (s->p.prediction == IMGD_PREDICTION_V) {
        float c2 = sigma * sigma + 1.0f;
        float c1 = -sigma / sqrtf(c2);
        for (size_t i = 0; i < n; i++) x0[i] = mo[i] * c1 + x[i] / c2;
    } else {
        for (size_t i = 0; i < n; i++) x0[i] = x[i] - sigma * mo[i];
    }
}

/* pred_original_sample / pred_epsilon over alphas_cumprod (DDIM, DDPM, LCM). */
static void ac_x0(const imgd_sampler *s, float a_t, const float *x, const float *mo, float *x0,
                  float *eps, size_t n) {
    float b_t = 1.0f - a_t, sa = sqrtf(a_t), sb = sqrtf(b_t);
    for (size_t i = 0; i < n; i++) {
        switch (s->p.prediction) {
        case IMGD_PREDICTION_V:
            x0[i] = sa * x[i] - sb * mo[i];
            if (eps) eps[i] = sa * mo[i] + sb * x[i];
            break;
        case IMGD_PREDICTION_SAMPLE:
            x0[i] = mo[i];
            if (eps) eps[i] = (x[i] - sa * x0[i]) / sb;
            break;
        default:
            x0[i] = (x[i] - sb * mo[i]) / sa;
            if (eps) eps[i] = mo[i];
            break;
        }
    }
}

/* ---------------------------------------------------------------------------------- */
/* diffusers steps                                                                     */
/* ---------------------------------------------------------------------------------- */

static imgd_status step_euler(imgd_sampler_state *r, int32_t i, float *x) {
    const imgd_sampler *s     = r->s;
    float               sigma = s->sig[i];
    imgd_status         st    = imgd_sampler_model(r, x, s->ts[i], sigma, true);
    if (st == IMGD_OK) st = imgd_sampler_draw(r); /* drawn though s_churn = 0 leaves it unused */
    if (st != IMGD_OK) return st;
    float *x0        = r->b[0];
    float  sigma_hat = sigma * 1.0f; /* sigma * (gamma + 1), gamma = 0 */
    sigma_x0(s, sigma_hat, x, r->mo, x0, r->n);
    float dt = s->sig[i + 1] - sigma_hat;
    for (size_t k = 0; k < r->n; k++) {
        float d = (x[k] - x0[k]) / sigma_hat;
        x[k]    = x[k] + d * dt;
    }
    return IMGD_OK;
}

static imgd_status step_euler_a(imgd_sampler_state *r, int32_t i, float *x) {
    const imgd_sampler *s     = r->s;
    float               sigma = s->sig[i];
    imgd_status         st    = imgd_sampler_model(r, x, s->ts[i], sigma, true);
    if (st != IMGD_OK) return st;
    float *x0 = r->b[0];
    sigma_x0(s, sigma, x, r->mo, x0, r->n);
    float from = s->sig[i], to = s->sig[i + 1];
    float to2 = to * to, from2 = from * from;
    float up   = sqrtf(to2 * (from2 - to2) / from2);
    float down = sqrtf(to2 - up * up);
    float dt   = down - sigma;
    for (size_t k = 0; k < r->n; k++) {
        float d = (x[k] - x0[k]) / sigma;
        x[k]    = x[k] + d * dt;
    }
    st = imgd_sampler_draw(r);
    if (st != IMGD_OK) return st;
    for (size_t k = 0; k < r->n; k++) x[k] = x[k] + r->noise[k] * up;
    return IMGD_OK;
}

/* b[1] = prev derivative, b[2] = saved sample; *dt_saved is NAN in first-order state. */
static imgd_status step_heun(imgd_sampler_state *r, int32_t i, float *x, float *dt_saved) {
    const imgd_sampler *s     = r->s;
    const bool          first = isnan(*dt_saved);
    imgd_status         st    = imgd_sampler_model(r, x, s->ts[i], s->sig[i], true);
    if (st != IMGD_OK) return st;
    float  sigma     = first ? s->sig[i] : s->sig[i - 1];
    float  next      = first ? s->sig[i + 1] : s->sig[i];
    float  sigma_hat = sigma;
    float *x0        = r->b[0];
    sigma_x0(s, first ? sigma_hat : next, x, r->mo, x0, r->n);
    if (first) {
        float dt = next - sigma_hat;
        for (size_t k = 0; k < r->n; k++) {
            float d    = (x[k] - x0[k]) / sigma_hat;
            r->b[1][k] = d;
            r->b[2][k] = x[k];
            x[k]       = x[k] + d * dt;
        }
        *dt_saved = dt;
    } else {
        float dt = *dt_saved;
        for (size_t k = 0; k < r->n; k++) {
            float d = (x[k] - x0[k]) / next;
            d       = (r->b[1][k] + d) / 2.0f;
            x[k]    = r->b[2][k] + d * dt;
        }
        *dt_saved = NAN;
    }
    return IMGD_OK;
}

typedef struct vp_point {
    float alpha, sigma, lambda;
} vp_point;

static vp_point vp_at(float sigma) {
    vp_point v;
    v.alpha  = 1.0f / sqrtf(sigma * sigma + 1.0f);
    v.sigma  = sigma * v.alpha;
    v.lambda = logf(v.alpha) - logf(v.sigma);
    return v;
}

/* DPMSolverMultistep: b[3], b[4] = model_outputs[-2], [-1] (x0 predictions). */
static imgd_status step_dpm(imgd_sampler_state *r, int32_t i, int32_t first, float *x,
                            int32_t *lower_nums) {
    const imgd_sampler *s   = r->s;
    const bool          sde = s->p.kind == IMGD_SAMPLER_DPMPP_2M_SDE;
    const int32_t       T   = s->iters;
    imgd_status         st  = imgd_sampler_model(r, x, s->ts[i], s->sig[i], false);
    if (st != IMGD_OK) return st;
    bool   lower_final  = i == T - 1; /* final_sigmas_type zero */
    bool   lower_second = i == T - 2 && T < 15;
    float *m1 = r->b[3], *m0 = r->b[4];
    memcpy(m1, m0, r->n * sizeof *m0);
    imgd_sampler_vp_x0(s, s->sig[i], x, r->mo, m0, r->n);
    if (sde) {
        st = imgd_sampler_draw(r);
        if (st != IMGD_OK) return st;
    }
    const float *z = r->noise;
    vp_point     t = vp_at(s->sig[i + 1]), s0 = vp_at(s->sig[i]);
    float        h  = t.lambda - s0.lambda;
    float        eh = expf(-h), e2h = expf(-2.0f * h);
    bool         first_order = s->p.solver_order == 1 || *lower_nums < 1 || lower_final;
    (void)lower_second; /* solver_order 2: the second-order update either way */
    if (first_order) {
        for (size_t k = 0; k < r->n; k++) {
            if (sde) {
                x[k] = (t.sigma / s0.sigma * eh) * x[k] + (t.alpha * (1.0f - e2h)) * m0[k] +
                       t.sigma * sqrtf(1.0f - e2h) * z[k];
            } else {
                x[k] = (t.sigma / s0.sigma) * x[k] - (t.alpha * (eh - 1.0f)) * m0[k];
            }
        }
    } else {
        vp_point s1  = vp_at(s->sig[i - 1]);
        float    h0  = s0.lambda - s1.lambda;
        float    r0  = h0 / h;
        float    ir0 = 1.0f / r0;
        for (size_t k = 0; k < r->n; k++) {
            float d1 = ir0 * (m0[k] - m1[k]);
            if (sde) {
                float c = t.alpha * (1.0f - e2h);
                x[k]    = (t.sigma / s0.sigma * eh) * x[k] + c * m0[k] + (0.5f * c) * d1 +
                       t.sigma * sqrtf(1.0f - e2h) * z[k];
            } else {
                float c = t.alpha * (eh - 1.0f);
                x[k]    = (t.sigma / s0.sigma) * x[k] - c * m0[k] - (0.5f * c) * d1;
            }
        }
    }
    (void)first;
    if (*lower_nums < s->p.solver_order) (*lower_nums)++;
    return IMGD_OK;
}

/* DPMSolverSDEScheduler: b[2] = saved sample; *mid is NAN in first-order state, else the
 * midpoint sigma. */
static imgd_status step_dpm_sde(imgd_sampler_state *r, int32_t i, float *x, float *mid) {
    const imgd_sampler *s     = r->s;
    const bool          first = isnan(*mid);
    float               sin   = first ? s->sig[i] : *mid;
    imgd_status         st    = imgd_sampler_model(r, x, s->ts[i], sin, true);
    if (st != IMGD_OK) return st;
    float  sigma = first ? s->sig[i] : s->sig[i - 1];
    float  next  = first ? s->sig[i + 1] : s->sig[i];
    float  t = -logf(sigma), t_next = -logf(next);
    float  t_prop = t + (t_next - t) * 0.5f;
    float *x0     = r->b[0];
    sigma_x0(s, first ? sigma : expf(-t_prop), x, r->mo, x0, r->n);
    if (next == 0.0f) {
        float dt = next - sigma;
        for (size_t k = 0; k < r->n; k++) x[k] = x[k] + ((x[k] - x0[k]) / sigma) * dt;
        return IMGD_OK;
    }
    if (first) t_next = t_prop;
    const float *src  = first ? x : r->b[2];
    float        from = expf(-t), to = expf(-t_next);
    float        to2 = to * to, from2 = from * from;
    float        up = sqrtf(to2 * (from2 - to2) / from2);
    up              = up < to ? up : to;
    float down      = sqrtf(to2 - up * up);
    float anc       = -logf(down);
    float c1        = expf(-anc) / expf(-t);
    float c2        = expm1f(t - anc);
    st              = imgd_sampler_draw(r);
    if (st != IMGD_OK) return st;
    for (size_t k = 0; k < r->n; k++) {
        float v = c1 * src[k] - c2 * x0[k];
        if (first) r->b[2][k] = x[k];
        x[k] = v + r->noise[k] * 1.0f * up;
    }
    *mid = first ? to : NAN;
    return IMGD_OK;
}

static imgd_status step_ddim(imgd_sampler_state *r, int32_t i, float *x) {
    const imgd_sampler *s = r->s;
    int32_t             t = s->its[i], prev = t - s->ratio;
    imgd_status         st = imgd_sampler_model(r, x, s->ts[i], ac_sigma(s, s->its[i]), false);
    if (st != IMGD_OK) return st;
    float  a_t = s->ac[t], a_prev = prev >= 0 ? s->ac[prev] : s->final_ac;
    float  b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    float *x0 = r->b[0], *eps = r->b[1];
    ac_x0(s, a_t, x, r->mo, x0, eps, r->n);
    float var = (b_prev / b_t) * (1.0f - a_t / a_prev);
    float std = s->p.ddim_eta * sqrtf(var);
    float cd  = sqrtf(1.0f - a_prev - std * std);
    float cx  = sqrtf(a_prev);
    for (size_t k = 0; k < r->n; k++) x[k] = cx * x0[k] + cd * eps[k];
    if (s->p.ddim_eta > 0.0f) {
        st = imgd_sampler_draw(r);
        if (st != IMGD_OK) return st;
        for (size_t k = 0; k < r->n; k++) x[k] = x[k] + std * r->noise[k];
    }
    return IMGD_OK;
}

static imgd_status step_ddpm(imgd_sampler_state *r, int32_t i, float *x) {
    const imgd_sampler *s = r->s;
    int32_t             t = s->its[i], prev = t - s->ratio;
    imgd_status         st = imgd_sampler_model(r, x, s->ts[i], ac_sigma(s, s->its[i]), false);
    if (st != IMGD_OK) return st;
    float  a_t = s->ac[t], a_prev = prev >= 0 ? s->ac[prev] : 1.0f;
    float  b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    float  cur_a = a_t / a_prev, cur_b = 1.0f - cur_a;
    float *x0 = r->b[0];
    ac_x0(s, a_t, x, r->mo, x0, NULL, r->n);
    float c0 = (sqrtf(a_prev) * cur_b) / b_t;
    float c1 = sqrtf(cur_a) * b_prev / b_t;
    for (size_t k = 0; k < r->n; k++) x[k] = c0 * x0[k] + c1 * x[k];
    if (t > 0) {
        st = imgd_sampler_draw(r);
        if (st != IMGD_OK) return st;
        float var = (1.0f - a_prev) / (1.0f - a_t) * (1.0f - a_t / a_prev);
        var       = var < 1e-20f ? 1e-20f : var;
        float sd  = sqrtf(var);
        for (size_t k = 0; k < r->n; k++) x[k] = x[k] + sd * r->noise[k];
    }
    return IMGD_OK;
}

/* PNDM's _get_prev_sample. */
static void pndm_prev(const imgd_sampler *s, float *x, const float *src, int32_t t, int32_t prev,
                      float *m, size_t n) {
    float a_t = s->ac[t], a_prev = prev >= 0 ? s->ac[prev] : s->final_ac;
    float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    if (s->p.prediction == IMGD_PREDICTION_V) {
        float sa = sqrtf(a_t), sb = sqrtf(b_t);
        for (size_t k = 0; k < n; k++) m[k] = sa * m[k] + sb * src[k];
    }
    float sc    = sqrtf(a_prev / a_t);
    float denom = a_t * sqrtf(b_prev) + sqrtf(a_t * b_t * a_prev);
    float d     = a_prev - a_t;
    for (size_t k = 0; k < n; k++) x[k] = sc * src[k] - d * m[k] / denom;
}

/* PNDM (PLMS, skip_prk_steps): b[3..6] = ets ring (newest at (*n_ets - 1) % 4), b[2] =
 * cur_sample, b[0] = combined output. */
static imgd_status step_pndm(imgd_sampler_state *r, int32_t i, float *x, int32_t *counter,
                             int32_t *n_ets) {
    const imgd_sampler *s = r->s;
    int32_t             t = s->its[i], prev = t - s->ratio;
    imgd_status         st = imgd_sampler_model(r, x, s->ts[i], ac_sigma(s, s->its[i]), false);
    if (st != IMGD_OK) return st;
    if (*counter != 1) {
        memcpy(r->b[3 + (*n_ets % 4)], r->mo, r->n * sizeof *r->mo);
        (*n_ets)++;
    } else {
        prev = t;
        t    = t + s->ratio;
    }
    int32_t      ne  = *n_ets < 4 ? *n_ets : 4;
    const float *e1  = r->b[3 + (*n_ets - 1) % 4];
    const float *e2  = *n_ets >= 2 ? r->b[3 + (*n_ets - 2) % 4] : NULL;
    const float *e3  = *n_ets >= 3 ? r->b[3 + (*n_ets - 3) % 4] : NULL;
    const float *e4  = *n_ets >= 4 ? r->b[3 + (*n_ets - 4) % 4] : NULL;
    float       *m   = r->b[0];
    const float *src = x;
    const float  c24 = (float)(1.0 / 24.0);
    for (size_t k = 0; k < r->n; k++) {
        if (ne == 1 && *counter == 0) {
            m[k]       = r->mo[k];
            r->b[2][k] = x[k];
        } else if (ne == 1 && *counter == 1) {
            m[k] = (r->mo[k] + e1[k]) / 2.0f;
        } else if (ne == 2) {
            m[k] = (3.0f * e1[k] - e2[k]) / 2.0f;
        } else if (ne == 3) {
            m[k] = (23.0f * e1[k] - 16.0f * e2[k] + 5.0f * e3[k]) / 12.0f;
        } else {
            m[k] = c24 * (55.0f * e1[k] - 59.0f * e2[k] + 37.0f * e3[k] - 9.0f * e4[k]);
        }
    }
    if (ne == 1 && *counter == 1) src = r->b[2];
    pndm_prev(s, x, src, t, prev, m, r->n);
    (*counter)++;
    return IMGD_OK;
}

static imgd_status step_lcm(imgd_sampler_state *r, int32_t i, float *x) {
    const imgd_sampler *s  = r->s;
    int32_t             t  = s->its[i];
    int32_t             pt = i + 1 < s->iters ? s->its[i + 1] : t;
    imgd_status         st = imgd_sampler_model(r, x, s->ts[i], ac_sigma(s, s->its[i]), false);
    if (st != IMGD_OK) return st;
    float  a_t = s->ac[t], a_prev = pt >= 0 ? s->ac[pt] : s->final_ac;
    float  b_prev = 1.0f - a_prev;
    float  scaled = (float)t * s->p.timestep_scaling;
    float  q      = scaled * scaled + 0.25f;
    float  c_skip = (1.0f / q) * 0.25f;
    float  c_out  = scaled / sqrtf(q);
    float *x0     = r->b[0];
    ac_x0(s, a_t, x, r->mo, x0, NULL, r->n);
    for (size_t k = 0; k < r->n; k++) x0[k] = c_out * x0[k] + c_skip * x[k];
    if (i != s->iters - 1) {
        st = imgd_sampler_draw(r);
        if (st != IMGD_OK) return st;
        float ca = sqrtf(a_prev), cb = sqrtf(b_prev);
        for (size_t k = 0; k < r->n; k++) x[k] = ca * x0[k] + cb * r->noise[k];
    } else {
        memcpy(x, x0, r->n * sizeof *x);
    }
    return IMGD_OK;
}

/* ---------------------------------------------------------------------------------- */
/* Run                                                                                 */
/* ---------------------------------------------------------------------------------- */

static imgd_status run_diffusers(imgd_sampler_state *r, float *x, int32_t first) {
    const imgd_sampler *s        = r->s;
    float               dt_saved = NAN, mid = NAN;
    int32_t             lower = 0, counter = 0, n_ets = 0;
    if (s->p.kind == IMGD_SAMPLER_UNI_PC) {
        imgd_unipc_cfg c = {.sig               = s->sig,
                            .ts                = s->ts,
                            .n_sig             = (int32_t)s->n_sig,
                            .order             = s->p.solver_order,
                            .bh2               = true,
                            .lower_order_final = true};
        return imgd_sampler_unipc(r, &c, x, first);
    }
    for (int32_t i = first; i < s->iters; i++) {
        imgd_status st;
        switch (s->p.kind) {
        case IMGD_SAMPLER_EULER: st = step_euler(r, i, x); break;
        case IMGD_SAMPLER_EULER_ANCESTRAL: st = step_euler_a(r, i, x); break;
        case IMGD_SAMPLER_HEUN: st = step_heun(r, i, x, &dt_saved); break;
        case IMGD_SAMPLER_DPMPP_2M:
        case IMGD_SAMPLER_DPMPP_2M_SDE: st = step_dpm(r, i, first, x, &lower); break;
        case IMGD_SAMPLER_DPMPP_SDE: st = step_dpm_sde(r, i, x, &mid); break;
        case IMGD_SAMPLER_DDIM: st = step_ddim(r, i, x); break;
        case IMGD_SAMPLER_DDPM: st = step_ddpm(r, i, x); break;
        case IMGD_SAMPLER_PNDM: st = step_pndm(r, i, x, &counter, &n_ets); break;
        case IMGD_SAMPLER_LCM: st = step_lcm(r, i, x); break;
        default:
            st = imgd_fail(IMGD_E_INTERNAL, "sampler %d has no diffusers step", (int)s->p.kind);
            break;
        }
        if (st == IMGD_OK) st = imgd_sampler_notify(r, i, x);
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

imgd_status imgd_sampler_run(const imgd_sampler *s, float *x, size_t n, int32_t first_step,
                             const imgd_sampler_io *io) {
    if (!s || !x || !io || !io->denoise) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_sampler_run: NULL sampler, x or denoiser");
    }
    if (first_step < 0 || first_step > s->iters) {
        return imgd_fail(IMGD_E_INVALID_ARG, "first_step %d is outside 0..%d", (int)first_step,
                         (int)s->iters);
    }
    if (n == 0 || first_step == s->iters) return IMGD_OK;
    const size_t nbuf = 3 + IMGD_ARRAY_LEN(((imgd_sampler_state *)0)->b);
    size_t       bytes;
    if (!imgd_size_mul(n, nbuf * sizeof(float), &bytes)) {
        return imgd_fail(IMGD_E_TOO_LARGE, "sampler workspace for %zu floats overflows", n);
    }
    float *ws = imgd_calloc(1, bytes);
    if (!ws) return imgd_fail(IMGD_E_NOMEM, "sampler workspace of %zu bytes", bytes);
    imgd_sampler_state r = {.s = s, .io = io, .n = n, .xin = ws, .mo = ws + n, .noise = ws + 2 * n};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(r.b); i++) r.b[i] = ws + (3 + i) * n;
    imgd_status st =
        s->kdiff ? imgd_sampler_run_kdiff(&r, x, first_step) : run_diffusers(&r, x, first_step);
    imgd_free(ws);
    return st;
}
