/* The CUDA kernels' launchers (*.cu), called by the C host code of the backend. Plain C
 * types only, so both C and CUDA C++ include it. Every launcher returns the cudaError_t of
 * the launch (cudaGetLastError), or cudaSuccess without launching when there is no work;
 * it never synchronises. Tensors are described by cuk_tensor: data is a device pointer to
 * the first element, strides count elements. */
#ifndef IMGD_TENSOR_CUDA_KERNELS_H
#define IMGD_TENSOR_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUK_MAX_DIMS 8

typedef enum cuk_dtype {
    CUK_F32  = 0,
    CUK_F16  = 1,
    CUK_BF16 = 2
} cuk_dtype;

typedef struct cuk_tensor {
    void   *data;
    int32_t dtype; /* cuk_dtype */
    int32_t n_dims;
    int32_t contiguous; /* row-major contiguous: element i is at data[i] */
    int32_t pad_;
    int64_t shape[CUK_MAX_DIMS];
    int64_t stride[CUK_MAX_DIMS];
} cuk_tensor;

/* Elementwise op codes (cuk_unary, cuk_binary). */
enum {
    CUK_GELU       = 0,
    CUK_GELU_TANH  = 1,
    CUK_QUICK_GELU = 2,
    CUK_SILU       = 3,
    CUK_CLAMP      = 4,
    CUK_SCALE      = 5,
    CUK_ADD        = 10,
    CUK_SUB        = 11,
    CUK_MUL        = 12,
    CUK_DIV        = 13,
};

/* ---- layout.cu ---------------------------------------------------------------------------- */

/* out (contiguous, its dtype) = src (src's shape and strides, any of the three dtypes). */
cudaError_t cuk_copy(const cuk_tensor *out, const cuk_tensor *src, cudaStream_t s);
/* Concatenation of srcs[0..n) (n <= 4, strided, dtype of out) along axis into out. */
cudaError_t cuk_concat(const cuk_tensor *out, const cuk_tensor *srcs, int32_t n, int32_t axis,
                       cudaStream_t s);
/* Constant padding: before[d] elements before each dim d of out; value outside src. */
cudaError_t cuk_pad(const cuk_tensor *out, const cuk_tensor *src, const int64_t *before,
                    float value, cudaStream_t s);
/* Nearest x2 on the last two dims. */
cudaError_t cuk_upsample2x(const cuk_tensor *out, const cuk_tensor *src, cudaStream_t s);
/* Average pooling on the last two dims of contiguous src [planes, H, W] (sdt) into out
 * [planes, OH, OW] (odt), divisor k*k (padding counted). */
cudaError_t cuk_avg_pool2d(void *out, int32_t odt, const void *src, int32_t sdt, int64_t planes,
                           int64_t H, int64_t W, int64_t OH, int64_t OW, int32_t k, int32_t stride,
                           int32_t pad, cudaStream_t s);
/* col[(c*KH + ky)*KW + kx][p - p0] (col_dtype, a cuk_dtype) for output pixels p in
 * [p0, p0 + pc) of one image x [C, H, W] (contiguous, xdt); zero where the window falls in the
 * padding. */
cudaError_t cuk_im2col(void *col, int32_t col_dtype, const void *x, int32_t xdt, int64_t C,
                       int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                       int64_t ph, int64_t pw, int64_t OW, int64_t p0, int64_t pc, cudaStream_t s);

/* ---- elementwise.cu ----------------------------------------------------------------------- */

/* Outputs below are contiguous in their dtype odt (a cuk_dtype); raw inputs carry theirs.
 * Arithmetic is f32 whatever the storage. */
/* out = f(src) with f one of CUK_GELU..CUK_SCALE; f0/f1: clamp lo/hi or scale s/b. */
cudaError_t cuk_unary(void *out, int32_t odt, const cuk_tensor *src, int32_t op, float f0, float f1,
                      cudaStream_t s);
/* out [rows, D] = a * gelu(b) for src rows [a (D), b (D)] (contiguous, sdt). */
cudaError_t cuk_geglu(void *out, int32_t odt, const void *src, int32_t sdt, int64_t rows, int64_t D,
                      cudaStream_t s);
/* out (contiguous, out->dtype, shape of out) = a op b; a and b carry out's shape with
 * broadcast strides (0 where they broadcast). Operands whose broadcast is a run of whole
 * dims (cuk_operand_of) take the flat kernel of cuk_ewise. */
cudaError_t cuk_binary(const cuk_tensor *out, const cuk_tensor *a, const cuk_tensor *b, int32_t op,
                       cudaStream_t s);
