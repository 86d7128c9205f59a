/* UNet2DConditionModel: the Stable Diffusion denoiser (SD 1.x, SD 2.x, inpainting 9-channel
 * and instruct-pix2pix 8-channel inputs, SDXL added conditioning, ControlNet residuals) as
 * graph-builder calls on the tensor engine, following diffusers' module tree so every
 * parameter binds by its canonical name ("unet.down_blocks.0.resnets.0.conv1.weight") from
 * any layout (diffusers folder, LDM single file, .ckpt).
 *
 *     imgd_unet_cfg cfg;
 *     if (imgd_unet_cfg_from_detect(mi, &cfg) != IMGD_OK) ...   // then apply overrides
 *     cfg.groups = 4;                                            // e.g. for a narrow file
 *     imgd_tensor *x   = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4, (int64_t[]){2, 4, 64, 64});
 *     imgd_tensor *t   = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){2});
 *     imgd_tensor *ctx = imgd_graph_input(g, "ctx", IMGD_DTYPE_F32, 3, (int64_t[]){2, 77, 768});
 *     imgd_tensor *eps = NULL;
 *     if (imgd_unet_build(g, b, "unet", &cfg, x, t, ctx, NULL, NULL, &eps) != IMGD_OK) ...
 *     imgd_graph_output(g, eps);
 *     imgd_graph_plan(g, be, &info); imgd_graph_alloc(g, NULL, 0);
 *     for (each step) { bind x, t, ctx; imgd_graph_compute(g); read eps; }
 *
 * Layout decisions (speed): inside a transformer block activations stay [B, H*W, C] so every
 * projection is one GEMM over B*H*W rows and attention reads q/k/v in place ([B, L, heads,
 * head_dim] views of the projections); proj_in reads the GroupNorm output through a
 * transposed view and proj_out writes NCHW directly (W . h^T), so a block makes no
 * layout copies of its own.
 *
 * Thread-safety: building touches only g and b (both owned by the calling thread). */
#ifndef IMGD_MODELS_UNET_H
#define IMGD_MODELS_UNET_H

#include "detect/detect.h"
#include "models/hypernet.h"
#include "models/wbind.h"
#include "tensor/tensor.h"

/* Most skip connections a UNet may have (1 + levels * (layers_per_block + 1)). */
#define IMGD_UNET_SKIPS_MAX 64

/* Most hypernetworks one UNet graph applies (imgd_unet_extra). */
#define IMGD_UNET_HYPERNETS_MAX 16

/* Architecture of one UNet. imgd_unet_cfg_from_detect fills it from the detected config;
 * the fields marked "override" are what shapes cannot tell and a caller may set afterwards
 * (options, a config file, a narrow test model). imgd_unet_cfg_check validates it. */
typedef struct imgd_unet_cfg {
    int32_t in_channels;                 /* 4; 9 inpainting; 8 instruct-pix2pix */
    int32_t out_channels;                /* 4 (8 for learned-variance models) */
    int32_t n_levels;                    /* 1..IMGD_MAX_LEVELS */
    int32_t layers_per_block;            /* resnets per down level (up levels have one more) */
    int32_t widths[IMGD_MAX_LEVELS];     /* block_out_channels; widths[0] = conv_in width */
    int32_t attn_depth[IMGD_MAX_LEVELS]; /* transformer blocks per attention, 0 = none */
    int32_t mid_depth;                   /* mid-block transformer blocks; <= 0: no attention
                                            (two resnets only) */
    int32_t context_dim;                 /* cross-attention key width (768, 1024, 2048) */
    int32_t time_embed_dim;              /* 4 * widths[0] */
    int32_t adm_in_channels;             /* SDXL add_embedding input, 0 = none */

    /* override: attention heads per level (the mid block uses the last level's). Used for
     * levels where head_dim is 0. SD 1.x: 8 everywhere; SD 2.x / SDXL: width / 64. */
    int32_t heads[IMGD_MAX_LEVELS];
    /* override: > 0 sets every level's heads to width / head_dim (SD 2.x style, 64);
     * 0 = use heads[]. */
    int32_t head_dim;
    /* override: GroupNorm groups of every norm (real SD models 32; the conformance kit's
     * narrow models 4). Must divide every channel count a norm sees. */
    int32_t groups;

    float norm_eps;      /* resnets and conv_norm_out, 1e-5 */
    float attn_norm_eps; /* the GroupNorm in front of each transformer, 1e-6 */
    float ln_eps;        /* LayerNorms inside transformer blocks, 1e-5 */

    bool linear_proj; /* proj_in/proj_out are Linear (SD 2.x, SDXL) rather than 1x1 convs */
} imgd_unet_cfg;

