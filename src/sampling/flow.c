/* FlowMatchEulerDiscreteScheduler (see flow.h). Follows diffusers 0.30
 * schedulers/scheduling_flow_match_euler_discrete.py and pipelines/flux/pipeline_flux.py
 * (calculate_shift, the linspace sigmas) operation by operation, keeping numpy's float64
 * and torch's f32 where each computes. */
#include "sampling/flow.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"

#define FLOW_STEPS_MAX 1000

struct imgd_flow_schedule {
    int32_t steps;
    float  *timesteps; /* [steps] */
    float  *sigmas;    /* [steps + 1], last 0 */
};

imgd_flow_params imgd_flow_params_default(void) {
    imgd_flow_params p     = {0};
    p.num_train_timesteps  = 1000;
    p.shift                = 3.0;
    p.base_shift           = 0.5;
    p.max_shift            = 1.15;
    p.base_image_seq_len   = 256;
    p.max_image_seq_len    = 4096;
    p.use_dynamic_shifting = true;
    return p;
}

double imgd_flow_mu(const imgd_flow_params *p, int64_t image_seq_len) {
    double m =
        (p->max_shift - p->base_shift) / (double)(p->max_image_seq_len - p->base_image_seq_len);
    double b = p->base_shift - m * (double)p->base_image_seq_len;
    return (double)image_seq_len * m + b;
}

/* A number field: true and *v set when present and numeric; a present non-number sets
 * *bad. */
static bool json_num(const cJSON *j, const char *k, double *v, const char **bad) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!f || cJSON_IsNull(f)) return false;
    if (!cJSON_IsNumber(f)) {
        *bad = k;
        return false;
    }
    *v = f->valuedouble;
    return true;
}

