/* libFuzzer target: the strict base64 decoder and the data: URL splitter on arbitrary
 * bytes. Strictness makes decoding one-to-one, so whatever decodes must re-encode to the
 * exact input; and any bytes must survive an encode/decode round trip. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip_decoded(const char *s, size_t n) {
    uint8_t    *bytes = NULL;
    size_t      len = 0, checked = 0;
    imgd_status st = imgd_base64_decode(s, n, &bytes, &len);
    if ((imgd_base64_check(s, n, &checked) == IMGD_OK) != (st == IMGD_OK || st == IMGD_E_NOMEM)) {
        __builtin_trap();
    }
    if (st != IMGD_OK) return;
    if (checked != len) __builtin_trap();
    char  *again = NULL;
    size_t alen  = 0;
    if (imgd_base64_encode(bytes, len, &again, &alen) == IMGD_OK) {
        if (alen != n || memcmp(again, s, n) != 0) __builtin_trap();
        imgd_free(again);
    }
    imgd_free(bytes);
}

static void roundtrip_encoded(const uint8_t *data, size_t size) {
    char    *text = NULL;
    size_t   tlen = 0, blen = 0;
    uint8_t *back = NULL;
    if (imgd_base64_encode(data, size, &text, &tlen) != IMGD_OK) return;
    if (imgd_base64_decode(text, tlen, &back, &blen) == IMGD_OK) {
        if (blen != size || (size && memcmp(back, data, size) != 0)) __builtin_trap();
        imgd_free(back);
    }
    imgd_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    roundtrip_decoded(s, size);
    roundtrip_encoded(data, size);
    imgd_data_url u;
    if (imgd_data_url_parse(s, size, &u) == IMGD_OK) {
        if (u.data + u.data_len != s + size || u.data != s + u.data_offset) __builtin_trap();
        uint8_t *bytes = NULL;
        size_t   len   = 0;
        if (imgd_base64_decode_data_url(s, size, &bytes, &len) == IMGD_OK) imgd_free(bytes);
        roundtrip_decoded(u.data, u.data_len);
    }
    return 0;
}
