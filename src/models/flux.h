/* FluxTransformer2DModel: the FLUX.1 denoiser (dev with its guidance embedding, schnell
 * without) as graph-builder calls on the tensor engine, following diffusers 0.30's module
 * tree (transformers/transformer_flux.py) so every parameter binds by its canonical name
 * ("transformer.transformer_blocks.0.attn.to_q.weight") from any layout: the diffusers
 * folder, or Black Forest Labs' single file whose fused qkv / linear1 rows the key map
 * splits into views (detect/keymap.c).
 *
 *     imgd_flux_cfg cfg;
 *     if (imgd_flux_cfg_from_detect(mi, &cfg) != IMGD_OK) ...   // then apply overrides
 *     // x [B, N, 64] packed latents, ctx [B, T, 4096] T5, pooled [B, 768] CLIP,
 *     // t [B] sigma (= timestep / 1000), guidance [B] (dev only), ids [T + N, 3]
 *     imgd_tensor *v = NULL;
 *     if (imgd_flux_build(g, b, "transformer", &cfg, &in, NULL, &v) != IMGD_OK) ...
 *     imgd_graph_output(g, v);
 *
 * Host helpers for the pipeline: 2x2 latent packing/unpacking and the position ids.
 *
 * Thread-safety: building touches only g and b (both owned by the calling thread). */
#ifndef IMGD_MODELS_FLUX_H
#define IMGD_MODELS_FLUX_H

#include "detect/detect.h"
#include "models/wbind.h"
#include "tensor/tensor.h"

#define IMGD_FLUX_AXES_MAX   4
#define IMGD_FLUX_BLOCKS_MAX 256

/* Architecture of one FLUX transformer. imgd_flux_cfg_from_detect fills it from the
 * detected config; fields marked "override" are what shapes cannot tell. */
typedef struct imgd_flux_cfg {
    int32_t in_channels;  /* packed latent channels in (64; 384 for FLUX.1 Fill) */
    int32_t out_channels; /* proj_out rows (64) */
    int32_t hidden;       /* inner dim = heads * head_dim (3072) */
    int32_t heads;        /* 24; hidden / head_dim */
    int32_t head_dim;     /* 128 (read from the q/k norm shapes) */
    int32_t depth;        /* double-stream blocks (19) */
    int32_t depth_single; /* single-stream blocks (38) */
    int32_t context_dim;  /* T5 width, joint_attention_dim (4096) */
    int32_t pooled_dim;   /* CLIP pooled width, pooled_projection_dim (768) */
    int32_t mlp_hidden;   /* feed-forward width, 4 * hidden */
    /* override: rope axes (sum = head_dim): FLUX.1 (16, 56, 56); config.json axes_dims_rope */
    int32_t n_axes;
    int32_t axes_dims[IMGD_FLUX_AXES_MAX];
    float   theta;          /* rope base, 10000 */
    float   eps;            /* every LayerNorm and the q/k RMSNorms, 1e-6 */
    bool    guidance_embed; /* dev: a guidance embedding (time_text_embed.guidance_embedder) */
} imgd_flux_cfg;

/* Graph inputs of one forward pass, all f32, batch B first. */
typedef struct imgd_flux_inputs {
    imgd_tensor *x;        /* [B, N, in_channels] packed latents (hidden_states) */
    imgd_tensor *ctx;      /* [B, T, context_dim] T5 output (encoder_hidden_states) */
    imgd_tensor *pooled;   /* [B, pooled_dim] CLIP pooled output (pooled_projections) */
    imgd_tensor *t;        /* [B] timestep as the pipeline passes it (sigma = t / 1000);
                              the model multiplies it by 1000 */
    imgd_tensor *guidance; /* [B] guidance scale (multiplied by 1000 inside); required with
                              a guidance embedding, must be NULL without one */
    imgd_tensor *ids;      /* [T + N, n_axes] positions: text ids first, then image ids
                              (imgd_flux_ids) */
} imgd_flux_inputs;

/* Intermediate tensors (diffusers module outputs), for tests and tools. When a taps struct
 * is given, every tap is marked as a graph output. */
