/* Image decode/encode (PNG, JPEG, WebP) with A1111 metadata, conversions, resizing, blur.
 *
 * libpng and libjpeg report errors by longjmp. Each codec is split in two: an outer
 * function that owns every resource in a context struct on its own stack frame, and an
 * inner `*_run` function that calls setjmp and does the work. After a longjmp the inner
 * function returns at once and the outer one releases what the context holds, so no local
 * of the setjmp caller is read after the jump (C11 7.13.2.1) and nothing leaks. */
#include "pipeline/image.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Codec libraries; jpeglib.h needs <stdio.h> (above) first. */
#include <jpeglib.h>
/* jerror.h after jpeglib.h: its message codes (JWRN_JPEG_EOF) and ERREXIT use it. */
#include <jerror.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/map.h"
#include "base/text.h"

#define PI_D 3.14159265358979323846

/* ==== the image ========================================================================== */

static bool channels_ok(int32_t c) {
    return c == 1 || c == 3 || c == 4;
}

static bool image_ok(const imgd_image *img) {
    return img && img->px && img->w >= 1 && img->h >= 1 && channels_ok(img->c);
}

static size_t image_bytes(const imgd_image *img) {
    return (size_t)img->w * (size_t)img->h * (size_t)img->c;
}

imgd_status imgd_image_init(imgd_image *out, int32_t w, int32_t h, int32_t c) {
    if (!out || w < 1 || h < 1 || !channels_ok(c)) {
        return imgd_fail(IMGD_E_INVALID_ARG, "image: bad size %dx%d with %d channels", (int)w,
                         (int)h, (int)c);
    }
    size_t n;
    if (!imgd_size_mul((size_t)w, (size_t)h, &n) || !imgd_size_mul(n, (size_t)c, &n)) {
        return imgd_fail(IMGD_E_TOO_LARGE, "image: %dx%dx%d bytes overflow", (int)w, (int)h,
                         (int)c);
    }
    uint8_t *px = imgd_calloc(1, n);
    if (!px) return imgd_fail(IMGD_E_NOMEM, "image: out of memory for %zu bytes", n);
    out->w  = w;
    out->h  = h;
    out->c  = c;
    out->px = px;
    return IMGD_OK;
}

void imgd_image_free(imgd_image *img) {
    if (!img) return;
    imgd_free(img->px);
    memset(img, 0, sizeof *img);
}

/* ==== formats ============================================================================ */

static const char *const k_format_names[] = {"unknown", "png", "jpeg", "webp"};
_Static_assert(IMGD_ARRAY_LEN(k_format_names) == IMGD_IMAGE_FORMAT_COUNT, "format name table");

const char *imgd_image_format_name(imgd_image_format fmt) {
    if ((unsigned)fmt >= IMGD_IMAGE_FORMAT_COUNT) return "unknown";
    return k_format_names[fmt];
}

static const char *src_name(const char *name) {
    return name ? name : "image";
}

imgd_status imgd_image_sniff(const void *data, size_t size, const char *name,
                             imgd_image_format *out) {
    const uint8_t *p = data;
    name             = src_name(name);
    if (!p || size == 0) return imgd_fail(IMGD_E_FORMAT, "%s: empty: no image data", name);
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    imgd_image_format    fmt        = 0;
    if (size >= 8 && memcmp(p, png_sig, 8) == 0) {
        fmt = IMGD_IMAGE_FORMAT_PNG;
    } else if (size >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        fmt = IMGD_IMAGE_FORMAT_JPEG;
    } else if (size >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) {
        fmt = IMGD_IMAGE_FORMAT_WEBP;
    }
    if (fmt) {
        *out = fmt;
        return IMGD_OK;
    }
    const char *other = NULL;
    if (size >= 4 && memcmp(p, "GIF8", 4) == 0) other = "GIF";
    if (size >= 2 && memcmp(p, "BM", 2) == 0) other = "BMP";
    if (size >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0)) other = "TIFF";
    if (size >= 12 && memcmp(p + 4, "ftyp", 4) == 0) other = "AVIF/HEIF";
    if (other) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: is a %s image; imgd reads PNG, JPEG and WebP (convert it first)",
                         name, other);
    }
    char   hex[3 * 8 + 1] = "";
    size_t k              = size < 8 ? size : 8;
    for (size_t i = 0; i < k; i++) (void)imgd_fmt(hex + 3 * i, 4, "%02x ", p[i]);
    hex[3 * k - 1] = '\0'; /* k >= 1: size > 0 here */
    return imgd_fail(IMGD_E_FORMAT,
                     "%s: not a PNG, JPEG or WebP image (first bytes: %s); truncated, or another "
                     "kind of file",
                     name, hex);
}

imgd_status imgd_image_format_from_path(const char *path, imgd_image_format *out) {
    static const struct {
        const char       *ext;
        imgd_image_format fmt;
    } k_ext[] = {
        {".png", IMGD_IMAGE_FORMAT_PNG},
        {".jpg", IMGD_IMAGE_FORMAT_JPEG},
        {".jpeg", IMGD_IMAGE_FORMAT_JPEG},
        {".webp", IMGD_IMAGE_FORMAT_WEBP},
    };
    if (!path || !out) return imgd_fail(IMGD_E_INVALID_ARG, "image: NULL path");
    const char *dot   = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash)) {
        for (size_t i = 0; i < IMGD_ARRAY_LEN(k_ext); i++) {
            size_t n = strlen(k_ext[i].ext), j = 0;
            while (j < n && dot[j] && tolower((unsigned char)dot[j]) == k_ext[i].ext[j]) j++;
            if (j == n && dot[n] == '\0') {
                *out = k_ext[i].fmt;
                return IMGD_OK;
            }
        }
    }
    return imgd_fail(IMGD_E_INVALID_ARG,
                     "%s: cannot tell the image format from the name; use .png, .jpg, .jpeg or "
                     ".webp",
                     path);
}

/* ==== decoding: shared ===================================================================== */

static uint64_t pixels_max_of(const imgd_image_limits *lim) {
    return lim && lim->pixels_max ? lim->pixels_max : IMGD_IMAGE_PIXELS_MAX_DEFAULT;
}

/* IMGD_E_TOO_LARGE (or IMGD_E_FORMAT for a zero side) before anything is allocated. */
static imgd_status check_dims(const char *name, const char *fmt, uint64_t w, uint64_t h,
                              uint64_t pixels_max) {
    if (w == 0 || h == 0) {
        return imgd_fail(IMGD_E_FORMAT, "%s: %s: image size %" PRIu64 "x%" PRIu64 " is empty", name,
                         fmt, w, h);
    }
    uint64_t n;
    if (w > INT32_MAX || h > INT32_MAX || !imgd_u64_mul_ok(w, h, &n) || n > pixels_max) {
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "%s: %s: image is %" PRIu64 "x%" PRIu64 ", over the limit of %" PRIu64
                         " pixels; downscale it or raise the "
                         "pixel cap",
                         name, fmt, w, h, pixels_max);
    }
    return IMGD_OK;
}

/* ==== decoding: PNG ======================================================================== */

/* libpng allocates through imgd_malloc (metrics, fault injection). alloc_max bounds one
 * allocation: libpng 1.6 only warns about an ancillary chunk over the chunk cap and then
 * allocates its claimed length (up to 2 GiB from a 100-byte file); refused here, libpng
 * skips the chunk. */
typedef struct png_mem {
    size_t alloc_max;
    bool   oom; /* imgd_malloc failed: report IMGD_E_NOMEM */
} png_mem;

#define PNG_ALLOC_MAX_BASE ((size_t)16 << 20)

typedef struct dec_png_ctx {
    const char    *name;
    const uint8_t *data;
    size_t         size, pos;
    uint64_t       pixels_max;
    char           msg[256];  /* libpng's error text */
    char           warn[128]; /* its last warning: the detail behind "Invalid IHDR data" */
    png_mem        mem;
    imgd_status    status; /* set when run_decode_png returns 1 */
    png_structp    png;
    png_infop      info;
    png_bytep     *rows;
    imgd_image     img;
} dec_png_ctx;

static void on_png_error(png_structp png, png_const_charp msg) {
    dec_png_ctx *d = png_get_error_ptr(png);
    (void)imgd_fmt(d->msg, sizeof d->msg, "%s", msg);
    png_longjmp(png, 1); /* never return: libpng's default handler would print */
}

/* Warnings (bad ancillary CRC, unknown chunks) are not errors, but libpng explains some
 * errors only in the warning before them, so the last one is kept for the message. */
static void on_png_warning(png_structp png, png_const_charp msg) {
    dec_png_ctx *d = png_get_error_ptr(png);
    (void)imgd_fmt(d->warn, sizeof d->warn, "%s", msg);
}

