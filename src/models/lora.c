/* LoRA / LyCORIS adapters (see lora.h): reading, key mapping, deltas, merged and unmerged
 * application. */
#include "models/lora.h"

#include <cblas.h> /* pulls in <complex.h>: no identifier I below */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "detect/keymap.h"
#include "formats/dtype.h"
#include "formats/weights.h"
#include "tensor/ops.h"

/* ---- parts of a module: suffix -> field ------------------------------------------------------ */

typedef struct part_row {
    const char *suffix;
    size_t      field; /* offsetof(imgd_lora_module, <tensor>) */
    int32_t     algo;  /* imgd_lora_algo, -1 = any (alpha) */
    bool        proc;  /* old diffusers attention-processor naming (to_q_lora.down) */
} part_row;

#define F(x) offsetof(imgd_lora_module, x)
static const part_row k_parts[] = {
    {".lora_down.weight", F(down), IMGD_LORA_ALGO_LORA, false},
    {".lora_up.weight", F(up), IMGD_LORA_ALGO_LORA, false},
    {".lora_mid.weight", F(mid), IMGD_LORA_ALGO_LORA, false},
    {".lora_A.weight", F(down), IMGD_LORA_ALGO_LORA, false},
    {".lora_B.weight", F(up), IMGD_LORA_ALGO_LORA, false},
    {"_lora.down.weight", F(down), IMGD_LORA_ALGO_LORA, true},
    {"_lora.up.weight", F(up), IMGD_LORA_ALGO_LORA, true},
    {".lora.down.weight", F(down), IMGD_LORA_ALGO_LORA, false},
    {".lora.up.weight", F(up), IMGD_LORA_ALGO_LORA, false},
    {".hada_w1_a", F(w1a), IMGD_LORA_ALGO_LOHA, false},
    {".hada_w1_b", F(w1b), IMGD_LORA_ALGO_LOHA, false},
    {".hada_w2_a", F(w2a), IMGD_LORA_ALGO_LOHA, false},
    {".hada_w2_b", F(w2b), IMGD_LORA_ALGO_LOHA, false},
    {".hada_t1", F(t1), IMGD_LORA_ALGO_LOHA, false},
    {".hada_t2", F(t2), IMGD_LORA_ALGO_LOHA, false},
    {".lokr_w1", F(k1), IMGD_LORA_ALGO_LOKR, false},
    {".lokr_w1_a", F(k1a), IMGD_LORA_ALGO_LOKR, false},
    {".lokr_w1_b", F(k1b), IMGD_LORA_ALGO_LOKR, false},
    {".lokr_w2", F(k2), IMGD_LORA_ALGO_LOKR, false},
    {".lokr_w2_a", F(k2a), IMGD_LORA_ALGO_LOKR, false},
    {".lokr_w2_b", F(k2b), IMGD_LORA_ALGO_LOKR, false},
    {".lokr_t2", F(kt2), IMGD_LORA_ALGO_LOKR, false},
    {".alpha", F(alpha), -1, false},
};
#undef F

static bool ends_with(const char *s, const char *suf, size_t *stem) {
    size_t n = strlen(s), k = strlen(suf);
    if (n <= k || memcmp(s + n - k, suf, k) != 0) return false;
    *stem = n - k;
    return true;
}

