/* diffusers folders: a pipeline folder (model_index.json + component subfolders) or a
 * single component folder (config.json + weights). Tensors of a pipeline are named
 * "<component>/<tensor>"; config files are kept as metadata ("<component>/config.json").
 * Weights: *.safetensors preferred over *.bin, sharded *.index.json followed, and
 * variant files (*.fp16.safetensors) chosen by the variant parameter. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "base/text.h"
#include "formats/weights.h"

#define CONFIG_MAX (16u << 20)

/* Weight file stems written by save_pretrained (diffusers, transformers, LoRA, TI). */
static const char *const k_stems[] = {"diffusion_pytorch_model", "model", "pytorch_model",
                                      "pytorch_lora_weights", "learned_embeds"};
static const char *const k_exts[]  = {"safetensors", "bin"};

/* Config files kept as metadata when present in a folder. */
static const char *const k_configs[] = {"config.json", "scheduler_config.json"};

/* ---- file discovery --------------------------------------------------------------- */

typedef struct found {
    char name[512];
    bool is_index;
} found;

/* Tries the file names for one (stem, ext, variant); variant may be NULL. */
static bool try_names(const char *dir, const char *stem, const char *ext, const char *v, found *f) {
    char cand[3][512];
    int  n = 0;
    if (v) {
        imgd_fmt(cand[n++], sizeof cand[0], "%s.%s.%s", stem, v, ext);
        imgd_fmt(cand[n++], sizeof cand[0], "%s.%s.index.%s.json", stem, ext, v);
        imgd_fmt(cand[n++], sizeof cand[0], "%s.%s.%s.index.json", stem, v, ext);
    } else {
        imgd_fmt(cand[n++], sizeof cand[0], "%s.%s", stem, ext);
        imgd_fmt(cand[n++], sizeof cand[0], "%s.%s.index.json", stem, ext);
    }
    for (int i = 0; i < n; i++) {
        if (imgd_path_is_file_in(dir, cand[i])) {
            memcpy(f->name, cand[i], sizeof f->name);
            f->is_index = strstr(cand[i], ".index") != NULL;
            return true;
        }
    }
    return false;
}

/* Finds the variant spelled in a file name "<stem>.<variant>.<ext>", preferring fp16. */
static bool scan_variant(const char *dir, char *variant, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool           found_any = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        for (size_t s = 0; s < IMGD_ARRAY_LEN(k_stems); s++) {
            size_t sl = strlen(k_stems[s]);
            if (strncmp(e->d_name, k_stems[s], sl) != 0 || e->d_name[sl] != '.') continue;
            const char *v   = e->d_name + sl + 1;
            const char *dot = strchr(v, '.');
            if (!dot || dot == v || (size_t)(dot - v) >= cap) continue;
            if (strcmp(dot + 1, "safetensors") != 0 && strcmp(dot + 1, "bin") != 0) continue;
            if (strchr(v, '-')) continue; /* a shard, not a variant */
            if (!found_any || strncmp(v, "fp16", 4) == 0) {
                memcpy(variant, v, (size_t)(dot - v));
                variant[dot - v] = '\0';
                found_any        = true;
            }
        }
    }
    closedir(d);
    return found_any;
}

static bool find_weights(const char *dir, const char *variant, found *f) {
    for (size_t x = 0; x < IMGD_ARRAY_LEN(k_exts); x++)
        for (size_t s = 0; s < IMGD_ARRAY_LEN(k_stems); s++)
            if (try_names(dir, k_stems[s], k_exts[x], variant, f)) return true;
    return false;
}

/* ---- reading ---------------------------------------------------------------------- */

static bool plain_file_name(const char *s) {
    return s[0] && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, "..") != 0 &&
           strcmp(s, ".") != 0;
}

static imgd_status read_one(const char *dir, const char *file, const imgd_open_limits *lim,
                            imgd_weights **out) {
    char *p = imgd_path_join(dir, file);
    if (!p) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = imgd_weights_read_file(p, lim, NULL, out);
    imgd_free(p);
    return st;
}

