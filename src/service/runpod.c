/* RunPod serverless, natively (issue 11): the worker side of RunPod's job protocol, as the
 * platform's own worker library (runpod-python: serverless/modules rp_job, rp_http, rp_ping,
 * rp_progress) speaks it, with libcurl:
 *
 *   take a job   GET  $RUNPOD_WEBHOOK_GET_JOB ("$ID" -> the pod id) + "job_in_progress=0|1";
 *                200 {"id", "input"} is a job; 204 (and 400, FlashBoot) mean none now
 *   result       POST $RUNPOD_WEBHOOK_POST_OUTPUT ("$RUNPOD_POD_ID" -> pod id, "$ID" -> job id)
 *                + "isStream=false", body {"output": ...} or {"error": "..."}; retried on
 *                transport errors, 429 and 5xx (3 tries, as the library)
 *   progress     the same URL with {"status": "IN_PROGRESS", "output": {...}} (rp_progress)
 *   heartbeat    GET $RUNPOD_WEBHOOK_PING ("$RUNPOD_POD_ID" -> pod id) + "job_id=ID,ID&
 *                runpod_version=...", every $RUNPOD_PING_INTERVAL ms (default 10000)
 *   auth         "Authorization: $RUNPOD_AI_API_KEY" on every request (the raw key)
 *
 * Each of `concurrency` threads takes one job at a time, validates its input with the
 * model's schema (a malformed job gets an error output, never a crash), runs it through the
 * worker's own queue (POST /v1/generate's path: same schema, same scheduler and batching)
 * and posts the result. A 404/410 answer to a progress or result post means the platform no
 * longer has the job (cancelled): the job is cancelled here and nothing more is posted. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/text.h"
#include "service/service_impl.h"

#define RP_THREADS_MAX 16
#define RP_BODY_MAX    ((size_t)64 << 20)
#define RP_URL_MAX     4096

typedef struct rp_slot {
    char job[256];  /* RunPod job id, "" when idle */
    char local[40]; /* the worker's job id */
} rp_slot;

struct svc_runpod {
    imgd_server    *s;
    char            get_url[RP_URL_MAX];
    char            out_tmpl[RP_URL_MAX]; /* "$ID" still to replace */
    char            ping_url[RP_URL_MAX];
    char            auth[1024]; /* "Authorization: KEY" or "" */
    char            pod[128];
    int32_t         n;
    int32_t         ping_ms;
    long            timeout_ms;
    pthread_t       thr[RP_THREADS_MAX], ping_thr;
    int32_t         n_started;
    bool            ping_started;
    pthread_mutex_t mu; /* guards the fields below */
    pthread_cond_t  cv;
    bool            stopping; /* take no new job */
    bool            cut;      /* the grace period is over: cancel what still runs */
    bool            done;     /* the heartbeat may stop */
    rp_slot         slots[RP_THREADS_MAX];
};

/* ---- small helpers ------------------------------------------------------------------------ */

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool rp_flag(svc_runpod *rp, const bool *flag) {
    pthread_mutex_lock(&rp->mu);
    bool v = *flag;
    pthread_mutex_unlock(&rp->mu);
    return v;
}

/* Sleeps up to s seconds; returns early when *flag becomes true. */
static void rp_sleep(svc_runpod *rp, double s, const bool *flag) {
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    double t    = (double)end.tv_sec + (double)end.tv_nsec * 1e-9 + s;
    end.tv_sec  = (time_t)t;
    end.tv_nsec = (long)((t - (double)end.tv_sec) * 1e9);
    pthread_mutex_lock(&rp->mu);
    int rc = 0;
    while (!*flag && rc == 0) rc = pthread_cond_timedwait(&rp->cv, &rp->mu, &end);
    pthread_mutex_unlock(&rp->mu);
}

/* Copies tmpl to out with every `key` replaced by val. False when it does not fit. */
static bool replace_all(const char *tmpl, const char *key, const char *val, char *out, size_t cap) {
    size_t kl = strlen(key), vl = strlen(val), n = 0;
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, key, kl) == 0) {
            if (n + vl >= cap) return false;
            memcpy(out + n, val, vl);
            n += vl;
            p += kl;
        } else {
            if (n + 1 >= cap) return false;
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return true;
}

