/* imgd generate: txt2img / img2img / inpainting from the command line. Uses only the
 * public header. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "imgd.h"

#define CLI_ADAPTERS_MAX 16 /* --lora / --embedding / --hypernet flags */

typedef struct gen_opts {
    const char        *model, *out, *init, *mask, *tokenizer, *vae, *backend, *refiner;
    bool               json;
    bool               width_set, height_set, steps_set;
    imgd_lora_spec     loras[CLI_ADAPTERS_MAX];
    char               lora_path[CLI_ADAPTERS_MAX][1024];
    const char        *embeddings[CLI_ADAPTERS_MAX];
    imgd_hypernet_spec hypernets[CLI_ADAPTERS_MAX];
    char               hypernet_path[CLI_ADAPTERS_MAX][1024];
    imgd_gen_params    p;
    imgd_load_params   lp;
    /* --control FILE:IMG[:SCALE[:START:END]]: the argument split in place */
    char              ctl_arg[IMGD_CONTROL_MAX][4096];
    const char       *ctl_img[IMGD_CONTROL_MAX];
    imgd_control_spec ctl[IMGD_CONTROL_MAX];
    imgd_image_u8     ctl_px[IMGD_CONTROL_MAX];
    int32_t           n_ctl;
    imgd_control_spec ctl_all; /* the options that apply to every control */
} gen_opts;

static bool parse_int(const char *flag, const char *v, long lo, long hi, int32_t *out) {
    char *end = NULL;
    errno     = 0;
    long x    = strtol(v, &end, 10);
    if (errno || !end || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "imgd generate: %s '%s': expected an integer in %ld..%ld\n", flag, v, lo,
                hi);
        return false;
    }
    *out = (int32_t)x;
    return true;
}

static bool parse_u64(const char *flag, const char *v, uint64_t *out) {
    char *end            = NULL;
    errno                = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || !end || *end || end == v || v[0] == '-') {
        fprintf(stderr, "imgd generate: %s '%s': expected a non-negative integer\n", flag, v);
        return false;
    }
    *out = (uint64_t)x;
    return true;
}

static bool parse_float(const char *flag, const char *v, double lo, double hi, float *out) {
    char *end = NULL;
    errno     = 0;
    double x  = strtod(v, &end);
    if (errno || !end || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "imgd generate: %s '%s': expected a number in %g..%g\n", flag, v, lo, hi);
        return false;
    }
    *out = (float)x;
    return true;
}

/* FILE[:W] of --lora / --hypernet into path (cap bytes) and *w: W after the last ':' when
 * it is a number (paths may contain ':'), else 1. */
static bool parse_file_weight(const char *flag, const char *v, char *path, size_t cap, float *w) {
    const char *colon = strrchr(v, ':');
    char       *end   = NULL;
    double      x     = colon ? strtod(colon + 1, &end) : 1.0;
    size_t      n     = strlen(v);
    if (colon && end && end != colon + 1 && *end == '\0' && isfinite(x))
        n = (size_t)(colon - v);
    else
        x = 1.0;
    if (n == 0 || n >= cap) {
        fprintf(stderr, "imgd generate: %s '%s': expected FILE[:WEIGHT]\n", flag, v);
        return false;
    }
    memcpy(path, v, n);
    path[n] = '\0';
    *w      = (float)x;
    return true;
}

/* --hypernet FILE[:W] */
static bool parse_hypernet(gen_opts *o, const char *v) {
    if (o->p.n_hypernets == CLI_ADAPTERS_MAX) {
        fprintf(stderr, "imgd generate: more than %d --hypernet flags\n", CLI_ADAPTERS_MAX);
        return false;
    }
    int32_t             i  = o->p.n_hypernets;
    imgd_hypernet_spec *hs = &o->hypernets[i];
    if (!parse_file_weight("--hypernet", v, o->hypernet_path[i], sizeof o->hypernet_path[i],
                           &hs->weight))
        return false;
    hs->path       = o->hypernet_path[i];
    o->p.hypernets = o->hypernets;
    o->p.n_hypernets++;
    return true;
}

