/* Tensor engine core: tensor descriptors, the op enum, graphs, planning and replay.
 *
 * A network's forward pass is written once as builder calls (tensor/ops.h) that append
 * nodes to an imgd_graph. Descriptors live in the graph's arena and hold no data. A graph is
 * planned once for a backend (liveness-based reuse of one activation buffer whose exact
 * size is reported before anything runs), allocated once, and then replayed with new
 * inputs; a replay never allocates.
 *
 *     imgd_graph *g = NULL;
 *     imgd_graph_new(NULL, &g);
 *     imgd_tensor *x = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 2, (int64_t[]){4, 320});
 *     imgd_tensor *w = imgd_graph_weight(g, "w", IMGD_DTYPE_F16, 2, (int64_t[]){640, 320}, wp);
 *     imgd_tensor *y = imgd_op_silu(g, imgd_op_linear(g, x, w, NULL));
 *     imgd_graph_output(g, y);
 *     imgd_plan_info info;
 *     if (imgd_graph_plan(g, be, &info) != IMGD_OK) ...   // info.activation_bytes known here
 *     imgd_graph_alloc(g, NULL, 0);
 *     for (each step) { imgd_tensor_bind(x, latents); imgd_graph_compute(g); use y->data; }
 *     imgd_graph_free(g);
 *
 * Conventions
 *   - Shapes are PyTorch order: shape[0] is outermost, shape[n_dims-1] innermost.
 *   - Strides and view offsets count elements, not bytes. Quantized tensors are always
 *     contiguous (they are weight sources for dequantization only).
 *   - Ops compute in f32. Builders insert casts/dequantization for f16/bf16/quantized
 *     inputs, and contiguous copies where a kernel needs them, so kernels see the layouts
 *     documented per op in ops.h.
 *   - Builder errors are sticky on the graph: a failing builder records the first error
 *     (imgd_graph_status) and returns NULL; every builder given a NULL input returns NULL,
 *     so a forward pass is written without per-call checks and checked once at the end
 *     (imgd_graph_plan also returns the sticky error).
 *
 * Thread-safety: a graph and its tensors belong to one thread at a time. */
#ifndef IMGD_TENSOR_TENSOR_H
#define IMGD_TENSOR_TENSOR_H

#include <stdatomic.h>
#include <stdbool.h>

#include "base/base.h"

#define IMGD_TENSOR_SRC_MAX 4  /* inputs per node */
#define IMGD_TENSOR_IPARAMS 16 /* integer op parameters per node */
#define IMGD_TENSOR_FPARAMS 4  /* float op parameters per node */
#define IMGD_TENSOR_ALIGN   64 /* bytes; every planned buffer starts on this boundary */

/* ---- op set -------------------------------------------------------------------------- */

/* Every op of the engine. Append-only; the name table in graph.c is static-asserted
 * against IMGD_OP_COUNT. Adding an op: STYLE M4. */
typedef enum imgd_op {
    IMGD_OP_NONE = 0,         /* a leaf: input or weight */
    IMGD_OP_VIEW,             /* reshape/permute/narrow/view: shares its source's memory */
    IMGD_OP_CAST,             /* strided copy into a contiguous tensor, f32/f16/bf16 */
    IMGD_OP_DEQUANTIZE,       /* quantized weight -> f32 */
    IMGD_OP_CONCAT,           /* along any axis */
    IMGD_OP_PAD,              /* constant padding of every dim */
    IMGD_OP_UPSAMPLE_NEAREST, /* x2 on the last two dims */
    IMGD_OP_AVG_POOL2D,       /* kernel/stride/padding on the last two dims */
    IMGD_OP_MATMUL,           /* batched, broadcast batch dims, optional bias */
    IMGD_OP_CONV2D,           /* NCHW, OIHW weights, optional bias */
    IMGD_OP_GROUP_NORM,       /* optional affine, optional fused SiLU */
    IMGD_OP_LAYER_NORM,       /* over the last dim */
    IMGD_OP_RMS_NORM,         /* over the last dim */
    IMGD_OP_SOFTMAX,          /* over the last dim, with input scale */
    IMGD_OP_ATTENTION,        /* fused scaled-dot-product attention */
    IMGD_OP_GELU,             /* erf form */
    IMGD_OP_GELU_TANH,        /* tanh approximation */
    IMGD_OP_QUICK_GELU,       /* x * sigmoid(1.702 x) */
    IMGD_OP_SILU,             /* x * sigmoid(x) */
    IMGD_OP_GEGLU,            /* a * gelu(b) for [a, b] = split(x, 2, last) */
    IMGD_OP_CLAMP,            /* min(max(x, lo), hi) */
    IMGD_OP_SCALE,            /* x * s + b */
    IMGD_OP_ADD,              /* broadcasting binary ops */
    IMGD_OP_SUB,
    IMGD_OP_MUL,
    IMGD_OP_DIV,
    IMGD_OP_TIMESTEP_EMBEDDING, /* sinusoidal, diffusers get_timestep_embedding */
    IMGD_OP_ROPE,               /* rotary position embedding */
    IMGD_OP_LINEAR_QUANT,       /* x @ w^T + bias, w quantized, dequantized block-wise in-kernel */
    IMGD_OP_COUNT
} imgd_op;

