/* Restricted pickle VM; see pickle.h for the contract.
 *
 * The VM follows CPython's Unpickler (Lib/pickle.py) opcode by opcode, with three
 * differences that make it safe: globals resolve only against k_globals (no import),
 * calls run built-in handlers that build values (no code), and every resource is capped
 * (opcodes, stack, marks, memo, arena bytes). It never recurses, so hostile nesting costs
 * nothing here; consumers walk the result with their own depth cap.
 *
 * MARK is kept as a stack of indices into the value stack; "the current frame" is the part
 * above the last mark, which is all an opcode may touch (as with CPython's metastack). */
#include "formats/pickle.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "formats/dtype.h"

#define STACK_MAX    (1u << 20) /* values on the stack */
#define MARKS_MAX    (1u << 16) /* nested MARKs */
#define MEMO_MAX     (1u << 20) /* memo keys are < MEMO_MAX */
#define NUM_LINE_MAX 64         /* longest protocol-0 number line */
#define KEY_MAX      128        /* longest storage key */

#define HINT "the checkpoint is damaged or was not written by torch.save"

/* ---- allow-list ---------------------------------------------------------------------- */

typedef enum gkind {
    G_DICT = 1,    /* collections.OrderedDict, builtins.dict */
    G_LIST,        /* builtins.list */
    G_TUPLE,       /* builtins.tuple */
    G_SET,         /* builtins.set */
    G_FROZENSET,   /* builtins.frozenset */
    G_REBUILD,     /* torch._utils._rebuild_tensor(storage, offset, size, stride) */
    G_REBUILD_V2,  /* ... + requires_grad, backward_hooks[, metadata] */
    G_REBUILD_V3,  /* ... + requires_grad, backward_hooks, dtype[, metadata] */
    G_PARAM,       /* _rebuild_parameter(data, requires_grad, backward_hooks) */
    G_PARAM_STATE, /* _rebuild_parameter_with_state(data, requires_grad, hooks, state) */
    G_FROM_TYPE,   /* torch._tensor._rebuild_from_type_v2(func, new_type, args, state) */
    G_STORAGE,     /* torch.FloatStorage etc.: only inside persistent ids */
    G_UNTYPED,     /* torch.UntypedStorage */
    G_SIZE,        /* torch.Size -> tuple */
    G_DTYPE,       /* torch.float16 etc. */
    G_ENCODE,      /* _codecs.encode(str, encoding) -> bytes */
    G_OPAQUE_FN,   /* numpy functions: called -> opaque */
    G_OPAQUE_CLS,  /* classes we keep opaque: instantiated -> opaque, BUILD ignored */
    G_TENSOR_TYPE, /* torch.Tensor / Parameter: new_type of _rebuild_from_type_v2 */
    G_UNSUPPORTED, /* recognised, harmless, but not readable (complex, quantized, sparse) */
} gkind;

typedef struct global_row {
    const char *module, *name, *qual;
    gkind       kind;
    imgd_dtype  dtype;
} global_row;

#define ROW(m, n, k, dt)                                                                           \
    { m, n, m "." n, k, dt }
#define F32 IMGD_DTYPE_F32

static const global_row k_globals[] = {
    ROW("collections", "OrderedDict", G_DICT, F32),
    ROW("builtins", "dict", G_DICT, F32),
    ROW("builtins", "list", G_LIST, F32),
    ROW("builtins", "tuple", G_TUPLE, F32),
    ROW("builtins", "set", G_SET, F32),
    ROW("builtins", "frozenset", G_FROZENSET, F32),
    ROW("__builtin__", "dict", G_DICT, F32),
    ROW("__builtin__", "list", G_LIST, F32),
    ROW("__builtin__", "tuple", G_TUPLE, F32),
    ROW("__builtin__", "set", G_SET, F32),
    ROW("__builtin__", "frozenset", G_FROZENSET, F32),
    ROW("torch._utils", "_rebuild_tensor", G_REBUILD, F32),
    ROW("torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2, F32),
    ROW("torch._utils", "_rebuild_tensor_v3", G_REBUILD_V3, F32),
    ROW("torch._utils", "_rebuild_parameter", G_PARAM, F32),
    ROW("torch._utils", "_rebuild_parameter_with_state", G_PARAM_STATE, F32),
    ROW("torch._tensor", "_rebuild_from_type_v2", G_FROM_TYPE, F32),
    ROW("torch", "FloatStorage", G_STORAGE, IMGD_DTYPE_F32),
    ROW("torch", "HalfStorage", G_STORAGE, IMGD_DTYPE_F16),
    ROW("torch", "BFloat16Storage", G_STORAGE, IMGD_DTYPE_BF16),
    ROW("torch", "DoubleStorage", G_STORAGE, IMGD_DTYPE_F64),
    ROW("torch", "LongStorage", G_STORAGE, IMGD_DTYPE_I64),
    ROW("torch", "IntStorage", G_STORAGE, IMGD_DTYPE_I32),
    ROW("torch", "ShortStorage", G_STORAGE, IMGD_DTYPE_I16),
    ROW("torch", "CharStorage", G_STORAGE, IMGD_DTYPE_I8),
    ROW("torch", "ByteStorage", G_STORAGE, IMGD_DTYPE_U8),
    ROW("torch", "BoolStorage", G_STORAGE, IMGD_DTYPE_BOOL),
    ROW("torch", "UntypedStorage", G_UNTYPED, IMGD_DTYPE_U8),
    ROW("torch.storage", "UntypedStorage", G_UNTYPED, IMGD_DTYPE_U8),
    ROW("torch", "Size", G_SIZE, F32),
    ROW("torch", "float16", G_DTYPE, IMGD_DTYPE_F16),
    ROW("torch", "half", G_DTYPE, IMGD_DTYPE_F16),
    ROW("torch", "float32", G_DTYPE, IMGD_DTYPE_F32),
    ROW("torch", "float", G_DTYPE, IMGD_DTYPE_F32),
    ROW("torch", "bfloat16", G_DTYPE, IMGD_DTYPE_BF16),
    ROW("torch", "float64", G_DTYPE, IMGD_DTYPE_F64),
    ROW("torch", "double", G_DTYPE, IMGD_DTYPE_F64),
    ROW("torch", "int64", G_DTYPE, IMGD_DTYPE_I64),
    ROW("torch", "long", G_DTYPE, IMGD_DTYPE_I64),
    ROW("torch", "int32", G_DTYPE, IMGD_DTYPE_I32),
    ROW("torch", "int", G_DTYPE, IMGD_DTYPE_I32),
    ROW("torch", "int16", G_DTYPE, IMGD_DTYPE_I16),
    ROW("torch", "short", G_DTYPE, IMGD_DTYPE_I16),
    ROW("torch", "int8", G_DTYPE, IMGD_DTYPE_I8),
    ROW("torch", "uint8", G_DTYPE, IMGD_DTYPE_U8),
    ROW("torch", "bool", G_DTYPE, IMGD_DTYPE_BOOL),
    ROW("torch", "uint16", G_DTYPE, IMGD_DTYPE_U16),
    ROW("torch", "uint32", G_DTYPE, IMGD_DTYPE_U32),
    ROW("torch", "uint64", G_DTYPE, IMGD_DTYPE_U64),
    ROW("torch", "float8_e4m3fn", G_DTYPE, IMGD_DTYPE_F8_E4M3),
    ROW("torch", "float8_e5m2", G_DTYPE, IMGD_DTYPE_F8_E5M2),
    ROW("_codecs", "encode", G_ENCODE, F32),
    ROW("numpy.core.multiarray", "scalar", G_OPAQUE_FN, F32),
    ROW("numpy.core.multiarray", "_reconstruct", G_OPAQUE_FN, F32),
    ROW("numpy._core.multiarray", "scalar", G_OPAQUE_FN, F32),
    ROW("numpy._core.multiarray", "_reconstruct", G_OPAQUE_FN, F32),
    ROW("numpy", "dtype", G_OPAQUE_CLS, F32),
    ROW("numpy", "ndarray", G_OPAQUE_CLS, F32),
    ROW("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", G_OPAQUE_CLS, F32),
    ROW("lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint", G_OPAQUE_CLS, F32),
    ROW("torch.nn.modules.container", "ParameterDict", G_OPAQUE_CLS, F32),
    ROW("torch", "device", G_OPAQUE_CLS, F32),
    ROW("torch", "Tensor", G_TENSOR_TYPE, F32),
    ROW("torch.nn.parameter", "Parameter", G_TENSOR_TYPE, F32),
    ROW("torch", "ComplexFloatStorage", G_UNSUPPORTED, F32),
    ROW("torch", "ComplexDoubleStorage", G_UNSUPPORTED, F32),
    ROW("torch", "QInt8Storage", G_UNSUPPORTED, F32),
    ROW("torch", "QUInt8Storage", G_UNSUPPORTED, F32),
    ROW("torch", "QInt32Storage", G_UNSUPPORTED, F32),
    ROW("torch", "QUInt4x2Storage", G_UNSUPPORTED, F32),
    ROW("torch", "QUInt2x4Storage", G_UNSUPPORTED, F32),
    ROW("torch._utils", "_rebuild_qtensor", G_UNSUPPORTED, F32),
    ROW("torch._utils", "_rebuild_sparse_tensor", G_UNSUPPORTED, F32),
    ROW("torch._utils", "_rebuild_nested_tensor", G_UNSUPPORTED, F32),
    ROW("torch._utils", "_rebuild_wrapper_subclass", G_UNSUPPORTED, F32),
    ROW("torch._utils", "_rebuild_meta_tensor_no_storage", G_UNSUPPORTED, F32),
    ROW("torch._utils", "_rebuild_device_tensor_from_numpy", G_UNSUPPORTED, F32),
};

static bool is_rebuild(int k) {
    return k == G_REBUILD || k == G_REBUILD_V2 || k == G_REBUILD_V3 || k == G_PARAM ||
           k == G_PARAM_STATE;
}

/* ---- opcodes --------------------------------------------------------------------------- */

/* Every opcode of protocols 0-5, as pickletools names them. One list generates the enum
 * and the name table used in messages. */
// clang-format off
#define PICKLE_OPCODES(X)                                                                          \
    X(MARK, '(') X(STOP, '.') X(POP, '0') X(POP_MARK, '1') X(DUP, '2') X(FLOAT, 'F')               \
    X(INT, 'I') X(BININT, 'J') X(BININT1, 'K') X(LONG, 'L') X(BININT2, 'M') X(NONE, 'N')           \
    X(PERSID, 'P') X(BINPERSID, 'Q') X(REDUCE, 'R') X(STRING, 'S') X(BINSTRING, 'T')               \
    X(SHORT_BINSTRING, 'U') X(UNICODE, 'V') X(BINUNICODE, 'X') X(APPEND, 'a') X(BUILD, 'b')        \
    X(GLOBAL, 'c') X(DICT, 'd') X(EMPTY_DICT, '}') X(APPENDS, 'e') X(GET, 'g') X(BINGET, 'h')      \
    X(INST, 'i') X(LONG_BINGET, 'j') X(LIST, 'l') X(EMPTY_LIST, ']') X(OBJ, 'o') X(PUT, 'p')       \
    X(BINPUT, 'q') X(LONG_BINPUT, 'r') X(SETITEM, 's') X(TUPLE, 't') X(EMPTY_TUPLE, ')')           \
    X(SETITEMS, 'u') X(BINFLOAT, 'G') X(PROTO, 0x80) X(NEWOBJ, 0x81) X(EXT1, 0x82)                 \
    X(EXT2, 0x83) X(EXT4, 0x84) X(TUPLE1, 0x85) X(TUPLE2, 0x86) X(TUPLE3, 0x87)                    \
    X(NEWTRUE, 0x88) X(NEWFALSE, 0x89) X(LONG1, 0x8a) X(LONG4, 0x8b) X(BINBYTES, 'B')              \
    X(SHORT_BINBYTES, 'C') X(SHORT_BINUNICODE, 0x8c) X(BINUNICODE8, 0x8d) X(BINBYTES8, 0x8e)       \
    X(EMPTY_SET, 0x8f) X(ADDITEMS, 0x90) X(FROZENSET, 0x91) X(NEWOBJ_EX, 0x92)                     \
    X(STACK_GLOBAL, 0x93) X(MEMOIZE, 0x94) X(FRAME, 0x95) X(BYTEARRAY8, 0x96)                      \
    X(NEXT_BUFFER, 0x97) X(READONLY_BUFFER, 0x98)
// clang-format on

#define OP_ENUM(name, byte) OP_##name = (byte),
enum {
    PICKLE_OPCODES(OP_ENUM)
};

#define OP_ROW(name, byte) {(byte), #name},
static const struct {
    uint8_t     op;
    const char *name;
} k_op_names[] = {PICKLE_OPCODES(OP_ROW)};

static const char *op_name(uint8_t op) {
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_op_names); i++) {
        if (k_op_names[i].op == op) return k_op_names[i].name;
    }
    return "unknown opcode";
}

