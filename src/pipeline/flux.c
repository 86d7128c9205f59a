/* FLUX.1 through the public API (see flux.h): finding and binding the parts at load time,
 * then FluxPipeline's text encoding, noise and decode around imgd_flux_generate. */
#include "pipeline/flux.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/text.h"
#include "models/clip_text.h"
#include "models/flux.h"
#include "models/t5.h"
#include "models/t5_tokenizer.h"
#include "pipeline/flux_gen.h"
#include "pipeline/image.h"
#include "pipeline/infotext.h"
#include "pipeline/pipeline.h"
#include "sampling/flow.h"
#include "sampling/rng.h"

#define CLIP_LEN   77
#define T5_LEN_MAX 512
#define CANDS_MAX  16

/* A separately given file (--clip-l, --t5) and what detection made of it. */
typedef struct part {
    imgd_weights    *w;
    imgd_model_info *mi;
    imgd_wbind      *wb;
} part;

struct imgd_flux_model {
    part                clip_p, t5_p; /* separate encoder files; empty = the model's own */
    imgd_wbind         *clip_wb, *t5_wb, *vae_wb; /* borrowed: a part's or the model's */
    const char         *clip_prefix, *t5_prefix;  /* canonical components (detection arenas) */
    imgd_flux_cfg       cfg;
    imgd_clip_text_cfg  clip;
    imgd_t5_cfg         t5;
    imgd_vae_cfg        vae;
    float               vae_scale, vae_shift;
    imgd_flow_params    flow;
    imgd_t5_tok        *t5_tok;
    imgd_t5_runner     *t5_run;
    imgd_graph         *clip_g; /* CLIP for one 77-token prompt, pooled output */
    imgd_tensor        *clip_emb, *clip_sel, *clip_pooled;
    imgd_flux_denoiser *den;   /* the transformer graph of the last request's shape */
    imgd_sd_graph       g_enc; /* img2img: the VAE encoder of the last init image's size */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool imgd_flux_family(imgd_family f) {
    return f == IMGD_FAMILY_FLUX_DEV || f == IMGD_FAMILY_FLUX_SCHNELL;
}

/* ---- finding files -------------------------------------------------------------------- */

static bool exists(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0;
}

static bool is_dir(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The folder a path names (itself for a folder, else the file's folder). */
static void base_dir(const char *path, char *out, size_t cap) {
    if (is_dir(path)) {
        (void)imgd_fmt(out, cap, "%s", path);
        return;
    }
    const char *slash = strrchr(path, '/');
    if (!slash)
        (void)imgd_fmt(out, cap, ".");
    else
        (void)imgd_fmt(out, cap, "%.*s", slash == path ? 1 : (int)(slash - path), path);
}

/* "a, b, c" of the n candidates into list. */
static void join(char cand[][4096], int n, char *list, size_t cap) {
    size_t k = 0;
    list[0]  = '\0';
    for (int i = 0; i < n && k < cap; i++) {
        (void)imgd_fmt(list + k, cap - k, "%s%s", i ? ", " : "", cand[i]);
        k = strlen(list);
    }
}

static void part_free(part *p) {
    imgd_wbind_free(p->wb);
    imgd_model_info_free(p->mi);
    imgd_weights_free(p->w);
    memset(p, 0, sizeof *p);
}

static const imgd_te_config *te_find(const imgd_model_info *mi, bool t5) {
    for (int32_t i = 0; mi && i < mi->n_te; i++)
        if ((mi->te[i].type == IMGD_TE_T5) == t5) return &mi->te[i];
    return NULL;
}

/* Opens one encoder file; IMGD_E_INVALID_ARG when it holds no encoder of the kind. */
static imgd_status part_open(const char *path, const imgd_open_params *op, bool t5,
                             const char *flag, part *p, const imgd_te_config **te) {
    imgd_status st = imgd_weights_open(path, op, &p->w);
    if (st == IMGD_OK) st = imgd_model_detect(p->w, &p->mi);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s %s", flag, path);
    *te = te_find(p->mi, t5);
    if (!*te)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "%s %s is a %s (family %s) without a %s text encoder; give %s (or a "
                         "FLUX diffusers folder's %s)",
                         flag, path, imgd_model_kind_name(p->mi->kind),
                         imgd_family_name(p->mi->family), t5 ? "T5" : "CLIP",
                         t5 ? "t5xxl_fp16.safetensors / t5xxl_fp8_e4m3fn.safetensors"
                            : "clip_l.safetensors",
                         t5 ? "text_encoder_2/" : "text_encoder/");
    return imgd_wbind_new(p->w, p->mi, &p->wb);
}

/* The CLIP-L (t5 false) or T5 encoder: the given file, the model's own, or the usual file
 * names beside the model (and ComfyUI's ../clip/, ../text_encoders/). */
static imgd_status encoder_load(imgd_flux_model *f, imgd_model *m, const imgd_load_params *lp,
                                bool t5) {
    const char           *given = t5 ? lp->t5 : lp->clip_l;
    const char           *flag  = t5 ? "--t5" : "--clip-l";
    part                 *p     = t5 ? &f->t5_p : &f->clip_p;
    const imgd_te_config *te    = given ? NULL : te_find(m->mi, t5);
    if (te) {
        *(t5 ? &f->t5_wb : &f->clip_wb)         = m->wb;
        *(t5 ? &f->t5_prefix : &f->clip_prefix) = te->component;
        return IMGD_OK;
    }
    if (given) {
        imgd_status st = part_open(given, &lp->open, t5, flag, p, &te);
        if (st != IMGD_OK) return st;
    } else {
        static const char *const clip_names[] = {"clip_l.safetensors", "text_encoder"};
        static const char *const t5_names[]   = {
              "t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn.safetensors",
              "t5xxl_fp8_e4m3fn_scaled.safetensors", "text_encoder_2"};
        static const char *const subs[] = {"", "/../clip", "/../text_encoders"};
        const char *const       *names  = t5 ? t5_names : clip_names;
        size_t                   nn = t5 ? IMGD_ARRAY_LEN(t5_names) : IMGD_ARRAY_LEN(clip_names);
        char                     base[4096], cand[CANDS_MAX][4096], names_l[512];
        int                      n = 0;
        base_dir(m->path, base, sizeof base);
        for (size_t s = 0; s < IMGD_ARRAY_LEN(subs); s++)
            for (size_t k = 0; k < nn && n < CANDS_MAX; k++)
                if (imgd_fmt(cand[n], sizeof cand[n], "%s%s/%s", base, subs[s], names[k])) n++;
        int hit = -1;
        for (int i = 0; i < n && hit < 0; i++)
            if (exists(cand[i])) hit = i;
        if (hit < 0) {
            size_t k   = 0;
            names_l[0] = '\0';
            for (size_t i = 0; i < nn && k < sizeof names_l; i++) {
                (void)imgd_fmt(names_l + k, sizeof names_l - k, "%s%s", i ? ", " : "", names[i]);
                k = strlen(names_l);
            }
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: a FLUX transformer needs a %s text encoder; give %s FILE (load "
                             "param %s), e.g. %s (looked for %s in %s, %s/../clip and "
                             "%s/../text_encoders)",
                             m->path, t5 ? "T5-XXL" : "CLIP-L", flag, t5 ? "t5" : "clip_l",
                             t5 ? "t5xxl_fp16.safetensors or a FLUX folder's text_encoder_2/"
                                : "clip_l.safetensors or a FLUX folder's text_encoder/",
                             names_l, base, base, base);
        }
        IMGD_LOG(IMGD_LOG_INFO, "pipeline", "flux_part", "%s: %s encoder from %s", m->path,
                 t5 ? "T5" : "CLIP", cand[hit]);
        imgd_status st = part_open(cand[hit], &lp->open, t5, flag, p, &te);
        if (st != IMGD_OK) return st;
    }
    *(t5 ? &f->t5_wb : &f->clip_wb)         = p->wb;
    *(t5 ? &f->t5_prefix : &f->clip_prefix) = te->component;
    return IMGD_OK;
}

/* The VAE: --vae (model.c opened it), the model's own, else ae.safetensors / vae/ beside
 * the model or ../vae/ae.safetensors. */
static imgd_status vae_find(imgd_model *m, const imgd_load_params *lp) {
    if (m->vae_wb || (m->mi->has_vae && !lp->vae)) return IMGD_OK;
    char base[4096], cand[4][4096], list[8192];
    int  n = 0;
    base_dir(m->path, base, sizeof base);
    if (imgd_fmt(cand[n], sizeof cand[n], "%s/ae.safetensors", base)) n++;
    if (imgd_fmt(cand[n], sizeof cand[n], "%s/vae", base)) n++;
    if (imgd_fmt(cand[n], sizeof cand[n], "%s/../vae/ae.safetensors", base)) n++;
    for (int i = 0; i < n; i++) {
        if (!exists(cand[i])) continue;
        imgd_status st = imgd_weights_open(cand[i], &lp->open, &m->vae_w);
        if (st == IMGD_OK) st = imgd_model_detect(m->vae_w, &m->vae_mi);
        if (st == IMGD_OK && !m->vae_mi->has_vae)
            st = imgd_fail(IMGD_E_FORMAT, "%s (found beside %s) is a %s, not a VAE; give --vae",
                           cand[i], m->path, imgd_model_kind_name(m->vae_mi->kind));
        if (st == IMGD_OK) st = imgd_wbind_new(m->vae_w, m->vae_mi, &m->vae_wb);
        return st;
    }
    join(cand, n, list, sizeof list);
    return imgd_fail(IMGD_E_FORMAT,
                     "%s: a FLUX transformer needs the FLUX VAE and none was found (looked in: "
                     "%s); give --vae ae.safetensors (load param vae) or a FLUX folder's vae/",
                     m->path, list);
}

/* spiece.model, or a folder holding it. */
static bool has_spiece(const char *p) {
    char f[4200];
    if (!is_dir(p)) return exists(p);
    return imgd_fmt(f, sizeof f, "%s/spiece.model", p) && exists(f);
}

/* The T5 tokenizer, in the order imgd.h documents for imgd_load_params.t5_tokenizer. */
static imgd_status t5_tok_find(imgd_flux_model *f, const imgd_model *m,
                               const imgd_load_params *lp) {
    if (lp->t5_tokenizer) {
        imgd_status st = imgd_t5_tok_load(lp->t5_tokenizer, &f->t5_tok);
        return st == IMGD_OK ? st : imgd_fail_prefix(st, "--t5-tokenizer %s", lp->t5_tokenizer);
    }
    char cand[CANDS_MAX][4096], list[16384], base[4096];
    int  n = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if (n < CANDS_MAX && imgd_fmt(cand[n], sizeof cand[n], __VA_ARGS__)) n++;                  \
    } while (0)
    if (is_dir(m->path)) ADD("%s/tokenizer_2", m->path);
    if (lp->t5 && is_dir(lp->t5)) {
        ADD("%s/tokenizer_2", lp->t5);
        ADD("%s/../tokenizer_2", lp->t5);
    } else if (lp->t5) {
        base_dir(lp->t5, base, sizeof base);
        ADD("%s/spiece.model", base);
        ADD("%s/tokenizer_2", base);
    }
    base_dir(m->path, base, sizeof base);
    ADD("%s/spiece.model", base);
    ADD("%s/tokenizer_2", base);
    const char *env  = getenv("IMGD_T5_TOKENIZER");
    const char *xdg  = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    if (env && *env) ADD("%s", env);
    if (xdg && *xdg)
        ADD("%s/imgd/tokenizers/t5", xdg);
    else if (home && *home)
        ADD("%s/.local/share/imgd/tokenizers/t5", home);
    ADD("/usr/local/share/imgd/tokenizers/t5");
    ADD("/usr/share/imgd/tokenizers/t5");
#undef ADD
    for (int i = 0; i < n; i++) {
        if (!has_spiece(cand[i])) continue;
        IMGD_LOG(IMGD_LOG_INFO, "pipeline", "tokenizer", "T5 tokenizer from %s", cand[i]);
        return imgd_t5_tok_load(cand[i], &f->t5_tok);
    }
    join(cand, n, list, sizeof list);
    return imgd_fail(IMGD_E_FORMAT,
                     "%s: no T5 tokenizer found (looked in: %s). Give --t5-tokenizer PATH (load "
                     "param t5_tokenizer, or set IMGD_T5_TOKENIZER) to a spiece.model or a folder "
                     "holding one, e.g. the tokenizer_2/ folder of black-forest-labs/FLUX.1-dev "
                     "or google/t5-v1_1-xxl's spiece.model",
                     m->path, list);
}

/* ---- load ----------------------------------------------------------------------------- */

static imgd_status configs(imgd_flux_model *f, imgd_model *m, const imgd_load_params *lp) {
    imgd_status st = imgd_flux_cfg_from_detect(m->mi, &f->cfg);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s", m->path);
    int32_t na = 0;
    while (na < 4 && lp->arch.rope_axes[na] > 0) na++;
    if (na > 0) {
        f->cfg.n_axes = na;
        for (int32_t i = 0; i < na; i++) f->cfg.axes_dims[i] = lp->arch.rope_axes[i];
    }
    st = imgd_flux_cfg_check(&f->cfg);
    if (st != IMGD_OK)
        return imgd_fail_prefix(st,
                                "%s: transformer config (set the rope axes with --rope-axes "
                                "A,B,C, load param arch.rope_axes)",
                                m->path);
    const imgd_te_config *cte = te_find(f->clip_wb == m->wb ? m->mi : f->clip_p.mi, false);
    st                        = imgd_clip_text_cfg_init(&f->clip, cte, lp->arch.te_heads);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s: CLIP text encoder (--te-heads)", m->path);
    st = imgd_t5_cfg_init(&f->t5, f->t5_wb, f->t5_prefix);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s: T5 encoder", m->path);
    if (f->t5.d_model != f->cfg.context_dim)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: the T5 encoder is %d wide but the transformer's context is %d "
                         "(joint_attention_dim); give the T5 of this model (--t5)",
                         m->path, (int)f->t5.d_model, (int)f->cfg.context_dim);
    if (f->clip.hidden != f->cfg.pooled_dim)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: the CLIP text encoder is %d wide but the transformer's pooled "
                         "input is %d (pooled_projection_dim); give CLIP-L (--clip-l)",
                         m->path, (int)f->clip.hidden, (int)f->cfg.pooled_dim);
    const imgd_model_info *vmi = m->vae_mi ? m->vae_mi : m->mi;
    st = imgd_vae_cfg_init(&f->vae, &vmi->vae, lp->arch.groups > 0 ? lp->arch.groups : 0);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s: VAE config (--groups)", m->path);
    if (f->vae.latent_channels != 16)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: the VAE has %d latent channels; FLUX needs its 16-channel VAE "
                         "(--vae ae.safetensors)",
                         m->path, (int)f->vae.latent_channels);
    f->vae_scale = vmi->vae.scaling_factor > 0 ? vmi->vae.scaling_factor : 0.3611f;
    f->vae_shift = vmi->vae.scaling_factor > 0 ? vmi->vae.shift_factor : 0.1159f;
    /* the scheduler: the folder's config, else FLUX.1-dev's (dynamic shifting) or schnell's
     * (shift 1, none) */
    const char *sj = imgd_weights_meta_find(m->w, "scheduler/scheduler_config.json");
    if (sj) {
        st =
            imgd_flow_params_from_json("scheduler/scheduler_config.json", sj, strlen(sj), &f->flow);
        if (st != IMGD_OK) return imgd_fail_prefix(st, "%s", m->path);
    } else {
        f->flow = imgd_flow_params_default();
        if (!f->cfg.guidance_embed) {
            f->flow.use_dynamic_shifting = false;
            f->flow.shift                = 1.0;
        }
    }
    return IMGD_OK;
}

