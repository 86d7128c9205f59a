/* imgd_generate_many against imgd_generate on the narrow SD 1.5 model: three different
 * requests (prompts, seeds, cfg including one without CFG, clip skip, one with batch 2) run
 * as one batch must each give the images of their lone run (max abs <= 1e-5 on the [0, 1]
 * float pixels), for a deterministic sampler and for the stochastic ones (euler_ancestral,
 * dpmpp_2m_sde, ddpm) whose per-step noise comes from each item's own generator. Also:
 * cancelling one item leaves the others unchanged; requests that cannot share a batch are
 * refused naming the field; an item invalid on its own fails alone. */
#include <math.h>

#include "base/text.h"
#include "test.h"
#include "util.h"

#define SIZE  64
#define STEPS 4

static const char *shared_or_skip(void) {
    const char *s = tu_shared_dir();
    if (!s) TEST_SKIP("../shared/conformance absent: batched generation not checked");
    return s;
}

static imgd_model *load(const char *shared) {
    char             path[4096], tok[4096];
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.arch.te_heads    = 4; /* the narrow text encoder: not in the shapes */
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/sd15-narrow/diffusers/tokenizer", shared);
    (void)imgd_fmt(path, sizeof path, "%s/conformance/sd15-narrow/diffusers", shared);
    lp.tokenizer_dir = tok;
    imgd_model *m    = NULL;
    imgd_status st   = imgd_model_load(path, &lp, &m);
    CHECK_MSG(st == IMGD_OK, "load %s: %s", path, imgd_last_error());
    return m;
}

/* Cancels its item after step `at` (0: never); counts the calls. */
typedef struct stepper {
    int32_t at, calls, last;
} stepper;

static bool on_step(int32_t step, int32_t steps, double elapsed_s, void *user) {
    stepper *s = user;
    (void)steps;
    (void)elapsed_s;
    s->calls++;
    s->last = step;
    return s->at == 0 || step < s->at;
}

/* The three requests of the batch tests. */
static void three_requests(imgd_gen_params p[3], stepper st[3], const char *sampler) {
    static const char *const prompts[3] = {"a red house by a lake", "a (blue:1.3) car, [blurry]",
                                           "mountains at dawn, highly detailed"};
    static const char *const negs[3]    = {"blurry, low quality", NULL, "people"};
    static const float       cfgs[3]    = {7.5f, 1.0f, 4.0f};
    for (int i = 0; i < 3; i++) {
        p[i]           = imgd_gen_params_default();
        p[i].prompt    = prompts[i];
        p[i].negative  = negs[i];
        p[i].seed      = 1000u + 77u * (uint64_t)i;
        p[i].cfg       = cfgs[i];
        p[i].width     = SIZE;
        p[i].height    = SIZE;
        p[i].steps     = STEPS;
        p[i].sampler   = sampler;
        p[i].batch     = i == 1 ? 2 : 1;
        p[i].clip_skip = i == 2 ? 2 : 1;
        p[i].on_step   = on_step;
        p[i].user      = &st[i];
    }
    p[1].rng = IMGD_RNG_MODE_PHILOX;
}

static double max_diff(const imgd_gen_result *a, const imgd_gen_result *b) {
    if (!a || !b || a->n != b->n) return (double)INFINITY;
    size_t n  = (size_t)a->n * 3 * SIZE * SIZE;
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a->pixels[i] - (double)b->pixels[i]);
        mx       = d > mx ? d : mx;
    }
    return mx;
}

/* Runs the three requests as a batch (item `cancel` cancelled after step 2, -1: none) and
 * alone, and compares. */