static void on_png_enc_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static png_voidp on_png_malloc(png_structp png, png_alloc_size_t n) {
    png_mem *m = png_get_mem_ptr(png);
    if (n > m->alloc_max) return NULL;
    void *p = imgd_malloc(n);
    if (!p) m->oom = true;
    return p;
}

static void on_png_free(png_structp png, png_voidp p) {
    (void)png;
    imgd_free(p);
}

static void on_png_read(png_structp png, png_bytep out, size_t n) {
    dec_png_ctx *d = png_get_io_ptr(png);
    if (n > d->size - d->pos) png_error(png, "truncated: the data ends before the image does");
    memcpy(out, d->data + d->pos, n);
    d->pos += n;
}

/* Returns 0 on success, -1 after a libpng error (d->msg), 1 with d->status set. */
static int run_decode_png(dec_png_ctx *d) {
    if (setjmp(png_jmpbuf(d->png))) return -1;
    png_set_read_fn(d->png, d, on_png_read);
    png_set_user_limits(d->png, 0x7fffffff, 0x7fffffff); /* our pixel cap decides */
    png_set_chunk_cache_max(d->png, 256);                /* ancillary chunk count */
    png_set_chunk_malloc_max(d->png, 8u << 20);          /* zTXt/iCCP bombs */
    png_read_info(d->png, d->info);
    png_uint_32 w = png_get_image_width(d->png, d->info);
    png_uint_32 h = png_get_image_height(d->png, d->info);
    d->status     = check_dims(d->name, "PNG", w, h, d->pixels_max);
    if (d->status != IMGD_OK) return 1;
    d->mem.alloc_max = PNG_ALLOC_MAX_BASE + (size_t)w * 16; /* row buffers: <= 8 bytes/pixel */
    int ctype        = png_get_color_type(d->png, d->info);
    int depth        = png_get_bit_depth(d->png, d->info);
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(d->png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(d->png);
    if (png_get_valid(d->png, d->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(d->png);
    if (depth == 16) png_set_strip_16(d->png); /* high byte, as Pillow */
    int gray_alpha =
        ctype == PNG_COLOR_TYPE_GRAY_ALPHA ||
        (ctype == PNG_COLOR_TYPE_GRAY && png_get_valid(d->png, d->info, PNG_INFO_tRNS));
    if (gray_alpha) png_set_gray_to_rgb(d->png);
    (void)png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);
    int    ch       = png_get_channels(d->png, d->info);
    size_t rowbytes = png_get_rowbytes(d->png, d->info);
    if (!channels_ok(ch) || rowbytes != (size_t)w * (size_t)ch) {
        d->status =
            imgd_fail(IMGD_E_INTERNAL, "%s: PNG: unexpected layout (%d channels)", d->name, ch);
        return 1;
    }
    d->status = imgd_image_init(&d->img, (int32_t)w, (int32_t)h, ch);
    if (d->status != IMGD_OK) return 1;
    d->rows = imgd_malloc((size_t)h * sizeof *d->rows);
    if (!d->rows) {
        d->status = imgd_fail(IMGD_E_NOMEM, "%s: PNG: out of memory", d->name);
        return 1;
    }
    for (png_uint_32 y = 0; y < h; y++) d->rows[y] = d->img.px + (size_t)y * rowbytes;
    png_read_image(d->png, d->rows);
    png_read_end(d->png, NULL); /* CRCs and chunks after the image data, up to IEND */
    return 0;
}

static imgd_status decode_png(const uint8_t *data, size_t size, const char *name,
                              uint64_t pixels_max, imgd_image *out) {
    dec_png_ctx d;
    memset(&d, 0, sizeof d);
    d.name          = name;
    d.data          = data;
    d.size          = size;
    d.pixels_max    = pixels_max;
    d.mem.alloc_max = PNG_ALLOC_MAX_BASE;
    d.png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &d, on_png_error, on_png_warning,
                                     &d.mem, on_png_malloc, on_png_free);
    if (!d.png) return imgd_fail(IMGD_E_NOMEM, "%s: PNG: out of memory", name);
    imgd_status st = IMGD_OK;
    d.info         = png_create_info_struct(d.png);
    if (!d.info) {
        st = imgd_fail(IMGD_E_NOMEM, "%s: PNG: out of memory", name);
        goto done;
    }
    int rc = run_decode_png(&d);
    if (rc < 0 && d.mem.oom) {
        st = imgd_fail(IMGD_E_NOMEM, "%s: PNG: out of memory", name);
    } else if (rc < 0) {
        st = imgd_fail(IMGD_E_FORMAT, "%s: PNG: %s%s%s%s", name, d.msg, d.warn[0] ? " (" : "",
                       d.warn, d.warn[0] ? ")" : "");
    } else if (rc > 0) {
        st = d.status;
    } else {
        *out = d.img;
        memset(&d.img, 0, sizeof d.img);
    }
done:
    png_destroy_read_struct(&d.png, d.info ? &d.info : NULL, NULL);
    imgd_free(d.rows);
    imgd_image_free(&d.img);
    return st;
}

/* ==== decoding: JPEG ======================================================================= */

typedef struct jerr_ctx {
    struct jpeg_error_mgr pub; /* first: libjpeg casts cinfo->err to it */
    jmp_buf               jb;
    char                  msg[JMSG_LENGTH_MAX];
} jerr_ctx;

static void on_jpeg_error(j_common_ptr c) {
    jerr_ctx *e = (jerr_ctx *)(void *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

static void on_jpeg_output(j_common_ptr c) {
    (void)c; /* the library never prints */
}

/* Warnings are ignored (real files carry harmless ones), except the two that mean the
 * data ran out: those make a truncated file an error instead of a half-grey picture. */
static void on_jpeg_emit(j_common_ptr c, int level) {
    if (level >= 0) return;
    int code = c->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) {
        jerr_ctx *e = (jerr_ctx *)(void *)c->err;
        c->err->format_message(c, e->msg);
        (void)imgd_fmt(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg),
                       " (truncated file?)");
        longjmp(e->jb, 1);
    }
    c->err->num_warnings++;
}

/* The EXIF orientation (1..8) from an APP1 payload, 1 when absent or malformed. */
static int exif_orientation(const uint8_t *p, size_t n) {
    if (n < 14 || memcmp(p, "Exif\0\0", 6) != 0) return 1;
    p += 6;
    n -= 6;
    bool be;
    if (memcmp(p, "MM\0*", 4) == 0) {
        be = true;
    } else if (memcmp(p, "II*\0", 4) == 0) {
        be = false;
    } else {
        return 1;
    }
#define RD16(q) (be ? (uint32_t)((q)[0] << 8 | (q)[1]) : (uint32_t)((q)[1] << 8 | (q)[0]))
#define RD32(q)                                                                                    \
    (be ? ((uint32_t)RD16(q) << 16 | RD16((q) + 2)) : (RD16(q) | (uint32_t)RD16((q) + 2) << 16))
    uint32_t ifd = RD32(p + 4);
    if (ifd > n || n - ifd < 2) return 1;
    uint32_t count = RD16(p + ifd);
    for (uint32_t i = 0; i < count; i++) {
        size_t at = (size_t)ifd + 2 + (size_t)i * 12;
        if (at > n || n - at < 12) return 1;
        const uint8_t *e = p + at;
        if (RD16(e) == 0x0112 && RD16(e + 2) == 3) {
            uint32_t v = RD16(e + 8);
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
#undef RD16
#undef RD32
}

/* Applies an EXIF orientation as Pillow's ImageOps.exif_transpose does. Per orientation:
 * transpose, then mirror x, mirror y, in source coordinates (6 = rotate 90° clockwise). */
static imgd_status orient(imgd_image *img, int o, const char *name) {
    static const uint8_t k_ops[9][3] = {{0, 0, 0}, {0, 0, 0}, {0, 1, 0}, {0, 1, 1}, {0, 0, 1},
                                        {1, 0, 0}, {1, 0, 1}, {1, 1, 1}, {1, 1, 0}};
    if (o <= 1 || o > 8) return IMGD_OK;
    int32_t     W = img->w, H = img->h, c = img->c;
    bool        tr = k_ops[o][0], fx = k_ops[o][1], fy = k_ops[o][2];
    imgd_image  r  = {0};
    imgd_status st = imgd_image_init(&r, tr ? H : W, tr ? W : H, c);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s: JPEG orientation", name);
    for (int32_t y = 0; y < r.h; y++) {
        for (int32_t x = 0; x < r.w; x++) {
            int32_t u = tr ? y : x, v = tr ? x : y;
            int32_t sx = fx ? W - 1 - u : u, sy = fy ? H - 1 - v : v;
            memcpy(r.px + ((size_t)y * (size_t)r.w + (size_t)x) * (size_t)c,
                   img->px + ((size_t)sy * (size_t)W + (size_t)sx) * (size_t)c, (size_t)c);
        }
    }
    imgd_image_free(img);
    *img = r;
    return IMGD_OK;
}

typedef struct dec_jpeg_ctx {
    struct jpeg_decompress_struct cinfo;
    jerr_ctx                      err;
    const char                   *name;
    const uint8_t                *data;
    size_t                        size;
    uint64_t                      pixels_max;
    imgd_status                   status; /* set when run_decode_jpeg returns 1 */
    uint8_t                      *row4;   /* CMYK scanline */
    int                           orientation;
    imgd_image                    img;
} dec_jpeg_ctx;

static void cmyk_to_rgb(const uint8_t *in, uint8_t *out, int32_t w, bool inverted) {
    for (size_t x = 0; x < (size_t)w; x++) {
        uint32_t c = in[4 * x], m = in[4 * x + 1], y = in[4 * x + 2], k = in[4 * x + 3];
        if (!inverted) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        out[3 * x]     = (uint8_t)((c * k + 127) / 255);
        out[3 * x + 1] = (uint8_t)((m * k + 127) / 255);
        out[3 * x + 2] = (uint8_t)((y * k + 127) / 255);
    }
}

/* Returns 0 on success, -1 after a libjpeg error (d->err.msg), 1 with d->status set. */
static int run_decode_jpeg(dec_jpeg_ctx *d) {
    if (setjmp(d->err.jb)) return -1;
    jpeg_create_decompress(&d->cinfo);
    jpeg_mem_src(&d->cinfo, d->data, (unsigned long)d->size);
    jpeg_save_markers(&d->cinfo, JPEG_APP0 + 1, 0xffff);
    (void)jpeg_read_header(&d->cinfo, TRUE);
    d->status =
        check_dims(d->name, "JPEG", d->cinfo.image_width, d->cinfo.image_height, d->pixels_max);
    if (d->status != IMGD_OK) return 1;
    for (jpeg_saved_marker_ptr m = d->cinfo.marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && d->orientation <= 1) {
            d->orientation = exif_orientation(m->data, m->data_length);
        }
    }
    J_COLOR_SPACE cs         = d->cinfo.jpeg_color_space;
    bool          cmyk       = cs == JCS_CMYK || cs == JCS_YCCK;
    d->cinfo.out_color_space = cs == JCS_GRAYSCALE ? JCS_GRAYSCALE : cmyk ? JCS_CMYK : JCS_RGB;
    (void)jpeg_start_decompress(&d->cinfo);
    int32_t w = (int32_t)d->cinfo.output_width, h = (int32_t)d->cinfo.output_height;
    int     ch = d->cinfo.output_components;
    if (w != (int32_t)d->cinfo.image_width || h != (int32_t)d->cinfo.image_height ||
        ch != (cs == JCS_GRAYSCALE ? 1
               : cmyk              ? 4
                                   : 3)) {
        d->status = imgd_fail(IMGD_E_INTERNAL, "%s: JPEG: unexpected output layout", d->name);
        return 1;
    }
    d->status = imgd_image_init(&d->img, w, h, cmyk ? 3 : ch);
    if (d->status == IMGD_OK && cmyk) {
        d->row4 = imgd_malloc((size_t)w * 4);
        if (!d->row4) d->status = imgd_fail(IMGD_E_NOMEM, "%s: JPEG: out of memory", d->name);
    }
    if (d->status != IMGD_OK) return 1;
    size_t stride = (size_t)w * (size_t)d->img.c;
    while (d->cinfo.output_scanline < d->cinfo.output_height) {
        JDIMENSION y   = d->cinfo.output_scanline;
        JSAMPROW   row = cmyk ? d->row4 : d->img.px + (size_t)y * stride;
        if (jpeg_read_scanlines(&d->cinfo, &row, 1) != 1) {
            d->status = imgd_fail(IMGD_E_FORMAT, "%s: JPEG: decoder stalled at row %u", d->name,
                                  (unsigned)y);
            return 1;
        }
        if (cmyk) {
            cmyk_to_rgb(d->row4, d->img.px + (size_t)y * stride, w, d->cinfo.saw_Adobe_marker);
        }
    }
    (void)jpeg_finish_decompress(&d->cinfo);
    return 0;
}

static imgd_status decode_jpeg(const uint8_t *data, size_t size, const char *name,
                               uint64_t pixels_max, imgd_image *out) {
    dec_jpeg_ctx *d = imgd_calloc(1, sizeof *d); /* jmp_buf + cinfo: keep them off the stack */
    if (!d) return imgd_fail(IMGD_E_NOMEM, "%s: JPEG: out of memory", name);
    d->name                   = name;
    d->data                   = data;
    d->size                   = size;
    d->pixels_max             = pixels_max;
    d->cinfo.err              = jpeg_std_error(&d->err.pub);
    d->err.pub.error_exit     = on_jpeg_error;
    d->err.pub.output_message = on_jpeg_output;
    d->err.pub.emit_message   = on_jpeg_emit;
    imgd_status st            = IMGD_OK;
    if ((unsigned long)size != size) {
        st = imgd_fail(IMGD_E_TOO_LARGE, "%s: JPEG: %zu bytes is too large", name, size);
    } else {
        int rc = run_decode_jpeg(d);
        if (rc < 0) {
            st = imgd_fail(d->err.pub.msg_code == JERR_OUT_OF_MEMORY ? IMGD_E_NOMEM : IMGD_E_FORMAT,
                           "%s: JPEG: %s", name, d->err.msg);
        } else if (rc > 0) {
            st = d->status;
        } else {
            st = orient(&d->img, d->orientation, name);
        }
    }
    if (st == IMGD_OK) {
        *out = d->img;
        memset(&d->img, 0, sizeof d->img);
    }
    jpeg_destroy_decompress(&d->cinfo); /* safe in any state: cinfo started zeroed */
    imgd_free(d->row4);
    imgd_image_free(&d->img);
    imgd_free(d);
    return st;
}

/* ==== decoding: WebP ======================================================================= */

static const char *vp8_status_text(VP8StatusCode s) {
    switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream or container";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "decoding suspended";
    case VP8_STATUS_USER_ABORT: return "decoding aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated: the data ends before the image does";
    default: return "unknown decoder status";
    }
}

static imgd_status fail_webp(VP8StatusCode s, const char *name) {
    imgd_status st = s == VP8_STATUS_OUT_OF_MEMORY         ? IMGD_E_NOMEM
                     : s == VP8_STATUS_UNSUPPORTED_FEATURE ? IMGD_E_UNSUPPORTED
                                                           : IMGD_E_FORMAT;
    return imgd_fail(st, "%s: WebP: %s", name, vp8_status_text(s));
}

static imgd_status decode_webp(const uint8_t *data, size_t size, const char *name,
                               uint64_t pixels_max, imgd_image *out) {
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg)) {
        return imgd_fail(IMGD_E_INTERNAL, "%s: WebP: library version mismatch", name);
    }
    VP8StatusCode s = WebPGetFeatures(data, size, &cfg.input);
    if (s != VP8_STATUS_OK) return fail_webp(s, name);
    if (cfg.input.has_animation) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: WebP: animated images are not supported; export one frame", name);
    }
    imgd_status st =
        check_dims(name, "WebP", (uint64_t)cfg.input.width, (uint64_t)cfg.input.height, pixels_max);
    if (st != IMGD_OK) return st;
    imgd_image img = {0};
    st = imgd_image_init(&img, cfg.input.width, cfg.input.height, cfg.input.has_alpha ? 4 : 3);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s: WebP", name);
    cfg.output.colorspace         = cfg.input.has_alpha ? MODE_RGBA : MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba        = img.px;
    cfg.output.u.RGBA.stride      = img.w * img.c;
    cfg.output.u.RGBA.size        = image_bytes(&img);
    s                             = WebPDecode(data, size, &cfg);
    WebPFreeDecBuffer(&cfg.output); /* external memory: frees nothing of ours */
    if (s != VP8_STATUS_OK) {
        imgd_image_free(&img);
        return fail_webp(s, name);
    }
    *out = img;
    return IMGD_OK;
}

