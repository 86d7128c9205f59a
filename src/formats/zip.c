/* Zip reader over an in-memory buffer; see zip.h for what is accepted and refused.
 *
 * Layout (APPNOTE 6.3.x): local header + data for each entry, then the central directory
 * (one record per entry), then optionally the ZIP64 end record and its locator, then the
 * End Of Central Directory record with an optional comment. Offsets in the central
 * directory are absolute offsets into the buffer. Every read below is preceded by a
 * bounds check written with checked arithmetic; nothing is trusted until checked. */
#include "formats/zip.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZLIB_CONST /* const next_in */
#include <zlib.h>

#include "base/alloc.h"
#include "base/arena.h"
#include "base/error.h"
#include "base/text.h"

#define SIG_LOCAL      0x04034b50u
#define SIG_CENTRAL    0x02014b50u
#define SIG_EOCD       0x06054b50u
#define SIG_EOCD64     0x06064b50u
#define SIG_EOCD64_LOC 0x07064b50u

#define LOCAL_LEN      30u
#define CENTRAL_LEN    46u
#define EOCD_LEN       22u
#define EOCD64_LEN     56u
#define EOCD64_LOC_LEN 20u
#define COMMENT_MAX    65535u

#define FLAG_ENCRYPTED   0x0001u
#define FLAG_DESCRIPTOR  0x0008u
#define FLAG_STRONG_ENC  0x0040u
#define FLAG_ENC_CENTRAL 0x2000u

#define EXTRA_ZIP64 0x0001u

#define HINT_DAMAGED "the file is damaged or truncated; download it again"

struct imgd_zip {
    const char     *file;
    const uint8_t  *data;
    uint64_t        size;
    imgd_zip_entry *e;
    size_t          n;
    uint64_t        cd_off; /* local headers and data must end before this */
    imgd_strmap     index;  /* name -> entry index */
    imgd_arena      names;  /* NUL-terminated entry names */
};

/* ---- little-endian reads (callers have checked the bounds) ------------------------ */

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t rd64(const uint8_t *p) {
    return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32);
}

/* True when [off, off + len) lies inside [0, limit). */
static bool span_ok(uint64_t off, uint64_t len, uint64_t limit) {
    uint64_t end;
    return imgd_u64_add_ok(off, len, &end) && end <= limit;
}

/* Printable copy of an untrusted name for messages: bytes outside 0x20..0x7e become \xHH. */
static const char *esc(const char *s, size_t n, char *buf, size_t cap) {
    static const char hex[] = "0123456789abcdef";
    size_t            o     = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}

static uint32_t crc_of(const uint8_t *p, uint64_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc        = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)crc;
}

/* ---- end of central directory ------------------------------------------------------ */

typedef struct cd_info {
    uint64_t off, size, count;
    uint64_t limit; /* the central directory must end at or before this offset */
} cd_info;

static imgd_status find_eocd(const imgd_zip *z, uint64_t *pos) {
    if (z->size < EOCD_LEN) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: zip: %llu bytes is too short for a zip archive; " HINT_DAMAGED,
                         z->file, (unsigned long long)z->size);
    }
    uint64_t p     = z->size - EOCD_LEN;
    uint64_t lower = p > COMMENT_MAX ? p - COMMENT_MAX : 0;
    for (;;) {
        if (rd32(z->data + p) == SIG_EOCD && p + EOCD_LEN + rd16(z->data + p + 20) == z->size) {
            *pos = p;
            return IMGD_OK;
        }
        if (p == lower) break;
        p--;
    }
    return imgd_fail(IMGD_E_FORMAT,
                     "%s: zip: no End Of Central Directory record in the last %llu bytes; "
                     "the file is truncated or not a zip archive",
                     z->file, (unsigned long long)(z->size - lower));
}

