/* tensor.plan and tensor.graph: liveness-based planning, replay without allocation, sticky
 * builder errors, input binding, shared buffers. */
#include <math.h>
#include <stdio.h>

#include "base/alloc.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#include "tensor/plan.h"
#include "test.h"

/* ---- the pure planner ------------------------------------------------------------------- */

static int conflicts(const imgd_plan_item *it, const size_t *off, size_t n, size_t align) {
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            bool   t  = it[i].first <= it[j].last && it[j].first <= it[i].last;
            size_t si = (it[i].size + align - 1) / align * align;
            size_t sj = (it[j].size + align - 1) / align * align;
            bool   m  = off[i] < off[j] + sj && off[j] < off[i] + si;
            if (t && m && si && sj) bad++;
        }
    return bad;
}

/* Lower bound: the most bytes live at any one step. */
static size_t live_peak(const imgd_plan_item *it, size_t n, size_t align) {
    size_t peak = 0;
    for (int32_t t = 0; t < 1000; t++) {
        size_t live = 0;
        for (size_t i = 0; i < n; i++)
            if (it[i].first <= t && t <= it[i].last)
                live += (it[i].size + align - 1) / align * align;
        if (live > peak) peak = live;
    }
    return peak;
}

static void test_plan_chain_of_100_equal_buffers_uses_two(void) {
    imgd_plan_item it[100];
    size_t         off[100], total = 0;
    for (int i = 0; i < 100; i++) it[i] = (imgd_plan_item){4096, i, i + 1};
    CHECK_STATUS(imgd_plan_assign(it, 100, 64, off, &total), IMGD_OK);
    CHECK_EQ_INT(conflicts(it, off, 100, 64), 0);
    CHECK_EQ_INT(total, 2 * 4096); /* the optimum */
}

static void test_plan_chain_of_100_varied_buffers_within_one_of_optimum(void) {
    imgd_plan_item it[100];
    size_t         off[100], total = 0, biggest = 0;
    uint32_t       r = 12345;
    for (int i = 0; i < 100; i++) {
        r           = r * 1664525u + 1013904223u;
        size_t size = (size_t)64 * (1 + (r >> 20) % 300);
        it[i]       = (imgd_plan_item){size, i, i + 1};
        biggest     = size > biggest ? size : biggest;
    }
    CHECK_STATUS(imgd_plan_assign(it, 100, 64, off, &total), IMGD_OK);
    CHECK_EQ_INT(conflicts(it, off, 100, 64), 0);
    size_t opt = live_peak(it, 100, 64); /* for a chain the peak is achievable */
    CHECK_MSG(total <= opt + biggest, "total %zu, optimum %zu, biggest %zu", total, opt, biggest);
}

/* A U-Net-like pattern: encoder outputs live until the matching decoder step. */
static void test_plan_skip_connections_stay_valid_and_tight(void) {
    imgd_plan_item it[64];
    size_t         off[64], total = 0, n = 0, biggest = 0;
    for (int i = 0; i < 16; i++) {
        size_t s = (size_t)(16 - i) * 1024;
        it[n++]  = (imgd_plan_item){s, i, 31 - i};    /* skip tensor */
        it[n++]  = (imgd_plan_item){s / 2, i, i + 1}; /* chain temp */
        it[n++]  = (imgd_plan_item){s / 4, 31 - i, 32 - i};
        biggest  = s > biggest ? s : biggest;
    }
    CHECK_STATUS(imgd_plan_assign(it, n, 64, off, &total), IMGD_OK);
    CHECK_EQ_INT(conflicts(it, off, n, 64), 0);
    size_t lb = live_peak(it, n, 64);
    CHECK_MSG(total >= lb && total <= lb + biggest, "total %zu, bound %zu", total, lb);
}

