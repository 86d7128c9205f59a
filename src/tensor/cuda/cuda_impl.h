/* Internals shared by the CUDA backend's host files (backend.c, dispatch.c, matmul.c): the
 * backend object, status mapping for CUDA and cuBLAS calls, and device addresses.
 * Host code is C; only the kernels (*.cu, declared in kernels.h) are CUDA C++. */
#ifndef IMGD_TENSOR_CUDA_CUDA_IMPL_H
#define IMGD_TENSOR_CUDA_CUDA_IMPL_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdbool.h>
#ifdef IMGD_HAVE_CUDNN
#    include <cudnn.h>
#endif

#include "cuda.h"
#include "kernels.h"
#include "tensor/backend.h"

/* How attention runs (IMGD_CUDA_ATTN). */
typedef enum cuda_attn {
    CUDA_ATTN_FLASH = 0, /* the f32 online-softmax kernel (attention.cu) */
    CUDA_ATTN_GEMM  = 1, /* cuBLAS Q K^T, a masked softmax kernel, P V (attention_gemm.c) */
    CUDA_ATTN_WMMA  = 2, /* flash attention on tensor cores (attention_wmma.cu; f16/bf16
                            math, head dims up to CUK_ATTN_WMMA_D_MAX, else gemm) */
    CUDA_ATTN_MMA = 3,   /* the same FA2-style on mma.sync (attention_mma.cu; compute
                            capability 8.0 and later) */
    CUDA_ATTN_CUDNN = 4, /* cuDNN's fused SDPA operation where it takes the node
                            (attention_cudnn.c), else mma */
} cuda_attn;

/* Which cuDNN convolutions take NHWC tensors (IMGD_CUDA_CONV_NHWC=0|auto|tune|guess|1). */
typedef enum cuda_nhwc {
    CUDA_NHWC_OFF  = 0,
    CUDA_NHWC_AUTO = 1, /* the faster layout, timed at plan time for convolutions of at least
                           CUDA_CONV_TUNE_FLOP, guessed (conv2d.c nhwc_wins) for the others */
    CUDA_NHWC_ON    = 2,
    CUDA_NHWC_TUNE  = 3, /* every convolution timed */
    CUDA_NHWC_GUESS = 4, /* none timed: nhwc_wins */
} cuda_nhwc;

/* The plan-time tuners' choices (tune.c): items of item_size bytes, each starting with the key
 * it was timed for (compared with memcmp: zero-filled before it is set). */
typedef struct cuda_tune_cache {
    unsigned char *items;
    size_t         n, cap, item_size;
} cuda_tune_cache;

/* Runs of a candidate timed after one warm-up run (tune.c cuda_tune_time). */
#define CUDA_TUNE_REPS 3
/* A tuner's buffers: at most CUDA_TUNE_BYTES_MAX, leaving CUDA_TUNE_SPARE free (else the node
 * is not timed; cuda_tune_room). */
#define CUDA_TUNE_BYTES_MAX ((size_t)1 << 30)
#define CUDA_TUNE_SPARE     ((size_t)256 << 20)

/* The tuners, for the time they take (cuda_backend.tune_s, imgd_cuda_tune_costs). */
enum {
    CUDA_TUNER_ATTN,
    CUDA_TUNER_CONV,
    CUDA_TUNER_GEMM,
    CUDA_TUNER_N
};

/* How each GEMM's kernel is chosen (IMGD_CUDA_GEMM=auto|tune|heuristic; gemm_lt.c). */
typedef enum cuda_gemm_sel {
    CUDA_GEMM_HEURISTIC = 0, /* cuBLASLt's first heuristic algorithm where the epilogue has
                                something, cublasGemmEx for a plain GEMM; f32 math always */
    CUDA_GEMM_AUTO = 1,      /* GEMMs of at least CUDA_GEMM_TUNE_FLOP timed, the others as
                                heuristic */
    CUDA_GEMM_TUNE = 2,      /* every GEMM timed */
} cuda_gemm_sel;

/* Whether linear_quant weights are expanded once at plan time (IMGD_CUDA_LQ_EXPAND=0|auto|1). */
typedef enum cuda_lqx {
    CUDA_LQX_OFF  = 0,
    CUDA_LQX_AUTO = 1, /* where the plan's expanded weights fit (quant.c) */
    CUDA_LQX_ON   = 2,
} cuda_lqx;

/* Device memory auto leaves free after the expanded weights: the activations, cuBLAS's and
 * cuDNN's workspaces and other plans (quant.c). */
#define CUDA_LQ_EXPAND_SPARE ((size_t)6 << 30)

/* A captured CUDA graph of one planned imgd graph (exec.c). */
typedef struct cuda_replay {
    const imgd_graph *g;            /* NULL: free slot */
    uint64_t          sig;          /* plan signature the capture was made for */
    cudaGraphExec_t   exec;         /* NULL until captured */
    bool              uncapturable; /* capture failed once for this plan: run eagerly */
    bool              eager_done;   /* this signature's first compute ran node by node, timing
                                       its GEMMs (cuda_gemm_tuned), before any capture */
    uint64_t used;                  /* cuda_backend.clock at the last run (eviction) */
} cuda_replay;

