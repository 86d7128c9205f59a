/* The SD 1.x / 2.x pipeline's internals: the loaded model (imgd_model) and the graphs it
 * keeps between requests of the same shape. Public entry points are in imgd.h
 * (imgd_model_load, imgd_generate). */
#ifndef IMGD_PIPELINE_PIPELINE_H
#define IMGD_PIPELINE_PIPELINE_H

#include "detect/detect.h"
#include "models/clip_text.h"
#include "models/controlnet.h"
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
    imgd_tensor *in[6];
    imgd_tensor *out[4];
    imgd_tensor *res[IMGD_UNET_SKIPS_MAX + 1]; /* ControlNet residuals (inputs of the UNet,
                                                  outputs of a ControlNet); n_res of them */
    int32_t n_res;
} imgd_sd_graph;

/* Most text encoders a model conditions on (SDXL: CLIP-L and OpenCLIP bigG). */
#define IMGD_SD_TE_MAX 2

/* One text encoder of a model, in the order its outputs are concatenated. */
typedef struct imgd_sd_te {
    const char        *prefix; /* canonical component: "text_encoder", "text_encoder_2" */
    imgd_clip_text_cfg cfg;
    int32_t            pad; /* the tokenizer's pad id: <|endoftext|>, or 0 ("!") for
                               SDXL's second tokenizer */
    bool          pooled;   /* gives the pooled text_embeds (SDXL: the projected one) */
    imgd_sd_graph g;        /* in: embeds, pool select; out: hidden states, text_embeds */
    int32_t       empty_ids[IMGD_PROMPT_CHUNK_LEN]; /* the empty prompt's chunk */
    float         empty_wts[IMGD_PROMPT_CHUNK_LEN];
    float        *ti_rows; /* textual-inversion rows for token ids cfg.vocab .. +
                              imgd_model.n_ti - 1 ([n_ti, cfg.hidden] f32) */
} imgd_sd_te;

/* A ControlNet loaded for a model, cached by path (pipeline/control.c). */
typedef struct imgd_sd_control {
    char               *path;
    imgd_weights       *w;
    imgd_model_info    *mi;
    imgd_wbind         *wb;
    imgd_controlnet_cfg cfg;
    imgd_sd_graph       g;    /* in: x, t, ctx, control image; res: its residuals */
    uint64_t            used; /* the model's run counter when last used (eviction) */
} imgd_sd_control;

/* Most ControlNets a model keeps loaded; the least recently used goes first. */
#define IMGD_SD_CONTROLS_CACHED 16

struct imgd_model {
    char            *path, *name;
    imgd_weights    *w, *vae_w, *unet_w; /* vae_w / unet_w: a separate --vae / --unet */
    imgd_model_info *mi, *vae_mi, *unet_mi;
    imgd_wbind      *wb, *vae_wb, *unet_wb;
    imgd_clip_tok   *tok;
    imgd_backend    *be;
    imgd_backend    *vae_be; /* the VAE's when it needs other math (SDXL's VAE overflows in
                                f16: bf16 on GPUs) or runs on the CPU (IMGD_OFFLOAD_VAE);
                                NULL = be */
    imgd_backend *te_be;     /* the text encoders' on the CPU (IMGD_OFFLOAD_TE); NULL = be */
    imgd_pool    *pool; /* the compute threads: the backend's (borrowed) and the LoRA merge's */

    imgd_sd_te te[IMGD_SD_TE_MAX];
    int32_t    n_te;
    int32_t    ctx_dim;    /* sum of the encoders' widths = the UNet's context width */
    int32_t    pooled_dim; /* SDXL: width of the pooled text embedding; 0 = none */
    int32_t    n_time_ids; /* SDXL micro-conditioning ids: 6 (base), 5 (refiner: with
                              the aesthetic score); 0 = no added conditioning */
    bool force_zeros;      /* an empty negative prompt conditions on zeros (SDXL base:
                              model_index.json force_zeros_for_empty_prompt) */
    imgd_unet_cfg   unet;
    imgd_vae_cfg    vae;
    float           vae_scale, vae_shift;
    imgd_prediction prediction;

