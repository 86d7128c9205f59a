/* The native API (/v1): a route table and its handlers. Compatibility layers (A1111,
 * OpenAI, RunPod) live in service_compat.c and reuse the same jobs. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/base64.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/text.h"
#include "service/service_impl.h"

#define JSON_DEPTH_MAX 64

/* ---- shared helpers --------------------------------------------------------------------- */

void svc_send_json(imgd_http_resp *resp, int32_t status, cJSON *doc) {
    char *txt = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (!txt) {
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return;
    }
    imgd_http_json(resp, status, txt);
    cJSON_free(txt);
}

cJSON *svc_parse_body(const imgd_http_req *req, imgd_http_resp *resp) {
    if (req->content_type && !strstr(req->content_type, "json")) {
        imgd_http_problem(resp, 415, "unsupported-media-type", "Send JSON",
                          "Content-Type must be application/json", NULL,
                          "set the header Content-Type: application/json");
        return NULL;
    }
    if (req->body_len == 0) {
        imgd_http_problem(resp, 400, "invalid-json", "Empty body", "the request body is empty", "",
                          "send a JSON object");
        return NULL;
    }
    cJSON      *doc = NULL;
    imgd_status st  = imgd_json_parse("request body", req->body, req->body_len, req->body_len + 1,
                                      JSON_DEPTH_MAX, &doc);
    if (st != IMGD_OK) {
        imgd_http_problem(resp, 400, "invalid-json", "Malformed JSON", imgd_last_error(), "",
                          "check the JSON syntax (quotes, commas, brackets)");
        return NULL;
    }
    return doc;
}

bool svc_auth_request(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp,
                      imgd_auth_result *who) {
    who->key  = NULL;
    who->name = NULL;
    if (!s->auth) return true;
    if (imgd_auth_check(s->auth, req->authorization, who) != IMGD_OK) {
        imgd_http_problem(resp, 401, "unauthorized", "Unauthorized", imgd_last_error(), NULL,
                          "send Authorization: Bearer <your API key>");
        return false;
    }
    int64_t retry_ms = 0;
    if (imgd_auth_take_request(s->auth, who->key, svc_now_ms(), &retry_ms) != IMGD_OK) {
        (void)imgd_fmt(resp->retry_after, sizeof resp->retry_after, "%lld",
                       (long long)imgd_auth_retry_after_s(retry_ms));
        imgd_http_problem(resp, 429, "rate-limited", "Too many requests",
                          "this key's request rate limit is exhausted", NULL,
                          "wait for Retry-After seconds");
        return false;
    }
    return true;
}

bool svc_take_images(imgd_server *s, const imgd_auth_result *who, int32_t n, imgd_http_resp *resp) {
    if (!s->auth) return true;
    int64_t     retry_ms = 0;
    imgd_status st       = imgd_auth_take_images(s->auth, who->key, n, svc_now_ms(), &retry_ms);
    if (st == IMGD_OK) return true;
    if (st == IMGD_E_TOO_LARGE) {
        (void)imgd_fmt(resp->retry_after, sizeof resp->retry_after, "%lld",
                       (long long)imgd_auth_retry_after_s(retry_ms));
        imgd_http_problem(resp, 429, "quota-exceeded", "Daily image quota reached",
                          imgd_last_error(), NULL, "the quota resets at 00:00 UTC (Retry-After)");
    } else if (st == IMGD_E_INVALID_ARG) {
        imgd_http_problem(resp, 400, "quota-exceeded", "More images than the daily quota",
                          imgd_last_error(), "/batch_size", "ask for fewer images");
    } else {
        imgd_http_problem(resp, 500, "store", "The quota could not be counted", imgd_last_error(),
                          NULL, NULL);
    }
    return false;
}