#define CUDA_REPLAY_MAX 16

/* A weight's device copy, shared by every plan whose leaf has the same host bytes (address,
 * size and a sampled fingerprint), e.g. the tile graphs of a tiled VAE decode. */
typedef struct cuda_weight {
    const void *host;
    size_t      nbytes;
    uint64_t    fp;
    void       *dev;
    uint32_t    refs; /* plans holding it; freed at 0 */
} cuda_weight;

/* The cuBLAS / cuBLASLt workspace (what cuBLAS asks for on Hopper). */
#define CUDA_BLAS_WS ((size_t)32 << 20)

typedef struct cuda_backend {
    imgd_backend     base;
    int              device;
    cudaStream_t     stream; /* every kernel, copy and cuBLAS call runs on it */
    cublasHandle_t   blas;
    cublasLtHandle_t lt;        /* cuBLASLt: GEMMs with their bias in the epilogue (use_lt) */
    bool             sync_each; /* IMGD_CUDA_SYNC=1: synchronise and check after every node */
    imgd_gpu_math    math;      /* operand type of matmul/conv2d GEMMs */
    /* Paths, each selectable off by the environment (read once, at creation): */
    bool direct_weights;    /* IMGD_CUDA_DIRECT_WEIGHTS (default 1): in f16/bf16 math,
                               GEMMs read constant weights in the math type, converted once
                               at plan time (or used as uploaded when the file has that
                               type), and casts nobody else reads are skipped */
    bool use_cudnn;         /* IMGD_CUDA_CUDNN (default 1 in builds with cuDNN): conv2d
                               through cudnnConvolutionForward instead of im2col + GEMM */
    bool cudnn_find;        /* IMGD_CUDA_CUDNN_FIND=1: each conv2d's algorithm timed on the
                               device at plan time instead of cuDNN's heuristic choice */
    int32_t conv_graph;     /* IMGD_CUDA_CONV_GRAPH=0|1|rtc (default 1): in f16/bf16 math,
                               conv2d through an execution plan of cuDNN's graph API (an
                               operation graph of the convolution; where the layout tuner times
                               the node, its first plans timed against the legacy algorithm);
                               engines that compile at plan time only with rtc (2); the legacy
                               cudnnConvolutionForward where cuDNN makes no plan, and in f32 */
    cuda_nhwc conv_nhwc;    /* IMGD_CUDA_CONV_NHWC=0|auto|tune|guess|1 (default auto): in
                               f16/bf16 math, cuDNN convolves NHWC tensors with a KRSC copy of the
                               weight made at plan time (its tensor-core layout); x is transposed
                               in, y out with the bias and residual (cuk_transpose_ewise). NCHW
                               half tensors make cuDNN transform the weight in every run; auto
                               times both layouts at plan time (conv2d.c conv_choose) */
    bool norm_nhwc;         /* IMGD_CUDA_NORM_NHWC (default 1): a group norm read only by an
                               NHWC cuDNN conv2d writes its output in NHWC itself, so the
                               convolution reads it without transposing it first */
    bool conv_add;          /* IMGD_CUDA_CONV_ADD (default 1): the ADD right after a cuDNN
                               conv2d that only it reads is done in the convolution's epilogue
                               pass (cuda_plan_residuals) */
    int32_t attn_mtiles;    /* IMGD_CUDA_ATTN_MTILES=1|2 (default 0: per head dim): query
                               tiles of 16 rows per warp of the mma attention kernel */
    cuda_attn attn;         /* IMGD_CUDA_ATTN=flash|gemm|wmma|mma|cudnn|tune|auto (auto and
                               tune: mma in f16/bf16 math from compute capability 8.0, timed
                               against cuDNN's SDPA (attn_tune); wmma before; flash in f32) */
    int32_t attn_tune;      /* attention_tune.c: 0 none; 1 (auto) each attention node of at
                               least CUDA_ATTN_TUNE_FLOP the mma kernel takes runs the fastest of
                               mma with 1 and 2 query tiles per warp and cuDNN's SDPA, timed at
                               plan time on the node's shapes; 2 (tune) every such node */
    bool lq_rows;           /* IMGD_CUDA_LQ_ROWS (default 1): a linear_quant with at most
                               CUK_LQ_ROWS rows of x and a 32-value block type reads its weight
                               in its blocks (cuk_linear_quant_rows) instead of expanding it */
    int64_t lq_tile;        /* IMGD_CUDA_LQ_TILE (default 1 << 23): weight values a
                               linear_quant expands per tile (rows rounded down to 64) */
    cuda_lqx lq_expand;     /* IMGD_CUDA_LQ_EXPAND=0|auto|1 (default auto): linear_quant
                               weights (but those of lq_rows nodes) expanded once at plan time */
    bool lq_expand_plan;    /* the plan being prepared expands them (cuda_prepare) */
    bool use_lt;            /* IMGD_CUDA_LT (default 1): a matmul / linear_quant with a
                               constant bias runs through cuBLASLt with the bias added in the
                               GEMM's epilogue instead of prefilled into its output (one pass
                               over the output less), and the residual ADD / GELU_TANH after a
                               matmul in its epilogue (cuda_plan_residuals); off, or where
                               cuBLASLt has no algorithm, through cublasGemmEx */
    cuda_gemm_sel gemm_sel; /* IMGD_CUDA_GEMM=auto|tune|heuristic (default auto; heuristic
                               in f32 math or with IMGD_CUDA_LT=0): in f16/bf16, each GEMM
                               runs the fastest of cuBLASLt's top heuristic algorithms (and
                               cublasGemmEx for a plain one), timed in the first compute of
                               each plan signature, which runs node by node (gemm_lt.c) */
    bool verbose;           /* IMGD_CUDA_VERBOSE=1: each plan's paths on stderr */
    bool graphs;            /* IMGD_CUDA_GRAPH (default 1): each plan is captured as a CUDA
                               graph on its first run and replayed while its signature (every
                               node's op, parameters and addresses) is unchanged */
    bool profile;           /* IMGD_PROFILE: GPU time per op kind (events), printed at free */
    bool profile_nodes;     /* IMGD_PROFILE=nodes: also per (op, dtype, shapes), largest first */
    bool half_act;          /* IMGD_CUDA_HALF_ACT (default 1): in f16/bf16 math, f32
                               activations are stored in the math type (half the memory
                               traffic; GEMMs and attention read them without conversion); graph
                               outputs, constants and a few raw-f32 operands stay f32 */
    cuda_weight *wts;       /* uploaded weights (backend.c) */
    size_t       n_wts, cap_wts;
    /* exec.c state */
    cuda_replay  replay[CUDA_REPLAY_MAX];
    uint64_t     clock;
    void        *pin_in, *pin_out; /* pinned staging for input uploads and result reads */
    size_t       pin_in_cap, pin_out_cap;
    void        *blas_ws; /* cuBLAS workspace (set explicitly: captures allocate nothing) */
    cudaEvent_t *ev;      /* profile: one event before each node and one after the last */
    size_t       n_ev;
    double       prof_s[IMGD_OP_COUNT];
    uint64_t     prof_n[IMGD_OP_COUNT];
    double       prof_wall_s; /* host time of the profiled runs, enqueue to completion */
    uint64_t     prof_runs, prof_replays;
    struct cuda_prof_row *prof_rows; /* IMGD_PROFILE=nodes: GPU time per (op, shapes) */
    /* the plan-time tuners' choices, by shape (tune.c) */
    cuda_tune_cache picks[CUDA_TUNER_N]; /* per tuner: attention_tune.c (kernel),
                                            conv2d.c (NCHW or NHWC), gemm_lt.c (kernel) */
    double  tune_s[CUDA_TUNER_N];        /* wall time spent timing candidates, per tuner */
    double  conv_plan_s;                 /* ... and making convolutions' graph plans */
    int32_t conv_plan_n;                 /* the graphs asked for (planned or not) */
    int32_t tune_n[CUDA_TUNER_N];        /* nodes (shapes) timed */
    char   *tune_path;                   /* IMGD_CUDA_TUNE_CACHE, or NULL */
    size_t  tune_saved[CUDA_TUNER_N];    /* items each cache had at the last load / save */
    bool    tune_save_failed;            /* reported once */
#ifdef IMGD_HAVE_CUDNN
    cudnnHandle_t dnn;
#endif
} cuda_backend;

