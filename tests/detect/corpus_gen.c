/* Generators for the labelled detection corpus (see corpus_gen.h). Each generator walks the
 * module tree of a reference implementation in its state-dict order and emits every
 * parameter and persistent buffer with its real name and shape. Sources followed:
 *   - LDM/SGM openaimodel UNetModel + cldm ControlNet, LDM AutoencoderKL (ldm/modules);
 *   - diffusers UNet2DConditionModel, ControlNetModel, AutoencoderKL, AutoencoderTiny,
 *     T2IAdapter, FluxTransformer2DModel, SD3Transformer2DModel, PixArtTransformer2DModel,
 *     HunyuanDiT2DModel, CogVideoXTransformer3DModel, WanTransformer3DModel;
 *   - transformers CLIPTextModel(WithProjection), CLIPVisionModel, T5EncoderModel,
 *     LlamaForCausalLM, GPT2Model; open_clip TextTransformer; torchvision resnet50;
 *   - BFL flux model.py/layers.py, SD3 reference mmdit.py, Wan-AI wan/modules/model.py;
 *   - sd-scripts networks/lora.py + lora_flux.py, PEFT, LyCORIS loha/lokr/locon, A1111
 *     textual inversion and hypernetworks, ESRGAN block.py, BasicSR RRDBNet / SRVGGNetCompact,
 *     SwinIR, TencentARC T2I-Adapter, madebyollin taesd.py. */
#include "corpus_gen.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "formats/dtype.h"

#define NAME_CAP   512
#define PATH_CAP   1024
#define MAX_SHARDS 8

/* Shape literal: SHAPE(a, b, c) expands to the n_dims, shape argument pair. */
#define SHAPE(...)                                                                                 \
    (int32_t)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]) {             \
        __VA_ARGS__                                                                                \
    }
#define SCALAR                                                                                     \
    0, (const int64_t[]) {                                                                         \
        1                                                                                          \
    }

/* snprintf for tensor names and paths (NAME_CAP / PATH_CAP fit every real name). */
static void strf(char *out, size_t cap, const char *fmt, ...) IMGD_PRINTF(3, 4);

