/* GGML block decoders, one block each (32 or 256 values to y), shared by the host
 * (formats/quant.c) and the CUDA kernels (tensor/cuda/quant.cu) so both expand a weight to
 * the same bits. The includer defines, before including:
 *   QB_FN       the qualifiers of each function (static; static __device__ __forceinline__)
 *   QB_HALF(u)  the f16 with bits u (uint16_t) as a float
 *
 * Each function mirrors ggml's reference dequantize_row_<type> (ggml-quants.c) for one
 * block, with the same arithmetic order so results are bit-identical. Blocks are read byte
 * by byte (little-endian), never through a struct cast, so the source may sit at any
 * address. Layouts (ggml-common.h), offsets in bytes:
 *
 *   Q4_0  18: d f16 @0, qs[16] @2                  x = (nibble - 8) * d
 *   Q4_1  20: d @0, m @2, qs[16] @4                x = nibble * d + m
 *   Q5_0  22: d @0, qh[4] @2, qs[16] @6            x = ((nibble | hbit << 4) - 16) * d
 *   Q5_1  24: d @0, m @2, qh[4] @4, qs[16] @8      x = (nibble | hbit << 4) * d + m
 *   Q8_0  34: d @0, qs[32] int8 @2                 x = q * d
 *   Q8_1  36: d @0, s @2 (d * sum q), qs[32] @4    x = q * d
 *   Q2_K  84: scales[16] @0, qs[64] @16, d @80, dmin @82
 *   Q3_K 110: hmask[32] @0, qs[64] @32, scales[12] @96, d @108
 *   Q4_K 144: d @0, dmin @2, scales[12] @4, qs[128] @16
 *   Q5_K 176: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48
 *   Q6_K 210: ql[128] @0, qh[64] @128, scales[16] int8 @192, d @208
 *
 * In a block of 32, low nibbles are elements 0..15 and high nibbles 16..31. */
#ifndef IMGD_FORMATS_QUANT_BLOCKS_H
#define IMGD_FORMATS_QUANT_BLOCKS_H

#include <stdint.h>

#define QB_QK   32  /* elements per block of the legacy formats */
#define QB_QK_K 256 /* elements per super-block of the k-quants */

QB_FN float qb_half_at(const uint8_t *p) {
    return QB_HALF((uint16_t)(p[0] | (p[1] << 8)));
}

/* ---- 32-element formats ------------------------------------------------------------ */

QB_FN void qb_deq_q4_0(const uint8_t *b, float *y) {
    const float    d  = qb_half_at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QB_QK / 2; j++) {
        const int x0     = (qs[j] & 0x0F) - 8;
        const int x1     = (qs[j] >> 4) - 8;
        y[j]             = (float)x0 * d;
        y[j + QB_QK / 2] = (float)x1 * d;
    }
}

QB_FN void qb_deq_q4_1(const uint8_t *b, float *y) {
    const float    d  = qb_half_at(b);
    const float    m  = qb_half_at(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < QB_QK / 2; j++) {
        const int x0     = qs[j] & 0x0F;
        const int x1     = qs[j] >> 4;
        y[j]             = (float)x0 * d + m;
        y[j + QB_QK / 2] = (float)x1 * d + m;
    }
}

