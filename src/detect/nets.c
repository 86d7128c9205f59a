/* Architecture configs inferred from shapes: UNet, VAE, text encoders, DiTs. Each
 * detector accepts both the original (LDM/SGM/BFL/open_clip) and the diffusers /
 * transformers naming. */
#include <stdio.h>
#include <string.h>

#include "base/text.h"
#include "detect/detect.h"

#define T(...) imgd_view_get(v, __VA_ARGS__)

static int32_t dim(const imgd_wtensor *t, int i) {
    return (t && i < t->n_dims) ? (int32_t)t->shape[i] : 0;
}

/* GroupNorm groups are not in the shapes. Real models use 32; narrow test models with
 * fewer than 64 channels per level use width/2 (2 channels per group). */
static int32_t default_groups(const int32_t *widths, int32_t n) {
    int32_t mn = widths[0];
    for (int32_t i = 1; i < n; i++)
        if (widths[i] < mn) mn = widths[i];
    return mn >= 64 ? 32 : (mn >= 2 ? mn / 2 : 1);
}

/* ---- UNet ------------------------------------------------------------------------- */

static void unet_attention(const imgd_view *v, const char *blk, imgd_unet_config *c,
                           int32_t *depth) {
    char p[512];
    imgd_fmt(p, sizeof p, "%stransformer_blocks.", blk);
    *depth                 = imgd_view_index_count(v, p);
    const imgd_wtensor *pi = T("%sproj_in.weight", blk);
    c->linear_proj         = pi && pi->n_dims == 2;
    const imgd_wtensor *k  = T("%stransformer_blocks.0.attn2.to_k.weight", blk);
    if (k && !c->context_dim) c->context_dim = dim(k, 1);
}

static bool unet_ldm(const imgd_view *v, const char *P, imgd_unet_config *c) {
    const imgd_wtensor *ci = T("%sinput_blocks.0.0.weight", P);
    if (!ci || ci->n_dims != 4) return false;
    c->model_channels = dim(ci, 0);
    c->in_channels    = dim(ci, 1);
    c->out_channels   = dim(T("%sout.2.weight", P), 0);
    c->time_embed_dim = dim(T("%stime_embed.0.weight", P), 0);
    char pre[512];
    imgd_fmt(pre, sizeof pre, "%sinput_blocks.", P);
    int32_t n = imgd_view_index_count(v, pre), level = 0, in_level = 0;
    for (int32_t i = 1; i < n && level < IMGD_MAX_LEVELS; i++) {
        if (T("%sinput_blocks.%d.0.op.weight", P, i) ||
            T("%sinput_blocks.%d.0.conv.weight", P, i)) {
            if (level == 0) c->layers_per_block = in_level;
            level++;
            in_level = 0;
            continue;
        }
        const imgd_wtensor *o = T("%sinput_blocks.%d.0.out_layers.3.weight", P, i);
        if (!o) return false;
        c->widths[level] = dim(o, 0);
        in_level++;
        char blk[512];
        imgd_fmt(blk, sizeof blk, "%sinput_blocks.%d.1.", P, i);
        if (T("%sproj_in.weight", blk)) unet_attention(v, blk, c, &c->attn_depth[level]);
    }
    if (level == 0) c->layers_per_block = in_level;
    c->n_levels  = level + 1;
    c->mid_depth = -1;
    char blk[512];
    imgd_fmt(blk, sizeof blk, "%smiddle_block.1.", P);
    if (T("%sproj_in.weight", blk)) unet_attention(v, blk, c, &c->mid_depth);
    c->adm_in_channels = dim(T("%slabel_emb.0.0.weight", P), 1);
    return c->n_levels > 0 && c->widths[0] > 0;
}

