/* Image I/O: round trips per format, A1111 parameters read back by independent parsers,
 * hostile inputs, pixel caps, PNG variants, conversions, resizing, blur, latent masks, and
 * the conformance PNGs. Odd PNGs are built here by hand (zlib + crc32), not with libpng. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/text.h"
#include "pipeline/image.h"
#include "test.h"
#include "util.h"

/* ==== helpers ============================================================================ */

/* A w x h image with c channels and a deterministic pattern. */
static imgd_status pattern(imgd_image *img, int32_t w, int32_t h, int32_t c) {
    imgd_status st = imgd_image_init(img, w, h, c);
    if (st != IMGD_OK) return st;
    for (int32_t y = 0; y < h; y++) {
        for (int32_t x = 0; x < w; x++) {
            for (int32_t k = 0; k < c; k++) {
                img->px[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k] =
                    (uint8_t)(x * 37 + y * 11 + k * 101 + (x * y) % 7);
            }
        }
    }
    return IMGD_OK;
}

/* A smooth image (JPEG/WebP friendly). */
static imgd_status smooth(imgd_image *img, int32_t w, int32_t h, int32_t c) {
    imgd_status st = imgd_image_init(img, w, h, c);
    if (st != IMGD_OK) return st;
    for (int32_t y = 0; y < h; y++) {
        for (int32_t x = 0; x < w; x++) {
            for (int32_t k = 0; k < c; k++) {
                img->px[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k] =
                    (uint8_t)(k == 3 ? 255 : x * 150 / (w - 1) + y * 50 / (h - 1) + k * 20);
            }
        }
    }
    return IMGD_OK;
}

static bool same_image(const imgd_image *a, const imgd_image *b) {
    return a->w == b->w && a->h == b->h && a->c == b->c &&
           memcmp(a->px, b->px, (size_t)a->w * (size_t)a->h * (size_t)a->c) == 0;
}

static double mean_abs_diff(const imgd_image *a, const imgd_image *b) {
    size_t n = (size_t)a->w * (size_t)a->h * (size_t)a->c;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a->px[i] - (double)b->px[i]);
    return s / (double)n;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Appends one PNG chunk with its CRC. */
static imgd_status png_chunk(imgd_buf *b, const char *type, const uint8_t *data, size_t n) {
    uint8_t hdr[8];
    put_be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    uLong crc = crc32(0, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, (uInt)n);
    uint8_t tail[4];
    put_be32(tail, (uint32_t)crc);
    imgd_status st = imgd_buf_append(b, hdr, 8);
    if (st == IMGD_OK && n) st = imgd_buf_append(b, data, n);
    if (st == IMGD_OK) st = imgd_buf_append(b, tail, 4);
    return st;
}

/* A PNG made by hand: raw holds the filtered scanlines (filter byte 0 + packed samples)
 * exactly as they go into zlib. */
static imgd_status build_png(imgd_buf *out, uint32_t w, uint32_t h, uint8_t depth, uint8_t ctype,
                             uint8_t interlace, const uint8_t *raw, size_t raw_len,
                             const uint8_t *plte, size_t plte_len, const uint8_t *trns,
                             size_t trns_len) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t              ihdr[13];
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8]     = depth;
    ihdr[9]     = ctype;
    ihdr[10]    = 0;
    ihdr[11]    = 0;
    ihdr[12]    = interlace;
    uLongf   zn = compressBound((uLong)raw_len);
    uint8_t *z  = imgd_malloc(zn);
    if (!z) return IMGD_E_NOMEM;
    if (compress2(z, &zn, raw, (uLong)raw_len, 6) != Z_OK) {
        imgd_free(z);
        return IMGD_E_INTERNAL;
    }
    imgd_buf_init(out, 0);
    imgd_status st = imgd_buf_append(out, sig, 8);
    if (st == IMGD_OK) st = png_chunk(out, "IHDR", ihdr, 13);
    if (st == IMGD_OK && plte) st = png_chunk(out, "PLTE", plte, plte_len);
    if (st == IMGD_OK && trns) st = png_chunk(out, "tRNS", trns, trns_len);
    if (st == IMGD_OK) st = png_chunk(out, "IDAT", z, zn);
    if (st == IMGD_OK) st = png_chunk(out, "IEND", NULL, 0);
    imgd_free(z);
    if (st != IMGD_OK) imgd_buf_free(out);
    return st;
}

/* Finds chunk `type` in a PNG; returns its data offset or 0. */
static size_t png_find(const uint8_t *p, size_t n, const char *type, uint32_t *len) {
    for (size_t at = 8; at + 12 <= n;) {
        uint32_t l = be32(p + at);
        if (memcmp(p + at + 4, type, 4) == 0) {
            *len = l;
            return at + 8;
        }
        if (l > n - at - 12) break;
        at += 12 + (size_t)l;
    }
    return 0;
}

/* Appends code point cp as UTF-8. */
static void utf8_put(char *out, size_t *o, uint32_t cp) {
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xc0 | cp >> 6);
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xe0 | cp >> 12);
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*o)++] = (char)(0xf0 | cp >> 18);
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    }
}

/* Independent reader of the `parameters` text chunk: walks the chunks, takes tEXt
 * (Latin-1, converted to UTF-8) or uncompressed iTXt (UTF-8). Writes into out. */
static bool png_parameters(const uint8_t *p, size_t n, char *out, size_t cap, char *kind) {
    for (size_t at = 8; at + 12 <= n;) {
        uint32_t l = be32(p + at);
        if (l > n - at - 12) return false;
        const uint8_t *d = p + at + 8;
        bool text = memcmp(p + at + 4, "tEXt", 4) == 0, itxt = memcmp(p + at + 4, "iTXt", 4) == 0;
        if ((text || itxt) && l > 11 && memcmp(d, "parameters\0", 11) == 0) {
            size_t o = 0, i = 11;
            if (itxt) {
                if (l < 13 || d[11] != 0) return false; /* compression flag: none */
                i = 13;
                while (i < l && d[i]) i++; /* language tag */
                i++;
                while (i < l && d[i]) i++; /* translated keyword */
                i++;
            }
            for (; i < l && o + 5 < cap; i++) {
                if (itxt) {
                    out[o++] = (char)d[i];
                } else {
                    utf8_put(out, &o, d[i]);
                }
            }
            out[o] = '\0';
            *kind  = text ? 't' : 'i';
            return true;
        }
        at += 12 + (size_t)l;
    }
    return false;
}

/* Independent reader of an EXIF UserComment ("UNICODE\0" + UTF-16) from a TIFF block. */
static bool exif_comment(const uint8_t *t, size_t n, char *out, size_t cap) {
    if (n < 8) return false;
    bool be = t[0] == 'M';
#define R16(q) (be ? (uint32_t)((q)[0] << 8 | (q)[1]) : (uint32_t)((q)[1] << 8 | (q)[0]))
#define R32(q) (be ? (R16(q) << 16 | R16((q) + 2)) : (R16(q) | R16((q) + 2) << 16))
    uint32_t ifd = R32(t + 4), exif_ifd = 0;
    for (int level = 0; level < 2; level++) {
        if (ifd + 2 > n) return false;
        uint32_t cnt = R16(t + ifd);
        for (uint32_t i = 0; i < cnt; i++) {
            const uint8_t *e = t + ifd + 2 + 12 * (size_t)i;
            if ((size_t)(e - t) + 12 > n) return false;
            uint32_t tag = R16(e), count = R32(e + 4), off = R32(e + 8);
            if (level == 0 && tag == 0x8769) exif_ifd = off;
            if (level == 1 && tag == 0x9286) {
                if (off + count > n || count < 8 || memcmp(t + off, "UNICODE\0", 8) != 0) {
                    return false;
                }
                size_t o = 0;
                for (uint32_t k = off + 8; k + 1 < off + count && o + 5 < cap; k += 2) {
                    uint32_t u = R16(t + k);
                    if (u >= 0xd800 && u < 0xdc00 && k + 3 < off + count) {
                        u = 0x10000 + ((u - 0xd800) << 10) + (R16(t + k + 2) - 0xdc00);
                        k += 2;
                    }
                    utf8_put(out, &o, u);
                }
                out[o] = '\0';
                return true;
            }
        }
        if (level == 0 && !exif_ifd) return false;
        ifd = exif_ifd;
    }
#undef R16
#undef R32
    return false;
}

