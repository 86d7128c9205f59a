/* Model registry: every model under a set of model directories, detected once and kept in a
 * SQLite metadata cache (issue 8 "Registry"). No HTTP here; the worker and the CLI use it.
 *
 * What is a model: a regular file with a weight extension (.safetensors .ckpt .pt .pth .bin
 * .gguf .sft) or a diffusers folder (a folder holding model_index.json; not descended into).
 * Folders are walked recursively (hidden entries and *.part downloads skipped, depth <= 8,
 * symbolic links followed only while they stay inside the model directory). Whatever
 * imgd_model_detect says it is (checkpoint, LoRA, embedding, ControlNet, VAE, upscaler, ...)
 * is recorded; a file that cannot be read is listed with its error.
 *
 * Ids are stable: the path relative to its model directory ("sd15/v1-5.safetensors").
 *
 * Cache: DB_PATH (e.g. STATE/registry.sqlite3) holds one row per model path with its size,
 * mtime (ns), detection result, tensor bytes and, once computed, sha256. A row is reused only
 * while size and mtime are unchanged (a folder's size is the sum of its files two levels
 * down and its mtime their newest), so a rescan of unchanged files costs one stat per file
 * and never opens one. A changed file is detected again and its sha256 forgotten.
 *
 * Thread-safety: every function is safe from any thread on a shared registry; scans are
 * serialised, lookups never wait for a scan's detection work (only for its final swap). */
#ifndef IMGD_SERVICE_REGISTRY_H
#define IMGD_SERVICE_REGISTRY_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/base.h"

#define IMGD_REG_ID_MAX 512

typedef struct imgd_registry imgd_registry;

/* One model as the registry knows it; a copy owned by the caller. */
typedef struct imgd_reg_entry {
    char     id[IMGD_REG_ID_MAX]; /* path relative to its model dir */
    char     path[PATH_MAX];      /* absolute path (resolved dir + id) */
    char     family[32];          /* imgd_family_name, "" when detection failed */
    char     kind[32];            /* imgd_model_kind_name, "" when detection failed */
    char     error[512];          /* why it cannot be read, "" when it can */
    char     sha256[65];          /* lower-case hex, "" until computed */
    char     autov2[11];          /* first 10 hex digits of sha256, "" until computed */
    char     pinned[65];          /* sha256 the id is pinned to, "" when not pinned */
    uint64_t size;                /* bytes (a folder: its files' sum) */
    uint64_t tensor_bytes;        /* sum of the stored tensors' bytes, 0 when unreadable */
    int64_t  mtime_ns;            /* newest mtime, ns since the epoch */
    int32_t  format;              /* imgd_format, 0 when unreadable */
    bool     is_dir;              /* a diffusers folder */
} imgd_reg_entry;

typedef struct imgd_reg_scan_stats {
    uint64_t seen;     /* models found */
    uint64_t reused;   /* unchanged: cached row used, file not opened */
    uint64_t detected; /* new or changed: opened and detected */
    uint64_t removed;  /* rows whose file is gone */
    double   seconds;  /* wall time of the scan */
} imgd_reg_scan_stats;

/* Opens (creating) the cache at db_path and remembers the model dirs (copied; each is
 * resolved with realpath). Loads the cached rows of those dirs; does not scan.
 * Returns IMGD_OK, IMGD_E_IO (a dir or the database cannot be opened; the message names
 * it), IMGD_E_INVALID_ARG, IMGD_E_NOMEM. *out written only on success. */
imgd_status imgd_registry_open(const char *db_path, const char *const *dirs, size_t n_dirs,
                               imgd_registry **out);
void        imgd_registry_free(imgd_registry *r);

/* Restricts every later scan to the one model `id` (a path relative to a dir; copied): the
 * walk reads only the folders leading to it, so a worker serving one model never scans the
 * rest of its folder (issue 11 "fast start"). Returns IMGD_OK, IMGD_E_INVALID_ARG,
 * IMGD_E_NOMEM. */
imgd_status imgd_registry_only(imgd_registry *r, const char *id);

