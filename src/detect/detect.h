/* Model detection: what a set of weights is, from names, shapes and metadata only.
 * Never touches tensor data. */
#ifndef IMGD_DETECT_DETECT_H
#define IMGD_DETECT_DETECT_H

#include <stdbool.h>

#include "base/arena.h"
#include "base/base.h"
#include "formats/weights.h"

#define IMGD_MAX_LEVELS 8
#define IMGD_MAX_TE     3

/* ---- view: the weights with a wrapper prefix stripped ----------------------------- */

typedef struct imgd_view {
    const imgd_weights *w;
    const char         *root; /* stripped wrapper ("state_dict.", "module.", ...) or "" */
} imgd_view;

/* Tensor named root + printf(fmt, ...), or NULL. */
const imgd_wtensor *imgd_view_get(const imgd_view *v, const char *fmt, ...) IMGD_PRINTF(2, 3);
/* Number of tensors whose name (after root) starts with prefix. */
size_t imgd_view_count_prefix(const imgd_view *v, const char *prefix);
/* Number of tensors whose name contains s. */
size_t imgd_view_count_substr(const imgd_view *v, const char *s);
/* 1 + the largest N among names root+prefix+"N." (0 when none). */
int32_t imgd_view_index_count(const imgd_view *v, const char *prefix);

/* ---- configs ---------------------------------------------------------------------- */

typedef struct imgd_unet_config {
    int32_t in_channels, out_channels, model_channels, n_levels, layers_per_block;
    int32_t widths[IMGD_MAX_LEVELS];     /* block_out_channels */
    int32_t attn_depth[IMGD_MAX_LEVELS]; /* transformer depth per level; 0 = no attention */
    int32_t mid_depth;                   /* -1 = no mid-block attention */
    int32_t context_dim;                 /* 0 = no cross-attention */
    int32_t adm_in_channels;             /* SDXL label embedding input; 0 = none */
    int32_t time_embed_dim;
    int32_t heads[IMGD_MAX_LEVELS]; /* attention heads per level (mid uses the last) */
    int32_t groups;                 /* GroupNorm groups */
    int32_t encoder_hid_dim;        /* Kolors-style text projection input; 0 = none */
    bool    linear_proj;
    bool    ldm_names;         /* original LDM/SGM names (input_blocks...) */
    bool    heads_from_config; /* heads given by config.json / yaml, not a default */
} imgd_unet_config;

typedef struct imgd_vae_config {
    int32_t in_channels, out_channels, latent_channels, base_channels, n_levels, layers_per_block,
        groups;
    int32_t widths[IMGD_MAX_LEVELS];
    bool    has_encoder, has_decoder, has_quant_conv, mid_attention;
    bool    ldm_names;           /* original LDM names (encoder.down.N...) */
    bool    scaling_from_config; /* scaling/shift given by config.json, not a family default */
    float   scaling_factor, shift_factor;
} imgd_vae_config;

typedef enum imgd_te_type {
    IMGD_TE_CLIP_HF = 1, /* transformers CLIPTextModel names */
    IMGD_TE_OPENCLIP,    /* open_clip names (resblocks, in_proj_weight) */
    IMGD_TE_T5,
    IMGD_TE_TYPE_COUNT
} imgd_te_type;

typedef struct imgd_te_config {
    const char  *component; /* "text_encoder", "text_encoder_2", ... */
    imgd_te_type type;
    int32_t      layers, hidden, heads, intermediate, vocab, positions, projection_dim;
    bool         gelu_erf; /* false: quick_gelu (CLIP-L) */
} imgd_te_config;

typedef enum imgd_dit_type {
    IMGD_DIT_MMDIT = 1, /* SD3 */
    IMGD_DIT_FLUX,
    IMGD_DIT_PIXART,
    IMGD_DIT_HUNYUAN,
    IMGD_DIT_COGVIDEOX,
    IMGD_DIT_WAN,
    IMGD_DIT_TYPE_COUNT
} imgd_dit_type;

typedef struct imgd_dit_config {
    imgd_dit_type type;
    int32_t       depth, depth_single, hidden, heads, head_dim, patch, in_channels, context_dim,
        pooled_dim, pos_embed_max;
    int32_t n_axes;       /* FLUX rope axes (axes_dims_rope); 0 = unknown */
    int32_t axes_dims[4]; /* FLUX: (16, 56, 56) for head dim 128, or config.json's */
    bool    guidance_embed;
    bool    original_names;   /* BFL / SD3 reference names rather than diffusers */
    bool    axes_from_config; /* axes_dims / heads given by config.json */
} imgd_dit_config;

typedef struct imgd_adapter_info {
    const char *algo;  /* "lora", "loha", "lokr", "locon", "ia3", "full", "glora" */
    int32_t     rank;  /* most common rank; 0 = n/a */
    float       alpha; /* most common alpha; NAN when absent */
    int32_t     modules, unet_modules, te_modules, te2_modules, conv_modules;
    int32_t     cross_dim; /* width of cross-attention keys it touches; 0 = unknown */
    int32_t     te_width, te2_width;
} imgd_adapter_info;

