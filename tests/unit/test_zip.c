/* Zip reader: valid archives (stored, deflated, ZIP64, padded local headers, data
 * descriptors) built here with a tiny writer, and hostile ones made by patching them. */
#include <zlib.h>

#include "base/alloc.h"
#include "formats/zip.h"
#include "test.h"

/* ---- a tiny zip writer ----------------------------------------------------------------- */

#define ZMAX 8

typedef struct zent {
    const char    *name;
    const void    *data;
    size_t         len;
    uint16_t       method;     /* 0 stored, 8 deflate */
    bool           zip64;      /* ZIP64 extra fields, saturated 32-bit fields */
    uint16_t       local_pad;  /* extra bytes in the local header only (torch alignment) */
    bool           descriptor; /* flag bit 3: sizes in a trailing data descriptor */
    const uint8_t *raw;        /* pre-compressed bytes to store instead (method 8) */
    size_t         raw_len;
} zent;

typedef struct zbuf {
    uint8_t *p;
    size_t   len, cap;
    /* offsets of what was written, for patching */
    size_t local[ZMAX], data[ZMAX], central[ZMAX], comp[ZMAX];
    size_t cd_off, cd_size, eocd, eocd64, loc64;
} zbuf;

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

static void set_le(uint8_t *p, uint64_t v, int k) {
    for (int i = 0; i < k; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Raw deflate of in[0..n) into a new imgd_malloc'd buffer. */
static uint8_t *deflate_raw(const void *in, size_t n, size_t *out_len) {
    z_stream s;
    memset(&s, 0, sizeof s);
    deflateInit2(&s, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
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

static void zip_build(zbuf *b, const zent *e, size_t n, bool zip64_eocd, const char *comment) {
    memset(b, 0, sizeof *b);
    uint32_t crc[ZMAX];
    for (size_t i = 0; i < n; i++) {
        uint8_t       *def  = NULL;
        const uint8_t *body = e[i].data;
        size_t         blen = e[i].len;
        if (e[i].method == 8 && e[i].raw) {
            body = e[i].raw;
            blen = e[i].raw_len;
        } else if (e[i].method == 8) {
            def  = deflate_raw(e[i].data, e[i].len, &blen);
            body = def;
        }
        crc[i]        = (uint32_t)crc32(0, e[i].data, (uInt)e[i].len);
        b->comp[i]    = blen;
        b->local[i]   = b->len;
        uint16_t flag = (uint16_t)(0x800 | (e[i].descriptor ? 8 : 0));
        uint16_t nlen = (uint16_t)strlen(e[i].name);
        uint16_t xlen = (uint16_t)((e[i].zip64 ? 20 : 0) + e[i].local_pad);
        put_le(b, 0x04034b50, 4);
        put_le(b, e[i].zip64 ? 45 : 20, 2);
        put_le(b, flag, 2);
        put_le(b, e[i].method, 2);
        put_le(b, 0, 2);
        put_le(b, 0x21, 2);
        put_le(b, e[i].descriptor ? 0 : crc[i], 4);
        put_le(b, e[i].zip64 ? 0xFFFFFFFF : e[i].descriptor ? 0 : blen, 4);
        put_le(b, e[i].zip64 ? 0xFFFFFFFF : e[i].descriptor ? 0 : e[i].len, 4);
        put_le(b, nlen, 2);
        put_le(b, xlen, 2);
        put(b, e[i].name, nlen);
        if (e[i].zip64) {
            put_le(b, 1, 2);
            put_le(b, 16, 2);
            put_le(b, e[i].len, 8);
            put_le(b, blen, 8);
        }
        if (e[i].local_pad) {
            put_le(b, 0x4246, 2); /* "FB", as torch writes */
            put_le(b, e[i].local_pad - 4u, 2);
            for (int k = 0; k < e[i].local_pad - 4; k++) put_le(b, 'Z', 1);
        }
        b->data[i] = b->len;
        put(b, body, blen);
        if (e[i].descriptor) {
            put_le(b, 0x08074b50, 4);
            put_le(b, crc[i], 4);
            put_le(b, blen, e[i].zip64 ? 8 : 4);
            put_le(b, e[i].len, e[i].zip64 ? 8 : 4);
        }
        imgd_free(def);
    }
    b->cd_off = b->len;
    for (size_t i = 0; i < n; i++) {
        uint16_t nlen = (uint16_t)strlen(e[i].name);
        b->central[i] = b->len;
        put_le(b, 0x02014b50, 4);
        put_le(b, 0x031e, 2);
        put_le(b, e[i].zip64 ? 45 : 20, 2);
        put_le(b, 0x800 | (e[i].descriptor ? 8 : 0), 2);
        put_le(b, e[i].method, 2);
        put_le(b, 0, 2);
        put_le(b, 0x21, 2);
        put_le(b, crc[i], 4);
        put_le(b, e[i].zip64 ? 0xFFFFFFFF : b->comp[i], 4);
        put_le(b, e[i].zip64 ? 0xFFFFFFFF : e[i].len, 4);
        put_le(b, nlen, 2);
        put_le(b, e[i].zip64 ? 28 : 0, 2);
        put_le(b, 0, 2);
        put_le(b, 0, 2);
        put_le(b, 0, 2);
        put_le(b, 0, 4);
        put_le(b, e[i].zip64 ? 0xFFFFFFFF : b->local[i], 4);
        put(b, e[i].name, nlen);
        if (e[i].zip64) {
            put_le(b, 1, 2);
            put_le(b, 24, 2);
            put_le(b, e[i].len, 8);
            put_le(b, b->comp[i], 8);
            put_le(b, b->local[i], 8);
        }
    }
    b->cd_size = b->len - b->cd_off;
    if (zip64_eocd) {
        b->eocd64 = b->len;
        put_le(b, 0x06064b50, 4);
        put_le(b, 44, 8);
        put_le(b, 0x031e, 2);
        put_le(b, 45, 2);
        put_le(b, 0, 4);
        put_le(b, 0, 4);
        put_le(b, n, 8);
        put_le(b, n, 8);
        put_le(b, b->cd_size, 8);
        put_le(b, b->cd_off, 8);
        b->loc64 = b->len;
        put_le(b, 0x07064b50, 4);
        put_le(b, 0, 4);
        put_le(b, b->eocd64, 8);
        put_le(b, 1, 4);
    }
    size_t clen = comment ? strlen(comment) : 0;
    b->eocd     = b->len;
    put_le(b, 0x06054b50, 4);
    put_le(b, 0, 2);
    put_le(b, 0, 2);
    put_le(b, zip64_eocd ? 0xFFFF : n, 2);
    put_le(b, zip64_eocd ? 0xFFFF : n, 2);
    put_le(b, zip64_eocd ? 0xFFFFFFFF : b->cd_size, 4);
    put_le(b, zip64_eocd ? 0xFFFFFFFF : b->cd_off, 4);
    put_le(b, clen, 2);
    put(b, comment, clen);
}

static void zbuf_free(zbuf *b) {
    imgd_free(b->p);
    b->p = NULL;
}

/* One stored and one deflated entry: the archive most hostile cases patch. */
static const char k_text[] = "hello hello hello hello, zip world";

static void two_entries(zbuf *b) {
    zent e[2] = {{.name = "arc/a.txt", .data = k_text, .len = sizeof k_text - 1},
                 {.name = "arc/b.txt", .data = k_text, .len = sizeof k_text - 1, .method = 8}};
    zip_build(b, e, 2, false, NULL);
}

static void expect_open_fail(const zbuf *b, imgd_status want, const char *word) {
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b->p, b->len, &z), want);
    CHECK(z == NULL);
    CHECK_MSG(strstr(imgd_last_error(), word) != NULL, "'%s' not in: %s", word, imgd_last_error());
    CHECK_MSG(strstr(imgd_last_error(), "t.zip") != NULL, "no file name in: %s", imgd_last_error());
    imgd_zip_free(z);
}

static void expect_extract_fail(const zbuf *b, size_t i, uint64_t cap, imgd_status want,
                                const char *word) {
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b->p, b->len, &z), IMGD_OK);
    if (!z) return;
    const uint8_t *d     = NULL;
    uint64_t       n     = 0;
    void          *owned = NULL;
    CHECK_STATUS(imgd_zip_extract(z, i, cap, &d, &n, &owned), want);
    CHECK(owned == NULL);
    CHECK_MSG(strstr(imgd_last_error(), word) != NULL, "'%s' not in: %s", word, imgd_last_error());
    imgd_zip_free(z);
}

