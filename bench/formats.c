/* formats bench: time to open + validate + touch every tensor of a large safetensors file
 * (written by the bench itself through imgd's writer) against a plain read() of the same
 * file, both from the page cache, measured alternately in one run. Also reports the
 * open+validate time alone (headers only). Both sides checksum the tensor bytes as 64-bit
 * words, so the comparison is the same work with and without imgd's validation. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/text.h"
#include "bench.h"
#include "imgd.h"

typedef struct opts {
    uint64_t    size_mb;
    const char *dir;
    int         tensors;
    int         repeat;
} opts;

static int parse(int argc, char **argv, opts *o) {
    o->size_mb = 2048;
    o->dir     = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    o->tensors = 1130;
    o->repeat  = 3;
    for (int i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--size-mb") == 0)
            o->size_mb = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--dir") == 0)
            o->dir = argv[i + 1];
        else if (strcmp(argv[i], "--tensors") == 0)
            o->tensors = (int)strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--repeat") == 0)
            o->repeat = (int)strtol(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "imgd-bench formats: unknown option %s\n", argv[i]);
            return -1;
        }
    }
    if (o->size_mb == 0 || o->tensors <= 0 || o->repeat <= 0) return -1;
    return 0;
}

/* Writes the file: o->tensors F16 tensors whose sizes vary like a real checkpoint. */
static int generate(const char *path, const opts *o) {
    int         n     = o->tensors;
    uint64_t    total = o->size_mb << 20;
    char       *names = imgd_calloc((size_t)n, 32);
    const char *mk[1] = {"imgd.bench"}, *mv[1] = {"formats"};
    /* sizes: geometric-ish mix; every tensor [rows, 256] f16 */
    uint64_t row_bytes = (uint64_t)256 * 2, rows_total = total / row_bytes, used = 0;
    int     *rows = imgd_calloc((size_t)n, sizeof *rows);
    if (!names || !rows) return -1;
    for (int i = 0; i < n; i++) {
        uint64_t r =
            (i % 10 == 0) ? rows_total / (uint64_t)(n / 10 + 1) / 2 : rows_total / (uint64_t)n / 2;
        if (r == 0) r = 1;
        if (used + r > rows_total) r = rows_total - used > 0 ? rows_total - used : 1;
        rows[i] = (int)r;
        used += r;
    }
    rows[n - 1] += (int)(rows_total > used ? rows_total - used : 0);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    /* Build the header by hand the same way the writer does (benchmark writes quickly). */
    size_t cap = (size_t)n * 96 + 256, len = 0;
    char  *h = imgd_malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"%s\":\"%s\"}", mk[0], mv[0]);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        imgd_fmt(names + (size_t)32 * i, 32, "blocks.%d.weight", i);
        uint64_t nb = (uint64_t)rows[i] * row_bytes;
        len += (size_t)snprintf(
            h + len, cap - len,
            ",\"%s\":{\"dtype\":\"F16\",\"shape\":[%d,256],\"data_offsets\":[%llu,%llu]}",
            names + (size_t)32 * i, rows[i], (unsigned long long)off,
            (unsigned long long)off + (unsigned long long)nb);
        off += nb;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    uint8_t l8[8];
    for (int i = 0; i < 8; i++) l8[i] = (uint8_t)((uint64_t)len >> (8 * i));
    int      ok    = fwrite(l8, 1, 8, f) == 8 && fwrite(h, 1, len, f) == len;
    size_t   chunk = 8u << 20;
    uint8_t *buf   = imgd_malloc(chunk);
    for (size_t i = 0; buf && i < chunk; i++) buf[i] = (uint8_t)(i * 131 + 7);
    for (uint64_t done = 0; ok && buf && done < off;) {
        size_t k = (size_t)(off - done < chunk ? off - done : chunk);
        ok       = fwrite(buf, 1, k, f) == k;
        done += k;
    }
    ok = fclose(f) == 0 && ok;
    imgd_free(buf);
    imgd_free(h);
    imgd_free(rows);
    imgd_free(names);
    return ok ? 0 : -1;
}

