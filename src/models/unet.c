/* UNet2DConditionModel forward pass on the tensor engine (see unet.h). Module names and
 * order follow diffusers 0.27 (unets/unet_2d_condition.py, unet_2d_blocks.py, resnet.py,
 * transformers/transformer_2d.py, attention.py), so parameters bind by canonical name. */
#include "models/unet.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/text.h"
#include "tensor/ops.h"

#define NAME_CAP 256

/* ---- configuration ---------------------------------------------------------------------- */

imgd_status imgd_unet_cfg_from_detect(const imgd_model_info *mi, imgd_unet_cfg *cfg) {
    if (!mi || !cfg) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_unet_cfg_from_detect: NULL argument");
    }
    if (!mi->has_unet) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "the model has no UNet (detected kind '%s', family '%s'%s)",
                         imgd_model_kind_name(mi->kind), imgd_family_name(mi->family),
                         mi->has_dit ? ", a diffusion transformer" : "");
    }
    const imgd_unet_config *u = &mi->unet;
    if (u->encoder_hid_dim > 0) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "this UNet projects its text input (encoder_hid_proj, %d wide: a "
                         "Kolors-style model), which the UNet builder does not support yet",
                         (int)u->encoder_hid_dim);
    }
    imgd_unet_cfg c    = {0};
    c.in_channels      = u->in_channels;
    c.out_channels     = u->out_channels;
    c.n_levels         = u->n_levels;
    c.layers_per_block = u->layers_per_block;
    for (int32_t l = 0; l < IMGD_MAX_LEVELS; l++) {
        c.widths[l]     = u->widths[l];
        c.attn_depth[l] = u->attn_depth[l];
        c.heads[l]      = u->heads[l];
    }
    c.mid_depth       = u->mid_depth;
    c.context_dim     = u->context_dim;
    c.time_embed_dim  = u->time_embed_dim;
    c.adm_in_channels = u->adm_in_channels;
    c.groups          = u->groups;
    c.norm_eps        = 1e-5f;
    c.attn_norm_eps   = 1e-6f;
    c.ln_eps          = 1e-5f;
    c.linear_proj     = u->linear_proj;
    *cfg              = c;
    return IMGD_OK;
}

int32_t imgd_unet_heads(const imgd_unet_cfg *cfg, int32_t level) {
    if (!cfg || level < 0 || level >= cfg->n_levels || level >= IMGD_MAX_LEVELS) return 0;
    int32_t w = cfg->widths[level];
    if (cfg->head_dim > 0) return w % cfg->head_dim == 0 ? w / cfg->head_dim : 0;
    int32_t h = cfg->heads[level];
    return h > 0 && w % h == 0 ? h : 0;
}

/* Adds w to the ascending set dims[0..*n) (capacity cap). */
static void width_add(int32_t *dims, int32_t *n, int32_t cap, int32_t w) {
    int32_t i = 0;
    while (i < *n && dims[i] < w) i++;
    if ((i < *n && dims[i] == w) || *n == cap) return;
    memmove(dims + i + 1, dims + i, (size_t)(*n - i) * sizeof *dims);
    dims[i] = w;
    (*n)++;
}

int32_t imgd_unet_attn_widths(const imgd_unet_cfg *cfg, int32_t *dims, int32_t cap) {
    int32_t n = 0;
    if (!cfg || !dims || cap < 1) return 0;
    bool any = false;
    for (int32_t l = 0; l < cfg->n_levels && l < IMGD_MAX_LEVELS; l++) {
        bool mid = l == cfg->n_levels - 1 && cfg->mid_depth > 0;
        if (cfg->attn_depth[l] <= 0 && !mid) continue;
        width_add(dims, &n, cap, cfg->widths[l]);
        any = true;
    }
    if (any && cfg->context_dim > 0) width_add(dims, &n, cap, cfg->context_dim);
    return n;
}

int32_t imgd_unet_skip_count(const imgd_unet_cfg *cfg) {
    if (!cfg || cfg->n_levels < 1) return 0;
    return 1 + cfg->n_levels * cfg->layers_per_block + (cfg->n_levels - 1);
}

void imgd_unet_skip_shape(const imgd_unet_cfg *cfg, int32_t i, int32_t *channels, int32_t *div) {
    if (!cfg || cfg->n_levels < 1 || cfg->n_levels > IMGD_MAX_LEVELS) return;
    int32_t ch = cfg->widths[0], d = 1, k = 0;
    for (int32_t l = 0; l < cfg->n_levels && k < i; l++) {
        for (int32_t j = 0; j < cfg->layers_per_block && k < i; j++, k++) ch = cfg->widths[l];
        if (l + 1 < cfg->n_levels && k < i) {
            d *= 2;
            k++;
        }
    }
    if (channels) *channels = ch;
    if (div) *div = d;
}

static int32_t gcd32(int32_t a, int32_t b) {
    while (b) {
        int32_t t = a % b;
        a         = b;
        b         = t;
    }
    return a;
}

/* Every channel count a GroupNorm sees, walking the topology as the builder does (the up
 * path's resnets normalise the concatenation of the running state and a skip). Returns the
 * count written to ch/where (at most cap). */
