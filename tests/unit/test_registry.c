/* Model registry: scan, SQLite metadata cache, invalidation, lookups, rescan speed. */
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include "fixtures.h"
#include "service/registry.h"
#include "test.h"
#include "util.h"

static const char *const k_names[] = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"};

static void tree(char *root, size_t cap, const char *name) {
    tu_tmp_path(root, cap, name);
    fx_rmtree(root);
    fx_mkdir(root);
}

static void put(const char *root, const char *rel, int rows) {
    char p[1024];
    imgd_fmt(p, sizeof p, "%s/%s", root, rel);
    CHECK(fx_safetensors(p, k_names, 2, rows, 1.0f, NULL, NULL) == 0);
}

static imgd_registry *open_reg(const char *root) {
    char db[1024];
    imgd_fmt(db, sizeof db, "%s.sqlite3", root);
    const char    *dirs[1] = {root};
    imgd_registry *r       = NULL;
    CHECK_STATUS(imgd_registry_open(db, dirs, 1, &r), IMGD_OK);
    return r;
}

static void rm_db(const char *root) {
    char        db[1024];
    const char *sfx[] = {".sqlite3", ".sqlite3-wal", ".sqlite3-shm"};
    for (int i = 0; i < 3; i++) {
        imgd_fmt(db, sizeof db, "%s%s", root, sfx[i]);
        (void)unlink(db);
    }
}

static void test_registry_scan_finds_files_and_diffusers_folders(void) {
    char root[512], p[1024];
    tree(root, sizeof root, "reg-scan");
    rm_db(root);
    put(root, "a.safetensors", 2);
    imgd_fmt(p, sizeof p, "%s/sub", root);
    fx_mkdir(p);
    put(root, "sub/b.safetensors", 2);
    put(root, ".hidden.safetensors", 2);
    put(root, "c.safetensors.part", 2);
    CHECK(fx_write_text(root, "notes.txt", "hello") == 0);
    imgd_fmt(p, sizeof p, "%s/pipe", root);
    fx_mkdir(p);
    CHECK(fx_write_text(p, "model_index.json", "{\"_class_name\":\"StableDiffusionPipeline\"}") ==
          0);
    imgd_fmt(p, sizeof p, "%s/pipe/unet", root);
    fx_mkdir(p);
    put(root, "pipe/unet/diffusion_pytorch_model.safetensors", 2);

    imgd_registry      *r = open_reg(root);
    imgd_reg_scan_stats s;
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.seen, 3);
    CHECK_EQ_INT(s.detected, 3);
    CHECK_EQ_INT(imgd_registry_count(r), 3);
    imgd_reg_entry e;
    CHECK_STATUS(imgd_registry_at(r, 0, &e), IMGD_OK);
    CHECK_STR(e.id, "a.safetensors");
    CHECK_STR(e.kind, "lora");
    CHECK_EQ_INT(e.tensor_bytes, 2 * 2 * 4 * 4);
    CHECK_STATUS(imgd_registry_at(r, 1, &e), IMGD_OK);
    CHECK_STR(e.id, "pipe");
    CHECK(e.is_dir);
    CHECK_STATUS(imgd_registry_at(r, 2, &e), IMGD_OK);
    CHECK_STR(e.id, "sub/b.safetensors");
    CHECK_STATUS(imgd_registry_at(r, 3, &e), IMGD_E_INVALID_ARG);
    imgd_registry_free(r);
    fx_rmtree(root);
    rm_db(root);
}

static void test_registry_rescan_and_reopen_reuse_the_cache(void) {
    char root[512];
    tree(root, sizeof root, "reg-reuse");
    rm_db(root);
    put(root, "a.safetensors", 2);
    put(root, "b.safetensors", 3);
    imgd_registry      *r = open_reg(root);
    imgd_reg_scan_stats s;
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.detected, 2);
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.detected, 0);
    CHECK_EQ_INT(s.reused, 2);
    char hex[65];
    CHECK_STATUS(imgd_registry_hash(r, "a.safetensors", NULL, NULL, hex), IMGD_OK);
    imgd_registry_free(r);
    /* a new process: the rows (and the hash) come from SQLite */
    r = open_reg(root);
    CHECK_EQ_INT(imgd_registry_count(r), 2);
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.detected, 0);
    CHECK_EQ_INT(s.reused, 2);
    imgd_reg_entry e;
    CHECK_STATUS(imgd_registry_find(r, hex, &e), IMGD_OK);
    CHECK_STR(e.id, "a.safetensors");
    imgd_registry_free(r);
    fx_rmtree(root);
    rm_db(root);
}

