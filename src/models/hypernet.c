/* A1111 hypernetworks (see hypernet.h). */
#include "models/hypernet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/weights.h"
#include "tensor/ops.h"

#define LN_EPS 1e-5f

static const char *const k_act_names[IMGD_HYPERNET_ACT_COUNT] = {"linear", "relu", "swish", "gelu"};
_Static_assert(IMGD_ARRAY_LEN(k_act_names) == IMGD_HYPERNET_ACT_COUNT, "activation names");

static const char *meta(const imgd_weights *w, const char *key) {
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_k[i], key) == 0) return w->meta_v[i];
    }
    return NULL;
}

/* A Python bool as the pickle reader or a safetensors writer spells it. */
static bool meta_bool(const imgd_weights *w, const char *key, bool dflt, bool *ok) {
    const char *v = meta(w, key);
    if (!v) return dflt;
    if (strcmp(v, "True") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0) return true;
    if (strcmp(v, "False") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0) return false;
    *ok = false;
    return dflt;
}

void imgd_hypernet_free(imgd_hypernet *h) {
    if (!h) return;
    for (int32_t d = 0; d < h->n; d++) {
        for (int32_t k = 0; k < 2; k++) {
            for (int32_t l = 0; l < h->kv[d][k].n; l++) {
                imgd_free(h->kv[d][k].layer[l].w);
                imgd_free(h->kv[d][k].layer[l].b);
            }
        }
    }
    imgd_free(h);
}

/* "<dim>.<0|1>.linear.<idx>.<weight|bias>" -> parts; false for any other name. */
static bool parse_name(const char *n, long *dim, long *kv, long *idx, bool *bias) {
    char *e = NULL;
    *dim    = strtol(n, &e, 10);
    if (e == n || *e != '.' || *dim <= 0 || *dim > 65536) return false;
    n   = e + 1;
    *kv = strtol(n, &e, 10);
    if (e == n || (*kv != 0 && *kv != 1) || strncmp(e, ".linear.", 8) != 0) return false;
    n    = e + 8;
    *idx = strtol(n, &e, 10);
    if (e == n || *idx < 0 || *idx >= 4L * IMGD_HYPERNET_LAYERS_MAX) return false;
    if (strcmp(e, ".weight") == 0) {
        *bias = false;
        return true;
    }
    if (strcmp(e, ".bias") == 0) {
        *bias = true;
        return true;
    }
    return false;
}

static float *to_f32(const imgd_wtensor *t, uint64_t n) {
    float *d = imgd_malloc((size_t)n * sizeof *d);
    if (d && imgd_dtype_to_f32(t->dtype, t->data, n, d) != IMGD_OK) {
        imgd_free(d);
        return NULL;
    }
    return d;
}

/* The file's tensors of one MLP, by sequential index: weight and bias of each. */
typedef struct slot {
    const imgd_wtensor *w, *b;
} slot;

