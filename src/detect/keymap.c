/* Canonical key mapping (see keymap.h). The LDM→diffusers UNet and VAE index arithmetic
 * follows diffusers' convert_ldm_unet_checkpoint / convert_ldm_vae_checkpoint; open_clip
 * text towers map to transformers CLIP names with the fused in_proj split into q/k/v. */
#include "detect/keymap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"

#define NAME_CAP 512

/* ---- map building ----------------------------------------------------------------- */

static imgd_status put(imgd_keymap *km, const char *canonical, size_t src, imgd_km_op op,
                       int64_t r0, int64_t r1) {
    if (km->n == km->alloc) {
        size_t         na = km->alloc ? km->alloc * 2 : 256;
        imgd_km_entry *ne = imgd_realloc(km->e, na * sizeof *ne);
        if (!ne) return imgd_fail(IMGD_E_NOMEM, "out of memory building the key map");
        km->e     = ne;
        km->alloc = na;
    }
    char *c = imgd_arena_strndup(&km->arena, canonical, strlen(canonical));
    if (!c) return imgd_fail(IMGD_E_NOMEM, "out of memory building the key map");
    size_t      prev = 0;
    imgd_status st   = imgd_strmap_put(&km->index, c, km->n, &prev);
    if (st == IMGD_E_INVALID_ARG)
        return imgd_fail(IMGD_E_FORMAT, "two tensors map to the canonical name '%s'", c);
    if (st != IMGD_OK) return st;
    km->e[km->n++] = (imgd_km_entry){c, src, op, r0, r1};
    return IMGD_OK;
}

static void unmapped(imgd_keymap *km, const char *name) {
    if (km->n_unmapped < 4) km->unmapped_example[km->n_unmapped] = name;
    km->n_unmapped++;
}

/* Replaces the first occurrence of `from` in s (in place, s has NAME_CAP bytes). */
static void sub(char *s, const char *from, const char *to) {
    char *p = strstr(s, from);
    if (!p) return;
    size_t fl = strlen(from), tl = strlen(to), rest = strlen(p + fl);
    if ((size_t)(p - s) + tl + rest + 1 > NAME_CAP) return;
    memmove(p + tl, p + fl, rest + 1);
    memcpy(p, to, tl);
}

/* ---- UNet: LDM -> diffusers ------------------------------------------------------- */

static void resnet_names(char *s) {
    sub(s, "in_layers.0.", "norm1.");
    sub(s, "in_layers.2.", "conv1.");
    sub(s, "emb_layers.1.", "time_emb_proj.");
    sub(s, "out_layers.0.", "norm2.");
    sub(s, "out_layers.3.", "conv2.");
    sub(s, "skip_connection.", "conv_shortcut.");
}

/* Is LDM block "<kind>_blocks.<i>.1" an attention block (vs an upsampler conv)? */
static bool ldm_is_attn(const imgd_view *v, const char *P, const char *kind, long i) {
    return imgd_view_get(v, "%s%s_blocks.%ld.1.proj_in.weight", P, kind, i) != NULL;
}