static bool add_query(char *url, size_t cap, const char *kv) {
    size_t l = strlen(url);
    return imgd_fmt(url + l, cap - l, "%s%s", strchr(url, '?') ? "&" : "?", kv);
}

/* ---- HTTP ------------------------------------------------------------------------------- */

typedef struct rp_call {
    svc_runpod *rp;
    imgd_buf    body;
    const bool *abort_flag; /* the transfer gives up when this becomes true; NULL = never */
} rp_call;

static size_t on_body(char *buf, size_t size, size_t n, void *user) {
    rp_call *c = user;
    return imgd_buf_append(&c->body, buf, size * n) == IMGD_OK ? size * n : 0;
}

static int on_progress(void *user, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    rp_call *call = user;
    return call->abort_flag && rp_flag(call->rp, call->abort_flag) ? 1 : 0;
}

/* One request; returns the HTTP status, or 0 after a transport error (*cc says which). */
static long rp_http(svc_runpod *rp, const char *url, const char *post, const bool *abort_flag,
                    imgd_buf *out, CURLcode *cc) {
    CURL *c = curl_easy_init();
    if (!c) {
        *cc = CURLE_OUT_OF_MEMORY;
        return 0;
    }
    rp_call call = {rp, {0}, abort_flag};
    imgd_buf_init(&call.body, RP_BODY_MAX);
    struct curl_slist *hdr = NULL;
    if (rp->auth[0]) hdr = curl_slist_append(hdr, rp->auth);
    /* the library posts its JSON with this content type and a charset header */
    if (post) hdr = curl_slist_append(hdr, "Content-Type: application/x-www-form-urlencoded");
    if (post) hdr = curl_slist_append(hdr, "charset: utf-8");
    (void)curl_easy_setopt(c, CURLOPT_URL, url);
    (void)curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    (void)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, rp->timeout_ms);
    (void)curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                           rp->timeout_ms < 10000 ? rp->timeout_ms : 10000L);
    (void)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    (void)curl_easy_setopt(c, CURLOPT_WRITEDATA, &call);
    (void)curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    (void)curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    (void)curl_easy_setopt(c, CURLOPT_XFERINFODATA, &call);
    (void)curl_easy_setopt(c, CURLOPT_USERAGENT, "imgd-runpod");
    if (post) {
        (void)curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
        (void)curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(post));
    }
    *cc       = curl_easy_perform(c);
    long code = 0;
    if (*cc == CURLE_OK) (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    if (out && *cc == CURLE_OK) {
        *out      = call.body;
        call.body = (imgd_buf){0};
    }
    imgd_buf_free(&call.body);
    return *cc == CURLE_OK ? code : 0;
}

/* Posts body for job to the output URL, retrying transport errors, 429 and 5xx (3 tries with
 * backoff). Returns the last HTTP status (0: never answered). */
static long rp_post(svc_runpod *rp, const char *job, const char *body, bool retry) {
    char url[RP_URL_MAX];
    if (!replace_all(rp->out_tmpl, "$ID", job, url, sizeof url) ||
        !add_query(url, sizeof url, "isStream=false")) {
        IMGD_LOG(IMGD_LOG_ERROR, "runpod", "url_too_long", "job %s: output URL too long", job);
        return 0;
    }
    long code = 0;
    for (int attempt = 0; attempt < (retry ? 3 : 1); attempt++) {
        if (attempt) {
            struct timespec ts = {0, 400000000L * attempt}; /* 0.4 s, 0.8 s */
            (void)nanosleep(&ts, NULL);
        }
        CURLcode cc = CURLE_OK;
        code        = rp_http(rp, url, body, NULL, NULL, &cc);
        if (code >= 200 && code < 300) return code;
        if (code && code != 429 && code < 500) return code;
        IMGD_LOG(IMGD_LOG_WARN, "runpod", "post_retry", "job %s: %s (try %d of 3)", job,
                 code ? "HTTP error" : curl_easy_strerror(cc), attempt + 1);
    }
    return code;
}

