/* service/schema: every supported keyword valid and invalid, JSON pointers (escaping,
 * nesting, document order), hints, defaults, depth caps, and the generation-request schema
 * built from a model's capabilities. */
#include "base/text.h"
#include "sampling/sampler.h"
#include "sampling/schedule.h"
#include "service/schema.h"
#include "test.h"

/* Validates instance text against schema text; returns 1 valid, 0 invalid, -1 when either
 * text does not parse (or cJSON ran out of memory). */
static int run_case(const char *schema, const char *inst, imgd_schema_violation *v) {
    cJSON *s = cJSON_Parse(schema), *x = cJSON_Parse(inst);
    int    r = (s && x) ? imgd_schema_validate(s, x, v) : -1;
    cJSON_Delete(s);
    cJSON_Delete(x);
    return r;
}

static void ok_case(const char *schema, const char *inst, int line) {
    imgd_schema_violation v;
    int                   r = run_case(schema, inst, &v);
    CHECK_MSG(r == 1, "line %d: %s against %s: %s [%s] (%s)", line, inst, schema, v.detail,
              v.keyword, v.hint);
    CHECK_MSG(r != 1 || (v.pointer[0] == '\0' && v.detail[0] == '\0'), "line %d: v not cleared",
              line);
}

/* Expects a violation with this pointer and keyword; hint_part (may be NULL) must occur in
 * the hint. */
static void bad_case(const char *schema, const char *inst, const char *ptr, const char *keyword,
                     const char *hint_part, int line) {
    imgd_schema_violation v;
    int                   r = run_case(schema, inst, &v);
    CHECK_MSG(r == 0, "line %d: %s against %s should fail", line, inst, schema);
    if (r != 0) return;
    CHECK_MSG(strcmp(v.pointer, ptr) == 0 && strcmp(v.keyword, keyword) == 0,
              "line %d: got pointer '%s' keyword '%s' (%s | %s), want '%s' '%s'", line, v.pointer,
              v.keyword, v.detail, v.hint, ptr, keyword);
    CHECK_MSG(!hint_part || strstr(v.hint, hint_part), "line %d: hint '%s' lacks '%s' (%s)", line,
              v.hint, hint_part ? hint_part : "", v.detail);
}

#define OK(s, x)            ok_case(s, x, __LINE__)
#define BAD(s, x, p, k)     bad_case(s, x, p, k, NULL, __LINE__)
#define BADH(s, x, p, k, h) bad_case(s, x, p, k, h, __LINE__)

/* ---- keywords ------------------------------------------------------------------------ */

static void test_schema_type_keyword(void) {
    OK("{\"type\":\"string\"}", "\"x\"");
    OK("{\"type\":\"number\"}", "1.5");
    OK("{\"type\":\"integer\"}", "3");
    OK("{\"type\":\"integer\"}", "3.0"); /* no fractional part: an integer (2020-12) */
    OK("{\"type\":\"integer\"}", "-4e2");
    OK("{\"type\":\"boolean\"}", "false");
    OK("{\"type\":\"null\"}", "null");
    OK("{\"type\":\"object\"}", "{}");
    OK("{\"type\":\"array\"}", "[]");
    OK("{\"type\":[\"string\",\"null\"]}", "null");
    OK("{\"type\":[\"string\",\"null\"]}", "\"a\"");
    BADH("{\"type\":\"integer\"}", "3.5", "", "type", "whole number");
    BADH("{\"type\":\"integer\",\"minimum\":1,\"maximum\":150}", "\"20\"", "", "type",
         "without quotes: 20");
    BADH("{\"type\":\"integer\",\"minimum\":1,\"maximum\":150}", "true", "", "type",
         "use an integer from 1 to 150");
    BAD("{\"type\":\"number\"}", "1e999", "",
        "type"); /* cJSON reads it as infinity: not a JSON number */
    BAD("{\"type\":\"string\"}", "1", "", "type");
    BAD("{\"type\":\"object\"}", "[]", "", "type");
    BAD("{\"type\":\"array\"}", "{}", "", "type");
    BAD("{\"type\":\"boolean\"}", "0", "", "type");
    BAD("{\"type\":\"null\"}", "false", "", "type");
    BADH("{\"type\":[\"string\",\"null\"]}", "1", "", "type", "one of string, null");
    BAD("{\"type\":\"strnig\"}", "1", "", "type"); /* schema error, still a violation */
}

static void test_schema_enum_and_const(void) {
    const char *s = "{\"enum\":[\"euler\",\"euler_ancestral\",\"heun\",2,null]}";
    OK(s, "\"heun\"");
    OK(s, "2.0");
    OK(s, "null");
    BADH(s, "\"eular\"", "", "enum", "did you mean 'euler'");
    BADH(s, "\"zzz\"", "", "enum", "use one of: euler, euler_ancestral, heun, 2, null");
    BAD(s, "\"Heun \"", "", "enum");
    OK("{\"const\":{\"a\":[1,2]}}", "{\"a\":[1,2]}");
    BADH("{\"const\":\"x\"}", "\"y\"", "", "const", "use \"x\"");
}

