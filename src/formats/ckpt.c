/* PLACEHOLDER: being written (zip + restricted unpickler). */
#include "base/error.h"
#include "formats/weights.h"

imgd_status imgd_ckpt_read(const char *name, const uint8_t *data, uint64_t size,
                           const imgd_open_limits *lim, imgd_weights *w) {
    IMGD_UNUSED(data);
    IMGD_UNUSED(size);
    IMGD_UNUSED(lim);
    IMGD_UNUSED(w);
    return imgd_fail(IMGD_E_UNSUPPORTED, "%s: checkpoints not yet readable", name);
}