static bool starts_with(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

static int64_t numel_of(const imgd_wtensor *t) {
    int64_t n = 1;
    for (int32_t i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

/* Rows (dim 0) and the product of the other dims. */
static int64_t rows_of(const imgd_wtensor *t) {
    return t->n_dims ? t->shape[0] : 1;
}

static int64_t cols_of(const imgd_wtensor *t) {
    int64_t r = rows_of(t);
    return r ? numel_of(t) / r : 0;
}

/* ---- loading --------------------------------------------------------------------------------- */

static void note_unmatched(imgd_lora *l, const char *key) {
    if (l->n_unmatched < IMGD_LORA_EXAMPLES) l->unmatched[l->n_unmatched] = key;
    l->n_unmatched++;
}

/* kohya module name of a canonical weight ("unet.a.b.weight" -> "lora_unet_a_b"). */
static bool kohya_name(const char *canonical, char *out, size_t cap) {
    size_t      stem = 0;
    const char *rest = NULL, *pfx = NULL;
    if (!ends_with(canonical, ".weight", &stem)) return false;
    if (starts_with(canonical, "unet.")) {
        rest = canonical + 5;
        pfx  = "lora_unet_";
    } else if (starts_with(canonical, "text_encoder.")) {
        rest = canonical + 13;
        pfx  = "lora_te_";
    } else if (starts_with(canonical, "text_encoder_2.")) {
        rest = canonical + 15;
        pfx  = "lora_te2_";
    } else {
        return false;
    }
    size_t n = stem - (size_t)(rest - canonical);
    if (!imgd_fmt(out, cap, "%s%.*s", pfx, (int)n, rest)) return false;
    for (char *c = out + strlen(pfx); *c; c++)
        if (*c == '.') *c = '_';
    return true;
}

static imgd_status index_put(imgd_lora *l, imgd_strmap *idx, const char *k, const char *c) {
    char *key = imgd_arena_strndup(&l->arena, k, strlen(k));
    if (!key) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = imgd_strmap_put(idx, key, (size_t)c, NULL);
    return st == IMGD_E_NOMEM ? imgd_fail(IMGD_E_NOMEM, "out of memory") : IMGD_OK;
}

/* Map of kohya names to canonical weights over every binder: the diffusers spelling
 * (lora_unet_down_blocks_1_attentions_0_...) and, for UNets, the LDM one kohya's SDXL
 * trainer writes (lora_unet_input_blocks_4_1_...). */
static imgd_status kohya_index(imgd_lora *l, imgd_wbind *const *binds, size_t n_binds,
                               imgd_strmap *idx) {
    char        k[512], ldm[512], canon[512];
    imgd_status st = IMGD_OK;
    for (size_t b = 0; b < n_binds && st == IMGD_OK; b++) {
        const imgd_model_info *mi = imgd_wbind_info(binds[b]);
        const char            *c;
        for (size_t i = 0; st == IMGD_OK && (c = imgd_wbind_name_at(binds[b], i)) != NULL; i++) {
            if (!kohya_name(c, k, sizeof k)) continue;
            st = index_put(l, idx, k, c);
            if (st != IMGD_OK || !mi || !mi->has_unet || !starts_with(c, "unet.") ||
                !imgd_keymap_unet_to_ldm(&mi->unet, c + 5, ldm, sizeof ldm) ||
                !imgd_fmt(canon, sizeof canon, "unet.%s", ldm) || !kohya_name(canon, k, sizeof k))
                continue;
            st = index_put(l, idx, k, c);
        }
    }
    return st;
}

static bool bound(imgd_wbind *const *binds, size_t n_binds, const char *canonical) {
    for (size_t b = 0; b < n_binds; b++)
        if (imgd_wbind_has(binds[b], canonical)) return true;
    return false;
}

/* The canonical weight a module key changes, in l's arena; NULL when none. */
static const char *resolve(imgd_lora *l, const char *key, bool proc, const imgd_strmap *kidx,
                           imgd_wbind *const *binds, size_t n_binds) {
    size_t v = 0;
    if (starts_with(key, "lora_te1_")) { /* SDXL's first encoder spelling, same module */
        char k[512];
        if (!imgd_fmt(k, sizeof k, "lora_te_%s", key + 9)) return NULL;
        return imgd_strmap_get(kidx, k, &v) ? (const char *)v : NULL;
    }
    if (starts_with(key, "lora_")) return imgd_strmap_get(kidx, key, &v) ? (const char *)v : NULL;
    const char *k = key;
    if (starts_with(k, "base_model.model.")) k += 17;
    char name[512], c[600];
    if (!imgd_fmt(name, sizeof name, "%s", k)) return NULL;
    if (proc) { /* "….attn1.processor.to_q" -> "….attn1.to_q", to_out -> to_out.0 */
        char *p = strstr(name, ".processor.");
        if (p) memmove(p, p + 10, strlen(p + 10) + 1);
        size_t stem = 0;
        if (ends_with(name, ".to_out", &stem) &&
            !imgd_fmt(name + stem, sizeof name - stem, ".to_out.0"))
            return NULL;
    }
    const char *pfx[] = {"", "unet."};
    for (size_t i = 0; i < 2; i++) {
        if (!imgd_fmt(c, sizeof c, "%s%s.weight", pfx[i], name)) return NULL;
        if (bound(binds, n_binds, c)) return imgd_arena_strndup(&l->arena, c, strlen(c));
    }
    return NULL;
}

static imgd_status scalar_f32(const imgd_wtensor *t, float *out) {
    if (numel_of(t) != 1 || !imgd_dtype_traits_of(t->dtype)->is_float ||
        imgd_dtype_traits_of(t->dtype)->is_quant)
        return imgd_fail(IMGD_E_FORMAT, "tensor '%s' is not a float scalar", t->name);
    return imgd_dtype_to_f32(t->dtype, t->data, 1, out);
}

/* Elements of the module's delta, its rows and the dim alpha divides by (0 = none). */
static bool delta_shape(const imgd_lora_module *m, int64_t *numel, int64_t *rows, int64_t *dim) {
    *dim = 0;
    if (m->algo == IMGD_LORA_ALGO_LORA) {
        if (!m->down || !m->up || cols_of(m->up) != rows_of(m->down)) return false;
        *dim  = rows_of(m->down);
        *rows = rows_of(m->up);
        if (m->mid) {
            if (m->mid->n_dims != 4 || m->mid->shape[0] != cols_of(m->up) ||
                m->mid->shape[1] != rows_of(m->down))
                return false;
            *numel = *rows * cols_of(m->down) * m->mid->shape[2] * m->mid->shape[3];
        } else {
            *numel = *rows * cols_of(m->down);
        }
        return true;
    }
    if (m->algo == IMGD_LORA_ALGO_LOHA) {
        if (!m->w1a || !m->w1b || !m->w2a || !m->w2b || (!m->t1) != (!m->t2)) return false;
        *dim = rows_of(m->w1b);
        if (m->t1) { /* w*a [R, out], w*b [R, in], t [R, R, k, k] */
            if (m->t1->n_dims != 4) return false;
            *rows  = cols_of(m->w1a);
            *numel = *rows * cols_of(m->w1b) * m->t1->shape[2] * m->t1->shape[3];
            return rows_of(m->w1a) == m->t1->shape[0] && rows_of(m->w1b) == m->t1->shape[1] &&
                   numel_of(m->t1) == numel_of(m->t2) && cols_of(m->w2a) == *rows &&
                   cols_of(m->w2b) == cols_of(m->w1b);
        }
        *rows  = rows_of(m->w1a);
        *numel = *rows * cols_of(m->w1b);
        return cols_of(m->w1a) == rows_of(m->w1b) && cols_of(m->w2a) == rows_of(m->w2b) &&
               rows_of(m->w2a) == *rows && cols_of(m->w2b) == cols_of(m->w1b);
    }
    /* LoKr: w1 [a, b] (full or k1a @ k1b), w2 [c, e] (full, k2a @ k2b or Tucker) */
    int64_t a, b, c, e;
    if (m->k1) {
        a = rows_of(m->k1);
        b = cols_of(m->k1);
    } else if (m->k1a && m->k1b && cols_of(m->k1a) == rows_of(m->k1b)) {
        a    = rows_of(m->k1a);
        b    = cols_of(m->k1b);
        *dim = rows_of(m->k1b);
    } else {
        return false;
    }
    if (m->k2) {
        c = rows_of(m->k2);
        e = cols_of(m->k2);
    } else if (m->k2a && m->k2b && m->kt2) {
        if (m->kt2->n_dims != 4) return false;
        c = cols_of(m->k2a);
        e = cols_of(m->k2b) * m->kt2->shape[2] * m->kt2->shape[3];
        if (!*dim) *dim = rows_of(m->k2b);
    } else if (m->k2a && m->k2b && cols_of(m->k2a) == rows_of(m->k2b)) {
        c = rows_of(m->k2a);
        e = cols_of(m->k2b);
        if (!*dim) *dim = rows_of(m->k2b);
    } else {
        return false;
    }
    *rows  = a * c;
    *numel = a * b * c * e;
    return true;
}

/* Groups the file's tensors into modules and maps each to its target. */
static imgd_status build_modules(imgd_lora *l, imgd_wbind *const *binds, size_t n_binds) {
    imgd_strmap groups, kidx;
    imgd_strmap_init(&groups);
    imgd_strmap_init(&kidx);
    imgd_status st    = kohya_index(l, binds, n_binds, &kidx);
    size_t      nt    = l->w->n;
    bool       *procs = imgd_calloc(nt ? nt : 1, sizeof *procs);
    l->mods           = imgd_calloc(nt ? nt : 1, sizeof *l->mods);
    if (st == IMGD_OK && (!l->mods || !procs)) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (size_t i = 0; st == IMGD_OK && i < nt; i++) {
        const imgd_wtensor *t    = &l->w->t[i];
        const part_row     *row  = NULL;
        size_t              stem = 0;
        for (size_t r = 0; !row && r < IMGD_ARRAY_LEN(k_parts); r++)
            if (ends_with(t->name, k_parts[r].suffix, &stem)) row = &k_parts[r];
        if (!row) { /* dora_scale, diff, on_input, …: nothing we apply */
            note_unmatched(l, t->name);
            continue;
        }
        char *key = imgd_arena_strndup(&l->arena, t->name, stem);
        if (!key) {
            st = imgd_fail(IMGD_E_NOMEM, "out of memory");
            break;
        }
        size_t mi = 0;
        if (!imgd_strmap_get(&groups, key, &mi)) {
            mi               = l->n_mods++;
            l->mods[mi].key  = key;
            l->mods[mi].algo = IMGD_LORA_ALGO_COUNT; /* set by the first non-alpha part */
            st               = imgd_strmap_put(&groups, key, mi, NULL);
        }
        imgd_lora_module *md = &l->mods[mi];
        if (row->algo >= 0) {
            if (md->algo != IMGD_LORA_ALGO_COUNT && md->algo != (imgd_lora_algo)row->algo) {
                st = imgd_fail(IMGD_E_FORMAT, "%s: module '%s' mixes LoRA, LoHa and LoKr tensors",
                               l->path, key);
                break;
            }
            md->algo = (imgd_lora_algo)row->algo;
        }
        procs[mi] = procs[mi] || row->proc;
        memcpy((char *)md + row->field, &t, sizeof t);
    }
    size_t keep = 0;
    for (size_t i = 0; st == IMGD_OK && i < l->n_mods; i++) {
        imgd_lora_module md    = l->mods[i];
        int64_t          numel = 0, rows = 0, dim = 0, tshape[IMGD_MAX_DIMS];
        md.target = md.algo == IMGD_LORA_ALGO_COUNT
                        ? NULL
                        : resolve(l, md.key, procs[i], &kidx, binds, n_binds);
        if (!md.target) {
            note_unmatched(l, md.key);
            continue;
        }
        if (!delta_shape(&md, &numel, &rows, &dim)) {
            st = imgd_fail(IMGD_E_FORMAT,
                           "%s: module '%s' is incomplete or its tensors' shapes do not chain "
                           "(a LoRA needs down and up, LoHa w1/w2 a and b, LoKr w1 and w2)",
                           l->path, md.key);
            break;
        }
        int32_t tn = -1;
        for (size_t b = 0; tn < 0 && b < n_binds; b++)
            tn = imgd_wbind_shape(binds[b], md.target, tshape);
        int64_t tnumel = 1;
        for (int32_t d = 0; d < tn; d++) tnumel *= tshape[d];
        if (tn < 1 || tnumel != numel || tshape[0] != rows) {
            st = imgd_fail(IMGD_E_FORMAT,
                           "%s: module '%s' changes '%s' ([%lld, ...], %lld values) but its "
                           "product has %lld rows and %lld values: the LoRA was made for "
                           "another model",
                           l->path, md.key, md.target, (long long)(tn > 0 ? tshape[0] : 0),
                           (long long)tnumel, (long long)rows, (long long)numel);
            break;
        }
        float alpha = NAN;
        if (md.alpha) st = scalar_f32(md.alpha, &alpha);
        if (st != IMGD_OK) break;
        md.scale        = (md.alpha && dim > 0 && alpha != 0.0f) ? alpha / (float)dim : 1.0f;
        md.te           = starts_with(md.target, "text_encoder");
        l->mods[keep++] = md;
    }
    l->n_mods = st == IMGD_OK ? keep : 0;
    imgd_free(procs);
    imgd_strmap_free(&groups);
    imgd_strmap_free(&kidx);
    return st;
}

imgd_status imgd_lora_load(const char *path, imgd_wbind *const *binds, size_t n_binds,
                           imgd_family family, imgd_lora **out) {
    if (!path || !out || (n_binds && !binds))
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_lora_load: NULL argument");
    imgd_lora *l = imgd_calloc(1, sizeof *l);
    if (!l) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_arena_init(&l->arena, 0);
    l->path = imgd_strdup(path);
    imgd_status st =
        l->path ? imgd_weights_open(path, NULL, &l->w) : imgd_fail(IMGD_E_NOMEM, "out of memory");
    if (st == IMGD_OK) st = imgd_model_detect(l->w, &l->mi);
    if (st == IMGD_OK) {
        imgd_model_kind k = imgd_model_info_kind(l->mi);
        imgd_family     f = l->mi->family;
        if (k != IMGD_KIND_LORA && k != IMGD_KIND_LYCORIS)
            st = imgd_fail(IMGD_E_INVALID_ARG, "%s is a %s (family %s), not a LoRA", path,
                           imgd_model_kind_name(k), imgd_family_name(f));
        else if (f != IMGD_FAMILY_UNKNOWN && f != IMGD_FAMILY_NONE && f != family)
            st = imgd_fail(IMGD_E_UNSUPPORTED,
                           "%s is a %s for %s; the model is %s: use a LoRA made for %s", path,
                           imgd_model_kind_name(k), imgd_family_name(f), imgd_family_name(family),
                           imgd_family_name(family));
    }
    if (st == IMGD_OK) st = build_modules(l, binds, n_binds);
    if (st != IMGD_OK) {
        imgd_lora_free(l);
        return st;
    }
    *out = l;
    return IMGD_OK;
}

void imgd_lora_free(imgd_lora *l) {
    if (!l) return;
    imgd_free(l->mods);
    imgd_model_info_free(l->mi);
    imgd_weights_free(l->w);
    imgd_arena_free(&l->arena);
    imgd_free(l->path);
    imgd_free(l);
}

/* ---- deltas ---------------------------------------------------------------------------------- */

/* An f32 copy of t (imgd_malloc'd) or NULL with the error set. */
static float *f32_of(const imgd_wtensor *t) {
    size_t n = (size_t)numel_of(t), bytes = 0;
    if (imgd_dtype_traits_of(t->dtype)->is_quant || !imgd_dtype_traits_of(t->dtype)->is_float) {
        (void)imgd_fail(IMGD_E_UNSUPPORTED, "LoRA tensor '%s': %s is not a plain float type",
                        t->name, imgd_dtype_name(t->dtype));
        return NULL;
    }
    float *f = imgd_size_mul(n ? n : 1, sizeof *f, &bytes) ? imgd_malloc(bytes) : NULL;
    if (!f) {
        (void)imgd_fail(IMGD_E_NOMEM, "out of memory");
        return NULL;
    }
    if (imgd_dtype_to_f32(t->dtype, t->data, n, f) != IMGD_OK) {
        imgd_free(f);
        return NULL;
    }
    return f;
}

/* out[r, c] += s * a[r, :k] @ b[:k, c]: one OpenBLAS sgemm (the merge's cost: a plain loop
 * ran at under 1 GFLOP/s), plain loops only for dims past int. */
static void gemm_acc(const float *a, const float *b, float *out, int64_t rows, int64_t k,
                     int64_t cols, float s) {
    if (rows < 1 || k < 1 || cols < 1) return;
    if (rows < INT32_MAX && k < INT32_MAX && cols < INT32_MAX) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)k, s, a,
                    (int)k, b, (int)cols, 1.0f, out, (int)cols);
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * cols;
        for (int64_t j = 0; j < k; j++) {
            float v = s * a[r * k + j];
            if (v == 0.0f) continue;
            const float *bj = b + j * cols;
            for (int64_t c = 0; c < cols; c++) o[c] += v * bj[c];
        }
    }
}

