/* The UNet builder on a generated, randomly initialised small UNet in diffusers layout with
 * SD 2.x conventions (head_dim instead of a fixed head count, Linear proj_in/proj_out) and
 * SDXL-like uneven depths (a level without attention, a depth-2 level): the cpu backend
 * must equal the reference backend, and every wrong override or input must fail with a
 * message that says what to set, never crash. Also the weight-free planning of the real
 * SD 1.5 UNet at 64x64 latents with CFG batch 2. */
#include <stdarg.h>

#include "base/alloc.h"
#include "base/text.h"
#include "detect/detect.h"
#include "fixtures.h"
#include "models/unet.h"
#include "models/wbind.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#include "test.h"

/* ---- the generated model ------------------------------------------------------------------ */

enum {
    CIN      = 4,
    COUT     = 4,
    CTX      = 12,
    TEMB     = 32,
    LEVELS   = 3,
    LPB      = 1,
    HEAD_DIM = 4
};
static const int64_t k_widths[LEVELS] = {8, 16, 24};
static const int32_t k_depth[LEVELS]  = {1, 0, 2};
#define MID_DEPTH 1

#define ENTRIES_MAX 512

typedef struct gen {
    imgd_st_entry e[ENTRIES_MAX];
    char          names[ENTRIES_MAX][128];
    int           n;
    bool          overflow;
} gen;

static void add(gen *g, const char *name, int32_t nd, int64_t a, int64_t b, int64_t c, int64_t d) {
    if (g->n >= ENTRIES_MAX) {
        g->overflow = true;
        return;
    }
    imgd_st_entry *e = &g->e[g->n];
    memset(e, 0, sizeof *e);
    imgd_fmt(g->names[g->n], sizeof g->names[0], "%s", name);
    e->name      = g->names[g->n];
    e->dtype     = IMGD_DTYPE_F32;
    e->n_dims    = nd;
    int64_t s[4] = {a, b, c, d};
    for (int32_t i = 0; i < nd; i++) e->shape[i] = s[i];
    g->n++;
}

static void addf(gen *g, int32_t nd, int64_t a, int64_t b, int64_t c, int64_t d, const char *fmt,
                 ...) IMGD_PRINTF(7, 8);

static void addf(gen *g, int32_t nd, int64_t a, int64_t b, int64_t c, int64_t d, const char *fmt,
                 ...) {
    char    name[128];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    add(g, name, nd, a, b, c, d);
}

static void gen_norm(gen *g, const char *p, int64_t c) {
    addf(g, 1, c, 0, 0, 0, "%s.weight", p);
    addf(g, 1, c, 0, 0, 0, "%s.bias", p);
}

static void gen_conv(gen *g, const char *p, int64_t o, int64_t i, int64_t k) {
    addf(g, 4, o, i, k, k, "%s.weight", p);
    addf(g, 1, o, 0, 0, 0, "%s.bias", p);
}

static void gen_linear(gen *g, const char *p, int64_t o, int64_t i, bool bias) {
    addf(g, 2, o, i, 0, 0, "%s.weight", p);
    if (bias) addf(g, 1, o, 0, 0, 0, "%s.bias", p);
}

static void gen_resnet(gen *g, const char *p, int64_t cin, int64_t cout) {
    char s[128];
    (void)imgd_fmt(s, sizeof s, "%s.norm1", p);
    gen_norm(g, s, cin);
    (void)imgd_fmt(s, sizeof s, "%s.conv1", p);
    gen_conv(g, s, cout, cin, 3);
    (void)imgd_fmt(s, sizeof s, "%s.time_emb_proj", p);
    gen_linear(g, s, cout, TEMB, true);
    (void)imgd_fmt(s, sizeof s, "%s.norm2", p);
    gen_norm(g, s, cout);
    (void)imgd_fmt(s, sizeof s, "%s.conv2", p);
    gen_conv(g, s, cout, cout, 3);
    if (cin != cout) {
        (void)imgd_fmt(s, sizeof s, "%s.conv_shortcut", p);
        gen_conv(g, s, cout, cin, 1);
    }
}

static void gen_attn(gen *g, const char *p, int64_t c, int64_t kv) {
    char s[128];
    (void)imgd_fmt(s, sizeof s, "%s.to_q", p);
    gen_linear(g, s, c, c, false);
    (void)imgd_fmt(s, sizeof s, "%s.to_k", p);
    gen_linear(g, s, c, kv, false);
    (void)imgd_fmt(s, sizeof s, "%s.to_v", p);
    gen_linear(g, s, c, kv, false);
    (void)imgd_fmt(s, sizeof s, "%s.to_out.0", p);
    gen_linear(g, s, c, c, true);
}

