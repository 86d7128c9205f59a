/* k-diffusion samplers as ComfyUI runs them (comfy/k_diffusion/sampling.py over
 * ModelSamplingDiscrete), and UniPC (diffusers' UniPCMultistepScheduler and ComfyUI's
 * uni_pc share the update). x is in k-diffusion space: latent + sigma * noise. */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "sampling/sampler_impl.h"

#if defined(__clang__)
#    pragma STDC FP_CONTRACT OFF
#endif

/* ---------------------------------------------------------------------------------- */
/* The denoiser in k-diffusion form                                                    */
/* ---------------------------------------------------------------------------------- */

/* ComfyUI's model call: input / sqrt(sigma^2 + 1), integer timestep of the nearest table
 * sigma, then calculate_denoised (EPS or V; LCM's boundary condition for the lcm
 * sampler). The denoised x0 lands in out. */
static imgd_status kdenoise(imgd_sampler_state *r, const float *x, float sigma, float *out) {
    const imgd_sampler *s  = r->s;
    int32_t             t  = imgd_schedule_comfy_timestep(s->klog, (size_t)s->n_train, sigma);
    float               q  = sigma * sigma + 1.0f;
    imgd_status         st = imgd_sampler_model(r, x, (float)t, sigma, true);
    if (st != IMGD_OK) return st;
    const float *mo = r->mo;
    if (s->p.prediction == IMGD_PREDICTION_V) {
        float sq = sqrtf(q);
        for (size_t k = 0; k < r->n; k++) out[k] = x[k] * 1.0f / q - mo[k] * sigma * 1.0f / sq;
    } else {
        for (size_t k = 0; k < r->n; k++) out[k] = x[k] - mo[k] * sigma;
    }
    if (s->p.kind == IMGD_SAMPLER_LCM) {
        float scaled = (float)t * s->p.timestep_scaling;
        float q2     = scaled * scaled + 0.25f;
        float c_skip = (1.0f / q2) * 0.25f;
        float c_out  = scaled / sqrtf(q2);
        for (size_t k = 0; k < r->n; k++) out[k] = c_out * out[k] + c_skip * x[k];
    }
    return IMGD_OK;
}

/* get_ancestral_step(sigma_from, sigma_to, eta) -> (down, up). */
static void ancestral(float from, float to, float eta, float *down, float *up) {
    if (eta == 0.0f) {
        *down = to;
        *up   = 0.0f;
        return;
    }
    float u = eta * sqrtf(to * to * (from * from - to * to) / (from * from));
    *up     = u < to ? u : to;
    *down   = sqrtf(to * to - *up * *up);
}

/* ---------------------------------------------------------------------------------- */
/* Samplers (one loop iteration each)                                                  */
/* ---------------------------------------------------------------------------------- */

static imgd_status k_euler(imgd_sampler_state *r, int32_t i, float *x) {
    const float *sg = r->s->sig;
    float       *dn = r->b[0];
    imgd_status  st = kdenoise(r, x, sg[i], dn);
    if (st != IMGD_OK) return st;
    float dt = sg[i + 1] - sg[i];
    for (size_t k = 0; k < r->n; k++) x[k] = x[k] + (x[k] - dn[k]) / sg[i] * dt;
    return IMGD_OK;
}

static imgd_status k_euler_a(imgd_sampler_state *r, int32_t i, float *x) {
    const float *sg = r->s->sig;
    float       *dn = r->b[0];
    imgd_status  st = kdenoise(r, x, sg[i], dn);
    if (st != IMGD_OK) return st;
    float down, up;
    ancestral(sg[i], sg[i + 1], r->s->p.eta, &down, &up);
    float dt = down - sg[i];
    for (size_t k = 0; k < r->n; k++) x[k] = x[k] + (x[k] - dn[k]) / sg[i] * dt;
    if (sg[i + 1] > 0.0f) {
        st = imgd_sampler_draw(r);
        if (st != IMGD_OK) return st;
        for (size_t k = 0; k < r->n; k++) x[k] = x[k] + r->noise[k] * 1.0f * up;
    }
    return IMGD_OK;
}

