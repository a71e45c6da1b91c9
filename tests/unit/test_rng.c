/* test_rng.c: unit tests of the counter-based rng: uniform and normal moments, dp_rng_below's
 * range and uniformity, and every draw a pure function of key and counter. Suite core_rng. */
#include <criterion/criterion.h>

#include "dptrain/rng.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

TestSuite(core_rng);

/* 1e5 draws: U[0,1) has mean 1/2 (standard error 9.1e-4) and variance 1/12; N(0,1) has mean
 * 0 (s.e. 3.2e-3) and std 1 (s.e. 2.2e-3). Tolerances are ~5 standard errors or more. */
Test(core_rng, uniform_range_and_moments)
{
    dp_rng r = dp_rng_make(12345, 1);
    const int n = 100000;
    double sum = 0.0, sq = 0.0;
    int outside = 0;
    for (int i = 0; i < n; i++) {
        float u = dp_rng_uniform(&r);
        outside += !(u >= 0.0f && u < 1.0f);
        sum += u;
        sq += (double)u * u;
    }
    cr_assert_eq(outside, 0, "%d uniform draws outside [0, 1)", outside);
    double mean = sum / n, var = sq / n - mean * mean;
    cr_assert_lt(fabs(mean - 0.5), 0.005, "uniform mean %g", mean);
    cr_assert_lt(fabs(var - 1.0 / 12.0), 0.002, "uniform variance %g, want 1/12", var);
}

Test(core_rng, normal_moments)
{
    dp_rng r = dp_rng_make(999, 2);
    const int n = 100000;
    double sum = 0.0, sq = 0.0;
    int within = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        double z = dp_rng_normal(&r);
        bad += !isfinite(z);
        sum += z;
        sq += z * z;
        within += fabs(z) <= 1.0;
    }
    double mean = sum / n, sd = sqrt(sq / n - mean * mean);
    cr_assert_eq(bad, 0, "%d non-finite normal draws", bad);
    cr_assert_lt(fabs(mean), 0.02, "normal mean %g", mean);
    cr_assert_lt(fabs(sd - 1.0), 0.02, "normal std %g", sd);
    cr_assert_lt(fabs((double)within / n - 0.6827), 0.01, "P(|z|<=1) = %g", (double)within / n);
}

Test(core_rng, below_range_and_uniformity)
{
    /* n = 7, 70000 draws: each count ~ 10000 +- 93 (1 sigma); allow 5%. */
    dp_rng r = dp_rng_make(7, 3);
    long counts[7] = {0}, over = 0;
    for (int i = 0; i < 70000; i++) {
        uint64_t v = dp_rng_below(&r, 7);
        if (v < 7) {
            counts[v]++;
        } else {
            over++;
        }
    }
    cr_assert_eq(over, 0, "dp_rng_below(7) returned >= 7 %ld times", over);
    for (int j = 0; j < 7; j++) {
        cr_assert_lt(labs(counts[j] - 10000), 500, "value %d drawn %ld times of 70000", j,
                     counts[j]);
    }
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(dp_rng_below(&r, 1), 0);
    }
    /* n just above 2^63: about half the raw words are rejected; results still below n,
     * and both halves of the range are reached. */
    const uint64_t big = (UINT64_C(1) << 63) + 1;
    int high = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t v = dp_rng_below(&r, big);
        cr_assert_lt(v, big);
        high += v >= (UINT64_C(1) << 62);
    }
    cr_assert(high > 300 && high < 700, "%d of 1000 draws in the upper half of [0, 2^63]", high);
    /* n = 2^64 - 1 (UINT64_MAX): the limit case of the rejection bound. */
    for (int i = 0; i < 100; i++) {
        cr_assert_lt(dp_rng_below(&r, UINT64_MAX), UINT64_MAX);
    }
}

Test(core_rng, pure_function_of_key_and_counter)
{
    dp_rng a = dp_rng_make(42, 7), b = dp_rng_make(42, 7), c = dp_rng_make(42, 8),
           d = dp_rng_make(43, 7);
    cr_assert_eq(a.key, b.key);
    cr_assert_eq(a.ctr, 0);
    cr_assert_neq(a.key, c.key, "the second key word must matter");
    cr_assert_neq(a.key, d.key, "the first key word must matter");
    uint64_t first[16];
    for (int i = 0; i < 16; i++) {
        first[i] = dp_rng_next(&a);
        cr_assert_eq(first[i], dp_rng_next(&b));
        cr_assert_eq(first[i], dp_rng_hash(b.key, (uint64_t)i), "value %d is not hash(key, %d)",
                     i, i);
    }
    cr_assert_eq(a.ctr, 16);
    /* Jumping straight to counter 5 reproduces value 5. */
    dp_rng j = {.key = a.key, .ctr = 5};
    cr_assert_eq(dp_rng_next(&j), first[5]);
    /* Same (key, counter) -> same uniform and normal. */
    dp_rng u1 = {.key = 77, .ctr = 1000}, u2 = {.key = 77, .ctr = 1000};
    cr_assert_eq(dp_rng_uniform(&u1), dp_rng_uniform(&u2));
    cr_assert_eq(dp_rng_normal(&u1), dp_rng_normal(&u2));
    /* Consecutive values differ; hash is not symmetric in its words. */
    for (int i = 1; i < 16; i++) {
        cr_assert_neq(first[i], first[i - 1]);
    }
    cr_assert_neq(dp_rng_hash(1, 2), dp_rng_hash(2, 1));
    cr_assert_neq(dp_rng_hash(0, 0), dp_rng_hash(0, 1));
}
