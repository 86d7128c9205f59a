/* Adapters and small networks: LoRA / LyCORIS, textual-inversion embeddings,
 * hypernetworks, ControlNet, T2I-adapters, upscalers and TAESD. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect/detect.h"
#include "formats/dtype.h"

#define T(...) imgd_view_get(v, __VA_ARGS__)

static int32_t dim(const imgd_wtensor *t, int i) {
    return (t && i < t->n_dims) ? (int32_t)t->shape[i] : 0;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && memcmp(s + a - b, suf, b) == 0;
}

/* ---- family from widths ----------------------------------------------------------- */

/* Base family from a cross-attention (context) width. */
static imgd_family family_of_context(int32_t ctx) {
    switch (ctx) {
    case 768: return IMGD_FAMILY_SD1;
    case 1024: return IMGD_FAMILY_SD2;
    case 2048: return IMGD_FAMILY_SDXL;
    case 1280: return IMGD_FAMILY_SDXL_REFINER;
    default: return IMGD_FAMILY_UNKNOWN;
    }
}

/* Base family from kohya / modelspec metadata; UNKNOWN when absent. */
static imgd_family family_of_metadata(const imgd_weights *w, imgd_model_info *mi) {
    const char *b   = imgd_weights_meta_find(w, "ss_base_model_version");
    const char *a   = imgd_weights_meta_find(w, "modelspec.architecture");
    imgd_family f   = IMGD_FAMILY_UNKNOWN;
    const char *src = b ? b : a;
    if (!src) return f;
    if (strstr(src, "sdxl") || strstr(src, "stable-diffusion-xl")) {
        f = strstr(src, "refiner") ? IMGD_FAMILY_SDXL_REFINER : IMGD_FAMILY_SDXL;
    } else if (strstr(src, "flux")) {
        f = strstr(src, "schnell") ? IMGD_FAMILY_FLUX_SCHNELL : IMGD_FAMILY_FLUX_DEV;
    } else if (strstr(src, "sd3") || strstr(src, "stable-diffusion-3")) {
        f = IMGD_FAMILY_SD3;
    } else if (strstr(src, "sd_v2") || strstr(src, "stable-diffusion-v2")) {
        f = IMGD_FAMILY_SD2;
    } else if (strstr(src, "sd_v1") || strstr(src, "stable-diffusion-v1")) {
        f = IMGD_FAMILY_SD1;
    }
    if (f != IMGD_FAMILY_UNKNOWN)
        imgd_detect_note(mi, "base family from metadata %s = '%s'",
                         b ? "ss_base_model_version" : "modelspec.architecture", src);
    return f;
}

/* ---- LoRA / LyCORIS --------------------------------------------------------------- */

typedef struct lora_scan {
    int32_t modules, unet, te, te2, conv, rank_hist_r[8], rank_hist_n[8];
    int32_t cross_dim, te_width, te2_width;
    int32_t proj_in_dims; /* n_dims of a proj_in down weight: 4 = conv (SD1), 2 = linear */
    bool    kohya, peft, diffusers_old, flux_names, sd3_names, loha, lokr, full, ia3;
    bool    level0_attn; /* touches attention at the first UNet level (SD1/SD2, not SDXL) */
} lora_scan;

static void rank_add(lora_scan *s, int32_t r) {
    for (int i = 0; i < 8; i++) {
        if (s->rank_hist_n[i] == 0 || s->rank_hist_r[i] == r) {
            s->rank_hist_r[i] = r;
            s->rank_hist_n[i]++;
            return;
        }
    }
}

static int32_t rank_mode(const lora_scan *s) {
    int best = 0;
    for (int i = 1; i < 8; i++)
        if (s->rank_hist_n[i] > s->rank_hist_n[best]) best = i;
    return s->rank_hist_r[best];
}

