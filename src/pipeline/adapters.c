/* Adapters of an SD 1.x / 2.x model: the LoRA set of a request (imgd_gen_params.loras and
 * A1111 <lora:name:w> prompt tags) applied merged or unmerged through models/lora.h, with a
 * per-model cache of loaded files; the hypernetwork set (imgd_gen_params.hypernets and
 * <hypernet:name:w> tags, models/hypernet.h) handed to the UNet graph; textual-inversion
 * embeddings loaded with the model and triggered by their file names. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/weights.h"
#include "pipeline/pipeline.h"

#define LORA_CACHE_MAX 32   /* files kept loaded per model */
#define LORA_SET_MAX   64   /* adapters in one request */
#define EMBEDDINGS_MAX 1024 /* embeddings a model loads */
#define PATH_CAP       4096
#define HN_CACHE_MAX   16 /* hypernetwork files kept loaded per model */
#define HN_SET_MAX     IMGD_UNET_HYPERNETS_MAX

typedef struct hn_cached {
    char          *path;
    imgd_hypernet *h;
} hn_cached;

typedef struct cached {
    char      *path;
    imgd_lora *l;
    char       hash[13]; /* A1111's short hash of the file, "" until asked for */
} cached;

typedef struct imgd_sd_adapters {
    char            *lora_dir;
    cached           cache[LORA_CACHE_MAX];
    size_t           n_cache;
    char            *applied; /* signature of the applied set; NULL = none */
    imgd_lora_stack *stack;
    /* hypernetworks: loaded files, the applied set's signature (NULL = none) and its
     * members of non-zero weight, in order, as the UNet graph applies them */
    char                *hypernet_dir;
    hn_cached            hn_cache[HN_CACHE_MAX];
    size_t               n_hn_cache;
    char                *hn_applied;
    const imgd_hypernet *hn[HN_SET_MAX];
    float                hn_w[HN_SET_MAX];
    int32_t              n_hn;
} imgd_sd_adapters;

/* One resolved adapter of a request. */
typedef struct spec {
    char  path[PATH_CAP];
    float w_unet, w_te;
    bool  merged;
} spec;

/* ---- prompt tags ------------------------------------------------------------------------------
 */

#define TAG_LORA     "<lora:"
#define TAG_HYPERNET "<hypernet:"

/* Next tag opening with kind ("<lora:") at or after s: [*b, *e) spans it ('<' .. '>'
 * inclusive). */
static bool next_tag(const char *s, const char *kind, const char **b, const char **e) {
    const char *p = strstr(s, kind);
    const char *q = p ? strchr(p, '>') : NULL;
    if (!q) return false;
    *b = p;
    *e = q + 1;
    return true;
}

/* The first <lora:...> or <hypernet:...> tag at or after s. */
static bool next_any_tag(const char *s, const char **b, const char **e) {
    const char *lb = NULL, *le = NULL, *hb = NULL, *he = NULL;
    bool        l = next_tag(s, TAG_LORA, &lb, &le), h = next_tag(s, TAG_HYPERNET, &hb, &he);
    if (!l && !h) return false;
    bool first_l = l && (!h || lb < hb);
    *b           = first_l ? lb : hb;
    *e           = first_l ? le : he;
    return true;
}

imgd_status imgd_sd_prompt_strip(const char *prompt, char **out) {
    const char *s = prompt ? prompt : "", *b, *e;
    char       *o = imgd_malloc(strlen(s) + 1);
    if (!o) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    size_t k = 0;
    while (next_any_tag(s, &b, &e)) {
        memcpy(o + k, s, (size_t)(b - s));
        k += (size_t)(b - s);
        s = e;
    }
    memcpy(o + k, s, strlen(s) + 1);
    *out = o;
    return IMGD_OK;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* path (as given, then with extensions; relative names also in dir). hypernet: the
 * message names the hypernetwork directory rather than the LoRA one. */
static imgd_status resolve_in(const char *dir, const char *name, char *out, const char *what,
                              bool hypernet) {
    static const char *const ext[] = {"", ".safetensors", ".pt", ".ckpt", ".bin"};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(ext); i++)
        if (imgd_fmt(out, PATH_CAP, "%s%s", name, ext[i]) && is_file(out)) return IMGD_OK;
    for (size_t i = 0; dir && name[0] != '/' && i < IMGD_ARRAY_LEN(ext); i++)
        if (imgd_fmt(out, PATH_CAP, "%s/%s%s", dir, name, ext[i]) && is_file(out)) return IMGD_OK;
    return imgd_fail(IMGD_E_INVALID_ARG,
                     "%s '%s': no such file%s%s (also tried .safetensors, .pt, .ckpt); give a "
                     "path or set the %s directory (%s)",
                     what, name, dir ? " here or in " : "", dir ? dir : "",
                     hypernet ? "hypernetwork" : "LoRA",
                     hypernet ? "--hypernet-dir" : "--lora-dir");
}

