/* Text conditioning for the SD family: every text encoder of a model (SD 1.x/2.x: one CLIP;
 * SDXL: CLIP-L and OpenCLIP bigG side by side; the SDXL refiner: bigG alone), A1111 prompt
 * chunks and emphasis per encoder, clip skip, and SDXL's pooled embedding - as diffusers'
 * StableDiffusion(XL)Pipeline.encode_prompt computes it (the conformance goldens). */
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"
#include "base/text.h"
#include "pipeline/pipeline.h"

#define TOK_LEN IMGD_PROMPT_CHUNK_LEN

/* ---- setup ------------------------------------------------------------------------------- */

/* A boolean of model_index.json (diffusers folders), or dflt. */
static bool index_bool(const imgd_model *m, const char *key, bool dflt) {
    const char *text = imgd_weights_meta_find(m->w, "model_index.json");
    cJSON      *j    = NULL;
    if (!text ||
        imgd_json_parse("model_index.json", text, strlen(text), 1u << 20, 16, &j) != IMGD_OK)
        return dflt;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    bool         r = v && cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
    cJSON_Delete(j);
    return r;
}

static int32_t heads_of(const imgd_te_config *te, int32_t override) {
    if (override > 0) return override;
    if (te->heads > 0) return te->heads;
    return te->hidden >= 64 ? te->hidden / 64 : 1;
}

imgd_status imgd_sd_text_setup(imgd_model *m, int32_t te_heads) {
    const imgd_model_info *mi = m->mi;
    bool                   xl = m->unet.adm_in_channels > 0;
    /* encoders in component-name order: text_encoder, text_encoder_2 */
    const imgd_te_config *tes[IMGD_SD_TE_MAX];
    int32_t               n = 0;
    for (int32_t i = 0; i < mi->n_te; i++) {
        const imgd_te_config *te = &mi->te[i];
        if (!te->component || strncmp(te->component, "text_encoder", 12) != 0) continue;
        if (n == IMGD_SD_TE_MAX)
            return imgd_fail(IMGD_E_UNSUPPORTED, "%s: more than %d text encoders", m->path,
                             IMGD_SD_TE_MAX);
        int32_t k = n++;
        while (k > 0 && strcmp(tes[k - 1]->component, te->component) > 0) {
            tes[k] = tes[k - 1];
            k--;
        }
        tes[k] = te;
    }
    if (n == 0) return imgd_fail(IMGD_E_FORMAT, "%s: no CLIP text encoder found", m->path);
    if (!xl && n > 1)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: %d text encoders but the UNet has no added conditioning (an SDXL "
                         "UNet has add_embedding)",
                         m->path, (int)n);
    m->n_te    = n;
    m->ctx_dim = 0;
    for (int32_t e = 0; e < n; e++) {
        imgd_sd_te *t  = &m->te[e];
        t->prefix      = tes[e]->component;
        imgd_status st = imgd_clip_text_cfg_init(&t->cfg, tes[e], heads_of(tes[e], te_heads));
        if (st != IMGD_OK) return imgd_fail_prefix(st, "%s: %s", m->path, t->prefix);
        /* SDXL's second tokenizer pads with "!" (id 0); CLIP-L's with <|endoftext|> */
        t->pad    = xl && strcmp(t->prefix, "text_encoder_2") == 0 ? 0 : -1;
        t->pooled = xl && e == n - 1;
        m->ctx_dim += t->cfg.hidden;
        if (e > 0 && t->cfg.vocab != m->te[0].cfg.vocab)
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: %s has %d tokens, %s %d: one tokenizer cannot "
                             "serve both",
                             m->path, t->prefix, (int)t->cfg.vocab, m->te[0].prefix,
                             (int)m->te[0].cfg.vocab);
    }
    if (m->ctx_dim != m->unet.context_dim)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: the text encoders give %d-wide conditioning but the UNet's "
                         "cross-attention takes %d",
                         m->path, (int)m->ctx_dim, (int)m->unet.context_dim);
    m->pooled_dim = m->n_time_ids = 0;
    m->force_zeros                = false;
    if (xl) {
        const imgd_sd_te *pt = &m->te[n - 1];
        if (pt->cfg.projection_dim <= 0)
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: the UNet takes a pooled text embedding but %s has no "
                             "text_projection",
                             m->path, pt->prefix);
        bool refiner = mi->family == IMGD_FAMILY_SDXL_REFINER ||
                       index_bool(m, "requires_aesthetics_score", false);
        m->pooled_dim = pt->cfg.projection_dim;
        m->n_time_ids = refiner ? 5 : 6;
        int32_t rest  = m->unet.adm_in_channels - m->pooled_dim;
        if (rest <= 0 || rest % m->n_time_ids != 0)
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: the UNet's add_embedding takes %d inputs, which is not the "
                             "%d-wide pooled embedding plus %d time ids of equal width",
                             m->path, (int)m->unet.adm_in_channels, (int)m->pooled_dim,
                             (int)m->n_time_ids);
        m->force_zeros = index_bool(m, "force_zeros_for_empty_prompt", !refiner);
    }
    return IMGD_OK;
}

