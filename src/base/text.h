/* Small text helpers: UTF-8 validation, string hash map. */
#ifndef IMGD_BASE_TEXT_H
#define IMGD_BASE_TEXT_H

#include <stdbool.h>

#include "base/base.h"

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF)
 * and contains no NUL. */
bool imgd_utf8_valid(const char *s, size_t n);

/* snprintf into a fixed buffer: true when the whole result fit (on truncation the
 * buffer holds the NUL-terminated prefix). Used for names and messages where a
 * truncated result is harmless (a lookup that then misses) or checked by the caller. */
bool imgd_fmt(char *dst, size_t cap, const char *fmt, ...) IMGD_PRINTF(3, 4);

/* FNV-1a over a NUL-terminated string. */
uint64_t imgd_str_hash(const char *s);

/* Open-addressing map from borrowed string keys to size_t values. */
typedef struct imgd_strmap {
    const char **keys;
    size_t      *vals;
    size_t       n, alloc; /* alloc is a power of two */
} imgd_strmap;

void imgd_strmap_init(imgd_strmap *m);
/* Inserts key (borrowed: must outlive the map). IMGD_E_INVALID_ARG when already present
 * (the existing value goes to *existing when non-NULL); IMGD_E_NOMEM. */
imgd_status imgd_strmap_put(imgd_strmap *m, const char *key, size_t val, size_t *existing);
bool        imgd_strmap_get(const imgd_strmap *m, const char *key, size_t *val);
void        imgd_strmap_free(imgd_strmap *m);

#endif
