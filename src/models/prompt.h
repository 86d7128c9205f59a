/* A1111 (stable-diffusion-webui) prompt handling for CLIP text encoders: attention syntax,
 * BREAK, 75-token chunks with comma backtracking, textual-inversion expansion, and the
 * "Original" emphasis that rescales the encoder output.
 *
 * Syntax (modules/prompt_parser.py, parse_prompt_attention):
 *   (text)        weight x1.1         ((text)) x1.21, nesting multiplies
 *   [text]        weight /1.1
 *   (text:1.3)    weight x1.3 (a number of ASCII or Unicode digits and '.', optional sign)
 *   \( \) \[ \] \\  literal characters; a backslash before anything else is dropped
 *   BREAK         (upper case, a whole word) ends the current 75-token chunk
 * Unbalanced brackets are handled as A1111 does: a ')' or ']' with nothing open is literal
 * text, an unclosed '(' or '[' applies to the end of the prompt. Where A1111 would raise an
 * exception (a weight such as "1.2.3" that Python's float() rejects) the ':' is literal text
 * and the ')' an ordinary closing bracket; non-finite weights are treated the same way.
 * Scheduling ([a:b:0.5]), alternation ([a|b]), AND and <lora:...> are not handled here:
 * strip or resolve them before.
 *
 * Chunking (modules/sd_hijack_clip.py, tokenize_line): segments of equal weight are merged
 * and tokenized separately, tokens fill chunks of 75; when a chunk is full and a comma lies
 * within the last 20 tokens, the tokens after that comma move to the next chunk. Every chunk
 * becomes BOS + 75 tokens + EOS; the unused tail is filled with EOS and, when pad_id is not
 * EOS (SDXL's second tokenizer: 0), everything after the first EOS becomes pad_id. Weights
 * are 1.0 for BOS, EOS and padding.
 *
 * Textual inversion: the tokenizer's added tokens are the table. A word added with
 * imgd_clip_tok_add_embedding (or any added token W for which W_1, W_2, ... are added
 * tokens: diffusers' naming and maybe_convert_prompt rule) expands to all its vector tokens
 * (ids the text encoder maps to the embedding's vectors), never split across chunks (A1111
 * starts a new chunk when they do not fit).
 *
 * Usage:
 *
 *     imgd_prompt_chunks pc;
 *     // pad: imgd_clip_tok_pad(tok) is EOS for SD 1.x/2.x and 0 for SDXL's tokenizer_2
 *     if (imgd_prompt_encode(tok, "a (red:1.2) car, [blurry]", imgd_clip_tok_pad(tok), &pc)
 *         == IMGD_OK) {
 *         for (size_t c = 0; c < pc.n_chunks; c++) {
 *             encode pc.ids + c * IMGD_PROMPT_CHUNK_LEN with the text encoder -> z[77][C];
 *             imgd_prompt_apply_weights(z, IMGD_PROMPT_CHUNK_LEN, C,
 *                                       pc.weights + c * IMGD_PROMPT_CHUNK_LEN);
 *             concatenate the chunks' z along the token axis
 *         }
 *         imgd_prompt_chunks_free(&pc);
 *     }
 *
 * Thread-safety: every function only reads the tokenizer; calls are independent and may
 * run concurrently (not with imgd_clip_tok_add_* on the same tokenizer). */
#ifndef IMGD_MODELS_PROMPT_H
#define IMGD_MODELS_PROMPT_H

#include <stdbool.h>

#include "base/base.h"
#include "models/tokenizer.h"

#define IMGD_PROMPT_CHUNK_TOKENS    75 /* prompt tokens per chunk */
#define IMGD_PROMPT_CHUNK_LEN       77 /* BOS + 75 + EOS: the text encoder's sequence */
#define IMGD_PROMPT_COMMA_BACKTRACK 20 /* A1111 default of comma_padding_backtrack */
#define IMGD_PROMPT_BYTES_MAX       ((size_t)256 * 1024) /* longest prompt accepted, in bytes */

/* One parsed piece of a prompt. A BREAK is text "BREAK" with weight -1 (A1111's marker; a
 * bracket around it changes the weight and it then is ordinary text, as in A1111). */
typedef struct imgd_prompt_seg {
    char  *text;   /* NUL-terminated UTF-8 (points into the parse's own buffer) */
    double weight; /* product of the bracket multipliers, computed as A1111 does */
} imgd_prompt_seg;

