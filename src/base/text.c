#include "base/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"

bool imgd_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t               i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t   k;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            k  = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k  = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k  = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000))
            return false;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += k + 1;
    }
    return true;
}

uint64_t imgd_str_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

void imgd_strmap_init(imgd_strmap *m) {
    memset(m, 0, sizeof *m);
}

static imgd_status grow(imgd_strmap *m) {
    size_t       na   = m->alloc ? m->alloc * 2 : 64;
    const char **keys = imgd_calloc(na, sizeof *keys);
    size_t      *vals = imgd_calloc(na, sizeof *vals);
    if (!keys || !vals) {
        imgd_free(keys);
        imgd_free(vals);
        return imgd_fail(IMGD_E_NOMEM, "out of memory growing a name table");
    }
    for (size_t i = 0; i < m->alloc; i++) {
        if (!m->keys[i]) continue;
        size_t j = imgd_str_hash(m->keys[i]) & (na - 1);
        while (keys[j]) j = (j + 1) & (na - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    imgd_free(m->keys);
    imgd_free(m->vals);
    m->keys  = keys;
    m->vals  = vals;
    m->alloc = na;
    return IMGD_OK;
}

imgd_status imgd_strmap_put(imgd_strmap *m, const char *key, size_t val, size_t *existing) {
    if ((m->n + 1) * 2 > m->alloc) {
        imgd_status st = grow(m);
        if (st != IMGD_OK) return st;
    }
    size_t j = imgd_str_hash(key) & (m->alloc - 1);
    while (m->keys[j]) {
        if (strcmp(m->keys[j], key) == 0) {
            if (existing) *existing = m->vals[j];
            return IMGD_E_INVALID_ARG;
        }
        j = (j + 1) & (m->alloc - 1);
    }
    m->keys[j] = key;
    m->vals[j] = val;
    m->n++;
    return IMGD_OK;
}

bool imgd_strmap_get(const imgd_strmap *m, const char *key, size_t *val) {
    if (!m->alloc) return false;
    size_t j = imgd_str_hash(key) & (m->alloc - 1);
    while (m->keys[j]) {
        if (strcmp(m->keys[j], key) == 0) {
            if (val) *val = m->vals[j];
            return true;
        }
        j = (j + 1) & (m->alloc - 1);
    }
    return false;
}

void imgd_strmap_free(imgd_strmap *m) {
    imgd_free(m->keys);
    imgd_free(m->vals);
    memset(m, 0, sizeof *m);
}

bool imgd_fmt(char *dst, size_t cap, const char *fmt, ...) {
    if (!cap) return false;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    if (n < 0) {
        dst[0] = '\0';
        return false;
    }
    return (size_t)n < cap;
}
