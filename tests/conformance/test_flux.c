/* The FLUX transformer against diffusers: ../shared/conformance/flux-narrow/goldens/
 * transformer.safetensors (dev, batch 1, every intermediate.* block output),
 * transformer_b2.safetensors (batch 2, per-item timestep and guidance) and
 * transformer_schnell.safetensors (no guidance embedding), for the diffusers folders and the
 * Black Forest Labs single files (fused qkv / linear1 split into row views, the final
 * modulation's halves swapped), on every backend ("cpu", "ref"), within the README's
 * tolerance max|a - b| <= 1e-4 * max(1, max|ref|). Also detection of all four layouts, the
 * packing and position-id helpers against the recorded tensors, and clear errors for bad
 * inputs and configs. */
#include <math.h>

#include "backends.h"
#include "base/alloc.h"
#include "base/text.h"
#include "detect/detect.h"
#include "detect/keymap.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"
#include "golden.h"
#include "models/flux.h"
#include "models/wbind.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

#define k_backends (tb_backends()->name)

/* ---- comparisons ------------------------------------------------------------------------ */

/* max |a - b| over n values against tolerance 1e-4 * max(1, max|ref|); prints and checks. */
static double check_close(const float *got, const float *ref, size_t n, const char *what,
                          const char *name) {
    double err = 0.0, mx = 0.0;
    bool   finite = true;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = false;
        err = fmax(err, fabs((double)got[i] - (double)ref[i]));
        mx  = fmax(mx, fabs((double)ref[i]));
    }
    double tol = 1e-4 * fmax(1.0, mx);
    printf("  %-28s %-40s max|err| %.3g (tol %.3g, max|ref| %.3g)\n", what, name, err, tol, mx);
    CHECK_MSG(finite && err <= tol, "%s: %s max error %g > %g", what, name, err, tol);
    return err;
}

/* Compares a computed tensor with golden `name`. */
static void compare(imgd_graph *g, const imgd_tensor *t, const imgd_weights *gd, const char *name,
                    const char *what) {
    size_t       n   = 0;
    const float *ref = tg_golden(gd, name, &n);
    if (!ref || !t) {
        CHECK_MSG(t != NULL, "%s: %s: no tensor computed", what, name);
        return;
    }
    if ((size_t)imgd_tensor_numel(t) != n) {
        CHECK_MSG(0, "%s: %s has %lld elements, golden %zu", what, name,
                  (long long)imgd_tensor_numel(t), n);
        return;
    }
    float *got = imgd_malloc(n * sizeof *got);
    if (!got) return;
    CHECK_STATUS(imgd_graph_read_f32(g, t, got, n), IMGD_OK);
    (void)check_close(got, ref, n, what, name);
    imgd_free(got);
}

/* ---- model ---------------------------------------------------------------------------------- */

typedef struct model {
    imgd_weights    *w;
    imgd_model_info *mi;
    imgd_wbind      *b;
    imgd_flux_cfg    cfg;
} model;

static void model_free(model *m) {
    imgd_wbind_free(m->b);
    imgd_model_info_free(m->mi);
    imgd_weights_free(m->w);
    memset(m, 0, sizeof *m);
}

/* Opens a layout; BFL single files have no config.json, so the narrow rope axes (2, 2, 4)
 * are the override a caller must give (shapes only tell head_dim 8). */
static bool model_open(model *m, const char *shared, const char *rel, bool single_file) {
    char path[4096];
    memset(m, 0, sizeof *m);
    imgd_fmt(path, sizeof path, "%s/conformance/flux-narrow/%s", shared, rel);
    CHECK_STATUS(imgd_weights_open(path, NULL, &m->w), IMGD_OK);
    if (m->w) CHECK_STATUS(imgd_model_detect(m->w, &m->mi), IMGD_OK);
    if (m->mi) CHECK_STATUS(imgd_wbind_new(m->w, m->mi, &m->b), IMGD_OK);
    if (m->b) CHECK_STATUS(imgd_flux_cfg_from_detect(m->mi, &m->cfg), IMGD_OK);
    if (!m->b) {
        model_free(m);
        return false;
    }
    if (single_file) {
        CHECK_EQ_INT(m->cfg.n_axes, 0);
        CHECK_STATUS(imgd_flux_cfg_check(&m->cfg), IMGD_E_INVALID_ARG);
        CHECK_MSG(strstr(imgd_last_error(), "axes_dims"), "%s", imgd_last_error());
        m->cfg.n_axes       = 3;
        m->cfg.axes_dims[0] = 2;
        m->cfg.axes_dims[1] = 2;
        m->cfg.axes_dims[2] = 4;
    }
    CHECK_EQ_INT(m->cfg.heads, 2);
    CHECK_EQ_INT(m->cfg.axes_dims[2], 4);
    return true;
}

/* ---- one run ------------------------------------------------------------------------------- */

typedef struct run {
    imgd_graph    *g;
    imgd_backend  *be;
    imgd_tensor   *out;
    imgd_flux_taps taps;
    float         *ids; /* [T + N, 3] owned */
} run;

static void run_free(run *r) {
    imgd_graph_free(r->g);
    imgd_backend_free(r->be);
    imgd_free(r->ids);
    memset(r, 0, sizeof *r);
}

