/* The scheduler: one thread that owns the engine. It claims queued jobs from the store
 * (a batch of jobs with equal batch keys at a time), loads their model when needed, runs
 * them, reports progress at every step and stores each result before anyone sees it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"
#include "service/service_impl.h"

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void svc_wake(imgd_server *s) {
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
}

static void notify(imgd_server *s) {
    pthread_mutex_lock(&s->mu);
    s->event_seq++;
    pthread_cond_broadcast(&s->cv_event);
    pthread_mutex_unlock(&s->mu);
}

bool svc_live_get(imgd_server *s, const char *id, svc_live *out) {
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < SVC_BATCH_MAX && !found; i++) {
        if (s->live[i].active && strcmp(s->live[i].id, id) == 0) {
            *out  = s->live[i];
            found = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* ---- one job ------------------------------------------------------------------------------ */

typedef struct step_ctx {
    imgd_server *s;
    size_t       slot;
    const char  *id;
    int64_t      deadline_ms;
    bool         timed_out;
} step_ctx;

static bool on_step(int32_t step, int32_t steps, double elapsed_s, void *user) {
    (void)elapsed_s;
    step_ctx    *c = user;
    imgd_server *s = c->s;
    (void)imgd_jobstore_progress(s->js, c->id, step, steps);
    pthread_mutex_lock(&s->mu);
    s->live[c->slot].step  = step;
    s->live[c->slot].steps = steps;
    s->event_seq++;
    pthread_cond_broadcast(&s->cv_event);
    bool stop = s->hard_stop || s->interrupt_all;
    pthread_mutex_unlock(&s->mu);
    if (c->deadline_ms > 0 && svc_now_ms() > c->deadline_ms) {
        c->timed_out = true;
        return false;
    }
    return !stop && !imgd_jobstore_cancel_requested(s->js, c->id);
}

static char *error_json(int32_t status, const char *type, const char *title, const char *detail) {
    imgd_buf b;
    imgd_buf_init(&b, 1u << 16);
    imgd_status st =
        imgd_buf_printf(&b, "{\"type\":\"https://imgd.dev/problems/%s\",\"title\":", type);
    if (st == IMGD_OK) st = imgd_buf_json_str(&b, title);
    if (st == IMGD_OK) st = imgd_buf_printf(&b, ",\"status\":%d,\"detail\":", (int)status);
    if (st == IMGD_OK) st = imgd_buf_json_str(&b, detail);
    if (st == IMGD_OK) st = imgd_buf_puts(&b, "}");
    if (st != IMGD_OK) {
        imgd_buf_free(&b);
        return NULL;
    }
    return imgd_buf_take(&b);
}

/* A job that produced nothing gives its images back to the caller's daily quota. */
void svc_job_refund(imgd_server *s, const imgd_job_rec *rec) {
    if (!s->auth) return;
    const imgd_auth_key *key = imgd_auth_key_find(s->auth, rec->key_name);
    cJSON               *req = key ? cJSON_Parse(rec->request_json) : NULL;
    const cJSON         *bs  = req ? cJSON_GetObjectItemCaseSensitive(req, "batch_size") : NULL;
    int32_t              n   = bs && cJSON_IsNumber(bs) ? (int32_t)bs->valuedouble : 1;
    if (key && imgd_auth_refund_images(s->auth, key, n, rec->created_ms) != IMGD_OK)
        IMGD_LOG(IMGD_LOG_WARN, "sched", "refund_failed", "job %s: %s", rec->id, imgd_last_error());
    cJSON_Delete(req);
}

static void fail_job(imgd_server *s, const imgd_job_rec *rec, int32_t status, const char *type,
                     const char *title, const char *detail) {
    imgd_log_request_id_set(rec->id);
    char *ej = error_json(status, type, title, detail);
    if (imgd_jobstore_finish(s->js, rec->id, IMGD_JOB_FAILED, NULL, ej) != IMGD_OK)
        IMGD_LOG(IMGD_LOG_ERROR, "sched", "store_failed", "job %s: %s", rec->id, imgd_last_error());
    imgd_free(ej);
    svc_job_refund(s, rec);
    imgd_svc_metrics_error(&s->metrics, type);
    IMGD_LOG(IMGD_LOG_WARN, "sched", "job_failed", "job %s: %s", rec->id, detail);
    imgd_log_request_id_set(NULL);
}

