/* Common macros for every layer. */
#ifndef IMGD_BASE_BASE_H
#define IMGD_BASE_BASE_H

#include <stddef.h>
#include <stdint.h>

#include "imgd.h"

#define IMGD_ARRAY_LEN(a)            (sizeof(a) / sizeof((a)[0]))
#define IMGD_PRINTF(fmt_idx, va_idx) __attribute__((format(printf, fmt_idx, va_idx)))
#define IMGD_UNUSED(x)               ((void)(x))
#define IMGD_MIN(a, b)               ((a) < (b) ? (a) : (b))
#define IMGD_MAX(a, b)               ((a) > (b) ? (a) : (b))

/* Programmer invariants only (never input-derived): logs, then aborts; on in release. */
#define IMGD_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) imgd_base_assert_fail(__FILE__, __LINE__, #cond);                             \
    } while (0)

_Noreturn void imgd_base_assert_fail(const char *file, int line, const char *expr);

#endif
