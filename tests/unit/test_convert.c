/* imgd_convert: dtype conversion, EMA pruning, verification, never a half-written output. */
#include <dirent.h>

#include "base/text.h"
#include "fixtures.h"
#include "formats/dtype.h"
#include "test.h"

static char g_in[512], g_out[512];

static void make_input(void) {
    const char *names[] = {"model.diffusion_model.w", "model_ema.diffusion_model.w", "cond.b"};
    CHECK(fx_safetensors(g_in, names, 3, 5, 0.25f, "modelspec.title", "test model") == 0);
}

static bool exists(const char *p) {
    return access(p, F_OK) == 0;
}

/* True when a temporary file of ours is left beside g_out. */
static bool tmp_left(void) {
    DIR           *d     = opendir(tu_tmpdir());
    bool           found = false;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, "imgd-tmp")) found = true;
    if (d) closedir(d);
    return found;
}

static void test_convert_same_dtype_is_byte_exact_with_metadata(void) {
    make_input();
    imgd_convert_result r;
    CHECK_STATUS(imgd_convert(g_in, g_out, NULL, &r), IMGD_OK);
    CHECK_EQ_INT(r.tensors, 3);
    imgd_weights *a = NULL, *b = NULL;
    CHECK_STATUS(imgd_weights_open(g_in, NULL, &a), IMGD_OK);
    CHECK_STATUS(imgd_weights_open(g_out, NULL, &b), IMGD_OK);
    if (a && b) {
        CHECK_EQ_INT(imgd_weights_tensor_count(b), 3);
        for (size_t i = 0; i < imgd_weights_tensor_count(a); i++) {
            imgd_tensor_info x, y;
            imgd_weights_tensor(a, i, &x);
            CHECK_STATUS(imgd_weights_find(b, x.name, &y), IMGD_OK);
            CHECK(x.nbytes == y.nbytes && memcmp(x.data, y.data, x.nbytes) == 0);
        }
        CHECK_STR(imgd_weights_meta_find(b, "modelspec.title"), "test model");
    }
    imgd_weights_free(a);
    imgd_weights_free(b);
    CHECK(!tmp_left());
}

static void test_convert_to_f16_and_bf16_rounds_each_value(void) {
    make_input();
    static const imgd_dtype targets[] = {IMGD_DTYPE_F16, IMGD_DTYPE_BF16};
    for (int k = 0; k < 2; k++) {
        imgd_convert_params p = imgd_convert_params_default();
        p.dtype               = (int32_t)targets[k];
        CHECK_STATUS(imgd_convert(g_in, g_out, &p, NULL), IMGD_OK);
        imgd_weights    *b = NULL;
        imgd_tensor_info t;
        CHECK_STATUS(imgd_weights_open(g_out, NULL, &b), IMGD_OK);
        if (!b) continue;
        CHECK_STATUS(imgd_weights_find(b, "cond.b", &t), IMGD_OK);
        CHECK_EQ_INT(t.dtype, targets[k]);
        CHECK_EQ_INT(t.nbytes, 5 * 4 * 2);
        const uint8_t *d = t.data;
        for (int j = 0; j < 20; j++) {
            float    src  = 0.25f + (float)(2000 + j);
            uint16_t h    = (uint16_t)(d[(size_t)2 * j] | d[(size_t)2 * j + 1] << 8);
            uint16_t want = k == 0 ? imgd_f32_to_f16(src) : imgd_f32_to_bf16(src);
            CHECK_EQ_INT(h, want);
        }
        imgd_weights_free(b);
    }
}

static void test_convert_prunes_ema(void) {
    make_input();
    imgd_convert_params p = imgd_convert_params_default();
    p.prune_ema           = true;
    imgd_convert_result r;
    CHECK_STATUS(imgd_convert(g_in, g_out, &p, &r), IMGD_OK);
    CHECK_EQ_INT(r.tensors, 2);
    CHECK_EQ_INT(r.tensors_pruned, 1);
    imgd_weights    *b = NULL;
    imgd_tensor_info t;
    CHECK_STATUS(imgd_weights_open(g_out, NULL, &b), IMGD_OK);
    if (b)
        CHECK_STATUS(imgd_weights_find(b, "model_ema.diffusion_model.w", &t), IMGD_E_INVALID_ARG);
    imgd_weights_free(b);
}

