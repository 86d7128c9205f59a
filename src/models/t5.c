/* T5 encoder on the tensor engine (see t5.h). Follows transformers' modeling_t5.py:
 * T5LayerNorm, T5Attention (has_relative_attention_bias in block 0 only, no scaling),
 * T5DenseGatedActDense with gelu_new, T5Stack's final_layer_norm. */
#include "models/t5.h"

#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "tensor/ops.h"

#define ENC "%s.encoder.block.%d.layer."

/* ---- configuration ----------------------------------------------------------------------- */

/* Shape of a canonical tensor built from fmt/prefix/i; n_dims or -1. */
static int32_t shape_of(const imgd_wbind *b, int64_t *s, const char *prefix, int32_t i,
                        const char *what) {
    char name[512];
    if (!imgd_fmt(name, sizeof name, ENC "%s", prefix, i, what)) return -1;
    return imgd_wbind_shape(b, name, s);
}

/* The token embedding's canonical name (shared.weight, or encoder.embed_tokens.weight in
 * files that keep only the encoder). */
static bool embed_name(const imgd_wbind *b, const char *prefix, char *name, size_t cap) {
    if (imgd_fmt(name, cap, "%s.shared.weight", prefix) && imgd_wbind_has(b, name)) return true;
    return imgd_fmt(name, cap, "%s.encoder.embed_tokens.weight", prefix) && imgd_wbind_has(b, name);
}

imgd_status imgd_t5_cfg_init(imgd_t5_cfg *cfg, const imgd_wbind *b, const char *prefix) {
    if (!cfg || !b || !prefix)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_cfg_init: NULL argument");
    const char *path = imgd_wbind_weights(b)->path;
    char        emb[512];
    int64_t     s[IMGD_MAX_DIMS];
    imgd_t5_cfg c = {0};
    if (!embed_name(b, prefix, emb, sizeof emb) || imgd_wbind_shape(b, emb, s) != 2)
        return imgd_fail(
            IMGD_E_FORMAT,
            "%s: no T5 token embedding '%s.shared.weight' (or "
            "'%s.encoder.embed_tokens.weight'): not a T5 encoder or an incomplete file",
            path, prefix, prefix);
    c.vocab   = (int32_t)s[0];
    c.d_model = (int32_t)s[1];
    if (shape_of(b, s, prefix, 0, "0.SelfAttention.relative_attention_bias.weight") != 2)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: '%s.encoder.block.0.layer.0.SelfAttention."
                         "relative_attention_bias.weight' is missing or not 2-D",
                         path, prefix);
    c.num_buckets = (int32_t)s[0];
    c.heads       = (int32_t)s[1];
    if (shape_of(b, s, prefix, 0, "0.SelfAttention.q.weight") != 2 || s[1] != c.d_model ||
        c.heads < 1 || s[0] % c.heads != 0)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: '%s.encoder.block.0.layer.0.SelfAttention.q.weight' "
                         "must be [heads * d_kv, %d] with %d heads",
                         path, prefix, c.d_model, c.heads);
    c.d_kv  = (int32_t)(s[0] / c.heads);
    c.gated = shape_of(b, s, prefix, 0, "1.DenseReluDense.wi_0.weight") == 2;
    if (!c.gated && shape_of(b, s, prefix, 0, "1.DenseReluDense.wi.weight") != 2)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: '%s.encoder.block.0.layer.1.DenseReluDense.wi_0."
                         "weight' (gated) or '...wi.weight' is missing",
                         path, prefix);
    c.d_ff = (int32_t)s[0];
    while (c.layers <= IMGD_T5_LAYERS_MAX &&
           shape_of(b, s, prefix, c.layers, "0.SelfAttention.q.weight") == 2)
        c.layers++;
    if (c.layers > IMGD_T5_LAYERS_MAX)
        return imgd_fail(IMGD_E_FORMAT, "%s: more than %d T5 blocks", path, IMGD_T5_LAYERS_MAX);
    c.max_distance = 128;
    c.eps          = 1e-6f;
    if (c.num_buckets < 2 || c.d_model < 1 || c.d_ff < 1 || c.d_kv < 1)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: T5 sizes out of range (d_model %d, d_ff %d, d_kv %d, "
                         "%d position buckets)",
                         path, c.d_model, c.d_ff, c.d_kv, c.num_buckets);
    *cfg = c;
    return IMGD_OK;
}

/* ---- relative position bias -------------------------------------------------------------- */

