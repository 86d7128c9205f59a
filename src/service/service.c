/* The worker's life: configuration, start (state, models, scheduler, HTTP) and a graceful
 * stop. */
/* realpath() is XSI. */
#define _XOPEN_SOURCE 700 // NOLINT(bugprone-reserved-identifier): the feature-test macro

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "base/text.h"
#include "service/service_impl.h"

#define CONFIG_SIZE_MAX ((size_t)1 << 20)

imgd_serve_params imgd_serve_params_default(void) {
    imgd_serve_params p;
    memset(&p, 0, sizeof p);
    p.load = imgd_load_params_default();
    return p;
}

uint16_t imgd_server_port(const imgd_server *s) {
    return s ? imgd_http_port(s->http) : 0;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- config ------------------------------------------------------------------------------- */

static imgd_status read_config(const char *path, cJSON **out) {
    FILE *f = fopen(path, "rb");
    if (!f) return imgd_fail(IMGD_E_IO, "--config %s: %s", path, strerror(errno));
    imgd_buf b;
    imgd_buf_init(&b, CONFIG_SIZE_MAX);
    char        chunk[4096];
    size_t      n;
    imgd_status st = IMGD_OK;
    while (st == IMGD_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        st = imgd_buf_append(&b, chunk, n);
    (void)fclose(f);
    if (st == IMGD_OK)
        st = imgd_json_parse(path, b.data ? b.data : "", b.len, CONFIG_SIZE_MAX, 32, out);
    imgd_buf_free(&b);
    if (st == IMGD_OK && !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return imgd_fail(IMGD_E_FORMAT, "--config %s: the top level must be a JSON object", path);
    }
    return st;
}

/* Reads an optional non-negative integer member of section into *dst when *dst is 0. */
static imgd_status cfg_int(const cJSON *section, const char *sec_name, const char *key, int64_t lo,
                           int64_t hi, int64_t *dst) {
    const cJSON *v = section ? cJSON_GetObjectItemCaseSensitive(section, key) : NULL;
    if (!v) return IMGD_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return imgd_fail(IMGD_E_FORMAT, "config %s.%s: expected an integer in %lld..%lld", sec_name,
                         key, (long long)lo, (long long)hi);
    if (*dst == 0) *dst = (int64_t)v->valuedouble;
    return IMGD_OK;
}

static imgd_status apply_config(imgd_server *s) {
    static const char *const k_known[] = {"http", "queue", "auth", "models"};
    for (const cJSON *it = s->config ? s->config->child : NULL; it; it = it->next) {
        bool ok = false;
        for (size_t i = 0; i < sizeof k_known / sizeof k_known[0]; i++)
            ok = ok || strcmp(it->string, k_known[i]) == 0;
        if (!ok)
            return imgd_fail(IMGD_E_FORMAT,
                             "config: unknown section '%s' (expected http, queue, auth, models)",
                             it->string);
    }
    const cJSON *http  = s->config ? cJSON_GetObjectItemCaseSensitive(s->config, "http") : NULL;
    const cJSON *queue = s->config ? cJSON_GetObjectItemCaseSensitive(s->config, "queue") : NULL;
    int64_t      body = (int64_t)s->p.body_max, conn = s->p.conn_max, bmax = s->p.batch_max,
            bwait = s->p.batch_wait_ms, qmax = s->p.queue_max;
    imgd_status st = cfg_int(http, "http", "body_max", 1024, (int64_t)1 << 32, &body);
    if (st == IMGD_OK) st = cfg_int(http, "http", "conn_max", 1, 65536, &conn);
    if (st == IMGD_OK) st = cfg_int(queue, "queue", "batch_max", 1, SVC_BATCH_MAX, &bmax);
    if (st == IMGD_OK) st = cfg_int(queue, "queue", "batch_wait_ms", 0, 60000, &bwait);
    if (st == IMGD_OK) st = cfg_int(queue, "queue", "queue_max", 1, 1000000, &qmax);
    if (st != IMGD_OK) return st;
    s->p.body_max      = body ? (size_t)body : (size_t)32 << 20;
    s->p.conn_max      = conn ? (uint32_t)conn : 256;
    s->p.batch_max     = bmax ? (int32_t)bmax : 4;
    s->p.batch_wait_ms = (int32_t)bwait;
    s->p.queue_max     = qmax ? (int32_t)qmax : 1000;
    if (s->p.batch_max > SVC_BATCH_MAX)
        return imgd_fail(IMGD_E_INVALID_ARG, "batch_max %d: at most %d", (int)s->p.batch_max,
                         SVC_BATCH_MAX);
    return IMGD_OK;
}

/* ---- start -------------------------------------------------------------------------------- */

static void on_done(void *app, const imgd_http_req *req, const char *route, int32_t status,
                    double seconds) {
    imgd_server *s = app;
    imgd_svc_metrics_request(&s->metrics, route, status, seconds);
    if (status >= 400) {
        char code[16];
        (void)imgd_fmt(code, sizeof code, "http_%d", (int)status);
        imgd_svc_metrics_error(&s->metrics, code);
    }
    IMGD_LOG(status >= 500 ? IMGD_LOG_WARN : IMGD_LOG_INFO, "http", "request",
             "%s %s -> %d in %.3f ms (route %s, peer %s)", req->method, req->path, (int)status,
             seconds * 1e3, route, req->peer ? req->peer : "");
}

static imgd_status add_dir(imgd_server *s, const char *dir) {
    char real[PATH_MAX];
    if (!realpath(dir, real)) return imgd_fail(IMGD_E_IO, "--models %s: %s", dir, strerror(errno));
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode))
        return imgd_fail(IMGD_E_INVALID_ARG, "--models %s: not a directory", dir);
    char **d = imgd_realloc(s->dirs, (s->n_dirs + 1) * sizeof *d);
    if (!d) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    s->dirs = d;
    if (!(s->dirs[s->n_dirs] = imgd_strdup(real))) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    s->n_dirs++;
    return IMGD_OK;
}

