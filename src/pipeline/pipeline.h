/* The SD 1.x / 2.x pipeline's internals: the loaded model (imgd_model) and the graphs it
 * keeps between requests of the same shape. Public entry points are in imgd.h
 * (imgd_model_load, imgd_generate). */
#ifndef IMGD_PIPELINE_PIPELINE_H
#define IMGD_PIPELINE_PIPELINE_H

#include "detect/detect.h"
#include "models/clip_text.h"
#include "models/lora.h"
#include "models/prompt.h"
#include "models/tokenizer.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/wbind.h"
#include "sampling/sampler.h"
#include "tensor/backend.h"
#include "tensor/tensor.h"

/* A planned, allocated graph kept for replay while requests keep its shape. */
typedef struct imgd_sd_graph {
    imgd_graph  *g;
    int32_t      batch, h, w, len; /* the shape it was built for (len: context tokens) */
    int32_t      variant;          /* what else distinguishes it (clip skip layer, ...) */
    imgd_tensor *in[4];
    imgd_tensor *out[4];
} imgd_sd_graph;

struct imgd_model {
    char            *path, *name;
    imgd_weights    *w, *vae_w, *unet_w; /* vae_w / unet_w: a separate --vae / --unet */
    imgd_model_info *mi, *vae_mi, *unet_mi;
    imgd_wbind      *wb, *vae_wb, *unet_wb;
    imgd_clip_tok   *tok;
    imgd_backend    *be;
    imgd_pool       *pool; /* the compute threads: the backend's (borrowed) and the LoRA merge's */

    imgd_clip_text_cfg te;
    imgd_unet_cfg      unet;
    imgd_vae_cfg       vae;
    float              vae_scale, vae_shift;
    imgd_prediction    prediction;

    imgd_sd_graph g_te, g_unet, g_dec, g_enc;

    /* Filled on first use and kept (a model is used by one thread at a time, imgd.h):
     * the empty prompt's chunk (pads prompts and negative prompts to the same number of
     * chunks) and the scheduler config (SD 1.5's overlaid with the model's
     * scheduler_config.json; kind, schedule and steps are set per request). */
    bool                has_empty_chunk, has_sched;
    int32_t             empty_ids[IMGD_PROMPT_CHUNK_LEN];
    float               empty_wts[IMGD_PROMPT_CHUNK_LEN];
    imgd_sampler_params sched;

    /* Adapters (adapters.c): LoRA cache and applied set; textual-inversion vectors, rows for
     * token ids te.vocab .. te.vocab + n_ti - 1 ([n_ti, te.hidden] f32). */
    struct imgd_sd_adapters *ad;
    float                   *ti_rows;
    int32_t                  n_ti;
};

/* The binder and prefix the VAE comes from (the --vae file, or the checkpoint's own). */
imgd_wbind *imgd_sd_vae_bind(imgd_model *m);

/* The binder the UNet comes from (the --unet file, or the checkpoint's own). */
imgd_wbind *imgd_sd_unet_bind(imgd_model *m);

/* Adapters (adapters.c). init: lora_dir and embeddings of lp; free: restores the base
 * weights and releases every loaded adapter. */
imgd_status imgd_sd_adapters_init(imgd_model *m, const imgd_load_params *lp);
void        imgd_sd_adapters_free(imgd_model *m);

/* The prompt without its <lora:...> tags (imgd_malloc'd into *out). */
imgd_status imgd_sd_prompt_strip(const char *prompt, char **out);

/* A hash of p's LoRA set (loras and prompt tags resolved; 0 = none): requests batch only
 * with equal ones. IMGD_E_INVALID_ARG names a bad field or a tag naming no file. */
imgd_status imgd_sd_lora_sig(const imgd_model *m, const imgd_gen_params *p, uint64_t *sig);

/* Makes p's LoRA set the applied one (nothing to do when it already is): restores the base
 * weights, then merges / hooks the new set; the UNet and text-encoder graphs are rebuilt.
 * On failure the base weights are in place. */
imgd_status imgd_sd_lora_apply(imgd_model *m, const imgd_gen_params *p);

/* Frees the kept graphs. */
void imgd_sd_graphs_free(imgd_model *m);

#endif