static imgd_status clip_graph(imgd_flux_model *f, imgd_backend *be) {
    imgd_status st = imgd_graph_new(NULL, &f->clip_g);
    if (st != IMGD_OK) return st;
    f->clip_emb            = imgd_graph_input(f->clip_g, "clip.embeds", IMGD_DTYPE_F32, 3,
                                              (const int64_t[]){1, CLIP_LEN, f->clip.hidden});
    imgd_clip_text_req req = imgd_clip_text_req_default();
    req.last_hidden_state  = false;
    req.pooled             = true;
    imgd_clip_text_out o;
    memset(&o, 0, sizeof o);
    st = imgd_graph_status(f->clip_g);
    if (st == IMGD_OK)
        st = imgd_clip_text_build(f->clip_g, f->clip_wb, f->clip_prefix, &f->clip, 1, f->clip_emb,
                                  &req, &o);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "CLIP text encoder");
    f->clip_sel    = o.pool_select;
    f->clip_pooled = o.pooled;
    imgd_graph_output(f->clip_g, o.pooled);
    st = imgd_graph_plan(f->clip_g, be, NULL);
    if (st == IMGD_OK) st = imgd_graph_alloc(f->clip_g, NULL, 0);
    return st == IMGD_OK ? st : imgd_fail_prefix(st, "CLIP text encoder graph");
}

