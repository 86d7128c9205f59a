/* The worker's models: the registry (what is under the model dirs), descriptors with their
 * request schemas, and the memory cache of loaded models with its disk cache of conversions. */
/* realpath() is XSI. */
#define _XOPEN_SOURCE 700 // NOLINT(bugprone-reserved-identifier): the feature-test macro

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/log.h"
#include "base/map.h"
#include "base/text.h"
#include "service/civitai.h"
#include "service/disk_cache.h"
#include "service/schema.h"
#include "service/service_impl.h"

#define DISK_CACHE_DEFAULT ((uint64_t)64 << 30)

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

/* A request's "loras" names -> files: the registry's path for each id. On failure *err
 * says which name. */
/* Takes <lora:NAME[:W[:W_UNET]]> tags out of gp->prompt into hold->tags (A1111 clients
 * name LoRAs by file name; the registry knows them by id or file name), so the pipeline
 * never sees a server path and the image's infotext none either. */
static imgd_status prompt_tags_take(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp) {
    const char *p = gp->prompt;
    if (!p || !strstr(p, "<lora:")) return IMGD_OK;
    imgd_buf b;
    imgd_buf_init(&b, (size_t)1 << 20);
    imgd_status st = IMGD_OK;
    while (st == IMGD_OK && *p) {
        const char *t     = strstr(p, "<lora:");
        const char *close = t ? strchr(t, '>') : NULL;
        if (!t || !close) {
            st = imgd_buf_puts(&b, p);
            break;
        }
        char   tag[SVC_ID_MAX];
        size_t tl = (size_t)(close - (t + 6));
        if (tl >= sizeof tag) {
            st = imgd_fail(IMGD_E_INVALID_ARG, "prompt: a <lora:...> tag is too long");
            break;
        }
        memcpy(tag, t + 6, tl);
        tag[tl]  = '\0';
        char *w1 = strchr(tag, ':');
        char *w2 = w1 ? strchr(w1 + 1, ':') : NULL;
        if (w1) *w1++ = '\0';
        if (w2) *w2++ = '\0';
        imgd_reg_entry e;
        if (imgd_registry_find(s->reg, tag, &e) != IMGD_OK) {
            st = imgd_fail(IMGD_E_INVALID_ARG,
                           "prompt: <lora:%s> names no LoRA under the model dirs (GET "
                           "/sdapi/v1/loras lists them)",
                           tag);
            break;
        }
        if (hold->n_tags == 16) {
            st = imgd_fail(IMGD_E_INVALID_ARG, "prompt: at most 16 <lora:...> tags");
            break;
        }
        char *path = imgd_strdup(e.path);
        if (!path) {
            st = imgd_fail(IMGD_E_NOMEM, "out of memory");
            break;
        }
        imgd_lora_spec *ls              = &hold->tags[hold->n_tags];
        hold->tag_paths[hold->n_tags++] = path;
        ls->path                        = path;
        ls->weight                      = w1 ? strtof(w2 ? w2 : w1, NULL) : 1.0f;
        ls->weight_te                   = w1 ? strtof(w1, NULL) : 1.0f;
        ls->mode                        = IMGD_LORA_MODE_AUTO;
        st                              = imgd_buf_append(&b, p, (size_t)(t - p));
        p                               = close + 1;
    }
    if (st != IMGD_OK) {
        imgd_buf_free(&b);
        return st;
    }
    hold->prompt = imgd_buf_take(&b);
    if (!hold->prompt) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    gp->prompt = hold->prompt;
    return IMGD_OK;
}

imgd_status svc_loras_resolve(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp) {
    imgd_status tst = prompt_tags_take(s, hold, gp);
    if (tst != IMGD_OK) return tst;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(hold->req, "loras");
    int          n   = cJSON_GetArraySize(arr);
    if (n <= 0 && hold->n_tags > 0) {
        gp->loras   = hold->tags;
        gp->n_loras = (int32_t)hold->n_tags;
    }
    if (n <= 0) return svc_unit_loras(s, hold, gp);
    if (hold->n_tags > 0)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "give LoRAs either in \"loras\" or as <lora:...> prompt tags, not both");
    if (n > 16) return imgd_fail(IMGD_E_INVALID_ARG, "loras: at most %d", 16);
    hold->loras = imgd_calloc((size_t)n, sizeof *hold->loras);
    hold->paths = imgd_calloc((size_t)n, sizeof *hold->paths);
    if (!hold->loras || !hold->paths) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        const cJSON   *it = cJSON_GetArrayItem(arr, i);
        const cJSON   *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        const cJSON   *w  = cJSON_GetObjectItemCaseSensitive(it, "weight");
        imgd_reg_entry e;
        if (!cJSON_IsString(nm) || imgd_registry_find(s->reg, nm->valuestring, &e) != IMGD_OK)
            return imgd_fail(IMGD_E_INVALID_ARG, "loras[%d]: no LoRA '%s' under the model dirs", i,
                             cJSON_IsString(nm) ? nm->valuestring : "?");
        if (!(hold->paths[i] = imgd_strdup(e.path)))
            return imgd_fail(IMGD_E_NOMEM, "out of memory");
        hold->n_paths++;
        hold->loras[i].path      = hold->paths[i];
        hold->loras[i].weight    = w && cJSON_IsNumber(w) ? (float)w->valuedouble : 1.0f;
        hold->loras[i].weight_te = NAN;
        hold->loras[i].mode      = IMGD_LORA_MODE_AUTO;
    }
    gp->loras   = hold->loras;
    gp->n_loras = n;
    return svc_unit_loras(s, hold, gp);
}

