/* Logging: the library never prints; it calls the sink (STYLE L1-L3). */
#ifndef IMGD_BASE_LOG_H
#define IMGD_BASE_LOG_H

#include "base/base.h"

extern imgd_log_level imgd_log_min_level;

/* Emits one JSON-line event. Use IMGD_LOG so arguments are not evaluated when filtered. */
void imgd_log_emit(imgd_log_level level, const char *component, const char *event, const char *fmt,
                   ...) IMGD_PRINTF(4, 5);

#define IMGD_LOG(lvl, comp, event, ...)                                                            \
    do {                                                                                           \
        if ((lvl) < imgd_log_min_level) break;                                                     \
        imgd_log_emit((lvl), (comp), (event), __VA_ARGS__);                                        \
    } while (0)

/* Sets (NULL clears) the calling thread's request id, added as "request_id" to every line
 * this thread logs until cleared. The string is copied (up to 39 bytes). */
void imgd_log_request_id_set(const char *id);

/* Appends s to out as a JSON string body (no quotes), escaping as needed; truncates at
 * cap with a valid result. Returns bytes written (excluding NUL). */
size_t imgd_json_escape(char *out, size_t cap, const char *s);

#endif