static char *json_text(cJSON *o) {
    char *t   = o ? cJSON_PrintUnformatted(o) : NULL;
    char *out = t ? imgd_strdup(t) : NULL;
    cJSON_free(t);
    cJSON_Delete(o);
    return out;
}

/* Posts {"error": msg}. */
static void post_error(svc_runpod *rp, const char *job, const char *msg) {
    cJSON *o = cJSON_CreateObject();
    if (o) (void)cJSON_AddStringToObject(o, "error", msg);
    char *body = json_text(o);
    long  code = body ? rp_post(rp, job, body, true) : 0;
    imgd_free(body);
    IMGD_LOG(code >= 200 && code < 300 ? IMGD_LOG_INFO : IMGD_LOG_ERROR, "runpod", "job_error",
             "job %s: %s (posted: HTTP %ld)", job, msg, code);
}

/* A problem+json body as one line of text for {"error"}. */
static void problem_text(const imgd_http_resp *resp, char *out, size_t cap) {
    cJSON       *p  = resp->body.data ? cJSON_Parse(resp->body.data) : NULL;
    const cJSON *t  = cJSON_GetObjectItemCaseSensitive(p, "title");
    const cJSON *d  = cJSON_GetObjectItemCaseSensitive(p, "detail");
    const cJSON *f  = cJSON_GetObjectItemCaseSensitive(p, "pointer");
    const cJSON *h  = cJSON_GetObjectItemCaseSensitive(p, "hint");
    bool         at = cJSON_IsString(f) && f->valuestring[0];
    (void)imgd_fmt(out, cap, "%s: %s%s%s%s", cJSON_IsString(t) ? t->valuestring : "invalid input",
                   cJSON_IsString(d) ? d->valuestring : "the input was refused",
                   at ? " (input" : "", at ? f->valuestring : "", at ? ")" : "");
    if (cJSON_IsString(h) && h->valuestring[0]) {
        size_t l = strlen(out);
        (void)imgd_fmt(out + l, cap - l, "; %s", h->valuestring);
    }
    cJSON_Delete(p);
}

/* ---- one job ------------------------------------------------------------------------------ */

static void slot_set(svc_runpod *rp, rp_slot *slot, const char *job, const char *local) {
    pthread_mutex_lock(&rp->mu);
    (void)imgd_fmt(slot->job, sizeof slot->job, "%s", job);
    (void)imgd_fmt(slot->local, sizeof slot->local, "%s", local);
    pthread_cond_broadcast(&rp->cv);
    pthread_mutex_unlock(&rp->mu);
}

/* Validates and submits input as a native request; false (error posted) when refused. */
static bool submit(svc_runpod *rp, const char *job, const cJSON *input, char local[40]) {
    imgd_server   *s = rp->s;
    imgd_http_resp resp;
    memset(&resp, 0, sizeof resp);
    imgd_buf_init(&resp.body, (size_t)1 << 20);
    char   model[SVC_ID_MAX], msg[1536];
    cJSON *req = cJSON_IsObject(input) ? cJSON_Duplicate(input, true) : NULL;
    bool   ok  = false;
    if (!cJSON_IsObject(input)) {
        (void)imgd_fmt(msg, sizeof msg,
                       "invalid input: \"input\" must be a JSON object (the request of POST "
                       "/v1/generate), got %s",
                       cJSON_IsString(input)  ? "a string"
                       : cJSON_IsArray(input) ? "an array"
                                              : "another type");
    } else if (!req) {
        (void)imgd_fmt(msg, sizeof msg, "out of memory");
    } else if (!svc_request_prepare(s, req, model, sizeof model, &resp) ||
               !svc_job_submit(s, NULL, req, model, "runpod", NULL, local, &resp)) {
        problem_text(&resp, msg, sizeof msg);
    } else {
        ok = true;
    }
    cJSON_Delete(req);
    imgd_buf_free(&resp.body);
    if (!ok) post_error(rp, job, msg);
    return ok;
}

/* Posts progress when the step changed (at most once a second after the first); true when
 * the platform answered that the job is gone (cancelled). */
