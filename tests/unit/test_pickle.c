/* Restricted unpickler: hand-assembled pickles of protocols 0-5 (valid ones shaped like
 * torch.save output) and hostile ones: disallowed globals, truncation, stack/mark/memo
 * abuse, bombs, bad tensor arguments. */
#include "base/alloc.h"
#include "formats/pickle.h"
#include "test.h"

/* ---- a pickle builder ------------------------------------------------------------------ */

typedef struct pb {
    uint8_t *p;
    size_t   len, cap;
} pb;

/* Fixture allocations retry once: IMGD_FAIL_ALLOC_AT (the OOM sweep) fails a single
 * allocation, which should land in the code under test, not in the fixture builders. */
static void *fixture_realloc(void *p, size_t n) {
    void *q = imgd_realloc(p, n);
    return q ? q : imgd_realloc(p, n);
}

static void put(pb *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->len + n) nc *= 2;
        b->p   = fixture_realloc(b->p, nc);
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void op(pb *b, int o) {
    uint8_t c = (uint8_t)o;
    put(b, &c, 1);
}

static void le(pb *b, uint64_t v, int k) {
    for (int i = 0; i < k; i++) op(b, (int)((v >> (8 * i)) & 0xFF));
}

static void raw(pb *b, const char *s) {
    put(b, s, strlen(s));
}

static void k1(pb *b, int v) { /* BININT1 */
    op(b, 'K');
    op(b, v);
}

static void bint(pb *b, int32_t v) { /* BININT */
    op(b, 'J');
    le(b, (uint32_t)v, 4);
}

static void bu(pb *b, const char *s) { /* BINUNICODE */
    op(b, 'X');
    le(b, strlen(s), 4);
    raw(b, s);
}

static void sbu(pb *b, const char *s) { /* SHORT_BINUNICODE */
    op(b, 0x8c);
    op(b, (int)strlen(s));
    raw(b, s);
}

static void glob(pb *b, const char *mod, const char *name) { /* GLOBAL */
    op(b, 'c');
    raw(b, mod);
    op(b, '\n');
    raw(b, name);
    op(b, '\n');
}

static void ints_tuple(pb *b, int n, const int *v) {
    op(b, '(');
    for (int i = 0; i < n; i++) bint(b, v[i]);
    op(b, 't');
}

/* ('storage', torch.<stype>, key, 'cpu', numel) BINPERSID */
static void storage_pid(pb *b, const char *stype, const char *key, int numel) {
    op(b, '(');
    bu(b, "storage");
    glob(b, "torch", stype);
    bu(b, key);
    bu(b, "cpu");
    bint(b, numel);
    op(b, 't');
    op(b, 'Q');
}

/* _rebuild_tensor_v2(storage, off, shape, stride, False, OrderedDict()) as torch writes it. */
static void tensor_v2(pb *b, const char *stype, const char *key, int numel, int off, int nd,
                      const int *shape, const int *stride) {
    glob(b, "torch._utils", "_rebuild_tensor_v2");
    op(b, '(');
    storage_pid(b, stype, key, numel);
    bint(b, off);
    ints_tuple(b, nd, shape);
    ints_tuple(b, nd, stride);
    op(b, 0x89);
    glob(b, "collections", "OrderedDict");
    op(b, ')');
    op(b, 'R');
    op(b, 't');
    op(b, 'R');
}

static void pb_free(pb *b) {
    imgd_free(b->p);
    memset(b, 0, sizeof *b);
}

static const imgd_pickle_params k_params = {"t.ckpt", "arc/data.pkl", 50000000, 1 << 26};

typedef struct loaded {
    imgd_arena         arena;
    imgd_pickle_result r;
    imgd_status        st;
} loaded;

static void load_with(const pb *b, const imgd_pickle_params *pp, loaded *l) {
    imgd_arena_init(&l->arena, imgd_pickle_arena_cap(b->len));
    memset(&l->r, 0, sizeof l->r);
    l->st = imgd_pickle_load(pp, b->p, b->len, &l->arena, &l->r);
}

static void load(const pb *b, loaded *l) {
    load_with(b, &k_params, l);
}

static void expect_fail_with(const pb *b, const imgd_pickle_params *pp, imgd_status want,
                             const char *word) {
    loaded l;
    load_with(b, pp, &l);
    CHECK_STATUS(l.st, want);
    CHECK_MSG(strstr(imgd_last_error(), word) != NULL, "'%s' not in: %s", word, imgd_last_error());
    CHECK_MSG(strstr(imgd_last_error(), "t.ckpt") != NULL, "no file in: %s", imgd_last_error());
    imgd_arena_free(&l.arena);
}

static void expect_fail(const pb *b, imgd_status want, const char *word) {
    expect_fail_with(b, &k_params, want, word);
}

/* Value of str key k in dict d, or NULL. */
static const imgd_pickle_value *dget(const imgd_pickle_value *d, const char *k) {
    if (!d || d->kind != IMGD_PICKLE_DICT) return NULL;
    for (size_t i = 0; i < d->u.seq.n; i++) {
        const imgd_pickle_value *key = d->u.seq.items[2 * i];
        if (key->kind == IMGD_PICKLE_STR && strcmp(key->u.str.p, k) == 0) {
            return d->u.seq.items[2 * i + 1];
        }
    }
    return NULL;
}

static bool is_int(const imgd_pickle_value *v, int64_t want) {
    return v && v->kind == IMGD_PICKLE_INT && v->u.i == want;
}

static bool is_str(const imgd_pickle_value *v, const char *want) {
    return v && v->kind == IMGD_PICKLE_STR && strcmp(v->u.str.p, want) == 0;
}

/* A protocol-2 state dict {"w": tensor(2x3, transposed view), "b": tensor(3)} */
static void torch_p2(pb *b) {
    int s23[2] = {2, 3}, st[2] = {1, 2}, s3[1] = {3}, one[1] = {1};
    op(b, 0x80);
    op(b, 2);
    op(b, '}');
    op(b, 'q');
    op(b, 0);
    op(b, '(');
    bu(b, "w");
    tensor_v2(b, "FloatStorage", "0", 6, 0, 2, s23, st);
    bu(b, "b");
    tensor_v2(b, "HalfStorage", "1", 8, 5, 1, s3, one);
    op(b, 'u');
    op(b, '.');
}

/* ---- valid pickles ---------------------------------------------------------------------- */

