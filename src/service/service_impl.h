/* Internals shared by the worker's files: the server object, its models and the helpers
 * the route files call. Only src/service/ includes this. */
#ifndef IMGD_SERVICE_SERVICE_IMPL_H
#define IMGD_SERVICE_SERVICE_IMPL_H

#include <cjson/cJSON.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "imgd.h"
#include "service/auth.h"
#include "service/http.h"
#include "service/jobstore.h"
#include "service/metrics.h"
#include "service/model_cache.h"
#include "service/registry.h"
#include "service/schema.h"

#define SVC_MODELS_MAX 32
#define SVC_BATCH_MAX  16
#define SVC_LORAS_MAX  256 /* LoRAs listed in a schema */
#define SVC_ID_MAX     512

/* A servable model's descriptor: what the registry detected plus its request schema. The
 * table of these is a cache of schemas (any entry may be dropped); loaded models live in
 * the memory cache (s->cache), keyed by the same id. */
typedef struct svc_model {
    char    id[SVC_ID_MAX]; /* path relative to its model dir */
    char    path[PATH_MAX]; /* resolved absolute path */
    char    family[32];     /* imgd_family_name */
    char    kind[32];
    int64_t last_used_ms;
    cJSON  *schema; /* generation request schema (owned) */
} svc_model;

/* What --model-id resolved to (service.c): the model served and, for an adapter, the adapter
 * applied to every request for it. */
typedef struct svc_unit {
    bool        active;
    char        id[SVC_ID_MAX];    /* registry id of the base checkpoint */
    char        model_id[1024];    /* as given */
    char        source[16];        /* model_id.h imgd_mid_result.source */
    char        adapter[PATH_MAX]; /* "" = none */
    char        adapter_kind[32];  /* lora, lycoris, embedding */
    float       weight;            /* LoRA weight applied */
    char        weight_from[128];
    char        trigger[1024]; /* trigger words, ", "-separated */
    char        base_how[768]; /* how the base was found */
    const char *embeddings[1]; /* load params for an embedding adapter (points at adapter) */
} svc_unit;

typedef struct svc_runpod svc_runpod;

/* One running job's live progress. */
typedef struct svc_live {
    char    id[40];
    int32_t step, steps;
    double  t_start; /* monotonic seconds */
    bool    active;
} svc_live;

struct imgd_server {
    imgd_serve_params p;    /* strings below are owned copies */
    char            **dirs; /* resolved model dirs */
    size_t            n_dirs;
    char             *state_dir;
    cJSON            *config; /* parsed --config or NULL */
    imgd_jobstore    *js;
    imgd_auth        *auth;
    imgd_http        *http;
    imgd_svc_metrics  metrics;
    imgd_registry    *reg;        /* every model under the dirs (STATE/registry.sqlite3) */
    imgd_mcache      *cache;      /* loaded models under the memory budget */
    imgd_components  *components; /* VAEs shared between loaded models (pipeline/share.c) */
    char            **preload;    /* ids warmed at start (readiness reports them) */
    size_t            n_preload;

    pthread_mutex_t    mu;       /* guards everything below */
    pthread_cond_t     cv_work;  /* scheduler: something to do */
    pthread_cond_t     cv_event; /* waiters: a job progressed or finished */
    uint64_t           event_seq;
    svc_model          models[SVC_MODELS_MAX];
    size_t             n_models;           /* descriptors cached */
    char               single[SVC_ID_MAX]; /* svc_model_single_loaded's answer */
    svc_live           live[SVC_BATCH_MAX];
    char               current[SVC_ID_MAX]; /* model of the last job (A1111 "checkpoint") */
    bool               stopping, hard_stop, interrupt_all;
    bool               batch_busy; /* a claimed batch is being run (clients see it running) */
    pthread_t          sched;
    bool               sched_started;
    pthread_mutex_t    engine_mu; /* held while the engine runs (generate, load, unload) */
    double             t_started;
    svc_unit           unit;             /* --model-id (unit.active) */
    char               only[SVC_ID_MAX]; /* registry restricted to this id ("" = whole dirs) */
    double             start_s;          /* imgd_server_start to ready */
    struct svc_runpod *runpod;           /* imgd_server_runpod_start (runpod.c), or NULL */
};

/* ---- models (service_models.c) ------------------------------------------------------------ */

/* Resolves a model id to a path inside one of the model dirs (no escaping them). On failure
 * fills status/type/detail for a problem response and returns false. */
bool svc_model_resolve(imgd_server *s, const char *id, char *path, size_t cap, int32_t *http_status,
                       char *detail, size_t detail_cap);
