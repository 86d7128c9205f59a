/* imgd-bench deploy: start-to-ready of a one-model worker (imgd_server_start with MODEL_ID) for
 * a random-weight SD 1.5 .ckpt of the real size: the first start (cold disk cache: sha256 and
 * conversion into STATE/cache, then load), the second (disk cache hit, page cache dropped) and
 * the third (disk cache hit, page cache warm), side by side in one run (issue 11). */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/text.h"
#include "bench.h"
#include "detect/corpus_gen.h"
#include "imgd.h"

typedef struct dopts {
    const char *dir;
    uint32_t    threads;
    bool        small, keep, warmup;
} dopts;

static int parse(int argc, char **argv, dopts *o) {
    memset(o, 0, sizeof *o);
    o->dir = "/tmp";
    for (int i = 0; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--small") == 0) {
            o->small = true;
        } else if (strcmp(argv[i], "--keep") == 0) {
            o->keep = true;
        } else if (strcmp(argv[i], "--warmup") == 0) {
            o->warmup = true;
        } else if (strcmp(argv[i], "--dir") == 0 && v) {
            o->dir = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && v) {
            char *end = NULL;
            long  x   = strtol(v, &end, 10);
            if (!end || *end || x < 0 || x > 4096) return -1;
            o->threads = (uint32_t)x;
            i++;
        } else {
            fprintf(stderr, "imgd-bench deploy: unknown option '%s'\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

static void drop_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[2048];
        if (e->d_name[0] != '.' && imgd_fmt(p, sizeof p, "%s/%s", dir, e->d_name))
            bench_drop_page_cache(p);
    }
    (void)closedir(d);
}

static int make_ckpt(const dopts *o, const char *root, char *ckpt, size_t cap) {
    char st_path[1400], cmd[4400];
    if (o->small) {
        const char *sh = getenv("IMGD_SHARED_DIR");
        (void)imgd_fmt(st_path, sizeof st_path,
                       "%s/conformance/sd15-narrow/sd15-narrow.safetensors",
                       sh && *sh ? sh : "../shared");
    } else {
        const cg_case *cs = NULL;
        for (size_t i = 0; i < cg_case_count(); i++) {
            if (strcmp(cg_case_at(i)->name, "ckpt_sd15_fp16_ldm") == 0) cs = cg_case_at(i);
        }
        double t0 = bench_now();
        if (!cs || cs->build(root, st_path, sizeof st_path) != 0 ||
            bench_fill_random(st_path) != 0) {
            return -1;
        }
        printf("# random SD 1.5 (f16) written in %.1f s\n", bench_now() - t0);
    }
    char models[1400];
    (void)imgd_fmt(models, sizeof models, "%s/models", root);
    (void)imgd_fmt(ckpt, cap, "%s/model.ckpt", models);
    double t0 = bench_now();
    if (mkdir(models, 0755) != 0 ||
        !imgd_fmt(cmd, sizeof cmd, "python3 '%s/st_to_ckpt.py' '%s' '%s'", IMGD_BENCH_SRC, st_path,
                  ckpt) ||
        system(cmd) != 0) {
        fprintf(stderr, "imgd-bench deploy: writing the .ckpt failed (%s)\n", cmd);
        return -1;
    }
    struct stat st;
    printf("# %.2f GiB .ckpt written in %.1f s\n",
           stat(ckpt, &st) == 0 ? (double)st.st_size / 1073741824.0 : 0.0, bench_now() - t0);
    return 0;
}

/* One start of a worker serving MODEL_ID ckpt; returns imgd_server_start_seconds or -1. */
static double one_start(const dopts *o, const char *ckpt, const char *state, const char *tok) {
    imgd_serve_params p  = imgd_serve_params_default();
    p.model_id           = ckpt;
    p.state_dir          = state;
    p.warmup             = o->warmup;
    p.load.threads       = o->threads;
    p.load.precision     = IMGD_PRECISION_F32;
    p.load.tokenizer_dir = tok;
    if (o->small) p.load.arch.te_heads = 4;
    imgd_server *s  = NULL;
    double       t0 = bench_now();
    if (imgd_server_start(&p, &s) != IMGD_OK) {
        fprintf(stderr, "imgd-bench deploy: start failed: %s\n", imgd_last_error());
        return -1;
    }
    double wall = bench_now() - t0, secs = imgd_server_start_seconds(s);
    printf("# start: ready in %.3f s (wall %.3f s)\n", secs, wall);
    imgd_server_stop(s, 0);
    return secs;
}

int bench_deploy(int argc, char **argv) {
    dopts o;
    if (parse(argc, argv, &o) != 0) return 2;
    char root[1200], ckpt[1400], state[1400], cache[1500], tok[1400], cmd[1400];
    if (!imgd_fmt(root, sizeof root, "%s/imgd-bench-deploy-%d", o.dir, (int)getpid()) ||
        mkdir(root, 0755) != 0) {
        fprintf(stderr, "imgd-bench deploy: cannot create %s\n", root);
        return 1;
    }
    const char *sh = getenv("IMGD_SHARED_DIR");
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/%s", sh && *sh ? sh : "../shared",
                   o.small ? "sd15-narrow/diffusers/tokenizer" : "clip-tokenizer");
    (void)imgd_fmt(state, sizeof state, "%s/state", root);
    (void)imgd_fmt(cache, sizeof cache, "%s/cache", state);
    int    rc    = make_ckpt(&o, root, ckpt, sizeof ckpt);
    double first = -1, second = -1, third = -1;
    if (rc == 0) {
        bench_drop_page_cache(ckpt);
        first = one_start(&o, ckpt, state, tok); /* sha256 + convert + load */
        bench_drop_page_cache(ckpt);
        drop_dir(cache);
        second = first > 0 ? one_start(&o, ckpt, state, tok) : -1;  /* cache hit, from disk */
        third  = second > 0 ? one_start(&o, ckpt, state, tok) : -1; /* from the page cache */
    }
    if (first > 0 && second > 0 && third > 0) {
        bench_emit("deploy", "start_to_ready_first_s", first, "s", NULL, 0);
        bench_emit("deploy", "start_to_ready_second_s", second, "s", "start_to_ready_first",
                   second / first);
        bench_emit("deploy", "start_to_ready_page_cache_s", third, "s", "start_to_ready_first",
                   third / first);
    } else {
        rc = 1;
    }
    if (!o.keep && imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", root)) (void)system(cmd);
    return rc;
}
