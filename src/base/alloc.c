/* The only file that calls the C allocator. Each block carries a 16-byte header with its
 * size so the in-use counter is exact. With IMGD_ALLOC_DEBUG, IMGD_FAIL_ALLOC_AT=N makes
 * the N-th allocation (1-based) fail, for OOM-path testing, and IMGD_ALLOC_REPORT=1 prints
 * how many allocations the process made when it exits. */
#include "base/alloc.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR 16

static atomic_uint_fast64_t g_in_use;

#ifdef IMGD_ALLOC_DEBUG
static atomic_long g_alloc_count;
static long        g_fail_at = -1;
static atomic_int  g_fail_init; /* 0: not read yet, 1: being read, 2: ready */

static void report_count(void) {
    fprintf(stderr, "imgd_alloc_count=%ld\n", (long)atomic_load(&g_alloc_count));
}

/* Reads the environment once: IMGD_FAIL_ALLOC_AT, and IMGD_ALLOC_REPORT=1, which prints the
 * number of allocations made at exit (the OOM sweep stops there: later injection points
 * would never be reached). Other threads wait until it is done. */
static void debug_init(void) {
    int state = 0;
    if (atomic_compare_exchange_strong(&g_fail_init, &state, 1)) {
        const char *e = getenv("IMGD_FAIL_ALLOC_AT");
        g_fail_at     = e ? strtol(e, NULL, 10) : -1;
        e             = getenv("IMGD_ALLOC_REPORT");
        if (e && strcmp(e, "1") == 0) (void)atexit(report_count);
        atomic_store(&g_fail_init, 2);
        return;
    }
    while (atomic_load(&g_fail_init) != 2) {
    }
}

static bool should_fail(void) {
    if (atomic_load_explicit(&g_fail_init, memory_order_acquire) != 2) debug_init();
    long n = atomic_fetch_add(&g_alloc_count, 1) + 1;
    return g_fail_at > 0 && n == g_fail_at;
}
#else
static bool should_fail(void) {
    return false;
}
#endif

void *imgd_malloc(size_t n) {
    if (should_fail() || n > SIZE_MAX - HDR) return NULL;
    unsigned char *p = malloc(n + HDR);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    atomic_fetch_add(&g_in_use, n);
    return p + HDR;
}

void *imgd_calloc(size_t count, size_t size) {
    size_t n;
    if (!imgd_size_mul(count, size, &n)) return NULL;
    void *p = imgd_malloc(n);
    if (p) memset(p, 0, n);
    return p;
}

void *imgd_realloc(void *p, size_t n) {
    if (!p) return imgd_malloc(n);
    if (should_fail() || n > SIZE_MAX - HDR) return NULL;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t         old;
    memcpy(&old, base, sizeof old);
    unsigned char *q = realloc(base, n + HDR);
    if (!q) return NULL;
    memcpy(q, &n, sizeof n);
    atomic_fetch_sub(&g_in_use, old);
    atomic_fetch_add(&g_in_use, n);
    return q + HDR;
}

void imgd_free(void *p) {
    if (!p) return;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t         old;
    memcpy(&old, base, sizeof old);
    atomic_fetch_sub(&g_in_use, old);
    free(base);
}

char *imgd_strndup(const char *s, size_t n) {
    size_t len = strnlen(s, n);
    char  *d   = imgd_malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *imgd_strdup(const char *s) {
    return imgd_strndup(s, SIZE_MAX - 1);
}

uint64_t imgd_alloc_bytes_in_use(void) {
    return atomic_load(&g_in_use);
}
