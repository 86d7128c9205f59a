/* Compatibility layers, so existing clients work unchanged: AUTOMATIC1111's /sdapi/v1,
 * OpenAI's images API and RunPod's serverless test API. Each translates its request into a
 * native request (validated against the model's schema like any other), submits it as a
 * job, and translates the stored result back. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/alloc.h"
#include "base/base64.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"
#include "pipeline/control_pre.h"
#include "pipeline/image.h"
#include "service/registry.h"
#include "service/service_impl.h"

#define SYNC_WAIT_S 3600.0

/* ---- shared ------------------------------------------------------------------------------- */

static const cJSON *get(const cJSON *o, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* Copies member k of src to dst under name as (when present and not null). */
static bool copy_member(cJSON *dst, const cJSON *src, const char *k, const char *as) {
    const cJSON *v = get(src, k);
    if (!v || cJSON_IsNull(v)) return true;
    cJSON *d = cJSON_Duplicate(v, true);
    if (!d) return false;
    cJSON_DeleteItemFromObjectCaseSensitive(dst, as);
    cJSON_AddItemToObject(dst, as, d);
    return true;
}

/* Prepares, charges and submits a translated request; on failure resp holds the problem. */
static bool submit(imgd_server *s, const imgd_http_req *req, cJSON *native, const char *api,
                   const imgd_auth_result *who, char id[40], imgd_http_resp *resp) {
    char model_id[SVC_ID_MAX];
    if (!svc_request_prepare(s, native, model_id, sizeof model_id, resp)) return false;
    const cJSON *bs = get(native, "batch_size");
    int32_t      n  = bs && cJSON_IsNumber(bs) ? (int32_t)bs->valuedouble : 1;
    return svc_take_images(s, who, n, resp) &&
           svc_job_submit(s, req, native, model_id, api, who->name, id, resp);
}

/* The finished job's stored result (parsed) or NULL with a problem in resp. */
static cJSON *wait_result(imgd_server *s, const char *id, imgd_http_resp *resp) {
    if (!svc_job_wait(s, id, SYNC_WAIT_S)) {
        imgd_http_problem(resp, 504, "still-running", "The job is still running", id, NULL,
                          "poll /v1/jobs/{id}");
        return NULL;
    }
    imgd_job_rec *rec = NULL;
    if (imgd_jobstore_get(s->js, id, &rec) != IMGD_OK) {
        imgd_http_problem(resp, 500, "store", "The job vanished", imgd_last_error(), NULL, NULL);
        return NULL;
    }
    cJSON *res = NULL;
    if (rec->state == IMGD_JOB_SUCCEEDED && rec->result_json) {
        res = cJSON_Parse(rec->result_json);
        if (!res) imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
    } else {
        cJSON       *err = rec->error_json ? cJSON_Parse(rec->error_json) : NULL;
        const cJSON *d   = err ? get(err, "detail") : NULL;
        const cJSON *hs  = err ? get(err, "status") : NULL;
        int32_t      st  = hs && cJSON_IsNumber(hs) ? (int32_t)hs->valuedouble : 500;
        if (st < 400 || st > 599) st = 409;
        imgd_http_problem(resp, st, "job-failed", "The job did not succeed",
                          cJSON_IsString(d) ? d->valuestring : imgd_job_state_name(rec->state),
                          NULL, NULL);
        cJSON_Delete(err);
    }
    imgd_job_rec_free(rec);
    return res;
}

/* ---- AUTOMATIC1111 /sdapi/v1 ---------------------------------------------------------------- */

typedef struct a1111_sampler {
    const char *name;     /* as A1111 lists it */
    const char *alias;    /* k-diffusion alias */
    const char *sampler;  /* ours */
    const char *schedule; /* implied schedule ("" = from the scheduler field) */
} a1111_sampler;

static const a1111_sampler k_a1111_samplers[] = {
    {"Euler a", "k_euler_a", "euler_ancestral", ""},
    {"Euler", "k_euler", "euler", ""},
    {"Heun", "k_heun", "heun", ""},
    {"DPM++ 2M", "k_dpmpp_2m", "dpmpp_2m", ""},
    {"DPM++ SDE", "k_dpmpp_sde", "dpmpp_sde", ""},
    {"DPM++ 2M SDE", "k_dpmpp_2m_sde", "dpmpp_2m_sde", ""},
    {"DPM++ 2M Karras", "k_dpmpp_2m_ka", "dpmpp_2m", "karras"},
    {"DPM++ SDE Karras", "k_dpmpp_sde_ka", "dpmpp_sde", "karras"},
    {"DPM++ 2M SDE Karras", "k_dpmpp_2m_sde_ka", "dpmpp_2m_sde", "karras"},
    {"DPM++ 2M SDE Exponential", "k_dpmpp_2m_sde_exp", "dpmpp_2m_sde", "exponential"},
    {"DDIM", "ddim", "ddim", ""},
    {"DDPM", "ddpm", "ddpm", ""},
    {"PLMS", "plms", "pndm", ""},
    {"LCM", "k_lcm", "lcm", ""},
    {"UniPC", "unipc", "uni_pc", ""},
};

typedef struct a1111_scheduler {
    const char *name, *label, *schedule;
} a1111_scheduler;

static const a1111_scheduler k_a1111_schedulers[] = {
    {"automatic", "Automatic", ""},
    {"uniform", "Uniform", "normal"},
    {"karras", "Karras", "karras"},
    {"exponential", "Exponential", "exponential"},
    {"sgm_uniform", "SGM Uniform", "sgm_uniform"},
    {"simple", "Simple", "simple"},
    {"normal", "Normal", "normal"},
};

bool svc_a1111_sampler_native(const char *name, const char **sampler, const char **schedule) {
    for (size_t i = 0; name && i < sizeof k_a1111_samplers / sizeof k_a1111_samplers[0]; i++) {
        const a1111_sampler *h = &k_a1111_samplers[i];
        if (strcasecmp(name, h->name) == 0 || strcmp(name, h->alias) == 0 ||
            strcmp(name, h->sampler) == 0) {
            *sampler  = h->sampler;
            *schedule = h->schedule[0]                         ? h->schedule
                        : strncmp(h->sampler, "dpmpp", 5) == 0 ? "karras"
                                                               : "normal";
            return true;
        }
    }
    return false;
}

static bool a1111_sampler_map(const char *name, const char *sched, cJSON *native,
                              imgd_http_resp *resp) {
    const a1111_sampler *hit = NULL;
    for (size_t i = 0; i < sizeof k_a1111_samplers / sizeof k_a1111_samplers[0] && !hit; i++) {
        if (strcmp(name, k_a1111_samplers[i].name) == 0 ||
            strcmp(name, k_a1111_samplers[i].alias) == 0 ||
            strcmp(name, k_a1111_samplers[i].sampler) == 0)
            hit = &k_a1111_samplers[i];
    }
    if (!hit) {
        char detail[256];
        (void)imgd_fmt(detail, sizeof detail, "sampler_name '%s' is not available", name);
        imgd_http_problem(resp, 422, "validation", "Unknown sampler", detail, "/sampler_name",
                          "GET /sdapi/v1/samplers lists the names");
        return false;
    }
    const char *schedule = hit->schedule[0] ? hit->schedule : NULL;
    if (!schedule && sched) {
        for (size_t i = 0; i < sizeof k_a1111_schedulers / sizeof k_a1111_schedulers[0]; i++) {
            if (strcasecmp(sched, k_a1111_schedulers[i].name) == 0 ||
                strcasecmp(sched, k_a1111_schedulers[i].label) == 0)
                schedule =
                    k_a1111_schedulers[i].schedule[0] ? k_a1111_schedulers[i].schedule : NULL;
        }
    }
    /* A1111's "Automatic": Karras for the DPM++ family, its uniform schedule otherwise. */
    if (!schedule) schedule = strncmp(hit->sampler, "dpmpp", 5) == 0 ? "karras" : "normal";
    return cJSON_AddStringToObject(native, "sampler", hit->sampler) &&
           cJSON_AddStringToObject(native, "schedule", schedule);
}

/* A1111 txt2img/img2img body -> native request. */
/* sd-webui-controlnet's module names -> imgd's built-in preprocessors (those that need no
 * model). */
typedef struct cn_module {
    const char *a1111, *imgd;
} cn_module;

static const cn_module k_cn_modules[] = {
    {"none", "none"},         {"canny", "canny"},
    {"invert", "invert"},     {"invert (from white bg & black line)", "invert"},
    {"threshold", "lineart"}, /* binary threshold at threshold_a: white above */
};

/* resize_mode as the extension accepts it: an index or the UI label. */
static const char *cn_resize(const cJSON *v) {
    static const char *const k_modes[][2] = {
        {"Just Resize", "just"},
        {"Crop and Resize", "crop"},
        {"Resize and Fill", "fill"},
        {"Inner Fit (Scale to Fit)", "crop"},
        {"Outer Fit (Shrink to Fit)", "fill"},
    };
    if (!v || cJSON_IsNull(v)) return "crop"; /* the extension's default */
    if (cJSON_IsNumber(v)) {
        int i = (int)v->valuedouble;
        return i >= 0 && i < 3 && (double)i == v->valuedouble ? k_modes[i][1] : NULL;
    }
    for (size_t i = 0; cJSON_IsString(v) && i < IMGD_ARRAY_LEN(k_modes); i++) {
        if (strcmp(v->valuestring, k_modes[i][0]) == 0) return k_modes[i][1];
    }
    return NULL;
}

/* control_mode: 0 / "Balanced" -> 0, 2 / "ControlNet is more important" -> 2 (guess mode),
 * 1 / "My prompt is more important" -> 1; -1 for anything else. */
static int cn_control_mode(const cJSON *v) {
    static const char *const k_cm[] = {"Balanced", "My prompt is more important",
                                       "ControlNet is more important"};
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsNumber(v)) {
        int i = (int)v->valuedouble;
        return i >= 0 && i < 3 && (double)i == v->valuedouble ? i : -1;
    }
    for (int i = 0; cJSON_IsString(v) && i < 3; i++) {
        if (strcmp(v->valuestring, k_cm[i]) == 0) return i;
    }
    return -1;
}

