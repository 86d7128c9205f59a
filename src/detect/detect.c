/* Model detection driver: wrapper stripping, component tables, kind / family / variant
 * decisions, capabilities, needs. Rules are rows of tables; each decision leaves an
 * evidence line. */
#include "detect/detect.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "formats/dtype.h"

/* ---- names ------------------------------------------------------------------------ */

static const char *const k_kind_names[] = {
    "unknown",   "checkpoint", "unet",        "vae",          "text_encoder", "lora",  "lycoris",
    "embedding", "controlnet", "t2i_adapter", "hypernetwork", "upscaler",     "taesd",
};
_Static_assert(IMGD_ARRAY_LEN(k_kind_names) == IMGD_KIND_COUNT, "kind names");

static const char *const k_family_names[] = {
    "null",     "unknown",      "sd1",    "sd2",    "sdxl",        "sdxl_refiner", "sd3",
    "flux_dev", "flux_schnell", "pixart", "kolors", "hunyuan_dit", "cogvideox",    "wan",
};
_Static_assert(IMGD_ARRAY_LEN(k_family_names) == IMGD_FAMILY_COUNT, "family names");

const char *imgd_model_kind_name(imgd_model_kind k) {
    return (unsigned)k < IMGD_KIND_COUNT ? k_kind_names[k] : "unknown";
}

const char *imgd_family_name(imgd_family f) {
    return (unsigned)f < IMGD_FAMILY_COUNT ? k_family_names[f] : "unknown";
}

void imgd_detect_note(imgd_model_info *mi, const char *fmt, ...) {
    if (mi->n_evidence >= IMGD_EVIDENCE_MAX) return;
    char    buf[512];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(buf, sizeof buf, fmt, ap); /* a cut note is still evidence */
    va_end(ap);
    char *s = imgd_arena_strndup(&mi->arena, buf, strlen(buf));
    if (s) mi->evidence[mi->n_evidence++] = s;
}

/* ---- wrappers --------------------------------------------------------------------- */

/* Prefixes training frameworks wrap a state dict in; stripped when every tensor has one. */
static const char *const k_wrappers[] = {
    "state_dict.", "module.", "_orig_mod.", "params_ema.", "params.", "model_state_dict.", "ema."};

static const char *find_root(const imgd_weights *w) {
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_wrappers); k++) {
        size_t l = strlen(k_wrappers[k]), n = 0;
        for (size_t i = 0; i < w->n; i++) n += strncmp(w->t[i].name, k_wrappers[k], l) == 0;
        if (w->n > 0 && n == w->n) return k_wrappers[k];
    }
    return "";
}

/* ---- component tables ------------------------------------------------------------- */

/* Where a denoiser sits: LDM/SGM single files, diffusers folders, ComfyUI-style exports,
 * bare component files. */
static const char *const k_denoisers[] = {"model.diffusion_model.", "unet/",  "transformer/",
                                          "diffusion_model.",       "model.", ""};

static const char *const k_vae_prefixes[] = {"first_stage_model.", "vae/", "vae.", ""};

typedef struct te_row {
    const char *prefix;
    int32_t     slot; /* 0: text_encoder, 1: text_encoder_2, 2: text_encoder_3 */
} te_row;

static const te_row k_tes[] = {
    {"cond_stage_model.transformer.", 0},
    {"cond_stage_model.model.", 0},
    {"conditioner.embedders.0.transformer.", 0},
    {"conditioner.embedders.0.model.", 1}, /* SDXL refiner: bigG alone */
    {"conditioner.embedders.1.model.", 1},
    {"text_encoders.clip_l.transformer.", 0},
    {"text_encoders.clip_g.transformer.", 1},
    {"text_encoders.t5xxl.transformer.", 2},
    {"text_encoder/", 0},
    {"text_encoder_2/", 1},
    {"text_encoder_3/", 2},
};

static const char *const k_te_slots[] = {"text_encoder", "text_encoder_2", "text_encoder_3"};