static void strf(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

/* ---- tensor output ---------------------------------------------------------------- */

static void emit(cg_out *o, const char *dtype, int32_t nd, const int64_t *shape, const char *name) {
    if (!dtype) dtype = nd >= 2 ? o->dtype : (o->dtype_1d ? o->dtype_1d : o->dtype);
    if (o->sink) {
        o->sink(o, name, dtype, nd, shape);
    } else {
        ho_add(o->f, name, dtype, nd, shape);
    }
}

void cg_tensor(cg_out *o, const char *dtype, int32_t n_dims, const int64_t *shape, const char *fmt,
               ...) {
    char    name[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    emit(o, dtype, n_dims, shape, name);
}

void cg_linear(cg_out *o, int64_t in, int64_t out, bool bias, const char *fmt, ...) {
    char    m[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    cg_tensor(o, NULL, SHAPE(out, in), "%s.weight", m);
    if (bias) cg_tensor(o, NULL, SHAPE(out), "%s.bias", m);
}

void cg_conv(cg_out *o, int64_t in, int64_t out, int64_t k, bool bias, const char *fmt, ...) {
    char    m[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    cg_tensor(o, NULL, SHAPE(out, in, k, k), "%s.weight", m);
    if (bias) cg_tensor(o, NULL, SHAPE(out), "%s.bias", m);
}

void cg_norm(cg_out *o, int64_t c, bool bias, const char *fmt, ...) {
    char    m[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    cg_tensor(o, NULL, SHAPE(c), "%s.weight", m);
    if (bias) cg_tensor(o, NULL, SHAPE(c), "%s.bias", m);
}

static bool ends(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && memcmp(s + a - b, suf, b) == 0;
}

static bool starts(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

/* ---- UNet (LDM/SGM and diffusers) ------------------------------------------------- */

/* LDM ResBlock: in_layers (GroupNorm, SiLU, conv), emb_layers (SiLU, Linear), out_layers
 * (GroupNorm, SiLU, Dropout, conv), skip_connection when the width changes. */
static void res_ldm(cg_out *o, const char *p, int64_t cin, int64_t cout, int64_t temb) {
    cg_norm(o, cin, true, "%sin_layers.0", p);
    cg_conv(o, cin, cout, 3, true, "%sin_layers.2", p);
    cg_linear(o, temb, cout, true, "%semb_layers.1", p);
    cg_norm(o, cout, true, "%sout_layers.0", p);
    cg_conv(o, cout, cout, 3, true, "%sout_layers.3", p);
    if (cin != cout) cg_conv(o, cin, cout, 1, true, "%sskip_connection", p);
}

/* diffusers ResnetBlock2D (temb 0: the VAE's blocks without time embedding). */
static void res_diffusers(cg_out *o, const char *p, int64_t cin, int64_t cout, int64_t temb) {
    cg_norm(o, cin, true, "%snorm1", p);
    cg_conv(o, cin, cout, 3, true, "%sconv1", p);
    if (temb) cg_linear(o, temb, cout, true, "%stime_emb_proj", p);
    cg_norm(o, cout, true, "%snorm2", p);
    cg_conv(o, cout, cout, 3, true, "%sconv2", p);
    if (cin != cout) cg_conv(o, cin, cout, 1, true, "%sconv_shortcut", p);
}

/* SpatialTransformer (LDM) / Transformer2DModel (diffusers): the same names in both. */
static void spatial_transformer(cg_out *o, const char *p, int64_t c, int32_t depth, int64_t ctx,
                                bool linear) {
    cg_norm(o, c, true, "%snorm", p);
    if (linear) {
        cg_linear(o, c, c, true, "%sproj_in", p);
    } else {
        cg_conv(o, c, c, 1, true, "%sproj_in", p);
    }
    for (int32_t d = 0; d < depth; d++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%stransformer_blocks.%d.", p, d);
        cg_linear(o, c, c, false, "%sattn1.to_q", b);
        cg_linear(o, c, c, false, "%sattn1.to_k", b);
        cg_linear(o, c, c, false, "%sattn1.to_v", b);
        cg_linear(o, c, c, true, "%sattn1.to_out.0", b);
        cg_linear(o, c, c, false, "%sattn2.to_q", b);
        cg_linear(o, ctx, c, false, "%sattn2.to_k", b);
        cg_linear(o, ctx, c, false, "%sattn2.to_v", b);
        cg_linear(o, c, c, true, "%sattn2.to_out.0", b);
        cg_linear(o, c, 8 * c, true, "%sff.net.0.proj", b); /* GEGLU: 2 × 4c */
        cg_linear(o, 4 * c, c, true, "%sff.net.2", b);
        cg_norm(o, c, true, "%snorm1", b);
        cg_norm(o, c, true, "%snorm2", b);
        cg_norm(o, c, true, "%snorm3", b);
    }
    if (linear) {
        cg_linear(o, c, c, true, "%sproj_out", p);
    } else {
        cg_conv(o, c, c, 1, true, "%sproj_out", p);
    }
}

typedef struct chan_stack {
    int64_t c[64];
    int     n;
} chan_stack;

static void push(chan_stack *s, int64_t c) {
    if (s->n < 64) s->c[s->n++] = c;
}

static int64_t pop(chan_stack *s) {
    return s->n > 0 ? s->c[--s->n] : 0;
}

/* LDM time/label embeddings, input_blocks and middle_block; returns the width at the
 * bottom and leaves the skip widths on s (shared by the UNet and cldm ControlNet). */
static int64_t ldm_encoder(cg_out *o, const char *pre, const cg_unet_cfg *c, chan_stack *s) {
    int64_t mc = c->widths[0], te = 4 * mc, ch = mc;
    int32_t idx = 1;
    cg_linear(o, mc, te, true, "%stime_embed.0", pre);
    cg_linear(o, te, te, true, "%stime_embed.2", pre);
    if (c->adm) {
        cg_linear(o, c->adm, te, true, "%slabel_emb.0.0", pre);
        cg_linear(o, te, te, true, "%slabel_emb.0.2", pre);
    }
    cg_conv(o, c->in_ch, mc, 3, true, "%sinput_blocks.0.0", pre);
    push(s, mc);
    for (int32_t l = 0; l < c->n_levels; l++) {
        for (int32_t i = 0; i < c->nrb; i++, idx++) {
            char b[NAME_CAP];
            strf(b, sizeof b, "%sinput_blocks.%d.0.", pre, idx);
            res_ldm(o, b, ch, c->widths[l], te);
            ch = c->widths[l];
            if (c->depth[l]) {
                strf(b, sizeof b, "%sinput_blocks.%d.1.", pre, idx);
                spatial_transformer(o, b, ch, c->depth[l], c->ctx, c->linear_proj);
            }
            push(s, ch);
        }
        if (l + 1 < c->n_levels) {
            cg_conv(o, ch, ch, 3, true, "%sinput_blocks.%d.0.op", pre, idx++);
            push(s, ch);
        }
    }
    char b[NAME_CAP];
    strf(b, sizeof b, "%smiddle_block.0.", pre);
    res_ldm(o, b, ch, ch, te);
    int32_t k = 1;
    if (c->mid_depth) {
        strf(b, sizeof b, "%smiddle_block.1.", pre);
        spatial_transformer(o, b, ch, c->mid_depth, c->ctx, c->linear_proj);
        k = 2;
    }
    strf(b, sizeof b, "%smiddle_block.%d.", pre, k);
    res_ldm(o, b, ch, ch, te);
    return ch;
}

void cg_unet_ldm(cg_out *o, const char *pre, const cg_unet_cfg *c) {
    chan_stack s  = {{0}, 0};
    int64_t    ch = ldm_encoder(o, pre, c, &s), te = 4 * (int64_t)c->widths[0];
    int32_t    idx = 0;
    for (int32_t l = c->n_levels - 1; l >= 0; l--) {
        for (int32_t i = 0; i <= c->nrb; i++, idx++) {
            char b[NAME_CAP];
            strf(b, sizeof b, "%soutput_blocks.%d.0.", pre, idx);
            res_ldm(o, b, ch + pop(&s), c->widths[l], te);
            ch        = c->widths[l];
            int32_t k = 1;
            if (c->depth[l]) {
                strf(b, sizeof b, "%soutput_blocks.%d.1.", pre, idx);
                spatial_transformer(o, b, ch, c->depth[l], c->ctx, c->linear_proj);
                k = 2;
            }
            if (l > 0 && i == c->nrb) {
                cg_conv(o, ch, ch, 3, true, "%soutput_blocks.%d.%d.conv", pre, idx, k);
            }
        }
    }
    cg_norm(o, c->widths[0], true, "%sout.0", pre);
    cg_conv(o, c->widths[0], c->out_ch, 3, true, "%sout.2", pre);
}

/* diffusers time/added embeddings, down_blocks and mid_block. */
static int64_t diffusers_encoder(cg_out *o, const char *pre, const cg_unet_cfg *c, chan_stack *s) {
    int64_t mc = c->widths[0], te = 4 * mc, ch = mc;
    cg_conv(o, c->in_ch, mc, 3, true, "%sconv_in", pre);
    cg_linear(o, mc, te, true, "%stime_embedding.linear_1", pre);
    cg_linear(o, te, te, true, "%stime_embedding.linear_2", pre);
    if (c->encoder_hid) cg_linear(o, c->encoder_hid, c->ctx, true, "%sencoder_hid_proj", pre);
    if (c->adm) {
        cg_linear(o, c->adm, te, true, "%sadd_embedding.linear_1", pre);
        cg_linear(o, te, te, true, "%sadd_embedding.linear_2", pre);
    }
    push(s, mc);
    for (int32_t l = 0; l < c->n_levels; l++) {
        for (int32_t i = 0; i < c->nrb; i++) {
            char b[NAME_CAP];
            strf(b, sizeof b, "%sdown_blocks.%d.resnets.%d.", pre, l, i);
            res_diffusers(o, b, ch, c->widths[l], te);
            ch = c->widths[l];
            if (c->depth[l]) {
                strf(b, sizeof b, "%sdown_blocks.%d.attentions.%d.", pre, l, i);
                spatial_transformer(o, b, ch, c->depth[l], c->ctx, c->linear_proj);
            }
            push(s, ch);
        }
        if (l + 1 < c->n_levels) {
            cg_conv(o, ch, ch, 3, true, "%sdown_blocks.%d.downsamplers.0.conv", pre, l);
            push(s, ch);
        }
    }
    char b[NAME_CAP];
    if (c->mid_depth) {
        strf(b, sizeof b, "%smid_block.attentions.0.", pre);
        spatial_transformer(o, b, ch, c->mid_depth, c->ctx, c->linear_proj);
    }
    for (int32_t i = 0; i < 2; i++) {
        strf(b, sizeof b, "%smid_block.resnets.%d.", pre, i);
        res_diffusers(o, b, ch, ch, te);
    }
    return ch;
}

void cg_unet_diffusers(cg_out *o, const char *pre, const cg_unet_cfg *c) {
    chan_stack s  = {{0}, 0};
    int64_t    ch = diffusers_encoder(o, pre, c, &s), te = 4 * (int64_t)c->widths[0];
    for (int32_t k = 0; k < c->n_levels; k++) {
        int32_t l = c->n_levels - 1 - k;
        for (int32_t i = 0; i <= c->nrb; i++) {
            char b[NAME_CAP];
            strf(b, sizeof b, "%sup_blocks.%d.resnets.%d.", pre, k, i);
            res_diffusers(o, b, ch + pop(&s), c->widths[l], te);
            ch = c->widths[l];
            if (c->depth[l]) {
                strf(b, sizeof b, "%sup_blocks.%d.attentions.%d.", pre, k, i);
                spatial_transformer(o, b, ch, c->depth[l], c->ctx, c->linear_proj);
            }
        }
        if (k + 1 < c->n_levels) {
            cg_conv(o, ch, ch, 3, true, "%sup_blocks.%d.upsamplers.0.conv", pre, k);
        }
    }
    cg_norm(o, c->widths[0], true, "%sconv_norm_out", pre);
    cg_conv(o, c->widths[0], c->out_ch, 3, true, "%sconv_out", pre);
}

/* The hint encoder of ControlNet: 3 → 16 → 16 → 32 ↓ → 32 → 96 ↓ → 96 → 256 ↓ → width. */
static const int64_t k_hint[][2] = {{3, 16},  {16, 16}, {16, 32}, {32, 32},
                                    {32, 96}, {96, 96}, {96, 256}};

void cg_controlnet_ldm(cg_out *o, const char *pre, const cg_unet_cfg *c) {
    chan_stack s = {{0}, 0};
    for (int32_t i = 0; i < 7; i++) {
        cg_conv(o, k_hint[i][0], k_hint[i][1], 3, true, "%sinput_hint_block.%d", pre, 2 * i);
    }
    cg_conv(o, 256, c->widths[0], 3, true, "%sinput_hint_block.14", pre);
    int64_t ch = ldm_encoder(o, pre, c, &s);
    for (int32_t i = 0; i < s.n; i++) {
        cg_conv(o, s.c[i], s.c[i], 1, true, "%szero_convs.%d.0", pre, i);
    }
    cg_conv(o, ch, ch, 1, true, "%smiddle_block_out.0", pre);
}

void cg_controlnet_diffusers(cg_out *o, const char *pre, const cg_unet_cfg *c) {
    chan_stack s  = {{0}, 0};
    int64_t    ch = diffusers_encoder(o, pre, c, &s);
    cg_conv(o, 3, 16, 3, true, "%scontrolnet_cond_embedding.conv_in", pre);
    for (int32_t i = 1; i < 7; i++) {
        cg_conv(o, k_hint[i][0], k_hint[i][1], 3, true, "%scontrolnet_cond_embedding.blocks.%d",
                pre, i - 1);
    }
    cg_conv(o, 256, c->widths[0], 3, true, "%scontrolnet_cond_embedding.conv_out", pre);
    for (int32_t i = 0; i < s.n; i++) {
        cg_conv(o, s.c[i], s.c[i], 1, true, "%scontrolnet_down_blocks.%d", pre, i);
    }
    cg_conv(o, ch, ch, 1, true, "%scontrolnet_mid_block", pre);
}

/* ---- VAE -------------------------------------------------------------------------- */

static void vres_ldm(cg_out *o, const char *p, int64_t cin, int64_t cout) {
    cg_norm(o, cin, true, "%snorm1", p);
    cg_conv(o, cin, cout, 3, true, "%sconv1", p);
    cg_norm(o, cout, true, "%snorm2", p);
    cg_conv(o, cout, cout, 3, true, "%sconv2", p);
    if (cin != cout) cg_conv(o, cin, cout, 1, true, "%snin_shortcut", p);
}

static void vmid_ldm(cg_out *o, const char *p, int64_t ch) {
    char b[NAME_CAP];
    strf(b, sizeof b, "%smid.block_1.", p);
    vres_ldm(o, b, ch, ch);
    cg_norm(o, ch, true, "%smid.attn_1.norm", p);
    cg_conv(o, ch, ch, 1, true, "%smid.attn_1.q", p);
    cg_conv(o, ch, ch, 1, true, "%smid.attn_1.k", p);
    cg_conv(o, ch, ch, 1, true, "%smid.attn_1.v", p);
    cg_conv(o, ch, ch, 1, true, "%smid.attn_1.proj_out", p);
    strf(b, sizeof b, "%smid.block_2.", p);
    vres_ldm(o, b, ch, ch);
}

void cg_vae_ldm(cg_out *o, const char *pre, const cg_vae_cfg *c) {
    int32_t n  = c->n_levels;
    int64_t ch = c->widths[0], top = c->widths[n - 1];
    char    b[NAME_CAP];
    if (!c->no_encoder) {
        cg_conv(o, c->in_ch, ch, 3, true, "%sencoder.conv_in", pre);
        for (int32_t l = 0; l < n; l++) {
            for (int32_t i = 0; i < c->nrb; i++) {
                strf(b, sizeof b, "%sencoder.down.%d.block.%d.", pre, l, i);
                vres_ldm(o, b, ch, c->widths[l]);
                ch = c->widths[l];
            }
            if (l + 1 < n) cg_conv(o, ch, ch, 3, true, "%sencoder.down.%d.downsample.conv", pre, l);
        }
        strf(b, sizeof b, "%sencoder.", pre);
        vmid_ldm(o, b, ch);
        cg_norm(o, ch, true, "%sencoder.norm_out", pre);
        cg_conv(o, ch, 2 * (int64_t)c->z, 3, true, "%sencoder.conv_out", pre);
        if (c->quant_conv) {
            cg_conv(o, 2 * (int64_t)c->z, 2 * (int64_t)c->z, 1, true, "%squant_conv", pre);
        }
    }
    if (c->quant_conv) cg_conv(o, c->z, c->z, 1, true, "%spost_quant_conv", pre);
    ch = top;
    cg_conv(o, c->z, ch, 3, true, "%sdecoder.conv_in", pre);
    strf(b, sizeof b, "%sdecoder.", pre);
    vmid_ldm(o, b, ch);
    for (int32_t l = n - 1; l >= 0; l--) {
        for (int32_t i = 0; i <= c->nrb; i++) {
            strf(b, sizeof b, "%sdecoder.up.%d.block.%d.", pre, l, i);
            vres_ldm(o, b, ch, c->widths[l]);
            ch = c->widths[l];
        }
        if (l > 0) cg_conv(o, ch, ch, 3, true, "%sdecoder.up.%d.upsample.conv", pre, l);
    }
    cg_norm(o, ch, true, "%sdecoder.norm_out", pre);
    cg_conv(o, ch, c->out_ch, 3, true, "%sdecoder.conv_out", pre);
}

static void vmid_diffusers(cg_out *o, const char *p, int64_t ch, bool legacy) {
    char b[NAME_CAP];
    strf(b, sizeof b, "%smid_block.attentions.0.", p);
    cg_norm(o, ch, true, "%sgroup_norm", b);
    cg_linear(o, ch, ch, true, legacy ? "%squery" : "%sto_q", b);
    cg_linear(o, ch, ch, true, legacy ? "%skey" : "%sto_k", b);
    cg_linear(o, ch, ch, true, legacy ? "%svalue" : "%sto_v", b);
    cg_linear(o, ch, ch, true, legacy ? "%sproj_attn" : "%sto_out.0", b);
    for (int32_t i = 0; i < 2; i++) {
        strf(b, sizeof b, "%smid_block.resnets.%d.", p, i);
        res_diffusers(o, b, ch, ch, 0);
    }
}

void cg_vae_diffusers(cg_out *o, const char *pre, const cg_vae_cfg *c) {
    int32_t n  = c->n_levels;
    int64_t ch = c->widths[0];
    char    b[NAME_CAP];
    if (!c->no_encoder) {
        cg_conv(o, c->in_ch, ch, 3, true, "%sencoder.conv_in", pre);
        for (int32_t l = 0; l < n; l++) {
            for (int32_t i = 0; i < c->nrb; i++) {
                strf(b, sizeof b, "%sencoder.down_blocks.%d.resnets.%d.", pre, l, i);
                res_diffusers(o, b, ch, c->widths[l], 0);
                ch = c->widths[l];
            }
            if (l + 1 < n) {
                cg_conv(o, ch, ch, 3, true, "%sencoder.down_blocks.%d.downsamplers.0.conv", pre, l);
            }
        }
        strf(b, sizeof b, "%sencoder.", pre);
        vmid_diffusers(o, b, ch, c->legacy_attn);
        cg_norm(o, ch, true, "%sencoder.conv_norm_out", pre);
        cg_conv(o, ch, 2 * (int64_t)c->z, 3, true, "%sencoder.conv_out", pre);
        if (c->quant_conv) {
            cg_conv(o, 2 * (int64_t)c->z, 2 * (int64_t)c->z, 1, true, "%squant_conv", pre);
        }
    }
    if (c->quant_conv) cg_conv(o, c->z, c->z, 1, true, "%spost_quant_conv", pre);
    ch = c->widths[n - 1];
    cg_conv(o, c->z, ch, 3, true, "%sdecoder.conv_in", pre);
    strf(b, sizeof b, "%sdecoder.", pre);
    vmid_diffusers(o, b, ch, c->legacy_attn);
    for (int32_t k = 0; k < n; k++) {
        int32_t l = n - 1 - k;
        for (int32_t i = 0; i <= c->nrb; i++) {
            strf(b, sizeof b, "%sdecoder.up_blocks.%d.resnets.%d.", pre, k, i);
            res_diffusers(o, b, ch, c->widths[l], 0);
            ch = c->widths[l];
        }
        if (k + 1 < n) {
            cg_conv(o, ch, ch, 3, true, "%sdecoder.up_blocks.%d.upsamplers.0.conv", pre, k);
        }
    }
    cg_norm(o, ch, true, "%sdecoder.conv_norm_out", pre);
    cg_conv(o, ch, c->out_ch, 3, true, "%sdecoder.conv_out", pre);
}

/* ---- text encoders ---------------------------------------------------------------- */

/* transformers CLIPEncoderLayer (also the vision tower's). */
static void clip_layer(cg_out *o, const char *b, int64_t h, int64_t mlp) {
    cg_linear(o, h, h, true, "%sself_attn.k_proj", b);
    cg_linear(o, h, h, true, "%sself_attn.v_proj", b);
    cg_linear(o, h, h, true, "%sself_attn.q_proj", b);
    cg_linear(o, h, h, true, "%sself_attn.out_proj", b);
    cg_norm(o, h, true, "%slayer_norm1", b);
    cg_linear(o, h, mlp, true, "%smlp.fc1", b);
    cg_linear(o, mlp, h, true, "%smlp.fc2", b);
    cg_norm(o, h, true, "%slayer_norm2", b);
}

void cg_clip_hf(cg_out *o, const char *pre, const cg_te_cfg *c) {
    int64_t h = c->hidden;
    cg_tensor(o, NULL, SHAPE(c->vocab, h), "%stext_model.embeddings.token_embedding.weight", pre);
    cg_tensor(o, NULL, SHAPE(c->positions, h), "%stext_model.embeddings.position_embedding.weight",
              pre);
    if (c->position_ids) {
        cg_tensor(o, "I64", SHAPE(1, c->positions), "%stext_model.embeddings.position_ids", pre);
    }
    for (int32_t i = 0; i < c->layers; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%stext_model.encoder.layers.%d.", pre, i);
        clip_layer(o, b, h, c->mlp);
    }
    cg_norm(o, h, true, "%stext_model.final_layer_norm", pre);
    if (c->proj) cg_tensor(o, NULL, SHAPE(c->proj, h), "%stext_projection.weight", pre);
}

/* transformers CLIPVisionModel(WithProjection): ViT with 14-pixel patches at 224. */
static void clip_vision(cg_out *o, const char *pre, const cg_te_cfg *c) {
    int64_t h = c->hidden, npos = 257;
    cg_tensor(o, NULL, SHAPE(h), "%svision_model.embeddings.class_embedding", pre);
    cg_tensor(o, NULL, SHAPE(h, 3, 14, 14), "%svision_model.embeddings.patch_embedding.weight",
              pre);
    cg_tensor(o, NULL, SHAPE(npos, h), "%svision_model.embeddings.position_embedding.weight", pre);
    if (c->position_ids) {
        cg_tensor(o, "I64", SHAPE(1, npos), "%svision_model.embeddings.position_ids", pre);
    }
    cg_norm(o, h, true, "%svision_model.pre_layrnorm", pre);
    for (int32_t i = 0; i < c->layers; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%svision_model.encoder.layers.%d.", pre, i);
        clip_layer(o, b, h, c->mlp);
    }
    cg_norm(o, h, true, "%svision_model.post_layernorm", pre);
    if (c->proj) cg_tensor(o, NULL, SHAPE(c->proj, h), "%svisual_projection.weight", pre);
}

void cg_openclip(cg_out *o, const char *pre, const cg_te_cfg *c) {
    int64_t h = c->hidden;
    cg_tensor(o, NULL, SHAPE(c->positions, h), "%spositional_embedding", pre);
    cg_tensor(o, NULL, SHAPE(c->vocab, h), "%stoken_embedding.weight", pre);
    for (int32_t i = 0; i < c->layers; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%stransformer.resblocks.%d.", pre, i);
        cg_tensor(o, NULL, SHAPE(3 * h, h), "%sattn.in_proj_weight", b);
        cg_tensor(o, NULL, SHAPE(3 * h), "%sattn.in_proj_bias", b);
        cg_linear(o, h, h, true, "%sattn.out_proj", b);
        cg_norm(o, h, true, "%sln_1", b);
        cg_linear(o, h, c->mlp, true, "%smlp.c_fc", b);
        cg_linear(o, c->mlp, h, true, "%smlp.c_proj", b);
        cg_norm(o, h, true, "%sln_2", b);
    }
    cg_norm(o, h, true, "%sln_final", pre);
    if (c->proj) cg_tensor(o, NULL, SHAPE(h, c->proj), "%stext_projection", pre);
    cg_tensor(o, NULL, SCALAR, "%slogit_scale", pre);
}

void cg_t5_encoder(cg_out *o, const char *pre, const cg_te_cfg *c) {
    int64_t d = c->hidden, inner = 64 * (int64_t)c->heads, ff = c->mlp;
    cg_tensor(o, NULL, SHAPE(c->vocab, d), "%sshared.weight", pre);
    for (int32_t i = 0; i < c->layers; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%sencoder.block.%d.layer.", pre, i);
        cg_tensor(o, NULL, SHAPE(inner, d), "%s0.SelfAttention.q.weight", b);
        cg_tensor(o, NULL, SHAPE(inner, d), "%s0.SelfAttention.k.weight", b);
        cg_tensor(o, NULL, SHAPE(inner, d), "%s0.SelfAttention.v.weight", b);
        cg_tensor(o, NULL, SHAPE(d, inner), "%s0.SelfAttention.o.weight", b);
        if (i == 0) {
            cg_tensor(o, NULL, SHAPE(32, c->heads),
                      "%s0.SelfAttention.relative_attention_bias.weight", b);
        }
        cg_tensor(o, NULL, SHAPE(d), "%s0.layer_norm.weight", b);
        cg_tensor(o, NULL, SHAPE(ff, d), "%s1.DenseReluDense.wi_0.weight", b);
        cg_tensor(o, NULL, SHAPE(ff, d), "%s1.DenseReluDense.wi_1.weight", b);
        cg_tensor(o, NULL, SHAPE(d, ff), "%s1.DenseReluDense.wo.weight", b);
        cg_tensor(o, NULL, SHAPE(d), "%s1.layer_norm.weight", b);
    }
    cg_tensor(o, NULL, SHAPE(d), "%sencoder.final_layer_norm.weight", pre);
}

/* ---- diffusion transformers ------------------------------------------------------- */

static int64_t mlp_of(const cg_dit_cfg *c) {
    return c->mlp ? c->mlp : 4 * (int64_t)c->hidden;
}

/* Two-layer MLP embedder (TimestepEmbedding / MLPEmbedder): <p><a> [h, in], <p><b> [h, h]. */
static void embedder(cg_out *o, const char *p, const char *a, const char *b, int64_t in,
                     int64_t h) {
    cg_linear(o, in, h, true, "%s%s", p, a);
    cg_linear(o, h, h, true, "%s%s", p, b);
}

void cg_flux_bfl(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, hd = h / c->heads, mlp = mlp_of(c);
    cg_linear(o, c->in_ch, h, true, "%simg_in", pre);
    embedder(o, pre, "time_in.in_layer", "time_in.out_layer", 256, h);
    embedder(o, pre, "vector_in.in_layer", "vector_in.out_layer", c->pooled, h);
    if (c->guidance) embedder(o, pre, "guidance_in.in_layer", "guidance_in.out_layer", 256, h);
    cg_linear(o, c->ctx, h, true, "%stxt_in", pre);
    for (int32_t i = 0; i < c->depth; i++) {
        static const char *const side[] = {"img", "txt"};
        for (int s = 0; s < 2; s++) {
            char b[NAME_CAP];
            strf(b, sizeof b, "%sdouble_blocks.%d.%s", pre, i, side[s]);
            cg_linear(o, h, 6 * h, true, "%s_mod.lin", b);
            cg_linear(o, h, 3 * h, true, "%s_attn.qkv", b);
            cg_tensor(o, NULL, SHAPE(hd), "%s_attn.norm.query_norm.scale", b);
            cg_tensor(o, NULL, SHAPE(hd), "%s_attn.norm.key_norm.scale", b);
            cg_linear(o, h, h, true, "%s_attn.proj", b);
            cg_linear(o, h, mlp, true, "%s_mlp.0", b);
            cg_linear(o, mlp, h, true, "%s_mlp.2", b);
        }
    }
    for (int32_t i = 0; i < c->depth_single; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%ssingle_blocks.%d.", pre, i);
        cg_linear(o, h, 3 * h + mlp, true, "%slinear1", b);
        cg_linear(o, h + mlp, h, true, "%slinear2", b);
        cg_tensor(o, NULL, SHAPE(hd), "%snorm.query_norm.scale", b);
        cg_tensor(o, NULL, SHAPE(hd), "%snorm.key_norm.scale", b);
        cg_linear(o, h, 3 * h, true, "%smodulation.lin", b);
    }
    cg_linear(o, h, 2 * h, true, "%sfinal_layer.adaLN_modulation.1", pre);
    cg_linear(o, h, (int64_t)c->patch * c->patch * c->out_ch, true, "%sfinal_layer.linear", pre);
}

/* diffusers Attention with RMS q/k norms and, for joint blocks, the added context stream. */
static void dit_attn(cg_out *o, const char *b, int64_t h, int64_t hd, bool added, bool add_out,
                     bool qk_norm) {
    cg_linear(o, h, h, true, "%sattn.to_q", b);
    cg_linear(o, h, h, true, "%sattn.to_k", b);
    cg_linear(o, h, h, true, "%sattn.to_v", b);
    if (qk_norm) {
        cg_tensor(o, NULL, SHAPE(hd), "%sattn.norm_q.weight", b);
        cg_tensor(o, NULL, SHAPE(hd), "%sattn.norm_k.weight", b);
    }
    if (!added) return;
    cg_linear(o, h, h, true, "%sattn.to_out.0", b);
    cg_linear(o, h, h, true, "%sattn.add_q_proj", b);
    cg_linear(o, h, h, true, "%sattn.add_k_proj", b);
    cg_linear(o, h, h, true, "%sattn.add_v_proj", b);
    if (qk_norm) {
        cg_tensor(o, NULL, SHAPE(hd), "%sattn.norm_added_q.weight", b);
        cg_tensor(o, NULL, SHAPE(hd), "%sattn.norm_added_k.weight", b);
    }
    if (add_out) cg_linear(o, h, h, true, "%sattn.to_add_out", b);
}

static void ff(cg_out *o, const char *b, const char *name, int64_t h, int64_t mlp) {
    cg_linear(o, h, mlp, true, "%s%s.net.0.proj", b, name);
    cg_linear(o, mlp, h, true, "%s%s.net.2", b, name);
}

void cg_flux_diffusers(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, hd = h / c->heads, mlp = mlp_of(c);
    cg_linear(o, c->in_ch, h, true, "%sx_embedder", pre);
    cg_linear(o, c->ctx, h, true, "%scontext_embedder", pre);
    embedder(o, pre, "time_text_embed.timestep_embedder.linear_1",
             "time_text_embed.timestep_embedder.linear_2", 256, h);
    if (c->guidance) {
        embedder(o, pre, "time_text_embed.guidance_embedder.linear_1",
                 "time_text_embed.guidance_embedder.linear_2", 256, h);
    }
    embedder(o, pre, "time_text_embed.text_embedder.linear_1",
             "time_text_embed.text_embedder.linear_2", c->pooled, h);
    for (int32_t i = 0; i < c->depth; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%stransformer_blocks.%d.", pre, i);
        cg_linear(o, h, 6 * h, true, "%snorm1.linear", b);
        cg_linear(o, h, 6 * h, true, "%snorm1_context.linear", b);
        dit_attn(o, b, h, hd, true, true, true);
        ff(o, b, "ff", h, mlp);
        ff(o, b, "ff_context", h, mlp);
    }
    for (int32_t i = 0; i < c->depth_single; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%ssingle_transformer_blocks.%d.", pre, i);
        cg_linear(o, h, 3 * h, true, "%snorm.linear", b);
        cg_linear(o, h, mlp, true, "%sproj_mlp", b);
        cg_linear(o, h + mlp, h, true, "%sproj_out", b);
        dit_attn(o, b, h, hd, false, false, true);
    }
    cg_linear(o, h, 2 * h, true, "%snorm_out.linear", pre);
    cg_linear(o, h, (int64_t)c->patch * c->patch * c->out_ch, true, "%sproj_out", pre);
}

/* SD3 reference MMDiT: JointBlock = x_block + context_block (DismantledBlock); the last
 * context block is pre_only (adaLN to 2h, qkv only). SD3.5 adds RMS q/k norms (ln_q/ln_k)
 * and, in medium (MMDiT-X), a second self-attention (attn2, adaLN to 9h) in early x blocks. */
void cg_mmdit_sd3(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, hd = h / c->heads, p = c->patch;
    cg_tensor(o, NULL, SHAPE(1, (int64_t)c->pos_max * c->pos_max, h), "%spos_embed", pre);
    cg_tensor(o, NULL, SHAPE(h, c->in_ch, p, p), "%sx_embedder.proj.weight", pre);
    cg_tensor(o, NULL, SHAPE(h), "%sx_embedder.proj.bias", pre);
    embedder(o, pre, "t_embedder.mlp.0", "t_embedder.mlp.2", 256, h);
    embedder(o, pre, "y_embedder.mlp.0", "y_embedder.mlp.2", c->pooled, h);
    cg_linear(o, c->ctx, h, true, "%scontext_embedder", pre);
    for (int32_t i = 0; i < c->depth; i++) {
        static const char *const side[] = {"context_block", "x_block"};
        for (int s = 0; s < 2; s++) {
            bool pre_only = s == 0 && i == c->depth - 1;
            char b[NAME_CAP];
            strf(b, sizeof b, "%sjoint_blocks.%d.%s.", pre, i, side[s]);
            bool x2 = s == 1 && i < c->x_attn2;
            cg_linear(o, h, (pre_only ? 2 : x2 ? 9 : 6) * h, true, "%sadaLN_modulation.1", b);
            for (int a = 0; a < (x2 ? 2 : 1); a++) {
                const char *at = a ? "attn2" : "attn";
                cg_linear(o, h, 3 * h, true, "%s%s.qkv", b, at);
                if (c->qk_norm) {
                    cg_tensor(o, NULL, SHAPE(hd), "%s%s.ln_q.weight", b, at);
                    cg_tensor(o, NULL, SHAPE(hd), "%s%s.ln_k.weight", b, at);
                }
                if (!pre_only) cg_linear(o, h, h, true, "%s%s.proj", b, at);
            }
            if (pre_only) continue;
            cg_linear(o, h, 4 * h, true, "%smlp.fc1", b);
            cg_linear(o, 4 * h, h, true, "%smlp.fc2", b);
        }
    }
    cg_linear(o, h, 2 * h, true, "%sfinal_layer.adaLN_modulation.1", pre);
    cg_linear(o, h, p * p * c->out_ch, true, "%sfinal_layer.linear", pre);
}

void cg_sd3_diffusers(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, hd = h / c->heads, p = c->patch;
    cg_tensor(o, NULL, SHAPE(1, (int64_t)c->pos_max * c->pos_max, h), "%spos_embed.pos_embed", pre);
    cg_tensor(o, NULL, SHAPE(h, c->in_ch, p, p), "%spos_embed.proj.weight", pre);
    cg_tensor(o, NULL, SHAPE(h), "%spos_embed.proj.bias", pre);
    embedder(o, pre, "time_text_embed.timestep_embedder.linear_1",
             "time_text_embed.timestep_embedder.linear_2", 256, h);
    embedder(o, pre, "time_text_embed.text_embedder.linear_1",
             "time_text_embed.text_embedder.linear_2", c->pooled, h);
    cg_linear(o, c->ctx, h, true, "%scontext_embedder", pre);
    for (int32_t i = 0; i < c->depth; i++) {
        bool last = i == c->depth - 1;
        char b[NAME_CAP];
        strf(b, sizeof b, "%stransformer_blocks.%d.", pre, i);
        cg_linear(o, h, 6 * h, true, "%snorm1.linear", b);
        cg_linear(o, h, (last ? 2 : 6) * h, true, "%snorm1_context.linear", b);
        dit_attn(o, b, h, hd, true, !last, c->qk_norm);
        ff(o, b, "ff", h, 4 * h);
        if (!last) ff(o, b, "ff_context", h, 4 * h);
    }
    cg_linear(o, h, 2 * h, true, "%snorm_out.linear", pre);
    cg_linear(o, h, p * p * c->out_ch, true, "%sproj_out", pre);
}

/* diffusers self/cross Attention (to_q/k/v/out.0 with biases; cross keys from kv_in). */
static void attn_qkvo(cg_out *o, const char *b, const char *name, int64_t h, int64_t kv_in,
                      int64_t qk_norm_dim) {
    cg_linear(o, h, h, true, "%s%s.to_q", b, name);
    cg_linear(o, kv_in, h, true, "%s%s.to_k", b, name);
    cg_linear(o, kv_in, h, true, "%s%s.to_v", b, name);
    cg_linear(o, h, h, true, "%s%s.to_out.0", b, name);
    if (qk_norm_dim) {
        cg_norm(o, qk_norm_dim, true, "%s%s.norm_q", b, name);
        cg_norm(o, qk_norm_dim, true, "%s%s.norm_k", b, name);
    }
}

void cg_pixart(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, p = c->patch;
    cg_tensor(o, NULL, SHAPE(h, c->in_ch, p, p), "%spos_embed.proj.weight", pre);
    cg_tensor(o, NULL, SHAPE(h), "%spos_embed.proj.bias", pre);
    for (int32_t i = 0; i < c->depth; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%stransformer_blocks.%d.", pre, i);
        cg_tensor(o, NULL, SHAPE(6, h), "%sscale_shift_table", b);
        attn_qkvo(o, b, "attn1", h, h, 0);
        attn_qkvo(o, b, "attn2", h, h, 0);
        ff(o, b, "ff", h, mlp_of(c));
    }
    cg_tensor(o, NULL, SHAPE(2, h), "%sscale_shift_table", pre);
    cg_linear(o, h, p * p * c->out_ch, true, "%sproj_out", pre);
    embedder(o, pre, "adaln_single.emb.timestep_embedder.linear_1",
             "adaln_single.emb.timestep_embedder.linear_2", 256, h);
    cg_linear(o, h, 6 * h, true, "%sadaln_single.linear", pre);
    embedder(o, pre, "caption_projection.linear_1", "caption_projection.linear_2", c->ctx, h);
}

/* HunyuanDiT2DModel (v1.2 config: no style / image-size embedding). ctx = T5 width,
 * pooled = CLIP width (cross-attention keys and pooled projection). */
void cg_hunyuan_dit(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, hd = h / c->heads, p = c->patch, t5 = c->ctx, clip = c->pooled;
    cg_linear(o, t5, 4 * t5, true, "%stext_embedder.linear_1", pre);
    cg_linear(o, 4 * t5, clip, true, "%stext_embedder.linear_2", pre);
    cg_tensor(o, NULL, SHAPE(77 + 256, clip), "%stext_embedding_padding", pre);
    cg_tensor(o, NULL, SHAPE(h, c->in_ch, p, p), "%spos_embed.proj.weight", pre);
    cg_tensor(o, NULL, SHAPE(h), "%spos_embed.proj.bias", pre);
    embedder(o, pre, "time_extra_emb.timestep_embedder.linear_1",
             "time_extra_emb.timestep_embedder.linear_2", 256, h);
    cg_tensor(o, NULL, SHAPE(256 + 1, t5), "%stime_extra_emb.pooler.positional_embedding", pre);
    cg_linear(o, t5, t5, true, "%stime_extra_emb.pooler.k_proj", pre);
    cg_linear(o, t5, t5, true, "%stime_extra_emb.pooler.q_proj", pre);
    cg_linear(o, t5, t5, true, "%stime_extra_emb.pooler.v_proj", pre);
    cg_linear(o, t5, clip, true, "%stime_extra_emb.pooler.c_proj", pre);
    cg_linear(o, clip, 4 * h, true, "%stime_extra_emb.extra_embedder.linear_1", pre);
    cg_linear(o, 4 * h, h, true, "%stime_extra_emb.extra_embedder.linear_2", pre);
    for (int32_t i = 0; i < c->depth; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%sblocks.%d.", pre, i);
        cg_linear(o, h, h, true, "%snorm1.linear", b);
        cg_norm(o, h, true, "%snorm1.norm", b);
        attn_qkvo(o, b, "attn1", h, h, hd);
        cg_norm(o, h, true, "%snorm2", b);
        attn_qkvo(o, b, "attn2", h, clip, hd);
        cg_norm(o, h, true, "%snorm3", b);
        ff(o, b, "ff", h, mlp_of(c));
        if (i > c->depth / 2) {
            cg_norm(o, 2 * h, true, "%sskip_norm", b);
            cg_linear(o, 2 * h, h, true, "%sskip_linear", b);
        }
    }
    cg_linear(o, h, 2 * h, true, "%snorm_out.linear", pre);
    cg_linear(o, h, p * p * c->out_ch, true, "%sproj_out", pre);
}

/* CogVideoXTransformer3DModel 1.0 (time_embed_dim 512). */
void cg_cogvideox(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, hd = h / c->heads, p = c->patch, te = 512;
    cg_tensor(o, NULL, SHAPE(h, c->in_ch, p, p), "%spatch_embed.proj.weight", pre);
    cg_tensor(o, NULL, SHAPE(h), "%spatch_embed.proj.bias", pre);
    cg_linear(o, c->ctx, h, true, "%spatch_embed.text_proj", pre);
    cg_linear(o, h, te, true, "%stime_embedding.linear_1", pre);
    cg_linear(o, te, te, true, "%stime_embedding.linear_2", pre);
    for (int32_t i = 0; i < c->depth; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%stransformer_blocks.%d.", pre, i);
        cg_linear(o, te, 6 * h, true, "%snorm1.linear", b);
        cg_norm(o, h, true, "%snorm1.norm", b);
        attn_qkvo(o, b, "attn1", h, h, hd);
        cg_linear(o, te, 6 * h, true, "%snorm2.linear", b);
        cg_norm(o, h, true, "%snorm2.norm", b);
        ff(o, b, "ff", h, mlp_of(c));
    }
    cg_norm(o, h, true, "%snorm_final", pre);
    cg_linear(o, te, 2 * h, true, "%snorm_out.linear", pre);
    cg_norm(o, h, true, "%snorm_out.norm", pre);
    cg_linear(o, h, p * p * c->out_ch, true, "%sproj_out", pre);
}

/* Wan 2.1 as released by Wan-AI (wan/modules/model.py WanModel). */
void cg_wan_original(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, p = c->patch, mlp = mlp_of(c);
    cg_tensor(o, NULL, SHAPE(h, c->in_ch, 1, p, p), "%spatch_embedding.weight", pre);
    cg_tensor(o, NULL, SHAPE(h), "%spatch_embedding.bias", pre);
    embedder(o, pre, "text_embedding.0", "text_embedding.2", c->ctx, h);
    embedder(o, pre, "time_embedding.0", "time_embedding.2", 256, h);
    cg_linear(o, h, 6 * h, true, "%stime_projection.1", pre);
    for (int32_t i = 0; i < c->depth; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%sblocks.%d.", pre, i);
        cg_tensor(o, NULL, SHAPE(1, 6, h), "%smodulation", b);
        static const char *const at[] = {"self_attn", "cross_attn"};
        for (int a = 0; a < 2; a++) {
            cg_linear(o, h, h, true, "%s%s.q", b, at[a]);
            cg_linear(o, h, h, true, "%s%s.k", b, at[a]);
            cg_linear(o, h, h, true, "%s%s.v", b, at[a]);
            cg_linear(o, h, h, true, "%s%s.o", b, at[a]);
            cg_norm(o, h, false, "%s%s.norm_q", b, at[a]);
            cg_norm(o, h, false, "%s%s.norm_k", b, at[a]);
        }
        cg_norm(o, h, true, "%snorm3", b);
        cg_linear(o, h, mlp, true, "%sffn.0", b);
        cg_linear(o, mlp, h, true, "%sffn.2", b);
    }
    cg_linear(o, h, p * p * c->out_ch, true, "%shead.head", pre);
    cg_tensor(o, NULL, SHAPE(1, 2, h), "%shead.modulation", pre);
}

/* Wan 2.1 in diffusers (WanTransformer3DModel as in the Wan-AI *-Diffusers repositories). */
void cg_wan_diffusers(cg_out *o, const char *pre, const cg_dit_cfg *c) {
    int64_t h = c->hidden, p = c->patch;
    cg_tensor(o, NULL, SHAPE(h, c->in_ch, 1, p, p), "%spatch_embedding.weight", pre);
    cg_tensor(o, NULL, SHAPE(h), "%spatch_embedding.bias", pre);
    embedder(o, pre, "condition_embedder.time_embedder.linear_1",
             "condition_embedder.time_embedder.linear_2", 256, h);
    cg_linear(o, h, 6 * h, true, "%scondition_embedder.time_proj", pre);
    embedder(o, pre, "condition_embedder.text_embedder.linear_1",
             "condition_embedder.text_embedder.linear_2", c->ctx, h);
    for (int32_t i = 0; i < c->depth; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "%sblocks.%d.", pre, i);
        static const char *const at[] = {"attn1", "attn2"};
        for (int a = 0; a < 2; a++) {
            cg_linear(o, h, h, true, "%s%s.to_q", b, at[a]);
            cg_linear(o, h, h, true, "%s%s.to_k", b, at[a]);
            cg_linear(o, h, h, true, "%s%s.to_v", b, at[a]);
            cg_linear(o, h, h, true, "%s%s.to_out.0", b, at[a]);
            cg_norm(o, h, false, "%s%s.norm_q", b, at[a]);
            cg_norm(o, h, false, "%s%s.norm_k", b, at[a]);
        }
        cg_norm(o, h, true, "%snorm2", b);
        ff(o, b, "ffn", h, mlp_of(c));
        cg_tensor(o, NULL, SHAPE(1, 6, h), "%sscale_shift_table", b);
    }
    cg_linear(o, h, p * p * c->out_ch, true, "%sproj_out", pre);
    cg_tensor(o, NULL, SHAPE(1, 2, h), "%sscale_shift_table", pre);
}

/* ---- adapters: LoRA (kohya / PEFT), LyCORIS LoHa / LoKr / LoCon --------------------- */

/* LyCORIS factorization(dim, -1): the divisor pair closest to sqrt(dim), m <= n. */
static void factorize(int64_t d, int64_t *m, int64_t *n) {
    int64_t best = 1;
    for (int64_t k = 1; k * k <= d; k++) {
        if (d % k == 0) best = k;
    }
    *m = best;
    *n = d / best;
}

static void adapter_sink(cg_out *o, const char *name, const char *dtype, int32_t nd,
                         const int64_t *shape) {
    const cg_adapter_cfg *a = o->adapter;
    cg_out               *d = o->dst;
    size_t                l = strlen(name);
    IMGD_UNUSED(dtype);
    if (nd < 2 || !ends(name, ".weight") || l - 7 >= NAME_CAP) return;
    char m[NAME_CAP], k[NAME_CAP];
    memcpy(m, name, l - 7);
    m[l - 7] = '\0';
    if (!a->pick(m, nd, shape)) return;
    int64_t out = shape[0], in = shape[1], kh = nd == 4 ? shape[2] : 1, kw = nd == 4 ? shape[3] : 1;
    int64_t r = kh * kw > 1 ? a->conv_rank : a->rank;
    if (r == 0) return;
    strf(k, sizeof k, "%s%s", a->head, m);
    if (a->underscores) {
        for (char *s = k + strlen(a->head); *s; s++) {
            if (*s == '.') *s = '_';
        }
    }
    if (a->peft || strcmp(a->algo, "lora") == 0) {
        const char *dn = a->peft ? "lora_A.weight" : "lora_down.weight";
        const char *up = a->peft ? "lora_B.weight" : "lora_up.weight";
        if (nd == 4) {
            cg_tensor(d, NULL, SHAPE(r, in, kh, kw), "%s.%s", k, dn);
            cg_tensor(d, NULL, SHAPE(out, r, 1, 1), "%s.%s", k, up);
        } else {
            cg_tensor(d, NULL, SHAPE(r, in), "%s.%s", k, dn);
            cg_tensor(d, NULL, SHAPE(out, r), "%s.%s", k, up);
        }
    } else if (strcmp(a->algo, "loha") == 0) {
        cg_tensor(d, NULL, SHAPE(out, r), "%s.hada_w1_a", k);
        cg_tensor(d, NULL, SHAPE(r, in * kh * kw), "%s.hada_w1_b", k);
        cg_tensor(d, NULL, SHAPE(out, r), "%s.hada_w2_a", k);
        cg_tensor(d, NULL, SHAPE(r, in * kh * kw), "%s.hada_w2_b", k);
    } else { /* lokr: W = kron(w1, w2), w2 low-rank when the rank is small enough */
        int64_t om, on, im, in2;
        factorize(out, &om, &on);
        factorize(in, &im, &in2);
        cg_tensor(d, NULL, SHAPE(om, im), "%s.lokr_w1", k);
        if (2 * r < (on > in2 ? on : in2)) {
            cg_tensor(d, NULL, SHAPE(on, r), "%s.lokr_w2_a", k);
            cg_tensor(d, NULL, SHAPE(r, in2 * kh * kw), "%s.lokr_w2_b", k);
        } else if (nd == 4) {
            cg_tensor(d, NULL, SHAPE(on, in2, kh, kw), "%s.lokr_w2", k);
        } else {
            cg_tensor(d, NULL, SHAPE(on, in2), "%s.lokr_w2", k);
        }
    }
    if (!a->peft) cg_tensor(d, NULL, SCALAR, "%s.alpha", k);
}

void cg_adapter_out(cg_out *src, cg_out *dst, const cg_adapter_cfg *a) {
    memset(src, 0, sizeof *src);
    src->dtype   = dst->dtype;
    src->sink    = adapter_sink;
    src->dst     = dst;
    src->adapter = a;
}

/* Module pickers (what each trainer targets by default). */

/* sd-scripts networks.lora: Linear and 1x1 Conv children of Transformer2DModel. */
static bool pick_unet_attn(const char *m, int32_t nd, const int64_t *shape) {
    IMGD_UNUSED(nd);
    IMGD_UNUSED(shape);
    if (ends(m, ".proj_in") || ends(m, ".proj_out")) return true;
    return strstr(m, "transformer_blocks.") &&
           (ends(m, ".to_q") || ends(m, ".to_k") || ends(m, ".to_v") || ends(m, ".to_out.0") ||
            ends(m, ".ff.net.0.proj") || ends(m, ".ff.net.2"));
}

/* diffusers / PEFT dreambooth LoRA: attention projections only. */
static bool pick_unet_qkvo(const char *m, int32_t nd, const int64_t *shape) {
    IMGD_UNUSED(nd);
    IMGD_UNUSED(shape);
    return strstr(m, "transformer_blocks.") &&
           (ends(m, ".to_q") || ends(m, ".to_k") || ends(m, ".to_v") || ends(m, ".to_out.0"));
}

/* LyCORIS / LoCon: also ResnetBlock2D, Downsample2D and Upsample2D children (both the
 * diffusers names and the LDM names kohya uses for SDXL). */
static bool pick_unet_all(const char *m, int32_t nd, const int64_t *shape) {
    if (pick_unet_attn(m, nd, shape)) return true;
    if (strstr(m, ".resnets.") && (ends(m, ".conv1") || ends(m, ".conv2") ||
                                   ends(m, ".time_emb_proj") || ends(m, ".conv_shortcut"))) {
        return true;
    }
    if (strstr(m, ".downsamplers.") || strstr(m, ".upsamplers.")) return true;
    if (ends(m, ".in_layers.2") || ends(m, ".out_layers.3") || ends(m, ".emb_layers.1") ||
        ends(m, ".skip_connection") || ends(m, ".0.op")) {
        return true;
    }
    return starts(m, "output_blocks.") && ends(m, ".conv");
}

/* CLIPAttention and CLIPMLP Linears. */
static bool pick_te_all(const char *m, int32_t nd, const int64_t *shape) {
    IMGD_UNUSED(nd);
    IMGD_UNUSED(shape);
    return strstr(m, ".self_attn.") || ends(m, ".mlp.fc1") || ends(m, ".mlp.fc2");
}

static bool pick_te_attn(const char *m, int32_t nd, const int64_t *shape) {
    IMGD_UNUSED(nd);
    IMGD_UNUSED(shape);
    return strstr(m, ".self_attn.") != NULL;
}

/* sd-scripts lora_flux: every Linear of DoubleStreamBlock / SingleStreamBlock. */
static bool pick_flux_blocks(const char *m, int32_t nd, const int64_t *shape) {
    IMGD_UNUSED(shape);
    return nd == 2 && (starts(m, "double_blocks.") || starts(m, "single_blocks."));
}

/* diffusers FLUX / SD3 dreambooth LoRA: the joint attention projections. */
static bool pick_dit_attn(const char *m, int32_t nd, const int64_t *shape) {
    IMGD_UNUSED(nd);
    IMGD_UNUSED(shape);
    return strstr(m, ".attn.") &&
           (ends(m, ".to_q") || ends(m, ".to_k") || ends(m, ".to_v") || ends(m, ".to_out.0") ||
            ends(m, ".add_q_proj") || ends(m, ".add_k_proj") || ends(m, ".add_v_proj") ||
            ends(m, ".to_add_out"));
}

/* ---- small networks: T2I-Adapter, upscalers, TAESD, negatives ---------------------- */

/* TencentARC Adapter (original .pth): body.N = ResnetBlock(in_conv?, block1 3x3, block2
 * k×k), ksize 1, sk=True, use_conv=False; cin = input channels × 64 (pixel unshuffle 8). */
static void t2i_original(cg_out *o, int64_t cin) {
    static const int64_t ch[4] = {320, 640, 1280, 1280};
    cg_conv(o, cin, ch[0], 3, true, "conv_in");
    for (int32_t i = 0; i < 4; i++) {
        for (int32_t j = 0; j < 2; j++) {
            int32_t n = i * 2 + j;
            if (j == 0 && i > 0 && ch[i - 1] != ch[i]) {
                cg_conv(o, ch[i - 1], ch[i], 1, true, "body.%d.in_conv", n);
            }
            cg_conv(o, ch[i], ch[i], 3, true, "body.%d.block1", n);
            cg_conv(o, ch[i], ch[i], 1, true, "body.%d.block2", n);
        }
    }
}

/* diffusers T2IAdapter (FullAdapter / FullAdapterXL: AdapterBlock(in_conv?, resnets); the
 * two differ only in where they downsample, which has no parameters). */
static void t2i_diffusers(cg_out *o, int64_t cin) {
    static const int64_t ch[4] = {320, 640, 1280, 1280};
    cg_conv(o, cin, ch[0], 3, true, "adapter.conv_in");
    for (int32_t i = 0; i < 4; i++) {
        int64_t in = i == 0 ? ch[0] : ch[i - 1];
        if (in != ch[i]) cg_conv(o, in, ch[i], 1, true, "adapter.body.%d.in_conv", i);
        for (int32_t j = 0; j < 2; j++) {
            cg_conv(o, ch[i], ch[i], 3, true, "adapter.body.%d.resnets.%d.block1", i, j);
            cg_conv(o, ch[i], ch[i], 1, true, "adapter.body.%d.resnets.%d.block2", i, j);
        }
    }
}

/* Residual-in-residual dense block: 5 convs, growth gc, nf features; ESRGAN's old arch
 * names RDBk.convj.0, BasicSR names rdbk.convj. */
static void rrdb(cg_out *o, const char *p, bool old, int64_t nf, int64_t gc) {
    for (int32_t r = 1; r <= 3; r++) {
        for (int32_t j = 1; j <= 5; j++) {
            int64_t in = nf + (j - 1) * gc, out = j == 5 ? nf : gc;
            if (old) {
                cg_conv(o, in, out, 3, true, "%sRDB%d.conv%d.0", p, r, j);
            } else {
                cg_conv(o, in, out, 3, true, "%srdb%d.conv%d", p, r, j);
            }
        }
    }
}

/* Original ESRGAN (block.py sequential): model.0 conv, model.1 = ShortcutBlock(RRDB × nb +
 * conv), upsamplers (nearest + conv + act per ×2), HR conv, last conv. */
static void esrgan_old(cg_out *o, int32_t nb, int32_t scale) {
    int64_t nf = 64;
    cg_conv(o, 3, nf, 3, true, "model.0");
    for (int32_t i = 0; i < nb; i++) {
        char p[NAME_CAP];
        strf(p, sizeof p, "model.1.sub.%d.", i);
        rrdb(o, p, true, nf, 32);
    }
    cg_conv(o, nf, nf, 3, true, "model.1.sub.%d", nb);
    int32_t idx = 3;
    for (int32_t s = scale; s > 1; s /= 2, idx += 3) cg_conv(o, nf, nf, 3, true, "model.%d", idx);
    cg_conv(o, nf, nf, 3, true, "model.%d", idx - 1);
    cg_conv(o, nf, 3, 3, true, "model.%d", idx + 1);
}

/* BasicSR RRDBNet (Real-ESRGAN): ×2 and ×1 models pixel-unshuffle the input first. */
static void realesrgan(cg_out *o, const char *pre, int32_t nb, int32_t scale) {
    int64_t nf = 64, in = scale == 2 ? 12 : scale == 1 ? 48 : 3;
    cg_conv(o, in, nf, 3, true, "%sconv_first", pre);
    for (int32_t i = 0; i < nb; i++) {
        char p[NAME_CAP];
        strf(p, sizeof p, "%sbody.%d.", pre, i);
        rrdb(o, p, false, nf, 32);
    }
    cg_conv(o, nf, nf, 3, true, "%sconv_body", pre);
    cg_conv(o, nf, nf, 3, true, "%sconv_up1", pre);
    cg_conv(o, nf, nf, 3, true, "%sconv_up2", pre);
    cg_conv(o, nf, nf, 3, true, "%sconv_hr", pre);
    cg_conv(o, nf, 3, 3, true, "%sconv_last", pre);
}

/* SwinIR classical SR (pixelshuffle): embed 180, 6 RSTB × 6 blocks, window 8, 64×64 input. */
static void swinir(cg_out *o, const char *pre, int32_t scale) {
    int64_t e = 180, heads = 6, win = 8, nwin = (64 / win) * (64 / win), wn = win * win;
    cg_conv(o, 3, e, 3, true, "%sconv_first", pre);
    cg_norm(o, e, true, "%spatch_embed.norm", pre);
    for (int32_t l = 0; l < 6; l++) {
        for (int32_t b = 0; b < 6; b++) {
            char p[NAME_CAP];
            strf(p, sizeof p, "%slayers.%d.residual_group.blocks.%d.", pre, l, b);
            cg_norm(o, e, true, "%snorm1", p);
            cg_tensor(o, NULL, SHAPE((2 * win - 1) * (2 * win - 1), heads),
                      "%sattn.relative_position_bias_table", p);
            cg_tensor(o, "I64", SHAPE(wn, wn), "%sattn.relative_position_index", p);
            cg_linear(o, e, 3 * e, true, "%sattn.qkv", p);
            cg_linear(o, e, e, true, "%sattn.proj", p);
            if (b % 2) cg_tensor(o, "F32", SHAPE(nwin, wn, wn), "%sattn_mask", p);
            cg_norm(o, e, true, "%snorm2", p);
            cg_linear(o, e, 2 * e, true, "%smlp.fc1", p);
            cg_linear(o, 2 * e, e, true, "%smlp.fc2", p);
        }
        cg_conv(o, e, e, 3, true, "%slayers.%d.conv", pre, l);
    }
    cg_norm(o, e, true, "%snorm", pre);
    cg_conv(o, e, e, 3, true, "%sconv_after_body", pre);
    cg_conv(o, e, 64, 3, true, "%sconv_before_upsample.0", pre);
    int32_t idx = 0;
    for (int32_t s = scale; s > 1; s /= 2, idx += 2) {
        cg_conv(o, 64, 256, 3, true, "%supsample.%d", pre, idx); /* 4 × 64 for the shuffle */
    }
    cg_conv(o, 64, 3, 3, true, "%sconv_last", pre);
}

/* Real-ESRGAN SRVGGNetCompact: body = conv, PReLU, (conv, PReLU) × num_conv, conv. */
static void compact(cg_out *o, const char *pre, int32_t num_conv, int32_t scale) {
    int64_t nf = 64;
    cg_conv(o, 3, nf, 3, true, "%sbody.0", pre);
    cg_tensor(o, NULL, SHAPE(nf), "%sbody.1.weight", pre);
    for (int32_t i = 0; i < num_conv; i++) {
        cg_conv(o, nf, nf, 3, true, "%sbody.%d", pre, 2 + 2 * i);
        cg_tensor(o, NULL, SHAPE(nf), "%sbody.%d.weight", pre, 3 + 2 * i);
    }
    cg_conv(o, nf, 3 * (int64_t)scale * scale, 3, true, "%sbody.%d", pre, 2 + 2 * num_conv);
}

/* TAESD Block: conv (3 convs), skip 1x1 when the width changes, fuse ReLU. */
static void taesd_block(cg_out *o, const char *p, int32_t i) {
    for (int32_t j = 0; j <= 4; j += 2) cg_conv(o, 64, 64, 3, true, "%s%d.conv.%d", p, i, j);
}

/* taesd.py Encoder (and diffusers EncoderTiny, same indices). */
static void taesd_encoder(cg_out *o, const char *p, int64_t z) {
    cg_conv(o, 3, 64, 3, true, "%s0", p);
    taesd_block(o, p, 1);
    for (int32_t s = 0; s < 3; s++) {
        cg_conv(o, 64, 64, 3, false, "%s%d", p, 2 + 4 * s);
        for (int32_t b = 0; b < 3; b++) taesd_block(o, p, 3 + 4 * s + b);
    }
    cg_conv(o, 64, z, 3, true, "%s14", p);
}

/* taesd.py Decoder (first = 1: Clamp at index 0) / diffusers DecoderTiny (first = 0). */
static void taesd_decoder(cg_out *o, const char *p, int64_t z, int32_t first) {
    cg_conv(o, z, 64, 3, true, "%s%d", p, first);
    int32_t i = first + 2;
    for (int32_t s = 0; s < 3; s++) {
        for (int32_t b = 0; b < 3; b++) taesd_block(o, p, i++);
        i++; /* Upsample */
        cg_conv(o, 64, 64, 3, false, "%s%d", p, i++);
    }
    taesd_block(o, p, i++);
    cg_conv(o, 64, 3, 3, true, "%s%d", p, i);
}

/* torchvision resnet50 (BatchNorm running stats are persistent buffers). */
static void bn(cg_out *o, int64_t c, const char *p, const char *name) {
    cg_norm(o, c, true, "%s%s", p, name);
    cg_tensor(o, NULL, SHAPE(c), "%s%s.running_mean", p, name);
    cg_tensor(o, NULL, SHAPE(c), "%s%s.running_var", p, name);
    cg_tensor(o, "I64", SCALAR, "%s%s.num_batches_tracked", p, name);
}

static void resnet50(cg_out *o) {
    static const int32_t blocks[4] = {3, 4, 6, 3};
    int64_t              in        = 64;
    cg_conv(o, 3, 64, 7, false, "conv1");
    bn(o, 64, "", "bn1");
    for (int32_t l = 0; l < 4; l++) {
        int64_t w = (int64_t)64 << l;
        for (int32_t b = 0; b < blocks[l]; b++) {
            char p[NAME_CAP];
            strf(p, sizeof p, "layer%d.%d.", l + 1, b);
            cg_conv(o, in, w, 1, false, "%sconv1", p);
            bn(o, w, p, "bn1");
            cg_conv(o, w, w, 3, false, "%sconv2", p);
            bn(o, w, p, "bn2");
            cg_conv(o, w, 4 * w, 1, false, "%sconv3", p);
            bn(o, 4 * w, p, "bn3");
            if (b == 0) {
                cg_conv(o, in, 4 * w, 1, false, "%sdownsample.0", p);
                bn(o, 4 * w, p, "downsample.1");
            }
            in = 4 * w;
        }
    }
    cg_linear(o, 2048, 1000, true, "fc");
}

/* ---- files, shards, diffusers folders --------------------------------------------- */

typedef void (*gen_fn)(cg_out *o, const void *cfg);

/* What one weight file (or set of shards) holds. */
typedef struct weights_spec {
    const char        *dtype, *dtype_1d;
    int32_t            shards; /* <= 1: one file */
    const char *const *meta;   /* key, value, ..., NULL; NULL = no __metadata__ */
    gen_fn             gen;
    const void        *cfg;
} weights_spec;

static void mkdirs(const char *path) {
    char p[PATH_CAP];
    strf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        (void)mkdir(p, 0755);
        *s = '/';
    }
    (void)mkdir(p, 0755);
}

static int write_text(const char *dir, const char *rel, const char *text) {
    char p[PATH_CAP];
    strf(p, sizeof p, "%s/%s", dir, rel);
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    size_t n = strlen(text), w = fwrite(text, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static void put_meta(ho_file *f, const char *const *kv) {
    for (int i = 0; kv && kv[i] && kv[i + 1]; i += 2) ho_meta(f, kv[i], kv[i + 1]);
}

static void count_sink(cg_out *o, const char *name, const char *dtype, int32_t nd,
                       const int64_t *shape) {
    uint64_t  *total = o->user, nb = 0;
    imgd_dtype dt;
    IMGD_UNUSED(name);
    if (imgd_dtype_parse(dtype, &dt) == IMGD_OK &&
        imgd_dtype_nbytes(dt, nd, shape, &nb) == IMGD_OK) {
        *total += nb;
    }
}

typedef struct shard_set {
    ho_file  f[MAX_SHARDS];
    char     file[MAX_SHARDS][160];
    int32_t  n, cur, listed;
    uint64_t cap;
    imgd_buf map;
} shard_set;

static void shard_sink(cg_out *o, const char *name, const char *dtype, int32_t nd,
                       const int64_t *shape) {
    shard_set *s  = o->user;
    uint64_t   nb = 0;
    count_sink(&(cg_out){.user = &nb}, name, dtype, nd, shape);
    if (s->f[s->cur].n > 0 && s->f[s->cur].offset + nb > s->cap && s->cur + 1 < s->n) s->cur++;
    ho_add(&s->f[s->cur], name, dtype, nd, shape);
    imgd_buf_puts(&s->map, s->listed++ ? "," : "");
    imgd_buf_json_str(&s->map, name);
    imgd_buf_puts(&s->map, ":");
    imgd_buf_json_str(&s->map, s->file[s->cur]);
}

/* Writes <dir>/<stem>.safetensors, or <stem>-0000k-of-0000n.safetensors shards plus the
 * <stem>.safetensors.index.json weight map that save_pretrained writes. */
static int write_weights(const char *dir, const char *stem, const weights_spec *w) {
    char   path[PATH_CAP];
    cg_out o = {.dtype = w->dtype, .dtype_1d = w->dtype_1d};
    if (w->shards <= 1) {
        ho_file f;
        ho_begin(&f);
        put_meta(&f, w->meta);
        o.f = &f;
        w->gen(&o, w->cfg);
        strf(path, sizeof path, "%s/%s.safetensors", dir, stem);
        return ho_finish(&f, path);
    }
    uint64_t total = 0;
    o.sink         = count_sink;
    o.user         = &total;
    w->gen(&o, w->cfg);
    shard_set *s = imgd_calloc(1, sizeof *s);
    if (!s) return -1;
    s->n   = w->shards < MAX_SHARDS ? w->shards : MAX_SHARDS;
    s->cap = total / (uint64_t)s->n + 1;
    for (int32_t k = 0; k < s->n; k++) {
        ho_begin(&s->f[k]);
        put_meta(&s->f[k], w->meta);
        strf(s->file[k], sizeof s->file[k], "%s-%05d-of-%05d.safetensors", stem, k + 1, s->n);
    }
    imgd_buf_init(&s->map, 0);
    imgd_buf_printf(&s->map, "{\"metadata\":{\"total_size\":%llu},\"weight_map\":{",
                    (unsigned long long)total);
    o.sink = shard_sink;
    o.user = s;
    w->gen(&o, w->cfg);
    int rc = imgd_buf_puts(&s->map, "}}") == IMGD_OK ? 0 : -1;
    for (int32_t k = 0; k < s->n; k++) {
        strf(path, sizeof path, "%s/%s", dir, s->file[k]);
        rc |= ho_finish(&s->f[k], path);
    }
    strf(path, sizeof path, "%s.safetensors.index.json", stem);
    if (rc == 0) rc = write_text(dir, path, s->map.data);
    imgd_buf_free(&s->map);
    imgd_free(s);
    return rc;
}

/* One diffusers component folder: config file + weights. */
typedef struct comp {
    const char  *dir;         /* subfolder; "" = the folder itself */
    const char  *config_name; /* NULL = "config.json" */
    const char  *config;      /* NULL = none */
    const char  *stem;        /* weight file stem; NULL = no weights */
    weights_spec w;
} comp;

static int write_comp(const char *root, const comp *c) {
    char d[PATH_CAP];
    strf(d, sizeof d, "%s%s%s", root, *c->dir ? "/" : "", c->dir);
    mkdirs(d);
    if (c->config && write_text(d, c->config_name ? c->config_name : "config.json", c->config)) {
        return -1;
    }
    return c->stem ? write_weights(d, c->stem, &c->w) : 0;
}

/* A pipeline folder: model_index.json, the components, tokenizer files. */
static int write_pipeline(const char *dir, const char *model_index, const comp *comps, int n,
                          const char *const *tokenizers) {
    int rc = write_text(dir, "model_index.json", model_index);
    for (int i = 0; i < n && rc == 0; i++) rc = write_comp(dir, &comps[i]);
    for (int i = 0; tokenizers && tokenizers[i] && rc == 0; i++) {
        char d[PATH_CAP];
        strf(d, sizeof d, "%s/%s", dir, tokenizers[i]);
        mkdirs(d);
        bool t5 = strstr(tokenizers[i], "_2") || strstr(tokenizers[i], "_3");
        rc      = write_text(d, t5 ? "spiece.model" : "vocab.json", t5 ? "" : "{}");
        if (rc == 0) rc = write_text(d, "tokenizer_config.json", "{}");
    }
    return rc;
}

static int target_path(char *target, size_t cap, const char *dir, const char *rel) {
    strf(target, cap, "%s%s%s", dir, *rel ? "/" : "", rel);
    return 0;
}

/* A single safetensors file <dir>/<file>. */
static int single(const char *dir, const char *file, const weights_spec *w, char *target,
                  size_t cap) {
    char stem[PATH_CAP];
    strf(stem, sizeof stem, "%s", file);
    char *dot = strstr(stem, ".safetensors");
    if (dot) *dot = '\0';
    target_path(target, cap, dir, file);
    return write_weights(dir, stem, w);
}

/* ---- config.json texts ------------------------------------------------------------ */

static void json_ints(imgd_buf *b, const int32_t *v, int32_t n) {
    imgd_buf_puts(b, "[");
    for (int32_t i = 0; i < n; i++) imgd_buf_printf(b, i ? ",%d" : "%d", v[i]);
    imgd_buf_puts(b, "]");
}

/* UNet2DConditionModel / ControlNetModel config.json from the same architecture config. */
static char *unet_config(const cg_unet_cfg *c, bool controlnet) {
    imgd_buf b;
    int32_t  heads[CG_MAX_LEVELS], n = c->n_levels;
    imgd_buf_init(&b, 0);
    imgd_buf_printf(
        &b, "{\"_class_name\":\"%s\",\"_diffusers_version\":\"0.27.2\",\"act_fn\":\"silu\",",
        controlnet ? "ControlNetModel" : "UNet2DConditionModel");
    for (int32_t i = 0; i < n; i++) heads[i] = c->widths[i] >= 64 ? c->widths[i] / 64 : 1;
    imgd_buf_puts(&b, "\"attention_head_dim\":");
    if (c->heads) {
        imgd_buf_printf(&b, "%d", c->heads);
    } else {
        json_ints(&b, heads, n);
    }
    imgd_buf_puts(&b, ",\"block_out_channels\":");
    json_ints(&b, c->widths, n);
    imgd_buf_printf(&b, ",\"cross_attention_dim\":%d,\"down_block_types\":[", c->ctx);
    for (int32_t i = 0; i < n; i++) {
        imgd_buf_printf(&b, "%s\"%s\"", i ? "," : "",
                        c->depth[i] ? "CrossAttnDownBlock2D" : "DownBlock2D");
    }
    imgd_buf_puts(&b, "]");
    if (!controlnet) {
        imgd_buf_puts(&b, ",\"up_block_types\":[");
        for (int32_t i = n - 1; i >= 0; i--) {
            imgd_buf_printf(&b, "%s\"%s\"", i < n - 1 ? "," : "",
                            c->depth[i] ? "CrossAttnUpBlock2D" : "UpBlock2D");
        }
        imgd_buf_printf(&b, "],\"out_channels\":%d,\"sample_size\":%d", c->out_ch,
                        c->adm ? 128 : 64);
    } else {
        imgd_buf_puts(&b, ",\"conditioning_embedding_out_channels\":[16,32,96,256],"
                          "\"controlnet_conditioning_channel_order\":\"rgb\"");
    }
    imgd_buf_printf(&b,
                    ",\"in_channels\":%d,\"layers_per_block\":%d,\"norm_num_groups\":%d,"
                    "\"use_linear_projection\":%s,\"transformer_layers_per_block\":",
                    c->in_ch, c->nrb, c->widths[0] >= 64 ? 32 : c->widths[0] / 2,
                    c->linear_proj ? "true" : "false");
    json_ints(&b, c->depth, n);
    if (c->adm) {
        imgd_buf_printf(&b,
                        ",\"addition_embed_type\":\"text_time\",\"addition_time_embed_dim\":%d,"
                        "\"projection_class_embeddings_input_dim\":%d",
                        c->adm >= 1536 ? 256 : 8, c->adm);
    }
    if (c->encoder_hid) {
        imgd_buf_printf(&b, ",\"encoder_hid_dim\":%d,\"encoder_hid_dim_type\":\"text_proj\"",
                        c->encoder_hid);
    }
    imgd_buf_puts(&b, "}");
    return imgd_buf_take(&b);
}

static char *vae_config(const cg_vae_cfg *c, const char *scaling, const char *shift) {
    imgd_buf b;
    imgd_buf_init(&b, 0);
    imgd_buf_puts(&b, "{\"_class_name\":\"AutoencoderKL\",\"_diffusers_version\":\"0.27.2\","
                      "\"act_fn\":\"silu\",\"block_out_channels\":");
    json_ints(&b, c->widths, c->n_levels);
    imgd_buf_puts(&b, ",\"down_block_types\":[");
    for (int32_t i = 0; i < c->n_levels; i++) {
        imgd_buf_printf(&b, "%s\"DownEncoderBlock2D\"", i ? "," : "");
    }
    imgd_buf_puts(&b, "],\"up_block_types\":[");
    for (int32_t i = 0; i < c->n_levels; i++) {
        imgd_buf_printf(&b, "%s\"UpDecoderBlock2D\"", i ? "," : "");
    }
    imgd_buf_printf(&b,
                    "],\"in_channels\":%d,\"out_channels\":%d,\"latent_channels\":%d,"
                    "\"layers_per_block\":%d,\"norm_num_groups\":%d,\"sample_size\":1024,"
                    "\"scaling_factor\":%s,\"shift_factor\":%s,\"use_quant_conv\":%s,"
                    "\"use_post_quant_conv\":%s,\"force_upcast\":true}",
                    c->in_ch, c->out_ch, c->z, c->nrb, c->widths[0] >= 64 ? 32 : c->widths[0] / 2,
                    scaling, shift ? shift : "null", c->quant_conv ? "true" : "false",
                    c->quant_conv ? "true" : "false");
    return imgd_buf_take(&b);
}

static char *clip_config(const cg_te_cfg *c, bool with_projection, const char *act) {
    imgd_buf b;
    imgd_buf_init(&b, 0);
    imgd_buf_printf(&b,
                    "{\"architectures\":[\"%s\"],\"attention_dropout\":0.0,\"bos_token_id\":0,"
                    "\"eos_token_id\":2,\"hidden_act\":\"%s\",\"hidden_size\":%d,"
                    "\"intermediate_size\":%d,\"layer_norm_eps\":1e-05,"
                    "\"max_position_embeddings\":%d,\"model_type\":\"clip_text_model\","
                    "\"num_attention_heads\":%d,\"num_hidden_layers\":%d,\"pad_token_id\":1,"
                    "\"projection_dim\":%d,\"torch_dtype\":\"float16\",\"vocab_size\":%d}",
                    with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel", act,
                    c->hidden, c->mlp, c->positions, c->heads, c->layers,
                    c->proj ? c->proj : c->hidden, c->vocab);
    return imgd_buf_take(&b);
}

static const char k_t5_config[] =
    "{\"architectures\":[\"T5EncoderModel\"],\"d_ff\":10240,\"d_kv\":64,\"d_model\":4096,"
    "\"dense_act_fn\":\"gelu_new\",\"feed_forward_proj\":\"gated-gelu\",\"is_gated_act\":true,"
    "\"layer_norm_epsilon\":1e-06,\"model_type\":\"t5\",\"num_heads\":64,\"num_layers\":24,"
    "\"relative_attention_num_buckets\":32,\"torch_dtype\":\"bfloat16\",\"vocab_size\":32128}";

/* ---- architecture configs ----------------------------------------------------------- */

// clang-format off
/* cg_unet_cfg: in, out, levels, {widths}, {transformer depth}, res blocks, mid depth, context,
 * adm, encoder_hid, heads, linear proj. SD 1.x: 320·(1,2,4,4), attention at levels 0-2, 1x1
 * conv proj, CLIP-L context; SD 2.x: linear proj, OpenCLIP-H context; SDXL: 320·(1,2,4),
 * depth (0,2,10), context 2048, adm 2816; refiner: 384·(1,2,4,4), depth (0,4,4,0), bigG
 * context 1280, adm 2560; Kolors: SDXL + ChatGLM3 projection 4096 → 2048, adm 5632. */
static const cg_unet_cfg
    k_sd1            = {4, 4, 4, {320, 640, 1280, 1280}, {1, 1, 1, 0}, 2, 1, 768, 0, 0, 8, false},
    k_sd1_inpaint    = {9, 4, 4, {320, 640, 1280, 1280}, {1, 1, 1, 0}, 2, 1, 768, 0, 0, 8, false},
    k_sd1_ip2p       = {8, 4, 4, {320, 640, 1280, 1280}, {1, 1, 1, 0}, 2, 1, 768, 0, 0, 8, false},
    k_sd2            = {4, 4, 4, {320, 640, 1280, 1280}, {1, 1, 1, 0}, 2, 1, 1024, 0, 0, 0, true},
    k_sd2_inpaint    = {9, 4, 4, {320, 640, 1280, 1280}, {1, 1, 1, 0}, 2, 1, 1024, 0, 0, 0, true},
    k_sdxl           = {4, 4, 3, {320, 640, 1280}, {0, 2, 10}, 2, 10, 2048, 2816, 0, 0, true},
    k_sdxl_inpaint   = {9, 4, 3, {320, 640, 1280}, {0, 2, 10}, 2, 10, 2048, 2816, 0, 0, true},
    k_sdxl_refiner   = {4, 4, 4, {384, 768, 1536, 1536}, {0, 4, 4, 0}, 2, 4, 1280, 2560, 0, 0,
                        true},
    k_kolors         = {4, 4, 3, {320, 640, 1280}, {0, 2, 10}, 2, 10, 2048, 5632, 4096, 0, true},
    /* narrow and unusual widths with the standard topologies */
    k_sd1_narrow     = {4, 4, 4, {8, 16, 32, 32}, {1, 1, 1, 0}, 2, 1, 16, 0, 0, 8, false},
    k_sd1_wide       = {4, 4, 4, {256, 512, 1024, 1024}, {1, 1, 1, 0}, 2, 1, 768, 0, 0, 8, false},
    k_sd2_narrow     = {4, 4, 4, {32, 64, 128, 128}, {1, 1, 1, 0}, 2, 1, 24, 0, 0, 0, true},
    k_sdxl_narrow    = {4, 4, 3, {96, 192, 384}, {0, 2, 4}, 2, 4, 16, 56, 0, 0, true},
    k_refiner_narrow = {4, 4, 4, {64, 128, 256, 256}, {0, 2, 2, 0}, 2, 2, 32, 80, 0, 0, true};

/* cg_vae_cfg: in, out, latent, levels, res blocks, {widths}, quant convs, legacy attention
 * names, decoder only. */
static const cg_vae_cfg
    k_vae_sd        = {3, 3, 4, 4, 2, {128, 256, 512, 512}, true, false, false},
    k_vae_sd_legacy = {3, 3, 4, 4, 2, {128, 256, 512, 512}, true, true, false},
    k_vae_16        = {3, 3, 16, 4, 2, {128, 256, 512, 512}, false, false, false},
    k_vae_narrow    = {3, 3, 4, 4, 2, {8, 16, 32, 32}, true, false, false};

/* cg_te_cfg: layers, hidden, MLP, heads, vocab, positions, projection, position_ids. The SD
 * 2.x text_encoder keeps 23 of OpenCLIP-H's 24 layers; vision towers: ViT-H/14 (IP-Adapter
 * image encoder) and ViT-L/14 (safety checker). */
static const cg_te_cfg
    k_clip_l           = {12, 768, 3072, 12, 49408, 77, 0, true},
    k_clip_l_noids     = {12, 768, 3072, 12, 49408, 77, 0, false},
    k_clip_l_proj      = {12, 768, 3072, 12, 49408, 77, 768, false},
    k_clip_h_hf        = {23, 1024, 4096, 16, 49408, 77, 0, true},
    k_openclip_h       = {24, 1024, 4096, 16, 49408, 77, 1024, false},
    k_openclip_bigg    = {32, 1280, 5120, 20, 49408, 77, 1280, false},
    k_clip_g_proj      = {32, 1280, 5120, 20, 49408, 77, 1280, false},
    k_t5xxl            = {24, 4096, 10240, 64, 32128, 0, 0, false},
    k_clip_narrow      = {12, 16, 64, 4, 49408, 77, 0, false},
    k_clip_narrow8     = {2, 8, 32, 2, 49408, 77, 0, false},
    k_openclip_narrow8 = {2, 8, 32, 2, 49408, 77, 8, false},
    k_clip_vit_h       = {32, 1280, 5120, 16, 0, 257, 1024, false},
    k_clip_vit_l_sc    = {24, 1024, 4096, 16, 0, 257, 0, true};

/* cg_dit_cfg: hidden, depth, single depth, heads, in, out, patch, context, pooled, MLP (0 =
 * 4 × hidden), pos_embed max, MMDiT-X blocks, guidance embedding, qk-norm. FLUX.1 Fill takes
 * latent 64 + masked-image latent 64 + mask 256 (8×8 packed) = 384 inputs. */
static const cg_dit_cfg
    k_flux_dev     = {3072, 19, 38, 24, 64, 64, 1, 4096, 768, 0, 0, 0, true, false},
    k_flux_schnell = {3072, 19, 38, 24, 64, 64, 1, 4096, 768, 0, 0, 0, false, false},
    k_flux_fill    = {3072, 19, 38, 24, 384, 64, 1, 4096, 768, 0, 0, 0, true, false},
    k_sd3_medium   = {1536, 24, 0, 24, 16, 16, 2, 4096, 2048, 0, 192, 0, false, false},
    k_sd35_large   = {2432, 38, 0, 38, 16, 16, 2, 4096, 2048, 0, 192, 0, false, true},
    k_sd35_medium  = {1536, 24, 0, 24, 16, 16, 2, 4096, 2048, 0, 384, 13, false, true},
    k_pixart_sigma = {1152, 28, 0, 16, 4, 8, 2, 4096, 0, 0, 0, 0, false, false},
    k_hunyuan      = {1408, 40, 0, 16, 4, 8, 2, 2048, 1024, 6144, 0, 0, false, false},
    k_cogvideox_2b = {1920, 30, 0, 30, 16, 16, 2, 4096, 0, 0, 0, 0, false, false},
    k_wan_1_3b     = {1536, 30, 0, 12, 16, 16, 2, 4096, 0, 8960, 0, 0, false, false};
// clang-format on

/* ---- generator wrappers (gen_fn: a whole file's tensors) ---------------------------- */

#define GEN_WRAP(name, fn, T)                                                                      \
    static void name(cg_out *o, const void *c) {                                                   \
        fn(o, "", (const T *)c);                                                                   \
    }

GEN_WRAP(g_unet_ldm, cg_unet_ldm, cg_unet_cfg)
GEN_WRAP(g_unet_diffusers, cg_unet_diffusers, cg_unet_cfg)
GEN_WRAP(g_controlnet_diffusers, cg_controlnet_diffusers, cg_unet_cfg)
GEN_WRAP(g_vae_ldm, cg_vae_ldm, cg_vae_cfg)
GEN_WRAP(g_vae_diffusers, cg_vae_diffusers, cg_vae_cfg)
GEN_WRAP(g_clip_hf, cg_clip_hf, cg_te_cfg)
GEN_WRAP(g_t5, cg_t5_encoder, cg_te_cfg)
GEN_WRAP(g_flux_bfl, cg_flux_bfl, cg_dit_cfg)
GEN_WRAP(g_flux_diffusers, cg_flux_diffusers, cg_dit_cfg)
GEN_WRAP(g_sd3_diffusers, cg_sd3_diffusers, cg_dit_cfg)
GEN_WRAP(g_pixart, cg_pixart, cg_dit_cfg)
GEN_WRAP(g_hunyuan, cg_hunyuan_dit, cg_dit_cfg)
GEN_WRAP(g_cogvideox, cg_cogvideox, cg_dit_cfg)
GEN_WRAP(g_wan_original, cg_wan_original, cg_dit_cfg)
GEN_WRAP(g_wan_diffusers, cg_wan_diffusers, cg_dit_cfg)

static void g_unet_ldm_prefixed(cg_out *o, const void *c) {
    cg_unet_ldm(o, "model.diffusion_model.", c);
}

static void g_controlnet_ldm(cg_out *o, const void *c) {
    cg_controlnet_ldm(o, "control_model.", c);
}

static void g_clip_vision(cg_out *o, const void *c) {
    clip_vision(o, "", c);
}

/* LitEma copies: "model_ema." + the parameter name without its dots. */
typedef struct ema_ctx {
    const char *wrap;
    cg_out     *dst;
} ema_ctx;

static void ema_sink(cg_out *o, const char *name, const char *dtype, int32_t nd,
                     const int64_t *shape) {
    const ema_ctx *e = o->user;
    char           n[NAME_CAP];
    size_t         k = 0;
    for (const char *s = name; *s && k + 1 < sizeof n; s++) {
        if (*s != '.') n[k++] = *s;
    }
    n[k] = '\0';
    cg_tensor(e->dst, dtype, nd, shape, "%smodel_ema.%s", e->wrap, n);
}

static const char *const k_ddpm_buffers[] = {"betas",
                                             "alphas_cumprod",
                                             "alphas_cumprod_prev",
                                             "sqrt_alphas_cumprod",
                                             "sqrt_one_minus_alphas_cumprod",
                                             "log_one_minus_alphas_cumprod",
                                             "sqrt_recip_alphas_cumprod",
                                             "sqrt_recipm1_alphas_cumprod",
                                             "posterior_variance",
                                             "posterior_log_variance_clipped",
                                             "posterior_mean_coef1",
                                             "posterior_mean_coef2"};

/* An LDM (SD 1.x / 2.x) single-file checkpoint: LatentDiffusion's state dict. */
typedef struct ckpt_cfg {
    const char        *wrap; /* "" or "state_dict." (a Lightning .ckpt, flattened) */
    const cg_unet_cfg *unet;
    const cg_vae_cfg  *vae;
    const cg_te_cfg   *te;
    bool               openclip; /* SD 2.x: FrozenOpenCLIPEmbedder (cond_stage_model.model.) */
    bool               ema;      /* full EMA copy of the UNet (model_ema.*) */
} ckpt_cfg;

static void g_ckpt_ldm(cg_out *o, const void *cfg) {
    const ckpt_cfg *c = cfg;
    char            p[NAME_CAP];
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_ddpm_buffers); i++) {
        cg_tensor(o, NULL, SHAPE(1000), "%s%s", c->wrap, k_ddpm_buffers[i]);
    }
    strf(p, sizeof p, "%smodel.diffusion_model.", c->wrap);
    cg_unet_ldm(o, p, c->unet);
    strf(p, sizeof p, "%sfirst_stage_model.", c->wrap);
    cg_vae_ldm(o, p, c->vae);
    strf(p, sizeof p, "%scond_stage_model.%s", c->wrap, c->openclip ? "model." : "transformer.");
    if (c->openclip) {
        cg_openclip(o, p, c->te);
    } else {
        cg_clip_hf(o, p, c->te);
    }
    if (c->ema) {
        ema_ctx e   = {c->wrap, o};
        cg_out  ema = {.dtype = o->dtype, .dtype_1d = o->dtype_1d, .sink = ema_sink, .user = &e};
        cg_tensor(o, "F32", SCALAR, "%smodel_ema.decay", c->wrap);
        cg_tensor(o, "I32", SCALAR, "%smodel_ema.num_updates", c->wrap);
        cg_unet_ldm(&ema, "diffusion_model.", c->unet);
    }
}

/* An SGM (SDXL) single file: model.diffusion_model, first_stage_model, conditioner. */
typedef struct sgm_cfg {
    const cg_unet_cfg *unet;
    const cg_vae_cfg  *vae;
    const cg_te_cfg   *te1; /* CLIP-L (transformers names); NULL for the refiner */
    const cg_te_cfg   *te2; /* OpenCLIP bigG (open_clip names) */
} sgm_cfg;

static void g_ckpt_sgm(cg_out *o, const void *cfg) {
    const sgm_cfg *c = cfg;
    cg_unet_ldm(o, "model.diffusion_model.", c->unet);
    cg_vae_ldm(o, "first_stage_model.", c->vae);
    if (c->te1) cg_clip_hf(o, "conditioner.embedders.0.transformer.", c->te1);
    cg_openclip(o, c->te1 ? "conditioner.embedders.1.model." : "conditioner.embedders.0.model.",
                c->te2);
}

/* SD3 / SD3.5 single file: MMDiT + 16-channel VAE (+ CLIP-L/G with projections). */
typedef struct sd3_file_cfg {
    const cg_dit_cfg *dit;
    bool              clips;
} sd3_file_cfg;

static void g_ckpt_sd3(cg_out *o, const void *cfg) {
    const sd3_file_cfg *c = cfg;
    cg_mmdit_sd3(o, "model.diffusion_model.", c->dit);
    cg_vae_ldm(o, "first_stage_model.", &k_vae_16);
    if (!c->clips) return;
    cg_clip_hf(o, "text_encoders.clip_l.transformer.", &k_clip_l_proj);
    cg_clip_hf(o, "text_encoders.clip_g.transformer.", &k_clip_g_proj);
}

/* ComfyUI's FLUX.1 all-in-one fp8 checkpoint: BFL transformer in float8 e4m3 (norms and
 * biases bf16), vae.*, text_encoders.clip_l / t5xxl. */
static void g_ckpt_flux_comfy(cg_out *o, const void *cfg) {
    IMGD_UNUSED(cfg);
    o->dtype    = "F8_E4M3";
    o->dtype_1d = "BF16";
    cg_flux_bfl(o, "model.diffusion_model.", &k_flux_dev);
    o->dtype = o->dtype_1d = "BF16";
    cg_vae_ldm(o, "vae.", &k_vae_16);
    o->dtype = o->dtype_1d = "F16";
    cg_clip_hf(o, "text_encoders.clip_l.transformer.", &k_clip_l_noids);
    o->dtype    = "F8_E4M3";
    o->dtype_1d = "F16";
    cg_t5_encoder(o, "text_encoders.t5xxl.transformer.", &k_t5xxl);
}

/* Safety checker of the SD 1.x pipelines (a CLIP ViT-L vision tower + concept tables). */
static void g_safety_checker(cg_out *o, const void *cfg) {
    IMGD_UNUSED(cfg);
    clip_vision(o, "vision_model.", &k_clip_vit_l_sc);
    cg_tensor(o, NULL, SHAPE(768, 1024), "visual_projection.weight");
    cg_tensor(o, NULL, SHAPE(17, 768), "concept_embeds");
    cg_tensor(o, NULL, SHAPE(3, 768), "special_care_embeds");
    cg_tensor(o, NULL, SHAPE(17), "concept_embeds_weights");
    cg_tensor(o, NULL, SHAPE(3), "special_care_embeds_weights");
}

/* ChatGLM3-6B (Kolors' text encoder, transformers remote code names). */
static void g_chatglm3(cg_out *o, const void *cfg) {
    IMGD_UNUSED(cfg);
    int64_t h = 4096, ff = 13696, qkv = 4096 + 2 * 2 * 128;
    cg_tensor(o, NULL, SHAPE(65024, h), "transformer.embedding.word_embeddings.weight");
    cg_tensor(o, NULL, SHAPE(32), "transformer.rotary_pos_emb.inv_freq");
    for (int32_t i = 0; i < 28; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "transformer.encoder.layers.%d.", i);
        cg_norm(o, h, false, "%sinput_layernorm", b);
        cg_linear(o, h, qkv, true, "%sself_attention.query_key_value", b);
        cg_linear(o, h, h, false, "%sself_attention.dense", b);
        cg_norm(o, h, false, "%spost_attention_layernorm", b);
        cg_linear(o, h, 2 * ff, false, "%smlp.dense_h_to_4h", b);
        cg_linear(o, ff, h, false, "%smlp.dense_4h_to_h", b);
    }
    cg_norm(o, h, false, "transformer.encoder.final_layernorm");
    cg_tensor(o, NULL, SHAPE(65024, h), "transformer.output_layer.weight");
}

/* Adapter files: up to three parts (UNet / DiT, text encoder 1, text encoder 2). */
typedef struct adapter_part {
    cg_adapter_cfg a;
    gen_fn         base;
    const void    *base_cfg;
} adapter_part;

typedef struct adapter_file {
    adapter_part part[3];
} adapter_file;

static void g_adapter(cg_out *o, const void *cfg) {
    const adapter_file *f = cfg;
    for (int i = 0; i < 3 && f->part[i].base; i++) {
        cg_out src;
        cg_adapter_out(&src, o, &f->part[i].a);
        f->part[i].base(&src, f->part[i].base_cfg);
    }
}

/* Small networks as gen_fn with their fixed settings. */
#define GEN_FIXED(name, call)                                                                      \
    static void name(cg_out *o, const void *c) {                                                   \
        IMGD_UNUSED(c);                                                                            \
        call;                                                                                      \
    }

GEN_FIXED(g_t2i_original_color, t2i_original(o, 192)) /* 3 channels × 8×8 unshuffle */
GEN_FIXED(g_t2i_original_canny, t2i_original(o, 64))
GEN_FIXED(g_t2i_diffusers_sd1, t2i_diffusers(o, 192))
GEN_FIXED(g_t2i_diffusers_xl_canny, t2i_diffusers(o, 256)) /* 1 × 16×16 */
GEN_FIXED(g_t2i_diffusers_xl_depth, t2i_diffusers(o, 768)) /* 3 × 16×16 */
GEN_FIXED(g_esrgan_x4, esrgan_old(o, 23, 4))
GEN_FIXED(g_esrgan_x2, esrgan_old(o, 23, 2))
GEN_FIXED(g_realesrgan_x4plus, realesrgan(o, "params_ema.", 23, 4))
GEN_FIXED(g_realesrgan_x2plus, realesrgan(o, "params_ema.", 23, 2))
GEN_FIXED(g_realesrgan_anime6b, realesrgan(o, "params_ema.", 6, 4))
GEN_FIXED(g_swinir_x4, swinir(o, "params.", 4))
GEN_FIXED(g_compact_x4, compact(o, "params.", 32, 4))
GEN_FIXED(g_taesd_encoder, taesd_encoder(o, "", 4))
GEN_FIXED(g_taesd_decoder, taesd_decoder(o, "", 4, 1))
GEN_FIXED(g_resnet50, resnet50(o))
GEN_FIXED(g_nothing, IMGD_UNUSED(o))

/* diffusers AutoencoderTiny: EncoderTiny + DecoderTiny (no Clamp module: indices start at 0). */
static void g_taesd_diffusers(cg_out *o, const void *c) {
    IMGD_UNUSED(c);
    taesd_encoder(o, "encoder.layers.", 4);
    taesd_decoder(o, "decoder.layers.", 4, 0);
}

/* A1111 hypernetwork: {size: (k, v)} with HypernetworkModule.linear = Sequential of
 * Linear(d, 2d), Linear(2d, d) for layer_structure [1, 2, 1]. */
static void g_hypernetwork(cg_out *o, const void *c) {
    const int32_t *sizes = c; /* 0-terminated */
    for (int32_t i = 0; sizes[i]; i++) {
        for (int32_t kv = 0; kv < 2; kv++) {
            cg_linear(o, sizes[i], 2 * (int64_t)sizes[i], true, "%d.%d.linear.0", sizes[i], kv);
            cg_linear(o, 2 * (int64_t)sizes[i], sizes[i], true, "%d.%d.linear.1", sizes[i], kv);
        }
    }
}

/* Textual inversion files. */
typedef struct emb_cfg {
    const char *name;    /* tensor name */
    int32_t     vectors; /* 0 = a 1-D vector */
    int32_t     width;
    int32_t     width_g; /* SDXL: clip_g width (name unused) */
} emb_cfg;

static void g_embedding(cg_out *o, const void *cfg) {
    const emb_cfg *e = cfg;
    if (e->width_g) {
        cg_tensor(o, NULL, SHAPE(e->vectors, e->width_g), "clip_g");
        cg_tensor(o, NULL, SHAPE(e->vectors, e->width), "clip_l");
    } else if (e->vectors) {
        cg_tensor(o, NULL, SHAPE(e->vectors, e->width), "%s", e->name);
    } else {
        cg_tensor(o, NULL, SHAPE(e->width), "%s", e->name);
    }
}

/* Negatives. */
static void g_llama(cg_out *o, const void *cfg) {
    IMGD_UNUSED(cfg);
    int64_t h = 2048, kv = 256, ff = 5632;
    cg_tensor(o, NULL, SHAPE(32000, h), "model.embed_tokens.weight");
    for (int32_t i = 0; i < 22; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "model.layers.%d.", i);
        cg_norm(o, h, false, "%sinput_layernorm", b);
        cg_linear(o, h, h, false, "%sself_attn.q_proj", b);
        cg_linear(o, h, kv, false, "%sself_attn.k_proj", b);
        cg_linear(o, h, kv, false, "%sself_attn.v_proj", b);
        cg_linear(o, h, h, false, "%sself_attn.o_proj", b);
        cg_norm(o, h, false, "%spost_attention_layernorm", b);
        cg_linear(o, h, ff, false, "%smlp.gate_proj", b);
        cg_linear(o, h, ff, false, "%smlp.up_proj", b);
        cg_linear(o, ff, h, false, "%smlp.down_proj", b);
    }
    cg_norm(o, h, false, "model.norm");
    cg_tensor(o, NULL, SHAPE(32000, h), "lm_head.weight");
}

/* GPT-2 small (transformers GPT2Model: Conv1D weights are [in, out]). */
static void g_gpt2(cg_out *o, const void *cfg) {
    IMGD_UNUSED(cfg);
    int64_t h = 768;
    cg_tensor(o, NULL, SHAPE(50257, h), "wte.weight");
    cg_tensor(o, NULL, SHAPE(1024, h), "wpe.weight");
    for (int32_t i = 0; i < 12; i++) {
        char b[NAME_CAP];
        strf(b, sizeof b, "h.%d.", i);
        cg_norm(o, h, true, "%sln_1", b);
        cg_tensor(o, NULL, SHAPE(h, 3 * h), "%sattn.c_attn.weight", b);
        cg_tensor(o, NULL, SHAPE(3 * h), "%sattn.c_attn.bias", b);
        cg_tensor(o, NULL, SHAPE(h, h), "%sattn.c_proj.weight", b);
        cg_tensor(o, NULL, SHAPE(h), "%sattn.c_proj.bias", b);
        cg_norm(o, h, true, "%sln_2", b);
        cg_tensor(o, NULL, SHAPE(h, 4 * h), "%smlp.c_fc.weight", b);
        cg_tensor(o, NULL, SHAPE(4 * h), "%smlp.c_fc.bias", b);
        cg_tensor(o, NULL, SHAPE(4 * h, h), "%smlp.c_proj.weight", b);
        cg_tensor(o, NULL, SHAPE(h), "%smlp.c_proj.bias", b);
    }
    cg_norm(o, h, true, "ln_f");
}

/* IP-Adapter for SD 1.5 (h94/IP-Adapter ip-adapter_sd15): image_proj (4 tokens from a
 * 1024-wide CLIP image embedding) + to_k_ip / to_v_ip for each cross-attention processor
 * (odd processor indices: down, up, then mid, in UNet attn_processors order). */
static void g_ip_adapter_sd15(cg_out *o, const void *cfg) {
    static const int64_t w[16] = {320,  320, 640, 640, 1280, 1280, 1280, 1280,
                                  1280, 640, 640, 640, 320,  320,  320,  1280};
    IMGD_UNUSED(cfg);
    cg_linear(o, 1024, 3072, true, "image_proj.proj"); /* 4 tokens × 768 */
    cg_norm(o, 768, true, "image_proj.norm");
    for (int32_t i = 0; i < 16; i++) {
        cg_tensor(o, NULL, SHAPE(w[i], 768), "ip_adapter.%d.to_k_ip.weight", 2 * i + 1);
        cg_tensor(o, NULL, SHAPE(w[i], 768), "ip_adapter.%d.to_v_ip.weight", 2 * i + 1);
    }
}

/* diffusers < 0.21 LoRA (attention processors, pytorch_lora_weights): every attention's
 * <module>.processor.to_{q,k,v,out}_lora.{down,up}.weight, UNet only, no prefix. */
static void attnproc_sink(cg_out *o, const char *name, const char *dtype, int32_t nd,
                          const int64_t *shape) {
    static const char *const proj[] = {".to_q.weight", ".to_k.weight", ".to_v.weight",
                                       ".to_out.0.weight"};
    static const char *const lora[] = {"to_q_lora", "to_k_lora", "to_v_lora", "to_out_lora"};
    size_t                   l      = strlen(name);
    IMGD_UNUSED(dtype);
    for (int i = 0; i < 4 && nd == 2; i++) {
        size_t pl = strlen(proj[i]);
        if (l <= pl || strcmp(name + l - pl, proj[i]) != 0) continue;
        int m = (int)(l - pl);
        cg_tensor(o->dst, NULL, SHAPE(4, shape[1]), "%.*s.processor.%s.down.weight", m, name,
                  lora[i]);
        cg_tensor(o->dst, NULL, SHAPE(shape[0], 4), "%.*s.processor.%s.up.weight", m, name,
                  lora[i]);
    }
}

static void g_lora_attnprocs_sd15(cg_out *o, const void *cfg) {
    cg_out src = {.dtype = o->dtype, .sink = attnproc_sink, .dst = o};
    IMGD_UNUSED(cfg);
    cg_unet_diffusers(&src, "", &k_sd1);
}

/* ---- case configs ------------------------------------------------------------------- */

static const ckpt_cfg c_sd15_emaonly  = {"", &k_sd1, &k_vae_sd, &k_clip_l, false, false};
static const ckpt_cfg c_sd14_full_ema = {"state_dict.", &k_sd1, &k_vae_sd, &k_clip_l, false, true};
static const ckpt_cfg c_sd15_inpaint  = {"", &k_sd1_inpaint, &k_vae_sd, &k_clip_l, false, false};
static const ckpt_cfg c_sd15_ip2p     = {"", &k_sd1_ip2p, &k_vae_sd, &k_clip_l, false, true};
static const ckpt_cfg c_sd2           = {"", &k_sd2, &k_vae_sd, &k_openclip_h, true, false};
static const ckpt_cfg c_sd2_inpaint   = {"", &k_sd2_inpaint, &k_vae_sd, &k_openclip_h, true, false};
static const ckpt_cfg c_sd1_narrow    = {"",    &k_sd1_narrow, &k_vae_narrow, &k_clip_narrow,
                                         false, false};
static const ckpt_cfg c_sd1_wide      = {"", &k_sd1_wide, &k_vae_sd, &k_clip_l, false, false};
static const sgm_cfg  c_sdxl          = {&k_sdxl, &k_vae_sd, &k_clip_l, &k_openclip_bigg};
static const sgm_cfg  c_refiner       = {&k_sdxl_refiner, &k_vae_sd, NULL, &k_openclip_bigg};
static const sgm_cfg  c_sdxl_narrow   = {&k_sdxl_narrow, &k_vae_narrow, &k_clip_narrow8,
                                         &k_openclip_narrow8};
static const sd3_file_cfg c_sd3_medium  = {&k_sd3_medium, false};
static const sd3_file_cfg c_sd3_clips   = {&k_sd3_medium, true};
static const sd3_file_cfg c_sd35_large  = {&k_sd35_large, false};
static const sd3_file_cfg c_sd35_medium = {&k_sd35_medium, false};

// clang-format off
static const char *const m_pt[] = {"format", "pt", NULL};
static const char *const m_sdxl_base[] = {
    "modelspec.sai_model_spec", "1.0.0",
    "modelspec.architecture", "stable-diffusion-xl-v1-base",
    "modelspec.implementation", "sgm",
    "modelspec.title", "Stable Diffusion XL 1.0 Base", NULL};
static const char *const m_sdxl_refiner[] = {
    "modelspec.sai_model_spec", "1.0.0",
    "modelspec.architecture", "stable-diffusion-xl-v1-refiner",
    "modelspec.implementation", "sgm",
    "modelspec.title", "Stable Diffusion XL 1.0 Refiner", NULL};
static const char *const m_kohya_sd1[] = {
    "ss_network_module", "networks.lora", "ss_network_dim", "32", "ss_network_alpha", "16",
    "ss_base_model_version", "sd_v1", "ss_v2", "False",
    "ss_sd_model_name", "v1-5-pruned-emaonly.safetensors", "ss_resolution", "(512, 512)",
    "ss_output_name", "character_v1", NULL};
static const char *const m_kohya_sd2[] = {
    "ss_network_module", "networks.lora", "ss_network_dim", "16", "ss_network_alpha", "8",
    "ss_base_model_version", "sd_v2_v", "ss_v2", "True", "ss_v_parameterization", "True",
    "ss_sd_model_name", "v2-1_768-ema-pruned.safetensors", "ss_resolution", "(768, 768)", NULL};
static const char *const m_kohya_sdxl[] = {
    "ss_network_module", "networks.lora", "ss_network_dim", "16", "ss_network_alpha", "8",
    "ss_base_model_version", "sdxl_base_v1-0", "ss_v2", "False",
    "ss_sd_model_name", "sd_xl_base_1.0.safetensors", "ss_resolution", "(1024, 1024)",
    "modelspec.sai_model_spec", "1.0.0",
    "modelspec.architecture", "stable-diffusion-xl-v1-base/lora", NULL};
static const char *const m_kohya_flux[] = {
    "ss_network_module", "networks.lora_flux", "ss_network_dim", "16", "ss_network_alpha", "16",
    "ss_base_model_version", "flux1", "ss_sd_model_name", "flux1-dev.safetensors",
    "modelspec.sai_model_spec", "1.0.0", "modelspec.architecture", "flux-1-dev/lora", NULL};
static const char *const m_loha_sd1[] = {
    "ss_network_module", "lycoris.kohya", "ss_network_dim", "8", "ss_network_alpha", "4",
    "ss_network_args", "{\"conv_dim\": \"4\", \"conv_alpha\": \"1\", \"algo\": \"loha\"}",
    "ss_base_model_version", "sd_v1", "ss_v2", "False", NULL};
static const char *const m_lokr_sdxl[] = {
    "ss_network_module", "lycoris.kohya", "ss_network_dim", "16", "ss_network_alpha", "16",
    "ss_network_args", "{\"factor\": \"8\", \"algo\": \"lokr\"}",
    "ss_base_model_version", "sdxl_base_v1-0", NULL};
static const char *const m_locon_sd1[] = {
    "ss_network_module", "lycoris.kohya", "ss_network_dim", "16", "ss_network_alpha", "8",
    "ss_network_args", "{\"conv_dim\": \"8\", \"conv_alpha\": \"4\", \"algo\": \"locon\"}",
    "ss_base_model_version", "sd_v1", "ss_v2", "False", NULL};
// clang-format on

#define KOHYA(h, r, p)                                                                             \
    { .algo = "lora", .head = (h), .underscores = true, .rank = (r), .pick = (p) }
#define PEFT(h, r, p)                                                                              \
    { .algo = "lora", .head = (h), .peft = true, .rank = (r), .pick = (p) }

static const adapter_file a_kohya_sd1       = {{
          {KOHYA("lora_unet_", 32, pick_unet_attn), g_unet_diffusers, &k_sd1},
          {KOHYA("lora_te_", 32, pick_te_all), g_clip_hf, &k_clip_l},
}};
static const adapter_file a_kohya_sd1_unet  = {{
     {KOHYA("lora_unet_", 8, pick_unet_attn), g_unet_diffusers, &k_sd1},
}};
static const adapter_file a_kohya_sd2       = {{
          {KOHYA("lora_unet_", 16, pick_unet_attn), g_unet_diffusers, &k_sd2},
          {KOHYA("lora_te_", 16, pick_te_all), g_clip_hf, &k_clip_h_hf},
}};
static const adapter_file a_kohya_sd2_unet  = {{
     {KOHYA("lora_unet_", 16, pick_unet_attn), g_unet_diffusers, &k_sd2},
}};
static const adapter_file a_kohya_sdxl      = {{
         {KOHYA("lora_unet_", 16, pick_unet_attn), g_unet_ldm, &k_sdxl},
         {KOHYA("lora_te1_", 16, pick_te_all), g_clip_hf, &k_clip_l},
         {KOHYA("lora_te2_", 16, pick_te_all), g_clip_hf, &k_clip_g_proj},
}};
static const adapter_file a_kohya_sdxl_unet = {{
    {KOHYA("lora_unet_", 32, pick_unet_attn), g_unet_ldm, &k_sdxl},
}};
static const adapter_file a_kohya_flux      = {{
         {KOHYA("lora_unet_", 16, pick_flux_blocks), g_flux_bfl, &k_flux_dev},
         {KOHYA("lora_te1_", 16, pick_te_all), g_clip_hf, &k_clip_l},
}};
static const adapter_file a_kohya_flux_unet = {{
    {KOHYA("lora_unet_", 4, pick_flux_blocks), g_flux_bfl, &k_flux_dev},
}};
static const adapter_file a_peft_sd1        = {{
           {PEFT("unet.", 4, pick_unet_qkvo), g_unet_diffusers, &k_sd1},
           {PEFT("text_encoder.", 4, pick_te_attn), g_clip_hf, &k_clip_l},
}};
static const adapter_file a_peft_sdxl       = {{
          {PEFT("unet.", 8, pick_unet_qkvo), g_unet_diffusers, &k_sdxl},
          {PEFT("text_encoder.", 8, pick_te_attn), g_clip_hf, &k_clip_l},
          {PEFT("text_encoder_2.", 8, pick_te_attn), g_clip_hf, &k_clip_g_proj},
}};
static const adapter_file a_peft_flux       = {{
          {PEFT("transformer.", 16, pick_dit_attn), g_flux_diffusers, &k_flux_dev},
}};
static const adapter_file a_peft_sd3        = {{
           {PEFT("transformer.", 4, pick_dit_attn), g_sd3_diffusers, &k_sd3_medium},
}};
static const adapter_file a_loha_sd1        = {{
           {{.algo        = "loha",
             .head        = "lora_unet_",
             .underscores = true,
             .rank        = 8,
             .conv_rank   = 4,
             .pick        = pick_unet_all},
            g_unet_diffusers,
            &k_sd1},
           {{.algo = "loha", .head = "lora_te_", .underscores = true, .rank = 8, .pick = pick_te_all},
            g_clip_hf,
            &k_clip_l},
}};
static const adapter_file a_loha_sdxl       = {{
          {{.algo        = "loha",
            .head        = "lora_unet_",
            .underscores = true,
            .rank        = 8,
            .conv_rank   = 4,
            .pick        = pick_unet_all},
           g_unet_ldm,
           &k_sdxl},
}};
static const adapter_file a_lokr_sdxl       = {{
          {{.algo        = "lokr",
            .head        = "lora_unet_",
            .underscores = true,
            .rank        = 16,
            .pick        = pick_unet_attn},
           g_unet_ldm,
           &k_sdxl},
}};
static const adapter_file a_locon_sd1       = {{
          {{.algo        = "lora",
            .head        = "lora_unet_",
            .underscores = true,
            .rank        = 16,
            .conv_rank   = 8,
            .pick        = pick_unet_all},
           g_unet_diffusers,
           &k_sd1},
          {KOHYA("lora_te_", 16, pick_te_all), g_clip_hf, &k_clip_l},
}};

static const emb_cfg e_a1111_pt    = {"string_to_param.*", 8, 768, 0};
static const emb_cfg e_a1111_st    = {"emb_params", 2, 768, 0};
static const emb_cfg e_a1111_sd2   = {"emb_params", 4, 1024, 0};
static const emb_cfg e_sdxl        = {NULL, 4, 768, 1280};
static const emb_cfg e_learned_sd1 = {"<cat-toy>", 1, 768, 0};
static const emb_cfg e_learned_sd2 = {"<midjourney-style>", 0, 1024, 0};
static const int32_t h_sd1[]       = {768, 320, 640, 1280, 0};
static const int32_t h_sd2[]       = {1024, 320, 640, 1280, 0};

/* ---- config and index texts ------------------------------------------------------- */

static const char k_index_sd15[] =
    "{\"_class_name\":\"StableDiffusionPipeline\",\"_diffusers_version\":\"0.6.0\","
    "\"feature_extractor\":[\"transformers\",\"CLIPImageProcessor\"],"
    "\"safety_checker\":[\"stable_diffusion\",\"StableDiffusionSafetyChecker\"],"
    "\"scheduler\":[\"diffusers\",\"PNDMScheduler\"],"
    "\"text_encoder\":[\"transformers\",\"CLIPTextModel\"],"
    "\"tokenizer\":[\"transformers\",\"CLIPTokenizer\"],"
    "\"unet\":[\"diffusers\",\"UNet2DConditionModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";
static const char k_index_sd2[] =
    "{\"_class_name\":\"StableDiffusionPipeline\",\"_diffusers_version\":\"0.8.0\","
    "\"feature_extractor\":[\"transformers\",\"CLIPImageProcessor\"],"
    "\"requires_safety_checker\":false,\"safety_checker\":[null,null],"
    "\"scheduler\":[\"diffusers\",\"DDIMScheduler\"],"
    "\"text_encoder\":[\"transformers\",\"CLIPTextModel\"],"
    "\"tokenizer\":[\"transformers\",\"CLIPTokenizer\"],"
    "\"unet\":[\"diffusers\",\"UNet2DConditionModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";
static const char k_index_sdxl[] =
    "{\"_class_name\":\"StableDiffusionXLPipeline\",\"_diffusers_version\":\"0.19.0.dev0\","
    "\"force_zeros_for_empty_prompt\":true,\"scheduler\":[\"diffusers\",\"EulerDiscreteScheduler\"]"
    ","
    "\"text_encoder\":[\"transformers\",\"CLIPTextModel\"],"
    "\"text_encoder_2\":[\"transformers\",\"CLIPTextModelWithProjection\"],"
    "\"tokenizer\":[\"transformers\",\"CLIPTokenizer\"],"
    "\"tokenizer_2\":[\"transformers\",\"CLIPTokenizer\"],"
    "\"unet\":[\"diffusers\",\"UNet2DConditionModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";
static const char k_index_refiner[] =
    "{\"_class_name\":\"StableDiffusionXLImg2ImgPipeline\",\"_diffusers_version\":\"0.19.0.dev0\","
    "\"force_zeros_for_empty_prompt\":false,\"requires_aesthetics_score\":true,"
    "\"scheduler\":[\"diffusers\",\"EulerDiscreteScheduler\"],\"text_encoder\":[null,null],"
    "\"text_encoder_2\":[\"transformers\",\"CLIPTextModelWithProjection\"],"
    "\"tokenizer\":[null,null],\"tokenizer_2\":[\"transformers\",\"CLIPTokenizer\"],"
    "\"unet\":[\"diffusers\",\"UNet2DConditionModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";
static const char k_index_flux[] =
    "{\"_class_name\":\"FluxPipeline\",\"_diffusers_version\":\"0.30.0.dev0\","
    "\"scheduler\":[\"diffusers\",\"FlowMatchEulerDiscreteScheduler\"],"
    "\"text_encoder\":[\"transformers\",\"CLIPTextModel\"],"
    "\"text_encoder_2\":[\"transformers\",\"T5EncoderModel\"],"
    "\"tokenizer\":[\"transformers\",\"CLIPTokenizer\"],"
    "\"tokenizer_2\":[\"transformers\",\"T5TokenizerFast\"],"
    "\"transformer\":[\"diffusers\",\"FluxTransformer2DModel\"],"
    "\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";
static const char k_index_sd3[] =
    "{\"_class_name\":\"StableDiffusion3Pipeline\",\"_diffusers_version\":\"0.29.0.dev0\","
    "\"scheduler\":[\"diffusers\",\"FlowMatchEulerDiscreteScheduler\"],"
    "\"text_encoder\":[\"transformers\",\"CLIPTextModelWithProjection\"],"
    "\"text_encoder_2\":[\"transformers\",\"CLIPTextModelWithProjection\"],"
    "\"text_encoder_3\":[\"transformers\",\"T5EncoderModel\"],"
    "\"tokenizer\":[\"transformers\",\"CLIPTokenizer\"],"
    "\"tokenizer_2\":[\"transformers\",\"CLIPTokenizer\"],"
    "\"tokenizer_3\":[\"transformers\",\"T5TokenizerFast\"],"
    "\"transformer\":[\"diffusers\",\"SD3Transformer2DModel\"],"
    "\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";
static const char k_index_kolors[] =
    "{\"_class_name\":\"KolorsPipeline\",\"_diffusers_version\":\"0.30.0.dev0\","
    "\"force_zeros_for_empty_prompt\":false,\"scheduler\":[\"diffusers\","
    "\"EulerDiscreteScheduler\"],"
    "\"text_encoder\":[\"kolors\",\"ChatGLMModel\"],\"tokenizer\":[\"kolors\",\"ChatGLMTokenizer\"]"
    ","
    "\"unet\":[\"diffusers\",\"UNet2DConditionModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";
static const char k_index_pixart[] =
    "{\"_class_name\":\"PixArtSigmaPipeline\",\"_diffusers_version\":\"0.28.0.dev0\","
    "\"scheduler\":[\"diffusers\",\"DPMSolverMultistepScheduler\"],"
    "\"text_encoder\":[\"transformers\",\"T5EncoderModel\"],"
    "\"tokenizer\":[\"transformers\",\"T5Tokenizer\"],"
    "\"transformer\":[\"diffusers\",\"PixArtTransformer2DModel\"],"
    "\"vae\":[\"diffusers\",\"AutoencoderKL\"]}";

static const char k_sched_pndm[] =
    "{\"_class_name\":\"PNDMScheduler\",\"beta_end\":0.012,\"beta_schedule\":\"scaled_linear\","
    "\"beta_start\":0.00085,\"num_train_timesteps\":1000,\"set_alpha_to_one\":false,"
    "\"skip_prk_steps\":true,\"steps_offset\":1,\"clip_sample\":false}";
static const char k_sched_ddim_v[] =
    "{\"_class_name\":\"DDIMScheduler\",\"beta_end\":0.012,\"beta_schedule\":\"scaled_linear\","
    "\"beta_start\":0.00085,\"clip_sample\":false,\"num_train_timesteps\":1000,"
    "\"prediction_type\":\"v_prediction\",\"set_alpha_to_one\":false,\"steps_offset\":1}";
static const char k_sched_ddim_eps[] =
    "{\"_class_name\":\"DDIMScheduler\",\"beta_end\":0.012,\"beta_schedule\":\"scaled_linear\","
    "\"beta_start\":0.00085,\"clip_sample\":false,\"num_train_timesteps\":1000,"
    "\"prediction_type\":\"epsilon\",\"set_alpha_to_one\":false,\"steps_offset\":1}";
static const char k_sched_euler[] =
    "{\"_class_name\":\"EulerDiscreteScheduler\",\"beta_end\":0.012,"
    "\"beta_schedule\":\"scaled_linear\",\"beta_start\":0.00085,\"interpolation_type\":\"linear\","
    "\"num_train_timesteps\":1000,\"prediction_type\":\"epsilon\",\"steps_offset\":1,"
    "\"timestep_spacing\":\"leading\"}";
static const char k_sched_flow[] =
    "{\"_class_name\":\"FlowMatchEulerDiscreteScheduler\",\"num_train_timesteps\":1000,"
    "\"shift\":3.0,\"use_dynamic_shifting\":true,\"base_shift\":0.5,\"max_shift\":1.15}";
static const char k_sched_dpm[] =
    "{\"_class_name\":\"DPMSolverMultistepScheduler\",\"beta_end\":0.02,"
    "\"beta_schedule\":\"linear\",\"beta_start\":0.0001,\"num_train_timesteps\":1000,"
    "\"prediction_type\":\"epsilon\"}";
static const char k_feature_extractor[] =
    "{\"crop_size\":224,\"do_center_crop\":true,\"do_normalize\":true,\"do_resize\":true,"
    "\"feature_extractor_type\":\"CLIPFeatureExtractor\",\"resample\":3,\"size\":224}";
static const char k_safety_config[] =
    "{\"architectures\":[\"StableDiffusionSafetyChecker\"],\"model_type\":\"clip\","
    "\"projection_dim\":768,\"vision_config\":{\"hidden_size\":1024,\"intermediate_size\":4096,"
    "\"num_attention_heads\":16,\"num_hidden_layers\":24,\"patch_size\":14}}";
static const char k_chatglm_config[] =
    "{\"architectures\":[\"ChatGLMModel\"],\"model_type\":\"chatglm\",\"hidden_size\":4096,"
    "\"num_layers\":28,\"ffn_hidden_size\":13696,\"kv_channels\":128,"
    "\"multi_query_attention\":true,\"multi_query_group_num\":2,\"padded_vocab_size\":65024,"
    "\"seq_length\":32768}";

static const char k_cfg_flux_dev[] =
    "{\"_class_name\":\"FluxTransformer2DModel\",\"_diffusers_version\":\"0.30.0.dev0\","
    "\"attention_head_dim\":128,\"axes_dims_rope\":[16,56,56],\"guidance_embeds\":true,"
    "\"in_channels\":64,\"joint_attention_dim\":4096,\"num_attention_heads\":24,\"num_layers\":19,"
    "\"num_single_layers\":38,\"patch_size\":1,\"pooled_projection_dim\":768}";
static const char k_cfg_flux_schnell[] =
    "{\"_class_name\":\"FluxTransformer2DModel\",\"_diffusers_version\":\"0.30.0.dev0\","
    "\"attention_head_dim\":128,\"axes_dims_rope\":[16,56,56],\"guidance_embeds\":false,"
    "\"in_channels\":64,\"joint_attention_dim\":4096,\"num_attention_heads\":24,\"num_layers\":19,"
    "\"num_single_layers\":38,\"patch_size\":1,\"pooled_projection_dim\":768}";
static const char k_cfg_sd3[] =
    "{\"_class_name\":\"SD3Transformer2DModel\",\"_diffusers_version\":\"0.29.0.dev0\","
    "\"attention_head_dim\":64,\"caption_projection_dim\":1536,\"in_channels\":16,"
    "\"joint_attention_dim\":4096,\"num_attention_heads\":24,\"num_layers\":24,"
    "\"out_channels\":16,\"patch_size\":2,\"pooled_projection_dim\":2048,"
    "\"pos_embed_max_size\":192,\"sample_size\":128}";
static const char k_cfg_pixart[] =
    "{\"_class_name\":\"PixArtTransformer2DModel\",\"_diffusers_version\":\"0.28.0.dev0\","
    "\"activation_fn\":\"gelu-approximate\",\"attention_bias\":true,\"attention_head_dim\":72,"
    "\"caption_channels\":4096,\"cross_attention_dim\":1152,\"in_channels\":4,"
    "\"norm_type\":\"ada_norm_single\",\"num_attention_heads\":16,\"num_layers\":28,"
    "\"out_channels\":8,\"patch_size\":2,\"sample_size\":128,\"use_additional_conditions\":false}";
static const char k_cfg_hunyuan[] =
    "{\"_class_name\":\"HunyuanDiT2DModel\",\"_diffusers_version\":\"0.29.0.dev0\","
    "\"attention_head_dim\":88,\"cross_attention_dim\":1024,\"cross_attention_dim_t5\":2048,"
    "\"hidden_size\":1408,\"in_channels\":4,\"learn_sigma\":true,\"mlp_ratio\":4.3637,"
    "\"num_attention_heads\":16,\"num_layers\":40,\"patch_size\":2,"
    "\"pooled_projection_dim\":1024,\"sample_size\":128,\"text_len\":77,\"text_len_t5\":256,"
    "\"use_style_cond_and_image_meta_size\":false}";
static const char k_cfg_cogvideox[] =
    "{\"_class_name\":\"CogVideoXTransformer3DModel\",\"_diffusers_version\":\"0.31.0.dev0\","
    "\"attention_head_dim\":64,\"in_channels\":16,\"num_attention_heads\":30,\"num_layers\":30,"
    "\"out_channels\":16,\"patch_size\":2,\"sample_frames\":49,\"sample_height\":60,"
    "\"sample_width\":90,\"text_embed_dim\":4096,\"time_embed_dim\":512}";
static const char k_cfg_wan[] =
    "{\"_class_name\":\"WanTransformer3DModel\",\"_diffusers_version\":\"0.33.0.dev0\","
    "\"attention_head_dim\":128,\"cross_attn_norm\":true,\"eps\":1e-06,\"ffn_dim\":8960,"
    "\"freq_dim\":256,\"in_channels\":16,\"num_attention_heads\":12,\"num_layers\":30,"
    "\"out_channels\":16,\"patch_size\":[1,2,2],\"qk_norm\":\"rms_norm_across_heads\","
    "\"rope_max_seq_len\":1024,\"text_dim\":4096}";
static const char k_cfg_t2i_sd1[] =
    "{\"_class_name\":\"T2IAdapter\",\"_diffusers_version\":\"0.20.0\","
    "\"adapter_type\":\"full_adapter\",\"channels\":[320,640,1280,1280],\"downscale_factor\":8,"
    "\"in_channels\":3,\"num_res_blocks\":2}";
static const char k_cfg_t2i_xl_canny[] =
    "{\"_class_name\":\"T2IAdapter\",\"_diffusers_version\":\"0.20.0\","
    "\"adapter_type\":\"full_adapter_xl\",\"channels\":[320,640,1280,1280],"
    "\"downscale_factor\":16,\"in_channels\":1,\"num_res_blocks\":2}";
static const char k_cfg_t2i_xl_depth[] =
    "{\"_class_name\":\"T2IAdapter\",\"_diffusers_version\":\"0.20.0\","
    "\"adapter_type\":\"full_adapter_xl\",\"channels\":[320,640,1280,1280],"
    "\"downscale_factor\":16,\"in_channels\":3,\"num_res_blocks\":2}";
static const char k_cfg_taesd[] =
    "{\"_class_name\":\"AutoencoderTiny\",\"_diffusers_version\":\"0.20.0\",\"act_fn\":\"relu\","
    "\"decoder_block_out_channels\":[64,64,64,64],\"encoder_block_out_channels\":[64,64,64,64],"
    "\"in_channels\":3,\"latent_channels\":4,\"num_decoder_blocks\":[3,3,3,1],"
    "\"num_encoder_blocks\":[1,3,3,3],\"out_channels\":3,\"scaling_factor\":1.0,"
    "\"upsampling_scaling_factor\":2}";
static const char k_yaml_sd2_v[] =
    "model:\n"
    "  base_learning_rate: 1.0e-4\n"
    "  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"
    "  params:\n"
    "    parameterization: \"v\"\n"
    "    linear_start: 0.00085\n"
    "    linear_end: 0.0120\n"
    "    num_timesteps_cond: 1\n"
    "    log_every_t: 200\n"
    "    timesteps: 1000\n"
    "    first_stage_key: \"jpg\"\n"
    "    cond_stage_key: \"txt\"\n"
    "    image_size: 96\n"
    "    channels: 4\n"
    "    cond_stage_trainable: false\n"
    "    conditioning_key: crossattn\n"
    "    monitor: val/loss_simple_ema\n"
    "    scale_factor: 0.18215\n"
    "    use_ema: False\n"
    "    unet_config:\n"
    "      target: ldm.modules.diffusionmodules.openaimodel.UNetModel\n"
    "      params:\n"
    "        use_checkpoint: True\n"
    "        use_fp16: True\n"
    "        image_size: 32\n"
    "        in_channels: 4\n"
    "        out_channels: 4\n"
    "        model_channels: 320\n"
    "        attention_resolutions: [ 4, 2, 1 ]\n"
    "        num_res_blocks: 2\n"
    "        channel_mult: [ 1, 2, 4, 4 ]\n"
    "        num_head_channels: 64\n"
    "        use_spatial_transformer: True\n"
    "        use_linear_in_transformer: True\n"
    "        transformer_depth: 1\n"
    "        context_dim: 1024\n"
    "        legacy: False\n";

/* ---- builders ----------------------------------------------------------------------- */

/* A builder for one single-file case: <dir>/<file> from a static weights_spec. */
#define SINGLE(fn, file, ...)                                                                      \
    static int fn(const char *dir, char *t, size_t cap) {                                          \
        static const weights_spec w = {__VA_ARGS__};                                               \
        return single(dir, file, &w, t, cap);                                                      \
    }

/* A builder that calls a parameterised one. */
#define BUILD(fn, call)                                                                            \
    static int fn(const char *dir, char *t, size_t cap) {                                          \
        return call;                                                                               \
    }

/* checkpoints */
SINGLE(b_sd15_emaonly, "v1-5-pruned-emaonly.safetensors", "F32", NULL, 1, NULL, g_ckpt_ldm,
       &c_sd15_emaonly)
SINGLE(b_sd15_fp16, "v1-5-pruned-emaonly-fp16.safetensors", "F16", NULL, 1, NULL, g_ckpt_ldm,
       &c_sd15_emaonly)
SINGLE(b_sd14_full_ema, "sd-v1-4-full-ema.safetensors", "F32", NULL, 1, NULL, g_ckpt_ldm,
       &c_sd14_full_ema)
SINGLE(b_sd15_inpaint, "sd-v1-5-inpainting.safetensors", "F32", NULL, 1, NULL, g_ckpt_ldm,
       &c_sd15_inpaint)
SINGLE(b_sd15_ip2p, "instruct-pix2pix-00-22000.safetensors", "F32", NULL, 1, NULL, g_ckpt_ldm,
       &c_sd15_ip2p)
SINGLE(b_sd2_768_v, "v2-1_768-ema-pruned.safetensors", "F32", NULL, 1, NULL, g_ckpt_ldm, &c_sd2)
SINGLE(b_sd2_512_base, "v2-1_512-ema-pruned.safetensors", "F16", NULL, 1, NULL, g_ckpt_ldm, &c_sd2)
SINGLE(b_sdxl_base, "sd_xl_base_1.0.safetensors", "F16", NULL, 1, m_sdxl_base, g_ckpt_sgm, &c_sdxl)
SINGLE(b_sdxl_merge, "juggernautXL_merge.safetensors", "F16", NULL, 1, NULL, g_ckpt_sgm, &c_sdxl)
SINGLE(b_sdxl_refiner, "sd_xl_refiner_1.0.safetensors", "F16", NULL, 1, m_sdxl_refiner, g_ckpt_sgm,
       &c_refiner)
SINGLE(b_sd3_medium, "sd3_medium.safetensors", "F16", NULL, 1, NULL, g_ckpt_sd3, &c_sd3_medium)
SINGLE(b_sd3_clips, "sd3_medium_incl_clips.safetensors", "F16", NULL, 1, NULL, g_ckpt_sd3,
       &c_sd3_clips)
SINGLE(b_sd35_large, "sd3.5_large.safetensors", "BF16", NULL, 1, NULL, g_ckpt_sd3, &c_sd35_large)
SINGLE(b_flux_comfy_fp8, "flux1-dev-fp8.safetensors", "F8_E4M3", "BF16", 1, NULL, g_ckpt_flux_comfy,
       NULL)
SINGLE(b_sd1_narrow_ckpt, "sd15-narrow.safetensors", "F32", NULL, 1, NULL, g_ckpt_ldm,
       &c_sd1_narrow)
SINGLE(b_sd1_wide_ckpt, "sd1-wide-256.safetensors", "F16", NULL, 1, NULL, g_ckpt_ldm, &c_sd1_wide)
SINGLE(b_sdxl_narrow_ckpt, "sdxl-narrow.safetensors", "F32", NULL, 1, NULL, g_ckpt_sgm,
       &c_sdxl_narrow)

static int b_sd2_768_v_yaml(const char *dir, char *t, size_t cap) {
    int rc = b_sd2_768_v(dir, t, cap);
    return rc ? rc : write_text(dir, "v2-1_768-ema-pruned.yaml", k_yaml_sd2_v);
}

/* denoisers alone */
SINGLE(b_flux_dev_bfl, "flux1-dev.safetensors", "BF16", NULL, 1, NULL, g_flux_bfl, &k_flux_dev)
SINGLE(b_flux_schnell_bfl, "flux1-schnell.safetensors", "BF16", NULL, 1, NULL, g_flux_bfl,
       &k_flux_schnell)
SINGLE(b_unet_sd15_ldm, "sd15_unet.safetensors", "F16", NULL, 1, NULL, g_unet_ldm, &k_sd1)
SINGLE(b_unet_sd15_diffusers_fp16, "diffusion_pytorch_model.fp16.safetensors", "F16", NULL, 1, NULL,
       g_unet_diffusers, &k_sd1)
SINGLE(b_unet_sd2_ldm, "sd21_unet.safetensors", "F16", NULL, 1, NULL, g_unet_ldm, &k_sd2)
SINGLE(b_unet_sdxl_ldm, "sdxl_unet_only.safetensors", "F16", NULL, 1, NULL, g_unet_ldm_prefixed,
       &k_sdxl)
SINGLE(b_unet_sd1_narrow_ldm, "narrow_unet.safetensors", "F32", NULL, 1, NULL, g_unet_ldm,
       &k_sd1_narrow)
SINGLE(b_wan_original, "diffusion_pytorch_model.safetensors", "BF16", "F32", 1, NULL,
       g_wan_original, &k_wan_1_3b)

/* VAEs, text encoders */
SINGLE(b_vae_sd_ldm, "vae-ft-mse-840000-ema-pruned.safetensors", "F32", NULL, 1, NULL, g_vae_ldm,
       &k_vae_sd)
SINGLE(b_vae_flux_ldm, "ae.safetensors", "BF16", NULL, 1, NULL, g_vae_ldm, &k_vae_16)
SINGLE(b_te_clip_l, "model.safetensors", "F32", NULL, 1, m_pt, g_clip_hf, &k_clip_l)
SINGLE(b_te_t5xxl, "t5xxl_fp16.safetensors", "F16", NULL, 1, NULL, g_t5, &k_t5xxl)

/* adapters */
SINGLE(b_lora_kohya_sd1, "character_v1.safetensors", "F16", NULL, 1, m_kohya_sd1, g_adapter,
       &a_kohya_sd1)
SINGLE(b_lora_kohya_sd1_nometa, "style_unet_only.safetensors", "F16", NULL, 1, NULL, g_adapter,
       &a_kohya_sd1_unet)
SINGLE(b_lora_kohya_sd2, "sd21_768_lora.safetensors", "F16", NULL, 1, m_kohya_sd2, g_adapter,
       &a_kohya_sd2)
SINGLE(b_lora_kohya_sd2_nometa, "sd21_lora_nometa.safetensors", "F16", NULL, 1, NULL, g_adapter,
       &a_kohya_sd2_unet)
SINGLE(b_lora_kohya_sdxl, "sdxl_character.safetensors", "F16", NULL, 1, m_kohya_sdxl, g_adapter,
       &a_kohya_sdxl)
SINGLE(b_lora_kohya_sdxl_nometa, "sdxl_unet_lora.safetensors", "F16", NULL, 1, NULL, g_adapter,
       &a_kohya_sdxl_unet)
SINGLE(b_lora_kohya_flux, "flux_character.safetensors", "BF16", NULL, 1, m_kohya_flux, g_adapter,
       &a_kohya_flux)
SINGLE(b_lora_kohya_flux_nometa, "flux_unet_lora.safetensors", "BF16", NULL, 1, NULL, g_adapter,
       &a_kohya_flux_unet)
SINGLE(b_lora_peft_sd1, "pytorch_lora_weights.safetensors", "F32", NULL, 1, m_pt, g_adapter,
       &a_peft_sd1)
SINGLE(b_lora_peft_sdxl, "pytorch_lora_weights.safetensors", "F32", NULL, 1, m_pt, g_adapter,
       &a_peft_sdxl)
SINGLE(b_lora_peft_flux, "pytorch_lora_weights.safetensors", "BF16", NULL, 1, m_pt, g_adapter,
       &a_peft_flux)
SINGLE(b_lora_peft_sd3, "pytorch_lora_weights.safetensors", "F16", NULL, 1, m_pt, g_adapter,
       &a_peft_sd3)
SINGLE(b_loha_sd1, "loha_style.safetensors", "F16", NULL, 1, m_loha_sd1, g_adapter, &a_loha_sd1)
SINGLE(b_loha_sdxl_nometa, "loha_sdxl.safetensors", "F16", NULL, 1, NULL, g_adapter, &a_loha_sdxl)
SINGLE(b_lokr_sdxl, "lokr_sdxl.safetensors", "F16", NULL, 1, m_lokr_sdxl, g_adapter, &a_lokr_sdxl)
SINGLE(b_locon_sd1, "locon_sd15.safetensors", "F16", NULL, 1, m_locon_sd1, g_adapter, &a_locon_sd1)
SINGLE(b_emb_a1111_pt, "bad_hands_v2.safetensors", "F32", NULL, 1, NULL, g_embedding, &e_a1111_pt)
SINGLE(b_emb_a1111_st, "easynegative.safetensors", "F32", NULL, 1, NULL, g_embedding, &e_a1111_st)
SINGLE(b_emb_a1111_sd2, "sd21_negative.safetensors", "F32", NULL, 1, NULL, g_embedding,
       &e_a1111_sd2)
SINGLE(b_emb_sdxl, "sdxl_negative.safetensors", "F32", NULL, 1, NULL, g_embedding, &e_sdxl)
SINGLE(b_emb_learned_sd1, "learned_embeds.safetensors", "F32", NULL, 1, NULL, g_embedding,
       &e_learned_sd1)
SINGLE(b_emb_learned_sd2, "learned_embeds.safetensors", "F32", NULL, 1, NULL, g_embedding,
       &e_learned_sd2)
SINGLE(b_hyper_sd1, "anime_hn.safetensors", "F32", NULL, 1, NULL, g_hypernetwork, h_sd1)
SINGLE(b_hyper_sd2, "sd21_hn.safetensors", "F32", NULL, 1, NULL, g_hypernetwork, h_sd2)
SINGLE(b_cn_sd15_ldm, "control_v11p_sd15_canny.safetensors", "F32", NULL, 1, NULL, g_controlnet_ldm,
       &k_sd1)
SINGLE(b_cn_sd21_ldm, "controlnet_sd21_depth.safetensors", "F16", NULL, 1, NULL, g_controlnet_ldm,
       &k_sd2)
SINGLE(b_t2i_sd15_color, "t2iadapter_color_sd14v1.safetensors", "F32", NULL, 1, NULL,
       g_t2i_original_color, NULL)
SINGLE(b_t2i_sd15_canny, "t2iadapter_canny_sd15v2.safetensors", "F32", NULL, 1, NULL,
       g_t2i_original_canny, NULL)

/* upscalers, TAESD */
SINGLE(b_esrgan_x4, "4x-UltraSharp.safetensors", "F32", NULL, 1, NULL, g_esrgan_x4, NULL)
SINGLE(b_esrgan_x2, "2x-ESRGAN.safetensors", "F32", NULL, 1, NULL, g_esrgan_x2, NULL)
SINGLE(b_realesrgan_x4, "RealESRGAN_x4plus.safetensors", "F32", NULL, 1, NULL, g_realesrgan_x4plus,
       NULL)
SINGLE(b_realesrgan_x2, "RealESRGAN_x2plus.safetensors", "F32", NULL, 1, NULL, g_realesrgan_x2plus,
       NULL)
SINGLE(b_realesrgan_anime, "RealESRGAN_x4plus_anime_6B.safetensors", "F32", NULL, 1, NULL,
       g_realesrgan_anime6b, NULL)
SINGLE(b_swinir_x4, "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.safetensors", "F32", NULL, 1, NULL,
       g_swinir_x4, NULL)
SINGLE(b_compact_x4, "realesr-general-x4v3.safetensors", "F32", NULL, 1, NULL, g_compact_x4, NULL)
SINGLE(b_taesd_encoder, "taesd_encoder.safetensors", "F32", NULL, 1, NULL, g_taesd_encoder, NULL)
SINGLE(b_taesd_decoder, "taesd_decoder.safetensors", "F32", NULL, 1, NULL, g_taesd_decoder, NULL)

SINGLE(b_sd2_inpaint, "512-inpainting-ema.safetensors", "F32", NULL, 1, NULL, g_ckpt_ldm,
       &c_sd2_inpaint)
SINGLE(b_sd35_medium, "sd3.5_medium.safetensors", "F16", NULL, 1, NULL, g_ckpt_sd3, &c_sd35_medium)
SINGLE(b_flux_fill_bfl, "flux1-fill-dev.safetensors", "BF16", NULL, 1, NULL, g_flux_bfl,
       &k_flux_fill)
SINGLE(b_lora_attnprocs_sd15, "pytorch_lora_weights.safetensors", "F32", NULL, 1, NULL,
       g_lora_attnprocs_sd15, NULL)
SINGLE(b_neg_ip_adapter, "ip-adapter_sd15.safetensors", "F16", NULL, 1, NULL, g_ip_adapter_sd15,
       NULL)

/* negatives */
SINGLE(b_neg_llama, "model.safetensors", "BF16", NULL, 1, m_pt, g_llama, NULL)
SINGLE(b_neg_gpt2, "model.safetensors", "F32", NULL, 1, m_pt, g_gpt2, NULL)
SINGLE(b_neg_resnet50, "resnet50-0676ba61.safetensors", "F32", NULL, 1, NULL, g_resnet50, NULL)
SINGLE(b_neg_clip_vision, "model.safetensors", "F16", NULL, 1, m_pt, g_clip_vision, &k_clip_vit_h)
SINGLE(b_neg_empty, "empty.safetensors", "F32", NULL, 1, NULL, g_nothing, NULL)
SINGLE(b_neg_metadata_only, "placeholder.safetensors", "F32", NULL, 1, m_sdxl_base, g_nothing, NULL)

/* Component folders (config.json + weights), built with configs from the same cfg. */
#define WS(dt, n, g, c)                                                                            \
    { dt, NULL, n, m_pt, g, c }

static int comp_folder(const char *dir, const comp *c, char *t, size_t cap) {
    target_path(t, cap, dir, "");
    return write_comp(dir, c);
}

static int unet_folder(const char *dir, char *t, size_t cap, const cg_unet_cfg *u, const char *stem,
                       const char *dtype, bool controlnet) {
    char *cfg = unet_config(u, controlnet);
    comp  c   = {"", NULL, cfg, stem,
                 WS(dtype, 1, controlnet ? g_controlnet_diffusers : g_unet_diffusers, u)};
    int   rc  = cfg ? comp_folder(dir, &c, t, cap) : -1;
    imgd_free(cfg);
    return rc;
}

BUILD(b_unet_sd2_folder, unet_folder(dir, t, cap, &k_sd2, "diffusion_pytorch_model", "F32", false))
BUILD(b_unet_sdxl_folder,
      unet_folder(dir, t, cap, &k_sdxl, "diffusion_pytorch_model.fp16", "F16", false))
BUILD(b_unet_sdxl_inpaint_folder,
      unet_folder(dir, t, cap, &k_sdxl_inpaint, "diffusion_pytorch_model.fp16", "F16", false))
BUILD(b_unet_refiner_folder,
      unet_folder(dir, t, cap, &k_sdxl_refiner, "diffusion_pytorch_model.fp16", "F16", false))
BUILD(b_unet_kolors_folder,
      unet_folder(dir, t, cap, &k_kolors, "diffusion_pytorch_model.fp16", "F16", false))
BUILD(b_unet_sd15_inpaint_folder,
      unet_folder(dir, t, cap, &k_sd1_inpaint, "diffusion_pytorch_model", "F32", false))
BUILD(b_unet_sd2_narrow_folder,
      unet_folder(dir, t, cap, &k_sd2_narrow, "diffusion_pytorch_model", "F32", false))
BUILD(b_unet_sdxl_narrow_folder,
      unet_folder(dir, t, cap, &k_sdxl_narrow, "diffusion_pytorch_model", "F32", false))
BUILD(b_unet_refiner_narrow_folder,
      unet_folder(dir, t, cap, &k_refiner_narrow, "diffusion_pytorch_model", "F32", false))
BUILD(b_cn_sd15_folder, unet_folder(dir, t, cap, &k_sd1, "diffusion_pytorch_model", "F32", true))
BUILD(b_cn_sdxl_folder,
      unet_folder(dir, t, cap, &k_sdxl, "diffusion_pytorch_model.fp16", "F16", true))

static int vae_folder(const char *dir, char *t, size_t cap, const cg_vae_cfg *v,
                      const char *scaling, const char *shift, const char *dtype) {
    char *cfg = vae_config(v, scaling, shift);
    comp  c   = {"", NULL, cfg, "diffusion_pytorch_model", WS(dtype, 1, g_vae_diffusers, v)};
    int   rc  = cfg ? comp_folder(dir, &c, t, cap) : -1;
    imgd_free(cfg);
    return rc;
}

BUILD(b_vae_sd_folder, vae_folder(dir, t, cap, &k_vae_sd, "0.18215", NULL, "F32"))
BUILD(b_vae_sdxl_folder, vae_folder(dir, t, cap, &k_vae_sd, "0.13025", NULL, "F32"))
BUILD(b_vae_sd3_folder, vae_folder(dir, t, cap, &k_vae_16, "1.5305", "0.0609", "F16"))
BUILD(b_vae_flux_folder, vae_folder(dir, t, cap, &k_vae_16, "0.3611", "0.1159", "BF16"))

static int te_folder(const char *dir, char *t, size_t cap, const cg_te_cfg *te, bool proj,
                     const char *act) {
    char *cfg = clip_config(te, proj, act);
    comp  c   = {"", NULL, cfg, "model", WS("F16", 1, g_clip_hf, te)};
    int   rc  = cfg ? comp_folder(dir, &c, t, cap) : -1;
    imgd_free(cfg);
    return rc;
}

BUILD(b_te_clip_h_folder, te_folder(dir, t, cap, &k_clip_h_hf, false, "gelu"))
BUILD(b_te_clip_g_folder, te_folder(dir, t, cap, &k_clip_g_proj, true, "gelu"))

static int dit_folder(const char *dir, char *t, size_t cap, const char *cfg, gen_fn g,
                      const void *dc, const char *dtype, int32_t shards) {
    comp c = {"", NULL, cfg, "diffusion_pytorch_model", WS(dtype, shards, g, dc)};
    return comp_folder(dir, &c, t, cap);
}

BUILD(b_flux_dev_folder,
      dit_folder(dir, t, cap, k_cfg_flux_dev, g_flux_diffusers, &k_flux_dev, "BF16", 3))
BUILD(b_flux_schnell_folder,
      dit_folder(dir, t, cap, k_cfg_flux_schnell, g_flux_diffusers, &k_flux_schnell, "BF16", 1))
BUILD(b_sd3_transformer_folder,
      dit_folder(dir, t, cap, k_cfg_sd3, g_sd3_diffusers, &k_sd3_medium, "F16", 1))
BUILD(b_pixart_folder, dit_folder(dir, t, cap, k_cfg_pixart, g_pixart, &k_pixart_sigma, "F16", 1))
BUILD(b_hunyuan_folder, dit_folder(dir, t, cap, k_cfg_hunyuan, g_hunyuan, &k_hunyuan, "F16", 1))
BUILD(b_cogvideox_folder,
      dit_folder(dir, t, cap, k_cfg_cogvideox, g_cogvideox, &k_cogvideox_2b, "BF16", 1))
BUILD(b_wan_diffusers_folder,
      dit_folder(dir, t, cap, k_cfg_wan, g_wan_diffusers, &k_wan_1_3b, "F32", 2))
BUILD(b_t2i_sd15_folder,
      dit_folder(dir, t, cap, k_cfg_t2i_sd1, g_t2i_diffusers_sd1, NULL, "F32", 1))
BUILD(b_t2i_sdxl_canny_folder,
      dit_folder(dir, t, cap, k_cfg_t2i_xl_canny, g_t2i_diffusers_xl_canny, NULL, "F16", 1))
BUILD(b_t2i_sdxl_depth_folder,
      dit_folder(dir, t, cap, k_cfg_t2i_xl_depth, g_t2i_diffusers_xl_depth, NULL, "F16", 1))
BUILD(b_taesd_diffusers_folder,
      dit_folder(dir, t, cap, k_cfg_taesd, g_taesd_diffusers, NULL, "F32", 1))

/* ---- pipelines ---------------------------------------------------------------------- */

static const char *const k_tok_clip[]    = {"tokenizer", NULL};
static const char *const k_tok_xl[]      = {"tokenizer", "tokenizer_2", NULL};
static const char *const k_tok_refiner[] = {"tokenizer_2", NULL};
static const char *const k_tok_sd3[]     = {"tokenizer", "tokenizer_2", "tokenizer_3", NULL};

/* Frees the heap config texts of a pipeline builder. */
static int done(int rc, char **texts, int n) {
    for (int i = 0; i < n; i++) imgd_free(texts[i]);
    return rc;
}

static int pipe_sd1(const char *dir, char *t, size_t cap, const char *dtype, const char *vstem,
                    const char *wstem) {
    char *x[3] = {unet_config(&k_sd1, false), vae_config(&k_vae_sd_legacy, "0.18215", NULL),
                  clip_config(&k_clip_l, false, "quick_gelu")};
    comp  c[]  = {
          {"unet", NULL, x[0], vstem, WS(dtype, 1, g_unet_diffusers, &k_sd1)},
          {"vae", NULL, x[1], vstem, WS(dtype, 1, g_vae_diffusers, &k_vae_sd_legacy)},
          {"text_encoder", NULL, x[2], wstem, WS(dtype, 1, g_clip_hf, &k_clip_l)},
          {"safety_checker", NULL, k_safety_config, wstem, WS(dtype, 1, g_safety_checker, NULL)},
          {"scheduler", "scheduler_config.json", k_sched_pndm, NULL, WS(NULL, 0, NULL, NULL)},
          {"feature_extractor", "preprocessor_config.json", k_feature_extractor, NULL,
           WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0] || !x[1] || !x[2]) return done(-1, x, 3);
    return done(write_pipeline(dir, k_index_sd15, c, 6, k_tok_clip), x, 3);
}

BUILD(b_pipe_sd15, pipe_sd1(dir, t, cap, "F32", "diffusion_pytorch_model", "model"))
BUILD(b_pipe_sd15_fp16, pipe_sd1(dir, t, cap, "F16", "diffusion_pytorch_model.fp16", "model.fp16"))

static int pipe_sd2(const char *dir, char *t, size_t cap, const char *sched) {
    char *x[3] = {unet_config(&k_sd2, false), vae_config(&k_vae_sd, "0.18215", NULL),
                  clip_config(&k_clip_h_hf, false, "gelu")};
    comp  c[]  = {
          {"unet", NULL, x[0], "diffusion_pytorch_model", WS("F32", 1, g_unet_diffusers, &k_sd2)},
          {"vae", NULL, x[1], "diffusion_pytorch_model", WS("F32", 1, g_vae_diffusers, &k_vae_sd)},
          {"text_encoder", NULL, x[2], "model", WS("F32", 1, g_clip_hf, &k_clip_h_hf)},
          {"scheduler", "scheduler_config.json", sched, NULL, WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0] || !x[1] || !x[2]) return done(-1, x, 3);
    return done(write_pipeline(dir, k_index_sd2, c, 4, k_tok_clip), x, 3);
}

BUILD(b_pipe_sd2_768_v, pipe_sd2(dir, t, cap, k_sched_ddim_v))
BUILD(b_pipe_sd2_base, pipe_sd2(dir, t, cap, k_sched_ddim_eps))

static int b_pipe_sdxl(const char *dir, char *t, size_t cap) {
    char *x[4] = {unet_config(&k_sdxl, false), vae_config(&k_vae_sd, "0.13025", NULL),
                  clip_config(&k_clip_l_noids, false, "quick_gelu"),
                  clip_config(&k_clip_g_proj, true, "gelu")};
    comp  c[]  = {
          {"unet", NULL, x[0], "diffusion_pytorch_model.fp16",
           WS("F16", 1, g_unet_diffusers, &k_sdxl)},
          {"vae", NULL, x[1], "diffusion_pytorch_model.fp16",
           WS("F16", 1, g_vae_diffusers, &k_vae_sd)},
          {"text_encoder", NULL, x[2], "model.fp16", WS("F16", 1, g_clip_hf, &k_clip_l_noids)},
          {"text_encoder_2", NULL, x[3], "model.fp16", WS("F16", 1, g_clip_hf, &k_clip_g_proj)},
          {"scheduler", "scheduler_config.json", k_sched_euler, NULL, WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0] || !x[1] || !x[2] || !x[3]) return done(-1, x, 4);
    return done(write_pipeline(dir, k_index_sdxl, c, 5, k_tok_xl), x, 4);
}

static int b_pipe_refiner(const char *dir, char *t, size_t cap) {
    char *x[3] = {unet_config(&k_sdxl_refiner, false), vae_config(&k_vae_sd, "0.13025", NULL),
                  clip_config(&k_clip_g_proj, true, "gelu")};
    comp  c[]  = {
          {"unet", NULL, x[0], "diffusion_pytorch_model",
           WS("F16", 1, g_unet_diffusers, &k_sdxl_refiner)},
          {"vae", NULL, x[1], "diffusion_pytorch_model", WS("F16", 1, g_vae_diffusers, &k_vae_sd)},
          {"text_encoder_2", NULL, x[2], "model", WS("F16", 1, g_clip_hf, &k_clip_g_proj)},
          {"scheduler", "scheduler_config.json", k_sched_euler, NULL, WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0] || !x[1] || !x[2]) return done(-1, x, 3);
    return done(write_pipeline(dir, k_index_refiner, c, 4, k_tok_refiner), x, 3);
}

static int pipe_flux(const char *dir, char *t, size_t cap, const char *tcfg, const cg_dit_cfg *d) {
    char *x[2] = {vae_config(&k_vae_16, "0.3611", "0.1159"),
                  clip_config(&k_clip_l_noids, false, "quick_gelu")};
    comp  c[]  = {
          {"transformer", NULL, tcfg, "diffusion_pytorch_model", WS("BF16", 3, g_flux_diffusers, d)},
          {"vae", NULL, x[0], "diffusion_pytorch_model", WS("BF16", 1, g_vae_diffusers, &k_vae_16)},
          {"text_encoder", NULL, x[1], "model", WS("BF16", 1, g_clip_hf, &k_clip_l_noids)},
          {"text_encoder_2", NULL, k_t5_config, "model", WS("BF16", 2, g_t5, &k_t5xxl)},
          {"scheduler", "scheduler_config.json", k_sched_flow, NULL, WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0] || !x[1]) return done(-1, x, 2);
    return done(write_pipeline(dir, k_index_flux, c, 5, k_tok_xl), x, 2);
}

BUILD(b_pipe_flux_dev, pipe_flux(dir, t, cap, k_cfg_flux_dev, &k_flux_dev))
BUILD(b_pipe_flux_schnell, pipe_flux(dir, t, cap, k_cfg_flux_schnell, &k_flux_schnell))

static int b_pipe_sd3(const char *dir, char *t, size_t cap) {
    char *x[3] = {vae_config(&k_vae_16, "1.5305", "0.0609"),
                  clip_config(&k_clip_l_proj, true, "quick_gelu"),
                  clip_config(&k_clip_g_proj, true, "gelu")};
    comp  c[]  = {
          {"transformer", NULL, k_cfg_sd3, "diffusion_pytorch_model",
           WS("F16", 1, g_sd3_diffusers, &k_sd3_medium)},
          {"vae", NULL, x[0], "diffusion_pytorch_model", WS("F16", 1, g_vae_diffusers, &k_vae_16)},
          {"text_encoder", NULL, x[1], "model", WS("F16", 1, g_clip_hf, &k_clip_l_proj)},
          {"text_encoder_2", NULL, x[2], "model", WS("F16", 1, g_clip_hf, &k_clip_g_proj)},
          {"text_encoder_3", NULL, k_t5_config, "model", WS("F16", 2, g_t5, &k_t5xxl)},
          {"scheduler", "scheduler_config.json", k_sched_flow, NULL, WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0] || !x[1] || !x[2]) return done(-1, x, 3);
    return done(write_pipeline(dir, k_index_sd3, c, 6, k_tok_sd3), x, 3);
}

static int b_pipe_kolors(const char *dir, char *t, size_t cap) {
    char *x[2] = {unet_config(&k_kolors, false), vae_config(&k_vae_sd, "0.13025", NULL)};
    comp  c[]  = {
          {"unet", NULL, x[0], "diffusion_pytorch_model.fp16",
           WS("F16", 1, g_unet_diffusers, &k_kolors)},
          {"vae", NULL, x[1], "diffusion_pytorch_model.fp16",
           WS("F16", 1, g_vae_diffusers, &k_vae_sd)},
          {"text_encoder", NULL, k_chatglm_config, "model", WS("F16", 2, g_chatglm3, NULL)},
          {"scheduler", "scheduler_config.json", k_sched_euler, NULL, WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0] || !x[1]) return done(-1, x, 2);
    return done(write_pipeline(dir, k_index_kolors, c, 4, k_tok_clip), x, 2);
}

static int b_pipe_pixart(const char *dir, char *t, size_t cap) {
    char *x[1] = {vae_config(&k_vae_sd, "0.13025", NULL)};
    comp  c[]  = {
          {"transformer", NULL, k_cfg_pixart, "diffusion_pytorch_model",
           WS("F16", 1, g_pixart, &k_pixart_sigma)},
          {"vae", NULL, x[0], "diffusion_pytorch_model", WS("F16", 1, g_vae_diffusers, &k_vae_sd)},
          {"text_encoder", NULL, k_t5_config, "model", WS("F32", 4, g_t5, &k_t5xxl)},
          {"scheduler", "scheduler_config.json", k_sched_dpm, NULL, WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0]) return done(-1, x, 1);
    return done(write_pipeline(dir, k_index_pixart, c, 4, k_tok_clip), x, 1);
}

static int b_pipe_sd15_narrow(const char *dir, char *t, size_t cap) {
    char *x[3] = {unet_config(&k_sd1_narrow, false), vae_config(&k_vae_narrow, "0.18215", NULL),
                  clip_config(&k_clip_narrow, false, "quick_gelu")};
    comp  c[]  = {
          {"unet", NULL, x[0], "diffusion_pytorch_model",
           WS("F32", 1, g_unet_diffusers, &k_sd1_narrow)},
          {"vae", NULL, x[1], "diffusion_pytorch_model",
           WS("F32", 1, g_vae_diffusers, &k_vae_narrow)},
          {"text_encoder", NULL, x[2], "model", WS("F32", 1, g_clip_hf, &k_clip_narrow)},
          {"scheduler", "scheduler_config.json", k_sched_pndm, NULL, WS(NULL, 0, NULL, NULL)},
    };
    target_path(t, cap, dir, "");
    if (!x[0] || !x[1] || !x[2]) return done(-1, x, 3);
    return done(write_pipeline(dir, k_index_sd15, c, 4, k_tok_clip), x, 3);
}

/* ---- the case table ------------------------------------------------------------------ */

#define LBL(k, f, v, nv, lay, pred, u)                                                             \
    { IMGD_KIND_##k, IMGD_FAMILY_##f, v, nv, lay, pred, u }
#define CASE(name, k, f, v, nv, lay, pred, fn, what)                                               \
    { name, LBL(k, f, v, nv, lay, pred, NULL), fn, what }
/* A case whose inferred UNet config is checked against the generating config u. */
#define CASEU(name, k, f, v, nv, lay, pred, u, fn, what)                                           \
    { name, LBL(k, f, v, nv, lay, pred, &(u)), fn, what }

static const cg_case k_cases[] = {
    /* single-file checkpoints (LDM / SGM / SD3 / ComfyUI) */
    CASEU("ckpt_sd15_emaonly_ldm", CHECKPOINT, SD1, NULL,
          "ema inpaint instruct_pix2pix v_prediction", "ldm", "epsilon", k_sd1, b_sd15_emaonly,
          "SD 1.5 EMA-only pruned, fp32, schedule buffers"),
    CASEU("ckpt_sd15_fp16_ldm", CHECKPOINT, SD1, "fp16", "ema", "ldm", NULL, k_sd1, b_sd15_fp16,
          "SD 1.5 pruned fp16"),
    CASEU("ckpt_sd14_full_ema_lightning", CHECKPOINT, SD1, "ema", NULL, "ldm", NULL, k_sd1,
          b_sd14_full_ema,
          "SD 1.4 full-EMA Lightning checkpoint (state_dict. wrapper, model_ema.* copies)"),
    CASEU("ckpt_sd15_inpainting_ldm", CHECKPOINT, SD1, "inpaint", "instruct_pix2pix", "ldm", NULL,
          k_sd1_inpaint, b_sd15_inpaint, "SD 1.5 inpainting: UNet input 9 channels"),
    CASEU("ckpt_sd15_instruct_pix2pix_ldm", CHECKPOINT, SD1, "instruct_pix2pix", "inpaint", "ldm",
          NULL, k_sd1_ip2p, b_sd15_ip2p, "instruct-pix2pix: UNet input 8 channels, with EMA"),
    CASEU("ckpt_sd21_768_v_no_yaml", CHECKPOINT, SD2, NULL, "v_prediction", "ldm", "ambiguous",
          k_sd2, b_sd2_768_v, "SD 2.1 768-v without a yaml: eps/v not decidable from the header"),
    CASEU("ckpt_sd21_512_base_fp16", CHECKPOINT, SD2, "fp16", "v_prediction", "ldm", "ambiguous",
          k_sd2, b_sd2_512_base, "SD 2.1 512-base fp16 (same names and shapes as 768-v)"),
    CASEU("ckpt_sd21_768_v_with_yaml", CHECKPOINT, SD2, "v_prediction", NULL, "ldm", "v_prediction",
          k_sd2, b_sd2_768_v_yaml, "SD 2.1 768-v with v2-inference-v.yaml beside it"),
    CASEU("ckpt_sd2_inpainting_ldm", CHECKPOINT, SD2, "inpaint", "instruct_pix2pix", "ldm", NULL,
          k_sd2_inpaint, b_sd2_inpaint,
          "SD 2 512-inpainting-ema: UNet input 9 channels, OpenCLIP-H"),
    CASEU("ckpt_sdxl_base_sgm", CHECKPOINT, SDXL, "fp16", "ema", "ldm", "epsilon", k_sdxl,
          b_sdxl_base, "SDXL 1.0 base SGM single file with modelspec metadata"),
    CASEU("ckpt_sdxl_merge_no_metadata", CHECKPOINT, SDXL, NULL, NULL, "ldm", NULL, k_sdxl,
          b_sdxl_merge, "SDXL community merge, no metadata"),
    CASEU("ckpt_sdxl_refiner_sgm", CHECKPOINT, SDXL_REFINER, NULL, NULL, "ldm", NULL,
          k_sdxl_refiner, b_sdxl_refiner, "SDXL 1.0 refiner SGM single file (bigG only)"),
    CASE("ckpt_sd3_medium", CHECKPOINT, SD3, NULL, NULL, NULL, "flow", b_sd3_medium,
         "SD3 medium: MMDiT + 16-channel VAE, no text encoders"),
    CASE("ckpt_sd3_medium_incl_clips", CHECKPOINT, SD3, NULL, NULL, NULL, "flow", b_sd3_clips,
         "SD3 medium with CLIP-L and CLIP-G (text_encoders.*)"),
    CASE("ckpt_sd35_large", CHECKPOINT, SD3, "bf16", NULL, NULL, "flow", b_sd35_large,
         "SD3.5 large: depth 38, qk-norm, bf16"),
    CASE("ckpt_sd35_medium", CHECKPOINT, SD3, NULL, NULL, NULL, "flow", b_sd35_medium,
         "SD3.5 medium: MMDiT-X (attn2 in 13 x blocks), pos_embed 384"),
    CASE("ckpt_flux_dev_fp8_comfy", CHECKPOINT, FLUX_DEV, "quantized", NULL, NULL, "flow",
         b_flux_comfy_fp8, "ComfyUI FLUX.1-dev fp8 all-in-one (vae., text_encoders.)"),
    CASEU("ckpt_sd15_narrow_ldm", CHECKPOINT, SD1, NULL, NULL, "ldm", NULL, k_sd1_narrow,
          b_sd1_narrow_ckpt, "SD1 topology, widths 8,16,32,32, context 16, CLIP width 16"),
    CASEU("ckpt_sd1_wide_ldm", CHECKPOINT, SD1, NULL, NULL, "ldm", NULL, k_sd1_wide,
          b_sd1_wide_ckpt, "SD1 topology with unusual widths 256,512,1024,1024"),
    CASEU("ckpt_sdxl_narrow_sgm", CHECKPOINT, SDXL, NULL, NULL, "ldm", NULL, k_sdxl_narrow,
          b_sdxl_narrow_ckpt, "SDXL topology, widths 96,192,384, context 16, adm 56"),
    /* diffusers pipeline folders */
    CASEU("pipe_sd15", CHECKPOINT, SD1, NULL, "fp16 v_prediction", "diffusers", "epsilon", k_sd1,
          b_pipe_sd15, "runwayml SD 1.5 folder (legacy VAE attention names, safety checker)"),
    CASEU("pipe_sd15_fp16_variant", CHECKPOINT, SD1, "fp16", NULL, "diffusers", NULL, k_sd1,
          b_pipe_sd15_fp16, "SD 1.5 folder with only *.fp16.safetensors variant files"),
    CASEU("pipe_sd21_768_v", CHECKPOINT, SD2, "v_prediction", NULL, "diffusers", "v_prediction",
          k_sd2, b_pipe_sd2_768_v, "SD 2.1 folder, scheduler prediction_type v_prediction"),
    CASEU("pipe_sd21_base", CHECKPOINT, SD2, NULL, "v_prediction", "diffusers", "epsilon", k_sd2,
          b_pipe_sd2_base, "SD 2.1 base folder, scheduler prediction_type epsilon"),
    CASEU("pipe_sdxl", CHECKPOINT, SDXL, NULL, NULL, "diffusers", NULL, k_sdxl, b_pipe_sdxl,
          "SDXL base folder (fp16 variant files)"),
    CASEU("pipe_sdxl_refiner", CHECKPOINT, SDXL_REFINER, NULL, NULL, "diffusers", NULL,
          k_sdxl_refiner, b_pipe_refiner, "SDXL refiner img2img folder (text_encoder_2 only)"),
    CASE("pipe_flux_dev", CHECKPOINT, FLUX_DEV, NULL, NULL, "diffusers", "flow", b_pipe_flux_dev,
         "FLUX.1-dev folder: sharded transformer and T5"),
    CASE("pipe_flux_schnell", CHECKPOINT, FLUX_SCHNELL, NULL, NULL, "diffusers", "flow",
         b_pipe_flux_schnell, "FLUX.1-schnell folder"),
    CASE("pipe_sd3", CHECKPOINT, SD3, NULL, NULL, "diffusers", "flow", b_pipe_sd3,
         "SD3 medium folder with three text encoders"),
    CASEU("pipe_kolors", CHECKPOINT, KOLORS, NULL, NULL, "diffusers", NULL, k_kolors, b_pipe_kolors,
          "Kolors folder: SDXL UNet + encoder_hid_proj, ChatGLM3 text encoder"),
    CASE("pipe_pixart_sigma", CHECKPOINT, PIXART, NULL, NULL, "diffusers", NULL, b_pipe_pixart,
         "PixArt-Sigma folder: transformer, T5 (4 shards), VAE"),
    CASEU("pipe_sd15_narrow", CHECKPOINT, SD1, NULL, NULL, "diffusers", NULL, k_sd1_narrow,
          b_pipe_sd15_narrow, "narrow SD1-topology folder (widths 8,16,32,32)"),
    /* denoisers alone */
    CASE("unet_flux_dev_bfl", UNET, FLUX_DEV, "bf16", NULL, NULL, "flow", b_flux_dev_bfl,
         "flux1-dev.safetensors (BFL names, guidance_in)"),
    CASE("unet_flux_schnell_bfl", UNET, FLUX_SCHNELL, NULL, NULL, NULL, "flow", b_flux_schnell_bfl,
         "flux1-schnell.safetensors (no guidance_in)"),
    CASE("unet_flux_fill_dev_bfl", UNET, FLUX_DEV, "inpaint", NULL, NULL, "flow", b_flux_fill_bfl,
         "FLUX.1-Fill-dev (inpainting: img_in takes 384 = 64 + 64 + 256 mask channels)"),
    CASE("unet_flux_dev_diffusers_sharded", UNET, FLUX_DEV, NULL, NULL, "diffusers", NULL,
         b_flux_dev_folder, "FLUX.1-dev transformer/ folder, 3 shards + index"),
    CASE("unet_flux_schnell_diffusers", UNET, FLUX_SCHNELL, NULL, NULL, "diffusers", NULL,
         b_flux_schnell_folder, "FLUX.1-schnell transformer/ folder"),
    CASE("unet_sd3_diffusers", UNET, SD3, NULL, NULL, "diffusers", NULL, b_sd3_transformer_folder,
         "SD3 medium transformer/ folder"),
    CASEU("unet_sd15_ldm_bare", UNET, SD1, NULL, NULL, "ldm", NULL, k_sd1, b_unet_sd15_ldm,
          "SD 1.5 UNet alone, bare LDM names"),
    CASEU("unet_sd15_diffusers_fp16", UNET, SD1, "fp16", NULL, "diffusers", NULL, k_sd1,
          b_unet_sd15_diffusers_fp16, "SD 1.5 unet/diffusion_pytorch_model.fp16.safetensors alone"),
    CASEU("unet_sd15_inpaint_diffusers", UNET, SD1, "inpaint", NULL, "diffusers", NULL,
          k_sd1_inpaint, b_unet_sd15_inpaint_folder, "SD 1.5 inpainting unet/ folder"),
    CASEU("unet_sd21_ldm_bare", UNET, SD2, NULL, NULL, "ldm", NULL, k_sd2, b_unet_sd2_ldm,
          "SD 2.1 UNet alone, bare LDM names"),
    CASEU("unet_sd21_diffusers", UNET, SD2, NULL, NULL, "diffusers", NULL, k_sd2, b_unet_sd2_folder,
          "SD 2.1 unet/ folder"),
    CASEU("unet_sdxl_ldm", UNET, SDXL, NULL, NULL, "ldm", NULL, k_sdxl, b_unet_sdxl_ldm,
          "SDXL UNet alone (model.diffusion_model.*)"),
    CASEU("unet_sdxl_diffusers", UNET, SDXL, NULL, NULL, "diffusers", NULL, k_sdxl,
          b_unet_sdxl_folder, "SDXL unet/ folder"),
    CASEU("unet_sdxl_inpaint_diffusers", UNET, SDXL, "inpaint", NULL, "diffusers", NULL,
          k_sdxl_inpaint, b_unet_sdxl_inpaint_folder,
          "SDXL inpainting 0.1 unet/ folder (9 input channels)"),
    CASEU("unet_sdxl_refiner_diffusers", UNET, SDXL_REFINER, NULL, NULL, "diffusers", NULL,
          k_sdxl_refiner, b_unet_refiner_folder, "SDXL refiner unet/ folder"),
    CASEU("unet_kolors_diffusers", UNET, KOLORS, NULL, NULL, "diffusers", NULL, k_kolors,
          b_unet_kolors_folder, "Kolors unet/ folder (encoder_hid_proj 4096 -> 2048)"),
    CASEU("unet_sd15_narrow_ldm", UNET, SD1, NULL, NULL, "ldm", NULL, k_sd1_narrow,
          b_unet_sd1_narrow_ldm, "narrow SD1 UNet (8,16,32,32, context 16), bare LDM names"),
    CASEU("unet_sd2_narrow_diffusers", UNET, SD2, NULL, NULL, "diffusers", NULL, k_sd2_narrow,
          b_unet_sd2_narrow_folder, "narrow SD2 topology (32..128, linear proj, context 24)"),
    CASEU("unet_sdxl_narrow_diffusers", UNET, SDXL, NULL, NULL, "diffusers", NULL, k_sdxl_narrow,
          b_unet_sdxl_narrow_folder, "narrow SDXL topology (96,192,384, context 16)"),
    CASEU("unet_sdxl_refiner_narrow_diffusers", UNET, SDXL_REFINER, NULL, NULL, "diffusers", NULL,
          k_refiner_narrow, b_unet_refiner_narrow_folder,
          "narrow refiner topology (64..256, 4 levels, adm 80)"),
    CASE("unet_pixart_sigma", UNET, PIXART, NULL, NULL, "diffusers", NULL, b_pixart_folder,
         "PixArt-Sigma transformer/ folder"),
    CASE("unet_hunyuan_dit", UNET, HUNYUAN_DIT, NULL, NULL, "diffusers", NULL, b_hunyuan_folder,
         "Hunyuan-DiT v1.2 transformer/ folder"),
    CASE("unet_cogvideox_2b", UNET, COGVIDEOX, NULL, NULL, "diffusers", NULL, b_cogvideox_folder,
         "CogVideoX-2b transformer/ folder"),
    CASE("unet_wan21_t2v_original", UNET, WAN, NULL, NULL, NULL, NULL, b_wan_original,
         "Wan2.1-T2V-1.3B as released (Wan-AI names)"),
    CASE("unet_wan21_t2v_diffusers", UNET, WAN, NULL, NULL, "diffusers", NULL,
         b_wan_diffusers_folder, "Wan2.1-T2V-1.3B-Diffusers transformer/ folder, 2 shards"),
    /* VAEs */
    CASE("vae_sd_ft_mse_ldm", VAE, SD1, NULL, NULL, "ldm", NULL, b_vae_sd_ldm,
         "vae-ft-mse-840000 (LDM names, no prefix)"),
    CASE("vae_sd_diffusers", VAE, SD1, NULL, NULL, "diffusers", NULL, b_vae_sd_folder,
         "sd-vae-ft-mse vae/ folder (scaling 0.18215)"),
    CASE("vae_sdxl_diffusers", VAE, SDXL, NULL, NULL, "diffusers", NULL, b_vae_sdxl_folder,
         "SDXL vae/ folder (config scaling_factor 0.13025)"),
    CASE("vae_flux_ldm", VAE, FLUX_DEV, NULL, NULL, "ldm", NULL, b_vae_flux_ldm,
         "FLUX.1 ae.safetensors (16 latent channels, no quant convs)"),
    CASE("vae_flux_diffusers", VAE, FLUX_DEV, NULL, NULL, "diffusers", NULL, b_vae_flux_folder,
         "FLUX.1 vae/ folder (scaling 0.3611, shift 0.1159)"),
    CASE("vae_sd3_diffusers", VAE, SD3, NULL, NULL, "diffusers", NULL, b_vae_sd3_folder,
         "SD3 vae/ folder (scaling 1.5305, shift 0.0609)"),
    /* text encoders */
    CASE("te_clip_l_transformers", TEXT_ENCODER, SD1, NULL, NULL, NULL, NULL, b_te_clip_l,
         "CLIP ViT-L/14 text model (SD 1.x text_encoder)"),
    CASE("te_openclip_h_transformers", TEXT_ENCODER, SD2, NULL, NULL, NULL, NULL,
         b_te_clip_h_folder, "SD 2.1 text_encoder/ folder (OpenCLIP-H, 23 layers)"),
    CASE("te_clip_bigg_with_projection", TEXT_ENCODER, SDXL, NULL, NULL, NULL, NULL,
         b_te_clip_g_folder, "SDXL text_encoder_2/ folder (bigG, text_projection)"),
    CASE("te_t5xxl_fp16", TEXT_ENCODER, FLUX_DEV, NULL, NULL, NULL, NULL, b_te_t5xxl,
         "t5xxl_fp16.safetensors (FLUX text encoder 2)"),
    /* LoRA */
    CASE("lora_kohya_sd15", LORA, SD1, NULL, NULL, "kohya", NULL, b_lora_kohya_sd1,
         "kohya LoRA rank 32, UNet + TE, ss_* metadata"),
    CASE("lora_kohya_sd15_no_metadata", LORA, SD1, NULL, NULL, "kohya", NULL,
         b_lora_kohya_sd1_nometa, "kohya LoRA, UNet only, no metadata (family from shapes)"),
    CASE("lora_kohya_sd21_v", LORA, SD2, NULL, NULL, "kohya", NULL, b_lora_kohya_sd2,
         "kohya LoRA for SD 2.1 768-v (sd_v2_v)"),
    CASE("lora_kohya_sd21_no_metadata", LORA, SD2, NULL, NULL, "kohya", NULL,
         b_lora_kohya_sd2_nometa, "kohya SD 2.1 LoRA, UNet only, no metadata"),
    CASE("lora_kohya_sdxl", LORA, SDXL, NULL, NULL, "kohya", NULL, b_lora_kohya_sdxl,
         "kohya SDXL LoRA (LDM names, te1 + te2)"),
    CASE("lora_kohya_sdxl_no_metadata", LORA, SDXL, NULL, NULL, "kohya", NULL,
         b_lora_kohya_sdxl_nometa, "kohya SDXL LoRA, UNet only, no metadata"),
    CASE("lora_kohya_flux", LORA, FLUX_DEV, NULL, NULL, "kohya", NULL, b_lora_kohya_flux,
         "sd-scripts FLUX LoRA (double/single blocks + te1)"),
    CASE("lora_kohya_flux_no_metadata", LORA, FLUX_DEV, NULL, NULL, "kohya", NULL,
         b_lora_kohya_flux_nometa, "sd-scripts FLUX LoRA, no metadata"),
    CASE("lora_peft_sd15", LORA, SD1, NULL, NULL, "peft", NULL, b_lora_peft_sd1,
         "diffusers/PEFT SD 1.5 LoRA (unet. + text_encoder., lora_A/B)"),
    CASE("lora_peft_sdxl", LORA, SDXL, NULL, NULL, "peft", NULL, b_lora_peft_sdxl,
         "diffusers/PEFT SDXL LoRA (unet., text_encoder., text_encoder_2.)"),
    CASE("lora_peft_flux", LORA, FLUX_DEV, NULL, NULL, "peft", NULL, b_lora_peft_flux,
         "diffusers FLUX dreambooth LoRA (transformer.*)"),
    CASE("lora_diffusers_attnprocs_sd15", LORA, SD1, NULL, NULL, NULL, NULL, b_lora_attnprocs_sd15,
         "diffusers < 0.21 attention-processor LoRA (processor.to_q_lora.down)"),
    CASE("lora_peft_sd3", LORA, SD3, NULL, NULL, "peft", NULL, b_lora_peft_sd3,
         "diffusers SD3 dreambooth LoRA (joint attention)"),
    /* LyCORIS */
    CASE("lycoris_loha_sd15", LYCORIS, SD1, NULL, NULL, NULL, NULL, b_loha_sd1,
         "LoHa dim 8, conv dim 4, UNet + TE"),
    CASE("lycoris_loha_sdxl_no_metadata", LYCORIS, SDXL, NULL, NULL, NULL, NULL, b_loha_sdxl_nometa,
         "LoHa on the SDXL UNet (LDM names), no metadata"),
    CASE("lycoris_lokr_sdxl", LYCORIS, SDXL, NULL, NULL, NULL, NULL, b_lokr_sdxl,
         "LoKr on SDXL attention (lokr_w1 + lokr_w2_a/b)"),
    CASE("lycoris_locon_sd15", LYCORIS, SD1, NULL, NULL, NULL, NULL, b_locon_sd1,
         "LoCon: kohya names on resnet 3x3 convs (4-D lora_down)"),
    /* embeddings */
    CASE("emb_a1111_pt_sd15", EMBEDDING, SD1, NULL, NULL, "a1111", NULL, b_emb_a1111_pt,
         "A1111 .pt embedding flattened (string_to_param.* 8x768)"),
    CASE("emb_a1111_safetensors_sd15", EMBEDDING, SD1, NULL, NULL, "a1111", NULL, b_emb_a1111_st,
         "A1111 safetensors embedding (emb_params 2x768)"),
    CASE("emb_a1111_sd21", EMBEDDING, SD2, NULL, NULL, "a1111", NULL, b_emb_a1111_sd2,
         "SD 2.x embedding (emb_params 4x1024)"),
    CASE("emb_sdxl_clip_l_g", EMBEDDING, SDXL, NULL, NULL, NULL, NULL, b_emb_sdxl,
         "SDXL embedding (clip_l 4x768 + clip_g 4x1280)"),
    CASE("emb_diffusers_learned_embeds_sd15", EMBEDDING, SD1, NULL, NULL, NULL, NULL,
         b_emb_learned_sd1, "diffusers learned_embeds.safetensors ('<cat-toy>' 1x768)"),
    CASE("emb_diffusers_learned_embeds_sd21", EMBEDDING, SD2, NULL, NULL, NULL, NULL,
         b_emb_learned_sd2, "sd-concepts learned_embeds, one 1-D 1024 vector"),
    /* hypernetworks */
    CASE("hypernetwork_a1111_sd15", HYPERNETWORK, SD1, NULL, NULL, NULL, NULL, b_hyper_sd1,
         "A1111 hypernetwork, sizes 768/320/640/1280, structure 1,2,1"),
    CASE("hypernetwork_a1111_sd21", HYPERNETWORK, SD2, NULL, NULL, NULL, NULL, b_hyper_sd2,
         "A1111 hypernetwork for SD 2.x, sizes 1024/320/640/1280"),
    /* ControlNet, T2I-adapter */
    CASE("controlnet_sd15_ldm", CONTROLNET, SD1, NULL, NULL, "ldm", NULL, b_cn_sd15_ldm,
         "ControlNet 1.1 canny (control_model.*, cldm names)"),
    CASE("controlnet_sd21_ldm", CONTROLNET, SD2, NULL, NULL, "ldm", NULL, b_cn_sd21_ldm,
         "ControlNet for SD 2.1 (cldm names, linear proj, context 1024)"),
    CASE("controlnet_sd15_diffusers", CONTROLNET, SD1, NULL, NULL, "diffusers", NULL,
         b_cn_sd15_folder, "diffusers ControlNetModel folder for SD 1.5"),
    CASE("controlnet_sdxl_diffusers", CONTROLNET, SDXL, NULL, NULL, "diffusers", NULL,
         b_cn_sdxl_folder, "diffusers controlnet-canny-sdxl-1.0 folder"),
    CASE("t2i_adapter_sd14_color_original", T2I_ADAPTER, SD1, NULL, NULL, NULL, NULL,
         b_t2i_sd15_color, "TencentARC original adapter, RGB input (conv_in 192)"),
    CASE("t2i_adapter_sd15_canny_original", T2I_ADAPTER, SD1, NULL, NULL, NULL, NULL,
         b_t2i_sd15_canny, "TencentARC original adapter, 1-channel input (conv_in 64)"),
    CASE("t2i_adapter_sd15_diffusers", T2I_ADAPTER, SD1, NULL, NULL, NULL, NULL, b_t2i_sd15_folder,
         "diffusers T2IAdapter full_adapter folder"),
    CASE("t2i_adapter_sdxl_canny_diffusers", T2I_ADAPTER, SDXL, NULL, NULL, NULL, NULL,
         b_t2i_sdxl_canny_folder, "diffusers full_adapter_xl, 1 channel (conv_in 256)"),
    CASE("t2i_adapter_sdxl_depth_diffusers", T2I_ADAPTER, SDXL, NULL, NULL, NULL, NULL,
         b_t2i_sdxl_depth_folder, "diffusers full_adapter_xl, 3 channels (conv_in 768)"),
    /* upscalers */
    CASE("upscaler_esrgan_old_x4", UPSCALER, NONE, NULL, NULL, NULL, NULL, b_esrgan_x4,
         "original ESRGAN arch x4 (model.N, RDB names)"),
    CASE("upscaler_esrgan_old_x2", UPSCALER, NONE, NULL, NULL, NULL, NULL, b_esrgan_x2,
         "original ESRGAN arch x2"),
    CASE("upscaler_realesrgan_x4plus", UPSCALER, NONE, NULL, NULL, NULL, NULL, b_realesrgan_x4,
         "Real-ESRGAN x4plus (params_ema., BasicSR RRDBNet)"),
    CASE("upscaler_realesrgan_x2plus", UPSCALER, NONE, NULL, NULL, NULL, NULL, b_realesrgan_x2,
         "Real-ESRGAN x2plus (pixel-unshuffled input, conv_first 12)"),
    CASE("upscaler_realesrgan_anime_6b", UPSCALER, NONE, NULL, NULL, NULL, NULL, b_realesrgan_anime,
         "Real-ESRGAN x4plus anime 6B"),
    CASE("upscaler_swinir_x4", UPSCALER, NONE, NULL, NULL, NULL, NULL, b_swinir_x4,
         "SwinIR-M classical x4 (params.)"),
    CASE("upscaler_realesrgan_compact_x4", UPSCALER, NONE, NULL, NULL, NULL, NULL, b_compact_x4,
         "realesr-general-x4v3 SRVGGNetCompact (params.)"),
    /* TAESD */
    CASE("taesd_encoder", TAESD, SD1, NULL, NULL, NULL, NULL, b_taesd_encoder,
         "taesd_encoder.pth (Sequential indices)"),
    CASE("taesd_decoder", TAESD, SD1, NULL, NULL, NULL, NULL, b_taesd_decoder,
         "taesd_decoder.pth (Clamp at 0, conv at 1)"),
    CASE("taesd_diffusers", TAESD, SD1, NULL, NULL, NULL, NULL, b_taesd_diffusers_folder,
         "diffusers AutoencoderTiny folder (encoder.layers / decoder.layers)"),
    /* negatives */
    CASE("negative_llm_llama", UNKNOWN, UNKNOWN, NULL, NULL, NULL, NULL, b_neg_llama,
         "TinyLlama-1.1B decoder-only LLM"),
    CASE("negative_llm_gpt2", UNKNOWN, UNKNOWN, NULL, NULL, NULL, NULL, b_neg_gpt2, "GPT-2 small"),
    CASE("negative_cnn_resnet50", UNKNOWN, UNKNOWN, NULL, NULL, NULL, NULL, b_neg_resnet50,
         "torchvision ResNet-50 classifier"),
    CASE("negative_clip_vision_encoder", UNKNOWN, UNKNOWN, NULL, NULL, NULL, NULL,
         b_neg_clip_vision, "CLIP ViT-H image encoder (IP-Adapter image_encoder)"),
    CASE("negative_ip_adapter_sd15", UNKNOWN, UNKNOWN, NULL, NULL, NULL, NULL, b_neg_ip_adapter,
         "IP-Adapter (image_proj + to_k_ip/to_v_ip): not a kind detection knows"),
    CASE("negative_empty", UNKNOWN, UNKNOWN, NULL, NULL, NULL, NULL, b_neg_empty,
         "valid safetensors with header {}"),
    CASE("negative_metadata_only", UNKNOWN, UNKNOWN, NULL, NULL, NULL, NULL, b_neg_metadata_only,
         "metadata claiming SDXL, no tensors"),
};

size_t cg_case_count(void) {
    return IMGD_ARRAY_LEN(k_cases);
}

const cg_case *cg_case_at(size_t i) {
    return i < IMGD_ARRAY_LEN(k_cases) ? &k_cases[i] : NULL;
}
