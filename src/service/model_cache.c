/* Memory cache of loaded models: LRU under a byte budget, refcounts, single-flight loads. */
#include "service/model_cache.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"

typedef enum slot_state {
    SLOT_LOADING = 0,
    SLOT_READY   = 1,
    SLOT_FAILED  = 2,
} slot_state;

typedef struct slot {
    struct slot *next;
    char        *key;
    void        *obj;
    uint64_t     bytes;    /* resident bytes (the estimate while loading) */
    uint64_t     last_use; /* tick of the last acquire or release */
    double       load_s;
    int32_t      refs;
    int32_t      waiters; /* callers waiting on this load */
    slot_state   state;
    imgd_status  fail_status; /* SLOT_FAILED */
    char         fail_msg[512];
    bool         unload_pending;
} slot;

struct imgd_mcache {
    imgd_mcache_params p;
    pthread_mutex_t    mu;
    pthread_cond_t     cv; /* a load finished */
    slot              *slots;
    uint64_t           tick, bytes, loads, evictions, hits;
};

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

imgd_status imgd_mcache_new(const imgd_mcache_params *p, imgd_mcache **out) {
    if (!p || !p->load || !p->free || !out) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_mcache_new: NULL argument or function");
    }
    imgd_mcache *c = imgd_calloc(1, sizeof *c);
    if (!c) return imgd_fail(IMGD_E_NOMEM, "model cache: out of memory");
    c->p = *p;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    *out = c;
    return IMGD_OK;
}

