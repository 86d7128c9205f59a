/* Disk cache of converted weights: conversion once, hits, LRU trimming under a cap. */
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "base/alloc.h"
#include "fixtures.h"
#include "service/disk_cache.h"
#include "test.h"

static const char k_sha_a[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char k_sha_b[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
static const char k_sha_c[] = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

static void entry(const char *dir, const char *sha, size_t bytes, time_t mtime) {
    char p[1024];
    imgd_fmt(p, sizeof p, "%s/%s.safetensors", dir, sha);
    char *buf = imgd_calloc(1, bytes);
    CHECK(buf && tu_write_file(p, buf, bytes) == 0);
    imgd_free(buf);
    struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};
    CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0);
}

static bool exists(const char *dir, const char *sha) {
    char p[1024];
    imgd_fmt(p, sizeof p, "%s/%s.safetensors", dir, sha);
    return access(p, F_OK) == 0;
}

static void test_disk_cache_trim_removes_least_recently_used_first(void) {
    char dir[512], keep[1024];
    tu_tmp_path(dir, sizeof dir, "dcache-trim");
    fx_rmtree(dir);
    fx_mkdir(dir);
    entry(dir, k_sha_a, 1000, 100); /* oldest */
    entry(dir, k_sha_b, 1000, 200);
    entry(dir, k_sha_c, 1000, 300);
    CHECK(fx_write_text(dir, "notes.txt", "not an entry") == 0);
    imgd_fmt(keep, sizeof keep, "%s/%s.safetensors", dir, k_sha_a);
    /* a is kept (just used), so b goes */
    CHECK_EQ_INT(imgd_dcache_trim(dir, 2000, keep), 1000);
    CHECK(exists(dir, k_sha_a) && !exists(dir, k_sha_b) && exists(dir, k_sha_c));
    CHECK_EQ_INT(imgd_dcache_trim(dir, 1000, NULL), 1000);
    CHECK(!exists(dir, k_sha_a) && exists(dir, k_sha_c));
    CHECK_EQ_INT(imgd_dcache_trim(dir, 0, NULL), 0); /* 0 = no cap */
    fx_rmtree(dir);
}

static void test_disk_cache_converts_once_then_hits(void) {
    const char *shared = tu_shared_dir();
    char        src[1024], dir[512], out[1024], out2[1024];
    if (!shared) {
        TEST_SKIP("test_disk_cache_converts_once_then_hits: no shared conformance data");
        return;
    }
    imgd_fmt(src, sizeof src, "%s/conformance/sd15-narrow/sd15-narrow.ckpt", shared);
    tu_tmp_path(dir, sizeof dir, "dcache-ckpt");
    fx_rmtree(dir);
    char sha[65];
    CHECK_STATUS(imgd_file_sha256(src, NULL, NULL, sha), IMGD_OK);
    bool hit = true;
    CHECK_STATUS(imgd_dcache_get(dir, 0, src, sha, out, sizeof out, &hit), IMGD_OK);
    CHECK(!hit);
    imgd_weights *a = NULL, *b = NULL;
    CHECK_STATUS(imgd_weights_open(src, NULL, &a), IMGD_OK);
    CHECK_STATUS(imgd_weights_open(out, NULL, &b), IMGD_OK);
    if (a && b) {
        CHECK_EQ_INT(imgd_weights_format(b), IMGD_FORMAT_SAFETENSORS);
        CHECK_EQ_INT(imgd_weights_tensor_count(a), imgd_weights_tensor_count(b));
    }
    imgd_weights_free(a);
    imgd_weights_free(b);
    CHECK_STATUS(imgd_dcache_get(dir, 0, src, sha, out2, sizeof out2, &hit), IMGD_OK);
    CHECK(hit);
    CHECK_STR(out, out2);
    CHECK_STATUS(imgd_dcache_get(dir, 0, src, "../../etc", out2, sizeof out2, &hit),
                 IMGD_E_INVALID_ARG);
    fx_rmtree(dir);
}

int main(void) {
    RUN(test_disk_cache_trim_removes_least_recently_used_first);
    RUN(test_disk_cache_converts_once_then_hits);
    TEST_END();
}
