/* Every op on every backend configuration against the reference backend (STYLE X2, the
 * shape of ggml's test-backend-ops).
 *
 * A case is a row: the op it exercises, a build function, a vars string that both
 * parameterises the build and names the case in output, and an NMSE tolerance (0 = the
 * default for the case's type: 1e-7; f16/bf16 inputs are exact in f32 so share it). The
 * graph is built twice from the same seed, once for "ref" and once for the backend under
 * test, and the outputs compared: non-finite values are reported separately from NMSE.
 *
 *   test_ops [--op NAME[,NAME...]] [--backend NAME] [--mode test|perf] [--vars SUBSTRING] [--list]
 *
 * Backend configurations: cpu (defaults), cpu-openblas (matmul through OpenBLAS),
 * cpu-portable (no AVX-512 micro-kernels), cpu-bf16 (bf16 matmul/conv, AVX-512-BF16 only),
 * cuda (builds with the CUDA toolkit, where a GPU is present; runs with IMGD_CUDA_SYNC=1 so a
 * kernel fault names its node).
 *
 * cuda-f16 and cuda-bf16 run matmul, conv2d and attention with fp16/bf16 GEMM operands
 * (the new paths: cuDNN, GEMM attention, weights read directly); cuda-f16-old the same with
 * those paths off; cuda-im2col and cuda-attn-gemm the f32 alternatives of conv2d and
 * attention; cuda-graph every op in f16 math without IMGD_CUDA_SYNC, computed twice: the
 * first run captures the graph, the second (checked) replays it.
 *
 * `--backend cuda` (ctest test_cuda_ops) runs the cuda configurations only, prints every
 * case's NMSE and max error, and exits 77 (ctest SKIP_RETURN_CODE) with "SKIP: no CUDA
 * device" where the build or the machine has no GPU. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "tensor/backend.h"
#include "tensor/cpu/cpu.h"
#ifdef IMGD_HAVE_CUDA
#    include "tensor/cuda/cuda.h"
#endif
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

/* ---- case context -------------------------------------------------------------------- */

#define BUFS_MAX 32

typedef struct tctx {
    imgd_graph *g;
    const char *vars;
    uint64_t    rng;
    void       *bufs[BUFS_MAX];
    int         n_bufs;
} tctx;

typedef imgd_tensor *(*build_fn)(tctx *c);

typedef struct op_case {
    const char *op; /* the op under test, for --op */
    build_fn    build;
    const char *vars;
    double      nmse; /* 0 = default */
} op_case;

