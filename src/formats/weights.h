/* The container every reader fills: tensors (zero-copy views or owned copies), metadata,
 * and the mappings/buffers that back them. */
#ifndef IMGD_FORMATS_WEIGHTS_H
#define IMGD_FORMATS_WEIGHTS_H

#include "base/arena.h"
#include "base/base.h"
#include "base/map.h"
#include "base/text.h"

typedef struct imgd_wtensor {
    const char    *name; /* in w->arena */
    const uint8_t *data;
    uint64_t       nbytes;
    int64_t        shape[IMGD_MAX_DIMS];
    int32_t        n_dims;
    imgd_dtype     dtype;
} imgd_wtensor;

struct imgd_weights {
    imgd_format   format;
    char         *path;
    imgd_wtensor *t;
    size_t        n, alloc;
    imgd_strmap   index;
    const char  **meta_k, **meta_v; /* in arena */
    size_t        n_meta, alloc_meta;
    imgd_arena    arena;
    imgd_map    **maps;
    size_t        n_maps, alloc_maps;
    void        **bufs;
    size_t        n_bufs, alloc_bufs;
    uint64_t      file_bytes; /* bytes on disk of everything read */
};

/* Resolved open parameters (defaults applied). */
typedef struct imgd_open_limits {
    uint64_t    header_size_max;
    uint64_t    pickle_ops_max;
    uint64_t    inflate_size_max;
    const char *variant;
} imgd_open_limits;

void imgd_open_limits_from(const imgd_open_params *p, imgd_open_limits *out);

imgd_status imgd_weights_new(imgd_format fmt, const char *path, imgd_weights **out);

/* Adds a tensor. Copies name (name_len bytes, need not be NUL-terminated). Checks that
 * the name is valid UTF-8 and unique and that nbytes matches dtype × shape; errors are
 * IMGD_E_FORMAT naming the tensor (the caller prefixes the file). data is borrowed: the
 * caller makes sure it lives as long as w (own_map / own_buf). */
imgd_status imgd_weights_add(imgd_weights *w, const char *name, size_t name_len, imgd_dtype dt,
                             int32_t n_dims, const int64_t *shape, const void *data,
                             uint64_t nbytes);

/* Adds (or replaces) a metadata entry; both strings are copied. */
imgd_status imgd_weights_meta_set(imgd_weights *w, const char *key, const char *value);

/* Takes ownership of a mapping / an imgd_malloc'd buffer (freed with w). On failure the
 * object is freed too, so the caller never leaks. */
imgd_status imgd_weights_own_map(imgd_weights *w, imgd_map *m);
imgd_status imgd_weights_own_buf(imgd_weights *w, void *buf);

/* Moves every tensor, metadata entry, mapping and buffer of src into dst, prefixing
 * tensor names and metadata keys with prefix (may be ""). src is freed. */
imgd_status imgd_weights_absorb(imgd_weights *dst, imgd_weights *src, const char *prefix);

/* Readers. Each fills a new handle from a mapped file or an in-memory buffer (the
 * buffer must outlive the handle; fuzzers and tests use it). `name` is used in errors. */
imgd_status imgd_safetensors_read(const char *name, const uint8_t *data, uint64_t size,
                                  const imgd_open_limits *lim, imgd_weights *w);
imgd_status imgd_ckpt_read(const char *name, const uint8_t *data, uint64_t size,
                           const imgd_open_limits *lim, imgd_weights *w);
imgd_status imgd_gguf_read(const char *name, const uint8_t *data, uint64_t size,
                           const imgd_open_limits *lim, imgd_weights *w);
imgd_status imgd_diffusers_read(const char *dir, const imgd_open_limits *lim, imgd_weights *w);

/* Opens a single file of any format (content-sniffed) into w. */
imgd_status imgd_weights_read_file(const char *path, const imgd_open_limits *lim,
                                   imgd_format *fmt_out, imgd_weights **out);

#endif
