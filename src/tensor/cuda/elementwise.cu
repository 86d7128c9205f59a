// Elementwise and embedding kernels: unary activations, GEGLU, broadcasting binary ops,
// timestep embedding, RoPE. f32 math with the accurate (non-fast-math) libdevice functions;
// the embeddings compute their angles in double like the reference.
#include "device_impl.h"

__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float unary_f(int32_t op, float x, float f0, float f1) {
    switch (op) {
    case CUK_GELU: return gelu_erf(x);
    case CUK_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case CUK_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case CUK_SILU: return x / (1.0f + expf(-x));
    case CUK_CLAMP: return fminf(fmaxf(x, f0), f1);
    default: return x * f0 + f1; /* CUK_SCALE */
    }
}

__global__ void k_unary(void *out, int32_t odt, cuk_tensor src, int32_t op, float f0, float f1,
                        int64_t n) {
    CUK_FOR(i, n) cuk_st(out, odt, i, unary_f(op, cuk_at(src, i), f0, f1));
}

extern "C" cudaError_t cuk_unary(void *out, int32_t odt, const cuk_tensor *src, int32_t op,
                                 float f0, float f1, cudaStream_t s) {
    int64_t n = cuk_numel(src);
    if (n == 0) return cudaSuccess;
    CUK_LAUNCH(k_unary, cuk_blocks(n), CUK_THREADS, 0, s)(out, odt, *src, op, f0, f1, n);
    return cudaGetLastError();
}

__global__ void k_geglu(void *out, int32_t odt, const void *src, int32_t sdt, int64_t D,
                        int64_t n) {
    CUK_FOR(i, n) {
        int64_t r = i / D, j = i % D;
        cuk_st(out, odt, i,
               cuk_ld(src, sdt, r * 2 * D + j) * gelu_erf(cuk_ld(src, sdt, r * 2 * D + D + j)));
    }
}

extern "C" cudaError_t cuk_geglu(void *out, int32_t odt, const void *src, int32_t sdt, int64_t rows,
                                 int64_t D, cudaStream_t s) {
    int64_t n = rows * D;
    if (n == 0) return cudaSuccess;
    CUK_LAUNCH(k_geglu, cuk_blocks(n), CUK_THREADS, 0, s)(out, odt, src, sdt, D, n);
    return cudaGetLastError();
}

__global__ void k_binary(void *out, int32_t odt, cuk_tensor a, cuk_tensor b, int32_t op,
                         int64_t n) {
    CUK_FOR(i, n) {
        float x = cuk_at(a, i), y = cuk_at(b, i), r;
        switch (op) {
        case CUK_ADD: r = x + y; break;
        case CUK_SUB: r = x - y; break;
        case CUK_MUL: r = x * y; break;
        default: r = x / y; break;
        }
        cuk_st(out, odt, i, r);
    }
}

extern "C" cudaError_t cuk_binary(const cuk_tensor *out, const cuk_tensor *a, const cuk_tensor *b,
                                  int32_t op, cudaStream_t s) {
    int64_t n = cuk_numel(out);
    if (n == 0) return cudaSuccess;
    CUK_LAUNCH(k_binary, cuk_blocks(n), CUK_THREADS, 0, s)
    (out->data, out->dtype, *a, *b, op, n);
    return cudaGetLastError();
}

__global__ void k_timestep(void *out, int32_t odt, cuk_tensor t, int64_t dim, int32_t flip,
                           double maxp, double shift, int64_t n) {
    CUK_FOR(i, n) {
        int64_t b = i / dim, col = i % dim, half = dim / 2;
        float   v = 0.0f;
        if (col < 2 * half) {
            int64_t k     = col < half ? col : col - half;
            bool    first = col < half; /* first half: sin, or cos when flipped */
            double  f     = exp(-log(maxp) * (double)k / ((double)half - shift));
            double  arg   = (double)cuk_at(t, b) * f;
            bool    use_s = first != (flip != 0);
            v             = (float)(use_s ? sin(arg) : cos(arg));
        }
        cuk_st(out, odt, i, v);
    }
}

extern "C" cudaError_t cuk_timestep(void *out, int32_t odt, const cuk_tensor *t, int64_t N,
                                    int64_t dim, int32_t flip, float max_period, float shift,
                                    cudaStream_t s) {
    int64_t n = N * dim;
    if (n == 0) return cudaSuccess;
    CUK_LAUNCH(k_timestep, cuk_blocks(n), CUK_THREADS, 0, s)
    (out, odt, *t, dim, flip, (double)max_period, (double)shift, n);
    return cudaGetLastError();
}

/* One thread per output element; the pair partner is read from the input. */
__global__ void k_rope(void *out, int32_t odt, cuk_tensor x, cuk_tensor pos, int32_t neox,
                       int64_t nr, cuk_rope_axes axes, double theta, int64_t n) {
    int64_t L = x.shape[1], H = x.shape[2], D = x.shape[3], half = nr / 2;
    CUK_FOR(i, n) {
        int64_t e = i % D, row = i / D; /* row = (b*L + l)*H + h */
        int64_t l    = (row / H) % L;
        int64_t base = row * D;
        if (e >= nr) {
            cuk_st(out, odt, i, cuk_at(x, i));
            continue;
        }
        int64_t k, i0, i1;
        bool    second;
        if (neox) {
            k      = e < half ? e : e - half;
            second = e >= half;
            i0     = k;
            i1     = k + half;
        } else {
            k      = e / 2;
            second = (e % 2) != 0;
            i0     = 2 * k;
            i1     = 2 * k + 1;
        }
        int64_t start = 0, j = k, d = nr;
        int32_t a = 0;
        for (; a < axes.n; a++) {
            int64_t h = axes.d[a] / 2;
            if (k < start + h) {
                j = k - start;
                d = axes.d[a];
                break;
            }
            start += h;
        }
        if (a >= axes.n) a = 0;
        double ang = (double)cuk_at(pos, l * axes.n + a) * pow(theta, -2.0 * (double)j / (double)d);
        double x0 = (double)cuk_at(x, base + i0), x1 = (double)cuk_at(x, base + i1);
        double c = cos(ang), sn = sin(ang);
        cuk_st(out, odt, i, (float)(second ? x1 * c + x0 * sn : x0 * c - x1 * sn));
    }
}

extern "C" cudaError_t cuk_rope(void *out, int32_t odt, const cuk_tensor *x, const cuk_tensor *pos,
                                int32_t neox, int64_t n_rot, const cuk_rope_axes *axes, float theta,
                                cudaStream_t s) {
    int64_t n = cuk_numel(x);
    if (n == 0) return cudaSuccess;
    if (x->n_dims != 4) return cudaErrorInvalidValue;
    CUK_LAUNCH(k_rope, cuk_blocks(n), CUK_THREADS, 0, s)
    (out, odt, *x, *pos, neox, n_rot, *axes, (double)theta, n);
    return cudaGetLastError();
}
