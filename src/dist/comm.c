/* comm.c: the MPI layer: init/finalize/abort, the communicator handle and the collectives
 * the trainer uses (each timed by the watchdog, watchdog.c, when one runs). src/dist is the
 * only place that includes mpi.h. */
#include "comm_internal.h"

#include "dptrain/err.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

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
    c->node = node;
    node = MPI_COMM_NULL;
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
    dp_watchdog_stop(c);
    MPI_Comm_free(&c->node);
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
static int chunked_op(const dp_comm *c, void *buf, size_t n, MPI_Datatype t,
                      size_t elem_bytes, int root, MPI_Op op)
{
    int rc = DP_OK;
    dp_wd_enter(c, root < 0 ? WD_ALLREDUCE : WD_BCAST);
    for (size_t off = 0; off < n; off += DP_MPI_CHUNK) {
        int cnt = (int)(n - off < DP_MPI_CHUNK ? n - off : DP_MPI_CHUNK);
        char *p = (char *)buf + off * elem_bytes;
        if (root < 0) {
            DP_MPI(MPI_Allreduce(MPI_IN_PLACE, p, cnt, t, op, c->comm));
        } else {
            DP_MPI(MPI_Bcast(p, cnt, t, root, c->comm));
        }
    }
done:
    dp_wd_leave(c);
    return rc;
}

static int chunked(const dp_comm *c, void *buf, size_t n, MPI_Datatype t, size_t elem_bytes,
                   int root)
{
    return chunked_op(c, buf, n, t, elem_bytes, root, MPI_SUM);
}

int dp_comm_allreduce_sum_i64(const dp_comm *c, int64_t *buf, size_t n)
{
    return chunked(c, buf, n, MPI_INT64_T, sizeof *buf, -1);
}

int dp_comm_allreduce_max_f32(const dp_comm *c, float *buf, size_t n)
{
    return chunked_op(c, buf, n, MPI_FLOAT, sizeof *buf, -1, MPI_MAX);
}

int dp_comm_allreduce_sum_f32(const dp_comm *c, float *buf, size_t n)
{
    return chunked(c, buf, n, MPI_FLOAT, sizeof *buf, -1);
}

int dp_comm_allreduce_sum_f64(const dp_comm *c, double *buf, size_t n)
{
    return chunked(c, buf, n, MPI_DOUBLE, sizeof *buf, -1);
}

int dp_comm_reduce_scatter_sum_f32(const dp_comm *c, float *buf, const int *counts,
                                   const int *displs, float *tmp, int tmp_n)
{
    int rc = DP_OK;
    const int N = c->size, r = c->rank;
    const int right = (r + 1) % N, left = (r + N - 1) % N;
    /* Every rank makes the same number of exchanges per step, pieces of the largest slice
     * (slices differ by one float, which can take one more piece): a smaller slice sends or
     * receives nothing in its last one, and no call is left unmatched. */
    int most = 0;
    for (int q = 0; q < N; q++) {
        most = counts[q] > most ? counts[q] : most;
    }
    dp_wd_enter(c, WD_REDUCE_SCATTER);
    for (int k = 0; k + 1 < N; k++) {
        /* Step k: the partial sum of slice (r - k - 1) goes right; that of slice (r - k - 2)
         * comes from the left and takes this rank's part. After N - 1 steps, slice r holds
         * every rank's part: g_r + (g_{r-1} + (... + g_{r+1})). */
        const int sc = ((r - k - 1) % N + N) % N, rcv = ((r - k - 2) % N + N) % N;
        float *out = buf + displs[sc], *in = buf + displs[rcv];
        const int n_out = counts[sc], n_in = counts[rcv];
        for (int done = 0; done < most; done += tmp_n) {
            const int so = n_out <= done ? 0 : n_out - done < tmp_n ? n_out - done : tmp_n;
            const int si = n_in <= done ? 0 : n_in - done < tmp_n ? n_in - done : tmp_n;
            DP_MPI(MPI_Sendrecv(out + done, so, MPI_FLOAT, right, 0, tmp, si, MPI_FLOAT, left, 0,
                                c->comm, MPI_STATUS_IGNORE));
            for (int i = 0; i < si; i++) {
                in[done + i] += tmp[i];
            }
        }
    }
done:
    dp_wd_leave(c);
    return rc;
}

int dp_comm_allgatherv_f32(const dp_comm *c, float *buf, const int *counts, const int *displs)
{
    int rc = DP_OK;
    dp_wd_enter(c, WD_ALLGATHER);
    DP_MPI(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_FLOAT,
                          c->comm));
done:
    dp_wd_leave(c);
    return rc;
}

int dp_comm_gatherv_f32(const dp_comm *c, const float *mine, float *full, const int *counts,
                        const int *displs, int root)
{
    int rc = DP_OK;
    dp_wd_enter(c, WD_GATHER);
    DP_MPI(MPI_Gatherv(mine, counts[c->rank], MPI_FLOAT, full, counts, displs, MPI_FLOAT, root,
                       c->comm));
done:
    dp_wd_leave(c);
    return rc;
}

int dp_comm_bcast_f32(const dp_comm *c, float *buf, size_t n, int root)
{
    return chunked(c, buf, n, MPI_FLOAT, sizeof *buf, root);
}

