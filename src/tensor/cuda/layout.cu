// Layout kernels: strided copy/cast, concat, pad, upsample, avg_pool2d, im2col.
// One thread per output element in a grid-stride loop; inputs read through their strides.
#include "device_impl.h"

__global__ void k_copy(cuk_tensor out, cuk_tensor src, int64_t n) {
    CUK_FOR(i, n) cuk_st(out.data, out.dtype, i, cuk_at(src, i));
}

extern "C" cudaError_t cuk_copy(const cuk_tensor *out, const cuk_tensor *src, cudaStream_t s) {
    int64_t n = cuk_numel(out);
    if (n == 0) return cudaSuccess;
    if (src->contiguous) { /* a flat cast: the vectorised elementwise kernel */
        cuk_operand o = {src->data, src->dtype, 0, 1, n};
        return cuk_ewise(out->data, out->dtype, n, CUK_ADD, &o, NULL, NULL, s);
    }
    CUK_LAUNCH(k_copy, cuk_blocks(n), CUK_THREADS, 0, s)(*out, *src, n);
    return cudaGetLastError();
}

struct concat_srcs {
    cuk_tensor t[4];
};

__global__ void k_concat(cuk_tensor out, concat_srcs srcs, int32_t n_srcs, int32_t axis,
                         int64_t n) {
    CUK_FOR(i, n) {
        int64_t idx[CUK_MAX_DIMS];
        int64_t lin = i;
        for (int32_t d = out.n_dims - 1; d >= 0; d--) {
            idx[d] = lin % out.shape[d];
            lin /= out.shape[d];
        }
        int32_t k = 0;
        while (k < n_srcs - 1 && idx[axis] >= srcs.t[k].shape[axis])
            idx[axis] -= srcs.t[k++].shape[axis];
        const cuk_tensor &src = srcs.t[k];
        int64_t           off = 0;
        for (int32_t d = 0; d < out.n_dims; d++) off += idx[d] * src.stride[d];
        cuk_st(out.data, out.dtype, i, cuk_ld(src.data, src.dtype, off));
    }
}

/* Contiguous sources (the UNet's skip connections): out is [outer][seg_0 | seg_1 | ...] with
 * seg_k = src k's size along the axis times the inner size; 32-bit indices, and CUK_VEC
 * elements per thread when every segment is a multiple of it (a vector then never straddles
 * two sources). */
struct concat_flat {
    const void *p[4];
    int32_t     dt[4];
    uint32_t    seg[4], start[5]; /* start[k]: segment k's offset in an output row */
};

template <bool V> __global__ void k_concat_flat(void *out, int32_t odt, concat_flat c, uint32_t n) {
    const uint32_t row = c.start[4], step = V ? CUK_VEC : 1;
    CUK_FOR_I(uint32_t, g, n / step) {
        uint32_t i = g * step, o = i / row, r = i - o * row;
        int      k = 0;
        while (k < 3 && r >= c.start[k + 1]) k++;
        int64_t off = (int64_t)o * c.seg[k] + (r - c.start[k]);
        if (V) {
            float v[CUK_VEC];
            cuk_ld8(c.p[k], c.dt[k], off, v);
            cuk_st8(out, odt, i, v);
        } else {
            cuk_st(out, odt, i, cuk_ld(c.p[k], c.dt[k], off));
        }
    }
}

static bool concat_try_flat(const cuk_tensor *out, const cuk_tensor *srcs, int32_t n, int32_t axis,
                            int64_t total, cudaStream_t s, cudaError_t *e) {
    if (!cuk_idx32(total)) return false;
    int64_t inner = 1;
    for (int32_t d = axis + 1; d < out->n_dims; d++) inner *= out->shape[d];
    concat_flat c;
    bool        vec = total % CUK_VEC == 0 && cuk_vec_ok(out->data);
    c.start[0]      = 0;
    for (int32_t k = 0; k < 4; k++) {
        int64_t seg = k < n ? srcs[k].shape[axis] * inner : 0;
        if (k < n && !srcs[k].contiguous) return false;
        c.p[k]         = k < n ? srcs[k].data : srcs[0].data;
        c.dt[k]        = k < n ? srcs[k].dtype : srcs[0].dtype;
        c.seg[k]       = (uint32_t)seg;
        c.start[k + 1] = c.start[k] + (uint32_t)seg;
        vec            = vec && (k >= n || (seg % CUK_VEC == 0 && cuk_vec_ok(srcs[k].data)));
    }
    if (c.start[4] == 0) return false;
    if (vec) {
        CUK_LAUNCH(k_concat_flat<true>, cuk_blocks(total / CUK_VEC), CUK_THREADS, 0, s)
        (out->data, out->dtype, c, (uint32_t)total);
    } else {
        CUK_LAUNCH(k_concat_flat<false>, cuk_blocks(total), CUK_THREADS, 0, s)
        (out->data, out->dtype, c, (uint32_t)total);
    }
    *e = cudaGetLastError();
    return true;
}

