/* CLIP text encoder: transformers' CLIPTextModel and CLIPTextModelWithProjection (SD 1.x
 * "text_encoder", SDXL "text_encoder" and "text_encoder_2", SD 2.x / open_clip layouts
 * through the key map) on the tensor engine.
 *
 * The forward pass is split where the engine has no op:
 *
 *   host:  ids [B, L] --imgd_clip_text_embed--> embeddings [B, L, hidden] f32
 *          (token rows gathered from the mapped file + position rows; ids at or past the
 *          vocabulary come from a caller table: textual-inversion vectors)
 *   graph: embeddings -> N pre-LN transformer layers (causal self-attention, quick_gelu or
 *          erf-gelu MLP) -> final LayerNorm -> outputs chosen by an imgd_clip_text_req
 *   host:  ids --imgd_clip_text_pool_select--> a one-hot [B, 1, L] row selector for the
 *          pooled output (the graph picks the row with a matmul, so a planned graph is
 *          replayed with new prompts without rebuilding)
 *
 * No padding mask is used: like transformers, pad tokens are attended to (only the causal
 * mask applies), so outputs depend on the pad id the tokenizer used.
 *
 * Usage (SD 1.x conditioning, clip skip 1):
 *
 *     imgd_clip_text_cfg cfg;
 *     imgd_clip_text_cfg_init(&cfg, &mi->te[0], 0);
 *     imgd_tensor *emb = imgd_graph_input(g, "embeds", IMGD_DTYPE_F32, 3,
 *                                         (int64_t[]){B, 77, cfg.hidden});
 *     imgd_clip_text_req req = imgd_clip_text_req_default();   // last_hidden_state
 *     imgd_clip_text_out out;
 *     imgd_clip_text_build(g, b, "text_encoder", &cfg, B, emb, &req, &out);
 *     imgd_graph_output(g, out.last_hidden_state);
 *     imgd_graph_plan(g, be, NULL); imgd_graph_alloc(g, NULL, 0);
 *     imgd_clip_text_embed(b, "text_encoder", &cfg, ids, B, 77, NULL, 0, host_emb);
 *     imgd_tensor_bind(emb, host_emb); imgd_graph_compute(g);
 *
 * Thread-safety: builders touch only the graph and the binder given (one thread at a time);
 * the host helpers only read the binder and are safe from any thread while no one binds. */
#ifndef IMGD_MODELS_CLIP_TEXT_H
#define IMGD_MODELS_CLIP_TEXT_H

#include "models/wbind.h"
#include "tensor/tensor.h"

#define IMGD_CLIP_LAYERS_MAX 64 /* transformer layers a config may have */

/* Architecture. Build from detection with imgd_clip_text_cfg_init. */
typedef struct imgd_clip_text_cfg {
    int32_t layers;         /* transformer layers, 1..IMGD_CLIP_LAYERS_MAX */
    int32_t hidden;         /* width; a multiple of heads */
    int32_t heads;          /* attention heads (NOT derivable from shapes) */
    int32_t intermediate;   /* MLP width */
    int32_t vocab;          /* rows of the token embedding */
    int32_t positions;      /* rows of the position embedding (max sequence length) */
    int32_t projection_dim; /* text_projection output width; 0 = no projection */
    float   eps;            /* LayerNorm eps (1e-5 for every CLIP) */
    bool    gelu_erf;       /* MLP activation: true = gelu (erf), false = quick_gelu */
} imgd_clip_text_cfg;

/* Fills cfg from a detected text-encoder config. heads > 0 overrides te->heads: detection
 * reads heads from config.json / the yaml when there is one and otherwise assumes 64-wide
 * heads (right for every released CLIP, wrong for narrow test models), so a caller that
 * knows better passes it here. Returns IMGD_OK or IMGD_E_INVALID_ARG (not a CLIP text
 * config, a size out of range, hidden not divisible by heads: the message says which and
 * what to set); cfg is written only on success. */
imgd_status imgd_clip_text_cfg_init(imgd_clip_text_cfg *cfg, const imgd_te_config *te,
                                    int32_t heads);

/* Which outputs a build produces. Layers past the deepest one needed are not built, so a
 * clip-skip request without last_hidden_state/pooled costs fewer layers. */