static bool unet_diffusers(const imgd_view *v, const char *P, imgd_unet_config *c) {
    const imgd_wtensor *ci = T("%sconv_in.weight", P);
    if (!ci || ci->n_dims != 4 || !T("%sdown_blocks.0.resnets.0.conv1.weight", P)) return false;
    c->model_channels = dim(ci, 0);
    c->in_channels    = dim(ci, 1);
    c->out_channels   = dim(T("%sconv_out.weight", P), 0);
    c->time_embed_dim = dim(T("%stime_embedding.linear_1.weight", P), 0);
    char pre[512];
    imgd_fmt(pre, sizeof pre, "%sdown_blocks.", P);
    c->n_levels = imgd_view_index_count(v, pre);
    if (c->n_levels > IMGD_MAX_LEVELS) return false;
    for (int32_t l = 0; l < c->n_levels; l++) {
        c->widths[l] = dim(T("%sdown_blocks.%d.resnets.0.conv2.weight", P, l), 0);
        imgd_fmt(pre, sizeof pre, "%sdown_blocks.%d.resnets.", P, l);
        if (l == 0) c->layers_per_block = imgd_view_index_count(v, pre);
        char blk[512];
        imgd_fmt(blk, sizeof blk, "%sdown_blocks.%d.attentions.0.", P, l);
        if (T("%sproj_in.weight", blk)) unet_attention(v, blk, c, &c->attn_depth[l]);
    }
    c->mid_depth = -1;
    char blk[512];
    imgd_fmt(blk, sizeof blk, "%smid_block.attentions.0.", P);
    if (T("%sproj_in.weight", blk)) unet_attention(v, blk, c, &c->mid_depth);
    c->adm_in_channels = dim(T("%sadd_embedding.linear_1.weight", P), 1);
    c->encoder_hid_dim = dim(T("%sencoder_hid_proj.weight", P), 1);
    return c->widths[0] > 0;
}

bool imgd_detect_unet(const imgd_view *v, const char *prefix, imgd_unet_config *c,
                      imgd_model_info *mi) {
    memset(c, 0, sizeof *c);
    bool ldm = unet_ldm(v, prefix, c);
    if (!ldm) {
        memset(c, 0, sizeof *c);
        if (!unet_diffusers(v, prefix, c)) return false;
    }
    c->groups    = default_groups(c->widths, c->n_levels);
    c->ldm_names = ldm;
    imgd_detect_note(mi,
                     "unet (%s names at '%s%s'): in %d, out %d, widths %d,%d,%d,%d, %d levels, %d "
                     "res blocks per level, attention depth %d,%d,%d,%d, mid %d, context %d, %s "
                     "proj_in, adm %d",
                     ldm ? "LDM" : "diffusers", v->root, prefix, c->in_channels, c->out_channels,
                     c->widths[0], c->widths[1], c->widths[2], c->widths[3], c->n_levels,
                     c->layers_per_block, c->attn_depth[0], c->attn_depth[1], c->attn_depth[2],
                     c->attn_depth[3], c->mid_depth, c->context_dim,
                     c->linear_proj ? "linear" : "conv", c->adm_in_channels);
    return true;
}

/* ---- VAE -------------------------------------------------------------------------- */

static bool vae_ldm(const imgd_view *v, const char *P, imgd_vae_config *c) {
    char pre[512];
    c->has_encoder =
        T("%sencoder.conv_in.weight", P) && T("%sencoder.down.0.block.0.conv1.weight", P);
    c->has_decoder =
        T("%sdecoder.conv_in.weight", P) && T("%sdecoder.up.0.block.0.conv1.weight", P);
    if (!c->has_encoder && !c->has_decoder) return false;
    const char *side = c->has_encoder ? "encoder.down" : "decoder.up";
    imgd_fmt(pre, sizeof pre, "%s%s.", P, side);
    c->n_levels = imgd_view_index_count(v, pre);
    if (c->n_levels > IMGD_MAX_LEVELS) return false;
    for (int32_t l = 0; l < c->n_levels; l++)
        c->widths[l] = dim(T("%s%s.%d.block.0.conv2.weight", P, side, l), 0);
    imgd_fmt(pre, sizeof pre, "%s%s.0.block.", P, side);
    c->layers_per_block = imgd_view_index_count(v, pre) - (c->has_encoder ? 0 : 1);
    c->mid_attention =
        T("%sencoder.mid.attn_1.q.weight", P) || T("%sdecoder.mid.attn_1.q.weight", P);
    if (c->has_encoder) {
        c->in_channels     = dim(T("%sencoder.conv_in.weight", P), 1);
        c->latent_channels = dim(T("%sencoder.conv_out.weight", P), 0) / 2;
    }
    if (c->has_decoder) {
        c->latent_channels = dim(T("%sdecoder.conv_in.weight", P), 1);
        c->out_channels    = dim(T("%sdecoder.conv_out.weight", P), 0);
    }
    c->has_quant_conv = T("%squant_conv.weight", P) || T("%spost_quant_conv.weight", P);
    return true;
}

