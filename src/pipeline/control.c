/* ControlNet in the SD pipeline, as diffusers' StableDiffusionControlNetPipeline (and
 * MultiControlNetModel for several) computes it: per loop iteration each ControlNet runs on
 * the UNet's scaled latents, timestep and text conditioning with its control image; its
 * residuals times conditioning_scale * controlnet_keep[i] (guess mode: times
 * logspace(-1, 0, 13), unconditional rows zero) are summed over the ControlNets and added
 * by the UNet to its skip connections and mid-block output. SDXL ControlNets (diffusers'
 * StableDiffusionXLControlNetPipeline) also take the base stage's pooled text embeddings and
 * time ids of their rows (added_cond_kwargs). ControlNet models are cached on the imgd_model
 * by path. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "pipeline/control_pre.h"
#include "pipeline/pipeline.h"

/* ---- the cache ------------------------------------------------------------------------ */

static void control_free(imgd_sd_control *c) {
    if (!c) return;
    imgd_graph_free(c->g.g);
    imgd_wbind_free(c->wb);
    imgd_model_info_free(c->mi);
    imgd_weights_free(c->w);
    imgd_free(c->path);
    imgd_free(c);
}

void imgd_sd_controls_free(imgd_model *m) {
    for (int32_t i = 0; i < m->n_controls; i++) control_free(m->controls[i]);
    m->n_controls = 0;
}

static bool same_arch(const imgd_unet_cfg *a, const imgd_unet_cfg *u) {
    if (a->n_levels != u->n_levels || a->layers_per_block != u->layers_per_block ||
        a->context_dim != u->context_dim || a->time_embed_dim != u->time_embed_dim ||
        a->adm_in_channels != u->adm_in_channels)
        return false;
    for (int32_t l = 0; l < u->n_levels; l++)
        if (a->widths[l] != u->widths[l]) return false;
    return true;
}

/* Opens, detects and checks a ControlNet against m's UNet. */
static imgd_status control_open(imgd_model *m, const char *path, imgd_sd_control **out) {
    imgd_sd_control *c = imgd_calloc(1, sizeof *c);
    if (!c) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_open_params op = imgd_open_params_default();
    imgd_status      st = IMGD_OK;
    c->path             = imgd_strdup(path);
    if (!c->path) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (st == IMGD_OK) st = imgd_weights_open(path, &op, &c->w);
    if (st == IMGD_OK) st = imgd_model_detect(c->w, &c->mi);
    if (st == IMGD_OK && c->mi->kind != IMGD_KIND_CONTROLNET)
        st = imgd_fail(IMGD_E_INVALID_ARG, "control %s is a %s (family %s), not a ControlNet", path,
                       imgd_model_kind_name(c->mi->kind), imgd_family_name(c->mi->family));
    if (st == IMGD_OK && c->mi->family != m->mi->family)
        st = imgd_fail(IMGD_E_INVALID_ARG, "control %s is a ControlNet for %s; the model is %s",
                       path, imgd_family_name(c->mi->family), imgd_family_name(m->mi->family));
    if (st == IMGD_OK) st = imgd_wbind_new(c->w, c->mi, &c->wb);
    if (st == IMGD_OK) st = imgd_controlnet_cfg_from_detect(c->mi, c->wb, &c->cfg);
    if (st == IMGD_OK) {
        /* a ControlNet copies its base UNet's encoder: the same norms and heads (which shapes
         * cannot tell, e.g. a narrow single file without config.json) */
        imgd_unet_cfg *u = &c->cfg.unet;
        u->groups        = m->unet.groups;
        u->head_dim      = m->unet.head_dim;
        memcpy(u->heads, m->unet.heads, sizeof u->heads);
        if (!same_arch(u, &m->unet))
            st = imgd_fail(IMGD_E_INVALID_ARG,
                           "control %s: its encoder (widths %d.., %d levels, context %d, added "
                           "conditioning %d) does not match the model's UNet (widths %d.., %d "
                           "levels, context %d, added conditioning %d)",
                           path, (int)u->widths[0], (int)u->n_levels, (int)u->context_dim,
                           (int)u->adm_in_channels, (int)m->unet.widths[0], (int)m->unet.n_levels,
                           (int)m->unet.context_dim, (int)m->unet.adm_in_channels);
    }
    if (st == IMGD_OK) st = imgd_unet_cfg_check(&c->cfg.unet);
    if (st != IMGD_OK) {
        control_free(c);
        return st;
    }
    *out = c;
    return IMGD_OK;
}

