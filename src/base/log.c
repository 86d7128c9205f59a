#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

imgd_log_level imgd_log_min_level = IMGD_LOG_INFO;

static imgd_log_fn        g_sink;
static void              *g_sink_user;
static _Thread_local char t_request_id[40];

void imgd_log_request_id_set(const char *id) {
    size_t n = 0;
    if (id) {
        for (; id[n] && n + 1 < sizeof t_request_id; n++) t_request_id[n] = id[n];
    }
    t_request_id[n] = '\0';
}

static const char *const k_level_names[] = {"debug", "info", "warn", "error"};
_Static_assert(IMGD_ARRAY_LEN(k_level_names) == IMGD_LOG_LEVEL_COUNT, "log level names");

void imgd_log_set(imgd_log_fn fn, void *user) {
    g_sink      = fn;
    g_sink_user = user;
}

void imgd_log_level_set(imgd_log_level level) {
    imgd_log_min_level = level;
}

size_t imgd_json_escape(char *out, size_t cap, const char *s) {
    size_t n = 0;
    if (cap == 0) return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char          tmp[8];
        size_t        k;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            k      = 2;
        } else if (c == '\n') {
            tmp[0] = '\\';
            tmp[1] = 'n';
            k      = 2;
        } else if (c < 0x20) {
            k = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", c);
        } else {
            tmp[0] = (char)c;
            k      = 1;
        }
        if (n + k >= cap) break;
        for (size_t i = 0; i < k; i++) out[n++] = tmp[i];
    }
    out[n] = '\0';
    return n;
}

void imgd_log_emit(imgd_log_level level, const char *component, const char *event, const char *fmt,
                   ...) {
    char    msg[1024], esc[2048], line[2560];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap); /* a long message is cut, not lost */
    va_end(ap);
    imgd_json_escape(esc, sizeof esc, msg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    /* A line cut at sizeof line is still emitted. */
    char rid[64] = "";
    if (t_request_id[0]) {
        char rid_esc[48];
        imgd_json_escape(rid_esc, sizeof rid_esc, t_request_id);
        (void)snprintf(rid, sizeof rid, ",\"request_id\":\"%s\"", rid_esc);
    }
    (void)snprintf(line, sizeof line,
                   "{\"ts\":%.3f,\"level\":\"%s\",\"component\":\"%s\",\"event\":\"%s\"%s,"
                   "\"msg\":\"%s\"}",
                   t, k_level_names[level], component, event, rid, esc);
    if (g_sink) {
        g_sink(level, line, g_sink_user);
    } else {
        fprintf(stderr, "%s\n", line);
    }
}
