/* libFuzzer target: request validation. The first byte picks the model capabilities the
 * generate schema is built from (img2img, inpaint, negative prompt, LoRAs) and a mode; the
 * rest is JSON text.
 *   mode 0: validate the text as a request against the generated schema; a violation must
 *           carry a keyword, a pointer that is "" or starts with '/', and UTF-8 text; a
 *           valid request must stay valid after imgd_schema_apply_defaults.
 *   mode 1: use the text as the schema (hostile keywords, $ref cycles, bad types) and
 *           validate the generated schema document and the text itself against it.
 *           Schemas are trusted in the server (they are generated), so inputs whose
 *           combinators could multiply the work exponentially are skipped. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/json.h"
#include "base/text.h"
#include "service/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const g_loras[] = {"detail_tweaker", "film_grain", "a/b~c"};
static const char *const g_embs[]  = {"easynegative"};

static cJSON *make_schema(uint8_t sel) {
    imgd_schema_caps c = {
        .model_id         = (sel & 16) ? "sd15/v1-5.safetensors" : "m",
        .family           = "sd1",
        .size_min         = 64,
        .size_max         = 2048,
        .size_multiple    = (sel & 32) ? 64 : 8,
        .width_default    = 512,
        .height_default   = 512,
        .steps_default    = 20,
        .steps_max        = 150,
        .cfg_default      = 7.5,
        .cfg_max          = 30,
        .batch_max        = 8,
        .sampler_default  = "euler",
        .schedule_default = "karras",
        .loras            = g_loras,
        .n_loras          = (sel & 8) ? 3 : 0,
        .embeddings       = g_embs,
        .n_embeddings     = 1,
        .img2img          = (sel & 1) != 0,
        .inpaint          = (sel & 2) != 0,
        .negative_prompt  = (sel & 4) != 0,
    };
    return imgd_schema_for_generate(&c);
}

static void check_violation(const imgd_schema_violation *v) {
    if (!v->keyword[0] || !v->detail[0]) __builtin_trap();
    if (v->pointer[0] && v->pointer[0] != '/') __builtin_trap();
    if (!imgd_utf8_valid(v->pointer, strlen(v->pointer)) ||
        !imgd_utf8_valid(v->detail, strlen(v->detail)) ||
        !imgd_utf8_valid(v->hint, strlen(v->hint))) {
        __builtin_trap();
    }
}

static bool is_combinator(const char *k) {
    return k &&
           (!strcmp(k, "anyOf") || !strcmp(k, "oneOf") || !strcmp(k, "allOf") || !strcmp(k, "not"));
}

/* Combinator keywords anywhere in the tree (explicit stack of sibling lists: cJSON nodes have
 * no parent link); SIZE_MAX when the stack would overflow. */
static size_t count_combinators(const cJSON *root) {
    const cJSON *stack[4096];
    size_t       top = 0, n = 0;
    stack[top++] = root;
    while (top) {
        for (const cJSON *it = stack[--top]; it; it = it->next) {
            n += is_combinator(it->string);
            if (!it->child) continue;
            if (top == IMGD_ARRAY_LEN(stack)) return SIZE_MAX;
            stack[top++] = it->child;
        }
    }
    return n;
}

static void request_mode(cJSON *schema, cJSON *x) {
    imgd_schema_violation v;
    if (!imgd_schema_validate(schema, x, &v)) {
        check_violation(&v);
        return;
    }
    if (imgd_schema_apply_defaults(schema, x) == IMGD_OK && !imgd_schema_validate(schema, x, &v)) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    cJSON *x = NULL, *schema = make_schema(data[0]);
    if (!schema) return 0;
    if (imgd_json_parse("fuzz", (const char *)data + 1, size - 1, 1u << 20, 200, &x) == IMGD_OK) {
        if (!(data[0] & 128)) {
            request_mode(schema, x);
        } else if (count_combinators(x) <= 6) {
            imgd_schema_violation v;
            if (!imgd_schema_validate(x, schema, &v)) check_violation(&v);
            if (!imgd_schema_validate(x, x, &v)) check_violation(&v);
            (void)imgd_schema_apply_defaults(x, schema);
        }
        cJSON_Delete(x);
    }
    cJSON_Delete(schema);
    return 0;
}