/* ==== decoding: entry points =============================================================== */

imgd_status imgd_image_decode(const void *data, size_t size, const char *name,
                              const imgd_image_limits *lim, imgd_image *out) {
    name = src_name(name);
    if ((!data && size) || !out) return imgd_fail(IMGD_E_INVALID_ARG, "%s: NULL data or out", name);
    imgd_image_format fmt;
    imgd_status       st = imgd_image_sniff(data, size, name, &fmt);
    if (st != IMGD_OK) return st;
    uint64_t cap = pixels_max_of(lim);
    switch (fmt) {
    case IMGD_IMAGE_FORMAT_PNG: return decode_png(data, size, name, cap, out);
    case IMGD_IMAGE_FORMAT_JPEG: return decode_jpeg(data, size, name, cap, out);
    default: return decode_webp(data, size, name, cap, out);
    }
}

imgd_status imgd_image_load(const char *path, const imgd_image_limits *lim, imgd_image *out) {
    if (!path || !out) return imgd_fail(IMGD_E_INVALID_ARG, "image: NULL path or out");
    imgd_map   *m  = NULL;
    imgd_status st = imgd_map_open(path, &m);
    if (st != IMGD_OK) return st;
    if (m->size > SIZE_MAX) {
        imgd_map_free(m);
        return imgd_fail(IMGD_E_TOO_LARGE, "%s: file too large", path);
    }
    st = imgd_image_decode(m->data, (size_t)m->size, path, lim, out);
    imgd_map_free(m);
    return st;
}

