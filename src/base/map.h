/* Read-only file mapping. */
#ifndef IMGD_BASE_MAP_H
#define IMGD_BASE_MAP_H

#include "base/base.h"

typedef struct imgd_map {
    const uint8_t *data; /* NULL when size is 0 */
    uint64_t       size;
} imgd_map;

/* Maps path read-only. Fails with IMGD_E_IO (naming path and errno text) when the path
 * cannot be opened, is a directory, or cannot be mapped. */
imgd_status imgd_map_open(const char *path, imgd_map **out);
void        imgd_map_free(imgd_map *m);

/* Tells the kernel the mapping will be read sequentially / soon (best effort). */
void imgd_map_advise_sequential(const imgd_map *m);

/* True when path names an existing directory. */
bool imgd_path_is_dir(const char *path);
/* True when path names an existing regular file. */
bool imgd_path_is_file(const char *path);
/* True when dir/name names an existing regular file. Allocates nothing, so a missing file
 * is never an out-of-memory in disguise (a joined path over PATH_MAX does not exist). */
bool imgd_path_is_file_in(const char *dir, const char *name);

/* Reads a whole small file into a NUL-terminated heap buffer, refusing files over cap. */
imgd_status imgd_file_read_all(const char *path, size_t cap, char **out, size_t *len);

/* Joins a and b with '/' into a heap string. NULL on OOM. */
char *imgd_path_join(const char *a, const char *b);

#endif
