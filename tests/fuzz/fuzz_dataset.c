/* fuzz_dataset.c: libFuzzer target for the HDF5 dataset loaders. The input is the bytes of
 * a dataset file. dp_dataset_load (train) and dp_dataset_load_inputs (predict, eval) read
 * it; whatever they accept must keep the loaders' promises (fz_check_dataset), pass through
 * the trainer's own checks (dp_train_check, dp_train_max_rows) and, with a small model made
 * to fit it, through one forward pass and the loss, as the trainer's first step would. */
#include "dptrain/data.h"
#include "dptrain/err.h"
#include "dptrain/nn.h"
#include "dptrain/optim.h"
#include "dptrain/train.h"
#include "fuzz_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static char path[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    fz_path(path, sizeof path, "data.h5");
    return 0;
}

/* What dptrain train does with a dataset it has loaded, short of training. */
static void trainer_first_step(const dp_dataset *d)
{
    const dp_split *tr = &d->train;
    const bool labels = tr->labels != NULL;
    const int k = labels ? d->n_classes : tr->n_targets;
    dp_train_cfg cfg = {.loss = labels ? DP_LOSS_CROSS_ENTROPY : DP_LOSS_MSE, .epochs = 1,
                        .batch = 4, .eval_batch = 4, .accumulate = 1, .seed = 1,
                        .sched = {.kind = DP_SCHED_CONSTANT}};
    dp_model_cfg mc = {.n_layers = 1, .sizes = {tr->n_features, k},
                       .act = {DP_ACT_IDENTITY}, .init = DP_INIT_XAVIER_UNIFORM, .seed = 1};
    dp_optim_defaults(DP_OPT_SGD, &cfg.opt);
    if (fz_note("dp_train_check", dp_train_check(&cfg, &mc, d, 1)) != DP_OK) {
        return;
    }
    mc.max_batch = dp_train_max_rows(&cfg, d, 1);
    FZ_ASSERT(mc.max_batch >= 1, "dp_train_max_rows %d", mc.max_batch);
    /* Keep the model small: a file may legitimately declare many classes or features. */
    if ((double)tr->n_features * k > 1e6) {
        return;
    }
    dp_model *m = NULL;
    if (dp_model_create(&mc, &m) != DP_OK) {
        return;
    }
    const int B = tr->n < (size_t)mc.max_batch ? (int)tr->n : mc.max_batch;
    size_t *idx = malloc((size_t)B * sizeof *idx);
    float *x = malloc((size_t)B * (size_t)tr->n_features * sizeof *x);
    int32_t *lab = malloc((size_t)B * sizeof *lab);
    float *val = malloc((size_t)B * (size_t)(k > 0 ? k : 1) * sizeof *val);
    float *dout = malloc((size_t)B * (size_t)(k > 0 ? k : 1) * sizeof *dout);
    FZ_ASSERT(idx && x && lab && val && dout, "out of memory for a batch of %d", B);
    for (int i = 0; i < B; i++) {
        idx[i] = tr->n - 1 - (size_t)i;
    }
    dp_split_gather(tr, idx, B, x, lab, val);
    const float *out = dp_model_forward(m, x, B);
    FZ_ASSERT(out != NULL, "forward failed: %s", dp_errmsg());
    dp_targets t = {.labels = labels ? lab : NULL, .values = labels ? NULL : val};
    long correct = 0;
    (void)dp_loss_eval(cfg.loss, out, &t, B, k, 1.0f / (float)B, dout, &correct);
    free(idx);
    free(x);
    free(lab);
    free(val);
    free(dout);
    dp_model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dp_dataset *d = NULL;
    dp_input_kind kind;
    fz_write(path, data, size);

    dp_err_clear();
    if (fz_note("dp_dataset_load", dp_dataset_load(path, &d)) == DP_OK) {
        fz_check_dataset(d, true);
        trainer_first_step(d);
    } else {
        FZ_ASSERT(d == NULL, "dp_dataset_load failed but returned a dataset");
        FZ_ASSERT(dp_errmsg()[0] != '\0', "dp_dataset_load failed without a message");
    }
    dp_dataset_free(&d);
    fz_check_no_open_hdf5("dp_dataset_load");

    dp_err_clear();
    if (fz_note("dp_dataset_load_inputs", dp_dataset_load_inputs(path, &d, &kind)) == DP_OK) {
        FZ_ASSERT(kind == DP_INPUT_SPLITS || kind == DP_INPUT_ROOT, "kind %d", (int)kind);
        fz_check_dataset(d, false);
    } else {
        FZ_ASSERT(d == NULL, "dp_dataset_load_inputs failed but returned a dataset");
        FZ_ASSERT(dp_errmsg()[0] != '\0', "dp_dataset_load_inputs failed without a message");
    }
    dp_dataset_free(&d);
    fz_check_no_open_hdf5("dp_dataset_load_inputs");
    return 0;
}
