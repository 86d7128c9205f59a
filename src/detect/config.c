/* Facts the shapes cannot give (head counts, GroupNorm groups, prediction type), taken
 * from a diffusers config.json kept as metadata or from an LDM .yaml beside the file, and
 * family defaults where neither exists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/json.h"
#include "base/map.h"
#include "base/text.h"
#include "detect/detect.h"

static cJSON *meta_json(const imgd_weights *w, const char *key) {
    const char *s = imgd_weights_meta_find(w, key);
    cJSON      *j = NULL;
    if (s && imgd_json_parse(key, s, strlen(s), 16u << 20, 64, &j) != IMGD_OK) return NULL;
    return j;
}

static int32_t json_int(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int32_t)v->valuedouble : 0;
}

static void unet_from_json(const cJSON *j, imgd_model_info *mi, const char *key) {
    imgd_unet_config *u = &mi->unet;
    const cJSON      *h = cJSON_GetObjectItemCaseSensitive(j, "num_attention_heads");
    if (!h || cJSON_IsNull(h)) h = cJSON_GetObjectItemCaseSensitive(j, "attention_head_dim");
    if (cJSON_IsNumber(h)) {
        for (int i = 0; i < IMGD_MAX_LEVELS; i++) u->heads[i] = (int32_t)h->valuedouble;
        u->heads_from_config = true;
    } else if (cJSON_IsArray(h)) {
        int i = 0;
        for (const cJSON *e = h->child; e && i < IMGD_MAX_LEVELS; e = e->next, i++)
            u->heads[i] = (int32_t)e->valuedouble;
        for (; i < IMGD_MAX_LEVELS && i > 0; i++) u->heads[i] = u->heads[i - 1];
        u->heads_from_config = true;
    }
    if (json_int(j, "norm_num_groups")) u->groups = json_int(j, "norm_num_groups");
    if (u->heads_from_config) imgd_detect_note(mi, "attention heads from %s", key);
}

static void te_from_json(const cJSON *j, imgd_te_config *t) {
    if (json_int(j, "num_attention_heads")) t->heads = json_int(j, "num_attention_heads");
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    if (cJSON_IsString(act)) t->gelu_erf = strcmp(act->valuestring, "quick_gelu") != 0;
}

/* FLUX transformer config.json: rope axes and heads (shapes give head_dim only). */
static void dit_from_json(const cJSON *j, imgd_model_info *mi, const char *key) {
    imgd_dit_config *d  = &mi->dit;
    const cJSON     *ax = cJSON_GetObjectItemCaseSensitive(j, "axes_dims_rope");
    if (d->type != IMGD_DIT_FLUX || !cJSON_IsArray(ax)) return;
    int32_t n = 0, dims[4] = {0};
    for (const cJSON *e = ax->child; e; e = e->next, n++) {
        if (n >= 4 || !cJSON_IsNumber(e)) return;
        dims[n] = (int32_t)e->valuedouble;
    }
    d->n_axes = n;
    memcpy(d->axes_dims, dims, sizeof dims);
    if (json_int(j, "num_attention_heads") > 0 && json_int(j, "attention_head_dim") > 0) {
        d->heads    = json_int(j, "num_attention_heads");
        d->head_dim = json_int(j, "attention_head_dim");
    }
    d->axes_from_config = true;
    imgd_detect_note(mi, "rope axes and attention heads from %s", key);
}

static void from_diffusers(const imgd_weights *w, imgd_model_info *mi) {
    if (mi->has_dit) {
        const char *dkey = mi->denoiser_prefix && strcmp(mi->denoiser_prefix, "transformer/") == 0
                               ? "transformer/config.json"
                               : "config.json";
        cJSON      *dj   = meta_json(w, dkey);
        if (dj) dit_from_json(dj, mi, dkey);
        cJSON_Delete(dj);
    }
    const char *ukey = mi->denoiser_prefix && strcmp(mi->denoiser_prefix, "unet/") == 0
                           ? "unet/config.json"
                           : "config.json";
    cJSON      *j    = meta_json(w, ukey);
    if (j && mi->has_unet) unet_from_json(j, mi, ukey);
    cJSON_Delete(j);
    j = meta_json(w, mi->vae_prefix && *mi->vae_prefix ? "vae/config.json" : "config.json");
    if (j && mi->has_vae) {
        const cJSON *sf = cJSON_GetObjectItemCaseSensitive(j, "scaling_factor");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shift_factor");
        if (json_int(j, "norm_num_groups")) mi->vae.groups = json_int(j, "norm_num_groups");
        if (cJSON_IsNumber(sf) && sf->valuedouble > 0) {
            mi->vae.scaling_factor      = (float)sf->valuedouble;
            mi->vae.shift_factor        = cJSON_IsNumber(sh) ? (float)sh->valuedouble : 0.0f;
            mi->vae.scaling_from_config = true;
        }
    }
    cJSON_Delete(j);
    for (int32_t i = 0; i < mi->n_te; i++) {
        char key[64];
        imgd_fmt(key, sizeof key, "%s/config.json", mi->te[i].component);
        j = meta_json(w, key);
        if (!j && mi->n_te == 1) j = meta_json(w, "config.json");
        if (j) te_from_json(j, &mi->te[i]);
        cJSON_Delete(j);
    }
    j               = meta_json(w, "scheduler/scheduler_config.json");
    const cJSON *pt = j ? cJSON_GetObjectItemCaseSensitive(j, "prediction_type") : NULL;
    if (cJSON_IsString(pt)) {
        mi->prediction =
            strcmp(pt->valuestring, "v_prediction") == 0 ? IMGD_PRED_V : IMGD_PRED_EPSILON;
        imgd_detect_note(mi, "prediction_type '%s' from scheduler/scheduler_config.json",
                         pt->valuestring);
    }
    cJSON_Delete(j);
}