imgd_status imgd_flow_params_from_json(const char *what, const char *text, size_t len,
                                       imgd_flow_params *out) {
    if (!what || !text || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_flow_params_from_json: NULL argument");
    cJSON      *j  = NULL;
    imgd_status st = imgd_json_parse(what, text, len, 1u << 20, 16, &j);
    if (st != IMGD_OK) return st;
    imgd_flow_params p     = imgd_flow_params_default();
    const char      *bad   = NULL;
    double           v     = 0.0;
    p.shift                = 1.0; /* the class defaults, not FLUX.1-dev's file */
    p.use_dynamic_shifting = false;
    const cJSON *cls       = cJSON_GetObjectItemCaseSensitive(j, "_class_name");
    const cJSON *dyn       = cJSON_GetObjectItemCaseSensitive(j, "use_dynamic_shifting");
    if (cJSON_IsString(cls) && strcmp(cls->valuestring, "FlowMatchEulerDiscreteScheduler") != 0) {
        st = imgd_fail(IMGD_E_UNSUPPORTED,
                       "%s: _class_name '%s' is not FlowMatchEulerDiscreteScheduler (a flow-"
                       "matching model's scheduler config was expected)",
                       what, cls->valuestring);
        goto done;
    }
    if (json_num(j, "num_train_timesteps", &v, &bad)) p.num_train_timesteps = (int32_t)v;
    if (json_num(j, "shift", &v, &bad)) p.shift = v;
    if (json_num(j, "base_shift", &v, &bad)) p.base_shift = v;
    if (json_num(j, "max_shift", &v, &bad)) p.max_shift = v;
    if (json_num(j, "base_image_seq_len", &v, &bad)) p.base_image_seq_len = (int32_t)v;
    if (json_num(j, "max_image_seq_len", &v, &bad)) p.max_image_seq_len = (int32_t)v;
    if (dyn && !cJSON_IsNull(dyn) && !cJSON_IsBool(dyn)) bad = "use_dynamic_shifting";
    if (cJSON_IsBool(dyn)) p.use_dynamic_shifting = cJSON_IsTrue(dyn);
    if (bad) {
        st = imgd_fail(IMGD_E_FORMAT, "%s: field '%s' has the wrong type", what, bad);
        goto done;
    }
    if (p.num_train_timesteps < 1 || p.num_train_timesteps > 100000 || !(p.shift > 0.0) ||
        (p.use_dynamic_shifting && p.max_image_seq_len == p.base_image_seq_len)) {
        st = imgd_fail(IMGD_E_INVALID_ARG,
                       "%s: num_train_timesteps %d must be 1..100000, shift %g positive, and "
                       "with dynamic shifting max_image_seq_len (%d) must differ from "
                       "base_image_seq_len (%d)",
                       what, (int)p.num_train_timesteps, p.shift, (int)p.max_image_seq_len,
                       (int)p.base_image_seq_len);
        goto done;
    }
    *out = p;
done:
    cJSON_Delete(j);
    return st;
}

/* numpy.linspace(start, stop, n) in float64: i * step + start, the last element = stop. */
static void linspace(double start, double stop, int32_t n, double *out) {
    if (n == 1) {
        out[0] = start;
        return;
    }
    double step = (stop - start) / (double)(n - 1);
    for (int32_t i = 0; i < n; i++) out[i] = (double)i * step + start;
    out[n - 1] = stop;
}

void imgd_flow_flux_sigmas(int32_t steps, double *out) {
    if (steps < 1) return;
    linspace(1.0, 1.0 / (double)steps, steps, out);
}

/* The scheduler's training-table sigma of timestep t (1..T) as torch computes it in f32,
 * with the static shift applied when dynamic shifting is off. */
static float table_sigma(const imgd_flow_params *p, int32_t t) {
    float s = (float)t / (float)p->num_train_timesteps;
    if (p->use_dynamic_shifting) return s;
    float sh = (float)p->shift, num = sh * s, den = 1.0f + (float)(p->shift - 1.0) * s;
    return num / den;
}

static imgd_status check_params(const imgd_flow_params *p, int32_t steps, double mu) {
    if (!p) return imgd_fail(IMGD_E_INVALID_ARG, "flow: params is NULL");
    if (p->num_train_timesteps < 1 || p->num_train_timesteps > 100000)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flow: num_train_timesteps = %d (expected 1..100000; FLUX/SD3 use 1000)",
                         (int)p->num_train_timesteps);
    if (steps < 1 || steps > FLOW_STEPS_MAX)
        return imgd_fail(IMGD_E_INVALID_ARG, "flow: steps = %d (expected 1..%d)", (int)steps,
                         FLOW_STEPS_MAX);
    if (!p->use_dynamic_shifting && !(p->shift > 0.0 && isfinite(p->shift)))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flow: shift = %g; a static shift must be positive (1.0 = none)",
                         p->shift);
    if (p->use_dynamic_shifting && !isfinite(mu))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flow: dynamic shifting needs a finite mu (imgd_flow_mu of the image "
                         "sequence length), got %g",
                         mu);
    return IMGD_OK;
}

