/* GGUF reader: files built in memory by a small writer below, read back through
 * imgd_gguf_read and imgd_weights_open, then hostile files, each refused with a specific
 * status and a message naming the problem. Hostile inputs are read from an exact-size
 * heap copy so ASan catches any read past the end. */
#include <stdint.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/weights.h"
#include "test.h"
#include "util.h"

/* ggml type ids and GGUF value types, spelled out independently of the reader. */
enum {
    T_F32     = 0,
    T_F16     = 1,
    T_Q4_0    = 2,
    T_Q8_0    = 8,
    T_Q4_K    = 12,
    T_Q8_K    = 15,
    T_IQ2_XXS = 16,
    T_BF16    = 30,
};
enum {
    V_U8     = 0,
    V_I8     = 1,
    V_U16    = 2,
    V_I16    = 3,
    V_U32    = 4,
    V_I32    = 5,
    V_F32    = 6,
    V_BOOL   = 7,
    V_STRING = 8,
    V_ARRAY  = 9,
    V_U64    = 10,
    V_I64    = 11,
    V_F64    = 12,
};

/* ---- writer ------------------------------------------------------------------------ */

typedef struct gw {
    uint8_t *p;
    size_t   n, cap;
    bool     oom; /* a write failed (allocation-failure injection); later writes are dropped */
} gw;

static void gw_bytes(gw *g, const void *b, size_t n) {
    if (g->oom) return;
    if (g->n + n > g->cap) {
        size_t nc = g->cap ? g->cap : 256;
        while (nc < g->n + n) nc *= 2;
        uint8_t *np = imgd_realloc(g->p, nc);
        if (!np) {
            CHECK_MSG(np != NULL, "test writer: out of memory");
            g->oom = true;
            return;
        }
        g->p   = np;
        g->cap = nc;
    }
    if (n) memcpy(g->p + g->n, b, n);
    g->n += n;
}

static void gw_le(gw *g, uint64_t v, int bytes) {
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    gw_bytes(g, b, (size_t)bytes);
}

static void gw_u8(gw *g, uint8_t v) {
    gw_le(g, v, 1);
}
static void gw_u16(gw *g, uint16_t v) {
    gw_le(g, v, 2);
}
static void gw_u32(gw *g, uint32_t v) {
    gw_le(g, v, 4);
}
static void gw_u64(gw *g, uint64_t v) {
    gw_le(g, v, 8);
}

static void gw_f32(gw *g, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    gw_u32(g, u);
}

static void gw_strn(gw *g, const char *s, size_t n) {
    gw_u64(g, n);
    gw_bytes(g, s, n);
}

static void gw_str(gw *g, const char *s) {
    gw_strn(g, s, strlen(s));
}

static void gw_header(gw *g, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gw_bytes(g, "GGUF", 4);
    gw_u32(g, version);
    gw_u64(g, n_tensors);
    gw_u64(g, n_kv);
}

static void gw_key(gw *g, const char *key, uint32_t vtype) {
    gw_str(g, key);
    gw_u32(g, vtype);
}

static void gw_array_head(gw *g, uint32_t etype, uint64_t count) {
    gw_u32(g, etype);
    gw_u64(g, count);
}

/* Tensor info; ne[0] is innermost (ggml order). */
static void gw_tensor(gw *g, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                      uint64_t offset) {
    gw_str(g, name);
    gw_u32(g, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) gw_u64(g, ne[i]);
    gw_u32(g, type);
    gw_u64(g, offset);
}

static void gw_pad(gw *g, uint32_t align) {
    while (g->n % align && !g->oom) gw_u8(g, 0);
}

static void gw_zeros(gw *g, size_t n) {
    for (size_t i = 0; i < n; i++) gw_u8(g, 0);
}

static void gw_free(gw *g) {
    imgd_free(g->p);
    memset(g, 0, sizeof *g);
}

/* False (and g freed) when building g ran out of memory; callers that edit the bytes
 * directly check it first. */
static bool gw_ok(gw *g) {
    if (!g->oom) return true;
    gw_free(g);
    return false;
}

/* ---- reading helpers --------------------------------------------------------------- */

/* Reads p[0..n) from an exact-size copy with header_size_max hcap (0 = default).
 * Checks the status and, on failure, that the message contains `word`. */
static void expect_bytes(const uint8_t *p, size_t n, uint64_t hcap, imgd_status want,
                         const char *word) {
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    if (hcap) lim.header_size_max = hcap;
    uint8_t *copy = imgd_malloc(n ? n : 1);
    CHECK(copy != NULL);
    if (!copy) return;
    if (n) memcpy(copy, p, n);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_new(IMGD_FORMAT_GGUF, "t.gguf", &w), IMGD_OK);
    if (!w) {
        imgd_free(copy);
        return;
    }
    imgd_status st = imgd_gguf_read("t.gguf", copy, n, &lim, w);
    CHECK_MSG(st == want, "status %s, expected %s (%s)", imgd_status_name(st),
              imgd_status_name(want), imgd_last_error());
    if (st != IMGD_OK) {
        CHECK_MSG(strstr(imgd_last_error(), "t.gguf") != NULL, "message '%s' lacks the file",
                  imgd_last_error());
        if (word) {
            CHECK_MSG(strstr(imgd_last_error(), word) != NULL, "message '%s' lacks '%s'",
                      imgd_last_error(), word);
        }
    }
    imgd_weights_free(w);
    imgd_free(copy);
}

