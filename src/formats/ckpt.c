/* PyTorch zip checkpoints (.ckpt .pt .pth .bin) written by torch.save (PyTorch >= 1.6).
 *
 * Layout: a zip archive whose entries share one top-level folder <archive>/ (any name):
 *   <archive>/data.pkl    the pickled object (usually a dict of tensors, maybe wrapped)
 *   <archive>/data/<key>  raw little-endian bytes of each storage
 *   <archive>/byteorder   "little" or "big" (newer PyTorch), <archive>/version, ...
 * The pickle runs in the restricted VM (pickle.h), which never executes code; tensors come
 * back as views (offset, size, stride) of storages named by key. Here each storage is
 * resolved to its zip entry and checked against its declared element count, every view is
 * checked against its storage, and the object graph is flattened to dotted names with a
 * depth cap and a visit budget (memo/DUP sharing can make the graph cyclic or exponential). */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/arena.h"
#include "base/error.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/pickle.h"
#include "formats/weights.h"
#include "formats/zip.h"

#define NAME_CAP        1024 /* bytes of a dotted tensor/metadata name, with the NUL */
#define WALK_DEPTH_MAX  32   /* container nesting below the (unwrapped) root */
#define UNWRAP_MAX      4    /* {"state_dict": {"model": ...}} levels */
#define META_MAX        4096 /* metadata entries kept from the pickle */
#define META_VALUE_MAX  65536
#define MATERIALISE_MIN ((uint64_t)1 << 30)

#define HINT "the checkpoint is damaged or was not written by torch.save"

typedef struct storage_slot {
    const char    *key; /* in the pickle arena */
    const uint8_t *data;
    uint64_t       nbytes;
    imgd_dtype     dtype;
    bool           untyped;
} storage_slot;

/* A tensor's resolved bytes, cached in imgd_pickle_tensor.user (shared views). */
typedef struct resolved {
    const uint8_t *data;
    uint64_t       nbytes;
} resolved;

typedef struct ckpt {
    const char             *file;
    const imgd_open_limits *lim;
    imgd_weights           *w;
    imgd_zip               *zip;
    char                   *prefix; /* "<archive>", imgd_malloc'd */
    imgd_strmap             slot_index;
    storage_slot           *slots;
    size_t                  n_slots, alloc_slots;
    imgd_arena              scratch; /* resolved records */
    uint64_t                visits, visits_max;
    uint64_t                copied, copied_max; /* bytes of materialised strided tensors */
    char                    name[NAME_CAP];
} ckpt;

/* ---- archive layout ----------------------------------------------------------------- */

/* Finds the one "<archive>/data.pkl" entry; sets c->prefix. */
static imgd_status find_pickle(ckpt *c, size_t *index) {
    size_t found = 0, n = imgd_zip_count(c->zip);
    for (size_t i = 0; i < n; i++) {
        const imgd_zip_entry *e     = imgd_zip_entry_at(c->zip, i);
        const char           *slash = strchr(e->name, '/');
        if (!slash || strcmp(slash, "/data.pkl") != 0 || slash == e->name) continue;
        if (found++) {
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: the archive holds several data.pkl entries ('%s' and '%s'); "
                             "refusing an ambiguous checkpoint",
                             c->file, imgd_zip_entry_at(c->zip, *index)->name, e->name);
        }
        *index = i;
    }
    if (!found) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: a zip archive without '<archive>/data.pkl'; not a PyTorch "
                         "checkpoint (TorchScript archives and plain zips are not weight files)",
                         c->file);
    }
    const imgd_zip_entry *e = imgd_zip_entry_at(c->zip, *index);
    c->prefix               = imgd_strndup(e->name, (size_t)(strchr(e->name, '/') - e->name));
    if (!c->prefix) return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", c->file);
    return IMGD_OK;
}

/* Joins "<archive>/<rest>" into buf; false when it does not fit. */
static bool entry_name(const ckpt *c, const char *rest, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%s/%s", c->prefix, rest);
    return n > 0 && (size_t)n < cap;
}

/* Newer PyTorch records the byte order; storages are only readable when little-endian. */
static imgd_status check_byteorder(ckpt *c) {
    char   nm[NAME_CAP];
    size_t i = 0;
    if (!entry_name(c, "byteorder", nm, sizeof nm) || !imgd_zip_find(c->zip, nm, &i)) {
        return IMGD_OK;
    }
    const uint8_t *d     = NULL;
    uint64_t       n     = 0;
    void          *owned = NULL;
    imgd_status    st    = imgd_zip_extract(c->zip, i, 64, &d, &n, &owned);
    if (st != IMGD_OK) return st;
    bool big = n == 3 && memcmp(d, "big", 3) == 0;
    imgd_free(owned);
    if (big) {
        return imgd_fail(IMGD_E_UNSUPPORTED,
                         "%s: the checkpoint was saved on a big-endian machine; re-save it on a "
                         "little-endian one or convert it to .safetensors there",
                         c->file);
    }
    return IMGD_OK;
}