/* ---- hypernetworks ------------------------------------------------------------------------ */

/* The registry's hypernetwork file for name (id or file name); IMGD_E_INVALID_ARG names
 * what (the field or tag) when there is none. */
static imgd_status hypernet_find(imgd_server *s, const char *name, const char *what,
                                 imgd_reg_entry *e) {
    if (imgd_registry_find(s->reg, name, e) != IMGD_OK || strcmp(e->kind, "hypernetwork") != 0)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "%s: no hypernetwork '%s' under the model dirs (GET "
                         "/sdapi/v1/hypernetworks lists them)",
                         what, name);
    return IMGD_OK;
}

static imgd_status hypernet_add(svc_gen_hold *hold, const char *path, float w) {
    if (hold->n_hypernets == IMGD_ARRAY_LEN(hold->hypernets))
        return imgd_fail(IMGD_E_INVALID_ARG, "at most %zu hypernetworks (field and tags)",
                         IMGD_ARRAY_LEN(hold->hypernets));
    char *p = imgd_strdup(path);
    if (!p) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    hold->hypernet_paths[hold->n_hypernets] = p;
    hold->hypernets[hold->n_hypernets++]    = (imgd_hypernet_spec){p, w};
    return IMGD_OK;
}

/* Takes <hypernet:NAME[:W]> tags out of gp->prompt into hold (A1111: W defaults to 1). */
static imgd_status hypernet_tags_take(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp) {
    const char *p = gp->prompt;
    if (!p || !strstr(p, "<hypernet:")) return IMGD_OK;
    imgd_buf b;
    imgd_buf_init(&b, (size_t)1 << 20);
    imgd_status st = IMGD_OK;
    while (st == IMGD_OK && *p) {
        const char *t     = strstr(p, "<hypernet:");
        const char *close = t ? strchr(t, '>') : NULL;
        if (!t || !close) {
            st = imgd_buf_puts(&b, p);
            break;
        }
        char   tag[SVC_ID_MAX];
        size_t tl = (size_t)(close - (t + 10));
        if (tl >= sizeof tag) {
            st = imgd_fail(IMGD_E_INVALID_ARG, "prompt: a <hypernet:...> tag is too long");
            break;
        }
        memcpy(tag, t + 10, tl);
        tag[tl]  = '\0';
        char *wt = strchr(tag, ':');
        if (wt) *wt++ = '\0';
        char  *end = NULL;
        double w   = wt ? strtod(wt, &end) : 1.0;
        if (wt && (end == wt || *end || !isfinite(w))) {
            st = imgd_fail(IMGD_E_INVALID_ARG, "prompt: <hypernet:%s:%s>: '%s' is not a weight",
                           tag, wt, wt);
            break;
        }
        imgd_reg_entry e;
        st = hypernet_find(s, tag, "prompt: <hypernet:...>", &e);
        if (st == IMGD_OK) st = hypernet_add(hold, e.path, (float)w);
        if (st == IMGD_OK) st = imgd_buf_append(&b, p, (size_t)(t - p));
        p = close + 1;
    }
    char *text = st == IMGD_OK ? imgd_buf_take(&b) : NULL;
    imgd_buf_free(&b);
    if (st != IMGD_OK) return st;
    if (!text) text = imgd_strdup(""); /* the prompt was tags only */
    if (!text) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_free(hold->prompt); /* gp->prompt may point to it: replaced right after */
    hold->prompt = text;
    gp->prompt   = text;
    return IMGD_OK;
}

imgd_status svc_hypernets_resolve(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(hold->req, "hypernets");
    int          n   = cJSON_GetArraySize(arr);
    imgd_status  st  = IMGD_OK;
    for (int i = 0; st == IMGD_OK && i < n; i++) {
        const cJSON   *it = cJSON_GetArrayItem(arr, i);
        const cJSON   *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        const cJSON   *w  = cJSON_GetObjectItemCaseSensitive(it, "weight");
        imgd_reg_entry e;
        char           what[32];
        (void)imgd_fmt(what, sizeof what, "hypernets[%d]", i);
        st = hypernet_find(s, cJSON_IsString(nm) ? nm->valuestring : "?", what, &e);
        if (st == IMGD_OK)
            st = hypernet_add(hold, e.path, w && cJSON_IsNumber(w) ? (float)w->valuedouble : 1.0f);
    }
    if (st == IMGD_OK) st = hypernet_tags_take(s, hold, gp);
    if (st != IMGD_OK || hold->n_hypernets == 0) return st;
    gp->hypernets   = hold->hypernets;
    gp->n_hypernets = (int32_t)hold->n_hypernets;
    return IMGD_OK;
}

/* ---- descriptors -------------------------------------------------------------------------- */

static bool is_flux(const char *family) {
    return strcmp(family, "flux_dev") == 0 || strcmp(family, "flux_schnell") == 0;
}

/* FLUX transformer-only files ("unet") are servable: their encoders and VAE are found
 * beside them or named in the config file's "models" section. */
static bool family_generates(const char *family, const char *kind) {
    bool fam = strcmp(family, "sd1") == 0 || strcmp(family, "sd2") == 0 ||
               strcmp(family, "sdxl") == 0 || strcmp(family, "sdxl_refiner") == 0;
    return (fam && strcmp(kind, "checkpoint") == 0) ||
           (is_flux(family) && (strcmp(kind, "checkpoint") == 0 || strcmp(kind, "unet") == 0));
}

