/* The detection result as JSON (the "model" object of inspect --json). */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "detect/detect.h"
#include "formats/dtype.h"

static const char *const k_variant_names[] = {
    "inpaint", "instruct_pix2pix", "v_prediction", "ema", "quantized", "pruned", "fp16", "bf16"};
_Static_assert(IMGD_ARRAY_LEN(k_variant_names) == IMGD_VARIANT_COUNT, "variant names");
static const char *const k_cap_names[] = {"txt2img", "img2img", "inpaint", "control", "upscale"};
_Static_assert(IMGD_ARRAY_LEN(k_cap_names) == IMGD_CAP_COUNT, "capability names");
static const char *const k_comp_names[] = {"denoiser", "vae", "text_encoder", "text_encoder_2",
                                           "text_encoder_3"};
_Static_assert(IMGD_ARRAY_LEN(k_comp_names) == IMGD_COMP_COUNT, "component names");
static const char *const k_pred_names[] = {"unknown", "epsilon", "v_prediction", "flow",
                                           "ambiguous"};
_Static_assert(IMGD_ARRAY_LEN(k_pred_names) == IMGD_PRED_COUNT, "prediction names");

/* Appends ,"key":[names of set bits] (no leading comma when first). */
static imgd_status flags(imgd_buf *b, const char *key, uint32_t bits, const char *const *names,
                         int n, bool first_in_object) {
    imgd_status st    = imgd_buf_printf(b, "%s\"%s\":[", first_in_object ? "" : ",", key);
    bool        first = true;
    for (int i = 0; i < n && st == IMGD_OK; i++) {
        if (!(bits & (1u << i))) continue;
        st    = imgd_buf_printf(b, "%s\"%s\"", first ? "" : ",", names[i]);
        first = false;
    }
    return st == IMGD_OK ? imgd_buf_puts(b, "]") : st;
}

static imgd_status ints(imgd_buf *b, const char *key, const int32_t *v, int n) {
    imgd_status st = imgd_buf_printf(b, "\"%s\":[", key);
    for (int i = 0; i < n && st == IMGD_OK; i++) st = imgd_buf_printf(b, i ? ",%d" : "%d", v[i]);
    return st == IMGD_OK ? imgd_buf_puts(b, "]") : st;
}

static imgd_status unet_json(imgd_buf *b, const imgd_unet_config *u) {
    imgd_status st = imgd_buf_printf(
        b,
        "\"unet\":{\"in_channels\":%d,\"out_channels\":%d,\"model_channels\":%d,\"levels\":%d,"
        "\"layers_per_block\":%d,",
        u->in_channels, u->out_channels, u->model_channels, u->n_levels, u->layers_per_block);
    if (st == IMGD_OK) st = ints(b, "block_out_channels", u->widths, u->n_levels);
    if (st == IMGD_OK) st = imgd_buf_puts(b, ",");
    if (st == IMGD_OK) st = ints(b, "transformer_depth", u->attn_depth, u->n_levels);
    if (st == IMGD_OK) st = imgd_buf_puts(b, ",");
    if (st == IMGD_OK) st = ints(b, "attention_heads", u->heads, u->n_levels);
    if (st == IMGD_OK)
        st = imgd_buf_printf(b,
                             ",\"mid_transformer_depth\":%d,\"context_dim\":%d,"
                             "\"use_linear_projection\":%s,\"adm_in_channels\":%d,"
                             "\"time_embed_dim\":%d,\"norm_num_groups\":%d,\"heads_from\":\"%s\"}",
                             u->mid_depth, u->context_dim, u->linear_proj ? "true" : "false",
                             u->adm_in_channels, u->time_embed_dim, u->groups,
                             u->heads_from_config ? "config" : "family_default");
    return st;
}

