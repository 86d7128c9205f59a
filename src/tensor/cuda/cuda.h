/* The CUDA backend ("cuda"), built when CMake finds the CUDA toolkit (IMGD_HAVE_CUDA).
 *
 * Memory: the planned activation buffer and every allocation come from cudaMalloc; prepare
 * checks the device's free memory first and fails with the numbers (IMGD_E_NOMEM) when the
 * weights or the activations do not fit. Weights the graph reads are uploaded once, in
 * prepare (imgd_graph_plan), into device copies shared by every plan over the same host
 * bytes and kept until the last such graph is released or re-planned; small constants (casts of
 * weights up to 1M elements) and dequantized weights are computed once there too. Inputs are staged
 * in pinned memory and uploaded at every compute; outputs are read back through pinned memory with
 * imgd_graph_read_f32 (the read hook).
 *
 * Kernels: cuBLAS GEMMs for matmul, cuDNN (or im2col + cuBLAS) for conv2d, and for attention
 * a tensor-core flash kernel (f16/bf16), batched cuBLAS GEMMs, or an f32 online-softmax
 * kernel; one CUDA kernel per other op (flat, with 32-bit indices and 8 elements per thread in
 * 16-byte loads where the layout allows, strided otherwise). All f32 (no TF32) by default;
 * params->gpu_math F16/BF16 gives matmul, conv2d and attention fp16/bf16 operands on tensor cores
 * (f32 accumulation) and stores f32 activations in that type. Quantized (ggml block) weights are
 * expanded on the device: a DEQUANTIZE once at plan time, into the storage type; a
 * LINEAR_QUANT per run, tile by tile into the GEMM operand type, so the weight stays in its
 * blocks in device memory.
 *
 * Execution: the first compute of a plan is captured as a CUDA graph and later computes
 * replay it while the plan's signature (ops, parameters, shapes, addresses) is unchanged.
 *
 * Paths, each switchable from the environment (read when the backend is created), so a GPU
 * run can fall back if one is wrong:
 *   IMGD_CUDA_CUDNN=0           conv2d as im2col + cuBLAS instead of cuDNN (builds with cuDNN)
 *   IMGD_CUDA_ATTN=auto|tune|mma|wmma|gemm|flash|cudnn  attention; default (auto): in
 *                               f16/bf16 from compute capability 8.0, each node of at least
 *                               1e8 FLOP runs the fastest of the mma kernel (FA2-style on
 *                               mma.sync) with one and with two query tiles per warp and
 *                               cuDNN's fused SDPA operation (backend graph API, cuDNN 9.x;
 *                               where it takes the node: no mask, q/k/v and output in the
 *                               math type, head dim a multiple of 8), each timed at plan time
 *                               on the node's shapes (choices remembered per shape); smaller
 *                               nodes mma. tune: every node timed. mma: mma, nothing timed.
 *                               cudnn: cuDNN's SDPA for each node it takes, untimed, mma for
 *                               the others. wmma: the earlier FA1-style kernel, also taken on
 *                               a card below compute capability 8.0. Tensor-core kernels fall
 *                               back to gemm over head dim 160; flash in f32.
 *                               IMGD_CUDA_VERBOSE=1 prints each node's timings and choice
 *   IMGD_CUDA_ATTN_MTILES=1|2   mma attention: 16-row query tiles per warp (default: 2 up to
 *                               head dim 32, else 1; auto/tune time both unless this is set)
 *   IMGD_CUDA_DIRECT_WEIGHTS=0  f16/bf16: round weights per run from their f32 cast instead of
 *                               reading them in the GEMM type (converted once at plan time)
 *   IMGD_CUDA_HALF_ACT=0        f16/bf16: keep activations in f32 (GEMMs convert per run)
 *   IMGD_CUDA_GRAPH=0           run node by node instead of capturing CUDA graphs
 *   IMGD_CUDA_LT=0              matmul / linear_quant with a constant bias: cublasGemmEx over
 *                               an output prefilled with the bias instead of cuBLASLt with the
 *                               bias in the epilogue; a residual ADD or GELU_TANH after a
 *                               matmul runs as its own kernel instead of in the epilogue
 *   IMGD_CUDA_NORM_NHWC=0       a group norm read only by an NHWC cuDNN conv2d writes NCHW and
 *                               the convolution transposes it, instead of the norm writing NHWC
 *   IMGD_CUDA_CONV_ADD=0        an ADD right after a cuDNN conv2d (a ResNet's time embedding
 *                               or residual) runs as its own kernel instead of in the pass
 *                               that adds the convolution's bias
 *   IMGD_CUDA_CONV_NHWC=0|1     f16/bf16 cuDNN conv2d on NCHW tensors everywhere (0) or NHWC
 *                               everywhere (1): NHWC with a KRSC copy of the weight made at
 *                               plan time, x transposed in and y out with the bias and
 *                               residual. Default (auto): both layouts timed at plan time on
 *                               each convolution of 1e8 FLOP or more (the transposes and
 *                               epilogue included; remembered per shape) and the faster
 *                               taken; smaller ones guessed: NHWC where the weight outweighs
 *                               the activation or cuDNN has no NCHW tensor-core algorithm
 *                               (H100, SD 1.5 f16: 80.9 it/s against 73.6 all NCHW).
 *                               tune: every convolution timed; guess: none
 *   IMGD_CUDA_CONV_GRAPH=0|rtc  f16/bf16 cuDNN conv2d through the legacy cudnnConvolutionForward
 *                               (0) instead of an execution plan of cuDNN's graph API (an
 *                               operation graph of the one convolution, default 1): cuDNN's
 *                               first heuristic plan, or where the layout is timed, its first
 *                               4 plans and the legacy algorithm in each layout, the fastest
 *                               taken; engines that compile their kernel at plan time (NVRTC)
 *                               only with rtc. The legacy API also runs f32 and any node cuDNN
 *                               makes no graph plan for
 *   IMGD_CUDA_GEMM=heuristic    f16/bf16: every GEMM with an epilogue runs cuBLASLt's first
 *                               heuristic algorithm and every plain one cublasGemmEx. Default
 *                               (auto): each GEMM of 1e8 FLOP or more runs the fastest of
 *                               cuBLASLt's first 8 heuristic algorithms and (plain ones)
 *                               cublasGemmEx, timed on its own operands in the first compute
 *                               of each plan (which runs node by node; choices remembered per
 *                               shape, layout, epilogue and alignments); tune: every GEMM
 *                               timed. IMGD_CUDA_VERBOSE=1 prints the timings
 *   IMGD_CUDA_TUNE_CACHE=FILE   keep the tuners' choices (attention kernels, convolution
 *                               layouts, GEMM kernels) in FILE: a new backend on the same card
 *                               with the same cuBLASLt / cuDNN starts with them and times only
 *                               new shapes (a restarted worker skips the timing); written
 *                               atomically whenever a tuner adds a choice. Unset: in memory only
 *   IMGD_CUDA_CUDNN_FIND=1      time every cuDNN algorithm of each conv2d at plan time instead
 *                               of taking cuDNN's heuristic choice (H100: no faster, plans 5x
 *                               slower; off by default)
 *   IMGD_CUDA_LQ_ROWS=0         a linear_quant with at most 4 rows of x and a 32-value block
 *                               type (Q4_0..Q8_1) expands its weight and runs a GEMM like
 *                               the others instead of reading the blocks in one pass
 *   IMGD_CUDA_LQ_TILE=N         weight values a linear_quant expands per GEMM (default
 *                               8388608: 16 MiB of f16 scratch; 1024..2^30)
 *   IMGD_CUDA_LQ_EXPAND=0|1     linear_quant weights (but the few-row nodes') expanded once at
 *                               plan time into the math type, their blocks dropped, each run
 *                               one plain GEMM: 1 always, 0 never (tiles per run); default
 *                               (auto): where all of the plan's fit beside its uploads with
 *                               6 GiB to spare (FLUX.1-dev Q8_0: 24 GB in bf16, an 80 GB card)
 *
 * Debugging: IMGD_CUDA_SYNC=1 synchronises after every node (no graph capture), so an
 * asynchronous kernel failure is reported with the node's index and op. IMGD_CUDA_DEVICE=N
 * picks the device (default 0). IMGD_CUDA_VERBOSE=1 prints, per planned graph, which path
 * each conv2d/attention node took, how weights are read, how many casts were skipped or
 * folded, how many activations are stored in half precision, how many GEMMs add their
 * bias in the cuBLASLt epilogue, how many ADDs / GELUs run in a GEMM or convolution and
 * how many linear_quant nodes read their blocks in one pass, and for each cuDNN conv2d its layout,
 * algorithm and workspace. IMGD_PROFILE=1 prints GPU time per op kind (events recorded inside the
 * graph) when the backend is freed; IMGD_PROFILE=nodes adds the 40 costliest (op, dtype, shapes)
 * rows, so a GPU run shows which convolution or attention shapes take the time. */
