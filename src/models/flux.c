/* FluxTransformer2DModel forward pass on the tensor engine (see flux.h). Module names and
 * order follow diffusers 0.30 (transformers/transformer_flux.py, embeddings.py
 * CombinedTimestepGuidanceTextProjEmbeddings / FluxPosEmbed, normalization.py
 * AdaLayerNormZero / AdaLayerNormZeroSingle / AdaLayerNormContinuous, attention_processor.py
 * FluxAttnProcessor2_0), so parameters bind by canonical name. */
#include "models/flux.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/text.h"
#include "tensor/ops.h"

#define NAME_CAP 256

/* ---- configuration ---------------------------------------------------------------------- */

imgd_status imgd_flux_cfg_from_detect(const imgd_model_info *mi, imgd_flux_cfg *cfg) {
    if (!mi || !cfg)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_flux_cfg_from_detect: NULL argument");
    if (!mi->has_dit || mi->dit.type != IMGD_DIT_FLUX) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "the model has no FLUX transformer (detected kind '%s', family '%s')",
                         imgd_model_kind_name(mi->kind), imgd_family_name(mi->family));
    }
    const imgd_dit_config *d = &mi->dit;
    imgd_flux_cfg          c = {0};
    c.in_channels            = d->in_channels;
    c.out_channels           = 64;
    c.hidden                 = d->hidden;
    c.head_dim               = d->head_dim;
    c.heads                  = d->heads;
    c.depth                  = d->depth;
    c.depth_single           = d->depth_single;
    c.context_dim            = d->context_dim;
    c.pooled_dim             = d->pooled_dim;
    c.mlp_hidden             = 4 * d->hidden;
    c.n_axes                 = d->n_axes;
    for (int32_t a = 0; a < d->n_axes && a < IMGD_FLUX_AXES_MAX; a++)
        c.axes_dims[a] = d->axes_dims[a];
    c.theta          = 10000.0f;
    c.eps            = 1e-6f;
    c.guidance_embed = d->guidance_embed;
    *cfg             = c;
    return IMGD_OK;
}

imgd_status imgd_flux_cfg_check(const imgd_flux_cfg *c) {
    if (!c) return imgd_fail(IMGD_E_INVALID_ARG, "flux: cfg is NULL");
    if (c->hidden < 1 || c->head_dim < 1 || c->heads < 1 || c->heads * c->head_dim != c->hidden) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flux: heads %d x head_dim %d must equal the inner width %d (FLUX.1: 24 x "
                         "128 = 3072); set heads = hidden / head_dim",
                         (int)c->heads, (int)c->head_dim, (int)c->hidden);
    }
    if (c->in_channels < 1 || c->out_channels < 1 || c->context_dim < 1 || c->pooled_dim < 1 ||
        c->mlp_hidden < 1) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flux: in_channels %d, out_channels %d, context_dim %d, pooled_dim %d, "
                         "mlp_hidden %d must all be positive",
                         (int)c->in_channels, (int)c->out_channels, (int)c->context_dim,
                         (int)c->pooled_dim, (int)c->mlp_hidden);
    }
    if (c->depth < 0 || c->depth_single < 0 || c->depth > IMGD_FLUX_BLOCKS_MAX ||
        c->depth_single > IMGD_FLUX_BLOCKS_MAX || c->depth + c->depth_single < 1) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flux: depth %d / depth_single %d (expected 0..%d each, not both 0)",
                         (int)c->depth, (int)c->depth_single, IMGD_FLUX_BLOCKS_MAX);
    }
    int32_t sum = 0;
    if (c->n_axes < 1 || c->n_axes > IMGD_FLUX_AXES_MAX) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flux: %d rope axes; set n_axes and axes_dims (axes_dims_rope of the "
                         "transformer's config.json: FLUX.1 has 3 axes 16, 56, 56 for head dim "
                         "128; they must sum to head_dim %d)",
                         (int)c->n_axes, (int)c->head_dim);
    }
    for (int32_t a = 0; a < c->n_axes; a++) {
        if (c->axes_dims[a] < 2 || c->axes_dims[a] % 2 != 0) {
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "flux: rope axis %d has %d dims; each axis needs an even number >= 2",
                             (int)a, (int)c->axes_dims[a]);
        }
        sum += c->axes_dims[a];
    }
    if (sum != c->head_dim) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "flux: rope axes sum to %d but head_dim is %d; set axes_dims to the "
                         "model's axes_dims_rope (FLUX.1: 16, 56, 56)",
                         (int)sum, (int)c->head_dim);
    }
    if (!(c->theta > 0.0f) || !(c->eps > 0.0f))
        return imgd_fail(IMGD_E_INVALID_ARG, "flux: theta and eps must be positive");
    return IMGD_OK;
}