static int32_t norm_channels(const imgd_unet_cfg *c, int32_t *ch, const char **where, int32_t cap) {
    int32_t skip[IMGD_UNET_SKIPS_MAX], ns = 0, n = 0, cur = c->widths[0];
#define NOTE(v, w)                                                                                 \
    do {                                                                                           \
        if (n < cap) {                                                                             \
            ch[n]    = (v);                                                                        \
            where[n] = (w);                                                                        \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)
    skip[ns++] = cur;
    for (int32_t l = 0; l < c->n_levels; l++) {
        for (int32_t j = 0; j < c->layers_per_block; j++) {
            NOTE(cur, "a down-block resnet's norm1");
            cur = c->widths[l];
            NOTE(cur, "a down-block resnet's norm2 / transformer norm");
            if (ns < IMGD_UNET_SKIPS_MAX) skip[ns++] = cur;
        }
        if (l + 1 < c->n_levels && ns < IMGD_UNET_SKIPS_MAX) skip[ns++] = cur;
    }
    for (int32_t l = c->n_levels - 1; l >= 0; l--) {
        for (int32_t j = 0; j <= c->layers_per_block && ns > 0; j++) {
            NOTE(cur + skip[--ns], "an up-block resnet's norm1 (state + skip concatenated)");
            cur = c->widths[l];
            NOTE(cur, "an up-block resnet's norm2 / transformer norm");
        }
    }
#undef NOTE
    return n;
}

static imgd_status check_groups(const imgd_unet_cfg *c) {
    int32_t     ch[4 * IMGD_UNET_SKIPS_MAX];
    const char *where[4 * IMGD_UNET_SKIPS_MAX];
    int32_t     n = norm_channels(c, ch, where, (int32_t)IMGD_ARRAY_LEN(ch)), g = 0;
    for (int32_t i = 0; i < n; i++) g = gcd32(g, ch[i]);
    for (int32_t i = 0; i < n; i++) {
        if (c->groups >= 1 && ch[i] % c->groups == 0) continue;
        char list[160] = "", sug[96] = "";
        for (int32_t l = 0; l < c->n_levels; l++) {
            size_t k = strlen(list);
            (void)imgd_fmt(list + k, sizeof list - k, "%s%d", l ? "," : "", (int)c->widths[l]);
        }
        for (int32_t d = g; d >= 1; d--) {
            size_t k = strlen(sug);
            if (g % d == 0 && k < 80) {
                (void)imgd_fmt(sug + k, sizeof sug - k, "%s%d", k ? ", " : "", (int)d);
            }
        }
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "unet: GroupNorm groups = %d does not divide the %d channels of %s "
                         "(block widths %s); set the groups override to a divisor of every "
                         "normalised width: one of %s (real SD models use 32; the conformance "
                         "kit's narrow models 4)",
                         (int)c->groups, (int)ch[i], where[i], list, sug);
    }
    return IMGD_OK;
}

static imgd_status check_heads(const imgd_unet_cfg *c) {
    for (int32_t l = 0; l < c->n_levels; l++) {
        bool used = c->attn_depth[l] > 0 || (l == c->n_levels - 1 && c->mid_depth > 0);
        if (!used || imgd_unet_heads(c, l) > 0) continue;
        if (c->head_dim > 0) {
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "unet: head_dim = %d does not divide the %d channels of level %d; "
                             "set head_dim to a divisor of every attention width (SD 2.x: 64) "
                             "or set it to 0 and give heads per level",
                             (int)c->head_dim, (int)c->widths[l], (int)l);
        }
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "unet: heads[%d] = %d does not divide the %d channels of level %d; set "
                         "heads[%d] to a divisor of %d (SD 1.x: 8) or set head_dim (SD 2.x: 64)",
                         (int)l, (int)c->heads[l], (int)c->widths[l], (int)l, (int)l,
                         (int)c->widths[l]);
    }
    return IMGD_OK;
}

imgd_status imgd_unet_cfg_check(const imgd_unet_cfg *c) {
    if (!c) return imgd_fail(IMGD_E_INVALID_ARG, "unet: cfg is NULL");
    if (c->n_levels < 1 || c->n_levels > IMGD_MAX_LEVELS) {
        return imgd_fail(IMGD_E_INVALID_ARG, "unet: n_levels = %d (expected 1..%d)",
                         (int)c->n_levels, IMGD_MAX_LEVELS);
    }
    if (c->layers_per_block < 1 || imgd_unet_skip_count(c) > IMGD_UNET_SKIPS_MAX) {
        return imgd_fail(IMGD_E_INVALID_ARG, "unet: layers_per_block = %d (expected 1..%d)",
                         (int)c->layers_per_block,
                         (IMGD_UNET_SKIPS_MAX - c->n_levels) / c->n_levels);
    }
    if (c->in_channels < 1 || c->out_channels < 0 || c->time_embed_dim < 1) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "unet: in_channels %d, out_channels %d, time_embed_dim %d must be "
                         "positive",
                         (int)c->in_channels, (int)c->out_channels, (int)c->time_embed_dim);
    }
    bool any_attn = c->mid_depth > 0;
    for (int32_t l = 0; l < c->n_levels; l++) {
        if (c->widths[l] < 1 || c->widths[l] > (1 << 20)) {
            return imgd_fail(IMGD_E_INVALID_ARG, "unet: widths[%d] = %d", (int)l,
                             (int)c->widths[l]);
        }
        if (c->attn_depth[l] < 0 || c->attn_depth[l] > 1024) {
            return imgd_fail(IMGD_E_INVALID_ARG, "unet: attn_depth[%d] = %d", (int)l,
                             (int)c->attn_depth[l]);
        }
        any_attn = any_attn || c->attn_depth[l] > 0;
    }
    if (c->widths[0] % 2 != 0) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "unet: widths[0] = %d must be even (its timestep embedding has that many "
                         "dims: half cos, half sin)",
                         (int)c->widths[0]);
    }
    if (c->mid_depth > 1024) {
        return imgd_fail(IMGD_E_INVALID_ARG, "unet: mid_depth = %d", (int)c->mid_depth);
    }
    if (any_attn && c->context_dim < 1) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "unet: context_dim = %d but the UNet has attention blocks",
                         (int)c->context_dim);
    }
    if (c->adm_in_channels < 0) {
        return imgd_fail(IMGD_E_INVALID_ARG, "unet: adm_in_channels = %d", (int)c->adm_in_channels);
    }
    if (!(c->norm_eps > 0.0f) || !(c->attn_norm_eps > 0.0f) || !(c->ln_eps > 0.0f)) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "unet: norm_eps, attn_norm_eps and ln_eps must be positive");
    }
    if (c->head_dim < 0) {
        return imgd_fail(IMGD_E_INVALID_ARG, "unet: head_dim = %d (0 = use heads[])",
                         (int)c->head_dim);
    }
    imgd_status st = check_groups(c);
    return st == IMGD_OK ? check_heads(c) : st;
}