/* ---- storages ------------------------------------------------------------------------ */

static imgd_status slot_add(ckpt *c, const storage_slot *s) {
    if (c->n_slots == c->alloc_slots) {
        size_t na = c->alloc_slots ? c->alloc_slots * 2 : 64, bytes;
        if (!imgd_size_mul(na, sizeof *c->slots, &bytes)) {
            return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", c->file);
        }
        storage_slot *ns = imgd_realloc(c->slots, bytes);
        if (!ns) return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", c->file);
        c->slots       = ns;
        c->alloc_slots = na;
    }
    imgd_status st = imgd_strmap_put(&c->slot_index, s->key, c->n_slots, NULL);
    if (st != IMGD_OK) return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", c->file);
    c->slots[c->n_slots++] = *s;
    return IMGD_OK;
}

/* Loads the zip entry of storage s (once per key) and checks its size and dtype. */
static imgd_status storage_get(ckpt *c, const imgd_pickle_storage *s, const storage_slot **out) {
    size_t i = 0;
    if (!imgd_strmap_get(&c->slot_index, s->key, &i)) {
        char nm[NAME_CAP];
        int  k = snprintf(nm, sizeof nm, "%s/data/%s", c->prefix, s->key);
        if (k < 0 || (size_t)k >= sizeof nm) {
            return imgd_fail(IMGD_E_FORMAT, "%s: storage key too long; " HINT, c->file);
        }
        size_t zi = 0;
        if (!imgd_zip_find(c->zip, nm, &zi)) {
            return imgd_fail(IMGD_E_FORMAT,
                             "%s: storage '%s' has no archive entry '%s'; the checkpoint is "
                             "incomplete, download it again",
                             c->file, s->key, nm);
        }
        storage_slot slot  = {s->key, NULL, 0, s->dtype, s->untyped};
        void        *owned = NULL;
        imgd_status  st    = imgd_zip_extract(c->zip, zi, c->lim->inflate_size_max, &slot.data,
                                              &slot.nbytes, &owned);
        if (st == IMGD_OK && owned) st = imgd_weights_own_buf(c->w, owned);
        if (st == IMGD_OK) st = slot_add(c, &slot);
        if (st != IMGD_OK) return st;
        i = c->n_slots - 1;
    }
    const storage_slot *slot = &c->slots[i];
    if (slot->dtype != s->dtype || slot->untyped != s->untyped) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: storage '%s' is referenced as both %s and %s; torch.save never "
                         "writes that, " HINT,
                         c->file, s->key, imgd_dtype_name(slot->dtype), imgd_dtype_name(s->dtype));
    }
    uint64_t want = 0;
    if (!imgd_u64_mul_ok(s->numel, s->elem_size, &want) || want != slot->nbytes) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: storage '%s' declares %llu elements of %s (%u bytes each) but its "
                         "archive entry holds %llu bytes (numel mismatch); " HINT,
                         c->file, s->key, (unsigned long long)s->numel, imgd_dtype_name(s->dtype),
                         (unsigned)s->elem_size, (unsigned long long)slot->nbytes);
    }
    *out = slot;
    return IMGD_OK;
}

/* ---- tensor views ------------------------------------------------------------------------ */

/* Largest element index the view touches (offset + sum (shape-1) * stride); false on
 * overflow. Only for views with at least one element. */
static bool view_last(const imgd_pickle_tensor *t, uint64_t *last) {
    uint64_t r = t->offset;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t step = 0;
        if (!imgd_u64_mul_ok((uint64_t)(t->shape[d] - 1), (uint64_t)t->stride[d], &step) ||
            !imgd_u64_add_ok(r, step, &r)) {
            return false;
        }
    }
    *last = r;
    return true;
}

static bool is_contiguous(const imgd_pickle_tensor *t) {
    uint64_t expect = 1;
    for (int d = t->n_dims - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && (uint64_t)t->stride[d] != expect) return false;
        expect *= (uint64_t)t->shape[d]; /* bounded by numel, checked by the caller */
    }
    return true;
}

