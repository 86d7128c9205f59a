/* imgd_inspect: what a weight file is, as JSON or text; and streamed file hashing. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/map.h"
#include "base/sha256.h"
#include "base/text.h"
#include "detect/detect.h"
#include "formats/dtype.h"
#include "formats/weights.h"

#define REPORT_MAX (256u << 20)

imgd_inspect_params imgd_inspect_params_default(void) {
    imgd_inspect_params p;
    memset(&p, 0, sizeof p);
    return p;
}

void imgd_string_free(char *s) {
    imgd_free(s);
}

/* ---- hashing ---------------------------------------------------------------------- */

imgd_status imgd_file_sha256(const char *path, imgd_progress_fn progress, void *user,
                             char hex_out[65]) {
    if (!path || !hex_out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_file_sha256: NULL argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return imgd_fail(IMGD_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    uint64_t    total = 0;
    if (fstat(fd, &st) == 0) total = (uint64_t)st.st_size;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    size_t   cap = 4u << 20;
    uint8_t *buf = imgd_malloc(cap);
    if (!buf) {
        close(fd);
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    imgd_sha256 s;
    imgd_sha256_init(&s);
    uint64_t    done = 0;
    imgd_status rc   = IMGD_OK;
    for (;;) {
        ssize_t r = read(fd, buf, cap);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = imgd_fail(IMGD_E_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        imgd_sha256_update(&s, buf, (size_t)r);
        done += (uint64_t)r;
        if (progress && !progress(done, total, user)) {
            rc = imgd_fail(IMGD_E_CANCELLED, "%s: hashing cancelled", path);
            break;
        }
    }
    imgd_free(buf);
    close(fd);
    if (rc != IMGD_OK) return rc;
    uint8_t dg[32];
    imgd_sha256_final(&s, dg);
    imgd_sha256_hex(dg, hex_out);
    return IMGD_OK;
}

/* ---- summary ---------------------------------------------------------------------- */

typedef struct summary {
    const char         *path;
    imgd_format         format; /* 0 when not recognised */
    imgd_status         status;
    const char         *error; /* NULL when status is OK */
    bool                safe;
    uint64_t            tensors, parameters, bytes, file_bytes;
    uint64_t            dtype_count[IMGD_DTYPE_COUNT];
    const imgd_weights *w;
    imgd_model_info    *mi;
    bool                hashed;
    char                sha256[65];
} summary;

/* Best-effort container guess for a file that failed to open. */
static imgd_format guess_format(const char *path) {
    if (imgd_path_is_dir(path)) return IMGD_FORMAT_DIFFUSERS;
    FILE *f = fopen(path, "rb");
    if (!f) return (imgd_format)0;
    uint8_t h[9] = {0};
    size_t  n    = fread(h, 1, sizeof h, f);
    (void)fclose(f); /* opened for reading */
    if (n >= 4 && memcmp(h, "GGUF", 4) == 0) return IMGD_FORMAT_GGUF;
    if (n >= 2 && h[0] == 'P' && h[1] == 'K') return IMGD_FORMAT_CKPT;
    if (n >= 2 && h[0] == 0x80) return IMGD_FORMAT_CKPT;
    if (n >= 9 && h[8] == '{') return IMGD_FORMAT_SAFETENSORS;
    return (imgd_format)0;
}

static void summarise(const imgd_weights *w, summary *s) {
    s->w          = w;
    s->format     = w->format;
    s->tensors    = w->n;
    s->file_bytes = w->file_bytes;
    for (size_t i = 0; i < w->n; i++) {
        uint64_t numel = 0;
        imgd_shape_numel(w->t[i].n_dims, w->t[i].shape, &numel);
        s->parameters += numel;
        s->bytes += w->t[i].nbytes;
        s->dtype_count[w->t[i].dtype]++;
    }
}

/* ---- rendering -------------------------------------------------------------------- */

static imgd_status render_json(const summary *s, imgd_buf *b) {
    imgd_status st = imgd_buf_puts(b, "{\"format\":");
    if (st == IMGD_OK)
        st = s->format ? imgd_buf_json_str(b, imgd_format_name(s->format))
                       : imgd_buf_puts(b, "null");
    if (st == IMGD_OK) st = imgd_buf_puts(b, ",\"path\":");
    if (st == IMGD_OK) st = imgd_buf_json_str(b, s->path);
    if (st == IMGD_OK)
        st = imgd_buf_printf(b,
                             ",\"tensors\":%llu,\"parameters\":%llu,\"bytes\":%llu,"
                             "\"file_bytes\":%llu,\"dtypes\":{",
                             (unsigned long long)s->tensors, (unsigned long long)s->parameters,
                             (unsigned long long)s->bytes, (unsigned long long)s->file_bytes);
    bool first = true;
    for (int d = 0; d < IMGD_DTYPE_COUNT && st == IMGD_OK; d++) {
        if (!s->dtype_count[d]) continue;
        st = imgd_buf_printf(b, "%s\"%s\":%llu", first ? "" : ",", imgd_dtype_name((imgd_dtype)d),
                             (unsigned long long)s->dtype_count[d]);
        first = false;
    }
    if (st == IMGD_OK) st = imgd_buf_puts(b, "},\"metadata\":{");
    for (size_t i = 0; s->w && i < s->w->n_meta && st == IMGD_OK; i++) {
        if (i) st = imgd_buf_puts(b, ",");
        if (st == IMGD_OK) st = imgd_buf_json_str(b, s->w->meta_k[i]);
        if (st == IMGD_OK) st = imgd_buf_puts(b, ":");
        if (st == IMGD_OK) st = imgd_buf_json_str(b, s->w->meta_v[i]);
    }
    if (st == IMGD_OK)
        st = imgd_buf_printf(b, "},\"safe\":%s,\"status\":\"%s\",\"error\":",
                             s->safe ? "true" : "false", imgd_status_name(s->status));
    if (st == IMGD_OK) st = s->error ? imgd_buf_json_str(b, s->error) : imgd_buf_puts(b, "null");
    if (st == IMGD_OK && s->mi) {
        st = imgd_buf_puts(b, ",\"model\":");
        if (st == IMGD_OK) st = imgd_detect_render_json(s->mi, b);
    }
    if (st == IMGD_OK && s->hashed)
        st = imgd_buf_printf(b, ",\"sha256\":\"%s\",\"autov2\":\"%.10s\"", s->sha256, s->sha256);
    else if (st == IMGD_OK && s->status == IMGD_OK)
        st = imgd_buf_puts(b, ",\"sha256\":null,\"autov2\":null");
    if (st == IMGD_OK) st = imgd_buf_puts(b, "}");
    return st;
}

static void human_count(uint64_t v, const char *unit, char *out, size_t cap) {
    static const char *const sfx[] = {"", " K", " M", " G", " T"};
    double                   x     = (double)v;
    int                      k     = 0;
    while (x >= 1000.0 && k < 4) {
        x /= 1000.0;
        k++;
    }
    if (k == 0)
        imgd_fmt(out, cap, "%llu%s", (unsigned long long)v, unit);
    else
        imgd_fmt(out, cap, "%.2f%s%s", x, sfx[k], unit);
}

static imgd_status render_model_text(const imgd_model_info *mi, bool explain, imgd_buf *b) {
    imgd_status st = imgd_buf_printf(b, "kind:        %s\nfamily:      %s\nlayout:      %s\n",
                                     imgd_model_kind_name(mi->kind), imgd_family_name(mi->family),
                                     mi->layout ? mi->layout : "unknown");
    if (st == IMGD_OK && mi->candidates)
        st = imgd_buf_printf(b, "closest:     %s\n", mi->candidates);
    if (st == IMGD_OK && explain) {
        st = imgd_buf_puts(b, "evidence:\n");
        for (int32_t i = 0; i < mi->n_evidence && st == IMGD_OK; i++)
            st = imgd_buf_printf(b, "  - %s\n", mi->evidence[i]);
    }
    return st;
}

static imgd_status render_text(const summary *s, bool explain, imgd_buf *b) {
    char        pc[32], bc[32];
    imgd_status st = imgd_buf_printf(b, "file:        %s\nformat:      %s\n", s->path,
                                     s->format ? imgd_format_name(s->format) : "unknown");
    if (st == IMGD_OK)
        st = imgd_buf_printf(b, "safe:        %s\n",
                             s->safe                      ? "yes (loading runs no code)"
                             : s->status == IMGD_E_UNSAFE ? "NO: the file would run code when "
                                                            "loaded; it was refused, nothing ran"
                                                          : "unknown: the file could not be read");
    if (s->status != IMGD_OK)
        return st == IMGD_OK ? imgd_buf_printf(b, "error:       %s\n", s->error) : st;
    human_count(s->parameters, "", pc, sizeof pc);
    human_count(s->bytes, "B", bc, sizeof bc);
    if (st == IMGD_OK)
        st = imgd_buf_printf(
            b, "tensors:     %llu\nparameters:  %s (%llu)\nbytes:       %s (%llu)\ndtypes:     ",
            (unsigned long long)s->tensors, pc, (unsigned long long)s->parameters, bc,
            (unsigned long long)s->bytes);
    for (int d = 0; d < IMGD_DTYPE_COUNT && st == IMGD_OK; d++)
        if (s->dtype_count[d])
            st = imgd_buf_printf(b, " %s×%llu", imgd_dtype_name((imgd_dtype)d),
                                 (unsigned long long)s->dtype_count[d]);
    if (st == IMGD_OK) st = imgd_buf_printf(b, "\nmetadata:    %zu entries\n", s->w->n_meta);
    for (size_t i = 0; i < s->w->n_meta && st == IMGD_OK; i++) {
        const char *v = s->w->meta_v[i];
        size_t      l = strcspn(v, "\n");
        st = imgd_buf_printf(b, "  %s: %.*s%s\n", s->w->meta_k[i], (int)IMGD_MIN(l, (size_t)100), v,
                             (l > 100 || v[l]) ? " …" : "");
    }
    if (st == IMGD_OK && s->mi) st = render_model_text(s->mi, explain, b);
    if (st == IMGD_OK && s->hashed)
        st = imgd_buf_printf(b, "sha256:      %s\nautov2:      %.10s\n", s->sha256, s->sha256);
    return st;
}

imgd_status imgd_inspect(const char *path, const imgd_inspect_params *p, char **out) {
    if (!path || !out)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_inspect: path and out are required");
    imgd_inspect_params params = p ? *p : imgd_inspect_params_default();
    summary             s;
    memset(&s, 0, sizeof s);
    s.path          = path;
    imgd_weights *w = NULL;
    char          err[1024];
    s.status = imgd_weights_open(path, &params.open, &w);
    if (s.status == IMGD_E_INVALID_ARG || s.status == IMGD_E_NOMEM) return s.status;
    if (s.status == IMGD_OK) {
        summarise(w, &s);
        s.safe         = true;
        imgd_status ds = imgd_model_detect(w, &s.mi);
        if (ds != IMGD_OK) {
            imgd_weights_free(w);
            return ds;
        }
    } else {
        imgd_fmt(err, sizeof err, "%s", imgd_last_error());
        s.error  = err;
        s.format = guess_format(path);
        /* A checkpoint that failed to parse was never shown to be free of code. */
        s.safe = s.status != IMGD_E_UNSAFE && s.format != IMGD_FORMAT_CKPT;
    }
    imgd_status st = IMGD_OK;
    if (s.status == IMGD_OK && params.hash && !imgd_path_is_dir(path)) {
        st       = imgd_file_sha256(path, params.progress, params.user, s.sha256);
        s.hashed = st == IMGD_OK;
    }
    imgd_buf b;
    imgd_buf_init(&b, REPORT_MAX);
    if (st == IMGD_OK) st = params.text ? render_text(&s, params.explain, &b) : render_json(&s, &b);
    imgd_model_info_free(s.mi);
    imgd_weights_free(w);
    if (st != IMGD_OK) {
        imgd_buf_free(&b);
        return st;
    }
    *out = imgd_buf_take(&b);
    if (s.status != IMGD_OK) imgd_fail(s.status, "%s", err);
    return s.status;
}
