/* Durable job store on SQLite (see jobstore.h for the guarantees).
 *
 * Durability: the database runs in WAL mode with synchronous=FULL, so every commit fsyncs
 * the WAL before returning; a submit or finish that returned IMGD_OK survives kill -9 and
 * power loss. (synchronous=NORMAL in WAL mode survives kill -9 but can lose the last
 * commits on power loss, which would break "accepted means durable".)
 *
 * Concurrency: one connection behind db_mu; one process per state directory (fcntl lock),
 * so statements that read then write under db_mu need no SQL transaction to be atomic;
 * multi-row changes (claim, recovery) still use one transaction, to commit (and fsync) once.
 * Running jobs' progress and cancel flags live in a small table behind run_mu, which is
 * never held across SQL, so polling it never waits for the disk. Lock order: db_mu, then
 * run_mu. */
#include "service/jobstore.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/map.h"

#define SCHEMA_VERSION 1
#define CLAIM_MAX      4096

/* ---- states ------------------------------------------------------------------------- */

static const char *const k_state_names[] = {"queued", "running", "succeeded", "failed",
                                            "cancelled"};
_Static_assert(IMGD_ARRAY_LEN(k_state_names) == IMGD_JOB_STATE_COUNT, "job state names");

const char *imgd_job_state_name(imgd_job_state s) {
    if ((unsigned)s >= IMGD_JOB_STATE_COUNT) return "unknown";
    return k_state_names[s];
}

imgd_status imgd_job_state_parse(const char *name, imgd_job_state *out) {
    for (size_t i = 0; name && i < IMGD_ARRAY_LEN(k_state_names); i++) {
        if (strcmp(name, k_state_names[i]) == 0) {
            *out = (imgd_job_state)i;
            return IMGD_OK;
        }
    }
    return imgd_fail(IMGD_E_INVALID_ARG,
                     "job state '%s' is unknown; expected queued, running, succeeded, failed or "
                     "cancelled",
                     name ? name : "(null)");
}

bool imgd_job_state_finished(imgd_job_state s) {
    return s == IMGD_JOB_SUCCEEDED || s == IMGD_JOB_FAILED || s == IMGD_JOB_CANCELLED;
}

/* ---- records ------------------------------------------------------------------------ */

static void rec_strings_free(imgd_job_rec *r) {
    imgd_free(r->model);
    imgd_free(r->api);
    imgd_free(r->key_name);
    imgd_free(r->batch_key);
    imgd_free(r->request_json);
    imgd_free(r->result_json);
    imgd_free(r->error_json);
}

void imgd_job_rec_free(imgd_job_rec *rec) {
    if (!rec) return;
    rec_strings_free(rec);
    imgd_free(rec);
}

void imgd_job_rec_list_free(imgd_job_rec **recs, size_t n) {
    if (!recs) return;
    for (size_t i = 0; i < n; i++) imgd_job_rec_free(recs[i]);
    imgd_free(recs);
}

/* ---- statements (one table: name, SQL) ---------------------------------------------- */

#define REC_COLS                                                                                   \
    "id, created_ms, started_ms, finished_ms, updated_ms, deadline_ms, priority, step, steps, "    \
    "attempts, state, model, api, key_name, batch_key, request_json, result_json, error_json, "    \
    "cancel_requested"
#define QUEUE_ORDER " ORDER BY priority DESC, created_ms, rowid"

typedef enum stmt_id {
    ST_INSERT,
    ST_GET,
    ST_STATE,
    ST_CLAIM_NEXT,
    ST_CLAIM_SAME,
    ST_CLAIM_SET,
    ST_FINISH,
    ST_CANCEL_QUEUED,
    ST_CANCEL_RUNNING,
    ST_RELEASE,
    ST_COUNT_STATES,
    ST_EXPIRE,
    ST_GC_JOBS,
    ST_GC_USAGE,
    ST_USAGE_GET,
    ST_USAGE_SET,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_COUNT
} stmt_id;

