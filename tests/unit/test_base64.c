/* base64: RFC 4648 vectors, strict rejections with offsets, data: URL prefixes. */
#include "base/alloc.h"
#include "base/base64.h"
#include "base/error.h"
#include "test.h"

static void enc(const char *in, const char *want) {
    char  *out = NULL;
    size_t n   = 0;
    CHECK_STATUS(imgd_base64_encode(in, strlen(in), &out, &n), IMGD_OK);
    CHECK_STR(out, want);
    CHECK_EQ_INT(n, strlen(want));
    imgd_free(out);
}

static void dec(const char *in, const char *want) {
    uint8_t *out = NULL;
    size_t   n   = 0;
    CHECK_STATUS(imgd_base64_decode(in, strlen(in), &out, &n), IMGD_OK);
    CHECK_EQ_INT(n, strlen(want));
    CHECK(out && memcmp(out, want, n) == 0);
    imgd_free(out);
}

/* Decoding must fail with IMGD_E_FORMAT and a message naming `at byte off`. */
static void bad(const char *in, size_t off) {
    uint8_t *out = NULL;
    size_t   n   = 0;
    char     want[32];
    CHECK_STATUS(imgd_base64_decode(in, strlen(in), &out, &n), IMGD_E_FORMAT);
    (void)snprintf(want, sizeof want, "at byte %zu", off);
    CHECK_MSG(strstr(imgd_last_error(), want) != NULL, "'%s': got '%s', want '%s'", in,
              imgd_last_error(), want);
    CHECK(out == NULL);
}

static void test_base64_rfc4648_vectors(void) {
    enc("", "");
    enc("f", "Zg==");
    enc("fo", "Zm8=");
    enc("foo", "Zm9v");
    enc("foob", "Zm9vYg==");
    enc("fooba", "Zm9vYmE=");
    enc("foobar", "Zm9vYmFy");
    dec("", "");
    dec("Zg==", "f");
    dec("Zm8=", "fo");
    dec("Zm9v", "foo");
    dec("Zm9vYg==", "foob");
    dec("Zm9vYmE=", "fooba");
    dec("Zm9vYmFy", "foobar");
}

static void test_base64_roundtrips_every_byte_value(void) {
    uint8_t src[256 + 2];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 7 + 3);
    for (size_t n = 0; n <= sizeof src; n += 1) {
        char    *e  = NULL;
        uint8_t *d  = NULL;
        size_t   en = 0, dn = 0, want = 0;
        CHECK(imgd_base64_encoded_len(n, &want));
        REQUIRE(imgd_base64_encode(src, n, &e, &en) == IMGD_OK);
        CHECK_EQ_INT(en, want);
        if (imgd_base64_decode(e, en, &d, &dn) == IMGD_OK) {
            CHECK_EQ_INT(dn, n);
            CHECK(memcmp(d, src, n) == 0);
        } else {
            CHECK_MSG(false, "decode of %zu bytes: %s", n, imgd_last_error());
        }
        imgd_free(e);
        imgd_free(d);
    }
done:;
}

static void test_base64_rejects_bad_input_with_offset(void) {
    bad("Zm9", 3);       /* length not a multiple of 4 */
    bad("Zm9vY", 5);     /* truncated */
    bad("Zm9v Yg==", 4); /* space */
    bad("Zm9v\nYg==", 4);
    bad("Zm9v-g==", 4);       /* base64url */
    bad("Zm9v_g==", 4);       /* base64url */
    bad("Zm9v*g==", 4);       /* junk */
    bad("Zm\xc3\xa9Yg==", 2); /* non-ASCII */
    bad("Z===", 1);           /* too much padding */
    bad("====", 0);
    bad("Zg=a", 2);     /* padding in the middle */
    bad("Zg==Zg==", 2); /* padding before the end */
    bad("Zh==", 1);     /* non-zero unused bits (canonical form is Zg==) */
    bad("Zm9=", 2);     /* 'Zm8=' is canonical */
}

static void test_base64_check_reports_decoded_length(void) {
    size_t n = 99;
    CHECK_STATUS(imgd_base64_check("Zm9vYmE=", 8, &n), IMGD_OK);
    CHECK_EQ_INT(n, 5);
    CHECK_STATUS(imgd_base64_check("", 0, &n), IMGD_OK);
    CHECK_EQ_INT(n, 0);
    CHECK_STATUS(imgd_base64_check("Zm9vYmE", 7, NULL), IMGD_E_FORMAT);
}

static void test_base64_data_url_prefix(void) {
    imgd_data_url u;
    const char   *s = "data:image/png;base64,Zm9v";
    CHECK_STATUS(imgd_data_url_parse(s, strlen(s), &u), IMGD_OK);
    CHECK(u.is_data_url);
    CHECK_EQ_INT(u.mime_len, 9);
    CHECK(memcmp(u.mime, "image/png", 9) == 0);
    CHECK_EQ_INT(u.data_offset, 22);
    CHECK_EQ_INT(u.data_len, 4);
    s = "DATA:;BASE64,Zm9v"; /* case-insensitive, no media type */
    CHECK_STATUS(imgd_data_url_parse(s, strlen(s), &u), IMGD_OK);
    CHECK(u.is_data_url && u.mime_len == 0 && u.data_len == 4);
    s = "Zm9v";
    CHECK_STATUS(imgd_data_url_parse(s, strlen(s), &u), IMGD_OK);
    CHECK(!u.is_data_url && u.data == s && u.data_len == 4);
    s = "data:text/plain,hello"; /* not base64 */
    CHECK_STATUS(imgd_data_url_parse(s, strlen(s), &u), IMGD_E_FORMAT);
    s = "data:image/png;base64"; /* no comma */
    CHECK_STATUS(imgd_data_url_parse(s, strlen(s), &u), IMGD_E_FORMAT);
}

static void test_base64_data_url_errors_count_from_start(void) {
    const char *s = "data:image/png;base64,Zm9v!g==";
    CHECK_STATUS(imgd_base64_check_data_url(s, strlen(s), NULL), IMGD_E_FORMAT);
    CHECK_MSG(strstr(imgd_last_error(), "at byte 26") != NULL, "%s", imgd_last_error());
    uint8_t *out = NULL;
    size_t   n   = 0;
    s            = "data:image/webp;base64,Zm9vYg==";
    REQUIRE(imgd_base64_decode_data_url(s, strlen(s), &out, &n) == IMGD_OK);
    CHECK(n == 4 && memcmp(out, "foob", 4) == 0);
    imgd_free(out);
done:;
}

static void test_base64_encoded_len_overflow(void) {
    size_t n = 0;
    CHECK(!imgd_base64_encoded_len(SIZE_MAX, &n));
    CHECK(imgd_base64_encoded_len(3, &n) && n == 4);
    char *out = NULL;
    CHECK_STATUS(imgd_base64_encode("", SIZE_MAX, &out, NULL), IMGD_E_TOO_LARGE);
}

int main(void) {
    RUN(test_base64_rfc4648_vectors);
    RUN(test_base64_roundtrips_every_byte_value);
    RUN(test_base64_rejects_bad_input_with_offset);
    RUN(test_base64_check_reports_decoded_length);
    RUN(test_base64_data_url_prefix);
    RUN(test_base64_data_url_errors_count_from_start);
    RUN(test_base64_encoded_len_overflow);
    TEST_END();
}
