/* Hand-built sentencepiece models for the T5 tokenizer tests: a protobuf writer
 * (sentencepiece.ModelProto wire format) and a naive darts-clone double-array builder for
 * precompiled_charsmap blobs. Small and slow on purpose: it only has to produce bytes that
 * the reader under test parses. */
#ifndef IMGD_TEST_SPM_FIXTURE_H
#define IMGD_TEST_SPM_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"

/* A byte buffer with a fixed capacity (tests build small messages). */
typedef struct sf_buf {
    uint8_t b[1 << 16];
    size_t  n;
} sf_buf;

static inline void sf_bytes(sf_buf *o, const void *p, size_t n) {
    if (o->n + n <= sizeof o->b) memcpy(o->b + o->n, p, n);
    o->n += n;
}

static inline void sf_varint(sf_buf *o, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        sf_bytes(o, &c, 1);
    } while (v);
}

static inline void sf_tag(sf_buf *o, uint32_t field, uint32_t wire) {
    sf_varint(o, (uint64_t)field << 3 | wire);
}

static inline void sf_len(sf_buf *o, uint32_t field, const void *p, size_t n) {
    sf_tag(o, field, 2);
    sf_varint(o, n);
    sf_bytes(o, p, n);
}

static inline void sf_str(sf_buf *o, uint32_t field, const char *s) {
    sf_len(o, field, s, strlen(s));
}

static inline void sf_u64(sf_buf *o, uint32_t field, uint64_t v) {
    sf_tag(o, field, 0);
    sf_varint(o, v);
}

static inline void sf_float(sf_buf *o, uint32_t field, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    sf_tag(o, field, 5);
    uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    sf_bytes(o, le, 4);
}

/* Appends a SentencePiece message (ModelProto field 1). type 0 = leave the default. */
static inline void sf_piece(sf_buf *o, const char *piece, float score, int type) {
    sf_buf *m = imgd_calloc(1, sizeof *m);
    if (!m) return;
    sf_str(m, 1, piece);
    sf_float(m, 2, score);
    if (type) sf_u64(m, 3, (uint64_t)type);
    sf_len(o, 1, m->b, m->n);
    imgd_free(m);
}

/* ---- darts-clone double array ------------------------------------------------------------ */

#define SF_DA_UNITS 8192

typedef struct sf_da {
    uint32_t u[SF_DA_UNITS];
    bool     used[SF_DA_UNITS];
    size_t   n; /* highest used unit + 1 */
} sf_da;

/* Builds the subtree of keys[0..nk) (all sharing their first depth bytes) at unit pos. */
// NOLINTNEXTLINE(misc-no-recursion): depth capped by the longest key (test data, a few bytes)
static inline bool sf_da_node(sf_da *d, size_t pos, const char *const *keys, const uint32_t *vals,
                              size_t nk, size_t depth) {
    int  labels[257], nl = 0;
    bool seen[256] = {false};
    for (size_t i = 0; i < nk; i++) {
        int l = (unsigned char)keys[i][depth]; /* 0: the key ends here */
        if (!seen[l]) {
            seen[l]      = true;
            labels[nl++] = l;
        }
    }
    uint32_t off = 1;
    for (;; off++) {
        bool ok = off < (1u << 21);
        for (int i = 0; ok && i < nl; i++) {
            size_t p = pos ^ off ^ (size_t)labels[i];
            ok       = p < SF_DA_UNITS && !d->used[p];
        }
        if (ok) break;
        if (off >= (1u << 21)) return false;
    }
    d->u[pos] |= off << 10;
    for (int i = 0; i < nl; i++) {
        size_t p   = pos ^ off ^ (size_t)labels[i];
        d->used[p] = true;
        if (p + 1 > d->n) d->n = p + 1;
    }
    for (int i = 0; i < nl; i++) {
        size_t p = pos ^ off ^ (size_t)labels[i];
        if (labels[i] == 0) {
            d->u[pos] |= 1u << 8; /* has_leaf */
            for (size_t k = 0; k < nk; k++)
                if (keys[k][depth] == '\0') d->u[p] = (1u << 31) | vals[k];
            continue;
        }
        d->u[p] = (uint32_t)labels[i];
        const char *sub[64];
        uint32_t    sv[64];
        size_t      ns = 0;
        for (size_t k = 0; k < nk && ns < 64; k++)
            if ((unsigned char)keys[k][depth] == labels[i]) {
                sub[ns]  = keys[k];
                sv[ns++] = vals[k];
            }
        if (!sf_da_node(d, p, sub, sv, ns, depth + 1)) return false;
    }
    return true;
}

/* A precompiled_charsmap blob mapping from[i] -> to[i] (n rules, n <= 64): uint32 trie
 * size, the units, then the replacement strings. Returns the blob size, 0 on failure. */
static inline size_t sf_charsmap(const char *const *from, const char *const *to, size_t n,
                                 uint8_t *out, size_t cap) {
    sf_da   *d = imgd_calloc(1, sizeof *d);
    uint32_t vals[64];
    uint8_t  strs[4096];
    size_t   ns = 0, k = 0;
    if (!d || n > 64) {
        imgd_free(d);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        vals[i] = (uint32_t)ns;
        memcpy(strs + ns, to[i], strlen(to[i]) + 1);
        ns += strlen(to[i]) + 1;
    }
    d->used[0]  = true;
    d->n        = 1;
    bool     ok = sf_da_node(d, 0, from, vals, n, 0);
    uint32_t ts = (uint32_t)(d->n * 4);
    if (ok && 4 + ts + ns <= cap) {
        uint8_t le[4] = {(uint8_t)ts, (uint8_t)(ts >> 8), (uint8_t)(ts >> 16), (uint8_t)(ts >> 24)};
        memcpy(out, le, 4);
        k = 4;
        for (size_t i = 0; i < d->n; i++, k += 4) {
            uint32_t u    = d->u[i];
            uint8_t  b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
            memcpy(out + k, b, 4);
        }
        memcpy(out + k, strs, ns);
        k += ns;
    }
    imgd_free(d);
    return ok ? k : 0;
}

#endif