static const struct {
    const char *name;
    const char *sql;
} k_stmts[] = {
    [ST_INSERT]     = {"insert job",
                       "INSERT INTO jobs (id, created_ms, updated_ms, deadline_ms, priority, steps, "
                           "model, api, key_name, batch_key, request_json, state) "
                           "VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0)"},
    [ST_GET]        = {"get job", "SELECT " REC_COLS " FROM jobs WHERE id = ?1"},
    [ST_STATE]      = {"read job state", "SELECT state FROM jobs WHERE id = ?1"},
    [ST_CLAIM_NEXT] = {"select queued jobs",
                       "SELECT " REC_COLS " FROM jobs WHERE state = 0 AND (?1 IS NULL OR model = "
                       "?1) AND (deadline_ms = 0 OR deadline_ms > ?2)" QUEUE_ORDER " LIMIT ?3"},
    [ST_CLAIM_SAME] =
        {"select queued jobs of a batch",
         "SELECT " REC_COLS " FROM jobs WHERE state = 0 AND batch_key = ?1 AND "
         "model IS ?4 AND id <> ?5 AND (deadline_ms = 0 OR deadline_ms > ?2)" QUEUE_ORDER
         " LIMIT ?3"},
    [ST_CLAIM_SET]      = {"mark job running",
                           "UPDATE jobs SET state = 1, started_ms = ?2, updated_ms = ?2, step = 0, "
                                "attempts = attempts + 1 WHERE id = ?1 AND state = 0"},
    [ST_FINISH]         = {"finish job",
                           "UPDATE jobs SET state = ?2, result_json = ?3, error_json = ?4, finished_ms "
                                   "= ?5, updated_ms = ?5, step = COALESCE(?6, step), steps = COALESCE(?7, "
                                   "steps) WHERE id = ?1 AND state = ?8"},
    [ST_CANCEL_QUEUED]  = {"cancel queued job",
                           "UPDATE jobs SET state = 4, cancel_requested = 1, finished_ms = ?2, "
                            "updated_ms = ?2 WHERE id = ?1 AND state = 0"},
    [ST_CANCEL_RUNNING] = {"request cancel of running job",
                           "UPDATE jobs SET cancel_requested = 1, updated_ms = ?2 WHERE id = ?1 "
                           "AND state = 1"},
    [ST_RELEASE]        = {"release running job",
                           "UPDATE jobs SET state = 0, attempts = MAX(attempts - 1, 0), step = 0, "
                                  "updated_ms = ?2 WHERE id = ?1 AND state = 1"},
    [ST_COUNT_STATES] = {"count jobs by state", "SELECT state, COUNT(*) FROM jobs GROUP BY state"},
    [ST_EXPIRE]       = {"expire queued jobs",
                         "UPDATE jobs SET state = 3, error_json = ?2, finished_ms = ?1, "
                               "updated_ms = ?1 WHERE state = 0 AND deadline_ms > 0 AND deadline_ms "
                               "<= ?1"},
    [ST_GC_JOBS]      = {"delete old finished jobs",
                         "DELETE FROM jobs WHERE state >= 2 AND finished_ms < ?1"},
    [ST_GC_USAGE]     = {"delete old usage rows", "DELETE FROM usage WHERE day < ?1"},
    [ST_USAGE_GET]    = {"read usage", "SELECT images FROM usage WHERE key_name = ?1 AND day = ?2"},
    [ST_USAGE_SET]    = {"write usage",
                         "INSERT INTO usage (key_name, day, images) VALUES (?1, ?2, ?3) ON "
                            "CONFLICT (key_name, day) DO UPDATE SET images = excluded.images"},
    [ST_BEGIN]        = {"begin", "BEGIN IMMEDIATE"},
    [ST_COMMIT]       = {"commit", "COMMIT"},
    [ST_ROLLBACK]     = {"rollback", "ROLLBACK"},
};
_Static_assert(IMGD_ARRAY_LEN(k_stmts) == ST_COUNT, "statement table");

static const char k_schema[] =
    "CREATE TABLE IF NOT EXISTS jobs ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL DEFAULT 0,"
    " finished_ms INTEGER NOT NULL DEFAULT 0,"
    " updated_ms INTEGER NOT NULL,"
    " deadline_ms INTEGER NOT NULL DEFAULT 0,"
    " priority INTEGER NOT NULL DEFAULT 0,"
    " step INTEGER NOT NULL DEFAULT 0,"
    " steps INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " state INTEGER NOT NULL,"
    " model TEXT, api TEXT, key_name TEXT, batch_key TEXT,"
    " request_json TEXT NOT NULL, result_json TEXT, error_json TEXT,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority DESC, created_ms);"
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, finished_ms);"
    "CREATE TABLE IF NOT EXISTS usage ("
    " key_name TEXT NOT NULL, day TEXT NOT NULL, images INTEGER NOT NULL,"
    " PRIMARY KEY (key_name, day)) WITHOUT ROWID;";

/* ---- the store ---------------------------------------------------------------------- */

typedef struct run_entry {
    char    id[IMGD_JOB_ID_LEN + 1];
    int32_t step, steps;
    bool    cancel;
} run_entry;

struct imgd_jobstore {
    char                *dir;
    char                *db_path;
    sqlite3             *db;
    sqlite3_stmt        *st[ST_COUNT];
    int                  lock_fd;
    imgd_jobstore_params params;
    pthread_mutex_t      db_mu;
    pthread_mutex_t      run_mu;
    run_entry           *run; /* running jobs claimed through this store */
    size_t               n_run, cap_run;
    bool                 mu_init;
};

static int64_t now_ms(const imgd_jobstore *js) {
    if (js->params.now_ms) return js->params.now_ms(js->params.now_user);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Turns a SQLite result code into an imgd error naming the statement. */
static imgd_status db_fail(const imgd_jobstore *js, const char *what, int rc) {
    imgd_status st = rc == SQLITE_NOMEM ? IMGD_E_NOMEM : IMGD_E_IO;
    return imgd_fail(st, "job store %s: %s: %s (sqlite error %d)", js->db_path, what,
                     js->db ? sqlite3_errmsg(js->db) : sqlite3_errstr(rc), rc);
}

static sqlite3_stmt *stmt(imgd_jobstore *js, stmt_id id) {
    sqlite3_stmt *s = js->st[id];
    (void)sqlite3_reset(s); /* the error of a previous step was already reported */
    (void)sqlite3_clear_bindings(s);
    return s;
}

/* Steps a statement that returns no rows. */
static imgd_status stmt_done(imgd_jobstore *js, stmt_id id, sqlite3_stmt *s) {
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) {
        imgd_status st = db_fail(js, k_stmts[id].name, rc);
        (void)sqlite3_reset(s);
        return st;
    }
    (void)sqlite3_reset(s);
    return IMGD_OK;
}

static imgd_status run_sql(imgd_jobstore *js, stmt_id id) {
    return stmt_done(js, id, stmt(js, id));
}

static imgd_status tx_begin(imgd_jobstore *js) {
    return run_sql(js, ST_BEGIN);
}

static imgd_status tx_commit(imgd_jobstore *js) {
    imgd_status st = run_sql(js, ST_COMMIT);
    if (st != IMGD_OK && !sqlite3_get_autocommit(js->db)) {
        (void)run_sql(js, ST_ROLLBACK); /* the commit's error is the one to report */
    }
    return st;
}

