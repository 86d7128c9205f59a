/* imgd-bench: measures what users feel; one JSON object per line. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

void bench_drop_page_cache(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    (void)fdatasync(fd);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    (void)close(fd);
}

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_emit(const char *bench, const char *metric, double value, const char *unit,
                const char *vs, double ratio) {
    printf("{\"bench\":\"%s\",\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"", bench, metric,
           value, unit);
    if (vs) printf(",\"vs\":\"%s\",\"ratio\":%.4f", vs, ratio);
    printf("}\n");
    (void)fflush(stdout); /* diagnostic output: nowhere to report a failure */
}

typedef struct bench_row {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *doc;
} bench_row;

static const bench_row k_benches[] = {
    {"formats", bench_formats,
     "open + validate + touch every tensor of a generated multi-GB safetensors file vs a plain\n"
     "      read() of it [--size-mb N (default 2048)] [--dir D] [--tensors N] [--repeat R]"},
    {"detect", bench_detect,
     "open + detect every model of the generated detection corpus (real layouts, sparse\n"
     "      real-size files) vs open alone [--repeat R (default 5)] [--dir D]"},
    {"sd", bench_sd,
     "a random-weight SD 1.5 checkpoint of the real size: load, text encoder, s per UNet\n"
     "      step at 512x512 with CFG, VAE decode, peak RSS vs weights + 1.5 GiB, UNet GFLOP/s\n"
     "      vs the GEMM peak [--steps N (2)] [--size PX (512)] [--threads N] [--tokenizer DIR]\n"
     "      [--dir D] [--keep] [--zero-weights: no random fill, same kernel times]\n"
     "      [--backend cuda: it/s, peak VRAM, UNet TFLOP/s vs cuBLASLt fp16; --offload te,vae]\n"
     "      [--family sdxl: SDXL base at 1024x1024, peak RSS vs weights + 3 GiB]\n"
     "      [--family flux: a FLUX.1-dev transformer of the real size in GGUF Q8_0 (12.7 GB,\n"
     "      streamed to --dir), random text embeddings: load, s per transformer step\n"
     "      at 512 and 1024 (--size PX: one), GFLOP/s vs the GEMM peak, peak RSS vs the file;\n"
     "      --steps N (1) --txt-len L (512) --threads N --dir D --keep; --model FILE: run an\n"
     "      existing FLUX.1-dev GGUF instead of writing one; --vae: also a random FLUX VAE\n"
     "      of the real size, one decode per size]"},
    {"attn", bench_attn,
     "attention on the shapes of SD 1.5, SDXL and FLUX.1 (chains of --chain attentions per\n"
     "      graph): TFLOP/s of each cuda kernel side by side vs the measured fp16 GEMM peak and\n"
     "      vs the first kernel [--kernels mma,wmma,gemm] [--precision f16|bf16] [--repeat N]\n"
     "      [--chain N] [--backend cpu: GFLOP/s on the CPU backend] [--quick: small shapes]"},
    {"lora", bench_lora,
     "a rank-32 kohya LoRA (every attention, feed-forward, projection and 3x3 conv of the UNet,\n"
     "      every text-encoder linear; random weights) on a random SD 1.5: time to apply (merge)\n"
     "      and remove it, and s per UNet step unmerged vs merged at a small size [--size PX\n"
     "      (128)] [--steps N (2)] [--rank R (32)] [--threads N] [--tokenizer DIR] [--dir D]"},
    {"engine", bench_engine,
     "GFLOP/s of the tensor engine's CPU backend (4096^3 sgemm, SD 1.5's 320->320 3x3 conv at\n"
     "      64x64 batch 2, attention 4096 tokens x 8 heads x 40) vs the measured oneDNN/OpenBLAS\n"
     "      sgemm peak [--quick] [--gemm N] [--conv-hw N] [--conv-batch N] [--tokens N]\n"
     "      [--heads N] [--dim N] [--repeat N] [--threads N]"},
    {"serve", bench_serve,
     "the worker in-process (imgd_server_start) with the tiny sd15-narrow model, driven over\n"
     "      HTTP by client threads: requests/s, p50/p99 latency at concurrency 1, 16, 64;\n"
     "      images/s with batch_max 4 (+50 ms wait) vs batch_max 1 [--seconds S (8 per level)]\n"
     "      [--steps N (2)] [--size PX (64)] [--threads N] [--dir SHARED]"},
    {"registry", bench_registry,
     "model registry and caches: cold start of a random SD 1.5 (f16) .ckpt (sha256 + convert\n"
     "      into the disk cache + load) vs the warm start (cache hit: map the safetensors), vs\n"
     "      loading the .ckpt directly; page cache dropped before each load; registry rescan of\n"
     "      1000 unchanged files vs the first scan [--small (the tiny sd15-narrow instead)]\n"
     "      [--files N] [--dir D] [--threads N] [--keep]"},
    {"deploy", bench_deploy,
     "start-to-ready of a one-model worker (imgd_server_start with MODEL_ID = a random SD 1.5\n"
     "      f16 .ckpt of the real size): first start (sha256 + conversion into the disk cache +\n"
     "      load) vs second (disk cache hit, page cache dropped) vs third (page cache warm)\n"
     "      [--small (the tiny sd15-narrow)] [--warmup] [--threads N] [--dir D] [--keep]"},
    {"share", bench_share,
     "components shared between models: resident memory of two random SD 1.5 (f16)\n"
     "      checkpoints with identical VAEs, loaded and run once each (64x64, 1 step), with a\n"
     "      component store vs without [--small (the tiny sd15-narrow)] [--threads N] [--dir D]\n"
     "      [--keep]"},
};

int main(int argc, char **argv) {
    if (argc >= 2) {
        for (size_t i = 0; i < sizeof k_benches / sizeof k_benches[0]; i++)
            if (strcmp(argv[1], k_benches[i].name) == 0) return k_benches[i].fn(argc - 2, argv + 2);
    }
    fprintf(stderr, "usage: imgd-bench NAME [options]\n");
    for (size_t i = 0; i < sizeof k_benches / sizeof k_benches[0]; i++)
        fprintf(stderr, "  %s\n      %s\n", k_benches[i].name, k_benches[i].doc);
    return 2;
}
