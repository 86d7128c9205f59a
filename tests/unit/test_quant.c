/* Dequantization of the ggml block formats (src/formats/quant.c).
 *
 * Two kinds of checks: blocks written out byte by byte with their expected values worked
 * out from the ggml formulas (Q8_0, Q4_0, Q4_K), and, for every format, blocks packed
 * from known integer codes and scales by small packers in this file (written from the
 * ggml quantize_row_*_ref packing code, not from the dequantizer) whose every element is
 * compared with d * scale * code - dmin * min. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "formats/dtype.h"
#include "formats/quant.h"
#include "test.h"

#define QK_K 256

/* ---- helpers ----------------------------------------------------------------------- */

static uint32_t g_rng = 12345;

static uint32_t rnd(uint32_t n) {
    g_rng = g_rng * 1664525u + 1013904223u;
    return (g_rng >> 8) % n;
}

static void put_half(uint8_t *p, float v) {
    uint16_t h = imgd_f32_to_f16(v);
    p[0]       = (uint8_t)h;
    p[1]       = (uint8_t)(h >> 8);
}

static void check_all(const float *got, const float *want, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        double tol = 1e-6 * (1.0 + fabs((double)want[i]));
        CHECK_MSG(fabs((double)got[i] - (double)want[i]) <= tol, "%s element %d: %.9g != %.9g",
                  what, i, (double)got[i], (double)want[i]);
    }
}

/* ---- tables ------------------------------------------------------------------------ */

static void test_quant_block_sizes_match_traits(void) {
    static const struct {
        imgd_dtype dt;
        uint32_t   elems, bytes;
    } want[] = {
        {IMGD_DTYPE_Q4_0, 32, 18},   {IMGD_DTYPE_Q4_1, 32, 20},   {IMGD_DTYPE_Q5_0, 32, 22},
        {IMGD_DTYPE_Q5_1, 32, 24},   {IMGD_DTYPE_Q8_0, 32, 34},   {IMGD_DTYPE_Q8_1, 32, 36},
        {IMGD_DTYPE_Q2_K, 256, 84},  {IMGD_DTYPE_Q3_K, 256, 110}, {IMGD_DTYPE_Q4_K, 256, 144},
        {IMGD_DTYPE_Q5_K, 256, 176}, {IMGD_DTYPE_Q6_K, 256, 210},
    };
    uint8_t block[2 * 210];
    float   out[2 * 256];
    memset(block, 0, sizeof block);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const imgd_dtype_traits *t = imgd_dtype_traits_of(want[i].dt);
        CHECK_EQ_INT(t->block_elems, want[i].elems);
        CHECK_EQ_INT(t->block_bytes, want[i].bytes);
        CHECK(t->is_quant);
        CHECK_STATUS(imgd_quant_dequantize(want[i].dt, block, 2, out), IMGD_OK);
        /* all-zero blocks dequantize to zeros */
        for (uint32_t j = 0; j < 2 * want[i].elems; j++) CHECK(out[j] == 0.0f);
    }
}

static void test_quant_rejects_plain_dtypes(void) {
    float   out[4];
    uint8_t in[16] = {0};
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_F32, in, 1, out), IMGD_E_UNSUPPORTED);
    CHECK(strstr(imgd_last_error(), "F32") != NULL);
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_I8, in, 1, out), IMGD_E_UNSUPPORTED);
}

/* ---- hand-built blocks ------------------------------------------------------------- */

static void test_quant_q8_0_hand_block(void) {
    /* d = 0.5 (f16 0x3800); q = -128, 127, -1, 0, 1, then 5*j - 80 */
    uint8_t blk[2 * 34];
    float   out[64];
    memset(blk, 0, sizeof blk);
    blk[0] = 0x00;
    blk[1] = 0x38;
    int8_t q[32];
    q[0] = -128;
    q[1] = 127;
    q[2] = -1;
    q[3] = 0;
    q[4] = 1;
    for (int j = 5; j < 32; j++) q[j] = (int8_t)(5 * j - 80);
    memcpy(blk + 2, q, 32);
    /* second block: d = -3.0 (f16 0xC200), q[j] = j - 16 */
    blk[34] = 0x00;
    blk[35] = 0xC2;
    for (int j = 0; j < 32; j++) blk[36 + j] = (uint8_t)(int8_t)(j - 16);
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q8_0, blk, 2, out), IMGD_OK);
    CHECK(out[0] == -64.0f);
    CHECK(out[1] == 63.5f);
    CHECK(out[2] == -0.5f);
    CHECK(out[3] == 0.0f);
    CHECK(out[4] == 0.5f);
    for (int j = 5; j < 32; j++) CHECK(out[j] == (float)(5 * j - 80) * 0.5f);
    CHECK(out[32] == 48.0f);  /* (0 - 16) * -3 */
    CHECK(out[63] == -45.0f); /* (31 - 16) * -3 */
}

