/* Native generation requests: validation against the model's schema, submission as a job,
 * waiting for it, and the translation of a stored request into imgd_gen_params and of a
 * result into the stored result JSON. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "base/alloc.h"
#include "base/base64.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/text.h"
#include "pipeline/image.h"
#include "service/registry.h"
#include "service/schema.h"
#include "service/service_impl.h"

int64_t svc_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- prepare and submit ------------------------------------------------------------------- */

static uint32_t random_seed(void) {
    uint32_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) v = (uint32_t)svc_now_ms();
    return v;
}

static imgd_status decode_image(const cJSON *o, const char *k, imgd_image_u8 *out);

static bool image_refused(imgd_status st, const char *ptr, imgd_http_resp *resp) {
    if (st == IMGD_E_NOMEM) {
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return true;
    }
    if (st == IMGD_OK) return false;
    imgd_http_problem(resp, 400, "validation", "The image cannot be used", imgd_last_error(), ptr,
                      "send a PNG, JPEG or WebP file as standard base64");
    return true;
}

/* The schema checks that images are base64; decode them now too, so a body that is not a
 * PNG, JPEG or WebP is refused with a 400 before a job exists (not accepted and failed).
 * Also what the schema cannot say: a control's start must be below its end. */
static bool images_ok(const cJSON *req, imgd_http_resp *resp) {
    static const char *const k_fields[] = {"init_image", "mask_image"};
    char                     ptr[64];
    for (size_t i = 0; i < sizeof k_fields / sizeof k_fields[0]; i++) {
        imgd_image_u8 img;
        memset(&img, 0, sizeof img);
        imgd_status st = decode_image(req, k_fields[i], &img);
        imgd_image_u8_free(&img);
        (void)imgd_fmt(ptr, sizeof ptr, "/%s", k_fields[i]);
        if (image_refused(st, ptr, resp)) return false;
    }
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(req, "controls");
    for (int i = 0; i < cJSON_GetArraySize(arr); i++) {
        const cJSON  *c = cJSON_GetArrayItem(arr, i);
        imgd_image_u8 img;
        memset(&img, 0, sizeof img);
        imgd_status st = decode_image(c, "image", &img);
        imgd_image_u8_free(&img);
        (void)imgd_fmt(ptr, sizeof ptr, "/controls/%d/image", i);
        if (image_refused(st, ptr, resp)) return false;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(c, "start");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(c, "end");
        double       s = cJSON_IsNumber(a) ? a->valuedouble : 0.0;
        double       e = cJSON_IsNumber(b) ? b->valuedouble : 1.0;
        if (s >= e) {
            char detail[160];
            (void)imgd_fmt(detail, sizeof detail, "controls[%d]: start %g is not below end %g", i,
                           s, e);
            (void)imgd_fmt(ptr, sizeof ptr, "/controls/%d/end", i);
            imgd_http_problem(resp, 400, "validation", "Invalid ControlNet step range", detail, ptr,
                              "use 0 <= start < end <= 1");
            return false;
        }
    }
    return true;
}

/* req[key] (a string naming a model by id, file name or hash) becomes the registry id `id`;
 * false when out of memory. */
static bool name_canon(cJSON *req, const char *key, const char *id) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, key);
    if (cJSON_IsString(v) && strcmp(v->valuestring, id) == 0) return true;
    cJSON *canon = cJSON_CreateString(id);
    if (canon && cJSON_ReplaceItemInObjectCaseSensitive(req, key, canon)) return true;
    cJSON_Delete(canon);
    return false;
}

