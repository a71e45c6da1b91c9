/* arena.c: the model-sized arrays (dptrain/arena.h) come from calloc. The SimGrid build
 * compiles sim/arena_sim.c instead of this file. */
#include "dptrain/arena.h"

#include <stdlib.h>

void *dp_arena_calloc(size_t n_elem, size_t elem_bytes) { return calloc(n_elem, elem_bytes); }

void dp_arena_free(void *p) { free(p); }