static void test_plan_random_lifetimes_never_collide(void) {
    imgd_plan_item it[300];
    size_t         off[300], total = 0;
    uint32_t       r = 777;
    for (int i = 0; i < 300; i++) {
        r         = r * 1664525u + 1013904223u;
        int32_t a = (int32_t)((r >> 8) % 200);
        r         = r * 1664525u + 1013904223u;
        int32_t l = (int32_t)((r >> 8) % 30);
        r         = r * 1664525u + 1013904223u;
        it[i]     = (imgd_plan_item){1 + (r >> 12) % 100000, a, a + l};
    }
    CHECK_STATUS(imgd_plan_assign(it, 300, 64, off, &total), IMGD_OK);
    CHECK_EQ_INT(conflicts(it, off, 300, 64), 0);
    CHECK(total >= live_peak(it, 300, 64));
    for (int i = 0; i < 300; i++) CHECK_EQ_INT(off[i] % 64, 0);
}

static void test_plan_rejects_bad_lifetime_and_alignment(void) {
    imgd_plan_item it[1] = {{10, 5, 4}};
    size_t         off[1], total;
    CHECK_STATUS(imgd_plan_assign(it, 1, 64, off, &total), IMGD_E_INVALID_ARG);
    it[0].last = 6;
    CHECK_STATUS(imgd_plan_assign(it, 1, 48, off, &total), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_plan_assign(it, 0, 64, off, &total), IMGD_OK);
    CHECK_EQ_INT(total, 0);
}

/* ---- graphs ----------------------------------------------------------------------------- */

static imgd_backend *backend(const char *name) {
    imgd_backend *be = NULL;
    CHECK_STATUS(imgd_backend_new(name, NULL, &be), IMGD_OK);
    return be;
}

/* A chain of 100 scale ops on [1024] floats: 4 KiB per activation. */
static void test_graph_chain_of_100_ops_plans_optimum_plus_one(void) {
    imgd_backend *be  = backend("cpu");
    imgd_graph   *g   = NULL;
    void         *buf = NULL;
    REQUIRE(be && imgd_graph_new(NULL, &g) == IMGD_OK);
    imgd_tensor *x = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 1, (const int64_t[]){1024});
    imgd_tensor *y = x;
    for (int i = 0; i < 100; i++) y = imgd_op_scale(g, y, 1.01f, 0.0f);
    imgd_graph_output(g, y);
    imgd_plan_info info = {0};
    REQUIRE(imgd_graph_plan(g, be, &info) == IMGD_OK);
    CHECK_EQ_INT(info.n_nodes, 100);
    size_t S = 1024 * sizeof(float);
    CHECK_MSG(info.activation_bytes <= 2 * S + S, "planned %zu bytes, optimum %zu",
              info.activation_bytes, 2 * S);
    CHECK_EQ_INT(info.naive_bytes, 100 * S);
    /* the exact byte count is enough: a caller buffer of exactly that size works */
    REQUIRE(be->iface->alloc(be, info.activation_bytes, &buf) == IMGD_OK);
    CHECK_STATUS(imgd_graph_alloc(g, buf, info.activation_bytes - 1), IMGD_E_INVALID_ARG);
    REQUIRE(imgd_graph_alloc(g, buf, info.activation_bytes) == IMGD_OK);
    float in[1024];
    for (int i = 0; i < 1024; i++) in[i] = (float)i;
    CHECK_STATUS(imgd_tensor_bind(x, in), IMGD_OK);
    REQUIRE(imgd_graph_compute(g) == IMGD_OK);
    const float *out = y->data;
    CHECK_NEAR(out[10], 10.0 * pow(1.01, 100), 1e-3);
done:
    imgd_graph_free(g);
    if (buf) be->iface->buffer_free(be, buf);
    imgd_backend_free(be);
}

/* A backend that is the cpu backend except that its prepare marks the third node
 * plan_early, as a backend fusing the second node's epilogue into it would. */
static const struct imgd_backend_i *g_cpu_iface;

static imgd_status early_prepare(imgd_backend *be, imgd_graph *g) {
    imgd_backend cpu = {g_cpu_iface, be->ctx};
    imgd_status  st  = g_cpu_iface->prepare ? g_cpu_iface->prepare(&cpu, g) : IMGD_OK;
    if (st == IMGD_OK && imgd_graph_exec_count(g) > 2)
        imgd_graph_exec_node(g, 2)->plan_early = true;
    return st;
}

