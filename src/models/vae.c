/* AutoencoderKL on the tensor engine (see vae.h). Parameter names follow diffusers' module
 * tree (STYLE M6): <prefix>.{encoder,decoder}.{conv_in, down_blocks.L / up_blocks.L
 * .{resnets.R, downsamplers.0.conv, upsamplers.0.conv}, mid_block.{resnets.R,
 * attentions.0}, conv_norm_out, conv_out}, <prefix>.{quant_conv, post_quant_conv}. */
#include "models/vae.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "tensor/ops.h"

#define VNAME_CAP 256

/* ---- configuration ----------------------------------------------------------------------- */

imgd_status imgd_vae_cfg_init(imgd_vae_cfg *cfg, const imgd_vae_config *vc, int32_t groups) {
    if (!cfg || !vc) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_vae_cfg_init: NULL argument");
    imgd_vae_cfg c     = {0};
    c.in_channels      = vc->in_channels;
    c.out_channels     = vc->out_channels;
    c.latent_channels  = vc->latent_channels;
    c.n_levels         = vc->n_levels;
    c.layers_per_block = vc->layers_per_block;
    c.groups           = groups > 0 ? groups : vc->groups;
    c.eps              = 1e-6f;
    c.mid_attention    = vc->mid_attention;
    c.quant_conv       = vc->has_quant_conv;
    if (c.n_levels < 1 || c.n_levels > IMGD_MAX_LEVELS || c.layers_per_block < 1 ||
        c.latent_channels < 1 || (vc->has_encoder && c.in_channels < 1) ||
        (vc->has_decoder && c.out_channels < 1))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "vae: bad config (%d levels, %d layers per block, channels in %d out %d "
                         "latent %d)",
                         c.n_levels, c.layers_per_block, c.in_channels, c.out_channels,
                         c.latent_channels);
    if (c.groups < 1)
        return imgd_fail(IMGD_E_INVALID_ARG, "vae: %d GroupNorm groups; set norm_num_groups",
                         c.groups);
    for (int32_t l = 0; l < c.n_levels; l++) {
        c.widths[l] = vc->widths[l];
        if (c.widths[l] < 1 || c.widths[l] % c.groups != 0)
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "vae: level %d width %d is not a multiple of %d GroupNorm groups; set "
                             "the group count (norm_num_groups) the model was trained with",
                             l, c.widths[l], c.groups);
    }
    *cfg = c;
    return IMGD_OK;
}

int32_t imgd_vae_scale(const imgd_vae_cfg *cfg) {
    return cfg && cfg->n_levels >= 1 && cfg->n_levels <= IMGD_MAX_LEVELS
               ? (int32_t)1 << (cfg->n_levels - 1)
               : 1;
}

static bool cfg_ok(imgd_graph *g, const imgd_vae_cfg *c) {
    bool ok = c && c->n_levels >= 1 && c->n_levels <= IMGD_MAX_LEVELS && c->layers_per_block >= 1 &&
              c->groups >= 1 && c->latent_channels >= 1;
    for (int32_t l = 0; ok && l < c->n_levels; l++)
        ok = c->widths[l] >= 1 && c->widths[l] % c->groups == 0;
    if (!ok)
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                              "vae: bad config (use imgd_vae_cfg_init to build one)");
    return ok;
}

/* ---- blocks ------------------------------------------------------------------------------ */

/* Weight `<mod>.<what>` of shape [d0] or [d0, d1, k, k] (k > 0) or [d0, d1] (k == 0). */
static imgd_tensor *pw(imgd_wbind *b, imgd_graph *g, const char *mod, const char *what, int64_t d0,
                       int64_t d1, int64_t k) {
    int64_t s[4] = {d0, d1, k, k};
    int32_t n    = d1 == 0 ? 1 : (k == 0 ? 2 : 4);
    return imgd_wbind_getf(b, g, n, s, "%s.%s", mod, what);
}

static imgd_tensor *conv(imgd_graph *g, imgd_wbind *b, const char *mod, imgd_tensor *x, int64_t cin,
                         int64_t cout, int32_t k, int32_t stride, int32_t pad) {
    return imgd_op_conv2d(g, x, pw(b, g, mod, "weight", cout, cin, k),
                          pw(b, g, mod, "bias", cout, 0, 0), stride, pad);
}

