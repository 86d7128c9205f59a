/* CLIP text encoder on the tensor engine (see clip_text.h). Parameter names follow
 * transformers' CLIPTextModel module tree (STYLE M6):
 *   <prefix>.text_model.embeddings.{token,position}_embedding.weight
 *   <prefix>.text_model.encoder.layers.N.{layer_norm1,self_attn.{q,k,v,out}_proj,layer_norm2,
 *                                         mlp.fc1,mlp.fc2}
 *   <prefix>.text_model.final_layer_norm, <prefix>.text_projection.weight */
#include "models/clip_text.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "tensor/ops.h"

#define TM "%s.text_model"

/* ---- configuration ----------------------------------------------------------------------- */

imgd_clip_text_req imgd_clip_text_req_default(void) {
    imgd_clip_text_req r = {0};
    r.last_hidden_state  = true;
    return r;
}

imgd_status imgd_clip_text_cfg_init(imgd_clip_text_cfg *cfg, const imgd_te_config *te,
                                    int32_t heads) {
    if (!cfg || !te) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_text_cfg_init: NULL argument");
    const char *comp = te->component ? te->component : "text encoder";
    if (te->type != IMGD_TE_CLIP_HF && te->type != IMGD_TE_OPENCLIP)
        return imgd_fail(IMGD_E_INVALID_ARG, "%s: not a CLIP text encoder (type %d)", comp,
                         (int)te->type);
    imgd_clip_text_cfg c = {0};
    c.layers             = te->layers;
    c.hidden             = te->hidden;
    c.heads              = heads > 0 ? heads : te->heads;
    c.intermediate       = te->intermediate;
    c.vocab              = te->vocab;
    c.positions          = te->positions;
    c.projection_dim     = te->projection_dim;
    c.eps                = 1e-5f;
    c.gelu_erf           = te->gelu_erf;
    if (c.layers < 1 || c.layers > IMGD_CLIP_LAYERS_MAX)
        return imgd_fail(IMGD_E_INVALID_ARG, "%s: %d layers (1..%d supported)", comp, c.layers,
                         IMGD_CLIP_LAYERS_MAX);
    if (c.hidden < 1 || c.intermediate < 1 || c.vocab < 1 || c.positions < 1 ||
        c.projection_dim < 0)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "%s: bad sizes (hidden %d, intermediate %d, vocab %d, positions %d, "
                         "projection %d)",
                         comp, c.hidden, c.intermediate, c.vocab, c.positions, c.projection_dim);
    if (c.heads < 1 || c.hidden % c.heads != 0)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "%s: %d attention heads do not divide hidden width %d; set the head "
                         "count (num_attention_heads in config.json) explicitly",
                         comp, c.heads, c.hidden);
    *cfg = c;
    return IMGD_OK;
}

/* ---- graph ------------------------------------------------------------------------------- */

/* Parameter `what` of encoder layer i: a [d0] (d1 == 0) or [d0, d1] weight. */
static imgd_tensor *lw(imgd_wbind *b, imgd_graph *g, const char *prefix, int32_t i,
                       const char *what, int64_t d0, int64_t d1) {
    int64_t shape[2] = {d0, d1};
    return imgd_wbind_getf(b, g, d1 ? 2 : 1, shape, TM ".encoder.layers.%d.%s", prefix, i, what);
}

/* Linear `what` of encoder layer i ([out, in] weight + bias), plus what a run-time adapter
 * (unmerged LoRA) adds to it. */
static imgd_tensor *layer_linear(imgd_graph *g, imgd_wbind *b, const char *prefix, int32_t i,
                                 const char *what, imgd_tensor *x, int64_t out, int64_t in) {
    char wn[96], bn[96];
    (void)imgd_fmt(wn, sizeof wn, "%s.weight", what);
    (void)imgd_fmt(bn, sizeof bn, "%s.bias", what);
    imgd_tensor *y =
        imgd_op_linear(g, x, lw(b, g, prefix, i, wn, out, in), lw(b, g, prefix, i, bn, out, 0));
    return imgd_wbind_adapt(b, g, IMGD_SITE_LINEAR, 0, 0, x, y, TM ".encoder.layers.%d.%s.weight",
                            prefix, (int)i, what);
}