/* What adapters_for returns of each entry. */
typedef enum adapter_field {
    ADAPTER_ID,
    ADAPTER_PATH,
    ADAPTER_STEM
} adapter_field;

static bool kind_in(const char *kind, const char *const *kinds) {
    for (size_t i = 0; kinds[i]; i++) {
        if (strcmp(kind, kinds[i]) == 0) return true;
    }
    return false;
}

/* Adapters under the model dirs of one of kinds (a NULL-terminated list) that fit family:
 * each entry's registry id, absolute path or file name without extension (the A1111
 * trigger of an embedding), newly allocated (free each and the array); *n receives the
 * count. NULL with *n == 0 when none. */
static char **adapters_for(imgd_server *s, const char *family, const char *const *kinds,
                           adapter_field what, size_t *n) {
    *n           = 0;
    size_t total = imgd_registry_count(s->reg), cap = 0;
    char **names = NULL;
    for (size_t i = 0; i < total && *n < SVC_LORAS_MAX; i++) {
        imgd_reg_entry e;
        if (imgd_registry_at(s->reg, i, &e) != IMGD_OK) continue;
        /* embeddings of a width no family uses (small test models) are detected as family
         * unknown: offered too, the load skips those that do not fit; so are hypernetworks
         * without a text-context width (the generation refuses those that fit no width) */
        bool emb = strcmp(e.kind, "embedding") == 0;
        bool hn  = strcmp(e.kind, "hypernetwork") == 0;
        if (!kind_in(e.kind, kinds) ||
            (strcmp(e.family, family) != 0 &&
             !((emb || hn) && (!e.family[0] || strcmp(e.family, "unknown") == 0))))
            continue;
        if (*n == cap) {
            cap         = cap ? cap * 2 : 16;
            char **grow = imgd_realloc(names, cap * sizeof *grow);
            if (!grow) break;
            names = grow;
        }
        char        stem[IMGD_REG_ID_MAX];
        const char *base = strrchr(e.id, '/');
        (void)imgd_fmt(stem, sizeof stem, "%s", base ? base + 1 : e.id);
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem) *dot = '\0';
        /* one embedding per trigger word (x.pt and x.safetensors: the first listed) */
        bool dup = false;
        for (size_t k = 0; emb && k < *n && !dup; k++) {
            char        other[IMGD_REG_ID_MAX];
            const char *ob = strrchr(names[k], '/');
            (void)imgd_fmt(other, sizeof other, "%s", ob ? ob + 1 : names[k]);
            char *od = what == ADAPTER_STEM ? NULL : strrchr(other, '.');
            if (od && od != other) *od = '\0';
            dup = strcmp(other, stem) == 0;
        }
        if (dup) continue;
        const char *v = what == ADAPTER_ID ? e.id : what == ADAPTER_PATH ? e.path : stem;
        if (!(names[*n] = imgd_strdup(v))) break;
        (*n)++;
    }
    return names;
}

static void names_free(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) imgd_free(names[i]);
    imgd_free(names);
}

static const char *const k_lora_kinds[]      = {"lora", "lycoris", NULL};
static const char *const k_control_kinds[]   = {"controlnet", NULL};
static const char *const k_embedding_kinds[] = {"embedding", NULL};
static const char *const k_model_kinds[]     = {"checkpoint", NULL};

/* The models an SDXL base (id) can hand its last steps to: refiners first, then the other
 * SDXL checkpoints (any SDXL UNet can refine). */
static char **refiners_for(imgd_server *s, const char *id, size_t *n) {
    size_t n_ref = 0, n_xl = 0;
    char **ref = adapters_for(s, "sdxl_refiner", k_model_kinds, ADAPTER_ID, &n_ref);
    char **xl  = adapters_for(s, "sdxl", k_model_kinds, ADAPTER_ID, &n_xl);
    char **all = imgd_malloc((n_ref + n_xl + 1) * sizeof *all);
    *n         = 0;
    for (size_t i = 0; all && i < n_ref + n_xl; i++) {
        char **slot = i < n_ref ? &ref[i] : &xl[i - n_ref];
        if (strcmp(*slot, id) == 0) continue;
        all[(*n)++] = *slot; /* moved */
        *slot       = NULL;
    }
    names_free(ref, n_ref);
    names_free(xl, n_xl);
    return all;
}
static const char *const k_hypernet_kinds[] = {"hypernetwork", NULL};