static void tx_rollback(imgd_jobstore *js) {
    if (!sqlite3_get_autocommit(js->db)) {
        (void)run_sql(js, ST_ROLLBACK); /* best effort; the first error is reported */
    }
}

/* Copies a text column; NULL stays NULL. */
static imgd_status col_text(sqlite3_stmt *s, int col, char **out) {
    *out = NULL;
    if (sqlite3_column_type(s, col) == SQLITE_NULL) return IMGD_OK;
    const unsigned char *t = sqlite3_column_text(s, col);
    if (!t) return imgd_fail(IMGD_E_NOMEM, "job store: out of memory reading a text column");
    *out = imgd_strdup((const char *)t);
    if (!*out) return imgd_fail(IMGD_E_NOMEM, "job store: out of memory copying a text column");
    return IMGD_OK;
}

/* Reads a row of REC_COLS into a new record. */
static imgd_status row_to_rec(sqlite3_stmt *s, imgd_job_rec **out) {
    imgd_job_rec *r = imgd_calloc(1, sizeof *r);
    if (!r) return imgd_fail(IMGD_E_NOMEM, "job store: out of memory for a job record");
    const unsigned char *id = sqlite3_column_text(s, 0);
    if (id) {
        (void)snprintf(r->id, sizeof r->id, "%s", (const char *)id); /* ids are 32 chars */
    }
    r->created_ms  = sqlite3_column_int64(s, 1);
    r->started_ms  = sqlite3_column_int64(s, 2);
    r->finished_ms = sqlite3_column_int64(s, 3);
    r->updated_ms  = sqlite3_column_int64(s, 4);
    r->deadline_ms = sqlite3_column_int64(s, 5);
    r->priority    = sqlite3_column_int(s, 6);
    r->step        = sqlite3_column_int(s, 7);
    r->steps       = sqlite3_column_int(s, 8);
    r->attempts    = sqlite3_column_int(s, 9);
    int state      = sqlite3_column_int(s, 10);
    r->state = state >= 0 && state < IMGD_JOB_STATE_COUNT ? (imgd_job_state)state : IMGD_JOB_FAILED;
    r->cancel_requested = sqlite3_column_int(s, 18) != 0;
    char **cols[]       = {&r->model,        &r->api,         &r->key_name,  &r->batch_key,
                           &r->request_json, &r->result_json, &r->error_json};
    for (int i = 0; i < (int)IMGD_ARRAY_LEN(cols); i++) {
        imgd_status st = col_text(s, 11 + i, cols[i]);
        if (st != IMGD_OK) {
            imgd_job_rec_free(r);
            return st;
        }
    }
    *out = r;
    return IMGD_OK;
}

/* ---- running-job table (run_mu) ------------------------------------------------------ */

static run_entry *run_find(imgd_jobstore *js, const char *id) {
    for (size_t i = 0; i < js->n_run; i++) {
        if (strcmp(js->run[i].id, id) == 0) return &js->run[i];
    }
    return NULL;
}

/* Makes room for n more entries, so adding them after a commit cannot fail. */
static imgd_status run_reserve(imgd_jobstore *js, size_t n) {
    pthread_mutex_lock(&js->run_mu);
    imgd_status st = IMGD_OK;
    size_t      need;
    if (!imgd_size_add(js->n_run, n, &need)) {
        st = imgd_fail(IMGD_E_TOO_LARGE, "job store: too many running jobs");
    } else if (need > js->cap_run) {
        size_t cap = IMGD_MAX(need, js->cap_run * 2);
        size_t bytes;
        void  *p = NULL;
        if (imgd_size_mul(cap, sizeof *js->run, &bytes)) p = imgd_realloc(js->run, bytes);
        if (!p) {
            st = imgd_fail(IMGD_E_NOMEM, "job store: out of memory for the running-job table");
        } else {
            js->run     = p;
            js->cap_run = cap;
        }
    }
    pthread_mutex_unlock(&js->run_mu);
    return st;
}

static void run_add(imgd_jobstore *js, const imgd_job_rec *r) {
    pthread_mutex_lock(&js->run_mu);
    IMGD_ASSERT(js->n_run < js->cap_run); /* run_reserve came first */
    run_entry *e = &js->run[js->n_run++];
    memcpy(e->id, r->id, sizeof e->id - 1);
    e->id[sizeof e->id - 1] = '\0';
    e->step                 = 0;
    e->steps                = r->steps;
    e->cancel               = r->cancel_requested;
    pthread_mutex_unlock(&js->run_mu);
}

/* Removes id, reporting its last progress (step and steps untouched when absent). */
static bool run_remove(imgd_jobstore *js, const char *id, int32_t *step, int32_t *steps) {
    pthread_mutex_lock(&js->run_mu);
    run_entry *e     = run_find(js, id);
    bool       found = e != NULL;
    if (e) {
        if (step) *step = e->step;
        if (steps) *steps = e->steps;
        *e = js->run[--js->n_run];
    }
    pthread_mutex_unlock(&js->run_mu);
    return found;
}

/* ---- open / close -------------------------------------------------------------------- */

imgd_jobstore_params imgd_jobstore_params_default(void) {
    imgd_jobstore_params p = {0};
    p.attempts_max         = 3;
    p.busy_timeout_ms      = 5000;
    return p;
}

/* mkdir -p with mode 0700 for the folders it creates. */
static imgd_status make_dirs(const char *dir) {
    char       *p  = imgd_strdup(dir);
    size_t      n  = p ? strlen(p) : 0;
    imgd_status st = IMGD_OK;
    if (!p) return imgd_fail(IMGD_E_NOMEM, "job store: out of memory");
    for (size_t i = 1; i <= n && st == IMGD_OK; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i]   = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            st =
                imgd_fail(IMGD_E_IO, "state dir %s: cannot create %s: %s", dir, p, strerror(errno));
        }
        p[i] = c;
    }
    imgd_free(p);
    if (st == IMGD_OK && !imgd_path_is_dir(dir)) {
        st = imgd_fail(IMGD_E_IO,
                       "state dir %s exists but is not a directory; pass --state DIR "
                       "naming a folder",
                       dir);
    }
    return st;
}

