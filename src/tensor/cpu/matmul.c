/* CPU matmul: oneDNN matmul primitives created at plan time and executed at replay, or
 * OpenBLAS sgemm when the backend asks for it.
 *
 * At prepare the node's batched problem C[b..., M, N] = A[b..., M, K] B[b..., K, N] + bias is
 * normalised: when B has no batch (a linear layer) and A's batch rows are evenly spaced, the
 * batch folds into M (one large GEMM); otherwise trailing batch dims that are evenly spaced
 * in A, B and C become the primitive's batch dim and the leading ones are looped at replay
 * with the memory handles moved (no allocation). oneDNN runs with a user scratchpad whose
 * size joins the node's planned scratch. */
#include <cblas.h>

#include "base/alloc.h"
#include "base/error.h"
#include "cpu_impl.h"

typedef struct mm_state {
    bool             blas;
    dnnl_primitive_t prim;
    dnnl_memory_t    ma, mb, mc, mbias, mscr;
    cpu_reorder      ra, rb;  /* bf16 math: f32 operands -> bf16 buffers in scratch */
    size_t           scr_off; /* byte offset of oneDNN's scratchpad in the node's scratch */
    int64_t          M, N, K;
    int64_t          ib;                 /* batch handled by the primitive (1: 2-D) */
    int64_t          sam, sak, sbk, sbn; /* element strides of the matrices */
    int64_t          iba, ibb;           /* inner batch strides (0: broadcast) */
    int32_t          n_outer;            /* batch dims looped at replay */
    int64_t          oshape[IMGD_MAX_DIMS];
    int64_t          osa[IMGD_MAX_DIMS], osb[IMGD_MAX_DIMS], osc[IMGD_MAX_DIMS];
} mm_state;

/* ---- problem normalisation ------------------------------------------------------------- */

/* Broadcast strides of src for the batch dims of an output with nb batch dims. */
static void batch_strides(const imgd_tensor *src, int32_t nb, int64_t *s) {
    int32_t sb = src->n_dims - 2;
    for (int32_t d = 0; d < nb; d++) {
        int32_t i = d - (nb - sb);
        s[d]      = (i < 0 || src->shape[i] == 1) ? 0 : src->stride[i];
    }
}

/* Folds every batch dim of A into M when B is not batched and the rows line up. */
static bool fold_batch_into_m(mm_state *m, const imgd_tensor *n, const int64_t *sa,
                              const int64_t *sb) {
    int32_t nb   = n->n_dims - 2;
    int64_t rows = m->M, step = m->M > 1 ? m->sam : 0;
    for (int32_t d = 0; d < nb; d++)
        if (sb[d] != 0 && n->shape[d] != 1) return false;
    /* walk outward: each non-trivial dim must continue the row sequence */
    for (int32_t d = nb - 1; d >= 0; d--) {
        if (n->shape[d] == 1) continue;
        if (rows > 1 && step == 0) return false;
        if (rows == 1)
            step = sa[d];
        else if (sa[d] != step * rows)
            return false;
        rows *= n->shape[d];
    }
    if (rows > 1 && step == 0) return false;
    m->M   = rows;
    m->sam = rows > 1 ? step : m->sam;
    return true;
}

static void split_batch(mm_state *m, const imgd_tensor *n, const int64_t *sa, const int64_t *sb) {
    int32_t nb = n->n_dims - 2;
    int64_t sc[IMGD_MAX_DIMS];
    for (int32_t d = 0; d < nb; d++) sc[d] = n->stride[d];
    /* innermost batch group: merge dims while A, B and C stay evenly spaced */
    int32_t lo = nb;
    int64_t ib = 1, iba = 0, ibb = 0;
    while (lo > 0) {
        int32_t d = lo - 1;
        if (n->shape[d] == 1) {
            lo--;
            continue;
        }
        if (ib > 1 && !(sa[d] == iba * ib && sb[d] == ibb * ib && sc[d] == sc[lo] * n->shape[lo]))
            break;
        if (ib == 1) {
            iba = sa[d];
            ibb = sb[d];
        }
        ib *= n->shape[d];
        lo--;
    }
    m->ib      = ib;
    m->iba     = iba;
    m->ibb     = ibb;
    m->n_outer = 0;
    for (int32_t d = 0; d < lo; d++) {
        if (n->shape[d] == 1) continue;
        m->oshape[m->n_outer] = n->shape[d];
        m->osa[m->n_outer]    = sa[d];
        m->osb[m->n_outer]    = sb[d];
        m->osc[m->n_outer]    = sc[d];
        m->n_outer++;
    }
}

