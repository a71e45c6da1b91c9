/* sim_mpi.c: the simulation program's own MPI use: SMPI shared allocations and a wrapper
 * of MPI_Allreduce that times dptrain's gradient allreduce in simulated time. The program
 * is linked with -Wl,--wrap=MPI_Allreduce, so src/dist/comm.c's calls come here and go on
 * to PMPI_Allreduce. (Defining MPI_Allreduce itself does not work: SMPI declares it weak
 * and the calls bind to libsimgrid's through the PLT.) */
#include "sim.h"

#include "dptrain/arena.h"
#include "dptrain/err.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Per-rank counters. The simulation runs without global-variable privatization (every rank
 * shares this process's globals), so the counters are an array indexed by world rank. */
typedef struct {
    double big_seconds, other_seconds;
    long big_calls, other_calls;
} rank_counters;

/* The send buffer that stands in for MPI_IN_PLACE in a rank's gradient allreduce. */
typedef struct {
    void *p;
    size_t n_bytes;
} rank_sendbuf;

static rank_counters *g_counters; /* (world size), allocated by the first reset */
static rank_sendbuf *g_sendbufs;  /* (world size), allocated by the first reset */
static int g_world;
static size_t g_big_count = (size_t)-1;

void *dp_sim_shared_alloc(size_t n_bytes) { return SMPI_SHARED_MALLOC(n_bytes ? n_bytes : 1); }

void dp_sim_shared_free(void *p)
{
    if (p) {
        SMPI_SHARED_FREE(p);
    }
}

static int world_rank(void)
{
    int r = 0;
    PMPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

int dp_sim_timing_reset(size_t big_count)
{
    if (!g_counters) {
        if (PMPI_Comm_size(MPI_COMM_WORLD, &g_world) != MPI_SUCCESS) {
            return dp_err(DP_EMPI, "MPI_Comm_size failed");
        }
        g_counters = calloc((size_t)g_world, sizeof *g_counters);
        g_sendbufs = calloc((size_t)g_world, sizeof *g_sendbufs);
        if (!g_counters || !g_sendbufs) {
            return dp_err(DP_ENOMEM, "out of memory for %d allreduce counters", g_world);
        }
    }
    g_big_count = big_count;
    rank_counters zero = {0};
    g_counters[world_rank()] = zero;
    return DP_OK;
}

void dp_sim_release(void)
{
    if (g_sendbufs) {
        rank_sendbuf *b = &g_sendbufs[world_rank()];
        dp_arena_free(b->p);
        b->p = NULL;
        b->n_bytes = 0;
    }
}

/* For an in-place allreduce of recvbuf (count of datatype): this rank's send buffer of the
 * same size laid out as an arena, with recvbuf's private end copied in (the shared part is
 * garbage either way). NULL if it cannot be had: the call then stays in place. */
static const void *inplace_sendbuf(const void *recvbuf, int count, MPI_Datatype datatype)
{
    int type_bytes = 0;
    if (!g_sendbufs || PMPI_Type_size(datatype, &type_bytes) != MPI_SUCCESS || type_bytes < 1) {
        return NULL;
    }
    const size_t n_bytes = (size_t)count * (size_t)type_bytes;
    rank_sendbuf *b = &g_sendbufs[world_rank()];
    if (b->n_bytes != n_bytes) {
        dp_arena_free(b->p);
        b->p = dp_arena_calloc(n_bytes, 1);
        b->n_bytes = b->p ? n_bytes : 0;
    }
    if (!b->p) {
        return NULL;
    }
    const size_t priv = dp_sim_shared_prefix(n_bytes);
    memcpy((char *)b->p + priv, (const char *)recvbuf + priv, n_bytes - priv);
    return b->p;
}

int __wrap_MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype,
                         MPI_Op op, MPI_Comm comm);

