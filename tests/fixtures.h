/* Small weight files built by the tests themselves. */
#ifndef IMGD_TEST_FIXTURES_H
#define IMGD_TEST_FIXTURES_H

#include <sys/stat.h>

#include "base/text.h"
#include "formats/safetensors.h"
#include "util.h"

/* Writes a safetensors file with tensors named names[0..n) of shape [rows, 4] F32 whose
 * values are seed + index. Returns 0 on success. */
static inline int fx_safetensors(const char *path, const char *const *names, int n, int rows,
                                 float seed, const char *meta_k, const char *meta_v) {
    imgd_st_entry e[16] = {0};
    if (n > 16) return -1;
    for (int i = 0; i < n; i++) {
        memset(&e[i], 0, sizeof e[i]);
        e[i].name     = names[i];
        e[i].dtype    = IMGD_DTYPE_F32;
        e[i].n_dims   = 2;
        e[i].shape[0] = rows;
        e[i].shape[1] = 4;
    }
    imgd_st_writer *wr    = NULL;
    const char     *mk[1] = {meta_k}, *mv[1] = {meta_v};
    if (imgd_st_writer_open(path, e, (size_t)n, mk, mv, meta_k ? 1 : 0, &wr) != IMGD_OK) return -1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < rows * 4; j++) {
            float v = seed + (float)(i * 1000 + j);
            if (imgd_st_writer_write(wr, &v, 4) != IMGD_OK) return -1;
        }
    return imgd_st_writer_close(wr) == IMGD_OK ? 0 : -1;
}

static inline void fx_mkdir(const char *path) {
    mkdir(path, 0755);
}

static inline int fx_write_text(const char *dir, const char *file, const char *text) {
    char p[1024];
    imgd_fmt(p, sizeof p, "%s/%s", dir, file);
    return tu_write_file(p, text, strlen(text));
}

/* rm -rf for test folders (only under the test tmp dir). */
static inline void fx_rmtree(const char *path) {
    char cmd[1200];
    if (strncmp(path, tu_tmpdir(), strlen(tu_tmpdir())) != 0) return;
    imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

#endif
