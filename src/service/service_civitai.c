/* CivitAI metadata (NAME.civitai.json beside a model, service/civitai.h) as request defaults:
 * a checkpoint's stated sampler, steps, CFG scale and clip skip become its schema's defaults;
 * a LoRA's recommended weight fills "weight" when a request omits it, and its trained words
 * are listed in the schema (description and "x-imgd-loras") and in /v1/models. */
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"
#include "service/civitai.h"
#include "service/registry.h"
#include "service/service_impl.h"

/* ---- checkpoints ---------------------------------------------------------------------------- */

bool svc_civitai_caps(const char *path, imgd_schema_caps *c, imgd_civitai_meta *cm) {
    if (!imgd_civitai_meta_read(path, cm)) return false;
    if (cm->steps > 0) c->steps_default = IMGD_MIN(cm->steps, c->steps_max);
    if (cm->cfg > 0) c->cfg_default = IMGD_MIN(cm->cfg, c->cfg_max);
    const char *sampler = NULL, *schedule = NULL;
    if (cm->sampler[0] && svc_a1111_sampler_native(cm->sampler, &sampler, &schedule)) {
        c->sampler_default  = sampler;
        c->schedule_default = schedule;
    } else if (cm->sampler[0]) {
        IMGD_LOG(IMGD_LOG_WARN, "service.civitai", "bad_field",
                 "%s: settings.sampler '%s' is not a sampler imgd knows; ignored (A1111 names "
                 "such as \"DPM++ 2M Karras\" or native ones; GET /sdapi/v1/samplers lists them)",
                 cm->path, cm->sampler);
        cm->sampler[0] = '\0';
    }
    return true;
}

static cJSON *words_json(const imgd_civitai_meta *cm) {
    cJSON *a = cJSON_CreateArray();
    for (int32_t i = 0; a && i < cm->n_words; i++) {
        cJSON_AddItemToArray(a, cJSON_CreateString(cm->words[i]));
    }
    return a;
}

/* clip_skip's default and the "x-imgd-civitai" note (what was applied, from which file). */
static bool annotate_checkpoint(cJSON *schema, const imgd_schema_caps *c,
                                const imgd_civitai_meta *cm) {
    cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
    cJSON *cs    = cJSON_GetObjectItemCaseSensitive(props, "clip_skip");
    if (cm->clip_skip > 0 && cs) {
        cJSON *d = cJSON_CreateNumber(cm->clip_skip);
        if (!d || !cJSON_ReplaceItemInObjectCaseSensitive(cs, "default", d)) {
            cJSON_Delete(d);
            return false;
        }
    }
    cJSON *note = cJSON_AddObjectToObject(schema, "x-imgd-civitai");
    cJSON *defs = note ? cJSON_AddObjectToObject(note, "defaults") : NULL;
    if (!defs || !cJSON_AddStringToObject(note, "file", cm->path) ||
        !cJSON_AddStringToObject(note, "base_model", cm->base_model)) {
        return false;
    }
    cJSON *w = words_json(cm);
    if (!w) return false;
    cJSON_AddItemToObject(note, "trained_words", w);
    bool ok = true;
    if (cm->steps > 0) ok = ok && cJSON_AddNumberToObject(defs, "steps", c->steps_default);
    if (cm->cfg > 0) ok = ok && cJSON_AddNumberToObject(defs, "cfg_scale", c->cfg_default);
    if (cm->sampler[0]) {
        ok = ok && cJSON_AddStringToObject(defs, "sampler", c->sampler_default) &&
             cJSON_AddStringToObject(defs, "schedule", c->schedule_default);
    }
    if (cm->clip_skip > 0) ok = ok && cJSON_AddNumberToObject(defs, "clip_skip", cm->clip_skip);
    return ok;
}

/* ---- LoRAs ---------------------------------------------------------------------------------- */

/* "x-imgd-loras": {id: {"weight", "trained_words"}} for the LoRAs with metadata, and their
 * trigger words and weights appended to the description of $defs/lora's name. */