/* Reads the ZIP64 end record that the locator just before the EOCD points to. */
static imgd_status read_eocd64(const imgd_zip *z, uint64_t loc, cd_info *cd) {
    const uint8_t *l   = z->data + loc;
    uint64_t       off = rd64(l + 8);
    uint32_t       nd  = rd32(l + 16);
    if (rd32(l + 4) != 0 || nd > 1) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: zip: multi-disk (split) archives are not supported; join the "
                         "parts into one file",
                         z->file);
    }
    if (!span_ok(off, EOCD64_LEN, loc) || rd32(z->data + off) != SIG_EOCD64) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: zip: the ZIP64 end record offset %llu is invalid; " HINT_DAMAGED,
                         z->file, (unsigned long long)off);
    }
    const uint8_t *r     = z->data + off;
    uint64_t       recsz = rd64(r + 4);
    if (recsz < EOCD64_LEN - 12 || !span_ok(off + 12, recsz, loc)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: zip: the ZIP64 end record size %llu is invalid; " HINT_DAMAGED,
                         z->file, (unsigned long long)recsz);
    }
    if (rd32(r + 16) != 0 || rd32(r + 20) != 0) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: zip: multi-disk (split) archives are not supported; join the "
                         "parts into one file",
                         z->file);
    }
    if (rd64(r + 24) != rd64(r + 32)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: zip: ZIP64 entry counts disagree (%llu on this disk, %llu in "
                         "total); " HINT_DAMAGED,
                         z->file, (unsigned long long)rd64(r + 24),
                         (unsigned long long)rd64(r + 32));
    }
    cd->count = rd64(r + 32);
    cd->size  = rd64(r + 40);
    cd->off   = rd64(r + 48);
    cd->limit = off;
    return IMGD_OK;
}

/* A 32-bit EOCD field must be saturated (value in ZIP64) or equal to the ZIP64 value. */
static bool agrees(uint64_t v32, uint64_t sat, uint64_t v64) {
    return v32 == sat || v32 == v64;
}

static imgd_status read_eocd(const imgd_zip *z, cd_info *cd) {
    uint64_t    p  = 0;
    imgd_status st = find_eocd(z, &p);
    if (st != IMGD_OK) return st;
    const uint8_t *e    = z->data + p;
    uint16_t       disk = rd16(e + 4), cd_disk = rd16(e + 6);
    uint64_t       n_disk = rd16(e + 8), n_total = rd16(e + 10);
    uint64_t       cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    bool zip64 = p >= EOCD64_LOC_LEN && rd32(z->data + p - EOCD64_LOC_LEN) == SIG_EOCD64_LOC;
    if (zip64) {
        st = read_eocd64(z, p - EOCD64_LOC_LEN, cd);
        if (st != IMGD_OK) return st;
        if (!agrees(n_total, 0xFFFF, cd->count) || !agrees(n_disk, 0xFFFF, cd->count) ||
            !agrees(cd_size, 0xFFFFFFFF, cd->size) || !agrees(cd_off, 0xFFFFFFFF, cd->off)) {
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: zip: the End Of Central Directory disagrees with the ZIP64 end "
                             "record; " HINT_DAMAGED,
                             z->file);
        }
        if (!agrees(disk, 0xFFFF, 0) || !agrees(cd_disk, 0xFFFF, 0)) {
            return imgd_fail(IMGD_E_UNSUPPORTED,
                             "%s: zip: multi-disk (split) archives are not supported; join the "
                             "parts into one file",
                             z->file);
        }
        return IMGD_OK;
    }
    if (disk != 0 || cd_disk != 0) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: zip: multi-disk (split) archives are not supported; join the parts "
                         "into one file",
                         z->file);
    }
    if (n_disk != n_total) {
        return imgd_fail(
            IMGD_E_FORMAT,
            "%s: zip: entry counts disagree (%llu on this disk, %llu in total); " HINT_DAMAGED,
            z->file, (unsigned long long)n_disk, (unsigned long long)n_total);
    }
    cd->count = n_total;
    cd->size  = cd_size;
    cd->off   = cd_off;
    cd->limit = p;
    return IMGD_OK;
}

