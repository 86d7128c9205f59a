/* Running a planned graph on the CUDA backend.
 *
 * Every compute stages the bound inputs in pinned host memory (one memcpy each), then
 * enqueues their uploads and every node on the backend's stream. The first run of a plan is
 * captured as a CUDA graph (uploads included: the staging buffer's address is part of the
 * plan) and later runs replay it with one launch, which removes the per-node launch cost of
 * the host (about 2,000 launches per SD 1.5 UNet step). A replay is valid while the plan's
 * signature is unchanged: every executed node's op, parameters, shapes, strides and device
 * addresses, hashed on each run (about 0.1 ms for a UNet). When capture fails (a call that
 * cannot be captured), that plan runs eagerly from then on; IMGD_CUDA_GRAPH=0 turns capture
 * off, and IMGD_CUDA_SYNC=1 (a check after every node) implies it.
 *
 * IMGD_PROFILE: an event is recorded before every node and after the last (inside the
 * captured graph too), so the per-op times are GPU time without the host's launch gaps; they
 * are summed per op kind and printed when the backend is freed, with the host wall time of
 * the same runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/text.h"
#include "cuda_impl.h"

/* ---- pinned staging ------------------------------------------------------------------------ */

/* Grows the pinned buffer *p to at least n bytes (contents not kept). */
static imgd_status pin_reserve(void **p, size_t *cap, size_t n, const char *what) {
    if (n <= *cap) return IMGD_OK;
    if (*p) (void)cudaFreeHost(*p);
    *p         = NULL;
    *cap       = 0;
    size_t sz  = cuda_align_up(n + n / 4);
    void  *mem = NULL;
    CUDA_TRY(cudaHostAlloc(&mem, sz, cudaHostAllocDefault), what);
    *p   = mem;
    *cap = sz;
    return IMGD_OK;
}

static bool is_upload(const imgd_tensor *t) {
    return t->kind == IMGD_TENSOR_INPUT && t->op == IMGD_OP_NONE && t->backend_data && t->nbytes;
}

/* Copies every bound input into the pinned buffer, in graph order. */
static imgd_status stage_inputs(cuda_backend *cb, imgd_graph *g) {
    size_t total = 0;
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        const imgd_tensor *t = imgd_graph_tensor(g, i);
        if (is_upload(t)) total += cuda_align_up(t->nbytes);
    }
    if (total == 0) return IMGD_OK;
    imgd_status st = pin_reserve(&cb->pin_in, &cb->pin_in_cap, total, "pinned input staging");
    if (st != IMGD_OK) return st;
    size_t off = 0;
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        const imgd_tensor *t = imgd_graph_tensor(g, i);
        if (!is_upload(t)) continue;
        memcpy((unsigned char *)cb->pin_in + off, t->data, t->nbytes);
        off += cuda_align_up(t->nbytes);
    }
    return IMGD_OK;
}

/* Enqueues the uploads of the staged inputs. */
static imgd_status enqueue_uploads(cuda_backend *cb, imgd_graph *g) {
    size_t off = 0;
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        const imgd_tensor *t = imgd_graph_tensor(g, i);
        if (!is_upload(t)) continue;
        char what[160];
        (void)imgd_fmt(what, sizeof what, "uploading input '%s'", t->name ? t->name : "?");
        CUDA_TRY(cudaMemcpyAsync(t->backend_data, (unsigned char *)cb->pin_in + off, t->nbytes,
                                 cudaMemcpyHostToDevice, cb->stream),
                 what);
        off += cuda_align_up(t->nbytes);
    }
    return IMGD_OK;
}

imgd_status cuda_exec_read(cuda_backend *cb, const void *src, void *dst, size_t n) {
    const size_t direct = (size_t)256 << 20; /* larger reads skip the staging copy */
    if (n > direct) {
        CUDA_TRY(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, cb->stream),
                 "reading a result");
        CUDA_TRY(cudaStreamSynchronize(cb->stream), "reading a result");
        return IMGD_OK;
    }
    imgd_status st = pin_reserve(&cb->pin_out, &cb->pin_out_cap, n, "pinned result staging");
    if (st != IMGD_OK) return st;
    CUDA_TRY(cudaMemcpyAsync(cb->pin_out, src, n, cudaMemcpyDeviceToHost, cb->stream),
             "reading a result");
    CUDA_TRY(cudaStreamSynchronize(cb->stream), "reading a result");
    memcpy(dst, cb->pin_out, n);
    return IMGD_OK;
}

/* ---- plan signature ------------------------------------------------------------------------ */

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static uint64_t mix_ptr(uint64_t h, const void *p) {
    return mix(h, (uint64_t)(uintptr_t)p);
}

