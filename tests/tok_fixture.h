/* A tiny CLIP-style BPE tokenizer folder for unit tests (no ../shared needed): the 256
 * byte-level symbols and their "</w>" forms in GPT-2 bytes_to_unicode order (ids 0..511,
 * as in CLIP), a few merges, then <|startoftext|> and <|endoftext|>.
 *
 * Merges (in rank order) and what they make:
 *     c a -> ca    ca t</w> -> cat</w>    d o -> do    do g</w> -> dog</w>
 *     r e -> re    re d</w> -> red</w>    ' s</w> -> 's</w>
 * so "cat", "dog", "red" are one token each and every other letter is one token per
 * character ("ab" -> "a", "b</w>"). */
#ifndef IMGD_TEST_TOK_FIXTURE_H
#define IMGD_TEST_TOK_FIXTURE_H

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

static const char *const tf_merges[][2] = {
    {"c", "a"}, {"ca", "t</w>"}, {"d", "o"},     {"do", "g</w>"},
    {"r", "e"}, {"re", "d</w>"}, {"'", "s</w>"},
};

static inline size_t tf_put_utf8(unsigned cp, char *d) {
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    d[0] = (char)(0xC0 | (cp >> 6));
    d[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* GPT-2 bytes_to_unicode order: printable bytes first, then the rest as 256 + k. */
static inline void tf_byte_chars(unsigned out[256]) {
    int n = 0, k = 0;
    for (unsigned b = 0; b < 256; b++) {
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) out[n++] = b;
    }
    for (unsigned b = 0; b < 256; b++) {
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
            out[n++] = 256 + (unsigned)k++;
        }
    }
}

/* Writes "<dir>/vocab.json" and "<dir>/merges.txt" in a fresh folder named after tag.
 * Returns 0 on success. dir receives the folder path. */
static inline int tf_make_tokenizer(const char *tag, char *dir, size_t cap) {
    tu_tmp_path(dir, cap, tag);
    (void)mkdir(dir, 0755);
    char path[4096];
    imgd_fmt(path, sizeof path, "%s/vocab.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned chars[256];
    tf_byte_chars(chars);
    int id = 0;
    fputc('{', f);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 256; i++) {
            char   s[8];
            size_t k        = tf_put_utf8(chars[i], s);
            s[k]            = '\0';
            const char *esc = strcmp(s, "\"") == 0 ? "\\\"" : strcmp(s, "\\") == 0 ? "\\\\" : s;
            fprintf(f, "%s\"%s%s\": %d", id ? ", " : "", esc, pass ? "</w>" : "", id);
            id++;
        }
    }
    for (size_t i = 0; i < sizeof tf_merges / sizeof tf_merges[0]; i++) {
        fprintf(f, ", \"%s%s\": %d", tf_merges[i][0], tf_merges[i][1], id++);
    }
    fprintf(f, ", \"<|startoftext|>\": %d, \"<|endoftext|>\": %d}", id, id + 1);
    if (fclose(f) != 0) return -1;
    imgd_fmt(path, sizeof path, "%s/merges.txt", dir);
    f = fopen(path, "wb");
    if (!f) return -1;
    fputs("#version: 0.2\n", f);
    for (size_t i = 0; i < sizeof tf_merges / sizeof tf_merges[0]; i++) {
        fprintf(f, "%s %s\n", tf_merges[i][0], tf_merges[i][1]);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* Removes the folder made by tf_make_tokenizer (best effort). */
static inline void tf_remove_tokenizer(const char *dir) {
    char path[4096];
    imgd_fmt(path, sizeof path, "%s/vocab.json", dir);
    (void)remove(path);
    imgd_fmt(path, sizeof path, "%s/merges.txt", dir);
    (void)remove(path);
    (void)rmdir(dir);
}

#endif
