#include "base/arena.h"

#include <string.h>

#include "base/alloc.h"

#define CHUNK_MIN ((size_t)64 * 1024)

struct imgd_arena_chunk {
    imgd_arena_chunk *next;
    size_t            size;
    size_t            off;
    _Alignas(16) unsigned char data[];
};

void imgd_arena_init(imgd_arena *a, size_t cap) {
    a->head = NULL;
    a->used = 0;
    a->cap  = cap;
}

void *imgd_arena_alloc(imgd_arena *a, size_t n) {
    size_t need = (n + 15) & ~(size_t)15;
    if (need < n) return NULL;
    imgd_arena_chunk *c = a->head;
    if (!c || c->size - c->off < need) {
        size_t sz = need > CHUNK_MIN ? need : CHUNK_MIN;
        size_t total;
        if (!imgd_size_add(sz, sizeof *c, &total)) return NULL;
        if (a->cap && a->used + total > a->cap) return NULL;
        c = imgd_malloc(total);
        if (!c) return NULL;
        c->next = a->head;
        c->size = sz;
        c->off  = 0;
        a->head = c;
        a->used += total;
    }
    void *p = c->data + c->off;
    c->off += need;
    memset(p, 0, n);
    return p;
}

char *imgd_arena_strndup(imgd_arena *a, const char *s, size_t n) {
    char *d = imgd_arena_alloc(a, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void imgd_arena_reset(imgd_arena *a) {
    imgd_arena_free(a);
}

void imgd_arena_free(imgd_arena *a) {
    imgd_arena_chunk *c = a->head;
    while (c) {
        imgd_arena_chunk *n = c->next;
        imgd_free(c);
        c = n;
    }
    a->head = NULL;
    a->used = 0;
}
