/* Model hubs (imgd_pull): Hugging Face repos and CivitAI versions over libcurl. Parallel,
 * resumable (.part + Range), sha256-verified, atomic (rename after verification). */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "base/text.h"

#define API_SIZE_MAX    ((size_t)16 << 20)
#define FILES_MAX       ((size_t)256)
#define RETRY_AFTER_MAX 60
#define ERR_MAX         768

/* ---- small helpers ------------------------------------------------------------------------ */

imgd_pull_params imgd_pull_params_default(void) {
    imgd_pull_params p;
    memset(&p, 0, sizeof p);
    return p;
}

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode       g_curl_init = CURLE_OK;

static void curl_init_once(void) {
    g_curl_init = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    (void)nanosleep(&ts, NULL);
}

/* A relative path from a hub is safe: no absolute path, no "..", no backslash or control
 * characters, no empty component. */
static bool rel_path_ok(const char *p, bool allow_slash) {
    if (!p || !p[0] || p[0] == '/' || strlen(p) > 1024) return false;
    const char *c = p;
    while (*c) {
        const char *e = strchr(c, '/');
        size_t      n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) {
            return false;
        }
        if (e && !allow_slash) return false;
        c += n + (e ? 1 : 0);
    }
    for (const char *q = p; *q; q++) {
        if ((unsigned char)*q < 0x20 || *q == '\\' || *q == 0x7f) return false;
    }
    return true;
}

/* mkdir -p of the folder holding path. */
static imgd_status mkdirs_for(const char *path) {
    char tmp[4096];
    if (!imgd_fmt(tmp, sizeof tmp, "%s", path)) return imgd_fail(IMGD_E_TOO_LARGE, "path too long");
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
            return imgd_fail(IMGD_E_IO, "cannot create %s: %s", tmp, strerror(errno));
        }
        *p = '/';
    }
    return IMGD_OK;
}

