/* Graphs: descriptors, leaves, sticky errors, planning, allocation and replay. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "tensor/backend.h"
#include "tensor/plan.h"
#include "tensor/tensor_impl.h"

/* ---- op names ------------------------------------------------------------------------- */

static const char *const k_op_names[] = {
    "none",       "view",         "cast",
    "dequantize", "concat",       "pad",
    "upsample",   "avg_pool2d",   "matmul",
    "conv2d",     "group_norm",   "layer_norm",
    "rms_norm",   "softmax",      "attention",
    "gelu",       "gelu_tanh",    "quick_gelu",
    "silu",       "geglu",        "clamp",
    "scale",      "add",          "sub",
    "mul",        "div",          "timestep_embedding",
    "rope",       "linear_quant",
};
_Static_assert(IMGD_ARRAY_LEN(k_op_names) == IMGD_OP_COUNT, "one name per imgd_op");

const char *imgd_op_name(imgd_op op) {
    if ((unsigned)op >= IMGD_OP_COUNT) return "unknown";
    return k_op_names[op];
}

/* ---- tensor helpers ------------------------------------------------------------------- */

size_t imgd_dtype_size(imgd_dtype dt) {
    const imgd_dtype_traits *t = imgd_dtype_traits_of(dt);
    return t->block_elems == 1 ? t->block_bytes : 0;
}

