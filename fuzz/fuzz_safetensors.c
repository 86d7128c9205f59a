/* libFuzzer target: the safetensors reader on arbitrary bytes; touches every tensor. */
#include <stdint.h>

#include "base/error.h"
#include "formats/weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    lim.header_size_max = 1u << 20;
    imgd_weights *w     = NULL;
    if (imgd_weights_new(IMGD_FORMAT_SAFETENSORS, "fuzz", &w) != IMGD_OK) return 0;
    if (imgd_safetensors_read("fuzz", data, size, &lim, w) == IMGD_OK) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < imgd_weights_tensor_count(w); i++) {
            imgd_tensor_info t;
            imgd_weights_tensor(w, i, &t);
            if (t.nbytes)
                sink ^= ((const uint8_t *)t.data)[0] ^ ((const uint8_t *)t.data)[t.nbytes - 1];
        }
        (void)sink;
    }
    imgd_weights_free(w);
    return 0;
}
