/* API keys, per-key rate limits (token bucket) and daily image quotas (issue 6).
 *
 * Configuration is the "auth" member of the server's --config JSON file:
 *
 *     "auth": {
 *       "anonymous": false,            // or true (no limits), or {"rate_per_min": 10,
 *                                      //   "burst": 2, "daily_images": 50}
 *       "keys": [
 *         {"name": "alice", "key": "sk-0123456789abcdef", "rate_per_min": 60, "burst": 10,
 *          "daily_images": 1000},
 *         {"name": "bob", "key_sha256": "<64 hex digits of sha256(key)>"}
 *       ]
 *     }
 *
 * - No "auth" member at all (cfg NULL): the server is anonymous-open, without limits. Say so
 *   at startup: anyone who can reach the port can generate.
 * - "anonymous" absent or false: every request needs "Authorization: Bearer <key>".
 * - A request that sends a key that is not configured is refused (401) even when anonymous
 *   access is on: a typo in a key should not silently fall back to anonymous limits.
 * - Limits absent or 0 mean unlimited. burst defaults to rate_per_min.
 * - Keys are stored as sha256 digests and compared in constant time; no function here logs
 *   or returns a key, and error messages never contain one.
 * - Rate buckets live in memory (a restart refills them); daily image counts live in the
 *   job store's database (table usage), per UTC day, so a restart does not reset them.
 *
 * Thread-safety: all functions are safe from any thread on a shared imgd_auth. */
#ifndef IMGD_SERVICE_AUTH_H
#define IMGD_SERVICE_AUTH_H

#include <cjson/cJSON.h>

#include "base/base.h"
#include "service/jobstore.h"

typedef struct imgd_auth     imgd_auth;
typedef struct imgd_auth_key imgd_auth_key; /* one caller: a configured key or anonymous */

typedef struct imgd_auth_result {
    const imgd_auth_key *key;  /* who is calling; valid until imgd_auth_free */
    const char          *name; /* the key's "name"; NULL for anonymous; same lifetime */
} imgd_auth_result;

/* Builds the auth state from the "auth" config object (cfg NULL = anonymous-open; cfg is
 * read, not kept). js stores daily image counts; it must outlive the imgd_auth and may be
 * NULL only when no daily_images limit is configured.
 * Returns IMGD_OK (*out owned by the caller, imgd_auth_free), IMGD_E_FORMAT (the message
 * names the JSON path, e.g. auth.keys[1].key_sha256, what is wrong and how to fix it),
 * IMGD_E_INVALID_ARG (daily_images configured without a job store), IMGD_E_NOMEM. */
imgd_status imgd_auth_new(const cJSON *cfg, imgd_jobstore *js, imgd_auth **out);

/* NULL is a no-op. */
void imgd_auth_free(imgd_auth *a);

/* Identifies the caller from the Authorization header value (NULL or "" when absent).
 * Returns IMGD_OK with *r filled, or IMGD_E_AUTH (HTTP 401; send
 * `WWW-Authenticate: Bearer`) when the key is missing and anonymous access is off, the
 * header is not "Bearer <key>", or the key is unknown. *r untouched on failure. */
imgd_status imgd_auth_check(imgd_auth *a, const char *authorization, imgd_auth_result *r);

/* Takes one request from key's token bucket at now_ms (Unix ms; pass the real clock, or a
 * test clock). Returns IMGD_OK, or IMGD_E_TOO_LARGE (HTTP 429) with *retry_after_ms set to
 * the wait until a token is available (see imgd_auth_retry_after_s). */
imgd_status imgd_auth_take_request(imgd_auth *a, const imgd_auth_key *key, int64_t now_ms,
                                   int64_t *retry_after_ms);

/* Counts n_images against key's daily quota (UTC day of now_ms), durably. Returns IMGD_OK;
 * IMGD_E_TOO_LARGE (429) when the day's quota would be exceeded, with *retry_after_ms =
 * time to the next UTC midnight (nothing counted); IMGD_E_INVALID_ARG (400) when n_images
 * alone exceeds the daily quota or is < 1; IMGD_E_IO / IMGD_E_NOMEM from the database. */
imgd_status imgd_auth_take_images(imgd_auth *a, const imgd_auth_key *key, int32_t n_images,
                                  int64_t now_ms, int64_t *retry_after_ms);

/* The key configured under name (NULL = the anonymous caller), for work done later on a
 * caller's behalf (refunds by the scheduler). NULL when unknown. */
const imgd_auth_key *imgd_auth_key_find(const imgd_auth *a, const char *name);

/* Gives back images counted by imgd_auth_take_images for the UTC day of taken_ms (a job
 * that failed or was cancelled before producing them). No-op without a quota. */
imgd_status imgd_auth_refund_images(imgd_auth *a, const imgd_auth_key *key, int32_t n_images,
                                    int64_t taken_ms);

/* Retry-After header value in whole seconds: retry_after_ms rounded up, at least 1. */
int64_t imgd_auth_retry_after_s(int64_t retry_after_ms);

#endif
