/* Components shared between models (issue 8: "same VAE bytes => loaded once").
 *
 * A store (imgd_components) holds VAEs that models bind to instead of their own copy. Each
 * held VAE is an entry with its own weights, detection and binder (so it outlives the model
 * that brought it) and a reference count (the models bound to it).
 *
 * Matching, cheapest first:
 *   1. the same file (device, inode, size, mtime): a --vae file given to several models is
 *      mapped once;
 *   2. the same contents: a signature (sha256 of the canonical names, dtypes and shapes of
 *      the "vae." tensors, from the headers) selects candidates; only then is the content
 *      digest (the signature followed by every tensor's bytes, in canonical-name order)
 *      computed for both sides, once per file and remembered through the digest cache
 *      (the worker keeps it in its registry's SQLite, keyed by path, size and mtime).
 *
 * What it saves: for mapped files, the second model's VAE pages are never read (its own
 * mapping of them stays untouched); a --vae file is opened once; the heap copies a binder
 * makes (fp8 upcasts, transposes) exist once. A checkpoint read into memory (a .ckpt
 * unpickled to the heap) keeps its own VAE: holding it in the store would keep the whole
 * file's heap alive. */
/* realpath() is XSI, madvise(MADV_DONTNEED) Linux/BSD. */
#define _DEFAULT_SOURCE // NOLINT(bugprone-reserved-identifier): the feature-test macro

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/text.h"
#include "formats/weights.h"
#include "pipeline/pipeline.h"

#define VAE_PREFIX    "vae."
#define VAE_COMPONENT "vae"

/* Where a component's tensors come from: the file or folder, and its identity. */
typedef struct source {
    char     path[PATH_MAX]; /* realpath */
    uint64_t dev, ino, size;
    int64_t  mtime_ns;
    bool     is_file;
} source;

typedef struct imgd_sd_share {
    struct imgd_sd_share *next;
    imgd_components      *store; /* the store holding it */
    source                src;
    uint8_t               sig[32];    /* names, dtypes, shapes */
    char                  digest[65]; /* the contents; "" until computed */
    imgd_weights         *w;          /* owned, with mi and wb */
    imgd_model_info      *mi;
    imgd_wbind           *wb;
    uint64_t              bytes; /* tensor bytes of the component */
    int32_t               refs;  /* models bound to it */
} share;

struct imgd_components {
    pthread_mutex_t    mu; /* guards list and hashed_bytes */
    share             *list;
    imgd_digest_get_fn get;
    imgd_digest_put_fn put;
    void              *user;
    uint64_t           hashed_bytes;
};

/* ---- the store ------------------------------------------------------------------------------ */

imgd_status imgd_components_new(imgd_components **out) {
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_components_new: out is NULL");
    imgd_components *c = imgd_calloc(1, sizeof *c);
    if (!c) return imgd_fail(IMGD_E_NOMEM, "component store: out of memory");
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return IMGD_OK;
}

void imgd_components_set_digest_cache(imgd_components *c, imgd_digest_get_fn get,
                                      imgd_digest_put_fn put, void *user) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->get  = get;
    c->put  = put;
    c->user = get || put ? user : NULL;
    pthread_mutex_unlock(&c->mu);
}

static void share_free(share *e) {
    imgd_wbind_free(e->wb);
    imgd_model_info_free(e->mi);
    imgd_weights_free(e->w);
    imgd_free(e);
}

void imgd_components_free(imgd_components *c) {
    if (!c) return;
    for (share *e = c->list, *n = NULL; e; e = n) {
        n = e->next;
        IMGD_LOG(IMGD_LOG_WARN, "pipeline.share", "store_freed_in_use",
                 "%s: component store freed while %d model(s) still use its VAE", e->src.path,
                 (int)e->refs);
        share_free(e);
    }
    pthread_mutex_destroy(&c->mu);
    imgd_free(c);
}

void imgd_components_stats_get(imgd_components *c, imgd_components_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    for (const share *e = c->list; e; e = e->next) {
        out->bytes += e->bytes;
        out->saved_bytes += e->bytes * (uint64_t)(e->refs > 1 ? e->refs - 1 : 0);
        out->count++;
        out->users += (uint32_t)e->refs;
    }
    out->hashed_bytes = c->hashed_bytes;
    pthread_mutex_unlock(&c->mu);
}

uint64_t imgd_model_shared_bytes(const imgd_model *m) {
    return m && m->vae_share ? m->vae_share->bytes : 0;
}

/* ---- signature and digest ------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The component's canonical names, sorted (imgd_malloc'd array of borrowed strings). */
static imgd_status names_sorted(const imgd_wbind *wb, const char ***out, size_t *n) {
    size_t total = 0, k = 0;
    while (imgd_wbind_name_at(wb, total)) total++;
    const char **v = imgd_malloc((total ? total : 1) * sizeof *v);
    if (!v) return imgd_fail(IMGD_E_NOMEM, "component store: out of memory");
    for (size_t i = 0; i < total; i++) {
        const char *s = imgd_wbind_name_at(wb, i);
        if (strncmp(s, VAE_PREFIX, strlen(VAE_PREFIX)) == 0) v[k++] = s;
    }
    qsort(v, k, sizeof *v, cmp_str);
    *out = v;
    *n   = k;
    return IMGD_OK;
}

