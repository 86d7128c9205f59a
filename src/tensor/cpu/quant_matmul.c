/* CPU linear_quant: y [M, N] = x [M, K] w [N, K]^T + bias with w in ggml blocks. The weight
 * is expanded tile by tile (TILE_FLOATS values of whole rows at a time, in parallel, into the
 * node's scratch) and each tile is one oneDNN sgemm over all M rows into the matching
 * columns of y, so the f32 copy of a weight never exceeds one tile and the GEMM keeps its
 * full speed for large M. f32 accumulation throughout. (OpenBLAS's sgemm measured 2-5x
 * slower than oneDNN's on the shared machines: imgd-bench engine.) */
#include <string.h>

#include "base/error.h"
#include "cpu_impl.h"
#include "formats/dtype.h"
#include "formats/quant.h"

#define TILE_FLOATS (1u << 22) /* 16 MiB of f32 weight rows per tile */

static int64_t tile_rows(const imgd_tensor *n) {
    int64_t N = n->src[1]->shape[0], K = n->src[1]->shape[1];
    int64_t t = K > 0 ? (int64_t)TILE_FLOATS / K : N;
    if (t < 16) t = 16;
    return t < N ? t : N;
}

imgd_status cpu_linear_quant_prepare(cpu_backend *cb, imgd_tensor *n) {
    IMGD_UNUSED(cb);
    n->scratch_bytes = (size_t)tile_rows(n) * (size_t)n->src[1]->shape[1] * sizeof(float);
    return IMGD_OK;
}

typedef struct lq_ctx {
    const unsigned char *w;   /* first block of the tile */
    float               *dst; /* tile rows, K floats each */
    imgd_dtype           dtype;
    size_t               row_bytes;
    int64_t              K;
    imgd_status          st;
} lq_ctx;

static void lq_rows(void *p, size_t b, size_t e) {
    lq_ctx     *c  = p;
    uint64_t    nb = (uint64_t)c->K / imgd_dtype_traits_of(c->dtype)->block_elems;
    imgd_status st = imgd_quant_dequantize(c->dtype, c->w + b * c->row_bytes, nb * (e - b),
                                           c->dst + (int64_t)b * c->K);
    if (st != IMGD_OK) c->st = st;
}

imgd_status cpu_linear_quant(cpu_backend *cb, const imgd_tensor *n) {
    const imgd_tensor       *x = n->src[0], *w = n->src[1], *bias = n->src[2];
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(w->dtype);
    int64_t                  N = w->shape[0], K = w->shape[1], M = K ? imgd_tensor_numel(x) / K : 0;
    float                   *y = n->data;
    if (M == 0 || N == 0) return IMGD_OK;
    if (bias)
        for (int64_t m = 0; m < M; m++) memcpy(y + m * N, bias->data, (size_t)N * sizeof *y);
    else
        memset(y, 0, (size_t)(M * N) * sizeof *y);
    int64_t T = tile_rows(n);
    lq_ctx  c = {NULL, n->scratch, w->dtype, (size_t)(K / tr->block_elems) * tr->block_bytes,
                 K,    IMGD_OK};
    for (int64_t n0 = 0; n0 < N && c.st == IMGD_OK; n0 += T) {
        int64_t t = N - n0 < T ? N - n0 : T;
        c.w       = (const unsigned char *)w->data + (size_t)n0 * c.row_bytes;
        cpu_parallel(cb, (size_t)t, (size_t)K * 4, lq_rows, &c);
        if (c.st != IMGD_OK) break;
        dnnl_status_t s =
            dnnl_sgemm('N', 'T', M, t, K, 1.0f, x->data, K, c.dst, K, 1.0f, y + n0, N);
        if (s != dnnl_success) return cpu_dnnl_fail(s, "linear_quant sgemm");
    }
    return c.st == IMGD_OK
               ? IMGD_OK
               : imgd_fail(c.st, "linear_quant: dequantizing %s failed", imgd_dtype_name(w->dtype));
}