static bool progress(svc_runpod *rp, const char *job, const char *local, int32_t *last_step,
                     double *last_t) {
    svc_live live;
    if (!svc_live_get(rp->s, local, &live) || live.step == *last_step) return false;
    if (*last_step >= 0 && mono_s() - *last_t < 1.0) return false;
    *last_step = live.step;
    *last_t    = mono_s();
    cJSON *o   = cJSON_CreateObject();
    cJSON *out = o ? cJSON_AddObjectToObject(o, "output") : NULL;
    if (o) (void)cJSON_AddStringToObject(o, "status", "IN_PROGRESS");
    if (out) {
        (void)cJSON_AddNumberToObject(out, "step", live.step);
        (void)cJSON_AddNumberToObject(out, "steps", live.steps);
        (void)cJSON_AddNumberToObject(
            out, "progress", live.steps > 0 ? 100.0 * live.step / (double)live.steps : 0.0);
    }
    char *body = json_text(o);
    long  code = body ? rp_post(rp, job, body, false) : 0;
    imgd_free(body);
    return code == 404 || code == 410;
}

/* The terminal post for a finished (or cut off) local job. */
static void finish(svc_runpod *rp, const char *job, const char *local) {
    imgd_job_rec *rec = NULL;
    if (imgd_jobstore_get(rp->s->js, local, &rec) != IMGD_OK) {
        post_error(rp, job, "the worker lost the job (its state directory failed)");
        return;
    }
    if (rec->state == IMGD_JOB_SUCCEEDED && rec->result_json) {
        cJSON *o = cJSON_CreateObject();
        cJSON *r = cJSON_Parse(rec->result_json);
        if (o && r) {
            cJSON_AddItemToObject(o, "output", r);
            r = NULL;
        }
        cJSON_Delete(r);
        char *body = json_text(o);
        long  code = body ? rp_post(rp, job, body, true) : 0;
        imgd_free(body);
        IMGD_LOG(code >= 200 && code < 300 ? IMGD_LOG_INFO : IMGD_LOG_ERROR, "runpod", "job_done",
                 "job %s (local %s): output posted, HTTP %ld", job, local, code);
    } else if (rec->state == IMGD_JOB_FAILED) {
        cJSON       *e = rec->error_json ? cJSON_Parse(rec->error_json) : NULL;
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "detail");
        char         msg[1024];
        (void)imgd_fmt(msg, sizeof msg, "generation failed: %s",
                       cJSON_IsString(d) ? d->valuestring : "unknown error");
        cJSON_Delete(e);
        post_error(rp, job, msg);
    } else {
        post_error(rp, job,
                   "the worker stopped (SIGTERM) before the job finished; submit it again");
    }
    imgd_job_rec_free(rec);
}

static void run_job(svc_runpod *rp, rp_slot *slot, const char *job, const cJSON *input) {
    char local[40];
    if (!submit(rp, job, input, local)) return;
    slot_set(rp, slot, job, local);
    IMGD_LOG(IMGD_LOG_INFO, "runpod", "job_started", "job %s as local job %s", job, local);
    int32_t last_step = -1;
    double  last_t    = 0;
    bool    gone = false, cut = false;
    while (!svc_job_wait(rp->s, local, 0.25)) {
        pthread_mutex_lock(&rp->s->mu);
        bool hard = rp->s->hard_stop;
        pthread_mutex_unlock(&rp->s->mu);
        if (hard) break;
        if (!gone && progress(rp, job, local, &last_step, &last_t)) gone = true;
        if (!cut && rp_flag(rp, &rp->cut)) cut = true;
        if (gone || cut) {
            imgd_job_state after;
            (void)imgd_jobstore_cancel(rp->s->js, local, &after);
            svc_wake(rp->s);
        }
    }
    if (gone) {
        IMGD_LOG(IMGD_LOG_INFO, "runpod", "job_cancelled",
                 "job %s: RunPod no longer has it (cancelled); stopped, nothing posted", job);
    } else {
        finish(rp, job, local);
    }
    slot_set(rp, slot, "", "");
}

/* ---- threads ------------------------------------------------------------------------------ */