static void refused(gw *g, imgd_status want, const char *word) {
    expect_bytes(g->p, g->n, 0, want, word);
    gw_free(g);
}

/* A file with one tensor info and data_bytes of zero data after 32-byte padding. */
static void one_tensor(gw *g, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                       uint64_t offset, size_t data_bytes) {
    gw_header(g, 3, 1, 0);
    gw_tensor(g, name, n_dims, ne, type, offset);
    gw_pad(g, 32);
    gw_zeros(g, data_bytes);
}

/* ---- a complete valid file --------------------------------------------------------- */

typedef struct layout {
    uint64_t data_off;  /* start of the data section */
    uint64_t off[4];    /* tensor offsets within it */
    uint8_t  q8_0[136]; /* contents of the Q8_0 tensor */
} layout;

/* A fixed-size scalar key/value. */
static void gw_kv(gw *g, const char *key, uint32_t vtype, uint64_t v, int bytes) {
    gw_key(g, key, vtype);
    gw_le(g, v, bytes);
}

static uint64_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static uint64_t f64_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static void put_kvs(gw *g, uint32_t align) {
    gw_key(g, "general.architecture", V_STRING);
    gw_str(g, "sdxl");
    if (align) gw_kv(g, "general.alignment", V_U32, align, 4);
    gw_kv(g, "t.u8", V_U8, 200, 1);
    gw_kv(g, "t.i8", V_I8, (uint8_t)(int8_t)-5, 1);
    gw_kv(g, "t.u16", V_U16, 65535, 2);
    gw_kv(g, "t.i16", V_I16, (uint16_t)(int16_t)-300, 2);
    gw_kv(g, "t.u32", V_U32, 4000000000u, 4);
    gw_kv(g, "t.i32", V_I32, (uint32_t)INT32_MIN, 4);
    gw_kv(g, "t.f32", V_F32, f32_bits(0.1f), 4);
    gw_kv(g, "t.true", V_BOOL, 1, 1);
    gw_kv(g, "t.false", V_BOOL, 0, 1);
    gw_key(g, "t.str", V_STRING);
    gw_str(g, "hello w\xc3\xb6rld");
    gw_kv(g, "t.u64", V_U64, UINT64_MAX, 8);
    gw_kv(g, "t.i64", V_I64, (uint64_t)INT64_MIN, 8);
    gw_kv(g, "t.f64", V_F64, f64_bits(-2.5e-300), 8);
    gw_key(g, "t.arr_i32", V_ARRAY);
    gw_array_head(g, V_I32, 3);
    gw_u32(g, 1);
    gw_u32(g, (uint32_t)-2);
    gw_u32(g, 3);
    gw_key(g, "t.arr_str", V_ARRAY);
    gw_array_head(g, V_STRING, 2);
    gw_str(g, "a");
    gw_str(g, "b\"c");
    gw_key(g, "t.arr_nested", V_ARRAY);
    gw_array_head(g, V_ARRAY, 2);
    gw_array_head(g, V_U8, 2);
    gw_u8(g, 1);
    gw_u8(g, 2);
    gw_array_head(g, V_BOOL, 0);
    gw_key(g, "t.arr_f32", V_ARRAY);
    gw_array_head(g, V_F32, 2);
    gw_f32(g, 0.5f);
    gw_f32(g, -1.25f);
    gw_key(g, "t.arr_empty", V_ARRAY);
    gw_array_head(g, V_F64, 0);
    gw_key(g, "t.arr_big", V_ARRAY);
    gw_array_head(g, V_U8, 100);
    gw_zeros(g, 100);
    gw_key(g, "tokenizer.ggml.tokens", V_ARRAY);
    gw_array_head(g, V_STRING, 70);
    for (int i = 0; i < 70; i++) gw_str(g, i == 5 ? "\xff" : "tok"); /* summarised: not decoded */
}
#define N_KVS_NO_ALIGN 21

/* Builds a file with 4 tensors (F32 [2,3], F16 [4], Q8_0 [2,64], Q4_K [2,1,256]) and
 * every kind of metadata; align 0 leaves general.alignment out (default 32). */
static void build_valid(gw *g, uint32_t version, uint32_t align, layout *lay) {
    static const uint64_t ne_a[2] = {3, 2}, ne_b[1] = {4}, ne_c[2] = {64, 2}, ne_d[3] = {256, 1, 2};
    static const uint64_t nbytes[4] = {24, 8, 136, 288};
    uint32_t              a         = align ? align : 32;
    uint64_t              off       = 0;
    for (int i = 0; i < 4; i++) {
        lay->off[i] = off;
        off += nbytes[i];
        off = (off + a - 1) / a * a;
    }
    gw_header(g, version, 4, N_KVS_NO_ALIGN + (align ? 1 : 0));
    put_kvs(g, align);
    gw_tensor(g, "a.f32", 2, ne_a, T_F32, lay->off[0]);
    gw_tensor(g, "b.f16", 1, ne_b, T_F16, lay->off[1]);
    gw_tensor(g, "c.q8_0", 2, ne_c, T_Q8_0, lay->off[2]);
    gw_tensor(g, "d.q4_k", 3, ne_d, T_Q4_K, lay->off[3]);
    gw_pad(g, a);
    lay->data_off = g->n;
    for (int i = 0; i < 6; i++) gw_f32(g, (float)i + 0.5f);
    gw_pad(g, a);
    for (int i = 0; i < 4; i++) gw_u16(g, imgd_f32_to_f16((float)-i));
    gw_pad(g, a);
    for (size_t b = 0; b < 4; b++) { /* d = 0.25 * (b + 1), q = j - 16 */
        uint16_t d            = imgd_f32_to_f16(0.25f * (float)(b + 1));
        lay->q8_0[34 * b]     = (uint8_t)d;
        lay->q8_0[34 * b + 1] = (uint8_t)(d >> 8);
        for (int j = 0; j < 32; j++) lay->q8_0[34 * b + 2 + j] = (uint8_t)(int8_t)(j - 16);
    }
    gw_bytes(g, lay->q8_0, sizeof lay->q8_0);
    gw_pad(g, a);
    gw_zeros(g, 288);
}