/* Static lower-case name ("conv2d", "group_norm"); "unknown" out of range. */
const char *imgd_op_name(imgd_op op);

/* ---- tensors --------------------------------------------------------------------------- */

typedef enum imgd_tensor_kind {
    IMGD_TENSOR_ACTIVATION = 0, /* produced by a node; memory from the planned buffer */
    IMGD_TENSOR_INPUT      = 1, /* caller memory bound with imgd_tensor_bind before compute */
    IMGD_TENSOR_WEIGHT     = 2, /* caller memory given at creation; constant */
} imgd_tensor_kind;

typedef struct imgd_tensor imgd_tensor;
typedef struct imgd_graph  imgd_graph;

/* A tensor descriptor, which is also a graph node when op is not NONE. Lives in the graph's
 * arena; valid until imgd_graph_free. Backends read every field; builders write them. */
struct imgd_tensor {
    imgd_dtype       dtype;
    int32_t          n_dims;                /* 0..IMGD_MAX_DIMS; 0 is a scalar */
    int64_t          shape[IMGD_MAX_DIMS];  /* outermost first */
    int64_t          stride[IMGD_MAX_DIMS]; /* elements */
    int64_t          offset;                /* elements from the start of storage's memory */
    imgd_tensor_kind kind;
    imgd_op          op;
    imgd_tensor     *src[IMGD_TENSOR_SRC_MAX]; /* inputs; unused slots NULL */
    imgd_tensor     *storage;                  /* owner of the memory: itself unless a view */
    int64_t          ip[IMGD_TENSOR_IPARAMS];  /* op parameters, documented per op in ops.h */
    float            fp[IMGD_TENSOR_FPARAMS];
    const char      *name; /* arena copy or NULL */

    /* Memory. For storage tensors `data` is the start of the memory; for views and
     * every tensor at run time it is the address of the first element (storage data +
     * offset). Valid during and after imgd_graph_compute until the next compute. */
    void *data;

    /* Planner and backend fields. */
    int32_t id;            /* creation index in the graph */
    int32_t exec;          /* position in the execution order; -1 when not executed */
    bool    is_output;     /* marked with imgd_graph_output */
    size_t  nbytes;        /* bytes of this tensor's own storage (storage tensors) */
    size_t  plan_offset;   /* activation storage: byte offset in the planned buffer */
    size_t  scratch_bytes; /* executed nodes: scratch the backend asked for in prepare */
    bool    plan_early;    /* executed nodes: prepare says the node before this one writes its
                              storage (a fused epilogue), so it is reserved from there */
    size_t scratch_offset;
    void  *scratch;      /* executed nodes: scratch memory, valid while the node runs */
    void  *backend_data; /* executed nodes: state owned by the backend's prepare; leaves:
                            a device backend's copy (tensor/backend.h) */
};

/* Elements (product of the shape; 1 for a scalar). */
int64_t imgd_tensor_numel(const imgd_tensor *t);
/* Bytes of numel elements of t's dtype (block-aware for quantized types). */
size_t imgd_tensor_nbytes(const imgd_tensor *t);
/* Row-major contiguous with offset 0 relative to its own first element. */
bool imgd_tensor_is_contiguous(const imgd_tensor *t);
/* Bytes per element of a non-quantized dtype (0 for quantized types). */
size_t imgd_dtype_size(imgd_dtype dt);
/* Same shape (dims and sizes). */
bool imgd_tensor_same_shape(const imgd_tensor *a, const imgd_tensor *b);

/* Binds caller memory (contiguous, t's dtype and shape) to an input tensor; borrowed until
 * the next bind or imgd_graph_free. IMGD_E_INVALID_ARG when t is not an input. */
imgd_status imgd_tensor_bind(imgd_tensor *t, void *data);

/* ---- graphs ---------------------------------------------------------------------------- */

typedef struct imgd_graph_params {
    size_t   arena_bytes_max; /* cap on descriptor memory, 0 = 256 MiB */
    uint32_t nodes_max;       /* cap on tensors in the graph, 0 = 1,000,000 */
    /* imgd_op_linear on a quantized weight builds linear_quant (the weight stays in its
     * blocks; backends cpu and ref) instead of dequantize + matmul (every backend; the
     * f32 copy of the weight is an activation). Off by default; the FLUX pipeline sets it
     * from imgd_backend_supports_linear_quant (tensor/backend.h). */
    bool fuse_quant_linear;
} imgd_graph_params;

imgd_graph_params imgd_graph_params_default(void);

/* Creates an empty graph. params may be NULL. out: written only on success, free with
 * imgd_graph_free. Returns IMGD_OK or IMGD_E_NOMEM. */
imgd_status imgd_graph_new(const imgd_graph_params *params, imgd_graph **out);

/* Releases the graph, its descriptors, its backend state and its activation buffer (when
 * the graph allocated it). NULL is a no-op. */
void imgd_graph_free(imgd_graph *g);

