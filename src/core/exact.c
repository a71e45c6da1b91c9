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
    const double f = frexp(bound, &k); /* bound = f 2^k, f in [0.5, 1): bound <= 2^k */
    return DP_FIXED_BITS - k + (f == 0.5); /* a power of two: bound = 2^(k-1) */
}

/* 1.5 * 2^52: adding it to a double of magnitude below 2^51 leaves the value rounded to an
 * integer (ties to even) in the low mantissa bits, so integer subtraction of the constant's
 * bits reads it back. One add and one subtract: the loop vectorizes. */
#define MAGIC 6755399441055744.0

/* The loops below run in every deterministic step over the whole gradient, once per shard:
 * wider vectors where the CPU has them, chosen at load time. Every variant does the same
 * IEEE operations (exact float-to-double, an exact power-of-two scaling, one rounding add;
 * a fused multiply-add gives the same, the product being exact), so the bits do not depend
 * on which one runs. GCC only: clang 14 (Debian 12, the fuzz build) exports an external
 * cloned function as "name.ifunc" and never as "name", so callers in other files do not link. */
#if defined(__has_attribute) && !defined(__clang__)
#if __has_attribute(target_clones) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define DP_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef DP_VECTOR_CLONES
#define DP_VECTOR_CLONES
#endif

DP_VECTOR_CLONES
static void fixed_round(int64_t *acc, const float *x, size_t n, int e, bool add)
{
    const double s = ldexp(1.0, e);
    int64_t magic_bits;
    const double magic = MAGIC;
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    if (add) {
        for (size_t i = 0; i < n; i++) {
            double t = (double)x[i] * s + magic;
            int64_t b;
            memcpy(&b, &t, sizeof b);
            acc[i] += b - magic_bits;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            double t = (double)x[i] * s + magic;
            int64_t b;
            memcpy(&b, &t, sizeof b);
            acc[i] = b - magic_bits;
        }
    }
}

void dp_fixed_add(int64_t *acc, const float *x, size_t n, int e)
{
    fixed_round(acc, x, n, e, true);
}

void dp_fixed_set(int64_t *acc, const float *x, size_t n, int e)
{
    fixed_round(acc, x, n, e, false);
}

DP_VECTOR_CLONES
void dp_fixed_get(float *out, const int64_t *acc, size_t n, int e)
{
    const double s = ldexp(1.0, -e);
    for (size_t i = 0; i < n; i++) {
        out[i] = (float)((double)acc[i] * s);
    }
}

DP_VECTOR_CLONES
float dp_absmax(const float *x, size_t n)
{
    /* On the bits of |x|: integer order is float order for non-negative floats, and every
     * NaN lies above infinity. An integer maximum vectorizes. */
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof b);
        b &= 0x7fffffffu;
        m = b > m ? b : m;
    }
    float f;
    memcpy(&f, &m, sizeof f);
    return m >= 0x7f800000u ? INFINITY : f;
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