static float frand(tctx *c) {
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return (float)((double)(c->rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Integer var `key` from "a=1,b=2", or def. */
static int64_t vi(const tctx *c, const char *key, int64_t def) {
    size_t      kl = strlen(key);
    const char *p  = c->vars;
    while (p && *p) {
        if (strncmp(p, key, kl) == 0 && p[kl] == '=') return strtoll(p + kl + 1, NULL, 10);
        p = strchr(p, ',');
        if (p) p++;
    }
    return def;
}

static imgd_dtype vtype(const tctx *c, const char *key) {
    size_t      kl = strlen(key);
    const char *p  = c->vars;
    while (p && *p) {
        if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
            char        name[16] = {0};
            const char *e        = strchr(p + kl + 1, ',');
            size_t      n        = e ? (size_t)(e - p - kl - 1) : strlen(p + kl + 1);
            memcpy(name, p + kl + 1, n < 15 ? n : 15);
            imgd_dtype dt = IMGD_DTYPE_F32;
            (void)imgd_dtype_parse(name, &dt);
            return dt;
        }
        p = strchr(p, ',');
        if (p) p++;
    }
    return IMGD_DTYPE_F32;
}

/* Fills quantized blocks with random bytes and small finite f16 scales (d) and mins (m),
 * at their offsets in each block type (formats/quant_blocks.h). */
static void fill_quant(tctx *c, imgd_dtype dt, unsigned char *p, size_t bytes) {
    for (size_t i = 0; i < bytes; i++) p[i] = (unsigned char)((frand(c) + 1.0f) * 127.9f);
    size_t bb = imgd_dtype_traits_of(dt)->block_bytes, d_at = 0, m_at = 2;
    bool   has_m = dt == IMGD_DTYPE_Q4_1 || dt == IMGD_DTYPE_Q5_1 || dt == IMGD_DTYPE_Q8_1 ||
                 dt == IMGD_DTYPE_Q4_K || dt == IMGD_DTYPE_Q5_K || dt == IMGD_DTYPE_Q2_K;
    if (dt == IMGD_DTYPE_Q2_K) {
        d_at = 80;
        m_at = 82;
    }
    if (dt == IMGD_DTYPE_Q3_K) d_at = 108;
    if (dt == IMGD_DTYPE_Q6_K) d_at = 208;
    for (size_t b = 0; b + bb <= bytes; b += bb) {
        uint16_t d = imgd_f32_to_f16(0.01f + 0.01f * frand(c)), m = imgd_f32_to_f16(0.005f);
        memcpy(p + b + d_at, &d, 2);
        if (has_m) memcpy(p + b + m_at, &m, 2);
    }
}

/* A weight of random values in [lo, hi) with the given dtype and shape. */
static imgd_tensor *rnd_range(tctx *c, imgd_dtype dt, float lo, float hi, int32_t nd,
                              const int64_t *shape) {
    uint64_t n = 1;
    for (int32_t i = 0; i < nd; i++) n *= (uint64_t)shape[i];
    uint64_t bytes = 0;
    if (imgd_dtype_nbytes(dt, nd, shape, &bytes) != IMGD_OK || c->n_bufs == BUFS_MAX) return NULL;
    unsigned char *buf = imgd_malloc((size_t)bytes + 1);
    if (!buf) return NULL;
    c->bufs[c->n_bufs++] = buf;
    if (imgd_dtype_traits_of(dt)->is_quant) {
        fill_quant(c, dt, buf, (size_t)bytes);
    } else {
        for (uint64_t i = 0; i < n; i++) {
            float v = lo + (hi - lo) * (frand(c) + 1.0f) * 0.5f;
            (void)imgd_dtype_from_f32(dt, &v, 1, buf + i * imgd_dtype_size(dt));
        }
    }
    return imgd_graph_weight(c->g, NULL, dt, nd, shape, buf);
}

static imgd_tensor *rnd(tctx *c, imgd_dtype dt, int32_t nd, const int64_t *shape) {
    return rnd_range(c, dt, -1.0f, 1.0f, nd, shape);
}

#define SHAPE(...)      ((const int64_t[]){__VA_ARGS__})
#define NDIMS(...)      ((int32_t)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define RND(c, dt, ...) rnd((c), (dt), NDIMS(__VA_ARGS__), SHAPE(__VA_ARGS__))

/* With perm=1 in vars: the same logical tensor made from a transposed allocation, so its
 * last two dims are non-contiguous. */
static imgd_tensor *maybe_strided(tctx *c, imgd_dtype dt, int32_t nd, const int64_t *shape) {
    if (!vi(c, "perm", 0) || nd < 2) return rnd(c, dt, nd, shape);
    int64_t s[IMGD_MAX_DIMS];
    memcpy(s, shape, (size_t)nd * sizeof *s);
    s[nd - 1] = shape[nd - 2];
    s[nd - 2] = shape[nd - 1];
    return imgd_op_transpose(c->g, rnd(c, dt, nd, s), -1, -2);
}

/* ---- builders: layout ------------------------------------------------------------------ */

/* use=1: the result of a constant op (cast or dequantize of a weight) feeds an add, so it
 * is not a graph output (the cuda backend folds such constants at plan time); use=2: a
 * narrowed, transposed view of it does (its offset into the folded copy). */
static imgd_tensor *use_const(tctx *c, imgd_tensor *k) {
    int64_t use = vi(c, "use", 0);
    if (use == 2)
        k = imgd_op_transpose(c->g, imgd_op_narrow(c->g, k, 0, 1, k->shape[0] - 1), -1, -2);
    if (!use || !k) return k;
    int64_t shape[IMGD_MAX_DIMS];
    memcpy(shape, k->shape, sizeof shape);
    return imgd_op_add(c->g, k, rnd(c, IMGD_DTYPE_F32, k->n_dims, shape));
}

static imgd_tensor *b_cast(tctx *c) {
    int64_t      shape[3] = {vi(c, "a", 3), vi(c, "b", 5), vi(c, "c", 7)};
    imgd_tensor *x        = maybe_strided(c, vtype(c, "type"), 3, shape);
    return use_const(c, imgd_op_cast(c->g, x, vtype(c, "to")));
}

static imgd_tensor *b_dequantize(tctx *c) {
    imgd_tensor *w = RND(c, vtype(c, "type"), vi(c, "rows", 3), vi(c, "cols", 256));
    return use_const(c, imgd_op_dequantize(c->g, w));
}

/* Weights scaled by 1/sqrt(fan_in), as trained networks are, so the chain's values stay O(1)
 * (unit-range weights grow them past f16's range in a few layers). */
static imgd_tensor *wgt(tctx *c, imgd_dtype dt, int32_t nd, const int64_t *shape, int64_t fan_in) {
    float a = 1.0f / sqrtf((float)fan_in);
    return rnd_range(c, dt, -a, a, nd, shape);
}

/* A small UNet-like block whose intermediates are activations, not graph outputs: on cuda in
 * f16/bf16 math they are stored in the math type (half_act), so every kernel family reads and
 * writes such values, through views (reshape, permute, narrow) too. var mix=1 adds the
 * remaining families (pool, pad, upsample, concat, rms_norm, softmax, timestep). */
static imgd_tensor *b_chain(tctx *c) {
    imgd_graph      *g = c->g;
    const int64_t    B = 2, C = vi(c, "c", 32), H = 12, W = 10, L = H * W, NH = 4, D = C / NH;
    const imgd_dtype F = IMGD_DTYPE_F32, F16 = IMGD_DTYPE_F16;
    imgd_tensor     *x = RND(c, F, B, C, H, W);
    imgd_tensor     *h =
        imgd_op_conv2d(g, x, wgt(c, F16, 4, SHAPE(C, C, 3, 3), 9 * C), RND(c, F, C), 1, 1);
    h              = imgd_op_group_norm(g, h, 8, 1e-5f, RND(c, F, C), RND(c, F, C), true);
    h              = imgd_op_conv2d(g, h, wgt(c, F, 4, SHAPE(C, C, 1, 1), C), NULL, 1, 0);
    h              = imgd_op_add(g, imgd_op_scale(g, h, 0.5f, 0.0f), x);
    imgd_tensor *t = imgd_op_cont(g, imgd_op_permute(g, imgd_op_reshape(g, h, 3, SHAPE(B, C, L)),
                                                     (const int32_t[]){0, 2, 1}));
    imgd_tensor *n = imgd_op_layer_norm(g, t, 1e-5f, RND(c, F, C), NULL);
    imgd_tensor *q = imgd_op_linear(g, n, wgt(c, F16, 2, SHAPE(C, C), C), NULL);
    imgd_tensor *k = imgd_op_linear(g, n, wgt(c, F16, 2, SHAPE(C, C), C), NULL);
    imgd_tensor *v = imgd_op_linear(g, n, wgt(c, F16, 2, SHAPE(C, C), C), RND(c, F, C));
    imgd_tensor *a = imgd_op_attention(g, imgd_op_reshape(g, q, 4, SHAPE(B, L, NH, D)),
                                       imgd_op_reshape(g, k, 4, SHAPE(B, L, NH, D)),
                                       imgd_op_reshape(g, v, 4, SHAPE(B, L, NH, D)), NULL, 0.0f);
    a = imgd_op_linear(g, imgd_op_reshape(g, a, 3, SHAPE(B, L, C)), wgt(c, F, 2, SHAPE(C, C), C),
                       RND(c, F, C));
    t = imgd_op_add(g, t, a);
    imgd_tensor *f = imgd_op_geglu(
        g, imgd_op_linear(g, t, wgt(c, F16, 2, SHAPE(4 * C, C), C), RND(c, F, 4 * C)));
    f = imgd_op_matmul(g, f, wgt(c, F, 2, SHAPE(2 * C, C), 2 * C), false, false, NULL);
    t = imgd_op_add(g, t, imgd_op_gelu(g, f));
    if (!vi(c, "mix", 0)) return imgd_op_narrow(g, t, 1, 3, L - 5);
    /* back to [B, C, H, W], then the other families */
    imgd_tensor *s =
        imgd_op_cont(g, imgd_op_reshape(g, imgd_op_permute(g, t, (const int32_t[]){0, 2, 1}), 4,
                                        SHAPE(B, C, H, W)));
    imgd_tensor *p = imgd_op_avg_pool2d(g, s, 2, 2, 0);
    p              = imgd_op_upsample_nearest2x(g, p);
    p = imgd_op_pad(g, p, (const int64_t[]){0, 0, 0, 0}, (const int64_t[]){0, 0, 0, 0}, 0.0f);
    imgd_tensor *cat[2] = {p, imgd_op_silu(g, s)};
    imgd_tensor *u      = imgd_op_concat(g, 2, cat, 1);
    u = imgd_op_rms_norm(g, imgd_op_cont(g, imgd_op_reshape(g, u, 3, SHAPE(B, 2 * C, L))), 1e-6f,
                         NULL);
    u = imgd_op_softmax(g, u, 0.7f);
    imgd_tensor *ts = imgd_op_timestep_embedding(g, RND(c, F, B), (int32_t)L, true, 0.0f, 10000.0f);
    u               = imgd_op_mul(g, u, imgd_op_reshape(g, ts, 3, SHAPE(B, 1, L)));
    return imgd_op_clamp(g, imgd_op_quick_gelu(g, imgd_op_scale(g, u, 50.0f, 0.0f)), -0.5f, 0.5f);
}

static imgd_tensor *b_concat(tctx *c) {
    int32_t      axis = (int32_t)vi(c, "axis", 1), n = (int32_t)vi(c, "n", 2);
    imgd_dtype   dt = vtype(c, "type");
    imgd_tensor *s[4];
    for (int32_t i = 0; i < n; i++) {
        int64_t shape[4]                  = {2, 3, 4, vi(c, "w", 5)};
        shape[axis < 0 ? axis + 4 : axis] = 1 + i * 2;
        s[i] = i == 0 ? maybe_strided(c, dt, 4, shape) : rnd(c, dt, 4, shape);
    }
    return imgd_op_concat(c->g, n, s, axis);
}

static imgd_tensor *b_pad(tctx *c) {
    imgd_tensor *x         = maybe_strided(c, vtype(c, "type"), 4, SHAPE(2, 3, 5, 7));
    int64_t      before[4] = {0, vi(c, "c0", 1), vi(c, "h0", 2), vi(c, "w0", 0)};
    int64_t      after[4]  = {vi(c, "n1", 0), 0, vi(c, "h1", 1), vi(c, "w1", 3)};
    return imgd_op_pad(c->g, x, before, after, (float)vi(c, "value", 0) * 0.5f);
}

static imgd_tensor *b_upsample(tctx *c) {
    int64_t shape[4] = {vi(c, "n", 2), vi(c, "c", 5), vi(c, "h", 7), vi(c, "w", 9)};
    return imgd_op_upsample_nearest2x(c->g, maybe_strided(c, vtype(c, "type"), 4, shape));
}

static imgd_tensor *b_avg_pool(tctx *c) {
    imgd_tensor *x = RND(c, vtype(c, "type"), 2, 3, vi(c, "h", 9), vi(c, "w", 11));
    return imgd_op_avg_pool2d(c->g, x, (int32_t)vi(c, "k", 2), (int32_t)vi(c, "s", 2),
                              (int32_t)vi(c, "p", 0));
}

/* reshape of a permuted tensor (forces a copy), then narrow/split views consumed by cont */
static imgd_tensor *b_views(tctx *c) {
    imgd_tensor *x = RND(c, IMGD_DTYPE_F32, 2, 6, 10);
    imgd_tensor *p = imgd_op_permute(c->g, x, (const int32_t[]){2, 0, 1}); /* [10, 2, 6] */
    switch (vi(c, "kind", 0)) {
    case 0: return imgd_op_reshape(c->g, p, 2, SHAPE(20, -1));
    case 1: {
        imgd_tensor *parts[3];
        if (imgd_op_split(c->g, p, 2, 3, SHAPE(1, 2, 3), parts) != IMGD_OK) return NULL;
        return imgd_op_cont(c->g, parts[vi(c, "piece", 1)]);
    }
    case 2: /* every other column of the 6x10 view of sample 1 */
        return imgd_op_cont(c->g, imgd_op_view(c->g, x, 2, SHAPE(6, 5), SHAPE(10, 2), 60));
    default: return imgd_op_cont(c->g, imgd_op_narrow(c->g, p, 0, 3, 4));
    }
}

/* ---- builders: dense ------------------------------------------------------------------- */

static imgd_tensor *b_matmul(tctx *c) {
    int64_t    M = vi(c, "m", 7), N = vi(c, "n", 9), K = vi(c, "k", 11);
    int64_t    ba = vi(c, "ba", 0), bb = vi(c, "bb", 0), bc = vi(c, "bc", 0);
    bool       ta = vi(c, "ta", 0) != 0, tb = vi(c, "tb", 0) != 0;
    imgd_dtype wt = vtype(c, "type");
    int64_t    sa[4], sb[4];
    int32_t    na = 0, nb = 0;
    if (bc) sa[na++] = bc;
    if (ba) sa[na++] = ba;
    sa[na++] = ta ? K : M;
    sa[na++] = ta ? M : K;
    if (bb) sb[nb++] = bb;
    sb[nb++]        = tb ? N : K;
    sb[nb++]        = tb ? K : N;
    imgd_tensor *a  = maybe_strided(c, IMGD_DTYPE_F32, na, sa);
    imgd_tensor *b  = rnd(c, wt, nb, sb);
    imgd_tensor *bs = vi(c, "bias", 0) ? RND(c, IMGD_DTYPE_F32, N) : NULL;
    return imgd_op_matmul(c->g, a, b, ta, tb, bs);
}

static imgd_tensor *b_linear(tctx *c) {
    int64_t      in = vi(c, "in", 40), out = vi(c, "out", 33);
    imgd_tensor *x = RND(c, IMGD_DTYPE_F32, vi(c, "b", 2), vi(c, "l", 77), in);
    imgd_tensor *w = RND(c, vtype(c, "type"), out, in);
    if (vi(c, "act", 0)) x = imgd_op_scale(c->g, x, 1.0f, 0.0f); /* an activation operand */
    imgd_tensor *bs = vi(c, "bias", 1) ? RND(c, IMGD_DTYPE_F32, out) : NULL;
    return imgd_op_linear(c->g, x, w, bs);
}

/* post=1: y read by a scale, so y is not a graph output (on cuda in half math stored in the
 * math type, as in a network) */
static imgd_tensor *post_scale(tctx *c, imgd_tensor *y) {
    return vi(c, "post", 0) ? imgd_op_scale(c->g, y, 1.0f, 0.0f) : y;
}

/* A linear layer and a residual add (the cuda backend runs the add in the GEMM): y =
 * linear(x) + r, or r + linear(x) (swap=1); r an input or an activation (act=1), of y's
 * shape or a broadcast row (bcast=1: not fused); reuse=1: the linear's output is read again
 * (not fused); post=1: the sum is read by a scale (so it is stored in the math type on
 * cuda, as in a network). */
static imgd_tensor *b_linres(tctx *c) {
    int64_t      in = vi(c, "in", 40), out = vi(c, "out", 33), B = vi(c, "b", 2), L = vi(c, "l", 7);
    imgd_tensor *x  = RND(c, IMGD_DTYPE_F32, B, L, in);
    imgd_tensor *w  = RND(c, vtype(c, "type"), out, in);
    imgd_tensor *bs = vi(c, "bias", 1) ? RND(c, IMGD_DTYPE_F32, out) : NULL;
    imgd_tensor *r =
        vi(c, "bcast", 0) ? RND(c, IMGD_DTYPE_F32, out) : RND(c, IMGD_DTYPE_F32, B, L, out);
    if (vi(c, "act", 0)) r = imgd_op_silu(c->g, r);
    imgd_tensor *y = imgd_op_linear(c->g, x, w, bs);
    imgd_tensor *s = vi(c, "swap", 0) ? imgd_op_add(c->g, r, y) : imgd_op_add(c->g, y, r);
    if (vi(c, "reuse", 0)) s = imgd_op_add(c->g, s, y);
    return post_scale(c, s);
}

/* linear -> gelu_tanh (the MLP of FLUX / T5): on cuda the GELU runs in cuBLASLt's epilogue */
static imgd_tensor *b_lingelu(tctx *c) {
    int64_t      in = vi(c, "in", 40), out = vi(c, "out", 33), B = vi(c, "b", 2), L = vi(c, "l", 7);
    imgd_tensor *x  = RND(c, IMGD_DTYPE_F32, B, L, in);
    imgd_tensor *w  = RND(c, vtype(c, "type"), out, in);
    imgd_tensor *bs = vi(c, "bias", 1) ? RND(c, IMGD_DTYPE_F32, out) : NULL;
    if (vi(c, "act", 0)) x = imgd_op_silu(c->g, x);
    imgd_tensor *y = imgd_op_linear(c->g, x, w, bs);
    imgd_tensor *s = imgd_op_gelu_tanh(c->g, y);
    if (vi(c, "reuse", 0)) s = imgd_op_add(c->g, s, y); /* the linear read twice: not fused */
    return post_scale(c, s);
}

/* A convolution and the ADD after it (a ResNet's residual and time embedding; the cuda
 * backend adds it in the convolution's epilogue): y = conv(x) + r, or r + y (swap=1), r
 * (an activation unless act=0) of y's shape (r=0), per image and channel [N, O, 1, 1]
 * (r=1, the time embedding) or per channel [O, 1, 1] (r=2); reuse=1: the convolution's
 * output is read again (not fused); post=1: the sum is read by a scale. */
static imgd_tensor *b_convres(tctx *c) {
    int64_t      n = vi(c, "n", 2), ch = vi(c, "c", 16), h = vi(c, "h", 8), w = vi(c, "w", 8);
    int64_t      oc = vi(c, "oc", 24), k = vi(c, "k", 3), mode = vi(c, "r", 0);
    imgd_tensor *x  = imgd_op_silu(c->g, RND(c, IMGD_DTYPE_F32, n, ch, h, w));
    imgd_tensor *wt = RND(c, vtype(c, "type"), oc, ch, k, k);
    imgd_tensor *b  = vi(c, "bias", 1) ? RND(c, IMGD_DTYPE_F32, oc) : NULL;
    imgd_tensor *r  = mode == 0   ? RND(c, IMGD_DTYPE_F32, n, oc, h, w)
                      : mode == 1 ? RND(c, IMGD_DTYPE_F32, n, oc)
                                  : RND(c, IMGD_DTYPE_F32, oc, 1, 1);
    if (vi(c, "act", 1)) r = imgd_op_silu(c->g, r);
    if (mode == 1) r = imgd_op_reshape(c->g, r, 4, SHAPE(n, oc, 1, 1));
    imgd_tensor *y = imgd_op_conv2d(c->g, x, wt, b, 1, (int32_t)(k / 2));
    imgd_tensor *s = vi(c, "swap", 0) ? imgd_op_add(c->g, r, y) : imgd_op_add(c->g, y, r);
    if (vi(c, "reuse", 0)) s = imgd_op_add(c->g, s, y);
    return post_scale(c, s);
}

static imgd_tensor *b_conv2d(tctx *c) {
    int64_t      n = vi(c, "n", 2), ch = vi(c, "c", 5), h = vi(c, "h", 17), w = vi(c, "w", 9);
    int64_t      oc = vi(c, "oc", 7), k = vi(c, "k", 3), kw = vi(c, "kw", k);
    int32_t      s = (int32_t)vi(c, "stride", 1), p = (int32_t)vi(c, "pad", (int32_t)(k / 2));
    imgd_tensor *x  = RND(c, IMGD_DTYPE_F32, n, ch, h, w);
    imgd_tensor *wt = RND(c, vtype(c, "type"), oc, ch, k, kw);
    if (vi(c, "act", 0)) x = imgd_op_scale(c->g, x, 1.0f, 0.0f); /* an activation operand */
    imgd_tensor *b  = vi(c, "bias", 1) ? RND(c, IMGD_DTYPE_F32, oc) : NULL;
    int32_t      pw = (int32_t)vi(c, "padw", p);
    return imgd_op_conv2d_ex(c->g, x, wt, b, s, (int32_t)vi(c, "stridew", s), p, pw);
}

/* A ResNet's group norm (+ SiLU) then its convolution: on cuda, a norm read only by an NHWC
 * cuDNN convolution writes NHWC itself. reuse=1: the norm's output is read again (by an add
 * after the convolution), so it stays NCHW. */
static imgd_tensor *b_gnconv(tctx *c) {
    int64_t      n = vi(c, "n", 2), ch = vi(c, "c", 32), h = vi(c, "h", 9), w = vi(c, "w", 11);
    int64_t      oc = vi(c, "oc", ch), k = vi(c, "k", 3);
    imgd_tensor *x = imgd_op_scale(c->g, RND(c, IMGD_DTYPE_F32, n, ch, h, w), 1.0f, 0.0f);
    imgd_tensor *gn =
        imgd_op_group_norm(c->g, x, (int32_t)vi(c, "g", 8), 1e-5f, RND(c, IMGD_DTYPE_F32, ch),
                           RND(c, IMGD_DTYPE_F32, ch), vi(c, "silu", 1));
    imgd_tensor *y = imgd_op_conv2d(c->g, gn, RND(c, vtype(c, "type"), oc, ch, k, k),
                                    RND(c, IMGD_DTYPE_F32, oc), 1, (int32_t)(k / 2));
    return vi(c, "reuse", 0) && oc == ch ? imgd_op_add(c->g, y, gn) : y;
}

/* ---- builders: normalisation and attention ------------------------------------------------ */

static imgd_tensor *b_group_norm(tctx *c) {
    int64_t      ch  = vi(c, "c", 32);
    imgd_tensor *x   = vi(c, "dims", 4) == 3 ? RND(c, vtype(c, "type"), vi(c, "n", 2), ch, 33)
                                             : RND(c, vtype(c, "type"), vi(c, "n", 2), ch,
                                                   vi(c, "h", 5), vi(c, "w", 7));
    bool         aff = vi(c, "affine", 1) != 0;
    imgd_tensor *gm  = aff ? RND(c, IMGD_DTYPE_F32, ch) : NULL;
    imgd_tensor *bt  = aff ? RND(c, IMGD_DTYPE_F32, ch) : NULL;
    return imgd_op_group_norm(c->g, x, (int32_t)vi(c, "g", 8), 1e-5f, gm, bt, vi(c, "silu", 0));
}

static imgd_tensor *b_layer_norm(tctx *c) {
    int64_t      D   = vi(c, "d", 65);
    imgd_tensor *x   = RND(c, vtype(c, "type"), 3, vi(c, "l", 77), D);
    bool         aff = vi(c, "affine", 1) != 0;
    imgd_tensor *gm  = aff ? RND(c, IMGD_DTYPE_F32, D) : NULL;
    imgd_tensor *bt  = aff ? RND(c, IMGD_DTYPE_F32, D) : NULL;
    return imgd_op_layer_norm(c->g, x, 1e-5f, gm, bt);
}

static imgd_tensor *b_rms_norm(tctx *c) {
    int64_t      D = vi(c, "d", 33);
    imgd_tensor *x = RND(c, vtype(c, "type"), 4, D);
    return imgd_op_rms_norm(c->g, x, 1e-6f, vi(c, "affine", 1) ? RND(c, IMGD_DTYPE_F32, D) : NULL);
}

static imgd_tensor *b_softmax(tctx *c) {
    imgd_tensor *x = RND(c, vtype(c, "type"), vi(c, "a", 5), vi(c, "d", 77));
    return imgd_op_softmax(c->g, x, (float)vi(c, "scale100", 100) / 100.0f);
}

static imgd_tensor *b_attention(tctx *c) {
    int64_t      B = vi(c, "b", 2), Lq = vi(c, "lq", 77), Lk = vi(c, "lk", Lq), H = vi(c, "h", 3);
    int64_t      D = vi(c, "d", 40), Dv = vi(c, "dv", D);
    imgd_dtype   dt = vtype(c, "type");
    imgd_tensor *q, *k, *v, *mask = NULL;
    if (vi(c, "qkv", 0)) { /* q, k, v views of one computed [B, L, 3 H D] (a fused
                            * projection; in half math stored in the math type) */
        imgd_tensor *x = imgd_op_scale(c->g, RND(c, dt, B, Lq, 3 * H * D), 1.0f, 0.0f);
        imgd_tensor *qkv[3];
        for (int i = 0; i < 3; i++)
            qkv[i] = imgd_op_view(c->g, x, 4, SHAPE(B, Lq, H, D),
                                  SHAPE(Lq * 3 * H * D, 3 * H * D, D, 1), i * H * D);
        return post_scale(c, imgd_op_attention(c->g, qkv[0], qkv[1], qkv[2], NULL, 0.0f));
    }
    if (vi(c, "proj", 0)) { /* q from a [B, L, H*D] projection reshaped: the usual layout */
        q = imgd_op_reshape(c->g, RND(c, dt, B, Lq, H * D), 4, SHAPE(B, Lq, H, D));
    } else if (vi(c, "perm", 0)) { /* q stored [B, H, Lq, D] and permuted into place */
        q = imgd_op_permute(c->g, RND(c, dt, B, H, Lq, D), (const int32_t[]){0, 2, 1, 3});
    } else {
        q = RND(c, dt, B, Lq, H, D);
    }
    k = RND(c, dt, B, Lk, H, D);
    v = RND(c, dt, B, Lk, H, Dv);
    if (vi(c, "act", 0)) { /* computed inputs: in half math stored in the math type */
        q = imgd_op_scale(c->g, q, 1.0f, 0.0f);
        k = imgd_op_scale(c->g, k, 1.0f, 0.0f);
        v = imgd_op_scale(c->g, v, 1.0f, 0.0f);
    }
    switch (vi(c, "mask", 0)) {
    case 1: mask = rnd_range(c, IMGD_DTYPE_F32, -3.0f, 0.0f, 2, SHAPE(Lq, Lk)); break;
    case 2: mask = rnd_range(c, IMGD_DTYPE_F32, -3.0f, 0.0f, 4, SHAPE(B, 1, 1, Lk)); break;
    case 3: { /* causal, -inf above the diagonal (CLIP) */
        float *m = imgd_malloc((size_t)(Lq * Lk) * sizeof *m);
        if (!m || c->n_bufs == BUFS_MAX) return NULL;
        c->bufs[c->n_bufs++] = m;
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = 0; j < Lk; j++) m[i * Lk + j] = j > i ? -INFINITY : 0.0f;
        mask = imgd_graph_weight(c->g, "causal", IMGD_DTYPE_F32, 2, SHAPE(Lq, Lk), m);
        break;
    }
    default: break;
    }
    imgd_tensor *a = imgd_op_attention(c->g, q, k, v, mask, 0.0f);
    if (vi(c, "chain", 0)) /* its output the query of a second one of the same shapes */
        a = imgd_op_attention(c->g, a, k, v, mask, 0.0f);
    return post_scale(c, a);
}

/* ---- builders: elementwise and embeddings -------------------------------------------------- */

static imgd_tensor *b_unary(tctx *c) {
    int64_t      shape[2] = {vi(c, "a", 3), vi(c, "b", 1001)};
    imgd_tensor *x        = maybe_strided(c, vtype(c, "type"), 2, shape);
    x                     = imgd_op_scale(c->g, x, 4.0f, 0.0f); /* exercise [-4, 4] */
    switch (vi(c, "f", 0)) {
    case 0: return imgd_op_gelu(c->g, x);
    case 1: return imgd_op_gelu_tanh(c->g, x);
    case 2: return imgd_op_quick_gelu(c->g, x);
    case 3: return imgd_op_silu(c->g, x);
    case 4: return imgd_op_clamp(c->g, x, -1.5f, 2.0f);
    default: return imgd_op_scale(c->g, x, -0.75f, 0.25f);
    }
}

static imgd_tensor *b_geglu(tctx *c) {
    imgd_tensor *x = RND(c, vtype(c, "type"), 2, vi(c, "l", 77), 2 * vi(c, "d", 41));
    return imgd_op_geglu(c->g, imgd_op_scale(c->g, x, 3.0f, 0.0f));
}

static imgd_tensor *b_binary(tctx *c) {
    static const int64_t shapes[][5] = {
        /* nd, dims...: pairs (a, b) by index */
        {4, 2, 3, 5, 7},    {3, 3, 1, 1, 0},   {2, 5, 7, 0, 0},     {4, 2, 3, 5, 7},
        {1, 1, 0, 0, 0},    {3, 4, 9, 6, 0},   {3, 2, 1, 7, 0},     {3, 1, 5, 1, 0},
        {3, 2, 640, 33, 0}, {3, 2, 640, 1, 0}, {4, 2, 320, 17, 33}, {1, 33, 0, 0, 0},
        {3, 4, 300, 77, 0}, {3, 4, 300, 1, 0}, {4, 2, 64, 8, 8},    {4, 2, 64, 1, 1},
        {1, 8, 0, 0, 0},    {3, 64, 1, 8, 0},
    };
    int64_t sa = vi(c, "sa", 0), sb = vi(c, "sb", 1);
    if (sa < 0 || sb < 0 || sa >= (int64_t)IMGD_ARRAY_LEN(shapes) ||
        sb >= (int64_t)IMGD_ARRAY_LEN(shapes)) {
        imgd_graph_fail(c->g, IMGD_E_INVALID_ARG, "b_binary: shape index out of range");
        return NULL;
    }
    imgd_tensor *a = rnd(c, vtype(c, "type"), (int32_t)shapes[sa][0], &shapes[sa][1]);
    imgd_tensor *b =
        rnd_range(c, IMGD_DTYPE_F32, 0.5f, 2.0f, (int32_t)shapes[sb][0], &shapes[sb][1]);
    switch (vi(c, "f", 0)) {
    case 0: return imgd_op_add(c->g, a, b);
    case 1: return imgd_op_sub(c->g, b, a);
    case 2: return imgd_op_mul(c->g, a, b);
    default: return imgd_op_div(c->g, a, b);
    }
}

static imgd_tensor *b_timestep(tctx *c) {
    imgd_tensor *t = rnd_range(c, IMGD_DTYPE_F32, 0.0f, 999.0f, 1, SHAPE(vi(c, "n", 3)));
    return imgd_op_timestep_embedding(c->g, t, (int32_t)vi(c, "dim", 320), vi(c, "flip", 1),
                                      (float)vi(c, "shift", 0), 10000.0f);
}

static imgd_tensor *b_rope(tctx *c) {
    int64_t      L = vi(c, "l", 13), D = vi(c, "d", 16);
    imgd_tensor *x = RND(c, vtype(c, "type"), 2, L, 3, D);
    imgd_tensor *p = rnd_range(c, IMGD_DTYPE_F32, 0.0f, 64.0f, 1, SHAPE(L));
    return imgd_op_rope(c->g, x, p, (imgd_rope_mode)vi(c, "mode", 0), (int32_t)vi(c, "nrot", 0),
                        10000.0f);
}

/* Multi-axis rope (FLUX): axes "a0,a1,a2" dims 2,2,4 style, integer-valued and fractional
 * positions per axis, optional pass-through tail (extra dims beyond the axes). */
static imgd_tensor *b_rope_nd(tctx *c) {
    int64_t L = vi(c, "l", 13), D = vi(c, "d", 8), A = vi(c, "axes", 3);
    int32_t dims[3] = {(int32_t)vi(c, "a0", 2), (int32_t)vi(c, "a1", 2), (int32_t)vi(c, "a2", 4)};
    imgd_tensor *x  = RND(c, vtype(c, "type"), 2, L, vi(c, "h", 3), D);
    imgd_tensor *p  = rnd_range(c, IMGD_DTYPE_F32, 0.0f, 64.0f, 2, SHAPE(L, A));
    return imgd_op_rope_nd(c->g, x, p, (imgd_rope_mode)vi(c, "mode", 1), (int32_t)A, dims,
                           10000.0f);
}

/* linear_quant: x [b, m, k] against a quantized weight [n, k] (bias optional; pre=1: x is
 * the output of a silu, stored in the math type on cuda; perm=1: x is a transposed view);
 * the ref kernel is the dequantize-then-f32 reference. */
static imgd_tensor *b_linear_quant(tctx *c) {
    int64_t      K = vi(c, "k", 256), N = vi(c, "n", 67);
    imgd_tensor *x = maybe_strided(c, IMGD_DTYPE_F32, 3, SHAPE(vi(c, "b", 2), vi(c, "m", 7), K));
    imgd_tensor *w = RND(c, vtype(c, "type"), N, K);
    imgd_tensor *b = vi(c, "bias", 1) ? RND(c, IMGD_DTYPE_F32, N) : NULL;
    if (vi(c, "pre", 0)) x = imgd_op_silu(c->g, x); /* an activation, not an input */
    /* a residual computed before the linear, added right after it */
    imgd_tensor *r =
        vi(c, "res", 0)
            ? imgd_op_silu(c->g, RND(c, IMGD_DTYPE_F32, vi(c, "b", 2), vi(c, "m", 7), N))
            : NULL;
    imgd_tensor *y = imgd_op_linear_quant(c->g, x, w, b);
    /* a GELU or residual add after it: on cuda in the tiles' cuBLASLt epilogue */
    if (vi(c, "gelu", 0)) y = imgd_op_gelu_tanh(c->g, y);
    if (r) y = imgd_op_add(c->g, y, r);
    y = post_scale(c, y);
    return y;
}

/* ---- the case table ------------------------------------------------------------------------ */

static const op_case k_cases[] = {
    {"cast", b_cast, "type=f32,to=f16", 0},
    {"cast", b_cast, "type=f16,to=f32,a=2,b=33,c=65", 0},
    {"cast", b_cast, "type=bf16,to=f32,perm=1", 0},
    {"cast", b_cast, "type=f32,to=bf16,perm=1", 0},
    {"cast", b_cast, "type=f16,to=bf16,a=4,b=1,c=300", 0},
    {"cast", b_cast, "type=f16,to=f32,a=2,b=33,c=65,use=1", 0},
    {"chain", b_chain, "c=32", 0},
    {"chain", b_chain, "c=64,mix=1", 0},
    {"cast", b_cast, "type=bf16,to=f32,a=3,b=9,c=17,perm=1,use=2", 0},
    {"dequantize", b_dequantize, "type=q8_0,rows=3,cols=96", 0},
    {"dequantize", b_dequantize, "type=q4_0,rows=17,cols=64", 0},
    {"dequantize", b_dequantize, "type=q4_k,rows=5,cols=512", 0},
    {"dequantize", b_dequantize, "type=q8_0,rows=4,cols=64,use=2", 0},
    {"dequantize", b_dequantize, "type=q4_1,rows=3,cols=64,use=1", 0},
    {"dequantize", b_dequantize, "type=q5_0,rows=5,cols=32,use=1", 0},
    {"dequantize", b_dequantize, "type=q5_1,rows=2,cols=96,use=1", 0},
    {"dequantize", b_dequantize, "type=q2_k,rows=3,cols=256,use=1", 0},
    {"dequantize", b_dequantize, "type=q3_k,rows=2,cols=512,use=1", 0},
    {"dequantize", b_dequantize, "type=q5_k,rows=3,cols=256,use=1", 0},
    {"dequantize", b_dequantize, "type=q6_k,rows=2,cols=256", 0},
    {"dequantize", b_dequantize, "type=q6_k,rows=4,cols=256,use=2", 0},
    {"concat", b_concat, "axis=0", 0},
    {"concat", b_concat, "axis=1,n=3,perm=1", 0},
    {"concat", b_concat, "axis=2,type=f16", 0},
    {"concat", b_concat, "axis=-1,n=4,type=bf16", 0},
    {"concat", b_concat, "axis=1,n=3,w=8,type=f16", 0},
    {"concat", b_concat, "axis=1,w=8", 0},
    {"pad", b_pad, "c0=1,h0=2,w1=3", 0},
    {"pad", b_pad, "n1=1,h1=0,w0=4,value=3,type=f16,perm=1", 0},
    {"upsample", b_upsample, "n=2,c=5,h=7,w=9", 0},
    {"upsample", b_upsample, "n=1,c=3,h=4,w=33,type=f16", 0},
    {"upsample", b_upsample, "n=1,c=2,h=5,w=3,perm=1", 0},
    {"upsample", b_upsample, "n=2,c=4,h=8,w=8,type=f16", 0},
    {"upsample", b_upsample, "n=1,c=3,h=5,w=12", 0},
    {"avg_pool2d", b_avg_pool, "k=2,s=2,p=0", 0},
    {"avg_pool2d", b_avg_pool, "k=3,s=2,p=1,h=10,w=7", 0},
    {"avg_pool2d", b_avg_pool, "k=3,s=1,p=1,type=f16", 0},
    {"view", b_views, "kind=0", 0},
    {"view", b_views, "kind=1,piece=1", 0},
    {"view", b_views, "kind=1,piece=2", 0},
    {"view", b_views, "kind=2", 0},
    {"view", b_views, "kind=3", 0},
    {"matmul", b_matmul, "m=7,n=9,k=11", 0},
    {"matmul", b_matmul, "m=64,n=130,k=77,bias=1", 0},
    {"matmul", b_matmul, "m=1,n=17,k=33", 0},
    {"matmul", b_matmul, "m=13,n=1,k=5,bias=1", 0},
    {"matmul", b_matmul, "m=5,n=6,k=7,ta=1", 0},
    {"matmul", b_matmul, "m=5,n=6,k=7,tb=1,bias=1", 0},
    {"matmul", b_matmul, "m=5,n=6,k=7,ta=1,tb=1", 0},
    {"matmul", b_matmul, "m=9,n=10,k=12,ba=3", 0},
    {"matmul", b_matmul, "m=9,n=10,k=12,ba=3,bc=2,bias=1", 0},
    {"matmul", b_matmul, "m=9,n=10,k=12,bb=4", 0},
    {"matmul", b_matmul, "m=9,n=10,k=12,ba=4,bb=4,tb=1", 0},
    {"matmul", b_matmul, "m=8,n=10,k=12,ba=4,bc=2,bb=4", 0},
    {"matmul", b_matmul, "m=7,n=9,k=11,ba=2,perm=1", 0},
    {"matmul", b_matmul, "m=7,n=9,k=11,type=f16,bias=1", 0},
    {"matmul", b_matmul, "m=7,n=9,k=11,type=bf16,tb=1", 0},
    {"matmul", b_matmul, "m=16,n=16,k=0,bias=1", 0},
    {"matmul", b_linear, "in=40,out=33", 0},
    {"linres", b_linres, "", 0},
    {"linres", b_linres, "swap=1,act=1,bias=0", 0},
    {"linres", b_linres, "act=1,type=f16,b=1,l=9", 0},
    {"linres", b_linres, "bcast=1", 0},
    {"linres", b_linres, "act=1,post=1", 0},
    {"linres", b_linres, "act=1,post=1,swap=1,bias=0,b=3,l=5", 0},
    {"linres", b_linres, "reuse=1,act=1", 0},
    {"lingelu", b_lingelu, "", 0},
    {"lingelu", b_lingelu, "act=1,bias=0,b=1,l=9", 0},
    {"lingelu", b_lingelu, "act=1,type=f16,post=1", 0},
    {"lingelu", b_lingelu, "in=96,out=130,b=3,l=5,type=bf16,post=1", 0},
    {"lingelu", b_lingelu, "reuse=1,act=1", 0},
    {"matmul", b_linear, "in=40,out=33,b=3,l=1", 0},
    {"matmul", b_linear, "in=320,out=17,b=1,l=5,type=f16", 0},
    {"matmul", b_linear, "in=96,out=40,b=2,l=9,type=f16,act=1", 0},
    {"matmul", b_linear, "in=64,out=24,b=1,l=7,type=bf16,act=1,bias=0", 0},
    {"matmul", b_linear, "in=64,out=19,type=q8_0", 0},
    {"matmul", b_linear, "in=64,out=7,type=q4_0,bias=0", 0},
    {"matmul", b_linear, "in=256,out=5,type=q4_k,l=3", 0},
    {"conv2d", b_conv2d, "type=f16,n=2,c=5,h=17,w=9,k=3,stride=2", 0},
    {"conv2d", b_conv2d, "n=2,c=5,h=17,w=9,k=3,stride=1", 0},
    {"conv2d", b_conv2d, "n=1,c=19,h=8,w=8,oc=17,k=1,pad=0", 0},
    {"conv2d", b_conv2d, "n=2,c=19,h=5,w=7,oc=17,k=1,pad=0,bias=0", 0},
    {"conv2d", b_conv2d, "n=1,c=3,h=12,w=12,oc=4,k=4,stride=2,pad=1", 0},
    {"conv2d", b_conv2d, "n=1,c=7,h=9,w=11,oc=5,k=5,pad=2,type=bf16", 0},
    {"conv2d", b_conv2d, "n=3,c=4,h=9,w=9,oc=6,k=3,stride=2,pad=0,bias=0", 0},
    {"conv2d", b_conv2d, "n=1,c=4,h=9,w=10,oc=6,k=3,kw=1,pad=1,padw=0,stridew=2", 0},
    {"conv2d", b_conv2d, "n=1,c=33,h=16,w=16,oc=40,k=3,stride=1", 0},
    {"conv2d", b_conv2d, "n=2,c=16,h=11,w=10,oc=24,k=3,type=f16,act=1", 0},
    {"conv2d", b_conv2d, "n=1,c=16,h=6,w=7,oc=8,k=1,pad=0,type=f16,act=1,bias=0", 0},
    {"gnconv", b_gnconv, "", 0},
    {"gnconv", b_gnconv, "n=1,c=40,g=4,h=7,w=5,oc=24,type=f16", 0},
    {"gnconv", b_gnconv, "c=33,g=3,h=16,w=16,oc=35,k=1,silu=0", 0},
    {"gnconv", b_gnconv, "reuse=1", 0},
    {"convres", b_convres, "", 0},
    {"convres", b_convres, "swap=1,type=f16,post=1", 0},
    {"convres", b_convres, "r=1,post=1", 0},
    {"convres", b_convres, "r=1,swap=1,bias=0,type=f16,h=5,w=7", 0},
    {"convres", b_convres, "r=2,act=0,k=1", 0},
    {"convres", b_convres, "act=0,k=1,oc=9,h=3,w=5,post=1", 0},
    {"convres", b_convres, "reuse=1,r=1", 0},
    {"group_norm", b_group_norm, "n=2,c=32,h=5,w=7,g=8", 0},
    {"group_norm", b_group_norm, "n=2,c=32,h=5,w=7,g=8,silu=1", 0},
    {"group_norm", b_group_norm, "n=1,c=6,h=3,w=3,g=3,affine=0,type=f16", 0},
    {"group_norm", b_group_norm, "n=3,c=12,g=4,dims=3,silu=1", 0},
    {"group_norm", b_group_norm, "n=2,c=32,h=8,w=8,g=8", 0},
    {"group_norm", b_group_norm, "n=2,c=64,h=40,w=40,g=8,silu=1,type=f16", 0},
    {"layer_norm", b_layer_norm, "d=65,l=77", 0},
    {"layer_norm", b_layer_norm, "d=768,l=5,affine=0", 0},
    {"layer_norm", b_layer_norm, "d=1,l=3,type=bf16", 0},
    {"layer_norm", b_layer_norm, "d=320,l=77,type=f16", 0},
    {"layer_norm", b_layer_norm, "d=2048,l=3", 0},
    {"layer_norm", b_layer_norm, "d=2056,l=2,affine=0", 0},
    {"rms_norm", b_rms_norm, "d=33", 0},
    {"rms_norm", b_rms_norm, "d=128,affine=0,type=f16", 0},
    {"rms_norm", b_rms_norm, "d=256", 0},
    {"rms_norm", b_rms_norm, "d=3072,type=bf16", 0},
    {"softmax", b_softmax, "a=5,d=77", 0},
    {"softmax", b_softmax, "a=3,d=1000,scale100=300", 0},
    {"softmax", b_softmax, "a=2,d=17,scale100=-50", 0},
    {"attention", b_attention, "b=2,lq=77,h=3,d=40", 0},
    {"attention", b_attention, "b=1,lq=64,h=2,d=64,proj=1", 0},
    {"attention", b_attention, "b=1,lq=33,lk=100,h=2,d=80", 0},
    {"attention", b_attention, "b=1,lq=20,lk=9,h=1,d=128", 0},
    {"attention", b_attention, "b=1,lq=70,lk=90,h=2,d=160", 0},
    {"attention", b_attention, "b=2,lq=31,lk=29,h=3,d=17,dv=23", 0},
    {"attention", b_attention, "b=1,lq=150,lk=300,h=2,d=40,perm=1", 0},
    {"attention", b_attention, "b=2,lq=77,h=2,d=64,mask=3", 0},
    {"attention", b_attention, "b=1,lq=40,lk=270,h=2,d=8,mask=1", 0},
    {"attention", b_attention, "b=2,lq=5,lk=12,h=4,d=32,mask=2,type=f16", 0},
    {"attention", b_attention, "b=1,lq=1,lk=1,h=1,d=1", 0},
    {"attention", b_attention, "b=2,lq=77,lk=77,h=2,d=40,act=1,mask=3", 0},
    {"attention", b_attention, "b=1,lq=130,lk=200,h=2,d=64,act=1", 0},
    {"attention", b_attention, "b=1,lq=70,lk=65,h=1,d=128,act=1,mask=1", 0},
    {"attention", b_attention, "b=1,lq=33,lk=64,h=2,d=160,act=1", 0},
    {"attention", b_attention, "b=2,lq=100,h=3,d=40,qkv=1", 0},
    {"attention", b_attention, "b=1,lq=90,h=2,d=80,qkv=1", 0},
    /* outputs read by another op: cuDNN's SDPA takes these (IMGD_CUDA_ATTN=cudnn) */
    {"attention", b_attention, "b=2,lq=100,h=3,d=40,qkv=1,post=1", 0},
    {"attention", b_attention, "b=1,lq=33,lk=77,h=8,d=64,act=1,post=1", 0},
    {"attention", b_attention, "b=1,lq=20,lk=9,h=2,d=128,act=1,post=1", 0},
    {"attention", b_attention, "b=1,lq=17,lk=30,h=1,d=160,act=1,post=1", 0},
    /* timed choices (IMGD_CUDA_ATTN=tune): cuDNN's SDPA and mma on a q/k/v projection's
     * views; mma1 / mma2 only (a mask; a head dim cuDNN refuses); repeated shapes remembered */
    {"attention_tune", b_attention, "b=1,lq=64,h=2,d=40,qkv=1,post=1", 0},
    {"attention_tune", b_attention, "b=1,lq=33,lk=40,h=2,d=64,act=1,post=1,chain=1", 0},
    {"attention_tune", b_attention, "b=1,lq=40,lk=40,h=2,d=40,act=1,mask=3,chain=1", 0},
    {"attention_tune", b_attention, "b=1,lq=40,lk=70,h=2,d=20,act=1,post=1", 0},
    {"gelu", b_unary, "f=0", 0},
    {"gelu", b_unary, "f=0,type=f16,perm=1", 0},
    {"gelu_tanh", b_unary, "f=1", 0},
    {"quick_gelu", b_unary, "f=2,a=7,b=33", 0},
    {"silu", b_unary, "f=3", 0},
    {"silu", b_unary, "f=3,a=4,b=64,type=f16", 0},
    {"silu", b_unary, "f=3,type=bf16,perm=1,a=9,b=10", 0},
    {"clamp", b_unary, "f=4", 0},
    {"scale", b_unary, "f=5", 0},
    {"geglu", b_geglu, "l=77,d=41", 0},
    {"geglu", b_geglu, "l=3,d=640,type=f16", 0},
    {"geglu", b_geglu, "l=5,d=64", 0},
    {"add", b_binary, "f=0,sa=0,sb=1", 0},
    {"add", b_binary, "f=0,sa=2,sb=3", 0},
    {"add", b_binary, "f=0,sa=8,sb=9", 0},
    {"add", b_binary, "f=0,sa=5,sb=4,type=f16", 0},
    {"add", b_binary, "f=0,sa=14,sb=15,type=f16", 0},
    {"add", b_binary, "f=0,sa=14,sb=14", 0},
    {"mul", b_binary, "f=2,sa=15,sb=14,type=bf16", 0},
    {"add", b_binary, "f=0,sa=14,sb=16,type=f16", 0},
    {"sub", b_binary, "f=1,sa=14,sb=17", 0},
    {"sub", b_binary, "f=1,sa=6,sb=7", 0},
    {"mul", b_binary, "f=2,sa=0,sb=1", 0},
    {"mul", b_binary, "f=2,sa=6,sb=7,type=bf16", 0},
    {"div", b_binary, "f=3,sa=0,sb=1", 0},
    {"div", b_binary, "f=3,sa=5,sb=5", 0},
    {"timestep_embedding", b_timestep, "n=3,dim=320,flip=1,shift=0", 0},
    {"timestep_embedding", b_timestep, "n=2,dim=33,flip=0,shift=1", 0},
    {"rope", b_rope, "mode=0,l=13,d=16", 0},
    {"rope", b_rope, "mode=1,l=7,d=24,nrot=16,type=f16", 0},
    {"rope", b_rope_nd, "mode=1,l=13,d=8", 0},
    {"linear_quant", b_linear_quant, "type=q8_0,m=7,k=96,n=67", 0},
    {"linear_quant", b_linear_quant, "type=q4_0,b=1,m=1,k=160,n=33,bias=0", 0},
    {"linear_quant", b_linear_quant, "type=q8_0,m=5,k=64,n=40,gelu=1,pre=1", 0},
    {"linear_quant", b_linear_quant, "type=q4_k,b=1,m=3,k=256,n=24,gelu=1,bias=0", 0},
    {"linear_quant", b_linear_quant, "type=q8_0,b=1,m=4,k=96,n=33,res=1,pre=1", 0},
    {"linear_quant", b_linear_quant, "type=q5_k,b=1,m=4,k=256,n=33,res=1,pre=1,post=1", 0},
    {"linear_quant", b_linear_quant, "type=q4_k,b=3,m=5,k=512,n=29", 0},
    {"linear_quant", b_linear_quant, "type=q5_k,m=3,k=256,n=131", 0},
    {"linear_quant", b_linear_quant, "type=q6_k,m=4,k=256,n=40,pre=1", 0},
    {"linear_quant", b_linear_quant, "type=q8_0,b=1,m=0,k=64,n=5", 0},
    /* up to 4 rows of x: the weight read in its blocks on cuda (rows of 2, 4 and 16 bytes'
     * alignment; a k-chunk of 3 blocks, two chunks; rows not a multiple of a CTA's 8) */
    {"linear_quant", b_linear_quant, "type=q5_0,b=1,m=2,k=96,n=70", 0},
    {"linear_quant", b_linear_quant, "type=q5_1,b=2,m=2,k=1088,n=9,pre=1", 0},
    {"linear_quant", b_linear_quant, "type=q4_1,b=1,m=1,k=64,n=3,gelu=1", 0},
    {"linear_quant", b_linear_quant, "type=q4_1,b=3,m=1,k=2080,n=17,res=1,bias=0", 0},
    {"linear_quant", b_linear_quant, "type=q8_0,b=1,m=4,k=1024,n=40,perm=1", 0},
    {"linear_quant", b_linear_quant, "type=q4_0,b=1,m=5,k=96,n=33,perm=1", 0},
    {"rope", b_rope_nd, "mode=1,l=9,d=20,a0=4,a1=6,a2=6,h=2", 0},
    {"rope", b_rope_nd, "mode=0,l=5,d=12,axes=2,a0=4,a1=6", 0},
    /* large enough to run threaded and cross every kernel's blocking */
    {"cast", b_cast, "type=f16,to=f32,a=3,b=257,c=301,perm=1", 0},
    /* contiguous weights are one long row: copied in pieces, the last one short */
    {"cast", b_cast, "type=f16,to=f32,a=1,b=1,c=100003", 0},
    {"cast", b_cast, "type=bf16,to=f32,a=1,b=3,c=40001", 0},
    {"dequantize", b_dequantize, "type=q4_k,rows=67,cols=1024", 0},
    {"concat", b_concat, "axis=1,n=2,perm=1,big=1", 0},
    {"upsample", b_upsample, "n=2,c=33,h=31,w=29", 0},
    {"pad", b_pad, "c0=2,h0=1,w1=5,big=1", 0},
    {"avg_pool2d", b_avg_pool, "k=2,s=2,p=0,h=130,w=66", 0},
    {"matmul", b_matmul, "m=300,n=257,k=129,ba=3,bias=1", 0},
    {"matmul", b_linear, "in=320,out=1280,b=2,l=77,type=f16", 0},
    {"conv2d", b_conv2d, "n=2,c=35,h=33,w=31,oc=37,k=3,stride=1", 0},
    {"conv2d", b_conv2d, "n=2,c=35,h=33,w=31,oc=37,k=3,stride=2,type=f16", 0},
    {"conv2d", b_conv2d, "n=2,c=48,h=20,w=21,oc=40,k=1,pad=0", 0},
    {"group_norm", b_group_norm, "n=2,c=64,h=33,w=31,g=32,silu=1", 0},
    {"group_norm", b_group_norm, "n=1,c=8,h=67,w=65,g=2", 0},
    {"layer_norm", b_layer_norm, "d=768,l=300", 0},
    {"rms_norm", b_rms_norm, "d=3072", 0},
    {"softmax", b_softmax, "a=64,d=1000", 0},
    {"attention", b_attention, "b=2,lq=333,lk=517,h=3,d=40,proj=1", 0},
    {"attention", b_attention, "b=1,lq=200,lk=77,h=5,d=64,mask=2", 0},
    {"gelu", b_unary, "f=0,a=3,b=100003", 0},
    {"silu", b_unary, "f=3,a=2,b=70001,perm=1", 0},
    {"geglu", b_geglu, "l=300,d=640", 0},
    {"add", b_binary, "f=0,sa=10,sb=11", 0},
    {"mul", b_binary, "f=2,sa=12,sb=13", 0},
    {"rope", b_rope, "mode=0,l=300,d=64", 0},
    {"rope", b_rope_nd, "mode=1,l=300,d=128,a0=16,a1=56,a2=56,h=4", 0},
    /* several weight tiles (16 MiB of f32 rows each: 1024 rows at k=4096, 512 at 8192) */
    {"linear_quant", b_linear_quant, "type=q4_k,b=1,m=3,k=4096,n=1100", 0},
    {"linear_quant", b_linear_quant, "type=q8_0,b=2,m=7,k=8192,n=1031", 0},
    {"linear_quant", b_linear_quant, "type=q8_0,b=1,m=3,k=8192,n=1100,gelu=1", 0},
};

/* ---- backend configurations --------------------------------------------------------------- */

typedef struct be_config {
    const char   *name;
    const char   *backend; /* registry name */
    const char   *ops;     /* comma-separated ops it runs, NULL = all */
    const char   *env;     /* space-separated NAME=VALUE set while the backend is created */
    imgd_cpu_math math;
    imgd_cpu_gemm gemm;
    imgd_gpu_math gpu_math;
    bool          portable;
    double        nmse_min; /* tolerance floor for this configuration */
    bool          twice;    /* computes twice and checks the second run (cuda: the replay of
                               the CUDA graph the first run captured) */
} be_config;

/* The cuda configurations cover each path of the backend and its fallback (selected by
 * the environment when the backend is created; tensor/cuda/cuda.h): cuDNN or im2col conv2d,
 * flash or GEMM attention, weights read directly in the GEMM type or rounded per run. */
static const be_config k_configs[] = {
    {"cpu", "cpu", NULL, NULL, IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F32, false, 0,
     false},
    {"cpu-openblas", "cpu", "matmul", NULL, IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_OPENBLAS,
     IMGD_GPU_MATH_F32, false, 0, false},
    {"cpu-portable", "cpu", "attention", NULL, IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_F32, true, 0, false},
    {"cpu-bf16", "cpu", "matmul,conv2d", NULL, IMGD_CPU_MATH_BF16, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_F32, false, 1e-4, false},
    /* f32: cuDNN conv2d where built with it, flash attention */
    {"cuda", "cuda", NULL, NULL, IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F32, false, 0,
     false},
    {"cuda-im2col", "cuda", "conv2d", "IMGD_CUDA_CUDNN=0", IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_F32, false, 0, false},
    {"cuda-attn-gemm", "cuda", "attention", "IMGD_CUDA_ATTN=gemm", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F32, false, 0, false},
    /* operands rounded to 11 / 8 significant bits: NMSE ~1e-7 / ~1e-5 on these inputs */
    {"cuda-f16", "cuda",
     "matmul,linres,lingelu,conv2d,convres,gnconv,attention,linear_quant,dequantize", NULL,
     IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, false},
    {"cuda-f16-old", "cuda", "matmul,linres,lingelu,conv2d,convres,gnconv,attention",
     "IMGD_CUDA_CUDNN=0 IMGD_CUDA_ATTN=flash IMGD_CUDA_DIRECT_WEIGHTS=0 IMGD_CUDA_LT=0",
     IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, false},
    /* linear_quant expanding every weight (also for few rows of x) in tiles of 64 rows */
    {"cuda-f16-lq-tiles", "cuda", "linear_quant",
     "IMGD_CUDA_LQ_ROWS=0 IMGD_CUDA_LQ_TILE=4096 IMGD_CUDA_LQ_EXPAND=0", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, false},
    /* every linear_quant weight (but the few-row nodes') expanded once at plan time and its
     * blocks dropped (the default where the card has the memory); run twice: the replay */
    {"cuda-f16-lq-expand", "cuda", "linear_quant", "IMGD_CUDA_LQ_EXPAND=1", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, true},
    {"cuda-bf16-lq-expand", "cuda", "linear_quant", "IMGD_CUDA_LQ_EXPAND=1 IMGD_CUDA_LQ_ROWS=0",
     IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_BF16, false, 1e-4, true},
    /* cuDNN convolution on NCHW, and on NHWC, tensors at every shape (the default in
     * f16/bf16 math picks per shape), through the legacy API: NCHW with the graph API off,
     * NHWC where (on the emulator) cuDNN makes no graph plan, so it falls back
     * (check_conv_legacy) */
    {"cuda-f16-nchw", "cuda", "conv2d,convres,gnconv",
     "IMGD_CUDA_CONV_NHWC=0 IMGD_CUDA_CONV_GRAPH=0", IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_F16, false, 1e-5, false},
    {"cuda-bf16-nhwc", "cuda", "conv2d,convres,gnconv",
     "IMGD_CUDA_CONV_NHWC=1 CUDA_EMU_CONV_GRAPH=0", IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_BF16, false, 1e-4, false},
    /* every cuDNN convolution's layout timed at plan time (the default times those of 1e8
     * FLOP and more); on the emulator, the layout CUDA_EMU_SLOW_CONV names runs longer on the
     * events' clock, so f16 takes NHWC and bf16 NCHW, and so do the graph engines and the
     * legacy algorithm CUDA_EMU_SLOW_ENGINE names, so f16 takes a later graph plan (engine 2:
     * engine 1 compiles at run time, is not taken, and would write NaN) and bf16 the first
     * (check_conv_tune); run twice, so the CUDA graph replays the choice */
    {"cuda-f16-conv-tune", "cuda", "conv2d,convres,gnconv",
     "IMGD_CUDA_CONV_NHWC=tune CUDA_EMU_SLOW_CONV=nchw CUDA_EMU_SLOW_ENGINE=0,3,legacy",
     IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, true},
    {"cuda-bf16-conv-tune", "cuda", "conv2d,convres,gnconv",
     "IMGD_CUDA_CONV_NHWC=tune CUDA_EMU_SLOW_CONV=nhwc CUDA_EMU_SLOW_ENGINE=2,3,legacy",
     IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_BF16, false, 1e-4, true},
    /* every GEMM's kernel timed (the default times those of 1e8 FLOP and more); on the
     * emulator the candidates CUDA_EMU_SLOW_GEMM names run longer on the events' clock, so f16
     * takes a later cuBLASLt algorithm and bf16 the first (check_gemm_tune); run twice: the
     * first compute times, the second uses the choices */
    {"cuda-f16-gemm-tune", "cuda", "matmul,linres,lingelu,linear_quant",
     "IMGD_CUDA_GEMM=tune CUDA_EMU_SLOW_GEMM=0,gemmex", IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_F16, false, 1e-5, true},
    {"cuda-bf16-gemm-tune", "cuda", "matmul,linres,lingelu,linear_quant",
     "IMGD_CUDA_GEMM=tune CUDA_EMU_SLOW_GEMM=1,2,gemmex", IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_BF16, false, 1e-4, true},
    {"cuda-f16-attn-gemm", "cuda", "attention", "IMGD_CUDA_ATTN=gemm", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, false},
    /* the tensor-core flash kernel of cards before compute capability 8.0 (the default is
     * mma from 8.0) */
    {"cuda-f16-attn-wmma", "cuda", "attention", "IMGD_CUDA_ATTN=wmma", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, false},
    {"cuda-bf16-attn-wmma", "cuda", "attention", "IMGD_CUDA_ATTN=wmma", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_BF16, false, 1e-4, false},
    /* cuDNN's fused SDPA operation (backend graph API) where it takes the node, else mma */
    {"cuda-f16-attn-cudnn", "cuda", "attention", "IMGD_CUDA_ATTN=cudnn", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, false},
    {"cuda-bf16-attn-cudnn", "cuda", "attention", "IMGD_CUDA_ATTN=cudnn", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_BF16, false, 1e-4, false},
    /* every attention node timed: cuDNN's SDPA where it takes it against mma with one and
     * two query tiles per warp (the default times nodes of 1e8 FLOP and more); run twice, so
     * the CUDA graph replays the choice */
    {"cuda-f16-attn-tune", "cuda", "attention_tune", "IMGD_CUDA_ATTN=tune", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, true},
    {"cuda-bf16-attn-tune", "cuda", "attention_tune", "IMGD_CUDA_ATTN=tune", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_BF16, false, 1e-4, true},
    /* the mma kernel with two query tiles per warp at every head dim (default: up to 32) */
    {"cuda-f16-attn-mma2", "cuda", "attention", "IMGD_CUDA_ATTN_MTILES=2", IMGD_CPU_MATH_F32,
     IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F16, false, 1e-5, false},
    {"cuda-bf16", "cuda",
     "matmul,linres,lingelu,conv2d,convres,gnconv,attention,linear_quant,dequantize", NULL,
     IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_BF16, false, 1e-4, false},
    /* the chain's half-precision storage in bf16 */
    {"cuda-bf16-chain", "cuda", "chain", NULL, IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_BF16, false, 1e-4, false},
    /* every op without IMGD_CUDA_SYNC, so the graph is captured and then replayed */
    {"cuda-graph", "cuda", NULL, "IMGD_CUDA_SYNC=0", IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO,
     IMGD_GPU_MATH_F16, false, 1e-5, true},
};

static bool in_list(const char *list, const char *op) {
    if (!list) return true;
    size_t      n = strlen(op);
    const char *p = list;
    while ((p = strstr(p, op)) != NULL) {
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return true;
        p += n;
    }
    return false;
}

static bool g_verbose;

/* ---- running a case ------------------------------------------------------------------------ */

typedef struct result {
    float      *data;
    size_t      n;
    double      us; /* perf: microseconds per compute */
    imgd_status st;
} result;

static void ctx_free(tctx *c) {
    imgd_graph_free(c->g);
    for (int i = 0; i < c->n_bufs; i++) imgd_free(c->bufs[i]);
    memset(c, 0, sizeof *c);
}

static result run_on(const op_case *tc, uint64_t seed, imgd_backend *be, int reps, bool twice) {
    result       r = {NULL, 0, 0, IMGD_OK};
    tctx         c = {.vars = tc->vars, .rng = seed * 2654435761u + 88172645463325252u};
    imgd_tensor *out;
    if ((r.st = imgd_graph_new(NULL, &c.g)) != IMGD_OK) return r;
    out = tc->build(&c);
    imgd_graph_output(c.g, out);
    r.st = imgd_graph_plan(c.g, be, NULL);
    if (r.st == IMGD_OK) r.st = imgd_graph_alloc(c.g, NULL, 0);
    if (r.st == IMGD_OK) r.st = imgd_graph_compute(c.g);
    if (r.st == IMGD_OK && twice) r.st = imgd_graph_compute(c.g);
    if (r.st == IMGD_OK && reps > 0) {
        double t0 = tu_now_s();
        for (int i = 0; i < reps && r.st == IMGD_OK; i++) r.st = imgd_graph_compute(c.g);
        r.us = (tu_now_s() - t0) * 1e6 / reps;
    }
    if (r.st == IMGD_OK) {
        r.n    = (size_t)imgd_tensor_numel(out);
        r.data = imgd_malloc(r.n * sizeof *r.data + 1);
        r.st   = r.data ? imgd_graph_read_f32(c.g, out, r.data, r.n) : IMGD_E_NOMEM;
    }
    if (r.st != IMGD_OK) fprintf(stderr, "  %s: %s\n", imgd_status_name(r.st), imgd_last_error());
    ctx_free(&c);
    return r;
}

static bool compare(const char *label, const result *ref, const result *got, double tol) {
    if (ref->n != got->n) {
        printf("  %s: %zu values, reference has %zu\n", label, got->n, ref->n);
        return false;
    }
    double num = 0, den = 0, max_err = 0;
    size_t bad_ref = 0, bad_got = 0;
    for (size_t i = 0; i < ref->n; i++) {
        double a = (double)ref->data[i], b = (double)got->data[i];
        if (!isfinite(a))
            bad_ref++;
        else if (!isfinite(b))
            bad_got++;
        else {
            num += (a - b) * (a - b);
            den += a * a;
            max_err = fmax(max_err, fabs(a - b));
        }
    }
    if (bad_ref) {
        printf("  %s: reference has %zu non-finite values (bad case)\n", label, bad_ref);
        return false;
    }
    if (bad_got) {
        printf("  %s: %zu NaN/Inf values where the reference is finite\n", label, bad_got);
        return false;
    }
    double nmse = den > 0 ? num / den : num;
    if (g_verbose) printf("  %-72s NMSE %.3g  max_err %.3g\n", label, nmse, max_err);
    if (nmse > tol) {
        printf("  %s: NMSE %.3g > %.3g (max_err %.3g)\n", label, nmse, tol, max_err);
        return false;
    }
    return true;
}

/* ---- main ------------------------------------------------------------------------------------ */

typedef struct opts {
    const char *op, *backend, *vars;
    bool        perf, list;
} opts;

static int parse_args(int argc, char **argv, opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--list") == 0)
            o->list = true;
        else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0)
            g_verbose = true;
        else if (i + 1 < argc && (strcmp(a, "--op") == 0 || strcmp(a, "-o") == 0))
            o->op = argv[++i];
        else if (i + 1 < argc && (strcmp(a, "--backend") == 0 || strcmp(a, "-b") == 0))
            o->backend = argv[++i];
        else if (i + 1 < argc && strcmp(a, "--vars") == 0)
            o->vars = argv[++i];
        else if (i + 1 < argc && strcmp(a, "--mode") == 0)
            o->perf = strcmp(argv[++i], "perf") == 0;
        else {
            fprintf(stderr,
                    "usage: %s [--op NAME[,NAME...]] [--backend NAME] [--mode test|perf] "
                    "[--vars SUBSTRING] [--list] [--verbose]\n",
                    argv[0]);
            return -1;
        }
    }
    return 0;
}