static void normalise(mm_state *m, const imgd_tensor *n) {
    const imgd_tensor *a = n->src[0], *b = n->src[1];
    int32_t            nb = n->n_dims - 2;
    int64_t            sa[IMGD_MAX_DIMS], sb[IMGD_MAX_DIMS];
    m->M   = n->shape[nb];
    m->N   = n->shape[nb + 1];
    m->K   = a->shape[a->n_dims - 1];
    m->sam = a->stride[a->n_dims - 2];
    m->sak = a->stride[a->n_dims - 1];
    m->sbk = b->stride[b->n_dims - 2];
    m->sbn = b->stride[b->n_dims - 1];
    batch_strides(a, nb, sa);
    batch_strides(b, nb, sb);
    if (fold_batch_into_m(m, n, sa, sb)) {
        m->ib      = 1;
        m->n_outer = 0;
        return;
    }
    split_batch(m, n, sa, sb);
}

/* ---- oneDNN -------------------------------------------------------------------------------- */

/* Strides for a dim of size 1 are irrelevant; give a plausible positive one. */
static int64_t dummy(int64_t a, int64_t b) {
    return IMGD_MAX(IMGD_MAX(a, b), 1);
}

static dnnl_status_t init_mds(const mm_state *m, dnnl_memory_desc_t *a, dnnl_memory_desc_t *b,
                              dnnl_memory_desc_t *c, dnnl_memory_desc_t *bias, bool has_bias) {
    int64_t M = m->M, N = m->N, K = m->K;
    int64_t sam = M > 1 ? m->sam : dummy(m->sak * K, 1), sak = K > 1 ? m->sak : dummy(sam * M, 1);
    int64_t sbk = K > 1 ? m->sbk : dummy(m->sbn * N, 1), sbn = N > 1 ? m->sbn : dummy(sbk * K, 1);
    dnnl_status_t s;
    if (m->ib == 1) {
        dnnl_dims_t da = {M, K}, sa = {sam, sak}, db = {K, N}, sb = {sbk, sbn};
        dnnl_dims_t dc = {M, N}, sc = {N, 1}, dbias = {1, N}, sbias = {N, 1};
        s = dnnl_memory_desc_init_by_strides(a, 2, da, dnnl_f32, sa);
        if (s == dnnl_success) s = dnnl_memory_desc_init_by_strides(b, 2, db, dnnl_f32, sb);
        if (s == dnnl_success) s = dnnl_memory_desc_init_by_strides(c, 2, dc, dnnl_f32, sc);
        if (s == dnnl_success && has_bias)
            s = dnnl_memory_desc_init_by_strides(bias, 2, dbias, dnnl_f32, sbias);
        return s;
    }
    int64_t     IB = m->ib;
    dnnl_dims_t da = {m->iba ? IB : 1, M, K},
                sa = {m->iba ? m->iba : dummy(sam * M, sak * K), sam, sak};
    dnnl_dims_t db = {m->ibb ? IB : 1, K, N},
                sb = {m->ibb ? m->ibb : dummy(sbk * K, sbn * N), sbk, sbn};
    dnnl_dims_t dc = {IB, M, N}, sc = {M * N, N, 1}, dbias = {1, 1, N}, sbias = {N, N, 1};
    s = dnnl_memory_desc_init_by_strides(a, 3, da, dnnl_f32, sa);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_strides(b, 3, db, dnnl_f32, sb);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_strides(c, 3, dc, dnnl_f32, sc);
    if (s == dnnl_success && has_bias)
        s = dnnl_memory_desc_init_by_strides(bias, 3, dbias, dnnl_f32, sbias);
    return s;
}

