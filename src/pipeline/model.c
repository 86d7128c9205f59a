/* imgd_model: a checkpoint opened, detected and bound for generation (SD 1.x / 2.x).
 * Networks are built per request shape by the pipeline (sd.c); this file owns the files,
 * the configs, the tokenizer and the backend. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"
#include "pipeline/flux.h"
#include "pipeline/pipeline.h"

imgd_load_params imgd_load_params_default(void) {
    imgd_load_params p;
    memset(&p, 0, sizeof p);
    p.open      = imgd_open_params_default();
    p.backend   = "cpu";
    p.precision = IMGD_PRECISION_AUTO;
    return p;
}

static const char *const k_precision_names[IMGD_PRECISION_COUNT] = {"auto", "f32", "bf16", "f16"};

const char *imgd_precision_name(imgd_precision p) {
    return (unsigned)p < IMGD_PRECISION_COUNT ? k_precision_names[p] : "unknown";
}

bool imgd_precision_parse(const char *s, imgd_precision *out) {
    for (int i = 0; s && i < IMGD_PRECISION_COUNT; i++) {
        if (strcmp(s, k_precision_names[i]) == 0) {
            if (out) *out = (imgd_precision)i;
            return true;
        }
    }
    return false;
}

static bool is_dir(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool has_vocab(const char *dir) {
    char        p[4096];
    struct stat st;
    return imgd_fmt(p, sizeof p, "%s/vocab.json", dir) && stat(p, &st) == 0 &&
           imgd_fmt(p, sizeof p, "%s/merges.txt", dir) && stat(p, &st) == 0;
}

/* Where the CLIP tokenizer comes from, in order: the explicit folder; the model's own
 * tokenizer/ (diffusers folders); $IMGD_TOKENIZER_DIR; a tokenizer/ folder beside a single
 * file; $XDG_DATA_HOME/imgd/tokenizers/clip (default ~/.local/share/...); then
 * /usr/local/share/imgd/tokenizers/clip and /usr/share/imgd/tokenizers/clip. */
imgd_status imgd_sd_tokenizer_load(imgd_model *m, const char *path, const char *explicit_dir) {
    char        cand[8][4096];
    const char *why[8];
    int         n = 0;
    if (explicit_dir) {
        if (!has_vocab(explicit_dir))
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "--tokenizer %s: no vocab.json + merges.txt there (a CLIP tokenizer "
                             "folder, e.g. a diffusers model's tokenizer/)",
                             explicit_dir);
        return imgd_clip_tok_load(explicit_dir, &m->tok);
    }
    if (is_dir(path) && imgd_fmt(cand[n], sizeof cand[n], "%s/tokenizer", path))
        why[n++] = "the model's tokenizer/";
    const char *env = getenv("IMGD_TOKENIZER_DIR");
    if (env && *env && imgd_fmt(cand[n], sizeof cand[n], "%s", env))
        why[n++] = "$IMGD_TOKENIZER_DIR";
    if (!is_dir(path)) {
        const char *slash = strrchr(path, '/');
        int         dl    = slash ? (int)(slash - path) : 1;
        if (imgd_fmt(cand[n], sizeof cand[n], "%.*s/tokenizer", dl, slash ? path : "."))
            why[n++] = "tokenizer/ beside the file";
    }
    const char *xdg  = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    if (xdg && *xdg && imgd_fmt(cand[n], sizeof cand[n], "%s/imgd/tokenizers/clip", xdg))
        why[n++] = "$XDG_DATA_HOME/imgd/tokenizers/clip";
    else if (home && *home &&
             imgd_fmt(cand[n], sizeof cand[n], "%s/.local/share/imgd/tokenizers/clip", home))
        why[n++] = "~/.local/share/imgd/tokenizers/clip";
    if (imgd_fmt(cand[n], sizeof cand[n], "/usr/local/share/imgd/tokenizers/clip")) why[n++] = "";
    if (imgd_fmt(cand[n], sizeof cand[n], "/usr/share/imgd/tokenizers/clip")) why[n++] = "";
    for (int i = 0; i < n; i++) {
        if (has_vocab(cand[i])) {
            IMGD_LOG(IMGD_LOG_INFO, "pipeline", "tokenizer", "CLIP tokenizer from %s (%s)", cand[i],
                     why[i][0] ? why[i] : "default location");
            return imgd_clip_tok_load(cand[i], &m->tok);
        }
    }
    char   list[4096];
    size_t k = 0;
    list[0]  = '\0';
    for (int i = 0; i < n && k < sizeof list; i++) {
        (void)imgd_fmt(list + k, sizeof list - k, "%s%s", i ? ", " : "", cand[i]);
        k = strlen(list);
    }
    return imgd_fail(IMGD_E_FORMAT,
                     "%s: no CLIP tokenizer found (looked in: %s). Give --tokenizer DIR (or set "
                     "IMGD_TOKENIZER_DIR) to a folder with vocab.json and merges.txt, e.g. the "
                     "tokenizer/ folder of the model's diffusers repository "
                     "(runwayml/stable-diffusion-v1-5 or openai/clip-vit-large-patch14)",
                     path, list);
}