/* Classifies one tensor name of a LoRA-like file. Returns true when it is a LoRA part. */
static bool lora_part(const imgd_wtensor *t, lora_scan *s) {
    const char *n    = t->name;
    bool        down = ends_with(n, ".lora_down.weight") || ends_with(n, ".lora_A.weight") ||
                ends_with(n, ".lora.down.weight") || ends_with(n, "_lora.down.weight");
    bool part = down || ends_with(n, ".lora_up.weight") || ends_with(n, ".lora_B.weight") ||
                ends_with(n, ".lora.up.weight") || ends_with(n, "_lora.up.weight") ||
                ends_with(n, ".alpha") || ends_with(n, ".lora_mid.weight");
    if (strstr(n, ".hada_w1_a") || strstr(n, ".hada_w1_b") || strstr(n, ".hada_w2_") ||
        strstr(n, ".hada_t1")) {
        s->loha = true;
        if (ends_with(n, ".hada_w1_b")) {
            down = true;
        }
        part = true;
    }
    if (strstr(n, ".lokr_w1") || strstr(n, ".lokr_w2") || strstr(n, ".lokr_t2")) {
        s->lokr = true;
        part    = true;
    }
    if (ends_with(n, ".diff") || ends_with(n, ".diff_b")) {
        s->full = true;
        part    = true;
    }
    if (!part) return false;
    if (strncmp(n, "lora_", 5) == 0) s->kohya = true;
    if (strstr(n, "lora_A") || strstr(n, "lora_B")) s->peft = true;
    if (strstr(n, ".lora.down") || strstr(n, "_lora.down")) s->diffusers_old = true;
    if (strstr(n, "double_blocks") || strstr(n, "single_blocks") ||
        strstr(n, "single_transformer_blocks"))
        s->flux_names = true;
    if (strstr(n, "joint_blocks") || strstr(n, "add_k_proj") || strstr(n, "context_block"))
        s->sd3_names = true;
    if (strstr(n, "down_blocks_0_attentions") || strstr(n, "down_blocks.0.attentions") ||
        strstr(n, "input_blocks_1_1_") || strstr(n, "input_blocks.1.1."))
        s->level0_attn = true;
    if (down && (strstr(n, "proj_in.") || strstr(n, "proj_in_") || strstr(n, "proj_in.lora")) &&
        !s->proj_in_dims)
        s->proj_in_dims = t->n_dims;
    if (down || ends_with(n, ".lokr_w1") || ends_with(n, ".hada_w1_b")) {
        bool is_te2 =
            strstr(n, "lora_te2_") || strstr(n, "text_encoder_2") || strstr(n, "text_model_2");
        bool is_te = !is_te2 &&
                     (strstr(n, "lora_te") || strstr(n, "text_encoder") || strstr(n, "text_model"));
        s->modules++;
        if (is_te2)
            s->te2++;
        else if (is_te)
            s->te++;
        else
            s->unet++;
        if (down) {
            if (t->n_dims == 4 && t->shape[2] * t->shape[3] > 1) s->conv++;
            rank_add(s, (int32_t)t->shape[0]);
            int32_t in = t->n_dims >= 2 ? (int32_t)t->shape[1] : 0;
            if ((strstr(n, "attn2_to_k") || strstr(n, "attn2.to_k") ||
                 strstr(n, "attn2.processor.to_k")) &&
                !s->cross_dim)
                s->cross_dim = in;
            if ((strstr(n, "k_proj") || strstr(n, "self_attn_k")) && is_te && !s->te_width)
                s->te_width = in;
            if ((strstr(n, "k_proj") || strstr(n, "self_attn_k")) && is_te2 && !s->te2_width)
                s->te2_width = in;
        }
    }
    return true;
}

/* Alpha from kohya metadata; else the first scalar .alpha tensor (the one place detection
 * reads tensor bytes: a single element, only when the metadata does not state it). */
