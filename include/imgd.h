/*
 * imgd — a universal image-model worker.
 *
 * This header is the whole public C API. Today it covers the foundation: opening any
 * weight file people download (safetensors, PyTorch zip checkpoints read through a
 * restricted unpickler that never executes code, GGUF, diffusers folders), reading its
 * tensors zero-copy, converting it to safetensors, and inspecting it.
 *
 * Conventions
 *   - Every call that can fail returns an imgd_status; outputs go through out-parameters
 *     that are written only on success (exceptions are documented on the call).
 *   - imgd_last_error() gives a thread-local message for the last failing call on the
 *     calling thread: it names the file, the field, what was expected and how to fix it.
 *   - Parameter structs come with an imgd_<x>_params_default() initializer.
 *   - Handles are opaque; each has a matching _free that accepts NULL.
 *
 * Minimal usage: list the tensors of a file.
 *
 *     imgd_weights *w = NULL;
 *     imgd_open_params op = imgd_open_params_default();
 *     if (imgd_weights_open("model.safetensors", &op, &w) != IMGD_OK) {
 *         fprintf(stderr, "%s\n", imgd_last_error());
 *         return 1;
 *     }
 *     for (size_t i = 0; i < imgd_weights_tensor_count(w); i++) {
 *         imgd_tensor_info t;
 *         imgd_weights_tensor(w, i, &t);
 *         printf("%s %s\n", t.name, imgd_dtype_name(t.dtype));
 *     }
 *     imgd_weights_free(w);
 */
#ifndef IMGD_H
#define IMGD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgd_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#    ifdef IMGD_BUILD
#        define IMGD_API __declspec(dllexport)
#    else
#        define IMGD_API __declspec(dllimport)
#    endif
#else
#    define IMGD_API __attribute__((visibility("default")))
#endif

#define IMGD_DEPRECATED(since, msg) __attribute__((deprecated("since " #since ": " msg)))

/* ---------------------------------------------------------------------------------- */
/* Status and errors                                                                   */
/* ---------------------------------------------------------------------------------- */

/* Result of every call that can fail. Append-only; values never change meaning. */
typedef enum imgd_status {
    IMGD_OK            = 0,
    IMGD_E_INVALID_ARG = 1,  /* a parameter is out of range; the message names it */
    IMGD_E_NOMEM       = 2,  /* host or device allocation failed */
    IMGD_E_IO          = 3,  /* open/read/write/mmap failed; the message has errno text */
    IMGD_E_FORMAT      = 4,  /* file is malformed; the message names file, field and fix */
    IMGD_E_UNSUPPORTED = 5,  /* valid but not supported (yet) */
    IMGD_E_TOO_LARGE   = 6,  /* a configured cap was hit */
    IMGD_E_CANCELLED   = 7,  /* a progress callback or cancel flag stopped the call */
    IMGD_E_DEVICE      = 8,  /* backend/driver error (CUDA, oneDNN) */
    IMGD_E_INTERNAL    = 9,  /* a bug: please report */
    IMGD_E_UNSAFE      = 10, /* the file would run code on load (pickle global outside
                                the allow-list); nothing was executed */
    IMGD_E_NOT_FOUND = 11,   /* the named object (job id, model id) does not exist */
    IMGD_E_AUTH      = 12,   /* missing or unknown API key (HTTP 401); never names the key */
    IMGD_STATUS_COUNT
} imgd_status;

/* Static snake_case name of a status ("invalid_argument", "unsafe", ...); also the HTTP
 * error code. Unknown values give "unknown". Safe from any thread. Since: 0.1 */
IMGD_API const char *imgd_status_name(imgd_status status);

/* Message of the last failing imgd call on this thread, or "" when none failed.
 * Valid until the next imgd call on this thread. Safe from any thread. Since: 0.1 */
IMGD_API const char *imgd_last_error(void);

/* Runtime version string, e.g. "0.1.0". Safe from any thread. Since: 0.1 */
IMGD_API const char *imgd_version(void);

/* Compute backends this build has, by index in [0, imgd_backend_count()): static names such
 * as "cpu", "ref" and, when built with the CUDA toolkit, "cuda" (usable only where a GPU is
 * present). imgd_backend_name_at returns NULL out of range. Safe from any thread.
 * Since: 0.2 */
IMGD_API size_t      imgd_backend_count(void);
IMGD_API const char *imgd_backend_name_at(size_t i);

/* ---------------------------------------------------------------------------------- */
/* Logging                                                                             */
/* ---------------------------------------------------------------------------------- */

typedef enum imgd_log_level {
    IMGD_LOG_DEBUG = 0,
    IMGD_LOG_INFO  = 1,
    IMGD_LOG_WARN  = 2,
    IMGD_LOG_ERROR = 3,
    IMGD_LOG_LEVEL_COUNT
} imgd_log_level;

/* A log sink. `line` is one complete JSON object (no trailing newline), borrowed for the
 * duration of the call. May be called from any imgd thread. */
typedef void (*imgd_log_fn)(imgd_log_level level, const char *line, void *user);

/* Sets the process-wide log sink (NULL restores the default: JSON lines on stderr) and
 * the minimum level. Not thread-safe: call before starting other threads. Since: 0.1 */
IMGD_API void imgd_log_set(imgd_log_fn fn, void *user);
IMGD_API void imgd_log_level_set(imgd_log_level level);

/* Progress callback for long calls: `done` of `total` units (bytes for hashing and
 * conversion). Return false to cancel (the call then returns IMGD_E_CANCELLED). */
typedef bool (*imgd_progress_fn)(uint64_t done, uint64_t total, void *user);

/* ---------------------------------------------------------------------------------- */
/* Element types and file formats                                                      */
/* ---------------------------------------------------------------------------------- */

/* Element type of a stored tensor. Append-only. Quantized types are GGUF block formats. */
typedef enum imgd_dtype {
    IMGD_DTYPE_F32     = 0,
    IMGD_DTYPE_F16     = 1,
    IMGD_DTYPE_BF16    = 2,
    IMGD_DTYPE_F64     = 3,
    IMGD_DTYPE_I64     = 4,
    IMGD_DTYPE_I32     = 5,
    IMGD_DTYPE_I16     = 6,
    IMGD_DTYPE_I8      = 7,
    IMGD_DTYPE_U8      = 8,
    IMGD_DTYPE_BOOL    = 9,
    IMGD_DTYPE_F8_E4M3 = 10,
    IMGD_DTYPE_F8_E5M2 = 11,
    IMGD_DTYPE_Q4_0    = 12,
    IMGD_DTYPE_Q4_1    = 13,
    IMGD_DTYPE_Q5_0    = 14,
    IMGD_DTYPE_Q5_1    = 15,
    IMGD_DTYPE_Q8_0    = 16,
    IMGD_DTYPE_Q4_K    = 17,
    IMGD_DTYPE_Q5_K    = 18,
    IMGD_DTYPE_Q6_K    = 19,
    IMGD_DTYPE_Q2_K    = 20,
    IMGD_DTYPE_Q3_K    = 21,
    IMGD_DTYPE_Q8_1    = 22,
    IMGD_DTYPE_U16     = 23,
    IMGD_DTYPE_U32     = 24,
    IMGD_DTYPE_U64     = 25,
    IMGD_DTYPE_COUNT
} imgd_dtype;

/* Canonical upper-case name as safetensors spells it ("F32", "BF16", "Q4_K", ...).
 * Safe from any thread. Since: 0.1 */
IMGD_API const char *imgd_dtype_name(imgd_dtype dtype);

/* Parses a dtype name, case-insensitive ("f16", "BF16", "q8_0"). Returns
 * IMGD_E_INVALID_ARG for an unknown name; *out is written only on success. Since: 0.1 */
IMGD_API imgd_status imgd_dtype_parse(const char *name, imgd_dtype *out);