/* An A1111 title "name [hash]" (a checkpoint, the ControlNet extension's model) -> a
 * registry id (the hash, or the name without it as an id or file name); the name as given
 * when nothing matches (the schema then refuses it, naming the field). */
static bool title_id(imgd_server *s, const char *name, char *out, size_t cap) {
    char n[SVC_ID_MAX];
    if (!imgd_fmt(n, sizeof n, "%s", name)) return false;
    char          *br = strstr(n, " [");
    imgd_reg_entry e;
    bool           found = false;
    if (br && n[strlen(n) - 1] == ']') {
        n[strlen(n) - 1] = '\0';
        found            = imgd_registry_find(s->reg, br + 2, &e) == IMGD_OK;
        *br              = '\0';
    }
    if (!found) found = imgd_registry_find(s->reg, n, &e) == IMGD_OK;
    return imgd_fmt(out, cap, "%s", found ? e.id : name);
}

static bool cn_problem(imgd_http_resp *resp, int i, const char *field, const char *detail,
                       const char *hint) {
    char ptr[96], d[256];
    (void)imgd_fmt(ptr, sizeof ptr, "/alwayson_scripts/controlnet/args/%d/%s", i, field);
    (void)imgd_fmt(d, sizeof d, "ControlNet unit %d: %s", i, detail);
    imgd_http_problem(resp, 422, "validation", "Unsupported ControlNet unit", d, ptr, hint);
    return false;
}

/* One unit of alwayson_scripts.controlnet.args -> a native "controls" item (or none when
 * the unit is disabled). */
static bool cn_unit(imgd_server *s, const cJSON *u, int i, cJSON *controls, imgd_http_resp *resp) {
    const cJSON *en = get(u, "enabled");
    if (cJSON_IsFalse(en)) return true;
    const cJSON *img = get(u, "input_image");
    if (!cJSON_IsString(img)) img = get(u, "image");
    if (cJSON_IsObject(img)) img = get(img, "image"); /* {"image": b64, "mask": ...} */
    if (!cJSON_IsString(img))
        return cn_problem(resp, i, "input_image", "no control image",
                          "send the control image as base64 in input_image");
    const cJSON *mo = get(u, "model");
    if (!cJSON_IsString(mo) || !*mo->valuestring || strcmp(mo->valuestring, "None") == 0)
        return cn_problem(resp, i, "model", "no ControlNet model named",
                          "name a ControlNet: GET /v1/models lists them (kind controlnet)");
    const cJSON *mod  = get(u, "module");
    const char  *name = cJSON_IsString(mod) ? mod->valuestring : "none";
    const char  *pre  = NULL;
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_cn_modules); k++) {
        if (strcmp(name, k_cn_modules[k].a1111) == 0) pre = k_cn_modules[k].imgd;
    }
    int32_t pv;
    if (!pre && imgd_control_pre_parse(name, &pv)) pre = imgd_control_pre_name(pv);
    if (!pre)
        return cn_problem(resp, i, "module", "this preprocessor needs a model imgd does not run",
                          "use none (send a ready control map), canny, invert, threshold, "
                          "scribble or lineart");
    const char *rm = cn_resize(get(u, "resize_mode"));
    if (!rm)
        return cn_problem(resp, i, "resize_mode", "unknown resize mode",
                          "use 0 / Just Resize, 1 / Crop and Resize or 2 / Resize and Fill");
    int cm = cn_control_mode(get(u, "control_mode"));
    if (cm < 0 || cm == 1)
        return cn_problem(resp, i, "control_mode",
                          cm < 0 ? "unknown control mode"
                                 : "\"My prompt is more important\" is not supported",
                          "use 0 / Balanced or 2 / ControlNet is more important");
    char id[SVC_ID_MAX];
    if (!title_id(s, mo->valuestring, id, sizeof id))
        return cn_problem(resp, i, "model", "the model name is too long",
                          "name a ControlNet: GET /v1/models lists them (kind controlnet)");
    cJSON *c = cJSON_CreateObject();
    if (!c) return false;
    cJSON_AddItemToArray(controls, c);
    bool ok =
        cJSON_AddStringToObject(c, "model", id) &&
        cJSON_AddStringToObject(c, "image", img->valuestring) &&
        cJSON_AddStringToObject(c, "preprocess", pre) &&
        cJSON_AddStringToObject(c, "resize_mode", rm) &&
        cJSON_AddBoolToObject(c, "guess_mode", cm == 2) && copy_member(c, u, "weight", "scale") &&
        copy_member(c, u, "guidance_start", "start") && copy_member(c, u, "guidance_end", "end");
    const cJSON *ta = get(u, "threshold_a"), *tb = get(u, "threshold_b");
    bool         ta_ok = cJSON_IsNumber(ta) && ta->valuedouble >= 0; /* -1: the module's default */
    bool         tb_ok = cJSON_IsNumber(tb) && tb->valuedouble >= 0;
    if (ok && strcmp(pre, "canny") == 0) {
        if (ta_ok) ok = cJSON_AddNumberToObject(c, "low_threshold", ta->valuedouble);
        if (ok && tb_ok) ok = cJSON_AddNumberToObject(c, "high_threshold", tb->valuedouble);
    } else if (ok && (strcmp(pre, "scribble") == 0 || strcmp(pre, "lineart") == 0) && ta_ok) {
        ok = cJSON_AddNumberToObject(c, "threshold", ta->valuedouble);
    }
    if (!ok) imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
    return ok;
}