static float lora_alpha(const imgd_view *v, imgd_model_info *mi) {
    const char *m = imgd_weights_meta_find(v->w, "ss_network_alpha");
    if (m) {
        char *end = NULL;
        float a   = strtof(m, &end);
        if (end != m) return a;
    }
    for (size_t i = 0; i < v->w->n; i++) {
        const imgd_wtensor *t = &v->w->t[i];
        if (!ends_with(t->name, ".alpha") || !t->data || t->nbytes == 0) continue;
        float f = NAN;
        if (imgd_dtype_traits_of(t->dtype)->is_float && !imgd_dtype_traits_of(t->dtype)->is_quant)
            imgd_dtype_to_f32(t->dtype, t->data, 1, &f);
        imgd_detect_note(mi, "alpha read from the scalar tensor '%s'", t->name);
        return f;
    }
    return NAN;
}

/* Base family of a LoRA without metadata: block names, then widths, then topology. */
static imgd_family lora_family_from_shapes(const lora_scan *s, imgd_model_info *mi) {
    if (s->flux_names) {
        imgd_detect_note(mi,
                         "FLUX block names (double/single blocks): fits FLUX.1 dev and schnell");
        return IMGD_FAMILY_FLUX_DEV;
    }
    if (s->sd3_names) {
        imgd_detect_note(mi, "MMDiT joint-attention names: SD3");
        return IMGD_FAMILY_SD3;
    }
    if (s->te2 > 0) {
        imgd_detect_note(mi, "second text encoder modules (te2): SDXL");
        return IMGD_FAMILY_SDXL;
    }
    imgd_family f = family_of_context(s->cross_dim);
    if (f != IMGD_FAMILY_UNKNOWN) {
        imgd_detect_note(mi, "cross-attention keys %d wide", s->cross_dim);
        return f;
    }
    if (s->te_width == 1024 || s->te_width == 768) {
        imgd_detect_note(mi, "text-encoder modules %d wide, no te2", s->te_width);
        return s->te_width == 1024 ? IMGD_FAMILY_SD2 : IMGD_FAMILY_SD1;
    }
    if (s->proj_in_dims) {
        f = s->proj_in_dims == 4 ? IMGD_FAMILY_SD1
            : s->level0_attn     ? IMGD_FAMILY_SD2
                                 : IMGD_FAMILY_SDXL;
        imgd_detect_note(mi,
                         "non-standard widths; proj_in is a %s and level-0 attention is %s: %s "
                         "topology",
                         s->proj_in_dims == 4 ? "1x1 conv" : "linear",
                         s->level0_attn ? "present" : "absent", imgd_family_name(f));
        return f;
    }
    if (s->level0_attn) {
        imgd_detect_note(mi, "non-standard widths; attention at the first UNet level: SD 1.x "
                             "topology assumed (SD 2.x has the same layout)");
        return IMGD_FAMILY_SD1;
    }
    imgd_detect_note(mi, "no metadata, block names or widths identify the base model");
    return IMGD_FAMILY_UNKNOWN;
}

static bool detect_lora(const imgd_view *v, imgd_model_info *mi) {
    lora_scan s;
    memset(&s, 0, sizeof s);
    size_t parts = 0;
    for (size_t i = 0; i < v->w->n; i++) parts += lora_part(&v->w->t[i], &s);
    if (parts == 0 || parts * 10 < v->w->n * 9 || s.modules == 0) return false;
    imgd_adapter_info *a = &mi->adapter;
    a->modules           = s.modules;
    a->unet_modules      = s.unet;
    a->te_modules        = s.te;
    a->te2_modules       = s.te2;
    a->conv_modules      = s.conv;
    a->rank              = rank_mode(&s);
    a->cross_dim         = s.cross_dim;
    a->te_width          = s.te_width;
    a->te2_width         = s.te2_width;
    a->alpha             = lora_alpha(v, mi);
    const char *args     = imgd_weights_meta_find(v->w, "ss_network_args");
    if (s.loha)
        a->algo = "loha";
    else if (s.lokr)
        a->algo = "lokr";
    else if (s.full)
        a->algo = "full";
    else if (s.conv > 0 || (args && strstr(args, "\"locon\"")))
        a->algo = "locon";
    else
        a->algo = "lora";
    bool lycoris = strcmp(a->algo, "lora") != 0;
    mi->kind     = lycoris ? IMGD_KIND_LYCORIS : IMGD_KIND_LORA;
    mi->subtype  = a->algo;
    mi->layout   = s.kohya ? "kohya" : s.peft ? "peft" : s.diffusers_old ? "diffusers" : "lycoris";
    imgd_detect_note(
        mi,
        "%zu of %zu tensors are %s parts (%d modules: %d unet, %d te, %d te2, %d conv), rank %d",
        parts, v->w->n, a->algo, s.modules, s.unet, s.te, s.te2, s.conv, a->rank);
    imgd_family f = family_of_metadata(v->w, mi);
    if (f == IMGD_FAMILY_UNKNOWN)
        f = lora_family_from_shapes(&s, mi);
    else if (s.cross_dim && family_of_context(s.cross_dim) != IMGD_FAMILY_UNKNOWN &&
             family_of_context(s.cross_dim) != f) {
        imgd_detect_note(mi, "warning: cross-attention width %d disagrees with the metadata",
                         s.cross_dim);
    }
    mi->family = f;
    return true;
}

