/* LoRA and LyCORIS adapters: reading kohya (lora_unet_* / lora_te_*), diffusers/PEFT
 * (lora_A / lora_B, lora.down / lora.up, attention-processor *_lora.down) and LyCORIS (LoCon
 * with conv layers and Tucker mid, LoHa, LoKr) files, mapping every module to a canonical
 * weight of the base model, and applying a stack of them either merged into the weights
 * (owned copies of the touched tensors only, set as wbind overrides: the mapped file is never
 * written, clearing restores the original bit for bit) or unmerged (low-rank products added
 * to the modules' outputs at graph build through the binder's adapter hook).
 *
 * Scale of a module, as kohya / A1111 / LyCORIS compute it:
 *   lora, locon: alpha / rank (rank = lora_down.shape[0]); 1 without alpha
 *   loha:        alpha / hada_w1_b.shape[0]; 1 without alpha
 *   lokr:        alpha / dim, dim = lokr_w1_b.shape[0], else lokr_w2_b.shape[0]; 1 when
 *                both factors are full matrices or there is no alpha
 * and the user's weight multiplies it (the UNet's and the text encoder's separately).
 *
 * Thread-safety: a loaded imgd_lora is read-only and may be shared; a stack belongs to
 * the model that uses it (one thread at a time). */
#ifndef IMGD_MODELS_LORA_H
#define IMGD_MODELS_LORA_H

#include "base/pool.h"
#include "models/wbind.h"

typedef enum imgd_lora_algo {
    IMGD_LORA_ALGO_LORA = 0, /* up @ down (LoCon: conv down, 1x1 up; optional Tucker mid) */
    IMGD_LORA_ALGO_LOHA = 1, /* (w1a @ w1b) * (w2a @ w2b), optional Tucker t1/t2 */
    IMGD_LORA_ALGO_LOKR = 2, /* kron(w1, w2), each full or a product of factors */
    IMGD_LORA_ALGO_COUNT
} imgd_lora_algo;

typedef struct imgd_lora_module {
    const char         *key;    /* module key as stored (file's spelling, for messages) */
    const char         *target; /* canonical weight it changes ("unet.….to_q.weight") */
    imgd_lora_algo      algo;
    bool                te;    /* text-encoder module (user weight_te applies) */
    float               scale; /* alpha / dim per the reference (see above) */
    const imgd_wtensor *down, *up, *mid;
    const imgd_wtensor *w1a, *w1b, *w2a, *w2b, *t1, *t2;
    const imgd_wtensor *k1, *k1a, *k1b, *k2, *k2a, *k2b, *kt2;
    const imgd_wtensor *alpha;
} imgd_lora_module;

#define IMGD_LORA_EXAMPLES 4

typedef struct imgd_lora {
    char             *path;
    imgd_weights     *w;
    imgd_model_info  *mi;
    imgd_lora_module *mods;
    size_t            n_mods;
    size_t            n_unmatched; /* modules / tensors that change no weight of the model */
    const char       *unmatched[IMGD_LORA_EXAMPLES];
    imgd_arena        arena;
} imgd_lora;

/* Opens and maps a LoRA/LyCORIS file against the model bound by binds[0..n_binds) (each
 * canonical weight is looked up in the first binder that has it). Refuses a file that is
 * not a LoRA (IMGD_E_INVALID_ARG naming its detected kind), one for another base family
 * than `family` (IMGD_E_UNSUPPORTED with the detection's family names), modules whose shapes
 * do not fit their target (IMGD_E_FORMAT naming the module and both shapes). Keys that match
 * no module of the model are counted in n_unmatched with examples (never dropped silently).
 * out: free with imgd_lora_free. */
imgd_status imgd_lora_load(const char *path, imgd_wbind *const *binds, size_t n_binds,
                           imgd_family family, imgd_lora **out);
void        imgd_lora_free(imgd_lora *l);

/* acc (numel f32 in the target's canonical shape) += s * md->scale * delta(md); low-rank
 * products run as one OpenBLAS sgemm (threaded as OpenBLAS is set). Returns IMGD_E_FORMAT
 * when the module's product does not have numel elements, IMGD_E_NOMEM,
 * IMGD_E_UNSUPPORTED for tensors that cannot be read as floats. Safe from any thread (it
 * reads md and writes acc only); on failure acc may be partly updated. */
imgd_status imgd_lora_module_accumulate(const imgd_lora_module *md, float s, float *acc,
                                        size_t numel);

/* ---- stacks: the adapters applied to a model ------------------------------------------------ */

typedef struct imgd_lora_stack imgd_lora_stack;

/* pool: borrowed (NULL = merge on the calling thread); it must outlive the stack and is
 * used by imgd_lora_stack_attach to merge several weights at once. */
imgd_status imgd_lora_stack_new(imgd_pool *pool, imgd_lora_stack **out);
/* Frees the stack's buffers; the caller must have cleared the overrides and adapters that
 * point into it (imgd_lora_stack_detach). NULL is a no-op. */
void imgd_lora_stack_free(imgd_lora_stack *s);

/* Adds lora with user weights for UNet and text-encoder modules; merged or unmerged. The
 * lora is borrowed and must outlive the stack. */
imgd_status imgd_lora_stack_add(imgd_lora_stack *s, const imgd_lora *l, float w_unet, float w_te,
                                bool merged);

/* Applies the stack to binder b: merged entries become overrides, unmerged ones the
 * binder's adapter hook; only targets whose canonical name starts with prefix ("unet.",
 * "text_encoder."). A merged copy is W + sum of deltas computed in f32 and stored in W's
 * own dtype when that is f16 or bf16 (rounded once, to nearest even like torch's
 * .to(dtype)), so merged steps cost what the base costs; f32 otherwise. The weights are
 * merged in parallel on the stack's pool (OpenBLAS is set to one thread meanwhile, and
 * back after). Graphs built on b afterwards see the adapters; rebuild kept graphs.
 * Returns IMGD_OK, IMGD_E_NOMEM, IMGD_E_FORMAT / IMGD_E_UNSUPPORTED (a module or weight
 * that cannot be merged, named in the message); after a failure some overrides may be set:
 * imgd_lora_stack_detach clears them. */
imgd_status imgd_lora_stack_attach(imgd_lora_stack *s, imgd_wbind *b, const char *prefix);

/* Clears b's overrides and adapter (the original weights again, bit for bit). */
void imgd_lora_stack_detach(imgd_wbind *b);

/* Bytes of merged copies the stack holds. */
size_t imgd_lora_stack_merged_bytes(const imgd_lora_stack *s);

#endif
