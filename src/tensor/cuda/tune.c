/* What the tuners (attention_tune.c, conv2d.c, gemm_lt.c) share: a cache of choices by key,
 * trial buffers with two events, the time of a run on the backend's stream between them, and
 * the choices kept on disk across processes (IMGD_CUDA_TUNE_CACHE). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
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

/* ---- the choices on disk (IMGD_CUDA_TUNE_CACHE=FILE) -------------------------------------------
 * A header naming the card and the cuBLASLt / cuDNN versions the choices were measured with, then
 * per tuner (attention, convolution, GEMM) its item size, item count and items as they are held
 * (keys and picks: plain data; a cuBLASLt algorithm may be stored and reused with the same cuBLAS
 * version). A file for another card or library version, or another build's item layout, is
 * ignored (and replaced by the next save); an unreadable one is reported once and ignored. */

#define TUNE_MAGIC     "IMGDTUN1"
#define TUNE_ITEMS_MAX ((uint32_t)1 << 20)

typedef struct tune_head {
    char     magic[8];
    char     device[256];
    uint64_t lt_version, dnn_version;
    uint32_t n_tuners;
    uint32_t pad;
} tune_head;

static size_t tuner_item_size(int t) {
    return t == CUDA_TUNER_ATTN   ? cuda_attn_pick_size()
           : t == CUDA_TUNER_CONV ? cuda_conv_pick_size()
                                  : cuda_gemm_pick_size();
}

static void tune_head_of(const cuda_backend *cb, tune_head *h) {
    struct cudaDeviceProp p;
    memset(h, 0, sizeof *h);
    memcpy(h->magic, TUNE_MAGIC, sizeof h->magic);
    if (cudaGetDeviceProperties(&p, cb->device) == cudaSuccess)
        (void)snprintf(h->device, sizeof h->device, "%s", p.name);
    else
        (void)cudaGetLastError();
    h->lt_version = (uint64_t)cublasLtGetVersion();
#ifdef IMGD_HAVE_CUDNN
    h->dnn_version = (uint64_t)cudnnGetVersion();
#endif
    h->n_tuners = CUDA_TUNER_N;
}

void cuda_tune_load(cuda_backend *cb) {
    const char *path = getenv("IMGD_CUDA_TUNE_CACHE");
    if (!path || !*path || strcmp(path, "0") == 0) return;
    cb->tune_path = imgd_strdup(path);
    if (!cb->tune_path) return;
    FILE *f = fopen(path, "rb");
    if (!f) return; /* none yet: the first save makes it */
    tune_head h, want;
    tune_head_of(cb, &want);
    bool ok   = fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, want.magic, sizeof h.magic) == 0;
    bool same = ok && memcmp(&h, &want, sizeof h) == 0;
    for (int t = 0; same && t < CUDA_TUNER_N; t++) {
        uint32_t sz = 0, n = 0;
        ok = fread(&sz, sizeof sz, 1, f) == 1 && fread(&n, sizeof n, 1, f) == 1 &&
             n <= TUNE_ITEMS_MAX && sz > 0 && sz <= 4096;
        if (!ok) break;
        cuda_tune_cache *c    = &cb->picks[t];
        bool             mine = sz == tuner_item_size(t);
        for (uint32_t i = 0; ok && i < n; i++) {
            unsigned char item[4096];
            ok = fread(item, sz, 1, f) == 1;
            if (!ok || !mine || cuda_tune_find(c, item, sz)) continue;
            void *dst = cuda_tune_add(c, sz);
            if (dst) memcpy(dst, item, sz);
        }
        cb->tune_saved[t] = c->n;
    }
    (void)fclose(f);
    if (!ok)
        IMGD_LOG(IMGD_LOG_WARN, "cuda", "tune",
                 "IMGD_CUDA_TUNE_CACHE: %s is not a tuning cache or is cut short; it is ignored "
                 "and rewritten",
                 path);
    else if (cb->verbose && same)
        fprintf(stderr, "cuda: tuning cache %s: %zu attention, %zu convolution, %zu GEMM choices\n",
                path, cb->picks[CUDA_TUNER_ATTN].n, cb->picks[CUDA_TUNER_CONV].n,
                cb->picks[CUDA_TUNER_GEMM].n);
    else if (cb->verbose)
        fprintf(stderr,
                "cuda: tuning cache %s was made for another card or library version; "
                "it is replaced at the next save\n",
                path);
}

void cuda_tune_save(cuda_backend *cb) {
    if (!cb->tune_path) return;
    bool grew = false;
    for (int t = 0; t < CUDA_TUNER_N; t++) grew = grew || cb->picks[t].n != cb->tune_saved[t];
    if (!grew) return;
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.%ld.tmp", cb->tune_path, (long)getpid()) >= (int)sizeof tmp)
        return;
    tune_head h;
    tune_head_of(cb, &h);
    FILE *f  = fopen(tmp, "wb");
    bool  ok = f && fwrite(&h, sizeof h, 1, f) == 1;
    for (int t = 0; ok && t < CUDA_TUNER_N; t++) {
        const cuda_tune_cache *c  = &cb->picks[t];
        uint32_t               sz = (uint32_t)tuner_item_size(t), n = (uint32_t)c->n;
        if (c->n && c->item_size != sz) n = 0; /* not this build's items: none written */
        ok = fwrite(&sz, sizeof sz, 1, f) == 1 && fwrite(&n, sizeof n, 1, f) == 1 &&
             (n == 0 || fwrite(c->items, sz, n, f) == n);
    }
    if (f && fclose(f) != 0) ok = false;
    if (ok && rename(tmp, cb->tune_path) == 0) {
        for (int t = 0; t < CUDA_TUNER_N; t++) cb->tune_saved[t] = cb->picks[t].n;
        return;
    }
    (void)remove(tmp);
    if (!cb->tune_save_failed)
        IMGD_LOG(IMGD_LOG_WARN, "cuda", "tune",
                 "IMGD_CUDA_TUNE_CACHE: cannot write %s (%s); the choices stay in memory only",
                 cb->tune_path, strerror(errno));
    cb->tune_save_failed = true;
}
