/* T5 encoder: transformers' T5EncoderModel (FLUX.1's and SD3's "text_encoder_2/3", the
 * separate t5xxl_fp16 / fp8 files) on the tensor engine.
 *
 *   host:  ids [B, L] --imgd_t5_embed--> token embeddings [B, L, d_model] f32 (rows gathered
 *          from the mapped shared.weight / encoder.embed_tokens.weight, any float dtype)
 *   graph: embeddings -> N blocks of
 *              x += o(attention(q, k, v of RMSNorm(x); no 1/sqrt(d) scaling,
 *                               + relative position bias))
 *              x += wo(gelu_tanh(wi_0 h) * wi_1 h), h = RMSNorm(x)   (v1.1 gated-gelu;
 *                   original T5: wo(relu(wi h)))
 *          -> final RMSNorm = last_hidden_state
 * Weights bind in any float dtype the binder serves (f32, f16, bf16; fp8 e4m3/e5m2 are
 * upcast to f16 on load); ComfyUI's scaled fp8 files (<module>.scale_weight next to each
 * linear) have their scales applied to the linear outputs.
 * RMSNorm is T5LayerNorm (no mean subtraction, no bias). The position bias [1, heads, L, L]
 * comes from layer 0's relative_attention_bias table (bidirectional buckets) and is shared
 * by every layer; it is computed on the host once per sequence length and held by the
 * binder as a constant. No attention mask is applied (FLUX attends to the pad tokens).
 *
 * Parameter names follow transformers' module tree (STYLE M6) under the canonical
 * component prefix: <prefix>.shared.weight, <prefix>.encoder.block.N.layer.0.SelfAttention.
 * {q,k,v,o}.weight, ...layer.0.layer_norm.weight, ...layer.1.DenseReluDense.{wi_0,wi_1,wo}.
 * weight, ...layer.1.layer_norm.weight, <prefix>.encoder.final_layer_norm.weight.
 *
 * Usage (FLUX conditioning):
 *
 *     imgd_t5_cfg cfg;
 *     imgd_t5_cfg_init(&cfg, b, te);            // te: the detected T5 text encoder
 *     imgd_tensor *emb = imgd_graph_input(g, "t5.embeds", IMGD_DTYPE_F32, 3,
 *                                         (int64_t[]){B, L, cfg.d_model});
 *     imgd_t5_out out;
 *     imgd_t5_build(g, b, te->component, &cfg, emb, false, &out);
 *     imgd_graph_output(g, out.last_hidden_state);
 *     imgd_graph_plan(g, be, NULL); imgd_graph_alloc(g, NULL, 0);
 *     imgd_t5_embed(b, te->component, &cfg, ids, B, L, host_emb);
 *     imgd_tensor_bind(emb, host_emb); imgd_graph_compute(g);
 *
 * Thread-safety: builders touch only the graph and the binder given (one thread at a time);
 * imgd_t5_embed only reads the binder and is safe from any thread while no one binds. */
#ifndef IMGD_MODELS_T5_H
#define IMGD_MODELS_T5_H

#include "models/wbind.h"
#include "tensor/tensor.h"

#define IMGD_T5_LAYERS_MAX 64 /* encoder blocks a config may have */

/* Architecture. Build from the weights with imgd_t5_cfg_init. */
typedef struct imgd_t5_cfg {
    int32_t layers;       /* encoder blocks, 1..IMGD_T5_LAYERS_MAX */
    int32_t d_model;      /* width */
    int32_t heads;        /* attention heads (columns of relative_attention_bias) */
    int32_t d_kv;         /* head width (q rows / heads; 64 for every released T5) */
    int32_t d_ff;         /* feed-forward width */
    int32_t vocab;        /* rows of the token embedding */
    int32_t num_buckets;  /* relative position buckets (rows of relative_attention_bias) */
    int32_t max_distance; /* relative_attention_max_distance (128; not in the weights) */
    float   eps;          /* RMSNorm eps (1e-6) */
    bool    gated;        /* gated-gelu FF (wi_0, wi_1; v1.1, FLUX, SD3); false: relu (wi) */
} imgd_t5_cfg;