static imgd_status lock_dir(imgd_jobstore *js) {
    char *path = imgd_path_join(js->dir, "jobs.lock");
    if (!path) return imgd_fail(IMGD_E_NOMEM, "job store: out of memory");
    js->lock_fd    = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    imgd_status st = IMGD_OK;
    if (js->lock_fd < 0) {
        st = imgd_fail(IMGD_E_IO, "job store: cannot open %s: %s", path, strerror(errno));
    } else {
        struct flock fl = {0};
        fl.l_type       = F_WRLCK;
        fl.l_whence     = SEEK_SET;
        if (fcntl(js->lock_fd, F_SETLK, &fl) != 0) {
            st = imgd_fail(IMGD_E_IO,
                           "state dir %s is in use by another imgd process (%s is locked: %s); "
                           "stop it or pass a different --state DIR",
                           js->dir, path, strerror(errno));
        }
    }
    imgd_free(path);
    return st;
}

static imgd_status exec_sql(imgd_jobstore *js, const char *what, const char *sql) {
    char *err = NULL;
    int   rc  = sqlite3_exec(js->db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        imgd_status st = imgd_fail(rc == SQLITE_NOMEM ? IMGD_E_NOMEM : IMGD_E_IO,
                                   "job store %s: %s: %s (sqlite error %d)", js->db_path, what,
                                   err ? err : sqlite3_errstr(rc), rc);
        sqlite3_free(err);
        return st;
    }
    return IMGD_OK;
}

/* Returns the integer a one-row pragma query gives (user_version). */
static imgd_status query_int(imgd_jobstore *js, const char *what, const char *sql, int64_t *out) {
    sqlite3_stmt *s  = NULL;
    int           rc = sqlite3_prepare_v2(js->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    imgd_status st = IMGD_OK;
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
    } else {
        st = db_fail(js, what, rc);
    }
    (void)sqlite3_finalize(s);
    return st;
}

static imgd_status setup_schema(imgd_jobstore *js) {
    sqlite3_stmt *s  = NULL;
    int           rc = sqlite3_prepare_v2(js->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    bool wal = rc == SQLITE_ROW && sqlite3_column_text(s, 0) &&
               strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0;
    imgd_status st = rc == SQLITE_ROW ? IMGD_OK : db_fail(js, "PRAGMA journal_mode = WAL", rc);
    (void)sqlite3_finalize(s);
    if (st != IMGD_OK) return st;
    if (!wal) {
        return imgd_fail(IMGD_E_IO,
                         "job store %s: the file system refused WAL mode; put --state on a local "
                         "disk",
                         js->db_path);
    }
    st = exec_sql(js, "PRAGMA synchronous = FULL", "PRAGMA synchronous = FULL");
    if (st != IMGD_OK) return st;
    int64_t version = 0;
    st              = query_int(js, "PRAGMA user_version", "PRAGMA user_version", &version);
    if (st != IMGD_OK) return st;
    if (version > SCHEMA_VERSION) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "job store %s has schema version %lld, newer than this imgd's %d; "
                         "upgrade imgd or use another --state DIR",
                         js->db_path, (long long)version, SCHEMA_VERSION);
    }
    st = exec_sql(js, "create schema", k_schema);
    if (st == IMGD_OK && version < SCHEMA_VERSION) {
        st = exec_sql(js, "PRAGMA user_version", "PRAGMA user_version = 1");
    }
    return st;
}

/* Crash recovery: decide the fate of every job a previous process left RUNNING. */
static imgd_status recover(imgd_jobstore *js) {
    char    sql[1024];
    int64_t now = now_ms(js);
    int     n   = snprintf(
              sql, sizeof sql,
              "UPDATE jobs SET state = 4, finished_ms = %lld, updated_ms = %lld "
                    "WHERE state IN (0, 1) AND cancel_requested = 1;"
                    "UPDATE jobs SET state = 3, finished_ms = %lld, updated_ms = %lld, error_json = "
                    "printf('{\"title\":\"job crashed the worker\",\"status\":500,\"code\":\"internal_error\","
                    "\"detail\":\"the worker stopped %%d times while running this job, so it is not retried; "
                    "check the worker log and the request\"}', attempts) "
                    "WHERE state = 1 AND attempts >= %d;"
                    "UPDATE jobs SET state = 0, step = 0, updated_ms = %lld WHERE state = 1;",
              (long long)now, (long long)now, (long long)now, (long long)now,
              (int)js->params.attempts_max, (long long)now);
    IMGD_ASSERT(n > 0 && (size_t)n < sizeof sql);
    imgd_status st = tx_begin(js);
    if (st == IMGD_OK) st = exec_sql(js, "recover running jobs", sql);
    if (st == IMGD_OK) {
        st = tx_commit(js);
    } else {
        tx_rollback(js);
    }
    return st;
}

