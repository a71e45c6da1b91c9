/* dptrain/arena.h: allocation of the arrays whose size scales with the model: the parameter,
 * gradient and batch-norm arenas, the optimizer slots, the activations and backward scratch,
 * the trainer's batch input. One seam, like dp_sgemm: src/core/arena.c is calloc and free;
 * the SimGrid build replaces that file with sim/arena_sim.c, where these arrays are memory
 * shared by every simulated rank (their numbers do not matter there). Local. */
#ifndef DPTRAIN_ARENA_H
#define DPTRAIN_ARENA_H

#include <stddef.h>

/* n_elem elements of elem_bytes each, zeroed (calloc); NULL if it fails. Free with
 * dp_arena_free, never free(). */
void *dp_arena_calloc(size_t n_elem, size_t elem_bytes);
/* NULL-safe. */
void dp_arena_free(void *p);

/* DP_CALLOC (dptrain/err.h) through dp_arena_calloc: on failure records DP_ENOMEM and goes
 * to done. */
#define DP_ARENA_CALLOC(p, n) DP_ALLOC_WITH(dp_arena_calloc, p, n)

#endif
