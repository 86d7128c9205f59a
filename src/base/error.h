/* Thread-local error text and the one helper that sets it (STYLE E2/E3). */
#ifndef IMGD_BASE_ERROR_H
#define IMGD_BASE_ERROR_H

#include "base/base.h"

/* Sets the thread-local message and returns status: `return imgd_fail(IMGD_E_FORMAT, …)`. */
imgd_status imgd_fail(imgd_status status, const char *fmt, ...) IMGD_PRINTF(2, 3);

/* Prepends "prefix: " to the current message (adds context on the way up). */
imgd_status imgd_fail_prefix(imgd_status status, const char *fmt, ...) IMGD_PRINTF(2, 3);

/* Clears the thread-local message. */
void imgd_error_clear(void);

#endif