/* Tucker rebuild (A1111 make_weight_cp): out[o, c, kl] = sum_i wa[i, o] sum_j t[i, j, kl]
 * wb[j, c] with t [R, R, K], wa [R, O], wb [R, C]; out [O, C, K] zero-filled by the caller. */
static imgd_status cp_rebuild(const float *t, const float *wa, const float *wb, int64_t R,
                              int64_t O, int64_t C, int64_t K, float *out) {
    size_t bytes = 0;
    float *tmp =
        imgd_size_mul((size_t)(R * C * K), sizeof *tmp, &bytes) ? imgd_calloc(1, bytes) : NULL;
    if (!tmp) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    for (int64_t i = 0; i < R; i++) /* tmp[i, c, kl] = sum_j t[i, j, kl] wb[j, c] */
        for (int64_t j = 0; j < R; j++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t kl = 0; kl < K; kl++)
                    tmp[(i * C + c) * K + kl] += t[(i * R + j) * K + kl] * wb[j * C + c];
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < R; i++) {
            float v = wa[i * O + o];
            for (int64_t x = 0; x < C * K; x++) out[o * C * K + x] += v * tmp[i * C * K + x];
        }
    imgd_free(tmp);
    return IMGD_OK;
}

/* A product matrix into a fresh zeroed buffer [rows, cols]. */
static float *zeros(int64_t n) {
    size_t bytes = 0;
    float *f = imgd_size_mul((size_t)(n ? n : 1), sizeof *f, &bytes) ? imgd_calloc(1, bytes) : NULL;
    if (!f) (void)imgd_fail(IMGD_E_NOMEM, "out of memory");
    return f;
}