static void test_quant_q4_0_hand_block(void) {
    /* Placed at an odd address to prove reads do not need alignment.
     * d = 2.0 (f16 0x4000); byte j = lo j | hi (15 - j): element j = (j - 8) * 2,
     * element 16 + j = (7 - j) * 2. Edge nibbles: byte 0 = 0xF0, byte 15 = 0x0F. */
    uint8_t  raw[1 + 18];
    float    out[32];
    uint8_t *blk = raw + 1;
    blk[0]       = 0x00;
    blk[1]       = 0x40;
    for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    CHECK_EQ_INT(blk[2], 0xF0);
    CHECK_EQ_INT(blk[17], 0x0F);
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q4_0, blk, 1, out), IMGD_OK);
    CHECK(out[0] == -16.0f);  /* nibble 0 */
    CHECK(out[15] == 14.0f);  /* nibble 15 */
    CHECK(out[16] == 14.0f);  /* high nibble 15 of byte 0 */
    CHECK(out[31] == -16.0f); /* high nibble 0 of byte 15 */
    CHECK(out[8] == 0.0f);    /* nibble 8 */
    for (int j = 0; j < 16; j++) {
        CHECK(out[j] == (float)(j - 8) * 2.0f);
        CHECK(out[16 + j] == (float)(7 - j) * 2.0f);
    }
}

static void test_quant_q4_k_hand_block(void) {
    /* d = 0.5, dmin = 0.25. Sub-block scales sc and mins m (6 bits each):
     *   sc = {1, 2, 63, 0, 33, 4, 15, 9}, m = {0, 5, 63, 1, 7, 48, 2, 15}
     * packed as ggml does: bytes 0..3 = sc[0..3] | (sc[4..7] >> 4) << 6,
     * bytes 4..7 = m[0..3] | (m[4..7] >> 4) << 6,
     * bytes 8..11 = (sc[4..7] & 15) | (m[4..7] & 15) << 4.
     *   sc[4] = 33 = 0b10_0001 -> byte 0 gets 2 << 6, byte 8 low nibble 1
     *   m[5]  = 48 = 0b11_0000 -> byte 5 gets 3 << 6, byte 9 high nibble 0 */
    static const uint8_t scales[12] = {
        1 | (2 << 6),  2, 63, 0, 0, 5 | (3 << 6), 63, 1, 1 | (7 << 4), 4 | (0 << 4), 15 | (2 << 4),
        9 | (15 << 4),
    };
    static const int sc[8] = {1, 2, 63, 0, 33, 4, 15, 9};
    static const int mn[8] = {0, 5, 63, 1, 7, 48, 2, 15};
    uint8_t          blk[144];
    float            out[256];
    put_half(blk, 0.5f);
    put_half(blk + 2, 0.25f);
    memcpy(blk + 4, scales, 12);
    /* qs: 4 chunks of 32 bytes; chunk k low nibbles = sub-block 2k, high = 2k+1 */
    for (int i = 0; i < 128; i++) {
        blk[16 + i] = (uint8_t)(((i * 7) & 0xF) | ((15 - (i & 0xF)) << 4));
    }
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q4_K, blk, 1, out), IMGD_OK);
    for (int e = 0; e < 256; e++) {
        int   g = e / 32, chunk = e / 64, l = e % 32;
        int   byte = blk[16 + 32 * chunk + l];
        int   q    = (g % 2 == 0) ? (byte & 0xF) : (byte >> 4);
        float want = 0.5f * (float)sc[g] * (float)q - 0.25f * (float)mn[g];
        CHECK_MSG(out[e] == want, "element %d: %g != %g", e, (double)out[e], (double)want);
    }
    /* a few spelled out */
    CHECK(out[0] == 0.0f);                              /* q 0, sc 1, m 0 */
    CHECK(out[32] == 15.0f - 1.25f);                    /* high nibble 15: 0.5*2*15 - 0.25*5 */
    CHECK(out[64] == -15.75f);                          /* q 0: -0.25*63 */
    CHECK(out[128 + 1] == 0.5f * 33.0f * 7.0f - 1.75f); /* sub-block 4: byte 64 + 1 low = 7 */
}