/* Sets (set) or unsets each NAME=VALUE of the space-separated list env. */
static void apply_env(const char *env, bool set) {
    char buf[256];
    if (!env || !imgd_fmt(buf, sizeof buf, "%s", env)) return;
    for (char *p = buf; *p;) {
        char *end = strchr(p, ' ');
        if (end) *end = '\0';
        char *eq = strchr(p, '=');
        if (eq) {
            *eq = '\0';
            if (set)
                (void)setenv(p, eq + 1, 1);
            else
                (void)unsetenv(p);
        }
        if (!end) break;
        p = end + 1;
    }
}

static imgd_status make_backend(const be_config *cfg, imgd_backend **out) {
    imgd_backend_params p = imgd_backend_params_default();
    p.math                = cfg->math;
    p.gemm                = cfg->gemm;
    p.gpu_math            = cfg->gpu_math;
    if (cfg->portable) (void)setenv("IMGD_CPU_NO_AVX512", "1", 1);
    apply_env(cfg->env, true);
    imgd_status st = imgd_backend_new(cfg->backend, &p, out);
    apply_env(cfg->env, false);
    if (cfg->portable) (void)unsetenv("IMGD_CPU_NO_AVX512");
    return st;
}

#ifdef IMGD_HAVE_CUDA
/* One linear layer y [m, O] = x W^T + b over host weights W [O, I] (8 MiB: its own
 * allocation on a real device too), b: planned on be, run on x = 0.01 * (i % 7), and checked
 * against a direct f64 sum. */