static void check_meta(const imgd_weights *w, uint32_t align) {
    CHECK_STR(imgd_weights_meta_find(w, "general.architecture"), "sdxl");
    if (align) {
        char want[16];
        (void)imgd_fmt(want, sizeof want, "%u", align);
        CHECK_STR(imgd_weights_meta_find(w, "general.alignment"), want);
    } else {
        CHECK(imgd_weights_meta_find(w, "general.alignment") == NULL);
    }
    CHECK_STR(imgd_weights_meta_find(w, "t.u8"), "200");
    CHECK_STR(imgd_weights_meta_find(w, "t.i8"), "-5");
    CHECK_STR(imgd_weights_meta_find(w, "t.u16"), "65535");
    CHECK_STR(imgd_weights_meta_find(w, "t.i16"), "-300");
    CHECK_STR(imgd_weights_meta_find(w, "t.u32"), "4000000000");
    CHECK_STR(imgd_weights_meta_find(w, "t.i32"), "-2147483648");
    CHECK_STR(imgd_weights_meta_find(w, "t.f32"), "0.1");
    CHECK_STR(imgd_weights_meta_find(w, "t.true"), "true");
    CHECK_STR(imgd_weights_meta_find(w, "t.false"), "false");
    CHECK_STR(imgd_weights_meta_find(w, "t.str"), "hello w\xc3\xb6rld");
    CHECK_STR(imgd_weights_meta_find(w, "t.u64"), "18446744073709551615");
    CHECK_STR(imgd_weights_meta_find(w, "t.i64"), "-9223372036854775808");
    CHECK_STR(imgd_weights_meta_find(w, "t.f64"), "-2.5e-300");
    CHECK_STR(imgd_weights_meta_find(w, "t.arr_i32"), "[1, -2, 3]");
    CHECK_STR(imgd_weights_meta_find(w, "t.arr_str"), "[\"a\", \"b\\\"c\"]");
    CHECK_STR(imgd_weights_meta_find(w, "t.arr_nested"), "[[1, 2], []]");
    CHECK_STR(imgd_weights_meta_find(w, "t.arr_f32"), "[0.5, -1.25]");
    CHECK_STR(imgd_weights_meta_find(w, "t.arr_empty"), "[]");
    CHECK_STR(imgd_weights_meta_find(w, "t.arr_big"), "[array of 100 uint8]");
    CHECK_STR(imgd_weights_meta_find(w, "tokenizer.ggml.tokens"), "[array of 70 string]");
    CHECK_EQ_INT(imgd_weights_meta_count(w), N_KVS_NO_ALIGN + (align ? 1 : 0));
}

/* Checks the 4 tensors; base is where the file's bytes start (NULL: skip pointers). */
/* CHECK_STATUS that also tells the caller whether to go on. */
static bool ok(imgd_status st) {
    CHECK_STATUS(st, IMGD_OK);
    return st == IMGD_OK;
}

