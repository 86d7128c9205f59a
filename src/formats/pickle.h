/* Restricted pickle VM: reads the data.pkl of PyTorch checkpoints without executing code.
 *
 * Every opcode of protocols 0-5 is decoded, but globals (GLOBAL, STACK_GLOBAL, INST) are
 * resolved only against a fixed allow-list of containers, tensor/storage rebuild functions
 * and a few opaque classes; anything else (os.system, builtins.eval, unknown modules) is
 * refused with IMGD_E_UNSAFE before anything could run. Calls (REDUCE, NEWOBJ, OBJ, INST)
 * are interpreted by built-in handlers that only build values. Persistent ids
 * ('storage', type, key, location, numel) become storage references, and
 * torch._utils._rebuild_tensor* calls become tensor descriptions; the caller resolves
 * storages to archive entries and checks every view against its storage.
 *
 * The result is a graph of values in a caller-owned arena (the arena's cap bounds what a
 * hostile pickle can allocate; freeing is imgd_arena_free). Memo and DUP share values, so
 * the graph can contain shared and cyclic references: walk it with a depth cap and a
 * total-visit cap (see imgd_pickle_result.n_values). */
#ifndef IMGD_FORMATS_PICKLE_H
#define IMGD_FORMATS_PICKLE_H

#include <stdbool.h>

#include "base/arena.h"
#include "base/base.h"

typedef enum imgd_pickle_kind {
    IMGD_PICKLE_NONE = 0,
    IMGD_PICKLE_BOOL,
    IMGD_PICKLE_INT,
    IMGD_PICKLE_FLOAT,
    IMGD_PICKLE_STR,   /* UTF-8 text (may contain NUL: use len) */
    IMGD_PICKLE_BYTES, /* bytes, bytearray, or a non-UTF-8 protocol-0/1 string */
    IMGD_PICKLE_LIST,
    IMGD_PICKLE_TUPLE,   /* also torch.Size */
    IMGD_PICKLE_SET,     /* set or frozenset */
    IMGD_PICKLE_DICT,    /* dict or OrderedDict: pairs in insertion order, duplicates kept */
    IMGD_PICKLE_GLOBAL,  /* an allow-listed global that was not called (a dtype, a class) */
    IMGD_PICKLE_STORAGE, /* a persistent-id storage reference */
    IMGD_PICKLE_TENSOR,  /* a view of a storage built by _rebuild_tensor* */
    IMGD_PICKLE_OPAQUE,  /* an allow-listed object that is not modelled (numpy, callbacks) */
    IMGD_PICKLE_KIND_COUNT
} imgd_pickle_kind;

typedef struct imgd_pickle_value imgd_pickle_value;

typedef struct imgd_pickle_storage {
    const char *key;       /* archive record name under data/ (e.g. "0"); [A-Za-z0-9_.-] */
    const char *location;  /* "cpu", "cuda:0", ...; informational */
    uint64_t    numel;     /* elements of dtype (bytes for an untyped storage) */
    imgd_dtype  dtype;     /* element type; U8 for an untyped storage */
    uint32_t    elem_size; /* bytes per element */
    bool        untyped;   /* torch.UntypedStorage: only _rebuild_tensor_v3 can view it */
} imgd_pickle_storage;

typedef struct imgd_pickle_tensor {
    const imgd_pickle_storage *storage;
    uint64_t                   offset;                /* storage offset, in elements of dtype */
    int32_t                    n_dims;                /* 0..IMGD_MAX_DIMS */
    int64_t                    shape[IMGD_MAX_DIMS];  /* >= 0 */
    int64_t                    stride[IMGD_MAX_DIMS]; /* >= 0, in elements */
    imgd_dtype                 dtype;
    uint32_t                   elem_size;
    void                      *user; /* NULL after load; free for the consumer to use */
} imgd_pickle_tensor;

struct imgd_pickle_value {
    imgd_pickle_kind kind;
    union {
        bool    b; /* BOOL */
        int64_t i; /* INT */
        double  f; /* FLOAT */
        struct {
            const char *p; /* NUL-terminated copy */
            size_t      len;
        } str; /* STR, BYTES */
        struct {
            imgd_pickle_value **items; /* DICT: keys at 2i, values at 2i + 1 */
            size_t              n;     /* items (DICT: pairs) */
            size_t              alloc; /* pointer slots allocated */
        } seq;                         /* LIST, TUPLE, SET, DICT */
        struct {
            const char *name; /* "module.name" (static storage) */
            int         kind; /* internal allow-list kind */
            imgd_dtype  dtype;
        } global; /* GLOBAL, OPAQUE (name only) */
        imgd_pickle_storage *storage;
        imgd_pickle_tensor  *tensor;
    } u;
};

typedef struct imgd_pickle_params {
    const char *file;     /* file name for messages */
    const char *entry;    /* archive entry for messages ("archive/data.pkl") */
    uint64_t    ops_max;  /* cap on executed opcodes (IMGD_E_TOO_LARGE) */
    uint64_t    size_max; /* cap on the pickle's size in bytes (IMGD_E_TOO_LARGE) */
} imgd_pickle_params;

typedef struct imgd_pickle_result {
    imgd_pickle_value *root;     /* the object STOP returned; in the arena */
    uint64_t           ops;      /* opcodes executed */
    uint64_t           n_values; /* values created: a budget for walking the graph */
} imgd_pickle_result;

/* A suggested arena cap for a pickle of `size` bytes: 64 MiB + 16 bytes per pickle byte.
 * Real checkpoints use about 7 bytes of objects per pickle byte (SD 1.5: 1.2 MB for a
 * 168 KB pickle); copy bombs (dict(x) in a loop) hit the cap. */
size_t imgd_pickle_arena_cap(size_t size);

/* Runs the pickle data[0..size) and builds its value graph in `arena` (borrowed; the caller
 * initialises it with a cap and frees it, also after a failure).
 * *out is written only on success. Returns IMGD_OK; IMGD_E_UNSAFE for a global outside the
 * allow-list ("<file>: unsafe pickle: global 'os.system' is not allowed (<entry> at byte
 * N); ..."); IMGD_E_FORMAT for a malformed pickle (truncated, stack or mark underflow, an
 * unset memo key, bad arguments to an allowed call, non-UTF-8 text, STOP with other than
 * one value); IMGD_E_UNSUPPORTED for EXT opcodes, out-of-band buffers, integers wider than
 * 64 bits, protocol > 5, tensors with more than IMGD_MAX_DIMS dims and recognised but
 * unreadable storage types; IMGD_E_TOO_LARGE when size_max, ops_max, the stack, memo or
 * mark caps, or the arena cap are hit; IMGD_E_NOMEM. Messages give the byte offset of
 * the opcode. Thread-safety: reentrant; nothing global is touched. */
imgd_status imgd_pickle_load(const imgd_pickle_params *p, const uint8_t *data, size_t size,
                             imgd_arena *arena, imgd_pickle_result *out);

/* Python-style type name of a kind ("dict", "tensor", ...), for messages. */
const char *imgd_pickle_kind_name(imgd_pickle_kind kind);

#endif
