/* AutoencoderKL (the Stable Diffusion VAE) on the tensor engine: diffusers' Decoder and
 * Encoder with their quant convs, and a tiled decode for images whose activations would not
 * fit at once.
 *
 * Decoder: post_quant_conv -> conv_in -> mid (resnet, single-head attention, resnet) ->
 * up blocks (layers_per_block + 1 resnets, nearest x2 + conv on all but the last) ->
 * GroupNorm + SiLU -> conv_out. Encoder: conv_in -> down blocks (resnets, zero-pad
 * (0,1,0,1) + stride-2 conv on all but the last) -> mid -> GroupNorm + SiLU -> conv_out ->
 * quant_conv = the posterior moments [mean; logvar]. GroupNorm eps 1e-6 and the group count
 * of the config everywhere (real SD VAEs 32; the conformance kit's narrow VAE 4). Parameter
 * names are diffusers' ("<prefix>.decoder.up_blocks.0.resnets.0.norm1.weight"); LDM files
 * are mapped to them by the key map (detect/keymap.h), 1x1-conv attention projections
 * included.
 *
 * Latent scaling is the caller's: the decoder takes latent / scaling_factor (+ shift), the
 * encoder's mean is unscaled.
 *
 * Usage:
 *
 *     imgd_vae_cfg cfg;
 *     imgd_vae_cfg_init(&cfg, &mi->vae, 0);
 *     imgd_tensor *z = imgd_graph_input(g, "z", IMGD_DTYPE_F32, 4, (int64_t[]){1, 4, 64, 64});
 *     imgd_vae_decode_out d;
 *     imgd_vae_decode_build(g, b, "vae", &cfg, z, &d);
 *     imgd_graph_output(g, d.image);      // [1, 3, 512, 512], nominal [-1, 1]
 *     plan, alloc, bind z (already divided by the scaling factor), compute.
 *
 * Thread-safety: builders use only the graph and binder given (one thread at a time); the
 * tiled decode owns its graphs and may run on any thread while no one else uses b or be. */
#ifndef IMGD_MODELS_VAE_H
#define IMGD_MODELS_VAE_H

#include <stdatomic.h>

#include "models/wbind.h"
#include "tensor/backend.h"
#include "tensor/tensor.h"

/* Architecture. Build from detection with imgd_vae_cfg_init. */
typedef struct imgd_vae_cfg {
    int32_t in_channels;     /* image channels into the encoder (3) */
    int32_t out_channels;    /* image channels out of the decoder (3) */
    int32_t latent_channels; /* z channels (4 for SD/SDXL, 16 for SD3/Flux) */
    int32_t n_levels;        /* block_out_channels entries, 1..IMGD_MAX_LEVELS */
    int32_t layers_per_block;
    int32_t widths[IMGD_MAX_LEVELS]; /* block_out_channels, each a multiple of groups */
    int32_t groups;                  /* GroupNorm groups (norm_num_groups) */
    float   eps;                     /* GroupNorm eps, 1e-6 */
    bool    mid_attention;           /* mid blocks have their attention */
    bool    quant_conv;              /* quant_conv / post_quant_conv present (false for
                                        SD3/Flux VAEs) */
} imgd_vae_cfg;

/* Fills cfg from a detected VAE config. groups > 0 overrides vc->groups (detection takes
 * it from config.json, else a default the shapes cannot confirm; the LDM yaml has no field
 * for it). Returns IMGD_OK or IMGD_E_INVALID_ARG (sizes out of range, or a width not
 * divisible by the group count: the message names both and says to set the groups);
 * cfg is written only on success. */
imgd_status imgd_vae_cfg_init(imgd_vae_cfg *cfg, const imgd_vae_config *vc, int32_t groups);

/* Image pixels per latent pixel: 2^(n_levels - 1) (8 for SD). */
int32_t imgd_vae_scale(const imgd_vae_cfg *cfg);

/* Decoder tensors (f32, in the caller's graph; none is marked as an output). */
typedef struct imgd_vae_decode_out {
    imgd_tensor *post_quant_conv; /* [B, zc, h, w]; the input itself without quant convs */
    imgd_tensor *mid_block;       /* [B, widths[last], h, w] after the mid block */
    imgd_tensor *image;           /* [B, out_channels, h*s, w*s], raw (not clamped) */
} imgd_vae_decode_out;

/* Appends the decoder to g for latent [B, latent_channels, h, w] (unscaled: already divided
 * by the scaling factor). Weights bound through b under prefix ("vae"). out: written on
 * IMGD_OK only. Returns IMGD_OK or the graph's sticky error (IMGD_E_INVALID_ARG: bad cfg or
 * latent shape; IMGD_E_FORMAT: a weight missing or of another shape, naming tensor, file
 * and shapes; IMGD_E_UNSUPPORTED; IMGD_E_NOMEM). */
imgd_status imgd_vae_decode_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                  const imgd_vae_cfg *cfg, imgd_tensor *latent,
                                  imgd_vae_decode_out *out);