static bool any_busy(svc_runpod *rp) {
    bool busy = false;
    pthread_mutex_lock(&rp->mu);
    for (int32_t i = 0; i < rp->n; i++) busy = busy || rp->slots[i].job[0];
    pthread_mutex_unlock(&rp->mu);
    return busy;
}

/* Takes one job; NULL when there is none (or on an error, logged). */
static cJSON *take_job(svc_runpod *rp) {
    char url[RP_URL_MAX];
    (void)imgd_fmt(url, sizeof url, "%s", rp->get_url);
    if (!add_query(url, sizeof url, any_busy(rp) ? "job_in_progress=1" : "job_in_progress=0")) {
        return NULL;
    }
    imgd_buf body;
    memset(&body, 0, sizeof body);
    CURLcode cc   = CURLE_OK;
    long     code = rp_http(rp, url, NULL, &rp->stopping, &body, &cc);
    cJSON   *job  = NULL;
    if (code == 200 && body.len) {
        if (imgd_json_parse("RunPod job", body.data, body.len, RP_BODY_MAX, 64, &job) != IMGD_OK) {
            IMGD_LOG(IMGD_LOG_ERROR, "runpod", "bad_job", "the job is not JSON: %s",
                     imgd_last_error());
            job = NULL;
        }
    } else if (code == 0 && cc != CURLE_ABORTED_BY_CALLBACK) {
        IMGD_LOG(cc == CURLE_OPERATION_TIMEDOUT ? IMGD_LOG_DEBUG : IMGD_LOG_WARN, "runpod",
                 "get_job_failed", "%s", curl_easy_strerror(cc));
        if (cc != CURLE_OPERATION_TIMEDOUT) rp_sleep(rp, 1.0, &rp->stopping);
    } else if (code != 204 && code != 400 && code != 0 && code != 200) {
        IMGD_LOG(IMGD_LOG_WARN, "runpod", "get_job_failed", "HTTP %ld from the job URL", code);
        rp_sleep(rp, 1.0, &rp->stopping);
    } else if (code == 204 || code == 400) {
        rp_sleep(rp, 0.5, &rp->stopping); /* none now (400: FlashBoot) */
    }
    imgd_buf_free(&body);
    return job;
}

typedef struct worker_arg {
    svc_runpod *rp;
    int32_t     i;
} worker_arg;

static void *worker(void *arg) {
    worker_arg *wa   = arg;
    svc_runpod *rp   = wa->rp;
    rp_slot    *slot = &rp->slots[wa->i];
    imgd_free(wa);
    while (!rp_flag(rp, &rp->stopping)) {
        cJSON *job = take_job(rp);
        if (!job) continue;
        const cJSON *id    = cJSON_GetObjectItemCaseSensitive(job, "id");
        const cJSON *input = cJSON_GetObjectItemCaseSensitive(job, "input");
        if (!cJSON_IsString(id) || !id->valuestring[0] || strlen(id->valuestring) >= 200) {
            IMGD_LOG(IMGD_LOG_ERROR, "runpod", "bad_job",
                     "a job without a usable \"id\" was dropped (nothing can be posted for it)");
        } else if (!input) {
            post_error(rp, id->valuestring, "invalid job: it has no \"input\"");
        } else {
            run_job(rp, slot, id->valuestring, input);
        }
        cJSON_Delete(job);
    }
    return NULL;
}