int dp_comm_bcast_bytes(const dp_comm *c, void *buf, size_t bytes, int root)
{
    return chunked(c, buf, bytes, MPI_BYTE, 1, root);
}

int dp_comm_agree(const dp_comm *c, int status)
{
    int all = status;
    dp_wd_enter(c, WD_AGREE);
    if (MPI_Allreduce(&status, &all, 1, MPI_INT, MPI_MAX, c->comm) != MPI_SUCCESS) {
        fprintf(stderr, "dptrain: rank %d: error: MPI_Allreduce failed while ranks agreed on "
                        "a status; aborting the job\n", c->rank);
        dp_dist_abort(3);
    }
    dp_wd_leave(c);
    return all;
}

int dp_comm_first_failed(const dp_comm *c, int status)
{
    int mine = status != 0 ? c->rank : c->size, first = mine;
    dp_wd_enter(c, WD_AGREE);
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->comm) != MPI_SUCCESS) {
        fprintf(stderr, "dptrain: rank %d: error: MPI_Allreduce (min) failed; aborting\n",
                c->rank);
        dp_dist_abort(3);
    }
    dp_wd_leave(c);
    return first == c->size ? -1 : first;
}

double dp_comm_max_f64(const dp_comm *c, double x)
{
    double all = x;
    dp_wd_enter(c, WD_MAX);
    if (MPI_Allreduce(&x, &all, 1, MPI_DOUBLE, MPI_MAX, c->comm) != MPI_SUCCESS) {
        fprintf(stderr, "dptrain: rank %d: error: MPI_Allreduce (max) failed; aborting\n",
                c->rank);
        dp_dist_abort(3);
    }
    dp_wd_leave(c);
    return all;
}

int dp_comm_barrier(const dp_comm *c)
{
    int rc = DP_OK;
    dp_wd_enter(c, WD_BARRIER);
    DP_MPI(MPI_Barrier(c->comm));
done:
    dp_wd_leave(c);
    return rc;
}

struct dp_reducer {
    const dp_comm *c;
    MPI_Comm comm;
    float *buf;
    int n_buckets, n_open;
    size_t *bounds;     /* (n_buckets + 1) */
    MPI_Request *req;   /* (n_buckets); MPI_REQUEST_NULL when not open */
};

int dp_reducer_create(const dp_comm *c, float *buf, int n_buckets, const size_t *bounds,
                      dp_reducer **out)
{
    int rc = DP_OK;
    dp_reducer *r = NULL;
    *out = NULL;
    if (n_buckets < 1) {
        DP_FAIL(DP_EINVAL, "reducer: %d buckets (need at least 1)", n_buckets);
    }
    for (int k = 0; k < n_buckets; k++) {
        if (bounds[k + 1] < bounds[k] || bounds[k + 1] - bounds[k] > DP_MPI_CHUNK) {
            DP_FAIL(DP_EINVAL, "reducer: bucket %d is [%zu, %zu): not ascending or larger than "
                               "%zu floats", k, bounds[k], bounds[k + 1], DP_MPI_CHUNK);
        }
    }
    DP_CALLOC(r, 1);
    r->c = c;
    r->comm = c->comm;
    r->buf = buf;
    r->n_buckets = n_buckets;
    DP_CALLOC(r->bounds, (size_t)n_buckets + 1);
    DP_CALLOC(r->req, n_buckets);
    for (int k = 0; k <= n_buckets; k++) {
        r->bounds[k] = bounds[k];
    }
    for (int k = 0; k < n_buckets; k++) {
        r->req[k] = MPI_REQUEST_NULL;
    }
    *out = r;
    r = NULL;
done:
    dp_reducer_free(&r);
    return rc;
}

void dp_reducer_free(dp_reducer **pr)
{
    dp_reducer *r = pr ? *pr : NULL;
    if (!r) {
        return;
    }
    free(r->bounds);
    free(r->req);
    free(r);
    *pr = NULL;
}

int dp_reducer_start(dp_reducer *r, int k)
{
    int rc = DP_OK;
    if (k < 0 || k >= r->n_buckets || r->req[k] != MPI_REQUEST_NULL) {
        DP_FAIL(DP_EINVAL, "reducer: bucket %d cannot start (of %d, or already open)", k,
                r->n_buckets);
    }
    DP_MPI(MPI_Iallreduce(MPI_IN_PLACE, r->buf + r->bounds[k],
                          (int)(r->bounds[k + 1] - r->bounds[k]), MPI_FLOAT, MPI_SUM, r->comm,
                          &r->req[k]));
    r->n_open++;
done:
    return rc;
}

int dp_reducer_test(dp_reducer *r)
{
    int rc = DP_OK, flag = 0;
    if (r->n_open > 0) {
        DP_MPI(MPI_Testall(r->n_buckets, r->req, &flag, MPI_STATUSES_IGNORE));
        if (flag) {
            r->n_open = 0; /* completed requests were set to MPI_REQUEST_NULL */
        }
    }
done:
    return rc;
}

int dp_reducer_wait(dp_reducer *r)
{
    int rc = DP_OK;
    dp_wd_enter(r->c, WD_BUCKETS);
    DP_MPI(MPI_Waitall(r->n_buckets, r->req, MPI_STATUSES_IGNORE));
    r->n_open = 0;
done:
    dp_wd_leave(r->c);
    return rc;
}

double dp_wtime(void) { return MPI_Wtime(); }
