/* SDXL ControlNet on sdxl-narrow. No SDXL ControlNet golden exists in the kit, so the test
 * builds narrow SDXL ControlNets the way diffusers' ControlNetModel.from_unet does: the
 * encoder (time_embedding, add_embedding (text_time), conv_in, down_blocks, mid_block) copied
 * from the base UNet, plus a hint encoder and one 1x1 zero convolution per skip and for the
 * mid block, in the diffusers layout (from the folder's UNet) and the original one
 * (control_model.* with label_emb, from the single file). Then:
 *   - zero-initialised zero convs and hint conv_out: every residual is exactly 0, so the
 *     image equals the plain SDXL image bit for bit (pooled embeddings and time ids reach
 *     the ControlNet: a missing added conditioning fails the build);
 *   - non-zero zero convs: the image changes;
 *   - two equal ControlNets at scale 0.5 each equal one at 1.0 (within float rounding);
 *   - both layouts give the same image; an SD 1.x ControlNet on SDXL is refused by name. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/text.h"
#include "formats/safetensors.h"
#include "pipeline/pipeline.h"
#include "test.h"
#include "util.h"

#define MAX_T  1024
#define HINT_C 4 /* hint encoder width (diffusers uses 16..256; any width chains) */

static uint32_t g_rng = 777;
static float    small_value(void) {
       g_rng = g_rng * 1664525u + 1013904223u;
       return (float)((int32_t)(g_rng >> 24) % 9 - 4) / 64.0f;
}

/* One tensor of the file being written: copied from src, or generated (zero or small). */
typedef struct out_t {
    char                name[256];
    const imgd_wtensor *src;
    int64_t             shape[4];
    int32_t             n_dims;
    bool                zero;
} out_t;

typedef struct plan {
    out_t  t[MAX_T];
    size_t n;
} plan;

static void add_gen(plan *p, const char *name, int32_t nd, const int64_t *shape, bool zero) {
    if (p->n == MAX_T) return;
    out_t *o = &p->t[p->n++];
    memset(o, 0, sizeof *o);
    (void)imgd_fmt(o->name, sizeof o->name, "%s", name);
    o->n_dims = nd;
    memcpy(o->shape, shape, (size_t)nd * sizeof *shape);
    o->zero = zero;
}