static void lower_hex(char *s) {
    for (; *s; s++) {
        if (*s >= 'A' && *s <= 'F') *s = (char)(*s - 'A' + 'a');
    }
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

typedef struct http_ctx {
    imgd_buf body;
    long     retry_after; /* seconds from a Retry-After header, -1 none */
} http_ctx;

static size_t on_header(char *buf, size_t size, size_t n, void *user) {
    http_ctx *h   = user;
    size_t    len = size * n;
    if (len > 12 && strncasecmp(buf, "Retry-After:", 12) == 0) {
        char   v[32];
        size_t k = len - 12 < sizeof v - 1 ? len - 12 : sizeof v - 1;
        memcpy(v, buf + 12, k);
        v[k]           = '\0';
        char *end      = NULL;
        long  x        = strtol(v, &end, 10);
        h->retry_after = end != v && x >= 0 ? x : 1;
    }
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *user) {
    http_ctx *h = user;
    return imgd_buf_append(&h->body, buf, size * n) == IMGD_OK ? size * n : 0;
}

/* Adds "Authorization: Bearer TOKEN" when url is on the hub whose base is endpoint. */
static struct curl_slist *auth_headers(const char *url, const char *endpoint, const char *token) {
    size_t el = strlen(endpoint);
    if (!token || !*token || strncmp(url, endpoint, el) != 0) return NULL;
    if (url[el] != '/' && url[el] != '\0') return NULL;
    char h[1024];
    if (!imgd_fmt(h, sizeof h, "Authorization: Bearer %s", token)) return NULL;
    return curl_slist_append(NULL, h);
}

static void curl_common(CURL *c, const char *url, struct curl_slist *hdr) {
    (void)curl_easy_setopt(c, CURLOPT_URL, url);
    (void)curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    (void)curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    (void)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    (void)curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    (void)curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    (void)curl_easy_setopt(c, CURLOPT_USERAGENT, "imgd");
    if (hdr) (void)curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
}

/* Status for an HTTP error code, with a message naming what and how to fix. */
static imgd_status http_fail(long code, const char *what, const char *url, const char *token_var) {
    if (code == 404) {
        return imgd_fail(IMGD_E_NOT_FOUND, "%s: not found (HTTP 404 from %s); check the name", what,
                         url);
    }
    if (code == 401 || code == 403) {
        return imgd_fail(IMGD_E_AUTH,
                         "%s: access denied (HTTP %ld from %s); set %s to a token that may read it",
                         what, code, url, token_var);
    }
    return imgd_fail(IMGD_E_IO, "%s: HTTP %ld from %s", what, code, url);
}

/* GETs a JSON document, retrying 429 (after Retry-After) and connection failures. */
static imgd_status http_get_json(const char *url, const char *endpoint, const char *token,
                                 const char *token_var, const char *what, int32_t retries,
                                 cJSON **out) {
    CURL *c = curl_easy_init();
    if (!c) return imgd_fail(IMGD_E_NOMEM, "%s: cannot create a curl handle", what);
    struct curl_slist *hdr = auth_headers(url, endpoint, token);
    imgd_status        st  = IMGD_E_IO;
    http_ctx           h;
    for (int32_t attempt = 0; attempt <= retries; attempt++) {
        imgd_buf_init(&h.body, API_SIZE_MAX);
        h.retry_after = -1;
        curl_common(c, url, hdr);
        (void)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        (void)curl_easy_setopt(c, CURLOPT_WRITEDATA, &h);
        (void)curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        (void)curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
        CURLcode rc   = curl_easy_perform(c);
        long     code = 0;
        (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        if (rc == CURLE_OK && code == 200) {
            st = imgd_json_parse(what, h.body.data ? h.body.data : "", h.body.len, API_SIZE_MAX, 64,
                                 out);
            imgd_buf_free(&h.body);
            break;
        }
        imgd_buf_free(&h.body);
        if (rc == CURLE_OK && code != 429 && code < 500) {
            st = http_fail(code, what, url, token_var);
            break;
        }
        st = rc != CURLE_OK ? imgd_fail(IMGD_E_IO, "%s: %s (%s)", what, curl_easy_strerror(rc), url)
                            : imgd_fail(IMGD_E_IO, "%s: HTTP %ld from %s after %d tries", what,
                                        code, url, (int)attempt + 1);
        if (attempt < retries) {
            sleep_s(h.retry_after >= 0 ? (double)(h.retry_after < RETRY_AFTER_MAX ? h.retry_after
                                                                                  : RETRY_AFTER_MAX)
                                       : 0.5 * (attempt + 1));
        }
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return st;
}

/* ---- one file ------------------------------------------------------------------------------ */

typedef struct pull_ctx pull_ctx;

typedef struct dl {
    char       *url, *rel, *path; /* path: final file; rel: shown in messages and the report */
    uint64_t    size;             /* expected bytes, 0 = unknown */
    char        sha256[65];       /* expected, "" = unknown (then the computed one is reported) */
    char        got[65];          /* computed */
    bool        downloaded;       /* false: already present with the stated hash */
    imgd_status st;
    char        err[ERR_MAX];
} dl;

struct pull_ctx {
    const imgd_pull_params *p;
    const char             *endpoint, *token, *token_var;
    dl                     *files;
    size_t                  n;
    pthread_mutex_t         mu;   /* next, progress calls */
    size_t                  next; /* next file to take */
    atomic_uint_fast64_t    done, total;
    atomic_bool             cancel;
};

typedef struct dl_write {
    pull_ctx *pc;
    CURL     *c;
    FILE     *f;
    long      code;    /* response code seen at the first body byte */
    bool      resumed; /* a Range request was sent */
    uint64_t  offset;  /* bytes already in the part file */
    bool      failed;  /* a write error */
    http_ctx  h;       /* headers (Retry-After) */
} dl_write;

static void progress_report(pull_ctx *pc) {
    if (!pc->p->progress) return;
    pthread_mutex_lock(&pc->mu);
    bool go = pc->p->progress((uint64_t)atomic_load(&pc->done), (uint64_t)atomic_load(&pc->total),
                              pc->p->user);
    pthread_mutex_unlock(&pc->mu);
    if (!go) atomic_store(&pc->cancel, true);
}

static size_t on_file_body(char *buf, size_t size, size_t n, void *user) {
    dl_write *w   = user;
    size_t    len = size * n;
    if (w->code == 0) {
        (void)curl_easy_getinfo(w->c, CURLINFO_RESPONSE_CODE, &w->code);
        if (w->code == 200 && w->offset) {
            /* the server ignored the Range: start over */
            if (ftruncate(fileno(w->f), 0) != 0 || fseek(w->f, 0, SEEK_SET) != 0) w->failed = true;
            atomic_fetch_sub(&w->pc->done, w->offset);
            w->offset = 0;
        }
    }
    if (w->code != 200 && w->code != 206) return len; /* an error body: discard */
    if (atomic_load(&w->pc->cancel)) return 0;
    if (fwrite(buf, 1, len, w->f) != len) {
        w->failed = true;
        return 0;
    }
    atomic_fetch_add(&w->pc->done, len);
    progress_report(w->pc);
    return len;
}

static uint64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* One HTTP attempt into part. *code gets the response code, *retry_after the header value. */
static CURLcode fetch_once(pull_ctx *pc, CURL *c, dl *d, const char *part, long *code,
                           long *retry_after, bool *write_failed) {
    dl_write w;
    memset(&w, 0, sizeof w);
    w.pc            = pc;
    w.c             = c;
    w.offset        = file_size(part);
    w.h.retry_after = -1;
    w.f             = fopen(part, "ab");
    if (!w.f) {
        *write_failed = true;
        return CURLE_WRITE_ERROR;
    }
    struct curl_slist *hdr = auth_headers(d->url, pc->endpoint, pc->token);
    curl_easy_reset(c);
    curl_common(c, d->url, hdr);
    char range[64];
    if (w.offset) {
        (void)imgd_fmt(range, sizeof range, "%llu-", (unsigned long long)w.offset);
        (void)curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    (void)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_file_body);
    (void)curl_easy_setopt(c, CURLOPT_WRITEDATA, &w);
    (void)curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    (void)curl_easy_setopt(c, CURLOPT_HEADERDATA, &w.h);
    CURLcode rc = curl_easy_perform(c);
    (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
    if (fclose(w.f) != 0) w.failed = true;
    curl_slist_free_all(hdr);
    *retry_after  = w.h.retry_after;
    *write_failed = w.failed;
    return rc;
}

/* Verifies part against the stated sha256 and renames it into place. */
static imgd_status finish_file(dl *d, const char *part) {
    if (d->size && file_size(part) != d->size) {
        return imgd_fail(IMGD_E_IO, "%s: %llu bytes received, the hub states %llu", d->rel,
                         (unsigned long long)file_size(part), (unsigned long long)d->size);
    }
    imgd_status st = imgd_file_sha256(part, NULL, NULL, d->got);
    if (st != IMGD_OK) return st;
    if (d->sha256[0] && strcmp(d->sha256, d->got) != 0) {
        (void)unlink(part);
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: sha256 mismatch: the hub states %s, the download is %s; the file "
                         "was deleted (a corrupted transfer or a wrong hash on the hub: pull "
                         "again, or report it to the hub)",
                         d->rel, d->sha256, d->got);
    }
    if (rename(part, d->path) != 0) {
        return imgd_fail(IMGD_E_IO, "%s: cannot rename %s: %s", d->rel, part, strerror(errno));
    }
    return IMGD_OK;
}

/* Downloads d with retries; the status and message go into d. */
static void download(pull_ctx *pc, CURL *c, dl *d) {
    char part[4200];
    (void)imgd_fmt(part, sizeof part, "%s.part", d->path);
    int32_t     retries = pc->p->retries > 0 ? pc->p->retries : 4;
    imgd_status st      = mkdirs_for(d->path);
    atomic_fetch_add(&pc->done, file_size(part));
    for (int32_t attempt = 0; st == IMGD_OK; attempt++) {
        long     code = 0, ra = -1;
        bool     wf = false;
        CURLcode rc = fetch_once(pc, c, d, part, &code, &ra, &wf);
        if (atomic_load(&pc->cancel)) {
            st = imgd_fail(IMGD_E_CANCELLED, "%s: cancelled; %s kept for a resume", d->rel, part);
            break;
        }
        if (wf) {
            st = imgd_fail(IMGD_E_IO, "%s: cannot write %s: %s", d->rel, part, strerror(errno));
            break;
        }
        if (rc == CURLE_OK && (code == 200 || code == 206)) {
            if (!d->size || file_size(part) == d->size) {
                st = finish_file(d, part);
                break;
            }
            rc = CURLE_PARTIAL_FILE; /* the body ended early without an error: resume */
        }
        if (rc == CURLE_OK && code == 416) {
            /* nothing past what we have: complete, or a bad part file */
            if (d->size && file_size(part) == d->size) {
                st = finish_file(d, part);
                break;
            }
            (void)unlink(part);
        } else if (rc == CURLE_OK && code != 429 && code < 500) {
            st = http_fail(code, d->rel, d->url, pc->token_var);
            break;
        }
        if (attempt >= retries) {
            st = rc != CURLE_OK
                     ? imgd_fail(IMGD_E_IO, "%s: %s after %d tries (%s kept; pull again to resume)",
                                 d->rel, curl_easy_strerror(rc), (int)attempt + 1, part)
                     : imgd_fail(IMGD_E_IO, "%s: HTTP %ld after %d tries from %s", d->rel, code,
                                 (int)attempt + 1, d->url);
            break;
        }
        double wait = ra >= 0 ? (double)(ra < RETRY_AFTER_MAX ? ra : RETRY_AFTER_MAX) : 0.5;
        IMGD_LOG(IMGD_LOG_WARN, "service.hub", "retry", "%s: %s; retrying in %.1f s", d->rel,
                 rc != CURLE_OK ? curl_easy_strerror(rc) : "HTTP error", wait);
        sleep_s(wait);
    }
    d->st = st;
    if (st != IMGD_OK) (void)imgd_fmt(d->err, sizeof d->err, "%s", imgd_last_error());
    d->downloaded = st == IMGD_OK;
}

static void *worker(void *arg) {
    pull_ctx *pc = arg;
    CURL     *c  = curl_easy_init();
    for (;;) {
        pthread_mutex_lock(&pc->mu);
        size_t i = pc->next < pc->n ? pc->next++ : SIZE_MAX;
        pthread_mutex_unlock(&pc->mu);
        if (i == SIZE_MAX) break;
        dl *d = &pc->files[i];
        if (d->st == IMGD_OK) continue; /* already present */
        if (!c) {
            d->st = IMGD_E_NOMEM;
            (void)imgd_fmt(d->err, sizeof d->err, "cannot create a curl handle");
            continue;
        }
        download(pc, c, d);
    }
    if (c) curl_easy_cleanup(c);
    return NULL;
}

/* Skips files already present with the stated hash, then downloads the rest in parallel. */
static imgd_status run_downloads(pull_ctx *pc) {
    size_t todo = 0;
    for (size_t i = 0; i < pc->n; i++) {
        dl *d = &pc->files[i];
        if (d->sha256[0] && file_size(d->path) && (!d->size || file_size(d->path) == d->size) &&
            imgd_file_sha256(d->path, NULL, NULL, d->got) == IMGD_OK &&
            strcmp(d->got, d->sha256) == 0) {
            d->st = IMGD_OK; /* present and verified */
            continue;
        }
        d->st = IMGD_E_INTERNAL; /* to do */
        atomic_fetch_add(&pc->total, d->size);
        todo++;
    }
    int32_t   np = pc->p->parallel > 0 ? pc->p->parallel : 4;
    pthread_t th[16];
    int       nt = 0;
    for (; nt < np && nt < 16 && (size_t)nt < todo; nt++) {
        if (pthread_create(&th[nt], NULL, worker, pc) != 0) break;
    }
    if (nt == 0 && todo) (void)worker(pc);
    for (int i = 0; i < nt; i++) (void)pthread_join(th[i], NULL);
    for (size_t i = 0; i < pc->n; i++) {
        if (pc->files[i].st != IMGD_OK) return imgd_fail(pc->files[i].st, "%s", pc->files[i].err);
    }
    return IMGD_OK;
}

/* ---- file lists ---------------------------------------------------------------------------- */

typedef struct dl_list {
    dl    *v;
    size_t n;
} dl_list;

static void dl_list_free(dl_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        imgd_free(l->v[i].url);
        imgd_free(l->v[i].rel);
        imgd_free(l->v[i].path);
    }
    imgd_free(l->v);
    memset(l, 0, sizeof *l);
}

static imgd_status dl_add(dl_list *l, const char *url, const char *dir, const char *rel,
                          uint64_t size, const char *sha) {
    if (l->n == FILES_MAX) return imgd_fail(IMGD_E_TOO_LARGE, "more than %zu files", FILES_MAX);
    if (!rel_path_ok(rel, true)) {
        return imgd_fail(IMGD_E_FORMAT, "the hub names an unsafe file path '%s'; refused", rel);
    }
    if (l->n == 0) {
        l->v = imgd_calloc(FILES_MAX, sizeof *l->v);
        if (!l->v) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    dl *d   = &l->v[l->n++];
    d->url  = imgd_strdup(url);
    d->rel  = imgd_strdup(rel);
    d->path = imgd_path_join(dir, rel);
    d->size = size;
    if (sha && strlen(sha) == 64) {
        (void)imgd_fmt(d->sha256, sizeof d->sha256, "%s", sha);
        lower_hex(d->sha256);
    }
    return d->url && d->rel && d->path ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "out of memory");
}

static char *report_json(const char *source, const char *dir, const dl_list *l) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    (void)cJSON_AddStringToObject(o, "source", source);
    (void)cJSON_AddStringToObject(o, "dir", dir);
    cJSON *a = cJSON_AddArrayToObject(o, "files");
    for (size_t i = 0; a && i < l->n; i++) {
        cJSON *f = cJSON_CreateObject();
        if (!f) break;
        cJSON_AddItemToArray(a, f);
        (void)cJSON_AddStringToObject(f, "path", l->v[i].path);
        (void)cJSON_AddNumberToObject(f, "bytes", (double)file_size(l->v[i].path));
        (void)cJSON_AddStringToObject(f, "sha256", l->v[i].got);
        (void)cJSON_AddBoolToObject(f, "downloaded", l->v[i].downloaded);
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *out = txt ? imgd_strdup(txt) : NULL;
    cJSON_free(txt);
    return out;
}

/* Escapes each path segment of rel for a URL; NULL on out of memory. */
static char *url_path(CURL *c, const char *rel) {
    imgd_buf b;
    imgd_buf_init(&b, 8192);
    imgd_status st = IMGD_OK;
    for (const char *p = rel; st == IMGD_OK && *p;) {
        const char *e = strchr(p, '/');
        size_t      n = e ? (size_t)(e - p) : strlen(p);
        char       *x = curl_easy_escape(c, p, (int)n);
        st            = x ? imgd_buf_puts(&b, x) : IMGD_E_NOMEM;
        curl_free(x);
        if (st == IMGD_OK && e) st = imgd_buf_puts(&b, "/");
        p += n + (e ? 1 : 0);
    }
    if (st != IMGD_OK) {
        imgd_buf_free(&b);
        return NULL;
    }
    return imgd_buf_take(&b);
}

/* ---- Hugging Face ---------------------------------------------------------------------------- */

static const char *const k_variants[] = {"fp16", "fp32", "bf16", "non_ema", "ema_only", "flax"};

static bool ends_with(const char *s, const char *sfx) {
    size_t n = strlen(s), k = strlen(sfx);
    return n >= k && strcmp(s + n - k, sfx) == 0;
}

static bool is_weight(const char *base) {
    return ends_with(base, ".safetensors") || ends_with(base, ".bin") || ends_with(base, ".ckpt") ||
           ends_with(base, ".pt") || ends_with(base, ".pth");
}

static bool is_index(const char *base) {
    return ends_with(base, ".json") && strstr(base, ".index") != NULL;
}

/* The variant of a weight file or index ("diffusion_pytorch_model.fp16.safetensors" -> "fp16",
 * "model.safetensors.index.fp16.json" -> "fp16", "model-00001-of-00002.safetensors" -> ""). */
static void variant_of(const char *base, const char *want, char *out, size_t cap) {
    char b[512];
    out[0] = '\0';
    if (!imgd_fmt(b, sizeof b, "%s", base)) return;
    if (is_index(b)) {
        char *ix = strstr(b, ".index.");
        if (ix && strcmp(ix, ".index.json") != 0) {
            char *v          = ix + 7;
            v[strlen(v) - 5] = '\0'; /* ".json" */
            (void)imgd_fmt(out, cap, "%s", v);
        }
        return;
    }
    char *dot = strrchr(b, '.');
    if (dot) *dot = '\0';
    char *sh = strstr(b, "-of-");
    if (sh) {
        char *dash = sh - 1;
        while (dash > b && *dash != '-') dash--;
        if (*dash == '-') *dash = '\0';
    }
    dot = strrchr(b, '.');
    if (!dot) return;
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_variants); i++) {
        if (strcmp(dot + 1, k_variants[i]) == 0) (void)imgd_fmt(out, cap, "%s", dot + 1);
    }
    if (want && strcmp(dot + 1, want) == 0) (void)imgd_fmt(out, cap, "%s", dot + 1);
}