/* w = a @ b (2-D views) or Tucker(t, a, b); NULL with the error set. */
static float *factor(const imgd_wtensor *a, const imgd_wtensor *b, const imgd_wtensor *t) {
    float *fa = f32_of(a), *fb = fa ? f32_of(b) : NULL, *ft = NULL, *w = NULL;
    if (fb && t) ft = f32_of(t);
    if (fb && (!t || ft)) {
        int64_t K = t ? t->shape[2] * t->shape[3] : 1;
        w         = zeros(t ? cols_of(a) * cols_of(b) * K : rows_of(a) * cols_of(b));
        if (w && t && cp_rebuild(ft, fa, fb, rows_of(a), cols_of(a), cols_of(b), K, w) != IMGD_OK) {
            imgd_free(w);
            w = NULL;
        } else if (w && !t) {
            gemm_acc(fa, fb, w, rows_of(a), cols_of(a), cols_of(b), 1.0f);
        }
    }
    imgd_free(fa);
    imgd_free(fb);
    imgd_free(ft);
    return w;
}

static imgd_status acc_lora(const imgd_lora_module *m, float s, float *acc) {
    float      *up = f32_of(m->up), *down = up ? f32_of(m->down) : NULL, *mid = NULL, *full = NULL;
    imgd_status st = down ? IMGD_OK : imgd_fail(IMGD_E_NOMEM, "out of memory");
    int64_t     O = rows_of(m->up), R = rows_of(m->down), C = cols_of(m->down);
    if (st == IMGD_OK && m->mid) {
        /* A1111 rebuild_cp_decomposition: einsum('n m k l, i n, m j -> i j k l', mid, up,
         * down) = make_weight_cp with wa = up^T */
        int64_t K = m->mid->shape[2] * m->mid->shape[3], Rm = m->mid->shape[0];
        float  *ut = zeros(Rm * O);
        mid        = f32_of(m->mid);
        full       = zeros(O * C * K);
        if (!ut || !mid || !full) st = imgd_fail(IMGD_E_NOMEM, "out of memory");
        for (int64_t i = 0; st == IMGD_OK && i < O; i++)
            for (int64_t n = 0; n < Rm; n++) ut[n * O + i] = up[i * Rm + n];
        if (st == IMGD_OK) st = cp_rebuild(mid, ut, down, Rm, O, C, K, full);
        for (int64_t i = 0; st == IMGD_OK && i < O * C * K; i++) acc[i] += s * full[i];
        imgd_free(ut);
    } else if (st == IMGD_OK) {
        gemm_acc(up, down, acc, O, R, C, s);
    }
    imgd_free(up);
    imgd_free(down);
    imgd_free(mid);
    imgd_free(full);
    return st;
}