#ifndef IMGD_TENSOR_CUDA_CUDA_H
#define IMGD_TENSOR_CUDA_CUDA_H

#include "tensor/backend.h"

/* params: gpu_math (device from IMGD_CUDA_DEVICE); may be NULL. out: written only on success.
 * Returns IMGD_OK, IMGD_E_UNSUPPORTED (no CUDA device or no usable driver: the message
 * says which), IMGD_E_DEVICE (a CUDA/cuBLAS call failed: the message names it),
 * IMGD_E_NOMEM. */
imgd_status imgd_cuda_backend_new(const imgd_backend_params *params, imgd_backend **out);

/* Number of usable CUDA devices; 0 when the driver is missing or there is no GPU (never
 * fails). */
int imgd_cuda_device_count(void);

/* Device memory of the current device in bytes. IMGD_E_DEVICE when the query fails. */
imgd_status imgd_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);

/* How many nodes of a graph planned on a cuda backend take each path (what
 * IMGD_CUDA_VERBOSE=1 prints per plan). */
typedef struct imgd_cuda_paths {
    int conv_cudnn, conv_nhwc, conv_im2col;         /* conv2d: cuDNN (of which NHWC), im2col */
    int conv_x_nhwc;                                /* NHWC convolutions reading x as their
                                                       group norm wrote it, in NHWC */
    int conv_graph;                                 /* cuDNN convolutions through an execution
                                                       plan of its graph API (else legacy) */
    int conv_graph_other;                           /* of which running a plan other than the
                                                       heuristics' first (timed faster) */
    int attn_cudnn, attn_tc, attn_gemm, attn_flash; /* attention: cuDNN SDPA, mma / wmma, ... */
    int weights_direct, weights_converted;          /* GEMM weight operands read as uploaded /
                                                       as copies converted at plan time */
    int casts, casts_skipped, folded, half_act;     /* casts (skipped), constants folded at
                                                       plan, activations in the math type */
    int lt_bias, fused_add, fused_gelu;             /* bias / residual add / GELU in a GEMM or
                                                       convolution epilogue */
    int lq_expanded, lq_tiles, lq_rows;             /* linear_quant: expanded at plan, per
                                                       tile, read in blocks */
} imgd_cuda_paths;
/* Fills *p for g, a graph planned on be. IMGD_E_INVALID_ARG when be is not a cuda backend. */
imgd_status imgd_cuda_plan_paths(const imgd_backend *be, const imgd_graph *g, imgd_cuda_paths *p);

