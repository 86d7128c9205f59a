/* The CUDA backend ("cuda"), built when CMake finds the CUDA toolkit (IMGD_HAVE_CUDA).
 *
 * Memory: the planned activation buffer and every allocation come from cudaMalloc. Weights
 * the graph reads are uploaded once, in prepare (imgd_graph_plan), into device copies kept
 * until the graph is released or re-planned; inputs are uploaded from their bound host memory
 * at the start of every compute; outputs are read back with imgd_graph_read_f32 (the
 * backend's read hook). Kernels: cuBLAS GEMMs for matmul and (after im2col) conv2d, a tiled
 * online-softmax attention kernel, and one CUDA kernel per other op, all f32 (no TF32);
 * params->gpu_math F16/BF16 rounds the GEMM operands to fp16/bf16 (f32 accumulation and
 * results). Quantized weights are dequantized on the host at plan time.
 *
 * Debugging: IMGD_CUDA_SYNC=1 synchronises after every node, so an asynchronous kernel
 * failure is reported with the node's index and op. IMGD_CUDA_DEVICE=N picks the device
 * (default 0). */
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