/* ---- weights ------------------------------------------------------------------------------ */

typedef struct flux_b {
    imgd_graph          *g;
    imgd_wbind          *b; /* NULL: placeholder weights (planning only) */
    const char          *prefix;
    const imgd_flux_cfg *cfg;
    imgd_tensor         *temb_act; /* silu(temb), read by every modulation */
    imgd_tensor         *ids;
    int64_t              B, T, N;
} flux_b;

/* Never read: placeholder graphs are planned, not computed. */
static const float k_placeholder[16];

static imgd_tensor *W(flux_b *f, int32_t n, const int64_t *shape, const char *fmt, ...)
    IMGD_PRINTF(4, 5);

static imgd_tensor *W(flux_b *f, int32_t n, const int64_t *shape, const char *fmt, ...) {
    if (imgd_graph_status(f->g) != IMGD_OK) return NULL;
    char    rel[NAME_CAP], name[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof rel || !imgd_fmt(name, sizeof name, "%s.%s", f->prefix, rel)) {
        (void)imgd_graph_fail(f->g, IMGD_E_INVALID_ARG, "flux: parameter name too long: %s.%s",
                              f->prefix, rel);
        return NULL;
    }
    if (!f->b) return imgd_graph_weight(f->g, name, IMGD_DTYPE_F32, n, shape, k_placeholder);
    return imgd_wbind_get(f->b, f->g, name, n, shape);
}

#define SHAPE(...)                                                                                 \
    (int32_t)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]) {                   \
        __VA_ARGS__                                                                                \
    }

/* ---- layers ------------------------------------------------------------------------------- */

/* torch.nn.Linear with bias named pfx, plus what a run-time adapter adds. */
static imgd_tensor *linear(flux_b *f, imgd_tensor *x, int64_t out, const char *fmt, ...)
    IMGD_PRINTF(4, 5);

