/* CPU backend: the vtable, the per-op kernel table, memory, and the oneDNN engine. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "cpu_impl.h"
#include "formats/dtype.h"
#include "tensor/cpu/cpu.h"

/* ---- kernel table ------------------------------------------------------------------------- */

static const cpu_kernel k_cpu_kernels[] = {
    [IMGD_OP_NONE]               = {NULL, NULL, NULL},
    [IMGD_OP_VIEW]               = {NULL, NULL, NULL},
    [IMGD_OP_CAST]               = {NULL, NULL, cpu_cast},
    [IMGD_OP_DEQUANTIZE]         = {NULL, NULL, cpu_dequantize},
    [IMGD_OP_CONCAT]             = {NULL, NULL, cpu_concat},
    [IMGD_OP_PAD]                = {NULL, NULL, cpu_pad},
    [IMGD_OP_UPSAMPLE_NEAREST]   = {NULL, NULL, cpu_upsample},
    [IMGD_OP_AVG_POOL2D]         = {NULL, NULL, cpu_avg_pool2d},
    [IMGD_OP_MATMUL]             = {cpu_matmul_prepare, cpu_matmul_release, cpu_matmul},
    [IMGD_OP_CONV2D]             = {cpu_conv2d_prepare, cpu_conv2d_release, cpu_conv2d},
    [IMGD_OP_GROUP_NORM]         = {NULL, NULL, cpu_group_norm},
    [IMGD_OP_LAYER_NORM]         = {NULL, NULL, cpu_layer_norm},
    [IMGD_OP_RMS_NORM]           = {NULL, NULL, cpu_rms_norm},
    [IMGD_OP_SOFTMAX]            = {NULL, NULL, cpu_softmax},
    [IMGD_OP_ATTENTION]          = {cpu_attention_prepare, NULL, cpu_attention},
    [IMGD_OP_GELU]               = {NULL, NULL, cpu_unary},
    [IMGD_OP_GELU_TANH]          = {NULL, NULL, cpu_unary},
    [IMGD_OP_QUICK_GELU]         = {NULL, NULL, cpu_unary},
    [IMGD_OP_SILU]               = {NULL, NULL, cpu_unary},
    [IMGD_OP_GEGLU]              = {NULL, NULL, cpu_geglu},
    [IMGD_OP_CLAMP]              = {NULL, NULL, cpu_unary},
    [IMGD_OP_SCALE]              = {NULL, NULL, cpu_unary},
    [IMGD_OP_ADD]                = {NULL, NULL, cpu_binary},
    [IMGD_OP_SUB]                = {NULL, NULL, cpu_binary},
    [IMGD_OP_MUL]                = {NULL, NULL, cpu_binary},
    [IMGD_OP_DIV]                = {NULL, NULL, cpu_binary},
    [IMGD_OP_TIMESTEP_EMBEDDING] = {NULL, NULL, cpu_timestep},
    [IMGD_OP_ROPE]               = {NULL, NULL, cpu_rope},
    [IMGD_OP_LINEAR_QUANT]       = {cpu_linear_quant_prepare, NULL, cpu_linear_quant},
};
_Static_assert(IMGD_ARRAY_LEN(k_cpu_kernels) == IMGD_OP_COUNT, "one cpu kernel row per op");

/* ---- helpers shared by the kernel files ------------------------------------------------- */

typedef struct par_adapter {
    imgd_pool_fn fn;
    void        *ctx;
} par_adapter;

static void par_task(void *p, size_t b, size_t e, uint32_t tid) {
    const par_adapter *a = p;
    IMGD_UNUSED(tid);
    a->fn(a->ctx, b, e);
}

/* Dynamic claims of about a quarter of a thread's share: a thread slowed by other load on
 * its core (a shared server) takes less, instead of everyone waiting for it. */
void cpu_parallel(cpu_backend *cb, size_t n, size_t cost_per_item, imgd_pool_fn fn, void *ctx) {
    if (n == 0) return;
    if (n < 2 || cb->n_threads < 2 || n * cost_per_item < 65536) {
        fn(ctx, 0, n);
        return;
    }
    par_adapter a     = {fn, ctx};
    size_t      grain = n / ((size_t)cb->n_threads * 4);
    imgd_pool_run_dynamic(cb->pool, n, grain ? grain : 1, par_task, &a);
}