/* Sums the file as 64-bit words: the work a loader does at minimum on every byte. */
static uint64_t sum_words(const uint8_t *p, uint64_t n) {
    uint64_t s = 0, w;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        s += w;
    }
    for (; i < n; i++) s += p[i];
    return s;
}

static double time_read(const char *path, uint64_t *sum) {
    double   t0  = bench_now();
    int      fd  = open(path, O_RDONLY);
    size_t   cap = 8u << 20;
    uint8_t *buf = imgd_malloc(cap);
    uint64_t s = 0, skip = 8, pos = 0;
    ssize_t  r;
    while (fd >= 0 && buf && (r = read(fd, buf, cap)) > 0) {
        if (pos == 0 && r >= 8) { /* the data area starts after the 8-byte length + header */
            uint64_t hl = 0;
            for (int i = 0; i < 8; i++) hl |= (uint64_t)buf[i] << (8 * i);
            skip += hl;
        }
        uint64_t from = skip > pos ? skip - pos : 0;
        if (from < (uint64_t)r) s += sum_words(buf + from, (uint64_t)r - from);
        pos += (uint64_t)r;
    }
    if (fd >= 0) close(fd);
    imgd_free(buf);
    *sum = s;
    return bench_now() - t0;
}

static double time_open_touch(const char *path, uint64_t *sum, double *open_s) {
    double        t0 = bench_now();
    imgd_weights *w  = NULL;
    if (imgd_weights_open(path, NULL, &w) != IMGD_OK) {
        fprintf(stderr, "imgd-bench: %s\n", imgd_last_error());
        exit(1);
    }
    *open_s    = bench_now() - t0;
    uint64_t s = 0;
    for (size_t i = 0; i < imgd_weights_tensor_count(w); i++) {
        imgd_tensor_info t;
        imgd_weights_tensor(w, i, &t);
        s += sum_words(t.data, t.nbytes);
    }
    imgd_weights_free(w);
    *sum = s;
    return bench_now() - t0;
}

int bench_formats(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr,
                "usage: imgd-bench formats [--size-mb N] [--dir D] [--tensors N] [--repeat R]\n");
        return 2;
    }
    char path[4096];
    imgd_fmt(path, sizeof path, "%s/imgd-bench-formats-%ld.safetensors", o.dir, (long)getpid());
    double t0 = bench_now();
    if (generate(path, &o) != 0) {
        fprintf(stderr, "imgd-bench: cannot write %s: %s\n", path, strerror(errno));
        (void)remove(path); /* best effort: the failure is already reported */
        return 1;
    }
    bench_emit("formats", "generate_s", bench_now() - t0, "s", NULL, 0);
    uint64_t s1 = 0, s2 = 0;
    time_read(path, &s1); /* warm the page cache for both contenders */
    double best_read = 1e30, best_open = 1e30, best_header = 1e30;
    for (int r = 0; r < o.repeat; r++) {
        double hdr, a = time_read(path, &s1), b = time_open_touch(path, &s2, &hdr);
        if (a < best_read) best_read = a;
        if (b < best_open) best_open = b;
        if (hdr < best_header) best_header = hdr;
    }
    (void)remove(path); /* best effort: a temporary file */
    if (s1 != s2) {
        fprintf(stderr,
                "imgd-bench: checksums differ (%llu vs %llu): tensors do not cover the data\n",
                (unsigned long long)s1, (unsigned long long)s2);
    }
    double gb = (double)(o.size_mb << 20) / 1e9;
    bench_emit("formats", "file_gb", gb, "GB", NULL, 0);
    bench_emit("formats", "read_s", best_read, "s", NULL, 0);
    bench_emit("formats", "open_validate_s", best_header, "s", NULL, 0);
    bench_emit("formats", "open_validate_touch_s", best_open, "s", "plain_read",
               best_open / best_read);
    bench_emit("formats", "open_touch_gb_per_s", gb / best_open, "GB/s", NULL, 0);
    return s1 == s2 ? 0 : 1;
}
