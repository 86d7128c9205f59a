/* imgd-bench share: resident memory of two models whose VAEs are identical (a random SD 1.5
 * f16 checkpoint and a copy with one UNet byte changed), loaded and run once each, without
 * and with a component store (imgd_components). Each configuration runs in a child process
 * so the resident sets do not mix; the page cache is dropped before each. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/text.h"
#include "bench.h"
#include "detect/corpus_gen.h"
#include "formats/safetensors.h"
#include "imgd.h"

typedef struct sopts {
    const char *dir;
    uint32_t    threads;
    bool        small, keep;
} sopts;

static int parse(int argc, char **argv, sopts *o) {
    memset(o, 0, sizeof *o);
    o->dir = "/tmp";
    for (int i = 0; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--small") == 0) {
            o->small = true;
        } else if (strcmp(argv[i], "--keep") == 0) {
            o->keep = true;
        } else if (strcmp(argv[i], "--dir") == 0 && v) {
            o->dir = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && v) {
            char *end = NULL;
            long  x   = strtol(v, &end, 10);
            if (!end || *end || x < 0 || x > 4096) {
                fprintf(stderr, "imgd-bench share: --threads takes 0..4096, got '%s'\n", v);
                return -1;
            }
            o->threads = (uint32_t)x;
            i++;
        } else {
            fprintf(stderr,
                    "imgd-bench share: unknown option '%s' (--small --dir D --threads N "
                    "--keep)\n",
                    argv[i]);
            return -1;
        }
    }
    return 0;
}

/* Copies src to dst with the first byte of tensor `flip` changed. 0 on success. */
static int write_variant(const char *src, const char *dst, const char *flip) {
    imgd_weights *w = NULL;
    if (imgd_weights_open(src, NULL, &w) != IMGD_OK) return -1;
    size_t         n  = imgd_weights_tensor_count(w);
    imgd_st_entry *e  = imgd_calloc(n ? n : 1, sizeof *e);
    bool           ok = e != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        imgd_tensor_info t;
        ok          = imgd_weights_tensor(w, i, &t) == IMGD_OK;
        e[i].name   = t.name;
        e[i].n_dims = t.n_dims;
        e[i].dtype  = t.dtype;
        memcpy(e[i].shape, t.shape, sizeof t.shape);
    }
    imgd_st_writer *wr = NULL;
    ok                 = ok && imgd_st_writer_open(dst, e, n, NULL, NULL, 0, &wr) == IMGD_OK;
    for (size_t i = 0; ok && i < n; i++) {
        imgd_tensor_info t;
        (void)imgd_weights_tensor(w, i, &t);
        if (strcmp(t.name, flip) == 0 && t.nbytes > 1) {
            uint8_t b = ((const uint8_t *)t.data)[0] ^ 1u;
            ok        = imgd_st_writer_write(wr, &b, 1) == IMGD_OK &&
                 imgd_st_writer_write(wr, (const uint8_t *)t.data + 1, t.nbytes - 1) == IMGD_OK;
        } else {
            ok = imgd_st_writer_write(wr, t.data, t.nbytes) == IMGD_OK;
        }
    }
    if (wr) ok = imgd_st_writer_close(wr) == IMGD_OK && ok;
    imgd_free(e);
    imgd_weights_free(w);
    return ok ? 0 : -1;
}

/* VmRSS of this process in bytes (0 when unknown). */
static double rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char  line[256];
    long  kb = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    if (f) (void)fclose(f);
    return (double)kb * 1024.0;
}

typedef struct run_out {
    double rss, rss_base, saved, load_s;
    int    ok;
} run_out;