static imgd_tensor *gnorm(imgd_graph *g, imgd_wbind *b, const imgd_vae_cfg *c, const char *mod,
                          imgd_tensor *x, int64_t ch, bool silu) {
    return imgd_op_group_norm(g, x, c->groups, c->eps, pw(b, g, mod, "weight", ch, 0, 0),
                              pw(b, g, mod, "bias", ch, 0, 0), silu);
}

/* ResnetBlock2D without time embedding: x + conv2(silu(gn2(conv1(silu(gn1(x)))))), with a
 * 1x1 conv_shortcut on x when the width changes. */
static imgd_tensor *resnet(imgd_graph *g, imgd_wbind *b, const imgd_vae_cfg *c, const char *mod,
                           imgd_tensor *x, int64_t cin, int64_t cout) {
    char n[VNAME_CAP];
    (void)imgd_fmt(n, sizeof n, "%s.norm1", mod);
    imgd_tensor *h = gnorm(g, b, c, n, x, cin, true);
    (void)imgd_fmt(n, sizeof n, "%s.conv1", mod);
    h = conv(g, b, n, h, cin, cout, 3, 1, 1);
    (void)imgd_fmt(n, sizeof n, "%s.norm2", mod);
    h = gnorm(g, b, c, n, h, cout, true);
    (void)imgd_fmt(n, sizeof n, "%s.conv2", mod);
    h = conv(g, b, n, h, cout, cout, 3, 1, 1);
    if (cin != cout) {
        (void)imgd_fmt(n, sizeof n, "%s.conv_shortcut", mod);
        x = conv(g, b, n, x, cin, cout, 1, 1, 0);
    }
    return imgd_op_add(g, x, h);
}

/* The mid-block Attention (one head of width C over the H*W positions, residual). */
static imgd_tensor *attention(imgd_graph *g, imgd_wbind *b, const imgd_vae_cfg *c, const char *mod,
                              imgd_tensor *x, int64_t ch) {
    if (!x) return NULL;
    int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3], L = H * W;
    char    n[VNAME_CAP];
    (void)imgd_fmt(n, sizeof n, "%s.group_norm", mod);
    imgd_tensor *h = gnorm(g, b, c, n, x, ch, false);
    h              = imgd_op_reshape(g, h, 3, (int64_t[]){B, ch, L});
    h              = imgd_op_transpose(g, h, 1, 2); /* [B, L, C] */
    imgd_tensor             *qkv[3];
    static const char *const proj[3] = {"to_q", "to_k", "to_v"};
    for (int i = 0; i < 3; i++) {
        (void)imgd_fmt(n, sizeof n, "%s.%s", mod, proj[i]);
        qkv[i] =
            imgd_op_linear(g, h, pw(b, g, n, "weight", ch, ch, 0), pw(b, g, n, "bias", ch, 0, 0));
        qkv[i] = imgd_op_reshape(g, qkv[i], 4, (int64_t[]){B, L, 1, ch});
    }
    h = imgd_op_attention(g, qkv[0], qkv[1], qkv[2], NULL, 0.0f);
    h = imgd_op_reshape(g, h, 3, (int64_t[]){B, L, ch});
    (void)imgd_fmt(n, sizeof n, "%s.to_out.0", mod);
    h = imgd_op_linear(g, h, pw(b, g, n, "weight", ch, ch, 0), pw(b, g, n, "bias", ch, 0, 0));
    h = imgd_op_transpose(g, h, 1, 2); /* [B, C, L] */
    h = imgd_op_reshape(g, h, 4, (int64_t[]){B, ch, H, W});
    return imgd_op_add(g, x, h);
}

/* UNetMidBlock2D: resnet, attention (when the config has it), resnet. */
static imgd_tensor *mid_block(imgd_graph *g, imgd_wbind *b, const imgd_vae_cfg *c, const char *side,
                              imgd_tensor *x, int64_t ch) {
    char n[VNAME_CAP];
    (void)imgd_fmt(n, sizeof n, "%s.mid_block.resnets.0", side);
    x = resnet(g, b, c, n, x, ch, ch);
    if (c->mid_attention) {
        (void)imgd_fmt(n, sizeof n, "%s.mid_block.attentions.0", side);
        x = attention(g, b, c, n, x, ch);
    }
    (void)imgd_fmt(n, sizeof n, "%s.mid_block.resnets.1", side);
    return resnet(g, b, c, n, x, ch, ch);
}

