/* engine bench: GFLOP/s of the tensor engine's CPU backend on the three shapes that dominate
 * SD 1.5 on a CPU, each beside the machine's measured GEMM peak in the same run.
 *
 *   gemm_peak  best of oneDNN (its matmul primitive and dnnl_sgemm) and OpenBLAS cblas_sgemm
 *              on an N x N x N f32 GEMM, called directly
 *   sgemm      the engine's matmul node on the same shape (gemm auto, and OpenBLAS)
 *   conv       320 -> 320 channels, 3x3, 64x64, batch 2 (the UNet's most expensive conv)
 *   conv1x1    the same with a 1x1 kernel (proj_in/out, shortcuts): runs as a matmul
 *   attention  4096 tokens x 8 heads x 40 dims (the UNet's first self-attention)
 *   linear_q8_0  x [N, N] times a Q8_0 weight [N, N]^T (GGUF FLUX layers): the fused
 *              linear_quant kernel (blocks dequantized per tile), and for comparison the
 *              dequantize + matmul graph (the whole weight expanded to f32 each run)
 *
 * Every figure is the best of --repeat runs after a warm-up. The oneDNN peak is measured
 * first and once more after each engine case, so machine noise hits both; OpenBLAS is
 * measured last (its idle threads spin after each call). Ratios use the final peak. With
 * AVX-512-BF16 the bf16 paths are reported as extra metrics. Options shrink the shapes for a quick
 * run. */
#include <cblas.h>
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "bench.h"
#include "tensor/backend.h"
#include "tensor/cpu/cpu.h"
#include "tensor/ops.h"

typedef struct opts {
    int64_t     gemm;    /* M = N = K */
    int64_t     conv_hw; /* conv spatial size */
    int64_t     conv_n;  /* conv batch */
    int64_t     tokens;  /* attention sequence length */
    int64_t     heads, dim;
    int         repeat;
    uint32_t    threads;
    const char *only; /* metric prefix filter, NULL = all */
} opts;

static int parse(int argc, char **argv, opts *o) {
    *o = (opts){4096, 64, 2, 4096, 8, 40, 3, 0, NULL};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--quick") == 0) {
            o->gemm    = 1024;
            o->conv_hw = 32;
            o->tokens  = 1024;
            continue;
        }
        if (i + 1 >= argc) goto usage;
        if (strcmp(a, "--only") == 0) {
            o->only = argv[++i];
            continue;
        }
        long v = strtol(argv[++i], NULL, 10);
        if (v <= 0) goto usage;
        if (strcmp(a, "--gemm") == 0)
            o->gemm = v;
        else if (strcmp(a, "--conv-hw") == 0)
            o->conv_hw = v;
        else if (strcmp(a, "--conv-batch") == 0)
            o->conv_n = v;
        else if (strcmp(a, "--tokens") == 0)
            o->tokens = v;
        else if (strcmp(a, "--heads") == 0)
            o->heads = v;
        else if (strcmp(a, "--dim") == 0)
            o->dim = v;
        else if (strcmp(a, "--repeat") == 0)
            o->repeat = (int)v;
        else if (strcmp(a, "--threads") == 0)
            o->threads = (uint32_t)v;
        else
            goto usage;
    }
    return 0;
usage:
    fprintf(stderr,
            "imgd-bench engine: [--quick] [--gemm N] [--conv-hw N] [--conv-batch N] "
            "[--tokens N] [--heads N] [--dim N] [--repeat N] [--threads N] [--only METRIC]\n");
    return -1;
}

static float *rand_buf(size_t n, uint32_t seed) {
    float *p = imgd_malloc(n * sizeof *p + 1);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
    return p;
}

/* ---- an engine graph ready to replay ------------------------------------------------- */

typedef struct prepared {
    imgd_graph *g;
    float      *bufs[4];
} prepared;

static void prepared_free(prepared *p) {
    imgd_graph_free(p->g);
    for (int i = 0; i < 4; i++) imgd_free(p->bufs[i]);
    memset(p, 0, sizeof *p);
}

static imgd_tensor *weight(prepared *p, int slot, int32_t nd, const int64_t *shape) {
    size_t n = 1;
    for (int32_t i = 0; i < nd; i++) n *= (size_t)shape[i];
    p->bufs[slot] = rand_buf(n, (uint32_t)slot * 77u + 1u);
    if (!p->bufs[slot]) return NULL;
    return imgd_graph_weight(p->g, NULL, IMGD_DTYPE_F32, nd, shape, p->bufs[slot]);
}

