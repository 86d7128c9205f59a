/* Disk cache of converted weights: DIR/<sha256>.safetensors, LRU by mtime under a cap. */
#include "service/disk_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "base/map.h"
#include "base/text.h"

#define TRIM_FILES_MAX 4096

bool imgd_dcache_wants(int32_t format) {
    return format == (int32_t)IMGD_FORMAT_CKPT;
}

static bool hex64(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return n == 64;
}

typedef struct cfile {
    char     name[80];
    uint64_t size;
    int64_t  mtime_ns;
} cfile;

static int cfile_cmp(const void *a, const void *b) {
    const cfile *x = a, *y = b;
    return x->mtime_ns < y->mtime_ns ? -1 : x->mtime_ns > y->mtime_ns ? 1 : 0;
}

static bool is_entry(const char *name) {
    size_t n = strlen(name);
    return n == 64 + 12 && strcmp(name + 64, ".safetensors") == 0;
}

uint64_t imgd_dcache_trim(const char *dir, uint64_t cap, const char *keep) {
    if (cap == 0) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    cfile         *v     = imgd_malloc(TRIM_FILES_MAX * sizeof *v);
    size_t         n     = 0;
    uint64_t       total = 0, removed = 0;
    struct dirent *e;
    while (v && n < TRIM_FILES_MAX && (e = readdir(d)) != NULL) {
        if (!is_entry(e->d_name)) continue;
        char        p[4096];
        struct stat st;
        if (!imgd_fmt(p, sizeof p, "%s/%s", dir, e->d_name) || stat(p, &st) != 0) continue;
        (void)imgd_fmt(v[n].name, sizeof v[n].name, "%s", e->d_name);
        v[n].size     = (uint64_t)st.st_size;
        v[n].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        total += v[n].size;
        n++;
    }
    (void)closedir(d);
    if (!v) return 0;
    qsort(v, n, sizeof *v, cfile_cmp);
    for (size_t i = 0; i < n && total > cap; i++) {
        char p[4096];
        if (!imgd_fmt(p, sizeof p, "%s/%s", dir, v[i].name)) continue;
        if (keep && strcmp(p, keep) == 0) continue;
        if (unlink(p) != 0) continue;
        char y[4096];
        if (imgd_fmt(y, sizeof y, "%s/%.64s.yaml", dir, v[i].name)) (void)unlink(y);
        total -= v[i].size;
        removed += v[i].size;
        IMGD_LOG(IMGD_LOG_INFO, "service.disk_cache", "evicted", "%s (%.1f MiB)", v[i].name,
                 (double)v[i].size / 1048576.0);
    }
    imgd_free(v);
    return removed;
}

/* Detection reads an LDM .yaml beside a single file (heads, parameterization); the cached
 * copy gets the source's yaml beside it as <sha256>.yaml, refreshed at every use. */
static imgd_status copy_sidecar(const char *src, const char *dir, const char *sha) {
    char        yaml[4096], dst[4096], tmp[4200];
    const char *dot = strrchr(src, '.'), *sl = strrchr(src, '/');
    if (!dot || (sl && dot < sl)) return IMGD_OK;
    if (!imgd_fmt(yaml, sizeof yaml, "%.*s.yaml", (int)(dot - src), src)) return IMGD_OK;
    if (!imgd_fmt(dst, sizeof dst, "%s/%s.yaml", dir, sha)) return IMGD_OK;
    if (!imgd_path_is_file(yaml)) {
        (void)unlink(dst);
        return IMGD_OK;
    }
    char       *text = NULL;
    size_t      len  = 0;
    imgd_status st   = imgd_file_read_all(yaml, (size_t)1 << 20, &text, &len);
    if (st != IMGD_OK) return st;
    (void)imgd_fmt(tmp, sizeof tmp, "%s.tmp", dst);
    FILE *f  = fopen(tmp, "wb");
    bool  ok = f && fwrite(text, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = false;
    imgd_free(text);
    if (!ok || rename(tmp, dst) != 0) {
        (void)unlink(tmp);
        return imgd_fail(IMGD_E_IO, "disk cache: cannot write %s: %s", dst, strerror(errno));
    }
    return IMGD_OK;
}

imgd_status imgd_dcache_get(const char *dir, uint64_t cap, const char *src, const char *sha256_hex,
                            char *out, size_t out_cap, bool *hit) {
    if (!dir || !src || !sha256_hex || !out || !hit) {
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_dcache_get: NULL argument");
    }
    if (!hex64(sha256_hex)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "disk cache: '%s' is not a sha256", sha256_hex);
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return imgd_fail(IMGD_E_IO, "disk cache %s: %s", dir, strerror(errno));
    }
    if (!imgd_fmt(out, out_cap, "%s/%s.safetensors", dir, sha256_hex)) {
        return imgd_fail(IMGD_E_TOO_LARGE, "disk cache: path of %s is too long", dir);
    }
    struct stat st;
    *hit = stat(out, &st) == 0 && S_ISREG(st.st_mode);
    if (*hit) {
        /* mark it recently used (LRU by mtime); failing to is harmless */
        (void)utimensat(AT_FDCWD, out, NULL, 0);
        return copy_sidecar(src, dir, sha256_hex);
    }
    imgd_convert_params cp = imgd_convert_params_default();
    imgd_convert_result r;
    imgd_status         st2 = imgd_convert(src, out, &cp, &r);
    if (st2 != IMGD_OK) return imgd_fail_prefix(st2, "disk cache: converting %s", src);
    IMGD_LOG(IMGD_LOG_INFO, "service.disk_cache", "converted", "%s -> %s (%.1f MiB)", src, out,
             (double)r.bytes / 1048576.0);
    (void)imgd_dcache_trim(dir, cap, out);
    return copy_sidecar(src, dir, sha256_hex);
}
