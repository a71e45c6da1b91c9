/* comm_internal.h: the communicator handle's fields, shared by the files of src/dist (the
 * collectives in comm.c, the stuck-rank watchdog in watchdog.c). Not installed. */
#ifndef DPTRAIN_COMM_INTERNAL_H
#define DPTRAIN_COMM_INTERNAL_H

#include "dptrain/dist.h"

#include "dptrain/err.h"

#include <mpi.h>

/* Records a failed MPI call as DP_EMPI with the MPI error string and goes to done. */
#define DP_MPI(call)                                                                        \
    do {                                                                                    \
        int mpi_rc_ = (call);                                                               \
        if (mpi_rc_ != MPI_SUCCESS) {                                                       \
            char es_[MPI_MAX_ERROR_STRING];                                                 \
            int el_ = 0;                                                                    \
            MPI_Error_string(mpi_rc_, es_, &el_);                                           \
            rc = dp_err(DP_EMPI, "%s failed: %s (%s:%d)", #call, es_, __FILE__, __LINE__); \
            goto done;                                                                      \
        }                                                                                   \
    } while (0)

/* What a rank waits in, for the watchdog's report (an index into wd_kind_names). */
typedef enum {
    WD_ALLREDUCE = 0,
    WD_BCAST,
    WD_AGREE,
    WD_MAX,
    WD_BARRIER,
    WD_BUCKETS,
    WD_REDUCE_SCATTER,
    WD_ALLGATHER,
    WD_GATHER,
    WD_N_KINDS
} wd_kind;

struct dp_comm {
    MPI_Comm comm;
    MPI_Comm node; /* the ranks of comm on this node (MPI shared-memory split) */
    int rank, size, local_size;
    dp_watchdog *wd; /* NULL unless dp_watchdog_start ran on this communicator */
};

/* Around every blocking collective of comm.c: the watchdog times the wait. Local; no-ops
 * without a watchdog. */
void dp_wd_enter(const dp_comm *c, wd_kind kind);
void dp_wd_leave(const dp_comm *c);

#endif