static cJSON *caps_schema(imgd_server *s, const char *id, const char *path, const char *family) {
    imgd_schema_caps c;
    memset(&c, 0, sizeof c);
    size_t n_loras = 0, n_cn = 0, n_emb = 0, n_hn = 0;
    char **loras           = adapters_for(s, family, k_lora_kinds, ADAPTER_ID, &n_loras);
    char **hns             = adapters_for(s, family, k_hypernet_kinds, ADAPTER_ID, &n_hn);
    char **cns             = adapters_for(s, family, k_control_kinds, ADAPTER_ID, &n_cn);
    char **embs            = adapters_for(s, family, k_embedding_kinds, ADAPTER_STEM, &n_emb);
    c.loras                = (const char *const *)loras;
    c.n_loras              = n_loras;
    c.controlnets          = (const char *const *)cns;
    c.n_controlnets        = n_cn;
    c.embeddings           = (const char *const *)embs;
    c.n_embeddings         = n_emb;
    c.hypernets            = (const char *const *)hns;
    c.n_hypernets          = n_hn;
    c.model_id             = id;
    c.family               = family;
    c.img2img              = true;
    c.inpaint              = true;
    c.negative_prompt      = true;
    c.size_min             = 64;
    c.size_max             = 2048;
    c.size_multiple        = 8;
    bool xl                = strcmp(family, "sdxl") == 0 || strcmp(family, "sdxl_refiner") == 0;
    c.width_default        = xl ? 1024 : strcmp(family, "sd2") == 0 ? 768 : 512;
    c.size_cond            = xl;
    c.aesthetic            = strcmp(family, "sdxl_refiner") == 0;
    size_t n_ref           = 0;
    char **refs            = strcmp(family, "sdxl") == 0 ? refiners_for(s, id, &n_ref) : NULL;
    c.refiners             = (const char *const *)refs;
    c.n_refiners           = n_ref;
    c.height_default       = c.width_default;
    c.steps_default        = 20;
    c.steps_max            = 150;
    c.cfg_default          = 7.0;
    c.cfg_max              = 30.0;
    c.batch_max            = 8;
    c.sampler_default      = "euler";
    c.schedule_default     = "default";
    imgd_civitai_meta *cm  = imgd_malloc(sizeof *cm);
    bool               civ = cm && !is_flux(family) && svc_civitai_caps(path, &c, cm);
    if (is_flux(family)) { /* guidance-distilled txt2img; dev has the guidance embedding */
        bool dev           = strcmp(family, "flux_dev") == 0;
        c.img2img          = true; /* FluxImg2ImgPipeline */
        c.inpaint          = false;
        c.negative_prompt  = false;
        c.n_loras          = 0;
        c.n_controlnets    = 0; /* FLUX runs no ControlNet, LoRA or embedding yet */
        c.n_embeddings     = 0;
        c.n_hypernets      = 0; /* nor hypernetworks: they hook UNet attentions */
        c.size_multiple    = 16;
        c.width_default    = 1024;
        c.height_default   = 1024;
        c.steps_default    = dev ? 28 : 4;
        c.cfg_default      = 1.0;
        c.flow             = true;
        c.guidance         = dev;
        c.guidance_default = 3.5;
        c.seq_default      = dev ? 512 : 256;
    }
    cJSON *schema = imgd_schema_for_generate(&c);
    if (schema && !svc_civitai_annotate(s, schema, &c, civ ? cm : NULL)) { /* NAME.civitai.json */
        cJSON_Delete(schema);
        schema = NULL;
    }
    imgd_free(cm);
    names_free(loras, n_loras);
    names_free(cns, n_cn);
    names_free(embs, n_emb);
    names_free(refs, n_ref);
    names_free(hns, n_hn);
    return schema;
}

/* Looks id up in the registry (by id, file name, sha256 or AutoV2), rescanning once on a miss.
 * A miss is classified by svc_model_resolve (400 bad id, 403 outside the dir, 404 absent). */
static bool registry_entry(imgd_server *s, const char *id, imgd_reg_entry *e, int32_t *http_status,
                           char *detail, size_t detail_cap) {
    imgd_status st = imgd_registry_find(s->reg, id, e);
    if (st == IMGD_E_NOT_FOUND) {
        st = imgd_registry_scan(s->reg, NULL);
        if (st == IMGD_OK) st = imgd_registry_find(s->reg, id, e);
    }
    if (st == IMGD_OK) return true;
    if (st != IMGD_E_NOT_FOUND) {
        *http_status = st == IMGD_E_INVALID_ARG ? 400 : 500;
        (void)imgd_fmt(detail, detail_cap, "%s", imgd_last_error());
        return false;
    }
    char path[PATH_MAX];
    if (!svc_model_resolve(s, id, path, sizeof path, http_status, detail, detail_cap)) return false;
    *http_status = 422;
    (void)imgd_fmt(detail, detail_cap,
                   "'%s' is not a model file (.safetensors, .ckpt, .pt, .pth, .bin, .gguf) or a "
                   "diffusers folder",
                   id);
    return false;
}