/* The TIFF block of a JPEG's APP1 Exif segment or a WebP's EXIF chunk. */
static bool find_exif(const uint8_t *p, size_t n, const uint8_t **tiff, size_t *len) {
    if (n > 12 && memcmp(p, "RIFF", 4) == 0) {
        for (size_t at = 12; at + 8 <= n;) {
            uint32_t l = (uint32_t)p[at + 4] | (uint32_t)p[at + 5] << 8 |
                         (uint32_t)p[at + 6] << 16 | (uint32_t)p[at + 7] << 24;
            if (l > n - at - 8) return false;
            if (memcmp(p + at, "EXIF", 4) == 0) {
                *tiff = p + at + 8;
                *len  = l;
                return true;
            }
            at += 8 + l + (l & 1);
        }
        return false;
    }
    for (size_t at = 2; at + 4 <= n && p[at] == 0xff;) {
        uint32_t l = (uint32_t)p[at + 2] << 8 | p[at + 3];
        if (l < 2 || at + 2 + l > n) return false;
        if (p[at + 1] == 0xe1 && l >= 8 && memcmp(p + at + 4, "Exif\0\0", 6) == 0) {
            *tiff = p + at + 10;
            *len  = l - 8;
            return true;
        }
        if (p[at + 1] == 0xda) return false;
        at += 2 + l;
    }
    return false;
}

/* ==== round trips ========================================================================== */

static void test_image_png_round_trip_is_exact(void) {
    static const int32_t dims[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 4}, {16, 3, 1}, {2, 9, 3}};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(dims); i++) {
        imgd_image a = {0}, b = {0};
        uint8_t   *png = NULL;
        size_t     n   = 0;
        REQUIRE(pattern(&a, dims[i][0], dims[i][1], dims[i][2]) == IMGD_OK);
        imgd_image_save_params sp = imgd_image_save_params_default();
        REQUIRE(imgd_image_encode(&a, &sp, &png, &n) == IMGD_OK);
        CHECK_STATUS(imgd_image_decode(png, n, "rt.png", NULL, &b), IMGD_OK);
        CHECK(same_image(&a, &b));
    done:
        imgd_free(png);
        imgd_image_free(&a);
        imgd_image_free(&b);
    }
}

static void test_image_jpeg_round_trip_within_tolerance(void) {
    static const int32_t chans[] = {3, 1, 4};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(chans); i++) {
        imgd_image a = {0}, b = {0}, ref = {0};
        uint8_t   *jpg = NULL;
        size_t     n   = 0;
        REQUIRE(smooth(&a, 64, 48, chans[i]) == IMGD_OK);
        imgd_image_save_params sp = imgd_image_save_params_default();
        sp.format                 = IMGD_IMAGE_FORMAT_JPEG;
        sp.quality                = 95;
        REQUIRE(imgd_image_encode(&a, &sp, &jpg, &n) == IMGD_OK);
        CHECK(n > 2 && jpg[0] == 0xff && jpg[1] == 0xd8);
        CHECK_STATUS(imgd_image_decode(jpg, n, "rt.jpg", NULL, &b), IMGD_OK);
        if (a.c == 4) {
            REQUIRE(imgd_image_to_rgb(&a, &ref) == IMGD_OK); /* JPEG flattens alpha */
        } else {
            REQUIRE(imgd_image_init(&ref, a.w, a.h, a.c) == IMGD_OK);
            memcpy(ref.px, a.px, (size_t)a.w * (size_t)a.h * (size_t)a.c);
        }
        CHECK(b.w == a.w && b.h == a.h && b.c == ref.c);
        if (b.w == a.w && b.h == a.h && b.c == ref.c) {
            CHECK_MSG(mean_abs_diff(&ref, &b) < 2.5, "mean abs diff %.3f", mean_abs_diff(&ref, &b));
        }
    done:
        imgd_free(jpg);
        imgd_image_free(&a);
        imgd_image_free(&b);
        imgd_image_free(&ref);
    }
}

static void test_image_webp_round_trips(void) {
    imgd_image a = {0}, b = {0}, c = {0}, d = {0};
    uint8_t   *lossy = NULL, *lossless = NULL;
    size_t     n1 = 0, n2 = 0;
    REQUIRE(smooth(&a, 40, 30, 3) == IMGD_OK);
    imgd_image_save_params sp = imgd_image_save_params_default();
    sp.format                 = IMGD_IMAGE_FORMAT_WEBP;
    sp.quality                = 95;
    REQUIRE(imgd_image_encode(&a, &sp, &lossy, &n1) == IMGD_OK);
    CHECK_STATUS(imgd_image_decode(lossy, n1, "rt.webp", NULL, &b), IMGD_OK);
    CHECK(b.w == 40 && b.h == 30 && b.c == 3);
    if (b.c == 3) CHECK_MSG(mean_abs_diff(&a, &b) < 3.0, "mean abs %.3f", mean_abs_diff(&a, &b));
    /* Lossless with alpha, including colour under fully transparent pixels: exact. */
    REQUIRE(pattern(&c, 13, 11, 4) == IMGD_OK);
    sp.lossless = true;
    REQUIRE(imgd_image_encode(&c, &sp, &lossless, &n2) == IMGD_OK);
    CHECK_STATUS(imgd_image_decode(lossless, n2, "rt-lossless.webp", NULL, &d), IMGD_OK);
    CHECK(same_image(&c, &d));
done:
    imgd_free(lossy);
    imgd_free(lossless);
    imgd_image_free(&a);
    imgd_image_free(&b);
    imgd_image_free(&c);
    imgd_image_free(&d);
}

static void test_image_save_is_atomic_and_loads_back(void) {
    char       path[512], bad[512];
    imgd_image a = {0}, b = {0};
    tu_tmp_path(path, sizeof path, "saved.png");
    tu_tmp_path(bad, sizeof bad, "no-such-dir/x.png");
    REQUIRE(pattern(&a, 9, 4, 3) == IMGD_OK);
    imgd_image_save_params sp = imgd_image_save_params_default();
    CHECK_STATUS(imgd_image_format_from_path("OUT.PNG", &sp.format), IMGD_OK);
    CHECK_EQ_INT(sp.format, IMGD_IMAGE_FORMAT_PNG);
    imgd_image_format f = 0;
    CHECK_STATUS(imgd_image_format_from_path("a/b.jpeg", &f), IMGD_OK);
    CHECK_EQ_INT(f, IMGD_IMAGE_FORMAT_JPEG);
    CHECK_STATUS(imgd_image_format_from_path("a.png/b", &f), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_image_format_from_path("x.gif", &f), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_image_save(&a, path, &sp), IMGD_OK);
    CHECK_STATUS(imgd_image_load(path, NULL, &b), IMGD_OK);
    CHECK(same_image(&a, &b));
    CHECK_STATUS(imgd_image_save(&a, bad, &sp), IMGD_E_IO);
    CHECK(strstr(imgd_last_error(), "no-such-dir") != NULL);
    char missing[512];
    tu_tmp_path(missing, sizeof missing, "missing.png");
    imgd_image c = {0};
    CHECK_STATUS(imgd_image_load(missing, NULL, &c), IMGD_E_IO);
    CHECK(strstr(imgd_last_error(), "missing.png") != NULL);
    imgd_image_free(&c);
    (void)remove(path);
done:
    imgd_image_free(&a);
    imgd_image_free(&b);
}

