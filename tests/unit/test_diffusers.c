/* diffusers folders: pipelines, component folders, variants, sharded indexes. */
#include "base/text.h"
#include "fixtures.h"
#include "formats/weights.h"
#include "test.h"

/* Opening must fail with status `want`; frees what it opened if it did not (an injected
 * allocation failure can turn an expected error into a success, which must not leak). */
#define CHECK_OPEN_FAILS(dir, params, want)                                                        \
    do {                                                                                           \
        imgd_weights *w_ = NULL;                                                                   \
        CHECK_STATUS(imgd_weights_open((dir), (params), &w_), (want));                             \
        imgd_weights_free(w_);                                                                     \
    } while (0)

static char g_root[512];

static void sub(char *out, size_t cap, const char *rel) {
    imgd_fmt(out, cap, "%s/%s", g_root, rel);
}

static void make_pipeline(void) {
    char p[1024];
    fx_rmtree(g_root);
    fx_mkdir(g_root);
    fx_write_text(g_root, "model_index.json",
                  "{\"_class_name\":\"StableDiffusionPipeline\",\"unet\":[\"diffusers\","
                  "\"UNet2DConditionModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"],"
                  "\"scheduler\":[\"diffusers\",\"PNDMScheduler\"],\"safety_checker\":[null,null],"
                  "\"feature_extractor\":[\"transformers\",\"CLIPImageProcessor\"]}");
    sub(p, sizeof p, "unet");
    fx_mkdir(p);
    fx_write_text(p, "config.json", "{\"in_channels\":4}");
    const char *un[] = {"conv_in.weight", "conv_in.bias"};
    sub(p, sizeof p, "unet/diffusion_pytorch_model.safetensors");
    CHECK(fx_safetensors(p, un, 2, 2, 0, NULL, NULL) == 0);
    sub(p, sizeof p, "unet/diffusion_pytorch_model.fp16.safetensors");
    CHECK(fx_safetensors(p, un, 1, 2, 0, NULL, NULL) == 0);
    sub(p, sizeof p, "vae");
    fx_mkdir(p);
    fx_write_text(p, "config.json", "{\"latent_channels\":4}");
    const char *vn[] = {"decoder.conv_out.weight"};
    sub(p, sizeof p, "vae/diffusion_pytorch_model.safetensors");
    CHECK(fx_safetensors(p, vn, 1, 3, 5, "format", "pt") == 0);
    sub(p, sizeof p, "scheduler");
    fx_mkdir(p);
    fx_write_text(p, "scheduler_config.json", "{\"num_train_timesteps\":1000}");
}

static void test_diffusers_reads_pipeline_with_prefixes(void) {
    make_pipeline();
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(g_root, NULL, &w), IMGD_OK);
    if (!w) return;
    CHECK_EQ_INT(imgd_weights_format(w), IMGD_FORMAT_DIFFUSERS);
    CHECK_EQ_INT(imgd_weights_tensor_count(w), 3);
    imgd_tensor_info t;
    CHECK_STATUS(imgd_weights_find(w, "unet/conv_in.bias", &t), IMGD_OK);
    CHECK_STATUS(imgd_weights_find(w, "vae/decoder.conv_out.weight", &t), IMGD_OK);
    CHECK_EQ_INT(t.shape[0], 3);
    float v0;
    memcpy(&v0, t.data, 4);
    CHECK_NEAR(v0, 5.0, 0);
    CHECK(imgd_weights_meta_find(w, "model_index.json") != NULL);
    CHECK_STR(imgd_weights_meta_find(w, "unet/config.json"), "{\"in_channels\":4}");
    CHECK(imgd_weights_meta_find(w, "scheduler/scheduler_config.json") != NULL);
    CHECK_STR(imgd_weights_meta_find(w, "vae/format"), "pt");
    CHECK_STR(imgd_weights_meta_find(w, "unet/imgd.weights_file"),
              "diffusion_pytorch_model.safetensors");
    imgd_weights_free(w);
}