static void gen_transformer(gen *g, const char *p, int64_t c, int32_t depth) {
    char s[160];
    (void)imgd_fmt(s, sizeof s, "%s.norm", p);
    gen_norm(g, s, c);
    (void)imgd_fmt(s, sizeof s, "%s.proj_in", p);
    gen_linear(g, s, c, c, true);
    for (int32_t d = 0; d < depth; d++) {
        char b[128];
        imgd_fmt(b, sizeof b, "%s.transformer_blocks.%d", p, (int)d);
        (void)imgd_fmt(s, sizeof s, "%s.norm1", b);
        gen_norm(g, s, c);
        (void)imgd_fmt(s, sizeof s, "%s.attn1", b);
        gen_attn(g, s, c, c);
        (void)imgd_fmt(s, sizeof s, "%s.norm2", b);
        gen_norm(g, s, c);
        (void)imgd_fmt(s, sizeof s, "%s.attn2", b);
        gen_attn(g, s, c, CTX);
        (void)imgd_fmt(s, sizeof s, "%s.norm3", b);
        gen_norm(g, s, c);
        (void)imgd_fmt(s, sizeof s, "%s.ff.net.0.proj", b);
        gen_linear(g, s, 8 * c, c, true);
        (void)imgd_fmt(s, sizeof s, "%s.ff.net.2", b);
        gen_linear(g, s, c, 4 * c, true);
    }
    (void)imgd_fmt(s, sizeof s, "%s.proj_out", p);
    gen_linear(g, s, c, c, true);
}

/* Every parameter of UNet2DConditionModel for the config above, in diffusers names
 * (written independently of the builder, from diffusers' module tree). */
