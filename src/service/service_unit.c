/* The worker's --model-id unit (issue 11): the resolved model, the adapter applied to every
 * request for it, the warm-up generation and what /v1/models/{id} says about them. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/map.h"
#include "base/text.h"
#include "service/model_id.h"
#include "service/service_impl.h"

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- resolution ----------------------------------------------------------------------------- */

imgd_status imgd_model_id_resolve(const char *model_id, const char *state_dir,
                                  const char *download_dir, const char *const *search_dirs,
                                  size_t n_search_dirs, char **report_json) {
    if (!model_id || !report_json) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_model_id_resolve: NULL argument");
    }
    const char *sd = state_dir ? state_dir : "imgd-state";
    if (mkdir(sd, 0755) != 0 && errno != EEXIST) {
        return imgd_fail(IMGD_E_IO, "state dir %s: %s", sd, strerror(errno));
    }
    char *dl = download_dir ? imgd_strdup(download_dir) : imgd_path_join(sd, "models");
    if (!dl) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_mid_params mp = {model_id, dl, sd, search_dirs, n_search_dirs, NULL};
    imgd_mid_result r;
    imgd_status     st = imgd_mid_resolve(&mp, &r);
    if (st == IMGD_OK) {
        *report_json = imgd_mid_result_json(model_id, &r);
        if (!*report_json) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    imgd_mid_result_free(&r);
    imgd_free(dl);
    return st;
}

imgd_status svc_unit_setup(imgd_server *s, const imgd_serve_params *p, char *id, size_t cap) {
    char *dl =
        p->download_dir ? imgd_strdup(p->download_dir) : imgd_path_join(s->state_dir, "models");
    if (!dl) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_mid_params mp = {p->model_id, dl,  s->state_dir, (const char *const *)s->dirs,
                          s->n_dirs,   NULL};
    imgd_mid_result r;
    imgd_status     st       = imgd_mid_resolve(&mp, &r);
    bool            had_dirs = s->n_dirs > 0;
    if (st == IMGD_OK) st = svc_model_arg_to_id(s, r.base, id, cap);
    if (st == IMGD_OK) {
        svc_unit *u = &s->unit;
        u->active   = true;
        (void)imgd_fmt(u->id, sizeof u->id, "%s", id);
        (void)imgd_fmt(u->model_id, sizeof u->model_id, "%s", p->model_id);
        (void)imgd_fmt(u->source, sizeof u->source, "%s", r.source);
        (void)imgd_fmt(u->base_how, sizeof u->base_how, "%s", r.base_how);
        if (r.adapter) {
            (void)imgd_fmt(u->adapter, sizeof u->adapter, "%s", r.path);
            (void)imgd_fmt(u->adapter_kind, sizeof u->adapter_kind, "%s", r.kind);
            (void)imgd_fmt(u->weight_from, sizeof u->weight_from, "%s", r.weight_how);
            (void)imgd_fmt(u->trigger, sizeof u->trigger, "%s", r.trigger);
            u->weight        = r.adapter_weight;
            u->embeddings[0] = u->adapter;
        }
        if (!had_dirs) (void)imgd_fmt(s->only, sizeof s->only, "%s", id);
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.start_download_s = r.download_s;
        pthread_mutex_unlock(&s->metrics.mu);
        char *js = imgd_mid_result_json(p->model_id, &r);
        IMGD_LOG(IMGD_LOG_INFO, "service", "model_id_resolved", "%s", js ? js : p->model_id);
        imgd_free(js);
    }
    imgd_mid_result_free(&r);
    imgd_free(dl);
    return st;
}

/* ---- requests ------------------------------------------------------------------------------ */

static bool unit_lora(const imgd_server *s) {
    return s->unit.active && s->unit.adapter[0] && strcmp(s->unit.adapter_kind, "embedding") != 0;
}

