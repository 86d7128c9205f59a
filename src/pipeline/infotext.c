/* A1111 infotext: the generation-parameters text (see infotext.h). */
#include "pipeline/infotext.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/text.h"

/* imgd / ComfyUI names -> A1111 display names (modules/sd_samplers_kdiffusion.py,
 * sd_samplers_timesteps.py, sd_samplers_lcm.py, sd_schedulers.py). */
typedef struct name_row {
    const char *name, *a1111;
} name_row;

static const name_row k_samplers[] = {
    {"euler", "Euler"},
    {"euler_ancestral", "Euler a"},
    {"heun", "Heun"},
    {"lms", "LMS"},
    {"dpm_2", "DPM2"},
    {"dpm_2_ancestral", "DPM2 a"},
    {"dpmpp_2s_ancestral", "DPM++ 2S a"},
    {"dpmpp_2m", "DPM++ 2M"},
    {"dpmpp_sde", "DPM++ SDE"},
    {"dpmpp_2m_sde", "DPM++ 2M SDE"},
    {"dpmpp_3m_sde", "DPM++ 3M SDE"},
    {"dpm_fast", "DPM fast"},
    {"dpm_adaptive", "DPM adaptive"},
    {"ddim", "DDIM"},
    {"lcm", "LCM"},
    {"uni_pc", "UniPC"},
};

static const name_row k_schedules[] = {
    {"default", "Automatic"},       {"normal", "Normal"},
    {"karras", "Karras"},           {"exponential", "Exponential"},
    {"sgm_uniform", "SGM Uniform"}, {"simple", "Simple"},
    {"ddim_uniform", "DDIM"},       {"beta", "Beta"},
    {"kl_optimal", "KL Optimal"},
};

const char *imgd_a1111_sampler_name(const char *name) {
    for (size_t i = 0; name && i < IMGD_ARRAY_LEN(k_samplers); i++) {
        if (strcmp(name, k_samplers[i].name) == 0) return k_samplers[i].a1111;
    }
    return NULL;
}

const char *imgd_a1111_schedule_name(const char *name) {
    for (size_t i = 0; name && i < IMGD_ARRAY_LEN(k_schedules); i++) {
        if (strcmp(name, k_schedules[i].name) == 0) return k_schedules[i].a1111;
    }
    return NULL;
}

imgd_a1111_info imgd_a1111_info_default(void) {
    imgd_a1111_info i    = {0};
    i.cfg_scale          = -1.0;
    i.denoising_strength = -1.0;
    i.mask_blur          = -1;
    return i;
}

/* A1111's infotext_utils.quote: JSON (ensure_ascii=False) when the value has , : or \n. */
static imgd_status put_value(imgd_buf *b, const char *v) {
    if (!strpbrk(v, ",:\n")) return imgd_buf_puts(b, v);
    imgd_status st = imgd_buf_append(b, "\"", 1);
    for (const char *p = v; st == IMGD_OK && *p; p++) {
        unsigned char c   = (unsigned char)*p;
        const char   *esc = c == '"'    ? "\\\""
                            : c == '\\' ? "\\\\"
                            : c == '\n' ? "\\n"
                            : c == '\r' ? "\\r"
                            : c == '\t' ? "\\t"
                            : c == '\b' ? "\\b"
                            : c == '\f' ? "\\f"
                                        : NULL;
        if (esc) {
            st = imgd_buf_puts(b, esc);
        } else if (c < 0x20) {
            st = imgd_buf_printf(b, "\\u%04x", c);
        } else {
            st = imgd_buf_append(b, p, 1);
        }
    }
    return st == IMGD_OK ? imgd_buf_append(b, "\"", 1) : st;
}

static imgd_status put_field(imgd_buf *b, const char *key, const char *value) {
    imgd_status st = b->len && b->data[b->len - 1] != '\n' ? imgd_buf_puts(b, ", ") : IMGD_OK;
    if (st == IMGD_OK) st = imgd_buf_puts(b, key);
    if (st == IMGD_OK) st = imgd_buf_puts(b, ": ");
    return st == IMGD_OK ? put_value(b, value) : st;
}

/* Shortest %g text that reads back as v ("7", "7.5", "0.75"). */
static void fmt_num(char *dst, size_t cap, double v) {
    for (int prec = 1; prec <= 17; prec++) {
        (void)imgd_fmt(dst, cap, "%.*g", prec, v);
        if (strtod(dst, NULL) == v) return;
    }
}

static bool str_ok(const char *s) {
    return !s || imgd_utf8_valid(s, strlen(s));
}

