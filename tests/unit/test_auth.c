/* API keys, token buckets and daily quotas (service/auth). */
#include <errno.h>
#include <unistd.h>

#include "base/sha256.h"
#include "service/auth.h"
#include "test.h"

#define KEY_ALICE "sk-alice-0123456789abcdef"
#define KEY_BOB   "sk-bob-fedcba9876543210"
#define DAY_MS    86400000LL
#define T0        (19000LL * DAY_MS) /* a UTC midnight (2022-01-08) */

static cJSON *parse(const char *text) {
    cJSON *j = cJSON_Parse(text);
    if (!j) fprintf(stderr, "bad test JSON: %s\n", text);
    return j;
}

static void tmp_state_dir(char *out, size_t cap, const char *tag) {
    const char *base = getenv("IMGD_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    (void)snprintf(out, cap, "%s/auth-%s-%ld-XXXXXX", base, tag, (long)getpid());
    if (!mkdtemp(out)) {
        fprintf(stderr, "mkdtemp %s: %s\n", out, strerror(errno));
        out[0] = '\0';
    }
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
}

/* ---- config -------------------------------------------------------------------------- */

static void test_auth_config_errors_name_the_json_path(void) {
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"[]", "config auth: expected an object"},
        {"{\"keyz\": []}", "auth.keyz: unknown member"},
        {"{\"keys\": {}}", "auth.keys: expected an array"},
        {"{\"keys\": [{\"name\": \"a\"}]}", "auth.keys[0]: give exactly one of \"key\""},
        {"{\"keys\": [{\"name\": \"a\", \"key\": \"" KEY_ALICE "\", \"key_sha256\": \"00\"}]}",
         "auth.keys[0]: give exactly one"},
        {"{\"keys\": [{\"name\": \"a\", \"key\": \"short\"}]}",
         "auth.keys[0].key: expected a string of at least 16"},
        {"{\"keys\": [{\"name\": \"a\", \"key_sha256\": \"xyz\"}]}",
         "auth.keys[0].key_sha256: expected 64 hex digits"},
        {"{\"keys\": [{\"name\": \"a b\", \"key\": \"" KEY_ALICE "\"}]}", "auth.keys[0].name"},
        {"{\"keys\": [{\"key\": \"" KEY_ALICE "\"}]}", "auth.keys[0].name"},
        {"{\"keys\": [{\"name\": \"a\", \"key\": \"" KEY_ALICE "\", \"rate_per_min\": -1}]}",
         "auth.keys[0].rate_per_min: expected a whole number"},
        {"{\"keys\": [{\"name\": \"a\", \"key\": \"" KEY_ALICE "\", \"rate_per_min\": 1.5}]}",
         "auth.keys[0].rate_per_min"},
        {"{\"keys\": [{\"name\": \"a\", \"key\": \"" KEY_ALICE "\", \"rate_per_min\": \"9\"}]}",
         "auth.keys[0].rate_per_min"},
        {"{\"keys\": [{\"name\": \"a\", \"key\": \"" KEY_ALICE "\", \"rate_per_minute\": 9}]}",
         "auth.keys[0].rate_per_minute: unknown member"},
        {"{\"keys\": [{\"name\": \"a\", \"key\": \"" KEY_ALICE
         "\"}, {\"name\": \"a\", \"key\": \"" KEY_BOB "\"}]}",
         "auth.keys[1].name: \"a\" is also the name of auth.keys[0]"},
        {"{\"keys\": [{\"name\": \"a\", \"key\": \"" KEY_ALICE
         "\"}, {\"name\": \"b\", \"key\": \"" KEY_ALICE "\"}]}",
         "auth.keys[1]: the same key as auth.keys[0]"},
        {"{\"anonymous\": \"yes\"}", "auth.anonymous: expected false, true, or an object"},
        {"{\"anonymous\": {\"burst\": 3}}", "auth.anonymous.burst: burst needs rate_per_min"},
        {"{\"anonymous\": {\"daily\": 3}}", "auth.anonymous.daily: unknown member"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON     *cfg = parse(cases[i].json);
        imgd_auth *a   = NULL;
        CHECK(cfg != NULL);
        CHECK_STATUS(imgd_auth_new(cfg, NULL, &a), IMGD_E_FORMAT);
        CHECK(a == NULL);
        CHECK_MSG(strstr(imgd_last_error(), cases[i].want) != NULL, "case %zu: got \"%s\"", i,
                  imgd_last_error());
        CHECK_MSG(strstr(imgd_last_error(), KEY_ALICE) == NULL, "case %zu leaks the key", i);
        imgd_auth_free(a);
        cJSON_Delete(cfg);
    }
    /* A daily quota needs somewhere durable to count. */
    cJSON     *cfg = parse("{\"anonymous\": {\"daily_images\": 3}}");
    imgd_auth *a   = NULL;
    CHECK_STATUS(imgd_auth_new(cfg, NULL, &a), IMGD_E_INVALID_ARG);
    cJSON_Delete(cfg);
}