/* ==== parameters text in the files ====================================================== */

static void test_image_png_parameters_chunk_reads_back(void) {
    /* Latin-1 text -> tEXt; beyond Latin-1 -> iTXt (Pillow's add_text rule). */
    static const char *texts[] = {
        "café, (masterpiece:1.2)\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a",
        "一只猫 🐱\nSteps: 4, Sampler: LCM",
    };
    static const char kinds[] = {'t', 'i'};
    for (size_t i = 0; i < 2; i++) {
        imgd_image a   = {0};
        uint8_t   *png = NULL;
        size_t     n   = 0;
        char       got[512], kind = 0;
        REQUIRE(pattern(&a, 3, 2, 3) == IMGD_OK);
        imgd_image_save_params sp = imgd_image_save_params_default();
        sp.parameters             = texts[i];
        REQUIRE(imgd_image_encode(&a, &sp, &png, &n) == IMGD_OK);
        CHECK(png_parameters(png, n, got, sizeof got, &kind));
        CHECK_STR(got, texts[i]);
        CHECK_EQ_INT(kind, kinds[i]);
        /* The chunk comes before the image data, where Pillow's text readers look. */
        uint32_t l    = 0;
        size_t   idat = png_find(png, n, "IDAT", &l);
        size_t   txt  = png_find(png, n, kind == 't' ? "tEXt" : "iTXt", &l);
        CHECK(txt && idat && txt < idat);
    done:
        imgd_free(png);
        imgd_image_free(&a);
    }
}

static void test_image_jpeg_webp_parameters_in_exif_user_comment(void) {
    static const char *text = "a fox, 𝄞 ünïcode\nSteps: 20, Sampler: DPM++ 2M, Seed: 1";
    static const imgd_image_format fmts[] = {IMGD_IMAGE_FORMAT_JPEG, IMGD_IMAGE_FORMAT_WEBP};
    for (size_t i = 0; i < 2; i++) {
        imgd_image a = {0}, b = {0};
        uint8_t   *p = NULL;
        size_t     n = 0;
        REQUIRE(smooth(&a, 16, 16, 3) == IMGD_OK);
        imgd_image_save_params sp = imgd_image_save_params_default();
        sp.format                 = fmts[i];
        sp.parameters             = text;
        REQUIRE(imgd_image_encode(&a, &sp, &p, &n) == IMGD_OK);
        const uint8_t *tiff = NULL;
        size_t         tl   = 0;
        char           got[256];
        CHECK(find_exif(p, n, &tiff, &tl));
        if (tiff) {
            CHECK(exif_comment(tiff, tl, got, sizeof got));
            CHECK_STR(got, text);
        }
        CHECK_STATUS(imgd_image_decode(p, n, "meta", NULL, &b), IMGD_OK);
        CHECK(b.w == 16 && b.h == 16);
    done:
        imgd_free(p);
        imgd_image_free(&a);
        imgd_image_free(&b);
    }
}

static void test_image_jpeg_parameters_over_one_segment_are_refused(void) {
    size_t     big       = 40000;
    char      *long_text = imgd_malloc(big + 1);
    imgd_image a         = {0};
    uint8_t   *p         = NULL;
    size_t     n         = 0;
    REQUIRE(long_text && pattern(&a, 2, 2, 3) == IMGD_OK);
    memset(long_text, 'x', big);
    long_text[big]            = '\0';
    imgd_image_save_params sp = imgd_image_save_params_default();
    sp.format                 = IMGD_IMAGE_FORMAT_JPEG;
    sp.parameters             = long_text;
    CHECK_STATUS(imgd_image_encode(&a, &sp, &p, &n), IMGD_E_TOO_LARGE);
    CHECK(strstr(imgd_last_error(), "PNG") != NULL);
    sp.format = IMGD_IMAGE_FORMAT_PNG;
    CHECK_STATUS(imgd_image_encode(&a, &sp, &p, &n), IMGD_OK);
done:
    imgd_free(p);
    imgd_free(long_text);
    imgd_image_free(&a);
}

/* ==== hostile inputs ======================================================================= */

typedef struct hostile {
    const char *what;
    uint8_t    *data;
    size_t      n;
    imgd_status want;
    const char *needle; /* expected in the message */
} hostile;