/* Checks that the model is something this pipeline runs, with an error that says what
 * it is instead. */
static imgd_status check_runnable(const char *path, const imgd_model_info *mi) {
    imgd_model_kind k = imgd_model_info_kind(mi);
    imgd_family     f = imgd_model_info_family(mi);
    if (k != IMGD_KIND_CHECKPOINT && k != IMGD_KIND_UNET)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s is a %s (family %s), not a model that generates images; give a "
                         "checkpoint or diffusers folder",
                         path, imgd_model_kind_name(k), imgd_family_name(f));
    if (imgd_flux_family(f)) return IMGD_OK; /* its parts: imgd_flux_model_load */
    if (f != IMGD_FAMILY_SD1 && f != IMGD_FAMILY_SD2 && f != IMGD_FAMILY_SDXL &&
        f != IMGD_FAMILY_SDXL_REFINER)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s is a %s %s; generation supports SD 1.x, 2.x, SDXL and FLUX.1 so far",
                         path, imgd_family_name(f), imgd_model_kind_name(k));
    if (!mi->has_unet) return imgd_fail(IMGD_E_FORMAT, "%s: no UNet found", path);
    if (!mi->has_vae)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s has no VAE; give one with --vae FILE (e.g. "
                         "vae-ft-mse-840000-ema-pruned.safetensors)",
                         path);
    if (mi->n_te < 1)
        return imgd_fail(IMGD_E_FORMAT,
                         "%s has no text encoder (a UNet-only file); use the full checkpoint "
                         "or a diffusers folder",
                         path);
    return IMGD_OK;
}

static imgd_status build_configs(imgd_model *m, const imgd_arch_override *o) {
    const imgd_model_info *mi = m->mi;
    imgd_status            st = imgd_unet_cfg_from_detect(m->unet_mi ? m->unet_mi : mi, &m->unet);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s: UNet", m->path);
    if (o->groups > 0) m->unet.groups = o->groups;
    if (o->unet_head_dim > 0) {
        m->unet.head_dim = o->unet_head_dim;
    } else if (o->unet_heads > 0) {
        m->unet.head_dim = 0;
        for (int i = 0; i < IMGD_MAX_LEVELS; i++) m->unet.heads[i] = o->unet_heads;
    }
    st = imgd_unet_cfg_check(&m->unet);
    if (st != IMGD_OK)
        return imgd_fail_prefix(st,
                                "%s: UNet config (override with --groups / --heads / "
                                "--head-dim)",
                                m->path);
    st = imgd_sd_text_setup(m, o->te_heads);
    if (st != IMGD_OK) return st;
    const imgd_model_info *vmi = m->vae_mi ? m->vae_mi : mi;
    st = imgd_vae_cfg_init(&m->vae, &vmi->vae, o->groups > 0 ? o->groups : vmi->vae.groups);
    if (st != IMGD_OK)
        return imgd_fail_prefix(st, "%s: VAE config (override with --groups)", m->path);
    m->vae_scale = vmi->vae.scaling_factor > 0 ? vmi->vae.scaling_factor : 0.18215f;
    m->vae_shift = vmi->vae.shift_factor;
    if (o->prediction == 1)
        m->prediction = IMGD_PRED_EPSILON;
    else if (o->prediction == 2)
        m->prediction = IMGD_PRED_V;
    else
        m->prediction = mi->prediction == IMGD_PRED_V ? IMGD_PRED_V : IMGD_PRED_EPSILON;
    return IMGD_OK;
}