bool svc_request_prepare(imgd_server *s, cJSON *req, char *model_id, size_t cap,
                         imgd_http_resp *resp) {
    if (!cJSON_IsObject(req)) {
        imgd_http_problem(resp, 400, "invalid-request", "The request must be a JSON object",
                          "the body is JSON but not an object", "", "send {\"prompt\": \"...\"}");
        return false;
    }
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(req, "model");
    pthread_mutex_lock(&s->mu);
    const char *id = NULL;
    if (cJSON_IsString(jm)) {
        id = jm->valuestring;
    } else if (jm && !cJSON_IsNull(jm)) {
        pthread_mutex_unlock(&s->mu);
        imgd_http_problem(resp, 400, "invalid-request", "Invalid model",
                          "model: expected a string (a model id)", "/model",
                          "GET /v1/models lists the ids");
        return false;
    } else {
        id = svc_model_single_loaded(s);
        if (!id) {
            pthread_mutex_unlock(&s->mu);
            imgd_http_problem(resp, 400, "model-required", "Which model?",
                              "the request names no model, and not exactly one model is loaded",
                              "/model", "add \"model\": an id from GET /v1/models");
            return false;
        }
    }
    int32_t hs;
    char    detail[768];
    /* A refiner named by file name or hash: the stored request names its registry id (one
     * the schema's enum lists). Looked up first: a lookup may move the table's entries. */
    const cJSON *jr = cJSON_GetObjectItemCaseSensitive(req, "refiner");
    svc_model   *rm =
        cJSON_IsString(jr) ? svc_model_find(s, jr->valuestring, &hs, detail, sizeof detail) : NULL;
    if (rm && !name_canon(req, "refiner", rm->id)) {
        pthread_mutex_unlock(&s->mu);
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return false;
    }
    svc_model *sm = svc_model_find(s, id, &hs, detail, sizeof detail);
    if (!sm) {
        pthread_mutex_unlock(&s->mu);
        imgd_http_problem(resp, hs, hs == 404 ? "model-not-found" : "bad-model", "Model unusable",
                          detail, "/model", "GET /v1/models lists the models this worker serves");
        return false;
    }
    (void)imgd_fmt(model_id, cap, "%s", sm->id);
    sm->last_used_ms = svc_now_ms();
    /* a model named by file name or hash: the stored request names its registry id */
    if (cJSON_IsString(jm) && !name_canon(req, "model", sm->id)) {
        pthread_mutex_unlock(&s->mu);
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return false;
    }
    imgd_schema_violation v;
    bool                  ok = imgd_schema_validate(sm->schema, req, &v);
    imgd_status st = ok ? svc_lora_weight_defaults(sm->schema, req) : IMGD_OK; /* CivitAI */
    if (ok && st == IMGD_OK) st = imgd_schema_apply_defaults(sm->schema, req);
    pthread_mutex_unlock(&s->mu);
    if (!ok) {
        imgd_http_problem(resp, 400, "validation", "The request does not match the model's schema",
                          v.detail, v.pointer, v.hint);
        return false;
    }
    if (st != IMGD_OK) {
        imgd_http_problem(resp, 500, "internal", "Out of memory", imgd_last_error(), NULL, NULL);
        return false;
    }
    if (!images_ok(req, resp)) return false;
    /* The stored request is complete and reproducible: model and a fixed seed. */
    cJSON *seed = cJSON_GetObjectItemCaseSensitive(req, "seed");
    if (!cJSON_IsNumber(seed) || seed->valuedouble < 0) {
        cJSON *ns = cJSON_CreateNumber((double)random_seed());
        if (!ns || (seed ? !cJSON_ReplaceItemInObjectCaseSensitive(req, "seed", ns)
                         : !cJSON_AddItemToObject(req, "seed", ns))) {
            cJSON_Delete(ns);
            imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
            return false;
        }
    }
    if (!cJSON_GetObjectItemCaseSensitive(req, "model") &&
        !cJSON_AddStringToObject(req, "model", model_id)) {
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return false;
    }
    return true;
}