/* ---- weights ------------------------------------------------------------------------------ */

typedef struct unet_b {
    imgd_graph                 *g;
    imgd_wbind                 *b;           /* NULL: placeholder weights */
    const void                 *placeholder; /* data of every weight when b is NULL (planning) */
    const char                 *prefix;
    const imgd_unet_cfg        *cfg;
    imgd_tensor                *temb_act; /* silu(time embedding), read by every resnet */
    imgd_tensor                *ctx;
    const imgd_hypernet *const *hn; /* imgd_unet_extra's hypernetworks; n_hn of them */
    const float                *hn_w;
    int32_t                     n_hn;
} unet_b;

/* Never read: placeholder graphs are planned, not computed. */
static const float k_placeholder[16];

static imgd_tensor *wget_v(unet_b *u, bool optional, int32_t n, const int64_t *shape,
                           const char *fmt, va_list ap) IMGD_PRINTF(5, 0);

static imgd_tensor *wget_v(unet_b *u, bool optional, int32_t n, const int64_t *shape,
                           const char *fmt, va_list ap) {
    if (imgd_graph_status(u->g) != IMGD_OK) return NULL;
    char rel[NAME_CAP], name[NAME_CAP];
    int  k = vsnprintf(rel, sizeof rel, fmt, ap);
    if (k < 0 || (size_t)k >= sizeof rel || !imgd_fmt(name, sizeof name, "%s.%s", u->prefix, rel)) {
        (void)imgd_graph_fail(u->g, IMGD_E_INVALID_ARG, "unet: parameter name too long: %s.%s",
                              u->prefix, rel);
        return NULL;
    }
    if (!u->b) {
        return optional ? NULL
                        : imgd_graph_weight(u->g, name, IMGD_DTYPE_F32, n, shape, u->placeholder);
    }
    if (optional && !imgd_wbind_has(u->b, name)) return NULL;
    return imgd_wbind_get(u->b, u->g, name, n, shape);
}

/* Required parameter of exactly shape[0..n) (a -1 entry matches any size). */
static imgd_tensor *W(unet_b *u, int32_t n, const int64_t *shape, const char *fmt, ...)
    IMGD_PRINTF(4, 5);

static imgd_tensor *W(unet_b *u, int32_t n, const int64_t *shape, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    imgd_tensor *t = wget_v(u, false, n, shape, fmt, ap);
    va_end(ap);
    return t;
}

/* Optional parameter (biases some exports add): NULL when absent. */
static imgd_tensor *W_opt(unet_b *u, int32_t n, const int64_t *shape, const char *fmt, ...)
    IMGD_PRINTF(4, 5);

static imgd_tensor *W_opt(unet_b *u, int32_t n, const int64_t *shape, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    imgd_tensor *t = wget_v(u, true, n, shape, fmt, ap);
    va_end(ap);
    return t;
}

#define SHAPE(...)                                                                                 \
    (int32_t)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]) {                   \
        __VA_ARGS__                                                                                \
    }

/* ---- layers ------------------------------------------------------------------------------- */

/* y plus what a run-time adapter (unmerged LoRA) adds for module pfx (wbind.h). */
static imgd_tensor *adapt(unet_b *u, imgd_wbind_site site, int32_t stride, int32_t pad,
                          imgd_tensor *x, imgd_tensor *y, const char *pfx) {
    if (!u->b) return y;
    return imgd_wbind_adapt(u->b, u->g, site, stride, pad, x, y, "%s.%s.weight", u->prefix, pfx);
}

static imgd_tensor *conv(unet_b *u, imgd_tensor *x, const char *pfx, int64_t cout, int64_t k,
                         int32_t stride) {
    if (!x) return NULL;
    int64_t      cin = x->shape[1];
    imgd_tensor *w   = W(u, SHAPE(cout, cin, k, k), "%s.weight", pfx);
    imgd_tensor *b   = W(u, SHAPE(cout), "%s.bias", pfx);
    imgd_tensor *y   = imgd_op_conv2d(u->g, x, w, b, stride, (int32_t)(k / 2));
    return adapt(u, IMGD_SITE_CONV, stride, (int32_t)(k / 2), x, y, pfx);
}

static imgd_tensor *norm(unet_b *u, imgd_tensor *x, const char *pfx, float eps, bool silu) {
    if (!x) return NULL;
    int64_t      c  = x->shape[1];
    imgd_tensor *gw = W(u, SHAPE(c), "%s.weight", pfx);
    imgd_tensor *gb = W(u, SHAPE(c), "%s.bias", pfx);
    return imgd_op_group_norm(u->g, x, u->cfg->groups, eps, gw, gb, silu);
}

static imgd_tensor *linear(unet_b *u, imgd_tensor *x, const char *pfx, int64_t out, bool bias) {
    if (!x) return NULL;
    int64_t      in = x->shape[x->n_dims - 1];
    imgd_tensor *w  = W(u, SHAPE(out, in), "%s.weight", pfx);
    imgd_tensor *b = bias ? W(u, SHAPE(out), "%s.bias", pfx) : W_opt(u, SHAPE(out), "%s.bias", pfx);
    return adapt(u, IMGD_SITE_LINEAR, 0, 0, x, imgd_op_linear(u->g, x, w, b), pfx);
}

/* ResnetBlock2D (resnet_time_scale_shift "default", output_scale_factor 1). */
static imgd_tensor *resnet(unet_b *u, imgd_tensor *x, int64_t cout, const char *fmt, ...)
    IMGD_PRINTF(4, 5);