typedef struct hf_file {
    const char *name; /* borrowed from the JSON */
    const char *base; /* after the group */
    uint64_t    size;
    const char *sha;
    char        group[128]; /* component folder, "" = top level */
    char        var[32];
    bool        keep;
} hf_file;

/* Among the weights of one group: the wanted variant (else plain, else the first), and only
 * safetensors when any are there. */
static void hf_pick_weights(hf_file *f, size_t n, const char *group, const char *want) {
    const char *wanted = NULL;
    for (size_t i = 0; i < n; i++) {
        bool w = is_weight(f[i].base) || is_index(f[i].base);
        if (!w || strcmp(f[i].group, group) != 0) continue;
        if (want && strcmp(f[i].var, want) == 0) wanted = want;
    }
    for (size_t i = 0; !wanted && i < n; i++) {
        if ((is_weight(f[i].base) || is_index(f[i].base)) && strcmp(f[i].group, group) == 0 &&
            f[i].var[0] == '\0') {
            wanted = "";
        }
    }
    for (size_t i = 0; !wanted && i < n; i++) {
        if ((is_weight(f[i].base) || is_index(f[i].base)) && strcmp(f[i].group, group) == 0) {
            wanted = f[i].var;
        }
    }
    if (!wanted) return;
    bool st = false;
    for (size_t i = 0; i < n; i++) {
        bool w = is_weight(f[i].base) || is_index(f[i].base);
        if (w && strcmp(f[i].group, group) == 0 && strcmp(f[i].var, wanted) == 0) {
            f[i].keep = true;
            st        = st || strstr(f[i].base, ".safetensors") != NULL;
        }
    }
    for (size_t i = 0; st && i < n; i++) {
        if (f[i].keep && strcmp(f[i].group, group) == 0 && !strstr(f[i].base, ".safetensors") &&
            (is_weight(f[i].base) || is_index(f[i].base))) {
            f[i].keep = false;
        }
    }
}

