/* sd --family flux: a random-weight FLUX.1-dev transformer of the real size (hidden 3072, 24
 * heads, 19 double + 38 single blocks, mlp ratio 4, 64 input channels, T5 context 4096,
 * CLIP pooled 768, guidance embedding: 11.9 B parameters) written as GGUF Q8_0 the way
 * city96's FLUX GGUFs ship it (Black Forest Labs' tensor names, every 2-D weight Q8_0, norm
 * scales and biases F32). The file is streamed to disk block by block (random int8 quants
 * under the kaiming-uniform scale 1 / sqrt(fan_in)), so it never sits in memory; the engine
 * then maps it and runs with the weights in their blocks (fused linear_quant).
 *
 * Measured: file size and write time, load time (open + detect + bind), and per image size
 * (512 and 1024 by default): planning time, seconds per transformer step (batch 1, 512 T5
 * tokens as FLUX.1-dev uses), the transformer's achieved GFLOP/s (counted from its planned
 * graph) beside the engine's measured GEMM peak, and peak RSS beside the weight file.
 *
 * Not real size, and not run: the text encoders (random embeddings shaped like T5-XXL's
 * output [1, 512, 4096] and CLIP-L's pooled output [1, 768] go straight to the transformer
 * through pipeline/flux_gen.h). The VAE only with --vae: a random FLUX VAE of the real size
 * (ae.safetensors layout, BF16) decodes each size once after the steps.
 *
 * --backend cuda (builds with the CUDA toolkit; --precision bf16 by default, f32 or bf16; f16
 * runs bf16 as the pipeline does, FLUX overflows f16): the weights stay in their Q8_0 blocks
 * on the device (linear_quant), or are expanded once at plan time on a card with the memory
 * (IMGD_CUDA_LQ_EXPAND), and the transformer's TFLOP/s is reported beside the card's
 * cuBLASLt fp16 GEMM peak, with the peak device memory in use. Then the first size again on a
 * backend with IMGD_CUDA_LQ_ROWS=0 IMGD_CUDA_LQ_EXPAND=0 (metrics ending _lq_tiles): every
 * quantized linear expanded per tile, against the default that reads the few-row ones
 * (modulation, time, guidance) in their blocks and, on a card with the memory, expands the
 * others once at plan time; transformer_step_s_<px>_vs_lq_tiles gives the ratio of the two
 * step times. */
#include "models/flux.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "bench.h"
#include "detect/detect.h"
#include "formats/dtype.h"
#include "imgd.h"
#include "models/vae.h"
#include "models/wbind.h"
#include "pipeline/flux_gen.h"
#include "tensor/backend.h"
#ifdef IMGD_HAVE_CUDA
#    include "tensor/cuda/cuda.h"
#endif

#define BENCH "flux"

typedef struct opts {
    const char *dir, *model; /* model: an existing FLUX.1-dev GGUF instead of writing one */
    int32_t     size;        /* 0: 512 then 1024 */
    int32_t     steps, txt_len;
    uint32_t    threads;
    bool        keep;
    bool        vae;       /* also write a random FLUX VAE (ae.safetensors layout) and decode */
    const char *backend;   /* cpu (default) or cuda */
    const char *precision; /* cuda: f32 | bf16 (default) | f16 (runs bf16) */
} opts;

