/* Weight binding: networks ask for their parameters by canonical name (detect/keymap.h:
 * "unet.conv_in.weight", "vae.decoder.mid_block.attentions.0.to_q.weight",
 * "text_encoder.text_model.embeddings.token_embedding.weight") and get graph weights that
 * point straight into the mapped file, whatever layout it uses. Fused open_clip qkv rows
 * become offset views, [O, I, 1, 1] convolutions stored for linear modules are reshaped,
 * and only transposed tensors (open_clip text_projection) are copied, once, into the
 * binder's arena.
 *
 * Ownership: the binder borrows the weights (which must outlive it and every graph built
 * from it) and owns its key map. Not thread-safe while binding; the graphs it fed are
 * independent of it afterwards except for the copied tensors (freed with the binder). */
#ifndef IMGD_MODELS_WBIND_H
#define IMGD_MODELS_WBIND_H

#include "detect/detect.h"
#include "detect/keymap.h"
#include "tensor/tensor.h"

typedef struct imgd_wbind imgd_wbind;

/* Builds the canonical map of w as detected in mi. IMGD_E_UNSUPPORTED when the layout has
 * no mapping; IMGD_E_NOMEM. */
imgd_status imgd_wbind_new(const imgd_weights *w, const imgd_model_info *mi, imgd_wbind **out);
void        imgd_wbind_free(imgd_wbind *b);

/* True when the canonical tensor exists. */
bool imgd_wbind_has(const imgd_wbind *b, const char *canonical);

/* Shape of a canonical tensor (after the map's op): n_dims, or -1 when absent. */
int32_t imgd_wbind_shape(const imgd_wbind *b, const char *canonical, int64_t *shape);

/* The graph weight for a canonical name. When n_dims > 0 the tensor must have exactly that
 * shape (a -1 entry matches any size); a missing tensor or a shape mismatch records a
 * sticky IMGD_E_FORMAT on g naming the tensor, the file and both shapes, and returns NULL.
 * With n_dims == 0 the stored (canonical) shape is used. */
imgd_tensor *imgd_wbind_get(imgd_wbind *b, imgd_graph *g, const char *canonical, int32_t n_dims,
                            const int64_t *shape);

/* imgd_wbind_get with the name built by printf. */
imgd_tensor *imgd_wbind_getf(imgd_wbind *b, imgd_graph *g, int32_t n_dims, const int64_t *shape,
                             const char *fmt, ...) IMGD_PRINTF(5, 6);

/* Like imgd_wbind_getf, but a missing tensor returns NULL without an error (optional
 * parameters: biases some layouts omit). A present tensor of the wrong shape still fails. */
imgd_tensor *imgd_wbind_optf(imgd_wbind *b, imgd_graph *g, int32_t n_dims, const int64_t *shape,
                             const char *fmt, ...) IMGD_PRINTF(5, 6);

/* Copies a canonical tensor converted to f32 into dst (n elements exactly). For small
 * tensors read on the host (embeddings rows, schedules). IMGD_E_FORMAT when absent or of
 * another size; IMGD_E_UNSUPPORTED for quantized tensors. */
imgd_status imgd_wbind_read_f32(const imgd_wbind *b, const char *canonical, float *dst, size_t n);

/* The weights and model info the binder was built from. */
const imgd_weights    *imgd_wbind_weights(const imgd_wbind *b);
const imgd_model_info *imgd_wbind_info(const imgd_wbind *b);

#endif