imgd_status imgd_jobstore_open(const char *state_dir, const imgd_jobstore_params *params,
                               imgd_jobstore **out) {
    if (!state_dir || !*state_dir || !out) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_open: state_dir and out are required");
    }
    imgd_jobstore_params p = params ? *params : imgd_jobstore_params_default();
    if (p.attempts_max < 1 || p.attempts_max > 1000) {
        return imgd_fail(IMGD_E_INVALID_ARG, "job store: attempts_max %d is out of range 1..1000",
                         (int)p.attempts_max);
    }
    imgd_status st = make_dirs(state_dir);
    if (st != IMGD_OK) return st;
    imgd_jobstore *js = imgd_calloc(1, sizeof *js);
    if (!js) return imgd_fail(IMGD_E_NOMEM, "job store: out of memory");
    js->lock_fd = -1;
    js->params  = p;
    js->dir     = imgd_strdup(state_dir);
    js->db_path = js->dir ? imgd_path_join(state_dir, "jobs.sqlite3") : NULL;
    if (!js->db_path) {
        st = imgd_fail(IMGD_E_NOMEM, "job store: out of memory");
        goto fail;
    }
    if (pthread_mutex_init(&js->db_mu, NULL) != 0) {
        st = imgd_fail(IMGD_E_NOMEM, "job store: cannot create a mutex");
        goto fail;
    }
    if (pthread_mutex_init(&js->run_mu, NULL) != 0) {
        pthread_mutex_destroy(&js->db_mu);
        st = imgd_fail(IMGD_E_NOMEM, "job store: cannot create a mutex");
        goto fail;
    }
    js->mu_init = true;
    st          = lock_dir(js);
    if (st != IMGD_OK) goto fail;
    int rc =
        sqlite3_open_v2(js->db_path, &js->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        st = db_fail(js, "open", rc);
        goto fail;
    }
    (void)sqlite3_busy_timeout(js->db, p.busy_timeout_ms); /* only fails on a NULL db */
    st = setup_schema(js);
    if (st != IMGD_OK) goto fail;
    for (int i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(js->db, k_stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT, &js->st[i],
                                NULL);
        if (rc != SQLITE_OK) {
            st = db_fail(js, k_stmts[i].name, rc);
            goto fail;
        }
    }
    st = recover(js);
    if (st != IMGD_OK) goto fail;
    *out = js;
    return IMGD_OK;
fail:
    imgd_jobstore_close(js);
    return st;
}

void imgd_jobstore_close(imgd_jobstore *js) {
    if (!js) return;
    for (int i = 0; i < ST_COUNT; i++) (void)sqlite3_finalize(js->st[i]);
    (void)sqlite3_close(js->db); /* all statements are finalized, so it cannot be busy */
    if (js->lock_fd >= 0) (void)close(js->lock_fd); /* releases the lock */
    if (js->mu_init) {
        pthread_mutex_destroy(&js->db_mu);
        pthread_mutex_destroy(&js->run_mu);
    }
    imgd_free(js->run);
    imgd_free(js->db_path);
    imgd_free(js->dir);
    imgd_free(js);
}

/* ---- submit / get -------------------------------------------------------------------- */

static imgd_status random_id(char out[IMGD_JOB_ID_LEN + 1]) {
    uint8_t b[IMGD_JOB_ID_LEN / 2];
    size_t  got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return imgd_fail(IMGD_E_IO, "job store: getrandom failed: %s", strerror(errno));
        got += (size_t)r;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof b; i++) {
        out[2 * i]     = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[IMGD_JOB_ID_LEN] = '\0';
    return IMGD_OK;
}

imgd_status imgd_jobstore_submit(imgd_jobstore *js, imgd_job_rec *rec) {
    if (!js || !rec || !rec->request_json) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_submit: request_json is required");
    }
    char        id[IMGD_JOB_ID_LEN + 1];
    imgd_status st = random_id(id);
    if (st != IMGD_OK) return st;
    pthread_mutex_lock(&js->db_mu);
    int64_t       now = now_ms(js);
    sqlite3_stmt *s   = stmt(js, ST_INSERT);
    (void)sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    (void)sqlite3_bind_int64(s, 2, now);
    (void)sqlite3_bind_int64(s, 3, rec->deadline_ms);
    (void)sqlite3_bind_int(s, 4, rec->priority);
    (void)sqlite3_bind_int(s, 5, rec->steps);
    (void)sqlite3_bind_text(s, 6, rec->model, -1, SQLITE_STATIC);
    (void)sqlite3_bind_text(s, 7, rec->api, -1, SQLITE_STATIC);
    (void)sqlite3_bind_text(s, 8, rec->key_name, -1, SQLITE_STATIC);
    (void)sqlite3_bind_text(s, 9, rec->batch_key, -1, SQLITE_STATIC);
    (void)sqlite3_bind_text(s, 10, rec->request_json, -1, SQLITE_STATIC);
    st = stmt_done(js, ST_INSERT, s);
    (void)sqlite3_clear_bindings(s); /* the bound strings belong to the caller */
    pthread_mutex_unlock(&js->db_mu);
    if (st != IMGD_OK) return st;
    memcpy(rec->id, id, sizeof id);
    rec->created_ms       = now;
    rec->updated_ms       = now;
    rec->state            = IMGD_JOB_QUEUED;
    rec->attempts         = 0;
    rec->cancel_requested = false;
    return IMGD_OK;
}

/* Overlays live progress on a running record. */
static void rec_live(imgd_jobstore *js, imgd_job_rec *r) {
    if (r->state != IMGD_JOB_RUNNING) return;
    pthread_mutex_lock(&js->run_mu);
    const run_entry *e = run_find(js, r->id);
    if (e) {
        r->step             = e->step;
        r->steps            = e->steps;
        r->cancel_requested = r->cancel_requested || e->cancel;
    }
    pthread_mutex_unlock(&js->run_mu);
}