static imgd_tensor *linear(flux_b *f, imgd_tensor *x, int64_t out, const char *fmt, ...) {
    if (!x) return NULL;
    char    p[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(p, sizeof p, fmt, ap);
    va_end(ap);
    int64_t      in = x->shape[x->n_dims - 1];
    imgd_tensor *w  = W(f, SHAPE(out, in), "%s.weight", p);
    imgd_tensor *b  = W(f, SHAPE(out), "%s.bias", p);
    imgd_tensor *y  = imgd_op_linear(f->g, x, w, b);
    if (!f->b) return y;
    return imgd_wbind_adapt(f->b, f->g, IMGD_SITE_LINEAR, 0, 0, x, y, "%s.%s.weight", f->prefix, p);
}

/* Modulation chunks: Linear(SiLU(temb)) [B, k*D] -> k views [B, 1, D] (chunk order). */
static void modulation(flux_b *f, int32_t k, imgd_tensor **chunks, const char *pfx) {
    int64_t      D   = f->cfg->hidden;
    imgd_tensor *mod = linear(f, f->temb_act, k * D, "%s.linear", pfx);
    for (int32_t i = 0; i < k; i++) {
        chunks[i] = mod ? imgd_op_view(f->g, mod, 3, (int64_t[]){f->B, 1, D},
                                       (int64_t[]){k * D, D, 1}, i * D)
                        : NULL;
    }
}

/* LayerNorm(x; no affine) * (1 + scale) + shift, scale/shift [B, 1, D]. */
static imgd_tensor *modulate(flux_b *f, imgd_tensor *x, imgd_tensor *shift, imgd_tensor *scale) {
    imgd_graph  *g = f->g;
    imgd_tensor *n = imgd_op_layer_norm(g, x, f->cfg->eps, NULL, NULL);
    n              = imgd_op_mul(g, n, imgd_op_scale(g, scale, 1.0f, 1.0f));
    return imgd_op_add(g, n, shift);
}

/* q/k/v of one stream [B, L, H, hd] with the per-head RMSNorms on q and k. names: the three
 * projections and the two norms. */
static void qkv(flux_b *f, imgd_tensor *x, const char *p, const char *const names[5],
                imgd_tensor **q, imgd_tensor **k, imgd_tensor **v) {
    imgd_graph  *g = f->g;
    int64_t      D = f->cfg->hidden, H = f->cfg->heads, hd = f->cfg->head_dim;
    int64_t      B = x ? x->shape[0] : 0, L = x ? x->shape[1] : 0;
    int64_t      s4[4] = {B, L, H, hd};
    imgd_tensor *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = imgd_op_reshape(g, linear(f, x, D, "%s.%s", p, names[i]), 4, s4);
    *q = imgd_op_rms_norm(g, t[0], f->cfg->eps, W(f, SHAPE(hd), "%s.%s.weight", p, names[3]));
    *k = imgd_op_rms_norm(g, t[1], f->cfg->eps, W(f, SHAPE(hd), "%s.%s.weight", p, names[4]));
    *v = t[2];
}

/* softmax(rope(q) rope(k)^T / sqrt(hd)) v over the joint sequence; [B, L, D]. */
static imgd_tensor *joint_attention(flux_b *f, imgd_tensor *q, imgd_tensor *k, imgd_tensor *v) {
    imgd_graph          *g = f->g;
    const imgd_flux_cfg *c = f->cfg;
    q = imgd_op_rope_nd(g, q, f->ids, IMGD_ROPE_INTERLEAVE, c->n_axes, c->axes_dims, c->theta);
    k = imgd_op_rope_nd(g, k, f->ids, IMGD_ROPE_INTERLEAVE, c->n_axes, c->axes_dims, c->theta);
    imgd_tensor *o = imgd_op_attention(g, q, k, v, NULL, 0.0f);
    if (!o) return NULL;
    return imgd_op_reshape(g, o, 3, (int64_t[]){o->shape[0], o->shape[1], c->hidden});
}

/* FeedForward(gelu-approximate): net.0.proj, GELU tanh, net.2. */
static imgd_tensor *feed_forward(flux_b *f, imgd_tensor *x, const char *p) {
    imgd_tensor *h = linear(f, x, f->cfg->mlp_hidden, "%s.net.0.proj", p);
    return linear(f, imgd_op_gelu_tanh(f->g, h), f->cfg->hidden, "%s.net.2", p);
}

/* x + gate * y, gate [B, 1, D]. */
static imgd_tensor *gated(flux_b *f, imgd_tensor *x, imgd_tensor *gate, imgd_tensor *y) {
    return imgd_op_add(f->g, x, imgd_op_mul(f->g, gate, y));
}

/* ---- blocks ------------------------------------------------------------------------------- */

/* FluxTransformerBlock (double stream): updates *txt [B, T, D] and *img [B, N, D]. */
static void double_block(flux_b *f, int32_t i, imgd_tensor **txt, imgd_tensor **img) {
    imgd_graph *g = f->g;
    char        p[NAME_CAP], s[NAME_CAP];
    (void)imgd_fmt(p, sizeof p, "transformer_blocks.%d", (int)i);
    imgd_tensor *mi[6], *mc[6]; /* shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp */
    (void)imgd_fmt(s, sizeof s, "%s.norm1", p);
    modulation(f, 6, mi, s);
    (void)imgd_fmt(s, sizeof s, "%s.norm1_context", p);
    modulation(f, 6, mc, s);
    imgd_tensor *ni = modulate(f, *img, mi[0], mi[1]);
    imgd_tensor *nc = modulate(f, *txt, mc[0], mc[1]);

    static const char *const img_names[5] = {"to_q", "to_k", "to_v", "norm_q", "norm_k"};
    static const char *const txt_names[5] = {"add_q_proj", "add_k_proj", "add_v_proj",
                                             "norm_added_q", "norm_added_k"};
    imgd_tensor             *qi, *ki, *vi, *qc, *kc, *vc;
    (void)imgd_fmt(s, sizeof s, "%s.attn", p);
    qkv(f, ni, s, img_names, &qi, &ki, &vi);
    qkv(f, nc, s, txt_names, &qc, &kc, &vc);
    imgd_tensor *qs[2] = {qc, qi}, *ks[2] = {kc, ki}, *vs[2] = {vc, vi};
    imgd_tensor *o  = joint_attention(f, imgd_op_concat(g, 2, qs, 1), imgd_op_concat(g, 2, ks, 1),
                                      imgd_op_concat(g, 2, vs, 1));
    imgd_tensor *oc = imgd_op_narrow(g, o, 1, 0, f->T);
    imgd_tensor *oi = imgd_op_narrow(g, o, 1, f->T, f->N);
    oi              = linear(f, oi, f->cfg->hidden, "%s.attn.to_out.0", p);
    oc              = linear(f, oc, f->cfg->hidden, "%s.attn.to_add_out", p);

    imgd_tensor *h = gated(f, *img, mi[2], oi);
    (void)imgd_fmt(s, sizeof s, "%s.ff", p);
    h              = gated(f, h, mi[5], feed_forward(f, modulate(f, h, mi[3], mi[4]), s));
    imgd_tensor *e = gated(f, *txt, mc[2], oc);
    (void)imgd_fmt(s, sizeof s, "%s.ff_context", p);
    e    = gated(f, e, mc[5], feed_forward(f, modulate(f, e, mc[3], mc[4]), s));
    *img = h;
    *txt = e;
}

/* FluxSingleTransformerBlock on the joint stream x [B, T + N, D]. */
static imgd_tensor *single_block(flux_b *f, int32_t i, imgd_tensor *x) {
    imgd_graph *g = f->g;
    char        p[NAME_CAP], s[NAME_CAP];
    (void)imgd_fmt(p, sizeof p, "single_transformer_blocks.%d", (int)i);
    imgd_tensor *m[3]; /* shift, scale, gate */
    (void)imgd_fmt(s, sizeof s, "%s.norm", p);
    modulation(f, 3, m, s);
    imgd_tensor *n   = modulate(f, x, m[0], m[1]);
    imgd_tensor *mlp = imgd_op_gelu_tanh(g, linear(f, n, f->cfg->mlp_hidden, "%s.proj_mlp", p));
    static const char *const names[5] = {"to_q", "to_k", "to_v", "norm_q", "norm_k"};
    imgd_tensor             *q, *k, *v;
    (void)imgd_fmt(s, sizeof s, "%s.attn", p);
    qkv(f, n, s, names, &q, &k, &v);
    imgd_tensor *cat[2] = {joint_attention(f, q, k, v), mlp};
    imgd_tensor *y      = linear(f, imgd_op_concat(g, 2, cat, 2), f->cfg->hidden, "%s.proj_out", p);
    return gated(f, x, m[2], y);
}

/* ---- embeddings --------------------------------------------------------------------------- */

/* Timesteps(256, flip_sin_to_cos, shift 0) of v * 1000, then TimestepEmbedding. */
static imgd_tensor *time_mlp(flux_b *f, imgd_tensor *v, const char *p) {
    imgd_graph  *g = f->g;
    imgd_tensor *e = imgd_op_timestep_embedding(g, imgd_op_scale(g, v, 1000.0f, 0.0f), 256, true,
                                                0.0f, 10000.0f);
    e              = imgd_op_silu(g, linear(f, e, f->cfg->hidden, "%s.linear_1", p));
    return linear(f, e, f->cfg->hidden, "%s.linear_2", p);
}

/* CombinedTimestep(Guidance)TextProjEmbeddings. */
static imgd_tensor *time_text_embed(flux_b *f, const imgd_flux_inputs *in) {
    imgd_graph  *g    = f->g;
    imgd_tensor *temb = time_mlp(f, in->t, "time_text_embed.timestep_embedder");
    if (f->cfg->guidance_embed)
        temb = imgd_op_add(g, temb, time_mlp(f, in->guidance, "time_text_embed.guidance_embedder"));
    imgd_tensor *pp = imgd_op_silu(
        g, linear(f, in->pooled, f->cfg->hidden, "time_text_embed.text_embedder.linear_1"));
    pp = linear(f, pp, f->cfg->hidden, "time_text_embed.text_embedder.linear_2");
    return imgd_op_add(g, temb, pp);
}

/* ---- network ------------------------------------------------------------------------------ */

static bool dims_are(const imgd_tensor *t, int32_t n, int64_t d0, int64_t d1, int64_t d2) {
    if (!t || t->n_dims != n) return false;
    int64_t d[3] = {d0, d1, d2};
    for (int32_t i = 0; i < n; i++)
        if (d[i] >= 0 && t->shape[i] != d[i]) return false;
    return true;
}

static imgd_status check_inputs(imgd_graph *g, const imgd_flux_cfg *c, const imgd_flux_inputs *in) {
    if (!in || !in->x || !in->ctx || !in->pooled || !in->t || !in->ids)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "flux: x, ctx, pooled, t and ids are all required");
    int64_t B = in->x->n_dims == 3 ? in->x->shape[0] : -1;
    if (!dims_are(in->x, 3, B, -1, c->in_channels))
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "flux: x must be packed latents [B, N, %d] (2x2 patches of %d "
                               "latent channels), got %d dims",
                               (int)c->in_channels, (int)c->in_channels / 4, (int)in->x->n_dims);
    int64_t N = in->x->shape[1];
    if (!dims_are(in->ctx, 3, B, -1, c->context_dim))
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "flux: ctx must be the T5 output [%lld, T, %d]", (long long)B,
                               (int)c->context_dim);
    int64_t T = in->ctx->shape[1];
    if (!dims_are(in->pooled, 2, B, c->pooled_dim, 0))
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "flux: pooled must be the CLIP pooled output [%lld, %d]",
                               (long long)B, (int)c->pooled_dim);
    if (!dims_are(in->t, 1, B, 0, 0))
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "flux: t must be [%lld] (one per item)",
                               (long long)B);
    if (c->guidance_embed && !dims_are(in->guidance, 1, B, 0, 0))
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "flux: this transformer has a guidance embedding (FLUX.1 dev): "
                               "pass guidance [%lld] (the guidance scale, e.g. 3.5)",
                               (long long)B);
    if (!c->guidance_embed && in->guidance)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "flux: this transformer has no guidance embedding (FLUX.1 "
                               "schnell): pass guidance = NULL");
    if (!dims_are(in->ids, 2, T + N, c->n_axes, 0))
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "flux: ids must be [T + N = %lld, %d] (text ids, then image ids)",
                               (long long)T + (long long)N, (int)c->n_axes);
    return IMGD_OK;
}

