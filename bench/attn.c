/* attn bench: scaled-dot-product attention on the shapes of SD 1.5, SDXL and FLUX.1, each
 * kernel of the backend side by side in one run, beside the card's measured fp16 GEMM peak.
 *
 *   imgd-bench attn [--backend cuda|cpu] [--precision f16|bf16] [--kernels mma,mma1,...]
 *                   [--repeat N] [--chain N] [--quick]
 *
 * Each shape runs as one planned graph of --chain attentions in a row (the output of one is
 * the next one's queries; keys and values are constants uploaded once, and only one row of
 * the last output is read back), so a compute is attention work only. On cuda each kernel
 * (IMGD_CUDA_ATTN, read when a backend is created; mma1 / mma2: mma with
 * IMGD_CUDA_ATTN_MTILES=1 / 2 query tiles per warp, mma alone its per-head-dim default) gets
 * its own backend (default list mma,auto,cudnn,mma1,mma2,wmma,gemm; cudnn: cuDNN's fused
 * SDPA operation; auto: the fastest of mma1, mma2 and cudnn timed per shape at plan time,
 * the default); the figure is the
 * best of --repeat computes after a warm-up, in TFLOP/s (4 B H Lq Lk D per attention), with
 * each kernel's ratio to the fp16 GEMM peak and to the first kernel listed. On cpu (no
 * kernels to choose) the shapes run once each on the CPU backend in f32, for a quick look
 * or to check the bench itself (--quick: small shapes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "bench.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#ifdef IMGD_HAVE_CUDA
#    include "tensor/cuda/cuda.h"
#endif

typedef struct attn_shape {
    const char *name;
    int64_t     B, Lq, Lk, H, D;
} attn_shape;

/* The attentions that dominate each model at its usual size, batch 2 (CFG) for SD. */
static const attn_shape k_shapes[] = {
    {"sd15_self_64x64", 2, 4096, 4096, 8, 40},  {"sd15_cross_64x64", 2, 4096, 77, 8, 40},
    {"sd15_self_32x32", 2, 1024, 1024, 8, 80},  {"sdxl_self_64x64", 2, 4096, 4096, 10, 64},
    {"sdxl_self_32x32", 2, 1024, 1024, 20, 64}, {"flux_1024", 1, 4608, 4608, 24, 128},
};
static const attn_shape k_quick[] = {
    {"quick_self", 1, 256, 256, 2, 40},
    {"quick_cross", 1, 256, 77, 2, 64},
};

typedef struct attn_opts {
    const char   *backend, *kernels;
    imgd_gpu_math gpu_math;
    int           repeat, chain;
    bool          quick;
} attn_opts;

static int parse(int argc, char **argv, attn_opts *o) {
    o->backend  = "cuda";
    o->kernels  = "mma,auto,cudnn,mma1,mma2,wmma,gemm";
    o->gpu_math = IMGD_GPU_MATH_F16;
    o->repeat   = 5;
    o->chain    = 10;
    o->quick    = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            o->quick = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "imgd-bench attn: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--backend") == 0) {
            o->backend = v;
        } else if (strcmp(a, "--kernels") == 0) {
            o->kernels = v;
        } else if (strcmp(a, "--precision") == 0) {
            if (strcmp(v, "f16") != 0 && strcmp(v, "bf16") != 0) {
                fprintf(stderr, "imgd-bench attn: --precision '%s': expected f16 or bf16\n", v);
                return 2;
            }
            o->gpu_math = v[0] == 'b' ? IMGD_GPU_MATH_BF16 : IMGD_GPU_MATH_F16;
        } else if (strcmp(a, "--repeat") == 0 || strcmp(a, "--chain") == 0) {
            char *end = NULL;
            long  n   = strtol(v, &end, 10);
            if (!end || *end || n < 1 || n > 1000) {
                fprintf(stderr, "imgd-bench attn: %s '%s': expected 1..1000\n", a, v);
                return 2;
            }
            *(strcmp(a, "--repeat") == 0 ? &o->repeat : &o->chain) = (int)n;
        } else {
            fprintf(stderr, "imgd-bench attn: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (strcmp(o->backend, "cuda") != 0 && strcmp(o->backend, "cpu") != 0) {
        fprintf(stderr, "imgd-bench attn: --backend '%s': expected cuda or cpu\n", o->backend);
        return 2;
    }
    return 0;
}

