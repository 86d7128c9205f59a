/* sd bench: a random-weight SD 1.5 checkpoint of the real size (the bench writes it: the
 * real LDM names and shapes in f16, kaiming-uniform weights, unit norms, zero biases), then
 * load time, text-encoder time, seconds per UNet step at 512x512 with CFG (batch 2), VAE
 * decode time, peak RSS beside the weights' size, and the UNet's achieved GFLOP/s (counted
 * from its planned graph) beside the engine's measured GEMM peak, all in one run. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/text.h"
#include "bench.h"
#include "detect/corpus_gen.h"
#include "formats/dtype.h"
#include "imgd.h"
#include "pipeline/pipeline.h"

typedef struct opts {
    const char *dir, *tokenizer;
    int32_t     steps, size;
    uint32_t    threads;
    bool        keep;
} opts;

static int parse(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->dir   = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    o->steps = 2;
    o->size  = 512;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--keep") == 0) {
            o->keep = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "imgd-bench sd: %s needs a value\n", a);
            return -1;
        }
        if (strcmp(a, "--dir") == 0)
            o->dir = v;
        else if (strcmp(a, "--tokenizer") == 0)
            o->tokenizer = v;
        else if (strcmp(a, "--steps") == 0)
            o->steps = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--size") == 0)
            o->size = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--threads") == 0)
            o->threads = (uint32_t)strtoul(v, NULL, 10);
        else {
            fprintf(stderr, "imgd-bench sd: unknown option %s\n", a);
            return -1;
        }
        i++;
    }
    if (o->steps < 1 || o->size < 64 || o->size % 8) {
        fprintf(stderr, "imgd-bench sd: --steps >= 1, --size a multiple of 8 >= 64\n");
        return -1;
    }
    return 0;
}

/* xorshift for the random weights (the values only need to be sane, not torch's) */
static uint64_t g_rs = 0x9E3779B97F4A7C15ull;
static float    urand(void) {
       g_rs ^= g_rs << 13;
       g_rs ^= g_rs >> 7;
       g_rs ^= g_rs << 17;
       return (float)((double)(g_rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* Fills every tensor of the sparse checkpoint at path in place. */
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
    int      fd = open(path, O_RDWR);
    uint8_t  hl[8];
    uint64_t hlen = 0;
    int      rc   = fd >= 0 && pread(fd, hl, 8, 0) == 8 ? 0 : -1;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)hl[i] << (8 * i);
    uint16_t *buf = imgd_malloc((size_t)1 << 24);
    if (!buf) rc = -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        imgd_tensor_info t;
        if (imgd_weights_tensor(w, i, &t) != IMGD_OK) continue;
        if (t.dtype != IMGD_DTYPE_F16 && t.dtype != IMGD_DTYPE_F32) continue;
        size_t es = t.dtype == IMGD_DTYPE_F16 ? 2 : 4, cnt = (size_t)(t.nbytes / es);
        size_t fan_in = 1;
        for (int32_t d = 1; d < t.n_dims; d++) fan_in *= (size_t)t.shape[d];
        bool   norm = t.n_dims == 1 && (strstr(t.name, "norm") || strstr(t.name, "ln_"));
        float  a    = t.n_dims >= 2 ? 1.0f / sqrtf((float)fan_in) : 0.0f;
        off_t  off  = (off_t)(8 + hlen + (uint64_t)((const uint8_t *)t.data - min));
        size_t done = 0;
        while (rc == 0 && done < cnt) {
            size_t k = cnt - done, cap = ((size_t)1 << 24) / es;
            if (k > cap) k = cap;
            for (size_t j = 0; j < k; j++) {
                float v = norm && strstr(t.name, "weight") ? 1.0f : a * urand();
                if (es == 2)
                    buf[j] = imgd_f32_to_f16(v);
                else
                    memcpy((uint8_t *)buf + 4 * j, &v, 4);
            }
            if (pwrite(fd, buf, k * es, off + (off_t)(done * es)) != (ssize_t)(k * es)) rc = -1;
            done += k;
        }
    }
    imgd_free(buf);
    if (fd >= 0 && close(fd) != 0) rc = -1;
    imgd_weights_free(w);
    if (rc) fprintf(stderr, "imgd-bench sd: could not write the weights of %s\n", path);
    return rc;
}

