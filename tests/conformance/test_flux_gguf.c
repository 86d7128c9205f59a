/* A GGUF FLUX transformer (the way city96-style files ship it: BFL tensor names, ggml
 * blocks) built here from the kit's BFL single file: every 2-D weight whose input width is
 * a multiple of 32 as Q8_0, the rest F32. It must detect as FLUX.1 dev in BFL layout, bind
 * through the BFL key map, give the same output with the fused linear_quant kernel as with
 * dequantize + matmul, and stay within Q8_0 rounding of the f32 golden. */
#include <math.h>

#include "backends.h"
#include "base/alloc.h"
#include "base/text.h"
#include "detect/detect.h"
#include "formats/dtype.h"
#include "golden.h"
#include "models/flux.h"
#include "models/wbind.h"
#include "pipeline/flux_gen.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#include "test.h"
#include "util.h"

/* ---- a minimal GGUF v3 writer (ggml type ids: F32 0, Q8_0 8; alignment 32) ---------------- */

typedef struct gbuf {
    unsigned char *p;
    size_t         n, cap;
    bool           oom;
} gbuf;

static void put(gbuf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->n + n) nc *= 2;
        unsigned char *np = imgd_realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p   = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_le(gbuf *b, uint64_t v, int bytes) {
    unsigned char t[8];
    for (int i = 0; i < bytes; i++) t[i] = (unsigned char)(v >> (8 * i));
    put(b, t, (size_t)bytes);
}

static void put_str(gbuf *b, const char *s) {
    put_le(b, strlen(s), 8);
    put(b, s, strlen(s));
}