static imgd_status resolve_path(const char *dir, const char *name, char *out, const char *what) {
    return resolve_in(dir, name, out, what, false);
}

static bool parse_weight(const char *s, size_t n, float *out) {
    char  buf[64];
    char *end = NULL;
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, s, n);
    buf[n]   = '\0';
    double v = strtod(buf, &end);
    if (end == buf || *end || !isfinite(v)) return false;
    *out = (float)v;
    return true;
}

/* A1111 extra-network tag <lora:name[:te[:unet]]> (te= / unet= named forms too). */
static imgd_status parse_tag(const char *dir, const char *b, const char *e, bool merged, spec *sp) {
    const char *p = b + 6, *end = e - 1, *field[4];
    size_t      len[4], n       = 0;
    while (n < 4) {
        const char *c = memchr(p, ':', (size_t)(end - p));
        field[n]      = p;
        len[n++]      = (size_t)((c ? c : end) - p);
        if (!c) break;
        p = c + 1;
    }
    char  name[PATH_CAP];
    float te = 1.0f, unet = NAN;
    if (len[0] == 0 || len[0] >= sizeof name)
        return imgd_fail(IMGD_E_INVALID_ARG, "prompt tag %.*s: no LoRA name", (int)(e - b), b);
    memcpy(name, field[0], len[0]);
    name[len[0]] = '\0';
    for (size_t i = 1; i < n; i++) {
        const char *f = field[i];
        size_t      l = len[i];
        bool        ok;
        if (l > 3 && strncmp(f, "te=", 3) == 0)
            ok = parse_weight(f + 3, l - 3, &te);
        else if (l > 5 && strncmp(f, "unet=", 5) == 0)
            ok = parse_weight(f + 5, l - 5, &unet);
        else
            ok = parse_weight(f, l, i == 1 ? &te : &unet);
        if (!ok)
            return imgd_fail(IMGD_E_INVALID_ARG, "prompt tag %.*s: '%.*s' is not a weight",
                             (int)(e - b), b, (int)l, f);
    }
    sp->w_te   = te;
    sp->w_unet = isnan(unet) ? te : unet;
    sp->merged = merged;
    return resolve_path(dir, name, sp->path, "prompt tag <lora:...>");
}

/* The request's adapters: the structured list, then the prompt's tags. */
static imgd_status resolve_set(const imgd_model *m, const imgd_gen_params *p, spec *out,
                               size_t *n) {
    const char *dir = m->ad ? m->ad->lora_dir : NULL;
    *n              = 0;
    if (p->n_loras < 0 || (p->n_loras > 0 && !p->loras) || p->n_loras > LORA_SET_MAX)
        return imgd_fail(IMGD_E_INVALID_ARG, "n_loras %d: expected 0..%d with loras set",
                         (int)p->n_loras, LORA_SET_MAX);
    if (p->lora_mode < 0 || p->lora_mode >= IMGD_LORA_MODE_COUNT)
        return imgd_fail(IMGD_E_INVALID_ARG, "lora_mode %d: expected 0..2", (int)p->lora_mode);
    for (int32_t i = 0; i < p->n_loras; i++) {
        const imgd_lora_spec *ls = &p->loras[i];
        if (!ls->path || ls->mode < 0 || ls->mode >= IMGD_LORA_MODE_COUNT)
            return imgd_fail(IMGD_E_INVALID_ARG, "loras[%d]: path is required, mode 0..2", (int)i);
        spec *sp       = &out[(*n)++];
        sp->w_unet     = ls->weight;
        sp->w_te       = isnan(ls->weight_te) ? ls->weight : ls->weight_te;
        sp->merged     = ls->mode != IMGD_LORA_MODE_UNMERGED;
        imgd_status st = resolve_path(dir, ls->path, sp->path, "loras[].path");
        if (st != IMGD_OK) return st;
    }
    const char *s = p->prompt ? p->prompt : "", *b, *e;
    while (next_tag(s, TAG_LORA, &b, &e)) {
        if (*n == LORA_SET_MAX)
            return imgd_fail(IMGD_E_TOO_LARGE, "more than %d LoRAs in one request", LORA_SET_MAX);
        imgd_status st = parse_tag(dir, b, e, p->lora_mode != IMGD_LORA_MODE_UNMERGED, &out[*n]);
        if (st != IMGD_OK) return st;
        (*n)++;
        s = e;
    }
    return IMGD_OK;
}

/* "path|w_unet|w_te|m;..." (imgd_malloc'd; NULL set = ""). */
static imgd_status set_signature(const spec *sp, size_t n, char **out) {
    size_t cap = 1, k = 0;
    for (size_t i = 0; i < n; i++) cap += strlen(sp[i].path) + 64;
    char *s = imgd_malloc(cap);
    if (!s) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    s[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        (void)imgd_fmt(s + k, cap - k, "%s|%.9g|%.9g|%c;", sp[i].path, (double)sp[i].w_unet,
                       (double)sp[i].w_te, sp[i].merged ? 'm' : 'u');
        k += strlen(s + k);
    }
    *out = s;
    return IMGD_OK;
}