/* Signature of the component (sha256 of names, dtypes, shapes and byte counts) and its
 * tensor bytes. *ok false when a tensor is not a view of the file (cannot be compared). */
static imgd_status component_sig(const imgd_wbind *wb, uint8_t sig[32], uint64_t *bytes, bool *ok) {
    const char **names = NULL;
    size_t       n     = 0;
    imgd_status  st    = names_sorted(wb, &names, &n);
    if (st != IMGD_OK) return st;
    imgd_sha256 h;
    imgd_sha256_init(&h);
    *bytes = 0;
    *ok    = n > 0;
    for (size_t i = 0; i < n && *ok; i++) {
        imgd_dtype  dt;
        const void *data = NULL;
        uint64_t    nb   = 0;
        int64_t     shape[IMGD_MAX_DIMS];
        int32_t     nd = imgd_wbind_shape(wb, names[i], shape);
        *ok            = nd >= 0 && imgd_wbind_view(wb, names[i], &dt, &data, &nb);
        if (!*ok) break;
        int32_t dti = (int32_t)dt;
        imgd_sha256_update(&h, names[i], strlen(names[i]) + 1);
        imgd_sha256_update(&h, &dti, sizeof dti);
        imgd_sha256_update(&h, &nd, sizeof nd);
        imgd_sha256_update(&h, shape, (size_t)nd * sizeof shape[0]);
        imgd_sha256_update(&h, &nb, sizeof nb);
        *bytes += nb;
    }
    imgd_sha256_final(&h, sig);
    imgd_free(names);
    return IMGD_OK;
}

/* Drops the process's page-table entries for the whole pages of a read-only file mapping
 * that hashing touched, so a VAE read only to compare it does not stay in the resident set
 * (the pages stay in the page cache; a later read maps them again). Never for heap data,
 * which MADV_DONTNEED would zero. */
static void drop_pages(const void *data, uint64_t n) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0 || n < (uint64_t)ps) return;
    uintptr_t a = ((uintptr_t)data + (uintptr_t)ps - 1) & ~((uintptr_t)ps - 1);
    uintptr_t e = ((uintptr_t)data + (uintptr_t)n) & ~((uintptr_t)ps - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_DONTNEED);
}

/* The content digest: the signature, then every tensor's bytes in name order. Through the
 * digest cache when the source is a file. Called with c->mu held. */
static imgd_status component_digest(imgd_components *c, const source *src, const imgd_wbind *wb,
                                    const uint8_t sig[32], char hex[65]) {
    if (src->is_file && c->get &&
        c->get(c->user, src->path, src->size, src->mtime_ns, VAE_COMPONENT, hex) &&
        strlen(hex) == 64) {
        return IMGD_OK;
    }
    const char **names = NULL;
    size_t       n     = 0;
    imgd_status  st    = names_sorted(wb, &names, &n);
    if (st != IMGD_OK) return st;
    bool        mapped = imgd_wbind_weights(wb)->n_bufs == 0; /* no heap copies */
    imgd_sha256 h;
    imgd_sha256_init(&h);
    imgd_sha256_update(&h, sig, 32);
    for (size_t i = 0; i < n; i++) {
        imgd_dtype  dt;
        const void *data = NULL;
        uint64_t    nb   = 0;
        if (!imgd_wbind_view(wb, names[i], &dt, &data, &nb)) continue; /* sig said views */
        imgd_sha256_update(&h, data, (size_t)nb);
        c->hashed_bytes += nb;
        if (mapped) drop_pages(data, nb);
    }
    imgd_free(names);
    uint8_t d[32];
    imgd_sha256_final(&h, d);
    imgd_sha256_hex(d, hex);
    if (src->is_file && c->put) {
        c->put(c->user, src->path, src->size, src->mtime_ns, VAE_COMPONENT, hex);
    }
    return IMGD_OK;
}

static bool source_of(const char *path, source *out) {
    struct stat st;
    memset(out, 0, sizeof *out);
    if (!realpath(path, out->path) || stat(out->path, &st) != 0) return false;
    out->dev      = (uint64_t)st.st_dev;
    out->ino      = (uint64_t)st.st_ino;
    out->size     = (uint64_t)st.st_size;
    out->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + (int64_t)st.st_mtim.tv_nsec;
    out->is_file  = S_ISREG(st.st_mode);
    return true;
}

static bool same_file(const source *a, const source *b) {
    return a->is_file && b->is_file && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns;
}

/* ---- binding a model's VAE ------------------------------------------------------------------ */

/* The held VAE equal to the one of wb at src (sig computed), or NULL. Called with mu held;
 * mine receives the newcomer's digest when one was computed. */
