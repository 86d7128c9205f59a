/* MODEL_ID resolution (issue 11): what `imgd serve --model-id X` (or $MODEL_ID) names, pulled
 * when it lives on a hub, detected, and turned into the unit the worker serves: a checkpoint,
 * or a base checkpoint plus the adapter X (LoRA, LyCORIS, embedding) with its recommended
 * weight and trigger words.
 *
 * X may be:
 *   a file or folder here (a diffusers folder, a weight file, or a folder holding exactly one
 *     weight file, as a single-file Hugging Face repo downloads);
 *   a Hugging Face repo id "org/name[@revision]" (or "hf:org/name");
 *   CivitAI "civitai:VERSION_ID", "civitai:MODEL_ID@VERSION_ID", "civitai-model:MODEL_ID", a
 *     bare number (a version id) or a civitai.com URL;
 *   any other http(s) URL of one weight file;
 *   an AIR "urn:air:ECOSYSTEM:TYPE:SOURCE:ID[@VERSION][.FORMAT]" with SOURCE civitai or
 *     huggingface (the ecosystem sd1, sd2, sdxl, pony, sd3, flux1 hints the family).
 * Hub sources are pulled with imgd_pull into the download dir (files already there with the
 * stated hash are not fetched again).
 *
 * The base of an adapter is looked for, in this order, and every step is recorded in `tried`:
 *   1. the adapter's own metadata: kohya ss_sd_model_name (a file name), ss_new_sd_model_hash
 *      (sha256) and ss_sd_model_hash (the legacy 8-digit hash), matched against the
 *      checkpoints under the search dirs;
 *   2. the family: detection, then ss_base_model_version / modelspec.architecture, then the
 *      CivitAI baseModel stored beside the file (NAME.civitai.json), then the AIR ecosystem;
 *   3. checkpoints of that family under the search dirs (a registry scan; the first by id
 *      when there are several and no default is configured);
 *   4. the configured default of the family: $IMGD_BASE_SD1, IMGD_BASE_SD2, IMGD_BASE_SDXL,
 *      IMGD_BASE_SD3, IMGD_BASE_FLUX (flux_dev and flux_schnell), ... = any MODEL_ID form
 *      naming a checkpoint; it wins over step 3 when step 3 finds several.
 * A base whose family differs from the adapter's is refused before anything is loaded. */
#ifndef IMGD_SERVICE_MODEL_ID_H
#define IMGD_SERVICE_MODEL_ID_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/base.h"
#include "base/buf.h"

typedef struct imgd_mid_params {
    const char        *model_id;     /* required */
    const char        *download_dir; /* where hub pulls go; required for hub sources */
    const char        *state_dir;    /* registry cache (STATE/registry.sqlite3); required */
    const char *const *search_dirs;  /* folders searched for a base (with download_dir) */
    size_t             n_search_dirs;
    const char        *variant; /* Hugging Face weight variant for pulls; NULL = plain */
} imgd_mid_params;

typedef struct imgd_mid_result {
    char     source[16];     /* "file" "folder" "huggingface" "civitai" "url" "air" */
    char     path[PATH_MAX]; /* what the MODEL_ID names, on disk */
    char     kind[32];       /* its detected kind and family */
    char     family[32];
    char     base[PATH_MAX]; /* the checkpoint to load: path itself, or the base found */
    char     base_family[32];
    char     base_how[768];   /* how the base was found; "" when path is the checkpoint */
    bool     adapter;         /* path is an adapter applied on base */
    float    adapter_weight;  /* recommended weight (1.0 when nothing says otherwise) */
    char     weight_how[128]; /* where the weight came from */
    char     trigger[1024];   /* trigger words, ", "-separated; "" when none are known */
    double   download_s;      /* seconds spent pulling from hubs */
    imgd_buf tried;           /* one line per base-search step ("\n"-separated) */
} imgd_mid_result;

/* Resolves p->model_id into *out (initialised here; free with imgd_mid_result_free on every
 * return). Returns IMGD_OK; IMGD_E_INVALID_ARG (an unreadable id, an incompatible base, a kind
 * that cannot be served: the message says which and what would work); IMGD_E_NOT_FOUND (no
 * base: the message lists what was tried and the candidates); the statuses of imgd_pull and
 * imgd_weights_open. */
imgd_status imgd_mid_resolve(const imgd_mid_params *p, imgd_mid_result *out);
void        imgd_mid_result_free(imgd_mid_result *r);

/* The result as a JSON object text ({"model_id","source","path","kind","family","base":
 * {"path","family","how"},"adapter":{...} or null,"tried":[...],"download_s"}); NULL on out of
 * memory. Free with imgd_free. */
char *imgd_mid_result_json(const char *model_id, const imgd_mid_result *r);

#endif
