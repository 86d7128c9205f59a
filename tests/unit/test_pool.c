/* base.pool: every index runs exactly once, chunks are contiguous, nesting runs inline. */
#include <stdatomic.h>
#include <string.h>

#include "base/alloc.h"
#include "base/pool.h"
#include "test.h"

#define N_MAX 10007

typedef struct count_ctx {
    atomic_int hits[N_MAX];
    atomic_int calls;
    atomic_int tid_seen[8];
} count_ctx;

static void count_fn(void *p, size_t b, size_t e) {
    count_ctx *c = p;
    atomic_fetch_add(&c->calls, 1);
    for (size_t i = b; i < e; i++) atomic_fetch_add(&c->hits[i], 1);
}

static void count_tid_fn(void *p, size_t b, size_t e, uint32_t tid) {
    count_ctx *c = p;
    if (tid < 8) atomic_fetch_add(&c->tid_seen[tid], 1);
    count_fn(p, b, e);
}

static count_ctx *ctx_new(void) {
    count_ctx *c = imgd_calloc(1, sizeof *c);
    CHECK(c != NULL);
    return c;
}

static int all_once(count_ctx *c, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&c->hits[i]) != 1) return 0;
    for (size_t i = n; i < N_MAX; i++)
        if (atomic_load(&c->hits[i]) != 0) return 0;
    return 1;
}

static void test_pool_runs_every_index_once(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(4, &p), IMGD_OK);
    static const size_t sizes[] = {1, 2, 3, 4, 5, 7, 100, 1001, N_MAX};
    for (size_t k = 0; k < IMGD_ARRAY_LEN(sizes); k++) {
        count_ctx *c = ctx_new();
        if (!c) break;
        imgd_pool_run(p, sizes[k], count_fn, c);
        CHECK_MSG(all_once(c, sizes[k]), "n=%zu", sizes[k]);
        CHECK(atomic_load(&c->calls) <= 4);
        imgd_free(c);
    }
    imgd_pool_free(p);
}

static void test_pool_zero_items_is_noop(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(2, &p), IMGD_OK);
    count_ctx *c = ctx_new();
    if (c) {
        imgd_pool_run(p, 0, count_fn, c);
        CHECK_EQ_INT(atomic_load(&c->calls), 0);
        imgd_free(c);
    }
    imgd_pool_free(p);
}

static void test_pool_tid_unique_per_run(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(3, &p), IMGD_OK);
    CHECK_EQ_INT(imgd_pool_size(p), 3);
    count_ctx *c = ctx_new();
    if (c) {
        imgd_pool_run_tid(p, 999, count_tid_fn, c);
        CHECK(all_once(c, 999));
        for (int t = 0; t < 3; t++) CHECK_EQ_INT(atomic_load(&c->tid_seen[t]), 1);
        imgd_free(c);
    }
    imgd_pool_free(p);
}

typedef struct nest_ctx {
    imgd_pool *pool;
    count_ctx *inner;
} nest_ctx;

static void nest_fn(void *p, size_t b, size_t e) {
    nest_ctx *n = p;
    for (size_t i = b; i < e; i++) imgd_pool_run(n->pool, 10, count_fn, &n->inner[i]);
}

static void test_pool_nested_run_executes_inline(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(2, &p), IMGD_OK);
    nest_ctx n = {p, imgd_calloc(4, sizeof(count_ctx))};
    CHECK(n.inner != NULL);
    if (n.inner) {
        imgd_pool_run(p, 4, nest_fn, &n);
        for (int i = 0; i < 4; i++) {
            CHECK(all_once(&n.inner[i], 10));
            CHECK_EQ_INT(atomic_load(&n.inner[i].calls), 1);
        }
        imgd_free(n.inner);
    }
    imgd_pool_free(p);
}

static void test_pool_single_thread_and_null_run_inline(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(1, &p), IMGD_OK);
    count_ctx *c = ctx_new();
    if (c) {
        imgd_pool_run(p, 50, count_fn, c);
        CHECK(all_once(c, 50));
        CHECK_EQ_INT(atomic_load(&c->calls), 1);
        imgd_free(c);
    }
    c = ctx_new();
    if (c) {
        imgd_pool_run(NULL, 50, count_fn, c);
        CHECK(all_once(c, 50));
        imgd_free(c);
    }
    imgd_pool_free(p);
    imgd_pool_free(NULL);
}

