/* What the plan-time tuners (attention_tune.c, conv2d.c) share: a cache of choices by key,
 * and the time of a run on the backend's stream between two events. */
#include <string.h>

#include "base/alloc.h"
#include "cuda_impl.h"

void *cuda_tune_find(const cuda_tune_cache *c, const void *key, size_t key_size) {
    for (size_t i = 0; i < c->n; i++) {
        unsigned char *item = c->items + i * c->item_size;
        if (memcmp(item, key, key_size) == 0) return item;
    }
    return NULL;
}

void *cuda_tune_add(cuda_tune_cache *c, size_t item_size) {
    if (c->item_size != item_size) {
        if (c->n) return NULL; /* one item type per cache */
        c->item_size = item_size;
    }
    if (c->n == c->cap) {
        size_t         cap = c->cap ? c->cap * 2 : 16;
        unsigned char *p   = imgd_realloc(c->items, cap * item_size);
        if (!p) return NULL;
        c->items = p;
        c->cap   = cap;
    }
    unsigned char *item = c->items + c->n++ * item_size;
    memset(item, 0, item_size);
    return item;
}

void cuda_tune_free(cuda_tune_cache *c) {
    imgd_free(c->items);
    memset(c, 0, sizeof *c);
}

float cuda_tune_time(cuda_backend *cb, bool (*run)(void *ctx), void *ctx, cudaEvent_t e0,
                     cudaEvent_t e1) {
    if (!run(ctx)) return -1.0f; /* warm-up */
    if (cudaEventRecord(e0, cb->stream) != cudaSuccess) return -1.0f;
    for (int r = 0; r < CUDA_TUNE_REPS; r++)
        if (!run(ctx)) return -1.0f;
    float ms = 0.0f;
    if (cudaEventRecord(e1, cb->stream) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
        cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1.0f;
    }
    return ms / (float)CUDA_TUNE_REPS;
}
