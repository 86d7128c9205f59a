/* GGML block quantization formats: dequantization to f32 (the block decoders are in
 * quant_blocks.h, shared with the CUDA kernels). */
#include "formats/quant.h"

#include "base/error.h"
#include "formats/dtype.h"

#define QB_FN      static
#define QB_HALF(u) imgd_f16_to_f32(u)
#include "formats/quant_blocks.h"

/* ---- dispatch ---------------------------------------------------------------------- */

typedef void (*deq_fn)(const uint8_t *block, float *y);

/* One row per supported dtype; block sizes must equal the dtype traits table (checked
 * at run time below and by tests/unit/test_quant.c). */
static const struct {
    imgd_dtype dt;
    uint32_t   block_elems, block_bytes;
    deq_fn     fn;
} k_deq[] = {
    {IMGD_DTYPE_Q4_0, QB_QK, 18, qb_deq_q4_0},    {IMGD_DTYPE_Q4_1, QB_QK, 20, qb_deq_q4_1},
    {IMGD_DTYPE_Q5_0, QB_QK, 22, qb_deq_q5_0},    {IMGD_DTYPE_Q5_1, QB_QK, 24, qb_deq_q5_1},
    {IMGD_DTYPE_Q8_0, QB_QK, 34, qb_deq_q8_0},    {IMGD_DTYPE_Q8_1, QB_QK, 36, qb_deq_q8_1},
    {IMGD_DTYPE_Q2_K, QB_QK_K, 84, qb_deq_q2_k},  {IMGD_DTYPE_Q3_K, QB_QK_K, 110, qb_deq_q3_k},
    {IMGD_DTYPE_Q4_K, QB_QK_K, 144, qb_deq_q4_k}, {IMGD_DTYPE_Q5_K, QB_QK_K, 176, qb_deq_q5_k},
    {IMGD_DTYPE_Q6_K, QB_QK_K, 210, qb_deq_q6_k},
};

imgd_status imgd_quant_dequantize(imgd_dtype dt, const void *src, uint64_t n_blocks, float *dst) {
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_deq); i++) {
        if (k_deq[i].dt != dt) continue;
        const imgd_dtype_traits *t = imgd_dtype_traits_of(dt);
        IMGD_ASSERT(t->block_bytes == k_deq[i].block_bytes &&
                    t->block_elems == k_deq[i].block_elems);
        const uint8_t *p = src;
        for (uint64_t b = 0; b < n_blocks; b++) {
            k_deq[i].fn(p, dst);
            p += k_deq[i].block_bytes;
            dst += k_deq[i].block_elems;
        }
        return IMGD_OK;
    }
    return imgd_fail(IMGD_E_UNSUPPORTED, "dequantization of %s is not supported",
                     imgd_dtype_name(dt));
}
