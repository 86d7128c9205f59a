/* Zip reader over an in-memory buffer (a mapped file), hardened for hostile input.
 *
 * imgd_zip_open parses the End Of Central Directory (ZIP64 included) and every central
 * directory entry, checks each entry's local header, and validates all offsets and
 * lengths against the buffer before anything is read. imgd_zip_extract then returns an
 * entry's bytes: stored entries as a zero-copy pointer into the buffer, deflated entries
 * inflated into a new buffer of exactly the declared size. Both are CRC-32 checked.
 *
 * Refused (IMGD_E_FORMAT unless noted): a missing or damaged EOCD, a central directory
 * outside the file or whose entry count or size disagrees with the EOCD, entry names that
 * are empty, not UTF-8, absolute, contain a backslash or a ".." component, duplicate
 * names, local headers that disagree with the central directory, data spans outside the
 * file or overlapping each other or the central directory, stored entries whose sizes
 * differ, CRC mismatches, deflate streams that inflate to more or fewer bytes than
 * declared; IMGD_E_UNSUPPORTED for encrypted entries, multi-disk archives and methods
 * other than stored (0) and deflate (8); IMGD_E_TOO_LARGE for a declared inflated size
 * over the caller's cap. Every message reads
 *   "<file>: zip entry '<name>': <problem>; <fix hint>"
 * (or "<file>: zip: <problem>; <fix hint>" for archive-level problems). */
#ifndef IMGD_FORMATS_ZIP_H
#define IMGD_FORMATS_ZIP_H

#include <stdbool.h>

#include "base/base.h"

typedef struct imgd_zip_entry {
    const char *name;      /* UTF-8, NUL-terminated; valid until imgd_zip_free */
    size_t      name_len;  /* bytes, without the NUL */
    uint64_t    size;      /* uncompressed bytes (from the central directory) */
    uint64_t    comp_size; /* bytes stored in the file */
    uint64_t    local_off; /* offset of the local header in the buffer */
    uint64_t    data_off;  /* offset of the entry's data in the buffer */
    uint32_t    crc;       /* CRC-32 of the uncompressed bytes */
    uint16_t    method;    /* 0 stored, 8 deflate */
} imgd_zip_entry;

typedef struct imgd_zip imgd_zip;

/* Parses the archive in data[0..size). file is used in messages; both are borrowed and
 * must outlive the handle (entries point into data). *out is written only on success;
 * free it with imgd_zip_free. Returns IMGD_OK, IMGD_E_FORMAT, IMGD_E_UNSUPPORTED or
 * IMGD_E_NOMEM (see the file comment). Nothing is kept on failure. Thread-safety: the
 * handle is read-only after open and may be shared. */
imgd_status imgd_zip_open(const char *file, const uint8_t *data, uint64_t size, imgd_zip **out);

/* Frees the handle (not the buffer). NULL is a no-op. */
void imgd_zip_free(imgd_zip *z);

/* Number of entries. Cannot fail. */
size_t imgd_zip_count(const imgd_zip *z);

/* Entry i (0 <= i < count, a programmer invariant). Borrowed until imgd_zip_free. */
const imgd_zip_entry *imgd_zip_entry_at(const imgd_zip *z, size_t i);

/* Looks an entry up by exact name; false when absent (absence is not an error). */
bool imgd_zip_find(const imgd_zip *z, const char *name, size_t *index);

/* Returns entry i's uncompressed bytes and checks their CRC-32.
 * Stored: *data points into the buffer given to imgd_zip_open and *owned is NULL.
 * Deflated: *data is a new imgd_malloc'd buffer of exactly entry->size bytes (at least
 * one byte is allocated for empty entries) and *owned is that same buffer: the caller
 * frees it with imgd_free or hands it to an owner (imgd_weights_own_buf).
 * inflate_size_max caps entry->size for deflated entries (IMGD_E_TOO_LARGE).
 * Outputs are written only on success. Returns IMGD_OK, IMGD_E_FORMAT (CRC mismatch,
 * corrupt or lying deflate stream), IMGD_E_TOO_LARGE, IMGD_E_NOMEM. */
imgd_status imgd_zip_extract(const imgd_zip *z, size_t i, uint64_t inflate_size_max,
                             const uint8_t **data, uint64_t *size, void **owned);

#endif