/* Copies a strided view into dst, innermost dimension as runs (validated view). */
static void gather(uint8_t *dst, const uint8_t *src, const imgd_pickle_tensor *t, size_t elem) {
    int      nd                = t->n_dims;
    uint64_t inner             = nd ? (uint64_t)t->shape[nd - 1] : 1,
             istride           = nd ? (uint64_t)t->stride[nd - 1] : 1;
    int64_t idx[IMGD_MAX_DIMS] = {0};
    for (;;) {
        uint64_t off = t->offset;
        for (int d = 0; d < nd - 1; d++) off += (uint64_t)idx[d] * (uint64_t)t->stride[d];
        if (istride == 1) {
            memcpy(dst, src + off * elem, inner * elem);
            dst += inner * elem;
        } else {
            for (uint64_t j = 0; j < inner; j++, dst += elem) {
                memcpy(dst, src + (off + j * istride) * elem, elem);
            }
        }
        int d = nd - 2; /* odometer over the outer dimensions */
        for (; d >= 0; d--) {
            idx[d]++;
            if (idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

/* Resolves tensor t (named `name` for messages) to its bytes: zero-copy when contiguous,
 * else a materialised copy owned by the weights handle. Cached in t->user. */
static imgd_status tensor_bytes(ckpt *c, imgd_pickle_tensor *t, const resolved **out) {
    if (t->user) {
        *out = t->user;
        return IMGD_OK;
    }
    const storage_slot *s  = NULL;
    imgd_status         st = storage_get(c, t->storage, &s);
    if (st != IMGD_OK) return st;
    uint64_t numel, nbytes, last = 0, end;
    if (!imgd_shape_numel(t->n_dims, t->shape, &numel) ||
        !imgd_u64_mul_ok(numel, t->elem_size, &nbytes)) {
        return imgd_fail(IMGD_E_FORMAT, "%s: tensor '%s' has an impossibly large shape; " HINT,
                         c->file, c->name);
    }
    if (numel && (!view_last(t, &last) || !imgd_u64_add_ok(last, 1, &end) ||
                  !imgd_u64_mul_ok(end, t->elem_size, &end) || end > s->nbytes)) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: tensor '%s' (storage '%s', offset %llu) reaches past the end of its "
                         "storage of %llu bytes (storage offset or strides out of range); " HINT,
                         c->file, c->name, s->key, (unsigned long long)t->offset,
                         (unsigned long long)s->nbytes);
    }
    resolved *r = imgd_arena_alloc(&c->scratch, sizeof *r);
    if (!r) return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", c->file);
    r->nbytes = nbytes;
    r->data   = s->data;
    if (numel && is_contiguous(t)) {
        r->data = s->data + t->offset * t->elem_size;
    } else if (numel) {
        if (!imgd_u64_add_ok(c->copied, nbytes, &c->copied) || c->copied > c->copied_max) {
            return imgd_fail(IMGD_E_TOO_LARGE,
                             "%s: tensor '%s': copying strided (non-contiguous) tensors would "
                             "take over %llu bytes; refusing an expansion bomb",
                             c->file, c->name, (unsigned long long)c->copied_max);
        }
        uint8_t *buf = nbytes < SIZE_MAX ? imgd_malloc((size_t)nbytes) : NULL;
        if (!buf) {
            return imgd_fail(IMGD_E_NOMEM, "%s: tensor '%s': out of memory for %llu bytes", c->file,
                             c->name, (unsigned long long)nbytes);
        }
        gather(buf, s->data, t, t->elem_size);
        st = imgd_weights_own_buf(c->w, buf);
        if (st != IMGD_OK) return st;
        r->data = buf;
    }
    t->user = r;
    *out    = r;
    return IMGD_OK;
}

/* ---- flattening ------------------------------------------------------------------------- */

/* Appends ".<part>" (or "<part>" at the root) to c->name at len; false when too long. */
static bool name_push(ckpt *c, size_t len, const char *part, size_t n, size_t *new_len) {
    size_t dot = len ? 1 : 0;
    if (n >= NAME_CAP || len + dot + n >= NAME_CAP) return false;
    if (dot) c->name[len] = '.';
    memcpy(c->name + len + dot, part, n);
    *new_len          = len + dot + n;
    c->name[*new_len] = '\0';
    return true;
}

static imgd_status add_meta(ckpt *c, const imgd_pickle_value *x) {
    char        num[40];
    const char *text = num;
    switch (x->kind) {
    case IMGD_PICKLE_BOOL: text = x->u.b ? "True" : "False"; break;
    case IMGD_PICKLE_INT: (void)imgd_fmt(num, sizeof num, "%lld", (long long)x->u.i); break;
    case IMGD_PICKLE_FLOAT: (void)imgd_fmt(num, sizeof num, "%.17g", x->u.f); break;
    case IMGD_PICKLE_STR:
        if (x->u.str.len > META_VALUE_MAX || !imgd_utf8_valid(x->u.str.p, x->u.str.len)) {
            return IMGD_OK; /* long or NUL-bearing text is not useful as metadata */
        }
        text = x->u.str.p;
        break;
    default: return IMGD_OK;
    }
    if (c->w->n_meta >= META_MAX || !imgd_utf8_valid(c->name, strlen(c->name))) return IMGD_OK;
    return imgd_weights_meta_set(c->w, c->name, text);
}

static imgd_status add_tensor(ckpt *c, imgd_pickle_tensor *t, size_t len) {
    const resolved *r  = NULL;
    imgd_status     st = tensor_bytes(c, t, &r);
    if (st != IMGD_OK) return st;
    if (!r) return imgd_fail(IMGD_E_INTERNAL, "%s: tensor '%s' was not resolved", c->file, c->name);
    st = imgd_weights_add(c->w, c->name, len, t->dtype, t->n_dims, t->shape, r->data, r->nbytes);
    if (st != IMGD_OK) return imgd_fail_prefix(st, "%s", c->file);
    return IMGD_OK;
}

static imgd_status walk(ckpt *c, const imgd_pickle_value *x, size_t len, int depth);

/* Children of a dict, list or tuple: dict keys that are str or int become name parts
 * (other keys are skipped), sequence items get their index. */
// NOLINTNEXTLINE(misc-no-recursion): recurses through walk, which caps depth and visits
static imgd_status walk_children(ckpt *c, const imgd_pickle_value *x, size_t len, int depth) {
    bool is_dict = x->kind == IMGD_PICKLE_DICT;
    for (size_t i = 0; i < x->u.seq.n; i++) {
        const imgd_pickle_value *k = is_dict ? x->u.seq.items[2 * i] : NULL;
        const imgd_pickle_value *v = is_dict ? x->u.seq.items[2 * i + 1] : x->u.seq.items[i];
        char                     num[24];
        const char              *part = num;
        size_t                   n    = 0;
        if (!is_dict || k->kind == IMGD_PICKLE_INT) {
            long long idx = is_dict ? (long long)k->u.i : (long long)i;
            n             = (size_t)snprintf(num, sizeof num, "%lld", idx);
        } else if (k->kind == IMGD_PICKLE_STR) {
            part = k->u.str.p;
            n    = k->u.str.len;
        } else {
            continue;
        }
        size_t nl = 0;
        if (!name_push(c, len, part, n, &nl)) {
            return imgd_fail(IMGD_E_FORMAT, "%s: a name under '%s' is longer than %d bytes; " HINT,
                             c->file, len ? c->name : "(root)", NAME_CAP - 1);
        }
        imgd_status st = walk(c, v, nl, depth + 1);
        c->name[len]   = '\0';
        if (st != IMGD_OK) return st;
    }
    return IMGD_OK;
}

/* Depth-first walk of the value graph. Recursion is bounded by WALK_DEPTH_MAX and the
 * whole walk by visits_max, so cycles and memo-shared (exponential) graphs stop early. */
// NOLINTNEXTLINE(misc-no-recursion): depth capped by WALK_DEPTH_MAX, total by visits_max
static imgd_status walk(ckpt *c, const imgd_pickle_value *x, size_t len, int depth) {
    if (++c->visits > c->visits_max) {
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "%s: the pickled object graph has more than %llu paths (shared or "
                         "cyclic references); refusing a pickle bomb",
                         c->file, (unsigned long long)c->visits_max);
    }
    if (depth > WALK_DEPTH_MAX) {
        return imgd_fail(IMGD_E_FORMAT,
                         "%s: '%.200s' is nested more than %d levels deep (or the object graph is "
                         "cyclic); " HINT,
                         c->file, c->name, WALK_DEPTH_MAX);
    }
    switch (x->kind) {
    case IMGD_PICKLE_TENSOR:
        if (!len) {
            return imgd_fail(IMGD_E_UNSUPPORTED,
                             "%s: the checkpoint holds a single unnamed tensor, not a dict of "
                             "named tensors; save a state_dict instead",
                             c->file);
        }
        return add_tensor(c, x->u.tensor, len);
    case IMGD_PICKLE_DICT:
    case IMGD_PICKLE_LIST:
    case IMGD_PICKLE_TUPLE: return walk_children(c, x, len, depth);
    default: return len ? add_meta(c, x) : IMGD_OK;
    }
}

/* ---- unwrapping ---------------------------------------------------------------------------- */

static const imgd_pickle_value *dict_get(const imgd_pickle_value *d, const char *key) {
    const imgd_pickle_value *found = NULL;
    size_t                   kl    = strlen(key);
    for (size_t i = 0; i < d->u.seq.n; i++) {
        const imgd_pickle_value *k = d->u.seq.items[2 * i];
        if (k->kind == IMGD_PICKLE_STR && k->u.str.len == kl && memcmp(k->u.str.p, key, kl) == 0) {
            found = d->u.seq.items[2 * i + 1]; /* the last duplicate wins, as in Python */
        }
    }
    return found;
}

/* Follows {"state_dict": {...}} / {"model": {...}} / {"module": {...}} wrappers, keeping
 * the wrappers' scalar entries ("global_step", "epoch") as metadata. */
static imgd_status unwrap(ckpt *c, const imgd_pickle_value **root) {
    static const char *const keys[] = {"state_dict", "model", "module"};
    for (int level = 0; level < UNWRAP_MAX && (*root)->kind == IMGD_PICKLE_DICT; level++) {
        const imgd_pickle_value *inner = NULL;
        for (size_t k = 0; k < IMGD_ARRAY_LEN(keys) && !inner; k++) {
            const imgd_pickle_value *x = dict_get(*root, keys[k]);
            if (x && x->kind == IMGD_PICKLE_DICT) inner = x;
        }
        if (!inner) break;
        for (size_t i = 0; i < (*root)->u.seq.n; i++) {
            const imgd_pickle_value *k  = (*root)->u.seq.items[2 * i];
            size_t                   nl = 0;
            if (k->kind != IMGD_PICKLE_STR || !name_push(c, 0, k->u.str.p, k->u.str.len, &nl)) {
                continue;
            }
            imgd_status st = add_meta(c, (*root)->u.seq.items[2 * i + 1]);
            c->name[0]     = '\0';
            if (st != IMGD_OK) return st;
        }
        *root = inner;
    }
    return IMGD_OK;
}

/* ---- entry point ------------------------------------------------------------------------- */

static imgd_status run_pickle(ckpt *c, size_t pkl, imgd_arena *arena, imgd_pickle_result *res) {
    const imgd_zip_entry *e = imgd_zip_entry_at(c->zip, pkl);
    if (e->size > c->lim->header_size_max) {
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "%s: %s is %llu bytes, over the cap of %llu (raise header_size_max if "
                         "the file is trusted)",
                         c->file, e->name, (unsigned long long)e->size,
                         (unsigned long long)c->lim->header_size_max);
    }
    const uint8_t *d     = NULL;
    uint64_t       n     = 0;
    void          *owned = NULL;
    imgd_status    st    = imgd_zip_extract(c->zip, pkl, c->lim->header_size_max, &d, &n, &owned);
    if (st != IMGD_OK) return st;
    imgd_pickle_params pp = {c->file, e->name, c->lim->pickle_ops_max, c->lim->header_size_max};
    imgd_arena_init(arena, imgd_pickle_arena_cap((size_t)n));
    st = imgd_pickle_load(&pp, d, (size_t)n, arena, res); /* values copy what they need */
    imgd_free(owned);
    return st;
}

