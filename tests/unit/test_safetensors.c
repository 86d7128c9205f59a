/* safetensors reader and writer: valid files and hostile ones. */
#include "base/alloc.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "formats/weights.h"
#include "test.h"
#include "util.h"

/* ---- helpers ---------------------------------------------------------------------- */

static uint8_t g_file[1 << 16];

/* Lays out [u64 len][header][data_len bytes of pattern] into g_file; returns size. */
static size_t make(const char *header, size_t data_len) {
    size_t hl = strlen(header);
    for (int i = 0; i < 8; i++) g_file[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(g_file + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) g_file[8 + hl + i] = (uint8_t)(i * 7 + 1);
    return 8 + hl + data_len;
}

/* Parses g_file[0..n) and returns the status; the message is checked for `word`. */
static imgd_status parse_expect(size_t n, imgd_status want, const char *word) {
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_new(IMGD_FORMAT_SAFETENSORS, "t.safetensors", &w), IMGD_OK);
    if (!w) return IMGD_E_NOMEM;
    imgd_status st = imgd_safetensors_read("t.safetensors", g_file, n, &lim, w);
    CHECK_STATUS(st, want);
    if (word && st != IMGD_OK)
        CHECK_MSG(strstr(imgd_last_error(), word) != NULL, "message '%s' lacks '%s'",
                  imgd_last_error(), word);
    imgd_weights_free(w);
    return st;
}

static void bad(const char *header, size_t data_len, const char *word) {
    parse_expect(make(header, data_len), IMGD_E_FORMAT, word);
}

/* ---- valid ------------------------------------------------------------------------ */

static void test_safetensors_reads_two_tensors_zero_copy(void) {
    size_t           n = make("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                                        "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[16,22]},"
                                        "\"__metadata__\":{\"format\":\"pt\"}}  ",
                              22);
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_new(IMGD_FORMAT_SAFETENSORS, "t", &w), IMGD_OK);
    if (!w) return;
    CHECK_STATUS(imgd_safetensors_read("t", g_file, n, &lim, w), IMGD_OK);
    CHECK_EQ_INT(imgd_weights_tensor_count(w), 2);
    imgd_tensor_info t;
    CHECK_STATUS(imgd_weights_find(w, "b", &t), IMGD_OK);
    CHECK_EQ_INT(t.dtype, IMGD_DTYPE_F16);
    CHECK_EQ_INT(t.n_dims, 1);
    CHECK_EQ_INT(t.shape[0], 3);
    CHECK_EQ_INT(t.nbytes, 6);
    size_t hl = n - 8 - 22;
    CHECK(t.data == g_file + 8 + hl + 16);
    CHECK_STR(imgd_weights_meta_find(w, "format"), "pt");
    CHECK_STATUS(imgd_weights_find(w, "missing", &t), IMGD_E_INVALID_ARG);
    imgd_weights_free(w);
}

static void test_safetensors_accepts_empty_scalar_and_zero_size(void) {
    parse_expect(make("{}", 0), IMGD_OK, NULL);
    parse_expect(make("{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                      "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[8,8]}}",
                      8),
                 IMGD_OK, NULL);
    parse_expect(make("{\"__metadata__\":{},\"x\":{\"dtype\":\"BOOL\",\"shape\":[3],"
                      "\"data_offsets\":[0,3]}}",
                      3),
                 IMGD_OK, NULL);
}

static void test_safetensors_accepts_every_dtype(void) {
    static const char *const names[] = {"F64", "F32", "F16", "BF16", "I64",     "I32",
                                        "I16", "I8",  "U8",  "BOOL", "F8_E4M3", "F8_E5M2"};
    static const int         sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1, 1, 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char h[256];
        imgd_fmt(h, sizeof h, "{\"t\":{\"dtype\":\"%s\",\"shape\":[2,3],\"data_offsets\":[0,%d]}}",
                 names[i], 6 * sizes[i]);
        parse_expect(make(h, 6 * (size_t)sizes[i]), IMGD_OK, NULL);
    }
}

