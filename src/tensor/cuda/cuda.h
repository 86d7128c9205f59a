/* The CUDA backend ("cuda"), built when CMake finds the CUDA toolkit (IMGD_HAVE_CUDA).
 *
 * Memory: the planned activation buffer and every allocation come from cudaMalloc. Weights
 * the graph reads are uploaded once, in prepare (imgd_graph_plan), into device copies kept
 * until the graph is released or re-planned; inputs are uploaded from their bound host memory
 * at the start of every compute; outputs are read back with imgd_graph_read_f32 (the
 * backend's read hook). Kernels: cuBLAS GEMMs for matmul, cuDNN (or im2col + cuBLAS) for
 * conv2d, a tiled online-softmax attention kernel or batched cuBLAS GEMMs for attention, and
 * one CUDA kernel per other op, all f32 (no TF32) by default; params->gpu_math F16/BF16
 * gives matmul, conv2d and attention fp16/bf16 operands on tensor cores (f32 accumulation,
 * f32 results). Quantized weights are dequantized on the host at plan time.
 *
 * Paths, each switchable off from the environment (read when the backend is created), so a
 * GPU run can fall back if one is wrong:
 *   IMGD_CUDA_CUDNN=0           conv2d as im2col + cuBLAS instead of cuDNN (builds with cuDNN)
 *   IMGD_CUDA_ATTN=flash|gemm   attention kernel; default (auto): gemm in f16/bf16, flash in f32
 *   IMGD_CUDA_DIRECT_WEIGHTS=0  f16/bf16: round weights per run from their f32 cast instead of
 *                               reading them in the GEMM type (converted once at plan time)
 *
 * Debugging: IMGD_CUDA_SYNC=1 synchronises after every node, so an asynchronous kernel
 * failure is reported with the node's index and op. IMGD_CUDA_DEVICE=N picks the device
 * (default 0). IMGD_CUDA_VERBOSE=1 prints, per planned graph, how many conv2d/attention nodes
 * took each path, how many weights GEMMs read directly and how many casts were skipped. */
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

/* Name of device 0 (e.g. "NVIDIA H100 80GB HBM3") into buf; "" on failure. */
void imgd_cuda_device_name(char *buf, size_t cap);

/* Measures the card's dense fp16 GEMM throughput through cuBLASLt (fp16 inputs and output,
 * f32 accumulation) on an m x n x k problem, best of `reps` timed runs after a warm-up.
 * Returns IMGD_OK with *tflops, IMGD_E_NOMEM, IMGD_E_DEVICE (naming the failing call). */
imgd_status imgd_cuda_gemm_f16_tflops(int32_t m, int32_t n, int32_t k, int32_t reps,
                                      double *tflops);

#endif
