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

/* Whether a flat op over n elements of contiguous data ptrs can take CUK_VEC per thread. */
static bool vec_all(int64_t n, const void *p, const void *q) {
    return n % CUK_VEC == 0 && cuk_vec_ok(p) && cuk_vec_ok(q);
}

template <class I>
__global__ void k_unary(void *out, int32_t odt, cuk_tensor src, int32_t op, float f0, float f1,
                        I n) {
    CUK_FOR_I(I, i, n) cuk_st(out, odt, i, unary_f(op, cuk_at(src, (int64_t)i), f0, f1));
}

template <class I>
__global__ void k_unary8(void *out, int32_t odt, const void *src, int32_t sdt, int32_t op, float f0,
                         float f1, I groups) {
    CUK_FOR_I(I, g, groups) {
        float v[CUK_VEC];
        cuk_ld8(src, sdt, (int64_t)g * CUK_VEC, v);
        for (int k = 0; k < CUK_VEC; k++) v[k] = unary_f(op, v[k], f0, f1);
        cuk_st8(out, odt, (int64_t)g * CUK_VEC, v);
    }
}

extern "C" cudaError_t cuk_unary(void *out, int32_t odt, const cuk_tensor *src, int32_t op,
                                 float f0, float f1, cudaStream_t s) {
    int64_t n = cuk_numel(src);
    if (n == 0) return cudaSuccess;
    if (src->contiguous && vec_all(n, out, src->data))
        CUK_LAUNCH_I(cuk_idx32(n), k_unary8, n / CUK_VEC, s, out, odt, src->data, src->dtype, op,
                     f0, f1);
    else
        CUK_LAUNCH_I(cuk_idx32(n), k_unary, n, s, out, odt, *src, op, f0, f1);
    return cudaGetLastError();
}

template <class I>
__global__ void k_geglu(void *out, int32_t odt, const void *src, int32_t sdt, int64_t D64, I n) {
    const I D = (I)D64;
    CUK_FOR_I(I, i, n) {
        I r = i / D, j = i - r * D;
        cuk_st(out, odt, i,
               cuk_ld(src, sdt, (int64_t)r * 2 * D + j) *
                   gelu_erf(cuk_ld(src, sdt, (int64_t)r * 2 * D + D + j)));
    }
}

/* D a multiple of CUK_VEC: groups of CUK_VEC outputs within a row. */
template <class I>
__global__ void k_geglu8(void *out, int32_t odt, const void *src, int32_t sdt, int64_t D64,
                         I groups) {
    const I D = (I)D64, gd = D / CUK_VEC;
    CUK_FOR_I(I, g, groups) {
        I       r = g / gd, j = (g - r * gd) * CUK_VEC;
        int64_t a = (int64_t)r * 2 * D + j;
        float   x[CUK_VEC], y[CUK_VEC];
        cuk_ld8(src, sdt, a, x);
        cuk_ld8(src, sdt, a + D, y);
        for (int k = 0; k < CUK_VEC; k++) x[k] *= gelu_erf(y[k]);
        cuk_st8(out, odt, (int64_t)g * CUK_VEC, x);
    }
}

extern "C" cudaError_t cuk_geglu(void *out, int32_t odt, const void *src, int32_t sdt, int64_t rows,
                                 int64_t D, cudaStream_t s) {
    int64_t n = rows * D;
    if (n == 0) return cudaSuccess;
    if (D % CUK_VEC == 0 && vec_all(n, out, src))
        CUK_LAUNCH_I(cuk_idx32(2 * n), k_geglu8, n / CUK_VEC, s, out, odt, src, sdt, D);
    else
        CUK_LAUNCH_I(cuk_idx32(2 * n), k_geglu, n, s, out, odt, src, sdt, D);
    return cudaGetLastError();
}

/* ---- flat elementwise: out = (a op b) + c over cuk_operands ------------------------------- */

