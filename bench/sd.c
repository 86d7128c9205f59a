/* sd bench: a random-weight SD 1.5 checkpoint of the real size (the bench writes it: the
 * real LDM names and shapes in f16, kaiming-uniform weights, unit norms, zero biases), then
 * load time, text-encoder time, seconds per UNet step at 512x512 with CFG (batch 2), VAE
 * decode time, peak RSS beside the weights' size, and the UNet's achieved GFLOP/s (counted
 * from its planned graph) beside the engine's measured GEMM peak, all in one run.
 *
 * --backend cuda (builds with the CUDA toolkit): the same model on the GPU, reporting it/s,
 * load time (file) and first-run time (planning, weight upload and the tuners' timing
 * included; tune_s: the tuners' share, per tuner on a comment line), peak VRAM
 * (cudaMemGetInfo, sampled at every step), and the UNet's achieved TFLOP/s beside the card's
 * cuBLASLt fp16 GEMM TFLOP/s measured in the same run; --offload te,vae runs those parts on
 * the CPU (peak VRAM without them).
 *
 * --family sdxl: the same for a random-weight SDXL base (both text encoders, 1024x1024 by
 * default, peak RSS beside weights + 3 GiB).
 *
 * --family flux: a random-weight FLUX.1-dev transformer of the real size in GGUF Q8_0
 * (flux.c). */
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/pool.h"
#include "base/text.h"
#include "bench.h"
#include "detect/corpus_gen.h"
#include "formats/dtype.h"
#include "imgd.h"
#include "pipeline/pipeline.h"
#ifdef IMGD_HAVE_CUDA
#    include "tensor/cuda/cuda.h"
#endif

typedef struct opts {
    const char *dir, *tokenizer, *backend, *precision, *family;
    int32_t     steps, size;
    uint32_t    threads;
    bool        keep;
    bool        zero;    /* --zero-weights: leave the sparse file's zeros (no fill) */
    uint32_t    offload; /* --offload te,vae: those parts on the CPU (GPU runs) */
} opts;

static int parse(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->dir    = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    o->steps  = 2;
    o->size   = 0;
    o->family = "sd15";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--keep") == 0) {
            o->keep = true;
            continue;
        }
        if (strcmp(a, "--zero-weights") == 0) {
            o->zero = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "imgd-bench sd: %s needs a value\n", a);
            return -1;
        }
        if (strcmp(a, "--dir") == 0)
            o->dir = v;
        else if (strcmp(a, "--backend") == 0)
            o->backend = v;
        else if (strcmp(a, "--precision") == 0)
            o->precision = v;
        else if (strcmp(a, "--family") == 0)
            o->family = v;
        else if (strcmp(a, "--tokenizer") == 0)
            o->tokenizer = v;
        else if (strcmp(a, "--steps") == 0)
            o->steps = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--size") == 0)
            o->size = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--threads") == 0)
            o->threads = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--offload") == 0) {
            if (!imgd_offload_parse(v, &o->offload)) {
                fprintf(stderr, "imgd-bench sd: --offload '%s': expected te, vae or te,vae\n", v);
                return -1;
            }
        } else {
            fprintf(stderr, "imgd-bench sd: unknown option %s\n", a);
            return -1;
        }
        i++;
    }
    if (strcmp(o->family, "sd15") != 0 && strcmp(o->family, "sdxl") != 0) {
        fprintf(stderr, "imgd-bench sd: --family '%s': expected sd15, sdxl or flux\n", o->family);
        return -1;
    }
    if (!o->size) o->size = strcmp(o->family, "sdxl") == 0 ? 1024 : 512;
    if (o->steps < 1 || o->size < 64 || o->size % 8) {
        fprintf(stderr, "imgd-bench sd: --steps >= 1, --size a multiple of 8 >= 64\n");
        return -1;
    }
    return 0;
}

