/* CPU conv2d on oneDNN. At plan time a convolution primitive is created on channels-last
 * (NHWC) activations (or, for shapes without a fast NHWC kernel, on the blocked layout
 * oneDNN picks) with weights in the layout it picks, plus the reorder
 * primitives between our plain NCHW/OIHW tensors and those layouts; in bf16 math the
 * reorders also convert src and weights to bf16 (dst stays f32). At replay: reorder src and
 * weights into the node's scratch, convolve, reorder dst back. All buffers, including
 * oneDNN's own scratchpad, are planned scratch; nothing is allocated at replay.
 *
 * 1x1 convolutions with stride 1 and no padding run as one batched matmul,
 * Y[n] = W[O, C] X[n][C, H*W], with the bias [O, 1] added by a binary post-op (oneDNN 2.6
 * only has its reference kernel for a matmul bias of that shape), when oneDNN offers an
 * optimised kernel for it; otherwise as a convolution. */
#include <stdlib.h>

#include "base/alloc.h"
#include "base/error.h"
#include "cpu_impl.h"

typedef struct conv_state {
    dnnl_primitive_t prim;
    dnnl_memory_t    msrc, mwei, mbias, mdst, mscr;
    cpu_reorder      rsrc, rwei, rdst;
    size_t           conv_scr_off;
    bool             as_matmul;
} conv_state;

static dnnl_status_t plain_md(dnnl_memory_desc_t *md, const imgd_tensor *t, dnnl_format_tag_t tag) {
    dnnl_dims_t d = {0};
    for (int32_t i = 0; i < t->n_dims; i++) d[i] = t->shape[i];
    return dnnl_memory_desc_init_by_tag(md, t->n_dims, d, dnnl_f32, tag);
}

/* The convolution primitive with activations in layout `act` (nhwc, or any). Rejects
 * oneDNN's reference implementation so the caller can try another layout. */
static dnnl_status_t conv_pd(cpu_backend *cb, const imgd_tensor *n, dnnl_format_tag_t act,
                             dnnl_primitive_desc_t *pd) {
    const imgd_tensor      *x = n->src[0], *w = n->src[1];
    dnnl_data_type_t        dt = cb->math == IMGD_CPU_MATH_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t      src, wei, bias, dst;
    dnnl_dims_t             ds      = {x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
    dnnl_dims_t             dw      = {w->shape[0], w->shape[1], w->shape[2], w->shape[3]};
    dnnl_dims_t             dd      = {n->shape[0], n->shape[1], n->shape[2], n->shape[3]};
    dnnl_dims_t             db      = {w->shape[0]};
    dnnl_dims_t             strides = {n->ip[0], n->ip[1]}, pad = {n->ip[2], n->ip[3]};
    dnnl_convolution_desc_t cd;
    dnnl_primitive_attr_t   attr = NULL;
    dnnl_status_t           s    = dnnl_memory_desc_init_by_tag(&src, 4, ds, dt, act);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_tag(&wei, 4, dw, dt, dnnl_format_tag_any);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, act);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_tag(&bias, 1, db, dnnl_f32, dnnl_a);
    if (s == dnnl_success)
        s = dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                               &src, &wei, n->src[2] ? &bias : NULL, &dst, strides,
                                               pad, pad);
    if (s == dnnl_success) s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success) s = dnnl_primitive_desc_create(pd, &cd, attr, cb->engine, NULL);
    if (s == dnnl_success && cpu_dnnl_is_ref(*pd)) {
        dnnl_primitive_desc_destroy(*pd);
        *pd = NULL;
        s   = dnnl_unimplemented;
    }
    if (attr) dnnl_primitive_attr_destroy(attr);
    return s;
}