/* x -> a -> b -> c -> d (scales): c may take a's memory (a dies when b runs), unless c is
 * plan_early, whose storage is then reserved from b's run, while a is still read. */
static void test_graph_plan_early_reserves_from_the_node_before(void) {
    imgd_backend         *cpu   = backend("cpu");
    struct imgd_backend_i iface = {0};
    imgd_backend          early = {&iface, NULL};
    imgd_graph           *g     = NULL;
    REQUIRE(cpu && imgd_graph_new(NULL, &g) == IMGD_OK);
    g_cpu_iface    = cpu->iface;
    iface          = *cpu->iface;
    iface.prepare  = early_prepare;
    early.ctx      = cpu->ctx;
    imgd_tensor *x = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 1, (const int64_t[]){256});
    imgd_tensor *a = imgd_op_scale(g, x, 2.0f, 0.0f), *b = imgd_op_scale(g, a, 2.0f, 0.0f);
    imgd_tensor *c = imgd_op_scale(g, b, 2.0f, 0.0f), *d = imgd_op_scale(g, c, 2.0f, 0.0f);
    imgd_graph_output(g, d);
    REQUIRE(imgd_graph_plan(g, cpu, NULL) == IMGD_OK);
    CHECK_MSG(c->plan_offset == a->plan_offset, "plain: c at %zu, a at %zu (expected shared)",
              c->plan_offset, a->plan_offset);
    REQUIRE(imgd_graph_plan(g, &early, NULL) == IMGD_OK);
    CHECK(c->plan_early && !b->plan_early);
    size_t S = 256 * sizeof(float);
    CHECK_MSG(c->plan_offset >= a->plan_offset + S || a->plan_offset >= c->plan_offset + S,
              "plan_early: c at %zu overlaps a at %zu", c->plan_offset, a->plan_offset);
    REQUIRE(imgd_graph_alloc(g, NULL, 0) == IMGD_OK);
    float in[256];
    for (int i = 0; i < 256; i++) in[i] = (float)i;
    CHECK_STATUS(imgd_tensor_bind(x, in), IMGD_OK);
    REQUIRE(imgd_graph_compute(g) == IMGD_OK);
    CHECK_NEAR(((const float *)d->data)[3], 48.0, 1e-6);
    REQUIRE(imgd_graph_plan(g, cpu, NULL) == IMGD_OK); /* re-planning clears the mark */
    CHECK(!c->plan_early);
done:
    imgd_graph_free(g);
    imgd_backend_free(cpu);
}

static imgd_graph *small_net(imgd_tensor **x, imgd_tensor **y, const float *w) {
    imgd_graph *g = NULL;
    *x = *y = NULL;
    if (imgd_graph_new(NULL, &g) != IMGD_OK) return NULL;
    *x              = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 2, (const int64_t[]){4, 8});
    imgd_tensor *wt = imgd_graph_weight(g, "w", IMGD_DTYPE_F32, 2, (const int64_t[]){8, 8}, w);
    imgd_tensor *h  = imgd_op_silu(g, imgd_op_linear(g, *x, wt, NULL));
    (void)imgd_op_gelu(g, h); /* dead branch: never executed */
    *y = imgd_op_layer_norm(g, imgd_op_add(g, h, *x), 1e-5f, NULL, NULL);
    imgd_graph_output(g, *y);
    return g;
}