static void test_pickle_reads_protocol2_state_dict(void) {
    pb b = {0};
    torch_p2(&b);
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *root = l.r.root;
    CHECK(root && root->kind == IMGD_PICKLE_DICT && root->u.seq.n == 2);
    const imgd_pickle_value *w = dget(root, "w"), *bias = dget(root, "b");
    CHECK(w && w->kind == IMGD_PICKLE_TENSOR);
    CHECK(bias && bias->kind == IMGD_PICKLE_TENSOR);
    if (w && w->kind == IMGD_PICKLE_TENSOR && bias && bias->kind == IMGD_PICKLE_TENSOR) {
        const imgd_pickle_tensor *t = w->u.tensor;
        CHECK_EQ_INT(t->n_dims, 2);
        CHECK_EQ_INT(t->shape[0], 2);
        CHECK_EQ_INT(t->shape[1], 3);
        CHECK_EQ_INT(t->stride[0], 1);
        CHECK_EQ_INT(t->stride[1], 2);
        CHECK_EQ_INT(t->dtype, IMGD_DTYPE_F32);
        CHECK_STR(t->storage->key, "0");
        CHECK_STR(t->storage->location, "cpu");
        CHECK_EQ_INT(t->storage->numel, 6);
        CHECK_EQ_INT(bias->u.tensor->dtype, IMGD_DTYPE_F16);
        CHECK_EQ_INT(bias->u.tensor->offset, 5);
        CHECK_EQ_INT(bias->u.tensor->elem_size, 2);
    }
    CHECK(l.r.ops > 50 && l.r.n_values > 10);
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_reads_protocol4_frame_memoize_stack_global(void) {
    pb  b      = {0};
    int shp[1] = {4}, str[1] = {1};
    op(&b, 0x80);
    op(&b, 4);
    op(&b, 0x95); /* FRAME, length patched below */
    size_t frame_at = b.len;
    le(&b, 0, 8);
    op(&b, '}');
    op(&b, 0x94);
    sbu(&b, "layer.weight");
    op(&b, 0x94);
    sbu(&b, "torch._utils");
    op(&b, 0x94);
    sbu(&b, "_rebuild_tensor_v2");
    op(&b, 0x94);
    op(&b, 0x93); /* STACK_GLOBAL */
    op(&b, 0x94);
    op(&b, '(');
    op(&b, '(');
    sbu(&b, "storage");
    sbu(&b, "torch");
    sbu(&b, "BFloat16Storage");
    op(&b, 0x93);
    sbu(&b, "7");
    sbu(&b, "cuda:0");
    k1(&b, 4);
    op(&b, 't');
    op(&b, 'Q');
    k1(&b, 0);
    ints_tuple(&b, 1, shp);
    ints_tuple(&b, 1, str);
    op(&b, 0x89);
    op(&b, '}');
    op(&b, 't');
    op(&b, 'R');
    op(&b, 0x94);
    op(&b, 's');
    sbu(&b, "again");
    op(&b, 'h'); /* BINGET 5: the same tensor value */
    op(&b, 5);
    op(&b, 's');
    op(&b, '.');
    uint64_t flen = b.len - frame_at - 8;
    for (int i = 0; i < 8; i++) b.p[frame_at + (size_t)i] = (uint8_t)(flen >> (8 * i));
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *t = dget(l.r.root, "layer.weight");
    CHECK(t && t->kind == IMGD_PICKLE_TENSOR);
    CHECK(t && t == dget(l.r.root, "again")); /* memo shares the value */
    if (t && t->kind == IMGD_PICKLE_TENSOR) {
        CHECK_EQ_INT(t->u.tensor->dtype, IMGD_DTYPE_BF16);
        CHECK_STR(t->u.tensor->storage->key, "7");
        CHECK_STR(t->u.tensor->storage->location, "cuda:0");
    }
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_reads_protocol0_text_opcodes(void) {
    pb b = {0};
    raw(&b, "(dp0\n"
            "Vkey\\u00e9\\U0001F600\np1\nI42\ns"
            "S'a\\nb\\x41\\101\\'q'\np2\nL-123L\ns"
            "Vf\nF1.5\ns"
            "Vt\nI01\ns"
            "Vlst\n(lp3\nI1\naI2\nas"
            "Vtup\n(I7\nI-8\ntp4\ns"
            "Vagain\ng1\ns"
            "Vobj\n(i__builtin__\nlist\np5\ns"
            "Vraw\nVlatin\xe9\ns"
            ".");
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *r = l.r.root;
    CHECK(is_int(dget(r, "key\xc3\xa9\xf0\x9f\x98\x80"), 42));
    CHECK(is_int(dget(r, "a\nbAA'q"), -123));
    const imgd_pickle_value *f = dget(r, "f");
    CHECK(f && f->kind == IMGD_PICKLE_FLOAT && f->u.f == 1.5);
    const imgd_pickle_value *t = dget(r, "t");
    CHECK(t && t->kind == IMGD_PICKLE_BOOL && t->u.b);
    const imgd_pickle_value *lst = dget(r, "lst");
    CHECK(lst && lst->kind == IMGD_PICKLE_LIST && lst->u.seq.n == 2 &&
          is_int(lst->u.seq.items[1], 2));
    const imgd_pickle_value *tup = dget(r, "tup");
    CHECK(tup && tup->kind == IMGD_PICKLE_TUPLE && is_int(tup->u.seq.items[1], -8));
    CHECK(is_str(dget(r, "again"), "key\xc3\xa9\xf0\x9f\x98\x80"));
    const imgd_pickle_value *obj = dget(r, "obj");
    CHECK(obj && obj->kind == IMGD_PICKLE_LIST && obj->u.seq.n == 0);
    CHECK(is_str(dget(r, "raw"), "latin\xc3\xa9"));
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_reads_binary_numbers(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, ']');
    op(&b, '(');
    bint(&b, -5);
    k1(&b, 200);
    op(&b, 'M');
    le(&b, 60000, 2);
    op(&b, 0x8a); /* LONG1 -2 */
    op(&b, 1);
    op(&b, 0xfe);
    op(&b, 0x8a); /* LONG1 2^40 */
    op(&b, 6);
    le(&b, (uint64_t)1 << 40, 6);
    op(&b, 0x8b); /* LONG4 INT64_MIN */
    le(&b, 8, 4);
    le(&b, (uint64_t)1 << 63, 8);
    op(&b, 0x8a); /* LONG1 0 */
    op(&b, 0);
    op(&b, 'G'); /* BINFLOAT -2.5 big-endian */
    const uint8_t be[8] = {0xc0, 0x04, 0, 0, 0, 0, 0, 0};
    put(&b, be, 8);
    op(&b, 0x88);
    op(&b, 0x89);
    op(&b, 'N');
    op(&b, 'e');
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *r = l.r.root;
    CHECK(r && r->kind == IMGD_PICKLE_LIST && r->u.seq.n == 11);
    if (r && r->kind == IMGD_PICKLE_LIST && r->u.seq.n == 11) {
        imgd_pickle_value **it = r->u.seq.items;
        CHECK(is_int(it[0], -5));
        CHECK(is_int(it[1], 200));
        CHECK(is_int(it[2], 60000));
        CHECK(is_int(it[3], -2));
        CHECK(is_int(it[4], (int64_t)1 << 40));
        CHECK(is_int(it[5], INT64_MIN));
        CHECK(is_int(it[6], 0));
        CHECK(it[7]->kind == IMGD_PICKLE_FLOAT && it[7]->u.f == -2.5);
        CHECK(it[8]->kind == IMGD_PICKLE_BOOL && it[8]->u.b);
        CHECK(it[9]->kind == IMGD_PICKLE_BOOL && !it[9]->u.b);
        CHECK(it[10]->kind == IMGD_PICKLE_NONE);
    }
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_reads_bytes_sets_and_protocol5(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 5);
    op(&b, '(');
    op(&b, 'B');
    le(&b, 3, 4);
    raw(&b, "abc");
    op(&b, 'C');
    op(&b, 2);
    put(&b, "\xff\x00", 2);
    op(&b, 0x8e);
    le(&b, 1, 8);
    raw(&b, "z");
    op(&b, 0x96); /* BYTEARRAY8 */
    le(&b, 2, 8);
    raw(&b, "yy");
    op(&b, 'U'); /* SHORT_BINSTRING, not UTF-8: bytes */
    op(&b, 1);
    op(&b, 0xff);
    op(&b, 'T'); /* BINSTRING, UTF-8: str */
    le(&b, 2, 4);
    raw(&b, "ok");
    op(&b, 0x8d); /* BINUNICODE8 */
    le(&b, 2, 8);
    raw(&b, "u8");
    op(&b, 0x8f); /* EMPTY_SET + ADDITEMS */
    op(&b, '(');
    k1(&b, 1);
    k1(&b, 2);
    op(&b, 0x90);
    op(&b, '(');
    k1(&b, 3);
    op(&b, 0x91); /* FROZENSET */
    op(&b, 'l');
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *r = l.r.root;
    CHECK(r && r->kind == IMGD_PICKLE_LIST && r->u.seq.n == 9);
    if (r && r->kind == IMGD_PICKLE_LIST && r->u.seq.n == 9) {
        imgd_pickle_value **it = r->u.seq.items;
        CHECK(it[0]->kind == IMGD_PICKLE_BYTES && it[0]->u.str.len == 3);
        CHECK(it[1]->kind == IMGD_PICKLE_BYTES && it[1]->u.str.len == 2 && it[1]->u.str.p[1] == 0);
        CHECK(it[3]->kind == IMGD_PICKLE_BYTES && it[3]->u.str.len == 2);
        CHECK(it[4]->kind == IMGD_PICKLE_BYTES);
        CHECK(is_str(it[5], "ok"));
        CHECK(is_str(it[6], "u8"));
        CHECK(it[7]->kind == IMGD_PICKLE_SET && it[7]->u.seq.n == 2);
        CHECK(it[8]->kind == IMGD_PICKLE_SET && it[8]->u.seq.n == 1);
    }
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_builds_allowed_containers(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, '}');
    bu(&b, "od"); /* OrderedDict([("k", 1)]) */
    glob(&b, "collections", "OrderedDict");
    op(&b, ']');
    bu(&b, "k");
    k1(&b, 1);
    op(&b, 0x86);
    op(&b, 'a');
    op(&b, 0x85);
    op(&b, 'R');
    op(&b, 's');
    bu(&b, "size"); /* torch.Size((3, 4)) */
    glob(&b, "torch", "Size");
    k1(&b, 3);
    k1(&b, 4);
    op(&b, 0x86);
    op(&b, 0x85);
    op(&b, 'R');
    op(&b, 's');
    bu(&b, "enc"); /* _codecs.encode("\xe9\x01", "latin1") */
    glob(&b, "_codecs", "encode");
    bu(&b, "\xc3\xa9\x01");
    bu(&b, "latin1");
    op(&b, 0x86);
    op(&b, 'R');
    op(&b, 's');
    bu(&b, "set"); /* builtins.set([1, 1]) */
    glob(&b, "builtins", "set");
    op(&b, ']');
    op(&b, '(');
    k1(&b, 1);
    k1(&b, 1);
    op(&b, 'e');
    op(&b, 0x85);
    op(&b, 'R');
    op(&b, 's');
    bu(&b, "dt");
    glob(&b, "torch", "bfloat16");
    op(&b, 's');
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *od = dget(l.r.root, "od");
    CHECK(od && od->kind == IMGD_PICKLE_DICT && is_int(dget(od, "k"), 1));
    const imgd_pickle_value *sz = dget(l.r.root, "size");
    CHECK(sz && sz->kind == IMGD_PICKLE_TUPLE && sz->u.seq.n == 2 && is_int(sz->u.seq.items[1], 4));
    const imgd_pickle_value *enc = dget(l.r.root, "enc");
    CHECK(enc && enc->kind == IMGD_PICKLE_BYTES && enc->u.str.len == 2 &&
          (uint8_t)enc->u.str.p[0] == 0xe9);
    const imgd_pickle_value *set = dget(l.r.root, "set");
    CHECK(set && set->kind == IMGD_PICKLE_SET);
    const imgd_pickle_value *dt = dget(l.r.root, "dt");
    CHECK(dt && dt->kind == IMGD_PICKLE_GLOBAL && dt->u.global.dtype == IMGD_DTYPE_BF16);
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_keeps_opaque_objects(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, '}');
    bu(&b, "cb"); /* ModelCheckpoint.__new__ + BUILD(state) */
    glob(&b, "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint");
    op(&b, ')');
    op(&b, 0x81);
    op(&b, '}');
    bu(&b, "monitor");
    op(&b, 'N');
    op(&b, 's');
    op(&b, 'b');
    op(&b, 's');
    bu(&b, "np"); /* numpy.core.multiarray.scalar(numpy.dtype("f8"), b"...") */
    glob(&b, "numpy.core.multiarray", "scalar");
    glob(&b, "numpy", "dtype");
    bu(&b, "f8");
    op(&b, 0x89);
    op(&b, 0x88);
    op(&b, 0x87);
    op(&b, 'R');
    op(&b, '(');
    k1(&b, 3);
    bu(&b, "<");
    op(&b, 'N');
    op(&b, 't');
    op(&b, 'b');
    glob(&b, "_codecs", "encode");
    bu(&b, "\x01\x02");
    bu(&b, "latin1");
    op(&b, 0x86);
    op(&b, 'R');
    op(&b, 0x86);
    op(&b, 'R');
    op(&b, 's');
    bu(&b, "dev");
    glob(&b, "torch", "device");
    bu(&b, "cuda");
    k1(&b, 0);
    op(&b, 0x86);
    op(&b, 'R');
    op(&b, 's');
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *cb = dget(l.r.root, "cb"), *np = dget(l.r.root, "np");
    CHECK(cb && cb->kind == IMGD_PICKLE_OPAQUE);
    CHECK(np && np->kind == IMGD_PICKLE_OPAQUE);
    CHECK(dget(l.r.root, "dev") && dget(l.r.root, "dev")->kind == IMGD_PICKLE_OPAQUE);
    if (cb) CHECK(strstr(cb->u.global.name, "ModelCheckpoint") != NULL);
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_rebuilds_parameters_and_subclasses(void) {
    int s2[1] = {2}, one[1] = {1};
    pb  b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, ']');
    op(&b, '(');
    glob(&b, "torch._utils", "_rebuild_parameter"); /* Parameter(tensor) */
    tensor_v2(&b, "FloatStorage", "0", 2, 0, 1, s2, one);
    op(&b, 0x89);
    glob(&b, "collections", "OrderedDict");
    op(&b, ')');
    op(&b, 'R');
    op(&b, 0x87);
    op(&b, 'R');
    glob(&b, "torch._tensor", "_rebuild_from_type_v2"); /* subclass wrapper */
    op(&b, '(');
    glob(&b, "torch._utils", "_rebuild_tensor_v2");
    glob(&b, "torch", "Tensor");
    op(&b, '(');
    storage_pid(&b, "IntStorage", "1", 2);
    k1(&b, 0);
    ints_tuple(&b, 1, s2);
    ints_tuple(&b, 1, one);
    op(&b, 0x89);
    op(&b, '}');
    op(&b, 't');
    op(&b, '}');
    op(&b, 't');
    op(&b, 'R');
    glob(&b, "torch._utils", "_rebuild_tensor_v3"); /* untyped storage + dtype */
    op(&b, '(');
    storage_pid(&b, "UntypedStorage", "2", 8);
    k1(&b, 1);
    ints_tuple(&b, 1, one);
    ints_tuple(&b, 1, one);
    op(&b, 0x89);
    op(&b, '}');
    glob(&b, "torch", "float16");
    op(&b, 't');
    op(&b, 'R');
    op(&b, 'e');
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *r = l.r.root;
    CHECK(r && r->kind == IMGD_PICKLE_LIST && r->u.seq.n == 3);
    if (r && r->kind == IMGD_PICKLE_LIST && r->u.seq.n == 3) {
        for (size_t i = 0; i < 3; i++) CHECK(r->u.seq.items[i]->kind == IMGD_PICKLE_TENSOR);
        CHECK_EQ_INT(r->u.seq.items[1]->u.tensor->dtype, IMGD_DTYPE_I32);
        const imgd_pickle_tensor *v3 = r->u.seq.items[2]->u.tensor;
        CHECK_EQ_INT(v3->dtype, IMGD_DTYPE_F16);
        CHECK_EQ_INT(v3->elem_size, 2);
        CHECK(v3->storage->untyped);
        CHECK_EQ_INT(v3->storage->elem_size, 1);
    }
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_handles_pop_dup_and_pop_mark(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    k1(&b, 1);
    op(&b, '0'); /* POP */
    op(&b, '(');
    k1(&b, 9);
    k1(&b, 9);
    op(&b, '1'); /* POP_MARK */
    op(&b, '(');
    op(&b, '0'); /* POP on an empty frame discards the MARK */
    k1(&b, 5);
    op(&b, '2'); /* DUP */
    op(&b, 0x86);
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *r = l.r.root;
    CHECK(r && r->kind == IMGD_PICKLE_TUPLE && r->u.seq.n == 2);
    if (r && r->kind == IMGD_PICKLE_TUPLE && r->u.seq.n == 2) {
        CHECK(r->u.seq.items[0] == r->u.seq.items[1] && is_int(r->u.seq.items[0], 5));
    }
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_ignores_build_state_on_dicts(void) {
    /* torch state dicts carry `_metadata` as an attribute: BUILD must not add items */
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    glob(&b, "collections", "OrderedDict");
    op(&b, ')');
    op(&b, 'R');
    bu(&b, "a");
    k1(&b, 1);
    op(&b, 's');
    op(&b, '}');
    bu(&b, "_metadata");
    op(&b, '}');
    op(&b, 's');
    op(&b, 'b');
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    CHECK(l.r.root && l.r.root->kind == IMGD_PICKLE_DICT && l.r.root->u.seq.n == 1);
    CHECK(dget(l.r.root, "_metadata") == NULL);
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_reads_obj_and_newobj_ex(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 4);
    op(&b, '(');
    glob(&b, "builtins", "list"); /* OBJ: list([1]) */
    op(&b, ']');
    k1(&b, 1);
    op(&b, 'a');
    op(&b, 'o');
    glob(&b, "collections", "OrderedDict"); /* NEWOBJ_EX: OrderedDict.__new__ */
    op(&b, ')');
    op(&b, '}');
    op(&b, 0x92);
    op(&b, 0x86);
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    const imgd_pickle_value *r = l.r.root;
    CHECK(r && r->kind == IMGD_PICKLE_TUPLE && r->u.seq.n == 2);
    if (r && r->kind == IMGD_PICKLE_TUPLE && r->u.seq.n == 2) {
        CHECK(r->u.seq.items[0]->kind == IMGD_PICKLE_LIST && r->u.seq.items[0]->u.seq.n == 1);
        CHECK(r->u.seq.items[1]->kind == IMGD_PICKLE_DICT);
    }
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_allows_sparse_memo_within_cap(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    k1(&b, 1);
    op(&b, 'r');
    le(&b, (1u << 20) - 1, 4); /* the largest allowed key: an 8 MiB table at most */
    op(&b, '0');
    op(&b, 'j');
    le(&b, (1u << 20) - 1, 4);
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    CHECK(is_int(l.r.root, 1));
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_builds_containers_from_a_first_mark(void) {
    /* regression (libFuzzer): the stack was still unallocated when a MARK opened it */
    pb b = {0};
    raw(&b, "(t.");
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    CHECK(l.r.root && l.r.root->kind == IMGD_PICKLE_TUPLE && l.r.root->u.seq.n == 0);
    imgd_arena_free(&l.arena);
    pb_free(&b);
    raw(&b, "(d.");
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    CHECK(l.r.root && l.r.root->kind == IMGD_PICKLE_DICT);
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

/* ---- hostile: globals ---------------------------------------------------------------------- */

static void expect_unsafe_global(const char *mod, const char *name, const char *shown) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    glob(&b, mod, name);
    bu(&b, "echo pwned");
    op(&b, 0x85);
    op(&b, 'R');
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSAFE, shown);
    CHECK(strstr(imgd_last_error(), "Nothing was executed") != NULL);
    CHECK(strstr(imgd_last_error(), "arc/data.pkl at byte 2") != NULL);
    CHECK(strstr(imgd_last_error(), ".safetensors") != NULL);
    pb_free(&b);
}

static void test_pickle_refuses_os_system(void) {
    expect_unsafe_global("os", "system", "global 'os.system' is not allowed");
}

static void test_pickle_refuses_builtins_eval_and_exec(void) {
    expect_unsafe_global("builtins", "eval", "'builtins.eval'");
    expect_unsafe_global("builtins", "exec", "'builtins.exec'");
    expect_unsafe_global("builtins", "__import__", "'builtins.__import__'");
    expect_unsafe_global("builtins", "getattr", "'builtins.getattr'");
}

static void test_pickle_refuses_subprocess_popen(void) {
    expect_unsafe_global("subprocess", "Popen", "'subprocess.Popen'");
    expect_unsafe_global("subprocess", "check_output", "'subprocess.check_output'");
}

static void test_pickle_refuses_posix_and_nt_system(void) {
    expect_unsafe_global("posix", "system", "'posix.system'");
    expect_unsafe_global("nt", "system", "'nt.system'");
}

static void test_pickle_refuses_builtin_getattr(void) {
    expect_unsafe_global("__builtin__", "getattr", "'__builtin__.getattr'");
    expect_unsafe_global("__builtin__", "eval", "'__builtin__.eval'");
}

static void test_pickle_refuses_webbrowser_and_unknown_modules(void) {
    expect_unsafe_global("webbrowser", "open", "'webbrowser.open'");
    expect_unsafe_global("torch.nn.modules.linear", "Linear", "'torch.nn.modules.linear.Linear'");
    expect_unsafe_global("__main__", "Evil", "'__main__.Evil'");
    expect_unsafe_global("torch", "load", "'torch.load'");
    expect_unsafe_global("collections", "OrderedDic", "'collections.OrderedDic'");
}

static void test_pickle_refuses_stack_global_os_system(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 4);
    sbu(&b, "os");
    sbu(&b, "system");
    op(&b, 0x93);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSAFE, "'os.system'");
    pb_free(&b);
}

static void test_pickle_refuses_module_name_with_nul(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, 'c');
    put(&b, "builtins\0x\nlist\n", 16); /* "builtins\0x" must not match "builtins" */
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSAFE, "'builtins\\x00x.list'");
    pb_free(&b);
}

static void test_pickle_refuses_module_name_with_newline(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 4);
    sbu(&b, "collections\n");
    sbu(&b, "OrderedDict");
    op(&b, 0x93);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSAFE, "'collections\\x0a.OrderedDict'");
    pb_free(&b);
}

