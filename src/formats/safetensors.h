/* safetensors: streaming writer (the reader is imgd_safetensors_read in weights.h). */
#ifndef IMGD_FORMATS_SAFETENSORS_H
#define IMGD_FORMATS_SAFETENSORS_H

#include "base/base.h"

typedef struct imgd_st_entry {
    const char *name;
    int64_t     shape[IMGD_MAX_DIMS];
    int32_t     n_dims;
    imgd_dtype  dtype; /* must not be a quantized type */
} imgd_st_entry;

typedef struct imgd_st_writer imgd_st_writer;

/* Creates `path` and writes the header: tensors laid out in the given order, offsets
 * computed, header padded with spaces to a multiple of 8 bytes. Metadata pairs are
 * written as __metadata__ (omitted when n_meta is 0). Strings are copied. */
imgd_status imgd_st_writer_open(const char *path, const imgd_st_entry *entries, size_t n,
                                const char *const *meta_k, const char *const *meta_v, size_t n_meta,
                                imgd_st_writer **out);

/* Appends the next bytes of tensor data (tensors back to back, in entry order). Writing
 * more than the header declares is IMGD_E_INVALID_ARG. */
imgd_status imgd_st_writer_write(imgd_st_writer *wr, const void *data, size_t n);

/* Bytes the finished file will have. */
uint64_t imgd_st_writer_total(const imgd_st_writer *wr);

/* Flushes, fsyncs and closes; IMGD_E_INVALID_ARG when fewer bytes were written than the
 * header declares. The writer is freed either way. */
imgd_status imgd_st_writer_close(imgd_st_writer *wr);

/* Closes and deletes the partial file. NULL is a no-op. */
void imgd_st_writer_abort(imgd_st_writer *wr);

#endif
