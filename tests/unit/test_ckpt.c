/* PyTorch zip checkpoints end to end: archives written here the way torch.save writes
 * them (data descriptors, 64-byte aligned data, optional ZIP64 and deflate), the shared
 * conformance files when present, and hostile checkpoints (bad views, missing storages,
 * cyclic or exponential object graphs, unsafe globals). */
#include <unistd.h>
#include <zlib.h>

#include "base/alloc.h"
#include "base/text.h"
#include "formats/weights.h"
#include "test.h"

/* ---- a torch-style zip writer ---------------------------------------------------------- */

#define AMAX 24

typedef struct zbuf {
    uint8_t *p;
    size_t   len, cap;
} zbuf;

typedef struct arch {
    const char    *name[AMAX];
    const uint8_t *data[AMAX];
    size_t         len[AMAX];
    int            method[AMAX];
    size_t         n;
} arch;

/* Fixture allocations retry once: IMGD_FAIL_ALLOC_AT (the OOM sweep) fails a single
 * allocation, which should land in the code under test, not in the fixture builders. */
static void *fixture_realloc(void *p, size_t n) {
    void *q = imgd_realloc(p, n);
    return q ? q : imgd_realloc(p, n);
}

static void put(zbuf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 1024;
        while (nc < b->len + n) nc *= 2;
        b->p   = fixture_realloc(b->p, nc);
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_le(zbuf *b, uint64_t v, int k) {
    uint8_t t[8];
    for (int i = 0; i < k; i++) t[i] = (uint8_t)(v >> (8 * i));
    put(b, t, (size_t)k);
}

static void ar_add(arch *a, const char *name, const void *data, size_t len, int method) {
    a->name[a->n]   = name;
    a->data[a->n]   = data;
    a->len[a->n]    = len;
    a->method[a->n] = method;
    a->n++;
}

static uint8_t *deflate_raw(const uint8_t *in, size_t n, size_t *out_len) {
    z_stream s;
    memset(&s, 0, sizeof s);
    deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    size_t   cap = deflateBound(&s, (uLong)n) + 16;
    uint8_t *out = fixture_realloc(NULL, cap);
    s.next_in    = (Bytef *)(uintptr_t)in;
    s.avail_in   = (uInt)n;
    s.next_out   = out;
    s.avail_out  = (uInt)cap;
    deflate(&s, Z_FINISH);
    *out_len = cap - s.avail_out;
    deflateEnd(&s);
    return out;
}

/* Writes the archive like torch.save: flag 0x808 with a data descriptor, data aligned to
 * 64 bytes by an "FB" local extra field, and with zip64 the ZIP64 extras and end records. */
static void ar_build(const arch *a, bool zip64, zbuf *b) {
    memset(b, 0, sizeof *b);
    size_t   local[AMAX], comp[AMAX];
    uint32_t crc[AMAX];
    for (size_t i = 0; i < a->n; i++) {
        size_t         nlen = strlen(a->name[i]), blen = a->len[i];
        uint8_t       *def  = NULL;
        const uint8_t *body = a->data[i];
        if (a->method[i] == 8) body = def = deflate_raw(a->data[i], a->len[i], &blen);
        crc[i]     = (uint32_t)crc32(0, a->data[i], (uInt)a->len[i]);
        comp[i]    = blen;
        local[i]   = b->len;
        size_t pad = 64 - (b->len + 30 + nlen + 4) % 64 + 4;
        put_le(b, 0x04034b50, 4);
        put_le(b, 20, 2);
        put_le(b, 0x808, 2);
        put_le(b, (uint64_t)a->method[i], 2);
        put_le(b, 0, 4); /* time, date */
        put_le(b, 0, 4); /* crc, sizes: in the data descriptor */
        put_le(b, 0, 8);
        put_le(b, nlen, 2);
        put_le(b, pad, 2);
        put(b, a->name[i], nlen);
        put_le(b, 0x4246, 2);
        put_le(b, pad - 4, 2);
        for (size_t k = 0; k < pad - 4; k++) put_le(b, 'Z', 1);
        put(b, body, blen);
        put_le(b, 0x08074b50, 4);
        put_le(b, crc[i], 4);
        put_le(b, blen, zip64 ? 8 : 4);
        put_le(b, a->len[i], zip64 ? 8 : 4);
        imgd_free(def);
    }
    size_t cd_off = b->len;
    for (size_t i = 0; i < a->n; i++) {
        size_t nlen = strlen(a->name[i]);
        put_le(b, 0x02014b50, 4);
        put_le(b, 0x031e, 2);
        put_le(b, 45, 2);
        put_le(b, 0x808, 2);
        put_le(b, (uint64_t)a->method[i], 2);
        put_le(b, 0, 4);
        put_le(b, crc[i], 4);
        put_le(b, zip64 ? 0xFFFFFFFF : comp[i], 4);
        put_le(b, zip64 ? 0xFFFFFFFF : a->len[i], 4);
        put_le(b, nlen, 2);
        put_le(b, zip64 ? 28 : 0, 2);
        put_le(b, 0, 2); /* comment length */
        put_le(b, 0, 8); /* disk, attributes */
        put_le(b, zip64 ? 0xFFFFFFFF : local[i], 4);
        put(b, a->name[i], nlen);
        if (zip64) {
            put_le(b, 1, 2);
            put_le(b, 24, 2);
            put_le(b, a->len[i], 8);
            put_le(b, comp[i], 8);
            put_le(b, local[i], 8);
        }
    }
    size_t cd_size = b->len - cd_off, e64 = b->len;
    if (zip64) {
        put_le(b, 0x06064b50, 4);
        put_le(b, 44, 8);
        put_le(b, 0x2d001e, 4);
        put_le(b, 0, 8);
        put_le(b, a->n, 8);
        put_le(b, a->n, 8);
        put_le(b, cd_size, 8);
        put_le(b, cd_off, 8);
        put_le(b, 0x07064b50, 4);
        put_le(b, 0, 4);
        put_le(b, e64, 8);
        put_le(b, 1, 4);
    }
    put_le(b, 0x06054b50, 4);
    put_le(b, 0, 4);
    put_le(b, a->n, 2);
    put_le(b, a->n, 2);
    put_le(b, cd_size, 4);
    put_le(b, cd_off, 4);
    put_le(b, 0, 2);
}

/* ---- a torch-style pickle builder ------------------------------------------------------- */

typedef zbuf pb;

static void op(pb *b, int o) {
    put_le(b, (uint64_t)o & 0xFF, 1);
}

static void raw(pb *b, const char *s) {
    put(b, s, strlen(s));
}

static void bu(pb *b, const char *s) {
    op(b, 'X');
    put_le(b, strlen(s), 4);
    raw(b, s);
}

static void bint(pb *b, int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
        op(b, 'J');
        put_le(b, (uint32_t)(int32_t)v, 4);
    } else {
        op(b, 0x8a); /* LONG1, 8 bytes */
        op(b, 8);
        put_le(b, (uint64_t)v, 8);
    }
}

