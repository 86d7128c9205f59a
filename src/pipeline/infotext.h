/* A1111 "infotext": the generation-parameters text that A1111 writes into its images (PNG
 * `parameters` chunk, JPEG/WebP EXIF UserComment) and that civitai, A1111's "PNG info" and
 * other tools read back. Built in the order and format of A1111's
 * modules/processing.py create_infotext (v1.9+, with "Schedule type"); pipeline/image.h
 * embeds the text in the files it writes.
 *
 * Thread-safety: every function is safe from any thread. Layer: pipeline; depends on base. */
#ifndef IMGD_PIPELINE_INFOTEXT_H
#define IMGD_PIPELINE_INFOTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* The fields of A1111's infotext (modules/processing.py create_infotext), in its order.
 * Strings are borrowed UTF-8; NULL (or the stated sentinel) omits a field, as A1111 omits
 * None. Start from imgd_a1111_info_default(). */
typedef struct imgd_a1111_info {
    const char *prompt;             /* first line(s); NULL = "" */
    const char *negative_prompt;    /* "Negative prompt: ..." line; NULL or "" = omitted */
    int32_t     steps;              /* Steps; <= 0 = omitted */
    const char *sampler;            /* Sampler, A1111 display name ("Euler a", "DPM++ 2M"); see
                                       imgd_a1111_sampler_name */
    const char *schedule;           /* Schedule type ("Karras", "Automatic"); see
                                       imgd_a1111_schedule_name */
    double      cfg_scale;          /* CFG scale; < 0 or NaN = omitted */
    uint64_t    seed;               /* Seed; written only when has_seed */
    int32_t     width, height;      /* Size: WxH; omitted unless both >= 1 */
    const char *model_hash;         /* Model hash (A1111: first 10 hex digits of the sha256) */
    const char *model;              /* Model (file name without extension) */
    const char *vae_hash;           /* VAE hash */
    const char *vae;                /* VAE */
    double      denoising_strength; /* Denoising strength (img2img/inpaint); < 0 or NaN =
                                       omitted */
    int32_t clip_skip;              /* Clip skip in A1111's counting (2 = penultimate layer;
                                       diffusers' clip_skip + 1); <= 1 = omitted, as A1111 */
    const char *rng;                /* RNG ("CPU" for torch's CPU generator; NULL for the GPU
                                       default, which A1111 omits) */
    int32_t            mask_blur;   /* Mask blur (inpaint), pixels; < 0 = omitted */
    const char *const *extra;       /* n_extra (key, value) pairs appended after the fields above
                                       (A1111's extra_generation_params: "Lora hashes", ...) */
    size_t      n_extra;
    const char *version; /* Version, last; NULL = "imgd <imgd_version()>", "" = omitted */
    bool        has_seed;
} imgd_a1111_info;

/* Every field omitted (cfg_scale, denoising_strength, mask_blur = -1), prompt "". */
imgd_a1111_info imgd_a1111_info_default(void);

/* Builds the A1111 "parameters" text:
 *
 *     <prompt>
 *     Negative prompt: <negative prompt>
 *     Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 123, ...
 *
 * Fields are "Key: value" joined by ", " in A1111's order; a value containing ',', ':' or
 * a newline is written as a JSON string (A1111's infotext_utils.quote). Numbers use the
 * shortest text that reads back to the same double, without a trailing ".0" (7, 7.5,
 * 0.75). The whole text is stripped of leading and trailing whitespace, as A1111 does.
 *
 * out  on IMGD_OK receives a NUL-terminated heap string (imgd_free); untouched on failure.
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (NULL info/out, a string that is not UTF-8, n_extra
 * without extra; the message names the field); IMGD_E_TOO_LARGE (over 1 MiB of text);
 * IMGD_E_NOMEM. */
imgd_status imgd_a1111_parameters(const imgd_a1111_info *info, char **out);

/* A1111's display name for a sampler given by its ComfyUI / imgd CLI name ("euler_ancestral"
 * -> "Euler a", "dpmpp_2m" -> "DPM++ 2M", "uni_pc" -> "UniPC", ...). NULL when A1111 has no
 * such sampler (ddpm, pndm). */
const char *imgd_a1111_sampler_name(const char *name);

/* A1111's "Schedule type" label for an imgd/ComfyUI schedule name ("karras" -> "Karras",
 * "sgm_uniform" -> "SGM Uniform", "default" -> "Automatic", ...). NULL when A1111 has no
 * such schedule (diffusers' leading / trailing / linspace spacings). */
const char *imgd_a1111_schedule_name(const char *name);

#endif
