/* ControlNetModel forward pass (see controlnet.h). Module names follow diffusers 0.27
 * (controlnet.py: ControlNetConditioningEmbedding, controlnet_down_blocks,
 * controlnet_mid_block); the encoder half is the UNet builder's. */
#include "models/controlnet.h"

#include <math.h>
#include <string.h>

#include "base/error.h"
#include "base/text.h"
#include "tensor/ops.h"

#define NAME_CAP 256

/* ---- configuration ------------------------------------------------------------------------ */

/* Shape [O, I, 3, 3] of a hint-encoder conv weight, or false when absent / not 3x3. */
static bool hint_shape(const imgd_wbind *b, const char *name, int64_t *o, int64_t *i) {
    char    full[NAME_CAP];
    int64_t s[8];
    (void)imgd_fmt(full, sizeof full, "controlnet.controlnet_cond_embedding.%s.weight", name);
    if (imgd_wbind_shape(b, full, s) != 4 || s[2] != 3 || s[3] != 3) return false;
    *o = s[0];
    *i = s[1];
    return true;
}

imgd_status imgd_controlnet_cfg_from_detect(const imgd_model_info *mi, const imgd_wbind *b,
                                            imgd_controlnet_cfg *cfg) {
    if (!mi || !b || !cfg)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_controlnet_cfg_from_detect: NULL argument");
    if (mi->kind != IMGD_KIND_CONTROLNET)
        return imgd_fail(IMGD_E_INVALID_ARG, "not a ControlNet (detected kind '%s', family '%s')",
                         imgd_model_kind_name(mi->kind), imgd_family_name(mi->family));
    imgd_controlnet_cfg c;
    memset(&c, 0, sizeof c);
    imgd_status st = imgd_unet_cfg_from_detect(mi, &c.unet);
    if (st != IMGD_OK) return st;
    int64_t o = 0, in = 0;
    if (!hint_shape(b, "conv_in", &o, &in))
        return imgd_fail(IMGD_E_FORMAT,
                         "ControlNet: no 3x3 hint encoder conv_in (controlnet_cond_embedding."
                         "conv_in / input_hint_block.0)");
    c.cond_channels = (int32_t)in;
    int64_t prev    = o;
    char    name[64];
    for (int32_t k = 0; k < IMGD_CONTROLNET_HINT_BLOCKS_MAX; k++) {
        (void)imgd_fmt(name, sizeof name, "blocks.%d", (int)k);
        if (!hint_shape(b, name, &o, &in)) break;
        if (in != prev)
            return imgd_fail(IMGD_E_FORMAT,
                             "ControlNet: hint encoder %s takes %lld channels, the conv before "
                             "gives %lld",
                             name, (long long)in, (long long)prev);
        prev = o;
        c.hint_blocks++;
    }
    if (c.hint_blocks % 2 != 0)
        return imgd_fail(IMGD_E_FORMAT,
                         "ControlNet: %d hint encoder blocks; diffusers' conditioning "
                         "embedding has pairs (a conv, then a stride-2 conv)",
                         (int)c.hint_blocks);
    if (!hint_shape(b, "conv_out", &o, &in) || in != prev || o != c.unet.widths[0])
        return imgd_fail(IMGD_E_FORMAT,
                         "ControlNet: hint encoder conv_out must map %lld to %d channels (the "
                         "conv_in width)",
                         (long long)prev, (int)c.unet.widths[0]);
    *cfg = c;
    return IMGD_OK;
}

float imgd_controlnet_guess_scale(int32_t i, int32_t n) {
    if (n < 2 || i < 0 || i >= n) return 1.0f;
    /* torch.linspace's float formula (both ends exact), then pow(10, v) */
    float step = 1.0f / (float)(n - 1);
    float v    = i < n / 2 ? -1.0f + step * (float)i : -step * (float)(n - 1 - i);
    return powf(10.0f, v);
}

/* ---- network ---------------------------------------------------------------------------- */

static imgd_tensor *conv(imgd_graph *g, imgd_wbind *b, const char *prefix, imgd_tensor *x,
                         const char *name, int64_t k, int32_t stride) {
    if (!x) return NULL;
    int64_t      cin = x->shape[1];
    imgd_tensor *w =
        imgd_wbind_getf(b, g, 4, (int64_t[]){-1, cin, k, k}, "%s.%s.weight", prefix, name);
    if (!w) return NULL;
    imgd_tensor *bias =
        imgd_wbind_getf(b, g, 1, (int64_t[]){w->shape[0]}, "%s.%s.bias", prefix, name);
    return imgd_op_conv2d(g, x, w, bias, stride, (int32_t)(k / 2));
}

