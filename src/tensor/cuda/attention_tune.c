/* The path of each attention node the tensor-core flash kernel takes (IMGD_CUDA_ATTN).
 *
 * auto (the default in f16/bf16 math from compute capability 8.0) and tune: the candidates
 * are the mma kernel with one and with two 16-row query tiles per warp (only the one
 * IMGD_CUDA_ATTN_MTILES names, when set) and cuDNN's fused SDPA where it takes the node
 * (attention_cudnn.c). Each is run on the node's shapes and strides in buffers of its own
 * (zeros: the speed does not depend on the values), once to warm up and CUDA_TUNE_REPS times
 * between two events (tune.c), and the fastest is kept. Which card, which cuDNN and which shape
 * decide it, so it is measured where it runs rather than guessed: on an H100 the mma kernel ran SD
 * 1.5's self-attention (head dim 40) at 86 TFLOP/s, FLUX's (128) at 160. A choice is
 * remembered per (shapes, strides, dtypes), so a UNet's repeated blocks and the next plans of
 * the same model time nothing. auto times nodes of at least CUDA_ATTN_TUNE_FLOP (smaller ones
 * take a few microseconds whatever runs them) and gives the others mma with its per-head-dim
 * tiles; tune times every node. No device memory for the buffers: not timed.
 *
 * cudnn: cuDNN's SDPA for every node it takes, mma for the others, nothing timed.
 *
 * IMGD_CUDA_VERBOSE=1 prints each node's timings and choice, or why it was not timed. */
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/log.h"
#include "cuda_impl.h"

#define CUDA_ATTN_TUNE_FLOP 1e8

enum {
    PICK_MMA1,
    PICK_MMA2,
    PICK_CUDNN,
    PICK_N
};

static const char *const k_pick_names[PICK_N] = {"mma1", "mma2", "cuDNN SDPA"};

/* What decides the timings: every operand's shape, strides and dtype (output, q, k, v,
 * mask). Zero-filled before it is set, so it compares with memcmp. */
typedef struct attn_key {
    int64_t shape[5][4], stride[5][4];
    int32_t dt[5];
    int32_t present;
} attn_key;

typedef struct cuda_attn_pick {
    attn_key key;
    int32_t  pick;
    float    ms[PICK_N]; /* < 0: not a candidate, or it failed */
} cuda_attn_pick;

size_t cuda_attn_pick_size(void) {
    return sizeof(cuda_attn_pick);
}

static void make_key(const imgd_tensor *n, attn_key *k) {
    memset(k, 0, sizeof *k);
    const imgd_tensor *ts[5] = {n, n->src[0], n->src[1], n->src[2], n->src[3]};
    for (int i = 0; i < 5; i++) {
        if (!ts[i]) continue;
        k->present |= 1 << i;
        k->dt[i] = cuda_cuk_of(ts[i]);
        for (int32_t d = 0; d < ts[i]->n_dims && d < 4; d++) {
            k->shape[i][d]  = ts[i]->shape[d];
            k->stride[i][d] = ts[i]->stride[d];
        }
    }
}

static double attn_flop(const imgd_tensor *n) {
    const imgd_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2];
    return 2.0 * (double)q->shape[0] * (double)q->shape[2] * (double)q->shape[1] *
           (double)k->shape[1] * (double)(q->shape[3] + v->shape[3]);
}

/* Bytes from t's first element to one past its last (its strides may be views' strides). */
static size_t extent_bytes(const imgd_tensor *t) {
    int64_t last = 0;
    for (int32_t d = 0; d < t->n_dims; d++)
        if (t->shape[d] > 0) last += (t->shape[d] - 1) * t->stride[d];
    return cuda_align_up((size_t)(last + 1) * (cuda_cuk_of(t) == CUK_F32 ? 4u : 2u));
}

/* One run of candidate c on the buffers (out, q, k, v, mask at p[0..4], cuDNN's workspace at
 * ws). */
typedef struct attn_run {
    cuda_backend      *cb;
    const imgd_tensor *n;
    int                c;
    void *const       *p;
    void              *ws;
} attn_run;

