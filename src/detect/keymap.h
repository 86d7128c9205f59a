/* Canonical key mapping: every tensor of a model bound by one internal name, whatever
 * layout the file uses. Canonical names are the diffusers/transformers module paths with
 * a component prefix: "unet.down_blocks.0.resnets.0.conv1.weight",
 * "vae.decoder.up_blocks.0.resnets.0.norm1.weight",
 * "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight",
 * "text_encoder_2.text_projection.weight", "controlnet.controlnet_down_blocks.0.weight".
 * Diffusion transformers keep their file's own names under "transformer.". */
#ifndef IMGD_DETECT_KEYMAP_H
#define IMGD_DETECT_KEYMAP_H

#include "detect/detect.h"

/* How the source tensor becomes the canonical one. */
typedef enum imgd_km_op {
    IMGD_KM_SAME = 0,    /* identical bytes and shape */
    IMGD_KM_SQUEEZE,     /* [O, I, 1, 1] conv stored where the canonical module is [O, I] */
    IMGD_KM_ROWS,        /* rows [row_begin, row_end) of a 2-D (or 1-D) tensor: fused qkv */
    IMGD_KM_TRANSPOSE,   /* 2-D transpose (open_clip text_projection) */
    IMGD_KM_SWAP_HALVES, /* first and second half of the rows exchanged (BFL's final-layer
                            modulation stores (shift, scale), diffusers (scale, shift)) */
    IMGD_KM_OP_COUNT
} imgd_km_op;

typedef struct imgd_km_entry {
    const char *canonical; /* in the map's arena */
    size_t      src;       /* index into the weights' tensors */
    imgd_km_op  op;
    int64_t     row_begin, row_end;
} imgd_km_entry;

typedef struct imgd_keymap {
    imgd_km_entry *e;
    size_t         n, alloc;
    imgd_strmap    index; /* canonical name -> entry */
    size_t         n_unmapped;
    const char    *unmapped_example[4];
    imgd_arena     arena;
} imgd_keymap;

/* Builds the canonical map of w as detected in mi. Tensors that belong to no component
 * (schedule buffers, EMA copies, position_ids) are counted as unmapped, never dropped
 * silently. IMGD_E_UNSUPPORTED when the layout has no mapping (message says which). */
imgd_status imgd_keymap_build(const imgd_weights *w, const imgd_model_info *mi, imgd_keymap **out);
const imgd_km_entry *imgd_keymap_find(const imgd_keymap *km, const char *canonical);
void                 imgd_keymap_free(imgd_keymap *km);

/* The original LDM/SGM name (input_blocks / middle_block / output_blocks ...) of a diffusers
 * UNet name without the "unet." prefix ("down_blocks.1.attentions.0.proj_in.weight" ->
 * "input_blocks.4.1.proj_in.weight"), the inverse of the LDM key map, for adapters that use
 * LDM module names (kohya SDXL LoRAs: lora_unet_input_blocks_4_1_...). false when the name
 * has no LDM spelling or does not fit cap. */
bool imgd_keymap_unet_to_ldm(const imgd_unet_config *c, const char *in, char *out, size_t cap);

#endif