static void find_components(const imgd_view *v, imgd_model_info *mi) {
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_denoisers) && !mi->has_unet && !mi->has_dit; i++) {
        const char *p = k_denoisers[i];
        if (imgd_detect_unet(v, p, &mi->unet, mi))
            mi->has_unet = true;
        else if (imgd_detect_dit(v, p, &mi->dit, mi))
            mi->has_dit = true;
        else
            continue;
        mi->denoiser_prefix = p;
        bool original       = mi->has_unet ? mi->unet.ldm_names : mi->dit.original_names;
        mi->layout          = !original                                      ? "diffusers"
                              : mi->has_dit && mi->dit.type == IMGD_DIT_FLUX ? "bfl"
                                                                             : "ldm";
    }
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_vae_prefixes) && !mi->has_vae; i++) {
        if (imgd_detect_vae(v, k_vae_prefixes[i], &mi->vae, mi)) {
            mi->has_vae    = true;
            mi->vae_prefix = k_vae_prefixes[i];
        }
    }
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_tes) && mi->n_te < IMGD_MAX_TE; i++) {
        imgd_te_config c;
        if (!imgd_detect_te(v, k_tes[i].prefix, &c, mi)) continue;
        c.component        = k_te_slots[k_tes[i].slot];
        mi->te[mi->n_te++] = c;
        mi->present |= IMGD_COMP_TE1 << k_tes[i].slot;
    }
    if (mi->n_te == 0) { /* a bare text encoder file */
        imgd_te_config c;
        if (imgd_detect_te(v, "", &c, mi)) {
            c.component        = "text_encoder";
            mi->te[mi->n_te++] = c;
            mi->present |= IMGD_COMP_TE1;
        }
    }
    if (mi->has_unet || mi->has_dit) mi->present |= IMGD_COMP_DENOISER;
    if (mi->has_vae) mi->present |= IMGD_COMP_VAE;
}

/* ---- family ----------------------------------------------------------------------- */

static imgd_family unet_family(const imgd_model_info *mi, imgd_model_info *out) {
    const imgd_unet_config *u = &mi->unet;
    if (u->encoder_hid_dim) {
        imgd_detect_note(out, "encoder_hid_proj from %d-wide text features (ChatGLM): Kolors",
                         u->encoder_hid_dim);
        return IMGD_FAMILY_KOLORS;
    }
    if (u->adm_in_channels) {
        if (u->n_levels >= 4) {
            imgd_detect_note(out, "label embedding (adm %d) with 4 levels: SDXL refiner topology",
                             u->adm_in_channels);
            return IMGD_FAMILY_SDXL_REFINER;
        }
        imgd_detect_note(out,
                         "label embedding (adm %d) with %d levels, no attention at level 0: "
                         "SDXL topology",
                         u->adm_in_channels, u->n_levels);
        return IMGD_FAMILY_SDXL;
    }
    if (u->context_dim == 768 || u->context_dim == 1024) {
        imgd_detect_note(out, "cross-attention context %d: %s", u->context_dim,
                         u->context_dim == 768 ? "CLIP-L (SD 1.x)" : "OpenCLIP-H (SD 2.x)");
        return u->context_dim == 768 ? IMGD_FAMILY_SD1 : IMGD_FAMILY_SD2;
    }
    for (int32_t i = 0; i < mi->n_te; i++) {
        if (mi->te[i].type == IMGD_TE_OPENCLIP) {
            imgd_detect_note(out, "open_clip text encoder with a non-standard context %d: SD 2.x",
                             u->context_dim);
            return IMGD_FAMILY_SD2;
        }
    }
    imgd_detect_note(out, "non-standard context width %d; %s proj_in decides: %s", u->context_dim,
                     u->linear_proj ? "linear" : "1x1 conv",
                     u->linear_proj ? "SD 2.x topology" : "SD 1.x topology");
    return u->linear_proj ? IMGD_FAMILY_SD2 : IMGD_FAMILY_SD1;
}