void imgd_flux_model_free(imgd_flux_model *f) {
    if (!f) return;
    imgd_flux_denoiser_free(f->den);
    imgd_sd_graph_drop(&f->g_enc);
    imgd_graph_free(f->clip_g);
    imgd_t5_runner_free(f->t5_run);
    imgd_t5_tok_free(f->t5_tok);
    part_free(&f->clip_p);
    part_free(&f->t5_p);
    imgd_free(f);
}

imgd_status imgd_flux_model_load(imgd_model *m, const imgd_load_params *lp) {
    const imgd_model_info *mi = m->mi;
    if (!mi->has_dit || mi->dit.type != IMGD_DIT_FLUX)
        return imgd_fail(IMGD_E_FORMAT, "%s: detected as %s but no FLUX transformer was found",
                         m->path, imgd_family_name(mi->family));
    imgd_flux_model *f = imgd_calloc(1, sizeof *f);
    if (!f) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = encoder_load(f, m, lp, false);
    if (st == IMGD_OK) st = encoder_load(f, m, lp, true);
    if (st == IMGD_OK) st = vae_find(m, lp);
    if (st == IMGD_OK) {
        f->vae_wb = m->vae_wb ? m->vae_wb : m->wb;
        st        = configs(f, m, lp);
    }
    if (st == IMGD_OK) st = t5_tok_find(f, m, lp);
    if (st == IMGD_OK)
        st = imgd_t5_runner_new(f->t5_wb, f->t5_prefix, &f->t5, imgd_model_te_backend(m),
                                &f->t5_run);
    if (st == IMGD_OK) st = clip_graph(f, imgd_model_te_backend(m));
    if (st != IMGD_OK) {
        imgd_flux_model_free(f);
        return st;
    }
    IMGD_LOG(IMGD_LOG_DEBUG, "pipeline", "flux_config",
             "%s: FLUX %s, hidden %d, %d+%d blocks, T5 %d x %d layers, CLIP %d, guidance %s",
             m->path, f->cfg.guidance_embed ? "dev" : "schnell", (int)f->cfg.hidden,
             (int)f->cfg.depth, (int)f->cfg.depth_single, (int)f->t5.d_model, (int)f->t5.layers,
             (int)f->clip.hidden, f->cfg.guidance_embed ? "yes" : "no");
    m->flux = f;
    return IMGD_OK;
}