static void set_current(imgd_server *s, const char *id) {
    pthread_mutex_lock(&s->mu);
    (void)imgd_fmt(s->current, sizeof s->current, "%s", id);
    pthread_mutex_unlock(&s->mu);
}

/* One claimed job on its way through a batch. */
typedef struct batch_item {
    imgd_job_rec   *rec;
    imgd_gen_params gp;
    svc_gen_hold    hold;
    step_ctx        ctx;
    char            key[IMGD_GEN_BATCH_KEY_MAX];
    bool            ready;                  /* params built; not yet run */
    imgd_model     *refiner;                /* the request's refiner, a reference held */
    char            refiner_id[SVC_ID_MAX]; /* its registry id ("" = none) */
    char            refiner_err[512];       /* why it could not be loaded */
} batch_item;

/* The refiner a request names ("refiner": a registry id, checked by the schema), loaded and
 * held for the batch. Taken before engine_mu, as the batch's model. */
static void refiner_acquire(imgd_server *s, batch_item *it) {
    cJSON       *req = cJSON_Parse(it->rec->request_json);
    const cJSON *r   = cJSON_GetObjectItemCaseSensitive(req, "refiner");
    if (cJSON_IsString(r) &&
        svc_model_acquire(s, r->valuestring, &it->refiner, it->refiner_id) != IMGD_OK) {
        (void)imgd_fmt(it->refiner_err, sizeof it->refiner_err, "refiner '%s': %s", r->valuestring,
                       imgd_last_error());
        it->refiner       = NULL;
        it->refiner_id[0] = '\0';
    }
    cJSON_Delete(req);
}

/* Stores the outcome of one job: its result, or why it has none. */
static void finish_item(imgd_server *s, batch_item *it, imgd_status st, const char *err,
                        const imgd_gen_result *r, uint64_t *images, uint64_t *steps) {
    const char *id = it->rec->id;
    imgd_log_request_id_set(id);
    pthread_mutex_lock(&s->mu);
    bool shutting = s->hard_stop;
    pthread_mutex_unlock(&s->mu);
    if (st == IMGD_OK) {
        char        *res = NULL;
        const char  *fmt = "png";
        const cJSON *of  = cJSON_GetObjectItemCaseSensitive(it->hold.req, "output_format");
        if (cJSON_IsString(of)) fmt = of->valuestring;
        imgd_status es = svc_result_json(r, &it->gp, fmt, &res);
        if (es == IMGD_OK) es = imgd_jobstore_finish(s->js, id, IMGD_JOB_SUCCEEDED, res, NULL);
        if (es != IMGD_OK)
            fail_job(s, it->rec, 500, "store", "The result could not be stored", imgd_last_error());
        imgd_free(res);
        *images += (uint64_t)r->n;
        *steps += (uint64_t)r->steps_run;
        IMGD_LOG(IMGD_LOG_INFO, "sched", "job_done", "job %s: %d image(s) in %.3f s", id, (int)r->n,
                 r->t_total_s);
    } else if (st == IMGD_E_CANCELLED && it->ctx.timed_out) {
        fail_job(s, it->rec, 504, "timeout", "The job ran past its timeout",
                 "timeout_s passed while it was running; raise timeout_s or lower steps");
    } else if (st == IMGD_E_CANCELLED && shutting) {
        (void)imgd_jobstore_release(s->js, id); /* runs again after the restart */
        IMGD_LOG(IMGD_LOG_INFO, "sched", "job_requeued", "job %s: stopped by shutdown", id);
    } else if (st == IMGD_E_CANCELLED) {
        char *ej = error_json(499, "cancelled", "Cancelled", "the job was cancelled");
        (void)imgd_jobstore_finish(s->js, id, IMGD_JOB_CANCELLED, NULL, ej);
        imgd_free(ej);
        svc_job_refund(s, it->rec);
        IMGD_LOG(IMGD_LOG_INFO, "sched", "job_cancelled", "job %s", id);
    } else {
        bool user = st == IMGD_E_INVALID_ARG || st == IMGD_E_FORMAT || st == IMGD_E_UNSUPPORTED;
        fail_job(s, it->rec, user ? 422 : 500, user ? "generation" : "internal",
                 "Generation failed", err);
    }
    imgd_log_request_id_set(NULL);
}