static void test_safetensors_writer_roundtrip_with_metadata(void) {
    char path[512];
    tu_tmp_path(path, sizeof path, "rt.safetensors");
    imgd_st_entry   e[2] = {{"w", {3, 5}, 2, IMGD_DTYPE_F32}, {"b\"q\\", {5}, 1, IMGD_DTYPE_BF16}};
    const char     *mk[] = {"k1", "quote\"d"}, *mv[] = {"v1", "line\nbreak"};
    imgd_st_writer *wr = NULL;
    CHECK_STATUS(imgd_st_writer_open(path, e, 2, mk, mv, 2, &wr), IMGD_OK);
    if (!wr) return;
    float    a[15];
    uint16_t b[5];
    for (int i = 0; i < 15; i++) a[i] = (float)i * 0.5f;
    for (int i = 0; i < 5; i++) b[i] = imgd_f32_to_bf16((float)-i);
    CHECK_STATUS(imgd_st_writer_write(wr, a, sizeof a), IMGD_OK);
    CHECK_STATUS(imgd_st_writer_write(wr, b, sizeof b), IMGD_OK);
    CHECK_STATUS(imgd_st_writer_write(wr, b, 1), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_st_writer_close(wr), IMGD_OK);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
    if (w) {
        imgd_tensor_info t;
        CHECK_STATUS(imgd_weights_find(w, "w", &t), IMGD_OK);
        uint32_t abits[15]; /* compare bit patterns, not float objects */
        memcpy(abits, a, sizeof abits);
        CHECK(t.nbytes == sizeof abits && memcmp(t.data, abits, sizeof abits) == 0);
        CHECK_STATUS(imgd_weights_find(w, "b\"q\\", &t), IMGD_OK);
        CHECK(t.nbytes == sizeof b && memcmp(t.data, b, sizeof b) == 0);
        CHECK_STR(imgd_weights_meta_find(w, "quote\"d"), "line\nbreak");
        CHECK_EQ_INT(imgd_weights_format(w), IMGD_FORMAT_SAFETENSORS);
    }
    imgd_weights_free(w);
    /* The header is padded so the data area starts 8-byte aligned. */
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f) {
        uint8_t len8[8];
        CHECK(fread(len8, 1, 8, f) == 8);
        CHECK_EQ_INT(len8[0] % 8, 0);
        CHECK(fclose(f) == 0);
    }
    CHECK(remove(path) == 0);
}

static void test_safetensors_writer_short_write_removes_file(void) {
    char path[512];
    tu_tmp_path(path, sizeof path, "short.safetensors");
    imgd_st_entry   e  = {"w", {4}, 1, IMGD_DTYPE_F32};
    imgd_st_writer *wr = NULL;
    CHECK_STATUS(imgd_st_writer_open(path, &e, 1, NULL, NULL, 0, &wr), IMGD_OK);
    if (!wr) return;
    float x = 1;
    CHECK_STATUS(imgd_st_writer_write(wr, &x, 4), IMGD_OK);
    CHECK_STATUS(imgd_st_writer_close(wr), IMGD_E_INVALID_ARG);
    CHECK(access(path, F_OK) != 0);
}

static void test_safetensors_writer_refuses_quantized(void) {
    char path[512];
    tu_tmp_path(path, sizeof path, "q.safetensors");
    imgd_st_entry   e  = {"w", {32}, 1, IMGD_DTYPE_Q8_0};
    imgd_st_writer *wr = NULL;
    CHECK_STATUS(imgd_st_writer_open(path, &e, 1, NULL, NULL, 0, &wr), IMGD_E_INVALID_ARG);
    CHECK(wr == NULL);
}

/* ---- hostile ---------------------------------------------------------------------- */

static void test_safetensors_rejects_truncated_length(void) {
    parse_expect(0, IMGD_E_FORMAT, "too short");
    memset(g_file, 0, 8);
    parse_expect(7, IMGD_E_FORMAT, "too short");
}

static void test_safetensors_rejects_header_past_eof(void) {
    size_t n  = make("{}", 0);
    g_file[0] = 200;
    parse_expect(n, IMGD_E_FORMAT, "exceeds the file size");
}

static void test_safetensors_rejects_huge_header_length(void) {
    make("{}", 0);
    memset(g_file, 0xff, 8);
    parse_expect(10, IMGD_E_FORMAT, "exceeds the file size");
}

static void test_safetensors_rejects_header_over_cap(void) {
    size_t n = make("{\"__metadata__\":{\"a\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}}", 0);
    imgd_open_params p = imgd_open_params_default();
    p.header_size_max  = 16;
    imgd_open_limits lim;
    imgd_open_limits_from(&p, &lim);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_new(IMGD_FORMAT_SAFETENSORS, "t", &w), IMGD_OK);
    if (!w) return;
    CHECK_STATUS(imgd_safetensors_read("t", g_file, n, &lim, w), IMGD_E_TOO_LARGE);
    imgd_weights_free(w);
}

static void test_safetensors_rejects_non_json(void) {
    bad("{not json at all}", 0, "invalid JSON");
    bad("[1,2,3]", 0, "JSON object");
    bad("{\"a\":1} trailing", 0, "trailing");
    bad("{\"a\":", 0, "invalid JSON");
}

static void test_safetensors_rejects_bad_utf8_header(void) {
    bad("{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "UTF-8");
    bad("{\"\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "UTF-8");
    bad("{\"\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "UTF-8");
}

static void test_safetensors_rejects_nul_in_header(void) {
    size_t n      = make("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    g_file[8 + 3] = 0;
    parse_expect(n, IMGD_E_FORMAT, "UTF-8");
}

static void test_safetensors_rejects_escaped_nul_name(void) {
    bad("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NULL);
}

static void test_safetensors_rejects_unknown_dtype(void) {
    bad("{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16, "unknown dtype");
    bad("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype");
    bad("{\"a\":{\"dtype\":\"Q4_0\",\"shape\":[32],\"data_offsets\":[0,18]}}", 18, "unknown dtype");
}

static void test_safetensors_rejects_missing_or_mistyped_fields(void) {
    bad("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");
    bad("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");
    bad("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}", 4, "shape");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "data_offsets");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}", 4, "data_offsets");
    bad("{\"a\":[1,2]}", 0, "not an object");
}

static void test_safetensors_rejects_bad_dims(void) {
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
        "dimensions");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "shape[0]");
}

static void test_safetensors_rejects_shape_overflow(void) {
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
        "\"data_offsets\":[0,4]}}",
        4, "overflow");
}

static void test_safetensors_rejects_wrong_shape_product(void) {
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "span is 8");
    bad("{\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, "span is 16");
}

static void test_safetensors_rejects_offsets_reversed(void) {
    bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "end");
}