static imgd_tensor *resnet(unet_b *u, imgd_tensor *x, int64_t cout, const char *fmt, ...) {
    if (!x) return NULL;
    char    p[NAME_CAP], s[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(p, sizeof p, fmt, ap);
    va_end(ap);
    imgd_graph *g   = u->g;
    int64_t     cin = x->shape[1];
    /* the time embedding's projection first, so the ADD runs right after conv1 (a backend may
     * do it in the convolution's epilogue) */
    (void)imgd_fmt(s, sizeof s, "%s.time_emb_proj", p);
    imgd_tensor *tp = linear(u, u->temb_act, s, cout, true);
    if (tp) tp = imgd_op_reshape(g, tp, 4, (int64_t[]){tp->shape[0], cout, 1, 1});
    (void)imgd_fmt(s, sizeof s, "%s.norm1", p);
    imgd_tensor *h = norm(u, x, s, u->cfg->norm_eps, true);
    (void)imgd_fmt(s, sizeof s, "%s.conv1", p);
    h = conv(u, h, s, cout, 3, 1);
    h = imgd_op_add(g, h, tp);
    (void)imgd_fmt(s, sizeof s, "%s.norm2", p);
    h = norm(u, h, s, u->cfg->norm_eps, true);
    (void)imgd_fmt(s, sizeof s, "%s.conv2", p);
    h               = conv(u, h, s, cout, 3, 1);
    imgd_tensor *sc = x;
    if (cin != cout) {
        (void)imgd_fmt(s, sizeof s, "%s.conv_shortcut", p);
        sc = conv(u, x, s, cout, 1, 1);
    }
    return imgd_op_add(g, sc, h);
}

/* diffusers Attention (no q/k/v bias unless the file has one): x [B, Lq, C], c [B, Lk, Dc]. */
static imgd_tensor *attention(unet_b *u, imgd_tensor *x, imgd_tensor *c, int64_t heads,
                              const char *p) {
    if (!x || !c) return NULL;
    imgd_graph  *g = u->g;
    int64_t      B = x->shape[0], Lq = x->shape[1], C = x->shape[2], Lk = c->shape[1];
    char         s[NAME_CAP];
    imgd_tensor *ck = c, *cv = c; /* A1111's apply_hypernetworks: keys, values chained apart */
    for (int32_t i = 0; i < u->n_hn; i++) {
        ck = imgd_hypernet_apply(g, u->hn[i], 0, ck, u->hn_w[i]);
        cv = imgd_hypernet_apply(g, u->hn[i], 1, cv, u->hn_w[i]);
    }
    (void)imgd_fmt(s, sizeof s, "%s.to_q", p);
    imgd_tensor *q = linear(u, x, s, C, false);
    (void)imgd_fmt(s, sizeof s, "%s.to_k", p);
    imgd_tensor *k = linear(u, ck, s, C, false);
    (void)imgd_fmt(s, sizeof s, "%s.to_v", p);
    imgd_tensor *v = linear(u, cv, s, C, false);
    int64_t      d = C / heads;
    q              = imgd_op_reshape(g, q, 4, (int64_t[]){B, Lq, heads, d});
    k              = imgd_op_reshape(g, k, 4, (int64_t[]){B, Lk, heads, d});
    v              = imgd_op_reshape(g, v, 4, (int64_t[]){B, Lk, heads, d});
    imgd_tensor *o = imgd_op_attention(g, q, k, v, NULL, 0.0f);
    o              = imgd_op_reshape(g, o, 3, (int64_t[]){B, Lq, C});
    (void)imgd_fmt(s, sizeof s, "%s.to_out.0", p);
    return linear(u, o, s, C, true);
}

/* BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-norm
 * with a residual. h [B, L, C] contiguous. */
static imgd_tensor *tblock(unet_b *u, imgd_tensor *h, int64_t heads, const char *p) {
    if (!h) return NULL;
    imgd_graph  *g = u->g;
    int64_t      C = h->shape[2];
    float        e = u->cfg->ln_eps;
    char         s[NAME_CAP], s2[NAME_CAP];
    imgd_tensor *n;
    (void)imgd_fmt(s, sizeof s, "%s.norm1", p);
    n = imgd_op_layer_norm(g, h, e, W(u, SHAPE(C), "%s.weight", s), W(u, SHAPE(C), "%s.bias", s));
    (void)imgd_fmt(s, sizeof s, "%s.attn1", p);
    h = imgd_op_add(g, h, attention(u, n, n, heads, s));
    if (u->cfg->context_dim > 0) {
        (void)imgd_fmt(s, sizeof s, "%s.norm2", p);
        n = imgd_op_layer_norm(g, h, e, W(u, SHAPE(C), "%s.weight", s),
                               W(u, SHAPE(C), "%s.bias", s));
        (void)imgd_fmt(s, sizeof s, "%s.attn2", p);
        h = imgd_op_add(g, h, attention(u, n, u->ctx, heads, s));
    }
    (void)imgd_fmt(s, sizeof s, "%s.norm3", p);
    n = imgd_op_layer_norm(g, h, e, W(u, SHAPE(C), "%s.weight", s), W(u, SHAPE(C), "%s.bias", s));
    (void)imgd_fmt(s, sizeof s, "%s.ff.net.0.proj", p);
    (void)imgd_fmt(s2, sizeof s2, "%s.ff.net.2", p);
    /* GEGLU projection rows: 2 * 4C in every SD model; read from the file when bound */
    imgd_tensor *w0 = W(u, SHAPE(u->b ? -1 : 8 * C, C), "%s.weight", s);
    if (!w0) return NULL;
    int64_t two_f = w0->shape[0];
    if (two_f % 2 != 0) {
        (void)imgd_graph_fail(g, IMGD_E_FORMAT,
                              "unet: %s.%s.weight has %lld rows; a GEGLU projection has an even "
                              "number (value and gate halves)",
                              u->prefix, s, (long long)two_f);
        return NULL;
    }
    imgd_tensor *f = imgd_op_linear(g, n, w0, W(u, SHAPE(two_f), "%s.bias", s));
    f              = adapt(u, IMGD_SITE_LINEAR, 0, 0, n, f, s);
    f              = imgd_op_geglu(g, f);
    f              = linear(u, f, s2, C, true);
    return imgd_op_add(g, h, f);
}

/* A 1x1 projection weight as [out, in]: Linear as stored, or a conv [out, in, 1, 1]. */
static imgd_tensor *proj_weight(unet_b *u, int64_t out, int64_t in, const char *p) {
    if (u->cfg->linear_proj) return W(u, SHAPE(out, in), "%s.weight", p);
    imgd_tensor *w = W(u, SHAPE(out, in, 1, 1), "%s.weight", p);
    return imgd_op_reshape(u->g, w, 2, (int64_t[]){out, in});
}

/* Transformer2DModel (continuous input): GroupNorm, proj_in, depth blocks, proj_out, plus
 * the input. proj_in reads the NCHW norm output through a [B, HW, C] view (the GEMM takes
 * the transposed operand) and proj_out computes W . h^T straight into NCHW, so the block
 * needs no layout copies. */
static imgd_tensor *transformer(unet_b *u, imgd_tensor *x, int32_t depth, int64_t heads,
                                const char *p) {
    if (!x) return NULL;
    imgd_graph *g = u->g;
    int64_t     B = x->shape[0], C = x->shape[1], H = x->shape[2], Wd = x->shape[3], L = H * Wd;
    char        s[NAME_CAP];
    (void)imgd_fmt(s, sizeof s, "%s.norm", p);
    imgd_tensor *h = norm(u, x, s, u->cfg->attn_norm_eps, false);
    h              = imgd_op_reshape(g, h, 3, (int64_t[]){B, C, L});
    h              = imgd_op_transpose(g, h, 1, 2);
    (void)imgd_fmt(s, sizeof s, "%s.proj_in", p);
    imgd_tensor *hin = h;
    h                = imgd_op_linear(g, h, proj_weight(u, C, C, s), W(u, SHAPE(C), "%s.bias", s));
    h                = adapt(u, IMGD_SITE_LINEAR, 0, 0, hin, h, s);
    for (int32_t d = 0; d < depth; d++) {
        (void)imgd_fmt(s, sizeof s, "%s.transformer_blocks.%d", p, (int)d);
        h = tblock(u, h, heads, s);
    }
    (void)imgd_fmt(s, sizeof s, "%s.proj_out", p);
    imgd_tensor *y = imgd_op_matmul(g, proj_weight(u, C, C, s), h, false, true, NULL);
    y              = adapt(u, IMGD_SITE_WT, 0, 0, h, y, s);
    imgd_tensor *b = W(u, SHAPE(C), "%s.bias", s);
    /* the input before the bias: a backend may add it in the GEMM (its C operand) */
    y = imgd_op_add(g, y, imgd_op_reshape(g, x, 3, (int64_t[]){B, C, L}));
    y = imgd_op_add(g, y, imgd_op_reshape(g, b, 2, (int64_t[]){C, 1}));
    return imgd_op_reshape(g, y, 4, (int64_t[]){B, C, H, Wd});
}

/* ---- embeddings --------------------------------------------------------------------------- */

/* TimestepEmbedding MLP: linear_1, SiLU, linear_2. */
static imgd_tensor *embed_mlp(unet_b *u, imgd_tensor *x, const char *p) {
    char s[NAME_CAP];
    (void)imgd_fmt(s, sizeof s, "%s.linear_1", p);
    imgd_tensor *h = imgd_op_silu(u->g, linear(u, x, s, u->cfg->time_embed_dim, true));
    (void)imgd_fmt(s, sizeof s, "%s.linear_2", p);
    return linear(u, h, s, u->cfg->time_embed_dim, true);
}

/* SDXL text_time added embedding. */
static imgd_tensor *add_embedding(unet_b *u, const imgd_unet_extra *ex, int64_t B,
                                  imgd_unet_taps *taps) {
    imgd_graph *g   = u->g;
    int64_t     adm = u->cfg->adm_in_channels;
    if (!ex || !ex->text_embeds || !ex->time_ids) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                              "unet: this UNet has added conditioning (add_embedding over %lld "
                              "inputs, SDXL): pass extra->text_embeds [B, P] and "
                              "extra->time_ids [B, K]",
                              (long long)adm);
        return NULL;
    }
    imgd_tensor *te = ex->text_embeds, *ids = ex->time_ids;
    int64_t      P = te->n_dims == 2 ? te->shape[1] : 0, K = ids->n_dims == 2 ? ids->shape[1] : 0;
    if (te->n_dims != 2 || ids->n_dims != 2 || te->shape[0] != B || ids->shape[0] != B || K < 1 ||
        P >= adm || (adm - P) % K != 0 || (adm - P) / K < 2) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                              "unet: text_embeds [B=%lld, P] and time_ids [B, K] must give P + K "
                              "* dim = %lld add_embedding inputs (got %d-D / %d-D tensors, P = "
                              "%lld, K = %lld)",
                              (long long)B, (long long)adm, (int)te->n_dims, (int)ids->n_dims,
                              (long long)P, (long long)K);
        return NULL;
    }
    int64_t      dim    = (adm - P) / K;
    imgd_tensor *flat   = imgd_op_reshape(g, ids, 1, (int64_t[]){B * K});
    imgd_tensor *atp    = imgd_op_timestep_embedding(g, flat, (int32_t)dim, true, 0.0f, 10000.0f);
    imgd_tensor *cat[2] = {te, imgd_op_reshape(g, atp, 2, (int64_t[]){B, K * dim})};
    imgd_tensor *ae     = embed_mlp(u, imgd_op_concat(g, 2, cat, 1), "add_embedding");
    if (taps) {
        taps->add_time_proj = atp;
        taps->add_embedding = ae;
    }
    return ae;
}