QB_FN uint32_t qb_le32_at(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

QB_FN void qb_deq_q5_0(const uint8_t *b, float *y) {
    const float    d  = qb_half_at(b);
    const uint32_t qh = qb_le32_at(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < QB_QK / 2; j++) {
        const int xh0    = (int)(((qh >> j) << 4) & 0x10);
        const int xh1    = (int)((qh >> (j + 12)) & 0x10);
        const int x0     = ((qs[j] & 0x0F) | xh0) - 16;
        const int x1     = ((qs[j] >> 4) | xh1) - 16;
        y[j]             = (float)x0 * d;
        y[j + QB_QK / 2] = (float)x1 * d;
    }
}

QB_FN void qb_deq_q5_1(const uint8_t *b, float *y) {
    const float    d  = qb_half_at(b);
    const float    m  = qb_half_at(b + 2);
    const uint32_t qh = qb_le32_at(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < QB_QK / 2; j++) {
        const int xh0    = (int)(((qh >> j) << 4) & 0x10);
        const int xh1    = (int)((qh >> (j + 12)) & 0x10);
        const int x0     = (qs[j] & 0x0F) | xh0;
        const int x1     = (qs[j] >> 4) | xh1;
        y[j]             = (float)x0 * d + m;
        y[j + QB_QK / 2] = (float)x1 * d + m;
    }
}

QB_FN void qb_deq_q8_0(const uint8_t *b, float *y) {
    const float d = qb_half_at(b);
    for (int j = 0; j < QB_QK; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* ggml has no dequantize_row_q8_1 (Q8_1 is an activation format); the value is q * d and
 * the stored sum s is redundant. */
QB_FN void qb_deq_q8_1(const uint8_t *b, float *y) {
    const float d = qb_half_at(b);
    for (int j = 0; j < QB_QK; j++) y[j] = (float)(int8_t)b[4 + j] * d;
}

/* ---- k-quants (256-element super-blocks) -------------------------------------------- */

QB_FN void qb_deq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *scales = b;
    const uint8_t *q      = b + 16;
    const float    d      = qb_half_at(b + 80);
    const float    min    = qb_half_at(b + 82);
    int            is     = 0;
    for (int n = 0; n < QB_QK_K; n += 128) {
        int shift = 0;
        for (int j = 0; j < 4; j++) {
            for (int half = 0; half < 2; half++) {
                const uint8_t sc = scales[is++];
                const float   dl = d * (float)(sc & 0xF);
                const float   ml = min * (float)(sc >> 4);
                for (int l = 0; l < 16; l++) {
                    *y++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
            shift += 2;
        }
        q += 32;
    }
}

/* The sixteen 6-bit Q3_K scales: low 4 bits in bytes 0..7 (low nibble for 0..7, high
 * nibble for 8..15), high 2 bits in bytes 8..11 (byte 8 + j%4, bit pair j/4). Same as
 * ggml's kmask1/kmask2 shuffle, written per byte. */
QB_FN int qb_q3_k_scale(const uint8_t *s, int j) {
    const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

QB_FN void qb_deq_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hm     = b;
    const uint8_t *q      = b + 32;
    const uint8_t *scales = b + 96;
    const float    d_all  = qb_half_at(b + 108);
    uint8_t        m      = 1;
    int            is     = 0;
    for (int n = 0; n < QB_QK_K; n += 128) {
        int shift = 0;
        for (int j = 0; j < 4; j++) {
            for (int half = 0; half < 2; half++) {
                const float dl = d_all * (float)qb_q3_k_scale(scales, is++);
                for (int l = 16 * half; l < 16 * half + 16; l++) {
                    const int v = ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
                    *y++        = dl * (float)v;
                }
            }
            shift += 2;
            m = (uint8_t)(m << 1);
        }
        q += 32;
    }
}

/* ggml get_scale_min_k4: eight 6-bit scales and mins packed into 12 bytes. */
QB_FN void qb_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

QB_FN void qb_deq_q4_k(const uint8_t *b, float *y) {
    const float    d      = qb_half_at(b);
    const float    min    = qb_half_at(b + 2);
    const uint8_t *scales = b + 4;
    const uint8_t *q      = b + 16;
    int            is     = 0;
    uint8_t        sc, m;
    for (int j = 0; j < QB_QK_K; j += 64) {
        qb_scale_min_k4(is + 0, scales, &sc, &m);
        const float d1 = d * (float)sc;
        const float m1 = min * (float)m;
        qb_scale_min_k4(is + 1, scales, &sc, &m);
        const float d2 = d * (float)sc;
        const float m2 = min * (float)m;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        q += 32;
        is += 2;
    }
}

QB_FN void qb_deq_q5_k(const uint8_t *b, float *y) {
    const float    d      = qb_half_at(b);
    const float    min    = qb_half_at(b + 2);
    const uint8_t *scales = b + 4;
    const uint8_t *qh     = b + 16;
    const uint8_t *ql     = b + 48;
    int            is     = 0;
    uint8_t        sc, m;
    unsigned       u1 = 1, u2 = 2;
    for (int j = 0; j < QB_QK_K; j += 64) {
        qb_scale_min_k4(is + 0, scales, &sc, &m);
        const float d1 = d * (float)sc;
        const float m1 = min * (float)m;
        qb_scale_min_k4(is + 1, scales, &sc, &m);
        const float d2 = d * (float)sc;
        const float m2 = min * (float)m;
        for (int l = 0; l < 32; l++) {
            *y++ = d1 * (float)((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
        }
        for (int l = 0; l < 32; l++) {
            *y++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        }
        ql += 32;
        is += 2;
        u1 <<= 2;
        u2 <<= 2;
    }
}

QB_FN void qb_deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b;
    const uint8_t *qh = b + 128;
    const uint8_t *sc = b + 192; /* int8 */
    const float    d  = qb_half_at(b + 208);
    for (int n = 0; n < QB_QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l]         = d * (float)(int8_t)sc[is + 0] * (float)q1;
            y[l + 32]    = d * (float)(int8_t)sc[is + 2] * (float)q2;
            y[l + 64]    = d * (float)(int8_t)sc[is + 4] * (float)q3;
            y[l + 96]    = d * (float)(int8_t)sc[is + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

#endif