imgd_status imgd_jobstore_get(imgd_jobstore *js, const char *id, imgd_job_rec **out) {
    if (!js || !id || !out) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_get: NULL argument");
    }
    pthread_mutex_lock(&js->db_mu);
    sqlite3_stmt *s = stmt(js, ST_GET);
    (void)sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int           rc = sqlite3_step(s);
    imgd_job_rec *r  = NULL;
    imgd_status   st;
    if (rc == SQLITE_ROW) {
        st = row_to_rec(s, &r);
    } else if (rc == SQLITE_DONE) {
        st = imgd_fail(IMGD_E_NOT_FOUND, "job %.64s not found (unknown id, or removed by gc)", id);
    } else {
        st = db_fail(js, k_stmts[ST_GET].name, rc);
    }
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&js->db_mu);
    if (st != IMGD_OK) return st;
    rec_live(js, r);
    *out = r;
    return IMGD_OK;
}

/* ---- claim --------------------------------------------------------------------------- */

typedef struct rec_list {
    imgd_job_rec **v;
    size_t         n, cap;
} rec_list;

/* Appends the rows a bound SELECT of REC_COLS returns. */
static imgd_status collect_rows(imgd_jobstore *js, stmt_id id, sqlite3_stmt *s, rec_list *l) {
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) return db_fail(js, k_stmts[id].name, rc);
        IMGD_ASSERT(l->n < l->cap); /* LIMIT keeps it within the array */
        imgd_status st = row_to_rec(s, &l->v[l->n]);
        if (st != IMGD_OK) return st;
        l->n++;
    }
    return IMGD_OK;
}

static imgd_status claim_select(imgd_jobstore *js, const char *model, int32_t max, bool batch,
                                int64_t now, rec_list *l) {
    sqlite3_stmt *s = stmt(js, ST_CLAIM_NEXT);
    (void)sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    (void)sqlite3_bind_int64(s, 2, now);
    (void)sqlite3_bind_int(s, 3, batch ? 1 : max);
    imgd_status st = collect_rows(js, ST_CLAIM_NEXT, s, l);
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    if (st != IMGD_OK || !batch || l->n == 0 || !l->v[0]->batch_key || max == 1) return st;
    const imgd_job_rec *first = l->v[0];
    s                         = stmt(js, ST_CLAIM_SAME);
    (void)sqlite3_bind_text(s, 1, first->batch_key, -1, SQLITE_STATIC);
    (void)sqlite3_bind_int64(s, 2, now);
    (void)sqlite3_bind_int(s, 3, max - 1);
    (void)sqlite3_bind_text(s, 4, first->model, -1, SQLITE_STATIC);
    (void)sqlite3_bind_text(s, 5, first->id, -1, SQLITE_STATIC);
    st = collect_rows(js, ST_CLAIM_SAME, s, l);
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    return st;
}

static imgd_status claim_common(imgd_jobstore *js, const char *model, int32_t max, bool batch,
                                imgd_job_rec ***out, size_t *n) {
    if (!js || !out || !n || max < 1 || max > CLAIM_MAX) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_claim: max %d is out of range 1..%d",
                         (int)max, CLAIM_MAX);
    }
    rec_list l = {0};
    l.cap      = (size_t)max;
    l.v        = imgd_calloc(l.cap, sizeof(imgd_job_rec *));
    if (!l.v) return imgd_fail(IMGD_E_NOMEM, "job store: out of memory for claimed jobs");
    pthread_mutex_lock(&js->db_mu);
    /* Under db_mu: every run_add happens under it too, so the room cannot be taken. */
    imgd_status st  = run_reserve(js, l.cap);
    int64_t     now = now_ms(js);
    if (st == IMGD_OK) st = tx_begin(js);
    if (st == IMGD_OK) st = claim_select(js, model, max, batch, now, &l);
    for (size_t i = 0; st == IMGD_OK && i < l.n; i++) {
        sqlite3_stmt *s = stmt(js, ST_CLAIM_SET);
        (void)sqlite3_bind_text(s, 1, l.v[i]->id, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int64(s, 2, now);
        st = stmt_done(js, ST_CLAIM_SET, s);
        (void)sqlite3_clear_bindings(s);
    }
    if (st == IMGD_OK) {
        st = tx_commit(js);
    } else {
        tx_rollback(js);
    }
    if (st == IMGD_OK) {
        for (size_t i = 0; i < l.n; i++) {
            imgd_job_rec *r = l.v[i];
            r->state        = IMGD_JOB_RUNNING;
            r->started_ms   = now;
            r->updated_ms   = now;
            r->step         = 0;
            r->attempts++;
            run_add(js, r);
        }
    }
    pthread_mutex_unlock(&js->db_mu);
    if (st != IMGD_OK || l.n == 0) {
        imgd_job_rec_list_free(l.v, l.n);
        if (st != IMGD_OK) return st;
        l.v = NULL;
    }
    *out = l.v;
    *n   = l.n;
    return IMGD_OK;
}

imgd_status imgd_jobstore_claim(imgd_jobstore *js, const char *model, int32_t max,
                                imgd_job_rec ***out, size_t *n) {
    return claim_common(js, model, max, false, out, n);
}

imgd_status imgd_jobstore_claim_batch(imgd_jobstore *js, const char *model, int32_t max,
                                      imgd_job_rec ***out, size_t *n) {
    return claim_common(js, model, max, true, out, n);
}

/* ---- progress / finish / cancel / release ------------------------------------------- */

imgd_status imgd_jobstore_progress(imgd_jobstore *js, const char *id, int32_t step, int32_t steps) {
    if (!js || !id) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_progress: NULL argument");
    pthread_mutex_lock(&js->run_mu);
    run_entry *e = run_find(js, id);
    if (e) {
        e->step  = step;
        e->steps = steps;
    }
    pthread_mutex_unlock(&js->run_mu);
    if (!e) return imgd_fail(IMGD_E_NOT_FOUND, "job %.64s is not running in this worker", id);
    return IMGD_OK;
}