static void gen_unet(gen *g) {
    char    p[128];
    int64_t skip[32], ns = 0, cur = k_widths[0];
    gen_conv(g, "conv_in", k_widths[0], CIN, 3);
    gen_linear(g, "time_embedding.linear_1", TEMB, k_widths[0], true);
    gen_linear(g, "time_embedding.linear_2", TEMB, TEMB, true);
    skip[ns++] = cur;
    for (int l = 0; l < LEVELS; l++) {
        for (int j = 0; j < LPB; j++) {
            imgd_fmt(p, sizeof p, "down_blocks.%d.resnets.%d", l, j);
            gen_resnet(g, p, cur, k_widths[l]);
            cur = k_widths[l];
            if (k_depth[l]) {
                imgd_fmt(p, sizeof p, "down_blocks.%d.attentions.%d", l, j);
                gen_transformer(g, p, cur, k_depth[l]);
            }
            skip[ns++] = cur;
        }
        if (l + 1 < LEVELS) {
            imgd_fmt(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", l);
            gen_conv(g, p, cur, cur, 3);
            skip[ns++] = cur;
        }
    }
    gen_resnet(g, "mid_block.resnets.0", cur, cur);
    gen_transformer(g, "mid_block.attentions.0", cur, MID_DEPTH);
    gen_resnet(g, "mid_block.resnets.1", cur, cur);
    for (int i = 0; i < LEVELS; i++) {
        int l = LEVELS - 1 - i;
        for (int j = 0; j <= LPB; j++) {
            imgd_fmt(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
            gen_resnet(g, p, cur + skip[--ns], k_widths[l]);
            cur = k_widths[l];
            if (k_depth[l]) {
                imgd_fmt(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
                gen_transformer(g, p, cur, k_depth[l]);
            }
        }
        if (i + 1 < LEVELS) {
            imgd_fmt(p, sizeof p, "up_blocks.%d.upsamplers.0.conv", i);
            gen_conv(g, p, cur, cur, 3);
        }
    }
    gen_norm(g, "conv_norm_out", k_widths[0]);
    gen_conv(g, "conv_out", COUT, k_widths[0], 3);
}

static uint64_t g_rng = 0x243f6a8885a308d3u;

static float nrand(void) { /* approximately N(0, 1): sum of 4 uniforms */
    float s = 0.0f;
    for (int i = 0; i < 4; i++) {
        g_rng ^= g_rng << 13;
        g_rng ^= g_rng >> 7;
        g_rng ^= g_rng << 17;
        s += (float)((double)(g_rng >> 11) / 9007199254740992.0) - 0.5f;
    }
    return s * 1.732f;
}

/* Writes the model with norms ~1 + 0.25 N, biases 0.1 N, weights N / sqrt(fan_in). */
static bool write_model(const char *path) {
    gen *g = imgd_calloc(1, sizeof *g);
    if (!g) return false;
    gen_unet(g);
    imgd_st_writer *wr = NULL;
    bool            ok = !g->overflow &&
              imgd_st_writer_open(path, g->e, (size_t)g->n, NULL, NULL, 0, &wr) == IMGD_OK;
    for (int i = 0; ok && i < g->n; i++) {
        const imgd_st_entry *e = &g->e[i];
        int64_t              n = 1, fan = 1;
        bool                 nrm = strstr(e->name, "norm") && e->n_dims == 1;
        for (int32_t d = 0; d < e->n_dims; d++) n *= e->shape[d];
        for (int32_t d = 1; d < e->n_dims; d++) fan *= e->shape[d];
        for (int64_t k = 0; ok && k < n; k++) {
            float v = e->n_dims == 1 ? (nrm && strstr(e->name, ".weight") ? 1.0f + 0.25f * nrand()
                                                                          : 0.1f * nrand())
                                     : nrand() / sqrtf((float)fan);
            ok      = imgd_st_writer_write(wr, &v, sizeof v) == IMGD_OK;
        }
    }
    if (wr) ok = imgd_st_writer_close(wr) == IMGD_OK && ok;
    imgd_free(g);
    return ok;
}

/* ---- fixture: the opened model ----------------------------------------------------------- */

typedef struct fixture {
    char             path[1024];
    imgd_weights    *w;
    imgd_model_info *mi;
    imgd_wbind      *b;
    imgd_unet_cfg    cfg;
} fixture;

static bool fixture_open(fixture *f) {
    memset(f, 0, sizeof *f);
    tu_tmp_path(f->path, sizeof f->path, "unet-random.safetensors");
    if (!write_model(f->path)) {
        CHECK_MSG(0, "cannot write %s", f->path);
        return false;
    }
    CHECK_STATUS(imgd_weights_open(f->path, NULL, &f->w), IMGD_OK);
    if (f->w) CHECK_STATUS(imgd_model_detect(f->w, &f->mi), IMGD_OK);
    if (f->mi) CHECK_STATUS(imgd_wbind_new(f->w, f->mi, &f->b), IMGD_OK);
    if (f->b) CHECK_STATUS(imgd_unet_cfg_from_detect(f->mi, &f->cfg), IMGD_OK);
    return f->b != NULL;
}

static void fixture_close(fixture *f) {
    imgd_wbind_free(f->b);
    imgd_model_info_free(f->mi);
    imgd_weights_free(f->w);
    (void)remove(f->path);
}

enum {
    B  = 2,
    HS = 16,
    L  = 7
};

static const float k_t2[B] = {981.0f, 3.25f};

/* Builds and runs the UNet on backend `be_name` with deterministic inputs and timesteps
 * t[0..nt) (nt = B, or 1 for one timestep shared by the batch); returns the output (n
 * floats, caller frees) or NULL. */
static float *run_unet_hw(fixture *f, const imgd_unet_cfg *cfg, const char *be_name, const float *t,
                          int64_t nt, int64_t H, int64_t W, size_t *n) {
    static float x[B * CIN * 32 * 32], ctx[B * L * CTX];
    if (H * W > (int64_t)32 * 32) return NULL;
    uint64_t s = 7;
    for (size_t i = 0; i < (size_t)((int64_t)B * CIN * H * W); i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    for (size_t i = 0; i < IMGD_ARRAY_LEN(ctx); i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ctx[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 6.0 - 3.0);
    }
    imgd_backend *be  = NULL;
    imgd_graph   *g   = NULL;
    imgd_tensor  *out = NULL;
    float        *res = NULL;
    REQUIRE(imgd_backend_new(be_name, NULL, &be) == IMGD_OK);
    REQUIRE(imgd_graph_new(NULL, &g) == IMGD_OK);
    imgd_tensor *gx = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4, (int64_t[]){B, CIN, H, W});
    imgd_tensor *gt = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){nt});
    imgd_tensor *gc = imgd_graph_input(g, "ctx", IMGD_DTYPE_F32, 3, (int64_t[]){B, L, CTX});
    CHECK_STATUS(imgd_unet_build(g, f->b, "unet", cfg, gx, gt, gc, NULL, NULL, &out), IMGD_OK);
    REQUIRE(out != NULL);
    imgd_graph_output(g, out);
    REQUIRE(imgd_graph_plan(g, be, NULL) == IMGD_OK);
    REQUIRE(imgd_graph_alloc(g, NULL, 0) == IMGD_OK);
    REQUIRE(imgd_tensor_bind(gx, x) == IMGD_OK &&
            imgd_tensor_bind(gt, (void *)(uintptr_t)t) == IMGD_OK &&
            imgd_tensor_bind(gc, ctx) == IMGD_OK);
    REQUIRE(imgd_graph_compute(g) == IMGD_OK);
    *n  = (size_t)imgd_tensor_numel(out);
    res = imgd_malloc(*n * sizeof *res);
    REQUIRE(res != NULL);
    if (imgd_graph_read_f32(g, out, res, *n) != IMGD_OK) {
        imgd_free(res);
        res = NULL;
    }
done:
    imgd_graph_free(g);
    imgd_backend_free(be);
    return res;
}

static float *run_unet(fixture *f, const imgd_unet_cfg *cfg, const char *be_name, const float *t,
                       int64_t nt, size_t *n) {
    return run_unet_hw(f, cfg, be_name, t, nt, HS, HS, n);
}

/* max |a - r| over n values; *mx receives max |r|. */
static double max_err(const float *a, const float *r, size_t n, double *mx) {
    double err = 0.0;
    *mx        = 0.0;
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)a[i] - (double)r[i]));
        *mx = fmax(*mx, fabs((double)r[i]));
    }
    return err;
}

