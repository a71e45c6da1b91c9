/* test_train.c: the MPI-free parts of the trainer: the validation split. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "dptrain/train.h"

Test(train_val, split_is_a_partition_of_the_right_size)
{
    const size_t n = 1000;
    size_t *tr = calloc(n, sizeof *tr), *va = calloc(n, sizeof *va);
    char *seen = calloc(n, 1);
    cr_assert_eq(dp_val_count(n, 0.2f), 200);
    cr_assert_eq(dp_val_count(n, 0.0f), 0);
    cr_assert_eq(dp_val_count(7, 0.5f), 4); /* round(3.5) away from zero */
    dp_val_split(n, 0.2f, 42, tr, va);
    for (size_t i = 0; i < 200; i++) {
        cr_assert_lt(va[i], n);
        cr_assert_eq(seen[va[i]], 0, "row %zu held out twice", va[i]);
        seen[va[i]] = 1;
    }
    for (size_t i = 0; i < 800; i++) {
        cr_assert_lt(tr[i], n);
        cr_assert_eq(seen[tr[i]], 0, "row %zu in both splits or twice", tr[i]);
        seen[tr[i]] = 2;
        if (i > 0) {
            cr_assert_lt(tr[i - 1], tr[i], "training rows keep file order");
        }
    }
    free(tr);
    free(va);
    free(seen);
}

Test(train_val, split_depends_on_the_seed_only)
{
    const size_t n = 500;
    size_t a[500], av[100], b[500], bv[100], c[500], cv[100];
    dp_val_split(n, 0.2f, 7, a, av);
    dp_val_split(n, 0.2f, 7, b, bv);
    dp_val_split(n, 0.2f, 8, c, cv);
    int same_ab = 1, same_ac = 1;
    for (size_t i = 0; i < 100; i++) {
        same_ab &= av[i] == bv[i];
        same_ac &= av[i] == cv[i];
    }
    cr_assert(same_ab, "same seed, same validation rows");
    cr_assert_not(same_ac, "another seed, other validation rows");
    /* Not simply the first or last rows of the file. */
    size_t in_head = 0;
    for (size_t i = 0; i < 100; i++) {
        in_head += av[i] < 100;
    }
    cr_assert_lt(in_head, 50);
}