/* Extracts entry i and compares it with want[0..len). */
static void expect_entry(const imgd_zip *z, size_t i, const void *want, size_t len, bool copy) {
    const uint8_t *d     = NULL;
    uint64_t       n     = 0;
    void          *owned = NULL;
    CHECK_STATUS(imgd_zip_extract(z, i, 1 << 20, &d, &n, &owned), IMGD_OK);
    CHECK_EQ_INT(n, len);
    CHECK(d && memcmp(d, want, len) == 0);
    CHECK(copy == (owned != NULL));
    imgd_free(owned);
}

/* ---- valid archives ---------------------------------------------------------------------- */

static void test_zip_reads_stored_entry_zero_copy(void) {
    zbuf b;
    two_entries(&b);
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    CHECK_EQ_INT(imgd_zip_count(z), 2);
    const uint8_t *d     = NULL;
    uint64_t       n     = 0;
    void          *owned = NULL;
    CHECK_STATUS(imgd_zip_extract(z, 0, 0, &d, &n, &owned), IMGD_OK);
    CHECK(d == b.p + b.data[0]); /* a pointer into the buffer */
    CHECK(owned == NULL);
    CHECK_EQ_INT(n, sizeof k_text - 1);
    CHECK_STR(imgd_zip_entry_at(z, 0)->name, "arc/a.txt");
    imgd_zip_free(z);
    zbuf_free(&b);
}