static const char *const k_kind_names[] = {
    "None",  "bool", "int",  "float",  "str",     "bytes",  "list",
    "tuple", "set",  "dict", "global", "storage", "tensor", "object",
};
_Static_assert(IMGD_ARRAY_LEN(k_kind_names) == IMGD_PICKLE_KIND_COUNT, "pickle kind names");

const char *imgd_pickle_kind_name(imgd_pickle_kind kind) {
    if ((unsigned)kind >= IMGD_PICKLE_KIND_COUNT) return "unknown";
    return k_kind_names[kind];
}

/* ---- VM state, errors, allocation ---------------------------------------------------- */

typedef struct vm {
    const imgd_pickle_params *p;
    const uint8_t            *d;
    size_t                    n, pos;
    size_t                    op_pos; /* offset of the opcode being executed */
    uint8_t                   op;
    imgd_arena               *arena;
    size_t                    last_req; /* size of the last arena request */
    imgd_pickle_value       **stack;
    size_t                    sp, stack_alloc;
    size_t                   *marks; /* stack heights at each MARK */
    size_t                    n_marks, marks_alloc;
    imgd_pickle_value       **memo; /* sparse, indexed by memo key */
    size_t                    memo_alloc, memo_count;
    uint64_t                  ops, n_values;
    imgd_pickle_value        *none, *yes, *no;
    bool                      stopped;
} vm;

static imgd_status fail_at(const vm *v, imgd_status st, const char *fmt, ...) IMGD_PRINTF(3, 4);

static imgd_status fail_at(const vm *v, imgd_status st, const char *fmt, ...) {
    char    msg[768];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return imgd_fail(st, "%s: %s at byte %zu (%s): %s", v->p->file, v->p->entry, v->op_pos,
                     op_name(v->op), msg);
}

/* Printable copy of untrusted text: bytes outside 0x20..0x7e become \xHH. */
static const char *esc(const char *s, size_t n, char *buf, size_t cap) {
    static const char hex[] = "0123456789abcdef";
    size_t            o     = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}

static void *vm_alloc(vm *v, size_t n) {
    v->last_req = n;
    return imgd_arena_alloc(v->arena, n);
}

/* The status for a failed vm_alloc: the arena cap (a bomb) or real memory exhaustion. */
static imgd_status oom(const vm *v) {
    const imgd_arena *a = v->arena;
    if (a->cap && (v->last_req >= a->cap || a->used + v->last_req + (128u << 10) >= a->cap)) {
        return fail_at(v, IMGD_E_TOO_LARGE,
                       "the objects it builds exceed the cap of %zu bytes; refusing a pickle "
                       "bomb (raise header_size_max if the file is trusted)",
                       a->cap);
    }
    return fail_at(v, IMGD_E_NOMEM, "out of memory");
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        imgd_status try_st_ = (expr);                                                              \
        if (try_st_ != IMGD_OK) return try_st_;                                                    \
    } while (0)

static imgd_pickle_value *new_val(vm *v, imgd_pickle_kind k) {
    imgd_pickle_value *x = vm_alloc(v, sizeof *x);
    if (!x) return NULL;
    x->kind = k;
    v->n_values++;
    return x;
}

static imgd_pickle_value *new_int(vm *v, int64_t i) {
    imgd_pickle_value *x = new_val(v, IMGD_PICKLE_INT);
    if (x) x->u.i = i;
    return x;
}

static imgd_pickle_value *new_str(vm *v, imgd_pickle_kind k, const void *p, size_t len) {
    if (len >= SIZE_MAX - 16) return NULL;
    char *s = vm_alloc(v, len + 1);
    if (!s) return NULL;
    if (len) memcpy(s, p, len);
    s[len]               = '\0';
    imgd_pickle_value *x = new_val(v, k);
    if (!x) return NULL;
    x->u.str.p   = s;
    x->u.str.len = len;
    return x;
}

/* A container of kind k holding copies of items[0..slots) (DICT: slots = 2 × pairs). */
static imgd_pickle_value *new_seq(vm *v, imgd_pickle_kind k, imgd_pickle_value *const *items,
                                  size_t slots) {
    imgd_pickle_value *x = new_val(v, k);
    if (!x) return NULL;
    if (slots) {
        size_t bytes;
        if (!imgd_size_mul(slots, sizeof *items, &bytes)) return NULL;
        x->u.seq.items = vm_alloc(v, bytes);
        if (!x->u.seq.items) return NULL;
        memcpy(x->u.seq.items, items, bytes);
    }
    x->u.seq.alloc = slots;
    x->u.seq.n     = k == IMGD_PICKLE_DICT ? slots / 2 : slots;
    return x;
}

