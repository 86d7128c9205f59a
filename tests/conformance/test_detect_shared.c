/* Detection on ../shared/detect-corpus: real layouts of real downloads (names, dtypes,
 * shapes, metadata), materialised as header-only files, must be detected as labelled. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <sys/stat.h>
#include <zlib.h>

#include "base/alloc.h"
#include "base/text.h"
#include "detect/keymap.h"
#include "formats/dtype.h"
#include "header_only.h"
#include "test.h"
#include "util.h"

static char *read_gz(const char *path) {
    gzFile g = gzopen(path, "rb");
    if (!g) return NULL;
    size_t cap = 1 << 20, n = 0;
    char  *buf = imgd_malloc(cap);
    int    r;
    while (buf && (r = gzread(g, buf + n, (unsigned)(cap - n - 1))) > 0) {
        n += (size_t)r;
        if (cap - n < 2) {
            char *nb = imgd_realloc(buf, cap * 2);
            if (!nb) {
                imgd_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    gzclose(g);
    if (buf) buf[n] = 0;
    return buf;
}

/* Writes one safetensors description {metadata, tensors} as a header-only file. */
static int write_st(const char *path, const cJSON *metadata, const cJSON *tensors) {
    ho_file f;
    ho_begin(&f);
    for (const cJSON *m = metadata ? metadata->child : NULL; m; m = m->next)
        if (cJSON_IsString(m)) ho_meta(&f, m->string, m->valuestring);
    for (const cJSON *t = tensors ? tensors->child : NULL; t; t = t->next) {
        const cJSON *nm = cJSON_GetArrayItem(t, 0), *dt = cJSON_GetArrayItem(t, 1),
                    *sh = cJSON_GetArrayItem(t, 2);
        int64_t shape[8];
        int32_t nd = 0;
        for (const cJSON *d = sh ? sh->child : NULL; d && nd < 8; d = d->next)
            shape[nd++] = (int64_t)d->valuedouble;
        ho_add(&f, nm->valuestring, dt->valuestring, nd, shape);
    }
    return ho_finish(&f, path);
}