/* Recomputes the CRC of the chunk whose data starts at `at` (length l). */
static void fix_crc(uint8_t *p, size_t at, uint32_t l) {
    uLong crc = crc32(0, p + at - 4, (uInt)(l + 4));
    put_be32(p + at + l, (uint32_t)crc);
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
    uint8_t *d = imgd_malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

static void test_image_hostile_inputs_are_refused_with_specific_errors(void) {
    imgd_image a   = {0};
    uint8_t   *png = NULL, *jpg = NULL, *webp = NULL;
    size_t     np = 0, nj = 0, nw = 0;
    hostile    h[24];
    size_t     nh = 0;
    memset(h, 0, sizeof h);
    REQUIRE(smooth(&a, 24, 20, 3) == IMGD_OK);
    imgd_image_save_params sp = imgd_image_save_params_default();
    REQUIRE(imgd_image_encode(&a, &sp, &png, &np) == IMGD_OK);
    sp.format = IMGD_IMAGE_FORMAT_JPEG;
    REQUIRE(imgd_image_encode(&a, &sp, &jpg, &nj) == IMGD_OK);
    sp.format = IMGD_IMAGE_FORMAT_WEBP;
    REQUIRE(imgd_image_encode(&a, &sp, &webp, &nw) == IMGD_OK);
    uint32_t il = 0, dl = 0;
    size_t   ihdr = png_find(png, np, "IHDR", &il), idat = png_find(png, np, "IDAT", &dl);
    REQUIRE(ihdr == 16 && idat && dl > 8);

#define ADD(what_, data_, n_, want_, needle_)                                                      \
    do {                                                                                           \
        h[nh] = (hostile){what_, data_, n_, want_, needle_};                                       \
        REQUIRE(h[nh].data != NULL);                                                               \
        nh++;                                                                                      \
    } while (0)
    ADD("empty", dup_bytes(png, 0), 0, IMGD_E_FORMAT, "empty");
    ADD("text file", dup_bytes((const uint8_t *)"hello, world", 12), 12, IMGD_E_FORMAT,
        "not a PNG, JPEG or WebP");
    ADD("gif", dup_bytes((const uint8_t *)"GIF89a\1\0\1\0\0\0\0", 13), 13, IMGD_E_UNSUPPORTED,
        "GIF");
    ADD("png signature only", dup_bytes(png, 8), 8, IMGD_E_FORMAT, "truncated");
    ADD("png cut inside IDAT", dup_bytes(png, idat + dl / 2), idat + dl / 2, IMGD_E_FORMAT,
        "truncated");
    ADD("png without IEND", dup_bytes(png, idat + dl + 4), idat + dl + 4, IMGD_E_FORMAT,
        "truncated");
    uint8_t *bad_crc = dup_bytes(png, np);
    ADD("png IHDR CRC", bad_crc, np, IMGD_E_FORMAT, "CRC");
    bad_crc[ihdr + 13] ^= 0x55;
    uint8_t *zero_w = dup_bytes(png, np);
    ADD("png zero width", zero_w, np, IMGD_E_FORMAT, "width");
    put_be32(zero_w + ihdr, 0);
    fix_crc(zero_w, ihdr, 13);
    uint8_t *depth = dup_bytes(png, np);
    ADD("png bit depth 3", depth, np, IMGD_E_FORMAT, "bit depth");
    depth[ihdr + 8] = 3;
    fix_crc(depth, ihdr, 13);
    uint8_t *zlib = dup_bytes(png, np);
    ADD("png IDAT not zlib", zlib, np, IMGD_E_FORMAT, "IDAT");
    zlib[idat]     = 0x12;
    zlib[idat + 1] = 0x34;
    fix_crc(zlib, idat, dl);
    uint8_t *huge = dup_bytes(png, np);
    ADD("png 100000x100000", huge, np, IMGD_E_TOO_LARGE, "100000x100000");
    put_be32(huge + ihdr, 100000);
    put_be32(huge + ihdr + 4, 100000);
    fix_crc(huge, ihdr, 13);
    /* An ancillary chunk claiming 1 GiB right after IHDR: skipped without allocating it,
     * then the data runs out. */
    uint8_t *claim = dup_bytes(png, np);
    ADD("png tEXt claims 1 GiB", claim, ihdr + 17 + 12, IMGD_E_FORMAT, "truncated");
    put_be32(claim + ihdr + 17, 0x40000000u);
    static const uint8_t k_text[8] = {'t', 'E', 'X', 't', 'p', 'a', 'r', 'a'};
    memcpy(claim + ihdr + 21, k_text, sizeof k_text);
    ADD("jpeg cut in half", dup_bytes(jpg, nj / 2), nj / 2, IMGD_E_FORMAT, "truncated");
    ADD("jpeg SOI + junk", dup_bytes((const uint8_t *)"\xff\xd8\xff\x01garbage-data", 15), 15,
        IMGD_E_FORMAT, "JPEG");
    ADD("jpeg headers only", dup_bytes(jpg, 200), 200, IMGD_E_FORMAT, "JPEG");
    uint8_t *sof = dup_bytes(jpg, nj);
    ADD("jpeg zero height", sof, nj, IMGD_E_FORMAT, "JPEG");
    for (size_t i = 2; i + 9 < nj; i++) {
        if (sof[i] == 0xff && sof[i + 1] == 0xc0) { /* SOF0: len(2) precision(1) height(2) */
            sof[i + 5] = 0;
            sof[i + 6] = 0;
            break;
        }
    }
    ADD("webp cut in half", dup_bytes(webp, nw / 2), nw / 2, IMGD_E_FORMAT, "WebP");
    uint8_t *riff =
        dup_bytes((const uint8_t *)"RIFF\x20\0\0\0WEBPVP8 \x14\0\0\0garbagegarbagegarbag", 40);
    ADD("webp junk bitstream", riff, 40, IMGD_E_FORMAT, "WebP");
    ADD("webp header only", dup_bytes(webp, 16), 16, IMGD_E_FORMAT, "WebP");
    ADD("riff wave", dup_bytes((const uint8_t *)"RIFF\x04\0\0\0WAVEfmt ", 16), 16, IMGD_E_FORMAT,
        "not a PNG");
#undef ADD
    CHECK(nh >= 10);
    for (size_t i = 0; i < nh; i++) {
        imgd_image out = {0};
        char       name[64];
        (void)imgd_fmt(name, sizeof name, "hostile-%zu.img", i);
        imgd_status st = imgd_image_decode(h[i].data, h[i].n, name, NULL, &out);
        if (getenv("IMGD_TEST_VERBOSE")) {
            fprintf(stderr, "  %-22s %s\n", h[i].what, imgd_last_error());
        }
        CHECK_MSG(st == h[i].want, "%s: got %s (%s)", h[i].what, imgd_status_name(st),
                  imgd_last_error());
        CHECK_MSG(strstr(imgd_last_error(), name) != NULL, "%s: message lacks the name: %s",
                  h[i].what, imgd_last_error());
        CHECK_MSG(strstr(imgd_last_error(), h[i].needle) != NULL, "%s: message lacks '%s': %s",
                  h[i].what, h[i].needle, imgd_last_error());
        CHECK(out.px == NULL);
        imgd_image_free(&out);
    }
done:
    for (size_t i = 0; i < nh; i++) imgd_free(h[i].data);
    imgd_free(png);
    imgd_free(jpg);
    imgd_free(webp);
    imgd_image_free(&a);
}

static void test_image_pixel_cap_refuses_every_format(void) {
    imgd_image a = {0};
    REQUIRE(smooth(&a, 40, 30, 3) == IMGD_OK);
    static const imgd_image_format fmts[] = {IMGD_IMAGE_FORMAT_PNG, IMGD_IMAGE_FORMAT_JPEG,
                                             IMGD_IMAGE_FORMAT_WEBP};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(fmts); i++) {
        uint8_t               *p  = NULL;
        size_t                 n  = 0;
        imgd_image             b  = {0};
        imgd_image_save_params sp = imgd_image_save_params_default();
        sp.format                 = fmts[i];
        if (imgd_image_encode(&a, &sp, &p, &n) != IMGD_OK) {
            CHECK(0);
            continue;
        }
        imgd_image_limits lim = {.pixels_max = (uint64_t)40 * 30 - 1};
        CHECK_STATUS(imgd_image_decode(p, n, "capped", &lim, &b), IMGD_E_TOO_LARGE);
        CHECK(strstr(imgd_last_error(), "40x30") != NULL);
        CHECK(strstr(imgd_last_error(), "1199") != NULL);
        lim.pixels_max = (uint64_t)40 * 30;
        CHECK_STATUS(imgd_image_decode(p, n, "capped", &lim, &b), IMGD_OK);
        imgd_image_free(&b);
        imgd_free(p);
    }
    CHECK_EQ_INT(IMGD_IMAGE_PIXELS_MAX_DEFAULT, 8192 * 8192);
done:
    imgd_image_free(&a);
}

static void test_image_corrupt_file_error_names_the_path(void) {
    char path[512];
    tu_tmp_path(path, sizeof path, "corrupt.webp");
    REQUIRE(tu_write_file(path, "RIFF\x04\0\0\0WEBPVP8 ", 16) == 0);
    imgd_image b = {0};
    CHECK_STATUS(imgd_image_load(path, NULL, &b), IMGD_E_FORMAT);
    CHECK(strstr(imgd_last_error(), path) != NULL);
    (void)remove(path);
done:
    imgd_image_free(&b);
}

/* ==== PNG variants ========================================================================= */

static void decode_built(imgd_buf *png, imgd_image *out, imgd_status *st) {
    *st = imgd_image_decode(png->data, png->len, "built.png", NULL, out);
    imgd_buf_free(png);
}