static imgd_status build_mlp(const char *path, imgd_hypernet *h, int32_t dim, int32_t kv,
                             const slot *s, int32_t n_slots, imgd_hypernet_mlp *m) {
    int64_t width = dim;
    int32_t n_lin = 0;
    for (int32_t i = 0; i < n_slots; i++) {
        if (!s[i].w && !s[i].b) continue;
        n_lin += s[i].w && s[i].w->n_dims == 2;
    }
    int32_t lin = 0;
    for (int32_t i = 0; i < n_slots; i++) {
        if (!s[i].w && !s[i].b) continue;
        if (!s[i].w || !s[i].b)
            return imgd_fail(IMGD_E_FORMAT, "hypernetwork %s: %d.%d.linear.%d has a %s but no %s",
                             path, (int)dim, (int)kv, (int)i, s[i].w ? "weight" : "bias",
                             s[i].w ? "bias" : "weight");
        if (m->n == IMGD_HYPERNET_LAYERS_MAX)
            return imgd_fail(IMGD_E_FORMAT, "hypernetwork %s: %d.%d has more than %d layers", path,
                             (int)dim, (int)kv, IMGD_HYPERNET_LAYERS_MAX);
        imgd_hypernet_layer *L = &m->layer[m->n];
        const imgd_wtensor  *w = s[i].w, *b = s[i].b;
        L->norm = w->n_dims == 1;
        L->out  = w->shape[0];
        L->in   = L->norm ? w->shape[0] : (w->n_dims == 2 ? w->shape[1] : -1);
        if ((w->n_dims != 1 && w->n_dims != 2) || b->n_dims != 1 || b->shape[0] != L->out ||
            L->in != width)
            return imgd_fail(IMGD_E_FORMAT,
                             "hypernetwork %s: %d.%d.linear.%d (weight %dd [%lld, ..], bias "
                             "[%lld]) does not continue a %lld-wide layer chain",
                             path, (int)dim, (int)kv, (int)i, (int)w->n_dims,
                             (long long)w->shape[0], (long long)b->shape[0], (long long)width);
        if (L->norm && !h->layer_norm)
            return imgd_fail(IMGD_E_FORMAT,
                             "hypernetwork %s: %d.%d.linear.%d is a LayerNorm but is_layer_norm "
                             "is False",
                             path, (int)dim, (int)kv, (int)i);
        if (!L->norm) {
            lin++;
            L->act = h->act != IMGD_HYPERNET_ACT_LINEAR && (lin < n_lin || h->activate_output);
        }
        L->w = to_f32(w, (uint64_t)L->out * (uint64_t)(L->norm ? 1 : L->in));
        L->b = to_f32(b, (uint64_t)L->out);
        m->n++;
        if (!L->w || !L->b) return imgd_fail(IMGD_E_NOMEM, "out of memory");
        width = L->out;
    }
    if (n_lin == 0 || width != dim)
        return imgd_fail(IMGD_E_FORMAT, "hypernetwork %s: the %s MLP of width %d %s", path,
                         kv ? "value" : "key", (int)dim,
                         n_lin ? "does not map back to its width" : "has no Linear layer");
    return IMGD_OK;
}

static imgd_status parse(const char *path, const imgd_weights *w, imgd_hypernet *h) {
    bool        ok  = true;
    const char *act = meta(w, "activation_func");
    h->act          = -1;
    for (int32_t a = 0; a < IMGD_HYPERNET_ACT_COUNT; a++) {
        if (!act || strcmp(act, "None") == 0 || strcmp(act, k_act_names[a]) == 0) {
            h->act = act && strcmp(act, "None") != 0 ? a : IMGD_HYPERNET_ACT_LINEAR;
            break;
        }
    }
    if (h->act < 0)
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "hypernetwork %s: activation_func '%s' is not supported (linear, relu, "
                         "swish, gelu are)",
                         path, act);
    h->layer_norm      = meta_bool(w, "is_layer_norm", false, &ok);
    h->activate_output = meta_bool(w, "activate_output", false, &ok);
    if (!ok)
        return imgd_fail(IMGD_E_FORMAT,
                         "hypernetwork %s: is_layer_norm / activate_output must be True or False",
                         path);
    slot(*s)[2][4 * IMGD_HYPERNET_LAYERS_MAX] = imgd_calloc(IMGD_HYPERNET_WIDTHS_MAX, sizeof *s);
    if (!s) return imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_status st = IMGD_OK;
    for (size_t i = 0; i < w->n; i++) {
        long dim = 0, kv = 0, idx = 0;
        bool bias = false;
        if (!parse_name(w->t[i].name, &dim, &kv, &idx, &bias)) {
            st = imgd_fail(IMGD_E_FORMAT,
                           "hypernetwork %s: tensor '%s' is not '<width>.<0|1>.linear.<n>."
                           "weight|bias' (is this an A1111 hypernetwork?)",
                           path, w->t[i].name);
            break;
        }
        int32_t d = 0;
        while (d < h->n && h->dim[d] != (int32_t)dim) d++;
        if (d == h->n) {
            if (h->n == IMGD_HYPERNET_WIDTHS_MAX) {
                st = imgd_fail(IMGD_E_FORMAT, "hypernetwork %s: more than %d context widths", path,
                               IMGD_HYPERNET_WIDTHS_MAX);
                break;
            }
            h->dim[h->n++] = (int32_t)dim;
        }
        const imgd_wtensor **dst = bias ? &s[d][kv][idx].b : &s[d][kv][idx].w;
        if (*dst) {
            st = imgd_fail(IMGD_E_FORMAT, "hypernetwork %s: tensor '%s' appears twice", path,
                           w->t[i].name);
            break;
        }
        *dst = &w->t[i];
    }
    if (st == IMGD_OK && h->n == 0)
        st = imgd_fail(IMGD_E_FORMAT, "hypernetwork %s: no '<width>.<0|1>.linear.*' tensors", path);
    for (int32_t d = 0; st == IMGD_OK && d < h->n; d++) {
        for (int32_t kv = 0; st == IMGD_OK && kv < 2; kv++)
            st = build_mlp(path, h, h->dim[d], kv, s[d][kv], 4 * IMGD_HYPERNET_LAYERS_MAX,
                           &h->kv[d][kv]);
    }
    imgd_free(s);
    return st;
}