/* Encoder tensors (f32, in the caller's graph; none is marked as an output). */
typedef struct imgd_vae_encode_out {
    imgd_tensor *moments; /* [B, 2*zc, H/s, W/s] = quant_conv(encoder(x)) */
    imgd_tensor *mean;    /* [B, zc, H/s, W/s] channels 0..zc of moments */
    imgd_tensor *logvar;  /* [B, zc, H/s, W/s] clamp(channels zc..2zc, -30, 20) */
} imgd_vae_encode_out;

/* Appends the encoder to g for image [B, in_channels, H, W] in [-1, 1] (H and W multiples
 * of the scale). The posterior's std = exp(logvar / 2) and samples are computed on the host
 * (imgd_vae_posterior_std / _sample: the engine has no exp op). Returns as
 * imgd_vae_decode_build. */
imgd_status imgd_vae_encode_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                  const imgd_vae_cfg *cfg, imgd_tensor *image,
                                  imgd_vae_encode_out *out);

/* std[i] = exp(0.5 * logvar[i]) for n values (f32, like torch). */
void imgd_vae_posterior_std(const float *logvar, size_t n, float *std);

/* out[i] = mean[i] + exp(0.5 * logvar[i]) * noise[i]: DiagonalGaussianDistribution.sample()
 * with the caller's standard-normal noise (the pipeline draws it, e.g. torch-compatible).
 * out may alias mean. The result is unscaled (multiply by the scaling factor for the
 * diffusion latent). */
void imgd_vae_posterior_sample(const float *mean, const float *logvar, const float *noise, size_t n,
                               float *out);

/* ---- tiled decode ------------------------------------------------------------------------ */

/* Planned tile graphs, their activation buffer and host scratch, kept across calls
 * (imgd_vae_tiling.keep). */
typedef struct imgd_vae_tiler imgd_vae_tiler;

typedef struct imgd_vae_tiling {
    int32_t tile;             /* latent pixels per tile edge, >= 1; 0 = 64 (512 image pixels) */
    int32_t overlap;          /* latent pixels shared by neighbouring tiles, 0 .. tile/2; 0 = none
                                 (seams). The default 16 with tile 64 is diffusers' tile_overlap_factor
                                 0.25 */
    const atomic_int *cancel; /* borrowed; polled between graph nodes; NULL = none */
    imgd_vae_tiler  **keep;   /* NULL: the tile graphs are planned for the call and freed. Else
                                 they are kept in *keep (NULL the first time) and reused by the
                                 next call with the same binder, backend, prefix, config, batch,
                                 latent size and tiling (nothing re-planned, and a GPU backend
                                 uploads nothing again); a call that differs frees them and plans
                                 its own. The caller frees *keep with imgd_vae_tiler_free before
                                 the weights or the backend go. */
} imgd_vae_tiling;

/* Frees kept tile graphs (NULL-safe). */
void imgd_vae_tiler_free(imgd_vae_tiler *t);

/* tile 64, overlap 16, no cancel flag, nothing kept. */
imgd_vae_tiling imgd_vae_tiling_default(void);

typedef struct imgd_vae_tiled_info {
    uint32_t tiles;            /* decoder runs */
    uint32_t graphs;           /* distinct tile shapes planned */
    size_t   activation_bytes; /* the one activation buffer all tile graphs share: the
                                  largest tile's plan (compare with the plan of a whole
                                  decode for the saving) */
    size_t host_bytes;         /* host scratch: two rows of decoded tiles + one latent tile */
    bool   reused;             /* the graphs kept by an earlier call served this one */
} imgd_vae_tiled_info;

/* Decodes latent [batch, latent_channels, h, w] (f32, unscaled, borrowed) into image
 * [batch, out_channels, h*s, w*s] (f32, caller memory) the way diffusers'
 * AutoencoderKL.tiled_decode does: tiles of tile x tile latent pixels every
 * stride = tile - overlap pixels (edge tiles are cut short), each decoded alone (with
 * post_quant_conv), then each tile is blended linearly with the tile above over
 * overlap*s rows (blend_v) and with the tile to its left over overlap*s columns (blend_h),
 * in place and in diffusers' order, and the top-left (stride*s)^2 of every tile is kept.
 * Like diffusers' decode with tiling enabled, a latent that fits in one tile (h <= tile and
 * w <= tile) is decoded whole, so the result equals the untiled decode. Tiles see less
 * context than a whole decode (GroupNorm statistics, attention and padding are per tile),
 * so a tiled result differs from an untiled one near and away from seams; that is
 * diffusers' behaviour too.
 * The graphs (one per distinct tile shape, at most 9) are planned on be (borrowed) and
 * share one activation buffer sized by the largest tile; info may be NULL.
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (bad sizes, tiling out of range); the build and plan
 * errors of imgd_vae_decode_build / imgd_graph_plan; IMGD_E_NOMEM; IMGD_E_CANCELLED;
 * the backend's compute errors. image is undefined on failure; kept graphs (tiling->keep)
 * stay valid after a compute error and are freed (*keep NULL) after a build error. */
imgd_status imgd_vae_decode_tiled(imgd_wbind *b, imgd_backend *be, const char *prefix,
                                  const imgd_vae_cfg *cfg, const imgd_vae_tiling *tiling,
                                  const float *latent, int32_t batch, int32_t h, int32_t w,
                                  float *image, imgd_vae_tiled_info *info);

#endif