svc_model *svc_model_find(imgd_server *s, const char *id, int32_t *http_status, char *detail,
                          size_t detail_cap) {
    for (size_t i = 0; i < s->n_models; i++) {
        if (strcmp(s->models[i].id, id) != 0) {
            continue;
        }
        /* a descriptor whose file was replaced by another kind of model is rebuilt */
        imgd_reg_entry *cur   = imgd_malloc(sizeof *cur);
        bool            stale = cur && imgd_registry_find(s->reg, id, cur) == IMGD_OK &&
                     (strcmp(cur->family, s->models[i].family) != 0 ||
                      strcmp(cur->kind, s->models[i].kind) != 0);
        imgd_free(cur);
        if (!stale) {
            return &s->models[i];
        }
        cJSON_Delete(s->models[i].schema);
        s->models[i] = s->models[--s->n_models];
        break;
    }
    *http_status = 400;
    if (!id_syntax_ok(id, detail, detail_cap)) return NULL;
    imgd_reg_entry *e = imgd_malloc(sizeof *e);
    if (!e) {
        *http_status = 500;
        (void)imgd_fmt(detail, detail_cap, "out of memory");
        return NULL;
    }
    svc_model *out = NULL;
    if (!registry_entry(s, id, e, http_status, detail, detail_cap)) goto done;
    for (size_t i = 0; i < s->n_models; i++) {
        if (strcmp(s->models[i].id, e->id) == 0) {
            out = &s->models[i]; /* found by name or hash */
            goto done;
        }
    }
    *http_status = 422;
    if (e->error[0]) {
        (void)imgd_fmt(detail, detail_cap, "model '%s' cannot be read: %s", e->id, e->error);
        goto done;
    }
    if (!family_generates(e->family, e->kind)) {
        (void)imgd_fmt(
            detail, detail_cap,
            "model '%s' is a %s %s; this worker generates with SD 1.x/2.x/SDXL checkpoints "
            "(diffusers folders or single files)",
            e->id, e->family, e->kind);
        goto done;
    }
    svc_model tmp;
    memset(&tmp, 0, sizeof tmp);
    (void)imgd_fmt(tmp.id, sizeof tmp.id, "%s", e->id);
    (void)imgd_fmt(tmp.path, sizeof tmp.path, "%s", e->path);
    (void)imgd_fmt(tmp.family, sizeof tmp.family, "%s", e->family);
    (void)imgd_fmt(tmp.kind, sizeof tmp.kind, "%s", e->kind);
    tmp.schema = caps_schema(s, tmp.id, tmp.path, tmp.family);
    if (!tmp.schema) {
        *http_status = 500;
        (void)imgd_fmt(detail, detail_cap, "out of memory building the schema of '%s'", id);
        goto done;
    }
    if (s->n_models == SVC_MODELS_MAX) {
        /* descriptors are only a schema cache: drop the least recently used */
        size_t victim = 0;
        for (size_t i = 1; i < s->n_models; i++) {
            if (s->models[i].last_used_ms < s->models[victim].last_used_ms) victim = i;
        }
        cJSON_Delete(s->models[victim].schema);
        s->models[victim] = s->models[--s->n_models];
    }
    s->models[s->n_models] = tmp;
    out                    = &s->models[s->n_models++];
done:
    imgd_free(e);
    return out;
}

/* ---- the memory cache's load and free ---------------------------------------------------- */

imgd_load_params svc_model_load_params(imgd_server *s, const char *id) {
    imgd_load_params lp  = s->p.load;
    const cJSON     *all = s->config ? cJSON_GetObjectItemCaseSensitive(s->config, "models") : NULL;
    const cJSON     *mc  = all ? cJSON_GetObjectItemCaseSensitive(all, id) : NULL;
    if (s->unit.active && strcmp(s->unit.adapter_kind, "embedding") == 0 &&
        strcmp(id, s->unit.id) == 0) {
        lp.embeddings   = s->unit.embeddings; /* --model-id named an embedding */
        lp.n_embeddings = 1;
    }
    if (!cJSON_IsObject(mc)) return lp;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "groups")) && cJSON_IsNumber(v)) {
        lp.arch.groups = (int32_t)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "te_heads")) && cJSON_IsNumber(v)) {
        lp.arch.te_heads = (int32_t)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "unet_heads")) && cJSON_IsNumber(v)) {
        lp.arch.unet_heads = (int32_t)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "unet_head_dim")) && cJSON_IsNumber(v)) {
        lp.arch.unet_head_dim = (int32_t)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "tokenizer")) && cJSON_IsString(v)) {
        lp.tokenizer_dir = v->valuestring;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "vae")) && cJSON_IsString(v)) {
        lp.vae = v->valuestring;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "clip_l")) && cJSON_IsString(v)) {
        lp.clip_l = v->valuestring; /* FLUX: the separate encoders */
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "t5")) && cJSON_IsString(v)) {
        lp.t5 = v->valuestring;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(mc, "t5_tokenizer")) && cJSON_IsString(v)) {
        lp.t5_tokenizer = v->valuestring;
    }
    const cJSON *ax = cJSON_GetObjectItemCaseSensitive(mc, "rope_axes");
    for (int i = 0; cJSON_IsArray(ax) && i < 4 && i < cJSON_GetArraySize(ax); i++) {
        const cJSON *e = cJSON_GetArrayItem(ax, i);
        if (cJSON_IsNumber(e)) lp.arch.rope_axes[i] = (int32_t)e->valuedouble;
    }
    return lp;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The file to load for e: the disk cache's safetensors for a format that cannot be mapped. */
static imgd_status load_path(imgd_server *s, const imgd_reg_entry *e, char *path, size_t cap) {
    if (e->is_dir || !imgd_dcache_wants(e->format) || s->p.disk_cache_max == UINT64_MAX) {
        return imgd_fmt(path, cap, "%s", e->path) ? IMGD_OK
                                                  : imgd_fail(IMGD_E_TOO_LARGE, "path too long");
    }
    char        sha[65];
    imgd_status st = imgd_registry_hash(s->reg, e->id, NULL, NULL, sha);
    if (st != IMGD_OK) return st;
    char *dir = imgd_path_join(s->state_dir, "cache");
    if (!dir) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    bool     hit       = false;
    uint64_t cap_bytes = s->p.disk_cache_max ? s->p.disk_cache_max : DISK_CACHE_DEFAULT;
    st                 = imgd_dcache_get(dir, cap_bytes, e->path, sha, path, cap, &hit);
    imgd_free(dir);
    if (st == IMGD_OK) {
        IMGD_LOG(IMGD_LOG_INFO, "service", "disk_cache", "%s: %s %s", e->id,
                 hit ? "hit" : "converted to", path);
    }
    return st;
}