/* ---- decoder and encoder ------------------------------------------------------------------ */

imgd_status imgd_vae_decode_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                  const imgd_vae_cfg *cfg, imgd_tensor *latent,
                                  imgd_vae_decode_out *out) {
    if (!g) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_vae_decode_build: NULL graph");
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    if (!prefix || !latent || !out)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_vae_decode_build: NULL argument");
    if (!cfg_ok(g, cfg)) return imgd_graph_status(g);
    int64_t zc = cfg->latent_channels;
    if (latent->n_dims != 4 || latent->shape[1] != zc)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "vae decode: latent must be [B, %lld, h, w], got %d dims with %lld "
                               "channels",
                               (long long)zc, latent->n_dims, (long long)latent->shape[1]);
    char                side[VNAME_CAP], n[VNAME_CAP];
    imgd_vae_decode_out o = {0};
    int32_t             L = cfg->n_levels;
    imgd_tensor        *z = latent;
    if (cfg->quant_conv) {
        (void)imgd_fmt(n, sizeof n, "%s.post_quant_conv", prefix);
        z = conv(g, b, n, z, zc, zc, 1, 1, 0);
    }
    o.post_quant_conv = z;
    (void)imgd_fmt(side, sizeof side, "%s.decoder", prefix);
    int64_t prev = cfg->widths[L - 1];
    (void)imgd_fmt(n, sizeof n, "%s.conv_in", side);
    imgd_tensor *h = conv(g, b, n, z, zc, prev, 3, 1, 1);
    h              = mid_block(g, b, cfg, side, h, prev);
    o.mid_block    = h;
    for (int32_t l = 0; l < L; l++) {
        int64_t cout = cfg->widths[L - 1 - l];
        for (int32_t r = 0; r <= cfg->layers_per_block; r++) {
            (void)imgd_fmt(n, sizeof n, "%s.up_blocks.%d.resnets.%d", side, l, r);
            h = resnet(g, b, cfg, n, h, r == 0 ? prev : cout, cout);
        }
        if (l != L - 1) {
            (void)imgd_fmt(n, sizeof n, "%s.up_blocks.%d.upsamplers.0.conv", side, l);
            h = conv(g, b, n, imgd_op_upsample_nearest2x(g, h), cout, cout, 3, 1, 1);
        }
        prev = cout;
    }
    (void)imgd_fmt(n, sizeof n, "%s.conv_norm_out", side);
    h = gnorm(g, b, cfg, n, h, prev, true);
    (void)imgd_fmt(n, sizeof n, "%s.conv_out", side);
    o.image = conv(g, b, n, h, prev, cfg->out_channels, 3, 1, 1);
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    *out = o;
    return IMGD_OK;
}

imgd_status imgd_vae_encode_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                  const imgd_vae_cfg *cfg, imgd_tensor *image,
                                  imgd_vae_encode_out *out) {
    if (!g) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_vae_encode_build: NULL graph");
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    if (!prefix || !image || !out)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_vae_encode_build: NULL argument");
    if (!cfg_ok(g, cfg)) return imgd_graph_status(g);
    if (image->n_dims != 4 || image->shape[1] != cfg->in_channels)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "vae encode: image must be [B, %d, H, W], got %d dims with %lld "
                               "channels",
                               cfg->in_channels, image->n_dims, (long long)image->shape[1]);
    char    side[VNAME_CAP], n[VNAME_CAP];
    int32_t L  = cfg->n_levels;
    int64_t zc = cfg->latent_channels, prev = cfg->widths[0];
    (void)imgd_fmt(side, sizeof side, "%s.encoder", prefix);
    (void)imgd_fmt(n, sizeof n, "%s.conv_in", side);
    imgd_tensor *h = conv(g, b, n, image, cfg->in_channels, prev, 3, 1, 1);
    for (int32_t l = 0; l < L; l++) {
        int64_t cout = cfg->widths[l];
        for (int32_t r = 0; r < cfg->layers_per_block; r++) {
            (void)imgd_fmt(n, sizeof n, "%s.down_blocks.%d.resnets.%d", side, l, r);
            h = resnet(g, b, cfg, n, h, r == 0 ? prev : cout, cout);
        }
        if (l != L - 1) { /* Downsample2D(padding=0): pad right and bottom by one, stride 2 */
            (void)imgd_fmt(n, sizeof n, "%s.down_blocks.%d.downsamplers.0.conv", side, l);
            h = imgd_op_pad(g, h, (int64_t[]){0, 0, 0, 0}, (int64_t[]){0, 0, 1, 1}, 0.0f);
            h = conv(g, b, n, h, cout, cout, 3, 2, 0);
        }
        prev = cout;
    }
    h = mid_block(g, b, cfg, side, h, prev);
    (void)imgd_fmt(n, sizeof n, "%s.conv_norm_out", side);
    h = gnorm(g, b, cfg, n, h, prev, true);
    (void)imgd_fmt(n, sizeof n, "%s.conv_out", side);
    h = conv(g, b, n, h, prev, 2 * zc, 3, 1, 1);
    if (cfg->quant_conv) {
        (void)imgd_fmt(n, sizeof n, "%s.quant_conv", prefix);
        h = conv(g, b, n, h, 2 * zc, 2 * zc, 1, 1, 0);
    }
    imgd_vae_encode_out o = {0};
    o.moments             = h;
    o.mean                = imgd_op_cont(g, imgd_op_narrow(g, h, 1, 0, zc));
    o.logvar              = imgd_op_clamp(g, imgd_op_narrow(g, h, 1, zc, zc), -30.0f, 20.0f);
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    *out = o;
    return IMGD_OK;
}

