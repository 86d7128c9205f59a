/* Greedy-by-size offset assignment (the TFLite/MNN "greedy by size" strategy): sort by
 * size, largest first; place each buffer at the lowest offset where it does not collide
 * with an already placed buffer whose lifetime intersects its own. */
#include "tensor/plan.h"

#include <stdlib.h>

#include "base/alloc.h"
#include "base/error.h"

static _Thread_local const imgd_plan_item *g_sort_items;

static int by_size_desc(const void *pa, const void *pb) {
    size_t                a = *(const size_t *)pa, b = *(const size_t *)pb;
    const imgd_plan_item *ia = &g_sort_items[a], *ib = &g_sort_items[b];
    if (ia->size != ib->size) return ia->size > ib->size ? -1 : 1;
    if (ia->first != ib->first) return ia->first < ib->first ? -1 : 1;
    return a < b ? -1 : (a > b);
}

static bool overlaps(const imgd_plan_item *a, const imgd_plan_item *b) {
    return a->first <= b->last && b->first <= a->last;
}

/* placed[0..n_placed) holds item indices sorted by offset. Returns the lowest offset for
 * item i. */
static size_t lowest_fit(const imgd_plan_item *items, const size_t *offsets, const size_t *sizes,
                         const size_t *placed, size_t n_placed, size_t i) {
    size_t cand = 0;
    for (size_t k = 0; k < n_placed; k++) {
        size_t p = placed[k];
        if (!overlaps(&items[p], &items[i])) continue;
        if (offsets[p] >= cand + sizes[i]) break; /* the gap below p fits */
        size_t end = offsets[p] + sizes[p];
        if (end > cand) cand = end;
    }
    return cand;
}

imgd_status imgd_plan_assign(const imgd_plan_item *items, size_t n, size_t align, size_t *offsets,
                             size_t *total) {
    if (align == 0 || (align & (align - 1)) != 0)
        return imgd_fail(IMGD_E_INVALID_ARG, "plan: alignment %zu is not a power of two", align);
    for (size_t i = 0; i < n; i++) {
        if (items[i].first < 0 || items[i].last < items[i].first)
            return imgd_fail(IMGD_E_INVALID_ARG, "plan: item %zu has lifetime [%d, %d]", i,
                             (int)items[i].first, (int)items[i].last);
        if (items[i].size > SIZE_MAX / 2)
            return imgd_fail(IMGD_E_TOO_LARGE, "plan: item %zu is %zu bytes", i, items[i].size);
    }
    size_t     *order  = imgd_malloc(n * sizeof *order + 1);
    size_t     *placed = imgd_malloc(n * sizeof *placed + 1);
    size_t     *sizes  = imgd_malloc(n * sizeof *sizes + 1);
    imgd_status st     = IMGD_OK;
    if (!order || !placed || !sizes) {
        st = imgd_fail(IMGD_E_NOMEM, "plan: out of memory for %zu buffers", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        order[i] = i;
        sizes[i] = (items[i].size + align - 1) & ~(align - 1);
    }
    g_sort_items = items;
    qsort(order, n, sizeof *order, by_size_desc);
    g_sort_items = NULL;

    size_t top = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i   = order[k];
        size_t off = lowest_fit(items, offsets, sizes, placed, k, i);
        size_t end;
        if (!imgd_size_add(off, sizes[i], &end)) {
            st = imgd_fail(IMGD_E_TOO_LARGE, "plan: arena size overflows");
            goto done;
        }
        offsets[i] = off;
        if (end > top) top = end;
        /* insert into placed, kept sorted by offset */
        size_t pos = k;
        while (pos > 0 && offsets[placed[pos - 1]] > off) {
            placed[pos] = placed[pos - 1];
            pos--;
        }
        placed[pos] = i;
    }
    *total = top;
done:
    imgd_free(order);
    imgd_free(placed);
    imgd_free(sizes);
    return st;
}
