/* MODEL_ID resolution: local paths, hub ids, URLs and AIRs to the unit the worker serves, and
 * the search for an adapter's base (model_id.h says the order). */
/* realpath() is XSI. */
#define _XOPEN_SOURCE 700 // NOLINT(bugprone-reserved-identifier): the feature-test macro

#include "service/model_id.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "base/sha256.h"
#include "base/text.h"
#include "imgd.h"
#include "service/registry.h"

#define TRIED_MAX    ((size_t)64 << 10)
#define SIDECAR_MAX  ((size_t)4 << 20)
#define CANDS_MAX    4096
#define SOURCES_FILE ".imgd-sources.json" /* in the download dir: hub source -> path */

/* ---- small helpers ------------------------------------------------------------------------ */

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void tried(imgd_mid_result *r, const char *fmt, ...) IMGD_PRINTF(2, 3);
static void tried(imgd_mid_result *r, const char *fmt, ...) {
    char    line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    (void)imgd_buf_puts(&r->tried, line);
    (void)imgd_buf_puts(&r->tried, "\n");
}

static bool path_is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool ends_with_ci(const char *s, const char *sfx) {
    size_t n = strlen(s), k = strlen(sfx);
    return n >= k && strcasecmp(s + n - k, sfx) == 0;
}

static bool weight_name(const char *name) {
    static const char *const k_ext[] = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf"};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_ext); i++) {
        if (ends_with_ci(name, k_ext[i])) return true;
    }
    return false;
}

/* The file name of path without folders and extension ("a/b/x.safetensors" -> "x"). */
static void stem_of(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    b             = b ? b + 1 : path;
    const char *d = strrchr(b, '.');
    (void)imgd_fmt(out, cap, "%.*s", (int)(d && d != b ? d - b : (ptrdiff_t)strlen(b)), b);
}

/* ---- families from metadata, CivitAI and AIR names (tables, STYLE M5) ---------------------- */

typedef struct fam_row {
    const char *prefix; /* matched case-insensitively at the start */
    const char *family; /* imgd_family_name */
} fam_row;

static const fam_row k_ss_versions[] = {
    {"sd_v1", "sd1"}, {"sd_v2", "sd2"}, {"sdxl", "sdxl"}, {"sd3", "sd3"}, {"flux1", "flux_dev"}};
static const fam_row k_modelspec[] = {
    {"stable-diffusion-v1", "sd1"},
    {"stable-diffusion-v2", "sd2"},
    {"stable-diffusion-xl-v1-refiner", "sdxl_refiner"},
    {"stable-diffusion-xl", "sdxl"},
    {"stable-diffusion-v3", "sd3"},
    {"flux-1-dev", "flux_dev"},
    {"flux-1-schnell", "flux_schnell"},
};
static const fam_row k_civitai_base[] = {
    {"SD 1", "sd1"},
    {"SD 2", "sd2"},
    {"SDXL", "sdxl"},
    {"Pony", "sdxl"},
    {"Illustrious", "sdxl"},
    {"NoobAI", "sdxl"},
    {"SD 3", "sd3"},
    {"Flux.1 D", "flux_dev"},
    {"Flux.1 S", "flux_schnell"},
    {"Flux.1 Kontext", "flux_dev"},
};
static const fam_row k_air_eco[] = {{"sd1", "sd1"},      {"sd2", "sd2"}, {"sdxl", "sdxl"},
                                    {"pony", "sdxl"},    {"sd3", "sd3"}, {"flux1", "flux_dev"},
                                    {"flux", "flux_dev"}};

static const char *fam_lookup(const fam_row *rows, size_t n, const char *s) {
    for (size_t i = 0; s && i < n; i++) {
        if (strncasecmp(s, rows[i].prefix, strlen(rows[i].prefix)) == 0) return rows[i].family;
    }
    return NULL;
}

static bool fam_known(const char *f) {
    return f && f[0] && strcmp(f, "unknown") != 0 && strcmp(f, "null") != 0;
}

/* The environment variable holding the configured default base of a family. */
static const char *base_env(const char *family, char *name, size_t cap) {
    if (strncmp(family, "flux", 4) == 0) {
        (void)imgd_fmt(name, cap, "IMGD_BASE_FLUX");
    } else {
        (void)imgd_fmt(name, cap, "IMGD_BASE_%s", family);
        for (char *c = name; *c; c++) *c = (char)toupper((unsigned char)*c);
    }
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* ---- sources: local, hubs, URLs, AIR --------------------------------------------------------- */

/* A folder names a diffusers pipeline, or the one weight file it holds. */
static imgd_status pick_in_folder(const char *dir, char *out, size_t cap) {
    char *mi = imgd_path_join(dir, "model_index.json");
    if (!mi) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    struct stat st;
    bool        pipeline = stat(mi, &st) == 0;
    imgd_free(mi);
    if (pipeline) {
        return imgd_fmt(out, cap, "%s", dir) ? IMGD_OK : imgd_fail(IMGD_E_TOO_LARGE, "long path");
    }
    DIR *d = opendir(dir);
    if (!d) return imgd_fail(IMGD_E_IO, "MODEL_ID folder %s: %s", dir, strerror(errno));
    char           first[256] = "", names[512] = "", st_name[256] = "";
    size_t         n = 0, n_st = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !weight_name(e->d_name)) continue;
        if (n++ == 0) (void)imgd_fmt(first, sizeof first, "%s", e->d_name);
        if (ends_with_ci(e->d_name, ".safetensors") && n_st++ == 0) {
            (void)imgd_fmt(st_name, sizeof st_name, "%s", e->d_name);
        }
        size_t l = strlen(names);
        (void)imgd_fmt(names + l, sizeof names - l, "%s%s", l ? ", " : "", e->d_name);
    }
    (void)closedir(d);
    if (n == 0) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "MODEL_ID folder %s holds no model: no model_index.json (a diffusers "
                         "pipeline) and no weight file (.safetensors, .ckpt, ...)",
                         dir);
    }
    if (n > 1 && n_st == 1) {
        (void)imgd_fmt(first, sizeof first, "%s", st_name); /* the safe format of the same model */
    } else if (n > 1) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "MODEL_ID folder %s holds %zu weight files (%s): name the one to serve",
                         dir, n, names);
    }
    return imgd_fmt(out, cap, "%s/%s", dir, first) ? IMGD_OK
                                                   : imgd_fail(IMGD_E_TOO_LARGE, "long path");
}

