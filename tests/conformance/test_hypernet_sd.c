/* A1111 hypernetworks in generation, on the narrow SD 1.5 model (and SDXL): synthetic files
 * written here (layer_structure [1, 2, 1], relu, as A1111 trains them) hooked into the UNet's
 * attentions. Checks: weight 0 and a zero last layer give the plain output bit for bit; with
 * a hypernetwork of the context width only (identical key and value MLPs), the UNet output is
 * the plain UNet's on c' = c + mlp(c) * w computed here, also for two chained files; a
 * self-attention width changes the output; a file that matches no width is refused naming
 * both width lists; <hypernet:name:w> prompt tags give the structured list's image, are
 * removed from the text, and changing the set rebuilds the kept UNet graph; the batch key and
 * the infotext. */
#include <math.h>

#include "base/alloc.h"
#include "base/text.h"
#include "formats/safetensors.h"
#include "golden.h"
#include "pipeline/pipeline.h"
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

static char g_shared[4096]; /* ../shared */

/* ---- synthetic hypernetwork files ----------------------------------------------------------- */

/* One MLP [d -> hid -> d] (hid 0: one Linear [d, d]), f32 values. */
typedef struct mlp {
    int32_t d, hid;
    float  *w0, *b0, *w1, *b1; /* w0 [hid or d, d]; w1 [d, hid] (hid > 0) */
} mlp;

typedef struct hnet {
    int32_t n;
    mlp     kv[4][2];
} hnet;

static uint32_t g_seed = 12345u;

static float rnd(float a) {
    g_seed = g_seed * 1664525u + 1013904223u;
    return ((float)(g_seed >> 8) / 16777216.0f * 2.0f - 1.0f) * a;
}

static float *fill(size_t n, float a, bool zero) {
    float *p = imgd_malloc(n * sizeof *p);
    for (size_t i = 0; p && i < n; i++) p[i] = zero ? 0.0f : rnd(a);
    return p;
}

/* MLP of width d; zero_last: the output layer's weight and bias are zero. */
static void mlp_init(mlp *m, int32_t d, int32_t hid, bool zero_last) {
    int32_t o0 = hid ? hid : d;
    m->d       = d;
    m->hid     = hid;
    m->w0      = fill((size_t)o0 * (size_t)d, 1.0f / sqrtf((float)d), !hid && zero_last);
    m->b0      = fill((size_t)o0, 0.1f, !hid && zero_last);
    m->w1      = hid ? fill((size_t)d * (size_t)hid, 1.0f / sqrtf((float)hid), zero_last) : NULL;
    m->b1      = hid ? fill((size_t)d, 0.1f, zero_last) : NULL;
}

static void mlp_free(mlp *m) {
    imgd_free(m->w0);
    imgd_free(m->b0);
    imgd_free(m->w1);
    imgd_free(m->b1);
}

/* A hypernetwork of the widths dims[0..n); same_kv: the value MLPs equal the key MLPs. */
static void hnet_init(hnet *h, const int32_t *dims, int32_t n, int32_t mult, bool zero_last,
                      bool same_kv) {
    memset(h, 0, sizeof *h);
    h->n = n;
    for (int32_t i = 0; i < n; i++) {
        mlp_init(&h->kv[i][0], dims[i], mult * dims[i], zero_last);
        if (same_kv) {
            mlp    *k = &h->kv[i][0], *v = &h->kv[i][1];
            int32_t o0 = k->hid ? k->hid : k->d;
            v->d       = k->d;
            v->hid     = k->hid;
            v->w0      = imgd_malloc((size_t)o0 * (size_t)k->d * 4);
            v->b0      = imgd_malloc((size_t)o0 * 4);
            memcpy(v->w0, k->w0, (size_t)o0 * (size_t)k->d * 4);
            memcpy(v->b0, k->b0, (size_t)o0 * 4);
            if (k->hid) {
                v->w1 = imgd_malloc((size_t)k->d * (size_t)k->hid * 4);
                v->b1 = imgd_malloc((size_t)k->d * 4);
                memcpy(v->w1, k->w1, (size_t)k->d * (size_t)k->hid * 4);
                memcpy(v->b1, k->b1, (size_t)k->d * 4);
            }
        } else {
            mlp_init(&h->kv[i][1], dims[i], mult * dims[i], zero_last);
        }
    }
}

