/* imgd command-line interface. Uses only the public header (include/imgd.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "imgd.h"

typedef int (*cmd_fn)(int argc, char **argv);

typedef struct cmd_row {
    const char *name;
    cmd_fn      fn;
    const char *usage;
    const char *doc;
} cmd_row;

/* ---- progress --------------------------------------------------------------------- */

typedef struct progress_state {
    const char *what;
    int         last_pct;
} progress_state;

static bool progress_tty(uint64_t done, uint64_t total, void *user) {
    progress_state *p   = user;
    int             pct = total ? (int)(done * 100 / total) : 100;
    if (pct != p->last_pct) {
        fprintf(stderr, "\r%s %3d%% (%.2f / %.2f GB)", p->what, pct, (double)done / 1e9,
                (double)total / 1e9);
        if (done >= total) fputc('\n', stderr);
        p->last_pct = pct;
    }
    return true;
}

/* ---- inspect ---------------------------------------------------------------------- */

static int cmd_inspect(int argc, char **argv) {
    imgd_inspect_params p    = imgd_inspect_params_default();
    const char         *path = NULL;
    bool                json = false;
    p.text                   = true;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--hash") == 0)
            p.hash = true;
        else if (strcmp(argv[i], "--explain") == 0)
            p.explain = true;
        else if (strcmp(argv[i], "--variant") == 0 && i + 1 < argc)
            p.open.variant = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "imgd inspect: unknown option '%s' (see imgd help)\n", argv[i]);
            return 2;
        } else if (!path)
            path = argv[i];
        else {
            fprintf(stderr, "imgd inspect: one path at a time ('%s' is extra)\n", argv[i]);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "imgd inspect: missing PATH (a weight file or a diffusers folder)\n");
        return 2;
    }
    p.text              = !json;
    progress_state prog = {"hashing", -1};
    if (p.hash && isatty(STDERR_FILENO)) {
        p.progress = progress_tty;
        p.user     = &prog;
    }
    char       *report = NULL;
    imgd_status st     = imgd_inspect(path, &p, &report);
    if (report) {
        fputs(report, stdout);
        if (json) fputc('\n', stdout);
        imgd_string_free(report);
    }
    if (st != IMGD_OK) {
        fprintf(stderr, "imgd: %s\n", imgd_last_error());
        return 1;
    }
    return 0;
}

/* ---- convert ---------------------------------------------------------------------- */

static int cmd_convert(int argc, char **argv) {
    imgd_convert_params p  = imgd_convert_params_default();
    const char         *in = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
            imgd_dtype dt;
            if (imgd_dtype_parse(argv[++i], &dt) != IMGD_OK ||
                (dt != IMGD_DTYPE_F32 && dt != IMGD_DTYPE_F16 && dt != IMGD_DTYPE_BF16)) {
                fprintf(stderr, "imgd convert: --dtype must be f32, f16 or bf16 (got '%s')\n",
                        argv[i]);
                return 2;
            }
            p.dtype = (int32_t)dt;
        } else if (strcmp(argv[i], "--prune-ema") == 0) {
            p.prune_ema = true;
        } else if (strcmp(argv[i], "--variant") == 0 && i + 1 < argc) {
            p.open.variant = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "imgd convert: unknown option '%s' (see imgd help)\n", argv[i]);
            return 2;
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            fprintf(stderr, "imgd convert: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "imgd convert: usage: imgd convert IN OUT.safetensors [--dtype "
                        "f32|f16|bf16] [--prune-ema]\n");
        return 2;
    }
    progress_state prog = {"writing", -1};
    if (isatty(STDERR_FILENO)) {
        p.progress = progress_tty;
        p.user     = &prog;
    }
    imgd_convert_result r;
    if (imgd_convert(in, out, &p, &r) != IMGD_OK) {
        fprintf(stderr, "imgd: %s\n", imgd_last_error());
        return 1;
    }
    printf("wrote %s: %llu tensors, %llu bytes, verified", out, (unsigned long long)r.tensors,
           (unsigned long long)r.bytes);
    if (r.tensors_pruned)
        printf(" (%llu EMA tensors pruned)", (unsigned long long)r.tensors_pruned);
    printf("\n");
    return 0;
}