static void live_set(imgd_server *s, size_t slot, const char *id, int32_t steps, bool active) {
    pthread_mutex_lock(&s->mu);
    svc_live *lv = &s->live[slot];
    if (active) {
        memset(lv, 0, sizeof *lv);
        (void)imgd_fmt(lv->id, sizeof lv->id, "%s", id);
        lv->steps   = steps;
        lv->t_start = mono_s();
    }
    lv->active = active;
    pthread_mutex_unlock(&s->mu);
}

/* Runs the ready items whose key equals items[first]'s as one imgd_generate_many call. */
static void run_group(imgd_server *s, imgd_model *m, batch_item *items, size_t n, size_t first,
                      uint64_t *images, uint64_t *steps, double *sample_s) {
    const imgd_gen_params *ps[SVC_BATCH_MAX];
    size_t                 idx[SVC_BATCH_MAX], k = 0;
    int32_t                n_img = 0;
    for (size_t i = first; i < n; i++) {
        batch_item *it = &items[i];
        if (!it->ready || strcmp(it->key, items[first].key) != 0) continue;
        if (k > 0 && n_img + it->gp.batch > IMGD_GEN_MANY_IMAGES_MAX) continue;
        n_img += it->gp.batch;
        it->ready = false;
        live_set(s, i, it->rec->id, it->gp.steps, true);
        ps[k]    = &it->gp;
        idx[k++] = i;
    }
    imgd_gen_item_result out[SVC_BATCH_MAX];
    memset(out, 0, sizeof out);
    (void)imgd_generate_many(m, ps, k, out);
    double t_sample = 0;
    for (size_t j = 0; j < k; j++) {
        batch_item *it = &items[idx[j]];
        if (out[j].result && out[j].result->t_sample_s > t_sample)
            t_sample = out[j].result->t_sample_s;
        finish_item(s, it, out[j].status, out[j].error, out[j].result, images, steps);
        imgd_gen_result_free(out[j].result);
        live_set(s, idx[j], NULL, 0, false);
    }
    *sample_s += t_sample;
    if (k > 1) {
        /* the batch line carries its first job's id; the message names the others' count */
        imgd_log_request_id_set(items[idx[0]].rec->id);
        IMGD_LOG(IMGD_LOG_INFO, "sched", "batch", "%zu jobs, %d images in one loop", k, n_img);
        imgd_log_request_id_set(NULL);
    }
}

/* ---- the loop ----------------------------------------------------------------------------- */

static void run_batch(imgd_server *s, imgd_job_rec **recs, size_t n) {
    batch_item items[SVC_BATCH_MAX];
    uint64_t   images = 0, steps = 0;
    double     sample_s = 0;
    memset(items, 0, sizeof items);
    if (n > SVC_BATCH_MAX) n = SVC_BATCH_MAX; /* claim_batch never returns more */
    const char *model_id = recs[0]->model ? recs[0]->model : "";
    /* A reference for the whole batch: the memory cache never evicts a model in use. Taken
     * before engine_mu, which a load takes. */
    imgd_model *m = NULL;
    char        canon[SVC_ID_MAX];
    imgd_status lst = svc_model_acquire(s, model_id, &m, canon);
    char        lerr[512];
    (void)imgd_fmt(lerr, sizeof lerr, "%s", lst == IMGD_OK ? "" : imgd_last_error());
    if (m) set_current(s, canon);
    for (size_t i = 0; m && i < n; i++) {
        items[i].rec = recs[i];
        refiner_acquire(s, &items[i]);
    }
    pthread_mutex_lock(&s->engine_mu);
    for (size_t i = 0; i < n; i++) {
        batch_item *it = &items[i];
        it->rec        = recs[i];
        if (!m) {
            fail_job(s, it->rec, 422, "model-load", "The model could not be loaded",
                     lst == IMGD_OK ? "the model was unloaded" : lerr);
            continue;
        }
        if (it->refiner_err[0]) {
            fail_job(s, it->rec, 422, "model-load", "The refiner could not be loaded",
                     it->refiner_err);
            continue;
        }
        if (svc_request_to_params(it->rec->request_json, &it->gp, &it->hold) != IMGD_OK ||
            svc_loras_resolve(s, &it->hold, &it->gp) != IMGD_OK ||
            svc_hypernets_resolve(s, &it->hold, &it->gp) != IMGD_OK ||
            svc_controls_resolve(s, &it->hold, &it->gp) != IMGD_OK) {
            fail_job(s, it->rec, 400, "bad-input", "The request cannot be used", imgd_last_error());
            continue;
        }
        it->gp.refiner = it->refiner;
        it->ctx        = (step_ctx){s, i, it->rec->id, it->rec->deadline_ms, false};
        it->gp.on_step = on_step;
        it->gp.user    = &it->ctx;
        if (imgd_gen_batch_key(m, &it->gp, it->key, sizeof it->key) != IMGD_OK) {
            fail_job(s, it->rec, 422, "generation", "Generation failed", imgd_last_error());
            continue;
        }
        it->ready = true;
    }
    for (size_t i = 0; m && i < n; i++) {
        pthread_mutex_lock(&s->mu);
        bool stop = s->hard_stop; /* a stop with grace lets claimed jobs finish */
        pthread_mutex_unlock(&s->mu);
        if (!items[i].ready) continue;
        if (stop) {
            items[i].ready = false;
            (void)imgd_jobstore_release(s->js, items[i].rec->id);
            continue;
        }
        run_group(s, m, items, n, i, &images, &steps, &sample_s);
        notify(s);
    }
    pthread_mutex_unlock(&s->engine_mu);
    if (m) svc_model_release(s, canon);
    for (size_t i = 0; i < n; i++) {
        if (items[i].refiner_id[0]) svc_model_release(s, items[i].refiner_id);
        svc_gen_hold_free(&items[i].hold);
    }
    notify(s);
    imgd_svc_metrics_batch(&s->metrics, n, images, steps, sample_s);
}