static void mkdirs_for(const char *path) {
    char p[4096];
    imgd_fmt(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
}

/* Materialises a case; returns the path to open (file or folder). */
static int materialise(const cJSON *c, const char *dir, char *out, size_t cap) {
    const cJSON *files = cJSON_GetObjectItem(c, "files");
    mkdir(dir, 0755);
    if (!files) {
        imgd_fmt(out, cap, "%s/model.safetensors", dir);
        return write_st(out, cJSON_GetObjectItem(c, "metadata"), cJSON_GetObjectItem(c, "tensors"));
    }
    imgd_fmt(out, cap, "%s", dir);
    for (const cJSON *f = files->child; f; f = f->next) {
        char p[4096];
        imgd_fmt(p, sizeof p, "%s/%s", dir, f->string);
        mkdirs_for(p);
        size_t l = strlen(f->string);
        if (l > 12 && strcmp(f->string + l - 12, ".safetensors") == 0) {
            if (write_st(p, cJSON_GetObjectItem(f, "metadata"), cJSON_GetObjectItem(f, "tensors")))
                return -1;
        } else if (cJSON_IsString(f)) { /* "omitted: ..." (tokenizer files) */
            bool json = l > 5 && strcmp(f->string + l - 5, ".json") == 0;
            tu_write_file(p, json ? "{}" : "", json ? 2 : 0);
        } else {
            char *text = cJSON_PrintUnformatted(f);
            int   rc   = text ? tu_write_file(p, text, strlen(text)) : -1;
            cJSON_free(text);
            if (rc) return -1;
        }
    }
    return 0;
}

static const char *want_kind(const char *k) {
    static const char *const map[][2] = {{"pipeline", "checkpoint"},
                                         {"transformer", "unet"},
                                         {"text-encoder", "text_encoder"},
                                         {"textual-inversion", "embedding"},
                                         {"t2i-adapter", "t2i_adapter"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(k, map[i][0]) == 0) return map[i][1];
    return k;
}

static const char *want_family(const cJSON *label, const char *kind) {
    const cJSON *f = cJSON_GetObjectItem(label, "family");
    const cJSON *v = cJSON_GetObjectItem(label, "variant");
    if (!cJSON_IsString(f)) return strcmp(kind, "unknown") == 0 ? "unknown" : "null";
    if (strcmp(f->valuestring, "flux1") == 0)
        return v && cJSON_IsString(v) && strcmp(v->valuestring, "schnell") == 0 ? "flux_schnell"
                                                                                : "flux_dev";
    if (strcmp(f->valuestring, "sdxl-refiner") == 0) return "sdxl_refiner";
    return f->valuestring;
}

static int g_cases, g_right;

/* Canonical names of the SD 1.5 single file and the SD 1.5 folder, compared at the end. */
static imgd_keymap  *g_km_single, *g_km_folder;
static imgd_weights *g_w_single, *g_w_folder;

static void check_keymap(const char *file, imgd_weights *w, imgd_model_info *mi, bool *kept) {
    imgd_model_kind k = imgd_model_info_kind(mi);
    if (k != IMGD_KIND_CHECKPOINT && k != IMGD_KIND_UNET && k != IMGD_KIND_VAE &&
        k != IMGD_KIND_TEXT_ENCODER && k != IMGD_KIND_CONTROLNET)
        return;
    imgd_keymap *km = NULL;
    CHECK_MSG(imgd_keymap_build(w, mi, &km) == IMGD_OK, "%s: %s", file, imgd_last_error());
    if (!km) return;
    printf("%-40s %5zu canonical, %3zu unmapped%s%s\n", file, km->n, km->n_unmapped,
           km->n_unmapped ? " e.g. " : "", km->n_unmapped ? km->unmapped_example[0] : "");
    if (strcmp(file, "ckpt_sd15_pruned_emaonly.json.gz") == 0) {
        g_km_single = km;
        g_w_single  = w;
        *kept       = true;
    } else if (strcmp(file, "folder_sd15_diffusers.json.gz") == 0) {
        g_km_folder = km;
        g_w_folder  = w;
        *kept       = true;
    } else {
        imgd_keymap_free(km);
    }
}

/* Every canonical UNet/VAE/text-encoder name of the folder exists in the single file with
 * the same shape (the safety checker is folder-only). */
static void check_single_vs_folder(void) {
    if (!g_km_single || !g_km_folder) return;
    size_t same = 0, missing = 0;
    for (size_t i = 0; i < g_km_folder->n; i++) {
        const imgd_km_entry *e = &g_km_folder->e[i];
        if (strncmp(e->canonical, "safety_checker", 14) == 0) continue;
        const imgd_km_entry *s = imgd_keymap_find(g_km_single, e->canonical);
        const imgd_wtensor  *a = s ? &g_w_single->t[s->src] : NULL, *b = &g_w_folder->t[e->src];
        uint64_t             na = 0, nb = 0;
        if (a) {
            imgd_shape_numel(a->n_dims, a->shape, &na);
            imgd_shape_numel(b->n_dims, b->shape, &nb);
        }
        if (a && na == nb)
            same++;
        else if (missing++ < 5)
            fprintf(stderr, "  single file lacks '%s'\n", e->canonical);
    }
    printf("sd15 single file vs folder: %zu canonical tensors match, %zu missing\n", same, missing);
    CHECK_EQ_INT(missing, 0);
    CHECK(same >= 1100);
}

static void run_case(const char *corpus, const char *file, const char *tmp) {
    char path[4096], target[4096];
    imgd_fmt(path, sizeof path, "%s/%s", corpus, file);
    char  *text = read_gz(path);
    cJSON *c    = text ? cJSON_Parse(text) : NULL;
    imgd_free(text);
    CHECK_MSG(c != NULL, "%s: unreadable case", file);
    if (!c) return;
    const cJSON *label = cJSON_GetObjectItem(c, "label");
    const char  *kind  = want_kind(cJSON_GetObjectItem(label, "kind")->valuestring);
    const char  *fam   = want_family(label, kind);
    char         dir[4096];
    imgd_fmt(dir, sizeof dir, "%s/%s", tmp, file);
    CHECK(materialise(c, dir, target, sizeof target) == 0);
    imgd_weights    *w  = NULL;
    imgd_model_info *mi = NULL;
    g_cases++;
    if (imgd_weights_open(target, NULL, &w) == IMGD_OK && imgd_model_detect(w, &mi) == IMGD_OK) {
        const char *gk = imgd_model_kind_name(imgd_model_info_kind(mi));
        const char *gf = imgd_family_name(imgd_model_info_family(mi));
        if (strcmp(gk, kind) == 0 && strcmp(gf, fam) == 0) {
            g_right++;
        } else {
            char *j = NULL;
            imgd_model_info_json(mi, &j);
            CHECK_MSG(0, "%s: expected %s/%s, got %s/%s\n  %s", file, kind, fam, gk, gf,
                      j ? j : "");
            imgd_string_free(j);
        }
    } else {
        CHECK_MSG(0, "%s: %s", file, imgd_last_error());
    }
    bool kept = false;
    if (mi) check_keymap(file, w, mi, &kept);
    imgd_model_info_free(mi);
    if (!kept) imgd_weights_free(w);
    cJSON_Delete(c);
}

static void test_detect_shared_corpus_labels(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/detect-corpus absent: shared detection corpus not run");
        return;
    }
    char corpus[4096], tmp[4096], cmd[8300];
    imgd_fmt(corpus, sizeof corpus, "%s/detect-corpus", shared);
    tu_tmp_path(tmp, sizeof tmp, "detect-shared");
    mkdir(tmp, 0755);
    DIR *d = opendir(corpus);
    CHECK(d != NULL);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 8 && strcmp(e->d_name + l - 8, ".json.gz") == 0) run_case(corpus, e->d_name, tmp);
    }
    if (d) closedir(d);
    printf("shared corpus detection accuracy: %d/%d\n", g_right, g_cases);
    check_single_vs_folder();
    imgd_keymap_free(g_km_single);
    imgd_keymap_free(g_km_folder);
    imgd_weights_free(g_w_single);
    imgd_weights_free(g_w_folder);
    imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    CHECK(g_cases >= 20);
}

int main(void) {
    RUN(test_detect_shared_corpus_labels);
    TEST_END();
}