/* --lora FILE[:W] */
static bool parse_lora(gen_opts *o, const char *v) {
    if (o->p.n_loras == CLI_ADAPTERS_MAX) {
        fprintf(stderr, "imgd generate: more than %d --lora flags\n", CLI_ADAPTERS_MAX);
        return false;
    }
    int32_t         i  = o->p.n_loras;
    imgd_lora_spec *ls = &o->loras[i];
    float           w  = 1.0f;
    if (!parse_file_weight("--lora", v, o->lora_path[i], sizeof o->lora_path[i], &w)) return false;
    ls->path      = o->lora_path[i];
    ls->weight    = w;
    ls->weight_te = NAN;
    ls->mode      = o->p.lora_mode;
    o->p.loras    = o->loras;
    o->p.n_loras++;
    return true;
}

static bool parse_lora_mode(const char *v, int32_t *mode) {
    static const char *const names[IMGD_LORA_MODE_COUNT] = {"auto", "merge", "unmerged"};
    for (int32_t i = 0; i < IMGD_LORA_MODE_COUNT; i++) {
        if (strcmp(v, names[i]) == 0) {
            *mode = i;
            return true;
        }
    }
    fprintf(stderr, "imgd generate: --lora-mode '%s': expected auto, merge or unmerged\n", v);
    return false;
}

/* "AxB" (sep 'x') or "A,B" (sep ','): two integers in 0..16384. */
static bool parse_size(const char *flag, const char *v, char sep, int32_t *a, int32_t *b) {
    char *end = NULL;
    long  x = 0, y = 0;
    errno   = 0;
    x       = strtol(v, &end, 10);
    bool ok = !errno && end != v && *end == sep;
    if (ok) {
        const char *s2 = end + 1;
        y              = strtol(s2, &end, 10);
        ok             = !errno && end != s2 && !*end;
    }
    if (!ok || x < 0 || y < 0 || x > 16384 || y > 16384) {
        fprintf(stderr, "imgd generate: %s '%s': expected %s with integers in 0..16384\n", flag, v,
                sep == 'x' ? "WIDTHxHEIGHT" : "LEFT,TOP");
        return false;
    }
    *a = (int32_t)x;
    *b = (int32_t)y;
    return true;
}

/* --rope-axes A,B[,C[,D]]: positive even integers. */
static bool parse_axes(const char *v, int32_t *axes) {
    int32_t n = 0;
    for (const char *c = v; n < 4;) {
        char *end = NULL;
        errno     = 0;
        long x    = strtol(c, &end, 10);
        if (errno || end == c || x < 2 || x > 4096 || x % 2) break;
        axes[n++] = (int32_t)x;
        if (*end == '\0') return true;
        if (*end != ',') break;
        c = end + 1;
    }
    fprintf(stderr,
            "imgd generate: --rope-axes '%s': expected up to 4 even integers A,B,C (FLUX.1: "
            "16,56,56)\n",
            v);
    return false;
}

