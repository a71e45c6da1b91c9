/* shared.c: node-shared memory segments (MPI-3 shared-memory windows on the node communicator
 * of a dp_comm): one segment per node, held by the node's first rank and mapped by every rank
 * of the node, for data that the ranks of a node read but need not copy (the dataset in
 * --data-memory node). */
#include "comm_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

struct dp_shared {
    MPI_Win win;
    void *base;
    size_t bytes;
};

int dp_comm_local_rank(const dp_comm *c)
{
    int r = 0;
    MPI_Comm_rank(c->node, &r);
    return r;
}

int dp_comm_node_bcast(const dp_comm *c, void *buf, size_t bytes)
{
    int rc = DP_OK;
    if (bytes > (size_t)1 << 30) {
        return dp_err(DP_EINVAL, "dp_comm_node_bcast: %zu bytes (at most 1 GiB)", bytes);
    }
    DP_MPI(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, c->node));
done:
    return rc;
}

int dp_shared_create(const dp_comm *c, size_t bytes, dp_shared **out)
{
    int rc = DP_OK;
    *out = NULL;
    dp_shared *s = calloc(1, sizeof *s);
    if (!s) {
        return dp_err(DP_ENOMEM, "out of memory (shared segment)");
    }
    s->win = MPI_WIN_NULL;
    const bool leader = dp_comm_local_rank(c) == 0;
    MPI_Aint size = 0;
    int disp = 1;
    void *mine = NULL;
    /* The whole segment on the node's first rank, none on the others (MPI_Aint is signed). */
    if (bytes > (size_t)PTRDIFF_MAX) {
        DP_FAIL(DP_EINVAL, "a node-shared segment of %zu bytes is too large", bytes);
    }
    DP_MPI(MPI_Win_allocate_shared(leader ? (MPI_Aint)(bytes ? bytes : 1) : 0, 1, MPI_INFO_NULL,
                                   c->node, &mine, &s->win));
    DP_MPI(MPI_Win_shared_query(s->win, 0, &size, &disp, &s->base));
    if ((size_t)size < bytes) {
        DP_FAIL(DP_EMPI, "the node-shared segment has %ld bytes, not %zu", (long)size, bytes);
    }
    s->bytes = bytes;
    *out = s;
    s = NULL;
done:
    if (s) {
        if (s->win != MPI_WIN_NULL) {
            MPI_Win_free(&s->win);
        }
        free(s);
    }
    return rc;
}

void *dp_shared_base(const dp_shared *s) { return s->base; }

int dp_shared_sync(const dp_shared *s, const dp_comm *c)
{
    int rc = DP_OK;
    /* The leader's stores are visible to the node's ranks after a barrier of the node; the
     * window is used without RMA calls, so MPI_Win_sync is not needed for Open MPI's
     * unified memory model, but it costs nothing and the standard's separate model asks
     * for it. */
    DP_MPI(MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win));
    DP_MPI(MPI_Win_sync(s->win));
    DP_MPI(MPI_Barrier(c->node));
    DP_MPI(MPI_Win_sync(s->win));
    DP_MPI(MPI_Win_unlock_all(s->win));
done:
    return rc;
}

void dp_shared_free(dp_shared **ps)
{
    dp_shared *s = ps ? *ps : NULL;
    if (!s) {
        return;
    }
    if (s->win != MPI_WIN_NULL) {
        MPI_Win_free(&s->win);
    }
    free(s);
    *ps = NULL;
}