static imgd_status k_heun(imgd_sampler_state *r, int32_t i, float *x) {
    const float *sg = r->s->sig;
    float       *dn = r->b[0], *d = r->b[1], *x2 = r->b[2];
    imgd_status  st = kdenoise(r, x, sg[i], dn);
    if (st != IMGD_OK) return st;
    float dt = sg[i + 1] - sg[i];
    for (size_t k = 0; k < r->n; k++) d[k] = (x[k] - dn[k]) / sg[i];
    if (sg[i + 1] == 0.0f) {
        for (size_t k = 0; k < r->n; k++) x[k] = x[k] + d[k] * dt;
        return IMGD_OK;
    }
    for (size_t k = 0; k < r->n; k++) x2[k] = x[k] + d[k] * dt;
    st = kdenoise(r, x2, sg[i + 1], dn);
    if (st != IMGD_OK) return st;
    for (size_t k = 0; k < r->n; k++) {
        float d2 = (x2[k] - dn[k]) / sg[i + 1];
        x[k]     = x[k] + (d[k] + d2) / 2.0f * dt;
    }
    return IMGD_OK;
}

/* b[3] = old_denoised; *have_old tells whether it is set. */
static imgd_status k_dpmpp_2m(imgd_sampler_state *r, int32_t i, float *x, bool *have_old) {
    const float *sg = r->s->sig;
    float       *dn = r->b[0], *old = r->b[3];
    imgd_status  st = kdenoise(r, x, sg[i], dn);
    if (st != IMGD_OK) return st;
    float t = -logf(sg[i]), t_next = -logf(sg[i + 1]);
    float h = t_next - t;
    float c = expf(-t_next) / expf(-t), e = expm1f(-h);
    if (!*have_old || sg[i + 1] == 0.0f) {
        for (size_t k = 0; k < r->n; k++) x[k] = c * x[k] - e * dn[k];
    } else {
        float h_last = t - -logf(sg[i - 1]);
        float rr     = h_last / h;
        float q      = 1.0f / (2.0f * rr);
        float a      = 1.0f + q;
        for (size_t k = 0; k < r->n; k++) x[k] = c * x[k] - e * (a * dn[k] - q * old[k]);
    }
    memcpy(old, dn, r->n * sizeof *dn);
    *have_old = true;
    return IMGD_OK;
}

/* b[3] = old_denoised; *h_last is NAN until set. Midpoint solver, eta = params.eta. */
static imgd_status k_dpmpp_2m_sde(imgd_sampler_state *r, int32_t i, float *x, bool *have_old,
                                  float *h_last) {
    const float *sg  = r->s->sig;
    const float  eta = r->s->p.eta;
    float       *dn = r->b[0], *old = r->b[3];
    imgd_status  st = kdenoise(r, x, sg[i], dn);
    if (st != IMGD_OK) return st;
    float h = NAN;
    if (sg[i + 1] == 0.0f) {
        memcpy(x, dn, r->n * sizeof *x);
    } else {
        float t = -logf(sg[i]), s = -logf(sg[i + 1]);
        h           = s - t;
        float eta_h = eta * h;
        float c     = sg[i + 1] / sg[i] * expf(-eta_h);
        float a     = -expm1f(-h - eta_h);
        for (size_t k = 0; k < r->n; k++) x[k] = c * x[k] + a * dn[k];
        if (*have_old) {
            float rr = *h_last / h;
            float m  = 0.5f * a * (1.0f / rr);
            for (size_t k = 0; k < r->n; k++) x[k] = x[k] + m * (dn[k] - old[k]);
        }
        if (eta != 0.0f) {
            st = imgd_sampler_draw(r);
            if (st != IMGD_OK) return st;
            float q = sqrtf(-expm1f(-2.0f * eta_h));
            for (size_t k = 0; k < r->n; k++) x[k] = x[k] + r->noise[k] * sg[i + 1] * q * 1.0f;
        }
    }
    memcpy(old, dn, r->n * sizeof *dn);
    *have_old = true;
    *h_last   = h;
    return IMGD_OK;
}

