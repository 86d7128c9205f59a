#include "base/base.h"

const char *imgd_version(void) {
    return IMGD_VERSION_STRING;
}