    imgd_sd_graph   g_unet, g_dec, g_enc;
    imgd_vae_tiler *vae_tiler; /* the tiled decoder's graphs, kept for the next decode */

    /* Filled on first use and kept (a model is used by one thread at a time, imgd.h):
     * each encoder's empty-prompt chunk (pads prompts and negative prompts to the same
     * number of chunks) and the scheduler config (SD 1.5's overlaid with the model's
     * scheduler_config.json; kind, schedule and steps are set per request). */
    bool                has_empty_chunk, has_sched;
    imgd_sampler_params sched;

    /* Adapters (adapters.c): LoRA cache and applied set; n_ti textual-inversion vectors
     * (token ids te[i].cfg.vocab.., rows in te[i].ti_rows). */
    struct imgd_sd_adapters *ad;
    int32_t                  n_ti;
    imgd_sd_control         *controls[IMGD_SD_CONTROLS_CACHED]; /* loaded ControlNets */
    int32_t                  n_controls;
    uint64_t                 control_runs; /* counts runs that used ControlNets */

    /* FLUX.1 (pipeline/flux.c): its encoders, configs and graphs; NULL for SD / SDXL. A FLUX
     * model uses path, name, w, mi, wb (the transformer), vae_w / vae_mi / vae_wb, tok (the
     * CLIP tokenizer), be and pool of the fields above, nothing else. */
    struct imgd_flux_model *flux;
    struct imgd_sd_share   *vae_share; /* the store's VAE vae_wb points to (share.c); NULL */
};

/* The CLIP tokenizer into m->tok: explicit_dir, else the search imgd.h documents for
 * imgd_load_params.tokenizer_dir (path: the model's file or folder). */
imgd_status imgd_sd_tokenizer_load(imgd_model *m, const char *path, const char *explicit_dir);

/* The binder and prefix the VAE comes from (the --vae file, or the checkpoint's own). */
imgd_wbind *imgd_sd_vae_bind(imgd_model *m);
/* The backends the VAE and the text encoders run on (vae_be / te_be, else be). */
imgd_backend *imgd_model_vae_backend(const imgd_model *m);
imgd_backend *imgd_model_te_backend(const imgd_model *m);

/* The binder the UNet comes from (the --unet file, or the checkpoint's own). */
imgd_wbind *imgd_sd_unet_bind(imgd_model *m);

/* An init image as [3, H, W] in [-1, 1]: RGB (alpha on white), resized to W x H with
 * Lanczos when it has another size (diffusers' image processor). */
imgd_status imgd_sd_prep_image(const imgd_image_u8 *src, int32_t W, int32_t H, float *out);

/* VAE-encodes one image [1, 3, H, W] in [-1, 1] into its posterior sample, (mean + std *
 * noise - shift) * scale, latent [1, zc, H/8, W/8]; noise: a caller-drawn [zc, H/8, W/8].
 * The encoder graph is kept in k for the next image of the same size. */
imgd_status imgd_vae_encode_sample(imgd_sd_graph *k, imgd_backend *be, imgd_wbind *wb,
                                   const imgd_vae_cfg *cfg, float shift, float scale,
                                   const float *image, int32_t H, int32_t W, const float *noise,
                                   float *latent);

/* Adapters (adapters.c). init: lora_dir and embeddings of lp; free: restores the base
 * weights and releases every loaded adapter. */
imgd_status imgd_sd_adapters_init(imgd_model *m, const imgd_load_params *lp);
void        imgd_sd_adapters_free(imgd_model *m);

/* The prompt without its <lora:...> and <hypernet:...> tags (imgd_malloc'd into *out). */
imgd_status imgd_sd_prompt_strip(const char *prompt, char **out);

/* A hash of p's LoRA set (loras and prompt tags resolved; 0 = none): requests batch only
 * with equal ones. IMGD_E_INVALID_ARG names a bad field or a tag naming no file. */