static void test_graph_replay_never_allocates_and_tracks_inputs(void) {
    imgd_backend *be = backend("cpu");
    float         w[64], in[32], out1[32], out2[32];
    for (int i = 0; i < 64; i++) w[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
    for (int i = 0; i < 32; i++) in[i] = (float)i / 32.0f;
    imgd_tensor   *x = NULL, *y = NULL;
    imgd_graph    *g    = small_net(&x, &y, w);
    imgd_plan_info info = {0};
    REQUIRE(be && g && imgd_graph_plan(g, be, &info) == IMGD_OK);
    CHECK_EQ_INT(info.n_nodes, 4); /* matmul, silu, add, layer_norm; gelu pruned */
    REQUIRE(imgd_graph_alloc(g, NULL, 0) == IMGD_OK);
    CHECK_STATUS(imgd_graph_compute(g), IMGD_E_INVALID_ARG); /* x not bound */
    CHECK_STATUS(imgd_tensor_bind(x, in), IMGD_OK);
    CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
    CHECK_STATUS(imgd_graph_read_f32(g, y, out1, 32), IMGD_OK);
    uint64_t before = imgd_alloc_bytes_in_use();
    for (int r = 0; r < 5; r++) CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
    CHECK_EQ_INT(imgd_alloc_bytes_in_use(), before);
    for (int i = 0; i < 32; i++) in[i] = -in[i];
    CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
    CHECK_STATUS(imgd_graph_read_f32(g, y, out2, 32), IMGD_OK);
    int same = 0;
    for (int i = 0; i < 32; i++) same += out1[i] == out2[i];
    CHECK(same < 32); /* new input, new result */
done:
    imgd_graph_free(g);
    imgd_backend_free(be);
}

static void test_graph_two_graphs_share_one_buffer(void) {
    imgd_backend *be    = backend("ref");
    float         w[64] = {0}, in[32];
    for (size_t i = 0; i < 8; i++) w[i * 9] = 1.0f; /* identity */
    for (int i = 0; i < 32; i++) in[i] = (float)i - 16.0f;
    imgd_tensor   *x1, *y1, *x2, *y2;
    imgd_graph    *g1 = small_net(&x1, &y1, w), *g2 = small_net(&x2, &y2, w);
    imgd_plan_info i1 = {0}, i2 = {0};
    void          *buf = NULL;
    REQUIRE(be && g1 && g2);
    REQUIRE(imgd_graph_plan(g1, be, &i1) == IMGD_OK && imgd_graph_plan(g2, be, &i2) == IMGD_OK);
    size_t need =
        i1.activation_bytes > i2.activation_bytes ? i1.activation_bytes : i2.activation_bytes;
    REQUIRE(be->iface->alloc(be, need, &buf) == IMGD_OK);
    REQUIRE(imgd_graph_alloc(g1, buf, need) == IMGD_OK &&
            imgd_graph_alloc(g2, buf, need) == IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(x1, in), IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(x2, in), IMGD_OK);
    float o1[32], o2[32];
    CHECK_STATUS(imgd_graph_compute(g1), IMGD_OK);
    CHECK_STATUS(imgd_graph_read_f32(g1, y1, o1, 32), IMGD_OK);
    CHECK_STATUS(imgd_graph_compute(g2), IMGD_OK);
    CHECK_STATUS(imgd_graph_read_f32(g2, y2, o2, 32), IMGD_OK);
    int diff = 0;
    for (int i = 0; i < 32; i++) diff += o1[i] != o2[i];
    CHECK_EQ_INT(diff, 0);
    CHECK_STATUS(imgd_graph_alloc(g1, (char *)buf + 8, need), IMGD_E_INVALID_ARG); /* misaligned */
done:
    imgd_graph_free(g1);
    imgd_graph_free(g2);
    if (buf) be->iface->buffer_free(be, buf);
    imgd_backend_free(be);
}

static void test_graph_builder_errors_are_sticky(void) {
    imgd_graph *g = NULL;
    CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
    imgd_tensor *a = imgd_graph_input(g, "a", IMGD_DTYPE_F32, 2, (const int64_t[]){3, 4});
    imgd_tensor *b = imgd_graph_input(g, "b", IMGD_DTYPE_F32, 2, (const int64_t[]){5, 6});
    CHECK(imgd_op_matmul(g, a, b, false, false, NULL) == NULL);
    CHECK_EQ_INT(imgd_graph_status(g), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_graph_error(g), "matmul") != NULL);
    CHECK(strstr(imgd_last_error(), "inner dims") != NULL);
    /* later builders propagate without overwriting the first message */
    CHECK(imgd_op_silu(g, NULL) == NULL);
    CHECK(imgd_op_add(g, a, a) == NULL);
    CHECK(strstr(imgd_graph_error(g), "matmul") != NULL);
    imgd_backend *be = backend("ref");
    CHECK_STATUS(imgd_graph_plan(g, be, NULL), IMGD_E_INVALID_ARG);
    imgd_backend_free(be);
    imgd_graph_free(g);
}

