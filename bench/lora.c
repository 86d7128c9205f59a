/* lora bench: a random-weight SD 1.5 of the real size (bench_sd_model_write, written once)
 * and a rank-R kohya LoRA written for it (LoRA on every UNet attention / feed-forward /
 * proj_in / proj_out linear and every text-encoder linear, LoCon on every 3x3 UNet conv:
 * what a kohya LoCon training produces), then, merging once: seconds per UNet step
 * unmerged (its first run reads the file into the model's cache), base and merged; the
 * time (wall and CPU) to apply it merged and to remove it, bytes of merged copies; with
 * the ratios side by side. 64x64 by default so the run stays short on 2 cores. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/text.h"
#include "bench.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "imgd.h"
#include "pipeline/pipeline.h"

#define MODS_MAX 1024

typedef struct lopts {
    const char *dir, *tokenizer;
    int32_t     steps, size, rank;
    uint32_t    threads;
} lopts;

static int lparse(int argc, char **argv, lopts *o) {
    memset(o, 0, sizeof *o);
    o->dir   = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    o->steps = 2;
    o->size  = 64;
    o->rank  = 32;
    for (int i = 0; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--dir") == 0)
            o->dir = v;
        else if (strcmp(a, "--tokenizer") == 0)
            o->tokenizer = v;
        else if (strcmp(a, "--steps") == 0)
            o->steps = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--size") == 0)
            o->size = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--rank") == 0)
            o->rank = (int32_t)strtol(v, NULL, 10);
        else if (strcmp(a, "--threads") == 0)
            o->threads = (uint32_t)strtoul(v, NULL, 10);
        else {
            fprintf(stderr, "imgd-bench lora: unknown option %s\n", a);
            return -1;
        }
    }
    if (argc % 2 || o->steps < 1 || o->size < 64 || o->size % 8 || o->rank < 1 || o->rank > 256) {
        fprintf(stderr, "imgd-bench lora: options take values; --size multiple of 8 >= 64, "
                        "--rank 1..256\n");
        return -1;
    }
    return 0;
}

/* Whether a canonical weight gets a LoRA module (kohya LoCon's targets). */
static bool targeted(const char *c, int32_t nd, const int64_t *s) {
    bool unet = strncmp(c, "unet.", 5) == 0, te = strncmp(c, "text_encoder.", 13) == 0;
    if (!strstr(c, ".weight") || (!unet && !te)) return false;
    if (te) return nd == 2 && (strstr(c, "_proj.") || strstr(c, ".fc1.") || strstr(c, ".fc2."));
    if (strstr(c, "transformer_blocks") && nd == 2) return !strstr(c, "norm");
    if (strstr(c, "proj_in.") || strstr(c, "proj_out.")) return true;
    return nd == 4 && s[2] == 3 && (strstr(c, ".resnets.") != NULL);
}

static uint64_t g_rs = 0x2545F4914F6CDD1Dull;
static float    lrand(void) {
       g_rs ^= g_rs << 13;
       g_rs ^= g_rs >> 7;
       g_rs ^= g_rs << 17;
       return (float)((double)(g_rs >> 11) * (1.0 / 9007199254740992.0)) - 0.5f;
}