static void hnet_free(hnet *h) {
    for (int32_t i = 0; i < h->n; i++) {
        mlp_free(&h->kv[i][0]);
        mlp_free(&h->kv[i][1]);
    }
}

/* Writes h as an A1111-style safetensors hypernetwork: "<d>.<kv>.linear.0" and ".2" (ReLU
 * between them at index 1), metadata activation_func relu, no LayerNorm. */
static bool hnet_write(const hnet *h, const char *path) {
    imgd_st_entry e[64];
    const float  *data[64];
    char          names[64][48];
    size_t        n = 0;
    memset(e, 0, sizeof e);
    for (int32_t i = 0; i < h->n; i++) {
        for (int32_t kv = 0; kv < 2; kv++) {
            const mlp *m  = &h->kv[i][kv];
            int32_t    o0 = m->hid ? m->hid : m->d;
            for (int32_t part = 0; part < (m->hid ? 4 : 2); part++) {
                bool bias = part % 2 == 1;
                int  li   = part < 2 ? 0 : 2;
                (void)imgd_fmt(names[n], sizeof names[n], "%d.%d.linear.%d.%s", (int)m->d, (int)kv,
                               li, bias ? "bias" : "weight");
                e[n].name     = names[n];
                e[n].dtype    = IMGD_DTYPE_F32;
                e[n].n_dims   = bias ? 1 : 2;
                e[n].shape[0] = part < 2 ? o0 : m->d;
                e[n].shape[1] = part < 2 ? m->d : m->hid;
                data[n]       = part == 0 ? m->w0 : part == 1 ? m->b0 : part == 2 ? m->w1 : m->b1;
                n++;
            }
        }
    }
    const char     *mk[] = {"activation_func", "is_layer_norm", "activate_output"};
    const char     *mv[] = {"relu", "False", "False"};
    imgd_st_writer *wr   = NULL;
    if (imgd_st_writer_open(path, e, n, mk, mv, 3, &wr) != IMGD_OK) return false;
    for (size_t t = 0; t < n; t++) {
        size_t c = (size_t)e[t].shape[0] * (size_t)(e[t].n_dims == 2 ? e[t].shape[1] : 1);
        if (imgd_st_writer_write(wr, data[t], c * 4) != IMGD_OK) {
            imgd_st_writer_abort(wr);
            return false;
        }
    }
    return imgd_st_writer_close(wr) == IMGD_OK;
}

/* c (rows of width d) <- c + mlp(c) * w for the hypernetwork's MLP of width d (keys), in
 * double, rounded to f32 as the next UNet input. */
static void hand_apply(const hnet *h, float *c, size_t rows, int32_t d, float w) {
    const mlp *m = NULL;
    for (int32_t i = 0; i < h->n; i++)
        if (h->kv[i][0].d == d) m = &h->kv[i][0];
    if (!m) return;
    double *hid = imgd_malloc((size_t)(m->hid ? m->hid : d) * sizeof *hid);
    for (size_t r = 0; r < rows; r++) {
        float  *x  = c + r * (size_t)d;
        int32_t o0 = m->hid ? m->hid : d;
        for (int32_t o = 0; o < o0; o++) {
            double s = (double)m->b0[o];
            for (int32_t k = 0; k < d; k++) s += (double)m->w0[(size_t)o * d + k] * (double)x[k];
            hid[o] = m->hid ? (s > 0 ? s : 0) : s;
        }
        double y[64];
        for (int32_t o = 0; o < d; o++) {
            double s = m->hid ? (double)m->b1[o] : hid[o];
            for (int32_t k = 0; m->hid && k < m->hid; k++)
                s += (double)m->w1[(size_t)o * m->hid + k] * hid[k];
            y[o] = s;
        }
        for (int32_t o = 0; o < d; o++) x[o] = (float)((double)x[o] + y[o] * (double)w);
    }
    imgd_free(hid);
}

/* ---- helpers ----------------------------------------------------------------------------------
 */

static imgd_model *load_sd15(const char *hn_dir) {
    imgd_load_params lp = imgd_load_params_default();
    lp.hypernet_dir     = hn_dir;
    return tg_load_sd15(g_shared, lp);
}

/* a and b hold the same bits (n floats). */
static bool bit_equal(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t x, y;
        memcpy(&x, &a[i], sizeof x);
        memcpy(&y, &b[i], sizeof y);
        if (x != y) return false;
    }
    return true;
}