static bool vae_diffusers(const imgd_view *v, const char *P, imgd_vae_config *c) {
    char pre[512];
    c->has_encoder = T("%sencoder.down_blocks.0.resnets.0.conv1.weight", P) != NULL;
    c->has_decoder = T("%sdecoder.up_blocks.0.resnets.0.conv1.weight", P) != NULL;
    if (!c->has_encoder && !c->has_decoder) return false;
    if (c->has_encoder) {
        imgd_fmt(pre, sizeof pre, "%sencoder.down_blocks.", P);
        c->n_levels = imgd_view_index_count(v, pre);
        if (c->n_levels > IMGD_MAX_LEVELS) return false;
        for (int32_t l = 0; l < c->n_levels; l++)
            c->widths[l] = dim(T("%sencoder.down_blocks.%d.resnets.0.conv2.weight", P, l), 0);
        imgd_fmt(pre, sizeof pre, "%sencoder.down_blocks.0.resnets.", P);
        c->layers_per_block = imgd_view_index_count(v, pre);
        c->in_channels      = dim(T("%sencoder.conv_in.weight", P), 1);
        c->latent_channels  = dim(T("%sencoder.conv_out.weight", P), 0) / 2;
    } else {
        imgd_fmt(pre, sizeof pre, "%sdecoder.up_blocks.", P);
        c->n_levels = imgd_view_index_count(v, pre);
        if (c->n_levels > IMGD_MAX_LEVELS) return false;
        for (int32_t l = 0; l < c->n_levels; l++)
            c->widths[c->n_levels - 1 - l] =
                dim(T("%sdecoder.up_blocks.%d.resnets.0.conv2.weight", P, l), 0);
        imgd_fmt(pre, sizeof pre, "%sdecoder.up_blocks.0.resnets.", P);
        c->layers_per_block = imgd_view_index_count(v, pre) - 1;
    }
    if (c->has_decoder) {
        c->latent_channels = dim(T("%sdecoder.conv_in.weight", P), 1);
        c->out_channels    = dim(T("%sdecoder.conv_out.weight", P), 0);
    }
    c->mid_attention = T("%sencoder.mid_block.attentions.0.to_q.weight", P) ||
                       T("%sdecoder.mid_block.attentions.0.to_q.weight", P) ||
                       T("%sdecoder.mid_block.attentions.0.query.weight", P);
    c->has_quant_conv = T("%squant_conv.weight", P) || T("%spost_quant_conv.weight", P);
    return true;
}

bool imgd_detect_vae(const imgd_view *v, const char *prefix, imgd_vae_config *c,
                     imgd_model_info *mi) {
    memset(c, 0, sizeof *c);
    bool ldm = vae_ldm(v, prefix, c);
    if (!ldm) {
        memset(c, 0, sizeof *c);
        if (!vae_diffusers(v, prefix, c)) return false;
    }
    if (!c->widths[0]) return false;
    c->base_channels  = c->widths[0];
    c->groups         = default_groups(c->widths, c->n_levels);
    c->scaling_factor = 0.18215f;
    c->ldm_names      = ldm;
    imgd_detect_note(mi,
                     "vae (%s names at '%s%s'): %s%s, widths %d,%d,%d,%d, latent channels %d, %s "
                     "quant convs",
                     ldm ? "LDM" : "diffusers", v->root, prefix, c->has_encoder ? "encoder " : "",
                     c->has_decoder ? "decoder" : "", c->widths[0], c->widths[1], c->widths[2],
                     c->widths[3], c->latent_channels, c->has_quant_conv ? "with" : "without");
    return true;
}