static int parse(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->dir     = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    o->steps   = 1;
    o->txt_len = 512;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--keep") == 0 || strcmp(a, "--vae") == 0) {
            *(a[2] == 'k' ? &o->keep : &o->vae) = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "imgd-bench sd: %s needs a value\n", a);
            return -1;
        }
        if (strcmp(a, "--family") == 0) { /* flux: how bench_sd got here */
            i++;
            continue;
        }
        if (strcmp(a, "--dir") == 0)
            o->dir = v;
        else if (strcmp(a, "--model") == 0)
            o->model = v;
        else if (strcmp(a, "--steps") == 0)
            o->steps = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--size") == 0)
            o->size = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--txt-len") == 0)
            o->txt_len = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--threads") == 0)
            o->threads = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--backend") == 0)
            o->backend = v;
        else if (strcmp(a, "--precision") == 0)
            o->precision = v;
        else {
            fprintf(stderr, "imgd-bench sd --family flux: unknown option %s\n", a);
            return -1;
        }
        i++;
    }
    if (o->backend && strcmp(o->backend, "cpu") != 0 && strcmp(o->backend, "cuda") != 0) {
        fprintf(stderr, "imgd-bench sd --family flux: --backend cpu|cuda, not '%s'\n", o->backend);
        return -1;
    }
    if (o->precision && strcmp(o->precision, "f32") != 0 && strcmp(o->precision, "bf16") != 0 &&
        strcmp(o->precision, "f16") != 0) {
        fprintf(stderr, "imgd-bench sd --family flux: --precision f32|bf16|f16, not '%s'\n",
                o->precision);
        return -1;
    }
    if (o->steps < 1 || o->steps > 1000 || o->txt_len < 1 || o->txt_len > 4096 ||
        (o->size && (o->size < 16 || o->size > 8192 || o->size % 16))) {
        fprintf(stderr, "imgd-bench sd --family flux: --steps 1..1000, --txt-len 1..4096, --size "
                        "a multiple of 16 in 16..8192\n");
        return -1;
    }
    return 0;
}

/* ---- the model: FLUX.1-dev's tensors under BFL names ---------------------------------------- */

#define HIDDEN  ((int64_t)3072)
#define MLP     (4 * HIDDEN)
#define DEPTH   19
#define SINGLE  38
#define HEADDIM ((int64_t)128)

typedef struct wt {
    char    name[96];
    int32_t n_dims;
    int64_t shape[2]; /* row-major [out, in] */
    bool    q8;       /* Q8_0 (2-D) or F32 (1-D) */
    bool    ones;     /* a norm scale: all 1 */
} wt;

typedef struct wlist {
    wt    *t;
    size_t n, cap;
} wlist;

static void add(wlist *l, const char *name, int32_t n_dims, int64_t rows, int64_t cols) {
    if (l->n == l->cap) return; /* sized exactly below; never hit */
    wt *t = &l->t[l->n++];
    (void)imgd_fmt(t->name, sizeof t->name, "%s", name);
    t->n_dims   = n_dims;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->q8       = n_dims == 2;
    t->ones     = strstr(name, "_norm.scale") != NULL;
}

/* nn.Linear pfx: weight [out, in] Q8_0 and bias [out] F32. */
static void lin(wlist *l, const char *pfx, int64_t out, int64_t in) {
    char n[96];
    (void)imgd_fmt(n, sizeof n, "%s.weight", pfx);
    add(l, n, 2, out, in);
    (void)imgd_fmt(n, sizeof n, "%s.bias", pfx);
    add(l, n, 1, out, 0);
}

/* QKNorm's two RMSNorm scales [head_dim] under pfx ("double_blocks.0.img_attn.norm"). */
static void qk_norm(wlist *l, const char *pfx) {
    char n[96];
    (void)imgd_fmt(n, sizeof n, "%s.query_norm.scale", pfx);
    add(l, n, 1, HEADDIM, 0);
    (void)imgd_fmt(n, sizeof n, "%s.key_norm.scale", pfx);
    add(l, n, 1, HEADDIM, 0);
}