/* xorshift for the random weights (the values only need to be sane, not torch's) */
static float urand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((double)(*s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

#define FILL_CHUNK ((size_t)1 << 22) /* elements per task */

/* One task per FILL_CHUNK elements of a tensor, filled and written by the pool's threads,
 * each with its own buffer; the RNG is seeded per task, so the file does not depend on the
 * thread count. */
typedef struct fill_task {
    off_t  off;     /* file offset of the chunk */
    size_t cnt, es; /* elements, element size */
    float  a;       /* uniform range (0: constant 1 or 0) */
    bool   ones;    /* a norm's weight */
    bool   bf16;    /* es 2: bf16 rather than f16 */
} fill_task;

typedef struct fill_ctx {
    int              fd;
    const fill_task *tasks;
    uint8_t        **bufs; /* per thread, FILL_CHUNK * 4 bytes */
    atomic_int       rc;
} fill_ctx;

static void fill_run(void *p, size_t b, size_t e, uint32_t tid) {
    fill_ctx *c   = p;
    uint8_t  *buf = c->bufs[tid];
    for (size_t i = b; i < e; i++) {
        const fill_task *t = &c->tasks[i];
        uint64_t         s = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(i + 1) * 0xD1B54A32D192ED03ull);
        for (size_t j = 0; j < t->cnt; j++) {
            float v = t->ones ? 1.0f : t->a * urand(&s);
            if (t->es == 2) {
                uint16_t h = t->bf16 ? imgd_f32_to_bf16(v) : imgd_f32_to_f16(v);
                memcpy(buf + 2 * j, &h, 2);
            } else {
                memcpy(buf + 4 * j, &v, 4);
            }
        }
        if (pwrite(c->fd, buf, t->cnt * t->es, t->off) != (ssize_t)(t->cnt * t->es))
            atomic_store(&c->rc, -1);
    }
}

/* Fills every f32/f16/bf16 tensor of the sparse checkpoint at path in place. */
int bench_fill_random(const char *path) {
    imgd_weights *w = NULL;
    if (imgd_weights_open(path, NULL, &w) != IMGD_OK) {
        fprintf(stderr, "imgd-bench sd: %s\n", imgd_last_error());
        return -1;
    }
    size_t         n   = imgd_weights_tensor_count(w);
    const uint8_t *min = NULL;
    for (size_t i = 0; i < n; i++) {
        imgd_tensor_info t;
        if (imgd_weights_tensor(w, i, &t) == IMGD_OK && (!min || (const uint8_t *)t.data < min))
            min = t.data;
    }
    int        fd = open(path, O_RDWR);
    uint8_t    hl[8];
    uint64_t   hlen  = 0;
    int        rc    = fd >= 0 && pread(fd, hl, 8, 0) == 8 ? 0 : -1;
    fill_task *tasks = NULL;
    size_t     nt = 0, cap = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)hl[i] << (8 * i);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        imgd_tensor_info t;
        if (imgd_weights_tensor(w, i, &t) != IMGD_OK) continue;
        if (t.dtype != IMGD_DTYPE_F16 && t.dtype != IMGD_DTYPE_BF16 && t.dtype != IMGD_DTYPE_F32)
            continue;
        size_t es = t.dtype == IMGD_DTYPE_F32 ? 4 : 2, cnt = (size_t)(t.nbytes / es);
        size_t fan_in = 1;
        for (int32_t d = 1; d < t.n_dims; d++) fan_in *= (size_t)t.shape[d];
        bool  norm = t.n_dims == 1 && (strstr(t.name, "norm") || strstr(t.name, "ln_"));
        float a    = t.n_dims >= 2 ? 1.0f / sqrtf((float)fan_in) : 0.0f;
        off_t off  = (off_t)(8 + hlen + (uint64_t)((const uint8_t *)t.data - min));
        for (size_t done = 0; rc == 0 && done < cnt; done += FILL_CHUNK) {
            if (nt == cap) {
                cap             = cap ? cap * 2 : 1024;
                fill_task *grow = imgd_realloc(tasks, cap * sizeof *grow);
                if (!grow) {
                    rc = -1;
                    break;
                }
                tasks = grow;
            }
            tasks[nt++] = (fill_task){
                off + (off_t)(done * es),         IMGD_MIN(FILL_CHUNK, cnt - done), es, a,
                norm && strstr(t.name, "weight"), t.dtype == IMGD_DTYPE_BF16};
        }
    }
    imgd_pool *pool = NULL;
    uint32_t   nth  = 0;
    if (rc == 0 && imgd_pool_new(0, &pool) != IMGD_OK) rc = -1;
    if (rc == 0) nth = imgd_pool_size(pool);
    uint8_t **bufs = rc == 0 ? imgd_calloc(nth, sizeof *bufs) : NULL;
    for (uint32_t i = 0; bufs && i < nth; i++)
        if (!(bufs[i] = imgd_malloc(FILL_CHUNK * 4))) rc = -1;
    if (rc == 0 && bufs) {
        fill_ctx c = {fd, tasks, bufs, 0};
        imgd_pool_run_dynamic(pool, nt, 1, fill_run, &c);
        rc = atomic_load(&c.rc);
    } else {
        rc = -1;
    }
    for (uint32_t i = 0; bufs && i < nth; i++) imgd_free(bufs[i]);
    imgd_free(bufs);
    imgd_pool_free(pool);
    imgd_free(tasks);
    if (fd >= 0 && close(fd) != 0) rc = -1;
    imgd_weights_free(w);
    if (rc) fprintf(stderr, "imgd-bench sd: could not write the weights of %s\n", path);
    return rc;
}