static void pad_to(gbuf *b, size_t align) {
    static const unsigned char z[32] = {0};
    put(b, z, (align - b->n % align) % align);
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

static bool quantizable(const imgd_tensor_info *t) {
    return t->n_dims == 2 && t->shape[1] % 32 == 0;
}

/* Writes src (all F32) as GGUF to path; returns the number of Q8_0 tensors, -1 on failure. */
static int write_gguf(const imgd_weights *src, const char *path) {
    size_t n = imgd_weights_tensor_count(src), off = 0;
    gbuf   h = {0}, d = {0};
    int    nq = 0;
    put(&h, "GGUF", 4);
    put_le(&h, 3, 4);
    put_le(&h, n, 8);
    put_le(&h, 1, 8);
    put_str(&h, "general.architecture");
    put_le(&h, 8, 4); /* string */
    put_str(&h, "flux");
    for (size_t i = 0; i < n; i++) {
        imgd_tensor_info t;
        if (imgd_weights_tensor(src, i, &t) != IMGD_OK || t.dtype != IMGD_DTYPE_F32) return -1;
        bool q = quantizable(&t);
        put_str(&h, t.name);
        put_le(&h, (uint64_t)t.n_dims, 4);
        for (int32_t k = t.n_dims - 1; k >= 0; k--) put_le(&h, (uint64_t)t.shape[k], 8);
        put_le(&h, q ? 8 : 0, 4);
        put_le(&h, off, 8);
        size_t bytes = q ? (size_t)(t.nbytes / 4 / 32 * 34) : (size_t)t.nbytes;
        if (q) {
            unsigned char *qb = imgd_malloc(bytes);
            if (!qb) return -1;
            quantize_q8_0(t.data, (size_t)(t.nbytes / 4), qb);
            put(&d, qb, bytes);
            imgd_free(qb);
            nq++;
        } else {
            put(&d, t.data, bytes);
        }
        pad_to(&d, 32);
        off = d.n;
    }
    pad_to(&h, 32);
    put(&h, d.p, d.n);
    int rc = h.oom || d.oom || tu_write_file(path, h.p, h.n) != 0 ? -1 : nq;
    imgd_free(h.p);
    imgd_free(d.p);
    return rc;
}

/* ---- the check ------------------------------------------------------------------------------ */

static imgd_tensor *input(imgd_graph *g, const imgd_weights *gd, const char *name) {
    imgd_tensor_info ti;
    if (imgd_weights_find(gd, name, &ti) != IMGD_OK) {
        CHECK_MSG(0, "golden tensor '%s' missing", name);
        return NULL;
    }
    imgd_tensor *t = imgd_graph_input(g, name, IMGD_DTYPE_F32, ti.n_dims, ti.shape);
    if (t) CHECK_STATUS(imgd_tensor_bind(t, (void *)(uintptr_t)ti.data), IMGD_OK);
    return t;
}

/* Runs the transformer on the golden's inputs; returns the output (64 x 64 floats, owned). */
static float *forward(imgd_wbind *b, const imgd_flux_cfg *cfg, const imgd_weights *gd, bool fuse,
                      size_t *n_fused) {
    imgd_graph_params gp = imgd_graph_params_default();
    gp.fuse_quant_linear = fuse;
    imgd_graph   *g      = NULL;
    imgd_backend *be     = NULL;
    float        *y      = NULL, ids[128 * 3];
    imgd_tensor  *out    = NULL;
    imgd_flux_ids(64, 16, 16, ids);
    CHECK_STATUS(imgd_graph_new(&gp, &g), IMGD_OK);
    /* linear_quant exists on cpu and ref only; the plain graph runs on the tested backend */
    CHECK_STATUS(imgd_backend_new(fuse ? "cpu" : tb_primary(), NULL, &be), IMGD_OK);
    if (g && be) {
        imgd_flux_inputs in = {0};
        in.x                = input(g, gd, "hidden_states");
        in.ctx              = input(g, gd, "encoder_hidden_states");
        in.pooled           = input(g, gd, "pooled_projections");
        in.t                = input(g, gd, "timestep");
        in.guidance         = input(g, gd, "guidance");
        in.ids              = imgd_graph_input(g, "ids", IMGD_DTYPE_F32, 2, (int64_t[]){128, 3});
        if (in.ids) CHECK_STATUS(imgd_tensor_bind(in.ids, ids), IMGD_OK);
        CHECK_STATUS(imgd_flux_build(g, b, "transformer", cfg, &in, NULL, &out), IMGD_OK);
        imgd_graph_output(g, out);
        *n_fused = 0;
        for (size_t i = 0; i < imgd_graph_tensor_count(g); i++)
            *n_fused += imgd_graph_tensor(g, i)->op == IMGD_OP_LINEAR_QUANT;
        CHECK_STATUS(imgd_graph_plan(g, be, NULL), IMGD_OK);
        CHECK_STATUS(imgd_graph_alloc(g, NULL, 0), IMGD_OK);
        CHECK_STATUS(imgd_graph_compute(g), IMGD_OK);
        y = out ? imgd_malloc((size_t)64 * 64 * sizeof *y) : NULL;
        if (y) CHECK_STATUS(imgd_graph_read_f32(g, out, y, (size_t)64 * 64), IMGD_OK);
    }
    imgd_graph_free(g);
    imgd_backend_free(be);
    return y;
}

/* Linear_quant nodes in the pipeline's transformer graph (imgd_flux_denoiser_prepare, as
 * imgd_flux_generate plans it) on backend `name`, 128 x 128 pixels, 8 text tokens; -1 when
 * it fails to build or plan. */
static long denoiser_fused(imgd_wbind *b, const imgd_flux_cfg *cfg, const char *name,
                           bool *supports) {
    imgd_backend       *be  = NULL;
    imgd_flux_denoiser *den = NULL;
    long                lq  = -1;
    float              *emb = imgd_calloc((size_t)8 * (size_t)cfg->context_dim, sizeof *emb);
    float              *pl  = imgd_calloc((size_t)cfg->pooled_dim, sizeof *pl);
    CHECK_STATUS(imgd_backend_new(name, NULL, &be), IMGD_OK);
    if (be && emb && pl) {
        *supports              = imgd_backend_supports_linear_quant(be, IMGD_DTYPE_Q8_0);
        imgd_flux_gen_params p = imgd_flux_gen_params_default();
        p.transformer          = b;
        p.cfg                  = cfg;
        p.be                   = be;
        p.height = p.width = 128;
        p.keep             = &den;
        CHECK_STATUS(imgd_flux_denoiser_prepare(&p, emb, pl, 1, 8), IMGD_OK);
        const imgd_graph *g = imgd_flux_denoiser_graph(den);
        if (g) lq = 0;
        for (size_t i = 0; g && i < imgd_graph_tensor_count(g); i++)
            lq += imgd_graph_tensor(g, i)->op == IMGD_OP_LINEAR_QUANT;
    }
    imgd_flux_denoiser_free(den);
    imgd_backend_free(be);
    imgd_free(emb);
    imgd_free(pl);
    return lq;
}

static void test_flux_gguf_q8_0_bfl_file(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: GGUF FLUX not checked");
        return;
    }
    char path[4096], bfl[4096];
    imgd_fmt(bfl, sizeof bfl, "%s/conformance/flux-narrow/flux-narrow-transformer-bfl.safetensors",
             shared);
    tu_tmp_path(path, sizeof path, "flux-narrow-q8_0.gguf");
    imgd_weights *src = NULL, *w = NULL;
    CHECK_STATUS(imgd_weights_open(bfl, NULL, &src), IMGD_OK);
    int nq = src ? write_gguf(src, path) : -1;
    imgd_weights_free(src);
    printf("  wrote %s with %d Q8_0 tensors\n", path, nq);
    CHECK(nq == 8); /* img_in, txt_in, time_in / guidance_in in_layer, 4 x mlp.2 */
    imgd_weights    *gd = tg_open_golden(shared, "flux-narrow/goldens/transformer.safetensors");
    imgd_model_info *mi = NULL;
    imgd_wbind      *b  = NULL;
    imgd_flux_cfg    cfg;
    CHECK_STATUS(imgd_weights_open(path, NULL, &w), IMGD_OK);
    if (w) CHECK_STATUS(imgd_model_detect(w, &mi), IMGD_OK);
    if (mi) {
        CHECK_EQ_INT(mi->w_format, IMGD_FORMAT_GGUF);
        CHECK_EQ_INT(mi->family, IMGD_FAMILY_FLUX_DEV);
        CHECK_STR(mi->layout, "bfl");
        CHECK_STATUS(imgd_wbind_new(w, mi, &b), IMGD_OK);
    }
    if (b && gd && imgd_flux_cfg_from_detect(mi, &cfg) == IMGD_OK) {
        cfg.n_axes       = 3; /* a GGUF has no config.json: the narrow rope axes */
        cfg.axes_dims[0] = 2;
        cfg.axes_dims[1] = 2;
        cfg.axes_dims[2] = 4;
        size_t       f0 = 0, f1 = 0, n = 0;
        float       *y0 = forward(b, &cfg, gd, false, &f0), *y1 = forward(b, &cfg, gd, true, &f1);
        const float *ref = tg_golden(gd, "out", &n);
        CHECK(f0 == 0 && f1 == 8); /* every Q8_0 weight runs through linear_quant */
        if (y0 && y1 && ref && n == (size_t)64 * 64) {
            double d = 0.0, e = 0.0, mx = 0.0;
            for (size_t i = 0; i < n; i++) {
                d  = fmax(d, fabs((double)y0[i] - (double)y1[i]));
                e  = fmax(e, fabs((double)y1[i] - (double)ref[i]));
                mx = fmax(mx, fabs((double)ref[i]));
            }
            printf("  gguf q8_0: fused vs plain max|diff| %.3g; vs f32 golden %.3g (max|ref| "
                   "%.3g)\n",
                   d, e, mx);
            CHECK(d <= 1e-4 * fmax(1.0, mx));
            CHECK(e > 1e-6 && e < 0.1);
        }
        imgd_free(y0);
        imgd_free(y1);
        /* the pipeline keeps the weights in their blocks where the backend runs linear_quant
         * (cpu, ref, cuda) and dequantizes them where it does not */
        const tb_list *l = tb_backends();
        for (size_t i = 0; i < l->n; i++) {
            bool sup = false;
            long lq  = denoiser_fused(b, &cfg, l->name[i], &sup);
            printf("  pipeline graph on %s: %ld linear_quant nodes\n", l->name[i], lq);
            CHECK(lq == (sup ? 8 : 0));
        }
    }
    imgd_wbind_free(b);
    imgd_model_info_free(mi);
    imgd_weights_free(w);
    imgd_weights_free(gd);
    (void)remove(path);
}

