/* Persistent thread pool: one generation counter wakes the workers, one atomic counter
 * reports completion. Workers spin for a short while before sleeping on a condvar. */
#include "base/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"

#define POOL_THREADS_MAX 256
/* Spin iterations before sleeping: long enough to catch the next kernel of a graph,
 * short enough (tens of microseconds) not to steal a core from oneDNN/OpenBLAS. */
#define POOL_SPIN 2000

typedef struct worker {
    imgd_pool *pool;
    uint32_t   tid;
    pthread_t  thread;
} worker;

struct imgd_pool {
    uint32_t n; /* participants, including the caller */
    worker  *workers;
    uint32_t n_started;

    pthread_mutex_t run_lock; /* serialises callers of imgd_pool_run */
    pthread_mutex_t mu;       /* guards sleeping and waking */
    pthread_cond_t  wake;     /* workers wait here for a new generation */
    pthread_cond_t  done_cv;  /* the caller waits here for completion */

    atomic_uint_fast64_t gen;     /* incremented once per run */
    atomic_uint          pending; /* workers that have not finished the current run */
    atomic_bool          quit;
    bool                 caller_sleeping;

    /* the current run (written before gen is bumped, read after) */
    size_t               n_items;
    size_t               grain; /* 0: static chunks; else dynamic claims of this size */
    atomic_uint_fast64_t next;  /* dynamic: next unclaimed index */
    imgd_pool_fn         fn;
    imgd_pool_tid_fn     fn_tid;
    void                *ctx;
};

static _Thread_local bool g_in_pool_task;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_chunk(imgd_pool *p, uint32_t tid) {
    if (p->grain) {
        for (;;) {
            size_t b = (size_t)atomic_fetch_add_explicit(&p->next, p->grain, memory_order_relaxed);
            if (b >= p->n_items) return;
            size_t e = b + p->grain < p->n_items ? b + p->grain : p->n_items;
            p->fn_tid(p->ctx, b, e, tid);
        }
    }
    /* balanced split: the first n % T chunks get one extra index */
    size_t n = p->n_items, t = p->n, q = n / t, r = n % t;
    size_t b = q * tid + (tid < r ? tid : r);
    size_t e = b + q + (tid < r ? 1 : 0);
    if (b >= e) return;
    if (p->fn_tid)
        p->fn_tid(p->ctx, b, e, tid);
    else
        p->fn(p->ctx, b, e);
}

/* Waits until gen differs from seen (or quit); returns the new generation. */
static uint64_t wait_gen(imgd_pool *p, uint64_t seen) {
    for (int i = 0; i < POOL_SPIN; i++) {
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen || atomic_load(&p->quit)) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    uint64_t g;
    while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->quit))
        pthread_cond_wait(&p->wake, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg) {
    worker    *w = arg;
    imgd_pool *p = w->pool;
    /* gen is 0 when the pool is created; a worker that starts late still runs the
     * first generation because it compares against 0, not against a fresh load. */
    uint64_t seen  = 0;
    g_in_pool_task = true;
    for (;;) {
        seen = wait_gen(p, seen);
        if (atomic_load(&p->quit)) break;
        run_chunk(p, w->tid);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_sleeping) pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

static void stop_workers(imgd_pool *p) {
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < p->n_started; i++) pthread_join(p->workers[i].thread, NULL);
    p->n_started = 0;
}

imgd_status imgd_pool_new(uint32_t n_threads, imgd_pool **out) {
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_pool_new: out is NULL");
    if (n_threads > POOL_THREADS_MAX)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_pool_new: n_threads %u exceeds %d", n_threads,
                         POOL_THREADS_MAX);
    if (n_threads == 0) {
        long c    = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c < 1 ? 1 : c > POOL_THREADS_MAX ? POOL_THREADS_MAX : (uint32_t)c;
    }
    imgd_pool *p = imgd_calloc(1, sizeof *p);
    if (!p) return imgd_fail(IMGD_E_NOMEM, "imgd_pool_new: out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->quit, false);
    if (n_threads > 1) {
        p->workers = imgd_calloc(n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            imgd_pool_free(p);
            return imgd_fail(IMGD_E_NOMEM, "imgd_pool_new: out of memory");
        }
    }
    for (uint32_t i = 0; i + 1 < n_threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].tid  = i + 1;
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            imgd_pool_free(p);
            return imgd_fail(IMGD_E_INTERNAL, "imgd_pool_new: cannot start worker thread %u", i);
        }
        p->n_started++;
    }
    *out = p;
    return IMGD_OK;
}

uint32_t imgd_pool_size(const imgd_pool *pool) {
    return pool ? pool->n : 1;
}

static void run_any(imgd_pool *p, size_t n, size_t grain, imgd_pool_fn fn, imgd_pool_tid_fn fn_tid,
                    void *ctx) {
    if (n == 0) return;
    if (!p || p->n == 1 || g_in_pool_task || n == 1) {
        if (fn_tid)
            fn_tid(ctx, 0, n, 0);
        else
            fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    p->n_items = n;
    p->grain   = grain;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->fn     = fn;
    p->fn_tid = fn_tid;
    p->ctx    = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    g_in_pool_task = true;
    run_chunk(p, 0);
    g_in_pool_task = false;

    bool finished = false;
    for (int i = 0; i < POOL_SPIN && !finished; i++) {
        finished = atomic_load_explicit(&p->pending, memory_order_acquire) == 0;
        if (!finished) cpu_relax();
    }
    if (!finished) {
        pthread_mutex_lock(&p->mu);
        p->caller_sleeping = true;
        while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
            pthread_cond_wait(&p->done_cv, &p->mu);
        p->caller_sleeping = false;
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&p->run_lock);
}

void imgd_pool_run(imgd_pool *pool, size_t n, imgd_pool_fn fn, void *ctx) {
    run_any(pool, n, 0, fn, NULL, ctx);
}

void imgd_pool_run_tid(imgd_pool *pool, size_t n, imgd_pool_tid_fn fn, void *ctx) {
    run_any(pool, n, 0, NULL, fn, ctx);
}

void imgd_pool_run_dynamic(imgd_pool *pool, size_t n, size_t grain, imgd_pool_tid_fn fn,
                           void *ctx) {
    run_any(pool, n, grain ? grain : 1, NULL, fn, ctx);
}

void imgd_pool_free(imgd_pool *pool) {
    if (!pool) return;
    stop_workers(pool);
    pthread_cond_destroy(&pool->done_cv);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->run_lock);
    imgd_free(pool->workers);
    imgd_free(pool);
}