int32_t imgd_t5_bucket(int32_t rel, int32_t num_buckets, int32_t max_distance) {
    int32_t nb = num_buckets / 2, bucket = rel > 0 ? nb : 0;
    int32_t n = rel < 0 ? -rel : rel, max_exact = nb / 2;
    if (n < max_exact) return bucket + n;
    /* in f32 like torch: log(n / max_exact) / log(max_distance / max_exact) * (nb - max_exact) */
    float l = logf((float)n / (float)max_exact) /
              (float)log((double)max_distance / (double)max_exact) * (float)(nb - max_exact);
    int32_t large = max_exact + (int32_t)l;
    return bucket + (large < nb - 1 ? large : nb - 1);
}

/* The [1, heads, L, L] bias: bias[h, i, j] = table[bucket(j - i), h]. Binder-owned. */
static imgd_tensor *position_bias(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                  const imgd_t5_cfg *c, int64_t L) {
    char key[600], name[512];
    (void)imgd_fmt(key, sizeof key, "t5.position_bias.%s.%lld", prefix, (long long)L);
    (void)imgd_fmt(name, sizeof name, ENC "0.SelfAttention.relative_attention_bias.weight", prefix,
                   0);
    size_t nt = (size_t)c->num_buckets * (size_t)c->heads, nb = 0;
    if (!imgd_size_mul((size_t)L * (size_t)L, (size_t)c->heads, &nb)) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "T5: sequence length %lld too large",
                              (long long)L);
        return NULL;
    }
    float *table = imgd_malloc(nt * sizeof *table);
    float *bias  = table ? imgd_malloc(nb * sizeof *bias) : NULL;
    if (!bias) {
        imgd_free(table);
        (void)imgd_graph_fail(g, IMGD_E_NOMEM, "T5 position bias: out of memory");
        return NULL;
    }
    imgd_tensor *t  = NULL;
    imgd_status  st = imgd_wbind_read_f32(b, name, table, nt);
    if (st != IMGD_OK) {
        (void)imgd_graph_fail(g, st, "%s", imgd_last_error());
    } else {
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < L; j++) {
                int32_t k = imgd_t5_bucket((int32_t)(j - i), c->num_buckets, c->max_distance);
                for (int32_t h = 0; h < c->heads; h++)
                    bias[((size_t)h * (size_t)L + (size_t)i) * (size_t)L + (size_t)j] =
                        table[(size_t)k * (size_t)c->heads + (size_t)h];
            }
        t = imgd_wbind_const_f32(b, g, key, 4, (int64_t[]){1, c->heads, L, L}, bias);
    }
    imgd_free(bias);
    imgd_free(table);
    return t;
}

/* ---- graph ------------------------------------------------------------------------------- */

static imgd_tensor *lw(imgd_wbind *b, imgd_graph *g, const char *prefix, int32_t i,
                       const char *what, int64_t d0, int64_t d1) {
    int64_t shape[2] = {d0, d1};
    return imgd_wbind_getf(b, g, d1 ? 2 : 1, shape, ENC "%s", prefix, i, what);
}

/* ComfyUI's "scaled fp8" files (t5xxl_fp8_e4m3fn_scaled) store W / s in fp8 with a scalar
 * <module>.scale_weight = s: the output of the bias-free module is multiplied back by s.
 * (Their scale_input tensors only matter for fp8 matmuls; activations stay f32 here.) */
static imgd_tensor *weight_scale(imgd_graph *g, imgd_wbind *b, const char *p, int32_t i,
                                 const char *what, imgd_tensor *y) {
    char   name[512];
    size_t wl = strlen(what) >= 6 ? strlen(what) - 6 : 0; /* without "weight" */
    if (!y || !imgd_fmt(name, sizeof name, ENC "%.*sscale_weight", p, i, (int)wl, what) ||
        !imgd_wbind_has(b, name))
        return y;
    float       sc = 1.0f;
    imgd_status st = imgd_wbind_read_f32(b, name, &sc, 1);
    if (st == IMGD_OK && !isfinite(sc))
        st = imgd_fail(IMGD_E_FORMAT, "%s: '%s' is not finite", imgd_wbind_weights(b)->path, name);
    if (st != IMGD_OK) {
        (void)imgd_graph_fail(g, st, "%s", imgd_last_error());
        return NULL;
    }
    return sc == 1.0f ? y : imgd_op_scale(g, y, sc, 0.0f);
}

/* A bias-free linear of block i (T5 has no biases), plus a run-time adapter's term. */
static imgd_tensor *linear(imgd_graph *g, imgd_wbind *b, const char *p, int32_t i, const char *what,
                           imgd_tensor *x, int64_t out, int64_t in) {
    imgd_tensor *y = imgd_op_linear(g, x, lw(b, g, p, i, what, out, in), NULL);
    y              = weight_scale(g, b, p, i, what, y);
    return imgd_wbind_adapt(b, g, IMGD_SITE_LINEAR, 0, 0, x, y, ENC "%s", p, (int)i, what);
}