/* ---- network ------------------------------------------------------------------------------ */

static imgd_status fail_input(imgd_graph *g, const char *fmt, ...) IMGD_PRINTF(2, 3);

static imgd_status fail_input(imgd_graph *g, const char *fmt, ...) {
    char    msg[512];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "unet: %s", msg);
}

static const char *channel_hint(int32_t want) {
    if (want == 9) return " (an inpainting UNet: concatenate latents, mask, masked-image latents)";
    if (want == 8) return " (an instruct-pix2pix UNet: concatenate latents and image latents)";
    return "";
}

static bool is_shape4(const imgd_tensor *t, int64_t b, int64_t c, int64_t h, int64_t w) {
    return t && t->n_dims == 4 && t->shape[0] == b && t->shape[1] == c && t->shape[2] == h &&
           t->shape[3] == w;
}

/* ControlNet residuals must have exactly the shapes of the states they are added to. */
static imgd_status check_residuals(imgd_graph *g, const imgd_unet_cfg *c, const imgd_tensor *x,
                                   const imgd_unet_extra *ex) {
    int32_t ns = imgd_unet_skip_count(c);
    int64_t B = x->shape[0], H = x->shape[2], Wd = x->shape[3];
    if (ex->n_down_res != 0 && ex->n_down_res != ns) {
        return fail_input(g, "%d ControlNet down residuals given, the UNet has %d skips",
                          (int)ex->n_down_res, (int)ns);
    }
    for (int32_t i = 0; i < ex->n_down_res; i++) {
        int32_t ch = 0, div = 1;
        imgd_unet_skip_shape(c, i, &ch, &div);
        int64_t h = imgd_unet_div_size(H, div), w = imgd_unet_div_size(Wd, div);
        if (!is_shape4(ex->down_res[i], B, ch, h, w)) {
            return fail_input(g, "ControlNet down residual %d must be [%lld, %d, %lld, %lld]",
                              (int)i, (long long)B, (int)ch, (long long)h, (long long)w);
        }
    }
    int64_t div = (int64_t)1 << (c->n_levels - 1);
    int64_t mh = imgd_unet_div_size(H, div), mw = imgd_unet_div_size(Wd, div);
    if (ex->mid_res && !is_shape4(ex->mid_res, B, c->widths[c->n_levels - 1], mh, mw)) {
        return fail_input(g, "ControlNet mid residual must be [%lld, %d, %lld, %lld]", (long long)B,
                          (int)c->widths[c->n_levels - 1], (long long)mh, (long long)mw);
    }
    if (ex->conv_in_add && !is_shape4(ex->conv_in_add, B, c->widths[0], H, Wd)) {
        return fail_input(g, "conv_in_add must be [%lld, %d, %lld, %lld]", (long long)B,
                          (int)c->widths[0], (long long)H, (long long)Wd);
    }
    return IMGD_OK;
}

