/* SHA-256 (FIPS 180-4), streaming. */
#ifndef IMGD_BASE_SHA256_H
#define IMGD_BASE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct imgd_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t  buf[64];
    size_t   n;
} imgd_sha256;

void imgd_sha256_init(imgd_sha256 *s);
void imgd_sha256_update(imgd_sha256 *s, const void *data, size_t len);
void imgd_sha256_final(imgd_sha256 *s, uint8_t digest[32]);
/* Writes 64 lower-case hex digits and a NUL. */
void imgd_sha256_hex(const uint8_t digest[32], char hex[65]);

#endif