static void check_tensors(const imgd_weights *w, const uint8_t *base, const layout *lay) {
    imgd_tensor_info t;
    CHECK_EQ_INT(imgd_weights_tensor_count(w), 4);
    if (!ok(imgd_weights_tensor(w, 0, &t))) return;
    CHECK_STR(t.name, "a.f32");
    CHECK_EQ_INT(t.dtype, IMGD_DTYPE_F32);
    CHECK_EQ_INT(t.n_dims, 2);
    CHECK_EQ_INT(t.shape[0], 2); /* row-major: ne reversed */
    CHECK_EQ_INT(t.shape[1], 3);
    CHECK_EQ_INT(t.nbytes, 24);
    if (base) CHECK(t.data == base + lay->data_off + lay->off[0]);
    float f;
    memcpy(&f, (const uint8_t *)t.data + 20, 4);
    CHECK(f == 5.5f);
    if (!ok(imgd_weights_find(w, "b.f16", &t))) return;
    CHECK_EQ_INT(t.dtype, IMGD_DTYPE_F16);
    CHECK_EQ_INT(t.n_dims, 1);
    CHECK_EQ_INT(t.shape[0], 4);
    CHECK_EQ_INT(t.nbytes, 8);
    if (base) CHECK(t.data == base + lay->data_off + lay->off[1]);
    if (!ok(imgd_weights_find(w, "c.q8_0", &t))) return;
    CHECK_EQ_INT(t.dtype, IMGD_DTYPE_Q8_0);
    CHECK_EQ_INT(t.n_dims, 2);
    CHECK_EQ_INT(t.shape[0], 2);
    CHECK_EQ_INT(t.shape[1], 64);
    CHECK_EQ_INT(t.nbytes, 136);
    if (base) CHECK(t.data == base + lay->data_off + lay->off[2]);
    CHECK(memcmp(t.data, lay->q8_0, 136) == 0);
    float v[128];
    if (!ok(imgd_dtype_to_f32(IMGD_DTYPE_Q8_0, t.data, 128, v))) return;
    CHECK(v[0] == -4.0f);      /* block 0: d 0.25, q -16 */
    CHECK(v[127] == 15.0f);    /* block 3: d 1.0, q 15 */
    CHECK(v[32 + 17] == 0.5f); /* block 1: d 0.5, q 1 */
    if (!ok(imgd_weights_find(w, "d.q4_k", &t))) return;
    CHECK_EQ_INT(t.dtype, IMGD_DTYPE_Q4_K);
    CHECK_EQ_INT(t.n_dims, 3);
    CHECK_EQ_INT(t.shape[0], 2);
    CHECK_EQ_INT(t.shape[1], 1);
    CHECK_EQ_INT(t.shape[2], 256);
    CHECK_EQ_INT(t.shape[3], 1); /* unused dims are 1 */
    CHECK_EQ_INT(t.nbytes, 288);
    if (base) CHECK(t.data == base + lay->data_off + lay->off[3]);
}

/* ---- valid files ------------------------------------------------------------------- */

static void read_valid(uint32_t version, uint32_t align) {
    gw     g = {0};
    layout lay;
    build_valid(&g, version, align, &lay);
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    imgd_weights *w  = NULL;
    imgd_status   st = imgd_weights_new(IMGD_FORMAT_GGUF, "v.gguf", &w);
    if (st == IMGD_OK) st = imgd_gguf_read("v.gguf", g.p, g.n, &lim, w);
    CHECK_STATUS(st, IMGD_OK);
    CHECK_EQ_INT(lay.data_off % (align ? align : 32), 0);
    if (st == IMGD_OK) {
        check_tensors(w, g.p, &lay);
        check_meta(w, align);
    }
    imgd_weights_free(w);
    gw_free(&g);
}

static void test_gguf_reads_v3_with_default_alignment(void) {
    read_valid(3, 0);
}

static void test_gguf_reads_v2_with_custom_alignment(void) {
    read_valid(2, 64);
    read_valid(3, 8);
    read_valid(2, 1);
}

static void test_gguf_opens_through_public_api(void) {
    gw     g = {0};
    layout lay;
    char   path[1024];
    build_valid(&g, 3, 128, &lay);
    if (!gw_ok(&g)) return;
    tu_tmp_path(path, sizeof path, "valid.gguf");
    CHECK(tu_write_file(path, g.p, g.n) == 0);
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
    if (w) {
        CHECK_EQ_INT(imgd_weights_format(w), IMGD_FORMAT_GGUF);
        check_tensors(w, NULL, &lay);
        check_meta(w, 128);
        imgd_weights_free(w);
    }
    /* a hostile file through the same path: status and file name come back */
    g.p[4] = 1; /* version 1 */
    CHECK(tu_write_file(path, g.p, g.n) == 0);
    w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_E_UNSUPPORTED);
    CHECK(w == NULL);
    CHECK(strstr(imgd_last_error(), path) != NULL);
    (void)unlink(path);
    gw_free(&g);
}

static void test_gguf_accepts_no_tensors_and_empty_tensor(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1); /* no tensors: the file may end right after the header */
    gw_key(&g, "general.name", V_STRING);
    gw_str(&g, "");
    expect_bytes(g.p, g.n, 0, IMGD_OK, NULL);
    gw_free(&g);
    gw_header(&g, 3, 0, 0);
    expect_bytes(g.p, g.n, 0, IMGD_OK, NULL);
    gw_free(&g);
    /* a zero-element tensor at the very end of the data section */
    static const uint64_t ne0[2] = {4, 0}, ne1[1] = {8};
    gw_header(&g, 3, 2, 0);
    gw_tensor(&g, "empty", 2, ne0, T_F32, 32);
    gw_tensor(&g, "x", 1, ne1, T_F32, 0);
    gw_pad(&g, 32);
    gw_zeros(&g, 32);
    expect_bytes(g.p, g.n, 0, IMGD_OK, NULL);
    gw_free(&g);
}

