/* Reference kernels for the dense, normalisation and attention ops. Double accumulation,
 * naive loops, inputs read through their strides. */
#include <math.h>

#include "tensor/ref_impl.h"

/* ---- dense ------------------------------------------------------------------------------ */

void ref_matmul(const imgd_tensor *n) {
    const imgd_tensor *a = n->src[0], *b = n->src[1], *bias = n->src[2];
    int32_t            nd = n->n_dims;
    int64_t            M = n->shape[nd - 2], N = n->shape[nd - 1], K = a->shape[a->n_dims - 1];
    int64_t            batches = imgd_tensor_numel(n) / (M * N > 0 ? M * N : 1);
    int64_t            idx[IMGD_MAX_DIMS];
    for (int64_t bt = 0; bt < batches; bt++) {
        ref_unravel(n, bt * M * N, idx);
        /* batch offsets: right-aligned broadcast over the batch dims only */
        int64_t oa = 0, ob = 0;
        for (int32_t d = 0; d < a->n_dims - 2; d++) {
            int64_t i = idx[d + nd - a->n_dims];
            oa += (a->shape[d] == 1 ? 0 : i) * a->stride[d];
        }
        for (int32_t d = 0; d < b->n_dims - 2; d++) {
            int64_t i = idx[d + nd - b->n_dims];
            ob += (b->shape[d] == 1 ? 0 : i) * b->stride[d];
        }
        int64_t sam = a->stride[a->n_dims - 2], sak = a->stride[a->n_dims - 1];
        int64_t sbk = b->stride[b->n_dims - 2], sbn = b->stride[b->n_dims - 1];
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < N; j++) {
                double acc = bias ? ref_load(bias, j * bias->stride[0]) : 0.0;
                for (int64_t k = 0; k < K; k++)
                    acc +=
                        ref_load(a, oa + m * sam + k * sak) * ref_load(b, ob + k * sbk + j * sbn);
                ref_store(n, (bt * M + m) * N + j, acc);
            }
    }
}

void ref_conv2d(const imgd_tensor *n) {
    const imgd_tensor *x = n->src[0], *w = n->src[1], *bias = n->src[2];
    int64_t            N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t            O = w->shape[0], KH = w->shape[2], KW = w->shape[3];
    int64_t            OH = n->shape[2], OW = n->shape[3];
    int64_t            sh = n->ip[0], sw = n->ip[1], ph = n->ip[2], pw = n->ip[3];
    for (int64_t b = 0; b < N; b++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    double acc = bias ? ref_load(bias, o) : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t ky = 0; ky < KH; ky++) {
                            int64_t iy = oy * sh - ph + ky;
                            if (iy < 0 || iy >= H) continue;
                            for (int64_t kx = 0; kx < KW; kx++) {
                                int64_t ix = ox * sw - pw + kx;
                                if (ix < 0 || ix >= W) continue;
                                acc += ref_load(x, ((b * C + c) * H + iy) * W + ix) *
                                       ref_load(w, ((o * C + c) * KH + ky) * KW + kx);
                            }
                        }
                    ref_store(n, ((b * O + o) * OH + oy) * OW + ox, acc);
                }
}

void ref_avg_pool2d(const imgd_tensor *n) {
    const imgd_tensor *x  = n->src[0];
    int32_t            nd = n->n_dims;
    int64_t            H = x->shape[nd - 2], W = x->shape[nd - 1];
    int64_t            OH = n->shape[nd - 2], OW = n->shape[nd - 1];
    int64_t            k = n->ip[0], s = n->ip[1], p = n->ip[2];
    int64_t            planes = imgd_tensor_numel(x) / (H * W > 0 ? H * W : 1);
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                double acc = 0;
                for (int64_t ky = 0; ky < k; ky++)
                    for (int64_t kx = 0; kx < k; kx++) {
                        int64_t iy = oy * s - p + ky, ix = ox * s - p + kx;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                            acc += ref_load(x, (pl * H + iy) * W + ix);
                    }
                ref_store(n, (pl * OH + oy) * OW + ox, acc / (double)(k * k));
            }
}

/* ---- normalisation ---------------------------------------------------------------------- */

void ref_group_norm(const imgd_tensor *n) {
    const imgd_tensor *x = n->src[0], *gamma = n->src[1], *beta = n->src[2];
    int64_t            N = x->shape[0], C = x->shape[1], G = n->ip[0];
    int64_t            S = imgd_tensor_numel(x) / (N * C > 0 ? N * C : 1), cpg = C / G;
    for (int64_t b = 0; b < N; b++)
        for (int64_t gr = 0; gr < G; gr++) {
            int64_t base = (b * C + gr * cpg) * S, cnt = cpg * S;
            double  mean = 0, var = 0;
            for (int64_t i = 0; i < cnt; i++) mean += ref_load(x, base + i);
            mean /= (double)cnt;
            for (int64_t i = 0; i < cnt; i++) {
                double d = ref_load(x, base + i) - mean;
                var += d * d;
            }
            double rstd = 1.0 / sqrt(var / (double)cnt + (double)n->fp[0]);
            for (int64_t i = 0; i < cnt; i++) {
                int64_t c = gr * cpg + i / S;
                double  y = (ref_load(x, base + i) - mean) * rstd;
                if (gamma) y *= ref_load(gamma, c);
                if (beta) y += ref_load(beta, c);
                if (n->ip[1]) y = y / (1.0 + exp(-y));
                ref_store(n, base + i, y);
            }
        }
}

