/* The worker's models: ids under model directories, detection, load and unload. */
/* realpath() is XSI. */
#define _XOPEN_SOURCE 700 // NOLINT(bugprone-reserved-identifier): the feature-test macro

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/error.h"
#include "base/log.h"
#include "base/text.h"
#include "service/schema.h"
#include "service/service_impl.h"

#define WALK_DEPTH_MAX 4
#define LIST_MAX       4096

/* ---- ids and paths ------------------------------------------------------------------------ */

static bool id_syntax_ok(const char *id, char *detail, size_t cap) {
    size_t n = strlen(id);
    if (n == 0) {
        (void)imgd_fmt(detail, cap, "the model id is empty");
        return false;
    }
    if (n >= SVC_ID_MAX) {
        (void)imgd_fmt(detail, cap, "the model id is %zu bytes; at most %d", n, SVC_ID_MAX - 1);
        return false;
    }
    if (id[0] == '/' || id[0] == '~') {
        (void)imgd_fmt(detail, cap,
                       "model id '%s' is an absolute path; ids are paths relative to a model "
                       "directory (GET /v1/models lists them)",
                       id);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x20 || c == '\\' || c == 0x7f) {
            (void)imgd_fmt(detail, cap, "model id has a control character or backslash at byte %zu",
                           i);
            return false;
        }
        /* ".." as a whole path component */
        if (c == '.' && id[i + 1] == '.' && (i == 0 || id[i - 1] == '/') &&
            (id[i + 2] == '\0' || id[i + 2] == '/')) {
            (void)imgd_fmt(detail, cap,
                           "model id '%s' climbs out of the model directory with '..'; use an id "
                           "from GET /v1/models",
                           id);
            return false;
        }
    }
    return true;
}

bool svc_model_resolve(imgd_server *s, const char *id, char *path, size_t cap, int32_t *http_status,
                       char *detail, size_t detail_cap) {
    *http_status = 400;
    if (!id_syntax_ok(id, detail, detail_cap)) return false;
    for (size_t d = 0; d < s->n_dirs; d++) {
        char joined[PATH_MAX * 2];
        if (!imgd_fmt(joined, sizeof joined, "%s/%s", s->dirs[d], id)) continue;
        char real[PATH_MAX];
        if (!realpath(joined, real)) continue;
        size_t dl = strlen(s->dirs[d]);
        if (strncmp(real, s->dirs[d], dl) != 0 || (real[dl] != '/' && real[dl] != '\0')) {
            *http_status = 403;
            (void)imgd_fmt(detail, detail_cap,
                           "model id '%s' resolves outside the model directory (a symbolic link "
                           "leaving it); such models are not served",
                           id);
            return false;
        }
        if (!imgd_fmt(path, cap, "%s", real)) break;
        return true;
    }
    *http_status = 404;
    (void)imgd_fmt(detail, detail_cap,
                   "no model '%s' under the model directories (GET /v1/models lists what is "
                   "there)",
                   id);
    return false;
}

/* ---- detection ---------------------------------------------------------------------------- */

static bool detect_path(const char *path, char family[32], char kind[32], char *err, size_t cap) {
    imgd_weights    *w  = NULL;
    imgd_model_info *mi = NULL;
    imgd_open_params op = imgd_open_params_default();
    imgd_status      st = imgd_weights_open(path, &op, &w);
    if (st == IMGD_OK) st = imgd_model_detect(w, &mi);
    if (st != IMGD_OK) {
        (void)imgd_fmt(err, cap, "%s", imgd_last_error());
        imgd_weights_free(w);
        return false;
    }
    (void)imgd_fmt(family, 32, "%s", imgd_family_name(imgd_model_info_family(mi)));
    (void)imgd_fmt(kind, 32, "%s", imgd_model_kind_name(imgd_model_info_kind(mi)));
    imgd_model_info_free(mi);
    imgd_weights_free(w);
    return true;
}

static bool family_generates(const char *family, const char *kind) {
    bool fam = strcmp(family, "sd1") == 0 || strcmp(family, "sd2") == 0;
    return fam && strcmp(kind, "checkpoint") == 0;
}

