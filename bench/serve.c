/* imgd-bench serve: the worker under load. Starts a server in-process (imgd_server_start,
 * port 0) with the tiny sd15-narrow model and drives POST /v1/generate from client threads
 * over plain sockets: sustained requests/s and p50/p99 latency at concurrency 1, 16 and 64,
 * then images/s with batching (batch_max 4, batch_wait_ms 50) vs without (batch_max 1). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "bench.h"
#include "imgd.h"

#define LAT_MAX 200000

typedef struct serve_opts {
    const char *shared;
    double      seconds; /* per measurement */
    int32_t     steps, size;
    uint32_t    threads;
} serve_opts;

typedef struct client {
    uint16_t port;
    double   t_end;
    char    *req;
    size_t   req_len;
    double  *lat;
    size_t   n_ok, n_err, n_lat;
} client;

/* ---- one HTTP request over a fresh connection ------------------------------------------- */

static int http_once(uint16_t port, const char *req, size_t len) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family      = AF_INET;
    sa.sin_port        = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int status         = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        size_t off = 0;
        while (off < len) {
            ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
            if (n <= 0) break;
            off += (size_t)n;
        }
        char    buf[16384];
        char    head[16] = "";
        size_t  got      = 0;
        ssize_t n;
        while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
            if (got < sizeof head - 1) {
                size_t k = sizeof head - 1 - got < (size_t)n ? sizeof head - 1 - got : (size_t)n;
                memcpy(head + got, buf, k);
                head[got + k] = '\0';
            }
            got += (size_t)n;
        }
        if (off == len && strncmp(head, "HTTP/1.1 ", 9) == 0)
            status = (int)strtol(head + 9, NULL, 10);
    }
    (void)close(fd);
    return status;
}

