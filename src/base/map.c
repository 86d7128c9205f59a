#include "base/map.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"

struct imgd_map_impl {
    imgd_map pub;
    void    *addr;
    size_t   len;
};

imgd_status imgd_map_open(const char *path, imgd_map **out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return imgd_fail(IMGD_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return imgd_fail(IMGD_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return imgd_fail(IMGD_E_IO, "%s: not a regular file", path);
    }
    struct imgd_map_impl *m = imgd_calloc(1, sizeof *m);
    if (!m) {
        close(fd);
        return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", path);
    }
    if (st.st_size > 0) {
        if ((uint64_t)st.st_size > SIZE_MAX) {
            close(fd);
            imgd_free(m);
            return imgd_fail(IMGD_E_TOO_LARGE, "%s: file too large to map", path);
        }
        m->len  = (size_t)st.st_size;
        m->addr = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->addr == MAP_FAILED) {
            int e = errno;
            close(fd);
            imgd_free(m);
            return imgd_fail(IMGD_E_IO, "%s: cannot mmap %zu bytes: %s", path, (size_t)st.st_size,
                             strerror(e));
        }
        m->pub.data = m->addr;
        m->pub.size = (uint64_t)st.st_size;
    }
    close(fd);
    *out = &m->pub;
    return IMGD_OK;
}

void imgd_map_free(imgd_map *pub) {
    if (!pub) return;
    struct imgd_map_impl *m = (struct imgd_map_impl *)pub;
    if (m->addr) munmap(m->addr, m->len);
    imgd_free(m);
}

void imgd_map_advise_sequential(const imgd_map *pub) {
    const struct imgd_map_impl *m = (const struct imgd_map_impl *)pub;
    if (m->addr) (void)posix_madvise(m->addr, m->len, POSIX_MADV_SEQUENTIAL);
}

bool imgd_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool imgd_path_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Bytes (NUL included) of a joined with b by '/' (none added after a trailing '/'). */
static size_t joined_size(const char *a, const char *b) {
    size_t la = strlen(a);
    return la + (la > 0 && a[la - 1] != '/' ? 1 : 0) + strlen(b) + 1;
}

/* Writes a '/' b into dst, which holds joined_size(a, b) bytes. */
static void join_into(char *dst, const char *a, const char *b) {
    size_t n = strlen(a);
    memcpy(dst, a, n);
    if (n > 0 && dst[n - 1] != '/') dst[n++] = '/';
    memcpy(dst + n, b, strlen(b) + 1);
}

bool imgd_path_is_file_in(const char *dir, const char *name) {
    char p[PATH_MAX];
    if (joined_size(dir, name) > sizeof p) return false;
    join_into(p, dir, name);
    return imgd_path_is_file(p);
}

imgd_status imgd_file_read_all(const char *path, size_t cap, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return imgd_fail(IMGD_E_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t n = 0, alloc = 4096;
    char  *buf = imgd_malloc(alloc);
    if (!buf) {
        (void)fclose(f); /* opened for reading */
        return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n + 1 >= alloc) {
            if (alloc > cap) {
                imgd_free(buf);
                (void)fclose(f);
                return imgd_fail(IMGD_E_TOO_LARGE, "%s: larger than %zu bytes", path, cap);
            }
            char *nb = imgd_realloc(buf, alloc * 2);
            if (!nb) {
                imgd_free(buf);
                (void)fclose(f);
                return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            alloc *= 2;
        }
        size_t r = fread(buf + n, 1, alloc - 1 - n, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    (void)fclose(f); /* read errors were caught by ferror */
    if (err || n > cap) {
        imgd_free(buf);
        if (err) return imgd_fail(IMGD_E_IO, "%s: read error", path);
        return imgd_fail(IMGD_E_TOO_LARGE, "%s: larger than %zu bytes", path, cap);
    }
    buf[n] = '\0';
    *out   = buf;
    if (len) *len = n;
    return IMGD_OK;
}

char *imgd_path_join(const char *a, const char *b) {
    char *p = imgd_malloc(joined_size(a, b));
    if (p) join_into(p, a, b);
    return p;
}
