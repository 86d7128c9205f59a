/* base: sha256, UTF-8, string map, capped buffer, arena, errors, dtype conversions. */
#include "base/alloc.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/json.h"
#include "base/sha256.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "test.h"

static void sha_hex(const char *msg, size_t n, char hex[65]) {
    imgd_sha256 s;
    uint8_t     d[32];
    imgd_sha256_init(&s);
    imgd_sha256_update(&s, msg, n);
    imgd_sha256_final(&s, d);
    imgd_sha256_hex(d, hex);
}

static void test_base_sha256_known_vectors(void) {
    char h[65];
    sha_hex("", 0, h);
    CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha_hex("abc", 3, h);
    CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha_hex(m, strlen(m), h);
    CHECK_STR(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_base_sha256_streaming_equals_oneshot(void) {
    static char big[1000000];
    memset(big, 'a', sizeof big);
    imgd_sha256 s;
    uint8_t     d[32];
    char        h[65];
    imgd_sha256_init(&s);
    for (size_t off = 0; off < sizeof big;) {
        size_t n = (off * 7 + 13) % 997 + 1;
        if (n > sizeof big - off) n = sizeof big - off;
        imgd_sha256_update(&s, big + off, n);
        off += n;
    }
    imgd_sha256_final(&s, d);
    imgd_sha256_hex(d, h);
    CHECK_STR(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_base_utf8_validation(void) {
    CHECK(imgd_utf8_valid("plain", 5));
    CHECK(imgd_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    CHECK(!imgd_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!imgd_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!imgd_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(!imgd_utf8_valid("\xe2\x82", 2));         /* truncated */
    CHECK(!imgd_utf8_valid("a\0b", 3));             /* NUL */
    CHECK(!imgd_utf8_valid("\x80", 1));             /* stray continuation */
}

static void test_base_strmap_put_get_duplicate(void) {
    imgd_strmap m;
    imgd_strmap_init(&m);
    char keys[300][16];
    for (int i = 0; i < 300; i++) {
        imgd_fmt(keys[i], sizeof keys[i], "k%d", i);
        CHECK_STATUS(imgd_strmap_put(&m, keys[i], (size_t)i, NULL), IMGD_OK);
    }
    size_t v = 0;
    CHECK(imgd_strmap_get(&m, "k217", &v) && v == 217);
    CHECK(!imgd_strmap_get(&m, "k300", &v));
    size_t ex = 0;
    CHECK_STATUS(imgd_strmap_put(&m, "k5", 9, &ex), IMGD_E_INVALID_ARG);
    CHECK_EQ_INT(ex, 5);
    imgd_strmap_free(&m);
}

static void test_base_buf_cap_is_enforced(void) {
    imgd_buf b;
    imgd_buf_init(&b, 10);
    CHECK_STATUS(imgd_buf_puts(&b, "0123456789"), IMGD_OK);
    CHECK_STATUS(imgd_buf_puts(&b, "x"), IMGD_E_TOO_LARGE);
    CHECK_EQ_INT(b.len, 10);
    imgd_buf_free(&b);
    imgd_buf_init(&b, 0);
    CHECK_STATUS(imgd_buf_json_str(&b, "a\"b\\c\n\x01"), IMGD_OK);
    CHECK_STR(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    imgd_buf_free(&b);
}

static void test_base_arena_cap_and_alignment(void) {
    imgd_arena a;
    imgd_arena_init(&a, 200000);
    void *p = imgd_arena_alloc(&a, 3);
    void *q = imgd_arena_alloc(&a, 5);
    CHECK(p && q && ((uintptr_t)q % 16) == 0);
    CHECK(imgd_arena_alloc(&a, 1000000) == NULL);
    imgd_arena_free(&a);
}

static void test_base_error_prefix_and_names(void) {
    imgd_fail(IMGD_E_FORMAT, "inner %d", 7);
    imgd_fail_prefix(IMGD_E_FORMAT, "outer");
    CHECK_STR(imgd_last_error(), "outer: inner 7");
    CHECK_STR(imgd_status_name(IMGD_E_UNSAFE), "unsafe");
    CHECK_STR(imgd_status_name((imgd_status)99), "unknown");
}

static void test_base_json_caps(void) {
    cJSON *j = NULL;
    CHECK_STATUS(imgd_json_parse("t", "{\"a\":[1]}", 9, 100, 2, &j), IMGD_OK);
    cJSON_Delete(j);
    j = NULL;
    CHECK_STATUS(imgd_json_parse("t", "{\"a\":[[1]]}", 11, 100, 2, &j), IMGD_E_TOO_LARGE);
    CHECK_STATUS(imgd_json_parse("t", "{\"a\":1}", 7, 3, 8, &j), IMGD_E_TOO_LARGE);
    CHECK_STATUS(imgd_json_parse("t", "{\"a\":\"\\u0000\"}", 14, 100, 8, &j), IMGD_E_FORMAT);
    CHECK_STATUS(imgd_json_parse("t", "{\"a\":\"[[[[\"}", 12, 100, 2, &j), IMGD_OK);
    cJSON_Delete(j);
}

static void test_base_f16_bf16_roundtrip_edges(void) {
    CHECK_EQ_INT(imgd_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(imgd_f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ_INT(imgd_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(imgd_f32_to_f16(65520.0f), 0x7c00); /* rounds to inf */
    CHECK_EQ_INT(imgd_f32_to_f16(5.9604645e-08f), 0x0001);
    CHECK_EQ_INT(imgd_f32_to_f16(1e-9f), 0x0000);
    CHECK_EQ_INT(imgd_f32_to_f16(1.0009765625f), 0x3c01);
    CHECK_EQ_INT(imgd_f32_to_f16(1.00048828125f), 0x3c00); /* tie to even */
    CHECK((imgd_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (imgd_f32_to_f16(NAN) & 0x3ff));
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = imgd_f16_to_f32((uint16_t)h);
        if (f != f) continue;
        if (imgd_f32_to_f16(f) != h) {
            CHECK_MSG(0, "f16 %04x does not round-trip", h);
            break;
        }
    }
    CHECK_EQ_INT(imgd_f32_to_bf16(1.0f), 0x3f80);
    CHECK_NEAR(imgd_bf16_to_f32(0x4049), 3.140625, 0);
    CHECK_EQ_INT(imgd_f32_to_bf16(1.00390625f), 0x3f80); /* tie to even */
    CHECK_NEAR(imgd_f8e4m3_to_f32(0x38), 1.0, 0);
    CHECK_NEAR(imgd_f8e4m3_to_f32(0x7e), 448.0, 0);
    CHECK_NEAR(imgd_f8e5m2_to_f32(0x3c), 1.0, 0);
}

static void test_base_dtype_nbytes_checks(void) {
    int64_t  s[2] = {3, 64};
    uint64_t n    = 0;
    CHECK_STATUS(imgd_dtype_nbytes(IMGD_DTYPE_Q8_0, 2, s, &n), IMGD_OK);
    CHECK_EQ_INT(n, 3 * 2 * 34);
    s[1] = 33;
    CHECK_STATUS(imgd_dtype_nbytes(IMGD_DTYPE_Q8_0, 2, s, &n), IMGD_E_FORMAT);
    s[1] = -1;
    CHECK_STATUS(imgd_dtype_nbytes(IMGD_DTYPE_F32, 2, s, &n), IMGD_E_FORMAT);
    imgd_dtype dt;
    CHECK_STATUS(imgd_dtype_parse("bf16", &dt), IMGD_OK);
    CHECK_EQ_INT(dt, IMGD_DTYPE_BF16);
    CHECK_STATUS(imgd_dtype_parse("f17", &dt), IMGD_E_INVALID_ARG);
}

static void test_base_alloc_counts_bytes(void) {
    uint64_t before = imgd_alloc_bytes_in_use();
    void    *p      = imgd_malloc(1000);
    CHECK(p != NULL);
    if (!p) return;
    CHECK(imgd_alloc_bytes_in_use() >= before + 1000);
    void *q = imgd_realloc(p, 10);
    CHECK(q != NULL);
    imgd_free(q ? q : p);
    CHECK_EQ_INT(imgd_alloc_bytes_in_use(), before);
    size_t out;
    CHECK(!imgd_size_mul(SIZE_MAX / 2, 3, &out));
    CHECK(!imgd_size_add(SIZE_MAX, 1, &out));
}

int main(void) {
    RUN(test_base_sha256_known_vectors);
    RUN(test_base_sha256_streaming_equals_oneshot);
    RUN(test_base_utf8_validation);
    RUN(test_base_strmap_put_get_duplicate);
    RUN(test_base_buf_cap_is_enforced);
    RUN(test_base_arena_cap_and_alignment);
    RUN(test_base_error_prefix_and_names);
    RUN(test_base_json_caps);
    RUN(test_base_f16_bf16_roundtrip_edges);
    RUN(test_base_dtype_nbytes_checks);
    RUN(test_base_alloc_counts_bytes);
    TEST_END();
}