imgd_status imgd_sd_lora_sig(const imgd_model *m, const imgd_gen_params *p, uint64_t *sig);

/* Makes p's LoRA set the applied one (nothing to do when it already is): restores the base
 * weights, then merges / hooks the new set; the UNet and text-encoder graphs are rebuilt.
 * On failure the base weights are in place. */
imgd_status imgd_sd_lora_apply(imgd_model *m, const imgd_gen_params *p);

/* A1111's "Lora hashes" value for p's LoRA set: "name: hash12, ..." (file names without
 * extension; A1111's short hashes), imgd_malloc'd into *out; NULL when the set is empty. */
imgd_status imgd_sd_lora_hashes(imgd_model *m, const imgd_gen_params *p, char **out);

/* A hash of p's hypernetwork set (hypernets, then <hypernet:name[:w]> prompt tags, resolved
 * in the model's hypernet_dir; 0 = none): requests batch only with equal ones.
 * IMGD_E_INVALID_ARG names a bad field or a tag naming no file. */
imgd_status imgd_sd_hypernet_sig(const imgd_model *m, const imgd_gen_params *p, uint64_t *sig);

/* Makes p's hypernetwork set the applied one (nothing to do when it already is): loads the
 * files (cached per model; a file that matches no attention width of the UNet is refused
 * with IMGD_E_UNSUPPORTED naming its widths and the model's) and drops the UNet and
 * ControlNet graphs so that the next builds apply them. On failure no hypernetwork is
 * applied. */
imgd_status imgd_sd_hypernet_apply(imgd_model *m, const imgd_gen_params *p);

/* The applied hypernetworks of non-zero weight, in order (*hn, *w: valid until the set
 * changes); returns their count (0: *hn and *w untouched). */
int32_t imgd_sd_hypernets(const imgd_model *m, const imgd_hypernet *const **hn, const float **w);

/* A1111 infotext values of p's structured hypernetworks (tags stay in the prompt):
 * "name, ..." and "w, ..." (file names without extension), imgd_malloc'd; both NULL when
 * p has none. */
imgd_status imgd_sd_hypernet_info(const imgd_model *m, const imgd_gen_params *p, char **names,
                                  char **weights);

/* ---- shared components (pipeline/share.c) ------------------------------------------------- */

/* Binds m's VAE to the store's copy of an identical one, or hands it to the store for the
 * next models (imgd_components in imgd.h). Called by imgd_model_load after the configs are
 * built; m->vae_wb then points into the store and m->vae_share holds the reference.
 * A component that cannot be compared (a VAE of transposed tensors, a checkpoint read into
 * memory rather than mapped) stays the model's own. IMGD_E_NOMEM; a file that changed
 * since the model opened it is IMGD_E_IO. */
imgd_status imgd_sd_share_vae(imgd_model *m, imgd_components *c, const imgd_open_params *op);

/* Drops m's references into its component store (imgd_model_free, after the graphs). */
void imgd_sd_share_release(imgd_model *m);

/* Frees the kept graphs. */
void imgd_sd_graphs_free(imgd_model *m);

/* One kept graph (sd.c): drop frees it and clears k; new drops it and starts an empty graph
 * (IMGD_E_NOMEM); finish plans and allocates a freshly built graph on be, dropping it and
 * prefixing the error with "<what> graph" on failure. */
void        imgd_sd_graph_drop(imgd_sd_graph *k);
imgd_status imgd_sd_graph_new(imgd_sd_graph *k);
imgd_status imgd_sd_graph_finish(imgd_backend *be, imgd_sd_graph *k, const char *what);

/* Drops the text-encoder graphs (their weights changed). */
void imgd_sd_te_graphs_drop(imgd_model *m);

/* ---- text conditioning (pipeline/sd_text.c) ---------------------------------------------- */

