/* sampling/rng: torch's CPU generator and CUDA Philox, against published torch values and
 * the Random123 known-answer vectors. */
#include "sampling/rng.h"
#include "test.h"

static void test_rng_mt19937_first_output_seed0(void) {
    imgd_rng r;
    imgd_rng_init(&r, IMGD_RNG_CPU, 0);
    CHECK(imgd_rng_u32(&r) == 2357136044u); /* std::mt19937(0)() */
    imgd_rng_init(&r, IMGD_RNG_CPU, 5489);
    CHECK(imgd_rng_u32(&r) == 3499211612u); /* the reference default seed */
}

static void test_rng_rand_matches_torch_seed0(void) {
    /* torch.manual_seed(0); torch.rand(3) */
    imgd_rng r;
    float    v[3];
    imgd_rng_init(&r, IMGD_RNG_CPU, 0);
    imgd_rng_rand(&r, v, 3);
    CHECK_NEAR(v[0], 0.4963, 1e-4);
    CHECK_NEAR(v[1], 0.7682, 1e-4);
    CHECK_NEAR(v[2], 0.0885, 1e-4);
}

static void test_rng_randn_small_matches_torch_seed0(void) {
    /* torch.manual_seed(0); torch.randn(4): the scalar (double Box-Muller) path */
    static const double want[4] = {1.5410, -0.2934, -2.1788, 0.5684};
    imgd_rng            r;
    float               v[4];
    imgd_rng_init(&r, IMGD_RNG_CPU, 0);
    imgd_rng_randn(&r, v, 4);
    for (int i = 0; i < 4; i++) CHECK_NEAR(v[i], want[i], 1e-4);
}

static void test_rng_randn_16_matches_torch_seed0(void) {
    /* torch.manual_seed(0); torch.randn(4, 4): the vectorised 16-element path */
    static const double want[16] = {-1.1258, -1.1524, -0.2506, -0.4339, 0.8487, 0.6920,
                                    -0.3160, -2.1152, 0.3223,  -1.2633, 0.3500, 0.3081,
                                    0.1198,  1.2377,  1.1168,  -0.2473};
    imgd_rng            r;
    float               v[16];
    imgd_rng_init(&r, IMGD_RNG_CPU, 0);
    imgd_rng_randn(&r, v, 16);
    for (int i = 0; i < 16; i++) CHECK_NEAR(v[i], want[i], 1e-4);
}

static void test_rng_randn_caches_second_box_muller_value(void) {
    /* randn(3) leaves the sine of the second pair cached: the next randn(1) returns it,
     * i.e. randn(3) + randn(1) == randn(4). */
    imgd_rng a, b;
    float    four[4], three[3], one[1];
    imgd_rng_init(&a, IMGD_RNG_CPU, 7);
    imgd_rng_randn(&a, four, 4);
    imgd_rng_init(&b, IMGD_RNG_CPU, 7);
    imgd_rng_randn(&b, three, 3);
    imgd_rng_randn(&b, one, 1);
    for (int i = 0; i < 3; i++) CHECK(three[i] == four[i]);
    CHECK(one[0] == four[3]);
    /* manual_seed clears the cache */
    imgd_rng_init(&b, IMGD_RNG_CPU, 7);
    imgd_rng_randn(&b, one, 1);
    CHECK(one[0] == four[0]);
}

static void test_rng_randn_tail_recomputes_last_16(void) {
    /* 17 elements: 17 uniforms, the first block of 16 computed, then the last 16 redrawn
     * from 16 fresh uniforms (33 in all), so only element 0 survives from the first block. */
    imgd_rng a, b;
    float    v16[16], v17[17];
    imgd_rng_init(&a, IMGD_RNG_CPU, 3);
    imgd_rng_randn(&a, v16, 16);
    imgd_rng_init(&b, IMGD_RNG_CPU, 3);
    imgd_rng_randn(&b, v17, 17);
    CHECK(v17[0] == v16[0]);
    CHECK(v17[1] != v16[1]);
    imgd_rng_init(&a, IMGD_RNG_CPU, 3);
    for (int i = 0; i < 33; i++) (void)imgd_rng_u32(&a);
    CHECK(imgd_rng_u32(&a) == imgd_rng_u32(&b));
}

static void test_rng_randn_1024_seed1234_first_values_bitexact(void) {
    /* torch.manual_seed(1234); torch.randn(1, 4, 16, 16): the conformance kit's latents */
    imgd_rng r;
    float    v[1024];
    imgd_rng_init(&r, IMGD_RNG_CPU, 1234);
    imgd_rng_randn(&r, v, 1024);
    CHECK(v[0] == -0.1117185652256012f);
    CHECK(v[1] == -0.49659010767936707f);
    CHECK(v[2] == 0.16307370364665985f);
    CHECK(v[3] == -0.8816877603530884f);
}