/* The request's LoRA set (*sp, LORA_SET_MAX entries, n used) and its signature text (*s);
 * the caller frees both, also on failure. */
static imgd_status set_of(const imgd_model *m, const imgd_gen_params *p, spec **sp, size_t *n,
                          char **s) {
    *n  = 0;
    *s  = NULL;
    *sp = imgd_calloc(LORA_SET_MAX, sizeof **sp);
    if (!*sp) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = resolve_set(m, p, *sp, n);
    return st == IMGD_OK ? set_signature(*sp, *n, s) : st;
}

imgd_status imgd_sd_lora_sig(const imgd_model *m, const imgd_gen_params *p, uint64_t *sig) {
    spec       *sp = NULL;
    size_t      n  = 0;
    char       *s  = NULL;
    imgd_status st = set_of(m, p, &sp, &n, &s);
    if (st == IMGD_OK) *sig = n ? imgd_str_hash(s) | 1u : 0;
    imgd_free(s);
    imgd_free(sp);
    return st;
}

/* ---- applying a set ---------------------------------------------------------------------------
 */

/* Back to the base weights: overrides and hooks cleared, graphs that saw them dropped. */
static void unapply(imgd_model *m) {
    imgd_sd_adapters *ad = m->ad;
    if (!ad->stack && !ad->applied) return;
    imgd_lora_stack_detach(m->wb);
    imgd_lora_stack_detach(imgd_sd_unet_bind(m));
    imgd_sd_te_graphs_drop(m);
    imgd_sd_graph_drop(&m->g_unet);
    imgd_lora_stack_free(ad->stack);
    ad->stack = NULL;
    imgd_free(ad->applied);
    ad->applied = NULL;
}

static void cache_clear(imgd_sd_adapters *ad) {
    for (size_t i = 0; i < ad->n_cache; i++) {
        imgd_lora_free(ad->cache[i].l);
        imgd_free(ad->cache[i].path);
    }
    ad->n_cache = 0;
}

/* The loaded file for path (cached). */
static imgd_status lora_get(imgd_model *m, const char *path, const imgd_lora **out) {
    imgd_sd_adapters *ad = m->ad;
    for (size_t i = 0; i < ad->n_cache; i++) {
        if (strcmp(ad->cache[i].path, path) == 0) {
            *out = ad->cache[i].l;
            return IMGD_OK;
        }
    }
    if (ad->n_cache == LORA_CACHE_MAX) cache_clear(ad); /* callers unapplied first */
    imgd_wbind *binds[2] = {m->wb, imgd_sd_unet_bind(m)};
    imgd_lora  *l        = NULL;
    imgd_status st = imgd_lora_load(path, binds, binds[1] == binds[0] ? 1 : 2, m->mi->family, &l);
    if (st != IMGD_OK) return st;
    char *p = imgd_strdup(path);
    if (!p) {
        imgd_lora_free(l);
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    if (l->n_unmatched)
        IMGD_LOG(IMGD_LOG_WARN, "pipeline", "lora_unmatched",
                 "%s: %zu of its keys match no module of %s and are not applied (e.g. %s%s%s)",
                 path, l->n_unmatched, m->path, l->unmatched[0], l->n_unmatched > 1 ? ", " : "",
                 l->n_unmatched > 1 ? l->unmatched[1] : "");
    IMGD_LOG(IMGD_LOG_INFO, "pipeline", "lora_loaded", "%s: %s, %zu modules", path,
             l->mi->subtype ? l->mi->subtype : "lora", l->n_mods);
    ad->cache[ad->n_cache++] = (cached){p, l, ""};
    *out                     = l;
    return IMGD_OK;
}

static void stem_of(const char *path, char *out, size_t cap);

/* A1111's LoRA hash (networks' NetworkOnDisk.shorthash): the first 12 hex digits of the
 * SHA-256 of a .safetensors file's data after its header (the "addnet" hash), or of the
 * whole file for other formats. */
static imgd_status file_shorthash(const char *path, char out[13]) {
    FILE *f = fopen(path, "rb");
    if (!f) return imgd_fail(IMGD_E_IO, "%s: cannot open to hash it", path);
    size_t      n  = strlen(path);
    imgd_status st = IMGD_OK;
    if (n > 12 && strcmp(path + n - 12, ".safetensors") == 0) {
        uint8_t  h8[8];
        uint64_t hl = 0;
        if (fread(h8, 1, 8, f) != 8) st = imgd_fail(IMGD_E_FORMAT, "%s: truncated", path);
        for (int i = 7; st == IMGD_OK && i >= 0; i--) hl = hl << 8 | h8[i];
        if (st == IMGD_OK && (hl > (uint64_t)1 << 40 || fseeko(f, (off_t)(8 + hl), SEEK_SET)))
            st = imgd_fail(IMGD_E_FORMAT, "%s: bad safetensors header length", path);
    }
    imgd_sha256 h;
    imgd_sha256_init(&h);
    uint8_t *buf = st == IMGD_OK ? imgd_malloc((size_t)1 << 20) : NULL;
    if (st == IMGD_OK && !buf) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    size_t got;
    while (st == IMGD_OK && (got = fread(buf, 1, (size_t)1 << 20, f)) > 0)
        imgd_sha256_update(&h, buf, got);
    if (st == IMGD_OK && ferror(f)) st = imgd_fail(IMGD_E_IO, "%s: read error", path);
    imgd_free(buf);
    (void)fclose(f);
    if (st != IMGD_OK) return st;
    uint8_t dg[32];
    char    hex[65];
    imgd_sha256_final(&h, dg);
    imgd_sha256_hex(dg, hex);
    memcpy(out, hex, 12);
    out[12] = '\0';
    return IMGD_OK;
}

imgd_status imgd_sd_lora_hashes(imgd_model *m, const imgd_gen_params *p, char **out) {
    *out           = NULL;
    spec       *sp = NULL;
    size_t      n  = 0;
    char       *s  = NULL;
    imgd_status st = m->ad ? set_of(m, p, &sp, &n, &s) : IMGD_OK;
    imgd_free(s);
    imgd_buf b;
    imgd_buf_init(&b, (size_t)1 << 20);
    for (size_t i = 0; st == IMGD_OK && i < n; i++) {
        cached *c = NULL;
        for (size_t k = 0; k < m->ad->n_cache; k++) {
            if (strcmp(m->ad->cache[k].path, sp[i].path) == 0) c = &m->ad->cache[k];
        }
        char hash[13] = "";
        st            = c && c->hash[0] ? IMGD_OK : file_shorthash(sp[i].path, hash);
        if (st == IMGD_OK && c && !c->hash[0]) memcpy(c->hash, hash, sizeof hash);
        char name[256];
        stem_of(sp[i].path, name, sizeof name);
        if (st == IMGD_OK)
            st = imgd_buf_printf(&b, "%s%s: %s", i ? ", " : "", name, c ? c->hash : hash);
    }
    imgd_free(sp);
    if (st != IMGD_OK || b.len == 0) {
        imgd_buf_free(&b);
        return st;
    }
    *out = imgd_buf_take(&b);
    return *out ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "out of memory");
}

