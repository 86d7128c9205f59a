/* imgd serve: the worker. Uses only the public header. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "imgd.h"

#define SERVE_LIST_MAX 64

static const char k_usage[] =
    "imgd serve --models DIR... [--preload ID...] [--host H] [--port P] [--state DIR]\n"
    "      [--memory-budget BYTES|NGiB|NMiB] [--disk-cache-max BYTES|NGiB|off]\n"
    "      [--config FILE] [--batch-max N] [--batch-wait-ms MS] [--queue-max N]\n"
    "      [--tokenizer DIR] [--precision f32|bf16|f16|auto] [--threads N]\n"
    "      [--backend cpu|ref|cuda] [--offload te|vae|te,vae]\n"
    "      [--grace S] [--model-id ID] [--download-dir DIR] [--warmup]\n"
    "      [--runpod] [--runpod-concurrency N]\n"
    "      (env MODEL_ID = --model-id; RUNPOD_* variables configure --runpod: README \"Deploy\")";

const char *imgd_cli_serve_usage(void) {
    return k_usage;
}

static bool parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end = NULL;
    errno     = 0;
    long x    = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || !end || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "imgd serve: %s '%s': expected an integer in %ld..%ld\n", flag, v ? v : "",
                lo, hi);
        return false;
    }
    *out = x;
    return true;
}

/* "123", "8GiB", "512MiB", "2G", "1.5GB" (powers of 1024 and 1000 both accepted). */
static bool parse_bytes(const char *flag, const char *v, uint64_t *out) {
    static const struct {
        const char *sfx;
        double      mul;
    } k_units[] = {{"", 1},
                   {"B", 1},
                   {"K", 1024.0},
                   {"KiB", 1024.0},
                   {"KB", 1e3},
                   {"M", 1048576.0},
                   {"MiB", 1048576.0},
                   {"MB", 1e6},
                   {"G", 1073741824.0},
                   {"GiB", 1073741824.0},
                   {"GB", 1e9},
                   {"T", 1099511627776.0},
                   {"TiB", 1099511627776.0},
                   {"TB", 1e12}};
    char *end   = NULL;
    errno       = 0;
    double x    = v ? strtod(v, &end) : -1;
    if (v && !errno && end != v && x >= 0) {
        for (size_t i = 0; i < sizeof k_units / sizeof k_units[0]; i++) {
            if (strcmp(end, k_units[i].sfx) != 0) continue;
            double b = x * k_units[i].mul;
            if (b >= 18446744073709551615.0) break;
            *out = (uint64_t)b;
            return true;
        }
    }
    fprintf(stderr, "imgd serve: %s '%s': expected bytes such as 8GiB, 512MiB or 1000000\n", flag,
            v ? v : "");
    return false;
}

typedef struct serve_opts {
    imgd_serve_params p;
    const char       *dirs[SERVE_LIST_MAX];
    const char       *models[SERVE_LIST_MAX];
    double            grace_s;
    bool              runpod;
    int32_t           runpod_conc;
} serve_opts;

/* Options that take a list: every following argument up to the next option. */
static int take_list(int argc, char **argv, int i, const char **dst, size_t *n, const char *flag) {
    int j = i + 1;
    for (; j < argc && argv[j][0] != '-'; j++) {
        if (*n == SERVE_LIST_MAX) {
            fprintf(stderr, "imgd serve: at most %d values for %s\n", SERVE_LIST_MAX, flag);
            return -1;
        }
        dst[(*n)++] = argv[j];
    }
    if (j == i + 1) {
        fprintf(stderr, "imgd serve: %s needs a value\n", flag);
        return -1;
    }
    return j - 1;
}