/* Finds (detecting on first sight) the model entry for id; NULL with a detail on failure.
 * Call with s->mu held. */
svc_model *svc_model_find(imgd_server *s, const char *id, int32_t *http_status, char *detail,
                          size_t detail_cap);
/* Opens the registry (STATE/registry.sqlite3), scans it and creates the memory cache. */
imgd_status svc_models_open(imgd_server *s);
/* Loads into the memory cache (s->mu and engine_mu NOT held). IMGD_OK when already loaded. */
imgd_status svc_model_load(imgd_server *s, const char *id);
/* Unloads now, or when the jobs using it release it. */
imgd_status svc_model_unload(imgd_server *s, const char *id);
/* The model of id (an id, file name or hash) with a reference held, loading it when needed;
 * canon receives the registry id to release it with. s->mu and engine_mu NOT held. */
imgd_status svc_model_acquire(imgd_server *s, const char *id, imgd_model **out,
                              char canon[SVC_ID_MAX]);
void        svc_model_release(imgd_server *s, const char *canon);
bool        svc_model_is_loaded(imgd_server *s, const char *id);
/* The only loaded model's id when exactly one is loaded, else NULL (s->mu held; the string
 * lives in s->single until the next call). */
const char *svc_model_single_loaded(imgd_server *s);
/* JSON array of the loaded model ids, most recently used first. */
cJSON *svc_models_loaded(imgd_server *s);
/* JSON array of every model under the dirs with detection results and load state. */
cJSON *svc_models_list(imgd_server *s);
cJSON *svc_model_json(imgd_server *s, const svc_model *sm);
/* Per-model load options from the config ("models": {"ID": {...}}). */
imgd_load_params svc_model_load_params(imgd_server *s, const char *id);
void             svc_models_free(imgd_server *s);

/* ---- requests (service_request.c) --------------------------------------------------------- */

/* Validates a native generation request (already parsed) for its model, applies defaults,
 * fixes the seed when -1, and fills model_id (the model it names or the single loaded one).
 * On failure writes a problem into resp and returns false. */
bool svc_request_prepare(imgd_server *s, cJSON *req, char *model_id, size_t cap,
                         imgd_http_resp *resp);
/* Submits a prepared request as a job. On failure writes a problem and returns false. */
bool svc_job_submit(imgd_server *s, const imgd_http_req *hr, cJSON *req, const char *model_id,
                    const char *api, const char *key_name, char id_out[40], imgd_http_resp *resp);
/* Waits until the job finishes (or timeout_s passes: false). */
bool svc_job_wait(imgd_server *s, const char *id, double timeout_s);
/* Builds gen params from a stored request; the strings and images live in *hold. */
typedef struct svc_gen_hold {
    cJSON             *req;
    imgd_image_u8      init, mask;
    imgd_lora_spec    *loras; /* from the request's "loras", paths resolved by the registry */
    char             **paths;
    size_t             n_paths;
    char              *prompt;    /* the prompt without its <lora:...> tags, or NULL */
    imgd_lora_spec    *with_unit; /* gp->loras plus the --model-id adapter, or NULL */
    imgd_lora_spec     tags[16];  /* those tags, files resolved by the registry */
    char              *tag_paths[16];
    size_t             n_tags;
    imgd_hypernet_spec hypernets[16]; /* "hypernets", then <hypernet:...> tags, files resolved
                                         by the registry */
    char             *hypernet_paths[16];
    size_t            n_hypernets;
    imgd_control_spec controls[IMGD_CONTROL_MAX]; /* from "controls", files resolved */
    imgd_image_u8     control_img[IMGD_CONTROL_MAX];
    char             *control_paths[IMGD_CONTROL_MAX];
    size_t            n_controls;
} svc_gen_hold;
imgd_status svc_request_to_params(const char *request_json, imgd_gen_params *gp,
                                  svc_gen_hold *hold);
void        svc_gen_hold_free(svc_gen_hold *hold);
/* An A1111 sampler name ("DPM++ 2M Karras", "Euler a"), its k-diffusion alias or a native
 * name -> the native sampler and schedule (A1111's "Automatic" schedule when the name implies
 * none: karras for DPM++, normal otherwise). false when unknown (service_compat.c). */
bool svc_a1111_sampler_native(const char *name, const char **sampler, const char **schedule);

/* CivitAI defaults (service_civitai.c). caps: a checkpoint's sidecar applied to c's steps,
 * cfg, sampler and schedule defaults (cm filled; false when there is none). annotate: after
 * imgd_schema_for_generate, the checkpoint's clip skip default and "x-imgd-civitai" (cm may
 * be NULL), and "x-imgd-loras" for c's LoRAs; false on NOMEM. entry_json: a registry entry's
 * sidecar as "civitai" in /v1/models. */