/* ---- packers for the other formats ------------------------------------------------- */

static void test_quant_q4_1_matches_formula(void) {
    uint8_t blk[20];
    float   out[32], want[32];
    int     c[32];
    put_half(blk, 0.375f);
    put_half(blk + 2, -1.5f);
    for (int j = 0; j < 32; j++) c[j] = j < 2 ? 15 * j : (int)rnd(16);
    for (int j = 0; j < 16; j++) blk[4 + j] = (uint8_t)(c[j] | (c[j + 16] << 4));
    for (int j = 0; j < 32; j++) want[j] = (float)c[j] * 0.375f - 1.5f;
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q4_1, blk, 1, out), IMGD_OK);
    check_all(out, want, 32, "q4_1");
}

static void pack_q5(uint8_t *qh4, uint8_t *qs, const int *c) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((c[j] & 0xF) | ((c[j + 16] & 0xF) << 4));
        qh |= (uint32_t)(c[j] >> 4) << j;
        qh |= (uint32_t)(c[j + 16] >> 4) << (j + 16);
    }
    for (int i = 0; i < 4; i++) qh4[i] = (uint8_t)(qh >> (8 * i));
}

static void test_quant_q5_0_matches_formula(void) {
    uint8_t blk[22];
    float   out[32], want[32];
    int     c[32];
    put_half(blk, -0.75f);
    for (int j = 0; j < 32; j++) c[j] = (int)rnd(32);
    c[0]  = 0;
    c[31] = 31;
    c[16] = 16;
    pack_q5(blk + 2, blk + 6, c);
    for (int j = 0; j < 32; j++) want[j] = (float)(c[j] - 16) * -0.75f;
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q5_0, blk, 1, out), IMGD_OK);
    check_all(out, want, 32, "q5_0");
}

static void test_quant_q5_1_matches_formula(void) {
    uint8_t blk[24];
    float   out[32], want[32];
    int     c[32];
    put_half(blk, 0.125f);
    put_half(blk + 2, 3.0f);
    for (int j = 0; j < 32; j++) c[j] = (int)rnd(32);
    c[5]  = 31;
    c[20] = 0;
    pack_q5(blk + 4, blk + 8, c);
    for (int j = 0; j < 32; j++) want[j] = (float)c[j] * 0.125f + 3.0f;
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q5_1, blk, 1, out), IMGD_OK);
    check_all(out, want, 32, "q5_1");
}

static void test_quant_q8_1_matches_formula(void) {
    uint8_t blk[36];
    float   out[32], want[32];
    put_half(blk, 0.25f);
    put_half(blk + 2, 99.0f); /* s is redundant and ignored */
    for (int j = 0; j < 32; j++) {
        int q      = (int)rnd(256) - 128;
        blk[4 + j] = (uint8_t)(int8_t)q;
        want[j]    = (float)q * 0.25f;
    }
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q8_1, blk, 1, out), IMGD_OK);
    check_all(out, want, 32, "q8_1");
}

/* Q2_K / Q3_K 2-bit code packing: byte 32*h + l holds elements 128h + l + 32k in bits 2k. */
static void pack_2bit(uint8_t *qs, const int *low2) {
    for (size_t h = 0; h < 2; h++) {
        for (size_t l = 0; l < 32; l++) {
            const int *L   = low2 + 128 * h + l;
            qs[32 * h + l] = (uint8_t)(L[0] | (L[32] << 2) | (L[64] << 4) | (L[96] << 6));
        }
    }
}