static void test_pickle_refuses_inst_os_system(void) {
    pb b = {0};
    raw(&b, "(S'ls'\nios\nsystem\n.");
    expect_fail(&b, IMGD_E_UNSAFE, "'os.system'");
    pb_free(&b);
}

static void test_pickle_refuses_stack_global_non_str(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 4);
    k1(&b, 1);
    sbu(&b, "system");
    op(&b, 0x93);
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "must be str");
    pb_free(&b);
}

static void test_pickle_refuses_unsupported_tensor_kinds(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    glob(&b, "torch", "ComplexFloatStorage");
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "ComplexFloatStorage");
    pb_free(&b);
}

/* ---- hostile: structure ------------------------------------------------------------------- */

static void test_pickle_refuses_empty_input(void) {
    pb b = {0};
    op(&b, '.');
    b.len = 0;
    expect_fail(&b, IMGD_E_FORMAT, "empty");
    pb_free(&b);
}

static void test_pickle_refuses_truncation_everywhere(void) {
    pb b = {0};
    torch_p2(&b);
    int wrong = 0;
    for (size_t cut = 0; cut < b.len; cut++) {
        imgd_arena a;
        imgd_arena_init(&a, 1 << 26);
        imgd_pickle_result r;
        imgd_status        st = imgd_pickle_load(&k_params, b.p, cut, &a, &r);
        if (st != IMGD_E_FORMAT) {
            fprintf(stderr, "cut %zu: %s\n", cut, imgd_status_name(st));
            wrong++;
        }
        imgd_arena_free(&a);
    }
    CHECK_EQ_INT(wrong, 0);
    pb_free(&b);
}