__device__ __forceinline__ float binary_f(int32_t op, float x, float y) {
    switch (op) {
    case CUK_ADD: return x + y;
    case CUK_SUB: return x - y;
    case CUK_MUL: return x * y;
    default: return x / y;
    }
}

struct ew_args {
    void       *out;
    int32_t     odt, op;
    cuk_operand a, b, c;
};

template <class I> __device__ __forceinline__ I ew_index(const cuk_operand &o, I i) {
    I q = o.inner == 1 ? i : i / (I)o.inner;
    return q < (I)o.n ? q : q % (I)o.n;
}

/* A missing operand reads -0.0: x + -0.0 is x for every x, -0.0 included, so an absent b or
 * c leaves the result exact (a plain cast or bias add). */
template <class I> __device__ __forceinline__ float ew_ld(const cuk_operand &o, I i) {
    return o.data ? cuk_ld(o.data, o.dtype, (int64_t)ew_index(o, i)) : -0.0f;
}

/* i0 a multiple of CUK_VEC; o full (inner 1, n a multiple of CUK_VEC) or constant over the
 * group (inner a multiple of CUK_VEC), as ew_vec_ok checked. */
template <class I> __device__ __forceinline__ void ew_ld8(const cuk_operand &o, I i0, float v[8]) {
    if (!o.data) {
        for (int k = 0; k < CUK_VEC; k++) v[k] = -0.0f;
    } else if (o.inner == 1) {
        cuk_ld8(o.data, o.dtype, (int64_t)ew_index(o, i0), v);
    } else {
        float x = cuk_ld(o.data, o.dtype, (int64_t)ew_index(o, i0));
        for (int k = 0; k < CUK_VEC; k++) v[k] = x;
    }
}

template <class I> __global__ void k_ewise(ew_args a, I n) {
    CUK_FOR_I(I, i, n)
    cuk_st(a.out, a.odt, i, binary_f(a.op, ew_ld(a.a, i), ew_ld(a.b, i)) + ew_ld(a.c, i));
}

template <class I> __global__ void k_ewise8(ew_args a, I groups) {
    CUK_FOR_I(I, g, groups) {
        I     i0 = g * CUK_VEC;
        float x[CUK_VEC], y[CUK_VEC], z[CUK_VEC];
        ew_ld8(a.a, i0, x);
        ew_ld8(a.b, i0, y);
        ew_ld8(a.c, i0, z);
        for (int k = 0; k < CUK_VEC; k++) x[k] = binary_f(a.op, x[k], y[k]) + z[k];
        cuk_st8(a.out, a.odt, (int64_t)i0, x);
    }
}

static bool ew_vec_ok(const cuk_operand &o) {
    if (!o.data) return true;
    if (o.inner == 1) return o.n % CUK_VEC == 0 && cuk_vec_ok(o.data);
    return o.inner % CUK_VEC == 0;
}

extern "C" int cuk_operand_of(const cuk_tensor *t, cuk_operand *o) {
    int64_t inner = 1, n = 1;
    bool    started = false, ended = false;
    for (int32_t d = t->n_dims - 1; d >= 0; d--) {
        if (t->shape[d] == 1) continue;
        if (t->stride[d] == 0) {
            if (started)
                ended = true;
            else
                inner *= t->shape[d];
            continue;
        }
        if (ended || t->stride[d] != n) return 0;
        started = true;
        n *= t->shape[d];
    }
    *o = (cuk_operand){t->data, t->dtype, 0, inner, n};
    return 1;
}

