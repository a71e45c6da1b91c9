/* sim.h: what the simulation program (sim_main.c) needs from SMPI (sim_mpi.c, arena_sim.c):
 * shared read-only arrays, the layout of the model-sized arrays (dptrain/arena.h) and the
 * time spent in MPI_Allreduce. Only sim_mpi.c includes mpi.h. */
#ifndef DPTRAIN_SIM_H
#define DPTRAIN_SIM_H

#include <stddef.h>

/* n_bytes that every simulated rank calling from here sees at the same address and that
 * take physical memory once (SMPI_SHARED_MALLOC: the pages of all ranks, and blocks of one
 * allocation, alias each other, so contents are not reliable beyond "some value written by
 * someone"). NULL if it fails. Local. */
void *dp_sim_shared_alloc(size_t n_bytes);
void dp_sim_shared_free(void *p); /* NULL-safe. Local. */

/* arena_sim.c's dp_arena_calloc of n_bytes: bytes [0, dp_sim_shared_prefix(n_bytes)) are
 * shared by all ranks (garbage), the rest, at least the last SIM_PRIVATE_TAIL_BYTES, is the
 * rank's own. 0: all private (plain calloc). Local. */
#define SIM_PAGE_BYTES ((size_t)4096)
#define SIM_PRIVATE_TAIL_BYTES ((size_t)64)
size_t dp_sim_shared_prefix(size_t n_bytes);

/* Time in MPI_Allreduce, per rank, split into calls of at least big_count elements (the
 * gradient allreduce) and the rest (status words, metrics). Counting starts at
 * dp_sim_timing_reset; Local. From the first reset on, an in-place allreduce of at least
 * big_count elements (the gradient arena) sends from a buffer of the rank's laid out as an
 * arena (dp_arena_calloc), its private end copied in, instead of MPI_IN_PLACE: SMPI would
 * copy the whole buffer into a private temporary (23 MB a rank for 784-2048-2048-10). */
int dp_sim_timing_reset(size_t big_count);
/* Frees this rank's buffer of the above. Local. */
void dp_sim_release(void);

typedef struct {
    double big_seconds;   /* mean over ranks of the time in big allreduces */
    double big_max;       /* max over ranks */
    long big_calls;       /* calls on rank 0 */
    double other_seconds; /* mean over ranks of the time in the other allreduces */
    long other_calls;
} dp_sim_timing;

/* Reduces every rank's counters to *out on rank 0 (other ranks: unspecified). Collective
 * over MPI_COMM_WORLD; not counted. */
int dp_sim_timing_collect(dp_sim_timing *out);

#endif