/* Writes the LoRA for model m at path; *n_mods receives the module count. */
static int write_lora(imgd_model *m, const char *path, int32_t rank, size_t *n_mods) {
    imgd_st_entry *e     = imgd_calloc((size_t)3 * MODS_MAX, sizeof *e);
    char          *names = imgd_calloc((size_t)3 * MODS_MAX, 256);
    size_t         n     = 0;
    int            rc    = e && names ? 0 : -1;
    const char    *c;
    imgd_wbind    *b = m->wb;
    for (size_t i = 0;
         rc == 0 && (c = imgd_wbind_name_at(b, i)) != NULL && n < (size_t)3 * MODS_MAX; i++) {
        int64_t s[IMGD_MAX_DIMS];
        int32_t nd = imgd_wbind_shape(b, c, s);
        if (!targeted(c, nd, s)) continue;
        char k[256];
        bool un = strncmp(c, "unet.", 5) == 0;
        (void)imgd_fmt(k, sizeof k, "%s%.*s", un ? "lora_unet_" : "lora_te_",
                       (int)(strlen(c) - 7 - (un ? 5 : 13)), c + (un ? 5 : 13));
        for (char *p = k + (un ? 10 : 8); *p; p++)
            if (*p == '.') *p = '_';
        const char *suf[3] = {".lora_down.weight", ".lora_up.weight", ".alpha"};
        for (int j = 0; j < 3; j++) {
            char *nm = names + (n + (size_t)j) * 256;
            (void)imgd_fmt(nm, 256, "%s%s", k, suf[j]);
            e[n + (size_t)j].name  = nm;
            e[n + (size_t)j].dtype = IMGD_DTYPE_F16;
        }
        imgd_st_entry *d = &e[n], *u = &e[n + 1];
        d->n_dims   = nd;
        d->shape[0] = rank;
        for (int32_t q = 1; q < nd; q++) d->shape[q] = s[q];
        u->n_dims   = nd;
        u->shape[0] = s[0];
        u->shape[1] = rank;
        for (int32_t q = 2; q < nd; q++) u->shape[q] = 1;
        e[n + 2].n_dims = 0;
        n += 3;
    }
    imgd_st_writer *wr = NULL;
    if (rc == 0 && imgd_st_writer_open(path, e, n, NULL, NULL, 0, &wr) != IMGD_OK) rc = -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        size_t cnt = 1;
        for (int32_t q = 0; q < e[i].n_dims; q++) cnt *= (size_t)e[i].shape[q];
        float a = i % 3 == 2 ? (float)rank / 2 : 0.05f;
        for (size_t j = 0; rc == 0 && j < cnt; j++) {
            uint16_t h = imgd_f32_to_f16(i % 3 == 2 ? a : a * lrand());
            if (imgd_st_writer_write(wr, &h, 2) != IMGD_OK) rc = -1;
        }
    }
    if (wr && rc != 0)
        imgd_st_writer_abort(wr);
    else if (wr && imgd_st_writer_close(wr) != IMGD_OK)
        rc = -1;
    *n_mods = n / 3;
    imgd_free(e);
    imgd_free(names);
    return rc;
}

/* Seconds per UNet step under p's LoRA set: one run of a single step applies the set and
 * plans the graphs, the second (p->steps steps) is measured. */
static double step_s(imgd_model *m, const imgd_gen_params *p) {
    imgd_gen_result *r1 = NULL, *r2 = NULL;
    imgd_gen_params  warm = *p;
    double           s    = -1;
    warm.steps            = 1;
    if (imgd_generate(m, &warm, &r1) == IMGD_OK && imgd_generate(m, p, &r2) == IMGD_OK)
        s = r2->t_sample_s / r2->steps_run;
    else
        fprintf(stderr, "imgd-bench lora: %s\n", imgd_last_error());
    imgd_gen_result_free(r1);
    imgd_gen_result_free(r2);
    return s;
}

/* CPU seconds (user + system, every thread) the process has used. */
static double cpu_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static double g_apply_cpu; /* CPU seconds of the last apply_s */

/* Seconds imgd_sd_lora_apply takes to switch m to p's set; -1 on failure. */
static double apply_s(imgd_model *m, const imgd_gen_params *p) {
    double      t0 = bench_now(), c0 = cpu_s();
    imgd_status st = imgd_sd_lora_apply(m, p);
    g_apply_cpu    = cpu_s() - c0;
    if (st == IMGD_OK) return bench_now() - t0;
    fprintf(stderr, "imgd-bench lora: %s\n", imgd_last_error());
    return -1;
}

/* The measurements, in an order that merges once: unmerged first (it reads the file into
 * the model's cache), then the base, then the merge (warm cache), merged steps, removal. */
static int measure(imgd_model *m, imgd_lora_spec *ls, const imgd_gen_params *p, double *t) {
    imgd_gen_params none = *p;
    none.n_loras         = 0;
    ls->mode             = IMGD_LORA_MODE_UNMERGED;
    double t0            = bench_now();
    t[0]                 = step_s(m, p); /* unmerged step (first apply reads the file) */
    t[1]                 = bench_now() - t0;
    if (t[0] > 0 && apply_s(m, &none) >= 0) t[2] = step_s(m, &none); /* base step */
    ls->mode      = IMGD_LORA_MODE_MERGE;
    uint64_t held = imgd_alloc_bytes_in_use();
    if (t[2] > 0) t[3] = apply_s(m, p); /* merge */
    t[6] = (double)(imgd_alloc_bytes_in_use() - held);
    t[7] = g_apply_cpu;
    if (t[3] >= 0) t[4] = step_s(m, p);     /* merged step */
    if (t[4] > 0) t[5] = apply_s(m, &none); /* removal */
    return t[0] > 0 && t[2] > 0 && t[3] >= 0 && t[4] > 0 && t[5] >= 0 ? 0 : 1;
}