static void test_zip_reads_deflated_entry(void) {
    zbuf b;
    two_entries(&b);
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    CHECK_EQ_INT(imgd_zip_entry_at(z, 1)->method, 8);
    expect_entry(z, 1, k_text, sizeof k_text - 1, true);
    imgd_zip_free(z);
    zbuf_free(&b);
}

static void test_zip_reads_zip64_archive(void) {
    zent e[2] = {{.name = "a/data/0", .data = k_text, .len = 10, .zip64 = true},
                 {.name = "a/data/1", .data = k_text, .len = 20, .method = 8, .zip64 = true}};
    zbuf b;
    zip_build(&b, e, 2, true, NULL);
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    CHECK_EQ_INT(imgd_zip_count(z), 2);
    CHECK_EQ_INT(imgd_zip_entry_at(z, 0)->local_off, b.local[0]);
    expect_entry(z, 0, k_text, 10, false);
    expect_entry(z, 1, k_text, 20, true);
    imgd_zip_free(z);
    zbuf_free(&b);
}

static void test_zip_uses_local_extra_length_for_data(void) {
    zent e[1] = {{.name = "arc/data/0", .data = k_text, .len = 8, .local_pad = 40}};
    zbuf b;
    zip_build(&b, e, 1, true, NULL);
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    CHECK_EQ_INT(imgd_zip_entry_at(z, 0)->data_off, b.data[0]);
    expect_entry(z, 0, k_text, 8, false);
    imgd_zip_free(z);
    zbuf_free(&b);
}

static void test_zip_reads_data_descriptor_entries(void) {
    zent e[2] = {{.name = "x/0", .data = k_text, .len = 12, .descriptor = true, .local_pad = 9},
                 {.name = "x/1", .data = k_text, .len = 30, .method = 8, .descriptor = true}};
    zbuf b;
    zip_build(&b, e, 2, false, NULL);
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    expect_entry(z, 0, k_text, 12, false);
    expect_entry(z, 1, k_text, 30, true);
    imgd_zip_free(z);
    zbuf_free(&b);
}

static void test_zip_reads_empty_archive_and_comment(void) {
    zbuf b;
    zip_build(&b, NULL, 0, false, "a comment with PK\x05\x06 inside");
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    CHECK_EQ_INT(imgd_zip_count(z), 0);
    imgd_zip_free(z);
    zbuf_free(&b);
}

static void test_zip_finds_entries_by_name(void) {
    zbuf b;
    two_entries(&b);
    imgd_zip *z   = NULL;
    size_t    idx = 99;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    CHECK(imgd_zip_find(z, "arc/b.txt", &idx));
    CHECK_EQ_INT(idx, 1);
    CHECK(!imgd_zip_find(z, "arc/c.txt", &idx));
    CHECK(!imgd_zip_find(z, "arc/b.tx", &idx));
    imgd_zip_free(z);
    zbuf_free(&b);
}

static void test_zip_reads_empty_entries(void) {
    zent e[2] = {{.name = "e/0", .data = "", .len = 0}, {.name = "e/1", .data = "", .method = 8}};
    zbuf b;
    zip_build(&b, e, 2, false, NULL);
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    expect_entry(z, 0, "", 0, false);
    expect_entry(z, 1, "", 0, true);
    imgd_zip_free(z);
    zbuf_free(&b);
}