/* The sticky builder error: IMGD_OK while every builder succeeded. The message is also
 * kept on the graph (imgd_graph_error) for use from another thread. */
imgd_status imgd_graph_status(const imgd_graph *g);
const char *imgd_graph_error(const imgd_graph *g);

/* Records a builder error on g (first error wins) and sets imgd_last_error. Returns status.
 * For builders (ops.c) and model code that validates its own parameters. */
imgd_status imgd_graph_fail(imgd_graph *g, imgd_status status, const char *fmt, ...)
    IMGD_PRINTF(3, 4);

/* A runtime input of shape[n_dims] (copied). name may be NULL (copied). Bind its data with
 * imgd_tensor_bind before each compute. NULL with a sticky error on bad arguments. */
imgd_tensor *imgd_graph_input(imgd_graph *g, const char *name, imgd_dtype dtype, int32_t n_dims,
                              const int64_t *shape);

/* A constant weight: data is contiguous, in dtype (any float or quantized type), borrowed
 * and must stay valid and unchanged until imgd_graph_free (or until the next
 * imgd_graph_plan after changing it). NULL with a sticky error on bad arguments. */
imgd_tensor *imgd_graph_weight(imgd_graph *g, const char *name, imgd_dtype dtype, int32_t n_dims,
                               const int64_t *shape, const void *data);

/* Marks t as an output: it stays valid after compute and its memory is never reused.
 * A NULL t is ignored (its builder already recorded the error). */
void imgd_graph_output(imgd_graph *g, imgd_tensor *t);

/* Number of tensors created so far, and the i-th (for tests and tools). */
size_t       imgd_graph_tensor_count(const imgd_graph *g);
imgd_tensor *imgd_graph_tensor(const imgd_graph *g, size_t i);

/* ---- planning and replay --------------------------------------------------------------- */

typedef struct imgd_backend imgd_backend;

typedef struct imgd_plan_info {
    size_t   activation_bytes; /* exact size of the one buffer imgd_graph_alloc needs */
    size_t   naive_bytes;      /* what the same buffers would take without any reuse */
    uint32_t n_nodes;          /* nodes that execute on each compute */
    uint32_t n_buffers;        /* planned buffers: activations and per-node scratch */
} imgd_plan_info;

/* Plans g for backend be (borrowed; must outlive the graph's use of it): orders the nodes
 * that contribute to outputs, lets the backend prepare them (e.g. oneDNN primitives, scratch
 * sizes), and assigns every activation and scratch buffer an offset in one buffer so that
 * buffers whose lifetimes overlap never share bytes. May be called again (e.g. after weight
 * data changed); the previous plan and buffer are released.
 * info: may be NULL; receives the sizes on success.
 * Returns IMGD_OK; the sticky builder error; IMGD_E_INVALID_ARG (no outputs);
 * IMGD_E_UNSUPPORTED (the backend cannot run a node: the message names the op and shapes);
 * IMGD_E_NOMEM; IMGD_E_DEVICE (the backend failed to prepare). On failure g is unplanned. */
imgd_status imgd_graph_plan(imgd_graph *g, imgd_backend *be, imgd_plan_info *info);

/* Gives the planned graph its activation buffer. buffer NULL: the graph allocates
 * info.activation_bytes from the backend and owns it. Otherwise buffer (backend memory of
 * at least size bytes, aligned to IMGD_TENSOR_ALIGN) is borrowed until imgd_graph_free or
 * the next plan, e.g. to share one buffer between graphs that never run at the same time.
 * Returns IMGD_OK, IMGD_E_INVALID_ARG (not planned, size too small, misaligned),
 * IMGD_E_NOMEM. */
imgd_status imgd_graph_alloc(imgd_graph *g, void *buffer, size_t size);

/* Runs the planned, allocated graph with the inputs currently bound. Never allocates.
 * Returns IMGD_OK, IMGD_E_INVALID_ARG (not planned/allocated, an input is unbound),
 * or the backend's error (IMGD_E_DEVICE). Outputs are valid until the next compute. */
imgd_status imgd_graph_compute(imgd_graph *g);

/* Cancellation (STYLE T4): while flag is non-NULL and *flag is non-zero, compute stops
 * between nodes and returns IMGD_E_CANCELLED (outputs are then undefined). flag is
 * borrowed; it may be set from any thread. NULL disables. */
void imgd_graph_set_cancel(imgd_graph *g, const atomic_int *flag);

/* For backends: whether compute should stop before the next node. */
bool imgd_graph_cancel_requested(const imgd_graph *g);

/* Copies t (any layout; f32/f16/bf16) as n contiguous f32 values into dst after compute.
 * IMGD_E_INVALID_ARG when n differs from numel or the graph has not computed. */
imgd_status imgd_graph_read_f32(imgd_graph *g, const imgd_tensor *t, float *dst, size_t n);

/* Execution order after imgd_graph_plan (for backends). */
size_t       imgd_graph_exec_count(const imgd_graph *g);
imgd_tensor *imgd_graph_exec_node(const imgd_graph *g, size_t i);

#endif