/* The tested backends (cpu and ref, or IMGD_TEST_BACKEND, e.g. cuda) run linear_quant for
 * every quantized type they read; plain types never fuse. */
static void test_flux_gguf_linear_quant_capability(void) {
    const tb_list          *l       = tb_backends();
    static const imgd_dtype quant[] = {IMGD_DTYPE_Q8_0, IMGD_DTYPE_Q4_0, IMGD_DTYPE_Q4_K,
                                       IMGD_DTYPE_Q5_K};
    static const imgd_dtype plain[] = {IMGD_DTYPE_F32, IMGD_DTYPE_F16, IMGD_DTYPE_BF16};
    for (size_t k = 0; k < l->n; k++) {
        imgd_backend *be = NULL;
        CHECK_STATUS(imgd_backend_new(l->name[k], NULL, &be), IMGD_OK);
        for (size_t i = 0; be && i < IMGD_ARRAY_LEN(quant); i++)
            CHECK_MSG(imgd_backend_supports_linear_quant(be, quant[i]), "%s: %s", l->name[k],
                      imgd_dtype_name(quant[i]));
        for (size_t i = 0; be && i < IMGD_ARRAY_LEN(plain); i++)
            CHECK(!imgd_backend_supports_linear_quant(be, plain[i]));
        imgd_backend_free(be);
    }
    CHECK(!imgd_backend_supports_linear_quant(NULL, IMGD_DTYPE_Q8_0));
}