static imgd_status vae_json(imgd_buf *b, const imgd_vae_config *v) {
    imgd_status st =
        imgd_buf_printf(b,
                        "\"vae\":{\"latent_channels\":%d,\"in_channels\":%d,"
                        "\"out_channels\":%d,\"layers_per_block\":%d,\"encoder\":%s,"
                        "\"decoder\":%s,\"quant_conv\":%s,\"mid_attention\":%s,"
                        "\"norm_num_groups\":%d,\"scaling_factor\":%g,\"shift_factor\":%g,",
                        v->latent_channels, v->in_channels, v->out_channels, v->layers_per_block,
                        v->has_encoder ? "true" : "false", v->has_decoder ? "true" : "false",
                        v->has_quant_conv ? "true" : "false", v->mid_attention ? "true" : "false",
                        v->groups, (double)v->scaling_factor, (double)v->shift_factor);
    if (st == IMGD_OK) st = ints(b, "block_out_channels", v->widths, v->n_levels);
    return st == IMGD_OK ? imgd_buf_puts(b, "}") : st;
}

static imgd_status te_json(imgd_buf *b, const imgd_te_config *t) {
    static const char *const types[] = {"", "clip", "open_clip", "t5"};
    return imgd_buf_printf(b,
                           "{\"component\":\"%s\",\"type\":\"%s\",\"layers\":%d,\"hidden\":%d,"
                           "\"heads\":%d,\"intermediate\":%d,\"vocab\":%d,\"positions\":%d,"
                           "\"projection_dim\":%d,\"activation\":\"%s\"}",
                           t->component, types[t->type], t->layers, t->hidden, t->heads,
                           t->intermediate, t->vocab, t->positions, t->projection_dim,
                           t->type == IMGD_TE_T5 ? "gelu_tanh"
                           : t->gelu_erf         ? "gelu"
                                                 : "quick_gelu");
}

static imgd_status dit_json(imgd_buf *b, const imgd_dit_config *d) {
    static const char *const types[] = {"",          "mmdit", "flux", "pixart", "hunyuan_dit",
                                        "cogvideox", "wan"};
    return imgd_buf_printf(b,
                           "\"transformer\":{\"type\":\"%s\",\"depth\":%d,\"depth_single\":%d,"
                           "\"hidden\":%d,\"heads\":%d,\"head_dim\":%d,\"patch_size\":%d,"
                           "\"in_channels\":%d,\"context_dim\":%d,\"pooled_dim\":%d,"
                           "\"pos_embed_max_size\":%d,\"guidance_embed\":%s}",
                           types[d->type], d->depth, d->depth_single, d->hidden, d->heads,
                           d->head_dim, d->patch, d->in_channels, d->context_dim, d->pooled_dim,
                           d->pos_embed_max, d->guidance_embed ? "true" : "false");
}

static imgd_status config_json(imgd_buf *b, const imgd_model_info *mi) {
    imgd_status st    = imgd_buf_puts(b, ",\"config\":{");
    bool        comma = false;
    if (st == IMGD_OK && mi->has_unet) {
        st    = unet_json(b, &mi->unet);
        comma = true;
    }
    if (st == IMGD_OK && mi->has_dit) {
        st    = dit_json(b, &mi->dit);
        comma = true;
    }
    if (st == IMGD_OK && mi->has_vae) {
        if (comma) st = imgd_buf_puts(b, ",");
        if (st == IMGD_OK) st = vae_json(b, &mi->vae);
        comma = true;
    }
    if (st == IMGD_OK && mi->n_te) {
        st = imgd_buf_puts(b, comma ? ",\"text_encoders\":[" : "\"text_encoders\":[");
        for (int32_t i = 0; i < mi->n_te && st == IMGD_OK; i++) {
            if (i) st = imgd_buf_puts(b, ",");
            if (st == IMGD_OK) st = te_json(b, &mi->te[i]);
        }
        if (st == IMGD_OK) st = imgd_buf_puts(b, "]");
    }
    return st == IMGD_OK ? imgd_buf_puts(b, "}") : st;
}

/* Default generation size of a family, for the memory estimate. */
static int32_t default_size(imgd_family f) {
    switch (f) {
    case IMGD_FAMILY_SD2: return 768;
    case IMGD_FAMILY_SD1: return 512;
    default: return 1024;
    }
}