/* Inputs beyond sample, timestep and context. Pass NULL when none apply. Every tensor is
 * f32 (any layout), batch B first. */
typedef struct imgd_unet_extra {
    /* SDXL added conditioning (required when adm_in_channels > 0): pooled text embedding
     * [B, P] and micro-conditioning ids [B, K] (K = 6 for SDXL base, 5 for the refiner);
     * each id gets a sinusoidal embedding of (adm_in_channels - P) / K dims (cos first),
     * flattened after text_embeds into add_embedding, whose output joins the time
     * embedding. */
    imgd_tensor *text_embeds;
    imgd_tensor *time_ids;

    /* ControlNet: residuals added to the skip connections in order (conv_in output first,
     * then each resnet/attention output and each downsampler output: n_down_res must equal
     * imgd_unet_skip_count) and to the mid-block output. NULL / 0 = none. Already scaled by
     * the conditioning scale. */
    imgd_tensor *down_res[IMGD_UNET_SKIPS_MAX];
    int32_t      n_down_res;
    imgd_tensor *mid_res;

    /* Added to conv_in's output before anything reads it (a ControlNet's hint embedding
     * when this graph is a ControlNet encoder). NULL = none. */
    imgd_tensor *conv_in_add;

    /* A1111 hypernetworks (models/hypernet.h), as modules/sd_hijack_optimizations.py and
     * hypernetwork.apply_hypernetworks apply them: in every attention, self-attention
     * included (its context is its own input), the input of to_k goes through the key MLP
     * and the input of to_v through the value MLP of each hypernetwork in turn, keys and
     * values chained separately (c_k = hn_i(c_k) ...), each MLP only where the file has
     * one for the context's width: c + mlp(c) * weights[i]. Borrowed for the graph's
     * lifetime. NULL / 0 = none (the graph is then exactly the plain UNet's). */
    const imgd_hypernet *const *hypernets;
    const float                *hypernet_weights; /* n_hypernets multipliers */
    int32_t                     n_hypernets;      /* 0..IMGD_UNET_HYPERNETS_MAX */
} imgd_unet_extra;

/* Intermediate tensors (diffusers module outputs), for tests and tools. When a taps struct
 * is given, every tap is marked as a graph output (kept alive: costs memory). */
typedef struct imgd_unet_taps {
    imgd_tensor *time_proj;      /* [B or 1, C0] sinusoidal embedding */
    imgd_tensor *time_embedding; /* [B or 1, 4 C0] after the MLP (before added conditioning) */
    imgd_tensor *add_time_proj;  /* SDXL: [B * K, dim] */
    imgd_tensor *add_embedding;  /* SDXL: [B, 4 C0] */
    imgd_tensor *conv_in;
    imgd_tensor *down[IMGD_MAX_LEVELS]; /* down_blocks.N output (after the downsampler) */
    imgd_tensor *mid;                   /* mid_block output (after a ControlNet residual) */
    imgd_tensor *up[IMGD_MAX_LEVELS];   /* up_blocks.N output (after the upsampler) */
    imgd_tensor *conv_norm_out;         /* after GroupNorm, before SiLU */
    imgd_tensor *conv_out;              /* = out */
} imgd_unet_taps;

/* Fills cfg from a detection result: architecture from mi->unet, heads from config.json,
 * the .yaml or the family default, groups as detected (32 for real widths), eps values of
 * diffusers. Returns IMGD_OK; IMGD_E_INVALID_ARG (NULL arguments, or mi has no UNet: the
 * message says what it is); IMGD_E_UNSUPPORTED (a UNet variant this builder lacks, e.g.
 * Kolors' encoder_hid_proj). cfg is written only on success. */
imgd_status imgd_unet_cfg_from_detect(const imgd_model_info *mi, imgd_unet_cfg *cfg);

/* Validates cfg on its own (no weights): sizes in range, GroupNorm groups dividing every
 * channel count a norm sees, heads dividing every attention width. Returns IMGD_OK or
 * IMGD_E_INVALID_ARG with a message that names the field, the offending value and what to
 * set instead. */
