/* rng.c: counter-based random numbers (splitmix64 mixing of key and counter). */
#include "dptrain/rng.h"

#include <math.h>

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t dp_rng_hash(uint64_t a, uint64_t b)
{
    return mix64(mix64(a) ^ ((b << 32) | (b >> 32)) ^ 0x632be59bd9b4e019ULL * (b + 1));
}

dp_rng dp_rng_make(uint64_t k0, uint64_t k1)
{
    dp_rng r = {dp_rng_hash(k0, k1), 0};
    return r;
}

uint64_t dp_rng_next(dp_rng *r) { return dp_rng_hash(r->key, r->ctr++); }

float dp_rng_uniform(dp_rng *r) { return (float)(dp_rng_next(r) >> 40) * 0x1.0p-24f; }

double dp_rng_normal(dp_rng *r)
{
    /* u1 in (0, 1] so log(u1) is finite. */
    double u1 = ((double)(dp_rng_next(r) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(dp_rng_next(r) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t dp_rng_below(dp_rng *r, uint64_t n)
{
    /* Rejection of the short top range keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = dp_rng_next(r);
    } while (x >= limit);
    return x % n;
}