static cJSON *caps_schema(const char *id, const char *family) {
    imgd_schema_caps c;
    memset(&c, 0, sizeof c);
    c.model_id         = id;
    c.family           = family;
    c.img2img          = true;
    c.inpaint          = true;
    c.negative_prompt  = true;
    c.size_min         = 64;
    c.size_max         = 2048;
    c.size_multiple    = 8;
    c.width_default    = strcmp(family, "sd2") == 0 ? 768 : 512;
    c.height_default   = c.width_default;
    c.steps_default    = 20;
    c.steps_max        = 150;
    c.cfg_default      = 7.0;
    c.cfg_max          = 30.0;
    c.batch_max        = 8;
    c.sampler_default  = "euler";
    c.schedule_default = "default";
    return imgd_schema_for_generate(&c);
}

svc_model *svc_model_find(imgd_server *s, const char *id, int32_t *http_status, char *detail,
                          size_t detail_cap) {
    for (size_t i = 0; i < s->n_models; i++) {
        if (strcmp(s->models[i].id, id) == 0) return &s->models[i];
    }
    char path[PATH_MAX];
    if (!svc_model_resolve(s, id, path, sizeof path, http_status, detail, detail_cap)) return NULL;
    svc_model tmp;
    memset(&tmp, 0, sizeof tmp);
    (void)imgd_fmt(tmp.id, sizeof tmp.id, "%s", id);
    (void)imgd_fmt(tmp.path, sizeof tmp.path, "%s", path);
    char err[512];
    if (!detect_path(path, tmp.family, tmp.kind, err, sizeof err)) {
        *http_status = 422;
        (void)imgd_fmt(detail, detail_cap, "model '%s' cannot be read: %s", id, err);
        return NULL;
    }
    if (!family_generates(tmp.family, tmp.kind)) {
        *http_status = 422;
        (void)imgd_fmt(detail, detail_cap,
                       "model '%s' is a %s %s; this worker generates with SD 1.x/2.x checkpoints "
                       "(diffusers folders or single files)",
                       id, tmp.family, tmp.kind);
        return NULL;
    }
    tmp.schema = caps_schema(id, tmp.family);
    if (!tmp.schema) {
        *http_status = 500;
        (void)imgd_fmt(detail, detail_cap, "out of memory building the schema of '%s'", id);
        return NULL;
    }
    if (s->n_models == SVC_MODELS_MAX) {
        /* forget the least recently used model that is not loaded */
        size_t victim = SVC_MODELS_MAX;
        for (size_t i = 0; i < s->n_models; i++) {
            if (s->models[i].m) continue;
            if (victim == SVC_MODELS_MAX ||
                s->models[i].last_used_ms < s->models[victim].last_used_ms)
                victim = i;
        }
        if (victim == SVC_MODELS_MAX) {
            cJSON_Delete(tmp.schema);
            *http_status = 503;
            (void)imgd_fmt(detail, detail_cap,
                           "%d models are loaded, the most this worker holds; unload one "
                           "(POST /v1/models/{id}/unload)",
                           SVC_MODELS_MAX);
            return NULL;
        }
        cJSON_Delete(s->models[victim].schema);
        s->models[victim] = s->models[--s->n_models];
    }
    s->models[s->n_models] = tmp;
    return &s->models[s->n_models++];
}

const char *svc_model_single_loaded(imgd_server *s) {
    const char *one = NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        if (!s->models[i].m) continue;
        if (one) return NULL;
        one = s->models[i].id;
    }
    return one;
}

/* ---- load / unload ------------------------------------------------------------------------ */