static imgd_status build(imgd_graph *g, imgd_wbind *b, const char *prefix, const imgd_flux_cfg *cfg,
                         const imgd_flux_inputs *in, imgd_flux_taps *taps, imgd_tensor **out) {
    imgd_status st = imgd_flux_cfg_check(cfg);
    if (st != IMGD_OK) return imgd_graph_fail(g, st, "%s", imgd_last_error());
    st = check_inputs(g, cfg, in);
    if (st != IMGD_OK) return st;
    flux_b f = {
        g, b, prefix, cfg, NULL, in->ids, in->x->shape[0], in->ctx->shape[1], in->x->shape[1]};

    imgd_tensor *img  = linear(&f, in->x, cfg->hidden, "x_embedder");
    imgd_tensor *temb = time_text_embed(&f, in);
    imgd_tensor *txt  = linear(&f, in->ctx, cfg->hidden, "context_embedder");
    f.temb_act        = imgd_op_silu(g, temb);
    if (taps) {
        memset(taps, 0, sizeof *taps);
        taps->x_embedder       = img;
        taps->temb             = temb;
        taps->context_embedder = txt;
    }
    for (int32_t i = 0; i < cfg->depth; i++) {
        double_block(&f, i, &txt, &img);
        if (taps) {
            taps->txt[i] = txt;
            taps->img[i] = img;
        }
    }
    imgd_tensor *cat[2] = {txt, img};
    imgd_tensor *x      = imgd_op_concat(g, 2, cat, 1);
    for (int32_t i = 0; i < cfg->depth_single; i++) {
        x = single_block(&f, i, x);
        if (taps) taps->single[i] = x;
    }
    x = imgd_op_narrow(g, x, 1, f.T, f.N);
    /* AdaLayerNormContinuous: Linear(SiLU(temb)) chunked (scale, shift) */
    imgd_tensor *mod[2];
    modulation(&f, 2, mod, "norm_out");
    x = modulate(&f, x, mod[1], mod[0]);
    if (taps) taps->norm_out = x;
    imgd_tensor *y = linear(&f, x, cfg->out_channels, "proj_out");
    if (imgd_graph_status(g) != IMGD_OK || !y) {
        return imgd_graph_status(g) != IMGD_OK
                   ? imgd_graph_status(g)
                   : imgd_graph_fail(g, IMGD_E_INTERNAL, "flux: no output built");
    }
    if (taps) {
        imgd_graph_output(g, taps->x_embedder);
        imgd_graph_output(g, taps->temb);
        imgd_graph_output(g, taps->context_embedder);
        for (int32_t i = 0; i < cfg->depth; i++) {
            imgd_graph_output(g, taps->txt[i]);
            imgd_graph_output(g, taps->img[i]);
        }
        for (int32_t i = 0; i < cfg->depth_single; i++) imgd_graph_output(g, taps->single[i]);
        imgd_graph_output(g, taps->norm_out);
    }
    *out = y;
    return IMGD_OK;
}