static void sum_fn(void *p, size_t b, size_t e) {
    atomic_long *s = p;
    long         l = 0;
    for (size_t i = b; i < e; i++) l += (long)i;
    atomic_fetch_add(s, l);
}

static void test_pool_many_back_to_back_runs(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(0, &p), IMGD_OK);
    CHECK(imgd_pool_size(p) >= 1);
    int bad = 0;
    for (int r = 0; r < 20000; r++) {
        atomic_long s = 0;
        size_t      n = (size_t)(r % 97) + 1;
        imgd_pool_run(p, n, sum_fn, &s);
        if (atomic_load(&s) != (long)(n * (n - 1) / 2)) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    imgd_pool_free(p);
}

/* More participants than cores, so workers are often not running when a run starts or
 * still finishing the last one when the next begins: every index still runs once per run,
 * and no tid is given twice within a run (1,000 static and dynamic runs). */
typedef struct stress_ctx {
    atomic_int hits[600];
    atomic_int tid_calls[8];
    bool       dynamic;
} stress_ctx;

static void stress_fn(void *p, size_t b, size_t e, uint32_t tid) {
    stress_ctx *c = p;
    if (tid < 8 && !c->dynamic) atomic_fetch_add(&c->tid_calls[tid], 1);
    for (size_t i = b; i < e; i++) atomic_fetch_add(&c->hits[i], 1);
}

static void test_pool_oversubscribed_runs_each_index_once(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(8, &p), IMGD_OK);
    stress_ctx *c = imgd_calloc(1, sizeof *c);
    CHECK(c != NULL);
    int bad_cover = 0, bad_tid = 0;
    for (int r = 0; c && r < 1000; r++) {
        size_t n = (size_t)(r * 37 % 599) + 1;
        memset(c, 0, sizeof *c);
        c->dynamic = r % 3 == 2;
        if (c->dynamic)
            imgd_pool_run_dynamic(p, n, (size_t)(r % 5), stress_fn, c);
        else
            imgd_pool_run_tid(p, n, stress_fn, c);
        for (size_t i = 0; i < 600; i++)
            if (atomic_load(&c->hits[i]) != (i < n ? 1 : 0)) bad_cover++;
        for (int t = 0; t < 8; t++)
            if (atomic_load(&c->tid_calls[t]) > 1) bad_tid++;
    }
    CHECK_EQ_INT(bad_cover, 0);
    CHECK_EQ_INT(bad_tid, 0);
    imgd_free(c);
    imgd_pool_free(p);
}

static void test_pool_dynamic_claims_cover_range_once(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(3, &p), IMGD_OK);
    static const size_t grains[] = {0, 1, 7, 64, 5000};
    for (size_t k = 0; k < IMGD_ARRAY_LEN(grains); k++) {
        count_ctx *c = ctx_new();
        if (!c) break;
        imgd_pool_run_dynamic(p, 1001, grains[k], count_tid_fn, c);
        CHECK_MSG(all_once(c, 1001), "grain=%zu", grains[k]);
        for (int t = 3; t < 8; t++) CHECK_EQ_INT(atomic_load(&c->tid_seen[t]), 0);
        imgd_free(c);
    }
    imgd_pool_free(p);
}

static void test_pool_rejects_bad_args(void) {
    imgd_pool *p = NULL;
    CHECK_STATUS(imgd_pool_new(1000, &p), IMGD_E_INVALID_ARG);
    CHECK(p == NULL);
    CHECK_STATUS(imgd_pool_new(2, NULL), IMGD_E_INVALID_ARG);
}

int main(void) {
    RUN(test_pool_runs_every_index_once);
    RUN(test_pool_zero_items_is_noop);
    RUN(test_pool_tid_unique_per_run);
    RUN(test_pool_nested_run_executes_inline);
    RUN(test_pool_single_thread_and_null_run_inline);
    RUN(test_pool_many_back_to_back_runs);
    RUN(test_pool_dynamic_claims_cover_range_once);
    RUN(test_pool_oversubscribed_runs_each_index_once);
    RUN(test_pool_rejects_bad_args);
    TEST_END();
}