/* ---- identification ------------------------------------------------------------------ */

static void test_auth_rejects_missing_malformed_and_unknown_keys(void) {
    char        sha_hex[65];
    uint8_t     d[32];
    imgd_sha256 s;
    imgd_sha256_init(&s);
    imgd_sha256_update(&s, KEY_BOB, strlen(KEY_BOB));
    imgd_sha256_final(&s, d);
    imgd_sha256_hex(d, sha_hex);
    char text[512];
    (void)snprintf(text, sizeof text,
                   "{\"anonymous\": false, \"keys\": [{\"name\": \"alice\", \"key\": \"" KEY_ALICE
                   "\"}, {\"name\": \"bob\", \"key_sha256\": \"%s\"}]}",
                   sha_hex);
    cJSON           *cfg = parse(text);
    imgd_auth       *a   = NULL;
    imgd_auth_result r   = {0};
    REQUIRE(cfg && imgd_auth_new(cfg, NULL, &a) == IMGD_OK);
    const char *bad[] = {NULL,
                         "",
                         "Basic YWxpY2U6cHc=",
                         "Bearer",
                         "Bearer ",
                         "Bearer sk-alice-0123456789abcdeX",
                         "Bearer " KEY_ALICE " extra",
                         "Bearer" KEY_ALICE,
                         KEY_ALICE};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(imgd_auth_check(a, bad[i], &r), IMGD_E_AUTH);
        CHECK_MSG(strstr(imgd_last_error(), "sk-alice") == NULL, "message leaks the key: %s",
                  imgd_last_error());
    }
    CHECK(r.key == NULL);
    CHECK_STATUS(imgd_auth_check(a, "Bearer " KEY_ALICE, &r), IMGD_OK);
    CHECK_STR(r.name, "alice");
    CHECK_STATUS(imgd_auth_check(a, "  bearer \t" KEY_BOB "  ", &r), IMGD_OK);
    CHECK_STR(r.name, "bob");
done:
    imgd_auth_free(a);
    cJSON_Delete(cfg);
}

static void test_auth_without_config_is_anonymous_open(void) {
    imgd_auth       *a = NULL;
    imgd_auth_result r = {0};
    int64_t          retry;
    REQUIRE(imgd_auth_new(NULL, NULL, &a) == IMGD_OK);
    CHECK_STATUS(imgd_auth_check(a, NULL, &r), IMGD_OK);
    CHECK(r.key != NULL && r.name == NULL);
    for (int i = 0; i < 1000; i++) {
        CHECK_STATUS(imgd_auth_take_request(a, r.key, T0, &retry), IMGD_OK);
    }
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 100, T0, &retry), IMGD_OK);
    /* Any key is unknown when none are configured. */
    CHECK_STATUS(imgd_auth_check(a, "Bearer whatever-key-123456", &r), IMGD_E_AUTH);
done:
    imgd_auth_free(a);
}