/* ---- text encoders ---------------------------------------------------------------- */

static bool te_clip_hf(const imgd_view *v, const char *P, imgd_te_config *c) {
    const imgd_wtensor *tok = T("%stext_model.embeddings.token_embedding.weight", P);
    if (!tok) return false;
    char pre[512];
    imgd_fmt(pre, sizeof pre, "%stext_model.encoder.layers.", P);
    c->type           = IMGD_TE_CLIP_HF;
    c->vocab          = dim(tok, 0);
    c->hidden         = dim(tok, 1);
    c->positions      = dim(T("%stext_model.embeddings.position_embedding.weight", P), 0);
    c->layers         = imgd_view_index_count(v, pre);
    c->intermediate   = dim(T("%stext_model.encoder.layers.0.mlp.fc1.weight", P), 0);
    c->projection_dim = dim(T("%stext_projection.weight", P), 0);
    return true;
}

static bool te_openclip(const imgd_view *v, const char *P, imgd_te_config *c) {
    const imgd_wtensor *tok = T("%stoken_embedding.weight", P);
    if (!tok || !T("%stransformer.resblocks.0.attn.in_proj_weight", P)) return false;
    char pre[512];
    imgd_fmt(pre, sizeof pre, "%stransformer.resblocks.", P);
    c->type           = IMGD_TE_OPENCLIP;
    c->vocab          = dim(tok, 0);
    c->hidden         = dim(tok, 1);
    c->positions      = dim(T("%spositional_embedding", P), 0);
    c->layers         = imgd_view_index_count(v, pre);
    c->intermediate   = dim(T("%stransformer.resblocks.0.mlp.c_fc.weight", P), 0);
    c->projection_dim = dim(T("%stext_projection", P), 1);
    c->gelu_erf       = true;
    return true;
}

static bool te_t5(const imgd_view *v, const char *P, imgd_te_config *c) {
    const imgd_wtensor *tok = T("%sshared.weight", P);
    if (!tok) tok = T("%sencoder.embed_tokens.weight", P);
    const imgd_wtensor *rel =
        T("%sencoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", P);
    if (!tok || !rel) return false;
    char pre[512];
    imgd_fmt(pre, sizeof pre, "%sencoder.block.", P);
    c->type         = IMGD_TE_T5;
    c->vocab        = dim(tok, 0);
    c->hidden       = dim(tok, 1);
    c->heads        = dim(rel, 1);
    c->layers       = imgd_view_index_count(v, pre);
    c->intermediate = dim(T("%sencoder.block.0.layer.1.DenseReluDense.wi_0.weight", P), 0);
    c->gelu_erf     = true;
    return true;
}

bool imgd_detect_te(const imgd_view *v, const char *prefix, imgd_te_config *c,
                    imgd_model_info *mi) {
    memset(c, 0, sizeof *c);
    if (!te_clip_hf(v, prefix, c) && !te_openclip(v, prefix, c) && !te_t5(v, prefix, c))
        return false;
    if (!c->heads) c->heads = c->hidden >= 64 ? c->hidden / 64 : 1;
    static const char *const names[] = {"", "CLIP (transformers)", "CLIP (open_clip)", "T5"};
    imgd_detect_note(mi, "text encoder %s at '%s%s': %d layers, width %d, MLP %d, vocab %d%s",
                     names[c->type], v->root, prefix, c->layers, c->hidden, c->intermediate,
                     c->vocab, c->projection_dim ? ", with projection" : "");
    return true;
}

/* ---- diffusion transformers ------------------------------------------------------- */