static void test_schema_numeric_bounds(void) {
    const char *s = "{\"type\":\"integer\",\"minimum\":1,\"maximum\":150}";
    OK(s, "1");
    OK(s, "150");
    BADH(s, "0", "", "minimum", "use an integer from 1 to 150");
    BADH(s, "5000", "", "maximum", "use an integer from 1 to 150");
    s = "{\"type\":\"number\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":1}";
    OK(s, "0.5");
    BADH(s, "0", "", "exclusiveMinimum", "greater than 0 and below 1");
    BAD(s, "1", "", "exclusiveMaximum");
    BADH("{\"minimum\":-1}", "-2", "", "minimum", "of at least -1");
    OK("{\"maximum\":2}", "\"not a number: ignored\"");
}

static void test_schema_multiple_of(void) {
    OK("{\"multipleOf\":8}", "512");
    OK("{\"multipleOf\":8}", "-16");
    BADH("{\"multipleOf\":8}", "513", "", "multipleOf", "nearest: 512 or 520");
    OK("{\"multipleOf\":0.1}", "0.3"); /* 0.3 / 0.1 = 2.9999999999999996 */
    OK("{\"multipleOf\":0.01}", "19.99");
    BAD("{\"multipleOf\":0.1}", "0.35", "", "multipleOf");
    BAD("{\"multipleOf\":0}", "1", "", "multipleOf"); /* schema error */
    BADH("{\"type\":\"integer\",\"minimum\":64,\"maximum\":2048,\"multipleOf\":8}", "100", "",
         "multipleOf", "from 64 to 2048, a multiple of 8");
}

static void test_schema_string_length_counts_code_points(void) {
    const char *s = "{\"type\":\"string\",\"minLength\":2,\"maxLength\":5}";
    OK(s, "\"h\xc3\xa9llo\""); /* 6 bytes, 5 code points */
    OK(s, "\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\"");
    BAD(s, "\"\xf0\x9f\x98\x80\"", "", "minLength");
    BADH(s, "\"abcdef\"", "", "maxLength", "at most 5 characters");
    BAD("{\"type\":\"string\"}", "\"\xff\xfe\"", "", "type"); /* invalid UTF-8 */
}

static void test_schema_format_byte(void) {
    const char *s = "{\"type\":\"string\",\"format\":\"byte\"}";
    OK(s, "\"Zm9vYg==\"");
    OK(s, "\"\"");
    OK(s, "\"data:image/png;base64,iVBORw0KGgo=\"");
    BADH(s, "\"Zm9vYg=\"", "", "format", "standard base64");
    BAD(s, "\"Zm9v\\nYg==\"", "", "format");
    BAD(s, "\"data:image/png,Zm9v\"", "", "format");
    imgd_schema_violation v;
    CHECK(run_case(s, "\"data:image/png;base64,Zm9v!g==\"", &v) == 0);
    CHECK_MSG(strstr(v.detail, "at byte 26"), "%s", v.detail);
    OK("{\"type\":\"string\",\"format\":\"date-time\"}", "\"not checked\"");
}

static void test_schema_properties_required_additional(void) {
    const char *s = "{\"type\":\"object\",\"properties\":{\"prompt\":{\"type\":\"string\","
                    "\"description\":\"what to draw\"},\"steps\":{\"type\":\"integer\"}},"
                    "\"required\":[\"prompt\"],\"additionalProperties\":false}";
    OK(s, "{\"prompt\":\"cat\"}");
    OK(s, "{\"prompt\":\"cat\",\"steps\":3}");
    BADH(s, "{\"steps\":3}", "/prompt", "required", "add \"prompt\": what to draw");
    BADH(s, "{\"prompt\":\"cat\",\"step\":3}", "/step", "additionalProperties",
         "did you mean 'steps'?");
    BADH(s, "{\"promt\":\"cat\"}", "/promt", "additionalProperties", "did you mean 'prompt'?");
    BADH(s, "{\"prompt\":\"cat\",\"zzzz\":1}", "/zzzz", "additionalProperties",
         "allowed fields: prompt, steps");
    BAD(s, "{\"prompt\":\"cat\",\"steps\":\"3\"}", "/steps", "type");
    const char *a = "{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"integer\"}}";
    OK(a, "{\"a\":\"x\",\"b\":1}");
    BAD(a, "{\"a\":\"x\",\"b\":\"y\"}", "/b", "type");
    OK("{\"properties\":{\"a\":{\"type\":\"string\"}}}", "{\"b\":1}"); /* open by default */
    BAD("{\"minProperties\":1}", "{}", "", "minProperties");
    BAD("{\"maxProperties\":1}", "{\"a\":1,\"b\":2}", "", "maxProperties");
    const char *d = "{\"dependentRequired\":{\"mask\":[\"init\"]}}";
    OK(d, "{\"init\":1}");
    OK(d, "{\"init\":1,\"mask\":1}");
    BADH(d, "{\"mask\":1}", "/init", "dependentRequired", "add \"init\", or remove \"mask\"");
}

