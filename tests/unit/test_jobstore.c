/* Durable job store: ordering, batching, cancel, finish, crash recovery (close/reopen and a
 * real SIGKILL of a child process), concurrency, expiry and gc. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/map.h"
#include "service/jobstore.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------------------- */

static int64_t g_clock_ms = 1000;

static int64_t test_clock(void *user) {
    (void)user;
    return g_clock_ms;
}

static imgd_jobstore_params clock_params(void) {
    imgd_jobstore_params p = imgd_jobstore_params_default();
    p.now_ms               = test_clock;
    return p;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A fresh state folder under IMGD_TEST_TMP (or /tmp). */
static void tmp_state_dir(char *out, size_t cap, const char *tag) {
    const char *base = getenv("IMGD_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    (void)snprintf(out, cap, "%s/jobstore-%s-%ld-XXXXXX", base, tag, (long)getpid());
    if (!mkdtemp(out)) {
        fprintf(stderr, "mkdtemp %s: %s\n", out, strerror(errno));
        out[0] = '\0';
        return;
    }
    /* The store creates missing folders itself: point at a child that does not exist yet. */
    size_t n = strlen(out);
    (void)snprintf(out + n, cap - n, "/state");
}

static void rm_state_dir(const char *dir) {
    static const char *const files[] = {"jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm",
                                        "jobs.lock"};
    char                     p[1024];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        (void)snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        (void)unlink(p);
    }
    (void)rmdir(dir);
    (void)snprintf(p, sizeof p, "%s", dir);
    char *slash = strrchr(p, '/');
    if (slash) {
        *slash = '\0';
        (void)rmdir(p);
    }
}

typedef struct sub_args {
    const char *model, *batch_key, *request;
    int32_t     priority, steps;
    int64_t     deadline_ms;
} sub_args;

/* Submits a job; copies its id into id_out. */
static imgd_status submit_job(imgd_jobstore *js, const sub_args *a, char id_out[40]) {
    imgd_job_rec r = {0};
    imgd_status  st;
    r.model        = a->model ? imgd_strdup(a->model) : NULL;
    r.batch_key    = a->batch_key ? imgd_strdup(a->batch_key) : NULL;
    r.request_json = imgd_strdup(a->request ? a->request : "{\"prompt\":\"a cat\"}");
    r.api          = imgd_strdup("v1");
    r.priority     = a->priority;
    r.steps        = a->steps;
    r.deadline_ms  = a->deadline_ms;
    if ((a->model && !r.model) || (a->batch_key && !r.batch_key) || !r.request_json || !r.api) {
        st = IMGD_E_NOMEM;
    } else {
        st = imgd_jobstore_submit(js, &r);
    }
    if (st == IMGD_OK) memcpy(id_out, r.id, 40);
    imgd_free(r.model);
    imgd_free(r.batch_key);
    imgd_free(r.request_json);
    imgd_free(r.api);
    return st;
}

static imgd_job_state state_of(imgd_jobstore *js, const char *id) {
    imgd_job_rec  *r = NULL;
    imgd_job_state s = IMGD_JOB_STATE_COUNT;
    if (imgd_jobstore_get(js, id, &r) == IMGD_OK) s = r->state;
    imgd_job_rec_free(r);
    return s;
}

/* ---- cases --------------------------------------------------------------------------- */

static void test_jobstore_state_names_roundtrip(void) {
    for (int i = 0; i < IMGD_JOB_STATE_COUNT; i++) {
        imgd_job_state s = IMGD_JOB_STATE_COUNT;
        CHECK_STATUS(imgd_job_state_parse(imgd_job_state_name((imgd_job_state)i), &s), IMGD_OK);
        CHECK_EQ_INT(s, i);
    }
    imgd_job_state s;
    CHECK_STATUS(imgd_job_state_parse("done", &s), IMGD_E_INVALID_ARG);
    CHECK_STR(imgd_job_state_name(IMGD_JOB_STATE_COUNT), "unknown");
}

static void test_jobstore_submit_get_roundtrip(void) {
    char           dir[512];
    imgd_jobstore *js = NULL;
    imgd_job_rec  *r  = NULL;
    char           id[40];
    tmp_state_dir(dir, sizeof dir, "get");
    REQUIRE(dir[0]);
    g_clock_ms             = 5000;
    imgd_jobstore_params p = clock_params();
    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
    sub_args a = {.model = "sd15.safetensors", .batch_key = "k", .priority = 7, .steps = 20};
    REQUIRE(submit_job(js, &a, id) == IMGD_OK);
    CHECK_EQ_INT(strlen(id), IMGD_JOB_ID_LEN);
    CHECK(strspn(id, "0123456789abcdef") == IMGD_JOB_ID_LEN);
    REQUIRE(imgd_jobstore_get(js, id, &r) == IMGD_OK);
    CHECK_STR(r->id, id);
    CHECK_STR(r->model, "sd15.safetensors");
    CHECK_STR(r->batch_key, "k");
    CHECK_STR(r->api, "v1");
    CHECK(r->key_name == NULL);
    CHECK(r->result_json == NULL);
    CHECK_STR(r->request_json, "{\"prompt\":\"a cat\"}");
    CHECK_EQ_INT(r->priority, 7);
    CHECK_EQ_INT(r->steps, 20);
    CHECK_EQ_INT(r->created_ms, 5000);
    CHECK_EQ_INT(r->state, IMGD_JOB_QUEUED);
    CHECK_EQ_INT(r->attempts, 0);

    imgd_job_rec *none = NULL;
    CHECK_STATUS(imgd_jobstore_get(js, "0123456789abcdef0123456789abcdef", &none),
                 IMGD_E_NOT_FOUND);
    CHECK(none == NULL);
    imgd_job_rec empty = {0};
    CHECK_STATUS(imgd_jobstore_submit(js, &empty), IMGD_E_INVALID_ARG);
    size_t c[IMGD_JOB_STATE_COUNT];
    CHECK_STATUS(imgd_jobstore_count(js, c), IMGD_OK);
    CHECK_EQ_INT(c[IMGD_JOB_QUEUED], 1);
    CHECK_EQ_INT(c[IMGD_JOB_RUNNING], 0);
done:
    imgd_job_rec_free(r);
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

static void test_jobstore_claim_orders_by_priority_then_age(void) {
    char           dir[512];
    imgd_jobstore *js = NULL;
    char           ids[5][40];
    imgd_job_rec **got = NULL;
    size_t         n   = 0;
    tmp_state_dir(dir, sizeof dir, "order");
    REQUIRE(dir[0]);
    imgd_jobstore_params p = clock_params();
    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    const int32_t prio[5] = {0, 5, 0, 5, 1};
    for (int i = 0; i < 5; i++) {
        g_clock_ms = 100 + i;
        sub_args a = {.model = i == 4 ? "other" : "m", .priority = prio[i]};
        REQUIRE(submit_job(js, &a, ids[i]) == IMGD_OK);
    }
    /* Model filter first: only job 4 is "other". */
    REQUIRE(imgd_jobstore_claim(js, "other", 8, &got, &n) == IMGD_OK);
    CHECK_EQ_INT(n, 1);
    if (n == 1) CHECK_STR(got[0]->id, ids[4]);
    imgd_job_rec_list_free(got, n);
    got = NULL;
    REQUIRE(imgd_jobstore_claim(js, NULL, 3, &got, &n) == IMGD_OK);
    REQUIRE(n == 3);
    CHECK_STR(got[0]->id, ids[1]);
    CHECK_STR(got[1]->id, ids[3]);
    CHECK_STR(got[2]->id, ids[0]);
    CHECK_EQ_INT(got[0]->state, IMGD_JOB_RUNNING);
    CHECK_EQ_INT(got[0]->attempts, 1);
    imgd_job_rec_list_free(got, n);
    got = NULL;
    REQUIRE(imgd_jobstore_claim(js, NULL, 3, &got, &n) == IMGD_OK);
    REQUIRE(n == 1);
    CHECK_STR(got[0]->id, ids[2]);
    imgd_job_rec_list_free(got, n);
    got = NULL;
    REQUIRE(imgd_jobstore_claim(js, NULL, 3, &got, &n) == IMGD_OK);
    CHECK_EQ_INT(n, 0);
    CHECK(got == NULL);
    CHECK_EQ_INT(state_of(js, ids[0]), IMGD_JOB_RUNNING);
    CHECK_STATUS(imgd_jobstore_claim(js, NULL, 0, &got, &n), IMGD_E_INVALID_ARG);
done:
    imgd_job_rec_list_free(got, n);
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

static void test_jobstore_claim_batch_takes_same_key_and_model(void) {
    char           dir[512];
    imgd_jobstore *js = NULL;
    char           ids[6][40];
    imgd_job_rec **got = NULL;
    size_t         n   = 0;
    tmp_state_dir(dir, sizeof dir, "batch");
    REQUIRE(dir[0]);
    imgd_jobstore_params p = clock_params();
    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    const char *keys[6]   = {"A", "B", "A", "A", "A", NULL};
    const char *models[6] = {"m", "m", "m", "x", "m", "m"};
    for (int i = 0; i < 6; i++) {
        g_clock_ms = 200 + i;
        sub_args a = {.model = models[i], .batch_key = keys[i]};
        REQUIRE(submit_job(js, &a, ids[i]) == IMGD_OK);
    }
    REQUIRE(imgd_jobstore_claim_batch(js, NULL, 3, &got, &n) == IMGD_OK);
    REQUIRE(n == 3);
    CHECK_STR(got[0]->id, ids[0]);
    CHECK_STR(got[1]->id, ids[2]);
    CHECK_STR(got[2]->id, ids[4]); /* ids[3] has the key but another model */
    imgd_job_rec_list_free(got, n);
    got               = NULL;
    const int next[3] = {1, 3, 5}; /* B alone, then A on model x, then the unbatchable one */
    for (int k = 0; k < 3; k++) {
        REQUIRE(imgd_jobstore_claim_batch(js, NULL, 3, &got, &n) == IMGD_OK);
        REQUIRE(n == 1);
        CHECK_STR(got[0]->id, ids[next[k]]);
        imgd_job_rec_list_free(got, n);
        got = NULL;
    }
    REQUIRE(imgd_jobstore_claim_batch(js, NULL, 3, &got, &n) == IMGD_OK);
    CHECK_EQ_INT(n, 0);
done:
    imgd_job_rec_list_free(got, n);
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

static void test_jobstore_cancel_in_each_state(void) {
    char           dir[512];
    imgd_jobstore *js = NULL;
    char           q[40], run[40], fin[40];
    imgd_job_rec **got = NULL;
    size_t         n   = 0;
    imgd_job_state after;
    tmp_state_dir(dir, sizeof dir, "cancel");
    REQUIRE(dir[0]);
    imgd_jobstore_params p = clock_params();
    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    sub_args hi = {.priority = 9}, lo = {.priority = 0};
    REQUIRE(submit_job(js, &hi, run) == IMGD_OK);
    REQUIRE(submit_job(js, &hi, fin) == IMGD_OK);
    REQUIRE(submit_job(js, &lo, q) == IMGD_OK);
    REQUIRE(imgd_jobstore_claim(js, NULL, 2, &got, &n) == IMGD_OK && n == 2);
    REQUIRE(imgd_jobstore_finish(js, fin, IMGD_JOB_SUCCEEDED, "{\"images\":[]}", NULL) == IMGD_OK);

    CHECK_STATUS(imgd_jobstore_cancel(js, q, &after), IMGD_OK);
    CHECK_EQ_INT(after, IMGD_JOB_CANCELLED);
    CHECK_EQ_INT(state_of(js, q), IMGD_JOB_CANCELLED);

    CHECK(!imgd_jobstore_cancel_requested(js, run));
    CHECK_STATUS(imgd_jobstore_cancel(js, run, &after), IMGD_OK);
    CHECK_EQ_INT(after, IMGD_JOB_RUNNING);
    CHECK(imgd_jobstore_cancel_requested(js, run));
    CHECK_EQ_INT(state_of(js, run), IMGD_JOB_RUNNING);
    CHECK_STATUS(imgd_jobstore_finish(js, run, IMGD_JOB_CANCELLED, NULL, NULL), IMGD_OK);
    CHECK_EQ_INT(state_of(js, run), IMGD_JOB_CANCELLED);
    CHECK(!imgd_jobstore_cancel_requested(js, run));

    CHECK_STATUS(imgd_jobstore_cancel(js, fin, &after), IMGD_OK);
    CHECK_EQ_INT(after, IMGD_JOB_SUCCEEDED);
    CHECK_EQ_INT(state_of(js, fin), IMGD_JOB_SUCCEEDED);
    CHECK_STATUS(imgd_jobstore_cancel(js, "nope", &after), IMGD_E_NOT_FOUND);
done:
    imgd_job_rec_list_free(got, n);
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

static void test_jobstore_finish_only_from_running(void) {
    char           dir[512];
    imgd_jobstore *js = NULL;
    char           a[40], b[40];
    imgd_job_rec **got = NULL;
    imgd_job_rec  *r   = NULL;
    size_t         n   = 0;
    tmp_state_dir(dir, sizeof dir, "finish");
    REQUIRE(dir[0]);
    imgd_jobstore_params p = clock_params();
    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    sub_args s = {.priority = 1, .steps = 30};
    REQUIRE(submit_job(js, &s, a) == IMGD_OK);
    s.priority = 0;
    REQUIRE(submit_job(js, &s, b) == IMGD_OK);
    CHECK_STATUS(imgd_jobstore_finish(js, b, IMGD_JOB_SUCCEEDED, "{}", NULL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_jobstore_progress(js, b, 1, 30), IMGD_E_NOT_FOUND);
    REQUIRE(imgd_jobstore_claim(js, NULL, 1, &got, &n) == IMGD_OK && n == 1);
    CHECK_STR(got[0]->id, a);
    CHECK_STATUS(imgd_jobstore_progress(js, a, 12, 30), IMGD_OK);
    REQUIRE(imgd_jobstore_get(js, a, &r) == IMGD_OK);
    CHECK_EQ_INT(r->step, 12);
    CHECK_EQ_INT(r->steps, 30);
    imgd_job_rec_free(r);
    r = NULL;
    CHECK_STATUS(imgd_jobstore_finish(js, a, IMGD_JOB_SUCCEEDED, NULL, NULL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_jobstore_finish(js, a, IMGD_JOB_RUNNING, NULL, NULL), IMGD_E_INVALID_ARG);
    g_clock_ms = 7777;
    CHECK_STATUS(imgd_jobstore_finish(js, a, IMGD_JOB_SUCCEEDED, "{\"images\":[1]}", NULL),
                 IMGD_OK);
    CHECK_STATUS(imgd_jobstore_finish(js, a, IMGD_JOB_FAILED, NULL, "{}"), IMGD_E_INVALID_ARG);
    REQUIRE(imgd_jobstore_get(js, a, &r) == IMGD_OK);
    CHECK_EQ_INT(r->state, IMGD_JOB_SUCCEEDED);
    CHECK_STR(r->result_json, "{\"images\":[1]}");
    CHECK_EQ_INT(r->step, 30);
    CHECK_EQ_INT(r->finished_ms, 7777);
    /* A queued job may be failed directly (e.g. it failed validation against a new model). */
    CHECK_STATUS(imgd_jobstore_finish(js, b, IMGD_JOB_FAILED, NULL, "{\"title\":\"x\"}"), IMGD_OK);
    CHECK_STATUS(imgd_jobstore_finish(js, "nope", IMGD_JOB_FAILED, NULL, NULL), IMGD_E_NOT_FOUND);
done:
    imgd_job_rec_free(r);
    imgd_job_rec_list_free(got, n);
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

static void test_jobstore_reopen_requeues_running_and_keeps_results(void) {
    char           dir[512];
    imgd_jobstore *js = NULL;
    char           ids[4][40];
    imgd_job_rec **got = NULL;
    imgd_job_rec  *r   = NULL;
    size_t         n   = 0;
    tmp_state_dir(dir, sizeof dir, "reopen");
    REQUIRE(dir[0]);
    imgd_jobstore_params p = clock_params();
    p.attempts_max         = 2;
    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    for (int i = 0; i < 4; i++) {
        sub_args a = {.priority = 10 - i};
        REQUIRE(submit_job(js, &a, ids[i]) == IMGD_OK);
    }
    REQUIRE(imgd_jobstore_claim(js, NULL, 3, &got, &n) == IMGD_OK && n == 3);
    imgd_job_rec_list_free(got, n);
    got = NULL;
    REQUIRE(imgd_jobstore_finish(js, ids[0], IMGD_JOB_SUCCEEDED, "{\"ok\":1}", NULL) == IMGD_OK);
    REQUIRE(imgd_jobstore_cancel(js, ids[2], NULL) == IMGD_OK); /* running, cancel requested */
    imgd_jobstore_close(js);
    js = NULL;

    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    REQUIRE(imgd_jobstore_get(js, ids[0], &r) == IMGD_OK);
    CHECK_EQ_INT(r->state, IMGD_JOB_SUCCEEDED);
    CHECK_STR(r->result_json, "{\"ok\":1}");
    imgd_job_rec_free(r);
    REQUIRE(imgd_jobstore_get(js, ids[1], &r) == IMGD_OK);
    CHECK_EQ_INT(r->state, IMGD_JOB_QUEUED);
    CHECK_EQ_INT(r->attempts, 1);
    imgd_job_rec_free(r);
    r = NULL;
    CHECK_EQ_INT(state_of(js, ids[2]), IMGD_JOB_CANCELLED);
    CHECK_EQ_INT(state_of(js, ids[3]), IMGD_JOB_QUEUED);

    /* Second crash while running ids[1]: attempts reaches attempts_max (2) -> failed. */
    REQUIRE(imgd_jobstore_claim(js, NULL, 1, &got, &n) == IMGD_OK && n == 1);
    CHECK_STR(got[0]->id, ids[1]);
    CHECK_EQ_INT(got[0]->attempts, 2);
    imgd_job_rec_list_free(got, n);
    got = NULL;
    imgd_jobstore_close(js);
    js = NULL;
    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    REQUIRE(imgd_jobstore_get(js, ids[1], &r) == IMGD_OK);
    CHECK_EQ_INT(r->state, IMGD_JOB_FAILED);
    CHECK_MSG(r->error_json && strstr(r->error_json, "stopped 2 times"), "error_json: %s",
              r->error_json ? r->error_json : "(null)");
    imgd_job_rec_free(r);
    r = NULL;

    /* release: back to queued without counting the attempt. */
    REQUIRE(imgd_jobstore_claim(js, NULL, 1, &got, &n) == IMGD_OK && n == 1);
    CHECK_STR(got[0]->id, ids[3]);
    CHECK_STATUS(imgd_jobstore_release(js, ids[3]), IMGD_OK);
    CHECK_STATUS(imgd_jobstore_release(js, ids[3]), IMGD_E_INVALID_ARG);
    REQUIRE(imgd_jobstore_get(js, ids[3], &r) == IMGD_OK);
    CHECK_EQ_INT(r->state, IMGD_JOB_QUEUED);
    CHECK_EQ_INT(r->attempts, 0);
done:
    imgd_job_rec_free(r);
    imgd_job_rec_list_free(got, n);
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

static void test_jobstore_expire_and_gc(void) {
    char           dir[512];
    imgd_jobstore *js = NULL;
    char           late[40], keep[40], done_id[40];
    imgd_job_rec **got = NULL;
    imgd_job_rec  *r   = NULL;
    size_t         n = 0, k = 99;
    tmp_state_dir(dir, sizeof dir, "expire");
    REQUIRE(dir[0]);
    g_clock_ms             = 500;
    imgd_jobstore_params p = clock_params();
    REQUIRE(imgd_jobstore_open(dir, &p, &js) == IMGD_OK);
    sub_args d = {.deadline_ms = 1000, .priority = 0}, f = {.priority = 5}, q = {0};
    REQUIRE(submit_job(js, &d, late) == IMGD_OK);
    REQUIRE(submit_job(js, &f, done_id) == IMGD_OK);
    REQUIRE(submit_job(js, &q, keep) == IMGD_OK);
    REQUIRE(imgd_jobstore_claim(js, NULL, 1, &got, &n) == IMGD_OK && n == 1);
    CHECK_STR(got[0]->id, done_id);
    g_clock_ms = 600;
    REQUIRE(imgd_jobstore_finish(js, done_id, IMGD_JOB_SUCCEEDED, "{}", NULL) == IMGD_OK);
    CHECK_STATUS(imgd_jobstore_expire(js, 999, &k), IMGD_OK);
    CHECK_EQ_INT(k, 0);
    CHECK_STATUS(imgd_jobstore_expire(js, 1000, &k), IMGD_OK);
    CHECK_EQ_INT(k, 1);
    REQUIRE(imgd_jobstore_get(js, late, &r) == IMGD_OK);
    CHECK_EQ_INT(r->state, IMGD_JOB_FAILED);
    CHECK(r->error_json && strstr(r->error_json, "timeout"));
    CHECK_EQ_INT(r->finished_ms, 1000);
    CHECK_STATUS(imgd_jobstore_gc(js, 600, &k), IMGD_OK);
    CHECK_EQ_INT(k, 0);
    CHECK_STATUS(imgd_jobstore_gc(js, 601, &k), IMGD_OK);
    CHECK_EQ_INT(k, 1);
    CHECK_EQ_INT(state_of(js, done_id), IMGD_JOB_STATE_COUNT); /* gone */
    CHECK_EQ_INT(state_of(js, late), IMGD_JOB_FAILED);
    CHECK_STATUS(imgd_jobstore_gc(js, 2000, &k), IMGD_OK);
    CHECK_EQ_INT(k, 1);
    CHECK_EQ_INT(state_of(js, keep), IMGD_JOB_QUEUED); /* queued jobs are never collected */
done:
    imgd_job_rec_free(r);
    imgd_job_rec_list_free(got, n);
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

static void test_jobstore_usage_add_respects_limit_and_persists(void) {
    char           dir[512];
    imgd_jobstore *js    = NULL;
    int64_t        total = -1;
    bool           added = false;
    tmp_state_dir(dir, sizeof dir, "usage");
    REQUIRE(dir[0]);
    REQUIRE(imgd_jobstore_open(dir, NULL, &js) == IMGD_OK);
    CHECK_STATUS(imgd_jobstore_usage_add(js, "alice", "2024-05-01", 3, 4, &total, &added), IMGD_OK);
    CHECK(added);
    CHECK_EQ_INT(total, 3);
    CHECK_STATUS(imgd_jobstore_usage_add(js, "alice", "2024-05-01", 2, 4, &total, &added), IMGD_OK);
    CHECK(!added);
    CHECK_EQ_INT(total, 3);
    imgd_jobstore_close(js);
    js = NULL;
    REQUIRE(imgd_jobstore_open(dir, NULL, &js) == IMGD_OK);
    CHECK_STATUS(imgd_jobstore_usage_add(js, "alice", "2024-05-01", 1, 4, &total, &added), IMGD_OK);
    CHECK(added);
    CHECK_EQ_INT(total, 4);
    CHECK_STATUS(imgd_jobstore_usage_add(js, "alice", "2024-05-01", -10, 4, &total, &added),
                 IMGD_OK);
    CHECK_EQ_INT(total, 0);
    CHECK_STATUS(imgd_jobstore_usage_add(js, "alice", "2024-05-02", 4, 4, &total, &added), IMGD_OK);
    CHECK(added);
done:
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

/* ---- concurrency --------------------------------------------------------------------- */

#define CONC_SUBMITTERS 4
#define CONC_PER_THREAD 40
#define CONC_CLAIMERS   3
#define CONC_TOTAL      (CONC_SUBMITTERS * CONC_PER_THREAD)

typedef struct conc_ctx {
    imgd_jobstore *js;
    char           submitted[CONC_TOTAL][40];
    atomic_int     n_submitted;
    atomic_int     n_claimed;
    atomic_int     n_errors;
    atomic_int     n_submitters_done;
    char           claimed[CONC_TOTAL * 2][40]; /* room for a (wrong) double claim */
    atomic_int     n_claimed_slots;
} conc_ctx;

static void *conc_submit(void *arg) {
    conc_ctx *c = arg;
    for (int i = 0; i < CONC_PER_THREAD; i++) {
        char     id[40];
        sub_args a = {.priority = i % 3};
        if (submit_job(c->js, &a, id) != IMGD_OK) {
            atomic_fetch_add(&c->n_errors, 1);
            continue;
        }
        int slot = atomic_fetch_add(&c->n_submitted, 1);
        memcpy(c->submitted[slot], id, 40);
    }
    atomic_fetch_add(&c->n_submitters_done, 1);
    return NULL;
}

static void *conc_claim(void *arg) {
    conc_ctx *c = arg;
    for (;;) {
        imgd_job_rec **got = NULL;
        size_t         n   = 0;
        if (imgd_jobstore_claim(c->js, NULL, 4, &got, &n) != IMGD_OK) {
            atomic_fetch_add(&c->n_errors, 1);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            int slot = atomic_fetch_add(&c->n_claimed_slots, 1);
            if (slot < CONC_TOTAL * 2) memcpy(c->claimed[slot], got[i]->id, 40);
            if (imgd_jobstore_finish(c->js, got[i]->id, IMGD_JOB_SUCCEEDED, "{}", NULL) !=
                IMGD_OK) {
                atomic_fetch_add(&c->n_errors, 1);
            }
        }
        imgd_job_rec_list_free(got, n);
        if (n == 0) {
            if (atomic_load(&c->n_submitters_done) == CONC_SUBMITTERS) {
                /* One more look after the last submit, then stop. */
                if (imgd_jobstore_claim(c->js, NULL, 1, &got, &n) == IMGD_OK && n == 0) break;
                for (size_t i = 0; i < n; i++) {
                    int slot = atomic_fetch_add(&c->n_claimed_slots, 1);
                    if (slot < CONC_TOTAL * 2) memcpy(c->claimed[slot], got[i]->id, 40);
                    (void)imgd_jobstore_finish(c->js, got[i]->id, IMGD_JOB_SUCCEEDED, "{}", NULL);
                }
                imgd_job_rec_list_free(got, n);
            } else {
                struct timespec ts = {0, 1000000};
                (void)nanosleep(&ts, NULL);
            }
        }
    }
    return NULL;
}

static int cmp_id(const void *a, const void *b) {
    return strcmp((const char *)a, (const char *)b);
}

static void test_jobstore_concurrent_submit_and_claim_claims_each_once(void) {
    char      dir[512];
    conc_ctx *c = imgd_calloc(1, sizeof *c);
    REQUIRE(c);
    tmp_state_dir(dir, sizeof dir, "conc");
    REQUIRE(dir[0]);
    REQUIRE(imgd_jobstore_open(dir, NULL, &c->js) == IMGD_OK);
    pthread_t sub[CONC_SUBMITTERS], cl[CONC_CLAIMERS];
    double    t0 = mono_s();
    for (int i = 0; i < CONC_SUBMITTERS; i++) pthread_create(&sub[i], NULL, conc_submit, c);
    for (int i = 0; i < CONC_CLAIMERS; i++) pthread_create(&cl[i], NULL, conc_claim, c);
    for (int i = 0; i < CONC_SUBMITTERS; i++) pthread_join(sub[i], NULL);
    for (int i = 0; i < CONC_CLAIMERS; i++) pthread_join(cl[i], NULL);
    double dt = mono_s() - t0;
    CHECK_EQ_INT(atomic_load(&c->n_errors), 0);
    int ns = atomic_load(&c->n_submitted), nc = atomic_load(&c->n_claimed_slots);
    CHECK_EQ_INT(ns, CONC_TOTAL);
    CHECK_EQ_INT(nc, CONC_TOTAL);
    if (ns == CONC_TOTAL && nc == CONC_TOTAL) {
        qsort(c->submitted, (size_t)CONC_TOTAL, 40, cmp_id);
        qsort(c->claimed, (size_t)CONC_TOTAL, 40, cmp_id);
        for (int i = 0; i < CONC_TOTAL; i++) {
            CHECK_MSG(strcmp(c->submitted[i], c->claimed[i]) == 0, "job %d: %s vs %s", i,
                      c->submitted[i], c->claimed[i]);
        }
    }
    size_t cnt[IMGD_JOB_STATE_COUNT];
    CHECK_STATUS(imgd_jobstore_count(c->js, cnt), IMGD_OK);
    CHECK_EQ_INT(cnt[IMGD_JOB_SUCCEEDED], CONC_TOTAL);
    CHECK_EQ_INT(cnt[IMGD_JOB_QUEUED] + cnt[IMGD_JOB_RUNNING], 0);
    printf("jobstore: %d submitters + %d claimers, %d jobs submitted, claimed and finished in "
           "%.2f s\n",
           CONC_SUBMITTERS, CONC_CLAIMERS, CONC_TOTAL, dt);
done:
    if (c) imgd_jobstore_close(c->js);
    imgd_free(c);
    rm_state_dir(dir);
}

/* ---- durability across SIGKILL ------------------------------------------------------- */

/* Child: submits jobs, claims every third, finishes every ninth; after each call returns
 * it reports "S|C|F <id>" on the pipe. Runs until killed. */
static void kill_child(const char *dir, int fd) {
    imgd_jobstore *js = NULL;
    if (imgd_jobstore_open(dir, NULL, &js) != IMGD_OK) _exit(3);
    char line[64];
    for (int i = 0; i < 100000; i++) {
        char     id[40];
        sub_args a = {.priority = 0, .steps = 10};
        if (submit_job(js, &a, id) != IMGD_OK) _exit(4);
        int len = snprintf(line, sizeof line, "S %s\n", id);
        if (write(fd, line, (size_t)len) != len) _exit(5);
        if (i % 3 == 2) {
            imgd_job_rec **got = NULL;
            size_t         n   = 0;
            if (imgd_jobstore_claim(js, NULL, 1, &got, &n) != IMGD_OK) _exit(6);
            for (size_t k = 0; k < n; k++) {
                len = snprintf(line, sizeof line, "C %s\n", got[k]->id);
                if (write(fd, line, (size_t)len) != len) _exit(5);
                if (i % 9 == 8) {
                    if (imgd_jobstore_finish(js, got[k]->id, IMGD_JOB_SUCCEEDED, "{\"r\":1}",
                                             NULL) != IMGD_OK) {
                        _exit(7);
                    }
                    len = snprintf(line, sizeof line, "F %s\n", got[k]->id);
                    if (write(fd, line, (size_t)len) != len) _exit(5);
                }
            }
            imgd_job_rec_list_free(got, n);
        }
    }
    _exit(0);
}

#define KILL_MAX 4096

typedef struct kill_log {
    char id[KILL_MAX][40];
    char kind[KILL_MAX];
    int  n;
} kill_log;

/* Reads complete lines from fd into the log; returns false at EOF. */
static bool read_lines(int fd, char *buf, size_t *have, size_t cap, kill_log *lg) {
    ssize_t r = read(fd, buf + *have, cap - *have);
    if (r <= 0) return false;
    *have += (size_t)r;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', *have - (size_t)(start - buf))) != NULL) {
        if (nl - start == 2 + IMGD_JOB_ID_LEN && lg->n < KILL_MAX) {
            lg->kind[lg->n] = start[0];
            memcpy(lg->id[lg->n], start + 2, IMGD_JOB_ID_LEN);
            lg->id[lg->n][IMGD_JOB_ID_LEN] = '\0';
            lg->n++;
        }
        start = nl + 1;
    }
    size_t rest = *have - (size_t)(start - buf);
    memmove(buf, start, rest);
    *have = rest;
    return true;
}

static void test_jobstore_survives_sigkill_with_every_acknowledged_job(void) {
    char           dir[512];
    imgd_jobstore *js     = NULL;
    kill_log      *lg     = imgd_calloc(1, sizeof *lg);
    int            fds[2] = {-1, -1};
    pid_t          pid    = -1;
    REQUIRE(lg);
    tmp_state_dir(dir, sizeof dir, "kill");
    REQUIRE(dir[0]);
    REQUIRE(pipe(fds) == 0);
    (void)fflush(stdout);
    (void)fflush(stderr);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        kill_child(dir, fds[1]);
    }
    close(fds[1]);
    fds[1] = -1;
    char    buf[4096];
    size_t  have     = 0;
    int64_t deadline = mono_ms() + 30000;
    while (lg->n < 120 && mono_ms() < deadline) {
        if (!read_lines(fds[0], buf, &have, sizeof buf, lg)) break;
        if (lg->n == 1) {
            /* The child holds the state folder: a second process must be refused. */
            imgd_jobstore *other = NULL;
            CHECK_STATUS(imgd_jobstore_open(dir, NULL, &other), IMGD_E_IO);
            CHECK(strstr(imgd_last_error(), "in use by another imgd process") != NULL);
            imgd_jobstore_close(other);
        }
    }
    kill(pid, SIGKILL);
    int ws = 0;
    (void)waitpid(pid, &ws, 0);
    pid = -1;
    CHECK(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    while (read_lines(fds[0], buf, &have, sizeof buf, lg)) {
    }
    CHECK_MSG(lg->n >= 120, "child acknowledged only %d events", lg->n);

    REQUIRE(imgd_jobstore_open(dir, NULL, &js) == IMGD_OK);
    int n_sub = 0, n_fin = 0, n_req = 0;
    for (int i = 0; i < lg->n; i++) {
        imgd_job_rec *r  = NULL;
        imgd_status   st = imgd_jobstore_get(js, lg->id[i], &r);
        CHECK_MSG(st == IMGD_OK, "acknowledged job %s (%c) is lost: %s", lg->id[i], lg->kind[i],
                  imgd_last_error());
        if (st != IMGD_OK) continue;
        bool finished = false;
        for (int k = i; k < lg->n; k++) {
            if (lg->kind[k] == 'F' && strcmp(lg->id[k], lg->id[i]) == 0) finished = true;
        }
        if (lg->kind[i] == 'S') n_sub++;
        if (finished) {
            CHECK_EQ_INT(r->state, IMGD_JOB_SUCCEEDED);
            CHECK(r->result_json && strcmp(r->result_json, "{\"r\":1}") == 0);
            n_fin += lg->kind[i] == 'F';
        } else {
            CHECK_EQ_INT(r->state, IMGD_JOB_QUEUED);
            if (lg->kind[i] == 'C') {
                CHECK_EQ_INT(r->attempts, 1); /* was running: requeued */
                n_req++;
            }
        }
        imgd_job_rec_free(r);
    }
    printf("jobstore: after SIGKILL, %d acknowledged submits all present, %d requeued, %d "
           "results kept\n",
           n_sub, n_req, n_fin);
done:
    if (pid > 0) {
        kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
    }
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
    imgd_jobstore_close(js);
    imgd_free(lg);
    rm_state_dir(dir);
}

/* Measures what an accept costs with synchronous=FULL on this disk (printed, not checked). */
static void test_jobstore_submit_latency_report(void) {
    char           dir[512];
    imgd_jobstore *js = NULL;
    tmp_state_dir(dir, sizeof dir, "lat");
    REQUIRE(dir[0]);
    REQUIRE(imgd_jobstore_open(dir, NULL, &js) == IMGD_OK);
    enum {
        N = 100
    };
    double worst = 0, t0 = mono_s();
    for (int i = 0; i < N; i++) {
        char     id[40];
        sub_args a  = {0};
        double   t1 = mono_s();
        REQUIRE(submit_job(js, &a, id) == IMGD_OK);
        double d = mono_s() - t1;
        if (d > worst) worst = d;
    }
    double total = mono_s() - t0;
    t0           = mono_s();
    for (int i = 0; i < 100000; i++) (void)imgd_jobstore_cancel_requested(js, "x");
    double poll = (mono_s() - t0) / 100000;
    printf("jobstore: submit (synchronous=FULL) mean %.3f ms, max %.3f ms over %d; "
           "cancel_requested %.0f ns\n",
           total * 1e3 / N, worst * 1e3, N, poll * 1e9);
done:
    imgd_jobstore_close(js);
    rm_state_dir(dir);
}

int main(void) {
    RUN(test_jobstore_state_names_roundtrip);
    RUN(test_jobstore_submit_get_roundtrip);
    RUN(test_jobstore_claim_orders_by_priority_then_age);
    RUN(test_jobstore_claim_batch_takes_same_key_and_model);
    RUN(test_jobstore_cancel_in_each_state);
    RUN(test_jobstore_finish_only_from_running);
    RUN(test_jobstore_reopen_requeues_running_and_keeps_results);
    RUN(test_jobstore_expire_and_gc);
    RUN(test_jobstore_usage_add_respects_limit_and_persists);
    RUN(test_jobstore_concurrent_submit_and_claim_claims_each_once);
    RUN(test_jobstore_survives_sigkill_with_every_acknowledged_job);
    RUN(test_jobstore_submit_latency_report);
    TEST_END();
}