/* Per-node state of an executed node (its backend_data; leaves hold a device pointer
 * instead). Created by prepare, freed by release. */
typedef struct cuda_node {
    void *dev;             /* owned device memory: a folded DEQUANTIZE's or CAST's result */
    bool  folded;          /* a constant (DEQUANTIZE, or CAST of a weight): its value is dev,
                              computed at plan time; readers get dev (cuda_dptr), runs skip it */
    bool    is_out;        /* the graph output is this node or a view of it (never folded) */
    int32_t half_dt;       /* 0: stored as its graph dtype; CUK_F16 / CUK_BF16: an f32
                              activation stored in the math type (cuda_backend.half_act) */
    const void *cnst[2];   /* matmul/conv2d: device address of operand s (src[s]'s first
                              element) as a constant in the GEMM type, or NULL: converted per
                              run (f16/bf16 math) or read as is (f32) */
    void       *owned[2];  /* device memory behind cnst[s] when converted at plan time */
    const void *lt_bias;   /* matmul / linear_quant: the constant bias in the output's storage
                              type, for the cuBLASLt epilogue (NULL: prefilled, cublasGemmEx) */
    void   *lt_bias_owned; /* device memory behind lt_bias when converted at plan time */
    int32_t lt_bias_dt;    /* its cuk_dtype */
    const imgd_tensor
        *fused;         /* matmul / linear_quant: the node right after it, its only reader, run in
                           its GEMM when cuBLASLt can (output D = that node's): an
                           ADD (residual C = its other operand) or a GELU_TANH (the
                           GELU epilogue); conv2d through cuDNN: an ADD, its other operand
                           (full or broadcast) added with the bias; NULL: none */
    int32_t res_src;    /* ADD: the residual's src index in fused */
    bool    gemm_done;  /* ADD / GELU_TANH: this run's result was written by the GEMM before */
    bool    skip;       /* a CAST that only GEMMs reading its weight directly consume */
    bool    needed;     /* prepare: a CAST some node reads as data */
    bool    cudnn;      /* conv2d through cuDNN (descriptors below are set) */
    bool    nhwc;       /* ... with NHWC tensors and the KRSC weight cnst[1] (conv_nhwc) */
    bool    attn_gemm;  /* attention through attention_gemm.c */
    bool    attn_wmma;  /* attention through attention_wmma.cu */
    bool    lq_rows;    /* linear_quant through cuk_linear_quant_rows (quant.c) */
    bool    attn_cudnn; /* attention through cuDNN's SDPA (sdpa_plan, ws_bytes of scratch) */
    void   *sdpa_plan;  /* its cudnnBackendDescriptor_t execution plan */
    int32_t mtiles;     /* mma attention: query tiles per warp (0: the backend's) */
    bool    x_nhwc;     /* NHWC conv2d: x is read as its group norm wrote it, in NHWC
                           (no transpose in; cuda_conv2d_choose) */
    bool  out_nhwc;     /* group_norm: writes its output [N, S, C] for that convolution */
    void *conv_pending; /* conv2d whose layout is timed after plan_storage (conv2d.c
                             cuda_conv2d_choose): both layouts' algorithms */
    int32_t algo;       /* cudnnConvolutionFwdAlgo_t */
    void   *cgraph;     /* conv2d through cuDNN's graph API: its operation graph and the one
                           execution plan taken (conv2d.c conv_graph), or NULL: legacy algo */
    int32_t cplan;      /* ... which of the heuristics' acceptable plans that is (0: the first) */
    size_t  ws_bytes;   /* cuDNN workspace, at the end of the node's scratch */
#ifdef IMGD_HAVE_CUDNN
    cudnnTensorDescriptor_t      xd, yd;
    cudnnFilterDescriptor_t      wd;
    cudnnConvolutionDescriptor_t cd;
#endif
} cuda_node;