static imgd_status k_dpmpp_sde(imgd_sampler_state *r, int32_t i, float *x) {
    const float *sg  = r->s->sig;
    const float  eta = r->s->p.eta;
    float       *dn = r->b[0], *x2 = r->b[1], *dn2 = r->b[2];
    imgd_status  st = kdenoise(r, x, sg[i], dn);
    if (st != IMGD_OK) return st;
    if (sg[i + 1] == 0.0f) {
        float dt = sg[i + 1] - sg[i];
        for (size_t k = 0; k < r->n; k++) x[k] = x[k] + (x[k] - dn[k]) / sg[i] * dt;
        return IMGD_OK;
    }
    const float rr = 0.5f, fac = 1.0f; /* r = 1/2, fac = 1 / (2 r) */
    float       t = -logf(sg[i]), t_next = -logf(sg[i + 1]);
    float       h = t_next - t, s = t + h * rr;
    float       sd, su;
    ancestral(expf(-t), expf(-s), eta, &sd, &su);
    float s_ = -logf(sd);
    float c1 = expf(-s_) / expf(-t), e1 = expm1f(t - s_);
    st = imgd_sampler_draw(r);
    if (st != IMGD_OK) return st;
    for (size_t k = 0; k < r->n; k++) {
        x2[k] = c1 * x[k] - e1 * dn[k];
        x2[k] = x2[k] + r->noise[k] * 1.0f * su;
    }
    st = kdenoise(r, x2, expf(-s), dn2);
    if (st != IMGD_OK) return st;
    ancestral(expf(-t), expf(-t_next), eta, &sd, &su);
    float tn_ = -logf(sd);
    float c2 = expf(-tn_) / expf(-t), e2 = expm1f(t - tn_);
    st = imgd_sampler_draw(r);
    if (st != IMGD_OK) return st;
    for (size_t k = 0; k < r->n; k++) {
        float dd = (1.0f - fac) * dn[k] + fac * dn2[k];
        x[k]     = c2 * x[k] - e2 * dd;
        x[k]     = x[k] + r->noise[k] * 1.0f * su;
    }
    return IMGD_OK;
}

static imgd_status k_lcm(imgd_sampler_state *r, int32_t i, float *x) {
    const float *sg = r->s->sig;
    imgd_status  st = kdenoise(r, x, sg[i], x);
    if (st != IMGD_OK || !(sg[i + 1] > 0.0f)) return st;
    st = imgd_sampler_draw(r);
    if (st != IMGD_OK) return st;
    for (size_t k = 0; k < r->n; k++) x[k] = r->noise[k] * sg[i + 1] + x[k];
    return IMGD_OK;
}

static imgd_status k_ddpm(imgd_sampler_state *r, int32_t i, float *x) {
    const float *sg = r->s->sig;
    float       *dn = r->b[0];
    imgd_status  st = kdenoise(r, x, sg[i], dn);
    if (st != IMGD_OK) return st;
    float s = sg[i], sp = sg[i + 1];
    float ac = 1.0f / (s * s + 1.0f), acp = 1.0f / (sp * sp + 1.0f);
    float alpha = ac / acp;
    float c0    = sqrtf(1.0f / alpha);
    float cn    = sqrtf(1.0f - ac);
    float div   = sqrtf(1.0f + s * s);
    for (size_t k = 0; k < r->n; k++) {
        float eps = (x[k] - dn[k]) / s;
        float xs  = x[k] / div;
        x[k]      = c0 * (xs - (1.0f - alpha) * eps / cn);
    }
    if (sp > 0.0f) {
        st = imgd_sampler_draw(r);
        if (st != IMGD_OK) return st;
        float c = sqrtf((1.0f - alpha) * (1.0f - acp) / (1.0f - ac));
        float m = sqrtf(1.0f + sp * sp);
        for (size_t k = 0; k < r->n; k++) {
            x[k] = x[k] + c * r->noise[k];
            x[k] = x[k] * m;
        }
    }
    return IMGD_OK;
}

/* ComfyUI's uni_pc: UniPC bh1 of order min(3, steps - 1) over the sigmas with the final 0
 * replaced by 0.001, on the VP sample; the result is divided by alpha(0.001). */
