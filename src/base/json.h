/* JSON parsing through cJSON with explicit size and depth caps. */
#ifndef IMGD_BASE_JSON_H
#define IMGD_BASE_JSON_H

#include <cjson/cJSON.h>

#include "base/base.h"

/* Parses exactly text[0..len) (trailing whitespace allowed) as JSON. Fails with
 * IMGD_E_FORMAT naming `what` and the byte offset of the error; IMGD_E_TOO_LARGE when
 * len > size_max or nesting exceeds depth_max. Free the result with cJSON_Delete. */
imgd_status imgd_json_parse(const char *what, const char *text, size_t len, size_t size_max,
                            int depth_max, cJSON **out);

#endif