static inline cuda_node *cuda_node_of(const imgd_tensor *n) {
    return (cuda_node *)n->backend_data;
}

/* Maps a failed CUDA runtime call to IMGD_E_NOMEM (allocation) or IMGD_E_DEVICE with a
 * message naming the call, the CUDA error and `what` (the node or object being worked on). */
imgd_status cuda_fail(cudaError_t e, const char *call, const char *what);
imgd_status cublas_fail(cublasStatus_t s, const char *call, const char *what);

/* Evaluates a CUDA runtime call; on failure returns its imgd status from the function. */
#define CUDA_TRY(call, what)                                                                       \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cuda_fail(e_, #call, (what));                                \
    } while (0)

#ifdef IMGD_HAVE_CUDNN
imgd_status cudnn_fail(cudnnStatus_t s, const char *call, const char *what);
#    define CUDNN_TRY(call, what)                                                                  \
        do {                                                                                       \
            cudnnStatus_t s_ = (call);                                                             \
            if (s_ != CUDNN_STATUS_SUCCESS) return cudnn_fail(s_, #call, (what));                  \
        } while (0)
#endif

#define CUBLAS_TRY(call, what)                                                                     \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) return cublas_fail(s_, #call, (what));                    \
    } while (0)

/* Device address of t's first element. Activations (and views of them) already hold device
 * addresses; leaves (weights, inputs) hold host addresses and are translated to their
 * device copy, which prepare keeps in the storage leaf's backend_data. */
void *cuda_dptr(const imgd_tensor *t);

/* Describes t (f32/f16/bf16, <= CUK_MAX_DIMS dims) for a kernel, at its device address, in
 * the dtype it is stored in. */
cuk_tensor cuda_desc(const imgd_tensor *t);
/* Whether src, broadcast to out's shape (numpy rules), is a flat operand of cuk_ewise (its
 * dims that are neither broadcast nor 1 one row-major run); sets *o (at src's device address)
 * when it is. */
bool cuda_operand(const imgd_tensor *src, const imgd_tensor *out, cuk_operand *o);
/* The cuk_dtype t's values are stored in on the device (its graph dtype, or the math type for
 * an f32 activation stored in half precision). */