/* A flat operand of cuk_ewise: element i of the output reads data[(i / inner) % n] (dtype);
 * a full tensor has inner 1 and n = total, a per-channel bias of NCHW inner = H*W and n = C,
 * a per-(image, channel) value [N, C, 1, 1] inner = H*W and n = N*C. data NULL reads 0. */
typedef struct cuk_operand {
    const void *data;
    int32_t     dtype;
    int32_t     pad_;
    int64_t     inner, n;
} cuk_operand;

/* Whether t (out's shape, broadcast strides) is such an operand: its dims that are neither
 * broadcast nor 1 form one row-major contiguous run. */
int cuk_operand_of(const cuk_tensor *t, cuk_operand *o);
/* out[i] (odt) = (a op b) + c for i < total, op CUK_ADD..CUK_DIV; NULL operands (or NULL
 * data) read -0.0, so with op CUK_ADD a missing one changes nothing (out = a is an exact
 * cast). Vectorised (CUK_VEC elements per thread) where every operand allows it. */
cudaError_t cuk_ewise(void *out, int32_t odt, int64_t total, int32_t op, const cuk_operand *a,
                      const cuk_operand *b, const cuk_operand *c, cudaStream_t s);
/* A batched transpose with cuk_ewise's epilogue: out[z][c][r] (odt) = src[z][r][c] + b + c_op
 * for src [Z, R, Cn] contiguous (sdt), the operands read at the output's flat index
 * ((z * Cn + c) * R + r); NULL operands make it a plain transposing cast. conv2d moves
 * activations between NCHW and cuDNN's NHWC with it (bias and residual added on the way
 * back). */
cudaError_t cuk_transpose_ewise(void *out, int32_t odt, const void *src, int32_t sdt, int64_t Z,
                                int64_t R, int64_t Cn, const cuk_operand *b, const cuk_operand *c,
                                cudaStream_t s);
/* diffusers get_timestep_embedding: t (N values, strided by t_stride) -> out [N, dim]. */
cudaError_t cuk_timestep(void *out, int32_t odt, const cuk_tensor *t, int64_t N, int64_t dim,
                         int32_t flip, float max_period, float shift, cudaStream_t s);
/* Axis dims of a multi-axis rope (tensor/ops.h imgd_op_rope_nd); n = 1, d[0] = n_rot for a
 * plain rope. */
#define CUK_ROPE_AXES_MAX 8
typedef struct cuk_rope_axes {
    int32_t n;
    int32_t d[CUK_ROPE_AXES_MAX];
} cuk_rope_axes;

/* Rotary embedding of x [B, L, H, D] (strided) at pos [L, axes.n] into contiguous out. */
cudaError_t cuk_rope(void *out, int32_t odt, const cuk_tensor *x, const cuk_tensor *pos,
                     int32_t neox, int64_t n_rot, const cuk_rope_axes *axes, float theta,
                     cudaStream_t s);

/* ---- norm.cu ------------------------------------------------------------------------------ */

/* x [N, C, S] contiguous (xdt) into out (odt): [N, C, S], or [N, S, C] with out_nhwc (a cuDNN
 * convolution's NHWC input, written transposed instead of transposed again by the convolution);
 * gamma/beta [C] f32 or NULL; scratch: device memory of cuk_group_norm_scratch(N, C, S, G) bytes
 * for the per-chunk partial sums and the per-group statistics. */
cudaError_t cuk_group_norm(void *out, int32_t odt, const void *x, int32_t xdt, const float *gamma,
                           const float *beta, int64_t N, int64_t C, int64_t S, int64_t G, float eps,
                           int32_t silu, int32_t out_nhwc, double *scratch, cudaStream_t s);
size_t      cuk_group_norm_scratch(int64_t N, int64_t C, int64_t S, int64_t G);
/* Row ops on x [rows, D] contiguous (xdt) into out (odt); gamma/beta f32 or NULL. */
cudaError_t cuk_layer_norm(void *out, int32_t odt, const void *x, int32_t xdt, const float *gamma,
                           const float *beta, int64_t rows, int64_t D, float eps, cudaStream_t s);
cudaError_t cuk_rms_norm(void *out, int32_t odt, const void *x, int32_t xdt, const float *gamma,
                         int64_t rows, int64_t D, float eps, cudaStream_t s);
cudaError_t cuk_softmax(void *out, int32_t odt, const void *x, int32_t xdt, int64_t rows, int64_t D,
                        float scale, cudaStream_t s);
