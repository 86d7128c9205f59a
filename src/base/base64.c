/* Strict base64 and data: URL splitting (see base64.h for the rules). */
#include "base/base64.h"

#include <string.h>

#include "base/alloc.h"
#include "base/error.h"

static const char g_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 symbol, or -1. */
static int sym_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* ---- encode --------------------------------------------------------------------------- */

bool imgd_base64_encoded_len(size_t n, size_t *out) {
    size_t groups = n / 3 + (n % 3 != 0);
    return imgd_size_mul(groups, 4, out);
}

imgd_status imgd_base64_encode(const void *src, size_t n, char **out, size_t *out_len) {
    size_t len, alloc;
    if (!imgd_base64_encoded_len(n, &len) || !imgd_size_add(len, 1, &alloc)) {
        return imgd_fail(IMGD_E_TOO_LARGE, "base64: %zu bytes are too many to encode", n);
    }
    char *dst = imgd_malloc(alloc);
    if (!dst) return imgd_fail(IMGD_E_NOMEM, "base64: out of memory for %zu characters", len);
    const uint8_t *s = src;
    size_t         o = 0;
    for (size_t i = 0; i < n; i += 3) {
        size_t   left = n - i;
        uint32_t v    = (uint32_t)s[i] << 16;
        if (left > 1) v |= (uint32_t)s[i + 1] << 8;
        if (left > 2) v |= s[i + 2];
        dst[o++] = g_alphabet[(v >> 18) & 63];
        dst[o++] = g_alphabet[(v >> 12) & 63];
        dst[o++] = (char)(left > 1 ? g_alphabet[(v >> 6) & 63] : '=');
        dst[o++] = (char)(left > 2 ? g_alphabet[v & 63] : '=');
    }
    dst[o] = '\0';
    *out   = dst;
    if (out_len) *out_len = o;
    return IMGD_OK;
}

/* ---- decode --------------------------------------------------------------------------- */

/* Number of '=' at the end of a length-checked input (0, 1 or 2; more is caught later). */
static size_t pad_count(const char *s, size_t n) {
    size_t p = 0;
    while (p < 2 && p < n && s[n - 1 - p] == '=') p++;
    return p;
}

/* i: offset in s; base: offset of s in what the caller sees (error messages use base + i). */
static imgd_status bad_char(const char *s, size_t i, size_t base) {
    unsigned char c = (unsigned char)s[i];
    i += base;
    if (c == '=') {
        return imgd_fail(IMGD_E_FORMAT,
                         "base64: padding '=' at byte %zu before the end of the data", i);
    }
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
        return imgd_fail(IMGD_E_FORMAT,
                         "base64: whitespace (0x%02x) at byte %zu; send the data on one line "
                         "without spaces",
                         c, i);
    }
    if (c == '-' || c == '_') {
        return imgd_fail(IMGD_E_FORMAT,
                         "base64: '%c' at byte %zu is base64url; use the standard alphabet "
                         "('+' and '/')",
                         c, i);
    }
    if (c >= 0x20 && c < 0x7f) {
        return imgd_fail(IMGD_E_FORMAT, "base64: invalid character '%c' at byte %zu", c, i);
    }
    return imgd_fail(IMGD_E_FORMAT, "base64: invalid byte 0x%02x at byte %zu", c, i);
}

/* The alphabet, then the padding's place and amount, then the length: so the offset in a
 * message is that of the first wrong character, not the end of the data. */
static imgd_status check_shape(const char *s, size_t n, size_t base) {
    size_t i = 0;
    while (i < n && s[i] != '=') {
        if (sym_value((unsigned char)s[i]) < 0) return bad_char(s, i, base);
        i++;
    }
    size_t first_pad = i;
    for (; i < n; i++) {
        if (s[i] != '=') {
            if (sym_value((unsigned char)s[i]) < 0) return bad_char(s, i, base);
            return bad_char(s, first_pad, base); /* padding before more data */
        }
    }
    if (n - first_pad > 2) {
        return imgd_fail(IMGD_E_FORMAT, "base64: %zu padding characters at byte %zu (at most 2)",
                         n - first_pad, base + first_pad);
    }
    if (n % 4 != 0) {
        return imgd_fail(IMGD_E_FORMAT,
                         "base64: length %zu is not a multiple of 4 (truncated, or missing "
                         "'=' padding) at byte %zu",
                         n, base + n);
    }
    return IMGD_OK;
}

/* Validates and, when dst is non-NULL, decodes. *len receives the decoded size. Offsets in
 * messages are base + the offset in s. */