static void test_image_png_16bit_palette_gray_alpha_variants(void) {
    imgd_buf    b;
    imgd_image  img = {0};
    imgd_status st;
    /* 16-bit RGB, 2x1: high bytes 0x12.. and 0xfe.. */
    static const uint8_t rgb16[] = {0,    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc,
                                    0xfe, 0xff, 0x01, 0x02, 0x80, 0x00};
    REQUIRE(build_png(&b, 2, 1, 16, 2, 0, rgb16, sizeof rgb16, NULL, 0, NULL, 0) == IMGD_OK);
    decode_built(&b, &img, &st);
    CHECK_STATUS(st, IMGD_OK);
    if (st == IMGD_OK) {
        CHECK(img.c == 3 && img.px[0] == 0x12 && img.px[1] == 0x56 && img.px[2] == 0x9a);
        CHECK(img.px[3] == 0xfe && img.px[4] == 0x01 && img.px[5] == 0x80);
    }
    imgd_image_free(&img);
    /* 16-bit gray. */
    static const uint8_t g16[] = {0, 0xab, 0xcd, 0x00, 0xff};
    REQUIRE(build_png(&b, 2, 1, 16, 0, 0, g16, sizeof g16, NULL, 0, NULL, 0) == IMGD_OK);
    decode_built(&b, &img, &st);
    CHECK(st == IMGD_OK && img.c == 1 && img.px[0] == 0xab && img.px[1] == 0x00);
    imgd_image_free(&img);
    /* 1-bit gray, 10 pixels: 1011001110 -> 255,0,255,255,0,0,255,255,255,0. */
    static const uint8_t g1[] = {0, 0xb3, 0x80};
    REQUIRE(build_png(&b, 10, 1, 1, 0, 0, g1, sizeof g1, NULL, 0, NULL, 0) == IMGD_OK);
    decode_built(&b, &img, &st);
    CHECK(st == IMGD_OK && img.c == 1);
    if (st == IMGD_OK) {
        static const uint8_t want[10] = {255, 0, 255, 255, 0, 0, 255, 255, 255, 0};
        CHECK(memcmp(img.px, want, 10) == 0);
    }
    imgd_image_free(&img);
    /* 2-bit palette, no tRNS: RGB. */
    static const uint8_t plte[] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 200, 210, 220};
    static const uint8_t p2[]   = {0, 0x1b}; /* indices 0,1,2,3 */
    REQUIRE(build_png(&b, 4, 1, 2, 3, 0, p2, sizeof p2, plte, sizeof plte, NULL, 0) == IMGD_OK);
    decode_built(&b, &img, &st);
    CHECK(st == IMGD_OK && img.c == 3);
    if (st == IMGD_OK) CHECK(memcmp(img.px, plte, 12) == 0);
    imgd_image_free(&img);
    /* 8-bit palette with tRNS: RGBA, missing tRNS entries opaque. */
    static const uint8_t p8[]   = {0, 1, 0, 3};
    static const uint8_t trns[] = {0, 128};
    REQUIRE(build_png(&b, 3, 1, 8, 3, 0, p8, sizeof p8, plte, sizeof plte, trns, sizeof trns) ==
            IMGD_OK);
    decode_built(&b, &img, &st);
    CHECK(st == IMGD_OK && img.c == 4);
    if (st == IMGD_OK) {
        static const uint8_t want[12] = {40, 50, 60, 128, 10, 20, 30, 0, 200, 210, 220, 255};
        CHECK(memcmp(img.px, want, 12) == 0);
    }
    imgd_image_free(&img);
    /* Gray + alpha: RGBA with the gray replicated. */
    static const uint8_t ga[] = {0, 77, 200, 3, 0};
    REQUIRE(build_png(&b, 2, 1, 8, 4, 0, ga, sizeof ga, NULL, 0, NULL, 0) == IMGD_OK);
    decode_built(&b, &img, &st);
    CHECK(st == IMGD_OK && img.c == 4);
    if (st == IMGD_OK) {
        static const uint8_t want[8] = {77, 77, 77, 200, 3, 3, 3, 0};
        CHECK(memcmp(img.px, want, 8) == 0);
    }
    imgd_image_free(&img);
    /* Gray with a tRNS colour key: RGBA. */
    static const uint8_t gk[]  = {0, 5, 9};
    static const uint8_t gkt[] = {0, 9};
    REQUIRE(build_png(&b, 2, 1, 8, 0, 0, gk, sizeof gk, NULL, 0, gkt, sizeof gkt) == IMGD_OK);
    decode_built(&b, &img, &st);
    CHECK(st == IMGD_OK && img.c == 4);
    if (st == IMGD_OK) {
        static const uint8_t want[8] = {5, 5, 5, 255, 9, 9, 9, 0};
        CHECK(memcmp(img.px, want, 8) == 0);
    }
    imgd_image_free(&img);
    /* 8-bit RGBA, and Adam7-interlaced RGB (hand-built passes) equal to the pattern. */
    imgd_image ref = {0};
    uint8_t   *raw = NULL;
    REQUIRE(pattern(&ref, 11, 9, 3) == IMGD_OK);
    raw = imgd_malloc(11 * 9 * 3 + 9 * 7);
    REQUIRE(raw != NULL);
    static const int adam7[7][4] = {{0, 8, 0, 8}, {4, 8, 0, 8}, {0, 4, 4, 8}, {2, 4, 0, 4},
                                    {0, 2, 2, 4}, {1, 2, 0, 2}, {0, 1, 1, 2}};
    size_t           o           = 0;
    for (int p = 0; p < 7; p++) {
        int x0 = adam7[p][0], dx = adam7[p][1], y0 = adam7[p][2], dy = adam7[p][3];
        if (x0 >= 11 || y0 >= 9) continue;
        for (int y = y0; y < 9; y += dy) {
            raw[o++] = 0;
            for (int x = x0; x < 11; x += dx) {
                memcpy(raw + o, ref.px + ((size_t)y * 11 + (size_t)x) * 3, 3);
                o += 3;
            }
        }
    }
    st = build_png(&b, 11, 9, 8, 2, 1, raw, o, NULL, 0, NULL, 0);
    imgd_free(raw);
    REQUIRE(st == IMGD_OK);
    decode_built(&b, &img, &st);
    CHECK_STATUS(st, IMGD_OK);
    CHECK(st == IMGD_OK && same_image(&ref, &img));
    imgd_image_free(&img);
done:
    imgd_image_free(&ref);
    imgd_image_free(&img);
}

/* ==== conversions ========================================================================== */