int32_t cuda_cuk_of(const imgd_tensor *t);
/* Bytes of t's values as stored (contiguous). */
size_t cuda_store_bytes(const imgd_tensor *t);

/* exec.c: running a planned graph (capture, replay, eager), input staging, profiling. */
imgd_status cuda_exec_run(cuda_backend *cb, imgd_graph *g);
/* Drops g's captured graph (its plan is being released). */
void cuda_exec_forget(cuda_backend *cb, const imgd_graph *g);
/* Result read through the pinned staging buffer (large reads go direct). */
imgd_status cuda_exec_read(cuda_backend *cb, const void *src, void *dst, size_t n);
/* Frees captured graphs, staging, events; prints the profile when IMGD_PROFILE is set. */
void cuda_exec_free(cuda_backend *cb);
/* Runs one node (the op's launcher); what names it in errors. */
imgd_status cuda_run_node(cuda_backend *cb, const imgd_tensor *n, const char *what);

/* ---- per-op host code ---------------------------------------------------------------------- */

/* dispatch.c: everything but matmul/conv2d/dequantize. `what` names the node in errors. */
imgd_status cuda_run_op(cuda_backend *cb, const imgd_tensor *n, const char *what);
/* Sets a group_norm node's scratch (partial sums per chunk of each group). */
void cuda_group_norm_prepare(imgd_tensor *n);
/* Element strides of attention mask m (or NULL: zeros) over (b, h, i, j): its dims
 * right-aligned, 0 where a dim has size 1 (broadcast). */
void cuda_mask_strides(const imgd_tensor *m, int64_t ms[4]);
/* Runs attention node n through the tensor-core flash kernel (mma, or wmma where cb says). */
imgd_status cuda_attn_wmma(cuda_backend *cb, const imgd_tensor *n, const char *what);
/* The same kernel on n's shapes and strides with its operands at src (q, k, v, mask) and
 * its output at out (n's own addresses, or the tuner's buffers); mtiles as
 * cuk_attention_mma's. */
cudaError_t cuda_attn_tc_launch(const cuda_backend *cb, const imgd_tensor *n, void *out,
                                const void *const src[4], int32_t mtiles);
#ifdef IMGD_HAVE_CUDNN
/* cudnn_graph.c: cuDNN's backend (graph) API as the SDPA and convolution graphs use it. */
typedef cudnnBackendDescriptor_t cuda_bdesc;
#    define CUDA_DNN_BY_VALUE 1u /* a host scalar */
#    define CUDA_DNN_VIRTUAL  2u /* an intermediate of a fused graph, never in memory */
#    define CUDA_DNN_CFGS     16 /* engine configurations read from the heuristics */
#    define CUDA_DNN_PLANS    8  /* execution plans kept at most */
cudnnStatus_t cuda_dnn_set_desc(cuda_bdesc d, cudnnBackendAttributeName_t a, cuda_bdesc v);
/* A finalized tensor descriptor in *out: nd dims and strides (elements), uid, dtype,
 * CUDA_DNN_* flags; 16-byte aligned (a by-value scalar 4). */
cudnnStatus_t cuda_dnn_tensor(cuda_bdesc *out, int64_t uid, cudnnDataType_t dt, int32_t nd,
                              const int64_t *dims, const int64_t *strides, uint32_t flags);
/* The finalized operation graph of n_ops finalized operations, on cb's handle. */
cudnnStatus_t cuda_dnn_graph(const cuda_backend *cb, const cuda_bdesc *ops, int32_t n_ops,
                             cuda_bdesc *graph);
/* Execution plans of an operation graph, in the heuristics' order. */
typedef struct cuda_dnn_plans {
    cuda_bdesc heur, cfgs[CUDA_DNN_CFGS];
    cuda_bdesc plan[CUDA_DNN_PLANS];
    int64_t    ws[CUDA_DNN_PLANS]; /* workspace bytes of each */
    int32_t    n;
} cuda_dnn_plans;
/* The first max (<= CUDA_DNN_PLANS) of the heuristics' configurations for graph whose plan
 * finalizes with at most ws_max bytes of workspace and, with precompiled, whose engine does not
 * compile its kernel at plan time (NVRTC: seconds per engine). Success when at least one was
 * made, else the last refusal's status (*p freed by cuda_dnn_plans_free either way). */
cudnnStatus_t cuda_dnn_plans_make(const cuda_backend *cb, cuda_bdesc graph, int32_t max,
                                  int64_t ws_max, bool precompiled, cuda_dnn_plans *p);
/* Keeps plan keep alone (as plan 0) and destroys the others. */
void cuda_dnn_plans_keep(cuda_dnn_plans *p, int32_t keep);
void cuda_dnn_plans_free(cuda_dnn_plans *p);
/* Runs plan on cb's handle with n (uid, device pointer) pairs and workspace ws. */
cudnnStatus_t cuda_dnn_exec(const cuda_backend *cb, cuda_bdesc plan, int32_t n, const int64_t *uids,
                            void *const *ptrs, void *ws);