static void test_pickle_refuses_missing_stop(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, 'N');
    expect_fail(&b, IMGD_E_FORMAT, "without STOP");
    pb_free(&b);
}

static void test_pickle_refuses_stop_with_empty_stack(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "STOP with 0 value(s)");
    pb_free(&b);
}

static void test_pickle_refuses_stop_with_two_values(void) {
    pb b = {0};
    op(&b, 'N');
    op(&b, 'N');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "STOP with 2 value(s)");
    pb_free(&b);
}

static void test_pickle_refuses_stop_with_open_mark(void) {
    pb b = {0};
    op(&b, '(');
    op(&b, 'N');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "open MARK");
    pb_free(&b);
}

static void test_pickle_refuses_mark_underflow(void) {
    pb b = {0};
    op(&b, 'N');
    op(&b, 't');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "mark underflow");
    pb_free(&b);
    raw(&b, "N1.");
    expect_fail(&b, IMGD_E_FORMAT, "mark underflow");
    pb_free(&b);
    raw(&b, "]Ne."); /* APPENDS without MARK */
    expect_fail(&b, IMGD_E_FORMAT, "mark underflow");
    pb_free(&b);
}

static void test_pickle_refuses_stack_underflow(void) {
    pb b = {0};
    raw(&b, "R.");
    expect_fail(&b, IMGD_E_FORMAT, "stack underflow");
    pb_free(&b);
    raw(&b, "0.");
    expect_fail(&b, IMGD_E_FORMAT, "mark underflow");
    pb_free(&b);
    raw(&b, "2.");
    expect_fail(&b, IMGD_E_FORMAT, "stack underflow");
    pb_free(&b);
}

