/* Memory cache of loaded models: budget eviction, refcounts, single-flight loads. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "service/model_cache.h"
#include "test.h"

typedef struct fake {
    atomic_int loads, frees;
    int        delay_ms;
    bool       fail;
    char       freed[16][16]; /* keys in free order */
    atomic_int shared_users;  /* live objects whose key's second letter is 's' */
} fake;

/* The key's size is its first digit times 10 bytes ("6a" = 60 bytes). */
static imgd_status fake_load(void *user, const char *key, void **obj, uint64_t *bytes) {
    fake *f = user;
    atomic_fetch_add(&f->loads, 1);
    if (f->delay_ms) {
        struct timespec ts = {0, (long)f->delay_ms * 1000000L};
        (void)nanosleep(&ts, NULL);
    }
    if (f->fail) return imgd_fail(IMGD_E_FORMAT, "fake load of %s failed", key);
    int *o = imgd_malloc(sizeof *o);
    if (!o) return IMGD_E_NOMEM;
    *o   = (unsigned char)key[0];
    *obj = o;
    if (key[1] == 's') atomic_fetch_add(&f->shared_users, 1);
    *bytes = (uint64_t)(key[0] - '0') * 10;
    return IMGD_OK;
}

static void fake_free(void *user, const char *key, void *obj) {
    fake *f = user;
    int   i = atomic_fetch_add(&f->frees, 1);
    if (i < 16) (void)snprintf(f->freed[i], sizeof f->freed[i], "%s", key);
    if (key[1] == 's') atomic_fetch_sub(&f->shared_users, 1);
    imgd_free(obj);
}

static imgd_mcache *make(fake *f, uint64_t budget) {
    memset(f, 0, sizeof *f);
    imgd_mcache_params p = {budget, fake_load, fake_free, f, NULL};
    imgd_mcache       *c = NULL;
    CHECK_STATUS(imgd_mcache_new(&p, &c), IMGD_OK);
    return c;
}

static void test_model_cache_evicts_least_recently_used(void) {
    fake         f;
    imgd_mcache *c = make(&f, 100);
    void        *o;
    CHECK_STATUS(imgd_mcache_acquire(c, "4a", 40, &o), IMGD_OK);
    imgd_mcache_release(c, "4a");
    CHECK_STATUS(imgd_mcache_acquire(c, "4b", 40, &o), IMGD_OK);
    imgd_mcache_release(c, "4b");
    CHECK_STATUS(imgd_mcache_acquire(c, "4a", 40, &o), IMGD_OK); /* a is now newer than b */
    imgd_mcache_release(c, "4a");
    CHECK_STATUS(imgd_mcache_acquire(c, "4c", 40, &o), IMGD_OK);
    imgd_mcache_release(c, "4c");
    CHECK_EQ_INT(f.frees, 1);
    CHECK_STR(f.freed[0], "4b");
    CHECK(imgd_mcache_loaded(c, "4a"));
    CHECK(!imgd_mcache_loaded(c, "4b"));
    imgd_mcache_stats s;
    imgd_mcache_stats_get(c, &s);
    CHECK_EQ_INT(s.bytes, 80);
    CHECK_EQ_INT(s.loads, 3);
    CHECK_EQ_INT(s.hits, 1);
    CHECK_EQ_INT(s.evictions, 1);
    imgd_mcache_free(c);
    CHECK_EQ_INT(f.frees, 3);
}

static void test_model_cache_never_evicts_a_model_in_use(void) {
    fake         f;
    imgd_mcache *c = make(&f, 100);
    void        *a, *b;
    CHECK_STATUS(imgd_mcache_acquire(c, "6a", 60, &a), IMGD_OK);
    CHECK_STATUS(imgd_mcache_acquire(c, "6b", 60, &b), IMGD_OK); /* over budget: a is in use */
    CHECK_EQ_INT(f.frees, 0);
    CHECK(imgd_mcache_loaded(c, "6a"));
    imgd_mcache_release(c, "6b"); /* b is the only unreferenced one: trimmed */
    CHECK_EQ_INT(f.frees, 1);
    CHECK_STR(f.freed[0], "6b");
    CHECK(imgd_mcache_loaded(c, "6a"));
    imgd_mcache_release(c, "6a"); /* within budget now: stays */
    CHECK(imgd_mcache_loaded(c, "6a"));
    CHECK_STATUS(imgd_mcache_acquire(c, "5c", 50, &b), IMGD_OK);
    CHECK(!imgd_mcache_loaded(c, "6a"));
    imgd_mcache_release(c, "5c");
    CHECK_STATUS(imgd_mcache_acquire(c, "9z", 200, &b), IMGD_E_TOO_LARGE);
    CHECK(strstr(imgd_last_error(), "--memory-budget") != NULL);
    imgd_mcache_free(c);
}

