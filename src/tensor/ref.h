/* The reference backend ("ref"): a plain, single-threaded, double-accumulating
 * implementation of every op, written for clarity, used by tests as the oracle for every
 * other backend. Its memory is host memory. */
#ifndef IMGD_TENSOR_REF_H
#define IMGD_TENSOR_REF_H

#include "tensor/backend.h"

/* params may be NULL (it has no options). out: written only on success. IMGD_E_NOMEM. */
imgd_status imgd_ref_backend_new(const imgd_backend_params *params, imgd_backend **out);

#endif
