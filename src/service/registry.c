/* Model registry: recursive scan of the model dirs, detection, SQLite metadata cache. */
/* realpath() is XSI. */
#define _XOPEN_SOURCE 700 // NOLINT(bugprone-reserved-identifier): the feature-test macro

#include "service/registry.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"

#define WALK_DEPTH_MAX 8
#define SCHEMA_VERSION 1

/* One model in memory. Strings are owned. */
typedef struct rec {
    char    *id, *path, *error; /* error NULL when readable */
    size_t   root;              /* index into dirs */
    char     family[32], kind[32], sha256[65];
    uint64_t size, tensor_bytes;
    int64_t  mtime_ns;
    int32_t  format;
    bool     is_dir;
    bool     changed; /* scan: must be written to the database */
} rec;

typedef struct rec_list {
    rec   *v;
    size_t n, cap;
} rec_list;

struct imgd_registry {
    char           *db_path;
    sqlite3        *db;
    char          **dirs;
    size_t          n_dirs;
    pthread_mutex_t mu;      /* guards list, by_path and db */
    pthread_mutex_t scan_mu; /* one scan (or refresh) at a time */
    rec_list        list;    /* sorted by (root, id) */
    imgd_strmap     by_path; /* path -> index in list (keys borrowed from list) */
    char           *only;    /* when set, scans consider only this id (imgd_registry_only) */
};

/* ---- records ------------------------------------------------------------------------------ */

static void rec_clear(rec *r) {
    imgd_free(r->id);
    imgd_free(r->path);
    imgd_free(r->error);
    memset(r, 0, sizeof *r);
}

static void list_free(rec_list *l) {
    for (size_t i = 0; i < l->n; i++) rec_clear(&l->v[i]);
    imgd_free(l->v);
    memset(l, 0, sizeof *l);
}

/* Appends a zeroed record; NULL on out of memory. */
static rec *list_push(rec_list *l) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t bytes;
        if (!imgd_size_mul(cap, sizeof(rec), &bytes)) return NULL;
        rec *v = imgd_realloc(l->v, bytes);
        if (!v) return NULL;
        l->v   = v;
        l->cap = cap;
    }
    rec *r = &l->v[l->n++];
    memset(r, 0, sizeof *r);
    return r;
}

static int rec_cmp(const void *a, const void *b) {
    const rec *x = a, *y = b;
    if (x->root != y->root) return x->root < y->root ? -1 : 1;
    return strcmp(x->id, y->id);
}

static imgd_status index_build(imgd_registry *r) {
    imgd_strmap_free(&r->by_path);
    imgd_strmap_init(&r->by_path);
    for (size_t i = 0; i < r->list.n; i++) {
        imgd_status st = imgd_strmap_put(&r->by_path, r->list.v[i].path, i, NULL);
        if (st == IMGD_E_NOMEM) return imgd_fail(st, "registry: out of memory");
    }
    return IMGD_OK;
}

static void pin_of(imgd_registry *r, const char *root, const char *id, char sha[65]);

static void rec_to_entry(imgd_registry *r, const rec *x, imgd_reg_entry *out) {
    memset(out, 0, sizeof *out);
    (void)imgd_fmt(out->id, sizeof out->id, "%s", x->id);
    (void)imgd_fmt(out->path, sizeof out->path, "%s", x->path);
    (void)imgd_fmt(out->family, sizeof out->family, "%s", x->family);
    (void)imgd_fmt(out->kind, sizeof out->kind, "%s", x->kind);
    (void)imgd_fmt(out->error, sizeof out->error, "%s", x->error ? x->error : "");
    (void)imgd_fmt(out->sha256, sizeof out->sha256, "%s", x->sha256);
    if (x->sha256[0]) (void)imgd_fmt(out->autov2, sizeof out->autov2, "%.10s", x->sha256);
    out->size         = x->size;
    out->tensor_bytes = x->tensor_bytes;
    out->mtime_ns     = x->mtime_ns;
    out->format       = x->format;
    out->is_dir       = x->is_dir;
    pin_of(r, r->dirs[x->root], x->id, out->pinned);
}

/* ---- database ----------------------------------------------------------------------------- */

static imgd_status db_fail(const imgd_registry *r, const char *what, int rc) {
    return imgd_fail(rc == SQLITE_NOMEM ? IMGD_E_NOMEM : IMGD_E_IO,
                     "model registry cache %s: %s: %s (sqlite error %d)", r->db_path, what,
                     r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc), rc);
}