/* ---- embeddings ------------------------------------------------------------------- */

static imgd_family family_of_te_width(int32_t w) {
    return w == 768    ? IMGD_FAMILY_SD1
           : w == 1024 ? IMGD_FAMILY_SD2
           : w == 1280 ? IMGD_FAMILY_SDXL
                       : IMGD_FAMILY_UNKNOWN;
}

static bool detect_embedding(const imgd_view *v, imgd_model_info *mi) {
    if (v->w->n == 0 || v->w->n > 4) return false;
    const imgd_wtensor *l = T("clip_l"), *g = T("clip_g"), *e = T("string_to_param.*");
    const char         *how = NULL;
    if (l && g) {
        mi->embedding.vectors = dim(l, 0);
        mi->embedding.width   = dim(l, 1);
        mi->embedding.width_g = dim(g, 1);
        mi->family            = IMGD_FAMILY_SDXL;
        mi->layout            = "sdxl-clip-l-g";
        imgd_detect_note(mi, "tensors clip_l %dx%d and clip_g %dx%d: SDXL embedding", dim(l, 0),
                         dim(l, 1), dim(g, 0), dim(g, 1));
        mi->kind = IMGD_KIND_EMBEDDING;
        return true;
    }
    if (e)
        how = "a1111";
    else if ((e = T("emb_params")) != NULL)
        how = "a1111";
    else if (v->w->n == 1 && v->w->t[0].n_dims >= 1 && v->w->t[0].n_dims <= 2 &&
             v->w->t[0].shape[v->w->t[0].n_dims - 1] >= 16) {
        e   = &v->w->t[0];
        how = "diffusers";
    }
    if (!e || e->n_dims < 1 || e->n_dims > 2) return false;
    mi->kind              = IMGD_KIND_EMBEDDING;
    mi->layout            = how;
    mi->embedding.vectors = e->n_dims == 2 ? dim(e, 0) : 1;
    mi->embedding.width   = dim(e, e->n_dims - 1);
    if (strcmp(how, "diffusers") == 0) mi->embedding.trigger = e->name;
    mi->family = family_of_te_width(mi->embedding.width);
    imgd_detect_note(mi, "embedding tensor '%s': %d vectors × %d (%s)", e->name,
                     mi->embedding.vectors, mi->embedding.width,
                     mi->family == IMGD_FAMILY_UNKNOWN ? "width fits no known text encoder"
                                                       : "width of the text encoder it fits");
    return true;
}

/* ---- hypernetworks ---------------------------------------------------------------- */

