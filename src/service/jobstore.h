/* Durable job store: accepted jobs, their state and results in SQLite (WAL) under the
 * server's state directory (DESIGN "service"; issue 6 "The queue").
 *
 * Guarantees:
 *   - A job is durable when imgd_jobstore_submit returns IMGD_OK (synchronous=FULL: the WAL
 *     is fsynced at every commit), so the HTTP layer may answer "accepted" after it.
 *   - A result is durable when imgd_jobstore_finish returns IMGD_OK; a finished job never
 *     runs again and its result stays fetchable until imgd_jobstore_gc removes it.
 *   - After a crash (kill -9, power loss) or a restart, imgd_jobstore_open puts every job
 *     that was RUNNING back to QUEUED (or FAILS it once it has been started attempts_max
 *     times: it probably crashes the worker), and cancels those whose cancel was requested.
 *   - Only one process may open a state directory at a time (an fcntl lock on
 *     STATE_DIR/jobs.lock); a second gets IMGD_E_IO naming the directory.
 *
 * Progress (step/steps) and the cancel flag of running jobs are kept in memory, so the
 * scheduler can report and poll them at every step without touching the disk.
 *
 * Thread-safety: every function is safe from any thread on a shared store (one SQLite
 * connection behind a mutex; progress and cancel flags behind a second one, so
 * imgd_jobstore_cancel_requested never waits for disk I/O). */
#ifndef IMGD_SERVICE_JOBSTORE_H
#define IMGD_SERVICE_JOBSTORE_H

#include <stdbool.h>

#include "base/base.h"

typedef struct imgd_jobstore imgd_jobstore;

/* Values are stored in the database: append-only. */
typedef enum imgd_job_state {
    IMGD_JOB_QUEUED    = 0,
    IMGD_JOB_RUNNING   = 1,
    IMGD_JOB_SUCCEEDED = 2,
    IMGD_JOB_FAILED    = 3,
    IMGD_JOB_CANCELLED = 4,
    IMGD_JOB_STATE_COUNT
} imgd_job_state;

/* "queued", "running", "succeeded", "failed", "cancelled"; "unknown" out of range. */
const char *imgd_job_state_name(imgd_job_state s);
/* Parses those names; IMGD_E_INVALID_ARG (listing them) otherwise. */
imgd_status imgd_job_state_parse(const char *name, imgd_job_state *out);
/* True for SUCCEEDED, FAILED and CANCELLED. */
bool imgd_job_state_finished(imgd_job_state s);

#define IMGD_JOB_ID_LEN 32 /* hex characters; ids are 128 random bits */

/* One job. Strings are owned by the record (heap, imgd_free'd by imgd_job_rec_free);
 * NULL means absent. Times are Unix milliseconds, 0 = not yet. */
typedef struct imgd_job_rec {
    char           id[40];      /* IMGD_JOB_ID_LEN hex chars + NUL; set by submit */
    int64_t        created_ms;  /* set by submit */
    int64_t        started_ms;  /* last claim */
    int64_t        finished_ms; /* reaching a finished state */
    int64_t        updated_ms;  /* any durable change */
    int64_t        deadline_ms; /* queued past this -> FAILED by expire; 0 = none */
    int32_t        priority;    /* higher runs first; ties run oldest first */
    int32_t        step, steps; /* progress; live for running jobs, steps==step at success */
    int32_t        attempts;    /* times claimed (started); see attempts_max */
    imgd_job_state state;       /* set by the store; ignored by submit (always QUEUED) */
    char          *model;       /* model id, may be NULL */
    char          *api;         /* "v1", "sdapi", "openai", "runpod"; may be NULL */
    char          *key_name;    /* API key owner, NULL = anonymous */
    char          *batch_key;   /* jobs with equal keys may share one sampling loop; NULL =
                                   never batched (the scheduler computes it) */
    char *request_json;         /* the validated request; required */
    char *result_json;          /* set when SUCCEEDED */
    char *error_json;           /* problem details when FAILED (or CANCELLED, optional) */
    bool  cancel_requested;
} imgd_job_rec;

/* Frees the record's strings and the record. NULL is a no-op. Only for records the store
 * returned (get/claim); for a caller-built record free its strings yourself. */
void imgd_job_rec_free(imgd_job_rec *rec);
/* Frees n records and the array (from imgd_jobstore_claim). NULL is a no-op. */
void imgd_job_rec_list_free(imgd_job_rec **recs, size_t n);

typedef struct imgd_jobstore_params {
    int32_t attempts_max;    /* a job found RUNNING at open after this many claims is FAILED
                                instead of requeued; 1..1000, default 3 */
    int32_t busy_timeout_ms; /* SQLite busy timeout; default 5000 */
    /* Clock for created/started/finished/updated times (Unix ms); NULL = CLOCK_REALTIME.
       For tests. */
    int64_t (*now_ms)(void *user);
    void *now_user;
} imgd_jobstore_params;

imgd_jobstore_params imgd_jobstore_params_default(void);

/* Opens (creating if missing, mode 0700) state_dir and STATE_DIR/jobs.sqlite3, then
 * recovers: RUNNING jobs with cancel_requested -> CANCELLED; other RUNNING jobs ->
 * QUEUED, or FAILED ("crashed the worker N times") when attempts >= attempts_max.
 * state_dir is copied; params may be NULL for defaults.
 * Returns IMGD_OK (*out owned by the caller, release with imgd_jobstore_close),
 * IMGD_E_INVALID_ARG, IMGD_E_IO (cannot create the folder, locked by another process,
 * SQLite error: the message names the statement and sqlite3_errmsg), IMGD_E_UNSUPPORTED
 * (database written by a newer imgd), IMGD_E_NOMEM. *out untouched on failure. */
