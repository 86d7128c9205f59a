/* imgd_convert: any readable weights to a verified safetensors file. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "formats/weights.h"

#define CHUNK_ELEMS (1u << 20) /* elements converted per step (a multiple of 256) */

imgd_convert_params imgd_convert_params_default(void) {
    imgd_convert_params p;
    memset(&p, 0, sizeof p);
    p.dtype = -1;
    return p;
}

static bool is_ema(const char *name) {
    return strncmp(name, "model_ema.", 10) == 0;
}

/* Output dtype of a tensor: quantized tensors become F32 (or the target), float tensors
 * the target when one is given, everything else keeps its dtype. */
static imgd_dtype out_dtype(imgd_dtype in, int32_t target) {
    const imgd_dtype_traits *t = imgd_dtype_traits_of(in);
    if (target >= 0 && t->is_float) return (imgd_dtype)target;
    if (t->is_quant) return IMGD_DTYPE_F32;
    return in;
}

/* Streams tensor t converted to dt through `sink` in chunks. */
typedef imgd_status (*sink_fn)(void *ctx, const void *data, size_t n);

static imgd_status emit_tensor(const imgd_wtensor *t, imgd_dtype dt, float *f32, uint8_t *out,
                               sink_fn sink, void *ctx) {
    if (dt == t->dtype) {
        uint64_t off = 0;
        while (off < t->nbytes) {
            size_t      n  = (size_t)IMGD_MIN(t->nbytes - off, (uint64_t)CHUNK_ELEMS * 4);
            imgd_status st = sink(ctx, t->data + off, n);
            if (st != IMGD_OK) return st;
            off += n;
        }
        return IMGD_OK;
    }
    const imgd_dtype_traits *in = imgd_dtype_traits_of(t->dtype);
    uint64_t                 numel;
    if (!imgd_shape_numel(t->n_dims, t->shape, &numel))
        return imgd_fail(IMGD_E_INTERNAL, "tensor '%s': bad shape", t->name);
    size_t out_sz = imgd_dtype_traits_of(dt)->block_bytes;
    for (uint64_t done = 0; done < numel; done += CHUNK_ELEMS) {
        uint64_t    n   = IMGD_MIN(numel - done, (uint64_t)CHUNK_ELEMS);
        const void *src = t->data + done / in->block_elems * in->block_bytes;
        imgd_status st  = imgd_dtype_to_f32(t->dtype, src, n, f32);
        if (st == IMGD_OK) st = imgd_dtype_from_f32(dt, f32, n, out);
        if (st == IMGD_OK) st = sink(ctx, out, (size_t)n * out_sz);
        if (st != IMGD_OK) return imgd_fail_prefix(st, "tensor '%s'", t->name);
    }
    return IMGD_OK;
}

/* ---- write ------------------------------------------------------------------------ */

typedef struct write_ctx {
    imgd_st_writer  *wr;
    imgd_progress_fn progress;
    void            *user;
    uint64_t         done, total;
} write_ctx;

static imgd_status write_sink(void *vctx, const void *data, size_t n) {
    write_ctx  *c  = vctx;
    imgd_status st = imgd_st_writer_write(c->wr, data, n);
    if (st != IMGD_OK) return st;
    c->done += n;
    if (c->progress && !c->progress(c->done, c->total, c->user))
        return imgd_fail(IMGD_E_CANCELLED, "conversion cancelled");
    return IMGD_OK;
}

/* ---- verify ----------------------------------------------------------------------- */

typedef struct verify_ctx {
    const uint8_t *expect;
    uint64_t       off, size;
} verify_ctx;

static imgd_status verify_sink(void *vctx, const void *data, size_t n) {
    verify_ctx *c = vctx;
    if (n > c->size - c->off || memcmp(c->expect + c->off, data, n) != 0)
        return imgd_fail(IMGD_E_INTERNAL, "written bytes differ from the source at byte %llu",
                         (unsigned long long)c->off);
    c->off += n;
    return IMGD_OK;
}

static imgd_status verify(const char *tmp, const imgd_weights *in, const bool *keep, int32_t target,
                          float *f32, uint8_t *buf) {
    imgd_weights *out = NULL;
    imgd_status   st  = imgd_weights_open(tmp, NULL, &out);
    if (st != IMGD_OK) return imgd_fail_prefix(IMGD_E_INTERNAL, "verification: cannot reread");
    size_t j = 0;
    for (size_t i = 0; i < in->n && st == IMGD_OK; i++) {
        if (!keep[i]) continue;
        const imgd_wtensor *a = &in->t[i];
        const imgd_wtensor *b = j < out->n ? &out->t[j] : NULL;
        j++;
        imgd_dtype dt = out_dtype(a->dtype, target);
        if (!b || strcmp(a->name, b->name) != 0 || b->dtype != dt || b->n_dims != a->n_dims ||
            memcmp(a->shape, b->shape, sizeof a->shape) != 0) {
            st = imgd_fail(IMGD_E_INTERNAL, "verification: tensor '%s' was not written as expected",
                           a->name);
            break;
        }
        verify_ctx vc = {b->data, 0, b->nbytes};
        st            = emit_tensor(a, dt, f32, buf, verify_sink, &vc);
        if (st == IMGD_OK && vc.off != b->nbytes)
            st = imgd_fail(IMGD_E_INTERNAL, "verification: tensor '%s' has extra bytes", a->name);
        if (st != IMGD_OK) st = imgd_fail_prefix(IMGD_E_INTERNAL, "verification of '%s'", tmp);
    }
    if (st == IMGD_OK && j != out->n)
        st = imgd_fail(IMGD_E_INTERNAL, "verification: output has %zu tensors, expected %zu",
                       out->n, j);
    imgd_weights_free(out);
    return st;
}