/* Fills cfg from the tensor shapes under prefix (the canonical component of a detected T5
 * text encoder: te->component). max_distance is 128 and eps 1e-6 (every T5 v1.1 config;
 * change them in cfg afterwards for an unusual config.json). Returns IMGD_OK or
 * IMGD_E_FORMAT (a tensor missing or of an inconsistent shape: names it and what was
 * expected); cfg is written only on success. */
imgd_status imgd_t5_cfg_init(imgd_t5_cfg *cfg, const imgd_wbind *b, const char *prefix);

/* Tensors a build produced (all f32 in the caller's graph; none marked as outputs). */
typedef struct imgd_t5_out {
    imgd_tensor *last_hidden_state;              /* [B, L, d_model] after the final norm */
    imgd_tensor *states[IMGD_T5_LAYERS_MAX + 1]; /* all_hidden only: hidden_states[0..layers]
                                                    (0 = embeddings; before the final norm) */
} imgd_t5_out;

/* Appends the encoder to g. embeds_in is the [B, L, d_model] f32 tensor of token
 * embeddings (bind imgd_t5_embed's output), L >= 1. The position bias for L is a
 * binder-owned constant, so b must outlive g. all_hidden fills out->states.
 * out: written on IMGD_OK only. Returns IMGD_OK or the graph's sticky error:
 * IMGD_E_INVALID_ARG (bad cfg or embeddings shape: the message names the field),
 * IMGD_E_FORMAT (a weight missing or of the wrong shape: names tensor, file and both
 * shapes), IMGD_E_UNSUPPORTED, IMGD_E_NOMEM. On failure g must not be planned. */
imgd_status imgd_t5_build(imgd_graph *g, imgd_wbind *b, const char *prefix, const imgd_t5_cfg *cfg,
                          imgd_tensor *embeds_in, bool all_hidden, imgd_t5_out *out);

/* Host embedding lookup: out[b, i, :] = embedding[ids[b * len + i]] (f32) for batch
 * sequences of len ids. out holds batch * len * d_model floats. Returns IMGD_OK;
 * IMGD_E_INVALID_ARG (an id outside [0, vocab): names sequence, position and id; bad
 * sizes); IMGD_E_FORMAT (no embedding table); IMGD_E_UNSUPPORTED (a table that cannot be
 * read row by row). out is undefined on failure. */
imgd_status imgd_t5_embed(const imgd_wbind *b, const char *prefix, const imgd_t5_cfg *cfg,
                          const int32_t *ids, int32_t batch, int32_t len, float *out);

/* ---- runner: a planned encoder graph kept for reuse ------------------------------------- */

/* What a pipeline calls: ids in, last_hidden_state out. The graph for a (batch, len) is
 * built and planned on first use and replayed while the shape stays the same (a new shape
 * rebuilds it). Borrows b, prefix and be: they must outlive the runner. */
typedef struct imgd_t5_runner imgd_t5_runner;

/* cfg is copied. Returns IMGD_OK, IMGD_E_INVALID_ARG (NULL argument), IMGD_E_NOMEM; *out
 * is written only on success. */
imgd_status imgd_t5_runner_new(imgd_wbind *b, const char *prefix, const imgd_t5_cfg *cfg,
                               imgd_backend *be, imgd_t5_runner **out);

/* Encodes batch sequences of len ids (row-major [batch, len]) into out ([batch, len,
 * d_model] f32, caller-allocated). Returns IMGD_OK or the status of imgd_t5_embed,
 * imgd_t5_build, planning or computing (the message says which step failed); out is
 * undefined on failure and the runner stays usable. Thread-safety: one call at a time per
 * runner (it owns one graph). */
imgd_status imgd_t5_runner_encode(imgd_t5_runner *r, const int32_t *ids, int32_t batch, int32_t len,
                                  float *out);

/* Releases the runner and its graph. NULL is a no-op. */
void imgd_t5_runner_free(imgd_t5_runner *r);

/* transformers' T5Attention._relative_position_bucket, bidirectional: the bucket of
 * rel = key position - query position. Exposed for tests. */
int32_t imgd_t5_bucket(int32_t rel, int32_t num_buckets, int32_t max_distance);

#endif