static imgd_status needs_json(imgd_buf *b, const imgd_model_info *mi) {
    uint64_t weights = 0, params = mi->params_denoiser + mi->params_vae + mi->params_te;
    for (int d = 0; d < IMGD_DTYPE_COUNT; d++) weights += mi->dtype_bytes[d];
    int32_t  px  = default_size(mi->family);
    uint64_t lat = (uint64_t)(px / 8) * (uint64_t)(px / 8);
    /* Activations: the widest UNet level holds ~12 live tensors of batch 2 (CFG); the VAE
     * decoder's first level ~4 tensors at full resolution. f32 on CPU, f16 on GPU. */
    uint64_t c0  = mi->has_unet  ? (uint64_t)mi->unet.model_channels
                   : mi->has_dit ? (uint64_t)mi->dit.hidden / 4
                                 : 0;
    uint64_t act = (uint64_t)2 * 12 * c0 * lat * 4;
    uint64_t vdec =
        mi->has_vae ? 4 * (uint64_t)mi->vae.widths[0] * (uint64_t)px * (uint64_t)px * 4 : 0;
    uint64_t    cpu = params * 4 + act + vdec;
    uint64_t    gpu = params * 2 + act / 2 + vdec / 2;
    imgd_status st =
        imgd_buf_printf(b,
                        ",\"needs\":{\"parameters\":{\"denoiser\":%llu,\"vae\":%llu,"
                        "\"text_encoders\":%llu,\"other\":%llu},\"weight_bytes\":%llu,"
                        "\"bytes_by_dtype\":{",
                        (unsigned long long)mi->params_denoiser, (unsigned long long)mi->params_vae,
                        (unsigned long long)mi->params_te, (unsigned long long)mi->params_other,
                        (unsigned long long)weights);
    bool first = true;
    for (int d = 0; d < IMGD_DTYPE_COUNT && st == IMGD_OK; d++) {
        if (!mi->dtype_bytes[d]) continue;
        st = imgd_buf_printf(b, "%s\"%s\":%llu", first ? "" : ",", imgd_dtype_name((imgd_dtype)d),
                             (unsigned long long)mi->dtype_bytes[d]);
        first = false;
    }
    if (st == IMGD_OK)
        st = imgd_buf_printf(b,
                             "},\"estimate\":{\"width\":%d,\"height\":%d,\"batch\":1,"
                             "\"peak_bytes_cpu_f32\":%llu,\"peak_bytes_gpu_f16\":%llu}}",
                             px, px, (unsigned long long)cpu, (unsigned long long)gpu);
    return st;
}

static imgd_status components_json(imgd_buf *b, const imgd_model_info *mi) {
    imgd_status st = imgd_buf_puts(b, ",\"components\":{");
    if (st == IMGD_OK) st = flags(b, "present", mi->present, k_comp_names, IMGD_COMP_COUNT, true);
    uint32_t missing = mi->needed & ~mi->present;
    if (mi->kind != IMGD_KIND_CHECKPOINT && mi->kind != IMGD_KIND_UNET) missing = 0;
    if (st == IMGD_OK) st = flags(b, "missing", missing, k_comp_names, IMGD_COMP_COUNT, false);
    return st == IMGD_OK ? imgd_buf_puts(b, "}") : st;
}

