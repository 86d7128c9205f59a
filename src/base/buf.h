/* Growable byte buffer with a cap (STYLE O4): exceeding it is IMGD_E_TOO_LARGE. */
#ifndef IMGD_BASE_BUF_H
#define IMGD_BASE_BUF_H

#include "base/base.h"

typedef struct imgd_buf {
    char  *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t alloc;
    size_t cap;
} imgd_buf;

void        imgd_buf_init(imgd_buf *b, size_t cap);
imgd_status imgd_buf_append(imgd_buf *b, const void *p, size_t n);
imgd_status imgd_buf_puts(imgd_buf *b, const char *s);
imgd_status imgd_buf_printf(imgd_buf *b, const char *fmt, ...) IMGD_PRINTF(2, 3);
/* Appends s as a quoted JSON string. */
imgd_status imgd_buf_json_str(imgd_buf *b, const char *s);
/* Hands the heap string to the caller (free with imgd_free); the buffer is reset. */
char *imgd_buf_take(imgd_buf *b);
void  imgd_buf_free(imgd_buf *b);

#endif