static void glob(pb *b, const char *mod, const char *name) {
    op(b, 'c');
    raw(b, mod);
    op(b, '\n');
    raw(b, name);
    op(b, '\n');
}

static void ints(pb *b, int n, const int64_t *v) {
    op(b, '(');
    for (int i = 0; i < n; i++) bint(b, v[i]);
    op(b, 't');
}

static void tensor(pb *b, const char *stype, const char *key, int64_t numel, int64_t off, int nd,
                   const int64_t *shape, const int64_t *stride) {
    glob(b, "torch._utils", "_rebuild_tensor_v2");
    op(b, '(');
    op(b, '(');
    bu(b, "storage");
    glob(b, "torch", stype);
    bu(b, key);
    bu(b, "cpu");
    bint(b, numel);
    op(b, 't');
    op(b, 'Q');
    bint(b, off);
    ints(b, nd, shape);
    ints(b, nd, stride);
    op(b, 0x89);
    glob(b, "collections", "OrderedDict");
    op(b, ')');
    op(b, 'R');
    op(b, 't');
    op(b, 'R');
}

/* A contiguous float tensor of shape [n] on storage key. */
static void vec(pb *b, const char *key, int64_t numel, int64_t off, int64_t n) {
    int64_t one = 1;
    tensor(b, "FloatStorage", key, numel, off, 1, &n, &one);
}

static void begin(pb *b) {
    memset(b, 0, sizeof *b);
    op(b, 0x80);
    op(b, 2);
}

static void zfree(zbuf *b) {
    imgd_free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- reading ----------------------------------------------------------------------------- */

static const float k_f[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

static imgd_status read_lim(const zbuf *z, const imgd_open_limits *lim, imgd_weights **out) {
    imgd_weights *w  = NULL;
    imgd_status   st = imgd_weights_new(IMGD_FORMAT_CKPT, "t.ckpt", &w);
    if (st != IMGD_OK) return st;
    st = imgd_ckpt_read("t.ckpt", z->p, z->len, lim, w);
    if (st != IMGD_OK) {
        imgd_weights_free(w);
        return st;
    }
    *out = w;
    return IMGD_OK;
}

static imgd_status read_ck(const zbuf *z, imgd_weights **out) {
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    return read_lim(z, &lim, out);
}

/* An archive "arc/" with data.pkl = p and storages "0" (k_f) and optional extras. */
static void simple_archive(const pb *p, int method, bool zip64, zbuf *z) {
    arch a = {0};
    ar_add(&a, "arc/data.pkl", p->p, p->len, method);
    ar_add(&a, "arc/data/0", k_f, sizeof k_f, method);
    ar_add(&a, "arc/version", "3\n", 2, 0);
    ar_build(&a, zip64, z);
}

static void expect_fail_lim(const pb *p, const imgd_open_limits *lim, imgd_status want,
                            const char *word) {
    zbuf z;
    simple_archive(p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_lim(&z, lim, &w), want);
    CHECK(w == NULL);
    CHECK_MSG(strstr(imgd_last_error(), word) != NULL, "'%s' not in: %s", word, imgd_last_error());
    CHECK_MSG(strstr(imgd_last_error(), "t.ckpt") != NULL, "no file in: %s", imgd_last_error());
    imgd_weights_free(w);
    zfree(&z);
}

static void expect_fail(const pb *p, imgd_status want, const char *word) {
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    expect_fail_lim(p, &lim, want, word);
}

static bool floats_are(const imgd_weights *w, const char *name, const float *want, size_t n) {
    imgd_tensor_info t;
    if (imgd_weights_find(w, name, &t) != IMGD_OK) {
        fprintf(stderr, "no tensor '%s'\n", name);
        return false;
    }
    if (t.dtype != IMGD_DTYPE_F32 || t.nbytes != n * 4) {
        fprintf(stderr, "'%s': dtype %s, %llu bytes\n", name, imgd_dtype_name(t.dtype),
                (unsigned long long)t.nbytes);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, (const uint8_t *)t.data + 4 * i, 4);
        if (v != want[i]) {
            fprintf(stderr, "'%s'[%zu] = %g, want %g\n", name, i, (double)v, (double)want[i]);
            return false;
        }
    }
    return true;
}

static const char *shared_dir(void) {
    const char *d = getenv("IMGD_SHARED_DIR");
    return d && *d ? d : "../shared";
}

static bool file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    (void)fclose(f);
    return true;
}