int64_t imgd_tensor_numel(const imgd_tensor *t) {
    int64_t n = 1;
    for (int32_t i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

size_t imgd_tensor_nbytes(const imgd_tensor *t) {
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(t->dtype);
    return (size_t)imgd_tensor_numel(t) / tr->block_elems * tr->block_bytes;
}

bool imgd_tensor_is_contiguous(const imgd_tensor *t) {
    int64_t expect = 1;
    for (int32_t i = t->n_dims - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect) return false;
        expect *= t->shape[i];
    }
    return true;
}

bool imgd_tensor_same_shape(const imgd_tensor *a, const imgd_tensor *b) {
    if (a->n_dims != b->n_dims) return false;
    for (int32_t i = 0; i < a->n_dims; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

void imgd_tensor_set_contiguous(imgd_tensor *t) {
    int64_t s = 1;
    for (int32_t i = t->n_dims - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

imgd_status imgd_tensor_bind(imgd_tensor *t, void *data) {
    if (!t || t->kind != IMGD_TENSOR_INPUT)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_tensor_bind: '%s' is not a graph input",
                         t && t->name ? t->name : "?");
    if (!data) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_tensor_bind: data is NULL");
    t->data = data;
    return IMGD_OK;
}

/* ---- graph lifecycle ------------------------------------------------------------------ */

imgd_graph_params imgd_graph_params_default(void) {
    imgd_graph_params p = {256u << 20, 1000000, false};
    return p;
}

imgd_status imgd_graph_new(const imgd_graph_params *params, imgd_graph **out) {
    imgd_graph_params p = params ? *params : imgd_graph_params_default();
    if (p.arena_bytes_max == 0) p.arena_bytes_max = 256u << 20;
    if (p.nodes_max == 0) p.nodes_max = 1000000;
    if (!out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_graph_new: out is NULL");
    imgd_graph *g = imgd_calloc(1, sizeof *g);
    if (!g) return imgd_fail(IMGD_E_NOMEM, "imgd_graph_new: out of memory");
    imgd_arena_init(&g->arena, p.arena_bytes_max);
    g->nodes_max         = p.nodes_max;
    g->fuse_quant_linear = p.fuse_quant_linear;
    *out                 = g;
    return IMGD_OK;
}

static void unplan(imgd_graph *g) {
    if (g->prepared && g->be && g->be->iface->release) g->be->iface->release(g->be, g);
    g->prepared = false;
    if (g->owns_buffer && g->buffer && g->be) g->be->iface->buffer_free(g->be, g->buffer);
    g->buffer      = NULL;
    g->owns_buffer = false;
    imgd_free(g->exec);
    g->exec     = NULL;
    g->n_exec   = 0;
    g->planned  = false;
    g->computed = false;
    g->be       = NULL;
    for (size_t i = 0; i < g->n_tensors; i++) {
        imgd_tensor *t   = g->tensors[i];
        t->exec          = -1;
        t->scratch_bytes = 0;
        t->plan_early    = false;
        t->scratch       = NULL;
        t->backend_data  = NULL;
        if (t->kind == IMGD_TENSOR_ACTIVATION) t->data = NULL;
    }
}

void imgd_graph_free(imgd_graph *g) {
    if (!g) return;
    unplan(g);
    imgd_free(g->tensors);
    imgd_arena_free(&g->arena);
    imgd_free(g);
}

imgd_status imgd_graph_status(const imgd_graph *g) {
    return g ? g->status : IMGD_E_INVALID_ARG;
}

const char *imgd_graph_error(const imgd_graph *g) {
    return g ? g->error : "graph is NULL";
}

imgd_status imgd_graph_fail(imgd_graph *g, imgd_status status, const char *fmt, ...) {
    char    msg[GRAPH_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g && g->status == IMGD_OK) {
        g->status = status;
        memcpy(g->error, msg, sizeof msg);
    }
    return imgd_fail(status, "%s", g ? g->error : msg);
}

size_t imgd_graph_tensor_count(const imgd_graph *g) {
    return g->n_tensors;
}

imgd_tensor *imgd_graph_tensor(const imgd_graph *g, size_t i) {
    return i < g->n_tensors ? g->tensors[i] : NULL;
}

size_t imgd_graph_exec_count(const imgd_graph *g) {
    return g->n_exec;
}

imgd_tensor *imgd_graph_exec_node(const imgd_graph *g, size_t i) {
    return i < g->n_exec ? g->exec[i] : NULL;
}

/* ---- descriptors ---------------------------------------------------------------------- */

static bool push_tensor(imgd_graph *g, imgd_tensor *t) {
    if (g->n_tensors == g->cap_tensors) {
        size_t cap = g->cap_tensors ? g->cap_tensors * 2 : 256;
        if (cap > g->nodes_max) cap = g->nodes_max;
        if (cap <= g->n_tensors) {
            imgd_graph_fail(g, IMGD_E_TOO_LARGE, "graph: more than %zu tensors (nodes_max)",
                            g->nodes_max);
            return false;
        }
        imgd_tensor **n = imgd_realloc(g->tensors, cap * sizeof *n);
        if (!n) {
            imgd_graph_fail(g, IMGD_E_NOMEM, "graph: out of memory for %zu tensors", cap);
            return false;
        }
        g->tensors     = n;
        g->cap_tensors = cap;
    }
    t->id                      = (int32_t)g->n_tensors;
    g->tensors[g->n_tensors++] = t;
    return true;
}

imgd_tensor *imgd_graph_new_tensor(imgd_graph *g, imgd_dtype dtype, int32_t n_dims,
                                   const int64_t *shape) {
    if (g->planned) {
        imgd_graph_fail(g, IMGD_E_INVALID_ARG, "graph: cannot add tensors after planning");
        return NULL;
    }
    if (n_dims < 0 || n_dims > IMGD_MAX_DIMS) {
        imgd_graph_fail(g, IMGD_E_INVALID_ARG, "graph: %d dims (expected 0..%d)", (int)n_dims,
                        IMGD_MAX_DIMS);
        return NULL;
    }
    for (int32_t i = 0; i < n_dims; i++) {
        if (shape[i] < 0 || shape[i] > ((int64_t)1 << 40)) {
            imgd_graph_fail(g, IMGD_E_INVALID_ARG, "graph: dim %d is %lld", (int)i,
                            (long long)shape[i]);
            return NULL;
        }
    }
    imgd_tensor *t = imgd_arena_alloc(&g->arena, sizeof *t);
    if (!t) {
        imgd_graph_fail(g, IMGD_E_TOO_LARGE, "graph: descriptor arena exhausted");
        return NULL;
    }
    t->dtype  = dtype;
    t->n_dims = n_dims;
    for (int32_t i = 0; i < n_dims; i++) t->shape[i] = shape[i];
    imgd_tensor_set_contiguous(t);
    t->storage = t;
    t->exec    = -1;
    return push_tensor(g, t) ? t : NULL;
}

static imgd_tensor *new_leaf(imgd_graph *g, const char *name, imgd_dtype dtype, int32_t n_dims,
                             const int64_t *shape, imgd_tensor_kind kind) {
    if (!g || g->status != IMGD_OK) return NULL;
    if ((unsigned)dtype >= IMGD_DTYPE_COUNT || (n_dims > 0 && !shape)) {
        imgd_graph_fail(g, IMGD_E_INVALID_ARG, "graph: leaf '%s' has a bad dtype or shape",
                        name ? name : "?");
        return NULL;
    }
    const imgd_dtype_traits *tr = imgd_dtype_traits_of(dtype);
    if (tr->block_elems > 1 && (n_dims == 0 || shape[n_dims - 1] % tr->block_elems != 0)) {
        imgd_graph_fail(g, IMGD_E_INVALID_ARG,
                        "graph: '%s' is %s but its innermost dim is not a multiple of %u",
                        name ? name : "?", tr->name, tr->block_elems);
        return NULL;
    }
    imgd_tensor *t = imgd_graph_new_tensor(g, dtype, n_dims, shape);
    if (!t) return NULL;
    t->kind = kind;
    if (name) {
        t->name = imgd_arena_strndup(&g->arena, name, strlen(name));
        if (!t->name) {
            imgd_graph_fail(g, IMGD_E_TOO_LARGE, "graph: descriptor arena exhausted");
            return NULL;
        }
    }
    t->nbytes = imgd_tensor_nbytes(t);
    return t;
}

imgd_tensor *imgd_graph_input(imgd_graph *g, const char *name, imgd_dtype dtype, int32_t n_dims,
                              const int64_t *shape) {
    return new_leaf(g, name, dtype, n_dims, shape, IMGD_TENSOR_INPUT);
}

imgd_tensor *imgd_graph_weight(imgd_graph *g, const char *name, imgd_dtype dtype, int32_t n_dims,
                               const int64_t *shape, const void *data) {
    if (g && g->status == IMGD_OK && !data) {
        imgd_graph_fail(g, IMGD_E_INVALID_ARG, "graph: weight '%s' has no data", name ? name : "?");
        return NULL;
    }
    imgd_tensor *t = new_leaf(g, name, dtype, n_dims, shape, IMGD_TENSOR_WEIGHT);
    if (t) t->data = (void *)(uintptr_t)data; /* constant: kernels only read weights */
    return t;
}

void imgd_graph_output(imgd_graph *g, imgd_tensor *t) {
    if (!g || !t) return;
    t->is_output = true;
}

/* ---- planning ------------------------------------------------------------------------- */

static bool is_executed_op(imgd_op op) {
    return op != IMGD_OP_NONE && op != IMGD_OP_VIEW;
}

/* Marks the tensors that contribute to an output and builds the execution order. */
static imgd_status build_exec(imgd_graph *g) {
    size_t n = g->n_tensors, n_out = 0;
    bool  *need = imgd_calloc(n + 1, sizeof *need);
    if (!need) return imgd_fail(IMGD_E_NOMEM, "plan: out of memory");
    for (size_t i = 0; i < n; i++)
        if (g->tensors[i]->is_output) {
            need[i] = true;
            n_out++;
        }
    for (size_t i = n; i-- > 0;) {
        if (!need[i]) continue;
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++)
            if (g->tensors[i]->src[s]) need[g->tensors[i]->src[s]->id] = true;
    }
    size_t n_exec = 0;
    for (size_t i = 0; i < n; i++)
        if (need[i] && is_executed_op(g->tensors[i]->op)) n_exec++;
    g->exec = imgd_malloc((n_exec + 1) * sizeof *g->exec);
    if (!g->exec) {
        imgd_free(need);
        return imgd_fail(IMGD_E_NOMEM, "plan: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        imgd_tensor *t = g->tensors[i];
        if (need[i] && is_executed_op(t->op)) {
            t->exec              = (int32_t)g->n_exec;
            g->exec[g->n_exec++] = t;
        }
    }
    imgd_free(need);
    if (n_out == 0) return imgd_fail(IMGD_E_INVALID_ARG, "plan: the graph has no outputs");
    return IMGD_OK;
}

static void describe(const imgd_tensor *t, char *buf, size_t cap) {
    size_t k = 0;
    int    w = snprintf(buf, cap, "%s %s[", imgd_op_name(t->op), imgd_dtype_name(t->dtype));
    k        = w > 0 ? (size_t)w : 0;
    for (int32_t i = 0; i < t->n_dims && k < cap; i++) {
        w = snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)t->shape[i]);
        k += w > 0 ? (size_t)w : 0;
    }
    if (k < cap) (void)imgd_fmt(buf + k, cap - k, "]");
}

static imgd_status check_support(imgd_graph *g, imgd_backend *be) {
    if (!be->iface->supports_op) return IMGD_OK;
    for (size_t i = 0; i < g->n_exec; i++) {
        if (be->iface->supports_op(be, g->exec[i])) continue;
        char d[160];
        describe(g->exec[i], d, sizeof d);
        return imgd_fail(IMGD_E_UNSUPPORTED, "backend %s cannot run node %zu: %s",
                         be->iface->name(be), i, d);
    }
    return IMGD_OK;
}

/* Lifetimes: activation storage lives from its node (from the node before it when prepare
 * set plan_early) to its last reader (outputs to the end); scratch lives during its node
 * only. */
static imgd_status assign_memory(imgd_graph *g, imgd_plan_info *info) {
    size_t          n_exec = g->n_exec, n_items = 0;
    imgd_plan_item *items = imgd_calloc(2 * n_exec + 1, sizeof *items);
    size_t         *offs  = imgd_calloc(2 * n_exec + 1, sizeof *offs);
    int32_t        *last  = imgd_calloc(g->n_tensors + 1, sizeof *last);
    imgd_status     st    = IMGD_OK;
    if (!items || !offs || !last) {
        st = imgd_fail(IMGD_E_NOMEM, "plan: out of memory");
        goto done;
    }
    for (size_t i = 0; i < g->n_tensors; i++) last[i] = -1;
    for (size_t e = 0; e < n_exec; e++) {
        imgd_tensor *t = g->exec[e];
        last[t->id]    = (int32_t)e;
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++)
            if (t->src[s]) last[t->src[s]->storage->id] = (int32_t)e;
    }
    for (size_t i = 0; i < g->n_tensors; i++) /* outputs (or views of them) live to the end */
        if (g->tensors[i]->is_output) last[g->tensors[i]->storage->id] = (int32_t)n_exec;
    size_t naive = 0;
    for (size_t e = 0; e < n_exec; e++) {
        imgd_tensor *t   = g->exec[e];
        t->nbytes        = imgd_tensor_nbytes(t);
        int32_t from     = (int32_t)e - (t->plan_early && e > 0);
        items[n_items++] = (imgd_plan_item){t->nbytes, from, last[t->id]};
        if (t->scratch_bytes)
            items[n_items++] = (imgd_plan_item){t->scratch_bytes, (int32_t)e, (int32_t)e};
        naive += t->nbytes + t->scratch_bytes;
    }
    size_t total = 0;
    st           = imgd_plan_assign(items, n_items, IMGD_TENSOR_ALIGN, offs, &total);
    if (st != IMGD_OK) goto done;
    for (size_t e = 0, k = 0; e < n_exec; e++) {
        imgd_tensor *t = g->exec[e];
        t->plan_offset = offs[k++];
        if (t->scratch_bytes) t->scratch_offset = offs[k++];
    }
    g->buffer_bytes = total;
    if (info) {
        info->activation_bytes = total;
        info->naive_bytes      = naive;
        info->n_nodes          = (uint32_t)n_exec;
        info->n_buffers        = (uint32_t)n_items;
    }
done:
    imgd_free(items);
    imgd_free(offs);
    imgd_free(last);
    return st;
}

imgd_status imgd_graph_plan(imgd_graph *g, imgd_backend *be, imgd_plan_info *info) {
    if (!g || !be) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_graph_plan: graph or backend NULL");
    if (g->status != IMGD_OK) return imgd_fail(g->status, "%s", g->error);
    unplan(g);
    g->be          = be;
    imgd_status st = build_exec(g);
    if (st == IMGD_OK) st = check_support(g, be);
    if (st == IMGD_OK && be->iface->prepare) {
        st          = be->iface->prepare(be, g);
        g->prepared = true; /* release frees whatever prepare left, even on failure */
    }
    if (st == IMGD_OK) st = assign_memory(g, info);
    if (st != IMGD_OK) {
        unplan(g);
        return st;
    }
    g->planned = true;
    return IMGD_OK;
}

/* ---- allocation and replay ------------------------------------------------------------ */

imgd_status imgd_graph_alloc(imgd_graph *g, void *buffer, size_t size) {
    if (!g || !g->planned) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_graph_alloc: not planned");
    if (g->owns_buffer && g->buffer) g->be->iface->buffer_free(g->be, g->buffer);
    g->buffer      = NULL;
    g->owns_buffer = false;
    if (buffer) {
        if (size < g->buffer_bytes || ((uintptr_t)buffer & (IMGD_TENSOR_ALIGN - 1)) != 0)
            return imgd_fail(IMGD_E_INVALID_ARG,
                             "imgd_graph_alloc: buffer of %zu bytes at %p is too small (%zu "
                             "needed) or not %d-byte aligned",
                             size, buffer, g->buffer_bytes, IMGD_TENSOR_ALIGN);
        g->buffer = buffer;
    } else {
        void       *p  = NULL;
        imgd_status st = g->be->iface->alloc(g->be, g->buffer_bytes ? g->buffer_bytes : 1, &p);
        if (st != IMGD_OK) return st;
        g->buffer      = p;
        g->owns_buffer = true;
    }
    unsigned char *base = g->buffer;
    for (size_t e = 0; e < g->n_exec; e++) {
        imgd_tensor *t = g->exec[e];
        t->data        = base + t->plan_offset;
        t->scratch     = t->scratch_bytes ? base + t->scratch_offset : NULL;
    }
    return IMGD_OK;
}

/* Resolves every tensor's data pointer from its storage (views, bound inputs). */
static imgd_status resolve(imgd_graph *g) {
    for (size_t i = 0; i < g->n_tensors; i++) {
        imgd_tensor *t = g->tensors[i];
        if (t->op != IMGD_OP_VIEW) continue;
        imgd_tensor *s = t->storage;
        if (!s->data) {
            if (s->kind == IMGD_TENSOR_INPUT)
                return imgd_fail(IMGD_E_INVALID_ARG, "compute: input '%s' is not bound",
                                 s->name ? s->name : "?");
            continue; /* a view of an activation that does not execute */
        }
        t->data = (unsigned char *)s->data + (size_t)t->offset * imgd_dtype_size(t->dtype);
    }
    for (size_t e = 0; e < g->n_exec; e++) {
        imgd_tensor *t = g->exec[e];
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++) {
            const imgd_tensor *src = t->src[s];
            if (src && !src->data)
                return imgd_fail(IMGD_E_INVALID_ARG, "compute: input '%s' is not bound",
                                 src->storage->name ? src->storage->name : "?");
        }
    }
    return IMGD_OK;
}

void imgd_graph_set_cancel(imgd_graph *g, const atomic_int *flag) {
    if (g) g->cancel = flag;
}

bool imgd_graph_cancel_requested(const imgd_graph *g) {
    return g->cancel && atomic_load_explicit(g->cancel, memory_order_relaxed) != 0;
}

imgd_status imgd_graph_compute(imgd_graph *g) {
    if (!g || !g->planned || !g->buffer)
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_graph_compute: graph not planned and allocated");
    imgd_status st = resolve(g);
    if (st != IMGD_OK) return st;
    st          = g->be->iface->run(g->be, g);
    g->computed = st == IMGD_OK;
    return st;
}

/* Converts t (any strides; f32/f16/bf16) at base, the address of its first element in host
 * memory, into n contiguous f32 values. */
static void gather_f32(const imgd_tensor *t, const unsigned char *base, float *dst, size_t n) {
    size_t  es                 = imgd_dtype_size(t->dtype);
    int64_t idx[IMGD_MAX_DIMS] = {0};
    for (size_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int32_t d = 0; d < t->n_dims; d++) off += idx[d] * t->stride[d];
        (void)imgd_dtype_to_f32(t->dtype, base + (size_t)off * es, 1, &dst[i]);
        for (int32_t d = t->n_dims - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* Through the backend's read hook: contiguous f32 straight into dst, anything else via a
 * host copy of the span of storage the view covers. */
static imgd_status read_device(imgd_graph *g, const imgd_tensor *t, float *dst, size_t n) {
    imgd_backend *be = g->be;
    if (t->dtype == IMGD_DTYPE_F32 && imgd_tensor_is_contiguous(t))
        return be->iface->read(be, t->data, dst, n * sizeof *dst);
    size_t es = imgd_dtype_size(t->dtype), span = 1; /* elements from the first to the last */
    for (int32_t d = 0; d < t->n_dims; d++)
        if (t->shape[d] > 1) span += (size_t)((t->shape[d] - 1) * t->stride[d]);
    if (n == 0) return IMGD_OK;
    unsigned char *tmp = imgd_malloc(span * es);
    if (!tmp) return imgd_fail(IMGD_E_NOMEM, "imgd_graph_read_f32: %zu bytes", span * es);
    imgd_status st = be->iface->read(be, t->data, tmp, span * es);
    if (st == IMGD_OK) gather_f32(t, tmp, dst, n);
    imgd_free(tmp);
    return st;
}

imgd_status imgd_graph_read_f32(imgd_graph *g, const imgd_tensor *t, float *dst, size_t n) {
    if (!g || !t || !dst || !t->data || (int64_t)n != imgd_tensor_numel(t))
        return imgd_fail(IMGD_E_INVALID_ARG, "imgd_graph_read_f32: bad tensor or count %zu", n);
    if (t->dtype != IMGD_DTYPE_F32 && t->dtype != IMGD_DTYPE_F16 && t->dtype != IMGD_DTYPE_BF16)
        return imgd_fail(IMGD_E_UNSUPPORTED, "imgd_graph_read_f32: dtype %s",
                         imgd_dtype_name(t->dtype));
    for (int32_t d = 0; d < t->n_dims; d++)
        if (t->stride[d] < 0)
            return imgd_fail(IMGD_E_UNSUPPORTED, "imgd_graph_read_f32: negative stride");
    if (g->be && g->be->iface->read && t->storage->kind == IMGD_TENSOR_ACTIVATION)
        return read_device(g, t, dst, n);
    gather_f32(t, t->data, dst, n);
    return IMGD_OK;
}

imgd_status imgd_host_buffer_alloc(const char *who, size_t n, void **out) {
    size_t total;
    if (!imgd_size_add(n, IMGD_TENSOR_ALIGN + sizeof(void *), &total))
        return imgd_fail(IMGD_E_NOMEM, "%s: %zu bytes", who, n);
    unsigned char *raw = imgd_malloc(total);
    if (!raw) return imgd_fail(IMGD_E_NOMEM, "%s: cannot allocate %zu bytes", who, n);
    uintptr_t a = ((uintptr_t)raw + sizeof(void *) + IMGD_TENSOR_ALIGN - 1) &
                  ~(uintptr_t)(IMGD_TENSOR_ALIGN - 1);
    memcpy((void *)(a - sizeof(void *)), &raw, sizeof raw);
    *out = (void *)a;
    return IMGD_OK;
}

void imgd_host_buffer_free(void *p) {
    if (!p) return;
    void *raw;
    memcpy(&raw, (unsigned char *)p - sizeof(void *), sizeof raw);
    imgd_free(raw);
}