static void *client_main(void *arg) {
    client *c = arg;
    while (bench_now() < c->t_end) {
        double t0 = bench_now();
        int    st = http_once(c->port, c->req, c->req_len);
        double dt = bench_now() - t0;
        if (st == 200) {
            c->n_ok++;
            if (c->n_lat < LAT_MAX) c->lat[c->n_lat++] = dt;
        } else {
            c->n_err++;
        }
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- a server and a load level ------------------------------------------------------------ */

static imgd_status server_start(const serve_opts *o, int32_t batch_max, int32_t wait_ms,
                                const char *state, imgd_server **out) {
    char dir[4096];
    (void)snprintf(dir, sizeof dir, "%s/conformance/sd15-narrow", o->shared);
    const char       *dirs[]   = {dir};
    const char       *models[] = {"diffusers"};
    imgd_serve_params p        = imgd_serve_params_default();
    p.model_dirs               = dirs;
    p.n_model_dirs             = 1;
    p.models                   = models;
    p.n_models                 = 1;
    p.state_dir                = state;
    p.batch_max                = batch_max;
    p.batch_wait_ms            = wait_ms;
    p.queue_max                = 100000;
    p.load.arch.te_heads       = 4; /* the narrow text encoder's heads are not detectable */
    p.load.threads             = o->threads;
    return imgd_server_start(&p, out);
}

typedef struct level_result {
    double rps, p50, p99;
    size_t ok, err;
} level_result;

static int run_level(const serve_opts *o, uint16_t port, int conc, double seconds,
                     level_result *r) {
    char   body[256], *req = NULL;
    int    bl     = snprintf(body, sizeof body,
                             "{\"prompt\":\"a cat\",\"steps\":%d,\"width\":%d,\"height\":%d,\"seed\":1}",
                             (int)o->steps, (int)o->size, (int)o->size);
    size_t cap    = 512 + (size_t)bl;
    req           = imgd_malloc(cap);
    client    *cs = imgd_calloc((size_t)conc, sizeof *cs);
    pthread_t *th = imgd_calloc((size_t)conc, sizeof *th);
    if (!req || !cs || !th) {
        imgd_free(req);
        imgd_free(cs);
        imgd_free(th);
        return -1;
    }
    int    rl = snprintf(req, cap,
                         "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Type: "
                            "application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                         (unsigned)port, bl, body);
    double t0 = bench_now(), t_end = t0 + seconds;
    int    started = 0, rc = 0;
    for (int i = 0; i < conc; i++) {
        cs[i]     = (client){.port = port, .t_end = t_end, .req = req, .req_len = (size_t)rl};
        cs[i].lat = imgd_malloc(LAT_MAX * sizeof(double));
        if (!cs[i].lat || pthread_create(&th[i], NULL, client_main, &cs[i]) != 0) {
            rc = -1;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) (void)pthread_join(th[i], NULL);
    double wall = bench_now() - t0; /* includes the requests in flight at t_end */
    size_t n    = 0;
    for (int i = 0; i < started; i++) n += cs[i].n_lat;
    double *all = imgd_malloc((n ? n : 1) * sizeof *all);
    memset(r, 0, sizeof *r);
    if (all) {
        size_t k = 0;
        for (int i = 0; i < started; i++) {
            memcpy(all + k, cs[i].lat, cs[i].n_lat * sizeof *all);
            k += cs[i].n_lat;
            r->ok += cs[i].n_ok;
            r->err += cs[i].n_err;
        }
        qsort(all, n, sizeof *all, cmp_double);
        r->rps = (double)r->ok / wall;
        r->p50 = n ? all[(n - 1) / 2] : 0;
        r->p99 = n ? all[(size_t)((double)(n - 1) * 0.99)] : 0;
    } else {
        rc = -1;
    }
    imgd_free(all);
    for (int i = 0; i < conc; i++) imgd_free(cs[i].lat);
    imgd_free(cs);
    imgd_free(th);
    imgd_free(req);
    return rc;
}

/* ---- the bench ---------------------------------------------------------------------------- */

static int parse(int argc, char **argv, serve_opts *o) {
    const char *sh = getenv("IMGD_SHARED_DIR");
    o->shared      = sh && *sh ? sh : "../shared";
    o->seconds     = 8;
    o->steps       = 2;
    o->size        = 64;
    o->threads     = 0;
    for (int i = 0; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "imgd-bench serve: %s needs a value\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--dir") == 0)
            o->shared = v;
        else if (strcmp(argv[i], "--seconds") == 0)
            o->seconds = strtod(v, NULL);
        else if (strcmp(argv[i], "--steps") == 0)
            o->steps = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(argv[i], "--size") == 0)
            o->size = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(argv[i], "--threads") == 0)
            o->threads = (uint32_t)strtol(v, NULL, 10);
        else {
            fprintf(stderr, "imgd-bench serve: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (o->seconds <= 0 || o->steps < 1 || o->size < 64) {
        fprintf(stderr, "imgd-bench serve: bad --seconds, --steps or --size\n");
        return 2;
    }
    return 0;
}

/* One server: warm it up, then run each concurrency level; emits when metric_fmt is set. */
static int bench_server(const serve_opts *o, int32_t batch_max, int32_t wait_ms, const int *levels,
                        size_t n_levels, const char *tag, level_result *out) {
    char state[] = "/tmp/imgd-bench-serve.XXXXXX";
    if (!mkdtemp(state)) {
        fprintf(stderr, "imgd-bench serve: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    imgd_server *srv = NULL;
    if (server_start(o, batch_max, wait_ms, state, &srv) != IMGD_OK) {
        fprintf(stderr, "imgd-bench serve: %s\n", imgd_last_error());
        return 1;
    }
    uint16_t     port = imgd_server_port(srv);
    level_result warm;
    int          rc = run_level(o, port, 2, 1.0, &warm); /* first-run planning, caches */
    for (size_t i = 0; rc == 0 && i < n_levels; i++) {
        rc = run_level(o, port, levels[i], o->seconds, &out[i]);
        if (rc != 0 || !tag) continue;
        char m[64];
        (void)snprintf(m, sizeof m, "rps_c%d", levels[i]);
        bench_emit("serve", m, out[i].rps, "req/s", NULL, 0);
        (void)snprintf(m, sizeof m, "p50_c%d", levels[i]);
        bench_emit("serve", m, out[i].p50 * 1e3, "ms", NULL, 0);
        (void)snprintf(m, sizeof m, "p99_c%d", levels[i]);
        bench_emit("serve", m, out[i].p99 * 1e3, "ms", NULL, 0);
        if (out[i].err)
            fprintf(stderr, "imgd-bench serve: %s c%d: %zu failed requests\n", tag, levels[i],
                    out[i].err);
    }
    imgd_server_stop(srv, 5.0);
    char cmd[128];
    (void)snprintf(cmd, sizeof cmd, "rm -rf '%s'", state);
    if (system(cmd) != 0) fprintf(stderr, "imgd-bench serve: could not remove %s\n", state);
    return rc ? 1 : 0;
}

int bench_serve(int argc, char **argv) {
    serve_opts o;
    int        rc = parse(argc, argv, &o);
    if (rc) return rc;
    char        probe[4096];
    struct stat st;
    (void)snprintf(probe, sizeof probe, "%s/conformance/sd15-narrow/diffusers", o.shared);
    if (stat(probe, &st) != 0) {
        fprintf(stderr, "imgd-bench serve: no model at %s (set IMGD_SHARED_DIR or --dir)\n", probe);
        return 1;
    }
    (void)signal(SIGPIPE, SIG_IGN);
    imgd_log_level_set(IMGD_LOG_WARN);
    static const int levels[] = {1, 16, 64};
    level_result     r[3], unb[1];
    rc                     = bench_server(&o, 4, 50, levels, 3, "batched", r);
    static const int c16[] = {16};
    if (rc == 0) rc = bench_server(&o, 1, 0, c16, 1, NULL, unb);
    if (rc != 0) return rc;
    /* one image per request: images/s = requests/s */
    bench_emit("serve", "images_per_s_batch1_c16", unb[0].rps, "img/s", NULL, 0);
    bench_emit("serve", "images_per_s_batch4_c16", r[1].rps, "img/s", "batch1",
               unb[0].rps > 0 ? r[1].rps / unb[0].rps : 0);
    return 0;
}