/* alwayson_scripts.controlnet.args (sd-webui-controlnet's API) -> native "controls". */
static bool a1111_controlnet(imgd_server *s, const cJSON *a, cJSON *n, imgd_http_resp *resp) {
    const cJSON *as = get(a, "alwayson_scripts");
    const cJSON *cn = as ? get(as, "controlnet") : NULL;
    if (!cn) cn = as ? get(as, "ControlNet") : NULL;
    const cJSON *args = cn ? get(cn, "args") : NULL;
    if (!args || cJSON_IsNull(args)) return true;
    if (!cJSON_IsArray(args)) {
        imgd_http_problem(resp, 422, "validation", "Invalid ControlNet arguments",
                          "alwayson_scripts.controlnet.args must be an array of units",
                          "/alwayson_scripts/controlnet/args", "send [{\"input_image\": ...}]");
        return false;
    }
    cJSON *controls = cJSON_CreateArray();
    if (!controls) {
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return false;
    }
    int i = 0;
    for (const cJSON *u = args->child; u; u = u->next, i++) {
        if (!cJSON_IsObject(u)) {
            cJSON_Delete(controls);
            return cn_problem(resp, i, "", "a unit must be an object", "send the unit's fields");
        }
        if (!cn_unit(s, u, i, controls, resp)) {
            cJSON_Delete(controls);
            return false;
        }
    }
    if (cJSON_GetArraySize(controls) == 0) {
        cJSON_Delete(controls);
        return true;
    }
    cJSON_AddItemToObject(n, "controls", controls);
    return true;
}

static cJSON *a1111_translate(imgd_server *s, const cJSON *a, bool img2img, imgd_http_resp *resp) {
    cJSON *n = cJSON_CreateObject();
    if (!n) return NULL;
    bool ok = copy_member(n, a, "prompt", "prompt") &&
              copy_member(n, a, "negative_prompt", "negative_prompt") &&
              copy_member(n, a, "seed", "seed") && copy_member(n, a, "steps", "steps") &&
              copy_member(n, a, "cfg_scale", "cfg_scale") && copy_member(n, a, "width", "width") &&
              copy_member(n, a, "height", "height");
    if (!get(n, "prompt")) ok = ok && cJSON_AddStringToObject(n, "prompt", "");
    int32_t bs = 1, it = 1;
    if (cJSON_IsNumber(get(a, "batch_size"))) bs = (int32_t)get(a, "batch_size")->valuedouble;
    if (cJSON_IsNumber(get(a, "n_iter"))) it = (int32_t)get(a, "n_iter")->valuedouble;
    if (bs < 1) bs = 1;
    if (it < 1) it = 1;
    ok              = ok && cJSON_AddNumberToObject(n, "batch_size", (double)bs * it);
    const cJSON *ov = get(a, "override_settings");
    const cJSON *cs = ov ? get(ov, "CLIP_stop_at_last_layers") : NULL;
    if (ok && cs && cJSON_IsNumber(cs))
        ok = cJSON_AddNumberToObject(n, "clip_skip", cs->valuedouble);
    const cJSON *ck = ov ? get(ov, "sd_model_checkpoint") : NULL;
    pthread_mutex_lock(&s->mu);
    char current[SVC_ID_MAX];
    (void)imgd_fmt(current, sizeof current, "%s", s->current);
    pthread_mutex_unlock(&s->mu);
    if (ok && cJSON_IsString(ck))
        ok = cJSON_AddStringToObject(n, "model", ck->valuestring);
    else if (ok && current[0])
        ok = cJSON_AddStringToObject(n, "model", current);
    /* A1111 1.6+ refiner: a checkpoint title ("name.safetensors [hash]") or "None" */
    const cJSON *rc = get(a, "refiner_checkpoint");
    char         rid[SVC_ID_MAX];
    if (ok && cJSON_IsString(rc) && rc->valuestring[0] && strcmp(rc->valuestring, "None") != 0)
        ok = title_id(s, rc->valuestring, rid, sizeof rid) &&
             cJSON_AddStringToObject(n, "refiner", rid) &&
             copy_member(n, a, "refiner_switch_at", "refiner_switch");
    const cJSON *sn = get(a, "sampler_name");
    if (!cJSON_IsString(sn)) sn = get(a, "sampler_index");
    const cJSON *sc = get(a, "scheduler");
    if (ok && !a1111_sampler_map(cJSON_IsString(sn) ? sn->valuestring : "Euler",
                                 cJSON_IsString(sc) ? sc->valuestring : NULL, n, resp)) {
        cJSON_Delete(n);
        return NULL;
    }
    if (ok && img2img) {
        const cJSON *ii = get(a, "init_images");
        const cJSON *i0 = cJSON_IsArray(ii) ? cJSON_GetArrayItem(ii, 0) : NULL;
        if (!cJSON_IsString(i0)) {
            cJSON_Delete(n);
            imgd_http_problem(resp, 422, "validation", "init_images is required",
                              "img2img needs init_images: [base64 image]", "/init_images",
                              "send one base64 PNG/JPEG/WebP in init_images");
            return NULL;
        }
        ok = cJSON_AddStringToObject(n, "init_image", i0->valuestring) &&
             copy_member(n, a, "denoising_strength", "strength") &&
             copy_member(n, a, "mask", "mask_image") && copy_member(n, a, "mask_blur", "mask_blur");
        if (ok && !get(n, "strength")) ok = cJSON_AddNumberToObject(n, "strength", 0.75);
    }
    if (!ok) {
        cJSON_Delete(n);
        imgd_http_problem(resp, 500, "internal", "Out of memory", NULL, NULL, NULL);
        return NULL;
    }
    if (!a1111_controlnet(s, a, n, resp)) {
        cJSON_Delete(n);
        return NULL;
    }
    return n;
}