imgd_status imgd_sd_lora_apply(imgd_model *m, const imgd_gen_params *p) {
    spec       *sp = NULL;
    size_t      n  = 0;
    char       *s  = NULL;
    imgd_status st = set_of(m, p, &sp, &n, &s);
    if (st == IMGD_OK && (m->ad->applied ? strcmp(m->ad->applied, s) == 0 : n == 0)) {
        imgd_free(s);
        imgd_free(sp);
        return IMGD_OK;
    }
    if (st == IMGD_OK) unapply(m);
    /* The set changes: graphs planned without a LoRA (unapply only drops those built with
     * one) bind the base weights and must be rebuilt too. */
    if (st == IMGD_OK) {
        imgd_sd_te_graphs_drop(m);
        imgd_sd_graph_drop(&m->g_unet);
    }
    if (st == IMGD_OK && m->ad->n_cache + n > LORA_CACHE_MAX) cache_clear(m->ad);
    if (st == IMGD_OK && n > 0) st = imgd_lora_stack_new(m->pool, &m->ad->stack);
    for (size_t i = 0; st == IMGD_OK && i < n; i++) {
        const imgd_lora *l = NULL;
        st                 = lora_get(m, sp[i].path, &l);
        if (st == IMGD_OK)
            st = imgd_lora_stack_add(m->ad->stack, l, sp[i].w_unet, sp[i].w_te, sp[i].merged);
    }
    for (int32_t e = 0; st == IMGD_OK && n > 0 && e < m->n_te; e++) {
        char pfx[64];
        (void)imgd_fmt(pfx, sizeof pfx, "%s.", m->te[e].prefix);
        st = imgd_lora_stack_attach(m->ad->stack, m->wb, pfx);
    }
    if (st == IMGD_OK && n > 0)
        st = imgd_lora_stack_attach(m->ad->stack, imgd_sd_unet_bind(m), "unet.");
    if (st == IMGD_OK && n > 0) {
        m->ad->applied = s;
        s              = NULL;
        IMGD_LOG(IMGD_LOG_INFO, "pipeline", "lora_applied", "%zu LoRA(s), %.1f MB merged copies", n,
                 (double)imgd_lora_stack_merged_bytes(m->ad->stack) / 1e6);
    } else if (st != IMGD_OK && m->ad->stack) {
        m->ad->applied = s; /* so that unapply runs */
        s              = NULL;
        unapply(m);
    }
    imgd_free(s);
    imgd_free(sp);
    return st;
}