/* bf16 math: operands converted to bf16 (A dense, B in the layout oneDNN picks). */
static dnnl_status_t bf16_mds(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b,
                              dnnl_memory_desc_t *a16, dnnl_memory_desc_t *b16) {
    dnnl_format_tag_t dense = a->ndims == 2 ? dnnl_ab : dnnl_abc;
    dnnl_status_t     s = dnnl_memory_desc_init_by_tag(a16, a->ndims, a->dims, dnnl_bf16, dense);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_tag(b16, b->ndims, b->dims, dnnl_bf16, dnnl_format_tag_any);
    return s;
}

static dnnl_status_t create_pd(cpu_backend *cb, const mm_state *m, bool has_bias,
                               dnnl_memory_desc_t *a, dnnl_memory_desc_t *b,
                               dnnl_primitive_desc_t *pd) {
    dnnl_memory_desc_t    c, bias, a16, b16;
    dnnl_matmul_desc_t    md;
    dnnl_primitive_attr_t attr = NULL;
    bool                  bf16 = cb->math == IMGD_CPU_MATH_BF16;
    dnnl_status_t         s    = init_mds(m, a, b, &c, &bias, has_bias);
    if (s == dnnl_success && bf16) s = bf16_mds(a, b, &a16, &b16);
    if (s == dnnl_success)
        s = dnnl_matmul_desc_init(&md, bf16 ? &a16 : a, bf16 ? &b16 : b, has_bias ? &bias : NULL,
                                  &c);
    if (s == dnnl_success) s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success) s = dnnl_primitive_desc_create(pd, &md, attr, cb->engine, NULL);
    if (s == dnnl_success && m->ib > 1 && cpu_dnnl_is_ref(*pd)) {
        /* a batch layout only the reference kernel takes: loop 2-D products instead */
        dnnl_primitive_desc_destroy(*pd);
        *pd = NULL;
        s   = dnnl_unimplemented;
    }
    if (attr) dnnl_primitive_attr_destroy(attr);
    return s;
}

static dnnl_status_t make_mem(cpu_backend *cb, dnnl_primitive_desc_t pd, dnnl_query_t q,
                              dnnl_memory_t *out) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, q, 0);
    return dnnl_memory_create(out, md, cb->engine, DNNL_MEMORY_NONE);
}

static imgd_status dnnl_prepare(cpu_backend *cb, mm_state *m, imgd_tensor *n) {
    bool                  has_bias = n->src[2] != NULL;
    dnnl_primitive_desc_t pd       = NULL;
    dnnl_memory_desc_t    a, b;
    size_t                scratch = 0;
    dnnl_status_t         s       = create_pd(cb, m, has_bias, &a, &b, &pd);
    if (s != dnnl_success && m->ib > 1) {
        /* batch broadcast the primitive rejects: loop the inner batch too */
        m->oshape[m->n_outer] = m->ib;
        m->osa[m->n_outer]    = m->iba;
        m->osb[m->n_outer]    = m->ibb;
        m->osc[m->n_outer]    = m->M * m->N;
        m->n_outer++;
        m->ib = 1;
        s     = create_pd(cb, m, has_bias, &a, &b, &pd);
    }
    if (s == dnnl_success) s = dnnl_primitive_create(&m->prim, pd);
    if (s == dnnl_success) s = make_mem(cb, pd, dnnl_query_src_md, &m->ma);
    if (s == dnnl_success) s = make_mem(cb, pd, dnnl_query_weights_md, &m->mb);
    if (s == dnnl_success) s = make_mem(cb, pd, dnnl_query_dst_md, &m->mc);
    if (s == dnnl_success && cb->math == IMGD_CPU_MATH_BF16) {
        s = cpu_reorder_new(cb, &a, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), false,
                            &m->ra, &scratch);
        if (s == dnnl_success)
            s = cpu_reorder_new(cb, &b, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                                false, &m->rb, &scratch);
    }
    if (s == dnnl_success && has_bias) {
        const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
        s = dnnl_memory_create(&m->mbias, bmd, cb->engine, DNNL_MEMORY_NONE);
    }
    if (s == dnnl_success) {
        const dnnl_memory_desc_t *smd =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        size_t sz        = smd ? dnnl_memory_desc_get_size(smd) : 0;
        m->scr_off       = scratch;
        n->scratch_bytes = scratch + sz;
        if (sz) s = dnnl_memory_create(&m->mscr, smd, cb->engine, DNNL_MEMORY_NONE);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    return s == dnnl_success ? IMGD_OK : cpu_dnnl_fail(s, "creating a matmul primitive");
}