static imgd_family dit_family(const imgd_dit_config *d, imgd_model_info *mi) {
    switch (d->type) {
    case IMGD_DIT_MMDIT: return IMGD_FAMILY_SD3;
    case IMGD_DIT_FLUX:
        imgd_detect_note(mi, "%s: FLUX.1 %s",
                         d->guidance_embed ? "guidance embedding present" : "no guidance embedding",
                         d->guidance_embed ? "dev" : "schnell");
        return d->guidance_embed ? IMGD_FAMILY_FLUX_DEV : IMGD_FAMILY_FLUX_SCHNELL;
    case IMGD_DIT_PIXART: return IMGD_FAMILY_PIXART;
    case IMGD_DIT_HUNYUAN: return IMGD_FAMILY_HUNYUAN_DIT;
    case IMGD_DIT_COGVIDEOX: return IMGD_FAMILY_COGVIDEOX;
    case IMGD_DIT_WAN: return IMGD_FAMILY_WAN;
    default: return IMGD_FAMILY_UNKNOWN;
    }
}

/* Family of a text encoder or VAE found alone. */
static imgd_family lone_family(imgd_model_info *mi) {
    if (mi->n_te > 0) {
        const imgd_te_config *t = &mi->te[0];
        if (t->type == IMGD_TE_T5) {
            imgd_detect_note(mi, "T5 encoder: used by FLUX.1 and SD3 (FLUX assumed)");
            return IMGD_FAMILY_FLUX_DEV;
        }
        if (t->hidden == 1280) return IMGD_FAMILY_SDXL;
        if (t->hidden == 1024) return IMGD_FAMILY_SD2;
        if (t->hidden == 768) {
            imgd_detect_note(mi, "CLIP-L text encoder: SD 1.x (also SDXL/FLUX's first encoder)");
            return IMGD_FAMILY_SD1;
        }
        return IMGD_FAMILY_UNKNOWN;
    }
    if (mi->vae.latent_channels == 16) {
        imgd_detect_note(mi, "16 latent channels: FLUX.1 or SD3 VAE (same shapes; FLUX assumed)");
        return IMGD_FAMILY_FLUX_DEV;
    }
    if (mi->vae.latent_channels == 4) {
        imgd_detect_note(mi, "4 latent channels: SD 1.x/2.x VAE (the SDXL VAE has the same "
                             "shapes; not decidable from names)");
        return IMGD_FAMILY_SD1;
    }
    return IMGD_FAMILY_UNKNOWN;
}

/* A lone VAE's family from the scaling (and shift) factor its config.json states: the
 * shapes of the SD and SDXL VAEs are the same, and so are those of SD3's and FLUX's. */
static void vae_family_from_scaling(imgd_model_info *mi) {
    static const struct {
        float       scale;
        imgd_family family;
    } k[] = {
        {0.18215f, IMGD_FAMILY_SD1},
        {0.13025f, IMGD_FAMILY_SDXL},
        {1.5305f, IMGD_FAMILY_SD3},
        {0.3611f, IMGD_FAMILY_FLUX_DEV},
    };
    float s = mi->vae.scaling_factor;
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k); i++) {
        if (fabsf(s - k[i].scale) < 1e-4f) {
            if (mi->family != k[i].family)
                imgd_detect_note(mi, "scaling_factor %g in config.json: %s VAE", (double)s,
                                 imgd_family_name(k[i].family));
            mi->family = k[i].family;
            return;
        }
    }
}

/* ---- variants, prediction, needs -------------------------------------------------- */

static bool meta_has(const imgd_weights *w, const char *key, const char *needle) {
    const char *v = imgd_weights_meta_find(w, key);
    return v && strstr(v, needle);
}