imgd_status imgd_flow_schedule_new(const imgd_flow_params *p, int32_t steps, const double *sigmas,
                                   double mu, imgd_flow_schedule **out) {
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_flow_schedule_new: out is NULL");
    imgd_status st = check_params(p, steps, mu);
    if (st != IMGD_OK) return st;
    double *base = imgd_malloc((size_t)steps * sizeof *base);
    if (!base) return imgd_fail(IMGD_E_NOMEM, "flow: out of memory");
    if (sigmas) {
        for (int32_t i = 0; i < steps; i++) {
            if (!(sigmas[i] > 0.0 && sigmas[i] <= 1.0)) {
                imgd_free(base);
                return imgd_fail(IMGD_E_INVALID_ARG,
                                 "flow: sigmas[%d] = %g is outside (0, 1] (flow-matching noise "
                                 "levels run from 1 = pure noise towards 0)",
                                 (int)i, sigmas[i]);
            }
            base[i] = sigmas[i];
        }
    } else { /* the scheduler's own spacing between its table's ends */
        double T = (double)p->num_train_timesteps;
        linspace((double)table_sigma(p, p->num_train_timesteps) * T, (double)table_sigma(p, 1) * T,
                 steps, base);
        for (int32_t i = 0; i < steps; i++) base[i] /= T;
    }
    imgd_flow_schedule *s = imgd_calloc(1, sizeof *s);
    if (s) {
        s->timesteps = imgd_malloc((size_t)steps * sizeof *s->timesteps);
        s->sigmas    = imgd_malloc((size_t)(steps + 1) * sizeof *s->sigmas);
    }
    if (!s || !s->timesteps || !s->sigmas) {
        imgd_free(base);
        imgd_flow_schedule_free(s);
        return imgd_fail(IMGD_E_NOMEM, "flow: out of memory");
    }
    s->steps  = steps;
    double em = exp(mu);
    for (int32_t i = 0; i < steps; i++) {
        double sg       = base[i];
        sg              = p->use_dynamic_shifting ? em / (em + (1.0 / sg - 1.0))
                                                  : p->shift * sg / (1.0 + (p->shift - 1.0) * sg);
        s->sigmas[i]    = (float)sg;
        s->timesteps[i] = s->sigmas[i] * (float)p->num_train_timesteps;
    }
    s->sigmas[steps] = 0.0f;
    imgd_free(base);
    *out = s;
    return IMGD_OK;
}

void imgd_flow_schedule_free(imgd_flow_schedule *s) {
    if (!s) return;
    imgd_free(s->timesteps);
    imgd_free(s->sigmas);
    imgd_free(s);
}

int32_t imgd_flow_steps(const imgd_flow_schedule *s) {
    return s->steps;
}

const float *imgd_flow_timesteps(const imgd_flow_schedule *s) {
    return s->timesteps;
}

const float *imgd_flow_sigmas(const imgd_flow_schedule *s) {
    return s->sigmas;
}

float imgd_flow_model_t(const imgd_flow_schedule *s, int32_t i) {
    return s->timesteps[i] / 1000.0f;
}

void imgd_flow_step(const imgd_flow_schedule *s, int32_t i, float *x, const float *v, size_t n) {
    float d = s->sigmas[i + 1] - s->sigmas[i];
    for (size_t k = 0; k < n; k++) {
        float p = d * v[k]; /* two statements: no fused multiply-add, as torch */
        x[k]    = x[k] + p;
    }
}

imgd_status imgd_flow_scale_noise(const imgd_flow_schedule *s, int32_t i, const float *x0,
                                  const float *noise, size_t n, float *out) {
    if (!s || i < 0 || i >= s->steps)
        return imgd_fail(IMGD_E_INVALID_ARG, "flow: scale_noise at step %d of %d", (int)i,
                         s ? (int)s->steps : 0);
    float sg = s->sigmas[i], om = 1.0f - sg;
    for (size_t k = 0; k < n; k++) {
        float a = sg * noise[k], b = om * x0[k];
        out[k] = a + b;
    }
    return IMGD_OK;
}

imgd_status imgd_flow_run(const imgd_flow_schedule *s, float *x, size_t n, int32_t first_step,
                          float *v_scratch, imgd_flow_denoise_fn denoise, void *denoise_user,
                          imgd_flow_step_fn on_step, void *step_user) {
    if (!s || !x || !v_scratch || !denoise)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_flow_run: NULL schedule, x, scratch or denoise");
    if (first_step < 0 || first_step > s->steps)
        return imgd_fail(IMGD_E_INVALID_ARG, "flow: first_step %d outside [0, %d]", (int)first_step,
                         (int)s->steps);
    for (int32_t i = first_step; i < s->steps; i++) {
        imgd_status st = denoise(denoise_user, x, n, imgd_flow_model_t(s, i), v_scratch);
        if (st != IMGD_OK) return st;
        imgd_flow_step(s, i, x, v_scratch, n);
        if (on_step) {
            st = on_step(step_user, i, s->steps, x, n);
            if (st != IMGD_OK) return st;
        }
    }
    return IMGD_OK;
}