static imgd_status adapter_json(imgd_buf *b, const imgd_model_info *mi) {
    imgd_status st = IMGD_OK;
    if (mi->kind == IMGD_KIND_LORA || mi->kind == IMGD_KIND_LYCORIS) {
        const imgd_adapter_info *a = &mi->adapter;
        st = imgd_buf_printf(b, ",\"adapter\":{\"algo\":\"%s\",\"rank\":%d,\"alpha\":", a->algo,
                             a->rank);
        if (st == IMGD_OK)
            st = isnan(a->alpha) ? imgd_buf_puts(b, "null")
                                 : imgd_buf_printf(b, "%g", (double)a->alpha);
        if (st == IMGD_OK)
            st = imgd_buf_printf(b,
                                 ",\"modules\":%d,\"unet_modules\":%d,\"text_encoder_modules\":%d,"
                                 "\"text_encoder_2_modules\":%d,\"conv_modules\":%d,"
                                 "\"cross_attention_dim\":%d}",
                                 a->modules, a->unet_modules, a->te_modules, a->te2_modules,
                                 a->conv_modules, a->cross_dim);
    } else if (mi->kind == IMGD_KIND_EMBEDDING) {
        const imgd_embedding_info *e = &mi->embedding;
        st =
            imgd_buf_printf(b, ",\"embedding\":{\"vectors\":%d,\"width\":%d", e->vectors, e->width);
        if (st == IMGD_OK && e->width_g)
            st = imgd_buf_printf(b, ",\"width_clip_g\":%d", e->width_g);
        if (st == IMGD_OK) st = imgd_buf_puts(b, ",\"trigger\":");
        if (st == IMGD_OK)
            st = e->trigger ? imgd_buf_json_str(b, e->trigger) : imgd_buf_puts(b, "null");
        if (st == IMGD_OK) st = imgd_buf_puts(b, "}");
    } else if (mi->kind == IMGD_KIND_UPSCALER) {
        st = imgd_buf_printf(b, ",\"upscale_factor\":%d", mi->upscale_factor);
    }
    return st;
}

static imgd_status render(imgd_buf *b, const imgd_model_info *mi) {
    imgd_status st =
        imgd_buf_printf(b, "{\"kind\":\"%s\",\"family\":", imgd_model_kind_name(mi->kind));
    if (st == IMGD_OK)
        st = mi->family == IMGD_FAMILY_NONE
                 ? imgd_buf_puts(b, "null")
                 : imgd_buf_printf(b, "\"%s\"", imgd_family_name(mi->family));
    if (st == IMGD_OK)
        st = flags(b, "variants", mi->variants, k_variant_names, IMGD_VARIANT_COUNT, false);
    if (st == IMGD_OK) st = imgd_buf_puts(b, ",\"layout\":");
    if (st == IMGD_OK) st = imgd_buf_json_str(b, mi->layout ? mi->layout : "unknown");
    if (st == IMGD_OK) st = imgd_buf_puts(b, ",\"subtype\":");
    if (st == IMGD_OK)
        st = mi->subtype ? imgd_buf_json_str(b, mi->subtype) : imgd_buf_puts(b, "null");
    if (st == IMGD_OK)
        st = imgd_buf_printf(b, ",\"prediction\":\"%s\"", k_pred_names[mi->prediction]);
    if (st == IMGD_OK)
        st = flags(b, "capabilities", mi->capabilities, k_cap_names, IMGD_CAP_COUNT, false);
    if (st == IMGD_OK) st = config_json(b, mi);
    if (st == IMGD_OK) st = components_json(b, mi);
    if (st == IMGD_OK) st = needs_json(b, mi);
    if (st == IMGD_OK) st = adapter_json(b, mi);
    if (st == IMGD_OK && mi->candidates) {
        st = imgd_buf_puts(b, ",\"candidates\":");
        if (st == IMGD_OK) st = imgd_buf_json_str(b, mi->candidates);
    }
    if (st == IMGD_OK) st = imgd_buf_puts(b, ",\"evidence\":[");
    for (int32_t i = 0; i < mi->n_evidence && st == IMGD_OK; i++) {
        if (i) st = imgd_buf_puts(b, ",");
        if (st == IMGD_OK) st = imgd_buf_json_str(b, mi->evidence[i]);
    }
    return st == IMGD_OK ? imgd_buf_puts(b, "]}") : st;
}

imgd_status imgd_detect_render_json(const imgd_model_info *mi, imgd_buf *b) {
    return render(b, mi);
}

imgd_status imgd_model_info_json(const imgd_model_info *mi, char **json_out) {
    if (!mi || !json_out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_model_info_json: NULL argument");
    imgd_buf b;
    imgd_buf_init(&b, 16u << 20);
    imgd_status st = render(&b, mi);
    if (st != IMGD_OK) {
        imgd_buf_free(&b);
        return st;
    }
    *json_out = imgd_buf_take(&b);
    return IMGD_OK;
}