/* Walks the dirs, detects new or changed models, drops vanished ones and writes the changes
 * in one transaction. stats may be NULL. Errors of single files are recorded in their entry;
 * the call fails only on IMGD_E_NOMEM or a database error (the in-memory list is then left as
 * it was). */
imgd_status imgd_registry_scan(imgd_registry *r, imgd_reg_scan_stats *stats);

/* Number of models known since the last scan. */
size_t imgd_registry_count(imgd_registry *r);

/* Copies entry i (0 <= i < count, in id order) into *out; IMGD_E_INVALID_ARG past the end. */
imgd_status imgd_registry_at(imgd_registry *r, size_t i, imgd_reg_entry *out);

/* Looks a model up by, in this order: id; sha256 (64 hex digits) or AutoV2 hash (10 hex
 * digits; only models whose hash was computed); file name ("x.safetensors") or file name
 * without its extension ("x"). IMGD_E_NOT_FOUND when nothing matches; IMGD_E_INVALID_ARG
 * when a file name matches several ids (the message lists two). *out written on IMGD_OK. */
imgd_status imgd_registry_find(imgd_registry *r, const char *key, imgd_reg_entry *out);

/* sha256 of the model `id` (a file; a folder gives IMGD_E_UNSUPPORTED): the cached value when
 * the file's size and mtime are unchanged, else it is computed (progress may be NULL), stored
 * in the cache and returned. Returns IMGD_E_NOT_FOUND, IMGD_E_IO, IMGD_E_CANCELLED. */
imgd_status imgd_registry_hash(imgd_registry *r, const char *id, imgd_progress_fn progress,
                               void *user, char hex_out[65]);

/* Re-stats one model and, when it changed, detects it again (and forgets its hash), so a
 * caller about to load it sees the current file. IMGD_E_NOT_FOUND when it is gone. */
imgd_status imgd_registry_refresh(imgd_registry *r, const char *id, imgd_reg_entry *out);

/* Content digests of model components (pipeline/share.c compares VAEs by them), kept in the
 * cache keyed by the file's real path and component and valid while its size and mtime are
 * unchanged. get: true and digest (64 hex + NUL) when stored; put: stores (a failure is
 * logged, the digest is then computed again next time). Safe from any thread. */
bool imgd_registry_digest_get(imgd_registry *r, const char *path, uint64_t size, int64_t mtime_ns,
                              const char *component, char digest[65]);
void imgd_registry_digest_put(imgd_registry *r, const char *path, uint64_t size, int64_t mtime_ns,
                              const char *component, const char *digest);

/* ---- versions ------------------------------------------------------------------------------
 * A model id can be pinned to its current content: the registry records the sha256 and keeps
 * a hard link (a copy when the link fails, e.g. another file system) to the file in
 * DB_DIR/versions/<sha256><ext>. Replacing the file (a new download renamed over it) then
 * leaves the pinned version addressable, by its sha256, AutoV2 or "ID@AUTOV2" (find gives an
 * entry with that id and the versions path), until unpinned; rollback puts it back. An
 * in-place overwrite of a hard-linked file changes the kept version too: replace files by
 * rename (imgd pull and imgd convert do). Folders cannot be pinned. */

/* Pins id to its current sha256 (computing it when needed); hex_out may be NULL. Re-pinning
 * moves the pin. Returns IMGD_E_NOT_FOUND, IMGD_E_UNSUPPORTED (a folder), IMGD_E_IO. */
imgd_status imgd_registry_pin(imgd_registry *r, const char *id, char hex_out[65]);
/* Drops the pin and, when no other pin uses it, the kept file. IMGD_E_NOT_FOUND when the id
 * is not pinned. */
imgd_status imgd_registry_unpin(imgd_registry *r, const char *id);
/* Puts the pinned version back at the id's path (written beside it, then renamed) and
 * refreshes the entry. IMGD_E_NOT_FOUND when not pinned; IMGD_E_IO. */
imgd_status imgd_registry_rollback(imgd_registry *r, const char *id);

#endif