/* Multiply-adds of the executed matmuls, convolutions and attentions of a graph, x2. */
static double graph_flops(const imgd_graph *g) {
    double f = 0;
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *t = imgd_graph_exec_node(g, i);
        double             o = (double)imgd_tensor_numel(t);
        if (t->op == IMGD_OP_MATMUL) {
            const imgd_tensor *a = t->src[0];
            int64_t            k = t->ip[0] ? a->shape[a->n_dims - 2] : a->shape[a->n_dims - 1];
            f += 2.0 * o * (double)k;
        } else if (t->op == IMGD_OP_CONV2D) {
            const imgd_tensor *w = t->src[1];
            f += 2.0 * o * (double)(w->shape[1] * w->shape[2] * w->shape[3]);
        } else if (t->op == IMGD_OP_ATTENTION) {
            const imgd_tensor *k = t->src[1];
            /* q k^T and p v: 2 * 2 * (out elements) * keys */
            f += 4.0 * o * (double)k->shape[k->n_dims - 2];
        }
    }
    return f;
}

static bool on_step(int32_t step, int32_t steps, double el, void *user) {
    (void)user;
    fprintf(stderr, "\r  step %d/%d  %.1fs", (int)step, (int)steps, el);
    if (step >= steps) fputc('\n', stderr);
    return true;
}

int bench_sd(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o) != 0) return 2;
    imgd_log_level_set(IMGD_LOG_WARN);
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
    const cg_case *cs = NULL;
    for (size_t i = 0; i < cg_case_count(); i++)
        if (strcmp(cg_case_at(i)->name, "ckpt_sd15_fp16_ldm") == 0) cs = cg_case_at(i);
    char root[1024], target[1400];
    if (!cs || !imgd_fmt(root, sizeof root, "%s/imgd-bench-sd-%ld", o.dir, (long)getpid()) ||
        mkdir(root, 0755) != 0 || cs->build(root, target, sizeof target) != 0) {
        fprintf(stderr, "imgd-bench sd: could not write the model under %s (give --dir)\n", o.dir);
        return 1;
    }
    double t0 = bench_now();
    int    rc = bench_fill_random(target);
    printf("# random SD 1.5 (f16) written in %.1f s: %s\n", bench_now() - t0, target);
    struct stat st;
    double      wbytes = stat(target, &st) == 0 ? (double)st.st_size : 0;

    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.threads          = o.threads;
    lp.tokenizer_dir    = o.tokenizer;
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
        double        flops = graph_flops(m->g_unet.g);
        double        peak  = bench_gemm_peak_gflops(o.threads);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double rss = (double)ru.ru_maxrss * 1024.0;
        bench_emit("sd", "load_s", t_load, "s", NULL, 0);
        bench_emit("sd", "text_encoder_s", r2->t_encode_s, "s", NULL, 0);
        bench_emit("sd", "unet_step_s", step, "s", NULL, 0);
        bench_emit("sd", "unet_gflops", flops / step / 1e9, "GFLOP/s", "gemm_peak",
                   flops / step / 1e9 / peak);
        bench_emit("sd", "gemm_peak_gflops", peak, "GFLOP/s", NULL, 0);
        bench_emit("sd", "vae_decode_s", r2->t_decode_s, "s", NULL, 0);
        bench_emit("sd", "peak_rss_gib", rss / 1073741824.0, "GiB", "weights_plus_1.5GiB",
                   rss / (wbytes + 1.5 * 1073741824.0));
        printf("# UNet %.1f GFLOP per step (batch 2, %dx%d), weights %.2f GiB\n", flops / 1e9,
               (int)o.size, (int)o.size, wbytes / 1073741824.0);
    }
    imgd_gen_result_free(r1);
    imgd_gen_result_free(r2);
    imgd_model_free(m);
    char cmd[1200];
    if (!o.keep && imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", root) && system(cmd) != 0)
        fprintf(stderr, "imgd-bench sd: could not remove %s\n", root);
    return rc;
}
