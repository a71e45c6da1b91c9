/* exact.c: fixed-point sums that do not depend on grouping (exact.h). */
#include "dptrain/exact.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

int dp_fixed_exp(double bound)
{
    if (!(bound > 0.0)) {
        return 0;
    }
    int k = 0;
    (void)frexp(bound, &k); /* bound = f 2^k, f in [0.5, 1): bound <= 2^k */
    return DP_FIXED_BITS - k;
}

/* 1.5 * 2^52: adding it to a double of magnitude below 2^51 leaves the value rounded to an
 * integer (ties to even) in the low mantissa bits, so integer subtraction of the constant's
 * bits reads it back. One add and one subtract: the loop vectorizes. */
#define MAGIC 6755399441055744.0

void dp_fixed_add(int64_t *acc, const float *x, size_t n, int e)
{
    const double s = ldexp(1.0, e);
    int64_t magic_bits;
    const double magic = MAGIC;
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    for (size_t i = 0; i < n; i++) {
        double t = (double)x[i] * s + magic;
        int64_t b;
        memcpy(&b, &t, sizeof b);
        acc[i] += b - magic_bits;
    }
}

void dp_fixed_get(float *out, const int64_t *acc, size_t n, int e)
{
    const double s = ldexp(1.0, -e);
    for (size_t i = 0; i < n; i++) {
        out[i] = (float)((double)acc[i] * s);
    }
}

float dp_absmax(const float *x, size_t n)
{
    float m = 0.0f;
    bool bad = false;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        m = a > m ? a : m;
        bad |= !(a <= INFINITY) || a == INFINITY; /* NaN compares false */
    }
    return bad ? INFINITY : m;
}

void dp_sum_blocks(double *out, const double *blocks, int n_blocks, size_t len)
{
    for (size_t j = 0; j < len; j++) {
        out[j] = 0.0;
    }
    for (int k = 0; k < n_blocks; k++) {
        const double *b = blocks + (size_t)k * len;
        for (size_t j = 0; j < len; j++) {
            out[j] += b[j];
        }
    }
}

int64_t dp_f64_bits(double x)
{
    int64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

double dp_bits_f64(int64_t b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}