cJSON *svc_job_json(imgd_server *s, const imgd_job_rec *rec, bool with_result) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    (void)cJSON_AddStringToObject(o, "id", rec->id);
    (void)cJSON_AddStringToObject(o, "state", imgd_job_state_name(rec->state));
    if (rec->model) (void)cJSON_AddStringToObject(o, "model", rec->model);
    int32_t  step = rec->step, steps = rec->steps;
    double   eta = -1;
    svc_live lv;
    if (rec->state == IMGD_JOB_RUNNING && svc_live_get(s, rec->id, &lv)) {
        step  = lv.step;
        steps = lv.steps;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double el = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - lv.t_start;
        if (step > 0 && steps > step) eta = el / step * (steps - step);
        if (step > 0 && steps == step) eta = 0;
    }
    if (rec->state == IMGD_JOB_SUCCEEDED) step = steps;
    double pct = steps > 0 ? 100.0 * step / steps : 0;
    if (rec->state == IMGD_JOB_SUCCEEDED) pct = 100;
    (void)cJSON_AddNumberToObject(o, "progress", pct);
    (void)cJSON_AddNumberToObject(o, "step", step);
    (void)cJSON_AddNumberToObject(o, "steps", steps);
    if (eta >= 0) (void)cJSON_AddNumberToObject(o, "eta_s", eta);
    (void)cJSON_AddNumberToObject(o, "created_ms", (double)rec->created_ms);
    if (rec->started_ms) (void)cJSON_AddNumberToObject(o, "started_ms", (double)rec->started_ms);
    if (rec->finished_ms) (void)cJSON_AddNumberToObject(o, "finished_ms", (double)rec->finished_ms);
    (void)cJSON_AddNumberToObject(o, "attempts", rec->attempts);
    if (with_result && rec->result_json) {
        cJSON *res = cJSON_Parse(rec->result_json);
        if (res) cJSON_AddItemToObject(o, "result", res);
    }
    if (rec->error_json) {
        cJSON *err = cJSON_Parse(rec->error_json);
        if (err) cJSON_AddItemToObject(o, "error", err);
    }
    return o;
}

/* ---- route table -------------------------------------------------------------------------- */

typedef void (*route_fn)(imgd_server *s, const imgd_http_req *req, const char *arg,
                         imgd_http_resp *resp);

typedef struct route {
    const char *method;
    const char *prefix; /* the path starts with this */
    const char *suffix; /* and ends with this; the part between is the argument */
    bool        has_arg;
    route_fn    fn;
    const char *name; /* for logs and metrics */
} route;

static void r_health(imgd_server *s, const imgd_http_req *req, const char *arg,
                     imgd_http_resp *resp) {
    (void)s;
    (void)req;
    (void)arg;
    imgd_http_json(resp, 200, "{\"status\":\"ok\"}");
}

static void r_ready(imgd_server *s, const imgd_http_req *req, const char *arg,
                    imgd_http_resp *resp) {
    (void)req;
    (void)arg;
    cJSON *o      = cJSON_CreateObject();
    cJSON *loaded = svc_models_loaded(s);
    size_t n      = loaded ? (size_t)cJSON_GetArraySize(loaded) : 0;
    if (o && loaded) {
        cJSON_AddItemToObject(o, "loaded", loaded);
        loaded = NULL;
    }
    cJSON_Delete(loaded);
    /* models warmed by --preload and whether each is still resident */
    cJSON *pre = o ? cJSON_AddArrayToObject(o, "preload") : NULL;
    for (size_t i = 0; pre && i < s->n_preload; i++) {
        cJSON *po = cJSON_CreateObject();
        if (!po) break;
        cJSON_AddItemToArray(pre, po);
        (void)cJSON_AddStringToObject(po, "id", s->preload[i]);
        (void)cJSON_AddBoolToObject(po, "loaded", svc_model_is_loaded(s, s->preload[i]));
    }
    pthread_mutex_lock(&s->mu);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    bool ready = n > 0 && !stopping;
    if (o) (void)cJSON_AddBoolToObject(o, "ready", ready);
    if (o && s->unit.active) (void)cJSON_AddStringToObject(o, "model_id", s->unit.model_id);
    if (o && s->start_s > 0) (void)cJSON_AddNumberToObject(o, "start_to_ready_s", s->start_s);
    if (o && !ready)
        (void)cJSON_AddStringToObject(o, "reason", stopping ? "shutting down" : "no model loaded");
    svc_send_json(resp, ready ? 200 : 503, o);
}

