/* The whole test harness (STYLE X4). Each executable defines its cases as
 * `static void test_<module>_<behaviour>(void)` and lists them in main with RUN(). */
#ifndef IMGD_TEST_H
#define IMGD_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgd.h"

static int g_test_passed, g_test_failed, g_test_case_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);               \
            g_test_case_failed = 1;                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            g_test_case_failed = 1;                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,  \
                    va_, vb_);                                                                     \
            g_test_case_failed = 1;                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                               \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a,  \
                    #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                               \
            g_test_case_failed = 1;                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double va_ = (double)(a), vb_ = (double)(b);                                               \
        if (!(fabs(va_ - vb_) <= (double)(tol))) {                                                 \
            fprintf(stderr, "%s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", __FILE__, __LINE__,   \
                    #a, #b, (double)(tol), va_, vb_);                                              \
            g_test_case_failed = 1;                                                                \
        }                                                                                          \
    } while (0)

/* Checks the status and, on mismatch, prints imgd_last_error(). */
#define CHECK_STATUS(expr, want)                                                                   \
    do {                                                                                           \
        imgd_status got_ = (expr);                                                                 \
        if (got_ != (want)) {                                                                      \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__, __LINE__,       \
                    #expr, imgd_status_name(got_), imgd_status_name(want), imgd_last_error());     \
            g_test_case_failed = 1;                                                                \
        }                                                                                          \
    } while (0)

/* Like CHECK, but on failure jumps to the case's `done:` label (its cleanup), for setup
 * steps whose failure (e.g. an injected allocation failure) leaves nothing to test. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE(%s) failed (%s)\n", __FILE__, __LINE__, #cond,         \
                    imgd_last_error());                                                            \
            g_test_case_failed = 1;                                                                \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* IMGD_TEST_ONLY=SUBSTRING runs only the cases whose function name contains it. */
#define RUN(fn)                                                                                    \
    do {                                                                                           \
        const char *only_ = getenv("IMGD_TEST_ONLY");                                              \
        if (only_ && *only_ && !strstr(#fn, only_)) {                                              \
            fprintf(stderr, "SKIP %s (IMGD_TEST_ONLY=%s)\n", #fn, only_);                          \
            break;                                                                                 \
        }                                                                                          \
        g_test_case_failed = 0;                                                                    \
        fn();                                                                                      \
        if (g_test_case_failed) {                                                                  \
            g_test_failed++;                                                                       \
            fprintf(stderr, "FAIL %s\n", #fn);                                                     \
        } else {                                                                                   \
            g_test_passed++;                                                                       \
        }                                                                                          \
    } while (0)

#define TEST_SKIP(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "SKIP: ");                                                                 \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
    } while (0)

#define TEST_END()                                                                                 \
    do {                                                                                           \
        printf("%d passed, %d failed\n", g_test_passed, g_test_failed);                            \
        return g_test_failed ? 1 : 0;                                                              \
    } while (0)

#endif
