/* Labelled detection corpus: header-only model files (real module trees, names and shapes;
 * a sparse data hole instead of weights) built from architecture generators that follow the
 * reference implementations (diffusers / transformers / LDM-SGM / BFL / SD3 / open_clip /
 * kohya / PEFT / LyCORIS / A1111 / BasicSR ...). Every generator is parameterised by a config,
 * so real-size and narrow or unusual-width variants come from the same code. */
#ifndef IMGD_TESTS_DETECT_CORPUS_GEN_H
#define IMGD_TESTS_DETECT_CORPUS_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "header_only.h"
#include "imgd.h"

#define CG_MAX_LEVELS 6

/* ---- tensor output ---------------------------------------------------------------- */

typedef struct cg_out         cg_out;
typedef struct cg_adapter_cfg cg_adapter_cfg;

/* Receives every tensor a generator emits instead of the file (adapter builders). */
typedef void (*cg_sink_fn)(cg_out *o, const char *name, const char *dtype, int32_t n_dims,
                           const int64_t *shape);

struct cg_out {
    ho_file    *f;        /* where tensors go when sink is NULL */
    const char *dtype;    /* dtype of weights with 2+ dims ("F32", "F16", "BF16", "F8_E4M3") */
    const char *dtype_1d; /* dtype of biases and norm weights; NULL = dtype */
    cg_sink_fn  sink;     /* may be NULL */
    void       *user;     /* for sink */
    cg_out     *dst;      /* adapter sink: where the adapter tensors go */
    const cg_adapter_cfg *adapter; /* adapter sink: what to write */
};

/* A tensor named by fmt; dtype NULL = o->dtype / o->dtype_1d by rank. */
void cg_tensor(cg_out *o, const char *dtype, int32_t n_dims, const int64_t *shape, const char *fmt,
               ...) IMGD_PRINTF(5, 6);
/* nn.Linear: <name>.weight [out, in] (+ <name>.bias [out]). */
void cg_linear(cg_out *o, int64_t in, int64_t out, bool bias, const char *fmt, ...)
    IMGD_PRINTF(5, 6);
/* nn.Conv2d: <name>.weight [out, in, k, k] (+ <name>.bias [out]). */
void cg_conv(cg_out *o, int64_t in, int64_t out, int64_t k, bool bias, const char *fmt, ...)
    IMGD_PRINTF(6, 7);
/* GroupNorm / LayerNorm: <name>.weight [c] (+ <name>.bias [c]). */
void cg_norm(cg_out *o, int64_t c, bool bias, const char *fmt, ...) IMGD_PRINTF(4, 5);

/* ---- architecture configs and generators -------------------------------------------- */

/* UNet2DConditionModel / LDM-SGM openaimodel UNetModel. */
typedef struct cg_unet_cfg {
    int32_t in_ch, out_ch;
    int32_t n_levels;
    int32_t widths[CG_MAX_LEVELS]; /* block_out_channels; widths[0] = model_channels */
    int32_t depth[CG_MAX_LEVELS];  /* transformer depth per level; 0 = no attention */
    int32_t nrb;                   /* res blocks per level (layers_per_block) */
    int32_t mid_depth;             /* transformer depth in the middle block; 0 = none */
    int32_t ctx;                   /* cross-attention (context) width */
    int32_t adm;                   /* label_emb / add_embedding input width; 0 = none */
    int32_t encoder_hid;           /* Kolors encoder_hid_proj input width; 0 = none */
    int32_t heads;                 /* attention heads (config files only; not in shapes) */
    bool    linear_proj;           /* proj_in/proj_out Linear (SD2/SDXL) vs 1x1 conv (SD1) */
} cg_unet_cfg;

void cg_unet_ldm(cg_out *o, const char *pre, const cg_unet_cfg *c);
void cg_unet_diffusers(cg_out *o, const char *pre, const cg_unet_cfg *c);
/* ControlNet: cldm names (input_hint_block, zero_convs, middle_block_out) and diffusers
 * ControlNetModel names (controlnet_cond_embedding, controlnet_down_blocks). */
void cg_controlnet_ldm(cg_out *o, const char *pre, const cg_unet_cfg *c);
void cg_controlnet_diffusers(cg_out *o, const char *pre, const cg_unet_cfg *c);

/* AutoencoderKL (LDM names or diffusers names). */
typedef struct cg_vae_cfg {
    int32_t in_ch, out_ch, z, n_levels, nrb;
    int32_t widths[CG_MAX_LEVELS];
    bool    quant_conv;  /* quant_conv / post_quant_conv (SD/SDXL yes, SD3/FLUX no) */
    bool    legacy_attn; /* diffusers < 0.14 mid attention names (query/key/value/proj_attn) */
    bool    no_encoder;  /* decoder only */
} cg_vae_cfg;

