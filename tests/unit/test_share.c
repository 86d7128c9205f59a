/* Components shared between models (pipeline/share.c): the same --vae file and identical
 * VAE tensors in two checkpoints are held once, a different VAE is not, freeing one model
 * keeps the other generating exactly as it does alone, and the digest cache spares the
 * hashing. Uses the tiny SD 1.5 of ../shared/conformance (skipped when absent). */
#include <math.h>

#include "base/alloc.h"
#include "formats/safetensors.h"
#include "pipeline/pipeline.h"
#include "test.h"
#include "util.h"

static char g_tok[4096], g_ckpt[4096], g_folder[4096], g_vae[4096];

static bool setup(void) {
    const char *shared = tu_shared_dir();
    if (!shared) {
        TEST_SKIP("../shared/conformance absent: component sharing not checked");
        return false;
    }
    (void)imgd_fmt(g_tok, sizeof g_tok, "%s/conformance/sd15-narrow/diffusers/tokenizer", shared);
    (void)imgd_fmt(g_ckpt, sizeof g_ckpt, "%s/conformance/sd15-narrow/sd15-narrow.safetensors",
                   shared);
    (void)imgd_fmt(g_folder, sizeof g_folder, "%s/conformance/sd15-narrow/diffusers", shared);
    (void)imgd_fmt(g_vae, sizeof g_vae,
                   "%s/conformance/sd15-narrow/diffusers/vae/diffusion_pytorch_model.safetensors",
                   shared);
    return true;
}

static imgd_model *load(const char *path, const char *vae, imgd_components *c) {
    imgd_load_params lp = imgd_load_params_default();
    lp.precision        = IMGD_PRECISION_F32;
    lp.threads          = 2;
    lp.arch.te_heads    = 4; /* the narrow encoder; not in the single file's shapes */
    lp.tokenizer_dir    = g_tok;
    lp.vae              = vae;
    lp.components       = c;
    imgd_model *m       = NULL;
    CHECK_STATUS(imgd_model_load(path, &lp, &m), IMGD_OK);
    return m;
}

/* Copies src to dst with the lowest byte of tensor `change` flipped (NULL: none). */
static bool write_variant(const char *src, const char *dst, const char *change) {
    imgd_weights  *w  = NULL;
    bool           ok = imgd_weights_open(src, NULL, &w) == IMGD_OK;
    size_t         n  = ok ? imgd_weights_tensor_count(w) : 0;
    imgd_st_entry *e  = ok ? imgd_calloc(n ? n : 1, sizeof *e) : NULL;
    ok                = ok && e;
    for (size_t i = 0; ok && i < n; i++) {
        imgd_tensor_info t;
        ok = imgd_weights_tensor(w, i, &t) == IMGD_OK;
        if (!ok) break;
        e[i].name   = t.name;
        e[i].n_dims = t.n_dims;
        e[i].dtype  = t.dtype;
        memcpy(e[i].shape, t.shape, sizeof t.shape);
    }
    imgd_st_writer *wr = NULL;
    ok                 = ok && imgd_st_writer_open(dst, e, n, NULL, NULL, 0, &wr) == IMGD_OK;
    for (size_t i = 0; ok && i < n; i++) {
        imgd_tensor_info t;
        (void)imgd_weights_tensor(w, i, &t);
        if (change && strcmp(t.name, change) == 0 && t.nbytes > 0) {
            uint8_t first = ((const uint8_t *)t.data)[0] ^ 1u;
            ok            = imgd_st_writer_write(wr, &first, 1) == IMGD_OK &&
                 imgd_st_writer_write(wr, (const uint8_t *)t.data + 1, t.nbytes - 1) == IMGD_OK;
        } else {
            ok = imgd_st_writer_write(wr, t.data, t.nbytes) == IMGD_OK;
        }
    }
    if (wr) ok = imgd_st_writer_close(wr) == IMGD_OK && ok;
    imgd_free(e);
    imgd_weights_free(w);
    return ok;
}