static cJSON *read_json(const char *path);

/* The download dir remembers which path each hub source brought (SOURCES_FILE), so a restart
 * that cannot reach the hub (offline, an outage) serves the copy it pulled before. */
static void sources_put(const char *dl, const char *src, const char *path) {
    char file[PATH_MAX], tmp[PATH_MAX + 8];
    if (!imgd_fmt(file, sizeof file, "%s/%s", dl, SOURCES_FILE) ||
        !imgd_fmt(tmp, sizeof tmp, "%s.tmp", file)) {
        return;
    }
    cJSON *o = read_json(file);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        o = cJSON_CreateObject();
    }
    if (!o) return;
    cJSON_DeleteItemFromObjectCaseSensitive(o, src);
    char *txt = cJSON_AddStringToObject(o, src, path) ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    FILE  *f  = txt ? fopen(tmp, "wb") : NULL;
    size_t n  = txt ? strlen(txt) : 0;
    bool   ok = f && fwrite(txt, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = false;
    cJSON_free(txt);
    if (!ok || rename(tmp, file) != 0) {
        (void)unlink(tmp);
        IMGD_LOG(IMGD_LOG_WARN, "service.model_id", "sources_not_saved", "%s: %s", file,
                 strerror(errno));
    }
}

static bool sources_get(const char *dl, const char *src, char *path, size_t cap) {
    char file[PATH_MAX];
    if (!imgd_fmt(file, sizeof file, "%s/%s", dl, SOURCES_FILE)) return false;
    cJSON       *o = read_json(file);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, src);
    struct stat  st;
    bool         ok = cJSON_IsString(v) && stat(v->valuestring, &st) == 0 &&
              imgd_fmt(path, cap, "%s", v->valuestring);
    cJSON_Delete(o);
    return ok;
}

/* Pulls src into the download dir; path receives the model it brought. */
static imgd_status pull(const imgd_mid_params *p, const char *src, imgd_mid_result *r, char *path,
                        size_t cap) {
    if (!p->download_dir) {
        return imgd_fail(IMGD_E_INVALID_ARG, "MODEL_ID %s must be downloaded: no download dir",
                         src);
    }
    imgd_pull_params pp = imgd_pull_params_default();
    pp.source           = src;
    pp.dest_dir         = p->download_dir;
    pp.variant          = p->variant;
    char  *report       = NULL;
    double t0           = mono_s();
    IMGD_LOG(IMGD_LOG_INFO, "service.model_id", "pull", "%s into %s", src, p->download_dir);
    imgd_status st = imgd_pull(&pp, &report);
    r->download_s += mono_s() - t0;
    if (st == IMGD_E_IO && sources_get(p->download_dir, src, path, cap)) {
        IMGD_LOG(IMGD_LOG_WARN, "service.model_id", "hub_unreachable",
                 "%s: %s; serving the copy pulled before: %s", src, imgd_last_error(), path);
        imgd_error_clear();
        return IMGD_OK;
    }
    if (st != IMGD_OK) return imgd_fail_prefix(st, "MODEL_ID %s: download failed", src);
    cJSON *doc = NULL;
    st         = imgd_json_parse("pull report", report, strlen(report), (size_t)1 << 24, 16, &doc);
    imgd_string_free(report);
    if (st != IMGD_OK) return st;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(doc, "files");
    const cJSON *f0    = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(files, 0), "path");
    const cJSON *dir   = cJSON_GetObjectItemCaseSensitive(doc, "dir");
    bool         hf    = strcmp(r->source, "huggingface") == 0;
    if (hf && cJSON_IsString(dir)) {
        st = pick_in_folder(dir->valuestring, path, cap);
    } else if (cJSON_IsString(f0)) {
        st = imgd_fmt(path, cap, "%s", f0->valuestring) ? IMGD_OK
                                                        : imgd_fail(IMGD_E_TOO_LARGE, "long path");
    } else {
        st = imgd_fail(IMGD_E_INTERNAL, "MODEL_ID %s: the pull reported no file", src);
    }
    cJSON_Delete(doc);
    if (st == IMGD_OK) sources_put(p->download_dir, src, path);
    return st;
}