typedef enum bench_kind {
    BK_GEMM,
    BK_CONV,
    BK_CONV1,
    BK_ATTN,
    BK_QLIN, /* linear_quant on a Q8_0 weight */
    BK_QDEQ  /* the same through dequantize + matmul */
} bench_kind;

/* A Q8_0 weight [n, n] (n a multiple of 32): random int8 values, f16 scales of 1/64. */
static imgd_tensor *q8_weight(prepared *p, int slot, int64_t n) {
    size_t bytes  = (size_t)(n * n / 32 * 34);
    p->bufs[slot] = imgd_malloc(bytes + 1);
    if (!p->bufs[slot]) return NULL;
    unsigned char *b    = (unsigned char *)p->bufs[slot];
    uint32_t       seed = 7;
    for (size_t i = 0; i < bytes; i++) {
        seed = seed * 1664525u + 1013904223u;
        b[i] = (unsigned char)(seed >> 24);
    }
    for (size_t k = 0; k < bytes; k += 34) { /* f16 0x2400 = 1/64 */
        b[k]     = 0x00;
        b[k + 1] = 0x24;
    }
    return imgd_graph_weight(p->g, NULL, IMGD_DTYPE_Q8_0, 2, (int64_t[]){n, n}, b);
}

static int prepare(prepared *p, bench_kind kind, const opts *o, imgd_backend *be) {
    if (imgd_graph_new(NULL, &p->g) != IMGD_OK) return -1;
    imgd_tensor *y = NULL;
    if (kind == BK_GEMM) {
        int64_t s[2] = {o->gemm, o->gemm};
        y = imgd_op_matmul(p->g, weight(p, 0, 2, s), weight(p, 1, 2, s), false, false, NULL);
    } else if (kind == BK_CONV || kind == BK_CONV1) {
        int64_t k     = kind == BK_CONV ? 3 : 1;
        int64_t xs[4] = {o->conv_n, 320, o->conv_hw, o->conv_hw}, ws[4] = {320, 320, k, k};
        int64_t bs[1] = {320};
        y = imgd_op_conv2d(p->g, weight(p, 0, 4, xs), weight(p, 1, 4, ws), weight(p, 2, 1, bs), 1,
                           (int32_t)(k / 2));
    } else if (kind == BK_QLIN || kind == BK_QDEQ) {
        int64_t      n = (o->gemm + 31) / 32 * 32, s[2] = {n, n};
        imgd_tensor *x = weight(p, 0, 2, s), *w = q8_weight(p, 1, n);
        y = kind == BK_QLIN ? imgd_op_linear_quant(p->g, x, w, NULL)
                            : imgd_op_linear(p->g, x, w, NULL);
    } else {
        int64_t s[4] = {1, o->tokens, o->heads, o->dim};
        y = imgd_op_attention(p->g, weight(p, 0, 4, s), weight(p, 1, 4, s), weight(p, 2, 4, s),
                              NULL, 0.0f);
    }
    imgd_graph_output(p->g, y);
    if (imgd_graph_plan(p->g, be, NULL) != IMGD_OK || imgd_graph_alloc(p->g, NULL, 0) != IMGD_OK) {
        fprintf(stderr, "imgd-bench engine: %s\n", imgd_last_error());
        return -1;
    }
    return 0;
}

static double time_graph(prepared *p) {
    double t = bench_now();
    if (imgd_graph_compute(p->g) != IMGD_OK) return 1e30;
    return bench_now() - t;
}

/* ---- library peak ---------------------------------------------------------------------- */

typedef struct peak_bufs {
    float           *a, *b, *c;
    int64_t          n;
    dnnl_engine_t    eng;
    dnnl_stream_t    stream;
    dnnl_primitive_t prim;
    dnnl_memory_t    ma, mb, mc;
} peak_bufs;