static const char k_usage[] =
    "imgd generate -m MODEL -p PROMPT [-n NEGATIVE] [--seed N] [--rng cpu|philox]\n"
    "      [--sampler euler|euler_ancestral|heun|dpmpp_2m|dpmpp_2m_sde|dpmpp_sde|ddim|ddpm|pndm|\n"
    "      lcm|uni_pc] [--schedule default|normal|karras|exponential|sgm_uniform|simple|leading|\n"
    "      trailing|linspace] [--steps N] [--cfg F] [-W PX -H PX] [--batch N] [--clip-skip N]\n"
    "      [--clip-skip-mode a1111|diffusers] [--orig-size WxH] [--crop LEFT,TOP]\n"
    "      [--target-size WxH] [--aesthetic-score F] [--negative-aesthetic-score F]\n"
    "      [--refiner MODEL [--refiner-switch F]]\n"
    "      [--init IMG --strength F] [--mask IMG] [--mask-blur PX] [--tokenizer DIR] [--vae PATH]\n"
    "      [--unet PATH] [--lora FILE[:W]]... [--lora-dir DIR] [--lora-mode auto|merge|unmerged]\n"
    "      [--embedding FILE]... [--embedding-dir DIR]\n"
    "      [--hypernet FILE[:W]]... [--hypernet-dir DIR]\n"
    "      [--control FILE:IMG[:SCALE[:START:END]]]... [--guess-mode]\n"
    "      [--control-preprocess none|canny|scribble|lineart|invert] [--canny-low F]\n"
    "      [--canny-high F] [--control-threshold F] [--control-resize just|crop|fill]\n"
    "      [--precision f32|bf16|f16|auto] [--threads N] [--backend cpu|ref|cuda] [--groups N]\n"
    "      [--offload te|vae|te,vae]\n"
    "      [--heads N | --head-dim N] [--te-heads N] [--prediction eps|v] [-o OUT.png] [--json]\n"
    "   FLUX.1: [--guidance F] [--max-sequence-length N] [--clip-l PATH] [--t5 PATH]\n"
    "      [--t5-tokenizer PATH] [--rope-axes A,B,C] (--vae ae.safetensors)";

/* --control FILE:IMG[:SCALE[:START:END]] (paths without ':'). */
static bool parse_control(const char *v, gen_opts *o) {
    if (o->n_ctl >= IMGD_CONTROL_MAX) {
        fprintf(stderr, "imgd generate: at most %d --control\n", (int)IMGD_CONTROL_MAX);
        return false;
    }
    char *buf = o->ctl_arg[o->n_ctl];
    if (snprintf(buf, sizeof o->ctl_arg[0], "%s", v) >= (int)sizeof o->ctl_arg[0]) {
        fprintf(stderr, "imgd generate: --control: argument too long\n");
        return false;
    }
    char *f[5] = {buf, NULL, NULL, NULL, NULL};
    int   n    = 1;
    for (char *c = buf; *c && n < 5; c++) {
        if (*c == ':') {
            *c     = '\0';
            f[n++] = c + 1;
        }
    }
    if (n < 2 || n == 4 || !*f[0] || !*f[1]) {
        fprintf(stderr, "imgd generate: --control '%s': expected FILE:IMG[:SCALE[:START:END]]\n",
                v);
        return false;
    }
    imgd_control_spec *s = &o->ctl[o->n_ctl];
    *s                   = imgd_control_spec_default();
    s->path              = f[0];
    o->ctl_img[o->n_ctl] = f[1];
    if (n >= 3 && !parse_float("--control SCALE", f[2], 0, 10, &s->scale)) return false;
    if (n == 5 && (!parse_float("--control START", f[3], 0, 1, &s->start) ||
                   !parse_float("--control END", f[4], 0, 1, &s->end)))
        return false;
    o->n_ctl++;
    return true;
}