static imgd_tensor *golden_input(imgd_graph *g, const imgd_weights *gd, const char *name) {
    imgd_tensor_info ti;
    if (imgd_weights_find(gd, name, &ti) != IMGD_OK || ti.dtype != IMGD_DTYPE_F32) {
        CHECK_MSG(0, "golden tensor '%s' missing", name);
        return NULL;
    }
    imgd_tensor *t = imgd_graph_input(g, name, IMGD_DTYPE_F32, ti.n_dims, ti.shape);
    if (t) CHECK_STATUS(imgd_tensor_bind(t, (void *)(uintptr_t)ti.data), IMGD_OK);
    return t;
}

/* concat(txt_ids[0], img_ids[0]) [T + N, 3]; every batch item must carry the same ids. */
static float *joint_ids(const imgd_weights *gd, int64_t *L) {
    size_t           nt = 0, ni = 0;
    const float     *t = tg_golden(gd, "txt_ids", &nt), *i = tg_golden(gd, "img_ids", &ni);
    imgd_tensor_info ti;
    if (!t || !i || imgd_weights_find(gd, "img_ids", &ti) != IMGD_OK) return NULL;
    size_t B = (size_t)ti.shape[0], T = nt / B / 3, N = ni / B / 3;
    for (size_t b = 1; b < B; b++) {
        CHECK(memcmp(t, t + b * T * 3, T * 3 * sizeof *t) == 0);
        CHECK(memcmp(i, i + b * N * 3, N * 3 * sizeof *i) == 0);
    }
    float *ids = imgd_malloc((T + N) * 3 * sizeof *ids);
    if (!ids) return NULL;
    memcpy(ids, t, T * 3 * sizeof *ids);
    memcpy(ids + T * 3, i, N * 3 * sizeof *ids);
    *L = (int64_t)(T + N);
    return ids;
}

static bool run_build(run *r, model *m, const char *backend, const imgd_weights *gd, bool taps) {
    memset(r, 0, sizeof *r);
    CHECK_STATUS(imgd_backend_new(backend, NULL, &r->be), IMGD_OK);
    CHECK_STATUS(imgd_graph_new(NULL, &r->g), IMGD_OK);
    if (!r->be || !r->g) return false;
    int64_t L = 0;
    r->ids    = joint_ids(gd, &L);
    if (!r->ids) return false;
    imgd_flux_inputs in = {0};
    in.x                = golden_input(r->g, gd, "hidden_states");
    in.ctx              = golden_input(r->g, gd, "encoder_hidden_states");
    in.pooled           = golden_input(r->g, gd, "pooled_projections");
    in.t                = golden_input(r->g, gd, "timestep");
    if (m->cfg.guidance_embed) in.guidance = golden_input(r->g, gd, "guidance");
    in.ids = imgd_graph_input(r->g, "ids", IMGD_DTYPE_F32, 2, (int64_t[]){L, 3});
    if (in.ids) CHECK_STATUS(imgd_tensor_bind(in.ids, r->ids), IMGD_OK);
    CHECK_STATUS(
        imgd_flux_build(r->g, m->b, "transformer", &m->cfg, &in, taps ? &r->taps : NULL, &r->out),
        IMGD_OK);
    if (!r->out) return false;
    imgd_graph_output(r->g, r->out);
    CHECK_STATUS(imgd_graph_plan(r->g, r->be, NULL), IMGD_OK);
    CHECK_STATUS(imgd_graph_alloc(r->g, NULL, 0), IMGD_OK);
    return imgd_graph_status(r->g) == IMGD_OK;
}

static void check_taps(run *r, const model *m, const imgd_weights *gd, const char *what) {
    char name[96];
    compare(r->g, r->taps.x_embedder, gd, "intermediate.x_embedder", what);
    compare(r->g, r->taps.context_embedder, gd, "intermediate.context_embedder", what);
    compare(r->g, r->taps.temb, gd, "intermediate.time_text_embed", what);
    for (int32_t i = 0; i < m->cfg.depth; i++) {
        imgd_fmt(name, sizeof name, "intermediate.transformer_blocks.%d.0", (int)i);
        compare(r->g, r->taps.txt[i], gd, name, what);
        imgd_fmt(name, sizeof name, "intermediate.transformer_blocks.%d.1", (int)i);
        compare(r->g, r->taps.img[i], gd, name, what);
    }
    for (int32_t i = 0; i < m->cfg.depth_single; i++) {
        imgd_fmt(name, sizeof name, "intermediate.single_transformer_blocks.%d", (int)i);
        compare(r->g, r->taps.single[i], gd, name, what);
    }
    compare(r->g, r->taps.norm_out, gd, "intermediate.norm_out", what);
}

/* ---- cases --------------------------------------------------------------------------------- */

static const struct {
    const char *rel, *label, *golden;
    bool        single, dev;
} k_layouts[] = {
    {"diffusers", "dev folder", "transformer.safetensors", false, true},
    {"flux-narrow-transformer-bfl.safetensors", "dev bfl", "transformer.safetensors", true, true},
    {"schnell", "schnell folder", "transformer_schnell.safetensors", false, false},
    {"flux-narrow-schnell-transformer-bfl.safetensors", "schnell bfl",
     "transformer_schnell.safetensors", true, false},
};