/* ==== encoding: shared ===================================================================== */

imgd_image_save_params imgd_image_save_params_default(void) {
    imgd_image_save_params p = {.format = IMGD_IMAGE_FORMAT_PNG};
    return p;
}

/* Decodes one UTF-8 sequence (input already validated). */
static uint32_t utf8_next(const uint8_t **pp) {
    const uint8_t *p = *pp;
    uint32_t       c = p[0];
    int            n = c < 0x80 ? 0 : c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    if (n) c &= 0x3fu >> n;
    for (int i = 1; i <= n; i++) c = c << 6 | (p[i] & 0x3fu);
    *pp = p + n + 1;
    return c;
}

/* The EXIF block A1111 writes with piexif: IFD0 -> Exif IFD -> UserComment holding
 * "UNICODE\0" + UTF-16BE text, big-endian TIFF. jpeg_header adds JPEG's "Exif\0\0". */
static imgd_status exif_user_comment(const char *text, bool jpeg_header, imgd_buf *b) {
    size_t units = 0;
    for (const uint8_t *p = (const uint8_t *)text; *p;) units += utf8_next(&p) > 0xffff ? 2 : 1;
    size_t n_comment = 8 + 2 * units;
    if (n_comment > 0xffffffffu) return imgd_fail(IMGD_E_TOO_LARGE, "parameters text too long");
    static const uint8_t head[32] = {
        'M', 'M', 0,    42,   0, 0, 0, 8,                                /* TIFF header */
        0,   1,   0x87, 0x69, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0, /* IFD0: ExifIFD -> 26 */
        0,   1,   0x92, 0x86, 0, 7,                                      /* Exif IFD: UserComment */
    };
    uint32_t      n32      = (uint32_t)n_comment;
    const uint8_t tail[12] = {
        (uint8_t)(n32 >> 24),
        (uint8_t)(n32 >> 16),
        (uint8_t)(n32 >> 8),
        (uint8_t)n32, /* count */
        0,
        0,
        0,
        44, /* offset of the comment */
        0,
        0,
        0,
        0, /* no next IFD */
    };
    imgd_status st = jpeg_header ? imgd_buf_append(b, "Exif\0\0", 6) : IMGD_OK;
    if (st == IMGD_OK) st = imgd_buf_append(b, head, 32);
    if (st == IMGD_OK) st = imgd_buf_append(b, tail, sizeof tail);
    if (st == IMGD_OK) st = imgd_buf_append(b, "UNICODE\0", 8);
    for (const uint8_t *p = (const uint8_t *)text; st == IMGD_OK && *p;) {
        uint32_t c = utf8_next(&p);
        uint8_t  o[4];
        size_t   k = 2;
        if (c > 0xffff) {
            uint32_t hi = 0xd800 + ((c - 0x10000) >> 10), lo = 0xdc00 + ((c - 0x10000) & 0x3ff);
            o[0] = (uint8_t)(hi >> 8);
            o[1] = (uint8_t)hi;
            o[2] = (uint8_t)(lo >> 8);
            o[3] = (uint8_t)lo;
            k    = 4;
        } else {
            o[0] = (uint8_t)(c >> 8);
            o[1] = (uint8_t)c;
        }
        st = imgd_buf_append(b, o, k);
    }
    return st;
}

/* Output buffer cap: no encoder expands raw pixels by anything near 2x. */
static size_t out_cap(const imgd_image *img, const char *text) {
    size_t raw = image_bytes(img), cap;
    if (!imgd_size_mul(raw, 2, &cap) || !imgd_size_add(cap, 1u << 20, &cap)) return SIZE_MAX;
    if (text && !imgd_size_add(cap, strlen(text) * 3, &cap)) return SIZE_MAX;
    return cap;
}

/* ==== encoding: PNG ======================================================================== */

typedef struct enc_png_ctx {
    const imgd_image *img;
    png_text         *text; /* NULL = no parameters */
    imgd_buf          out;
    imgd_status       wst; /* write-callback failure */
    char              msg[256];
    png_mem           mem;
    png_structp       png;
    png_infop         info;
} enc_png_ctx;

static void on_png_write(png_structp png, png_bytep data, size_t n) {
    enc_png_ctx *e = png_get_io_ptr(png);
    e->wst         = imgd_buf_append(&e->out, data, n);
    if (e->wst != IMGD_OK) png_error(png, "cannot grow the output buffer");
}

static void on_png_flush(png_structp png) {
    (void)png;
}