/* Appends items[0..slots) to container s (DICT: key/value pairs). */
static imgd_status seq_add(vm *v, imgd_pickle_value *s, imgd_pickle_value *const *items,
                           size_t slots) {
    size_t used = s->kind == IMGD_PICKLE_DICT ? s->u.seq.n * 2 : s->u.seq.n, need;
    if (!imgd_size_add(used, slots, &need)) return oom(v);
    if (need > s->u.seq.alloc) {
        size_t na = s->u.seq.alloc > 8 ? s->u.seq.alloc : 8, bytes;
        while (na < need) {
            if (!imgd_size_mul(na, 2, &na)) return oom(v);
        }
        if (!imgd_size_mul(na, sizeof *items, &bytes)) return oom(v);
        imgd_pickle_value **ni = vm_alloc(v, bytes);
        if (!ni) return oom(v);
        if (used) memcpy(ni, s->u.seq.items, used * sizeof *items);
        s->u.seq.items = ni; /* the old array stays in the arena until it is freed */
        s->u.seq.alloc = na;
    }
    if (slots) memcpy(s->u.seq.items + used, items, slots * sizeof *items);
    s->u.seq.n = s->kind == IMGD_PICKLE_DICT ? need / 2 : need;
    return IMGD_OK;
}

/* ---- stack, marks, memo -------------------------------------------------------------- */

static imgd_status push(vm *v, imgd_pickle_value *x) {
    if (!x) return oom(v);
    if (v->sp == v->stack_alloc) {
        if (v->sp >= STACK_MAX) {
            return fail_at(v, IMGD_E_TOO_LARGE,
                           "the stack exceeds %u values; refusing a pickle bomb", STACK_MAX);
        }
        size_t na = v->stack_alloc ? v->stack_alloc * 2 : 256;
        void  *ns = imgd_realloc(v->stack, na * sizeof *v->stack);
        if (!ns) return fail_at(v, IMGD_E_NOMEM, "out of memory for the stack");
        v->stack       = ns;
        v->stack_alloc = na;
    }
    v->stack[v->sp++] = x;
    return IMGD_OK;
}

static size_t frame_base(const vm *v) {
    return v->n_marks ? v->marks[v->n_marks - 1] : 0;
}

/* The current frame (above the last MARK) must hold at least k values. */
static imgd_status need(const vm *v, size_t k) {
    size_t have = v->sp - frame_base(v);
    if (have < k) {
        return fail_at(v, IMGD_E_FORMAT,
                       "needs %zu value(s) on the stack above the last MARK but finds %zu "
                       "(stack underflow); " HINT,
                       k, have);
    }
    return IMGD_OK;
}

static imgd_pickle_value *pop(vm *v) {
    return v->stack[--v->sp];
}

static imgd_status push_mark(vm *v) {
    if (v->n_marks == v->marks_alloc) {
        if (v->n_marks >= MARKS_MAX) {
            return fail_at(v, IMGD_E_TOO_LARGE, "more than %u nested MARKs; refusing a pickle bomb",
                           MARKS_MAX);
        }
        size_t na = v->marks_alloc ? v->marks_alloc * 2 : 64;
        void  *nm = imgd_realloc(v->marks, na * sizeof *v->marks);
        if (!nm) return fail_at(v, IMGD_E_NOMEM, "out of memory for MARKs");
        v->marks       = nm;
        v->marks_alloc = na;
    }
    v->marks[v->n_marks++] = v->sp;
    return IMGD_OK;
}

/* Pops the last mark; the marked items are stack[*start .. sp). */
static imgd_status pop_mark(vm *v, size_t *start) {
    if (!v->n_marks) return fail_at(v, IMGD_E_FORMAT, "no MARK to pop (mark underflow); " HINT);
    *start = v->marks[--v->n_marks];
    return IMGD_OK;
}

static imgd_status memo_put(vm *v, uint64_t idx) {
    TRY(need(v, 1));
    if (idx >= MEMO_MAX) {
        return fail_at(v, IMGD_E_TOO_LARGE,
                       "memo key %llu is over the cap of %u; refusing a memo bomb",
                       (unsigned long long)idx, MEMO_MAX);
    }
    if (idx >= v->memo_alloc) {
        size_t na = v->memo_alloc ? v->memo_alloc : 64;
        while (na <= idx) na *= 2;
        void *nm = imgd_realloc(v->memo, na * sizeof *v->memo);
        if (!nm) return fail_at(v, IMGD_E_NOMEM, "out of memory for the memo");
        v->memo = nm;
        memset(v->memo + v->memo_alloc, 0, (na - v->memo_alloc) * sizeof *v->memo);
        v->memo_alloc = na;
    }
    if (!v->memo[idx]) v->memo_count++;
    v->memo[idx] = v->stack[v->sp - 1];
    return IMGD_OK;
}

static imgd_status memo_get(vm *v, uint64_t idx) {
    if (idx >= v->memo_alloc || !v->memo[idx]) {
        return fail_at(v, IMGD_E_FORMAT, "memo key %llu was never set (GET before PUT); " HINT,
                       (unsigned long long)idx);
    }
    return push(v, v->memo[idx]);
}

/* ---- input ------------------------------------------------------------------------------ */

static imgd_status take(vm *v, size_t k, const uint8_t **p) {
    if (v->n - v->pos < k) {
        return fail_at(v, IMGD_E_FORMAT,
                       "truncated: needs %zu more byte(s) but only %zu remain; " HINT, k,
                       v->n - v->pos);
    }
    *p = v->d + v->pos;
    v->pos += k;
    return IMGD_OK;
}

static imgd_status take_line(vm *v, const char **s, size_t *len) {
    const uint8_t *start = v->d + v->pos;
    const uint8_t *nl    = memchr(start, '\n', v->n - v->pos);
    if (!nl) return fail_at(v, IMGD_E_FORMAT, "truncated: the text argument has no newline; " HINT);
    *s   = (const char *)start;
    *len = (size_t)(nl - start);
    v->pos += *len + 1;
    return IMGD_OK;
}

static uint64_t le(const uint8_t *p, int k) {
    uint64_t r = 0;
    for (int i = k - 1; i >= 0; i--) r = (r << 8) | p[i];
    return r;
}

/* Reads a k-byte little-endian length and checks it against the remaining input. */
static imgd_status take_len(vm *v, int k, size_t *len) {
    const uint8_t *p = v->d;
    TRY(take(v, (size_t)k, &p));
    uint64_t n = le(p, k);
    if (n > v->n - v->pos) {
        return fail_at(v, IMGD_E_FORMAT,
                       "length %llu exceeds the %zu byte(s) left in the pickle; " HINT,
                       (unsigned long long)n, v->n - v->pos);
    }
    *len = (size_t)n;
    return IMGD_OK;
}

/* ---- text helpers ---------------------------------------------------------------------- */

/* UTF-8 validity allowing NUL (Python strings may contain it). */
static bool text_valid(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        const char *z   = memchr(s + i, 0, n - i);
        size_t      seg = z ? (size_t)(z - (s + i)) : n - i;
        if (!imgd_utf8_valid(s + i, seg)) return false;
        i += seg + (z ? 1 : 0);
    }
    return true;
}

/* 0: ok; 1: not an integer; 2: does not fit in 64 bits. */
static int parse_i64(const char *s, size_t n, int64_t *out) {
    size_t i   = 0;
    bool   neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i == n) return 1;
    uint64_t mag = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 1;
        if (mag > (UINT64_MAX - 9) / 10) return 2;
        mag = mag * 10 + (uint64_t)(s[i] - '0');
    }
    if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX) return 2;
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return 0;
}

static size_t utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes the raw-unicode-escape text of a protocol-0 UNICODE opcode to UTF-8. Only
 * \uXXXX and \UXXXXXXXX are escapes; other bytes are Latin-1 code points. */