#define NU ((size_t)2 * 4 * 32 * 32)
#define NC ((size_t)2 * 77 * 16)

/* The UNet of m with cfg on the golden sample and timesteps, context ctx, the hypernetworks
 * hn[0..n) with weights w (ordered). */
static bool run_unet(imgd_model *m, const imgd_unet_cfg *cfg, imgd_weights *gd, const float *ctx,
                     const imgd_hypernet *const *hn, const float *w, int32_t n, float *out) {
    imgd_graph *g = NULL;
    if (imgd_graph_new(NULL, &g) != IMGD_OK) return false;
    imgd_tensor    *x = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4, (int64_t[]){2, 4, 32, 32});
    imgd_tensor    *t = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){2});
    imgd_tensor    *c = imgd_graph_input(g, "c", IMGD_DTYPE_F32, 3, (int64_t[]){2, 77, 16});
    imgd_tensor    *o = NULL;
    imgd_unet_extra ex;
    memset(&ex, 0, sizeof ex);
    ex.hypernets        = hn;
    ex.hypernet_weights = w;
    ex.n_hypernets      = n;
    imgd_status st =
        imgd_unet_build(g, imgd_sd_unet_bind(m), "unet", cfg, x, t, c, n ? &ex : NULL, NULL, &o);
    const float *gx = tg_golden_n(gd, "sample", NU), *gt = tg_golden_n(gd, "timestep", 2);
    if (st == IMGD_OK && gx && gt) {
        imgd_graph_output(g, o);
        st = imgd_graph_plan(g, m->be, NULL);
        if (st == IMGD_OK) st = imgd_graph_alloc(g, NULL, 0);
        if (st == IMGD_OK) st = imgd_tensor_bind(x, (void *)(uintptr_t)gx);
        if (st == IMGD_OK) st = imgd_tensor_bind(t, (void *)(uintptr_t)gt);
        if (st == IMGD_OK) st = imgd_tensor_bind(c, (void *)(uintptr_t)ctx);
        if (st == IMGD_OK) st = imgd_graph_compute(g);
        if (st == IMGD_OK) st = imgd_graph_read_f32(g, o, out, NU);
    }
    CHECK_MSG(st == IMGD_OK, "unet: %s", imgd_last_error());
    imgd_graph_free(g);
    return st == IMGD_OK;
}

static imgd_hypernet *write_load(const hnet *h, const char *name, char *path, size_t cap) {
    tu_tmp_path(path, cap, name);
    imgd_hypernet *hn = NULL;
    if (!hnet_write(h, path)) {
        CHECK_MSG(0, "cannot write %s", path);
        return NULL;
    }
    CHECK_STATUS(imgd_hypernet_load(path, &hn), IMGD_OK);
    return hn;
}

/* ---- the UNet hook ----------------------------------------------------------------------------
 */

/* (b) The context width only: the hooked UNet on c equals the plain UNet on c' (computed
 * here); two files chain. sd15-narrow's level 1 self-attention is 16 wide like the context,
 * so these runs build the UNet without level 1's attentions (its weights unused): then 16 is
 * the cross-attentions' width alone. */
