/* Every weight file in ../shared/conformance (written by safetensors/torch/diffusers in
 * Python) opens and validates; single files and diffusers folders of the same model
 * hold the same number of parameters. */
#include <dirent.h>
#include <sys/stat.h>

#include "base/text.h"
#include "test.h"
#include "util.h"

static int g_files;

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* walk() descends at most this many folder levels below the root (the tree is 3 deep
 * today); a deeper tree (or a symlink loop) fails the test instead of recursing on. */
#define WALK_DEPTH_MAX 16

static void walk(const char *dir, int depth) { // NOLINT(misc-no-recursion): depth capped at 16
    if (depth > WALK_DEPTH_MAX) {
        CHECK_MSG(depth <= WALK_DEPTH_MAX, "%s: deeper than %d levels", dir, WALK_DEPTH_MAX);
        return;
    }
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        imgd_fmt(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            walk(p, depth + 1);
        } else if (has_suffix(p, ".safetensors") || has_suffix(p, ".ckpt") ||
                   has_suffix(p, ".pt") || has_suffix(p, ".gguf")) {
            imgd_weights *w = NULL;
            imgd_status   s = imgd_weights_open(p, NULL, &w);
            CHECK_MSG(s == IMGD_OK, "%s: %s", p, imgd_last_error());
            if (w) CHECK_MSG(imgd_weights_tensor_count(w) > 0, "%s has no tensors", p);
            imgd_weights_free(w);
            g_files++;
        }
    }
    closedir(d);
}

static void test_conformance_every_weight_file_opens(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: conformance files not read");
        return;
    }
    char root[4096];
    imgd_fmt(root, sizeof root, "%s/conformance", shared);
    g_files = 0;
    walk(root, 0);
    printf("opened %d weight files under %s\n", g_files, root);
    CHECK(g_files >= 40);
}

static uint64_t params_of(const char *path) {
    imgd_weights *w = NULL;
    uint64_t      n = 0;
    if (imgd_weights_open(path, NULL, &w) != IMGD_OK) {
        CHECK_MSG(0, "%s: %s", path, imgd_last_error());
        return 0;
    }
    for (size_t i = 0; i < imgd_weights_tensor_count(w); i++) {
        imgd_tensor_info t;
        imgd_weights_tensor(w, i, &t);
        uint64_t k = 1;
        for (int d = 0; d < t.n_dims; d++) k *= (uint64_t)t.shape[d];
        n += k;
    }
    imgd_weights_free(w);
    return n;
}

static void test_conformance_single_file_matches_folder_parameters(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent");
        return;
    }
    static const char *const pairs[][2] = {
        {"sd15-narrow/sd15-narrow.safetensors", "sd15-narrow/diffusers"},
        {"sdxl-narrow/sdxl-narrow.safetensors", "sdxl-narrow/diffusers"},
        {"sd15-narrow/controlnet/control_narrow.safetensors", "sd15-narrow/controlnet/diffusers"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char a[4096], b[4096];
        imgd_fmt(a, sizeof a, "%s/conformance/%s", shared, pairs[i][0]);
        imgd_fmt(b, sizeof b, "%s/conformance/%s", shared, pairs[i][1]);
        uint64_t pa = params_of(a), pb = params_of(b);
        CHECK_MSG(pa == pb && pa > 0, "%s has %llu parameters, %s has %llu", pairs[i][0],
                  (unsigned long long)pa, pairs[i][1], (unsigned long long)pb);
    }
}

int main(void) {
    RUN(test_conformance_every_weight_file_opens);
    RUN(test_conformance_single_file_matches_folder_parameters);
    TEST_END();
}