static imgd_status find_equal(imgd_components *c, const source *src, const imgd_wbind *wb,
                              const uint8_t sig[32], char mine[65], share **hit) {
    *hit = NULL;
    for (share *e = c->list; e; e = e->next) {
        if (same_file(&e->src, src)) {
            *hit = e;
            return IMGD_OK;
        }
    }
    for (share *e = c->list; e; e = e->next) {
        if (memcmp(e->sig, sig, 32) != 0) continue;
        imgd_status st = IMGD_OK;
        if (!mine[0]) st = component_digest(c, src, wb, sig, mine);
        if (st == IMGD_OK && !e->digest[0]) {
            st = component_digest(c, &e->src, e->wb, e->sig, e->digest);
        }
        if (st != IMGD_OK) return st;
        if (strcmp(mine, e->digest) == 0) {
            *hit = e;
            return IMGD_OK;
        }
    }
    return IMGD_OK;
}

/* A new entry holding the checkpoint's VAE: the file opened again (a second mapping of
 * which only the VAE's pages are read), so the entry outlives the model. */
static imgd_status entry_open(const imgd_model *m, const imgd_open_params *op, share *e) {
    imgd_status st = imgd_weights_open(m->path, op, &e->w);
    if (st == IMGD_OK) st = imgd_model_detect(e->w, &e->mi);
    if (st == IMGD_OK) st = imgd_wbind_new(e->w, e->mi, &e->wb);
    uint8_t  sig[32];
    uint64_t bytes = 0;
    bool     ok    = false;
    if (st == IMGD_OK) st = component_sig(e->wb, sig, &bytes, &ok);
    if (st == IMGD_OK && (!ok || memcmp(sig, e->sig, 32) != 0)) {
        st = imgd_fail(IMGD_E_IO, "%s changed while it was being loaded; load it again", m->path);
    }
    return st;
}

imgd_status imgd_sd_share_vae(imgd_model *m, imgd_components *c, const imgd_open_params *op) {
    if (!m || !c || m->vae_share) return IMGD_OK;
    bool        separate = m->vae_w != NULL;
    imgd_wbind *src_wb   = separate ? m->vae_wb : m->wb;
    /* a checkpoint unpickled to the heap stays the model's own (see the file comment) */
    if (!src_wb || (!separate && m->w->n_bufs > 0)) return IMGD_OK;
    source src;
    if (!source_of(imgd_wbind_weights(src_wb)->path, &src)) return IMGD_OK;
    uint8_t     sig[32];
    uint64_t    bytes = 0;
    bool        ok    = false;
    imgd_status st    = component_sig(src_wb, sig, &bytes, &ok);
    if (st != IMGD_OK || !ok) return st;
    char   mine[65] = "";
    share *hit      = NULL;
    pthread_mutex_lock(&c->mu);
    st = find_equal(c, &src, src_wb, sig, mine, &hit);
    if (st == IMGD_OK && hit) {
        hit->refs++;
        pthread_mutex_unlock(&c->mu);
        if (separate) {
            imgd_wbind_free(m->vae_wb);
            imgd_model_info_free(m->vae_mi);
            imgd_weights_free(m->vae_w);
            m->vae_w  = NULL;
            m->vae_mi = NULL;
        }
        m->vae_wb    = hit->wb;
        m->vae_share = hit;
        IMGD_LOG(IMGD_LOG_INFO, "pipeline.share", "vae_shared",
                 "%s: VAE bound to the copy of %s held for %d other model(s) (%.1f MiB once)",
                 m->path, hit->src.path, (int)hit->refs - 1, (double)hit->bytes / 1048576.0);
        return IMGD_OK;
    }
    share *e = st == IMGD_OK ? imgd_calloc(1, sizeof *e) : NULL;
    if (st == IMGD_OK && !e) st = imgd_fail(IMGD_E_NOMEM, "component store: out of memory");
    if (st == IMGD_OK && e) {
        e->store = c;
        e->src   = src;
        e->bytes = bytes;
        e->refs  = 1;
        memcpy(e->sig, sig, 32);
        memcpy(e->digest, mine, sizeof mine);
        if (separate) { /* the model's --vae file moves into the store */
            e->w      = m->vae_w;
            e->mi     = m->vae_mi;
            e->wb     = m->vae_wb;
            m->vae_w  = NULL;
            m->vae_mi = NULL;
        } else {
            st = entry_open(m, op, e);
        }
    }
    if (st == IMGD_OK && e) {
        e->next      = c->list;
        c->list      = e;
        m->vae_wb    = e->wb;
        m->vae_share = e;
    }
    pthread_mutex_unlock(&c->mu);
    if (st != IMGD_OK && e) share_free(e);
    return st;
}

void imgd_sd_share_release(imgd_model *m) {
    share *e = m ? m->vae_share : NULL;
    if (!e) return;
    m->vae_share       = NULL;
    m->vae_wb          = NULL; /* the store's binder */
    imgd_components *c = e->store;
    pthread_mutex_lock(&c->mu);
    bool gone = --e->refs == 0;
    if (gone) {
        for (share **pp = &c->list; *pp; pp = &(*pp)->next) {
            if (*pp == e) {
                *pp = e->next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (gone) share_free(e);
}