static uint64_t mix_layout(uint64_t h, const imgd_tensor *t) {
    h = mix(h, ((uint64_t)t->dtype << 32) | (uint32_t)t->n_dims);
    for (int32_t d = 0; d < t->n_dims; d++)
        h = mix(mix(h, (uint64_t)t->shape[d]), (uint64_t)t->stride[d]);
    return h;
}

/* Everything a captured node's launch depends on. */
static uint64_t plan_signature(const cuda_backend *cb, imgd_graph *g) {
    uint64_t h = mix_ptr(0x1234567ull, cb->pin_in);
    h          = mix(h, (uint64_t)cb->profile);
    for (size_t i = 0; i < imgd_graph_tensor_count(g); i++) {
        const imgd_tensor *t = imgd_graph_tensor(g, i);
        if (is_upload(t)) h = mix(mix_ptr(h, t->backend_data), (uint64_t)t->nbytes);
    }
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++) {
        const imgd_tensor *n = imgd_graph_exec_node(g, i);
        h                    = mix(h, (uint64_t)n->op);
        h                    = mix_layout(h, n);
        h                    = mix_ptr(mix_ptr(mix_ptr(h, n->data), n->scratch), n->backend_data);
        for (int k = 0; k < IMGD_TENSOR_IPARAMS; k++) h = mix(h, (uint64_t)n->ip[k]);
        for (int k = 0; k < IMGD_TENSOR_FPARAMS; k++) {
            uint32_t bits;
            memcpy(&bits, &n->fp[k], sizeof bits);
            h = mix(h, bits);
        }
        for (int s = 0; s < IMGD_TENSOR_SRC_MAX; s++) {
            const imgd_tensor *src = n->src[s];
            if (!src) continue;
            h = mix_layout(mix_ptr(h, cuda_dptr(src)), src);
        }
    }
    return h;
}

/* ---- enqueueing ---------------------------------------------------------------------------- */

static imgd_status ensure_events(cuda_backend *cb, size_t n) {
    if (cb->n_ev >= n) return IMGD_OK;
    cudaEvent_t *ev = imgd_realloc(cb->ev, n * sizeof *ev);
    if (!ev) return imgd_fail(IMGD_E_NOMEM, "cuda: profile events: out of host memory");
    cb->ev = ev;
    while (cb->n_ev < n) {
        CUDA_TRY(cudaEventCreate(&cb->ev[cb->n_ev]), "creating a profile event");
        cb->n_ev++;
    }
    return IMGD_OK;
}

static imgd_status record_event(cuda_backend *cb, size_t i, bool capturing) {
    if (!cb->profile) return IMGD_OK;
    cudaError_t e = capturing
                        ? cudaEventRecordWithFlags(cb->ev[i], cb->stream, cudaEventRecordExternal)
                        : cudaEventRecord(cb->ev[i], cb->stream);
    if (e != cudaSuccess) return cuda_fail(e, "cudaEventRecord", "profile");
    return IMGD_OK;
}

/* Enqueues the uploads and every node; while capturing, nothing is checked per node. */
static imgd_status enqueue(cuda_backend *cb, imgd_graph *g, bool capturing) {
    imgd_status st = enqueue_uploads(cb, g);
    size_t      ne = imgd_graph_exec_count(g);
    for (size_t i = 0; st == IMGD_OK && i < ne; i++) {
        const imgd_tensor *n = imgd_graph_exec_node(g, i);
        if (!capturing && imgd_graph_cancel_requested(g))
            return imgd_fail(IMGD_E_CANCELLED, "compute cancelled before node %zu", i);
        char what[96];
        (void)imgd_fmt(what, sizeof what, "node %zu (%s)", i, imgd_op_name(n->op));
        st = record_event(cb, i, capturing);
        if (st == IMGD_OK) st = cuda_run_node(cb, n, what);
        if (st == IMGD_OK && cb->sync_each && !capturing) {
            cudaError_t e = cudaStreamSynchronize(cb->stream);
            if (e != cudaSuccess) st = cuda_fail(e, "kernel (IMGD_CUDA_SYNC)", what);
        }
    }
    if (st == IMGD_OK) st = record_event(cb, ne, capturing);
    return st;
}

/* ---- captured graphs ----------------------------------------------------------------------- */

static void replay_clear(cuda_replay *r) {
    if (r->exec) (void)cudaGraphExecDestroy(r->exec);
    memset(r, 0, sizeof *r);
}

void cuda_exec_forget(cuda_backend *cb, const imgd_graph *g) {
    for (int i = 0; i < CUDA_REPLAY_MAX; i++)
        if (cb->replay[i].g == g) replay_clear(&cb->replay[i]);
}