/* The cached ControlNet of path, loaded when absent (evicting the least recently used one
 * not used by this run when the cache is full). */
static imgd_status control_get(imgd_model *m, const char *path, imgd_sd_control **out) {
    for (int32_t i = 0; i < m->n_controls; i++) {
        if (strcmp(m->controls[i]->path, path) == 0) {
            m->controls[i]->used = m->control_runs;
            *out                 = m->controls[i];
            return IMGD_OK;
        }
    }
    imgd_sd_control *c  = NULL;
    imgd_status      st = control_open(m, path, &c);
    if (st != IMGD_OK) return st;
    if (m->n_controls == IMGD_SD_CONTROLS_CACHED) {
        int32_t victim = -1;
        for (int32_t i = 0; i < m->n_controls; i++)
            if (m->controls[i]->used != m->control_runs &&
                (victim < 0 || m->controls[i]->used < m->controls[victim]->used))
                victim = i;
        if (victim < 0) { /* cannot happen: a run uses at most IMGD_CONTROL_MAX */
            control_free(c);
            return imgd_fail(IMGD_E_INTERNAL, "ControlNet cache full");
        }
        control_free(m->controls[victim]);
        m->controls[victim] = m->controls[--m->n_controls];
    }
    c->used                      = m->control_runs;
    m->controls[m->n_controls++] = c;
    *out                         = c;
    IMGD_LOG(IMGD_LOG_INFO, "pipeline", "controlnet_loaded", "%s: %s ControlNet, %d hint blocks",
             path, imgd_family_name(c->mi->family), (int)c->cfg.hint_blocks);
    return IMGD_OK;
}

/* ---- request checks ---------------------------------------------------------------------- */

imgd_status imgd_sd_control_check(const imgd_gen_params *p) {
    if (p->n_controls < 0 || p->n_controls > IMGD_CONTROL_MAX ||
        (p->n_controls > 0 && !p->controls))
        return imgd_fail(IMGD_E_INVALID_ARG, "n_controls %d: expected 0..%d with a controls array",
                         (int)p->n_controls, (int)IMGD_CONTROL_MAX);
    for (int32_t k = 0; k < p->n_controls; k++) {
        const imgd_control_spec *s  = &p->controls[k];
        const imgd_image_u8     *im = s->image;
        if (!s->path || !*s->path)
            return imgd_fail(IMGD_E_INVALID_ARG, "controls[%d].path: required", (int)k);
        if (!im || !im->px || im->w < 1 || im->h < 1 || (im->c != 1 && im->c != 3 && im->c != 4))
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "controls[%d].image: required, non-empty, 1, 3 or 4 channels", (int)k);
        if (!isfinite(s->scale) || s->scale < 0 || s->scale > 10)
            return imgd_fail(IMGD_E_INVALID_ARG, "controls[%d].scale %g: expected 0..10", (int)k,
                             (double)s->scale);
        if (!isfinite(s->start) || !isfinite(s->end) || s->start < 0 || s->end > 1 ||
            s->start >= s->end)
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "controls[%d] start %g, end %g: expected 0 <= start < end <= 1",
                             (int)k, (double)s->start, (double)s->end);
        if (!imgd_control_pre_name(s->preprocess))
            return imgd_fail(IMGD_E_INVALID_ARG, "controls[%d].preprocess %d: expected 0..%d",
                             (int)k, (int)s->preprocess, (int)IMGD_CONTROL_PRE_COUNT - 1);
        if (!imgd_control_resize_name(s->resize_mode))
            return imgd_fail(IMGD_E_INVALID_ARG, "controls[%d].resize_mode %d: expected 0..%d",
                             (int)k, (int)s->resize_mode, (int)IMGD_CONTROL_RESIZE_COUNT - 1);
        if (!isfinite(s->low) || !isfinite(s->high) || s->low < 0 || s->high < 0 || s->low > 2040 ||
            s->high > 2040)
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "controls[%d] canny thresholds %g, %g: expected 0..2040", (int)k,
                             (double)s->low, (double)s->high);
        if (!isfinite(s->threshold) || s->threshold < 0 || s->threshold > 255)
            return imgd_fail(IMGD_E_INVALID_ARG, "controls[%d].threshold %g: expected 0..255",
                             (int)k, (double)s->threshold);
    }
    return IMGD_OK;
}