#    define SW_O 1024
#    define SW_I 2048
typedef struct sw_graph {
    imgd_graph  *g;
    imgd_tensor *x, *y;
    int64_t      m;
} sw_graph;

static sw_graph sw_plan(imgd_backend *be, int64_t m, const float *W, const float *b) {
    sw_graph s = {NULL, NULL, NULL, m};
    if (imgd_graph_new(NULL, &s.g) != IMGD_OK) return s;
    s.x             = imgd_graph_input(s.g, "x", IMGD_DTYPE_F32, 2, (int64_t[]){m, SW_I});
    imgd_tensor *w  = imgd_graph_weight(s.g, "w", IMGD_DTYPE_F32, 2, (int64_t[]){SW_O, SW_I}, W);
    imgd_tensor *bt = imgd_graph_weight(s.g, "b", IMGD_DTYPE_F32, 1, (int64_t[]){SW_O}, b);
    s.y             = imgd_op_linear(s.g, s.x, w, bt);
    imgd_graph_output(s.g, s.y);
    if (imgd_graph_plan(s.g, be, NULL) != IMGD_OK || imgd_graph_alloc(s.g, NULL, 0) != IMGD_OK) {
        printf("  shared weights: planning failed: %s\n", imgd_last_error());
        imgd_graph_free(s.g);
        s.g = NULL;
    }
    return s;
}