/* Every layout is detected as the right FLUX variant with the config the builder needs. */
static void test_flux_detects_every_layout(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX detection not checked");
        return;
    }
    for (size_t li = 0; li < IMGD_ARRAY_LEN(k_layouts); li++) {
        model m;
        if (!model_open(&m, shared, k_layouts[li].rel, k_layouts[li].single)) continue;
        const imgd_model_info *mi = m.mi;
        printf("  %-16s family %s, layout %s, depth %d+%d, width %d, heads %d x %d\n",
               k_layouts[li].label, imgd_family_name(mi->family), mi->layout, (int)m.cfg.depth,
               (int)m.cfg.depth_single, (int)m.cfg.hidden, (int)m.cfg.heads, (int)m.cfg.head_dim);
        CHECK(mi->has_dit && mi->dit.type == IMGD_DIT_FLUX);
        CHECK_EQ_INT(mi->family,
                     k_layouts[li].dev ? IMGD_FAMILY_FLUX_DEV : IMGD_FAMILY_FLUX_SCHNELL);
        CHECK_STR(mi->layout, k_layouts[li].single ? "bfl" : "diffusers");
        CHECK_EQ_INT(m.cfg.guidance_embed, k_layouts[li].dev);
        CHECK_EQ_INT(m.cfg.hidden, 16);
        CHECK_EQ_INT(m.cfg.head_dim, 8);
        CHECK_EQ_INT(m.cfg.depth, 2);
        CHECK_EQ_INT(m.cfg.depth_single, 2);
        CHECK_EQ_INT(m.cfg.in_channels, 64);
        CHECK_EQ_INT(m.cfg.context_dim, 32);
        CHECK_EQ_INT(m.cfg.pooled_dim, 16);
        CHECK_STATUS(imgd_flux_cfg_check(&m.cfg), IMGD_OK);
        if (!k_layouts[li].single) CHECK(mi->dit.axes_from_config);
        /* the fused tensors of the BFL files are views with the diffusers shapes */
        int64_t s[IMGD_MAX_DIMS];
        CHECK_EQ_INT(
            imgd_wbind_shape(m.b, "transformer.single_transformer_blocks.1.proj_mlp.weight", s), 2);
        CHECK(s[0] == 64 && s[1] == 16);
        CHECK_EQ_INT(
            imgd_wbind_shape(m.b, "transformer.transformer_blocks.0.attn.add_v_proj.bias", s), 1);
        CHECK(s[0] == 16);
        CHECK_EQ_INT(imgd_wbind_shape(m.b, "transformer.norm_out.linear.weight", s), 2);
        CHECK(s[0] == 32 && s[1] == 16);
        CHECK_EQ_INT(imgd_wbind_has(m.b, "transformer.time_text_embed.guidance_embedder.linear_1."
                                         "weight"),
                     k_layouts[li].dev);
        if (k_layouts[li].single) { /* every BFL tensor maps; fused ones to several names */
            imgd_keymap *km = NULL;
            CHECK_STATUS(imgd_keymap_build(m.w, m.mi, &km), IMGD_OK);
            if (km) {
                size_t nt = imgd_weights_tensor_count(m.w);
                /* qkv x 2 streams x 2 (weight, bias) x 2 blocks add 2 names each; linear1 x 2
                 * (weight, bias) x 2 blocks add 3 each */
                CHECK_EQ_INT(km->n_unmapped, 0);
                CHECK_EQ_INT(km->n, nt + 16 + 12);
                CHECK(imgd_keymap_find(km, "transformer.norm_out.linear.weight")->op ==
                      IMGD_KM_SWAP_HALVES);
            }
            imgd_keymap_free(km);
        }
        model_free(&m);
    }
}

/* Each layout on each backend reproduces its golden (dev: with every block output). */
static void test_flux_matches_diffusers_every_layout_and_backend(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX transformer goldens not checked");
        return;
    }
    for (size_t li = 0; li < IMGD_ARRAY_LEN(k_layouts); li++) {
        char rel[256];
        imgd_fmt(rel, sizeof rel, "flux-narrow/goldens/%s", k_layouts[li].golden);
        imgd_weights *gd = tg_open_golden(shared, rel);
        model         m;
        if (!gd || !model_open(&m, shared, k_layouts[li].rel, k_layouts[li].single)) {
            imgd_weights_free(gd);
            continue;
        }
        for (size_t bi = 0; bi < tb_backends()->n; bi++) {
            char what[96];
            run  r;
            imgd_fmt(what, sizeof what, "%s/%s", k_layouts[li].label, k_backends[bi]);
            if (run_build(&r, &m, k_backends[bi], gd, k_layouts[li].dev)) {
                double t0 = tu_now_s();
                CHECK_STATUS(imgd_graph_compute(r.g), IMGD_OK);
                printf("%s: %.2f ms\n", what, (tu_now_s() - t0) * 1e3);
                compare(r.g, r.out, gd, "out", what);
                if (k_layouts[li].dev) check_taps(&r, &m, gd, what);
            }
            run_free(&r);
        }
        model_free(&m);
        imgd_weights_free(gd);
    }
}