static int parse(int argc, char **argv, serve_opts *o) {
    o->p       = imgd_serve_params_default();
    o->grace_s = 30;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long        x = 0;
#define IS(s) (strcmp(a, (s)) == 0)
        if (IS("--models")) {
            if ((i = take_list(argc, argv, i, o->dirs, &o->p.n_model_dirs, a)) < 0) return 2;
            continue;
        }
        if (IS("--model") || IS("--preload")) {
            if ((i = take_list(argc, argv, i, o->models, &o->p.n_models, a)) < 0) return 2;
            continue;
        }
        if (IS("--warmup")) {
            o->p.warmup = true;
            continue;
        }
        if (IS("--runpod")) {
            o->runpod = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "imgd serve: %s: unknown option or missing value\nusage: %s\n", a,
                    k_usage);
            return 2;
        }
        if (IS("--host")) {
            o->p.host = v;
        } else if (IS("--port")) {
            if (!parse_long(a, v, 0, 65535, &x)) return 2;
            o->p.port = (uint16_t)x;
        } else if (IS("--state")) {
            o->p.state_dir = v;
        } else if (IS("--config")) {
            o->p.config_path = v;
        } else if (IS("--batch-max")) {
            if (!parse_long(a, v, 1, 16, &x)) return 2;
            o->p.batch_max = (int32_t)x;
        } else if (IS("--batch-wait-ms")) {
            if (!parse_long(a, v, 0, 60000, &x)) return 2;
            o->p.batch_wait_ms = (int32_t)x;
        } else if (IS("--queue-max")) {
            if (!parse_long(a, v, 1, 1000000, &x)) return 2;
            o->p.queue_max = (int32_t)x;
        } else if (IS("--tokenizer")) {
            o->p.load.tokenizer_dir = v;
        } else if (IS("--backend")) {
            o->p.load.backend = v;
        } else if (IS("--offload")) {
            if (!imgd_offload_parse(v, &o->p.load.offload)) {
                fprintf(stderr,
                        "imgd serve: --offload '%s': expected te, vae or te,vae (the parts to "
                        "run on the CPU when --backend is a GPU)\n",
                        v);
                return 2;
            }
        } else if (IS("--precision")) {
            if (!imgd_precision_parse(v, &o->p.load.precision)) {
                fprintf(stderr, "imgd serve: --precision '%s': expected f32, bf16, f16 or auto\n",
                        v);
                return 2;
            }
        } else if (IS("--threads")) {
            if (!parse_long(a, v, 0, 4096, &x)) return 2;
            o->p.load.threads = (uint32_t)x;
        } else if (IS("--memory-budget")) {
            if (!parse_bytes(a, v, &o->p.memory_budget)) return 2;
        } else if (IS("--disk-cache-max")) {
            if (strcmp(v, "off") == 0)
                o->p.disk_cache_max = UINT64_MAX;
            else if (!parse_bytes(a, v, &o->p.disk_cache_max))
                return 2;
        } else if (IS("--model-id")) {
            o->p.model_id = v;
        } else if (IS("--download-dir")) {
            o->p.download_dir = v;
        } else if (IS("--runpod-concurrency")) {
            if (!parse_long(a, v, 1, 16, &x)) return 2;
            o->runpod_conc = (int32_t)x;
        } else if (IS("--grace")) {
            if (!parse_long(a, v, 0, 86400, &x)) return 2;
            o->grace_s = (double)x;
        } else {
            fprintf(stderr, "imgd serve: unknown option '%s'\nusage: %s\n", a, k_usage);
            return 2;
        }
#undef IS
        i++;
    }
    if (!o->p.model_id) {
        const char *env = getenv("MODEL_ID");
        if (env && *env) o->p.model_id = env;
    }
    if (o->p.n_model_dirs == 0 && o->p.n_models == 0 && !o->p.model_id) {
        fprintf(stderr,
                "imgd serve: give --models DIR (folders of models to serve), --model FILE or "
                "--model-id ID (or set MODEL_ID)\nusage: %s\n",
                k_usage);
        return 2;
    }
    o->p.model_dirs = o->dirs;
    o->p.models     = o->models;
    return 0;
}

/* SIGTERM/SIGINT: a handler writes the signal to a pipe the main thread waits on. Blocking
 * the signals and sigwait() was not enough: libraries start threads before main (OpenBLAS's
 * pool), those threads have the signals unblocked, and the kernel may deliver SIGTERM to one
 * of them, whose default action kills the process without the graceful stop. A handler runs
 * in whichever thread gets the signal. */
static int g_stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig) {
    unsigned char c = (unsigned char)sig;
    ssize_t       n = write(g_stop_pipe[1], &c, 1); /* async-signal-safe */
    (void)n;
}

static int install_stop_handlers(void) {
    if (pipe(g_stop_pipe) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    (void)sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) return -1;
    (void)signal(SIGPIPE, SIG_IGN); /* a closed client must not kill us */
    return 0;
}

/* Waits for SIGTERM or SIGINT; returns it. */
static int wait_stop_signal(void) {
    unsigned char c = 0;
    for (;;) {
        ssize_t n = read(g_stop_pipe[0], &c, 1);
        if (n == 1) return c;
        if (n < 0 && errno == EINTR) continue;
        return SIGTERM; /* the pipe failed: stop as if asked */
    }
}

int imgd_cli_serve(int argc, char **argv) {
    serve_opts o;
    memset(&o, 0, sizeof o);
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    if (install_stop_handlers() != 0) {
        fprintf(stderr, "imgd serve: cannot install the SIGTERM/SIGINT handlers: %s\n",
                strerror(errno));
        return 1;
    }
    imgd_server *srv = NULL;
    imgd_status  st  = imgd_server_start(&o.p, &srv);
    if (st != IMGD_OK) {
        fprintf(stderr, "imgd serve: %s\n", imgd_last_error());
        return 1;
    }
    if (o.runpod) {
        imgd_runpod_params rp = imgd_runpod_params_default();
        rp.concurrency        = o.runpod_conc;
        st                    = imgd_server_runpod_start(srv, &rp);
        if (st != IMGD_OK) {
            fprintf(stderr, "imgd serve: %s\n", imgd_last_error());
            imgd_server_stop(srv, 0);
            return 1;
        }
    }
    /* scripts read the port from the end of this line: keep its shape */
    fprintf(stderr, "imgd serve: ready in %.3f s\n", imgd_server_start_seconds(srv));
    printf("imgd serve: listening on http://%s:%u\n", o.p.host ? o.p.host : "127.0.0.1",
           (unsigned)imgd_server_port(srv));
    (void)fflush(stdout);
    int sig = wait_stop_signal();
    fprintf(stderr, "imgd serve: %s: stopping (grace %.0f s)\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", o.grace_s);
    imgd_server_stop(srv, o.grace_s);
    return 0;
}