static void test_pickle_refuses_access_below_mark(void) {
    pb b = {0};
    raw(&b, "](Na."); /* APPEND's list is below the MARK: invisible, as in CPython */
    expect_fail(&b, IMGD_E_FORMAT, "above the last MARK");
    pb_free(&b);
}

static void test_pickle_refuses_get_of_unset_memo(void) {
    pb b = {0};
    raw(&b, "Nq\x01h\x02.");
    expect_fail(&b, IMGD_E_FORMAT, "memo key 2 was never set");
    pb_free(&b);
    raw(&b, "g77\n.");
    expect_fail(&b, IMGD_E_FORMAT, "memo key 77");
    pb_free(&b);
}

static void test_pickle_refuses_huge_memo_index(void) {
    pb b = {0};
    op(&b, 'N');
    op(&b, 'r');
    le(&b, 0xFFFFFFFF, 4);
    op(&b, '.');
    expect_fail(&b, IMGD_E_TOO_LARGE, "memo");
    pb_free(&b);
    raw(&b, "Np99999999999\n.");
    expect_fail(&b, IMGD_E_TOO_LARGE, "memo");
    pb_free(&b);
    raw(&b, "Np-1\n.");
    expect_fail(&b, IMGD_E_FORMAT, "memo key");
    pb_free(&b);
}

