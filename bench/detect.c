/* detect bench: time to detect every model of the generated detection corpus (118+ real
 * layouts with real shapes; the data areas are sparse holes, so the files are as large as
 * the downloads they imitate) against opening the same files without detecting, measured
 * alternately in one run. Detection must cost milliseconds however large the file: it reads
 * headers only. Prints the whole-corpus times, the ratio, the slowest case and the bytes of
 * model covered per millisecond. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/text.h"
#include "bench.h"
#include "detect/corpus_gen.h"
#include "imgd.h"

typedef struct opts {
    const char *dir;
    int         repeat;
} opts;

static int parse(int argc, char **argv, opts *o) {
    o->dir    = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    o->repeat = 5;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            o->dir = argv[++i];
        } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            o->repeat = (int)strtol(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "imgd-bench detect: unknown option %s (see imgd-bench)\n", argv[i]);
            return -1;
        }
    }
    if (o->repeat < 1) {
        fprintf(stderr, "imgd-bench detect: --repeat must be at least 1\n");
        return -1;
    }
    return 0;
}

/* Apparent size of a file, or the sum over a folder's weight files (one level of
 * component folders deep is enough for diffusers layouts). */
static uint64_t apparent_bytes(const char *path) {
    char cmd[1400];
    if (!imgd_fmt(cmd, sizeof cmd, "du -sb --apparent-size '%s' 2>/dev/null", path)) return 0;
    FILE *p = popen(cmd, "r");
    if (!p) return 0;
    unsigned long long n = 0;
    if (fscanf(p, "%llu", &n) != 1) n = 0;
    (void)pclose(p); /* size is informative only */
    return n;
}

/* One pass over the corpus: open every target (and detect when asked). Returns the total
 * ms, or a negative value when a case fails; *slow_ms / *slow_i track the slowest case. */
static double pass(char (*targets)[1400], size_t n, bool detect, double *slow_ms, size_t *slow_i) {
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        imgd_weights    *w  = NULL;
        imgd_model_info *mi = NULL;
        double           t0 = bench_now();
        imgd_status      st = imgd_weights_open(targets[i], NULL, &w);
        if (st == IMGD_OK && detect) st = imgd_model_detect(w, &mi);
        double dt = (bench_now() - t0) * 1e3;
        imgd_model_info_free(mi);
        imgd_weights_free(w);
        if (st != IMGD_OK) {
            fprintf(stderr, "imgd-bench detect: %s: %s\n", targets[i], imgd_last_error());
            return -1;
        }
        total += dt;
        if (slow_ms && dt > *slow_ms) {
            *slow_ms = dt;
            *slow_i  = i;
        }
    }
    return total;
}

int bench_detect(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o) != 0) return 2;
    imgd_log_level_set(IMGD_LOG_WARN); /* variant/component notes would swamp the output */
    size_t n = cg_case_count();
    char   root[1024];
    if (!imgd_fmt(root, sizeof root, "%s/imgd-bench-detect-%ld", o.dir, (long)getpid())) return 1;
    if (mkdir(root, 0755) != 0) {
        fprintf(stderr, "imgd-bench detect: cannot create %s (give --dir DIR)\n", root);
        return 1;
    }
    char(*targets)[1400] = imgd_calloc(n, sizeof *targets);
    int      rc          = targets ? 0 : 1;
    uint64_t bytes       = 0;
    double   t_write     = bench_now();
    for (size_t i = 0; i < n && rc == 0; i++) {
        const cg_case *c = cg_case_at(i);
        char           dir[1200];
        if (!imgd_fmt(dir, sizeof dir, "%s/%s", root, c->name) || mkdir(dir, 0755) != 0 ||
            c->build(dir, targets[i], sizeof targets[i]) != 0) {
            fprintf(stderr, "imgd-bench detect: could not write case %s under %s\n", c->name, root);
            rc = 1;
        }
    }
    t_write = (bench_now() - t_write) * 1e3;
    if (rc == 0) bytes = apparent_bytes(root);
    double open_ms = 1e30, detect_ms = 1e30, slow_ms = 0;
    size_t slow_i = 0;
    for (int r = 0; r < o.repeat && rc == 0; r++) {
        double a = pass(targets, n, false, NULL, NULL);
        double b = pass(targets, n, true, &slow_ms, &slow_i);
        if (a < 0 || b < 0) {
            rc = 1;
            break;
        }
        if (a < open_ms) open_ms = a;
        if (b < detect_ms) detect_ms = b;
    }
    if (rc == 0) {
        printf("# %zu models, %.1f GB of weights (sparse), written in %.0f ms; best of %d\n", n,
               (double)bytes / 1e9, t_write, o.repeat);
        bench_emit("detect", "open_ms_corpus", open_ms, "ms", NULL, 0);
        bench_emit("detect", "open_detect_ms_corpus", detect_ms, "ms", "open_ms_corpus",
                   detect_ms / open_ms);
        bench_emit("detect", "detect_ms_per_model", detect_ms / (double)n, "ms", NULL, 0);
        bench_emit("detect", "slowest_case_ms", slow_ms, "ms", NULL, 0);
        printf("# slowest: %s\n", cg_case_at(slow_i)->name);
        bench_emit("detect", "model_gb_per_ms", (double)bytes / 1e9 / detect_ms, "GB/ms", NULL, 0);
    }
    imgd_free(targets);
    char cmd[1200];
    if (imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", root) && system(cmd) != 0)
        fprintf(stderr, "imgd-bench detect: could not remove %s\n", root);
    return rc;
}