imgd_status imgd_hypernet_load(const char *path, imgd_hypernet **out) {
    if (!path || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_hypernet_load: NULL argument");
    imgd_weights *w  = NULL;
    imgd_status   st = imgd_weights_open(path, NULL, &w);
    if (st != IMGD_OK) return st;
    imgd_hypernet *h = imgd_calloc(1, sizeof *h);
    st               = h ? parse(path, w, h) : imgd_fail(IMGD_E_NOMEM, "out of memory");
    imgd_weights_free(w);
    if (st != IMGD_OK) {
        imgd_hypernet_free(h);
        return st;
    }
    *out = h;
    return IMGD_OK;
}

imgd_tensor *imgd_hypernet_apply(imgd_graph *g, const imgd_hypernet *h, int32_t which,
                                 imgd_tensor *ctx, float strength) {
    if (!g || !ctx) return NULL;
    if (!h || which < 0 || which > 1) {
        (void)imgd_graph_fail(g, IMGD_E_INVALID_ARG, "imgd_hypernet_apply: bad arguments");
        return NULL;
    }
    int64_t width = ctx->shape[ctx->n_dims - 1];
    int32_t d     = 0;
    while (d < h->n && h->dim[d] != width) d++;
    if (d == h->n) return ctx;
    const imgd_hypernet_mlp *m = &h->kv[d][which];
    imgd_tensor             *x = ctx;
    for (int32_t l = 0; l < m->n && x; l++) {
        const imgd_hypernet_layer *L = &m->layer[l];
        imgd_tensor *b = imgd_graph_weight(g, NULL, IMGD_DTYPE_F32, 1, (int64_t[]){L->out}, L->b);
        if (L->norm) {
            imgd_tensor *gw =
                imgd_graph_weight(g, NULL, IMGD_DTYPE_F32, 1, (int64_t[]){L->out}, L->w);
            x = imgd_op_layer_norm(g, x, LN_EPS, gw, b);
            continue;
        }
        imgd_tensor *w =
            imgd_graph_weight(g, NULL, IMGD_DTYPE_F32, 2, (int64_t[]){L->out, L->in}, L->w);
        x = imgd_op_linear(g, x, w, b);
        if (!L->act) continue;
        switch (h->act) {
        case IMGD_HYPERNET_ACT_RELU: x = imgd_op_clamp(g, x, 0.0f, INFINITY); break;
        case IMGD_HYPERNET_ACT_SWISH: x = imgd_op_silu(g, x); break;
        case IMGD_HYPERNET_ACT_GELU: x = imgd_op_gelu(g, x); break;
        default: break;
        }
    }
    return imgd_op_add(g, ctx, imgd_op_scale(g, x, strength, 0.0f));
}