static void test_pickle_refuses_deep_mark_nesting(void) {
    pb b = {0};
    for (int i = 0; i < 70000; i++) op(&b, '(');
    op(&b, '.');
    expect_fail(&b, IMGD_E_TOO_LARGE, "MARK");
    pb_free(&b);
}

static void test_pickle_refuses_stack_overflow(void) {
    pb b = {0};
    for (int i = 0; i < (1 << 20) + 5; i++) op(&b, 'N');
    op(&b, '.');
    expect_fail(&b, IMGD_E_TOO_LARGE, "stack");
    pb_free(&b);
}

static void test_pickle_billion_laughs_stays_linear(void) {
    /* t = (t, t) a hundred times: 2^100 paths, but the VM only shares pointers */
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, 'N');
    for (int i = 0; i < 100; i++) {
        op(&b, '2');
        op(&b, 0x86);
    }
    op(&b, '.');
    loaded l;
    load(&b, &l);
    CHECK_STATUS(l.st, IMGD_OK);
    CHECK(l.r.n_values < 200);
    imgd_arena_free(&l.arena);
    pb_free(&b);
}

static void test_pickle_refuses_copy_bomb_at_arena_cap(void) {
    /* list(L) of a 1000-item list, 20000 times: 160 MB of copies from a 140 KB pickle */
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    op(&b, ']');
    op(&b, 'q');
    op(&b, 0);
    op(&b, '(');
    for (int i = 0; i < 1000; i++) op(&b, 'N');
    op(&b, 'e');
    glob(&b, "builtins", "list");
    op(&b, 'q');
    op(&b, 1);
    op(&b, '0');
    for (int i = 0; i < 20000; i++) {
        raw(&b, "h\x01h");
        op(&b, 0);
        op(&b, 0x85);
        op(&b, 'R');
        op(&b, '0');
    }
    op(&b, '.');
    expect_fail(&b, IMGD_E_TOO_LARGE, "pickle bomb");
    pb_free(&b);
}

static void test_pickle_refuses_over_ops_cap(void) {
    pb b = {0};
    for (int i = 0; i < 50; i++) raw(&b, "N0");
    raw(&b, "N.");
    imgd_pickle_params pp = k_params;
    pp.ops_max            = 20;
    expect_fail_with(&b, &pp, IMGD_E_TOO_LARGE, "opcodes");
    pb_free(&b);
}

static void test_pickle_refuses_over_size_cap(void) {
    pb b = {0};
    torch_p2(&b);
    imgd_pickle_params pp = k_params;
    pp.size_max           = 16;
    expect_fail_with(&b, &pp, IMGD_E_TOO_LARGE, "header_size_max");
    pb_free(&b);
}

/* ---- hostile: opcode arguments -------------------------------------------------------------- */

static void test_pickle_refuses_integers_wider_than_64_bits(void) {
    pb b = {0};
    op(&b, 0x8a);
    op(&b, 9);
    le(&b, 1, 8);
    op(&b, 1);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "wider than 64 bits");
    pb_free(&b);
    op(&b, 0x8b); /* LONG4 of 2 GB: refused before reading */
    le(&b, 0x7FFFFFFF, 4);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "wider than 64 bits");
    pb_free(&b);
    raw(&b, "L123456789012345678901234567890L\n.");
    expect_fail(&b, IMGD_E_UNSUPPORTED, "wider than 64 bits");
    pb_free(&b);
    op(&b, 0x8b);
    le(&b, 0xFFFFFFFF, 4);
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "negative");
    pb_free(&b);
}

static void test_pickle_refuses_lengths_past_the_end(void) {
    pb b = {0};
    op(&b, 'X');
    le(&b, 0xFFFFFFFF, 4);
    raw(&b, "abc.");
    expect_fail(&b, IMGD_E_FORMAT, "exceeds");
    pb_free(&b);
    op(&b, 0x8d);
    le(&b, UINT64_MAX, 8);
    raw(&b, "abc.");
    expect_fail(&b, IMGD_E_FORMAT, "exceeds");
    pb_free(&b);
    op(&b, 0x96);
    le(&b, (uint64_t)1 << 40, 8);
    raw(&b, ".");
    expect_fail(&b, IMGD_E_FORMAT, "exceeds");
    pb_free(&b);
    op(&b, 'C');
    op(&b, 200);
    raw(&b, "x.");
    expect_fail(&b, IMGD_E_FORMAT, "exceeds");
    pb_free(&b);
    op(&b, 'T');
    le(&b, 0x80000000u, 4);
    raw(&b, "x.");
    expect_fail(&b, IMGD_E_FORMAT, "negative BINSTRING length");
    pb_free(&b);
}

