/* PLACEHOLDER */
#include "base/error.h"
#include "formats/weights.h"

imgd_status imgd_diffusers_read(const char *dir, const imgd_open_limits *lim, imgd_weights *w) {
    IMGD_UNUSED(lim);
    IMGD_UNUSED(w);
    return imgd_fail(IMGD_E_UNSUPPORTED, "%s: diffusers folders not yet readable", dir);
}
