/* Graph builders: one per op (STYLE M4: imgd_op_<name> -> static <name>_impl in ops.c).
 *
 * Every builder returns the new tensor, or NULL after recording a sticky error on the graph
 * (tensor/tensor.h); any NULL input makes it return NULL. Inputs may be any layout (views
 * included) and f32/f16/bf16 (quantized too where noted as a weight); the builder inserts
 * the casts, dequantization and contiguous copies a kernel needs. Results are f32 and
 * contiguous unless noted. Negative axes count from the end. Shapes are PyTorch order.
 *
 * Parameters stored on the node, for backend authors:
 *   view            no compute; shape/stride/offset describe the window
 *   cast            any strides in; dtype = target
 *   concat          ip[0] = axis; src[0..n) any strides, same dtype; out dtype = theirs
 *   pad             ip[2d] / ip[2d+1] = before / after of dim d; fp[0] = value; src contiguous
 *   upsample        src contiguous, x2 nearest on the last two dims
 *   avg_pool2d      ip = {k, stride, pad}; count_include_pad semantics; src contiguous
 *   linear_quant    src = {x [..., K] contiguous f32, w [N, K] quantized weight leaf (K a
 *                   multiple of its block), bias [N] f32 or NULL}; out [..., N]
 *   matmul          src[0] a [..., M, K], src[1] b [..., K, N] (any strides with one of the
 *                   last two dims unit-stride; batch dims broadcast), src[2] bias [N] or NULL
 *   conv2d          src = {x [N,C,H,W], w [O,C,KH,KW], bias [O] or NULL}, all contiguous;
 *                   ip = {stride_h, stride_w, pad_h, pad_w}
 *   group_norm      src = {x [N,C,...], gamma [C] or NULL, beta [C] or NULL}; ip = {groups,
 *                   silu}; fp[0] = eps
 *   layer_norm      src = {x [..., D], gamma [D]|NULL, beta [D]|NULL}; fp[0] = eps
 *   rms_norm        src = {x [..., D], gamma [D]|NULL}; fp[0] = eps
 *   softmax         fp[0] = scale (softmax(x * scale)) over the last dim
 *   attention       src = {q [B,Lq,H,D], k [B,Lk,H,D], v [B,Lk,H,Dv], mask or NULL}; q/k/v
 *                   any strides with unit innermost stride; mask f32, unit innermost stride,
 *                   broadcastable to [B,H,Lq,Lk]; fp[0] = scale; out [B,Lq,H,Dv]
 *   gelu..silu      elementwise on contiguous f32
 *   geglu           [..., 2D] -> [..., D]
 *   clamp           fp = {lo, hi};   scale  fp = {s, b}
 *   add/sub/mul/div src contiguous, shapes broadcast (numpy rules)
 *   timestep_emb.   src[0] t [N]; ip = {dim, flip_sin_to_cos}; fp = {max_period, shift}
 *   rope            src = {x [B,L,H,D], pos [L, A] contiguous}; ip = {mode, n_rot, A,
 *                   d_0 .. d_{A-1}} (axis dims, even, sum n_rot); fp[0] = theta. Pair k
 *                   (0 <= k < n_rot/2) belongs to the axis a whose half-dims cover it,
 *                   j = k - (d_0 + .. + d_{a-1})/2, angle = pos[l, a] * theta^(-2j/d_a) */
#ifndef IMGD_TENSOR_OPS_H
#define IMGD_TENSOR_OPS_H

#include "tensor/tensor.h"

/* ---- layout and views ------------------------------------------------------------------ */

/* Contiguous copy of x (same dtype). */
imgd_tensor *imgd_op_cont(imgd_graph *g, imgd_tensor *x);
/* Contiguous copy converted to dtype (F32, F16 or BF16). */
imgd_tensor *imgd_op_cast(imgd_graph *g, imgd_tensor *x, imgd_dtype dtype);
/* Quantized weight (Q8_0, Q4_0, Q4_K, ... any type imgd_quant_dequantize reads) -> f32. */
imgd_tensor *imgd_op_dequantize(imgd_graph *g, imgd_tensor *w);

/* View with a new shape (one entry may be -1). Copies first when x is not contiguous. */
imgd_tensor *imgd_op_reshape(imgd_graph *g, imgd_tensor *x, int32_t n_dims, const int64_t *shape);
/* View with dims reordered: result dim i is x's dim perm[i]. */
imgd_tensor *imgd_op_permute(imgd_graph *g, imgd_tensor *x, const int32_t *perm);
/* View with two dims swapped. */
imgd_tensor *imgd_op_transpose(imgd_graph *g, imgd_tensor *x, int32_t d0, int32_t d1);
/* View of x[..., start:start+len, ...] along axis. */
imgd_tensor *imgd_op_narrow(imgd_graph *g, imgd_tensor *x, int32_t axis, int64_t start,
                            int64_t len);