static void test_hypernet_sd_context_width_feeds_to_k_to_v(void) {
    char          gp[4096], p1[4096], p2[4096];
    imgd_weights *gd = NULL;
    hnet          a, b;
    hnet_init(&a, (int32_t[]){16}, 1, 2, false, true);
    hnet_init(&b, (int32_t[]){16}, 1, 0, false, true);
    imgd_hypernet *ha = write_load(&a, "hn-ctx-a.safetensors", p1, sizeof p1);
    imgd_hypernet *hb = write_load(&b, "hn-ctx-b.safetensors", p2, sizeof p2);
    imgd_model    *m  = load_sd15(NULL);
    float         *o1 = imgd_malloc(NU * 4), *o2 = imgd_malloc(NU * 4), *o0 = imgd_malloc(NU * 4);
    float         *cc = imgd_malloc(NC * 4);
    (void)imgd_fmt(gp, sizeof gp, "%s/conformance/sd15-narrow/goldens/unet.safetensors", g_shared);
    CHECK_STATUS(imgd_weights_open(gp, NULL, &gd), IMGD_OK);
    REQUIRE(ha && hb && m && gd && o1 && o2 && o0 && cc);
    const float *gc = tg_golden_n(gd, "encoder_hidden_states", NC);
    REQUIRE(gc);
    imgd_unet_cfg cfg = m->unet;
    cfg.attn_depth[1] = 0;
    int32_t dims[16];
    int32_t nd = imgd_unet_attn_widths(&cfg, dims, 16);
    CHECK(nd == 3 && dims[0] == 8 && dims[1] == 16 && dims[2] == 32);
    nd = imgd_unet_attn_widths(&m->unet, dims, 16);
    CHECK(nd == 3 && dims[0] == 8 && dims[1] == 16 && dims[2] == 32);

    /* one file */
    const imgd_hypernet *one[1] = {ha};
    float                w1[1]  = {0.7f};
    REQUIRE(run_unet(m, &cfg, gd, gc, one, w1, 1, o1));
    memcpy(cc, gc, NC * 4);
    hand_apply(&a, cc, (size_t)2 * 77, 16, 0.7f);
    REQUIRE(run_unet(m, &cfg, gd, cc, NULL, NULL, 0, o2));
    REQUIRE(run_unet(m, &cfg, gd, gc, NULL, NULL, 0, o0));
    double e = tg_rel_err(o1, o2, NU), moved = tg_rel_err(o0, o2, NU);
    printf("  context width, one file: hooked vs plain on c' %.2e (the hook moves it %.2e)\n", e,
           moved);
    CHECK_MSG(e <= 1e-5, "hooked UNet vs plain UNet on c + mlp(c) w: %g", e);
    CHECK_MSG(moved > 1e-3, "the hypernetwork hardly changed the output (%g)", moved);

    /* two files, in order: c'' = b(a(c)) */
    const imgd_hypernet *two[2] = {ha, hb};
    float                w2[2]  = {0.5f, -1.25f};
    REQUIRE(run_unet(m, &cfg, gd, gc, two, w2, 2, o1));
    memcpy(cc, gc, NC * 4);
    hand_apply(&a, cc, (size_t)2 * 77, 16, 0.5f);
    hand_apply(&b, cc, (size_t)2 * 77, 16, -1.25f);
    REQUIRE(run_unet(m, &cfg, gd, cc, NULL, NULL, 0, o2));
    e = tg_rel_err(o1, o2, NU);
    printf("  context width, two files chained: %.2e\n", e);
    CHECK_MSG(e <= 1e-5, "chained hypernetworks vs plain UNet on b(a(c)): %g", e);
done:
    imgd_free(o0);
    imgd_free(o1);
    imgd_free(o2);
    imgd_free(cc);
    imgd_weights_free(gd);
    imgd_model_free(m);
    imgd_hypernet_free(ha);
    imgd_hypernet_free(hb);
    hnet_free(&a);
    hnet_free(&b);
    (void)remove(p1);
    (void)remove(p2);
}

/* (a) and (c) on the full UNet: weight 0 and a zero last layer change nothing (bit for bit);
 * a hypernetwork of a self-attention width only (8: level 0) changes the output. */
