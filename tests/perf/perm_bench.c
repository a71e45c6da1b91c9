/* perm_bench.c: what an epoch's visiting order costs a rank, for n rows (argv[1], default 10^7):
 * Fisher-Yates of every row (what each rank does with --shuffle fisher-yates), and the
 * Feistel places of one rank's share at 1, 64 and 1024 ranks (--shuffle feistel). Prints
 * figures; asserts nothing (a benchmark, not a test). build/tests/perm_bench [N] */
#include "dptrain/data.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000000;
    size_t *p = malloc(n * sizeof *p);
    volatile size_t sink = 0;
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        dp_permutation(p, n, 1, (uint64_t)r);
        double t = now() - t0;
        best = t < best ? t : best;
        sink += p[n / 2];
    }
    printf("n %zu: Fisher-Yates of every row: %.1f ms per epoch per rank (best of 5)\n", n, best * 1e3);
    const int ranks[] = {1, 64, 1024};
    for (int k = 0; k < 3; k++) {
        size_t share = n / (size_t)ranks[k];
        best = 1e9;
        for (int r = 0; r < 5; r++) {
            dp_feistel f;
            dp_feistel_init(&f, n, 1, (uint64_t)r);
            double t0 = now();
            for (size_t i = 0; i < share; i++) {
                sink += dp_feistel_at(&f, i);
            }
            double t = now() - t0;
            best = t < best ? t : best;
        }
        printf("n %zu: Feistel places of one rank's share at %d ranks (%zu rows): %.2f ms per epoch (%.1f ns a row)\n",
               n, ranks[k], share, best * 1e3, best * 1e9 / (double)share);
    }
    free(p);
    return (int)(sink & 0);
}