imgd_status imgd_jobstore_open(const char *state_dir, const imgd_jobstore_params *params,
                               imgd_jobstore **out);

/* Closes the store. Running jobs stay RUNNING on disk and are requeued by the next open
 * (call imgd_jobstore_release first to requeue them without counting an attempt).
 * NULL is a no-op. No other call may be in flight. */
void imgd_jobstore_close(imgd_jobstore *js);

/* Stores a new QUEUED job and makes it durable before returning. Reads model, api,
 * key_name, batch_key, request_json (required), priority, steps, deadline_ms from rec
 * (copied); writes back rec->id (random, from getrandom), created_ms, updated_ms, state.
 * Returns IMGD_OK, IMGD_E_INVALID_ARG (no request_json), IMGD_E_IO, IMGD_E_NOMEM;
 * nothing is stored on failure. */
imgd_status imgd_jobstore_submit(imgd_jobstore *js, imgd_job_rec *rec);

/* Fetches a job (with live progress for running ones). *out is owned by the caller
 * (imgd_job_rec_free). IMGD_E_NOT_FOUND when no such id (never existed or gc'd). */
imgd_status imgd_jobstore_get(imgd_jobstore *js, const char *id, imgd_job_rec **out);

/* Atomically moves up to max QUEUED jobs (highest priority, then oldest; deadline not yet
 * passed; only model `model` unless NULL) to RUNNING, attempts+1, and returns them in that
 * order. *out is a new array owned by the caller (imgd_job_rec_list_free), NULL with
 * *n == 0 when nothing is queued. max 1..4096. Returns IMGD_OK, IMGD_E_INVALID_ARG,
 * IMGD_E_IO, IMGD_E_NOMEM (nothing claimed then). */
imgd_status imgd_jobstore_claim(imgd_jobstore *js, const char *model, int32_t max,
                                imgd_job_rec ***out, size_t *n);

/* Like imgd_jobstore_claim, for batching: claims the next job, plus up to max-1 more
 * with the same model and an equal non-NULL batch_key, in the same order. */
imgd_status imgd_jobstore_claim_batch(imgd_jobstore *js, const char *model, int32_t max,
                                      imgd_job_rec ***out, size_t *n);

/* Records progress of a RUNNING job in memory only (cheap; not durable).
 * IMGD_E_NOT_FOUND when the job is not running in this process. */
imgd_status imgd_jobstore_progress(imgd_jobstore *js, const char *id, int32_t step, int32_t steps);

/* Finishes a job: final is SUCCEEDED (result_json required), FAILED (error_json
 * recommended) or CANCELLED. Allowed from RUNNING, and from QUEUED for CANCELLED/FAILED.
 * Strings are copied; the change is durable before returning.
 * Returns IMGD_OK, IMGD_E_NOT_FOUND, IMGD_E_INVALID_ARG (bad final state, missing result,
 * or the job is not in a state that allows it: the message names the state),
 * IMGD_E_IO, IMGD_E_NOMEM. */
imgd_status imgd_jobstore_finish(imgd_jobstore *js, const char *id, imgd_job_state final,
                                 const char *result_json, const char *error_json);

/* Requests cancellation. QUEUED -> CANCELLED at once; RUNNING -> cancel_requested (durable;
 * the scheduler sees it through imgd_jobstore_cancel_requested and finishes the job as
 * CANCELLED); finished jobs are left alone. *state_after (may be NULL) receives the state
 * after the call. Returns IMGD_OK, IMGD_E_NOT_FOUND, IMGD_E_IO, IMGD_E_NOMEM. */
imgd_status imgd_jobstore_cancel(imgd_jobstore *js, const char *id, imgd_job_state *state_after);

/* True when a cancel was requested for this RUNNING job. Memory only, no SQL: meant to be
 * polled at every sampling step. False for unknown ids. */
bool imgd_jobstore_cancel_requested(imgd_jobstore *js, const char *id);

/* Puts a RUNNING job back to QUEUED without counting the attempt (graceful shutdown, or the
 * scheduler could not start it). IMGD_E_NOT_FOUND, IMGD_E_INVALID_ARG (not running). */
imgd_status imgd_jobstore_release(imgd_jobstore *js, const char *id);

/* Number of jobs in each state, indexed by imgd_job_state (queue depth, metrics). */
imgd_status imgd_jobstore_count(imgd_jobstore *js, size_t counts[IMGD_JOB_STATE_COUNT]);

/* Fails QUEUED jobs whose deadline_ms is set and <= now_ms, with a timeout error_json.
 * *n_expired (may be NULL) receives how many. */
imgd_status imgd_jobstore_expire(imgd_jobstore *js, int64_t now_ms, size_t *n_expired);

/* Deletes finished jobs with finished_ms < older_than_ms, and usage rows of days more than
 * one day before that. *n_deleted (may be NULL) receives the number of jobs deleted. */
imgd_status imgd_jobstore_gc(imgd_jobstore *js, int64_t older_than_ms, size_t *n_deleted);

/* "YYYY-MM-DD" of the UTC day containing ms (Unix milliseconds): the day key of the usage
 * table. */
void imgd_jobstore_utc_day(int64_t ms, char out[32]);

/* Daily usage counters (table usage(key_name, day, images)), for imgd_auth's quotas.
 * Adds n to key_name's count for day ("YYYY-MM-DD") unless the result would exceed
 * limit (limit < 0 = no limit); durable before returning. *total receives the count after
 * the call (unchanged when refused); *added whether n was added. n may be negative (a
 * refund; the count does not go below 0). */
imgd_status imgd_jobstore_usage_add(imgd_jobstore *js, const char *key_name, const char *day,
                                    int64_t n, int64_t limit, int64_t *total, bool *added);

#endif