/* Maps one LDM UNet name (after prefix P) to diffusers; false when it has no mapping. */
static bool unet_ldm_name(const imgd_view *v, const char *P, const imgd_unet_config *c,
                          const char *in, char *out) {
    long        L = c->layers_per_block, i = 0, j = 0;
    int         n    = 0;
    const char *rest = in;
    if (sscanf(in, "input_blocks.%ld.%ld.%n", &i, &j, &n) == 2 && n > 0) {
        rest = in + n;
        if (i == 0) return snprintf(out, NAME_CAP, "conv_in.%s", rest) > 0;
        long b = (i - 1) / (L + 1), l = (i - 1) % (L + 1);
        if (l == L) { /* Downsample: LDM "op" (or "conv"), diffusers "conv" */
            const char *r = strncmp(rest, "op.", 3) == 0     ? rest + 3
                            : strncmp(rest, "conv.", 5) == 0 ? rest + 5
                                                             : rest;
            return snprintf(out, NAME_CAP, "down_blocks.%ld.downsamplers.0.conv.%s", b, r) > 0;
        }
        imgd_fmt(out, NAME_CAP, "down_blocks.%ld.%s.%ld.%s", b, j == 0 ? "resnets" : "attentions",
                 l, rest);
    } else if (sscanf(in, "middle_block.%ld.%n", &j, &n) == 1 && n > 0) {
        rest = in + n;
        if (j == 1)
            imgd_fmt(out, NAME_CAP, "mid_block.attentions.0.%s", rest);
        else
            imgd_fmt(out, NAME_CAP, "mid_block.resnets.%ld.%s", j / 2, rest);
    } else if (sscanf(in, "output_blocks.%ld.%ld.%n", &i, &j, &n) == 2 && n > 0) {
        rest   = in + n;
        long b = i / (L + 1), l = i % (L + 1);
        if (j == 0)
            imgd_fmt(out, NAME_CAP, "up_blocks.%ld.resnets.%ld.%s", b, l, rest);
        else if (j == 1 && ldm_is_attn(v, P, "output", i))
            imgd_fmt(out, NAME_CAP, "up_blocks.%ld.attentions.%ld.%s", b, l, rest);
        else
            imgd_fmt(out, NAME_CAP, "up_blocks.%ld.upsamplers.0.%s", b, rest); /* "conv." kept */
    } else if (strncmp(in, "time_embed.", 11) == 0) {
        imgd_fmt(out, NAME_CAP, "%s", in);
        sub(out, "time_embed.0.", "time_embedding.linear_1.");
        sub(out, "time_embed.2.", "time_embedding.linear_2.");
    } else if (strncmp(in, "label_emb.0.", 12) == 0) {
        imgd_fmt(out, NAME_CAP, "%s", in);
        sub(out, "label_emb.0.0.", "add_embedding.linear_1.");
        sub(out, "label_emb.0.2.", "add_embedding.linear_2.");
    } else if (strncmp(in, "out.", 4) == 0) {
        imgd_fmt(out, NAME_CAP, "%s", in);
        sub(out, "out.0.", "conv_norm_out.");
        sub(out, "out.2.", "conv_out.");
    } else {
        return false;
    }
    resnet_names(out);
    return true;
}

/* ---- UNet: diffusers -> LDM (kohya LoRA names) ------------------------------------- */

/* The LDM spelling of a resnet's submodule (norm1 -> in_layers.0, ...); NULL when none. */
static const char *resnet_ldm(const char *rest, size_t *used) {
    static const char *const m[][2] = {
        {"norm1.", "in_layers.0."},          {"conv1.", "in_layers.2."},
        {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
        {"conv2.", "out_layers.3."},         {"conv_shortcut.", "skip_connection."}};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(m); i++) {
        size_t n = strlen(m[i][0]);
        if (strncmp(rest, m[i][0], n) == 0) {
            *used = n;
            return m[i][1];
        }
    }
    return NULL;
}