static void a1111_generate(imgd_server *s, const imgd_http_req *req, bool img2img,
                           imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    cJSON *body = svc_parse_body(req, resp);
    if (!body) return;
    cJSON *native = cJSON_IsObject(body) ? a1111_translate(s, body, img2img, resp) : NULL;
    if (!cJSON_IsObject(body))
        imgd_http_problem(resp, 422, "validation", "Expected a JSON object", NULL, "", NULL);
    char id[40];
    if (!native || !submit(s, req, native, "sdapi", &who, id, resp)) {
        cJSON_Delete(native);
        cJSON_Delete(body);
        return;
    }
    cJSON *res = wait_result(s, id, resp);
    if (!res) {
        cJSON_Delete(native);
        cJSON_Delete(body);
        return;
    }
    cJSON       *out    = cJSON_CreateObject();
    cJSON       *images = out ? cJSON_AddArrayToObject(out, "images") : NULL;
    const cJSON *im;
    cJSON_ArrayForEach(im, get(res, "images")) {
        const cJSON *b = get(im, "b64");
        if (images && cJSON_IsString(b))
            cJSON_AddItemToArray(images, cJSON_CreateString(b->valuestring));
    }
    if (out) cJSON_AddItemToObject(out, "parameters", cJSON_Duplicate(body, true));
    /* info: a JSON string, as A1111 returns it */
    cJSON *info = cJSON_CreateObject();
    if (info) {
        const cJSON *seed = get(native, "seed");
        double       sd   = seed && cJSON_IsNumber(seed) ? seed->valuedouble : 0;
        (void)copy_member(info, native, "prompt", "prompt");
        (void)copy_member(info, native, "negative_prompt", "negative_prompt");
        (void)cJSON_AddNumberToObject(info, "seed", sd);
        cJSON *all = cJSON_AddArrayToObject(info, "all_seeds");
        int    k   = cJSON_GetArraySize(get(res, "images"));
        for (int i = 0; all && i < k; i++) cJSON_AddItemToArray(all, cJSON_CreateNumber(sd));
        (void)copy_member(info, native, "steps", "steps");
        (void)copy_member(info, native, "cfg_scale", "cfg_scale");
        (void)copy_member(info, native, "width", "width");
        (void)copy_member(info, native, "height", "height");
        (void)copy_member(info, native, "model", "sd_model_name");
        const cJSON *sn = get(body, "sampler_name");
        (void)cJSON_AddStringToObject(info, "sampler_name",
                                      cJSON_IsString(sn) ? sn->valuestring : "Euler");
        cJSON       *its = cJSON_AddArrayToObject(info, "infotexts");
        const cJSON *t   = get(res, "infotext");
        for (int i = 0; its && i < k; i++)
            cJSON_AddItemToArray(its, cJSON_CreateString(cJSON_IsString(t) ? t->valuestring : ""));
        (void)cJSON_AddStringToObject(info, "job", id);
        char *txt = cJSON_PrintUnformatted(info);
        if (txt && out) (void)cJSON_AddStringToObject(out, "info", txt);
        cJSON_free(txt);
        cJSON_Delete(info);
    }
    svc_send_json(resp, 200, out);
    cJSON_Delete(res);
    cJSON_Delete(native);
    cJSON_Delete(body);
}

static void a1111_sd_models(imgd_server *s, imgd_http_resp *resp) {
    cJSON       *list = svc_models_list(s);
    cJSON       *out  = cJSON_CreateArray();
    const cJSON *m;
    cJSON_ArrayForEach(m, list) {
        const cJSON *sv = get(m, "servable");
        if (!cJSON_IsTrue(sv) || !out) continue;
        const char *id = get(m, "id")->valuestring;
        cJSON      *o  = cJSON_CreateObject();
        if (!o) continue;
        cJSON_AddItemToArray(out, o);
        (void)cJSON_AddStringToObject(o, "title", id);
        char name[SVC_ID_MAX];
        (void)imgd_fmt(name, sizeof name, "%s", id);
        char *dot = strrchr(name, '.');
        if (dot && !strchr(dot, '/')) *dot = '\0';
        (void)cJSON_AddStringToObject(o, "model_name", name);
        const cJSON *sha = get(m, "sha256"), *av2 = get(m, "autov2");
        if (cJSON_IsString(av2))
            (void)cJSON_AddStringToObject(o, "hash", av2->valuestring);
        else
            (void)cJSON_AddNullToObject(o, "hash");
        if (cJSON_IsString(sha))
            (void)cJSON_AddStringToObject(o, "sha256", sha->valuestring);
        else
            (void)cJSON_AddNullToObject(o, "sha256");
        (void)cJSON_AddStringToObject(o, "filename", id);
        (void)cJSON_AddNullToObject(o, "config");
    }
    cJSON_Delete(list);
    svc_send_json(resp, 200, out);
}

/* The file name of a registry id without its extension (what A1111 lists and prompt tags
 * name). */
static void id_stem(const char *id, char *out, size_t cap) {
    const char *base = strrchr(id, '/');
    (void)imgd_fmt(out, cap, "%s", base ? base + 1 : id);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = '\0';
}

/* Registry entries of the given kinds (NULL-terminated) as A1111 lists its extra networks:
 * {"name": stem, "path": id}; LoRAs add "alias" and the base family in "metadata" (A1111's
 * Lora extension), hypernetworks have just the two (A1111's /sdapi/v1/hypernetworks). */
static void a1111_networks(imgd_server *s, const char *const *kinds, bool lora,
                           imgd_http_resp *resp) {
    cJSON *out = cJSON_CreateArray();
    size_t n   = imgd_registry_count(s->reg);
    for (size_t i = 0; out && i < n; i++) {
        imgd_reg_entry e;
        if (imgd_registry_at(s->reg, i, &e) != IMGD_OK) continue;
        bool hit = false;
        for (size_t k = 0; kinds[k] && !hit; k++) hit = strcmp(e.kind, kinds[k]) == 0;
        if (!hit) continue;
        char name[SVC_ID_MAX];
        id_stem(e.id, name, sizeof name);
        cJSON *o = cJSON_CreateObject();
        if (!o) continue;
        cJSON_AddItemToArray(out, o);
        (void)cJSON_AddStringToObject(o, "name", name);
        if (lora) (void)cJSON_AddStringToObject(o, "alias", name);
        (void)cJSON_AddStringToObject(o, "path", e.id);
        cJSON *md = lora ? cJSON_AddObjectToObject(o, "metadata") : NULL;
        if (md) (void)cJSON_AddStringToObject(md, "ss_base_model_version", e.family);
    }
    svc_send_json(resp, 200, out);
}

static void a1111_samplers(imgd_http_resp *resp) {
    cJSON *out = cJSON_CreateArray();
    for (size_t i = 0; out && i < sizeof k_a1111_samplers / sizeof k_a1111_samplers[0]; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) continue;
        cJSON_AddItemToArray(out, o);
        (void)cJSON_AddStringToObject(o, "name", k_a1111_samplers[i].name);
        cJSON *al = cJSON_AddArrayToObject(o, "aliases");
        if (al) cJSON_AddItemToArray(al, cJSON_CreateString(k_a1111_samplers[i].alias));
        cJSON *op = cJSON_AddObjectToObject(o, "options");
        if (op && k_a1111_samplers[i].schedule[0])
            (void)cJSON_AddStringToObject(op, "scheduler", k_a1111_samplers[i].schedule);
    }
    svc_send_json(resp, 200, out);
}

static void a1111_schedulers(imgd_http_resp *resp) {
    cJSON *out = cJSON_CreateArray();
    for (size_t i = 0; out && i < sizeof k_a1111_schedulers / sizeof k_a1111_schedulers[0]; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) continue;
        cJSON_AddItemToArray(out, o);
        (void)cJSON_AddStringToObject(o, "name", k_a1111_schedulers[i].name);
        (void)cJSON_AddStringToObject(o, "label", k_a1111_schedulers[i].label);
    }
    svc_send_json(resp, 200, out);
}

static void a1111_options(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp) {
    if (strcmp(req->method, "POST") == 0) {
        cJSON *body = svc_parse_body(req, resp);
        if (!body) return;
        const cJSON *ck = get(body, "sd_model_checkpoint");
        if (cJSON_IsString(ck)) {
            if (svc_model_load(s, ck->valuestring) != IMGD_OK) {
                imgd_http_problem(resp, 422, "model-load", "The checkpoint could not be loaded",
                                  imgd_last_error(), "/sd_model_checkpoint",
                                  "GET /sdapi/v1/sd-models lists the titles");
                cJSON_Delete(body);
                return;
            }
            pthread_mutex_lock(&s->mu);
            (void)imgd_fmt(s->current, sizeof s->current, "%s", ck->valuestring);
            pthread_mutex_unlock(&s->mu);
        }
        cJSON_Delete(body);
        imgd_http_json(resp, 200, "null");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&s->mu);
    const char *cur = s->current[0] ? s->current : svc_model_single_loaded(s);
    if (o) (void)cJSON_AddStringToObject(o, "sd_model_checkpoint", cur ? cur : "");
    pthread_mutex_unlock(&s->mu);
    if (o) (void)cJSON_AddNumberToObject(o, "CLIP_stop_at_last_layers", 1);
    if (o) (void)cJSON_AddStringToObject(o, "samples_format", "png");
    svc_send_json(resp, 200, o);
}