/* imgd_mcache_load_fn: refresh the registry entry, pick the file, load under engine_mu. The
 * resident bytes are an estimate: the tensor bytes of the weights it maps (from the registry)
 * plus the heap the load allocated (dtype copies, tokenizer, graphs planned at load). Activation
 * buffers are planned per shape at the first generation and are not counted. */
static imgd_status cache_load(void *user, const char *key, void **obj, uint64_t *bytes) {
    imgd_server    *s      = user;
    imgd_reg_entry *e      = imgd_malloc(sizeof *e);
    char           *path   = imgd_malloc(PATH_MAX);
    imgd_status     st     = e && path ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "out of memory");
    double          t_prep = mono_s();
    if (st == IMGD_OK) st = imgd_registry_refresh(s->reg, key, e);
    if (st == IMGD_OK) st = load_path(s, e, path, PATH_MAX);
    t_prep            = mono_s() - t_prep; /* registry refresh, hash and disk-cache conversion */
    imgd_model *m     = NULL;
    double      secs  = 0;
    uint64_t    heap  = 0;
    size_t      n_emb = 0;
    char      **embs  = NULL;
    if (st == IMGD_OK) {
        imgd_load_params lp = svc_model_load_params(s, key);
        /* the textual-inversion embeddings under the model dirs for this family (the schema's
         * x-imgd-embeddings), each triggered by its file name; plus --model-id's */
        embs = adapters_for(s, e->family, k_embedding_kinds, ADAPTER_PATH, &n_emb);
        if (lp.n_embeddings == 1 && embs) {
            size_t k = 0;
            for (size_t i = 0; i < n_emb; i++) {
                if (strcmp(embs[i], lp.embeddings[0]) != 0) {
                    embs[k++] = embs[i];
                } else {
                    imgd_free(embs[i]);
                }
            }
            n_emb       = k;
            char **grow = imgd_realloc(embs, (n_emb + 1) * sizeof *grow);
            if (grow) {
                embs          = grow;
                embs[n_emb++] = imgd_strdup(lp.embeddings[0]);
                if (!embs[n_emb - 1]) n_emb--;
            }
        }
        if (n_emb) {
            lp.embeddings          = (const char *const *)embs;
            lp.n_embeddings        = n_emb;
            lp.embeddings_skip_bad = true;
        }
        lp.components = s->components;
        pthread_mutex_lock(&s->engine_mu);
        uint64_t before = imgd_alloc_bytes_in_use();
        double   t0     = mono_s();
        st              = imgd_model_load(path, &lp, &m);
        secs            = mono_s() - t0;
        uint64_t after  = imgd_alloc_bytes_in_use();
        pthread_mutex_unlock(&s->engine_mu);
        heap = after > before ? after - before : 0;
    }
    if (st == IMGD_OK) {
        /* the model's own bytes: a VAE held in the component store is counted there, once
           for every model using it (params.shared); one taken from the checkpoint itself
           leaves the model's tensor bytes, one from a --vae file was never in them */
        uint64_t shared  = imgd_model_shared_bytes(m);
        bool     own_vae = !svc_model_load_params(s, key).vae;
        uint64_t tb      = e->tensor_bytes;
        if (own_vae) tb = tb > shared ? tb - shared : 0;
        *obj   = m;
        *bytes = tb + heap;
        imgd_svc_metrics_load(&s->metrics, key, t_prep + secs);
        IMGD_LOG(IMGD_LOG_INFO, "service", "model_loaded",
                 "%s in %.3f s (prepare %.3f s, load %.3f s; about %.1f MiB)", key, t_prep + secs,
                 t_prep, secs, (double)*bytes / 1048576.0);
    } else {
        IMGD_LOG(IMGD_LOG_ERROR, "service", "model_load_failed", "%s: %s", key, imgd_last_error());
    }
    names_free(embs, n_emb);
    imgd_free(e);
    imgd_free(path);
    return st;
}

static void cache_free(void *user, const char *key, void *obj) {
    (void)user;
    (void)key;
    imgd_model_free(obj);
}

/* The component store's digest cache: the registry's SQLite. */
static bool digest_get(void *user, const char *path, uint64_t size, int64_t mtime_ns,
                       const char *component, char digest[65]) {
    return imgd_registry_digest_get(user, path, size, mtime_ns, component, digest);
}

static void digest_put(void *user, const char *path, uint64_t size, int64_t mtime_ns,
                       const char *component, const char *digest) {
    imgd_registry_digest_put(user, path, size, mtime_ns, component, digest);
}

/* imgd_mcache_shared_fn: the bytes of the components held in the store, once each. */
static uint64_t cache_shared(void *user) {
    imgd_server          *s = user;
    imgd_components_stats cs;
    imgd_components_stats_get(s->components, &cs);
    return cs.bytes;
}