static void *heartbeat(void *arg) {
    svc_runpod *rp = arg;
    while (!rp_flag(rp, &rp->done)) {
        char ids[2048] = "";
        pthread_mutex_lock(&rp->mu);
        for (int32_t i = 0; i < rp->n; i++) {
            if (!rp->slots[i].job[0]) continue;
            size_t l = strlen(ids);
            (void)imgd_fmt(ids + l, sizeof ids - l, "%s%s", l ? "," : "", rp->slots[i].job);
        }
        pthread_mutex_unlock(&rp->mu);
        CURL *c   = curl_easy_init();
        char *esc = c ? curl_easy_escape(c, ids, 0) : NULL;
        char  url[RP_URL_MAX], kv[2600];
        (void)imgd_fmt(url, sizeof url, "%s", rp->ping_url);
        (void)imgd_fmt(kv, sizeof kv, "job_id=%s&runpod_version=imgd-%s", esc ? esc : "",
                       imgd_version());
        curl_free(esc);
        if (c) curl_easy_cleanup(c);
        CURLcode cc = CURLE_OK;
        long     code =
            add_query(url, sizeof url, kv) ? rp_http(rp, url, NULL, &rp->done, NULL, &cc) : 0;
        if (code < 200 || code >= 300) {
            IMGD_LOG(IMGD_LOG_WARN, "runpod", "ping_failed", "%s",
                     code ? "HTTP error from the ping URL" : curl_easy_strerror(cc));
        }
        rp_sleep(rp, (double)rp->ping_ms / 1000.0, &rp->done);
    }
    return NULL;
}

/* ---- start / stop ------------------------------------------------------------------------- */

imgd_runpod_params imgd_runpod_params_default(void) {
    imgd_runpod_params p;
    memset(&p, 0, sizeof p);
    return p;
}

static const char *pick(const char *given, const char *env) {
    if (given) return given;
    const char *v = getenv(env);
    return v && *v ? v : NULL;
}

static imgd_status env_int(const char *name, long lo, long hi, long dflt, long *out) {
    const char *v = getenv(name);
    *out          = dflt;
    if (!v || !*v) return IMGD_OK;
    char *end = NULL;
    long  x   = strtol(v, &end, 10);
    if (!end || *end || x < lo || x > hi) {
        return imgd_fail(IMGD_E_INVALID_ARG, "%s='%s': expected an integer in %ld..%ld", name, v,
                         lo, hi);
    }
    *out = x;
    return IMGD_OK;
}

static imgd_status configure(svc_runpod *rp, const imgd_runpod_params *p) {
    const char *get = pick(p->get_job_url, "RUNPOD_WEBHOOK_GET_JOB");
    const char *out = pick(p->post_output_url, "RUNPOD_WEBHOOK_POST_OUTPUT");
    const char *png = p->ping_url ? p->ping_url : pick(NULL, "RUNPOD_WEBHOOK_PING");
    const char *key = pick(p->api_key, "RUNPOD_AI_API_KEY");
    const char *pod = pick(p->pod_id, "RUNPOD_POD_ID");
    if (!get || !out) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "--runpod: %s is not set (RunPod sets RUNPOD_WEBHOOK_GET_JOB and "
                         "RUNPOD_WEBHOOK_POST_OUTPUT in a serverless worker's environment)",
                         get ? "RUNPOD_WEBHOOK_POST_OUTPUT" : "RUNPOD_WEBHOOK_GET_JOB");
    }
    if (pod) {
        (void)imgd_fmt(rp->pod, sizeof rp->pod, "%s", pod);
    } else {
        uint8_t r[8] = {0};
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) memset(r, 7, sizeof r);
        for (size_t i = 0; i < sizeof r; i++) (void)imgd_fmt(rp->pod + 2 * i, 3, "%02x", r[i]);
    }
    if (!replace_all(get, "$ID", rp->pod, rp->get_url, sizeof rp->get_url) ||
        !replace_all(out, "$RUNPOD_POD_ID", rp->pod, rp->out_tmpl, sizeof rp->out_tmpl) ||
        !replace_all(png ? png : "", "$RUNPOD_POD_ID", rp->pod, rp->ping_url,
                     sizeof rp->ping_url)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "--runpod: a RunPod URL is longer than %d bytes",
                         RP_URL_MAX);
    }
    if (key && !imgd_fmt(rp->auth, sizeof rp->auth, "Authorization: %s", key)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "RUNPOD_AI_API_KEY is too long");
    }
    long        conc = 0, ping = 0, tmo = 0;
    imgd_status st = env_int("IMGD_RUNPOD_CONCURRENCY", 1, RP_THREADS_MAX, 1, &conc);
    if (st == IMGD_OK) st = env_int("RUNPOD_PING_INTERVAL", 100, 3600000, 10000, &ping);
    if (st == IMGD_OK) st = env_int("IMGD_RUNPOD_HTTP_TIMEOUT", 1, 3600, 90, &tmo);
    if (st != IMGD_OK) return st;
    if (p->concurrency < 0 || p->concurrency > RP_THREADS_MAX) {
        return imgd_fail(IMGD_E_INVALID_ARG, "--runpod-concurrency %d: expected 1..%d",
                         (int)p->concurrency, RP_THREADS_MAX);
    }
    rp->n          = p->concurrency ? p->concurrency : (int32_t)conc;
    rp->ping_ms    = p->ping_interval_ms > 0 ? p->ping_interval_ms : (int32_t)ping;
    rp->timeout_ms = p->http_timeout_s > 0 ? (long)(p->http_timeout_s * 1000.0) : tmo * 1000L;
    return IMGD_OK;
}

