/* The graph object, shared by graph.c, ops.c and plan.c only (STYLE M2). */
#ifndef IMGD_TENSOR_TENSOR_IMPL_H
#define IMGD_TENSOR_TENSOR_IMPL_H

#include "base/arena.h"
#include "tensor/tensor.h"

#define GRAPH_ERROR_MAX 512

struct imgd_graph {
    imgd_arena    arena;   /* descriptors and names */
    imgd_tensor **tensors; /* creation order (topological: a node follows its inputs) */
    size_t        n_tensors;
    size_t        cap_tensors;
    size_t        nodes_max;
    bool          fuse_quant_linear; /* imgd_graph_params */

    imgd_status status; /* sticky builder error */
    char        error[GRAPH_ERROR_MAX];

    /* plan */
    imgd_backend *be;   /* borrowed; set while planned */
    imgd_tensor **exec; /* execution order */
    size_t        n_exec;
    bool          prepared; /* be->prepare ran and release is owed */
    bool          planned;
    size_t        buffer_bytes;

    const atomic_int *cancel; /* borrowed; polled between nodes */

    /* memory */
    void *buffer;
    bool  owns_buffer;
    bool  computed;
};

/* A fresh tensor descriptor in g's arena with the given dtype and contiguous shape; its
 * storage is itself. NULL (sticky IMGD_E_NOMEM / IMGD_E_TOO_LARGE) on failure. */
imgd_tensor *imgd_graph_new_tensor(imgd_graph *g, imgd_dtype dtype, int32_t n_dims,
                                   const int64_t *shape);

/* Fills contiguous strides for t's shape. */
void imgd_tensor_set_contiguous(imgd_tensor *t);

#endif