static imgd_status db_exec(imgd_registry *r, const char *sql) {
    int rc = sqlite3_exec(r->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? IMGD_OK : db_fail(r, sql, rc);
}

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS models ("
    " path TEXT PRIMARY KEY, root TEXT NOT NULL, id TEXT NOT NULL,"
    " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, is_dir INTEGER NOT NULL,"
    " format INTEGER NOT NULL, family TEXT NOT NULL, kind TEXT NOT NULL, error TEXT,"
    " sha256 TEXT, tensor_bytes INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS pins ("
    " root TEXT NOT NULL, id TEXT NOT NULL, sha256 TEXT NOT NULL, file TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, PRIMARY KEY (root, id));"
    "CREATE TABLE IF NOT EXISTS components ("
    " path TEXT NOT NULL, component TEXT NOT NULL, size INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (path, component));"
    "PRAGMA user_version = 1;";

static imgd_status db_open(imgd_registry *r) {
    int rc =
        sqlite3_open_v2(r->db_path, &r->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) return db_fail(r, "open", rc);
    (void)sqlite3_busy_timeout(r->db, 5000);
    /* A cache: losing the last transaction only costs a re-detection. */
    imgd_status st = db_exec(r, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
    if (st == IMGD_OK) st = db_exec(r, k_schema);
    return st;
}

static imgd_status db_upsert(imgd_registry *r, const rec *x) {
    static const char sql[] = "INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt     *s     = NULL;
    int               rc    = sqlite3_prepare_v2(r->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        (void)sqlite3_bind_text(s, 1, x->path, -1, SQLITE_STATIC);
        (void)sqlite3_bind_text(s, 2, r->dirs[x->root], -1, SQLITE_STATIC);
        (void)sqlite3_bind_text(s, 3, x->id, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int64(s, 4, (sqlite3_int64)x->size);
        (void)sqlite3_bind_int64(s, 5, x->mtime_ns);
        (void)sqlite3_bind_int(s, 6, x->is_dir);
        (void)sqlite3_bind_int(s, 7, x->format);
        (void)sqlite3_bind_text(s, 8, x->family, -1, SQLITE_STATIC);
        (void)sqlite3_bind_text(s, 9, x->kind, -1, SQLITE_STATIC);
        if (x->error) (void)sqlite3_bind_text(s, 10, x->error, -1, SQLITE_STATIC);
        if (x->sha256[0]) (void)sqlite3_bind_text(s, 11, x->sha256, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int64(s, 12, (sqlite3_int64)x->tensor_bytes);
        rc = sqlite3_step(s);
    }
    imgd_status st = rc == SQLITE_DONE ? IMGD_OK : db_fail(r, "upsert", rc);
    (void)sqlite3_finalize(s);
    return st;
}

static imgd_status db_delete(imgd_registry *r, const char *path) {
    sqlite3_stmt *s  = NULL;
    int           rc = sqlite3_prepare_v2(r->db, "DELETE FROM models WHERE path = ?", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        (void)sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
    }
    imgd_status st = rc == SQLITE_DONE ? IMGD_OK : db_fail(r, "delete", rc);
    (void)sqlite3_finalize(s);
    return st;
}

static imgd_status col_dup(sqlite3_stmt *s, int col, char **out) {
    const unsigned char *t = sqlite3_column_text(s, col);
    *out                   = NULL;
    if (!t) return IMGD_OK;
    *out = imgd_strdup((const char *)t);
    return *out ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
}

static bool root_index(const imgd_registry *r, const char *root, size_t *out) {
    for (size_t i = 0; i < r->n_dirs; i++) {
        if (strcmp(r->dirs[i], root) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

/* Loads the rows of our dirs into r->list. */
static imgd_status db_load(imgd_registry *r) {
    static const char sql[] = "SELECT path, root, id, size, mtime_ns, is_dir, format, family,"
                              " kind, error, sha256, tensor_bytes FROM models";
    sqlite3_stmt     *s     = NULL;
    int               rc    = sqlite3_prepare_v2(r->db, sql, -1, &s, NULL);
    imgd_status       st    = rc == SQLITE_OK ? IMGD_OK : db_fail(r, "load", rc);
    while (st == IMGD_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        size_t      root;
        const char *rt = (const char *)sqlite3_column_text(s, 1);
        if (!rt || !root_index(r, rt, &root)) continue;
        rec *x = list_push(&r->list);
        if (!x) {
            st = imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
            break;
        }
        x->root = root;
        st      = col_dup(s, 0, &x->path);
        if (st == IMGD_OK) st = col_dup(s, 2, &x->id);
        if (st == IMGD_OK) st = col_dup(s, 9, &x->error);
        if (st == IMGD_OK && (!x->path || !x->id)) st = db_fail(r, "row without path", rc);
        x->size         = (uint64_t)sqlite3_column_int64(s, 3);
        x->mtime_ns     = sqlite3_column_int64(s, 4);
        x->is_dir       = sqlite3_column_int(s, 5) != 0;
        x->format       = sqlite3_column_int(s, 6);
        x->tensor_bytes = (uint64_t)sqlite3_column_int64(s, 11);
        (void)imgd_fmt(x->family, sizeof x->family, "%s", sqlite3_column_text(s, 7));
        (void)imgd_fmt(x->kind, sizeof x->kind, "%s", sqlite3_column_text(s, 8));
        const unsigned char *h = sqlite3_column_text(s, 10);
        if (h && strlen((const char *)h) == 64) {
            (void)imgd_fmt(x->sha256, sizeof x->sha256, "%s", (const char *)h);
        }
    }
    if (st == IMGD_OK && rc != SQLITE_DONE) st = db_fail(r, "load", rc);
    (void)sqlite3_finalize(s);
    if (st != IMGD_OK) return st;
    if (r->list.n > 1) {
        qsort(r->list.v, r->list.n, sizeof(rec), rec_cmp);
    }
    return index_build(r);
}

/* ---- stat signatures and detection ------------------------------------------------------- */

static int64_t st_mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + (int64_t)st->st_mtim.tv_nsec;
}

/* A diffusers folder's signature: the sum of the sizes of its files one and two levels down
 * and their newest mtime (the folders' own mtimes included: a component added or removed). */
// NOLINTNEXTLINE(misc-no-recursion): depth is capped at 2
static void dir_signature(const char *dir, int depth, uint64_t *size, int64_t *mtime) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char p[PATH_MAX];
        if (!imgd_fmt(p, sizeof p, "%s/%s", dir, e->d_name)) continue;
        struct stat st;
        if (stat(p, &st) != 0) continue;
        int64_t m = st_mtime_ns(&st);
        if (m > *mtime) *mtime = m;
        if (S_ISREG(st.st_mode)) {
            *size += (uint64_t)st.st_size;
        } else if (S_ISDIR(st.st_mode) && depth < 2) {
            dir_signature(p, depth + 1, size, mtime);
        }
    }
    (void)closedir(d);
}

static imgd_status set_error(rec *x, const char *msg) {
    imgd_free(x->error);
    x->error = imgd_strdup(msg);
    return x->error ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
}

/* Opens and detects x->path; a file that cannot be read gets its error recorded. Returns
 * IMGD_E_NOMEM only. */
static imgd_status detect_rec(rec *x) {
    imgd_weights    *w  = NULL;
    imgd_model_info *mi = NULL;
    imgd_open_params op = imgd_open_params_default();
    imgd_status      st = imgd_weights_open(x->path, &op, &w);
    if (st == IMGD_OK) st = imgd_model_detect(w, &mi);
    x->family[0] = x->kind[0] = '\0';
    x->sha256[0]              = '\0';
    x->tensor_bytes           = 0;
    x->format                 = 0;
    imgd_free(x->error);
    x->error = NULL;
    if (st == IMGD_E_NOMEM) {
        imgd_weights_free(w);
        return st;
    }
    if (st != IMGD_OK) {
        imgd_weights_free(w);
        return set_error(x, imgd_last_error());
    }
    (void)imgd_fmt(x->family, sizeof x->family, "%s", imgd_family_name(imgd_model_info_family(mi)));
    (void)imgd_fmt(x->kind, sizeof x->kind, "%s", imgd_model_kind_name(imgd_model_info_kind(mi)));
    x->format = (int32_t)imgd_weights_format(w);
    for (size_t i = 0; i < imgd_weights_tensor_count(w); i++) {
        imgd_tensor_info t;
        if (imgd_weights_tensor(w, i, &t) == IMGD_OK) x->tensor_bytes += t.nbytes;
    }
    imgd_model_info_free(mi);
    imgd_weights_free(w);
    return IMGD_OK;
}

/* ---- walking ------------------------------------------------------------------------------ */

static bool weight_ext(const char *name) {
    static const char *const k_ext[] = {".safetensors", ".ckpt", ".pt", ".pth",
                                        ".bin",         ".gguf", ".sft"};
    size_t                   n       = strlen(name);
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_ext); i++) {
        size_t e = strlen(k_ext[i]);
        if (n > e && strcasecmp(name + n - e, k_ext[i]) == 0) return true;
    }
    return false;
}

/* Whether full (a symbolic link) resolves inside root. */
static bool link_inside(const char *root, const char *full) {
    char   real[PATH_MAX];
    size_t rl = strlen(root);
    return realpath(full, real) && strncmp(real, root, rl) == 0 && real[rl] == '/';
}

typedef struct walk_ctx {
    imgd_registry *r;
    size_t         root;
    rec_list      *found; /* path, id, root, size, mtime, is_dir filled */
    imgd_status    st;
} walk_ctx;

static void found_add(walk_ctx *w, const char *full, const char *rel, uint64_t size, int64_t mtime,
                      bool is_dir) {
    rec *x = list_push(w->found);
    if (!x) {
        w->st = imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
        return;
    }
    x->path     = imgd_strdup(full);
    x->id       = imgd_strdup(rel);
    x->root     = w->root;
    x->size     = size;
    x->mtime_ns = mtime;
    x->is_dir   = is_dir;
    if (!x->path || !x->id) w->st = imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
}

/* Recursion is capped at WALK_DEPTH_MAX levels. */
// NOLINTNEXTLINE(misc-no-recursion)
static void walk(walk_ctx *w, const char *rel, int depth) {
    const char *root = w->r->dirs[w->root];
    char        dirpath[PATH_MAX];
    if (!imgd_fmt(dirpath, sizeof dirpath, "%s%s%s", root, rel[0] ? "/" : "", rel)) return;
    DIR *d = opendir(dirpath);
    if (!d) return;
    struct dirent *e;
    while (w->st == IMGD_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char r2[PATH_MAX], full[PATH_MAX];
        if (!imgd_fmt(r2, sizeof r2, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name)) continue;
        if (strlen(r2) >= IMGD_REG_ID_MAX) continue;
        if (!imgd_fmt(full, sizeof full, "%s/%s", root, r2)) continue;
        /* restricted: only the id itself and the folders leading to it */
        size_t l2 = strlen(r2);
        if (w->r->only && strcmp(w->r->only, r2) != 0 &&
            !(strncmp(w->r->only, r2, l2) == 0 && w->r->only[l2] == '/')) {
            continue;
        }
        struct stat st;
        if (lstat(full, &st) != 0) continue;
        if (S_ISLNK(st.st_mode) && (!link_inside(root, full) || stat(full, &st) != 0)) continue;
        if (S_ISDIR(st.st_mode)) {
            char        mi[PATH_MAX];
            struct stat st2;
            if (imgd_fmt(mi, sizeof mi, "%s/model_index.json", full) && stat(mi, &st2) == 0) {
                uint64_t size  = 0;
                int64_t  mtime = st_mtime_ns(&st);
                dir_signature(full, 1, &size, &mtime);
                found_add(w, full, r2, size, mtime, true);
            } else if (depth + 1 < WALK_DEPTH_MAX) {
                walk(w, r2, depth + 1);
            }
        } else if (S_ISREG(st.st_mode) && weight_ext(e->d_name)) {
            found_add(w, full, r2, (uint64_t)st.st_size, st_mtime_ns(&st), false);
        }
    }
    (void)closedir(d);
}

/* ---- open / free -------------------------------------------------------------------------- */

imgd_status imgd_registry_open(const char *db_path, const char *const *dirs, size_t n_dirs,
                               imgd_registry **out) {
    if (!db_path || !out || (n_dirs && !dirs)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_open: NULL argument");
    }
    imgd_registry *r = imgd_calloc(1, sizeof *r);
    if (!r) return imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->scan_mu, NULL);
    imgd_strmap_init(&r->by_path);
    imgd_status st = IMGD_OK;
    r->db_path     = imgd_strdup(db_path);
    r->dirs        = n_dirs ? imgd_calloc(n_dirs, sizeof *r->dirs) : NULL;
    if (!r->db_path || (n_dirs && !r->dirs)) {
        st = imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
    }
    for (size_t i = 0; st == IMGD_OK && i < n_dirs; i++) {
        char real[PATH_MAX];
        if (!realpath(dirs[i], real)) {
            st = imgd_fail(IMGD_E_IO, "model dir %s: %s", dirs[i], strerror(errno));
            break;
        }
        r->dirs[i] = imgd_strdup(real);
        r->n_dirs++;
        if (!r->dirs[i]) st = imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
    }
    if (st == IMGD_OK) st = db_open(r);
    if (st == IMGD_OK) st = db_load(r);
    if (st != IMGD_OK) {
        imgd_registry_free(r);
        return st;
    }
    *out = r;
    return IMGD_OK;
}

void imgd_registry_free(imgd_registry *r) {
    if (!r) return;
    if (r->db) (void)sqlite3_close(r->db);
    list_free(&r->list);
    imgd_strmap_free(&r->by_path);
    imgd_free(r->only);
    for (size_t i = 0; i < r->n_dirs; i++) imgd_free(r->dirs[i]);
    imgd_free(r->dirs);
    imgd_free(r->db_path);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->scan_mu);
    imgd_free(r);
}

imgd_status imgd_registry_only(imgd_registry *r, const char *id) {
    if (!r || !id || !*id) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_only: no id");
    char *c = imgd_strdup(id);
    if (!c) return imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
    pthread_mutex_lock(&r->scan_mu);
    imgd_free(r->only);
    r->only = c;
    pthread_mutex_unlock(&r->scan_mu);
    return IMGD_OK;
}

/* ---- scan --------------------------------------------------------------------------------- */

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Fills each found record from its cached twin when unchanged, else detects it. */
static imgd_status scan_resolve(imgd_registry *r, rec_list *found, imgd_reg_scan_stats *stats) {
    for (size_t i = 0; i < found->n; i++) {
        rec   *x = &found->v[i];
        size_t j;
        bool   reuse = false;
        pthread_mutex_lock(&r->mu);
        if (imgd_strmap_get(&r->by_path, x->path, &j)) {
            const rec *o = &r->list.v[j];
            reuse        = o->size == x->size && o->mtime_ns == x->mtime_ns && o->root == x->root &&
                    o->is_dir == x->is_dir;
            if (reuse) {
                memcpy(x->family, o->family, sizeof x->family);
                memcpy(x->kind, o->kind, sizeof x->kind);
                memcpy(x->sha256, o->sha256, sizeof x->sha256);
                x->tensor_bytes = o->tensor_bytes;
                x->format       = o->format;
            }
        }
        bool oom = false;
        if (reuse && r->list.v[j].error) {
            x->error = imgd_strdup(r->list.v[j].error);
            oom      = !x->error;
        }
        pthread_mutex_unlock(&r->mu);
        if (oom) return imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
        if (reuse) {
            stats->reused++;
            continue;
        }
        imgd_status st = detect_rec(x);
        if (st != IMGD_OK) return st;
        x->changed = true;
        stats->detected++;
    }
    return IMGD_OK;
}

/* Writes changes and swaps the lists; call with r->mu held. */
static imgd_status scan_commit(imgd_registry *r, rec_list *found, imgd_reg_scan_stats *stats) {
    imgd_strmap seen;
    imgd_strmap_init(&seen);
    imgd_status st = IMGD_OK;
    for (size_t i = 0; st == IMGD_OK && i < found->n; i++) {
        if (imgd_strmap_put(&seen, found->v[i].path, i, NULL) == IMGD_E_NOMEM) {
            st = imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
        }
    }
    if (st == IMGD_OK) st = db_exec(r, "BEGIN");
    for (size_t i = 0; st == IMGD_OK && i < found->n; i++) {
        rec   *x = &found->v[i];
        size_t j;
        /* a hash computed while we scanned: keep it */
        if (!x->changed && !x->sha256[0] && imgd_strmap_get(&r->by_path, x->path, &j) &&
            r->list.v[j].size == x->size && r->list.v[j].mtime_ns == x->mtime_ns) {
            memcpy(x->sha256, r->list.v[j].sha256, sizeof x->sha256);
        }
        if (x->changed) st = db_upsert(r, x);
    }
    for (size_t i = 0; st == IMGD_OK && i < r->list.n; i++) {
        if (imgd_strmap_get(&seen, r->list.v[i].path, NULL)) continue;
        /* restricted scans looked at one id: the other rows stay cached for a full scan */
        if (r->only && strcmp(r->list.v[i].id, r->only) != 0) continue;
        st = db_delete(r, r->list.v[i].path);
        stats->removed++;
    }
    imgd_strmap_free(&seen);
    if (st == IMGD_OK) st = db_exec(r, "COMMIT");
    if (st != IMGD_OK) {
        (void)sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL); /* the first error is reported */
        return st;
    }
    if (found->n > 1) {
        qsort(found->v, found->n, sizeof(rec), rec_cmp);
    }
    rec_list old = r->list;
    r->list      = *found;
    memset(found, 0, sizeof *found);
    list_free(&old);
    return index_build(r);
}