static void slot_unlink(imgd_mcache *c, slot *s) {
    for (slot **pp = &c->slots; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->next = NULL;
}

/* Frees a chain of unlinked slots (their objects through the owner); no lock held. */
static void free_chain(imgd_mcache *c, slot *s) {
    while (s) {
        slot *n = s->next;
        if (s->obj) c->p.free(c->p.user, s->key, s->obj);
        IMGD_LOG(IMGD_LOG_INFO, "service.cache", "unloaded", "%s (%.1f MiB)", s->key,
                 (double)s->bytes / 1048576.0);
        imgd_free(s->key);
        imgd_free(s);
        s = n;
    }
}

void imgd_mcache_free(imgd_mcache *c) {
    if (!c) return;
    slot *all = c->slots;
    c->slots  = NULL;
    free_chain(c, all);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    imgd_free(c);
}

static slot *find(imgd_mcache *c, const char *key) {
    for (slot *s = c->slots; s; s = s->next) {
        if (s->state != SLOT_FAILED && strcmp(s->key, key) == 0) return s;
    }
    return NULL;
}

/* Bytes held for the objects outside them (counted once). Called with mu held. */
static uint64_t shared_bytes(const imgd_mcache *c) {
    return c->p.shared ? c->p.shared(c->p.user) : 0;
}

/* Unlinks unreferenced ready slots, least recently used first, until need more bytes fit the
 * budget; returns them as a chain to free after unlocking. Shared bytes are read once: an
 * evicted object's share of them is returned only when it is freed, so eviction may go one
 * object further than needed while shared components are held. */
static slot *evict_for(imgd_mcache *c, uint64_t need) {
    slot    *out    = NULL;
    uint64_t shared = shared_bytes(c);
    while (c->p.budget && c->bytes + shared + need > c->p.budget) {
        slot *v = NULL;
        for (slot *s = c->slots; s; s = s->next) {
            if (s->state == SLOT_READY && s->refs == 0 && (!v || s->last_use < v->last_use)) v = s;
        }
        if (!v) break;
        slot_unlink(c, v);
        c->bytes -= v->bytes;
        c->evictions++;
        v->next = out;
        out     = v;
    }
    return out;
}

/* Waits for s (loading) to finish; returns its outcome. Called and returns with mu held. */
static imgd_status wait_load(imgd_mcache *c, slot *s, void **obj) {
    s->waiters++;
    while (s->state == SLOT_LOADING) pthread_cond_wait(&c->cv, &c->mu);
    s->waiters--;
    if (s->state == SLOT_READY) {
        s->refs++;
        s->last_use = ++c->tick;
        c->hits++;
        *obj = s->obj;
        return IMGD_OK;
    }
    imgd_status st = imgd_fail(s->fail_status, "%s", s->fail_msg);
    if (s->waiters == 0) {
        slot_unlink(c, s);
        imgd_free(s->key);
        imgd_free(s);
    }
    return st;
}

/* Runs the load of s (state LOADING, estimate counted in c->bytes); mu NOT held. */
static imgd_status run_load(imgd_mcache *c, slot *s, uint64_t estimate, void **obj) {
    void       *o     = NULL;
    uint64_t    bytes = 0;
    double      t0    = mono_s();
    imgd_status st    = c->p.load(c->p.user, s->key, &o, &bytes);
    double      secs  = mono_s() - t0;
    pthread_mutex_lock(&c->mu);
    c->bytes -= estimate;
    slot *trim = NULL;
    if (st == IMGD_OK) {
        s->obj      = o;
        s->bytes    = bytes;
        s->load_s   = secs;
        s->refs     = 1;
        s->last_use = ++c->tick;
        s->state    = SLOT_READY;
        c->bytes += bytes;
        c->loads++;
        trim = evict_for(c, 0);
        if (c->p.budget && c->bytes + shared_bytes(c) > c->p.budget) {
            IMGD_LOG(IMGD_LOG_WARN, "service.cache", "over_budget",
                     "%.1f MiB resident, budget %.1f MiB: models in use cannot be evicted",
                     (double)(c->bytes + shared_bytes(c)) / 1048576.0,
                     (double)c->p.budget / 1048576.0);
        }
        *obj = o;
    } else {
        s->state       = SLOT_FAILED;
        s->fail_status = st;
        (void)imgd_fmt(s->fail_msg, sizeof s->fail_msg, "%s", imgd_last_error());
        if (s->waiters == 0) {
            slot_unlink(c, s);
            imgd_free(s->key);
            imgd_free(s);
        }
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    free_chain(c, trim);
    return st;
}

imgd_status imgd_mcache_acquire(imgd_mcache *c, const char *key, uint64_t bytes_estimate,
                                void **obj) {
    if (!c || !key || !obj) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_mcache_acquire: NULL");
    if (c->p.budget && bytes_estimate > c->p.budget) {
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "model '%s' needs about %.1f MiB, more than the whole memory budget "
                         "(%.1f MiB); raise --memory-budget",
                         key, (double)bytes_estimate / 1048576.0, (double)c->p.budget / 1048576.0);
    }
    pthread_mutex_lock(&c->mu);
    slot *s = find(c, key);
    if (s && s->state == SLOT_READY) {
        s->refs++;
        s->last_use = ++c->tick;
        c->hits++;
        *obj = s->obj;
        pthread_mutex_unlock(&c->mu);
        return IMGD_OK;
    }
    if (s) {
        imgd_status st = wait_load(c, s, obj);
        pthread_mutex_unlock(&c->mu);
        return st;
    }
    s = imgd_calloc(1, sizeof *s);
    if (s) s->key = imgd_strdup(key);
    if (!s || !s->key) {
        pthread_mutex_unlock(&c->mu);
        imgd_free(s);
        return imgd_fail(IMGD_E_NOMEM, "model cache: out of memory");
    }
    slot *victims = evict_for(c, bytes_estimate);
    s->state      = SLOT_LOADING;
    s->bytes      = bytes_estimate;
    s->next       = c->slots;
    c->slots      = s;
    c->bytes += bytes_estimate;
    pthread_mutex_unlock(&c->mu);
    free_chain(c, victims);
    return run_load(c, s, bytes_estimate, obj);
}

void imgd_mcache_release(imgd_mcache *c, const char *key) {
    if (!c || !key) return;
    pthread_mutex_lock(&c->mu);
    slot *s    = find(c, key);
    slot *trim = NULL;
    if (s && s->state == SLOT_READY && s->refs > 0) {
        s->refs--;
        s->last_use = ++c->tick;
        if (s->refs == 0 && s->unload_pending) {
            slot_unlink(c, s);
            c->bytes -= s->bytes;
            trim = s;
        } else {
            trim = evict_for(c, 0);
        }
    }
    pthread_mutex_unlock(&c->mu);
    free_chain(c, trim);
}

bool imgd_mcache_unload(imgd_mcache *c, const char *key) {
    if (!c || !key) return false;
    pthread_mutex_lock(&c->mu);
    slot *s    = find(c, key);
    slot *gone = NULL;
    if (s && s->state == SLOT_READY && s->refs == 0) {
        slot_unlink(c, s);
        c->bytes -= s->bytes;
        gone = s;
    } else if (s) {
        s->unload_pending = true;
    }
    pthread_mutex_unlock(&c->mu);
    free_chain(c, gone);
    return s != NULL;
}

bool imgd_mcache_loaded(imgd_mcache *c, const char *key) {
    if (!c || !key) {
        return false;
    }
    pthread_mutex_lock(&c->mu);
    slot *s  = find(c, key);
    bool  ok = s && s->state == SLOT_READY;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void imgd_mcache_each(imgd_mcache *c, imgd_mcache_each_fn fn, void *user) {
    if (!c) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    /* most recently used first: repeatedly take the newest not yet listed */
    uint64_t below = UINT64_MAX;
    for (;;) {
        slot *best = NULL;
        for (slot *s = c->slots; s; s = s->next) {
            if (s->state == SLOT_READY && s->last_use < below &&
                (!best || s->last_use > best->last_use)) {
                best = s;
            }
        }
        if (!best) break;
        fn(user, best->key, best->obj, best->bytes, best->refs, best->load_s);
        below = best->last_use;
    }
    pthread_mutex_unlock(&c->mu);
}

void imgd_mcache_stats_get(imgd_mcache *c, imgd_mcache_stats *out) {
    memset(out, 0, sizeof *out);
    if (!c) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    out->budget    = c->p.budget;
    out->shared    = shared_bytes(c);
    out->bytes     = c->bytes + out->shared;
    out->loads     = c->loads;
    out->evictions = c->evictions;
    out->hits      = c->hits;
    for (slot *s = c->slots; s; s = s->next) out->count += s->state == SLOT_READY;
    pthread_mutex_unlock(&c->mu);
}
