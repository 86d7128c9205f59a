/* Detection accuracy on the generated corpus (tests/detect/corpus_gen.c): header-only files
 * with the real module trees, names and shapes of every kind × family, sparse data. Prints
 * one line per mismatch (expected, got, evidence), the accuracy, a per-kind table and the
 * time to open and detect the whole corpus; fails unless every case is right. */
#include <cjson/cJSON.h>
#include <sys/stat.h>
#include <time.h>

#include "base/text.h"
#include "detect/corpus_gen.h"
#include "fixtures.h"
#include "test.h"
#include "util.h"

static double now_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- label checks ------------------------------------------------------------------- */

static bool list_has(const cJSON *arr, const char *word, size_t n) {
    for (const cJSON *e = arr ? arr->child : NULL; e; e = e->next) {
        if (cJSON_IsString(e) && strlen(e->valuestring) == n && !strncmp(e->valuestring, word, n)) {
            return true;
        }
    }
    return false;
}

/* Every space-separated word of words is in arr (want) / none is (!want). */
static bool words_match(const cJSON *arr, const char *words, bool want) {
    for (const char *s = words; s && *s;) {
        size_t n = strcspn(s, " ");
        if (n && list_has(arr, s, n) != want) return false;
        s += n;
        s += *s == ' ';
    }
    return true;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "null";
}

static int32_t json_int(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int32_t)v->valuedouble : -999;
}

static bool json_ints_eq(const cJSON *arr, const int32_t *want, int32_t n) {
    int32_t i = 0;
    for (const cJSON *e = arr ? arr->child : NULL; e; e = e->next, i++) {
        if (i >= n || !cJSON_IsNumber(e) || (int32_t)e->valuedouble != want[i]) return false;
    }
    return i == n;
}

/* The inferred UNet config against the generating one; names the first difference in
 * diff (empty when they agree). */
static void unet_diff(const cg_unet_cfg *u, const cJSON *model, char *diff, size_t cap) {
    const cJSON *cu =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(model, "config"), "unet");
    int32_t mid = json_int(cu, "mid_transformer_depth");
    diff[0]     = '\0';
    if (!cu) {
        (void)imgd_fmt(diff, cap, "no config.unet");
    } else if (!json_ints_eq(cJSON_GetObjectItemCaseSensitive(cu, "block_out_channels"), u->widths,
                             u->n_levels)) {
        (void)imgd_fmt(diff, cap, "block_out_channels");
    } else if (!json_ints_eq(cJSON_GetObjectItemCaseSensitive(cu, "transformer_depth"), u->depth,
                             u->n_levels)) {
        (void)imgd_fmt(diff, cap, "transformer_depth");
    } else if (json_int(cu, "layers_per_block") != u->nrb) {
        (void)imgd_fmt(diff, cap, "layers_per_block %d, want %d", json_int(cu, "layers_per_block"),
                       u->nrb);
    } else if (json_int(cu, "in_channels") != u->in_ch ||
               json_int(cu, "out_channels") != u->out_ch) {
        (void)imgd_fmt(diff, cap, "in/out channels %d/%d, want %d/%d", json_int(cu, "in_channels"),
                       json_int(cu, "out_channels"), u->in_ch, u->out_ch);
    } else if (json_int(cu, "context_dim") != u->ctx) {
        (void)imgd_fmt(diff, cap, "context_dim %d, want %d", json_int(cu, "context_dim"), u->ctx);
    } else if (json_int(cu, "adm_in_channels") != u->adm) {
        (void)imgd_fmt(diff, cap, "adm_in_channels %d, want %d", json_int(cu, "adm_in_channels"),
                       u->adm);
    } else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cu, "use_linear_projection")) !=
               u->linear_proj) {
        (void)imgd_fmt(diff, cap, "use_linear_projection, want %s",
                       u->linear_proj ? "true" : "false");
    } else if (u->mid_depth ? mid != u->mid_depth : mid > 0) {
        (void)imgd_fmt(diff, cap, "mid_transformer_depth %d, want %d", mid, u->mid_depth);
    }
}

/* Compares a detection with the label; on a mismatch prints the case, expected, got and
 * the evidence. Returns true when it matches. */
static bool judge(const cg_case *c, const imgd_model_info *mi, const cJSON *j) {
    const cg_label *l   = &c->label;
    const cJSON    *var = cJSON_GetObjectItemCaseSensitive(j, "variants");
    bool ok = imgd_model_info_kind(mi) == l->kind && imgd_model_info_family(mi) == l->family &&
              words_match(var, l->variants, true) && words_match(var, l->no_variants, false) &&
              (!l->layout || !strcmp(json_str(j, "layout"), l->layout)) &&
              (!l->prediction || !strcmp(json_str(j, "prediction"), l->prediction));
    char diff[160] = "";
    if (l->unet && imgd_model_info_kind(mi) == l->kind) unet_diff(l->unet, j, diff, sizeof diff);
    ok &= diff[0] == '\0';
    if (ok) return true;
    char *v = cJSON_PrintUnformatted(var);
    printf("MISMATCH %s (%s)\n  expected: %s/%s variants+[%s] variants-[%s] layout=%s "
           "prediction=%s\n  got:      %s/%s variants=%s layout=%s prediction=%s\n",
           c->name, c->what, imgd_model_kind_name(l->kind), imgd_family_name(l->family),
           l->variants ? l->variants : "", l->no_variants ? l->no_variants : "",
           l->layout ? l->layout : "*", l->prediction ? l->prediction : "*",
           imgd_model_kind_name(imgd_model_info_kind(mi)),
           imgd_family_name(imgd_model_info_family(mi)), v ? v : "[]", json_str(j, "layout"),
           json_str(j, "prediction"));
    cJSON_free(v);
    if (diff[0]) printf("  config:   UNet config differs from the generating one: %s\n", diff);
    const cJSON *cand = cJSON_GetObjectItemCaseSensitive(j, "candidates");
    if (cJSON_IsString(cand)) printf("  candidates: %s\n", cand->valuestring);
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "evidence");
    for (const cJSON *e = ev ? ev->child : NULL; e; e = e->next) {
        if (cJSON_IsString(e)) printf("  evidence: %s\n", e->valuestring);
    }
    return false;
}