static void test_registry_changed_file_is_detected_again(void) {
    char root[512], p[1024];
    tree(root, sizeof root, "reg-change");
    rm_db(root);
    put(root, "a.safetensors", 2);
    imgd_registry      *r = open_reg(root);
    imgd_reg_scan_stats s;
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    char hex[65];
    CHECK_STATUS(imgd_registry_hash(r, "a.safetensors", NULL, NULL, hex), IMGD_OK);
    /* size change */
    put(root, "a.safetensors", 5);
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.detected, 1);
    imgd_reg_entry e;
    CHECK_STATUS(imgd_registry_find(r, "a", &e), IMGD_OK);
    CHECK_STR(e.sha256, "");
    CHECK_EQ_INT(e.tensor_bytes, 2 * 5 * 4 * 4);
    CHECK_STATUS(imgd_registry_find(r, hex, &e), IMGD_E_NOT_FOUND);
    /* mtime only */
    imgd_fmt(p, sizeof p, "%s/a.safetensors", root);
    struct timespec ts[2] = {{1000000, 0}, {1000000, 0}};
    CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0);
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.detected, 1);
    /* refresh sees a change without a scan */
    put(root, "a.safetensors", 7);
    CHECK_STATUS(imgd_registry_refresh(r, "a.safetensors", &e), IMGD_OK);
    CHECK_EQ_INT(e.tensor_bytes, 2 * 7 * 4 * 4);
    /* removal */
    CHECK(unlink(p) == 0);
    CHECK_STATUS(imgd_registry_refresh(r, "a.safetensors", &e), IMGD_E_NOT_FOUND);
    CHECK_EQ_INT(imgd_registry_count(r), 0);
    imgd_registry_free(r);
    fx_rmtree(root);
    rm_db(root);
}

static void test_registry_find_by_id_name_sha256_and_autov2(void) {
    char root[512], p[1024];
    tree(root, sizeof root, "reg-find");
    rm_db(root);
    imgd_fmt(p, sizeof p, "%s/x", root);
    fx_mkdir(p);
    imgd_fmt(p, sizeof p, "%s/y", root);
    fx_mkdir(p);
    put(root, "x/m.safetensors", 2);
    put(root, "y/m.safetensors", 3);
    put(root, "y/solo.safetensors", 4);
    CHECK(fx_write_text(root, "broken.ckpt", "not a checkpoint") == 0);
    imgd_registry *r = open_reg(root);
    CHECK_STATUS(imgd_registry_scan(r, NULL), IMGD_OK);
    imgd_reg_entry e;
    CHECK_STATUS(imgd_registry_find(r, "y/solo.safetensors", &e), IMGD_OK);
    CHECK_STATUS(imgd_registry_find(r, "solo.safetensors", &e), IMGD_OK);
    CHECK_STR(e.id, "y/solo.safetensors");
    CHECK_STATUS(imgd_registry_find(r, "solo", &e), IMGD_OK);
    CHECK_STATUS(imgd_registry_find(r, "m.safetensors", &e), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "ambiguous") != NULL);
    CHECK_STATUS(imgd_registry_find(r, "nope", &e), IMGD_E_NOT_FOUND);
    char hex[65], want[65];
    imgd_fmt(p, sizeof p, "%s/y/solo.safetensors", root);
    CHECK_STATUS(imgd_file_sha256(p, NULL, NULL, want), IMGD_OK);
    CHECK_STATUS(imgd_registry_hash(r, "solo", NULL, NULL, hex), IMGD_OK);
    CHECK_STR(hex, want);
    CHECK_STATUS(imgd_registry_find(r, want, &e), IMGD_OK);
    CHECK_STR(e.id, "y/solo.safetensors");
    char av2[11];
    imgd_fmt(av2, sizeof av2, "%.10s", want);
    CHECK_STATUS(imgd_registry_find(r, av2, &e), IMGD_OK);
    CHECK_STR(e.autov2, av2);
    CHECK_STATUS(imgd_registry_find(r, "broken.ckpt", &e), IMGD_OK);
    CHECK(e.error[0] != '\0');
    CHECK_STR(e.kind, "");
    imgd_registry_free(r);
    fx_rmtree(root);
    rm_db(root);
}

