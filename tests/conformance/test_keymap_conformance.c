/* Canonical key mapping against the reference: diffusers' own conversion made the
 * single-file and folder versions of each narrow model bit-identical, so every canonical
 * tensor of the single file must equal the folder's tensor of the same canonical name. */
#include "base/alloc.h"
#include "base/text.h"
#include "detect/keymap.h"
#include "test.h"
#include "util.h"

/* Bytes of canonical entry e of w, materialised (transposes copied into scratch). */
static const uint8_t *canonical_bytes(const imgd_weights *w, const imgd_km_entry *e,
                                      uint8_t *scratch, size_t cap, uint64_t *n) {
    const imgd_wtensor *t  = &w->t[e->src];
    size_t              es = t->nbytes / (uint64_t)(t->shape[0] ? t->shape[0] : 1);
    if (t->n_dims >= 1 && e->op == IMGD_KM_ROWS) {
        *n = (uint64_t)(e->row_end - e->row_begin) * es;
        return t->data + (uint64_t)e->row_begin * es;
    }
    if (e->op == IMGD_KM_TRANSPOSE && t->n_dims == 2 && t->nbytes <= cap &&
        t->dtype == IMGD_DTYPE_F32) {
        int64_t r = t->shape[0], c = t->shape[1];
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++)
                memcpy(scratch + 4 * (j * r + i), t->data + 4 * (i * c + j), 4);
        *n = t->nbytes;
        return scratch;
    }
    *n = t->nbytes;
    return t->data;
}

static void compare(const char *single, const char *folder, size_t want_min) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: key maps not checked");
        return;
    }
    char a[4096], b[4096];
    imgd_fmt(a, sizeof a, "%s/conformance/%s", shared, single);
    imgd_fmt(b, sizeof b, "%s/conformance/%s", shared, folder);
    imgd_weights    *wa = NULL, *wb = NULL;
    imgd_model_info *ma = NULL, *mb = NULL;
    imgd_keymap     *ka = NULL, *kb = NULL;
    CHECK_STATUS(imgd_weights_open(a, NULL, &wa), IMGD_OK);
    CHECK_STATUS(imgd_weights_open(b, NULL, &wb), IMGD_OK);
    if (!wa || !wb) goto done;
    CHECK_STATUS(imgd_model_detect(wa, &ma), IMGD_OK);
    CHECK_STATUS(imgd_model_detect(wb, &mb), IMGD_OK);
    CHECK_STATUS(imgd_keymap_build(wa, ma, &ka), IMGD_OK);
    CHECK_STATUS(imgd_keymap_build(wb, mb, &kb), IMGD_OK);
    if (!ka || !kb) goto done;
    size_t   cap = 1 << 22, matched = 0, missing = 0, differ = 0;
    uint8_t *scratch = imgd_malloc(cap);
    for (size_t i = 0; i < kb->n; i++) {
        const imgd_km_entry *eb = &kb->e[i];
        const imgd_km_entry *ea = imgd_keymap_find(ka, eb->canonical);
        if (!ea) {
            if (missing++ < 5) fprintf(stderr, "  %s: no '%s'\n", single, eb->canonical);
            continue;
        }
        uint64_t       na, nb;
        const uint8_t *pa = canonical_bytes(wa, ea, scratch, cap, &na);
        const uint8_t *pb = canonical_bytes(wb, eb, scratch + cap / 2, cap / 2, &nb);
        if (na != nb || memcmp(pa, pb, na) != 0) {
            if (differ++ < 5)
                fprintf(stderr, "  %s: '%s' differs (%llu vs %llu bytes, from '%s')\n", single,
                        eb->canonical, (unsigned long long)na, (unsigned long long)nb,
                        wa->t[ea->src].name);
            continue;
        }
        matched++;
    }
    imgd_free(scratch);
    printf("%s: %zu canonical tensors equal the folder's, %zu missing, %zu differ; %zu unmapped in "
           "the single file%s%s\n",
           single, matched, missing, differ, ka->n_unmapped, ka->n_unmapped ? ", e.g. " : "",
           ka->n_unmapped ? ka->unmapped_example[0] : "");
    CHECK_EQ_INT(missing, 0);
    CHECK_EQ_INT(differ, 0);
    CHECK(matched >= want_min);
done:
    imgd_keymap_free(ka);
    imgd_keymap_free(kb);
    imgd_model_info_free(ma);
    imgd_model_info_free(mb);
    imgd_weights_free(wa);
    imgd_weights_free(wb);
}

static void test_keymap_sd15_single_file_equals_folder(void) {
    compare("sd15-narrow/sd15-narrow.safetensors", "sd15-narrow/diffusers", 1100);
}

static void test_keymap_sd15_ckpt_equals_folder(void) {
    compare("sd15-narrow/sd15-narrow.ckpt", "sd15-narrow/diffusers", 1100);
}

static void test_keymap_sdxl_single_file_equals_folder(void) {
    compare("sdxl-narrow/sdxl-narrow.safetensors", "sdxl-narrow/diffusers", 1500);
}

static void test_keymap_controlnet_single_file_equals_folder(void) {
    compare("sd15-narrow/controlnet/control_narrow.safetensors", "sd15-narrow/controlnet/diffusers",
            300);
}

int main(void) {
    RUN(test_keymap_sd15_single_file_equals_folder);
    RUN(test_keymap_sd15_ckpt_equals_folder);
    RUN(test_keymap_sdxl_single_file_equals_folder);
    RUN(test_keymap_controlnet_single_file_equals_folder);
    TEST_END();
}
