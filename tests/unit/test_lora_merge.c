/* LoRA merge into f16 weights (models/lora.c) on a two-tensor UNet file (diffusers names, a
 * hand-made model info, no shared files): the merged copy stays f16 and equals
 * round_to_f16(f32(W) + delta) bit for bit, with delta from imgd_lora_module_accumulate;
 * removing the LoRA binds the file's bytes again. The LoRA's values are small dyadic
 * fractions, so delta is exact whatever order the GEMM sums in. */
#include <string.h>

#include "base/alloc.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "formats/weights.h"
#include "models/lora.h"
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

#define TOQ   "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
#define CONV  "down_blocks.0.resnets.0.conv1.weight"
#define K_TOQ "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
#define K_CNV "lora_unet_down_blocks_0_resnets_0_conv1"

enum {
    C    = 16, /* channels of both weights */
    RANK = 2,
    N_W  = 2
};

static const char *const k_canon[N_W] = {"unet." TOQ, "unet." CONV};
static const size_t      k_numel[N_W] = {(size_t)C * C, (size_t)C *C * 9};

static uint32_t g_seed = 12345;

static uint32_t next(void) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return g_seed >> 8;
}

/* The model: f16 weights in [-1, 1). */
static bool write_model(const char *path, uint16_t *w[N_W]) {
    imgd_st_entry e[N_W];
    memset(e, 0, sizeof e);
    e[0] = (imgd_st_entry){.name = TOQ, .dtype = IMGD_DTYPE_F16, .n_dims = 2, .shape = {C, C}};
    e[1] =
        (imgd_st_entry){.name = CONV, .dtype = IMGD_DTYPE_F16, .n_dims = 4, .shape = {C, C, 3, 3}};
    imgd_st_writer *wr = NULL;
    if (imgd_st_writer_open(path, e, N_W, NULL, NULL, 0, &wr) != IMGD_OK) return false;
    bool ok = true;
    for (int k = 0; k < N_W; k++) {
        for (size_t i = 0; i < k_numel[k]; i++)
            w[k][i] = imgd_f32_to_f16((float)(int32_t)(next() % 4096) / 2048.0f - 1.0f);
        ok = ok && imgd_st_writer_write(wr, w[k], k_numel[k] * 2) == IMGD_OK;
    }
    if (!ok) {
        imgd_st_writer_abort(wr);
        return false;
    }
    return imgd_st_writer_close(wr) == IMGD_OK;
}

/* A kohya LoRA / LoCon of rank 2, alpha 2 (scale 1), values k / 64 with |k| <= 8. */
static bool write_lora(const char *path) {
    static float  v[6][C * 9 * RANK];
    imgd_st_entry e[6];
    memset(e, 0, sizeof e);
    e[0] = (imgd_st_entry){.name   = K_TOQ ".lora_down.weight",
                           .dtype  = IMGD_DTYPE_F32,
                           .n_dims = 2,
                           .shape  = {RANK, C}};
    e[1] = (imgd_st_entry){
        .name = K_TOQ ".lora_up.weight", .dtype = IMGD_DTYPE_F32, .n_dims = 2, .shape = {C, RANK}};
    e[2] = (imgd_st_entry){.name = K_TOQ ".alpha", .dtype = IMGD_DTYPE_F32, .n_dims = 0};
    e[3] = (imgd_st_entry){.name   = K_CNV ".lora_down.weight",
                           .dtype  = IMGD_DTYPE_F32,
                           .n_dims = 4,
                           .shape  = {RANK, C, 3, 3}};
    e[4] = (imgd_st_entry){.name   = K_CNV ".lora_up.weight",
                           .dtype  = IMGD_DTYPE_F32,
                           .n_dims = 4,
                           .shape  = {C, RANK, 1, 1}};
    e[5] = (imgd_st_entry){.name = K_CNV ".alpha", .dtype = IMGD_DTYPE_F32, .n_dims = 0};
    imgd_st_writer *wr   = NULL;
    const char     *mk[] = {"ss_base_model_version"}, *mv[] = {"sd_v1"};
    if (imgd_st_writer_open(path, e, 6, mk, mv, 1, &wr) != IMGD_OK) return false;
    bool ok = true;
    for (int t = 0; t < 6; t++) {
        size_t n = 1;
        for (int32_t d = 0; d < e[t].n_dims; d++) n *= (size_t)e[t].shape[d];
        for (size_t i = 0; i < n; i++)
            v[t][i] = e[t].n_dims ? (float)((int32_t)(next() % 17) - 8) / 64.0f : (float)RANK;
        ok = ok && imgd_st_writer_write(wr, v[t], n * 4) == IMGD_OK;
    }
    if (!ok) {
        imgd_st_writer_abort(wr);
        return false;
    }
    return imgd_st_writer_close(wr) == IMGD_OK;
}