static imgd_status check_inputs(imgd_graph *g, const imgd_unet_cfg *c, const imgd_tensor *x,
                                const imgd_tensor *t, const imgd_tensor *ctx,
                                const imgd_unet_extra *ex) {
    if (x->n_dims != 4) {
        return fail_input(g, "sample must be [B, C, H, W], got %d dims", (int)x->n_dims);
    }
    int64_t B = x->shape[0];
    if (x->shape[1] != c->in_channels) {
        return fail_input(g, "sample has %lld channels but the model takes %d%s",
                          (long long)x->shape[1], (int)c->in_channels,
                          channel_hint(c->in_channels));
    }
    if (x->shape[2] < 1 || x->shape[3] < 1) {
        return fail_input(g, "latent size %lldx%lld is empty", (long long)x->shape[3],
                          (long long)x->shape[2]);
    }
    if (t->n_dims != 1 || (t->shape[0] != B && t->shape[0] != 1)) {
        return fail_input(g, "timestep must be [B] or [1] (B = %lld)", (long long)B);
    }
    bool attn = c->mid_depth > 0;
    for (int32_t l = 0; l < c->n_levels; l++) attn = attn || c->attn_depth[l] > 0;
    if (attn &&
        (!ctx || ctx->n_dims != 3 || ctx->shape[0] != B || ctx->shape[2] != c->context_dim)) {
        return fail_input(g,
                          "encoder hidden states must be [B = %lld, L, %d] (the model's "
                          "cross-attention width)%s",
                          (long long)B, (int)c->context_dim,
                          ctx && ctx->n_dims == 3 ? "" : ": missing or not 3-D");
    }
    if (ex && (ex->n_hypernets < 0 || ex->n_hypernets > IMGD_UNET_HYPERNETS_MAX ||
               (ex->n_hypernets > 0 && (!ex->hypernets || !ex->hypernet_weights)))) {
        return fail_input(g, "n_hypernets = %d: expected 0..%d with hypernets and weights set",
                          (int)ex->n_hypernets, IMGD_UNET_HYPERNETS_MAX);
    }
    for (int32_t i = 0; ex && i < ex->n_hypernets; i++) {
        if (!ex->hypernets[i] || !isfinite(ex->hypernet_weights[i]))
            return fail_input(g, "hypernets[%d]: NULL, or a weight that is not finite", (int)i);
    }
    return ex ? check_residuals(g, c, x, ex) : IMGD_OK;
}

/* Common start of both builds: checks, time embedding (+ added conditioning), conv_in. */
static imgd_tensor *stem(unet_b *u, imgd_tensor *x, imgd_tensor *t, const imgd_unet_extra *ex,
                         imgd_unet_taps *taps) {
    imgd_graph          *g  = u->g;
    const imgd_unet_cfg *c  = u->cfg;
    imgd_tensor         *tp = imgd_op_timestep_embedding(g, t, c->widths[0], true, 0.0f, 10000.0f);
    imgd_tensor         *te = embed_mlp(u, tp, "time_embedding");
    if (taps) {
        taps->time_proj      = tp;
        taps->time_embedding = te;
    }
    imgd_tensor *emb = te;
    if (c->adm_in_channels > 0) emb = imgd_op_add(g, emb, add_embedding(u, ex, x->shape[0], taps));
    u->temb_act    = imgd_op_silu(g, emb);
    imgd_tensor *h = conv(u, x, "conv_in", c->widths[0], 3, 1);
    if (ex && ex->conv_in_add) h = imgd_op_add(g, h, ex->conv_in_add);
    if (taps) taps->conv_in = h;
    return h;
}