static void test_auth_anonymous_with_limits_still_refuses_bad_keys(void) {
    cJSON *cfg = parse("{\"anonymous\": {\"rate_per_min\": 1}, \"keys\": [{\"name\": \"alice\", "
                       "\"key\": \"" KEY_ALICE "\"}]}");
    imgd_auth       *a     = NULL;
    imgd_auth_result r     = {0};
    int64_t          retry = 0;
    REQUIRE(cfg && imgd_auth_new(cfg, NULL, &a) == IMGD_OK);
    CHECK_STATUS(imgd_auth_check(a, NULL, &r), IMGD_OK);
    CHECK(r.name == NULL);
    CHECK_STATUS(imgd_auth_take_request(a, r.key, T0, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_request(a, r.key, T0, &retry), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(retry, 60000);
    CHECK_STATUS(imgd_auth_check(a, "Bearer sk-not-a-configured-key", &r), IMGD_E_AUTH);
    CHECK_STATUS(imgd_auth_check(a, "Bearer " KEY_ALICE, &r), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_request(a, r.key, T0, &retry), IMGD_OK); /* unlimited */
done:
    imgd_auth_free(a);
    cJSON_Delete(cfg);
}

/* ---- token bucket -------------------------------------------------------------------- */

static void test_auth_token_bucket_refills_at_the_configured_rate(void) {
    cJSON           *cfg = parse("{\"keys\": [{\"name\": \"a\", \"key\": \"" KEY_ALICE
                                 "\", \"rate_per_min\": 60, \"burst\": 2}, {\"name\": \"b\", \"key\": "
                                           "\"" KEY_BOB "\", \"rate_per_min\": 7}]}");
    imgd_auth       *a   = NULL;
    imgd_auth_result ra = {0}, rb = {0};
    int64_t          retry = 0;
    REQUIRE(cfg && imgd_auth_new(cfg, NULL, &a) == IMGD_OK);
    REQUIRE(imgd_auth_check(a, "Bearer " KEY_ALICE, &ra) == IMGD_OK);
    REQUIRE(imgd_auth_check(a, "Bearer " KEY_BOB, &rb) == IMGD_OK);
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0, &retry), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(retry, 1000);
    CHECK_EQ_INT(imgd_auth_retry_after_s(retry), 1);
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0 + 400, &retry), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(retry, 600);
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0 + 1000, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0 + 1000, &retry), IMGD_E_TOO_LARGE);
    /* A long pause refills only up to the burst. */
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0 + 3600000, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0 + 3600000, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0 + 3600000, &retry), IMGD_E_TOO_LARGE);
    /* A clock step backwards neither refills nor breaks the bucket. */
    CHECK_STATUS(imgd_auth_take_request(a, ra.key, T0, &retry), IMGD_E_TOO_LARGE);
    /* 7 per minute, burst defaults to 7: the 8th waits ceil(60000/7) ms, Retry-After 9 s. */
    for (int i = 0; i < 7; i++) {
        CHECK_STATUS(imgd_auth_take_request(a, rb.key, T0, &retry), IMGD_OK);
    }
    CHECK_STATUS(imgd_auth_take_request(a, rb.key, T0, &retry), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(retry, 8572);
    CHECK_EQ_INT(imgd_auth_retry_after_s(retry), 9);
    CHECK_STATUS(imgd_auth_take_request(a, rb.key, T0 + 8571, &retry), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(retry, 1);
    CHECK_STATUS(imgd_auth_take_request(a, rb.key, T0 + 8572, &retry), IMGD_OK);
    CHECK_EQ_INT(imgd_auth_retry_after_s(0), 1);
    CHECK_EQ_INT(imgd_auth_retry_after_s(1001), 2);
done:
    imgd_auth_free(a);
    cJSON_Delete(cfg);
}

/* ---- daily quota --------------------------------------------------------------------- */

static void test_auth_daily_quota_persists_and_resets_at_utc_midnight(void) {
    char             dir[512];
    imgd_jobstore   *js    = NULL;
    imgd_auth       *a     = NULL;
    cJSON           *cfg   = parse("{\"keys\": [{\"name\": \"alice\", \"key\": \"" KEY_ALICE
                                   "\", \"daily_images\": 5}]}");
    imgd_auth_result r     = {0};
    int64_t          retry = 0;
    const int64_t    ten_h = 10LL * 3600000;
    tmp_state_dir(dir, sizeof dir, "quota");
    REQUIRE(dir[0] && cfg);
    REQUIRE(imgd_jobstore_open(dir, NULL, &js) == IMGD_OK);
    REQUIRE(imgd_auth_new(cfg, js, &a) == IMGD_OK);
    REQUIRE(imgd_auth_check(a, "Bearer " KEY_ALICE, &r) == IMGD_OK);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 6, T0 + ten_h, &retry), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 0, T0 + ten_h, &retry), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 3, T0 + ten_h, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 3, T0 + ten_h, &retry), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(retry, DAY_MS - ten_h);
    CHECK(strstr(imgd_last_error(), "3 of 5") != NULL);

    /* Restart: the count survives. */
    imgd_auth_free(a);
    a = NULL;
    imgd_jobstore_close(js);
    js = NULL;
    REQUIRE(imgd_jobstore_open(dir, NULL, &js) == IMGD_OK);
    REQUIRE(imgd_auth_new(cfg, js, &a) == IMGD_OK);
    REQUIRE(imgd_auth_check(a, "Bearer " KEY_ALICE, &r) == IMGD_OK);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 3, T0 + ten_h + 1, &retry), IMGD_E_TOO_LARGE);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 2, T0 + ten_h + 1, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 1, T0 + DAY_MS - 1, &retry), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(retry, 1);
    CHECK_EQ_INT(imgd_auth_retry_after_s(retry), 1);
    /* A refund (job failed) gives images back for that day. */
    CHECK_STATUS(imgd_auth_refund_images(a, r.key, 2, T0 + ten_h), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 2, T0 + DAY_MS - 1, &retry), IMGD_OK);
    /* Next UTC day: a fresh quota. */
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 5, T0 + DAY_MS, &retry), IMGD_OK);
    CHECK_STATUS(imgd_auth_take_images(a, r.key, 1, T0 + DAY_MS, &retry), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(retry, DAY_MS);
done:
    imgd_auth_free(a);
    imgd_jobstore_close(js);
    cJSON_Delete(cfg);
    if (dir[0]) rm_state_dir(dir);
}

int main(void) {
    RUN(test_auth_config_errors_name_the_json_path);
    RUN(test_auth_rejects_missing_malformed_and_unknown_keys);
    RUN(test_auth_without_config_is_anonymous_open);
    RUN(test_auth_anonymous_with_limits_still_refuses_bad_keys);
    RUN(test_auth_token_bucket_refills_at_the_configured_rate);
    RUN(test_auth_daily_quota_persists_and_resets_at_utc_midnight);
    TEST_END();
}
