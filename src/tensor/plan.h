/* Memory planner: places buffers with known lifetimes in one arena (liveness-based reuse).
 * Pure function of sizes and lifetimes, so it is testable without a graph. */
#ifndef IMGD_TENSOR_PLAN_H
#define IMGD_TENSOR_PLAN_H

#include "base/base.h"

typedef struct imgd_plan_item {
    size_t  size;  /* bytes (rounded up to align by the planner) */
    int32_t first; /* step that writes it first */
    int32_t last;  /* last step that reads it (>= first); buffers whose [first, last]
                      intervals intersect never overlap in memory */
} imgd_plan_item;

/* Assigns offsets[i] (multiples of align, a power of two) so that items with intersecting
 * lifetimes occupy disjoint bytes, and returns the arena size in *total. Greedy by size
 * (largest first, each placed at the lowest offset that fits beside the already placed
 * items it overlaps in time), which is optimal for chains and within one buffer of optimal
 * on the graphs we plan.
 * Returns IMGD_OK, IMGD_E_INVALID_ARG (bad interval or align), IMGD_E_TOO_LARGE (size
 * overflow) or IMGD_E_NOMEM (temporary arrays). */
imgd_status imgd_plan_assign(const imgd_plan_item *items, size_t n, size_t align, size_t *offsets,
                             size_t *total);

#endif
