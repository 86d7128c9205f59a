/* T5 tokenizer: a SentencePiece unigram model read from spiece.model, used the way
 * transformers' slow T5Tokenizer (legacy=True, as FLUX.1's and SD3's tokenizer_2/3 configs
 * say) and FluxPipeline use it.
 *
 * spiece.model is a serialized sentencepiece.ModelProto; it is parsed here (no protobuf
 * library) and every length, id and offset is checked: a malformed file fails with
 * IMGD_E_FORMAT naming the file, the byte offset and the field. What is read:
 *   pieces (string, score, type NORMAL/UNKNOWN/CONTROL/USER_DEFINED/UNUSED/BYTE),
 *   trainer_spec model_type (UNIGRAM only), byte_fallback, treat_whitespace_as_suffix,
 *   normalizer_spec precompiled_charsmap (a darts-clone double-array trie + replacement
 *   strings: nmt_nfkc's NFKC-like rules), add_dummy_prefix, remove_extra_whitespaces,
 *   escape_whitespaces.
 *
 * Encoding a text (imgd_t5_tok_encode):
 *   1. transformers' special tokens are split out first, wherever their exact bytes occur:
 *      "<pad>", "</s>", "<unk>" and "<extra_id_N>" (N < extra ids, default 100; id
 *      pieces - 1 + extra - N, so <extra_id_0> is the last id);
 *   2. each text run between them goes through SentencePiece: the normalizer (user-defined
 *      symbols kept verbatim, longest charsmap rule otherwise; leading/trailing whitespace
 *      dropped and runs collapsed; a "▁" prefix; spaces become "▁"), then Viterbi over the
 *      unigram scores (user-defined pieces always win; a character no piece starts with
 *      becomes <unk> with score min - 10), then a run of unknown pieces merges into one
 *      (or, with byte_fallback, each unknown byte becomes its <0xXX> piece).
 * imgd_t5_tok_encode_padded adds what FluxPipeline asks for: </s> appended (unless the ids
 * already end with it), truncation to max_len - 1 ids before that, padding with <pad>.
 *
 * Usage:
 *
 *     imgd_t5_tok *tok = NULL;
 *     if (imgd_t5_tok_load("model/tokenizer_2", &tok) != IMGD_OK) { ... imgd_last_error() }
 *     int32_t ids[512];
 *     size_t  n_text = 0;
 *     if (imgd_t5_tok_encode_padded(tok, prompt, 512, ids, &n_text) == IMGD_OK) { ... }
 *     imgd_t5_tok_free(tok);
 *
 * Thread-safety: a loaded tokenizer is read-only: any number of threads may encode at once. */
#ifndef IMGD_MODELS_T5_TOKENIZER_H
#define IMGD_MODELS_T5_TOKENIZER_H

#include <stdbool.h>

#include "base/base.h"

typedef struct imgd_t5_tok imgd_t5_tok;

/* Largest text an encode accepts, in bytes (IMGD_E_TOO_LARGE beyond). */
#define IMGD_T5_TOK_TEXT_MAX (4u << 20)
/* Largest spiece.model accepted, in bytes (T5's is 0.8 MB, mT5's 4.3 MB). */
#define IMGD_T5_TOK_FILE_MAX (64u << 20)
/* Most pieces a model may have. */
#define IMGD_T5_TOK_PIECES_MAX (1u << 22)
/* Longest piece, in bytes. */
#define IMGD_T5_TOK_PIECE_LEN_MAX 512u

/* Loads a tokenizer from path: a spiece.model file, or a folder holding spiece.model (a
 * diffusers tokenizer_2/ or tokenizer_3/ folder; its tokenizer_config.json, when present,
 * gives extra_ids and legacy).
 *
 * out  on IMGD_OK a new tokenizer owned by the caller (imgd_t5_tok_free); untouched on
 *      failure.
 *
 * Returns IMGD_OK; IMGD_E_IO (missing or unreadable; the message names the path and says
 * where spiece.model comes from); IMGD_E_FORMAT (not a valid sentencepiece model, or a bad
 * tokenizer_config.json: names file, byte offset, field and fix); IMGD_E_UNSUPPORTED (a BPE /
 * word / char model, or legacy=false); IMGD_E_TOO_LARGE (over IMGD_T5_TOK_FILE_MAX or
 * IMGD_T5_TOK_PIECES_MAX); IMGD_E_NOMEM. Thread-safety: safe from any thread. */