/* ---- table ------------------------------------------------------------------------ */

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("imgd %s\nbackends:", imgd_version());
    for (size_t i = 0; i < imgd_backend_count(); i++)
        printf("%s %s", i ? "," : "", imgd_backend_name_at(i));
    printf("\n");
    return 0;
}

static const cmd_row k_cmds[] = {
    {"inspect", cmd_inspect, "imgd inspect PATH [--json] [--hash] [--explain] [--variant V]",
     "what a model file or diffusers folder is: format, tensors, parameters, dtypes, metadata,\n"
     "      safety verdict, and what model it is (kind, family, config, needs); --hash adds\n"
     "      sha256 and the AutoV2 short hash; --explain lists the evidence behind each decision"},
    {"convert", cmd_convert, "imgd convert IN OUT.safetensors [--dtype f32|f16|bf16] [--prune-ema]",
     "any readable weights (.ckpt/.pt/.bin, GGUF, safetensors, diffusers) to a verified\n"
     "      safetensors file; metadata carried over"},
    {"generate", imgd_cli_generate, NULL,
     "txt2img / img2img / inpainting with an SD 1.x/2.x model in any layout; writes PNG\n"
     "      (A1111 parameters chunk), JPEG or WebP by the -o extension; --batch N writes\n"
     "      x.png, x-1.png, ...; --json prints paths and timings"},
    {"serve", imgd_cli_serve, NULL,
     "the worker: HTTP API (/v1, A1111 /sdapi/v1, OpenAI images, RunPod) over a durable\n"
     "      job queue in --state; models are paths under --models, or the one --model-id\n"
     "      (a path, hub id, URL or AIR; an adapter on its base); --runpod also takes jobs\n"
     "      from RunPod serverless; SIGTERM stops gracefully"},
    {"pull", imgd_cli_pull, NULL,
     "download a model: a Hugging Face repo (org/name[@rev], the files a pipeline needs,\n"
     "      --variant fp16, sharded weights) or CivitAI (civitai:VERSION, civitai-model:ID,\n"
     "      civitai-hash:SHA256, a civitai.com URL; civitai-hash:FILE: only the metadata of a\n"
     "      file you have, beside it); resumable, parallel, sha256-verified;\n"
     "      tokens from HF_TOKEN / CIVITAI_TOKEN; hubs from IMGD_HF_ENDPOINT /\n"
     "      IMGD_CIVITAI_ENDPOINT"},
    {"resolve", imgd_cli_resolve, NULL,
     "what a MODEL_ID names (a file or folder, org/name, civitai:ID, a URL, an AIR) and what\n"
     "      `imgd serve --model-id` serves for it: pulled when needed; for an adapter the base\n"
     "      found (metadata, CivitAI baseModel, --models folders, $IMGD_BASE_<FAMILY>); JSON"},
    {"version", cmd_version, "imgd version", "print the version"},
    {"help", cmd_help, "imgd help", "this text"},
};

static int cmd_help(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("imgd %s — universal image-model worker\n\nusage:\n", imgd_version());
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        printf("  %s\n      %s\n",
               k_cmds[i].usage                          ? k_cmds[i].usage
               : strcmp(k_cmds[i].name, "serve") == 0   ? imgd_cli_serve_usage()
               : strcmp(k_cmds[i].name, "pull") == 0    ? imgd_cli_pull_usage()
               : strcmp(k_cmds[i].name, "resolve") == 0 ? imgd_cli_resolve_usage()
                                                        : imgd_cli_generate_usage(),
               k_cmds[i].doc);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        cmd_help(0, NULL);
        return 2;
    }
    const char *c = argv[1];
    if (strcmp(c, "--help") == 0 || strcmp(c, "-h") == 0) return cmd_help(0, NULL);
    if (strcmp(c, "--version") == 0) return cmd_version(0, NULL);
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (strcmp(c, k_cmds[i].name) == 0) return k_cmds[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "imgd: unknown command '%s' (try imgd help)\n", c);
    return 2;
}