static int peak_init(peak_bufs *pb, int64_t n) {
    size_t nn = (size_t)(n * n);
    *pb       = (peak_bufs){
              rand_buf(nn, 1), rand_buf(nn, 2), rand_buf(nn, 3), n, NULL, NULL, NULL, NULL, NULL, NULL};
    dnnl_memory_desc_t    md;
    dnnl_matmul_desc_t    mm;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_dims_t           d  = {n, n};
    dnnl_status_t         s  = pb->a && pb->b && pb->c ? dnnl_success : dnnl_out_of_memory;
    if (s == dnnl_success) s = dnnl_engine_create(&pb->eng, dnnl_cpu, 0);
    if (s == dnnl_success) s = dnnl_stream_create(&pb->stream, pb->eng, dnnl_stream_default_flags);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_tag(&md, 2, d, dnnl_f32, dnnl_ab);
    if (s == dnnl_success) s = dnnl_matmul_desc_init(&mm, &md, &md, NULL, &md);
    if (s == dnnl_success) s = dnnl_primitive_desc_create(&pd, &mm, NULL, pb->eng, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&pb->prim, pd);
    if (s == dnnl_success) s = dnnl_memory_create(&pb->ma, &md, pb->eng, pb->a);
    if (s == dnnl_success) s = dnnl_memory_create(&pb->mb, &md, pb->eng, pb->b);
    if (s == dnnl_success) s = dnnl_memory_create(&pb->mc, &md, pb->eng, pb->c);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return s == dnnl_success ? 0 : -1;
}

static void peak_free(peak_bufs *pb) {
    dnnl_memory_t m[3] = {pb->ma, pb->mb, pb->mc};
    for (int i = 0; i < 3; i++)
        if (m[i]) dnnl_memory_destroy(m[i]);
    if (pb->prim) dnnl_primitive_destroy(pb->prim);
    if (pb->stream) dnnl_stream_destroy(pb->stream);
    if (pb->eng) dnnl_engine_destroy(pb->eng);
    imgd_free(pb->a);
    imgd_free(pb->b);
    imgd_free(pb->c);
}

static double time_prim(const peak_bufs *pb) {
    dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, pb->ma}, {DNNL_ARG_WEIGHTS, pb->mb}, {DNNL_ARG_DST, pb->mc}};
    double t = bench_now();
    if (dnnl_primitive_execute(pb->prim, pb->stream, 3, args) != dnnl_success ||
        dnnl_stream_wait(pb->stream) != dnnl_success)
        return 1e30;
    return bench_now() - t;
}

static double time_dnnl(const peak_bufs *pb) {
    double t = bench_now();
    (void)dnnl_sgemm('N', 'N', pb->n, pb->n, pb->n, 1.0f, pb->a, pb->n, pb->b, pb->n, 0.0f, pb->c,
                     pb->n);
    return bench_now() - t;
}

static double time_openblas(const peak_bufs *pb) {
    int    n = (int)pb->n;
    double t = bench_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, pb->a, n, pb->b, n, 0.0f,
                pb->c, n);
    return bench_now() - t;
}

static double min_d(double a, double b) {
    return a < b ? a : b;
}

/* The best of oneDNN's matmul primitive, dnnl_sgemm and OpenBLAS on a 4096^3 sgemm (three
 * runs each after a warm-up), in GFLOP/s: the peak other benches compare against. */
double bench_gemm_peak_gflops(uint32_t threads) {
    const int64_t n = 4096;
    if (threads) openblas_set_num_threads((int)threads);
    peak_bufs pb;
    if (peak_init(&pb, n) != 0) {
        peak_free(&pb);
        return 0;
    }
    double best = 1e30;
    (void)time_prim(&pb);
    for (int r = 0; r < 3; r++) {
        best = min_d(best, time_prim(&pb));
        best = min_d(best, time_dnnl(&pb));
        best = min_d(best, time_openblas(&pb));
    }
    peak_free(&pb);
    return 2.0 * (double)n * (double)n * (double)n * 1e-9 / best;
}

/* ---- the bench --------------------------------------------------------------------------- */

typedef struct engine_case {
    const char   *metric;
    bench_kind    kind;
    imgd_backend *be;
} engine_case;

static double flops_of(bench_kind k, const opts *o) {
    double n = (double)o->gemm;
    if (k == BK_GEMM) return 2.0 * n * n * n;
    if (k == BK_QLIN || k == BK_QDEQ) {
        int64_t q = (o->gemm + 31) / 32 * 32; /* whole Q8_0 blocks */
        return 2.0 * (double)q * (double)q * (double)q;
    }
    if (k == BK_CONV || k == BK_CONV1)
        return 2.0 * (double)o->conv_n * 320.0 * 320.0 * (k == BK_CONV ? 9.0 : 1.0) *
               (double)(o->conv_hw * o->conv_hw);
    return 4.0 * (double)o->heads * (double)o->tokens * (double)o->tokens * (double)o->dim;
}