static char *batch_key(const cJSON *req) {
    /* Requests that may share a sampling loop (imgd_generate_many): same model, size, steps,
     * sampler, schedule, and txt2img or img2img with the same strength. The scheduler
     * splits a claimed batch further by imgd_gen_batch_key (prompt chunk counts). */
    char        key[768];
    const char *fields[] = {"model", "width", "height", "steps", "sampler", "schedule"};
    size_t      n        = 0;
    key[0]               = '\0';
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, fields[i]);
        char         part[600];
        if (cJSON_IsString(v))
            (void)imgd_fmt(part, sizeof part, "%s|", v->valuestring);
        else if (cJSON_IsNumber(v))
            (void)imgd_fmt(part, sizeof part, "%.17g|", v->valuedouble);
        else
            (void)imgd_fmt(part, sizeof part, "-|");
        size_t pl = strlen(part);
        if (n + pl >= sizeof key) return NULL;
        memcpy(key + n, part, pl + 1);
        n += pl;
    }
    const cJSON *init = cJSON_GetObjectItemCaseSensitive(req, "init_image");
    const cJSON *str  = cJSON_GetObjectItemCaseSensitive(req, "strength");
    char         tail[64];
    (void)imgd_fmt(tail, sizeof tail, "init=%.9g",
                   init && str && cJSON_IsNumber(str) ? str->valuedouble : -1.0);
    if (n + strlen(tail) >= sizeof key) return NULL;
    memcpy(key + n, tail, strlen(tail) + 1);
    return imgd_strdup(key);
}

bool svc_job_submit(imgd_server *s, const imgd_http_req *hr, cJSON *req, const char *model_id,
                    const char *api, const char *key_name, char id_out[40], imgd_http_resp *resp) {
    size_t counts[IMGD_JOB_STATE_COUNT] = {0};
    if (imgd_jobstore_count(s->js, counts) == IMGD_OK &&
        counts[IMGD_JOB_QUEUED] >= (size_t)s->p.queue_max) {
        (void)imgd_fmt(resp->retry_after, sizeof resp->retry_after, "5");
        char detail[160];
        (void)imgd_fmt(detail, sizeof detail, "%zu jobs are queued, the most this worker accepts",
                       counts[IMGD_JOB_QUEUED]);
        imgd_http_problem(resp, 503, "queue-full", "The queue is full", detail, NULL,
                          "retry after a few seconds");
        return false;
    }
    char *text = cJSON_PrintUnformatted(req);
    if (!text) {
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return false;
    }
    imgd_job_rec rec;
    memset(&rec, 0, sizeof rec);
    /* the store copies the strings; the record's fields are not const */
    rec.model        = imgd_strdup(model_id);
    rec.api          = imgd_strdup(api);
    rec.key_name     = key_name ? imgd_strdup(key_name) : NULL;
    rec.request_json = text;
    rec.batch_key    = batch_key(req);
    const cJSON *pr  = cJSON_GetObjectItemCaseSensitive(req, "priority");
    rec.priority     = pr && cJSON_IsNumber(pr) ? (int32_t)pr->valuedouble : 0;
    const cJSON *st_ = cJSON_GetObjectItemCaseSensitive(req, "steps");
    rec.steps        = st_ && cJSON_IsNumber(st_) ? (int32_t)st_->valuedouble : 0;
    const cJSON *to  = cJSON_GetObjectItemCaseSensitive(req, "timeout_s");
    if (cJSON_IsNumber(to) && to->valuedouble > 0)
        rec.deadline_ms = svc_now_ms() + (int64_t)(to->valuedouble * 1000.0);
    imgd_status st = rec.model && rec.api && (rec.key_name || !key_name)
                         ? imgd_jobstore_submit(s->js, &rec)
                         : imgd_fail(IMGD_E_NOMEM, "out of memory");
    cJSON_free(text);
    imgd_free(rec.batch_key);
    imgd_free(rec.model);
    imgd_free(rec.api);
    imgd_free(rec.key_name);
    if (st != IMGD_OK) {
        imgd_http_problem(resp, 500, "store", "The job could not be stored", imgd_last_error(),
                          NULL, "check the state directory's disk space and permissions");
        return false;
    }
    memcpy(id_out, rec.id, sizeof rec.id);
    IMGD_LOG(IMGD_LOG_INFO, "service", "job_accepted", "job %s model %s api %s peer %s", rec.id,
             model_id, api, hr && hr->peer ? hr->peer : "");
    svc_wake(s);
    return true;
}