static imgd_gen_result *gen(imgd_model *m) {
    imgd_gen_params p = imgd_gen_params_default();
    p.prompt          = "a red house";
    p.width = p.height = 64;
    p.steps            = 2;
    p.seed             = 77;
    imgd_gen_result *r = NULL;
    CHECK_STATUS(imgd_generate(m, &p, &r), IMGD_OK);
    return r;
}

static void test_share_same_vae_file_held_once(void) {
    if (!setup()) return;
    imgd_components *c = NULL;
    CHECK_STATUS(imgd_components_new(&c), IMGD_OK);
    imgd_model           *a = load(g_ckpt, g_vae, c), *b = load(g_folder, g_vae, c);
    imgd_components_stats s;
    imgd_components_stats_get(c, &s);
    CHECK_EQ_INT(s.count, 1);
    CHECK_EQ_INT(s.users, 2);
    CHECK(s.bytes > 0 && s.saved_bytes == s.bytes);
    CHECK(s.hashed_bytes == 0); /* the same file: no hashing */
    if (a && b) {
        CHECK(imgd_sd_vae_bind(a) == imgd_sd_vae_bind(b));
        CHECK(imgd_model_shared_bytes(a) == s.bytes && imgd_model_shared_bytes(b) == s.bytes);
        imgd_tensor_info t;
        imgd_weights    *vw = NULL;
        CHECK_STATUS(imgd_weights_open(g_vae, NULL, &vw), IMGD_OK);
        uint64_t total = 0;
        for (size_t i = 0; vw && i < imgd_weights_tensor_count(vw); i++) {
            if (imgd_weights_tensor(vw, i, &t) == IMGD_OK) total += t.nbytes;
        }
        CHECK(total == s.bytes); /* every tensor of the VAE file, once */
        imgd_weights_free(vw);
    }
    imgd_model_free(a);
    imgd_components_stats_get(c, &s);
    CHECK_EQ_INT(s.count, 1);
    CHECK_EQ_INT(s.users, 1);
    CHECK(s.saved_bytes == 0);
    imgd_model_free(b);
    imgd_components_stats_get(c, &s);
    CHECK_EQ_INT(s.count, 0);
    CHECK(s.bytes == 0);
    imgd_components_free(c);
}

/* A digest cache in memory, standing for the registry's table. */
typedef struct memo {
    char     path[4][4096], digest[4][65];
    uint64_t size[4];
    int      n, gets_hit, puts;
} memo;

static bool memo_get(void *user, const char *path, uint64_t size, int64_t mtime_ns,
                     const char *component, char digest[65]) {
    memo *mm = user;
    (void)mtime_ns;
    CHECK_STR(component, "vae");
    for (int i = 0; i < mm->n; i++) {
        if (strcmp(mm->path[i], path) == 0 && mm->size[i] == size) {
            memcpy(digest, mm->digest[i], 65);
            mm->gets_hit++;
            return true;
        }
    }
    return false;
}

static void memo_put(void *user, const char *path, uint64_t size, int64_t mtime_ns,
                     const char *component, const char *digest) {
    memo *mm = user;
    (void)mtime_ns;
    (void)component;
    if (mm->n == 4) return;
    (void)imgd_fmt(mm->path[mm->n], sizeof mm->path[0], "%s", path);
    (void)imgd_fmt(mm->digest[mm->n], sizeof mm->digest[0], "%s", digest);
    mm->size[mm->n++] = size;
    mm->puts++;
}

