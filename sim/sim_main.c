/* sim_main.c: dptrain's training step under SimGrid SMPI, for predicting step time at rank
 * counts beyond the machine at hand (launch/simulate.sh builds and runs it).
 *
 * The step is dptrain's own: src/train/train.c's dp_train_run over src/core (model, layers,
 * losses, optimizer) and src/dist/comm.c (the allreduce), compiled with smpicc. What differs
 * from `dptrain train`: no HDF5 (the dataset is made in memory), and dp_sgemm injects
 * measured product times instead of computing (sim/blas_sim.c). The rest of each step
 * (permutation, gather, activations, loss, optimizer) runs for real and SMPI injects the CPU
 * time it took.
 *
 * usage: smpirun ... dptrain-sim [--layers 784,256,128,10] [--batch-per-rank 64] [--steps 5]
 *                                [--lr 0.05] [--momentum 0.9] [--shuffle feistel|fisher-yates]
 *                                [--allreduce blocking|sharded]
 * Weak scaling: the global batch is batch-per-rank x ranks. Runs a warm-up epoch of `steps`
 * steps, then a measured epoch of `steps` steps; the dataset has exactly steps x global batch
 * rows (uint8 features, allocated once for all ranks with SMPI_SHARED_MALLOC; labels, which
 * index the logits, one real copy for all ranks), no test split and no validation, so an
 * epoch is only training steps. The epoch's order is dptrain's default, Feistel (a rank
 * computes only its own rows' places); fisher-yates makes every rank permute every row.
 * Rank 0 prints one line:
 *   RESULT ranks=P batch_per_rank=b global_batch=B steps=S step_ms=.. allreduce_ms=..
 *          allreduce_max_ms=.. other_collectives_ms=.. samples_per_s=.. params=..
 *          allreduce_calls=.. train_loss=..
 * step_ms is the measured epoch's time (max over ranks, as dptrain reports it) per step;
 * allreduce_ms the mean over ranks of the time in the gradient allreduce per step (with
 * --allreduce sharded: in the gradient's reduce-scatter, the ring's MPI_Sendrecv calls, and
 * the parameters' MPI_Allgatherv).
 *
 * The model-sized arrays are shared by all ranks (arena_sim.c), so logits are garbage and
 * the loss computed from them may be NaN or huge: dptrain would stop the run ("training
 * diverged"). The program is linked with -Wl,--wrap=dp_loss_eval: the loss is computed as
 * usual (its CPU time is simulated), then reported as a uniform prediction's, ln k a row
 * (train_loss in RESULT is therefore ln k whenever the tail's sum went through the allreduce
 * right). Likewise --wrap=dp_dense_init_spec skips drawing the initial weights (garbage
 * here; before the measured epoch). */
#include "sim.h"

#include "dptrain/dist.h"
#include "dptrain/err.h"
#include "dptrain/run.h"
#include "dptrain/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    dp_model_cfg model;
    int batch_per_rank;
    int steps;
    float lr, momentum;
    dp_shuffle shuffle;
    dp_reduce_mode reduce;
} sim_opts;

/* Parses argv into o (defaults: the Fashion-MNIST MLP, 64 rows per rank, 5 steps).
 * Local; returns DP_EINVAL with a message on a bad option. */
