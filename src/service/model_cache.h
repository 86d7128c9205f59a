/* Memory cache of loaded models (issue 8 "Memory cache"): an LRU under a byte budget with
 * reference counts and single-flight loads. It knows nothing of models: the owner gives a
 * load and a free function, so tests drive it with fake objects.
 *
 * Rules:
 *   - acquire returns the object with its reference count raised; release lowers it. An
 *     object with references is never freed (eviction, unload and trimming skip it).
 *   - Concurrent acquires of one key load it once: the first caller loads (without the
 *     cache's lock held), the others wait for it and share its result, success or failure.
 *   - Before a load, unreferenced objects are evicted least recently used first until the
 *     new object's estimated bytes fit the budget. When objects in use keep the total over
 *     the budget, the load goes ahead (the budget is exceeded, logged as a warning) and the
 *     excess is trimmed as soon as references are released. One object larger than the
 *     whole budget is refused with IMGD_E_TOO_LARGE.
 *   - Free functions run without the cache's lock held.
 *
 * Thread-safety: every function is safe from any thread. */
#ifndef IMGD_SERVICE_MODEL_CACHE_H
#define IMGD_SERVICE_MODEL_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/base.h"

typedef struct imgd_mcache imgd_mcache;

/* Loads key. On IMGD_OK writes the object and its resident bytes. Sets imgd_last_error()
 * on failure. Called without the cache's lock held, at most once at a time per key. */
typedef imgd_status (*imgd_mcache_load_fn)(void *user, const char *key, void **obj,
                                           uint64_t *bytes);
typedef void (*imgd_mcache_free_fn)(void *user, const char *key, void *obj);

/* Bytes held outside the objects but for them (components shared between models, each
 * counted once): added to the objects' own bytes when checking the budget. Called with the
 * cache's lock held (it must not call the cache). */
typedef uint64_t (*imgd_mcache_shared_fn)(void *user);

typedef struct imgd_mcache_params {
    uint64_t              budget; /* bytes; 0 = unlimited */
    imgd_mcache_load_fn   load;   /* required */
    imgd_mcache_free_fn   free;   /* required */
    void                 *user;   /* passed to every function */
    imgd_mcache_shared_fn shared; /* may be NULL: nothing is shared */
} imgd_mcache_params;

imgd_status imgd_mcache_new(const imgd_mcache_params *p, imgd_mcache **out);
/* Frees every object (none may be in use). NULL is a no-op. */
void imgd_mcache_free(imgd_mcache *c);

/* The object of key, loading it when absent. bytes_estimate: what the load is expected to
 * take (0 = unknown), used to make room before loading. Returns IMGD_OK (*obj set, one
 * reference taken: release it), the load function's status, IMGD_E_TOO_LARGE (estimate
 * over the budget), IMGD_E_NOMEM. */
imgd_status imgd_mcache_acquire(imgd_mcache *c, const char *key, uint64_t bytes_estimate,
                                void **obj);
/* Drops one reference taken by acquire. */
void imgd_mcache_release(imgd_mcache *c, const char *key);

/* Unloads key: at once when unreferenced, else when its last reference is released.
 * Returns true when it was loaded (or loading). */
bool imgd_mcache_unload(imgd_mcache *c, const char *key);

/* Whether key is loaded (ready). */
bool imgd_mcache_loaded(imgd_mcache *c, const char *key);

/* Calls fn for every loaded object, most recently used first, with the lock held (fn must
 * not call the cache). bytes: the object's own (shared bytes are counted in stats.shared). */
typedef void (*imgd_mcache_each_fn)(void *user, const char *key, void *obj, uint64_t bytes,
                                    int32_t refs, double load_s);
void imgd_mcache_each(imgd_mcache *c, imgd_mcache_each_fn fn, void *user);

typedef struct imgd_mcache_stats {
    uint64_t budget, bytes; /* bytes: resident plus loads in flight (their estimates), shared
                               bytes included once */
    uint64_t shared;        /* of which held for several objects (params.shared) */
    uint64_t loads, evictions, hits;
    uint32_t count; /* loaded objects */
} imgd_mcache_stats;
void imgd_mcache_stats_get(imgd_mcache *c, imgd_mcache_stats *out);

#endif