/* black-forest-labs/flux src/flux/model.py Flux(FluxParams of flux-dev) + modules/layers.py */
static int flux_dev_tensors(wlist *l) {
    l->cap = 64 + (size_t)DEPTH * 24 + (size_t)SINGLE * 8;
    l->t   = imgd_calloc(l->cap, sizeof *l->t);
    if (!l->t) return -1;
    lin(l, "img_in", HIDDEN, 64);
    lin(l, "txt_in", HIDDEN, 4096);
    lin(l, "time_in.in_layer", HIDDEN, 256);
    lin(l, "time_in.out_layer", HIDDEN, HIDDEN);
    lin(l, "vector_in.in_layer", HIDDEN, 768);
    lin(l, "vector_in.out_layer", HIDDEN, HIDDEN);
    lin(l, "guidance_in.in_layer", HIDDEN, 256);
    lin(l, "guidance_in.out_layer", HIDDEN, HIDDEN);
    char p[96];
    for (int i = 0; i < DEPTH; i++) {
        static const char *const s[2] = {"img", "txt"};
        for (int k = 0; k < 2; k++) {
            (void)imgd_fmt(p, sizeof p, "double_blocks.%d.%s_mod.lin", i, s[k]);
            lin(l, p, 6 * HIDDEN, HIDDEN);
            (void)imgd_fmt(p, sizeof p, "double_blocks.%d.%s_attn.qkv", i, s[k]);
            lin(l, p, 3 * HIDDEN, HIDDEN);
            (void)imgd_fmt(p, sizeof p, "double_blocks.%d.%s_attn.norm", i, s[k]);
            qk_norm(l, p);
            (void)imgd_fmt(p, sizeof p, "double_blocks.%d.%s_attn.proj", i, s[k]);
            lin(l, p, HIDDEN, HIDDEN);
            (void)imgd_fmt(p, sizeof p, "double_blocks.%d.%s_mlp.0", i, s[k]);
            lin(l, p, MLP, HIDDEN);
            (void)imgd_fmt(p, sizeof p, "double_blocks.%d.%s_mlp.2", i, s[k]);
            lin(l, p, HIDDEN, MLP);
        }
    }
    for (int i = 0; i < SINGLE; i++) {
        (void)imgd_fmt(p, sizeof p, "single_blocks.%d.linear1", i);
        lin(l, p, 3 * HIDDEN + MLP, HIDDEN);
        (void)imgd_fmt(p, sizeof p, "single_blocks.%d.linear2", i);
        lin(l, p, HIDDEN, HIDDEN + MLP);
        (void)imgd_fmt(p, sizeof p, "single_blocks.%d.norm", i);
        qk_norm(l, p);
        (void)imgd_fmt(p, sizeof p, "single_blocks.%d.modulation.lin", i);
        lin(l, p, 3 * HIDDEN, HIDDEN);
    }
    lin(l, "final_layer.adaLN_modulation.1", 2 * HIDDEN, HIDDEN);
    lin(l, "final_layer.linear", 64, HIDDEN);
    return 0;
}

static uint64_t bytes_of(const wt *t) {
    return t->q8 ? (uint64_t)(t->shape[0] * t->shape[1] / 32 * 34) : (uint64_t)t->shape[0] * 4;
}

/* ---- the GGUF v3 writer (ggml type ids: F32 0, Q8_0 8; alignment 32) ------------------------ */

static int put(FILE *f, const void *d, size_t n) {
    return fwrite(d, 1, n, f) == n ? 0 : -1;
}

static int put_le(FILE *f, uint64_t v, int bytes) {
    unsigned char b[8];
    for (int i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * i));
    return put(f, b, (size_t)bytes);
}

static int put_str(FILE *f, const char *s) {
    return put_le(f, strlen(s), 8) | put(f, s, strlen(s));
}

static int pad32(FILE *f) {
    static const unsigned char z[32] = {0};
    long                       pos   = ftell(f);
    return pos < 0 ? -1 : put(f, z, (size_t)((32 - pos % 32) % 32));
}

static uint64_t g_rs = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void) { /* xorshift64: the values only need to be sane */
    g_rs ^= g_rs << 13;
    g_rs ^= g_rs >> 7;
    g_rs ^= g_rs << 17;
    return g_rs;
}

