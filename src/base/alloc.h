/* Heap wrappers: every heap allocation in imgd goes through these (STYLE O2). */
#ifndef IMGD_BASE_ALLOC_H
#define IMGD_BASE_ALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void *imgd_malloc(size_t n);
void *imgd_calloc(size_t count, size_t size);
void *imgd_realloc(void *p, size_t n);
void  imgd_free(void *p);
char *imgd_strdup(const char *s);
char *imgd_strndup(const char *s, size_t n);

/* Bytes currently allocated through the wrappers (for metrics). */
uint64_t imgd_alloc_bytes_in_use(void);

/* Checked size arithmetic (STYLE O3): false on overflow, *out untouched then. */
static inline bool imgd_size_mul(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}
static inline bool imgd_size_add(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}
static inline bool imgd_u64_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}
static inline bool imgd_u64_add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

#endif