/* Reads a job's state (db_mu held). */
static imgd_status read_state(imgd_jobstore *js, const char *id, imgd_job_state *out) {
    sqlite3_stmt *s = stmt(js, ST_STATE);
    (void)sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int         rc = sqlite3_step(s);
    imgd_status st = IMGD_OK;
    if (rc == SQLITE_ROW) {
        int v = sqlite3_column_int(s, 0);
        *out  = v >= 0 && v < IMGD_JOB_STATE_COUNT ? (imgd_job_state)v : IMGD_JOB_FAILED;
    } else if (rc == SQLITE_DONE) {
        st = imgd_fail(IMGD_E_NOT_FOUND, "job %.64s not found (unknown id, or removed by gc)", id);
    } else {
        st = db_fail(js, k_stmts[ST_STATE].name, rc);
    }
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    return st;
}

static imgd_status finish_check(imgd_job_state cur, imgd_job_state final, const char *id,
                                const char *result_json) {
    if (!imgd_job_state_finished(final)) {
        return imgd_fail(
            IMGD_E_INVALID_ARG,
            "finish job %s: final state must be succeeded, failed or cancelled, not %s", id,
            imgd_job_state_name(final));
    }
    if (final == IMGD_JOB_SUCCEEDED && !result_json) {
        return imgd_fail(IMGD_E_INVALID_ARG, "finish job %s: succeeded needs a result_json", id);
    }
    bool ok = cur == IMGD_JOB_RUNNING || (cur == IMGD_JOB_QUEUED && final != IMGD_JOB_SUCCEEDED);
    if (!ok) {
        return imgd_fail(IMGD_E_INVALID_ARG, "finish job %s as %s: the job is %s, not running", id,
                         imgd_job_state_name(final), imgd_job_state_name(cur));
    }
    return IMGD_OK;
}

imgd_status imgd_jobstore_finish(imgd_jobstore *js, const char *id, imgd_job_state final,
                                 const char *result_json, const char *error_json) {
    if (!js || !id) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_finish: NULL argument");
    pthread_mutex_lock(&js->db_mu);
    imgd_job_state cur;
    imgd_status    st = read_state(js, id, &cur);
    if (st == IMGD_OK) st = finish_check(cur, final, id, result_json);
    if (st == IMGD_OK) {
        int32_t step = 0, steps = 0;
        pthread_mutex_lock(&js->run_mu);
        const run_entry *e    = run_find(js, id);
        bool             live = e != NULL;
        if (e) {
            step  = e->step;
            steps = e->steps;
        }
        pthread_mutex_unlock(&js->run_mu);
        if (final == IMGD_JOB_SUCCEEDED && steps > 0) step = steps;
        sqlite3_stmt *s = stmt(js, ST_FINISH);
        (void)sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int(s, 2, (int) final);
        (void)sqlite3_bind_text(s, 3, result_json, -1, SQLITE_STATIC);
        (void)sqlite3_bind_text(s, 4, error_json, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int64(s, 5, now_ms(js));
        if (live) {
            (void)sqlite3_bind_int(s, 6, step);
            (void)sqlite3_bind_int(s, 7, steps);
        }
        (void)sqlite3_bind_int(s, 8, (int)cur);
        st = stmt_done(js, ST_FINISH, s);
        (void)sqlite3_clear_bindings(s);
        if (st == IMGD_OK) (void)run_remove(js, id, NULL, NULL);
    }
    pthread_mutex_unlock(&js->db_mu);
    return st;
}

imgd_status imgd_jobstore_cancel(imgd_jobstore *js, const char *id, imgd_job_state *state_after) {
    if (!js || !id) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_cancel: NULL argument");
    pthread_mutex_lock(&js->db_mu);
    imgd_job_state cur;
    imgd_status    st = read_state(js, id, &cur);
    if (st == IMGD_OK && (cur == IMGD_JOB_QUEUED || cur == IMGD_JOB_RUNNING)) {
        stmt_id       sid = cur == IMGD_JOB_QUEUED ? ST_CANCEL_QUEUED : ST_CANCEL_RUNNING;
        sqlite3_stmt *s   = stmt(js, sid);
        (void)sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int64(s, 2, now_ms(js));
        st = stmt_done(js, sid, s);
        (void)sqlite3_clear_bindings(s);
        if (st == IMGD_OK && cur == IMGD_JOB_QUEUED) cur = IMGD_JOB_CANCELLED;
        if (st == IMGD_OK && cur == IMGD_JOB_RUNNING) {
            pthread_mutex_lock(&js->run_mu);
            run_entry *e = run_find(js, id);
            if (e) e->cancel = true;
            pthread_mutex_unlock(&js->run_mu);
        }
    }
    pthread_mutex_unlock(&js->db_mu);
    if (st == IMGD_OK && state_after) *state_after = cur;
    return st;
}

bool imgd_jobstore_cancel_requested(imgd_jobstore *js, const char *id) {
    if (!js || !id) return false;
    pthread_mutex_lock(&js->run_mu);
    const run_entry *e      = run_find(js, id);
    bool             cancel = e && e->cancel;
    pthread_mutex_unlock(&js->run_mu);
    return cancel;
}

imgd_status imgd_jobstore_release(imgd_jobstore *js, const char *id) {
    if (!js || !id) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_release: NULL argument");
    pthread_mutex_lock(&js->db_mu);
    imgd_job_state cur;
    imgd_status    st = read_state(js, id, &cur);
    if (st == IMGD_OK && cur != IMGD_JOB_RUNNING) {
        st = imgd_fail(IMGD_E_INVALID_ARG, "release job %s: the job is %s, not running", id,
                       imgd_job_state_name(cur));
    }
    if (st == IMGD_OK) {
        sqlite3_stmt *s = stmt(js, ST_RELEASE);
        (void)sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        (void)sqlite3_bind_int64(s, 2, now_ms(js));
        st = stmt_done(js, ST_RELEASE, s);
        (void)sqlite3_clear_bindings(s);
        if (st == IMGD_OK) (void)run_remove(js, id, NULL, NULL);
    }
    pthread_mutex_unlock(&js->db_mu);
    return st;
}

/* ---- counts, expiry, gc -------------------------------------------------------------- */

imgd_status imgd_jobstore_count(imgd_jobstore *js, size_t counts[IMGD_JOB_STATE_COUNT]) {
    if (!js || !counts) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_count: NULL argument");
    size_t c[IMGD_JOB_STATE_COUNT] = {0};
    pthread_mutex_lock(&js->db_mu);
    sqlite3_stmt *s  = stmt(js, ST_COUNT_STATES);
    imgd_status   st = IMGD_OK;
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) {
            st = db_fail(js, k_stmts[ST_COUNT_STATES].name, rc);
            break;
        }
        int     state = sqlite3_column_int(s, 0);
        int64_t n     = sqlite3_column_int64(s, 1);
        if (state >= 0 && state < IMGD_JOB_STATE_COUNT && n > 0) c[state] = (size_t)n;
    }
    (void)sqlite3_reset(s);
    pthread_mutex_unlock(&js->db_mu);
    if (st == IMGD_OK) memcpy(counts, c, sizeof c);
    return st;
}

