/* What the tuners (attention_tune.c, conv2d.c, gemm_lt.c) share: a cache of choices by key,
 * trial buffers with two events, and the time of a run on the backend's stream between them. */
#include <stdio.h>
#include <string.h>
#include <time.h>

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

bool cuda_tune_room(size_t bytes, size_t *free_bytes) {
    size_t all  = 0;
    *free_bytes = 0;
    if (cudaMemGetInfo(free_bytes, &all) != cudaSuccess) {
        (void)cudaGetLastError();
        *free_bytes = 0;
        return false;
    }
    return bytes <= CUDA_TUNE_BYTES_MAX && bytes + CUDA_TUNE_SPARE <= *free_bytes;
}

double cuda_now_s(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool cuda_tune_bufs_new(cuda_backend *cb, int32_t tuner, size_t bytes, cuda_tune_bufs *b, char *why,
                        size_t why_cap) {
    memset(b, 0, sizeof *b);
    double      t0 = cuda_now_s();
    cudaError_t e  = cudaMalloc((void **)&b->buf, bytes);
    if (e == cudaSuccess) e = cudaMemsetAsync(b->buf, 0, bytes, cb->stream);
    if (e == cudaSuccess) e = cudaEventCreate(&b->e0);
    if (e == cudaSuccess) e = cudaEventCreate(&b->e1);
    if (e == cudaSuccess) {
        b->cb    = cb;
        b->tuner = tuner;
        b->t0    = t0;
        return true;
    }
    (void)snprintf(why, why_cap, "no %.1f MiB of device memory to time it in (%s)",
                   (double)bytes / (1024.0 * 1024.0), cudaGetErrorString(e));
    (void)cudaGetLastError();
    cuda_tune_bufs_free(b);
    return false;
}

void cuda_tune_bufs_free(cuda_tune_bufs *b) {
    if (b->cb && b->tuner >= 0 && b->tuner < CUDA_TUNER_N) {
        b->cb->tune_s[b->tuner] += cuda_now_s() - b->t0;
        b->cb->tune_n[b->tuner]++;
    }
    if (b->e0) (void)cudaEventDestroy(b->e0);
    if (b->e1) (void)cudaEventDestroy(b->e1);
    if (b->buf) (void)cudaFree(b->buf);
    memset(b, 0, sizeof *b);
}

float cuda_tune_time(cuda_backend *cb, const cuda_tune_bufs *b, bool (*run)(void *ctx), void *ctx) {
    if (!run(ctx)) return -1.0f; /* warm-up */
    if (cudaEventRecord(b->e0, cb->stream) != cudaSuccess) return -1.0f;
    for (int r = 0; r < CUDA_TUNE_REPS; r++)
        if (!run(ctx)) return -1.0f;
    float ms = 0.0f;
    if (cudaEventRecord(b->e1, cb->stream) != cudaSuccess ||
        cudaEventSynchronize(b->e1) != cudaSuccess ||
        cudaEventElapsedTime(&ms, b->e0, b->e1) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1.0f;
    }
    return ms / (float)CUDA_TUNE_REPS;
}