/* Down blocks and mid block. skips[0..count) receive the skip states (with ControlNet
 * residuals added); returns the mid-block output. */
static imgd_tensor *encoder(unet_b *u, imgd_tensor *h, const imgd_unet_extra *ex,
                            imgd_unet_taps *taps, imgd_tensor **skips) {
    imgd_graph          *g  = u->g;
    const imgd_unet_cfg *c  = u->cfg;
    int32_t              ns = 0;
    skips[ns++]             = h;
    for (int32_t l = 0; l < c->n_levels; l++) {
        for (int32_t j = 0; j < c->layers_per_block; j++) {
            h = resnet(u, h, c->widths[l], "down_blocks.%d.resnets.%d", (int)l, (int)j);
            if (c->attn_depth[l] > 0) {
                char p[NAME_CAP];
                (void)imgd_fmt(p, sizeof p, "down_blocks.%d.attentions.%d", (int)l, (int)j);
                h = transformer(u, h, c->attn_depth[l], imgd_unet_heads(c, l), p);
            }
            skips[ns++] = h;
        }
        if (l + 1 < c->n_levels) {
            char p[NAME_CAP];
            (void)imgd_fmt(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", (int)l);
            h           = conv(u, h, p, c->widths[l], 3, 2);
            skips[ns++] = h;
        }
        if (taps) taps->down[l] = h;
    }
    for (int32_t i = 0; ex && i < ex->n_down_res; i++) {
        skips[i] = imgd_op_add(g, skips[i], ex->down_res[i]);
    }
    int32_t top = c->n_levels - 1;
    h           = resnet(u, h, c->widths[top], "mid_block.resnets.0");
    if (c->mid_depth > 0) {
        h = transformer(u, h, c->mid_depth, imgd_unet_heads(c, top), "mid_block.attentions.0");
    }
    h = resnet(u, h, c->widths[top], "mid_block.resnets.1");
    if (ex && ex->mid_res) h = imgd_op_add(g, h, ex->mid_res);
    if (taps) taps->mid = h;
    return h;
}

static imgd_tensor *decoder(unet_b *u, imgd_tensor *h, imgd_unet_taps *taps, imgd_tensor **skips,
                            int32_t ns) {
    imgd_graph          *g = u->g;
    const imgd_unet_cfg *c = u->cfg;
    for (int32_t i = 0; i < c->n_levels; i++) {
        int32_t l = c->n_levels - 1 - i;
        for (int32_t j = 0; j <= c->layers_per_block && ns > 0; j++) {
            imgd_tensor *cat[2] = {h, skips[--ns]};
            h                   = imgd_op_concat(g, 2, cat, 1);
            h = resnet(u, h, c->widths[l], "up_blocks.%d.resnets.%d", (int)i, (int)j);
            if (c->attn_depth[l] > 0) {
                char p[NAME_CAP];
                (void)imgd_fmt(p, sizeof p, "up_blocks.%d.attentions.%d", (int)i, (int)j);
                h = transformer(u, h, c->attn_depth[l], imgd_unet_heads(c, l), p);
            }
        }
        if (i + 1 < c->n_levels) {
            char p[NAME_CAP];
            (void)imgd_fmt(p, sizeof p, "up_blocks.%d.upsamplers.0.conv", (int)i);
            imgd_tensor *up = imgd_op_upsample_nearest2x(g, h);
            /* an odd skip (a side that is not a multiple of the UNet's divisor): nearest
             * interpolation to its size equals the 2x upsampling cut to it */
            const imgd_tensor *sk = ns > 0 ? skips[ns - 1] : NULL;
            if (up && sk && up->shape[2] != sk->shape[2])
                up = imgd_op_narrow(g, up, 2, 0, sk->shape[2]);
            if (up && sk && up->shape[3] != sk->shape[3])
                up = imgd_op_narrow(g, up, 3, 0, sk->shape[3]);
            h = conv(u, up, p, c->widths[l], 3, 1);
        }
        if (taps) taps->up[i] = h;
    }
    bool         split = taps != NULL; /* the tap is the norm before its SiLU */
    imgd_tensor *n     = norm(u, h, "conv_norm_out", c->norm_eps, !split);
    if (taps) taps->conv_norm_out = n;
    if (split) n = imgd_op_silu(g, n);
    imgd_tensor *y = conv(u, n, "conv_out", c->out_channels, 3, 1);
    if (taps) taps->conv_out = y;
    return y;
}

static void mark_taps(imgd_graph *g, imgd_unet_taps *taps) {
    if (!taps) return;
    imgd_tensor *all[] = {taps->time_proj,     taps->time_embedding, taps->add_time_proj,
                          taps->add_embedding, taps->conv_in,        taps->mid,
                          taps->conv_norm_out, taps->conv_out};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(all); i++) imgd_graph_output(g, all[i]);
    for (int32_t l = 0; l < IMGD_MAX_LEVELS; l++) {
        imgd_graph_output(g, taps->down[l]);
        imgd_graph_output(g, taps->up[l]);
    }
}