typedef struct imgd_prompt_parsed {
    imgd_prompt_seg *segs; /* n >= 1 segments; adjacent ones always differ in weight */
    size_t           n;
    char            *buf; /* owns every segs[i].text */
} imgd_prompt_parsed;

/* Parses A1111 attention syntax (parse_prompt_attention) without tokenizing.
 *
 * prompt  UTF-8, NUL-terminated; borrowed for the call.
 * out     on IMGD_OK owns the segments (release with imgd_prompt_parsed_free); zeroed on
 *         failure. An empty prompt gives one segment ("", 1.0).
 *
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (NULL, or not valid UTF-8); IMGD_E_TOO_LARGE when the
 * prompt exceeds IMGD_PROMPT_BYTES_MAX or nests brackets so deeply that weighting would
 * take more than 16M steps (A1111 is quadratic there); IMGD_E_NOMEM. */
imgd_status imgd_prompt_parse(const char *prompt, imgd_prompt_parsed *out);

/* Releases a parse (NULL or zeroed is a no-op) and zeroes it. */
void imgd_prompt_parsed_free(imgd_prompt_parsed *p);

/* Options of imgd_prompt_encode_opts; start from imgd_prompt_opts_default(). */
typedef struct imgd_prompt_opts {
    int32_t pad_id;          /* id after the first EOS of a chunk: EOS (49407) for SD 1.x/2.x and
                                SDXL's first tokenizer, 0 for SDXL's second; -1 (default) = the
                                tokenizer's own, imgd_clip_tok_pad() */
    int32_t comma_backtrack; /* tokens to look back for a comma when a chunk is full;
                                0 = off; default IMGD_PROMPT_COMMA_BACKTRACK */
    bool no_emphasis;        /* A1111 emphasis "None": the whole prompt is one segment of weight
                                1.0; brackets, escapes and BREAK are plain text */
} imgd_prompt_opts;

imgd_prompt_opts imgd_prompt_opts_default(void);

/* The encoded prompt: n_chunks rows of IMGD_PROMPT_CHUNK_LEN ids and weights. */
typedef struct imgd_prompt_chunks {
    size_t   n_chunks; /* >= 1 */
    int32_t *ids;      /* [n_chunks][77] */
    float   *weights;  /* [n_chunks][77]; 1.0 at BOS, EOS and padding */
    size_t   n_tokens; /* A1111's token count (the "N/75" shown in its UI) */
} imgd_prompt_chunks;

/* Parses, tokenizes and chunks a prompt.
 *
 * t       tokenizer (borrowed for the call).
 * prompt  UTF-8, NUL-terminated; borrowed.
 * opts    NULL for imgd_prompt_opts_default().
 * out     on IMGD_OK owns the arrays (imgd_prompt_chunks_free); zeroed on failure.
 *
 * Returns IMGD_OK; the statuses of imgd_prompt_parse and imgd_clip_tok_encode;
 * IMGD_E_INVALID_ARG for opts out of range (comma_backtrack < 0 or > 75). */
imgd_status imgd_prompt_encode_opts(const imgd_clip_tok *t, const char *prompt,
                                    const imgd_prompt_opts *opts, imgd_prompt_chunks *out);

/* imgd_prompt_encode_opts with default options and the given pad id (see opts.pad_id;
 * -1 = imgd_clip_tok_pad(t)). */
imgd_status imgd_prompt_encode(const imgd_clip_tok *t, const char *prompt, int32_t pad_id,
                               imgd_prompt_chunks *out);

/* Releases the arrays (NULL or zeroed is a no-op) and zeroes *c. */
void imgd_prompt_chunks_free(imgd_prompt_chunks *c);

/* A1111's "Original" emphasis on one chunk's encoder output, in place:
 *   m0 = mean(z); z[i][:] *= weights[i]; m1 = mean(z); z *= m0 / m1
 * (means over all tokens x width values, rounded to float as torch's float32 means are).
 * When m1 is 0 or not finite the rescale is skipped (A1111 would produce NaN/inf).
 * A1111 takes the means over the whole batch of prompts it encodes together; for a batch
 * of one prompt (or identical prompts) this per-chunk form is the same.
 *
 * z        [tokens][width] floats, row-major.
 * weights  [tokens] multipliers (imgd_prompt_chunks.weights of that chunk).
 * All-1.0 weights leave z unchanged up to rounding of the rescale (m0/m1 = 1 exactly). */
void imgd_prompt_apply_weights(float *z, size_t tokens, size_t width, const float *weights);

#endif
