/* sampling/schedule and sampling/sampler without goldens: hand-computed small cases of
 * the spacings and ComfyUI schedulers, and an exact-oracle denoiser (it knows x0, so it
 * returns the noise that makes the prediction exact) with which every sampler, on every
 * schedule, must land on x0. */
#include "base/alloc.h"
#include "sampling/sampler.h"
#include "sampling/schedule.h"
#include "test.h"

/* ---- numeric helpers ---------------------------------------------------------------- */

static void test_schedule_torch_linspace_small(void) {
    float v[5];
    imgd_schedule_torch_linspace(0.0f, 1.0f, 5, v);
    CHECK(v[0] == 0.0f && v[1] == 0.25f && v[2] == 0.5f && v[3] == 0.75f && v[4] == 1.0f);
    float w[20];
    imgd_schedule_torch_linspace(999.0f, 0.0f, 20, w); /* one vector turn + scalar tail */
    CHECK(w[0] == 999.0f && w[19] == 0.0f);
    for (int i = 0; i < 20; i++) CHECK_NEAR(w[i], 999.0 - 999.0 / 19.0 * i, 1e-3);
}

static void test_schedule_numpy_linspace_arange_interp(void) {
    double v[4];
    imgd_schedule_np_linspace(0.0, 50.0, 4, false, v);
    CHECK(v[0] == 0.0 && v[1] == 12.5 && v[2] == 25.0 && v[3] == 37.5);
    double a[4];
    CHECK_EQ_INT(imgd_schedule_np_arange(1000.0, 0.0, -1000.0 / 3.0, a, 4), 3);
    CHECK(a[0] == 1000.0);
    CHECK_NEAR(a[2], 1000.0 / 3.0, 1e-9);
    const float fp[3] = {1.0f, 3.0f, 7.0f};
    CHECK(imgd_schedule_np_interp(0.5, fp, 3) == 2.0);
    CHECK(imgd_schedule_np_interp(1.25, fp, 3) == 4.0);
    CHECK(imgd_schedule_np_interp(5.0, fp, 3) == 7.0);
}

static void test_schedule_diffusers_spacings(void) {
    double t[50];
    imgd_schedule_spacing_timesteps(IMGD_SPACING_LEADING, 1000, 50, 1, false, false, t);
    CHECK(t[0] == 981.0 && t[1] == 961.0 && t[49] == 1.0);
    imgd_schedule_spacing_timesteps(IMGD_SPACING_TRAILING, 1000, 5, 1, false, false, t);
    CHECK(t[0] == 999.0 && t[1] == 799.0 && t[4] == 199.0);
    imgd_schedule_spacing_timesteps(IMGD_SPACING_TRAILING, 1000, 3, 0, false, false, t);
    CHECK(t[0] == 999.0 && t[1] == 666.0 &&
          t[2] == 332.0); /* round(666.67) - 1, round(333.3) - 1 */
    /* DDIM linspace: np.linspace(0, 999, 5).round()[::-1]; 499.5 rounds to even */
    imgd_schedule_spacing_timesteps(IMGD_SPACING_LINSPACE, 1000, 5, 1, false, true, t);
    CHECK(t[0] == 999.0 && t[1] == 749.0 && t[2] == 500.0 && t[3] == 250.0 && t[4] == 0.0);
    /* DPMSolver: steps + 1 points, the last dropped */
    imgd_schedule_spacing_timesteps(IMGD_SPACING_LINSPACE, 1000, 5, 1, true, false, t);
    CHECK(t[0] == 999.0 && t[1] == 799.0 && t[2] == 599.0 && t[3] == 400.0 && t[4] == 200.0);
    imgd_schedule_spacing_timesteps(IMGD_SPACING_LEADING, 1000, 5, 1, true, false, t);
    CHECK(t[0] == 831.0 && t[4] == 167.0); /* ratio 1000 // 6 = 166 */
}

static void test_schedule_karras_by_hand(void) {
    double v[3];
    imgd_schedule_karras_f64(0.1, 10.0, 3, v);
    double a = pow(0.1, 1.0 / 7.0), b = pow(10.0, 1.0 / 7.0);
    CHECK_NEAR(v[0], 10.0, 1e-12);
    CHECK_NEAR(v[1], pow((a + b) / 2.0, 7.0), 1e-12);
    CHECK_NEAR(v[2], 0.1, 1e-12);
}