static imgd_status k_unipc(imgd_sampler_state *r, float *x, int32_t first) {
    const imgd_sampler *s = r->s;
    int32_t             n = (int32_t)s->n_sig;
    float               local[1002]; /* steps + 2 at most */
    if ((size_t)n > IMGD_ARRAY_LEN(local)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "uni_pc: %d sigmas exceed %zu", n,
                         IMGD_ARRAY_LEN(local));
    }
    memcpy(local, s->sig, (size_t)n * sizeof *local);
    if (local[n - 1] == 0.0f) local[n - 1] = 0.001f;
    int32_t order = n - 2 < 3 ? n - 2 : 3;
    if (order < 1) order = 1;
    float a0 = 1.0f / sqrtf(local[first] * local[first] + 1.0f);
    for (size_t k = 0; k < r->n; k++) x[k] = x[k] * a0;
    imgd_unipc_cfg c  = {.sig               = local,
                         .ts                = s->ts,
                         .n_sig             = n,
                         .order             = order,
                         .bh2               = false,
                         .lower_order_final = true};
    imgd_status    st = imgd_sampler_unipc(r, &c, x, first);
    float          al = 1.0f / sqrtf(local[n - 1] * local[n - 1] + 1.0f);
    for (size_t k = 0; k < r->n; k++) x[k] = x[k] / al;
    return st;
}