static void test_quant_q2_k_matches_formula(void) {
    uint8_t blk[84];
    float   out[256], want[256];
    int     c[256], sc[16], mn[16];
    for (int j = 0; j < 16; j++) {
        sc[j]  = (int)rnd(16);
        mn[j]  = (int)rnd(16);
        blk[j] = (uint8_t)(sc[j] | (mn[j] << 4));
    }
    for (int e = 0; e < 256; e++) c[e] = (int)rnd(4);
    pack_2bit(blk + 16, c);
    put_half(blk + 80, 0.5f);
    put_half(blk + 82, 0.125f);
    for (int e = 0; e < 256; e++) {
        const int g = e / 16; /* one scale and min per 16 elements */
        want[e]     = 0.5f * (float)sc[g] * (float)c[e] - 0.125f * (float)mn[g];
    }
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q2_K, blk, 1, out), IMGD_OK);
    check_all(out, want, 256, "q2_k");
}

static void test_quant_q3_k_matches_formula(void) {
    uint8_t blk[110];
    float   out[256], want[256];
    int     c[256], low[256], s[16];
    memset(blk, 0, sizeof blk);
    for (int e = 0; e < 256; e++) {
        c[e]  = (int)rnd(8) - 4; /* -4..3 */
        int L = c[e] + 4;
        if (L > 3) { /* high bit of element e: hmask[e % 32] bit e / 32 */
            blk[e % 32] |= (uint8_t)(1u << (e / 32));
            L -= 4;
        }
        low[e] = L;
    }
    pack_2bit(blk + 32, low);
    for (int j = 0; j < 16; j++) {
        s[j] = j == 0 ? 0 : j == 1 ? 63 : (int)rnd(64); /* stored value; scale = s - 32 */
        if (j < 8) {
            blk[96 + j] |= (uint8_t)(s[j] & 0xF);
        } else {
            blk[96 + j - 8] |= (uint8_t)((s[j] & 0xF) << 4);
        }
        blk[96 + 8 + j % 4] |= (uint8_t)((s[j] >> 4) << (2 * (j / 4)));
    }
    put_half(blk + 108, -0.25f);
    for (int e = 0; e < 256; e++) {
        const int g = e / 16;
        want[e]     = -0.25f * (float)(s[g] - 32) * (float)c[e];
    }
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q3_K, blk, 1, out), IMGD_OK);
    check_all(out, want, 256, "q3_k");
}

/* Q4_K / Q5_K 6-bit scale and min packing (ggml quantize_row_q4_K_ref). */
static void pack_scale_min_k4(uint8_t *s12, const int *sc, const int *mn) {
    memset(s12, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s12[j]     = (uint8_t)sc[j];
            s12[j + 4] = (uint8_t)mn[j];
        } else {
            s12[j + 4] = (uint8_t)((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
            s12[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s12[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

static void test_quant_q4_k_matches_formula(void) {
    uint8_t blk[144];
    float   out[256], want[256];
    int     c[256], sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (int)rnd(64);
        mn[j] = (int)rnd(64);
    }
    sc[7] = 63;
    mn[6] = 63;
    pack_scale_min_k4(blk + 4, sc, mn);
    for (int e = 0; e < 256; e++) c[e] = (int)rnd(16);
    for (int k = 0; k < 4; k++) {
        for (int l = 0; l < 32; l++) {
            blk[16 + 32 * k + l] = (uint8_t)(c[64 * k + l] | (c[64 * k + 32 + l] << 4));
        }
    }
    put_half(blk, 0.0625f);
    put_half(blk + 2, 0.5f);
    for (int e = 0; e < 256; e++) {
        const int g = e / 32; /* one scale and min per 32 elements */
        want[e]     = 0.0625f * (float)sc[g] * (float)c[e] - 0.5f * (float)mn[g];
    }
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q4_K, blk, 1, out), IMGD_OK);
    check_all(out, want, 256, "q4_k");
}

static void test_quant_q5_k_matches_formula(void) {
    uint8_t blk[176];
    float   out[256], want[256];
    int     c[256], sc[8], mn[8];
    memset(blk, 0, sizeof blk);
    for (int j = 0; j < 8; j++) {
        sc[j] = (int)rnd(64);
        mn[j] = (int)rnd(64);
    }
    pack_scale_min_k4(blk + 4, sc, mn);
    for (int e = 0; e < 256; e++) c[e] = (int)rnd(32);
    c[0]   = 31;
    c[255] = 0;
    for (int k = 0; k < 4; k++) {
        for (int l = 0; l < 32; l++) {
            int lo = c[64 * k + l], hi = c[64 * k + 32 + l];
            blk[48 + 32 * k + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
            blk[16 + l] |= (uint8_t)(((lo >> 4) << (2 * k)) | ((hi >> 4) << (2 * k + 1)));
        }
    }
    put_half(blk, 1.5f);
    put_half(blk + 2, -0.125f);
    for (int e = 0; e < 256; e++) {
        const int g = e / 32;
        want[e]     = 1.5f * (float)sc[g] * (float)c[e] - -0.125f * (float)mn[g];
    }
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q5_K, blk, 1, out), IMGD_OK);
    check_all(out, want, 256, "q5_k");
}

static void test_quant_q6_k_matches_formula(void) {
    uint8_t blk[210];
    float   out[256], want[256];
    int     L[256], sc[16];
    memset(blk, 0, sizeof blk);
    for (int e = 0; e < 256; e++) L[e] = (int)rnd(64); /* code + 32 */
    L[0] = 0;
    L[1] = 63;
    for (size_t h = 0; h < 2; h++) {
        uint8_t   *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
        const int *x = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            ql[l]      = (uint8_t)((x[l] & 0xF) | ((x[l + 64] & 0xF) << 4));
            ql[l + 32] = (uint8_t)((x[l + 32] & 0xF) | ((x[l + 96] & 0xF) << 4));
            qh[l]      = (uint8_t)((x[l] >> 4) | ((x[l + 32] >> 4) << 2) | ((x[l + 64] >> 4) << 4) |
                              ((x[l + 96] >> 4) << 6));
        }
    }
    for (int j = 0; j < 16; j++) {
        sc[j]        = j == 0 ? -128 : j == 1 ? 127 : (int)rnd(256) - 128;
        blk[192 + j] = (uint8_t)(int8_t)sc[j];
    }
    put_half(blk + 208, 0.03125f);
    for (int e = 0; e < 256; e++) {
        const int g = e / 16;
        want[e]     = 0.03125f * (float)sc[g] * (float)(L[e] - 32);
    }
    CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q6_K, blk, 1, out), IMGD_OK);
    check_all(out, want, 256, "q6_k");
}