/* attention_cudnn.c: cuDNN's SDPA plan for attention node n (ns->sdpa_plan, its workspace in
 * ns->ws_bytes); false with the reason in why when cuDNN cannot take it. */
bool cuda_attn_cudnn_plan(cuda_backend *cb, imgd_tensor *n, char *why, size_t why_cap);
/* Runs that plan with the operands at ptrs (q, k, v, output; 16-byte aligned) and the
 * workspace at ws. */
cudnnStatus_t cuda_attn_cudnn_exec(const cuda_backend *cb, const cuda_node *ns, float scale,
                                   void *const ptrs[4], void *ws);
imgd_status   cuda_attn_cudnn(cuda_backend *cb, const imgd_tensor *n, const char *what);
void          cuda_attn_cudnn_release(cuda_node *ns);
#endif
/* attention_tune.c: after plan_storage and cuda_plan_residuals, the path of each attention
 * node the mma kernel takes: cuDNN's SDPA where it takes it (cb->attn == CUDA_ATTN_CUDNN),
 * or the fastest of the timed candidates (cb->attn_tune); sets n's scratch for cuDNN. */
imgd_status cuda_attn_choose(cuda_backend *cb, imgd_graph *g);
/* tune.c: the item of c whose first key_size bytes are key's, or NULL. */
void *cuda_tune_find(const cuda_tune_cache *c, const void *key, size_t key_size);
/* A new zeroed item of item_size bytes at the end of c (NULL: out of host memory). */
void *cuda_tune_add(cuda_tune_cache *c, size_t item_size);
void  cuda_tune_free(cuda_tune_cache *c);
/* A tuner's trial buffers: buf (zeroed) and the two events a run is timed between; from new to
 * free, the time is the tuner's (cuda_backend.tune_s). */
typedef struct cuda_tune_bufs {
    unsigned char *buf;
    cudaEvent_t    e0, e1;
    cuda_backend  *cb;
    int32_t        tuner;
    double         t0;
} cuda_tune_bufs;
/* bytes of zeroed device memory and two events for tuner (CUDA_TUNER_*); false, with why, when
 * they could not be had (nothing left held, the error cleared). */
bool cuda_tune_bufs_new(cuda_backend *cb, int32_t tuner, size_t bytes, cuda_tune_bufs *b, char *why,
                        size_t why_cap);
/* Frees b and adds the time since cuda_tune_bufs_new to its tuner's. */
void cuda_tune_bufs_free(cuda_tune_bufs *b);
/* Milliseconds per run(ctx) on cb's stream: one warm-up run, then CUDA_TUNE_REPS between b's
 * events; -1 when a run returns false or the timing fails (its error cleared). */
float cuda_tune_time(cuda_backend *cb, const cuda_tune_bufs *b, bool (*run)(void *ctx), void *ctx);
/* The tuners' choices on disk (IMGD_CUDA_TUNE_CACHE=FILE): load reads those measured on this
 * card with these library versions (at creation); save writes the file again (atomically) when
 * a tuner has added a choice since. Neither fails: a file that cannot be read or written is
 * reported once and ignored. */
void cuda_tune_load(cuda_backend *cb);
void cuda_tune_save(cuda_backend *cb);
/* Each tuner's item size (attention_tune.c, conv2d.c: 0 without cuDNN, gemm_lt.c). */
size_t cuda_attn_pick_size(void);
size_t cuda_conv_pick_size(void);
size_t cuda_gemm_pick_size(void);
/* Monotonic wall-clock seconds (tuners' cost, profiles). */
double cuda_now_s(void);
/* Whether a tuner's buffers of `bytes` fit: at most CUDA_TUNE_BYTES_MAX, leaving CUDA_TUNE_SPARE
 * of device memory free (*free_bytes: what is free, 0 when the query failed). */
bool cuda_tune_room(size_t bytes, size_t *free_bytes);
/* Whether the tensor-core flash kernel runs attention node n in cb's math. */
bool cuda_attn_wmma_supported(const cuda_backend *cb, const imgd_tensor *n);
/* Whether dispatch.c / matmul.c can run n (dtype, layout and size limits). */
bool cuda_op_supported(const imgd_tensor *n);

/* matmul.c: matmul, and the GEMM helpers conv2d.c shares. */
bool cuda_matmul_supported(const imgd_tensor *n);
/* Resolves constant operands (cuda_node.cnst) and sets n->scratch_bytes (operands rounded to
 * fp16/bf16 per run) when the math is not f32. */
imgd_status cuda_matmul_prepare(cuda_backend *cb, imgd_tensor *n);
imgd_status cuda_matmul(cuda_backend *cb, const imgd_tensor *n, const char *what);