imgd_status imgd_sampler_run_kdiff(imgd_sampler_state *r, float *x, int32_t first) {
    const imgd_sampler *s        = r->s;
    bool                have_old = false;
    float               h_last   = NAN;
    if (s->p.kind == IMGD_SAMPLER_UNI_PC) return k_unipc(r, x, first);
    for (int32_t i = first; i < s->iters; i++) {
        imgd_status st;
        switch (s->p.kind) {
        case IMGD_SAMPLER_EULER:
        case IMGD_SAMPLER_DDIM: st = k_euler(r, i, x); break;
        case IMGD_SAMPLER_EULER_ANCESTRAL: st = k_euler_a(r, i, x); break;
        case IMGD_SAMPLER_HEUN: st = k_heun(r, i, x); break;
        case IMGD_SAMPLER_DPMPP_2M: st = k_dpmpp_2m(r, i, x, &have_old); break;
        case IMGD_SAMPLER_DPMPP_2M_SDE: st = k_dpmpp_2m_sde(r, i, x, &have_old, &h_last); break;
        case IMGD_SAMPLER_DPMPP_SDE: st = k_dpmpp_sde(r, i, x); break;
        case IMGD_SAMPLER_LCM: st = k_lcm(r, i, x); break;
        case IMGD_SAMPLER_DDPM: st = k_ddpm(r, i, x); break;
        default:
            st = imgd_fail(IMGD_E_UNSUPPORTED, "sampler %s has no k-diffusion form",
                           imgd_sampler_kind_name(s->p.kind));
            break;
        }
        if (st == IMGD_OK) st = imgd_sampler_notify(r, i, x);
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

/* ---------------------------------------------------------------------------------- */
/* UniPC                                                                               */
/* ---------------------------------------------------------------------------------- */

typedef struct unipc_pt {
    float alpha, sigma, lambda;
} unipc_pt;

static unipc_pt unipc_at(float sigma) {
    unipc_pt v;
    v.alpha  = 1.0f / sqrtf(sigma * sigma + 1.0f);
    v.sigma  = sigma * v.alpha;
    v.lambda = logf(v.alpha) - logf(v.sigma);
    return v;
}

/* Solves a (k x k, k <= 3) by Gaussian elimination with partial pivoting (torch's
 * linalg.solve is LAPACK sgesv: the same method). */
static void solve_small(float a[3][3], float *b, int k, float *out) {
    for (int c = 0; c < k; c++) {
        int p = c;
        for (int i = c + 1; i < k; i++) {
            if (fabsf(a[i][c]) > fabsf(a[p][c])) p = i;
        }
        if (p != c) {
            for (int j = 0; j < k; j++) {
                float t = a[c][j];
                a[c][j] = a[p][j];
                a[p][j] = t;
            }
            float t = b[c];
            b[c]    = b[p];
            b[p]    = t;
        }
        for (int i = c + 1; i < k; i++) {
            float f = a[i][c] / a[c][c];
            for (int j = c; j < k; j++) a[i][j] = a[i][j] - f * a[c][j];
            b[i] = b[i] - f * b[c];
        }
    }
    for (int i = k - 1; i >= 0; i--) {
        float v = b[i];
        for (int j = i + 1; j < k; j++) v = v - a[i][j] * out[j];
        out[i] = v / a[i][i];
    }
}

/* The R matrix, b vector and B(h) of one update (hh = -h, predict_x0). */
static void unipc_coeffs(float h, const float *rks, int order, bool bh2, float R[3][3], float *b,
                         float *B_h, float *h_phi_1) {
    float hh   = -h;
    *h_phi_1   = expm1f(hh);
    float phik = *h_phi_1 / hh - 1.0f;
    float fact = 1.0f;
    *B_h       = bh2 ? expm1f(hh) : hh;
    for (int i = 1; i <= order; i++) {
        for (int k = 0; k < order; k++) R[i - 1][k] = i == 1 ? 1.0f : powf(rks[k], (float)(i - 1));
        b[i - 1] = phik * fact / *B_h;
        fact *= (float)(i + 1);
        phik = phik / hh - (float)(1.0 / (double)fact);
    }
}

/* M[j] = the j-th newest x0 prediction (M[0] newest). */
static void unipc_update(const imgd_unipc_cfg *c, int32_t t_idx, int32_t s0_idx, int order,
                         float *const *M, const float *base, const float *model_t, bool corrector,
                         float *x, size_t n) {
    unipc_pt t = unipc_at(c->sig[t_idx]), s0 = unipc_at(c->sig[s0_idx]);
    float    h = t.lambda - s0.lambda;
    float    rks[3], R[3][3], b[3], rhos[3] = {0.5f, 0.0f, 0.0f}, B_h, h_phi_1;
    int      K = order - 1; /* history differences */
    for (int k = 1; k <= K; k++) {
        unipc_pt si = unipc_at(c->sig[s0_idx - k]);
        rks[k - 1]  = (si.lambda - s0.lambda) / h;
    }
    rks[K] = 1.0f;
    unipc_coeffs(h, rks, order, c->bh2, R, b, &B_h, &h_phi_1);
    if (!corrector && order >= 3) {
        solve_small(R, b, order - 1, rhos);
    } else if (corrector && order >= 2) {
        solve_small(R, b, order, rhos);
    }
    const float *m0 = M[0];
    float        cx = t.sigma / s0.sigma, cm = t.alpha * h_phi_1, cb = t.alpha * B_h;
    for (size_t k = 0; k < n; k++) {
        float res = 0.0f;
        for (int j = 1; j <= K; j++) res = res + rhos[j - 1] * ((M[j][k] - m0[k]) / rks[j - 1]);
        if (corrector) res = res + rhos[K] * (model_t[k] - m0[k]);
        float xt = cx * base[k] - cm * m0[k];
        x[k]     = xt - cb * res;
    }
}

imgd_status imgd_sampler_unipc(imgd_sampler_state *r, const imgd_unipc_cfg *c, float *x,
                               int32_t first) {
    const imgd_sampler *s     = r->s;
    const int32_t       iters = c->n_sig - 1;
    float              *M[3]  = {r->b[3], r->b[4], r->b[5]};
    float              *x0 = r->b[0], *last = r->b[2], *tmp = r->b[6];
    int32_t             this_order = 0, lower = 0, have = 0;
    for (int32_t i = first; i < iters; i++) {
        imgd_status st = imgd_sampler_model(r, x, c->ts[i], c->sig[i], false);
        if (st != IMGD_OK) return st;
        imgd_sampler_vp_x0(s, c->sig[i], x, r->mo, x0, r->n);
        if (i > first) {
            /* corrector: t = i, s0 = i - 1, history from M (not yet shifted) */
            unipc_update(c, i, i - 1, this_order, M, last, x0, true, x, r->n);
        }
        float *oldest = M[2];
        M[2]          = M[1];
        M[1]          = M[0];
        M[0]          = oldest;
        memcpy(M[0], x0, r->n * sizeof *x0);
        have      = have < 3 ? have + 1 : 3;
        int32_t o = c->lower_order_final ? (c->order < iters - i ? c->order : iters - i) : c->order;
        this_order = o < lower + 1 ? o : lower + 1;
        if (this_order > have) this_order = have;
        memcpy(last, x, r->n * sizeof *x);
        unipc_update(c, i + 1, i, this_order, M, last, NULL, false, x, r->n);
        if (lower < c->order) lower++;
        if (s->kdiff) {
            /* the step callback sees k-diffusion space; take its edits back */
            float a = 1.0f / sqrtf(c->sig[i + 1] * c->sig[i + 1] + 1.0f);
            for (size_t k = 0; k < r->n; k++) tmp[k] = x[k] / a;
            st = imgd_sampler_notify(r, i, tmp);
            for (size_t k = 0; k < r->n; k++) x[k] = tmp[k] * a;
        } else {
            st = imgd_sampler_notify(r, i, x);
        }
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}