bool imgd_sd_control_keep(int32_t i, int32_t n, float start, float end) {
    if (n < 1) return false;
    /* in f32, the precision of the fractions: i / n == start (e.g. 2 / 5 and 0.4) compares
     * equal as Python's floats do for the same decimal input */
    float a = (float)i / (float)n, b = (float)(i + 1) / (float)n;
    return !(a < start || b > end);
}

/* ---- a run ------------------------------------------------------------------------------- */

struct imgd_sd_control_run {
    imgd_model                 *m;
    const imgd_sd_control_item *items;
    size_t                      n_items;
    int32_t                     n_nets, n_res, ub, h, w, len;
    imgd_sd_control            *net[IMGD_CONTROL_MAX];
    float                      *cond[IMGD_CONTROL_MAX]; /* [ub, 3, 8h, 8w] */
    float                      *x;                      /* [ub, in, h, w] when cin differs */
    float                      *res[IMGD_UNET_SKIPS_MAX + 1];
    size_t                      res_n[IMGD_UNET_SKIPS_MAX + 1]; /* floats per residual */
    float                      *tmp;                            /* the largest residual */
    float                      *fac;                            /* [ub] per-row factors */
    bool                       *guess;                          /* [ub] row in guess mode */
    int32_t                    *rows;  /* the rows a ControlNet runs on (factor != 0) */
    int32_t                     W, H;  /* control image size */
    float                      *ct;    /* [ub] gathered timesteps */
    float                      *cctx;  /* [ub, len, D] gathered conditioning */
    float                      *ccond; /* [ub, 3, H, W] gathered control images */
    float                      *cpool; /* SDXL: [ub, P] gathered pooled text embeddings */
    float                      *ctids; /* SDXL: [ub, K] gathered time ids */
};

void imgd_sd_control_free(imgd_sd_control_run *c) {
    if (!c) return;
    for (int32_t k = 0; k < IMGD_CONTROL_MAX; k++) imgd_free(c->cond[k]);
    for (int32_t i = 0; i <= IMGD_UNET_SKIPS_MAX; i++) imgd_free(c->res[i]);
    imgd_free(c->x);
    imgd_free(c->tmp);
    imgd_free(c->fac);
    imgd_free(c->guess);
    imgd_free(c->rows);
    imgd_free(c->ct);
    imgd_free(c->cctx);
    imgd_free(c->ccond);
    imgd_free(c->cpool);
    imgd_free(c->ctids);
    imgd_free(c);
}

float *imgd_sd_control_res(imgd_sd_control_run *c, int32_t k) {
    return c && k >= 0 && k < c->n_res ? c->res[k] : NULL;
}

/* The ControlNet's graph for batch rows of the run's shape (kept on the cached model between
 * runs; rebuilt when the number of rows it runs on changes). */
static imgd_status net_graph(imgd_sd_control_run *c, imgd_sd_control *n, int32_t batch) {
    imgd_sd_graph *k = &n->g;
    if (k->g && k->batch == batch && k->h == c->h && k->w == c->w && k->len == c->len)
        return IMGD_OK;
    imgd_status st = imgd_sd_graph_new(k);
    if (st != IMGD_OK) return st;
    const imgd_unet_cfg *u = &n->cfg.unet;
    int64_t              S = (int64_t)1 << (n->cfg.hint_blocks / 2);
    k->in[0]               = imgd_graph_input(k->g, "x", IMGD_DTYPE_F32, 4,
                                              (const int64_t[]){batch, u->in_channels, c->h, c->w});
    k->in[1] = imgd_graph_input(k->g, "t", IMGD_DTYPE_F32, 1, (const int64_t[]){batch});
    k->in[2] = imgd_graph_input(k->g, "ctx", IMGD_DTYPE_F32, 3,
                                (const int64_t[]){batch, c->len, u->context_dim});
    k->in[3] = imgd_graph_input(k->g, "cond", IMGD_DTYPE_F32, 4,
                                (const int64_t[]){batch, n->cfg.cond_channels, c->h * S, c->w * S});
    imgd_unet_extra added;
    memset(&added, 0, sizeof added);
    if (u->adm_in_channels > 0) { /* SDXL: the stage's pooled embeddings and time ids */
        k->in[4] = added.text_embeds = imgd_graph_input(k->g, "text_embeds", IMGD_DTYPE_F32, 2,
                                                        (const int64_t[]){batch, c->m->pooled_dim});
        k->in[5] = added.time_ids = imgd_graph_input(k->g, "time_ids", IMGD_DTYPE_F32, 2,
                                                     (const int64_t[]){batch, c->m->n_time_ids});
    }
    added.n_hypernets = imgd_sd_hypernets(c->m, &added.hypernets, &added.hypernet_weights);
    st = imgd_controlnet_build(k->g, n->wb, "controlnet", &n->cfg, k->in[0], k->in[1], k->in[2],
                               u->adm_in_channels > 0 || added.n_hypernets > 0 ? &added : NULL,
                               k->in[3], k->res, NULL);
    char what[600];
    (void)imgd_fmt(what, sizeof what, "ControlNet %s", n->path);
    if (st != IMGD_OK) {
        imgd_sd_graph_drop(k);
        return imgd_fail_prefix(st, "%s graph", what);
    }
    st = imgd_sd_graph_finish(c->m->be, k, what);
    if (st != IMGD_OK) return st;
    k->batch = batch;
    k->h     = c->h;
    k->w     = c->w;
    k->len   = c->len;
    k->n_res = imgd_unet_skip_count(u) + 1;
    return IMGD_OK;
}

