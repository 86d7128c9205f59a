/* libFuzzer target: the GGUF reader on arbitrary bytes. On success it touches the first
 * and last byte of every tensor and dequantizes the first and last block of every
 * quantized one, so quant.c runs on fuzzer-chosen blocks too. */
#include <stdint.h>

#include "base/error.h"
#include "formats/dtype.h"
#include "formats/quant.h"
#include "formats/weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch(const imgd_tensor_info *t) {
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(t->dtype);
    float                    out[256];
    if (!t->nbytes) return;
    if (tr->is_quant) {
        const uint8_t *p = t->data;
        (void)imgd_quant_dequantize(t->dtype, p, 1, out);
        (void)imgd_quant_dequantize(t->dtype, p + t->nbytes - tr->block_bytes, 1, out);
    } else {
        volatile uint8_t sink = ((const uint8_t *)t->data)[0];
        sink ^= ((const uint8_t *)t->data)[t->nbytes - 1];
        (void)sink;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    imgd_weights *w = NULL;
    if (imgd_weights_new(IMGD_FORMAT_GGUF, "fuzz.gguf", &w) != IMGD_OK) return 0;
    if (imgd_gguf_read("fuzz.gguf", data, size, &lim, w) == IMGD_OK) {
        for (size_t i = 0; i < imgd_weights_tensor_count(w); i++) {
            imgd_tensor_info t;
            if (imgd_weights_tensor(w, i, &t) == IMGD_OK) touch(&t);
        }
    }
    imgd_weights_free(w);
    return 0;
}