static void test_model_cache_unload_waits_for_the_last_release(void) {
    fake         f;
    imgd_mcache *c = make(&f, 0);
    void        *o;
    CHECK_STATUS(imgd_mcache_acquire(c, "1a", 10, &o), IMGD_OK);
    CHECK(imgd_mcache_unload(c, "1a"));
    CHECK_EQ_INT(f.frees, 0);
    imgd_mcache_release(c, "1a");
    CHECK_EQ_INT(f.frees, 1);
    CHECK(!imgd_mcache_unload(c, "1a"));
    imgd_mcache_free(c);
}

typedef struct race {
    imgd_mcache *c;
    void        *obj;
    imgd_status  st;
} race;

static void *race_acquire(void *arg) {
    race *r = arg;
    r->st   = imgd_mcache_acquire(r->c, "3x", 30, &r->obj);
    return NULL;
}

/* Objects with 's' as second letter share one 30-byte component, held while any lives. */
static uint64_t fake_shared(void *user) {
    fake *f = user;
    return atomic_load(&f->shared_users) > 0 ? 30 : 0;
}

static void test_model_cache_counts_shared_bytes_once(void) {
    fake f;
    memset(&f, 0, sizeof f);
    imgd_mcache_params p = {100, fake_load, fake_free, &f, fake_shared};
    imgd_mcache       *c = NULL;
    void              *o;
    CHECK_STATUS(imgd_mcache_new(&p, &c), IMGD_OK);
    /* 30 + 30 own bytes and 30 shared: 90 fit the budget of 100 (counted per object,
       120 would not) */
    CHECK_STATUS(imgd_mcache_acquire(c, "3sa", 30, &o), IMGD_OK);
    imgd_mcache_release(c, "3sa");
    CHECK_STATUS(imgd_mcache_acquire(c, "3sb", 30, &o), IMGD_OK);
    imgd_mcache_release(c, "3sb");
    CHECK_EQ_INT(f.frees, 0);
    imgd_mcache_stats s;
    imgd_mcache_stats_get(c, &s);
    CHECK_EQ_INT(s.bytes, 90);
    CHECK_EQ_INT(s.shared, 30);
    /* 20 more do not fit: the least recently used goes, the shared part stays for 3sb */
    CHECK_STATUS(imgd_mcache_acquire(c, "2x", 20, &o), IMGD_OK);
    imgd_mcache_release(c, "2x");
    CHECK_EQ_INT(f.frees, 1);
    CHECK_STR(f.freed[0], "3sa");
    imgd_mcache_stats_get(c, &s);
    CHECK_EQ_INT(s.bytes, 80);
    CHECK_EQ_INT(s.shared, 30);
    imgd_mcache_free(c);
    CHECK_EQ_INT(f.shared_users, 0);
}

static void test_model_cache_concurrent_loads_load_once(void) {
    fake         f;
    imgd_mcache *c = make(&f, 1000);
    f.delay_ms     = 100;
    race      r[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (race){c, NULL, IMGD_E_INTERNAL};
        CHECK(pthread_create(&t[i], NULL, race_acquire, &r[i]) == 0);
    }
    for (int i = 0; i < 8; i++) (void)pthread_join(t[i], NULL);
    CHECK_EQ_INT(f.loads, 1);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ_INT(r[i].st, IMGD_OK);
        CHECK(r[i].obj == r[0].obj);
        imgd_mcache_release(c, "3x");
    }
    /* a shared failure: every waiter gets it, one load ran; a later acquire retries */
    f.fail = true;
    for (int i = 0; i < 8; i++) {
        r[i] = (race){c, NULL, IMGD_E_INTERNAL};
        CHECK(imgd_mcache_unload(c, "3x") || i > 0);
        CHECK(pthread_create(&t[i], NULL, race_acquire, &r[i]) == 0);
    }
    for (int i = 0; i < 8; i++) (void)pthread_join(t[i], NULL);
    CHECK_EQ_INT(f.loads, 2);
    for (int i = 0; i < 8; i++) CHECK_EQ_INT(r[i].st, IMGD_E_FORMAT);
    f.fail     = false;
    f.delay_ms = 0;
    void *o;
    CHECK_STATUS(imgd_mcache_acquire(c, "3x", 30, &o), IMGD_OK);
    CHECK_EQ_INT(f.loads, 3);
    imgd_mcache_release(c, "3x");
    imgd_mcache_free(c);
}

int main(void) {
    RUN(test_model_cache_evicts_least_recently_used);
    RUN(test_model_cache_never_evicts_a_model_in_use);
    RUN(test_model_cache_unload_waits_for_the_last_release);
    RUN(test_model_cache_concurrent_loads_load_once);
    RUN(test_model_cache_counts_shared_bytes_once);
    TEST_END();
}
