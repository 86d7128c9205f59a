/* A small persistent thread pool for compute kernels (STYLE T3).
 *
 * The pool owns n_threads - 1 worker threads; the thread that calls imgd_pool_run is the
 * n-th participant, so a pool of 1 runs everything inline. A run splits the index range
 * [0, n) into one contiguous chunk per participant (chunk i is [i*n/T, (i+1)*n/T)) and calls
 * fn once per non-empty chunk. Nothing is allocated on the run path.
 *
 * Workers spin briefly after each run (so back-to-back kernels start fast) and then sleep
 * on a condition variable, so an idle pool costs no CPU.
 *
 * Thread-safety: imgd_pool_run may be called from any thread; concurrent callers are
 * serialised. A call made from inside a running task (nested) runs inline on the calling
 * worker, so kernels may call helpers that use the pool. */
#ifndef IMGD_BASE_POOL_H
#define IMGD_BASE_POOL_H

#include "base/base.h"

typedef struct imgd_pool imgd_pool;

/* Task body: process indices [begin, end). */
typedef void (*imgd_pool_fn)(void *ctx, size_t begin, size_t end);

/* Task body that also receives the participant index tid in [0, imgd_pool_size(pool)),
 * unique among the calls of one run (use it to pick per-thread scratch). */
typedef void (*imgd_pool_tid_fn)(void *ctx, size_t begin, size_t end, uint32_t tid);

/* Creates a pool of n_threads participants (1..256; 0 = the number of online CPUs).
 * out: written only on success; free with imgd_pool_free.
 * Returns IMGD_OK, IMGD_E_INVALID_ARG (n_threads > 256 or out NULL), IMGD_E_NOMEM, or
 * IMGD_E_INTERNAL when a thread cannot be started (nothing is leaked). */
imgd_status imgd_pool_new(uint32_t n_threads, imgd_pool **out);

/* Number of participants (workers + the caller). */
uint32_t imgd_pool_size(const imgd_pool *pool);

/* Runs fn over [0, n) and returns when every chunk has finished. n == 0 is a no-op.
 * pool may be NULL: then fn(ctx, 0, n) runs inline. */
void imgd_pool_run(imgd_pool *pool, size_t n, imgd_pool_fn fn, void *ctx);

/* Same as imgd_pool_run with the participant index passed to fn. */
void imgd_pool_run_tid(imgd_pool *pool, size_t n, imgd_pool_tid_fn fn, void *ctx);

/* Dynamic variant: participants repeatedly claim the next `grain` indices (grain 0 = 1)
 * from a shared counter until [0, n) is exhausted, so a participant slowed down by other
 * load on its core takes fewer indices. fn may be called several times per participant,
 * each time with its tid. */
void imgd_pool_run_dynamic(imgd_pool *pool, size_t n, size_t grain, imgd_pool_tid_fn fn, void *ctx);

/* Stops and joins the workers. NULL is a no-op. Must not be called while a run is active. */
void imgd_pool_free(imgd_pool *pool);

#endif