imgd_status imgd_registry_scan(imgd_registry *r, imgd_reg_scan_stats *stats) {
    if (!r) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_scan: NULL registry");
    imgd_reg_scan_stats s = {0};
    double              t = mono_s();
    rec_list            found;
    memset(&found, 0, sizeof found);
    pthread_mutex_lock(&r->scan_mu);
    walk_ctx w = {r, 0, &found, IMGD_OK};
    for (size_t d = 0; w.st == IMGD_OK && d < r->n_dirs; d++) {
        w.root = d;
        walk(&w, "", 0);
    }
    imgd_status st = w.st;
    s.seen         = found.n;
    if (st == IMGD_OK) st = scan_resolve(r, &found, &s);
    if (st == IMGD_OK) {
        pthread_mutex_lock(&r->mu);
        st = scan_commit(r, &found, &s);
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&r->scan_mu);
    list_free(&found);
    s.seconds = mono_s() - t;
    if (st == IMGD_OK) {
        IMGD_LOG(IMGD_LOG_DEBUG, "service.registry", "scan",
                 "%llu models (%llu detected, %llu cached, %llu removed) in %.4f s",
                 (unsigned long long)s.seen, (unsigned long long)s.detected,
                 (unsigned long long)s.reused, (unsigned long long)s.removed, s.seconds);
        if (stats) *stats = s;
    }
    return st;
}