static void test_hypernet_sd_self_attention_is_hooked(void) {
    char          gp[4096], p1[4096], p2[4096];
    imgd_weights *gd = NULL;
    hnet          s8, z;
    hnet_init(&s8, (int32_t[]){8}, 1, 2, false, false);
    hnet_init(&z, (int32_t[]){8, 16, 32}, 3, 2, true, false);
    imgd_hypernet *hs = write_load(&s8, "hn-self8.safetensors", p1, sizeof p1);
    imgd_hypernet *hz = write_load(&z, "hn-zero.safetensors", p2, sizeof p2);
    imgd_model    *m  = load_sd15(NULL);
    float         *o0 = imgd_malloc(NU * 4), *o1 = imgd_malloc(NU * 4);
    (void)imgd_fmt(gp, sizeof gp, "%s/conformance/sd15-narrow/goldens/unet.safetensors", g_shared);
    CHECK_STATUS(imgd_weights_open(gp, NULL, &gd), IMGD_OK);
    REQUIRE(hs && hz && m && gd && o0 && o1);
    const float *gc = tg_golden_n(gd, "encoder_hidden_states", NC);
    REQUIRE(gc && run_unet(m, &m->unet, gd, gc, NULL, NULL, 0, o0));
    const imgd_hypernet *l[1] = {hz};
    float                w[1] = {1.0f};
    REQUIRE(run_unet(m, &m->unet, gd, gc, l, w, 1, o1));
    CHECK_MSG(bit_equal(o0, o1, NU), "a zero last layer changed the UNet output (%.3g)",
              tg_rel_err(o1, o0, NU));
    l[0] = hs;
    w[0] = 0.0f;
    REQUIRE(run_unet(m, &m->unet, gd, gc, l, w, 1, o1));
    CHECK_MSG(bit_equal(o0, o1, NU), "weight 0 changed the UNet output (%.3g)",
              tg_rel_err(o1, o0, NU));
    w[0] = 1.0f;
    REQUIRE(run_unet(m, &m->unet, gd, gc, l, w, 1, o1));
    double moved = tg_rel_err(o1, o0, NU);
    printf("  self-attention width 8: output moved %.2e\n", moved);
    CHECK_MSG(moved > 1e-3, "a width-8 (self-attention) hypernetwork changed nothing (%g)", moved);
done:
    imgd_free(o0);
    imgd_free(o1);
    imgd_weights_free(gd);
    imgd_model_free(m);
    imgd_hypernet_free(hs);
    imgd_hypernet_free(hz);
    hnet_free(&s8);
    hnet_free(&z);
    (void)remove(p1);
    (void)remove(p2);
}

/* ---- the pipeline ------------------------------------------------------------------------------
 */

static float *gen(imgd_model *m, const char *prompt, const imgd_hypernet_spec *hs, int32_t n,
                  imgd_status want, char **info) {
    imgd_gen_params p   = imgd_gen_params_default();
    p.prompt            = prompt;
    p.negative          = "blurry";
    p.steps             = 2;
    p.width             = 64;
    p.height            = 64;
    p.seed              = 7;
    p.hypernets         = hs;
    p.n_hypernets       = n;
    imgd_gen_result *r  = NULL;
    imgd_status      st = imgd_generate(m, &p, &r);
    CHECK_MSG(st == want, "generate '%s': %s (%s)", prompt, imgd_status_name(st),
              imgd_last_error());
    if (st != IMGD_OK) return NULL;
    size_t np  = (size_t)3 * 64 * 64;
    float *out = imgd_malloc(np * sizeof *out);
    if (out) memcpy(out, r->pixels, np * sizeof *out);
    if (info) *info = r->infotext ? imgd_strdup(r->infotext) : NULL;
    imgd_gen_result_free(r);
    return out;
}

static bool same(const float *a, const float *b) {
    return a && b && bit_equal(a, b, (size_t)3 * 64 * 64);
}

/* (a), (e) and the kept graph through imgd_generate: weight 0 = no hypernetwork, a tag gives
 * the structured list's image (and is not tokenized), removing the set gives the plain image
 * back, another weight another image; batching and infotext. */