static int parse_opts(int argc, char **argv, sim_opts *o)
{
    memset(o, 0, sizeof *o);
    const char *layers = "784,256,128,10";
    o->batch_per_rank = 64;
    o->steps = 5;
    o->lr = 0.05f;
    o->momentum = 0.9f;
    o->shuffle = DP_SHUFFLE_FEISTEL;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            return dp_err(DP_EINVAL, "%s: missing value", argv[i]);
        }
        if (strcmp(argv[i], "--layers") == 0) {
            layers = v;
        } else if (strcmp(argv[i], "--batch-per-rank") == 0) {
            o->batch_per_rank = atoi(v);
        } else if (strcmp(argv[i], "--steps") == 0) {
            o->steps = atoi(v);
        } else if (strcmp(argv[i], "--lr") == 0) {
            o->lr = (float)atof(v);
        } else if (strcmp(argv[i], "--momentum") == 0) {
            o->momentum = (float)atof(v);
        } else if (strcmp(argv[i], "--allreduce") == 0) {
            if (strcmp(v, "blocking") == 0) {
                o->reduce = DP_REDUCE_BLOCKING;
            } else if (strcmp(v, "sharded") == 0) {
                o->reduce = DP_REDUCE_SHARDED;
            } else {
                return dp_err(DP_EINVAL, "--allreduce %s: want blocking or sharded", v);
            }
        } else if (strcmp(argv[i], "--shuffle") == 0) {
            if (strcmp(v, "feistel") == 0) {
                o->shuffle = DP_SHUFFLE_FEISTEL;
            } else if (strcmp(v, "fisher-yates") == 0) {
                o->shuffle = DP_SHUFFLE_FISHER_YATES;
            } else {
                return dp_err(DP_EINVAL, "--shuffle %s: want feistel or fisher-yates", v);
            }
        } else {
            return dp_err(DP_EINVAL, "unknown option %s", argv[i]);
        }
        i++;
    }
    if (o->batch_per_rank < 1 || o->steps < 1) {
        return dp_err(DP_EINVAL, "--batch-per-rank and --steps must be >= 1");
    }
    dp_model_cfg *m = &o->model;
    const char *p = layers;
    int n = 0;
    while (*p) {
        char *end = NULL;
        long s = strtol(p, &end, 10);
        if (end == p || s < 1 || s > (1L << 20) || n > DP_MAX_LAYERS) {
            return dp_err(DP_EINVAL, "--layers %s: want 2 to %d positive sizes", layers,
                          DP_MAX_LAYERS + 1);
        }
        m->sizes[n++] = (int)s;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            return dp_err(DP_EINVAL, "--layers %s: want sizes separated by commas", layers);
        }
    }
    if (n < 2) {
        return dp_err(DP_EINVAL, "--layers %s: want at least inputs and outputs", layers);
    }
    m->n_layers = n - 1;
    for (int i = 0; i < m->n_layers; i++) {
        m->act[i] = i + 1 < m->n_layers ? DP_ACT_RELU : DP_ACT_IDENTITY;
    }
    m->init = DP_INIT_HE_NORMAL;
    m->seed = 1;
    return DP_OK;
}

/* The labels of the dataset: one real array for all ranks (they index the logits, so they
 * must stay below n_classes; SMPI shared pages would hold garbage). The ranks share this
 * process's globals (no privatization) and run one at a time, switching only inside MPI
 * calls: the first caller allocates and fills it, the last sim_labels_release frees it. */
static int32_t *g_labels;
static int g_label_users;

static int32_t *sim_labels(size_t n, int n_classes)
{
    if (!g_labels) {
        g_labels = malloc((n ? n : 1) * sizeof *g_labels);
        for (size_t i = 0; g_labels && i < n; i++) {
            g_labels[i] = (int32_t)(i % (size_t)n_classes);
        }
    }
    g_label_users += g_labels != NULL;
    return g_labels;
}

static void sim_labels_release(const int32_t *labels)
{
    if (labels && --g_label_users == 0) {
        free(g_labels);
        g_labels = NULL;
    }
}

/* The in-memory dataset: n rows of uint8 features, shared by all ranks (their contents are
 * whatever the shared pages hold: with products injected, the numbers do not change the time
 * of a step), and labels i mod n_classes. */
static int make_dataset(dp_dataset *d, size_t n, int n_features, int n_classes,
                        const dp_comm *c)
{
    int rc = DP_OK;
    memset(d, 0, sizeof *d);
    d->n_classes = n_classes;
    d->train.n = n;
    d->train.n_features = n_features;
    d->train.x_scale = 1.0f / 255.0f;
    d->train.x_u8 = dp_sim_shared_alloc(n * (size_t)n_features);
    d->train.labels = sim_labels(n, n_classes);
    if (!d->train.x_u8 || !d->train.labels) {
        DP_FAIL(DP_ENOMEM, "the dataset of %zu rows: out of memory", n);
    }
done:
    rc = dp_comm_agree(c, rc);
    if (rc == DP_OK) {
        rc = dp_comm_barrier(c);
    }
    return rc;
}

double __real_dp_loss_eval(dp_loss l, const float *out, const dp_targets *t, int B, int k,
                           float scale, float *dout, long *n_correct);
double __wrap_dp_loss_eval(dp_loss l, const float *out, const dp_targets *t, int B, int k,
                           float scale, float *dout, long *n_correct);

/* dp_loss_eval as the trainer calls it here (-Wl,--wrap=dp_loss_eval): computed, then
 * reported as a uniform prediction's loss, B ln k, so that garbage logits never stop the
 * simulated run with dptrain's NaN or divergence checks. Local. */
double __wrap_dp_loss_eval(dp_loss l, const float *out, const dp_targets *t, int B, int k,
                           float scale, float *dout, long *n_correct)
{
    (void)__real_dp_loss_eval(l, out, t, B, k, scale, dout, n_correct);
    return B * dp_loss_uniform(l, k);
}

