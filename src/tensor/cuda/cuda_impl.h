/* Internals shared by the CUDA backend's host files (backend.c, dispatch.c, matmul.c): the
 * backend object, status mapping for CUDA and cuBLAS calls, and device addresses.
 * Host code is C; only the kernels (*.cu, declared in kernels.h) are CUDA C++. */
#ifndef IMGD_TENSOR_CUDA_CUDA_IMPL_H
#define IMGD_TENSOR_CUDA_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdbool.h>

#include "kernels.h"
#include "tensor/backend.h"

typedef struct cuda_backend {
    imgd_backend   base;
    int            device;
    cudaStream_t   stream; /* every kernel, copy and cuBLAS call runs on it */
    cublasHandle_t blas;
    bool           sync_each; /* IMGD_CUDA_SYNC=1: synchronise and check after every node */
} cuda_backend;

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

#define CUBLAS_TRY(call, what)                                                                     \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) return cublas_fail(s_, #call, (what));                    \
    } while (0)

/* Device address of t's first element. Activations (and views of them) already hold device
 * addresses; leaves (weights, inputs) hold host addresses and are translated to their
 * device copy, which prepare keeps in the storage leaf's backend_data. */
void *cuda_dptr(const imgd_tensor *t);

/* Describes t (f32/f16/bf16, <= CUK_MAX_DIMS dims) for a kernel, at its device address. */
cuk_tensor cuda_desc(const imgd_tensor *t);

/* ---- per-op host code ---------------------------------------------------------------------- */

/* dispatch.c: everything but matmul/conv2d/dequantize. `what` names the node in errors. */
imgd_status cuda_run_op(cuda_backend *cb, const imgd_tensor *n, const char *what);
/* Whether dispatch.c / matmul.c can run n (dtype, layout and size limits). */
bool cuda_op_supported(const imgd_tensor *n);

/* matmul.c */
bool        cuda_matmul_supported(const imgd_tensor *n);
imgd_status cuda_matmul(cuda_backend *cb, const imgd_tensor *n, const char *what);
bool        cuda_conv2d_supported(const imgd_tensor *n);
/* Sets n->scratch_bytes (im2col buffer). */
void        cuda_conv2d_prepare(imgd_tensor *n);
imgd_status cuda_conv2d(cuda_backend *cb, const imgd_tensor *n, const char *what);

#endif