static void test_graph_shape_errors_name_the_problem(void) {
    static const struct {
        int         which;
        const char *needle;
    } rows[] = {{0, "broadcast"},   {1, "groups"}, {2, "channels"}, {3, "mask"},     {4, "reshape"},
                {5, "permutation"}, {6, "concat"}, {7, "narrow"},   {8, "quantized"}};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(rows); i++) {
        imgd_graph *g = NULL;
        CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
        imgd_tensor *x = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4, (const int64_t[]){2, 6, 5, 5});
        imgd_tensor *y = imgd_graph_input(g, "y", IMGD_DTYPE_F32, 2, (const int64_t[]){3, 4});
        static const uint8_t qdata[34 * 4] = {0};
        imgd_tensor         *q =
            imgd_graph_weight(g, "q", IMGD_DTYPE_Q8_0, 2, (const int64_t[]){4, 32}, qdata);
        imgd_tensor *r = NULL;
        switch (rows[i].which) {
        case 0: r = imgd_op_add(g, x, y); break;
        case 1: r = imgd_op_group_norm(g, x, 4, 1e-5f, NULL, NULL, false); break;
        case 2:
            r = imgd_op_conv2d(
                g, x, imgd_graph_input(g, "w", IMGD_DTYPE_F32, 4, (const int64_t[]){3, 5, 3, 3}),
                NULL, 1, 1);
            break;
        case 3: r = imgd_op_attention(g, x, x, x, y, 0.0f); break;
        case 4: r = imgd_op_reshape(g, x, 2, (const int64_t[]){7, -1}); break;
        case 5: r = imgd_op_permute(g, x, (const int32_t[]){0, 1, 1, 2}); break;
        case 6: r = imgd_op_concat(g, 2, (imgd_tensor *const[]){x, y}, 0); break;
        case 7: r = imgd_op_narrow(g, x, 1, 4, 3); break;
        default: r = imgd_op_transpose(g, q, 0, 1); break;
        }
        CHECK(r == NULL);
        CHECK_MSG(strstr(imgd_graph_error(g), rows[i].needle) != NULL, "case %zu: '%s'", i,
                  imgd_graph_error(g));
        imgd_graph_free(g);
    }
}

static void test_graph_view_output_keeps_its_storage_alive(void) {
    imgd_backend *be = backend("cpu");
    imgd_graph   *g  = NULL;
    REQUIRE(be && imgd_graph_new(NULL, &g) == IMGD_OK);
    float        in[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    imgd_tensor *x      = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 2, (const int64_t[]){3, 4});
    imgd_tensor *s      = imgd_op_scale(g, x, 2.0f, 0.0f);
    imgd_tensor *v      = imgd_op_transpose(g, s, 0, 1); /* output is a view */
    imgd_tensor *t      = s;
    for (int i = 0; i < 5; i++) t = imgd_op_scale(g, t, 1.0f, 1.0f); /* would reuse s's bytes */
    imgd_graph_output(g, v);
    imgd_graph_output(g, t);
    REQUIRE(imgd_graph_plan(g, be, NULL) == IMGD_OK && imgd_graph_alloc(g, NULL, 0) == IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(x, in), IMGD_OK);
    REQUIRE(imgd_graph_compute(g) == IMGD_OK);
    float out[12];
    CHECK_STATUS(imgd_graph_read_f32(g, v, out, 12), IMGD_OK);
    CHECK_NEAR(out[1], 10.0, 0); /* v[0][1] = s[1][0] = 2 * 5 */
    CHECK_NEAR(out[11], 24.0, 0);
done:
    imgd_graph_free(g);
    imgd_backend_free(be);
}

static void test_graph_compute_honours_cancel_flag(void) {
    imgd_backend *be    = backend("cpu");
    float         w[64] = {0}, in[32] = {0};
    imgd_tensor  *x, *y;
    imgd_graph   *g = small_net(&x, &y, w);
    atomic_int    stop;
    atomic_init(&stop, 1);
    REQUIRE(be && g && imgd_graph_plan(g, be, NULL) == IMGD_OK);
    REQUIRE(imgd_graph_alloc(g, NULL, 0) == IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(x, in), IMGD_OK);
    imgd_graph_set_cancel(g, &stop);
    CHECK_STATUS(imgd_graph_compute(g), IMGD_E_CANCELLED);
    atomic_store(&stop, 0);
    CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
done:
    imgd_graph_free(g);
    imgd_backend_free(be);
}