/* ---- central directory ------------------------------------------------------------- */

/* Fields of a central record that ZIP64 may replace. */
typedef struct cd_fields {
    uint64_t usize, csize, local_off;
    uint32_t disk;
} cd_fields;

static imgd_status fail_entry(const imgd_zip *z, const char *name, size_t len, imgd_status st,
                              const char *problem) {
    char buf[256];
    return imgd_fail(st, "%s: zip entry '%s': %s", z->file, esc(name, len, buf, sizeof buf),
                     problem);
}

/* Finds the ZIP64 extra block in x[0..xlen) and replaces the saturated fields of f with
 * its values, in the order the spec gives. local: a local header's block, which always
 * holds both sizes. */
static imgd_status apply_zip64(const imgd_zip *z, const char *name, size_t nlen, const uint8_t *x,
                               uint32_t xlen, cd_fields *f, bool local) {
    bool need_u = f->usize == 0xFFFFFFFF || local, need_c = f->csize == 0xFFFFFFFF || local;
    bool need_o = !local && f->local_off == 0xFFFFFFFF, need_d = !local && f->disk == 0xFFFF;
    bool found = false;
    for (uint32_t p = 0; p < xlen;) {
        if (xlen - p < 4) {
            return fail_entry(z, name, nlen, IMGD_E_FORMAT,
                              "its extra field is truncated; " HINT_DAMAGED);
        }
        uint16_t id = rd16(x + p), len = rd16(x + p + 2);
        if (len > xlen - p - 4) {
            return fail_entry(z, name, nlen, IMGD_E_FORMAT,
                              "an extra field block runs past the extra field; " HINT_DAMAGED);
        }
        if (id == EXTRA_ZIP64 && !found) {
            found               = true;
            const uint8_t *q    = x + p + 4;
            uint32_t       need = 8u * (need_u + need_c + need_o) + 4u * need_d;
            if (len < need) {
                return fail_entry(z, name, nlen, IMGD_E_FORMAT,
                                  "its ZIP64 extra field is too short for the sizes it must "
                                  "hold; " HINT_DAMAGED);
            }
            if (need_u) {
                f->usize = rd64(q);
                q += 8;
            }
            if (need_c) {
                f->csize = rd64(q);
                q += 8;
            }
            if (need_o) {
                f->local_off = rd64(q);
                q += 8;
            }
            if (need_d) {
                f->disk = rd32(q);
            }
        } else if (id == EXTRA_ZIP64) {
            return fail_entry(z, name, nlen, IMGD_E_FORMAT,
                              "it has two ZIP64 extra fields; " HINT_DAMAGED);
        }
        p += 4u + len;
    }
    if (!found && !local && (need_u || need_c || need_o || need_d)) {
        return fail_entry(z, name, nlen, IMGD_E_FORMAT,
                          "a size or offset is saturated (0xFFFFFFFF) but there is no ZIP64 "
                          "extra field; " HINT_DAMAGED);
    }
    if (!found && local) {
        return fail_entry(
            z, name, nlen, IMGD_E_FORMAT,
            "its local header has saturated sizes but no ZIP64 extra field; " HINT_DAMAGED);
    }
    return IMGD_OK;
}

static imgd_status check_name(const imgd_zip *z, const char *s, size_t n) {
    if (n == 0) {
        return imgd_fail(IMGD_E_FORMAT, "%s: zip: an entry has an empty name; " HINT_DAMAGED,
                         z->file);
    }
    if (!imgd_utf8_valid(s, n)) {
        return fail_entry(z, s, n, IMGD_E_FORMAT,
                          "the name is not valid UTF-8 or contains NUL; the archive was not "
                          "written by PyTorch");
    }
    if (memchr(s, '\\', n)) {
        return fail_entry(z, s, n, IMGD_E_FORMAT,
                          "the name contains a backslash; refusing a path that could escape "
                          "the archive");
    }
    if (s[0] == '/' || (n >= 2 && s[1] == ':')) {
        return fail_entry(z, s, n, IMGD_E_FORMAT,
                          "the name is an absolute path; refusing a path that could escape the "
                          "archive");
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j] != '/') j++;
        if (j - i == 2 && s[i] == '.' && s[i + 1] == '.') {
            return fail_entry(z, s, n, IMGD_E_FORMAT,
                              "the name has a '..' component; refusing a path that could "
                              "escape the archive");
        }
        i = j + 1;
    }
    return IMGD_OK;
}