int32_t imgd_flux_default_steps(const imgd_flux_model *f) {
    return f && !f->cfg.guidance_embed ? 4 : 28;
}

bool imgd_flux_has_guidance(const imgd_flux_model *f) {
    return f && f->cfg.guidance_embed;
}

/* ---- request checks --------------------------------------------------------------------- */

static imgd_status check_params(const imgd_model *m, const imgd_gen_params *p) {
    if (!p->prompt) return imgd_fail(IMGD_E_INVALID_ARG, "prompt is required");
    if (p->width < 16 || p->height < 16 || p->width % 16 || p->height % 16 || p->width > 8192 ||
        p->height > 8192)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "size %dx%d: FLUX needs width and height multiples of 16 (VAE 8 x 2x2 "
                         "packing) in 16..8192",
                         (int)p->width, (int)p->height);
    if (p->steps < 1 || p->steps > 1000)
        return imgd_fail(IMGD_E_INVALID_ARG, "steps %d: expected 1..1000", (int)p->steps);
    if (p->batch < 1 || p->batch > 64)
        return imgd_fail(IMGD_E_INVALID_ARG, "batch %d: expected 1..64", (int)p->batch);
    if (!isfinite(p->guidance) || p->guidance < 0 || p->guidance > 100)
        return imgd_fail(IMGD_E_INVALID_ARG, "guidance %g: expected 0..100", (double)p->guidance);
    if (p->max_sequence_length < 0 || p->max_sequence_length > T5_LEN_MAX)
        return imgd_fail(IMGD_E_INVALID_ARG, "max_sequence_length %d: expected 1..%d (0 = default)",
                         (int)p->max_sequence_length, T5_LEN_MAX);
    if (p->negative && p->negative[0])
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "negative prompt: FLUX.1 is guidance-distilled and has no negative "
                         "conditioning (no CFG); leave it empty and steer with the prompt and "
                         "guidance");
    if (p->sampler && strcmp(p->sampler, "euler") != 0)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "sampler %s: FLUX runs the flow-matching Euler sampler only (euler)",
                         p->sampler);
    if (p->schedule && strcmp(p->schedule, "default") != 0 && strcmp(p->schedule, "simple") != 0)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "schedule %s: FLUX uses its own shifted flow schedule (default or simple)",
                         p->schedule);
    if (p->clip_skip > 1)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "clip_skip %d: FLUX conditions on CLIP's pooled output only; clip skip "
                         "does not apply (use 1)",
                         (int)p->clip_skip);
    if (p->mask)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: inpainting is not supported for FLUX yet (txt2img and img2img: "
                         "send the init image without a mask)",
                         m->path);
    if (p->init && (!isfinite(p->strength) || p->strength <= 0 || p->strength > 1))
        return imgd_fail(IMGD_E_INVALID_ARG, "strength %g: expected (0, 1]", (double)p->strength);
    if ((p->loras && p->n_loras > 0) || strstr(p->prompt, "<lora:"))
        return imgd_fail(IMGD_E_UNSUPPORTED, "%s: LoRAs are not supported for FLUX yet", m->path);
    if ((p->hypernets && p->n_hypernets > 0) || strstr(p->prompt, "<hypernet:"))
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: hypernetworks apply to SD 1.x / 2.x / SDXL UNets, not to FLUX",
                         m->path);
    if (p->controls && p->n_controls > 0)
        return imgd_fail(IMGD_E_UNSUPPORTED, "%s: ControlNets are not supported for FLUX yet",
                         m->path);
    if (p->refiner)
        return imgd_fail(IMGD_E_INVALID_ARG, "refiner: a base -> refiner hand-off is SDXL only");
    return IMGD_OK;
}

