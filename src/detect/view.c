/* Name lookups over weights with a wrapper prefix stripped. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect/detect.h"

#define NAME_MAX_LEN 1024

const imgd_wtensor *imgd_view_get(const imgd_view *v, const char *fmt, ...) {
    char    name[NAME_MAX_LEN];
    size_t  rl = strlen(v->root);
    va_list ap;
    if (rl >= sizeof name) return NULL;
    memcpy(name, v->root, rl);
    va_start(ap, fmt);
    int n = vsnprintf(name + rl, sizeof name - rl, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof name - rl) return NULL;
    size_t i;
    if (!imgd_strmap_get(&v->w->index, name, &i)) return NULL;
    return &v->w->t[i];
}

size_t imgd_view_count_prefix(const imgd_view *v, const char *prefix) {
    size_t rl = strlen(v->root), pl = strlen(prefix), n = 0;
    for (size_t i = 0; i < v->w->n; i++) {
        const char *s = v->w->t[i].name;
        if (strncmp(s, v->root, rl) == 0 && strncmp(s + rl, prefix, pl) == 0) n++;
    }
    return n;
}

size_t imgd_view_count_substr(const imgd_view *v, const char *sub) {
    size_t n = 0;
    for (size_t i = 0; i < v->w->n; i++)
        if (strstr(v->w->t[i].name, sub)) n++;
    return n;
}

int32_t imgd_view_index_count(const imgd_view *v, const char *prefix) {
    size_t  rl = strlen(v->root), pl = strlen(prefix);
    int32_t best = 0;
    for (size_t i = 0; i < v->w->n; i++) {
        const char *s = v->w->t[i].name;
        if (strncmp(s, v->root, rl) != 0 || strncmp(s + rl, prefix, pl) != 0) continue;
        const char *d = s + rl + pl;
        if (*d < '0' || *d > '9') continue;
        char *end = NULL;
        long  k   = strtol(d, &end, 10);
        if (end && (*end == '.' || *end == '\0') && k >= 0 && k < 100000 && k + 1 > best)
            best = (int32_t)(k + 1);
    }
    return best;
}