extern "C" cudaError_t cuk_ewise(void *out, int32_t odt, int64_t total, int32_t op,
                                 const cuk_operand *a, const cuk_operand *b, const cuk_operand *c,
                                 cudaStream_t s) {
    if (total == 0) return cudaSuccess;
    const cuk_operand  none = {NULL, CUK_F32, 0, 1, 1};
    ew_args            e    = {out, odt, op, a ? *a : none, b ? *b : none, c ? *c : none};
    const cuk_operand *o[3] = {&e.a, &e.b, &e.c};
    bool               i32 = cuk_idx32(total), vec = total % CUK_VEC == 0 && cuk_vec_ok(out);
    for (int k = 0; k < 3; k++) {
        if (o[k]->data && (o[k]->inner < 1 || o[k]->n < 1)) return cudaErrorInvalidValue;
        i32 = i32 && cuk_idx32(o[k]->inner) && cuk_idx32(o[k]->n);
        vec = vec && ew_vec_ok(*o[k]);
    }
    if (vec)
        CUK_LAUNCH_I(i32, k_ewise8, total / CUK_VEC, s, e);
    else
        CUK_LAUNCH_I(i32, k_ewise, total, s, e);
    return cudaGetLastError();
}

/* 32x32 tiles through shared memory (256 threads: 32 x 8, four rows each), so both the
 * reads along src's rows and the writes along out's rows are coalesced; a grid-stride loop
 * over the tiles. */
#define TR_TILE 32

struct tr_args {
    void       *out;
    const void *src;
    int32_t     odt, sdt;
    int64_t     Z, R, Cn, tiles_r, tiles_c;
    cuk_operand b, c;
};

/* Operand o at output index i = zc * R + r (zc = z * Cn + c) without a division in the
 * common cases: full (inner 1), and per channel or per (image, channel) (inner R). */
__device__ __forceinline__ float tr_ld(const cuk_operand &o, int64_t i, int64_t zc, int64_t R) {
    if (!o.data) return -0.0f;
    int64_t k = o.inner == 1 ? i : o.inner == R ? zc : i / o.inner;
    return cuk_ld(o.data, o.dtype, k < o.n ? k : k % o.n);
}

__global__ void k_transpose_ewise(tr_args a) {
    __shared__ float tile[TR_TILE][TR_TILE + 1];
    const int        tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    const int64_t    per = a.tiles_r * a.tiles_c, tiles = a.Z * per;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
        int64_t z = t / per, rem = t - z * per;
        int64_t r0 = rem / a.tiles_c * TR_TILE, c0 = rem % a.tiles_c * TR_TILE;
        for (int j = ty; j < TR_TILE; j += TR_TILE / 8) {
            int64_t r = r0 + j, c = c0 + tx;
            if (r < a.R && c < a.Cn) tile[j][tx] = cuk_ld(a.src, a.sdt, (z * a.R + r) * a.Cn + c);
        }
        __syncthreads();
        for (int j = ty; j < TR_TILE; j += TR_TILE / 8) {
            int64_t c = c0 + j, r = r0 + tx;
            if (r < a.R && c < a.Cn) {
                int64_t zc = z * a.Cn + c, i = zc * a.R + r;
                cuk_st(a.out, a.odt, i,
                       tile[tx][j] + tr_ld(a.b, i, zc, a.R) + tr_ld(a.c, i, zc, a.R));
            }
        }
        __syncthreads(); /* the tile is refilled by the next iteration */
    }
}

extern "C" cudaError_t cuk_transpose_ewise(void *out, int32_t odt, const void *src, int32_t sdt,
                                           int64_t Z, int64_t R, int64_t Cn, const cuk_operand *b,
                                           const cuk_operand *c, cudaStream_t s) {
    if (Z <= 0 || R <= 0 || Cn <= 0) return cudaSuccess;
    const cuk_operand none = {NULL, CUK_F32, 0, 1, 1};
    tr_args           a    = {out,
                              src,
                              odt,
                              sdt,
                              Z,
                              R,
                              Cn,
                              (R + TR_TILE - 1) / TR_TILE,
                              (Cn + TR_TILE - 1) / TR_TILE,
                 b ? *b : none,
                 c ? *c : none};
    for (const cuk_operand *o : {&a.b, &a.c})
        if (o->data && (o->inner < 1 || o->n < 1)) return cudaErrorInvalidValue;
    CUK_LAUNCH(k_transpose_ewise, cuk_grid(Z * a.tiles_r * a.tiles_c), dim3(TR_TILE, 8), 0, s)(a);
    return cudaGetLastError();
}