/* Container a weights handle was read from. Append-only. */
typedef enum imgd_format {
    IMGD_FORMAT_SAFETENSORS = 1,
    IMGD_FORMAT_CKPT        = 2, /* PyTorch zip checkpoint: .ckpt .pt .pth .bin */
    IMGD_FORMAT_GGUF        = 3,
    IMGD_FORMAT_DIFFUSERS   = 4, /* a diffusers folder or one of its component folders */
    IMGD_FORMAT_COUNT
} imgd_format;

/* "safetensors", "ckpt", "gguf", "diffusers". Safe from any thread. Since: 0.1 */
IMGD_API const char *imgd_format_name(imgd_format format);

/* ---------------------------------------------------------------------------------- */
/* Weights: any model file, opened and validated                                       */
/* ---------------------------------------------------------------------------------- */

typedef struct imgd_weights imgd_weights;

#define IMGD_MAX_DIMS 8

typedef struct imgd_open_params {
    uint64_t header_size_max;  /* bytes; cap on a safetensors/GGUF header or a pickle,
                                  0 = default (100 MiB) */
    uint64_t pickle_ops_max;   /* cap on executed pickle opcodes, 0 = default (50 M) */
    uint64_t inflate_size_max; /* bytes; cap on one deflated zip entry once inflated,
                                  0 = default (64 GiB) */
    const char *variant;       /* diffusers weight variant ("fp16"); NULL = prefer the
                                  plain files and fall back to any variant. Copied. */
} imgd_open_params;

/* Defaults for imgd_open_params. Safe from any thread. Since: 0.1 */
IMGD_API imgd_open_params imgd_open_params_default(void);

/* Opens a weight file or a diffusers folder, detects the container from its content
 * (not its extension), validates every length, offset, dtype and span, and returns a
 * handle whose tensors are zero-copy views of the memory-mapped file where the layout
 * allows (safetensors, GGUF, stored checkpoint entries) and owned copies otherwise.
 *
 * path:   borrowed. params: borrowed, NULL = defaults. out: written only on success,
 *         owned by the caller; free with imgd_weights_free().
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (NULL path/out); IMGD_E_IO (cannot open/map);
 * IMGD_E_FORMAT (malformed: the message names file, field and fix); IMGD_E_UNSAFE
 * (a pickle names a global outside the allow-list: nothing was executed);
 * IMGD_E_UNSUPPORTED (recognised but unreadable, e.g. a legacy non-zip torch file);
 * IMGD_E_TOO_LARGE (a cap in params was hit); IMGD_E_NOMEM. On failure nothing is kept.
 * Thread-safety: safe from any thread; handles are independent. Since: 0.1 */
IMGD_API imgd_status imgd_weights_open(const char *path, const imgd_open_params *params,
                                       imgd_weights **out);

/* Frees a handle and unmaps its file; every pointer obtained from it becomes invalid.
 * NULL is a no-op. Since: 0.1 */
IMGD_API void imgd_weights_free(imgd_weights *w);

/* Container the handle was read from. Cannot fail. Since: 0.1 */
IMGD_API imgd_format imgd_weights_format(const imgd_weights *w);

/* Number of tensors. Cannot fail. Since: 0.1 */
IMGD_API size_t imgd_weights_tensor_count(const imgd_weights *w);

/* One tensor's description. name and data are borrowed: valid until
 * imgd_weights_free(w). shape is in row-major (PyTorch) order, outermost first. */
typedef struct imgd_tensor_info {
    const char *name;                 /* UTF-8, unique within the handle */
    const void *data;                 /* raw little-endian bytes in the stored dtype */
    uint64_t    nbytes;               /* size of data in bytes */
    int64_t     shape[IMGD_MAX_DIMS]; /* unused dims are 1 */
    int32_t     n_dims;               /* 0 (scalar) .. IMGD_MAX_DIMS */
    imgd_dtype  dtype;
} imgd_tensor_info;

/* Describes tensor i (0 <= i < count). Returns IMGD_E_INVALID_ARG when i is out of
 * range; *out is written only on success. Safe from any thread. Since: 0.1 */
IMGD_API imgd_status imgd_weights_tensor(const imgd_weights *w, size_t i, imgd_tensor_info *out);

/* Looks a tensor up by exact name (O(1) average). Returns IMGD_E_INVALID_ARG when there
 * is no such tensor. Since: 0.1 */
IMGD_API imgd_status imgd_weights_find(const imgd_weights *w, const char *name,
                                       imgd_tensor_info *out);

/* Number of metadata entries (safetensors __metadata__, GGUF key/values as text,
 * checkpoint non-tensor values, diffusers config files). Cannot fail. Since: 0.1 */
IMGD_API size_t imgd_weights_meta_count(const imgd_weights *w);

/* Metadata entry i; key and value are borrowed until imgd_weights_free(w). Returns
 * IMGD_E_INVALID_ARG when i is out of range. Since: 0.1 */
IMGD_API imgd_status imgd_weights_meta(const imgd_weights *w, size_t i, const char **key,
                                       const char **value);

/* Value of metadata key, or NULL when absent (a getter: absence is not an error). */
IMGD_API const char *imgd_weights_meta_find(const imgd_weights *w, const char *key);

/* ---------------------------------------------------------------------------------- */
/* Convert: any readable input to safetensors                                          */
/* ---------------------------------------------------------------------------------- */

typedef struct imgd_convert_params {
    imgd_open_params open;     /* how to open the input */
    imgd_progress_fn progress; /* may be NULL; bytes written of total */
    void            *user;     /* passed to progress */
    int32_t          dtype;    /* target for floating-point tensors: an imgd_dtype among
                                  F32/F16/BF16, or -1 = keep each tensor's dtype
                                  (quantized tensors are dequantized to F32) */
    bool prune_ema;            /* drop EMA copies (model_ema.*) */
} imgd_convert_params;

/* Defaults for imgd_convert_params (keep dtypes, no pruning). Since: 0.1 */
IMGD_API imgd_convert_params imgd_convert_params_default(void);

typedef struct imgd_convert_result {
    uint64_t tensors;        /* tensors written */
    uint64_t tensors_pruned; /* tensors dropped by prune_ema */
    uint64_t bytes;          /* size of the output file */
} imgd_convert_result;

/* Converts `in` (any format imgd_weights_open reads) to a safetensors file at `out`:
 * metadata carried over, streaming writer, 8-byte aligned header. The output is written
 * to a temporary file beside `out`, read back and verified (same-dtype tensors
 * byte-exact, converted ones equal to a fresh conversion) and only then renamed into
 * place, so `out` is never left half-written. result may be NULL.
 * Returns the statuses of imgd_weights_open for the input, IMGD_E_INVALID_ARG (bad
 * dtype, in == out), IMGD_E_IO (cannot write), IMGD_E_CANCELLED, IMGD_E_INTERNAL
 * (verification failed). On failure `out` is untouched. Safe from any thread. Since: 0.1 */
IMGD_API imgd_status imgd_convert(const char *in, const char *out,
                                  const imgd_convert_params *params, imgd_convert_result *result);

/* ---------------------------------------------------------------------------------- */
/* Detection: what a model is, from names, shapes and metadata alone                   */
/* ---------------------------------------------------------------------------------- */

/* What kind of file a model is. Append-only. */
typedef enum imgd_model_kind {
    IMGD_KIND_UNKNOWN      = 0,
    IMGD_KIND_CHECKPOINT   = 1, /* denoiser + VAE (+ text encoders) in one file or folder */
    IMGD_KIND_UNET         = 2, /* a denoiser alone (UNet or transformer) */
    IMGD_KIND_VAE          = 3,
    IMGD_KIND_TEXT_ENCODER = 4,
    IMGD_KIND_LORA         = 5,
    IMGD_KIND_LYCORIS      = 6,
    IMGD_KIND_EMBEDDING    = 7,
    IMGD_KIND_CONTROLNET   = 8,
    IMGD_KIND_T2I_ADAPTER  = 9,
    IMGD_KIND_HYPERNETWORK = 10,
    IMGD_KIND_UPSCALER     = 11,
    IMGD_KIND_TAESD        = 12,
    IMGD_KIND_COUNT
} imgd_model_kind;