static imgd_status a1111_fields(const imgd_a1111_info *in, imgd_buf *b) {
    char        num[64];
    imgd_status st = IMGD_OK;
#define FIELD(key, val)                                                                            \
    do {                                                                                           \
        if (st == IMGD_OK) st = put_field(b, key, val);                                            \
    } while (0)
    if (in->steps > 0) {
        (void)imgd_fmt(num, sizeof num, "%d", (int)in->steps);
        FIELD("Steps", num);
    }
    if (in->sampler) FIELD("Sampler", in->sampler);
    if (in->schedule) FIELD("Schedule type", in->schedule);
    if (in->cfg_scale >= 0) {
        fmt_num(num, sizeof num, in->cfg_scale);
        FIELD("CFG scale", num);
    }
    if (in->has_seed) {
        (void)imgd_fmt(num, sizeof num, "%" PRIu64, in->seed);
        FIELD("Seed", num);
    }
    if (in->width >= 1 && in->height >= 1) {
        (void)imgd_fmt(num, sizeof num, "%dx%d", (int)in->width, (int)in->height);
        FIELD("Size", num);
    }
    if (in->model_hash) FIELD("Model hash", in->model_hash);
    if (in->model) FIELD("Model", in->model);
    if (in->vae_hash) FIELD("VAE hash", in->vae_hash);
    if (in->vae) FIELD("VAE", in->vae);
    if (in->denoising_strength >= 0) {
        fmt_num(num, sizeof num, in->denoising_strength);
        FIELD("Denoising strength", num);
    }
    if (in->clip_skip > 1) {
        (void)imgd_fmt(num, sizeof num, "%d", (int)in->clip_skip);
        FIELD("Clip skip", num);
    }
    if (in->rng) FIELD("RNG", in->rng);
    if (in->mask_blur >= 0) {
        (void)imgd_fmt(num, sizeof num, "%d", (int)in->mask_blur);
        FIELD("Mask blur", num);
    }
    for (size_t i = 0; i < in->n_extra; i++) FIELD(in->extra[2 * i], in->extra[2 * i + 1]);
    char ver[64];
    (void)imgd_fmt(ver, sizeof ver, "imgd %s", imgd_version());
    const char *v = in->version ? in->version : ver;
    if (*v) FIELD("Version", v);
#undef FIELD
    return st;
}

static bool is_space(char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

imgd_status imgd_a1111_parameters(const imgd_a1111_info *in, char **out) {
    if (!in || !out) return imgd_fail(IMGD_E_INVALID_ARG, "A1111 parameters: NULL argument");
    if (in->n_extra && !in->extra) {
        return imgd_fail(IMGD_E_INVALID_ARG, "A1111 parameters: n_extra %zu without extra",
                         in->n_extra);
    }
    const struct {
        const char *name, *s;
    } strs[] = {
        {"prompt", in->prompt},
        {"negative_prompt", in->negative_prompt},
        {"sampler", in->sampler},
        {"schedule", in->schedule},
        {"model_hash", in->model_hash},
        {"model", in->model},
        {"vae_hash", in->vae_hash},
        {"vae", in->vae},
        {"rng", in->rng},
        {"version", in->version},
    };
    for (size_t i = 0; i < IMGD_ARRAY_LEN(strs); i++) {
        if (!str_ok(strs[i].s)) {
            return imgd_fail(IMGD_E_INVALID_ARG, "A1111 parameters: %s is not valid UTF-8",
                             strs[i].name);
        }
    }
    for (size_t i = 0; i < 2 * in->n_extra; i++) {
        if (!in->extra[i] || !str_ok(in->extra[i])) {
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "A1111 parameters: extra[%zu] is NULL or not valid UTF-8", i);
        }
    }
    imgd_buf b;
    imgd_buf_init(&b, 1u << 20);
    imgd_status st = imgd_buf_puts(&b, in->prompt ? in->prompt : "");
    if (st == IMGD_OK && in->negative_prompt && *in->negative_prompt) {
        st = imgd_buf_puts(&b, "\nNegative prompt: ");
        if (st == IMGD_OK) st = imgd_buf_puts(&b, in->negative_prompt);
    }
    if (st == IMGD_OK) st = imgd_buf_puts(&b, "\n");
    if (st == IMGD_OK) st = a1111_fields(in, &b);
    if (st != IMGD_OK) {
        imgd_buf_free(&b);
        return imgd_fail_prefix(st, "A1111 parameters");
    }
    /* Python's str.strip(). */
    size_t s = 0, e = b.len;
    while (s < e && is_space(b.data[s])) s++;
    while (e > s && is_space(b.data[e - 1])) e--;
    memmove(b.data, b.data + s, e - s);
    b.data[e - s] = '\0';
    b.len         = e - s;
    *out          = imgd_buf_take(&b);
    return IMGD_OK;
}