/* ---- cases ------------------------------------------------------------------------------- */

static void test_unet_random_detects_sd2_style_config(void) {
    fixture f;
    if (!fixture_open(&f)) goto done;
    CHECK_EQ_INT(f.cfg.in_channels, CIN);
    CHECK_EQ_INT(f.cfg.n_levels, LEVELS);
    CHECK_EQ_INT(f.cfg.layers_per_block, LPB);
    CHECK_EQ_INT(f.cfg.context_dim, CTX);
    CHECK_EQ_INT(f.cfg.time_embed_dim, TEMB);
    CHECK_EQ_INT(f.cfg.mid_depth, MID_DEPTH);
    CHECK(f.cfg.linear_proj);
    for (int l = 0; l < LEVELS; l++) {
        CHECK_EQ_INT(f.cfg.widths[l], k_widths[l]);
        CHECK_EQ_INT(f.cfg.attn_depth[l], k_depth[l]);
    }
    CHECK_EQ_INT(imgd_unet_skip_count(&f.cfg), 1 + LEVELS * LPB + LEVELS - 1);
    int32_t ch = 0, div = 0;
    imgd_unet_skip_shape(&f.cfg, 3, &ch, &div); /* conv_in, l0 resnet, l0 down, l1 resnet */
    CHECK_EQ_INT(ch, 16);
    CHECK_EQ_INT(div, 2);
done:
    fixture_close(&f);
}

static void test_unet_random_cpu_equals_ref_with_head_dim(void) {
    fixture f;
    float  *a = NULL, *r = NULL;
    size_t  na = 0, nr = 0;
    if (!fixture_open(&f)) goto done;
    f.cfg.groups   = 4;
    f.cfg.head_dim = HEAD_DIM; /* SD 2.x style: heads = width / 4 -> 2, 4, 6 */
    CHECK_EQ_INT(imgd_unet_heads(&f.cfg, 2), 6);
    a = run_unet(&f, &f.cfg, "cpu", k_t2, B, &na);
    r = run_unet(&f, &f.cfg, "ref", k_t2, B, &nr);
    REQUIRE(a && r && na == nr && na == (size_t)B * COUT * HS * HS);
    double mx  = 0.0;
    double err = max_err(a, r, na, &mx);
    printf("random SD2-style UNet: cpu vs ref max|err| %.3g (max|ref| %.3g)\n", err, mx);
    CHECK(isfinite(err) && mx > 0.1 && err <= 1e-4 * fmax(1.0, mx));
    /* the head split matters: heads 1 everywhere gives another result */
    imgd_unet_cfg one = f.cfg;
    one.head_dim      = 0;
    for (int l = 0; l < IMGD_MAX_LEVELS; l++) one.heads[l] = 1;
    float *o = run_unet(&f, &one, "cpu", k_t2, B, &na);
    if (o) {
        double d = 0.0;
        for (size_t i = 0; i < na; i++) d = fmax(d, fabs((double)o[i] - (double)a[i]));
        CHECK_MSG(d > 1e-3, "heads 1 vs head_dim 4 differ by only %g", d);
    }
    imgd_free(o);
done:
    imgd_free(a);
    imgd_free(r);
    fixture_close(&f);
}