/* Model family (for adapters: the family of the base they fit). Append-only. */
typedef enum imgd_family {
    IMGD_FAMILY_NONE         = 0, /* no family applies (e.g. an upscaler) */
    IMGD_FAMILY_UNKNOWN      = 1,
    IMGD_FAMILY_SD1          = 2,
    IMGD_FAMILY_SD2          = 3,
    IMGD_FAMILY_SDXL         = 4,
    IMGD_FAMILY_SDXL_REFINER = 5,
    IMGD_FAMILY_SD3          = 6,
    IMGD_FAMILY_FLUX_DEV     = 7,
    IMGD_FAMILY_FLUX_SCHNELL = 8,
    IMGD_FAMILY_PIXART       = 9,
    IMGD_FAMILY_KOLORS       = 10,
    IMGD_FAMILY_HUNYUAN_DIT  = 11,
    IMGD_FAMILY_COGVIDEOX    = 12,
    IMGD_FAMILY_WAN          = 13,
    IMGD_FAMILY_COUNT
} imgd_family;

/* "checkpoint", "lora", ... / "sd1", "sdxl_refiner", ... ("null" for IMGD_FAMILY_NONE). */
IMGD_API const char *imgd_model_kind_name(imgd_model_kind kind);
IMGD_API const char *imgd_family_name(imgd_family family);

typedef struct imgd_model_info imgd_model_info;

/* Detects what `w` is: kind, family, variants, layout, capabilities, the architecture
 * config inferred from shapes, components present and missing, resource needs and the
 * evidence behind each decision. Reads names, shapes and metadata only (plus a .yaml
 * beside a single file, when present). An unrecognised input is not an error: it gives
 * kind IMGD_KIND_UNKNOWN with the closest candidates. out: owned by the caller, free with
 * imgd_model_info_free(). Returns IMGD_OK, IMGD_E_INVALID_ARG or IMGD_E_NOMEM.
 * Thread-safety: safe from any thread for distinct outputs; w is only read. Since: 0.1 */
IMGD_API imgd_status imgd_model_detect(const imgd_weights *w, imgd_model_info **out);

/* Frees a detection result; NULL is a no-op. Since: 0.1 */
IMGD_API void imgd_model_info_free(imgd_model_info *mi);

/* Getters; cannot fail. Since: 0.1 */
IMGD_API imgd_model_kind imgd_model_info_kind(const imgd_model_info *mi);
IMGD_API imgd_family     imgd_model_info_family(const imgd_model_info *mi);

/* The detection result as the JSON object `inspect --json` reports under "model".
 * Free with imgd_string_free(). Returns IMGD_OK or IMGD_E_NOMEM. Since: 0.1 */
IMGD_API imgd_status imgd_model_info_json(const imgd_model_info *mi, char **json_out);

/* ---------------------------------------------------------------------------------- */
/* Inspect and hash                                                                    */
/* ---------------------------------------------------------------------------------- */

typedef struct imgd_inspect_params {
    imgd_open_params open;     /* how to open the input */
    imgd_progress_fn progress; /* may be NULL; bytes hashed of total */
    void            *user;
    bool             hash;    /* compute sha256 and the AutoV2 short hash */
    bool             text;    /* a human-readable text report instead of JSON */
    bool             explain; /* text report: list the evidence behind each decision */
} imgd_inspect_params;

/* Defaults for imgd_inspect_params (no hashing). Since: 0.1 */
IMGD_API imgd_inspect_params imgd_inspect_params_default(void);

/* Builds the inspect report of `path` (as text when params->text) or as one JSON object:
 *   format, path, tensors, parameters, bytes, dtypes {dtype: count}, metadata {k: v},
 *   safe (bool), error (string or null), status (imgd_status_name), and with
 *   params->hash: sha256, autov2 (first 10 hex digits of the file's sha256).
 * Unlike other calls, *json_out is also written when the file itself is invalid or
 * unsafe (the report then carries `error`, and `safe` is false for IMGD_E_UNSAFE); the
 * return value is the file's status. *json_out is NULL only for IMGD_E_INVALID_ARG,
 * IMGD_E_NOMEM and IMGD_E_CANCELLED. Free it with imgd_string_free(). Since: 0.1 */
IMGD_API imgd_status imgd_inspect(const char *path, const imgd_inspect_params *params,
                                  char **json_out);

/* Streams the whole file through sha256. hex_out receives 64 lower-case hex digits and a
 * NUL. progress may be NULL. Returns IMGD_E_IO, IMGD_E_CANCELLED or IMGD_OK. Since: 0.1 */
IMGD_API imgd_status imgd_file_sha256(const char *path, imgd_progress_fn progress, void *user,
                                      char hex_out[65]);

/* Frees a string returned by imgd. NULL is a no-op. Since: 0.1 */
IMGD_API void imgd_string_free(char *s);

/* ---------------------------------------------------------------------------------- */
/* Generation (SD 1.x / 2.x, SDXL, FLUX.1)                                             */
/* ---------------------------------------------------------------------------------- */

/* Compute precision of matmul / convolution. AUTO: the fastest mode the backend runs well
 * (bf16 on CPUs with AVX-512-BF16 where it measured faster, else f32). Conformance needs
 * F32. */
typedef enum imgd_precision {
    IMGD_PRECISION_AUTO = 0,
    IMGD_PRECISION_F32  = 1,
    IMGD_PRECISION_BF16 = 2,
    IMGD_PRECISION_F16  = 3,
    IMGD_PRECISION_COUNT
} imgd_precision;

/* "auto", "f32", "bf16", "f16"; parse returns false for anything else. Since: 0.2 */
IMGD_API const char *imgd_precision_name(imgd_precision p);
IMGD_API bool        imgd_precision_parse(const char *s, imgd_precision *out);

/* What the loader cannot read from shapes, or what the user wants instead. 0 / NULL =
 * detected. Narrow or unusual files whose GroupNorm group count or attention head count
 * differs from what detection assumes need these (the error says which to set). */
typedef struct imgd_arch_override {
    int32_t groups;        /* GroupNorm groups of the UNet and VAE (real SD: 32) */
    int32_t unet_heads;    /* attention heads at every UNet level (SD1: 8) */
    int32_t unet_head_dim; /* or: channels per head (SD2: 64); heads = width / head_dim */
    int32_t te_heads;      /* text encoder attention heads (CLIP-L: 12) */
    int32_t prediction;    /* 0 detected, 1 epsilon, 2 v-prediction */
    int32_t rope_axes[4];  /* FLUX rope axes_dims_rope (sum = head dim), e.g. 16, 56, 56;
                              zeros = config.json's, or FLUX.1's for head dim 128. Needed for
                              narrow single files without a config. Since: 0.5 */
} imgd_arch_override;

