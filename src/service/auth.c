/* API keys, token-bucket rate limits and daily image quotas (see auth.h). */
#include "service/auth.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/sha256.h"

#define KEYS_MAX      4096
#define KEY_LEN_MIN   16
#define NAME_LEN_MAX  64
#define LIMIT_MAX     1000000000
#define TOKEN_UNITS   60000 /* one token in bucket units: refill is rate_per_min units/ms */
#define DAY_MS        86400000
#define ANON_USAGE_ID "(anonymous)" /* usage-table name; key names cannot contain '(' */

struct imgd_auth_key {
    char   *name; /* NULL for anonymous */
    uint8_t digest[32];
    int64_t rate_per_min, burst, daily_images; /* 0 = unlimited */
    /* token bucket, guarded by imgd_auth.mu */
    int64_t tokens; /* in TOKEN_UNITS per token */
    int64_t last_ms;
    bool    bucket_init;
};

struct imgd_auth {
    imgd_auth_key  *keys;
    size_t          n_keys;
    imgd_auth_key   anon;
    bool            anon_allowed;
    imgd_jobstore  *js;
    pthread_mutex_t mu;
    bool            mu_init;
};

/* ---- config parsing ------------------------------------------------------------------ */

/* Reads an optional limit member: absent -> 0; else an integer 0..LIMIT_MAX. */
static imgd_status parse_limit(const cJSON *obj, const char *member, const char *path,
                               int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, member);
    *out           = 0;
    if (!v) return IMGD_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble ||
        v->valuedouble < 0 || v->valuedouble > LIMIT_MAX) {
        return imgd_fail(IMGD_E_FORMAT,
                         "config %s.%s: expected a whole number from 0 to %d (0 = unlimited)", path,
                         member, LIMIT_MAX);
    }
    *out = (int64_t)v->valuedouble;
    return IMGD_OK;
}

static imgd_status parse_limits(const cJSON *obj, const char *path, imgd_auth_key *k) {
    imgd_status st = parse_limit(obj, "rate_per_min", path, &k->rate_per_min);
    if (st == IMGD_OK) st = parse_limit(obj, "burst", path, &k->burst);
    if (st == IMGD_OK) st = parse_limit(obj, "daily_images", path, &k->daily_images);
    if (st != IMGD_OK) return st;
    if (k->burst > 0 && k->rate_per_min == 0) {
        return imgd_fail(IMGD_E_FORMAT,
                         "config %s.burst: burst needs rate_per_min; set rate_per_min (requests "
                         "per minute) or remove burst",
                         path);
    }
    if (k->burst == 0) k->burst = k->rate_per_min;
    return IMGD_OK;
}

/* Rejects members outside `allowed` (catches typos such as "rate_per_minute"). */
static imgd_status check_members(const cJSON *obj, const char *path, const char *const *allowed,
                                 const char *allowed_text) {
    for (const cJSON *m = obj->child; m; m = m->next) {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++) ok = ok || strcmp(m->string, allowed[i]) == 0;
        if (!ok) {
            return imgd_fail(IMGD_E_FORMAT, "config %s.%.64s: unknown member; expected one of %s",
                             path, m->string, allowed_text);
        }
    }
    return IMGD_OK;
}

static bool name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > NAME_LEN_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c  = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.' || c == '@';
        if (!ok) return false;
    }
    return true;
}

static int hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void digest_of(const char *key, size_t len, uint8_t out[32]) {
    imgd_sha256 s;
    imgd_sha256_init(&s);
    imgd_sha256_update(&s, key, len);
    imgd_sha256_final(&s, out);
}