static void on_png_enc_error(png_structp png, png_const_charp msg) {
    enc_png_ctx *e = png_get_error_ptr(png);
    (void)imgd_fmt(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(png, 1);
}

static int run_encode_png(enc_png_ctx *e) {
    if (setjmp(png_jmpbuf(e->png))) return -1;
    const imgd_image *img        = e->img;
    static const int  k_ctype[5] = {0, PNG_COLOR_TYPE_GRAY, 0, PNG_COLOR_TYPE_RGB,
                                    PNG_COLOR_TYPE_RGB_ALPHA};
    png_set_write_fn(e->png, e, on_png_write, on_png_flush);
    png_set_IHDR(e->png, e->info, (png_uint_32)img->w, (png_uint_32)img->h, 8, k_ctype[img->c],
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (e->text) png_set_text(e->png, e->info, e->text, 1);
    png_write_info(e->png, e->info);
    size_t stride = (size_t)img->w * (size_t)img->c;
    for (int32_t y = 0; y < img->h; y++) png_write_row(e->png, img->px + (size_t)y * stride);
    png_write_end(e->png, e->info);
    return 0;
}

/* Latin-1 copy of a UTF-8 string, or NULL in *out when a code point is above U+00FF. */
static imgd_status to_latin1(const char *s, char **out) {
    size_t n = 0;
    for (const uint8_t *p = (const uint8_t *)s; *p; n++) {
        if (utf8_next(&p) > 0xff) {
            *out = NULL;
            return IMGD_OK;
        }
    }
    char *l = imgd_malloc(n + 1);
    if (!l) return imgd_fail(IMGD_E_NOMEM, "PNG: out of memory");
    size_t i = 0;
    for (const uint8_t *p = (const uint8_t *)s; *p;) l[i++] = (char)(uint8_t)utf8_next(&p);
    l[i] = '\0';
    *out = l;
    return IMGD_OK;
}

static imgd_status encode_png(const imgd_image *img, const char *params, imgd_buf *out) {
    enc_png_ctx e;
    memset(&e, 0, sizeof e);
    e.img           = img;
    e.mem.alloc_max = SIZE_MAX;
    char     key[]  = "parameters";
    char    *latin  = NULL;
    png_text t;
    memset(&t, 0, sizeof t);
    imgd_status st = params ? to_latin1(params, &latin) : IMGD_OK;
    if (st != IMGD_OK) return st;
    if (params && !latin) {
        latin = imgd_strdup(params); /* for iTXt: UTF-8 as it is (png_text wants non-const) */
        if (!latin) return imgd_fail(IMGD_E_NOMEM, "PNG: out of memory");
        t.compression = PNG_ITXT_COMPRESSION_NONE;
        t.itxt_length = strlen(latin);
    } else if (params) {
        t.compression = PNG_TEXT_COMPRESSION_NONE;
        t.text_length = strlen(latin);
    }
    if (params) {
        /* Pillow's PngInfo.add_text: tEXt when the text encodes as Latin-1, else iTXt. */
        t.key  = key;
        t.text = latin;
        e.text = &t;
    }
    imgd_buf_init(&e.out, out->cap);
    e.png = png_create_write_struct_2(PNG_LIBPNG_VER_STRING, &e, on_png_enc_error,
                                      on_png_enc_warning, &e.mem, on_png_malloc, on_png_free);
    if (!e.png) {
        imgd_free(latin);
        return imgd_fail(IMGD_E_NOMEM, "PNG: out of memory");
    }
    e.info = png_create_info_struct(e.png);
    if (!e.info) {
        st = imgd_fail(IMGD_E_NOMEM, "PNG: out of memory");
    } else {
        int rc = run_encode_png(&e);
        if (rc < 0 && e.wst != IMGD_OK) {
            st = imgd_fail_prefix(e.wst, "PNG");
        } else if (rc < 0) {
            st = imgd_fail(e.mem.oom ? IMGD_E_NOMEM : IMGD_E_INTERNAL, "PNG: %s", e.msg);
        }
    }
    png_destroy_write_struct(&e.png, e.info ? &e.info : NULL);
    imgd_free(latin);
    if (st == IMGD_OK) {
        *out = e.out;
    } else {
        imgd_buf_free(&e.out);
    }
    return st;
}

/* ==== encoding: JPEG ======================================================================= */

typedef struct jdst_ctx {
    struct jpeg_destination_mgr pub; /* first: libjpeg casts cinfo->dest to it */
    imgd_buf                    out;
    imgd_status                 wst;
    JOCTET                      chunk[16384];
} jdst_ctx;

static void on_jdst_init(j_compress_ptr c) {
    jdst_ctx *d             = (jdst_ctx *)(void *)c->dest;
    d->pub.next_output_byte = d->chunk;
    d->pub.free_in_buffer   = sizeof d->chunk;
}

static boolean on_jdst_empty(j_compress_ptr c) {
    jdst_ctx *d = (jdst_ctx *)(void *)c->dest;
    d->wst      = imgd_buf_append(&d->out, d->chunk, sizeof d->chunk);
    if (d->wst != IMGD_OK) ERREXIT(c, JERR_FILE_WRITE);
    on_jdst_init(c);
    return TRUE;
}

static void on_jdst_term(j_compress_ptr c) {
    jdst_ctx *d = (jdst_ctx *)(void *)c->dest;
    d->wst      = imgd_buf_append(&d->out, d->chunk, sizeof d->chunk - d->pub.free_in_buffer);
    if (d->wst != IMGD_OK) ERREXIT(c, JERR_FILE_WRITE);
}

typedef struct enc_jpeg_ctx {
    struct jpeg_compress_struct cinfo;
    jerr_ctx                    err;
    jdst_ctx                    dst;
    const imgd_image           *img; /* c = 1 or 3 */
    const imgd_buf             *exif;
    int                         quality;
} enc_jpeg_ctx;

static int run_encode_jpeg(enc_jpeg_ctx *e) {
    if (setjmp(e->err.jb)) return -1;
    jpeg_create_compress(&e->cinfo);
    e->dst.pub.init_destination    = on_jdst_init;
    e->dst.pub.empty_output_buffer = on_jdst_empty;
    e->dst.pub.term_destination    = on_jdst_term;
    e->cinfo.dest                  = &e->dst.pub;
    e->cinfo.image_width           = (JDIMENSION)e->img->w;
    e->cinfo.image_height          = (JDIMENSION)e->img->h;
    e->cinfo.input_components      = e->img->c;
    e->cinfo.in_color_space        = e->img->c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&e->cinfo);
    jpeg_set_quality(&e->cinfo, e->quality, TRUE);
    jpeg_start_compress(&e->cinfo, TRUE);
    if (e->exif) {
        jpeg_write_marker(&e->cinfo, JPEG_APP0 + 1, (const JOCTET *)e->exif->data,
                          (unsigned)e->exif->len);
    }
    size_t stride = (size_t)e->img->w * (size_t)e->img->c;
    while (e->cinfo.next_scanline < e->cinfo.image_height) {
        JSAMPROW row = e->img->px + (size_t)e->cinfo.next_scanline * stride;
        (void)jpeg_write_scanlines(&e->cinfo, &row, 1);
    }
    jpeg_finish_compress(&e->cinfo);
    return 0;
}

static imgd_status encode_jpeg(const imgd_image *img, int quality, const char *params,
                               imgd_buf *out) {
    if (img->w > 65500 || img->h > 65500) {
        return imgd_fail(IMGD_E_TOO_LARGE, "JPEG: %dx%d is over the format's 65500 limit",
                         (int)img->w, (int)img->h);
    }
    imgd_image  flat = {0};
    imgd_buf    exif;
    imgd_status st = IMGD_OK;
    imgd_buf_init(&exif, 65533); /* one APP1 segment */
    if (params) {
        st = exif_user_comment(params, true, &exif);
        if (st == IMGD_E_TOO_LARGE) {
            st = imgd_fail(IMGD_E_TOO_LARGE,
                           "JPEG: the parameters text (%zu bytes) does not fit one EXIF segment "
                           "(about 32000 characters); save as PNG",
                           strlen(params));
        }
    }
    if (st == IMGD_OK && img->c == 4) {
        st  = imgd_image_to_rgb(img, &flat);
        img = &flat;
    }
    enc_jpeg_ctx *e = NULL;
    if (st == IMGD_OK) {
        e = imgd_calloc(1, sizeof *e);
        if (!e) st = imgd_fail(IMGD_E_NOMEM, "JPEG: out of memory");
    }
    if (st == IMGD_OK) {
        e->img                    = img;
        e->exif                   = params ? &exif : NULL;
        e->quality                = quality;
        e->cinfo.err              = jpeg_std_error(&e->err.pub);
        e->err.pub.error_exit     = on_jpeg_error;
        e->err.pub.output_message = on_jpeg_output;
        imgd_buf_init(&e->dst.out, out->cap);
        if (run_encode_jpeg(e) < 0) {
            if (e->dst.wst != IMGD_OK) {
                st = imgd_fail_prefix(e->dst.wst, "JPEG");
            } else {
                st = imgd_fail(e->err.pub.msg_code == JERR_OUT_OF_MEMORY ? IMGD_E_NOMEM
                                                                         : IMGD_E_INTERNAL,
                               "JPEG: %s", e->err.msg);
            }
        }
    }
    if (e) {
        jpeg_destroy_compress(&e->cinfo); /* safe in any state: cinfo started zeroed */
        if (st == IMGD_OK) {
            *out = e->dst.out;
        } else {
            imgd_buf_free(&e->dst.out);
        }
        imgd_free(e);
    }
    imgd_buf_free(&exif);
    imgd_image_free(&flat);
    return st;
}

/* ==== encoding: WebP ======================================================================= */

static int on_webp_write(const uint8_t *data, size_t n, const WebPPicture *pic) {
    imgd_buf *b = pic->custom_ptr;
    return imgd_buf_append(b, data, n) == IMGD_OK;
}

static const char *webp_enc_error_text(WebPEncodingError e) {
    switch (e) {
    case VP8_ENC_ERROR_OUT_OF_MEMORY: return "out of memory";
    case VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY: return "out of memory for the bitstream";
    case VP8_ENC_ERROR_BAD_DIMENSION: return "image side over 16383 pixels";
    case VP8_ENC_ERROR_BAD_WRITE: return "cannot grow the output buffer";
    case VP8_ENC_ERROR_FILE_TOO_BIG: return "output over 4 GiB";
    default: return "encoder error";
    }
}

/* Wraps the bitstream in a VP8X container with an EXIF chunk (libwebpmux). */
static imgd_status add_webp_exif(imgd_buf *bits, const char *params) {
    imgd_buf exif;
    imgd_buf_init(&exif, bits->cap);
    imgd_status st = exif_user_comment(params, false, &exif);
    if (st != IMGD_OK) {
        imgd_buf_free(&exif);
        return imgd_fail_prefix(st, "WebP EXIF");
    }
    WebPMux *mux = WebPMuxNew();
    WebPData assembled;
    WebPDataInit(&assembled);
    WebPData     image = {(const uint8_t *)bits->data, bits->len};
    WebPData     chunk = {(const uint8_t *)exif.data, exif.len};
    WebPMuxError me    = WEBP_MUX_MEMORY_ERROR;
    if (mux) me = WebPMuxSetImage(mux, &image, 0);
    if (me == WEBP_MUX_OK) me = WebPMuxSetChunk(mux, "EXIF", &chunk, 0);
    if (me == WEBP_MUX_OK) me = WebPMuxAssemble(mux, &assembled);
    if (me == WEBP_MUX_OK) {
        imgd_buf nb;
        imgd_buf_init(&nb, bits->cap);
        st = imgd_buf_append(&nb, assembled.bytes, assembled.size);
        if (st == IMGD_OK) {
            imgd_buf_free(bits);
            *bits = nb;
        } else {
            imgd_buf_free(&nb);
        }
    } else {
        st = imgd_fail(me == WEBP_MUX_MEMORY_ERROR ? IMGD_E_NOMEM : IMGD_E_INTERNAL,
                       "WebP: cannot add the EXIF chunk (mux error %d)", (int)me);
    }
    WebPDataClear(&assembled);
    WebPMuxDelete(mux);
    imgd_buf_free(&exif);
    return st;
}

static imgd_status encode_webp(const imgd_image *img, int quality, bool lossless,
                               const char *params, imgd_buf *out) {
    if (img->w > WEBP_MAX_DIMENSION || img->h > WEBP_MAX_DIMENSION) {
        return imgd_fail(IMGD_E_TOO_LARGE, "WebP: %dx%d is over the format's %d limit", (int)img->w,
                         (int)img->h, WEBP_MAX_DIMENSION);
    }
    WebPConfig cfg;
    if (!WebPConfigInit(&cfg)) return imgd_fail(IMGD_E_INTERNAL, "WebP: library version mismatch");
    cfg.quality  = (float)quality;
    cfg.lossless = lossless;
    cfg.exact    = lossless; /* keep RGB under transparent pixels: exact round trips */
    if (!WebPValidateConfig(&cfg)) return imgd_fail(IMGD_E_INTERNAL, "WebP: invalid config");
    imgd_image  rgb = {0};
    imgd_status st  = IMGD_OK;
    if (img->c == 1) {
        st  = imgd_image_to_rgb(img, &rgb);
        img = &rgb;
    }
    if (st != IMGD_OK) return st;
    WebPPicture pic;
    if (!WebPPictureInit(&pic)) {
        imgd_image_free(&rgb);
        return imgd_fail(IMGD_E_INTERNAL, "WebP: library version mismatch");
    }
    pic.width    = img->w;
    pic.height   = img->h;
    pic.use_argb = lossless;
    int      ok  = img->c == 4 ? WebPPictureImportRGBA(&pic, img->px, img->w * 4)
                               : WebPPictureImportRGB(&pic, img->px, img->w * 3);
    imgd_buf bits;
    imgd_buf_init(&bits, out->cap);
    pic.writer     = on_webp_write;
    pic.custom_ptr = &bits;
    if (!ok) {
        st = imgd_fail(IMGD_E_NOMEM, "WebP: out of memory importing the picture");
    } else if (!WebPEncode(&cfg, &pic)) {
        WebPEncodingError e = pic.error_code;
        st = imgd_fail(e == VP8_ENC_ERROR_OUT_OF_MEMORY || e == VP8_ENC_ERROR_BAD_WRITE ||
                               e == VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY
                           ? IMGD_E_NOMEM
                           : IMGD_E_INTERNAL,
                       "WebP: %s", webp_enc_error_text(e));
    }
    WebPPictureFree(&pic);
    imgd_image_free(&rgb);
    if (st == IMGD_OK && params) st = add_webp_exif(&bits, params);
    if (st == IMGD_OK) {
        *out = bits;
    } else {
        imgd_buf_free(&bits);
    }
    return st;
}

/* ==== encoding: entry points =============================================================== */

imgd_status imgd_image_encode(const imgd_image *img, const imgd_image_save_params *params,
                              uint8_t **out, size_t *len) {
    if (!image_ok(img) || !params || !out || !len) {
        return imgd_fail(IMGD_E_INVALID_ARG, "image encode: empty image or NULL argument");
    }
    int q = params->quality ? params->quality : 80;
    if (q < 1 || q > 100) {
        return imgd_fail(IMGD_E_INVALID_ARG, "image encode: quality %d is outside 1..100",
                         (int)params->quality);
    }
    const char *text = params->parameters;
    if (text && !imgd_utf8_valid(text, strlen(text))) {
        return imgd_fail(IMGD_E_INVALID_ARG, "image encode: parameters text is not valid UTF-8");
    }
    imgd_buf b;
    imgd_buf_init(&b, out_cap(img, text));
    imgd_status st;
    switch (params->format) {
    case IMGD_IMAGE_FORMAT_PNG: st = encode_png(img, text, &b); break;
    case IMGD_IMAGE_FORMAT_JPEG: st = encode_jpeg(img, q, text, &b); break;
    case IMGD_IMAGE_FORMAT_WEBP: st = encode_webp(img, q, params->lossless, text, &b); break;
    default:
        return imgd_fail(IMGD_E_INVALID_ARG, "image encode: unknown format %d",
                         (int)params->format);
    }
    if (st != IMGD_OK) return st;
    *len = b.len;
    *out = (uint8_t *)imgd_buf_take(&b);
    return IMGD_OK;
}

static imgd_status write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return IMGD_E_IO;
        p += w;
        n -= (size_t)w;
    }
    return IMGD_OK;
}

