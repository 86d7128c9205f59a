/* Header-only weight files for detection tests: a real safetensors header whose data
 * area is a sparse hole (ftruncate), so multi-GB layouts cost no disk and no time. */
#ifndef IMGD_TEST_HEADER_ONLY_H
#define IMGD_TEST_HEADER_ONLY_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "formats/dtype.h"
#include "imgd.h"

typedef struct ho_tensor {
    const char *name;
    const char *dtype; /* safetensors spelling: "F32", "F16", "BF16", "I64", ... */
    int32_t     n_dims;
    int64_t     shape[8];
} ho_tensor;

typedef struct ho_file {
    imgd_buf    header; /* JSON being built */
    uint64_t    offset; /* data bytes so far */
    int         n;
    int         n_meta;
    imgd_status st;
} ho_file;

static inline void ho_begin(ho_file *f) {
    memset(f, 0, sizeof *f);
    imgd_buf_init(&f->header, 0);
    f->st = imgd_buf_puts(&f->header, "{");
}

/* Adds one metadata pair (call before any tensor). */
static inline void ho_meta(ho_file *f, const char *k, const char *v) {
    if (f->st != IMGD_OK) return;
    f->st = imgd_buf_puts(&f->header, f->n_meta ? "," : "\"__metadata__\":{");
    if (f->st == IMGD_OK) f->st = imgd_buf_json_str(&f->header, k);
    if (f->st == IMGD_OK) f->st = imgd_buf_puts(&f->header, ":");
    if (f->st == IMGD_OK) f->st = imgd_buf_json_str(&f->header, v);
    f->n_meta++;
}

static inline void ho_add(ho_file *f, const char *name, const char *dtype, int32_t n_dims,
                          const int64_t *shape) {
    imgd_dtype dt;
    uint64_t   nb = 0;
    if (f->st != IMGD_OK) return;
    if (f->n_meta > 0 && f->n == 0) f->st = imgd_buf_puts(&f->header, "}");
    if (f->st == IMGD_OK) f->st = imgd_dtype_parse(dtype, &dt);
    if (f->st == IMGD_OK) f->st = imgd_dtype_nbytes(dt, n_dims, shape, &nb);
    if (f->st == IMGD_OK && (f->n > 0 || f->n_meta > 0)) f->st = imgd_buf_puts(&f->header, ",");
    if (f->st == IMGD_OK) f->st = imgd_buf_json_str(&f->header, name);
    if (f->st == IMGD_OK)
        f->st = imgd_buf_printf(&f->header, ":{\"dtype\":\"%s\",\"shape\":[", dtype);
    for (int32_t d = 0; d < n_dims && f->st == IMGD_OK; d++)
        f->st = imgd_buf_printf(&f->header, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (f->st == IMGD_OK)
        f->st = imgd_buf_printf(&f->header, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)f->offset,
                                (unsigned long long)f->offset + (unsigned long long)nb);
    f->offset += nb;
    f->n++;
}

/* Writes the file (header + sparse zero data) and frees the builder. 0 on success. */
static inline int ho_finish(ho_file *f, const char *path) {
    int rc = -1;
    if (f->st == IMGD_OK && f->n_meta > 0 && f->n == 0) f->st = imgd_buf_puts(&f->header, "}");
    if (f->st == IMGD_OK) f->st = imgd_buf_puts(&f->header, "}");
    while (f->st == IMGD_OK && f->header.len % 8) f->st = imgd_buf_puts(&f->header, " ");
    FILE *fp = f->st == IMGD_OK ? fopen(path, "wb") : NULL;
    if (fp) {
        uint8_t l8[8];
        for (int i = 0; i < 8; i++) l8[i] = (uint8_t)((uint64_t)f->header.len >> (8 * i));
        int ok = fwrite(l8, 1, 8, fp) == 8 &&
                 fwrite(f->header.data, 1, f->header.len, fp) == f->header.len;
        ok &= fflush(fp) == 0;
        ok &= ftruncate(fileno(fp), (off_t)(8 + f->header.len + f->offset)) == 0;
        ok &= fclose(fp) == 0;
        rc = ok ? 0 : -1;
    }
    imgd_buf_free(&f->header);
    return rc;
}

#endif