static void test_schema_suggests_several_close_names(void) {
    const char *s = "{\"properties\":{\"width\":{},\"height\":{},\"cfg_scale\":{},"
                    "\"batch_size\":{}},\"additionalProperties\":false}";
    BADH(s, "{\"cfg\":7}", "/cfg", "additionalProperties", "did you mean 'cfg_scale'?");
    BADH(s, "{\"widht\":7}", "/widht", "additionalProperties", "did you mean 'width'?");
    BADH(s, "{\"Batch\":1}", "/Batch", "additionalProperties", "'batch_size'");
    BADH("{\"properties\":{\"seed\":{},\"steps\":{}},\"additionalProperties\":false}",
         "{\"step\":1}", "/step", "additionalProperties", "did you mean 'steps'?");
    BADH("{\"properties\":{\"ab1\":{},\"ab2\":{},\"ab3\":{}},\"additionalProperties\":false}",
         "{\"ab\":1}", "/ab", "additionalProperties", "'ab1', 'ab2' or 'ab3'");
    BADH("{\"additionalProperties\":false}", "{\"x\":1}", "/x", "additionalProperties",
         "takes no fields");
}

static void test_schema_pointer_escaping_and_nesting(void) {
    const char *s = "{\"properties\":{\"a/b\":{\"type\":\"string\"},\"m~n\":{\"type\":\"string\"},"
                    "\"o\":{\"properties\":{\"l\":{\"items\":{\"properties\":{\"c\":{\"type\":"
                    "\"integer\"}}}}}}}}";
    BAD(s, "{\"a/b\":1}", "/a~1b", "type");
    BAD(s, "{\"m~n\":1}", "/m~0n", "type");
    BAD(s, "{\"o\":{\"l\":[{\"c\":1},{\"c\":1.5}]}}", "/o/l/1/c", "type");
    imgd_schema_violation v;
    CHECK(run_case(s, "{\"o\":{\"l\":[{\"c\":1},{\"c\":\"x\"}]}}", &v) == 0);
    CHECK_MSG(strncmp(v.detail, "o/l/1/c: ", 9) == 0, "%s", v.detail);
    /* unknown names with ~ and / escape too */
    BAD("{\"additionalProperties\":false}", "{\"x/~y\":1}", "/x~1~0y", "additionalProperties");
}

static void test_schema_long_pointer_names_an_ancestor(void) {
    char key[400], inst[500];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    (void)snprintf(inst, sizeof inst, "{\"a\":{\"%s\":{\"b\":1}}}", key);
    imgd_schema_violation v;
    CHECK(run_case("{\"properties\":{\"a\":{\"additionalProperties\":{\"properties\":{\"b\":"
                   "{\"type\":\"string\"}}}}}}",
                   inst, &v) == 0);
    CHECK_STR(v.pointer, "/a");
    CHECK_STR(v.keyword, "type");
}

static void test_schema_first_violation_in_document_order(void) {
    const char *s = "{\"properties\":{\"a\":{\"type\":\"string\"},\"b\":{\"type\":\"string\"}},"
                    "\"required\":[\"c\"]}";
    BAD(s, "{\"b\":1,\"a\":1}", "/b", "type");
    BAD(s, "{\"a\":1,\"b\":1}", "/a", "type");
    BAD(s, "{\"a\":\"x\"}", "/c", "required");
    BAD("{\"maxItems\":1,\"items\":{\"type\":\"string\"}}", "[1,2]", "", "maxItems");
    BAD("{\"minItems\":3}", "[1,2]", "", "minItems");
    BAD("{\"items\":{\"type\":\"string\"}}", "[\"a\",\"b\",3,4]", "/2", "type");
}

static void test_schema_duplicate_declared_field(void) {
    const char *s = "{\"properties\":{\"steps\":{\"type\":\"integer\"}}}";
    BAD(s, "{\"steps\":1,\"steps\":2}", "", "duplicate");
}

static void test_schema_combinators(void) {
    const char *any = "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\",\"minimum\":0}]}";
    OK(any, "\"x\"");
    OK(any, "3");
    BAD(any, "-1", "", "anyOf");
    BAD(any, "null", "", "anyOf");
    const char *one = "{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\",\"minimum\":1}]}";
    OK(one, "0");
    OK(one, "1.5");
    BADH(one, "2", "", "oneOf", "exactly one");
    /* the closest alternative failing deeper is reported where it failed */
    BAD("{\"anyOf\":[{\"type\":\"string\"},{\"properties\":{\"a\":{\"type\":\"string\"}}}]}",
        "{\"a\":1}", "/a", "type");
    OK("{\"allOf\":[{\"minimum\":1},{\"maximum\":3}]}", "2");
    BAD("{\"allOf\":[{\"minimum\":1},{\"maximum\":3}]}", "4", "", "maximum");
    OK("{\"not\":{\"type\":\"string\"}}", "1");
    BAD("{\"not\":{\"type\":\"string\"}}", "\"x\"", "", "not");
    BAD("{\"anyOf\":[]}", "1", "", "anyOf"); /* schema error */
}

static void test_schema_boolean_schemas(void) {
    OK("true", "{\"anything\":[1]}");
    BAD("false", "1", "", "false");
    BAD("{\"properties\":{\"gone\":false}}", "{\"gone\":1}", "/gone", "false");
}