/* Which kernels the GEMMs run so far have been given (IMGD_CUDA_GEMM), counted over the distinct
 * GEMMs (shape, layout, types, epilogue, alignments) a cuda backend has run. */
typedef struct imgd_cuda_gemm_stats {
    int shapes;   /* distinct GEMMs */
    int timed;    /* of which timed (IMGD_CUDA_GEMM=auto|tune) */
    int lt_first; /* running cuBLASLt's first heuristic algorithm */
    int lt_other; /* running another of its algorithms (timed faster) */
    int gemm_ex;  /* running cublasGemmEx */
    int none;     /* with an epilogue cuBLASLt has no algorithm for (run unfused) */
} imgd_cuda_gemm_stats;
/* Fills *s for be. IMGD_E_INVALID_ARG when be is not a cuda backend. */
imgd_status imgd_cuda_gemm_picks(const imgd_backend *be, imgd_cuda_gemm_stats *s);

/* Wall time a cuda backend's tuners have spent timing candidates (buffers, runs, waits), and
 * how many shapes each timed: attention kernels and convolution layouts when plans are made,
 * GEMM kernels in plans' first computes. */
typedef struct imgd_cuda_tune_cost {
    double attn_s, conv_s, gemm_s;
    int    attn_n, conv_n, gemm_n;
    double conv_plan_s; /* making convolutions' cuDNN graph plans (heuristics, finalizing) */
    int    conv_plan_n; /* the graphs asked for (a convolution layout each,
                           cuDNN making a plan or not) */
} imgd_cuda_tune_cost;
/* Fills *c for be. IMGD_E_INVALID_ARG when be is not a cuda backend. */
imgd_status imgd_cuda_tune_costs(const imgd_backend *be, imgd_cuda_tune_cost *c);

/* Name of device 0 (e.g. "NVIDIA H100 80GB HBM3") into buf; "" on failure. */
void imgd_cuda_device_name(char *buf, size_t cap);

/* Measures the card's dense fp16 GEMM throughput through cuBLASLt (fp16 inputs and output,
 * f32 accumulation) on an m x n x k problem, best of `reps` timed runs after a warm-up.
 * Returns IMGD_OK with *tflops, IMGD_E_NOMEM, IMGD_E_DEVICE (naming the failing call). */
imgd_status imgd_cuda_gemm_f16_tflops(int32_t m, int32_t n, int32_t k, int32_t reps,
                                      double *tflops);

#endif