/* ---- conformance files ------------------------------------------------------------------- */

static void test_ckpt_matches_sd15_narrow_safetensors(void) {
    char ck[1024], st[1024];
    (void)imgd_fmt(ck, sizeof ck, "%s/conformance/sd15-narrow/sd15-narrow.ckpt", shared_dir());
    (void)imgd_fmt(st, sizeof st, "%s/conformance/sd15-narrow/sd15-narrow.safetensors",
                   shared_dir());
    if (!file_exists(ck) || !file_exists(st)) {
        TEST_SKIP("test_ckpt_matches_sd15_narrow_safetensors: %s not found", ck);
        return;
    }
    imgd_weights *a = NULL, *b = NULL;
    CHECK_STATUS(imgd_weights_open(ck, NULL, &a), IMGD_OK);
    CHECK_STATUS(imgd_weights_open(st, NULL, &b), IMGD_OK);
    if (a && b) {
        CHECK_EQ_INT(imgd_weights_format(a), IMGD_FORMAT_CKPT);
        CHECK_EQ_INT(imgd_weights_tensor_count(a), imgd_weights_tensor_count(b));
        size_t bad = 0;
        for (size_t i = 0; i < imgd_weights_tensor_count(b); i++) {
            imgd_tensor_info tb, ta;
            imgd_weights_tensor(b, i, &tb);
            if (imgd_weights_find(a, tb.name, &ta) != IMGD_OK || ta.dtype != tb.dtype ||
                ta.n_dims != tb.n_dims || memcmp(ta.shape, tb.shape, sizeof ta.shape) != 0 ||
                ta.nbytes != tb.nbytes || memcmp(ta.data, tb.data, ta.nbytes) != 0) {
                if (bad++ < 5) fprintf(stderr, "tensor '%s' differs\n", tb.name);
            }
        }
        CHECK_EQ_INT(bad, 0);
    }
    imgd_weights_free(a);
    imgd_weights_free(b);
}

static void test_ckpt_matches_textual_inversion_safetensors(void) {
    char pt[1024], st[1024];
    (void)imgd_fmt(pt, sizeof pt, "%s/conformance/sd15-narrow/textual_inversion/narrowti.pt",
                   shared_dir());
    (void)imgd_fmt(st, sizeof st,
                   "%s/conformance/sd15-narrow/textual_inversion/narrowti.safetensors",
                   shared_dir());
    if (!file_exists(pt) || !file_exists(st)) {
        TEST_SKIP("test_ckpt_matches_textual_inversion_safetensors: %s not found", pt);
        return;
    }
    imgd_weights *a = NULL, *b = NULL;
    CHECK_STATUS(imgd_weights_open(pt, NULL, &a), IMGD_OK);
    CHECK_STATUS(imgd_weights_open(st, NULL, &b), IMGD_OK);
    if (a && b) {
        imgd_tensor_info ta, tb;
        CHECK_STATUS(imgd_weights_find(a, "string_to_param.*", &ta), IMGD_OK);
        CHECK_STATUS(imgd_weights_find(b, "emb_params", &tb), IMGD_OK);
        CHECK_EQ_INT(ta.dtype, tb.dtype);
        CHECK_EQ_INT(ta.n_dims, tb.n_dims);
        CHECK_EQ_INT(ta.shape[0], tb.shape[0]);
        CHECK_EQ_INT(ta.shape[1], tb.shape[1]);
        CHECK(ta.nbytes == tb.nbytes && memcmp(ta.data, tb.data, ta.nbytes) == 0);
        CHECK_STR(imgd_weights_meta_find(a, "name"), "narrowti");
        CHECK_STR(imgd_weights_meta_find(a, "string_to_token.*"), "265");
    }
    imgd_weights_free(a);
    imgd_weights_free(b);
}

/* ---- valid checkpoints --------------------------------------------------------------------- */

/* {"w": [2,3] at 0, "b": [3] at 2} on storage "0" */
static void two_tensor_pickle(pb *p) {
    int64_t s23[2] = {2, 3}, c23[2] = {3, 1};
    begin(p);
    op(p, '}');
    op(p, '(');
    bu(p, "w");
    tensor(p, "FloatStorage", "0", 12, 0, 2, s23, c23);
    bu(p, "b");
    vec(p, "0", 12, 2, 3);
    op(p, 'u');
    op(p, '.');
}