int __wrap_MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype,
                         MPI_Op op, MPI_Comm comm)
{
    if (sendbuf == MPI_IN_PLACE && (size_t)count >= g_big_count) {
        const void *own = inplace_sendbuf(recvbuf, count, datatype);
        sendbuf = own ? own : sendbuf;
    }
    double t0 = MPI_Wtime();
    int rc = PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
    double dt = MPI_Wtime() - t0;
    if (g_counters) {
        rank_counters *c = &g_counters[world_rank()];
        if ((size_t)count >= g_big_count) {
            c->big_seconds += dt;
            c->big_calls++;
        } else {
            c->other_seconds += dt;
            c->other_calls++;
        }
    }
    return rc;
}

/* --allreduce sharded's gradient communication: the reduce-scatter's ring of MPI_Sendrecv
 * (src/dist/comm.c) and the parameters' MPI_Allgatherv count as the big collective. */
static void count_big(double dt, bool call)
{
    if (g_counters) {
        rank_counters *c = &g_counters[world_rank()];
        c->big_seconds += dt;
        c->big_calls += call;
    }
}

int __wrap_MPI_Sendrecv(const void *sendbuf, int sendcount, MPI_Datatype sendtype, int dest,
                        int sendtag, void *recvbuf, int recvcount, MPI_Datatype recvtype,
                        int source, int recvtag, MPI_Comm comm, MPI_Status *status);

int __wrap_MPI_Sendrecv(const void *sendbuf, int sendcount, MPI_Datatype sendtype, int dest,
                        int sendtag, void *recvbuf, int recvcount, MPI_Datatype recvtype,
                        int source, int recvtag, MPI_Comm comm, MPI_Status *status)
{
    double t0 = MPI_Wtime();
    int rc = PMPI_Sendrecv(sendbuf, sendcount, sendtype, dest, sendtag, recvbuf, recvcount,
                           recvtype, source, recvtag, comm, status);
    count_big(MPI_Wtime() - t0, false);
    return rc;
}

int __wrap_MPI_Allgatherv(const void *sendbuf, int sendcount, MPI_Datatype sendtype,
                          void *recvbuf, const int *recvcounts, const int *displs,
                          MPI_Datatype recvtype, MPI_Comm comm);

int __wrap_MPI_Allgatherv(const void *sendbuf, int sendcount, MPI_Datatype sendtype,
                          void *recvbuf, const int *recvcounts, const int *displs,
                          MPI_Datatype recvtype, MPI_Comm comm)
{
    double t0 = MPI_Wtime();
    int rc = PMPI_Allgatherv(sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs,
                             recvtype, comm);
    count_big(MPI_Wtime() - t0, true);
    return rc;
}

int dp_sim_timing_collect(dp_sim_timing *out)
{
    if (!g_counters) {
        return dp_err(DP_EINVAL, "dp_sim_timing_collect before dp_sim_timing_reset");
    }
    const rank_counters *c = &g_counters[world_rank()];
    if (g_world == 1) {
        /* SMPI 3.32's ompi reduce fails on a 1-rank communicator; nothing to reduce. */
        out->big_seconds = out->big_max = c->big_seconds;
        out->other_seconds = c->other_seconds;
        out->big_calls = c->big_calls;
        out->other_calls = c->other_calls;
        return DP_OK;
    }
    double sums[2] = {c->big_seconds, c->other_seconds}, tot[2] = {0, 0}, mx = 0.0;
    if (PMPI_Reduce(sums, tot, 2, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD) != MPI_SUCCESS ||
        PMPI_Reduce(&c->big_seconds, &mx, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD) !=
            MPI_SUCCESS) {
        return dp_err(DP_EMPI, "MPI_Reduce of the allreduce timings failed");
    }
    out->big_seconds = tot[0] / g_world;
    out->other_seconds = tot[1] / g_world;
    out->big_max = mx;
    out->big_calls = c->big_calls;
    out->other_calls = c->other_calls;
    return DP_OK;
}