static void test_graph_replans_on_another_backend(void) {
    imgd_backend *cpu = backend("cpu"), *ref = backend("ref");
    float         w[64], in[32], o1[32], o2[32];
    for (int i = 0; i < 64; i++) w[i] = (float)(i % 5) * 0.1f;
    for (int i = 0; i < 32; i++) in[i] = (float)(i % 7) - 3.0f;
    imgd_tensor *x, *y;
    imgd_graph  *g = small_net(&x, &y, w);
    REQUIRE(cpu && ref && g && imgd_graph_plan(g, cpu, NULL) == IMGD_OK);
    REQUIRE(imgd_graph_alloc(g, NULL, 0) == IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(x, in), IMGD_OK);
    REQUIRE(imgd_graph_compute(g) == IMGD_OK);
    CHECK_STATUS(imgd_graph_read_f32(g, y, o1, 32), IMGD_OK);
    CHECK_STATUS(imgd_graph_plan(g, ref, NULL), IMGD_OK);    /* releases the cpu plan */
    CHECK_STATUS(imgd_graph_compute(g), IMGD_E_INVALID_ARG); /* not allocated yet */
    REQUIRE(imgd_graph_alloc(g, NULL, 0) == IMGD_OK);
    REQUIRE(imgd_graph_compute(g) == IMGD_OK);
    CHECK_STATUS(imgd_graph_read_f32(g, y, o2, 32), IMGD_OK);
    for (int i = 0; i < 32; i++) CHECK_NEAR(o1[i], o2[i], 1e-5);
done:
    imgd_graph_free(g);
    imgd_backend_free(cpu);
    imgd_backend_free(ref);
}

/* One Q8_0 linear [K=1024 -> N=16384] on x [4, 1024], built plainly (dequantize + matmul) or
 * with fuse_quant_linear; returns the plan's activation bytes and writes y (4 x 16384). */
static size_t quant_linear_run(bool fuse, const unsigned char *w, const float *x, float *y,
                               bool *saw_dequant) {
    imgd_graph_params gp = imgd_graph_params_default();
    gp.fuse_quant_linear = fuse;
    imgd_graph    *g     = NULL;
    imgd_backend  *be    = NULL;
    imgd_plan_info info  = {0};
    CHECK_STATUS(imgd_graph_new(&gp, &g), IMGD_OK);
    CHECK_STATUS(imgd_backend_new("cpu", NULL, &be), IMGD_OK);
    if (!g || !be) {
        imgd_graph_free(g);
        imgd_backend_free(be);
        return 0;
    }
    imgd_tensor *xi = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 2, (int64_t[]){4, 1024});
    imgd_tensor *wt = imgd_graph_weight(g, "w", IMGD_DTYPE_Q8_0, 2, (int64_t[]){16384, 1024}, w);
    imgd_tensor *o  = imgd_op_linear(g, xi, wt, NULL);
    imgd_graph_output(g, o);
    CHECK_STATUS(imgd_graph_plan(g, be, &info), IMGD_OK);
    CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
    CHECK_STATUS(imgd_tensor_bind(xi, (void *)(uintptr_t)x), IMGD_OK);
    CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
    CHECK_STATUS(imgd_graph_read_f32(g, o, y, (size_t)4 * 16384), IMGD_OK);
    *saw_dequant = false;
    for (size_t i = 0; i < imgd_graph_exec_count(g); i++)
        if (imgd_graph_exec_node(g, i)->op == IMGD_OP_DEQUANTIZE) *saw_dequant = true;
    CHECK_EQ_INT(o ? o->op : IMGD_OP_NONE, fuse ? IMGD_OP_LINEAR_QUANT : IMGD_OP_MATMUL);
    imgd_graph_free(g);
    imgd_backend_free(be);
    return info.activation_bytes;
}