/* false when it failed (the cause is cleared: a refused candidate is not an error) */
static bool run_once(void *ctx) {
    const attn_run *r = ctx;
    void *const    *p = r->p;
#ifdef IMGD_HAVE_CUDNN
    if (r->c == PICK_CUDNN) {
        void *ptrs[4] = {p[1], p[2], p[3], p[0]};
        return cuda_attn_cudnn_exec(r->cb, cuda_node_of(r->n), r->n->fp[0], ptrs, r->ws) ==
               CUDNN_STATUS_SUCCESS;
    }
#endif
    const void *src[4] = {p[1], p[2], p[3], p[4]};
    if (cuda_attn_tc_launch(r->cb, r->n, p[0], src, r->c == PICK_MMA2 ? 2 : 1) == cudaSuccess)
        return true;
    (void)cudaGetLastError();
    return false;
}

/* Times the candidates of node n (cand[c] true) into ms; false, with why, when the buffers
 * could not be had. */
static bool time_node(cuda_backend *cb, const imgd_tensor *n, const bool cand[PICK_N],
                      float ms[PICK_N], char *why, size_t why_cap) {
    const imgd_tensor *ts[5]  = {n, n->src[0], n->src[1], n->src[2], n->src[3]};
    size_t             off[6] = {0}, ws_bytes = cand[PICK_CUDNN] ? cuda_node_of(n)->ws_bytes : 0;
    for (int i = 0; i < 5; i++) off[i + 1] = off[i] + (ts[i] ? extent_bytes(ts[i]) : 0);
    cuda_tune_bufs tb;
    for (int c = 0; c < PICK_N; c++) ms[c] = -1.0f;
    if (!cuda_tune_bufs_new(cb, CUDA_TUNER_ATTN, off[5] + cuda_align_up(ws_bytes), &tb, why,
                            why_cap))
        return false;
    void *p[5];
    for (int i = 0; i < 5; i++) p[i] = ts[i] ? tb.buf + off[i] : NULL;
    for (int c = 0; c < PICK_N; c++)
        if (cand[c]) {
            attn_run r = {cb, n, c, p, ws_bytes ? tb.buf + off[5] : NULL};
            ms[c]      = cuda_tune_time(cb, &tb, run_once, &r);
        }
    cuda_tune_bufs_free(&tb);
    return true;
}

/* The fastest timed candidate, or -1 when none ran. */
static int fastest(const float ms[PICK_N]) {
    int best = -1;
    for (int c = 0; c < PICK_N; c++)
        if (ms[c] >= 0.0f && (best < 0 || ms[c] < ms[best])) best = c;
    return best;
}

/* Sets node n's path to candidate c (its cuDNN plan already made when c is PICK_CUDNN). */
static void apply(cuda_node *ns, imgd_tensor *n, int c) {
    if (c == PICK_CUDNN) {
        ns->attn_cudnn   = true;
        ns->attn_wmma    = false;
        n->scratch_bytes = ns->ws_bytes;
        return;
    }
#ifdef IMGD_HAVE_CUDNN
    cuda_attn_cudnn_release(ns);
#endif
    ns->ws_bytes = 0;
    ns->mtiles   = c == PICK_MMA2 ? 2 : c == PICK_MMA1 ? 1 : 0;
}

static void print_node(const imgd_tensor *n, const char *path, const float *ms, const char *note) {
    fprintf(stderr, "cuda: attention [%lld, %lld, %lld, %lld] x %lld keys: %s",
            (long long)n->shape[0], (long long)n->shape[1], (long long)n->shape[2],
            (long long)n->shape[3], (long long)n->src[1]->shape[1], path);
    const char *sep = " (";
    for (int c = 0; ms && c < PICK_N; c++) {
        if (ms[c] < 0.0f) continue;
        fprintf(stderr, "%s%s %.3f ms", sep, k_pick_names[c], (double)ms[c]);
        sep = ", ";
    }
    if (ms && sep[0] == ',') fprintf(stderr, ")");
    fprintf(stderr, "%s%s\n", note && *note ? "; " : "", note ? note : "");
}

typedef struct tune_counts {
    int timed, remembered, untimed, per_pick[PICK_N];
} tune_counts;