static void test_zip_allows_dots_inside_names(void) {
    zent e[1] = {{.name = "a..b/.../c.d", .data = k_text, .len = 3}};
    zbuf b;
    zip_build(&b, e, 1, false, NULL);
    imgd_zip *z = NULL;
    CHECK_STATUS(imgd_zip_open("t.zip", b.p, b.len, &z), IMGD_OK);
    if (!z) { /* only under allocation-failure injection */
        zbuf_free(&b);
        return;
    }
    imgd_zip_free(z);
    zbuf_free(&b);
}

/* ---- hostile: archive level -------------------------------------------------------------- */

static void test_zip_refuses_short_file(void) {
    zbuf b = {0};
    put(&b, "PK\x05\x06", 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "too short");
    zbuf_free(&b);
}

static void test_zip_refuses_missing_eocd(void) {
    zbuf b;
    two_entries(&b);
    b.p[b.eocd + 1] = 'Q';
    expect_open_fail(&b, IMGD_E_FORMAT, "End Of Central Directory");
    zbuf_free(&b);
}

static void test_zip_refuses_truncation_at_every_length(void) {
    zbuf b;
    zent e[2] = {{.name = "z/0", .data = k_text, .len = 20, .zip64 = true},
                 {.name = "z/1", .data = k_text, .len = 20, .method = 8}};
    zip_build(&b, e, 2, true, NULL);
    int accepted = 0;
    for (size_t cut = 0; cut < b.len; cut++) {
        imgd_zip *z = NULL;
        if (imgd_zip_open("t.zip", b.p, cut, &z) == IMGD_OK) accepted++;
        imgd_zip_free(z);
    }
    CHECK_EQ_INT(accepted, 0);
    zbuf_free(&b);
}

static void test_zip_refuses_eocd_comment_length_mismatch(void) {
    zbuf b;
    zip_build(&b, NULL, 0, false, "abc");
    set_le(b.p + b.eocd + 20, 9, 2); /* claims a 9-byte comment */
    expect_open_fail(&b, IMGD_E_FORMAT, "End Of Central Directory");
    zbuf_free(&b);
}

static void test_zip_refuses_central_directory_past_eof(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.eocd + 16, 0x7FFFFFF0, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "outside the file");
    zbuf_free(&b);
}

static void test_zip_refuses_central_directory_size_past_eocd(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.eocd + 12, b.cd_size + 30, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "outside the file");
    zbuf_free(&b);
}

static void test_zip_refuses_more_entries_than_records(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.eocd + 8, 3, 2);
    set_le(b.p + b.eocd + 10, 3, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "entry count mismatch");
    zbuf_free(&b);
}

static void test_zip_refuses_fewer_entries_than_records(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.eocd + 8, 1, 2);
    set_le(b.p + b.eocd + 10, 1, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "entry count mismatch");
    zbuf_free(&b);
}

static void test_zip_refuses_entry_count_that_cannot_fit(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.eocd + 8, 60000, 2);
    set_le(b.p + b.eocd + 10, 60000, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "entry count mismatch");
    zbuf_free(&b);
}

static void test_zip_refuses_disk_count_mismatch(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.eocd + 8, 1, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "entry counts disagree");
    zbuf_free(&b);
}

static void test_zip_refuses_multi_disk_archive(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.eocd + 4, 1, 2);
    expect_open_fail(&b, IMGD_E_UNSUPPORTED, "multi-disk");
    zbuf_free(&b);
}

static void test_zip_refuses_bad_zip64_end_record_offset(void) {
    zbuf b;
    zent e[1] = {{.name = "z/0", .data = k_text, .len = 5}};
    zip_build(&b, e, 1, true, NULL);
    set_le(b.p + b.loc64 + 8, b.len * 4, 8);
    expect_open_fail(&b, IMGD_E_FORMAT, "ZIP64 end record");
    zbuf_free(&b);
}

static void test_zip_refuses_bad_zip64_end_record_signature(void) {
    zbuf b;
    zent e[1] = {{.name = "z/0", .data = k_text, .len = 5}};
    zip_build(&b, e, 1, true, NULL);
    b.p[b.eocd64] = 'X';
    expect_open_fail(&b, IMGD_E_FORMAT, "ZIP64 end record");
    zbuf_free(&b);
}