/* Reads a sharded index: every shard once, every weight_map entry present. */
static imgd_status read_sharded(const char *dir, const char *index, const imgd_open_limits *lim,
                                imgd_weights *w) {
    char        *path = imgd_path_join(dir, index), *text = NULL;
    cJSON       *root     = NULL;
    const char **shards   = NULL;
    size_t       n_shards = 0, n_map = 0;
    imgd_status  st;
    if (!path) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    st = imgd_file_read_all(path, CONFIG_MAX, &text, NULL);
    if (st == IMGD_OK) st = imgd_json_parse(path, text, strlen(text), CONFIG_MAX, 32, &root);
    if (st != IMGD_OK) goto done;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        st = imgd_fail(IMGD_E_FORMAT, "%s: no object 'weight_map'; not a sharded index", path);
        goto done;
    }
    for (const cJSON *e = map->child; e; e = e->next) n_map++;
    shards = imgd_calloc(n_map ? n_map : 1, sizeof *shards);
    if (!shards) {
        st = imgd_fail(IMGD_E_NOMEM, "out of memory");
        goto done;
    }
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !plain_file_name(e->valuestring)) {
            st = imgd_fail(IMGD_E_FORMAT,
                           "%s: weight_map entry '%s' must name a shard file in the same folder",
                           path, e->string);
            goto done;
        }
        size_t k;
        for (k = 0; k < n_shards; k++)
            if (strcmp(shards[k], e->valuestring) == 0) break;
        if (k == n_shards) shards[n_shards++] = e->valuestring;
    }
    size_t first = w->n;
    for (size_t k = 0; k < n_shards && st == IMGD_OK; k++) {
        imgd_weights *sw = NULL;
        st               = read_one(dir, shards[k], lim, &sw);
        if (st == IMGD_OK) st = imgd_weights_absorb(w, sw, "");
    }
    if (st != IMGD_OK) goto done;
    for (const cJSON *e = map->child; e; e = e->next) {
        if (imgd_strmap_get(&w->index, e->string, NULL)) continue;
        st =
            imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' is listed for shard '%s' but not found in it",
                      path, e->string, e->valuestring);
        goto done;
    }
    if (w->n - first != n_map)
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: the shards hold %zu tensors but weight_map lists %zu; the index and "
                       "shards do not match",
                       path, w->n - first, n_map);
done:
    imgd_free(shards);
    cJSON_Delete(root);
    imgd_free(text);
    imgd_free(path);
    return st;
}