typedef struct imgd_embedding_info {
    int32_t     vectors, width, width_g;
    const char *trigger;
} imgd_embedding_info;

/* Prediction type of a denoiser. */
typedef enum imgd_prediction {
    IMGD_PRED_UNKNOWN = 0,
    IMGD_PRED_EPSILON,
    IMGD_PRED_V,
    IMGD_PRED_FLOW,
    IMGD_PRED_AMBIGUOUS, /* eps or v, not decidable from the header */
    IMGD_PRED_COUNT
} imgd_prediction;

enum {
    IMGD_VARIANT_INPAINT          = 1u << 0,
    IMGD_VARIANT_INSTRUCT_PIX2PIX = 1u << 1,
    IMGD_VARIANT_V_PREDICTION     = 1u << 2,
    IMGD_VARIANT_EMA              = 1u << 3,
    IMGD_VARIANT_QUANTIZED        = 1u << 4,
    IMGD_VARIANT_PRUNED           = 1u << 5,
    IMGD_VARIANT_FP16             = 1u << 6,
    IMGD_VARIANT_BF16             = 1u << 7,
    IMGD_VARIANT_COUNT            = 8
};

enum {
    IMGD_CAP_TXT2IMG = 1u << 0,
    IMGD_CAP_IMG2IMG = 1u << 1,
    IMGD_CAP_INPAINT = 1u << 2,
    IMGD_CAP_CONTROL = 1u << 3,
    IMGD_CAP_UPSCALE = 1u << 4,
    IMGD_CAP_COUNT   = 5
};

/* Components a generation pipeline needs. */
enum {
    IMGD_COMP_DENOISER = 1u << 0,
    IMGD_COMP_VAE      = 1u << 1,
    IMGD_COMP_TE1      = 1u << 2,
    IMGD_COMP_TE2      = 1u << 3,
    IMGD_COMP_TE3      = 1u << 4,
    IMGD_COMP_COUNT    = 5
};

#define IMGD_EVIDENCE_MAX 48

struct imgd_model_info {
    imgd_format     w_format;
    imgd_model_kind kind;
    imgd_family     family;
    uint32_t        variants;        /* IMGD_VARIANT_* */
    uint32_t        capabilities;    /* IMGD_CAP_* */
    uint32_t        present, needed; /* IMGD_COMP_* */
    imgd_prediction prediction;
    const char     *layout;  /* "ldm", "diffusers", "bfl", "kohya", "peft", "a1111", ... */
    const char     *subtype; /* e.g. "loha", "esrgan", "realesrgan", "swinir", "decoder" */
    const char     *root;    /* stripped wrapper prefix */
    const char     *denoiser_prefix, *vae_prefix;

    bool                has_unet, has_vae, has_dit;
    imgd_unet_config    unet;
    imgd_vae_config     vae;
    imgd_dit_config     dit;
    imgd_te_config      te[IMGD_MAX_TE];
    int32_t             n_te;
    imgd_adapter_info   adapter;
    imgd_embedding_info embedding;
    int32_t             upscale_factor; /* upscalers: 2, 4, ... */

    uint64_t params_denoiser, params_vae, params_te, params_other;
    uint64_t dtype_bytes[IMGD_DTYPE_COUNT];

    const char *evidence[IMGD_EVIDENCE_MAX];
    int32_t     n_evidence;
    const char *candidates; /* for unknown: the closest kinds and why */
    imgd_arena  arena;
};

/* Adds one evidence line (formatted into the info's arena). */
void imgd_detect_note(imgd_model_info *mi, const char *fmt, ...) IMGD_PRINTF(2, 3);

/* Component detectors (detect_nets.c). Each returns true when it recognised its
 * component under prefix and filled the config. */
bool imgd_detect_unet(const imgd_view *v, const char *prefix, imgd_unet_config *c,
                      imgd_model_info *mi);
bool imgd_detect_vae(const imgd_view *v, const char *prefix, imgd_vae_config *c,
                     imgd_model_info *mi);
bool imgd_detect_te(const imgd_view *v, const char *prefix, imgd_te_config *c, imgd_model_info *mi);
bool imgd_detect_dit(const imgd_view *v, const char *prefix, imgd_dit_config *c,
                     imgd_model_info *mi);

/* Adapter and small-file detectors (detect_adapters.c): LoRA/LyCORIS, embeddings,
 * hypernetworks, ControlNet, T2I-adapters, upscalers, TAESD. Each returns true and
 * sets kind/family when it recognised the file. */
bool imgd_detect_adapters(const imgd_view *v, imgd_model_info *mi);

/* Appends the info as a JSON object (info_json.c). */
struct imgd_buf;
imgd_status imgd_detect_render_json(const imgd_model_info *mi, struct imgd_buf *b);

/* Applies a config.json / model_index.json / .yaml override of heads, groups, prediction
 * (detect.c). */
void imgd_detect_apply_configs(const imgd_weights *w, const char *path, imgd_model_info *mi);

#endif