static void test_zip_refuses_zip64_record_disagreeing_with_eocd(void) {
    zbuf b;
    zent e[1] = {{.name = "z/0", .data = k_text, .len = 5}};
    zip_build(&b, e, 1, true, NULL);
    set_le(b.p + b.eocd + 10, 7, 2); /* not saturated, and not 1 */
    set_le(b.p + b.eocd + 8, 7, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "disagrees");
    zbuf_free(&b);
}

static void test_zip_refuses_zip64_huge_cd_offset(void) {
    zbuf b;
    zent e[1] = {{.name = "z/0", .data = k_text, .len = 5}};
    zip_build(&b, e, 1, true, NULL);
    set_le(b.p + b.eocd64 + 48, UINT64_MAX - 8, 8); /* offset + size overflows */
    set_le(b.p + b.eocd64 + 40, 64, 8);
    expect_open_fail(&b, IMGD_E_FORMAT, "outside the file");
    zbuf_free(&b);
}

/* ---- hostile: central records --------------------------------------------------------------- */

static void test_zip_refuses_central_name_past_directory(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.central[1] + 28, 500, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "runs past the central directory");
    zbuf_free(&b);
}

static void test_zip_refuses_bad_central_signature(void) {
    zbuf b;
    two_entries(&b);
    b.p[b.central[1]] = 'X';
    expect_open_fail(&b, IMGD_E_FORMAT, "central directory record 1");
    zbuf_free(&b);
}

static void test_zip_refuses_saturated_size_without_zip64_extra(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.central[0] + 20, 0xFFFFFFFF, 4);
    set_le(b.p + b.central[0] + 24, 0xFFFFFFFF, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "ZIP64");
    zbuf_free(&b);
}

static void test_zip_refuses_short_zip64_extra(void) {
    zbuf b;
    zent e[1] = {{.name = "z/0", .data = k_text, .len = 5, .zip64 = true}};
    zip_build(&b, e, 1, false, NULL);
    size_t x = b.central[0] + 46 + 3; /* the extra block header after the name */
    set_le(b.p + x + 2, 8, 2);        /* holds only one of the three fields it must */
    set_le(b.p + x + 4 + 8, 0x9999, 2);
    set_le(b.p + x + 4 + 10, 12, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "too short");
    zbuf_free(&b);
}

static void test_zip_refuses_extra_block_past_extra_field(void) {
    zbuf b;
    zent e[1] = {{.name = "z/0", .data = k_text, .len = 5, .zip64 = true}};
    zip_build(&b, e, 1, false, NULL);
    set_le(b.p + b.central[0] + 46 + 3 + 2, 200, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "extra field");
    zbuf_free(&b);
}

static void test_zip_refuses_zip64_local_offset_past_eof(void) {
    zbuf b;
    zent e[1] = {{.name = "z/0", .data = k_text, .len = 5, .zip64 = true}};
    zip_build(&b, e, 1, false, NULL);
    set_le(b.p + b.central[0] + 46 + 3 + 4 + 16, (uint64_t)1 << 62, 8);
    expect_open_fail(&b, IMGD_E_FORMAT, "local header offset");
    zbuf_free(&b);
}

static void expect_bad_name(const char *name, const char *word) {
    zent e[1] = {{.name = name, .data = k_text, .len = 4}};
    zbuf b;
    zip_build(&b, e, 1, false, NULL);
    expect_open_fail(&b, IMGD_E_FORMAT, word);
    zbuf_free(&b);
}

static void test_zip_refuses_dotdot_names(void) {
    expect_bad_name("../evil", "'..'");
    expect_bad_name("arc/../../etc/passwd", "'..'");
    expect_bad_name("arc/..", "'..'");
}

static void test_zip_refuses_absolute_names(void) {
    expect_bad_name("/etc/passwd", "absolute");
    expect_bad_name("C:/Windows/x", "absolute");
}

static void test_zip_refuses_backslash_names(void) {
    expect_bad_name("arc\\data\\0", "backslash");
    expect_bad_name("..\\evil", "backslash");
}

static void test_zip_refuses_non_utf8_name(void) {
    expect_bad_name("arc/\xff\xfe", "UTF-8");
    expect_bad_name("arc/\xc0\xaf", "UTF-8"); /* overlong '/' */
}