static void test_schedule_tables_agree(void) {
    static float ac[1000], sig[1000], logs[1000], ksig[1000], klog[1000];
    CHECK_STATUS(imgd_schedule_alphas_cumprod(IMGD_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, ac),
                 IMGD_OK);
    imgd_schedule_sigmas(ac, 1000, sig);
    for (int i = 0; i < 1000; i++) logs[i] = logf(sig[i]);
    CHECK(sig[999] == 14.614645004272461f); /* the kit's sigma_max, bit for bit */
    CHECK(sig[0] == 0.029167532920837402f);
    CHECK_STATUS(
        imgd_schedule_comfy_table(IMGD_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, ksig, klog),
        IMGD_OK);
    /* f32 cancellation in 1 - ac makes diffusers' small sigmas ~1e-5 off the f64 ones */
    for (int i = 0; i < 1000; i += 37) CHECK_NEAR(ksig[i], sig[i], 2e-4 * (double)sig[i]);
    CHECK_NEAR(imgd_schedule_sigma_to_t((double)sig[500], logs, 1000), 500.0, 1e-3);
    CHECK_NEAR(imgd_schedule_sigma_to_t(100.0, logs, 1000), 999.0, 1e-9); /* clipped */
    CHECK_EQ_INT(imgd_schedule_comfy_timestep(klog, 1000, ksig[321]), 321);
    CHECK(imgd_schedule_comfy_sigma(klog, 1000, 321.0f) == expf(klog[321]));
    CHECK_STATUS(imgd_schedule_alphas_cumprod(IMGD_BETA_LINEAR, 1, 0.1, 0.2, ac),
                 IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_schedule_alphas_cumprod(IMGD_BETA_LINEAR, 1000, 0.0, 0.2, ac),
                 IMGD_E_INVALID_ARG);
}

/* rescale_zero_terminal_snr: the rescaled sqrt(alphas_cumprod) is an affine map of the
 * original keeping the first entry and zeroing the last (computed here in f64); the
 * scheduler's table (through alphas, betas and a cumprod) must follow it, end at 2^-24
 * and decrease strictly. A sampler with the flag runs with a finite largest sigma. */
static void test_schedule_rescale_zero_snr(void) {
    static float ac[1000], orig[1000], sig[1000];
    CHECK_STATUS(imgd_schedule_alphas_cumprod(IMGD_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, ac),
                 IMGD_OK);
    memcpy(orig, ac, sizeof ac);
    imgd_schedule_rescale_zero_snr(ac, 1000);
    double a0 = sqrt((double)orig[0]), aT = sqrt((double)orig[999]);
    double worst = 0;
    for (int i = 0; i < 999; i++) {
        double r = (sqrt((double)orig[i]) - aT) * a0 / (a0 - aT);
        worst    = fmax(worst, fabs((double)ac[i] - r * r) / (r * r));
        if (i > 0) CHECK(ac[i] < ac[i - 1]);
    }
    CHECK_MSG(worst < 1e-4, "rescaled table off the formula by %g (relative)", worst);
    CHECK(ac[999] == 0x1p-24f);
    CHECK_NEAR(ac[0], orig[0], 1e-6);
    imgd_schedule_sigmas(ac, 1000, sig);
    CHECK(isfinite(sig[999]) && sig[999] > 4000.0f); /* sqrt((1 - 2^-24) / 2^-24) = 4096 */
}