static void test_image_conversions_flatten_mask_and_float(void) {
    imgd_image rgba = {0}, rgb = {0}, mask = {0}, out = {0};
    float     *f = NULL;
    REQUIRE(imgd_image_init(&rgba, 4, 1, 4) == IMGD_OK);
    static const uint8_t px[16] = {100, 50, 0, 128, 255, 0, 0, 255, 1, 2, 3, 0, 9, 8, 7, 255};
    memcpy(rgba.px, px, 16);
    REQUIRE(imgd_image_to_rgb(&rgba, &rgb) == IMGD_OK);
    /* Pillow alpha_composite over white: 100@128 -> 177, 50 -> 152, 0 -> 127. */
    static const uint8_t flat[12] = {177, 152, 127, 255, 0, 0, 255, 255, 255, 9, 8, 7};
    CHECK(memcmp(rgb.px, flat, 12) == 0);
    /* Alpha present -> the mask is the alpha channel. */
    REQUIRE(imgd_image_to_mask(&rgba, &mask) == IMGD_OK);
    CHECK(mask.c == 1 && mask.px[0] == 128 && mask.px[1] == 255 && mask.px[2] == 0);
    imgd_image_free(&mask);
    /* Opaque -> Pillow luminance: pure red 76, green 150, blue 29, white 255. */
    static const uint8_t prim[12] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255};
    memcpy(rgb.px, prim, 12);
    REQUIRE(imgd_image_to_mask(&rgb, &mask) == IMGD_OK);
    CHECK(mask.px[0] == 76 && mask.px[1] == 150 && mask.px[2] == 29 && mask.px[3] == 255);
    /* NCHW planes. */
    f = imgd_malloc(sizeof *f * 3 * 4);
    REQUIRE(f != NULL);
    REQUIRE(imgd_image_to_nchw(&rgb, f) == IMGD_OK);
    CHECK(f[0] == 1.0f && f[4] == 0.0f && f[5] == 1.0f && f[10] == 1.0f && f[11] == 1.0f);
    CHECK_STATUS(imgd_image_gray_to_float(&mask, f), IMGD_OK);
    CHECK_NEAR(f[0], 76.0 / 255.0, 1e-7);
    CHECK_STATUS(imgd_image_gray_to_float(&rgb, f), IMGD_E_INVALID_ARG);
    /* from_nchw: clamp, round half to even, NaN -> 0. */
    float planes[3 * 7] = {-0.5f, 0.0f, 0.5f, 0.25f, 1.0f, 2.0f, NAN};
    for (int i = 7; i < 21; i++) planes[i] = 0.2f;
    REQUIRE(imgd_image_from_nchw(planes, 7, 1, &out) == IMGD_OK);
    static const uint8_t want[7] = {0, 0, 128, 64, 255, 255, 0};
    for (int i = 0; i < 7; i++) CHECK_EQ_INT(out.px[3 * (size_t)i], want[i]);
    CHECK_EQ_INT(out.px[1], 51);
done:
    imgd_free(f);
    imgd_image_free(&rgba);
    imgd_image_free(&rgb);
    imgd_image_free(&mask);
    imgd_image_free(&out);
}

/* ==== resizing, blur, latent masks ========================================================= */

static imgd_status gray_row(imgd_image *img, const uint8_t *v, int32_t n) {
    imgd_status st = imgd_image_init(img, n, 1, 1);
    if (st == IMGD_OK) memcpy(img->px, v, (size_t)n);
    return st;
}

/* Plain double-precision Lanczos-3 (Pillow's geometry) for comparison. */
static double ref_lanczos(const uint8_t *in, int32_t n_in, int32_t n_out, int32_t i) {
    double scale = (double)n_in / n_out, fs = scale < 1 ? 1 : scale, sup = 3 * fs;
    double center = (i + 0.5) * scale, sum = 0, wsum = 0;
    for (int32_t x = 0; x < n_in; x++) {
        double t = (x - center + 0.5) / fs, w;
        if (fabs(t) >= sup / fs) continue;
        double a = t * 3.14159265358979323846, b = a / 3;
        w = (t == 0) ? 1 : (sin(a) / a) * (sin(b) / b);
        sum += w * in[x];
        wsum += w;
    }
    double v = sum / wsum;
    return v < 0 ? 0 : v > 255 ? 255 : v;
}

static void test_image_resize_hand_checked(void) {
    imgd_image a = {0}, b = {0}, col = {0}, row = {0}, rcol = {0}, rrow = {0};
    /* Nearest (Pillow): 4 -> 2 takes sources 1 and 3; 2 -> 4 takes 0,0,1,1. */
    static const uint8_t four[4] = {10, 20, 30, 40};
    REQUIRE(gray_row(&a, four, 4) == IMGD_OK);
    REQUIRE(imgd_image_resize(&a, 2, 1, IMGD_RESIZE_NEAREST, &b) == IMGD_OK);
    CHECK(b.px[0] == 20 && b.px[1] == 40);
    imgd_image_free(&b);
    imgd_image_free(&a);
    static const uint8_t two[2] = {10, 20};
    REQUIRE(gray_row(&a, two, 2) == IMGD_OK);
    REQUIRE(imgd_image_resize(&a, 4, 1, IMGD_RESIZE_NEAREST, &b) == IMGD_OK);
    CHECK(b.px[0] == 10 && b.px[1] == 10 && b.px[2] == 20 && b.px[3] == 20);
    imgd_image_free(&b);
    imgd_image_free(&a);
    /* Lanczos 2 -> 1 of {0, 255}: two equal weights, (0 + 255) / 2 rounded up = 128. */
    static const uint8_t edge[2] = {0, 255};
    REQUIRE(gray_row(&a, edge, 2) == IMGD_OK);
    REQUIRE(imgd_image_resize(&a, 1, 1, IMGD_RESIZE_LANCZOS, &b) == IMGD_OK);
    CHECK_EQ_INT(b.px[0], 128);
    imgd_image_free(&b);
    imgd_image_free(&a);
    /* Lanczos 4 -> 2 of {0,0,255,255}: weights L(±0.25)=0.8901, L(0.75)=0.2702,
     * L(1.25)=-0.1329 normalised by 1.9175: 255·(0.1409 − 0.0693) = 18.3 -> 18, and 237. */
    static const uint8_t step[4] = {0, 0, 255, 255};
    REQUIRE(gray_row(&a, step, 4) == IMGD_OK);
    REQUIRE(imgd_image_resize(&a, 2, 1, IMGD_RESIZE_LANCZOS, &b) == IMGD_OK);
    CHECK_EQ_INT(b.px[0], 18);
    CHECK_EQ_INT(b.px[1], 237);
    imgd_image_free(&b);
    imgd_image_free(&a);
    /* Constant images stay constant; odd up/down sizes agree with a float reference. */
    REQUIRE(imgd_image_init(&a, 13, 7, 3) == IMGD_OK);
    memset(a.px, 77, (size_t)13 * 7 * 3);
    REQUIRE(imgd_image_resize(&a, 29, 4, IMGD_RESIZE_LANCZOS, &b) == IMGD_OK);
    bool flat = b.w == 29 && b.h == 4 && b.c == 3;
    for (int i = 0; flat && i < 29 * 4 * 3; i++) flat = b.px[i] == 77;
    CHECK(flat);
    imgd_image_free(&b);
    imgd_image_free(&a);
    static const int32_t sizes[][2] = {{37, 11}, {11, 37}, {50, 49}, {9, 64}, {64, 8}};
    for (size_t s = 0; s < IMGD_ARRAY_LEN(sizes); s++) {
        int32_t n_in = sizes[s][0], n_out = sizes[s][1];
        REQUIRE(imgd_image_init(&a, n_in, 1, 1) == IMGD_OK);
        for (int32_t x = 0; x < n_in; x++) a.px[x] = (uint8_t)((x * 97 + 13) % 256);
        REQUIRE(imgd_image_resize(&a, n_out, 1, IMGD_RESIZE_LANCZOS, &b) == IMGD_OK);
        for (int32_t x = 0; x < n_out; x++) {
            double r = ref_lanczos(a.px, n_in, n_out, x);
            CHECK_MSG(fabs(b.px[x] - r) <= 1.0, "%d->%d at %d: %d vs %.3f", n_in, n_out, x, b.px[x],
                      r);
        }
        imgd_image_free(&b);
        imgd_image_free(&a);
    }
    /* Vertical is the transpose of horizontal. */
    REQUIRE(imgd_image_init(&col, 1, 21, 1) == IMGD_OK &&
            imgd_image_init(&row, 21, 1, 1) == IMGD_OK);
    for (int i = 0; i < 21; i++) col.px[i] = row.px[i] = (uint8_t)(i * i % 251);
    CHECK_STATUS(imgd_image_resize(&col, 1, 8, IMGD_RESIZE_LANCZOS, &rcol), IMGD_OK);
    CHECK_STATUS(imgd_image_resize(&row, 8, 1, IMGD_RESIZE_LANCZOS, &rrow), IMGD_OK);
    CHECK(rcol.px && rrow.px && memcmp(rcol.px, rrow.px, 8) == 0);
    CHECK_STATUS(imgd_image_resize(&a, 0, 1, IMGD_RESIZE_LANCZOS, &b), IMGD_E_INVALID_ARG);
done:
    imgd_image_free(&col);
    imgd_image_free(&row);
    imgd_image_free(&rcol);
    imgd_image_free(&rrow);
    imgd_image_free(&a);
    imgd_image_free(&b);
}

