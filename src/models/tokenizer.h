/* CLIP byte-level BPE tokenizer: transformers' slow CLIPTokenizer (as used by diffusers for
 * SD 1.x/2.x "tokenizer" and SDXL "tokenizer_2"), loaded from a folder holding the HF files
 * vocab.json and merges.txt.
 *
 * Behaviour (reproduces transformers without ftfy, the default of a plain install):
 *   1. special tokens anywhere in the text become their ids (exact bytes, before any
 *      cleanup): "<|startoftext|>", "<|endoftext|>", the tokens listed in the folder's
 *      tokenizer_config.json (SDXL's tokenizer_2 adds its pad token "!" = 0) and any added
 *      with imgd_clip_tok_add_special; words added with imgd_clip_tok_add_token where they
 *      appear as whole words (see there);
 *   2. the rest: drop NUL, U+FFFD and every category C* character except \t \n \r; map
 *      \t \n \r and Zs to a space; put spaces around CJK ideographs; NFC-normalise; split on
 *      whitespace; lowercase each piece like Python's str.lower (full mapping: U+0130 -> "i̇",
 *      final sigma);
 *   3. the CLIP pre-tokenizer regex
 *      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      (case-insensitive), each match's UTF-8 bytes mapped to GPT-2's byte-level unicode
 *      characters, then BPE with "</w>" on the last symbol of the word.
 * merges.txt is read like transformers: the first line (the "#version" header) is skipped
 * and at most 48894 merges are used. An optional tokenizer_config.json (or, without it,
 * special_tokens_map.json) supplies added special tokens and pad_token. Unicode data comes
 * from utf8proc.
 *
 * Usage:
 *
 *     imgd_clip_tok *tok = NULL;
 *     if (imgd_clip_tok_load("model/tokenizer", &tok) != IMGD_OK) { ... imgd_last_error() }
 *     int32_t *ids = NULL; size_t n = 0;
 *     if (imgd_clip_tok_encode(tok, "a photo of a cat", &ids, &n) == IMGD_OK) {
 *         ... BOS = imgd_clip_tok_bos(tok), ids[0..n), EOS = imgd_clip_tok_eos(tok) ...
 *         imgd_free(ids);
 *     }
 *     imgd_clip_tok_free(tok);
 *
 * Thread-safety: a loaded tokenizer may be used by any number of threads at once for
 * encoding and the getters (the word cache inside is guarded by a mutex). The calls that
 * add tokens change the vocabulary and must not run concurrently with any other call on
 * the same tokenizer. */
#ifndef IMGD_MODELS_TOKENIZER_H
#define IMGD_MODELS_TOKENIZER_H

#include <stdbool.h>

#include "base/base.h"

typedef struct imgd_clip_tok imgd_clip_tok;

/* Largest text imgd_clip_tok_encode accepts, in bytes (IMGD_E_TOO_LARGE beyond). */
#define IMGD_CLIP_TOK_TEXT_MAX (4u << 20)
/* Longest word imgd_clip_tok_add_token accepts, in bytes. */
#define IMGD_CLIP_TOK_WORD_MAX 255u

/* Loads dir/vocab.json and dir/merges.txt (and dir/tokenizer_config.json or
 * dir/special_tokens_map.json when present).
 *
 * dir  folder path (UTF-8); copied as needed, may be freed after the call.
 * out  on IMGD_OK a new tokenizer owned by the caller (imgd_clip_tok_free); untouched on
 *      failure.
 *
 * Returns IMGD_OK; IMGD_E_IO when dir or one of the files is missing or unreadable (the
 * message names the folder, the file and what to put there: the tokenizer/ folder of a
 * diffusers model); IMGD_E_FORMAT when a file is malformed (not a JSON object of token ->
 * id with ids 0..n-1 each used once, a merge whose result is not in vocab.json, a missing
 * byte-level token or special token; the message names file, entry and fix);
 * IMGD_E_TOO_LARGE when a file exceeds 64 MiB or the vocabulary 16M tokens; IMGD_E_NOMEM.
 * Thread-safety: safe from any thread. */
imgd_status imgd_clip_tok_load(const char *dir, imgd_clip_tok **out);

/* Builds a tokenizer from the text of vocab.json and merges.txt held in memory (no
 * tokenizer_config.json: pad is EOS, only the two CLIP special tokens are special). Both
 * buffers are borrowed for the call. Returns the statuses of imgd_clip_tok_load except
 * IMGD_E_IO; messages name "tokenizer (in memory)". Thread-safety: safe from any thread. */
imgd_status imgd_clip_tok_load_mem(const char *vocab_json, size_t vocab_len, const char *merges_txt,
                                   size_t merges_len, imgd_clip_tok **out);

/* Releases a tokenizer. NULL is a no-op. */
void imgd_clip_tok_free(imgd_clip_tok *t);

