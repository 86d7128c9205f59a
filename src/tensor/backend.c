/* Backend registry (STYLE M5): one row per backend; names, docs and creation come from it. */
#include "tensor/backend.h"

#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "formats/dtype.h"
#include "tensor/cpu/cpu.h"
#include "tensor/ops.h"
#include "tensor/ref.h"
#ifdef IMGD_HAVE_CUDA
#    include "tensor/cuda/cuda.h"
#endif

typedef struct backend_row {
    const char *name;
    imgd_status (*create)(const imgd_backend_params *params, imgd_backend **out);
    const char *doc;
} backend_row;

static const backend_row k_backends[] = {
    {"cpu", imgd_cpu_backend_new,
     "oneDNN/OpenBLAS matmul and conv, vectorised threaded kernels for the rest"},
    {"ref", imgd_ref_backend_new, "plain single-threaded reference kernels (the test oracle)"},
#ifdef IMGD_HAVE_CUDA
    {"cuda", imgd_cuda_backend_new,
     "NVIDIA GPU: cuBLAS matmul/conv, CUDA kernels for the rest (built with the CUDA toolkit)"},
#endif
};

imgd_backend_params imgd_backend_params_default(void) {
    imgd_backend_params p = {0, NULL, IMGD_CPU_MATH_AUTO, IMGD_CPU_GEMM_AUTO, IMGD_GPU_MATH_F32};
    return p;
}

imgd_status imgd_backend_new(const char *name, const imgd_backend_params *params,
                             imgd_backend **out) {
    if (!name || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_backend_new: name or out NULL");
    imgd_backend_params p = params ? *params : imgd_backend_params_default();
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_backends); i++)
        if (strcmp(name, k_backends[i].name) == 0) return k_backends[i].create(&p, out);
    char known[128] = "";
    for (size_t i = 0, k = 0; i < IMGD_ARRAY_LEN(k_backends) && k < sizeof known; i++) {
        int w = snprintf(known + k, sizeof known - k, "%s%s", i ? ", " : "", k_backends[i].name);
        k += w > 0 ? (size_t)w : 0;
    }
    return imgd_fail(IMGD_E_INVALID_ARG, "unknown backend '%s' (this build has: %s)", name, known);
}

void imgd_backend_free(imgd_backend *be) {
    if (be) be->iface->free(be);
}

const char *imgd_backend_name(const imgd_backend *be) {
    return be ? be->iface->name(be) : "none";
}

bool imgd_backend_supports_linear_quant(const imgd_backend *be, imgd_dtype dt) {
    /* never read: the probe graph is asked about, not planned or run */
    static const unsigned char k_block[1024];
    const imgd_dtype_traits *tr = (unsigned)dt < IMGD_DTYPE_COUNT ? imgd_dtype_traits_of(dt) : NULL;
    if (!be || !tr || !tr->is_quant || tr->block_bytes > sizeof k_block) return false;
    if (!be->iface->supports_op) return true;
    imgd_graph *g = NULL;
    if (imgd_graph_new(NULL, &g) != IMGD_OK) return false;
    int64_t      k  = (int64_t)tr->block_elems;
    imgd_tensor *x  = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 2, (int64_t[]){1, k});
    imgd_tensor *w  = imgd_graph_weight(g, "w", dt, 2, (int64_t[]){1, k}, k_block);
    imgd_tensor *y  = x && w ? imgd_op_linear_quant(g, x, w, NULL) : NULL;
    bool         ok = y && y->op == IMGD_OP_LINEAR_QUANT && be->iface->supports_op(be, y);
    imgd_graph_free(g);
    return ok;
}

size_t imgd_backend_registry_count(void) {
    return IMGD_ARRAY_LEN(k_backends);
}

const char *imgd_backend_registry_name(size_t i) {
    return i < IMGD_ARRAY_LEN(k_backends) ? k_backends[i].name : NULL;
}

const char *imgd_backend_registry_doc(size_t i) {
    return i < IMGD_ARRAY_LEN(k_backends) ? k_backends[i].doc : NULL;
}

size_t imgd_backend_count(void) {
    return IMGD_ARRAY_LEN(k_backends);
}

const char *imgd_backend_name_at(size_t i) {
    return imgd_backend_registry_name(i);
}

void imgd_backend_profile_print(const char *title, const double *seconds, const uint64_t *runs) {
    double total = 0;
    for (int i = 0; i < IMGD_OP_COUNT; i++) total += seconds[i];
    if (total <= 0) return;
    bool done[IMGD_OP_COUNT] = {false};
    fprintf(stderr, "%s: %.3f s in kernels\n", title, total);
    for (;;) {
        int best = -1;
        for (int i = 0; i < IMGD_OP_COUNT; i++)
            if (!done[i] && runs[i] && (best < 0 || seconds[i] > seconds[best])) best = i;
        if (best < 0) break;
        done[best] = true;
        fprintf(stderr, "  %-16s %9.3f s %5.1f%%  %8llu runs\n", imgd_op_name((imgd_op)best),
                seconds[best], 100.0 * seconds[best] / total, (unsigned long long)runs[best]);
    }
}
