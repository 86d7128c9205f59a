/* A1111 hypernetworks (modules/hypernetworks/hypernetwork.py): for each cross-attention
 * context width (768, 1024, 320, 640, 1280, ...) two small MLPs, one for the keys and one
 * for the values; A1111 feeds to_k / to_v of every attention whose context has that width
 * (self-attention too: its context is its input) with context + mlp(context) * strength
 * instead of the context. The UNet applies them through imgd_unet_extra.hypernets.
 *
 * Files: A1111's .pt (read by the safe pickle reader: tensors "<width>.<0|1>.linear.<n>.
 * weight|bias", the scalar entries activation_func, is_layer_norm, activate_output,
 * use_dropout, last_layer_dropout as metadata) or the same names in a .safetensors file
 * with those metadata keys. Each MLP is A1111's HypernetworkModule: Linear layers (2-D
 * weights) with an activation after each but the last (after the last too when
 * activate_output), a LayerNorm (1-D weights, eps 1e-5) after each Linear when
 * is_layer_norm; dropout is the identity at inference. Supported activations: linear,
 * relu, swish (SiLU), gelu; others are refused naming the value.
 *
 *     imgd_hypernet *h;
 *     imgd_hypernet_load("anime.pt", &h);
 *     k_ctx = imgd_hypernet_apply(g, h, 0, ctx, 0.8f);   // 1 for the values
 *
 * Thread-safety: a loaded hypernetwork is read-only (any thread). Layer: models. */
#ifndef IMGD_MODELS_HYPERNET_H
#define IMGD_MODELS_HYPERNET_H

#include "base/base.h"
#include "tensor/tensor.h"

#define IMGD_HYPERNET_WIDTHS_MAX 8
#define IMGD_HYPERNET_LAYERS_MAX 16

typedef enum imgd_hypernet_act {
    IMGD_HYPERNET_ACT_LINEAR = 0, /* no activation */
    IMGD_HYPERNET_ACT_RELU   = 1,
    IMGD_HYPERNET_ACT_SWISH  = 2, /* torch.nn.Hardswish is not this: A1111's "swish" is SiLU */
    IMGD_HYPERNET_ACT_GELU   = 3,
    IMGD_HYPERNET_ACT_COUNT
} imgd_hypernet_act;

/* One layer of an MLP, f32 copies of the file's tensors. */
typedef struct imgd_hypernet_layer {
    bool    norm;    /* LayerNorm over out (w, b [out]); else Linear (w [out, in], b [out]) */
    bool    act;     /* the activation follows (Linear layers only) */
    int64_t out, in; /* in = out for a LayerNorm */
    float  *w, *b;
} imgd_hypernet_layer;

typedef struct imgd_hypernet_mlp {
    imgd_hypernet_layer layer[IMGD_HYPERNET_LAYERS_MAX];
    int32_t             n;
} imgd_hypernet_mlp;

typedef struct imgd_hypernet {
    int32_t           n;                               /* widths */
    int32_t           dim[IMGD_HYPERNET_WIDTHS_MAX];   /* context width of each */
    imgd_hypernet_mlp kv[IMGD_HYPERNET_WIDTHS_MAX][2]; /* [width][0: keys, 1: values] */
    int32_t           act;                             /* imgd_hypernet_act */
    bool              layer_norm, activate_output;
} imgd_hypernet;

/* Loads a hypernetwork file. Returns IMGD_OK; the statuses of imgd_weights_open (IMGD_E_IO,
 * IMGD_E_UNSAFE for a pickle that would run code, ...); IMGD_E_FORMAT naming the tensor or
 * entry that does not fit the structure above (a stray tensor, a missing bias, layers whose
 * widths do not chain, an MLP that does not map the width to itself, a LayerNorm where
 * is_layer_norm says none); IMGD_E_UNSUPPORTED for an activation not listed above;
 * IMGD_E_NOMEM. *out is written only on success; free with imgd_hypernet_free. */
imgd_status imgd_hypernet_load(const char *path, imgd_hypernet **out);
void        imgd_hypernet_free(imgd_hypernet *h);

/* Appends ctx + mlp(ctx) * strength to g for the keys (which = 0) or values (1) of the
 * width of ctx's last dimension; ctx itself when h has no MLP for that width. The weights
 * are borrowed by g (h must outlive it). NULL with g's sticky error on bad arguments. */
imgd_tensor *imgd_hypernet_apply(imgd_graph *g, const imgd_hypernet *h, int32_t which,
                                 imgd_tensor *ctx, float strength);

#endif