static float g_noise[16 * 16 * 16];

static bool replay(float *out, size_t n, void *user) {
    (void)user;
    if (n != IMGD_ARRAY_LEN(g_noise)) return false;
    memcpy(out, g_noise, sizeof g_noise);
    return true;
}

/* The GGUF transformer through the public API (imgd_model_load with the kit's encoders and
 * VAE as load params, imgd_generate): txt2img_flux within Q8_0 rounding of the f32 image. */
static void test_flux_gguf_generates_through_public_api(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: GGUF FLUX generation not checked");
        return;
    }
    char path[4096], bfl[4096], dir[4096], vae[4096];
    imgd_fmt(bfl, sizeof bfl, "%s/conformance/flux-narrow/flux-narrow-transformer-bfl.safetensors",
             shared);
    imgd_fmt(dir, sizeof dir, "%s/conformance/flux-narrow/diffusers", shared);
    imgd_fmt(vae, sizeof vae, "%s/conformance/flux-narrow/diffusers/vae", shared);
    tu_tmp_path(path, sizeof path, "flux-narrow-q8_0-api.gguf");
    imgd_weights *src = NULL;
    CHECK_STATUS(imgd_weights_open(bfl, NULL, &src), IMGD_OK);
    int nq = src ? write_gguf(src, path) : -1;
    imgd_weights_free(src);
    imgd_weights    *gd = tg_open_golden(shared, "flux-narrow/goldens/txt2img_flux.safetensors");
    imgd_model      *m  = NULL;
    imgd_gen_result *r  = NULL;
    size_t           ni = 0, nimg = 0;
    const float     *init = gd ? tg_golden(gd, "initial_latents", &ni) : NULL;
    const float     *img  = gd ? tg_golden(gd, "image", &nimg) : NULL;
    REQUIRE(nq == 8 && init && img && ni == 4096 && nimg == (size_t)3 * 128 * 128);
    imgd_flux_unpack(init, 1, 16, 16, 16, g_noise);
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.backend          = tb_primary();
    lp.clip_l = lp.t5    = dir;
    lp.vae               = vae;
    lp.arch.rope_axes[0] = 2;
    lp.arch.rope_axes[1] = 2;
    lp.arch.rope_axes[2] = 4;
    CHECK_STATUS(imgd_model_load(path, &lp, &m), IMGD_OK);
    REQUIRE(m != NULL);
    imgd_gen_params p     = imgd_gen_params_default();
    p.prompt              = "a photograph of an astronaut riding a horse, highly detailed";
    p.width               = 128;
    p.height              = 128;
    p.steps               = 4;
    p.max_sequence_length = 64;
    p.noise               = replay;
    CHECK_STATUS(imgd_generate(m, &p, &r), IMGD_OK);
    REQUIRE(r != NULL && r->pixels);
    double mx = 0, sum = 0;
    for (size_t i = 0; i < nimg; i++) {
        double d = fabs((double)r->pixels[i] - (double)img[i]);
        mx       = isfinite(d) && d <= mx ? mx : d;
        sum += d;
    }
    printf("  gguf q8_0 txt2img via imgd_generate: image max|err| %.3g, mean %.3g\n", mx,
           sum / (double)nimg);
    CHECK(mx > 0 && mx < 0.05 && sum / (double)nimg < 5e-3);
done:
    imgd_gen_result_free(r);
    imgd_model_free(m);
    imgd_weights_free(gd);
    (void)remove(path);
}

int main(void) {
    RUN(test_flux_gguf_linear_quant_capability);
    RUN(test_flux_gguf_q8_0_bfl_file);
    RUN(test_flux_gguf_generates_through_public_api);
    TEST_END();
}