/* Marks what a pipeline (or a single-file repo) needs. */
static void hf_select(hf_file *f, size_t n, const char *want) {
    bool pipeline = false;
    for (size_t i = 0; i < n; i++) {
        pipeline = pipeline || strcmp(f[i].name, "model_index.json") == 0;
    }
    for (size_t i = 0; i < n; i++) {
        const char *b   = f[i].base;
        bool        aux = !is_weight(b) && !is_index(b) &&
                   (ends_with(b, ".json") || ends_with(b, ".txt") || ends_with(b, ".model"));
        if (pipeline) {
            f[i].keep = f[i].group[0] ? aux : strcmp(b, "model_index.json") == 0;
        } else {
            f[i].keep = !f[i].group[0] && ends_with(b, ".yaml");
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!(is_weight(f[i].base) || is_index(f[i].base))) continue;
        if (pipeline != (f[i].group[0] != '\0')) continue;
        bool seen = false;
        for (size_t j = 0; j < i; j++) {
            seen = seen || ((is_weight(f[j].base) || is_index(f[j].base)) &&
                            strcmp(f[j].group, f[i].group) == 0);
        }
        if (!seen) hf_pick_weights(f, n, f[i].group, want);
    }
}

/* Fills f from the API's "siblings"; n_out gets the count. */
static imgd_status hf_files(const cJSON *doc, const char *what, const char *want, hf_file *f,
                            size_t *n_out) {
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(doc, "siblings");
    if (!cJSON_IsArray(sib)) {
        return imgd_fail(IMGD_E_FORMAT, "%s: the hub's answer has no \"siblings\" array", what);
    }
    size_t       n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, sib) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "rfilename");
        if (!cJSON_IsString(nm)) continue;
        if (n == FILES_MAX * 4) return imgd_fail(IMGD_E_TOO_LARGE, "%s: too many files", what);
        hf_file *x = &f[n++];
        memset(x, 0, sizeof *x);
        x->name        = nm->valuestring;
        const char *sl = strchr(x->name, '/');
        x->base        = sl ? sl + 1 : x->name;
        if (sl && strchr(sl + 1, '/')) x->base = ""; /* deeper than one folder: never kept */
        if (sl) (void)imgd_fmt(x->group, sizeof x->group, "%.*s", (int)(sl - x->name), x->name);
        const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(it, "lfs");
        const cJSON *sz  = cJSON_GetObjectItemCaseSensitive(lfs ? lfs : it, "size");
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(lfs, "sha256");
        if (!sha) sha = cJSON_GetObjectItemCaseSensitive(lfs, "oid");
        x->size = cJSON_IsNumber(sz) && sz->valuedouble > 0 ? (uint64_t)sz->valuedouble : 0;
        x->sha  = cJSON_IsString(sha) ? sha->valuestring : NULL;
        variant_of(x->base, want, x->var, sizeof x->var);
    }
    hf_select(f, n, want);
    *n_out = n;
    return IMGD_OK;
}

