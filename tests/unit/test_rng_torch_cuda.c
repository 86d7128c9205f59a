/* sampling/rng IMGD_RNG_PHILOX against torch's CUDA generator itself: tests/data/
 * torch_cuda_philox.json holds torch.randn(shape, generator=torch.Generator('cuda')
 * .manual_seed(seed)) recorded on an H100 by tests/gpu/torch_philox.py, two draws per
 * generator (the second checks the counter offset the first leaves), sampled at the first
 * and last 16 elements and every 997th. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/json.h"
#include "sampling/rng.h"
#include "test.h"

#define DATA_PATH IMGD_TEST_DATA_DIR "/torch_cuda_philox.json"

/* The recorded cases, or NULL (reported) when the file cannot be read. */
static cJSON *load_cases(void) {
    FILE *f = fopen(DATA_PATH, "rb");
    if (!f) return NULL;
    char  *buf = imgd_malloc((size_t)1 << 20);
    size_t n   = buf ? fread(buf, 1, ((size_t)1 << 20) - 1, f) : 0;
    (void)fclose(f);
    cJSON *doc = NULL;
    if (buf && imgd_json_parse(DATA_PATH, buf, n, (size_t)1 << 20, 16, &doc) != IMGD_OK) doc = NULL;
    imgd_free(buf);
    return doc;
}

/* Compares out[] with the sampled reference; returns the largest error (inf when the
 * sample is malformed). */
static double compare(const float *out, const cJSON *sample) {
    const cJSON *idx = cJSON_GetObjectItemCaseSensitive(sample, "index");
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(sample, "value");
    int          k   = cJSON_GetArraySize(idx);
    if (k <= 0 || k != cJSON_GetArraySize(val)) return (double)INFINITY;
    double worst = 0;
    for (int i = 0; i < k; i++) {
        size_t j = (size_t)cJSON_GetArrayItem(idx, i)->valuedouble;
        double e = fabs((double)out[j] - cJSON_GetArrayItem(val, i)->valuedouble);
        if (e > worst) worst = e;
    }
    return worst;
}

static void test_rng_philox_matches_torch_cuda(void) {
    cJSON       *doc   = load_cases();
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(doc, "cases");
    const cJSON *sms   = cJSON_GetObjectItemCaseSensitive(doc, "sm_count");
    REQUIRE(doc && cJSON_IsNumber(sms) && cJSON_GetArraySize(cases) >= 8);
    const cJSON *c;
    int          n_cases = 0;
    double       worst   = 0;
    cJSON_ArrayForEach(c, cases) {
        uint64_t     seed  = (uint64_t)cJSON_GetObjectItemCaseSensitive(c, "seed")->valuedouble;
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(c, "shape");
        size_t       n     = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, shape) n *= (size_t)d->valuedouble;
        float *out = imgd_malloc(n * sizeof *out);
        REQUIRE(out != NULL);
        imgd_rng r;
        imgd_rng_init(&r, IMGD_RNG_PHILOX, seed);
        /* torch's grid: at most 2048 / 256 = 8 resident blocks of 256 threads per SM */
        imgd_rng_philox_blocks(&r, (uint32_t)sms->valuedouble * 8);
        imgd_rng_randn(&r, out, n);
        double e1 = compare(out, cJSON_GetObjectItemCaseSensitive(c, "first"));
        imgd_rng_randn(&r, out, n);
        double e2 = compare(out, cJSON_GetObjectItemCaseSensitive(c, "second"));
        CHECK_MSG(e1 < 2e-5 && e2 < 2e-5, "seed %llu, %zu elements: max error %.3g / %.3g",
                  (unsigned long long)seed, n, e1, e2);
        worst = fmax(worst, fmax(e1, e2));
        imgd_free(out);
        n_cases++;
    }
    printf("  %d torch CUDA randn cases (two draws each): max |error| %.3g\n", n_cases, worst);
done:
    cJSON_Delete(doc);
}

int main(void) {
    RUN(test_rng_philox_matches_torch_cuda);
    TEST_END();
}