/* g's slot, taking a free one or the least recently used. */
static cuda_replay *replay_slot(cuda_backend *cb, const imgd_graph *g) {
    cuda_replay *free_slot = NULL, *oldest = &cb->replay[0];
    for (int i = 0; i < CUDA_REPLAY_MAX; i++) {
        cuda_replay *r = &cb->replay[i];
        if (r->g == g) return r;
        if (!r->g && !free_slot) free_slot = r;
        if (r->used < oldest->used) oldest = r;
    }
    cuda_replay *r = free_slot ? free_slot : oldest;
    replay_clear(r);
    r->g = g;
    return r;
}

/* Captures g's run into r->exec. False (and the stream usable again) when capture is not
 * possible (a call that cannot be captured, or a node that failed: the eager run that follows
 * reports a node's own error). */
static bool capture(cuda_backend *cb, imgd_graph *g, cuda_replay *r) {
    cudaError_t e = cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    imgd_status st    = enqueue(cb, g, true);
    cudaGraph_t graph = NULL;
    e                 = cudaStreamEndCapture(cb->stream, &graph);
    if (st != IMGD_OK || e != cudaSuccess || !graph) {
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        return false;
    }
    e = cudaGraphInstantiate(&r->exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        r->exec = NULL;
        (void)cudaGetLastError();
        return false;
    }
    return true;
}

/* ---- run ----------------------------------------------------------------------------------- */

/* IMGD_PROFILE=nodes: GPU time per (op, dtype, shapes), in an open-addressed table. */
#define PROF_ROWS 4096
#define PROF_SHOW 40

struct cuda_prof_row {
    char     key[200]; /* "op dtype [out] <- [src0] [src1]"; empty: free slot */
    double   s;
    uint64_t n;
};

/* Appends a shape "[a,b,...]" at buf + *n (bounded by cap; *n stays < cap). */
static void shape_app(char *buf, size_t cap, size_t *n, const char *pre, const imgd_tensor *t) {
    int w = snprintf(buf + *n, cap - *n, "%s[", pre);
    for (int32_t d = 0; w >= 0 && d < t->n_dims; d++) {
        *n = (size_t)w + *n < cap ? *n + (size_t)w : cap - 1;
        w  = snprintf(buf + *n, cap - *n, d ? ",%lld" : "%lld", (long long)t->shape[d]);
    }
    if (w >= 0) *n = (size_t)w + *n < cap ? *n + (size_t)w : cap - 1;
    w = snprintf(buf + *n, cap - *n, "]");
    if (w >= 0) *n = (size_t)w + *n < cap ? *n + (size_t)w : cap - 1;
}

static void prof_row_add(cuda_backend *cb, const imgd_tensor *t, double s) {
    if (!cb->prof_rows) cb->prof_rows = imgd_calloc(PROF_ROWS, sizeof *cb->prof_rows);
    if (!cb->prof_rows) return;
    char key[sizeof cb->prof_rows->key];
    (void)imgd_fmt(key, sizeof key, "%s %s ", imgd_op_name(t->op), imgd_dtype_name(t->dtype));
    size_t n = strlen(key);
    shape_app(key, sizeof key, &n, "", t);
    for (int k = 0; k < 2 && t->src[k]; k++)
        shape_app(key, sizeof key, &n, k ? " " : " <- ", t->src[k]);
    uint64_t h = imgd_str_hash(key);
    for (size_t probe = 0; probe < PROF_ROWS; probe++) {
        struct cuda_prof_row *r = &cb->prof_rows[(h + probe) % PROF_ROWS];
        if (!r->key[0]) memcpy(r->key, key, sizeof key);
        if (strcmp(r->key, key) != 0) continue;
        r->s += s;
        r->n++;
        return;
    }
}

static int prof_row_cmp(const void *a, const void *b) {
    double x = ((const struct cuda_prof_row *)a)->s, y = ((const struct cuda_prof_row *)b)->s;
    return (x < y) - (x > y);
}

static void prof_rows_print(cuda_backend *cb) {
    if (!cb->prof_rows) return;
    qsort(cb->prof_rows, PROF_ROWS, sizeof *cb->prof_rows, prof_row_cmp);
    double total = 0;
    for (size_t i = 0; i < PROF_ROWS; i++) total += cb->prof_rows[i].s;
    fprintf(stderr, "imgd profile (cuda): the %d costliest (op, dtype, shapes), of %.3f s\n",
            PROF_SHOW, total);
    for (size_t i = 0; i < PROF_SHOW && cb->prof_rows[i].n; i++) {
        const struct cuda_prof_row *r = &cb->prof_rows[i];
        fprintf(stderr, "  %5.1f%% %9.3f ms %6llu x %8.1f us  %s\n", 100.0 * r->s / total,
                r->s * 1e3, (unsigned long long)r->n, r->s * 1e6 / (double)r->n, r->key);
    }
}