static imgd_status unicode_text(vm *v, const char *s, size_t n) {
    char *o = n < SIZE_MAX / 4 ? vm_alloc(v, n * 2 + 1) : NULL;
    if (!o) return oom(v);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp     = (unsigned char)s[i];
        size_t   digits = 0;
        if (s[i] == '\\' && i + 1 < n && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
            digits = s[i + 1] == 'u' ? 4 : 8;
        }
        if (!digits) {
            k += utf8_put(cp, o + k);
            i++;
            continue;
        }
        if (n - i - 2 < digits) {
            return fail_at(v, IMGD_E_FORMAT, "truncated \\u escape in UNICODE text; " HINT);
        }
        cp = 0;
        for (size_t j = 0; j < digits; j++) {
            int h = hexval(s[i + 2 + j]);
            if (h < 0) return fail_at(v, IMGD_E_FORMAT, "bad \\u escape in UNICODE text; " HINT);
            cp = (cp << 4) | (uint32_t)h;
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return fail_at(v, IMGD_E_FORMAT,
                           "UNICODE text escapes code point 0x%x, which is not valid UTF-8; " HINT,
                           (unsigned)cp);
        }
        k += utf8_put(cp, o + k);
        i += 2 + digits;
    }
    o[k]                 = '\0';
    imgd_pickle_value *x = new_val(v, IMGD_PICKLE_STR);
    if (!x) return oom(v);
    x->u.str.p   = o;
    x->u.str.len = k;
    return push(v, x);
}

/* A str when the bytes are UTF-8 (torch loads with encoding='utf-8'), else bytes. */
static imgd_status push_str_or_bytes(vm *v, const char *s, size_t n) {
    imgd_pickle_kind k = text_valid(s, n) ? IMGD_PICKLE_STR : IMGD_PICKLE_BYTES;
    return push(v, new_str(v, k, s, n));
}

/* The byte a one-letter Python escape (\n, \t, ...) stands for, or -1. */
static int simple_escape(char c) {
    switch (c) {
    case '\\': return '\\';
    case '\'': return '\'';
    case '"': return '"';
    case 'a': return '\a';
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'v': return '\v';
    default: return -1;
    }
}

/* Decodes the quoted, backslash-escaped text of a protocol-0 STRING opcode. */
static imgd_status string_text(vm *v, const char *s, size_t n) {
    if (n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0]) {
        return fail_at(v, IMGD_E_FORMAT, "the STRING argument is not quoted; " HINT);
    }
    s++;
    n -= 2;
    char *o = vm_alloc(v, n + 1);
    if (!o) return oom(v);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            o[k++] = s[i];
            continue;
        }
        char c = s[++i];
        int  e = simple_escape(c);
        if (e >= 0) {
            o[k++] = (char)e;
        } else if (c == 'x' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            o[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else if (c >= '0' && c <= '7') {
            unsigned val = (unsigned)(c - '0');
            for (int j = 0; j < 2 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7'; j++) {
                val = val * 8 + (unsigned)(s[++i] - '0');
            }
            o[k++] = (char)(val & 0xFF);
        } else {
            o[k++] = '\\'; /* unknown escapes are kept, as Python does */
            o[k++] = c;
        }
    }
    return push_str_or_bytes(v, o, k);
}

/* ---- numbers ------------------------------------------------------------------------------ */

static imgd_status int_text(vm *v, bool is_long) {
    const char *s = NULL;
    size_t      n = 0;
    TRY(take_line(v, &s, &n));
    if (!is_long && n == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1')) {
        return push(v, s[1] == '1' ? v->yes : v->no);
    }
    if (is_long && n && s[n - 1] == 'L') n--;
    int64_t i = 0;
    int     r = parse_i64(s, n, &i);
    if (r == 2) return fail_at(v, IMGD_E_UNSUPPORTED, "integer wider than 64 bits; not supported");
    if (r) return fail_at(v, IMGD_E_FORMAT, "the integer text is not a decimal number; " HINT);
    return push(v, new_int(v, i));
}

static imgd_status float_text(vm *v) {
    const char *s = NULL;
    size_t      n = 0;
    char        buf[NUM_LINE_MAX + 1];
    TRY(take_line(v, &s, &n));
    if (n == 0 || n > NUM_LINE_MAX || memchr(s, 0, n)) {
        return fail_at(v, IMGD_E_FORMAT, "the FLOAT text is not a number; " HINT);
    }
    memcpy(buf, s, n);
    buf[n]     = '\0';
    char  *end = NULL;
    double d   = strtod(buf, &end);
    if (end != buf + n) return fail_at(v, IMGD_E_FORMAT, "the FLOAT text is not a number; " HINT);
    imgd_pickle_value *x = new_val(v, IMGD_PICKLE_FLOAT);
    if (x) x->u.f = d;
    return push(v, x);
}

static imgd_status bin_float(vm *v) {
    const uint8_t *p = v->d;
    TRY(take(v, 8, &p));
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++) bits = (bits << 8) | p[i]; /* big-endian */
    imgd_pickle_value *x = new_val(v, IMGD_PICKLE_FLOAT);
    if (!x) return oom(v);
    memcpy(&x->u.f, &bits, sizeof bits);
    return push(v, x);
}

static imgd_status bin_int(vm *v, int k, bool is_signed) {
    const uint8_t *p = v->d;
    TRY(take(v, (size_t)k, &p));
    uint64_t u = le(p, k);
    int64_t  i = is_signed ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
    return push(v, new_int(v, i));
}

