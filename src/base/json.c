#include "base/json.h"

#include <string.h>

#include "base/alloc.h"
#include "base/error.h"

/* cJSON keeps its allocator in process-wide state shared with every other user of the
 * shared library in the process (the application included). Installing imgd's allocator
 * there would make an application's cJSON_Delete free with the wrong allocator, so imgd
 * leaves cJSON's hooks alone; JSON documents are size-capped before parsing instead. */

/* Depth check before handing the text to cJSON (whose own limit is a compile-time 1000),
 * skipping string contents. Also finds escaped NULs (\u0000), which cJSON would accept
 * and silently truncate the C string at: -1 means such an escape was found. */
static int depth_ok(const char *s, size_t len, int depth_max) {
    int  depth  = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') {
                if (len - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0) return -1;
                i++;
            } else if (c == '"') {
                in_str = false;
            }
            continue;
        }
        if (c == '"')
            in_str = true;
        else if (c == '{' || c == '[') {
            if (++depth > depth_max) return 0;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 1;
}

imgd_status imgd_json_parse(const char *what, const char *text, size_t len, size_t size_max,
                            int depth_max, cJSON **out) {
    if (len > size_max)
        return imgd_fail(IMGD_E_TOO_LARGE, "%s: JSON of %zu bytes exceeds the cap of %zu", what,
                         len, size_max);
    int scan = depth_ok(text, len, depth_max);
    if (scan == 0)
        return imgd_fail(IMGD_E_TOO_LARGE, "%s: JSON nesting deeper than %d levels", what,
                         depth_max);
    if (scan < 0)
        return imgd_fail(IMGD_E_FORMAT, "%s: a JSON string contains an escaped NUL (\\u0000)",
                         what);
    if (memchr(text, '\0', len))
        return imgd_fail(IMGD_E_FORMAT, "%s: JSON contains a NUL byte at offset %zu", what,
                         (size_t)((const char *)memchr(text, '\0', len) - text));
    const char *end = NULL;
    cJSON      *j   = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!j) {
        const char *ep  = cJSON_GetErrorPtr();
        size_t      off = (ep && ep >= text && ep <= text + len) ? (size_t)(ep - text) : 0;
        return imgd_fail(IMGD_E_FORMAT, "%s: invalid JSON near byte %zu", what, off);
    }
    for (const char *p = end; p && p < text + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(j);
            return imgd_fail(IMGD_E_FORMAT, "%s: trailing bytes after the JSON value at byte %zu",
                             what, (size_t)(p - text));
        }
    }
    *out = j;
    return IMGD_OK;
}