typedef struct imgd_load_params {
    imgd_open_params open;
    const char      *backend; /* "cpu" (default), "ref" or "cuda" (imgd_backend_name_at) */
    uint32_t         threads; /* 0 = online CPUs */
    imgd_precision   precision;
    const char      *tokenizer_dir; /* vocab.json + merges.txt for single files; NULL: the
                                       model's tokenizer/, $IMGD_TOKENIZER_DIR, then the
                                       default location (README) */
    const char *vae;                /* a separate VAE file/folder to use instead; NULL */
    const char *unet;               /* a separate UNet file/folder (e.g. an inpainting UNet
                                       with the base model's other parts); NULL */
    imgd_arch_override arch;
    const char        *lora_dir;   /* where <lora:name:w> prompt tags and relative
                                      imgd_lora_spec paths are looked up (name,
                                      name.safetensors, .pt, .ckpt); NULL = none. Copied. */
    const char *embedding_dir;     /* textual-inversion embeddings (.pt, .safetensors,
                                      .bin) loaded at load time, each triggered by its file
                                      name in prompts (A1111); unreadable files are skipped
                                      with a warning; NULL = none */
    const char *const *embeddings; /* more embedding files, each triggered by its file name
                                      (without extension); a bad one fails the load */
    size_t n_embeddings;
    /* FLUX.1: the parts a transformer-only file (BFL single file, GGUF, a partial diffusers
     * folder) needs, each a file or a folder. NULL = the model's own (a diffusers folder's
     * text_encoder/ and text_encoder_2/), else the usual file names beside the model and in
     * ComfyUI's ../clip/, ../text_encoders/ (clip_l.safetensors; t5xxl_fp16.safetensors,
     * t5xxl_fp8_e4m3fn.safetensors, t5xxl_fp8_e4m3fn_scaled.safetensors; text_encoder/,
     * text_encoder_2/). The VAE is `vae` above (default: ae.safetensors or vae/ beside the
     * model, ../vae/ae.safetensors). A file given here that holds no encoder of the right
     * kind fails the load naming it. Copied where needed; borrowed for the call. Since: 0.5 */
    const char *clip_l;                 /* CLIP-L text encoder (pooled conditioning) */
    const char *t5;                     /* T5-XXL encoder */
    const char *t5_tokenizer;           /* spiece.model or a folder holding it (tokenizer_2/); NULL:
                                           the model's tokenizer_2/, tokenizer_2/ beside the T5 folder,
                                           spiece.model or tokenizer_2/ beside the model or the T5 file,
                                           $IMGD_T5_TOKENIZER, $XDG_DATA_HOME/imgd/tokenizers/t5
                                           (~/.local/share/...), /usr/local/share/imgd/tokenizers/t5,
                                           /usr/share/imgd/tokenizers/t5 */
    bool embeddings_skip_bad;           /* true: a file of embeddings that cannot be used with this
                                           model (another family's width, not an embedding) is
                                           skipped with a warning instead of failing the load, as
                                           embedding_dir's are. Since: 0.4 */
    struct imgd_components *components; /* share identical components (the VAE) with the other
                                           models loaded with the same store; borrowed, must
                                           outlive the model; NULL = none (Since: 0.5) */
    const char *hypernet_dir;           /* where <hypernet:name:w> prompt tags and relative
                                           imgd_hypernet_spec paths are looked up (name, name.pt,
                                           name.safetensors); NULL = none. Copied. Since: 0.6 */
    uint32_t offload; /* IMGD_OFFLOAD_* bits: with a backend other than cpu (a GPU), run
                         the text encoders (CLIP, T5) and/or the VAE on the cpu backend
                         instead, so their weights and activations take no device memory
                         (f16 becomes f32 there); ignored when backend is cpu. Since: 0.7 */
} imgd_load_params;

/* imgd_load_params.offload bits. Since: 0.7 */
#define IMGD_OFFLOAD_TE  1u /* text encoders */
#define IMGD_OFFLOAD_VAE 2u /* VAE (encode and decode) */
/* Parses "te", "vae", "te,vae" (or "none", "") into IMGD_OFFLOAD_* bits; false (and *bits
 * untouched) on anything else. Since: 0.7 */
IMGD_API bool imgd_offload_parse(const char *s, uint32_t *bits);

/* Defaults for imgd_load_params. Since: 0.2 */
IMGD_API imgd_load_params imgd_load_params_default(void);

typedef struct imgd_model imgd_model;

/* ---- shared components -------------------------------------------------------------------
 *
 * A component store lets models hold identical components once. Models loaded with the
 * same store (imgd_load_params.components) bind their VAE to one copy when it is the same
 * file (a --vae file given to several checkpoints: one mapping) or has the same contents
 * (two checkpoints embedding the same VAE: the same tensor names, dtypes, shapes and
 * bytes, compared by a sha256 over them, computed only when another held VAE has the same
 * names, dtypes and shapes). The copy is reference counted: it lives while any model
 * using it lives. Text encoders and UNets are not shared (LoRAs change them per model).
 *
 * Typical use: imgd_components_new(&c); lp.components = c; load models...; free the
 * models; imgd_components_free(c). */
typedef struct imgd_components imgd_components;

/* Remembers content digests between runs (optional): get fills digest (64 hex digits +
 * NUL) and returns true when one was stored for path with this size and mtime; put stores
 * one. Called with the store's lock held, from the loading thread. */
typedef bool (*imgd_digest_get_fn)(void *user, const char *path, uint64_t size, int64_t mtime_ns,
                                   const char *component, char digest[65]);
typedef void (*imgd_digest_put_fn)(void *user, const char *path, uint64_t size, int64_t mtime_ns,
                                   const char *component, const char *digest);

typedef struct imgd_components_stats {
    uint64_t bytes;        /* tensor bytes of the components held, each counted once */
    uint64_t saved_bytes;  /* bytes not held twice: sum of bytes * (users - 1) */
    uint64_t hashed_bytes; /* tensor bytes read to compute digests (cached ones excluded) */
    uint32_t count;        /* components held */
    uint32_t users;        /* model references to them */
} imgd_components_stats;

/* A new, empty store into *out (owned by the caller; imgd_components_free). Returns IMGD_OK,
 * IMGD_E_INVALID_ARG (out NULL) or IMGD_E_NOMEM (*out untouched). Thread-safety: a store may
 * be shared by loads on several threads (they serialise on its lock). Since: 0.5 */
IMGD_API imgd_status imgd_components_new(imgd_components **out);

/* Sets (or clears, with NULL functions) the digest cache; user is borrowed. Call before
 * loading models with c. Since: 0.5 */
IMGD_API void imgd_components_set_digest_cache(imgd_components *c, imgd_digest_get_fn get,
                                               imgd_digest_put_fn put, void *user);

/* Frees the store. Every model loaded with it must have been freed first (a component
 * still in use is freed anyway, with a warning, and its models must not run again). NULL is
 * a no-op. Since: 0.5 */
IMGD_API void imgd_components_free(imgd_components *c);

/* Current totals. Thread-safety: safe from any thread. Since: 0.5 */
IMGD_API void imgd_components_stats_get(imgd_components *c, imgd_components_stats *out);

/* Opens, detects and prepares a model for generation (weights stay memory-mapped; nothing
 * is copied until a network needs another dtype). IMGD_E_UNSUPPORTED names the detected
 * kind/family when it cannot generate (yet); IMGD_E_FORMAT names a missing component and
 * what to add. out: free with imgd_model_free(). Not thread-safe per model. Since: 0.2 */
IMGD_API imgd_status imgd_model_load(const char *path, const imgd_load_params *params,
                                     imgd_model **out);
IMGD_API void        imgd_model_free(imgd_model *m);

/* Tensor bytes of m's components held in its component store (shared with other models or
 * ready to be; 0 without a store, for NULL, or when nothing was shareable). Thread-safety:
 * safe from any thread while m lives. Since: 0.5 */
IMGD_API uint64_t imgd_model_shared_bytes(const imgd_model *m);

/* The detection result of a loaded model (borrowed; valid while m lives). Since: 0.2 */
IMGD_API const imgd_model_info *imgd_model_get_info(const imgd_model *m);

/* The image size the model was trained at: 512 x 512 (SD 1.x, SD 2.x base), 768 x 768
 * (SD 2.x v-prediction), 1024 x 1024 (SDXL base and refiner, FLUX.1). Since: 0.3 */
IMGD_API void imgd_model_native_size(const imgd_model *m, int32_t *width, int32_t *height);

/* The step count a request without its own should use: 28 for FLUX.1-dev, 4 for
 * FLUX.1-schnell (no guidance embedding), otherwise imgd_gen_params_default()'s 20.
 * NULL gives 20. Thread-safety: any thread. Since: 0.5 */
IMGD_API int32_t imgd_model_default_steps(const imgd_model *m);

/* Whether the model takes distilled guidance (imgd_gen_params.guidance): FLUX.1-dev and
 * its fine-tunes; false for schnell, SD and SDXL. Since: 0.5 */
