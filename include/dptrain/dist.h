/* dptrain/dist.h: everything MPI, behind an opaque communicator. src/dist is the only
 * place that includes mpi.h; the program starts and stops MPI through these functions.
 * "Collective" functions must be called by every rank of the communicator. */
#ifndef DPTRAIN_DIST_H
#define DPTRAIN_DIST_H

#include <stddef.h>
#include <stdint.h>

typedef struct dp_comm dp_comm;
typedef struct dp_watchdog dp_watchdog;

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
/* In-place integer sum: exact and associative, so the result does not depend on the number
 * of ranks or the reduction order (deterministic mode; also a gather: each slot written by
 * one rank, zero on the others, ends with that rank's bits everywhere). Collective. */
int dp_comm_allreduce_sum_i64(const dp_comm *c, int64_t *buf, size_t n);
/* In-place element-wise maximum (exact: the same whatever the order). Collective. */
int dp_comm_allreduce_max_f32(const dp_comm *c, float *buf, size_t n);
/* ZeRO-1's collectives over a vector cut into one contiguous slice per rank, rank r's of
 * counts[r] floats at displs[r] (displs[r] = counts[0] + ... + counts[r-1]; total at most
 * INT_MAX). reduce_scatter: in place, buf's slice `rank` becomes the sum over the ranks of
 * their buf's slice `rank` (the rest of buf is left with partial sums): a ring of N - 1
 * MPI_Sendrecv steps, in pieces of tmp_n floats through tmp, so that no buffer of the
 * vector's size is allocated (Open MPI's MPI_Reduce_scatter takes one per call); the sums
 * are added in ring order, the same bits at every call (2 ranks: a + b, as an allreduce).
 * allgatherv: in place, every rank's slice of buf to every rank. gatherv: this rank's slice
 * (mine, counts[rank] floats) into full on root (full is not read elsewhere). Collective. */
int dp_comm_reduce_scatter_sum_f32(const dp_comm *c, float *buf, const int *counts,
                                   const int *displs, float *tmp, int tmp_n);
int dp_comm_allgatherv_f32(const dp_comm *c, float *buf, const int *counts, const int *displs);
int dp_comm_gatherv_f32(const dp_comm *c, const float *mine, float *full, const int *counts,
                        const int *displs, int root);
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

/* Shared counters: a work queue's next index, kept on rank 0 of the communicator and taken
 * with an atomic fetch-and-add (MPI one-sided, passive target), so a rank takes work
 * whenever it is free, without the others' help. n_slots counters, each from 0. */
typedef struct dp_counter dp_counter;
/* Collective. */
int dp_counter_create(const dp_comm *c, int n_slots, dp_counter **out);
/* Collective; NULL-safe; sets *k = NULL. */
void dp_counter_free(dp_counter **k);
/* Adds 1 to counter `slot` and returns its value before the add in *value: every value is
 * taken by exactly one caller. Local (rank 0 need not take part). */
int dp_counter_next(dp_counter *k, int slot, int64_t *value);

/* Node-shared memory: one segment per node of `bytes`, held by the node's first rank (local
 * rank 0) and mapped by every rank of the node (an MPI-3 shared-memory window on the node
 * communicator), for data the node's ranks read and need not copy. */
typedef struct dp_shared dp_shared;
/* This rank's place among the ranks of c on its node (0: the node's first). Local. */
int dp_comm_local_rank(const dp_comm *c);
/* Broadcasts bytes (at most 1 GiB) from the node's first rank to the node's ranks.
 * Collective over the node. */
int dp_comm_node_bcast(const dp_comm *c, void *buf, size_t bytes);
/* Creates the node's segment; every rank of a node must give the same bytes. Collective. */
int dp_shared_create(const dp_comm *c, size_t bytes, dp_shared **out);
/* The segment's first byte, in this rank's address space. Local. */
void *dp_shared_base(const dp_shared *s);
/* After the node's first rank has written the segment: every rank of the node sees it.
 * Collective over the node. */
int dp_shared_sync(const dp_shared *s, const dp_comm *c);
/* Collective over the node; NULL-safe; sets *s = NULL. */
void dp_shared_free(dp_shared **s);

/* Broadcasts bytes from root to every rank of c. Collective. */
int dp_comm_bcast_bytes(const dp_comm *c, void *buf, size_t bytes, int root);

/* The stuck-rank watchdog. A thread per rank times every wait inside a collective of c; when
 * one lasts longer than the limit (a peer stopped, swapping, stuck in a hung file system or
 * NIC), it prints which ranks it waits for (those on this node that have not reached the
 * collective, with their process state) and ends the process with exit_code without any MPI
 * call, so mpirun ends the job and no rank needs the wedged peer's help. Checkpoints are
 * written atomically, so the newest one stays valid. */
typedef struct {
    double timeout_s; /* > 0: the limit in seconds; 0: automatic, max(min_s, factor x the
                         median time between the last steps) */
    double min_s;     /* the automatic limit's floor, seconds */
    double factor;    /* the automatic limit's multiple of the median step */
    int exit_code;    /* exit status of a rank whose watchdog fires */
} dp_watchdog_cfg;
/* Starts the watchdog on c (timeout_s < 0: does nothing). Collective (allocates a node-shared
 * table of every local rank's progress). */
int dp_watchdog_start(dp_comm *c, const dp_watchdog_cfg *cfg);
/* Stops it; no-op without one. Collective. */
void dp_watchdog_stop(dp_comm *c);
/* The training loop marks each completed optimizer step: the automatic limit follows the
 * step time, and a report says where each rank was. Local; no-op without a watchdog. */
void dp_comm_step_done(const dp_comm *c, long step);
/* For a stop signal's handler (async-signal-safe): one line on stderr for each rank on this
 * node whose process is gone (killed or crashed), from the watchdog's table (nothing without
 * a watchdog). When one rank dies, mpirun ends the others with SIGTERM, and this is how they
 * can say which rank was lost. Local. */
void dp_comm_report_lost_peers(const dp_comm *c);
/* The limit in force now, seconds (0 without a watchdog). Local. */
double dp_watchdog_limit(const dp_comm *c);

/* Wall-clock seconds (MPI_Wtime). Local. */
double dp_wtime(void);

#endif