bool svc_job_wait(imgd_server *s, const char *id, double timeout_s) {
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    double t    = (double)end.tv_sec + (double)end.tv_nsec * 1e-9 + timeout_s;
    end.tv_sec  = (time_t)t;
    end.tv_nsec = (long)((t - (double)end.tv_sec) * 1e9);
    for (;;) {
        imgd_job_rec *rec = NULL;
        pthread_mutex_lock(&s->mu);
        uint64_t seq = s->event_seq;
        pthread_mutex_unlock(&s->mu);
        if (imgd_jobstore_get(s->js, id, &rec) != IMGD_OK) return false;
        bool done = imgd_job_state_finished(rec->state);
        imgd_job_rec_free(rec);
        if (done) return true;
        pthread_mutex_lock(&s->mu);
        int rc = 0;
        while (s->event_seq == seq && rc == 0 && !s->hard_stop)
            rc = pthread_cond_timedwait(&s->cv_event, &s->mu, &end);
        bool stop = s->hard_stop;
        pthread_mutex_unlock(&s->mu);
        if (rc != 0 || stop) return false;
    }
}

/* ---- stored request -> gen params ----------------------------------------------------------- */

static const char *jstr(const cJSON *o, const char *k, const char *dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

static double jnum(const cJSON *o, const char *k, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static imgd_status decode_image(const cJSON *o, const char *k, imgd_image_u8 *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v)) return IMGD_OK;
    uint8_t    *bytes = NULL;
    size_t      n     = 0;
    imgd_status st =
        imgd_base64_decode_data_url(v->valuestring, strlen(v->valuestring), &bytes, &n);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s", k);
    imgd_image img;
    st = imgd_image_decode(bytes, n, k, NULL, &img);
    imgd_free(bytes);
    if (st != IMGD_OK) return st;
    out->w  = img.w;
    out->h  = img.h;
    out->c  = img.c;
    out->px = img.px;
    return IMGD_OK;
}

imgd_status svc_request_to_params(const char *request_json, imgd_gen_params *gp,
                                  svc_gen_hold *hold) {
    memset(hold, 0, sizeof *hold);
    imgd_status st = imgd_json_parse("stored request", request_json, strlen(request_json),
                                     (size_t)1 << 30, 64, &hold->req);
    if (st != IMGD_OK) return st;
    const cJSON *r = hold->req;
    *gp            = imgd_gen_params_default();
    gp->prompt     = jstr(r, "prompt", "");
    gp->negative   = jstr(r, "negative_prompt", NULL);
    gp->seed       = (uint64_t)jnum(r, "seed", 0);
    gp->rng =
        strcmp(jstr(r, "rng", "cpu"), "philox") == 0 ? IMGD_RNG_MODE_PHILOX : IMGD_RNG_MODE_CPU;
    gp->sampler         = jstr(r, "sampler", gp->sampler);
    gp->schedule        = jstr(r, "schedule", gp->schedule);
    gp->steps           = (int32_t)jnum(r, "steps", gp->steps);
    gp->cfg             = (float)jnum(r, "cfg_scale", (double)gp->cfg);
    gp->width           = (int32_t)jnum(r, "width", gp->width);
    gp->height          = (int32_t)jnum(r, "height", gp->height);
    gp->batch           = (int32_t)jnum(r, "batch_size", gp->batch);
    gp->clip_skip       = (int32_t)jnum(r, "clip_skip", gp->clip_skip);
    gp->strength        = (float)jnum(r, "strength", (double)gp->strength);
    gp->mask_blur       = (int32_t)jnum(r, "mask_blur", gp->mask_blur);
    gp->orig_width      = (int32_t)jnum(r, "original_width", 0);
    gp->orig_height     = (int32_t)jnum(r, "original_height", 0);
    gp->crop_left       = (int32_t)jnum(r, "crop_left", 0);
    gp->crop_top        = (int32_t)jnum(r, "crop_top", 0);
    gp->target_width    = (int32_t)jnum(r, "target_width", 0);
    gp->target_height   = (int32_t)jnum(r, "target_height", 0);
    gp->aesthetic_score = (float)jnum(r, "aesthetic_score", (double)gp->aesthetic_score);
    gp->refiner_switch  = (float)jnum(r, "refiner_switch", (double)gp->refiner_switch);
    gp->negative_aesthetic_score =
        (float)jnum(r, "negative_aesthetic_score", (double)gp->negative_aesthetic_score);
    gp->guidance            = (float)jnum(r, "guidance", (double)gp->guidance);
    gp->max_sequence_length = (int32_t)jnum(r, "max_sequence_length", 0);
    st                      = decode_image(r, "init_image", &hold->init);
    if (st == IMGD_OK) st = decode_image(r, "mask_image", &hold->mask);
    if (st != IMGD_OK) {
        svc_gen_hold_free(hold);
        return st;
    }
    if (hold->init.px) gp->init = &hold->init;
    if (hold->mask.px) gp->mask = &hold->mask;
    return IMGD_OK;
}