static void test_quant_unaligned_multi_block_matches_aligned(void) {
    /* three Q6_K blocks of random bytes (finite d) at offset 3 vs a copy at offset 0 */
    const size_t n   = (size_t)3 * 210;
    uint8_t     *raw = imgd_malloc(n + 3);
    uint8_t     *al  = imgd_malloc(n);
    float       *a   = imgd_malloc(sizeof(float) * 3 * 256);
    float       *b   = imgd_malloc(sizeof(float) * 3 * 256);
    CHECK(raw && al && a && b);
    if (raw && al && a && b) {
        for (size_t i = 0; i < n; i++) al[i] = (uint8_t)rnd(256);
        for (size_t k = 0; k < 3; k++) put_half(al + 210 * k + 208, 0.5f + (float)k);
        memcpy(raw + 3, al, n);
        CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q6_K, raw + 3, 3, a), IMGD_OK);
        CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q6_K, al, 3, b), IMGD_OK);
        for (int i = 0; i < 3 * 256; i++) CHECK(a[i] == b[i]);
        /* block 2 alone lands where the batch put it */
        CHECK_STATUS(imgd_quant_dequantize(IMGD_DTYPE_Q6_K, al + 420, 1, b), IMGD_OK);
        for (int i = 0; i < 256; i++) CHECK(a[512 + i] == b[i]);
    }
    imgd_free(raw);
    imgd_free(al);
    imgd_free(a);
    imgd_free(b);
}

int main(void) {
    RUN(test_quant_block_sizes_match_traits);
    RUN(test_quant_rejects_plain_dtypes);
    RUN(test_quant_q8_0_hand_block);
    RUN(test_quant_q4_0_hand_block);
    RUN(test_quant_q4_k_hand_block);
    RUN(test_quant_q4_1_matches_formula);
    RUN(test_quant_q5_0_matches_formula);
    RUN(test_quant_q5_1_matches_formula);
    RUN(test_quant_q8_1_matches_formula);
    RUN(test_quant_q2_k_matches_formula);
    RUN(test_quant_q3_k_matches_formula);
    RUN(test_quant_q4_k_matches_formula);
    RUN(test_quant_q5_k_matches_formula);
    RUN(test_quant_q6_k_matches_formula);
    RUN(test_quant_unaligned_multi_block_matches_aligned);
    TEST_END();
}