static void a1111_progress(imgd_server *s, imgd_http_resp *resp) {
    svc_live lv;
    bool     running = false;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < SVC_BATCH_MAX && !running; i++) {
        if (s->live[i].active) {
            lv      = s->live[i];
            running = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    size_t counts[IMGD_JOB_STATE_COUNT] = {0};
    (void)imgd_jobstore_count(s->js, counts);
    double prog = 0, eta = 0;
    if (running && lv.steps > 0) {
        prog = (double)lv.step / lv.steps;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double el = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - lv.t_start;
        if (lv.step > 0) eta = el / lv.step * (lv.steps - lv.step);
    }
    cJSON *o = cJSON_CreateObject();
    if (o) {
        (void)cJSON_AddNumberToObject(o, "progress", prog);
        (void)cJSON_AddNumberToObject(o, "eta_relative", eta);
        cJSON *st = cJSON_AddObjectToObject(o, "state");
        if (st) {
            (void)cJSON_AddBoolToObject(st, "skipped", false);
            (void)cJSON_AddBoolToObject(st, "interrupted", false);
            (void)cJSON_AddStringToObject(st, "job", running ? lv.id : "");
            (void)cJSON_AddNumberToObject(
                st, "job_count", (double)(counts[IMGD_JOB_QUEUED] + counts[IMGD_JOB_RUNNING]));
            (void)cJSON_AddNumberToObject(st, "sampling_step", running ? lv.step : 0);
            (void)cJSON_AddNumberToObject(st, "sampling_steps", running ? lv.steps : 0);
        }
        (void)cJSON_AddNullToObject(o, "current_image");
        (void)cJSON_AddNullToObject(o, "textinfo");
    }
    svc_send_json(resp, 200, o);
}

static bool route_a1111(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp) {
    const char *p    = req->path + strlen("/sdapi/v1/");
    bool        post = strcmp(req->method, "POST") == 0, getm = strcmp(req->method, "GET") == 0;
    imgd_auth_result who;
    if (strcmp(p, "txt2img") == 0 && post) {
        resp->route = "/sdapi/v1/txt2img";
        a1111_generate(s, req, false, resp);
    } else if (strcmp(p, "img2img") == 0 && post) {
        resp->route = "/sdapi/v1/img2img";
        a1111_generate(s, req, true, resp);
    } else if (!svc_auth_request(s, req, resp, &who)) {
        resp->route = "/sdapi/v1/(auth)";
    } else if (strcmp(p, "sd-models") == 0 && getm) {
        resp->route = "/sdapi/v1/sd-models";
        a1111_sd_models(s, resp);
    } else if (strcmp(p, "samplers") == 0 && getm) {
        resp->route = "/sdapi/v1/samplers";
        a1111_samplers(resp);
    } else if (strcmp(p, "schedulers") == 0 && getm) {
        resp->route = "/sdapi/v1/schedulers";
        a1111_schedulers(resp);
    } else if (strcmp(p, "loras") == 0 && getm) {
        resp->route = "/sdapi/v1/loras";
        a1111_networks(s, (const char *const[]){"lora", "lycoris", NULL}, true, resp);
    } else if (strcmp(p, "hypernetworks") == 0 && getm) {
        resp->route = "/sdapi/v1/hypernetworks";
        a1111_networks(s, (const char *const[]){"hypernetwork", NULL}, false, resp);
    } else if (strcmp(p, "options") == 0 && (getm || post)) {
        resp->route = "/sdapi/v1/options";
        a1111_options(s, req, resp);
    } else if (strcmp(p, "progress") == 0 && getm) {
        resp->route = "/sdapi/v1/progress";
        a1111_progress(s, resp);
    } else if (strcmp(p, "interrupt") == 0 && post) {
        resp->route = "/sdapi/v1/interrupt";
        pthread_mutex_lock(&s->mu);
        s->interrupt_all = true;
        pthread_mutex_unlock(&s->mu);
        imgd_http_json(resp, 200, "null");
    } else {
        return false;
    }
    return true;
}

/* ---- OpenAI images -------------------------------------------------------------------------- */

static void openai_error(imgd_http_resp *resp, int32_t status, const char *message,
                         const char *param, const char *code) {
    cJSON *o = cJSON_CreateObject();
    cJSON *e = o ? cJSON_AddObjectToObject(o, "error") : NULL;
    if (e) {
        (void)cJSON_AddStringToObject(e, "message", message);
        (void)cJSON_AddStringToObject(e, "type",
                                      status == 429   ? "rate_limit_error"
                                      : status >= 500 ? "server_error"
                                                      : "invalid_request_error");
        if (param)
            (void)cJSON_AddStringToObject(e, "param", param);
        else
            (void)cJSON_AddNullToObject(e, "param");
        if (code)
            (void)cJSON_AddStringToObject(e, "code", code);
        else
            (void)cJSON_AddNullToObject(e, "code");
    }
    char retry[24];
    (void)imgd_fmt(retry, sizeof retry, "%s", resp->retry_after);
    svc_send_json(resp, status, o);
    (void)imgd_fmt(resp->retry_after, sizeof resp->retry_after, "%s", retry);
}

/* Rewrites a problem response into OpenAI's error shape. */
static void openai_from_problem(imgd_http_resp *resp) {
    cJSON       *p          = resp->body.data ? cJSON_Parse(resp->body.data) : NULL;
    const cJSON *d          = p ? get(p, "detail") : NULL;
    const cJSON *pt         = p ? get(p, "pointer") : NULL;
    char         param[256] = "";
    if (cJSON_IsString(pt) && pt->valuestring[0] == '/')
        (void)imgd_fmt(param, sizeof param, "%s", pt->valuestring + 1);
    char msg[1024];
    (void)imgd_fmt(msg, sizeof msg, "%s", cJSON_IsString(d) ? d->valuestring : "request failed");
    cJSON_Delete(p);
    openai_error(resp, resp->status, msg, param[0] ? param : NULL, NULL);
}

static void openai_generations(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) {
        openai_from_problem(resp);
        return;
    }
    cJSON *b = svc_parse_body(req, resp);
    if (!b) {
        openai_from_problem(resp);
        return;
    }
    const cJSON *prompt = get(b, "prompt");
    if (!cJSON_IsObject(b) || !cJSON_IsString(prompt)) {
        cJSON_Delete(b);
        openai_error(resp, 400, "prompt is required and must be a string", "prompt", NULL);
        return;
    }
    cJSON       *n   = cJSON_CreateObject();
    bool         ok  = n && cJSON_AddStringToObject(n, "prompt", prompt->valuestring);
    const cJSON *num = get(b, "n");
    if (ok && num) ok = copy_member(n, b, "n", "batch_size");
    const cJSON *size = get(b, "size");
    if (ok && cJSON_IsString(size)) {
        int  w = 0, h = 0;
        char tail;
        if (sscanf(size->valuestring, "%dx%d%c", &w, &h, &tail) != 2 || w <= 0 || h <= 0) {
            cJSON_Delete(n);
            cJSON_Delete(b);
            openai_error(resp, 400, "size must look like 512x512", "size", NULL);
            return;
        }
        ok = cJSON_AddNumberToObject(n, "width", w) && cJSON_AddNumberToObject(n, "height", h);
    }
    /* "model": one of ours, else the single loaded model (clients send e.g. "dall-e-2") */
    const cJSON *model = get(b, "model");
    if (ok && cJSON_IsString(model)) {
        int32_t hs;
        char    detail[512];
        pthread_mutex_lock(&s->mu);
        svc_model *sm = svc_model_find(s, model->valuestring, &hs, detail, sizeof detail);
        pthread_mutex_unlock(&s->mu);
        if (sm) ok = cJSON_AddStringToObject(n, "model", model->valuestring);
    }
    const cJSON *rf  = get(b, "response_format");
    bool         url = cJSON_IsString(rf) && strcmp(rf->valuestring, "url") == 0;
    if (cJSON_IsString(rf) && !url && strcmp(rf->valuestring, "b64_json") != 0) {
        cJSON_Delete(n);
        cJSON_Delete(b);
        openai_error(resp, 400, "response_format must be url or b64_json", "response_format", NULL);
        return;
    }
    cJSON_Delete(b);
    char id[40];
    if (!ok) {
        cJSON_Delete(n);
        openai_error(resp, 500, "out of memory", NULL, NULL);
        return;
    }
    if (!submit(s, req, n, "openai", &who, id, resp)) {
        cJSON_Delete(n);
        openai_from_problem(resp);
        return;
    }
    char *ptext = imgd_strdup(get(n, "prompt")->valuestring);
    cJSON_Delete(n);
    cJSON *res = wait_result(s, id, resp);
    if (!res) {
        imgd_free(ptext);
        openai_from_problem(resp);
        return;
    }
    cJSON *out  = cJSON_CreateObject();
    cJSON *data = NULL;
    if (out) {
        int64_t created_s = svc_now_ms() / 1000; /* OpenAI gives whole Unix seconds */
        (void)cJSON_AddNumberToObject(out, "created", (double)created_s);
        data = cJSON_AddArrayToObject(out, "data");
    }
    const cJSON *im;
    int          i = 0;
    cJSON_ArrayForEach(im, get(res, "images")) {
        cJSON *d = cJSON_CreateObject();
        if (!d || !data) {
            cJSON_Delete(d);
            continue;
        }
        cJSON_AddItemToArray(data, d);
        if (url) {
            char u[256];
            (void)imgd_fmt(u, sizeof u, "%s/v1/jobs/%s/images/%d", req->base_url, id, i);
            (void)cJSON_AddStringToObject(d, "url", u);
        } else {
            const cJSON *b64 = get(im, "b64");
            (void)cJSON_AddStringToObject(d, "b64_json",
                                          cJSON_IsString(b64) ? b64->valuestring : "");
        }
        (void)cJSON_AddStringToObject(d, "revised_prompt", ptext ? ptext : "");
        i++;
    }
    imgd_free(ptext);
    cJSON_Delete(res);
    svc_send_json(resp, 200, out);
}