/* Batch 2 with per-item timestep and guidance (folder and BFL file). */
static void test_flux_batch2_per_item_conditioning(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX batch-2 golden not checked");
        return;
    }
    imgd_weights *gd = tg_open_golden(shared, "flux-narrow/goldens/transformer_b2.safetensors");
    for (size_t li = 0; gd && li < 2; li++) {
        model m;
        if (!model_open(&m, shared, k_layouts[li].rel, k_layouts[li].single)) continue;
        for (size_t bi = 0; bi < tb_backends()->n; bi++) {
            char what[96];
            run  r;
            imgd_fmt(what, sizeof what, "b2 %s/%s", k_layouts[li].label, k_backends[bi]);
            if (run_build(&r, &m, k_backends[bi], gd, false)) {
                CHECK_STATUS(imgd_graph_compute(r.g), IMGD_OK);
                compare(r.g, r.out, gd, "out", what);
            }
            run_free(&r);
        }
        model_free(&m);
    }
    imgd_weights_free(gd);
}

/* Exact equality of n floats (a rearrangement must move values bit for bit). */
static bool same_values(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return false;
    return true;
}

/* The rope tables against diffusers' intermediate.pos_embed [1, 1, 128, 4, 2, 2] (rotation
 * [[cos, -sin], [sin, cos]] per token and pair): rotating the unit vector (1, 0) of every pair
 * with imgd_op_rope_nd at the golden's ids gives (cos, sin), on every backend. */
static void test_flux_rope_matches_pos_embed(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: rope tables not checked");
        return;
    }
    imgd_weights *gd  = tg_open_golden(shared, "flux-narrow/goldens/transformer.safetensors");
    size_t        np  = 0;
    const float  *pe  = gd ? tg_golden(gd, "intermediate.pos_embed", &np) : NULL;
    int64_t       L   = 0;
    float        *ids = gd ? joint_ids(gd, &L) : NULL;
    float         x[128 * 8], got[128 * 8], cs[128 * 8];
    for (int i = 0; i < 128 * 8; i++) x[i] = i % 2 == 0 ? 1.0f : 0.0f;
    for (size_t bi = 0; pe && ids && L == 128 && np == (size_t)128 * 16 && bi < tb_backends()->n;
         bi++) {
        imgd_graph   *g  = NULL;
        imgd_backend *be = NULL;
        CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
        CHECK_STATUS(imgd_backend_new(k_backends[bi], NULL, &be), IMGD_OK);
        if (!g || !be) {
            imgd_graph_free(g);
            imgd_backend_free(be);
            break;
        }
        imgd_tensor  *xt = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 4, (int64_t[]){1, 128, 1, 8});
        imgd_tensor  *pt = imgd_graph_input(g, "p", IMGD_DTYPE_F32, 2, (int64_t[]){128, 3});
        const int32_t axes[3] = {2, 2, 4};
        imgd_tensor  *y       = imgd_op_rope_nd(g, xt, pt, IMGD_ROPE_INTERLEAVE, 3, axes, 10000.0f);
        imgd_graph_output(g, y);
        CHECK_STATUS(imgd_tensor_bind(xt, x), IMGD_OK);
        CHECK_STATUS(imgd_tensor_bind(pt, ids), IMGD_OK);
        CHECK_STATUS(imgd_graph_plan(g, be, NULL), IMGD_OK);
        CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
        CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
        CHECK_STATUS(imgd_graph_read_f32(g, y, got, IMGD_ARRAY_LEN(got)), IMGD_OK);
        for (int l = 0; l < 128; l++) /* pe[l][j] = [[c, -s], [s, c]]: c at 0, s at 2 */
            for (int j = 0; j < 4; j++) {
                cs[l * 8 + 2 * j]     = pe[(l * 4 + j) * 4 + 0];
                cs[l * 8 + 2 * j + 1] = pe[(l * 4 + j) * 4 + 2];
            }
        char what[64];
        imgd_fmt(what, sizeof what, "rope/%s", k_backends[bi]);
        (void)check_close(got, cs, IMGD_ARRAY_LEN(got), what, "intermediate.pos_embed");
        imgd_graph_free(g);
        imgd_backend_free(be);
    }
    imgd_free(ids);
    imgd_weights_free(gd);
}

/* Packing, unpacking and ids against the recorded tensors: vae_decode's packed/unpacked
 * latents, the pipeline's latent_image_ids / text_ids. */
static void test_flux_pack_unpack_and_ids(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX packing not checked");
        return;
    }
    imgd_weights *vd = tg_open_golden(shared, "flux-narrow/goldens/vae_decode.safetensors");
    imgd_weights *tx = tg_open_golden(shared, "flux-narrow/goldens/txt2img_flux.safetensors");
    size_t        np = 0, nu = 0, ni = 0, nt = 0;
    const float  *packed = vd ? tg_golden(vd, "latents_packed", &np) : NULL;
    const float  *unp    = vd ? tg_golden(vd, "latents_unpacked", &nu) : NULL;
    const float  *img    = tx ? tg_golden(tx, "latent_image_ids", &ni) : NULL;
    const float  *txt    = tx ? tg_golden(tx, "text_ids", &nt) : NULL;
    if (packed && unp && np == (size_t)16 * 64 && nu == np) {
        /* vae_decode stores the packed latents as [1, 16, 64]: 16 tokens of 64 channels */
        float a[16 * 64], b[16 * 64];
        imgd_flux_unpack(packed, 1, 16, 8, 8, a);
        imgd_flux_pack(unp, 1, 16, 8, 8, b);
        CHECK(same_values(a, unp, IMGD_ARRAY_LEN(a)));
        CHECK(same_values(b, packed, IMGD_ARRAY_LEN(b)));
    }
    if (img && txt && ni == (size_t)64 * 3 && nt == (size_t)64 * 3) {
        float ids[128 * 3];
        imgd_flux_ids(64, 16, 16, ids);
        CHECK(same_values(ids, txt, (size_t)64 * 3));
        CHECK(same_values(ids + (size_t)64 * 3, img, (size_t)64 * 3));
    }
    imgd_weights_free(vd);
    imgd_weights_free(tx);
}