static void test_hypernet_sd_generate_tags_and_graph_refresh(void) {
    char name[64], path[4096], tag[256], tag0[256], tagd[256];
    hnet h;
    hnet_init(&h, (int32_t[]){8, 16, 32}, 3, 2, false, false);
    (void)imgd_fmt(name, sizeof name, "%ld-hngen", (long)getpid());
    tu_tmp_path(path, sizeof path, "hngen.safetensors");
    CHECK(hnet_write(&h, path));
    imgd_model *m     = load_sd15(tu_tmpdir());
    float      *plain = NULL, *zero = NULL, *list = NULL, *tagged = NULL, *again = NULL;
    float      *other = NULL, *tag_w0 = NULL, *dflt = NULL;
    char       *info = NULL;
    REQUIRE(m);
    const char *pr = "a photograph of an astronaut riding a horse";
    (void)imgd_fmt(tag, sizeof tag, "%s <hypernet:%s:0.7>", pr, name);
    (void)imgd_fmt(tag0, sizeof tag0, "%s<hypernet:%s:0>", pr, name);
    (void)imgd_fmt(tagd, sizeof tagd, "<hypernet:%s>%s", name, pr);
    imgd_hypernet_spec s07 = {path, 0.7f}, s0 = {name, 0.0f}, s03 = {path, 0.3f}, s1 = {name, 1};
    plain        = gen(m, pr, NULL, 0, IMGD_OK, NULL);
    zero         = gen(m, pr, &s0, 1, IMGD_OK, NULL);
    list         = gen(m, pr, &s07, 1, IMGD_OK, &info);
    tagged       = gen(m, tag, NULL, 0, IMGD_OK, NULL);
    again        = gen(m, pr, NULL, 0, IMGD_OK, NULL);
    other        = gen(m, pr, &s03, 1, IMGD_OK, NULL);
    tag_w0       = gen(m, tag0, NULL, 0, IMGD_OK, NULL);
    dflt         = gen(m, tagd, &s1, 0, IMGD_OK, NULL);
    float *dlist = gen(m, pr, &s1, 1, IMGD_OK, NULL);
    CHECK_MSG(same(plain, zero), "weight 0 changed the image");
    CHECK_MSG(plain && list && !same(plain, list), "the hypernetwork changed nothing");
    CHECK_MSG(same(list, tagged), "<hypernet:name:0.7> differs from hypernets[] {path, 0.7}");
    CHECK_MSG(same(plain, again), "removing the hypernetwork did not give the plain image back");
    CHECK_MSG(other && !same(other, list), "weight 0.3 gave the 0.7 image (graph not rebuilt)");
    CHECK_MSG(same(plain, tag_w0), "a weight-0 tag changed the image (tag tokenized?)");
    CHECK_MSG(same(dflt, dlist), "<hypernet:name> is not weight 1");
    imgd_free(dlist);
    CHECK_MSG(info && strstr(info, "Hypernet: ") && strstr(info, "Hypernet strength: 0.7"),
              "infotext: %s", info ? info : "(null)");

    /* a tag naming no file; the batch key and batchability */
    char nofile[300];
    (void)imgd_fmt(nofile, sizeof nofile, "%s <hypernet:no-such-hn:1>", pr);
    float *bad = gen(m, nofile, NULL, 0, IMGD_E_INVALID_ARG, NULL);
    CHECK(!bad && strstr(imgd_last_error(), "no-such-hn") &&
          strstr(imgd_last_error(), "--hypernet-dir"));
    imgd_gen_params a = imgd_gen_params_default(), b = imgd_gen_params_default();
    a.prompt          = pr;
    b.prompt          = tag;
    const char *field = NULL;
    CHECK(!imgd_gen_params_batchable(m, &a, &b, &field) && field &&
          strcmp(field, "hypernets") == 0);
    char ka[IMGD_GEN_BATCH_KEY_MAX], kb[IMGD_GEN_BATCH_KEY_MAX];
    CHECK_STATUS(imgd_gen_batch_key(m, &a, ka, sizeof ka), IMGD_OK);
    CHECK_STATUS(imgd_gen_batch_key(m, &b, kb, sizeof kb), IMGD_OK);
    CHECK(strcmp(ka, kb) != 0 && strstr(kb, " hn="));
    b.prompt      = pr;
    b.hypernets   = &s07;
    b.n_hypernets = 1;
    a.prompt      = tag;
    CHECK(imgd_gen_params_batchable(m, &a, &b, &field));
    /* every adapter at once: too long to spell out, the adapters' part becomes one hash,
     * still different per set */
    {
        char lp[4096], cp[4096], k1[IMGD_GEN_BATCH_KEY_MAX], k2[IMGD_GEN_BATCH_KEY_MAX];
        (void)imgd_fmt(lp, sizeof lp,
                       "%s/conformance/sd15-narrow/lora/narrow-lora_kohya.safetensors", g_shared);
        (void)imgd_fmt(cp, sizeof cp, "%s/conformance/sd15-narrow/controlnet/diffusers", g_shared);
        uint8_t           px[3 * 8 * 8] = {0};
        imgd_image_u8     ci            = {8, 8, 3, px};
        imgd_lora_spec    ls            = {lp, 0.5f, NAN, IMGD_LORA_MODE_AUTO};
        imgd_control_spec cs            = imgd_control_spec_default();
        cs.path                         = cp;
        cs.image                        = &ci;
        b.loras                         = &ls;
        b.n_loras                       = 1;
        b.controls                      = &cs;
        b.n_controls                    = 1;
        b.init                          = &ci;
        b.strength                      = 0.123456789f;
        b.width = b.height = 8192;
        b.steps            = 1000;
        b.sampler          = "dpmpp_2m_sde";
        b.schedule         = "sgm_uniform";
        CHECK_STATUS(imgd_gen_batch_key(m, &b, k1, sizeof k1), IMGD_OK);
        ls.weight = 0.25f;
        CHECK_STATUS(imgd_gen_batch_key(m, &b, k2, sizeof k2), IMGD_OK);
        CHECK_MSG(strstr(k1, " adapters=") && strcmp(k1, k2) != 0, "%s / %s", k1, k2);
    }
done:
    imgd_free(plain);
    imgd_free(zero);
    imgd_free(list);
    imgd_free(tagged);
    imgd_free(again);
    imgd_free(other);
    imgd_free(tag_w0);
    imgd_free(dflt);
    imgd_free(info);
    imgd_model_free(m);
    hnet_free(&h);
    (void)remove(path);
}