/* A constant [B, L, H, D] of values in [-1, 1) (owned by the caller). */
static float *rand_buf(int64_t n, uint64_t *rng) {
    float *p = imgd_malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; p && i < n; i++) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        p[i] = (float)((*rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
    }
    return p;
}

/* Seconds per compute (best of o->repeat after a warm-up) of o->chain attentions of shape s
 * on be; < 0 on failure (the error printed). */
static double time_chain(imgd_backend *be, const attn_shape *s, const attn_opts *o) {
    uint64_t    rng = 0x9e3779b97f4a7c15ull;
    int64_t     nq = s->B * s->Lq * s->H * s->D, nk = s->B * s->Lk * s->H * s->D;
    float      *q = rand_buf(nq, &rng), *k = rand_buf(nk, &rng), *v = rand_buf(nk, &rng);
    imgd_graph *g    = NULL;
    double      best = -1.0;
    imgd_status st   = q && k && v ? imgd_graph_new(NULL, &g) : IMGD_E_NOMEM;
    if (st == IMGD_OK) {
        const int64_t sq[4] = {s->B, s->Lq, s->H, s->D}, sk[4] = {s->B, s->Lk, s->H, s->D};
        /* the constants through a scale: activations, stored in the math type on a GPU */
        imgd_tensor *x =
            imgd_op_scale(g, imgd_graph_weight(g, "q", IMGD_DTYPE_F32, 4, sq, q), 1.0f, 0.0f);
        imgd_tensor *kt =
            imgd_op_scale(g, imgd_graph_weight(g, "k", IMGD_DTYPE_F32, 4, sk, k), 1.0f, 0.0f);
        imgd_tensor *vt =
            imgd_op_scale(g, imgd_graph_weight(g, "v", IMGD_DTYPE_F32, 4, sk, v), 1.0f, 0.0f);
        for (int i = 0; i < o->chain; i++) x = imgd_op_attention(g, x, kt, vt, NULL, 0.0f);
        for (int32_t d = 0; d < 4; d++) x = imgd_op_narrow(g, x, d, 0, 1); /* one value */
        x = imgd_op_cont(g, x);
        imgd_graph_output(g, x);
        st = imgd_graph_plan(g, be, NULL);
        if (st == IMGD_OK) st = imgd_graph_alloc(g, NULL, 0);
        if (st == IMGD_OK) st = imgd_graph_compute(g); /* warm-up (and CUDA graph capture) */
        for (int r = 0; r < o->repeat && st == IMGD_OK; r++) {
            double t0 = bench_now();
            st        = imgd_graph_compute(g);
            float one = 0.0f; /* the read waits for the device */
            if (st == IMGD_OK) st = imgd_graph_read_f32(g, x, &one, 1);
            double dt = bench_now() - t0;
            if (st == IMGD_OK && !isfinite(one)) {
                st = imgd_fail(IMGD_E_INTERNAL, "non-finite attention output");
                break;
            }
            if (st == IMGD_OK && (best < 0 || dt < best)) best = dt;
        }
    }
    if (st != IMGD_OK) {
        fprintf(stderr, "imgd-bench attn: %s: %s: %s\n", s->name, imgd_status_name(st),
                imgd_last_error());
        best = -1.0;
    }
    imgd_graph_free(g);
    imgd_free(q);
    imgd_free(k);
    imgd_free(v);
    return best;
}

static double attn_flops(const attn_shape *s) {
    return 4.0 * (double)s->B * (double)s->H * (double)s->Lq * (double)s->Lk * (double)s->D;
}

static int run_cpu(const attn_opts *o, const attn_shape *shapes, size_t n) {
    imgd_backend_params p  = imgd_backend_params_default();
    imgd_backend       *be = NULL;
    if (imgd_backend_new("cpu", &p, &be) != IMGD_OK) {
        fprintf(stderr, "imgd-bench attn: cpu backend: %s\n", imgd_last_error());
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        double t = time_chain(be, &shapes[i], o);
        if (t <= 0) {
            rc = 1;
            continue;
        }
        char metric[96];
        (void)imgd_fmt(metric, sizeof metric, "%s_cpu_gflops", shapes[i].name);
        bench_emit("attn", metric, attn_flops(&shapes[i]) * o->chain / t / 1e9, "GFLOP/s", NULL, 0);
    }
    imgd_backend_free(be);
    return rc;
}