/* One T5Block (encoder): self-attention sublayer, then the feed-forward sublayer. */
static imgd_tensor *block(imgd_graph *g, imgd_wbind *b, const char *p, const imgd_t5_cfg *c,
                          int32_t i, imgd_tensor *x, imgd_tensor *bias) {
    int64_t      B = x ? x->shape[0] : 0, L = x ? x->shape[1] : 0, d = c->d_model;
    int64_t      inner = (int64_t)c->heads * c->d_kv, ff = c->d_ff;
    imgd_tensor *h = imgd_op_rms_norm(g, x, c->eps, lw(b, g, p, i, "0.layer_norm.weight", d, 0));
    int64_t      hs[4] = {B, L, c->heads, c->d_kv};
    imgd_tensor *q =
        imgd_op_reshape(g, linear(g, b, p, i, "0.SelfAttention.q.weight", h, inner, d), 4, hs);
    imgd_tensor *k =
        imgd_op_reshape(g, linear(g, b, p, i, "0.SelfAttention.k.weight", h, inner, d), 4, hs);
    imgd_tensor *v =
        imgd_op_reshape(g, linear(g, b, p, i, "0.SelfAttention.v.weight", h, inner, d), 4, hs);
    h = imgd_op_attention(g, q, k, v, bias, 1.0f); /* T5: no 1/sqrt(d_kv) */
    h = imgd_op_reshape(g, h, 3, (int64_t[]){B, L, inner});
    x = imgd_op_add(g, x, linear(g, b, p, i, "0.SelfAttention.o.weight", h, d, inner));

    h = imgd_op_rms_norm(g, x, c->eps, lw(b, g, p, i, "1.layer_norm.weight", d, 0));
    if (c->gated) {
        imgd_tensor *a =
            imgd_op_gelu_tanh(g, linear(g, b, p, i, "1.DenseReluDense.wi_0.weight", h, ff, d));
        h = imgd_op_mul(g, a, linear(g, b, p, i, "1.DenseReluDense.wi_1.weight", h, ff, d));
    } else {
        h = imgd_op_clamp(g, linear(g, b, p, i, "1.DenseReluDense.wi.weight", h, ff, d), 0.0f,
                          INFINITY);
    }
    return imgd_op_add(g, x, linear(g, b, p, i, "1.DenseReluDense.wo.weight", h, d, ff));
}

imgd_status imgd_t5_build(imgd_graph *g, imgd_wbind *b, const char *prefix, const imgd_t5_cfg *cfg,
                          imgd_tensor *embeds_in, bool all_hidden, imgd_t5_out *out) {
    if (!g) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_build: NULL graph");
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    if (!b || !prefix || !cfg || !embeds_in || !out)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_t5_build: NULL argument");
    if (cfg->layers < 1 || cfg->layers > IMGD_T5_LAYERS_MAX || cfg->heads < 1 || cfg->d_kv < 1 ||
        cfg->num_buckets < 2 || cfg->max_distance < 1)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "%s: bad T5 config (layers %d, heads %d, "
                               "d_kv %d, buckets %d); use imgd_t5_cfg_init",
                               prefix, cfg->layers, cfg->heads, cfg->d_kv, cfg->num_buckets);
    const imgd_tensor *e = embeds_in;
    if (e->n_dims != 3 || e->shape[1] < 1 || e->shape[2] != cfg->d_model ||
        e->dtype != IMGD_DTYPE_F32)
        return imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                               "%s: T5 embeddings must be f32 [B, L, %d], "
                               "got %d dims (last %lld)",
                               prefix, cfg->d_model, e->n_dims,
                               (long long)e->shape[e->n_dims > 0 ? e->n_dims - 1 : 0]);
    imgd_t5_out  o    = {0};
    imgd_tensor *bias = position_bias(g, b, prefix, cfg, e->shape[1]);
    imgd_tensor *x    = embeds_in;
    if (all_hidden) o.states[0] = x;
    for (int32_t i = 0; i < cfg->layers; i++) {
        x = block(g, b, prefix, cfg, i, x, bias);
        if (all_hidden) o.states[i + 1] = x;
    }
    int64_t d           = cfg->d_model;
    o.last_hidden_state = imgd_op_rms_norm(
        g, x, cfg->eps, imgd_wbind_getf(b, g, 1, &d, "%s.encoder.final_layer_norm.weight", prefix));
    if (imgd_graph_status(g) != IMGD_OK) return imgd_graph_status(g);
    *out = o;
    return IMGD_OK;
}

