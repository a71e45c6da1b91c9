/* util.c: strict parsing of option values and error printing for the subcommands. */
#include "cli.h"

#include "dptrain/err.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int dp_cli_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) {
        return dp_err(DP_EINVAL, "%s: '%s' is not an integer", opt, s);
    }
    if (v < lo || v > hi) {
        return dp_err(DP_EINVAL, "%s: %ld is outside [%ld, %ld]", opt, v, lo, hi);
    }
    *out = v;
    return DP_OK;
}

int dp_cli_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        return dp_err(DP_EINVAL, "%s: '%s' is not a non-negative integer", opt, s);
    }
    *out = (uint64_t)v;
    return DP_OK;
}

int dp_cli_size(const char *opt, const char *s, size_t *out)
{
    uint64_t v = 0;
    int rc = dp_cli_u64(opt, s, &v);
    if (rc == DP_OK && v > (uint64_t)SIZE_MAX / 2) {
        rc = dp_err(DP_EINVAL, "%s: %s is too large", opt, s);
    }
    *out = (size_t)v;
    return rc;
}

int dp_cli_float(const char *opt, const char *s, double lo, double hi, float *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        return dp_err(DP_EINVAL, "%s: '%s' is not a number", opt, s);
    }
    if (v < lo || v > hi) {
        return dp_err(DP_EINVAL, "%s: %g is outside [%g, %g]", opt, v, lo, hi);
    }
    *out = (float)v;
    return DP_OK;
}

void dp_cli_error(const char *msg) { fprintf(stderr, "dptrain: error: %s\n", msg); }