/* Views of consecutive pieces of sizes[0..n) along axis (sum must equal the dim) into
 * outs[0..n). Returns the sticky status (outs untouched on failure). */
imgd_status imgd_op_split(imgd_graph *g, imgd_tensor *x, int32_t axis, int32_t n,
                          const int64_t *sizes, imgd_tensor **outs);
/* Raw view: shape/stride (elements) relative to x's first element plus offset elements;
 * must stay inside x's storage. */
imgd_tensor *imgd_op_view(imgd_graph *g, imgd_tensor *x, int32_t n_dims, const int64_t *shape,
                          const int64_t *stride, int64_t offset);

/* Concatenation of srcs[0..n) (1..IMGD_TENSOR_SRC_MAX) along axis; all other dims equal.
 * Keeps the dtype when all inputs share it, else f32. */
imgd_tensor *imgd_op_concat(imgd_graph *g, int32_t n, imgd_tensor *const *srcs, int32_t axis);
/* Constant padding: before[d]/after[d] elements (>= 0) for each of x's n_dims dims. */
imgd_tensor *imgd_op_pad(imgd_graph *g, imgd_tensor *x, const int64_t *before, const int64_t *after,
                         float value);
/* Nearest-neighbour x2 on the last two dims ([..., H, W] -> [..., 2H, 2W]); keeps dtype. */
imgd_tensor *imgd_op_upsample_nearest2x(imgd_graph *g, imgd_tensor *x);
/* Average pooling on the last two dims, padding counted in the divisor (PyTorch default). */
imgd_tensor *imgd_op_avg_pool2d(imgd_graph *g, imgd_tensor *x, int32_t kernel, int32_t stride,
                                int32_t pad);

/* ---- dense ------------------------------------------------------------------------------ */

/* a [..., M, K] (or [..., K, M] when trans_a) times b [..., K, N] (or [..., N, K] when
 * trans_b); batch dims broadcast; bias [N] or NULL. Weights may be f16/bf16/quantized. */
imgd_tensor *imgd_op_matmul(imgd_graph *g, imgd_tensor *a, imgd_tensor *b, bool trans_a,
                            bool trans_b, imgd_tensor *bias);
/* x [..., in] @ w[out, in]^T + bias[out] (bias may be NULL): torch.nn.Linear. */
imgd_tensor *imgd_op_linear(imgd_graph *g, imgd_tensor *x, imgd_tensor *w, imgd_tensor *bias);
/* torch.nn.Linear with a quantized weight w [out, in] (Q8_0, Q4_0, Q4_K, Q5_K, ... any type
 * imgd_quant_dequantize reads; in a multiple of its block size): the kernel dequantizes
 * blocks on the fly into a small tile and accumulates in f32, so no f32 copy of the weight
 * exists. Backends: cpu and ref (cuda: imgd_graph_plan says unsupported; build with
 * imgd_op_linear there). imgd_op_linear builds this when the graph was created with
 * fuse_quant_linear. */
imgd_tensor *imgd_op_linear_quant(imgd_graph *g, imgd_tensor *x, imgd_tensor *w, imgd_tensor *bias);
/* x [N, C, H, W] * w [O, C, KH, KW] (+ bias [O]) with symmetric stride and padding. */
imgd_tensor *imgd_op_conv2d(imgd_graph *g, imgd_tensor *x, imgd_tensor *w, imgd_tensor *bias,
                            int32_t stride, int32_t pad);
/* Same with separate strides and paddings per spatial dim. */
imgd_tensor *imgd_op_conv2d_ex(imgd_graph *g, imgd_tensor *x, imgd_tensor *w, imgd_tensor *bias,
                               int32_t stride_h, int32_t stride_w, int32_t pad_h, int32_t pad_w);

/* ---- normalisation and attention -------------------------------------------------------- */

/* torch.nn.GroupNorm over x [N, C, ...] (C divisible by groups); gamma/beta [C] or NULL;
 * silu fuses a SiLU after the affine step. */
imgd_tensor *imgd_op_group_norm(imgd_graph *g, imgd_tensor *x, int32_t groups, float eps,
                                imgd_tensor *gamma, imgd_tensor *beta, bool silu);
/* torch.nn.LayerNorm over the last dim; gamma/beta [D] or NULL. */
imgd_tensor *imgd_op_layer_norm(imgd_graph *g, imgd_tensor *x, float eps, imgd_tensor *gamma,
                                imgd_tensor *beta);
/* x / sqrt(mean(x^2) + eps) * gamma over the last dim; gamma [D] or NULL. */
imgd_tensor *imgd_op_rms_norm(imgd_graph *g, imgd_tensor *x, float eps, imgd_tensor *gamma);
/* softmax(x * scale) over the last dim. */
imgd_tensor *imgd_op_softmax(imgd_graph *g, imgd_tensor *x, float scale);
/* softmax(q k^T * scale + mask) v per batch and head, never materialising the attention
 * matrix. q [B, Lq, H, D], k [B, Lk, H, D], v [B, Lk, H, Dv] (flash-attention layout:
 * reshape a projection [B, L, H*D] to [B, L, H, D], no copy); mask NULL or additive f32
 * broadcastable to [B, H, Lq, Lk] (-inf allowed, not a whole row); scale <= 0 means
 * 1/sqrt(D). Result [B, Lq, H, Dv]. */