extern "C" cudaError_t cuk_concat(const cuk_tensor *out, const cuk_tensor *srcs, int32_t n,
                                  int32_t axis, cudaStream_t s) {
    int64_t total = cuk_numel(out);
    if (total == 0) return cudaSuccess;
    if (n < 1 || n > 4 || axis < 0 || axis >= out->n_dims) return cudaErrorInvalidValue;
    cudaError_t fe = cudaSuccess;
    if (concat_try_flat(out, srcs, n, axis, total, s, &fe)) return fe;
    concat_srcs c;
    for (int32_t i = 0; i < n; i++) c.t[i] = srcs[i];
    for (int32_t i = n; i < 4; i++) c.t[i] = srcs[0];
    CUK_LAUNCH(k_concat, cuk_blocks(total), CUK_THREADS, 0, s)(*out, c, n, axis, total);
    return cudaGetLastError();
}

struct pad_before {
    int64_t b[CUK_MAX_DIMS];
};

__global__ void k_pad(cuk_tensor out, cuk_tensor src, pad_before before, float value, int64_t n) {
    CUK_FOR(i, n) {
        int64_t lin = i, off = 0;
        bool    inside = true;
        for (int32_t d = out.n_dims - 1; d >= 0; d--) {
            int64_t x = lin % out.shape[d] - before.b[d];
            lin /= out.shape[d];
            if (x < 0 || x >= src.shape[d]) inside = false;
            off += x * src.stride[d];
        }
        cuk_st(out.data, out.dtype, i, inside ? cuk_ld(src.data, src.dtype, off) : value);
    }
}

extern "C" cudaError_t cuk_pad(const cuk_tensor *out, const cuk_tensor *src, const int64_t *before,
                               float value, cudaStream_t s) {
    int64_t n = cuk_numel(out);
    if (n == 0) return cudaSuccess;
    pad_before b;
    for (int32_t d = 0; d < CUK_MAX_DIMS; d++) b.b[d] = d < out->n_dims ? before[d] : 0;
    CUK_LAUNCH(k_pad, cuk_blocks(n), CUK_THREADS, 0, s)(*out, *src, b, value, n);
    return cudaGetLastError();
}

__global__ void k_upsample(cuk_tensor out, cuk_tensor src, int64_t n) {
    CUK_FOR(i, n) {
        int64_t lin = i, off = 0;
        for (int32_t d = out.n_dims - 1; d >= 0; d--) {
            int64_t x = lin % out.shape[d];
            lin /= out.shape[d];
            if (d >= out.n_dims - 2) x /= 2;
            off += x * src.stride[d];
        }
        cuk_st(out.data, out.dtype, i, cuk_ld(src.data, src.dtype, off));
    }
}

/* Contiguous src [planes, H, W] into out [planes, 2H, 2W] with 32-bit indices; V: CUK_VEC
 * outputs (half as many inputs) per thread, 2W a multiple of CUK_VEC. */
template <bool V>
__global__ void k_upsample_flat(void *out, int32_t odt, const void *src, int32_t sdt, uint32_t H,
                                uint32_t W, uint32_t n) {
    const uint32_t OW = 2 * W, OH = 2 * H, step = V ? CUK_VEC : 1;
    CUK_FOR_I(uint32_t, g, n / step) {
        uint32_t i = g * step, row = i / OW, x = i - row * OW, p = row / OH, y = row - p * OH;
        int64_t  base = ((int64_t)p * H + y / 2) * W;
        if (V) {
            float v[CUK_VEC];
            for (int k = 0; k < CUK_VEC / 2; k++)
                v[2 * k] = v[2 * k + 1] = cuk_ld(src, sdt, base + x / 2 + k);
            cuk_st8(out, odt, i, v);
        } else {
            cuk_st(out, odt, i, cuk_ld(src, sdt, base + x / 2));
        }
    }
}