static void test_registry_rescan_of_1000_files_is_fast(void) {
    char root[512], p[1024];
    tree(root, sizeof root, "reg-1000");
    rm_db(root);
    for (int d = 0; d < 10; d++) {
        imgd_fmt(p, sizeof p, "%s/d%d", root, d);
        fx_mkdir(p);
        for (int i = 0; i < 100; i++) {
            char rel[64];
            imgd_fmt(rel, sizeof rel, "d%d/m%03d.safetensors", d, i);
            put(root, rel, 1);
        }
    }
    imgd_registry      *r = open_reg(root);
    imgd_reg_scan_stats s;
    double              t0 = tu_now_s();
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    double first = tu_now_s() - t0;
    CHECK_EQ_INT(s.detected, 1000);
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.reused, 1000);
    CHECK_MSG(s.seconds < 0.5, "rescan of 1000 unchanged files took %.3f s", s.seconds);
    printf("registry: first scan of 1000 files %.3f s, rescan %.4f s\n", first, s.seconds);
    imgd_registry_free(r);
    fx_rmtree(root);
    rm_db(root);
}

typedef struct race_ctx {
    imgd_registry *r;
    int            errors;
} race_ctx;

static void *race_scan(void *arg) {
    race_ctx *c = arg;
    for (int i = 0; i < 50; i++) {
        if (imgd_registry_scan(c->r, NULL) != IMGD_OK) c->errors++;
    }
    return NULL;
}

static void *race_find(void *arg) {
    race_ctx      *c = arg;
    imgd_reg_entry e;
    for (int i = 0; i < 500; i++) {
        if (imgd_registry_find(c->r, "a", &e) != IMGD_OK) c->errors++;
    }
    return NULL;
}

static void test_registry_lookups_while_scanning_are_safe(void) {
    char root[512];
    tree(root, sizeof root, "reg-race");
    rm_db(root);
    put(root, "a.safetensors", 2);
    put(root, "b.safetensors", 2);
    imgd_registry *r = open_reg(root);
    CHECK_STATUS(imgd_registry_scan(r, NULL), IMGD_OK);
    race_ctx  c1 = {r, 0}, c2 = {r, 0}, c3 = {r, 0};
    pthread_t t1, t2, t3;
    CHECK(pthread_create(&t1, NULL, race_scan, &c1) == 0);
    CHECK(pthread_create(&t2, NULL, race_find, &c2) == 0);
    CHECK(pthread_create(&t3, NULL, race_scan, &c3) == 0);
    (void)pthread_join(t1, NULL);
    (void)pthread_join(t2, NULL);
    (void)pthread_join(t3, NULL);
    CHECK_EQ_INT(c1.errors + c2.errors + c3.errors, 0);
    imgd_registry_free(r);
    fx_rmtree(root);
    rm_db(root);
}

