/* A1111 hypernetworks (models/hypernet.h): a synthetic file with known weights (width 4,
 * layer_structure [1, 2, 1], relu, LayerNorm) applied to a context is compared with a hand
 * computation of ctx + mlp(ctx) * strength for the keys and for the values; a width without
 * a module passes through; malformed files are refused naming what is wrong. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/text.h"
#include "formats/safetensors.h"
#include "models/hypernet.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

#define D 4
#define H 8 /* D * 2 */
#define L 3

/* Tensor k of a file: name, dims, values from a formula. */
typedef struct spec {
    const char *name;
    int32_t     nd;
    int64_t     s0, s1;
} spec;

/* kv 0 (keys) and 1 (values): linear.0 [8, 4], LayerNorm linear.2 [8], linear.3 [4, 8],
 * LayerNorm linear.4 [4] (A1111: Linear, ReLU, LayerNorm, Linear, LayerNorm). */
static const spec k_full[] = {
    {"4.0.linear.0.weight", 2, H, D}, {"4.0.linear.0.bias", 1, H, 0},
    {"4.0.linear.2.weight", 1, H, 0}, {"4.0.linear.2.bias", 1, H, 0},
    {"4.0.linear.3.weight", 2, D, H}, {"4.0.linear.3.bias", 1, D, 0},
    {"4.0.linear.4.weight", 1, D, 0}, {"4.0.linear.4.bias", 1, D, 0},
    {"4.1.linear.0.weight", 2, H, D}, {"4.1.linear.0.bias", 1, H, 0},
    {"4.1.linear.2.weight", 1, H, 0}, {"4.1.linear.2.bias", 1, H, 0},
    {"4.1.linear.3.weight", 2, D, H}, {"4.1.linear.3.bias", 1, D, 0},
    {"4.1.linear.4.weight", 1, D, 0}, {"4.1.linear.4.bias", 1, D, 0},
};

static float value(size_t t, size_t i) {
    return (float)((int)((t * 7 + i * 13) % 17) - 8) / 16.0f;
}

static bool write_file(const char *path, const spec *sp, size_t n, const char *act,
                       const char *layer_norm) {
    imgd_st_entry e[32];
    memset(e, 0, sizeof e);
    for (size_t i = 0; i < n; i++) {
        e[i].name     = sp[i].name;
        e[i].dtype    = IMGD_DTYPE_F32;
        e[i].n_dims   = sp[i].nd;
        e[i].shape[0] = sp[i].s0;
        e[i].shape[1] = sp[i].s1;
    }
    const char     *mk[] = {"activation_func", "is_layer_norm", "activate_output"};
    const char     *mv[] = {act, layer_norm, "False"};
    imgd_st_writer *wr   = NULL;
    if (imgd_st_writer_open(path, e, n, mk, mv, 3, &wr) != IMGD_OK) return false;
    bool ok = true;
    for (size_t t = 0; t < n && ok; t++) {
        size_t m = (size_t)sp[t].s0 * (size_t)(sp[t].nd == 2 ? sp[t].s1 : 1);
        for (size_t i = 0; i < m && ok; i++) {
            float v = value(t, i);
            ok      = imgd_st_writer_write(wr, &v, 4) == IMGD_OK;
        }
    }
    if (!ok) {
        imgd_st_writer_abort(wr);
        return false;
    }
    return imgd_st_writer_close(wr) == IMGD_OK;
}

/* The tensor values of k_full index t (as written). */
static void vals(size_t t, double *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (double)value(t, i);
}

static void layer_norm(double *x, size_t n, const double *g, const double *b) {
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= (double)n;
    for (size_t i = 0; i < n; i++) x[i] = (x[i] - mean) / sqrt(var + 1e-5) * g[i] + b[i];
}

/* ctx row x [D] -> x + mlp(x) * s for kv (0 keys, 1 values), by hand. */
static void hand(int kv, const float *x, float s, double *y) {
    size_t o = (size_t)kv * 8;
    double w0[H * D], b0[H], g2[H], b2[H], w3[D * H], b3[D], g4[D], b4[D], h[H], z[D];
    vals(o + 0, w0, (size_t)H * D);
    vals(o + 1, b0, H);
    vals(o + 2, g2, H);
    vals(o + 3, b2, H);
    vals(o + 4, w3, (size_t)D * H);
    vals(o + 5, b3, D);
    vals(o + 6, g4, D);
    vals(o + 7, b4, D);
    for (size_t r = 0; r < H; r++) {
        h[r] = b0[r];
        for (size_t c = 0; c < D; c++) h[r] += w0[r * D + c] * (double)x[c];
        h[r] = h[r] > 0 ? h[r] : 0; /* relu */
    }
    layer_norm(h, H, g2, b2);
    for (size_t r = 0; r < D; r++) {
        z[r] = b3[r];
        for (size_t c = 0; c < H; c++) z[r] += w3[r * H + c] * h[c];
    }
    layer_norm(z, D, g4, b4);
    for (size_t r = 0; r < D; r++) y[r] = (double)x[r] + z[r] * (double)s;
}