int bench_sd_model_write(const char *dir, const char *tag, char *root, size_t root_cap,
                         char *target, size_t target_cap) {
    return bench_model_write_case(dir, tag, "ckpt_sd15_fp16_ldm", root, root_cap, target,
                                  target_cap);
}

int bench_model_write_case(const char *dir, const char *tag, const char *case_name, char *root,
                           size_t root_cap, char *target, size_t target_cap) {
    const cg_case *cs = NULL;
    for (size_t i = 0; i < cg_case_count(); i++)
        if (strcmp(cg_case_at(i)->name, case_name) == 0) cs = cg_case_at(i);
    if (!cs || !imgd_fmt(root, root_cap, "%s/imgd-bench-%s-%ld", dir, tag, (long)getpid()) ||
        mkdir(root, 0755) != 0 || cs->build(root, target, target_cap) != 0)
        return -1;
    return 0;
}

double bench_graph_flops(const imgd_graph *g) {
    double f = 0;
    for (size_t i = 0; g && i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *t = imgd_graph_exec_node(g, i);
        double             o = (double)imgd_tensor_numel(t);
        if (t->op == IMGD_OP_LINEAR_QUANT) {
            f += 2.0 * o * (double)t->src[1]->shape[1]; /* w [out, in] */
        } else if (t->op == IMGD_OP_MATMUL) {
            const imgd_tensor *a = t->src[0];
            int64_t            k = t->ip[0] ? a->shape[a->n_dims - 2] : a->shape[a->n_dims - 1];
            f += 2.0 * o * (double)k;
        } else if (t->op == IMGD_OP_CONV2D) {
            const imgd_tensor *w = t->src[1];
            f += 2.0 * o * (double)(w->shape[1] * w->shape[2] * w->shape[3]);
        } else if (t->op == IMGD_OP_ATTENTION) {
            const imgd_tensor *k = t->src[1];
            /* q k^T and p v: 2 * 2 * (out elements) * keys; k is [B, Lk, H, D] */
            f += 4.0 * o * (double)k->shape[1];
        }
    }
    return f;
}

/* Device memory in use (total - free), sampled at every step when the backend is cuda. */
#ifdef IMGD_HAVE_CUDA
static bool   g_vram_sample;
static double g_vram_peak;

static void vram_sample(void) {
    size_t fr = 0, total = 0;
    if (g_vram_sample && imgd_cuda_mem_info(&fr, &total) == IMGD_OK &&
        (double)(total - fr) > g_vram_peak)
        g_vram_peak = (double)(total - fr);
}
#else
static void vram_sample(void) {}
#endif