/* A --model given as a path (absolute, or relative to the current folder) becomes an id:
 * relative to the model dir holding it, or its parent folder becomes a model dir. */
imgd_status svc_model_arg_to_id(imgd_server *s, const char *arg, char *id, size_t cap) {
    char real[PATH_MAX];
    if (!realpath(arg, real)) return imgd_fmt(id, cap, "%s", arg) ? IMGD_OK : IMGD_E_INVALID_ARG;
    for (size_t d = 0; d < s->n_dirs; d++) {
        size_t dl = strlen(s->dirs[d]);
        if (strncmp(real, s->dirs[d], dl) == 0 && real[dl] == '/')
            return imgd_fmt(id, cap, "%s", real + dl + 1) ? IMGD_OK : IMGD_E_INVALID_ARG;
    }
    char *slash = strrchr(real, '/');
    if (!slash || slash == real) return imgd_fail(IMGD_E_INVALID_ARG, "--model %s: bad path", arg);
    *slash         = '\0';
    imgd_status st = add_dir(s, real);
    if (st != IMGD_OK) return st;
    return imgd_fmt(id, cap, "%s", slash + 1) ? IMGD_OK : IMGD_E_INVALID_ARG;
}

static imgd_status start_inner(imgd_server *s, const imgd_serve_params *p) {
    imgd_status st = IMGD_OK;
    for (size_t i = 0; st == IMGD_OK && i < p->n_model_dirs; i++) st = add_dir(s, p->model_dirs[i]);
    if (st != IMGD_OK) return st;
    if (p->config_path) {
        st = read_config(p->config_path, &s->config);
        if (st == IMGD_OK) st = apply_config(s);
    } else {
        st = apply_config(s);
    }
    if (st != IMGD_OK) return st;
    s->state_dir = imgd_strdup(p->state_dir ? p->state_dir : "imgd-state");
    if (!s->state_dir) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    st = imgd_jobstore_open(s->state_dir, NULL, &s->js);
    if (st != IMGD_OK) return st;
    const cJSON *auth = s->config ? cJSON_GetObjectItemCaseSensitive(s->config, "auth") : NULL;
    if (auth) {
        st = imgd_auth_new(auth, s->js, &s->auth);
        if (st != IMGD_OK) return imgd_fail_prefix(st, "config auth");
    } else {
        IMGD_LOG(IMGD_LOG_WARN, "service", "open_access",
                 "no \"auth\" section in the config: anyone who can reach the port can generate");
    }
    char ids[65][SVC_ID_MAX];
    if (p->n_models > 64) return imgd_fail(IMGD_E_INVALID_ARG, "at most 64 --model at start");
    size_t n_ids = p->n_models;
    for (size_t i = 0; st == IMGD_OK && i < p->n_models; i++)
        st = svc_model_arg_to_id(s, p->models[i], ids[i], sizeof ids[i]);
    /* --model-id: resolved (pulled, base found) before the registry opens, so it scans only
     * the model's own folder entry */
    if (st == IMGD_OK && p->model_id) st = svc_unit_setup(s, p, ids[n_ids++], SVC_ID_MAX);
    if (st == IMGD_OK && s->n_dirs == 0)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "no model directory: give --models DIR, --model FILE or --model-id ID");
    if (st == IMGD_OK) st = svc_models_open(s);
    if (st == IMGD_OK && n_ids) {
        s->preload = imgd_calloc(n_ids, sizeof *s->preload);
        if (!s->preload) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; st == IMGD_OK && i < n_ids; i++) {
        bool dup = false;
        for (size_t j = 0; j < s->n_preload; j++) dup = dup || strcmp(s->preload[j], ids[i]) == 0;
        if (dup) continue;
        st = svc_model_load(s, ids[i]);
        if (st != IMGD_OK) st = imgd_fail_prefix(st, "--preload %s", ids[i]);
        if (st != IMGD_OK) break;
        s->preload[s->n_preload] = imgd_strdup(ids[i]);
        if (!s->preload[s->n_preload++]) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    if (st == IMGD_OK && p->warmup && s->n_preload) st = svc_unit_warmup(s, s->preload[0]);
    if (st != IMGD_OK) return st;
    st = svc_sched_start(s);
    if (st != IMGD_OK) return st;
    imgd_http_params hp = {
        .host      = p->host,
        .port      = p->port,
        .body_max  = s->p.body_max,
        .conn_max  = s->p.conn_max,
        .timeout_s = 300,
        .handler   = svc_route,
        .done      = on_done,
        .app       = s,
    };
    return imgd_http_start(&hp, &s->http);
}