/* auto / tune: the fastest candidate of node n (an attention node the mma kernel takes). */
static imgd_status choose_timed(cuda_backend *cb, imgd_tensor *n, tune_counts *tc) {
    cuda_node *ns       = cuda_node_of(n);
    char       why[192] = "";
    double     flop     = attn_flop(n);
    if (cb->attn_tune == 1 && flop < CUDA_ATTN_TUNE_FLOP) {
        tc->untimed++;
        if (cb->verbose) {
            (void)snprintf(why, sizeof why, "not timed (%.1f MFLOP, under %.0f)", flop * 1e-6,
                           CUDA_ATTN_TUNE_FLOP * 1e-6);
            print_node(n, "mma", NULL, why);
        }
        return IMGD_OK;
    }
    attn_key key;
    make_key(n, &key);
    cuda_attn_pick *known        = cuda_tune_find(&cb->picks[CUDA_TUNER_ATTN], &key, sizeof key);
    bool            cand[PICK_N] = {false, false, false};
    cand[PICK_MMA1]              = cb->attn_mtiles != 2;
    cand[PICK_MMA2]              = cb->attn_mtiles != 1;
#ifdef IMGD_HAVE_CUDNN
    /* a remembered choice other than cuDNN needs no plan */
    cand[PICK_CUDNN] =
        (!known || known->pick == PICK_CUDNN) && cuda_attn_cudnn_plan(cb, n, why, sizeof why);
#endif
    float ms[PICK_N];
    int   c = -1;
    if (known) {
        memcpy(ms, known->ms, sizeof ms);
        c = known->pick;
        if (c == PICK_CUDNN && !cand[PICK_CUDNN]) { /* no plan this time: the faster mma */
            ms[PICK_CUDNN] = -1.0f;
            c              = fastest(ms);
        }
        tc->remembered++;
    } else if (time_node(cb, n, cand, ms, why, sizeof why)) {
        c = fastest(ms);
        if (c < 0) return imgd_fail(IMGD_E_DEVICE, "cuda: attention: no kernel ran to be timed");
        cuda_attn_pick *p = cuda_tune_add(&cb->picks[CUDA_TUNER_ATTN], sizeof *p);
        if (p) {
            p->key  = key;
            p->pick = c;
            memcpy(p->ms, ms, sizeof ms);
        }
        tc->timed++;
    } else {
        tc->untimed++;
    }
    apply(ns, n, c);
    if (c >= 0) tc->per_pick[c]++;
    if (cb->verbose)
        print_node(n, c >= 0 ? k_pick_names[c] : "mma", c >= 0 ? ms : NULL,
                   c < 0              ? why
                   : known            ? "remembered"
                   : cand[PICK_CUDNN] ? ""
                                      : why);
    return IMGD_OK;
}

imgd_status cuda_attn_choose(cuda_backend *cb, imgd_graph *g) {
    if (cb->attn != CUDA_ATTN_CUDNN && !cb->attn_tune) return IMGD_OK;
    tune_counts tc = {0};
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        imgd_tensor *n  = imgd_graph_exec_node(g, i);
        cuda_node   *ns = cuda_node_of(n);
        if (n->op != IMGD_OP_ATTENTION || !ns || !ns->attn_wmma) continue;
        if (cb->attn_tune) {
            imgd_status st = choose_timed(cb, n, &tc);
            if (st != IMGD_OK) return st;
            continue;
        }
#ifdef IMGD_HAVE_CUDNN
        char why[192] = "";
        bool dnn      = cuda_attn_cudnn_plan(cb, n, why, sizeof why);
        if (dnn) apply(ns, n, PICK_CUDNN);
        if (cb->verbose) print_node(n, dnn ? "cuDNN SDPA" : "mma, not cuDNN SDPA", NULL, why);
#endif
    }
    if (tc.timed + tc.remembered > 0)
        IMGD_LOG(IMGD_LOG_INFO, "cuda", "attention",
                 "%d attention nodes timed, %d as shapes timed before, %d not timed: mma1 %d, "
                 "mma2 %d, cuDNN SDPA %d",
                 tc.timed, tc.remembered, tc.untimed, tc.per_pick[PICK_MMA1],
                 tc.per_pick[PICK_MMA2], tc.per_pick[PICK_CUDNN]);
    return IMGD_OK;
}
