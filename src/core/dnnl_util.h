/* dnnl_util.h: what the files that call oneDNN share (conv_dnnl.c, gemm_dnnl.c): its header
 * and the checking macro. Include only where DPTRAIN_HAVE_DNNL is defined. */
#ifndef DPTRAIN_DNNL_UTIL_H
#define DPTRAIN_DNNL_UTIL_H

#include "dptrain/err.h"

#include <oneapi/dnnl/dnnl.h>

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

#endif
