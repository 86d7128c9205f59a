/* CPU normalisation kernels: group norm (+ SiLU), layer norm, RMS norm, softmax.
 *
 * Sums run in float over blocks of 1024 elements with 16 independent lanes (vectorises
 * without reassociation flags) and the block sums are added in double, so statistics of
 * million-element groups keep ~1e-7 relative accuracy. Variance is two-pass. */
#include <math.h>

#include "cpu_impl.h"

#define SUM_BLOCK 1024
#define LANES     16

/* ---- reductions --------------------------------------------------------------------------- */

CPU_CLONES static double sum_f(const float *restrict x, size_t n) {
    double total = 0.0;
    for (size_t b = 0; b < n; b += SUM_BLOCK) {
        size_t m = IMGD_MIN((size_t)SUM_BLOCK, n - b), i = 0;
        float  acc[LANES] = {0};
        for (; i + LANES <= m; i += LANES)
            for (size_t l = 0; l < LANES; l++) acc[l] += x[b + i + l];
        float s = 0.0f;
        for (; i < m; i++) s += x[b + i];
        for (size_t l = 0; l < LANES; l++) s += acc[l];
        total += (double)s;
    }
    return total;
}

/* Sum of (x - mean)^2. */
CPU_CLONES static double sumsq_dev(const float *restrict x, size_t n, float mean) {
    double total = 0.0;
    for (size_t b = 0; b < n; b += SUM_BLOCK) {
        size_t m = IMGD_MIN((size_t)SUM_BLOCK, n - b), i = 0;
        float  acc[LANES] = {0};
        for (; i + LANES <= m; i += LANES)
            for (size_t l = 0; l < LANES; l++) {
                float d = x[b + i + l] - mean;
                acc[l] += d * d;
            }
        float s = 0.0f;
        for (; i < m; i++) s += (x[b + i] - mean) * (x[b + i] - mean);
        for (size_t l = 0; l < LANES; l++) s += acc[l];
        total += (double)s;
    }
    return total;
}