/* ---- RunPod serverless (local test API) ----------------------------------------------------- */

static const char *runpod_status(imgd_job_state st) {
    switch (st) {
    case IMGD_JOB_QUEUED: return "IN_QUEUE";
    case IMGD_JOB_RUNNING: return "IN_PROGRESS";
    case IMGD_JOB_SUCCEEDED: return "COMPLETED";
    case IMGD_JOB_FAILED: return "FAILED";
    case IMGD_JOB_CANCELLED: return "CANCELLED";
    default: return "FAILED";
    }
}

static cJSON *runpod_job(const imgd_job_rec *rec) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    (void)cJSON_AddStringToObject(o, "id", rec->id);
    (void)cJSON_AddStringToObject(o, "status", runpod_status(rec->state));
    if (rec->started_ms)
        (void)cJSON_AddNumberToObject(o, "delayTime", (double)(rec->started_ms - rec->created_ms));
    if (rec->finished_ms && rec->started_ms)
        (void)cJSON_AddNumberToObject(o, "executionTime",
                                      (double)(rec->finished_ms - rec->started_ms));
    if (rec->result_json) {
        cJSON *r = cJSON_Parse(rec->result_json);
        if (r) cJSON_AddItemToObject(o, "output", r);
    }
    if (rec->error_json) {
        cJSON       *e = cJSON_Parse(rec->error_json);
        const cJSON *d = e ? get(e, "detail") : NULL;
        (void)cJSON_AddStringToObject(o, "error", cJSON_IsString(d) ? d->valuestring : "failed");
        cJSON_Delete(e);
    }
    return o;
}

static void runpod_submit(imgd_server *s, const imgd_http_req *req, bool sync,
                          imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    cJSON *b = svc_parse_body(req, resp);
    if (!b) return;
    cJSON *input = cJSON_IsObject(b) ? cJSON_DetachItemFromObjectCaseSensitive(b, "input") : NULL;
    cJSON_Delete(b);
    if (!cJSON_IsObject(input)) {
        cJSON_Delete(input);
        imgd_http_problem(resp, 400, "validation", "Missing input",
                          "RunPod requests carry the job in {\"input\": {...}}", "/input",
                          "wrap the generation request: {\"input\": {\"prompt\": \"...\"}}");
        return;
    }
    char id[40];
    bool ok = submit(s, req, input, "runpod", &who, id, resp);
    cJSON_Delete(input);
    if (!ok) return;
    if (sync) (void)svc_job_wait(s, id, 90.0); /* RunPod's runsync waits about 90 s */
    imgd_job_rec *rec = NULL;
    if (imgd_jobstore_get(s->js, id, &rec) != IMGD_OK) {
        imgd_http_problem(resp, 500, "store", "The job vanished", imgd_last_error(), NULL, NULL);
        return;
    }
    svc_send_json(resp, 200, runpod_job(rec));
    imgd_job_rec_free(rec);
}

static void runpod_status_or_cancel(imgd_server *s, const imgd_http_req *req, const char *id,
                                    bool cancel, imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    if (cancel) (void)imgd_jobstore_cancel(s->js, id, NULL);
    imgd_job_rec *rec = NULL;
    imgd_status   st =
        strlen(id) == IMGD_JOB_ID_LEN ? imgd_jobstore_get(s->js, id, &rec) : IMGD_E_NOT_FOUND;
    if (st != IMGD_OK) {
        imgd_http_problem(resp, 404, "job-not-found", "No such job", id, NULL, NULL);
        return;
    }
    svc_send_json(resp, 200, runpod_job(rec));
    imgd_job_rec_free(rec);
}

static void runpod_health(imgd_server *s, imgd_http_resp *resp) {
    size_t c[IMGD_JOB_STATE_COUNT] = {0};
    (void)imgd_jobstore_count(s->js, c);
    cJSON *o    = cJSON_CreateObject();
    cJSON *jobs = o ? cJSON_AddObjectToObject(o, "jobs") : NULL;
    cJSON *wk   = o ? cJSON_AddObjectToObject(o, "workers") : NULL;
    if (jobs) {
        (void)cJSON_AddNumberToObject(jobs, "completed", (double)c[IMGD_JOB_SUCCEEDED]);
        (void)cJSON_AddNumberToObject(jobs, "failed", (double)c[IMGD_JOB_FAILED]);
        (void)cJSON_AddNumberToObject(jobs, "inProgress", (double)c[IMGD_JOB_RUNNING]);
        (void)cJSON_AddNumberToObject(jobs, "inQueue", (double)c[IMGD_JOB_QUEUED]);
        (void)cJSON_AddNumberToObject(jobs, "retried", 0);
    }
    if (wk) {
        (void)cJSON_AddNumberToObject(wk, "idle", c[IMGD_JOB_RUNNING] ? 0 : 1);
        (void)cJSON_AddNumberToObject(wk, "running", c[IMGD_JOB_RUNNING] ? 1 : 0);
    }
    svc_send_json(resp, 200, o);
}

