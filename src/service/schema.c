/* JSON Schema validation (draft 2020-12 subset), default filling, and the generation
 * request schema of a model. See schema.h for what is supported and in which order
 * violations are reported. */
#include "service/schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/base64.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/text.h"
#include "imgd.h"
#include "sampling/sampler.h"
#include "sampling/schedule.h"

/* ---------------------------------------------------------------------------------- */
/* Validation context and the instance pointer                                         */
/* ---------------------------------------------------------------------------------- */

typedef struct vctx {
    const cJSON           *root; /* the schema document ($ref target) */
    imgd_schema_violation *v;
    char                   ptr[256]; /* RFC 6901 pointer of the value being checked */
    size_t                 ptr_len;
    bool                   frozen; /* a segment did not fit: deeper ones are not appended */
    int                    depth;
} vctx;

typedef struct ptr_mark {
    size_t len;
    bool   frozen;
} ptr_mark;

/* Appends "/" + seg with ~ and / escaped (~0, ~1). */
static ptr_mark ptr_push(vctx *c, const char *seg) {
    ptr_mark m    = {c->ptr_len, c->frozen};
    size_t   need = 1;
    for (const char *p = seg; *p; p++) need += (*p == '~' || *p == '/') ? 2 : 1;
    if (c->frozen || c->ptr_len + need >= sizeof c->ptr) {
        c->frozen = true;
        return m;
    }
    char *d = c->ptr + c->ptr_len;
    *d++    = '/';
    for (const char *p = seg; *p; p++) {
        if (*p == '~' || *p == '/') {
            *d++ = '~';
            *d++ = *p == '~' ? '0' : '1';
        } else {
            *d++ = *p;
        }
    }
    *d         = '\0';
    c->ptr_len = (size_t)(d - c->ptr);
    return m;
}

static ptr_mark ptr_push_index(vctx *c, size_t i) {
    char b[24];
    (void)snprintf(b, sizeof b, "%zu", i);
    return ptr_push(c, b);
}

static void ptr_pop(vctx *c, ptr_mark m) {
    c->ptr_len    = m.len;
    c->frozen     = m.frozen;
    c->ptr[m.len] = '\0';
}

/* ---------------------------------------------------------------------------------- */
/* Text helpers: numbers, previews, edit distance                                      */
/* ---------------------------------------------------------------------------------- */

/* Shortest of %.15g / %.17g that reads back as d; integers without exponent. */
static const char *fmt_num(double d, char b[40]) {
    if (isfinite(d) && floor(d) == d && fabs(d) < 1e15) {
        (void)snprintf(b, 40, "%.0f", d);
        return b;
    }
    (void)snprintf(b, 40, "%.15g", d);
    if (strtod(b, NULL) != d) (void)snprintf(b, 40, "%.17g", d);
    return b;
}

/* Copies at most ~48 bytes of s into dst, replacing control characters and bytes of
 * invalid UTF-8 with '?', and marking a cut with "...". The result is valid UTF-8. */
static const char *preview(const char *s, char *dst, size_t cap) {
    size_t o = 0, i = 0, lim = IMGD_MIN(cap - 4, (size_t)48);
    while (s[i] && o < lim) {
        unsigned char ch  = (unsigned char)s[i];
        size_t        len = ch < 0x80 ? 1 : ch >= 0xF0 ? 4 : ch >= 0xE0 ? 3 : ch >= 0xC0 ? 2 : 0;
        if (len > 1 && o + len <= lim && strnlen(s + i, len) == len &&
            imgd_utf8_valid(s + i, len)) {
            memcpy(dst + o, s + i, len);
            o += len;
            i += len;
            continue;
        }
        dst[o++] = (char)((len == 1 && ch >= 0x20 && ch != 0x7f) ? ch : '?');
        i++;
    }
    if (s[i]) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return dst;
}

/* A short rendering of a JSON value for messages. */
static const char *value_text(const cJSON *x, char *dst, size_t cap) {
    char b[40], p[64];
    if (cJSON_IsString(x)) {
        (void)snprintf(dst, cap, "\"%s\"", preview(x->valuestring, p, sizeof p));
    } else if (cJSON_IsNumber(x)) {
        (void)snprintf(dst, cap, "%s", fmt_num(x->valuedouble, b));
    } else if (cJSON_IsBool(x)) {
        (void)snprintf(dst, cap, "%s", cJSON_IsTrue(x) ? "true" : "false");
    } else if (cJSON_IsNull(x)) {
        (void)snprintf(dst, cap, "null");
    } else if (cJSON_IsArray(x)) {
        (void)snprintf(dst, cap, "an array");
    } else {
        (void)snprintf(dst, cap, "an object");
    }
    return dst;
}

static char lower(char c) {
    return (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
}

#define NAME_MAX_EDIT 64

/* Optimal-string-alignment distance, case-insensitive; SIZE_MAX for names over 64 bytes. */
static size_t edit_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > NAME_MAX_EDIT || nb > NAME_MAX_EDIT) return SIZE_MAX;
    size_t  r0[NAME_MAX_EDIT + 1], r1[NAME_MAX_EDIT + 1], r2[NAME_MAX_EDIT + 1];
    size_t *pp = r0, *prev = r1, *cur = r2;
    for (size_t j = 0; j <= nb; j++) prev[j] = j;
    for (size_t i = 1; i <= na; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t cost = lower(a[i - 1]) != lower(b[j - 1]);
            size_t d    = IMGD_MIN(prev[j] + 1, cur[j - 1] + 1);
            d           = IMGD_MIN(d, prev[j - 1] + cost);
            if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
                lower(a[i - 2]) == lower(b[j - 1])) {
                d = IMGD_MIN(d, pp[j - 2] + 1);
            }
            cur[j] = d;
        }
        size_t *t = pp;
        pp        = prev;
        prev      = cur;
        cur       = t;
    }
    return prev[nb];
}

static bool contains_ci(const char *hay, const char *needle) {
    size_t nh = strlen(hay), nn = strlen(needle);
    for (size_t i = 0; nn && i + nn <= nh; i++) {
        size_t k = 0;
        while (k < nn && lower(hay[i + k]) == lower(needle[k])) k++;
        if (k == nn) return true;
    }
    return false;
}

/* Distance when `cand` is a plausible intended spelling of `typed`, else SIZE_MAX. */
static size_t closeness(const char *typed, const char *cand) {
    size_t d = edit_distance(typed, cand);
    size_t a = strlen(typed), b = strlen(cand);
    if (d == SIZE_MAX) return d;
    if ((d == 1 && IMGD_MIN(a, b) >= 2) || d <= IMGD_MAX(a, b) / 3) return d;
    if (IMGD_MIN(a, b) >= 3 && (contains_ci(cand, typed) || contains_ci(typed, cand))) return d;
    return SIZE_MAX;
}

/* ---------------------------------------------------------------------------------- */
/* Reporting                                                                           */
/* ---------------------------------------------------------------------------------- */

/* The field name used in messages: the pointer without its leading '/'. */
static const char *field(const vctx *c) {
    return c->ptr_len ? c->ptr + 1 : "request";
}

/* Records a violation at the current pointer; returns false so callers can return it. */
static bool fail(vctx *c, const char *keyword, const char *fmt, ...) IMGD_PRINTF(3, 4);
static bool fail(vctx *c, const char *keyword, const char *fmt, ...) {
    imgd_schema_violation *v = c->v;
    memcpy(v->pointer, c->ptr, c->ptr_len + 1);
    (void)snprintf(v->keyword, sizeof v->keyword, "%s", keyword);
    char    msg[400];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)snprintf(v->detail, sizeof v->detail, "%s: %s", field(c), msg);
    v->hint[0] = '\0';
    return false;
}

/* Sets the hint of the violation just recorded; returns false. */
static bool hint(vctx *c, const char *fmt, ...) IMGD_PRINTF(2, 3);
static bool hint(vctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(c->v->hint, sizeof c->v->hint, fmt, ap);
    va_end(ap);
    return false;
}