size_t         cuda_align_up(size_t n);               /* to 256 bytes */
bool           cuda_math_low(const cuda_backend *cb); /* fp16/bf16 GEMM operands */
int32_t        cuda_math_cuk(const cuda_backend *cb); /* their cuk_dtype */
cudaDataType_t cuda_math_type(const cuda_backend *cb);
size_t         cuda_math_size(const cuda_backend *cb); /* their bytes per element */
/* Copies src (any layout and float dtype) into new device memory (*out, owned by the caller
 * from the allocation on, so its release frees it even when the copy fails), contiguous, in
 * dtype (a cuk_dtype). */
imgd_status cuda_copy_new(cuda_backend *cb, const cuk_tensor *src, int32_t dtype, void **out,
                          const char *what);
/* Writes t (any layout) contiguously in the GEMM operand type at device address dst. */
imgd_status cuda_to_math(cuda_backend *cb, const imgd_tensor *t, void *dst, const char *what);
/* Prefills n (a GEMM output) with its bias src[2] (out[i] = bias[(i / inner) % nb]) and sets
 * *beta to 1, or leaves it and sets *beta to 0 without a bias. */
imgd_status cuda_gemm_out_init(cuda_backend *cb, const imgd_tensor *n, int64_t inner, int64_t nb,
                               const char *what, float *beta);
/* When cb->direct_weights and the math is f16/bf16: if src[s] of n reads a constant weight
 * (the weight, a view of it, or a cast of a contiguous weight or a view of that cast), sets
 * cuda_node.cnst[s] to it in the GEMM type: the uploaded copy when the file has that type,
 * else a copy converted now (cuda_node.owned[s]). */
imgd_status cuda_resolve_const(cuda_backend *cb, imgd_tensor *n, int s);
/* The weight leaf whose values operand s of n reads when cuda_resolve_const applies (direct
 * weights, f16/bf16 math, a float weight or a cast of one), else NULL. */
const imgd_tensor *cuda_const_weight(const cuda_backend *cb, const imgd_tensor *n, int s);
/* Device bytes of the copy cuda_resolve_const converts for operand s of n (0: none). */
size_t cuda_const_copy_bytes(const cuda_backend *cb, const imgd_tensor *n, int s);
/* Column-major C = alpha op_a(A) op_b(B) + beta C over `batches` strided batches, A and B in
 * the GEMM operand type, C f32, f32 accumulation (cublasGemm[StridedBatched]Ex). */
imgd_status cuda_gemm_a(cuda_backend *cb, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m,
                        int64_t n, int64_t k, float alpha, const void *A, int64_t lda,
                        int64_t stride_a, const void *B, int64_t ldb, int64_t stride_b, float beta,
                        float *C, int64_t ldc, int64_t stride_c, int64_t batches, const char *what);
/* cuda_gemm_a with C of type ct (f32, or the GEMM type: f32 accumulation rounded on store). */
imgd_status cuda_gemm_t(cuda_backend *cb, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m,
                        int64_t n, int64_t k, float alpha, const void *A, int64_t lda,
                        int64_t stride_a, const void *B, int64_t ldb, int64_t stride_b, float beta,
                        void *C, cudaDataType_t ct, int64_t ldc, int64_t stride_c, int64_t batches,
                        const char *what);
/* A cuBLASLt GEMM, column-major: D = op_a(A) op_b(B) [+ C] [+ bias] over `batches` strided
 * batches; A and B in the GEMM operand type; C (a residual read with D's layout; may be D),
 * D and bias (bias[i] added to row i) of type dt. */
typedef struct cuda_lt_args {
    cublasOperation_t op_a, op_b;
    int64_t           m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, batches;
    const void       *A, *B;
    const void       *bias; /* NULL: no bias */
    const void       *C;    /* NULL: no residual */
    void             *D;
    cudaDataType_t    dt;
    bool              gelu; /* D = gelu_tanh(...) in the epilogue (after bias and residual) */
} cuda_lt_args;
/* gemm_lt.c: runs g with the kernel chosen for it (IMGD_CUDA_GEMM): cuBLASLt (bias and GELU in the
 * epilogue, residual as beta = 1), or cublasGemmEx for a plain GEMM (no bias, residual or
 * GELU). Sets *ran to false without failing when neither takes it (cuBLASLt has no algorithm
 * for a GEMM with an epilogue): the caller then runs it another way. */
imgd_status cuda_gemm_lt(cuda_backend *cb, const cuda_lt_args *g, bool *ran, const char *what);
/* Whether plain GEMMs go through cuda_gemm_lt to have their kernel chosen (cb->gemm_sel). */
bool cuda_gemm_tuned(const cuda_backend *cb);
/* The kernels chosen so far (imgd_cuda_gemm_picks). */
void cuda_gemm_stats(const cuda_backend *cb, imgd_cuda_gemm_stats *s);
/* After plan_storage: gives matmul / linear_quant node n with a constant bias its copy in n's
 * storage type (cuda_node.lt_bias) when cb->use_lt. */
