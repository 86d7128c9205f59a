/* imgd_inspect reports and the CLI (`imgd inspect`, `imgd convert`) end to end. */
#include <cjson/cJSON.h>
#include <sys/wait.h>

#include "base/text.h"
#include "fixtures.h"
#include "test.h"

static char g_file[512];

/* Field readers that tolerate absent fields (the report of a failed open lacks some). */
static const char *jstr(const cJSON *j, const char *k) {
    return cJSON_GetStringValue(cJSON_GetObjectItem(j, k));
}
static double jnum(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static cJSON *inspect_json(const char *path, bool hash, imgd_status want) {
    imgd_inspect_params p = imgd_inspect_params_default();
    p.hash                = hash;
    char *out             = NULL;
    CHECK_STATUS(imgd_inspect(path, &p, &out), want);
    if (!out) return NULL;
    cJSON *j = cJSON_Parse(out);
    CHECK_MSG(j != NULL, "report is not JSON: %s", out);
    imgd_string_free(out);
    return j;
}

static void test_inspect_json_has_documented_fields(void) {
    const char *names[] = {"a", "b"};
    CHECK(fx_safetensors(g_file, names, 2, 3, 0, "ss_base_model_version", "sd_v1") == 0);
    cJSON *j = inspect_json(g_file, true, IMGD_OK);
    if (!j) return;
    CHECK_STR(jstr(j, "format"), "safetensors");
    CHECK_EQ_INT(jnum(j, "tensors"), 2);
    CHECK_EQ_INT(jnum(j, "parameters"), 24);
    CHECK_EQ_INT(jnum(j, "bytes"), 96);
    CHECK_EQ_INT(jnum(cJSON_GetObjectItem(j, "dtypes"), "F32"), 2);
    CHECK_STR(jstr(cJSON_GetObjectItem(j, "metadata"), "ss_base_model_version"), "sd_v1");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "safe")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "error")));
    const cJSON *model = cJSON_GetObjectItem(j, "model");
    CHECK(cJSON_IsObject(model));
    CHECK_STR(jstr(model, "kind"), "unknown");
    const char *sha = jstr(j, "sha256");
    const char *av2 = jstr(j, "autov2");
    CHECK(sha && strlen(sha) == 64);
    CHECK(av2 && strlen(av2) == 10 && strncmp(sha, av2, 10) == 0);
    char hex[65];
    CHECK_STATUS(imgd_file_sha256(g_file, NULL, NULL, hex), IMGD_OK);
    CHECK_STR(hex, sha);
    cJSON_Delete(j);
}

static void test_inspect_invalid_file_reports_error(void) {
    tu_write_file(g_file, "\x20\0\0\0\0\0\0\0{\"a\":{\"dtype\":\"F99\"}}", 29);
    cJSON *j = inspect_json(g_file, false, IMGD_E_FORMAT);
    if (!j) return;
    CHECK_STR(jstr(j, "format"), "safetensors");
    CHECK(cJSON_IsString(cJSON_GetObjectItem(j, "error")));
    CHECK_STR(jstr(j, "status"), "bad_format");
    CHECK(strstr(imgd_last_error(), g_file) != NULL);
    cJSON_Delete(j);
}

static void test_inspect_text_report(void) {
    const char *names[] = {"x"};
    CHECK(fx_safetensors(g_file, names, 1, 2, 0, NULL, NULL) == 0);
    imgd_inspect_params p = imgd_inspect_params_default();
    p.text                = true;
    char *out             = NULL;
    CHECK_STATUS(imgd_inspect(g_file, &p, &out), IMGD_OK);
    CHECK(out && strstr(out, "format:      safetensors") && strstr(out, "tensors:     1"));
    imgd_string_free(out);
}

/* ---- CLI -------------------------------------------------------------------------- */

static int run(const char *args, char *out, size_t cap) {
    const char *bin = getenv("IMGD_BIN");
    char        cmd[2048];
    imgd_fmt(cmd, sizeof cmd, "%s %s 2>&1", bin, args);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, cap - 1, f);
    out[n]   = 0;
    int rc   = pclose(f);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_inspect_cli_json_and_errors(void) {
    if (!getenv("IMGD_BIN")) {
        TEST_SKIP("IMGD_BIN not set (run under ctest): CLI not exercised");
        return;
    }
    const char *names[] = {"x"};
    CHECK(fx_safetensors(g_file, names, 1, 2, 0, NULL, NULL) == 0);
    char out[8192], args[1024];
    imgd_fmt(args, sizeof args, "inspect --json --hash '%s'", g_file);
    CHECK_EQ_INT(run(args, out, sizeof out), 0);
    cJSON *j = cJSON_Parse(out);
    CHECK(j && cJSON_IsString(cJSON_GetObjectItem(j, "autov2")));
    cJSON_Delete(j);
    tu_write_file(g_file, "garbage!garbage!", 16);
    imgd_fmt(args, sizeof args, "inspect '%s'", g_file);
    CHECK_EQ_INT(run(args, out, sizeof out), 1);
    CHECK(strstr(out, "imgd: ") && strstr(out, g_file));
    CHECK_EQ_INT(run("inspect --bogus x", out, sizeof out), 2);
    CHECK(strstr(out, "--bogus") != NULL);
    CHECK_EQ_INT(run("frobnicate", out, sizeof out), 2);
    CHECK_EQ_INT(run("convert only-one-arg", out, sizeof out), 2);
    CHECK_EQ_INT(run("convert a b --dtype q4_0", out, sizeof out), 2);
    CHECK(strstr(out, "--dtype") != NULL);
    CHECK_EQ_INT(run("help", out, sizeof out), 0);
    CHECK(strstr(out, "imgd inspect") && strstr(out, "imgd convert"));
}

static void test_inspect_cli_convert_roundtrip(void) {
    if (!getenv("IMGD_BIN")) {
        TEST_SKIP("IMGD_BIN not set (run under ctest): CLI not exercised");
        return;
    }
    const char *names[] = {"x", "model_ema.x"};
    CHECK(fx_safetensors(g_file, names, 2, 2, 0, NULL, NULL) == 0);
    char out[8192], args[2048], dst[512];
    tu_tmp_path(dst, sizeof dst, "cli-out.safetensors");
    imgd_fmt(args, sizeof args, "convert '%s' '%s' --dtype bf16 --prune-ema", g_file, dst);
    CHECK_EQ_INT(run(args, out, sizeof out), 0);
    CHECK(strstr(out, "1 tensors") && strstr(out, "verified") && strstr(out, "1 EMA"));
    imgd_fmt(args, sizeof args, "inspect --json '%s'", dst);
    CHECK_EQ_INT(run(args, out, sizeof out), 0);
    CHECK(strstr(out, "\"BF16\":1") != NULL);
    CHECK(remove(dst) == 0);
}

int main(void) {
    tu_tmp_path(g_file, sizeof g_file, "inspect.safetensors");
    RUN(test_inspect_json_has_documented_fields);
    RUN(test_inspect_invalid_file_reports_error);
    RUN(test_inspect_text_report);
    RUN(test_inspect_cli_json_and_errors);
    RUN(test_inspect_cli_convert_roundtrip);
    (void)remove(g_file); /* best-effort cleanup after the last case */
    TEST_END();
}