static void r_metrics(imgd_server *s, const imgd_http_req *req, const char *arg,
                      imgd_http_resp *resp) {
    (void)req;
    (void)arg;
    size_t      counts[IMGD_JOB_STATE_COUNT] = {0};
    uint64_t    jobs[5]                      = {0};
    const char *names[5];
    (void)imgd_jobstore_count(s->js, counts);
    for (int i = 0; i < 5; i++) {
        jobs[i]  = counts[i];
        names[i] = imgd_job_state_name((imgd_job_state)i);
    }
    imgd_mcache_stats cs;
    imgd_mcache_stats_get(s->cache, &cs);
    uint64_t        loaded = cs.count;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double up = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - s->t_started;
    imgd_buf_free(&resp->body);
    imgd_buf_init(&resp->body, (size_t)16 << 20);
    imgd_components_stats ks;
    imgd_components_stats_get(s->components, &ks);
    if (imgd_svc_metrics_print(&s->metrics, &resp->body, jobs, names, loaded, up) != IMGD_OK ||
        imgd_buf_printf(
            &resp->body,
            "# HELP imgd_models_resident_bytes Bytes of the loaded models, components shared "
            "between them counted once.\n# TYPE imgd_models_resident_bytes gauge\n"
            "imgd_models_resident_bytes %llu\n"
            "# HELP imgd_models_shared_bytes Bytes of components held once for several models "
            "(VAEs).\n# TYPE imgd_models_shared_bytes gauge\nimgd_models_shared_bytes %llu\n"
            "# HELP imgd_models_shared_saved_bytes Bytes not held twice thanks to sharing.\n"
            "# TYPE imgd_models_shared_saved_bytes gauge\nimgd_models_shared_saved_bytes %llu\n"
            "# HELP imgd_models_shared_hashed_bytes_total Tensor bytes read to compare "
            "components (digests cached in the registry are not read again).\n"
            "# TYPE imgd_models_shared_hashed_bytes_total counter\n"
            "imgd_models_shared_hashed_bytes_total %llu\n",
            (unsigned long long)cs.bytes, (unsigned long long)ks.bytes,
            (unsigned long long)ks.saved_bytes, (unsigned long long)ks.hashed_bytes) != IMGD_OK) {
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return;
    }
    resp->status       = 200;
    resp->content_type = "text/plain; version=0.0.4";
}

static void r_models(imgd_server *s, const imgd_http_req *req, const char *arg,
                     imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    (void)arg;
    cJSON *o = cJSON_CreateObject();
    cJSON *a = svc_models_list(s);
    if (o && a) {
        cJSON_AddItemToObject(o, "models", a);
        a = NULL;
    }
    cJSON *mem = o ? cJSON_AddObjectToObject(o, "memory") : NULL;
    if (mem) { /* the budget's view: shared components counted once */
        imgd_mcache_stats     cs;
        imgd_components_stats ks;
        imgd_mcache_stats_get(s->cache, &cs);
        imgd_components_stats_get(s->components, &ks);
        (void)cJSON_AddNumberToObject(mem, "budget", (double)cs.budget);
        (void)cJSON_AddNumberToObject(mem, "resident_bytes", (double)cs.bytes);
        (void)cJSON_AddNumberToObject(mem, "shared_bytes", (double)ks.bytes);
        (void)cJSON_AddNumberToObject(mem, "shared_saved_bytes", (double)ks.saved_bytes);
        (void)cJSON_AddNumberToObject(mem, "shared_components", ks.count);
    }
    cJSON_Delete(a);
    svc_send_json(resp, 200, o);
}

/* Finds (detects) a model for a route; writes a problem and returns false when unusable. */
static bool model_entry(imgd_server *s, const char *id, imgd_http_resp *resp, cJSON **json,
                        bool schema) {
    int32_t hs;
    char    detail[768];
    pthread_mutex_lock(&s->mu);
    svc_model *sm = svc_model_find(s, id, &hs, detail, sizeof detail);
    if (sm) *json = schema ? cJSON_Duplicate(sm->schema, true) : svc_model_json(s, sm);
    pthread_mutex_unlock(&s->mu);
    if (!sm) {
        imgd_http_problem(resp, hs, hs == 404 ? "model-not-found" : "bad-model", "Model unusable",
                          detail, NULL, "GET /v1/models lists the models this worker serves");
        return false;
    }
    return true;
}