static imgd_backend_params backend_params(const imgd_load_params *p) {
    imgd_backend_params bp = imgd_backend_params_default();
    bp.n_threads           = p->threads;
    switch (p->precision) {
    case IMGD_PRECISION_F32: bp.math = IMGD_CPU_MATH_F32; break;
    case IMGD_PRECISION_BF16: bp.math = IMGD_CPU_MATH_BF16; break;
    default: bp.math = IMGD_CPU_MATH_AUTO; break;
    }
    /* GPUs: f16/bf16 GEMMs only when asked for; AUTO stays f32 (exact to the goldens) */
    bp.gpu_math = p->precision == IMGD_PRECISION_F16    ? IMGD_GPU_MATH_F16
                  : p->precision == IMGD_PRECISION_BF16 ? IMGD_GPU_MATH_BF16
                                                        : IMGD_GPU_MATH_F32;
    return bp;
}

bool imgd_offload_parse(const char *s, uint32_t *bits) {
    uint32_t b = 0;
    if (!s) return false;
    while (*s) {
        size_t n = strcspn(s, ",");
        if (n == 2 && strncmp(s, "te", 2) == 0)
            b |= IMGD_OFFLOAD_TE;
        else if (n == 3 && strncmp(s, "vae", 3) == 0)
            b |= IMGD_OFFLOAD_VAE;
        else if (!(n == 4 && strncmp(s, "none", 4) == 0))
            return false;
        s += n;
        if (*s == ',') s++;
    }
    *bits = b;
    return true;
}

/* The CPU backend the offloaded parts run on (f32 where the GPU was asked for f16, which
 * the CPU does not compute), shared by the text encoders and the VAE. */
static imgd_status offload_backends(imgd_model *m, const imgd_load_params *lp) {
    if (lp->offload & ~(IMGD_OFFLOAD_TE | IMGD_OFFLOAD_VAE))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "offload 0x%x: only IMGD_OFFLOAD_TE | "
                         "IMGD_OFFLOAD_VAE (te, vae) exist",
                         (unsigned)lp->offload);
    imgd_load_params cl = *lp;
    if (cl.precision == IMGD_PRECISION_F16) cl.precision = IMGD_PRECISION_F32;
    imgd_backend_params bp = backend_params(&cl);
    bp.pool                = m->pool;
    imgd_backend *cpu      = NULL;
    imgd_status   st       = imgd_backend_new("cpu", &bp, &cpu);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "offload to the CPU");
    if (lp->offload & IMGD_OFFLOAD_TE) m->te_be = cpu;
    if (lp->offload & IMGD_OFFLOAD_VAE) m->vae_be = cpu;
    IMGD_LOG(IMGD_LOG_INFO, "pipeline", "offload", "%s%s%s run on the CPU backend",
             lp->offload & IMGD_OFFLOAD_TE ? "the text encoders" : "",
             lp->offload == (IMGD_OFFLOAD_TE | IMGD_OFFLOAD_VAE) ? " and " : "",
             lp->offload & IMGD_OFFLOAD_VAE ? "the VAE" : "");
    return IMGD_OK;
}

/* Whether a VAE file is one of the fp16-safe SDXL VAEs (madebyollin's sdxl-vae-fp16-fix
 * and its copies), by name: its weights are the same shapes as the original's. */
static bool fp16_safe_vae(const char *path) {
    const char *b = strrchr(path, '/');
    b             = b && b[1] ? b + 1 : path;
    return strstr(b, "fp16-fix") || strstr(b, "fp16_fix") || strstr(b, "fp16fix");
}

/* Base name of the model for the infotext: file name without extension, or folder name. */
static char *model_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    size_t e = n;
    for (size_t i = n; i > b; i--) {
        if (path[i - 1] == '.') {
            e = i - 1;
            break;
        }
    }
    if (e == b) e = n;
    char *s = imgd_malloc(e - b + 1);
    if (!s) return NULL;
    memcpy(s, path + b, e - b);
    s[e - b] = '\0';
    return s;
}

/* The CLIP tokenizer folder to use: the given one, else for a separate CLIP-L folder (a
 * FLUX diffusers folder's text_encoder/ or the folder itself) its sibling tokenizer/ when
 * it has vocab.json + merges.txt; NULL = the usual search. */
static const char *flux_tokenizer_dir(const imgd_load_params *lp, char *buf) {
    if (lp->tokenizer_dir || !lp->clip_l || !is_dir(lp->clip_l)) return lp->tokenizer_dir;
    if (imgd_fmt(buf, 4096, "%s/tokenizer", lp->clip_l) && has_vocab(buf)) return buf;
    if (imgd_fmt(buf, 4096, "%s/../tokenizer", lp->clip_l) && has_vocab(buf)) return buf;
    return NULL;
}

