/* NAME.civitai.json beside a model: the fields that fill request defaults (civitai.h). */
#include "service/civitai.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "base/text.h"

#define SIDECAR_MAX (4u << 20) /* bytes; a version's JSON is a few KiB */

static void sidecar_path(const char *model, char *out, size_t cap) {
    size_t n = strlen(model);
    while (n > 1 && model[n - 1] == '/') n--;
    const char *dot = NULL, *sl = NULL;
    for (size_t i = 0; i < n; i++) {
        if (model[i] == '/') sl = model + i;
        if (model[i] == '.') dot = model + i;
    }
    struct stat st;
    bool        dir  = stat(model, &st) == 0 && S_ISDIR(st.st_mode);
    int         stem = !dir && dot && (!sl || dot > sl) ? (int)(dot - model) : (int)n;
    (void)imgd_fmt(out, cap, "%.*s.civitai.json", stem, model);
}

/* A number member in [lo, hi], else a warning; false when absent or bad. */
static bool num_in(const imgd_civitai_meta *m, const cJSON *obj, const char *name,
                   const char *field, double lo, double hi, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v)) return false;
    if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi) {
        IMGD_LOG(IMGD_LOG_WARN, "service.civitai", "bad_field",
                 "%s: %s is not a number from %g to %g; ignored (fix or delete the field)", m->path,
                 field, lo, hi);
        return false;
    }
    *out = v->valuedouble;
    return true;
}

static void read_fields(imgd_civitai_meta *m, const cJSON *doc) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "baseModel");
    if (cJSON_IsString(v)) {
        (void)imgd_fmt(m->base_model, sizeof m->base_model, "%s", v->valuestring);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "trainedWords")) {
        if (m->n_words < IMGD_CIVITAI_WORDS_MAX && cJSON_IsString(it) && it->valuestring[0]) {
            (void)imgd_fmt(m->words[m->n_words++], sizeof m->words[0], "%s", it->valuestring);
        }
    }
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(doc, "settings");
    double       x   = 0;
    if (num_in(m, doc, "recommendedWeight", "recommendedWeight", -10, 10, &x) ||
        num_in(m, set, "strength", "settings.strength", -10, 10, &x)) {
        m->weight     = x;
        m->has_weight = true;
    }
    if (num_in(m, set, "clipSkip", "settings.clipSkip", 1, 12, &x) ||
        num_in(m, doc, "clipSkip", "clipSkip", 1, 12, &x)) {
        m->clip_skip = (int32_t)x;
    }
    if (num_in(m, set, "steps", "settings.steps", 1, 150, &x)) m->steps = (int32_t)x;
    if (num_in(m, set, "cfgScale", "settings.cfgScale", 0, 30, &x)) m->cfg = x;
    v = cJSON_GetObjectItemCaseSensitive(set, "sampler");
    if (cJSON_IsString(v)) (void)imgd_fmt(m->sampler, sizeof m->sampler, "%s", v->valuestring);
}

bool imgd_civitai_meta_read(const char *model_path, imgd_civitai_meta *out) {
    memset(out, 0, sizeof *out);
    if (!model_path) return false;
    sidecar_path(model_path, out->path, sizeof out->path);
    if (!imgd_path_is_file(out->path)) return false;
    char  *txt = NULL;
    size_t len = 0;
    cJSON *doc = NULL;
    if (imgd_file_read_all(out->path, SIDECAR_MAX, &txt, &len) != IMGD_OK ||
        imgd_json_parse(out->path, txt, len, SIDECAR_MAX, 32, &doc) != IMGD_OK ||
        !cJSON_IsObject(doc)) {
        IMGD_LOG(IMGD_LOG_WARN, "service.civitai", "bad_sidecar",
                 "%s: not a CivitAI model-version JSON object (%s); ignored (imgd pull "
                 "civitai:VERSION writes a valid one)",
                 out->path, imgd_last_error());
        imgd_free(txt);
        cJSON_Delete(doc);
        char keep[sizeof out->path];
        memcpy(keep, out->path, sizeof keep);
        memset(out, 0, sizeof *out);
        memcpy(out->path, keep, sizeof keep);
        return false;
    }
    read_fields(out, doc);
    imgd_free(txt);
    cJSON_Delete(doc);
    return true;
}