/* The [L, L] additive causal mask (0 on and below the diagonal, -inf above), owned by b. */
static imgd_tensor *causal_mask(imgd_graph *g, imgd_wbind *b, int64_t len) {
    char key[64];
    (void)imgd_fmt(key, sizeof key, "clip.causal_mask.%lld", (long long)len);
    size_t n = 0;
    if (!imgd_size_mul((size_t)len, (size_t)len, &n)) return NULL;
    float *m = imgd_malloc(n * sizeof *m);
    if (!m) {
        (void)imgd_graph_fail(g, IMGD_E_NOMEM, "clip causal mask: out of memory");
        return NULL;
    }
    for (int64_t i = 0; i < len; i++)
        for (int64_t j = 0; j < len; j++) m[i * len + j] = j > i ? -INFINITY : 0.0f;
    imgd_tensor *t = imgd_wbind_const_f32(b, g, key, 2, (int64_t[]){len, len}, m);
    imgd_free(m);
    return t;
}

/* One CLIPEncoderLayer: x + attn(ln1(x)), then + mlp(ln2(.)). x [B, L, hidden]. */
static imgd_tensor *encoder_layer(imgd_graph *g, imgd_wbind *b, const char *p,
                                  const imgd_clip_text_cfg *c, int32_t i, imgd_tensor *x,
                                  imgd_tensor *mask) {
    int64_t      hd = c->hidden, B = x ? x->shape[0] : 0, L = x ? x->shape[1] : 0;
    imgd_tensor *h = imgd_op_layer_norm(g, x, c->eps, lw(b, g, p, i, "layer_norm1.weight", hd, 0),
                                        lw(b, g, p, i, "layer_norm1.bias", hd, 0));
    imgd_tensor *q = layer_linear(g, b, p, i, "self_attn.q_proj", h, hd, hd);
    imgd_tensor *k = layer_linear(g, b, p, i, "self_attn.k_proj", h, hd, hd);
    imgd_tensor *v = layer_linear(g, b, p, i, "self_attn.v_proj", h, hd, hd);
    int64_t      heads[4] = {B, L, c->heads, hd / c->heads};
    q                     = imgd_op_reshape(g, q, 4, heads);
    k                     = imgd_op_reshape(g, k, 4, heads);
    v                     = imgd_op_reshape(g, v, 4, heads);
    h                     = imgd_op_attention(g, q, k, v, mask, 0.0f);
    h                     = imgd_op_reshape(g, h, 3, (int64_t[]){B, L, hd});
    h                     = layer_linear(g, b, p, i, "self_attn.out_proj", h, hd, hd);
    x                     = imgd_op_add(g, x, h);

    int64_t im = c->intermediate;
    h          = imgd_op_layer_norm(g, x, c->eps, lw(b, g, p, i, "layer_norm2.weight", hd, 0),
                                    lw(b, g, p, i, "layer_norm2.bias", hd, 0));
    h          = layer_linear(g, b, p, i, "mlp.fc1", h, im, hd);
    h          = c->gelu_erf ? imgd_op_gelu(g, h) : imgd_op_quick_gelu(g, h);
    h          = layer_linear(g, b, p, i, "mlp.fc2", h, hd, im);
    return imgd_op_add(g, x, h);
}

static imgd_tensor *final_ln(imgd_graph *g, imgd_wbind *b, const char *p,
                             const imgd_clip_text_cfg *c, imgd_tensor *x) {
    int64_t hd = c->hidden;
    return imgd_op_layer_norm(g, x, c->eps,
                              imgd_wbind_getf(b, g, 1, &hd, TM ".final_layer_norm.weight", p),
                              imgd_wbind_getf(b, g, 1, &hd, TM ".final_layer_norm.bias", p));
}