static void test_schedule_comfy_schedulers_by_hand(void) {
    static float ksig[1000], klog[1000];
    float        out[12];
    CHECK_STATUS(
        imgd_schedule_comfy_table(IMGD_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, ksig, klog),
        IMGD_OK);
    const float smin = ksig[0], smax = ksig[999];
    /* simple, 4 steps: every 250th table sigma from the top */
    CHECK_EQ_INT(imgd_schedule_comfy(IMGD_SCHEDULE_SIMPLE, ksig, klog, 1000, 4, out), 5);
    CHECK(out[0] == ksig[999] && out[1] == ksig[749] && out[2] == ksig[499] &&
          out[3] == ksig[249] && out[4] == 0.0f);
    /* ddim_uniform, 5 steps: stride 200 from index 1 */
    CHECK_EQ_INT(imgd_schedule_comfy(IMGD_SCHEDULE_DDIM_UNIFORM, ksig, klog, 1000, 5, out), 6);
    CHECK(out[0] == ksig[801] && out[3] == ksig[201] && out[4] == ksig[1] && out[5] == 0.0f);
    /* exponential: log-linear between the ends */
    CHECK_EQ_INT(imgd_schedule_comfy(IMGD_SCHEDULE_EXPONENTIAL, ksig, klog, 1000, 3, out), 4);
    CHECK_NEAR(out[0], smax, 1e-5 * (double)smax);
    CHECK_NEAR(out[1], sqrt((double)smax * (double)smin), 1e-5);
    CHECK_NEAR(out[2], smin, 1e-6);
    CHECK(out[3] == 0.0f);
    /* karras, 3 steps */
    CHECK_EQ_INT(imgd_schedule_comfy(IMGD_SCHEDULE_KARRAS, ksig, klog, 1000, 3, out), 4);
    double a = pow((double)smin, 1.0 / 7.0), b = pow((double)smax, 1.0 / 7.0);
    CHECK_NEAR(out[0], smax, 1e-5 * (double)smax);
    CHECK_NEAR(out[1], pow((a + b) / 2.0, 7.0), 1e-5);
    CHECK_NEAR(out[2], smin, 1e-6);
    /* normal: timesteps 999 .. 0 evenly; sgm_uniform: 999 .. 0 over steps + 1, last dropped */
    CHECK_EQ_INT(imgd_schedule_comfy(IMGD_SCHEDULE_NORMAL, ksig, klog, 1000, 4, out), 5);
    CHECK_NEAR(out[0], smax, 1e-5 * (double)smax);
    CHECK_NEAR(out[1], imgd_schedule_comfy_sigma(klog, 1000, 666.0f), 1e-6);
    CHECK_NEAR(out[3], smin, 1e-6);
    CHECK_EQ_INT(imgd_schedule_comfy(IMGD_SCHEDULE_SGM_UNIFORM, ksig, klog, 1000, 4, out), 5);
    CHECK_NEAR(out[1], imgd_schedule_comfy_sigma(klog, 1000, 749.25f), 1e-6);
    CHECK_NEAR(out[3], imgd_schedule_comfy_sigma(klog, 1000, 249.75f), 1e-6);
    CHECK(out[4] == 0.0f);
    CHECK_EQ_INT(imgd_schedule_comfy(IMGD_SCHEDULE_DEFAULT, ksig, klog, 1000, 4, out), 0);
}

static void test_schedule_names_round_trip(void) {
    for (int k = 1; k < IMGD_SCHEDULE_COUNT; k++) {
        imgd_schedule_kind got;
        CHECK_STATUS(imgd_schedule_kind_parse(imgd_schedule_kind_name((imgd_schedule_kind)k), &got),
                     IMGD_OK);
        CHECK_EQ_INT(got, k);
        CHECK(imgd_schedule_kind_doc((imgd_schedule_kind)k) != NULL);
    }
    for (int k = 1; k < IMGD_SAMPLER_COUNT; k++) {
        imgd_sampler_kind got;
        CHECK_STATUS(imgd_sampler_kind_parse(imgd_sampler_kind_name((imgd_sampler_kind)k), &got),
                     IMGD_OK);
        CHECK_EQ_INT(got, k);
    }
    imgd_sampler_kind sk;
    CHECK_STATUS(imgd_sampler_kind_parse("k_lms", &sk), IMGD_E_INVALID_ARG);
    imgd_schedule_kind sc;
    CHECK_STATUS(imgd_schedule_kind_parse("beta", &sc), IMGD_E_INVALID_ARG);
    imgd_sampler_pred pr;
    CHECK_STATUS(imgd_sampler_pred_parse("v_prediction", &pr), IMGD_OK);
    CHECK_EQ_INT(pr, IMGD_PREDICTION_V);
    CHECK(imgd_schedule_kind_is_diffusers(IMGD_SCHEDULE_TRAILING));
    CHECK(!imgd_schedule_kind_is_diffusers(IMGD_SCHEDULE_KARRAS));
}

/* ---- samplers with an exact oracle -------------------------------------------------- */

#define N_LAT 64

typedef struct oracle {
    const float      *x0;
    imgd_sampler_pred pred;
    int               calls, draws;
    imgd_rng          rng;
} oracle;

/* x_in = alpha x0 + sigma_vp eps (alpha = 1 / sqrt(sigma^2 + 1)): return that eps (or v). */
static imgd_status oracle_denoise(void *u, const float *x_in, size_t n, float t, float sigma,
                                  float *out) {
    oracle *o = u;
    (void)t;
    double alpha = 1.0 / sqrt((double)sigma * (double)sigma + 1.0), sv = (double)sigma * alpha;
    for (size_t i = 0; i < n; i++) {
        double eps = ((double)x_in[i] - alpha * (double)o->x0[i]) / sv;
        out[i] = (float)(o->pred == IMGD_PREDICTION_V ? alpha * eps - sv * (double)o->x0[i] : eps);
    }
    o->calls++;
    return IMGD_OK;
}