static void test_safetensors_rejects_span_past_eof(void) {
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "past the end");
    bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9007199254740991,"
        "9007199254740992]}}",
        8, "past the end");
}

static void test_safetensors_rejects_overlapping_spans(void) {
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
        12, "overlaps");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        8, "overlaps");
}

static void test_safetensors_rejects_gaps_and_trailing_bytes(void) {
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, "trailing");
}

static void test_safetensors_rejects_duplicate_names(void) {
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
        8, "twice");
}

static void test_safetensors_rejects_bad_metadata(void) {
    bad("{\"__metadata__\":[\"a\"]}", 0, "__metadata__");
    bad("{\"__metadata__\":{\"a\":1}}", 0, "not a string");
    bad("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", 0, "not a string");
    bad("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "twice");
    bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "twice");
}

static void test_safetensors_rejects_deep_nesting(void) {
    char   h[4096];
    size_t n = 0;
    h[n++]   = '{';
    h[n++]   = '"';
    h[n++]   = 'a';
    h[n++]   = '"';
    h[n++]   = ':';
    for (int i = 0; i < 1000; i++) h[n++] = '[';
    for (int i = 0; i < 1000; i++) h[n++] = ']';
    h[n++] = '}';
    h[n]   = 0;
    parse_expect(make(h, 0), IMGD_E_TOO_LARGE, "nesting");
}

static void test_safetensors_rejects_empty_name(void) {
    bad("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "empty name");
}

static void test_safetensors_open_refuses_directory_and_missing(void) {
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open("/nonexistent/file.safetensors", NULL, &w), IMGD_E_IO);
    CHECK(w == NULL);
    CHECK_STATUS(imgd_weights_open(NULL, NULL, &w), IMGD_E_INVALID_ARG);
}

static void test_safetensors_open_refuses_unknown_content(void) {
    char path[512];
    tu_tmp_path(path, sizeof path, "junk.safetensors");
    tu_write_file(path, "hello world, not weights", 24);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "not a recognised weight file") != NULL);
    tu_write_file(path, "", 0);
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "empty") != NULL);
    CHECK(remove(path) == 0);
}

static void test_safetensors_error_names_file(void) {
    char path[512];
    tu_tmp_path(path, sizeof path, "named.safetensors");
    size_t n = make("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    tu_write_file(path, g_file, n);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), path) != NULL);
    CHECK(strstr(imgd_last_error(), "'a'") != NULL);
    CHECK(w == NULL);
    CHECK(remove(path) == 0);
}

int main(void) {
    RUN(test_safetensors_reads_two_tensors_zero_copy);
    RUN(test_safetensors_accepts_empty_scalar_and_zero_size);
    RUN(test_safetensors_accepts_every_dtype);
    RUN(test_safetensors_writer_roundtrip_with_metadata);
    RUN(test_safetensors_writer_short_write_removes_file);
    RUN(test_safetensors_writer_refuses_quantized);
    RUN(test_safetensors_rejects_truncated_length);
    RUN(test_safetensors_rejects_header_past_eof);
    RUN(test_safetensors_rejects_huge_header_length);
    RUN(test_safetensors_rejects_header_over_cap);
    RUN(test_safetensors_rejects_non_json);
    RUN(test_safetensors_rejects_bad_utf8_header);
    RUN(test_safetensors_rejects_nul_in_header);
    RUN(test_safetensors_rejects_escaped_nul_name);
    RUN(test_safetensors_rejects_unknown_dtype);
    RUN(test_safetensors_rejects_missing_or_mistyped_fields);
    RUN(test_safetensors_rejects_bad_dims);
    RUN(test_safetensors_rejects_shape_overflow);
    RUN(test_safetensors_rejects_wrong_shape_product);
    RUN(test_safetensors_rejects_offsets_reversed);
    RUN(test_safetensors_rejects_span_past_eof);
    RUN(test_safetensors_rejects_overlapping_spans);
    RUN(test_safetensors_rejects_gaps_and_trailing_bytes);
    RUN(test_safetensors_rejects_duplicate_names);
    RUN(test_safetensors_rejects_bad_metadata);
    RUN(test_safetensors_rejects_deep_nesting);
    RUN(test_safetensors_rejects_empty_name);
    RUN(test_safetensors_open_refuses_directory_and_missing);
    RUN(test_safetensors_open_refuses_unknown_content);
    RUN(test_safetensors_error_names_file);
    TEST_END();
}