imgd_status svc_models_open(imgd_server *s) {
    char *db = imgd_path_join(s->state_dir, "registry.sqlite3");
    if (!db) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = imgd_registry_open(db, (const char *const *)s->dirs, s->n_dirs, &s->reg);
    imgd_free(db);
    if (st == IMGD_OK && s->only[0]) st = imgd_registry_only(s->reg, s->only);
    imgd_reg_scan_stats rs;
    if (st == IMGD_OK) st = imgd_registry_scan(s->reg, &rs);
    if (st != IMGD_OK) return st;
    IMGD_LOG(IMGD_LOG_INFO, "service", "registry",
             "%llu models (%llu detected, %llu cached) in %.3f s", (unsigned long long)rs.seen,
             (unsigned long long)rs.detected, (unsigned long long)rs.reused, rs.seconds);
    st = imgd_components_new(&s->components);
    if (st != IMGD_OK) return st;
    imgd_components_set_digest_cache(s->components, digest_get, digest_put, s->reg);
    imgd_mcache_params cp = {s->p.memory_budget, cache_load, cache_free, s, cache_shared};
    return imgd_mcache_new(&cp, &s->cache);
}

/* ---- load / unload ------------------------------------------------------------------------ */

/* The registry's canonical id and estimate for id (which may be a name or a hash). */
static imgd_status model_canon(imgd_server *s, const char *id, char canon[SVC_ID_MAX],
                               uint64_t *estimate) {
    int32_t hs;
    char    detail[768];
    pthread_mutex_lock(&s->mu);
    svc_model *sm = svc_model_find(s, id, &hs, detail, sizeof detail);
    if (sm) {
        (void)imgd_fmt(canon, SVC_ID_MAX, "%s", sm->id);
        sm->last_used_ms = svc_now_ms();
    }
    pthread_mutex_unlock(&s->mu);
    if (!sm) return imgd_fail(hs == 404 ? IMGD_E_NOT_FOUND : IMGD_E_INVALID_ARG, "%s", detail);
    imgd_reg_entry *e = imgd_malloc(sizeof *e);
    if (!e) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    *estimate = imgd_registry_find(s->reg, canon, e) == IMGD_OK ? e->tensor_bytes : 0;
    imgd_free(e);
    return IMGD_OK;
}

imgd_status svc_model_acquire(imgd_server *s, const char *id, imgd_model **out,
                              char canon[SVC_ID_MAX]) {
    uint64_t    est = 0;
    imgd_status st  = model_canon(s, id, canon, &est);
    void       *obj = NULL;
    if (st == IMGD_OK) {
        st = imgd_mcache_acquire(s->cache, canon, est, &obj);
    }
    if (st == IMGD_OK) {
        *out = obj;
    }
    return st;
}

void svc_model_release(imgd_server *s, const char *canon) {
    imgd_mcache_release(s->cache, canon);
}

imgd_status svc_model_load(imgd_server *s, const char *id) {
    char        canon[SVC_ID_MAX];
    uint64_t    est = 0;
    imgd_status st  = model_canon(s, id, canon, &est);
    void       *obj = NULL;
    if (st == IMGD_OK) st = imgd_mcache_acquire(s->cache, canon, est, &obj);
    if (st == IMGD_OK) imgd_mcache_release(s->cache, canon);
    return st;
}

imgd_status svc_model_unload(imgd_server *s, const char *id) {
    char     canon[SVC_ID_MAX];
    uint64_t est = 0;
    if (model_canon(s, id, canon, &est) != IMGD_OK) {
        (void)imgd_fmt(canon, sizeof canon, "%s", id);
    }
    if (imgd_mcache_unload(s->cache, canon)) {
        IMGD_LOG(IMGD_LOG_INFO, "service", "model_unloaded", "%s", canon);
    }
    return IMGD_OK;
}

bool svc_model_is_loaded(imgd_server *s, const char *id) {
    return s->cache && imgd_mcache_loaded(s->cache, id);
}

typedef struct loaded_ctx {
    cJSON *arr;
    size_t n;
    char   first[SVC_ID_MAX];
} loaded_ctx;

static void loaded_each(void *user, const char *key, void *obj, uint64_t bytes, int32_t refs,
                        double load_s) {
    loaded_ctx *c = user;
    (void)obj;
    (void)bytes;
    (void)refs;
    (void)load_s;
    if (c->n++ == 0) (void)imgd_fmt(c->first, sizeof c->first, "%s", key);
    if (c->arr) cJSON_AddItemToArray(c->arr, cJSON_CreateString(key));
}

const char *svc_model_single_loaded(imgd_server *s) {
    loaded_ctx c;
    memset(&c, 0, sizeof c);
    if (s->cache) imgd_mcache_each(s->cache, loaded_each, &c);
    if (c.n != 1) return NULL;
    (void)imgd_fmt(s->single, sizeof s->single, "%s", c.first);
    return s->single;
}

cJSON *svc_models_loaded(imgd_server *s) {
    loaded_ctx c;
    memset(&c, 0, sizeof c);
    c.arr = cJSON_CreateArray();
    if (c.arr && s->cache) imgd_mcache_each(s->cache, loaded_each, &c);
    return c.arr;
}

void svc_models_free(imgd_server *s) {
    imgd_mcache_free(s->cache);
    s->cache = NULL;
    imgd_components_free(s->components); /* after the models that use it */
    s->components = NULL;
    imgd_registry_free(s->reg);
    s->reg = NULL;
    for (size_t i = 0; i < s->n_models; i++) cJSON_Delete(s->models[i].schema);
    s->n_models = 0;
}

/* ---- listing ------------------------------------------------------------------------------ */

typedef struct one_ctx {
    const char *id;
    double      load_s;
    uint64_t    bytes, shared;
    int32_t     refs;
    bool        found;
} one_ctx;

