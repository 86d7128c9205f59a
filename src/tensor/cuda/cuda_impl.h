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
    imgd_gpu_math  math;      /* operand type of matmul/conv2d GEMMs */
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

/* matmul.c: matmul, and the GEMM helpers conv2d.c shares. */
bool cuda_matmul_supported(const imgd_tensor *n);
/* Sets n->scratch_bytes (operands rounded to fp16/bf16) when the math is not f32. */
void        cuda_matmul_prepare(cuda_backend *cb, imgd_tensor *n);
imgd_status cuda_matmul(cuda_backend *cb, const imgd_tensor *n, const char *what);

size_t         cuda_align_up(size_t n);               /* to 256 bytes */
bool           cuda_math_low(const cuda_backend *cb); /* fp16/bf16 GEMM operands */
int32_t        cuda_math_cuk(const cuda_backend *cb); /* their cuk_dtype */
cudaDataType_t cuda_math_type(const cuda_backend *cb);
size_t         cuda_math_size(const cuda_backend *cb); /* their bytes per element */
/* Writes t (any layout) contiguously in the GEMM operand type at device address dst. */
imgd_status cuda_to_math(cuda_backend *cb, const imgd_tensor *t, void *dst, const char *what);
/* Prefills n (a GEMM output) with its bias src[2] (out[i] = bias[(i / inner) % nb]) and sets
 * *beta to 1, or leaves it and sets *beta to 0 without a bias. */
imgd_status cuda_gemm_out_init(cuda_backend *cb, const imgd_tensor *n, int64_t inner, int64_t nb,
                               const char *what, float *beta);
/* Column-major C = op_a(A) op_b(B) + beta C over `batches` strided batches, A and B in the
 * GEMM operand type, C f32, f32 accumulation (cublasGemm[StridedBatched]Ex). */
imgd_status cuda_gemm(cuda_backend *cb, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m,
                      int64_t n, int64_t k, const void *A, int64_t lda, int64_t stride_a,
                      const void *B, int64_t ldb, int64_t stride_b, float beta, float *C,
                      int64_t ldc, int64_t stride_c, int64_t batches, const char *what);

/* conv2d.c */
bool cuda_conv2d_supported(const imgd_tensor *n);
/* Sets n->scratch_bytes (im2col columns, rounded weights). */
void        cuda_conv2d_prepare(cuda_backend *cb, imgd_tensor *n);
imgd_status cuda_conv2d(cuda_backend *cb, const imgd_tensor *n, const char *what);

#endif