static bool sw_check_tol(const sw_graph *s, const float *W, const float *b, double tol);

static bool sw_check(const sw_graph *s, const float *W, const float *b) {
    return sw_check_tol(s, W, b, 1e-4);
}

static bool sw_check_tol(const sw_graph *s, const float *W, const float *b, double tol) {
    int64_t m  = s->m;
    float  *x  = imgd_malloc((size_t)(m * SW_I) * sizeof *x);
    float  *y  = imgd_malloc((size_t)(m * SW_O) * sizeof *y);
    bool    ok = x && y && s->g;
    for (int64_t i = 0; ok && i < m * SW_I; i++) x[i] = 0.01f * (float)(i % 7);
    ok = ok && imgd_tensor_bind(s->x, x) == IMGD_OK && imgd_graph_compute(s->g) == IMGD_OK &&
         imgd_graph_read_f32(s->g, s->y, y, (size_t)(m * SW_O)) == IMGD_OK;
    for (int64_t r = 0; ok && r < m; r++)
        for (int64_t o = 0; ok && o < SW_O; o++) {
            double sum = (double)b[o];
            for (int64_t i = 0; i < SW_I; i++)
                sum += (double)x[r * SW_I + i] * (double)W[o * SW_I + i];
            ok = fabs(sum - (double)y[r * SW_O + o]) <= tol * (1.0 + fabs(sum));
        }
    imgd_free(x);
    imgd_free(y);
    return ok;
}