static imgd_status run(const char *s, size_t n, size_t base, uint8_t *dst, size_t *len) {
    imgd_status st = check_shape(s, n, base);
    if (st != IMGD_OK) return st;
    size_t pad = pad_count(s, n), body = n - pad, o = 0;
    for (size_t i = 0; i < body; i += 4) {
        uint32_t v = 0;
        size_t   k = IMGD_MIN((size_t)4, body - i);
        for (size_t j = 0; j < k; j++) {
            int d = sym_value((unsigned char)s[i + j]);
            if (d < 0) return bad_char(s, i + j, base);
            v |= (uint32_t)d << (18 - 6 * j);
        }
        size_t   bytes  = k - 1; /* 4 symbols: 3 bytes, 3: 2, 2: 1 */
        uint32_t unused = bytes == 3 ? 0 : (v >> (bytes == 2 ? 6 : 12)) & (bytes == 2 ? 3u : 15u);
        if (unused != 0) {
            return imgd_fail(IMGD_E_FORMAT,
                             "base64: non-zero unused bits in the last symbol at byte %zu "
                             "(not a canonical encoding)",
                             base + i + k - 1);
        }
        if (dst) {
            dst[o] = (uint8_t)(v >> 16);
            if (bytes > 1) dst[o + 1] = (uint8_t)(v >> 8);
            if (bytes > 2) dst[o + 2] = (uint8_t)v;
        }
        o += bytes;
    }
    *len = o;
    return IMGD_OK;
}

static imgd_status check_at(const char *src, size_t n, size_t base, size_t *decoded_len) {
    size_t      len = 0;
    imgd_status st  = run(src, n, base, NULL, &len);
    if (st == IMGD_OK && decoded_len) *decoded_len = len;
    return st;
}

static imgd_status decode_at(const char *src, size_t n, size_t base, uint8_t **out,
                             size_t *out_len) {
    size_t      len = 0;
    imgd_status st  = run(src, n, base, NULL, &len);
    if (st != IMGD_OK) return st;
    uint8_t *dst = imgd_malloc(len ? len : 1);
    if (!dst) return imgd_fail(IMGD_E_NOMEM, "base64: out of memory for %zu bytes", len);
    st = run(src, n, base, dst, &len);
    IMGD_ASSERT(st == IMGD_OK);
    *out     = dst;
    *out_len = len;
    return IMGD_OK;
}

imgd_status imgd_base64_check(const char *src, size_t n, size_t *decoded_len) {
    return check_at(src, n, 0, decoded_len);
}

imgd_status imgd_base64_decode(const char *src, size_t n, uint8_t **out, size_t *out_len) {
    return decode_at(src, n, 0, out, out_len);
}

/* ---- data: URLs ----------------------------------------------------------------------- */

static bool prefix_ci(const char *s, size_t n, const char *p) {
    size_t k = strlen(p);
    if (n < k) return false;
    for (size_t i = 0; i < k; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != p[i]) return false;
    }
    return true;
}

imgd_status imgd_data_url_parse(const char *s, size_t n, imgd_data_url *out) {
    imgd_data_url u = {.mime = "", .data = s, .data_len = n};
    if (!prefix_ci(s, n, "data:")) {
        *out = u;
        return IMGD_OK;
    }
    const char *comma = memchr(s, ',', n);
    if (!comma) {
        return imgd_fail(IMGD_E_FORMAT, "data: URL without ',' before the payload (expected "
                                        "data:<media type>;base64,<data>)");
    }
    size_t            head  = (size_t)(comma - s); /* "data:...;base64" */
    static const char b64[] = ";base64";
    if (head < 5 + sizeof b64 - 1 || !prefix_ci(comma - (sizeof b64 - 1), sizeof b64 - 1, b64)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "data: URL at byte %zu is not base64 (expected data:<media "
                         "type>;base64,<data>)",
                         head);
    }
    u.is_data_url = true;
    u.mime        = s + 5;
    u.mime_len    = head - 5 - (sizeof b64 - 1);
    u.data_offset = head + 1;
    u.data        = s + u.data_offset;
    u.data_len    = n - u.data_offset;
    *out          = u;
    return IMGD_OK;
}

imgd_status imgd_base64_check_data_url(const char *s, size_t n, size_t *decoded_len) {
    imgd_data_url u;
    imgd_status   st = imgd_data_url_parse(s, n, &u);
    if (st != IMGD_OK) return st;
    return check_at(u.data, u.data_len, u.data_offset, decoded_len);
}

imgd_status imgd_base64_decode_data_url(const char *s, size_t n, uint8_t **out, size_t *out_len) {
    imgd_data_url u;
    imgd_status   st = imgd_data_url_parse(s, n, &u);
    if (st != IMGD_OK) return st;
    return decode_at(u.data, u.data_len, u.data_offset, out, out_len);
}