static bool detect_hypernetwork(const imgd_view *v, imgd_model_info *mi) {
    if (v->w->n == 0) return false;
    int32_t widths[8], nw = 0;
    for (size_t i = 0; i < v->w->n; i++) {
        const char *n   = v->w->t[i].name;
        char       *end = NULL;
        long        k   = strtol(n, &end, 10);
        if (end == n ||
            (strncmp(end, ".0.linear.", 10) != 0 && strncmp(end, ".1.linear.", 10) != 0))
            return false;
        bool seen = false;
        for (int j = 0; j < nw; j++) seen |= widths[j] == k;
        if (!seen && nw < 8) widths[nw++] = (int32_t)k;
    }
    mi->kind   = IMGD_KIND_HYPERNETWORK;
    mi->layout = "a1111";
    mi->family = IMGD_FAMILY_UNKNOWN;
    for (int j = 0; j < nw; j++) {
        imgd_family f = family_of_context(widths[j]);
        if (f != IMGD_FAMILY_UNKNOWN && f != IMGD_FAMILY_SDXL_REFINER) mi->family = f;
    }
    imgd_detect_note(
        mi, "all tensors are '<width>.<0|1>.linear.N' (A1111 hypernetwork) for %d widths", nw);
    return true;
}

/* ---- ControlNet / T2I-adapter ----------------------------------------------------- */

static imgd_family family_of_unet_shape(const imgd_unet_config *c) {
    if (c->adm_in_channels) return IMGD_FAMILY_SDXL;
    imgd_family f = family_of_context(c->context_dim);
    if (f == IMGD_FAMILY_UNKNOWN || f == IMGD_FAMILY_SDXL_REFINER)
        f = c->linear_proj ? IMGD_FAMILY_SD2 : IMGD_FAMILY_SD1;
    return f;
}

static bool detect_controlnet(const imgd_view *v, imgd_model_info *mi) {
    const char *prefix = NULL;
    if (T("control_model.input_hint_block.0.weight"))
        prefix = "control_model.";
    else if (T("input_hint_block.0.weight") && T("zero_convs.0.0.weight"))
        prefix = "";
    if (prefix) {
        mi->layout = "ldm";
    } else if (T("controlnet_cond_embedding.conv_in.weight")) {
        prefix     = "";
        mi->layout = "diffusers";
    } else {
        return false;
    }
    mi->kind = IMGD_KIND_CONTROLNET;
    imgd_detect_note(mi, "ControlNet hint encoder and zero convolutions present");
    imgd_unet_config c;
    if (imgd_detect_unet(v, prefix, &c, mi)) {
        mi->family   = family_of_unet_shape(&c);
        mi->unet     = c;
        mi->has_unet = true;
    } else {
        mi->family = IMGD_FAMILY_UNKNOWN;
    }
    return true;
}

static bool detect_t2i(const imgd_view *v, imgd_model_info *mi) {
    const imgd_wtensor *ci = NULL;
    if (T("body.0.block1.weight") && (ci = T("conv_in.weight")) != NULL)
        mi->layout = "t2i";
    else if (T("adapter.body.0.resnets.0.block1.weight") &&
             (ci = T("adapter.conv_in.weight")) != NULL)
        mi->layout = "diffusers";
    else
        return false;
    mi->kind   = IMGD_KIND_T2I_ADAPTER;
    int32_t in = dim(ci, 1);
    /* pixel-unshuffle input: 8× for SD 1.x/2.x (3·64 or 1·64), 16× for SDXL (3·256) */
    mi->family = (in == 768 || in == 256) ? IMGD_FAMILY_SDXL : IMGD_FAMILY_SD1;
    imgd_detect_note(mi, "T2I-adapter body blocks; conv_in takes %d channels (pixel unshuffle %s)",
                     in, mi->family == IMGD_FAMILY_SDXL ? "16x: SDXL" : "8x: SD 1.x/2.x");
    return true;
}

/* ---- upscalers and TAESD ---------------------------------------------------------- */