static void one_each(void *user, const char *key, void *obj, uint64_t bytes, int32_t refs,
                     double load_s) {
    one_ctx *c = user;
    if (strcmp(c->id, key) != 0) return;
    c->found  = true;
    c->load_s = load_s;
    c->bytes  = bytes;
    c->shared = imgd_model_shared_bytes(obj);
    c->refs   = refs;
}

static cJSON *entry_json(imgd_server *s, const imgd_reg_entry *e) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    (void)cJSON_AddStringToObject(o, "id", e->id);
    if (e->error[0]) {
        (void)cJSON_AddStringToObject(o, "error", e->error);
        (void)cJSON_AddBoolToObject(o, "servable", false);
    } else {
        (void)cJSON_AddStringToObject(o, "family", e->family);
        (void)cJSON_AddStringToObject(o, "kind", e->kind);
        (void)cJSON_AddStringToObject(o, "format", imgd_format_name((imgd_format)e->format));
        (void)cJSON_AddBoolToObject(o, "servable", family_generates(e->family, e->kind));
    }
    (void)cJSON_AddNumberToObject(o, "size", (double)e->size);
    (void)cJSON_AddNumberToObject(o, "tensor_bytes", (double)e->tensor_bytes);
    if (e->sha256[0]) {
        (void)cJSON_AddStringToObject(o, "sha256", e->sha256);
        (void)cJSON_AddStringToObject(o, "autov2", e->autov2);
    }
    if (e->pinned[0]) {
        (void)cJSON_AddStringToObject(o, "pinned", e->pinned);
    }
    svc_civitai_entry_json(e, o);
    one_ctx c = {e->id, 0, 0, 0, 0, false};
    if (s->cache) imgd_mcache_each(s->cache, one_each, &c);
    (void)cJSON_AddBoolToObject(o, "loaded", c.found);
    if (c.found) {
        (void)cJSON_AddNumberToObject(o, "resident_bytes", (double)(c.bytes + c.shared));
        (void)cJSON_AddNumberToObject(o, "shared_bytes", (double)c.shared);
    }
    return o;
}

cJSON *svc_models_list(imgd_server *s) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    if (imgd_registry_scan(s->reg, NULL) != IMGD_OK) {
        IMGD_LOG(IMGD_LOG_WARN, "service", "registry_scan_failed", "%s", imgd_last_error());
    }
    imgd_reg_entry *e = imgd_malloc(sizeof *e);
    for (size_t i = 0; e && imgd_registry_at(s->reg, i, e) == IMGD_OK; i++) {
        cJSON *o = entry_json(s, e);
        if (o) cJSON_AddItemToArray(arr, o);
    }
    imgd_free(e);
    return arr;
}

cJSON *svc_model_json(imgd_server *s, const svc_model *sm) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    (void)cJSON_AddStringToObject(o, "id", sm->id);
    (void)cJSON_AddStringToObject(o, "family", sm->family);
    (void)cJSON_AddStringToObject(o, "kind", sm->kind);
    one_ctx c = {sm->id, 0, 0, 0, 0, false};
    imgd_mcache_each(s->cache, one_each, &c);
    (void)cJSON_AddBoolToObject(o, "loaded", c.found);
    if (c.found) {
        (void)cJSON_AddNumberToObject(o, "load_s", c.load_s);
        /* everything the model uses; shared_bytes of it are held once for several models */
        (void)cJSON_AddNumberToObject(o, "resident_bytes", (double)(c.bytes + c.shared));
        (void)cJSON_AddNumberToObject(o, "shared_bytes", (double)c.shared);
        (void)cJSON_AddNumberToObject(o, "in_use", c.refs);
    }
    imgd_reg_entry *e = imgd_malloc(sizeof *e);
    if (e && imgd_registry_find(s->reg, sm->id, e) == IMGD_OK) {
        (void)cJSON_AddNumberToObject(o, "size", (double)e->size);
        (void)cJSON_AddNumberToObject(o, "tensor_bytes", (double)e->tensor_bytes);
        if (e->sha256[0]) {
            (void)cJSON_AddStringToObject(o, "sha256", e->sha256);
        }
        if (e->pinned[0]) {
            (void)cJSON_AddStringToObject(o, "pinned", e->pinned);
        }
    }
    imgd_free(e);
    cJSON *caps = cJSON_AddObjectToObject(o, "capabilities");
    if (caps) { /* what the request schema was built from (FLUX: no inpainting) */
        const cJSON *xc = cJSON_GetObjectItemCaseSensitive(sm->schema, "x-imgd-capabilities");
        (void)cJSON_AddBoolToObject(caps, "txt2img", true);
        (void)cJSON_AddBoolToObject(
            caps, "img2img", !xc || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(xc, "img2img")));
        (void)cJSON_AddBoolToObject(
            caps, "inpaint", !xc || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(xc, "inpaint")));
    }
    (void)cJSON_AddStringToObject(o, "schema", "schema");
    /* CivitAI metadata the schema took its defaults from (service_civitai.c) */
    const cJSON *civ = cJSON_GetObjectItemCaseSensitive(sm->schema, "x-imgd-civitai");
    const cJSON *lm  = cJSON_GetObjectItemCaseSensitive(sm->schema, "x-imgd-loras");
    if (civ) cJSON_AddItemToObject(o, "civitai", cJSON_Duplicate(civ, true));
    if (lm) cJSON_AddItemToObject(o, "lora_metadata", cJSON_Duplicate(lm, true));
    svc_unit_json(s, sm->id, o);
    return o;
}