static void test_pickle_refuses_non_utf8_text(void) {
    pb b = {0};
    op(&b, 'X');
    le(&b, 2, 4);
    raw(&b, "\xc3\x28.");
    expect_fail(&b, IMGD_E_FORMAT, "UTF-8");
    pb_free(&b);
    op(&b, 0x8c);
    op(&b, 3);
    raw(&b, "\xed\xa0\x80."); /* a UTF-16 surrogate */
    expect_fail(&b, IMGD_E_FORMAT, "UTF-8");
    pb_free(&b);
    raw(&b, "V\\ud800\n.");
    expect_fail(&b, IMGD_E_FORMAT, "UTF-8");
    pb_free(&b);
}

static void test_pickle_refuses_bad_text_arguments(void) {
    pb b = {0};
    raw(&b, "I12x\n.");
    expect_fail(&b, IMGD_E_FORMAT, "decimal");
    pb_free(&b);
    raw(&b, "Fnope\n.");
    expect_fail(&b, IMGD_E_FORMAT, "FLOAT");
    pb_free(&b);
    raw(&b, "S'unterminated\n.");
    expect_fail(&b, IMGD_E_FORMAT, "quoted");
    pb_free(&b);
    raw(&b, "I42");
    expect_fail(&b, IMGD_E_FORMAT, "newline");
    pb_free(&b);
    raw(&b, "V\\u12\n.");
    expect_fail(&b, IMGD_E_FORMAT, "escape");
    pb_free(&b);
}

static void test_pickle_refuses_ext_and_buffer_opcodes(void) {
    pb b = {0};
    op(&b, 0x82);
    op(&b, 1);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "extension");
    pb_free(&b);
    op(&b, 0x84);
    le(&b, 1, 4);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "extension");
    pb_free(&b);
    op(&b, 0x97);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "out-of-band");
    pb_free(&b);
    op(&b, 'N');
    op(&b, 0x98);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "out-of-band");
    pb_free(&b);
}

static void test_pickle_refuses_unknown_protocol_and_opcode(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 6);
    op(&b, 'N');
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "protocol 6");
    pb_free(&b);
    op(&b, 'N');
    op(&b, 0xff);
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "unknown opcode 0xff");
    pb_free(&b);
}

static void test_pickle_refuses_frame_past_end(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 4);
    op(&b, 0x95);
    le(&b, 1000, 8);
    op(&b, 'N');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "exceeds");
    pb_free(&b);
}

static void test_pickle_refuses_bad_persistent_ids(void) {
    pb b = {0};
    raw(&b, "P0\n."); /* protocol-0 PERSID: a str, not a storage tuple */
    expect_fail(&b, IMGD_E_FORMAT, "persistent id");
    pb_free(&b);
    op(&b, '(');
    bu(&b, "module");
    op(&b, 'N');
    op(&b, 'N');
    op(&b, 'N');
    op(&b, 'N');
    op(&b, 't');
    op(&b, 'Q');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "'storage'");
    pb_free(&b);
    op(&b, '(');
    bu(&b, "storage");
    glob(&b, "builtins", "dict");
    bu(&b, "0");
    bu(&b, "cpu");
    k1(&b, 1);
    op(&b, 't');
    op(&b, 'Q');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "not a torch storage class");
    pb_free(&b);
}

static void test_pickle_refuses_bad_storage_keys(void) {
    const char *bad[] = {"../0", "a/b", "", "..", "x\\y", "0\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pb b = {0};
        storage_pid(&b, "FloatStorage", bad[i], 1);
        op(&b, '.');
        expect_fail(&b, IMGD_E_FORMAT, "storage key");
        pb_free(&b);
    }
}

static void test_pickle_refuses_negative_numel(void) {
    pb b = {0};
    storage_pid(&b, "FloatStorage", "0", -4);
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "numel");
    pb_free(&b);
}

static void expect_bad_rebuild(int off, int nd, const int *shape, const int *stride, imgd_status st,
                               const char *word) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    tensor_v2(&b, "FloatStorage", "0", 100, off, nd, shape, stride);
    op(&b, '.');
    expect_fail(&b, st, word);
    pb_free(&b);
}

static void test_pickle_refuses_bad_tensor_geometry(void) {
    int s2[2] = {2, 2}, neg[2] = {-1, 2}, ok[2] = {2, 1}, negst[2] = {2, -1};
    int nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    expect_bad_rebuild(-1, 2, s2, ok, IMGD_E_FORMAT, "offset");
    expect_bad_rebuild(0, 2, neg, ok, IMGD_E_FORMAT, "size[0]");
    expect_bad_rebuild(0, 2, s2, negst, IMGD_E_FORMAT, "stride[1]");
    expect_bad_rebuild(0, 9, nine, nine, IMGD_E_UNSUPPORTED, "dimensions");
    /* size and stride of different rank */
    pb b = {0};
    glob(&b, "torch._utils", "_rebuild_tensor_v2");
    op(&b, '(');
    storage_pid(&b, "FloatStorage", "0", 4);
    k1(&b, 0);
    ints_tuple(&b, 2, s2);
    ints_tuple(&b, 1, s2);
    op(&b, 0x89);
    op(&b, '}');
    op(&b, 't');
    op(&b, 'R');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "stride has 1");
    pb_free(&b);
}

static void test_pickle_refuses_rebuild_without_storage(void) {
    int s1[1] = {1};
    pb  b     = {0};
    glob(&b, "torch._utils", "_rebuild_tensor_v2");
    op(&b, '(');
    bu(&b, "not a storage");
    k1(&b, 0);
    ints_tuple(&b, 1, s1);
    ints_tuple(&b, 1, s1);
    op(&b, 0x89);
    op(&b, '}');
    op(&b, 't');
    op(&b, 'R');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "_rebuild_tensor needs");
    pb_free(&b);
}

static void test_pickle_refuses_untyped_storage_without_dtype(void) {
    int s1[1] = {1};
    pb  b     = {0};
    tensor_v2(&b, "UntypedStorage", "0", 4, 0, 1, s1, s1);
    op(&b, '.');
    expect_fail(&b, IMGD_E_UNSUPPORTED, "UntypedStorage");
    pb_free(&b);
}

static void test_pickle_refuses_calls_on_non_callables(void) {
    pb b = {0};
    bu(&b, "s"); /* "s"() */
    raw(&b, ")R.");
    expect_fail(&b, IMGD_E_FORMAT, "not callable");
    pb_free(&b);
    glob(&b, "torch", "float16"); /* a dtype is not callable */
    op(&b, ')');
    op(&b, 'R');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "cannot be called");
    pb_free(&b);
    glob(&b, "builtins", "list"); /* arguments must be a tuple */
    op(&b, ']');
    op(&b, 'R');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "not a tuple");
    pb_free(&b);
}