imgd_load_params svc_model_load_params(imgd_server *s, const char *id) {
    imgd_load_params lp  = s->p.load;
    const cJSON     *all = s->config ? cJSON_GetObjectItemCaseSensitive(s->config, "models") : NULL;
    const cJSON     *mc  = all ? cJSON_GetObjectItemCaseSensitive(all, id) : NULL;
    if (!cJSON_IsObject(mc)) return lp;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "groups")) && cJSON_IsNumber(v))
        lp.arch.groups = (int32_t)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "te_heads")) && cJSON_IsNumber(v))
        lp.arch.te_heads = (int32_t)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "unet_heads")) && cJSON_IsNumber(v))
        lp.arch.unet_heads = (int32_t)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "unet_head_dim")) && cJSON_IsNumber(v))
        lp.arch.unet_head_dim = (int32_t)v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "tokenizer")) && cJSON_IsString(v))
        lp.tokenizer_dir = v->valuestring;
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "vae")) && cJSON_IsString(v))
        lp.vae = v->valuestring;
    return lp;
}

imgd_status svc_model_load(imgd_server *s, const char *id) {
    pthread_mutex_lock(&s->engine_mu);
    pthread_mutex_lock(&s->mu);
    int32_t    hs;
    char       detail[768];
    svc_model *sm = svc_model_find(s, id, &hs, detail, sizeof detail);
    if (!sm) {
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_unlock(&s->engine_mu);
        return imgd_fail(hs == 404 ? IMGD_E_IO : IMGD_E_INVALID_ARG, "%s", detail);
    }
    if (sm->m) {
        sm->last_used_ms = svc_now_ms();
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_unlock(&s->engine_mu);
        return IMGD_OK;
    }
    char path[PATH_MAX];
    (void)imgd_fmt(path, sizeof path, "%s", sm->path);
    pthread_mutex_unlock(&s->mu);

    imgd_load_params lp = svc_model_load_params(s, id);
    struct timespec  t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    imgd_model *m  = NULL;
    imgd_status st = imgd_model_load(path, &lp, &m);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (st != IMGD_OK) {
        IMGD_LOG(IMGD_LOG_ERROR, "service", "model_load_failed", "%s: %s", id, imgd_last_error());
        pthread_mutex_unlock(&s->engine_mu);
        return st;
    }
    pthread_mutex_lock(&s->mu);
    sm = svc_model_find(s, id, &hs, detail, sizeof detail);
    if (sm) {
        sm->m            = m;
        sm->load_s       = secs;
        sm->loaded_ms    = svc_now_ms();
        sm->last_used_ms = sm->loaded_ms;
        m                = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    imgd_model_free(m);
    imgd_svc_metrics_load(&s->metrics, id, secs);
    IMGD_LOG(IMGD_LOG_INFO, "service", "model_loaded", "%s in %.3f s", id, secs);
    pthread_mutex_unlock(&s->engine_mu);
    return sm ? IMGD_OK : imgd_fail(IMGD_E_INTERNAL, "%s", detail);
}

imgd_status svc_model_unload(imgd_server *s, const char *id) {
    pthread_mutex_lock(&s->engine_mu);
    pthread_mutex_lock(&s->mu);
    imgd_model *m = NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        if (strcmp(s->models[i].id, id) == 0) {
            m              = s->models[i].m;
            s->models[i].m = NULL;
        }
    }
    pthread_mutex_unlock(&s->mu);
    imgd_model_free(m);
    pthread_mutex_unlock(&s->engine_mu);
    if (m) IMGD_LOG(IMGD_LOG_INFO, "service", "model_unloaded", "%s", id);
    return IMGD_OK;
}

void svc_models_free(imgd_server *s) {
    for (size_t i = 0; i < s->n_models; i++) {
        imgd_model_free(s->models[i].m);
        cJSON_Delete(s->models[i].schema);
    }
    s->n_models = 0;
}

/* ---- listing ------------------------------------------------------------------------------ */

static bool weight_ext(const char *name) {
    static const char *const k_ext[] = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf"};
    size_t                   n       = strlen(name);
    for (size_t i = 0; i < sizeof k_ext / sizeof k_ext[0]; i++) {
        size_t e = strlen(k_ext[i]);
        if (n > e && strcmp(name + n - e, k_ext[i]) == 0) return true;
    }
    return false;
}

typedef struct walk_ctx {
    imgd_server *s;
    cJSON       *arr;
    size_t       count;
} walk_ctx;

