/* libFuzzer target: the restricted unpickler on arbitrary bytes, with small caps. The
 * bytes are then wrapped as "a/data.pkl" in a stored zip next to four storages
 * ("a/data/0".."a/data/3", 64 bytes each) and read as a checkpoint, so the fuzzer also
 * drives the object-graph walk and every tensor-view check in ckpt.c. */
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "base/alloc.h"
#include "formats/pickle.h"
#include "formats/weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_STORAGES    4
#define STORAGE_BYTES 64

typedef struct zw {
    uint8_t *p;
    size_t   len;
} zw;

static void put_le(zw *b, uint64_t v, int k) {
    for (int i = 0; i < k; i++) b->p[b->len++] = (uint8_t)(v >> (8 * i));
}

static void put(zw *b, const void *p, size_t n) {
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* One local header + data (stored); returns the header offset. */
static size_t local(zw *b, const char *name, const uint8_t *d, size_t n, uint32_t crc) {
    size_t at = b->len;
    put_le(b, 0x04034b50, 4);
    put_le(b, 20, 2);
    put_le(b, 0, 2);
    put_le(b, 0, 2);
    put_le(b, 0, 4);
    put_le(b, crc, 4);
    put_le(b, n, 4);
    put_le(b, n, 4);
    put_le(b, strlen(name), 2);
    put_le(b, 0, 2);
    put(b, name, strlen(name));
    put(b, d, n);
    return at;
}

static void central(zw *b, const char *name, size_t n, uint32_t crc, size_t off) {
    put_le(b, 0x02014b50, 4);
    put_le(b, 20, 2);
    put_le(b, 20, 2);
    put_le(b, 0, 2);
    put_le(b, 0, 2);
    put_le(b, 0, 4);
    put_le(b, crc, 4);
    put_le(b, n, 4);
    put_le(b, n, 4);
    put_le(b, strlen(name), 2);
    put_le(b, 0, 4);
    put_le(b, 0, 4);
    put_le(b, 0, 4);
    put_le(b, off, 4);
    put(b, name, strlen(name));
}

static void read_as_checkpoint(const uint8_t *data, size_t size) {
    static const char *const names[N_STORAGES + 1] = {"a/data.pkl", "a/data/0", "a/data/1",
                                                      "a/data/2", "a/data/3"};
    uint8_t                  storage[STORAGE_BYTES];
    for (size_t i = 0; i < sizeof storage; i++) storage[i] = (uint8_t)(i * 37u + 11u);
    size_t cap = size + (size_t)(N_STORAGES + 1) * (256 + STORAGE_BYTES) + 22;
    zw     b   = {imgd_malloc(cap), 0};
    if (!b.p || size > UINT32_MAX) {
        imgd_free(b.p);
        return;
    }
    size_t   off[N_STORAGES + 1], len[N_STORAGES + 1];
    uint32_t crc[N_STORAGES + 1];
    for (int i = 0; i <= N_STORAGES; i++) {
        const uint8_t *d = i == 0 ? data : storage;
        len[i]           = i == 0 ? size : STORAGE_BYTES;
        crc[i]           = (uint32_t)crc32(0, d, (uInt)len[i]);
        off[i]           = local(&b, names[i], d, len[i], crc[i]);
    }
    size_t cd = b.len;
    for (int i = 0; i <= N_STORAGES; i++) central(&b, names[i], len[i], crc[i], off[i]);
    size_t cd_size = b.len - cd;
    put_le(&b, 0x06054b50, 4);
    put_le(&b, 0, 4);
    put_le(&b, N_STORAGES + 1, 2);
    put_le(&b, N_STORAGES + 1, 2);
    put_le(&b, cd_size, 4);
    put_le(&b, cd, 4);
    put_le(&b, 0, 2);

    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    lim.header_size_max = 1 << 20;
    lim.pickle_ops_max  = 1 << 20;
    imgd_weights *w     = NULL;
    if (imgd_weights_new(IMGD_FORMAT_CKPT, "fuzz.ckpt", &w) == IMGD_OK) {
        if (imgd_ckpt_read("fuzz.ckpt", b.p, b.len, &lim, w) == IMGD_OK) {
            for (size_t i = 0; i < imgd_weights_tensor_count(w); i++) {
                imgd_tensor_info t;
                if (imgd_weights_tensor(w, i, &t) == IMGD_OK && t.nbytes) {
                    volatile uint8_t sink = ((const uint8_t *)t.data)[0];
                    sink ^= ((const uint8_t *)t.data)[t.nbytes - 1];
                    (void)sink;
                }
            }
        }
        imgd_weights_free(w);
    }
    imgd_free(b.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    imgd_pickle_params p = {"fuzz.ckpt", "a/data.pkl", 1 << 20, 1 << 20};
    imgd_arena         arena;
    imgd_pickle_result r;
    imgd_arena_init(&arena, imgd_pickle_arena_cap(size));
    (void)imgd_pickle_load(&p, data, size, &arena, &r);
    imgd_arena_free(&arena);
    read_as_checkpoint(data, size);
    return 0;
}