void imgd_vae_posterior_std(const float *logvar, size_t n, float *std) {
    for (size_t i = 0; logvar && std && i < n; i++) std[i] = expf(0.5f * logvar[i]);
}

void imgd_vae_posterior_sample(const float *mean, const float *logvar, const float *noise, size_t n,
                               float *out) {
    for (size_t i = 0; mean && logvar && noise && out && i < n; i++)
        out[i] = mean[i] + expf(0.5f * logvar[i]) * noise[i];
}

/* ---- tiled decode -------------------------------------------------------------------------- */

imgd_vae_tiling imgd_vae_tiling_default(void) {
    imgd_vae_tiling t = {0};
    t.tile            = 64;
    t.overlap         = 16;
    return t;
}

#define TILE_GRAPHS_MAX 9 /* distinct tile shapes: <= 3 heights x 3 widths (overlap <= tile/2) */

typedef struct tile_graph {
    int32_t      th, tw; /* latent tile size */
    imgd_graph  *g;
    imgd_tensor *in, *out;
} tile_graph;

/* Tiling state: the grid, the graphs, host tile rows; kept across calls as the public
 * imgd_vae_tiler when imgd_vae_tiling.keep asks. */
struct imgd_vae_tiler {
    imgd_wbind         *b;
    imgd_backend       *be;
    char               *prefix; /* owned copy (the reuse key compares it) */
    const imgd_vae_cfg *cfg;
    int32_t             asked_tile, overlap;          /* as asked (the reuse key) */
    int32_t             batch, h, w, tile, stride, s; /* s: image pixels per latent pixel */
    int32_t             ny, nx, blend, limit;         /* blend, limit in image pixels */
    tile_graph          tg[TILE_GRAPHS_MAX];
    int32_t             n_tg;
    void               *buffer; /* shared activation buffer (backend memory) */
    size_t              buffer_bytes;
    float              *in;       /* one latent tile */
    float              *rows_mem; /* both rows (owned) */
    float              *rows[2];  /* nx decoded tiles each: previous and current row */
    size_t              tile_max; /* floats per decoded tile slot */
    size_t              host_n;   /* floats of in + rows_mem */
};
typedef struct imgd_vae_tiler tiler;

static int32_t tile_h(const tiler *t, int32_t i) {
    int32_t y = i * t->stride;
    return t->h - y < t->tile ? t->h - y : t->tile;
}

static int32_t tile_w(const tiler *t, int32_t j) {
    int32_t x = j * t->stride;
    return t->w - x < t->tile ? t->w - x : t->tile;
}

static tile_graph *find_graph(tiler *t, int32_t th, int32_t tw) {
    for (int32_t k = 0; k < t->n_tg; k++)
        if (t->tg[k].th == th && t->tg[k].tw == tw) return &t->tg[k];
    return NULL;
}