/* fuse_quant_linear keeps the weight in its blocks: no dequantize node, no f32 weight in the
 * plan (64 MiB here; the fused kernel's scratch is one 16 MiB tile), the same result as dequantize
 * + matmul. */
static void test_graph_fused_quant_linear_skips_the_f32_weight(void) {
    enum {
        BLOCKS = 16384 * 1024 / 32,
        BB     = 34
    };
    unsigned char *w  = imgd_malloc((size_t)BLOCKS * BB);
    float         *x  = imgd_malloc((size_t)4 * 1024 * sizeof *x);
    float         *y0 = imgd_malloc((size_t)4 * 16384 * sizeof *y0),
          *y1         = imgd_malloc((size_t)4 * 16384 * sizeof *y1);
    if (!w || !x || !y0 || !y1) goto done;
    uint32_t r = 12345;
    for (size_t i = 0; i < (size_t)BLOCKS * BB; i++) {
        r    = r * 1103515245u + 12345u;
        w[i] = (unsigned char)(r >> 16);
    }
    for (size_t b = 0; b < BLOCKS; b++) { /* f16 scale 0.01 (0x211f) */
        w[b * BB]     = 0x1f;
        w[b * BB + 1] = 0x21;
    }
    for (size_t i = 0; i < (size_t)4 * 1024; i++) x[i] = (float)((int)(i % 17) - 8) * 0.125f;
    bool   d0 = false, d1 = true;
    size_t plain = quant_linear_run(false, w, x, y0, &d0);
    size_t fused = quant_linear_run(true, w, x, y1, &d1);
    CHECK(d0 && !d1);
    CHECK_MSG(fused + ((size_t)40 << 20) <= plain, "fused plan %zu bytes, plain %zu", fused, plain);
    double err = 0.0, mx = 0.0;
    for (size_t i = 0; i < (size_t)4 * 16384; i++) {
        err = fmax(err, fabs((double)y0[i] - (double)y1[i]));
        mx  = fmax(mx, fabs((double)y0[i]));
    }
    printf("  fused q8_0 linear: plan %zu vs %zu bytes, max|diff| %.3g (max %.3g)\n", fused, plain,
           err, mx);
    CHECK(mx > 0.0 && err <= 1e-5 * mx);
done:
    imgd_free(w);
    imgd_free(x);
    imgd_free(y0);
    imgd_free(y1);
}

static void test_backend_registry_lists_names(void) {
    CHECK(imgd_backend_registry_count() >= 2);
    CHECK_STR(imgd_backend_registry_name(0), "cpu");
    imgd_backend *be = NULL;
    CHECK_STATUS(imgd_backend_new("tpu", NULL, &be), IMGD_E_INVALID_ARG);
    CHECK(be == NULL);
    CHECK(strstr(imgd_last_error(), "cpu") != NULL);
    CHECK_STR(imgd_op_name(IMGD_OP_CONV2D), "conv2d");
    CHECK_STR(imgd_op_name(IMGD_OP_COUNT), "unknown");
}

int main(void) {
    RUN(test_plan_chain_of_100_equal_buffers_uses_two);
    RUN(test_plan_chain_of_100_varied_buffers_within_one_of_optimum);
    RUN(test_plan_skip_connections_stay_valid_and_tight);
    RUN(test_plan_random_lifetimes_never_collide);
    RUN(test_plan_rejects_bad_lifetime_and_alignment);
    RUN(test_graph_chain_of_100_ops_plans_optimum_plus_one);
    RUN(test_graph_replay_never_allocates_and_tracks_inputs);
    RUN(test_graph_two_graphs_share_one_buffer);
    RUN(test_graph_builder_errors_are_sticky);
    RUN(test_graph_shape_errors_name_the_problem);
    RUN(test_graph_view_output_keeps_its_storage_alive);
    RUN(test_graph_compute_honours_cancel_flag);
    RUN(test_graph_replans_on_another_backend);
    RUN(test_graph_plan_early_reserves_from_the_node_before);
    RUN(test_graph_fused_quant_linear_skips_the_f32_weight);
    RUN(test_backend_registry_lists_names);
    TEST_END();
}