/* Wrong inputs and configs fail with a message naming what to fix. */
static void test_flux_rejects_bad_inputs(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: FLUX input checks not run");
        return;
    }
    model m;
    if (!model_open(&m, shared, "diffusers", false)) return;
    imgd_graph *g = NULL;
    CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
    imgd_flux_inputs in = {0};
    in.x                = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 3, (int64_t[]){1, 64, 64});
    in.ctx              = imgd_graph_input(g, "c", IMGD_DTYPE_F32, 3, (int64_t[]){1, 64, 32});
    in.pooled           = imgd_graph_input(g, "p", IMGD_DTYPE_F32, 2, (int64_t[]){1, 16});
    in.t                = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){1});
    in.ids              = imgd_graph_input(g, "i", IMGD_DTYPE_F32, 2, (int64_t[]){128, 3});
    imgd_tensor *out    = NULL;
    CHECK_STATUS(imgd_flux_build(g, m.b, "transformer", &m.cfg, &in, NULL, &out),
                 IMGD_E_INVALID_ARG);
    CHECK(out == NULL);
    CHECK_MSG(strstr(imgd_graph_error(g), "guidance"), "%s", imgd_graph_error(g));
    printf("  dev without guidance: %s\n", imgd_graph_error(g));
    imgd_graph_free(g);

    imgd_flux_cfg c = m.cfg;
    c.axes_dims[2]  = 6;
    CHECK_STATUS(imgd_flux_cfg_check(&c), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "head_dim"), "%s", imgd_last_error());
    c       = m.cfg;
    c.heads = 3;
    CHECK_STATUS(imgd_flux_cfg_check(&c), IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "heads"), "%s", imgd_last_error());

    /* an MLP width that disagrees with the file names the tensor */
    g = NULL;
    CHECK_STATUS(imgd_graph_new(NULL, &g), IMGD_OK);
    in.x         = imgd_graph_input(g, "x", IMGD_DTYPE_F32, 3, (int64_t[]){1, 64, 64});
    in.ctx       = imgd_graph_input(g, "c", IMGD_DTYPE_F32, 3, (int64_t[]){1, 64, 32});
    in.pooled    = imgd_graph_input(g, "p", IMGD_DTYPE_F32, 2, (int64_t[]){1, 16});
    in.t         = imgd_graph_input(g, "t", IMGD_DTYPE_F32, 1, (int64_t[]){1});
    in.ids       = imgd_graph_input(g, "i", IMGD_DTYPE_F32, 2, (int64_t[]){128, 3});
    in.guidance  = imgd_graph_input(g, "gd", IMGD_DTYPE_F32, 1, (int64_t[]){1});
    c            = m.cfg;
    c.mlp_hidden = 48;
    CHECK_STATUS(imgd_flux_build(g, m.b, "transformer", &c, &in, NULL, &out), IMGD_E_FORMAT);
    CHECK_MSG(strstr(imgd_graph_error(g), "ff.net.0.proj.weight"), "%s", imgd_graph_error(g));
    imgd_graph_free(g);
    model_free(&m);
}

/* Out of run r (computed): the output as n floats into a new buffer (NULL on failure). */
static float *read_out(run *r) {
    size_t n = r->out ? (size_t)imgd_tensor_numel(r->out) : 0;
    float *y = n ? imgd_malloc(n * sizeof *y) : NULL;
    if (y && imgd_graph_read_f32(r->g, r->out, y, n) != IMGD_OK) {
        imgd_free(y);
        y = NULL;
    }
    return y;
}

/* Real single files often wrap the BFL names in "model.diffusion_model." (ComfyUI saves):
 * the same tensors under that prefix detect as FLUX dev (bfl) and reproduce the golden. */