static bool id_chars_ok(const char *s, const char *extra) {
    if (!*s) return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._-", c) || strchr(extra, c))) {
            return false;
        }
    }
    return true;
}

static imgd_status hf_pull(pull_ctx *pc, const char *src, dl_list *l, char *dir, size_t dir_cap) {
    char repo[256], rev[128] = "main";
    if (strncmp(src, "hf:", 3) == 0) src += 3;
    if (strncmp(src, "https://huggingface.co/", 23) == 0) src += 23;
    if (!imgd_fmt(repo, sizeof repo, "%s", src)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "repo id too long");
    }
    char *at = strchr(repo, '@');
    if (at) {
        *at = '\0';
        (void)imgd_fmt(rev, sizeof rev, "%s", at + 1);
    }
    char *sl = strchr(repo, '/');
    if (!sl || strchr(sl + 1, '/') || !id_chars_ok(rev, "") || sl == repo || !sl[1]) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "'%s' is not a Hugging Face repo id: expected org/name[@revision]", src);
    }
    *sl     = '\0';
    bool ok = id_chars_ok(repo, "") && id_chars_ok(sl + 1, "");
    *sl     = '/';
    if (!ok) return imgd_fail(IMGD_E_INVALID_ARG, "'%s': bad characters in the repo id", src);
    char url[2048], what[400];
    (void)imgd_fmt(url, sizeof url, "%s/api/models/%s/revision/%s?blobs=true", pc->endpoint, repo,
                   rev);
    (void)imgd_fmt(what, sizeof what, "Hugging Face repo %s@%s", repo, rev);
    cJSON      *doc = NULL;
    imgd_status st  = http_get_json(url, pc->endpoint, pc->token, pc->token_var, what,
                                   pc->p->retries > 0 ? pc->p->retries : 4, &doc);
    if (st != IMGD_OK) return st;
    hf_file *f = imgd_calloc(FILES_MAX * 4, sizeof *f);
    size_t   n = 0;
    st         = f ? hf_files(doc, what, pc->p->variant, f, &n) : imgd_fail(IMGD_E_NOMEM, "oom");
    (void)imgd_fmt(dir, dir_cap, "%s/%s", pc->p->dest_dir, sl + 1);
    CURL *c = st == IMGD_OK ? curl_easy_init() : NULL;
    if (st == IMGD_OK && !c) st = imgd_fail(IMGD_E_NOMEM, "cannot create a curl handle");
    size_t kept = 0;
    for (size_t i = 0; st == IMGD_OK && i < n; i++) {
        if (!f[i].keep) continue;
        kept++;
        char *esc = url_path(c, f[i].name);
        if (!esc) {
            st = imgd_fail(IMGD_E_NOMEM, "out of memory");
            break;
        }
        (void)imgd_fmt(url, sizeof url, "%s/%s/resolve/%s/%s", pc->endpoint, repo, rev, esc);
        imgd_free(esc);
        st = dl_add(l, url, dir, f[i].name, f[i].size, f[i].sha);
    }
    if (st == IMGD_OK && kept == 0) {
        st = imgd_fail(IMGD_E_NOT_FOUND, "%s has no model files imgd can use", what);
    }
    if (c) curl_easy_cleanup(c);
    imgd_free(f);
    cJSON_Delete(doc);
    return st;
}