static void decide_prediction(const imgd_view *v, imgd_model_info *mi) {
    const imgd_weights *w = v->w;
    if (mi->family == IMGD_FAMILY_SD3 || mi->family == IMGD_FAMILY_FLUX_DEV ||
        mi->family == IMGD_FAMILY_FLUX_SCHNELL) {
        mi->prediction = IMGD_PRED_FLOW;
        return;
    }
    if (imgd_view_get(v, "v_pred") || meta_has(w, "modelspec.prediction_type", "v") ||
        meta_has(w, "ss_v_parameterization", "True") ||
        meta_has(w, "ss_v_parameterization", "true")) {
        mi->prediction = IMGD_PRED_V;
        imgd_detect_note(mi, "v-prediction marker (v_pred tensor or metadata)");
        return;
    }
    if (mi->prediction != IMGD_PRED_UNKNOWN) return; /* set from a config or yaml */
    if (mi->family == IMGD_FAMILY_SD2) {
        mi->prediction = IMGD_PRED_AMBIGUOUS;
        imgd_detect_note(mi, "SD 2.x: 512-base (epsilon) and 768-v (v-prediction) share every "
                             "name and shape; give a .yaml beside the file or --prediction");
        return;
    }
    mi->prediction = IMGD_PRED_EPSILON;
}

static void decide_variants(const imgd_view *v, imgd_model_info *mi) {
    if (mi->has_unet) {
        if (mi->unet.in_channels == 9) {
            mi->variants |= IMGD_VARIANT_INPAINT;
            imgd_detect_note(mi, "UNet takes 9 input channels: inpainting");
        } else if (mi->unet.in_channels == 8) {
            mi->variants |= IMGD_VARIANT_INSTRUCT_PIX2PIX;
            imgd_detect_note(mi, "UNet takes 8 input channels: instruct-pix2pix");
        }
    }
    if (mi->has_dit && mi->dit.type == IMGD_DIT_FLUX && mi->dit.in_channels == 384) {
        /* FLUX.1 Fill: packed latent (64) + packed masked image (64) + packed 8x8 mask (256) */
        mi->variants |= IMGD_VARIANT_INPAINT;
        imgd_detect_note(mi, "FLUX transformer takes 384 input channels (64 latent + 64 image + "
                             "256 mask): FLUX.1 Fill inpainting");
    }
    if (mi->prediction == IMGD_PRED_V) mi->variants |= IMGD_VARIANT_V_PREDICTION;
    size_t ema = imgd_view_count_prefix(v, "model_ema.");
    if (ema > 0) {
        mi->variants |= IMGD_VARIANT_EMA;
        imgd_detect_note(mi, "%zu EMA tensors (model_ema.*)", ema);
    } else if (mi->kind == IMGD_KIND_CHECKPOINT && strcmp(mi->layout, "ldm") == 0) {
        mi->variants |= IMGD_VARIANT_PRUNED;
    }
    uint64_t best = 0;
    int      bd   = -1;
    for (int d = 0; d < IMGD_DTYPE_COUNT; d++) {
        if (imgd_dtype_traits_of((imgd_dtype)d)->is_quant && mi->dtype_bytes[d])
            mi->variants |= IMGD_VARIANT_QUANTIZED;
        if (mi->dtype_bytes[d] > best) {
            best = mi->dtype_bytes[d];
            bd   = d;
        }
    }
    if (mi->dtype_bytes[IMGD_DTYPE_F8_E4M3] || mi->dtype_bytes[IMGD_DTYPE_F8_E5M2])
        mi->variants |= IMGD_VARIANT_QUANTIZED;
    if (bd == IMGD_DTYPE_F16) mi->variants |= IMGD_VARIANT_FP16;
    if (bd == IMGD_DTYPE_BF16) mi->variants |= IMGD_VARIANT_BF16;
}

static bool has_prefix(const char *s, const char *p) {
    return p && *p && strncmp(s, p, strlen(p)) == 0;
}

static void count_params(const imgd_view *v, imgd_model_info *mi) {
    size_t rl = strlen(v->root);
    for (size_t i = 0; i < v->w->n; i++) {
        const imgd_wtensor *t = &v->w->t[i];
        const char         *n = t->name + rl;
        uint64_t            k = 0;
        imgd_shape_numel(t->n_dims, t->shape, &k);
        mi->dtype_bytes[t->dtype] += t->nbytes;
        bool te = false;
        for (size_t j = 0; j < IMGD_ARRAY_LEN(k_tes); j++) te |= has_prefix(n, k_tes[j].prefix);
        if (has_prefix(n, "model_ema."))
            mi->params_other += k;
        else if (te)
            mi->params_te += k;
        else if (has_prefix(n, mi->vae_prefix))
            mi->params_vae += k;
        else if (has_prefix(n, mi->denoiser_prefix) ||
                 (mi->denoiser_prefix && !*mi->denoiser_prefix))
            mi->params_denoiser += k;
        else
            mi->params_other += k;
    }
}

