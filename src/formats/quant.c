/* PLACEHOLDER: being written. */
#include "formats/quant.h"

#include "base/error.h"

imgd_status imgd_quant_dequantize(imgd_dtype dt, const void *src, uint64_t n_blocks, float *dst) {
    IMGD_UNUSED(src);
    IMGD_UNUSED(n_blocks);
    IMGD_UNUSED(dst);
    return imgd_fail(IMGD_E_UNSUPPORTED, "dequantization of %s not implemented", imgd_dtype_name(dt));
}
