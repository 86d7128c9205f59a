#include "service/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"

#define PROBLEM_BASE "https://imgd.dev/problems/"

struct imgd_http {
    struct MHD_Daemon *d;
    imgd_http_params   p;
    uint16_t           port;
};

/* Per-connection state while the body arrives. */
typedef struct conn_state {
    imgd_buf body;
    bool     too_large;
    double   t0;
    char     request_id[40];
} conn_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- response helpers ------------------------------------------------------------------- */

void imgd_http_json(imgd_http_resp *resp, int32_t status, const char *json_text) {
    resp->status       = status;
    resp->content_type = "application/json";
    resp->body.len     = 0;
    if (resp->body.data) resp->body.data[0] = '\0';
    if (imgd_buf_puts(&resp->body, json_text) != IMGD_OK) {
        resp->status = 500;
        imgd_buf_free(&resp->body);
    }
}

void imgd_http_problem(imgd_http_resp *resp, int32_t status, const char *type, const char *title,
                       const char *detail, const char *pointer, const char *hint) {
    imgd_buf b;
    imgd_buf_init(&b, 1u << 16);
    imgd_status st = imgd_buf_printf(&b, "{\"type\":\"" PROBLEM_BASE "%s\",\"title\":", type);
    if (st == IMGD_OK) st = imgd_buf_json_str(&b, title);
    if (st == IMGD_OK) st = imgd_buf_printf(&b, ",\"status\":%d,\"detail\":", (int)status);
    if (st == IMGD_OK) st = imgd_buf_json_str(&b, detail ? detail : title);
    if (st == IMGD_OK && pointer) {
        st = imgd_buf_puts(&b, ",\"pointer\":");
        if (st == IMGD_OK) st = imgd_buf_json_str(&b, pointer);
    }
    if (st == IMGD_OK && hint && hint[0]) {
        st = imgd_buf_puts(&b, ",\"hint\":");
        if (st == IMGD_OK) st = imgd_buf_json_str(&b, hint);
    }
    if (st == IMGD_OK) st = imgd_buf_puts(&b, "}");
    imgd_buf_free(&resp->body);
    resp->status       = status;
    resp->content_type = "application/problem+json";
    if (st == IMGD_OK) {
        resp->body = b;
    } else {
        imgd_buf_free(&b);
        imgd_buf_init(&resp->body, 256);
        (void)imgd_buf_puts(&resp->body, "{\"title\":\"out of memory\",\"status\":500}");
        resp->status = 500;
    }
}

const char *imgd_http_query(const imgd_http_req *req, const char *key) {
    return MHD_lookup_connection_value((struct MHD_Connection *)req->conn, MHD_GET_ARGUMENT_KIND,
                                       key);
}

/* ---- streaming ---------------------------------------------------------------------------- */

typedef struct stream_box {
    imgd_http_stream_fn fn;
    void               *ctx;
    void (*free_fn)(void *ctx);
} stream_box;

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_box *sb = cls;
    for (;;) {
        int64_t n = sb->fn(sb->ctx, buf, max);
        if (n < 0) return MHD_CONTENT_READER_END_OF_STREAM;
        if (n > 0) return (ssize_t)n;
        /* 0: the callback waited and has nothing yet; ask again. */
    }
}

static void stream_free(void *cls) {
    stream_box *sb = cls;
    if (sb->free_fn) sb->free_fn(sb->ctx);
    imgd_free(sb);
}

/* ---- the access handler ------------------------------------------------------------------- */

static void make_request_id(struct MHD_Connection *c, char out[40]) {
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (given) {
        size_t n  = strlen(given);
        bool   ok = n >= 1 && n < 40;
        for (size_t i = 0; ok && i < n; i++) {
            char ch = given[i];
            ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 ch == '-' || ch == '_' || ch == '.';
        }
        if (ok) {
            memcpy(out, given, n + 1);
            return;
        }
    }
    uint8_t r[8] = {0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        static unsigned long ctr;
        unsigned long        v = __atomic_add_fetch(&ctr, 1, __ATOMIC_RELAXED);
        memcpy(r, &v, sizeof v < sizeof r ? sizeof v : sizeof r);
    }
    for (size_t i = 0; i < 8; i++) (void)snprintf(out + 2 * i, 3, "%02x", r[i]);
}

static void peer_name(struct MHD_Connection *c, char *out, size_t cap) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        (void)inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)cap);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        (void)inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)cap);
    }
}

/* "http://" + Host when the header holds only host-name characters, else the loopback. */
static void make_base_url(struct MHD_Connection *c, uint16_t port, char *out, size_t cap) {
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    bool        ok   = host && host[0] && strlen(host) < 100;
    for (const char *p = host; ok && *p; p++) {
        char ch = *p;
        ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
             ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']';
    }
    if (ok)
        (void)imgd_fmt(out, cap, "http://%s", host);
    else
        (void)imgd_fmt(out, cap, "http://127.0.0.1:%u", (unsigned)port);
}