static void rp_free(svc_runpod *rp) {
    pthread_mutex_destroy(&rp->mu);
    pthread_cond_destroy(&rp->cv);
    imgd_free(rp);
}

imgd_status imgd_server_runpod_start(imgd_server *s, const imgd_runpod_params *p) {
    if (!s || !p) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_server_runpod_start: NULL argument");
    if (s->runpod) return imgd_fail(IMGD_E_INVALID_ARG, "the RunPod worker is already running");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return imgd_fail(IMGD_E_IO, "libcurl cannot be initialised");
    }
    svc_runpod *rp = imgd_calloc(1, sizeof *rp);
    if (!rp) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    rp->s = s;
    pthread_mutex_init(&rp->mu, NULL);
    pthread_cond_init(&rp->cv, NULL);
    imgd_status st = configure(rp, p);
    if (st != IMGD_OK) {
        rp_free(rp);
        return st;
    }
    s->runpod = rp;
    for (int32_t i = 0; i < rp->n; i++) {
        worker_arg *wa = imgd_malloc(sizeof *wa);
        if (!wa) break;
        *wa = (worker_arg){rp, i};
        if (pthread_create(&rp->thr[i], NULL, worker, wa) != 0) {
            imgd_free(wa);
            break;
        }
        rp->n_started++;
    }
    if (rp->ping_url[0] && pthread_create(&rp->ping_thr, NULL, heartbeat, rp) == 0) {
        rp->ping_started = true;
    }
    if (rp->n_started == 0) {
        s->runpod = NULL;
        rp_free(rp);
        return imgd_fail(IMGD_E_NOMEM, "cannot start the RunPod worker threads");
    }
    IMGD_LOG(IMGD_LOG_INFO, "runpod", "started",
             "pod %s: %d job thread(s), heartbeat every %d ms%s", rp->pod, (int)rp->n_started,
             (int)rp->ping_ms, rp->ping_started ? "" : " (no ping URL: no heartbeat)");
    return IMGD_OK;
}

void svc_runpod_stop(imgd_server *s, double deadline) {
    svc_runpod *rp = s->runpod;
    if (!rp) return;
    pthread_mutex_lock(&rp->mu);
    rp->stopping = true;
    pthread_cond_broadcast(&rp->cv);
    pthread_mutex_unlock(&rp->mu);
    IMGD_LOG(IMGD_LOG_INFO, "runpod", "stopping", "no new jobs; finishing the running ones");
    while (any_busy(rp) && mono_s() < deadline) {
        struct timespec ts = {0, 50 * 1000000L};
        (void)nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&rp->mu);
    rp->cut = true; /* what still runs is cancelled and gets an error posted */
    pthread_mutex_unlock(&rp->mu);
    for (int32_t i = 0; i < rp->n_started; i++) (void)pthread_join(rp->thr[i], NULL);
    pthread_mutex_lock(&rp->mu);
    rp->done = true;
    pthread_cond_broadcast(&rp->cv);
    pthread_mutex_unlock(&rp->mu);
    if (rp->ping_started) (void)pthread_join(rp->ping_thr, NULL);
    s->runpod = NULL;
    rp_free(rp);
    IMGD_LOG(IMGD_LOG_INFO, "runpod", "stopped", "all RunPod jobs posted");
}