static imgd_status oracle_noise(void *u, float *out, size_t n) {
    oracle *o = u;
    imgd_rng_randn(&o->rng, out, n);
    o->draws++;
    return IMGD_OK;
}

/* Runs a sampler from add_noise(x0, eps, 0) and returns max |x - expected|. */
static double run_oracle(imgd_sampler_kind kind, imgd_schedule_kind sched, imgd_sampler_pred pred,
                         int steps, int *calls) {
    imgd_sampler_params p = imgd_sampler_params_default();
    p.kind                = kind;
    p.schedule            = sched;
    p.steps               = steps;
    p.prediction          = pred;
    imgd_sampler *s       = NULL;
    double        err     = (double)INFINITY;
    float         x0[N_LAT], eps[N_LAT], x[N_LAT];
    oracle        o = {.x0 = x0, .pred = pred};
    if (imgd_sampler_new(&p, &s) != IMGD_OK) {
        CHECK_MSG(0, "%s/%s: %s", imgd_sampler_kind_name(kind), imgd_schedule_kind_name(sched),
                  imgd_last_error());
        return err;
    }
    imgd_rng_init(&o.rng, IMGD_RNG_CPU, 5);
    imgd_rng_rand(&o.rng, x0, N_LAT);
    for (int i = 0; i < N_LAT; i++) x0[i] = 2.0f * x0[i] - 1.0f;
    imgd_rng_randn(&o.rng, eps, N_LAT);
    CHECK_STATUS(imgd_sampler_add_noise(s, x0, eps, N_LAT, 0, x), IMGD_OK);
    imgd_sampler_io io = {
        .denoise = oracle_denoise, .denoise_user = &o, .noise = oracle_noise, .noise_user = &o};
    CHECK_STATUS(imgd_sampler_run(s, x, N_LAT, 0, &io), IMGD_OK);
    /* DDIM, PNDM and diffusers' UniPC stop at sigma_min (final_alpha_cumprod = ac[0]): on
     * the path the deterministic update keeps, x = sqrt(ac0) x0 + sqrt(1 - ac0) eps. */
    bool at_sigma_min =
        !imgd_sampler_is_kdiffusion(s) &&
        (kind == IMGD_SAMPLER_DDIM || kind == IMGD_SAMPLER_PNDM || kind == IMGD_SAMPLER_UNI_PC);
    float ac[1000];
    (void)imgd_schedule_alphas_cumprod(IMGD_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, ac);
    err = 0.0;
    for (int i = 0; i < N_LAT; i++) {
        double want = at_sigma_min ? sqrt((double)ac[0]) * (double)x0[i] +
                                         sqrt(1.0 - (double)ac[0]) * (double)eps[i]
                                   : (double)x0[i];
        double e    = fabs((double)x[i] - want);
        err         = e > err ? e : err;
    }
    *calls = o.calls;
    imgd_sampler_free(s);
    return err;
}

static void test_sampler_exact_oracle_recovers_x0(void) {
    static const imgd_schedule_kind scheds[] = {
        IMGD_SCHEDULE_DEFAULT, IMGD_SCHEDULE_TRAILING,    IMGD_SCHEDULE_NORMAL,
        IMGD_SCHEDULE_KARRAS,  IMGD_SCHEDULE_EXPONENTIAL, IMGD_SCHEDULE_SGM_UNIFORM,
        IMGD_SCHEDULE_SIMPLE,  IMGD_SCHEDULE_DDIM_UNIFORM};
    for (int k = 1; k < IMGD_SAMPLER_COUNT; k++) {
        for (size_t j = 0; j < IMGD_ARRAY_LEN(scheds); j++) {
            imgd_sampler_kind kind = (imgd_sampler_kind)k;
            if (kind == IMGD_SAMPLER_PNDM && !imgd_schedule_kind_is_diffusers(scheds[j])) continue;
            int    calls = 0, steps = 8;
            double e = run_oracle(kind, scheds[j], IMGD_PREDICTION_EPSILON, steps, &calls);
            /* uni_pc under ComfyUI ends at sigma 0.001, LCM's boundary keeps ~1e-7 of x */
            double tol = kind == IMGD_SAMPLER_UNI_PC ? 5e-3 : 2e-3;
            CHECK_MSG(e <= tol, "%s / %s: max |x - x0| = %.3g", imgd_sampler_kind_name(kind),
                      imgd_schedule_kind_name(scheds[j]), e);
            bool two = kind == IMGD_SAMPLER_HEUN || kind == IMGD_SAMPLER_DPMPP_SDE;
            if (scheds[j] != IMGD_SCHEDULE_DDIM_UNIFORM && kind != IMGD_SAMPLER_PNDM) {
                CHECK_MSG(calls == (two ? 2 * steps - 1 : steps), "%s / %s: %d model calls",
                          imgd_sampler_kind_name(kind), imgd_schedule_kind_name(scheds[j]), calls);
            }
        }
    }
}

