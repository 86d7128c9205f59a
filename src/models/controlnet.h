/* ControlNetModel (diffusers 0.27 controlnet.py): the UNet's encoder half (time embedding,
 * conv_in, down blocks, mid block: built by imgd_unet_build_encoder, so the code is shared
 * with the UNet) plus the hint encoder (controlnet_cond_embedding: conv_in, SiLU, pairs of
 * 3x3 convs, the second of each pair with stride 2, conv_out, added to conv_in's output)
 * and one 1x1 "zero convolution" per skip connection and for the mid block. Canonical names
 * under the "controlnet" prefix come from either layout (diffusers folder/file, or the
 * original single file's control_model.input_hint_block / zero_convs / middle_block_out;
 * detect/keymap.c maps them).
 *
 *     imgd_controlnet_cfg cfg;
 *     imgd_controlnet_cfg_from_detect(mi, b, &cfg);        // then groups/heads as the UNet's
 *     imgd_tensor *res[IMGD_UNET_SKIPS_MAX + 1];
 *     imgd_controlnet_build(g, b, "controlnet", &cfg, x, t, ctx, NULL, cond, res, NULL);
 *     // res[0 .. skip_count) : down-block residuals, res[skip_count]: mid-block residual,
 *     // unscaled (multiply by the conditioning scale before adding them to the UNet)
 *
 * Thread-safety: building touches only g and b. Layer: models. */
#ifndef IMGD_MODELS_CONTROLNET_H
#define IMGD_MODELS_CONTROLNET_H

#include "models/unet.h"

/* Most convs between the hint encoder's conv_in and conv_out. */
#define IMGD_CONTROLNET_HINT_BLOCKS_MAX 16

typedef struct imgd_controlnet_cfg {
    imgd_unet_cfg unet;          /* the encoder half (out_channels is not used) */
    int32_t       cond_channels; /* hint image channels (3) */
    int32_t       hint_blocks;   /* convs between conv_in and conv_out (6 in SD models);
                                    even: block 2k keeps the size, 2k+1 halves it */
} imgd_controlnet_cfg;

/* Fills cfg from the detection result of a ControlNet file (mi->unet) and the hint encoder's
 * shapes in b. Groups and heads are what detection says; a pipeline sets them to its base
 * UNet's (a ControlNet is a copy of that UNet's encoder). Returns IMGD_OK;
 * IMGD_E_INVALID_ARG (NULL argument, or mi is not a ControlNet: the message names the
 * kind); IMGD_E_FORMAT (no hint encoder, or its convs do not chain: names the tensor).
 * cfg is written only on success. */
imgd_status imgd_controlnet_cfg_from_detect(const imgd_model_info *mi, const imgd_wbind *b,
                                            imgd_controlnet_cfg *cfg);

/* Appends the ControlNet forward pass to g.
 *   b, prefix  weights (borrowed for the graph's lifetime) under prefix ("controlnet").
 *   x, t, ctx  as imgd_unet_build (x has cfg->unet.in_channels channels: the latents).
 *   added      SDXL ControlNets (cfg->unet.adm_in_channels > 0, diffusers'
 *              addition_embed_type "text_time"): its text_embeds [B, P] and time_ids [B, K]
 *              as the SDXL UNet takes them; hypernets / hypernet_weights / n_hypernets,
 *              applied to every attention as the UNet applies them (A1111 hooks the
 *              ControlNet's attentions too); the other members are ignored. May be NULL
 *              for an SD 1.x / 2.x ControlNet.
 *   cond       [B, cond_channels, 8h, 8w] control image in [0, 1] (h, w: x's size; the
 *              hint encoder halves it n times: 2^(hint_blocks / 2) must equal H / h).
 *   res        receives imgd_unet_skip_count(&cfg->unet) + 1 tensors: the down residuals in
 *              skip order, then the mid residual. Unscaled; marked as graph outputs.
 *   cond_emb   may be NULL; receives the hint embedding [B, C0, h, w] (not marked).
 * Returns IMGD_OK or the graph's sticky error (IMGD_E_INVALID_ARG for inputs that do not
 * fit, naming the shapes; IMGD_E_FORMAT for weights that do not; IMGD_E_NOMEM). res is
 * written only on success. */
imgd_status imgd_controlnet_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                  const imgd_controlnet_cfg *cfg, imgd_tensor *x, imgd_tensor *t,
                                  imgd_tensor *ctx, const imgd_unet_extra *added, imgd_tensor *cond,
                                  imgd_tensor **res, imgd_tensor **cond_emb);

/* diffusers' guess-mode scales: residual i of n (n = skip count + 1, the mid one last) is
 * multiplied by 10^(-1 + i / (n - 1)) (torch.logspace(-1, 0, n)), computed in f32 as torch
 * does. 1 for n < 2. */
float imgd_controlnet_guess_scale(int32_t i, int32_t n);

#endif
