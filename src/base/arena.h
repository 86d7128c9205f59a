/* Chunked bump allocator with a byte cap (STYLE O5). */
#ifndef IMGD_BASE_ARENA_H
#define IMGD_BASE_ARENA_H

#include "base/base.h"

typedef struct imgd_arena_chunk imgd_arena_chunk;

typedef struct imgd_arena {
    imgd_arena_chunk *head;
    size_t            used; /* bytes handed out plus chunk overhead */
    size_t            cap;  /* 0 = unlimited */
} imgd_arena;

void imgd_arena_init(imgd_arena *a, size_t cap);
/* 16-byte aligned; NULL when the cap would be exceeded or on OOM. Zeroed. */
void *imgd_arena_alloc(imgd_arena *a, size_t n);
char *imgd_arena_strndup(imgd_arena *a, const char *s, size_t n);
void  imgd_arena_reset(imgd_arena *a);
void  imgd_arena_free(imgd_arena *a);

#endif