extern "C" cudaError_t cuk_upsample2x(const cuk_tensor *out, const cuk_tensor *src,
                                      cudaStream_t s) {
    int64_t n = cuk_numel(out);
    if (n == 0) return cudaSuccess;
    if (src->contiguous && src->n_dims >= 2 && cuk_idx32(n)) {
        uint32_t H = (uint32_t)src->shape[src->n_dims - 2],
                 W = (uint32_t)src->shape[src->n_dims - 1];
        if ((2 * W) % CUK_VEC == 0 && cuk_vec_ok(out->data)) {
            CUK_LAUNCH(k_upsample_flat<true>, cuk_blocks(n / CUK_VEC), CUK_THREADS, 0, s)
            (out->data, out->dtype, src->data, src->dtype, H, W, (uint32_t)n);
        } else {
            CUK_LAUNCH(k_upsample_flat<false>, cuk_blocks(n), CUK_THREADS, 0, s)
            (out->data, out->dtype, src->data, src->dtype, H, W, (uint32_t)n);
        }
        return cudaGetLastError();
    }
    CUK_LAUNCH(k_upsample, cuk_blocks(n), CUK_THREADS, 0, s)(*out, *src, n);
    return cudaGetLastError();
}

__global__ void k_avg_pool(void *out, int32_t odt, const void *x, int32_t xdt, int64_t H, int64_t W,
                           int64_t OH, int64_t OW, int32_t k, int32_t st, int32_t pad, int64_t n) {
    CUK_FOR(i, n) {
        int64_t ox = i % OW, oy = (i / OW) % OH, pl = i / (OW * OH);
        float   acc = 0.0f;
        for (int32_t ky = 0; ky < k; ky++) {
            int64_t iy = oy * st - pad + ky;
            if (iy < 0 || iy >= H) continue;
            for (int32_t kx = 0; kx < k; kx++) {
                int64_t ix = ox * st - pad + kx;
                if (ix >= 0 && ix < W) acc += cuk_ld(x, xdt, (pl * H + iy) * W + ix);
            }
        }
        cuk_st(out, odt, i, acc / (float)(k * k));
    }
}

extern "C" cudaError_t cuk_avg_pool2d(void *out, int32_t odt, const void *src, int32_t sdt,
                                      int64_t planes, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                      int32_t k, int32_t stride, int32_t pad, cudaStream_t s) {
    int64_t n = planes * OH * OW;
    if (n == 0) return cudaSuccess;
    CUK_LAUNCH(k_avg_pool, cuk_blocks(n), CUK_THREADS, 0, s)
    (out, odt, src, sdt, H, W, OH, OW, k, stride, pad, n);
    return cudaGetLastError();
}

__global__ void k_im2col(void *col, int32_t dt, const void *x, int32_t xdt, int64_t H, int64_t W,
                         int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                         int64_t OW, int64_t p0, int64_t pc, int64_t n) {
    CUK_FOR(i, n) {
        int64_t p = i % pc, r = i / pc; /* r = (c*KH + ky)*KW + kx */
        int64_t kx = r % KW, ky = (r / KW) % KH, c = r / (KW * KH);
        int64_t op = p0 + p, oy = op / OW, ox = op % OW;
        int64_t iy = oy * sh - ph + ky, ix = ox * sw - pw + kx;
        cuk_st(col, dt, i,
               (iy >= 0 && iy < H && ix >= 0 && ix < W) ? cuk_ld(x, xdt, (c * H + iy) * W + ix)
                                                        : 0.0f);
    }
}

extern "C" cudaError_t cuk_im2col(void *col, int32_t col_dtype, const void *x, int32_t xdt,
                                  int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                                  int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t OW,
                                  int64_t p0, int64_t pc, cudaStream_t s) {
    int64_t n = C * KH * KW * pc;
    if (n == 0) return cudaSuccess;
    CUK_LAUNCH(k_im2col, cuk_blocks(n), CUK_THREADS, 0, s)
    (col, col_dtype, x, xdt, H, W, KH, KW, sh, sw, ph, pw, OW, p0, pc, n);
    return cudaGetLastError();
}