static int32_t to_i(const char *s) {
    long v = strtol(s, NULL, 10);
    return v > 0 && v < 1000000 ? (int32_t)v : 0;
}

/* Value of "key:" in a YAML text (first occurrence), as a trimmed string in out. */
static bool yaml_value(const char *text, const char *key, char *out, size_t cap) {
    size_t kl = strlen(key);
    for (const char *p = text; (p = strstr(p, key)) != NULL; p += kl) {
        if ((p != text && p[-1] != ' ' && p[-1] != '\n') || p[kl] != ':') continue;
        const char *v = p + kl + 1;
        while (*v == ' ' || *v == '"' || *v == '\'') v++;
        size_t n = strcspn(v, "\"'\n# ");
        if (n == 0 || n >= cap) return false;
        memcpy(out, v, n);
        out[n] = '\0';
        return true;
    }
    return false;
}

static void from_yaml(const char *path, imgd_model_info *mi) {
    size_t      len = strlen(path);
    const char *dot = strrchr(path, '.');
    const char *sl  = strrchr(path, '/');
    if (!dot || (sl && dot < sl)) return;
    char *yp = imgd_malloc(len + 8);
    if (!yp) return;
    memcpy(yp, path, (size_t)(dot - path));
    memcpy(yp + (dot - path), ".yaml", 6);
    char *text = NULL;
    if (imgd_path_is_file(yp) && imgd_file_read_all(yp, 1u << 20, &text, NULL) == IMGD_OK) {
        char v[64];
        imgd_detect_note(mi, "read %s", yp);
        if (mi->has_unet && yaml_value(text, "num_heads", v, sizeof v) && to_i(v) > 0) {
            for (int i = 0; i < IMGD_MAX_LEVELS; i++) mi->unet.heads[i] = to_i(v);
            mi->unet.heads_from_config = true;
        } else if (mi->has_unet && yaml_value(text, "num_head_channels", v, sizeof v) &&
                   to_i(v) > 0) {
            for (int i = 0; i < mi->unet.n_levels; i++)
                mi->unet.heads[i] = IMGD_MAX(mi->unet.widths[i] / to_i(v), 1);
            mi->unet.heads_from_config = true;
        }
        if (yaml_value(text, "parameterization", v, sizeof v)) {
            mi->prediction = strcmp(v, "v") == 0 ? IMGD_PRED_V : IMGD_PRED_EPSILON;
            imgd_detect_note(mi, "parameterization '%s' from the yaml", v);
        }
    }
    imgd_free(text);
    imgd_free(yp);
}

/* Family defaults for what neither shapes nor configs gave. */
static void unet_defaults(imgd_model_info *mi) {
    imgd_unet_config *u = &mi->unet;
    if (!mi->has_unet || u->heads_from_config) return;
    bool sd1 = mi->family == IMGD_FAMILY_SD1;
    for (int i = 0; i < u->n_levels; i++) u->heads[i] = sd1 ? 8 : IMGD_MAX(u->widths[i] / 64, 1);
    for (int i = u->n_levels; i < IMGD_MAX_LEVELS; i++) u->heads[i] = u->heads[u->n_levels - 1];
    imgd_detect_note(mi, "attention heads not in the shapes: family default (%s)",
                     sd1 ? "8 heads" : "64-wide heads");
}

void imgd_detect_apply_configs(const imgd_weights *w, const char *path, imgd_model_info *mi) {
    if (w->format == IMGD_FORMAT_DIFFUSERS)
        from_diffusers(w, mi);
    else if (path && *path)
        from_yaml(path, mi);
    unet_defaults(mi);
}