/* ---- CivitAI ------------------------------------------------------------------------------ */

static bool digits(const char *s, size_t n) {
    if (n == 0 || n > 18) return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
    }
    return true;
}

/* Reads the number after key in s ("modelVersionId=", "/models/"). */
static bool number_after(const char *s, const char *key, char *out, size_t cap) {
    const char *p = strstr(s, key);
    if (!p) return false;
    p += strlen(key);
    size_t n = strspn(p, "0123456789");
    return digits(p, n) && imgd_fmt(out, cap, "%.*s", (int)n, p);
}

/* The API path of the version JSON named by src. */
static imgd_status civitai_api_path(const char *src, char *path, size_t cap, bool *by_model) {
    char id[32];
    *by_model = false;
    if (strncmp(src, "civitai:", 8) == 0 && digits(src + 8, strlen(src + 8))) {
        (void)imgd_fmt(path, cap, "/api/v1/model-versions/%s", src + 8);
    } else if (strncmp(src, "civitai-model:", 14) == 0 && digits(src + 14, strlen(src + 14))) {
        (void)imgd_fmt(path, cap, "/api/v1/models/%s", src + 14);
        *by_model = true;
    } else if (strncmp(src, "civitai-hash:", 13) == 0 && id_chars_ok(src + 13, "") &&
               strlen(src + 13) <= 64) {
        (void)imgd_fmt(path, cap, "/api/v1/model-versions/by-hash/%s", src + 13);
    } else if (strstr(src, "civitai.com/") &&
               (number_after(src, "modelVersionId=", id, sizeof id) ||
                number_after(src, "/download/models/", id, sizeof id))) {
        (void)imgd_fmt(path, cap, "/api/v1/model-versions/%s", id);
    } else if (strstr(src, "civitai.com/") && number_after(src, "/models/", id, sizeof id)) {
        (void)imgd_fmt(path, cap, "/api/v1/models/%s", id);
        *by_model = true;
    } else {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "'%s' is not a model source: give org/name[@revision] (Hugging Face), "
                         "civitai:VERSION_ID, civitai-model:MODEL_ID, civitai-hash:SHA256 or a "
                         "civitai.com URL",
                         src);
    }
    return IMGD_OK;
}