imgd_status imgd_model_load(const char *path, const imgd_load_params *params, imgd_model **out) {
    if (!path || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_model_load: path and out are required");
    imgd_load_params lp = params ? *params : imgd_load_params_default();
    bool on_cpu = !lp.backend || strcmp(lp.backend, "cpu") == 0 || strcmp(lp.backend, "ref") == 0;
    if (lp.precision == IMGD_PRECISION_F16 && on_cpu)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "--precision f16: the CPU backend computes in f32 or bf16; use f32, "
                         "bf16 or auto");
    imgd_model *m = imgd_calloc(1, sizeof *m);
    if (!m) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = IMGD_OK;
    char        tokdir[4096];
    m->path = imgd_strdup(path);
    m->name = model_name(path);
    if (!m->path || !m->name) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (st == IMGD_OK) st = imgd_weights_open(path, &lp.open, &m->w);
    if (st == IMGD_OK) st = imgd_model_detect(m->w, &m->mi);
    if (st == IMGD_OK && lp.vae) {
        st = imgd_weights_open(lp.vae, &lp.open, &m->vae_w);
        if (st == IMGD_OK) st = imgd_model_detect(m->vae_w, &m->vae_mi);
        if (st == IMGD_OK && imgd_model_info_kind(m->vae_mi) != IMGD_KIND_VAE &&
            !m->vae_mi->has_vae)
            st = imgd_fail(IMGD_E_FORMAT, "--vae %s is a %s, not a VAE", lp.vae,
                           imgd_model_kind_name(imgd_model_info_kind(m->vae_mi)));
        if (st == IMGD_OK) m->mi->has_vae = true; /* the pipeline takes it from vae_w */
    }
    if (st == IMGD_OK && lp.unet) {
        st = imgd_weights_open(lp.unet, &lp.open, &m->unet_w);
        if (st == IMGD_OK) st = imgd_model_detect(m->unet_w, &m->unet_mi);
        if (st == IMGD_OK && !m->unet_mi->has_unet)
            st = imgd_fail(IMGD_E_FORMAT, "--unet %s is a %s, not a UNet", lp.unet,
                           imgd_model_kind_name(imgd_model_info_kind(m->unet_mi)));
        if (st == IMGD_OK && m->unet_mi->family != m->mi->family)
            st = imgd_fail(IMGD_E_FORMAT, "--unet %s is a %s UNet but %s is %s", lp.unet,
                           imgd_family_name(m->unet_mi->family), path,
                           imgd_family_name(m->mi->family));
    }
    if (st == IMGD_OK) st = check_runnable(path, m->mi);
    bool flux = st == IMGD_OK && imgd_flux_family(m->mi->family);
    if (st == IMGD_OK && flux && lp.unet)
        st = imgd_fail(IMGD_E_INVALID_ARG, "--unet %s: %s is a FLUX model (it has no UNet)",
                       lp.unet, path);
    if (st == IMGD_OK) st = imgd_wbind_new(m->w, m->mi, &m->wb);
    if (st == IMGD_OK && m->vae_w) st = imgd_wbind_new(m->vae_w, m->vae_mi, &m->vae_wb);
    if (st == IMGD_OK && m->unet_w) st = imgd_wbind_new(m->unet_w, m->unet_mi, &m->unet_wb);
    if (st == IMGD_OK && !flux) st = build_configs(m, &lp.arch);
    /* after the configs (from the model's own files): only the VAE's binder is swapped */
    if (st == IMGD_OK && !flux && lp.components) st = imgd_sd_share_vae(m, lp.components, &lp.open);
    if (st == IMGD_OK && !flux) st = imgd_sd_tokenizer_load(m, path, lp.tokenizer_dir);
    if (st == IMGD_OK && !flux) st = imgd_sd_adapters_init(m, &lp);
    if (st == IMGD_OK) st = imgd_pool_new(lp.threads, &m->pool);
    if (st == IMGD_OK) {
        imgd_backend_params bp = backend_params(&lp);
        bp.pool                = m->pool;
        /* FLUX's T5 and transformer overflow f16 (the GPU stores activations in the math
         * type): f16 on a GPU runs in bf16, as diffusers recommends */
        if (flux && !on_cpu && lp.precision == IMGD_PRECISION_F16) {
            bp.gpu_math = IMGD_GPU_MATH_BF16;
            IMGD_LOG(IMGD_LOG_INFO, "pipeline", "flux_bf16",
                     "%s: FLUX runs in bf16 on the GPU (its activations overflow f16)", path);
        }
        st = imgd_backend_new(lp.backend ? lp.backend : "cpu", &bp, &m->be);
    }
    if (st == IMGD_OK && flux) st = imgd_flux_model_load(m, &lp);
    if (st == IMGD_OK && flux) /* after the encoders, whose errors say more */
        st = imgd_sd_tokenizer_load(m, path, flux_tokenizer_dir(&lp, tokdir));
    /* --offload: the text encoders and/or the VAE on the CPU backend */
    if (st == IMGD_OK && lp.offload && lp.backend && strcmp(lp.backend, "cpu") != 0)
        st = offload_backends(m, &lp);
    /* SDXL's VAE overflows in f16 (NaNs): on a GPU asked for f16 it runs in bf16 on a
     * backend of its own, unless the file is the fp16-fix VAE */
    if (st == IMGD_OK && lp.precision == IMGD_PRECISION_F16 && !on_cpu && m->n_time_ids > 0 &&
        !m->vae_be && !fp16_safe_vae(lp.vae ? lp.vae : path)) {
        imgd_backend_params bp = backend_params(&lp);
        bp.pool                = m->pool;
        bp.gpu_math            = IMGD_GPU_MATH_BF16;
        st                     = imgd_backend_new(lp.backend ? lp.backend : "cpu", &bp, &m->vae_be);
        if (st == IMGD_OK)
            IMGD_LOG(IMGD_LOG_INFO, "pipeline", "vae_bf16",
                     "%s: the SDXL VAE runs in bf16 (it overflows in f16; give an fp16-fix "
                     "VAE with --vae to run it in f16)",
                     path);
    }
    if (st != IMGD_OK) {
        imgd_model_free(m);
        return st;
    }
    if (flux)
        IMGD_LOG(IMGD_LOG_INFO, "pipeline", "model_loaded", "%s: %s %s", path,
                 imgd_family_name(m->mi->family), imgd_model_kind_name(m->mi->kind));
    else
        IMGD_LOG(IMGD_LOG_INFO, "pipeline", "model_loaded",
                 "%s: %s %s, UNet widths %d.., TE %d layers", path, imgd_family_name(m->mi->family),
                 imgd_model_kind_name(m->mi->kind), (int)m->unet.widths[0],
                 (int)m->te[0].cfg.layers);
    *out = m;
    return IMGD_OK;
}

