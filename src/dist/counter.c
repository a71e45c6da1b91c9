/* counter.c: shared counters on rank 0 of a communicator, taken with MPI_Fetch_and_op in a
 * passive-target epoch that stays open from creation to free (MPI_Win_lock_all): a work
 * queue's "next item" that any rank can take without the holder's participation. On one
 * node Open MPI's shared-memory window makes the add a CPU atomic; across nodes the holder's
 * MPI progresses it (its next MPI call at the latest). */
#include "comm_internal.h"

#include <stdlib.h>

struct dp_counter {
    MPI_Win win;
    int64_t *base; /* rank 0: the counters; other ranks: an empty window */
    int n_slots;
};

int dp_counter_create(const dp_comm *c, int n_slots, dp_counter **out)
{
    int rc = DP_OK;
    *out = NULL;
    dp_counter *k = calloc(1, sizeof *k);
    if (!k || n_slots < 1) {
        return k ? (free(k), dp_err(DP_EINVAL, "dp_counter_create: %d slots", n_slots))
                 : dp_err(DP_ENOMEM, "out of memory (counter)");
    }
    k->win = MPI_WIN_NULL;
    k->n_slots = n_slots;
    const MPI_Aint bytes = c->rank == 0 ? (MPI_Aint)n_slots * (MPI_Aint)sizeof(int64_t) : 0;
    DP_MPI(MPI_Win_allocate(bytes, sizeof(int64_t), MPI_INFO_NULL, c->comm, &k->base, &k->win));
    if (c->rank == 0) {
        for (int i = 0; i < n_slots; i++) {
            k->base[i] = 0;
        }
    }
    /* Every counter is zero before any rank takes one. */
    DP_MPI(MPI_Barrier(c->comm));
    DP_MPI(MPI_Win_lock_all(MPI_MODE_NOCHECK, k->win));
    *out = k;
    k = NULL;
done:
    if (k) {
        if (k->win != MPI_WIN_NULL) {
            MPI_Win_free(&k->win);
        }
        free(k);
    }
    return rc;
}

void dp_counter_free(dp_counter **pk)
{
    dp_counter *k = pk ? *pk : NULL;
    if (!k) {
        return;
    }
    MPI_Win_unlock_all(k->win);
    MPI_Win_free(&k->win);
    free(k);
    *pk = NULL;
}

int dp_counter_next(dp_counter *k, int slot, int64_t *value)
{
    int rc = DP_OK;
    const int64_t one = 1;
    if (slot < 0 || slot >= k->n_slots) {
        return dp_err(DP_EINVAL, "dp_counter_next: slot %d of %d", slot, k->n_slots);
    }
    DP_MPI(MPI_Fetch_and_op(&one, value, MPI_INT64_T, 0, (MPI_Aint)slot, MPI_SUM, k->win));
    DP_MPI(MPI_Win_flush(0, k->win));
done:
    return rc;
}
