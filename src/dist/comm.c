/* comm.c: the MPI layer: init/finalize/abort, the communicator handle and the collectives
 * the trainer uses. The only file that includes mpi.h. */
#include "dptrain/dist.h"

#include "dptrain/err.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

struct dp_comm {
    MPI_Comm comm;
    int rank, size, local_size;
};

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

int dp_dist_init(int *argc, char ***argv)
{
    int rc = DP_OK, provided = 0;
    DP_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    /* Errors come back as codes so that we can report them; we decide when to abort. */
    DP_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
done:
    return rc;
}

void dp_dist_finalize(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) {
        MPI_Finalize();
    }
}

void dp_dist_abort(int code)
{
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort does not return; this satisfies noreturn */
}

static int wrap(MPI_Comm comm, dp_comm **out)
{
    int rc = DP_OK;
    dp_comm *c = NULL;
    MPI_Comm node = MPI_COMM_NULL;
    DP_CALLOC(c, 1);
    c->comm = comm;
    DP_MPI(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
    DP_MPI(MPI_Comm_rank(comm, &c->rank));
    DP_MPI(MPI_Comm_size(comm, &c->size));
    DP_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    DP_MPI(MPI_Comm_size(node, &c->local_size));
    *out = c;
    c = NULL;
done:
    if (node != MPI_COMM_NULL) {
        MPI_Comm_free(&node);
    }
    free(c);
    return rc;
}

int dp_comm_world(dp_comm **out)
{
    int rc = DP_OK;
    MPI_Comm dup = MPI_COMM_NULL;
    *out = NULL;
    DP_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    DP_TRY(wrap(dup, out));
    dup = MPI_COMM_NULL;
done:
    if (dup != MPI_COMM_NULL) {
        MPI_Comm_free(&dup);
    }
    return rc;
}

int dp_comm_split(const dp_comm *c, int color, dp_comm **out)
{
    int rc = DP_OK;
    MPI_Comm sub = MPI_COMM_NULL;
    *out = NULL;
    DP_MPI(MPI_Comm_split(c->comm, color, c->rank, &sub));
    DP_TRY(wrap(sub, out));
    sub = MPI_COMM_NULL;
done:
    if (sub != MPI_COMM_NULL) {
        MPI_Comm_free(&sub);
    }
    return rc;
}

void dp_comm_free(dp_comm **pc)
{
    dp_comm *c = pc ? *pc : NULL;
    if (!c) {
        return;
    }
    MPI_Comm_free(&c->comm);
    free(c);
    *pc = NULL;
}

int dp_comm_rank(const dp_comm *c) { return c->rank; }
int dp_comm_size(const dp_comm *c) { return c->size; }
int dp_comm_local_size(const dp_comm *c) { return c->local_size; }

/* Collectives take int counts; larger buffers go in pieces of at most INT_MAX/2. */
#define DP_MPI_CHUNK ((size_t)1 << 30)

/* In-place sum (root < 0) or broadcast from root of n elements of type t, elem_bytes each,
 * in pieces that fit MPI's int counts. Collective. */
static int chunked(const dp_comm *c, void *buf, size_t n, MPI_Datatype t, size_t elem_bytes,
                   int root)
{
    int rc = DP_OK;
    for (size_t off = 0; off < n; off += DP_MPI_CHUNK) {
        int cnt = (int)(n - off < DP_MPI_CHUNK ? n - off : DP_MPI_CHUNK);
        char *p = (char *)buf + off * elem_bytes;
        if (root < 0) {
            DP_MPI(MPI_Allreduce(MPI_IN_PLACE, p, cnt, t, MPI_SUM, c->comm));
        } else {
            DP_MPI(MPI_Bcast(p, cnt, t, root, c->comm));
        }
    }
done:
    return rc;
}

int dp_comm_allreduce_sum_f32(const dp_comm *c, float *buf, size_t n)
{
    return chunked(c, buf, n, MPI_FLOAT, sizeof *buf, -1);
}

int dp_comm_allreduce_sum_f64(const dp_comm *c, double *buf, size_t n)
{
    return chunked(c, buf, n, MPI_DOUBLE, sizeof *buf, -1);
}

int dp_comm_bcast_f32(const dp_comm *c, float *buf, size_t n, int root)
{
    return chunked(c, buf, n, MPI_FLOAT, sizeof *buf, root);
}

int dp_comm_agree(const dp_comm *c, int status)
{
    int all = status;
    if (MPI_Allreduce(&status, &all, 1, MPI_INT, MPI_MAX, c->comm) != MPI_SUCCESS) {
        fprintf(stderr, "dptrain: rank %d: error: MPI_Allreduce failed while ranks agreed on "
                        "a status; aborting the job\n", c->rank);
        dp_dist_abort(3);
    }
    return all;
}

int dp_comm_first_failed(const dp_comm *c, int status)
{
    int mine = status != 0 ? c->rank : c->size, first = mine;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->comm) != MPI_SUCCESS) {
        fprintf(stderr, "dptrain: rank %d: error: MPI_Allreduce (min) failed; aborting\n",
                c->rank);
        dp_dist_abort(3);
    }
    return first == c->size ? -1 : first;
}

double dp_comm_max_f64(const dp_comm *c, double x)
{
    double all = x;
    if (MPI_Allreduce(&x, &all, 1, MPI_DOUBLE, MPI_MAX, c->comm) != MPI_SUCCESS) {
        fprintf(stderr, "dptrain: rank %d: error: MPI_Allreduce (max) failed; aborting\n",
                c->rank);
        dp_dist_abort(3);
    }
    return all;
}

int dp_comm_barrier(const dp_comm *c)
{
    int rc = DP_OK;
    DP_MPI(MPI_Barrier(c->comm));
done:
    return rc;
}

double dp_wtime(void) { return MPI_Wtime(); }