static void test_schema_ref_local_pointers(void) {
    const char *s =
        "{\"$defs\":{\"pos\":{\"type\":\"integer\",\"minimum\":1},"
        "\"a/b\":{\"type\":\"string\"}},\"properties\":{\"n\":{\"$ref\":\"#/$defs/pos\"},"
        "\"s\":{\"$ref\":\"#/$defs/a~1b\"},\"t\":{\"$ref\":\"#/$defs/pos\","
        "\"maximum\":5}}}";
    OK(s, "{\"n\":3,\"s\":\"x\",\"t\":5}");
    BAD(s, "{\"n\":0}", "/n", "minimum");
    BAD(s, "{\"s\":0}", "/s", "type");
    BAD(s, "{\"t\":6}", "/t", "maximum"); /* siblings of $ref apply too */
    BAD(s, "{\"t\":0}", "/t", "minimum");
    imgd_schema_violation v;
    CHECK(run_case("{\"$ref\":\"#/$defs/missing\"}", "1", &v) == 0);
    CHECK_STR(v.keyword, "$ref");
    CHECK_MSG(strstr(v.detail, "schema error") != NULL, "%s", v.detail);
    BAD("{\"$ref\":\"http://example.com/s\"}", "1", "", "$ref");
    OK("{\"items\":{\"$ref\":\"#/$defs/x/items/0\"},\"$defs\":{\"x\":{\"items\":[{}]}}}", "[1]");
}

static void test_schema_depth_is_capped(void) {
    /* a recursive schema over a deeply nested array */
    char inst[400];
    memset(inst, '[', 150);
    memset(inst + 150, ']', 150);
    inst[300] = '\0';
    imgd_schema_violation v;
    CHECK(run_case("{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}", inst, &v) == 0);
    CHECK_STR(v.keyword, "depth");
    /* a $ref cycle that never consumes instance depth */
    CHECK(run_case("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/a\"}},"
                   "\"$ref\":\"#/$defs/a\"}",
                   "1", &v) == 0);
    CHECK_STR(v.keyword, "depth");
    OK("{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}", "[[[[[[[[[[]]]]]]]]]]");
}

static void test_schema_messages_stay_valid_utf8_when_cut(void) {
    /* a 300-character description of 2-byte characters overflows the 256-byte hint */
    char desc[601], schema[1024];
    for (size_t i = 0; i < 300; i++) memcpy(desc + 2 * i, "\xc3\xa9", 2);
    desc[600] = '\0';
    (void)snprintf(
        schema, sizeof schema,
        "{\"properties\":{\"x\":{\"description\":\"%s\"}},\"required\":[\"x\",\"\xff\"]}", desc);
    imgd_schema_violation v;
    CHECK(run_case(schema, "{}", &v) == 0);
    CHECK(strlen(v.hint) > 200);
    CHECK(imgd_utf8_valid(v.hint, strlen(v.hint)));
    CHECK(run_case(schema, "{\"x\":1}", &v) == 0); /* a schema's invalid name is repaired */
    CHECK_STR(v.pointer, "/?");
    CHECK(imgd_utf8_valid(v.detail, strlen(v.detail)));
}

static void test_schema_null_arguments(void) {
    imgd_schema_violation v;
    cJSON                *s = cJSON_CreateTrue();
    REQUIRE(s);
    CHECK(!imgd_schema_validate(s, NULL, &v));
    CHECK(!imgd_schema_validate(NULL, s, NULL));
    CHECK(imgd_schema_validate(s, s, NULL));
    CHECK_STATUS(imgd_schema_apply_defaults(NULL, s), IMGD_E_INVALID_ARG);
done:
    cJSON_Delete(s);
}

/* ---- defaults ------------------------------------------------------------------------ */

static void test_schema_apply_defaults_recursively(void) {
    cJSON *s = cJSON_Parse(
        "{\"$defs\":{\"l\":{\"properties\":{\"name\":{},\"weight\":{\"default\":1}}}},"
        "\"properties\":{\"steps\":{\"default\":20},\"prompt\":{},\"o\":{\"properties\":{"
        "\"k\":{\"default\":\"v\"},\"z\":{\"default\":{\"deep\":[1]}}}},\"ls\":{\"items\":{"
        "\"$ref\":\"#/$defs/l\"}},\"r\":{\"$ref\":\"#/$defs/d\"}},\"required\":[\"prompt\"]}");
    cJSON *x = cJSON_Parse("{\"prompt\":\"p\",\"o\":{\"k\":\"mine\"},\"ls\":[{\"name\":\"a\"},"
                           "{\"name\":\"b\",\"weight\":0.5}]}");
    REQUIRE(s && x);
    cJSON *d = cJSON_AddObjectToObject(cJSON_GetObjectItem(s, "$defs"), "d");
    REQUIRE(d && cJSON_AddNumberToObject(d, "default", 9));
    CHECK_STATUS(imgd_schema_apply_defaults(s, x), IMGD_OK);
    char *t = cJSON_PrintUnformatted(x);
    REQUIRE(t);
    CHECK_STR(t, "{\"prompt\":\"p\",\"o\":{\"k\":\"mine\",\"z\":{\"deep\":[1]}},\"ls\":[{\"name\":"
                 "\"a\",\"weight\":1},{\"name\":\"b\",\"weight\":0.5}],\"steps\":20,\"r\":9}");
    cJSON_free(t);
done:
    cJSON_Delete(s);
    cJSON_Delete(x);
}