static void test_gguf_maps_every_supported_type(void) {
    static const struct {
        uint32_t   id;
        imgd_dtype dt;
        uint64_t   ne0, bytes;
    } k[] = {
        {0, IMGD_DTYPE_F32, 4, 16},      {1, IMGD_DTYPE_F16, 4, 8},
        {2, IMGD_DTYPE_Q4_0, 32, 18},    {3, IMGD_DTYPE_Q4_1, 32, 20},
        {6, IMGD_DTYPE_Q5_0, 32, 22},    {7, IMGD_DTYPE_Q5_1, 32, 24},
        {8, IMGD_DTYPE_Q8_0, 32, 34},    {9, IMGD_DTYPE_Q8_1, 32, 36},
        {10, IMGD_DTYPE_Q2_K, 256, 84},  {11, IMGD_DTYPE_Q3_K, 256, 110},
        {12, IMGD_DTYPE_Q4_K, 256, 144}, {13, IMGD_DTYPE_Q5_K, 256, 176},
        {14, IMGD_DTYPE_Q6_K, 256, 210}, {24, IMGD_DTYPE_I8, 4, 4},
        {25, IMGD_DTYPE_I16, 4, 8},      {26, IMGD_DTYPE_I32, 4, 16},
        {27, IMGD_DTYPE_I64, 4, 32},     {28, IMGD_DTYPE_F64, 4, 32},
        {30, IMGD_DTYPE_BF16, 4, 8},
    };
    const size_t n   = sizeof k / sizeof k[0];
    gw           g   = {0};
    uint64_t     off = 0, offs[32];
    gw_header(&g, 3, n, 0);
    for (size_t i = 0; i < n; i++) {
        char name[16];
        (void)imgd_fmt(name, sizeof name, "t%u", k[i].id);
        offs[i] = off;
        gw_tensor(&g, name, 1, &k[i].ne0, k[i].id, off);
        off = (off + k[i].bytes + 31) / 32 * 32;
    }
    gw_pad(&g, 32);
    size_t data_off = g.n;
    gw_zeros(&g, (size_t)off);
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    imgd_weights *w  = NULL;
    imgd_status   st = imgd_weights_new(IMGD_FORMAT_GGUF, "types.gguf", &w);
    if (st == IMGD_OK) st = imgd_gguf_read("types.gguf", g.p, g.n, &lim, w);
    CHECK_STATUS(st, IMGD_OK);
    if (st == IMGD_OK) CHECK_EQ_INT(imgd_weights_tensor_count(w), n);
    for (size_t i = 0; st == IMGD_OK && i < n && i < imgd_weights_tensor_count(w); i++) {
        imgd_tensor_info t;
        CHECK_STATUS(imgd_weights_tensor(w, i, &t), IMGD_OK);
        CHECK_EQ_INT(t.dtype, k[i].dt);
        CHECK_EQ_INT(t.nbytes, k[i].bytes);
        CHECK_EQ_INT(t.shape[0], (int64_t)k[i].ne0);
        CHECK(t.data == g.p + data_off + offs[i]);
    }
    imgd_weights_free(w);
    gw_free(&g);
}

/* ---- hostile: header --------------------------------------------------------------- */

static void test_gguf_rejects_bad_magic(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 0);
    if (!gw_ok(&g)) return;
    g.p[3] = 'G';
    refused(&g, IMGD_E_FORMAT, "GGUF");
    expect_bytes((const uint8_t *)"GG", 2, 0, IMGD_E_FORMAT, "GGUF");
    expect_bytes((const uint8_t *)"", 0, 0, IMGD_E_FORMAT, "magic");
}

static void test_gguf_rejects_version_1(void) {
    gw g = {0};
    gw_header(&g, 1, 0, 0);
    refused(&g, IMGD_E_UNSUPPORTED, "version 1");
}

static void test_gguf_rejects_version_0_and_future(void) {
    gw g = {0};
    gw_header(&g, 0, 0, 0);
    refused(&g, IMGD_E_FORMAT, "version 0");
    gw_header(&g, 4, 0, 0);
    refused(&g, IMGD_E_UNSUPPORTED, "version 4");
}

static void test_gguf_rejects_big_endian(void) {
    gw g = {0};
    gw_header(&g, 0x03000000u, 0, 0);
    refused(&g, IMGD_E_UNSUPPORTED, "big-endian");
}

static void test_gguf_rejects_huge_tensor_count(void) {
    gw g = {0};
    gw_header(&g, 3, UINT64_MAX / 2, 0);
    gw_zeros(&g, 100);
    refused(&g, IMGD_E_FORMAT, "cannot fit");
}

static void test_gguf_rejects_huge_kv_count(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1ull << 60);
    gw_zeros(&g, 100);
    refused(&g, IMGD_E_FORMAT, "key/value");
}

static void test_gguf_rejects_counts_that_fit_only_alone(void) {
    /* 4 kvs (52 bytes) and 3 tensors (72 bytes) each fit in 100 bytes, not together */
    gw g = {0};
    gw_header(&g, 3, 3, 4);
    gw_zeros(&g, 100);
    refused(&g, IMGD_E_FORMAT, "need at least 124 bytes");
}

/* ---- hostile: truncation ----------------------------------------------------------- */

static void test_gguf_rejects_every_truncation(void) {
    gw     g = {0};
    layout lay;
    build_valid(&g, 3, 0, &lay);
    for (size_t n = 0; n < g.n; n++) expect_bytes(g.p, n, 0, IMGD_E_FORMAT, n < 4 ? "GGUF" : NULL);
    gw_free(&g);
}

static void test_gguf_rejects_truncated_header(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 0);
    if (!gw_ok(&g)) return;
    g.n = 20; /* inside the kv count */
    refused(&g, IMGD_E_FORMAT, "truncated");
}

static void test_gguf_rejects_truncated_key(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_u64(&g, 100); /* 100-byte key, 20 bytes present */
    gw_zeros(&g, 20);
    refused(&g, IMGD_E_FORMAT, "key/value 0 key");
}