static void test_registry_pinned_version_survives_replacement_and_rolls_back(void) {
    char root[512], p[1024], tmp[1100];
    tree(root, sizeof root, "reg-pin");
    rm_db(root);
    put(root, "m.safetensors", 2);
    imgd_registry *r = open_reg(root);
    CHECK_STATUS(imgd_registry_scan(r, NULL), IMGD_OK);
    char v1[65], v2[65];
    CHECK_STATUS(imgd_registry_pin(r, "m.safetensors", v1), IMGD_OK);
    imgd_reg_entry e;
    CHECK_STATUS(imgd_registry_find(r, "m", &e), IMGD_OK);
    CHECK_STR(e.pinned, v1);
    /* replace the file the way downloads do: write beside, rename over */
    imgd_fmt(p, sizeof p, "%s/m.safetensors", root);
    imgd_fmt(tmp, sizeof tmp, "%s.new", p);
    CHECK(fx_safetensors(tmp, k_names, 2, 5, 2.0f, NULL, NULL) == 0);
    CHECK(rename(tmp, p) == 0);
    CHECK_STATUS(imgd_registry_hash(r, "m.safetensors", NULL, NULL, v2), IMGD_OK);
    CHECK(strcmp(v1, v2) != 0);
    /* the old version stays addressable by its hash and as ID@AUTOV2 */
    CHECK_STATUS(imgd_registry_find(r, v1, &e), IMGD_OK);
    char vid[IMGD_REG_ID_MAX];
    imgd_fmt(vid, sizeof vid, "m.safetensors@%.10s", v1);
    CHECK_STR(e.id, vid);
    CHECK_EQ_INT(e.tensor_bytes, 2 * 2 * 4 * 4);
    char hv[65];
    CHECK_STATUS(imgd_file_sha256(e.path, NULL, NULL, hv), IMGD_OK);
    CHECK_STR(hv, v1);
    CHECK_STATUS(imgd_registry_refresh(r, vid, &e), IMGD_OK);
    CHECK_STATUS(imgd_registry_hash(r, vid, NULL, NULL, hv), IMGD_OK);
    CHECK_STR(hv, v1);
    /* rollback restores it at the id */
    CHECK_STATUS(imgd_registry_rollback(r, "m.safetensors"), IMGD_OK);
    CHECK_STATUS(imgd_file_sha256(p, NULL, NULL, hv), IMGD_OK);
    CHECK_STR(hv, v1);
    CHECK_STATUS(imgd_registry_find(r, "m.safetensors", &e), IMGD_OK);
    CHECK_EQ_INT(e.tensor_bytes, 2 * 2 * 4 * 4);
    /* unpin releases the kept file; a second unpin or rollback says why not */
    CHECK_STATUS(imgd_registry_unpin(r, "m.safetensors"), IMGD_OK);
    CHECK_STATUS(imgd_registry_unpin(r, "m.safetensors"), IMGD_E_NOT_FOUND);
    CHECK_STATUS(imgd_registry_rollback(r, "m.safetensors"), IMGD_E_NOT_FOUND);
    CHECK(strstr(imgd_last_error(), "not pinned") != NULL);
    imgd_registry_free(r);
    fx_rmtree(root);
    rm_db(root);
    char vdir[1024];
    imgd_fmt(vdir, sizeof vdir, "%s/versions", tu_tmpdir());
    fx_rmtree(vdir);
}

static void test_registry_only_scans_one_id_and_keeps_other_rows(void) {
    char root[512], p[1024];
    tree(root, sizeof root, "reg-only");
    rm_db(root);
    put(root, "a.safetensors", 2);
    imgd_fmt(p, sizeof p, "%s/sub", root);
    fx_mkdir(p);
    put(root, "sub/b.safetensors", 2);
    put(root, "sub/c.safetensors", 2);
    /* a full scan caches all three */
    imgd_registry      *r = open_reg(root);
    imgd_reg_scan_stats s;
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.seen, 3);
    imgd_registry_free(r);
    /* restricted: only the folder leading to the id is read, and only the id is listed */
    r = open_reg(root);
    CHECK_STATUS(imgd_registry_only(r, NULL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_registry_only(r, "sub/b.safetensors"), IMGD_OK);
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.seen, 1);
    CHECK_EQ_INT(s.reused, 1);
    CHECK_EQ_INT(s.removed, 0);
    CHECK_EQ_INT(imgd_registry_count(r), 1);
    imgd_reg_entry e;
    CHECK_STATUS(imgd_registry_find(r, "sub/b.safetensors", &e), IMGD_OK);
    CHECK_STR(e.kind, "lora");
    CHECK_STATUS(imgd_registry_find(r, "a.safetensors", &e), IMGD_E_NOT_FOUND);
    imgd_registry_free(r);
    /* the rows it did not look at stay cached: a later full scan detects nothing again */
    r = open_reg(root);
    CHECK_STATUS(imgd_registry_scan(r, &s), IMGD_OK);
    CHECK_EQ_INT(s.seen, 3);
    CHECK_EQ_INT(s.reused, 3);
    CHECK_EQ_INT(s.detected, 0);
    imgd_registry_free(r);
    fx_rmtree(root);
    rm_db(root);
}

int main(void) {
    RUN(test_registry_scan_finds_files_and_diffusers_folders);
    RUN(test_registry_rescan_and_reopen_reuse_the_cache);
    RUN(test_registry_changed_file_is_detected_again);
    RUN(test_registry_find_by_id_name_sha256_and_autov2);
    RUN(test_registry_rescan_of_1000_files_is_fast);
    RUN(test_registry_lookups_while_scanning_are_safe);
    RUN(test_registry_pinned_version_survives_replacement_and_rolls_back);
    RUN(test_registry_only_scans_one_id_and_keeps_other_rows);
    TEST_END();
}