static void batch_vs_alone(imgd_model *m, const char *sampler, int cancel) {
    imgd_gen_params p[3];
    stepper         st[3];
    memset(st, 0, sizeof st);
    three_requests(p, st, sampler);
    if (cancel >= 0) st[cancel].at = 2;
    const imgd_gen_params *items[3] = {&p[0], &p[1], &p[2]};
    imgd_gen_item_result   out[3];
    imgd_status            rc = imgd_generate_many(m, items, 3, out);
    CHECK_EQ_INT(rc, cancel >= 0 ? IMGD_E_CANCELLED : IMGD_OK);
    for (int i = 0; i < 3; i++) {
        if (i == cancel) {
            CHECK_EQ_INT(out[i].status, IMGD_E_CANCELLED);
            CHECK(out[i].result == NULL);
            CHECK(strstr(out[i].error, "cancelled at step 2") != NULL);
            CHECK_EQ_INT(st[i].calls, 2); /* not called after it cancelled */
            continue;
        }
        CHECK_MSG(out[i].status == IMGD_OK, "%s item %d: %s", sampler, i, out[i].error);
        CHECK_EQ_INT(st[i].calls, STEPS);
        CHECK_EQ_INT(st[i].last, STEPS);
        imgd_gen_result *alone = NULL;
        p[i].on_step           = NULL;
        CHECK_STATUS(imgd_generate(m, &p[i], &alone), IMGD_OK);
        if (out[i].result && alone) {
            CHECK_EQ_INT(out[i].result->n, p[i].batch);
            CHECK_EQ_INT(out[i].result->steps_run, STEPS);
            double d = max_diff(out[i].result, alone);
            printf("%-16s item %d (batch %d, cfg %.1f) batched vs alone: max abs %.3g%s\n", sampler,
                   i, (int)p[i].batch, (double)p[i].cfg, d,
                   cancel >= 0 ? " (another item cancelled)" : "");
            CHECK_MSG(d <= 1e-5, "%s item %d: batched image differs from its lone run by %g",
                      sampler, i, d);
        }
        imgd_gen_result_free(alone);
        imgd_gen_result_free(out[i].result);
    }
}

static void test_sd_batch_items_equal_lone_runs(void) {
    const char *shared = shared_or_skip();
    if (!shared) return;
    imgd_model *m = load(shared);
    if (!m) return;
    static const char *const samplers[] = {"euler", "euler_ancestral", "dpmpp_2m_sde", "ddpm"};
    for (size_t s = 0; s < IMGD_ARRAY_LEN(samplers); s++) batch_vs_alone(m, samplers[s], -1);
    imgd_model_free(m);
}

static void test_sd_batch_cancel_one_item_others_unchanged(void) {
    const char *shared = shared_or_skip();
    if (!shared) return;
    imgd_model *m = load(shared);
    if (!m) return;
    batch_vs_alone(m, "euler_ancestral", 1);
    batch_vs_alone(m, "euler", 0);
    /* every item cancelled at step 1: the loop stops there */
    imgd_gen_params p[3];
    stepper         st[3];
    memset(st, 0, sizeof st);
    three_requests(p, st, "euler");
    const imgd_gen_params *items[3] = {&p[0], &p[1], &p[2]};
    imgd_gen_item_result   out[3];
    for (int i = 0; i < 3; i++) st[i].at = 1;
    CHECK_STATUS(imgd_generate_many(m, items, 3, out), IMGD_E_CANCELLED);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(out[i].status, IMGD_E_CANCELLED);
        CHECK(out[i].result == NULL);
        CHECK_EQ_INT(st[i].calls, 1);
    }
    imgd_model_free(m);
}