static bool id_chars(const char *s, size_t n) {
    if (n == 0 || s[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i])) return false;
    }
    return true;
}

/* "org/name" or "org/name@rev" with Hugging Face's id characters. */
static bool hf_id_like(const char *s) {
    if (strncmp(s, "hf:", 3) == 0) s += 3;
    const char *sl = strchr(s, '/');
    if (!sl) return false;
    const char *at  = strchr(sl, '@');
    size_t      nl  = at ? (size_t)(at - sl - 1) : strlen(sl + 1);
    bool        rev = !at || id_chars(at + 1, strlen(at + 1));
    return id_chars(s, (size_t)(sl - s)) && id_chars(sl + 1, nl) && rev;
}

static bool all_digits(const char *s) {
    if (!*s) return false;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) return false;
    }
    return true;
}

/* urn:air:ECO:TYPE:SOURCE:ID[@VERSION][.FORMAT] -> a pull source and a family hint. */
static imgd_status air_parse(const char *air, char *src, size_t cap, char *hint, size_t hcap) {
    char buf[512];
    if (!imgd_fmt(buf, sizeof buf, "%s", air + 8)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "AIR '%s' is too long", air);
    }
    char *parts[4] = {NULL, NULL, NULL, NULL}, *p = buf;
    for (int i = 0; i < 3; i++) {
        parts[i] = p;
        p        = strchr(p, ':');
        if (!p) break;
        *p++ = '\0';
    }
    parts[3] = p;
    if (!parts[3] || !*parts[3]) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "AIR '%s': expected urn:air:ECOSYSTEM:TYPE:SOURCE:ID[@VERSION] (e.g. "
                         "urn:air:sdxl:lora:civitai:328553@368189)",
                         air);
    }
    static const char *const k_fmt[] = {".safetensors", ".ckpt", ".pt", ".bin", ".gguf", ".zip"};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_fmt); i++) {
        if (ends_with_ci(parts[3], k_fmt[i])) parts[3][strlen(parts[3]) - strlen(k_fmt[i])] = '\0';
    }
    const char *fam = fam_lookup(k_air_eco, IMGD_ARRAY_LEN(k_air_eco), parts[0]);
    (void)imgd_fmt(hint, hcap, "%s", fam ? fam : "");
    char *at = strchr(parts[3], '@');
    if (strcmp(parts[2], "civitai") == 0) {
        bool ok = at ? all_digits(at + 1) : all_digits(parts[3]);
        if (at) *at = '\0';
        if (!ok || !all_digits(parts[3])) {
            return imgd_fail(IMGD_E_INVALID_ARG, "AIR '%s': a CivitAI id is MODEL[@VERSION] digits",
                             air);
        }
        (void)imgd_fmt(src, cap, at ? "civitai:%s" : "civitai-model:%s", at ? at + 1 : parts[3]);
        return IMGD_OK;
    }
    if (strcmp(parts[2], "huggingface") == 0 || strcmp(parts[2], "hf") == 0) {
        if (!hf_id_like(parts[3])) {
            return imgd_fail(IMGD_E_INVALID_ARG, "AIR '%s': '%s' is not org/name[@revision]", air,
                             parts[3]);
        }
        (void)imgd_fmt(src, cap, "%s", parts[3]);
        return IMGD_OK;
    }
    return imgd_fail(IMGD_E_UNSUPPORTED,
                     "AIR '%s': source '%s' is not supported (civitai, huggingface are)", air,
                     parts[2]);
}

/* Where the model named by id is on disk, pulling it when needed. hint receives a family named
 * by the id itself (an AIR's ecosystem), or "". Recursion: an AIR becomes a hub source once. */
// NOLINTNEXTLINE(misc-no-recursion)
static imgd_status locate(const imgd_mid_params *p, const char *id, imgd_mid_result *r, char *path,
                          size_t cap, char *hint, size_t hcap) {
    struct stat st;
    if (stat(id, &st) == 0) {
        char real[PATH_MAX];
        if (!realpath(id, real)) {
            return imgd_fail(IMGD_E_IO, "MODEL_ID %s: %s", id, strerror(errno));
        }
        if (S_ISDIR(st.st_mode)) {
            (void)imgd_fmt(r->source, sizeof r->source, "folder");
            return pick_in_folder(real, path, cap);
        }
        (void)imgd_fmt(r->source, sizeof r->source, "file");
        return imgd_fmt(path, cap, "%s", real) ? IMGD_OK : imgd_fail(IMGD_E_TOO_LARGE, "long");
    }
    if (strncmp(id, "urn:air:", 8) == 0) {
        char        src[600];
        imgd_status ast = air_parse(id, src, sizeof src, hint, hcap);
        if (ast != IMGD_OK) return ast;
        char sub[8];
        ast = locate(p, src, r, path, cap, sub, sizeof sub);
        (void)imgd_fmt(r->source, sizeof r->source, "air");
        return ast;
    }
    char src[1024];
    bool web = strncmp(id, "https://", 8) == 0 || strncmp(id, "http://", 7) == 0;
    if (all_digits(id)) {
        (void)imgd_fmt(src, sizeof src, "civitai:%s", id);
    } else if (strncmp(id, "civitai:", 8) == 0 && strchr(id, '@')) {
        (void)imgd_fmt(src, sizeof src, "civitai:%s", strchr(id, '@') + 1);
    } else {
        (void)imgd_fmt(src, sizeof src, "%s", id);
    }
    bool civ = strncmp(src, "civitai", 7) == 0 || strstr(src, "civitai.com/");
    bool hf  = !civ && ((web && strstr(src, "://huggingface.co/") && !strstr(src, "/resolve/")) ||
                       (!web && hf_id_like(src)));
    if (!civ && !hf && !web) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "MODEL_ID '%s' is not a file or folder here, a Hugging Face repo id "
                         "(org/name[@revision]), a CivitAI id (civitai:VERSION, "
                         "civitai:MODEL@VERSION, civitai-model:MODEL or a bare version number), "
                         "an http(s) URL or an AIR (urn:air:sd1:checkpoint:civitai:MODEL@VERSION)",
                         id);
    }
    (void)imgd_fmt(r->source, sizeof r->source, "%s", civ ? "civitai" : hf ? "huggingface" : "url");
    return pull(p, src, r, path, cap);
}

