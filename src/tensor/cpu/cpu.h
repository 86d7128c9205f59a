/* The CPU backend ("cpu"): oneDNN primitives (or OpenBLAS sgemm) for matmul and conv2d,
 * created once per graph at plan time and executed at replay; hand-written vectorised
 * kernels, threaded on an imgd_pool, for everything else. Memory is host memory. */
#ifndef IMGD_TENSOR_CPU_CPU_H
#define IMGD_TENSOR_CPU_CPU_H

#include "tensor/backend.h"

/* params: n_threads/pool, math (IMGD_CPU_MATH_BF16 needs AVX-512-BF16, checked at run time
 * through oneDNN's ISA query), gemm. out: written only on success.
 * Returns IMGD_OK, IMGD_E_UNSUPPORTED (bf16 requested without the ISA), IMGD_E_INVALID_ARG,
 * IMGD_E_NOMEM, IMGD_E_DEVICE (oneDNN engine creation failed). */
imgd_status imgd_cpu_backend_new(const imgd_backend_params *params, imgd_backend **out);

/* Whether this CPU runs oneDNN's AVX-512-BF16 kernels. */
bool imgd_cpu_has_bf16(void);

#endif