static void test_gguf_rejects_truncated_value(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "general.file_type", V_U64);
    gw_u32(&g, 7); /* 4 of 8 bytes */
    refused(&g, IMGD_E_FORMAT, "general.file_type");
}

static void test_gguf_rejects_truncated_tensor_info(void) {
    gw                    g     = {0};
    static const uint64_t ne[2] = {4, 4};
    gw_header(&g, 3, 1, 0);
    gw_tensor(&g, "w", 2, ne, T_F32, 0);
    if (!gw_ok(&g)) return;
    g.n -= 4; /* half of the offset */
    refused(&g, IMGD_E_FORMAT, "tensor 'w'");
}

static void test_gguf_rejects_truncated_padding(void) {
    gw                    g     = {0};
    static const uint64_t ne[1] = {0};
    gw_header(&g, 3, 1, 0);
    gw_tensor(&g, "w", 1, ne, T_F32, 0); /* zero bytes, but the padding is missing */
    refused(&g, IMGD_E_FORMAT, "data section");
}

static void test_gguf_rejects_span_past_eof(void) {
    gw                    g     = {0};
    static const uint64_t ne[2] = {4, 4};
    one_tensor(&g, "w", 2, ne, T_F32, 0, 63);
    refused(&g, IMGD_E_FORMAT, "past the end of the data section");
    one_tensor(&g, "w", 2, ne, T_F32, 1ull << 62, 64); /* far past */
    refused(&g, IMGD_E_FORMAT, "past the end of the data section");
    one_tensor(&g, "w", 2, ne, T_F32, UINT64_MAX - 31, 64); /* offset + size wraps */
    refused(&g, IMGD_E_FORMAT, "past the end of the data section");
}

/* ---- hostile: strings and arrays --------------------------------------------------- */

static void test_gguf_rejects_huge_string_length(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_u64(&g, UINT64_MAX); /* key length */
    gw_zeros(&g, 40);
    refused(&g, IMGD_E_FORMAT, "string");
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "general.name", V_STRING);
    gw_u64(&g, 1ull << 62); /* value length */
    gw_zeros(&g, 40);
    refused(&g, IMGD_E_FORMAT, "truncated");
}

static void test_gguf_rejects_huge_array_count(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "a", V_ARRAY);
    gw_array_head(&g, V_U8, 1ull << 60);
    gw_zeros(&g, 64);
    refused(&g, IMGD_E_FORMAT, "cannot fit");
    gw_header(&g, 3, 0, 1); /* strings: each needs 8 bytes, 64 bytes left for 9 */
    gw_key(&g, "a", V_ARRAY);
    gw_array_head(&g, V_STRING, 9);
    gw_zeros(&g, 64);
    refused(&g, IMGD_E_FORMAT, "cannot fit");
}

static void test_gguf_rejects_deeply_nested_arrays(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "deep", V_ARRAY);
    for (int i = 0; i < 9; i++) gw_array_head(&g, V_ARRAY, 1);
    gw_array_head(&g, V_U8, 0);
    refused(&g, IMGD_E_FORMAT, "nested");
    gw_header(&g, 3, 0, 1); /* 8 levels are fine */
    gw_key(&g, "deep", V_ARRAY);
    for (int i = 0; i < 7; i++) gw_array_head(&g, V_ARRAY, 1);
    gw_array_head(&g, V_U8, 0);
    expect_bytes(g.p, g.n, 0, IMGD_OK, NULL);
    gw_free(&g);
}

static void test_gguf_rejects_header_over_cap(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "general.description", V_STRING);
    gw_str(&g, "a long description that does not fit under a 64-byte cap");
    expect_bytes(g.p, g.n, 64, IMGD_E_TOO_LARGE, "header_size_max");
    gw_free(&g);
    gw_header(&g, 3, 10, 0); /* 10 tensor infos need 240 bytes: more than the cap */
    gw_zeros(&g, 300);
    expect_bytes(g.p, g.n, 128, IMGD_E_TOO_LARGE, "header_size_max");
    gw_free(&g);
}

static void test_gguf_rejects_invalid_utf8_key(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_strn(&g, "bad\xc3\x28", 5);
    gw_u32(&g, V_U8);
    gw_u8(&g, 1);
    refused(&g, IMGD_E_FORMAT, "UTF-8");
    gw_header(&g, 3, 0, 1); /* embedded NUL */
    gw_strn(&g, "a\0b", 3);
    gw_u32(&g, V_U8);
    gw_u8(&g, 1);
    refused(&g, IMGD_E_FORMAT, "UTF-8");
}

static void test_gguf_rejects_empty_key(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "", V_U8);
    gw_u8(&g, 1);
    refused(&g, IMGD_E_FORMAT, "empty");
}

static void test_gguf_rejects_duplicate_key(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 2);
    gw_key(&g, "general.name", V_STRING);
    gw_str(&g, "a");
    gw_key(&g, "general.name", V_U8);
    gw_u8(&g, 1);
    refused(&g, IMGD_E_FORMAT, "twice");
}

static void test_gguf_rejects_unknown_value_type(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "x", 13);
    gw_u64(&g, 0);
    refused(&g, IMGD_E_FORMAT, "value type 13");
}

static void test_gguf_rejects_unknown_array_element_type(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "x", V_ARRAY);
    gw_array_head(&g, 200, 1);
    gw_u64(&g, 0);
    refused(&g, IMGD_E_FORMAT, "element type 200");
}