static void test_zip_refuses_name_with_nul(void) {
    zent e[1] = {{.name = "arc/a_b", .data = k_text, .len = 4}};
    zbuf b;
    zip_build(&b, e, 1, false, NULL);
    b.p[b.central[0] + 46 + 4] = '\0';
    b.p[b.local[0] + 30 + 4]   = '\0';
    expect_open_fail(&b, IMGD_E_FORMAT, "UTF-8 or contains NUL");
    zbuf_free(&b);
}

static void test_zip_refuses_empty_name(void) {
    expect_bad_name("", "empty name");
}

static void test_zip_refuses_duplicate_names(void) {
    zent e[2] = {{.name = "arc/x", .data = k_text, .len = 4},
                 {.name = "arc/x", .data = k_text, .len = 6}};
    zbuf b;
    zip_build(&b, e, 2, false, NULL);
    expect_open_fail(&b, IMGD_E_FORMAT, "appears twice");
    zbuf_free(&b);
}

static void test_zip_refuses_encrypted_entry(void) {
    zbuf b;
    two_entries(&b);
    b.p[b.central[0] + 8] |= 1;
    expect_open_fail(&b, IMGD_E_UNSUPPORTED, "encrypted");
    zbuf_free(&b);
}

static void test_zip_refuses_other_methods(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.central[1] + 10, 12, 2); /* bzip2 */
    set_le(b.p + b.local[1] + 8, 12, 2);
    expect_open_fail(&b, IMGD_E_UNSUPPORTED, "method 12");
    zbuf_free(&b);
}

static void test_zip_refuses_stored_size_mismatch(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.central[0] + 24, 3, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "sizes differ");
    zbuf_free(&b);
}

/* ---- hostile: local headers and spans ------------------------------------------------------- */

static void test_zip_refuses_local_offset_past_eof(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.central[1] + 42, 0x7FFF0000, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "local header offset");
    zbuf_free(&b);
}

static void test_zip_refuses_local_header_inside_central_directory(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.central[1] + 42, b.cd_off, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "local header");
    zbuf_free(&b);
}

static void test_zip_refuses_bad_local_signature(void) {
    zbuf b;
    two_entries(&b);
    b.p[b.local[1] + 2] = 9;
    expect_open_fail(&b, IMGD_E_FORMAT, "no local header");
    zbuf_free(&b);
}

static void test_zip_refuses_local_name_mismatch(void) {
    zbuf b;
    two_entries(&b);
    b.p[b.local[1] + 30 + 4] = 'Q';
    expect_open_fail(&b, IMGD_E_FORMAT, "different file");
    zbuf_free(&b);
}

static void test_zip_refuses_local_method_mismatch(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.local[1] + 8, 0, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "disagrees");
    zbuf_free(&b);
}

static void test_zip_refuses_local_sizes_disagreeing(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.local[0] + 22, 5, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "disagrees");
    zbuf_free(&b);
}

static void test_zip_refuses_local_extra_past_central_directory(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.local[1] + 28, 0xFFFF, 2);
    expect_open_fail(&b, IMGD_E_FORMAT, "runs into the central directory");
    zbuf_free(&b);
}

static void test_zip_refuses_data_span_past_central_directory(void) {
    zent e[2] = {{.name = "z/0", .data = k_text, .len = 20, .descriptor = true},
                 {.name = "z/1", .data = k_text, .len = 20, .descriptor = true}};
    zbuf b;
    zip_build(&b, e, 2, false, NULL);
    set_le(b.p + b.central[1] + 20, 5000, 4);
    set_le(b.p + b.central[1] + 24, 5000, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "outside the file data");
    zbuf_free(&b);
}

static void test_zip_refuses_overlapping_entries(void) {
    zent e[2] = {{.name = "z/0", .data = k_text, .len = 20, .descriptor = true},
                 {.name = "z/1", .data = k_text, .len = 20, .descriptor = true}};
    zbuf b;
    zip_build(&b, e, 2, false, NULL);
    /* entry 0's data now runs over entry 1's local header */
    set_le(b.p + b.central[0] + 20, 60, 4);
    set_le(b.p + b.central[0] + 24, 60, 4);
    expect_open_fail(&b, IMGD_E_FORMAT, "overlaps");
    zbuf_free(&b);
}