static void test_schema_apply_defaults_depth_capped(void) {
    cJSON *s = cJSON_Parse("{\"items\":{\"$ref\":\"#\"}}");
    cJSON *x = cJSON_Parse("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                           "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    REQUIRE(s && x);
    CHECK_STATUS(imgd_schema_apply_defaults(s, x), IMGD_E_TOO_LARGE);
done:
    cJSON_Delete(s);
    cJSON_Delete(x);
}

/* ---- the generation request schema ---------------------------------------------------- */

static const char *const g_loras[] = {"detail_tweaker", "film_grain"};
static const char *const g_embs[]  = {"easynegative"};

static imgd_schema_caps caps_sd15(void) {
    imgd_schema_caps c = {
        .model_id         = "sd15/v1-5-pruned.safetensors",
        .family           = "sd1",
        .size_min         = 64,
        .size_max         = 2048,
        .size_multiple    = 8,
        .width_default    = 512,
        .height_default   = 512,
        .steps_default    = 20,
        .steps_max        = 150,
        .cfg_default      = 7.5,
        .cfg_max          = 30,
        .batch_max        = 8,
        .sampler_default  = "euler",
        .schedule_default = "default",
        .loras            = g_loras,
        .n_loras          = 2,
        .embeddings       = g_embs,
        .n_embeddings     = 1,
        .img2img          = true,
        .inpaint          = true,
        .negative_prompt  = true,
    };
    return c;
}

static int gen_case(const imgd_schema_caps *caps, const char *inst, imgd_schema_violation *v) {
    cJSON *s = imgd_schema_for_generate(caps), *x = cJSON_Parse(inst);
    int    r = (s && x) ? imgd_schema_validate(s, x, v) : -1;
    cJSON_Delete(s);
    cJSON_Delete(x);
    return r;
}

static void gen_bad(const imgd_schema_caps *caps, const char *inst, const char *ptr,
                    const char *keyword, const char *hint_part, int line) {
    imgd_schema_violation v;
    int                   r = gen_case(caps, inst, &v);
    CHECK_MSG(r == 0, "line %d: %s should fail", line, inst);
    if (r != 0) return;
    CHECK_MSG(strcmp(v.pointer, ptr) == 0 && strcmp(v.keyword, keyword) == 0 &&
                  (!hint_part || strstr(v.hint, hint_part)),
              "line %d: got '%s' '%s' (%s | %s), want '%s' '%s' '%s'", line, v.pointer, v.keyword,
              v.detail, v.hint, ptr, keyword, hint_part ? hint_part : "");
}
#define GEN_BAD(c, x, p, k, h) gen_bad(c, x, p, k, h, __LINE__)

static void test_schema_generate_header_and_every_description(void) {
    imgd_schema_caps c = caps_sd15();
    cJSON           *s = imgd_schema_for_generate(&c);
    REQUIRE(s);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(s, "$schema")),
              "https://json-schema.org/draft/2020-12/schema");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(s, "$id")),
              "urn:imgd:generate:sd15%2Fv1-5-pruned.safetensors");
    CHECK(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(s, "title")), c.model_id));
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(s, "additionalProperties")));
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(s, "properties")) {
        CHECK_MSG(cJSON_IsString(cJSON_GetObjectItem(p, "description")), "%s", p->string);
        CHECK_MSG(cJSON_IsString(cJSON_GetObjectItem(p, "type")), "%s", p->string);
    }
    CHECK_STR(cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "required"), 0)),
              "prompt");
    CHECK_STR(
        cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "x-imgd-embeddings"), 0)),
        "easynegative");
done:
    cJSON_Delete(s);
}

static bool has_prop(const cJSON *s, const char *name) {
    return cJSON_GetObjectItem(cJSON_GetObjectItem(s, "properties"), name) != NULL;
}