/* The weight [SW_O, SW_I] and bias of the shared-weight checks, filled; false (nothing
 * allocated) when out of memory. */
static bool sw_inputs(float **W, float **b) {
    size_t nw = (size_t)SW_O * SW_I;
    *W        = imgd_malloc(nw * sizeof **W);
    *b        = imgd_malloc(SW_O * sizeof **b);
    if (!*W || !*b) {
        imgd_free(*W);
        imgd_free(*b);
        return false;
    }
    for (size_t i = 0; i < nw; i++) (*W)[i] = 0.001f * (float)((i * 37) % 101) - 0.05f;
    for (size_t i = 0; i < SW_O; i++) (*b)[i] = 0.1f * (float)(i % 5);
    return true;
}

/* cuda: plans over the same host weights share one device copy (the tile graphs of a tiled
 * VAE decode would otherwise hold one each); a plan keeps its copy while others go; a weight
 * rewritten in place gets a copy of its own; the copies go with the last plan holding them. */
static void check_shared_weights(imgd_backend *be) {
    size_t nw = (size_t)SW_O * SW_I, wb = nw * sizeof(float), f0 = 0, f1 = 0, f2 = 0, f3 = 0;
    size_t f4 = 0, f5 = 0, t = 0;
    float *W = NULL, *b = NULL;
    if (!sw_inputs(&W, &b)) return;
    CHECK_STATUS(imgd_cuda_mem_info(&f0, &t), IMGD_OK);
    sw_graph g1 = sw_plan(be, 3, W, b);
    CHECK_STATUS(imgd_cuda_mem_info(&f1, &t), IMGD_OK);
    sw_graph g2 = sw_plan(be, 5, W, b);
    CHECK_STATUS(imgd_cuda_mem_info(&f2, &t), IMGD_OK);
    CHECK_MSG(f0 - f1 >= wb && f1 - f2 < wb / 2, "first plan took %zu bytes, second %zu", f0 - f1,
              f1 - f2);
    CHECK(sw_check(&g1, W, b) && sw_check(&g2, W, b));
    imgd_graph_free(g1.g); /* g2 keeps the copy */
    CHECK(sw_check(&g2, W, b));
    W[0] += 1.0f; /* rewritten in place: a new plan must not take g2's copy */
    CHECK_STATUS(imgd_cuda_mem_info(&f3, &t), IMGD_OK);
    sw_graph g3 = sw_plan(be, 2, W, b);
    CHECK_STATUS(imgd_cuda_mem_info(&f4, &t), IMGD_OK);
    CHECK_MSG(f3 - f4 >= wb, "the rewritten weight's plan took %zu bytes", f3 - f4);
    CHECK(sw_check(&g3, W, b));
    imgd_graph_free(g2.g);
    imgd_graph_free(g3.g);
    CHECK_STATUS(imgd_cuda_mem_info(&f5, &t), IMGD_OK);
    CHECK_MSG(f5 + wb / 2 > f0, "%zu bytes still held after every plan was freed", f0 - f5);
    printf("  shared weights (%zu bytes): first plan took %zu bytes, second %zu, the rewritten "
           "weight's %zu; %zd left after\n",
           wb, f0 - f1, f1 - f2, f3 - f4, (ptrdiff_t)(f0 - f5));
    imgd_free(W);
    imgd_free(b);
}
#endif