void imgd_sd_te_graphs_drop(imgd_model *m) {
    for (int32_t e = 0; e < IMGD_SD_TE_MAX; e++) imgd_sd_graph_drop(&m->te[e].g);
}

/* ---- graphs ------------------------------------------------------------------------------ */

/* The hidden_states index (Python, negative) a clip skip selects: SD 1.x/2.x 1 = the last
 * state (0 here: last_hidden_state with the final LayerNorm), k = -k; SDXL: -(k + 1). */
static int32_t skip_layer(const imgd_model *m, int32_t clip_skip) {
    if (m->n_time_ids > 0) return -(clip_skip + 1);
    return clip_skip > 1 ? -clip_skip : 0;
}

/* Encoder e's graph for `batch` sequences: out[0] the default state (the negative prompt's
 * when it keeps the default layer), out[1] the state at `layer` (skip_layer), out[2] the
 * pooled text_embeds (pooled encoders); in[0] the embeddings, in[1] the pool selector. */
static imgd_status te_graph(imgd_model *m, int32_t e, int32_t batch, int32_t layer) {
    imgd_sd_te    *te = &m->te[e];
    imgd_sd_graph *k  = &te->g;
    if (k->g && k->batch == batch && k->variant == layer) return IMGD_OK;
    imgd_status st = imgd_sd_graph_new(k);
    if (st != IMGD_OK) return st;
    k->batch               = batch;
    k->variant             = layer;
    k->in[0]               = imgd_graph_input(k->g, "embeds", IMGD_DTYPE_F32, 3,
                                              (const int64_t[]){batch, TOK_LEN, te->cfg.hidden});
    bool               xl  = m->n_time_ids > 0;
    int32_t            L   = te->cfg.layers;
    imgd_clip_text_req req = imgd_clip_text_req_default();
    imgd_clip_text_out out;
    memset(&out, 0, sizeof out);
    req.last_hidden_state = !xl;
    req.text_embeds       = te->pooled;
    if (!xl && layer != 0) {
        req.hidden          = true;
        req.hidden_final_ln = true;
        req.layer           = layer;
    } else if (xl && layer == -2) {
        req.hidden = true;
        req.layer  = -2;
    } else if (xl) {
        req.all_hidden = true; /* the skipped layer and the default one (-2) */
    }
    st = imgd_clip_text_build(k->g, m->wb, te->prefix, &te->cfg, batch, k->in[0], &req, &out);
    if (st != IMGD_OK) {
        imgd_sd_graph_drop(k);
        return st;
    }
    if (!xl) {
        k->out[0] = out.last_hidden_state;
        k->out[1] = layer == 0 ? out.last_hidden_state : out.hidden;
    } else if (req.hidden) {
        k->out[0] = k->out[1] = out.hidden;
    } else {
        k->out[0] = out.states[L - 1];
        k->out[1] = out.states[L + 1 + layer];
    }
    k->out[2] = out.text_embeds;
    k->in[1]  = out.pool_select;
    for (int i = 0; i < 3; i++)
        if (k->out[i]) imgd_graph_output(k->g, k->out[i]);
    return imgd_sd_graph_finish(imgd_model_te_backend(m), k, te->prefix);
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* Every encoder's empty-prompt chunk, tokenized once per model. */
static imgd_status empty_chunks(imgd_model *m) {
    if (m->has_empty_chunk) return IMGD_OK;
    for (int32_t e = 0; e < m->n_te; e++) {
        imgd_prompt_chunks ce;
        memset(&ce, 0, sizeof ce);
        int32_t     pad = m->te[e].pad >= 0 ? m->te[e].pad : imgd_clip_tok_eos(m->tok);
        imgd_status st  = imgd_prompt_encode(m->tok, "", pad, &ce);
        if (st != IMGD_OK) return imgd_fail_prefix(st, "empty prompt");
        memcpy(m->te[e].empty_ids, ce.ids, sizeof m->te[e].empty_ids);
        memcpy(m->te[e].empty_wts, ce.weights, sizeof m->te[e].empty_wts);
        imgd_prompt_chunks_free(&ce);
    }
    m->has_empty_chunk = true;
    return IMGD_OK;
}

/* What one encoder run over [neg chunks, pos chunks] leaves for assembling. */
typedef struct te_pass {
    float *z;      /* [2n * 77, H] weighted states (rows 0..n-1 negative) */
    float *pooled; /* [2n, P] text_embeds (pooled encoders) */
} te_pass;

/* Runs encoder e over the prompts' chunks (2n rows of 77: negative first). */
static imgd_status te_run(imgd_model *m, int32_t e, const imgd_prompt_chunks *cp,
                          const imgd_prompt_chunks *cn, size_t n, int32_t layer, bool skip_neg,
                          te_pass *out) {
    imgd_sd_te *te    = &m->te[e];
    size_t      total = 2 * n, H = (size_t)te->cfg.hidden, rows = total * TOK_LEN;
    int32_t    *ids = imgd_malloc(rows * sizeof *ids);
    float      *wts = imgd_malloc(rows * sizeof *wts);
    float      *emb = imgd_malloc(rows * H * sizeof *emb);
    float      *sel = imgd_malloc(rows * sizeof *sel);
    float      *zl  = NULL;
    out->z          = imgd_malloc(rows * H * sizeof *out->z);
    out->pooled    = te->pooled ? imgd_malloc(total * (size_t)m->pooled_dim * sizeof(float)) : NULL;
    imgd_status st = IMGD_OK;
    if (!ids || !wts || !emb || !sel || !out->z || (te->pooled && !out->pooled))
        st = imgd_fail(IMGD_E_NOMEM, "out of memory encoding prompts");
    for (size_t c = 0; st == IMGD_OK && c < total; c++) {
        const imgd_prompt_chunks *src = c < n ? cn : cp;
        size_t                    i   = c < n ? c : c - n;
        const int32_t            *id  = i < src->n_chunks ? src->ids + i * TOK_LEN : te->empty_ids;
        const float *w = i < src->n_chunks ? src->weights + i * TOK_LEN : te->empty_wts;
        memcpy(ids + c * TOK_LEN, id, TOK_LEN * sizeof *ids);
        memcpy(wts + c * TOK_LEN, w, TOK_LEN * sizeof *wts);
    }
    if (st == IMGD_OK)
        st = imgd_clip_text_embed(m->wb, te->prefix, &te->cfg, ids, (int32_t)total, TOK_LEN,
                                  te->ti_rows, m->n_ti, emb);
    if (st == IMGD_OK) st = te_graph(m, e, (int32_t)total, layer);
    imgd_sd_graph *k = &te->g;
    if (st == IMGD_OK) st = imgd_tensor_bind(k->in[0], emb);
    if (st == IMGD_OK && k->in[1]) {
        imgd_clip_text_pool_select(ids, (int32_t)total, TOK_LEN, -1, sel);
        st = imgd_tensor_bind(k->in[1], sel);
    }
    if (st == IMGD_OK) st = imgd_graph_compute(k->g);
    if (st == IMGD_OK) st = imgd_graph_read_f32(k->g, k->out[1], out->z, rows * H);
    /* diffusers applies clip skip to the positive prompt only: negative rows then take the
     * default layer */
    if (st == IMGD_OK && k->out[0] != k->out[1] && !skip_neg) {
        zl = imgd_malloc(rows * H * sizeof *zl);
        st = zl ? imgd_graph_read_f32(k->g, k->out[0], zl, rows * H)
                : imgd_fail(IMGD_E_NOMEM, "out of memory encoding prompts");
        if (st == IMGD_OK) memcpy(out->z, zl, n * TOK_LEN * H * sizeof *zl);
    }
    if (st == IMGD_OK && te->pooled)
        st = imgd_graph_read_f32(k->g, k->out[2], out->pooled, total * (size_t)m->pooled_dim);
    for (size_t c = 0; st == IMGD_OK && c < total; c++)
        imgd_prompt_apply_weights(out->z + c * TOK_LEN * H, TOK_LEN, H, wts + c * TOK_LEN);
    imgd_free(ids);
    imgd_free(wts);
    imgd_free(emb);
    imgd_free(sel);
    imgd_free(zl);
    if (st != IMGD_OK) {
        imgd_free(out->z);
        imgd_free(out->pooled);
        memset(out, 0, sizeof *out);
    }
    return st;
}

void imgd_sd_text_free(imgd_sd_text *t) {
    if (!t) return;
    imgd_free(t->cond);
    imgd_free(t->uncond);
    imgd_free(t->pooled);
    imgd_free(t->upooled);
    memset(t, 0, sizeof *t);
}

/* Tokenizes a prompt for encoder e ("prompt" / "negative prompt" name it in errors). */
static imgd_status tokenize(imgd_model *m, int32_t e, const char *text, const char *what,
                            imgd_prompt_chunks *out) {
    int32_t     pad = m->te[e].pad >= 0 ? m->te[e].pad : imgd_clip_tok_eos(m->tok);
    imgd_status st  = imgd_prompt_encode(m->tok, text ? text : "", pad, out);
    return st == IMGD_OK ? st : imgd_fail_prefix(st, "%s", what);
}

int32_t imgd_sd_clip_skip_max(const imgd_model *m) {
    int32_t mx = m->te[0].cfg.layers;
    for (int32_t e = 0; e < m->n_te; e++)
        mx = IMGD_MIN(mx, m->te[e].cfg.layers - (m->n_time_ids > 0 ? 1 : 0));
    return mx;
}

imgd_status imgd_sd_encode(imgd_model *m, const char *pos, const char *neg, int32_t clip_skip,
                           bool skip_neg, imgd_sd_text *out) {
    int32_t max_skip = imgd_sd_clip_skip_max(m);
    if (clip_skip < 1 || clip_skip > max_skip)
        return imgd_fail(IMGD_E_INVALID_ARG, "clip_skip %d: expected 1..%d (A1111 numbering)",
                         (int)clip_skip, (int)max_skip);
    imgd_status st = empty_chunks(m);
    if (st != IMGD_OK) return st;
    imgd_sd_text t;
    memset(&t, 0, sizeof t);
    te_pass pass[IMGD_SD_TE_MAX];
    memset(pass, 0, sizeof pass);
    size_t n = 0, D = (size_t)m->ctx_dim, P = (size_t)m->pooled_dim;
    for (int32_t e = 0; st == IMGD_OK && e < m->n_te; e++) {
        imgd_prompt_chunks cp, cn;
        memset(&cp, 0, sizeof cp);
        memset(&cn, 0, sizeof cn);
        st = tokenize(m, e, pos, "prompt", &cp);
        if (st == IMGD_OK) st = tokenize(m, e, neg, "negative prompt", &cn);
        size_t ne = IMGD_MAX(cp.n_chunks, cn.n_chunks);
        if (st == IMGD_OK && e > 0 && ne != n)
            st = imgd_fail(IMGD_E_INTERNAL, "%s: %zu prompt chunks, %s %zu", m->te[e].prefix, ne,
                           m->te[0].prefix, n);
        n = ne;
        if (st == IMGD_OK)
            st = te_run(m, e, &cp, &cn, n, skip_layer(m, clip_skip), skip_neg, &pass[e]);
        imgd_prompt_chunks_free(&cp);
        imgd_prompt_chunks_free(&cn);
    }
    size_t len = n * TOK_LEN;
    if (st == IMGD_OK) {
        t.cond   = imgd_malloc(len * D * sizeof *t.cond);
        t.uncond = imgd_malloc(len * D * sizeof *t.uncond);
        if (P) {
            t.pooled  = imgd_malloc(P * sizeof *t.pooled);
            t.upooled = imgd_malloc(P * sizeof *t.upooled);
        }
        if (!t.cond || !t.uncond || (P && (!t.pooled || !t.upooled)))
            st = imgd_fail(IMGD_E_NOMEM, "out of memory encoding prompts");
    }
    /* token r of the negative (row r) and positive (row len + r) side by side per encoder */
    for (size_t r = 0; st == IMGD_OK && r < len; r++) {
        size_t off = 0;
        for (int32_t e = 0; e < m->n_te; e++) {
            size_t H = (size_t)m->te[e].cfg.hidden;
            memcpy(t.uncond + r * D + off, pass[e].z + r * H, H * sizeof(float));
            memcpy(t.cond + r * D + off, pass[e].z + (len + r) * H, H * sizeof(float));
            off += H;
        }
    }
    if (st == IMGD_OK && P) { /* the first chunk's pooled embedding, as A1111 takes it */
        const float *pl = pass[m->n_te - 1].pooled;
        memcpy(t.upooled, pl, P * sizeof *pl);
        memcpy(t.pooled, pl + n * P, P * sizeof *pl);
    }
    if (st == IMGD_OK && m->force_zeros && (!neg || !*neg)) {
        memset(t.uncond, 0, len * D * sizeof *t.uncond);
        if (P) memset(t.upooled, 0, P * sizeof *t.upooled);
    }
    for (int32_t e = 0; e < IMGD_SD_TE_MAX; e++) {
        imgd_free(pass[e].z);
        imgd_free(pass[e].pooled);
    }
    if (st != IMGD_OK) {
        imgd_sd_text_free(&t);
        return st;
    }
    t.len = (int32_t)len;
    *out  = t;
    return IMGD_OK;
}