IMGD_API bool imgd_model_has_guidance(const imgd_model *m);

/* An 8-bit image: c = 1 (gray), 3 (RGB) or 4 (RGBA), rows of w * c bytes. */
typedef struct imgd_image_u8 {
    int32_t  w, h, c;
    uint8_t *px;
} imgd_image_u8;

/* ---- ControlNet -----------------------------------------------------------------------
 *
 * A generation may be guided by ControlNets (imgd_gen_params.controls): SD 1.x / 2.x and
 * SDXL ControlNet files in the original single-file layout (control_model.*) or diffusers'
 * (a ControlNetModel folder or its .safetensors). Each is loaded on first use and cached on
 * the imgd_model by path (freed with it). Every control image is turned into the model's
 * input as diffusers' StableDiffusionControlNetPipeline does: RGB, resized to width x height
 * (after the optional preprocessor, per resize_mode), [0, 1], repeated for the batch and
 * both CFG halves. The residuals of several ControlNets are summed, each multiplied by its
 * scale on the steps inside its [start, end] fraction (diffusers' control_guidance_start /
 * end: step i of n runs when !(i / n < start || (i + 1) / n > end)). A control file that
 * cannot be read, is not a ControlNet, or is one for another family or UNet width fails the
 * whole batch (IMGD_E_IO, IMGD_E_FORMAT, IMGD_E_INVALID_ARG; the message names the file);
 * the model stays usable. Thread-safety: as imgd_generate() (the cache belongs to m). */

/* Built-in preprocessors that need no model. Since: 0.4 */
typedef enum imgd_control_pre {
    IMGD_CONTROL_PRE_NONE     = 0, /* the image is the control map as given */
    IMGD_CONTROL_PRE_CANNY    = 1, /* cv2.Canny(low, high): white edges on black */
    IMGD_CONTROL_PRE_SCRIBBLE = 2, /* black strokes on white -> white on black (threshold) */
    IMGD_CONTROL_PRE_LINEART  = 3, /* white lines on black, binarised above threshold */
    IMGD_CONTROL_PRE_INVERT   = 4, /* 255 - v (white background, black lines) */
    IMGD_CONTROL_PRE_COUNT
} imgd_control_pre;

/* How a control image of another aspect ratio meets width x height (A1111's ControlNet
 * extension). Since: 0.4 */
typedef enum imgd_control_resize {
    IMGD_CONTROL_RESIZE_JUST = 0, /* stretch to width x height */
    IMGD_CONTROL_RESIZE_CROP = 1, /* scale to cover, centre crop ("crop and resize") */
    IMGD_CONTROL_RESIZE_FILL = 2, /* scale to fit, centre, fill with the border's median
                                     colour ("resize and fill") */
    IMGD_CONTROL_RESIZE_COUNT
} imgd_control_resize;

/* Most ControlNets one generation uses. */
#define IMGD_CONTROL_MAX 8

/* One ControlNet of a generation. Borrowed for the call only. */
typedef struct imgd_control_spec {
    const char *path;                /* ControlNet file or folder; required. Loaded once per
                                        model and kept (cached by path) */
    const imgd_image_u8 *image;      /* control image (any size, c = 1, 3 or 4); required */
    float                scale;      /* conditioning scale, 0..10 (default 1) */
    float                start, end; /* fraction of the steps where it acts,
                                        0 <= start < end <= 1 (default 0, 1) */
    int32_t preprocess;              /* imgd_control_pre (default NONE) */
    float   low, high;               /* canny thresholds on the L1 Sobel magnitude, 0..2040
                                        (default 100, 200: A1111's) */
    float   threshold;               /* scribble / lineart threshold, 0..255 (default 127) */
    int32_t resize_mode;             /* imgd_control_resize (default JUST: what diffusers does) */
    bool    guess_mode;              /* diffusers' guess_mode: with CFG the ControlNet acts
                                        on the conditional half only; residual i of 13 is
                                        scaled by 10^(-1 + i / 12) */
} imgd_control_spec;

/* Defaults as documented per field. Since: 0.4 */
IMGD_API imgd_control_spec imgd_control_spec_default(void);

/* "none", "canny", "scribble", "lineart", "invert"; "just", "crop", "fill". NULL for a
 * value outside the enum. parse returns false for an unknown name (out untouched).
 * Thread-safety: any thread. Since: 0.4 */
IMGD_API const char *imgd_control_pre_name(int32_t pre);
IMGD_API bool        imgd_control_pre_parse(const char *name, int32_t *out);
IMGD_API const char *imgd_control_resize_name(int32_t mode);
IMGD_API bool        imgd_control_resize_parse(const char *name, int32_t *out);

/* Seeds: CPU reproduces torch.randn with a CPU torch.Generator (diffusers, ComfyUI on CPU);
 * PHILOX reproduces torch's CUDA generator (A1111 / ComfyUI on NVIDIA GPUs). */
typedef enum imgd_rng_mode {
    IMGD_RNG_MODE_CPU    = 0,
    IMGD_RNG_MODE_PHILOX = 1
} imgd_rng_mode;

/* Called after every sampler step; return false to cancel (IMGD_E_CANCELLED). */
typedef bool (*imgd_step_fn)(int32_t step, int32_t steps, double elapsed_s, void *user);

/* Supplies the n random values of the next draw instead of the RNG (tests replaying a
 * recorded run). Return false to fail the run. */
typedef bool (*imgd_noise_fn)(float *out, size_t n, void *user);

/* How a LoRA is applied. Append-only. */
typedef enum imgd_lora_mode {
    IMGD_LORA_MODE_AUTO  = 0,    /* merged (the batch shares one LoRA set: full-speed steps) */
    IMGD_LORA_MODE_MERGE = 1,    /* W += s * delta in owned copies of the touched weights only;
                                    removing it restores the original weights bit for bit */
    IMGD_LORA_MODE_UNMERGED = 2, /* extra low-rank products at run time; weights untouched */
    IMGD_LORA_MODE_COUNT
} imgd_lora_mode;

/* One LoRA / LyCORIS (LoCon, LoHa, LoKr) adapter of a request. Scale of each module =
 * weight x alpha / rank, as kohya, A1111 and LyCORIS compute it. */
typedef struct imgd_lora_spec {
    const char *path;      /* file, or a name looked up in imgd_load_params.lora_dir */
    float       weight;    /* UNet multiplier (A1111 unet=); 0 = UNet untouched */
    float       weight_te; /* text-encoder multiplier; NAN = weight */
    int32_t     mode;      /* imgd_lora_mode */
} imgd_lora_spec;

/* One A1111 hypernetwork of a request (imgd_gen_params.hypernets): for every attention of
 * the UNet (self-attention included) whose context width has MLPs in the file, to_k and
 * to_v read context + mlp(context) * weight instead of the context, as A1111 applies them.
 * Since: 0.6 */
typedef struct imgd_hypernet_spec {
    const char *path; /* .pt or .safetensors file, or a name looked up in
                         imgd_load_params.hypernet_dir (name, name.pt, name.safetensors) */
    float weight;     /* multiplier (A1111's strength), finite; 0 = no effect */
} imgd_hypernet_spec;