/* LONG1 / LONG4: a little-endian two's complement integer of n bytes (n <= 8 here). */
static imgd_status bin_long(vm *v, int len_bytes) {
    const uint8_t *p = v->d;
    TRY(take(v, (size_t)len_bytes, &p));
    uint64_t n = le(p, len_bytes);
    if (len_bytes == 4 && n > INT32_MAX) {
        return fail_at(v, IMGD_E_FORMAT, "negative LONG4 length; " HINT);
    }
    if (n > 8) {
        return fail_at(v, IMGD_E_UNSUPPORTED,
                       "a %llu-byte integer is wider than 64 bits; not supported",
                       (unsigned long long)n);
    }
    TRY(take(v, (size_t)n, &p));
    uint64_t u = n ? le(p, (int)n) : 0;
    if (n && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    return push(v, new_int(v, (int64_t)u));
}

/* ---- strings and bytes ---------------------------------------------------------------------- */

static imgd_status bin_text(vm *v, int len_bytes, imgd_pickle_kind kind) {
    size_t         n = 0;
    const uint8_t *p = v->d;
    if (v->op == OP_BINSTRING && v->n - v->pos >= 4 && le(v->d + v->pos, 4) > INT32_MAX) {
        return fail_at(v, IMGD_E_FORMAT, "negative BINSTRING length; " HINT);
    }
    TRY(take_len(v, len_bytes, &n));
    TRY(take(v, n, &p));
    const char *s = (const char *)p;
    if (kind == IMGD_PICKLE_STR && !text_valid(s, n)) {
        return fail_at(v, IMGD_E_FORMAT, "the string is not valid UTF-8; " HINT);
    }
    if (kind == IMGD_PICKLE_NONE) return push_str_or_bytes(v, s, n); /* (SHORT_)BINSTRING */
    return push(v, new_str(v, kind, s, n));
}

/* ---- globals ------------------------------------------------------------------------------- */

static imgd_status resolve_global(vm *v, const char *mod, size_t ml, const char *name, size_t nl) {
    for (size_t i = 0; i < IMGD_ARRAY_LEN(k_globals); i++) {
        const global_row *r = &k_globals[i];
        if (strlen(r->module) != ml || memcmp(r->module, mod, ml) != 0) continue;
        if (strlen(r->name) != nl || memcmp(r->name, name, nl) != 0) continue;
        if (r->kind == G_UNSUPPORTED) {
            return fail_at(v, IMGD_E_UNSUPPORTED,
                           "'%s' (complex, quantized, sparse or nested tensors) is not "
                           "supported; convert the model to plain tensors",
                           r->qual);
        }
        imgd_pickle_value *x = new_val(v, IMGD_PICKLE_GLOBAL);
        if (!x) return oom(v);
        x->u.global.name  = r->qual;
        x->u.global.kind  = (int)r->kind;
        x->u.global.dtype = r->dtype;
        return push(v, x);
    }
    char em[168], en[168];
    return imgd_fail(IMGD_E_UNSAFE,
                     "%s: unsafe pickle: global '%s.%s' is not allowed (%s at byte %zu); the "
                     "file tries to run code when loaded. Nothing was executed. Use a "
                     ".safetensors version of this model.",
                     v->p->file, esc(mod, ml, em, sizeof em), esc(name, nl, en, sizeof en),
                     v->p->entry, v->op_pos);
}

static imgd_status op_global(vm *v) {
    const char *mod = NULL, *name = NULL;
    size_t      ml = 0, nl = 0;
    TRY(take_line(v, &mod, &ml));
    TRY(take_line(v, &name, &nl));
    return resolve_global(v, mod, ml, name, nl);
}

static imgd_status op_stack_global(vm *v) {
    TRY(need(v, 2));
    imgd_pickle_value *name = pop(v), *mod = pop(v);
    if (mod->kind != IMGD_PICKLE_STR || name->kind != IMGD_PICKLE_STR) {
        return fail_at(v, IMGD_E_FORMAT, "module and name must be str, not %s and %s; " HINT,
                       imgd_pickle_kind_name(mod->kind), imgd_pickle_kind_name(name->kind));
    }
    return resolve_global(v, mod->u.str.p, mod->u.str.len, name->u.str.p, name->u.str.len);
}

/* ---- calls: containers, tensors, storages ---------------------------------------------------- */

static bool is_seq(const imgd_pickle_value *x) {
    return x->kind == IMGD_PICKLE_LIST || x->kind == IMGD_PICKLE_TUPLE ||
           x->kind == IMGD_PICKLE_SET;
}

static imgd_pickle_kind container_kind(int g) {
    switch (g) {
    case G_DICT: return IMGD_PICKLE_DICT;
    case G_LIST: return IMGD_PICKLE_LIST;
    case G_TUPLE: return IMGD_PICKLE_TUPLE;
    default: return IMGD_PICKLE_SET;
    }
}

/* dict(x), list(x), tuple(x), set(x), frozenset(x) with x absent or a container. */
static imgd_status make_container(vm *v, int g, const imgd_pickle_value *args,
                                  imgd_pickle_value **out) {
    imgd_pickle_kind k = container_kind(g);
    if (args->u.seq.n > 1) {
        return fail_at(v, IMGD_E_FORMAT, "%s() takes at most one argument; " HINT,
                       imgd_pickle_kind_name(k));
    }
    *out = new_seq(v, k, NULL, 0);
    if (!*out) return oom(v);
    if (args->u.seq.n == 0) return IMGD_OK;
    const imgd_pickle_value *src = args->u.seq.items[0];
    if (src->kind == IMGD_PICKLE_DICT && k == IMGD_PICKLE_DICT) {
        return seq_add(v, *out, src->u.seq.items, src->u.seq.n * 2);
    }
    if (src->kind == IMGD_PICKLE_DICT) { /* iterating a dict gives its keys */
        for (size_t i = 0; i < src->u.seq.n; i++) {
            TRY(seq_add(v, *out, &src->u.seq.items[2 * i], 1));
        }
        return IMGD_OK;
    }
    if (!is_seq(src)) {
        return fail_at(v, IMGD_E_FORMAT, "%s() of a %s; " HINT, imgd_pickle_kind_name(k),
                       imgd_pickle_kind_name(src->kind));
    }
    if (k != IMGD_PICKLE_DICT) return seq_add(v, *out, src->u.seq.items, src->u.seq.n);
    for (size_t i = 0; i < src->u.seq.n; i++) {
        const imgd_pickle_value *pair = src->u.seq.items[i];
        if (!is_seq(pair) || pair->u.seq.n != 2) {
            return fail_at(v, IMGD_E_FORMAT, "dict() item %zu is not a (key, value) pair; " HINT,
                           i);
        }
        TRY(seq_add(v, *out, pair->u.seq.items, 2));
    }
    return IMGD_OK;
}

static bool get_i64(const imgd_pickle_value *x, int64_t *out) {
    if (x->kind == IMGD_PICKLE_INT) {
        *out = x->u.i;
        return true;
    }
    if (x->kind == IMGD_PICKLE_BOOL) {
        *out = x->u.b;
        return true;
    }
    return false;
}

/* Fills dims[0..*n) from a tuple/list of non-negative ints (a size or a stride). */
static imgd_status read_dims(vm *v, const imgd_pickle_value *x, const char *what, int64_t *dims,
                             int32_t *n) {
    if (x->kind != IMGD_PICKLE_TUPLE && x->kind != IMGD_PICKLE_LIST) {
        return fail_at(v, IMGD_E_FORMAT, "tensor %s is a %s, not a tuple; " HINT, what,
                       imgd_pickle_kind_name(x->kind));
    }
    if (x->u.seq.n > IMGD_MAX_DIMS) {
        return fail_at(v, IMGD_E_UNSUPPORTED, "tensor has %zu dimensions (at most %d supported)",
                       x->u.seq.n, IMGD_MAX_DIMS);
    }
    for (size_t i = 0; i < x->u.seq.n; i++) {
        if (!get_i64(x->u.seq.items[i], &dims[i]) || dims[i] < 0) {
            return fail_at(v, IMGD_E_FORMAT, "tensor %s[%zu] is not a non-negative integer; " HINT,
                           what, i);
        }
    }
    *n = (int32_t)x->u.seq.n;
    return IMGD_OK;
}

/* _rebuild_tensor(_v2/_v3) and _rebuild_parameter(_with_state). */
static imgd_status rebuild(vm *v, int g, const imgd_pickle_value *args, imgd_pickle_value **out) {
    size_t                    n = args->u.seq.n;
    imgd_pickle_value *const *a = args->u.seq.items;
    if (g == G_PARAM || g == G_PARAM_STATE) {
        if (n != (g == G_PARAM ? 3u : 4u) || a[0]->kind != IMGD_PICKLE_TENSOR) {
            return fail_at(v, IMGD_E_FORMAT,
                           "_rebuild_parameter needs (tensor, requires_grad, hooks%s); " HINT,
                           g == G_PARAM ? "" : ", state");
        }
        *out = a[0];
        return IMGD_OK;
    }
    size_t lo = g == G_REBUILD ? 4 : g == G_REBUILD_V2 ? 6 : 7, hi = g == G_REBUILD ? 4 : lo + 1;
    if (n < lo || n > hi || a[0]->kind != IMGD_PICKLE_STORAGE) {
        return fail_at(v, IMGD_E_FORMAT,
                       "_rebuild_tensor needs (storage, offset, size, stride, ...) with %zu..%zu "
                       "arguments, got %zu starting with a %s; " HINT,
                       lo, hi, n, n ? imgd_pickle_kind_name(a[0]->kind) : "nothing");
    }
    const imgd_pickle_storage *s = a[0]->u.storage;
    imgd_pickle_tensor        *t = vm_alloc(v, sizeof *t);
    if (!t) return oom(v);
    int64_t off = 0;
    if (!get_i64(a[1], &off) || off < 0) {
        return fail_at(v, IMGD_E_FORMAT,
                       "tensor storage offset is not a non-negative integer; " HINT);
    }
    int32_t ns = 0, nt = 0;
    TRY(read_dims(v, a[2], "size", t->shape, &ns));
    TRY(read_dims(v, a[3], "stride", t->stride, &nt));
    if (ns != nt) {
        return fail_at(v, IMGD_E_FORMAT, "tensor size has %d dims but stride has %d; " HINT,
                       (int)ns, (int)nt);
    }
    t->storage   = s;
    t->offset    = (uint64_t)off;
    t->n_dims    = ns;
    t->dtype     = s->dtype;
    t->elem_size = s->elem_size;
    if (g == G_REBUILD_V3) {
        if (a[6]->kind != IMGD_PICKLE_GLOBAL || a[6]->u.global.kind != G_DTYPE) {
            return fail_at(v, IMGD_E_FORMAT, "_rebuild_tensor_v3's dtype is a %s; " HINT,
                           imgd_pickle_kind_name(a[6]->kind));
        }
        t->dtype     = a[6]->u.global.dtype;
        t->elem_size = imgd_dtype_traits_of(t->dtype)->block_bytes;
    } else if (s->untyped) {
        return fail_at(v, IMGD_E_UNSUPPORTED,
                       "a tensor is built on a torch.UntypedStorage without a dtype; re-save the "
                       "model with torch.save from a current PyTorch");
    }
    *out = new_val(v, IMGD_PICKLE_TENSOR);
    if (!*out) return oom(v);
    (*out)->u.tensor = t;
    return IMGD_OK;
}

/* torch._tensor._rebuild_from_type_v2(func, new_type, args, state) = func(*args). */
static imgd_status from_type(vm *v, const imgd_pickle_value *args, imgd_pickle_value **out) {
    imgd_pickle_value *const *a = args->u.seq.items;
    if (args->u.seq.n != 4 || a[0]->kind != IMGD_PICKLE_GLOBAL || a[2]->kind != IMGD_PICKLE_TUPLE) {
        return fail_at(v, IMGD_E_FORMAT,
                       "_rebuild_from_type_v2 needs (func, type, args, state); " HINT);
    }
    if (!is_rebuild(a[0]->u.global.kind)) {
        return fail_at(v, IMGD_E_FORMAT,
                       "_rebuild_from_type_v2 calls '%s', which is not a tensor rebuild "
                       "function; " HINT,
                       a[0]->u.global.name);
    }
    if (a[1]->kind != IMGD_PICKLE_GLOBAL || a[1]->u.global.kind != G_TENSOR_TYPE) {
        return fail_at(v, IMGD_E_FORMAT,
                       "_rebuild_from_type_v2's type is not torch.Tensor or Parameter; " HINT);
    }
    return rebuild(v, a[0]->u.global.kind, a[2], out);
}

/* _codecs.encode(str, encoding): latin-1 (how numpy bytes travel in protocol 2) or UTF-8. */
static imgd_status encode(vm *v, const imgd_pickle_value *args, imgd_pickle_value **out) {
    imgd_pickle_value *const *a = args->u.seq.items;
    size_t                    n = args->u.seq.n;
    if (n < 1 || n > 2 || a[0]->kind != IMGD_PICKLE_STR ||
        (n == 2 && a[1]->kind != IMGD_PICKLE_STR)) {
        return fail_at(v, IMGD_E_FORMAT, "_codecs.encode needs (str[, encoding]); " HINT);
    }
    const char *enc = n == 2 ? a[1]->u.str.p : "utf-8";
    const char *s   = a[0]->u.str.p;
    size_t      len = a[0]->u.str.len;
    if (strcmp(enc, "utf-8") == 0 || strcmp(enc, "utf8") == 0) {
        *out = new_str(v, IMGD_PICKLE_BYTES, s, len);
        return *out ? IMGD_OK : oom(v);
    }
    if (strcmp(enc, "latin1") != 0 && strcmp(enc, "latin-1") != 0 &&
        strcmp(enc, "iso-8859-1") != 0) {
        return fail_at(v, IMGD_E_FORMAT, "_codecs.encode with encoding '%.32s'; " HINT, enc);
    }
    char *o = vm_alloc(v, len + 1);
    if (!o) return oom(v);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            o[k++] = (char)c;
        } else if ((c == 0xC2 || c == 0xC3) && i + 1 < len) { /* U+0080..U+00FF */
            o[k++] = (char)(((c & 0x03) << 6) | ((unsigned char)s[++i] & 0x3F));
        } else {
            return fail_at(v, IMGD_E_FORMAT, "_codecs.encode: text is not Latin-1; " HINT);
        }
    }
    *out = new_val(v, IMGD_PICKLE_BYTES);
    if (!*out) return oom(v);
    (*out)->u.str.p   = o;
    (*out)->u.str.len = k;
    return IMGD_OK;
}