static void test_schema_generate_fields_follow_caps(void) {
    static const char *const always[] = {"model",         "prompt",   "seed",       "rng",
                                         "sampler",       "schedule", "steps",      "cfg_scale",
                                         "width",         "height",   "batch_size", "clip_skip",
                                         "output_format", "priority", "timeout_s"};
    static const char *const cond[]   = {"negative_prompt", "init_image", "strength",
                                         "mask_image",      "mask_blur",  "loras"};
    imgd_schema_caps         full = caps_sd15(), bare = caps_sd15(), i2i = caps_sd15();
    bare.img2img = bare.inpaint = bare.negative_prompt = false;
    bare.n_loras                                       = 0;
    i2i.inpaint                                        = false;
    cJSON *sf = imgd_schema_for_generate(&full), *sb = imgd_schema_for_generate(&bare);
    cJSON *si = imgd_schema_for_generate(&i2i);
    REQUIRE(sf && sb && si);
    for (size_t i = 0; i < IMGD_ARRAY_LEN(always); i++) {
        CHECK_MSG(has_prop(sf, always[i]) && has_prop(sb, always[i]), "%s", always[i]);
    }
    for (size_t i = 0; i < IMGD_ARRAY_LEN(cond); i++) {
        CHECK_MSG(has_prop(sf, cond[i]) && !has_prop(sb, cond[i]), "%s", cond[i]);
    }
    CHECK(has_prop(si, "init_image") && has_prop(si, "strength"));
    CHECK(!has_prop(si, "mask_image") && !has_prop(si, "mask_blur"));
    CHECK(cJSON_GetObjectItem(sb, "$defs") == NULL);
    CHECK(cJSON_GetObjectItem(sb, "dependentRequired") == NULL);
    const cJSON *caps = cJSON_GetObjectItem(sb, "x-imgd-capabilities");
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(caps, "img2img")));
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(caps, "family")), "sd1");
done:
    cJSON_Delete(sf);
    cJSON_Delete(sb);
    cJSON_Delete(si);
}

/* FLUX caps: euler only, no clip_skip, max_sequence_length; guidance only with the flag;
 * requests are validated against them. */
static void test_schema_generate_flow_caps(void) {
    imgd_schema_caps dev = caps_sd15(), schnell;
    dev.family           = "flux_dev";
    dev.img2img = dev.inpaint = dev.negative_prompt = false;
    dev.n_loras                                     = 0;
    dev.size_multiple                               = 16;
    dev.steps_default                               = 28;
    dev.flow                                        = true;
    dev.guidance                                    = true;
    dev.guidance_default                            = 3.5;
    dev.seq_default                                 = 512;
    schnell                                         = dev;
    schnell.family                                  = "flux_schnell";
    schnell.guidance                                = false;
    cJSON *sd = imgd_schema_for_generate(&dev), *ss = imgd_schema_for_generate(&schnell);
    REQUIRE(sd && ss);
    CHECK(has_prop(sd, "guidance") && !has_prop(ss, "guidance"));
    CHECK(has_prop(sd, "max_sequence_length") && has_prop(ss, "max_sequence_length"));
    CHECK(!has_prop(sd, "clip_skip") && !has_prop(sd, "negative_prompt"));
    CHECK(has_prop(sd, "cfg_scale") && has_prop(sd, "steps"));
    const cJSON *props = cJSON_GetObjectItem(sd, "properties");
    const cJSON *sm    = cJSON_GetObjectItem(cJSON_GetObjectItem(props, "sampler"), "enum");
    CHECK(cJSON_GetArraySize(sm) == 1);
    CHECK_NEAR(cJSON_GetNumberValue(
                   cJSON_GetObjectItem(cJSON_GetObjectItem(props, "guidance"), "default")),
               3.5, 0);
    imgd_schema_violation v;
    CHECK(gen_case(&dev, "{\"prompt\":\"a\",\"guidance\":2.5,\"max_sequence_length\":64}", &v) ==
          1);
    GEN_BAD(&dev, "{\"prompt\":\"a\",\"sampler\":\"dpmpp_2m\"}", "/sampler", "enum", NULL);
    GEN_BAD(&dev, "{\"prompt\":\"a\",\"max_sequence_length\":513}", "/max_sequence_length",
            "maximum", NULL);
    GEN_BAD(&schnell, "{\"prompt\":\"a\",\"guidance\":2}", "/guidance", "additionalProperties",
            NULL);
    GEN_BAD(&dev, "{\"prompt\":\"a\",\"clip_skip\":2}", "/clip_skip", "additionalProperties", NULL);
done:
    cJSON_Delete(sd);
    cJSON_Delete(ss);
}

static bool enum_has(const cJSON *s, const char *prop, const char *value) {
    const cJSON *e;
    cJSON_ArrayForEach(
        e, cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "properties"), prop),
                               "enum")) {
        if (cJSON_IsString(e) && strcmp(e->valuestring, value) == 0) return true;
    }
    return false;
}

static void test_schema_generate_enums_come_from_registries(void) {
    imgd_schema_caps c = caps_sd15();
    c.sampler_default  = "not_a_sampler";
    cJSON *s           = imgd_schema_for_generate(&c);
    REQUIRE(s);
    for (int k = 1; k < IMGD_SAMPLER_COUNT; k++) {
        const char *n = imgd_sampler_kind_name((imgd_sampler_kind)k);
        CHECK_MSG(n && enum_has(s, "sampler", n), "sampler %d", k);
    }
    for (int k = 1; k < IMGD_SCHEDULE_COUNT; k++) {
        const char *n = imgd_schedule_kind_name((imgd_schedule_kind)k);
        CHECK_MSG(n && enum_has(s, "schedule", n), "schedule %d", k);
    }
    const cJSON *props = cJSON_GetObjectItem(s, "properties");
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(props, "sampler"), "default") == NULL);
    CHECK_STR(cJSON_GetStringValue(
                  cJSON_GetObjectItem(cJSON_GetObjectItem(props, "schedule"), "default")),
              "default");
    CHECK(enum_has(s, "rng", "philox") && enum_has(s, "output_format", "webp"));