static bool on_step(int32_t step, int32_t steps, double el, void *user) {
    (void)user;
    vram_sample();
    fprintf(stderr, "\r  step %d/%d  %.1fs", (int)step, (int)steps, el);
    if (step >= steps) fputc('\n', stderr);
    return true;
}

#ifdef IMGD_HAVE_CUDA
/* One precision on the GPU: load, a first generate (plans the graphs and uploads the
 * weights), a measured second one; then it/s, times, peak VRAM and the UNet's TFLOP/s
 * beside the fp16 GEMM peak, one JSON line each with the precision in the metric name. */
static int cuda_run(const opts *o, const char *target, imgd_precision prec, double gemm_peak) {
    const char      *pn = imgd_precision_name(prec);
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = prec;
    lp.tokenizer_dir    = o->tokenizer;
    lp.backend          = "cuda";
    lp.offload          = o->offload;
    g_vram_peak         = 0;
    vram_sample();
    double           vram0 = g_vram_peak; /* the CUDA context and what is left of earlier runs */
    imgd_model      *m     = NULL;
    imgd_gen_result *r1 = NULL, *r2 = NULL;
    double           t0 = bench_now(), t_load = 0, t_first = 0;
    int              rc = imgd_model_load(target, &lp, &m) == IMGD_OK ? 0 : 1;
    t_load              = bench_now() - t0;
    imgd_gen_params p   = imgd_gen_params_default();
    p.prompt            = "a photograph of an astronaut riding a horse, highly detailed";
    p.negative          = "blurry";
    p.width = p.height = o->size;
    p.steps            = o->steps;
    p.on_step          = on_step;
    t0                 = bench_now();
    if (!rc && imgd_generate(m, &p, &r1) != IMGD_OK) rc = 1;
    t_first = bench_now() - t0;
    if (!rc && imgd_generate(m, &p, &r2) != IMGD_OK) rc = 1;
    if (rc) fprintf(stderr, "imgd-bench sd: cuda %s: %s\n", pn, imgd_last_error());
    vram_sample();
    if (!rc) {
        double step  = r2->t_sample_s / r2->steps_run;
        double flops = bench_graph_flops(m->g_unet.g);
        double tf    = flops / step / 1e12;
        char   k[64];
#    define EMIT(metric, v, unit, vs, ratio)                                                       \
        do {                                                                                       \
            (void)imgd_fmt(k, sizeof k, "%s_%s", metric, pn);                                      \
            bench_emit("sd_cuda", k, v, unit, vs, ratio);                                          \
        } while (0)
        printf("# cuda %s: %d steps at %dx%d with CFG (batch 2); UNet %.1f GFLOP per step\n", pn,
               (int)r2->steps_run, (int)o->size, (int)o->size, flops / 1e9);
        EMIT("it_per_s", 1.0 / step, "it/s", NULL, 0);
        EMIT("unet_step_s", step, "s", NULL, 0);
        EMIT("load_s", t_load, "s", NULL, 0);
        EMIT("first_run_s", t_first, "s", NULL, 0);
        /* what the tuners took of it (and of the load): the UNet's backend, and the VAE's
         * where it has its own */
        imgd_cuda_tune_cost tc = {0}, tv = {0};
        (void)imgd_cuda_tune_costs(m->be, &tc);
        if (m->vae_be && m->vae_be != m->be) (void)imgd_cuda_tune_costs(m->vae_be, &tv);
        printf("# cuda %s tuners: attention %d shapes %.2f s, convolution %d shapes %.2f s, GEMM "
               "%d shapes %.2f s; cuDNN graph plans for %d convolution layouts %.2f s\n",
               pn, tc.attn_n + tv.attn_n, tc.attn_s + tv.attn_s, tc.conv_n + tv.conv_n,
               tc.conv_s + tv.conv_s, tc.gemm_n + tv.gemm_n, tc.gemm_s + tv.gemm_s,
               tc.conv_plan_n + tv.conv_plan_n, tc.conv_plan_s + tv.conv_plan_s);
        double tune_s = tc.attn_s + tc.conv_s + tc.gemm_s + tv.attn_s + tv.conv_s + tv.gemm_s;
        EMIT("tune_s", tune_s, "s", "first_run_s", t_first > 0 ? tune_s / t_first : 0);
        EMIT("text_encoder_s", r2->t_encode_s, "s", NULL, 0);
        EMIT("vae_decode_s", r2->t_decode_s, "s", NULL, 0);
        EMIT("peak_vram_gib", g_vram_peak / 1073741824.0, "GiB", NULL, 0);
        EMIT("peak_vram_model_gib", (g_vram_peak - vram0) / 1073741824.0, "GiB", NULL, 0);
        EMIT("unet_tflops", tf, "TFLOP/s", "gemm_f16_peak", gemm_peak > 0 ? tf / gemm_peak : 0);
#    undef EMIT
    }
    imgd_gen_result_free(r1);
    imgd_gen_result_free(r2);
    imgd_model_free(m);
    return rc;
}
#endif