static void test_share_identical_vae_tensors_in_two_checkpoints(void) {
    if (!setup()) return;
    char other[4096], alone_path[4096];
    tu_tmp_path(other, sizeof other, "share-other-unet.safetensors");
    tu_tmp_path(alone_path, sizeof alone_path, "share-alone.safetensors");
    CHECK(write_variant(g_ckpt, other, "model.diffusion_model.out.2.bias"));
    imgd_components *c = NULL;
    CHECK_STATUS(imgd_components_new(&c), IMGD_OK);
    memo mm;
    memset(&mm, 0, sizeof mm);
    imgd_components_set_digest_cache(c, memo_get, memo_put, &mm);
    imgd_model           *a = load(g_ckpt, NULL, c), *b = load(other, NULL, c);
    imgd_components_stats s;
    imgd_components_stats_get(c, &s);
    CHECK_EQ_INT(s.count, 1);
    CHECK_EQ_INT(s.users, 2);
    CHECK(s.bytes > 0 && s.saved_bytes == s.bytes);
    CHECK(s.hashed_bytes == 2 * s.bytes); /* both sides hashed once */
    CHECK_EQ_INT(mm.puts, 2);
    if (a && b) {
        CHECK(imgd_sd_vae_bind(a) == imgd_sd_vae_bind(b));
        imgd_dtype  dt;
        const void *da = NULL, *db = NULL;
        uint64_t    na = 0, nb = 0;
        CHECK(imgd_wbind_view(imgd_sd_vae_bind(a), "vae.decoder.conv_out.weight", &dt, &da, &na));
        CHECK(imgd_wbind_view(imgd_sd_vae_bind(b), "vae.decoder.conv_out.weight", &dt, &db, &nb));
        CHECK(da == db && na == nb && na > 0);               /* one copy of the bytes */
        CHECK(imgd_sd_unet_bind(a) != imgd_sd_unet_bind(b)); /* the UNets stay their own */
    }
    /* freeing the model that brought the VAE keeps the other generating, and exactly as
       the same file loaded alone */
    imgd_model_free(a);
    imgd_gen_result *shared_r = b ? gen(b) : NULL;
    imgd_model_free(b);
    imgd_components_stats_get(c, &s);
    CHECK_EQ_INT(s.count, 0);
    imgd_model      *alone   = load(other, NULL, NULL);
    imgd_gen_result *alone_r = alone ? gen(alone) : NULL;
    CHECK(imgd_model_shared_bytes(alone) == 0);
    if (shared_r && alone_r) {
        size_t n = (size_t)3 * 64 * 64;
        CHECK(memcmp(shared_r->pixels, alone_r->pixels, n * sizeof(float)) == 0);
        bool finite = true;
        for (size_t i = 0; i < n; i++) finite = finite && isfinite(shared_r->pixels[i]);
        CHECK(finite);
    }
    imgd_gen_result_free(shared_r);
    imgd_gen_result_free(alone_r);
    imgd_model_free(alone);
    /* again with the digests remembered: nothing is hashed */
    a = load(g_ckpt, NULL, c);
    b = load(other, NULL, c);
    imgd_components_stats_get(c, &s);
    CHECK_EQ_INT(s.users, 2);
    CHECK_EQ_INT(s.count, 1);
    CHECK(s.hashed_bytes == 2 * s.bytes); /* unchanged since the first pair */
    CHECK_EQ_INT(mm.gets_hit, 2);
    imgd_model_free(b);
    imgd_model_free(a);
    imgd_components_free(c);
    (void)remove(other);
    (void)remove(alone_path);
}

static void test_share_different_vae_not_shared(void) {
    if (!setup()) return;
    char other[4096];
    tu_tmp_path(other, sizeof other, "share-other-vae.safetensors");
    CHECK(write_variant(g_ckpt, other, "first_stage_model.decoder.conv_out.bias"));
    imgd_components *c = NULL;
    CHECK_STATUS(imgd_components_new(&c), IMGD_OK);
    imgd_model           *a = load(g_ckpt, NULL, c), *b = load(other, NULL, c);
    imgd_components_stats s;
    imgd_components_stats_get(c, &s);
    CHECK_EQ_INT(s.count, 2); /* same names and shapes, one byte differs */
    CHECK(s.saved_bytes == 0);
    if (a && b) CHECK(imgd_sd_vae_bind(a) != imgd_sd_vae_bind(b));
    imgd_model_free(a);
    imgd_model_free(b);
    imgd_components_free(c);
    (void)remove(other);
}

int main(void) {
    RUN(test_share_same_vae_file_held_once);
    RUN(test_share_identical_vae_tensors_in_two_checkpoints);
    RUN(test_share_different_vae_not_shared);
    TEST_END();
}