/* ---- detection and the adapter's own metadata ---------------------------------------------- */

typedef struct adapter_meta {
    char ss_name[256];    /* ss_sd_model_name */
    char ss_hash[16];     /* ss_sd_model_hash (legacy 8 hex digits) */
    char ss_new_hash[80]; /* ss_new_sd_model_hash (sha256) */
    char ss_version[64];  /* ss_base_model_version */
    char ms_arch[128];    /* modelspec.architecture */
    char ms_trigger[512]; /* modelspec.trigger_phrase */
} adapter_meta;

static void meta_copy(const imgd_weights *w, const char *key, char *dst, size_t cap) {
    const char *v = imgd_weights_meta_find(w, key);
    (void)imgd_fmt(dst, cap, "%s", v ? v : "");
}

static imgd_status detect_path(const char *path, char kind[32], char family[32], adapter_meta *am) {
    imgd_weights    *w  = NULL;
    imgd_model_info *mi = NULL;
    imgd_status      st = imgd_weights_open(path, NULL, &w);
    if (st == IMGD_OK) st = imgd_model_detect(w, &mi);
    if (st == IMGD_OK) {
        (void)imgd_fmt(kind, 32, "%s", imgd_model_kind_name(imgd_model_info_kind(mi)));
        (void)imgd_fmt(family, 32, "%s", imgd_family_name(imgd_model_info_family(mi)));
        if (am) {
            meta_copy(w, "ss_sd_model_name", am->ss_name, sizeof am->ss_name);
            meta_copy(w, "ss_sd_model_hash", am->ss_hash, sizeof am->ss_hash);
            meta_copy(w, "ss_new_sd_model_hash", am->ss_new_hash, sizeof am->ss_new_hash);
            meta_copy(w, "ss_base_model_version", am->ss_version, sizeof am->ss_version);
            meta_copy(w, "modelspec.architecture", am->ms_arch, sizeof am->ms_arch);
            meta_copy(w, "modelspec.trigger_phrase", am->ms_trigger, sizeof am->ms_trigger);
        }
    }
    imgd_model_info_free(mi);
    imgd_weights_free(w);
    return st == IMGD_OK ? IMGD_OK : imgd_fail_prefix(st, "MODEL_ID %s cannot be read", path);
}

/* Kind and family through the registry cache (STATE/registry.sqlite3), restricted to this one
 * model: a file unchanged since the last start (size, mtime) is not opened again, so a restart
 * with a warm disk cache does not parse a multi-GB .ckpt to learn it is a checkpoint. */
static imgd_status detect_cached(const char *state_dir, const char *path, char kind[32],
                                 char family[32]) {
    char dir[PATH_MAX];
    (void)imgd_fmt(dir, sizeof dir, "%s", path);
    char *sl = strrchr(dir, '/');
    if (!sl || sl == dir || !sl[1]) return IMGD_E_INVALID_ARG;
    *sl                     = '\0';
    const char     *dirs[1] = {dir};
    char           *db      = imgd_path_join(state_dir, "registry.sqlite3");
    imgd_registry  *reg     = NULL;
    imgd_reg_entry *e       = imgd_malloc(sizeof *e);
    imgd_status     st      = db && e ? IMGD_OK : IMGD_E_NOMEM;
    if (st == IMGD_OK) st = imgd_registry_open(db, dirs, 1, &reg);
    if (st == IMGD_OK) st = imgd_registry_only(reg, sl + 1);
    if (st == IMGD_OK) st = imgd_registry_scan(reg, NULL);
    if (st == IMGD_OK) st = imgd_registry_find(reg, sl + 1, e);
    if (st == IMGD_OK && (e->error[0] || !e->kind[0])) st = IMGD_E_FORMAT;
    if (st == IMGD_OK) {
        (void)imgd_fmt(kind, 32, "%s", e->kind);
        (void)imgd_fmt(family, 32, "%s", e->family);
    }
    imgd_registry_free(reg);
    imgd_free(e);
    imgd_free(db);
    return st;
}