static void test_gguf_rejects_bad_bool(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "flag", V_BOOL);
    gw_u8(&g, 2);
    refused(&g, IMGD_E_FORMAT, "bool");
    gw_header(&g, 3, 0, 1); /* inside an array */
    gw_key(&g, "flags", V_ARRAY);
    gw_array_head(&g, V_BOOL, 2);
    gw_u8(&g, 0);
    gw_u8(&g, 7);
    refused(&g, IMGD_E_FORMAT, "bool");
}

static void test_gguf_rejects_invalid_utf8_string_value(void) {
    gw g = {0};
    gw_header(&g, 3, 0, 1);
    gw_key(&g, "general.name", V_STRING);
    gw_str(&g, "caf\xe9");
    refused(&g, IMGD_E_FORMAT, "UTF-8");
    gw_header(&g, 3, 0, 1); /* in a short array whose text is kept */
    gw_key(&g, "names", V_ARRAY);
    gw_array_head(&g, V_STRING, 2);
    gw_str(&g, "ok");
    gw_strn(&g, "n\0l", 3);
    refused(&g, IMGD_E_FORMAT, "UTF-8");
}

/* ---- hostile: alignment ------------------------------------------------------------ */

static void alignment_kv(gw *g, uint32_t vtype, uint64_t v, int bytes) {
    gw_header(g, 3, 0, 1);
    gw_key(g, "general.alignment", vtype);
    gw_le(g, v, bytes);
}

static void test_gguf_rejects_alignment_zero(void) {
    gw g = {0};
    alignment_kv(&g, V_U32, 0, 4);
    refused(&g, IMGD_E_FORMAT, "power of two");
}

static void test_gguf_rejects_alignment_not_power_of_two(void) {
    gw g = {0};
    alignment_kv(&g, V_U32, 48, 4);
    refused(&g, IMGD_E_FORMAT, "power of two");
}

static void test_gguf_rejects_alignment_of_wrong_type(void) {
    gw g = {0};
    alignment_kv(&g, V_U64, 32, 8);
    refused(&g, IMGD_E_FORMAT, "uint32");
    alignment_kv(&g, V_STRING, 0, 8);
    refused(&g, IMGD_E_FORMAT, "uint32");
}

/* ---- hostile: tensor infos --------------------------------------------------------- */

static void test_gguf_rejects_unaligned_offset(void) {
    gw                    g     = {0};
    static const uint64_t ne[1] = {4};
    one_tensor(&g, "w", 1, ne, T_F32, 16, 64);
    refused(&g, IMGD_E_FORMAT, "not aligned to 32");
    gw_header(&g, 3, 1, 1); /* aligned to 32 but not to a declared 64 */
    gw_key(&g, "general.alignment", V_U32);
    gw_u32(&g, 64);
    gw_tensor(&g, "w", 1, ne, T_F32, 32);
    gw_pad(&g, 64);
    gw_zeros(&g, 128);
    refused(&g, IMGD_E_FORMAT, "not aligned to 64");
}

static void test_gguf_rejects_overlapping_spans(void) {
    gw                    g     = {0};
    static const uint64_t ne[1] = {16}; /* 64 bytes of F32 */
    gw_header(&g, 3, 2, 0);
    gw_tensor(&g, "a", 1, ne, T_F32, 0);
    gw_tensor(&g, "b", 1, ne, T_F32, 32);
    gw_pad(&g, 32);
    gw_zeros(&g, 128);
    refused(&g, IMGD_E_FORMAT, "overlaps");
    gw_header(&g, 3, 3, 0); /* same start, listed out of order */
    gw_tensor(&g, "c", 1, ne, T_F32, 64);
    gw_tensor(&g, "a", 1, ne, T_F32, 0);
    gw_tensor(&g, "b", 1, ne, T_F32, 64);
    gw_pad(&g, 32);
    gw_zeros(&g, 128);
    refused(&g, IMGD_E_FORMAT, "overlaps");
}

static void test_gguf_rejects_duplicate_tensor_name(void) {
    gw                    g     = {0};
    static const uint64_t ne[1] = {8};
    gw_header(&g, 3, 2, 0);
    gw_tensor(&g, "w", 1, ne, T_F32, 0);
    gw_tensor(&g, "w", 1, ne, T_F32, 32);
    gw_pad(&g, 32);
    gw_zeros(&g, 64);
    refused(&g, IMGD_E_FORMAT, "twice");
}

static void test_gguf_rejects_bad_tensor_name(void) {
    gw                    g     = {0};
    static const uint64_t ne[1] = {8};
    one_tensor(&g, "", 1, ne, T_F32, 0, 32);
    refused(&g, IMGD_E_FORMAT, "name");
    one_tensor(&g, "w\xc0\xaf", 1, ne, T_F32, 0, 32); /* overlong '/' */
    refused(&g, IMGD_E_FORMAT, "UTF-8");
}

static void test_gguf_rejects_unknown_ggml_type(void) {
    gw                    g     = {0};
    static const uint64_t ne[1] = {32};
    one_tensor(&g, "w", 1, ne, 99, 0, 64);
    refused(&g, IMGD_E_FORMAT, "ggml type 99");
}