static enum MHD_Result send_resp(struct MHD_Connection *c, imgd_http_resp *r,
                                 const char *request_id) {
    struct MHD_Response *mr;
    if (r->stream) {
        stream_box *sb = imgd_malloc(sizeof *sb);
        if (!sb) {
            if (r->stream_free) r->stream_free(r->stream_ctx);
            return MHD_NO;
        }
        sb->fn      = r->stream;
        sb->ctx     = r->stream_ctx;
        sb->free_fn = r->stream_free;
        mr          = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, sb,
                                                        stream_free);
        if (!mr) {
            stream_free(sb);
            return MHD_NO;
        }
        (void)MHD_add_response_header(mr, "Cache-Control", "no-cache");
    } else {
        size_t      len = r->body.len;
        char       *txt = imgd_buf_take(&r->body);
        static char empty[1];
        mr = txt ? MHD_create_response_from_buffer_with_free_callback(len, txt, imgd_free)
                 : MHD_create_response_from_buffer(0, empty, MHD_RESPMEM_PERSISTENT);
        if (!mr) {
            imgd_free(txt);
            return MHD_NO;
        }
    }
    (void)MHD_add_response_header(mr, "Content-Type",
                                  r->content_type ? r->content_type : "application/json");
    (void)MHD_add_response_header(mr, "X-Request-Id", request_id);
    if (r->retry_after[0]) (void)MHD_add_response_header(mr, "Retry-After", r->retry_after);
    if (r->location[0]) (void)MHD_add_response_header(mr, "Location", r->location);
    if (r->allow[0]) (void)MHD_add_response_header(mr, "Allow", r->allow);
    /* RFC 9110 11.6.1: a 401 names the scheme to use (auth.h asks for it). */
    if (r->status == 401) (void)MHD_add_response_header(mr, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ret;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
    (void)version;
    imgd_http  *h  = cls;
    conn_state *cs = *con_cls;
    if (!cs) {
        cs = imgd_calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        imgd_buf_init(&cs->body, h->p.body_max);
        cs->t0 = now_s();
        make_request_id(c, cs->request_id);
        *con_cls = cs;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!cs->too_large &&
            imgd_buf_append(&cs->body, upload_data, *upload_data_size) != IMGD_OK) {
            cs->too_large = true;
            imgd_buf_free(&cs->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    char peer[64];
    peer_name(c, peer, sizeof peer);
    char base_url[160];
    make_base_url(c, h->port, base_url, sizeof base_url);
    imgd_http_req req = {
        .method        = method,
        .path          = url,
        .body          = cs->body.data ? cs->body.data : "",
        .body_len      = cs->body.len,
        .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
        .content_type  = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type"),
        .request_id    = cs->request_id,
        .peer          = peer,
        .base_url      = base_url,
        .conn          = c,
    };
    imgd_http_resp resp = {.status = 500, .content_type = "application/json"};
    imgd_buf_init(&resp.body, 0);
    const char *route = "";
    /* Every log line about this request carries its id, refusals included. */
    imgd_log_request_id_set(cs->request_id);
    if (cs->too_large) {
        char detail[160];
        (void)imgd_fmt(detail, sizeof detail, "the request body is over the limit of %zu bytes",
                       h->p.body_max);
        imgd_http_problem(&resp, 413, "body-too-large", "Request body too large", detail, NULL,
                          "send smaller images, or raise http.body_max in the server config");
        route = "(body too large)";
    } else {
        h->p.handler(h->p.app, &req, &resp);
        route = resp.route ? resp.route : "(none)";
    }
    int32_t         status = resp.status;
    enum MHD_Result ret    = send_resp(c, &resp, cs->request_id);
    imgd_buf_free(&resp.body);
    if (h->p.done) h->p.done(h->p.app, &req, route, status, now_s() - cs->t0);
    imgd_log_request_id_set(NULL);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_state *cs = *con_cls;
    if (!cs) return;
    imgd_buf_free(&cs->body);
    imgd_free(cs);
    *con_cls = NULL;
}

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    IMGD_LOG(IMGD_LOG_WARN, "http", "mhd", "%s", msg);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

imgd_status imgd_http_start(const imgd_http_params *p, imgd_http **out) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family    = AF_INET;
    sa.sin_port      = htons(p->port);
    const char *host = p->host && p->host[0] ? p->host : "127.0.0.1";
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "--host '%s' is not an IPv4 address (use e.g. 127.0.0.1 or 0.0.0.0)",
                         host);
    }
    imgd_http *h = imgd_calloc(1, sizeof *h);
    if (!h) return imgd_fail(IMGD_E_NOMEM, "http: out of memory");
    h->p           = *p;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    h->d = MHD_start_daemon(
        flags, p->port, NULL, NULL, on_access, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(p->conn_max ? p->conn_max : 256),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(p->timeout_s ? p->timeout_s : 120),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 256u, MHD_OPTION_END);
    if (!h->d) {
        imgd_free(h);
        return imgd_fail(IMGD_E_IO,
                         "http: cannot listen on %s:%u (in use, or not allowed; choose another "
                         "--port or --host)",
                         host, (unsigned)p->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port                        = di ? di->port : p->port;
    *out                           = h;
    return IMGD_OK;
}

uint16_t imgd_http_port(const imgd_http *h) {
    return h->port;
}

void imgd_http_quiesce(imgd_http *h) {
    if (!h || !h->d) return;
    MHD_socket s = MHD_quiesce_daemon(h->d);
    (void)s; /* MHD closes it on stop */
}

void imgd_http_free(imgd_http *h) {
    if (!h) return;
    if (h->d) MHD_stop_daemon(h->d);
    imgd_free(h);
}
