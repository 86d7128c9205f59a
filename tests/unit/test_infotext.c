/* A1111 infotext: field order and omission, quoting, numbers, strip, UTF-8 checks, and the
 * sampler / schedule display names. (The text inside PNG/JPEG/WebP files is tested in
 * test_image.c.) */
#include <string.h>

#include "base/alloc.h"
#include "base/text.h"
#include "pipeline/infotext.h"
#include "test.h"

static void test_infotext_a1111_field_order_and_quoting(void) {
    char           *s = NULL, *t = NULL, *u = NULL;
    imgd_a1111_info in    = imgd_a1111_info_default();
    in.prompt             = "a cat, masterpiece";
    in.negative_prompt    = "blurry";
    in.steps              = 20;
    in.sampler            = "Euler a";
    in.schedule           = "Karras";
    in.cfg_scale          = 7;
    in.seed               = 123;
    in.has_seed           = true;
    in.width              = 512;
    in.height             = 512;
    in.model_hash         = "abcdef1234";
    in.model              = "name";
    in.clip_skip          = 2;
    in.denoising_strength = 0.6;
    in.version            = "imgd 0.1";
    REQUIRE(imgd_a1111_parameters(&in, &s) == IMGD_OK);
    CHECK_STR(s, "a cat, masterpiece\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, "
                 "Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x512, Model hash: "
                 "abcdef1234, Model: name, Denoising strength: 0.6, Clip skip: 2, Version: imgd "
                 "0.1");
    /* Quoting (A1111's quote: , : or newline -> JSON), numbers, omitted fields, strip. */
    imgd_a1111_info q       = imgd_a1111_info_default();
    const char     *extra[] = {"Lora hashes", "detail: 0123abcd", "Hires upscaler", "Latent"};
    q.prompt                = "  spaced \t";
    q.cfg_scale             = 7.5;
    q.model                 = "my,model \"v2\"";
    q.mask_blur             = 4;
    q.rng                   = "CPU";
    q.seed                  = 18446744073709551615u;
    q.has_seed              = true;
    q.extra                 = extra;
    q.n_extra               = 2;
    q.version               = "";
    REQUIRE(imgd_a1111_parameters(&q, &t) == IMGD_OK);
    CHECK_STR(t, "spaced \t\nCFG scale: 7.5, Seed: 18446744073709551615, Model: \"my,model "
                 "\\\"v2\\\"\", RNG: CPU, Mask blur: 4, Lora hashes: \"detail: 0123abcd\", Hires "
                 "upscaler: Latent");
    /* Empty prompt: A1111's strip() makes the parameters the first line. */
    imgd_a1111_info e    = imgd_a1111_info_default();
    e.steps              = 5;
    e.denoising_strength = 0.75;
    REQUIRE(imgd_a1111_parameters(&e, &u) == IMGD_OK);
    char want[128];
    (void)imgd_fmt(want, sizeof want, "Steps: 5, Denoising strength: 0.75, Version: imgd %s",
                   imgd_version());
    CHECK_STR(u, want);
    imgd_a1111_info bad = imgd_a1111_info_default();
    bad.model           = "\xff\xfe";
    char *x             = NULL;
    CHECK_STATUS(imgd_a1111_parameters(&bad, &x), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "model") != NULL);
    CHECK(x == NULL);
done:
    imgd_free(s);
    imgd_free(t);
    imgd_free(u);
}

static void test_infotext_sampler_and_schedule_names(void) {
    CHECK_STR(imgd_a1111_sampler_name("euler"), "Euler");
    CHECK_STR(imgd_a1111_sampler_name("euler_ancestral"), "Euler a");
    CHECK_STR(imgd_a1111_sampler_name("heun"), "Heun");
    CHECK_STR(imgd_a1111_sampler_name("dpmpp_2m"), "DPM++ 2M");
    CHECK_STR(imgd_a1111_sampler_name("dpmpp_2m_sde"), "DPM++ 2M SDE");
    CHECK_STR(imgd_a1111_sampler_name("dpmpp_sde"), "DPM++ SDE");
    CHECK_STR(imgd_a1111_sampler_name("ddim"), "DDIM");
    CHECK_STR(imgd_a1111_sampler_name("lcm"), "LCM");
    CHECK_STR(imgd_a1111_sampler_name("uni_pc"), "UniPC");
    CHECK(imgd_a1111_sampler_name("ddpm") == NULL);
    CHECK(imgd_a1111_sampler_name(NULL) == NULL);
    CHECK_STR(imgd_a1111_schedule_name("karras"), "Karras");
    CHECK_STR(imgd_a1111_schedule_name("sgm_uniform"), "SGM Uniform");
    CHECK_STR(imgd_a1111_schedule_name("exponential"), "Exponential");
    CHECK_STR(imgd_a1111_schedule_name("default"), "Automatic");
    CHECK(imgd_a1111_schedule_name("leading") == NULL);
}

int main(void) {
    RUN(test_infotext_a1111_field_order_and_quoting);
    RUN(test_infotext_sampler_and_schedule_names);
    TEST_END();
}