static void test_diffusers_variant_selects_fp16_files(void) {
    make_pipeline();
    imgd_open_params p = imgd_open_params_default();
    p.variant          = "fp16";
    imgd_weights *w    = NULL;
    /* vae has no fp16 file: a clear error naming the variant. */
    CHECK_OPEN_FAILS(g_root, &p, IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "fp16") != NULL);
    char        path[1024];
    const char *vn[] = {"decoder.conv_out.weight"};
    sub(path, sizeof path, "vae/diffusion_pytorch_model.fp16.safetensors");
    CHECK(fx_safetensors(path, vn, 1, 3, 5, NULL, NULL) == 0);
    CHECK_STATUS(imgd_weights_open(g_root, &p, &w), IMGD_OK);
    if (w) {
        CHECK_EQ_INT(imgd_weights_tensor_count(w), 2);
        CHECK_STR(imgd_weights_meta_find(w, "unet/imgd.weights_file"),
                  "diffusion_pytorch_model.fp16.safetensors");
    }
    imgd_weights_free(w);
}

static void test_diffusers_falls_back_to_only_variant(void) {
    make_pipeline();
    char path[1024];
    sub(path, sizeof path, "unet/diffusion_pytorch_model.safetensors");
    CHECK(remove(path) == 0);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(g_root, NULL, &w), IMGD_OK);
    if (w)
        CHECK_STR(imgd_weights_meta_find(w, "unet/imgd.weights_file"),
                  "diffusion_pytorch_model.fp16.safetensors");
    imgd_weights_free(w);
}

static void test_diffusers_reads_sharded_index(void) {
    make_pipeline();
    char path[1024];
    sub(path, sizeof path, "unet/diffusion_pytorch_model.safetensors");
    CHECK(remove(path) == 0);
    sub(path, sizeof path, "unet/diffusion_pytorch_model.fp16.safetensors");
    CHECK(remove(path) == 0);
    const char *a[] = {"a.weight", "a.bias"}, *b[] = {"b.weight"};
    sub(path, sizeof path, "unet/diffusion_pytorch_model-00001-of-00002.safetensors");
    CHECK(fx_safetensors(path, a, 2, 1, 0, NULL, NULL) == 0);
    sub(path, sizeof path, "unet/diffusion_pytorch_model-00002-of-00002.safetensors");
    CHECK(fx_safetensors(path, b, 1, 1, 0, NULL, NULL) == 0);
    sub(path, sizeof path, "unet");
    fx_write_text(path, "diffusion_pytorch_model.safetensors.index.json",
                  "{\"metadata\":{\"total_size\":48},\"weight_map\":{"
                  "\"a.weight\":\"diffusion_pytorch_model-00001-of-00002.safetensors\","
                  "\"a.bias\":\"diffusion_pytorch_model-00001-of-00002.safetensors\","
                  "\"b.weight\":\"diffusion_pytorch_model-00002-of-00002.safetensors\"}}");
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(g_root, NULL, &w), IMGD_OK);
    imgd_tensor_info t;
    if (w) CHECK_STATUS(imgd_weights_find(w, "unet/b.weight", &t), IMGD_OK);
    imgd_weights_free(w);

    /* An index that names a tensor the shard does not hold. */
    fx_write_text(path, "diffusion_pytorch_model.safetensors.index.json",
                  "{\"weight_map\":{\"a.weight\":\"diffusion_pytorch_model-00001-of-00002."
                  "safetensors\",\"zzz\":\"diffusion_pytorch_model-00002-of-00002.safetensors\"}}");
    CHECK_OPEN_FAILS(g_root, NULL, IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "zzz") != NULL);

    /* A shard path escaping the folder. */
    fx_write_text(path, "diffusion_pytorch_model.safetensors.index.json",
                  "{\"weight_map\":{\"a.weight\":\"../vae/diffusion_pytorch_model.safetensors\"}}");
    CHECK_OPEN_FAILS(g_root, NULL, IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "same folder") != NULL);

    /* No weight_map at all. */
    fx_write_text(path, "diffusion_pytorch_model.safetensors.index.json", "{\"metadata\":{}}");
    CHECK_OPEN_FAILS(g_root, NULL, IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "weight_map") != NULL);
}

static void test_diffusers_component_folder_alone(void) {
    make_pipeline();
    char path[1024];
    sub(path, sizeof path, "vae");
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
    imgd_tensor_info t;
    if (w) {
        CHECK_STATUS(imgd_weights_find(w, "decoder.conv_out.weight", &t), IMGD_OK);
        CHECK(imgd_weights_meta_find(w, "config.json") != NULL);
    }
    imgd_weights_free(w);
}