static void test_zip_refuses_overlap_in_zip64_archive(void) {
    zent e[2] = {{.name = "z/0", .data = k_text, .len = 20, .zip64 = true, .descriptor = true},
                 {.name = "z/1", .data = k_text, .len = 20, .zip64 = true, .descriptor = true}};
    zbuf b;
    zip_build(&b, e, 2, true, NULL);
    set_le(b.p + b.central[1] + 46 + 3 + 4 + 16, b.local[0] + 4, 8); /* into entry 0 */
    expect_open_fail(&b, IMGD_E_FORMAT, "local header");
    zbuf_free(&b);
}

/* ---- hostile: entry data ------------------------------------------------------------------- */

static void test_zip_refuses_stored_crc_mismatch(void) {
    zbuf b;
    two_entries(&b);
    b.p[b.data[0] + 3] ^= 0x20;
    expect_extract_fail(&b, 0, 1 << 20, IMGD_E_FORMAT, "CRC-32 mismatch");
    CHECK(strstr(imgd_last_error(), "arc/a.txt") != NULL);
    zbuf_free(&b);
}

static void test_zip_refuses_deflated_crc_mismatch(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.central[1] + 16, 0x12345678, 4);
    set_le(b.p + b.local[1] + 14, 0x12345678, 4);
    expect_extract_fail(&b, 1, 1 << 20, IMGD_E_FORMAT, "CRC-32 mismatch");
    zbuf_free(&b);
}

static void test_zip_refuses_deflate_bomb(void) {
    /* 16 MiB of zeros deflate to ~16 KiB; the header claims 1000 bytes. */
    size_t   big  = (size_t)16 << 20, clen;
    uint8_t *zero = fixture_realloc(NULL, big);
    memset(zero, 0, big);
    uint8_t *raw  = deflate_raw(zero, big, &clen);
    zent     e[1] = {
            {.name = "bomb/0", .data = zero, .len = 1000, .method = 8, .raw = raw, .raw_len = clen}};
    zbuf b;
    zip_build(&b, e, 1, false, NULL);
    CHECK(b.len < (size_t)64 * 1024);
    expect_extract_fail(&b, 0, (uint64_t)1 << 40, IMGD_E_FORMAT, "more than the declared");
    zbuf_free(&b);
    imgd_free(raw);
    imgd_free(zero);
}

static void test_zip_refuses_declared_size_over_cap(void) {
    zbuf b;
    two_entries(&b);
    expect_extract_fail(&b, 1, 10, IMGD_E_TOO_LARGE, "inflate_size_max");
    /* and a header claiming 4 GiB against the default-sized cap */
    set_le(b.p + b.central[1] + 24, 0xFFFFFFF0, 4);
    set_le(b.p + b.local[1] + 22, 0xFFFFFFF0, 4);
    expect_extract_fail(&b, 1, 1 << 20, IMGD_E_TOO_LARGE, "cap");
    zbuf_free(&b);
}

static void test_zip_refuses_stream_shorter_than_declared(void) {
    zbuf b;
    two_entries(&b);
    set_le(b.p + b.central[1] + 24, sizeof k_text + 10, 4);
    set_le(b.p + b.local[1] + 22, sizeof k_text + 10, 4);
    expect_extract_fail(&b, 1, 1 << 20, IMGD_E_FORMAT, "fewer bytes");
    zbuf_free(&b);
}