static imgd_status acc_loha(const imgd_lora_module *m, float s, float *acc, size_t n) {
    float *a = factor(m->w1a, m->w1b, m->t1), *b = a ? factor(m->w2a, m->w2b, m->t2) : NULL;
    for (size_t i = 0; b && i < n; i++) acc[i] += s * a[i] * b[i];
    imgd_free(a);
    imgd_free(b);
    return b ? IMGD_OK : IMGD_E_NOMEM;
}

static imgd_status acc_lokr(const imgd_lora_module *m, float s, float *acc) {
    float  *w1 = m->k1 ? f32_of(m->k1) : factor(m->k1a, m->k1b, NULL);
    float  *w2 = !w1 ? NULL : m->k2 ? f32_of(m->k2) : factor(m->k2a, m->k2b, m->kt2);
    int64_t a  = m->k1 ? rows_of(m->k1) : rows_of(m->k1a),
            b  = m->k1 ? cols_of(m->k1) : cols_of(m->k1b);
    int64_t c = 0, e = 0;
    if (m->k2) {
        c = rows_of(m->k2);
        e = cols_of(m->k2);
    } else if (m->kt2) {
        c = cols_of(m->k2a);
        e = cols_of(m->k2b) * m->kt2->shape[2] * m->kt2->shape[3];
    } else if (m->k2a) {
        c = rows_of(m->k2a);
        e = cols_of(m->k2b);
    }
    for (int64_t i = 0; w2 && i < a; i++) /* torch.kron on the 2-D views */
        for (int64_t j = 0; j < b; j++) {
            float v = s * w1[i * b + j];
            for (int64_t p = 0; p < c; p++) {
                float *o = acc + (i * c + p) * (b * e) + j * e;
                for (int64_t q = 0; q < e; q++) o[q] += v * w2[p * e + q];
            }
        }
    imgd_status st = w2 ? IMGD_OK : IMGD_E_NOMEM;
    imgd_free(w1);
    imgd_free(w2);
    return st;
}

imgd_status imgd_lora_module_accumulate(const imgd_lora_module *md, float s, float *acc,
                                        size_t numel) {
    int64_t n = 0, rows = 0, dim = 0;
    if (!md || !acc || !delta_shape(md, &n, &rows, &dim) || (size_t)n != numel)
        return imgd_fail(IMGD_E_FORMAT, "LoRA module '%s': its product does not have %zu values",
                         md ? md->key : "?", numel);
    float k = s * md->scale;
    switch (md->algo) {
    case IMGD_LORA_ALGO_LORA: return acc_lora(md, k, acc);
    case IMGD_LORA_ALGO_LOHA: return acc_loha(md, k, acc, numel);
    case IMGD_LORA_ALGO_LOKR: return acc_lokr(md, k, acc);
    default: return imgd_fail(IMGD_E_INTERNAL, "LoRA module '%s': no algorithm", md->key);
    }
}

/* ---- stacks ---------------------------------------------------------------------------------- */

typedef struct entry {
    const imgd_lora_module *md;
    float                   w;                /* user weight (UNet or text encoder) */
    bool                    merged;           /* else applied at run time */
    bool                    ready;            /* run-time tensors prepared */
    float                  *down, *up, *full; /* run time: f32 [R, rest] / [O, R] or the whole
                                                 scaled delta in the target's shape */
    int64_t tshape[IMGD_MAX_DIMS];
    int32_t tn;
    size_t  next; /* next run-time entry for the same target + 1; 0 = none */
} entry;

