/* conv2d as im2col + one cuBLAS GEMM per image (and per chunk of output pixels when the
 * column buffer would pass IM2COL_BYTES_MAX). 1x1 convolutions with stride 1 and no padding
 * use the input as the column matrix directly. In IMGD_GPU_MATH_F16/BF16 the weights are
 * rounded into scratch and the columns are written in that type.
 *
 * Per image, row-major out[O][P] = w[O][CK] col[CK][P]; column-major that is
 * out^T (P x O, ld P) = col^T (P x CK, ld P) w^T (CK x O, ld CK). */
#include <limits.h>

#include "base/error.h"
#include "cuda_impl.h"

#define IM2COL_BYTES_MAX ((size_t)256 << 20)

typedef struct conv_geom {
    int64_t N, C, H, W, O, KH, KW, OH, OW, P, CK, chunk;
    int64_t sh, sw, ph, pw;
    bool    direct; /* 1x1, stride 1, no padding: the input is its own column matrix */
} conv_geom;

static void conv_geometry(const imgd_tensor *n, size_t es, conv_geom *g) {
    const imgd_tensor *x = n->src[0], *w = n->src[1];
    g->N        = x->shape[0];
    g->C        = x->shape[1];
    g->H        = x->shape[2];
    g->W        = x->shape[3];
    g->O        = w->shape[0];
    g->KH       = w->shape[2];
    g->KW       = w->shape[3];
    g->OH       = n->shape[2];
    g->OW       = n->shape[3];
    g->sh       = n->ip[0];
    g->sw       = n->ip[1];
    g->ph       = n->ip[2];
    g->pw       = n->ip[3];
    g->P        = g->OH * g->OW;
    g->CK       = g->C * g->KH * g->KW;
    g->direct   = g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
    int64_t cap = (int64_t)(IM2COL_BYTES_MAX / es) / (g->CK ? g->CK : 1);
    g->chunk    = g->P < cap ? g->P : (cap > 0 ? cap : 1);
}

bool cuda_conv2d_supported(const imgd_tensor *n) {
    conv_geom g;
    for (int i = 0; i < 3; i++) {
        const imgd_tensor *s = n->src[i];
        if (i < 2 && !s) return false;
        if (s && (s->dtype != IMGD_DTYPE_F32 || !imgd_tensor_is_contiguous(s))) return false;
    }
    if (n->n_dims != 4 || n->src[0]->n_dims != 4 || n->src[1]->n_dims != 4) return false;
    conv_geometry(n, 4, &g);
    return g.P <= INT_MAX && g.CK <= INT_MAX && g.O <= INT_MAX && g.H * g.W <= INT_MAX;
}

/* Scratch: [weights in the GEMM type, when not f32][columns, or the whole input for a direct
 * conv in the GEMM type]. */
static size_t weights_bytes(const cuda_backend *cb, const conv_geom *g) {
    return cuda_math_low(cb) ? cuda_align_up((size_t)(g->O * g->CK) * cuda_math_size(cb)) : 0;
}

void cuda_conv2d_prepare(cuda_backend *cb, imgd_tensor *n) {
    conv_geom g;
    size_t    es = cuda_math_size(cb);
    conv_geometry(n, es, &g);
    size_t cols      = g.direct ? (cuda_math_low(cb) ? (size_t)(g.N * g.C * g.H * g.W) * es : 0)
                                : (size_t)(g.CK * g.chunk) * es;
    n->scratch_bytes = weights_bytes(cb, &g) + cols;
}

imgd_status cuda_conv2d(cuda_backend *cb, const imgd_tensor *n, const char *what) {
    conv_geom g;
    size_t    es = cuda_math_size(cb);
    conv_geometry(n, es, &g);
    if (g.N * g.O * g.P == 0) return IMGD_OK;
    float       beta = 0.0f;
    imgd_status st   = cuda_gemm_out_init(cb, n, g.P, g.O, what, &beta);
    if (st != IMGD_OK) return st;
    if (g.CK == 0) {
        if (!n->src[2])
            CUDA_TRY(cudaMemsetAsync(n->data, 0, imgd_tensor_nbytes(n), cb->stream), what);
        return IMGD_OK;
    }
    unsigned char       *scratch = n->scratch;
    const unsigned char *x = cuda_dptr(n->src[0]), *w = cuda_dptr(n->src[1]);
    unsigned char       *col = scratch ? scratch + weights_bytes(cb, &g) : NULL;
    float               *out = n->data;
    if (cuda_math_low(cb)) {
        st = cuda_to_math(cb, n->src[1], scratch, what);
        w  = scratch;
        if (st == IMGD_OK && g.direct) {
            st = cuda_to_math(cb, n->src[0], col, what);
            x  = col;
        }
        if (st != IMGD_OK) return st;
    }
    size_t x_es = cuda_math_low(cb) && g.direct ? es : sizeof(float); /* x converted or not */
    for (int64_t b = 0; b < g.N; b++) {
        const unsigned char *xb = x + (size_t)(b * g.C * g.H * g.W) * x_es;
        float               *ob = out + b * g.O * g.P;
        if (g.direct) { /* out_b^T (P x O) = x_b^T (P x C) w^T (C x O) */
            st = cuda_gemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, g.P, g.O, g.C, xb, g.P, 0, w, g.C, 0, beta,
                           ob, g.P, 0, 1, what);
            if (st != IMGD_OK) return st;
            continue;
        }
        for (int64_t p0 = 0; p0 < g.P; p0 += g.chunk) {
            int64_t     pc = g.P - p0 < g.chunk ? g.P - p0 : g.chunk;
            cudaError_t e =
                cuk_im2col(col, cuda_math_cuk(cb), (const float *)(const void *)xb, g.C, g.H, g.W,
                           g.KH, g.KW, g.sh, g.sw, g.ph, g.pw, g.OW, p0, pc, cb->stream);
            if (e != cudaSuccess) return cuda_fail(e, "cuk_im2col", what);
            /* out_b[:, p0:p0+pc]^T (pc x O, ld P) = col^T (pc x CK) w^T (CK x O) */
            st = cuda_gemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, pc, g.O, g.CK, col, pc, 0, w, g.CK, 0,
                           beta, ob + p0, g.P, 0, 1, what);
            if (st != IMGD_OK) return st;
        }
    }
    return IMGD_OK;
}