imgd_status imgd_flux_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                            const imgd_flux_cfg *cfg, const imgd_flux_inputs *in,
                            imgd_flux_taps *taps, imgd_tensor **out) {
    if (!g) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_flux_build: graph is NULL");
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    if (!b || !prefix || !out)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_flux_build: NULL weights/prefix/out");
    return build(g, b, prefix, cfg, in, taps, out);
}

imgd_status imgd_flux_plan_info(const imgd_flux_cfg *cfg, int64_t batch, int64_t height,
                                int64_t width, int64_t txt_len, imgd_backend *be,
                                imgd_plan_info *info) {
    if (!cfg || !be || !info || batch < 1 || height < 2 || width < 2 || height % 2 != 0 ||
        width % 2 != 0 || txt_len < 1)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "imgd_flux_plan_info: batch >= 1, even latent height/width >= 2 and "
                         "txt_len >= 1 required (got %lld, %lld x %lld, %lld)",
                         (long long)batch, (long long)height, (long long)width, (long long)txt_len);
    imgd_graph *g  = NULL;
    imgd_status st = imgd_graph_new(NULL, &g);
    if (st != IMGD_OK) return st;
    int64_t          B = batch, N = (height / 2) * (width / 2);
    imgd_flux_inputs in = {0};
    in.x = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 3, (int64_t[]){B, N, cfg->in_channels});
    in.ctx =
        imgd_graph_input(g, "ctx", IMGD_DTYPE_F32, 3, (int64_t[]){B, txt_len, cfg->context_dim});
    in.pooled = imgd_graph_input(g, "pooled", IMGD_DTYPE_F32, 2, (int64_t[]){B, cfg->pooled_dim});
    in.t      = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){B});
    in.ids    = imgd_graph_input(g, "ids", IMGD_DTYPE_F32, 2,
                                 (int64_t[]){txt_len + N, IMGD_MAX(cfg->n_axes, 1)});
    if (cfg->guidance_embed)
        in.guidance = imgd_graph_input(g, "guidance", IMGD_DTYPE_F32, 1, (int64_t[]){B});
    imgd_tensor *out = NULL;
    st               = imgd_graph_status(g);
    if (st == IMGD_OK) st = build(g, NULL, "transformer", cfg, &in, NULL, &out);
    if (st == IMGD_OK) {
        imgd_graph_output(g, out);
        st = imgd_graph_plan(g, be, info);
    }
    imgd_graph_free(g);
    return st;
}