struct imgd_lora_stack {
    entry      *e;
    size_t      n, alloc;
    imgd_strmap run;  /* target -> first run-time entry + 1 */
    void      **bufs; /* merged copies */
    size_t      n_bufs, alloc_bufs, merged_bytes;
    imgd_arena  arena; /* run-time tensors */
    imgd_pool  *pool;  /* borrowed; NULL = merge inline */
};

imgd_status imgd_lora_stack_new(imgd_pool *pool, imgd_lora_stack **out) {
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_lora_stack_new: NULL argument");
    imgd_lora_stack *s = imgd_calloc(1, sizeof *s);
    if (!s) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_strmap_init(&s->run);
    imgd_arena_init(&s->arena, 0);
    s->pool = pool;
    *out    = s;
    return IMGD_OK;
}

void imgd_lora_stack_free(imgd_lora_stack *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_bufs; i++) imgd_free(s->bufs[i]);
    imgd_free(s->bufs);
    imgd_free(s->e);
    imgd_strmap_free(&s->run);
    imgd_arena_free(&s->arena);
    imgd_free(s);
}

size_t imgd_lora_stack_merged_bytes(const imgd_lora_stack *s) {
    return s ? s->merged_bytes : 0;
}

imgd_status imgd_lora_stack_add(imgd_lora_stack *s, const imgd_lora *l, float w_unet, float w_te,
                                bool merged) {
    if (!s || !l) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_lora_stack_add: NULL argument");
    if (!isfinite(w_unet) || !isfinite(w_te))
        return imgd_fail(IMGD_E_INVALID_ARG, "LoRA %s: weight is not a finite number", l->path);
    for (size_t i = 0; i < l->n_mods; i++) {
        float w = l->mods[i].te ? w_te : w_unet;
        if (w == 0.0f) continue;
        if (s->n == s->alloc) {
            size_t na = s->alloc ? 2 * s->alloc : 256, bytes = 0;
            entry *ne = imgd_size_mul(na, sizeof *ne, &bytes) ? imgd_realloc(s->e, bytes) : NULL;
            if (!ne) return imgd_fail(IMGD_E_NOMEM, "out of memory");
            s->e     = ne;
            s->alloc = na;
        }
        memset(&s->e[s->n], 0, sizeof s->e[s->n]);
        s->e[s->n].md     = &l->mods[i];
        s->e[s->n].w      = w;
        s->e[s->n].merged = merged;
        s->n++;
    }
    return IMGD_OK;
}

static imgd_status keep_buf(imgd_lora_stack *s, void *buf) {
    if (s->n_bufs == s->alloc_bufs) {
        size_t na = s->alloc_bufs ? 2 * s->alloc_bufs : 64, bytes = 0;
        void **nb = imgd_size_mul(na, sizeof *nb, &bytes) ? imgd_realloc(s->bufs, bytes) : NULL;
        if (!nb) return imgd_fail(IMGD_E_NOMEM, "out of memory");
        s->bufs       = nb;
        s->alloc_bufs = na;
    }
    s->bufs[s->n_bufs++] = buf;
    return IMGD_OK;
}

/* ---- merging --------------------------------------------------------------------------------- */

/* One merged weight: its copy is filled by a pool task. */
typedef struct merge_job {
    const char *target;
    size_t      first; /* its first stack entry */
    size_t      numel;
    imgd_dtype  dtype; /* of the copy */
    void       *out;   /* the copy (kept by the stack) */
} merge_job;

typedef struct merge_run {
    const imgd_lora_stack *s;
    const imgd_wbind      *b;
    merge_job             *jobs;
    float                **scratch; /* per participant, f32 of the largest non-f32 copy */
    atomic_int             failed;
    imgd_status            st; /* first failure and its message (set by the task that failed) */
    char                   msg[512];
} merge_run;

/* The copy's dtype: the weight's own when it is f16 / bf16 (what the graph ran on before),
 * f32 for f32 and every other float type (the engine reads those as f32 anyway). */
static imgd_dtype copy_dtype(imgd_dtype base) {
    return base == IMGD_DTYPE_F16 || base == IMGD_DTYPE_BF16 ? base : IMGD_DTYPE_F32;
}

/* out = to_dtype(f32(W) + sum of the target's deltas): one rounding, to nearest even. */
static imgd_status merge_one(const imgd_lora_stack *s, const imgd_wbind *b, const merge_job *j,
                             float *scratch) {
    float      *acc = j->dtype == IMGD_DTYPE_F32 ? j->out : scratch;
    imgd_status st  = imgd_wbind_read_f32(b, j->target, acc, j->numel);
    for (size_t k = j->first; st == IMGD_OK && k < s->n; k++)
        if (s->e[k].merged && strcmp(s->e[k].md->target, j->target) == 0)
            st = imgd_lora_module_accumulate(s->e[k].md, s->e[k].w, acc, j->numel);
    if (st == IMGD_OK && acc != j->out) st = imgd_dtype_from_f32(j->dtype, acc, j->numel, j->out);
    return st;
}

static void merge_task(void *ctx, size_t begin, size_t end, uint32_t tid) {
    merge_run *r = ctx;
    for (size_t i = begin; i < end && !atomic_load(&r->failed); i++) {
        imgd_status st = merge_one(r->s, r->b, &r->jobs[i], r->scratch ? r->scratch[tid] : NULL);
        if (st != IMGD_OK && atomic_exchange(&r->failed, 1) == 0) {
            r->st = st; /* the message lives in this worker's thread-local error */
            (void)imgd_fmt(r->msg, sizeof r->msg, "%s", imgd_last_error());
        }
    }
}