static void test_gguf_rejects_iq_and_q8_k_as_unsupported(void) {
    gw                    g     = {0};
    static const uint64_t ne[1] = {256};
    one_tensor(&g, "blk.w", 1, ne, T_IQ2_XXS, 0, 1024);
    refused(&g, IMGD_E_UNSUPPORTED, "IQ2_XXS");
    one_tensor(&g, "blk.w", 1, ne, T_Q8_K, 0, 1024);
    refused(&g, IMGD_E_UNSUPPORTED, "'blk.w'");
    one_tensor(&g, "blk.w", 1, ne, 4, 0, 1024); /* Q4_2, removed from ggml */
    refused(&g, IMGD_E_UNSUPPORTED, "Q4_2");
}

static void test_gguf_rejects_too_many_dims(void) {
    gw                    g     = {0};
    static const uint64_t ne[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    one_tensor(&g, "w", 9, ne, T_F32, 0, 32);
    refused(&g, IMGD_E_FORMAT, "n_dims");
    gw_header(&g, 3, 1, 0);
    gw_str(&g, "w");
    gw_u32(&g, UINT32_MAX);
    gw_zeros(&g, 64);
    refused(&g, IMGD_E_FORMAT, "n_dims");
}

static void test_gguf_rejects_dim_over_int64(void) {
    gw                    g     = {0};
    static const uint64_t ne[2] = {4, (1ull << 63) + 1};
    one_tensor(&g, "w", 2, ne, T_F32, 0, 64);
    refused(&g, IMGD_E_FORMAT, "int64");
}

static void test_gguf_rejects_element_count_overflow(void) {
    gw                    g     = {0};
    static const uint64_t ne[3] = {1ull << 32, 1ull << 32, 2};
    one_tensor(&g, "w", 3, ne, T_F32, 0, 64);
    refused(&g, IMGD_E_FORMAT, "overflow");
    static const uint64_t ne2[2] = {1ull << 61, 4}; /* 2^63 elements fit, bytes do not */
    one_tensor(&g, "w", 2, ne2, T_F16, 0, 64);
    refused(&g, IMGD_E_FORMAT, "overflow");
}

static void test_gguf_rejects_inner_dim_not_block_multiple(void) {
    gw                    g     = {0};
    static const uint64_t ne[2] = {33, 2};
    one_tensor(&g, "w", 2, ne, T_Q8_0, 0, 128);
    refused(&g, IMGD_E_FORMAT, "multiple");
    static const uint64_t ne2[2] = {2, 256}; /* the outer dim is a multiple, ne[0] is not */
    one_tensor(&g, "w", 2, ne2, T_Q4_K, 0, 1024);
    refused(&g, IMGD_E_FORMAT, "multiple");
}

int main(void) {
    /* valid */
    RUN(test_gguf_reads_v3_with_default_alignment);
    RUN(test_gguf_reads_v2_with_custom_alignment);
    RUN(test_gguf_opens_through_public_api);
    RUN(test_gguf_accepts_no_tensors_and_empty_tensor);
    RUN(test_gguf_maps_every_supported_type);
    /* hostile */
    RUN(test_gguf_rejects_bad_magic);
    RUN(test_gguf_rejects_version_1);
    RUN(test_gguf_rejects_version_0_and_future);
    RUN(test_gguf_rejects_big_endian);
    RUN(test_gguf_rejects_huge_tensor_count);
    RUN(test_gguf_rejects_huge_kv_count);
    RUN(test_gguf_rejects_counts_that_fit_only_alone);
    RUN(test_gguf_rejects_every_truncation);
    RUN(test_gguf_rejects_truncated_header);
    RUN(test_gguf_rejects_truncated_key);
    RUN(test_gguf_rejects_truncated_value);
    RUN(test_gguf_rejects_truncated_tensor_info);
    RUN(test_gguf_rejects_truncated_padding);
    RUN(test_gguf_rejects_span_past_eof);
    RUN(test_gguf_rejects_huge_string_length);
    RUN(test_gguf_rejects_huge_array_count);
    RUN(test_gguf_rejects_deeply_nested_arrays);
    RUN(test_gguf_rejects_header_over_cap);
    RUN(test_gguf_rejects_invalid_utf8_key);
    RUN(test_gguf_rejects_empty_key);
    RUN(test_gguf_rejects_duplicate_key);
    RUN(test_gguf_rejects_unknown_value_type);
    RUN(test_gguf_rejects_unknown_array_element_type);
    RUN(test_gguf_rejects_bad_bool);
    RUN(test_gguf_rejects_invalid_utf8_string_value);
    RUN(test_gguf_rejects_alignment_zero);
    RUN(test_gguf_rejects_alignment_not_power_of_two);
    RUN(test_gguf_rejects_alignment_of_wrong_type);
    RUN(test_gguf_rejects_unaligned_offset);
    RUN(test_gguf_rejects_overlapping_spans);
    RUN(test_gguf_rejects_duplicate_tensor_name);
    RUN(test_gguf_rejects_bad_tensor_name);
    RUN(test_gguf_rejects_unknown_ggml_type);
    RUN(test_gguf_rejects_iq_and_q8_k_as_unsupported);
    RUN(test_gguf_rejects_too_many_dims);
    RUN(test_gguf_rejects_dim_over_int64);
    RUN(test_gguf_rejects_element_count_overflow);
    RUN(test_gguf_rejects_inner_dim_not_block_multiple);
    TEST_END();
}