/* Builds and plans the decoder for one tile shape (no memory yet). */
static imgd_status add_graph(tiler *t, int32_t th, int32_t tw) {
    if (find_graph(t, th, tw)) return IMGD_OK;
    if (t->n_tg == TILE_GRAPHS_MAX)
        return imgd_fail(IMGD_E_INTERNAL, "vae tiled decode: more than %d tile shapes",
                         TILE_GRAPHS_MAX);
    tile_graph *tg = &t->tg[t->n_tg];
    imgd_status st = imgd_graph_new(NULL, &tg->g);
    if (st != IMGD_OK) return st;
    t->n_tg++;
    tg->th                   = th;
    tg->tw                   = tw;
    int64_t             s[4] = {t->batch, t->cfg->latent_channels, th, tw};
    imgd_vae_decode_out d;
    tg->in = imgd_graph_input(tg->g, "vae.tile", IMGD_DTYPE_F32, 4, s);
    st     = imgd_vae_decode_build(tg->g, t->b, t->prefix, t->cfg, tg->in, &d);
    if (st != IMGD_OK) return st;
    tg->out = d.image;
    imgd_graph_output(tg->g, tg->out);
    imgd_plan_info info;
    st = imgd_graph_plan(tg->g, t->be, &info);
    if (st != IMGD_OK) return st;
    if (info.activation_bytes > t->buffer_bytes) t->buffer_bytes = info.activation_bytes;
    return IMGD_OK;
}

void imgd_vae_tiler_free(imgd_vae_tiler *t) {
    if (!t) return;
    for (int32_t k = 0; k < t->n_tg; k++) imgd_graph_free(t->tg[k].g);
    if (t->buffer) t->be->iface->buffer_free(t->be, t->buffer);
    imgd_free(t->in);
    imgd_free(t->rows_mem);
    imgd_free(t->prefix);
    imgd_free(t);
}

/* diffusers blend_v: the first e rows of cur fade in from the last e rows of above. */
static void blend_v(const float *above, int32_t ah, float *cur, int32_t ch, int32_t cw,
                    int32_t planes, int32_t extent) {
    int32_t e = ah < ch ? ah : ch;
    if (extent < e) e = extent;
    for (int32_t p = 0; p < planes; p++) {
        const float *a = above + (size_t)p * (size_t)ah * (size_t)cw;
        float       *c = cur + (size_t)p * (size_t)ch * (size_t)cw;
        for (int32_t y = 0; y < e; y++) {
            float wb = (float)((double)y / e), wa = (float)(1.0 - (double)y / e);
            for (int32_t x = 0; x < cw; x++)
                c[(size_t)y * cw + x] =
                    a[(size_t)(ah - e + y) * cw + x] * wa + c[(size_t)y * cw + x] * wb;
        }
    }
}

/* diffusers blend_h: the first e columns of cur fade in from the last e columns of left. */
static void blend_h(const float *left, int32_t lw, float *cur, int32_t ch, int32_t cw,
                    int32_t planes, int32_t extent) {
    int32_t e = lw < cw ? lw : cw;
    if (extent < e) e = extent;
    for (int32_t p = 0; p < planes; p++) {
        const float *a = left + (size_t)p * (size_t)ch * (size_t)lw;
        float       *c = cur + (size_t)p * (size_t)ch * (size_t)cw;
        for (int32_t y = 0; y < ch; y++)
            for (int32_t x = 0; x < e; x++) {
                float wb = (float)((double)x / e), wa = (float)(1.0 - (double)x / e);
                c[(size_t)y * cw + x] =
                    a[(size_t)y * lw + lw - e + x] * wa + c[(size_t)y * cw + x] * wb;
            }
    }
}

/* Decodes tile (i, j) into rows[1][j]: copy the latent window, run its graph. */
static imgd_status run_tile(tiler *t, const float *latent, int32_t i, int32_t j) {
    int32_t     th = tile_h(t, i), tw = tile_w(t, j), y0 = i * t->stride, x0 = j * t->stride;
    tile_graph *tg = find_graph(t, th, tw);
    if (!tg) return imgd_fail(IMGD_E_INTERNAL, "vae tiled decode: no graph for %dx%d", th, tw);
    int32_t planes = t->batch * t->cfg->latent_channels;
    for (int32_t p = 0; p < planes; p++)
        for (int32_t y = 0; y < th; y++)
            memcpy(t->in + ((size_t)p * th + y) * tw,
                   latent + ((size_t)p * t->h + y0 + y) * t->w + x0, (size_t)tw * sizeof(float));
    imgd_status st = imgd_tensor_bind(tg->in, t->in);
    if (st == IMGD_OK) st = imgd_graph_compute(tg->g);
    if (st != IMGD_OK) return st;
    size_t n = (size_t)imgd_tensor_numel(tg->out);
    return imgd_graph_read_f32(tg->g, tg->out, t->rows[1] + (size_t)j * t->tile_max, n);
}