/* Parses one central record at *pos (bounds: end) into e; advances *pos. */
static imgd_status parse_central(imgd_zip *z, uint64_t *pos, uint64_t end, imgd_zip_entry *e) {
    const uint8_t *c = z->data + *pos;
    if (end - *pos < CENTRAL_LEN || rd32(c) != SIG_CENTRAL) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: zip: central directory record %zu at offset %llu is missing or "
                         "truncated (entry count mismatch); " HINT_DAMAGED,
                         z->file, z->n, (unsigned long long)*pos);
    }
    uint16_t flags = rd16(c + 8), method = rd16(c + 10);
    uint32_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
    if ((uint64_t)nlen + xlen + clen > end - *pos - CENTRAL_LEN) {
        return imgd_fail(
            IMGD_E_FORMAT,
            "%s: zip: central directory record %zu runs past the central directory; " HINT_DAMAGED,
            z->file, z->n);
    }
    const char *name = (const char *)c + CENTRAL_LEN;
    imgd_status st   = check_name(z, name, nlen);
    if (st != IMGD_OK) return st;
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENC | FLAG_ENC_CENTRAL)) {
        return fail_entry(z, name, nlen, IMGD_E_UNSUPPORTED,
                          "the entry is encrypted; encrypted archives are not supported");
    }
    if (method != 0 && method != 8) {
        char msg[160];
        (void)imgd_fmt(msg, sizeof msg,
                       "compression method %u is not supported (only stored and deflate); "
                       "re-save the file with torch.save",
                       method);
        return fail_entry(z, name, nlen, IMGD_E_UNSUPPORTED, msg);
    }
    cd_fields f = {rd32(c + 24), rd32(c + 20), rd32(c + 42), rd16(c + 34)};
    st          = apply_zip64(z, name, nlen, c + CENTRAL_LEN + nlen, xlen, &f, false);
    if (st != IMGD_OK) return st;
    if (f.disk != 0) {
        return fail_entry(z, name, nlen, IMGD_E_UNSUPPORTED,
                          "it starts on another disk; multi-disk archives are not supported");
    }
    if (method == 0 && f.usize != f.csize) {
        return fail_entry(z, name, nlen, IMGD_E_FORMAT,
                          "stored (uncompressed) but its compressed and uncompressed sizes "
                          "differ; " HINT_DAMAGED);
    }
    char *nm = imgd_arena_strndup(&z->names, name, nlen);
    if (!nm) return imgd_fail(IMGD_E_NOMEM, "%s: zip: out of memory for entry names", z->file);
    e->name      = nm;
    e->name_len  = nlen;
    e->size      = f.usize;
    e->comp_size = f.csize;
    e->local_off = f.local_off;
    e->crc       = rd32(c + 16);
    e->method    = method;
    *pos += CENTRAL_LEN + nlen + xlen + clen;
    return IMGD_OK;
}

/* ---- local headers and spans -------------------------------------------------------- */

/* Checks e's local header against its central record and computes e->data_off. The
 * local name/extra lengths are used (torch pads the local extra field to align data). */
