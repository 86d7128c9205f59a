/* oneDNN helpers shared by the CPU matmul and conv2d kernels: memory objects without data
 * (handles are set at replay) and reorders between our plain tensors and the layouts or
 * data types a primitive chose, writing into the node's planned scratch. */
#include "cpu_impl.h"

size_t cpu_align_up(size_t n) {
    return (n + IMGD_TENSOR_ALIGN - 1) & ~(size_t)(IMGD_TENSOR_ALIGN - 1);
}

dnnl_status_t cpu_dnnl_mem(cpu_backend *cb, const dnnl_memory_desc_t *md, dnnl_memory_t *out) {
    return dnnl_memory_create(out, md, cb->engine, DNNL_MEMORY_NONE);
}

dnnl_status_t cpu_reorder_new(cpu_backend *cb, const dnnl_memory_desc_t *plain,
                              const dnnl_memory_desc_t *chosen, bool back, cpu_reorder *r,
                              size_t *scratch) {
    if (dnnl_memory_desc_equal(plain, chosen)) return dnnl_success;
    const dnnl_memory_desc_t *src = back ? chosen : plain, *dst = back ? plain : chosen;
    dnnl_primitive_desc_t     pd   = NULL;
    dnnl_primitive_attr_t     attr = NULL;
    dnnl_status_t             s    = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success)
        s = dnnl_reorder_primitive_desc_create(&pd, src, cb->engine, dst, cb->engine, attr);
    if (s == dnnl_success) s = dnnl_primitive_create(&r->prim, pd);
    if (s == dnnl_success) s = cpu_dnnl_mem(cb, src, &r->from);
    if (s == dnnl_success) s = cpu_dnnl_mem(cb, dst, &r->to);
    if (s == dnnl_success) {
        /* layout and f32<->bf16 reorders need no scratchpad; refuse rather than plan one */
        const dnnl_memory_desc_t *smd =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (smd && dnnl_memory_desc_get_size(smd) > 0) s = dnnl_unimplemented;
    }
    r->size = cpu_align_up(dnnl_memory_desc_get_size(chosen));
    r->off  = *scratch;
    *scratch += r->size;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return s;
}

dnnl_status_t cpu_reorder_run(cpu_backend *cb, cpu_reorder *r, const void *plain,
                              unsigned char *scratch, bool back) {
    void         *p = (void *)(uintptr_t)plain; /* read-only unless back */
    dnnl_status_t s = dnnl_memory_set_data_handle(back ? r->to : r->from, p);
    if (s == dnnl_success)
        s = dnnl_memory_set_data_handle(back ? r->from : r->to, scratch + r->off);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, r->from}, {DNNL_ARG_TO, r->to}};
    if (s == dnnl_success) s = dnnl_primitive_execute(r->prim, cb->stream, 2, args);
    return s;
}

void cpu_reorder_free(cpu_reorder *r) {
    if (r->prim) dnnl_primitive_destroy(r->prim);
    if (r->from) dnnl_memory_destroy(r->from);
    if (r->to) dnnl_memory_destroy(r->to);
    memset(r, 0, sizeof *r);
}

bool cpu_dnnl_is_ref(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return false;
    return strncmp(impl, "ref", 3) == 0;
}