/* ---- hypernetworks ----------------------------------------------------------------------------
 */

/* One resolved hypernetwork of a request. */
typedef struct hn_spec {
    char  path[PATH_CAP];
    float w;
} hn_spec;

/* A1111's <hypernet:name[:multiplier]> (modules/extra_networks_hypernet.py: multiplier 1
 * when absent). */
static imgd_status hn_parse_tag(const char *dir, const char *b, const char *e, hn_spec *sp) {
    const char *p = b + strlen(TAG_HYPERNET), *end = e - 1;
    const char *c = memchr(p, ':', (size_t)(end - p));
    size_t      n = (size_t)((c ? c : end) - p);
    char        name[PATH_CAP];
    if (n == 0 || n >= sizeof name)
        return imgd_fail(IMGD_E_INVALID_ARG, "prompt tag %.*s: no hypernetwork name", (int)(e - b),
                         b);
    memcpy(name, p, n);
    name[n] = '\0';
    sp->w   = 1.0f;
    if (c && (memchr(c + 1, ':', (size_t)(end - c - 1)) ||
              !parse_weight(c + 1, (size_t)(end - c - 1), &sp->w)))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "prompt tag %.*s: expected <hypernet:name> or <hypernet:name:weight>",
                         (int)(e - b), b);
    return resolve_in(dir, name, sp->path, "prompt tag <hypernet:...>", true);
}

/* The request's hypernetworks (*sp, HN_SET_MAX entries, *n used: the list, then the prompt's
 * tags) and the set's signature "path|w;..." (*s); the caller frees both, also on failure. */
static imgd_status hn_set_of(const imgd_model *m, const imgd_gen_params *p, hn_spec **sp, size_t *n,
                             char **s) {
    const char *dir = m->ad ? m->ad->hypernet_dir : NULL;
    *n              = 0;
    *s              = NULL;
    *sp             = NULL;
    if (p->n_hypernets < 0 || (p->n_hypernets > 0 && !p->hypernets) || p->n_hypernets > HN_SET_MAX)
        return imgd_fail(IMGD_E_INVALID_ARG, "n_hypernets %d: expected 0..%d with hypernets set",
                         (int)p->n_hypernets, HN_SET_MAX);
    const char *text = p->prompt ? p->prompt : "", *b, *e;
    if (p->n_hypernets == 0 && !strstr(text, TAG_HYPERNET)) return IMGD_OK;
    *sp = imgd_calloc(HN_SET_MAX, sizeof **sp);
    if (!*sp) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < p->n_hypernets; i++) {
        const imgd_hypernet_spec *hs = &p->hypernets[i];
        if (!hs->path || !isfinite(hs->weight))
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "hypernets[%d]: path is required and weight must be finite", (int)i);
        (*sp)[*n].w    = hs->weight;
        imgd_status st = resolve_in(dir, hs->path, (*sp)[*n].path, "hypernets[].path", true);
        if (st != IMGD_OK) return st;
        (*n)++;
    }
    while (next_tag(text, TAG_HYPERNET, &b, &e)) {
        if (*n == HN_SET_MAX)
            return imgd_fail(IMGD_E_TOO_LARGE, "more than %d hypernetworks in one request",
                             HN_SET_MAX);
        imgd_status st = hn_parse_tag(dir, b, e, &(*sp)[*n]);
        if (st != IMGD_OK) return st;
        (*n)++;
        text = e;
    }
    if (*n == 0) return IMGD_OK;
    imgd_buf sig;
    imgd_buf_init(&sig, (size_t)HN_SET_MAX * (PATH_CAP + 32));
    imgd_status st = IMGD_OK;
    for (size_t i = 0; st == IMGD_OK && i < *n; i++)
        st = imgd_buf_printf(&sig, "%s|%.9g;", (*sp)[i].path, (double)(*sp)[i].w);
    if (st == IMGD_OK) *s = imgd_buf_take(&sig);
    imgd_buf_free(&sig);
    if (st == IMGD_OK && !*s) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    return st;
}

imgd_status imgd_sd_hypernet_sig(const imgd_model *m, const imgd_gen_params *p, uint64_t *sig) {
    hn_spec    *sp = NULL;
    size_t      n  = 0;
    char       *s  = NULL;
    imgd_status st = hn_set_of(m, p, &sp, &n, &s);
    if (st == IMGD_OK) *sig = n ? imgd_str_hash(s) | 1u : 0;
    imgd_free(s);
    imgd_free(sp);
    return st;
}

