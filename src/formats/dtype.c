#include "formats/dtype.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/error.h"
#include "formats/quant.h"

static const imgd_dtype_traits k_traits[] = {
    [IMGD_DTYPE_F32]     = {"F32", 1, 4, true, false},
    [IMGD_DTYPE_F16]     = {"F16", 1, 2, true, false},
    [IMGD_DTYPE_BF16]    = {"BF16", 1, 2, true, false},
    [IMGD_DTYPE_F64]     = {"F64", 1, 8, true, false},
    [IMGD_DTYPE_I64]     = {"I64", 1, 8, false, false},
    [IMGD_DTYPE_I32]     = {"I32", 1, 4, false, false},
    [IMGD_DTYPE_I16]     = {"I16", 1, 2, false, false},
    [IMGD_DTYPE_I8]      = {"I8", 1, 1, false, false},
    [IMGD_DTYPE_U8]      = {"U8", 1, 1, false, false},
    [IMGD_DTYPE_BOOL]    = {"BOOL", 1, 1, false, false},
    [IMGD_DTYPE_F8_E4M3] = {"F8_E4M3", 1, 1, true, false},
    [IMGD_DTYPE_F8_E5M2] = {"F8_E5M2", 1, 1, true, false},
    [IMGD_DTYPE_Q4_0]    = {"Q4_0", 32, 18, true, true},
    [IMGD_DTYPE_Q4_1]    = {"Q4_1", 32, 20, true, true},
    [IMGD_DTYPE_Q5_0]    = {"Q5_0", 32, 22, true, true},
    [IMGD_DTYPE_Q5_1]    = {"Q5_1", 32, 24, true, true},
    [IMGD_DTYPE_Q8_0]    = {"Q8_0", 32, 34, true, true},
    [IMGD_DTYPE_Q4_K]    = {"Q4_K", 256, 144, true, true},
    [IMGD_DTYPE_Q5_K]    = {"Q5_K", 256, 176, true, true},
    [IMGD_DTYPE_Q6_K]    = {"Q6_K", 256, 210, true, true},
    [IMGD_DTYPE_Q2_K]    = {"Q2_K", 256, 84, true, true},
    [IMGD_DTYPE_Q3_K]    = {"Q3_K", 256, 110, true, true},
    [IMGD_DTYPE_Q8_1]    = {"Q8_1", 32, 36, true, true},
    [IMGD_DTYPE_U16]     = {"U16", 1, 2, false, false},
    [IMGD_DTYPE_U32]     = {"U32", 1, 4, false, false},
    [IMGD_DTYPE_U64]     = {"U64", 1, 8, false, false},
};
_Static_assert(IMGD_ARRAY_LEN(k_traits) == IMGD_DTYPE_COUNT, "dtype traits table");

const imgd_dtype_traits *imgd_dtype_traits_of(imgd_dtype dt) {
    IMGD_ASSERT((unsigned)dt < IMGD_DTYPE_COUNT);
    return &k_traits[dt];
}

const char *imgd_dtype_name(imgd_dtype dt) {
    if ((unsigned)dt >= IMGD_DTYPE_COUNT) return "unknown";
    return k_traits[dt].name;
}

imgd_status imgd_dtype_parse(const char *name, imgd_dtype *out) {
    if (!name || !out) return imgd_fail(IMGD_E_INVALID_ARG, "dtype name is NULL");
    for (int i = 0; i < IMGD_DTYPE_COUNT; i++) {
        if (strcasecmp(name, k_traits[i].name) == 0) {
            *out = (imgd_dtype)i;
            return IMGD_OK;
        }
    }
    return imgd_fail(IMGD_E_INVALID_ARG, "unknown dtype '%s' (expected e.g. f32, f16, bf16)", name);
}

bool imgd_shape_numel(int32_t n_dims, const int64_t *shape, uint64_t *out) {
    uint64_t n = 1;
    for (int32_t i = 0; i < n_dims; i++) {
        if (shape[i] < 0) return false;
        if (!imgd_u64_mul_ok(n, (uint64_t)shape[i], &n)) return false;
    }
    *out = n;
    return true;
}