void ref_layer_norm(const imgd_tensor *n) {
    const imgd_tensor *x = n->src[0], *gamma = n->src[1], *beta = n->src[2];
    int64_t            D = x->shape[x->n_dims - 1], rows = imgd_tensor_numel(x) / (D ? D : 1);
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < D; i++) mean += ref_load(x, r * D + i);
        mean /= (double)D;
        for (int64_t i = 0; i < D; i++) {
            double d = ref_load(x, r * D + i) - mean;
            var += d * d;
        }
        double rstd = 1.0 / sqrt(var / (double)D + (double)n->fp[0]);
        for (int64_t i = 0; i < D; i++) {
            double y = (ref_load(x, r * D + i) - mean) * rstd;
            if (gamma) y *= ref_load(gamma, i);
            if (beta) y += ref_load(beta, i);
            ref_store(n, r * D + i, y);
        }
    }
}

void ref_rms_norm(const imgd_tensor *n) {
    const imgd_tensor *x = n->src[0], *gamma = n->src[1];
    int64_t            D = x->shape[x->n_dims - 1], rows = imgd_tensor_numel(x) / (D ? D : 1);
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) {
            double v = ref_load(x, r * D + i);
            ss += v * v;
        }
        double rs = 1.0 / sqrt(ss / (double)D + (double)n->fp[0]);
        for (int64_t i = 0; i < D; i++) {
            double y = ref_load(x, r * D + i) * rs;
            if (gamma) y *= ref_load(gamma, i);
            ref_store(n, r * D + i, y);
        }
    }
}

void ref_softmax(const imgd_tensor *n) {
    const imgd_tensor *x = n->src[0];
    int64_t            D = x->shape[x->n_dims - 1], rows = imgd_tensor_numel(x) / (D ? D : 1);
    double             s = (double)n->fp[0];
    for (int64_t r = 0; r < rows; r++) {
        double mx = -(double)INFINITY, sum = 0;
        for (int64_t i = 0; i < D; i++) mx = fmax(mx, ref_load(x, r * D + i) * s);
        for (int64_t i = 0; i < D; i++) sum += exp(ref_load(x, r * D + i) * s - mx);
        for (int64_t i = 0; i < D; i++)
            ref_store(n, r * D + i, exp(ref_load(x, r * D + i) * s - mx) / sum);
    }
}

/* ---- attention -------------------------------------------------------------------------- */

/* Materialises one row of scores at a time (the reference may; the kernels may not). */
void ref_attention(const imgd_tensor *n) {
    const imgd_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2], *mask = n->src[3];
    int64_t            B = q->shape[0], Lq = q->shape[1], H = q->shape[2], D = q->shape[3];
    int64_t            Lk = k->shape[1], Dv = v->shape[3];
    double             scale = (double)n->fp[0];
    double             sc[4096];
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                double mx = -(double)INFINITY, sum = 0;
                IMGD_ASSERT(Lk <= 4096); /* test sizes; the reference is not for models */
                for (int64_t j = 0; j < Lk; j++) {
                    double dot = 0;
                    for (int64_t d = 0; d < D; d++)
                        dot += ref_load(q, b * q->stride[0] + i * q->stride[1] + h * q->stride[2] +
                                               d * q->stride[3]) *
                               ref_load(k, b * k->stride[0] + j * k->stride[1] + h * k->stride[2] +
                                               d * k->stride[3]);
                    dot *= scale;
                    if (mask) {
                        const int64_t idx[4] = {b, h, i, j};
                        dot += ref_load(mask, ref_bcast_offset(mask, 4, idx));
                    }
                    sc[j] = dot;
                    mx    = fmax(mx, dot);
                }
                for (int64_t j = 0; j < Lk; j++) {
                    sc[j] = exp(sc[j] - mx);
                    sum += sc[j];
                }
                for (int64_t e = 0; e < Dv; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < Lk; j++)
                        acc += sc[j] * ref_load(v, b * v->stride[0] + j * v->stride[1] +
                                                       h * v->stride[2] + e * v->stride[3]);
                    ref_store(n, ((b * Lq + i) * H + h) * Dv + e, acc / sum);
                }
            }
}