/* ---- driver ----------------------------------------------------------------------- */

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static imgd_status check_params(const char *in, const char *out, const imgd_convert_params *p) {
    if (!in || !out) return imgd_fail(IMGD_E_INVALID_ARG, "imgd_convert: in and out are required");
    if (p->dtype != -1 && p->dtype != IMGD_DTYPE_F32 && p->dtype != IMGD_DTYPE_F16 &&
        p->dtype != IMGD_DTYPE_BF16)
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "convert: target dtype must be f32, f16 or bf16 (got %s)",
                         imgd_dtype_name((imgd_dtype)p->dtype));
    if (same_file(in, out))
        return imgd_fail(IMGD_E_INVALID_ARG,
                         "convert: output '%s' is the input file; choose another output path", out);
    return IMGD_OK;
}

imgd_status imgd_convert(const char *in, const char *out, const imgd_convert_params *params,
                         imgd_convert_result *result) {
    imgd_convert_params p  = params ? *params : imgd_convert_params_default();
    imgd_status         st = check_params(in, out, &p);
    if (st != IMGD_OK) return st;
    imgd_weights   *w    = NULL;
    imgd_st_writer *wr   = NULL;
    imgd_st_entry  *ents = NULL;
    bool           *keep = NULL;
    float          *f32  = NULL;
    uint8_t        *buf  = NULL;
    char           *tmp  = NULL;
    st                   = imgd_weights_open(in, &p.open, &w);
    if (st != IMGD_OK) return st;
    ents = imgd_calloc(w->n ? w->n : 1, sizeof *ents);
    keep = imgd_calloc(w->n ? w->n : 1, sizeof *keep);
    f32  = imgd_malloc((size_t)CHUNK_ELEMS * sizeof *f32);
    buf  = imgd_malloc((size_t)CHUNK_ELEMS * 8);
    tmp  = imgd_malloc(strlen(out) + 32);
    if (!ents || !keep || !f32 || !buf || !tmp) {
        st = imgd_fail(IMGD_E_NOMEM, "convert: out of memory");
        goto fail;
    }
    imgd_fmt(tmp, strlen(out) + 32, "%s.imgd-tmp-%ld", out, (long)getpid());
    size_t n_out = 0, pruned = 0;
    for (size_t i = 0; i < w->n; i++) {
        keep[i] = !(p.prune_ema && is_ema(w->t[i].name));
        if (!keep[i]) {
            pruned++;
            continue;
        }
        imgd_st_entry *e = &ents[n_out++];
        e->name          = w->t[i].name;
        e->dtype         = out_dtype(w->t[i].dtype, p.dtype);
        e->n_dims        = w->t[i].n_dims;
        memcpy(e->shape, w->t[i].shape, sizeof e->shape);
    }
    st = imgd_st_writer_open(tmp, ents, n_out, w->meta_k, w->meta_v, w->n_meta, &wr);
    if (st != IMGD_OK) goto fail;
    write_ctx wc = {wr, p.progress, p.user, 0, imgd_st_writer_total(wr)};
    for (size_t i = 0; i < w->n && st == IMGD_OK; i++)
        if (keep[i])
            st =
                emit_tensor(&w->t[i], out_dtype(w->t[i].dtype, p.dtype), f32, buf, write_sink, &wc);
    uint64_t total = imgd_st_writer_total(wr);
    if (st != IMGD_OK) goto fail;
    st = imgd_st_writer_close(wr);
    wr = NULL;
    if (st == IMGD_OK) st = verify(tmp, w, keep, p.dtype, f32, buf);
    if (st == IMGD_OK && rename(tmp, out) != 0)
        st = imgd_fail(IMGD_E_IO, "%s: cannot move the finished file into place: %s", out,
                       strerror(errno));
    if (st != IMGD_OK) {
        (void)remove(tmp); /* best effort: the error is already set */
        goto fail;
    }
    if (result) {
        result->tensors        = n_out;
        result->tensors_pruned = pruned;
        result->bytes          = total;
    }
fail:
    imgd_st_writer_abort(wr);
    imgd_free(tmp);
    imgd_free(buf);
    imgd_free(f32);
    imgd_free(keep);
    imgd_free(ents);
    imgd_weights_free(w);
    return st;
}