static void list_add(walk_ctx *w, const char *root, const char *rel, const char *full) {
    (void)root;
    if (w->count >= LIST_MAX) return;
    w->count++;
    cJSON *o = cJSON_CreateObject();
    if (!o) return;
    cJSON_AddItemToArray(w->arr, o);
    (void)cJSON_AddStringToObject(o, "id", rel);
    bool loaded = false;
    pthread_mutex_lock(&w->s->mu);
    for (size_t i = 0; i < w->s->n_models; i++) {
        if (strcmp(w->s->models[i].id, rel) == 0 && w->s->models[i].m) loaded = true;
    }
    pthread_mutex_unlock(&w->s->mu);
    char family[32], kind[32], err[512];
    if (detect_path(full, family, kind, err, sizeof err)) {
        (void)cJSON_AddStringToObject(o, "family", family);
        (void)cJSON_AddStringToObject(o, "kind", kind);
        (void)cJSON_AddBoolToObject(o, "servable", family_generates(family, kind));
    } else {
        (void)cJSON_AddStringToObject(o, "error", err);
        (void)cJSON_AddBoolToObject(o, "servable", false);
    }
    (void)cJSON_AddBoolToObject(o, "loaded", loaded);
}

/* Recursion is capped at WALK_DEPTH_MAX levels. */
// NOLINTNEXTLINE(misc-no-recursion)
static void walk(walk_ctx *w, const char *root, const char *rel, int depth) {
    char dirpath[PATH_MAX * 2];
    if (!imgd_fmt(dirpath, sizeof dirpath, "%s%s%s", root, rel[0] ? "/" : "", rel)) return;
    DIR *d = opendir(dirpath);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && w->count < LIST_MAX) {
        if (e->d_name[0] == '.') continue;
        char r2[PATH_MAX], full[PATH_MAX * 2];
        if (!imgd_fmt(r2, sizeof r2, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name)) continue;
        if (!imgd_fmt(full, sizeof full, "%s/%s", root, r2)) continue;
        struct stat st;
        if (stat(full, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            char        mi[PATH_MAX * 2 + 32];
            struct stat st2;
            if (imgd_fmt(mi, sizeof mi, "%s/model_index.json", full) && stat(mi, &st2) == 0) {
                list_add(w, root, r2, full);
            } else if (depth + 1 < WALK_DEPTH_MAX) {
                walk(w, root, r2, depth + 1);
            }
        } else if (S_ISREG(st.st_mode) && weight_ext(e->d_name)) {
            list_add(w, root, r2, full);
        }
    }
    (void)closedir(d);
}

cJSON *svc_models_list(imgd_server *s) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    walk_ctx w = {s, arr, 0};
    for (size_t d = 0; d < s->n_dirs; d++) walk(&w, s->dirs[d], "", 0);
    return arr;
}

cJSON *svc_model_json(imgd_server *s, const svc_model *sm) {
    (void)s;
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    (void)cJSON_AddStringToObject(o, "id", sm->id);
    (void)cJSON_AddStringToObject(o, "family", sm->family);
    (void)cJSON_AddStringToObject(o, "kind", sm->kind);
    (void)cJSON_AddBoolToObject(o, "loaded", sm->m != NULL);
    if (sm->m) {
        (void)cJSON_AddNumberToObject(o, "load_s", sm->load_s);
        char *info = NULL;
        if (imgd_model_info_json(imgd_model_get_info(sm->m), &info) == IMGD_OK) {
            cJSON *det = cJSON_Parse(info);
            if (det) cJSON_AddItemToObject(o, "detection", det);
            imgd_string_free(info);
        }
    }
    cJSON *caps = cJSON_AddObjectToObject(o, "capabilities");
    if (caps) {
        (void)cJSON_AddBoolToObject(caps, "txt2img", true);
        (void)cJSON_AddBoolToObject(caps, "img2img", true);
        (void)cJSON_AddBoolToObject(caps, "inpaint", true);
    }
    (void)cJSON_AddStringToObject(o, "schema", "schema");
    return o;
}