typedef struct imgd_gen_params {
    const char   *prompt;   /* A1111 syntax: (word:1.3), (word), [word], \(, BREAK */
    const char   *negative; /* NULL or "" = the empty prompt's embedding */
    uint64_t      seed;
    imgd_rng_mode rng;
    const char   *sampler; /* euler, euler_ancestral, heun, dpmpp_2m, dpmpp_2m_sde,
                              dpmpp_sde, ddim, ddpm, pndm, lcm, uni_pc */
    const char *schedule;  /* default, normal, karras, exponential, sgm_uniform, simple,
                              leading, trailing, linspace */
    int32_t steps;
    float   cfg;           /* classifier-free guidance scale; <= 1 disables CFG */
    int32_t width, height; /* multiples of 8 */
    int32_t batch;
    int32_t clip_skip;               /* A1111 numbering: 1 = last layer, 2 = penultimate */
    bool    clip_skip_positive_only; /* diffusers' behaviour: the negative prompt keeps
                                        the last layer (A1111 skips both: false) */
    const imgd_image_u8 *init;       /* img2img / inpaint source, resized to width x height */
    float                strength;   /* img2img: fraction of the schedule re-run (0, 1] */
    const imgd_image_u8 *mask;       /* inpaint: white = repaint */
    int32_t              mask_blur;  /* pixels */
    imgd_step_fn         on_step;
    void                *user;
    imgd_noise_fn        noise; /* NULL: the RNG of `rng` and `seed` */
    void                *noise_user;
    /* Adapters, besides <lora:name:w> / <lora:name:w_te:w_unet> tags in the prompt (A1111;
     * removed from the text before tokenizing, names looked up in imgd_load_params.lora_dir).
     * Loaded files are cached by the model; the merged weights change only when a request's
     * set differs from the previous one. A LoRA for another base family is refused
     * (IMGD_E_UNSUPPORTED); keys that match no module are logged as a warning (count and
     * examples). Items of one imgd_generate_many batch must name the same set. */
    const imgd_lora_spec *loras; /* n_loras entries, borrowed for the call; NULL = none */
    int32_t               n_loras;
    int32_t               lora_mode; /* imgd_lora_mode of prompt tags */

    const imgd_control_spec *controls; /* n_controls ControlNets (borrowed for the call);
                                          NULL = none */
    int32_t n_controls;                /* 0..IMGD_CONTROL_MAX */

    /* SDXL micro-conditioning (models with added conditioning; others ignore it), as
     * diffusers' original_size / crops_coords_top_left / target_size. 0 = the default:
     * original and target size = width x height. Since: 0.3 */
    int32_t orig_width, orig_height;
    int32_t crop_left, crop_top;
    int32_t target_width, target_height;
    /* The SDXL refiner's aesthetic-score conditioning of the prompt and of the negative
     * prompt (defaults 6.0 and 2.5). Since: 0.3 */
    float aesthetic_score, negative_aesthetic_score;

    /* SDXL base -> refiner hand-off, as diffusers' denoising_end / denoising_start: the
     * iterations whose timestep is below (1 - refiner_switch) * 1000 run the refiner's UNet
     * on its own conditioning (the same prompts, its encoder, the aesthetic scores); the
     * latents stay shared. NULL = none. The refiner is another loaded SDXL model (a refiner,
     * or any SDXL UNet), borrowed for the call and used from this thread. Since: 0.3 */
    imgd_model *refiner;
    float       refiner_switch; /* (0, 1); default 0.8 */

    /* FLUX.1 (other families ignore these). FLUX is guidance-distilled: it runs no CFG (cfg
     * is ignored and written as 1 in the infotext), has no negative prompt (a non-empty
     * `negative` is refused), uses the flow-matching Euler sampler only (sampler "euler",
     * schedule "default" or "simple") and the prompt verbatim (no A1111 weights or
     * <lora:> tags). Since: 0.5 */
    float guidance;              /* distilled guidance scale, 0..100 (default 3.5); used only
                                    by models with a guidance embedding (dev, not schnell) */
    int32_t max_sequence_length; /* T5 tokens, 1..512; 0 = 512 (dev) / 256 (schnell) */

    /* A1111 hypernetworks, besides <hypernet:name[:w]> tags in the prompt (w defaults to 1;
     * removed from the text before tokenizing, names looked up in
     * imgd_load_params.hypernet_dir). All apply, in order: this list, then the tags. Loaded
     * files are cached by the model; the UNet graph is rebuilt only when a request's set
     * (files and weights) differs from the previous one. A file none of whose widths is the
     * width of an attention context of the model (its cross-attention width or a
     * self-attention's channel count) is refused (IMGD_E_UNSUPPORTED, naming the file, its
     * widths and the model's). SD 1.x / 2.x / SDXL (the request's ControlNets are hooked
     * too, as A1111 hooks every attention); refused for FLUX. Not applied to a refiner.
     * Items of one imgd_generate_many batch must name the same set. Since: 0.6 */
    const imgd_hypernet_spec *hypernets; /* n_hypernets entries, borrowed for the call;
                                            NULL = none */
    int32_t n_hypernets;                 /* 0..16, tags included */
} imgd_gen_params;

/* Defaults: 20 steps, cfg 7.5, 512x512 (the model's native size), euler, default
 * schedule, batch 1, clip_skip 1, strength 0.75, rng CPU, guidance 3.5. Since: 0.2 */
IMGD_API imgd_gen_params imgd_gen_params_default(void);

typedef struct imgd_gen_result {
    int32_t        n;        /* images */
    imgd_image_u8 *images;   /* RGB */
    float         *pixels;   /* [n, 3, h, w] in [0, 1] before 8-bit rounding */
    char          *infotext; /* A1111 "parameters" text of the first image */
    double         t_encode_s, t_sample_s, t_decode_s, t_total_s;
    int32_t        steps_run;
} imgd_gen_result;

/* Generates images. Returns IMGD_E_INVALID_ARG naming the bad field, IMGD_E_CANCELLED,
 * IMGD_E_NOMEM, IMGD_E_FORMAT. out: free with imgd_gen_result_free(). The same as
 * imgd_generate_many() with one item. Thread-safety: one thread at a time per model (the
 * model keeps graphs and caches between calls); different models are independent.
 * Since: 0.2 */
IMGD_API imgd_status imgd_generate(imgd_model *m, const imgd_gen_params *params,
                                   imgd_gen_result **out);
IMGD_API void        imgd_gen_result_free(imgd_gen_result *r);

/* ---- Batching several requests into one sampling loop ---------------------------------
 *
 * Requests for the same model that share what the sampling loop shares (below) can run as
 * one batch: every UNet evaluation covers all of them at once (each request's CFG halves
 * included), which is faster per image than running them one after another. Each item
 * gives exactly the images imgd_generate() gives for it alone (same seed, same noise),
 * within float rounding of a different batch size.
 *
 * Must be equal (imgd_gen_params_batchable() names the first that differs):
 *   width, height, steps, sampler, schedule (NULL and the default name are the same),
 *   whether `init` is set (txt2img vs img2img/inpaint) and, with init, strength; and the
 *   prompt length in 75-token chunks, max(prompt, negative) (a prompt over 75 tokens has
 *   two chunks; the UNet's text context has one length per batch); the LoRA set (loras and
 *   prompt tags, with weights and modes); the hypernetwork set (hypernets and prompt tags,
 *   with weights, in order); and the ControlNet files (`controls[i].path`, in order; none
 *   for both is equal).
 * May differ per item:
 *   prompt, negative, seed, rng, noise (each item draws its own noise, also the
 *   per-step noise of ancestral and SDE samplers, from its own generator in the order a
 *   lone run draws it), cfg (items with cfg <= 1 add no unconditional half to the UNet
 *   batch), batch, clip_skip, clip_skip_positive_only, init image, mask (inpainting and
 *   img2img items mix), mask_blur, on_step / user, each control's image, scale,
 *   start/end, preprocessor, resize mode and guess mode. */

/* Longest batch key imgd_gen_batch_key() writes, NUL included. */
#define IMGD_GEN_BATCH_KEY_MAX 128

/* Longest per-item error message kept by imgd_generate_many(), NUL included. */
#define IMGD_GEN_ERROR_MAX 512

/* Most images (the sum of the items' batch) one imgd_generate_many() call runs. */
#define IMGD_GEN_MANY_IMAGES_MAX 64

/* Outcome of one item of imgd_generate_many(). */
typedef struct imgd_gen_item_result {
    imgd_status status;             /* IMGD_OK, or why this item has no images (IMGD_E_CANCELLED
                                       when its on_step returned false) */
    imgd_gen_result *result;        /* IMGD_OK: the images, owned by the caller (free with
                                       imgd_gen_result_free()); otherwise NULL */
    char error[IMGD_GEN_ERROR_MAX]; /* the failure's message (what imgd_last_error() gave
                                       then, truncated to fit); "" on success */
} imgd_gen_item_result;