static void test_sampler_v_prediction_oracle(void) {
    static const imgd_sampler_kind kinds[] = {IMGD_SAMPLER_EULER,    IMGD_SAMPLER_HEUN,
                                              IMGD_SAMPLER_DPMPP_2M, IMGD_SAMPLER_DDIM,
                                              IMGD_SAMPLER_DDPM,     IMGD_SAMPLER_UNI_PC};
    for (size_t k = 0; k < IMGD_ARRAY_LEN(kinds); k++) {
        int    calls = 0;
        double e     = run_oracle(kinds[k], IMGD_SCHEDULE_DEFAULT, IMGD_PREDICTION_V, 8, &calls);
        CHECK_MSG(e <= 2e-3, "%s v-prediction: max error %.3g", imgd_sampler_kind_name(kinds[k]),
                  e);
        e = run_oracle(kinds[k] == IMGD_SAMPLER_DDIM ? IMGD_SAMPLER_EULER : kinds[k],
                       IMGD_SCHEDULE_KARRAS, IMGD_PREDICTION_V, 8, &calls);
        CHECK_MSG(e <= 5e-3, "%s v-prediction karras: max error %.3g",
                  imgd_sampler_kind_name(kinds[k]), e);
    }
}

static void test_sampler_lcm_timesteps_and_rejects(void) {
    imgd_sampler_params p = imgd_sampler_params_default();
    p.kind                = IMGD_SAMPLER_LCM;
    p.steps               = 4;
    imgd_sampler *s       = NULL;
    CHECK_STATUS(imgd_sampler_new(&p, &s), IMGD_OK);
    if (s) {
        const float *t;
        CHECK_EQ_INT(imgd_sampler_timesteps(s, &t), 4);
        CHECK(t[0] == 999.0f && t[1] == 759.0f && t[2] == 499.0f && t[3] == 259.0f);
        imgd_sampler_free(s);
        s = NULL;
    }
    p.steps = 60; /* more than original_inference_steps */
    CHECK_STATUS(imgd_sampler_new(&p, &s), IMGD_E_INVALID_ARG);
    p          = imgd_sampler_params_default();
    p.kind     = IMGD_SAMPLER_PNDM;
    p.schedule = IMGD_SCHEDULE_KARRAS;
    CHECK_STATUS(imgd_sampler_new(&p, &s), IMGD_E_UNSUPPORTED);
    p       = imgd_sampler_params_default();
    p.steps = 0;
    CHECK_STATUS(imgd_sampler_new(&p, &s), IMGD_E_INVALID_ARG);
    CHECK(s == NULL);
}

static void test_sampler_needs_noise_for_stochastic_samplers(void) {
    imgd_sampler_params p     = imgd_sampler_params_default();
    p.kind                    = IMGD_SAMPLER_EULER_ANCESTRAL;
    p.steps                   = 3;
    imgd_sampler   *s         = NULL;
    float           x0[N_LAT] = {0}, x[N_LAT] = {0};
    oracle          o  = {.x0 = x0, .pred = IMGD_PREDICTION_EPSILON};
    imgd_sampler_io io = {.denoise = oracle_denoise, .denoise_user = &o};
    CHECK_STATUS(imgd_sampler_new(&p, &s), IMGD_OK);
    REQUIRE(s);
    for (int i = 0; i < N_LAT; i++) x[i] = 1.0f;
    CHECK_STATUS(imgd_sampler_run(s, x, N_LAT, 0, &io), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_sampler_run(s, x, N_LAT, 7, &io), IMGD_E_INVALID_ARG);
done:
    imgd_sampler_free(s);
}

int main(void) {
    RUN(test_schedule_torch_linspace_small);
    RUN(test_schedule_rescale_zero_snr);
    RUN(test_schedule_numpy_linspace_arange_interp);
    RUN(test_schedule_diffusers_spacings);
    RUN(test_schedule_karras_by_hand);
    RUN(test_schedule_tables_agree);
    RUN(test_schedule_comfy_schedulers_by_hand);
    RUN(test_schedule_names_round_trip);
    RUN(test_sampler_exact_oracle_recovers_x0);
    RUN(test_sampler_v_prediction_oracle);
    RUN(test_sampler_lcm_timesteps_and_rejects);
    RUN(test_sampler_needs_noise_for_stochastic_samplers);
    TEST_END();
}