/* ---- cases ---------------------------------------------------------------------------- */

static void test_detect_corpus_covers_every_kind_and_family(void) {
    size_t n                      = cg_case_count();
    int    kinds[IMGD_KIND_COUNT] = {0}, fams[IMGD_FAMILY_COUNT] = {0};
    CHECK_MSG(n >= 60, "only %zu cases", n);
    for (size_t i = 0; i < n; i++) {
        const cg_case *c = cg_case_at(i);
        CHECK(c->label.kind < IMGD_KIND_COUNT && c->label.family < IMGD_FAMILY_COUNT);
        kinds[c->label.kind]++;
        fams[c->label.family]++;
        for (size_t k = 0; k < i; k++) {
            CHECK_MSG(strcmp(cg_case_at(k)->name, c->name) != 0, "duplicate case %s", c->name);
        }
    }
    for (int k = 0; k < IMGD_KIND_COUNT; k++) {
        CHECK_MSG(kinds[k] > 0, "no case of kind %s", imgd_model_kind_name((imgd_model_kind)k));
    }
    for (int f = 0; f < IMGD_FAMILY_COUNT; f++) {
        CHECK_MSG(fams[f] > 0, "no case of family %s", imgd_family_name((imgd_family)f));
    }
    printf("corpus: %zu cases\n", n);
}

static void test_detect_corpus_accuracy_is_100_percent(void) {
    char root[1024];
    tu_tmp_path(root, sizeof root, "detect-corpus");
    fx_rmtree(root);
    fx_mkdir(root);
    size_t      n                      = cg_case_count();
    int         total[IMGD_KIND_COUNT] = {0}, right[IMGD_KIND_COUNT] = {0}, n_right = 0;
    double      t_build = 0, t_detect = 0, t_slowest = 0;
    const char *slowest = "";
    for (size_t i = 0; i < n; i++) {
        const cg_case *c = cg_case_at(i);
        char           dir[1200], target[1400];
        (void)imgd_fmt(dir, sizeof dir, "%s/%s", root, c->name);
        fx_mkdir(dir);
        total[c->label.kind]++;
        double t0 = now_ms();
        int    rc = c->build(dir, target, sizeof target);
        t_build += now_ms() - t0;
        CHECK_MSG(rc == 0, "%s: could not write the case", c->name);
        if (rc) continue;
        imgd_weights    *w  = NULL;
        imgd_model_info *mi = NULL;
        double           t1 = now_ms();
        imgd_status      st = imgd_weights_open(target, NULL, &w);
        if (st == IMGD_OK) st = imgd_model_detect(w, &mi);
        double dt = now_ms() - t1;
        t_detect += dt;
        if (dt > t_slowest) {
            t_slowest = dt;
            slowest   = c->name;
        }
        char  *js = NULL;
        cJSON *j  = NULL;
        if (st == IMGD_OK && imgd_model_info_json(mi, &js) == IMGD_OK) j = cJSON_Parse(js);
        if (!j) {
            printf("MISMATCH %s (%s)\n  expected: %s/%s\n  got:      error %s: %s\n", c->name,
                   c->what, imgd_model_kind_name(c->label.kind), imgd_family_name(c->label.family),
                   imgd_status_name(st), imgd_last_error());
        } else if (judge(c, mi, j)) {
            right[c->label.kind]++;
            n_right++;
        }
        cJSON_Delete(j);
        imgd_string_free(js);
        imgd_model_info_free(mi);
        imgd_weights_free(w);
    }
    printf("%-14s %5s %5s\n", "kind", "cases", "right");
    for (int k = 0; k < IMGD_KIND_COUNT; k++) {
        printf("%-14s %5d %5d\n", imgd_model_kind_name((imgd_model_kind)k), total[k], right[k]);
    }
    printf("detection accuracy: %d/%zu (%.1f%%)\n", n_right, n,
           n ? 100.0 * n_right / (double)n : 0.0);
    printf("detection time for the whole corpus (open + detect, headers only): %.1f ms "
           "(slowest %s: %.1f ms); writing the corpus: %.1f ms\n",
           t_detect, slowest, t_slowest, t_build);
    (void)fflush(stdout);
    fx_rmtree(root);
    CHECK_MSG((size_t)n_right == n, "detection accuracy %d/%zu: see the MISMATCH lines above",
              n_right, n);
}

int main(void) {
    RUN(test_detect_corpus_covers_every_kind_and_family);
    RUN(test_detect_corpus_accuracy_is_100_percent);
    TEST_END();
}