/* Runs n requests for model m as one batch: one text encoding per item, one sampling loop
 * whose every UNet call covers all items, then one VAE decode per item.
 *
 * items: n borrowed pointers (read during the call only). out: n entries, all written on
 *   every return but the NULL-argument one; out[i].result is the caller's when
 *   out[i].status is IMGD_OK, whatever the call returns.
 * Failures are per item where the cause is: an item whose own fields are invalid
 *   (clip_skip, an unknown sampler name, a bad init image, ...), whose noise callback
 *   fails or which is cancelled fails alone and the others run on. A batch-wide failure
 *   (IMGD_E_NOMEM for the shared buffers, a backend error during a UNet call, strength
 *   that runs no step) is every running item's status. Items that are not batchable with
 *   the first valid item (see above) refuse the whole call before any work: every item
 *   not already failed on its own gets IMGD_E_INVALID_ARG and a message naming the field,
 *   the two items and both values.
 * Cancellation: when item i's on_step returns false, item i stops (IMGD_E_CANCELLED, no
 *   images, its on_step is not called again) and the others go on unchanged. Its slots
 *   stay in the UNet batch until the loop ends (the graph is planned for one batch size),
 *   fed zeros and not decoded: the loop costs the same, the decode less. When every item
 *   has stopped, the loop stops at once.
 * on_step: each running item's callback after every step, in item order; `elapsed_s`
 *   counts from the start of the call.
 * Timings in each result: t_encode_s and t_decode_s are the item's own, t_sample_s the
 *   shared loop's, t_total_s from the start of the call to the item's decode's end.
 * Returns IMGD_OK when every item succeeded; else the status of the first item that failed
 *   (in item order), with imgd_last_error() set to its message. IMGD_E_INVALID_ARG for a
 *   NULL m / items / out or n == 0 (out untouched); IMGD_E_TOO_LARGE when the items ask for
 *   more than IMGD_GEN_MANY_IMAGES_MAX images (every item gets it).
 * Thread-safety: one thread at a time per model, as imgd_generate(). Since: 0.3 */
IMGD_API imgd_status imgd_generate_many(imgd_model *m, const imgd_gen_params *const *items,
                                        size_t n, imgd_gen_item_result *out);

/* Whether a and b can share one imgd_generate_many() batch on model m (the fields listed
 * above are equal). The prompt chunk counts come from m's tokenizer; nothing else of m is
 * used. field: may be NULL; receives the static name of the first field that differs
 * ("width", "height", "steps", "sampler", "schedule", "init", "strength", "prompt", "loras",
 * "hypernets", "controls"; "negative" when the negative prompt cannot be tokenized; "params" for a
 * NULL argument), or NULL when batchable. A field that cannot be read (an unknown sampler name, a
 * prompt the tokenizer rejects) makes the pair not batchable and is named. Agrees with comparing
 * imgd_gen_batch_key() strings. Thread-safety: as imgd_generate() for m. Since: 0.3 */
IMGD_API bool imgd_gen_params_batchable(const imgd_model *m, const imgd_gen_params *a,
                                        const imgd_gen_params *b, const char **field);

/* Writes a short key (< IMGD_GEN_BATCH_KEY_MAX bytes with its NUL) such that two requests
 * for m are batchable exactly when their keys are equal, e.g.
 * "64x64 steps=20 sampler=euler schedule=default init=none chunks=1" (init=0.75: img2img
 * or inpaint with strength 0.75; " controls=N:<16 hex digits>" is appended when the request
 * uses N ControlNets: a hash of their paths). A scheduler groups requests by model and key. Returns
 * IMGD_OK; IMGD_E_INVALID_ARG for NULL arguments, an unknown sampler or schedule name or a
 * prompt the tokenizer rejects (the message names it); IMGD_E_TOO_LARGE when cap is too
 * small. buf is written only on success. Thread-safety: as imgd_generate() for m.
 * Since: 0.3 */
IMGD_API imgd_status imgd_gen_batch_key(const imgd_model *m, const imgd_gen_params *p, char *buf,
                                        size_t cap);

/* Reads a PNG, JPEG or WebP file (detected by content, not extension) into 8-bit pixels
 * (c = 1, 3 or 4). Free out->px with imgd_image_u8_free(). IMGD_E_FORMAT names the file
 * and what is wrong; IMGD_E_TOO_LARGE over 8192 x 8192. Since: 0.2 */
IMGD_API imgd_status imgd_image_read(const char *path, imgd_image_u8 *out);
IMGD_API void        imgd_image_u8_free(imgd_image_u8 *img);

/* Writes img as PNG, JPEG or WebP by the path's extension (.png, .jpg/.jpeg, .webp), with
 * `parameters` (A1111 infotext, may be NULL) embedded where hubs read it back: a PNG
 * "parameters" text chunk, EXIF UserComment for JPEG and WebP. quality 1..100 for lossy
 * formats (0 = 95). Written to a temporary file and renamed. Since: 0.2 */
IMGD_API imgd_status imgd_image_write(const char *path, const imgd_image_u8 *img,
                                      const char *parameters, int32_t quality);

/* ---------------------------------------------------------------------------------- */
/* The worker: HTTP server, job queue                                                  */
/* ---------------------------------------------------------------------------------- */

typedef struct imgd_serve_params {
    const char *const *model_dirs; /* folders whose files and diffusers folders are served;
                                      model ids are paths relative to one of them */
    size_t             n_model_dirs;
    const char *const *models; /* ids (or paths inside a model dir) loaded at start */
    size_t             n_models;
    const char        *host;        /* bind address; NULL = "127.0.0.1" */
    const char        *state_dir;   /* job database and results; NULL = "imgd-state" */
    const char        *config_path; /* JSON config (auth keys, limits, per-model load
                                       options; README "Worker"); NULL = none */
    imgd_load_params load;          /* how models are loaded (backend, threads, precision) */
    size_t           body_max;      /* request body cap in bytes; 0 = 32 MiB */
    uint64_t         memory_budget; /* bytes of loaded models kept in memory (LRU; models
                                       in use are never evicted); 0 = unlimited. Since 0.4 */
    uint64_t disk_cache_max;        /* bytes of STATE/cache (.ckpt and other unmappable
                                       weights converted once to safetensors, keyed by
                                       sha256; least recently used removed first);
                                       0 = 64 GiB, UINT64_MAX = no disk cache. Since 0.4 */
    int32_t     batch_max;          /* requests of one model and shape run together; 0 = 4 */
    int32_t     batch_wait_ms;      /* wait this long for more requests to batch; 0 = 0 */
    int32_t     queue_max;          /* queued jobs before 503; 0 = 1000 */
    uint32_t    conn_max;           /* simultaneous HTTP connections; 0 = 256 */
    uint16_t    port;               /* 0 = any free port (imgd_server_port says which) */
    const char *model_id;     /* MODEL_ID to serve (README "Deploy"): a file or folder, a Hugging
                                 Face repo id, a CivitAI id, a URL or an AIR; pulled when needed;
                                 an adapter is served on the base found for it. With no
                                 model_dirs only that model is registered (no folder is scanned
                                 at start); NULL = none. Since 0.5 */
    const char *download_dir; /* where MODEL_ID pulls go; NULL = STATE/models. Since 0.5 */
    bool        warmup;       /* after loading, run one tiny generation (64x64, 1 step) so the
                                 first request pays no first-run costs. Since 0.5 */
} imgd_serve_params;

/* Defaults for imgd_serve_params. Since: 0.3 */
IMGD_API imgd_serve_params imgd_serve_params_default(void);

typedef struct imgd_server imgd_server;