/* Shared entry checks. Returns IMGD_OK with u initialised. */
static imgd_status begin(unet_b *u, imgd_graph *g, imgd_wbind *b, const void *placeholder,
                         const char *prefix, const imgd_unet_cfg *cfg, imgd_tensor *x,
                         imgd_tensor *t, imgd_tensor *ctx, const imgd_unet_extra *ex,
                         imgd_unet_taps *taps) {
    if (!g) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_unet_build: graph is NULL");
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    if (!cfg || !x || !t || !prefix || !*prefix || (!b && !placeholder)) {
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "imgd_unet_build: weights, cfg, sample, timestep and prefix are "
                               "required");
    }
    imgd_status st = imgd_unet_cfg_check(cfg);
    if (st != IMGD_OK) return imgd_graph_fail(g, st, "%s", imgd_last_error());
    st = check_inputs(g, cfg, x, t, ctx, ex);
    if (st != IMGD_OK) return st;
    if (taps) memset(taps, 0, sizeof *taps);
    *u = (unet_b){
        .g = g, .b = b, .placeholder = placeholder, .prefix = prefix, .cfg = cfg, .ctx = ctx};
    if (ex) {
        u->hn   = ex->hypernets;
        u->hn_w = ex->hypernet_weights;
        u->n_hn = ex->n_hypernets;
    }
    return IMGD_OK;
}

/* The whole network; weights from b, or all pointing at placeholder when b is NULL. */
static imgd_status build(imgd_graph *g, imgd_wbind *b, const void *placeholder, const char *prefix,
                         const imgd_unet_cfg *cfg, imgd_tensor *x, imgd_tensor *t, imgd_tensor *ctx,
                         const imgd_unet_extra *extra, imgd_unet_taps *taps, imgd_tensor **out) {
    unet_b      u;
    imgd_status st = begin(&u, g, b, placeholder, prefix, cfg, x, t, ctx, extra, taps);
    if (st != IMGD_OK) return st;
    if (!out) return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_unet_build: out is NULL");
    if (cfg->out_channels < 1) {
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "unet: out_channels = %d: the model has no output convolution "
                               "(a ControlNet: build it with imgd_unet_build_encoder)",
                               (int)cfg->out_channels);
    }
    imgd_tensor *skips[IMGD_UNET_SKIPS_MAX];
    imgd_tensor *h = stem(&u, x, t, extra, taps);
    h              = encoder(&u, h, extra, taps, skips);
    h              = decoder(&u, h, taps, skips, imgd_unet_skip_count(cfg));
    st             = imgd_graph_status(g);
    if (st != IMGD_OK) return st;
    if (!h) return imgd_graph_fail(g, IMGD_E_INTERNAL, "unet: build produced no output");
    mark_taps(g, taps);
    *out = h;
    return IMGD_OK;
}

imgd_status imgd_unet_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                            const imgd_unet_cfg *cfg, imgd_tensor *x, imgd_tensor *t,
                            imgd_tensor *ctx, const imgd_unet_extra *extra, imgd_unet_taps *taps,
                            imgd_tensor **out) {
    if (g && imgd_graph_status(g) == IMGD_OK && !b) {
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_unet_build: weights are NULL");
    }
    return build(g, b, NULL, prefix, cfg, x, t, ctx, extra, taps, out);
}

imgd_status imgd_unet_build_encoder(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                    const imgd_unet_cfg *cfg, imgd_tensor *x, imgd_tensor *t,
                                    imgd_tensor *ctx, const imgd_unet_extra *extra,
                                    imgd_unet_taps *taps, imgd_tensor **skips, imgd_tensor **mid) {
    unet_b      u;
    imgd_status st = begin(&u, g, b, NULL, prefix, cfg, x, t, ctx, extra, taps);
    if (st != IMGD_OK) return st;
    if (!skips || !mid) {
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_unet_build_encoder: NULL output");
    }
    imgd_tensor *s[IMGD_UNET_SKIPS_MAX];
    imgd_tensor *h = encoder(&u, stem(&u, x, t, extra, taps), extra, taps, s);
    st             = imgd_graph_status(g);
    if (st != IMGD_OK) return st;
    if (!h) return imgd_graph_fail(g, IMGD_E_INTERNAL, "unet: build produced no output");
    mark_taps(g, taps);
    for (int32_t i = 0; i < imgd_unet_skip_count(cfg); i++) skips[i] = s[i];
    *mid = h;
    return IMGD_OK;
}

/* ---- planning without weights --------------------------------------------------------------- */

imgd_status imgd_unet_plan_info(const imgd_unet_cfg *cfg, int64_t batch, int64_t height,
                                int64_t width, int64_t ctx_len, imgd_backend *be,
                                imgd_plan_info *info) {
    if (!cfg || !be || !info || batch < 1 || height < 1 || width < 1 || ctx_len < 1) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_unet_plan_info: bad arguments");
    }
    imgd_graph *g  = NULL;
    imgd_status st = imgd_graph_new(NULL, &g);
    if (st != IMGD_OK) return st;
    int64_t         B   = batch;
    imgd_tensor    *x   = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4,
                                           (int64_t[]){B, cfg->in_channels, height, width});
    imgd_tensor    *t   = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){B});
    imgd_tensor    *ctx = imgd_graph_input(g, "ctx", IMGD_DTYPE_F32, 3,
                                           (int64_t[]){B, ctx_len, IMGD_MAX(cfg->context_dim, 1)});
    imgd_unet_extra ex = {0}, *exp = NULL;
    if (cfg->adm_in_channels > 0) { /* SDXL-like shapes: 6 ids of 256 dims, the rest pooled */
        int64_t dim = cfg->adm_in_channels > 6 * 256 ? 256 : IMGD_MAX(cfg->adm_in_channels / 12, 2);
        int64_t P   = cfg->adm_in_channels - 6 * dim;
        ex.text_embeds = imgd_graph_input(g, "text_embeds", IMGD_DTYPE_F32, 2, (int64_t[]){B, P});
        ex.time_ids    = imgd_graph_input(g, "time_ids", IMGD_DTYPE_F32, 2, (int64_t[]){B, 6});
        exp            = &ex;
    }
    imgd_tensor *out = NULL;
    st               = imgd_graph_status(g);
    if (st == IMGD_OK) st = build(g, NULL, k_placeholder, "unet", cfg, x, t, ctx, exp, NULL, &out);
    if (st == IMGD_OK) {
        imgd_graph_output(g, out);
        st = imgd_graph_plan(g, be, info);
    }
    imgd_graph_free(g);
    return st;
}