typedef struct imgd_flux_taps {
    imgd_tensor *x_embedder;                /* [B, N, hidden] */
    imgd_tensor *context_embedder;          /* [B, T, hidden] */
    imgd_tensor *temb;                      /* [B, hidden] time_text_embed */
    imgd_tensor *txt[IMGD_FLUX_BLOCKS_MAX]; /* transformer_blocks.i: text stream [B, T, hidden] */
    imgd_tensor *img[IMGD_FLUX_BLOCKS_MAX]; /* transformer_blocks.i: image stream [B, N, hidden] */
    imgd_tensor *single[IMGD_FLUX_BLOCKS_MAX]; /* single_transformer_blocks.i [B, T + N, hidden] */
    imgd_tensor *norm_out;                     /* [B, N, hidden] */
} imgd_flux_taps;

/* Fills cfg from a detection result (mi->dit of a FLUX transformer): widths from shapes,
 * heads from the q/k norm width, rope axes from config.json or FLUX.1's (16, 56, 56) when
 * head_dim is 128. Returns IMGD_OK; IMGD_E_INVALID_ARG (NULL, or mi has no FLUX
 * transformer: the message says what it is). cfg is written only on success; a narrow
 * model without config.json then still needs axes_dims set (imgd_flux_cfg_check says so). */
imgd_status imgd_flux_cfg_from_detect(const imgd_model_info *mi, imgd_flux_cfg *cfg);

/* Validates cfg on its own: sizes in range, heads * head_dim = hidden, rope axes even and
 * summing to head_dim. IMGD_E_INVALID_ARG naming the field and what to set. */
imgd_status imgd_flux_cfg_check(const imgd_flux_cfg *cfg);

/* Appends the transformer forward pass to g.
 *   b       weights (borrowed for the graph's lifetime); a missing tensor or one whose
 *           shape disagrees with cfg fails naming the tensor and both shapes.
 *   prefix  canonical component ("transformer").
 *   in      the inputs (see imgd_flux_inputs); shapes are checked against cfg.
 *   taps    NULL, or receives intermediate tensors (marked as graph outputs).
 *   out     receives the velocity [B, N, out_channels] (not marked as an output).
 * Returns IMGD_OK or the graph's sticky error (IMGD_E_INVALID_ARG for inputs or a cfg that
 * do not fit, IMGD_E_FORMAT for weights that do not, IMGD_E_NOMEM); *out untouched then. */
imgd_status imgd_flux_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                            const imgd_flux_cfg *cfg, const imgd_flux_inputs *in,
                            imgd_flux_taps *taps, imgd_tensor **out);

/* Activation memory of the transformer graph for one input shape, without weights: builds
 * it with placeholder weights (never computed), plans it on backend be (borrowed) and
 * reports the plan (activation_bytes includes the backend's scratch). height/width are
 * latent pixels (even; image / 8), txt_len the T5 sequence length. Returns IMGD_OK,
 * IMGD_E_INVALID_ARG (bad sizes or cfg, named), or the plan's errors. */
imgd_status imgd_flux_plan_info(const imgd_flux_cfg *cfg, int64_t batch, int64_t height,
                                int64_t width, int64_t txt_len, imgd_backend *be,
                                imgd_plan_info *info);

/* ---- host helpers ---------------------------------------------------------------------- */

/* FluxPipeline._pack_latents: lat [B, C, H, W] (H, W even) -> out [B, (H/2)(W/2), 4C] with
 * channel c*4 + dy*2 + dx of token row*(W/2) + col. out must not alias lat. */
void imgd_flux_pack(const float *lat, int64_t B, int64_t C, int64_t H, int64_t W, float *out);

/* The exact inverse: packed [B, (H/2)(W/2), 4C] -> out [B, C, H, W]. */
void imgd_flux_unpack(const float *packed, int64_t B, int64_t C, int64_t H, int64_t W, float *out);

/* Position ids [txt_len + (H/2)(W/2), 3] for a latent of H x W (even): txt_len rows of
 * zeros, then (0, row, col) of each packed token in row-major order. */
void imgd_flux_ids(int64_t txt_len, int64_t H, int64_t W, float *out);

#endif