static bool schema_error(vctx *c, const char *keyword, const char *what) {
    fail(c, keyword, "schema error: %s", what);
    return hint(c, "this is a server bug, not a problem with the request; please report it");
}

/* Appends to a hint under construction (truncation is harmless). */
static void hint_cat(char *h, size_t cap, const char *fmt, ...) IMGD_PRINTF(3, 4);
static void hint_cat(char *h, size_t cap, const char *fmt, ...) {
    size_t n = strlen(h);
    if (n + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(h + n, cap - n, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------- */
/* Schema access                                                                       */
/* ---------------------------------------------------------------------------------- */

static const cJSON *kw(const cJSON *s, const char *name) {
    return cJSON_GetObjectItemCaseSensitive(s, name);
}

static bool kw_num(const cJSON *s, const char *name, double *out) {
    const cJSON *n = kw(s, name);
    if (!cJSON_IsNumber(n)) return false;
    *out = n->valuedouble;
    return true;
}

/* True when the schema's type is or includes t. */
static bool type_has(const cJSON *s, const char *t) {
    const cJSON *ty = kw(s, "type");
    if (cJSON_IsString(ty)) return strcmp(ty->valuestring, t) == 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ty) {
        if (cJSON_IsString(e) && strcmp(e->valuestring, t) == 0) return true;
    }
    return false;
}

/* Resolves a local reference "#" or "#/a/b~1c" (RFC 6901 with ~0 ~1); NULL when it does not
 * resolve or uses anything else (remote references, percent escapes are not supported). */
static const cJSON *resolve_ref(const cJSON *root, const char *ref) {
    if (ref[0] != '#') return NULL;
    const char  *p    = ref + 1;
    const cJSON *node = root;
    while (*p == '/') {
        char   seg[256];
        size_t n = 0;
        for (p++; *p && *p != '/'; p++) {
            char ch = *p;
            if (ch == '~') {
                if (p[1] != '0' && p[1] != '1') return NULL;
                ch = p[1] == '0' ? '~' : '/';
                p++;
            }
            if (n + 1 >= sizeof seg) return NULL;
            seg[n++] = ch;
        }
        seg[n] = '\0';
        if (cJSON_IsArray(node)) {
            char *end = NULL;
            long  i   = strtol(seg, &end, 10);
            if (!n || *end || i < 0 || i > 1000000) return NULL;
            node = cJSON_GetArrayItem(node, (int)i);
        } else {
            node = kw(node, seg);
        }
        if (!node) return NULL;
    }
    return *p ? NULL : node;
}

/* ---------------------------------------------------------------------------------- */
/* Hints                                                                               */
/* ---------------------------------------------------------------------------------- */

/* "use an integer from 1 to 150, a multiple of 8" from the schema's numeric keywords. */
static void range_text(const cJSON *s, char *h, size_t cap) {
    double      lo = 0, hi = 0, xlo = 0, xhi = 0, m = 0;
    bool        has_lo = kw_num(s, "minimum", &lo), has_hi = kw_num(s, "maximum", &hi);
    bool        has_xlo = kw_num(s, "exclusiveMinimum", &xlo);
    bool        has_xhi = kw_num(s, "exclusiveMaximum", &xhi);
    char        a[40], b[40];
    const char *what = type_has(s, "integer") ? "an integer" : "a number";
    h[0]             = '\0';
    hint_cat(h, cap, "use %s", what);
    if (has_lo && has_hi) {
        hint_cat(h, cap, " from %s to %s", fmt_num(lo, a), fmt_num(hi, b));
    } else if (has_xlo && has_hi) {
        hint_cat(h, cap, " greater than %s and at most %s", fmt_num(xlo, a), fmt_num(hi, b));
    } else if (has_lo && has_xhi) {
        hint_cat(h, cap, " of at least %s and below %s", fmt_num(lo, a), fmt_num(xhi, b));
    } else if (has_xlo && has_xhi) {
        hint_cat(h, cap, " greater than %s and below %s", fmt_num(xlo, a), fmt_num(xhi, b));
    } else if (has_lo || has_xlo) {
        hint_cat(h, cap, " %s %s", has_lo ? "of at least" : "greater than",
                 fmt_num(has_lo ? lo : xlo, a));
    } else if (has_hi || has_xhi) {
        hint_cat(h, cap, " %s %s", has_hi ? "of at most" : "below", fmt_num(has_hi ? hi : xhi, a));
    }
    if (kw_num(s, "multipleOf", &m)) hint_cat(h, cap, ", a multiple of %s", fmt_num(m, a));
}

static bool fail_range(vctx *c, const cJSON *s, const char *keyword, const char *fmt, ...)
    IMGD_PRINTF(4, 5);
static bool fail_range(vctx *c, const cJSON *s, const char *keyword, const char *fmt, ...) {
    char    msg[300];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail(c, keyword, "%s", msg);
    range_text(s, c->v->hint, sizeof c->v->hint);
    return false;
}

/* "did you mean 'a' or 'b'?" for the names in `names` (array of strings, or the member
 * names of an object) close to `typed`; false when none is close. */
static bool suggest(const cJSON *names, const char *typed, char *h, size_t cap) {
    const char  *best[3] = {NULL, NULL, NULL};
    size_t       dist[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    const cJSON *e;
    cJSON_ArrayForEach(e, names) {
        const char *n = cJSON_IsObject(names) ? e->string : cJSON_GetStringValue(e);
        size_t      d = n ? closeness(typed, n) : SIZE_MAX;
        for (size_t k = 0; k < 3 && d != SIZE_MAX; k++) {
            if (d < dist[k]) { /* insert, shifting worse ones down */
                for (size_t j = 2; j > k; j--) {
                    best[j] = best[j - 1];
                    dist[j] = dist[j - 1];
                }
                best[k] = n;
                dist[k] = d;
                break;
            }
        }
    }
    if (!best[0]) return false;
    hint_cat(h, cap, "did you mean '%s'", best[0]);
    for (size_t k = 1; k < 3 && best[k]; k++) {
        hint_cat(h, cap, "%s'%s'", (k == 2 || !best[2]) ? " or " : ", ", best[k]);
    }
    hint_cat(h, cap, "?");
    return true;
}

/* Appends "prefix a, b, c" listing names (strings of an array / member names of an object),
 * cut with "..." when the hint is full. */
static void list_names(const cJSON *names, const char *prefix, char *h, size_t cap) {
    hint_cat(h, cap, "%s", prefix);
    const cJSON *e;
    bool         first = true;
    cJSON_ArrayForEach(e, names) {
        char        b[64];
        const char *n = cJSON_IsObject(names) ? e->string : NULL;
        if (!n) n = cJSON_IsString(e) ? e->valuestring : value_text(e, b, sizeof b);
        if (strlen(h) + strlen(n) + 8 >= cap) {
            hint_cat(h, cap, ", ...");
            return;
        }
        hint_cat(h, cap, "%s%s", first ? "" : ", ", n);
        first = false;
    }
}

/* ---------------------------------------------------------------------------------- */
/* Keyword checks                                                                      */
/* ---------------------------------------------------------------------------------- */

static bool validate(vctx *c, const cJSON *s, const cJSON *x);

static bool type_is(const char *t, const cJSON *x, bool *known) {
    *known = true;
    if (strcmp(t, "string") == 0) return cJSON_IsString(x);
    if (strcmp(t, "object") == 0) return cJSON_IsObject(x);
    if (strcmp(t, "array") == 0) return cJSON_IsArray(x);
    if (strcmp(t, "boolean") == 0) return cJSON_IsBool(x);
    if (strcmp(t, "null") == 0) return cJSON_IsNull(x);
    bool num = cJSON_IsNumber(x) && isfinite(x->valuedouble);
    if (strcmp(t, "number") == 0) return num;
    if (strcmp(t, "integer") == 0) return num && floor(x->valuedouble) == x->valuedouble;
    *known = false;
    return false;
}

static const char *type_article(const char *t) {
    if (strcmp(t, "integer") == 0 || strcmp(t, "object") == 0 || strcmp(t, "array") == 0) {
        return "an ";
    }
    if (strcmp(t, "null") == 0) return "";
    return "a ";
}

static bool fail_type(vctx *c, const cJSON *s, const cJSON *ty, const cJSON *x) {
    char got[96], want[128] = "", v[80];
    if (cJSON_IsString(ty)) {
        (void)snprintf(want, sizeof want, "%s%s", type_article(ty->valuestring), ty->valuestring);
    } else {
        list_names(ty, "one of ", want, sizeof want);
    }
    bool frac = cJSON_IsNumber(x) && isfinite(x->valuedouble) && type_has(s, "integer");
    if (cJSON_IsString(x)) {
        (void)snprintf(got, sizeof got, "a string (%s)", value_text(x, v, sizeof v));
    } else {
        (void)snprintf(got, sizeof got, "%s", value_text(x, v, sizeof v));
    }
    fail(c, "type", "expected %s, got %s", want, got);
    if (frac) return hint(c, "use a whole number (no fractional part)");
    if (cJSON_IsNumber(x) && !isfinite(x->valuedouble)) return hint(c, "use a finite number");
    bool numeric = type_has(s, "integer") || type_has(s, "number");
    if (cJSON_IsString(x) && numeric) {
        char  *end = NULL;
        double d   = strtod(x->valuestring, &end);
        if (end != x->valuestring && *end == '\0' && isfinite(d)) {
            return hint(c, "send the number without quotes: %s", x->valuestring);
        }
    }
    if (numeric && !type_has(s, "string")) {
        range_text(s, c->v->hint, sizeof c->v->hint);
        return false;
    }
    return hint(c, "use %s", want);
}

static bool check_type(vctx *c, const cJSON *s, const cJSON *x) {
    const cJSON *ty = kw(s, "type");
    if (!ty) return true;
    bool known = true;
    if (cJSON_IsString(ty)) {
        if (type_is(ty->valuestring, x, &known)) return true;
        return known ? fail_type(c, s, ty, x) : schema_error(c, "type", "unknown type name");
    }
    if (!cJSON_IsArray(ty)) return schema_error(c, "type", "type is not a string or array");
    const cJSON *e;
    cJSON_ArrayForEach(e, ty) {
        if (!cJSON_IsString(e)) return schema_error(c, "type", "type array holds a non-string");
        if (type_is(e->valuestring, x, &known)) return true;
        if (!known) return schema_error(c, "type", "unknown type name");
    }
    return fail_type(c, s, ty, x);
}

static bool check_enum(vctx *c, const cJSON *s, const cJSON *x) {
    const cJSON *en = kw(s, "enum");
    char         got[96];
    if (en) {
        if (!cJSON_IsArray(en)) return schema_error(c, "enum", "enum is not an array");
        const cJSON *e;
        cJSON_ArrayForEach(e, en) {
            if (cJSON_Compare(e, x, true)) return true;
        }
        int n = cJSON_GetArraySize(en);
        fail(c, "enum", "%s is not %s", value_text(x, got, sizeof got),
             n == 1 ? "the allowed value" : "one of the allowed values");
        char *h = c->v->hint;
        if (cJSON_IsString(x) && suggest(en, x->valuestring, h, sizeof c->v->hint)) {
            hint_cat(h, sizeof c->v->hint, " ");
        }
        list_names(en, n == 1 ? "use " : "use one of: ", h, sizeof c->v->hint);
        return false;
    }
    const cJSON *k = kw(s, "const");
    if (k && !cJSON_Compare(k, x, true)) {
        char want[96];
        fail(c, "const", "%s is not the allowed value", value_text(x, got, sizeof got));
        return hint(c, "use %s", value_text(k, want, sizeof want));
    }
    return true;
}

/* x / m is whole, within a relative 1e-9 for fractional divisors. */
static bool is_multiple(double x, double m) {
    if (floor(m) == m && floor(x) == x && fabs(x) < 9e15 && m < 9e15) return fmod(x, m) == 0;
    double q = x / m;
    if (!isfinite(q)) return false;
    return fabs(q - nearbyint(q)) <= 1e-9 * IMGD_MAX(1.0, fabs(q));
}

static bool check_number(vctx *c, const cJSON *s, const cJSON *x) {
    double d = x->valuedouble, lim;
    char   a[40], b[40];
    if (kw_num(s, "minimum", &lim) && d < lim) {
        return fail_range(c, s, "minimum", "%s is below the minimum %s", fmt_num(d, a),
                          fmt_num(lim, b));
    }
    if (kw_num(s, "exclusiveMinimum", &lim) && d <= lim) {
        return fail_range(c, s, "exclusiveMinimum", "%s is not greater than %s", fmt_num(d, a),
                          fmt_num(lim, b));
    }
    if (kw_num(s, "maximum", &lim) && d > lim) {
        return fail_range(c, s, "maximum", "%s is above the maximum %s", fmt_num(d, a),
                          fmt_num(lim, b));
    }
    if (kw_num(s, "exclusiveMaximum", &lim) && d >= lim) {
        return fail_range(c, s, "exclusiveMaximum", "%s is not below %s", fmt_num(d, a),
                          fmt_num(lim, b));
    }
    if (kw_num(s, "multipleOf", &lim)) {
        if (!(lim > 0) || !isfinite(lim)) {
            return schema_error(c, "multipleOf", "multipleOf is not a positive number");
        }
        if (!is_multiple(d, lim)) {
            double lo = floor(d / lim) * lim, hi = lo + lim;
            char   l[40], u[40];
            fail_range(c, s, "multipleOf", "%s is not a multiple of %s", fmt_num(d, a),
                       fmt_num(lim, b));
            hint_cat(c->v->hint, sizeof c->v->hint, " (nearest: %s or %s)", fmt_num(lo, l),
                     fmt_num(hi, u));
            return false;
        }
    }
    return true;
}

static size_t code_points(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static bool check_format(vctx *c, const cJSON *s, const cJSON *x) {
    const cJSON *f = kw(s, "format");
    if (!cJSON_IsString(f) || strcmp(f->valuestring, "byte") != 0) return true;
    if (imgd_base64_check_data_url(x->valuestring, strlen(x->valuestring), NULL) == IMGD_OK) {
        return true;
    }
    fail(c, "format", "%s", imgd_last_error());
    return hint(c, "send the bytes as standard base64 (RFC 4648: A-Z a-z 0-9 + /, '=' padding, "
                   "no line breaks), optionally as a data: URL (data:image/png;base64,...)");
}

static bool check_string(vctx *c, const cJSON *s, const cJSON *x) {
    const char *str = x->valuestring;
    size_t      len = strlen(str);
    if (!imgd_utf8_valid(str, len)) {
        fail(c, "type", "the string is not valid UTF-8");
        return hint(c, "send text as UTF-8");
    }
    double lim;
    size_t n = (kw(s, "minLength") || kw(s, "maxLength")) ? code_points(str) : 0;
    if (kw_num(s, "minLength", &lim) && (double)n < lim) {
        fail(c, "minLength", "%zu characters, fewer than the minimum %.0f", n, lim);
        return hint(c, "use at least %.0f characters", lim);
    }
    if (kw_num(s, "maxLength", &lim) && (double)n > lim) {
        fail(c, "maxLength", "%zu characters, more than the maximum %.0f", n, lim);
        return hint(c, "use at most %.0f characters (Unicode code points)", lim);
    }
    return check_format(c, s, x);
}

/* ---- objects ---------------------------------------------------------------------- */

static bool fail_unknown(vctx *c, const cJSON *props, const char *name) {
    char p[64];
    fail(c, "additionalProperties", "unknown field '%s'", preview(name, p, sizeof p));
    char *h = c->v->hint;
    if (props && suggest(props, name, h, sizeof c->v->hint)) return false;
    if (!props || !props->child) return hint(c, "remove it: this object takes no fields");
    list_names(props, "remove it; allowed fields: ", h, sizeof c->v->hint);
    return false;
}

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX by validate/fill. */
static bool check_member(vctx *c, const cJSON *s, const cJSON *props, const cJSON *x,
                         const cJSON *m) {
    if (!imgd_utf8_valid(m->string, strlen(m->string))) {
        fail(c, "propertyNames", "a field name is not valid UTF-8");
        return hint(c, "send field names as UTF-8");
    }
    const cJSON *ps = props ? kw(props, m->string) : NULL;
    if (ps && kw(x, m->string) != m) {
        char p[64];
        fail(c, "duplicate", "field '%s' appears more than once", preview(m->string, p, sizeof p));
        return hint(c, "send each field once");
    }
    const cJSON *addl = kw(s, "additionalProperties");
    ptr_mark     mk   = ptr_push(c, m->string);
    bool         ok   = true;
    if (ps) {
        ok = validate(c, ps, m);
    } else if (cJSON_IsFalse(addl)) {
        ok = fail_unknown(c, props, m->string);
    } else if (addl) {
        ok = validate(c, addl, m);
    }
    ptr_pop(c, mk);
    return ok;
}

static bool check_required(vctx *c, const cJSON *s, const cJSON *x) {
    const cJSON *req = kw(s, "required"), *r;
    if (req && !cJSON_IsArray(req)) return schema_error(c, "required", "required is not an array");
    cJSON_ArrayForEach(r, req) {
        if (!cJSON_IsString(r)) return schema_error(c, "required", "required holds a non-string");
        if (kw(x, r->valuestring)) continue;
        ptr_mark     mk   = ptr_push(c, r->valuestring);
        const cJSON *ps   = kw(kw(s, "properties"), r->valuestring);
        const cJSON *desc = kw(ps, "description");
        fail(c, "required", "required field is missing");
        hint(c, "add \"%s\"%s%s", r->valuestring, cJSON_IsString(desc) ? ": " : "",
             cJSON_IsString(desc) ? desc->valuestring : "");
        ptr_pop(c, mk);
        return false;
    }
    return true;
}

static bool check_dependent(vctx *c, const cJSON *s, const cJSON *x) {
    const cJSON *dep = kw(s, "dependentRequired"), *d, *r;
    if (!cJSON_IsObject(dep)) dep = NULL;
    cJSON_ArrayForEach(d, dep) {
        if (!kw(x, d->string)) continue;
        cJSON_ArrayForEach(r, d) {
            if (!cJSON_IsString(r) || kw(x, r->valuestring)) continue;
            ptr_mark mk = ptr_push(c, r->valuestring);
            fail(c, "dependentRequired", "required when \"%s\" is given", d->string);
            hint(c, "add \"%s\", or remove \"%s\"", r->valuestring, d->string);
            ptr_pop(c, mk);
            return false;
        }
    }
    return true;
}

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX by validate/fill. */
static bool check_object(vctx *c, const cJSON *s, const cJSON *x) {
    const cJSON *props = kw(s, "properties");
    if (props && !cJSON_IsObject(props)) {
        return schema_error(c, "properties", "properties is not an object");
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, x) {
        if (!check_member(c, s, props, x, m)) return false;
    }
    if (!check_required(c, s, x) || !check_dependent(c, s, x)) return false;
    double n = cJSON_GetArraySize(x), lim;
    if (kw_num(s, "minProperties", &lim) && n < lim) {
        fail(c, "minProperties", "%.0f fields, fewer than the minimum %.0f", n, lim);
        return hint(c, "add fields");
    }
    if (kw_num(s, "maxProperties", &lim) && n > lim) {
        fail(c, "maxProperties", "%.0f fields, more than the maximum %.0f", n, lim);
        return hint(c, "send at most %.0f fields", lim);
    }
    return true;
}

/* ---- arrays ----------------------------------------------------------------------- */

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX by validate/fill. */
static bool check_array(vctx *c, const cJSON *s, const cJSON *x) {
    double n = cJSON_GetArraySize(x), lim;
    if (kw_num(s, "minItems", &lim) && n < lim) {
        fail(c, "minItems", "%.0f items, fewer than the minimum %.0f", n, lim);
        return hint(c, "send at least %.0f items", lim);
    }
    if (kw_num(s, "maxItems", &lim) && n > lim) {
        fail(c, "maxItems", "%.0f items, more than the maximum %.0f", n, lim);
        return hint(c, "send at most %.0f items", lim);
    }
    const cJSON *items = kw(s, "items"), *e;
    if (!items) return true;
    size_t i = 0;
    cJSON_ArrayForEach(e, x) {
        ptr_mark mk = ptr_push_index(c, i++);
        bool     ok = validate(c, items, e);
        ptr_pop(c, mk);
        if (!ok) return false;
    }
    return true;
}

/* ---- combinators ------------------------------------------------------------------ */

/* Runs sub against x in a scratch context (so a failed alternative leaves *c->v alone).
 * NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX by validate. */
static bool try_sub(const vctx *c, const cJSON *sub, const cJSON *x, imgd_schema_violation *out) {
    vctx t = *c;
    t.v    = out;
    return validate(&t, sub, x);
}

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX by validate. */
static bool check_alternatives(vctx *c, const cJSON *s, const cJSON *x, const char *name) {
    const cJSON *alts = kw(s, name), *a;
    if (!alts) return true;
    if (!cJSON_IsArray(alts) || !alts->child) return schema_error(c, name, "not a non-empty array");
    bool                  one     = strcmp(name, "oneOf") == 0;
    int                   matched = -1, i = 0, n = cJSON_GetArraySize(alts);
    imgd_schema_violation best, cur;
    best.pointer[0] = '\0';
    best.detail[0]  = '\0';
    cJSON_ArrayForEach(a, alts) {
        if (try_sub(c, a, x, &cur)) {
            if (!one) return true;
            if (matched >= 0) {
                fail(c, name, "matches more than one of the %d alternatives (#%d and #%d)", n,
                     matched, i);
                return hint(c, "make the value match exactly one form");
            }
            matched = i;
        } else if (strlen(cur.pointer) > strlen(best.pointer) || !best.detail[0]) {
            best = cur;
        }
        i++;
    }
    if (matched >= 0) return true;
    if (strlen(best.pointer) > c->ptr_len) { /* the closest form failed deeper: be specific */
        *c->v = best;
        return false;
    }
    fail(c, name, "matches none of the %d allowed forms", n);
    return hint(c, "closest: %s", best.detail);
}

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX by validate. */
static bool check_combinators(vctx *c, const cJSON *s, const cJSON *x) {
    const cJSON *all = kw(s, "allOf"), *a;
    if (!cJSON_IsArray(all)) all = NULL;
    cJSON_ArrayForEach(a, all) {
        if (!validate(c, a, x)) return false;
    }
    if (!check_alternatives(c, s, x, "anyOf") || !check_alternatives(c, s, x, "oneOf")) {
        return false;
    }
    const cJSON *not = kw(s, "not");
    if (not ) {
        imgd_schema_violation scratch;
        if (try_sub(c, not, x, &scratch)) {
            fail(c, "not", "matches a form that is not allowed here");
            return hint(c, "change the value");
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------------- */
/* The walk                                                                            */
/* ---------------------------------------------------------------------------------- */

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX by validate. */
static bool validate_body(vctx *c, const cJSON *s, const cJSON *x) {
    if (cJSON_IsTrue(s)) return true;
    if (cJSON_IsFalse(s)) {
        fail(c, "false", "no value is allowed here");
        return hint(c, "remove it");
    }
    if (!cJSON_IsObject(s)) return schema_error(c, "type", "a schema is not an object or boolean");
    const cJSON *ref = kw(s, "$ref");
    if (ref) {
        const cJSON *t = cJSON_IsString(ref) ? resolve_ref(c->root, ref->valuestring) : NULL;
        if (!t) return schema_error(c, "$ref", "unresolvable $ref");
        if (!validate(c, t, x)) return false;
    }
    if (!check_type(c, s, x) || !check_enum(c, s, x)) return false;
    bool ok = true;
    if (cJSON_IsNumber(x)) {
        ok = check_number(c, s, x);
    } else if (cJSON_IsString(x)) {
        ok = check_string(c, s, x);
    } else if (cJSON_IsObject(x)) {
        ok = check_object(c, s, x);
    } else if (cJSON_IsArray(x)) {
        ok = check_array(c, s, x);
    }
    return ok && check_combinators(c, s, x);
}

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX here. */
static bool validate(vctx *c, const cJSON *s, const cJSON *x) {
    if (c->depth >= IMGD_SCHEMA_DEPTH_MAX) {
        fail(c, "depth", "nested deeper than %d levels", IMGD_SCHEMA_DEPTH_MAX);
        return hint(c, "flatten the request");
    }
    c->depth++;
    bool ok = validate_body(c, s, x);
    c->depth--;
    return ok;
}

/* Makes s valid UTF-8 in place: a sequence cut by a full message buffer is dropped, any
 * other invalid byte (a hostile schema's names) becomes '?'. */
static void utf8_repair(char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char ch  = (unsigned char)s[i];
        size_t        len = ch < 0x80 ? 1 : ch >= 0xF0 ? 4 : ch >= 0xE0 ? 3 : ch >= 0xC0 ? 2 : 1;
        if (len > n - i && ch >= 0xC2 && ch <= 0xF4) { /* cut at the end of the buffer? */
            size_t k = i + 1;
            while (k < n && ((unsigned char)s[k] & 0xC0) == 0x80) k++;
            if (k == n) {
                s[i] = '\0';
                return;
            }
        }
        if (len > n - i) len = 1;
        if (!imgd_utf8_valid(s + i, len)) {
            s[i] = '?';
            len  = 1;
        }
        i += len;
    }
}

bool imgd_schema_validate(const cJSON *schema, const cJSON *instance, imgd_schema_violation *v) {
    imgd_schema_violation scratch;
    vctx                  c = {.root = schema, .v = v ? v : &scratch};
    memset(c.v, 0, sizeof *c.v);
    if (!schema || !instance) {
        fail(&c, "type", "no %s to validate", schema ? "request" : "schema");
        return hint(&c, "send a JSON body");
    }
    if (validate(&c, schema, instance)) {
        memset(c.v, 0, sizeof *c.v);
        return true;
    }
    utf8_repair(c.v->pointer);
    utf8_repair(c.v->detail);
    utf8_repair(c.v->hint);
    return false;
}

/* ---------------------------------------------------------------------------------- */
/* Defaults                                                                            */
/* ---------------------------------------------------------------------------------- */

static imgd_status fill(const cJSON *root, const cJSON *s, cJSON *x, int depth);

/* The schema after following $ref hops (at most the depth cap), or NULL. */
static const cJSON *deref(const cJSON *root, const cJSON *s) {
    for (int i = 0; i < IMGD_SCHEMA_DEPTH_MAX && cJSON_IsObject(s); i++) {
        const cJSON *ref = kw(s, "$ref");
        if (!cJSON_IsString(ref) || kw(s, "properties") || kw(s, "default")) return s;
        s = resolve_ref(root, ref->valuestring);
    }
    return cJSON_IsObject(s) ? s : NULL;
}

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX by validate/fill. */
static imgd_status fill_member(const cJSON *root, const cJSON *ps, cJSON *x, const char *name,
                               int depth) {
    cJSON *item = cJSON_GetObjectItemCaseSensitive(x, name);
    if (item) return fill(root, ps, item, depth + 1);
    const cJSON *def = kw(deref(root, ps), "default");
    if (!def) return IMGD_OK;
    cJSON *copy = cJSON_Duplicate(def, true);
    if (!copy || !cJSON_AddItemToObject(x, name, copy)) {
        cJSON_Delete(copy);
        return imgd_fail(IMGD_E_NOMEM, "schema defaults: out of memory adding '%s'", name);
    }
    return IMGD_OK;
}

/* NOLINTNEXTLINE(misc-no-recursion): depth capped at IMGD_SCHEMA_DEPTH_MAX. */
static imgd_status fill(const cJSON *root, const cJSON *s, cJSON *x, int depth) {
    if (depth >= IMGD_SCHEMA_DEPTH_MAX) {
        return imgd_fail(IMGD_E_TOO_LARGE, "schema defaults: nested deeper than %d levels",
                         IMGD_SCHEMA_DEPTH_MAX);
    }
    s = deref(root, s);
    if (!s) return IMGD_OK;
    const cJSON *ref = kw(s, "$ref"), *props = kw(s, "properties"), *p;
    imgd_status  st = IMGD_OK;
    if (cJSON_IsString(ref) && resolve_ref(root, ref->valuestring)) {
        st = fill(root, resolve_ref(root, ref->valuestring), x, depth + 1);
    }
    if (!cJSON_IsObject(props)) props = NULL;
    if (cJSON_IsObject(x)) {
        cJSON_ArrayForEach(p, props) {
            if (st == IMGD_OK) st = fill_member(root, p, x, p->string, depth);
        }
    }
    const cJSON *items = kw(s, "items");
    cJSON       *e;
    if (cJSON_IsArray(x) && items) {
        cJSON_ArrayForEach(e, x) {
            if (st == IMGD_OK) st = fill(root, items, e, depth + 1);
        }
    }
    return st;
}

imgd_status imgd_schema_apply_defaults(const cJSON *schema, cJSON *instance) {
    if (!schema || !instance) {
        return imgd_fail(IMGD_E_INVALID_ARG, "schema defaults: NULL schema or instance");
    }
    return fill(schema, schema, instance, 0);
}

/* ---------------------------------------------------------------------------------- */
/* The generation request schema                                                       */
/* ---------------------------------------------------------------------------------- */

#define PROMPT_MAX_CHARS 10000
#define CLIP_SKIP_MAX    12

/* A new property {type, description} in props; NULL on OOM. */
static cJSON *prop(cJSON *props, const char *name, const char *type, const char *desc) {
    cJSON *p = cJSON_AddObjectToObject(props, name);
    if (!p || !cJSON_AddStringToObject(p, "type", type) ||
        !cJSON_AddStringToObject(p, "description", desc)) {
        return NULL;
    }
    return p;
}

static bool num(cJSON *o, const char *k, double v) {
    return o && cJSON_AddNumberToObject(o, k, v) != NULL;
}

static bool str(cJSON *o, const char *k, const char *v) {
    return o && cJSON_AddStringToObject(o, k, v) != NULL;
}

static bool add_range(cJSON *p, double lo, double hi, double def) {
    return num(p, "minimum", lo) && num(p, "maximum", hi) && num(p, "default", def);
}

static bool add_strings(cJSON *o, const char *k, const char *const *v, size_t n) {
    cJSON *a = o ? cJSON_AddArrayToObject(o, k) : NULL;
    for (size_t i = 0; a && i < n; i++) {
        cJSON *s = cJSON_CreateString(v[i]);
        if (!s || !cJSON_AddItemToArray(a, s)) {
            cJSON_Delete(s);
            return false;
        }
    }
    return a != NULL;
}

/* enum + x-enum-descriptions of a name registry; default when `def` is a member. */
typedef const char *(*name_fn)(int k);

static const char *sampler_name(int k) {
    return imgd_sampler_kind_name((imgd_sampler_kind)k);
}
static const char *sampler_doc(int k) {
    return imgd_sampler_kind_doc((imgd_sampler_kind)k);
}
static const char *schedule_name(int k) {
    return imgd_schedule_kind_name((imgd_schedule_kind)k);
}
static const char *schedule_doc(int k) {
    return imgd_schedule_kind_doc((imgd_schedule_kind)k);
}

static bool add_registry(cJSON *p, name_fn name, name_fn doc, int count, const char *def) {
    cJSON *en   = p ? cJSON_AddArrayToObject(p, "enum") : NULL;
    cJSON *docs = p ? cJSON_AddObjectToObject(p, "x-enum-descriptions") : NULL;
    bool   ok = en && docs, has_def = false;
    for (int k = 1; ok && k < count; k++) {
        const char *n = name(k), *d = doc(k);
        if (!n) continue;
        cJSON *s = cJSON_CreateString(n);
        ok       = s && cJSON_AddItemToArray(en, s) && str(docs, n, d ? d : "");
        if (!ok) cJSON_Delete(s);
        has_def = has_def || (def && strcmp(def, n) == 0);
    }
    return ok && (!has_def || str(p, "default", def));
}

static bool add_text(cJSON *props, const imgd_schema_caps *caps) {
    char   d[1024];
    cJSON *p;
    (void)snprintf(d, sizeof d,
                   "Model id; may be omitted when only one model is loaded. This "
                   "schema is for \"%s\".",
                   caps->model_id);
    p = prop(props, "model", "string", d);
    if (!p || !add_strings(p, "enum", &caps->model_id, 1) || !str(p, "default", caps->model_id)) {
        return false;
    }
    (void)snprintf(d, sizeof d,
                   "What to draw, in A1111 prompt syntax: (word:1.3) and (word) for emphasis, "
                   "[word] to weaken, BREAK to start a new 75-token chunk, \\( for a literal "
                   "parenthesis. At most %d characters.%s",
                   PROMPT_MAX_CHARS,
                   caps->n_embeddings ? " Textual-inversion embeddings listed in "
                                        "x-imgd-embeddings may be used by name."
                                      : "");
    p = prop(props, "prompt", "string", d);
    if (!num(p, "maxLength", PROMPT_MAX_CHARS)) return false;
    if (!caps->negative_prompt) return true;
    p = prop(props, "negative_prompt", "string",
             "What to steer away from (classifier-free guidance's unconditional prompt), same "
             "syntax as prompt. Present because this model supports negative prompts.");
    return num(p, "maxLength", PROMPT_MAX_CHARS) && str(p, "default", "");
}

/* FLUX.1: what its pipeline takes instead of the SD sampler, schedule, CFG and clip skip. */
static bool add_flow(cJSON *props, const imgd_schema_caps *caps) {
    char                     d[512];
    static const char *const smp[] = {"euler"};
    static const char *const sch[] = {"default", "simple"};
    cJSON                   *p     = prop(props, "sampler", "string",
                                          "Sampling method: FLUX runs the flow-matching Euler sampler only.");
    if (!add_strings(p, "enum", smp, 1) || !str(p, "default", "euler")) return false;
    p = prop(props, "schedule", "string",
             "Noise schedule: FLUX's shifted flow-matching sigmas (default and simple are the "
             "same).");
    if (!add_strings(p, "enum", sch, 2) || !str(p, "default", "default")) return false;
    (void)snprintf(d, sizeof d, "Denoising steps, 1 to %d.", (int)caps->steps_max);
    p = prop(props, "steps", "integer", d);
    if (!add_range(p, 1, caps->steps_max, caps->steps_default)) return false;
    p = prop(props, "cfg_scale", "number",
             "Ignored: FLUX.1 is guidance-distilled and runs no classifier-free guidance "
             "(accepted for compatibility).");
    if (!add_range(p, 0, caps->cfg_max, 1.0)) return false;
    (void)snprintf(d, sizeof d,
                   "T5 tokens the prompt is encoded to, 1 to 512 (longer prompts are cut); 0 = "
                   "%d, this model's default.",
                   (int)caps->seq_default);
    p = prop(props, "max_sequence_length", "integer", d);
    if (!add_range(p, 0, 512, 0)) return false;
    if (!caps->guidance) return true;
    p = prop(props, "guidance", "number",
             "Distilled guidance scale (FLUX.1-dev's guidance embedding): how strongly the image "
             "follows the prompt, 0 to 100. Present because this model has a guidance "
             "embedding.");
    return add_range(p, 0, 100, caps->guidance_default);
}

static bool add_sampling(cJSON *props, const imgd_schema_caps *caps) {
    char   d[512];
    cJSON *p = prop(props, "seed", "integer",
                    "Random seed, 0 to 4294967295; -1 picks a random seed (the response "
                    "reports the one used). Image i of a batch uses seed + i.");
    if (!add_range(p, -1, 4294967295.0, -1)) return false;
    p                               = prop(props, "rng", "string",
                                           "Noise generator: cpu reproduces torch's CPU generator (A1111, diffusers on "
                                                                         "CPU), philox reproduces torch's CUDA generator.");
    static const char *const rngs[] = {"cpu", "philox"};
    if (!add_strings(p, "enum", rngs, 2) || !str(p, "default", "cpu")) return false;
    if (caps->flow) return add_flow(props, caps);
    p = prop(props, "sampler", "string",
             "Sampling method (x-enum-descriptions describes each). pndm runs only with the "
             "diffusers schedules (default, leading, trailing, linspace).");
    if (!add_registry(p, sampler_name, sampler_doc, IMGD_SAMPLER_COUNT, caps->sampler_default)) {
        return false;
    }
    p = prop(props, "schedule", "string",
             "Noise schedule: default, leading, trailing and linspace run diffusers' "
             "scheduler for the sampler; the others are ComfyUI's schedules.");
    if (!add_registry(p, schedule_name, schedule_doc, IMGD_SCHEDULE_COUNT,
                      caps->schedule_default)) {
        return false;
    }
    (void)snprintf(d, sizeof d, "Denoising steps, 1 to %d.", (int)caps->steps_max);
    p = prop(props, "steps", "integer", d);
    if (!add_range(p, 1, caps->steps_max, caps->steps_default)) return false;
    p = prop(props, "cfg_scale", "number",
             "Classifier-free guidance scale: how strongly the image follows the prompt. "
             "1 or less turns guidance off (one model call per step).");
    if (!add_range(p, 0, caps->cfg_max, caps->cfg_default)) return false;
    p = prop(props, "clip_skip", "integer",
             "Text-encoder layer to stop at, A1111 numbering: 1 = last layer, 2 = penultimate.");
    return add_range(p, 1, CLIP_SKIP_MAX, 1);
}

static bool add_size(cJSON *props, const char *name, int32_t def, const imgd_schema_caps *caps) {
    char d[256];
    (void)snprintf(d, sizeof d,
                   "Image %s in pixels: a multiple of %d from %d to %d. Default %d, the size "
                   "the model was trained at.",
                   strcmp(name, "width") == 0 ? "width" : "height", (int)caps->size_multiple,
                   (int)caps->size_min, (int)caps->size_max, (int)def);
    cJSON *p = prop(props, name, "integer", d);
    return add_range(p, caps->size_min, caps->size_max, def) &&
           num(p, "multipleOf", caps->size_multiple);
}

/* SDXL's micro-conditioning: sizes and crop the UNet is told about (not the output size). */
static bool add_size_cond(cJSON *props, const imgd_schema_caps *caps) {
    static const struct {
        const char *name, *desc;
    } f[] = {
        {"original_width", "SDXL conditioning: the width the image claims to have been before "
                           "cropping/resizing; 0 = width. Larger values look less upscaled."},
        {"original_height", "SDXL conditioning: the original height; 0 = height."},
        {"crop_left", "SDXL conditioning: the left edge of the crop the image claims to be; 0 "
                      "= uncropped (centred subjects)."},
        {"crop_top", "SDXL conditioning: the top edge of the claimed crop; 0 = uncropped."},
        {"target_width", "SDXL conditioning: the target width; 0 = width."},
        {"target_height", "SDXL conditioning: the target height; 0 = height."},
    };
    for (size_t i = 0; caps->size_cond && i < IMGD_ARRAY_LEN(f); i++)
        if (!add_range(prop(props, f[i].name, "integer", f[i].desc), 0, 16384, 0)) return false;
    if (caps->n_refiners > 0) {
        cJSON *r = prop(props, "refiner", "string",
                        "SDXL base -> refiner hand-off: the model (a refiner, or any SDXL model) "
                        "that runs the last steps on the same latents, with its own text "
                        "encoder and the aesthetic scores. Omitted = no hand-off.");
        if (!add_strings(r, "enum", caps->refiners, caps->n_refiners)) return false;
        r = prop(props, "refiner_switch", "number",
                 "Fraction of the schedule the base runs before the refiner takes over "
                 "(diffusers' denoising_end); used with refiner.");
        if (!num(r, "exclusiveMinimum", 0) || !num(r, "exclusiveMaximum", 1) ||
            !num(r, "default", 0.8))
            return false;
    }
    if (!caps->aesthetic) return true;
    cJSON *p = prop(props, "aesthetic_score", "number",
                    "SDXL refiner conditioning: the aesthetic score the image should have "
                    "(LAION aesthetics scale, 0 to 10).");
    if (!add_range(p, 0, 10, 6.0)) return false;
    p = prop(props, "negative_aesthetic_score", "number",
             "SDXL refiner conditioning: the aesthetic score of the unconditional (negative) "
             "half of classifier-free guidance.");
    return add_range(p, 0, 10, 2.5);
}

static bool add_output(cJSON *props, const imgd_schema_caps *caps) {
    char d[256];
    (void)snprintf(d, sizeof d, "Images to generate in one request, 1 to %d.",
                   (int)caps->batch_max);
    cJSON *p = prop(props, "batch_size", "integer", d);
    if (!add_range(p, 1, caps->batch_max, 1)) return false;
    p                               = prop(props, "output_format", "string",
                                           "Encoding of the returned images; the generation parameters are embedded in each.");
    static const char *const fmts[] = {"png", "jpeg", "webp"};
    if (!add_strings(p, "enum", fmts, 3) || !str(p, "default", "png")) return false;
    p                              = prop(props, "response_format", "string",
                                          "How images come back: b64 (base64 in the response) or url (a link to "
                                                                       "GET /v1/jobs/{id}/images/{n}, kept as long as the job).");
    static const char *const rfs[] = {"b64", "url"};
    if (!add_strings(p, "enum", rfs, 2) || !str(p, "default", "b64")) return false;
    p = prop(props, "priority", "integer",
             "Queue priority, -10 (last) to 10 (first); equal priorities run in arrival order.");
    if (!add_range(p, -10, 10, 0)) return false;
    p = prop(props, "timeout_s", "number",
             "Give up when the job has not finished this many seconds after it was accepted "
             "(queue time included). Absent: the server's limit.");
    return num(p, "exclusiveMinimum", 0);
}

static cJSON *image_prop(cJSON *props, const char *name, const char *desc) {
    cJSON *p = prop(props, name, "string", desc);
    if (!str(p, "format", "byte") || !str(p, "contentEncoding", "base64")) return NULL;
    return p;
}

static bool add_images(cJSON *root, cJSON *props, const imgd_schema_caps *caps) {
    if (!caps->img2img && !caps->inpaint) return true;
    cJSON *p = image_prop(props, "init_image",
                          "Source image for img2img or inpainting (present because this model "
                          "supports img2img or inpainting): PNG, JPEG or WebP as standard "
                          "base64, optionally as a data: URL (data:image/png;base64,...). "
                          "Resized to width x height.");
    if (!p) return false;
    p = prop(props, "strength", "number",
             "img2img: how much of the schedule re-runs over init_image, above 0 to 1 "
             "(1 ignores the source). Present because this model supports img2img.");
    if (!num(p, "exclusiveMinimum", 0) || !num(p, "maximum", 1) || !num(p, "default", 0.75)) {
        return false;
    }
    if (!caps->inpaint) return true;
    p = image_prop(props, "mask_image",
                   "Inpainting mask, same encoding as init_image: white repaints, black keeps. "
                   "Requires init_image. Present because this model supports inpainting.");
    if (!p) return false;
    p = prop(props, "mask_blur", "integer",
             "Inpainting: blur radius in pixels applied to the mask edge, 0 to 64.");
    if (!add_range(p, 0, 64, 4)) return false;
    cJSON                   *dep     = cJSON_AddObjectToObject(root, "dependentRequired");
    static const char *const needs[] = {"init_image"};
    return dep && add_strings(dep, "mask_image", needs, 1);
}

static bool add_loras(cJSON *root, cJSON *props, const imgd_schema_caps *caps) {
    if (caps->n_loras == 0) return true;
    cJSON *defs = cJSON_AddObjectToObject(root, "$defs");
    cJSON *lora = defs ? cJSON_AddObjectToObject(defs, "lora") : NULL;
    if (!str(lora, "type", "object") || !str(lora, "description", "One LoRA to apply.") ||
        !cJSON_AddFalseToObject(lora, "additionalProperties")) {
        return false;
    }
    static const char *const req[] = {"name"};
    cJSON                   *lp    = cJSON_AddObjectToObject(lora, "properties");
    if (!lp || !add_strings(lora, "required", req, 1)) return false;
    cJSON *p = prop(lp, "name", "string", "LoRA name, one of those available for this model.");
    if (!add_strings(p, "enum", caps->loras, caps->n_loras)) return false;
    p = prop(lp, "weight", "number", "Strength of the LoRA, -10 to 10 (1 = as trained).");
    if (!add_range(p, -10, 10, 1)) return false;
    p            = prop(props, "loras", "array",
                        "LoRAs to apply (present because LoRAs for this model's base are available). "
                                   "<lora:name:weight> in the prompt works too.");
    cJSON *items = p ? cJSON_AddObjectToObject(p, "items") : NULL;
    return str(items, "$ref", "#/$defs/lora") &&
           num(p, "maxItems", (double)IMGD_MIN(caps->n_loras, (size_t)16));
}

/* "hypernets": A1111 hypernetworks for this model (their ids in $defs/hypernet's enum). */
static bool add_hypernets(cJSON *root, cJSON *props, const imgd_schema_caps *caps) {
    if (caps->n_hypernets == 0) return true;
    cJSON *defs = cJSON_GetObjectItemCaseSensitive(root, "$defs");
    if (!defs) defs = cJSON_AddObjectToObject(root, "$defs");
    cJSON *h = defs ? cJSON_AddObjectToObject(defs, "hypernet") : NULL;
    if (!str(h, "type", "object") ||
        !str(h, "description", "One A1111 hypernetwork to apply to the UNet's attentions.") ||
        !cJSON_AddFalseToObject(h, "additionalProperties")) {
        return false;
    }
    static const char *const req[] = {"name"};
    cJSON                   *hp    = cJSON_AddObjectToObject(h, "properties");
    if (!hp || !add_strings(h, "required", req, 1)) return false;
    cJSON *p =
        prop(hp, "name", "string", "Hypernetwork id, one of those available for this model.");
    if (!add_strings(p, "enum", caps->hypernets, caps->n_hypernets)) return false;
    p = prop(hp, "weight", "number",
             "Multiplier (A1111's strength), -10 to 10: to_k / to_v read context + "
             "mlp(context) x weight.");
    if (!add_range(p, -10, 10, 1)) return false;
    p            = prop(props, "hypernets", "array",
                        "A1111 hypernetworks, applied in order (present because hypernetworks are "
                                   "available). <hypernet:name:weight> in the prompt works too.");
    cJSON *items = p ? cJSON_AddObjectToObject(p, "items") : NULL;
    return str(items, "$ref", "#/$defs/hypernet") &&
           num(p, "maxItems", (double)IMGD_MIN(caps->n_hypernets, (size_t)16));
}

/* "controls": ControlNets for this model's family (their ids in $defs/control's enum). */
static bool add_controls(cJSON *root, cJSON *props, const imgd_schema_caps *caps) {
    if (caps->n_controlnets == 0) return true;
    cJSON *defs = cJSON_GetObjectItemCaseSensitive(root, "$defs");
    if (!defs) defs = cJSON_AddObjectToObject(root, "$defs");
    cJSON *c = defs ? cJSON_AddObjectToObject(defs, "control") : NULL;
    if (!str(c, "type", "object") ||
        !str(c, "description", "One ControlNet guiding the generation with a control image.") ||
        !cJSON_AddFalseToObject(c, "additionalProperties")) {
        return false;
    }
    static const char *const req[] = {"model", "image"};
    cJSON                   *cp    = cJSON_AddObjectToObject(c, "properties");
    if (!cp || !add_strings(c, "required", req, 2)) return false;
    cJSON *p = prop(cp, "model", "string",
                    "ControlNet id, one of those available for this model's family.");
    if (!add_strings(p, "enum", caps->controlnets, caps->n_controlnets)) return false;
    if (!image_prop(cp, "image",
                    "Control image: PNG, JPEG or WebP as standard base64, optionally as a "
                    "data: URL. Any size; fitted to width x height per resize_mode.")) {
        return false;
    }
    p = prop(cp, "scale", "number", "Conditioning scale, 0 to 10 (1 = as trained).");
    if (!add_range(p, 0, 10, 1)) return false;
    p = prop(cp, "start", "number", "Fraction of the steps where the ControlNet starts, 0 to 1.");
    if (!add_range(p, 0, 1, 0)) return false;
    p = prop(cp, "end", "number",
             "Fraction of the steps where it stops, 0 to 1; must be above start.");
    if (!add_range(p, 0, 1, 1)) return false;
    p = prop(cp, "preprocess", "string",
             "Built-in preprocessor run on the image first: none (the image is the control "
             "map), canny (edges, low_threshold / high_threshold), scribble (black strokes on "
             "white, threshold), lineart (white lines on black, threshold), invert.");
    const char *pre[IMGD_CONTROL_PRE_COUNT];
    for (int32_t i = 0; i < IMGD_CONTROL_PRE_COUNT; i++) pre[i] = imgd_control_pre_name(i);
    if (!add_strings(p, "enum", pre, IMGD_CONTROL_PRE_COUNT) || !str(p, "default", "none"))
        return false;
    p = prop(cp, "low_threshold", "number", "canny: lower hysteresis threshold, 0 to 2040.");
    if (!add_range(p, 0, 2040, 100)) return false;
    p = prop(cp, "high_threshold", "number", "canny: upper hysteresis threshold, 0 to 2040.");
    if (!add_range(p, 0, 2040, 200)) return false;
    p = prop(cp, "threshold", "number", "scribble / lineart: binarisation threshold, 0 to 255.");
    if (!add_range(p, 0, 255, 127)) return false;
    p = prop(cp, "resize_mode", "string",
             "How an image of another aspect ratio meets width x height: just (stretch), crop "
             "(scale to cover, centre crop) or fill (scale to fit, pad with the border colour).");
    const char *rm[IMGD_CONTROL_RESIZE_COUNT];
    for (int32_t i = 0; i < IMGD_CONTROL_RESIZE_COUNT; i++) rm[i] = imgd_control_resize_name(i);
    if (!add_strings(p, "enum", rm, IMGD_CONTROL_RESIZE_COUNT) || !str(p, "default", "just"))
        return false;
    p = prop(cp, "guess_mode", "boolean",
             "diffusers' guess mode: the ControlNet acts on the conditional half only, its "
             "residuals scaled from 0.1 (shallow) to 1 (deep).");
    if (!p || !cJSON_AddFalseToObject(p, "default")) return false;
    p            = prop(props, "controls", "array",
                        "ControlNets to apply (present because ControlNets for this model's family are "
                                   "available); their residuals add up.");
    cJSON *items = p ? cJSON_AddObjectToObject(p, "items") : NULL;
    return str(items, "$ref", "#/$defs/control") && num(p, "maxItems", IMGD_CONTROL_MAX);
}

static bool add_caps_note(cJSON *root, const imgd_schema_caps *caps) {
    cJSON *c = cJSON_AddObjectToObject(root, "x-imgd-capabilities");
    return c && str(c, "family", caps->family ? caps->family : "unknown") &&
           cJSON_AddBoolToObject(c, "img2img", caps->img2img) &&
           cJSON_AddBoolToObject(c, "inpaint", caps->inpaint) &&
           cJSON_AddBoolToObject(c, "negative_prompt", caps->negative_prompt) &&
           num(c, "loras", (double)caps->n_loras) &&
           num(c, "controlnets", (double)caps->n_controlnets) &&
           add_strings(root, "x-imgd-embeddings", caps->embeddings, caps->n_embeddings);
}

/* "$id": urn:imgd:generate:<id> with everything but RFC 3986 unreserved characters
 * percent-encoded. */
static bool add_header(cJSON *root, const imgd_schema_caps *caps) {
    imgd_buf b;
    imgd_buf_init(&b, 1u << 16);
    bool ok = imgd_buf_puts(&b, "urn:imgd:generate:") == IMGD_OK;
    for (const char *p = caps->model_id; ok && *p; p++) {
        unsigned char ch    = (unsigned char)*p;
        bool          unres = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                     (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        ok = (unres ? imgd_buf_append(&b, p, 1) : imgd_buf_printf(&b, "%%%02X", ch)) == IMGD_OK;
    }
    char title[512], desc[512], fam[64];
    (void)snprintf(title, sizeof title, "imgd generate request for %s", caps->model_id);
    (void)snprintf(fam, sizeof fam, "%s", caps->family ? caps->family : "unknown");
    (void)snprintf(desc, sizeof desc,
                   "Body of POST /v1/generate and POST /v1/jobs for this model (family %s). "
                   "Fields depend on what the model supports: img2img %s, inpainting %s, "
                   "negative prompt %s, %zu LoRA(s).",
                   fam, caps->img2img ? "yes" : "no", caps->inpaint ? "yes" : "no",
                   caps->negative_prompt ? "yes" : "no", caps->n_loras);
    ok = ok && str(root, "$schema", IMGD_SCHEMA_DIALECT) && str(root, "$id", b.data) &&
         str(root, "title", title) && str(root, "description", desc) &&
         str(root, "type", "object") && cJSON_AddFalseToObject(root, "additionalProperties");
    imgd_buf_free(&b);
    static const char *const req[] = {"prompt"};
    return ok && add_strings(root, "required", req, 1);
}

cJSON *imgd_schema_for_generate(const imgd_schema_caps *caps) {
    if (!caps || !caps->model_id) return NULL;
    cJSON *root  = cJSON_CreateObject();
    cJSON *props = NULL;
    bool   ok    = root && add_header(root, caps);
    ok           = ok && (props = cJSON_AddObjectToObject(root, "properties")) != NULL;
    ok           = ok && add_text(props, caps) && add_sampling(props, caps) &&
         add_size(props, "width", caps->width_default, caps) &&
         add_size(props, "height", caps->height_default, caps) && add_size_cond(props, caps) &&
         add_output(props, caps) && add_images(root, props, caps) && add_loras(root, props, caps) &&
         add_hypernets(root, props, caps) && add_controls(root, props, caps) &&
         add_caps_note(root, caps);
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}