bool imgd_keymap_unet_to_ldm(const imgd_unet_config *c, const char *in, char *out, size_t cap) {
    long L = c->layers_per_block, b = 0, l = 0;
    int  n = 0;
    char kind[16];
    if (L < 1 || c->n_levels < 1) return false;
    const char *r = NULL, *rn = NULL;
    size_t      u = 0;
    if (strncmp(in, "conv_in.", 8) == 0) return imgd_fmt(out, cap, "input_blocks.0.0.%s", in + 8);
    if (sscanf(in, "down_blocks.%ld.%15[a-z].%ld.%n", &b, kind, &l, &n) == 3 && n > 0) {
        r = in + n;
        if (strcmp(kind, "downsamplers") == 0)
            return l == 0 && strncmp(r, "conv.", 5) == 0 &&
                   imgd_fmt(out, cap, "input_blocks.%ld.0.op.%s", 1 + b * (L + 1) + L, r + 5);
        long i = 1 + b * (L + 1) + l;
        if (strcmp(kind, "attentions") == 0)
            return imgd_fmt(out, cap, "input_blocks.%ld.1.%s", i, r);
        if (strcmp(kind, "resnets") != 0 || !(rn = resnet_ldm(r, &u))) return false;
        return imgd_fmt(out, cap, "input_blocks.%ld.0.%s%s", i, rn, r + u);
    }
    if (sscanf(in, "up_blocks.%ld.%15[a-z].%ld.%n", &b, kind, &l, &n) == 3 && n > 0) {
        r       = in + n;
        long lv = c->n_levels - 1 - b; /* the down level this up level mirrors */
        if (lv < 0 || lv >= IMGD_MAX_LEVELS) return false;
        bool attn = c->attn_depth[lv] > 0;
        if (strcmp(kind, "upsamplers") == 0)
            return l == 0 &&
                   imgd_fmt(out, cap, "output_blocks.%ld.%d.%s", b * (L + 1) + L, attn ? 2 : 1, r);
        long i = b * (L + 1) + l;
        if (strcmp(kind, "attentions") == 0)
            return imgd_fmt(out, cap, "output_blocks.%ld.1.%s", i, r);
        if (strcmp(kind, "resnets") != 0 || !(rn = resnet_ldm(r, &u))) return false;
        return imgd_fmt(out, cap, "output_blocks.%ld.0.%s%s", i, rn, r + u);
    }
    if (strncmp(in, "mid_block.attentions.0.", 23) == 0)
        return imgd_fmt(out, cap, "middle_block.1.%s", in + 23);
    if (sscanf(in, "mid_block.resnets.%ld.%n", &l, &n) == 1 && n > 0) {
        if (!(rn = resnet_ldm(in + n, &u))) return false;
        return imgd_fmt(out, cap, "middle_block.%ld.%s%s", 2 * l, rn, in + n + u);
    }
    static const char *const m[][2] = {{"time_embedding.linear_1.", "time_embed.0."},
                                       {"time_embedding.linear_2.", "time_embed.2."},
                                       {"add_embedding.linear_1.", "label_emb.0.0."},
                                       {"add_embedding.linear_2.", "label_emb.0.2."},
                                       {"conv_norm_out.", "out.0."},
                                       {"conv_out.", "out.2."}};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(m); i++) {
        size_t k = strlen(m[i][0]);
        if (strncmp(in, m[i][0], k) == 0) return imgd_fmt(out, cap, "%s%s", m[i][1], in + k);
    }
    return false;
}

/* ---- ControlNet extras (original names) ------------------------------------------- */

static bool controlnet_extra(const char *in, char *out) {
    long a = 0;
    int  n = 0;
    if (sscanf(in, "zero_convs.%ld.0.%n", &a, &n) == 1 && n > 0)
        return snprintf(out, NAME_CAP, "controlnet_down_blocks.%ld.%s", a, in + n) > 0;
    if (strncmp(in, "middle_block_out.0.", 19) == 0)
        return snprintf(out, NAME_CAP, "controlnet_mid_block.%s", in + 19) > 0;
    if (sscanf(in, "input_hint_block.%ld.%n", &a, &n) == 1 && n > 0) {
        /* convs at 0, 2, ..., 14: conv_in, blocks.0..5, conv_out */
        if (a == 0)
            return snprintf(out, NAME_CAP, "controlnet_cond_embedding.conv_in.%s", in + n) > 0;
        if (a == 14)
            return snprintf(out, NAME_CAP, "controlnet_cond_embedding.conv_out.%s", in + n) > 0;
        return snprintf(out, NAME_CAP, "controlnet_cond_embedding.blocks.%ld.%s", a / 2 - 1,
                        in + n) > 0;
    }
    return false;
}