static imgd_status parse_secret(const cJSON *obj, const char *path, uint8_t digest[32]) {
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(obj, "key");
    const cJSON *hex = cJSON_GetObjectItemCaseSensitive(obj, "key_sha256");
    if ((key != NULL) == (hex != NULL)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "config %s: give exactly one of \"key\" (the secret) or \"key_sha256\" "
                         "(64 hex digits of its sha256, e.g. printf %%s KEY | sha256sum)",
                         path);
    }
    if (key) {
        if (!cJSON_IsString(key) || strlen(key->valuestring) < KEY_LEN_MIN) {
            return imgd_fail(IMGD_E_FORMAT,
                             "config %s.key: expected a string of at least %d characters (make "
                             "one with: openssl rand -hex 24)",
                             path, KEY_LEN_MIN);
        }
        digest_of(key->valuestring, strlen(key->valuestring), digest);
        return IMGD_OK;
    }
    const char *h  = cJSON_IsString(hex) ? hex->valuestring : NULL;
    bool        ok = h && strlen(h) == 64;
    for (size_t i = 0; ok && i < 32; i++) {
        int hi = hex_val(h[2 * i]), lo = hex_val(h[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        if (ok) digest[i] = (uint8_t)(hi << 4 | lo);
    }
    if (!ok) {
        return imgd_fail(IMGD_E_FORMAT,
                         "config %s.key_sha256: expected 64 hex digits (printf %%s KEY | "
                         "sha256sum)",
                         path);
    }
    return IMGD_OK;
}

static imgd_status parse_key(const cJSON *obj, const char *path, imgd_auth_key *k) {
    static const char *const allowed[] = {"name",         "key",   "key_sha256", "rate_per_min",
                                          "daily_images", "burst", NULL};
    if (!cJSON_IsObject(obj)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "config %s: expected an object like {\"name\": \"alice\", \"key\": "
                         "\"...\"}",
                         path);
    }
    imgd_status st = check_members(obj, path, allowed,
                                   "name, key, key_sha256, rate_per_min, burst, daily_images");
    if (st != IMGD_OK) return st;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(obj, "name");
    if (!cJSON_IsString(name) || !name_ok(name->valuestring)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "config %s.name: expected 1 to %d characters from A-Z a-z 0-9 _ - . @",
                         path, NAME_LEN_MAX);
    }
    st = parse_secret(obj, path, k->digest);
    if (st == IMGD_OK) st = parse_limits(obj, path, k);
    if (st != IMGD_OK) return st;
    k->name = imgd_strdup(name->valuestring);
    if (!k->name) return imgd_fail(IMGD_E_NOMEM, "auth: out of memory");
    return IMGD_OK;
}

static imgd_status parse_anonymous(imgd_auth *a, const cJSON *anon) {
    static const char *const allowed[] = {"rate_per_min", "burst", "daily_images", NULL};
    if (!anon || cJSON_IsFalse(anon)) return IMGD_OK;
    a->anon_allowed = true;
    if (cJSON_IsTrue(anon)) return IMGD_OK;
    if (!cJSON_IsObject(anon)) {
        a->anon_allowed = false;
        return imgd_fail(IMGD_E_FORMAT,
                         "config auth.anonymous: expected false, true, or an object with "
                         "rate_per_min, burst, daily_images");
    }
    imgd_status st =
        check_members(anon, "auth.anonymous", allowed, "rate_per_min, burst, daily_images");
    if (st == IMGD_OK) st = parse_limits(anon, "auth.anonymous", &a->anon);
    return st;
}

static imgd_status parse_keys(imgd_auth *a, const cJSON *keys) {
    if (!keys) return IMGD_OK;
    if (!cJSON_IsArray(keys)) {
        return imgd_fail(IMGD_E_FORMAT, "config auth.keys: expected an array of key objects");
    }
    int n = cJSON_GetArraySize(keys);
    if (n > KEYS_MAX) {
        return imgd_fail(IMGD_E_FORMAT, "config auth.keys: %d keys, more than the %d allowed", n,
                         KEYS_MAX);
    }
    if (n == 0) return IMGD_OK;
    a->keys = imgd_calloc((size_t)n, sizeof *a->keys);
    if (!a->keys) return imgd_fail(IMGD_E_NOMEM, "auth: out of memory for %d keys", n);
    int i = 0;
    for (const cJSON *k = keys->child; k; k = k->next, i++) {
        char path[64];
        (void)snprintf(path, sizeof path, "auth.keys[%d]", i); /* fits: i < KEYS_MAX */
        imgd_status st = parse_key(k, path, &a->keys[i]);
        a->n_keys      = (size_t)i + (a->keys[i].name ? 1 : 0);
        if (st != IMGD_OK) return st;
        for (int j = 0; j < i; j++) {
            if (strcmp(a->keys[j].name, a->keys[i].name) == 0) {
                return imgd_fail(IMGD_E_FORMAT,
                                 "config %s.name: \"%s\" is also the name of auth.keys[%d]; names "
                                 "must be unique (quotas are counted per name)",
                                 path, a->keys[i].name, j);
            }
            if (memcmp(a->keys[j].digest, a->keys[i].digest, 32) == 0) {
                return imgd_fail(IMGD_E_FORMAT,
                                 "config %s: the same key as auth.keys[%d]; give every caller "
                                 "its own key",
                                 path, j);
            }
        }
    }
    return IMGD_OK;
}