/* What a pipeline of this family needs, and what it can do. */
static void decide_needs(imgd_model_info *mi) {
    switch (mi->family) {
    case IMGD_FAMILY_SD1:
    case IMGD_FAMILY_SD2:
    case IMGD_FAMILY_FLUX_DEV:
    case IMGD_FAMILY_FLUX_SCHNELL:
        mi->needed = IMGD_COMP_DENOISER | IMGD_COMP_VAE | IMGD_COMP_TE1;
        if (mi->family >= IMGD_FAMILY_FLUX_DEV) mi->needed |= IMGD_COMP_TE2;
        break;
    case IMGD_FAMILY_SDXL:
    case IMGD_FAMILY_KOLORS:
        mi->needed = IMGD_COMP_DENOISER | IMGD_COMP_VAE | IMGD_COMP_TE1 | IMGD_COMP_TE2;
        break;
    case IMGD_FAMILY_SDXL_REFINER:
        mi->needed = IMGD_COMP_DENOISER | IMGD_COMP_VAE | IMGD_COMP_TE2;
        break;
    case IMGD_FAMILY_SD3:
        mi->needed = IMGD_COMP_DENOISER | IMGD_COMP_VAE | IMGD_COMP_TE1 | IMGD_COMP_TE2;
        break;
    default: mi->needed = IMGD_COMP_DENOISER | IMGD_COMP_VAE; break;
    }
    if (mi->kind == IMGD_KIND_CHECKPOINT || mi->kind == IMGD_KIND_UNET) {
        mi->capabilities = IMGD_CAP_TXT2IMG | IMGD_CAP_IMG2IMG | IMGD_CAP_INPAINT;
        if (mi->variants & IMGD_VARIANT_INSTRUCT_PIX2PIX) mi->capabilities = IMGD_CAP_IMG2IMG;
        if (mi->family == IMGD_FAMILY_SD1 || mi->family == IMGD_FAMILY_SD2 ||
            mi->family == IMGD_FAMILY_SDXL || mi->family == IMGD_FAMILY_FLUX_DEV)
            mi->capabilities |= IMGD_CAP_CONTROL;
    } else if (mi->kind == IMGD_KIND_CONTROLNET || mi->kind == IMGD_KIND_T2I_ADAPTER) {
        mi->capabilities = IMGD_CAP_CONTROL;
    } else if (mi->kind == IMGD_KIND_UPSCALER) {
        mi->capabilities = IMGD_CAP_UPSCALE;
    }
}

/* ---- driver ----------------------------------------------------------------------- */

static void decide_kind(const imgd_view *v, imgd_model_info *mi) {
    if (mi->has_unet || mi->has_dit) {
        mi->family = mi->has_unet ? unet_family(mi, mi) : dit_family(&mi->dit, mi);
        mi->kind   = mi->has_vae || mi->n_te > 0 ? IMGD_KIND_CHECKPOINT : IMGD_KIND_UNET;
        if (mi->kind == IMGD_KIND_CHECKPOINT && mi->w_format == IMGD_FORMAT_DIFFUSERS)
            mi->layout = "diffusers";
        return;
    }
    if (mi->has_vae) {
        mi->kind   = IMGD_KIND_VAE;
        mi->layout = mi->vae.ldm_names ? "ldm" : "diffusers";
        mi->family = lone_family(mi);
        return;
    }
    if (mi->n_te > 0) {
        mi->kind   = IMGD_KIND_TEXT_ENCODER;
        mi->layout = mi->te[0].type == IMGD_TE_OPENCLIP ? "open_clip" : "transformers";
        mi->family = lone_family(mi);
        return;
    }
    mi->kind   = IMGD_KIND_UNKNOWN;
    mi->family = IMGD_FAMILY_UNKNOWN;
    IMGD_UNUSED(v);
}

