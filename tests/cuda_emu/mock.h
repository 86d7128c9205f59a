/* Shared by the host stand-ins of the emulated cuda build (mock_runtime.c, mock_cudnn.c). */
#ifndef IMGD_TESTS_CUDA_EMU_MOCK_H
#define IMGD_TESTS_CUDA_EMU_MOCK_H

#include <library_types.h>
#include <stdint.h>

/* Element i of p (f32, f16 or bf16 as t) as f32, and stored back rounded to t. */
float mock_ld(const void *p, cudaDataType_t t, int64_t i);
void  mock_st(void *p, cudaDataType_t t, int64_t i, float v);
/* Moves the clock events read (mock_runtime.c) ms ahead of the host's: a stand-in made slow
 * on purpose takes that long as the backend times it, however fast the host ran it. */
void mock_clock_advance(double ms);

#endif