imgd_status cpu_dnnl_fail(dnnl_status_t s, const char *what) {
    if (s == dnnl_out_of_memory) return imgd_fail(IMGD_E_NOMEM, "oneDNN: %s: out of memory", what);
    if (s == dnnl_unimplemented)
        return imgd_fail(IMGD_E_UNSUPPORTED, "oneDNN: %s: no implementation", what);
    return imgd_fail(IMGD_E_DEVICE, "oneDNN: %s failed (dnnl status %d)", what, (int)s);
}

bool imgd_cpu_has_bf16(void) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
}

/* ---- vtable ------------------------------------------------------------------------------- */

static const char *cpu_name(const imgd_backend *be) {
    IMGD_UNUSED(be);
    return "cpu";
}

static imgd_status cpu_alloc(imgd_backend *be, size_t n, void **out) {
    IMGD_UNUSED(be);
    return imgd_host_buffer_alloc("cpu", n, out);
}

static void cpu_buffer_free(imgd_backend *be, void *p) {
    IMGD_UNUSED(be);
    imgd_host_buffer_free(p);
}

static bool dequant_supported(imgd_dtype dt) {
    static const imgd_dtype ok[] = {
        IMGD_DTYPE_Q4_0, IMGD_DTYPE_Q4_1, IMGD_DTYPE_Q5_0, IMGD_DTYPE_Q5_1, IMGD_DTYPE_Q8_0,
        IMGD_DTYPE_Q2_K, IMGD_DTYPE_Q3_K, IMGD_DTYPE_Q4_K, IMGD_DTYPE_Q5_K, IMGD_DTYPE_Q6_K};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(ok); i++)
        if (dt == ok[i]) return true;
    return false;
}

static bool cpu_supports(const imgd_backend *be, const imgd_tensor *n) {
    IMGD_UNUSED(be);
    if ((unsigned)n->op >= IMGD_OP_COUNT || !k_cpu_kernels[n->op].run) return false;
    if (n->op == IMGD_OP_DEQUANTIZE) return dequant_supported(n->src[0]->dtype);
    if (n->op == IMGD_OP_LINEAR_QUANT)
        return dequant_supported(n->src[1]->dtype) && n->shape[n->n_dims - 1] <= INT32_MAX &&
               n->src[1]->shape[1] <= INT32_MAX &&
               imgd_tensor_numel(n) / n->shape[n->n_dims - 1] <= INT32_MAX;
    return true;
}

static void cpu_release(imgd_backend *be, imgd_graph *g) {
    cpu_backend *cb = be->ctx;
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        imgd_tensor *n = imgd_graph_exec_node(g, i);
        if (n->backend_data && k_cpu_kernels[n->op].release) k_cpu_kernels[n->op].release(cb, n);
        n->backend_data = NULL;
    }
}

static imgd_status cpu_prepare(imgd_backend *be, imgd_graph *g) {
    cpu_backend *cb = be->ctx;
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        imgd_tensor *n = imgd_graph_exec_node(g, i);
        if (!k_cpu_kernels[n->op].prepare) continue;
        imgd_status st = k_cpu_kernels[n->op].prepare(cb, n);
        if (st != IMGD_OK)
            return imgd_fail_prefix(st, "cpu: preparing node %zu (%s)", i, imgd_op_name(n->op));
    }
    return IMGD_OK;
}

/* oneDNN runs on OpenMP (Debian builds it that way), whose team size is a per-thread
 * setting of the calling thread. Resolved at run time so imgd does not link libgomp
 * itself (it is already loaded as oneDNN's dependency). */
typedef void (*omp_set_fn)(int);

static omp_set_fn omp_setter(void) {
    void      *sym = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    omp_set_fn fn  = NULL;
    if (sym) memcpy(&fn, &sym, sizeof fn); /* ISO C has no object-to-function cast */
    return fn;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static imgd_status cpu_run(imgd_backend *be, imgd_graph *g) {
    cpu_backend *cb = be->ctx;
    if (cb->omp_set) cb->omp_set((int)cb->n_threads); /* the thread that computes may vary */
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n = imgd_graph_exec_node(g, i);
        if (imgd_graph_cancel_requested(g))
            return imgd_fail(IMGD_E_CANCELLED, "compute cancelled before node %zu", i);
        double      t0 = cb->profile ? now_s() : 0;
        imgd_status st = k_cpu_kernels[n->op].run(cb, n);
        if (st != IMGD_OK) return st;
        if (cb->profile) {
            cb->prof_s[n->op] += now_s() - t0;
            cb->prof_n[n->op]++;
        }
    }
    return IMGD_OK;
}