static void test_zip_refuses_corrupt_deflate_stream(void) {
    uint8_t bad[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; /* invalid block type */
    zent    e[1]   = {
             {.name = "c/0", .data = k_text, .len = 10, .method = 8, .raw = bad, .raw_len = sizeof bad}};
    zbuf b;
    zip_build(&b, e, 1, false, NULL);
    expect_extract_fail(&b, 0, 1 << 20, IMGD_E_FORMAT, "corrupt");
    zbuf_free(&b);
}

static void test_zip_refuses_truncated_deflate_stream(void) {
    size_t   clen;
    uint8_t *raw  = deflate_raw(k_text, sizeof k_text - 1, &clen);
    zent     e[1] = {{.name    = "c/0",
                      .data    = k_text,
                      .len     = sizeof k_text - 1,
                      .method  = 8,
                      .raw     = raw,
                      .raw_len = clen - 3}};
    zbuf     b;
    zip_build(&b, e, 1, false, NULL);
    expect_extract_fail(&b, 0, 1 << 20, IMGD_E_FORMAT, "fewer bytes");
    zbuf_free(&b);
    imgd_free(raw);
}

static void test_zip_refuses_trailing_compressed_bytes(void) {
    size_t   clen;
    uint8_t *raw  = deflate_raw(k_text, sizeof k_text - 1, &clen);
    uint8_t *more = fixture_realloc(NULL, clen + 7);
    memset(more, 0, clen + 7);
    memcpy(more, raw, clen);
    zent e[1] = {{.name    = "c/0",
                  .data    = k_text,
                  .len     = sizeof k_text - 1,
                  .method  = 8,
                  .raw     = more,
                  .raw_len = clen + 7}};
    zbuf b;
    zip_build(&b, e, 1, false, NULL);
    expect_extract_fail(&b, 0, 1 << 20, IMGD_E_FORMAT, "follow the end");
    zbuf_free(&b);
    imgd_free(raw);
    imgd_free(more);
}

int main(void) {
    RUN(test_zip_reads_stored_entry_zero_copy);
    RUN(test_zip_reads_deflated_entry);
    RUN(test_zip_reads_zip64_archive);
    RUN(test_zip_uses_local_extra_length_for_data);
    RUN(test_zip_reads_data_descriptor_entries);
    RUN(test_zip_reads_empty_archive_and_comment);
    RUN(test_zip_finds_entries_by_name);
    RUN(test_zip_reads_empty_entries);
    RUN(test_zip_allows_dots_inside_names);

    RUN(test_zip_refuses_short_file);
    RUN(test_zip_refuses_missing_eocd);
    RUN(test_zip_refuses_truncation_at_every_length);
    RUN(test_zip_refuses_eocd_comment_length_mismatch);
    RUN(test_zip_refuses_central_directory_past_eof);
    RUN(test_zip_refuses_central_directory_size_past_eocd);
    RUN(test_zip_refuses_more_entries_than_records);
    RUN(test_zip_refuses_fewer_entries_than_records);
    RUN(test_zip_refuses_entry_count_that_cannot_fit);
    RUN(test_zip_refuses_disk_count_mismatch);
    RUN(test_zip_refuses_multi_disk_archive);
    RUN(test_zip_refuses_bad_zip64_end_record_offset);
    RUN(test_zip_refuses_bad_zip64_end_record_signature);
    RUN(test_zip_refuses_zip64_record_disagreeing_with_eocd);
    RUN(test_zip_refuses_zip64_huge_cd_offset);
    RUN(test_zip_refuses_central_name_past_directory);
    RUN(test_zip_refuses_bad_central_signature);
    RUN(test_zip_refuses_saturated_size_without_zip64_extra);
    RUN(test_zip_refuses_short_zip64_extra);
    RUN(test_zip_refuses_extra_block_past_extra_field);
    RUN(test_zip_refuses_zip64_local_offset_past_eof);
    RUN(test_zip_refuses_dotdot_names);
    RUN(test_zip_refuses_absolute_names);
    RUN(test_zip_refuses_backslash_names);
    RUN(test_zip_refuses_non_utf8_name);
    RUN(test_zip_refuses_name_with_nul);
    RUN(test_zip_refuses_empty_name);
    RUN(test_zip_refuses_duplicate_names);
    RUN(test_zip_refuses_encrypted_entry);
    RUN(test_zip_refuses_other_methods);
    RUN(test_zip_refuses_stored_size_mismatch);
    RUN(test_zip_refuses_local_offset_past_eof);
    RUN(test_zip_refuses_local_header_inside_central_directory);
    RUN(test_zip_refuses_bad_local_signature);
    RUN(test_zip_refuses_local_name_mismatch);
    RUN(test_zip_refuses_local_method_mismatch);
    RUN(test_zip_refuses_local_sizes_disagreeing);
    RUN(test_zip_refuses_local_extra_past_central_directory);
    RUN(test_zip_refuses_data_span_past_central_directory);
    RUN(test_zip_refuses_overlapping_entries);
    RUN(test_zip_refuses_overlap_in_zip64_archive);
    RUN(test_zip_refuses_stored_crc_mismatch);
    RUN(test_zip_refuses_deflated_crc_mismatch);
    RUN(test_zip_refuses_deflate_bomb);
    RUN(test_zip_refuses_declared_size_over_cap);
    RUN(test_zip_refuses_stream_shorter_than_declared);
    RUN(test_zip_refuses_corrupt_deflate_stream);
    RUN(test_zip_refuses_truncated_deflate_stream);
    RUN(test_zip_refuses_trailing_compressed_bytes);
    TEST_END();
}