static const char k_expired_json[] =
    "{\"title\":\"job timed out in the queue\",\"status\":504,\"code\":\"timeout\","
    "\"detail\":\"the job was still queued at its deadline; submit it again with a later "
    "deadline, or when the queue is shorter\"}";

imgd_status imgd_jobstore_expire(imgd_jobstore *js, int64_t now, size_t *n_expired) {
    if (!js) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_expire: NULL store");
    pthread_mutex_lock(&js->db_mu);
    sqlite3_stmt *s = stmt(js, ST_EXPIRE);
    (void)sqlite3_bind_int64(s, 1, now);
    (void)sqlite3_bind_text(s, 2, k_expired_json, -1, SQLITE_STATIC);
    imgd_status st = stmt_done(js, ST_EXPIRE, s);
    int64_t     n  = sqlite3_changes64(js->db);
    pthread_mutex_unlock(&js->db_mu);
    if (st == IMGD_OK && n_expired) *n_expired = (size_t)n;
    return st;
}

void imgd_jobstore_utc_day(int64_t ms, char out[32]) {
    time_t    t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        (void)snprintf(out, 32, "0000-00-00");
        return;
    }
    (void)snprintf(out, 32, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

imgd_status imgd_jobstore_gc(imgd_jobstore *js, int64_t older_than_ms, size_t *n_deleted) {
    if (!js) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_gc: NULL store");
    char day[32];
    imgd_jobstore_utc_day(older_than_ms - 86400000, day);
    pthread_mutex_lock(&js->db_mu);
    sqlite3_stmt *s = stmt(js, ST_GC_JOBS);
    (void)sqlite3_bind_int64(s, 1, older_than_ms);
    imgd_status st = stmt_done(js, ST_GC_JOBS, s);
    int64_t     n  = sqlite3_changes64(js->db);
    if (st == IMGD_OK) {
        s = stmt(js, ST_GC_USAGE);
        (void)sqlite3_bind_text(s, 1, day, -1, SQLITE_STATIC);
        st = stmt_done(js, ST_GC_USAGE, s);
        (void)sqlite3_clear_bindings(s);
    }
    pthread_mutex_unlock(&js->db_mu);
    if (st == IMGD_OK && n_deleted) *n_deleted = (size_t)n;
    return st;
}

/* ---- usage counters ------------------------------------------------------------------ */

imgd_status imgd_jobstore_usage_add(imgd_jobstore *js, const char *key_name, const char *day,
                                    int64_t n, int64_t limit, int64_t *total, bool *added) {
    if (!js || !key_name || !day || !total || !added) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_jobstore_usage_add: NULL argument");
    }
    pthread_mutex_lock(&js->db_mu);
    sqlite3_stmt *s = stmt(js, ST_USAGE_GET);
    (void)sqlite3_bind_text(s, 1, key_name, -1, SQLITE_STATIC);
    (void)sqlite3_bind_text(s, 2, day, -1, SQLITE_STATIC);
    int         rc  = sqlite3_step(s);
    int64_t     cur = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    imgd_status st  = rc == SQLITE_ROW || rc == SQLITE_DONE
                          ? IMGD_OK
                          : db_fail(js, k_stmts[ST_USAGE_GET].name, rc);
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
    int64_t next = cur;
    bool    ok   = false;
    if (st == IMGD_OK) {
        if (n < 0) {
            next = cur + n < 0 ? 0 : cur + n;
        } else if (__builtin_add_overflow(cur, n, &next)) {
            next = INT64_MAX;
        }
        ok = limit < 0 || next <= limit || n <= 0;
        if (ok && next != cur) {
            s = stmt(js, ST_USAGE_SET);
            (void)sqlite3_bind_text(s, 1, key_name, -1, SQLITE_STATIC);
            (void)sqlite3_bind_text(s, 2, day, -1, SQLITE_STATIC);
            (void)sqlite3_bind_int64(s, 3, next);
            st = stmt_done(js, ST_USAGE_SET, s);
            (void)sqlite3_clear_bindings(s);
        }
    }
    pthread_mutex_unlock(&js->db_mu);
    if (st != IMGD_OK) return st;
    *total = ok ? next : cur;
    *added = ok;
    return IMGD_OK;
}
