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
