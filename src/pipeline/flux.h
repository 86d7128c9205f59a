/* FLUX.1 (dev and schnell) behind the public API: imgd_model_load finds the parts a FLUX
 * model needs (transformer, CLIP-L, T5-XXL, their tokenizers, the 16-channel VAE and the
 * scheduler config) in whatever layout they come, and imgd_generate runs FluxPipeline:
 * prompt -> CLIP pooled (77 tokens) + T5 (max_sequence_length) -> noise drawn as
 * [B, 16, H/8, W/8] and packed -> imgd_flux_generate (pipeline/flux_gen.h) -> images.
 *
 * model.c calls imgd_flux_model_load for the FLUX families after opening and detecting the
 * model (and the --vae file); sd.c's imgd_generate_many, imgd_gen_params_batchable and
 * imgd_gen_batch_key hand FLUX models (m->flux != NULL) to the functions below.
 *
 * Thread-safety: as imgd_generate: one thread at a time per model. */
#ifndef IMGD_PIPELINE_FLUX_H
#define IMGD_PIPELINE_FLUX_H

#include "pipeline/pipeline.h"

typedef struct imgd_flux_model imgd_flux_model;

/* Whether f is a FLUX.1 family (dev or schnell). */
bool imgd_flux_family(imgd_family f);

/* Loads the FLUX parts of m (m->w / m->mi opened and detected, m->vae_w / vae_mi when
 * lp->vae was given, m->be created) into m->flux. Statuses: IMGD_E_FORMAT (a part missing:
 * names where it looked and the load param / CLI flag that gives it), IMGD_E_INVALID_ARG
 * (a given file of the wrong kind, named), the open / detect / tokenizer / config errors.
 * m->flux is set only on success. */
imgd_status imgd_flux_model_load(imgd_model *m, const imgd_load_params *lp);
void        imgd_flux_model_free(imgd_flux_model *f);

/* 28 (dev) or 4 (schnell); whether the transformer has a guidance embedding. */
int32_t imgd_flux_default_steps(const imgd_flux_model *f);
bool    imgd_flux_has_guidance(const imgd_flux_model *f);

/* imgd_generate_many for a FLUX model (same contract; items run one after another). */
imgd_status imgd_flux_generate_many(imgd_model *m, const imgd_gen_params *const *items, size_t n,
                                    imgd_gen_item_result *out);

/* The batch key of p for a FLUX model: "WxH steps=N flux" (IMGD_E_INVALID_ARG for a bad
 * request, named). */
imgd_status imgd_flux_batch_key(const imgd_model *m, const imgd_gen_params *p, char *buf,
                                size_t cap);

#endif