/* ---- VAE: LDM -> diffusers -------------------------------------------------------- */

static bool vae_ldm_name(const imgd_vae_config *c, const char *in, char *out, imgd_km_op *op) {
    long i = 0, j = 0;
    int  n = 0;
    *op    = IMGD_KM_SAME;
    if (sscanf(in, "encoder.down.%ld.block.%ld.%n", &i, &j, &n) == 2 && n > 0)
        imgd_fmt(out, NAME_CAP, "encoder.down_blocks.%ld.resnets.%ld.%s", i, j, in + n);
    else if (sscanf(in, "encoder.down.%ld.downsample.conv.%n", &i, &n) == 1 && n > 0)
        imgd_fmt(out, NAME_CAP, "encoder.down_blocks.%ld.downsamplers.0.conv.%s", i, in + n);
    else if (sscanf(in, "decoder.up.%ld.block.%ld.%n", &i, &j, &n) == 2 && n > 0)
        imgd_fmt(out, NAME_CAP, "decoder.up_blocks.%ld.resnets.%ld.%s", c->n_levels - 1 - i, j,
                 in + n);
    else if (sscanf(in, "decoder.up.%ld.upsample.conv.%n", &i, &n) == 1 && n > 0)
        imgd_fmt(out, NAME_CAP, "decoder.up_blocks.%ld.upsamplers.0.conv.%s", c->n_levels - 1 - i,
                 in + n);
    else if (strstr(in, ".mid.")) {
        imgd_fmt(out, NAME_CAP, "%s", in);
        sub(out, ".mid.block_1.", ".mid_block.resnets.0.");
        sub(out, ".mid.block_2.", ".mid_block.resnets.1.");
        if (strstr(out, ".mid.attn_1.")) {
            sub(out, ".mid.attn_1.", ".mid_block.attentions.0.");
            sub(out, ".norm.", ".group_norm.");
            sub(out, ".q.", ".to_q.");
            sub(out, ".k.", ".to_k.");
            sub(out, ".v.", ".to_v.");
            sub(out, ".proj_out.", ".to_out.0.");
            if (strstr(out, ".weight") && !strstr(out, "group_norm")) *op = IMGD_KM_SQUEEZE;
        }
    } else if (strncmp(in, "encoder.", 8) == 0 || strncmp(in, "decoder.", 8) == 0 ||
               strncmp(in, "quant_conv.", 11) == 0 || strncmp(in, "post_quant_conv.", 16) == 0) {
        imgd_fmt(out, NAME_CAP, "%s", in);
        sub(out, ".norm_out.", ".conv_norm_out.");
    } else {
        return false;
    }
    sub(out, ".nin_shortcut.", ".conv_shortcut.");
    return true;
}

/* diffusers < 0.14 named the VAE mid-block attention query/key/value/proj_attn. */
static void diffusers_vae_legacy(char *s) {
    if (!strstr(s, "mid_block.attentions.")) return;
    sub(s, ".query.", ".to_q.");
    sub(s, ".key.", ".to_k.");
    sub(s, ".value.", ".to_v.");
    sub(s, ".proj_attn.", ".to_out.0.");
}

/* ---- text encoders: open_clip -> transformers ------------------------------------- */

