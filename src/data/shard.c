/* shard.c: the epoch permutation and the shard / batch arithmetic of data-parallel
 * training. Plain integers only, so one process can play every rank in tests. */
#include "dptrain/data.h"
#include "dptrain/rng.h"

void dp_permutation(size_t *perm, size_t n, uint64_t seed, uint64_t epoch)
{
    dp_rng r = dp_rng_make(seed, epoch);
    if (!perm) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        perm[i] = i;
    }
    for (size_t i = n; i-- > 1;) {
        size_t j = (size_t)dp_rng_below(&r, (uint64_t)i + 1);
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* Keys the Feistel permutation apart from the other uses of (seed, epoch). */
#define DP_FEISTEL_TAG 0x46454953544c4531ULL /* "FEISTLE1" */

void dp_feistel_init(dp_feistel *f, size_t n, uint64_t seed, uint64_t epoch)
{
    int bits = 0;
    while (bits < 64 && ((uint64_t)1 << bits) < (uint64_t)n) {
        bits++;
    }
    const int half = bits < 2 ? 1 : (bits + 1) / 2;
    *f = (dp_feistel){.n = n, .key = dp_rng_hash(dp_rng_hash(seed, DP_FEISTEL_TAG), epoch),
                      .half = half, .mask = ((uint64_t)1 << half) - 1};
}

/* One pass of the network over the domain [0, 4^half). */
static uint64_t feistel_once(const dp_feistel *f, uint64_t x)
{
    uint64_t l = x >> f->half, r = x & f->mask;
    for (int round = 0; round < DP_FEISTEL_ROUNDS; round++) {
        const uint64_t t = l ^ (dp_rng_hash(f->key + (uint64_t)round, r) & f->mask);
        l = r;
        r = t;
    }
    return (l << f->half) | r;
}

size_t dp_feistel_at(const dp_feistel *f, size_t i)
{
    /* Cycle walking: the network permutes [0, 4^half), at most 4n values; applying it again
     * to a value past n follows that value's cycle to the next one inside [0, n), which keeps
     * a bijection of [0, n). Expected passes: below 4. */
    uint64_t x = i;
    do {
        x = feistel_once(f, x);
    } while (x >= f->n);
    return (size_t)x;
}

void dp_shard_rows(size_t n_rows, int rank, int size, size_t *lo, size_t *hi)
{
    size_t q, rem, rk;
    if (size <= 0 || rank < 0 || rank >= size) {
        *lo = *hi = 0; /* no such rank: an empty shard */
        return;
    }
    q = n_rows / (size_t)size;
    rem = n_rows % (size_t)size;
    rk = (size_t)rank;
    *lo = rk * q + (rk < rem ? rk : rem);
    *hi = *lo + q + (rk < rem ? 1 : 0);
}

size_t dp_n_batches(size_t n, size_t batch, bool drop_last)
{
    if (batch == 0) {
        return 0;
    }
    return drop_last ? n / batch : n / batch + (n % batch != 0);
}
