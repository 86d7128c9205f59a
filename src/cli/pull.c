/* imgd pull: download a model from Hugging Face or CivitAI. Uses only the public header. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "imgd.h"

static const char k_usage[] =
    "imgd pull SOURCE [--dir DIR] [--variant fp16] [--parallel N] [--retries N] [--json]";

const char *imgd_cli_pull_usage(void) {
    return k_usage;
}

typedef struct pull_progress {
    double last; /* monotonic seconds of the last line */
} pull_progress;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One line, rewritten at most 10 times a second (called from download threads, serialised). */
static bool on_progress(uint64_t done, uint64_t total, void *user) {
    pull_progress *p = user;
    double         t = now_s();
    if (t - p->last < 0.1 && done < total) return true;
    p->last = t;
    if (total) {
        fprintf(stderr, "\rpulling %5.1f%% (%.1f / %.1f MB)  ",
                (double)done * 100.0 / (double)total, (double)done / 1e6, (double)total / 1e6);
    } else {
        fprintf(stderr, "\rpulling %.1f MB  ", (double)done / 1e6);
    }
    return true;
}

static bool parse_int(const char *flag, const char *v, long lo, long hi, int32_t *out) {
    char *end = NULL;
    errno     = 0;
    long x    = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "imgd pull: %s expects an integer in %ld..%ld\n", flag, lo, hi);
        return false;
    }
    *out = (int32_t)x;
    return true;
}

int imgd_cli_pull(int argc, char **argv) {
    imgd_pull_params p    = imgd_pull_params_default();
    bool             json = false;
    p.dest_dir            = "models";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--dir") == 0 && v) {
            p.dest_dir = argv[++i];
        } else if (strcmp(a, "--variant") == 0 && v) {
            p.variant = argv[++i];
        } else if (strcmp(a, "--parallel") == 0) {
            if (!parse_int(a, v, 1, 16, &p.parallel)) return 2;
            i++;
        } else if (strcmp(a, "--retries") == 0) {
            if (!parse_int(a, v, 0, 100, &p.retries)) return 2;
            i++;
        } else if (a[0] == '-' || p.source) {
            fprintf(stderr, "imgd pull: unexpected '%s'\nusage: %s\n", a, k_usage);
            return 2;
        } else {
            p.source = a;
        }
    }
    if (!p.source) {
        fprintf(stderr, "imgd pull: missing SOURCE\nusage: %s\n", k_usage);
        return 2;
    }
    pull_progress prog = {0};
    bool          tty  = isatty(STDERR_FILENO);
    if (tty) {
        p.progress = on_progress;
        p.user     = &prog;
    }
    char       *report = NULL;
    imgd_status st     = imgd_pull(&p, &report);
    if (tty) fputc('\n', stderr);
    if (st != IMGD_OK) {
        fprintf(stderr, "imgd pull: %s (%s)\n", imgd_last_error(), imgd_status_name(st));
        return 1;
    }
    if (json) {
        printf("%s\n", report);
    } else {
        printf("pulled %s\n", p.source);
    }
    imgd_string_free(report);
    return 0;
}