static void test_image_blur_kinds(void) {
    imgd_image a = {0};
    /* A1111 (cv2) radius 1 on an impulse: kernel 7, exp(-i²/2) normalised ->
     * 255·{.0044, .0540, .2420, .3989} = 1, 14, 62, 102 (the 1-row vertical pass is a no-op). */
    uint8_t imp[15] = {0};
    imp[7]          = 255;
    REQUIRE(gray_row(&a, imp, 15) == IMGD_OK);
    CHECK_STATUS(imgd_image_blur(&a, 1.0f, IMGD_BLUR_A1111), IMGD_OK);
    static const uint8_t want[15] = {0, 0, 0, 0, 1, 14, 62, 102, 62, 14, 1, 0, 0, 0, 0};
    CHECK(memcmp(a.px, want, 15) == 0);
    imgd_image_free(&a);
    /* Pillow: symmetric, mass kept within rounding, spread grows with the radius, 1-row
     * vertical pass a no-op, constants stay constant. */
    int spread[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        REQUIRE(gray_row(&a, imp, 15) == IMGD_OK);
        CHECK_STATUS(imgd_image_blur(&a, k ? 3.0f : 1.0f, IMGD_BLUR_PIL), IMGD_OK);
        int sum = 0;
        for (int i = 0; i < 15; i++) {
            sum += a.px[i];
            CHECK_EQ_INT(a.px[i], a.px[14 - i]);
            if (a.px[i]) spread[k]++;
        }
        CHECK_MSG(abs(sum - 255) <= 8, "sum %d", sum);
        CHECK(a.px[7] < 255 && a.px[7] >= a.px[6] && a.px[6] >= a.px[5]);
        imgd_image_free(&a);
    }
    CHECK(spread[1] > spread[0]);
    REQUIRE(imgd_image_init(&a, 9, 6, 3) == IMGD_OK);
    memset(a.px, 200, (size_t)9 * 6 * 3);
    CHECK_STATUS(imgd_image_blur(&a, 2.5f, IMGD_BLUR_PIL), IMGD_OK);
    bool flat = true;
    for (int i = 0; i < 9 * 6 * 3; i++) flat = flat && a.px[i] == 200;
    CHECK(flat);
    CHECK_STATUS(imgd_image_blur(&a, 0.0f, IMGD_BLUR_PIL), IMGD_OK);
    CHECK_STATUS(imgd_image_blur(&a, NAN, IMGD_BLUR_PIL), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_image_blur(&a, 1.0f, (imgd_blur_kind)9), IMGD_E_INVALID_ARG);
done:
    imgd_image_free(&a);
}

static void test_image_mask_to_latent_nearest_binarised(void) {
    float m[16 * 16], lat[4], odd[10 * 3], lodd[3];
    for (int y = 0; y < 16; y++) {
        for (int x = 0; x < 16; x++) m[y * 16 + x] = x < 8 ? 1.0f : 0.0f;
    }
    m[0]  = 0.5f;  /* sampled (0,0): >= 0.5 repaints */
    m[8]  = 0.49f; /* sampled (8,0): below 0.5 keeps */
    m[15] = 1.0f;  /* not sampled */
    CHECK_STATUS(imgd_mask_to_latent(m, 16, 16, 2, 2, lat), IMGD_OK);
    CHECK(lat[0] == 1.0f && lat[1] == 0.0f && lat[2] == 1.0f && lat[3] == 0.0f);
    /* 10 -> 3: torch samples floor(i · 3.333) = 0, 3, 6. */
    for (int i = 0; i < 30; i++) odd[i] = 0.0f;
    odd[3] = 1.0f;
    CHECK_STATUS(imgd_mask_to_latent(odd, 10, 3, 3, 1, lodd), IMGD_OK);
    CHECK(lodd[0] == 0.0f && lodd[1] == 1.0f && lodd[2] == 0.0f);
    CHECK_STATUS(imgd_mask_to_latent(odd, 10, 3, 0, 1, lodd), IMGD_E_INVALID_ARG);
}

/* Block grids for the orientation test: 3 x 2 blocks of 8 x 8 pixels, one colour each. */
enum {
    OB = 8,
    OW = 3,
    OH = 2
};
typedef struct ogrid {
    int w, h, id[OW * OH];
} ogrid;

static ogrid og_transpose(ogrid g) {
    ogrid r = {g.h, g.w, {0}};
    for (int y = 0; y < r.h; y++) {
        for (int x = 0; x < r.w; x++) r.id[y * r.w + x] = g.id[x * g.w + y];
    }
    return r;
}

static ogrid og_flip(ogrid g, bool horizontal) {
    ogrid r = g;
    for (int y = 0; y < g.h; y++) {
        for (int x = 0; x < g.w; x++) {
            r.id[y * g.w + x] =
                horizontal ? g.id[y * g.w + (g.w - 1 - x)] : g.id[(g.h - 1 - y) * g.w + x];
        }
    }
    return r;
}

/* Pillow's exif_transpose, as compositions of flips and a transpose. */
static ogrid og_expected(ogrid g, int o) {
    switch (o) {
    case 2: return og_flip(g, true);                               /* FLIP_LEFT_RIGHT */
    case 3: return og_flip(og_flip(g, true), false);               /* ROTATE_180 */
    case 4: return og_flip(g, false);                              /* FLIP_TOP_BOTTOM */
    case 5: return og_transpose(g);                                /* TRANSPOSE */
    case 6: return og_flip(og_transpose(g), true);                 /* ROTATE_270: 90° clockwise */
    case 7: return og_flip(og_flip(og_transpose(g), true), false); /* TRANSVERSE */
    case 8: return og_flip(og_transpose(g), false); /* ROTATE_90: counter-clockwise */
    default: return g;
    }
}