#ifdef IMGD_HAVE_CUDA
#    define KERNELS_MAX 7
static int run_cuda(const attn_opts *o, const attn_shape *shapes, size_t n) {
    char names[KERNELS_MAX][16];
    int  nk = 0;
    for (const char *p = o->kernels; *p && nk < KERNELS_MAX;) {
        const char *e = strchr(p, ',');
        size_t      l = e ? (size_t)(e - p) : strlen(p);
        if (l == 0 || l >= sizeof names[0]) {
            fprintf(stderr, "imgd-bench attn: --kernels '%s': a name is empty or too long\n",
                    o->kernels);
            return 2;
        }
        memcpy(names[nk], p, l);
        names[nk++][l] = '\0';
        p += l + (e != NULL);
    }
    char dev[256];
    imgd_cuda_device_name(dev, sizeof dev);
    printf("# device: %s\n", dev[0] ? dev : "(unknown)");
    double peak = 0;
    if (imgd_cuda_gemm_f16_tflops(8192, 8192, 8192, 20, &peak) != IMGD_OK) {
        fprintf(stderr, "imgd-bench attn: fp16 GEMM peak: %s\n", imgd_last_error());
        peak = 0;
    }
    bench_emit("attn", "gemm_f16_peak_tflops", peak, "TFLOP/s", NULL, 0);
    imgd_backend *be[KERNELS_MAX] = {NULL};
    int           rc              = 0;
    for (int k = 0; k < nk && rc == 0; k++) {
        /* the backend reads IMGD_CUDA_ATTN(_MTILES) when it is created; mmaN: N query tiles */
        char        kernel[16];
        const char *mt = "auto";
        (void)imgd_fmt(kernel, sizeof kernel, "%s", names[k]);
        if (strncmp(kernel, "mma", 3) == 0 && (kernel[3] == '1' || kernel[3] == '2') &&
            !kernel[4]) {
            mt        = names[k] + 3;
            kernel[3] = '\0';
        }
        if (setenv("IMGD_CUDA_ATTN", kernel, 1) != 0 || setenv("IMGD_CUDA_ATTN_MTILES", mt, 1) != 0)
            rc = 1;
        imgd_backend_params p = imgd_backend_params_default();
        p.gpu_math            = o->gpu_math;
        if (rc == 0 && imgd_backend_new("cuda", &p, &be[k]) != IMGD_OK) {
            fprintf(stderr, "imgd-bench attn: cuda backend with IMGD_CUDA_ATTN=%s: %s\n", names[k],
                    imgd_last_error());
            rc = 1;
        }
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        double first = 0;
        for (int k = 0; k < nk; k++) {
            double t = time_chain(be[k], &shapes[i], o);
            if (t <= 0) {
                rc = 1;
                continue;
            }
            double tf = attn_flops(&shapes[i]) * o->chain / t / 1e12;
            char   metric[96];
            (void)imgd_fmt(metric, sizeof metric, "%s_%s_tflops", shapes[i].name, names[k]);
            if (k == 0) {
                first = tf;
                bench_emit("attn", metric, tf, "TFLOP/s", "gemm_f16_peak",
                           peak > 0 ? tf / peak : 0);
            } else {
                char vs[32];
                (void)imgd_fmt(vs, sizeof vs, "%s", names[0]);
                bench_emit("attn", metric, tf, "TFLOP/s", vs, first > 0 ? tf / first : 0);
            }
        }
    }
    for (int k = 0; k < nk; k++) imgd_backend_free(be[k]);
    return rc;
}
#endif

int bench_attn(int argc, char **argv) {
    attn_opts o;
    int       prc = parse(argc, argv, &o);
    if (prc) return prc;
    const attn_shape *shapes = o.quick ? k_quick : k_shapes;
    size_t n = o.quick ? sizeof k_quick / sizeof k_quick[0] : sizeof k_shapes / sizeof k_shapes[0];
    if (strcmp(o.backend, "cpu") == 0) return run_cpu(&o, shapes, n);
#ifdef IMGD_HAVE_CUDA
    return run_cuda(&o, shapes, n);
#else
    fprintf(stderr, "imgd-bench attn: this build has no CUDA backend (--backend cpu runs the "
                    "shapes on the CPU)\n");
    return 2;
#endif
}