/* ---- host helpers ------------------------------------------------------------------------- */

void imgd_flux_pack(const float *lat, int64_t B, int64_t C, int64_t H, int64_t W, float *out) {
    int64_t h2 = H / 2, w2 = W / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t r = 0; r < h2; r++)
            for (int64_t q = 0; q < w2; q++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t dy = 0; dy < 2; dy++)
                        for (int64_t dx = 0; dx < 2; dx++) {
                            int64_t src = ((b * C + c) * H + 2 * r + dy) * W + 2 * q + dx;
                            int64_t dst = ((b * h2 + r) * w2 + q) * 4 * C + c * 4 + dy * 2 + dx;
                            out[dst]    = lat[src];
                        }
}

void imgd_flux_unpack(const float *packed, int64_t B, int64_t C, int64_t H, int64_t W, float *out) {
    int64_t h2 = H / 2, w2 = W / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t r = 0; r < h2; r++)
            for (int64_t q = 0; q < w2; q++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t dy = 0; dy < 2; dy++)
                        for (int64_t dx = 0; dx < 2; dx++) {
                            int64_t dst = ((b * C + c) * H + 2 * r + dy) * W + 2 * q + dx;
                            int64_t src = ((b * h2 + r) * w2 + q) * 4 * C + c * 4 + dy * 2 + dx;
                            out[dst]    = packed[src];
                        }
}

void imgd_flux_ids(int64_t txt_len, int64_t H, int64_t W, float *out) {
    int64_t h2 = H / 2, w2 = W / 2;
    memset(out, 0, (size_t)(txt_len * 3) * sizeof *out);
    float *p = out + txt_len * 3;
    for (int64_t r = 0; r < h2; r++)
        for (int64_t q = 0; q < w2; q++, p += 3) {
            p[0] = 0.0f;
            p[1] = (float)r;
            p[2] = (float)q;
        }
}