static imgd_status check_local(const imgd_zip *z, imgd_zip_entry *e) {
    if (!span_ok(e->local_off, LOCAL_LEN, z->cd_off) || rd32(z->data + e->local_off) != SIG_LOCAL) {
        return fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                          "its local header offset points outside the file data or at no local "
                          "header; " HINT_DAMAGED);
    }
    const uint8_t *l     = z->data + e->local_off;
    uint16_t       flags = rd16(l + 6);
    uint32_t       nlen = rd16(l + 26), xlen = rd16(l + 28);
    if (rd16(l + 8) != e->method || (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENC))) {
        return fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                          "its local header disagrees with the central directory (method or "
                          "encryption); " HINT_DAMAGED);
    }
    uint64_t hdr_end = e->local_off + LOCAL_LEN;
    if (!span_ok(hdr_end, (uint64_t)nlen + xlen, z->cd_off)) {
        return fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                          "its local header runs into the central directory; " HINT_DAMAGED);
    }
    if (nlen != e->name_len || memcmp(l + LOCAL_LEN, e->name, nlen) != 0) {
        return fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                          "its local header names a different file than the central directory; "
                          "refusing an ambiguous archive");
    }
    if (!(flags & FLAG_DESCRIPTOR)) {
        cd_fields f = {rd32(l + 22), rd32(l + 18), 0, 0};
        if (f.usize == 0xFFFFFFFF || f.csize == 0xFFFFFFFF) {
            imgd_status st =
                apply_zip64(z, e->name, e->name_len, l + LOCAL_LEN + nlen, xlen, &f, true);
            if (st != IMGD_OK) return st;
        }
        if (rd32(l + 14) != e->crc || f.usize != e->size || f.csize != e->comp_size) {
            return fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                              "its local header disagrees with the central directory (CRC or "
                              "sizes); " HINT_DAMAGED);
        }
    }
    e->data_off = hdr_end + nlen + xlen;
    if (!span_ok(e->data_off, e->comp_size, z->cd_off)) {
        char msg[200];
        (void)imgd_fmt(
            msg, sizeof msg,
            "its data (%llu bytes at offset %llu) lies outside the file data (which ends "
            "at %llu); " HINT_DAMAGED,
            (unsigned long long)e->comp_size, (unsigned long long)e->data_off,
            (unsigned long long)z->cd_off);
        return fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT, msg);
    }
    return IMGD_OK;
}

typedef struct span {
    uint64_t begin, end;
    size_t   idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Refuses entries whose [local header, data end) spans overlap (zip bombs that reuse
 * one compressed stream for many entries, or ambiguous archives). */
static imgd_status check_overlaps(const imgd_zip *z) {
    if (z->n < 2) return IMGD_OK;
    span *s = imgd_calloc(z->n, sizeof *s);
    if (!s) return imgd_fail(IMGD_E_NOMEM, "%s: zip: out of memory", z->file);
    for (size_t i = 0; i < z->n; i++) {
        s[i].begin = z->e[i].local_off;
        s[i].end   = z->e[i].data_off + z->e[i].comp_size;
        s[i].idx   = i;
    }
    qsort(s, z->n, sizeof *s, cmp_span);
    imgd_status st = IMGD_OK;
    for (size_t i = 1; i < z->n && st == IMGD_OK; i++) {
        if (s[i].begin < s[i - 1].end) {
            const imgd_zip_entry *a = &z->e[s[i - 1].idx], *b = &z->e[s[i].idx];
            st = imgd_fail(IMGD_E_FORMAT,
                           "%s: zip entry '%s': its data overlaps entry '%s'; refusing an "
                           "overlapping (zip bomb or tampered) archive",
                           z->file, b->name, a->name);
        }
    }
    imgd_free(s);
    return st;
}

/* ---- open / free -------------------------------------------------------------------- */

static imgd_status read_entries(imgd_zip *z, const cd_info *cd) {
    uint64_t pos = cd->off, end = cd->off + cd->size;
    for (uint64_t i = 0; i < cd->count; i++) {
        imgd_status st = parse_central(z, &pos, end, &z->e[z->n]);
        if (st != IMGD_OK) return st;
        const imgd_zip_entry *e    = &z->e[z->n];
        size_t                prev = 0;
        st                         = imgd_strmap_put(&z->index, e->name, z->n, &prev);
        if (st == IMGD_E_INVALID_ARG) {
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: zip entry '%s': the name appears twice; refusing an "
                             "ambiguous archive",
                             z->file, e->name);
        }
        if (st != IMGD_OK) return st;
        z->n++;
    }
    if (pos != end) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: zip: %llu bytes of the central directory follow the %llu declared "
                         "entries (entry count mismatch); " HINT_DAMAGED,
                         z->file, (unsigned long long)(end - pos), (unsigned long long)cd->count);
    }
    for (size_t i = 0; i < z->n; i++) {
        imgd_status st = check_local(z, &z->e[i]);
        if (st != IMGD_OK) return st;
    }
    return check_overlaps(z);
}