static dnnl_status_t prepare_conv(cpu_backend *cb, conv_state *c, imgd_tensor *n) {
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t    psrc, pwei, pdst;
    size_t                scratch = 0;
    /* channels-last measured ~20% faster than the blocked layout oneDNN 2.6 picks itself
     * for SD's 3x3 convolutions; "any" covers the shapes it has no fast kernel for */
    dnnl_status_t s = conv_pd(cb, n, dnnl_nhwc, &pd);
    if (s != dnnl_success) s = conv_pd(cb, n, dnnl_format_tag_any, &pd);
    if (s == dnnl_success) s = plain_md(&psrc, n->src[0], dnnl_nchw);
    if (s == dnnl_success) s = plain_md(&pwei, n->src[1], dnnl_oihw);
    if (s == dnnl_success) s = plain_md(&pdst, n, dnnl_nchw);
    const dnnl_memory_desc_t *csrc = NULL, *cwei = NULL, *cdst = NULL, *cscr = NULL;
    if (s == dnnl_success) {
        csrc = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        cwei = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        cdst = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        cscr = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        s    = dnnl_primitive_create(&c->prim, pd);
    }
    if (s == dnnl_success) s = cpu_reorder_new(cb, &psrc, csrc, false, &c->rsrc, &scratch);
    if (s == dnnl_success) s = cpu_reorder_new(cb, &pwei, cwei, false, &c->rwei, &scratch);
    if (s == dnnl_success) s = cpu_reorder_new(cb, &pdst, cdst, true, &c->rdst, &scratch);
    if (s == dnnl_success) s = cpu_dnnl_mem(cb, csrc, &c->msrc);
    if (s == dnnl_success) s = cpu_dnnl_mem(cb, cwei, &c->mwei);
    if (s == dnnl_success) s = cpu_dnnl_mem(cb, cdst, &c->mdst);
    if (s == dnnl_success && n->src[2]) {
        s = cpu_dnnl_mem(cb, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1), &c->mbias);
    }
    if (s == dnnl_success && cscr && dnnl_memory_desc_get_size(cscr) > 0) {
        s               = cpu_dnnl_mem(cb, cscr, &c->mscr);
        c->conv_scr_off = scratch;
        scratch += cpu_align_up(dnnl_memory_desc_get_size(cscr));
    }
    n->scratch_bytes = scratch;
    if (pd) dnnl_primitive_desc_destroy(pd);
    return s;
}

/* 1x1, stride 1, no padding: per sample Y[O, HW] = W[O, C] X[C, HW] + bias[O, 1]. */
static dnnl_status_t prepare_matmul(cpu_backend *cb, conv_state *c, imgd_tensor *n) {
    const imgd_tensor *x = n->src[0];
    int64_t            N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    int64_t            O = n->shape[1];
    dnnl_memory_desc_t a, b, d, bias;
    dnnl_dims_t        da = {1, O, C}, sa = {O * C, C, 1}, db = {N, C, HW}, sb = {C * HW, HW, 1};
    dnnl_dims_t        dd = {N, O, HW}, sd = {O * HW, HW, 1}, dbias = {1, O, 1}, sbias = {O, 1, 1};
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd   = NULL;
    if (cb->math == IMGD_CPU_MATH_BF16) return dnnl_unimplemented; /* conv path converts */
    dnnl_status_t s = dnnl_memory_desc_init_by_strides(&a, 3, da, dnnl_f32, sa);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_strides(&b, 3, db, dnnl_f32, sb);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_strides(&d, 3, dd, dnnl_f32, sd);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_strides(&bias, 3, dbias, dnnl_f32, sbias);
    if (s == dnnl_success) s = dnnl_matmul_desc_init(&md, &a, &b, NULL, &d);
    if (s == dnnl_success) s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success && n->src[2]) {
        dnnl_post_ops_t po = NULL;
        s                  = dnnl_post_ops_create(&po);
        if (s == dnnl_success) s = dnnl_post_ops_append_binary(po, dnnl_binary_add, &bias);
        if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(attr, po);
        if (po) dnnl_post_ops_destroy(po);
    }
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success) s = dnnl_primitive_desc_create(&pd, &md, attr, cb->engine, NULL);
    if (s == dnnl_success && cpu_dnnl_is_ref(pd)) s = dnnl_unimplemented;
    if (s == dnnl_success) s = dnnl_primitive_create(&c->prim, pd);
    if (s == dnnl_success) s = cpu_dnnl_mem(cb, &a, &c->mwei);
    if (s == dnnl_success) s = cpu_dnnl_mem(cb, &b, &c->msrc);
    if (s == dnnl_success) s = cpu_dnnl_mem(cb, &d, &c->mdst);
    if (s == dnnl_success && n->src[2]) s = cpu_dnnl_mem(cb, &bias, &c->mbias);
    if (s == dnnl_success) {
        const dnnl_memory_desc_t *smd =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        n->scratch_bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
        if (n->scratch_bytes) s = cpu_dnnl_mem(cb, smd, &c->mscr);
    }
    c->as_matmul = s == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return s;
}