static void r_model(imgd_server *s, const imgd_http_req *req, const char *id,
                    imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    cJSON *o = NULL;
    if (model_entry(s, id, resp, &o, false)) svc_send_json(resp, 200, o);
}

static void r_model_schema(imgd_server *s, const imgd_http_req *req, const char *id,
                           imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    cJSON *o = NULL;
    if (!model_entry(s, id, resp, &o, true)) return;
    svc_send_json(resp, 200, o);
    resp->content_type = "application/schema+json";
}

static void r_model_load(imgd_server *s, const imgd_http_req *req, const char *id,
                         imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    cJSON *o = NULL;
    if (!model_entry(s, id, resp, &o, false)) return;
    cJSON_Delete(o);
    if (svc_model_load(s, id) != IMGD_OK) {
        imgd_http_problem(resp, 422, "model-load", "The model could not be loaded",
                          imgd_last_error(), NULL, "check the model files (imgd inspect)");
        return;
    }
    o = NULL;
    if (model_entry(s, id, resp, &o, false)) svc_send_json(resp, 200, o);
}

static void r_model_unload(imgd_server *s, const imgd_http_req *req, const char *id,
                           imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    (void)svc_model_unload(s, id);
    cJSON *o = NULL;
    if (model_entry(s, id, resp, &o, false)) svc_send_json(resp, 200, o);
}

/* Versions: pin the model's current content, drop the pin, or put the pinned version back
 * (the loaded copy of the replaced file is unloaded, so the next job loads the restored one). */
typedef enum version_op {
    VERSION_PIN      = 0,
    VERSION_UNPIN    = 1,
    VERSION_ROLLBACK = 2,
} version_op;

static void model_version(imgd_server *s, const imgd_http_req *req, const char *id,
                          imgd_http_resp *resp, version_op op) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) {
        return;
    }
    imgd_status st = op == VERSION_PIN     ? imgd_registry_pin(s->reg, id, NULL)
                     : op == VERSION_UNPIN ? imgd_registry_unpin(s->reg, id)
                                           : imgd_registry_rollback(s->reg, id);
    if (st != IMGD_OK) {
        int32_t hs = st == IMGD_E_NOT_FOUND ? 404 : st == IMGD_E_UNSUPPORTED ? 422 : 500;
        imgd_http_problem(resp, hs, "model-version", "The model version operation failed",
                          imgd_last_error(), NULL,
                          "POST /v1/models/{id}/pin first; GET /v1/models lists the ids");
        return;
    }
    if (op == VERSION_ROLLBACK) {
        (void)svc_model_unload(s, id);
    }
    cJSON *o = NULL;
    if (model_entry(s, id, resp, &o, false)) {
        svc_send_json(resp, 200, o);
    }
}

static void r_model_pin(imgd_server *s, const imgd_http_req *req, const char *id,
                        imgd_http_resp *resp) {
    model_version(s, req, id, resp, VERSION_PIN);
}

static void r_model_unpin(imgd_server *s, const imgd_http_req *req, const char *id,
                          imgd_http_resp *resp) {
    model_version(s, req, id, resp, VERSION_UNPIN);
}

static void r_model_rollback(imgd_server *s, const imgd_http_req *req, const char *id,
                             imgd_http_resp *resp) {
    model_version(s, req, id, resp, VERSION_ROLLBACK);
}

/* Shared by /v1/generate and /v1/jobs: validates, charges the quota, submits. */
static bool submit_native(imgd_server *s, const imgd_http_req *req, const imgd_auth_result *who,
                          imgd_http_resp *resp, char id[40], bool *want_urls) {
    cJSON *doc = svc_parse_body(req, resp);
    if (!doc) return false;
    char model_id[SVC_ID_MAX];
    bool ok = svc_request_prepare(s, doc, model_id, sizeof model_id, resp);
    if (ok && want_urls) {
        const cJSON *rf = cJSON_GetObjectItemCaseSensitive(doc, "response_format");
        *want_urls      = rf && cJSON_IsString(rf) && strcmp(rf->valuestring, "url") == 0;
    }
    if (ok) {
        const cJSON *bs = cJSON_GetObjectItemCaseSensitive(doc, "batch_size");
        int32_t      n  = bs && cJSON_IsNumber(bs) ? (int32_t)bs->valuedouble : 1;
        ok              = svc_take_images(s, who, n, resp) &&
             svc_job_submit(s, req, doc, model_id, "v1", who->name, id, resp);
    }
    cJSON_Delete(doc);
    return ok;
}