static bool openclip_name(const char *in, char *out) {
    long i = 0;
    int  n = 0;
    if (sscanf(in, "transformer.resblocks.%ld.%n", &i, &n) == 1 && n > 0) {
        imgd_fmt(out, NAME_CAP, "text_model.encoder.layers.%ld.%s", i, in + n);
        sub(out, ".ln_1.", ".layer_norm1.");
        sub(out, ".ln_2.", ".layer_norm2.");
        sub(out, ".mlp.c_fc.", ".mlp.fc1.");
        sub(out, ".mlp.c_proj.", ".mlp.fc2.");
        sub(out, ".attn.out_proj.", ".self_attn.out_proj.");
        return true;
    }
    static const char *const map[][2] = {
        {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
        {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
        {"ln_final.weight", "text_model.final_layer_norm.weight"},
        {"ln_final.bias", "text_model.final_layer_norm.bias"},
        {"text_projection", "text_projection.weight"},
    };
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (strcmp(in, map[k][0]) == 0) return snprintf(out, NAME_CAP, "%s", map[k][1]) > 0;
    return false;
}

static imgd_status map_openclip(imgd_keymap *km, const imgd_wtensor *t, size_t idx,
                                const char *comp, const char *in) {
    char out[NAME_CAP], name[NAME_CAP + 64];
    long i = 0;
    int  n = 0;
    if (sscanf(in, "transformer.resblocks.%ld.attn.in_proj_%n", &i, &n) == 1 && n > 0) {
        bool                     w     = strcmp(in + n, "weight") == 0;
        int64_t                  rows  = t->shape[0] / 3;
        static const char *const qkv[] = {"q_proj", "k_proj", "v_proj"};
        for (int k = 0; k < 3; k++) {
            imgd_fmt(name, sizeof name, "%s.text_model.encoder.layers.%ld.self_attn.%s.%s", comp, i,
                     qkv[k], w ? "weight" : "bias");
            imgd_status st = put(km, name, idx, IMGD_KM_ROWS, rows * k, rows * (k + 1));
            if (st != IMGD_OK) return st;
        }
        return IMGD_OK;
    }
    if (strcmp(in, "logit_scale") == 0 || strncmp(in, "attn_mask", 9) == 0) {
        unmapped(km, t->name);
        return IMGD_OK;
    }
    if (!openclip_name(in, out)) {
        unmapped(km, t->name);
        return IMGD_OK;
    }
    imgd_fmt(name, sizeof name, "%s.%s", comp, out);
    return put(km, name, idx, strcmp(in, "text_projection") == 0 ? IMGD_KM_TRANSPOSE : IMGD_KM_SAME,
               0, 0);
}

/* ---- FLUX transformer: Black Forest Labs -> diffusers ---------------------------- */

/* Plain renames (after "double_blocks.N." / "single_blocks.N." / the root), longest first
 * where one is a prefix of another. */
static const char *const k_bfl_top[][2] = {
    {"img_in.", "x_embedder."},
    {"txt_in.", "context_embedder."},
    {"time_in.in_layer.", "time_text_embed.timestep_embedder.linear_1."},
    {"time_in.out_layer.", "time_text_embed.timestep_embedder.linear_2."},
    {"guidance_in.in_layer.", "time_text_embed.guidance_embedder.linear_1."},
    {"guidance_in.out_layer.", "time_text_embed.guidance_embedder.linear_2."},
    {"vector_in.in_layer.", "time_text_embed.text_embedder.linear_1."},
    {"vector_in.out_layer.", "time_text_embed.text_embedder.linear_2."},
    {"final_layer.linear.", "proj_out."},
};

static const char *const k_bfl_double[][2] = {
    {"img_mod.lin.", "norm1.linear."},
    {"txt_mod.lin.", "norm1_context.linear."},
    {"img_attn.norm.query_norm.scale", "attn.norm_q.weight"},
    {"img_attn.norm.key_norm.scale", "attn.norm_k.weight"},
    {"txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"},
    {"txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"},
    {"img_attn.proj.", "attn.to_out.0."},
    {"txt_attn.proj.", "attn.to_add_out."},
    {"img_mlp.0.", "ff.net.0.proj."},
    {"img_mlp.2.", "ff.net.2."},
    {"txt_mlp.0.", "ff_context.net.0.proj."},
    {"txt_mlp.2.", "ff_context.net.2."},
};

static const char *const k_bfl_single[][2] = {
    {"modulation.lin.", "norm.linear."},
    {"norm.query_norm.scale", "attn.norm_q.weight"},
    {"norm.key_norm.scale", "attn.norm_k.weight"},
    {"linear2.", "proj_out."},
};

/* Renames `in` by the first row of tbl whose source is a prefix of it; false when none. */
static bool bfl_rename(const char *const (*tbl)[2], size_t n, const char *pre, const char *in,
                       char *out) {
    for (size_t k = 0; k < n; k++) {
        size_t l = strlen(tbl[k][0]);
        if (strncmp(in, tbl[k][0], l) == 0)
            return snprintf(out, NAME_CAP, "%s%s%s", pre, tbl[k][1], in + l) > 0;
    }
    return false;
}

/* Puts the row slices of a fused tensor: parts[i] takes rows [r_i, r_i + rows[i]). */
static imgd_status put_rows(imgd_keymap *km, size_t idx, const char *pre, const char *suffix, int n,
                            const char *const *parts, const int64_t *rows) {
    char    name[NAME_CAP + 64];
    int64_t r = 0;
    for (int k = 0; k < n; k++) {
        imgd_fmt(name, sizeof name, "%s%s.%s", pre, parts[k], suffix);
        imgd_status st = put(km, name, idx, IMGD_KM_ROWS, r, r + rows[k]);
        if (st != IMGD_OK) return st;
        r += rows[k];
    }
    return IMGD_OK;
}

static imgd_status bfl_width_fail(const imgd_wtensor *t, int64_t D) {
    return imgd_fail(IMGD_E_FORMAT,
                     "FLUX tensor '%s' has %lld rows, which does not fit the inner width %lld "
                     "read from img_in (fused q;k;v is 3 x width rows, linear1 3 x width + MLP "
                     "rows); the file is damaged or not a FLUX transformer",
                     t->name, (long long)t->shape[0], (long long)D);
}

/* One BFL FLUX tensor (name after the prefix) to its diffusers names: fused q;k;v (and
 * single blocks' q;k;v;mlp) become row views, the final modulation swaps its halves. The
 * width comes from img_in (mi->dit.hidden), never a FLUX.1 constant, so narrow files map. */
static imgd_status map_bfl(imgd_keymap *km, const imgd_wtensor *t, size_t idx, const char *comp,
                           int64_t D, const char *in) {
    char out[NAME_CAP], pre[NAME_CAP + 64], name[NAME_CAP + 64];
    long i = 0;
    int  n = 0;
    if (sscanf(in, "double_blocks.%ld.%n", &i, &n) == 1 && n > 0) {
        const char *r = in + n;
        imgd_fmt(pre, sizeof pre, "%s.transformer_blocks.%ld.", comp, i);
        bool img = strncmp(r, "img_attn.qkv.", 13) == 0;
        if (img || strncmp(r, "txt_attn.qkv.", 13) == 0) {
            static const char *const ip[]    = {"attn.to_q", "attn.to_k", "attn.to_v"};
            static const char *const tp[]    = {"attn.add_q_proj", "attn.add_k_proj",
                                                "attn.add_v_proj"};
            int64_t                  rows[3] = {D, D, D};
            if (t->shape[0] != 3 * D) return bfl_width_fail(t, D);
            return put_rows(km, idx, pre, r + 13, 3, img ? ip : tp, rows);
        }
        if (bfl_rename(k_bfl_double, IMGD_ARRAY_LEN(k_bfl_double), pre, r, name))
            return put(km, name, idx, IMGD_KM_SAME, 0, 0);
    } else if (sscanf(in, "single_blocks.%ld.%n", &i, &n) == 1 && n > 0) {
        const char *r = in + n;
        imgd_fmt(pre, sizeof pre, "%s.single_transformer_blocks.%ld.", comp, i);
        if (strncmp(r, "linear1.", 8) == 0) {
            static const char *const parts[] = {"attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"};
            int64_t                  rows[4] = {D, D, D, t->shape[0] - 3 * D};
            if (rows[3] < 1) return bfl_width_fail(t, D);
            return put_rows(km, idx, pre, r + 8, 4, parts, rows);
        }
        if (bfl_rename(k_bfl_single, IMGD_ARRAY_LEN(k_bfl_single), pre, r, name))
            return put(km, name, idx, IMGD_KM_SAME, 0, 0);
    } else if (strncmp(in, "final_layer.adaLN_modulation.1.", 31) == 0) {
        imgd_fmt(name, sizeof name, "%s.norm_out.linear.%s", comp, in + 31);
        return put(km, name, idx, IMGD_KM_SWAP_HALVES, 0, 0);
    } else {
        imgd_fmt(pre, sizeof pre, "%s.", comp);
        if (bfl_rename(k_bfl_top, IMGD_ARRAY_LEN(k_bfl_top), pre, in, out))
            return put(km, out, idx, IMGD_KM_SAME, 0, 0);
    }
    unmapped(km, t->name);
    return IMGD_OK;
}

/* ---- driver ----------------------------------------------------------------------- */

typedef struct comp_row {
    const char *prefix;    /* file prefix (after the wrapper root) */
    const char *component; /* canonical component */
    int         kind;      /* 0 unet, 1 vae, 2 hf text encoder, 3 open_clip, 5 as stored */
} comp_row;

static const comp_row k_comp[] = {
    {"model.diffusion_model.", "unet", 0},
    {"first_stage_model.", "vae", 1},
    {"cond_stage_model.transformer.", "text_encoder", 2},
    {"cond_stage_model.model.", "text_encoder", 3},
    {"conditioner.embedders.0.transformer.", "text_encoder", 2},
    {"conditioner.embedders.0.model.", "text_encoder_2", 3},
    {"conditioner.embedders.1.model.", "text_encoder_2", 3},
    {"text_encoders.clip_l.transformer.", "text_encoder", 2},
    {"text_encoders.clip_g.transformer.", "text_encoder_2", 2},
    {"text_encoders.t5xxl.transformer.", "text_encoder_3", 2},
    {"unet/", "unet", 5},
    {"vae/", "vae", 5},
    {"text_encoder/", "text_encoder", 5},
    {"text_encoder_2/", "text_encoder_2", 5},
    {"text_encoder_3/", "text_encoder_3", 5},
    {"transformer/", "transformer", 5},
    {"control_model.", "controlnet", 0},
};

static imgd_status map_one(imgd_keymap *km, const imgd_view *v, const imgd_model_info *mi,
                           const comp_row *r, size_t idx, const char *in) {
    const imgd_wtensor *t = &v->w->t[idx];
    char                out[NAME_CAP], name[NAME_CAP + 64];
    imgd_km_op          op        = IMGD_KM_SAME;
    bool                ok        = true;
    const char         *component = r->component;
    bool bfl = mi->has_dit && mi->dit.type == IMGD_DIT_FLUX && mi->dit.original_names;
    if (bfl && (r->kind == 0 || strcmp(component, "transformer") == 0) &&
        strcmp(r->component, "controlnet") != 0)
        return map_bfl(km, t, idx, "transformer", mi->dit.hidden, in);
    switch (r->kind) {
    case 0:
        if (mi->has_dit && !mi->has_unet) { /* SD3 MMDiT under model.diffusion_model. */
            component = "transformer";
            ok        = snprintf(out, NAME_CAP, "%s", in) > 0;
            break;
        }
        ok = mi->has_unet &&
             (unet_ldm_name(v, r->prefix, &mi->unet, in, out) ||
              (strcmp(r->component, "controlnet") == 0 && controlnet_extra(in, out)));
        break;
    case 1: ok = mi->has_vae && vae_ldm_name(&mi->vae, in, out, &op); break;
    case 3: return map_openclip(km, t, idx, r->component, in);
    default:
        ok = snprintf(out, NAME_CAP, "%s", in) > 0;
        if (strcmp(component, "vae") == 0) diffusers_vae_legacy(out);
        break;
    }
    if (!ok || strstr(in, "position_ids")) {
        unmapped(km, t->name);
        return IMGD_OK;
    }
    imgd_fmt(name, sizeof name, "%s.%s", component, out);
    return put(km, name, idx, op, 0, 0);
}

/* The component row a tensor name belongs to; bare component files get one from mi. */
static const comp_row *row_of(const imgd_model_info *mi, const char *n, comp_row *bare) {
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_comp); k++)
        if (strncmp(n, k_comp[k].prefix, strlen(k_comp[k].prefix)) == 0) return &k_comp[k];
    bare->prefix = "";
    switch (mi->kind) {
    case IMGD_KIND_UNET:
        bare->component = mi->has_dit ? "transformer" : "unet";
        bare->kind      = mi->has_dit || !mi->unet.ldm_names ? 5 : 0;
        return bare;
    case IMGD_KIND_CONTROLNET:
        bare->component = "controlnet";
        bare->kind      = mi->unet.ldm_names ? 0 : 5;
        return bare;
    case IMGD_KIND_VAE:
        bare->component = "vae";
        bare->kind      = mi->layout && strcmp(mi->layout, "ldm") == 0 ? 1 : 5;
        if (strstr(n, "down.0.block") || strstr(n, "up.0.block") || strstr(n, ".mid."))
            bare->kind = 1;
        return bare;
    case IMGD_KIND_TEXT_ENCODER:
        bare->component = "text_encoder";
        bare->kind      = mi->n_te && mi->te[0].type == IMGD_TE_OPENCLIP ? 3 : 5;
        return bare;
    default: return NULL;
    }
}