imgd_status imgd_unet_cfg_check(const imgd_unet_cfg *cfg);

/* The distinct widths of the attention contexts of a UNet, which a hypernetwork's MLPs are
 * keyed by: context_dim (cross-attention) and the width of every level with attention
 * (self-attention), ascending, into dims (cap entries); returns how many there are. */
int32_t imgd_unet_attn_widths(const imgd_unet_cfg *cfg, int32_t *dims, int32_t cap);

/* Attention heads at level (0..n_levels-1) after applying head_dim; 0 when unusable. */
int32_t imgd_unet_heads(const imgd_unet_cfg *cfg, int32_t level);

/* Number of skip connections (= ControlNet down residuals): 1 + levels * layers_per_block +
 * (levels - 1). Channels and spatial divisor of skip i via the out-parameters (may be NULL):
 * skip i of a [B, *, H, W] input is [B, channels, ceil(H / div), ceil(W / div)]
 * (imgd_unet_div_size: each stride-2 convolution rounds up). */
int32_t imgd_unet_skip_count(const imgd_unet_cfg *cfg);
void    imgd_unet_skip_shape(const imgd_unet_cfg *cfg, int32_t i, int32_t *channels, int32_t *div);

/* A latent side n after the halvings that divide it by div (a power of two): ceil(n / div).
 * Sides that are not multiples run as diffusers runs them: each upsampler's output is cut
 * to its skip's size (diffusers' forward_upsample_size, nearest interpolation). */
static inline int64_t imgd_unet_div_size(int64_t n, int64_t div) {
    return (n + div - 1) / div;
}

/* Appends the UNet forward pass to g.
 *   b       weights, required (borrowed for the graph's lifetime); missing tensors or
 *           shapes that disagree with cfg fail naming the tensor, the file and both shapes.
 *   prefix  component of the canonical names ("unet"; "controlnet" for a ControlNet's copy).
 *   cfg     checked with imgd_unet_cfg_check first.
 *   x       [B, in_channels, H, W]; H and W divisible by 2^(n_levels-1).
 *   t       [B] or [1] timesteps (fractional allowed; the embedding uses the float value).
 *   ctx     [B, L, context_dim] encoder hidden states (NULL only for a UNet without
 *           attention).
 *   extra   NULL, or SDXL / ControlNet inputs (see imgd_unet_extra).
 *   taps    NULL, or receives intermediate tensors (marked as graph outputs).
 *   out     receives [B, out_channels, H, W] on success (not marked as an output: the caller
 *           marks it or feeds it to more ops).
 * Returns IMGD_OK or the graph's sticky error (IMGD_E_INVALID_ARG for inputs or a cfg that
 * do not fit; IMGD_E_FORMAT for weights that do not; IMGD_E_NOMEM), with the message set and
 * kept on the graph. On failure g is in its sticky error state and *out is untouched. */
imgd_status imgd_unet_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                            const imgd_unet_cfg *cfg, imgd_tensor *x, imgd_tensor *t,
                            imgd_tensor *ctx, const imgd_unet_extra *extra, imgd_unet_taps *taps,
                            imgd_tensor **out);

/* The encoder half (time embedding, conv_in, down blocks, mid block), as a ControlNet runs
 * it: skips[0..imgd_unet_skip_count) receive the skip states and *mid the mid-block output
 * (after extra->mid_res when given). Arguments and returns as imgd_unet_build. */
imgd_status imgd_unet_build_encoder(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                    const imgd_unet_cfg *cfg, imgd_tensor *x, imgd_tensor *t,
                                    imgd_tensor *ctx, const imgd_unet_extra *extra,
                                    imgd_unet_taps *taps, imgd_tensor **skips, imgd_tensor **mid);

/* Activation memory of the UNet graph for one input shape, without weights: builds the graph
 * with placeholder weights (never computed), plans it on backend be and reports the plan
 * (activation_bytes includes the backend's scratch). batch, height, width (latent pixels)
 * and ctx_len describe the inputs. Returns IMGD_OK, the checks of imgd_unet_build, or the
 * plan's errors. */
imgd_status imgd_unet_plan_info(const imgd_unet_cfg *cfg, int64_t batch, int64_t height,
                                int64_t width, int64_t ctx_len, imgd_backend *be,
                                imgd_plan_info *info);

#endif
