/* dptrain/dist.h: everything MPI, behind an opaque communicator. src/dist is the only
 * place that includes mpi.h; the program starts and stops MPI through these functions.
 * "Collective" functions must be called by every rank of the communicator. */
#ifndef DPTRAIN_DIST_H
#define DPTRAIN_DIST_H

#include <stddef.h>

typedef struct dp_comm dp_comm;

/* MPI_Init (threads: funneled). Local, once per process, before anything else here. */
int dp_dist_init(int *argc, char ***argv);
/* MPI_Finalize. Local, once. */
void dp_dist_finalize(void);
/* Prints nothing, ends every rank of the job with exit code `code` (MPI_Abort). */
void dp_dist_abort(int code) __attribute__((noreturn));

/* A duplicate of MPI_COMM_WORLD. Collective over the world. */
int dp_comm_world(dp_comm **out);
/* Splits c by color (ranks of one color form a communicator, ordered by rank). Collective. */
int dp_comm_split(const dp_comm *c, int color, dp_comm **out);
void dp_comm_free(dp_comm **c); /* Collective; NULL-safe; sets *c = NULL */

int dp_comm_rank(const dp_comm *c);       /* Local */
int dp_comm_size(const dp_comm *c);       /* Local */
/* Ranks of c on this node (MPI shared-memory split, taken at creation). Local. */
int dp_comm_local_size(const dp_comm *c);

/* In-place sums over every rank. Collective. */
int dp_comm_allreduce_sum_f32(const dp_comm *c, float *buf, size_t n);
int dp_comm_allreduce_sum_f64(const dp_comm *c, double *buf, size_t n);
/* Broadcasts n floats from root. Collective. */
int dp_comm_bcast_f32(const dp_comm *c, float *buf, size_t n, int root);
/* Agrees on a status: returns the largest status over the ranks (DP_OK if all are).
 * Collective. If the call itself fails, aborts the job: ranks cannot be left apart. */
int dp_comm_agree(const dp_comm *c, int status);
/* The lowest rank whose status is not DP_OK, or -1 if none: that rank alone prints the
 * shared failure, so a job prints one message, not one per rank. Collective. */
int dp_comm_first_failed(const dp_comm *c, int status);
/* Largest value of x over the ranks. Collective. */
double dp_comm_max_f64(const dp_comm *c, double x);
int dp_comm_barrier(const dp_comm *c);
/* A bucketed, non-blocking in-place sum of one float array, for overlapping the gradient
 * allreduce with the backward pass. Bucket k is buf[bounds[k] .. bounds[k+1]); buckets may be
 * started in any order, but every rank must start the same buckets in the same order (each
 * start is a collective MPI_Iallreduce). Open MPI progresses non-blocking collectives only
 * inside MPI calls: call dp_reducer_test between pieces of work. */
typedef struct dp_reducer dp_reducer;
/* n_buckets >= 1 and bounds (n_buckets + 1) ascending, copied. buf is kept (not owned) and
 * must stay valid. Local. */
int dp_reducer_create(const dp_comm *c, float *buf, int n_buckets, const size_t *bounds,
                      dp_reducer **out);
void dp_reducer_free(dp_reducer **r); /* NULL-safe; sets *r = NULL; no bucket may be open */
/* Starts the sum of bucket k. Collective (non-blocking). */
int dp_reducer_start(dp_reducer *r, int k);
/* Lets MPI progress the open buckets; returns at once. Local. */
int dp_reducer_test(dp_reducer *r);
/* Waits for every started bucket to complete (all must have been started). Local. */
int dp_reducer_wait(dp_reducer *r);

/* Wall-clock seconds (MPI_Wtime). Local. */
double dp_wtime(void);

#endif