void __wrap_dp_dense_init_spec(dp_dense *l, const dp_init_spec *w, const dp_init_spec *b,
                               uint64_t seed, int layer_index);

/* dp_dense_init_spec as dp_model_create calls it here (-Wl,--wrap=dp_dense_init_spec): does
 * nothing. The weights live in shared pages whose numbers are garbage anyway, and drawing
 * 5.8 million normal numbers per rank for 784-2048-2048-10 took most of the wall time of a
 * 1024-rank simulation (its time is before the measured epoch and not part of any step).
 * Local. */
void __wrap_dp_dense_init_spec(dp_dense *l, const dp_init_spec *w, const dp_init_spec *b,
                               uint64_t seed, int layer_index)
{
    (void)l;
    (void)w;
    (void)b;
    (void)seed;
    (void)layer_index;
}

int main(int argc, char **argv)
{
    int rc = dp_dist_init(&argc, &argv);
    if (rc != DP_OK) {
        fprintf(stderr, "dptrain-sim: %s\n", dp_errmsg());
        return 1;
    }
    dp_comm *c = NULL;
    dp_model *m = NULL;
    dp_dataset d;
    dp_train_state st;
    memset(&d, 0, sizeof d);
    memset(&st, 0, sizeof st);
    bool have_state = false;
    sim_opts o;
    DP_TRY(dp_comm_world(&c));
    const int rank = dp_comm_rank(c), size = dp_comm_size(c);
    DP_TRY(parse_opts(argc, argv, &o));
    const size_t G = (size_t)o.batch_per_rank * (size_t)size;
    const int k = o.model.sizes[o.model.n_layers];
    DP_TRY(make_dataset(&d, G * (size_t)o.steps, o.model.sizes[0], k, c));

    dp_train_cfg tc = {
        .loss = DP_LOSS_CROSS_ENTROPY,
        .epochs = 1,
        .batch = G,
        .seed = 1,
        .opt = {.kind = DP_OPT_SGD, .lr = o.lr, .momentum = o.momentum},
        .sched = {.kind = DP_SCHED_CONSTANT},
        .eval_batch = o.batch_per_rank, /* no evaluation; keeps the model's buffers small */
        .accumulate = 1,
        .shuffle = o.shuffle,
        .reduce = o.reduce,
    };
    /* The model and its fresh state, as dp_run_job makes them; the state covers both
     * epochs. */
    tc.epochs = 2;
    DP_TRY(dp_run_prepare(&tc, &o.model, &d, c, &m, &st));
    have_state = true;
    const size_t n_params = dp_model_n_params(m);
    DP_TRY(dp_sim_timing_reset(n_params)); /* the gradient allreduce is known from here on */

    /* Epoch 1: warm-up (first touch of every buffer). Epoch 2, measured: dp_train_run
     * continues the state where the first call left it. */
    dp_train_result res;
    tc.epochs = 1;
    DP_TRY(dp_train_run(&tc, m, &d, c, &st, &res));
    DP_TRY(dp_sim_timing_reset(n_params));
    tc.epochs = 2;
    st.finished = false; /* the first call ended "its" run; the state continues */
    DP_TRY(dp_train_run(&tc, m, &d, c, &st, &res));
    dp_sim_timing t;
    DP_TRY(dp_sim_timing_collect(&t));
    if (rank == 0) {
        if (st.n_history != 2) {
            DP_FAIL(DP_EINVAL, "expected 2 epochs in the history, got %d", st.n_history);
        }
        const double sec = st.history[1].seconds, S = o.steps;
        printf("RESULT ranks=%d batch_per_rank=%d global_batch=%zu steps=%d step_ms=%.6f "
               "allreduce_ms=%.6f allreduce_max_ms=%.6f other_collectives_ms=%.6f "
               "samples_per_s=%.1f params=%zu allreduce_calls=%ld train_loss=%.6f\n",
               size, o.batch_per_rank, G, o.steps, 1e3 * sec / S, 1e3 * t.big_seconds / S,
               1e3 * t.big_max / S, 1e3 * t.other_seconds / S, (double)G * S / sec, n_params,
               t.big_calls, st.history[1].train_loss);
        fflush(stdout);
    }
done:
    if (rc != DP_OK) {
        fprintf(stderr, "dptrain-sim: error: %s\n", dp_errmsg());
    }
    if (have_state) {
        dp_train_state_free(&st);
    }
    dp_model_free(&m);
    dp_sim_release();
    dp_sim_shared_free(d.train.x_u8);
    sim_labels_release(d.train.labels);
    dp_comm_free(&c);
    dp_dist_finalize();
    return rc == DP_OK ? 0 : 1;
}