/* ---- lookups ------------------------------------------------------------------------------ */

size_t imgd_registry_count(imgd_registry *r) {
    if (!r) {
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    size_t n = r->list.n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

imgd_status imgd_registry_at(imgd_registry *r, size_t i, imgd_reg_entry *out) {
    if (!r || !out) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_at: NULL argument");
    }
    imgd_status st = IMGD_OK;
    pthread_mutex_lock(&r->mu);
    if (i < r->list.n) {
        rec_to_entry(r, &r->list.v[i], out);
    } else {
        st = imgd_fail(IMGD_E_INVALID_ARG, "registry: index %zu past %zu models", i, r->list.n);
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

static bool all_hex(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return s[n] == '\0';
}

static const char *base_name(const char *id) {
    const char *s = strrchr(id, '/');
    return s ? s + 1 : id;
}

/* File name, or file name without its extension, equals key. */
static bool name_matches(const char *id, const char *key) {
    const char *b = base_name(id);
    if (strcmp(b, key) == 0) return true;
    const char *dot = strrchr(b, '.');
    size_t      kl  = strlen(key);
    return dot && (size_t)(dot - b) == kl && strncmp(b, key, kl) == 0;
}

/* Index of the model key names, or a status; call with r->mu held. */
static imgd_status find_locked(imgd_registry *r, const char *key, size_t *out) {
    for (size_t i = 0; i < r->list.n; i++) {
        if (strcmp(r->list.v[i].id, key) == 0) {
            *out = i;
            return IMGD_OK;
        }
    }
    size_t kl = strlen(key);
    if ((kl == 64 || kl == 10) && all_hex(key, kl)) {
        for (size_t i = 0; i < r->list.n; i++) {
            if (r->list.v[i].sha256[0] && strncasecmp(r->list.v[i].sha256, key, kl) == 0) {
                *out = i;
                return IMGD_OK;
            }
        }
    }
    size_t hit = SIZE_MAX;
    for (size_t i = 0; i < r->list.n; i++) {
        if (!name_matches(r->list.v[i].id, key)) continue;
        if (hit != SIZE_MAX) {
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "model name '%s' is ambiguous: '%s' and '%s' both match; use the id",
                             key, r->list.v[hit].id, r->list.v[i].id);
        }
        hit = i;
    }
    if (hit == SIZE_MAX) {
        return imgd_fail(IMGD_E_NOT_FOUND,
                         "no model '%s' (by id, file name, sha256 or AutoV2 hash) under the "
                         "model directories",
                         key);
    }
    *out = hit;
    return IMGD_OK;
}

static imgd_status version_find(imgd_registry *r, const char *key, imgd_reg_entry *out);

imgd_status imgd_registry_find(imgd_registry *r, const char *key, imgd_reg_entry *out) {
    if (!r || !key || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_find: NULL");
    size_t i;
    pthread_mutex_lock(&r->mu);
    imgd_status st = find_locked(r, key, &i);
    if (st == IMGD_OK) {
        rec_to_entry(r, &r->list.v[i], out);
    } else if (st == IMGD_E_NOT_FOUND && version_find(r, key, out) == IMGD_OK) {
        st = IMGD_OK; /* an old, pinned version */
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

/* ---- refresh and hash --------------------------------------------------------------------- */

/* Current size and mtime of a model path; false when it is gone. */
static bool path_signature(const char *path, bool is_dir, uint64_t *size, int64_t *mtime) {
    struct stat st;
    if (stat(path, &st) != 0) return false;
    if (is_dir != S_ISDIR(st.st_mode)) return false;
    *size  = is_dir ? 0 : (uint64_t)st.st_size;
    *mtime = st_mtime_ns(&st);
    if (is_dir) dir_signature(path, 1, size, mtime);
    return true;
}

imgd_status imgd_registry_refresh(imgd_registry *r, const char *id, imgd_reg_entry *out) {
    if (!r || !id) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_refresh: NULL");
    pthread_mutex_lock(&r->scan_mu);
    pthread_mutex_lock(&r->mu);
    size_t      i;
    imgd_status st = find_locked(r, id, &i);
    if (st == IMGD_E_NOT_FOUND && strchr(id, '@')) {
        /* a pinned version: its file never changes */
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_unlock(&r->scan_mu);
        imgd_reg_entry *e = out ? out : imgd_malloc(sizeof *e);
        st = e ? imgd_registry_find(r, id, e) : imgd_fail(IMGD_E_NOMEM, "out of memory");
        if (e != out) {
            imgd_free(e);
        }
        return st;
    }
    rec x;
    memset(&x, 0, sizeof x);
    bool gone = false, changed = false;
    if (st == IMGD_OK) {
        const rec *o = &r->list.v[i];
        x.path       = imgd_strdup(o->path);
        x.id         = imgd_strdup(o->id);
        x.root       = o->root;
        x.is_dir     = o->is_dir;
        if (!x.path || !x.id) st = imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
        gone    = st == IMGD_OK && !path_signature(x.path, x.is_dir, &x.size, &x.mtime_ns);
        changed = !gone && (x.size != o->size || x.mtime_ns != o->mtime_ns);
    }
    pthread_mutex_unlock(&r->mu);
    if (st == IMGD_OK && changed) st = detect_rec(&x);
    pthread_mutex_lock(&r->mu);
    if (st == IMGD_OK && (gone || changed)) {
        /* the list is unchanged: scans hold scan_mu too */
        st = imgd_strmap_get(&r->by_path, x.path, &i) ? IMGD_OK : IMGD_E_INTERNAL;
        if (st == IMGD_OK && gone) {
            st = db_delete(r, x.path);
            rec_clear(&r->list.v[i]);
            memmove(&r->list.v[i], &r->list.v[i + 1], (r->list.n - i - 1) * sizeof(rec));
            r->list.n--;
            if (st == IMGD_OK) st = index_build(r);
        } else if (st == IMGD_OK) {
            st           = db_upsert(r, &x);
            rec old      = r->list.v[i];
            r->list.v[i] = x;
            memset(&x, 0, sizeof x);
            rec_clear(&old);
            /* the map borrowed the old record's path */
            imgd_status st2 = index_build(r);
            if (st == IMGD_OK) {
                st = st2;
            }
        }
    }
    if (st == IMGD_OK && gone) {
        st = imgd_fail(IMGD_E_NOT_FOUND, "model '%s' was removed from the model directory", id);
    }
    if (st == IMGD_OK && out) rec_to_entry(r, &r->list.v[i], out);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&r->scan_mu);
    rec_clear(&x);
    return st;
}

imgd_status imgd_registry_hash(imgd_registry *r, const char *id, imgd_progress_fn progress,
                               void *user, char hex_out[65]) {
    if (!r || !id || !hex_out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_hash: NULL");
    imgd_reg_entry *e = imgd_malloc(sizeof *e);
    if (!e) return imgd_fail(IMGD_E_NOMEM, "registry: out of memory");
    imgd_status st = imgd_registry_refresh(r, id, e);
    if (st == IMGD_OK && e->is_dir) {
        st = imgd_fail(IMGD_E_UNSUPPORTED, "model '%s' is a folder; only files are hashed", id);
    }
    if (st == IMGD_OK && e->sha256[0]) {
        memcpy(hex_out, e->sha256, 65);
        imgd_free(e);
        return IMGD_OK;
    }
    char hex[65];
    if (st == IMGD_OK) st = imgd_file_sha256(e->path, progress, user, hex);
    uint64_t size;
    int64_t  mtime;
    /* store it only when the file did not change while we read it */
    if (st == IMGD_OK && path_signature(e->path, false, &size, &mtime) && size == e->size &&
        mtime == e->mtime_ns) {
        size_t i;
        pthread_mutex_lock(&r->mu);
        if (imgd_strmap_get(&r->by_path, e->path, &i) && r->list.v[i].size == size &&
            r->list.v[i].mtime_ns == mtime) {
            memcpy(r->list.v[i].sha256, hex, sizeof hex);
            st = db_upsert(r, &r->list.v[i]);
        }
        pthread_mutex_unlock(&r->mu);
    }
    if (st == IMGD_OK) memcpy(hex_out, hex, sizeof hex);
    imgd_free(e);
    return st;
}

/* ---- versions: pins, old versions by hash, rollback --------------------------------------- */

/* The pinned sha256 of (root, id) or ""; call with r->mu held. */
static void pin_of(imgd_registry *r, const char *root, const char *id, char sha[65]) {
    sha[0]          = '\0';
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(r->db, "SELECT sha256 FROM pins WHERE root = ? AND id = ?", -1, &s,
                           NULL) == SQLITE_OK) {
        (void)sqlite3_bind_text(s, 1, root, -1, SQLITE_STATIC);
        (void)sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
        if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0)) {
            (void)imgd_fmt(sha, 65, "%s", (const char *)sqlite3_column_text(s, 0));
        }
    }
    (void)sqlite3_finalize(s);
}

typedef struct pin_row {
    char id[IMGD_REG_ID_MAX], sha[65], file[PATH_MAX];
} pin_row;

/* First pin matching: sha256 prefix hex (when id is NULL) or (id, sha prefix). mu held. */
static bool pin_lookup(imgd_registry *r, const char *id, const char *hex, pin_row *out) {
    sqlite3_stmt *s  = NULL;
    const char   *q  = id ? "SELECT id, sha256, file FROM pins WHERE id = ? AND sha256 LIKE ?"
                          : "SELECT id, sha256, file FROM pins WHERE sha256 LIKE ?";
    bool          ok = false;
    char          like[80];
    (void)imgd_fmt(like, sizeof like, "%s%%", hex);
    for (char *c = like; *c; c++) {
        if (*c >= 'A' && *c <= 'F') {
            *c = (char)(*c - 'A' + 'a');
        }
    }
    if (sqlite3_prepare_v2(r->db, q, -1, &s, NULL) == SQLITE_OK) {
        int k = 1;
        if (id) {
            (void)sqlite3_bind_text(s, k++, id, -1, SQLITE_STATIC);
        }
        (void)sqlite3_bind_text(s, k, like, -1, SQLITE_STATIC);
        if (sqlite3_step(s) == SQLITE_ROW) {
            ok = imgd_fmt(out->id, sizeof out->id, "%s", (const char *)sqlite3_column_text(s, 0)) &&
                 imgd_fmt(out->sha, sizeof out->sha, "%s",
                          (const char *)sqlite3_column_text(s, 1)) &&
                 imgd_fmt(out->file, sizeof out->file, "%s",
                          (const char *)sqlite3_column_text(s, 2));
        }
    }
    (void)sqlite3_finalize(s);
    return ok;
}

/* An old version named by its hash or "ID@HEX"; mu held. */
static imgd_status version_find(imgd_registry *r, const char *key, imgd_reg_entry *out) {
    char        id[IMGD_REG_ID_MAX];
    const char *at  = strrchr(key, '@');
    const char *hex = at ? at + 1 : key;
    size_t      hl  = strlen(hex);
    pin_row     p;
    if (hl < 10 || hl > 64 || !all_hex(hex, hl)) {
        return IMGD_E_NOT_FOUND;
    }
    if (at && !imgd_fmt(id, sizeof id, "%.*s", (int)(at - key), key)) {
        return IMGD_E_NOT_FOUND;
    }
    if (!pin_lookup(r, at ? id : NULL, hex, &p)) {
        return IMGD_E_NOT_FOUND;
    }
    rec x;
    memset(&x, 0, sizeof x);
    x.path = p.file;
    struct stat st;
    imgd_status s2 = stat(p.file, &st) == 0 ? detect_rec(&x) : IMGD_E_NOT_FOUND;
    if (s2 == IMGD_OK) {
        memset(out, 0, sizeof *out);
        (void)imgd_fmt(out->id, sizeof out->id, "%s@%.10s", p.id, p.sha);
        (void)imgd_fmt(out->path, sizeof out->path, "%s", p.file);
        (void)imgd_fmt(out->family, sizeof out->family, "%s", x.family);
        (void)imgd_fmt(out->kind, sizeof out->kind, "%s", x.kind);
        (void)imgd_fmt(out->error, sizeof out->error, "%s", x.error ? x.error : "");
        (void)imgd_fmt(out->sha256, sizeof out->sha256, "%s", p.sha);
        (void)imgd_fmt(out->autov2, sizeof out->autov2, "%.10s", p.sha);
        (void)imgd_fmt(out->pinned, sizeof out->pinned, "%s", p.sha);
        out->size         = (uint64_t)st.st_size;
        out->tensor_bytes = x.tensor_bytes;
        out->mtime_ns     = st_mtime_ns(&st);
        out->format       = x.format;
    }
    imgd_free(x.error);
    return s2;
}

/* Places a copy of src at dst: a hard link, else a byte copy; written beside dst, renamed. */
static imgd_status place_file(const char *src, const char *dst) {
    char tmp[PATH_MAX + 16];
    if (!imgd_fmt(tmp, sizeof tmp, "%s.tmp", dst)) {
        return imgd_fail(IMGD_E_TOO_LARGE, "path too long: %s", dst);
    }
    (void)unlink(tmp);
    imgd_status st = IMGD_OK;
    if (link(src, tmp) != 0) {
        FILE  *in = fopen(src, "rb"), *out = fopen(tmp, "wb");
        char  *buf = imgd_malloc((size_t)1 << 20);
        size_t n   = 0;
        bool   ok  = in && out && buf;
        while (ok && (n = fread(buf, 1, (size_t)1 << 20, in)) > 0) {
            ok = fwrite(buf, 1, n, out) == n;
        }
        ok = ok && !ferror(in);
        if (out && fclose(out) != 0) {
            ok = false;
        }
        if (in) {
            (void)fclose(in);
        }
        imgd_free(buf);
        if (!ok) {
            st = imgd_fail(IMGD_E_IO, "cannot copy %s to %s: %s", src, tmp, strerror(errno));
        }
    }
    if (st == IMGD_OK && rename(tmp, dst) != 0) {
        st = imgd_fail(IMGD_E_IO, "cannot rename %s to %s: %s", tmp, dst, strerror(errno));
    }
    if (st != IMGD_OK) {
        (void)unlink(tmp);
    }
    return st;
}

/* DB_DIR/versions/<sha><ext of path>. */
static bool version_path(const imgd_registry *r, const char *sha, const char *path, char *out,
                         size_t cap, char *dir, size_t dir_cap) {
    const char *sl  = strrchr(r->db_path, '/');
    const char *dot = strrchr(path, '.'), *psl = strrchr(path, '/');
    const char *ext = dot && (!psl || dot > psl) ? dot : "";
    int         dl  = sl ? (int)(sl - r->db_path) : 1;
    return imgd_fmt(dir, dir_cap, "%.*s/versions", dl, sl ? r->db_path : ".") &&
           imgd_fmt(out, cap, "%s/%s%s", dir, sha, ext);
}

/* Removes file unless a pin still uses it; mu held. */
static void drop_version_file(imgd_registry *r, const char *file) {
    sqlite3_stmt *s     = NULL;
    bool          inuse = true;
    if (sqlite3_prepare_v2(r->db, "SELECT 1 FROM pins WHERE file = ?", -1, &s, NULL) == SQLITE_OK) {
        (void)sqlite3_bind_text(s, 1, file, -1, SQLITE_STATIC);
        inuse = sqlite3_step(s) == SQLITE_ROW;
    }
    (void)sqlite3_finalize(s);
    if (!inuse) {
        (void)unlink(file);
    }
}

static imgd_status pin_write(imgd_registry *r, const char *sql, const char *root, const char *id,
                             const char *sha, const char *file) {
    sqlite3_stmt *s  = NULL;
    int           rc = sqlite3_prepare_v2(r->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        (void)sqlite3_bind_text(s, 1, root, -1, SQLITE_STATIC);
        (void)sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
        if (sha) {
            (void)sqlite3_bind_text(s, 3, sha, -1, SQLITE_STATIC);
            (void)sqlite3_bind_text(s, 4, file, -1, SQLITE_STATIC);
            (void)sqlite3_bind_int64(s, 5, (sqlite3_int64)time(NULL) * 1000);
        }
        rc = sqlite3_step(s);
    }
    imgd_status st = rc == SQLITE_DONE ? IMGD_OK : db_fail(r, "pins", rc);
    (void)sqlite3_finalize(s);
    return st;
}

/* The current record's root and path for id (a current model, not a version). */
static imgd_status id_paths(imgd_registry *r, const char *id, char *root, char *path, char *rid) {
    size_t i;
    pthread_mutex_lock(&r->mu);
    imgd_status st = find_locked(r, id, &i);
    if (st == IMGD_OK) {
        (void)imgd_fmt(root, PATH_MAX, "%s", r->dirs[r->list.v[i].root]);
        (void)imgd_fmt(path, PATH_MAX, "%s", r->list.v[i].path);
        (void)imgd_fmt(rid, IMGD_REG_ID_MAX, "%s", r->list.v[i].id);
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

imgd_status imgd_registry_pin(imgd_registry *r, const char *id, char hex_out[65]) {
    if (!r || !id) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_pin: NULL argument");
    }
    char        sha[65], root[PATH_MAX], path[PATH_MAX], rid[IMGD_REG_ID_MAX];
    char        vfile[PATH_MAX], vdir[PATH_MAX], old[65];
    imgd_status st = imgd_registry_hash(r, id, NULL, NULL, sha);
    if (st == IMGD_OK) {
        st = id_paths(r, id, root, path, rid);
    }
    if (st == IMGD_OK && !version_path(r, sha, path, vfile, sizeof vfile, vdir, sizeof vdir)) {
        st = imgd_fail(IMGD_E_TOO_LARGE, "path too long");
    }
    if (st == IMGD_OK && mkdir(vdir, 0755) != 0 && errno != EEXIST) {
        st = imgd_fail(IMGD_E_IO, "cannot create %s: %s", vdir, strerror(errno));
    }
    if (st == IMGD_OK && access(vfile, F_OK) != 0) {
        st = place_file(path, vfile);
    }
    if (st != IMGD_OK) {
        return st;
    }
    pthread_mutex_lock(&r->mu);
    pin_row prev;
    pin_of(r, root, rid, old);
    bool had = old[0] && pin_lookup(r, rid, old, &prev);
    st = pin_write(r, "INSERT OR REPLACE INTO pins VALUES (?,?,?,?,?)", root, rid, sha, vfile);
    if (st == IMGD_OK && had && strcmp(prev.file, vfile) != 0) {
        drop_version_file(r, prev.file);
    }
    pthread_mutex_unlock(&r->mu);
    if (st == IMGD_OK && hex_out) {
        memcpy(hex_out, sha, sizeof sha);
    }
    return st;
}

imgd_status imgd_registry_unpin(imgd_registry *r, const char *id) {
    if (!r || !id) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_unpin: NULL argument");
    }
    char        root[PATH_MAX], path[PATH_MAX], rid[IMGD_REG_ID_MAX], sha[65];
    imgd_status st = id_paths(r, id, root, path, rid);
    if (st != IMGD_OK) {
        return st;
    }
    pthread_mutex_lock(&r->mu);
    pin_row p;
    pin_of(r, root, rid, sha);
    if (!sha[0] || !pin_lookup(r, rid, sha, &p)) {
        st = imgd_fail(IMGD_E_NOT_FOUND, "model '%s' is not pinned", rid);
    } else {
        st = pin_write(r, "DELETE FROM pins WHERE root = ? AND id = ?", root, rid, NULL, NULL);
        if (st == IMGD_OK) {
            drop_version_file(r, p.file);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

imgd_status imgd_registry_rollback(imgd_registry *r, const char *id) {
    if (!r || !id) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_registry_rollback: NULL argument");
    }
    char        root[PATH_MAX], path[PATH_MAX], rid[IMGD_REG_ID_MAX], sha[65];
    imgd_status st = id_paths(r, id, root, path, rid);
    if (st != IMGD_OK) {
        return st;
    }
    pin_row p;
    pthread_mutex_lock(&r->mu);
    pin_of(r, root, rid, sha);
    bool pinned = sha[0] && pin_lookup(r, rid, sha, &p);
    pthread_mutex_unlock(&r->mu);
    if (!pinned) {
        return imgd_fail(IMGD_E_NOT_FOUND, "model '%s' is not pinned: nothing to roll back to",
                         rid);
    }
    st = place_file(p.file, path);
    if (st == IMGD_OK) {
        st = imgd_registry_refresh(r, rid, NULL);
    }
    if (st == IMGD_OK) {
        IMGD_LOG(IMGD_LOG_INFO, "service.registry", "rollback", "%s back to %.10s", rid, p.sha);
    }
    return st;
}

/* ---- component digests ---------------------------------------------------------------------- */

bool imgd_registry_digest_get(imgd_registry *r, const char *path, uint64_t size, int64_t mtime_ns,
                              const char *component, char digest[65]) {
    static const char sql[] = "SELECT digest FROM components WHERE path = ? AND component = ? "
                              "AND size = ? AND mtime_ns = ?";
    bool              found = false;
    sqlite3_stmt     *s     = NULL;
    pthread_mutex_lock(&r->mu);
    if (sqlite3_prepare_v2(r->db, sql, -1, &s, NULL) == SQLITE_OK) {
        (void)sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
        (void)sqlite3_bind_text(s, 2, component, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int64(s, 3, (sqlite3_int64)size);
        (void)sqlite3_bind_int64(s, 4, mtime_ns);
        if (sqlite3_step(s) == SQLITE_ROW) {
            const unsigned char *t = sqlite3_column_text(s, 0);
            found = t && strlen((const char *)t) == 64 && imgd_fmt(digest, 65, "%s", t);
        }
    }
    (void)sqlite3_finalize(s);
    pthread_mutex_unlock(&r->mu);
    return found;
}

void imgd_registry_digest_put(imgd_registry *r, const char *path, uint64_t size, int64_t mtime_ns,
                              const char *component, const char *digest) {
    static const char sql[] = "INSERT OR REPLACE INTO components VALUES (?,?,?,?,?)";
    sqlite3_stmt     *s     = NULL;
    pthread_mutex_lock(&r->mu);
    int rc = sqlite3_prepare_v2(r->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        (void)sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
        (void)sqlite3_bind_text(s, 2, component, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int64(s, 3, (sqlite3_int64)size);
        (void)sqlite3_bind_int64(s, 4, mtime_ns);
        (void)sqlite3_bind_text(s, 5, digest, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
    }
    if (rc != SQLITE_DONE) /* a cache: the digest is computed again next time */
        IMGD_LOG(IMGD_LOG_WARN, "service.registry", "digest_not_stored", "%s: %s", path,
                 sqlite3_errmsg(r->db));
    (void)sqlite3_finalize(s);
    pthread_mutex_unlock(&r->mu);
}