/* Tokenizes text (UTF-8, NUL-terminated) into BPE ids WITHOUT BOS/EOS.
 *
 * ids  on IMGD_OK a new array of *n ids (never NULL, even when *n is 0) owned by the caller:
 *      release with imgd_free. Both untouched on failure.
 *
 * Returns IMGD_OK; IMGD_E_INVALID_ARG when text is not well-formed UTF-8 (the message gives
 * the byte offset); IMGD_E_TOO_LARGE when text exceeds IMGD_CLIP_TOK_TEXT_MAX bytes;
 * IMGD_E_NOMEM. Thread-safety: see the file comment (concurrent encodes are fine). */
imgd_status imgd_clip_tok_encode(const imgd_clip_tok *t, const char *text, int32_t **ids,
                                 size_t *n);

/* Ids of "<|startoftext|>" (49406 for CLIP) and "<|endoftext|>" (49407). */
int32_t imgd_clip_tok_bos(const imgd_clip_tok *t);
int32_t imgd_clip_tok_eos(const imgd_clip_tok *t);

/* The pad id from the folder's pad_token (0 for SDXL's tokenizer_2, whose pad token is "!");
 * EOS when the folder names none or names "<|endoftext|>". */
int32_t imgd_clip_tok_pad(const imgd_clip_tok *t);

/* Number of ids: vocab.json's size plus tokens added since (len(tokenizer) in HF). */
size_t imgd_clip_tok_vocab_size(const imgd_clip_tok *t);

/* The token string of id ("cat</w>", byte-level characters as in vocab.json), or NULL when
 * id is out of range. Valid until imgd_clip_tok_free(t). */
const char *imgd_clip_tok_token(const imgd_clip_tok *t, int32_t id);

/* Looks up a token string exactly as vocab.json spells it (",</w>"); added tokens too.
 * Returns false (and leaves *id alone) when absent. */
bool imgd_clip_tok_lookup(const imgd_clip_tok *t, const char *token, int32_t *id);

/* True when id is a whole-word token added with imgd_clip_tok_add_token or
 * imgd_clip_tok_add_embedding (not for special tokens). */
bool imgd_clip_tok_is_added(const imgd_clip_tok *t, int32_t id);

/* Appends a whole-word token (textual inversion): it gets id imgd_clip_tok_vocab_size(t)
 * (49408 for the first one on a CLIP vocabulary), and from then on imgd_clip_tok_encode emits
 * that id wherever word appears in a text as a whole word: not preceded or followed by a
 * letter, digit, combining mark or '_', compared ASCII-case-insensitively (like A1111,
 * which matches embedding names on the lowercased tokens). Where several added words match
 * at one place, the longest wins ("narrowti_1" over "narrowti").
 *
 * word  UTF-8, 1..IMGD_CLIP_TOK_WORD_MAX bytes, no whitespace or control characters;
 *       copied.
 * id    when non-NULL receives the new id on success.
 *
 * Returns IMGD_OK; IMGD_E_INVALID_ARG when word is empty, too long, not UTF-8, contains
 * whitespace/controls, or is already a token (vocab.json or added: choose another trigger
 * word, as diffusers requires); IMGD_E_TOO_LARGE past 2^24 ids; IMGD_E_NOMEM. The tokenizer
 * is unchanged on failure. Thread-safety: not concurrently with any other call on t. */
imgd_status imgd_clip_tok_add_token(imgd_clip_tok *t, const char *word, int32_t *id);

/* Makes token special: wherever its exact bytes appear in a text, before any cleanup, it is
 * that id (transformers' added-token trie; the longest special token wins). A token already
 * in the vocabulary keeps its id ("!" = 0); otherwise it is appended.
 *
 * token  UTF-8, 1..IMGD_CLIP_TOK_WORD_MAX bytes; copied.
 * id     when non-NULL receives its id on success.
 *
 * Returns IMGD_OK (also when it already was special); IMGD_E_INVALID_ARG (empty, too long,
 * not UTF-8); IMGD_E_TOO_LARGE; IMGD_E_NOMEM. Thread-safety: as imgd_clip_tok_add_token. */
imgd_status imgd_clip_tok_add_special(imgd_clip_tok *t, const char *token, int32_t *id);

/* Adds the n_vectors tokens of a textual-inversion embedding the way diffusers'
 * load_textual_inversion names them: word, word_1, ..., word_<n-1>, with consecutive ids
 * from *first_id (e.g. "narrowti" = 49408, "narrowti_1" = 49409). imgd_prompt_encode then
 * expands the trigger word to all of them. n_vectors is 1..75 (one prompt chunk).
 * Returns the statuses of imgd_clip_tok_add_token (IMGD_E_INVALID_ARG also for n_vectors
 * out of range); nothing is added on failure. Thread-safety: as imgd_clip_tok_add_token. */
imgd_status imgd_clip_tok_add_embedding(imgd_clip_tok *t, const char *word, size_t n_vectors,
                                        int32_t *first_id);

#endif