imgd_status imgd_flux_batch_key(const imgd_model *m, const imgd_gen_params *p, char *buf,
                                size_t cap) {
    imgd_status st = check_params(m, p);
    if (st != IMGD_OK) return st;
    char key[IMGD_GEN_BATCH_KEY_MAX];
    (void)imgd_fmt(key, sizeof key, "%dx%d steps=%d flux", (int)p->width, (int)p->height,
                   (int)p->steps);
    if (strlen(key) >= cap)
        return imgd_fail(IMGD_E_TOO_LARGE, "imgd_gen_batch_key: %zu bytes needed, cap %zu",
                         strlen(key) + 1, cap);
    memcpy(buf, key, strlen(key) + 1);
    return IMGD_OK;
}

/* ---- text ---------------------------------------------------------------------------- */

/* CLIP's pooled output of the prompt ([pooled_dim]): BOS, tokens (truncated to 75), EOS,
 * padded with the pad id to 77, as FluxPipeline's CLIPTokenizer call. */
static imgd_status encode_clip(imgd_model *m, const char *prompt, float *pooled) {
    imgd_flux_model *f   = m->flux;
    int32_t         *ids = NULL, row[CLIP_LEN];
    size_t           n   = 0;
    imgd_status      st  = imgd_clip_tok_encode(m->tok, prompt, &ids, &n);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "prompt (CLIP tokenizer)");
    size_t k = n < CLIP_LEN - 2 ? n : CLIP_LEN - 2;
    row[0]   = imgd_clip_tok_bos(m->tok);
    for (size_t i = 0; i < k; i++) row[1 + i] = ids[i];
    row[1 + k] = imgd_clip_tok_eos(m->tok);
    for (size_t i = k + 2; i < CLIP_LEN; i++) row[i] = imgd_clip_tok_pad(m->tok);
    imgd_free(ids);
    if (n > k)
        IMGD_LOG(IMGD_LOG_WARN, "pipeline", "prompt_truncated",
                 "the prompt has %zu CLIP tokens; CLIP sees the first %zu (T5 sees more)", n, k);
    float  sel[CLIP_LEN];
    float *emb = imgd_malloc((size_t)CLIP_LEN * (size_t)f->clip.hidden * sizeof *emb);
    if (!emb) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    st = imgd_clip_text_embed(f->clip_wb, f->clip_prefix, &f->clip, row, 1, CLIP_LEN, NULL, 0, emb);
    imgd_clip_text_pool_select(row, 1, CLIP_LEN, -1, sel);
    if (st == IMGD_OK) st = imgd_tensor_bind(f->clip_emb, emb);
    if (st == IMGD_OK) st = imgd_tensor_bind(f->clip_sel, sel);
    if (st == IMGD_OK) st = imgd_graph_compute(f->clip_g);
    if (st == IMGD_OK) st = imgd_graph_read_f32(f->clip_g, f->clip_pooled, pooled, f->clip.hidden);
    imgd_free(emb);
    return st == IMGD_OK ? st : imgd_fail_prefix(st, "CLIP text encoder");
}

