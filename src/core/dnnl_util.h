/* dnnl_util.h: what the files that call oneDNN share (conv_dnnl.c, gemm_dnnl.c): its header,
 * the checking macro and the reference-kernel test. Include only where DPTRAIN_HAVE_DNNL is
 * defined. */
#ifndef DPTRAIN_DNNL_UTIL_H
#define DPTRAIN_DNNL_UTIL_H

#include "dptrain/err.h"

#include <oneapi/dnnl/dnnl.h>

#include <stdbool.h>
#include <string.h>

/* Every oneDNN call goes through DN: a failure records the call and oneDNN's status, sets rc
 * and jumps to the function's done label. */
#define DN(call)                                                                            \
    do {                                                                                    \
        dnnl_status_t s_ = (call);                                                          \
        if (s_ != dnnl_success) {                                                           \
            rc = dp_err(s_ == dnnl_out_of_memory ? DP_ENOMEM : DP_EINVAL,                   \
                        "oneDNN: %s failed (status %d) (%s:%d)", #call, (int)s_, __FILE__,  \
                        __LINE__);                                                          \
            goto done;                                                                      \
        }                                                                                   \
    } while (0)

/* Whether oneDNN chose its reference implementation (a plain loop nest, far slower than
 * dptrain's own kernels) for pd. */
static inline bool dn_is_ref(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    return dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
           impl && strncmp(impl, "ref", 3) == 0;
}

#endif
