/* dptrain/rng.h: counter-based random numbers. Local; no hidden state anywhere.
 *
 * A value is a pure function of (key, counter), so any rank can compute the number that
 * belongs to any (seed, epoch, step, layer, sample) without sharing a stream. */
#ifndef DPTRAIN_RNG_H
#define DPTRAIN_RNG_H

#include <stdint.h>

/* Mixes two words into one (splitmix64 finaliser over a ^ rotated b). Pure. */
uint64_t dp_rng_hash(uint64_t a, uint64_t b);

/* A stream: value i is dp_rng_hash(key, i). */
typedef struct {
    uint64_t key;
    uint64_t ctr;
} dp_rng;

/* Stream keyed by the words k0, k1 (for example seed and a purpose tag). */
dp_rng dp_rng_make(uint64_t k0, uint64_t k1);
uint64_t dp_rng_next(dp_rng *r);
/* Uniform in [0, 1), 24 random bits. */
float dp_rng_uniform(dp_rng *r);
/* Standard normal (Box-Muller over two uniforms, computed in double). */
double dp_rng_normal(dp_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t dp_rng_below(dp_rng *r, uint64_t n);

#endif