/* The child's work: load both, one tiny generation each, report the resident set. */
static void child_run(const sopts *o, const char *a, const char *b, bool share, int fd) {
    run_out r;
    memset(&r, 0, sizeof r);
    r.rss_base             = rss_bytes();
    imgd_components *store = NULL;
    const char      *sh    = getenv("IMGD_SHARED_DIR");
    char             tok[2048];
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/%s", sh && *sh ? sh : "../shared",
                   o->small ? "sd15-narrow/diffusers/tokenizer" : "clip-tokenizer");
    imgd_load_params lp = imgd_load_params_default();
    lp.threads          = o->threads;
    lp.precision        = IMGD_PRECISION_F32;
    lp.tokenizer_dir    = tok;
    if (o->small) lp.arch.te_heads = 4;
    if (share && imgd_components_new(&store) != IMGD_OK) _exit(1);
    lp.components    = store;
    imgd_model *m[2] = {NULL, NULL};
    const char *p[2] = {a, b};
    double      t0   = bench_now();
    bool        ok   = true;
    for (int i = 0; i < 2 && ok; i++) ok = imgd_model_load(p[i], &lp, &m[i]) == IMGD_OK;
    r.load_s = bench_now() - t0;
    for (int i = 0; i < 2 && ok; i++) {
        imgd_gen_params g = imgd_gen_params_default();
        g.prompt          = "a red house";
        g.width = g.height   = 64;
        g.steps              = 1;
        imgd_gen_result *res = NULL;
        ok                   = imgd_generate(m[i], &g, &res) == IMGD_OK;
        imgd_gen_result_free(res);
    }
    if (!ok) fprintf(stderr, "imgd-bench share: %s\n", imgd_last_error());
    r.rss = rss_bytes();
    imgd_components_stats cs;
    imgd_components_stats_get(store, &cs);
    r.saved = (double)cs.saved_bytes;
    r.ok    = ok;
    for (int i = 0; i < 2; i++) imgd_model_free(m[i]);
    imgd_components_free(store);
    ssize_t w = write(fd, &r, sizeof r);
    _exit(w == (ssize_t)sizeof r && ok ? 0 : 1);
}

static int run(const sopts *o, const char *a, const char *b, bool share, run_out *out) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    bench_drop_page_cache(a);
    bench_drop_page_cache(b);
    (void)fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        (void)close(fds[0]);
        child_run(o, a, b, share, fds[1]);
    }
    (void)close(fds[1]);
    ssize_t n  = read(fds[0], out, sizeof *out);
    int     st = 0;
    (void)close(fds[0]);
    (void)waitpid(pid, &st, 0);
    return n == (ssize_t)sizeof *out && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int bench_share(int argc, char **argv) {
    sopts o;
    if (parse(argc, argv, &o) != 0) return 2;
    imgd_log_level_set(IMGD_LOG_WARN);
    char root[1024], a[1400], b[1400];
    if (!imgd_fmt(root, sizeof root, "%s/imgd-bench-share-%ld", o.dir, (long)getpid()) ||
        mkdir(root, 0755) != 0) {
        fprintf(stderr, "imgd-bench share: cannot create a folder under %s: %s\n", o.dir,
                strerror(errno));
        return 1;
    }
    int rc = 0;
    if (o.small) {
        const char *sh = getenv("IMGD_SHARED_DIR");
        (void)imgd_fmt(a, sizeof a, "%s/conformance/sd15-narrow/sd15-narrow.safetensors",
                       sh && *sh ? sh : "../shared");
    } else {
        const cg_case *cs = NULL;
        for (size_t i = 0; i < cg_case_count(); i++) {
            if (strcmp(cg_case_at(i)->name, "ckpt_sd15_fp16_ldm") == 0) cs = cg_case_at(i);
        }
        if (!cs || cs->build(root, a, sizeof a) != 0 || bench_fill_random(a) != 0) rc = 1;
    }
    (void)imgd_fmt(b, sizeof b, "%s/other-unet.safetensors", root);
    double t0 = bench_now();
    if (rc == 0 && write_variant(a, b, "model.diffusion_model.out.2.bias") != 0) rc = 1;
    printf("# two %s checkpoints, identical VAEs, written in %.1f s\n",
           o.small ? "sd15-narrow" : "random SD 1.5 f16", bench_now() - t0);
    run_out plain, shared;
    if (rc == 0 && (run(&o, a, b, false, &plain) != 0 || run(&o, a, b, true, &shared) != 0)) {
        fprintf(stderr, "imgd-bench share: a run failed\n");
        rc = 1;
    }
    if (rc == 0) {
        double up = plain.rss - plain.rss_base, us = shared.rss - shared.rss_base;
        printf("# loads: %.2f s without sharing, %.2f s with (hashing both VAEs once)\n",
               plain.load_s, shared.load_s);
        bench_emit("share", "rss_two_models_unshared_bytes", up, "B", NULL, 0);
        bench_emit("share", "rss_two_models_shared_bytes", us, "B", "rss_two_models_unshared",
                   up > 0 ? us / up : 0);
        bench_emit("share", "rss_saved_bytes", up - us, "B", "vae_bytes_held_once",
                   shared.saved > 0 ? (up - us) / shared.saved : 0);
        bench_emit("share", "vae_bytes_held_once", shared.saved, "B", NULL, 0);
    }
    char cmd[1200];
    if (!o.keep && imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", root) && system(cmd) != 0) {
        fprintf(stderr, "imgd-bench share: could not remove %s\n", root);
    }
    return rc;
}