static bool route_runpod(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp) {
    const char *p    = req->path;
    bool        post = strcmp(req->method, "POST") == 0, getm = strcmp(req->method, "GET") == 0;
    if (strcmp(p, "/run") == 0 && post) {
        resp->route = "/run";
        runpod_submit(s, req, false, resp);
    } else if (strcmp(p, "/runsync") == 0 && post) {
        resp->route = "/runsync";
        runpod_submit(s, req, true, resp);
    } else if (strncmp(p, "/status/", 8) == 0 && (getm || post)) {
        resp->route = "/status/{id}";
        runpod_status_or_cancel(s, req, p + 8, false, resp);
    } else if (strncmp(p, "/cancel/", 8) == 0 && post) {
        resp->route = "/cancel/{id}";
        runpod_status_or_cancel(s, req, p + 8, true, resp);
    } else if (strcmp(p, "/health") == 0 && getm) {
        resp->route = "/health";
        runpod_health(s, resp);
    } else {
        return false;
    }
    return true;
}

/* ---- sd-webui-controlnet's own API (/controlnet/...) ----------------------------------------- */

/* GET /controlnet/model_list: the ControlNets under the model dirs as the extension names
 * them ("name [hash8]" once the sha256 is known, else "name"); title_id reads both. */
static void cn_model_list(imgd_server *s, imgd_http_resp *resp) {
    cJSON *o   = cJSON_CreateObject();
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "model_list") : NULL;
    size_t n   = imgd_registry_count(s->reg);
    for (size_t i = 0; arr && i < n; i++) {
        imgd_reg_entry e;
        if (imgd_registry_at(s->reg, i, &e) != IMGD_OK || strcmp(e.kind, "controlnet") != 0)
            continue;
        char name[SVC_ID_MAX + 16];
        id_stem(e.id, name, sizeof name);
        if (e.sha256[0]) {
            size_t l = strlen(name);
            (void)imgd_fmt(name + l, sizeof name - l, " [%.8s]", e.sha256);
        }
        cJSON_AddItemToArray(arr, cJSON_CreateString(name));
    }
    svc_send_json(resp, 200, o);
}

/* GET /controlnet/module_list: the preprocessors imgd runs (model-free), with the sliders
 * the extension's UI shows for them. */
static void cn_module_list(imgd_http_resp *resp) {
    static const struct {
        const char *module, *slider[2];
        double      lo[2], hi[2], def[2];
    } k_detail[] = {
        {"none", {NULL, NULL}, {0, 0}, {0, 0}, {0, 0}},
        {"canny", {"Canny Low Threshold", "Canny High Threshold"}, {1, 1}, {255, 255}, {100, 200}},
        {"invert (from white bg & black line)", {NULL, NULL}, {0, 0}, {0, 0}, {0, 0}},
        {"threshold", {"Binarization Threshold", NULL}, {0, 0}, {255, 0}, {127, 0}},
        {"scribble", {"Binarization Threshold", NULL}, {0, 0}, {255, 0}, {127, 0}},
    };
    cJSON *o   = cJSON_CreateObject();
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "module_list") : NULL;
    cJSON *det = o ? cJSON_AddObjectToObject(o, "module_detail") : NULL;
    for (size_t i = 0; arr && det && i < IMGD_ARRAY_LEN(k_detail); i++) {
        cJSON_AddItemToArray(arr, cJSON_CreateString(k_detail[i].module));
        cJSON *d  = cJSON_AddObjectToObject(det, k_detail[i].module);
        cJSON *sl = d ? cJSON_AddArrayToObject(d, "sliders") : NULL;
        if (d) (void)cJSON_AddTrueToObject(d, "model_free");
        for (int k = 0; sl && k < 2 && k_detail[i].slider[k]; k++) {
            cJSON *s = cJSON_CreateObject();
            if (!s) break;
            cJSON_AddItemToArray(sl, s);
            (void)cJSON_AddStringToObject(s, "name", k_detail[i].slider[k]);
            (void)cJSON_AddNumberToObject(s, "min", k_detail[i].lo[k]);
            (void)cJSON_AddNumberToObject(s, "max", k_detail[i].hi[k]);
            (void)cJSON_AddNumberToObject(s, "value", k_detail[i].def[k]);
        }
    }
    svc_send_json(resp, 200, o);
}

/* One image of /controlnet/detect: decoded, its shorter side brought to res (0 = as is),
 * preprocessed, PNG, base64 into *b64. */
static imgd_status cn_detect_one(const char *in, const imgd_control_spec *spec, int32_t res,
                                 char **b64) {
    uint8_t    *bytes = NULL, *png = NULL;
    size_t      n = 0, pn = 0;
    imgd_image  img = {0}, rgb = {0}, sized = {0}, out = {0};
    bool        binary = false;
    imgd_status st     = imgd_base64_decode_data_url(in, strlen(in), &bytes, &n);
    if (st == IMGD_OK) st = imgd_image_decode(bytes, n, "controlnet_input_images", NULL, &img);
    if (st == IMGD_OK) st = imgd_image_to_rgb(&img, &rgb);
    const imgd_image *cur = &rgb;
    if (st == IMGD_OK && res > 0 && IMGD_MIN(rgb.w, rgb.h) != res) {
        double  k = (double)res / IMGD_MIN(rgb.w, rgb.h);
        int32_t w = (int32_t)lround(rgb.w * k), h = (int32_t)lround(rgb.h * k);
        st  = imgd_image_resize(&rgb, w < 1 ? 1 : w, h < 1 ? 1 : h, IMGD_RESIZE_LANCZOS, &sized);
        cur = &sized;
    }
    if (st == IMGD_OK) st = imgd_control_preprocess(cur, spec, &out, &binary);
    imgd_image_save_params sp = imgd_image_save_params_default();
    sp.format                 = IMGD_IMAGE_FORMAT_PNG;
    if (st == IMGD_OK) st = imgd_image_encode(&out, &sp, &png, &pn);
    if (st == IMGD_OK) st = imgd_base64_encode(png, pn, b64, NULL);
    imgd_free(bytes);
    imgd_free(png);
    imgd_image_free(&img);
    imgd_image_free(&rgb);
    imgd_image_free(&sized);
    imgd_image_free(&out);
    return st;
}

/* POST /controlnet/detect: runs a preprocessor on images without generating
 * ({"controlnet_module", "controlnet_input_images": [b64], "controlnet_processor_res",
 * "controlnet_threshold_a", "controlnet_threshold_b"} -> {"images": [b64 PNG], "info"}). */
