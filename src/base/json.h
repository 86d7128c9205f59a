/* JSON parsing through cJSON with imgd's allocator and explicit caps. */
#ifndef IMGD_BASE_JSON_H
#define IMGD_BASE_JSON_H

#include <cjson/cJSON.h>

#include "base/base.h"

/* Parses exactly text[0..len) (trailing whitespace allowed) as JSON. Fails with
 * IMGD_E_FORMAT naming `what` and the byte offset of the error; IMGD_E_TOO_LARGE when
 * len > size_max or nesting exceeds depth_max. Free the result with cJSON_Delete. */
imgd_status imgd_json_parse(const char *what, const char *text, size_t len, size_t size_max,
                            int depth_max, cJSON **out);

/* Installs imgd's allocator into cJSON (idempotent, thread-safe). */
void imgd_json_init(void);

#endif