/* Attention probabilities for a chunk of scores: S [hc, qc, Lk] (contiguous, s_dtype, already
 * scaled) of batch b, heads h0.., query rows i0..; row (hl, il) adds
 * mask[b*ms[0] + (h0+hl)*ms[1] + (i0+il)*ms[2] + j*ms[3]] (mask f32 or NULL) and writes
 * softmax over j to P [hc, qc, Lk] (p_dtype, contiguous; P may be S when the dtypes are the
 * same). A row whose scores are all -inf gets zeros (as the flash kernel's output). */
cudaError_t cuk_attn_softmax(void *P, int32_t p_dtype, const void *S, int32_t s_dtype, int64_t hc,
                             int64_t qc, int64_t Lk, const float *mask, const int64_t *ms,
                             int64_t b, int64_t h0, int64_t i0, cudaStream_t s);

/* ---- attention.cu ------------------------------------------------------------------------- */

/* Head dims (D and Dv) the kernel handles; above 128 it needs more than 48 KiB of shared
 * memory per block (sm_80+; the SD VAE's single 512-wide head needs ~160 KiB). */
#define CUK_ATTN_D_MAX 512

/* q [B, Lq, H, D], k [B, Lk, H, D], v [B, Lk, H, Dv] strided; mask f32 or NULL with
 * element strides mstride[4] over (b, h, i, j), 0 where it broadcasts; out [B, Lq, H, Dv]
 * contiguous (odt). */
cudaError_t cuk_attention(void *out, int32_t odt, const cuk_tensor *q, const cuk_tensor *k,
                          const cuk_tensor *v, const float *mask, const int64_t *mstride,
                          float scale, cudaStream_t s);

/* ---- attention_wmma.cu -------------------------------------------------------------------- */

/* Head dims the tensor-core kernel handles (padded to 32, 48, 64, 80, 96, 128 or 160). */
#define CUK_ATTN_WMMA_D_MAX 160

/* Flash attention on tensor cores: q [B, Lq, H, D], k [B, Lk, H, D], v [B, Lk, H, D] (any of
 * the three dtypes, strided) rounded to math (CUK_F16 or CUK_BF16) in shared memory, f32
 * accumulation and softmax; mask as cuk_attention's; out [B, Lq, H, D] contiguous (odt). */
cudaError_t cuk_attention_wmma(void *out, int32_t odt, const cuk_tensor *q, const cuk_tensor *k,
                               const cuk_tensor *v, const float *mask, const int64_t *mstride,
                               float scale, int32_t math, cudaStream_t s);

/* ---- attention_mma.cu --------------------------------------------------------------------- */

/* cuk_attention_wmma's contract, FA2-style on the mma.sync / ldmatrix / cp.async instructions
 * of compute capability 8.0 and later (the caller checks the device). mtiles: 16-row query
 * tiles per warp, 1 or 2, or 0 for the kernel's choice per head dim. */
cudaError_t cuk_attention_mma(void *out, int32_t odt, const cuk_tensor *q, const cuk_tensor *k,
                              const cuk_tensor *v, const float *mask, const int64_t *mstride,
                              float scale, int32_t math, int32_t mtiles, cudaStream_t s);

/* ---- quant.cu ----------------------------------------------------------------------------- */

/* ggml block types the device expands (formats/quant_blocks.h). */
enum {
    CUK_Q4_0 = 0,
    CUK_Q4_1 = 1,
    CUK_Q5_0 = 2,
    CUK_Q5_1 = 3,
    CUK_Q8_0 = 4,
    CUK_Q8_1 = 5,
    CUK_Q2_K = 6,
    CUK_Q3_K = 7,
    CUK_Q4_K = 8,
    CUK_Q5_K = 9,
    CUK_Q6_K = 10,
};

/* out (contiguous, odt) = the n_blocks consecutive blocks of type qtype at src expanded (32
 * or 256 values each, in order). */
cudaError_t cuk_dequant(void *out, int32_t odt, const void *src, int32_t qtype, int64_t n_blocks,
                        cudaStream_t s);

/* Rows of x the product below takes at most. */
#define CUK_LQ_ROWS 4

/* y [M, N] (contiguous, ydt) = x [M, K] (contiguous, xdt) times the transpose of the weight
 * w [N, K] read in its blocks (rows of K / 32 consecutive blocks of a 32-value type: Q4_0..
 * Q8_1), + bias [N] (bdt; NULL: none), accumulated in f32, for 1 <= M <= CUK_LQ_ROWS: the
 * weight is read once, without an expanded copy. cudaErrorInvalidValue for other types,
 * M or K (K a multiple of 32). */
cudaError_t cuk_linear_quant_rows(void *y, int32_t ydt, const void *x, int32_t xdt, const void *w,
                                  int32_t qtype, const void *bias, int32_t bdt, int32_t M,
                                  int32_t N, int32_t K, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