/* One "controls" item -> spec: the id resolved by the registry (a ControlNet), the image
 * decoded into hold, the rest with the schema's defaults (already filled). */
static imgd_status control_resolve(imgd_server *s, svc_gen_hold *hold, const cJSON *c, int i) {
    const cJSON   *id = cJSON_GetObjectItemCaseSensitive(c, "model");
    imgd_reg_entry e;
    if (!cJSON_IsString(id) || imgd_registry_find(s->reg, id->valuestring, &e) != IMGD_OK)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "controls[%d].model: no ControlNet '%s' under the "
                         "model dirs (the model's schema lists them)",
                         i, cJSON_IsString(id) ? id->valuestring : "?");
    if (strcmp(e.kind, "controlnet") != 0)
        return imgd_fail(IMGD_E_INVALID_ARG, "controls[%d].model: '%s' is a %s, not a ControlNet",
                         i, e.id, e.kind[0] ? e.kind : "file detection could not classify");
    size_t k = hold->n_controls;
    if (!(hold->control_paths[k] = imgd_strdup(e.path)))
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    hold->n_controls++;
    imgd_status st = decode_image(c, "image", &hold->control_img[k]);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "controls[%d]", i);
    if (!hold->control_img[k].px)
        return imgd_fail(IMGD_E_INVALID_ARG, "controls[%d].image: missing", i);
    imgd_control_spec *cs = &hold->controls[k];
    *cs                   = imgd_control_spec_default();
    cs->path              = hold->control_paths[k];
    cs->image             = &hold->control_img[k];
    cs->scale             = (float)jnum(c, "scale", (double)cs->scale);
    cs->start             = (float)jnum(c, "start", (double)cs->start);
    cs->end               = (float)jnum(c, "end", (double)cs->end);
    cs->low               = (float)jnum(c, "low_threshold", (double)cs->low);
    cs->high              = (float)jnum(c, "high_threshold", (double)cs->high);
    cs->threshold         = (float)jnum(c, "threshold", (double)cs->threshold);
    const char *pre       = jstr(c, "preprocess", "none");
    const char *rm        = jstr(c, "resize_mode", "just");
    if (!imgd_control_pre_parse(pre, &cs->preprocess))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "controls[%d].preprocess: unknown '%s' (none, canny, scribble, "
                         "lineart, invert)",
                         i, pre);
    if (!imgd_control_resize_parse(rm, &cs->resize_mode))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "controls[%d].resize_mode: unknown '%s' (just, crop, fill)", i, rm);
    cs->guess_mode = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "guess_mode"));
    return IMGD_OK;
}

imgd_status svc_controls_resolve(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(hold->req, "controls");
    int          n   = cJSON_GetArraySize(arr);
    if (n <= 0) return IMGD_OK;
    if (n > IMGD_CONTROL_MAX)
        return imgd_fail(IMGD_E_INVALID_ARG, "controls: at most %d ControlNets", IMGD_CONTROL_MAX);
    for (int i = 0; i < n; i++) {
        imgd_status st = control_resolve(s, hold, cJSON_GetArrayItem(arr, i), i);
        if (st != IMGD_OK) return st;
    }
    gp->controls   = hold->controls;
    gp->n_controls = n;
    return IMGD_OK;
}