/* The bytes weight k binds to now, and its dtype. */
static const uint16_t *bound(imgd_wbind *b, imgd_graph *g, int k, imgd_dtype *dt) {
    imgd_tensor *t = imgd_wbind_get(b, g, k_canon[k], 0, NULL);
    *dt            = t ? t->dtype : IMGD_DTYPE_COUNT;
    return t ? t->data : NULL;
}

static void merge_f16_case(imgd_pool *pool) {
    char             mp[4096], lp[4096];
    static uint16_t  w0[C * C], w1[C * C * 9];
    uint16_t        *w[N_W] = {w0, w1};
    imgd_weights    *wt     = NULL;
    imgd_model_info  mi;
    imgd_wbind      *b = NULL;
    imgd_lora       *l = NULL;
    imgd_lora_stack *s = NULL;
    imgd_graph      *g = NULL;
    memset(&mi, 0, sizeof mi);
    mi.kind   = IMGD_KIND_UNET;
    mi.family = IMGD_FAMILY_SD1;
    tu_tmp_path(mp, sizeof mp, "lora-merge-f16-model.safetensors");
    tu_tmp_path(lp, sizeof lp, "lora-merge-f16-lora.safetensors");
    REQUIRE(write_model(mp, w) && write_lora(lp));
    REQUIRE(imgd_weights_open(mp, NULL, &wt) == IMGD_OK);
    REQUIRE(imgd_wbind_new(wt, &mi, &b) == IMGD_OK);
    imgd_wbind *binds[1] = {b};
    CHECK_STATUS(imgd_lora_load(lp, binds, 1, IMGD_FAMILY_SD1, &l), IMGD_OK);
    REQUIRE(l && l->n_mods == N_W);
    REQUIRE(imgd_lora_stack_new(pool, &s) == IMGD_OK);
    CHECK_STATUS(imgd_lora_stack_add(s, l, 0.5f, 0.5f, true), IMGD_OK);
    CHECK_STATUS(imgd_lora_stack_attach(s, b, "unet."), IMGD_OK);
    CHECK(imgd_lora_stack_merged_bytes(s) == (k_numel[0] + k_numel[1]) * 2);
    REQUIRE(imgd_graph_new(NULL, &g) == IMGD_OK);
    for (int k = 0; k < N_W; k++) {
        static float delta[C * C * 9];
        memset(delta, 0, sizeof delta);
        const imgd_lora_module *md = NULL;
        for (size_t i = 0; i < l->n_mods; i++)
            if (strcmp(l->mods[i].target, k_canon[k]) == 0) md = &l->mods[i];
        REQUIRE(md != NULL);
        CHECK_STATUS(imgd_lora_module_accumulate(md, 0.5f, delta, k_numel[k]), IMGD_OK);
        imgd_dtype      dt;
        const uint16_t *m    = bound(b, g, k, &dt);
        size_t          bad  = 0;
        bool            diff = false;
        CHECK(m && dt == IMGD_DTYPE_F16);
        for (size_t i = 0; m && i < k_numel[k]; i++) {
            uint16_t want = imgd_f32_to_f16(imgd_f16_to_f32(w[k][i]) + delta[i]);
            bad += m[i] != want;
            diff = diff || m[i] != w[k][i];
        }
        CHECK_MSG(bad == 0, "%s: %zu merged values differ from round_to_f16(W + delta)", k_canon[k],
                  bad);
        CHECK(diff); /* the LoRA changed something */
    }
    imgd_lora_stack_detach(b);
    for (int k = 0; k < N_W; k++) {
        imgd_dtype      dt;
        const uint16_t *m = bound(b, g, k, &dt);
        CHECK(m && dt == IMGD_DTYPE_F16 && memcmp(m, w[k], k_numel[k] * 2) == 0);
    }
done:
    imgd_graph_free(g);
    imgd_lora_stack_free(s);
    imgd_lora_free(l);
    imgd_wbind_free(b);
    imgd_weights_free(wt);
    (void)remove(mp);
    (void)remove(lp);
}

static void test_lora_merge_f16_rounds_once_and_restores_bits(void) {
    merge_f16_case(NULL);
}

static void test_lora_merge_f16_on_a_pool_matches(void) {
    imgd_pool *pool = NULL;
    CHECK_STATUS(imgd_pool_new(2, &pool), IMGD_OK);
    if (pool) merge_f16_case(pool);
    imgd_pool_free(pool);
}

int main(void) {
    RUN(test_lora_merge_f16_rounds_once_and_restores_bits);
    RUN(test_lora_merge_f16_on_a_pool_matches);
    TEST_END();
}
