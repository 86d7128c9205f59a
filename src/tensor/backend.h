/* Backends: the vtable every executor implements (STYLE M3) and the registry that creates
 * one by name. Models use only imgd_backend_new/imgd_backend_free and never include a
 * backend's own header (tensor/cpu/cpu.h, later tensor/cuda/cuda.h).
 *
 * Life of a graph on a backend:
 *   imgd_graph_plan   -> supports_op for every executed node, then prepare (per-node state
 *                        in node->backend_data, scratch sizes in node->scratch_bytes), then
 *                        the planner assigns offsets;
 *   imgd_graph_alloc  -> alloc (one buffer);
 *   imgd_graph_compute-> run (data and scratch pointers already resolved);
 *   imgd_graph_free   -> release, then buffer_free.
 *
 * Device backends (memory the host cannot address, e.g. "cuda") keep the graph API unchanged
 * with these rules, all inside the backend:
 *   - alloc returns device memory; activations, views of them and scratch hold device
 *     addresses during run;
 *   - leaves (weights and inputs) keep their host address in `data`; prepare makes a device
 *     copy of every leaf an executed node reads and keeps it in the leaf's backend_data
 *     (weights are uploaded there, once per plan; release frees them);
 *   - run first copies each input from its bound host memory to its device copy, then runs
 *     the nodes, translating a leaf view's address by its offset from the leaf's `data`;
 *   - read copies device memory back; imgd_graph_read_f32 uses it for activations. */
#ifndef IMGD_TENSOR_BACKEND_H
#define IMGD_TENSOR_BACKEND_H

#include "base/pool.h"
#include "tensor/tensor.h"

/* How the CPU backend computes matmul and conv2d. */
typedef enum imgd_cpu_math {
    IMGD_CPU_MATH_AUTO = 0, /* f32; bf16 only where it measured faster on this CPU */
    IMGD_CPU_MATH_F32  = 1, /* f32 inputs, f32 accumulation */
    IMGD_CPU_MATH_BF16 = 2, /* bf16 inputs, f32 accumulation; needs AVX-512-BF16 */
    IMGD_CPU_MATH_COUNT
} imgd_cpu_math;

/* Which library runs matmul on the CPU. */
typedef enum imgd_cpu_gemm {
    IMGD_CPU_GEMM_AUTO     = 0, /* oneDNN (measured faster here; see bench engine) */
    IMGD_CPU_GEMM_DNNL     = 1,
    IMGD_CPU_GEMM_OPENBLAS = 2,
    IMGD_CPU_GEMM_COUNT
} imgd_cpu_gemm;

/* How a GPU backend (cuda) computes matmul and conv2d. The other ops always run in f32. */
typedef enum imgd_gpu_math {
    IMGD_GPU_MATH_F32  = 0, /* f32 inputs, f32 accumulation, no TF32 (the conformance mode) */
    IMGD_GPU_MATH_F16  = 1, /* operands rounded to fp16, f32 accumulation, f32 results */
    IMGD_GPU_MATH_BF16 = 2, /* operands rounded to bf16 (no overflow where fp16 would) */
    IMGD_GPU_MATH_COUNT
} imgd_gpu_math;

typedef struct imgd_backend_params {
    uint32_t   n_threads;   /* compute threads, 0 = online CPUs; ignored when pool is set */
    imgd_pool *pool;        /* borrowed pool to run on (must outlive the backend), or NULL
                               to let the backend own one of n_threads */
    imgd_cpu_math math;     /* cpu only */
    imgd_cpu_gemm gemm;     /* cpu only */
    imgd_gpu_math gpu_math; /* cuda only */
} imgd_backend_params;

imgd_backend_params imgd_backend_params_default(void);

/* The interface. A backend is {iface, ctx}; every member receives the backend. */
struct imgd_backend_i {
    /* Short static name ("cpu", "ref"). Required. */
    const char *(*name)(const imgd_backend *be);

    /* Allocates n bytes (n > 0) of memory the backend's kernels can address, aligned to
     * IMGD_TENSOR_ALIGN, into *out. Required. Returns IMGD_OK or IMGD_E_NOMEM. */
    imgd_status (*alloc)(imgd_backend *be, size_t n, void **out);