/* The file of a version to download: the primary one, else the first "Model" file. */
static const cJSON *civitai_file(const cJSON *ver) {
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(ver, "files"), *it, *pick = NULL;
    cJSON_ArrayForEach(it, files) {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "primary"))) return it;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "type");
        if (!pick && (!cJSON_IsString(t) || strcmp(t->valuestring, "Model") == 0)) pick = it;
    }
    return pick;
}

/* Recursion: one level at most (a model id resolves to a version id). */
// NOLINTNEXTLINE(misc-no-recursion)
static imgd_status civitai_version(pull_ctx *pc, const char *src, cJSON **ver) {
    char        path[256], url[1024];
    bool        by_model;
    imgd_status st = civitai_api_path(src, path, sizeof path, &by_model);
    if (st != IMGD_OK) return st;
    int32_t retries = pc->p->retries > 0 ? pc->p->retries : 4;
    (void)imgd_fmt(url, sizeof url, "%s%s", pc->endpoint, path);
    cJSON *doc = NULL;
    st         = http_get_json(url, pc->endpoint, pc->token, pc->token_var, src, retries, &doc);
    if (st != IMGD_OK || !by_model) {
        *ver = doc;
        return st;
    }
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(doc, "modelVersions");
    const cJSON *v0 = cJSON_IsArray(vs) ? cJSON_GetArrayItem(vs, 0) : NULL;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(v0, "id");
    char         vsrc[64];
    if (!cJSON_IsNumber(id) ||
        !imgd_fmt(vsrc, sizeof vsrc, "civitai:%lld", (long long)id->valuedouble)) {
        cJSON_Delete(doc);
        return imgd_fail(IMGD_E_FORMAT, "%s: the model has no modelVersions[0].id", src);
    }
    cJSON_Delete(doc);
    return civitai_version(pc, vsrc, ver); /* one level: vsrc is a version id */
}

/* Writes the version metadata beside the file as STEM.civitai.json, atomically. */
static imgd_status civitai_meta(const cJSON *ver, const char *file_path) {
    char        meta[4200], tmp[4300];
    const char *dot = strrchr(file_path, '.'), *sl = strrchr(file_path, '/');
    int         stem = dot && (!sl || dot > sl) ? (int)(dot - file_path) : (int)strlen(file_path);
    (void)imgd_fmt(meta, sizeof meta, "%.*s.civitai.json", stem, file_path);
    (void)imgd_fmt(tmp, sizeof tmp, "%s.tmp", meta);
    char *txt = cJSON_Print(ver);
    if (!txt) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    FILE  *f  = fopen(tmp, "wb");
    size_t n  = strlen(txt);
    bool   ok = f && fwrite(txt, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = false;
    cJSON_free(txt);
    if (!ok || rename(tmp, meta) != 0) {
        (void)unlink(tmp);
        return imgd_fail(IMGD_E_IO, "cannot write %s: %s", meta, strerror(errno));
    }
    return IMGD_OK;
}

static imgd_status civitai_pull(pull_ctx *pc, const char *src, dl_list *l, cJSON **ver) {
    imgd_status st = civitai_version(pc, src, ver);
    if (st != IMGD_OK) return st;
    const cJSON *f    = civitai_file(*ver);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
    const cJSON *url  = cJSON_GetObjectItemCaseSensitive(f, "downloadUrl");
    const cJSON *hs   = cJSON_GetObjectItemCaseSensitive(f, "hashes");
    const cJSON *sha  = cJSON_GetObjectItemCaseSensitive(hs, "SHA256");
    if (!cJSON_IsString(name) || !cJSON_IsString(url)) {
        return imgd_fail(IMGD_E_FORMAT, "%s: the version has no file with a name and downloadUrl",
                         src);
    }
    if (!rel_path_ok(name->valuestring, false)) {
        return imgd_fail(IMGD_E_FORMAT, "%s: unsafe file name '%s' refused", src,
                         name->valuestring);
    }
    if (strncmp(url->valuestring, "https://", 8) != 0 &&
        strncmp(url->valuestring, "http://", 7) != 0) {
        return imgd_fail(IMGD_E_FORMAT, "%s: downloadUrl '%s' is not http(s)", src,
                         url->valuestring);
    }
    return dl_add(l, url->valuestring, pc->p->dest_dir, name->valuestring, 0,
                  cJSON_IsString(sha) ? sha->valuestring : NULL);
}

/* ---- plain URLs --------------------------------------------------------------------------- */

/* A direct link to one weight file (any host; a Hugging Face ".../resolve/REV/FILE" link too):
 * the file name is the URL's last path segment. No hash is stated, so none is checked. */
static imgd_status url_pull(const char *src, const char *dest, dl_list *l) {
    const char *path = strstr(src, "://");
    path             = path ? strchr(path + 3, '/') : NULL;
    size_t      n    = path ? strcspn(path, "?#") : 0;
    const char *name = path ? path + n : NULL;
    while (name && name > path && name[-1] != '/') name--;
    char file[256];
    if (!path || !imgd_fmt(file, sizeof file, "%.*s", (int)(path + n - name), name) || !file[0]) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "URL '%s' names no file: give a direct link ending in the file name "
                         "(https://host/path/model.safetensors)",
                         src);
    }
    if (!is_weight(file)) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "URL '%s': '%s' is not a weight file (.safetensors, .ckpt, .pt, .pth, "
                         ".bin)",
                         src, file);
    }
    return dl_add(l, src, dest, file, 0, NULL);
}