imgd_tensor *imgd_op_attention(imgd_graph *g, imgd_tensor *q, imgd_tensor *k, imgd_tensor *v,
                               imgd_tensor *mask, float scale);

/* ---- elementwise ------------------------------------------------------------------------ */

imgd_tensor *imgd_op_gelu(imgd_graph *g, imgd_tensor *x);       /* erf form */
imgd_tensor *imgd_op_gelu_tanh(imgd_graph *g, imgd_tensor *x);  /* tanh approximation */
imgd_tensor *imgd_op_quick_gelu(imgd_graph *g, imgd_tensor *x); /* x * sigmoid(1.702 x) */
imgd_tensor *imgd_op_silu(imgd_graph *g, imgd_tensor *x);
/* diffusers GEGLU after its projection: [a, b] = chunk(x, 2, -1); a * gelu(b). */
imgd_tensor *imgd_op_geglu(imgd_graph *g, imgd_tensor *x);
imgd_tensor *imgd_op_clamp(imgd_graph *g, imgd_tensor *x, float lo, float hi);
/* x * s + b */
imgd_tensor *imgd_op_scale(imgd_graph *g, imgd_tensor *x, float s, float b);
imgd_tensor *imgd_op_add(imgd_graph *g, imgd_tensor *a, imgd_tensor *b);
imgd_tensor *imgd_op_sub(imgd_graph *g, imgd_tensor *a, imgd_tensor *b);
imgd_tensor *imgd_op_mul(imgd_graph *g, imgd_tensor *a, imgd_tensor *b);
imgd_tensor *imgd_op_div(imgd_graph *g, imgd_tensor *a, imgd_tensor *b);

/* ---- embeddings ------------------------------------------------------------------------- */

/* diffusers get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift = shift,
 * max_period): t [N] -> [N, dim]; freqs exp(-ln(max_period) * i / (dim/2 - shift));
 * [sin, cos] halves, [cos, sin] when flip_sin_to_cos; odd dim zero-pads the last column. */
imgd_tensor *imgd_op_timestep_embedding(imgd_graph *g, imgd_tensor *t, int32_t dim,
                                        bool flip_sin_to_cos, float shift, float max_period);

typedef enum imgd_rope_mode {
    IMGD_ROPE_NEOX       = 0, /* rotate halves: (x[i], x[i + n/2]) pairs (GPT-NeoX, SD3) */
    IMGD_ROPE_INTERLEAVE = 1, /* rotate adjacent pairs (x[2i], x[2i+1]) (Flux, GPT-J) */
    IMGD_ROPE_MODE_COUNT
} imgd_rope_mode;

/* Rotary embedding of x [B, L, H, D] at positions pos [L]: the first n_rot dims (even,
 * <= D; 0 = D) rotate by angle pos * theta^(-2i/n_rot); the rest pass through. */
imgd_tensor *imgd_op_rope(imgd_graph *g, imgd_tensor *x, imgd_tensor *pos, imgd_rope_mode mode,
                          int32_t n_rot, float theta);

#define IMGD_ROPE_AXES_MAX 8

/* Multi-axis rotary embedding (FLUX's EmbedND): x [B, L, H, D], pos [L, n_axes] (one
 * position per token and axis, e.g. FLUX ids (0, row, col)). The first sum(axes_dims) dims
 * of each head rotate (axes_dims[a] even, 1 <= n_axes <= IMGD_ROPE_AXES_MAX): axis a owns
 * the next axes_dims[a] / 2 rotation pairs, pair j of it turns by pos[l, a] *
 * theta^(-2j / axes_dims[a]). Angles and cos/sin in double, as diffusers (float64). */
imgd_tensor *imgd_op_rope_nd(imgd_graph *g, imgd_tensor *x, imgd_tensor *pos, imgd_rope_mode mode,
                             int32_t n_axes, const int32_t *axes_dims, float theta);

/* For rope kernels: the rotation frequency exponent of pair k of a rope node's ip (see the
 * node parameters above): *axis receives the axis, the return value -2j/d_axis. */
static inline double imgd_rope_pair_exp(const int64_t *ip, int64_t k, int32_t *axis) {
    int64_t start = 0;
    for (int32_t a = 0; a < (int32_t)ip[2]; a++) {
        int64_t h = ip[3 + a] / 2;
        if (k < start + h) {
            *axis = a;
            return -2.0 * (double)(k - start) / (double)ip[3 + a];
        }
        start += h;
    }
    *axis = 0;
    return 0.0;
}

#endif