static void test_ckpt_reads_stored_tensors_zero_copy(void) {
    pb p;
    two_tensor_pickle(&p);
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        CHECK_EQ_INT(imgd_weights_tensor_count(w), 2);
        CHECK(floats_are(w, "w", k_f, 6));
        CHECK(floats_are(w, "b", k_f + 2, 3));
        imgd_tensor_info t;
        CHECK_STATUS(imgd_weights_find(w, "w", &t), IMGD_OK);
        const uint8_t *d = t.data;
        CHECK(d >= z.p && d < z.p + z.len); /* a view of the archive buffer */
        CHECK(((uintptr_t)(d - z.p) % 64) == 0);
        CHECK_EQ_INT(t.shape[0], 2);
        CHECK_EQ_INT(t.shape[1], 3);
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_reads_deflated_entries(void) {
    pb p;
    two_tensor_pickle(&p);
    zbuf z;
    simple_archive(&p, 8, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        CHECK(floats_are(w, "w", k_f, 6));
        CHECK(floats_are(w, "b", k_f + 2, 3));
        imgd_tensor_info t;
        imgd_weights_find(w, "b", &t);
        const uint8_t *d = t.data;
        CHECK(d < z.p || d >= z.p + z.len); /* inflated into an owned buffer */
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_reads_zip64_archive(void) {
    pb p;
    two_tensor_pickle(&p);
    zbuf z;
    simple_archive(&p, 0, true, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) CHECK(floats_are(w, "w", k_f, 6) && floats_are(w, "b", k_f + 2, 3));
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_shares_storage_between_views(void) {
    int64_t s34[2] = {3, 4}, c34[2] = {4, 1}, s22[2] = {2, 2}, st22[2] = {4, 1};
    pb      p;
    begin(&p);
    op(&p, '}');
    op(&p, '(');
    bu(&p, "all");
    tensor(&p, "FloatStorage", "0", 12, 0, 2, s34, c34);
    bu(&p, "row2");
    vec(&p, "0", 12, 8, 4);
    bu(&p, "block"); /* rows 1-2, cols 1-2: not contiguous */
    tensor(&p, "FloatStorage", "0", 12, 5, 2, s22, st22);
    op(&p, 'u');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 8, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        const float block[4] = {5, 6, 9, 10};
        CHECK(floats_are(w, "all", k_f, 12));
        CHECK(floats_are(w, "row2", k_f + 8, 4));
        CHECK(floats_are(w, "block", block, 4));
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_materialises_transposed_tensor(void) {
    int64_t s43[2] = {4, 3}, t43[2] = {1, 4};
    pb      p;
    begin(&p);
    op(&p, '}');
    bu(&p, "t");
    tensor(&p, "FloatStorage", "0", 12, 0, 2, s43, t43);
    op(&p, 's');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        const float want[12] = {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
        CHECK(floats_are(w, "t", want, 12));
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_materialises_expanded_tensor(void) {
    int64_t s[3] = {2, 3, 2}, st[3] = {0, 1, 0};
    pb      p;
    begin(&p);
    op(&p, '}');
    bu(&p, "e");
    tensor(&p, "FloatStorage", "0", 12, 7, 3, s, st);
    op(&p, 's');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        const float want[12] = {7, 7, 8, 8, 9, 9, 7, 7, 8, 8, 9, 9};
        CHECK(floats_are(w, "e", want, 12));
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_unwraps_state_dict_and_keeps_scalars(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    op(&p, '(');
    bu(&p, "epoch");
    bint(&p, 3);
    bu(&p, "global_step");
    bint(&p, 1000);
    bu(&p, "optimizer_states"); /* not model weights: dropped with the wrapper */
    op(&p, ']');
    vec(&p, "0", 12, 0, 2);
    op(&p, 'a');
    bu(&p, "state_dict");
    op(&p, '}');
    op(&p, '(');
    bu(&p, "model.w");
    vec(&p, "0", 12, 0, 12);
    bu(&p, "lr");
    op(&p, 'G');
    put(&p, "\x3f\xe0\x00\x00\x00\x00\x00\x00", 8); /* 0.5 */
    op(&p, 'u');
    op(&p, 'u');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        CHECK_EQ_INT(imgd_weights_tensor_count(w), 1);
        CHECK(floats_are(w, "model.w", k_f, 12));
        CHECK_STR(imgd_weights_meta_find(w, "global_step"), "1000");
        CHECK_STR(imgd_weights_meta_find(w, "epoch"), "3");
        CHECK_STR(imgd_weights_meta_find(w, "lr"), "0.5");
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_unwraps_model_and_module_wrappers(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    bu(&p, "model");
    op(&p, '}');
    bu(&p, "module");
    op(&p, '}');
    bu(&p, "x");
    vec(&p, "0", 12, 1, 2);
    op(&p, 's');
    op(&p, 's');
    op(&p, 's');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) CHECK(floats_are(w, "x", k_f + 1, 2));
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_flattens_nested_dicts_like_a1111_embeddings(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    op(&p, '(');
    bu(&p, "string_to_token");
    op(&p, '}');
    bu(&p, "*");
    bint(&p, 265);
    op(&p, 's');
    bu(&p, "string_to_param");
    op(&p, '}');
    bu(&p, "*");
    vec(&p, "0", 12, 4, 8);
    op(&p, 's');
    bu(&p, "name");
    bu(&p, "myemb");
    bu(&p, "step");
    bint(&p, 500);
    bu(&p, "done");
    op(&p, 0x88);
    bu(&p, "none");
    op(&p, 'N');
    op(&p, 'u');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        CHECK_EQ_INT(imgd_weights_tensor_count(w), 1);
        CHECK(floats_are(w, "string_to_param.*", k_f + 4, 8));
        CHECK_STR(imgd_weights_meta_find(w, "string_to_token.*"), "265");
        CHECK_STR(imgd_weights_meta_find(w, "name"), "myemb");
        CHECK_STR(imgd_weights_meta_find(w, "step"), "500");
        CHECK_STR(imgd_weights_meta_find(w, "done"), "True");
        CHECK(imgd_weights_meta_find(w, "none") == NULL);
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_names_list_items_and_int_keys(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    op(&p, '(');
    bu(&p, "layers");
    op(&p, ']');
    op(&p, '(');
    vec(&p, "0", 12, 0, 1);
    vec(&p, "0", 12, 1, 1);
    op(&p, 'e');
    bu(&p, "state");
    op(&p, '}');
    bint(&p, 7);
    op(&p, '(');
    vec(&p, "0", 12, 2, 1);
    bint(&p, 9);
    op(&p, 't');
    op(&p, 's');
    bu(&p, "skipped");
    op(&p, '}');
    op(&p, 'N'); /* a None key has no name: skipped */
    vec(&p, "0", 12, 3, 1);
    op(&p, 's');
    op(&p, 'u');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        CHECK_EQ_INT(imgd_weights_tensor_count(w), 3);
        CHECK(floats_are(w, "layers.0", k_f, 1));
        CHECK(floats_are(w, "layers.1", k_f + 1, 1));
        CHECK(floats_are(w, "state.7.0", k_f + 2, 1));
        CHECK_STR(imgd_weights_meta_find(w, "state.7.1"), "9");
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_reads_protocol4_pickle(void) {
    pb p;
    memset(&p, 0, sizeof p);
    op(&p, 0x80);
    op(&p, 4);
    op(&p, 0x95);
    size_t frame_at = p.len;
    put_le(&p, 0, 8);
    op(&p, '}');
    op(&p, 0x94);
    op(&p, 0x8c);
    op(&p, 1);
    raw(&p, "k");
    op(&p, 0x94);
    op(&p, 0x8c);
    op(&p, 12);
    raw(&p, "torch._utils");
    op(&p, 0x8c);
    op(&p, 18);
    raw(&p, "_rebuild_tensor_v2");
    op(&p, 0x93);
    op(&p, 0x94);
    op(&p, '(');
    op(&p, '(');
    op(&p, 0x8c);
    op(&p, 7);
    raw(&p, "storage");
    op(&p, 0x8c);
    op(&p, 5);
    raw(&p, "torch");
    op(&p, 0x8c);
    op(&p, 12);
    raw(&p, "FloatStorage");
    op(&p, 0x93);
    op(&p, 0x8c);
    op(&p, 1);
    raw(&p, "0");
    op(&p, 0x8c);
    op(&p, 3);
    raw(&p, "cpu");
    raw(&p, "K\x0c");
    op(&p, 't');
    op(&p, 'Q');
    raw(&p, "K\x03");
    raw(&p, "K\x04\x85");
    raw(&p, "K\x01\x85");
    op(&p, 0x89);
    op(&p, '}');
    op(&p, 't');
    op(&p, 'R');
    op(&p, 0x94);
    op(&p, 's');
    op(&p, '.');
    uint64_t flen = p.len - frame_at - 8;
    for (int i = 0; i < 8; i++) p.p[frame_at + (size_t)i] = (uint8_t)(flen >> (8 * i));
    zbuf z;
    simple_archive(&p, 8, true, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) CHECK(floats_are(w, "k", k_f + 3, 4));
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_empty_result_for_dict_without_tensors(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    bu(&p, "a");
    bint(&p, 1);
    op(&p, 's');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        CHECK_EQ_INT(imgd_weights_tensor_count(w), 0);
        CHECK_STR(imgd_weights_meta_find(w, "a"), "1");
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_reads_scalar_and_empty_tensors(void) {
    int64_t s03[2] = {0, 3}, c03[2] = {3, 1};
    pb      p;
    begin(&p);
    op(&p, '}');
    op(&p, '(');
    bu(&p, "scalar");
    tensor(&p, "FloatStorage", "0", 12, 11, 0, NULL, NULL);
    bu(&p, "empty");
    tensor(&p, "FloatStorage", "0", 12, 0, 2, s03, c03);
    op(&p, 'u');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        CHECK(floats_are(w, "scalar", k_f + 11, 1));
        imgd_tensor_info t;
        CHECK_STATUS(imgd_weights_find(w, "scalar", &t), IMGD_OK);
        CHECK_EQ_INT(t.n_dims, 0);
        CHECK_STATUS(imgd_weights_find(w, "empty", &t), IMGD_OK);
        CHECK_EQ_INT(t.nbytes, 0);
        CHECK_EQ_INT(t.shape[0], 0);
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_maps_every_storage_type(void) {
    static const struct {
        const char *stype;
        imgd_dtype  dt;
        size_t      es;
    } k[] = {{"FloatStorage", IMGD_DTYPE_F32, 4},     {"HalfStorage", IMGD_DTYPE_F16, 2},
             {"BFloat16Storage", IMGD_DTYPE_BF16, 2}, {"DoubleStorage", IMGD_DTYPE_F64, 8},
             {"LongStorage", IMGD_DTYPE_I64, 8},      {"IntStorage", IMGD_DTYPE_I32, 4},
             {"ShortStorage", IMGD_DTYPE_I16, 2},     {"CharStorage", IMGD_DTYPE_I8, 1},
             {"ByteStorage", IMGD_DTYPE_U8, 1},       {"BoolStorage", IMGD_DTYPE_BOOL, 1}};
    static const char *const keys[]    = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    static const char *const names[]   = {"arc/data/0", "arc/data/1", "arc/data/2", "arc/data/3",
                                          "arc/data/4", "arc/data/5", "arc/data/6", "arc/data/7",
                                          "arc/data/8", "arc/data/9"};
    static const uint8_t     bytes[16] = {1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0};
    int64_t                  two = 2, one = 1;
    pb                       p;
    begin(&p);
    op(&p, '}');
    op(&p, '(');
    for (size_t i = 0; i < 10; i++) {
        bu(&p, k[i].stype);
        tensor(&p, k[i].stype, keys[i], 2, 0, 1, &two, &one);
    }
    op(&p, 'u');
    op(&p, '.');
    arch a = {0};
    ar_add(&a, "arc/data.pkl", p.p, p.len, 0);
    for (size_t i = 0; i < 10; i++) ar_add(&a, names[i], bytes, 2 * k[i].es, (int)(i % 2) * 8);
    zbuf z;
    ar_build(&a, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    for (size_t i = 0; w && i < 10; i++) {
        imgd_tensor_info t;
        CHECK_STATUS(imgd_weights_find(w, k[i].stype, &t), IMGD_OK);
        CHECK_EQ_INT(t.dtype, k[i].dt);
        CHECK_EQ_INT(t.nbytes, 2 * k[i].es);
        CHECK(memcmp(t.data, bytes, t.nbytes) == 0);
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_reads_rebuild_v3_on_untyped_storage(void) {
    int64_t two = 2, one = 1;
    pb      p;
    begin(&p);
    op(&p, '}');
    bu(&p, "h");
    glob(&p, "torch._utils", "_rebuild_tensor_v3");
    op(&p, '(');
    op(&p, '(');
    bu(&p, "storage");
    glob(&p, "torch", "UntypedStorage");
    bu(&p, "0");
    bu(&p, "cpu");
    bint(&p, 48);
    op(&p, 't');
    op(&p, 'Q');
    bint(&p, 1); /* in float16 elements: bytes 2..5 */
    ints(&p, 1, &two);
    ints(&p, 1, &one);
    op(&p, 0x89);
    op(&p, '}');
    glob(&p, "torch", "float16");
    op(&p, 't');
    op(&p, 'R');
    op(&p, 's');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) {
        imgd_tensor_info t;
        CHECK_STATUS(imgd_weights_find(w, "h", &t), IMGD_OK);
        CHECK_EQ_INT(t.dtype, IMGD_DTYPE_F16);
        CHECK(t.nbytes == 4 && memcmp(t.data, (const uint8_t *)k_f + 2, 4) == 0);
    }
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_accepts_any_archive_prefix(void) {
    pb p;
    two_tensor_pickle(&p);
    arch a = {0};
    ar_add(&a, "my_model-v2.final/data.pkl", p.p, p.len, 0);
    ar_add(&a, "my_model-v2.final/data/0", k_f, sizeof k_f, 0);
    ar_add(&a, "my_model-v2.final/byteorder", "little", 6, 0);
    zbuf z;
    ar_build(&a, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_OK);
    if (w) CHECK(floats_are(w, "b", k_f + 2, 3));
    imgd_weights_free(w);
    zfree(&z);
    zfree(&p);
}

/* Writes z to $IMGD_TEST_TMP/<pid>-<name> (unique across parallel runs); path in buf. */
static bool write_tmp(const zbuf *z, const char *name, char *buf, size_t cap) {
    const char *dir = getenv("IMGD_TEST_TMP");
    (void)imgd_fmt(buf, cap, "%s/%ld-%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
    FILE *f = fopen(buf, "wb");
    if (!f) return false;
    bool ok = fwrite(z->p, 1, z->len, f) == z->len;
    return fclose(f) == 0 && ok;
}

static void test_ckpt_reads_through_public_api(void) {
    pb p;
    two_tensor_pickle(&p);
    zbuf z;
    simple_archive(&p, 8, false, &z);
    char path[1024];
    CHECK(write_tmp(&z, "test_ckpt_public.ckpt", path, sizeof path));
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
    if (w) {
        CHECK_EQ_INT(imgd_weights_format(w), IMGD_FORMAT_CKPT);
        CHECK(floats_are(w, "w", k_f, 6));
    }
    imgd_weights_free(w);
    (void)remove(path);
    zfree(&z);
    zfree(&p);
}

/* ---- hostile checkpoints ------------------------------------------------------------------- */

static void test_ckpt_refuses_unsafe_pickle_through_public_api(void) {
    pb p;
    begin(&p);
    glob(&p, "posix", "system");
    bu(&p, "touch /tmp/imgd_pwned");
    op(&p, 0x85);
    op(&p, 'R');
    op(&p, '.');
    zbuf z;
    simple_archive(&p, 0, false, &z);
    char path[1024];
    CHECK(write_tmp(&z, "test_ckpt_unsafe.pt", path, sizeof path));
    imgd_weights *w = NULL;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_E_UNSAFE);
    CHECK(w == NULL);
    CHECK(strstr(imgd_last_error(), "'posix.system'") != NULL);
    CHECK(strstr(imgd_last_error(), "arc/data.pkl at byte 2") != NULL);
    CHECK(strstr(imgd_last_error(), "Nothing was executed") != NULL);
    CHECK(strstr(imgd_last_error(), path) != NULL);
    (void)remove(path);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_refuses_bare_tensor(void) {
    pb p;
    begin(&p);
    vec(&p, "0", 12, 0, 12);
    op(&p, '.');
    expect_fail(&p, IMGD_E_UNSUPPORTED, "single unnamed tensor");
    zfree(&p);
}

static void test_ckpt_refuses_missing_storage_entry(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    vec(&p, "5", 12, 0, 12);
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "no archive entry 'arc/data/5'");
    zfree(&p);
}

static void test_ckpt_refuses_numel_mismatch(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    vec(&p, "0", 13, 0, 12);
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "numel mismatch");
    zfree(&p);
}

static void test_ckpt_refuses_wrong_storage_type_for_entry_size(void) {
    pb      p;
    int64_t n = 12, one = 1;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    tensor(&p, "DoubleStorage", "0", 12, 0, 1, &n, &one); /* 96 bytes claimed, 48 stored */
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "numel mismatch");
    zfree(&p);
}

static void test_ckpt_refuses_offset_out_of_range(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    vec(&p, "0", 12, 10, 3);
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "out of range");
    zfree(&p);
}

static void test_ckpt_refuses_stride_out_of_range(void) {
    int64_t s[2] = {3, 4}, st[2] = {5, 1};
    pb      p;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    tensor(&p, "FloatStorage", "0", 12, 0, 2, s, st);
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "out of range");
    zfree(&p);
}

static void test_ckpt_refuses_overflowing_offset_and_strides(void) {
    int64_t s[2] = {3, 4}, st[2] = {INT64_MAX / 2, 1};
    pb      p;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    tensor(&p, "FloatStorage", "0", 12, 0, 2, s, st);
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "out of range");
    zfree(&p);
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    vec(&p, "0", 12, INT64_MAX - 1, 1);
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "out of range");
    zfree(&p);
    int64_t huge[2] = {INT64_MAX, INT64_MAX}, zero[2] = {0, 0};
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    tensor(&p, "FloatStorage", "0", 12, 0, 2, huge, zero);
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "large shape");
    zfree(&p);
}

static void test_ckpt_refuses_storage_with_two_dtypes(void) {
    int64_t n = 6, one = 1;
    pb      p;
    begin(&p);
    op(&p, '}');
    op(&p, '(');
    bu(&p, "a");
    vec(&p, "0", 12, 0, 12);
    bu(&p, "b");
    tensor(&p, "DoubleStorage", "0", 6, 0, 1, &n, &one);
    op(&p, 'u');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "both F32 and F64");
    zfree(&p);
}

static void test_ckpt_refuses_archive_without_data_pkl(void) {
    arch a = {0};
    ar_add(&a, "arc/data/0", k_f, sizeof k_f, 0);
    ar_add(&a, "data.pkl", "x", 1, 0); /* not under an archive folder */
    zbuf z;
    ar_build(&a, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "<archive>/data.pkl") != NULL);
    zfree(&z);
}

static void test_ckpt_refuses_two_data_pkl(void) {
    pb p;
    two_tensor_pickle(&p);
    arch a = {0};
    ar_add(&a, "a/data.pkl", p.p, p.len, 0);
    ar_add(&a, "b/data.pkl", p.p, p.len, 0);
    zbuf z;
    ar_build(&a, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "several data.pkl") != NULL);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_refuses_cyclic_containers(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    op(&p, ']'); /* L = []; L.append(L) */
    op(&p, 'q');
    op(&p, 0);
    op(&p, 'h');
    op(&p, 0);
    op(&p, 'a');
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "cyclic");
    zfree(&p);
}

static void test_ckpt_refuses_exponential_object_graph(void) {
    /* l0 = [t]*4, l(i+1) = [l(i)]*4, 12 levels: 16 M paths from ~40 values */
    pb p;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    vec(&p, "0", 12, 0, 1);
    op(&p, 'q');
    op(&p, 0);
    op(&p, '0');
    for (int i = 0; i < 12; i++) {
        op(&p, '(');
        for (int k = 0; k < 4; k++) {
            op(&p, 'h');
            op(&p, i);
        }
        op(&p, 'l');
        op(&p, 'q');
        op(&p, i + 1);
        if (i < 11) op(&p, '0');
    }
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_TOO_LARGE, "paths");
    zfree(&p);
}

static void test_ckpt_refuses_deep_nesting(void) {
    pb p;
    begin(&p);
    for (int i = 0; i < 40; i++) {
        op(&p, '}');
        bu(&p, "k");
    }
    bint(&p, 1);
    for (int i = 0; i < 40; i++) op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "levels deep");
    zfree(&p);
}

static void test_ckpt_refuses_duplicate_tensor_names(void) {
    pb p;
    begin(&p);
    op(&p, '}');
    op(&p, '(');
    bu(&p, "a.b");
    vec(&p, "0", 12, 0, 1);
    bu(&p, "a");
    op(&p, '}');
    bu(&p, "b");
    vec(&p, "0", 12, 1, 1);
    op(&p, 's');
    op(&p, 'u');
    op(&p, '.');
    expect_fail(&p, IMGD_E_FORMAT, "twice");
    zfree(&p);
}

static void test_ckpt_refuses_expansion_bomb(void) {
    int64_t s[2] = {65536, 65536}, st[2] = {0, 0};
    pb      p;
    begin(&p);
    op(&p, '}');
    bu(&p, "x");
    tensor(&p, "FloatStorage", "0", 12, 0, 2, s, st);
    op(&p, 's');
    op(&p, '.');
    expect_fail(&p, IMGD_E_TOO_LARGE, "expansion bomb");
    zfree(&p);
}

static void test_ckpt_refuses_pickle_over_header_cap(void) {
    pb p;
    two_tensor_pickle(&p);
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    lim.header_size_max = 64;
    expect_fail_lim(&p, &lim, IMGD_E_TOO_LARGE, "header_size_max");
    lim.header_size_max = 1 << 20;
    lim.pickle_ops_max  = 10;
    expect_fail_lim(&p, &lim, IMGD_E_TOO_LARGE, "pickle_ops_max");
    zfree(&p);
}

static void test_ckpt_refuses_deflated_storage_over_inflate_cap(void) {
    pb p;
    two_tensor_pickle(&p);
    zbuf z;
    simple_archive(&p, 8, false, &z);
    imgd_open_limits lim;
    imgd_open_limits_from(NULL, &lim);
    lim.inflate_size_max = 16;
    imgd_weights *w      = NULL;
    CHECK_STATUS(read_lim(&z, &lim, &w), IMGD_E_TOO_LARGE);
    CHECK(strstr(imgd_last_error(), "arc/data/0") != NULL);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_refuses_corrupt_storage(void) {
    pb p;
    two_tensor_pickle(&p);
    zbuf z;
    simple_archive(&p, 0, false, &z);
    /* flip a byte of storage "0" (the bytes of k_f[5]) */
    for (size_t i = 0; i + 4 <= z.len; i++) {
        float v;
        memcpy(&v, z.p + i, 4);
        if (v == 5.0f) {
            z.p[i] ^= 1;
            break;
        }
    }
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "CRC") != NULL);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_refuses_big_endian_checkpoint(void) {
    pb p;
    two_tensor_pickle(&p);
    arch a = {0};
    ar_add(&a, "arc/data.pkl", p.p, p.len, 0);
    ar_add(&a, "arc/data/0", k_f, sizeof k_f, 0);
    ar_add(&a, "arc/byteorder", "big", 3, 0);
    zbuf z;
    ar_build(&a, false, &z);
    imgd_weights *w = NULL;
    CHECK_STATUS(read_ck(&z, &w), IMGD_E_UNSUPPORTED);
    CHECK(strstr(imgd_last_error(), "big-endian") != NULL);
    zfree(&z);
    zfree(&p);
}

static void test_ckpt_refuses_hostile_zip_and_pickle_through_reader(void) {
    /* a few whole-file cases: each must fail cleanly with its own status */
    pb p;
    two_tensor_pickle(&p);
    zbuf z;
    simple_archive(&p, 0, false, &z);
    imgd_weights *w = NULL;
    zbuf          t = z;
    t.len           = z.len - 1; /* truncated: no EOCD */
    CHECK_STATUS(read_ck(&t, &w), IMGD_E_FORMAT);
    t.len = 10;
    CHECK_STATUS(read_ck(&t, &w), IMGD_E_FORMAT);
    zfree(&z);
    p.p[p.len - 1] = 'N'; /* the pickle loses its STOP */
    simple_archive(&p, 8, false, &z);
    CHECK_STATUS(read_ck(&z, &w), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), "without STOP") != NULL);
    zfree(&z);
    zfree(&p);
}

int main(void) {
    RUN(test_ckpt_matches_sd15_narrow_safetensors);
    RUN(test_ckpt_matches_textual_inversion_safetensors);
    RUN(test_ckpt_reads_stored_tensors_zero_copy);
    RUN(test_ckpt_reads_deflated_entries);
    RUN(test_ckpt_reads_zip64_archive);
    RUN(test_ckpt_shares_storage_between_views);
    RUN(test_ckpt_materialises_transposed_tensor);
    RUN(test_ckpt_materialises_expanded_tensor);
    RUN(test_ckpt_unwraps_state_dict_and_keeps_scalars);
    RUN(test_ckpt_unwraps_model_and_module_wrappers);
    RUN(test_ckpt_flattens_nested_dicts_like_a1111_embeddings);
    RUN(test_ckpt_names_list_items_and_int_keys);
    RUN(test_ckpt_reads_protocol4_pickle);
    RUN(test_ckpt_empty_result_for_dict_without_tensors);
    RUN(test_ckpt_reads_scalar_and_empty_tensors);
    RUN(test_ckpt_maps_every_storage_type);
    RUN(test_ckpt_reads_rebuild_v3_on_untyped_storage);
    RUN(test_ckpt_accepts_any_archive_prefix);
    RUN(test_ckpt_reads_through_public_api);

    RUN(test_ckpt_refuses_unsafe_pickle_through_public_api);
    RUN(test_ckpt_refuses_bare_tensor);
    RUN(test_ckpt_refuses_missing_storage_entry);
    RUN(test_ckpt_refuses_numel_mismatch);
    RUN(test_ckpt_refuses_wrong_storage_type_for_entry_size);
    RUN(test_ckpt_refuses_offset_out_of_range);
    RUN(test_ckpt_refuses_stride_out_of_range);
    RUN(test_ckpt_refuses_overflowing_offset_and_strides);
    RUN(test_ckpt_refuses_storage_with_two_dtypes);
    RUN(test_ckpt_refuses_archive_without_data_pkl);
    RUN(test_ckpt_refuses_two_data_pkl);
    RUN(test_ckpt_refuses_cyclic_containers);
    RUN(test_ckpt_refuses_exponential_object_graph);
    RUN(test_ckpt_refuses_deep_nesting);
    RUN(test_ckpt_refuses_duplicate_tensor_names);
    RUN(test_ckpt_refuses_expansion_bomb);
    RUN(test_ckpt_refuses_pickle_over_header_cap);
    RUN(test_ckpt_refuses_deflated_storage_over_inflate_cap);
    RUN(test_ckpt_refuses_corrupt_storage);
    RUN(test_ckpt_refuses_big_endian_checkpoint);
    RUN(test_ckpt_refuses_hostile_zip_and_pickle_through_reader);
    TEST_END();
}