/* IMGD_PROFILE: seconds per op kind over the backend's life, largest first, on stderr. */
static void print_profile(const cpu_backend *cb) {
    char title[64];
    (void)snprintf(title, sizeof title, "imgd profile (cpu, %u threads)", cb->n_threads);
    imgd_backend_profile_print(title, cb->prof_s, cb->prof_n);
}

static void cpu_free(imgd_backend *be) {
    cpu_backend *cb = be->ctx;
    if (cb->profile) print_profile(cb);
    if (cb->stream) dnnl_stream_destroy(cb->stream);
    if (cb->engine) dnnl_engine_destroy(cb->engine);
    if (cb->owns_pool) imgd_pool_free(cb->pool);
    imgd_free(cb);
}

static const struct imgd_backend_i k_cpu_iface = {
    .name        = cpu_name,
    .alloc       = cpu_alloc,
    .buffer_free = cpu_buffer_free,
    .supports_op = cpu_supports,
    .prepare     = cpu_prepare,
    .release     = cpu_release,
    .run         = cpu_run,
    .read        = NULL,
    .free        = cpu_free,
};

/* ---- construction ------------------------------------------------------------------------- */

static imgd_status resolve_options(cpu_backend *cb, const imgd_backend_params *p) {
    if ((unsigned)p->math >= IMGD_CPU_MATH_COUNT || (unsigned)p->gemm >= IMGD_CPU_GEMM_COUNT)
        return imgd_fail(IMGD_E_INVALID_ARG, "cpu: math %d / gemm %d out of range", (int)p->math,
                         (int)p->gemm);
    if (p->math == IMGD_CPU_MATH_BF16 && !imgd_cpu_has_bf16())
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "cpu: bf16 math needs AVX-512-BF16, which this CPU lacks; use f32");
    /* AUTO is f32: oneDNN 2.6's bf16 kernels measured slower than f32 on the AVX-512-BF16
     * machines we bench on (bench engine reports both). */
    cb->math = p->math == IMGD_CPU_MATH_BF16 ? IMGD_CPU_MATH_BF16 : IMGD_CPU_MATH_F32;
    cb->gemm = p->gemm == IMGD_CPU_GEMM_OPENBLAS ? IMGD_CPU_GEMM_OPENBLAS : IMGD_CPU_GEMM_DNNL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    cb->avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 getenv("IMGD_CPU_NO_AVX512") == NULL;
#endif
    return IMGD_OK;
}

imgd_status imgd_cpu_backend_new(const imgd_backend_params *params, imgd_backend **out) {
    imgd_backend_params p = params ? *params : imgd_backend_params_default();
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "cpu backend: out is NULL");
    cpu_backend *cb = imgd_calloc(1, sizeof *cb);
    if (!cb) return imgd_fail(IMGD_E_NOMEM, "cpu backend: out of memory");
    cb->base.iface = &k_cpu_iface;
    cb->base.ctx   = cb;
    imgd_status st = resolve_options(cb, &p);
    if (st == IMGD_OK && p.pool) {
        cb->pool = p.pool;
    } else if (st == IMGD_OK) {
        st            = imgd_pool_new(p.n_threads, &cb->pool);
        cb->owns_pool = st == IMGD_OK;
    }
    if (st == IMGD_OK) {
        cb->n_threads   = imgd_pool_size(cb->pool);
        cb->omp_set     = omp_setter();
        cb->profile     = getenv("IMGD_PROFILE") != NULL;
        dnnl_status_t s = dnnl_engine_create(&cb->engine, dnnl_cpu, 0);
        if (s == dnnl_success)
            s = dnnl_stream_create(&cb->stream, cb->engine, dnnl_stream_default_flags);
        if (s != dnnl_success) st = cpu_dnnl_fail(s, "creating the CPU engine");
    }
    if (st != IMGD_OK) {
        cpu_free(&cb->base);
        return st;
    }
    *out = &cb->base;
    return IMGD_OK;
}