static bool starts(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

/* diffusers layout: encoder tensors of the folder's UNet, hint encoder, zero convs. */
static void plan_diffusers(plan *p, const imgd_weights *u, const imgd_unet_cfg *c, bool zero) {
    static const char *const keep[] = {"time_embedding.", "add_embedding.", "conv_in.",
                                       "down_blocks.", "mid_block."};
    for (size_t i = 0; i < u->n; i++) {
        for (size_t k = 0; k < IMGD_ARRAY_LEN(keep); k++) {
            if (!starts(u->t[i].name, keep[k]) || p->n == MAX_T) continue;
            out_t *o = &p->t[p->n++];
            memset(o, 0, sizeof *o);
            (void)imgd_fmt(o->name, sizeof o->name, "%s", u->t[i].name);
            o->src = &u->t[i];
        }
    }
    char nm[128];
    add_gen(p, "controlnet_cond_embedding.conv_in.weight", 4, (int64_t[]){HINT_C, 3, 3, 3}, false);
    add_gen(p, "controlnet_cond_embedding.conv_in.bias", 1, (int64_t[]){HINT_C}, false);
    for (int b = 0; b < 6; b++) {
        (void)imgd_fmt(nm, sizeof nm, "controlnet_cond_embedding.blocks.%d.weight", b);
        add_gen(p, nm, 4, (int64_t[]){HINT_C, HINT_C, 3, 3}, false);
        (void)imgd_fmt(nm, sizeof nm, "controlnet_cond_embedding.blocks.%d.bias", b);
        add_gen(p, nm, 1, (int64_t[]){HINT_C}, false);
    }
    add_gen(p, "controlnet_cond_embedding.conv_out.weight", 4,
            (int64_t[]){c->widths[0], HINT_C, 3, 3}, zero);
    add_gen(p, "controlnet_cond_embedding.conv_out.bias", 1, (int64_t[]){c->widths[0]}, zero);
    int32_t ns = imgd_unet_skip_count(c);
    for (int32_t i = 0; i <= ns; i++) {
        int32_t ch = c->widths[c->n_levels - 1], div = 1;
        if (i < ns) imgd_unet_skip_shape(c, i, &ch, &div);
        char base[64];
        if (i < ns)
            (void)imgd_fmt(base, sizeof base, "controlnet_down_blocks.%d", (int)i);
        else
            (void)imgd_fmt(base, sizeof base, "controlnet_mid_block");
        (void)imgd_fmt(nm, sizeof nm, "%s.weight", base);
        add_gen(p, nm, 4, (int64_t[]){ch, ch, 1, 1}, zero);
        (void)imgd_fmt(nm, sizeof nm, "%s.bias", base);
        add_gen(p, nm, 1, (int64_t[]){ch}, zero);
    }
}

/* The original layout: the single file's model.diffusion_model.{time_embed, label_emb,
 * input_blocks, middle_block} as control_model.*, input_hint_block.{0, 2, .., 14},
 * zero_convs.N.0 and middle_block_out.0. */
static void plan_ldm(plan *p, const imgd_weights *ck, const imgd_unet_cfg *c, bool zero) {
    static const char *const keep[] = {"time_embed.", "label_emb.", "input_blocks.",
                                       "middle_block."};
    const char              *pre    = "model.diffusion_model.";
    for (size_t i = 0; i < ck->n; i++) {
        const char *n = ck->t[i].name;
        if (!starts(n, pre)) continue;
        for (size_t k = 0; k < IMGD_ARRAY_LEN(keep); k++) {
            if (!starts(n + strlen(pre), keep[k]) || p->n == MAX_T) continue;
            out_t *o = &p->t[p->n++];
            memset(o, 0, sizeof *o);
            (void)imgd_fmt(o->name, sizeof o->name, "control_model.%s", n + strlen(pre));
            o->src = &ck->t[i];
        }
    }
    char    nm[128];
    int64_t prev = 3;
    for (int b = 0; b < 8; b++) {
        int64_t oc = b == 7 ? c->widths[0] : HINT_C;
        (void)imgd_fmt(nm, sizeof nm, "control_model.input_hint_block.%d.weight", 2 * b);
        add_gen(p, nm, 4, (int64_t[]){oc, prev, 3, 3}, b == 7 && zero);
        (void)imgd_fmt(nm, sizeof nm, "control_model.input_hint_block.%d.bias", 2 * b);
        add_gen(p, nm, 1, (int64_t[]){oc}, b == 7 && zero);
        prev = oc;
    }
    int32_t ns = imgd_unet_skip_count(c);
    for (int32_t i = 0; i <= ns; i++) {
        int32_t ch = c->widths[c->n_levels - 1], div = 1;
        if (i < ns) imgd_unet_skip_shape(c, i, &ch, &div);
        char base[64];
        if (i < ns)
            (void)imgd_fmt(base, sizeof base, "control_model.zero_convs.%d.0", (int)i);
        else
            (void)imgd_fmt(base, sizeof base, "control_model.middle_block_out.0");
        (void)imgd_fmt(nm, sizeof nm, "%s.weight", base);
        add_gen(p, nm, 4, (int64_t[]){ch, ch, 1, 1}, zero);
        (void)imgd_fmt(nm, sizeof nm, "%s.bias", base);
        add_gen(p, nm, 1, (int64_t[]){ch}, zero);
    }
}

static bool write_plan(const char *path, const plan *p) {
    imgd_st_entry *e = imgd_calloc(p->n, sizeof *e);
    if (!e) return false;
    for (size_t i = 0; i < p->n; i++) {
        const out_t *o = &p->t[i];
        e[i].name      = o->name;
        if (o->src) {
            e[i].dtype  = o->src->dtype;
            e[i].n_dims = o->src->n_dims;
            memcpy(e[i].shape, o->src->shape, sizeof e[i].shape);
        } else {
            e[i].dtype  = IMGD_DTYPE_F32;
            e[i].n_dims = o->n_dims;
            memcpy(e[i].shape, o->shape, (size_t)o->n_dims * sizeof *o->shape);
        }
    }
    imgd_st_writer *wr = NULL;
    bool            ok = imgd_st_writer_open(path, e, p->n, NULL, NULL, 0, &wr) == IMGD_OK;
    for (size_t i = 0; ok && i < p->n; i++) {
        const out_t *o = &p->t[i];
        if (o->src) {
            ok = imgd_st_writer_write(wr, o->src->data, (size_t)o->src->nbytes) == IMGD_OK;
            continue;
        }
        size_t n = 1;
        for (int32_t d = 0; d < o->n_dims; d++) n *= (size_t)o->shape[d];
        for (size_t k = 0; k < n && ok; k++) {
            float v = o->zero ? 0.0f : small_value();
            ok      = imgd_st_writer_write(wr, &v, 4) == IMGD_OK;
        }
    }
    if (wr && !ok) imgd_st_writer_abort(wr);
    if (wr && ok) ok = imgd_st_writer_close(wr) == IMGD_OK;
    imgd_free(e);
    return ok;
}

static imgd_model *load(const char *shared) {
    char             path[4096], tok[4096];
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.arch.te_heads    = 4;
    (void)imgd_fmt(tok, sizeof tok, "%s/conformance/sdxl-narrow/diffusers/tokenizer", shared);
    (void)imgd_fmt(path, sizeof path, "%s/conformance/sdxl-narrow/diffusers", shared);
    lp.tokenizer_dir = tok;
    imgd_model *m    = NULL;
    imgd_status st   = imgd_model_load(path, &lp, &m);
    CHECK_MSG(st == IMGD_OK, "load %s: %s", path, imgd_last_error());
    return m;
}

/* A 64 x 64 RGB control image: a bright square on a gradient. */
static uint8_t g_px[64 * 64 * 3];

static float *gen(imgd_model *m, const char *const *paths, const float *scales, int32_t n,
                  imgd_status *st_out) {
    imgd_image_u8     img = {64, 64, 3, g_px};
    imgd_control_spec cs[4];
    for (int32_t i = 0; i < n; i++) {
        cs[i]       = imgd_control_spec_default();
        cs[i].path  = paths[i];
        cs[i].image = &img;
        cs[i].scale = scales[i];
    }
    imgd_gen_params p = imgd_gen_params_default();
    p.prompt          = "a red fox";
    p.steps           = 3;
    p.cfg             = 5.0f;
    p.width = p.height  = 64;
    p.seed              = 5;
    p.controls          = n ? cs : NULL;
    p.n_controls        = n;
    imgd_gen_result *r  = NULL;
    imgd_status      st = imgd_generate(m, &p, &r);
    if (st_out) *st_out = st;
    if (st != IMGD_OK) return NULL;
    float *px = r->pixels;
    r->pixels = NULL;
    imgd_gen_result_free(r);
    return px;
}

#define NPX ((size_t)3 * 64 * 64)

/* Bit-for-bit equality (also -0 vs +0 and NaN payloads count as different). */
static bool same_bits(const float *a, const float *b) {
    for (size_t i = 0; i < NPX; i++) {
        uint32_t x, y;
        memcpy(&x, &a[i], sizeof x);
        memcpy(&y, &b[i], sizeof y);
        if (x != y) return false;
    }
    return true;
}

static double max_diff(const float *a, const float *b) {
    double d = 0;
    for (size_t i = 0; i < NPX; i++) d = fmax(d, fabs((double)a[i] - (double)b[i]));
    return d;
}

static void test_controlnet_sdxl(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: SDXL ControlNet not checked");
        return;
    }
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++)
            for (int ch = 0; ch < 3; ch++)
                g_px[(y * 64 + x) * 3 + ch] =
                    (uint8_t)(x >= 20 && x < 44 && y >= 20 && y < 44 ? 250 : 3 * x + ch * 20);
    imgd_model *m = load(shared);
    if (!m) return;
    CHECK(m->unet.adm_in_channels > 0);
    char uf[4096], cf[4096], dir[4096];
    (void)imgd_fmt(uf, sizeof uf,
                   "%s/conformance/sdxl-narrow/diffusers/unet/diffusion_pytorch_model.safetensors",
                   shared);
    (void)imgd_fmt(cf, sizeof cf, "%s/conformance/sdxl-narrow/sdxl-narrow.safetensors", shared);
    tu_tmp_path(dir, sizeof dir, "controlnet-sdxl");
    mkdir(dir, 0755);
    imgd_weights *u = NULL, *ck = NULL;
    CHECK_STATUS(imgd_weights_open(uf, NULL, &u), IMGD_OK);
    CHECK_STATUS(imgd_weights_open(cf, NULL, &ck), IMGD_OK);
    if (!u || !ck) {
        imgd_weights_free(u);
        imgd_weights_free(ck);
        imgd_model_free(m);
        return;
    }
    static plan p;
    char        zd[4096], nd[4096], zl[4096], nl[4096];
    (void)imgd_fmt(zd, sizeof zd, "%s/xl_cn_zero.safetensors", dir);
    (void)imgd_fmt(nd, sizeof nd, "%s/xl_cn.safetensors", dir);
    (void)imgd_fmt(zl, sizeof zl, "%s/xl_cn_zero_ldm.safetensors", dir);
    (void)imgd_fmt(nl, sizeof nl, "%s/xl_cn_ldm.safetensors", dir);
    p.n   = 0;
    g_rng = 777;
    plan_diffusers(&p, u, &m->unet, true);
    CHECK(write_plan(zd, &p));
    p.n   = 0;
    g_rng = 777;
    plan_diffusers(&p, u, &m->unet, false);
    CHECK(write_plan(nd, &p));
    p.n   = 0;
    g_rng = 777;
    plan_ldm(&p, ck, &m->unet, true);
    CHECK(write_plan(zl, &p));
    p.n   = 0;
    g_rng = 777;
    plan_ldm(&p, ck, &m->unet, false);
    CHECK(write_plan(nl, &p));
    imgd_weights_free(u);
    imgd_weights_free(ck);

    /* detection: SDXL ControlNets in both layouts */
    const char *const all[] = {zd, nd, zl, nl};
    for (size_t i = 0; i < IMGD_ARRAY_LEN(all); i++) {
        imgd_weights    *w  = NULL;
        imgd_model_info *mi = NULL;
        CHECK_STATUS(imgd_weights_open(all[i], NULL, &w), IMGD_OK);
        if (w) CHECK_STATUS(imgd_model_detect(w, &mi), IMGD_OK);
        if (mi) {
            CHECK_MSG(mi->kind == IMGD_KIND_CONTROLNET && mi->family == IMGD_FAMILY_SDXL,
                      "%s: %s / %s", all[i], imgd_model_kind_name(mi->kind),
                      imgd_family_name(mi->family));
            CHECK_EQ_INT(mi->unet.adm_in_channels, m->unet.adm_in_channels);
        }
        imgd_model_info_free(mi);
        imgd_weights_free(w);
    }

    float  one = 1.0f, halves[2] = {0.5f, 0.5f};
    float *base = gen(m, NULL, NULL, 0, NULL);
    float *z    = gen(m, (const char *const[]){zd}, &one, 1, NULL);
    float *zo   = gen(m, (const char *const[]){zl}, &one, 1, NULL);
    float *a    = gen(m, (const char *const[]){nd}, &one, 1, NULL);
    float *al   = gen(m, (const char *const[]){nl}, &one, 1, NULL);
    float *h    = gen(m, (const char *const[]){nd, nd}, halves, 2, NULL);
    CHECK_MSG(base && z && zo && a && al && h, "generate: %s", imgd_last_error());
    if (base && z && zo && a && al && h) {
        printf("sdxl controlnet: |zero - base| %.3g, |zero ldm - base| %.3g, |cn - base| %.3g, "
               "|ldm - diffusers| %.3g, |2 x 0.5 - 1| %.3g\n",
               max_diff(z, base), max_diff(zo, base), max_diff(a, base), max_diff(al, a),
               max_diff(h, a));
        CHECK_MSG(same_bits(z, base), "zero-initialised ControlNet changed the image");
        CHECK_MSG(same_bits(zo, base),
                  "zero-initialised ControlNet (original layout) changed the image");
        CHECK_MSG(max_diff(a, base) > 1e-3, "the ControlNet changed nothing");
        CHECK_MSG(max_diff(al, a) < 1e-5, "original and diffusers layouts differ");
        CHECK_MSG(max_diff(h, a) < 1e-5, "two ControlNets at 0.5 differ from one at 1");
    }
    imgd_free(base);
    imgd_free(z);
    imgd_free(zo);
    imgd_free(a);
    imgd_free(al);
    imgd_free(h);

    /* an SD 1.x ControlNet on SDXL: refused, naming the families */
    char sd1[4096];
    (void)imgd_fmt(sd1, sizeof sd1,
                   "%s/conformance/sd15-narrow/controlnet/control_narrow.safetensors", shared);
    imgd_status st  = IMGD_OK;
    float      *bad = gen(m, (const char *const[]){sd1}, &one, 1, &st);
    CHECK(!bad && st == IMGD_E_INVALID_ARG);
    CHECK_MSG(strstr(imgd_last_error(), "sd1") && strstr(imgd_last_error(), "sdxl"), "%s",
              imgd_last_error());
    imgd_free(bad);
    imgd_model_free(m);
}

int main(void) {
    RUN(test_controlnet_sdxl);
    TEST_END();
}