/* Largest first, so the dynamic schedule ends with small weights. */
static int by_numel_desc(const void *a, const void *b) {
    size_t x = ((const merge_job *)a)->numel, y = ((const merge_job *)b)->numel;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The merged targets under prefix, one job each, with their copies allocated and kept. */
static imgd_status merge_jobs(imgd_lora_stack *s, imgd_wbind *b, const char *prefix,
                              merge_job *jobs, size_t *n_jobs) {
    imgd_strmap done;
    imgd_strmap_init(&done);
    imgd_status st = IMGD_OK;
    *n_jobs        = 0;
    for (size_t i = 0; st == IMGD_OK && i < s->n; i++) {
        const char *t = s->e[i].md->target;
        size_t      v = 0;
        imgd_dtype  dt;
        if (!s->e[i].merged || !starts_with(t, prefix) || imgd_strmap_get(&done, t, &v) ||
            !imgd_wbind_dtype(b, t, &dt))
            continue;
        int64_t shape[IMGD_MAX_DIMS];
        int32_t nd    = imgd_wbind_shape(b, t, shape);
        size_t  numel = 1, bytes = 0;
        for (int32_t d = 0; d < nd; d++) numel *= (size_t)shape[d];
        merge_job *j  = &jobs[(*n_jobs)++];
        size_t     es = imgd_dtype_traits_of(copy_dtype(dt))->block_bytes;
        *j            = (merge_job){t, i, numel, copy_dtype(dt), NULL};
        if (imgd_size_mul(numel ? numel : 1, es, &bytes)) j->out = imgd_malloc(bytes);
        if (!j->out || keep_buf(s, j->out) != IMGD_OK) {
            imgd_free(j->out);
            st = imgd_fail(IMGD_E_NOMEM, "out of memory merging LoRA into '%s'", t);
            break;
        }
        s->merged_bytes += bytes;
        st = imgd_strmap_put(&done, t, 0, NULL);
    }
    imgd_strmap_free(&done);
    return st;
}

/* Runs the jobs on the stack's pool, each participant with its own f32 scratch. OpenBLAS
 * goes single-threaded meanwhile: the pool already keeps every core busy, one weight each. */
static imgd_status merge_run_all(imgd_lora_stack *s, const imgd_wbind *b, merge_job *jobs,
                                 size_t n_jobs) {
    uint32_t  n_part = s->pool ? imgd_pool_size(s->pool) : 1;
    size_t    most   = 0;
    merge_run r      = {.s = s, .b = b, .jobs = jobs, .st = IMGD_OK};
    atomic_init(&r.failed, 0);
    for (size_t i = 0; i < n_jobs; i++)
        if (jobs[i].dtype != IMGD_DTYPE_F32 && jobs[i].numel > most) most = jobs[i].numel;
    imgd_status st = IMGD_OK;
    if (most) {
        size_t bytes = 0;
        r.scratch    = imgd_calloc(n_part, sizeof *r.scratch);
        if (!r.scratch || !imgd_size_mul(most, sizeof(float), &bytes))
            st = imgd_fail(IMGD_E_NOMEM, "out of memory");
        for (uint32_t t = 0; st == IMGD_OK && t < n_part; t++) {
            r.scratch[t] = imgd_malloc(bytes);
            if (!r.scratch[t])
                st = imgd_fail(IMGD_E_NOMEM, "out of memory (%zu MB merge scratch)", bytes >> 20);
        }
    }
    if (st == IMGD_OK) {
        int blas_threads = openblas_get_num_threads();
        if (n_part > 1) openblas_set_num_threads(1);
        qsort(jobs, n_jobs, sizeof *jobs, by_numel_desc);
        imgd_pool_run_dynamic(s->pool, n_jobs, 1, merge_task, &r);
        if (n_part > 1) openblas_set_num_threads(blas_threads);
        if (atomic_load(&r.failed)) st = imgd_fail(r.st, "%s", r.msg);
    }
    for (uint32_t t = 0; r.scratch && t < n_part; t++) imgd_free(r.scratch[t]);
    imgd_free(r.scratch);
    return st;
}

/* Merged entries of targets under prefix: one copy per target, W + sum of deltas. */
static imgd_status attach_merged(imgd_lora_stack *s, imgd_wbind *b, const char *prefix) {
    size_t     n_jobs = 0, bytes = 0;
    merge_job *jobs =
        imgd_size_mul(s->n ? s->n : 1, sizeof *jobs, &bytes) ? imgd_malloc(bytes) : NULL;
    if (!jobs) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = merge_jobs(s, b, prefix, jobs, &n_jobs);
    if (st == IMGD_OK) st = merge_run_all(s, b, jobs, n_jobs);
    for (size_t i = 0; st == IMGD_OK && i < n_jobs; i++)
        st = imgd_wbind_override(b, jobs[i].target, jobs[i].dtype, jobs[i].out);
    imgd_free(jobs);
    return st;
}

/* f32 copy of t in the stack's arena. */
static float *arena_f32(imgd_lora_stack *s, const imgd_wtensor *t) {
    float *tmp = f32_of(t);
    size_t n = (size_t)numel_of(t), bytes = n * sizeof *tmp;
    float *a = tmp ? imgd_arena_alloc(&s->arena, bytes ? bytes : 1) : NULL;
    if (a) memcpy(a, tmp, bytes);
    if (tmp && !a) (void)imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_free(tmp);
    return a;
}

/* Run-time tensors of an entry: the low-rank pair for plain LoRA, else the whole delta. */
static imgd_status prepare(imgd_lora_stack *s, entry *e, imgd_wbind *b) {
    if (e->ready) return IMGD_OK;
    e->tn = imgd_wbind_shape(b, e->md->target, e->tshape);
    if (e->md->algo == IMGD_LORA_ALGO_LORA && !e->md->mid) {
        e->down = arena_f32(s, e->md->down);
        e->up   = e->down ? arena_f32(s, e->md->up) : NULL;
        if (!e->up) return IMGD_E_NOMEM;
    } else {
        size_t numel = 1;
        for (int32_t d = 0; d < e->tn; d++) numel *= (size_t)e->tshape[d];
        e->full = imgd_arena_alloc(&s->arena, numel * sizeof *e->full);
        if (!e->full) return imgd_fail(IMGD_E_NOMEM, "out of memory");
        memset(e->full, 0, numel * sizeof *e->full);
        imgd_status st = imgd_lora_module_accumulate(e->md, e->w, e->full, numel);
        if (st != IMGD_OK) return st;
    }
    e->ready = true;
    return IMGD_OK;
}

/* What one run-time entry adds to module output y. */
static imgd_tensor *entry_delta(const entry *e, imgd_graph *g, imgd_wbind_site site, int32_t stride,
                                int32_t pad, imgd_tensor *x) {
    const imgd_lora_module *m = e->md;
    int64_t                 O = e->tshape[0], in = e->tn > 1 ? e->tshape[1] : 1;
    if (e->full) {
        if (site == IMGD_SITE_CONV) {
            imgd_tensor *w =
                imgd_graph_weight(g, m->key, IMGD_DTYPE_F32, e->tn, e->tshape, e->full);
            return imgd_op_conv2d(g, x, w, NULL, stride, pad);
        }
        imgd_tensor *w =
            imgd_graph_weight(g, m->key, IMGD_DTYPE_F32, 2, (int64_t[]){O, in}, e->full);
        return site == IMGD_SITE_WT ? imgd_op_matmul(g, w, x, false, true, NULL)
                                    : imgd_op_linear(g, x, w, NULL);
    }
    int64_t      R = rows_of(m->down), C = cols_of(m->down);
    imgd_tensor *h = NULL;
    if (site == IMGD_SITE_CONV) {
        int64_t      kh = m->down->n_dims == 4 ? m->down->shape[2] : 1;
        int64_t      kw = m->down->n_dims == 4 ? m->down->shape[3] : 1;
        imgd_tensor *d  = imgd_graph_weight(g, m->key, IMGD_DTYPE_F32, 4,
                                            (int64_t[]){R, C / (kh * kw), kh, kw}, e->down);
        imgd_tensor *u =
            imgd_graph_weight(g, m->key, IMGD_DTYPE_F32, 4, (int64_t[]){O, R, 1, 1}, e->up);
        h = imgd_op_conv2d(g, imgd_op_conv2d(g, x, d, NULL, stride, pad), u, NULL, 1, 0);
    } else {
        imgd_tensor *d =
            imgd_graph_weight(g, m->key, IMGD_DTYPE_F32, 2, (int64_t[]){R, C}, e->down);
        imgd_tensor *u = imgd_graph_weight(g, m->key, IMGD_DTYPE_F32, 2, (int64_t[]){O, R}, e->up);
        h = site == IMGD_SITE_WT ? imgd_op_matmul(g, u, imgd_op_matmul(g, d, x, false, true, NULL),
                                                  false, false, NULL)
                                 : imgd_op_linear(g, imgd_op_linear(g, x, d, NULL), u, NULL);
    }
    return imgd_op_scale(g, h, e->w * m->scale, 0.0f);
}

static imgd_tensor *run_adapt(void *user, imgd_graph *g, const char *weight, imgd_wbind_site site,
                              int32_t stride, int32_t pad, imgd_tensor *x, imgd_tensor *y) {
    imgd_lora_stack *s = user;
    size_t           v = 0;
    if (!imgd_strmap_get(&s->run, weight, &v)) return y;
    for (size_t i = v; i; i = s->e[i - 1].next) {
        const entry *e = &s->e[i - 1];
        if (e->down && e->md->down->n_dims == 4 && site != IMGD_SITE_CONV &&
            (e->md->down->shape[2] != 1 || e->md->down->shape[3] != 1)) {
            (void)imgd_graph_fail(g, IMGD_E_FORMAT, "LoRA module '%s': a conv kernel for a linear",
                                  e->md->key);
            return NULL;
        }
        y = imgd_op_add(g, y, entry_delta(e, g, site, stride, pad, x));
    }
    return y;
}

imgd_status imgd_lora_stack_attach(imgd_lora_stack *s, imgd_wbind *b, const char *prefix) {
    if (!s || !b || !prefix) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_lora_stack_attach: NULL");
    imgd_status st  = attach_merged(s, b, prefix);
    bool        any = false;
    for (size_t i = 0; st == IMGD_OK && i < s->n; i++) {
        entry *e = &s->e[i];
        if (e->merged || !starts_with(e->md->target, prefix) || !imgd_wbind_has(b, e->md->target))
            continue;
        st = prepare(s, e, b);
        if (st != IMGD_OK) break;
        any      = true;
        size_t v = 0;
        if (imgd_strmap_get(&s->run, e->md->target, &v)) { /* append to the target's chain */
            while (s->e[v - 1].next) v = s->e[v - 1].next;
            if (v - 1 != i) s->e[v - 1].next = i + 1;
        } else {
            st = imgd_strmap_put(&s->run, e->md->target, i + 1, NULL);
        }
    }
    if (st == IMGD_OK && any) imgd_wbind_set_adapter(b, run_adapt, s);
    return st;
}

void imgd_lora_stack_detach(imgd_wbind *b) {
    imgd_wbind_override_clear(b);
    imgd_wbind_set_adapter(b, NULL, NULL);
}