/* Every item's control image k, prepared and repeated over its rows. */
static imgd_status prepare_images(imgd_sd_control_run *c, int32_t k, int32_t W, int32_t H) {
    size_t per = (size_t)3 * (size_t)W * (size_t)H;
    c->cond[k] = imgd_calloc((size_t)c->ub * per, sizeof *c->cond[k]);
    if (!c->cond[k]) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n_items; i++) {
        const imgd_sd_control_item *it = &c->items[i];
        if (!it->p) continue;
        int32_t     nu  = it->cfg_on ? 2 * it->B : it->B;
        float      *dst = c->cond[k] + (size_t)it->u_off * per;
        imgd_status st =
            imgd_control_prepare(it->p->controls[k].image, &it->p->controls[k], W, H, dst);
        if (st != IMGD_OK) return imgd_fail_prefix(st, "item %zu, controls[%d]", i, (int)k);
        for (int32_t u = 1; u < nu; u++) memcpy(dst + (size_t)u * per, dst, per * sizeof *dst);
    }
    return IMGD_OK;
}

imgd_status imgd_sd_control_begin(imgd_model *m, const imgd_sd_control_item *items, size_t n,
                                  int32_t ub, int32_t h, int32_t w, int32_t len,
                                  imgd_sd_control_run **out) {
    *out                        = NULL;
    const imgd_gen_params *lead = NULL;
    for (size_t i = 0; i < n && !lead; i++) lead = items[i].p;
    if (!lead || lead->n_controls < 1) return IMGD_OK;
    imgd_sd_control_run *c = imgd_calloc(1, sizeof *c);
    if (!c) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    c->m       = m;
    c->items   = items;
    c->n_items = n;
    c->n_nets  = lead->n_controls;
    c->ub      = ub;
    c->h       = h;
    c->w       = w;
    c->len     = len;
    c->n_res   = imgd_unet_skip_count(&m->unet) + 1;
    c->W       = lead->width;
    c->H       = lead->height;
    m->control_runs++;
    imgd_status st = IMGD_OK;
    for (int32_t k = 0; st == IMGD_OK && k < c->n_nets; k++) {
        st = control_get(m, lead->controls[k].path, &c->net[k]);
        if (st == IMGD_OK) st = prepare_images(c, k, lead->width, lead->height);
    }
    size_t hw = (size_t)h * (size_t)w, big = 0;
    for (int32_t i = 0; st == IMGD_OK && i < c->n_res; i++) {
        int32_t ch = m->unet.widths[m->unet.n_levels - 1], div = 1 << (m->unet.n_levels - 1);
        if (i + 1 < c->n_res) imgd_unet_skip_shape(&m->unet, i, &ch, &div);
        c->res_n[i] = (size_t)ub * (size_t)ch * (size_t)imgd_unet_div_size(h, div) *
                      (size_t)imgd_unet_div_size(w, div);
        c->res[i] = imgd_calloc(c->res_n[i], sizeof *c->res[i]);
        big       = c->res_n[i] > big ? c->res_n[i] : big;
        if (!c->res[i]) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    if (st == IMGD_OK) {
        c->tmp   = imgd_malloc(big * sizeof *c->tmp);
        c->fac   = imgd_malloc((size_t)ub * sizeof *c->fac);
        c->x     = imgd_malloc((size_t)ub * 4 * hw * sizeof *c->x);
        c->guess = imgd_malloc((size_t)ub * sizeof *c->guess);
        c->rows  = imgd_malloc((size_t)ub * sizeof *c->rows);
        c->ct    = imgd_malloc((size_t)ub * sizeof *c->ct);
        c->cctx =
            imgd_malloc((size_t)ub * (size_t)len * (size_t)m->unet.context_dim * sizeof *c->cctx);
        c->ccond = imgd_malloc((size_t)ub * 3 * (size_t)c->W * (size_t)c->H * sizeof *c->ccond);
        c->cpool = imgd_malloc(((size_t)ub * (size_t)m->pooled_dim + 1) * sizeof *c->cpool);
        c->ctids = imgd_malloc(((size_t)ub * (size_t)m->n_time_ids + 1) * sizeof *c->ctids);
        if (!c->tmp || !c->fac || !c->x || !c->guess || !c->rows || !c->ct || !c->cctx ||
            !c->ccond || !c->cpool || !c->ctids)
            st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    if (st != IMGD_OK) {
        imgd_sd_control_free(c);
        return st;
    }
    *out = c;
    return IMGD_OK;
}

/* Row factors of ControlNet k at iteration i of n: scale * keep, 0 on the unconditional
 * rows in guess mode; rows[] receives the rows with a non-zero factor. Returns their count. */
static int32_t row_factors(imgd_sd_control_run *c, int32_t k, int32_t i, int32_t n) {
    for (int32_t u = 0; u < c->ub; u++) {
        c->fac[u]   = 0.0f;
        c->guess[u] = false;
    }
    for (size_t j = 0; j < c->n_items; j++) {
        const imgd_sd_control_item *it = &c->items[j];
        if (!it->p) continue;
        const imgd_control_spec *s  = &it->p->controls[k];
        float                    f  = imgd_sd_control_keep(i, n, s->start, s->end) ? s->scale : 0;
        int32_t                  nu = it->cfg_on ? 2 * it->B : it->B;
        for (int32_t u = 0; u < nu; u++) {
            bool uncond             = it->cfg_on && u < it->B;
            c->fac[it->u_off + u]   = s->guess_mode && uncond ? 0.0f : f;
            c->guess[it->u_off + u] = s->guess_mode;
        }
    }
    int32_t nr = 0;
    for (int32_t u = 0; u < c->ub; u++)
        if (c->fac[u] != 0.0f) c->rows[nr++] = u;
    return nr;
}

/* res[r] += fac[row] * guess(r) * out, for the nr rows the ControlNet ran on (out holds
 * them in the order of rows[]). */
static void accumulate(imgd_sd_control_run *c, int32_t r, const float *out, int32_t nr) {
    size_t per = c->res_n[r] / (size_t)c->ub;
    float  g   = imgd_controlnet_guess_scale(r, c->n_res);
    for (int32_t j = 0; j < nr; j++) {
        int32_t      u = c->rows[j];
        float        f = c->fac[u];
        float       *d = c->res[r] + (size_t)u * per;
        const float *s = out + (size_t)j * per;
        /* diffusers: residual * (guess scale * conditioning scale) in guess mode, else
         * residual * conditioning scale */
        if (c->guess[u]) {
            float gf = g * f;
            for (size_t e = 0; e < per; e++) d[e] += s[e] * gf;
        } else {
            for (size_t e = 0; e < per; e++) d[e] += s[e] * f;
        }
    }
}

/* Points *xi .. *gi at the ControlNet k's inputs for its nr rows: the run's buffers when it
 * runs on every row with the UNet's channel count, else gathered copies. */
static imgd_status gather(imgd_sd_control_run *c, int32_t k, int32_t nr, const float *x,
                          int32_t cin, const float *t, const float *ctx, const float *pooled,
                          const float *tids, const float **xi, const float **ti, const float **ci,
                          const float **gi, const float **pi, const float **di) {
    int32_t in  = c->net[k]->cfg.unet.in_channels;
    size_t  hw  = (size_t)c->h * (size_t)c->w;
    size_t  lD  = (size_t)c->len * (size_t)c->m->unet.context_dim;
    size_t  per = (size_t)3 * (size_t)c->W * (size_t)c->H;
    bool    all = nr == c->ub;
    *xi         = x;
    *ti         = t;
    *ci         = ctx;
    *gi         = c->cond[k];
    *pi         = pooled;
    *di         = tids;
    size_t P = (size_t)c->m->pooled_dim, K = (size_t)c->m->n_time_ids;
    if (c->net[k]->cfg.unet.adm_in_channels > 0 && (!pooled || !tids || !P || !K))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "ControlNet %s is an SDXL ControlNet: it needs the SDXL model's pooled "
                         "text embeddings and time ids",
                         c->net[k]->path);
    if (in > cin || in > 4)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "ControlNet with %d input channels on a %d-channel UNet", (int)in,
                         (int)cin);
    if (!all || in != cin) { /* e.g. a 9-channel inpainting UNet: the latents only */
        for (int32_t j = 0; j < nr; j++)
            memcpy(c->x + (size_t)j * (size_t)in * hw, x + (size_t)c->rows[j] * (size_t)cin * hw,
                   (size_t)in * hw * sizeof *x);
        *xi = c->x;
    }
    if (!all) {
        for (int32_t j = 0; j < nr; j++) {
            size_t u = (size_t)c->rows[j];
            c->ct[j] = t[u];
            memcpy(c->cctx + (size_t)j * lD, ctx + u * lD, lD * sizeof *ctx);
            memcpy(c->ccond + (size_t)j * per, c->cond[k] + u * per, per * sizeof *c->ccond);
            if (pooled && P) memcpy(c->cpool + (size_t)j * P, pooled + u * P, P * sizeof *pooled);
            if (tids && K) memcpy(c->ctids + (size_t)j * K, tids + u * K, K * sizeof *tids);
        }
        *ti = c->ct;
        *ci = c->cctx;
        *gi = c->ccond;
        *pi = c->cpool;
        *di = c->ctids;
    }
    return IMGD_OK;
}