/* uniform in [-1, 1) */
static float urand(void) {
    return (float)((double)(rnd() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

#define CHUNK ((size_t)34 << 18) /* 8.5 MiB: a whole number of Q8_0 blocks */

/* One tensor's data: Q8_0 blocks of scale a / 127 and random int8 quants (uniform in
 * [-a, a], a = 1 / sqrt(fan_in)), or F32 ones (norm scales) / zeros (biases). */
static int write_data(FILE *f, const wt *t, unsigned char *buf) {
    uint64_t left = bytes_of(t);
    if (!t->q8) {
        float v = t->ones ? 1.0f : 0.0f;
        for (int64_t i = 0; i < t->shape[0]; i++)
            if (put(f, &v, 4) != 0) return -1;
        return 0;
    }
    uint16_t d = imgd_f32_to_f16(1.0f / sqrtf((float)t->shape[1]) / 127.0f);
    while (left) {
        size_t n = left < CHUNK ? (size_t)left : CHUNK;
        for (size_t b = 0; b < n; b += 34) {
            memcpy(buf + b, &d, 2);
            for (size_t k = 0; k < 32; k += 8) {
                uint64_t r = rnd();
                memcpy(buf + b + 2 + k, &r, 8);
            }
        }
        if (put(f, buf, n) != 0) return -1;
        left -= n;
    }
    return 0;
}

static int write_gguf(const char *path, const wlist *l) {
    FILE          *f   = fopen(path, "wb");
    unsigned char *buf = imgd_malloc(CHUNK);
    int            rc  = f && buf ? 0 : -1;
    if (!rc) rc = put(f, "GGUF", 4) | put_le(f, 3, 4) | put_le(f, l->n, 8) | put_le(f, 1, 8);
    if (!rc) rc = put_str(f, "general.architecture") | put_le(f, 8, 4) | put_str(f, "flux");
    uint64_t off = 0;
    for (size_t i = 0; !rc && i < l->n; i++) {
        const wt *t = &l->t[i];
        rc          = put_str(f, t->name) | put_le(f, (uint64_t)t->n_dims, 4);
        for (int32_t k = t->n_dims - 1; !rc && k >= 0; k--)
            rc = put_le(f, (uint64_t)t->shape[k], 8);
        if (!rc) rc = put_le(f, t->q8 ? 8 : 0, 4) | put_le(f, off, 8);
        off += (bytes_of(t) + 31) / 32 * 32;
    }
    if (!rc) rc = pad32(f);
    for (size_t i = 0; !rc && i < l->n; i++) {
        rc = write_data(f, &l->t[i], buf);
        if (!rc) rc = pad32(f);
    }
    if (f && fclose(f) != 0) rc = -1;
    imgd_free(buf);
    return rc;
}

/* ---- measuring ------------------------------------------------------------------------------ */

static double rss_peak_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

/* RssAnon / RssFile of /proc/self/status in bytes (0 where unreadable). */
static void rss_now(double *anon, double *file) {
    FILE *f = fopen("/proc/self/status", "r");
    char  line[256];
    *anon = *file = 0;
    while (f && fgets(line, sizeof line, f)) {
        long kb = 0;
        if (sscanf(line, "RssAnon: %ld kB", &kb) == 1) *anon = (double)kb * 1024.0;
        if (sscanf(line, "RssFile: %ld kB", &kb) == 1) *file = (double)kb * 1024.0;
    }
    if (f) (void)fclose(f);
}

typedef struct step_clock {
    double t_last, anon_max, file_max;
    double vram_max; /* cuda: device memory in use (total - free), bytes */
} step_clock;

static imgd_status on_step(void *user, int32_t step, int32_t steps, float *x, size_t n) {
    step_clock *c = user;
    double      a, f, t = bench_now();
    (void)x;
    (void)n;
    rss_now(&a, &f);
#ifdef IMGD_HAVE_CUDA
    size_t fr = 0, tot = 0;
    if (imgd_cuda_device_count() > 0 && imgd_cuda_mem_info(&fr, &tot) == IMGD_OK &&
        (double)(tot - fr) > c->vram_max)
        c->vram_max = (double)(tot - fr);
#endif
    c->anon_max = a > c->anon_max ? a : c->anon_max;
    c->file_max = f > c->file_max ? f : c->file_max;
    fprintf(stderr, "  step %d/%d  %.1fs  (anon %.2f GiB, file-backed %.2f GiB)\n", (int)step + 1,
            (int)steps, t - c->t_last, a / 1073741824.0, f / 1073741824.0);
    c->t_last = t;
    return IMGD_OK;
}

typedef struct run_ctx {
    const opts          *o;
    imgd_wbind          *wb;
    const imgd_flux_cfg *cfg;
    imgd_backend        *be;
    double               wbytes, peak; /* peak: GFLOP/s (cpu) or fp16 TFLOP/s (cuda) */
    bool                 cuda;
    imgd_wbind          *vae; /* NULL: no decode */
    const imgd_vae_cfg  *vae_cfg;
} run_ctx;

static int run_size(const run_ctx *r, int32_t px, const float *emb, const float *pooled,
                    const char *tag, double *step_s);

/* cuda: the first size again on a backend with IMGD_CUDA_LQ_ROWS=0 IMGD_CUDA_LQ_EXPAND=0
 * (every quantized linear expanded per tile; the default reads those with few rows of x in
 * their blocks and expands the others at plan time where they fit), the default's step time
 * beside it. The default backend *be is freed first (the weights are
 * uploaded per backend) and replaced by the new one. */
static int compare_lq_tiles(run_ctx *r, const imgd_backend_params *bp, imgd_backend **be,
                            int32_t px, double step_rows, const float *emb, const float *pooled) {
    imgd_backend_free(*be);
    *be   = NULL;
    r->be = NULL;
    if (setenv("IMGD_CUDA_LQ_ROWS", "0", 1) != 0 || setenv("IMGD_CUDA_LQ_EXPAND", "0", 1) != 0 ||
        imgd_backend_new("cuda", bp, be) != IMGD_OK) {
        fprintf(stderr,
                "imgd-bench sd --family flux: cuda backend with IMGD_CUDA_LQ_ROWS=0 "
                "IMGD_CUDA_LQ_EXPAND=0: %s\n",
                imgd_last_error());
        return 1;
    }
    r->be       = *be;
    double step = 0;
    int    rc   = run_size(r, px, emb, pooled, "_lq_tiles", &step);
    char   k[64];
    (void)imgd_fmt(k, sizeof k, "transformer_step_s_%d_vs_lq_tiles", (int)px);
    if (!rc) bench_emit(BENCH, k, step_rows, "s", "lq_tiles", step > 0 ? step_rows / step : 0);
    return rc;
}

/* One image size: plan the transformer graph, run the steps, emit (metric names end in
 * _<px><tag>); *step_s: the seconds per step. */
static int run_size(const run_ctx *r, int32_t px, const float *emb, const float *pooled,
                    const char *tag, double *step_s) {
    int64_t              B = 1, T = r->o->txt_len, N = (int64_t)(px / 16) * (px / 16);
    imgd_flux_denoiser  *den = NULL;
    imgd_flux_gen_params p   = imgd_flux_gen_params_default();
    float               *lat = imgd_malloc((size_t)(B * N * 64) * sizeof *lat);
    float *img = r->vae ? imgd_malloc((size_t)B * 3 * (size_t)px * (size_t)px * sizeof *img) : NULL;
    step_clock sc = {0, 0, 0, 0};
    char       k[64];
    int        rc = lat && (img || !r->vae) ? 0 : 1;
    p.transformer = r->wb;
    p.cfg         = r->cfg;
    p.be          = r->be;
    p.steps       = r->o->steps;
    p.height = p.width = px;
    p.keep             = &den;
    p.on_step          = on_step;
    p.step_user        = &sc;
    p.vae              = r->vae;
    p.vae_cfg          = r->vae_cfg;
    for (int64_t i = 0; lat && i < B * N * 64; i++) lat[i] = urand() * 1.7f;
    double t0 = bench_now();
    if (!rc && imgd_flux_denoiser_prepare(&p, emb, pooled, B, T) != IMGD_OK) rc = 1;
    double t_plan = bench_now() - t0;
    sc.t_last     = bench_now();
    t0            = sc.t_last;
    if (!rc && imgd_flux_generate(&p, emb, pooled, B, T, lat, img) != IMGD_OK) rc = 1;
    double t_end = bench_now(), t_steps = (img ? sc.t_last : t_end) - t0;
    if (rc) {
        fprintf(stderr, "imgd-bench sd --family flux: %dx%d: %s\n", (int)px, (int)px,
                imgd_last_error());
    } else {
        double step             = t_steps / r->o->steps;
        *step_s                 = step;
        double            flops = bench_graph_flops(imgd_flux_denoiser_graph(den));
        double            gf    = flops / step / 1e9;
        double            rss   = rss_peak_bytes();
        size_t            lq    = 0;
        const imgd_graph *g     = imgd_flux_denoiser_graph(den);
        for (size_t i = 0; i < imgd_graph_exec_count(g); i++)
            lq += imgd_graph_exec_node(g, i)->op == IMGD_OP_LINEAR_QUANT;
        printf("# %dx%d%s: %lld image + %lld text tokens, %.1f TFLOP per step, %zu fused "
               "quantized linears; %d step(s)\n",
               (int)px, (int)px, tag, (long long)N, (long long)T, flops / 1e12, lq,
               (int)r->o->steps);
#define EMIT(metric, v, unit, vs, ratio)                                                           \
    do {                                                                                           \
        (void)imgd_fmt(k, sizeof k, "%s_%d%s", metric, (int)px, tag);                              \
        bench_emit(BENCH, k, v, unit, vs, ratio);                                                  \
    } while (0)
        EMIT("plan_s", t_plan, "s", NULL, 0);
        EMIT("transformer_step_s", step, "s", NULL, 0);
        if (r->cuda) {
            EMIT("transformer_tflops", gf / 1e3, "TFLOP/s", "gemm_f16_peak",
                 r->peak > 0 ? gf / 1e3 / r->peak : 0);
            EMIT("peak_vram_gib", sc.vram_max / 1073741824.0, "GiB", "weights_file",
                 sc.vram_max / r->wbytes);
        } else {
            EMIT("transformer_gflops", gf, "GFLOP/s", "gemm_peak", r->peak > 0 ? gf / r->peak : 0);
        }
        if (img) EMIT("vae_decode_s", t_end - sc.t_last, "s", NULL, 0);
        EMIT("peak_rss_gib", rss / 1073741824.0, "GiB", "weights_file", rss / r->wbytes);
        EMIT("rss_anon_gib", sc.anon_max / 1073741824.0, "GiB", NULL, 0);
        EMIT("rss_file_gib", sc.file_max / 1073741824.0, "GiB", NULL, 0);
#undef EMIT
    }
    imgd_flux_denoiser_free(den);
    imgd_free(lat);
    imgd_free(img);
    return rc;
}

/* ---- the bench ------------------------------------------------------------------------------ */

/* Opens, detects and binds the file; the config comes from its shapes. */
static int load(const char *path, imgd_weights **w, imgd_model_info **mi, imgd_wbind **wb,
                imgd_flux_cfg *cfg) {
    imgd_status st = imgd_weights_open(path, NULL, w);
    if (st == IMGD_OK) st = imgd_model_detect(*w, mi);
    if (st == IMGD_OK) st = imgd_wbind_new(*w, *mi, wb);
    if (st == IMGD_OK) st = imgd_flux_cfg_from_detect(*mi, cfg);
    if (st == IMGD_OK) st = imgd_flux_cfg_check(cfg);
    if (st != IMGD_OK) {
        fprintf(stderr, "imgd-bench sd --family flux: %s: %s\n", path, imgd_last_error());
        return 1;
    }
    if ((*mi)->family != IMGD_FAMILY_FLUX_DEV) {
        fprintf(stderr, "imgd-bench sd --family flux: %s detected as %s, not FLUX.1 dev\n", path,
                imgd_family_name((*mi)->family));
        return 1;
    }
    return 0;
}

/* --vae: the FLUX VAE of the real size (ae.safetensors, BF16 as BFL ships it) with random
 * weights, written by the detection corpus generator and filled in place. */
static int vae_make(const opts *o, char *root, size_t root_cap, char *path, size_t path_cap,
                    bool *made) {
    double t0 = bench_now();
    if (bench_model_write_case(o->dir, "flux-vae", "vae_flux_ldm", root, root_cap, path,
                               path_cap) != 0) {
        fprintf(stderr, "imgd-bench sd --family flux: could not write the VAE under %s\n", o->dir);
        return 1;
    }
    *made = true;
    if (bench_fill_random(path) != 0) return 1;
    printf("# FLUX VAE of the real size (ae.safetensors, BF16), random weights, written in %.1f "
           "s: %s\n",
           bench_now() - t0, path);
    return 0;
}

static int vae_load(const char *path, imgd_weights **w, imgd_model_info **mi, imgd_wbind **wb,
                    imgd_vae_cfg *cfg) {
    imgd_status st = imgd_weights_open(path, NULL, w);
    if (st == IMGD_OK) st = imgd_model_detect(*w, mi);
    if (st == IMGD_OK && !(*mi)->has_vae)
        st = imgd_fail(IMGD_E_FORMAT, "%s is not detected as a VAE", path);
    if (st == IMGD_OK) st = imgd_wbind_new(*w, *mi, wb);
    if (st == IMGD_OK) st = imgd_vae_cfg_init(cfg, &(*mi)->vae, 0);
    if (st == IMGD_OK && cfg->latent_channels != 16)
        st = imgd_fail(IMGD_E_FORMAT, "%s: %d latent channels, FLUX's VAE has 16", path,
                       (int)cfg->latent_channels);
    if (st != IMGD_OK) {
        fprintf(stderr, "imgd-bench sd --family flux: %s\n", imgd_last_error());
        return 1;
    }
    return 0;
}

int bench_sd_flux(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o) != 0) return 2;
    imgd_log_level_set(IMGD_LOG_WARN);
    bool cuda = o.backend && strcmp(o.backend, "cuda") == 0;
#ifdef IMGD_HAVE_CUDA
    if (cuda && imgd_cuda_device_count() < 1) { /* before 12.7 GB are written for nothing */
        fprintf(stderr, "imgd-bench sd --family flux: --backend cuda: no CUDA device here\n");
        return 1;
    }
#else
    if (cuda) {
        fprintf(stderr, "imgd-bench sd --family flux: this build has no CUDA backend "
                        "(configure with -DIMGD_CUDA=ON)\n");
        return 1;
    }
#endif
    char  root[1024], path[1200];
    wlist l   = {0};
    int   rc  = flux_dev_tensors(&l);
    bool  dir = false;
    if (o.model) {
        (void)imgd_fmt(path, sizeof path, "%s", o.model);
        printf("# model: %s (not written by the bench)\n", path);
    } else if (!rc &&
               (!imgd_fmt(root, sizeof root, "%s/imgd-bench-flux-%ld", o.dir, (long)getpid()) ||
                !imgd_fmt(path, sizeof path, "%s/flux1-dev-Q8_0.gguf", root) ||
                mkdir(root, 0755) != 0)) {
        fprintf(stderr,
                "imgd-bench sd --family flux: cannot create a folder under %s (give "
                "--dir)\n",
                o.dir);
        rc = 1;
    }
    dir             = rc == 0 && !o.model;
    uint64_t params = 0;
    for (size_t i = 0; i < l.n; i++)
        params += (uint64_t)l.t[i].shape[0] * (l.t[i].n_dims == 2 ? (uint64_t)l.t[i].shape[1] : 1);
    double t0 = bench_now();
    if (dir && write_gguf(path, &l) != 0) {
        fprintf(stderr,
                "imgd-bench sd --family flux: could not write %s (disk full? ~12.7 GB "
                "needed; give --dir)\n",
                path);
        rc = 1;
    }
    double      t_write = bench_now() - t0;
    struct stat st;
    double      wbytes = !rc && stat(path, &st) == 0 ? (double)st.st_size : 0;
    if (dir && !rc) {
        printf("# FLUX.1-dev transformer of the real size, random weights: %zu tensors, %.2f B "
               "parameters, GGUF Q8_0 (2-D weights; norm scales and biases F32), written in "
               "%.1f s: %s\n",
               l.n, (double)params / 1e9, t_write, path);
        bench_emit(BENCH, "write_s", t_write, "s", NULL, 0);
    }
    if (!rc) {
        printf("# not real: the text encoders are not run (random T5-XXL-shaped [1, %d, 4096] "
               "and CLIP-L pooled [1, 768] embeddings go to the transformer); %s\n",
               (int)o.txt_len,
               o.vae ? "the VAE decode runs (--vae)"
                     : "nothing is decoded (no VAE; --vae adds it)");
        bench_emit(BENCH, "file_gib", wbytes / 1073741824.0, "GiB", NULL, 0);
    }
    imgd_free(l.t);

    double peak = 0;
#ifdef IMGD_HAVE_CUDA
    if (!rc && cuda) {
        char dev[256];
        imgd_cuda_device_name(dev, sizeof dev);
        printf("# device: %s\n", dev[0] ? dev : "(unknown)");
        if (imgd_cuda_gemm_f16_tflops(8192, 8192, 8192, 20, &peak) != IMGD_OK) peak = 0;
        bench_emit(BENCH, "gemm_f16_peak_tflops", peak, "TFLOP/s", NULL, 0);
    }
#endif
    if (!rc && !cuda) {
        peak = bench_gemm_peak_gflops(o.threads);
        bench_emit(BENCH, "gemm_peak_gflops", peak, "GFLOP/s", NULL, 0);
    }

    imgd_weights       *w  = NULL;
    imgd_model_info    *mi = NULL;
    imgd_wbind         *wb = NULL;
    imgd_backend       *be = NULL;
    imgd_flux_cfg       cfg;
    imgd_backend_params bp = imgd_backend_params_default();
    bp.n_threads           = o.threads;
    bp.gpu_math =
        o.precision && strcmp(o.precision, "f32") == 0 ? IMGD_GPU_MATH_F32 : IMGD_GPU_MATH_BF16;
    t0 = bench_now();
    if (!rc) rc = load(path, &w, &mi, &wb, &cfg);
    double t_load = bench_now() - t0;
    if (!rc && imgd_backend_new(cuda ? "cuda" : "cpu", &bp, &be) != IMGD_OK) {
        fprintf(stderr, "imgd-bench sd --family flux: %s\n", imgd_last_error());
        rc = 1;
    }
    if (!rc) bench_emit(BENCH, "load_s", t_load, "s", NULL, 0);

    char             vroot[1024], vpath[1400];
    imgd_weights    *vw  = NULL;
    imgd_model_info *vmi = NULL;
    imgd_wbind      *vwb = NULL;
    imgd_vae_cfg     vcfg;
    bool             vdir = false;
    if (!rc && o.vae) {
        rc = vae_make(&o, vroot, sizeof vroot, vpath, sizeof vpath, &vdir);
        if (!rc) rc = vae_load(vpath, &vw, &vmi, &vwb, &vcfg);
    }

    size_t T      = (size_t)o.txt_len;
    float *emb    = rc ? NULL : imgd_malloc(T * 4096 * sizeof *emb);
    float *pooled = rc ? NULL : imgd_malloc(768 * sizeof *pooled);
    if (!rc && (!emb || !pooled)) rc = 1;
    for (size_t i = 0; !rc && i < T * 4096; i++) emb[i] = urand() * 0.5f;
    for (size_t i = 0; !rc && i < 768; i++) pooled[i] = urand();
    run_ctx r     = {&o, wb, &cfg, be, wbytes, peak, cuda, vwb, &vcfg};
    double  step0 = 0, step = 0;
    int32_t px0 = o.size && o.size != 1024 ? o.size : 512;
    if (!rc && (o.size == 0 || o.size != 1024)) rc = run_size(&r, px0, emb, pooled, "", &step0);
    if (!rc && (o.size == 0 || o.size == 1024)) {
        rc  = run_size(&r, 1024, emb, pooled, "", &step);
        px0 = o.size ? 1024 : px0;
        if (o.size) step0 = step;
    }
    const char *lqr = getenv("IMGD_CUDA_LQ_ROWS"), *lqx = getenv("IMGD_CUDA_LQ_EXPAND");
    if (!rc && cuda && (!lqr || strcmp(lqr, "0") != 0 || !lqx || strcmp(lqx, "0") != 0))
        rc = compare_lq_tiles(&r, &bp, &be, px0, step0, emb, pooled);
    imgd_free(emb);
    imgd_free(pooled);
    imgd_wbind_free(vwb);
    imgd_model_info_free(vmi);
    imgd_weights_free(vw);
    char cmd[1200];
    if (vdir && !o.keep && imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", vroot) && system(cmd) != 0)
        fprintf(stderr, "imgd-bench sd --family flux: could not remove %s\n", vroot);
    imgd_backend_free(be);
    imgd_wbind_free(wb);
    imgd_model_info_free(mi);
    imgd_weights_free(w);
    if (dir && !o.keep) {
        if (remove(path) != 0 && access(path, F_OK) == 0)
            fprintf(stderr, "imgd-bench sd --family flux: could not remove %s\n", path);
        (void)rmdir(root);
    } else if (dir) {
        printf("# kept: %s\n", path);
    }
    return rc;
}