/* ---- sidecar metadata: NAME.civitai.json (imgd pull) and NAME.json (A1111) ------------------ */

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    imgd_buf b;
    imgd_buf_init(&b, SIDECAR_MAX);
    char        chunk[4096];
    size_t      n;
    imgd_status st = IMGD_OK;
    while (st == IMGD_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        st = imgd_buf_append(&b, chunk, n);
    }
    (void)fclose(f);
    cJSON *doc = NULL;
    if (st == IMGD_OK && b.len) {
        if (imgd_json_parse(path, b.data, b.len, SIDECAR_MAX, 32, &doc) != IMGD_OK) doc = NULL;
    }
    imgd_buf_free(&b);
    return doc;
}

static void sidecar_path(const char *adapter, const char *suffix, char *out, size_t cap) {
    const char *dot = strrchr(adapter, '.'), *sl = strrchr(adapter, '/');
    int         stem = dot && (!sl || dot > sl) ? (int)(dot - adapter) : (int)strlen(adapter);
    (void)imgd_fmt(out, cap, "%.*s%s", stem, adapter, suffix);
}

static void add_trigger(imgd_mid_result *r, const char *word) {
    if (!word || !*word || strstr(r->trigger, word)) return;
    size_t l = strlen(r->trigger);
    (void)imgd_fmt(r->trigger + l, sizeof r->trigger - l, "%s%s", l ? ", " : "", word);
}

/* Weight, trigger words and CivitAI's baseModel from the files beside the adapter. */
static void sidecars(const char *adapter, const adapter_meta *am, imgd_mid_result *r,
                     char *civ_base, size_t cap) {
    char path[PATH_MAX + 32];
    sidecar_path(adapter, ".civitai.json", path, sizeof path);
    cJSON       *civ = read_json(path);
    const cJSON *v   = cJSON_GetObjectItemCaseSensitive(civ, "baseModel");
    (void)imgd_fmt(civ_base, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(civ, "trainedWords")) {
        if (cJSON_IsString(it)) add_trigger(r, it->valuestring);
    }
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(civ, "settings");
    const cJSON *w        = cJSON_GetObjectItemCaseSensitive(civ, "recommendedWeight");
    if (!cJSON_IsNumber(w)) w = cJSON_GetObjectItemCaseSensitive(settings, "strength");
    if (cJSON_IsNumber(w) && w->valuedouble > -10 && w->valuedouble < 10) {
        r->adapter_weight = (float)w->valuedouble;
        (void)imgd_fmt(r->weight_how, sizeof r->weight_how, "CivitAI metadata");
    }
    cJSON_Delete(civ);
    sidecar_path(adapter, ".json", path, sizeof path);
    cJSON *a1 = read_json(path);
    w         = cJSON_GetObjectItemCaseSensitive(a1, "preferred weight");
    if (!r->weight_how[0] && cJSON_IsNumber(w) && w->valuedouble != 0 && w->valuedouble > -10 &&
        w->valuedouble < 10) {
        r->adapter_weight = (float)w->valuedouble;
        (void)imgd_fmt(r->weight_how, sizeof r->weight_how, "A1111 user metadata");
    }
    v = cJSON_GetObjectItemCaseSensitive(a1, "activation text");
    if (cJSON_IsString(v)) add_trigger(r, v->valuestring);
    cJSON_Delete(a1);
    add_trigger(r, am->ms_trigger);
    if (!r->weight_how[0]) (void)imgd_fmt(r->weight_how, sizeof r->weight_how, "default");
}

/* ---- base search ------------------------------------------------------------------------- */

/* The legacy A1111 "model hash": sha256 of 64 KiB at offset 1 MiB, first 8 hex digits. */
static bool legacy_hash(const char *path, char out[9]) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    uint8_t *buf = imgd_malloc(0x10000);
    size_t   n   = 0;
    if (buf && fseek(f, 0x100000, SEEK_SET) == 0) n = fread(buf, 1, 0x10000, f);
    (void)fclose(f);
    if (!buf || n == 0) {
        imgd_free(buf);
        return false;
    }
    imgd_sha256 s;
    uint8_t     d[32];
    char        hex[65];
    imgd_sha256_init(&s);
    imgd_sha256_update(&s, buf, n);
    imgd_sha256_final(&s, d);
    imgd_sha256_hex(d, hex);
    imgd_free(buf);
    (void)imgd_fmt(out, 9, "%.8s", hex);
    return true;
}

typedef struct cands {
    imgd_registry  *reg;
    imgd_reg_entry *v; /* checkpoints under the search dirs */
    size_t          n;
    char            dirs[1024];
} cands;

static void cands_free(cands *c) {
    imgd_registry_free(c->reg);
    imgd_free(c->v);
    memset(c, 0, sizeof *c);
}