static void test_diffusers_rejects_config_without_weights(void) {
    make_pipeline();
    char path[1024];
    sub(path, sizeof path, "vae/diffusion_pytorch_model.safetensors");
    CHECK(remove(path) == 0);
    CHECK_OPEN_FAILS(g_root, NULL, IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "no weights") != NULL);
}

static void test_diffusers_rejects_bad_model_index(void) {
    make_pipeline();
    fx_write_text(g_root, "model_index.json", "{\"unet\": [\"diffusers\"");
    CHECK_OPEN_FAILS(g_root, NULL, IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "model_index.json") != NULL);
    fx_write_text(g_root, "model_index.json", "{\"_class_name\":\"X\"}");
    CHECK_OPEN_FAILS(g_root, NULL, IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "no component") != NULL);
}

static void test_diffusers_rejects_empty_folder(void) {
    char path[1024];
    sub(path, sizeof path, "empty");
    fx_rmtree(g_root);
    fx_mkdir(g_root);
    fx_mkdir(path);
    CHECK_OPEN_FAILS(path, NULL, IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "not a model folder") != NULL);
}

static void test_diffusers_bad_component_file_names_component(void) {
    make_pipeline();
    char path[1024];
    sub(path, sizeof path, "vae/diffusion_pytorch_model.safetensors");
    tu_write_file(path, "\x10\0\0\0\0\0\0\0{\"a\":{}}        ", 24);
    CHECK_OPEN_FAILS(g_root, NULL, IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "vae/diffusion_pytorch_model.safetensors") != NULL);
}

static void test_diffusers_reads_conformance_pipelines(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: conformance diffusers folders not read");
        return;
    }
    static const struct {
        const char *dir;
        size_t      tensors;
        const char *probe;
    } cases[] = {
        {"sd15-narrow/diffusers", 1130, "unet/conv_in.weight"},
        {"sdxl-narrow/diffusers", 1581, "text_encoder_2/text_projection.weight"},
        {"sd15-narrow-inpaint/unet", 0, "conv_in.weight"},
        {"flux-narrow/diffusers", 0, "transformer/x_embedder.weight"},
        {"sd3-narrow/diffusers", 0, "text_encoder_3/shared.weight"},
        {"sd15-narrow/controlnet/diffusers", 0, "controlnet_mid_block.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[1024];
        imgd_fmt(path, sizeof path, "%s/conformance/%s", shared, cases[i].dir);
        imgd_weights *w = NULL;
        CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
        if (!w) continue;
        if (cases[i].tensors) CHECK_EQ_INT(imgd_weights_tensor_count(w), cases[i].tensors);
        imgd_tensor_info t;
        CHECK_STATUS(imgd_weights_find(w, cases[i].probe, &t), IMGD_OK);
        imgd_weights_free(w);
    }
    char path[1024];
    imgd_fmt(path, sizeof path, "%s/conformance/sd15-narrow-inpaint/unet", shared);
    imgd_weights    *w = NULL;
    imgd_tensor_info t;
    if (imgd_weights_open(path, NULL, &w) == IMGD_OK &&
        imgd_weights_find(w, "conv_in.weight", &t) == IMGD_OK)
        CHECK_EQ_INT(t.shape[1], 9);
    imgd_weights_free(w);
}

int main(void) {
    tu_tmp_path(g_root, sizeof g_root, "diffusers");
    RUN(test_diffusers_reads_pipeline_with_prefixes);
    RUN(test_diffusers_variant_selects_fp16_files);
    RUN(test_diffusers_falls_back_to_only_variant);
    RUN(test_diffusers_reads_sharded_index);
    RUN(test_diffusers_component_folder_alone);
    RUN(test_diffusers_rejects_config_without_weights);
    RUN(test_diffusers_rejects_bad_model_index);
    RUN(test_diffusers_rejects_empty_folder);
    RUN(test_diffusers_bad_component_file_names_component);
    RUN(test_diffusers_reads_conformance_pipelines);
    fx_rmtree(g_root);
    TEST_END();
}