/* Parses argv into o; returns 0, or 2 after printing what was wrong. */
static int parse(int argc, char **argv, gen_opts *o) {
    o->p       = imgd_gen_params_default();
    o->lp      = imgd_load_params_default();
    o->out     = "out.png";
    o->ctl_all = imgd_control_spec_default();
    for (int i = 0; i < argc; i++) {
        const char *a  = argv[i];
        const char *v  = i + 1 < argc ? argv[i + 1] : NULL;
        bool        ok = true, takes = true;
#define IS(s) (strcmp(a, (s)) == 0)
        if (IS("--json")) {
            o->json = true;
            takes   = false;
        } else if (IS("--guess-mode")) {
            o->ctl_all.guess_mode = true;
            takes                 = false;
        } else if (!v && a[0] == '-') {
            fprintf(stderr, "imgd generate: %s needs a value\n", a);
            return 2;
        } else if (IS("-m") || IS("--model")) {
            o->model = v;
        } else if (IS("-p") || IS("--prompt")) {
            o->p.prompt = v;
        } else if (IS("-n") || IS("--negative")) {
            o->p.negative = v;
        } else if (IS("--seed")) {
            ok = parse_u64(a, v, &o->p.seed);
        } else if (IS("--rng")) {
            if (strcmp(v, "cpu") == 0)
                o->p.rng = IMGD_RNG_MODE_CPU;
            else if (strcmp(v, "philox") == 0)
                o->p.rng = IMGD_RNG_MODE_PHILOX;
            else {
                fprintf(stderr, "imgd generate: --rng '%s': expected cpu or philox\n", v);
                ok = false;
            }
        } else if (IS("--sampler")) {
            o->p.sampler = v;
        } else if (IS("--schedule")) {
            o->p.schedule = v;
        } else if (IS("--steps")) {
            ok           = parse_int(a, v, 1, 1000, &o->p.steps);
            o->steps_set = true;
        } else if (IS("--guidance")) {
            ok = parse_float(a, v, 0, 100, &o->p.guidance);
        } else if (IS("--max-sequence-length")) {
            ok = parse_int(a, v, 1, 512, &o->p.max_sequence_length);
        } else if (IS("--clip-l")) {
            o->lp.clip_l = v;
        } else if (IS("--t5")) {
            o->lp.t5 = v;
        } else if (IS("--t5-tokenizer")) {
            o->lp.t5_tokenizer = v;
        } else if (IS("--rope-axes")) {
            ok = parse_axes(v, o->lp.arch.rope_axes);
        } else if (IS("--cfg")) {
            ok = parse_float(a, v, 0, 100, &o->p.cfg);
        } else if (IS("-W") || IS("--width")) {
            ok           = parse_int(a, v, 8, 16384, &o->p.width);
            o->width_set = true;
        } else if (IS("-H") || IS("--height")) {
            ok            = parse_int(a, v, 8, 16384, &o->p.height);
            o->height_set = true;
        } else if (IS("--batch")) {
            ok = parse_int(a, v, 1, 64, &o->p.batch);
        } else if (IS("--clip-skip")) {
            ok = parse_int(a, v, 1, 12, &o->p.clip_skip);
        } else if (IS("--refiner")) {
            o->refiner = v;
        } else if (IS("--refiner-switch")) {
            ok = parse_float(a, v, 0.01, 0.99, &o->p.refiner_switch);
        } else if (IS("--orig-size")) {
            ok = parse_size(a, v, 'x', &o->p.orig_width, &o->p.orig_height);
        } else if (IS("--target-size")) {
            ok = parse_size(a, v, 'x', &o->p.target_width, &o->p.target_height);
        } else if (IS("--crop")) {
            ok = parse_size(a, v, ',', &o->p.crop_left, &o->p.crop_top);
        } else if (IS("--aesthetic-score")) {
            ok = parse_float(a, v, 0, 10, &o->p.aesthetic_score);
        } else if (IS("--negative-aesthetic-score")) {
            ok = parse_float(a, v, 0, 10, &o->p.negative_aesthetic_score);
        } else if (IS("--clip-skip-mode")) {
            if (strcmp(v, "a1111") == 0)
                o->p.clip_skip_positive_only = false;
            else if (strcmp(v, "diffusers") == 0)
                o->p.clip_skip_positive_only = true;
            else {
                fprintf(stderr,
                        "imgd generate: --clip-skip-mode '%s': expected a1111 or diffusers\n", v);
                ok = false;
            }
        } else if (IS("--init")) {
            o->init = v;
        } else if (IS("--strength")) {
            ok = parse_float(a, v, 0, 1, &o->p.strength);
        } else if (IS("--mask")) {
            o->mask = v;
        } else if (IS("--mask-blur")) {
            ok = parse_int(a, v, 0, 256, &o->p.mask_blur);
        } else if (IS("--tokenizer")) {
            o->lp.tokenizer_dir = v;
        } else if (IS("--unet")) {
            o->lp.unet = v;
        } else if (IS("--lora")) {
            ok = parse_lora(o, v);
        } else if (IS("--lora-dir")) {
            o->lp.lora_dir = v;
        } else if (IS("--hypernet")) {
            ok = parse_hypernet(o, v);
        } else if (IS("--hypernet-dir")) {
            o->lp.hypernet_dir = v;
        } else if (IS("--lora-mode")) {
            ok = parse_lora_mode(v, &o->p.lora_mode);
            for (int32_t k = 0; ok && k < o->p.n_loras; k++) o->loras[k].mode = o->p.lora_mode;
        } else if (IS("--embedding")) {
            if (o->lp.n_embeddings == CLI_ADAPTERS_MAX) {
                fprintf(stderr, "imgd generate: more than %d --embedding flags\n",
                        CLI_ADAPTERS_MAX);
                ok = false;
            } else {
                o->embeddings[o->lp.n_embeddings++] = v;
                o->lp.embeddings                    = o->embeddings;
            }
        } else if (IS("--embedding-dir")) {
            o->lp.embedding_dir = v;
        } else if (IS("--vae")) {
            o->lp.vae = v;
        } else if (IS("--backend")) {
            o->lp.backend = v;
        } else if (IS("--offload")) {
            if (!imgd_offload_parse(v, &o->lp.offload)) {
                fprintf(stderr,
                        "imgd generate: --offload '%s': expected te, vae or te,vae (the parts "
                        "to run on the CPU when --backend is a GPU)\n",
                        v);
                ok = false;
            }
        } else if (IS("--precision")) {
            if (!imgd_precision_parse(v, &o->lp.precision)) {
                fprintf(stderr,
                        "imgd generate: --precision '%s': expected f32, bf16, f16 or auto\n", v);
                ok = false;
            }
        } else if (IS("--threads")) {
            int32_t t     = 0;
            ok            = parse_int(a, v, 0, 1024, &t);
            o->lp.threads = (uint32_t)t;
        } else if (IS("--groups")) {
            ok = parse_int(a, v, 1, 1024, &o->lp.arch.groups);
        } else if (IS("--heads")) {
            ok = parse_int(a, v, 1, 1024, &o->lp.arch.unet_heads);
        } else if (IS("--head-dim")) {
            ok = parse_int(a, v, 1, 4096, &o->lp.arch.unet_head_dim);
        } else if (IS("--te-heads")) {
            ok = parse_int(a, v, 1, 1024, &o->lp.arch.te_heads);
        } else if (IS("--prediction")) {
            if (strcmp(v, "eps") == 0 || strcmp(v, "epsilon") == 0)
                o->lp.arch.prediction = 1;
            else if (strcmp(v, "v") == 0 || strcmp(v, "v_prediction") == 0)
                o->lp.arch.prediction = 2;
            else {
                fprintf(stderr, "imgd generate: --prediction '%s': expected eps or v\n", v);
                ok = false;
            }
        } else if (IS("--control")) {
            ok = parse_control(v, o);
        } else if (IS("--control-preprocess")) {
            if (!imgd_control_pre_parse(v, &o->ctl_all.preprocess)) {
                fprintf(stderr,
                        "imgd generate: --control-preprocess '%s': expected none, canny, "
                        "scribble, lineart or invert\n",
                        v);
                ok = false;
            }
        } else if (IS("--control-resize")) {
            if (!imgd_control_resize_parse(v, &o->ctl_all.resize_mode)) {
                fprintf(stderr,
                        "imgd generate: --control-resize '%s': expected just, crop or fill\n", v);
                ok = false;
            }
        } else if (IS("--canny-low")) {
            ok = parse_float(a, v, 0, 2040, &o->ctl_all.low);
        } else if (IS("--canny-high")) {
            ok = parse_float(a, v, 0, 2040, &o->ctl_all.high);
        } else if (IS("--control-threshold")) {
            ok = parse_float(a, v, 0, 255, &o->ctl_all.threshold);
        } else if (IS("-o") || IS("--output")) {
            o->out = v;
        } else {
            fprintf(stderr, "imgd generate: unknown option '%s'\nusage: %s\n", a, k_usage);
            return 2;
        }
#undef IS
        if (!ok) return 2;
        if (takes) i++;
    }
    if (!o->model || !o->p.prompt) {
        fprintf(stderr, "imgd generate: -m MODEL and -p PROMPT are required\nusage: %s\n", k_usage);
        return 2;
    }
    for (int32_t k = 0; k < o->n_ctl; k++) {
        o->ctl[k].preprocess  = o->ctl_all.preprocess;
        o->ctl[k].resize_mode = o->ctl_all.resize_mode;
        o->ctl[k].low         = o->ctl_all.low;
        o->ctl[k].high        = o->ctl_all.high;
        o->ctl[k].threshold   = o->ctl_all.threshold;
        o->ctl[k].guess_mode  = o->ctl_all.guess_mode;
    }
    if (o->mask && !o->init) {
        fprintf(stderr, "imgd generate: --mask needs --init IMG (the image to inpaint)\n");
        return 2;
    }
    return 0;
}