typedef struct imgd_clip_text_req {
    int32_t layer;          /* hidden_states index for out->hidden: 0 = embeddings, k = output of
                               layer k (1..layers); negative counts from the end as in Python:
                               -1 = last layer, -2 = penultimate (A1111 "clip skip 2", SDXL) */
    bool hidden;            /* produce out->hidden (hidden_states[layer]) */
    bool hidden_final_ln;   /* apply final_layer_norm to out->hidden (diffusers clip_skip for
                               SD 1.x; SDXL uses the raw penultimate state: false) */
    bool last_hidden_state; /* produce out->last_hidden_state (final LN of the last layer) */
    bool pooled;            /* produce out->pooled and the out->pool_select input */
    bool text_embeds;       /* produce out->text_embeds (needs projection_dim > 0) and the
                               out->pool_select input */
    bool all_hidden;        /* produce out->states[0..layers] (every hidden state) */
} imgd_clip_text_req;

/* last_hidden_state only. */
imgd_clip_text_req imgd_clip_text_req_default(void);

/* Tensors a build produced (NULL where not requested). All f32, in the caller's graph;
 * the builder marks none of them as outputs: call imgd_graph_output on those you read. */
typedef struct imgd_clip_text_out {
    imgd_tensor *last_hidden_state; /* [B, L, hidden] */
    imgd_tensor *hidden;            /* [B, L, hidden] hidden_states[req.layer] (+ final LN) */
    imgd_tensor *pooled;            /* [B, hidden] last_hidden_state at the selected row */
    imgd_tensor *text_embeds;       /* [B, projection_dim] pooled @ text_projection^T */
    imgd_tensor *pool_select;       /* INPUT [B, 1, L] f32 created by the build when pooled
                                       or text_embeds: bind imgd_clip_text_pool_select's
                                       output before each compute */
    imgd_tensor *states[IMGD_CLIP_LAYERS_MAX + 1]; /* all_hidden: hidden_states[0..layers]
                                                      (before the final LN) */
} imgd_clip_text_out;

/* Appends the encoder to g. Weights are bound through b under prefix ("text_encoder",
 * "text_encoder_2", ...: the canonical component name; it must have been detected as a
 * CLIP text model). embeds_in is the [batch, L, hidden] f32 tensor holding token +
 * position embeddings (a graph input the caller binds to imgd_clip_text_embed's output,
 * or any tensor of that shape), 1 <= L <= cfg->positions. The causal mask is a binder-owned
 * constant (imgd_wbind_const_f32), so b must outlive g.
 * out: written on IMGD_OK only. Returns IMGD_OK or the graph's sticky error:
 * IMGD_E_INVALID_ARG (bad cfg/req/shape: the message names the field), IMGD_E_FORMAT (a
 * weight missing or of the wrong shape: names tensor, file and both shapes),
 * IMGD_E_UNSUPPORTED, IMGD_E_NOMEM. On failure g carries the error and must not be
 * planned. */
imgd_status imgd_clip_text_build(imgd_graph *g, imgd_wbind *b, const char *prefix,
                                 const imgd_clip_text_cfg *cfg, int32_t batch,
                                 imgd_tensor *embeds_in, const imgd_clip_text_req *req,
                                 imgd_clip_text_out *out);

/* Host embedding lookup: out[b, i, :] = token_embedding[ids[b, i]] + position_embedding[i]
 * for batch sequences of len ids each (1 <= len <= positions), computed in f32 exactly as
 * transformers adds them. Ids in [vocab, vocab + n_extra) take row (id - vocab) of extra
 * ([n_extra, hidden] f32, borrowed; textual-inversion vectors appended after the
 * vocabulary); extra may be NULL when n_extra is 0. out holds batch * len * hidden floats.
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (an id out of range: names sequence, position and id;
 * bad sizes); IMGD_E_FORMAT (embedding tables missing or of the wrong shape);
 * IMGD_E_UNSUPPORTED (a table stored in a layout that cannot be read row by row). out is
 * undefined on failure. */
imgd_status imgd_clip_text_embed(const imgd_wbind *b, const char *prefix,
                                 const imgd_clip_text_cfg *cfg, const int32_t *ids, int32_t batch,
                                 int32_t len, const float *extra, int32_t n_extra, float *out);

/* Pooled-row selection for batch sequences of len ids: sel[b, 0, :] is one-hot at
 * - eos_id < 0: the first position holding the sequence's largest id (transformers' legacy
 *   argmax rule, which CLIP configs with eos_token_id 2 use: every SD and SDXL encoder;
 *   with the usual ids it is the first <|endoftext|>),
 * - eos_id >= 0: the first position holding eos_id, or position 0 when there is none
 *   (transformers' rule for other eos_token_id values).
 * sel holds batch * len floats. Cannot fail; NULL or empty input is a no-op. */
void imgd_clip_text_pool_select(const int32_t *ids, int32_t batch, int32_t len, int32_t eos_id,
                                float *sel);

#endif