static imgd_status parse_config(imgd_auth *a, const cJSON *cfg) {
    static const char *const allowed[] = {"anonymous", "keys", NULL};
    if (!cJSON_IsObject(cfg)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "config auth: expected an object {\"anonymous\": ..., \"keys\": [...]}");
    }
    imgd_status st = check_members(cfg, "auth", allowed, "anonymous, keys");
    if (st == IMGD_OK) st = parse_anonymous(a, cJSON_GetObjectItemCaseSensitive(cfg, "anonymous"));
    if (st == IMGD_OK) st = parse_keys(a, cJSON_GetObjectItemCaseSensitive(cfg, "keys"));
    return st;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

imgd_status imgd_auth_new(const cJSON *cfg, imgd_jobstore *js, imgd_auth **out) {
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_auth_new: out is required");
    imgd_auth *a = imgd_calloc(1, sizeof *a);
    if (!a) return imgd_fail(IMGD_E_NOMEM, "auth: out of memory");
    a->js          = js;
    imgd_status st = IMGD_OK;
    if (!cfg) {
        a->anon_allowed = true; /* no auth config: anonymous-open, no limits */
    } else {
        st = parse_config(a, cfg);
    }
    bool needs_store = a->anon.daily_images > 0;
    for (size_t i = 0; i < a->n_keys; i++) needs_store = needs_store || a->keys[i].daily_images;
    if (st == IMGD_OK && needs_store && !js) {
        st = imgd_fail(IMGD_E_INVALID_ARG,
                       "auth: daily_images quotas need the job store (the state directory)");
    }
    if (st == IMGD_OK && pthread_mutex_init(&a->mu, NULL) != 0) {
        st = imgd_fail(IMGD_E_NOMEM, "auth: cannot create a mutex");
    }
    if (st != IMGD_OK) {
        imgd_auth_free(a);
        return st;
    }
    a->mu_init = true;
    *out       = a;
    return IMGD_OK;
}

void imgd_auth_free(imgd_auth *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_keys; i++) imgd_free(a->keys[i].name);
    imgd_free(a->keys);
    if (a->mu_init) pthread_mutex_destroy(&a->mu);
    imgd_free(a);
}

/* ---- identification ------------------------------------------------------------------ */

/* Finds the token in "Bearer <token>" (scheme case-insensitive, surrounding spaces
 * allowed). */
static bool bearer_token(const char *h, const char **tok, size_t *len) {
    while (*h == ' ' || *h == '\t') h++;
    static const char scheme[] = "bearer";
    for (size_t i = 0; i < sizeof scheme - 1; i++) {
        char c = h[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != scheme[i]) return false;
    }
    h += sizeof scheme - 1;
    if (*h != ' ' && *h != '\t') return false;
    while (*h == ' ' || *h == '\t') h++;
    size_t n = 0;
    while (h[n] && h[n] != ' ' && h[n] != '\t') n++;
    for (size_t k = n; h[k]; k++) {
        if (h[k] != ' ' && h[k] != '\t') return false; /* two tokens */
    }
    *tok = h;
    *len = n;
    return n > 0;
}

imgd_status imgd_auth_check(imgd_auth *a, const char *authorization, imgd_auth_result *r) {
    if (!a || !r) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_auth_check: NULL argument");
    if (!authorization || !*authorization) {
        if (!a->anon_allowed) {
            return imgd_fail(IMGD_E_AUTH,
                             "missing API key: send the header 'Authorization: Bearer <key>'");
        }
        r->key  = &a->anon;
        r->name = NULL;
        return IMGD_OK;
    }
    const char *tok = NULL;
    size_t      len = 0;
    if (!bearer_token(authorization, &tok, &len)) {
        return imgd_fail(IMGD_E_AUTH, "malformed Authorization header: expected 'Bearer <key>'");
    }
    uint8_t d[32];
    digest_of(tok, len, d);
    /* Constant time over all keys: no early exit, no data-dependent branch. */
    size_t match = 0, found = 0;
    for (size_t i = 0; i < a->n_keys; i++) {
        uint8_t diff = 0;
        for (size_t k = 0; k < 32; k++) diff |= (uint8_t)(a->keys[i].digest[k] ^ d[k]);
        size_t eq   = (size_t)1 & (((size_t)diff - 1) >> 8); /* 1 when diff == 0 */
        size_t mask = (size_t)0 - eq;
        match |= (i + 1) & mask;
        found |= eq;
    }
    if (!found) return imgd_fail(IMGD_E_AUTH, "invalid API key");
    r->key  = &a->keys[match - 1];
    r->name = r->key->name;
    return IMGD_OK;
}

/* ---- rate limit ---------------------------------------------------------------------- */

/* The mutable key behind a handle imgd_auth_check returned. */
static imgd_auth_key *own_key(imgd_auth *a, const imgd_auth_key *key) {
    if (key == &a->anon) return &a->anon;
    IMGD_ASSERT(a->n_keys > 0 && key >= a->keys && key < a->keys + a->n_keys);
    return &a->keys[key - a->keys];
}