/* Scans the search dirs (and the download dir) and keeps their checkpoints. */
static imgd_status cands_load(const imgd_mid_params *p, cands *c) {
    const char *dirs[66];
    size_t      n = 0;
    for (size_t i = 0; i < p->n_search_dirs && n < 64; i++) {
        if (path_is_dir(p->search_dirs[i])) dirs[n++] = p->search_dirs[i];
    }
    /* the download dir, unless it is one of the search dirs or inside one (scanned already) */
    char dl[PATH_MAX];
    bool add = p->download_dir && path_is_dir(p->download_dir) && realpath(p->download_dir, dl);
    for (size_t i = 0; add && i < n; i++) {
        char   sd[PATH_MAX];
        size_t l = realpath(dirs[i], sd) ? strlen(sd) : 0;
        if (l && strncmp(dl, sd, l) == 0 && (dl[l] == '\0' || dl[l] == '/')) add = false;
    }
    if (add) dirs[n++] = p->download_dir;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(c->dirs);
        (void)imgd_fmt(c->dirs + l, sizeof c->dirs - l, "%s%s", l ? ", " : "", dirs[i]);
    }
    if (n == 0) return IMGD_OK;
    char *db = imgd_path_join(p->state_dir, "registry.sqlite3");
    if (!db) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = imgd_registry_open(db, dirs, n, &c->reg);
    imgd_free(db);
    if (st == IMGD_OK) st = imgd_registry_scan(c->reg, NULL);
    size_t total = st == IMGD_OK ? imgd_registry_count(c->reg) : 0;
    if (total > CANDS_MAX) total = CANDS_MAX;
    c->v = total ? imgd_calloc(total, sizeof *c->v) : NULL;
    if (total && !c->v) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (size_t i = 0; st == IMGD_OK && i < total; i++) {
        if (imgd_registry_at(c->reg, i, &c->v[c->n]) != IMGD_OK) continue;
        if (strcmp(c->v[c->n].kind, "checkpoint") == 0 && !c->v[c->n].error[0]) c->n++;
    }
    return st;
}

static void set_base(imgd_mid_result *r, const imgd_reg_entry *e, const char *how) {
    (void)imgd_fmt(r->base, sizeof r->base, "%s", e->path);
    (void)imgd_fmt(r->base_family, sizeof r->base_family, "%s", e->family);
    (void)imgd_fmt(r->base_how, sizeof r->base_how, "%s", how);
}

/* Step 1: the adapter's metadata names its base by file name or hash. */
static void by_metadata(cands *c, const adapter_meta *am, const char *fam, imgd_mid_result *r) {
    char want[256], how[768];
    if (am->ss_name[0]) {
        /* the exact file name first, then the name without extension */
        const char *sl  = strrchr(am->ss_name, '/');
        const char *bn  = sl ? sl + 1 : am->ss_name;
        size_t      hit = c->n;
        stem_of(am->ss_name, want, sizeof want);
        for (size_t i = 0; i < c->n && hit == c->n; i++) {
            const char *s2 = strrchr(c->v[i].id, '/');
            if (strcasecmp(s2 ? s2 + 1 : c->v[i].id, bn) == 0) hit = i;
        }
        for (size_t i = 0; i < c->n; i++) {
            char stem[256];
            stem_of(c->v[i].id, stem, sizeof stem);
            if (hit == c->n && strcasecmp(stem, want) == 0) hit = i;
            if (i != hit) continue;
            (void)imgd_fmt(how, sizeof how, "adapter metadata: ss_sd_model_name '%s' is %s",
                           am->ss_name, c->v[i].path);
            set_base(r, &c->v[i], how);
            return;
        }
        tried(r, "adapter metadata: ss_sd_model_name '%s' matches no checkpoint under %s",
              am->ss_name, c->dirs[0] ? c->dirs : "(no search dirs)");
    }
    const char *sha = am->ss_new_hash[0] == '0' && am->ss_new_hash[1] == 'x' ? am->ss_new_hash + 2
                                                                             : am->ss_new_hash;
    bool        legacy = strlen(am->ss_hash) == 8;
    if (strlen(sha) != 64 && !legacy) {
        if (!am->ss_name[0]) tried(r, "adapter metadata: names no base (no ss_sd_model_name/hash)");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i].is_dir || (fam_known(fam) && strcmp(c->v[i].family, fam) != 0)) continue;
        char hex[65], old[9];
        if (strlen(sha) == 64 &&
            imgd_registry_hash(c->reg, c->v[i].id, NULL, NULL, hex) == IMGD_OK &&
            strcasecmp(hex, sha) == 0) {
            (void)imgd_fmt(how, sizeof how, "adapter metadata: ss_new_sd_model_hash %.12s... is %s",
                           sha, c->v[i].path);
            set_base(r, &c->v[i], how);
            return;
        }
        if (legacy && legacy_hash(c->v[i].path, old) && strcasecmp(old, am->ss_hash) == 0) {
            (void)imgd_fmt(how, sizeof how, "adapter metadata: ss_sd_model_hash %s is %s",
                           am->ss_hash, c->v[i].path);
            set_base(r, &c->v[i], how);
            return;
        }
    }
    tried(r, "adapter metadata: model hash %s matches no %s checkpoint under %s",
          legacy ? am->ss_hash : sha, fam_known(fam) ? fam : "", c->dirs[0] ? c->dirs : "(none)");
}

