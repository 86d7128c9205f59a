// Scaled-dot-product attention without materialising the score matrix (flash-style: key/value
// tiles in shared memory, online softmax in registers).
//
// Block: ATT_Q warps, one query row per warp, for one (batch, head). Keys are processed in
// tiles of 32: lane j scores key j of the tile against the warp's query (a full dot product
// over D from shared memory, no reduction), the warp updates its running max m and sum l, and
// then every lane accumulates its slice of the Dv output columns (lane, lane+32, ...) from the
// tile's values. Masked (-inf) scores contribute exactly zero; a row whose keys so far are all
// -inf keeps m = -inf without producing NaN.
#include "device_impl.h"

#define ATT_Q  16 /* query rows (warps) per block */
#define ATT_TK 32 /* keys per tile (one per lane) */

/* ACC: output columns per lane (Dv <= 32 * ACC), a template so small heads keep few
 * registers. */
template <int ACC> __global__ void k_attention(cuk_attn_args a) {
    CUK_DYN_SHARED(float, sm);
    const int64_t B = a.q.shape[0], Lq = a.q.shape[1], H = a.q.shape[2], D = a.q.shape[3];
    const int64_t Lk = a.k.shape[1], Dv = a.v.shape[3];
    const int64_t ldk = D + 1, ldv = Dv + 1; /* padded rows: conflict-free column reads */
    float        *ks = sm, *vs = ks + ATT_TK * ldk, *qs = vs + ATT_TK * ldv;
    const int     warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t b = blockIdx.z, h = blockIdx.y, i = (int64_t)blockIdx.x * ATT_Q + warp;
    const bool    valid = i < Lq; /* uniform per warp */
    (void)B;

    float *qrow = qs + (int64_t)warp * D;
    if (valid)
        for (int64_t d = lane; d < D; d += 32)
            qrow[d] = cuk_ld(a.q.data, a.q.dtype,
                             b * a.q.stride[0] + i * a.q.stride[1] + h * a.q.stride[2] +
                                 d * a.q.stride[3]) *
                      a.scale;
    float acc[ACC];
    for (int c = 0; c < ACC; c++) acc[c] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int64_t j0 = 0; j0 < Lk; j0 += ATT_TK) {
        int64_t nt = Lk - j0 < ATT_TK ? Lk - j0 : ATT_TK;
        __syncthreads(); /* the previous tile is no longer read */
        /* warp w loads keys/values w, w + ATT_Q, ...; lanes walk the head dim */
        for (int64_t j = warp; j < nt; j += ATT_Q) {
            const int64_t kb = b * a.k.stride[0] + (j0 + j) * a.k.stride[1] + h * a.k.stride[2];
            const int64_t vb = b * a.v.stride[0] + (j0 + j) * a.v.stride[1] + h * a.v.stride[2];
            for (int64_t d = lane; d < D; d += 32)
                ks[j * ldk + d] = cuk_ld(a.k.data, a.k.dtype, kb + d * a.k.stride[3]);
            for (int64_t d = lane; d < Dv; d += 32)
                vs[j * ldv + d] = cuk_ld(a.v.data, a.v.dtype, vb + d * a.v.stride[3]);
        }
        __syncthreads();
        if (!valid) continue;
        float s = -INFINITY;
        if (lane < nt) {
            const float *kr  = ks + lane * ldk;
            float        dot = 0.0f;
            for (int64_t d = 0; d < D; d++) dot += qrow[d] * kr[d];
            s = dot;
            if (a.mask)
                s += a.mask[b * a.ms[0] + h * a.ms[1] + i * a.ms[2] + (j0 + lane) * a.ms[3]];
        }
        float mt = s;
        for (int o = 16; o > 0; o >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
        float mn = fmaxf(m, mt);
        float p = 0.0f, corr = 1.0f;
        if (mn != -INFINITY) {
            p    = s == -INFINITY ? 0.0f : expf(s - mn);
            corr = m == -INFINITY ? 0.0f : expf(m - mn);
        }
        float ps = p;
        for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
        l = l * corr + ps;
        m = mn;
        for (int c = 0; c < ACC; c++) acc[c] *= corr;
        for (int j = 0; j < (int)nt; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
            for (int c = 0; c < ACC; c++) {
                int64_t d = lane + 32 * c;
                if (d < Dv) acc[c] += pj * vs[j * ldv + d];
            }
        }
    }
    if (!valid) return;
    float         inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int64_t o   = ((b * Lq + i) * H + h) * Dv;
    for (int c = 0; c < ACC; c++) {
        int64_t d = lane + 32 * c;
        if (d < Dv) cuk_st(a.out, a.odt, o + d, acc[c] * inv);
    }
}

template <int ACC>
static cudaError_t launch(const cuk_attn_args &a, dim3 grid, size_t shmem, cudaStream_t s) {
    if (shmem > 48 * 1024) { /* opt in to the large shared memory of sm_80+ (D up to 512) */
        cudaError_t e = cudaFuncSetAttribute(
            k_attention<ACC>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem);
        if (e != cudaSuccess) return e;
    }
    CUK_LAUNCH(k_attention<ACC>, grid, ATT_Q * 32, shmem, s)(a);
    return cudaGetLastError();
}

extern "C" cudaError_t cuk_attention(void *out, int32_t odt, const cuk_tensor *q,
                                     const cuk_tensor *k, const cuk_tensor *v, const float *mask,
                                     const int64_t *mstride, float scale, cudaStream_t s) {
    int64_t B = q->shape[0], Lq = q->shape[1], H = q->shape[2], D = q->shape[3];
    int64_t Dv = v->shape[3];
    if (B * Lq * H * Dv == 0) return cudaSuccess;
    if (D > CUK_ATTN_D_MAX || Dv > CUK_ATTN_D_MAX || D < 1 || H > 65535 || B > 65535)
        return cudaErrorInvalidValue;
    cuk_attn_args a = cuk_attn_args_make(out, odt, q, k, v, mask, mstride, scale);
    size_t shmem    = sizeof(float) * (size_t)(ATT_TK * (D + 1) + ATT_TK * (Dv + 1) + ATT_Q * D);
    dim3   grid((unsigned)((Lq + ATT_Q - 1) / ATT_Q), (unsigned)H, (unsigned)B);
    if (Dv <= 64) return launch<2>(a, grid, shmem, s);
    if (Dv <= 128) return launch<4>(a, grid, shmem, s);
    if (Dv <= 256) return launch<8>(a, grid, shmem, s);
    return launch<16>(a, grid, shmem, s);
}