void imgd_model_free(imgd_model *m) {
    if (!m) return;
    imgd_flux_model_free(m->flux);
    imgd_sd_adapters_free(m);
    imgd_sd_graphs_free(m);
    imgd_sd_controls_free(m);
    imgd_sd_share_release(m); /* after the graphs, which bound the shared VAE */
    if (m->te_be != m->vae_be) imgd_backend_free(m->te_be); /* the two may be one */
    imgd_backend_free(m->vae_be);
    imgd_backend_free(m->be);
    imgd_pool_free(m->pool); /* after the backend, which borrows it */
    imgd_clip_tok_free(m->tok);
    imgd_wbind_free(m->unet_wb);
    imgd_wbind_free(m->vae_wb);
    imgd_wbind_free(m->wb);
    imgd_model_info_free(m->unet_mi);
    imgd_model_info_free(m->vae_mi);
    imgd_model_info_free(m->mi);
    imgd_weights_free(m->unet_w);
    imgd_weights_free(m->vae_w);
    imgd_weights_free(m->w);
    imgd_free(m->name);
    imgd_free(m->path);
    imgd_free(m);
}

const imgd_model_info *imgd_model_get_info(const imgd_model *m) {
    return m ? m->mi : NULL;
}

void imgd_model_native_size(const imgd_model *m, int32_t *width, int32_t *height) {
    int32_t s = 512;
    if (m && (m->n_time_ids > 0 || m->flux))
        s = 1024;
    else if (m && m->mi->family == IMGD_FAMILY_SD2 && m->prediction == IMGD_PRED_V)
        s = 768;
    if (width) *width = s;
    if (height) *height = s;
}

int32_t imgd_model_default_steps(const imgd_model *m) {
    return m && m->flux ? imgd_flux_default_steps(m->flux) : 20;
}

bool imgd_model_has_guidance(const imgd_model *m) {
    return m && imgd_flux_has_guidance(m->flux);
}