static void cn_detect(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp) {
    imgd_auth_result who;
    if (!svc_auth_request(s, req, resp, &who)) return;
    cJSON *body = svc_parse_body(req, resp);
    if (!body) return;
    const cJSON *mod  = get(body, "controlnet_module");
    const char  *name = cJSON_IsString(mod) ? mod->valuestring : "none";
    const char  *pre  = NULL;
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_cn_modules); k++) {
        if (strcmp(name, k_cn_modules[k].a1111) == 0) pre = k_cn_modules[k].imgd;
    }
    imgd_control_spec spec = imgd_control_spec_default();
    int32_t           pv   = 0;
    const cJSON      *imgs = get(body, "controlnet_input_images");
    const cJSON      *ta   = get(body, "controlnet_threshold_a"),
                *tb        = get(body, "controlnet_threshold_b");
    const cJSON *pr        = get(body, "controlnet_processor_res");
    int32_t      res = cJSON_IsNumber(pr) && pr->valuedouble > 0 ? (int32_t)pr->valuedouble : 0;
    if (!imgd_control_pre_parse(pre ? pre : name, &pv)) {
        imgd_http_problem(resp, 422, "validation", "Unsupported preprocessor",
                          "controlnet_module: this preprocessor needs a model imgd does not run",
                          "/controlnet_module", "GET /controlnet/module_list lists those it runs");
    } else if (!cJSON_IsArray(imgs) || cJSON_GetArraySize(imgs) < 1) {
        imgd_http_problem(resp, 422, "validation", "No images",
                          "controlnet_input_images: expected an array of base64 images",
                          "/controlnet_input_images", "send [\"<base64 PNG>\"]");
    } else if (res > 8192) {
        imgd_http_problem(resp, 422, "validation", "Processor resolution too large",
                          "controlnet_processor_res: at most 8192", "/controlnet_processor_res",
                          "the extension's default is 512");
    } else {
        spec.preprocess = pv;
        bool ta_ok      = cJSON_IsNumber(ta) && ta->valuedouble >= 0; /* -1: the module's default */
        if (pv == IMGD_CONTROL_PRE_CANNY) {
            if (ta_ok) spec.low = (float)ta->valuedouble;
            if (cJSON_IsNumber(tb) && tb->valuedouble >= 0) spec.high = (float)tb->valuedouble;
        } else if (ta_ok) {
            spec.threshold = (float)ta->valuedouble;
        }
        cJSON       *o   = cJSON_CreateObject();
        cJSON       *arr = o ? cJSON_AddArrayToObject(o, "images") : NULL;
        int          i   = 0;
        bool         ok  = arr != NULL;
        const cJSON *im;
        cJSON_ArrayForEach(im, imgs) {
            char       *b64 = NULL;
            imgd_status st  = cJSON_IsString(im) ? cn_detect_one(im->valuestring, &spec, res, &b64)
                                                 : imgd_fail(IMGD_E_INVALID_ARG, "not a string");
            if (st != IMGD_OK) {
                char ptr[64];
                (void)imgd_fmt(ptr, sizeof ptr, "/controlnet_input_images/%d", i);
                imgd_http_problem(resp, st == IMGD_E_NOMEM ? 500 : 422, "validation",
                                  "The image cannot be used", imgd_last_error(), ptr,
                                  "send a PNG, JPEG or WebP file as standard base64");
                ok = false;
                break;
            }
            cJSON_AddItemToArray(arr, cJSON_CreateString(b64));
            imgd_free(b64);
            i++;
        }
        if (ok) (void)cJSON_AddStringToObject(o, "info", "Success");
        if (ok)
            svc_send_json(resp, 200, o);
        else
            cJSON_Delete(o);
    }
    cJSON_Delete(body);
}

static bool route_controlnet(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp) {
    const char      *p = req->path + strlen("/controlnet/");
    imgd_auth_result who;
    if (strcmp(p, "detect") == 0 && strcmp(req->method, "POST") == 0) {
        resp->route = "/controlnet/detect";
        cn_detect(s, req, resp);
        return true;
    }
    if (strcmp(req->method, "GET") != 0) return false;
    if (strcmp(p, "model_list") != 0 && strcmp(p, "module_list") != 0 && strcmp(p, "version") != 0)
        return false;
    if (!svc_auth_request(s, req, resp, &who)) {
        resp->route = "/controlnet/(auth)";
    } else if (strcmp(p, "model_list") == 0) {
        resp->route = "/controlnet/model_list";
        cn_model_list(s, resp);
    } else if (strcmp(p, "module_list") == 0) {
        resp->route = "/controlnet/module_list";
        cn_module_list(resp);
    } else {
        resp->route = "/controlnet/version";
        imgd_http_json(resp, 200, "{\"version\":2}");
    }
    return true;
}

/* Every compatibility path and the methods it answers, for 405 + Allow (a wrong method on a
 * known path is not a 404). A pattern ending in '/' matches any path it starts. */
typedef struct compat_path {
    const char *pattern;
    const char *allow;
} compat_path;

static const compat_path k_compat_paths[] = {
    {"/sdapi/v1/txt2img", "POST"},
    {"/sdapi/v1/img2img", "POST"},
    {"/sdapi/v1/sd-models", "GET"},
    {"/sdapi/v1/samplers", "GET"},
    {"/sdapi/v1/schedulers", "GET"},
    {"/sdapi/v1/loras", "GET"},
    {"/sdapi/v1/hypernetworks", "GET"},
    {"/sdapi/v1/options", "GET, POST"},
    {"/sdapi/v1/progress", "GET"},
    {"/sdapi/v1/interrupt", "POST"},
    {"/controlnet/model_list", "GET"},
    {"/controlnet/module_list", "GET"},
    {"/controlnet/version", "GET"},
    {"/controlnet/detect", "POST"},
    {"/v1/images/generations", "POST"},
    {"/run", "POST"},
    {"/runsync", "POST"},
    {"/status/", "GET, POST"},
    {"/cancel/", "POST"},
    {"/health", "GET"},
};

/* Whether method is one of the comma-separated names in allow ("GET, POST"). */
static bool method_in(const char *allow, const char *method) {
    size_t ml = strlen(method);
    for (const char *p = allow; *p;) {
        size_t tl = strcspn(p, ",");
        if (tl == ml && strncmp(p, method, ml) == 0) return true;
        p += tl;
        while (*p == ',' || *p == ' ') p++;
    }
    return false;
}

/* True (with a 405 written) when path is a compatibility path that does not answer method. */
static bool compat_wrong_method(const imgd_http_req *req, imgd_http_resp *resp) {
    for (size_t i = 0; i < sizeof k_compat_paths / sizeof k_compat_paths[0]; i++) {
        const compat_path *c   = &k_compat_paths[i];
        size_t             n   = strlen(c->pattern);
        bool               hit = c->pattern[n - 1] == '/'
                                     ? strncmp(req->path, c->pattern, n) == 0 && req->path[n] != '\0'
                                     : strcmp(req->path, c->pattern) == 0;
        if (!hit) continue;
        if (method_in(c->allow, req->method)) return false;
        resp->route = "(method not allowed)";
        (void)imgd_fmt(resp->allow, sizeof resp->allow, "%s", c->allow);
        char detail[128];
        (void)imgd_fmt(detail, sizeof detail, "%s is not allowed here; use %s", req->method,
                       c->allow);
        imgd_http_problem(resp, 405, "method-not-allowed", "Method not allowed", detail, NULL,
                          NULL);
        return true;
    }
    return false;
}

bool svc_route_compat(imgd_server *s, const imgd_http_req *req, imgd_http_resp *resp) {
    if (compat_wrong_method(req, resp)) return true;
    if (strncmp(req->path, "/sdapi/v1/", 10) == 0) return route_a1111(s, req, resp);
    if (strncmp(req->path, "/controlnet/", 12) == 0) return route_controlnet(s, req, resp);
    if (strcmp(req->path, "/v1/images/generations") == 0 && strcmp(req->method, "POST") == 0) {
        resp->route = "/v1/images/generations";
        openai_generations(s, req, resp);
        return true;
    }
    return route_runpod(s, req, resp);
}