imgd_status imgd_image_save(const imgd_image *img, const char *path,
                            const imgd_image_save_params *params) {
    if (!path) return imgd_fail(IMGD_E_INVALID_ARG, "image save: NULL path");
    static atomic_uint counter;
    uint8_t           *data = NULL;
    size_t             n    = 0;
    imgd_status        st   = imgd_image_encode(img, params, &data, &n);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s", path);
    size_t tl  = strlen(path) + 48;
    char  *tmp = imgd_malloc(tl);
    if (!tmp) {
        imgd_free(data);
        return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", path);
    }
    (void)imgd_fmt(tmp, tl, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&counter, 1u));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = imgd_fail(IMGD_E_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    } else {
        const char *what = NULL;
        if (write_all(fd, data, n) != IMGD_OK) {
            what = "write";
        } else if (fsync(fd) != 0) {
            what = "fsync";
        }
        int e = errno;
        if (close(fd) != 0 && !what) {
            what = "close";
            e    = errno;
        }
        if (!what && rename(tmp, path) != 0) {
            what = "rename";
            e    = errno;
        }
        if (what) {
            st = imgd_fail(IMGD_E_IO, "%s: cannot %s %s: %s", path, what, tmp, strerror(e));
            (void)unlink(tmp);
        }
    }
    imgd_free(tmp);
    imgd_free(data);
    return st;
}

/* ==== conversions ========================================================================== */

/* Pillow's alpha_composite of (v, a) over opaque white, 7 extra bits of precision. */
static uint8_t over_white(uint32_t v, uint32_t a) {
    uint32_t tmp = (v * a + 255u * (255u - a)) * 128u + (0x80u << 7);
    return (uint8_t)((((tmp >> 8) + tmp) >> 8) >> 7);
}

imgd_status imgd_image_to_rgb(const imgd_image *img, imgd_image *out) {
    if (!image_ok(img) || !out) return imgd_fail(IMGD_E_INVALID_ARG, "image to RGB: empty image");
    imgd_image  r  = {0};
    imgd_status st = imgd_image_init(&r, img->w, img->h, 3);
    if (st != IMGD_OK) return st;
    size_t n = (size_t)img->w * (size_t)img->h;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = img->px + i * (size_t)img->c;
        uint8_t       *d = r.px + i * 3;
        if (img->c == 1) {
            d[0] = d[1] = d[2] = s[0];
        } else if (img->c == 3) {
            memcpy(d, s, 3);
        } else {
            for (int k = 0; k < 3; k++) d[k] = over_white(s[k], s[3]);
        }
    }
    *out = r;
    return IMGD_OK;
}

imgd_status imgd_image_to_mask(const imgd_image *img, imgd_image *out) {
    if (!image_ok(img) || !out) return imgd_fail(IMGD_E_INVALID_ARG, "image to mask: empty image");
    size_t n         = (size_t)img->w * (size_t)img->h;
    bool   use_alpha = false;
    for (size_t i = 0; img->c == 4 && i < n && !use_alpha; i++) {
        use_alpha = img->px[i * 4 + 3] != 255;
    }
    imgd_image  m  = {0};
    imgd_status st = imgd_image_init(&m, img->w, img->h, 1);
    if (st != IMGD_OK) return st;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = img->px + i * (size_t)img->c;
        if (img->c == 1) {
            m.px[i] = s[0];
        } else if (use_alpha) {
            m.px[i] = s[3];
        } else {
            m.px[i] = (uint8_t)((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16);
        }
    }
    *out = m;
    return IMGD_OK;
}

