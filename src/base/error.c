#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define MSG_MAX 1024

static _Thread_local char g_msg[MSG_MAX];

static const char *const k_status_names[] = {
    "ok",          "invalid_argument", "out_of_memory", "io_error",     "bad_format",
    "unsupported", "too_large",        "cancelled",     "device_error", "internal_error",
    "unsafe",      "not_found",        "unauthorized",
};
_Static_assert(IMGD_ARRAY_LEN(k_status_names) == IMGD_STATUS_COUNT, "status name table");

const char *imgd_status_name(imgd_status status) {
    if ((unsigned)status >= IMGD_STATUS_COUNT) return "unknown";
    return k_status_names[status];
}

const char *imgd_last_error(void) {
    return g_msg;
}

void imgd_error_clear(void) {
    g_msg[0] = '\0';
}

imgd_status imgd_fail(imgd_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(g_msg, sizeof g_msg, fmt, ap); /* a truncated message is still useful */
    va_end(ap);
    return status;
}

imgd_status imgd_fail_prefix(imgd_status status, const char *fmt, ...) {
    char    prefix[MSG_MAX];
    char    old[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(prefix, sizeof prefix, fmt, ap); /* truncation is harmless */
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > MSG_MAX - 3) n = MSG_MAX - 3;
    memcpy(g_msg, prefix, n);
    g_msg[n]     = ':';
    g_msg[n + 1] = ' ';
    size_t rest  = MSG_MAX - (n + 2) - 1;
    size_t ol    = strnlen(old, rest);
    memcpy(g_msg + n + 2, old, ol);
    g_msg[n + 2 + ol] = '\0';
    return status;
}

_Noreturn void imgd_base_assert_fail(const char *file, int line, const char *expr) {
    imgd_log_emit(IMGD_LOG_ERROR, "base", "assert", "%s:%d: assertion failed: %s", file, line,
                  expr);
    abort();
}