/* --backend cuda: the card's fp16 GEMM peak, then each precision of --precision. */
static int bench_sd_cuda(const opts *o, const char *target) {
#ifdef IMGD_HAVE_CUDA
    char dev[256];
    imgd_cuda_device_name(dev, sizeof dev);
    g_vram_sample = true;
    double peak   = 0;
    if (imgd_cuda_gemm_f16_tflops(8192, 8192, 8192, 20, &peak) != IMGD_OK) {
        fprintf(stderr, "imgd-bench sd: fp16 GEMM peak: %s\n", imgd_last_error());
        peak = 0;
    }
    printf("# device: %s\n", dev[0] ? dev : "(unknown)");
    bench_emit("sd_cuda", "gemm_f16_peak_tflops", peak, "TFLOP/s", NULL, 0);
    int         rc   = 0;
    const char *list = o->precision ? o->precision : "f32,f16";
    while (*list) {
        char        name[16] = {0};
        const char *e        = strchr(list, ',');
        size_t      n        = e ? (size_t)(e - list) : strlen(list);
        memcpy(name, list, n < sizeof name - 1 ? n : sizeof name - 1);
        imgd_precision prec;
        if (!imgd_precision_parse(name, &prec)) {
            fprintf(stderr, "imgd-bench sd: --precision: '%s' is not f32|f16|bf16|auto\n", name);
            return 2;
        }
        rc |= cuda_run(o, target, prec, peak);
        list += e ? n + 1 : n;
    }
    return rc;
#else
    (void)o;
    (void)target;
    fprintf(stderr, "imgd-bench sd: this build has no CUDA backend (configure with the CUDA "
                    "toolkit: -DIMGD_CUDA=ON)\n");
    return 1;
#endif
}

int bench_sd(int argc, char **argv) {
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], "--family") == 0 && strcmp(argv[i + 1], "flux") == 0)
            return bench_sd_flux(argc, argv);
    opts o;
    if (parse(argc, argv, &o) != 0) return 2;
    imgd_log_level_set(IMGD_LOG_WARN);
    bool cuda = o.backend && strcmp(o.backend, "cuda") == 0;
#ifdef IMGD_HAVE_CUDA
    if (cuda && imgd_cuda_device_count() < 1) {
        fprintf(stderr, "imgd-bench sd: --backend cuda: no CUDA device on this machine\n");
        return 1;
    }