static imgd_status opaque(vm *v, const imgd_pickle_value *g, imgd_pickle_value **out) {
    *out = new_val(v, IMGD_PICKLE_OPAQUE);
    if (!*out) return oom(v);
    (*out)->u.global.name = g->u.global.name;
    (*out)->u.global.kind = g->u.global.kind;
    return IMGD_OK;
}

/* torch.Size(seq) -> tuple. */
static imgd_status make_size(vm *v, const imgd_pickle_value *args, imgd_pickle_value **out) {
    if (args->u.seq.n > 1 || (args->u.seq.n == 1 && !is_seq(args->u.seq.items[0]))) {
        return fail_at(v, IMGD_E_FORMAT, "torch.Size needs one tuple of ints; " HINT);
    }
    return make_container(v, G_TUPLE, args, out);
}

/* Calls (REDUCE) an allow-listed global with an argument tuple. */
static imgd_status call(vm *v, const imgd_pickle_value *fn, const imgd_pickle_value *args,
                        imgd_pickle_value **out) {
    if (fn->kind != IMGD_PICKLE_GLOBAL) {
        return fail_at(v, IMGD_E_FORMAT, "calls a %s, which is not callable; " HINT,
                       imgd_pickle_kind_name(fn->kind));
    }
    if (args->kind != IMGD_PICKLE_TUPLE) {
        return fail_at(v, IMGD_E_FORMAT, "call arguments are a %s, not a tuple; " HINT,
                       imgd_pickle_kind_name(args->kind));
    }
    int g = fn->u.global.kind;
    switch (g) {
    case G_DICT:
    case G_LIST:
    case G_TUPLE:
    case G_SET:
    case G_FROZENSET: return make_container(v, g, args, out);
    case G_SIZE: return make_size(v, args, out);
    case G_FROM_TYPE: return from_type(v, args, out);
    case G_ENCODE: return encode(v, args, out);
    case G_OPAQUE_FN:
    case G_OPAQUE_CLS: return opaque(v, fn, out);
    case G_TENSOR_TYPE: /* Parameter(data[, requires_grad]) */
        if (args->u.seq.n >= 1 && args->u.seq.n <= 2 &&
            args->u.seq.items[0]->kind == IMGD_PICKLE_TENSOR) {
            *out = args->u.seq.items[0];
            return IMGD_OK;
        }
        break;
    default:
        if (is_rebuild(g)) return rebuild(v, g, args, out);
        break;
    }
    return fail_at(v, IMGD_E_FORMAT, "'%s' cannot be called with these arguments; " HINT,
                   fn->u.global.name);
}

/* Instantiates a class: NEWOBJ / NEWOBJ_EX (cls.__new__, so containers start empty) or,
 * with by_call, INST / OBJ (cls(*args)). */
static imgd_status instantiate(vm *v, const imgd_pickle_value *cls, const imgd_pickle_value *args,
                               bool by_call, imgd_pickle_value **out) {
    int g = cls->kind == IMGD_PICKLE_GLOBAL ? cls->u.global.kind : 0;
    if (args->kind != IMGD_PICKLE_TUPLE) {
        return fail_at(v, IMGD_E_FORMAT, "class arguments are a %s, not a tuple; " HINT,
                       imgd_pickle_kind_name(args->kind));
    }
    switch (g) {
    case G_DICT:
    case G_LIST:
    case G_SET:
    case G_FROZENSET:
        if (by_call) return make_container(v, g, args, out);
        *out = new_seq(v, container_kind(g), NULL, 0);
        return *out ? IMGD_OK : oom(v);
    case G_TUPLE: return make_container(v, g, args, out);
    case G_SIZE: return make_size(v, args, out);
    case G_OPAQUE_CLS: return opaque(v, cls, out);
    case G_TENSOR_TYPE:
        if (by_call) return call(v, cls, args, out);
        break;
    default: break;
    }
    return fail_at(v, IMGD_E_FORMAT, "instantiates a %s%s%s, which is not an allowed class; " HINT,
                   imgd_pickle_kind_name(cls->kind), g ? " " : "", g ? cls->u.global.name : "");
}

static imgd_status op_reduce(vm *v) {
    TRY(need(v, 2));
    imgd_pickle_value *args = pop(v), *fn = pop(v), *out = NULL;
    TRY(call(v, fn, args, &out));
    return push(v, out);
}

static imgd_status op_newobj(vm *v, bool ex) {
    TRY(need(v, ex ? 3 : 2));
    if (ex) {
        const imgd_pickle_value *kw = pop(v);
        if (kw->kind != IMGD_PICKLE_DICT) {
            return fail_at(v, IMGD_E_FORMAT, "keyword arguments are a %s, not a dict; " HINT,
                           imgd_pickle_kind_name(kw->kind));
        }
    }
    imgd_pickle_value *args = pop(v), *cls = pop(v), *out = NULL;
    TRY(instantiate(v, cls, args, false, &out));
    return push(v, out);
}

/* INST (class from text) and OBJ (class is the first marked item): cls(*marked items). */
static imgd_status op_inst_obj(vm *v) {
    if (v->op == OP_INST) TRY(op_global(v)); /* pushes the class above the mark */
    size_t start = 0;
    TRY(pop_mark(v, &start));
    if (v->sp == start) return fail_at(v, IMGD_E_FORMAT, "OBJ needs a class after the MARK; " HINT);
    size_t             cls_at = v->op == OP_INST ? v->sp - 1 : start;
    size_t             n_args = v->sp - start - 1;
    imgd_pickle_value *cls    = v->stack[cls_at];
    imgd_pickle_value *args =
        new_seq(v, IMGD_PICKLE_TUPLE, v->stack + start + (v->op == OP_OBJ), n_args);
    if (!args) return oom(v);
    imgd_pickle_value *out = NULL;
    TRY(instantiate(v, cls, args, true, &out));
    v->sp = start;
    return push(v, out);
}