static imgd_status keep_configs(const char *dir, const char *prefix, imgd_weights *w) {
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_configs); i++) {
        if (!imgd_path_is_file_in(dir, k_configs[i])) continue;
        char       *p = imgd_path_join(dir, k_configs[i]), *text = NULL;
        cJSON      *j  = NULL;
        imgd_status st = p ? imgd_file_read_all(p, CONFIG_MAX, &text, NULL)
                           : imgd_fail(IMGD_E_NOMEM, "out of memory");
        if (st == IMGD_OK) st = imgd_json_parse(p, text, strlen(text), CONFIG_MAX, 64, &j);
        if (st == IMGD_OK) {
            char key[600];
            imgd_fmt(key, sizeof key, "%s%s", prefix, k_configs[i]);
            st = imgd_weights_meta_set(w, key, text);
        }
        cJSON_Delete(j);
        imgd_free(text);
        imgd_free(p);
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

/* Reads one component folder's weights into w with the given name prefix. Sets *none
 * when the folder holds no weight file at all. */
static imgd_status read_component(const char *dir, const char *prefix, const imgd_open_limits *lim,
                                  imgd_weights *w, bool *none) {
    found       f;
    char        variant[64];
    const char *v = lim->variant;
    *none         = false;
    if (!find_weights(dir, v, &f)) {
        if (v) {
            if (find_weights(dir, NULL, &f))
                return imgd_fail(IMGD_E_INVALID_ARG,
                                 "%s: no weights for variant '%s' (plain weights exist: %s); drop "
                                 "the variant or download it",
                                 dir, v, f.name);
            *none = true;
            return IMGD_OK;
        }
        if (!scan_variant(dir, variant, sizeof variant) || !find_weights(dir, variant, &f)) {
            *none = true;
            return IMGD_OK;
        }
        IMGD_LOG(IMGD_LOG_INFO, "formats.diffusers", "variant_fallback",
                 "%s: only variant '%s' weights present; using them", dir, variant);
    }
    imgd_weights *cw = NULL;
    imgd_status   st;
    if (f.is_index) {
        st = imgd_weights_new(IMGD_FORMAT_DIFFUSERS, dir, &cw);
        if (st == IMGD_OK) st = read_sharded(dir, f.name, lim, cw);
    } else {
        st = read_one(dir, f.name, lim, &cw);
    }
    if (st == IMGD_OK) {
        char key[600];
        imgd_fmt(key, sizeof key, "%simgd.weights_file", prefix);
        st = imgd_weights_meta_set(w, key, f.name);
    }
    if (st != IMGD_OK) {
        imgd_weights_free(cw);
        return st;
    }
    return imgd_weights_absorb(w, cw, prefix);
}

/* A pipeline: every component named in model_index.json whose folder exists. */
static imgd_status read_pipeline(const char *dir, const imgd_open_limits *lim, imgd_weights *w) {
    char       *path = imgd_path_join(dir, "model_index.json"), *text = NULL;
    cJSON      *root = NULL;
    imgd_status st   = path ? imgd_file_read_all(path, CONFIG_MAX, &text, NULL)
                            : imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (st == IMGD_OK) st = imgd_json_parse(path, text, strlen(text), CONFIG_MAX, 32, &root);
    if (st == IMGD_OK && !cJSON_IsObject(root))
        st = imgd_fail(IMGD_E_FORMAT, "%s: not a JSON object", path);
    if (st == IMGD_OK) st = imgd_weights_meta_set(w, "model_index.json", text);
    size_t with_weights = 0;
    for (const cJSON *e = root ? root->child : NULL; e && st == IMGD_OK; e = e->next) {
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || cJSON_IsNull(e->child)) continue;
        if (!plain_file_name(e->string) || e->string[0] == '_') continue;
        char *sub = imgd_path_join(dir, e->string);
        if (!sub) {
            st = imgd_fail(IMGD_E_NOMEM, "out of memory");
            break;
        }
        if (imgd_path_is_dir(sub)) {
            char prefix[512];
            bool none = false;
            imgd_fmt(prefix, sizeof prefix, "%s/", e->string);
            st = keep_configs(sub, prefix, w);
            if (st == IMGD_OK) st = read_component(sub, prefix, lim, w, &none);
            if (st == IMGD_OK && !none) with_weights++;
            if (st == IMGD_OK && none && imgd_path_is_file_in(sub, "config.json"))
                st = imgd_fail(IMGD_E_FORMAT,
                               "%s: component has config.json but no weights (expected e.g. "
                               "diffusion_pytorch_model.safetensors or model.safetensors); the "
                               "download is incomplete",
                               sub);
        } else {
            IMGD_LOG(IMGD_LOG_INFO, "formats.diffusers", "component_missing",
                     "%s: component '%s' listed in model_index.json has no folder", dir, e->string);
        }
        imgd_free(sub);
    }
    if (st == IMGD_OK && with_weights == 0)
        st = imgd_fail(IMGD_E_FORMAT, "%s: model_index.json lists no component folder with weights",
                       dir);
    cJSON_Delete(root);
    imgd_free(text);
    imgd_free(path);
    return st;
}

imgd_status imgd_diffusers_read(const char *dir, const imgd_open_limits *lim, imgd_weights *w) {
    if (imgd_path_is_file_in(dir, "model_index.json")) return read_pipeline(dir, lim, w);
    bool        none = false;
    imgd_status st   = keep_configs(dir, "", w);
    if (st == IMGD_OK) st = read_component(dir, "", lim, w, &none);
    if (st == IMGD_OK && none)
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: not a model folder: no model_index.json and no weight file "
                       "(diffusion_pytorch_model / model / pytorch_model .safetensors or .bin)",
                       dir);
    return st;
}
