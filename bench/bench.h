/* Shared pieces of imgd-bench: timing, JSON-line output, the bench table. */
#ifndef IMGD_BENCH_H
#define IMGD_BENCH_H

#include <stdint.h>

#include "tensor/tensor.h"

double bench_now(void);

/* Drops a file's pages from the page cache (written back first; clean pages only), so the
 * next read comes from the disk: cold-start measurements. */
void bench_drop_page_cache(const char *path);

/* Prints {"bench":b,"metric":m,"value":v,"unit":u[,"vs":vs,"ratio":r]} on stdout. */
void bench_emit(const char *bench, const char *metric, double value, const char *unit,
                const char *vs, double ratio);

int bench_formats(int argc, char **argv);
int bench_engine(int argc, char **argv);
int bench_detect(int argc, char **argv);
int bench_sd(int argc, char **argv);
int bench_serve(int argc, char **argv);
int bench_lora(int argc, char **argv);
int bench_registry(int argc, char **argv);
int bench_deploy(int argc, char **argv);
int bench_share(int argc, char **argv);
int bench_attn(int argc, char **argv);

/* A sparse real-size SD 1.5 f16 checkpoint under dir/imgd-bench-TAG-PID (root), its file
 * in target; then bench_fill_random writes random weights into it. 0 on success. */
int bench_sd_model_write(const char *dir, const char *tag, char *root, size_t root_cap,
                         char *target, size_t target_cap);

/* Fills every float tensor of the (sparse) safetensors file at path with random values in
 * place (sd.c); 0 on success. */
int bench_fill_random(const char *path);

/* Like bench_sd_model_write for any checkpoint case of tests/detect/corpus_gen.c
 * ("ckpt_sdxl_base_sgm": SDXL base of the real size). */
int bench_model_write_case(const char *dir, const char *tag, const char *case_name, char *root,
                           size_t root_cap, char *target, size_t target_cap);

/* imgd-bench sd --family flux (flux.c): bench_sd hands it its arguments. */
int bench_sd_flux(int argc, char **argv);

/* Multiply-adds of a planned graph's executed matmuls, fused quantized linears,
 * convolutions and attentions, x2 (sd.c); 0 for NULL. */
double bench_graph_flops(const imgd_graph *g);

/* The machine's measured sgemm peak (see engine.c), GFLOP/s; 0 on failure. */
double bench_gemm_peak_gflops(uint32_t threads);

#endif