__global__ void k_binary(void *out, int32_t odt, cuk_tensor a, cuk_tensor b, int32_t op,
                         int64_t n) {
    CUK_FOR(i, n) cuk_st(out, odt, i, binary_f(op, cuk_at(a, i), cuk_at(b, i)));
}

extern "C" cudaError_t cuk_binary(const cuk_tensor *out, const cuk_tensor *a, const cuk_tensor *b,
                                  int32_t op, cudaStream_t s) {
    int64_t n = cuk_numel(out);
    if (n == 0) return cudaSuccess;
    cuk_operand oa, ob;
    if (cuk_operand_of(a, &oa) && cuk_operand_of(b, &ob))
        return cuk_ewise(out->data, out->dtype, n, op, &oa, &ob, NULL, s);
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

/* One thread per (b, l, rotated pair) for every head: the angle (double, as the reference)
 * is computed once per position and frequency, not once per element of every head; threads
 * past the pairs copy the pass-through tail (dims n_rot..D) of their (b, l). */
__global__ void k_rope(void *out, int32_t odt, cuk_tensor x, cuk_tensor pos, int32_t neox,
                       int64_t nr, cuk_rope_axes axes, double theta, int64_t n) {
    const int64_t L = x.shape[1], H = x.shape[2], D = x.shape[3], half = nr / 2;
    const int64_t W = half + (D - nr); /* work items per (b, l) */
    CUK_FOR(t, n) {
        const int64_t bl = t / W, w = t % W, l = bl % L;
        if (w >= half) { /* pass-through dim */
            const int64_t e = nr + (w - half);
            for (int64_t h = 0; h < H; h++) {
                const int64_t i = (bl * H + h) * D + e;
                cuk_st(out, odt, i, cuk_at(x, i));
            }
            continue;
        }
        const int64_t k  = w;
        const int64_t i0 = neox ? k : 2 * k, i1 = neox ? k + half : 2 * k + 1;
        int64_t       start = 0, j = k, d = nr;
        int32_t       a = 0;
        for (; a < axes.n; a++) {
            int64_t hh = axes.d[a] / 2;
            if (k < start + hh) {
                j = k - start;
                d = axes.d[a];
                break;
            }
            start += hh;
        }
        if (a >= axes.n) a = 0;
        double ang = (double)cuk_at(pos, l * axes.n + a) * pow(theta, -2.0 * (double)j / (double)d);
        double c = cos(ang), sn = sin(ang);
        for (int64_t h = 0; h < H; h++) {
            const int64_t base = (bl * H + h) * D;
            double        x0 = (double)cuk_at(x, base + i0), x1 = (double)cuk_at(x, base + i1);
            cuk_st(out, odt, base + i0, (float)(x0 * c - x1 * sn));
            cuk_st(out, odt, base + i1, (float)(x1 * c + x0 * sn));
        }
    }
}

extern "C" cudaError_t cuk_rope(void *out, int32_t odt, const cuk_tensor *x, const cuk_tensor *pos,
                                int32_t neox, int64_t n_rot, const cuk_rope_axes *axes, float theta,
                                cudaStream_t s) {
    if (cuk_numel(x) == 0) return cudaSuccess;
    if (x->n_dims != 4 || n_rot < 0 || n_rot > x->shape[3] || n_rot % 2)
        return cudaErrorInvalidValue;
    int64_t n = x->shape[0] * x->shape[1] * (n_rot / 2 + (x->shape[3] - n_rot));
    if (n == 0) return cudaSuccess;
    CUK_LAUNCH(k_rope, cuk_blocks(n), CUK_THREADS, 0, s)
    (out, odt, *x, *pos, neox, n_rot, *axes, (double)theta, n);
    return cudaGetLastError();
}