/* T5's last_hidden_state of the prompt ([len, d_model]): pieces, </s>, pads to len. */
static imgd_status encode_t5(imgd_model *m, const char *prompt, int32_t len, float *out) {
    imgd_flux_model *f   = m->flux;
    int32_t         *ids = imgd_malloc((size_t)len * sizeof *ids);
    size_t           n   = 0;
    if (!ids) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = imgd_t5_tok_encode_padded(f->t5_tok, prompt, len, ids, &n);
    if (st != IMGD_OK) st = imgd_fail_prefix(st, "prompt (T5 tokenizer)");
    if (st == IMGD_OK && n + 1 > (size_t)len)
        IMGD_LOG(IMGD_LOG_WARN, "pipeline", "prompt_truncated",
                 "the prompt has %zu T5 tokens; max_sequence_length %d keeps %d", n, (int)len,
                 (int)len - 1);
    if (st == IMGD_OK) st = imgd_t5_runner_encode(f->t5_run, ids, 1, len, out);
    imgd_free(ids);
    return st;
}

/* ---- one request ---------------------------------------------------------------------- */

typedef struct step_ctx {
    const imgd_gen_params *p;
    double                 t0, t_last;
    int32_t                run;
} step_ctx;

static imgd_status on_step(void *user, int32_t step, int32_t steps, float *x, size_t n) {
    step_ctx *s = user;
    (void)x;
    (void)n;
    s->run++; /* steps run (img2img starts late) */
    s->t_last = now_s();
    if (s->p->on_step && !s->p->on_step(step + 1, steps, s->t_last - s->t0, s->p->user))
        return imgd_fail(IMGD_E_CANCELLED, "cancelled at step %d of %d", (int)(step + 1),
                         (int)steps);
    return IMGD_OK;
}

static imgd_status infotext(const imgd_model *m, const imgd_gen_params *p, char **out) {
    imgd_a1111_info in = imgd_a1111_info_default();
    char            g[32];
    const char     *extra[2] = {"Distilled CFG Scale", g};
    (void)imgd_fmt(g, sizeof g, "%.9g", (double)p->guidance);
    in.prompt    = p->prompt;
    in.steps     = p->steps;
    in.sampler   = "Euler";
    in.schedule  = "Simple";
    in.cfg_scale = 1.0;
    in.seed      = p->seed;
    in.has_seed  = !p->noise;
    in.width     = p->width;
    in.height    = p->height;
    in.model     = m->name;
    in.rng       = p->rng == IMGD_RNG_MODE_CPU ? "CPU" : NULL;
    if (p->init) in.denoising_strength = (double)p->strength;
    if (m->flux->cfg.guidance_embed) {
        in.extra   = extra;
        in.n_extra = 1;
    }
    return imgd_a1111_parameters(&in, out);
}