static bool dit_flux(const imgd_view *v, const char *P, imgd_dit_config *c) {
    char pre[512];
    if (T("%sdouble_blocks.0.img_attn.qkv.weight", P)) { /* BFL original names */
        c->original_names = true;
        c->hidden         = dim(T("%simg_in.weight", P), 0);
        c->in_channels    = dim(T("%simg_in.weight", P), 1);
        c->context_dim    = dim(T("%stxt_in.weight", P), 1);
        c->pooled_dim     = dim(T("%svector_in.in_layer.weight", P), 1);
        c->head_dim       = dim(T("%sdouble_blocks.0.img_attn.norm.query_norm.scale", P), 0);
        c->guidance_embed = T("%sguidance_in.in_layer.weight", P) != NULL;
        imgd_fmt(pre, sizeof pre, "%sdouble_blocks.", P);
        c->depth = imgd_view_index_count(v, pre);
        imgd_fmt(pre, sizeof pre, "%ssingle_blocks.", P);
        c->depth_single = imgd_view_index_count(v, pre);
    } else if (T("%ssingle_transformer_blocks.0.proj_mlp.weight", P) ||
               T("%ssingle_transformer_blocks.0.attn.to_q.weight", P)) {
        c->hidden         = dim(T("%sx_embedder.weight", P), 0);
        c->in_channels    = dim(T("%sx_embedder.weight", P), 1);
        c->context_dim    = dim(T("%scontext_embedder.weight", P), 1);
        c->pooled_dim     = dim(T("%stime_text_embed.text_embedder.linear_1.weight", P), 1);
        c->head_dim       = dim(T("%stransformer_blocks.0.attn.norm_q.weight", P), 0);
        c->guidance_embed = T("%stime_text_embed.guidance_embedder.linear_1.weight", P) != NULL;
        imgd_fmt(pre, sizeof pre, "%stransformer_blocks.", P);
        c->depth = imgd_view_index_count(v, pre);
        imgd_fmt(pre, sizeof pre, "%ssingle_transformer_blocks.", P);
        c->depth_single = imgd_view_index_count(v, pre);
    } else {
        return false;
    }
    c->type  = IMGD_DIT_FLUX;
    c->patch = 2;
    if (c->head_dim == 128) { /* FLUX.1's rope axes; narrow models say theirs in config.json */
        c->n_axes       = 3;
        c->axes_dims[0] = 16;
        c->axes_dims[1] = 56;
        c->axes_dims[2] = 56;
    }
    return c->hidden > 0;
}

static bool dit_mmdit(const imgd_view *v, const char *P, imgd_dit_config *c) {
    char                pre[512];
    const imgd_wtensor *x = T("%sx_embedder.proj.weight", P);
    if (x && T("%sjoint_blocks.0.x_block.attn.qkv.weight", P)) {
        c->original_names = true;
        imgd_fmt(pre, sizeof pre, "%sjoint_blocks.", P);
        c->pooled_dim          = dim(T("%sy_embedder.mlp.0.weight", P), 1);
        const imgd_wtensor *pe = T("%spos_embed", P);
        uint64_t            n = pe ? (uint64_t)dim(pe, 1) : 0, r = 0;
        while ((r + 1) * (r + 1) <= n) r++;
        c->pos_embed_max = (int32_t)r;
    } else if ((x = T("%spos_embed.proj.weight", P)) != NULL &&
               T("%stransformer_blocks.0.attn.add_q_proj.weight", P) &&
               T("%scontext_embedder.weight", P)) {
        imgd_fmt(pre, sizeof pre, "%stransformer_blocks.", P);
        c->pooled_dim = dim(T("%stime_text_embed.text_embedder.linear_1.weight", P), 1);
    } else {
        return false;
    }
    c->type        = IMGD_DIT_MMDIT;
    c->depth       = imgd_view_index_count(v, pre);
    c->hidden      = dim(x, 0);
    c->in_channels = dim(x, 1);
    c->patch       = dim(x, 2);
    c->context_dim = dim(T("%scontext_embedder.weight", P), 1);
    /* SD3's reference MMDiT has one 64-wide head per block of depth: hidden = 64 × depth */
    c->head_dim = c->depth > 0 && c->hidden % c->depth == 0 ? c->hidden / c->depth : 64;
    return c->hidden > 0;
}