#ifdef IMGD_HAVE_CUDA
/* cuda in f16 math: an f32 weight that its GEMM reads as a copy converted at plan time is
 * not also kept on the device as uploaded (8 MiB f32 -> a 4 MiB f16 copy only). */
static void check_converted_weights(imgd_backend *be) {
    size_t wb = (size_t)SW_O * SW_I * sizeof(float), f0 = 0, f1 = 0, f2 = 0, t = 0;
    float *W = NULL, *b = NULL;
    if (!sw_inputs(&W, &b)) return;
    CHECK_STATUS(imgd_cuda_mem_info(&f0, &t), IMGD_OK);
    sw_graph g1 = sw_plan(be, 3, W, b);
    CHECK_STATUS(imgd_cuda_mem_info(&f1, &t), IMGD_OK);
    CHECK_MSG(f0 - f1 >= wb / 2 && f0 - f1 < wb, "the f16 plan took %zu bytes for %zu of f32",
              f0 - f1, wb);
    CHECK(sw_check_tol(&g1, W, b, 1e-2));
    imgd_graph_free(g1.g);
    CHECK_STATUS(imgd_cuda_mem_info(&f2, &t), IMGD_OK);
    CHECK_MSG(f2 + wb / 4 > f0, "%zu bytes still held after the plan was freed", f0 - f2);
    printf("  converted weight (%zu bytes of f32): the f16 plan took %zu bytes\n", wb, f0 - f1);
    imgd_free(W);
    imgd_free(b);
}
#endif

#ifdef IMGD_HAVE_CUDA
/* cuda with IMGD_CUDA_CONV_NHWC=tune: each conv2d runs through cuDNN in the layout that ran
 * faster when the plan was made, and a second plan of the same shapes takes the same one (as
 * remembered). On the emulator the layout CUDA_EMU_SLOW_CONV names is the slower one, so the
 * answer is known (want_nhwc); on a GPU either may win. */
static void check_conv_tune(imgd_backend *be, bool want_nhwc) {
    static const char *const vars[] = {"n=2,c=35,h=33,w=31,oc=37,k=3,stride=1",
                                       "n=1,c=33,h=16,w=16,oc=40,k=3,stride=1,bias=0",
                                       "n=2,c=48,h=20,w=21,oc=40,k=1,pad=0,type=f16"};
    char                     dev[128];
    imgd_cuda_device_name(dev, sizeof dev);
    bool emulated = strstr(dev, "emulated") != NULL;
    for (size_t v = 0; v < IMGD_ARRAY_LEN(vars); v++) {
        int first = -1;
        for (int plan = 0; plan < 2; plan++) {
            tctx c = {.vars = vars[v], .rng = 12345};
            if (imgd_graph_new(NULL, &c.g) != IMGD_OK) return;
            imgd_graph_output(c.g, b_conv2d(&c));
            imgd_cuda_paths p  = {0};
            imgd_status     st = imgd_graph_plan(c.g, be, NULL);
            if (st == IMGD_OK) st = imgd_cuda_plan_paths(be, c.g, &p);
            CHECK_MSG(st == IMGD_OK, "conv2d(%s): %s", vars[v], imgd_last_error());
            CHECK_MSG(p.conv_cudnn == 1, "conv2d(%s): %d of 1 convolutions through cuDNN", vars[v],
                      p.conv_cudnn);
            if (emulated) {
                CHECK_MSG(p.conv_nhwc == want_nhwc, "conv2d(%s): %s taken, %s is faster", vars[v],
                          p.conv_nhwc ? "NHWC" : "NCHW", want_nhwc ? "NHWC" : "NCHW");
                /* f16: the first engine and the legacy algorithm made slow; bf16: the others */
                CHECK_MSG(p.conv_graph == 1 && p.conv_graph_other == want_nhwc,
                          "conv2d(%s): graph plan %s taken (%d through the graph API), %s is "
                          "faster",
                          vars[v], p.conv_graph_other ? "other than the first" : "first",
                          p.conv_graph, want_nhwc ? "a later one" : "the first");
            }
            if (plan == 0) first = p.conv_nhwc;
            CHECK_MSG(p.conv_nhwc == first, "conv2d(%s): the second plan took the other layout",
                      vars[v]);
            ctx_free(&c);
        }
        printf("  conv2d(%s) layout timed at plan: %s%s\n", vars[v], first ? "NHWC" : "NCHW",
               emulated ? ""
                        : " (on a GPU: either may win, and any graph plan or legacy algorithm)");
    }
    /* a group norm read only by an NHWC convolution writes NHWC for it; read again, it does not */
    for (int reuse = 0; reuse < 2; reuse++) {
        tctx c = {.vars = reuse ? "reuse=1" : "", .rng = 54321};
        if (imgd_graph_new(NULL, &c.g) != IMGD_OK) return;
        imgd_graph_output(c.g, b_gnconv(&c));
        imgd_cuda_paths p  = {0};
        imgd_status     st = imgd_graph_plan(c.g, be, NULL);
        if (st == IMGD_OK) st = imgd_cuda_plan_paths(be, c.g, &p);
        CHECK_MSG(st == IMGD_OK, "gnconv(reuse=%d): %s", reuse, imgd_last_error());
        CHECK_MSG(p.conv_x_nhwc == (p.conv_nhwc && !reuse),
                  "gnconv(reuse=%d): %d NHWC convolutions, %d reading x as the norm wrote it",
                  reuse, p.conv_nhwc, p.conv_x_nhwc);
        if (emulated)
            CHECK_MSG(p.conv_nhwc == want_nhwc, "gnconv(reuse=%d): %s taken, %s is faster", reuse,
                      p.conv_nhwc ? "NHWC" : "NCHW", want_nhwc ? "NHWC" : "NCHW");
        printf("  gnconv(reuse=%d): %s, %d convolution reading x as its group norm wrote it\n",
               reuse, p.conv_nhwc ? "NHWC" : "NCHW", p.conv_x_nhwc);
        ctx_free(&c);
    }
}

/* A convolution planned on be runs through cuDNN's graph API (want_graph) or its legacy API. */
static void check_conv_graph(imgd_backend *be, const char *name, bool want_graph) {
    tctx c = {.vars = "n=2,c=16,h=12,w=10,oc=24,k=3,stride=1", .rng = 777};
    if (imgd_graph_new(NULL, &c.g) != IMGD_OK) return;
    imgd_graph_output(c.g, b_conv2d(&c));
    imgd_cuda_paths p  = {0};
    imgd_status     st = imgd_graph_plan(c.g, be, NULL);
    if (st == IMGD_OK) st = imgd_cuda_plan_paths(be, c.g, &p);
    CHECK_MSG(st == IMGD_OK, "%s conv2d: %s", name, imgd_last_error());
    CHECK_MSG(p.conv_cudnn == 1 && p.conv_graph == want_graph,
              "%s conv2d: %d through cuDNN, %d through its graph API (want %d)", name, p.conv_cudnn,
              p.conv_graph, want_graph);
    imgd_cuda_tune_cost tc = {0};
    (void)imgd_cuda_tune_costs(be, &tc);
    CHECK_MSG(!want_graph || tc.conv_plan_n >= 1, "%s: %d convolution graphs counted as made", name,
              tc.conv_plan_n);
    printf("  %s conv2d: cuDNN %s API (%d graphs made so far, %.3f s)\n", name,
           p.conv_graph ? "graph" : "legacy", tc.conv_plan_n, tc.conv_plan_s);
    ctx_free(&c);
}

/* cuda with IMGD_CUDA_GEMM=tune, after its cases and three of its own: GEMMs were timed, and on
 * the emulator (where the slow candidates are known) all of them, and f16 took a later cuBLASLt
 * algorithm (its first and cublasGemmEx made slow) and bf16 the first (the others and cublasGemmEx
 * made slow). */
static void check_gemm_tune(imgd_backend *be, bool f16) {
    static const op_case cases[] = {{"matmul", b_linear, "in=96,out=40,b=2,l=9,bias=0", 0},
                                    {"matmul", b_linear, "in=64,out=48,b=1,l=7", 0},
                                    {"lingelu", b_lingelu, "", 0}};
    imgd_cuda_gemm_stats s       = {0};
    char                 dev[128];
    imgd_cuda_device_name(dev, sizeof dev);
    for (size_t i = 0; i < IMGD_ARRAY_LEN(cases); i++) { /* GEMMs of its own, whatever --op ran */
        result r = run_on(&cases[i], 7, be, 0, true);
        CHECK_MSG(r.st == IMGD_OK, "gemm tune: %s(%s) failed", cases[i].op, cases[i].vars);
        imgd_free(r.data);
    }
    CHECK_STATUS(imgd_cuda_gemm_picks(be, &s), IMGD_OK);
    /* on a GPU a GEMM with one candidate (cuBLASLt offering one algorithm for an epilogue) is
     * not timed */
    CHECK_MSG(s.shapes > 0 && s.timed > 0, "gemm tune: %d of %d GEMMs timed", s.timed, s.shapes);
    if (strstr(dev, "emulated")) {
        CHECK_MSG(s.timed == s.shapes, "gemm tune: %d of %d GEMMs timed", s.timed, s.shapes);
        CHECK_MSG(s.none == 0 && s.gemm_ex == 0 && (f16 ? s.lt_first : s.lt_other) == 0,
                  "gemm tune (%s): %d GEMMs on cuBLASLt's first algorithm, %d on another, %d on "
                  "cublasGemmEx, %d on none; the slow ones are %s",
                  f16 ? "f16" : "bf16", s.lt_first, s.lt_other, s.gemm_ex, s.none,
                  f16 ? "the first and cublasGemmEx" : "the others and cublasGemmEx");
    }
    printf("  gemm kernels timed (%s): %d GEMMs: %d cuBLASLt first, %d cuBLASLt other, %d "
           "cublasGemmEx%s\n",
           f16 ? "f16" : "bf16", s.shapes, s.lt_first, s.lt_other, s.gemm_ex,
           strstr(dev, "emulated") ? "" : " (on a GPU: any may win)");
}

/* IMGD_CUDA_TUNE_CACHE: a backend's timed choices are written to the file; a second backend
 * with the same settings starts with them and times nothing on the same GEMMs; a file that is
 * not a tuning cache is ignored (the backend works) and replaced by the next save. */
static void check_tune_cache(void) {
    static const be_config cfg = {"cuda-f16-tune-cache",
                                  "cuda",
                                  NULL,
                                  "IMGD_CUDA_GEMM=tune",
                                  IMGD_CPU_MATH_F32,
                                  IMGD_CPU_GEMM_AUTO,
                                  IMGD_GPU_MATH_F16,
                                  false,
                                  1e-5,
                                  true};
    static const op_case   tc  = {"matmul", b_linear, "in=96,out=40,b=2,l=9,bias=0", 0};
    char                   path[512];
    tu_tmp_path(path, sizeof path, "cuda-tune.bin");
    (void)remove(path);
    (void)setenv("IMGD_CUDA_TUNE_CACHE", path, 1);
    imgd_cuda_gemm_stats s[3] = {{0}};
    imgd_cuda_tune_cost  c[3] = {{0}};
    for (int k = 0; k < 3; k++) {
        imgd_backend *be = NULL;
        if (k == 2) { /* not a tuning cache */
            FILE *f = fopen(path, "wb");
            if (f) {
                (void)fputs("not a tuning cache", f);
                (void)fclose(f);
            }
        }
        CHECK_STATUS(make_backend(&cfg, &be), IMGD_OK);
        if (!be) break;
        result r = run_on(&tc, 3, be, 0, true);
        CHECK_MSG(r.st == IMGD_OK, "tune cache: backend %d: the linear failed", k);
        imgd_free(r.data);
        CHECK_STATUS(imgd_cuda_gemm_picks(be, &s[k]), IMGD_OK);
        CHECK_STATUS(imgd_cuda_tune_costs(be, &c[k]), IMGD_OK);
        imgd_backend_free(be);
    }
    CHECK_MSG(s[0].timed > 0 && c[0].gemm_n > 0, "tune cache: the first backend timed %d GEMMs",
              c[0].gemm_n);
    CHECK_MSG(c[1].gemm_n == 0 && s[1].shapes == s[0].shapes && s[1].timed == s[0].timed,
              "tune cache: the second backend timed %d GEMMs and holds %d choices (%d timed); "
              "the first saved %d (%d timed)",
              c[1].gemm_n, s[1].shapes, s[1].timed, s[0].shapes, s[0].timed);
    CHECK_MSG(c[2].gemm_n > 0, "tune cache: after a bad file the backend timed %d GEMMs",
              c[2].gemm_n);
    FILE *f         = fopen(path, "rb");
    char  magic[9]  = {0};
    bool  rewritten = f && fread(magic, 8, 1, f) == 1 && strcmp(magic, "IMGDTUN1") == 0;
    if (f) (void)fclose(f);
    CHECK_MSG(rewritten, "tune cache: %s was not rewritten after the bad file", path);
    printf("  tuning cache: %d GEMM choices saved, loaded by a second backend (%d timed there)\n",
           s[0].shapes, c[1].gemm_n);
    (void)unsetenv("IMGD_CUDA_TUNE_CACHE");
    (void)remove(path);
}