/* (d) A file whose widths match no attention of the model is refused, naming both lists. */
static void test_hypernet_sd_refuses_other_family_widths(void) {
    char path[4096];
    hnet h;
    hnet_init(&h, (int32_t[]){40, 768}, 2, 0, false, false);
    tu_tmp_path(path, sizeof path, "hn-768.safetensors");
    CHECK(hnet_write(&h, path));
    imgd_model *m = load_sd15(NULL);
    REQUIRE(m);
    imgd_hypernet_spec s   = {path, 1.0f};
    float             *out = gen(m, "a cat", &s, 1, IMGD_E_UNSUPPORTED, NULL);
    const char        *e   = imgd_last_error();
    CHECK(!out);
    CHECK_MSG(strstr(e, path) && strstr(e, "(40, 768)") && strstr(e, "8, 16, 32"), "message: %s",
              e);
    /* the model still generates without it */
    float *ok = gen(m, "a cat", NULL, 0, IMGD_OK, NULL);
    CHECK(ok);
    imgd_free(ok);
done:
    imgd_model_free(m);
    hnet_free(&h);
    (void)remove(path);
}

/* The ControlNet's residuals for one step on fixed inputs, p's hypernetworks applied; all
 * residuals concatenated into out (cap floats); returns the count (0 on failure). */
static size_t control_res(imgd_model *m, const imgd_gen_params *p, float *out, size_t cap) {
    imgd_sd_control_run *run = NULL;
    imgd_sd_control_item it  = {p, 0, 1, false};
    size_t               n   = 0;
    float                x[4 * 8 * 8], t[1] = {500.0f}, ctx[77 * 16];
    for (size_t i = 0; i < IMGD_ARRAY_LEN(x); i++) x[i] = (float)((int)(i * 7 % 13) - 6) / 4.0f;
    for (size_t i = 0; i < IMGD_ARRAY_LEN(ctx); i++) ctx[i] = (float)((int)(i * 5 % 11) - 5) / 3.0f;
    imgd_status st = imgd_sd_hypernet_apply(m, p);
    if (st == IMGD_OK) st = imgd_sd_control_begin(m, &it, 1, 1, 8, 8, 77, &run);
    if (st == IMGD_OK) st = imgd_sd_control_step(run, x, 4, t, ctx, NULL, NULL, 0, 1);
    int32_t k = 0;
    for (; st == IMGD_OK && imgd_sd_control_res(run, k); k++) {
        int32_t ch = m->unet.widths[m->unet.n_levels - 1], div = 1 << (m->unet.n_levels - 1);
        if (k < imgd_unet_skip_count(&m->unet)) imgd_unet_skip_shape(&m->unet, k, &ch, &div);
        size_t c = (size_t)ch * (size_t)(8 / div) * (size_t)(8 / div);
        if (n + c > cap) break;
        memcpy(out + n, imgd_sd_control_res(run, k), c * sizeof *out);
        n += c;
    }
    CHECK_MSG(st == IMGD_OK && k == imgd_unet_skip_count(&m->unet) + 1, "control run: %s",
              imgd_last_error());
    imgd_sd_control_free(run);
    return st == IMGD_OK ? n : 0;
}

/* A1111 hooks the ControlNet's attentions too: its residuals move with a hypernetwork of a
 * self-attention width, and weight 0 leaves them bit for bit. */
