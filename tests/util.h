/* Helpers shared by tests: temp paths, whole-file writes, environment directories. */
#ifndef IMGD_TEST_UTIL_H
#define IMGD_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/text.h"

/* Directory for temporary files ($IMGD_TEST_TMP, else /tmp). */
static inline const char *tu_tmpdir(void) {
    const char *d = getenv("IMGD_TEST_TMP");
    return d && *d ? d : "/tmp";
}

/* Builds "<tmpdir>/<pid>-<name>" into out. */
static inline void tu_tmp_path(char *out, size_t cap, const char *name) {
    imgd_fmt(out, cap, "%s/%ld-%s", tu_tmpdir(), (long)getpid(), name);
}

static inline int tu_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* Monotonic seconds, for timings printed by tests. */
static inline double tu_now_s(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The shared reference-data directory ($IMGD_SHARED_DIR), or NULL when absent. */
static inline const char *tu_shared_dir(void) {
    const char *d = getenv("IMGD_SHARED_DIR");
    if (!d || !*d) d = "../shared";
    char probe[4096];
    imgd_fmt(probe, sizeof probe, "%s/conformance/README.md", d);
    return access(probe, R_OK) == 0 ? d : NULL;
}

#endif
