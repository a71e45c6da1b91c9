/* dptrain/err.h: status codes, the per-thread error message and the checking macros.
 *
 * Every library function returns an int status (DP_OK == 0). On failure the function
 * records one human-readable message with dp_err() (naming the file, the field and the
 * value where it knows them) and returns the code; callers add nothing and pass it up.
 * Only src/cli decides to stop. The message buffer is per thread, like errno: it is the
 * error channel only, never configuration. All functions here are Local. */
#ifndef DPTRAIN_ERR_H
#define DPTRAIN_ERR_H

#include <stddef.h>

enum dp_status {
    DP_OK = 0,
    DP_EINVAL,     /* bad argument or configuration */
    DP_ENOMEM,     /* allocation failed */
    DP_EIO,        /* file could not be opened, read or written */
    DP_EFORMAT,    /* file opened but its content is malformed */
    DP_ERANGE,     /* a value is out of its allowed range (label, size) */
    DP_EMPI,       /* an MPI call failed */
    DP_ENONFINITE, /* a loss or weight became NaN or infinite */
    DP_EPEER,      /* another rank failed; its message is on its own stderr */
    DP_ESTOPPED,   /* not a failure: training stopped on request (a signal) at a step
                    * boundary, after writing a checkpoint */
    DP_STATUS_MAX
};

/* Records printf-style message fmt as the current error and returns code. */
int dp_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last recorded message ("" if none). */
const char *dp_errmsg(void);
/* Short name of a status code, e.g. "invalid argument". */
const char *dp_strstatus(int code);
/* Clears the recorded message. */
void dp_err_clear(void);

/* Allocation of n elements of *p (zeroed) by calloc_fn (calloc's signature); on failure
 * records DP_ENOMEM and goes to done. */
#define DP_ALLOC_WITH(calloc_fn, p, n)                                                   \
    do {                                                                                 \
        size_t n_elem_ = (size_t)(n);                                                    \
        (p) = calloc_fn(n_elem_ ? n_elem_ : 1, sizeof *(p));                             \
        if (!(p)) {                                                                      \
            rc = dp_err(DP_ENOMEM, "out of memory allocating %zu bytes for %s (%s:%d)", \
                        n_elem_ * sizeof *(p), #p, __FILE__, __LINE__);                  \
            goto done;                                                                   \
        }                                                                                \
    } while (0)

/* Allocation of n elements of *p (zeroed); on failure records DP_ENOMEM and goes to done. */
#define DP_CALLOC(p, n) DP_ALLOC_WITH(calloc, p, n)

/* Calls a function returning a dp status; on failure goes to done with rc set. */
#define DP_TRY(call)              \
    do {                          \
        if ((rc = (call)) != 0) { \
            goto done;            \
        }                         \
    } while (0)

/* Fails with code and message (printf-style) and goes to done. */
#define DP_FAIL(code, ...)                \
    do {                                  \
        rc = dp_err((code), __VA_ARGS__); \
        goto done;                        \
    } while (0)

#endif