/* response_format "url": each image's b64 becomes a link to its bytes. */
static void images_to_urls(cJSON *res, const char *base_url, const char *id) {
    cJSON *im;
    int    i = 0;
    cJSON_ArrayForEach(im, cJSON_GetObjectItemCaseSensitive(res, "images")) {
        char u[256];
        (void)imgd_fmt(u, sizeof u, "%s/v1/jobs/%s/images/%d", base_url, id, i++);
        cJSON_DeleteItemFromObjectCaseSensitive(im, "b64");
        (void)cJSON_AddStringToObject(im, "url", u);
    }
}

static void r_generate(imgd_server *s, const imgd_http_req *req, const char *arg,
                       imgd_http_resp *resp) {
    (void)arg;
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    char id[40];
    bool want_urls = false;
    if (!submit_native(s, req, &who, resp, id, &want_urls)) return;
    if (!svc_job_wait(s, id, 3600.0)) {
        (void)imgd_fmt(resp->location, sizeof resp->location, "/v1/jobs/%s", id);
        imgd_http_problem(resp, 504, "still-running", "The job is still running",
                          "the job did not finish while the request waited", NULL,
                          "poll the job at the Location header");
        return;
    }
    imgd_job_rec *rec = NULL;
    if (imgd_jobstore_get(s->js, id, &rec) != IMGD_OK) {
        imgd_http_problem(resp, 500, "store", "The job vanished", imgd_last_error(), NULL, NULL);
        return;
    }
    if (rec->state == IMGD_JOB_SUCCEEDED && rec->result_json) {
        cJSON *res = cJSON_Parse(rec->result_json);
        if (res) (void)cJSON_AddStringToObject(res, "id", id);
        if (res && want_urls) images_to_urls(res, req->base_url, id);
        svc_send_json(resp, 200, res);
    } else {
        cJSON       *err = rec->error_json ? cJSON_Parse(rec->error_json) : NULL;
        const cJSON *stv = err ? cJSON_GetObjectItemCaseSensitive(err, "status") : NULL;
        int32_t      hs  = stv && cJSON_IsNumber(stv) ? (int32_t)stv->valuedouble : 500;
        if (hs < 400 || hs > 599) hs = rec->state == IMGD_JOB_CANCELLED ? 409 : 500;
        if (err) (void)cJSON_AddStringToObject(err, "job", id);
        svc_send_json(resp, hs, err ? err : cJSON_CreateObject());
        resp->content_type = "application/problem+json";
    }
    imgd_job_rec_free(rec);
}

static void r_jobs_post(imgd_server *s, const imgd_http_req *req, const char *arg,
                        imgd_http_resp *resp) {
    (void)arg;
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    char id[40];
    if (!submit_native(s, req, &who, resp, id, NULL)) return;
    imgd_job_rec *rec = NULL;
    if (imgd_jobstore_get(s->js, id, &rec) != IMGD_OK) {
        imgd_http_problem(resp, 500, "store", "The job vanished", imgd_last_error(), NULL, NULL);
        return;
    }
    (void)imgd_fmt(resp->location, sizeof resp->location, "/v1/jobs/%s", id);
    svc_send_json(resp, 202, svc_job_json(s, rec, false));
    imgd_job_rec_free(rec);
}