/* "a, b, c" of n widths. */
static void widths_text(const int32_t *d, int32_t n, char *out, size_t cap) {
    size_t k = 0;
    out[0]   = '\0';
    for (int32_t i = 0; i < n && k < cap; i++) {
        (void)imgd_fmt(out + k, cap - k, "%s%d", i ? ", " : "", (int)d[i]);
        k += strlen(out + k);
    }
}

/* The loaded file for path (cached), refused when none of its widths is an attention width
 * of m's UNet. */
static imgd_status hn_get(imgd_model *m, const char *path, const imgd_hypernet **out) {
    imgd_sd_adapters *ad = m->ad;
    for (size_t i = 0; i < ad->n_hn_cache; i++) {
        if (strcmp(ad->hn_cache[i].path, path) == 0) {
            *out = ad->hn_cache[i].h;
            return IMGD_OK;
        }
    }
    imgd_hypernet *h  = NULL;
    imgd_status    st = imgd_hypernet_load(path, &h);
    if (st != IMGD_OK) return st;
    int32_t dims[2 * IMGD_MAX_LEVELS + 1];
    int32_t nd    = imgd_unet_attn_widths(&m->unet, dims, (int32_t)IMGD_ARRAY_LEN(dims));
    bool    match = false;
    for (int32_t i = 0; i < h->n; i++)
        for (int32_t k = 0; k < nd; k++) match = match || h->dim[i] == dims[k];
    if (!match) {
        char hw[128], mw[128];
        widths_text(h->dim, h->n, hw, sizeof hw);
        widths_text(dims, nd, mw, sizeof mw);
        imgd_hypernet_free(h);
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "hypernetwork %s: its widths (%s) match no attention of %s (widths %s: "
                         "cross-attention context and self-attention channels); it was made for "
                         "another model family",
                         path, hw, m->path, mw);
    }
    char *p = imgd_strdup(path);
    if (!p) {
        imgd_hypernet_free(h);
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    }
    char hw[128];
    widths_text(h->dim, h->n, hw, sizeof hw);
    IMGD_LOG(IMGD_LOG_INFO, "pipeline", "hypernet_loaded", "%s: widths %s", path, hw);
    ad->hn_cache[ad->n_hn_cache++] = (hn_cached){p, h};
    *out                           = h;
    return IMGD_OK;
}

/* No hypernetwork applied; the UNet and ControlNet graphs that saw the old set are
 * dropped. */
static void hn_unapply(imgd_model *m) {
    imgd_sd_adapters *ad = m->ad;
    imgd_sd_graph_drop(&m->g_unet);
    for (int32_t i = 0; i < m->n_controls; i++) imgd_sd_graph_drop(&m->controls[i]->g);
    ad->n_hn = 0;
    imgd_free(ad->hn_applied);
    ad->hn_applied = NULL;
}

static void hn_cache_clear(imgd_sd_adapters *ad) {
    for (size_t i = 0; i < ad->n_hn_cache; i++) {
        imgd_hypernet_free(ad->hn_cache[i].h);
        imgd_free(ad->hn_cache[i].path);
    }
    ad->n_hn_cache = 0;
}

imgd_status imgd_sd_hypernet_apply(imgd_model *m, const imgd_gen_params *p) {
    imgd_sd_adapters *ad = m->ad;
    hn_spec          *sp = NULL;
    size_t            n  = 0;
    char             *s  = NULL;
    imgd_status       st = hn_set_of(m, p, &sp, &n, &s);
    if (st == IMGD_OK && (ad->hn_applied ? s && strcmp(ad->hn_applied, s) == 0 : n == 0)) {
        imgd_free(s);
        imgd_free(sp);
        return IMGD_OK;
    }
    if (st == IMGD_OK) hn_unapply(m); /* the graph borrows the cached files: drop it first */
    if (st == IMGD_OK && ad->n_hn_cache + n > HN_CACHE_MAX) hn_cache_clear(ad);
    for (size_t i = 0; st == IMGD_OK && i < n; i++) {
        const imgd_hypernet *h = NULL;
        st                     = hn_get(m, sp[i].path, &h);
        if (st != IMGD_OK || sp[i].w == 0.0f) continue; /* weight 0: the plain UNet's k / v */
        ad->hn[ad->n_hn]     = h;
        ad->hn_w[ad->n_hn++] = sp[i].w;
    }
    if (st == IMGD_OK && n > 0) {
        ad->hn_applied = s;
        s              = NULL;
        IMGD_LOG(IMGD_LOG_INFO, "pipeline", "hypernet_applied", "%zu hypernetwork(s), %d active", n,
                 (int)ad->n_hn);
    } else if (st != IMGD_OK) {
        hn_unapply(m);
    }
    imgd_free(s);
    imgd_free(sp);
    return st;
}

int32_t imgd_sd_hypernets(const imgd_model *m, const imgd_hypernet *const **hn, const float **w) {
    if (!m->ad || m->ad->n_hn == 0) return 0;
    *hn = m->ad->hn;
    *w  = m->ad->hn_w;
    return m->ad->n_hn;
}