/* cuda with IMGD_CUDA_LQ_EXPAND=1 (f16 math): a Q8_0 weight that its linear_quant expands at
 * plan time is held once, in f16, its blocks dropped (2048 x 1024 values: 4 MiB, not 4 MiB +
 * 2.1 MiB of blocks), and the GEMM over the copy gives x w^T (every weight 0.5). */
static void check_expanded_quant(imgd_backend *be) {
    const int64_t  N = 1024, K = 2048, M = 8, nb = N * K / 32; /* M over CUK_LQ_ROWS */
    size_t         qb = (size_t)nb * 34, eb = (size_t)(N * K) * 2, f0 = 0, f1 = 0, f2 = 0, t = 0;
    unsigned char *q  = imgd_malloc(qb);
    float         *x  = imgd_malloc((size_t)(M * K) * sizeof *x);
    float         *y  = imgd_malloc((size_t)(M * N) * sizeof *y);
    imgd_graph    *g  = NULL;
    bool           ok = q && x && y && imgd_graph_new(NULL, &g) == IMGD_OK;
    for (int64_t i = 0; ok && i < nb; i++) { /* d = 0.5 (f16 0x3800), every quant 1 */
        q[i * 34]     = 0x00;
        q[i * 34 + 1] = 0x38;
        memset(q + i * 34 + 2, 1, 32);
    }
    for (int64_t i = 0; ok && i < M * K; i++) x[i] = 0.01f * (float)(i % 7);
    CHECK_STATUS(imgd_cuda_mem_info(&f0, &t), IMGD_OK);
    imgd_tensor *xt = ok ? imgd_graph_input(g, "x", IMGD_DTYPE_F32, 2, (int64_t[]){M, K}) : NULL;
    imgd_tensor *w =
        ok ? imgd_graph_weight(g, "wq", IMGD_DTYPE_Q8_0, 2, (int64_t[]){N, K}, q) : NULL;
    imgd_tensor *yt = ok ? imgd_op_linear_quant(g, xt, w, NULL) : NULL;
    if (ok && yt) imgd_graph_output(g, yt);
    ok = ok && yt && imgd_graph_plan(g, be, NULL) == IMGD_OK &&
         imgd_graph_alloc(g, NULL, 0) == IMGD_OK;
    CHECK_MSG(ok, "expanded quant weight: planning failed: %s", imgd_last_error());
    CHECK_STATUS(imgd_cuda_mem_info(&f1, &t), IMGD_OK);
    CHECK_MSG(!ok || (f0 - f1 >= eb && f0 - f1 < eb + qb / 2),
              "the plan took %zu bytes for %zu expanded and %zu of blocks", f0 - f1, eb, qb);
    ok = ok && imgd_tensor_bind(xt, x) == IMGD_OK && imgd_graph_compute(g) == IMGD_OK &&
         imgd_graph_read_f32(g, yt, y, (size_t)(M * N)) == IMGD_OK;
    for (int64_t r = 0; ok && r < M; r++) {
        double want = 0;
        for (int64_t k = 0; k < K; k++) want += 0.5 * (double)x[r * K + k];
        for (int64_t o = 0; ok && o < N; o++) ok = fabs((double)y[r * N + o] - want) <= 1e-2 * want;
    }
    CHECK_MSG(ok, "expanded quant weight: wrong result or run failed: %s", imgd_last_error());
    imgd_graph_free(g);
    CHECK_STATUS(imgd_cuda_mem_info(&f2, &t), IMGD_OK);
    CHECK_MSG(f2 + eb / 4 > f0, "%zu bytes still held after the plan was freed", f0 - f2);
    printf("  expanded Q8_0 weight (%zu bytes of blocks, %zu in f16): the plan took %zu bytes\n",
           qb, eb, f0 - f1);
    imgd_free(q);
    imgd_free(x);
    imgd_free(y);
}
#endif

/* A graph whose weights cannot fit on the device (2 TiB of f16) is refused by plan, before
 * any upload, with the numbers and what to do. The weight's memory is never read. */
static void check_too_big(imgd_backend *be) {
    imgd_graph *g = NULL;
    if (imgd_graph_new(NULL, &g) != IMGD_OK) return;
    static const uint16_t one = 0;
    int64_t               n   = (int64_t)1 << 20;
    imgd_tensor          *x   = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 2, (int64_t[]){1, n});
    imgd_tensor *w = imgd_graph_weight(g, "huge", IMGD_DTYPE_F16, 2, (int64_t[]){n, n}, &one);
    imgd_tensor *y = imgd_op_matmul(g, x, imgd_op_cast(g, w, IMGD_DTYPE_F32), false, false, NULL);
    imgd_graph_output(g, y);
    imgd_status st = imgd_graph_plan(g, be, NULL);
    CHECK_EQ_INT(st, IMGD_E_NOMEM);
    CHECK_MSG(strstr(imgd_last_error(), "MiB free") && strstr(imgd_last_error(), "--offload"),
              "too big: %s", imgd_last_error());
    printf("  too big for the device: %s\n", imgd_last_error());
    imgd_graph_free(g);
}

static bool case_selected(const opts *o, const op_case *tc) {
    return (!o->op || in_list(o->op, tc->op)) && (!o->vars || strstr(tc->vars, o->vars));
}

/* Runs one case on every selected configuration; returns failures. */
static int run_case(const opts *o, size_t ci, imgd_backend *ref, imgd_backend **bes) {
    const op_case *tc      = &k_cases[ci];
    int            failed  = 0;
    result         r_ref   = {0};
    bool           has_ref = false;
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++) {
        const be_config *cfg = &k_configs[k];
        if (!bes[k] || !in_list(cfg->ops, tc->op)) continue;
        if (!has_ref && !o->perf) {
            r_ref   = run_on(tc, ci, ref, 0, false);
            has_ref = true;
        }
        char label[256];
        (void)imgd_fmt(label, sizeof label, "%s(%s) [%s]", tc->op, tc->vars, cfg->name);
        result r  = run_on(tc, ci, bes[k], o->perf ? 20 : 0, k_configs[k].twice);
        bool   ok = r.st == IMGD_OK &&
                  (o->perf || (r_ref.st == IMGD_OK &&
                               compare(label, &r_ref, &r,
                                       IMGD_MAX(tc->nmse > 0 ? tc->nmse : 1e-7, cfg->nmse_min))));
        if (o->perf && ok) printf("  %-70s %10.1f us\n", label, r.us);
        if (!ok) {
            printf("  FAIL %s\n", label);
            failed++;
        }
        imgd_free(r.data);
    }
    imgd_free(r_ref.data);
    return failed;
}

int main(int argc, char **argv) {
    opts o = {0};
    if (parse_args(argc, argv, &o) != 0) return 2;
    imgd_log_level_set(IMGD_LOG_WARN); /* no per-plan device-memory lines */
    if (o.list) {
        for (size_t i = 0; i < IMGD_ARRAY_LEN(k_cases); i++)
            printf("%s(%s)\n", k_cases[i].op, k_cases[i].vars);
        return 0;
    }
    imgd_backend *ref = NULL, *bes[IMGD_ARRAY_LEN(k_configs)] = {NULL};
    CHECK_STATUS(imgd_backend_new("ref", NULL, &ref), IMGD_OK);
    bool only_cuda = o.backend && strcmp(o.backend, "cuda") == 0, have_cuda = false;
    bool cuda_absent = false;
    if (only_cuda) g_verbose = true; /* one GPU run should tell everything */
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++) {
        bool cuda_cfg = strcmp(k_configs[k].backend, "cuda") == 0;
        if (o.backend && strcmp(o.backend, k_configs[k].name) != 0 && !(only_cuda && cuda_cfg))
            continue;
        if (k_configs[k].math == IMGD_CPU_MATH_BF16 && !imgd_cpu_has_bf16()) {
            TEST_SKIP("%s: this CPU has no AVX-512-BF16", k_configs[k].name);
            continue;
        }
        if (cuda_cfg) {
            if (!cuda_absent) {
                (void)setenv("IMGD_CUDA_SYNC", "1", 0);
                imgd_status st = make_backend(&k_configs[k], &bes[k]);
                /* a build without CUDA does not know the name; a machine without a GPU
                 * reports it unsupported */
                cuda_absent = st == IMGD_E_INVALID_ARG || st == IMGD_E_UNSUPPORTED;
                if (cuda_absent)
                    TEST_SKIP("no CUDA device (%s)", imgd_last_error());
                else
                    CHECK_STATUS(st, IMGD_OK);
                have_cuda = have_cuda || st == IMGD_OK;
            }
            continue;
        }
        CHECK_STATUS(make_backend(&k_configs[k], &bes[k]), IMGD_OK);
    }
    if (only_cuda && !have_cuda) {
        imgd_backend_free(ref);
        return 77; /* SKIP_RETURN_CODE */
    }
    int n_cases = 0, n_failed = 0;
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_cases) && ref; i++) {
        if (!case_selected(&o, &k_cases[i])) continue;
        int f = run_case(&o, i, ref, bes);
        n_cases++;
        n_failed += f;
        if (f)
            g_test_failed++;
        else
            g_test_passed++;
    }
    printf("%d cases, %d backend runs failed\n", n_cases, n_failed);
    g_test_case_failed = 0; /* the device memory and path checks below, counted as one test */
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++)
        if (bes[k] && strcmp(k_configs[k].name, "cuda") == 0) {
            check_too_big(bes[k]);
#ifdef IMGD_HAVE_CUDA
            check_shared_weights(bes[k]);
#endif
        }
#ifdef IMGD_HAVE_CUDA
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++)
        if (bes[k] && strcmp(k_configs[k].name, "cuda-f16") == 0) check_converted_weights(bes[k]);
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++)
        if (bes[k] && strcmp(k_configs[k].name, "cuda-f16-lq-expand") == 0)
            check_expanded_quant(bes[k]);
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++)
        if (bes[k] && (strcmp(k_configs[k].name, "cuda-f16-conv-tune") == 0 ||
                       strcmp(k_configs[k].name, "cuda-bf16-conv-tune") == 0))
            check_conv_tune(bes[k], strcmp(k_configs[k].name, "cuda-f16-conv-tune") == 0);
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++)
        if (bes[k] && (strcmp(k_configs[k].name, "cuda-f16-gemm-tune") == 0 ||
                       strcmp(k_configs[k].name, "cuda-bf16-gemm-tune") == 0))
            check_gemm_tune(bes[k], strcmp(k_configs[k].name, "cuda-f16-gemm-tune") == 0);
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++)
        if (bes[k] && strcmp(k_configs[k].name, "cuda-f16") == 0) check_tune_cache();
#    ifdef IMGD_HAVE_CUDNN
    char dev[128];
    imgd_cuda_device_name(dev, sizeof dev);
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++) {
        const char *nm = k_configs[k].name;
        /* f16 / bf16 through the graph API; IMGD_CUDA_CONV_GRAPH=0, and (emulated) no graph
         * plan, through the legacy API; f32 through the legacy API */
        bool nograph = strcmp(nm, "cuda-bf16-nhwc") == 0;
        if (bes[k] && (strcmp(nm, "cuda-f16") == 0 || strcmp(nm, "cuda-bf16") == 0 ||
                       strcmp(nm, "cuda-f16-nchw") == 0 || strcmp(nm, "cuda") == 0 ||
                       (nograph && strstr(dev, "emulated"))))
            check_conv_graph(bes[k], nm,
                             strcmp(nm, "cuda-f16") == 0 || strcmp(nm, "cuda-bf16") == 0);
    }
#    endif
#endif
    if (g_test_case_failed) {
        g_test_failed++;
        fprintf(stderr, "FAIL device memory and path checks\n");
    }
    for (size_t k = 0; k < IMGD_ARRAY_LEN(k_configs); k++) imgd_backend_free(bes[k]);
    imgd_backend_free(ref);
    TEST_END();
}