/* One timestep [1] for the whole batch gives what [B] copies of it give. */
static void test_unet_random_shared_timestep_broadcasts(void) {
    fixture     f;
    float      *a = NULL, *r = NULL;
    size_t      na = 0, nr = 0;
    const float t1[1] = {500.5f}, t2[B] = {500.5f, 500.5f};
    if (!fixture_open(&f)) goto done;
    f.cfg.head_dim = HEAD_DIM;
    a              = run_unet(&f, &f.cfg, "cpu", t1, 1, &na);
    r              = run_unet(&f, &f.cfg, "cpu", t2, B, &nr);
    REQUIRE(a && r && na == nr);
    double err = 0.0;
    for (size_t i = 0; i < na; i++) err = fmax(err, fabs((double)a[i] - (double)r[i]));
    CHECK_MSG(err <= 1e-6, "t [1] vs t [2]: max|err| %g", err);
done:
    imgd_free(a);
    imgd_free(r);
    fixture_close(&f);
}

/* Latent sides that are not multiples of the UNet's divisor (4 here): 10 -> 5 -> 3 and
 * 14 -> 7 -> 4 on the way down, each upsampler's output cut to its skip's size on the way
 * up (diffusers' forward_upsample_size); the output keeps the input's size and the cpu
 * kernels agree with the reference backend on those shapes. */
static void test_unet_random_odd_sizes(void) {
    fixture f;
    float  *a = NULL, *r = NULL;
    size_t  na = 0, nr = 0;
    if (!fixture_open(&f)) goto done;
    f.cfg.head_dim = HEAD_DIM;
    a              = run_unet_hw(&f, &f.cfg, "cpu", k_t2, B, 10, 14, &na);
    r              = run_unet_hw(&f, &f.cfg, "ref", k_t2, B, 10, 14, &nr);
    REQUIRE(a && r && na == nr && na == (size_t)B * COUT * 10 * 14);
    double mx  = 0.0;
    double err = max_err(a, r, na, &mx);
    printf("random UNet at latent 14x10: cpu vs ref max|err| %.3g (max|ref| %.3g)\n", err, mx);
    CHECK(isfinite(err) && mx > 0.1 && err <= 1e-4 * fmax(1.0, mx));
done:
    imgd_free(a);
    imgd_free(r);
    fixture_close(&f);
}

/* Builds with cfg and expects failure `want` whose message contains every needle. */
static void expect_fail(fixture *f, const imgd_unet_cfg *cfg, int64_t h, int64_t ctx_dim,
                        imgd_status want, const char *n1, const char *n2) {
    imgd_graph *g = NULL;
    if (imgd_graph_new(NULL, &g) != IMGD_OK) return;
    imgd_tensor *x   = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4, (int64_t[]){1, CIN, h, h});
    imgd_tensor *t   = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){1});
    imgd_tensor *c   = imgd_graph_input(g, "c", IMGD_DTYPE_F32, 3, (int64_t[]){1, L, ctx_dim});
    imgd_tensor *out = NULL;
    CHECK_STATUS(imgd_unet_build(g, f->b, "unet", cfg, x, t, c, NULL, NULL, &out), want);
    CHECK(out == NULL);
    const char *msg = imgd_graph_error(g);
    CHECK_MSG(strstr(msg, n1) && (!n2 || strstr(msg, n2)), "message '%s' lacks '%s' / '%s'", msg,
              n1, n2 ? n2 : "");
    printf("  refused as expected: %s\n", msg);
    imgd_graph_free(g);
}