static void test_pickle_refuses_newobj_on_functions(void) {
    pb b = {0};
    op(&b, 0x80);
    op(&b, 2);
    glob(&b, "torch._utils", "_rebuild_tensor_v2");
    op(&b, ')');
    op(&b, 0x81);
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "not an allowed class");
    pb_free(&b);
}

static void test_pickle_refuses_from_type_with_disallowed_inner(void) {
    pb b = {0};
    glob(&b, "torch._tensor", "_rebuild_from_type_v2");
    op(&b, '(');
    glob(&b, "builtins", "dict");
    glob(&b, "torch", "Tensor");
    op(&b, ')');
    op(&b, '}');
    op(&b, 't');
    op(&b, 'R');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "not a tensor rebuild function");
    pb_free(&b);
}

static void test_pickle_refuses_unhashable_dict_keys(void) {
    pb b = {0};
    raw(&b, "}]Ns.");
    expect_fail(&b, IMGD_E_FORMAT, "unhashable list");
    pb_free(&b);
    raw(&b, "(}NNNd.");
    expect_fail(&b, IMGD_E_FORMAT, "unhashable dict");
    pb_free(&b);
    raw(&b, "(NNNd."); /* odd items */
    expect_fail(&b, IMGD_E_FORMAT, "odd number");
    pb_free(&b);
}

static void test_pickle_refuses_append_to_tuple_and_build_on_int(void) {
    pb b = {0};
    raw(&b, ")Na.");
    expect_fail(&b, IMGD_E_FORMAT, "adds items to a tuple");
    pb_free(&b);
    raw(&b, "K\x01Nb.");
    expect_fail(&b, IMGD_E_FORMAT, "BUILD on a int");
    pb_free(&b);
    raw(&b, "cbuiltins\nlist\nNb."); /* BUILD on a class object */
    expect_fail(&b, IMGD_E_FORMAT, "BUILD on a global");
    pb_free(&b);
}

static void test_pickle_refuses_bad_encode_arguments(void) {
    pb b = {0};
    glob(&b, "_codecs", "encode");
    bu(&b, "\xe2\x82\xac"); /* U+20AC is not Latin-1 */
    bu(&b, "latin1");
    op(&b, 0x86);
    op(&b, 'R');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "Latin-1");
    pb_free(&b);
    glob(&b, "_codecs", "encode");
    bu(&b, "x");
    bu(&b, "rot13");
    op(&b, 0x86);
    op(&b, 'R');
    op(&b, '.');
    expect_fail(&b, IMGD_E_FORMAT, "rot13");
    pb_free(&b);
}

int main(void) {
    RUN(test_pickle_reads_protocol2_state_dict);
    RUN(test_pickle_reads_protocol4_frame_memoize_stack_global);
    RUN(test_pickle_reads_protocol0_text_opcodes);
    RUN(test_pickle_reads_binary_numbers);
    RUN(test_pickle_reads_bytes_sets_and_protocol5);
    RUN(test_pickle_builds_allowed_containers);
    RUN(test_pickle_keeps_opaque_objects);
    RUN(test_pickle_rebuilds_parameters_and_subclasses);
    RUN(test_pickle_handles_pop_dup_and_pop_mark);
    RUN(test_pickle_ignores_build_state_on_dicts);
    RUN(test_pickle_reads_obj_and_newobj_ex);
    RUN(test_pickle_allows_sparse_memo_within_cap);
    RUN(test_pickle_builds_containers_from_a_first_mark);

    RUN(test_pickle_refuses_os_system);
    RUN(test_pickle_refuses_builtins_eval_and_exec);
    RUN(test_pickle_refuses_subprocess_popen);
    RUN(test_pickle_refuses_posix_and_nt_system);
    RUN(test_pickle_refuses_builtin_getattr);
    RUN(test_pickle_refuses_webbrowser_and_unknown_modules);
    RUN(test_pickle_refuses_stack_global_os_system);
    RUN(test_pickle_refuses_module_name_with_nul);
    RUN(test_pickle_refuses_module_name_with_newline);
    RUN(test_pickle_refuses_inst_os_system);
    RUN(test_pickle_refuses_stack_global_non_str);
    RUN(test_pickle_refuses_unsupported_tensor_kinds);
    RUN(test_pickle_refuses_empty_input);
    RUN(test_pickle_refuses_truncation_everywhere);
    RUN(test_pickle_refuses_missing_stop);
    RUN(test_pickle_refuses_stop_with_empty_stack);
    RUN(test_pickle_refuses_stop_with_two_values);
    RUN(test_pickle_refuses_stop_with_open_mark);
    RUN(test_pickle_refuses_mark_underflow);
    RUN(test_pickle_refuses_stack_underflow);
    RUN(test_pickle_refuses_access_below_mark);
    RUN(test_pickle_refuses_get_of_unset_memo);
    RUN(test_pickle_refuses_huge_memo_index);
    RUN(test_pickle_refuses_deep_mark_nesting);
    RUN(test_pickle_refuses_stack_overflow);
    RUN(test_pickle_billion_laughs_stays_linear);
    RUN(test_pickle_refuses_copy_bomb_at_arena_cap);
    RUN(test_pickle_refuses_over_ops_cap);
    RUN(test_pickle_refuses_over_size_cap);
    RUN(test_pickle_refuses_integers_wider_than_64_bits);
    RUN(test_pickle_refuses_lengths_past_the_end);
    RUN(test_pickle_refuses_non_utf8_text);
    RUN(test_pickle_refuses_bad_text_arguments);
    RUN(test_pickle_refuses_ext_and_buffer_opcodes);
    RUN(test_pickle_refuses_unknown_protocol_and_opcode);
    RUN(test_pickle_refuses_frame_past_end);
    RUN(test_pickle_refuses_bad_persistent_ids);
    RUN(test_pickle_refuses_bad_storage_keys);
    RUN(test_pickle_refuses_negative_numel);
    RUN(test_pickle_refuses_bad_tensor_geometry);
    RUN(test_pickle_refuses_rebuild_without_storage);
    RUN(test_pickle_refuses_untyped_storage_without_dtype);
    RUN(test_pickle_refuses_calls_on_non_callables);
    RUN(test_pickle_refuses_newobj_on_functions);
    RUN(test_pickle_refuses_from_type_with_disallowed_inner);
    RUN(test_pickle_refuses_unhashable_dict_keys);
    RUN(test_pickle_refuses_append_to_tuple_and_build_on_int);
    RUN(test_pickle_refuses_bad_encode_arguments);
    TEST_END();
}