    /* Releases memory from alloc; NULL is a no-op. Required. */
    void (*buffer_free)(imgd_backend *be, void *p);

    /* Whether node (op not NONE/VIEW) can run here with its dtypes and shapes. May be
     * NULL: every op is supported. */
    bool (*supports_op)(const imgd_backend *be, const imgd_tensor *node);

    /* Called by imgd_graph_plan with the execution order fixed, before memory planning.
     * May create per-node state in node->backend_data and set node->scratch_bytes and
     * node->plan_early (the node before writes its storage: a fused epilogue); a device
     * backend also puts its copies of leaves in leaf->backend_data (see above).
     * Weights' data is readable. May be NULL: no state and no scratch. On failure it must
     * leave nothing behind (or leave what release frees). */
    imgd_status (*prepare)(imgd_backend *be, imgd_graph *g);

    /* Frees what prepare created (nodes' and leaves' backend_data) and clears it. May be
     * NULL when prepare keeps no state. Called before re-planning and by imgd_graph_free. */
    void (*release)(imgd_backend *be, imgd_graph *g);

    /* Runs the executed nodes in order (imgd_graph_exec_node). Every tensor's data and
     * every node's scratch pointer is resolved. Must not allocate. Polls
     * imgd_graph_cancel_requested between nodes (IMGD_E_CANCELLED). Required. */
    imgd_status (*run)(imgd_backend *be, imgd_graph *g);

    /* Copies n bytes of backend memory at src (inside a buffer from alloc) to host memory
     * dst, after the work queued by run has finished. May be NULL: backend memory is host
     * memory and is read directly (cpu, ref). A device backend (CUDA) implements it;
     * imgd_graph_read_f32 then reads activations (any layout and float dtype) through it. */
    imgd_status (*read)(imgd_backend *be, const void *src, void *dst, size_t n);

    /* Destroys the backend. Required. */
    void (*free)(imgd_backend *be);
};

struct imgd_backend {
    const struct imgd_backend_i *iface;
    void                        *ctx;
};

/* Creates a registered backend by name ("cpu", "ref", and "cuda" in builds with the CUDA
 * toolkit). params may be NULL (defaults).
 * out: written only on success; free with imgd_backend_free.
 * Returns IMGD_OK, IMGD_E_INVALID_ARG (unknown name: the message lists the names),
 * IMGD_E_UNSUPPORTED (e.g. bf16 math without AVX-512-BF16; cuda without a GPU),
 * IMGD_E_NOMEM, IMGD_E_DEVICE. */
imgd_status imgd_backend_new(const char *name, const imgd_backend_params *params,
                             imgd_backend **out);

/* Destroys a backend; NULL is a no-op. No graph may still use it. */
void imgd_backend_free(imgd_backend *be);

const char *imgd_backend_name(const imgd_backend *be);

/* Whether be runs linear_quant (imgd_op_linear_quant: the weight stays in its blocks) on
 * weights of dtype dt: asks the backend's supports_op about a one-node probe graph. cpu,
 * ref and cuda: every quantized type they dequantize (cuda: Q4_0 … Q8_1 and Q2_K … Q6_K). False for
 * a non-quantized dt, a NULL backend or a failed allocation. Graph builders set
 * imgd_graph_params.fuse_quant_linear from it. */
bool imgd_backend_supports_linear_quant(const imgd_backend *be, imgd_dtype dt);

/* The registry, for tools and tests: count, and the i-th name and one-line doc. */
size_t      imgd_backend_registry_count(void);
const char *imgd_backend_registry_name(size_t i);
const char *imgd_backend_registry_doc(size_t i);

/* Host memory aligned to IMGD_TENSOR_ALIGN for backends whose buffers live in host memory
 * (cpu, ref); the original pointer sits just below. `who` names the backend in errors. */
imgd_status imgd_host_buffer_alloc(const char *who, size_t n, void **out);
void        imgd_host_buffer_free(void *p);

/* IMGD_PROFILE: prints `title`, then seconds and runs per op kind (arrays of IMGD_OP_COUNT),
 * largest first, on stderr; nothing when no time was recorded. */
void imgd_backend_profile_print(const char *title, const double *seconds, const uint64_t *runs);

#endif