void svc_gen_hold_free(svc_gen_hold *hold) {
    for (size_t i = 0; i < hold->n_paths; i++) imgd_free(hold->paths[i]);
    imgd_free(hold->paths);
    imgd_free(hold->loras);
    imgd_free(hold->with_unit);
    imgd_free(hold->prompt);
    for (size_t i = 0; i < hold->n_tags; i++) imgd_free(hold->tag_paths[i]);
    for (size_t i = 0; i < hold->n_hypernets; i++) imgd_free(hold->hypernet_paths[i]);
    for (size_t i = 0; i < hold->n_controls; i++) {
        imgd_free(hold->control_paths[i]);
        imgd_image_u8_free(&hold->control_img[i]);
    }
    cJSON_Delete(hold->req);
    imgd_image_u8_free(&hold->init);
    imgd_image_u8_free(&hold->mask);
    memset(hold, 0, sizeof *hold);
}

/* ---- result -> stored JSON ------------------------------------------------------------------ */

static imgd_status add_image(imgd_buf *b, const imgd_image_u8 *im, const char *infotext,
                             imgd_image_format fmt, const char *fmt_name, uint64_t seed,
                             int32_t index) {
    imgd_image             img = {.w = im->w, .h = im->h, .c = im->c, .px = im->px};
    imgd_image_save_params sp  = imgd_image_save_params_default();
    sp.format                  = fmt;
    sp.parameters              = infotext;
    uint8_t    *enc            = NULL;
    size_t      n              = 0;
    char       *b64            = NULL;
    imgd_status st             = imgd_image_encode(&img, &sp, &enc, &n);
    if (st == IMGD_OK) st = imgd_base64_encode(enc, n, &b64, NULL);
    imgd_free(enc);
    if (st == IMGD_OK)
        st = imgd_buf_printf(b,
                             "%s{\"b64\":\"%s\",\"seed\":%llu,\"index\":%d,\"format\":\"%s\","
                             "\"width\":%d,\"height\":%d}",
                             index ? "," : "", b64, (unsigned long long)seed, (int)index, fmt_name,
                             (int)im->w, (int)im->h);
    imgd_free(b64);
    return st;
}

imgd_status svc_result_json(const imgd_gen_result *r, const imgd_gen_params *gp, const char *format,
                            char **out) {
    imgd_image_format fmt;
    char              path[32];
    (void)imgd_fmt(path, sizeof path, "x.%s", format ? format : "png");
    imgd_status st = imgd_image_format_from_path(path, &fmt);
    if (st != IMGD_OK) return st;
    imgd_buf b;
    imgd_buf_init(&b, (size_t)1 << 31);
    st = imgd_buf_puts(&b, "{\"images\":[");
    for (int32_t i = 0; st == IMGD_OK && i < r->n; i++)
        st = add_image(&b, &r->images[i], r->infotext, fmt, format ? format : "png", gp->seed, i);
    if (st == IMGD_OK)
        st = imgd_buf_printf(&b,
                             "],\"timings\":{\"encode_s\":%.6f,\"sample_s\":%.6f,"
                             "\"decode_s\":%.6f,\"total_s\":%.6f},\"steps_run\":%d,"
                             "\"infotext\":",
                             r->t_encode_s, r->t_sample_s, r->t_decode_s, r->t_total_s,
                             (int)r->steps_run);
    if (st == IMGD_OK) st = imgd_buf_json_str(&b, r->infotext ? r->infotext : "");
    if (st == IMGD_OK) st = imgd_buf_puts(&b, "}");
    if (st != IMGD_OK) {
        imgd_buf_free(&b);
        return st;
    }
    *out = imgd_buf_take(&b);
    return IMGD_OK;
}