/* A prompt pair's conditioning: cond / uncond [len, ctx_dim] (each encoder's hidden state
 * of a token side by side, in encoder order), pooled / upooled [pooled_dim] (NULL without
 * added conditioning). imgd_malloc'd; imgd_sd_text_free releases them. */
typedef struct imgd_sd_text {
    float  *cond, *uncond, *pooled, *upooled;
    int32_t len; /* tokens: chunks * 77 */
} imgd_sd_text;

/* Encodes pos and neg (A1111 syntax, <lora:> tags already removed) with every encoder of m:
 * 75-token chunks, the shorter prompt padded with empty chunks, emphasis applied per
 * encoder; clip_skip in A1111 numbering (SD 1.x/2.x: the last LayerNorm applied to the
 * skipped layer's state; SDXL: the raw penultimate state is clip skip 1); skip_neg false
 * leaves the negative prompt at the default layer (diffusers). An empty negative on a
 * force_zeros model conditions on zeros. out is written on IMGD_OK only. */
imgd_status imgd_sd_encode(imgd_model *m, const char *pos, const char *neg, int32_t clip_skip,
                           bool skip_neg, imgd_sd_text *out);
void        imgd_sd_text_free(imgd_sd_text *t);

/* The largest clip skip the model's encoders allow (A1111 numbering). */
int32_t imgd_sd_clip_skip_max(const imgd_model *m);

/* The model's encoders and what the UNet expects of them (model.c calls it after
 * detection): fills te[], n_te, ctx_dim, pooled_dim, n_time_ids, force_zeros. te_heads > 0
 * overrides every encoder's head count. */
imgd_status imgd_sd_text_setup(imgd_model *m, int32_t te_heads);

/* ---- ControlNet (pipeline/control.c) ------------------------------------------------------ */

/* Frees the cached ControlNets (imgd_model_free). */
void imgd_sd_controls_free(imgd_model *m);

/* Validates a request's controls (count, fields, images) with messages naming the field. */
imgd_status imgd_sd_control_check(const imgd_gen_params *p);

/* diffusers' controlnet_keep: whether a control with [start, end] acts at loop iteration i
 * of n (i / n < start or (i + 1) / n > end: off). */
bool imgd_sd_control_keep(int32_t i, int32_t n, float start, float end);

/* One item of a batch as the ControlNet run sees it: its UNet rows u_off .. u_off + nu
 * (nu = 2B with CFG: B unconditional rows, then B conditional). */
typedef struct imgd_sd_control_item {
    const imgd_gen_params *p; /* NULL: the item has no rows */
    int32_t                u_off, B;
    bool                   cfg_on;
} imgd_sd_control_item;

typedef struct imgd_sd_control_run imgd_sd_control_run;

/* Prepares the ControlNets of a batch (every item names the same files): loads the models
 * (cached on m), prepares each item's control images, allocates the residual sums.
 * ub, h, w, len: the UNet batch, latent size and context length. *out = NULL when the
 * items have no controls. Statuses of loading and preparing (the message names the file,
 * the item and the control). */
imgd_status imgd_sd_control_begin(imgd_model *m, const imgd_sd_control_item *items, size_t n,
                                  int32_t ub, int32_t h, int32_t w, int32_t len,
                                  imgd_sd_control_run **out);

/* Runs the ControlNets on the UNet's inputs (x [ub, cin, h, w], t [ub], ctx [ub, len, D];
 * SDXL: pooled [ub, P] and tids [ub, K], else NULL) for loop iteration i of n and sums
 * their scaled residuals. */
imgd_status imgd_sd_control_step(imgd_sd_control_run *c, const float *x, int32_t cin,
                                 const float *t, const float *ctx, const float *pooled,
                                 const float *tids, int32_t i, int32_t n);

/* The summed residual k (0 .. imgd_unet_skip_count, the mid one last): a buffer of the
 * UNet's input shape, valid until imgd_sd_control_free. */
float *imgd_sd_control_res(imgd_sd_control_run *c, int32_t k);

void imgd_sd_control_free(imgd_sd_control_run *c);

#endif