imgd_status imgd_keymap_build(const imgd_weights *w, const imgd_model_info *mi, imgd_keymap **out) {
    if (!w || !mi || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_keymap_build: NULL argument");
    if (mi->kind != IMGD_KIND_CHECKPOINT && mi->kind != IMGD_KIND_UNET &&
        mi->kind != IMGD_KIND_VAE && mi->kind != IMGD_KIND_TEXT_ENCODER &&
        mi->kind != IMGD_KIND_CONTROLNET)
        return imgd_fail(IMGD_E_UNSUPPORTED, "%s: a %s has no canonical component layout", w->path,
                         imgd_model_kind_name(mi->kind));
    imgd_keymap *km = imgd_calloc(1, sizeof *km);
    if (!km) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_arena_init(&km->arena, 0);
    imgd_strmap_init(&km->index);
    imgd_view   v  = {w, mi->root ? mi->root : ""};
    size_t      rl = strlen(v.root);
    imgd_status st = IMGD_OK;
    for (size_t i = 0; i < w->n && st == IMGD_OK; i++) {
        const char     *n = w->t[i].name + rl;
        comp_row        bare;
        const comp_row *r = row_of(mi, n, &bare);
        if (!r) {
            unmapped(km, w->t[i].name);
            continue;
        }
        st = map_one(km, &v, mi, r, i, n + strlen(r->prefix));
    }
    if (st != IMGD_OK) {
        imgd_keymap_free(km);
        return imgd_fail_prefix(st, "%s: key mapping", w->path);
    }
    *out = km;
    return IMGD_OK;
}

const imgd_km_entry *imgd_keymap_find(const imgd_keymap *km, const char *canonical) {
    size_t i;
    return imgd_strmap_get(&km->index, canonical, &i) ? &km->e[i] : NULL;
}

void imgd_keymap_free(imgd_keymap *km) {
    if (!km) return;
    imgd_strmap_free(&km->index);
    imgd_arena_free(&km->arena);
    imgd_free(km->e);
    imgd_free(km);
}