imgd_status imgd_zip_open(const char *file, const uint8_t *data, uint64_t size, imgd_zip **out) {
    imgd_zip *z = imgd_calloc(1, sizeof *z);
    if (!z) return imgd_fail(IMGD_E_NOMEM, "%s: zip: out of memory", file);
    z->file = file;
    z->data = data;
    z->size = size;
    imgd_strmap_init(&z->index);
    imgd_arena_init(&z->names, 0);
    cd_info     cd = {0};
    imgd_status st = read_eocd(z, &cd);
    if (st != IMGD_OK) goto fail;
    if (!span_ok(cd.off, cd.size, cd.limit)) {
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: zip: the central directory (%llu bytes at offset %llu) lies outside "
                       "the file; " HINT_DAMAGED,
                       file, (unsigned long long)cd.size, (unsigned long long)cd.off);
        goto fail;
    }
    /* Each record takes at least CENTRAL_LEN bytes, which also bounds the allocation. */
    if (cd.count > cd.size / CENTRAL_LEN) {
        st = imgd_fail(IMGD_E_FORMAT,
                       "%s: zip: %llu entries cannot fit in a central directory of %llu bytes "
                       "(entry count mismatch); " HINT_DAMAGED,
                       file, (unsigned long long)cd.count, (unsigned long long)cd.size);
        goto fail;
    }
    z->cd_off = cd.off;
    z->e      = imgd_calloc(cd.count ? (size_t)cd.count : 1, sizeof *z->e);
    if (!z->e) {
        st = imgd_fail(IMGD_E_NOMEM, "%s: zip: out of memory for %llu entries", file,
                       (unsigned long long)cd.count);
        goto fail;
    }
    st = read_entries(z, &cd);
    if (st != IMGD_OK) goto fail;
    *out = z;
    return IMGD_OK;
fail:
    imgd_zip_free(z);
    return st;
}

void imgd_zip_free(imgd_zip *z) {
    if (!z) return;
    imgd_strmap_free(&z->index);
    imgd_arena_free(&z->names);
    imgd_free(z->e);
    imgd_free(z);
}

size_t imgd_zip_count(const imgd_zip *z) {
    return z->n;
}

const imgd_zip_entry *imgd_zip_entry_at(const imgd_zip *z, size_t i) {
    IMGD_ASSERT(i < z->n);
    return &z->e[i];
}

bool imgd_zip_find(const imgd_zip *z, const char *name, size_t *index) {
    return imgd_strmap_get(&z->index, name, index);
}

/* ---- extraction --------------------------------------------------------------------- */

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
    IMGD_UNUSED(opaque);
    return imgd_calloc(items, size);
}

static void z_free(voidpf opaque, voidpf p) {
    IMGD_UNUSED(opaque);
    imgd_free(p);
}

/* Inflates e's raw deflate stream into out[0..e->size); refuses streams that end early,
 * produce more than e->size bytes, are corrupt, or leave compressed bytes unused. */