static void test_unet_random_wrong_overrides_fail_clearly(void) {
    fixture f;
    if (!fixture_open(&f)) goto done;
    f.cfg.head_dim  = HEAD_DIM;
    imgd_unet_cfg c = f.cfg;
    c.groups        = 3; /* does not divide 8 */
    CHECK_STATUS(imgd_unet_cfg_check(&c), IMGD_E_INVALID_ARG);
    expect_fail(&f, &c, HS, CTX, IMGD_E_INVALID_ARG, "groups = 3", "one of 8, 4, 2, 1");
    c.groups = 16; /* divides 16 and 24+... but not 8 */
    expect_fail(&f, &c, HS, CTX, IMGD_E_INVALID_ARG, "groups = 16", "set the groups override");
    c.groups = 0;
    expect_fail(&f, &c, HS, CTX, IMGD_E_INVALID_ARG, "groups = 0", NULL);
    c          = f.cfg;
    c.head_dim = 5;
    expect_fail(&f, &c, HS, CTX, IMGD_E_INVALID_ARG, "head_dim = 5", "level 0");
    c          = f.cfg;
    c.head_dim = 0;
    c.heads[2] = 5; /* 24 channels */
    expect_fail(&f, &c, HS, CTX, IMGD_E_INVALID_ARG, "heads[2] = 5", "divisor of 24");
    c             = f.cfg;
    c.linear_proj = false; /* the file has Linear projections */
    expect_fail(&f, &c, HS, CTX, IMGD_E_FORMAT, "proj_in.weight", "[8, 8, 1, 1]");
    c             = f.cfg;
    c.context_dim = 16; /* the file's cross-attention takes 12 */
    expect_fail(&f, &c, HS, 16, IMGD_E_FORMAT, "attn2.to_k.weight", "[8, 12]");
    expect_fail(&f, &f.cfg, HS, 16, IMGD_E_INVALID_ARG, "encoder hidden states", "12");
    c          = f.cfg;
    c.n_levels = 0;
    CHECK_STATUS(imgd_unet_cfg_check(&c), IMGD_E_INVALID_ARG);
    c                  = f.cfg;
    c.layers_per_block = 100;
    CHECK_STATUS(imgd_unet_cfg_check(&c), IMGD_E_INVALID_ARG);
    /* NULL arguments */
    CHECK_STATUS(imgd_unet_build(NULL, f.b, "unet", &f.cfg, NULL, NULL, NULL, NULL, NULL, NULL),
                 IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_unet_cfg_from_detect(NULL, &c), IMGD_E_INVALID_ARG);
    CHECK_STATUS(imgd_unet_cfg_check(NULL), IMGD_E_INVALID_ARG);
done:
    fixture_close(&f);
}

/* The real SD 1.5 UNet at 64x64 latents, CFG batch 2: planned without weights. */
static void test_unet_plan_sd15_without_weights(void) {
    imgd_unet_cfg c = {
        .in_channels      = 4,
        .out_channels     = 4,
        .n_levels         = 4,
        .layers_per_block = 2,
        .widths           = {320, 640, 1280, 1280},
        .attn_depth       = {1, 1, 1, 0},
        .mid_depth        = 1,
        .context_dim      = 768,
        .time_embed_dim   = 1280,
        .heads            = {8, 8, 8, 8},
        .groups           = 32,
        .norm_eps         = 1e-5f,
        .attn_norm_eps    = 1e-6f,
        .ln_eps           = 1e-5f,
    };
    static const char *const backends[] = {"cpu", "ref"};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(backends); i++) {
        imgd_backend  *be   = NULL;
        imgd_plan_info info = {0};
        CHECK_STATUS(imgd_backend_new(backends[i], NULL, &be), IMGD_OK);
        if (!be) continue;
        CHECK_STATUS(imgd_unet_plan_info(&c, 2, 64, 64, 77, be, &info), IMGD_OK);
        printf("SD 1.5 UNet [2,4,64,64] ctx [2,77,768] on %s: %u nodes, activations %.1f MiB "
               "planned (%.1f MiB without reuse)\n",
               backends[i], info.n_nodes, (double)info.activation_bytes / 1048576.0,
               (double)info.naive_bytes / 1048576.0);
        CHECK(info.activation_bytes > 0 && info.activation_bytes < info.naive_bytes);
        imgd_backend_free(be);
    }
}

int main(void) {
    RUN(test_unet_random_detects_sd2_style_config);
    RUN(test_unet_random_cpu_equals_ref_with_head_dim);
    RUN(test_unet_random_shared_timestep_broadcasts);
    RUN(test_unet_random_wrong_overrides_fail_clearly);
    RUN(test_unet_random_odd_sizes);
    RUN(test_unet_plan_sd15_without_weights);
    TEST_END();
}