static void test_flux_bfl_under_wrapper_prefix(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: prefixed BFL file not checked");
        return;
    }
    model src;
    if (!model_open(&src, shared, "flux-narrow-transformer-bfl.safetensors", true)) return;
    size_t         n  = imgd_weights_tensor_count(src.w);
    imgd_st_entry *e  = imgd_calloc(n, sizeof *e);
    char(*names)[160] = imgd_calloc(n, sizeof *names);
    char path[4096];
    tu_tmp_path(path, sizeof path, "flux-prefixed.safetensors");
    imgd_st_writer *wr = NULL;
    for (size_t i = 0; e && names && i < n; i++) {
        imgd_tensor_info ti;
        CHECK_STATUS(imgd_weights_tensor(src.w, i, &ti), IMGD_OK);
        imgd_fmt(names[i], sizeof names[i], "model.diffusion_model.%s", ti.name);
        e[i].name   = names[i];
        e[i].dtype  = ti.dtype;
        e[i].n_dims = ti.n_dims;
        memcpy(e[i].shape, ti.shape, sizeof e[i].shape);
    }
    if (e && names) CHECK_STATUS(imgd_st_writer_open(path, e, n, NULL, NULL, 0, &wr), IMGD_OK);
    for (size_t i = 0; wr && i < n; i++) {
        imgd_tensor_info ti;
        CHECK_STATUS(imgd_weights_tensor(src.w, i, &ti), IMGD_OK);
        CHECK_STATUS(imgd_st_writer_write(wr, ti.data, (size_t)ti.nbytes), IMGD_OK);
    }
    if (wr) CHECK_STATUS(imgd_st_writer_close(wr), IMGD_OK);
    imgd_free(e);
    imgd_free(names);
    model_free(&src);
    model         m  = {0};
    imgd_weights *gd = tg_open_golden(shared, "flux-narrow/goldens/transformer.safetensors");
    CHECK_STATUS(imgd_weights_open(path, NULL, &m.w), IMGD_OK);
    if (m.w) CHECK_STATUS(imgd_model_detect(m.w, &m.mi), IMGD_OK);
    if (m.mi) CHECK_STATUS(imgd_wbind_new(m.w, m.mi, &m.b), IMGD_OK);
    if (m.b) CHECK_STATUS(imgd_flux_cfg_from_detect(m.mi, &m.cfg), IMGD_OK);
    if (m.b && gd) {
        CHECK_EQ_INT(m.mi->family, IMGD_FAMILY_FLUX_DEV);
        CHECK_STR(m.mi->layout, "bfl");
        m.cfg.n_axes       = 3;
        m.cfg.axes_dims[0] = 2;
        m.cfg.axes_dims[1] = 2;
        m.cfg.axes_dims[2] = 4;
        run r;
        if (run_build(&r, &m, tb_primary(), gd, false)) {
            CHECK_STATUS(imgd_graph_compute(r.g), IMGD_OK);
            compare(r.g, r.out, gd, "out", "bfl under model.diffusion_model.");
        }
        run_free(&r);
    }
    model_free(&m);
    imgd_weights_free(gd);
    (void)remove(path);
}

/* The e4m3 code nearest to v (finite codes only; exhaustive: 254 candidates). */
static uint8_t to_e4m3(float v) {
    uint8_t best = 0;
    float   bd   = INFINITY;
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f) continue; /* NaN */
        float d = fabsf(imgd_f8e4m3_to_f32((uint8_t)c) - v);
        if (d < bd) {
            bd   = d;
            best = (uint8_t)c;
        }
    }
    return best;
}

/* Writes src's tensors to path with every 2-D weight as e4m3 (f8 true) or as the f32 values
 * of those e4m3 codes (f8 false); 1-D tensors stay f32. */
static bool write_fp8_variant(const imgd_weights *src, const char *path, bool f8) {
    size_t          n  = imgd_weights_tensor_count(src);
    imgd_st_entry  *e  = imgd_calloc(n, sizeof *e);
    imgd_st_writer *wr = NULL;
    bool            ok = e != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        imgd_tensor_info ti;
        ok          = imgd_weights_tensor(src, i, &ti) == IMGD_OK && ti.dtype == IMGD_DTYPE_F32;
        e[i].name   = ti.name;
        e[i].n_dims = ti.n_dims;
        e[i].dtype  = f8 && ti.n_dims == 2 ? IMGD_DTYPE_F8_E4M3 : IMGD_DTYPE_F32;
        memcpy(e[i].shape, ti.shape, sizeof e[i].shape);
    }
    ok = ok && imgd_st_writer_open(path, e, n, NULL, NULL, 0, &wr) == IMGD_OK;
    for (size_t i = 0; ok && i < n; i++) {
        imgd_tensor_info ti;
        (void)imgd_weights_tensor(src, i, &ti);
        const float *v = ti.data;
        for (uint64_t k = 0; ok && k < ti.nbytes / 4; k++) {
            uint8_t c = to_e4m3(v[k]);
            float   f = ti.n_dims == 2 ? imgd_f8e4m3_to_f32(c) : v[k];
            ok        = (e[i].dtype == IMGD_DTYPE_F8_E4M3 ? imgd_st_writer_write(wr, &c, 1)
                                                          : imgd_st_writer_write(wr, &f, 4)) == IMGD_OK;
        }
    }
    if (wr) ok = imgd_st_writer_close(wr) == IMGD_OK && ok;
    imgd_free(e);
    return ok;
}

/* fp8 (e4m3) safetensors weights are upcast on load: a BFL file with every 2-D weight in
 * e4m3 gives the output of the same values stored as f32 (f16 holds e4m3 exactly). */