static void server_free(imgd_server *s) {
    svc_sched_stop(s);
    imgd_http_free(s->http);
    imgd_auth_free(s->auth);
    imgd_jobstore_close(s->js);
    svc_models_free(s);
    for (size_t i = 0; i < s->n_preload; i++) imgd_free(s->preload[i]);
    imgd_free(s->preload);
    for (size_t i = 0; i < s->n_dirs; i++) imgd_free(s->dirs[i]);
    imgd_free(s->dirs);
    imgd_free(s->state_dir);
    cJSON_Delete(s->config);
    imgd_svc_metrics_free(&s->metrics);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->engine_mu);
    pthread_cond_destroy(&s->cv_work);
    pthread_cond_destroy(&s->cv_event);
    imgd_free(s);
}

imgd_status imgd_server_start(const imgd_serve_params *p, imgd_server **out) {
    if (!p || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_server_start: NULL argument");
    imgd_server *s = imgd_calloc(1, sizeof *s);
    if (!s) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    s->p = *p;
    /* borrowed strings of p are used only during start; keep none of them */
    s->p.model_dirs   = NULL;
    s->p.models       = NULL;
    s->p.host         = NULL;
    s->p.state_dir    = NULL;
    s->p.config_path  = NULL;
    s->p.model_id     = NULL;
    s->p.download_dir = NULL;
    s->t_started      = mono_s();
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->engine_mu, NULL);
    pthread_cond_init(&s->cv_work, NULL);
    pthread_cond_init(&s->cv_event, NULL);
    imgd_svc_metrics_init(&s->metrics);
    imgd_status st = start_inner(s, p);
    if (st != IMGD_OK) {
        server_free(s);
        return st;
    }
    s->start_s = mono_s() - s->t_started;
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.start_to_ready_s = s->start_s;
    pthread_mutex_unlock(&s->metrics.mu);
    IMGD_LOG(IMGD_LOG_INFO, "service", "listening",
             "http://%s:%u ready in %.3f s (start_to_ready_s %.3f)",
             p->host ? p->host : "127.0.0.1", (unsigned)imgd_http_port(s->http), s->start_s,
             s->start_s);
    *out = s;
    return IMGD_OK;
}

void imgd_server_stop(imgd_server *s, double grace_s) {
    if (!s) return;
    IMGD_LOG(IMGD_LOG_INFO, "service", "stopping", "no new connections; finishing the running job");
    /* RunPod first: no new jobs; its running ones finish while the scheduler still runs */
    double end = mono_s() + grace_s;
    svc_runpod_stop(s, end);
    imgd_http_quiesce(s->http);
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
    /* Let the claimed batch (jobs clients already see running) finish within the grace period,
     * then cancel what still runs (it stays queued). */
    for (;;) {
        bool busy = false;
        pthread_mutex_lock(&s->mu);
        busy = s->batch_busy; /* covers the live slots: they are set inside the batch */
        pthread_mutex_unlock(&s->mu);
        if (!busy || mono_s() >= end) break;
        struct timespec ts = {0, 50 * 1000000L};
        (void)nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&s->mu);
    s->hard_stop = true;
    pthread_cond_broadcast(&s->cv_event);
    pthread_mutex_unlock(&s->mu);
    svc_sched_stop(s);
    server_free(s);
    IMGD_LOG(IMGD_LOG_INFO, "service", "stopped", "state kept for the next start");
}