static imgd_status inflate_entry(const imgd_zip *z, const imgd_zip_entry *e, uint8_t *out) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    zs.zalloc = z_alloc;
    zs.zfree  = z_free;
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
        return imgd_fail(IMGD_E_NOMEM, "%s: zip: cannot initialise zlib", z->file);
    }
    const uint8_t *in      = z->data + e->data_off;
    uint64_t       in_left = e->comp_size, out_left = e->size;
    uint8_t        spare;
    bool           in_spare = false;
    imgd_status    st       = IMGD_OK;
    for (;;) {
        if (zs.avail_in == 0 && in_left) {
            zs.avail_in = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
            zs.next_in  = in;
            in += zs.avail_in;
            in_left -= zs.avail_in;
        }
        if (zs.avail_out == 0 && out_left) {
            zs.avail_out = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
            zs.next_out  = out;
            out += zs.avail_out;
            out_left -= zs.avail_out;
        } else if (zs.avail_out == 0) {
            if (in_spare) break; /* the spare byte was filled: more output than declared */
            in_spare     = true;
            zs.avail_out = 1;
            zs.next_out  = &spare;
        }
        uInt ai = zs.avail_in, ao = zs.avail_out;
        int  zr = inflate(&zs, Z_NO_FLUSH);
        if (zr == Z_STREAM_END) break;
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            st = fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                            "the deflate stream is corrupt; " HINT_DAMAGED);
            goto done;
        }
        if (zs.avail_in == ai && zs.avail_out == ao) { /* no progress: input exhausted */
            st = fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                            "the deflate stream is truncated and inflates to fewer bytes than "
                            "declared; " HINT_DAMAGED);
            goto done;
        }
    }
    if (in_spare && zs.avail_out == 0) {
        char msg[200];
        (void)imgd_fmt(
            msg, sizeof msg,
            "it inflates to more than the declared %llu bytes; refusing a deflate bomb or "
            "lying header",
            (unsigned long long)e->size);
        st = fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT, msg);
    } else if (out_left || (!in_spare && zs.avail_out)) {
        st = fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                        "it inflates to fewer bytes than declared; " HINT_DAMAGED);
    } else if (zs.avail_in || in_left) {
        st = fail_entry(z, e->name, e->name_len, IMGD_E_FORMAT,
                        "compressed bytes follow the end of its deflate stream; " HINT_DAMAGED);
    }
done:
    inflateEnd(&zs);
    return st;
}

imgd_status imgd_zip_extract(const imgd_zip *z, size_t i, uint64_t inflate_size_max,
                             const uint8_t **data, uint64_t *size, void **owned) {
    const imgd_zip_entry *e   = imgd_zip_entry_at(z, i);
    uint8_t              *buf = NULL;
    const uint8_t        *p   = z->data + e->data_off;
    if (e->method == 8) {
        if (e->size > inflate_size_max || e->size >= SIZE_MAX) {
            char msg[200];
            (void)imgd_fmt(msg, sizeof msg,
                           "it declares %llu inflated bytes, over the cap of %llu; raise "
                           "inflate_size_max if the file is trusted",
                           (unsigned long long)e->size, (unsigned long long)inflate_size_max);
            return fail_entry(z, e->name, e->name_len, IMGD_E_TOO_LARGE, msg);
        }
        buf = imgd_malloc(e->size ? (size_t)e->size : 1);
        if (!buf) {
            return imgd_fail(IMGD_E_NOMEM, "%s: zip entry '%s': out of memory for %llu bytes",
                             z->file, e->name, (unsigned long long)e->size);
        }
        imgd_status st = inflate_entry(z, e, buf);
        if (st != IMGD_OK) {
            imgd_free(buf);
            return st;
        }
        p = buf;
    }
    uint32_t crc = crc_of(p, e->size);
    if (crc != e->crc) {
        imgd_free(buf);
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: zip entry '%s': CRC-32 mismatch (header 0x%08x, data 0x%08x); the "
                         "file is corrupt or was modified, download it again",
                         z->file, e->name, (unsigned)e->crc, (unsigned)crc);
    }
    *data  = p;
    *size  = e->size;
    *owned = buf;
    return IMGD_OK;
}