int bench_lora(int argc, char **argv) {
    lopts o;
    if (lparse(argc, argv, &o) != 0) return 2;
    imgd_log_level_set(IMGD_LOG_WARN);
    char tokdir[4096], root[1024], target[1400], lpath[1500];
    if (!o.tokenizer) {
        const char *sh = getenv("IMGD_SHARED_DIR");
        if (imgd_fmt(tokdir, sizeof tokdir, "%s/conformance/clip-tokenizer",
                     sh && *sh ? sh : "../shared"))
            o.tokenizer = tokdir;
    }
    double t0 = bench_now();
    if (bench_sd_model_write(o.dir, "lora", root, sizeof root, target, sizeof target) != 0 ||
        bench_fill_random(target) != 0) {
        fprintf(stderr, "imgd-bench lora: could not write the model under %s\n", o.dir);
        return 1;
    }
    double           t_write = bench_now() - t0;
    imgd_load_params lp      = imgd_load_params_default();
    lp.precision             = IMGD_PRECISION_F32;
    lp.threads               = o.threads;
    lp.tokenizer_dir         = o.tokenizer;
    imgd_model *m            = NULL;
    size_t      n_mods       = 0;
    int         rc           = imgd_model_load(target, &lp, &m) == IMGD_OK ? 0 : 1;
    if (rc) fprintf(stderr, "imgd-bench lora: %s\n", imgd_last_error());
    (void)imgd_fmt(lpath, sizeof lpath, "%s/lora_r%d.safetensors", root, (int)o.rank);
    if (!rc && write_lora(m, lpath, o.rank, &n_mods) != 0) {
        fprintf(stderr, "imgd-bench lora: could not write %s\n", lpath);
        rc = 1;
    }
    imgd_gen_params p  = imgd_gen_params_default();
    imgd_lora_spec  ls = {lpath, 0.8f, NAN, IMGD_LORA_MODE_MERGE};
    p.prompt           = "a photograph of an astronaut riding a horse";
    p.width = p.height = o.size;
    p.steps            = o.steps;
    p.loras            = &ls;
    p.n_loras          = 1;
    /* unmerged step, first unmerged run, base step, merge, merged step, removal */
    double t[8] = {-1, -1, -1, -1, -1, -1, 0, 0}; /* + merged bytes, merge CPU s */
    if (!rc) rc = measure(m, &ls, &p, t);
    if (!rc) {
        printf("# rank %d LoRA, %zu modules, %.1f MB merged copies (model written in %.0f s); "
               "UNet steps at %dx%d with CFG, %u threads\n",
               (int)o.rank, n_mods, t[6] / 1e6, t_write, (int)o.size, (int)o.size,
               m->pool ? imgd_pool_size(m->pool) : 1u);
        bench_emit("lora", "apply_merge_s", t[3], "s", NULL, 0);
        bench_emit("lora", "apply_merge_cpu_s", t[7], "s", "apply_merge", t[7] / t[3]);
        bench_emit("lora", "remove_s", t[5], "s", "apply_merge", t[5] / t[3]);
        bench_emit("lora", "unet_step_base_s", t[2], "s", NULL, 0);
        bench_emit("lora", "unet_step_merged_s", t[4], "s", "base", t[4] / t[2]);
        bench_emit("lora", "unet_step_unmerged_s", t[0], "s", "merged", t[0] / t[4]);
        printf("# apply %.2f s (%.2f CPU s)  remove %.3f s | step base %.3f  merged %.3f  "
               "unmerged %.3f s | merged/base %.3f  unmerged/merged %.3f\n",
               t[3], t[7], t[5], t[2], t[4], t[0], t[4] / t[2], t[0] / t[4]);
    }
    imgd_model_free(m);
    char cmd[1200];
    if (imgd_fmt(cmd, sizeof cmd, "rm -rf '%s'", root) && system(cmd) != 0)
        fprintf(stderr, "imgd-bench lora: could not remove %s\n", root);
    return rc;
}
