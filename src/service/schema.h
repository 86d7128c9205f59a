/* JSON Schema for requests: a validator for the draft 2020-12 subset the /v1 schemas use,
 * default filling, and the generator of a model's generation-request schema.
 *
 * Supported keywords (everything else is an annotation and ignored, as 2020-12 allows):
 *   boolean schemas true / false
 *   type               string or array; "integer" is any number with no fractional part
 *   enum, const        deep JSON equality (1 and 1.0 are equal)
 *   minimum, maximum, exclusiveMinimum, exclusiveMaximum   (numbers, 2020-12 style)
 *   multipleOf         with a relative tolerance of 1e-9 for fractional divisors
 *   minLength, maxLength   counted in Unicode code points (strings are UTF-8)
 *   format             "byte" only: strict base64 (base/base64.h), optionally behind a
 *                      "data:<type>;base64," URL prefix (an imgd extension: clients send
 *                      both); other formats are annotations
 *   properties, required, additionalProperties (false or a schema), minProperties,
 *   maxProperties, dependentRequired
 *   items (one schema for every element), minItems, maxItems
 *   allOf, anyOf, oneOf, not
 *   $ref               local JSON pointers only: "#" and "#/..." (e.g. "#/$defs/lora"),
 *                      applied alongside the sibling keywords as 2020-12 does
 * Duplicate member names in an object are a violation (keyword "duplicate") when the name is
 * a declared property: cJSON keeps both, and the server must not pick one silently.
 *
 * Order: the first violation found walking the instance depth first in document order.
 * For an object, type comes first, then each member in order (an unknown member reports
 * additionalProperties with a "did you mean" hint), then missing required members and the
 * object's own counts; so a misspelt required name reads as "unknown 'promt': did you mean
 * 'prompt'?", not as "prompt is missing". For an array, its counts come before its items.
 *
 * Nesting (instance depth plus $ref hops) is capped at IMGD_SCHEMA_DEPTH_MAX: deeper input
 * is a violation with keyword "depth", never unbounded recursion. The validator allocates
 * nothing, so it cannot fail for lack of memory. Time is linear in the instance for schemas
 * without allOf/anyOf/oneOf/not; those re-check alternatives, so nesting them multiplies the
 * work: schemas are trusted (the server generates them), instances are not.
 *
 * Thread-safety: every function is safe from any thread on distinct or read-only objects. */
#ifndef IMGD_SERVICE_SCHEMA_H
#define IMGD_SERVICE_SCHEMA_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "base/base.h"

#define IMGD_SCHEMA_DEPTH_MAX 64
#define IMGD_SCHEMA_DIALECT   "https://json-schema.org/draft/2020-12/schema"

typedef struct imgd_schema_violation {
    char pointer[256]; /* RFC 6901 pointer to the bad value ("" = the whole document); for a
                          missing required member, where it should be ("/prompt"). When the
                          full pointer would not fit, the longest ancestor that fits. */
    char detail[512];  /* what is wrong: "steps: 5000 is above the maximum 150" */
    char hint[256];    /* how to fix it: "use an integer from 1 to 150" */
    char keyword[32];  /* the schema keyword that failed: "maximum", "required", "type",
                          "additionalProperties", "format", "duplicate", "depth", ... */
} imgd_schema_violation;

/* Validates instance against schema (a draft 2020-12 document: $ref is resolved against
 * it). Returns true when valid. On false, *v (may be NULL) describes the first violation
 * (see the order above); on true *v is cleared. A malformed schema (an unresolvable $ref,
 * a keyword of the wrong type) is reported as a violation whose detail starts with
 * "schema error:". Both arguments are borrowed. */
bool imgd_schema_validate(const cJSON *schema, const cJSON *instance, imgd_schema_violation *v);

/* Adds each property that has a "default" and is missing from an object in instance,
 * recursively: into present member objects through their property schema, and into each
 * element of arrays through "items" (so {"loras":[{"name":"x"}]} gains weight 1).
 * Follows $ref. Defaults are deep copies. Run it after imgd_schema_validate succeeded.
 * Returns IMGD_OK, IMGD_E_NOMEM (instance then holds the defaults added so far; it is still
 * a valid cJSON tree), IMGD_E_TOO_LARGE (nesting past IMGD_SCHEMA_DEPTH_MAX),
 * IMGD_E_INVALID_ARG (NULL argument). */
imgd_status imgd_schema_apply_defaults(const cJSON *schema, cJSON *instance);