/* Checks the arguments of a build; records the error on g. */
static bool build_args_ok(imgd_graph *g, const char *prefix, const imgd_clip_text_cfg *c,
                          int32_t batch, const imgd_tensor *x, const imgd_clip_text_req *r,
                          int32_t *layer) {
    if (!prefix || !c || !r) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_clip_text_build: NULL argument");
        return false;
    }
    if (c->layers < 1 || c->layers > IMGD_CLIP_LAYERS_MAX || c->heads < 1 ||
        c->hidden % c->heads != 0) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                              "%s: bad config (layers %d, hidden %d, heads %d); use "
                              "imgd_clip_text_cfg_init",
                              prefix, c->layers, c->hidden, c->heads);
        return false;
    }
    if (x->n_dims != 3 || x->shape[0] != batch || x->shape[2] != c->hidden || x->shape[1] < 1 ||
        x->shape[1] > c->positions) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                              "%s: embeddings must be [%d, 1..%d, %d], got %d dims [%lld, %lld, "
                              "%lld]",
                              prefix, batch, c->positions, c->hidden, x->n_dims,
                              (long long)x->shape[0], (long long)x->shape[1],
                              (long long)x->shape[2]);
        return false;
    }
    *layer = r->layer < 0 ? c->layers + 1 + r->layer : r->layer;
    if (r->hidden && (*layer < 0 || *layer > c->layers)) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                              "%s: hidden state %d requested, the encoder has %d layers "
                              "(valid: 0..%d or -1..-%d)",
                              prefix, r->layer, c->layers, c->layers, c->layers + 1);
        return false;
    }
    if (r->text_embeds && c->projection_dim < 1) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                              "%s: text_embeds requested but the model has no text_projection",
                              prefix);
        return false;
    }
    return true;
}

/* The pooled row of lhs [B, L, hidden] picked by a one-hot input [B, 1, L]. */
static imgd_tensor *pool(imgd_graph *g, imgd_tensor *lhs, imgd_clip_text_out *o) {
    int64_t B = lhs->shape[0], L = lhs->shape[1], hd = lhs->shape[2];
    o->pool_select =
        imgd_graph_input(g, "clip.pool_select", IMGD_DTYPE_F32, 3, (int64_t[]){B, 1, L});
    imgd_tensor *row = imgd_op_matmul(g, o->pool_select, lhs, false, false, NULL);
    return imgd_op_reshape(g, row, 2, (int64_t[]){B, hd});
}

imgd_status imgd_clip_text_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                 const imgd_clip_text_cfg *cfg, int32_t batch,
                                 imgd_tensor *embeds_in, const imgd_clip_text_req *req,
                                 imgd_clip_text_out *out) {
    if (!g) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_text_build: NULL graph");
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    if (!embeds_in || !out)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_clip_text_build: NULL argument");
    int32_t layer = 0;
    if (!build_args_ok(g, prefix, cfg, batch, embeds_in, req, &layer)) return imgd_graph_status(g);

    bool    need_last = req->last_hidden_state || req->pooled || req->text_embeds;
    int32_t depth     = need_last || req->all_hidden ? cfg->layers : 0;
    if (req->hidden && layer > depth) depth = layer;

    imgd_clip_text_out o    = {0};
    imgd_tensor       *mask = causal_mask(g, b, embeds_in->shape[1]);
    imgd_tensor       *x    = embeds_in;
    if (req->all_hidden) o.states[0] = x;
    if (req->hidden && layer == 0) o.hidden = x;
    for (int32_t i = 0; i < depth; i++) {
        x = encoder_layer(g, b, prefix, cfg, i, x, mask);
        if (req->all_hidden) o.states[i + 1] = x;
        if (req->hidden && layer == i + 1) o.hidden = x;
    }
    if (req->hidden && req->hidden_final_ln) o.hidden = final_ln(g, b, prefix, cfg, o.hidden);
    imgd_tensor *lhs = need_last ? final_ln(g, b, prefix, cfg, x) : NULL;
    if (req->last_hidden_state) o.last_hidden_state = lhs;
    if (lhs && (req->pooled || req->text_embeds)) {
        imgd_tensor *pooled = pool(g, lhs, &o);
        if (req->pooled) o.pooled = pooled;
        if (req->text_embeds) {
            int64_t      ps[2] = {cfg->projection_dim, cfg->hidden};
            imgd_tensor *w     = imgd_wbind_getf(b, g, 2, ps, "%s.text_projection.weight", prefix);
            o.text_embeds      = imgd_op_linear(g, pooled, w, NULL);
        }
    }
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    *out = o;
    return IMGD_OK;
}

/* ---- host helpers ------------------------------------------------------------------------ */

/* Checks that a canonical table exists with shape [rows, width]. */
static imgd_status table_ok(const imgd_wbind *b, const char *name, int64_t rows, int64_t width) {
    int64_t s[IMGD_MAX_DIMS];
    int32_t n = imgd_wbind_shape(b, name, s);
    if (n != 2 || s[0] != rows || s[1] != width)
        return imgd_fail(IMGD_E_FORMAT, "%s: '%s' must be [%lld, %lld] for the given config (%s)",
                         imgd_wbind_weights(b)->path, name, (long long)rows, (long long)width,
                         n < 0 ? "missing" : "other shape");
    return IMGD_OK;
}