static void test_convert_refuses_output_equal_to_input(void) {
    make_input();
    CHECK_STATUS(imgd_convert(g_in, g_in, NULL, NULL), IMGD_E_INVALID_ARG);
    imgd_weights *a = NULL;
    CHECK_STATUS(imgd_weights_open(g_in, NULL, &a), IMGD_OK);
    imgd_weights_free(a);
}

static void test_convert_refuses_bad_target_dtype(void) {
    make_input();
    imgd_convert_params p = imgd_convert_params_default();
    p.dtype               = IMGD_DTYPE_Q8_0;
    CHECK(remove(g_out) == 0 || !exists(g_out));
    CHECK_STATUS(imgd_convert(g_in, g_out, &p, NULL), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "f32, f16 or bf16") != NULL);
    CHECK(!exists(g_out));
}

static void test_convert_bad_input_leaves_output_untouched(void) {
    tu_write_file(g_out, "previous", 8);
    char bad[512];
    tu_tmp_path(bad, sizeof bad, "bad-input.safetensors");
    tu_write_file(bad, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
    CHECK_STATUS(imgd_convert(bad, g_out, NULL, NULL), IMGD_E_FORMAT);
    FILE *f       = fopen(g_out, "rb");
    char  buf[16] = {0};
    CHECK(f && fread(buf, 1, sizeof buf, f) == 8 && memcmp(buf, "previous", 8) == 0);
    if (f) CHECK(fclose(f) == 0);
    CHECK(remove(bad) == 0);
    CHECK(!tmp_left());
}

static bool cancel_at_once(uint64_t done, uint64_t total, void *user) {
    (void)done;
    (void)total;
    (void)user;
    return false;
}

static void test_convert_cancel_leaves_nothing(void) {
    make_input();
    CHECK(remove(g_out) == 0 || !exists(g_out));
    imgd_convert_params p = imgd_convert_params_default();
    p.progress            = cancel_at_once;
    CHECK_STATUS(imgd_convert(g_in, g_out, &p, NULL), IMGD_E_CANCELLED);
    CHECK(!exists(g_out));
    CHECK(!tmp_left());
}

static void test_convert_replaces_existing_output(void) {
    make_input();
    tu_write_file(g_out, "old", 3);
    CHECK_STATUS(imgd_convert(g_in, g_out, NULL, NULL), IMGD_OK);
    imgd_weights *b = NULL;
    CHECK_STATUS(imgd_weights_open(g_out, NULL, &b), IMGD_OK);
    imgd_weights_free(b);
}

static void test_convert_unwritable_output_is_io_error(void) {
    make_input();
    CHECK_STATUS(imgd_convert(g_in, "/nonexistent-dir/x.safetensors", NULL, NULL), IMGD_E_IO);
    CHECK(strstr(imgd_last_error(), "/nonexistent-dir/x.safetensors") != NULL);
}

static void test_convert_conformance_checkpoint_to_f16(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: conformance conversion not run");
        return;
    }
    char in[1024];
    imgd_fmt(in, sizeof in, "%s/conformance/sd15-narrow/sd15-narrow.safetensors", shared);
    imgd_convert_params p = imgd_convert_params_default();
    p.dtype               = IMGD_DTYPE_F16;
    imgd_convert_result r;
    CHECK_STATUS(imgd_convert(in, g_out, &p, &r), IMGD_OK);
    CHECK_EQ_INT(r.tensors, 1130);
    imgd_fmt(in, sizeof in, "%s/conformance/sd15-narrow/diffusers", shared);
    CHECK_STATUS(imgd_convert(in, g_out, NULL, &r), IMGD_OK);
    CHECK_EQ_INT(r.tensors, 1130);
}

int main(void) {
    tu_tmp_path(g_in, sizeof g_in, "conv-in.safetensors");
    tu_tmp_path(g_out, sizeof g_out, "conv-out.safetensors");
    RUN(test_convert_same_dtype_is_byte_exact_with_metadata);
    RUN(test_convert_to_f16_and_bf16_rounds_each_value);
    RUN(test_convert_prunes_ema);
    RUN(test_convert_refuses_output_equal_to_input);
    RUN(test_convert_refuses_bad_target_dtype);
    RUN(test_convert_bad_input_leaves_output_untouched);
    RUN(test_convert_cancel_leaves_nothing);
    RUN(test_convert_replaces_existing_output);
    RUN(test_convert_unwritable_output_is_io_error);
    RUN(test_convert_conformance_checkpoint_to_f16);
    /* Best-effort cleanup after the last case (a CHECK here would not be counted). */
    (void)remove(g_in);
    (void)remove(g_out);
    TEST_END();
}
