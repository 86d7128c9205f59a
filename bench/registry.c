/* imgd-bench registry: cold start of a .ckpt (first: hash + convert into the disk cache + load;
 * second: a cache hit, a memory-mapped safetensors) and the registry's rescan time. */
#include "service/registry.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/text.h"
#include "bench.h"
#include "detect/corpus_gen.h"
#include "formats/safetensors.h"
#include "imgd.h"
#include "service/disk_cache.h"

typedef struct ropts {
    const char *dir;
    int32_t     files;
    uint32_t    threads;
    bool        small, keep;
} ropts;

static int parse(int argc, char **argv, ropts *o) {
    memset(o, 0, sizeof *o);
    o->dir   = "/tmp";
    o->files = 1000;
    for (int i = 0; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--small") == 0) {
            o->small = true;
        } else if (strcmp(argv[i], "--keep") == 0) {
            o->keep = true;
        } else if (strcmp(argv[i], "--dir") == 0 && v) {
            o->dir = argv[++i];
        } else if ((strcmp(argv[i], "--files") == 0 || strcmp(argv[i], "--threads") == 0) && v) {
            char *end = NULL;
            long  x   = strtol(v, &end, 10);
            if (!end || *end || x < 0 || x > 1000000) return -1;
            if (argv[i][2] == 'f') {
                o->files = (int32_t)x;
            } else {
                o->threads = (uint32_t)x;
            }
            i++;
        } else {
            fprintf(stderr, "imgd-bench registry: unknown option '%s'\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

/* ---- rescan ----------------------------------------------------------------------------- */

static int write_tiny(const char *path) {
    imgd_st_entry e;
    memset(&e, 0, sizeof e);
    e.name               = "lora_unet_x.lora_down.weight";
    e.dtype              = IMGD_DTYPE_F32;
    e.n_dims             = 1;
    e.shape[0]           = 4;
    imgd_st_writer *w    = NULL;
    float           v[4] = {1, 2, 3, 4};
    if (imgd_st_writer_open(path, &e, 1, NULL, NULL, 0, &w) != IMGD_OK) return -1;
    if (imgd_st_writer_write(w, v, sizeof v) != IMGD_OK) return -1;
    return imgd_st_writer_close(w) == IMGD_OK ? 0 : -1;
}

static int bench_rescan(const char *root, int32_t n) {
    char models[1200], db[1300], p[1400];
    (void)imgd_fmt(models, sizeof models, "%s/models", root);
    (void)imgd_fmt(db, sizeof db, "%s/registry.sqlite3", root);
    if (mkdir(models, 0755) != 0) return -1;
    for (int32_t i = 0; i < n; i++) {
        if (i % 100 == 0) {
            (void)imgd_fmt(p, sizeof p, "%s/d%d", models, (int)(i / 100));
            if (mkdir(p, 0755) != 0) return -1;
        }
        (void)imgd_fmt(p, sizeof p, "%s/d%d/m%d.safetensors", models, (int)(i / 100), (int)i);
        if (write_tiny(p) != 0) return -1;
    }
    const char         *dirs[1] = {models};
    imgd_registry      *r       = NULL;
    imgd_reg_scan_stats first, again;
    if (imgd_registry_open(db, dirs, 1, &r) != IMGD_OK ||
        imgd_registry_scan(r, &first) != IMGD_OK) {
        fprintf(stderr, "imgd-bench registry: %s\n", imgd_last_error());
        imgd_registry_free(r);
        return -1;
    }
    double best = 1e9;
    for (int k = 0; k < 5; k++) {
        if (imgd_registry_scan(r, &again) != IMGD_OK) break;
        if (again.seconds < best) best = again.seconds;
    }
    imgd_registry_free(r);
    /* a new process: rows come from SQLite, then a stat-only rescan */
    r = NULL;
    imgd_reg_scan_stats reopen;
    double              t0 = bench_now();
    if (imgd_registry_open(db, dirs, 1, &r) != IMGD_OK ||
        imgd_registry_scan(r, &reopen) != IMGD_OK) {
        reopen.detected = 1;
    }
    double t_reopen = bench_now() - t0;
    imgd_registry_free(r);
    printf("# %d files: first scan detected %llu, rescans reused %llu, reopen detected %llu\n",
           (int)n, (unsigned long long)first.detected, (unsigned long long)again.reused,
           (unsigned long long)reopen.detected);
    bench_emit("registry", "first_scan_s", first.seconds, "s", NULL, 0);
    bench_emit("registry", "rescan_s", best, "s", "first_scan", best / first.seconds);
    bench_emit("registry", "open_and_rescan_s", t_reopen, "s", "first_scan",
               t_reopen / first.seconds);
    return 0;
}

/* ---- cold starts ------------------------------------------------------------------------ */

static double timed_load(const char *path, const imgd_load_params *lp, bool *ok) {
    imgd_model *m  = NULL;
    double      t0 = bench_now();
    if (imgd_model_load(path, lp, &m) != IMGD_OK) {
        fprintf(stderr, "imgd-bench registry: load %s: %s\n", path, imgd_last_error());
        *ok = false;
    }
    double t = bench_now() - t0;
    imgd_model_free(m);
    return t;
}

/* One cold start through the registry (hash, cached when unchanged) and the disk cache. */
static double cold_start(imgd_registry *reg, const char *cache, const char *src,
                         const imgd_load_params *lp, bool *hit, bool *ok) {
    char   sha[65], out[2048];
    double t0 = bench_now();
    if (imgd_registry_hash(reg, "model.ckpt", NULL, NULL, sha) != IMGD_OK ||
        imgd_dcache_get(cache, 0, src, sha, out, sizeof out, hit) != IMGD_OK) {
        fprintf(stderr, "imgd-bench registry: %s\n", imgd_last_error());
        *ok = false;
        return 0;
    }
    double prep = bench_now() - t0;
    bench_drop_page_cache(out);
    double load = timed_load(out, lp, ok);
    printf("# cold start (%s): hash + disk cache %.3f s, load %.3f s\n", *hit ? "hit" : "convert",
           prep, load);
    return prep + load;
}

static int make_model(const ropts *o, const char *root, char *st_path, size_t cap) {
    if (o->small) {
        const char *sh = getenv("IMGD_SHARED_DIR");
        return imgd_fmt(st_path, cap, "%s/conformance/sd15-narrow/sd15-narrow.safetensors",
                        sh && *sh ? sh : "../shared")
                   ? 0
                   : -1;
    }
    const cg_case *cs = NULL;
    for (size_t i = 0; i < cg_case_count(); i++) {
        if (strcmp(cg_case_at(i)->name, "ckpt_sd15_fp16_ldm") == 0) cs = cg_case_at(i);
    }
    if (!cs || cs->build(root, st_path, cap) != 0) return -1;
    double t0 = bench_now();
    int    rc = bench_fill_random(st_path);
    printf("# random SD 1.5 (f16) written in %.1f s\n", bench_now() - t0);
    return rc;
}

static int bench_cold(const ropts *o, const char *root) {
    char st_path[1400], ckpt[1400], cache[1400], cmd[4400], tok[1400], models[1400];
    if (make_model(o, root, st_path, sizeof st_path) != 0) {
        fprintf(stderr, "imgd-bench registry: could not write the model under %s\n", root);
        return -1;
    }
    (void)imgd_fmt(models, sizeof models, "%s/ckpt", root);
    (void)imgd_fmt(ckpt, sizeof ckpt, "%s/model.ckpt", models);
    (void)imgd_fmt(cache, sizeof cache, "%s/cache", root);
    double t0 = bench_now();
    if (mkdir(models, 0755) != 0 ||
        !imgd_fmt(cmd, sizeof cmd, "python3 '%s/st_to_ckpt.py' '%s' '%s'", IMGD_BENCH_SRC, st_path,
                  ckpt) ||
        system(cmd) != 0) {
        fprintf(stderr, "imgd-bench registry: writing the .ckpt failed (%s)\n", cmd);
        return -1;
    }
    struct stat st;
    double      bytes = stat(ckpt, &st) == 0 ? (double)st.st_size : 0;
    printf("# %s: %.2f GiB .ckpt written in %.1f s\n", o->small ? "sd15-narrow" : "SD 1.5 f16",
           bytes / 1073741824.0, bench_now() - t0);
    const char      *sh = getenv("IMGD_SHARED_DIR");
    imgd_load_params lp = imgd_load_params_default();
    lp.threads          = o->threads;
    lp.precision        = IMGD_PRECISION_F32;
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/%s", sh && *sh ? sh : "../shared",
                   o->small ? "sd15-narrow/diffusers/tokenizer" : "clip-tokenizer");
    lp.tokenizer_dir = tok;
    if (o->small) lp.arch.te_heads = 4;
    const char    *dirs[1] = {models};
    imgd_registry *reg     = NULL;
    char           db[1500];
    (void)imgd_fmt(db, sizeof db, "%s/registry.sqlite3", models);
    if (imgd_registry_open(db, dirs, 1, &reg) != IMGD_OK ||
        imgd_registry_scan(reg, NULL) != IMGD_OK) {
        fprintf(stderr, "imgd-bench registry: %s\n", imgd_last_error());
        imgd_registry_free(reg);
        return -1;
    }
    bool ok = true, hit1 = true, hit2 = false;
    bench_drop_page_cache(ckpt);
    double direct = timed_load(ckpt, &lp, &ok);
    bench_drop_page_cache(ckpt);
    double first = cold_start(reg, cache, ckpt, &lp, &hit1, &ok);
    bench_drop_page_cache(ckpt);
    double second = cold_start(reg, cache, ckpt, &lp, &hit2, &ok);
    imgd_registry_free(reg);
    if (!ok || hit1 || !hit2) {
        fprintf(stderr, "imgd-bench registry: cold starts failed (hit %d %d)\n", hit1, hit2);
        return -1;
    }
    bench_emit("registry", "ckpt_direct_load_s", direct, "s", NULL, 0);
    bench_emit("registry", "cold_start_first_s", first, "s", "ckpt_direct_load", first / direct);
    bench_emit("registry", "cold_start_second_s", second, "s", "cold_start_first", second / first);
    bench_emit("registry", "warm_vs_direct_ckpt", second, "s", "ckpt_direct_load", second / direct);
    return 0;
}

int bench_registry(int argc, char **argv) {
    ropts o;
    if (parse(argc, argv, &o) != 0) return 2;
    imgd_log_level_set(IMGD_LOG_WARN);
    char root[1024];
    if (!imgd_fmt(root, sizeof root, "%s/imgd-bench-registry-%ld", o.dir, (long)getpid()) ||
        mkdir(root, 0755) != 0) {
        fprintf(stderr, "imgd-bench registry: cannot create a folder under %s: %s\n", o.dir,
                strerror(errno));
        return 1;
    }
    int rc = bench_rescan(root, o.files) == 0 ? 0 : 1;
    if (bench_cold(&o, root) != 0) rc = 1;
    char cmd[1200];
    if (!o.keep && imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", root) && system(cmd) != 0) {
        fprintf(stderr, "imgd-bench registry: could not remove %s\n", root);
    }
    return rc;
}