static void profile_collect(cuda_backend *cb, imgd_graph *g, double wall_s, bool replayed) {
    size_t ne = imgd_graph_exec_count(g);
    for (size_t i = 0; i < ne; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, cb->ev[i], cb->ev[i + 1]) != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        const imgd_tensor *t = imgd_graph_exec_node(g, i);
        cb->prof_s[t->op] += (double)ms * 1e-3;
        cb->prof_n[t->op]++;
        if (cb->profile_nodes) prof_row_add(cb, t, (double)ms * 1e-3);
    }
    cb->prof_wall_s += wall_s;
    cb->prof_runs++;
    cb->prof_replays += replayed;
}

imgd_status cuda_exec_run(cuda_backend *cb, imgd_graph *g) {
    double t0 = cb->profile ? cuda_now_s() : 0;
    CUDA_TRY(cudaSetDevice(cb->device), "compute");
    imgd_status st = stage_inputs(cb, g);
    if (st == IMGD_OK && cb->profile) st = ensure_events(cb, imgd_graph_exec_count(g) + 1);
    if (st == IMGD_OK && imgd_graph_cancel_requested(g))
        st = imgd_fail(IMGD_E_CANCELLED, "compute cancelled before node 0");
    if (st != IMGD_OK) return st;
    bool replayed = false;
    if (cb->graphs && !cb->sync_each) {
        cuda_replay *r   = replay_slot(cb, g);
        uint64_t     sig = plan_signature(cb, g);
        r->used          = ++cb->clock;
        if (r->sig != sig) {
            r->eager_done = false;
            if (r->exec) {
                (void)cudaGraphExecDestroy(r->exec);
                r->exec         = NULL;
                r->uncapturable = false; /* a new plan gets its own try */
            }
        }
        r->sig = sig;
        /* GEMM kernels are timed on the plan's own addresses, which a capture cannot do: the
         * first compute of a signature runs node by node, the next is captured */
        bool eager    = cuda_gemm_tuned(cb) && !r->exec && !r->eager_done;
        r->eager_done = true;
        if (!eager && !r->exec && !r->uncapturable && !capture(cb, g, r)) {
            r->uncapturable = true;
            if (cb->verbose)
                fprintf(stderr,
                        "cuda: this plan (%zu nodes) cannot be captured as a CUDA "
                        "graph; it runs node by node\n",
                        imgd_graph_exec_count(g));
        }
        if (r->exec) {
            CUDA_TRY(cudaGraphLaunch(r->exec, cb->stream), "cudaGraphLaunch");
            replayed = true;
        }
    }
    if (!replayed) st = enqueue(cb, g, false);
    /* Waits for the queued work, so an asynchronous fault is reported by this compute. */
    cudaError_t e = cudaStreamSynchronize(cb->stream);
    if (st == IMGD_OK && e != cudaSuccess) st = cuda_fail(e, "cudaStreamSynchronize", "compute");
    if (st == IMGD_OK && cb->profile) profile_collect(cb, g, cuda_now_s() - t0, replayed);
    if (!replayed) cuda_tune_save(cb); /* GEMMs timed in this run */
    return st;
}

void cuda_exec_free(cuda_backend *cb) {
    if (cb->profile && cb->prof_runs) {
        char title[160];
        (void)imgd_fmt(title, sizeof title,
                       "imgd profile (cuda, %llu runs, %llu as CUDA graphs, host wall %.3f s)",
                       (unsigned long long)cb->prof_runs, (unsigned long long)cb->prof_replays,
                       cb->prof_wall_s);
        imgd_backend_profile_print(title, cb->prof_s, cb->prof_n);
        prof_rows_print(cb);
    }
    imgd_free(cb->prof_rows);
    cb->prof_rows = NULL;
    for (int i = 0; i < CUDA_REPLAY_MAX; i++) replay_clear(&cb->replay[i]);
    for (size_t i = 0; i < cb->n_ev; i++) (void)cudaEventDestroy(cb->ev[i]);
    imgd_free(cb->ev);
    cb->ev   = NULL;
    cb->n_ev = 0;
    if (cb->pin_in) (void)cudaFreeHost(cb->pin_in);
    if (cb->pin_out) (void)cudaFreeHost(cb->pin_out);
    if (cb->blas_ws) (void)cudaFree(cb->blas_ws);
    cb->pin_in = cb->pin_out = cb->blas_ws = NULL;
}