imgd_status svc_unit_loras(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp) {
    if (!unit_lora(s)) return IMGD_OK;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(hold->req, "model");
    if (!cJSON_IsString(m) || strcmp(m->valuestring, s->unit.id) != 0) return IMGD_OK;
    int32_t n = gp->n_loras;
    for (int32_t i = 0; i < n; i++) {
        if (gp->loras[i].path && strcmp(gp->loras[i].path, s->unit.adapter) == 0) return IMGD_OK;
    }
    hold->with_unit = imgd_calloc((size_t)n + 1, sizeof *hold->with_unit);
    if (!hold->with_unit) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < n; i++) hold->with_unit[i] = gp->loras[i];
    hold->with_unit[n] = (imgd_lora_spec){s->unit.adapter, s->unit.weight, NAN,
                                          n > 0 ? gp->loras[0].mode : IMGD_LORA_MODE_AUTO};
    gp->loras          = hold->with_unit;
    gp->n_loras        = n + 1;
    return IMGD_OK;
}

/* ---- warm-up ------------------------------------------------------------------------------- */

imgd_status svc_unit_warmup(imgd_server *s, const char *id) {
    double           t0 = mono_s();
    imgd_model      *m  = NULL;
    char             canon[SVC_ID_MAX];
    imgd_status      st  = svc_model_acquire(s, id, &m, canon);
    imgd_gen_result *res = NULL;
    if (st == IMGD_OK) {
        imgd_gen_params gp = imgd_gen_params_default();
        gp.prompt          = s->unit.trigger[0] ? s->unit.trigger : "warm-up";
        gp.width           = 64;
        gp.height          = 64;
        gp.steps           = 1;
        gp.seed            = 0;
        imgd_lora_spec ls  = {s->unit.adapter, s->unit.weight, NAN, IMGD_LORA_MODE_AUTO};
        if (unit_lora(s) && strcmp(canon, s->unit.id) == 0) {
            gp.loras   = &ls;
            gp.n_loras = 1;
        }
        pthread_mutex_lock(&s->engine_mu);
        st = imgd_generate(m, &gp, &res);
        pthread_mutex_unlock(&s->engine_mu);
        imgd_gen_result_free(res);
        svc_model_release(s, canon);
    }
    double secs = mono_s() - t0;
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.start_warmup_s = secs;
    pthread_mutex_unlock(&s->metrics.mu);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "--warmup on %s", id);
    IMGD_LOG(IMGD_LOG_INFO, "service", "warmup", "%s: one 64x64 step in %.3f s", id, secs);
    return IMGD_OK;
}

/* ---- description ------------------------------------------------------------------------- */

void svc_unit_json(imgd_server *s, const char *id, cJSON *o) {
    const svc_unit *u = &s->unit;
    if (!o || !u->active || strcmp(id, u->id) != 0) return;
    (void)cJSON_AddStringToObject(o, "model_id", u->model_id);
    (void)cJSON_AddStringToObject(o, "model_id_source", u->source);
    if (!u->adapter[0]) {
        (void)cJSON_AddNullToObject(o, "adapter");
        return;
    }
    cJSON *a = cJSON_AddObjectToObject(o, "adapter");
    if (!a) return;
    (void)cJSON_AddStringToObject(a, "path", u->adapter);
    (void)cJSON_AddStringToObject(a, "kind", u->adapter_kind);
    (void)cJSON_AddNumberToObject(a, "weight", (double)u->weight);
    (void)cJSON_AddStringToObject(a, "weight_from", u->weight_from);
    (void)cJSON_AddStringToObject(a, "base_found_by", u->base_how);
    (void)cJSON_AddBoolToObject(a, "applied_to_every_request",
                                strcmp(u->adapter_kind, "embedding") != 0);
    cJSON *tw = cJSON_AddArrayToObject(a, "trigger_words");
    char   copy[sizeof u->trigger];
    (void)imgd_fmt(copy, sizeof copy, "%s", u->trigger);
    for (char *p = copy; tw && *p;) {
        char *e = strstr(p, ", ");
        if (e) *e = '\0';
        cJSON_AddItemToArray(tw, cJSON_CreateString(p));
        p = e ? e + 2 : p + strlen(p);
    }
}

double imgd_server_start_seconds(const imgd_server *s) {
    return s ? s->start_s : 0;
}