imgd_status imgd_dtype_nbytes(imgd_dtype dt, int32_t n_dims, const int64_t *shape, uint64_t *out) {
    const imgd_dtype_traits *t = imgd_dtype_traits_of(dt);
    uint64_t                 n;
    for (int32_t i = 0; i < n_dims; i++)
        if (shape[i] < 0) return imgd_fail(IMGD_E_FORMAT, "dimension %d is negative", (int)i);
    if (!imgd_shape_numel(n_dims, shape, &n))
        return imgd_fail(IMGD_E_FORMAT, "element count overflows 64 bits");
    if (t->block_elems > 1) {
        int64_t inner = n_dims > 0 ? shape[n_dims - 1] : 1;
        if (inner % t->block_elems != 0)
            return imgd_fail(IMGD_E_FORMAT,
                             "innermost dimension %lld is not a multiple of the %s block size %u",
                             (long long)inner, t->name, t->block_elems);
    }
    uint64_t bytes;
    if (!imgd_u64_mul_ok(n / t->block_elems, t->block_bytes, &bytes))
        return imgd_fail(IMGD_E_FORMAT, "byte size overflows 64 bits");
    *out = bytes;
    return IMGD_OK;
}

/* ---- float formats ---------------------------------------------------------------- */

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float imgd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp  = (h >> 10) & 0x1f;
    uint32_t man  = h & 0x3ff;
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t imgd_f32_to_f16(float f) {
    uint32_t x    = f32_to_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00);  /* NaN */
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (absx < 0x38800000u) {                                  /* subnormal or zero in f16 */
        if (absx < 0x33000000u) return sign;                   /* < 2^-25 rounds to 0 */
        uint32_t e     = absx >> 23;
        uint32_t m     = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* value / 2^-24 = m * 2^(e - 126) */
        uint32_t r     = m >> shift;
        uint32_t rem   = m & ((1u << shift) - 1);
        uint32_t half  = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r   = absx - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t out = r >> 13;
    uint32_t rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (out & 1))) out++;
    return (uint16_t)(sign | out);
}

float imgd_bf16_to_f32(uint16_t h) {
    return bits_to_f32((uint32_t)h << 16);
}

uint16_t imgd_f32_to_bf16(float f) {
    uint32_t x = f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

float imgd_f8e4m3_to_f32(uint8_t v) {
    uint32_t sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 7;
    float    r;
    if (exp == 15 && man == 7) return NAN; /* e4m3fn: no infinities */
    if (exp == 0)
        r = ldexpf((float)man, -9);
    else
        r = ldexpf((float)(8 + man), (int)exp - 10);
    return sign ? -r : r;
}

float imgd_f8e5m2_to_f32(uint8_t v) {
    return imgd_f16_to_f32((uint16_t)((uint16_t)v << 8));
}

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

imgd_status imgd_dtype_to_f32(imgd_dtype dt, const void *src, uint64_t n, float *dst) {
    const uint8_t           *p = src;
    const imgd_dtype_traits *t = imgd_dtype_traits_of(dt);
    if (t->is_quant) {
        if (n % t->block_elems)
            return imgd_fail(IMGD_E_INVALID_ARG, "%llu elements is not a whole number of %s blocks",
                             (unsigned long long)n, t->name);
        return imgd_quant_dequantize(dt, src, n / t->block_elems, dst);
    }
    switch (dt) {
    case IMGD_DTYPE_F32: memcpy(dst, src, n * 4); break;
    case IMGD_DTYPE_F16:
        for (uint64_t i = 0; i < n; i++) dst[i] = imgd_f16_to_f32(rd16(p + 2 * i));
        break;
    case IMGD_DTYPE_BF16:
        for (uint64_t i = 0; i < n; i++) dst[i] = imgd_bf16_to_f32(rd16(p + 2 * i));
        break;
    case IMGD_DTYPE_F64:
        for (uint64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    case IMGD_DTYPE_F8_E4M3:
        for (uint64_t i = 0; i < n; i++) dst[i] = imgd_f8e4m3_to_f32(p[i]);
        break;
    case IMGD_DTYPE_F8_E5M2:
        for (uint64_t i = 0; i < n; i++) dst[i] = imgd_f8e5m2_to_f32(p[i]);
        break;
    default:
        return imgd_fail(IMGD_E_UNSUPPORTED, "cannot convert %s to f32: not a float type", t->name);
    }
    return IMGD_OK;
}

imgd_status imgd_dtype_from_f32(imgd_dtype dt, const float *src, uint64_t n, void *dst) {
    uint8_t *p = dst;
    switch (dt) {
    case IMGD_DTYPE_F32: memcpy(dst, src, n * 4); break;
    case IMGD_DTYPE_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h   = imgd_f32_to_f16(src[i]);
            p[2 * i]     = (uint8_t)h;
            p[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    case IMGD_DTYPE_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h   = imgd_f32_to_bf16(src[i]);
            p[2 * i]     = (uint8_t)h;
            p[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    default: return imgd_fail(IMGD_E_UNSUPPORTED, "cannot convert f32 to %s", imgd_dtype_name(dt));
    }
    return IMGD_OK;
}