/* Families recognised by signature names (configs filled as far as cheap). */
static bool dit_other(const imgd_view *v, const char *P, imgd_dit_config *c) {
    char pre[512];
    if (T("%sadaln_single.linear.weight", P) && T("%scaption_projection.linear_1.weight", P)) {
        c->type        = IMGD_DIT_PIXART;
        c->hidden      = dim(T("%sadaln_single.linear.weight", P), 1);
        c->context_dim = dim(T("%scaption_projection.linear_1.weight", P), 1);
        imgd_fmt(pre, sizeof pre, "%stransformer_blocks.", P);
    } else if (T("%stext_embedding_padding", P) || T("%smlp_t5.0.weight", P) ||
               T("%stime_extra_emb.pooler.q_proj.weight", P)) {
        c->type = IMGD_DIT_HUNYUAN;
        imgd_fmt(pre, sizeof pre, "%sblocks.", P);
    } else if (T("%spatch_embed.text_proj.weight", P) &&
               T("%stransformer_blocks.0.norm1.linear.weight", P)) {
        c->type        = IMGD_DIT_COGVIDEOX;
        c->context_dim = dim(T("%spatch_embed.text_proj.weight", P), 1);
        imgd_fmt(pre, sizeof pre, "%stransformer_blocks.", P);
    } else if (T("%spatch_embedding.weight", P) &&
               (T("%sblocks.0.self_attn.q.weight", P) || T("%sblocks.0.attn1.to_q.weight", P))) {
        /* Wan: original names (self_attn.q, text_embedding) or diffusers
         * (attn1.to_q, condition_embedder); patch_embedding is a Conv3d [hidden, in, t, h, w] */
        const imgd_wtensor *pe = T("%spatch_embedding.weight", P);
        c->type                = IMGD_DIT_WAN;
        c->original_names      = T("%sblocks.0.self_attn.q.weight", P) != NULL;
        c->hidden              = dim(pe, 0);
        c->in_channels         = dim(pe, 1);
        c->patch               = dim(pe, 3);
        c->context_dim         = c->original_names
                                     ? dim(T("%stext_embedding.0.weight", P), 1)
                                     : dim(T("%scondition_embedder.text_embedder.linear_1.weight", P), 1);
        imgd_fmt(pre, sizeof pre, "%sblocks.", P);
    } else {
        return false;
    }
    c->depth = imgd_view_index_count(v, pre);
    return true;
}

bool imgd_detect_dit(const imgd_view *v, const char *prefix, imgd_dit_config *c,
                     imgd_model_info *mi) {
    memset(c, 0, sizeof *c);
    bool found = dit_flux(v, prefix, c);
    if (!found) {
        memset(c, 0, sizeof *c);
        found = dit_mmdit(v, prefix, c);
    }
    if (!found) {
        memset(c, 0, sizeof *c);
        found = dit_other(v, prefix, c);
    }
    if (!found) return false;
    if (c->head_dim > 0 && c->hidden > 0) c->heads = c->hidden / c->head_dim;
    static const char *const names[] = {"",          "MMDiT (SD3)", "FLUX", "PixArt", "Hunyuan-DiT",
                                        "CogVideoX", "Wan"};
    imgd_detect_note(mi,
                     "transformer %s at '%s%s': depth %d (+%d single), width %d, head dim %d, "
                     "in %d, context %d, pooled %d%s",
                     names[c->type], v->root, prefix, c->depth, c->depth_single, c->hidden,
                     c->head_dim, c->in_channels, c->context_dim, c->pooled_dim,
                     c->guidance_embed ? ", guidance embedding" : "");
    return true;
}