static void destroy_state(conv_state *c) {
    if (c->prim) dnnl_primitive_destroy(c->prim);
    dnnl_memory_t mems[] = {c->msrc, c->mwei, c->mbias, c->mdst, c->mscr};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(mems); i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    cpu_reorder_free(&c->rsrc);
    cpu_reorder_free(&c->rwei);
    cpu_reorder_free(&c->rdst);
    memset(c, 0, sizeof *c);
}

imgd_status cpu_conv2d_prepare(cpu_backend *cb, imgd_tensor *n) {
    conv_state *c = imgd_calloc(1, sizeof *c);
    if (!c) return imgd_fail(IMGD_E_NOMEM, "conv2d: out of memory");
    n->backend_data      = c;
    const imgd_tensor *w = n->src[1];
    bool one             = w->shape[2] == 1 && w->shape[3] == 1 && n->ip[0] == 1 && n->ip[1] == 1 &&
               n->ip[2] == 0 && n->ip[3] == 0 && getenv("IMGD_CPU_CONV1X1_AS_CONV") == NULL;
    if (one && prepare_matmul(cb, c, n) == dnnl_success) return IMGD_OK;
    destroy_state(c);
    n->scratch_bytes = 0;
    dnnl_status_t s  = prepare_conv(cb, c, n);
    return s == dnnl_success ? IMGD_OK : cpu_dnnl_fail(s, "creating a conv2d primitive");
}

void cpu_conv2d_release(cpu_backend *cb, imgd_tensor *n) {
    IMGD_UNUSED(cb);
    conv_state *c = n->backend_data;
    if (!c) return;
    destroy_state(c);
    imgd_free(c);
    n->backend_data = NULL;
}

imgd_status cpu_conv2d(cpu_backend *cb, const imgd_tensor *n) {
    conv_state    *c       = n->backend_data;
    unsigned char *scratch = n->scratch;
    void          *x = n->src[0]->data, *w = n->src[1]->data;
    dnnl_status_t  s = dnnl_success;
    if (imgd_tensor_numel(n) == 0) return IMGD_OK;
    if (c->rsrc.size) s = cpu_reorder_run(cb, &c->rsrc, x, scratch, false);
    if (s == dnnl_success && c->rwei.size) s = cpu_reorder_run(cb, &c->rwei, w, scratch, false);
    if (s == dnnl_success)
        s = dnnl_memory_set_data_handle(c->msrc, c->rsrc.size ? scratch + c->rsrc.off : x);
    if (s == dnnl_success)
        s = dnnl_memory_set_data_handle(c->mwei, c->rwei.size ? scratch + c->rwei.off : w);
    if (s == dnnl_success)
        s = dnnl_memory_set_data_handle(c->mdst, c->rdst.size ? scratch + c->rdst.off : n->data);
    if (s == dnnl_success && c->mbias) s = dnnl_memory_set_data_handle(c->mbias, n->src[2]->data);
    if (s == dnnl_success && c->mscr)
        s = dnnl_memory_set_data_handle(c->mscr,
                                        c->as_matmul ? scratch : scratch + c->conv_scr_off);
    dnnl_exec_arg_t args[5];
    int             na = 0;
    args[na++]         = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->as_matmul ? c->mwei : c->msrc};
    args[na++]         = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->as_matmul ? c->msrc : c->mwei};
    args[na++]         = (dnnl_exec_arg_t){DNNL_ARG_DST, c->mdst};
    if (c->mbias)
        args[na++] = (dnnl_exec_arg_t){
            c->as_matmul ? DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1 : DNNL_ARG_BIAS,
            c->mbias};
    if (c->mscr) args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->mscr};
    if (s == dnnl_success) s = dnnl_primitive_execute(c->prim, cb->stream, na, args);
    if (s == dnnl_success && c->rdst.size)
        s = cpu_reorder_run(cb, &c->rdst, n->data, scratch, true);
    if (s == dnnl_success) s = dnnl_stream_wait(cb->stream);
    return s == dnnl_success ? IMGD_OK : cpu_dnnl_fail(s, "executing conv2d");
}