done:
    cJSON_Delete(s);
}

static void test_schema_generate_accepts_good_requests(void) {
    imgd_schema_caps         c = caps_sd15();
    imgd_schema_violation    v;
    static const char *const good[] = {
        "{\"prompt\":\"a cat\"}",
        "{\"prompt\":\"\",\"model\":\"sd15/v1-5-pruned.safetensors\",\"seed\":-1}",
        "{\"prompt\":\"a cat\",\"negative_prompt\":\"blurry\",\"seed\":4294967295,\"rng\":"
        "\"philox\",\"sampler\":\"dpmpp_2m\",\"schedule\":\"karras\",\"steps\":150,\"cfg_scale\":"
        "7,\"width\":768,\"height\":1024,\"batch_size\":8,\"clip_skip\":2,\"output_format\":"
        "\"webp\",\"priority\":-10,\"timeout_s\":0.5}",
        "{\"prompt\":\"x\",\"init_image\":\"data:image/png;base64,iVBORw0KGgo=\",\"strength\":1,"
        "\"mask_image\":\"iVBORw0KGgo=\",\"mask_blur\":0}",
        "{\"prompt\":\"x\",\"loras\":[{\"name\":\"film_grain\"},{\"name\":\"detail_tweaker\","
        "\"weight\":-0.5}]}",
    };
    for (size_t i = 0; i < IMGD_ARRAY_LEN(good); i++) {
        CHECK_MSG(gen_case(&c, good[i], &v) == 1, "%s: %s (%s)", good[i], v.detail, v.hint);
    }
}

static void test_schema_generate_rejects_bad_requests(void) {
    imgd_schema_caps c = caps_sd15();
    GEN_BAD(&c, "{}", "/prompt", "required", "add \"prompt\"");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"steps\":5000}", "/steps", "maximum",
            "use an integer from 1 to 150");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"steps\":0}", "/steps", "minimum", NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"width\":513}", "/width", "multipleOf", "512 or 520");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"height\":4096}", "/height", "maximum", "64 to 2048");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"sampler\":\"eular\"}", "/sampler", "enum",
            "did you mean 'euler'");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"cfg\":7}", "/cfg", "additionalProperties",
            "did you mean 'cfg_scale'?");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"seed\":-2}", "/seed", "minimum", NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"seed\":4294967296}", "/seed", "maximum", NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"batch_size\":9}", "/batch_size", "maximum", "1 to 8");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"strength\":0}", "/strength", "exclusiveMinimum", NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"init_image\":\"not base64!\"}", "/init_image", "format", NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"mask_image\":\"Zm9v\"}", "/init_image", "dependentRequired",
            NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"loras\":[{\"name\":\"film_grain\"},{\"name\":\"nope\"}]}",
            "/loras/1/name", "enum", "film_grain");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"loras\":[{\"name\":\"film_grain\",\"wieght\":1}]}",
            "/loras/0/wieght", "additionalProperties", "did you mean 'weight'?");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"loras\":[{\"weight\":1}]}", "/loras/0/name", "required", NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"model\":\"other\"}", "/model", "enum", NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"timeout_s\":0}", "/timeout_s", "exclusiveMinimum", NULL);
    GEN_BAD(&c, "{\"prompt\":\"x\",\"priority\":1.5}", "/priority", "type", NULL);
    GEN_BAD(&c, "{\"prompt\":7}", "/prompt", "type", NULL);
    GEN_BAD(&c, "[]", "", "type", NULL);
    imgd_schema_caps bare = caps_sd15();
    bare.img2img = bare.inpaint = false;
    GEN_BAD(&bare, "{\"prompt\":\"x\",\"init_image\":\"Zm9v\"}", "/init_image",
            "additionalProperties", NULL);
}

static void test_schema_generate_defaults_fill_a_request(void) {
    imgd_schema_caps c = caps_sd15();
    c.steps_default    = 25;
    cJSON *s           = imgd_schema_for_generate(&c);
    cJSON *x = cJSON_Parse("{\"prompt\":\"x\",\"steps\":30,\"loras\":[{\"name\":\"film_grain\"}]}");
    REQUIRE(s && x);
    CHECK(imgd_schema_validate(s, x, NULL));
    CHECK_STATUS(imgd_schema_apply_defaults(s, x), IMGD_OK);
    CHECK_EQ_INT(cJSON_GetObjectItem(x, "steps")->valuedouble, 30);
    CHECK_EQ_INT(cJSON_GetObjectItem(x, "width")->valuedouble, 512);
    CHECK_NEAR(cJSON_GetObjectItem(x, "cfg_scale")->valuedouble, 7.5, 0);
    CHECK_NEAR(cJSON_GetObjectItem(x, "strength")->valuedouble, 0.75, 0);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(x, "sampler")), "euler");
    CHECK_EQ_INT(cJSON_GetObjectItem(x, "seed")->valuedouble, -1);
    CHECK_EQ_INT(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(x, "loras"), 0), "weight")
            ->valuedouble,
        1);
    CHECK(cJSON_GetObjectItem(x, "timeout_s") == NULL);
    CHECK(imgd_schema_validate(s, x, NULL)); /* defaults are valid values */
