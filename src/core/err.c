/* err.c: the per-thread error message behind dp_err() and dp_errmsg(). */
#include "dptrain/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[1024];

int dp_err(int code, const char *fmt, ...)
{
    /* Formatted apart first, so that dp_errmsg() may be among the arguments. */
    char buf[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(g_msg, buf, sizeof g_msg);
    return code;
}

const char *dp_errmsg(void) { return g_msg; }

void dp_err_clear(void) { g_msg[0] = '\0'; }

const char *dp_strstatus(int code)
{
    static const char *const names[DP_STATUS_MAX] = {
        [DP_OK] = "ok",
        [DP_EINVAL] = "invalid argument",
        [DP_ENOMEM] = "out of memory",
        [DP_EIO] = "input/output error",
        [DP_EFORMAT] = "malformed file",
        [DP_ERANGE] = "value out of range",
        [DP_EMPI] = "MPI error",
        [DP_ENONFINITE] = "non-finite value",
        [DP_EPEER] = "failure on another rank",
        [DP_ESTOPPED] = "stopped on request",
    };
    return (code >= 0 && code < DP_STATUS_MAX) ? names[code] : "unknown error";
}