/* One draw of n normals: the request's noise callback, else its RNG. */
static imgd_status draw(const imgd_gen_params *p, imgd_rng *rng, float *out, size_t n) {
    if (!p->noise) {
        imgd_rng_randn(rng, out, n);
        return IMGD_OK;
    }
    return p->noise(out, n, p->noise_user)
               ? IMGD_OK
               : imgd_fail(IMGD_E_INVALID_ARG, "the noise callback supplied no draw of %zu values",
                           n);
}

/* FluxImg2ImgPipeline.get_timesteps (SD3's): t_start = int(N - min(N * strength, N)),
 * the rounding after the subtraction (SD's pipelines round N * strength first). */
static int32_t img2img_first_step(int32_t steps, double strength) {
    double init = fmin((double)steps * strength, (double)steps);
    double rest = fmax((double)steps - init, 0.0);
    return (int32_t)rest;
}

/* The initial latents [B, N, 64], drawn in FluxPipeline's / FluxImg2ImgPipeline's order
 * from one generator: for img2img the VAE posterior sample of the init image first (its
 * latents, shifted and scaled, repeated for the B images into *init_lat), then the noise
 * [B, 16, H/8, W/8] of the request's images; packed. */
static imgd_status draw_latents(imgd_model *m, const imgd_gen_params *p, float *lat,
                                float **init_lat) {
    imgd_flux_model *f = m->flux;
    int64_t          B = p->batch, h = p->height / 8, w = p->width / 8;
    size_t           per = (size_t)(16 * h * w), n = (size_t)B * per;
    float           *z   = imgd_malloc(n * sizeof *z);
    float           *img = NULL, *x0 = NULL;
    imgd_status      st = IMGD_OK;
    imgd_rng         rng;
    if (!z) return imgd_fail(IMGD_E_NOMEM, "out of memory for the noise");
    imgd_rng_init(&rng, p->rng == IMGD_RNG_MODE_PHILOX ? IMGD_RNG_PHILOX : IMGD_RNG_CPU, p->seed);
    if (p->init) {
        img       = imgd_malloc((size_t)3 * p->width * p->height * sizeof *img);
        x0        = imgd_malloc(n * sizeof *x0);
        *init_lat = imgd_malloc(n * sizeof **init_lat);
        if (!img || !x0 || !*init_lat) st = imgd_fail(IMGD_E_NOMEM, "out of memory for img2img");
        if (st == IMGD_OK) st = imgd_sd_prep_image(p->init, p->width, p->height, img);
        if (st == IMGD_OK) st = draw(p, &rng, z, per); /* the posterior sample's draw */
        if (st == IMGD_OK)
            st =
                imgd_vae_encode_sample(&f->g_enc, imgd_model_vae_backend(m), f->vae_wb, &f->vae,
                                       f->vae_shift, f->vae_scale, img, p->height, p->width, z, x0);
        for (int64_t b = 1; st == IMGD_OK && b < B; b++)
            memcpy(x0 + (size_t)b * per, x0, per * sizeof *x0);
        if (st == IMGD_OK) imgd_flux_pack(x0, B, 16, h, w, *init_lat);
    }
    if (st == IMGD_OK) st = draw(p, &rng, z, n);
    if (st == IMGD_OK) imgd_flux_pack(z, B, 16, h, w, lat);
    imgd_free(z);
    imgd_free(img);
    imgd_free(x0);
    return st;
}