imgd_status imgd_clip_text_embed(const imgd_wbind *b, const char *prefix,
                                 const imgd_clip_text_cfg *cfg, const int32_t *ids, int32_t batch,
                                 int32_t len, const float *extra, int32_t n_extra, float *out) {
    if (!b || !prefix || !cfg || !ids || !out || (n_extra > 0 && !extra))
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_clip_text_embed: NULL argument");
    if (batch < 1 || len < 1 || len > cfg->positions || n_extra < 0 || cfg->hidden < 1)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "%s: %d sequences of %d tokens (1..%d allowed), %d extra rows", prefix,
                         batch, len, cfg->positions, n_extra);
    char tok[256], pos[256];
    if (!imgd_fmt(tok, sizeof tok, TM ".embeddings.token_embedding.weight", prefix) ||
        !imgd_fmt(pos, sizeof pos, TM ".embeddings.position_embedding.weight", prefix))
        return imgd_fail(IMGD_E_INVALID_ARG, "text encoder prefix too long: %.64s", prefix);
    imgd_status st = table_ok(b, tok, cfg->vocab, cfg->hidden);
    if (st == IMGD_OK) st = table_ok(b, pos, cfg->positions, cfg->hidden);
    if (st != IMGD_OK) return st;

    size_t   hd   = (size_t)cfg->hidden;
    float   *prow = NULL;
    int32_t *pid  = imgd_malloc((size_t)len * sizeof *pid);
    if (pid) prow = imgd_malloc((size_t)len * hd * sizeof *prow);
    if (!pid || !prow) {
        st = imgd_fail(IMGD_E_NOMEM, "out of memory");
        goto done;
    }
    for (int32_t i = 0; i < len; i++) pid[i] = i;
    st = imgd_wbind_gather_rows_f32(b, pos, pid, (size_t)len, prow);
    for (int32_t s = 0; st == IMGD_OK && s < batch; s++) {
        const int32_t *row = ids + (size_t)s * (size_t)len;
        float         *o   = out + (size_t)s * (size_t)len * hd;
        int32_t        i   = 0;
        while (st == IMGD_OK && i < len) {
            int32_t id = row[i];
            if (id < 0 || id >= cfg->vocab + n_extra) {
                st = imgd_fail(IMGD_E_INVALID_ARG,
                               "%s: token id %d at sequence %d position %d is outside the "
                               "vocabulary (%d tokens + %d extra embedding rows)",
                               prefix, id, s, i, cfg->vocab, n_extra);
            } else if (id >= cfg->vocab) {
                memcpy(o + (size_t)i * hd, extra + (size_t)(id - cfg->vocab) * hd, hd * sizeof *o);
                i++;
            } else {
                int32_t j = i + 1; /* a run of in-vocabulary ids: one gather */
                while (j < len && row[j] >= 0 && row[j] < cfg->vocab) j++;
                st = imgd_wbind_gather_rows_f32(b, tok, row + i, (size_t)(j - i),
                                                o + (size_t)i * hd);
                i  = j;
            }
        }
        for (size_t k = 0; st == IMGD_OK && k < (size_t)len * hd; k++) o[k] += prow[k];
    }
done:
    imgd_free(prow);
    imgd_free(pid);
    return st;
}

void imgd_clip_text_pool_select(const int32_t *ids, int32_t batch, int32_t len, int32_t eos_id,
                                float *sel) {
    if (!ids || !sel || batch < 1 || len < 1) return;
    for (int32_t s = 0; s < batch; s++) {
        const int32_t *row = ids + (size_t)s * (size_t)len;
        float         *o   = sel + (size_t)s * (size_t)len;
        int32_t        at  = 0;
        if (eos_id < 0) {
            for (int32_t i = 1; i < len; i++)
                if (row[i] > row[at]) at = i;
        } else {
            for (int32_t i = len - 1; i >= 0; i--)
                if (row[i] == eos_id) at = i;
        }
        for (int32_t i = 0; i < len; i++) o[i] = i == at ? 1.0f : 0.0f;
    }
}