static void test_flux_fp8_weights_upcast_exactly(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: fp8 FLUX not checked");
        return;
    }
    model src;
    if (!model_open(&src, shared, "flux-narrow-transformer-bfl.safetensors", true)) return;
    char p8[4096], p32[4096];
    tu_tmp_path(p8, sizeof p8, "flux-e4m3.safetensors");
    tu_tmp_path(p32, sizeof p32, "flux-e4m3-as-f32.safetensors");
    CHECK(write_fp8_variant(src.w, p8, true) && write_fp8_variant(src.w, p32, false));
    model_free(&src);
    imgd_weights *gd       = tg_open_golden(shared, "flux-narrow/goldens/transformer.safetensors");
    float        *y[2]     = {NULL, NULL};
    const char   *paths[2] = {p8, p32};
    for (int k = 0; gd && k < 2; k++) {
        model m = {0};
        CHECK_STATUS(imgd_weights_open(paths[k], NULL, &m.w), IMGD_OK);
        if (m.w) CHECK_STATUS(imgd_model_detect(m.w, &m.mi), IMGD_OK);
        if (m.mi) CHECK_STATUS(imgd_wbind_new(m.w, m.mi, &m.b), IMGD_OK);
        if (m.b) CHECK_STATUS(imgd_flux_cfg_from_detect(m.mi, &m.cfg), IMGD_OK);
        m.cfg.n_axes       = 3;
        m.cfg.axes_dims[0] = 2;
        m.cfg.axes_dims[1] = 2;
        m.cfg.axes_dims[2] = 4;
        run r;
        if (m.b && run_build(&r, &m, tb_primary(), gd, false)) {
            CHECK_STATUS(imgd_graph_compute(r.g), IMGD_OK);
            y[k] = read_out(&r);
        }
        run_free(&r);
        model_free(&m);
    }
    size_t       n   = 0;
    const float *ref = gd ? tg_golden(gd, "out", &n) : NULL;
    if (y[0] && y[1] && ref) {
        (void)check_close(y[0], y[1], n, "e4m3 file vs its values as f32", "out");
        double err = 0.0;
        for (size_t i = 0; i < n; i++) err = fmax(err, fabs((double)y[0][i] - (double)ref[i]));
        printf("  e4m3 weights vs f32 golden: max|err| %.3g (fp8 rounding)\n", err);
        CHECK(err > 1e-5);
    }
    imgd_free(y[0]);
    imgd_free(y[1]);
    imgd_weights_free(gd);
    (void)remove(p8);
    (void)remove(p32);
}

/* A BFL file whose fused qkv has a row count that is not 3 x the width from img_in is
 * refused at binding with a message naming the tensor and the width. */
static void test_flux_bfl_rejects_bad_fused_rows(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: bad BFL rows not checked");
        return;
    }
    model src;
    if (!model_open(&src, shared, "flux-narrow-transformer-bfl.safetensors", true)) return;
    size_t          n  = imgd_weights_tensor_count(src.w);
    imgd_st_entry  *e  = imgd_calloc(n, sizeof *e);
    imgd_st_writer *wr = NULL;
    char            path[4096];
    tu_tmp_path(path, sizeof path, "flux-bad-qkv.safetensors");
    for (size_t i = 0; e && i < n; i++) {
        imgd_tensor_info ti;
        CHECK_STATUS(imgd_weights_tensor(src.w, i, &ti), IMGD_OK);
        e[i].name   = ti.name;
        e[i].dtype  = ti.dtype;
        e[i].n_dims = ti.n_dims;
        memcpy(e[i].shape, ti.shape, sizeof e[i].shape);
        if (strcmp(ti.name, "double_blocks.1.txt_attn.qkv.weight") == 0) e[i].shape[0] -= 1;
    }
    if (e) CHECK_STATUS(imgd_st_writer_open(path, e, n, NULL, NULL, 0, &wr), IMGD_OK);
    for (size_t i = 0; wr && i < n; i++) {
        imgd_tensor_info ti;
        CHECK_STATUS(imgd_weights_tensor(src.w, i, &ti), IMGD_OK);
        size_t bytes = (size_t)ti.nbytes;
        if (strcmp(ti.name, "double_blocks.1.txt_attn.qkv.weight") == 0) bytes -= (size_t)16 * 4;
        CHECK_STATUS(imgd_st_writer_write(wr, ti.data, bytes), IMGD_OK);
    }
    if (wr) CHECK_STATUS(imgd_st_writer_close(wr), IMGD_OK);
    imgd_free(e);
    model_free(&src);
    model m = {0};
    CHECK_STATUS(imgd_weights_open(path, NULL, &m.w), IMGD_OK);
    if (m.w) CHECK_STATUS(imgd_model_detect(m.w, &m.mi), IMGD_OK);
    if (m.mi) {
        CHECK_STATUS(imgd_wbind_new(m.w, m.mi, &m.b), IMGD_E_FORMAT);
        CHECK_MSG(strstr(imgd_last_error(), "double_blocks.1.txt_attn.qkv.weight") &&
                      strstr(imgd_last_error(), "47 rows") && strstr(imgd_last_error(), "16"),
                  "%s", imgd_last_error());
        printf("  bad fused qkv: %s\n", imgd_last_error());
    }
    model_free(&m);
    (void)remove(path);
}

/* ggml Q8_0 of n floats (n a multiple of 32): per block an f16 scale amax/127 and 32 int8. */
static void quantize_q8_0(const float *x, size_t n, unsigned char *out) {
    for (size_t b = 0; b < n / 32; b++, out += 34) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + (size_t)i]));
        float    d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = imgd_f32_to_f16(d);
        memcpy(out, &dh, 2);
        for (int i = 0; i < 32; i++) {
            float q    = roundf(x[b * 32 + (size_t)i] * id);
            out[2 + i] = (unsigned char)(int8_t)fmaxf(-127.0f, fminf(127.0f, q));
        }
    }
}

/* GGUF-style Q8_0 weights for every linear whose input width is a multiple of 32 (in the
 * narrow model: the x/context embedders, the timestep and guidance MLP inputs and the four
 * feed-forward outputs), bound through wbind overrides: the fused linear_quant graph equals
 * dequantize + matmul, and both stay near the f32 golden (quantization error only). */
