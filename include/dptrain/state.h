/* dptrain/state.h: everything of a training run that affects its future, apart from the
 * model itself (parameters and batch-norm running statistics) and the configuration.
 * The training loop (src/train) updates it; checkpoints (src/io) save and restore it. It is
 * a core type so that both may use it (arrows: train -> io -> core). All functions Local.
 *
 * All randomness in dptrain is counter-based (dptrain/rng.h): the per-epoch permutation is
 * keyed by (seed, epoch), dropout masks by (seed, micro-step, layer, row), the validation
 * hold-out by (seed, a tag). So the RNG keys of a run are its seed and the counters here;
 * there is no generator state to save. */
#ifndef DPTRAIN_STATE_H
#define DPTRAIN_STATE_H

#include "dptrain/optim.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One epoch's line of the metrics log. NaN where a figure does not exist (no validation
 * split, no test split, no accuracy for regression). */
typedef struct {
    int epoch;           /* 1-based */
    long step;           /* optimizer steps taken at the end of the epoch */
    double lr;           /* the last learning rate used in the epoch */
    double train_loss, train_accuracy;
    double val_loss, val_accuracy;
    double test_loss, test_accuracy;
    double samples_per_s, seconds; /* timings: the only figures a resumed run cannot repeat */
} dp_epoch_record;

#define DP_EPOCH_RECORD_FIELDS 11 /* the fields above, in order, as doubles in a checkpoint */

typedef struct {
    uint64_t seed;       /* the run's RNG key */
    /* Position. */
    int epoch;           /* epochs completed */
    size_t next_batch;   /* first global batch of the next step, within epoch `epoch` (0-based
                          * in the epoch; == batches per epoch when the epoch's steps are done
                          * but its evaluation is not) */
    long step;           /* optimizer steps taken */
    bool finished;       /* the run has ended (all epochs, or early stopping) */
    /* Running sums of the current epoch; zero at an epoch start. */
    double loss_sum, correct_sum, epoch_seconds;
    size_t seen;         /* training rows counted */
    double train_seconds; /* time in training steps over all finished epochs */
    float lr;            /* the last learning rate used */
    /* The divergence rule's reference: the larger of the first step's mean training loss and
     * a uniform prediction's loss; 0 until the first step. */
    double loss_ref;
    /* Schedule: reduce-on-plateau (the scheduled rate itself is a function of step). */
    float lr_factor;     /* 1 until reduce-on-plateau lowers it */
    double plateau_best; /* best watched loss so far (+inf at the start) */
    int plateau_bad;     /* epochs since it improved */
    /* Early stopping. */
    double best_val;     /* best validation loss (+inf at the start) */
    int bad_epochs;
    int best_epoch;      /* the epoch whose weights are kept in best_params, 0 if none */
    bool stopped_early;
    /* Optimizer: its hyperparameters, n_slots arrays (dp_optim_slot_name names them) of the
     * state of parameters [slot_off, slot_off + slot_n): all n_params of them (slot_off 0,
     * slot_n n_params), except on the ranks of a sharded run (--allreduce sharded), where
     * dp_train_run keeps each rank's slice alone and leaves it so (its checkpoints gather the
     * slices: the files hold all of it); and the scalar state (Nadam's mu_product; 1 for the
     * others). */
    dp_optim_cfg opt;
    int n_slots;
    size_t n_params, n_buffers;
    size_t slot_off, slot_n;
    float *slots[DP_OPTIM_MAX_SLOTS];
    double opt_scalar;
    /* Early stopping's kept weights and batch-norm statistics (NULL without early stopping). */
    float *best_params, *best_buffers;
    /* The metrics log so far: one record per finished epoch (capacity: the run's epochs). */
    dp_epoch_record *history;
    int n_history, cap_history;
} dp_train_state;

/* The largest number of epochs a run may have (--epochs). */
#define DP_MAX_EPOCHS 1000000

/* A fresh state for a run of `epochs` epochs with optimizer opt over n_params parameters
 * and n_buffers batch-norm statistics: slots initialized by dp_optim_init_slots, infinite
 * best values, lr_factor 1; best_params/best_buffers allocated only if early_stopping. */
int dp_train_state_init(dp_train_state *s, const dp_optim_cfg *opt, size_t n_params,
                        size_t n_buffers, uint64_t seed, int epochs, bool early_stopping);
void dp_train_state_free(dp_train_state *s); /* NULL-safe, idempotent */

/* Keeps of the optimizer state only parameters [off, off + n) (which the slots must hold):
 * new arrays of n floats each replace the slots. Local. */
int dp_train_state_keep_slice(dp_train_state *s, size_t off, size_t n);


#endif