imgd_status imgd_sd_control_step(imgd_sd_control_run *c, const float *x, int32_t cin,
                                 const float *t, const float *ctx, const float *pooled,
                                 const float *tids, int32_t i, int32_t n) {
    for (int32_t r = 0; r < c->n_res; r++) memset(c->res[r], 0, c->res_n[r] * sizeof(float));
    for (int32_t k = 0; k < c->n_nets; k++) {
        imgd_sd_control *net = c->net[k];
        /* only the rows whose factor is not 0 run (guess mode: the conditional half; rows
         * of items outside their start/end window are skipped); none: residuals 0 */
        int32_t nr = row_factors(c, k, i, n);
        if (nr == 0) continue;
        const float *xi, *ti, *ci, *gi, *pi, *di;
        imgd_status  st =
            gather(c, k, nr, x, cin, t, ctx, pooled, tids, &xi, &ti, &ci, &gi, &pi, &di);
        if (st == IMGD_OK) st = net_graph(c, net, nr);
        imgd_sd_graph *g = &net->g;
        if (st == IMGD_OK) st = imgd_tensor_bind(g->in[0], (void *)(uintptr_t)xi);
        if (st == IMGD_OK) st = imgd_tensor_bind(g->in[1], (void *)(uintptr_t)ti);
        if (st == IMGD_OK) st = imgd_tensor_bind(g->in[2], (void *)(uintptr_t)ci);
        if (st == IMGD_OK) st = imgd_tensor_bind(g->in[3], (void *)(uintptr_t)gi);
        if (st == IMGD_OK && g->in[4]) st = imgd_tensor_bind(g->in[4], (void *)(uintptr_t)pi);
        if (st == IMGD_OK && g->in[5]) st = imgd_tensor_bind(g->in[5], (void *)(uintptr_t)di);
        if (st == IMGD_OK) st = imgd_graph_compute(g->g);
        for (int32_t r = 0; st == IMGD_OK && r < c->n_res; r++) {
            size_t nv = c->res_n[r] / (size_t)c->ub * (size_t)nr;
            st        = imgd_graph_read_f32(g->g, g->res[r], c->tmp, nv);
            if (st == IMGD_OK) accumulate(c, r, c->tmp, nr);
        }
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}