/* Persistent ids: ('storage', storage_type, key, location, numel). */
static imgd_status persistent(vm *v, const imgd_pickle_value *pid, imgd_pickle_value **out) {
    if (pid->kind != IMGD_PICKLE_TUPLE || pid->u.seq.n != 5) {
        return fail_at(v, IMGD_E_FORMAT,
                       "the persistent id is a %s, not a ('storage', type, key, location, numel) "
                       "tuple; " HINT,
                       imgd_pickle_kind_name(pid->kind));
    }
    imgd_pickle_value *const *a = pid->u.seq.items;
    if ((a[0]->kind != IMGD_PICKLE_STR && a[0]->kind != IMGD_PICKLE_BYTES) ||
        a[0]->u.str.len != 7 || memcmp(a[0]->u.str.p, "storage", 7) != 0) {
        return fail_at(v, IMGD_E_FORMAT,
                       "the persistent id does not start with 'storage' (a TorchScript or "
                       "foreign pickle?); " HINT);
    }
    if (a[1]->kind != IMGD_PICKLE_GLOBAL ||
        (a[1]->u.global.kind != G_STORAGE && a[1]->u.global.kind != G_UNTYPED)) {
        return fail_at(
            v, IMGD_E_FORMAT, "the storage type is a %s%s%s, not a torch storage class; " HINT,
            imgd_pickle_kind_name(a[1]->kind), a[1]->kind == IMGD_PICKLE_GLOBAL ? " " : "",
            a[1]->kind == IMGD_PICKLE_GLOBAL ? a[1]->u.global.name : "");
    }
    char        kbuf[32];
    const char *key   = NULL;
    size_t      kl    = 0;
    int64_t     numel = 0;
    if (a[2]->kind == IMGD_PICKLE_STR || a[2]->kind == IMGD_PICKLE_BYTES) {
        key = a[2]->u.str.p;
        kl  = a[2]->u.str.len;
    } else if (a[2]->kind == IMGD_PICKLE_INT && a[2]->u.i >= 0) {
        (void)imgd_fmt(kbuf, sizeof kbuf, "%lld", (long long)a[2]->u.i);
        key = kbuf;
        kl  = strlen(kbuf);
    }
    bool key_ok = key && kl > 0 && kl <= KEY_MAX &&
                  strspn(key, "0123456789abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-") == kl &&
                  strcmp(key, ".") != 0 && strcmp(key, "..") != 0;
    if (!key_ok) {
        return fail_at(v, IMGD_E_FORMAT,
                       "the storage key is not a short name of [A-Za-z0-9_.-]; " HINT);
    }
    if (!get_i64(a[4], &numel) || numel < 0) {
        return fail_at(v, IMGD_E_FORMAT, "the storage numel is not a non-negative integer; " HINT);
    }
    imgd_pickle_storage *s = vm_alloc(v, sizeof *s);
    char                *k = vm_alloc(v, kl + 1);
    *out                   = new_val(v, IMGD_PICKLE_STORAGE);
    if (!s || !k || !*out) return oom(v);
    memcpy(k, key, kl + 1);
    s->key = k;
    s->location =
        (a[3]->kind == IMGD_PICKLE_STR || a[3]->kind == IMGD_PICKLE_BYTES) ? a[3]->u.str.p : "";
    s->numel          = (uint64_t)numel;
    s->dtype          = a[1]->u.global.dtype;
    s->elem_size      = imgd_dtype_traits_of(s->dtype)->block_bytes;
    s->untyped        = a[1]->u.global.kind == G_UNTYPED;
    (*out)->u.storage = s;
    return IMGD_OK;
}

static imgd_status op_persid(vm *v, bool binary) {
    imgd_pickle_value *pid, *out = NULL;
    if (binary) {
        TRY(need(v, 1));
        pid = pop(v);
    } else {
        const char *s = NULL;
        size_t      n = 0;
        TRY(take_line(v, &s, &n));
        pid = new_str(v, IMGD_PICKLE_STR, s, n);
        if (!pid) return oom(v);
    }
    TRY(persistent(v, pid, &out));
    return push(v, out);
}

/* ---- container opcodes ------------------------------------------------------------------- */

static bool hashable(const imgd_pickle_value *k) {
    return k->kind != IMGD_PICKLE_LIST && k->kind != IMGD_PICKLE_DICT && k->kind != IMGD_PICKLE_SET;
}

/* Adds items (pairs for a dict) to target; opaque targets ignore them. */
static imgd_status add_items(vm *v, imgd_pickle_value *target, imgd_pickle_kind want,
                             imgd_pickle_value *const *items, size_t n) {
    if (target->kind == IMGD_PICKLE_OPAQUE) return IMGD_OK;
    if (target->kind != want) {
        return fail_at(v, IMGD_E_FORMAT, "adds items to a %s, expected a %s; " HINT,
                       imgd_pickle_kind_name(target->kind), imgd_pickle_kind_name(want));
    }
    if (want == IMGD_PICKLE_DICT) {
        if (n % 2) {
            return fail_at(v, IMGD_E_FORMAT, "odd number of items for key/value pairs; " HINT);
        }
        for (size_t i = 0; i < n; i += 2) {
            if (!hashable(items[i])) {
                return fail_at(v, IMGD_E_FORMAT, "a dict key is an unhashable %s; " HINT,
                               imgd_pickle_kind_name(items[i]->kind));
            }
        }
    }
    return seq_add(v, target, items, n);
}

/* APPEND / SETITEM: the last 1 or 2 values go into the container below them. */
static imgd_status op_add_one(vm *v, imgd_pickle_kind want) {
    size_t k = want == IMGD_PICKLE_DICT ? 2 : 1;
    TRY(need(v, k + 1));
    v->sp -= k;
    return add_items(v, v->stack[v->sp - 1], want, v->stack + v->sp, k);
}

/* APPENDS / SETITEMS / ADDITEMS: the marked values go into the container below the mark. */
static imgd_status op_add_marked(vm *v, imgd_pickle_kind want) {
    size_t start = 0;
    TRY(pop_mark(v, &start));
    size_t n = v->sp - start;
    v->sp    = start;
    TRY(need(v, 1));
    return add_items(v, v->stack[v->sp - 1], want, v->stack + start, n);
}

/* LIST / TUPLE / DICT / FROZENSET from the marked values. */
static imgd_status op_from_mark(vm *v, imgd_pickle_kind k) {
    size_t start = 0;
    TRY(pop_mark(v, &start));
    size_t             n = v->sp - start;
    imgd_pickle_value *x = new_seq(v, k, NULL, 0);
    if (!x) return oom(v);
    if (k == IMGD_PICKLE_DICT) {
        TRY(add_items(v, x, k, v->stack + start, n));
    } else {
        TRY(seq_add(v, x, v->stack + start, n));
    }
    v->sp = start;
    return push(v, x);
}

static imgd_status op_tuple_n(vm *v, size_t n) {
    TRY(need(v, n));
    v->sp -= n;
    return push(v, new_seq(v, IMGD_PICKLE_TUPLE, v->stack + v->sp, n));
}

/* BUILD: setstate on the object below. Containers, tensors and opaque objects ignore the
 * state (for a dict it is attributes such as torch's _metadata, not items). */
static imgd_status op_build(vm *v) {
    TRY(need(v, 2));
    v->sp--; /* the state */
    const imgd_pickle_value *inst = v->stack[v->sp - 1];
    switch (inst->kind) {
    case IMGD_PICKLE_LIST:
    case IMGD_PICKLE_TUPLE:
    case IMGD_PICKLE_SET:
    case IMGD_PICKLE_DICT:
    case IMGD_PICKLE_TENSOR:
    case IMGD_PICKLE_STORAGE:
    case IMGD_PICKLE_OPAQUE: return IMGD_OK;
    default:
        return fail_at(v, IMGD_E_FORMAT, "BUILD on a %s; " HINT, imgd_pickle_kind_name(inst->kind));
    }
}

static imgd_status op_memo(vm *v, int len_bytes, bool put) {
    uint64_t idx = 0;
    if (len_bytes) {
        const uint8_t *p = v->d;
        TRY(take(v, (size_t)len_bytes, &p));
        idx = le(p, len_bytes);
    } else {
        const char *s = NULL;
        size_t      n = 0;
        int64_t     i = 0;
        TRY(take_line(v, &s, &n));
        if (parse_i64(s, n, &i) != 0 || i < 0) {
            return fail_at(v, IMGD_E_FORMAT, "the memo key is not a non-negative number; " HINT);
        }
        idx = (uint64_t)i;
    }
    return put ? memo_put(v, idx) : memo_get(v, idx);
}

static imgd_status op_pop(vm *v) {
    if (v->sp > frame_base(v)) {
        v->sp--;
        return IMGD_OK;
    }
    size_t start = 0; /* like CPython: POP on an empty frame discards the mark */
    return pop_mark(v, &start);
}

static imgd_status op_misc(vm *v) {
    const uint8_t *p = v->d;
    size_t         n = 0;
    switch (v->op) {
    case OP_PROTO:
        TRY(take(v, 1, &p));
        if (p[0] > 5) {
            return fail_at(v, IMGD_E_UNSUPPORTED, "pickle protocol %u is not supported (0-5)",
                           p[0]);
        }
        return IMGD_OK;
    case OP_FRAME: return take_len(v, 8, &n); /* frames are advisory; just bounds-check */
    case OP_EXT1:
    case OP_EXT2:
    case OP_EXT4:
        return fail_at(v, IMGD_E_UNSUPPORTED,
                       "the copyreg extension registry is not supported; " HINT);
    case OP_NEXT_BUFFER:
    case OP_READONLY_BUFFER:
        return fail_at(v, IMGD_E_UNSUPPORTED,
                       "out-of-band pickle buffers are not supported; " HINT);
    default: return fail_at(v, IMGD_E_FORMAT, "unknown opcode 0x%02x; " HINT, v->op);
    }
}