static imgd_backend *make_be(const opts *o, imgd_cpu_math math, imgd_cpu_gemm gemm) {
    imgd_backend_params p  = imgd_backend_params_default();
    imgd_backend       *be = NULL;
    p.n_threads            = o->threads;
    p.math                 = math;
    p.gemm                 = gemm;
    if (imgd_backend_new("cpu", &p, &be) != IMGD_OK) return NULL;
    return be;
}

int bench_engine(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o) != 0) return 2;
    if (o.threads) openblas_set_num_threads((int)o.threads);
    bool          bf16 = imgd_cpu_has_bf16();
    imgd_backend *f32  = make_be(&o, IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_AUTO);
    imgd_backend *obl  = make_be(&o, IMGD_CPU_MATH_F32, IMGD_CPU_GEMM_OPENBLAS);
    imgd_backend *b16  = bf16 ? make_be(&o, IMGD_CPU_MATH_BF16, IMGD_CPU_GEMM_AUTO) : NULL;
    /* OpenBLAS last: its idle threads spin for a while after each call and would slow
     * whatever runs next */
    engine_case cases[] = {
        {"sgemm_gflops", BK_GEMM, f32},          {"conv_gflops", BK_CONV, f32},
        {"conv1x1_gflops", BK_CONV1, f32},       {"attention_gflops", BK_ATTN, f32},
        {"gemm_bf16_gflops", BK_GEMM, b16},      {"conv_bf16_gflops", BK_CONV, b16},
        {"linear_q8_0_gflops", BK_QLIN, f32},    {"linear_q8_0_dequant_gflops", BK_QDEQ, f32},
        {"sgemm_openblas_gflops", BK_GEMM, obl},
    };
    double    gfs[IMGD_ARRAY_LEN(cases)] = {0};
    peak_bufs pb;
    if (!f32 || !obl || peak_init(&pb, o.gemm) != 0) {
        fprintf(stderr, "imgd-bench engine: setup failed: %s\n", imgd_last_error());
        return 1;
    }
    double t_prim = 1e30, t_dnnl = 1e30, t_obl = 1e30, gf = flops_of(BK_GEMM, &o) * 1e-9;
    (void)time_prim(&pb); /* warm-up */
    for (int r = 0; r < o.repeat; r++) {
        t_prim = min_d(t_prim, time_prim(&pb));
        t_dnnl = min_d(t_dnnl, time_dnnl(&pb));
    }
    for (size_t i = 0; i < IMGD_ARRAY_LEN(cases); i++) {
        if (!cases[i].be) continue;
        if (o.only && strncmp(cases[i].metric, o.only, strlen(o.only)) != 0) continue;
        if (cases[i].be == obl)
            for (int r = 0; r < o.repeat; r++) t_obl = min_d(t_obl, time_openblas(&pb));
        prepared p = {0};
        if (prepare(&p, cases[i].kind, &o, cases[i].be) != 0) return 1;
        double best = 1e30;
        (void)time_graph(&p); /* warm-up: first-touch of the buffers, oneDNN JIT */
        for (int r = 0; r < o.repeat; r++) best = min_d(best, time_graph(&p));
        prepared_free(&p);
        if (cases[i].be != obl) t_prim = min_d(t_prim, time_prim(&pb));
        gfs[i] = flops_of(cases[i].kind, &o) * 1e-9 / best;
    }
    if (t_obl >= 1e30)
        for (int r = 0; r < o.repeat; r++) t_obl = min_d(t_obl, time_openblas(&pb));
    double peak = gf / min_d(t_prim, min_d(t_dnnl, t_obl));
    for (size_t i = 0; i < IMGD_ARRAY_LEN(cases); i++)
        if (gfs[i] > 0)
            bench_emit("engine", cases[i].metric, gfs[i], "GFLOP/s", "gemm_peak", gfs[i] / peak);
    bench_emit("engine", "gemm_peak_gflops", peak, "GFLOP/s", NULL, 0);
    bench_emit("engine", "gemm_peak_dnnl_matmul_gflops", gf / t_prim, "GFLOP/s", NULL, 0);
    bench_emit("engine", "gemm_peak_dnnl_sgemm_gflops", gf / t_dnnl, "GFLOP/s", NULL, 0);
    bench_emit("engine", "gemm_peak_openblas_gflops", gf / t_obl, "GFLOP/s",
               "gemm_peak_dnnl_matmul", t_prim / t_obl);
    peak_free(&pb);
    imgd_backend_free(f32);
    imgd_backend_free(obl);
    imgd_backend_free(b16);
    return 0;
}