/* Blends tile (i, j) with its upper and left neighbours and copies its kept corner into the
 * image [batch, C, h*s, w*s]. */
static void place_tile(tiler *t, int32_t i, int32_t j, float *image) {
    int32_t th = tile_h(t, i) * t->s, tw = tile_w(t, j) * t->s, C = t->cfg->out_channels;
    int32_t planes = t->batch * C, H = t->h * t->s, W = t->w * t->s;
    float  *cur = t->rows[1] + (size_t)j * t->tile_max;
    if (i > 0)
        blend_v(t->rows[0] + (size_t)j * t->tile_max, tile_h(t, i - 1) * t->s, cur, th, tw, planes,
                t->blend);
    if (j > 0)
        blend_h(t->rows[1] + (size_t)(j - 1) * t->tile_max, tile_w(t, j - 1) * t->s, cur, th, tw,
                planes, t->blend);
    int32_t kh = th < t->limit ? th : t->limit, kw = tw < t->limit ? tw : t->limit;
    int32_t y0 = i * t->limit, x0 = j * t->limit;
    for (int32_t p = 0; p < planes; p++)
        for (int32_t y = 0; y < kh; y++)
            memcpy(image + ((size_t)p * H + y0 + y) * W + x0, cur + ((size_t)p * th + y) * tw,
                   (size_t)kw * sizeof(float));
}

/* Sizes the grid: IMGD_E_INVALID_ARG on a bad tiling. */
static imgd_status tiler_init(tiler *t, const imgd_vae_tiling *tp, int32_t h, int32_t w) {
    imgd_vae_tiling d = imgd_vae_tiling_default();
    if (!tp) tp = &d;
    t->tile = tp->tile ? tp->tile : 64;
    if (t->tile < 1 || tp->overlap < 0 || tp->overlap > t->tile / 2)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "vae tiled decode: tile %d / overlap %d (need tile >= 1 and 0 <= "
                         "overlap <= tile/2)",
                         t->tile, tp->overlap);
    t->asked_tile = t->tile;
    t->overlap    = tp->overlap;
    t->s          = imgd_vae_scale(t->cfg);
    if (h <= t->tile && w <= t->tile) { /* fits: decoded whole, like diffusers' decode */
        t->tile   = h > w ? h : w;
        t->stride = t->tile;
        t->blend  = 0;
        t->limit  = t->tile * t->s;
    } else {
        t->stride = t->tile - tp->overlap;
        t->blend  = tp->overlap * t->s;
        t->limit  = t->stride * t->s;
    }
    t->ny = (h + t->stride - 1) / t->stride;
    t->nx = (w + t->stride - 1) / t->stride;
    return IMGD_OK;
}

/* Plans the graphs (one per distinct tile shape, first, so the shared buffer fits the
 * largest) and allocates the buffer and host scratch of t (grid set by tiler_init). */
static imgd_status tiler_build(tiler *t) {
    imgd_status st = IMGD_OK;
    for (int32_t i = 0; st == IMGD_OK && i < t->ny; i++)
        for (int32_t j = 0; st == IMGD_OK && j < t->nx; j++)
            st = add_graph(t, tile_h(t, i), tile_w(t, j));
    if (st == IMGD_OK)
        st = t->be->iface->alloc(t->be, t->buffer_bytes ? t->buffer_bytes : 1, &t->buffer);
    for (int32_t k = 0; st == IMGD_OK && k < t->n_tg; k++)
        st = imgd_graph_alloc(t->tg[k].g, t->buffer, t->buffer_bytes);
    if (st != IMGD_OK) return st;
    int32_t tmax = t->tile < t->h || t->tile < t->w ? t->tile : (t->h > t->w ? t->h : t->w);
    size_t  in_n = (size_t)t->batch * (size_t)t->cfg->latent_channels * (size_t)tmax * (size_t)tmax;
    t->tile_max  = (size_t)t->batch * (size_t)t->cfg->out_channels * (size_t)tmax * (size_t)tmax *
                  (size_t)t->s * (size_t)t->s;
    size_t rows_n = 0;
    if (!imgd_size_mul(t->tile_max, 2 * (size_t)t->nx, &rows_n))
        return imgd_fail(IMGD_E_TOO_LARGE, "vae tiled decode: image too large");
    t->in       = imgd_malloc(in_n * sizeof(float));
    t->rows_mem = imgd_malloc(rows_n * sizeof(float));
    t->host_n   = in_n + rows_n;
    if (!t->in || !t->rows_mem) return imgd_fail(IMGD_E_NOMEM, "vae tiled decode: out of memory");
    return IMGD_OK;
}

