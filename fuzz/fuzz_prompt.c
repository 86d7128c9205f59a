/* libFuzzer target: A1111 prompt parsing, CLIP tokenization and chunking on arbitrary
 * text. The first byte picks the options (pad id, comma backtracking, emphasis), the rest is
 * the prompt. The tokenizer is a small byte-level vocabulary built in memory once, with a
 * textual-inversion embedding and an extra special token so every path is reachable. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "models/prompt.h"
#include "models/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const g_merges[][2] = {
    {"c", "a"},      {"ca", "t</w>"}, {"d", "o"}, {"do", "g</w>"}, {"r", "e"},
    {"re", "d</w>"}, {"'", "s</w>"},  {"a", "a"}, {"aa", "aa"},    {"aaaa", "a</w>"},
};

static size_t put_utf8(unsigned cp, char *d) {
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    d[0] = (char)(0xC0 | (cp >> 6));
    d[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* vocab.json: GPT-2 byte-level characters, their "</w>" forms, the merge results, the two
 * special tokens. */
static bool build_vocab(imgd_buf *v, imgd_buf *m) {
    unsigned chars[256];
    int      n = 0, k = 0;
    for (unsigned b = 0; b < 256; b++) {
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) chars[n++] = b;
    }
    for (unsigned b = 0; b < 256; b++) {
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
            chars[n++] = 256 + (unsigned)k++;
        }
    }
    int  id = 0;
    bool ok = imgd_buf_puts(v, "{") == IMGD_OK;
    for (int pass = 0; ok && pass < 2; pass++) {
        for (int i = 0; ok && i < 256; i++) {
            char s[8];
            s[put_utf8(chars[i], s)] = '\0';
            char tok[16];
            ok = snprintf(tok, sizeof tok, "%s%s", s, pass ? "</w>" : "") > 0 &&
                 imgd_buf_puts(v, id ? "," : "") == IMGD_OK &&
                 imgd_buf_json_str(v, tok) == IMGD_OK && imgd_buf_printf(v, ":%d", id++) == IMGD_OK;
        }
    }
    ok = ok && imgd_buf_puts(m, "#version: 0.2\n") == IMGD_OK;
    for (size_t i = 0; ok && i < sizeof g_merges / sizeof g_merges[0]; i++) {
        ok = imgd_buf_printf(v, ",\"%s%s\":%d", g_merges[i][0], g_merges[i][1], id++) == IMGD_OK &&
             imgd_buf_printf(m, "%s %s\n", g_merges[i][0], g_merges[i][1]) == IMGD_OK;
    }
    return ok && imgd_buf_printf(v, ",\"<|startoftext|>\":%d,\"<|endoftext|>\":%d}", id, id + 1) ==
                     IMGD_OK;
}

static imgd_clip_tok *tokenizer(void) {
    static imgd_clip_tok *t;
    static bool           tried;
    if (tried) return t;
    tried = true;
    imgd_buf v, m;
    imgd_buf_init(&v, 1u << 20);
    imgd_buf_init(&m, 1u << 20);
    if (build_vocab(&v, &m) &&
        imgd_clip_tok_load_mem(v.data, v.len, m.data, m.len, &t) == IMGD_OK &&
        (imgd_clip_tok_add_embedding(t, "emb", 3, NULL) != IMGD_OK ||
         imgd_clip_tok_add_special(t, "<x>", NULL) != IMGD_OK)) {
        imgd_clip_tok_free(t);
        t = NULL;
    }
    imgd_buf_free(&v);
    imgd_buf_free(&m);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const imgd_clip_tok *t = tokenizer();
    if (!t || size == 0) return 0;
    char *text = imgd_malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';

    imgd_prompt_opts o = imgd_prompt_opts_default();
    o.pad_id           = (data[0] & 1) ? 0 : -1;
    o.comma_backtrack  = (data[0] & 2) ? 0 : (int32_t)(data[0] >> 3) % 76;
    o.no_emphasis      = (data[0] & 4) != 0;
    imgd_prompt_chunks pc;
    if (imgd_prompt_encode_opts(t, text, &o, &pc) == IMGD_OK) {
        /* invariants: every row is BOS ... EOS, weights finite or not, sizes consistent */
        volatile int32_t sink = 0;
        for (size_t c = 0; c < pc.n_chunks; c++) {
            const int32_t *row = pc.ids + c * IMGD_PROMPT_CHUNK_LEN;
            if (row[0] != imgd_clip_tok_bos(t)) __builtin_trap();
            sink ^= row[IMGD_PROMPT_CHUNK_LEN - 1];
        }
        (void)sink;
        float z[IMGD_PROMPT_CHUNK_LEN * 2];
        for (size_t i = 0; i < (size_t)IMGD_PROMPT_CHUNK_LEN * 2; i++) z[i] = (float)(i % 7) - 2.5f;
        imgd_prompt_apply_weights(z, IMGD_PROMPT_CHUNK_LEN, 2, pc.weights);
        imgd_prompt_chunks_free(&pc);
    }
    int32_t *ids = NULL;
    size_t   n   = 0;
    if (imgd_clip_tok_encode(t, text, &ids, &n) == IMGD_OK) imgd_free(ids);
    imgd_free(text);
    return 0;
}
