/* arena_sim.c: dp_arena_calloc for the SimGrid/SMPI build. Replaces src/core/arena.c: the
 * arrays that scale with the model or the batch (parameters, gradients, batch-norm buffers,
 * optimizer slots, activations and backward scratch, the trainer's batch input; the list is
 * wherever src/ calls DP_ARENA_CALLOC) take physical memory once for all simulated ranks, so
 * that a wide network simulates at 1024 ranks on one machine.
 *
 * Each is SMPI shared memory (SMPI_PARTIAL_SHARED_MALLOC; the runs use the default global
 * mode, every shared page maps the same file block): all ranks' arrays, and the arrays of one
 * rank, alias each other, so their numbers are garbage (NaN or infinity at times). That is
 * fine: products are not computed (blas_sim.c), the other kernels cost the same on any
 * numbers, and sim_main.c keeps the checks that read them from stopping the run.
 *
 * Except the end: from the last page boundary at or before the final SIM_PRIVATE_TAIL_BYTES,
 * an array is private to its rank (anonymous memory, really summed by the allreduce): the
 * trainer's tail (the step's loss, correct rows and stop request) rides at the end of the
 * gradient arena. Arrays too small to have a shared page are plain calloc. All Local. */
#include "dptrain/arena.h"

#include "sim.h"

#include <smpi/smpi.h>
#include <stdint.h>
#include <stdlib.h>

size_t dp_sim_shared_prefix(size_t n_bytes)
{
    if (n_bytes < SIM_PRIVATE_TAIL_BYTES + SIM_PAGE_BYTES) {
        return 0;
    }
    return (n_bytes - SIM_PRIVATE_TAIL_BYTES) / SIM_PAGE_BYTES * SIM_PAGE_BYTES;
}

void *dp_arena_calloc(size_t n_elem, size_t elem_bytes)
{
    if (elem_bytes && n_elem > SIZE_MAX / elem_bytes) {
        return NULL;
    }
    const size_t n_bytes = n_elem * elem_bytes;
    const size_t shared[2] = {0, dp_sim_shared_prefix(n_bytes)};
    if (shared[1] == 0) {
        return calloc(n_elem, elem_bytes);
    }
    return SMPI_PARTIAL_SHARED_MALLOC(n_bytes, shared, 1);
}

/* SMPI_SHARED_FREE frees with free() what SMPI did not allocate (the calloc'd small arrays). */
void dp_arena_free(void *p)
{
    if (p) {
        SMPI_SHARED_FREE(p);
    }
}