static bool annotate_loras(imgd_server *s, cJSON *schema, const char *const *loras, size_t n) {
    cJSON             *ann = NULL;
    imgd_buf           desc;
    imgd_civitai_meta *cm = imgd_malloc(sizeof *cm);
    bool               ok = cm != NULL;
    imgd_buf_init(&desc, (size_t)1 << 16);
    for (size_t i = 0; ok && i < n; i++) {
        imgd_reg_entry e;
        if (imgd_registry_find(s->reg, loras[i], &e) != IMGD_OK ||
            !imgd_civitai_meta_read(e.path, cm) || (!cm->has_weight && cm->n_words == 0)) {
            continue;
        }
        if (!ann) ok = (ann = cJSON_AddObjectToObject(schema, "x-imgd-loras")) != NULL;
        cJSON *one = ok ? cJSON_AddObjectToObject(ann, loras[i]) : NULL;
        cJSON *w   = one ? words_json(cm) : NULL;
        ok         = w != NULL;
        if (!ok) break;
        cJSON_AddItemToObject(one, "trained_words", w);
        if (cm->has_weight) ok = cJSON_AddNumberToObject(one, "weight", cm->weight) != NULL;
        ok = ok && imgd_buf_printf(&desc, "%s%s:", desc.len ? "; " : "", loras[i]) == IMGD_OK;
        for (int32_t k = 0; ok && k < cm->n_words; k++) {
            ok = imgd_buf_printf(&desc, "%s\"%s\"", k ? ", " : " trigger words ", cm->words[k]) ==
                 IMGD_OK;
        }
        if (ok && cm->has_weight) {
            ok = imgd_buf_printf(&desc,
                                 "%srecommended weight %g (used when the request gives "
                                 "none)",
                                 cm->n_words ? ", " : " ", cm->weight) == IMGD_OK;
        }
    }
    cJSON *name = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(schema, "$defs"),
                                                 "lora"),
                "properties"),
            "name"),
        "description");
    if (ok && desc.len && cJSON_IsString(name)) {
        char  *text = NULL;
        size_t cap  = strlen(name->valuestring) + desc.len + 64;
        ok          = (text = imgd_malloc(cap)) != NULL &&
             imgd_fmt(text, cap, "%s CivitAI metadata (NAME.civitai.json): %s.", name->valuestring,
                      desc.data) &&
             cJSON_SetValuestring(name, text) != NULL;
        imgd_free(text);
    }
    imgd_buf_free(&desc);
    imgd_free(cm);
    return ok;
}

bool svc_civitai_annotate(imgd_server *s, cJSON *schema, const imgd_schema_caps *c,
                          const imgd_civitai_meta *cm) {
    if (cm && !annotate_checkpoint(schema, c, cm)) return false;
    return annotate_loras(s, schema, c->loras, c->n_loras);
}

imgd_status svc_lora_weight_defaults(const cJSON *schema, cJSON *req) {
    const cJSON *ann = cJSON_GetObjectItemCaseSensitive(schema, "x-imgd-loras");
    cJSON       *arr = cJSON_GetObjectItemCaseSensitive(req, "loras");
    cJSON       *it;
    if (!ann || !cJSON_IsArray(arr)) return IMGD_OK;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (!cJSON_IsObject(it) || !cJSON_IsString(nm) ||
            cJSON_GetObjectItemCaseSensitive(it, "weight")) {
            continue;
        }
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(ann, nm->valuestring), "weight");
        if (cJSON_IsNumber(w) && !cJSON_AddNumberToObject(it, "weight", w->valuedouble)) {
            return imgd_fail(IMGD_E_NOMEM, "out of memory");
        }
    }
    return IMGD_OK;
}

/* ---- listing -------------------------------------------------------------------------------- */

void svc_civitai_entry_json(const imgd_reg_entry *e, cJSON *o) {
    if (e->error[0]) return;
    imgd_civitai_meta *cm = imgd_malloc(sizeof *cm);
    if (!cm || !imgd_civitai_meta_read(e->path, cm)) {
        imgd_free(cm);
        return;
    }
    cJSON *c = cJSON_AddObjectToObject(o, "civitai");
    cJSON *w = c ? words_json(cm) : NULL;
    if (w) {
        (void)cJSON_AddStringToObject(c, "base_model", cm->base_model);
        cJSON_AddItemToObject(c, "trained_words", w);
        if (cm->has_weight) (void)cJSON_AddNumberToObject(c, "weight", cm->weight);
        if (cm->steps > 0) (void)cJSON_AddNumberToObject(c, "steps", cm->steps);
        if (cm->cfg > 0) (void)cJSON_AddNumberToObject(c, "cfg_scale", cm->cfg);
        if (cm->sampler[0]) (void)cJSON_AddStringToObject(c, "sampler", cm->sampler);
        if (cm->clip_skip > 0) (void)cJSON_AddNumberToObject(c, "clip_skip", cm->clip_skip);
    }
    imgd_free(cm);
}