imgd_status imgd_image_to_nchw(const imgd_image *img, float *out) {
    if (!image_ok(img) || !out) return imgd_fail(IMGD_E_INVALID_ARG, "image to NCHW: empty image");
    size_t n = (size_t)img->w * (size_t)img->h;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = img->px + i * (size_t)img->c;
        for (size_t k = 0; k < 3; k++) {
            uint8_t v      = img->c == 1 ? s[0] : img->c == 3 ? s[k] : over_white(s[k], s[3]);
            out[k * n + i] = (float)v / 255.0f;
        }
    }
    return IMGD_OK;
}

imgd_status imgd_image_from_nchw(const float *in, int32_t w, int32_t h, imgd_image *out) {
    if (!in || !out) return imgd_fail(IMGD_E_INVALID_ARG, "image from NCHW: NULL argument");
    imgd_image  r  = {0};
    imgd_status st = imgd_image_init(&r, w, h, 3);
    if (st != IMGD_OK) return st;
    size_t n = (size_t)w * (size_t)h;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < 3; k++) {
            float x         = in[k * n + i];
            x               = x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; /* NaN -> 0 */
            r.px[i * 3 + k] = (uint8_t)lrintf(x * 255.0f);
        }
    }
    *out = r;
    return IMGD_OK;
}

imgd_status imgd_image_gray_to_float(const imgd_image *img, float *out) {
    if (!image_ok(img) || img->c != 1 || !out) {
        return imgd_fail(IMGD_E_INVALID_ARG, "gray to float: need a non-empty 1-channel image");
    }
    size_t n = (size_t)img->w * (size_t)img->h;
    for (size_t i = 0; i < n; i++) out[i] = (float)img->px[i] / 255.0f;
    return IMGD_OK;
}

/* ==== resizing ============================================================================= */

#define RS_BITS 22 /* Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2 */

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x *= PI_D;
    return sin(x) / x;
}

static double lanczos3(double x) {
    return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
}

typedef struct rs_kernel {
    int32_t  ksize;
    int32_t *bounds; /* [out][2]: first source index, count */
    int32_t *k;      /* [out][ksize] fixed-point weights */
} rs_kernel;