/* ---- host embedding ---------------------------------------------------------------------- */

imgd_status imgd_t5_embed(const imgd_wbind *b, const char *prefix, const imgd_t5_cfg *cfg,
                          const int32_t *ids, int32_t batch, int32_t len, float *out) {
    if (!b || !prefix || !cfg || !ids || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_embed: NULL argument");
    if (batch < 1 || len < 1)
        return imgd_fail(IMGD_E_INVALID_ARG, "%s: %d sequences of %d tokens", prefix, batch, len);
    char name[512];
    if (!embed_name(b, prefix, name, sizeof name))
        return imgd_fail(IMGD_E_FORMAT, "%s: no T5 token embedding under '%s'",
                         imgd_wbind_weights(b)->path, prefix);
    size_t n = (size_t)batch * (size_t)len;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= cfg->vocab)
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "%s: token id %d at sequence %zu position %zu is "
                             "outside the %d-row embedding",
                             prefix, ids[i], i / (size_t)len, i % (size_t)len, cfg->vocab);
    return imgd_wbind_gather_rows_f32(b, name, ids, n, out);
}

/* ---- runner ------------------------------------------------------------------------------ */

struct imgd_t5_runner {
    imgd_wbind   *b;
    const char   *prefix;
    imgd_t5_cfg   cfg;
    imgd_backend *be;
    imgd_graph   *g;
    imgd_tensor  *in, *out;
    int32_t       batch, len;
};

imgd_status imgd_t5_runner_new(imgd_wbind *b, const char *prefix, const imgd_t5_cfg *cfg,
                               imgd_backend *be, imgd_t5_runner **out) {
    if (!b || !prefix || !cfg || !be || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_runner_new: NULL argument");
    imgd_t5_runner *r = imgd_calloc(1, sizeof *r);
    if (!r) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    r->b      = b;
    r->prefix = prefix;
    r->cfg    = *cfg;
    r->be     = be;
    *out      = r;
    return IMGD_OK;
}

/* (Re)builds and plans the graph for batch x len. */
static imgd_status runner_graph(imgd_t5_runner *r, int32_t batch, int32_t len) {
    if (r->g && r->batch == batch && r->len == len) return IMGD_OK;
    imgd_graph_free(r->g);
    r->g           = NULL;
    imgd_status st = imgd_graph_new(NULL, &r->g);
    if (st != IMGD_OK) return st;
    r->in = imgd_graph_input(r->g, "t5.embeds", IMGD_DTYPE_F32, 3,
                             (int64_t[]){batch, len, r->cfg.d_model});
    imgd_t5_out o;
    st = imgd_t5_build(r->g, r->b, r->prefix, &r->cfg, r->in, false, &o);
    if (st == IMGD_OK) {
        r->out = o.last_hidden_state;
        imgd_graph_output(r->g, r->out);
        st = imgd_graph_plan(r->g, r->be, NULL);
    }
    if (st == IMGD_OK) st = imgd_graph_alloc(r->g, NULL, 0);
    if (st != IMGD_OK) {
        imgd_graph_free(r->g);
        r->g = NULL;
        return imgd_fail_prefix(st, "T5 encoder graph");
    }
    r->batch = batch;
    r->len   = len;
    return IMGD_OK;
}

imgd_status imgd_t5_runner_encode(imgd_t5_runner *r, const int32_t *ids, int32_t batch, int32_t len,
                                  float *out) {
    if (!r || !ids || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_t5_runner_encode: NULL argument");
    if (batch < 1 || len < 1 || (int64_t)batch * len > (1 << 24))
        return imgd_fail(IMGD_E_INVALID_ARG, "T5: %d sequences of %d tokens (1..2^24 tokens)",
                         batch, len);
    size_t n   = (size_t)batch * (size_t)len * (size_t)r->cfg.d_model;
    float *emb = imgd_malloc(n * sizeof *emb);
    if (!emb) return imgd_fail(IMGD_E_NOMEM, "T5: out of memory for %zu embeddings", n);
    imgd_status st = imgd_t5_embed(r->b, r->prefix, &r->cfg, ids, batch, len, emb);
    if (st == IMGD_OK) st = runner_graph(r, batch, len);
    if (st == IMGD_OK) st = imgd_tensor_bind(r->in, emb);
    if (st == IMGD_OK) st = imgd_graph_compute(r->g);
    if (st == IMGD_OK) st = imgd_graph_read_f32(r->g, r->out, out, n);
    imgd_free(emb);
    return st;
}

void imgd_t5_runner_free(imgd_t5_runner *r) {
    if (!r) return;
    imgd_graph_free(r->g);
    imgd_free(r);
}