imgd_status cuda_gemm_bias_prepare(cuda_backend *cb, imgd_tensor *n);
/* How many times node n's storage is read: by exec nodes' sources and as a graph output. */
size_t cuda_readers(imgd_graph *g, const imgd_tensor *n);
/* After cuda_gemm_bias_prepare: pairs each matmul / linear_quant (when cb->use_lt) with the
 * ADD or GELU_TANH, and each cuDNN conv2d with the ADD, that follows it in the run order and
 * is its only reader (cuda_node.fused). */
void cuda_plan_residuals(cuda_backend *cb, imgd_graph *g);
/* For n with a fused node: whether n's kernel can write that node's output this run, i.e.
 * nothing it reads (its operands pa / pb as stored, its scratch, the fused ADD's other
 * operand unless that is the output itself with its shape) lies there. */
bool cuda_fused_out_ok(const imgd_tensor *n, const void *pa, const void *pb);
/* For matmul / linear_quant n with a fused node (cuda_node.fused): whether n's GEMM can write
 * that node's output this run (nothing it reads, its operands pa / pb as stored, its scratch
 * or the residual, lies there). When it can, sets f's D, C (an ADD's residual), gelu (a
 * GELU_TANH), bias (the node's cuBLASLt bias) and dt. The caller resets the fused node's
 * gemm_done at the start of the run and sets it once the GEMM has written the result. */
bool cuda_fused_args(cuda_backend *cb, const imgd_tensor *n, const void *pa, const void *pb,
                     cuda_lt_args *f);
/* cuda_gemm_a with alpha = 1. */
imgd_status cuda_gemm(cuda_backend *cb, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m,
                      int64_t n, int64_t k, const void *A, int64_t lda, int64_t stride_a,
                      const void *B, int64_t ldb, int64_t stride_b, float beta, float *C,
                      int64_t ldc, int64_t stride_c, int64_t batches, const char *what);

/* conv2d.c */
bool cuda_conv2d_supported(const imgd_tensor *n);
/* Resolves the constant weight, picks cuDNN (descriptors, algorithm) or im2col, and sets
 * n->scratch_bytes (im2col columns or cuDNN workspace, operands rounded per run). */
imgd_status cuda_conv2d_prepare(cuda_backend *cb, imgd_tensor *n);
imgd_status cuda_conv2d(cuda_backend *cb, const imgd_tensor *n, const char *what);
/* After plan_storage and cuda_plan_residuals: the layout of each cuDNN convolution the tuner
 * times (IMGD_CUDA_CONV_NHWC=auto|tune), measured with the storage types and the fused residual
 * its runs will have. */
imgd_status cuda_conv2d_choose(cuda_backend *cb, imgd_graph *g);
/* Device bytes of the KRSC weight copy conv2d node n is expected to make at plan time
 * (NHWC: IMGD_CUDA_CONV_NHWC=1, or where the weight outweighs the activation; a timed
 * choice of NHWC elsewhere makes its copy only where it finds the room); 0: none. */
size_t cuda_conv2d_copy_bytes(const cuda_backend *cb, const imgd_tensor *n);
/* Destroys the cuDNN descriptors of a conv2d node's state (NULL-safe). */
void cuda_conv2d_release(cuda_node *st);

/* quant.c: ggml block weights (DEQUANTIZE folded by backend.c, LINEAR_QUANT per run) */
/* The cuk quant type of dt, or -1 when the device cannot expand it. */
int32_t cuda_quant_type(imgd_dtype dt);
/* Byte offset of quantized view w's first block in its storage. */
size_t cuda_quant_offset(const imgd_tensor *w);
bool   cuda_dequantize_supported(const imgd_tensor *n);
/* Expands the blocks of w's values (w gives the type and count; src: their device address)
 * into out (contiguous, odt). */
imgd_status cuda_dequant(cuda_backend *cb, const imgd_tensor *w, const void *src, void *out,
                         int32_t odt, const char *what);
bool        cuda_linear_quant_supported(const imgd_tensor *n);
imgd_status cuda_linear_quant_prepare(cuda_backend *cb, imgd_tensor *n); /* scratch_bytes */
/* Device bytes of linear_quant n's weight expanded at plan time (0: n does not take it). */
size_t      cuda_lq_expand_bytes(const cuda_backend *cb, const imgd_tensor *n);
imgd_status cuda_linear_quant(cuda_backend *cb, const imgd_tensor *n, const char *what);

/* attention_gemm.c: attention as batched GEMMs (cb->attn == CUDA_ATTN_GEMM) */
bool        cuda_attn_gemm_supported(const imgd_tensor *n);
void        cuda_attn_gemm_prepare(cuda_backend *cb, imgd_tensor *n); /* scratch_bytes */
imgd_status cuda_attn_gemm(cuda_backend *cb, const imgd_tensor *n, const char *what);

#endif