/* Step 2: the family the adapter fits. */
static void adapter_family(const adapter_meta *am, const char *civ_base, const char *hint,
                           imgd_mid_result *r, char *fam, size_t cap) {
    const char *f   = fam_known(r->family) ? r->family : NULL;
    const char *why = "detection";
    if (!f && (f = fam_lookup(k_ss_versions, IMGD_ARRAY_LEN(k_ss_versions), am->ss_version))) {
        why = "ss_base_model_version";
    }
    if (!f && (f = fam_lookup(k_modelspec, IMGD_ARRAY_LEN(k_modelspec), am->ms_arch))) {
        why = "modelspec.architecture";
    }
    const char *cf =
        civ_base[0] ? fam_lookup(k_civitai_base, IMGD_ARRAY_LEN(k_civitai_base), civ_base) : NULL;
    if (civ_base[0]) {
        tried(r, "CivitAI baseModel '%s': family %s", civ_base, cf ? cf : "not recognised");
    }
    if (!f && cf) {
        f   = cf;
        why = "CivitAI baseModel";
    }
    if (!f && hint[0]) {
        f   = hint;
        why = "the AIR ecosystem";
    }
    (void)imgd_fmt(fam, cap, "%s", f ? f : "unknown");
    tried(r, "family: %s (from %s)", f ? f : "unknown", f ? why : "nothing: detection, metadata");
}

static imgd_status resolve_default(const imgd_mid_params *p, const char *var, const char *value,
                                   imgd_mid_result *r) {
    imgd_mid_result sub;
    memset(&sub, 0, sizeof sub);
    char        path[PATH_MAX], hint[32], kind[32], family[32];
    imgd_status st = locate(p, value, &sub, path, sizeof path, hint, sizeof hint);
    if (st == IMGD_OK) st = detect_path(path, kind, family, NULL);
    r->download_s += sub.download_s;
    if (st != IMGD_OK) return imgd_fail_prefix(st, "configured default %s=%s", var, value);
    if (strcmp(kind, "checkpoint") != 0) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "configured default %s=%s is a %s %s, not a checkpoint: point it at a "
                         "base model",
                         var, value, family, kind);
    }
    (void)imgd_fmt(r->base, sizeof r->base, "%s", path);
    (void)imgd_fmt(r->base_family, sizeof r->base_family, "%s", family);
    (void)imgd_fmt(r->base_how, sizeof r->base_how, "configured default %s=%s", var, value);
    return IMGD_OK;
}

static imgd_status no_base(const cands *c, const char *fam, imgd_mid_result *r) {
    char   list[1024] = "";
    size_t l          = 0;
    for (size_t i = 0; i < c->n && l + 2 < sizeof list; i++) {
        (void)imgd_fmt(list + l, sizeof list - l, "%s%s (%s)", l ? ", " : "", c->v[i].id,
                       c->v[i].family);
        l = strlen(list);
    }
    char var[64];
    (void)base_env(fam_known(fam) ? fam : "sd1", var, sizeof var);
    char t[4096];
    (void)imgd_fmt(t, sizeof t, "%s", r->tried.data ? r->tried.data : "");
    for (char *q = t; *q; q++) {
        if (*q == '\n') *q = q[1] ? ';' : '.';
    }
    return imgd_fail(IMGD_E_NOT_FOUND,
                     "no base model found for the %s %s (family %s). Tried: %s Candidates: %s. "
                     "Fix: set %s to a MODEL_ID of a %s checkpoint, or add one to --models",
                     r->kind, r->path, fam, t, l ? list : "no checkpoints under the search dirs",
                     var, fam_known(fam) ? fam : "matching");
}

static imgd_status find_base(const imgd_mid_params *p, const adapter_meta *am, const char *hint,
                             imgd_mid_result *r) {
    char civ_base[128], fam[32];
    sidecars(r->path, am, r, civ_base, sizeof civ_base);
    adapter_family(am, civ_base, hint, r, fam, sizeof fam);
    cands       c;
    imgd_status st = IMGD_OK;
    memset(&c, 0, sizeof c);
    st = cands_load(p, &c);
    if (st == IMGD_OK) by_metadata(&c, am, fam, r);
    char        var[64];
    const char *dflt = fam_known(fam) ? base_env(fam, var, sizeof var) : NULL;
    size_t      nfam = 0, first = 0;
    for (size_t i = 0; st == IMGD_OK && !r->base[0] && i < c.n; i++) {
        if (fam_known(fam) && strcmp(c.v[i].family, fam) == 0 && nfam++ == 0) first = i;
    }
    if (st == IMGD_OK && !r->base[0]) {
        if (nfam == 1 || (nfam > 1 && !dflt)) {
            char how[768];
            (void)imgd_fmt(how, sizeof how, "%s checkpoint under the search dirs: %s%s",
                           nfam == 1 ? "the only" : "the first (by id) of several", c.v[first].id,
                           nfam > 1 ? " (set a configured default to choose)" : "");
            set_base(r, &c.v[first], how);
        } else {
            tried(r, "search dirs: %zu %s checkpoint(s) under %s", nfam, fam,
                  c.dirs[0] ? c.dirs : "(none given)");
        }
    }
    if (st == IMGD_OK && !r->base[0] && fam_known(fam)) {
        if (dflt) {
            st = resolve_default(p, var, dflt, r);
        } else {
            tried(r, "configured default: %s is not set", var);
        }
    }
    if (st == IMGD_OK && !r->base[0]) st = no_base(&c, fam, r);
    cands_free(&c);
    if (st == IMGD_OK && fam_known(fam) && strcmp(r->base_family, fam) != 0) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "incompatible pair: the %s %s is for %s models, but its base %s (found "
                         "by %s) is %s; nothing was loaded. Point MODEL_ID or %s at a %s "
                         "checkpoint",
                         r->kind, r->path, fam, r->base, r->base_how, r->base_family, var, fam);
    }
    return st;
}