static void test_image_jpeg_exif_orientation_is_applied(void) {
    static const uint8_t colors[OW * OH][3] = {{255, 0, 0},     {0, 255, 0}, {0, 0, 255},
                                               {255, 255, 255}, {0, 0, 0},   {255, 255, 0}};
    ogrid                g                  = {OW, OH, {0, 1, 2, 3, 4, 5}};
    imgd_image           a = {0}, b = {0};
    uint8_t             *jpg = NULL, *rot = NULL;
    size_t               n = 0;
    REQUIRE(imgd_image_init(&a, OW * OB, OH * OB, 3) == IMGD_OK);
    for (int y = 0; y < OH * OB; y++) {
        for (int x = 0; x < OW * OB; x++) {
            memcpy(a.px + ((size_t)y * OW * OB + (size_t)x) * 3, colors[(y / OB) * OW + x / OB], 3);
        }
    }
    imgd_image_save_params sp = imgd_image_save_params_default();
    sp.format                 = IMGD_IMAGE_FORMAT_JPEG;
    sp.quality                = 100;
    REQUIRE(imgd_image_encode(&a, &sp, &jpg, &n) == IMGD_OK);
    /* APP1 Exif, little-endian TIFF, IFD0 holding only Orientation (patched per case). */
    uint8_t app1[] = {0xff, 0xe1, 0, 34, 'E', 'x', 'i', 'f', 0,    0,    'I', 'I',
                      42,   0,    8, 0,  0,   0,   1,   0,   0x12, 0x01, 3,   0,
                      1,    0,    0, 0,  1,   0,   0,   0,   0,    0,    0,   0};
    rot            = imgd_malloc(n + sizeof app1);
    REQUIRE(rot != NULL);
    for (int o = 1; o <= 8; o++) {
        app1[28] = (uint8_t)o;
        memcpy(rot, jpg, 2);
        memcpy(rot + 2, app1, sizeof app1);
        memcpy(rot + 2 + sizeof app1, jpg + 2, n - 2);
        CHECK_STATUS(imgd_image_decode(rot, n + sizeof app1, "oriented.jpg", NULL, &b), IMGD_OK);
        ogrid want = og_expected(g, o);
        CHECK_MSG(b.w == want.w * OB && b.h == want.h * OB, "orientation %d: %dx%d", o, b.w, b.h);
        for (int by = 0; b.px && by < want.h && b.w == want.w * OB; by++) {
            for (int bx = 0; bx < want.w; bx++) {
                const uint8_t *p =
                    b.px +
                    ((size_t)(by * OB + OB / 2) * (size_t)b.w + (size_t)(bx * OB + OB / 2)) * 3;
                const uint8_t *c = colors[want.id[by * want.w + bx]];
                CHECK_MSG(abs(p[0] - c[0]) < 40 && abs(p[1] - c[1]) < 40 && abs(p[2] - c[2]) < 40,
                          "orientation %d block (%d,%d): %d %d %d", o, bx, by, p[0], p[1], p[2]);
            }
        }
        imgd_image_free(&b);
    }
done:
    imgd_free(jpg);
    imgd_free(rot);
    imgd_image_free(&a);
    imgd_image_free(&b);
}

/* ==== conformance PNGs ===================================================================== */

static bool tensor_f32(imgd_weights *w, const char *name, size_t count, const float **out) {
    imgd_tensor_info t;
    if (imgd_weights_find(w, name, &t) != IMGD_OK || t.dtype != IMGD_DTYPE_F32 ||
        t.nbytes != count * sizeof(float)) {
        return false;
    }
    *out = t.data;
    return true;
}

static void test_image_reads_conformance_pngs(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("test_image_reads_conformance_pngs: ../shared/conformance is absent");
        return;
    }
    char          p_init[1024], p_mask[1024], p_st[1024], p_st9[1024], p_out[1024];
    imgd_image    init = {0}, mask = {0}, golden = {0}, mine = {0};
    imgd_weights *w = NULL, *w9 = NULL;
    float        *f = NULL;
    (void)imgd_fmt(p_init, sizeof p_init, "%s/conformance/sd15-narrow/goldens/img2img_init.png",
                   shared);
    (void)imgd_fmt(p_mask, sizeof p_mask,
                   "%s/conformance/sd15-narrow/goldens/inpaint_9ch_euler_mask.png", shared);
    (void)imgd_fmt(p_st, sizeof p_st,
                   "%s/conformance/sd15-narrow/goldens/img2img_euler.safetensors", shared);
    (void)imgd_fmt(p_st9, sizeof p_st9,
                   "%s/conformance/sd15-narrow/goldens/inpaint_9ch_euler.safetensors", shared);
    (void)imgd_fmt(p_out, sizeof p_out, "%s/conformance/sd15-narrow/goldens/img2img_euler.png",
                   shared);
    CHECK_STATUS(imgd_image_load(p_init, NULL, &init), IMGD_OK);
    CHECK(init.w == 128 && init.h == 128 && init.c == 3);
    CHECK_STATUS(imgd_image_load(p_mask, NULL, &mask), IMGD_OK);
    CHECK(mask.w == 128 && mask.h == 128 && mask.c == 1);
    REQUIRE(init.px && mask.px);
    REQUIRE(imgd_weights_open(p_st, NULL, &w) == IMGD_OK);
    REQUIRE(imgd_weights_open(p_st9, NULL, &w9) == IMGD_OK);
    const size_t n        = (size_t)128 * 128;
    const float *init_ref = NULL, *mask_ref = NULL, *image_ref = NULL;
    REQUIRE(tensor_f32(w, "init_image", 3 * n, &init_ref));
    REQUIRE(tensor_f32(w, "image", 3 * n, &image_ref));
    REQUIRE(tensor_f32(w9, "mask", n, &mask_ref));
    f = imgd_malloc(3 * n * sizeof *f);
    REQUIRE(f != NULL);
    /* The init PNG decodes to the pipeline's init_image tensor ([0,1] NCHW). */
    REQUIRE(imgd_image_to_nchw(&init, f) == IMGD_OK);
    double worst = 0;
    for (size_t i = 0; i < 3 * n; i++) {
        worst = fmax(worst, fabs((double)f[i] - (double)init_ref[i]));
    }
    CHECK_MSG(worst <= 1e-6, "init image differs from the golden tensor by %g", worst);
    /* The mask PNG decodes to the mask tensor (1 = repaint). */
    REQUIRE(imgd_image_gray_to_float(&mask, f) == IMGD_OK);
    worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)f[i] - (double)mask_ref[i]));
    CHECK_MSG(worst <= 1e-6, "mask differs from the golden tensor by %g", worst);
    /* The golden output image -> round(x·255) equals the golden PNG exactly. */
    REQUIRE(imgd_image_from_nchw(image_ref, 128, 128, &mine) == IMGD_OK);
    CHECK_STATUS(imgd_image_load(p_out, NULL, &golden), IMGD_OK);
    CHECK(golden.px && same_image(&mine, &golden));
done:
    imgd_free(f);
    imgd_weights_free(w);
    imgd_weights_free(w9);
    imgd_image_free(&init);
    imgd_image_free(&mask);
    imgd_image_free(&golden);
    imgd_image_free(&mine);
}

int main(void) {
    RUN(test_image_png_round_trip_is_exact);
    RUN(test_image_jpeg_round_trip_within_tolerance);
    RUN(test_image_webp_round_trips);
    RUN(test_image_save_is_atomic_and_loads_back);
    RUN(test_image_png_parameters_chunk_reads_back);
    RUN(test_image_jpeg_webp_parameters_in_exif_user_comment);
    RUN(test_image_jpeg_parameters_over_one_segment_are_refused);
    RUN(test_image_hostile_inputs_are_refused_with_specific_errors);
    RUN(test_image_pixel_cap_refuses_every_format);
    RUN(test_image_corrupt_file_error_names_the_path);
    RUN(test_image_png_16bit_palette_gray_alpha_variants);
    RUN(test_image_conversions_flatten_mask_and_float);
    RUN(test_image_resize_hand_checked);
    RUN(test_image_blur_kinds);
    RUN(test_image_mask_to_latent_nearest_binarised);
    RUN(test_image_jpeg_exif_orientation_is_applied);
    RUN(test_image_reads_conformance_pngs);
    TEST_END();
}