/* Waits on cv_work until woken or ms pass; returns false when stopping. */
static bool idle_wait(imgd_server *s, int32_t ms) {
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    if (!s->stopping) (void)pthread_cond_timedwait(&s->cv_work, &s->mu, &end);
    bool go = !s->stopping;
    pthread_mutex_unlock(&s->mu);
    return go;
}

static void batch_done(imgd_server *s) {
    pthread_mutex_lock(&s->mu);
    s->batch_busy = false;
    pthread_mutex_unlock(&s->mu);
}

static void *sched_main(void *arg) {
    imgd_server *s       = arg;
    bool         idle    = true;
    int64_t      last_gc = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool stop        = s->stopping;
        s->interrupt_all = false;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        int64_t now = svc_now_ms();
        (void)imgd_jobstore_expire(s->js, now, NULL);
        if (now - last_gc > 600000) {
            (void)imgd_jobstore_gc(s->js, now - (int64_t)24 * 3600 * 1000, NULL);
            last_gc = now;
        }
        size_t counts[IMGD_JOB_STATE_COUNT] = {0};
        (void)imgd_jobstore_count(s->js, counts);
        if (counts[IMGD_JOB_QUEUED] == 0) {
            idle = true;
            if (!idle_wait(s, 500)) break;
            continue;
        }
        /* After idling, give concurrent clients a moment to fill a batch. */
        if (idle && s->p.batch_wait_ms > 0 && counts[IMGD_JOB_QUEUED] < (size_t)s->p.batch_max)
            (void)idle_wait(s, s->p.batch_wait_ms);
        idle                = false;
        imgd_job_rec **recs = NULL;
        size_t         n    = 0;
        /* Claimed jobs read as running to clients, so a stop with a grace period waits for
         * the batch (batch_busy, set before the claim) instead of only for the sampling. */
        pthread_mutex_lock(&s->mu);
        stop          = s->stopping;
        s->batch_busy = !stop;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        if (imgd_jobstore_claim_batch(s->js, NULL, s->p.batch_max, &recs, &n) != IMGD_OK) {
            batch_done(s);
            IMGD_LOG(IMGD_LOG_ERROR, "sched", "claim_failed", "%s", imgd_last_error());
            if (!idle_wait(s, 1000)) break;
            continue;
        }
        if (n > 0) run_batch(s, recs, n);
        batch_done(s);
        imgd_job_rec_list_free(recs, n);
    }
    return NULL;
}

imgd_status svc_sched_start(imgd_server *s) {
    if (pthread_create(&s->sched, NULL, sched_main, s) != 0)
        return imgd_fail(IMGD_E_NOMEM, "cannot start the scheduler thread");
    s->sched_started = true;
    return IMGD_OK;
}

void svc_sched_stop(imgd_server *s) {
    if (!s->sched_started) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
    (void)pthread_join(s->sched, NULL);
    s->sched_started = false;
}
