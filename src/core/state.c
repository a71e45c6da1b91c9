/* state.c: allocation of a run's resumable training state (the optimizer slots and the kept
 * best weights through dptrain/arena.h). */
#include "dptrain/state.h"

#include "dptrain/arena.h"
#include "dptrain/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int dp_train_state_init(dp_train_state *s, const dp_optim_cfg *opt, size_t n_params,
                        size_t n_buffers, uint64_t seed, int epochs, bool early_stopping)
{
    int rc = DP_OK;
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->opt = *opt;
    s->n_params = n_params;
    s->n_buffers = n_buffers;
    s->lr = opt->lr;
    s->lr_factor = 1.0f;
    s->plateau_best = INFINITY;
    s->best_val = INFINITY;
    s->opt_scalar = 1.0;
    s->slot_off = 0;
    s->slot_n = n_params;
    s->n_slots = dp_optim_n_slots(opt);
    for (int i = 0; i < s->n_slots; i++) {
        DP_ARENA_CALLOC(s->slots[i], n_params);
    }
    /* The arena's zeros are every optimizer's start but Adagrad's: writing them again would
     * make every page resident at once, which a sharded run, keeping a slice, never needs. */
    if (opt->kind == DP_OPT_ADAGRAD && opt->initial_accumulator_value != 0.0f) {
        dp_optim_init_slots(opt, n_params, s->slots);
    }
    if (early_stopping) {
        DP_ARENA_CALLOC(s->best_params, n_params);
        DP_ARENA_CALLOC(s->best_buffers, n_buffers);
    }
    s->cap_history = epochs > 0 ? epochs : 0;
    DP_CALLOC(s->history, s->cap_history);
done:
    if (rc != DP_OK) {
        dp_train_state_free(s);
    }
    return rc;
}

void dp_train_state_free(dp_train_state *s)
{
    if (!s) {
        return;
    }
    for (int i = 0; i < DP_OPTIM_MAX_SLOTS; i++) {
        dp_arena_free(s->slots[i]);
        s->slots[i] = NULL;
    }
    dp_arena_free(s->best_params);
    dp_arena_free(s->best_buffers);
    free(s->history);
    s->best_params = s->best_buffers = NULL;
    s->history = NULL;
    s->n_history = s->cap_history = 0;
}

/* New slot arrays of n floats holding [from, from + n) of the parameters' state, with the
 * slice held now ([slot_off, slot_off + slot_n)) copied to its place where they overlap. */
static int reslot(dp_train_state *s, size_t from, size_t n)
{
    int rc = DP_OK;
    float *next[DP_OPTIM_MAX_SLOTS] = {0};
    const size_t lo = s->slot_off > from ? s->slot_off : from;
    const size_t hi_have = s->slot_off + s->slot_n, hi_want = from + n;
    const size_t hi = hi_have < hi_want ? hi_have : hi_want;
    for (int i = 0; i < s->n_slots; i++) {
        DP_ARENA_CALLOC(next[i], n ? n : 1);
        if (hi > lo) {
            memcpy(next[i] + (lo - from), s->slots[i] + (lo - s->slot_off),
                   (hi - lo) * sizeof(float));
        }
    }
    for (int i = 0; i < s->n_slots; i++) {
        dp_arena_free(s->slots[i]);
        s->slots[i] = next[i];
        next[i] = NULL;
    }
    s->slot_off = from;
    s->slot_n = n;
done:
    for (int i = 0; i < DP_OPTIM_MAX_SLOTS; i++) {
        dp_arena_free(next[i]);
    }
    return rc;
}

int dp_train_state_keep_slice(dp_train_state *s, size_t off, size_t n)
{
    if (off < s->slot_off || off + n > s->slot_off + s->slot_n) {
        return dp_err(DP_EINVAL, "optimizer state: slice [%zu, %zu) is not within the held "
                                 "[%zu, %zu)", off, off + n, s->slot_off,
                      s->slot_off + s->slot_n);
    }
    return reslot(s, off, n);
}