static void rs_kernel_free(rs_kernel *k) {
    imgd_free(k->bounds);
    imgd_free(k->k);
    k->bounds = NULL;
    k->k      = NULL;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for Lanczos over the whole input. */
static imgd_status rs_kernel_init(rs_kernel *kr, int32_t in, int32_t out) {
    double scale = (double)in / out, fscale = scale < 1.0 ? 1.0 : scale;
    double support = 3.0 * fscale;
    if (support > 1e6) return imgd_fail(IMGD_E_TOO_LARGE, "resize: scale %g too large", scale);
    int32_t ksize = (int32_t)ceil(support) * 2 + 1;
    size_t  nk;
    if (!imgd_size_mul((size_t)out, (size_t)ksize, &nk)) {
        return imgd_fail(IMGD_E_TOO_LARGE, "resize: kernel too large");
    }
    double *pre = imgd_malloc(nk * sizeof *pre);
    kr->ksize   = ksize;
    kr->bounds  = imgd_malloc((size_t)out * 2 * sizeof *kr->bounds);
    kr->k       = imgd_malloc(nk * sizeof *kr->k);
    if (!pre || !kr->bounds || !kr->k) {
        imgd_free(pre);
        rs_kernel_free(kr);
        return imgd_fail(IMGD_E_NOMEM, "resize: out of memory");
    }
    for (int32_t xx = 0; xx < out; xx++) {
        double  center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / fscale;
        int32_t xmin = (int32_t)(center - support + 0.5), xmax = (int32_t)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        xmax -= xmin;
        double *k = pre + (size_t)xx * (size_t)ksize;
        int32_t x = 0;
        for (; x < xmax; x++) {
            k[x] = lanczos3((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        for (x = 0; x < xmax; x++) {
            if (ww != 0.0) k[x] /= ww;
        }
        for (; x < ksize; x++) k[x] = 0.0;
        kr->bounds[2 * (size_t)xx]     = xmin;
        kr->bounds[2 * (size_t)xx + 1] = xmax;
    }
    for (size_t i = 0; i < nk; i++) {
        double v = pre[i] * (1 << RS_BITS);
        kr->k[i] = (int32_t)(pre[i] < 0 ? v - 0.5 : v + 0.5);
    }
    imgd_free(pre);
    return IMGD_OK;
}

static uint8_t clip8(int64_t v) {
    if (v < 0) return 0;
    v >>= RS_BITS;
    return (uint8_t)(v > 255 ? 255 : v);
}

/* One separable pass: out[o] = sum in[bounds + j] * k[j], along x (horizontal) or y. */
static void rs_pass(const imgd_image *in, imgd_image *out, const rs_kernel *kr, bool horizontal) {
    int32_t c = in->c;
    for (int32_t y = 0; y < out->h; y++) {
        for (int32_t x = 0; x < out->w; x++) {
            int32_t        o  = horizontal ? x : y;
            int32_t        lo = kr->bounds[2 * (size_t)o], cnt = kr->bounds[2 * (size_t)o + 1];
            const int32_t *k = kr->k + (size_t)o * (size_t)kr->ksize;
            for (int32_t ch = 0; ch < c; ch++) {
                int64_t acc = 1 << (RS_BITS - 1);
                for (int32_t j = 0; j < cnt; j++) {
                    size_t sx = horizontal ? (size_t)(lo + j) : (size_t)x;
                    size_t sy = horizontal ? (size_t)y : (size_t)(lo + j);
                    acc +=
                        (int64_t)in->px[(sy * (size_t)in->w + sx) * (size_t)c + (size_t)ch] * k[j];
                }
                out->px[((size_t)y * (size_t)out->w + (size_t)x) * (size_t)c + (size_t)ch] =
                    clip8(acc);
            }
        }
    }
}

static imgd_status resize_lanczos(const imgd_image *img, int32_t w, int32_t h, imgd_image *out) {
    rs_kernel         kh = {0}, kv = {0};
    imgd_image        tmp = {0}, r = {0};
    const imgd_image *src = img;
    imgd_status       st  = IMGD_OK;
    if (w != img->w) {
        st = rs_kernel_init(&kh, img->w, w);
        if (st == IMGD_OK) st = imgd_image_init(&tmp, w, img->h, img->c);
        if (st == IMGD_OK) {
            rs_pass(img, &tmp, &kh, true);
            src = &tmp;
        }
    }
    if (st == IMGD_OK && h != img->h) {
        st = rs_kernel_init(&kv, img->h, h);
        if (st == IMGD_OK) st = imgd_image_init(&r, w, h, img->c);
        if (st == IMGD_OK) rs_pass(src, &r, &kv, false);
    } else if (st == IMGD_OK) {
        r   = tmp; /* horizontal only */
        tmp = (imgd_image){0};
    }
    rs_kernel_free(&kh);
    rs_kernel_free(&kv);
    imgd_image_free(&tmp);
    if (st == IMGD_OK) *out = r;
    return st;
}

/* Pillow's ImagingScaleAffine: the source coordinate is accumulated, not multiplied. */
static imgd_status resize_nearest(const imgd_image *img, int32_t w, int32_t h, imgd_image *out) {
    imgd_image  r  = {0};
    imgd_status st = imgd_image_init(&r, w, h, img->c);
    if (st != IMGD_OK) return st;
    int32_t *xs = imgd_malloc((size_t)w * sizeof *xs);
    if (!xs) {
        imgd_image_free(&r);
        return imgd_fail(IMGD_E_NOMEM, "resize: out of memory");
    }
    double ax = (double)img->w / w, ay = (double)img->h / h, xo = ax * 0.5, yo = ay * 0.5;
    for (int32_t x = 0; x < w; x++) {
        xs[x] = IMGD_MIN((int32_t)xo, img->w - 1);
        xo += ax;
    }
    size_t c = (size_t)img->c;
    for (int32_t y = 0; y < h; y++) {
        int32_t sy = IMGD_MIN((int32_t)yo, img->h - 1);
        yo += ay;
        for (int32_t x = 0; x < w; x++) {
            memcpy(r.px + ((size_t)y * (size_t)w + (size_t)x) * c,
                   img->px + ((size_t)sy * (size_t)img->w + (size_t)xs[x]) * c, c);
        }
    }
    imgd_free(xs);
    *out = r;
    return IMGD_OK;
}

imgd_status imgd_image_resize(const imgd_image *img, int32_t w, int32_t h,
                              imgd_resize_filter filter, imgd_image *out) {
    if (!image_ok(img) || !out || w < 1 || h < 1) {
        return imgd_fail(IMGD_E_INVALID_ARG, "resize: empty image or target size %dx%d", (int)w,
                         (int)h);
    }
    if (filter != IMGD_RESIZE_LANCZOS && filter != IMGD_RESIZE_NEAREST) {
        return imgd_fail(IMGD_E_INVALID_ARG, "resize: unknown filter %d", (int)filter);
    }
    if (w == img->w && h == img->h) {
        imgd_status st = imgd_image_init(out, w, h, img->c);
        if (st == IMGD_OK) memcpy(out->px, img->px, image_bytes(img));
        return st;
    }
    return filter == IMGD_RESIZE_LANCZOS ? resize_lanczos(img, w, h, out)
                                         : resize_nearest(img, w, h, out);
}

/* ==== blur ================================================================================= */

/* Pillow's ImagingLineBoxBlur8 on one line (in and out distinct, n = lastx + 1). */
static void box_line(uint8_t *out, const uint8_t *in, int lastx, int radius, uint32_t ww,
                     uint32_t fw) {
    int      n = lastx + 1, edge_a = IMGD_MIN(radius + 1, n), edge_b = IMGD_MAX(n - radius - 1, 0);
    uint32_t acc = in[0] * (uint32_t)(radius + 1), bulk;
    for (int x = 0; x < edge_a - 1; x++) acc += in[x];
    acc += in[lastx] * (uint32_t)(radius - edge_a + 1);
#define BOX_MOVE(sub, add) acc += (uint32_t)((int)in[add] - (int)in[sub])
#define BOX_FAR(l, r)      bulk = acc * ww + ((uint32_t)in[l] + in[r]) * fw
#define BOX_SAVE(x)        out[x] = (uint8_t)((bulk + (1u << 23)) >> 24)
    int x                         = 0;
    if (edge_a <= edge_b) {
        for (; x < edge_a; x++) {
            BOX_MOVE(0, x + radius);
            BOX_FAR(0, x + radius + 1);
            BOX_SAVE(x);
        }
        for (; x < edge_b; x++) {
            BOX_MOVE(x - radius - 1, x + radius);
            BOX_FAR(x - radius - 1, x + radius + 1);
            BOX_SAVE(x);
        }
    } else {
        for (; x < edge_b; x++) {
            BOX_MOVE(0, x + radius);
            BOX_FAR(0, x + radius + 1);
            BOX_SAVE(x);
        }
        for (; x < edge_a; x++) {
            BOX_MOVE(0, lastx);
            BOX_FAR(0, lastx);
            BOX_SAVE(x);
        }
    }
    for (; x <= lastx; x++) {
        BOX_MOVE(x - radius - 1, lastx);
        BOX_FAR(x - radius - 1, lastx);
        BOX_SAVE(x);
    }
#undef BOX_MOVE
#undef BOX_FAR
#undef BOX_SAVE
}

/* Gathers line i of one channel along x (horizontal) or y into buf. */
static void line_get(const imgd_image *img, bool horizontal, int32_t i, int32_t ch, uint8_t *buf) {
    size_t c = (size_t)img->c, w = (size_t)img->w;
    if (horizontal) {
        for (int32_t x = 0; x < img->w; x++) {
            buf[x] = img->px[((size_t)i * w + (size_t)x) * c + (size_t)ch];
        }
    } else {
        for (int32_t y = 0; y < img->h; y++) {
            buf[y] = img->px[((size_t)y * w + (size_t)i) * c + (size_t)ch];
        }
    }
}

static void line_put(imgd_image *img, bool horizontal, int32_t i, int32_t ch, const uint8_t *buf) {
    size_t c = (size_t)img->c, w = (size_t)img->w;
    if (horizontal) {
        for (int32_t x = 0; x < img->w; x++) {
            img->px[((size_t)i * w + (size_t)x) * c + (size_t)ch] = buf[x];
        }
    } else {
        for (int32_t y = 0; y < img->h; y++) {
            img->px[((size_t)y * w + (size_t)i) * c + (size_t)ch] = buf[y];
        }
    }
}

static void blur_pil(imgd_image *img, float radius, uint8_t *a, uint8_t *b) {
    /* ImagingGaussianBlur: the extended box radius for 3 passes, in float as Pillow. */
    float sigma2 = radius * radius / 3.0f;
    float L      = (float)sqrt(12.0 * (double)sigma2 + 1.0);
    float l      = (float)floor(((double)L - 1.0) / 2.0);
    float aa     = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
    aa /= 6 * (sigma2 - (l + 1) * (l + 1));
    float    fr = l + aa;
    int      r  = (int)fr;
    uint32_t ww = (uint32_t)((float)(1u << 24) / (fr * 2 + 1));
    uint32_t fw = ((1u << 24) - (uint32_t)(r * 2 + 1) * ww) / 2;
    for (int dir = 0; dir < 2; dir++) {
        bool    hz    = dir == 0;
        int32_t lines = hz ? img->h : img->w, n = hz ? img->w : img->h;
        for (int32_t i = 0; i < lines; i++) {
            for (int32_t ch = 0; ch < img->c; ch++) {
                line_get(img, hz, i, ch, a);
                for (int pass = 0; pass < 3; pass++) {
                    box_line(b, a, n - 1, r, ww, fw);
                    memcpy(a, b, (size_t)n);
                }
                line_put(img, hz, i, ch, a);
            }
        }
    }
}

static int reflect101(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
    return i;
}

static imgd_status blur_cv2(imgd_image *img, float radius, uint8_t *a, uint8_t *b) {
    int     ks = 2 * (int)(2.5 * (double)radius + 0.5) + 1, half = ks / 2;
    double *kern = imgd_malloc((size_t)ks * sizeof *kern);
    if (!kern) return imgd_fail(IMGD_E_NOMEM, "blur: out of memory");
    double sum = 0.0, s2 = 2.0 * (double)radius * (double)radius;
    for (int i = 0; i < ks; i++) {
        kern[i] = exp(-(double)((i - half) * (i - half)) / s2);
        sum += kern[i];
    }
    for (int i = 0; i < ks; i++) kern[i] /= sum;
    for (int dir = 0; dir < 2; dir++) {
        bool    hz    = dir == 0;
        int32_t lines = hz ? img->h : img->w, n = hz ? img->w : img->h;
        for (int32_t i = 0; i < lines; i++) {
            for (int32_t ch = 0; ch < img->c; ch++) {
                line_get(img, hz, i, ch, a);
                for (int x = 0; x < n; x++) {
                    double v = 0.0;
                    for (int j = 0; j < ks; j++) v += kern[j] * a[reflect101(x + j - half, n)];
                    b[x] = (uint8_t)IMGD_MIN(255.0, floor(v + 0.5));
                }
                line_put(img, hz, i, ch, b);
            }
        }
    }
    imgd_free(kern);
    return IMGD_OK;
}

imgd_status imgd_image_blur(imgd_image *img, float radius, imgd_blur_kind kind) {
    if (!image_ok(img) || !isfinite(radius) || radius > 1000.0f ||
        (kind != IMGD_BLUR_PIL && kind != IMGD_BLUR_A1111)) {
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "blur: empty image, radius outside 0..1000 or unknown kind %d", (int)kind);
    }
    if (radius <= 0.0f) return IMGD_OK;
    size_t   n = (size_t)IMGD_MAX(img->w, img->h);
    uint8_t *a = imgd_malloc(2 * n);
    if (!a) return imgd_fail(IMGD_E_NOMEM, "blur: out of memory");
    imgd_status st = IMGD_OK;
    if (kind == IMGD_BLUR_PIL) {
        blur_pil(img, radius, a, a + n);
    } else {
        st = blur_cv2(img, radius, a, a + n);
    }
    imgd_free(a);
    return st;
}

imgd_status imgd_mask_to_latent(const float *mask, int32_t w, int32_t h, int32_t lw, int32_t lh,
                                float *out) {
    if (!mask || !out || w < 1 || h < 1 || lw < 1 || lh < 1) {
        return imgd_fail(IMGD_E_INVALID_ARG, "mask to latent: bad sizes %dx%d -> %dx%d", (int)w,
                         (int)h, (int)lw, (int)lh);
    }
    /* torch nearest: scale = (float)in / out, src = min(floor(dst * scale), in - 1). */
    float sx = (float)w / (float)lw, sy = (float)h / (float)lh;
    for (int32_t y = 0; y < lh; y++) {
        int32_t yy = IMGD_MIN((int32_t)floorf((float)y * sy), h - 1);
        for (int32_t x = 0; x < lw; x++) {
            int32_t xx = IMGD_MIN((int32_t)floorf((float)x * sx), w - 1);
            out[(size_t)y * (size_t)lw + (size_t)x] =
                mask[(size_t)yy * (size_t)w + (size_t)xx] >= 0.5f ? 1.0f : 0.0f;
        }
    }
    return IMGD_OK;
}
