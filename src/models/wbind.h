/* Weight binding: networks ask for their parameters by canonical name (detect/keymap.h:
 * "unet.conv_in.weight", "vae.decoder.mid_block.attentions.0.to_q.weight",
 * "text_encoder.text_model.embeddings.token_embedding.weight") and get graph weights that
 * point straight into the mapped file, whatever layout it uses. Fused open_clip qkv rows
 * become offset views, [O, I, 1, 1] convolutions stored for linear modules are reshaped,
 * and only transposed or half-swapped tensors (open_clip text_projection, BFL FLUX's final
 * modulation) and fp8 weights (e4m3/e5m2, upcast exactly to f16) are copied, once, into the
 * binder's arena.
 *
 * Ownership: the binder borrows the weights (which must outlive it and every graph built
 * from it) and owns its key map. Binding is safe from several threads at once (a binder
 * shared by models through pipeline/share.c: the copies are made under a lock), but
 * overrides and the adapter must not change while another thread binds; the graphs it fed
 * are independent of it afterwards except for the copied tensors (freed with the binder). */
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

/* Stored dtype of a canonical tensor (the file's, whatever the map's op) into *out; false
 * when the tensor is absent (out untouched). */
bool imgd_wbind_dtype(const imgd_wbind *b, const char *canonical, imgd_dtype *out);

/* The stored bytes of a canonical tensor when its canonical layout is a view of the file
 * (nothing copied): its dtype, data and byte count. false (outputs untouched) when absent,
 * or when binding it copies (transposed or half-swapped tensors, rows splitting quantized
 * blocks). Reads only. Used to hash a component's contents (pipeline/share.c). */
bool imgd_wbind_view(const imgd_wbind *b, const char *canonical, imgd_dtype *dtype,
                     const void **data, uint64_t *nbytes);

/* The weights and model info the binder was built from. */
const imgd_weights    *imgd_wbind_weights(const imgd_wbind *b);
const imgd_model_info *imgd_wbind_info(const imgd_wbind *b);

/* Gathers rows of a 2-D canonical tensor (an embedding table [rows, width]) as f32: row
 * ids[i] goes to out[i * width .. (i + 1) * width), width = the tensor's second dim. The
 * engine has no embedding op, so token embeddings are looked up on the host this way and
 * fed to the graph as an input. Plain float dtypes and quantized types whose blocks tile a
 * row (width a multiple of the block size) are read; fused-row views are honoured.
 * Returns IMGD_OK; IMGD_E_INVALID_ARG (NULL argument, or an id outside [0, rows): the
 * message names the index and the id; out is then partly written); IMGD_E_FORMAT (absent,
 * or not 2-D); IMGD_E_UNSUPPORTED (transposed or a quantized row not block-aligned).
 * Reads only; safe from any thread while no one binds. */
imgd_status imgd_wbind_gather_rows_f32(const imgd_wbind *b, const char *canonical,
                                       const int32_t *ids, size_t n, float *out);

/* A constant f32 graph weight that the binder owns: the first call for `key` copies
 * numel(shape) values of data into the binder's arena; later calls with the same key and
 * the same element count reuse that copy (data is then ignored and may be NULL). For
 * tensors a network computes rather than loads (attention masks). The copy lives until
 * imgd_wbind_free, like every weight the binder hands out. A missing copy (data NULL),
 * another element count for the same key or an allocation failure records a sticky error
 * on g and returns NULL. key is copied. */
imgd_tensor *imgd_wbind_const_f32(imgd_wbind *b, imgd_graph *g, const char *key, int32_t n_dims,
                                  const int64_t *shape, const float *data);

/* ---- adapters: merged weight overrides and run-time hooks ------------------------------- */

/* Replaces the data a canonical tensor binds to with dtype/data (same canonical shape; data
 * borrowed: it must outlive every graph built while the override is set). Graphs built
 * before keep the old data. The mapped file is never written, so clearing the override
 * restores the original weights bit for bit. IMGD_E_FORMAT when the tensor is absent,
 * IMGD_E_INVALID_ARG when it is already overridden, IMGD_E_NOMEM. */
imgd_status imgd_wbind_override(imgd_wbind *b, const char *canonical, imgd_dtype dtype,
                                const void *data);

/* Drops every override (the next graphs bind the file's tensors again). */
void imgd_wbind_override_clear(imgd_wbind *b);

/* Number of overrides set. */
size_t imgd_wbind_override_count(const imgd_wbind *b);

/* Canonical name i (0 <= i < count), in the map's order; NULL past the end. */
const char *imgd_wbind_name_at(const imgd_wbind *b, size_t i);

/* How a module computes its output from its input x, for adapters that add to it. */
typedef enum imgd_wbind_site {
    IMGD_SITE_LINEAR = 0, /* y [..., out] = x [..., in] @ W^T (W may be stored [out, in, 1, 1]) */
    IMGD_SITE_CONV   = 1, /* y = conv2d(x [N, in, H, W], W [out, in, k, k], stride, pad) */
    IMGD_SITE_WT     = 2, /* y [B, out, L] = W @ x^T with x [B, L, in] (UNet proj_out) */
    IMGD_SITE_COUNT
} imgd_wbind_site;

/* A run-time adapter (unmerged LoRA): called by network builders after each module with a
 * weight; returns y plus whatever it adds, or y itself when it has nothing for `weight`
 * (the canonical weight name, e.g. "unet.mid_block.attentions.0.proj_in.weight"). Errors
 * are recorded on g (sticky) and NULL returned. */
typedef imgd_tensor *(*imgd_wbind_adapt_fn)(void *user, imgd_graph *g, const char *weight,
                                            imgd_wbind_site site, int32_t stride, int32_t pad,
                                            imgd_tensor *x, imgd_tensor *y);

/* Sets (fn non-NULL) or clears the binder's adapter; user is borrowed until cleared. */
void imgd_wbind_set_adapter(imgd_wbind *b, imgd_wbind_adapt_fn fn, void *user);

/* What builders call after a module: y when no adapter is set (or y is NULL), else the
 * adapter's result for the weight named by fmt. */
imgd_tensor *imgd_wbind_adapt(imgd_wbind *b, imgd_graph *g, imgd_wbind_site site, int32_t stride,
                              int32_t pad, imgd_tensor *x, imgd_tensor *y, const char *fmt, ...)
    IMGD_PRINTF(8, 9);

#endif