/* Output path of image i of a batch: x.png, x-1.png, x-2.png, ... */
static void out_path(const char *out, int32_t i, char *dst, size_t cap) {
    if (i == 0) {
        (void)snprintf(dst, cap, "%s", out);
        return;
    }
    const char *dot   = strrchr(out, '.');
    const char *slash = strrchr(out, '/');
    if (!dot || (slash && dot < slash)) dot = out + strlen(out);
    (void)snprintf(dst, cap, "%.*s-%d%s", (int)(dot - out), out, (int)i, dot);
}

typedef struct step_state {
    bool   tty;
    double t0;
} step_state;

static bool on_step(int32_t step, int32_t steps, double elapsed_s, void *user) {
    step_state *s = user;
    if (!s->tty) return true;
    double rate = elapsed_s > 0 ? step / elapsed_s : 0;
    double eta  = rate > 0 ? (steps - step) / rate : 0;
    int    bar  = steps ? (int)(30.0 * step / steps) : 30;
    fprintf(stderr, "\r[%.*s%*s] %d/%d  %.2f it/s  ETA %.0fs ", bar,
            "==============================", 30 - bar, "", (int)step, (int)steps, rate, eta);
    if (step >= steps) fputc('\n', stderr);
    return true;
}

static int load_image(const char *flag, const char *path, imgd_image_u8 *img) {
    if (imgd_image_read(path, img) != IMGD_OK) {
        fprintf(stderr, "imgd generate: %s: %s\n", flag, imgd_last_error());
        return 1;
    }
    return 0;
}

