/* Strict base64 (RFC 4648 section 4: standard alphabet, '=' padding required) and the
 * data: URL prefix (RFC 2397) that browsers and clients put in front of it.
 *
 * Strict means: the length is a multiple of 4, only A-Z a-z 0-9 + / appear before the
 * padding, padding is "=" or "==" at the very end only, the unused low bits of the last
 * symbol are zero (one encoding per byte string), and no whitespace or line breaks.
 * Every rejection is IMGD_E_FORMAT with the byte offset of the offending character. */
#ifndef IMGD_BASE_BASE64_H
#define IMGD_BASE_BASE64_H

#include <stdbool.h>

#include "base/base.h"

/* Characters needed to encode n bytes (4 * ceil(n / 3)), not counting a NUL. false when
 * that overflows size_t (*out untouched). */
bool imgd_base64_encoded_len(size_t n, size_t *out);

/* Encodes src[0..n) into a new NUL-terminated string (*out, free with imgd_free); *out_len
 * (may be NULL) receives its length. IMGD_E_TOO_LARGE when the size overflows, IMGD_E_NOMEM.
 * Outputs written only on success. Thread-safety: safe from any thread. */
imgd_status imgd_base64_encode(const void *src, size_t n, char **out, size_t *out_len);

/* Checks src[0..n) without decoding; *decoded_len (may be NULL) receives the byte count it
 * decodes to. IMGD_E_FORMAT with the offset of the first bad character (message:
 * "base64: ... at byte N"). Allocates nothing. */
imgd_status imgd_base64_check(const char *src, size_t n, size_t *decoded_len);

/* Decodes src[0..n) into a new buffer (*out, free with imgd_free; non-NULL even for empty
 * input) of *out_len bytes. IMGD_E_FORMAT as imgd_base64_check, IMGD_E_NOMEM. Outputs
 * written only on success. */
imgd_status imgd_base64_decode(const char *src, size_t n, uint8_t **out, size_t *out_len);

/* A string that may be a base64 data: URL ("data:image/png;base64,iVBOR...") or plain
 * base64. Pointers borrow from the parsed string. */
typedef struct imgd_data_url {
    const char *mime; /* media type as written ("" when absent or not a data: URL) */
    size_t      mime_len;
    const char *data; /* the base64 payload */
    size_t      data_len;
    size_t      data_offset; /* offset of data in the input (add to base64 error offsets) */
    bool        is_data_url; /* the input started with "data:" (any case) */
} imgd_data_url;

/* Splits s[0..n): with a "data:" prefix (case-insensitive) the part before the first ','
 * must end in ";base64" (else IMGD_E_FORMAT: only base64 data: URLs carry binary images);
 * a "data:" string without ',' is IMGD_E_FORMAT. Without the prefix the whole input is the
 * payload. Does not check the payload. */
imgd_status imgd_data_url_parse(const char *s, size_t n, imgd_data_url *out);

/* imgd_base64_check / imgd_base64_decode of a string that may carry a data: URL prefix
 * (imgd_data_url_parse); error offsets count from the start of s, prefix included. */
imgd_status imgd_base64_check_data_url(const char *s, size_t n, size_t *decoded_len);
imgd_status imgd_base64_decode_data_url(const char *s, size_t n, uint8_t **out, size_t *out_len);

#endif
