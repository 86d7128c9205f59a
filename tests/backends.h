/* Which compute backends the conformance tests run on.
 *
 * Default: "cpu" and "ref" (every build has them). IMGD_TEST_BACKEND=NAME[,NAME...] replaces
 * the list, e.g. IMGD_TEST_BACKEND=cuda on a GPU machine checks the goldens on the GPU
 * (scripts/gpu-check.sh). Checks that run on one backend only use the first of the list. */
#ifndef IMGD_TEST_BACKENDS_H
#define IMGD_TEST_BACKENDS_H

#include <stdlib.h>
#include <string.h>

#define TB_MAX 4

typedef struct tb_list {
    const char *name[TB_MAX];
    size_t      n;
    char        buf[128];
} tb_list;

/* The backends to test, from IMGD_TEST_BACKEND or the default pair. */
static inline const tb_list *tb_backends(void) {
    static tb_list l;
    static int     done;
    if (done) return &l;
    done          = 1;
    const char *e = getenv("IMGD_TEST_BACKEND");
    if (!e || !*e || strlen(e) >= sizeof l.buf) {
        l.name[0] = "cpu";
        l.name[1] = "ref";
        l.n       = 2;
        return &l;
    }
    memcpy(l.buf, e, strlen(e) + 1);
    char *p = l.buf;
    while (p && *p && l.n < TB_MAX) {
        l.name[l.n++] = p;
        p             = strchr(p, ',');
        if (p) *p++ = '\0';
    }
    return &l;
}

/* The backend of single-backend checks: the first listed ("cpu" by default). */
static inline const char *tb_primary(void) {
    return tb_backends()->name[0];
}

#endif