static void test_hypernet_sd_controlnet_is_hooked(void) {
    char hp[4096], cn[4096];
    hnet h;
    hnet_init(&h, (int32_t[]){8}, 1, 2, false, false);
    tu_tmp_path(hp, sizeof hp, "hn-ctl.safetensors");
    CHECK(hnet_write(&h, hp));
    (void)imgd_fmt(cn, sizeof cn, "%s/conformance/sd15-narrow/controlnet/diffusers", g_shared);
    imgd_model   *m   = load_sd15(NULL);
    size_t        cap = 1 << 16;
    float        *r0 = imgd_malloc(cap * 4), *r1 = imgd_malloc(cap * 4), *r2 = imgd_malloc(cap * 4);
    uint8_t       px[64 * 64 * 3];
    imgd_image_u8 img = {64, 64, 3, px};
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 37 % 251);
    REQUIRE(m && r0 && r1 && r2);
    imgd_control_spec c   = imgd_control_spec_default();
    c.path                = cn;
    c.image               = &img;
    imgd_gen_params p     = imgd_gen_params_default();
    p.prompt              = "a cat";
    p.width               = 64;
    p.height              = 64;
    p.controls            = &c;
    p.n_controls          = 1;
    size_t             n0 = control_res(m, &p, r0, cap);
    imgd_hypernet_spec s  = {hp, 1.0f};
    p.hypernets           = &s;
    p.n_hypernets         = 1;
    size_t n1             = control_res(m, &p, r1, cap);
    s.weight              = 0.0f;
    size_t n2             = control_res(m, &p, r2, cap);
    REQUIRE(n0 > 0 && n0 == n1 && n0 == n2);
    double moved = tg_rel_err(r1, r0, n0);
    printf("  ControlNet residuals, width-8 hypernetwork: moved %.2e\n", moved);
    CHECK_MSG(moved > 1e-4, "the ControlNet's attentions are not hooked (%g)", moved);
    CHECK_MSG(bit_equal(r0, r2, n0), "weight 0 changed the ControlNet residuals");
done:
    imgd_free(r0);
    imgd_free(r1);
    imgd_free(r2);
    imgd_model_free(m);
    hnet_free(&h);
    (void)remove(hp);
}

/* SDXL: the narrow SDXL model's context width (32) and a self-attention width (16). */
static void test_hypernet_sd_sdxl(void) {
    char             path[4096], tok[4096], hp[4096];
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.arch.te_heads    = 4;
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/sdxl-narrow/diffusers/tokenizer", g_shared);
    (void)imgd_fmt(path, sizeof path, "%s/conformance/sdxl-narrow/diffusers", g_shared);
    lp.tokenizer_dir = tok;
    imgd_model *m    = NULL;
    hnet        h;
    hnet_init(&h, (int32_t[]){16, 32}, 2, 2, false, false);
    tu_tmp_path(hp, sizeof hp, "hn-sdxl.safetensors");
    CHECK(hnet_write(&h, hp));
    CHECK_STATUS(imgd_model_load(path, &lp, &m), IMGD_OK);
    REQUIRE(m);
    imgd_hypernet_spec s0 = {hp, 0.0f}, s1 = {hp, 0.8f};
    float             *plain  = gen(m, "a cat", NULL, 0, IMGD_OK, NULL);
    float             *zero   = gen(m, "a cat", &s0, 1, IMGD_OK, NULL);
    float             *hooked = gen(m, "a cat", &s1, 1, IMGD_OK, NULL);
    CHECK_MSG(same(plain, zero), "SDXL: weight 0 changed the image");
    CHECK_MSG(plain && hooked && !same(plain, hooked), "SDXL: the hypernetwork changed nothing");
    imgd_free(plain);
    imgd_free(zero);
    imgd_free(hooked);
done:
    imgd_model_free(m);
    hnet_free(&h);
    (void)remove(hp);
}

int main(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: hypernetworks in generation not checked");
        TEST_END();
    }
    (void)imgd_fmt(g_shared, sizeof g_shared, "%s", shared);
    RUN(test_hypernet_sd_context_width_feeds_to_k_to_v);
    RUN(test_hypernet_sd_self_attention_is_hooked);
    RUN(test_hypernet_sd_generate_tags_and_graph_refresh);
    RUN(test_hypernet_sd_refuses_other_family_widths);
    RUN(test_hypernet_sd_controlnet_is_hooked);
    RUN(test_hypernet_sd_sdxl);
    TEST_END();
}
