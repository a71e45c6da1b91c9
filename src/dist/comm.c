/* comm.c: the MPI layer: init/finalize/abort, the communicator handle and the collectives
 * the trainer uses. The only file that includes mpi.h. */
#include "dptrain/dist.h"

#include "dptrain/err.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The node-shared sum (dp_comm_reserve_sum_f32): a shared-memory window on each node with
 * one input slot per rank of the node and two result buffers used in turn. */
typedef struct {
    MPI_Comm node;    /* the ranks of this node */
    MPI_Comm cross;   /* the ranks with this node rank on every node; MPI_COMM_NULL on one node */
    MPI_Win win;
    int node_rank;
    float **slot;     /* (local_size): each rank's input slot, cap floats */
    float *result[2]; /* in node rank 0's segment */
    size_t cap;
    int parity;       /* which result buffer the next sum uses */
    bool on;          /* dp_comm_set_node_sum */
} node_sum;

struct dp_comm {
    MPI_Comm comm;
    int rank, size, local_size;
    node_sum *ns;     /* ns->cap == 0: not reserved; a pointer: the sum's state changes
                       * under a const dp_comm */
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
    DP_CALLOC(c->ns, 1);
    *c->ns = (node_sum){.node = MPI_COMM_NULL, .cross = MPI_COMM_NULL, .on = true};
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
    if (c) {
        free(c->ns);
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

static void node_sum_free(node_sum *ns)
{
    if (ns->cap > 0) {
        MPI_Win_unlock_all(ns->win);
        MPI_Win_free(&ns->win);
    }
    if (ns->node != MPI_COMM_NULL) {
        MPI_Comm_free(&ns->node);
    }
    if (ns->cross != MPI_COMM_NULL) {
        MPI_Comm_free(&ns->cross);
    }
    free(ns->slot);
    *ns = (node_sum){.node = MPI_COMM_NULL, .cross = MPI_COMM_NULL, .on = ns->on};
}

void dp_comm_free(dp_comm **pc)
{
    dp_comm *c = pc ? *pc : NULL;
    if (!c) {
        return;
    }
    if (c->ns) {
        node_sum_free(c->ns);
        free(c->ns);
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

/* Memory written before this is seen by the node's ranks after it (MPI-3 shared-memory
 * pattern: sync, barrier, sync). Collective over the node. */
static int node_sync(const node_sum *ns)
{
    int rc = DP_OK;
    DP_MPI(MPI_Win_sync(ns->win));
    DP_MPI(MPI_Barrier(ns->node));
    DP_MPI(MPI_Win_sync(ns->win));
done:
    return rc;
}

int dp_comm_reserve_sum_f32(const dp_comm *c, size_t n)
{
    int rc = DP_OK, lmin = 0, lmax = 0;
    node_sum *ns = c->ns;
    MPI_Info info = MPI_INFO_NULL;
    const char *env = getenv("DPTRAIN_NODE_SUM");
    if (c->local_size < 2 || n < DP_NODE_SUM_MIN || n <= ns->cap ||
        (env && strcmp(env, "off") == 0)) {
        return DP_OK; /* the same decision on every rank: the same inputs */
    }
    node_sum_free(ns);
    /* Chunks cross the nodes by node rank: every node must have as many ranks. */
    DP_MPI(MPI_Allreduce(&c->local_size, &lmin, 1, MPI_INT, MPI_MIN, c->comm));
    DP_MPI(MPI_Allreduce(&c->local_size, &lmax, 1, MPI_INT, MPI_MAX, c->comm));
    if (lmin != lmax || n > DP_MPI_CHUNK) {
        goto done;
    }
    DP_MPI(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &ns->node));
    DP_MPI(MPI_Comm_rank(ns->node, &ns->node_rank));
    if (lmax < c->size) {
        DP_MPI(MPI_Comm_split(c->comm, ns->node_rank, c->rank, &ns->cross));
    }
    DP_MPI(MPI_Info_create(&info));
    DP_MPI(MPI_Info_set(info, "alloc_shared_noncontig", "true"));
    float *base = NULL;
    size_t mine = n * (ns->node_rank == 0 ? 3 : 1);
    DP_MPI(MPI_Win_allocate_shared((MPI_Aint)(mine * sizeof(float)), (int)sizeof(float), info,
                                   ns->node, &base, &ns->win));
    DP_CALLOC(ns->slot, c->local_size);
    for (int q = 0; q < c->local_size; q++) {
        MPI_Aint bytes = 0;
        int unit = 0;
        DP_MPI(MPI_Win_shared_query(ns->win, q, &bytes, &unit, &ns->slot[q]));
    }
    ns->result[0] = ns->slot[0] + n;
    ns->result[1] = ns->slot[0] + 2 * n;
    DP_MPI(MPI_Win_lock_all(MPI_MODE_NOCHECK, ns->win));
    ns->cap = n;
done:
    if (info != MPI_INFO_NULL) {
        MPI_Info_free(&info);
    }
    return rc;
}

void dp_comm_set_node_sum(const dp_comm *c, bool on) { c->ns->on = on; }

bool dp_comm_node_sum_active(const dp_comm *c, size_t n)
{
    return c->ns->on && c->ns->cap >= n && n >= DP_NODE_SUM_MIN;
}

/* Sum through the node's shared memory: every rank copies its buf into its slot; rank q of
 * the node sums chunk q of every slot in node-rank order (slot 0 + slot 1 + ...) into the
 * result buffer, then, across nodes, allreduces that chunk with the ranks of its node rank;
 * every rank copies the result back. Two result buffers used in turn make one barrier after
 * the copy-back unnecessary. Collective. */
static int node_sum_f32(const dp_comm *c, float *buf, size_t n)
{
    int rc = DP_OK;
    node_sum *ns = c->ns;
    const int P = c->local_size, q = ns->node_rank;
    const size_t lo = n * (size_t)q / (size_t)P, hi = n * (size_t)(q + 1) / (size_t)P;
    float *res = ns->result[ns->parity];
    memcpy(ns->slot[q], buf, n * sizeof *buf);
    DP_TRY(node_sync(ns));
    memcpy(res + lo, ns->slot[0] + lo, (hi - lo) * sizeof *res);
    for (int p = 1; p < P; p++) {
        const float *sp = ns->slot[p];
        for (size_t i = lo; i < hi; i++) {
            res[i] += sp[i];
        }
    }
    if (ns->cross != MPI_COMM_NULL && hi > lo) {
        DP_MPI(MPI_Allreduce(MPI_IN_PLACE, res + lo, (int)(hi - lo), MPI_FLOAT, MPI_SUM,
                             ns->cross));
    }
    DP_TRY(node_sync(ns));
    memcpy(buf, res, n * sizeof *buf);
    ns->parity ^= 1;
done:
    return rc;
}

int dp_comm_allreduce_sum_f32(const dp_comm *c, float *buf, size_t n)
{
    if (dp_comm_node_sum_active(c, n)) {
        return node_sum_f32(c, buf, n);
    }
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

struct dp_reducer {
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
    DP_MPI(MPI_Waitall(r->n_buckets, r->req, MPI_STATUSES_IGNORE));
    r->n_open = 0;
done:
    return rc;
}

double dp_wtime(void) { return MPI_Wtime(); }