static void test_flux_q8_0_weights_fused_and_plain_agree(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: quantized FLUX not checked");
        return;
    }
    model         m;
    imgd_weights *gd = tg_open_golden(shared, "flux-narrow/goldens/transformer.safetensors");
    if (!gd || !model_open(&m, shared, "diffusers", false)) {
        imgd_weights_free(gd);
        return;
    }
    unsigned char *q[64] = {0};
    int            nq    = 0;
    for (size_t i = 0; nq < 64; i++) {
        const char *name = imgd_wbind_name_at(m.b, i);
        if (!name) break;
        int64_t s[IMGD_MAX_DIMS];
        if (strncmp(name, "transformer.", 12) != 0 || imgd_wbind_shape(m.b, name, s) != 2 ||
            s[1] % 32 != 0)
            continue;
        size_t n = (size_t)(s[0] * s[1]);
        float *f = imgd_malloc(n * sizeof *f);
        q[nq]    = imgd_malloc(n / 32 * 34);
        if (!f || !q[nq]) {
            imgd_free(f);
            break;
        }
        CHECK_STATUS(imgd_wbind_read_f32(m.b, name, f, n), IMGD_OK);
        quantize_q8_0(f, n, q[nq]);
        CHECK_STATUS(imgd_wbind_override(m.b, name, IMGD_DTYPE_Q8_0, q[nq]), IMGD_OK);
        imgd_free(f);
        nq++;
    }
    printf("  %d transformer weights as Q8_0\n", nq);
    CHECK(nq == 8); /* x_embedder, context_embedder, 2 time MLP inputs, 4 feed-forward outputs */
    float *y[2] = {NULL, NULL};
    for (int fuse = 0; fuse < 2; fuse++) {
        run r;
        memset(&r, 0, sizeof r);
        imgd_graph_params gp = imgd_graph_params_default();
        gp.fuse_quant_linear = fuse != 0;
        int64_t L            = 0;
        /* linear_quant exists on cpu and ref only; the plain graph runs on the tested backend */
        CHECK_STATUS(imgd_backend_new(fuse ? "cpu" : tb_primary(), NULL, &r.be), IMGD_OK);
        CHECK_STATUS(imgd_graph_new(&gp, &r.g), IMGD_OK);
        r.ids = joint_ids(gd, &L);
        if (r.g && r.be && r.ids) {
            imgd_flux_inputs in = {0};
            in.x                = golden_input(r.g, gd, "hidden_states");
            in.ctx              = golden_input(r.g, gd, "encoder_hidden_states");
            in.pooled           = golden_input(r.g, gd, "pooled_projections");
            in.t                = golden_input(r.g, gd, "timestep");
            in.guidance         = golden_input(r.g, gd, "guidance");
            in.ids = imgd_graph_input(r.g, "ids", IMGD_DTYPE_F32, 2, (int64_t[]){L, 3});
            if (in.ids) CHECK_STATUS(imgd_tensor_bind(in.ids, r.ids), IMGD_OK);
            CHECK_STATUS(imgd_flux_build(r.g, m.b, "transformer", &m.cfg, &in, NULL, &r.out),
                         IMGD_OK);
            imgd_graph_output(r.g, r.out);
            size_t lq = 0;
            for (size_t i = 0; i < imgd_graph_tensor_count(r.g); i++)
                lq += imgd_graph_tensor(r.g, i)->op == IMGD_OP_LINEAR_QUANT;
            CHECK(fuse ? lq == (size_t)nq : lq == 0);
            CHECK_STATUS(imgd_graph_plan(r.g, r.be, NULL), IMGD_OK);
            CHECK_STATUS(imgd_graph_alloc(r.g, NULL, 0), IMGD_OK);
            CHECK_STATUS(imgd_graph_compute(r.g), IMGD_OK);
            y[fuse] = read_out(&r);
        }
        run_free(&r);
    }
    size_t       n   = 0;
    const float *ref = tg_golden(gd, "out", &n);
    if (y[0] && y[1] && ref) {
        (void)check_close(y[1], y[0], n, "q8_0 fused vs dequantize+matmul", "out");
        double err = 0.0;
        for (size_t i = 0; i < n; i++) err = fmax(err, fabs((double)y[0][i] - (double)ref[i]));
        printf("  q8_0 weights vs f32 golden: max|err| %.3g (quantization)\n", err);
        CHECK(err > 1e-6 && err < 0.1);
    }
    imgd_free(y[0]);
    imgd_free(y[1]);
    model_free(&m);
    for (int i = 0; i < nq; i++) imgd_free(q[i]);
    imgd_weights_free(gd);
}

int main(void) {
    RUN(test_flux_detects_every_layout);
    RUN(test_flux_matches_diffusers_every_layout_and_backend);
    RUN(test_flux_batch2_per_item_conditioning);
    RUN(test_flux_pack_unpack_and_ids);
    RUN(test_flux_rope_matches_pos_embed);
    RUN(test_flux_rejects_bad_inputs);
    RUN(test_flux_bfl_under_wrapper_prefix);
    RUN(test_flux_q8_0_weights_fused_and_plain_agree);
    RUN(test_flux_fp8_weights_upcast_exactly);
    RUN(test_flux_bfl_rejects_bad_fused_rows);
    TEST_END();
}