/* ---- OpenBLAS ------------------------------------------------------------------------------ */

/* How sgemm addresses a rows x cols matrix with element strides (s_row, s_col): row-major
 * (trans false) or column-major (trans true) with leading dim *ld. False when neither
 * layout fits (BLAS needs a unit stride and ld >= the other extent). */
static bool blas_layout(int64_t rows, int64_t cols, int64_t s_row, int64_t s_col, bool *trans,
                        int64_t *ld) {
    if (cols == 1 || s_col == 1) {
        *trans = false;
        *ld    = rows > 1 ? s_row : cols;
        return *ld >= IMGD_MAX(cols, 1);
    }
    if (rows == 1 || s_row == 1) {
        *trans = true;
        *ld    = cols > 1 ? s_col : rows;
        return *ld >= IMGD_MAX(rows, 1);
    }
    return false;
}

static bool blas_ok(const mm_state *m) {
    bool    t;
    int64_t ld;
    return blas_layout(m->M, m->K, m->sam, m->sak, &t, &ld) &&
           blas_layout(m->K, m->N, m->sbk, m->sbn, &t, &ld) && m->M < INT32_MAX &&
           m->N < INT32_MAX && m->K < INT32_MAX && ld < INT32_MAX;
}

static void blas_gemm(const mm_state *m, const float *a, const float *b, float *c,
                      const float *bias) {
    int     M = (int)m->M, N = (int)m->N, K = (int)m->K;
    bool    ta = false, tb = false;
    int64_t lda = 1, ldb = 1;
    (void)blas_layout(m->M, m->K, m->sam, m->sak, &ta, &lda); /* checked by blas_ok */
    (void)blas_layout(m->K, m->N, m->sbk, m->sbn, &tb, &ldb);
    if (bias)
        for (int i = 0; i < M; i++) memcpy(c + (size_t)i * (size_t)N, bias, (size_t)N * sizeof *c);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, 1.0f, a, (int)lda, b, (int)ldb, bias ? 1.0f : 0.0f, c, N);
}

/* ---- kernel entry points -------------------------------------------------------------------- */

imgd_status cpu_matmul_prepare(cpu_backend *cb, imgd_tensor *n) {
    mm_state *m = imgd_calloc(1, sizeof *m);
    if (!m) return imgd_fail(IMGD_E_NOMEM, "matmul: out of memory");
    n->backend_data = m;
    normalise(m, n);
    if (m->M == 0 || m->N == 0 || m->K == 0) return IMGD_OK; /* handled without a library */
    if (cb->gemm == IMGD_CPU_GEMM_OPENBLAS && blas_ok(m) && m->ib == 1) {
        m->blas = true;
        openblas_set_num_threads((int)cb->n_threads);
        return IMGD_OK;
    }
    return dnnl_prepare(cb, m, n);
}