/* Opens the state directory (re-queueing jobs a previous run left unfinished), loads the
 * listed models and starts serving HTTP on a background thread. Returns IMGD_E_IO (cannot
 * listen, state dir unusable), IMGD_E_FORMAT (bad config: the message names the field),
 * the statuses of imgd_model_load for listed models, IMGD_E_NOMEM. Strings in p are copied.
 * Since: 0.3 */
IMGD_API imgd_status imgd_server_start(const imgd_serve_params *p, imgd_server **out);

/* The bound TCP port. Since: 0.3 */
IMGD_API uint16_t imgd_server_port(const imgd_server *s);

/* Graceful stop: stops accepting connections, lets the running batch finish (up to
 * grace_s seconds, then cancels it; cancelled-by-shutdown jobs stay queued in the state
 * directory and run after the next start), stops and frees. NULL is a no-op. Since: 0.3 */
IMGD_API void imgd_server_stop(imgd_server *s, double grace_s);

/* Seconds imgd_server_start took from its call to ready (MODEL_ID resolved and pulled, models
 * loaded, warm-up run, HTTP listening); also the imgd_start_to_ready_seconds metric.
 * Since: 0.5 */
IMGD_API double imgd_server_start_seconds(const imgd_server *s);

/* Resolves a MODEL_ID as imgd_server_start does (imgd_serve_params.model_id) without serving
 * it: pulls it when needed, detects it and, for an adapter, finds its base. state_dir: the
 * registry cache (NULL = "imgd-state"); download_dir: NULL = STATE/models; search_dirs: folders
 * searched for a base. report_json on IMGD_OK: {"model_id", "source", "path", "kind", "family",
 * "base": {"path", "family", "found_by"}, "adapter": {"path", "kind", "weight", "weight_from",
 * "trigger_words"} or null, "tried": [...], "download_s"}; free with imgd_string_free().
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (an id of no known form, an incompatible base: the message
 * says which and what would work); IMGD_E_NOT_FOUND (no base: the message lists what was tried
 * and the candidates); IMGD_E_UNSUPPORTED (a kind that cannot be served); the statuses of
 * imgd_pull and imgd_weights_open. Thread-safety: safe from any thread. Since: 0.5 */
IMGD_API imgd_status imgd_model_id_resolve(const char *model_id, const char *state_dir,
                                           const char *download_dir, const char *const *search_dirs,
                                           size_t n_search_dirs, char **report_json);

/* ---------------------------------------------------------------------------------- */
/* RunPod serverless: the worker side of RunPod's job protocol                         */
/* ---------------------------------------------------------------------------------- */

typedef struct imgd_runpod_params {
    const char *get_job_url;      /* NULL = $RUNPOD_WEBHOOK_GET_JOB ("$ID" -> pod id) */
    const char *post_output_url;  /* NULL = $RUNPOD_WEBHOOK_POST_OUTPUT ("$ID" -> job id,
                                     "$RUNPOD_POD_ID" -> pod id) */
    const char *ping_url;         /* NULL = $RUNPOD_WEBHOOK_PING ("$RUNPOD_POD_ID" -> pod id);
                                     "" = no heartbeat */
    const char *api_key;          /* NULL = $RUNPOD_AI_API_KEY (sent as Authorization) */
    const char *pod_id;           /* NULL = $RUNPOD_POD_ID */
    int32_t     concurrency;      /* jobs run at once; 0 = $IMGD_RUNPOD_CONCURRENCY or 1 */
    int32_t     ping_interval_ms; /* 0 = $RUNPOD_PING_INTERVAL or 10000 */
    double      http_timeout_s;   /* per request to RunPod; 0 = $IMGD_RUNPOD_HTTP_TIMEOUT or 90 */
} imgd_runpod_params;

/* Defaults (all from the environment). Since: 0.5 */
IMGD_API imgd_runpod_params imgd_runpod_params_default(void);

/* Starts fetching jobs from RunPod for server s (which must serve at least one model): each
 * job's input is validated and run as a native generation request (the JSON of POST
 * /v1/generate; "model" may be omitted), and {"output": result} or {"error": text} is posted
 * back; progress goes to the output URL as {"status": "IN_PROGRESS", "output": {...}}, and
 * a 404/410 answer there (the job was cancelled) cancels the job here. imgd_server_stop()
 * stops fetching, lets running jobs finish within its grace period and posts an error for the
 * ones it cut off. Returns IMGD_OK; IMGD_E_INVALID_ARG naming the missing variable (a URL,
 * the pod id); IMGD_E_NOMEM. Call once per server. Since: 0.5 */
IMGD_API imgd_status imgd_server_runpod_start(imgd_server *s, const imgd_runpod_params *p);

/* ---------------------------------------------------------------------------------- */
/* Model hubs: downloading models (imgd pull)                                          */
/* ---------------------------------------------------------------------------------- */

typedef struct imgd_pull_params {
    const char *source;        /* what to fetch:
                                  "org/name[@revision]" or "hf:org/name[@revision]": a Hugging Face
                                    repo (a diffusers pipeline: model_index.json, component configs,
                                    tokenizers and weights; or a single-file repo's weights);
                                  "civitai:VERSION_ID", "civitai-model:MODEL_ID" (its newest
                                    version), "civitai-hash:SHA256" (the version a file with that
                                    hash belongs to; a file already present is only verified),
                                    "civitai-hash:PATH" (a file the user already has: its sha256
                                    is looked up and only PATH's NAME.civitai.json is written,
                                    nothing downloaded; dest_dir may be NULL; since 0.5), or a
                                    civitai.com model/download URL; any other http(s) URL of one
                                    weight file (no hash to check; since 0.5). Copied. */
    const char      *dest_dir; /* folder the files go to (a pipeline into dest_dir/NAME); created */
    const char      *variant;  /* HF weight variant ("fp16"); NULL = the plain weights, else any */
    imgd_progress_fn progress; /* may be NULL; bytes received of bytes expected, all files */
    void            *user;
    int32_t          parallel; /* files downloaded at once; 0 = 4 */
    int32_t          retries;  /* tries per file after a failure (429, cut connection); 0 = 4 */
} imgd_pull_params;

/* Defaults for imgd_pull_params. Since: 0.4 */
IMGD_API imgd_pull_params imgd_pull_params_default(void);

/* Downloads a model from a hub with libcurl. Base URLs come from IMGD_HF_ENDPOINT (default
 * https://huggingface.co) and IMGD_CIVITAI_ENDPOINT (default https://civitai.com); tokens from
 * HF_TOKEN and CIVITAI_TOKEN (sent as a bearer token to the hub's own host only). Each file is
 * written to NAME.part, resumed with an HTTP Range request after a cut connection or an earlier
 * interrupted run, checked against the sha256 the hub states (HF LFS metadata, CivitAI
 * hashes.SHA256) and only then renamed to NAME; a file already present with the stated hash is
 * not downloaded again. HTTP 429 waits for Retry-After (at most 60 s) and retries. CivitAI's
 * version metadata (baseModel, trainedWords, ...) is written beside the file as
 * NAME.civitai.json.
 * report_json: may be NULL; on IMGD_OK receives {"source","dir","files":[{"path","bytes",
 *   "sha256","downloaded"}]}; free with imgd_string_free().
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (unreadable source); IMGD_E_NOT_FOUND (404: the message
 * names the repo, file or id and the URL); IMGD_E_AUTH (401/403: the message names the token
 * variable to set); IMGD_E_IO (network failure or HTTP error after the retries, a write
 * failure); IMGD_E_FORMAT (the hub's JSON is not what it should be, or a file's sha256 differs
 * from the stated one: the .part is deleted); IMGD_E_CANCELLED (progress returned false; .part
 * files are kept for a resume). Files finished before a failure stay in place.
 * Thread-safety: safe from any thread. Since: 0.4 */
IMGD_API imgd_status imgd_pull(const imgd_pull_params *params, char **report_json);

#ifdef __cplusplus
}
#endif

#endif /* IMGD_H */