/* ---- entry points ------------------------------------------------------------------------- */

imgd_status imgd_mid_resolve(const imgd_mid_params *p, imgd_mid_result *r) {
    memset(r, 0, sizeof *r);
    imgd_buf_init(&r->tried, TRIED_MAX);
    r->adapter_weight = 1.0f;
    if (!p || !p->model_id || !p->model_id[0] || !p->state_dir) {
        return imgd_fail(IMGD_E_INVALID_ARG, "MODEL_ID: empty (give --model-id or set MODEL_ID)");
    }
    char         hint[32] = "";
    imgd_status  st       = locate(p, p->model_id, r, r->path, sizeof r->path, hint, sizeof hint);
    adapter_meta am;
    memset(&am, 0, sizeof am);
    /* the registry's cached detection first; a file is opened only when it is new or changed,
     * or an adapter (whose metadata names its base) */
    bool cached = st == IMGD_OK &&
                  detect_cached(p->state_dir, r->path, r->kind, r->family) == IMGD_OK &&
                  strcmp(r->kind, "checkpoint") == 0;
    if (st == IMGD_OK) {
        imgd_error_clear(); /* a cache miss is not an error */
    }
    if (st == IMGD_OK && !cached) st = detect_path(r->path, r->kind, r->family, &am);
    if (st != IMGD_OK) return st;
    if (strcmp(r->kind, "checkpoint") == 0) {
        (void)imgd_fmt(r->base, sizeof r->base, "%s", r->path);
        (void)imgd_fmt(r->base_family, sizeof r->base_family, "%s", r->family);
        return IMGD_OK;
    }
    bool adapter = strcmp(r->kind, "lora") == 0 || strcmp(r->kind, "lycoris") == 0 ||
                   strcmp(r->kind, "embedding") == 0;
    if (!adapter) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "MODEL_ID %s is a %s (family %s): the worker serves checkpoints, and "
                         "LoRA / LyCORIS / embedding adapters on a base found for them",
                         r->path, r->kind, r->family);
    }
    r->adapter = true;
    if (strcmp(r->kind, "embedding") == 0) {
        char stem[256];
        stem_of(r->path, stem, sizeof stem);
        add_trigger(r, stem);
    }
    st = find_base(p, &am, hint, r);
    if (st == IMGD_OK) {
        IMGD_LOG(IMGD_LOG_INFO, "service.model_id", "base_found", "%s %s on %s (%s)", r->kind,
                 r->path, r->base, r->base_how);
    }
    return st;
}

void imgd_mid_result_free(imgd_mid_result *r) {
    if (r) imgd_buf_free(&r->tried);
}

char *imgd_mid_result_json(const char *model_id, const imgd_mid_result *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    (void)cJSON_AddStringToObject(o, "model_id", model_id);
    (void)cJSON_AddStringToObject(o, "source", r->source);
    (void)cJSON_AddStringToObject(o, "path", r->path);
    (void)cJSON_AddStringToObject(o, "kind", r->kind);
    (void)cJSON_AddStringToObject(o, "family", r->family);
    cJSON *b = cJSON_AddObjectToObject(o, "base");
    if (b) {
        (void)cJSON_AddStringToObject(b, "path", r->base);
        (void)cJSON_AddStringToObject(b, "family", r->base_family);
        (void)cJSON_AddStringToObject(b, "found_by", r->base_how[0] ? r->base_how : "model_id");
    }
    if (r->adapter) {
        cJSON *a = cJSON_AddObjectToObject(o, "adapter");
        if (a) {
            (void)cJSON_AddStringToObject(a, "path", r->path);
            (void)cJSON_AddStringToObject(a, "kind", r->kind);
            (void)cJSON_AddNumberToObject(a, "weight", (double)r->adapter_weight);
            (void)cJSON_AddStringToObject(a, "weight_from", r->weight_how);
            cJSON *tw = cJSON_AddArrayToObject(a, "trigger_words");
            char   copy[sizeof r->trigger];
            (void)imgd_fmt(copy, sizeof copy, "%s", r->trigger);
            for (char *s = copy; tw && *s;) {
                char *e = strstr(s, ", ");
                if (e) *e = '\0';
                cJSON_AddItemToArray(tw, cJSON_CreateString(s));
                s = e ? e + 2 : s + strlen(s);
            }
        }
    } else {
        (void)cJSON_AddNullToObject(o, "adapter");
    }
    cJSON *tr = cJSON_AddArrayToObject(o, "tried");
    char  *t  = r->tried.len ? imgd_strndup(r->tried.data, r->tried.len) : NULL;
    for (char *s = t; tr && s && *s;) {
        char *e = strchr(s, '\n');
        if (e) *e = '\0';
        if (*s) cJSON_AddItemToArray(tr, cJSON_CreateString(s));
        s = e ? e + 1 : s + strlen(s);
    }
    imgd_free(t);
    (void)cJSON_AddNumberToObject(o, "download_s", r->download_s);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *out = txt ? imgd_strdup(txt) : NULL;
    cJSON_free(txt);
    return out;
}