CPU_CLONES static float max_f(const float *restrict x, size_t n) {
    float acc[LANES];
    for (size_t l = 0; l < LANES; l++) acc[l] = -INFINITY;
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (size_t l = 0; l < LANES; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
    float m = -INFINITY;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (size_t l = 0; l < LANES; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

/* y = x * a + b, optionally followed by SiLU. */
CPU_CLONES static void affine(const float *restrict x, float *restrict y, size_t n, float a,
                              float b, bool silu) {
    if (silu)
        for (size_t i = 0; i < n; i++) {
            float v = x[i] * a + b;
            y[i]    = v * cpu_sigmoid(v);
        }
    else
        for (size_t i = 0; i < n; i++) y[i] = x[i] * a + b;
}

/* y = (x - mean) * rstd * gamma + beta over a row. */
CPU_CLONES static void affine_row(const float *restrict x, float *restrict y, size_t n, float mean,
                                  float rstd, const float *restrict gamma,
                                  const float *restrict beta) {
    if (gamma && beta)
        for (size_t i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
    else if (gamma)
        for (size_t i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * gamma[i];
    else if (beta)
        for (size_t i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd + beta[i];
    else
        for (size_t i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd;
}

/* ---- group norm ---------------------------------------------------------------------------- */

typedef struct norm_ctx {
    const imgd_tensor *n;
    size_t             rows, D; /* layer/rms/softmax: rows of D */
    size_t             S, cpg;  /* group norm: spatial size, channels per group */
} norm_ctx;

/* One task per (sample, group). */
static void group_norm_task(void *p, size_t b, size_t e) {
    const norm_ctx    *c     = p;
    const imgd_tensor *n     = c->n;
    const float       *gamma = n->src[1] ? n->src[1]->data : NULL;
    const float       *beta  = n->src[2] ? n->src[2]->data : NULL;
    size_t             G = (size_t)n->ip[0], cnt = c->cpg * c->S;
    for (size_t t = b; t < e; t++) {
        size_t       gi   = t % G;
        const float *x    = (const float *)n->src[0]->data + t * cnt;
        float       *y    = (float *)n->data + t * cnt;
        double       mean = sum_f(x, cnt) / (double)cnt;
        double       var  = sumsq_dev(x, cnt, (float)mean) / (double)cnt;
        float        rstd = (float)(1.0 / sqrt(var + (double)n->fp[0]));
        for (size_t ch = 0; ch < c->cpg; ch++) {
            size_t cc = gi * c->cpg + ch;
            float  a  = rstd * (gamma ? gamma[cc] : 1.0f);
            float  bb = (beta ? beta[cc] : 0.0f) - (float)mean * a;
            affine(x + ch * c->S, y + ch * c->S, c->S, a, bb, n->ip[1] != 0);
        }
    }
}

imgd_status cpu_group_norm(cpu_backend *cb, const imgd_tensor *n) {
    size_t   N = (size_t)n->shape[0], C = (size_t)n->shape[1], G = (size_t)n->ip[0];
    size_t   numel = (size_t)imgd_tensor_numel(n);
    norm_ctx c     = {n, 0, 0, N * C > 0 ? numel / (N * C) : 0, C / G};
    if (numel == 0) return IMGD_OK;
    cpu_parallel(cb, N * G, c.cpg * c.S * 4, group_norm_task, &c);
    return IMGD_OK;
}

/* ---- layer norm, RMS norm --------------------------------------------------------------- */

static void layer_norm_task(void *p, size_t b, size_t e) {
    const norm_ctx    *c     = p;
    const imgd_tensor *n     = c->n;
    const float       *gamma = n->src[1] ? n->src[1]->data : NULL;
    const float       *beta  = n->src[2] ? n->src[2]->data : NULL;
    for (size_t r = b; r < e; r++) {
        const float *x    = (const float *)n->src[0]->data + r * c->D;
        float       *y    = (float *)n->data + r * c->D;
        double       mean = sum_f(x, c->D) / (double)c->D;
        double       var  = sumsq_dev(x, c->D, (float)mean) / (double)c->D;
        affine_row(x, y, c->D, (float)mean, (float)(1.0 / sqrt(var + (double)n->fp[0])), gamma,
                   beta);
    }
}

imgd_status cpu_layer_norm(cpu_backend *cb, const imgd_tensor *n) {
    size_t   D = (size_t)n->shape[n->n_dims - 1];
    norm_ctx c = {n, D ? (size_t)imgd_tensor_numel(n) / D : 0, D, 0, 0};
    cpu_parallel(cb, c.rows, D * 4, layer_norm_task, &c);
    return IMGD_OK;
}

static void rms_norm_task(void *p, size_t b, size_t e) {
    const norm_ctx    *c     = p;
    const imgd_tensor *n     = c->n;
    const float       *gamma = n->src[1] ? n->src[1]->data : NULL;
    for (size_t r = b; r < e; r++) {
        const float *x  = (const float *)n->src[0]->data + r * c->D;
        float       *y  = (float *)n->data + r * c->D;
        double       ss = sumsq_dev(x, c->D, 0.0f) / (double)c->D;
        affine_row(x, y, c->D, 0.0f, (float)(1.0 / sqrt(ss + (double)n->fp[0])), gamma, NULL);
    }
}

imgd_status cpu_rms_norm(cpu_backend *cb, const imgd_tensor *n) {
    size_t   D = (size_t)n->shape[n->n_dims - 1];
    norm_ctx c = {n, D ? (size_t)imgd_tensor_numel(n) / D : 0, D, 0, 0};
    cpu_parallel(cb, c.rows, D * 3, rms_norm_task, &c);
    return IMGD_OK;
}

/* ---- softmax -------------------------------------------------------------------------------- */

/* y = exp(s*x - max) in place, returns the sum. */
CPU_CLONES static float exp_shift(const float *restrict x, float *restrict y, size_t n, float s,
                                  float mx) {
    for (size_t i = 0; i < n; i++) y[i] = cpu_expf(x[i] * s - mx);
    return (float)sum_f(y, n);
}

CPU_CLONES static void scale_row(float *restrict y, size_t n, float k) {
    for (size_t i = 0; i < n; i++) y[i] *= k;
}

static void softmax_task(void *p, size_t b, size_t e) {
    const norm_ctx    *c = p;
    const imgd_tensor *n = c->n;
    float              s = n->fp[0];
    for (size_t r = b; r < e; r++) {
        const float *x = (const float *)n->src[0]->data + r * c->D;
        float       *y = (float *)n->data + r * c->D;
        float        mx;
        if (s >= 0.0f) {
            mx = max_f(x, c->D) * s;
        } else { /* a negative scale makes the smallest input the largest logit */
            mx = INFINITY;
            for (size_t i = 0; i < c->D; i++) mx = x[i] < mx ? x[i] : mx;
            mx *= s;
        }
        float sum = exp_shift(x, y, c->D, s, mx);
        scale_row(y, c->D, 1.0f / sum);
    }
}

imgd_status cpu_softmax(cpu_backend *cb, const imgd_tensor *n) {
    size_t   D = (size_t)n->shape[n->n_dims - 1];
    norm_ctx c = {n, D ? (size_t)imgd_tensor_numel(n) / D : 0, D, 0, 0};
    cpu_parallel(cb, c.rows, D * 12, softmax_task, &c);
    return IMGD_OK;
}