/* What a loaded model can do, as far as a generation request is concerned. Borrowed for
 * the imgd_schema_for_generate call only. */
typedef struct imgd_schema_caps {
    const char        *model_id; /* required: the id clients send in "model" */
    const char        *family;   /* "sd1", "sd2", "sdxl", ... (NULL = unknown) */
    int32_t            size_min, size_max, size_multiple; /* pixels; e.g. 64, 2048, 8 */
    int32_t            width_default, height_default;     /* native size, e.g. 512 */
    int32_t            steps_default, steps_max;          /* e.g. 20, 150 */
    double             cfg_default, cfg_max;              /* e.g. 7.5, 30 */
    int32_t            batch_max;                         /* images per request, >= 1 */
    const char        *sampler_default;  /* a sampler registry name; NULL or unknown = no default */
    const char        *schedule_default; /* a schedule registry name; NULL or unknown = none */
    const char *const *loras;            /* LoRA names usable with this model's base */
    size_t             n_loras;
    const char *const *controlnets; /* ControlNet ids for this model's family */
    size_t             n_controlnets;
    const char *const *embeddings; /* textual-inversion names usable in prompts */
    size_t             n_embeddings;
    const char *const *hypernets; /* A1111 hypernetwork ids for this model (SD family) */
    size_t             n_hypernets;
    bool               img2img;          /* adds init_image and strength */
    bool               inpaint;          /* adds mask_image and mask_blur (and init_image) */
    bool               negative_prompt;  /* adds negative_prompt */
    bool               size_cond;        /* SDXL: adds original_width/height, crop_left/top,
                                            target_width/height (micro-conditioning) */
    bool aesthetic;                      /* SDXL refiner: adds aesthetic_score and
                                            negative_aesthetic_score */
    bool flow;                           /* FLUX.1: flow-matching Euler only (sampler enum
                                            "euler", schedule "default"/"simple"), no
                                            clip_skip, cfg_scale documented as ignored; adds
                                            max_sequence_length (1..512, 0 = seq_default) */
    bool               guidance;         /* FLUX.1-dev: adds guidance (0..100, guidance_default) */
    double             guidance_default; /* e.g. 3.5 */
    int32_t            seq_default; /* T5 tokens with max_sequence_length 0: 512 dev, 256 schnell */
    const char *const *refiners;    /* SDXL base: ids of the SDXL models that can take over the
                                       last steps (refiners first); adds refiner (enum) and
                                       refiner_switch (0 < f < 1, default 0.8) */
    size_t n_refiners;
} imgd_schema_caps;

/* Builds the JSON Schema (draft 2020-12) of a POST /v1/generate body for one model:
 * "$schema", "$id" (urn:imgd:generate:<percent-encoded model id>), "title", "description",
 * type object, additionalProperties false, required ["prompt"], and properties
 *   always:        model, prompt, seed, rng, sampler, schedule, steps, cfg_scale, width,
 *                  height, batch_size, clip_skip, output_format, priority, timeout_s
 *   caps-dependent: negative_prompt (negative_prompt), init_image (img2img or inpaint),
 *                  strength (img2img or inpaint), mask_image and mask_blur (inpaint;
 *                  dependentRequired mask_image -> init_image), loras (n_loras > 0, items
 *                  "$ref": "#/$defs/lora"), hypernets (n_hypernets > 0, items
 *                  "$ref": "#/$defs/hypernet": name, weight), controls (n_controlnets > 0,
 *                  items "$ref": "#/$defs/control": model, image, scale, start, end,
 *                  preprocess, low_threshold, high_threshold, threshold, resize_mode,
 *                  guess_mode), original_width, original_height, crop_left,
 *                  crop_top, target_width, target_height (size_cond), aesthetic_score and
 *                  negative_aesthetic_score (aesthetic), refiner and refiner_switch
 *                  (n_refiners > 0), max_sequence_length (flow; flow
 *                  also narrows sampler/schedule and drops clip_skip), guidance (guidance)
 * Each property has a description (conditional ones say which capability adds them) and a
 * default where one makes sense. Sampler and schedule enums come from the registries in
 * sampling/. "x-imgd-capabilities" records the caps the schema was built from, and
 * "x-imgd-embeddings" the embedding names. Returns a new tree (free with cJSON_Delete), or
 * NULL when out of memory or caps/model_id is NULL. */
cJSON *imgd_schema_for_generate(const imgd_schema_caps *caps);

#endif