static void test_sd_batch_refuses_incompatible_naming_field(void) {
    const char *shared = shared_or_skip();
    if (!shared) return;
    imgd_model *m = load(shared);
    if (!m) return;
    imgd_gen_params p[3];
    stepper         st[3];
    memset(st, 0, sizeof st);
    three_requests(p, st, "euler");
    const imgd_gen_params *items[3] = {&p[0], &p[1], &p[2]};
    imgd_gen_item_result   out[3];
    char                   k0[IMGD_GEN_BATCH_KEY_MAX], k2[IMGD_GEN_BATCH_KEY_MAX];
    const char            *field = "x";

    /* compatible: same key, batchable */
    CHECK(imgd_gen_params_batchable(m, &p[0], &p[2], &field));
    CHECK(field == NULL);
    CHECK_STATUS(imgd_gen_batch_key(m, &p[0], k0, sizeof k0), IMGD_OK);
    CHECK_STATUS(imgd_gen_batch_key(m, &p[2], k2, sizeof k2), IMGD_OK);
    CHECK_STR(k0, k2);
    CHECK_STR(k0, "64x64 steps=4 sampler=euler schedule=default init=none chunks=1");
    CHECK_STATUS(imgd_gen_batch_key(m, &p[0], k0, 8), IMGD_E_TOO_LARGE);

    /* steps differ: refused before any work, the message names field, items and values */
    p[2].steps = STEPS + 1;
    CHECK(!imgd_gen_params_batchable(m, &p[0], &p[2], &field));
    CHECK(field && strcmp(field, "steps") == 0);
    CHECK_STATUS(imgd_gen_batch_key(m, &p[2], k2, sizeof k2), IMGD_OK);
    CHECK(strcmp(k0, k2) != 0);
    CHECK_STATUS(imgd_generate_many(m, items, 3, out), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "items 0 and 2 differ in steps (4 vs 5)") != NULL);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(out[i].status, IMGD_E_INVALID_ARG);
        CHECK(out[i].result == NULL);
        CHECK(strstr(out[i].error, "steps") != NULL);
        CHECK_EQ_INT(st[i].calls, 0);
    }
    p[2].steps = STEPS;

    /* the other shared fields */
    p[2].width = 2 * SIZE;
    CHECK(!imgd_gen_params_batchable(m, &p[0], &p[2], &field) && strcmp(field, "width") == 0);
    p[2].width   = SIZE;
    p[2].sampler = "euler_ancestral";
    CHECK(!imgd_gen_params_batchable(m, &p[0], &p[2], &field) && strcmp(field, "sampler") == 0);
    p[2].sampler  = "euler";
    p[2].schedule = "karras";
    CHECK(!imgd_gen_params_batchable(m, &p[0], &p[2], &field) && strcmp(field, "schedule") == 0);
    p[2].schedule = NULL; /* NULL = "default" */
    CHECK(imgd_gen_params_batchable(m, &p[0], &p[2], &field));
    /* a prompt over 75 tokens has two chunks: a different UNet context length */
    p[2].prompt = "one two three four five six seven eight nine ten eleven twelve thirteen "
                  "fourteen fifteen sixteen seventeen eighteen nineteen twenty, one two three "
                  "four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                  "sixteen seventeen eighteen nineteen twenty, one two three four five six "
                  "seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
                  "eighteen nineteen twenty, one two three four five six seven eight nine ten";
    CHECK(!imgd_gen_params_batchable(m, &p[0], &p[2], &field) && strcmp(field, "prompt") == 0);
    CHECK_STATUS(imgd_generate_many(m, items, 3, out), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "differ in prompt (1 vs 2 chunks") != NULL);
    p[2].prompt  = "mountains";
    p[2].sampler = "euler_b";
    CHECK(!imgd_gen_params_batchable(m, &p[0], &p[2], &field) && strcmp(field, "sampler") == 0);

    /* an item invalid on its own fails alone; the others run */
    p[2].sampler   = "euler";
    p[2].clip_skip = 40;
    CHECK_STATUS(imgd_generate_many(m, items, 3, out), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "clip_skip") != NULL);
    CHECK_EQ_INT(out[0].status, IMGD_OK);
    CHECK_EQ_INT(out[1].status, IMGD_OK);
    CHECK_EQ_INT(out[2].status, IMGD_E_INVALID_ARG);
    CHECK(out[0].result && out[1].result && out[1].result->n == 2 && !out[2].result);
    CHECK(strstr(out[2].error, "clip_skip") != NULL);
    for (int i = 0; i < 3; i++) imgd_gen_result_free(out[i].result);
    CHECK_STATUS(imgd_generate_many(m, items, 0, out), IMGD_E_INVALID_ARG);
    imgd_model_free(m);
}

int main(void) {
    imgd_log_level_set(IMGD_LOG_WARN);
    RUN(test_sd_batch_items_equal_lone_runs);
    RUN(test_sd_batch_cancel_one_item_others_unchanged);
    RUN(test_sd_batch_refuses_incompatible_naming_field);
    TEST_END();
}