/* ---- the dispatch loop ----------------------------------------------------------------------- */

/* One opcode. A flat switch with one short line per opcode: splitting it would only hide
 * the opcode table, which is easiest to audit against pickletools in one place. */
static imgd_status step(vm *v) {
    switch (v->op) {
    case OP_MARK: return push_mark(v);
    case OP_STOP: v->stopped = true; return IMGD_OK;
    case OP_POP: return op_pop(v);
    case OP_POP_MARK: {
        size_t start = 0;
        TRY(pop_mark(v, &start));
        v->sp = start;
        return IMGD_OK;
    }
    case OP_DUP: TRY(need(v, 1)); return push(v, v->stack[v->sp - 1]);
    case OP_FLOAT: return float_text(v);
    case OP_BINFLOAT: return bin_float(v);
    case OP_INT: return int_text(v, false);
    case OP_LONG: return int_text(v, true);
    case OP_BININT: return bin_int(v, 4, true);
    case OP_BININT1: return bin_int(v, 1, false);
    case OP_BININT2: return bin_int(v, 2, false);
    case OP_LONG1: return bin_long(v, 1);
    case OP_LONG4: return bin_long(v, 4);
    case OP_NONE: return push(v, v->none);
    case OP_NEWTRUE: return push(v, v->yes);
    case OP_NEWFALSE: return push(v, v->no);
    case OP_STRING: {
        const char *s = NULL;
        size_t      n = 0;
        TRY(take_line(v, &s, &n));
        return string_text(v, s, n);
    }
    case OP_UNICODE: {
        const char *s = NULL;
        size_t      n = 0;
        TRY(take_line(v, &s, &n));
        return unicode_text(v, s, n);
    }
    case OP_BINSTRING: return bin_text(v, 4, IMGD_PICKLE_NONE);
    case OP_SHORT_BINSTRING: return bin_text(v, 1, IMGD_PICKLE_NONE);
    case OP_BINUNICODE: return bin_text(v, 4, IMGD_PICKLE_STR);
    case OP_SHORT_BINUNICODE: return bin_text(v, 1, IMGD_PICKLE_STR);
    case OP_BINUNICODE8: return bin_text(v, 8, IMGD_PICKLE_STR);
    case OP_BINBYTES: return bin_text(v, 4, IMGD_PICKLE_BYTES);
    case OP_SHORT_BINBYTES: return bin_text(v, 1, IMGD_PICKLE_BYTES);
    case OP_BINBYTES8: return bin_text(v, 8, IMGD_PICKLE_BYTES);
    case OP_BYTEARRAY8: return bin_text(v, 8, IMGD_PICKLE_BYTES);
    case OP_EMPTY_LIST: return push(v, new_seq(v, IMGD_PICKLE_LIST, NULL, 0));
    case OP_EMPTY_TUPLE: return push(v, new_seq(v, IMGD_PICKLE_TUPLE, NULL, 0));
    case OP_EMPTY_DICT: return push(v, new_seq(v, IMGD_PICKLE_DICT, NULL, 0));
    case OP_EMPTY_SET: return push(v, new_seq(v, IMGD_PICKLE_SET, NULL, 0));
    case OP_LIST: return op_from_mark(v, IMGD_PICKLE_LIST);
    case OP_TUPLE: return op_from_mark(v, IMGD_PICKLE_TUPLE);
    case OP_DICT: return op_from_mark(v, IMGD_PICKLE_DICT);
    case OP_FROZENSET: return op_from_mark(v, IMGD_PICKLE_SET);
    case OP_TUPLE1: return op_tuple_n(v, 1);
    case OP_TUPLE2: return op_tuple_n(v, 2);
    case OP_TUPLE3: return op_tuple_n(v, 3);
    case OP_APPEND: return op_add_one(v, IMGD_PICKLE_LIST);
    case OP_SETITEM: return op_add_one(v, IMGD_PICKLE_DICT);
    case OP_APPENDS: return op_add_marked(v, IMGD_PICKLE_LIST);
    case OP_SETITEMS: return op_add_marked(v, IMGD_PICKLE_DICT);
    case OP_ADDITEMS: return op_add_marked(v, IMGD_PICKLE_SET);
    case OP_GET: return op_memo(v, 0, false);
    case OP_BINGET: return op_memo(v, 1, false);
    case OP_LONG_BINGET: return op_memo(v, 4, false);
    case OP_PUT: return op_memo(v, 0, true);
    case OP_BINPUT: return op_memo(v, 1, true);
    case OP_LONG_BINPUT: return op_memo(v, 4, true);
    case OP_MEMOIZE: return memo_put(v, v->memo_count);
    case OP_GLOBAL: return op_global(v);
    case OP_STACK_GLOBAL: return op_stack_global(v);
    case OP_REDUCE: return op_reduce(v);
    case OP_BUILD: return op_build(v);
    case OP_NEWOBJ: return op_newobj(v, false);
    case OP_NEWOBJ_EX: return op_newobj(v, true);
    case OP_INST:
    case OP_OBJ: return op_inst_obj(v);
    case OP_PERSID: return op_persid(v, false);
    case OP_BINPERSID: return op_persid(v, true);
    default: return op_misc(v);
    }
}

static imgd_status run(vm *v) {
    while (v->pos < v->n) {
        v->op_pos = v->pos;
        v->op     = v->d[v->pos++];
        if (++v->ops > v->p->ops_max) {
            return fail_at(v, IMGD_E_TOO_LARGE,
                           "more than %llu opcodes; refusing a pickle bomb (raise pickle_ops_max "
                           "if the file is trusted)",
                           (unsigned long long)v->p->ops_max);
        }
        TRY(step(v));
        if (!v->stopped) continue;
        if (v->n_marks || v->sp != 1) {
            return fail_at(v, IMGD_E_FORMAT,
                           "STOP with %zu value(s) and %zu open MARK(s) on the stack (expected "
                           "exactly one value); " HINT,
                           v->sp, v->n_marks);
        }
        return IMGD_OK;
    }
    v->op_pos = v->pos;
    v->op     = OP_STOP;
    return fail_at(v, IMGD_E_FORMAT, "truncated: the pickle ends without STOP; " HINT);
}

/* ---- entry point ------------------------------------------------------------------------------
 */

size_t imgd_pickle_arena_cap(size_t size) {
    size_t cap = 0;
    if (!imgd_size_mul(size, 16, &cap) || !imgd_size_add(cap, (size_t)64 << 20, &cap)) {
        return SIZE_MAX;
    }
    return cap;
}

imgd_status imgd_pickle_load(const imgd_pickle_params *p, const uint8_t *data, size_t size,
                             imgd_arena *arena, imgd_pickle_result *out) {
    vm v;
    memset(&v, 0, sizeof v);
    v.p     = p;
    v.d     = data;
    v.n     = size;
    v.arena = arena;
    if (size > p->size_max) {
        return imgd_fail(IMGD_E_TOO_LARGE,
                         "%s: %s is %zu bytes, over the cap of %llu (raise header_size_max if the "
                         "file is trusted)",
                         p->file, p->entry, size, (unsigned long long)p->size_max);
    }
    if (size == 0) return imgd_fail(IMGD_E_FORMAT, "%s: %s is empty; " HINT, p->file, p->entry);
    v.stack_alloc = 256; /* never NULL: opcodes form `stack + start` even when empty */
    v.stack       = imgd_malloc(v.stack_alloc * sizeof *v.stack);
    if (!v.stack) return imgd_fail(IMGD_E_NOMEM, "%s: out of memory", p->file);
    v.none         = new_val(&v, IMGD_PICKLE_NONE);
    v.yes          = new_val(&v, IMGD_PICKLE_BOOL);
    v.no           = new_val(&v, IMGD_PICKLE_BOOL);
    imgd_status st = (v.none && v.yes && v.no) ? IMGD_OK : oom(&v);
    if (st == IMGD_OK) {
        v.yes->u.b = true;
        st         = run(&v);
    }
    if (st == IMGD_OK) {
        out->root     = v.stack[0];
        out->ops      = v.ops;
        out->n_values = v.n_values;
    }
    imgd_free(v.stack);
    imgd_free(v.marks);
    imgd_free(v.memo);
    return st;
}