static bool detect_upscaler(const imgd_view *v, imgd_model_info *mi) {
    const imgd_wtensor *first = NULL;
    if (T("model.0.weight") && T("model.1.sub.0.RDB1.conv1.0.weight")) {
        int32_t up = 0;
        for (int k = 2; k < 40; k++)
            if (T("model.%d.weight", k)) up++;
        mi->subtype        = "esrgan";
        mi->layout         = "esrgan-old";
        mi->upscale_factor = 1 << IMGD_MAX(up - 2, 0);
        first              = T("model.0.weight");
    } else if ((first = T("conv_first.weight")) != NULL && T("body.0.rdb1.conv1.weight")) {
        mi->subtype        = "realesrgan";
        mi->layout         = "basicsr-rrdbnet";
        int32_t in         = dim(first, 1);
        mi->upscale_factor = in == 12 ? 2 : in == 48 ? 1 : (T("conv_up2.weight") ? 4 : 2);
    } else if ((first = T("conv_first.weight")) != NULL &&
               T("layers.0.residual_group.blocks.0.attn.relative_position_bias_table")) {
        mi->subtype = "swinir";
        mi->layout  = "swinir";
        int32_t up  = 0;
        for (int k = 0; k < 8; k += 2)
            if (T("upsample.%d.weight", k)) up++;
        mi->upscale_factor = up ? 1 << up : 1;
    } else if ((first = T("body.0.weight")) != NULL && first->n_dims == 4 && dim(first, 1) == 3 &&
               T("body.1.weight") && dim(T("body.1.weight"), 0) == dim(first, 0)) {
        int32_t n = imgd_view_index_count(v, "body."), out = 0;
        for (int32_t k = n - 1; k >= 0 && !out; k--)
            if (T("body.%d.weight", k) && T("body.%d.weight", k)->n_dims == 4)
                out = dim(T("body.%d.weight", k), 0);
        int32_t s = 1;
        while (s * s * 3 < out) s++;
        if (s * s * 3 != out) return false;
        mi->subtype        = "compact";
        mi->layout         = "realesrgan-compact";
        mi->upscale_factor = s;
    } else {
        return false;
    }
    mi->kind   = IMGD_KIND_UPSCALER;
    mi->family = IMGD_FAMILY_NONE;
    imgd_detect_note(mi, "%s upscaler names; scale ×%d", mi->subtype, mi->upscale_factor);
    return true;
}

static bool detect_taesd(const imgd_view *v, imgd_model_info *mi) {
    const imgd_wtensor *dec = T("1.weight"), *enc = T("0.weight");
    bool                d   = dec && dec->n_dims == 4 && T("3.conv.4.weight") && !T("0.weight");
    bool                e   = enc && enc->n_dims == 4 && dim(enc, 1) == 3 && T("1.conv.4.weight");
    const char         *pre = "";
    if (!d && !e) {
        if (T("decoder.layers.1.weight") && T("decoder.layers.3.conv.4.weight")) {
            d   = true;
            pre = "diffusers";
        }
        if (T("encoder.layers.0.weight") && T("encoder.layers.1.conv.4.weight")) {
            e   = true;
            pre = "diffusers";
        }
        if (!d && !e) return false;
    }
    int32_t latent = 0;
    if (d) latent = dim(pre[0] ? T("decoder.layers.1.weight") : dec, 1);
    mi->kind    = IMGD_KIND_TAESD;
    mi->layout  = pre[0] ? pre : "taesd";
    mi->subtype = d && e ? "encoder+decoder" : d ? "decoder" : "encoder";
    mi->family  = latent == 16 ? IMGD_FAMILY_FLUX_DEV : IMGD_FAMILY_SD1;
    imgd_detect_note(mi, "tiny autoencoder (%s), %d latent channels; %s", mi->subtype, latent,
                     latent == 16 ? "TAEF1 and TAESD3 share these shapes"
                                  : "TAESD and TAESDXL share these shapes (SD family assumed)");
    return true;
}

bool imgd_detect_adapters(const imgd_view *v, imgd_model_info *mi) {
    return detect_lora(v, mi) || detect_embedding(v, mi) || detect_hypernetwork(v, mi) ||
           detect_controlnet(v, mi) || detect_t2i(v, mi) || detect_upscaler(v, mi) ||
           detect_taesd(v, mi);
}
