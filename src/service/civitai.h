/* CivitAI model-version metadata stored beside a model file as NAME.civitai.json (written by
 * `imgd pull` from /api/v1/model-versions/{id} or /by-hash/{sha256}): what the worker takes
 * from it to fill request defaults (issue 8).
 *
 * Fields read (everything else is ignored):
 *   baseModel                     "SD 1.5", "SDXL 1.0", ...
 *   trainedWords[]                trigger words (a LoRA's or an embedding's)
 *   recommendedWeight, settings.strength     a LoRA's recommended weight (-10..10)
 *   settings.clipSkip, clipSkip   1..12
 *   settings.sampler              an A1111 sampler name ("DPM++ 2M Karras") or a native one
 *   settings.steps                1..150
 *   settings.cfgScale             0..30
 * A value of the wrong type or out of range is skipped with a warning naming the file, the
 * field and the accepted range; the others still apply. */
#ifndef IMGD_SERVICE_CIVITAI_H
#define IMGD_SERVICE_CIVITAI_H

#include <stdbool.h>
#include <stdint.h>

#define IMGD_CIVITAI_WORDS_MAX 16

typedef struct imgd_civitai_meta {
    char    path[4200];                         /* the sidecar read */
    char    base_model[64];                     /* "" = not stated */
    char    words[IMGD_CIVITAI_WORDS_MAX][128]; /* trainedWords */
    int32_t n_words;
    double  weight; /* valid when has_weight */
    bool    has_weight;
    char    sampler[48]; /* settings.sampler as written; "" = none */
    int32_t steps;       /* 0 = not stated */
    double  cfg;         /* 0 = not stated */
    int32_t clip_skip;   /* 0 = not stated */
} imgd_civitai_meta;

/* Reads the sidecar of model_path (its extension replaced by .civitai.json; a folder gets
 * FOLDER.civitai.json beside it). false (out cleared) when there is none or it is not a JSON
 * object (a warning names the file). Safe from any thread. */
bool imgd_civitai_meta_read(const char *model_path, imgd_civitai_meta *out);

#endif