/* ---- imgd_pull ------------------------------------------------------------------------------ */

static bool is_civitai(const char *src) {
    return strncmp(src, "civitai", 7) == 0 || strstr(src, "civitai.com/") != NULL;
}

/* An http(s) URL that is neither a CivitAI page nor a Hugging Face repo page. */
static bool is_plain_url(const char *src) {
    bool web = strncmp(src, "https://", 8) == 0 || strncmp(src, "http://", 7) == 0;
    if (!web || is_civitai(src)) return false;
    return !strstr(src, "://huggingface.co/") || strstr(src, "/resolve/") != NULL;
}

/* civitai-hash:PATH, a file the user already has: its sha256 names the version, whose
 * metadata is written beside that file under its own name (nothing is downloaded). */
static imgd_status civitai_local(pull_ctx *pc, const char *file, char **report) {
    char        sha[65], src[96];
    cJSON      *ver = NULL;
    imgd_status st  = imgd_file_sha256(file, pc->p->progress, pc->p->user, sha);
    if (st == IMGD_OK && imgd_fmt(src, sizeof src, "civitai-hash:%s", sha)) {
        st = civitai_version(pc, src, &ver);
        if (st == IMGD_E_NOT_FOUND) {
            char why[768]; /* the hub's answer; copied: imgd_fail rewrites the message */
            (void)imgd_fmt(why, sizeof why, "%s", imgd_last_error());
            st = imgd_fail(IMGD_E_NOT_FOUND,
                           "%s (sha256 %s) is not a file CivitAI knows: no model version has "
                           "it (%s)",
                           file, sha, why);
        }
    }
    if (st == IMGD_OK) st = civitai_meta(ver, file);
    cJSON_Delete(ver);
    if (st != IMGD_OK || !report) return st;
    cJSON *o = cJSON_CreateObject();
    cJSON *a = o ? cJSON_AddArrayToObject(o, "files") : NULL;
    cJSON *f = a ? cJSON_CreateObject() : NULL;
    if (f) {
        cJSON_AddItemToArray(a, f);
        (void)cJSON_AddStringToObject(o, "source", pc->p->source);
        (void)cJSON_AddStringToObject(f, "path", file);
        (void)cJSON_AddNumberToObject(f, "bytes", (double)file_size(file));
        (void)cJSON_AddStringToObject(f, "sha256", sha);
        (void)cJSON_AddBoolToObject(f, "downloaded", false);
    }
    char *txt = f ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    *report = txt ? imgd_strdup(txt) : NULL;
    cJSON_free(txt);
    return *report ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "out of memory");
}

imgd_status imgd_pull(const imgd_pull_params *p, char **report) {
    bool local = p && p->source && strncmp(p->source, "civitai-hash:", 13) == 0 &&
                 imgd_path_is_file(p->source + 13);
    if (!p || !p->source || (!p->dest_dir && !local)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_pull: source and dest_dir are required");
    }
    (void)pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init != CURLE_OK) {
        return imgd_fail(IMGD_E_IO, "libcurl: %s", curl_easy_strerror(g_curl_init));
    }
    pull_ctx pc;
    memset(&pc, 0, sizeof pc);
    pc.p         = p;
    bool url     = is_plain_url(p->source);
    bool civ     = !url && is_civitai(p->source);
    pc.endpoint  = civ ? env_or("IMGD_CIVITAI_ENDPOINT", "https://civitai.com")
                       : env_or("IMGD_HF_ENDPOINT", "https://huggingface.co");
    pc.token_var = civ ? "CIVITAI_TOKEN" : "HF_TOKEN";
    pc.token     = getenv(pc.token_var);
    pthread_mutex_init(&pc.mu, NULL);
    dl_list l;
    memset(&l, 0, sizeof l);
    cJSON *ver = NULL;
    char   dir[4096];
    (void)imgd_fmt(dir, sizeof dir, "%s", p->dest_dir ? p->dest_dir : "");
    if (url) {
        pc.endpoint = ""; /* no hub token goes to another host */
        pc.token    = NULL;
    }
    if (local) {
        imgd_status lst = civitai_local(&pc, p->source + 13, report);
        pthread_mutex_destroy(&pc.mu);
        return lst;
    }
    imgd_status st = url   ? url_pull(p->source, p->dest_dir, &l)
                     : civ ? civitai_pull(&pc, p->source, &l, &ver)
                           : hf_pull(&pc, p->source, &l, dir, sizeof dir);
    if (st == IMGD_OK) {
        pc.files = l.v;
        pc.n     = l.n;
        st       = run_downloads(&pc);
    }
    if (st == IMGD_OK && ver) st = civitai_meta(ver, l.v[0].path);
    if (st == IMGD_OK && report) {
        *report = report_json(p->source, dir, &l);
        if (!*report) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    cJSON_Delete(ver);
    dl_list_free(&l);
    pthread_mutex_destroy(&pc.mu);
    return st;
}