imgd_status imgd_auth_take_request(imgd_auth *a, const imgd_auth_key *key, int64_t now_ms,
                                   int64_t *retry_after_ms) {
    if (!a || !key || !retry_after_ms) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_auth_take_request: NULL argument");
    }
    if (key->rate_per_min <= 0) return IMGD_OK;
    imgd_auth_key *k    = own_key(a, key); /* bucket state is ours to change */
    int64_t        cap  = k->burst * TOKEN_UNITS;
    int64_t        rate = k->rate_per_min; /* units per ms */
    imgd_status    st   = IMGD_OK;
    pthread_mutex_lock(&a->mu);
    if (!k->bucket_init) {
        k->tokens      = cap;
        k->last_ms     = now_ms;
        k->bucket_init = true;
    } else if (now_ms > k->last_ms) { /* a clock step backwards refills nothing */
        int64_t elapsed = now_ms - k->last_ms;
        if (elapsed > cap / rate + 1) elapsed = cap / rate + 1; /* no overflow */
        k->tokens  = IMGD_MIN(cap, k->tokens + elapsed * rate);
        k->last_ms = now_ms;
    }
    if (k->tokens >= TOKEN_UNITS) {
        k->tokens -= TOKEN_UNITS;
    } else {
        *retry_after_ms = (TOKEN_UNITS - k->tokens + rate - 1) / rate;
        st              = imgd_fail(IMGD_E_TOO_LARGE,
                                    "rate limit: %lld requests per minute (burst %lld) for %s; "
                                                 "retry in %lld ms",
                                    (long long)k->rate_per_min, (long long)k->burst,
                       k->name ? k->name : "anonymous callers", (long long)*retry_after_ms);
    }
    pthread_mutex_unlock(&a->mu);
    return st;
}

/* ---- daily quota --------------------------------------------------------------------- */

imgd_status imgd_auth_take_images(imgd_auth *a, const imgd_auth_key *key, int32_t n_images,
                                  int64_t now_ms, int64_t *retry_after_ms) {
    if (!a || !key || !retry_after_ms) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_auth_take_images: NULL argument");
    }
    if (n_images < 1) {
        return imgd_fail(IMGD_E_INVALID_ARG, "image count %d: expected at least 1", (int)n_images);
    }
    if (key->daily_images <= 0) return IMGD_OK;
    const char *who = key->name ? key->name : "anonymous callers";
    if (n_images > key->daily_images) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "%d images in one request exceed the daily quota of %lld for %s; ask "
                         "for fewer images",
                         (int)n_images, (long long)key->daily_images, who);
    }
    char day[32];
    imgd_jobstore_utc_day(now_ms, day);
    int64_t     total = 0;
    bool        added = false;
    imgd_status st    = imgd_jobstore_usage_add(a->js, key->name ? key->name : ANON_USAGE_ID, day,
                                                n_images, key->daily_images, &total, &added);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "daily image quota");
    if (!added) {
        int64_t next    = (now_ms / DAY_MS + 1) * DAY_MS;
        *retry_after_ms = next - now_ms;
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "daily image quota: %lld of %lld images used today (UTC %s) by %s; "
                         "%d more do not fit; the quota resets at 00:00 UTC",
                         (long long)total, (long long)key->daily_images, day, who, (int)n_images);
    }
    return IMGD_OK;
}

const imgd_auth_key *imgd_auth_key_find(const imgd_auth *a, const char *name) {
    if (!a) return NULL;
    if (!name) return &a->anon;
    for (size_t i = 0; i < a->n_keys; i++) {
        if (a->keys[i].name && strcmp(a->keys[i].name, name) == 0) return &a->keys[i];
    }
    return NULL;
}

imgd_status imgd_auth_refund_images(imgd_auth *a, const imgd_auth_key *key, int32_t n_images,
                                    int64_t taken_ms) {
    if (!a || !key) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_auth_refund_images: NULL argument");
    if (key->daily_images <= 0 || n_images <= 0) return IMGD_OK;
    char day[32];
    imgd_jobstore_utc_day(taken_ms, day);
    int64_t total = 0;
    bool    added = false;
    return imgd_jobstore_usage_add(a->js, key->name ? key->name : ANON_USAGE_ID, day, -n_images, -1,
                                   &total, &added);
}

int64_t imgd_auth_retry_after_s(int64_t retry_after_ms) {
    if (retry_after_ms <= 1000) return 1;
    return (retry_after_ms + 999) / 1000;
}