/* ControlNetConditioningEmbedding: conv_in, SiLU, (conv, SiLU, stride-2 conv, SiLU) pairs,
 * conv_out. */
static imgd_tensor *hint_encoder(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                 const imgd_controlnet_cfg *c, imgd_tensor *cond) {
    imgd_tensor *h =
        imgd_op_silu(g, conv(g, b, prefix, cond, "controlnet_cond_embedding.conv_in", 3, 1));
    for (int32_t k = 0; k < c->hint_blocks; k++) {
        char name[64];
        (void)imgd_fmt(name, sizeof name, "controlnet_cond_embedding.blocks.%d", (int)k);
        h = imgd_op_silu(g, conv(g, b, prefix, h, name, 3, k % 2 ? 2 : 1));
    }
    return conv(g, b, prefix, h, "controlnet_cond_embedding.conv_out", 3, 1);
}

imgd_status imgd_controlnet_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                  const imgd_controlnet_cfg *cfg, imgd_tensor *x, imgd_tensor *t,
                                  imgd_tensor *ctx, const imgd_unet_extra *added, imgd_tensor *cond,
                                  imgd_tensor **res, imgd_tensor **cond_emb) {
    if (!g) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_controlnet_build: graph is NULL");
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    if (!b || !prefix || !cfg || !x || !cond || !res || x->n_dims != 4)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "imgd_controlnet_build: weights, prefix, cfg, a 4-D sample, the "
                               "control image and res are required");
    int64_t div = (int64_t)1 << (cfg->hint_blocks / 2);
    int64_t H = x->shape[2] * div, W = x->shape[3] * div;
    if (cond->n_dims != 4 || cond->shape[0] != x->shape[0] ||
        cond->shape[1] != cfg->cond_channels || cond->shape[2] != H || cond->shape[3] != W) {
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "controlnet: the control image must be [%lld, %d, %lld, %lld] "
                               "(%lld x the latent size)",
                               (long long)x->shape[0], (int)cfg->cond_channels, (long long)H,
                               (long long)W, (long long)div);
    }
    if (cfg->unet.adm_in_channels > 0 && (!added || !added->text_embeds || !added->time_ids))
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "controlnet: an SDXL ControlNet (added conditioning of %d) needs "
                               "text_embeds and time_ids",
                               (int)cfg->unet.adm_in_channels);
    imgd_unet_extra ex;
    memset(&ex, 0, sizeof ex);
    if (cfg->unet.adm_in_channels > 0) {
        ex.text_embeds = added->text_embeds;
        ex.time_ids    = added->time_ids;
    }
    if (added) { /* A1111 hooks the ControlNet's attentions too (one CrossAttention class) */
        ex.hypernets        = added->hypernets;
        ex.hypernet_weights = added->hypernet_weights;
        ex.n_hypernets      = added->n_hypernets;
    }
    ex.conv_in_add = hint_encoder(g, b, prefix, cfg, cond);
    if (!ex.conv_in_add) return imgd_graph_status(g);
    imgd_tensor *skips[IMGD_UNET_SKIPS_MAX], *mid = NULL;
    imgd_status  st =
        imgd_unet_build_encoder(g, b, prefix, &cfg->unet, x, t, ctx, &ex, NULL, skips, &mid);
    if (st != IMGD_OK) return st;
    int32_t      ns = imgd_unet_skip_count(&cfg->unet);
    imgd_tensor *out[IMGD_UNET_SKIPS_MAX + 1];
    for (int32_t i = 0; i <= ns; i++) {
        char name[64];
        if (i < ns)
            (void)imgd_fmt(name, sizeof name, "controlnet_down_blocks.%d", (int)i);
        else
            (void)imgd_fmt(name, sizeof name, "controlnet_mid_block");
        out[i] = conv(g, b, prefix, i < ns ? skips[i] : mid, name, 1, 1);
        imgd_graph_output(g, out[i]);
    }
    st = imgd_graph_status(g);
    if (st != IMGD_OK) return st;
    for (int32_t i = 0; i <= ns; i++) res[i] = out[i];
    if (cond_emb) *cond_emb = ex.conv_in_add;
    return IMGD_OK;
}