static bool job_id_ok(const char *id) {
    size_t n = strlen(id);
    if (n != IMGD_JOB_ID_LEN) return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

static imgd_job_rec *job_lookup(imgd_server *s, const char *id, imgd_http_resp *resp) {
    imgd_job_rec *rec = NULL;
    if (!job_id_ok(id)) {
        imgd_http_problem(resp, 404, "job-not-found", "No such job",
                          "job ids are 32 lowercase hex characters", NULL,
                          "use the id returned by POST /v1/jobs");
        return NULL;
    }
    imgd_status st = imgd_jobstore_get(s->js, id, &rec);
    if (st == IMGD_E_NOT_FOUND) {
        imgd_http_problem(resp, 404, "job-not-found", "No such job",
                          "no job has this id (finished jobs are kept for 24 hours)", NULL, NULL);
        return NULL;
    }
    if (st != IMGD_OK) {
        imgd_http_problem(resp, 500, "store", "The job store failed", imgd_last_error(), NULL,
                          NULL);
        return NULL;
    }
    return rec;
}

/* The caller's key checked, then the job: NULL with the problem written. */
static imgd_job_rec *auth_job_lookup(imgd_server *s, const imgd_http_req *req, const char *id,
                                     imgd_http_resp *resp) {
    imgd_auth_result who;
    return svc_auth_request(s, req, resp, &who) ? job_lookup(s, id, resp) : NULL;
}

static void r_job_get(imgd_server *s, const imgd_http_req *req, const char *id,
                      imgd_http_resp *resp) {
    imgd_job_rec *rec = auth_job_lookup(s, req, id, resp);
    if (!rec) return;
    svc_send_json(resp, 200, svc_job_json(s, rec, true));
    imgd_job_rec_free(rec);
}

static void r_job_delete(imgd_server *s, const imgd_http_req *req, const char *id,
                         imgd_http_resp *resp) {
    imgd_job_rec *rec = auth_job_lookup(s, req, id, resp);
    if (!rec) return;
    imgd_job_state after;
    imgd_status    cst = imgd_jobstore_cancel(s->js, id, &after);
    if (cst == IMGD_OK && rec->state == IMGD_JOB_QUEUED && after == IMGD_JOB_CANCELLED)
        svc_job_refund(s, rec); /* cancelled before it ran: nothing was made */
    imgd_job_rec_free(rec);
    if (cst != IMGD_OK) {
        imgd_http_problem(resp, 500, "store", "The job store failed", imgd_last_error(), NULL,
                          NULL);
        return;
    }
    svc_wake(s);
    rec = job_lookup(s, id, resp);
    if (!rec) return;
    cJSON *o = svc_job_json(s, rec, false);
    if (o) (void)cJSON_AddBoolToObject(o, "cancel_requested", true);
    svc_send_json(resp, imgd_job_state_finished(after) ? 200 : 202, o);
    imgd_job_rec_free(rec);
}

/* GET /v1/jobs/{id}/images/{n}: the n-th image's bytes (for response_format url). */
static void r_job_image(imgd_server *s, const imgd_http_req *req, const char *arg,
                        imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    char        id[64];
    int         idx   = -1;
    const char *slash = strchr(arg, '/');
    if (!slash || (size_t)(slash - arg) >= sizeof id || sscanf(slash + 1, "%d", &idx) != 1 ||
        idx < 0) {
        imgd_http_problem(resp, 404, "not-found", "No such image", "use /v1/jobs/{id}/images/{n}",
                          NULL, NULL);
        return;
    }
    memcpy(id, arg, (size_t)(slash - arg));
    id[slash - arg]   = '\0';
    imgd_job_rec *rec = job_lookup(s, id, resp);
    if (!rec) return;
    cJSON       *res   = rec->result_json ? cJSON_Parse(rec->result_json) : NULL;
    const cJSON *ims   = res ? cJSON_GetObjectItemCaseSensitive(res, "images") : NULL;
    const cJSON *im    = ims ? cJSON_GetArrayItem(ims, idx) : NULL;
    const cJSON *b64   = im ? cJSON_GetObjectItemCaseSensitive(im, "b64") : NULL;
    const cJSON *fmt   = im ? cJSON_GetObjectItemCaseSensitive(im, "format") : NULL;
    uint8_t     *bytes = NULL;
    size_t       n     = 0;
    if (!cJSON_IsString(b64) ||
        imgd_base64_decode(b64->valuestring, strlen(b64->valuestring), &bytes, &n) != IMGD_OK) {
        imgd_http_problem(resp, 404, "not-found", "No such image",
                          "the job has no image with this index (yet)", NULL, NULL);
    } else {
        imgd_buf_free(&resp->body);
        imgd_buf_init(&resp->body, n + 1);
        if (imgd_buf_append(&resp->body, bytes, n) == IMGD_OK) {
            resp->status       = 200;
            const char *f      = cJSON_IsString(fmt) ? fmt->valuestring : "png";
            resp->content_type = strcmp(f, "jpeg") == 0 || strcmp(f, "jpg") == 0 ? "image/jpeg"
                                 : strcmp(f, "webp") == 0                        ? "image/webp"
                                                                                 : "image/png";
        } else {
            imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        }
    }
    imgd_free(bytes);
    cJSON_Delete(res);
    imgd_job_rec_free(rec);
}

/* ---- server-sent events ------------------------------------------------------------------- */

typedef struct sse_ctx {
    imgd_server *s;
    char         id[40];
    uint64_t     seen_seq;
    bool         first, done;
} sse_ctx;

static int64_t sse_next(void *arg, char *out, size_t cap) {
    sse_ctx     *c = arg;
    imgd_server *s = c->s;
    if (c->done) return -1;
    if (!c->first) {
        /* wait for an event (or 15 s for a keep-alive comment) */
        struct timespec end;
        clock_gettime(CLOCK_REALTIME, &end);
        end.tv_sec += 15;
        pthread_mutex_lock(&s->mu);
        int rc = 0;
        while (s->event_seq == c->seen_seq && rc == 0 && !s->hard_stop)
            rc = pthread_cond_timedwait(&s->cv_event, &s->mu, &end);
        c->seen_seq = s->event_seq;
        bool stop   = s->hard_stop;
        pthread_mutex_unlock(&s->mu);
        if (stop) return -1;
        if (rc != 0) return snprintf(out, cap, ": keep-alive\n\n");
    }
    c->first          = false;
    imgd_job_rec *rec = NULL;
    if (imgd_jobstore_get(s->js, c->id, &rec) != IMGD_OK) return -1;
    cJSON *o   = svc_job_json(s, rec, false);
    char  *txt = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    bool fin = imgd_job_state_finished(rec->state);
    imgd_job_rec_free(rec);
    if (!txt) return -1;
    int n = snprintf(out, cap, "event: %s\ndata: %s\n\n", fin ? "done" : "progress", txt);
    cJSON_free(txt);
    if (fin) c->done = true;
    if (n < 0 || (size_t)n >= cap) return -1;
    return n;
}

static void sse_free(void *arg) {
    imgd_free(arg);
}

static void r_job_events(imgd_server *s, const imgd_http_req *req, const char *id,
                         imgd_http_resp *resp) {
    imgd_job_rec *rec = auth_job_lookup(s, req, id, resp);
    if (!rec) return;
    imgd_job_rec_free(rec);
    sse_ctx *c = imgd_calloc(1, sizeof *c);
    if (!c) {
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return;
    }
    c->s     = s;
    c->first = true;
    (void)imgd_fmt(c->id, sizeof c->id, "%s", id);
    pthread_mutex_lock(&s->mu);
    c->seen_seq = s->event_seq;
    pthread_mutex_unlock(&s->mu);
    resp->status       = 200;
    resp->content_type = "text/event-stream";
    resp->stream       = sse_next;
    resp->stream_ctx   = c;
    resp->stream_free  = sse_free;
}

/* Rows with a suffix come before the bare {id} row of the same prefix (ids may hold '/'). */
static const route k_routes[] = {
    {"GET", "/v1/health", "", false, r_health, "/v1/health"},
    {"GET", "/v1/ready", "", false, r_ready, "/v1/ready"},
    {"GET", "/v1/metrics", "", false, r_metrics, "/v1/metrics"},
    {"GET", "/v1/models", "", false, r_models, "/v1/models"},
    {"GET", "/v1/models/", "/schema", true, r_model_schema, "/v1/models/{id}/schema"},
    {"POST", "/v1/models/", "/load", true, r_model_load, "/v1/models/{id}/load"},
    {"POST", "/v1/models/", "/unload", true, r_model_unload, "/v1/models/{id}/unload"},
    {"POST", "/v1/models/", "/pin", true, r_model_pin, "/v1/models/{id}/pin"},
    {"POST", "/v1/models/", "/unpin", true, r_model_unpin, "/v1/models/{id}/unpin"},
    {"POST", "/v1/models/", "/rollback", true, r_model_rollback, "/v1/models/{id}/rollback"},
    {"GET", "/v1/models/", "", true, r_model, "/v1/models/{id}"},
    {"POST", "/v1/generate", "", false, r_generate, "/v1/generate"},
    {"POST", "/v1/jobs", "", false, r_jobs_post, "/v1/jobs"},
    {"GET", "/v1/jobs/", "/events", true, r_job_events, "/v1/jobs/{id}/events"},
    {"GET", "/v1/jobs/", "", true, r_job_get, "/v1/jobs/{id}"},
    {"DELETE", "/v1/jobs/", "", true, r_job_delete, "/v1/jobs/{id}"},
};

/* Matches path against a row; the argument goes to arg. */
static bool route_match(const route *r, const char *path, char *arg, size_t cap) {
    size_t pl = strlen(r->prefix), sl = strlen(r->suffix), n = strlen(path);
    if (strncmp(path, r->prefix, pl) != 0) return false;
    if (!r->has_arg) return n == pl;
    if (n < pl + sl + 1 || strcmp(path + n - sl, r->suffix) != 0) return false;
    char   raw[SVC_ID_MAX * 3];
    size_t al = n - pl - sl;
    if (al >= sizeof raw) return false;
    memcpy(raw, path + pl, al);
    raw[al] = '\0';
    /* libmicrohttpd has already percent-decoded the path once; decoding again would let
     * "%252e" become "." (and an id with a literal '%' unreachable). */
    if (al >= cap) return false;
    memcpy(arg, raw, al + 1);
    return true;
}

void svc_route(void *app, const imgd_http_req *req, imgd_http_resp *resp) {
    imgd_server *s = app;
    char         arg[SVC_ID_MAX * 3];
    char         allow[64] = "";
    /* job images: /v1/jobs/{id}/images/{n} */
    if (strncmp(req->path, "/v1/jobs/", 9) == 0 && strstr(req->path + 9, "/images/")) {
        resp->route = "/v1/jobs/{id}/images/{n}";
        if (strcmp(req->method, "GET") != 0) {
            (void)imgd_fmt(resp->allow, sizeof resp->allow, "GET");
            imgd_http_problem(resp, 405, "method-not-allowed", "Method not allowed",
                              "this path answers GET", NULL, NULL);
            return;
        }
        char tmp[SVC_ID_MAX];
        (void)imgd_fmt(tmp, sizeof tmp, "%s", req->path + 9);
        char *p = strstr(tmp, "/images/");
        memmove(p + 1, p + 8, strlen(p + 8) + 1);
        r_job_image(s, req, tmp, resp);
        return;
    }
    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        const route *r = &k_routes[i];
        if (!route_match(r, req->path, arg, sizeof arg)) continue;
        if (strcmp(r->method, req->method) != 0) {
            size_t al = strlen(allow);
            if (!strstr(allow, r->method))
                (void)imgd_fmt(allow + al, sizeof allow - al, "%s%s", al ? ", " : "", r->method);
            continue;
        }
        resp->route = r->name;
        r->fn(s, req, arg, resp);
        return;
    }
    if (svc_route_compat(s, req, resp)) return;
    if (allow[0]) {
        resp->route = "(method not allowed)";
        (void)imgd_fmt(resp->allow, sizeof resp->allow, "%s", allow);
        char detail[128];
        (void)imgd_fmt(detail, sizeof detail, "%s is not allowed here; use %s", req->method, allow);
        imgd_http_problem(resp, 405, "method-not-allowed", "Method not allowed", detail, NULL,
                          NULL);
        return;
    }
    resp->route = "(not found)";
    imgd_http_problem(resp, 404, "not-found", "No such endpoint", req->path, NULL,
                      "the native API is under /v1 (GET /v1/health, POST /v1/generate, ...)");
}