imgd_status imgd_t5_tok_load(const char *path, imgd_t5_tok **out);

/* Builds a tokenizer from the bytes of a spiece.model held in memory (borrowed for the
 * call). name is used in messages (NULL: "spiece.model (in memory)"); extra_ids is the
 * number of <extra_id_N> tokens (T5Tokenizer's default is 100; 0..1000). Same statuses as
 * imgd_t5_tok_load except IMGD_E_IO. Thread-safety: safe from any thread. */
imgd_status imgd_t5_tok_load_mem(const void *data, size_t len, const char *name, int32_t extra_ids,
                                 imgd_t5_tok **out);

/* Releases a tokenizer. NULL is a no-op. */
void imgd_t5_tok_free(imgd_t5_tok *t);

/* Plain SentencePiece encoding of text (no special-token splitting, no </s>):
 * sentencepiece's encode(text, out_type=str) and out_type=int.
 *
 * ids     on IMGD_OK a new array of *n ids (never NULL) owned by the caller (imgd_free).
 * pieces  may be NULL; else on IMGD_OK a new buffer (imgd_free) holding the *n piece
 *         strings one after another, each NUL-terminated (unknown runs are their
 *         normalized text, as sentencepiece reports them).
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (text not well-formed UTF-8: names the byte offset);
 * IMGD_E_TOO_LARGE (text over IMGD_T5_TOK_TEXT_MAX); IMGD_E_FORMAT (the model's charsmap
 * points outside its string table); IMGD_E_NOMEM. Outputs untouched on failure. */
imgd_status imgd_t5_tok_sp_encode(const imgd_t5_tok *t, const char *text, int32_t **ids,
                                  char **pieces, size_t *n);

/* T5Tokenizer ids of text (special tokens split out first, see the file comment), without
 * </s>. ids: as in imgd_t5_tok_sp_encode. Same statuses. */
imgd_status imgd_t5_tok_encode(const imgd_t5_tok *t, const char *text, int32_t **ids, size_t *n);

/* What FluxPipeline feeds T5: tokenizer(text, padding="max_length", max_length=max_len,
 * truncation=True). out receives exactly max_len ids (the first ones text ids, then </s>,
 * then <pad>). n_text, when non-NULL, receives the number of ids the text had before
 * truncation (without </s>), so a caller can warn that the prompt was cut.
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (max_len < 1 or > 1<<20, NULL out); the statuses of
 * imgd_t5_tok_encode. out is undefined on failure. */
imgd_status imgd_t5_tok_encode_padded(const imgd_t5_tok *t, const char *text, int32_t max_len,
                                      int32_t *out, size_t *n_text);

/* Number of ids: pieces + extra ids (len(tokenizer) in transformers; 32100 for T5). */
size_t imgd_t5_tok_vocab_size(const imgd_t5_tok *t);
/* Number of SentencePiece pieces (32000 for T5). */
size_t imgd_t5_tok_piece_count(const imgd_t5_tok *t);
/* Ids of "</s>", "<pad>" and "<unk>". */
int32_t imgd_t5_tok_eos(const imgd_t5_tok *t);
int32_t imgd_t5_tok_pad(const imgd_t5_tok *t);
int32_t imgd_t5_tok_unk(const imgd_t5_tok *t);
/* The token string of id: a piece ("▁the"), "<extra_id_N>" (written into buf, which must
 * hold 24 bytes; NULL buf gives NULL for these), or NULL when out of range. Pieces are valid
 * until imgd_t5_tok_free(t). */
const char *imgd_t5_tok_token(const imgd_t5_tok *t, int32_t id, char *buf, size_t cap);

#endif
