// Dequantization of ggml blocks on the device with the host's block decoders
// (formats/quant_blocks.h), so a weight expands to the same bits on both: one thread per
// block, staged through shared memory so loads and stores are coalesced.
#include "device_impl.h"

#define QB_FN static __device__ __forceinline__
#ifdef CUK_EMU
#    define QB_HALF(u) imgd_f16_to_f32(u)
#else
#    define QB_HALF(u) __half2float(__ushort_as_half(u))
#endif
#include "formats/quant_blocks.h"

typedef void (*qb_decode)(const uint8_t *b, float *y);

/* Blocks per CTA: one thread per block, 8192 values per CTA (256 threads for 32-value blocks,
 * 32 for 256-value super-blocks). */
#define DQ_VALUES 8192

/* A CTA expands T consecutive blocks: their bytes are loaded into shared memory by
 * consecutive threads (coalesced), each thread decodes one block from there into a padded
 * shared row (E + 1 floats: no bank conflicts), and the CTA's T * E contiguous values are
 * stored by consecutive threads (coalesced). */
template <int E, int BYTES, qb_decode DECODE>
__global__ void k_dequant(void *out, int32_t odt, const uint8_t *src, int64_t n_blocks) {
    constexpr int      T = DQ_VALUES / E;
    __shared__ uint8_t in_s[T * BYTES];
    __shared__ float   out_s[T * (E + 1)];
    const int          tid      = (int)threadIdx.x;
    const int64_t      n_chunks = (n_blocks + T - 1) / T;
    for (int64_t c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        const int64_t b0 = c * T;
        const int     nb = (int)(n_blocks - b0 < T ? n_blocks - b0 : T);
        for (int i = tid; i < nb * BYTES; i += T) in_s[i] = src[b0 * BYTES + i];
        __syncthreads();
        if (tid < nb) {
            float y[E];
            DECODE(in_s + tid * BYTES, y);
            for (int j = 0; j < E; j++) out_s[tid * (E + 1) + j] = y[j];
        }
        __syncthreads();
        for (int i = tid; i < nb * E; i += T)
            cuk_st(out, odt, b0 * E + i, out_s[(i / E) * (E + 1) + i % E]);
        __syncthreads();
    }
}

template <int E, int BYTES, qb_decode DECODE>
static cudaError_t launch_dequant(void *out, int32_t odt, const void *src, int64_t n_blocks,
                                  cudaStream_t s) {
    constexpr int T                                           = DQ_VALUES / E;
    void (*kernel)(void *, int32_t, const uint8_t *, int64_t) = k_dequant<E, BYTES, DECODE>;
    CUK_LAUNCH(kernel, cuk_grid((n_blocks + T - 1) / T), T, 0, s)
    (out, odt, static_cast<const uint8_t *>(src), n_blocks);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_dequant(void *out, int32_t odt, const void *src, int32_t qtype,
                                   int64_t n_blocks, cudaStream_t s) {
    if (n_blocks <= 0) return cudaSuccess;
    switch (qtype) {
    case CUK_Q4_0: return launch_dequant<QB_QK, 18, qb_deq_q4_0>(out, odt, src, n_blocks, s);
    case CUK_Q4_1: return launch_dequant<QB_QK, 20, qb_deq_q4_1>(out, odt, src, n_blocks, s);
    case CUK_Q5_0: return launch_dequant<QB_QK, 22, qb_deq_q5_0>(out, odt, src, n_blocks, s);
    case CUK_Q5_1: return launch_dequant<QB_QK, 24, qb_deq_q5_1>(out, odt, src, n_blocks, s);
    case CUK_Q8_0: return launch_dequant<QB_QK, 34, qb_deq_q8_0>(out, odt, src, n_blocks, s);
    case CUK_Q8_1: return launch_dequant<QB_QK, 36, qb_deq_q8_1>(out, odt, src, n_blocks, s);
    case CUK_Q2_K: return launch_dequant<QB_QK_K, 84, qb_deq_q2_k>(out, odt, src, n_blocks, s);
    case CUK_Q3_K: return launch_dequant<QB_QK_K, 110, qb_deq_q3_k>(out, odt, src, n_blocks, s);
    case CUK_Q4_K: return launch_dequant<QB_QK_K, 144, qb_deq_q4_k>(out, odt, src, n_blocks, s);
    case CUK_Q5_K: return launch_dequant<QB_QK_K, 176, qb_deq_q5_k>(out, odt, src, n_blocks, s);
    case CUK_Q6_K: return launch_dequant<QB_QK_K, 210, qb_deq_q6_k>(out, odt, src, n_blocks, s);
    default: return cudaErrorInvalidValue;
    }
}