/* Bundles a request's images into a result (takes pixels on success). */
static imgd_status make_result(const imgd_model *m, const imgd_gen_params *p, float *pixels,
                               imgd_gen_result **out) {
    size_t           HW  = (size_t)p->width * p->height;
    imgd_gen_result *res = imgd_calloc(1, sizeof *res);
    imgd_status      st  = res ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (st == IMGD_OK) {
        res->images = imgd_calloc((size_t)p->batch, sizeof *res->images);
        if (!res->images) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    for (int32_t b = 0; st == IMGD_OK && b < p->batch; b++) {
        imgd_image im = {0};
        st            = imgd_image_from_nchw(pixels + (size_t)b * 3 * HW, p->width, p->height, &im);
        if (st == IMGD_OK) {
            res->images[b] = (imgd_image_u8){im.w, im.h, im.c, im.px};
            res->n         = b + 1;
        }
    }
    if (st == IMGD_OK) st = infotext(m, p, &res->infotext);
    if (st != IMGD_OK) {
        imgd_gen_result_free(res);
        return st;
    }
    res->pixels = pixels;
    *out        = res;
    return IMGD_OK;
}

static imgd_status run_one(imgd_model *m, const imgd_gen_params *p, double t0,
                           imgd_gen_result **out) {
    imgd_flux_model *f  = m->flux;
    imgd_status      st = check_params(m, p);
    if (st != IMGD_OK) return st;
    int32_t L = p->max_sequence_length > 0 ? p->max_sequence_length
                : f->cfg.guidance_embed    ? 512
                                           : 256;
    int64_t B = p->batch, N = (int64_t)(p->height / 16) * (p->width / 16);
    size_t D = (size_t)f->t5.d_model, P = (size_t)f->clip.hidden, HW = (size_t)p->width * p->height;
    float *emb    = imgd_malloc((size_t)B * L * D * sizeof *emb);
    float *pooled = imgd_malloc((size_t)B * P * sizeof *pooled);
    float *lat    = imgd_malloc((size_t)(B * N * 64) * sizeof *lat);
    float *pixels = imgd_malloc((size_t)B * 3 * HW * sizeof *pixels);
    if (!emb || !pooled || !lat || !pixels) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    double t_enc = now_s();
    if (st == IMGD_OK) st = encode_clip(m, p->prompt, pooled);
    if (st == IMGD_OK) st = encode_t5(m, p->prompt, L, emb);
    for (int64_t b = 1; st == IMGD_OK && b < B; b++) { /* num_images_per_prompt copies */
        memcpy(emb + (size_t)b * L * D, emb, (size_t)L * D * sizeof *emb);
        memcpy(pooled + (size_t)b * P, pooled, P * sizeof *pooled);
    }
    t_enc           = now_s() - t_enc;
    float *init_lat = NULL;
    if (st == IMGD_OK) st = draw_latents(m, p, lat, &init_lat);
    step_ctx sc = {p, t0, 0, 0};
    if (st == IMGD_OK) {
        imgd_flux_gen_params gp = imgd_flux_gen_params_default();
        gp.transformer          = m->wb;
        gp.cfg                  = &f->cfg;
        gp.vae                  = f->vae_wb;
        gp.vae_cfg              = &f->vae;
        gp.vae_scale            = f->vae_scale;
        gp.vae_shift            = f->vae_shift;
        gp.be                   = m->be;
        gp.vae_be               = imgd_model_vae_backend(m);
        gp.flow                 = f->flow;
        gp.steps                = p->steps;
        gp.guidance             = p->guidance;
        gp.height               = p->height;
        gp.width                = p->width;
        gp.on_step              = on_step;
        gp.step_user            = &sc;
        gp.keep                 = &f->den;
        gp.init_latents         = init_lat;
        gp.first_step           = p->init ? img2img_first_step(p->steps, (double)p->strength) : 0;
        double t_smp            = now_s();
        sc.t_last               = t_smp;
        st                      = imgd_flux_generate(&gp, emb, pooled, B, L, lat, pixels);
        double t_end            = now_s();
        if (st == IMGD_OK) st = make_result(m, p, pixels, out);
        if (st == IMGD_OK) {
            pixels             = NULL;
            (*out)->t_encode_s = t_enc;
            (*out)->t_sample_s = sc.t_last - t_smp;
            (*out)->t_decode_s = t_end - sc.t_last;
            (*out)->t_total_s  = now_s() - t0;
            (*out)->steps_run  = sc.run;
        }
    }
    imgd_free(emb);
    imgd_free(pooled);
    imgd_free(lat);
    imgd_free(init_lat);
    imgd_free(pixels);
    return st;
}

imgd_status imgd_flux_generate_many(imgd_model *m, const imgd_gen_params *const *items, size_t n,
                                    imgd_gen_item_result *out) {
    memset(out, 0, n * sizeof *out);
    int32_t images = 0;
    for (size_t i = 0; i < n; i++) images += items[i] ? items[i]->batch : 0;
    if (images > IMGD_GEN_MANY_IMAGES_MAX) {
        imgd_status st =
            imgd_fail(IMGD_E_TOO_LARGE, "the items ask for %d images; one batch runs at most %d",
                      (int)images, (int)IMGD_GEN_MANY_IMAGES_MAX);
        for (size_t i = 0; i < n; i++) {
            out[i].status = st;
            (void)imgd_fmt(out[i].error, sizeof out[i].error, "%s", imgd_last_error());
        }
        return st;
    }
    double      t0                        = now_s();
    imgd_status ret                       = IMGD_OK;
    char        first[IMGD_GEN_ERROR_MAX] = "";
    for (size_t i = 0; i < n; i++) {
        imgd_status st = items[i] ? run_one(m, items[i], t0, &out[i].result)
                                  : imgd_fail(IMGD_E_INVALID_ARG, "item %zu is NULL", i);
        out[i].status  = st;
        if (st == IMGD_OK) continue;
        (void)imgd_fmt(out[i].error, sizeof out[i].error, "%s", imgd_last_error());
        if (ret == IMGD_OK) {
            ret = st;
            (void)imgd_fmt(first, sizeof first, "%s", out[i].error);
        }
    }
    if (ret != IMGD_OK) (void)imgd_fail(ret, "%s", first);
    return ret;
}
