/* The HTTP layer of the worker: libmicrohttpd (thread per connection) under a route table.
 *
 * A request is read whole (bounded by body_max) before its handler runs; the handler fills
 * an imgd_http_resp (status, type, body, a few headers) or asks for a stream (server-sent
 * events) that a callback writes piece by piece. Handlers run on connection threads and may
 * block (a synchronous generation waits for its job). */
#ifndef IMGD_SERVICE_HTTP_H
#define IMGD_SERVICE_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"

typedef struct imgd_http_req {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* without the query string */
    const char *body;   /* NUL-terminated; body_len bytes */
    size_t      body_len;
    const char *authorization; /* header value or NULL */
    const char *content_type;  /* header value or NULL */
    const char *request_id;    /* X-Request-Id given by the client (validated) or generated */
    const char *peer;          /* client address, for logs */
    const char *base_url;      /* "http://" + the Host header (checked), for links */
    void       *conn;          /* struct MHD_Connection (query lookups) */
} imgd_http_req;

/* Writes the next piece of a stream into out (at most cap bytes). Returns the bytes written,
 * 0 to wait and be called again, or -1 at the end of the stream. May block for a while. */
typedef int64_t (*imgd_http_stream_fn)(void *ctx, char *out, size_t cap);

typedef struct imgd_http_resp {
    int32_t             status;
    const char         *content_type; /* static string */
    imgd_buf            body;
    char                retry_after[24];
    char                location[160];
    char                allow[64];
    imgd_http_stream_fn stream; /* set: the body is streamed (body ignored) */
    void               *stream_ctx;
    void (*stream_free)(void *ctx);
    const char *route; /* the matched route's pattern, for logs and metrics (static) */
} imgd_http_resp;

/* Query parameter of the request, or NULL. */
const char *imgd_http_query(const imgd_http_req *req, const char *key);

/* Sets a JSON body (takes the cJSON-printed string or copies text). */
void imgd_http_json(imgd_http_resp *resp, int32_t status, const char *json_text);

/* RFC 9457 problem details: type is a short slug appended to the problem base URI. pointer
 * (JSON pointer of the bad field) and hint may be NULL. */
void imgd_http_problem(imgd_http_resp *resp, int32_t status, const char *type, const char *title,
                       const char *detail, const char *pointer, const char *hint);

typedef void (*imgd_http_handler_fn)(void *app, const imgd_http_req *req, imgd_http_resp *resp);
/* Called after each response: for logs and metrics. route is the matched row's pattern. */
typedef void (*imgd_http_done_fn)(void *app, const imgd_http_req *req, const char *route,
                                  int32_t status, double seconds);

typedef struct imgd_http_params {
    const char          *host;      /* bind address, "127.0.0.1" by default, "0.0.0.0" for all */
    uint16_t             port;      /* 0 = any free port (imgd_http_port says which) */
    size_t               body_max;  /* bytes; larger bodies get 413 */
    uint32_t             conn_max;  /* simultaneous connections */
    uint32_t             timeout_s; /* idle connection timeout */
    imgd_http_handler_fn handler;
    imgd_http_done_fn    done;
    void                *app;
} imgd_http_params;

typedef struct imgd_http imgd_http;

imgd_status imgd_http_start(const imgd_http_params *p, imgd_http **out);
uint16_t    imgd_http_port(const imgd_http *h);
/* Stops accepting new connections (running requests continue). */
void imgd_http_quiesce(imgd_http *h);
/* Stops the server (waits for connection threads) and frees it. */
void imgd_http_free(imgd_http *h);

#endif