struct imgd_civitai_meta;
bool svc_civitai_caps(const char *path, imgd_schema_caps *c, struct imgd_civitai_meta *cm);
bool svc_civitai_annotate(imgd_server *s, cJSON *schema, const imgd_schema_caps *c,
                          const struct imgd_civitai_meta *cm);
void svc_civitai_entry_json(const imgd_reg_entry *e, cJSON *o);

/* Before the schema's defaults: a LoRA of the request's "loras" given without a weight gets
 * the recommended one the model's schema records ("x-imgd-loras", from NAME.civitai.json
 * beside the LoRA). IMGD_E_NOMEM. Called with s->mu held (the schema is the descriptor's). */
imgd_status svc_lora_weight_defaults(const cJSON *schema, cJSON *req);

/* Fills gp->hypernets from the request's "hypernets" and the prompt's <hypernet:NAME[:W]>
 * tags (taken out of gp->prompt: hold->prompt), registry ids or file names -> files of kind
 * hypernetwork; the specs live in hold. IMGD_E_INVALID_ARG names the field or tag. */
imgd_status svc_hypernets_resolve(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp);

/* Fills gp->loras from the request's "loras" (registry ids -> files); the specs live in
 * hold. IMGD_E_INVALID_ARG names an unknown LoRA. */
imgd_status svc_loras_resolve(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp);
/* Fills gp->controls from the request's "controls" (ControlNet ids -> files, images decoded
 * into hold). IMGD_E_INVALID_ARG names the control and what is wrong with it. */
imgd_status svc_controls_resolve(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp);
/* Encodes a result as the stored native result JSON text. */
imgd_status svc_result_json(const imgd_gen_result *r, const imgd_gen_params *gp, const char *format,
                            char **out);

/* ---- MODEL_ID (service_unit.c) ---------------------------------------------------------- */

/* A path (absolute, or relative to the current folder) becomes an id relative to the model
 * dir holding it, or its parent folder becomes a model dir (service.c). */
imgd_status svc_model_arg_to_id(imgd_server *s, const char *arg, char *id, size_t cap);
/* Resolves p->model_id into s->unit, adds the base's folder as a model dir and returns the id
 * to preload in id (cap SVC_ID_MAX). Restricts the registry to it when no --models was given. */
imgd_status svc_unit_setup(imgd_server *s, const imgd_serve_params *p, char *id, size_t cap);
/* Adds the unit's LoRA to gp->loras when the job's model is the unit's (storage in hold). */
imgd_status svc_unit_loras(imgd_server *s, svc_gen_hold *hold, imgd_gen_params *gp);
/* Runs the --warmup generation on the unit's model (or id). */
imgd_status svc_unit_warmup(imgd_server *s, const char *id);
/* Adds "model_id" and "adapter" to a model's JSON when it is the unit's model. */
void svc_unit_json(imgd_server *s, const char *id, cJSON *o);
/* Stops the RunPod worker (runpod.c; NULL-safe): no new jobs; running ones get until the
 * deadline (monotonic seconds), then an error is posted for each. */
void svc_runpod_stop(imgd_server *s, double deadline);

/* ---- scheduler (service_sched.c) ------------------------------------------------------------ */

imgd_status svc_sched_start(imgd_server *s);
void        svc_sched_stop(imgd_server *s);
void        svc_wake(imgd_server *s);
/* Gives a job's images back to its caller's daily quota (it produced none). */
void svc_job_refund(imgd_server *s, const imgd_job_rec *rec);
/* Live progress of a job (false when it is not running now). */
bool svc_live_get(imgd_server *s, const char *id, svc_live *out);

/* ---- routes ----------------------------------------------------------------------------- */

void svc_route(void *app, const imgd_http_req *req, imgd_http_resp *resp);
/* Compatibility layers (service_compat.c): true when the path was theirs. */
bool svc_route_compat(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp);
/* Shared by native and compat routes. */
bool svc_auth_request(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp,
                      imgd_auth_result *who);
/* Charges n images to the caller's daily quota; false with a 429/400 written when over. */
bool svc_take_images(imgd_server *s, const imgd_auth_result *who, int32_t n, imgd_http_resp *resp);
cJSON  *svc_parse_body(const imgd_http_req *req, imgd_http_resp *resp);
cJSON  *svc_job_json(imgd_server *s, const imgd_job_rec *rec, bool with_result);
void    svc_send_json(imgd_http_resp *resp, int32_t status, cJSON *doc); /* frees doc */
int64_t svc_now_ms(void);

#endif
