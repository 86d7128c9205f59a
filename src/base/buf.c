#include "base/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"

void imgd_buf_init(imgd_buf *b, size_t cap) {
    b->data  = NULL;
    b->len   = 0;
    b->alloc = 0;
    b->cap   = cap;
}

static imgd_status reserve(imgd_buf *b, size_t extra) {
    size_t need;
    if (!imgd_size_add(b->len, extra, &need) || !imgd_size_add(need, 1, &need) ||
        (b->cap && need > b->cap + 1))
        return imgd_fail(IMGD_E_TOO_LARGE, "buffer would exceed its cap of %zu bytes", b->cap);
    if (need <= b->alloc) return IMGD_OK;
    size_t na = b->alloc ? b->alloc : 256;
    while (na < need) na = na > SIZE_MAX / 2 ? need : na * 2;
    char *nd = imgd_realloc(b->data, na);
    if (!nd) return imgd_fail(IMGD_E_NOMEM, "out of memory growing a buffer to %zu bytes", na);
    b->data  = nd;
    b->alloc = na;
    return IMGD_OK;
}

imgd_status imgd_buf_append(imgd_buf *b, const void *p, size_t n) {
    imgd_status st = reserve(b, n);
    if (st != IMGD_OK) return st;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return IMGD_OK;
}

imgd_status imgd_buf_puts(imgd_buf *b, const char *s) {
    return imgd_buf_append(b, s, strlen(s));
}

imgd_status imgd_buf_printf(imgd_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int  n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return imgd_fail(IMGD_E_INTERNAL, "bad format string");
    if ((size_t)n < sizeof tmp) return imgd_buf_append(b, tmp, (size_t)n);
    imgd_status st = reserve(b, (size_t)n);
    if (st != IMGD_OK) return st;
    va_start(ap, fmt);
    (void)vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap); /* sized by the first pass */
    va_end(ap);
    b->len += (size_t)n;
    return IMGD_OK;
}

imgd_status imgd_buf_json_str(imgd_buf *b, const char *s) {
    imgd_status st = imgd_buf_append(b, "\"", 1);
    for (; st == IMGD_OK && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            st        = imgd_buf_append(b, e, 2);
        } else if (c == '\n') {
            st = imgd_buf_append(b, "\\n", 2);
        } else if (c == '\t') {
            st = imgd_buf_append(b, "\\t", 2);
        } else if (c == '\r') {
            st = imgd_buf_append(b, "\\r", 2);
        } else if (c < 0x20 || c == 0x7f) {
            st = imgd_buf_printf(b, "\\u%04x", c);
        } else {
            st = imgd_buf_append(b, s, 1);
        }
    }
    if (st == IMGD_OK) st = imgd_buf_append(b, "\"", 1);
    return st;
}

char *imgd_buf_take(imgd_buf *b) {
    char *d = b->data;
    if (!d) d = imgd_strdup("");
    b->data  = NULL;
    b->len   = 0;
    b->alloc = 0;
    return d;
}

void imgd_buf_free(imgd_buf *b) {
    imgd_free(b->data);
    b->data  = NULL;
    b->len   = 0;
    b->alloc = 0;
}
