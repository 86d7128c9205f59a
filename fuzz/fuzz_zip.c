/* libFuzzer target: the zip reader on arbitrary bytes. Every entry of an accepted archive
 * is extracted (CRC-checked, inflated under a 1 MiB cap) and its first and last bytes are
 * touched; then the same bytes go through the whole checkpoint reader (zip + pickle +
 * tensor views) with small caps. */
#include <stdint.h>

#include "base/alloc.h"
#include "formats/weights.h"
#include "formats/zip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void extract_all(const imgd_zip *z) {
    for (size_t i = 0; i < imgd_zip_count(z); i++) {
        const uint8_t *d     = NULL;
        uint64_t       n     = 0;
        void          *owned = NULL;
        if (imgd_zip_extract(z, i, 1 << 20, &d, &n, &owned) != IMGD_OK) continue;
        if (n) {
            volatile uint8_t sink = d[0];
            sink ^= d[n - 1];
            (void)sink;
        }
        imgd_free(owned);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    imgd_zip *z = NULL;
    if (imgd_zip_open("fuzz.zip", data, size, &z) == IMGD_OK) {
        extract_all(z);
        imgd_zip_free(z);
    }
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    lim.header_size_max  = 1 << 20;
    lim.pickle_ops_max   = 1 << 20;
    lim.inflate_size_max = 1 << 22;
    imgd_weights *w      = NULL;
    if (imgd_weights_new(IMGD_FORMAT_CKPT, "fuzz.ckpt", &w) != IMGD_OK) return 0;
    if (imgd_ckpt_read("fuzz.ckpt", data, size, &lim, w) == IMGD_OK) {
        for (size_t i = 0; i < imgd_weights_tensor_count(w); i++) {
            imgd_tensor_info t;
            if (imgd_weights_tensor(w, i, &t) == IMGD_OK && t.nbytes) {
                volatile uint8_t sink = ((const uint8_t *)t.data)[0];
                sink ^= ((const uint8_t *)t.data)[t.nbytes - 1];
                (void)sink;
            }
        }
    }
    imgd_weights_free(w);
    return 0;
}