/* Whether kept tiler k serves a call with these arguments. */
static bool tiler_matches(const tiler *k, const imgd_wbind *b, const imgd_backend *be,
                          const char *prefix, const imgd_vae_cfg *cfg, const imgd_vae_tiling *tp,
                          int32_t batch, int32_t h, int32_t w) {
    imgd_vae_tiling d = imgd_vae_tiling_default();
    if (!tp) tp = &d;
    return k->b == b && k->be == be && k->cfg == cfg && strcmp(k->prefix, prefix) == 0 &&
           k->batch == batch && k->h == h && k->w == w &&
           k->asked_tile == (tp->tile ? tp->tile : 64) && k->overlap == tp->overlap;
}

imgd_status imgd_vae_decode_tiled(imgd_wbind *b, imgd_backend *be, const char *prefix,
                                  const imgd_vae_cfg *cfg, const imgd_vae_tiling *tiling,
                                  const float *latent, int32_t batch, int32_t h, int32_t w,
                                  float *image, imgd_vae_tiled_info *info) {
    if (!b || !be || !prefix || !cfg || !latent || !image)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_vae_decode_tiled: NULL argument");
    if (batch < 1 || h < 1 || w < 1)
        return imgd_fail(IMGD_E_INVALID_ARG, "vae tiled decode: latent %d x %d x %d", batch, h, w);
    imgd_vae_tiler **keep   = tiling ? tiling->keep : NULL;
    tiler           *t      = keep ? *keep : NULL;
    bool             reused = t && tiler_matches(t, b, be, prefix, cfg, tiling, batch, h, w);
    imgd_status      st     = IMGD_OK;
    if (!reused) {
        if (keep) { /* another size or tiling: its graphs go before these are planned */
            imgd_vae_tiler_free(*keep);
            *keep = NULL;
        }
        t = imgd_calloc(1, sizeof *t);
        if (!t) return imgd_fail(IMGD_E_NOMEM, "vae tiled decode: out of memory");
        t->b      = b;
        t->be     = be;
        t->cfg    = cfg;
        t->batch  = batch;
        t->h      = h;
        t->w      = w;
        t->prefix = imgd_strdup(prefix);
        st        = t->prefix ? tiler_init(t, tiling, h, w)
                              : imgd_fail(IMGD_E_NOMEM, "vae tiled decode: out of memory");
        if (st == IMGD_OK) st = tiler_build(t);
        if (st != IMGD_OK) {
            imgd_vae_tiler_free(t);
            return st;
        }
        if (keep) *keep = t;
    }
    for (int32_t k = 0; k < t->n_tg; k++)
        imgd_graph_set_cancel(t->tg[k].g, tiling ? tiling->cancel : NULL);
    t->rows[0] = t->rows_mem;
    t->rows[1] = t->rows_mem + t->tile_max * (size_t)t->nx;
    for (int32_t i = 0; st == IMGD_OK && i < t->ny; i++) {
        for (int32_t j = 0; st == IMGD_OK && j < t->nx; j++) {
            st = run_tile(t, latent, i, j);
            if (st == IMGD_OK) place_tile(t, i, j, image);
        }
        float *swap = t->rows[0];
        t->rows[0]  = t->rows[1];
        t->rows[1]  = swap;
    }
    if (st == IMGD_OK && info) {
        info->tiles            = (uint32_t)(t->ny * t->nx);
        info->graphs           = (uint32_t)t->n_tg;
        info->activation_bytes = t->buffer_bytes;
        info->host_bytes       = t->host_n * sizeof(float);
        info->reused           = reused;
    }
    if (!keep) imgd_vae_tiler_free(t);
    return st;
}