void cg_vae_ldm(cg_out *o, const char *pre, const cg_vae_cfg *c);
void cg_vae_diffusers(cg_out *o, const char *pre, const cg_vae_cfg *c);

/* Text encoders: transformers CLIPTextModel(WithProjection), open_clip text tower, T5. */
typedef struct cg_te_cfg {
    int32_t layers, hidden, mlp, heads, vocab, positions;
    int32_t proj;         /* text_projection width; 0 = none */
    bool    position_ids; /* transformers < 4.31 saved the position_ids buffer */
} cg_te_cfg;

void cg_clip_hf(cg_out *o, const char *pre, const cg_te_cfg *c);
void cg_openclip(cg_out *o, const char *pre, const cg_te_cfg *c);
void cg_t5_encoder(cg_out *o, const char *pre, const cg_te_cfg *c);

/* Diffusion transformers. */
typedef struct cg_dit_cfg {
    int32_t hidden, depth, depth_single, heads, in_ch, out_ch, patch;
    int32_t ctx;      /* text feature width (T5 4096, ...) */
    int32_t pooled;   /* pooled text width (CLIP-L 768, SD3 2048) */
    int32_t mlp;      /* feed-forward width; 0 = 4 × hidden */
    int32_t pos_max;  /* SD3 pos_embed_max_size */
    int32_t x_attn2;  /* SD3.5 medium (MMDiT-X): leading blocks with a second x attention */
    bool    guidance; /* FLUX.1 dev guidance embedding */
    bool    qk_norm;  /* SD3.5 */
} cg_dit_cfg;

void cg_flux_bfl(cg_out *o, const char *pre, const cg_dit_cfg *c);
void cg_flux_diffusers(cg_out *o, const char *pre, const cg_dit_cfg *c);
void cg_mmdit_sd3(cg_out *o, const char *pre, const cg_dit_cfg *c);
void cg_sd3_diffusers(cg_out *o, const char *pre, const cg_dit_cfg *c);
void cg_pixart(cg_out *o, const char *pre, const cg_dit_cfg *c);
void cg_hunyuan_dit(cg_out *o, const char *pre, const cg_dit_cfg *c);
void cg_cogvideox(cg_out *o, const char *pre, const cg_dit_cfg *c);
void cg_wan_original(cg_out *o, const char *pre, const cg_dit_cfg *c);
void cg_wan_diffusers(cg_out *o, const char *pre, const cg_dit_cfg *c);

/* Adapters: runs a base-model generator into a collecting sink and writes, for every module
 * pick() accepts, the adapter tensors of the chosen algorithm into dst. */
typedef bool (*cg_pick_fn)(const char *module, int32_t n_dims, const int64_t *shape);

struct cg_adapter_cfg {
    const char *algo;        /* "lora", "loha", "lokr" */
    const char *head;        /* name prefix: "lora_unet_", "lora_te1_", "unet.", ... */
    bool        underscores; /* kohya: the module path's '.' become '_' */
    bool        peft;        /* lora_A / lora_B, no alpha */
    int32_t     rank;
    int32_t     conv_rank; /* rank for k×k (k > 1) convs; 0 = skip them */
    cg_pick_fn  pick;
};

/* Prepares src so that a generator run on it (prefix "") emits adapters into dst. */
void cg_adapter_out(cg_out *src, cg_out *dst, const cg_adapter_cfg *a);

/* ---- the labelled corpus ------------------------------------------------------------ */

typedef struct cg_label {
    imgd_model_kind kind;
    imgd_family     family;
    const char     *variants;    /* space-separated names that must be reported; NULL = none */
    const char     *no_variants; /* space-separated names that must not be reported */
    const char     *layout;      /* expected layout; NULL = not checked */
    const char     *prediction;  /* expected prediction; NULL = not checked */
    /* The UNet the file was generated from: the inferred config (block_out_channels,
     * transformer_depth, layers_per_block, in/out channels, context_dim, linear projection,
     * adm_in_channels, mid depth) must match it. NULL = not checked. */
    const cg_unet_cfg *unet;
} cg_label;

typedef struct cg_case {
    const char *name;
    cg_label    label;
    /* Writes the case under dir (an existing empty folder); target receives the path to open
     * (a file or a folder). Returns 0 on success. */
    int (*build)(const char *dir, char *target, size_t cap);
    const char *what; /* what the file is, in words */
} cg_case;

size_t         cg_case_count(void);
const cg_case *cg_case_at(size_t i);

#endif