void cpu_matmul_release(cpu_backend *cb, imgd_tensor *n) {
    IMGD_UNUSED(cb);
    mm_state *m = n->backend_data;
    if (!m) return;
    if (m->prim) dnnl_primitive_destroy(m->prim);
    dnnl_memory_t mems[] = {m->ma, m->mb, m->mc, m->mbias, m->mscr};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(mems); i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    cpu_reorder_free(&m->ra);
    cpu_reorder_free(&m->rb);
    imgd_free(m);
    n->backend_data = NULL;
}

/* Points the primitive at A and B, converting them into scratch first in bf16 math. */
static dnnl_status_t mm_operands(cpu_backend *cb, mm_state *m, const imgd_tensor *n, const float *a,
                                 const float *b) {
    unsigned char *scr = n->scratch;
    dnnl_status_t  s   = dnnl_success;
    if (m->ra.size) s = cpu_reorder_run(cb, &m->ra, a, scr, false);
    if (s == dnnl_success && m->rb.size) s = cpu_reorder_run(cb, &m->rb, b, scr, false);
    if (s == dnnl_success)
        s = dnnl_memory_set_data_handle(m->ma, m->ra.size ? scr + m->ra.off : (void *)(uintptr_t)a);
    if (s == dnnl_success)
        s = dnnl_memory_set_data_handle(m->mb, m->rb.size ? scr + m->rb.off : (void *)(uintptr_t)b);
    return s;
}

/* K == 0: the product is empty, so C is the bias (or zero). */
static void fill_bias(const imgd_tensor *n, const mm_state *m) {
    float       *c    = n->data;
    const float *bias = n->src[2] ? n->src[2]->data : NULL;
    int64_t      rows = imgd_tensor_numel(n) / (m->N ? m->N : 1);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < m->N; j++) c[r * m->N + j] = bias ? bias[j] : 0.0f;
}

imgd_status cpu_matmul(cpu_backend *cb, const imgd_tensor *n) {
    mm_state *m = n->backend_data;
    if (imgd_tensor_numel(n) == 0) return IMGD_OK;
    if (m->K == 0) {
        fill_bias(n, m);
        return IMGD_OK;
    }
    const float  *a = n->src[0]->data, *b = n->src[1]->data;
    float        *c     = n->data;
    const float  *bias  = n->src[2] ? n->src[2]->data : NULL;
    int64_t       outer = 1;
    dnnl_status_t s     = dnnl_success;
    for (int32_t d = 0; d < m->n_outer; d++) outer *= m->oshape[d];
    if (!m->blas) {
        if (bias) s = dnnl_memory_set_data_handle(m->mbias, (void *)(uintptr_t)bias);
        if (s == dnnl_success && m->mscr)
            s = dnnl_memory_set_data_handle(m->mscr, (unsigned char *)n->scratch + m->scr_off);
    }
    for (int64_t o = 0; o < outer && s == dnnl_success; o++) {
        int64_t oa = 0, ob = 0, oc = 0, r = o;
        for (int32_t d = m->n_outer - 1; d >= 0; d--) {
            int64_t i = r % m->oshape[d];
            r /= m->oshape[d];
            oa += i * m->osa[d];
            ob += i * m->osb[d];
            oc += i * m->osc[d];
        }
        if (m->blas) {
            blas_gemm(m, a + oa, b + ob, c + oc, bias);
            continue;
        }
        s = mm_operands(cb, m, n, a + oa, b + ob);
        if (s == dnnl_success) s = dnnl_memory_set_data_handle(m->mc, c + oc);
        dnnl_exec_arg_t args[5] = {
            {DNNL_ARG_SRC, m->ma}, {DNNL_ARG_WEIGHTS, m->mb}, {DNNL_ARG_DST, m->mc}};
        int na = 3;
        if (bias) args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, m->mbias};
        if (m->mscr) args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m->mscr};
        if (s == dnnl_success) s = dnnl_primitive_execute(m->prim, cb->stream, na, args);
    }
    if (s == dnnl_success && !m->blas) s = dnnl_stream_wait(cb->stream);
    return s == dnnl_success ? IMGD_OK : cpu_dnnl_fail(s, "executing matmul");
}