imgd_status imgd_ckpt_read(const char *name, const uint8_t *data, uint64_t size,
                           const imgd_open_limits *lim, imgd_weights *w) {
    ckpt c;
    memset(&c, 0, sizeof c);
    c.file = name;
    c.lim  = lim;
    c.w    = w;
    imgd_strmap_init(&c.slot_index);
    imgd_arena_init(&c.scratch, 0);
    imgd_arena         arena;
    imgd_pickle_result res = {0};
    size_t             pkl = 0;
    imgd_arena_init(&arena, 0);
    imgd_status st = imgd_zip_open(name, data, size, &c.zip);
    if (st != IMGD_OK) goto done;
    st = find_pickle(&c, &pkl);
    if (st == IMGD_OK) st = check_byteorder(&c);
    if (st == IMGD_OK) st = run_pickle(&c, pkl, &arena, &res);
    if (st != IMGD_OK) goto done;
    c.visits_max = 2 * res.n_values + 1024;
    c.copied_max = lim->inflate_size_max;
    if (c.copied_max > 2 * size + MATERIALISE_MIN) c.copied_max = 2 * size + MATERIALISE_MIN;
    const imgd_pickle_value *root = res.root;
    st                            = unwrap(&c, &root);
    if (st == IMGD_OK) st = walk(&c, root, 0, 0);
done:
    imgd_arena_free(&arena);
    imgd_arena_free(&c.scratch);
    imgd_strmap_free(&c.slot_index);
    imgd_free(c.slots);
    imgd_free(c.prefix);
    imgd_zip_free(c.zip);
    return st;
}
