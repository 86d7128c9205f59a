/* Disk cache of converted weights (issue 8 "Disk cache"): formats that cannot be memory
 * mapped as they are (PyTorch zip checkpoints: .ckpt .pt .pth .bin, read through the
 * unpickler and, when deflated, inflated into heap copies) are converted once with
 * imgd_convert() into DIR/<sha256>.safetensors, so the next cold start maps that file.
 *
 * LRU: a hit sets the file's mtime to now; imgd_dcache_trim removes the oldest files until
 * the folder's *.safetensors total is within the cap (the file just used is never removed).
 * Keyed by the source's sha256, so a changed source is a new entry and the old one ages out.
 *
 * Thread-safety: safe from any thread. Two callers converting the same source at once both
 * convert (imgd_convert writes a temporary file and renames it, so the result is whole);
 * the worker avoids this by loading each model id once. */
#ifndef IMGD_SERVICE_DISK_CACHE_H
#define IMGD_SERVICE_DISK_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/base.h"

/* Whether a file of this imgd_format is worth converting (IMGD_FORMAT_CKPT only today). */
bool imgd_dcache_wants(int32_t format);

/* Path of the cached conversion of src (whose sha256 is sha256_hex) in dir, converting it
 * when absent (dir is created). out receives the path; *hit says whether it existed.
 * Afterwards the folder is trimmed to cap bytes (0 = no cap). Returns IMGD_OK or the
 * statuses of imgd_convert (IMGD_E_IO, IMGD_E_FORMAT, ...), IMGD_E_TOO_LARGE when out_cap
 * is too small. */
imgd_status imgd_dcache_get(const char *dir, uint64_t cap, const char *src, const char *sha256_hex,
                            char *out, size_t out_cap, bool *hit);

/* Removes least recently used *.safetensors of dir until the total is within cap, never
 * keep (a path, may be NULL). Returns the bytes removed. */
uint64_t imgd_dcache_trim(const char *dir, uint64_t cap, const char *keep);

#endif