done:
    cJSON_Delete(s);
    cJSON_Delete(x);
}

/* "controls" only with ControlNets for the family; its items validate and fill like loras. */
static void test_schema_generate_controls(void) {
    static const char *const cns[] = {"controlnet/canny.safetensors", "controlnet/depth"};
    imgd_schema_caps         c = caps_sd15(), none = caps_sd15();
    c.controlnets   = cns;
    c.n_controlnets = 2;
    cJSON *s = imgd_schema_for_generate(&c), *sn = imgd_schema_for_generate(&none);
    cJSON *x = cJSON_Parse("{\"prompt\":\"x\",\"controls\":[{\"model\":\"controlnet/depth\","
                           "\"image\":\"iVBORw0KGgo=\",\"scale\":0.5}]}");
    REQUIRE(s && sn && x);
    CHECK(has_prop(s, "controls") && !has_prop(sn, "controls"));
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "x-imgd-capabilities"), "controlnets")
                     ->valuedouble,
                 2);
    CHECK(imgd_schema_validate(s, x, NULL));
    CHECK_STATUS(imgd_schema_apply_defaults(s, x), IMGD_OK);
    const cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItem(x, "controls"), 0);
    CHECK_NEAR(cJSON_GetObjectItem(it, "scale")->valuedouble, 0.5, 0);
    CHECK_NEAR(cJSON_GetObjectItem(it, "end")->valuedouble, 1, 0);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(it, "preprocess")), "none");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(it, "resize_mode")), "just");
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(it, "guess_mode")));
    CHECK_NEAR(cJSON_GetObjectItem(it, "high_threshold")->valuedouble, 200, 0);
    GEN_BAD(&c,
            "{\"prompt\":\"x\",\"controls\":[{\"model\":\"controlnet/dept\",\"image\":\"Zm9v\"}]}",
            "/controls/0/model", "enum", "controlnet/depth");
    GEN_BAD(&c, "{\"prompt\":\"x\",\"controls\":[{\"model\":\"controlnet/depth\"}]}",
            "/controls/0/image", "required", NULL);
    GEN_BAD(&c,
            "{\"prompt\":\"x\",\"controls\":[{\"model\":\"controlnet/depth\",\"image\":\"!\"}]}",
            "/controls/0/image", "format", NULL);
    GEN_BAD(&c,
            "{\"prompt\":\"x\",\"controls\":[{\"model\":\"controlnet/depth\",\"image\":\"Zm9v\","
            "\"preprocess\":\"depth\"}]}",
            "/controls/0/preprocess", "enum", NULL);
    GEN_BAD(&c,
            "{\"prompt\":\"x\",\"controls\":[{\"model\":\"controlnet/depth\",\"image\":\"Zm9v\","
            "\"scale\":11}]}",
            "/controls/0/scale", "maximum", NULL);
    GEN_BAD(&none, "{\"prompt\":\"x\",\"controls\":[]}", "/controls", "additionalProperties", NULL);
done:
    cJSON_Delete(s);
    cJSON_Delete(sn);
    cJSON_Delete(x);
}

static void test_schema_generate_null_caps(void) {
    imgd_schema_caps c = caps_sd15();
    c.model_id         = NULL;
    CHECK(imgd_schema_for_generate(NULL) == NULL);
    CHECK(imgd_schema_for_generate(&c) == NULL);
}

int main(void) {
    RUN(test_schema_type_keyword);
    RUN(test_schema_enum_and_const);
    RUN(test_schema_numeric_bounds);
    RUN(test_schema_multiple_of);
    RUN(test_schema_string_length_counts_code_points);
    RUN(test_schema_format_byte);
    RUN(test_schema_properties_required_additional);
    RUN(test_schema_suggests_several_close_names);
    RUN(test_schema_pointer_escaping_and_nesting);
    RUN(test_schema_long_pointer_names_an_ancestor);
    RUN(test_schema_first_violation_in_document_order);
    RUN(test_schema_duplicate_declared_field);
    RUN(test_schema_combinators);
    RUN(test_schema_boolean_schemas);
    RUN(test_schema_ref_local_pointers);
    RUN(test_schema_depth_is_capped);
    RUN(test_schema_messages_stay_valid_utf8_when_cut);
    RUN(test_schema_null_arguments);
    RUN(test_schema_apply_defaults_recursively);
    RUN(test_schema_apply_defaults_depth_capped);
    RUN(test_schema_generate_header_and_every_description);
    RUN(test_schema_generate_fields_follow_caps);
    RUN(test_schema_generate_enums_come_from_registries);
    RUN(test_schema_generate_accepts_good_requests);
    RUN(test_schema_generate_rejects_bad_requests);
    RUN(test_schema_generate_defaults_fill_a_request);
    RUN(test_schema_generate_controls);
    RUN(test_schema_generate_null_caps);
    RUN(test_schema_generate_flow_caps);
    TEST_END();
}