int imgd_cli_generate(int argc, char **argv) {
    gen_opts o;
    memset(&o, 0, sizeof o);
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    imgd_image_u8 init = {0}, mask = {0};
    if (o.init && load_image("--init", o.init, &init)) return 1;
    if (o.mask && load_image("--mask", o.mask, &mask)) {
        imgd_image_u8_free(&init);
        return 1;
    }
    if (o.init) o.p.init = &init;
    if (o.mask) o.p.mask = &mask;
    for (int32_t k = 0; k < o.n_ctl; k++) {
        if (load_image("--control", o.ctl_img[k], &o.ctl_px[k])) {
            rc = 1;
            break;
        }
        o.ctl[k].image = &o.ctl_px[k];
    }
    o.p.controls   = o.ctl;
    o.p.n_controls = o.n_ctl;
    step_state ss  = {isatty(2) != 0, 0};
    o.p.on_step    = on_step;
    o.p.user       = &ss;

    imgd_model      *m   = NULL;
    imgd_gen_result *res = NULL;
    struct timespec  t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!rc && imgd_model_load(o.model, &o.lp, &m) != IMGD_OK) {
        fprintf(stderr, "imgd generate: %s\n", imgd_last_error());
        rc = 1;
    }
    imgd_model *rm = NULL;
    if (!rc && o.refiner) { /* the refiner: the same options, its own files */
        imgd_load_params rlp = o.lp;
        rlp.vae = rlp.unet = rlp.lora_dir = rlp.embedding_dir = rlp.hypernet_dir = NULL;
        rlp.embeddings                                                           = NULL;
        rlp.n_embeddings                                                         = 0;
        /* a single-file refiner takes the base folder's tokenizer (both use CLIP's BPE) */
        char        tokdir[4096];
        struct stat sb;
        if (!rlp.tokenizer_dir &&
            snprintf(tokdir, sizeof tokdir, "%s/tokenizer/vocab.json", o.model) <
                (int)sizeof tokdir &&
            stat(tokdir, &sb) == 0) {
            tokdir[strlen(tokdir) - strlen("/vocab.json")] = '\0';
            rlp.tokenizer_dir                              = tokdir;
        }
        if (imgd_model_load(o.refiner, &rlp, &rm) != IMGD_OK) {
            fprintf(stderr, "imgd generate: --refiner: %s\n", imgd_last_error());
            rc = 1;
        }
        o.p.refiner = rm;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!rc && (!o.width_set || !o.height_set)) { /* the model's native size */
        int32_t nw = 0, nh = 0;
        imgd_model_native_size(m, &nw, &nh);
        if (!o.width_set) o.p.width = nw;
        if (!o.height_set) o.p.height = nh;
    }
    if (!rc && !o.steps_set) o.p.steps = imgd_model_default_steps(m);
    double t_load = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (!rc && imgd_generate(m, &o.p, &res) != IMGD_OK) {
        fprintf(stderr, "imgd generate: %s\n", imgd_last_error());
        rc = 1;
    }
    for (int32_t i = 0; !rc && i < res->n; i++) {
        char path[4096];
        out_path(o.out, i, path, sizeof path);
        if (imgd_image_write(path, &res->images[i], res->infotext, 0) != IMGD_OK) {
            fprintf(stderr, "imgd generate: %s\n", imgd_last_error());
            rc = 1;
            break;
        }
        if (!o.json) fprintf(stderr, "wrote %s\n", path);
    }
    if (!rc && o.json) {
        printf("{\"images\":[");
        for (int32_t i = 0; i < res->n; i++) {
            char path[4096];
            out_path(o.out, i, path, sizeof path);
            printf("%s\"", i ? "," : "");
            for (const char *c = path; *c; c++) {
                if (*c == '"' || *c == '\\')
                    printf("\\%c", *c);
                else if ((unsigned char)*c < 0x20)
                    printf("\\u%04x", (unsigned)(unsigned char)*c);
                else
                    putchar(*c);
            }
            printf("\"");
        }
        printf("],\"seed\":%llu,\"steps\":%d,\"width\":%d,\"height\":%d,"
               "\"timings\":{\"load_s\":%.4f,\"encode_s\":%.4f,\"sample_s\":%.4f,"
               "\"decode_s\":%.4f,\"total_s\":%.4f,\"step_s\":%.4f}}\n",
               (unsigned long long)o.p.seed, (int)res->steps_run, (int)o.p.width, (int)o.p.height,
               t_load, res->t_encode_s, res->t_sample_s, res->t_decode_s, res->t_total_s,
               res->steps_run ? res->t_sample_s / res->steps_run : 0.0);
    }
    imgd_gen_result_free(res);
    imgd_model_free(rm);
    imgd_model_free(m);
    imgd_image_u8_free(&init);
    imgd_image_u8_free(&mask);
    for (int32_t k = 0; k < o.n_ctl; k++) imgd_image_u8_free(&o.ctl_px[k]);
    return rc;
}

const char *imgd_cli_generate_usage(void) {
    return k_usage;
}