static void test_rng_scalar_kernel_close_to_avx2(void) {
    imgd_rng a, b;
    float    va[64], vb[64];
    imgd_rng_init(&a, IMGD_RNG_CPU, 42);
    imgd_rng_init(&b, IMGD_RNG_CPU_SCALAR, 42);
    imgd_rng_randn(&a, va, 64);
    imgd_rng_randn(&b, vb, 64);
    for (int i = 0; i < 64; i++) CHECK_NEAR(va[i], vb[i], 1e-5);
}

static void test_rng_philox_known_answers(void) {
    /* Random123 kat_vectors, philox4x32 10 rounds */
    static const uint32_t ctr[3][4] = {{0, 0, 0, 0},
                                       {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                                       {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
    static const uint32_t key[3][2] = {
        {0, 0}, {0xffffffffu, 0xffffffffu}, {0xa4093822u, 0x299f31d0u}};
    static const uint32_t want[3][4] = {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u},
                                        {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu},
                                        {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}};
    for (int c = 0; c < 3; c++) {
        uint32_t out[4];
        imgd_rng_philox4x32_10(ctr[c], key[c], out);
        for (int i = 0; i < 4; i++) CHECK(out[i] == want[c][i]);
    }
}

/* Element i of a one-wave torch CUDA randn: sin-branch Box-Muller of Philox(counter =
 * (offset / 4, 0, i, 0), key = seed), in double (the formula A1111's NV generator uses). */
static double philox_ref(uint64_t seed, uint64_t offset4, uint32_t i, int lane) {
    uint32_t ctr[4] = {(uint32_t)offset4, (uint32_t)(offset4 >> 32), i, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    imgd_rng_philox4x32_10(ctr, key, out);
    size_t pair = (size_t)(lane / 2) * 2; /* Box-Muller of words (pair, pair + 1) */
    double u    = ((double)out[pair] + 0.5) * (1.0 / 4294967296.0);
    double v    = ((double)out[pair + 1] + 0.5) * (2.0 * 3.14159265358979323846 / 4294967296.0);
    double s    = sqrt(-2.0 * log(u));
    return (lane % 2 == 0) ? s * sin(v) : s * cos(v);
}

static void test_rng_philox_randn_maps_elements_to_subsequences(void) {
    imgd_rng r;
    float    v[300], w[300];
    imgd_rng_init(&r, IMGD_RNG_PHILOX, 0x1234567890ull);
    imgd_rng_randn(&r, v, 300);
    imgd_rng_randn(&r, w, 300); /* the generator's offset moved on by 4 */
    for (uint32_t i = 0; i < 300; i++) {
        CHECK_NEAR(v[i], philox_ref(0x1234567890ull, 0, i, 0), 2e-6);
        CHECK_NEAR(w[i], philox_ref(0x1234567890ull, 1, i, 0), 2e-6);
    }
    CHECK(r.philox_offset == 8);
}

static void test_rng_philox_grid_stride_uses_all_four_lanes(void) {
    /* with one block of 256 threads, 1000 elements need one curand_normal4 per thread:
     * element idx + 256 * lane takes lane `lane` of thread idx's float4 */
    imgd_rng r;
    float    v[1000];
    imgd_rng_init(&r, IMGD_RNG_PHILOX, 99);
    imgd_rng_philox_blocks(&r, 1);
    imgd_rng_randn(&r, v, 1000);
    for (uint32_t idx = 0; idx < 256; idx += 17) {
        for (int lane = 0; lane < 4; lane++) {
            uint32_t li = idx + 256u * (uint32_t)lane;
            if (li < 1000) CHECK_NEAR(v[li], philox_ref(99, 0, idx, lane), 2e-6);
        }
    }
    CHECK(r.philox_offset == 4);
}

static void test_rng_kind_names_round_trip(void) {
    for (int k = IMGD_RNG_CPU; k < IMGD_RNG_KIND_COUNT; k++) {
        imgd_rng_kind got;
        CHECK_STATUS(imgd_rng_kind_parse(imgd_rng_kind_name((imgd_rng_kind)k), &got), IMGD_OK);
        CHECK_EQ_INT(got, k);
    }
    imgd_rng_kind got;
    CHECK_STATUS(imgd_rng_kind_parse("mersenne", &got), IMGD_E_INVALID_ARG);
    CHECK(strstr(imgd_last_error(), "philox") != NULL);
}

int main(void) {
    RUN(test_rng_mt19937_first_output_seed0);
    RUN(test_rng_rand_matches_torch_seed0);
    RUN(test_rng_randn_small_matches_torch_seed0);
    RUN(test_rng_randn_16_matches_torch_seed0);
    RUN(test_rng_randn_caches_second_box_muller_value);
    RUN(test_rng_randn_tail_recomputes_last_16);
    RUN(test_rng_randn_1024_seed1234_first_values_bitexact);
    RUN(test_rng_scalar_kernel_close_to_avx2);
    RUN(test_rng_philox_known_answers);
    RUN(test_rng_philox_randn_maps_elements_to_subsequences);
    RUN(test_rng_philox_grid_stride_uses_all_four_lanes);
    RUN(test_rng_kind_names_round_trip);
    TEST_END();
}