imgd_status imgd_sd_hypernet_info(const imgd_model *m, const imgd_gen_params *p, char **names,
                                  char **weights) {
    *names = *weights = NULL;
    if (p->n_hypernets <= 0 || !p->hypernets) return IMGD_OK;
    hn_spec    *sp = NULL;
    size_t      n  = 0;
    char       *s  = NULL;
    imgd_status st = hn_set_of(m, p, &sp, &n, &s);
    imgd_free(s);
    imgd_buf bn, bw;
    imgd_buf_init(&bn, (size_t)1 << 16);
    imgd_buf_init(&bw, (size_t)1 << 12);
    /* the structured list only: tags stay in the prompt, where A1111 keeps them */
    for (size_t i = 0; st == IMGD_OK && i < (size_t)p->n_hypernets && i < n; i++) {
        char name[256];
        stem_of(sp[i].path, name, sizeof name);
        st = imgd_buf_printf(&bn, "%s%s", i ? ", " : "", name);
        if (st == IMGD_OK) st = imgd_buf_printf(&bw, "%s%g", i ? ", " : "", (double)sp[i].w);
    }
    imgd_free(sp);
    if (st == IMGD_OK && bn.len > 0) {
        *names   = imgd_buf_take(&bn);
        *weights = imgd_buf_take(&bw);
        if (!*names || !*weights) {
            imgd_free(*names);
            imgd_free(*weights);
            *names = *weights = NULL;
            st                = imgd_fail(IMGD_E_NOMEM, "out of memory");
        }
    }
    imgd_buf_free(&bn);
    imgd_buf_free(&bw);
    return st;
}

/* ---- textual inversion ------------------------------------------------------------------------
 */

/* File name without folder and extension. */
static void stem_of(const char *path, char *out, size_t cap) {
    const char *b   = strrchr(path, '/');
    b               = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    size_t      n   = dot && dot > b ? (size_t)(dot - b) : strlen(b);
    (void)imgd_fmt(out, cap, "%.*s", (int)n, b);
}

/* The embedding tensor of a file for encoder e of m: SDXL files hold clip_l (CLIP-L,
 * text_encoder) and clip_g (bigG, text_encoder_2); SD 1.x/2.x files one tensor
 * (string_to_param.*, emb_params, or the file's only tensor). NULL when absent. */
static const imgd_wtensor *ti_tensor(const imgd_model *m, const imgd_weights *w, int32_t e) {
    size_t v = 0;
    bool   g = strcmp(m->te[e].prefix, "text_encoder_2") == 0;
    if (imgd_strmap_get(&w->index, g ? "clip_g" : "clip_l", &v)) return &w->t[v];
    if (m->n_time_ids > 0) return NULL; /* an SDXL model takes SDXL embeddings only */
    if (imgd_strmap_get(&w->index, "string_to_param.*", &v) ||
        imgd_strmap_get(&w->index, "emb_params", &v))
        return &w->t[v];
    return w->n == 1 ? &w->t[0] : NULL;
}

static imgd_status ti_load(imgd_model *m, const char *path) {
    imgd_weights *w  = NULL;
    imgd_status   st = imgd_weights_open(path, NULL, &w);
    if (st != IMGD_OK) return st;
    const imgd_wtensor *t[IMGD_SD_TE_MAX] = {NULL};
    int64_t             vec               = 0;
    char                name[256];
    stem_of(path, name, sizeof name);
    for (int32_t e = 0; st == IMGD_OK && e < m->n_te; e++) {
        t[e]        = ti_tensor(m, w, e);
        int64_t ve  = t[e] && t[e]->n_dims == 2 ? t[e]->shape[0] : 1;
        int64_t wid = t[e] && t[e]->n_dims >= 1 ? t[e]->shape[t[e]->n_dims - 1] : 0;
        if (!t[e] || t[e]->n_dims < 1 || t[e]->n_dims > 2)
            st = imgd_fail(IMGD_E_FORMAT,
                           m->n_time_ids > 0
                               ? "%s: not an SDXL textual-inversion embedding (expected clip_l "
                                 "[vectors, 768] and clip_g [vectors, 1280] tensors)"
                               : "%s: not a textual-inversion embedding (expected "
                                 "string_to_param.*, emb_params or one [vectors, width] tensor)",
                           path);
        else if (wid != m->te[e].cfg.hidden)
            st = imgd_fail(IMGD_E_UNSUPPORTED,
                           "%s: embedding vectors are %lld wide but %s is %d wide: it was made "
                           "for another model family",
                           path, (long long)wid, m->te[e].prefix, (int)m->te[e].cfg.hidden);
        else if (e > 0 && ve != vec)
            st = imgd_fail(IMGD_E_FORMAT, "%s: clip_l has %lld vectors but clip_g %lld", path,
                           (long long)vec, (long long)ve);
        else if (m->n_ti + ve > EMBEDDINGS_MAX)
            st = imgd_fail(IMGD_E_TOO_LARGE, "%s: more than %d embedding vectors", path,
                           EMBEDDINGS_MAX);
        vec = ve;
    }
    for (int32_t e = 0; st == IMGD_OK && e < m->n_te; e++) {
        size_t bytes = 0, wid = (size_t)m->te[e].cfg.hidden;
        float *rows = imgd_size_mul((size_t)(m->n_ti + vec) * wid, sizeof *rows, &bytes)
                          ? imgd_realloc(m->te[e].ti_rows, bytes)
                          : NULL;
        if (!rows) {
            st = imgd_fail(IMGD_E_NOMEM, "out of memory");
            break;
        }
        m->te[e].ti_rows = rows;
        st               = imgd_dtype_to_f32(t[e]->dtype, t[e]->data, (uint64_t)vec * wid,
                                             rows + (size_t)m->n_ti * wid);
    }
    int32_t first = 0;
    if (st == IMGD_OK) st = imgd_clip_tok_add_embedding(m->tok, name, (size_t)vec, &first);
    if (st == IMGD_OK && first != m->te[0].cfg.vocab + m->n_ti)
        st = imgd_fail(IMGD_E_INTERNAL, "%s: token id %d, expected %d", path, (int)first,
                       (int)(m->te[0].cfg.vocab + m->n_ti));
    if (st == IMGD_OK) {
        m->n_ti += (int32_t)vec;
        IMGD_LOG(IMGD_LOG_INFO, "pipeline", "embedding_loaded", "%s: '%s', %lld vectors (ids %d..)",
                 path, name, (long long)vec, (int)first);
    }
    imgd_weights_free(w);
    return st != IMGD_OK ? imgd_fail_prefix(st, "embedding") : st;
}