static void explain_unknown(const imgd_view *v, imgd_model_info *mi) {
    if (v->w->n == 0) {
        mi->candidates = "none: the file holds no tensors";
        imgd_detect_note(mi, "no tensors%s", v->w->n_meta ? " (metadata only)" : "");
        return;
    }
    if (imgd_view_count_prefix(v, "model.layers.") || imgd_view_count_substr(v, "lm_head")) {
        mi->candidates = "a language model (model.layers.N / lm_head), not an image model";
    } else if (imgd_view_count_substr(v, "diffusion_model") ||
               imgd_view_count_substr(v, "down_blocks")) {
        mi->candidates = "an image denoiser with an unfamiliar layout (UNet-like names found)";
    } else {
        mi->candidates = "none of the known architectures matched (looked for UNet, DiT, VAE, text "
                         "encoders, LoRA, embeddings, ControlNet, upscalers, TAESD)";
    }
    imgd_detect_note(mi, "unknown: %s; first tensor '%s'", mi->candidates, v->w->t[0].name);
}

imgd_status imgd_model_detect(const imgd_weights *w, imgd_model_info **out) {
    if (!w || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_model_detect: NULL argument");
    imgd_model_info *mi = imgd_calloc(1, sizeof *mi);
    if (!mi) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_arena_init(&mi->arena, 1u << 20);
    imgd_view v         = {w, find_root(w)};
    mi->root            = v.root;
    mi->w_format        = w->format;
    mi->layout          = "unknown";
    mi->denoiser_prefix = NULL;
    if (*v.root) imgd_detect_note(mi, "every tensor is wrapped in '%s'; stripped", v.root);
    if (w->n > 0 && !imgd_detect_adapters(&v, mi)) {
        find_components(&v, mi);
        decide_kind(&v, mi);
    } else if (w->n == 0) {
        mi->kind = IMGD_KIND_UNKNOWN;
    }
    if (mi->kind == IMGD_KIND_UNKNOWN) {
        mi->family = IMGD_FAMILY_UNKNOWN;
        explain_unknown(&v, mi);
    }
    count_params(&v, mi);
    imgd_detect_apply_configs(w, w->path, mi);
    if (mi->kind == IMGD_KIND_CHECKPOINT || mi->kind == IMGD_KIND_UNET) decide_prediction(&v, mi);
    decide_variants(&v, mi);
    decide_needs(mi);
    if (mi->kind == IMGD_KIND_VAE && mi->vae.scaling_from_config) vae_family_from_scaling(mi);
    if (mi->has_vae && !mi->vae.scaling_from_config) {
        bool xl = mi->family == IMGD_FAMILY_SDXL || mi->family == IMGD_FAMILY_SDXL_REFINER;
        if (mi->family == IMGD_FAMILY_SD3) {
            mi->vae.scaling_factor = 1.5305f;
            mi->vae.shift_factor   = 0.0609f;
        } else if (mi->family == IMGD_FAMILY_FLUX_DEV || mi->family == IMGD_FAMILY_FLUX_SCHNELL) {
            mi->vae.scaling_factor = 0.3611f;
            mi->vae.shift_factor   = 0.1159f;
        } else if (xl) {
            mi->vae.scaling_factor = 0.13025f;
        }
    }
    IMGD_LOG(IMGD_LOG_DEBUG, "detect", "detected", "%s: %s %s (%s)", w->path,
             imgd_family_name(mi->family), imgd_model_kind_name(mi->kind), mi->layout);
    *out = mi;
    return IMGD_OK;
}

void imgd_model_info_free(imgd_model_info *mi) {
    if (!mi) return;
    imgd_arena_free(&mi->arena);
    imgd_free(mi);
}

imgd_model_kind imgd_model_info_kind(const imgd_model_info *mi) {
    return mi->kind;
}

imgd_family imgd_model_info_family(const imgd_model_info *mi) {
    return mi->family;
}