static void test_hypernet_matches_hand_computation(void) {
    char path[4096];
    tu_tmp_path(path, sizeof path, "hypernet-ok.safetensors");
    imgd_hypernet *hn = NULL;
    imgd_backend  *be = NULL;
    imgd_graph    *g  = NULL;
    REQUIRE(write_file(path, k_full, IMGD_ARRAY_LEN(k_full), "relu", "True"));
    CHECK_STATUS(imgd_hypernet_load(path, &hn), IMGD_OK);
    REQUIRE(hn);
    CHECK_EQ_INT(hn->n, 1);
    CHECK_EQ_INT(hn->dim[0], D);
    CHECK_EQ_INT(hn->kv[0][0].n, 4);
    CHECK(hn->kv[0][0].layer[0].act && !hn->kv[0][0].layer[2].act);
    REQUIRE(imgd_backend_new("cpu", NULL, &be) == IMGD_OK);
    REQUIRE(imgd_graph_new(NULL, &g) == IMGD_OK);
    imgd_tensor *c  = imgd_graph_input(g, "ctx", IMGD_DTYPE_F32, 3, (int64_t[]){1, L, D});
    imgd_tensor *c5 = imgd_graph_input(g, "ctx5", IMGD_DTYPE_F32, 3, (int64_t[]){1, L, 5});
    imgd_tensor *k  = imgd_hypernet_apply(g, hn, 0, c, 0.7f);
    imgd_tensor *v  = imgd_hypernet_apply(g, hn, 1, c, 0.7f);
    CHECK(imgd_hypernet_apply(g, hn, 0, c5, 0.7f) == c5); /* no module of width 5 */
    REQUIRE(k && v);
    imgd_graph_output(g, k);
    imgd_graph_output(g, v);
    REQUIRE(imgd_graph_plan(g, be, NULL) == IMGD_OK);
    REQUIRE(imgd_graph_alloc(g, NULL, 0) == IMGD_OK);
    float x[L * D], x5[L * 5] = {0}, ok_[L * D], ov[L * D];
    for (size_t i = 0; i < (size_t)L * D; i++) x[i] = (float)((int)(i * 5 % 11) - 5) / 4.0f;
    REQUIRE(imgd_tensor_bind(c, x) == IMGD_OK && imgd_tensor_bind(c5, x5) == IMGD_OK);
    REQUIRE(imgd_graph_compute(g) == IMGD_OK);
    REQUIRE(imgd_graph_read_f32(g, k, ok_, (size_t)L * D) == IMGD_OK);
    REQUIRE(imgd_graph_read_f32(g, v, ov, (size_t)L * D) == IMGD_OK);
    double err = 0, moved = 0;
    for (size_t r = 0; r < L; r++) {
        double yk[D], yv[D];
        hand(0, x + r * D, 0.7f, yk);
        hand(1, x + r * D, 0.7f, yv);
        for (size_t i = 0; i < D; i++) {
            err   = fmax(err, fabs(yk[i] - (double)ok_[r * D + i]));
            err   = fmax(err, fabs(yv[i] - (double)ov[r * D + i]));
            moved = fmax(moved, fabs(yk[i] - (double)x[r * D + i]));
        }
    }
    CHECK_MSG(err < 1e-5, "max |graph - hand| %.3g", err);
    CHECK_MSG(moved > 1e-2, "the hypernetwork changed nothing (%.3g)", moved);
done:
    imgd_graph_free(g);
    imgd_backend_free(be);
    imgd_hypernet_free(hn);
}

static void refuse(const spec *sp, size_t n, const char *act, const char *ln, imgd_status want,
                   const char *part, int line) {
    char path[4096];
    tu_tmp_path(path, sizeof path, "hypernet-bad.safetensors");
    if (!write_file(path, sp, n, act, ln)) {
        CHECK_MSG(false, "line %d: cannot write the file", line);
        return;
    }
    imgd_hypernet *hn = NULL;
    imgd_status    st = imgd_hypernet_load(path, &hn);
    CHECK_MSG(st == want && !hn && strstr(imgd_last_error(), part), "line %d: %d %s", line, (int)st,
              imgd_last_error());
    imgd_hypernet_free(hn);
}
#define REFUSE(sp, n, a, l, st, part) refuse(sp, n, a, l, st, part, __LINE__)

static void test_hypernet_refuses_malformed_files(void) {
    spec   s[32];
    size_t n = IMGD_ARRAY_LEN(k_full);
    REFUSE(k_full, n, "tanh", "True", IMGD_E_UNSUPPORTED, "activation_func 'tanh'");
    REFUSE(k_full, n, "relu", "False", IMGD_E_FORMAT, "is_layer_norm is False");
    REFUSE(k_full, n, "relu", "maybe", IMGD_E_FORMAT, "True or False");
    memcpy(s, k_full, sizeof k_full); /* a stray tensor */
    s[3].name = "4.0.proj.weight";
    REFUSE(s, n, "relu", "True", IMGD_E_FORMAT, "'4.0.proj.weight'");
    REFUSE(k_full, n - 1, "relu", "True", IMGD_E_FORMAT, "4.1.linear.4 has a weight but no bias");
    memcpy(s, k_full, sizeof k_full); /* linear.3 takes 4, not 8 */
    s[12].s1 = D;
    REFUSE(s, n, "relu", "True", IMGD_E_FORMAT, "4.1.linear.3");
    REFUSE(k_full, 8, "relu", "True", IMGD_E_FORMAT, "value MLP of width 4 has no Linear");
    char path[4096];
    tu_tmp_path(path, sizeof path, "hypernet-absent.pt");
    imgd_hypernet *hn = NULL;
    CHECK(imgd_hypernet_load(path, &hn) != IMGD_OK && !hn);
}

int main(void) {
    RUN(test_hypernet_matches_hand_computation);
    RUN(test_hypernet_refuses_malformed_files);
    TEST_END();
}