static imgd_status ti_dir(imgd_model *m, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return imgd_fail(IMGD_E_IO, "embedding dir %s: cannot open", dir);
    struct dirent *de;
    char           p[PATH_CAP];
    while ((de = readdir(d)) != NULL) {
        size_t stem = strlen(de->d_name);
        bool   ok   = false;
        for (const char *const *x = (const char *const[]){".pt", ".safetensors", ".bin", NULL}; *x;
             x++)
            ok = ok || (stem > strlen(*x) && strcmp(de->d_name + stem - strlen(*x), *x) == 0);
        if (!ok || !imgd_fmt(p, sizeof p, "%s/%s", dir, de->d_name) || !is_file(p)) continue;
        imgd_status st = ti_load(m, p);
        if (st == IMGD_E_NOMEM) {
            closedir(d);
            return st;
        }
        if (st != IMGD_OK)
            IMGD_LOG(IMGD_LOG_WARN, "pipeline", "embedding_skipped", "%s", imgd_last_error());
    }
    closedir(d);
    return IMGD_OK;
}

/* ---- lifetime ---------------------------------------------------------------------------------
 */

imgd_status imgd_sd_adapters_init(imgd_model *m, const imgd_load_params *lp) {
    m->ad = imgd_calloc(1, sizeof *m->ad);
    if (!m->ad) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (lp->lora_dir && !(m->ad->lora_dir = imgd_strdup(lp->lora_dir)))
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (lp->hypernet_dir && !(m->ad->hypernet_dir = imgd_strdup(lp->hypernet_dir)))
        return imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (lp->n_embeddings && !lp->embeddings)
        return imgd_fail(IMGD_E_INVALID_ARG, "n_embeddings %zu without embeddings",
                         lp->n_embeddings);
    for (size_t i = 0; i < lp->n_embeddings; i++) {
        imgd_status st = lp->embeddings[i]
                             ? ti_load(m, lp->embeddings[i])
                             : imgd_fail(IMGD_E_INVALID_ARG, "embeddings[%zu] is NULL", i);
        if (st != IMGD_OK && st != IMGD_E_NOMEM && lp->embeddings[i] && lp->embeddings_skip_bad) {
            IMGD_LOG(IMGD_LOG_WARN, "pipeline", "embedding_skipped", "%s", imgd_last_error());
            continue;
        }
        if (st != IMGD_OK) return st;
    }
    return lp->embedding_dir ? ti_dir(m, lp->embedding_dir) : IMGD_OK;
}

void imgd_sd_adapters_free(imgd_model *m) {
    if (!m->ad) return;
    unapply(m);
    cache_clear(m->ad);
    hn_unapply(m);
    hn_cache_clear(m->ad);
    imgd_free(m->ad->hypernet_dir);
    imgd_free(m->ad->lora_dir);
    imgd_free(m->ad);
    m->ad = NULL;
    for (int32_t e = 0; e < IMGD_SD_TE_MAX; e++) {
        imgd_free(m->te[e].ti_rows);
        m->te[e].ti_rows = NULL;
    }
}