#endif
    char tokdir[4096];
    if (!o.tokenizer) {
        const char *sh = getenv("IMGD_SHARED_DIR");
        const char *td = getenv("IMGD_TOKENIZER_DIR");
        if (td && *td)
            o.tokenizer = td;
        else if (imgd_fmt(tokdir, sizeof tokdir, "%s/conformance/clip-tokenizer",
                          sh && *sh ? sh : "../shared"))
            o.tokenizer = tokdir;
    }
    char root[1024], target[1400];
    bool xl = strcmp(o.family, "sdxl") == 0;
    if (bench_model_write_case(o.dir, "sd", xl ? "ckpt_sdxl_base_sgm" : "ckpt_sd15_fp16_ldm", root,
                               sizeof root, target, sizeof target) != 0) {
        fprintf(stderr, "imgd-bench sd: could not write the model under %s (give --dir)\n", o.dir);
        return 1;
    }
    double t0 = bench_now();
    /* zeros time the same as random values in dense kernels (no denormals): for quick runs */
    int rc = o.zero ? 0 : bench_fill_random(target);
    printf("# %s %s (f16) written in %.1f s: %s\n", o.zero ? "zero-weight" : "random",
           xl ? "SDXL base" : "SD 1.5", bench_now() - t0, target);
    struct stat st;
    double      wbytes = stat(target, &st) == 0 ? (double)st.st_size : 0;

    if (cuda) {
        rc = rc ? rc : bench_sd_cuda(&o, target);
        goto cleanup;
    }
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.threads          = o.threads;
    lp.tokenizer_dir    = o.tokenizer;
    lp.backend          = o.backend;
    imgd_model *m       = NULL;
    t0                  = bench_now();
    if (!rc && imgd_model_load(target, &lp, &m) != IMGD_OK) {
        fprintf(stderr, "imgd-bench sd: %s\n", imgd_last_error());
        rc = 1;
    }
    double          t_load = bench_now() - t0;
    imgd_gen_params p      = imgd_gen_params_default();
    p.prompt               = "a photograph of an astronaut riding a horse, highly detailed";
    p.negative             = "blurry";
    p.width = p.height  = o.size;
    p.steps             = o.steps;
    p.on_step           = on_step;
    imgd_gen_result *r1 = NULL, *r2 = NULL;
    /* the first run plans the graphs; the second is measured */
    if (!rc && (imgd_generate(m, &p, &r1) != IMGD_OK || imgd_generate(m, &p, &r2) != IMGD_OK)) {
        fprintf(stderr, "imgd-bench sd: %s\n", imgd_last_error());
        rc = 1;
    }
    if (!rc) {
        double        step  = r2->t_sample_s / r2->steps_run;
        double        flops = bench_graph_flops(m->g_unet.g);
        double        peak  = bench_gemm_peak_gflops(o.threads);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double      rss   = (double)ru.ru_maxrss * 1024.0;
        const char *b     = xl ? "sdxl" : "sd";
        double      extra = xl ? 3.0 : 1.5; /* GiB the goal allows beside the weights */
        bench_emit(b, "load_s", t_load, "s", NULL, 0);
        bench_emit(b, "text_encoder_s", r2->t_encode_s, "s", NULL, 0);
        bench_emit(b, "unet_step_s", step, "s", NULL, 0);
        bench_emit(b, "unet_gflops", flops / step / 1e9, "GFLOP/s", "gemm_peak",
                   flops / step / 1e9 / peak);
        bench_emit(b, "gemm_peak_gflops", peak, "GFLOP/s", NULL, 0);
        bench_emit(b, "vae_decode_s", r2->t_decode_s, "s", NULL, 0);
        bench_emit(b, "peak_rss_gib", rss / 1073741824.0, "GiB",
                   xl ? "weights_plus_3GiB" : "weights_plus_1.5GiB",
                   rss / (wbytes + extra * 1073741824.0));
        printf("# UNet %.1f GFLOP per step (batch 2, %dx%d), weights %.2f GiB\n", flops / 1e9,
               (int)o.size, (int)o.size, wbytes / 1073741824.0);
    }
    imgd_gen_result_free(r1);
    imgd_gen_result_free(r2);
    imgd_model_free(m);
cleanup:;
    char cmd[1200];
    if (!o.keep && imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", root) && system(cmd) != 0)
        fprintf(stderr, "imgd-bench sd: could not remove %s\n", root);
    return rc;
}
