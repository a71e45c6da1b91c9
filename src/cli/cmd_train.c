/* cmd_train.c: `dptrain train`: options, MPI start-up, loading, the run, the outputs. */
#define _GNU_SOURCE
#include "cli.h"
#include "core/proc.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/io.h"
#include "dptrain/run.h"
#include "dptrain/train.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stddef.h>
#include <ini.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef DPTRAIN_VERSION
#define DPTRAIN_VERSION "dev"
#endif

/* Optimizer hyperparameter flags: one per dp_optim_fields entry (--lr, --beta1, ...). Values
 * are applied over torch's defaults for the chosen optimizer once all options are read, so
 * their order does not matter; a flag that does not apply is refused. */
#define OPT_BIT(k) (1u << (k))
#define N_HP 16 /* room for dp_optim_fields */
static const dp_optim_field *hp_flags(int *n)
{
    const dp_optim_field *f = dp_optim_fields(n);
    *n = *n < N_HP ? *n : N_HP;
    return f;
}

/* --progress: the in-epoch progress line of rank 0 (a display option: not part of the
 * run's configuration, so it may change on resume). */
enum { PROGRESS_AUTO = 0, PROGRESS_ON, PROGRESS_OFF };
static const char *const progress_names[] = {"auto", "on", "off"};

typedef struct {
    dp_run_cfg run; /* the defaults, or a saved config.json: the options below edit it */
    bool from_json; /* run came from a config.json (its model stands unless --layers) */
    const char *data, *out, *layers, *resume, *init_from; /* given, or NULL */
    dp_optim_kind optim;
    bool optim_given;
    const char *hp_val[N_HP]; /* hyperparameter values given, or NULL */
    bool nesterov, centered, amsgrad;
    const char *milestones;
    const char *dropout, *batchnorm; /* per hidden layer: one value for all, or a list */
    dp_act hidden_act;
    bool act_given;
    const char *init, *bias_init; /* initializer specs: one for all layers, or a list */
    bool quiet;
    int progress; /* PROGRESS_AUTO, PROGRESS_ON or PROGRESS_OFF */
    bool help;
} train_opts;

/* The options' starting point: the run's defaults (dp_run_defaults: one place). */
static void defaults(train_opts *o)
{
    memset(o, 0, sizeof *o);
    dp_run_defaults(&o->run);
    o->optim = o->run.train.opt.kind;
    o->hidden_act = DP_ACT_RELU;
    o->progress = PROGRESS_AUTO;
}

/* The defaults of every optimizer, one line each, from dp_optim_defaults. */
static void help_optim_defaults(FILE *f)
{
    fprintf(f, "\noptimizer defaults (torch.optim):\n");
    for (int k = 0; k < DP_OPT_COUNT; k++) {
        dp_optim_cfg c;
        dp_optim_defaults((dp_optim_kind)k, &c);
        fprintf(f, "  %-9s", dp_optim_name((dp_optim_kind)k));
        int n_hp = 0;
        const dp_optim_field *hp = hp_flags(&n_hp);
        for (int i = 0; i < n_hp; i++) {
            if (hp[i].optims & OPT_BIT(k)) {
                fprintf(f, " %s %g", hp[i].flag, *(const float *)((const char *)&c + hp[i].offset));
            }
        }
        fprintf(f, "\n");
    }
}

static void help(FILE *f)
{
    train_opts d;
    defaults(&d);
    fprintf(f,
"usage: mpirun -np N dptrain train --data FILE.h5 --layers IN,H1,...,OUT [options]\n"
"\n"
"Trains a multilayer perceptron. Every rank takes a contiguous slice of each global batch;\n"
"gradients are summed over the ranks and every rank takes the same step, so the result\n"
"does not depend on N (up to float summation order).\n"
"\n"
"data and model:\n"
"  --data FILE         HDF5 dataset (layout: datasets/README.md)               (required)\n"
"  --layers SPEC       layer sizes, inputs first: 784,256,128,10               (required)\n"
"                      a hidden size may carry per-layer settings that override\n"
"                      the options below: 256:tanh:dropout=0.2:bn\n"
"  --activation NAME   hidden-layer activation: relu, leaky-relu, elu, gelu,\n"
"                      tanh, sigmoid, identity                                  [%s]\n"
"  --loss NAME         cross-entropy = sparse-categorical-cross-entropy\n"
"                      (softmax, integer labels); categorical-cross-entropy\n"
"                      (softmax, one-hot or probability rows);\n"
"                      binary-cross-entropy (on logits; targets in [0,1], or 0/1\n"
"                      labels with 1 output); binary-cross-entropy-probs (adds a\n"
"                      sigmoid output layer); mse, rmse, mae                    [%s]\n"
"  --dropout P|LIST    inverted dropout after each hidden layer: one probability\n"
"                      for all, or one per hidden layer (0.5,0.2); masks depend\n"
"                      on (seed, step, layer, row), never on N               [0]\n"
"  --batchnorm on|off|LIST  batch normalization before each hidden activation\n"
"                      (statistics summed over all ranks); LIST: 1,0,..      [off]\n"
"  --bn-momentum X --bn-eps X  running-statistics momentum and epsilon [0.1, 1e-5]\n"
"  --init SPEC|LIST    weight initializer, one for all layers or one per layer:\n"
"                      he-normal, he-uniform, xavier-normal, xavier-uniform,\n"
"                      zero, constant:V, uniform:A:B ([0,1) if no A:B),\n"
"                      normal:MEAN:STD                                          [%s]\n"
"  --bias-init SPEC|LIST  bias initializer, same forms                         [zero]\n"
"optimization (hyperparameter names and defaults are torch.optim's; see below):\n"
"  --optimizer NAME    sgd, adagrad, rmsprop, adadelta, adam, adamw, nadam, adamax [sgd]\n"
"  --lr X --weight-decay X --momentum X --dampening X --alpha X --rho X\n"
"  --lr-decay X --initial-accumulator-value X --beta1 X --beta2 X --eps X\n"
"  --momentum-decay X  each applies only to the optimizers that have it\n"
"  --nesterov          Nesterov momentum (sgd)\n"
"  --centered          centered RMSprop (rmsprop)\n"
"  --amsgrad           AMSGrad variant (adam, adamw)\n"
"  --lr-schedule NAME  constant; cosine (per step, to 0 at the end); step\n"
"                      (x gamma every --step-size epochs); multistep (x gamma at\n"
"                      each of --milestones E1,E2,..); exponential (x gamma per\n"
"                      epoch)                                                   [%s]\n"
"  --gamma X           decay factor of step, multistep, exponential            [%g]\n"
"  --step-size N       epochs between decays (step)                            [%d]\n"
"  --milestones LIST   epochs at which to decay (multistep), e.g. 30,60\n"
"  --warmup-steps N    linear warmup over the first N steps, from\n"
"                      lr x --warmup-start-factor (Goyal et al.); 0 = off       [0]\n"
"  --warmup-start-factor X                                                      [%.4g]\n"
"  --lr-scaling RULE   none, or linear[:BASE] (Goyal et al.): lr x global batch x\n"
"                      accumulate / BASE (256 if not given)                    [none]\n"
"  --plateau-factor F  reduce-on-plateau: lr x F after --plateau-patience epochs\n"
"                      without improvement of the validation loss (training\n"
"                      loss without --val-fraction); 0 = off                    [0]\n"
"  --plateau-patience N                                                         [%d]\n"
"  --batch N|full      global batch size, split over the ranks                  [%zu]\n"
"  --drop-last         drop a last partial batch (default: train on it)\n"
"  --epochs N          passes over the training set                             [%d]\n"
"  --seed N            seed of the initialization and of the per-epoch shuffle [%llu]\n"
"  --accumulate K      micro-batches per optimizer step (gradient accumulation) [%d]\n"
"  --clip-norm X       scale gradients down to this global L2 norm; 0 = off    [%g]\n"
"validation:\n"
"  --val-fraction F    hold out this fraction of /train for validation          [%g]\n"
"                      (seeded: the same rows for the same --seed, any N)\n"
"  --patience P        early stopping: stop after P epochs without a validation\n"
"                      loss below best - min-delta; keep the best weights; 0=off [%d]\n"
"  --min-delta X       improvement that resets the patience                     [%g]\n"
"config file:\n"
"  --config FILE       INI file of these options (keys are option names without\n"
"                      the dashes, in sections [data] [model] [optimizer]\n"
"                      [training] [output]), or a run's saved config.json\n"
"                      (--config RUN/config.json reruns that run exactly; add\n"
"                      --out NEW); command-line options override it.\n"
"                      Examples: launch/configs/*.ini\n"
"checkpoints and resume:\n"
"  --checkpoint-every N  also write a checkpoint every N optimizer steps; 0=off [0]\n"
"  --checkpoint-epochs N write a checkpoint every N epochs; 0 = off            [%d]\n"
"                      (a checkpoint is also written when the run ends and when\n"
"                      it is stopped by a signal); files: DIR/checkpoints/ckpt-STEP.h5\n"
"  --keep-last K       keep the K newest checkpoints                           [%d]\n"
"  --resume auto|FILE  continue a run: auto = the newest valid checkpoint in\n"
"                      DIR/checkpoints (a new run if there is none); give the\n"
"                      run's options again: a different model, dataset or option\n"
"                      is refused. Any number of ranks; bit-identical at the same N\n"
"  --init-from FILE    start a new run from the weights (and batch-norm statistics)\n"
"                      of a model file or checkpoint with the same layers: fine-\n"
"                      tuning, warm starts, or N more epochs of a finished run\n"
"                      (--init-from RUN/model.h5 --epochs N --out NEW)\n"
"  --overwrite         a new run into a --out that holds a run moves that run\n"
"                      aside to DIR.old-<time> (nothing is deleted) instead of\n"
"                      being refused\n"
"  SIGTERM, SIGUSR1 or SIGINT: every rank stops after the current step, a\n"
"                      checkpoint is written and dptrain exits with status 3\n"
"output and runtime:\n"
"  --out DIR           writes DIR/model.h5, DIR/metrics.jsonl, DIR/config.json [%s]\n"
"  --eval-batch N      rows per forward pass when evaluating, per rank          [%d]\n"
"  --threads N         OpenBLAS threads per rank; 0 = cores / ranks on the node [auto]\n"
"  --allreduce MODE    blocking: one allreduce of all gradients after the\n"
"                      backward pass; overlap: buckets of layers (last first),\n"
"                      each summed with a non-blocking allreduce while the\n"
"                      layers below compute (same result up to float summation\n"
"                      order; dptrain bench measures which is faster)    [blocking]\n"
"  --bucket-kb N       overlap: gradient KiB per bucket (whole layers)        [%d]\n"
"  --flush-subnormals  treat subnormal floats (below 1.2e-38) as zero (CPU FTZ/DAZ):\n"
"                      avoids the CPU's slow path for them, which long runs meet\n"
"                      in the optimizer state; changes results below that scale.\n"
"                      Recorded in the config (a resume must use the same) [off]\n"
"  --quiet             print only errors and the final line\n"
"  --progress WHEN     a progress line inside each epoch on rank 0, redrawn in place\n"
"                      (step in the epoch and the run, percent, samples/s, running\n"
"                      loss, time left for the epoch and the run; at most 5 times a\n"
"                      second); the epoch line replaces it. auto: when the output\n"
"                      is a terminal (under mpirun: mpirun's output) and not\n"
"                      --quiet; on: always, even into a file or a pipe; off: never.\n"
"                      Not part of the run's config: may differ on --resume  [%s]\n"
"  --step-timeout S    the stuck-rank watchdog: a rank that waits longer than S\n"
"                      seconds in a collective for another (stopped, swapping, a\n"
"                      hung file system or network) prints which ranks it waits\n"
"                      for and ends the job with exit 5; the newest checkpoint\n"
"                      stays intact. auto: the larger of 60 s and 100 x the median\n"
"                      step; 0: no watchdog. May differ on --resume       [auto]\n"
"  -h, --help          this text\n"
"\n"
"exit status: 0 done, 1 run-time error (data, I/O, MPI), 2 usage error,\n"
"             3 stopped by a signal (checkpoint written; continue with --resume auto),\n"
"             4 training diverged (loss NaN, infinite, or over 100 x its first step's),\n"
"             5 a rank stopped making progress (the watchdog; continue with\n"
"               --resume auto once the cause is gone).\n",
            dp_act_name(d.hidden_act), dp_loss_name(d.run.train.loss), "he-normal",
            dp_sched_name(d.run.train.sched.kind), d.run.train.sched.gamma, d.run.train.sched.step_size,
            d.run.train.sched.warmup_start_factor, d.run.train.plateau_patience, d.run.train.batch, d.run.train.epochs, (unsigned long long)d.run.train.seed,
            d.run.train.accumulate, d.run.train.clip_norm, d.run.train.val_fraction, d.run.train.patience, d.run.train.min_delta,
            d.run.train.checkpoint_epochs, d.run.keep_last, d.run.out, d.run.train.eval_batch, DP_BUCKET_KB_DEFAULT,
            progress_names[d.progress]);
}

enum {
    OPT_DATA = 256, OPT_LAYERS, OPT_ACT, OPT_LOSS, OPT_INIT, OPT_OPTIM,
    OPT_NESTEROV, OPT_SCHED, OPT_BATCH, OPT_DROP_LAST, OPT_EPOCHS,
    OPT_SEED, OPT_OUT, OPT_EVAL_BATCH, OPT_THREADS, OPT_QUIET, OPT_ACCUM, OPT_CLIP, OPT_VALF,
    OPT_PATIENCE, OPT_MIN_DELTA, OPT_CONFIG, OPT_CENTERED, OPT_AMSGRAD, OPT_GAMMA, OPT_STEP_SIZE,
    OPT_MILESTONES, OPT_WARMUP, OPT_WARMUP_FACTOR, OPT_PLATEAU_FACTOR, OPT_PLATEAU_PATIENCE,
    OPT_LR_SCALING, OPT_BIAS_INIT, OPT_DROPOUT, OPT_BATCHNORM, OPT_BN_MOMENTUM, OPT_BN_EPS,
    OPT_RESUME, OPT_CKPT_EVERY, OPT_CKPT_EPOCHS, OPT_KEEP_LAST, OPT_ALLREDUCE, OPT_BUCKET_KB,
    OPT_FLUSH_SUBNORMALS, OPT_PROGRESS, OPT_STEP_TIMEOUT, OPT_INIT_FROM, OPT_OVERWRITE,
    OPT_HP = 512, /* + index into hp_flags */
};

static int parse_enum(const char *opt, const char *s, int (*parse)(const char *), int *out)
{
    int v = parse(s);
    if (v < 0) {
        return dp_err(DP_EINVAL, "%s: unknown value '%s' (see dptrain train --help)", opt, s);
    }
    *out = v;
    return DP_OK;
}

/* Applies the optimizer's torch defaults (unless a saved config.json chose the optimizer and
 * no --optimizer changes it), then the hyperparameters given (refusing those that do not
 * apply), then the switches; parses --milestones. */
static int finish_optim(train_opts *o)
{
    int rc = DP_OK, n_hp = 0;
    const dp_optim_field *hp = hp_flags(&n_hp);
    dp_optim_cfg *c = &o->run.train.opt;
    if (o->optim_given || !o->from_json) {
        dp_optim_defaults(o->optim, c);
    }
    const char *name = dp_optim_name(c->kind);
    for (int i = 0; i < n_hp; i++) {
        char opt[64];
        if (!o->hp_val[i]) {
            continue;
        }
        snprintf(opt, sizeof opt, "--%s", hp[i].flag);
        if (!(hp[i].optims & OPT_BIT(c->kind))) {
            DP_FAIL(DP_EINVAL, "%s does not apply to --optimizer %s", opt, name);
        }
        DP_TRY(dp_cli_float(opt, o->hp_val[i], -1e30, 1e30, (float *)((char *)c + hp[i].offset)));
    }
    c->nesterov = c->nesterov || o->nesterov;
    c->centered = c->centered || o->centered;
    c->amsgrad = c->amsgrad || o->amsgrad;
    if (o->milestones) {
        dp_sched_cfg *sc = &o->run.train.sched;
        const char *p = o->milestones;
        sc->n_milestones = 0;
        while (*p) {
            char *end = NULL;
            long v = strtol(p, &end, 10);
            if (end == p || (*end && *end != ',') || v < 1 || v > 1000000 ||
                sc->n_milestones == DP_SCHED_MAX_MILESTONES) {
                DP_FAIL(DP_EINVAL, "--milestones '%s': give up to %d epochs separated by commas, "
                                   "e.g. 30,60", o->milestones, DP_SCHED_MAX_MILESTONES);
            }
            sc->milestones[sc->n_milestones++] = (int)v;
            p = *end ? end + 1 : end;
        }
    }
done:
    return rc;
}

static int parse_args(int argc, char **argv, train_opts *o, bool check_required)
{
    static const struct option base_opts[] = {
        {"data", required_argument, 0, OPT_DATA},
        {"layers", required_argument, 0, OPT_LAYERS},
        {"activation", required_argument, 0, OPT_ACT},
        {"loss", required_argument, 0, OPT_LOSS},
        {"init", required_argument, 0, OPT_INIT},
        {"optimizer", required_argument, 0, OPT_OPTIM},
        {"nesterov", no_argument, 0, OPT_NESTEROV},
        {"lr-schedule", required_argument, 0, OPT_SCHED},
        {"batch", required_argument, 0, OPT_BATCH},
        {"drop-last", no_argument, 0, OPT_DROP_LAST},
        {"epochs", required_argument, 0, OPT_EPOCHS},
        {"seed", required_argument, 0, OPT_SEED},
        {"out", required_argument, 0, OPT_OUT},
        {"eval-batch", required_argument, 0, OPT_EVAL_BATCH},
        {"threads", required_argument, 0, OPT_THREADS},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"progress", required_argument, 0, OPT_PROGRESS},
        {"step-timeout", required_argument, 0, OPT_STEP_TIMEOUT},
        {"accumulate", required_argument, 0, OPT_ACCUM},
        {"clip-norm", required_argument, 0, OPT_CLIP},
        {"val-fraction", required_argument, 0, OPT_VALF},
        {"patience", required_argument, 0, OPT_PATIENCE},
        {"min-delta", required_argument, 0, OPT_MIN_DELTA},
        {"config", required_argument, 0, OPT_CONFIG},
        {"centered", no_argument, 0, OPT_CENTERED},
        {"amsgrad", no_argument, 0, OPT_AMSGRAD},
        {"gamma", required_argument, 0, OPT_GAMMA},
        {"step-size", required_argument, 0, OPT_STEP_SIZE},
        {"milestones", required_argument, 0, OPT_MILESTONES},
        {"warmup-steps", required_argument, 0, OPT_WARMUP},
        {"warmup-start-factor", required_argument, 0, OPT_WARMUP_FACTOR},
        {"plateau-factor", required_argument, 0, OPT_PLATEAU_FACTOR},
        {"plateau-patience", required_argument, 0, OPT_PLATEAU_PATIENCE},
        {"lr-scaling", required_argument, 0, OPT_LR_SCALING},
        {"dropout", required_argument, 0, OPT_DROPOUT},
        {"bias-init", required_argument, 0, OPT_BIAS_INIT},
        {"batchnorm", required_argument, 0, OPT_BATCHNORM},
        {"bn-momentum", required_argument, 0, OPT_BN_MOMENTUM},
        {"bn-eps", required_argument, 0, OPT_BN_EPS},
        {"resume", required_argument, 0, OPT_RESUME},
        {"init-from", required_argument, 0, OPT_INIT_FROM},
        {"overwrite", no_argument, 0, OPT_OVERWRITE},
        {"checkpoint-every", required_argument, 0, OPT_CKPT_EVERY},
        {"checkpoint-epochs", required_argument, 0, OPT_CKPT_EPOCHS},
        {"keep-last", required_argument, 0, OPT_KEEP_LAST},
        {"allreduce", required_argument, 0, OPT_ALLREDUCE},
        {"bucket-kb", required_argument, 0, OPT_BUCKET_KB},
        {"flush-subnormals", no_argument, 0, OPT_FLUSH_SUBNORMALS},
        {"help", no_argument, 0, 'h'},
    };
    const size_t n_base = sizeof base_opts / sizeof base_opts[0];
    struct option longopts[sizeof base_opts / sizeof base_opts[0] + N_HP + 1];
    int n_hp = 0;
    const dp_optim_field *hp = hp_flags(&n_hp);
    memcpy(longopts, base_opts, sizeof base_opts);
    for (int i = 0; i < n_hp; i++) {
        longopts[n_base + i] = (struct option){hp[i].flag, required_argument, 0,
                                               OPT_HP + (int)i};
    }
    longopts[n_base + n_hp] = (struct option){0, 0, 0, 0};
    int rc = DP_OK, c, v = 0;
    long l = 0;
    opterr = 0; /* we print our own message, once, from rank 0 */
    optind = 0; /* glibc: 0 also resets getopt's state from an earlier parse (1 does not) */
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA: o->data = optarg; break;
        case OPT_LAYERS: o->layers = optarg; break;
        case OPT_ACT:
            DP_TRY(parse_enum("--activation", optarg, dp_act_parse, &v));
            if (v == DP_ACT_SOFTMAX) {
                DP_FAIL(DP_EINVAL, "--activation softmax: softmax is only an output (it is "
                                   "part of --loss cross-entropy)");
            }
            if (!dp_act_trainable((dp_act)v)) {
                DP_FAIL(DP_EINVAL, "--activation %s: its gradient is zero almost everywhere, so "
                                   "the network cannot be trained", optarg);
            }
            o->hidden_act = (dp_act)v;
            o->act_given = true;
            break;
        case OPT_LOSS: DP_TRY(parse_enum("--loss", optarg, dp_loss_parse, &v)); o->run.train.loss = v; break;
        case OPT_INIT: o->init = optarg; break;
        case OPT_BIAS_INIT: o->bias_init = optarg; break;
        case OPT_OPTIM:
            DP_TRY(parse_enum("--optimizer", optarg, dp_optim_parse, &v));
            o->optim = v;
            o->optim_given = true;
            break;
        case OPT_NESTEROV: o->nesterov = true; break;
        case OPT_CENTERED: o->centered = true; break;
        case OPT_AMSGRAD: o->amsgrad = true; break;
        case OPT_SCHED: DP_TRY(parse_enum("--lr-schedule", optarg, dp_sched_parse, &v)); o->run.train.sched.kind = v; break;
        case OPT_GAMMA: DP_TRY(dp_cli_float("--gamma", optarg, 0.0, 1e6, &o->run.train.sched.gamma)); break;
        case OPT_STEP_SIZE: DP_TRY(dp_cli_int("--step-size", optarg, 1, 1000000, &l)); o->run.train.sched.step_size = (int)l; break;
        case OPT_MILESTONES: o->milestones = optarg; break;
        case OPT_DROPOUT: o->dropout = optarg; break;
        case OPT_BATCHNORM: o->batchnorm = optarg; break;
        case OPT_BN_MOMENTUM: DP_TRY(dp_cli_float("--bn-momentum", optarg, 0.0, 1.0, &o->run.model.bn_momentum)); break;
        case OPT_BN_EPS: DP_TRY(dp_cli_float("--bn-eps", optarg, 1e-30, 1.0, &o->run.model.bn_eps)); break;
        case OPT_PLATEAU_FACTOR: DP_TRY(dp_cli_float("--plateau-factor", optarg, 0.0, 0.999999, &o->run.train.plateau_factor)); break;
        case OPT_PLATEAU_PATIENCE: DP_TRY(dp_cli_int("--plateau-patience", optarg, 0, 1000000, &l)); o->run.train.plateau_patience = (int)l; break;
        case OPT_LR_SCALING:
            if (strcmp(optarg, "none") == 0) {
                o->run.lr_scaling = 0;
            } else if (strncmp(optarg, "linear", 6) == 0 &&
                       (optarg[6] == '\0' || optarg[6] == ':')) {
                o->run.lr_scaling = 256;
                if (optarg[6] == ':') {
                    DP_TRY(dp_cli_int("--lr-scaling linear:BASE", optarg + 7, 1, 1L << 30, &l));
                    o->run.lr_scaling = (int)l;
                }
            } else {
                DP_FAIL(DP_EINVAL, "--lr-scaling: unknown value '%s' (none, linear or "
                                   "linear:BASE_BATCH)", optarg);
            }
            break;
        case OPT_WARMUP: DP_TRY(dp_cli_int("--warmup-steps", optarg, 0, 1L << 40, &l)); o->run.train.sched.warmup_steps = l; break;
        case OPT_WARMUP_FACTOR: DP_TRY(dp_cli_float("--warmup-start-factor", optarg, 0.0, 1.0, &o->run.train.sched.warmup_start_factor)); break;
        case OPT_BATCH:
            if (strcmp(optarg, "full") == 0) {
                o->run.train.batch = 0;
            } else {
                DP_TRY(dp_cli_int("--batch", optarg, 1, 1L << 30, &l));
                o->run.train.batch = (size_t)l;
            }
            break;
        case OPT_DROP_LAST: o->run.train.drop_last = true; break;
        case OPT_EPOCHS: DP_TRY(dp_cli_int("--epochs", optarg, 0, DP_MAX_EPOCHS, &l)); o->run.train.epochs = (int)l; break;
        case OPT_SEED: DP_TRY(dp_cli_u64("--seed", optarg, &o->run.train.seed)); break;
        case OPT_OUT: o->out = optarg; break;
        case OPT_EVAL_BATCH: DP_TRY(dp_cli_int("--eval-batch", optarg, 1, 1L << 24, &l)); o->run.train.eval_batch = (int)l; break;
        case OPT_THREADS: DP_TRY(dp_cli_int("--threads", optarg, 0, 4096, &l)); o->run.threads = (int)l; break;
        case OPT_QUIET: o->quiet = true; break;
        case OPT_PROGRESS:
            for (v = 0; v < 3 && strcmp(optarg, progress_names[v]) != 0; v++) {
            }
            if (v == 3) {
                DP_FAIL(DP_EINVAL, "--progress: unknown value '%s' (auto, on or off)", optarg);
            }
            o->progress = v;
            break;
        case OPT_FLUSH_SUBNORMALS: o->run.flush_subnormals = true; break;
        case OPT_STEP_TIMEOUT:
            if (strcmp(optarg, "auto") == 0) {
                o->run.step_timeout = -1.0f;
            } else if (dp_cli_float("--step-timeout", optarg, 0.0, 1e9, &o->run.step_timeout) !=
                       DP_OK) {
                DP_FAIL(DP_EINVAL, "--step-timeout: '%s' is not auto or a number of seconds "
                                   "(0 for no watchdog)", optarg);
            }
            break;
        case OPT_RESUME: o->resume = optarg; break;
        case OPT_INIT_FROM: o->init_from = optarg; break;
        case OPT_OVERWRITE: o->run.overwrite = true; break;
        case OPT_CKPT_EVERY: DP_TRY(dp_cli_int("--checkpoint-every", optarg, 0, 1L << 40, &l)); o->run.train.checkpoint_every = l; break;
        case OPT_CKPT_EPOCHS: DP_TRY(dp_cli_int("--checkpoint-epochs", optarg, 0, 1000000, &l)); o->run.train.checkpoint_epochs = (int)l; break;
        case OPT_KEEP_LAST: DP_TRY(dp_cli_int("--keep-last", optarg, 1, 1000000, &l)); o->run.keep_last = (int)l; break;
        case OPT_CONFIG: break; /* read before the options, see read_config */
        case OPT_ALLREDUCE:
            if (strcmp(optarg, "blocking") == 0) {
                o->run.train.reduce = DP_REDUCE_BLOCKING;
            } else if (strcmp(optarg, "overlap") == 0) {
                o->run.train.reduce = DP_REDUCE_OVERLAP;
            } else {
                DP_FAIL(DP_EINVAL, "--allreduce: unknown value '%s' (blocking or overlap)", optarg);
            }
            break;
        case OPT_BUCKET_KB:
            DP_TRY(dp_cli_int("--bucket-kb", optarg, 0, 1L << 30, &l));
            o->run.train.bucket_bytes = (size_t)l * 1024;
            break;
        case OPT_ACCUM: DP_TRY(dp_cli_int("--accumulate", optarg, 1, 1 << 20, &l)); o->run.train.accumulate = (int)l; break;
        case OPT_CLIP: DP_TRY(dp_cli_float("--clip-norm", optarg, 0.0, 1e30, &o->run.train.clip_norm)); break;
        case OPT_VALF: DP_TRY(dp_cli_float("--val-fraction", optarg, 0.0, 0.99, &o->run.train.val_fraction)); break;
        case OPT_PATIENCE: DP_TRY(dp_cli_int("--patience", optarg, 0, 1 << 20, &l)); o->run.train.patience = (int)l; break;
        case OPT_MIN_DELTA: DP_TRY(dp_cli_float("--min-delta", optarg, 0.0, 1e30, &o->run.train.min_delta)); break;
        case 'h': o->help = true; break;
        case ':': DP_FAIL(DP_EINVAL, "option '%s' needs a value", argv[optind - 1]);
        default:
            if (c >= OPT_HP && c < OPT_HP + n_hp) {
                o->hp_val[c - OPT_HP] = optarg;
                break;
            }
            DP_FAIL(DP_EINVAL, "unknown option '%s' (see dptrain train --help)", argv[optind - 1]);
        }
    }
    DP_TRY(finish_optim(o));
    if (optind < argc) {
        DP_FAIL(DP_EINVAL, "unexpected argument '%s' (see dptrain train --help)", argv[optind]);
    }
    if (o->help || !check_required) {
        goto done;
    }
    if (!o->data && !o->run.data[0]) {
        DP_FAIL(DP_EINVAL, "--data FILE is required (see dptrain train --help)");
    }
    if (!o->layers && o->run.model.n_layers == 0) {
        DP_FAIL(DP_EINVAL, "--layers is required, e.g. --layers 784,256,128,10");
    }
done:
    return rc;
}

/* --config FILE: an INI file whose keys are train options. Each key becomes "--key=value"
 * ahead of the command line (so the command line overrides it), after the value has been
 * checked on its own so that a bad one is reported with its line. */
#define DP_MAX_CONFIG_ARGS 128

typedef struct {
    char *args[DP_MAX_CONFIG_ARGS];
    int n;
    char msg[512];
} config_ctx;

static int is_flag_option(const char *key)
{
    static const char *const flags[] = {"nesterov", "centered", "amsgrad", "drop-last", "quiet",
                                        "flush-subnormals", "overwrite"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (strcmp(flags[i], key) == 0) {
            return 1;
        }
    }
    return 0;
}

static int config_handler(void *user, const char *section, const char *name, const char *value)
{
    config_ctx *cx = user;
    static const char *const sections[] = {"", "data", "model", "optimizer", "training", "output"};
    bool known = false;
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        known = known || strcmp(sections[i], section) == 0;
    }
    if (!known) {
        snprintf(cx->msg, sizeof cx->msg, "unknown section [%s] (sections: data, model, "
                 "optimizer, training, output)", section);
        return 0;
    }
    char key[64];
    if (snprintf(key, sizeof key, "%s", name) >= (int)sizeof key) {
        snprintf(cx->msg, sizeof cx->msg, "unknown key '%.40s...'", name);
        return 0;
    }
    for (char *p = key; *p; p++) {
        *p = (*p == '_') ? '-' : *p;
    }
    if (strcmp(key, "config") == 0 || strcmp(key, "help") == 0) {
        snprintf(cx->msg, sizeof cx->msg, "key '%s' is not allowed in a config file", name);
        return 0;
    }
    char arg[4200];
    if (is_flag_option(key)) {
        if (strcmp(value, "true") == 0) {
            snprintf(arg, sizeof arg, "--%s", key);
        } else if (strcmp(value, "false") == 0) {
            return 1;
        } else {
            snprintf(cx->msg, sizeof cx->msg, "%s = '%s': must be true or false", name, value);
            return 0;
        }
    } else {
        snprintf(arg, sizeof arg, "--%s=%s", key, value);
    }
    /* Check the key and value alone, on scratch options. */
    train_opts scratch;
    defaults(&scratch);
    char *one[] = {"train", arg, NULL};
    if (parse_args(2, one, &scratch, false) != DP_OK) {
        const char *why = dp_errmsg();
        if (strstr(why, "unknown option")) {
            snprintf(cx->msg, sizeof cx->msg, "unknown key '%s' in [%s] (keys are the options "
                     "of dptrain train --help)", name, section);
        } else {
            snprintf(cx->msg, sizeof cx->msg, "%s", why);
        }
        return 0;
    }
    if (cx->n == DP_MAX_CONFIG_ARGS || !(cx->args[cx->n] = strdup(arg))) {
        snprintf(cx->msg, sizeof cx->msg, "too many keys");
        return 0;
    }
    cx->n++;
    return 1;
}

/* A saved config.json (a file whose first non-blank character is '{'): read into o->run,
 * the base that the command line then edits. */
static int read_json_config(FILE *f, const char *file, train_opts *o)
{
    int rc = DP_OK;
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char buf[65536];
    size_t n;
    while (mem && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        fwrite(buf, 1, n, mem);
    }
    if (!mem || ferror(f) || fclose(mem) != 0) {
        DP_FAIL(DP_EIO, "--config %s: cannot read (%s)", file, strerror(errno));
    }
    DP_TRY(dp_run_cfg_from_json(text, file, &o->run));
    o->from_json = true;
    o->optim = o->run.train.opt.kind;
    if (o->run.model.n_layers > 1) {
        o->hidden_act = o->run.model.act[0];
    }
done:
    free(text);
    return rc;
}

/* Finds --config in argv; if present, reads it: a config.json into o->run; an INI file into
 * a new argv (in *out, *out_argc): argv[0], the file's options, then argv[1..] without
 * --config. */
static int read_config(int argc, char **argv, train_opts *o, config_ctx *cx, char ***out,
                       int *out_argc)
{
    const char *file = NULL;
    *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            file = argv[i + 1];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            file = argv[i] + 9;
        }
    }
    if (!file) {
        return DP_OK;
    }
    FILE *f = fopen(file, "r");
    if (!f) {
        return dp_err(DP_EINVAL, "--config %s: cannot open (%s)", file, strerror(errno));
    }
    int ch;
    while ((ch = getc(f)) == ' ' || ch == '\n' || ch == '\t' || ch == '\r') {
    }
    if (ch == '{') {
        ungetc(ch, f);
        int rc = read_json_config(f, file, o);
        fclose(f);
        if (rc != DP_OK) {
            return rc;
        }
        cx->n = 0; /* the command line alone, without --config */
    } else {
        rewind(f);
    }
    int line = ch == '{' ? 0 : ini_parse_file(f, config_handler, cx);
    if (ch != '{') {
        fclose(f);
    }
    if (line != 0) {
        return dp_err(DP_EINVAL, "%s:%d: %s", file, line,
                      cx->msg[0] ? cx->msg : "not a valid INI line (expected key = value)");
    }
    char **v = calloc((size_t)(cx->n + argc + 1), sizeof *v);
    if (!v) {
        return dp_err(DP_ENOMEM, "out of memory reading %s", file);
    }
    int k = 0;
    v[k++] = argv[0];
    for (int i = 0; i < cx->n; i++) {
        v[k++] = cx->args[i];
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            i++;
        } else if (strncmp(argv[i], "--config=", 9) != 0) {
            v[k++] = argv[i];
        }
    }
    *out = v;
    *out_argc = k;
    return DP_OK;
}

static void config_free(config_ctx *cx, char **argv)
{
    for (int i = 0; i < cx->n; i++) {
        free(cx->args[i]);
    }
    free(argv);
}

/* Per-hidden-layer values: "X" for every hidden layer or "X1,X2,..." one each. */
static int parse_per_layer(const char *opt, const char *spec, int n_hidden, double lo, double hi,
                           double *out)
{
    int n = 0;
    const char *p = spec;
    while (*p) {
        char *end = NULL;
        double v = strtod(p, &end);
        if (end == p || (*end && *end != ',') || !(v >= lo && v <= hi) || n == DP_MAX_LAYERS) {
            return dp_err(DP_EINVAL, "%s '%s': give one value in [%g, %g], or one per hidden "
                                     "layer separated by commas", opt, spec, lo, hi);
        }
        out[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n == 1) {
        for (int i = 1; i < n_hidden; i++) {
            out[i] = out[0];
        }
    } else if (n != n_hidden) {
        return dp_err(DP_EINVAL, "%s '%s': %d values for %d hidden layers", opt, spec, n,
                      n_hidden);
    }
    return DP_OK;
}

/* "SPEC" for every layer or "SPEC1,SPEC2,..." one per layer. */
static int parse_inits(const char *opt, const char *list, int n_layers, dp_init_spec *out)
{
    char buf[1024], *save = NULL;
    int n = 0;
    if (snprintf(buf, sizeof buf, "%s", list) >= (int)sizeof buf) {
        return dp_err(DP_EINVAL, "%s: too long", opt);
    }
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == n_layers) {
            return dp_err(DP_EINVAL, "%s '%s': more initializers than the %d layers", opt, list,
                          n_layers);
        }
        if (dp_init_spec_parse(tok, &out[n++]) != DP_OK) {
            char why[512]; /* dp_errmsg() is the buffer dp_err writes into */
            snprintf(why, sizeof why, "%s", dp_errmsg());
            return dp_err(DP_EINVAL, "%s: %s", opt, why);
        }
    }
    if (n == 1) {
        for (int i = 1; i < n_layers; i++) {
            out[i] = out[0];
        }
    } else if (n != n_layers) {
        return dp_err(DP_EINVAL, "%s '%s': %d initializers for %d layers (give one, or one per "
                                 "layer)", opt, list, n, n_layers);
    }
    return DP_OK;
}

/* --dropout and --batchnorm into the model configuration (hidden layers only). */
static int parse_regularizers(const train_opts *o, dp_model_cfg *mc)
{
    int rc = DP_OK, hidden = mc->n_layers - 1;
    double v[DP_MAX_LAYERS] = {0};
    if (o->dropout) {
        if (hidden == 0) {
            return dp_err(DP_EINVAL, "--dropout: the model has no hidden layer");
        }
        DP_TRY(parse_per_layer("--dropout", o->dropout, hidden, 0.0, 0.99, v));
        for (int i = 0; i < hidden; i++) {
            mc->dropout[i] = (float)v[i];
        }
    }
    if (o->batchnorm && strcmp(o->batchnorm, "off") == 0) {
        memset(mc->batchnorm, 0, sizeof mc->batchnorm);
    } else if (o->batchnorm) {
        if (hidden == 0) {
            return dp_err(DP_EINVAL, "--batchnorm: the model has no hidden layer");
        }
        if (strcmp(o->batchnorm, "on") == 0) {
            v[0] = 1.0;
            for (int i = 1; i < hidden; i++) {
                v[i] = 1.0;
            }
        } else {
            DP_TRY(parse_per_layer("--batchnorm", o->batchnorm, hidden, 0.0, 1.0, v));
        }
        for (int i = 0; i < hidden; i++) {
            if (v[i] != 0.0 && v[i] != 1.0) {
                return dp_err(DP_EINVAL, "--batchnorm '%s': use on, off, or 0/1 per hidden "
                                         "layer", o->batchnorm);
            }
            mc->batchnorm[i] = v[i] == 1.0;
        }
    }
    if (o->init) {
        DP_TRY(parse_inits("--init", o->init, mc->n_layers, mc->weight_init));
        mc->init = mc->weight_init[0].kind;
    }
    if (o->bias_init) {
        DP_TRY(parse_inits("--bias-init", o->bias_init, mc->n_layers, mc->bias_init));
    }
done:
    return rc;
}

/* "784,256,128,10" -> sizes; hidden layers get act, the output layer the activation the
 * loss needs (identity where the loss fuses softmax or sigmoid). */
/* Per-layer settings written in the --layers spec ("256:tanh:dropout=0.2:bn"). */
typedef struct {
    int act[DP_MAX_LAYERS];       /* -1: not given */
    float dropout[DP_MAX_LAYERS]; /* < 0: not given */
    bool bn[DP_MAX_LAYERS];
} layer_tokens;

static int parse_token(const char *spec, const char *tok, int layer, layer_tokens *lt)
{
    int a = dp_act_parse(tok);
    if (a >= 0) {
        if (!dp_act_trainable((dp_act)a) || a == DP_ACT_SOFTMAX) {
            return dp_err(DP_EINVAL, "--layers '%s': %s cannot be a hidden activation", spec, tok);
        }
        lt->act[layer] = a;
    } else if (strcmp(tok, "bn") == 0) {
        lt->bn[layer] = true;
    } else if (strncmp(tok, "dropout=", 8) == 0) {
        char *end = NULL;
        double p = strtod(tok + 8, &end);
        if (end == tok + 8 || *end || !(p >= 0.0 && p < 1.0)) {
            return dp_err(DP_EINVAL, "--layers '%s': %s: the probability must be in [0, 1)",
                          spec, tok);
        }
        lt->dropout[layer] = (float)p;
    } else {
        return dp_err(DP_EINVAL, "--layers '%s': unknown layer setting '%s' (an activation, "
                                 "dropout=P or bn)", spec, tok);
    }
    return DP_OK;
}

/* The largest layer --layers takes: 2^24 units, beyond any memory for a dense layer's
 * weights, and small enough that sizes and their products stay within the model's int and
 * size_t arithmetic. */
#define DP_MAX_LAYER_SIZE (1L << 24)

static int parse_layers(const char *spec, dp_act act, dp_loss loss, dp_model_cfg *mc,
                        layer_tokens *lt)
{
    int n = 0;
    const char *p = spec;
    for (int i = 0; i < DP_MAX_LAYERS; i++) {
        lt->act[i] = -1;
        lt->dropout[i] = -1.0f;
        lt->bn[i] = false;
    }
    while (*p) {
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',' && *end != ':') || (!errno && v < 1)) {
            return dp_err(DP_EINVAL, "--layers '%s': sizes must be positive integers separated "
                                     "by commas, e.g. 784,256,128,10", spec);
        }
        if (errno || v > DP_MAX_LAYER_SIZE) {
            return dp_err(DP_EINVAL, "--layers '%s': size %.*s is too large: a layer has at most "
                                     "%ld units", spec, (int)(end - p), p, DP_MAX_LAYER_SIZE);
        }
        if (n > DP_MAX_LAYERS) {
            return dp_err(DP_EINVAL, "--layers '%s': at most %d layers", spec, DP_MAX_LAYERS);
        }
        mc->sizes[n++] = (int)v;
        while (*end == ':') {
            char tok[64];
            size_t len = strcspn(end + 1, ":,");
            if (len == 0 || len >= sizeof tok) {
                return dp_err(DP_EINVAL, "--layers '%s': empty or overlong layer setting", spec);
            }
            memcpy(tok, end + 1, len);
            tok[len] = '\0';
            if (n == 1) {
                return dp_err(DP_EINVAL, "--layers '%s': the input size takes no settings", spec);
            }
            int rc = parse_token(spec, tok, n - 2, lt);
            if (rc != DP_OK) {
                return rc;
            }
            end += 1 + len;
        }
        p = *end ? end + 1 : end;
    }
    if (n < 2) {
        return dp_err(DP_EINVAL, "--layers '%s': give at least the input and output sizes",
                      spec);
    }
    mc->n_layers = n - 1;
    for (int i = 0; i < mc->n_layers; i++) {
        mc->act[i] = (i == mc->n_layers - 1) ? dp_loss_output_act(loss) : act;
    }
    int last = mc->n_layers - 1;
    if (lt->act[last] >= 0 || lt->dropout[last] >= 0.0f || lt->bn[last]) {
        return dp_err(DP_EINVAL, "--layers '%s': the output size takes no settings (its "
                                 "activation comes from --loss)", spec);
    }
    return DP_OK;
}

/* Copies a path option into a run configuration field. */
static int set_path(const char *opt, const char *v, char *dst, size_t cap)
{
    if (v && (size_t)snprintf(dst, cap, "%s", v) >= cap) {
        return dp_err(DP_EINVAL, "%s: the path is longer than %zu bytes", opt, cap - 1);
    }
    return DP_OK;
}

/* Every option of a run: a --config file (a config.json is the base; an INI file's keys
 * come before the command line), then the command line (which overrides it), the layer
 * spec and the per-layer regularizers; settings written in --layers win over the options
 * for all layers. default_layers NULL: --data and --layers must be given (or come from a
 * config.json); else --data is optional and default_layers stands in for a missing
 * --layers. Local. */
static int parse_all(int argc, char **argv, const char *default_layers, train_opts *o,
                     config_ctx *cx, char ***cfg_argv)
{
    int rc = DP_OK;
    layer_tokens ltok;
    defaults(o);
    DP_TRY(read_config(argc, argv, o, cx, cfg_argv, &argc));
    if (*cfg_argv) {
        argv = *cfg_argv;
    }
    DP_TRY(parse_args(argc, argv, o, default_layers == NULL));
    if (o->help) {
        goto done;
    }
    dp_run_cfg *run = &o->run;
    dp_model_cfg *mc = &run->model;
    if (!o->layers && mc->n_layers == 0) {
        o->layers = default_layers;
    }
    if (o->layers) {
        /* A new layer spec: a new model (the batch-norm constants stay). */
        dp_model_cfg fresh = {.bn_momentum = mc->bn_momentum, .bn_eps = mc->bn_eps,
                              .init = DP_INIT_HE_NORMAL};
        *mc = fresh;
        DP_TRY(parse_layers(o->layers, o->hidden_act, run->train.loss, mc, &ltok));
        if (!o->init) {
            o->init = "he-normal";
        }
    } else {
        for (int i = 0; i < mc->n_layers - 1 && o->act_given; i++) {
            mc->act[i] = o->hidden_act;
        }
        for (int i = 0; i < DP_MAX_LAYERS; i++) {
            ltok.act[i] = -1;
            ltok.dropout[i] = -1.0f;
            ltok.bn[i] = false;
        }
    }
    mc->act[mc->n_layers - 1] = dp_loss_output_act(run->train.loss);
    DP_TRY(parse_regularizers(o, mc));
    for (int i = 0; i < mc->n_layers - 1; i++) {
        mc->act[i] = ltok.act[i] >= 0 ? (dp_act)ltok.act[i] : mc->act[i];
        mc->dropout[i] = ltok.dropout[i] >= 0.0f ? ltok.dropout[i] : mc->dropout[i];
        mc->batchnorm[i] = mc->batchnorm[i] || ltok.bn[i];
    }
    DP_TRY(set_path("--data", o->data, run->data, sizeof run->data));
    DP_TRY(set_path("--out", o->out, run->out, sizeof run->out));
    DP_TRY(set_path("--resume", o->resume, run->resume, sizeof run->resume));
    DP_TRY(set_path("--init-from", o->init_from, run->init_from, sizeof run->init_from));
    if (run->overwrite && run->resume[0]) {
        DP_FAIL(DP_EINVAL, "--overwrite starts a new run in place of the old one; --resume "
                           "continues the old one: give one of them");
    }
done:
    return rc;
}

int dp_cli_parse_run(int argc, char **argv, const char *default_layers, dp_cli_run *out)
{
    train_opts o;
    config_ctx cx = {.n = 0};
    char **cfg_argv = NULL;
    memset(out, 0, sizeof *out);
    int rc = parse_all(argc, argv, default_layers, &o, &cx, &cfg_argv);
    if (rc == DP_OK) {
        out->run = o.run;
        out->help = o.help;
        snprintf(out->layers, sizeof out->layers, "%s", o.layers ? o.layers : "(config)");
    }
    config_free(&cx, cfg_argv);
    return rc;
}

/* SIGTERM (Slurm's time limit, scancel), SIGUSR1 (sbatch --signal) and SIGINT: a request
 * to stop at the next step boundary; the loop shares it with every rank. */
static volatile sig_atomic_t g_stop = 0;
/* Set while a progress line may stand unfinished on the terminal: the message below then
 * starts on a line of its own. */
static volatile sig_atomic_t g_progress_on_terminal = 0;
/* The run's communicator while training, for the handler to name ranks that died. */
static const dp_comm *volatile g_comm = NULL;

static void on_stop_signal(int sig)
{
    static const char msg[] = "dptrain: stop requested by a signal: finishing the current step, "
                              "then writing a checkpoint\n";
    if (!g_stop) {
        ssize_t w = g_progress_on_terminal ? write(STDERR_FILENO, "\n", 1) : 0;
        w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        dp_comm_report_lost_peers(g_comm);
    }
    g_stop = sig;
}

static void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* --- the progress line (--progress) ----------------------------------------------------- */

/* The parent of process pid, or -1. */
static long parent_of(long pid)
{
    long ppid = -1;
    return dp_proc_stat(pid, NULL, &ppid) ? ppid : -1;
}

/* The path of the terminal the user sees rank 0's output on, into buf, or false if it is not
 * one. Open MPI gives the ranks a pseudo-terminal of its own as stdout whatever mpirun's
 * stdout is (a pipe, a file), so under mpirun (OMPI_COMM_WORLD_SIZE set) the answer is that
 * of the nearest ancestor whose stdout is not that pseudo-terminal: mpirun (or a wrapper
 * around it). Local. */
static bool output_terminal(char *buf, size_t cap)
{
    struct stat mine, st;
    if (!isatty(STDOUT_FILENO) || fstat(STDOUT_FILENO, &mine) != 0) {
        return false;
    }
    if (!getenv("OMPI_COMM_WORLD_SIZE")) {
        snprintf(buf, cap, "/dev/stdout");
        return true;
    }
    long pid = (long)getppid();
    for (int depth = 0; depth < 16 && pid > 1; depth++, pid = parent_of(pid)) {
        char link[64];
        snprintf(link, sizeof link, "/proc/%ld/fd/1", pid);
        if (stat(link, &st) != 0) {
            return false; /* cannot tell: stay with plain lines */
        }
        if (S_ISCHR(st.st_mode) && st.st_rdev == mine.st_rdev) {
            continue; /* still under Open MPI's pseudo-terminal */
        }
        ssize_t n = readlink(link, buf, cap - 1);
        buf[n > 0 ? n : 0] = '\0';
        return S_ISCHR(st.st_mode) &&
               (strncmp(buf, "/dev/pts/", 9) == 0 || strncmp(buf, "/dev/tty", 8) == 0);
    }
    return false;
}

/* What the progress line needs between steps; lives in dp_cmd_train. */
typedef struct {
    FILE *out;        /* stdout */
    dp_loss loss;
    bool shown;       /* a progress line is on screen, not yet ended by a newline */
    double last_draw; /* monotonic seconds of the last drawing */
    double t_start;   /* when the run (this process's part of it) started */
    long step_start;  /* the step it started from */
    int tty_fd;       /* the terminal, for its width, or -1 */
} progress_view;

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "m:ss" or "h:mm:ss"; "?" when unknown. */
static void fmt_duration(char *buf, size_t cap, double s)
{
    if (!(s >= 0.0) || s > 1e8) {
        snprintf(buf, cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) {
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    } else {
        snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
    }
}

/* dp_train_cfg.progress on rank 0: draws the line at the first and last step of an epoch
 * and at most every 0.2 s in between, as "\r<text>\033[K" (carriage return, the text,
 * clear to the end of the line), never with a newline. */
static void progress_step(void *ctx, const dp_train_progress *p)
{
    progress_view *v = ctx;
    const double now = mono_seconds();
    const bool edge = p->step_in_epoch == 1 || p->step_in_epoch == p->steps_per_epoch;
    if (!edge && now - v->last_draw < 0.2) {
        return;
    }
    v->last_draw = now;
    if (v->step_start < 0) {
        /* The first step this process runs: the run's rate is measured from it. */
        v->step_start = p->step - 1;
        v->t_start = now - (p->step_in_epoch > 0 ? p->seconds / (double)p->step_in_epoch : 0.0);
    }
    char line[256], left_epoch[32], left_run[32];
    const double per_step = p->step_in_epoch > 0 ? p->seconds / (double)p->step_in_epoch : -1.0;
    fmt_duration(left_epoch, sizeof left_epoch,
                 per_step * (double)(p->steps_per_epoch - p->step_in_epoch));
    const long run_done = p->step - v->step_start;
    fmt_duration(left_run, sizeof left_run,
                 run_done > 0 ? (now - v->t_start) / (double)run_done *
                                    (double)(p->total_steps - p->step)
                              : -1.0);
    const double rate = p->seconds > 0.0 ? (double)p->samples / p->seconds : 0.0;
    const int pct = p->steps_per_epoch > 0 ? (int)(100 * p->step_in_epoch / p->steps_per_epoch) : 0;
    int len = snprintf(line, sizeof line,
                       "epoch %d/%d %3d%%  step %ld/%ld (run %ld/%ld)  %.0f samples/s  "
                       "loss %.4f  left %s (run %s)",
                       p->epoch, p->epochs, pct, p->step_in_epoch, p->steps_per_epoch, p->step,
                       p->total_steps, rate, dp_loss_report(v->loss, p->loss_sum, p->loss_count),
                       left_epoch, left_run);
    struct winsize ws;
    if (v->tty_fd >= 0 && ioctl(v->tty_fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 &&
        len >= (int)ws.ws_col && ws.ws_col <= sizeof line) {
        line[ws.ws_col - 1] = '\0'; /* a wrapped line could not be redrawn in place */
    }
    fprintf(v->out, "\r%s\033[K", line);
    fflush(v->out);
    v->shown = true;
}

/* Ends a progress line on screen (clears it), so that the next output starts clean. */
static void progress_clear(progress_view *v)
{
    if (v && v->shown) {
        fputs("\r\033[K", v->out);
        fflush(v->out);
        v->shown = false;
    }
}

/* The log stream while a progress line may be on screen: every write first clears it, so
 * the epoch line (and a checkpoint's line) replaces the progress line. */
static ssize_t progress_log_write(void *ctx, const char *buf, size_t n)
{
    progress_view *v = ctx;
    progress_clear(v);
    size_t w = fwrite(buf, 1, n, v->out);
    fflush(v->out);
    return w == n ? (ssize_t)n : -1;
}

/* --progress: the progress line on rank 0, with the log stream that clears it; NULL if off. */
static FILE *progress_start(const train_opts *o, progress_view *pv, dp_run_hooks *h)
{
    char term[256];
    const bool on_terminal = o->progress != PROGRESS_OFF && output_terminal(term, sizeof term);
    if (!(o->progress == PROGRESS_ON || (o->progress == PROGRESS_AUTO && !o->quiet && on_terminal))) {
        return NULL;
    }
    if (on_terminal) {
        pv->tty_fd = strcmp(term, "/dev/stdout") == 0
                         ? STDOUT_FILENO : open(term, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    }
    pv->loss = o->run.train.loss;
    pv->last_draw = -1e9;
    pv->step_start = -1;
    FILE *plog = fopencookie(pv, "w", (cookie_io_functions_t){.write = progress_log_write});
    if (plog) {
        setvbuf(plog, NULL, _IOLBF, 0);
        h->progress = progress_step;
        h->progress_ctx = pv;
        g_progress_on_terminal = on_terminal;
    }
    return plog;
}

/* The stuck-rank watchdog (--step-timeout), around the job. */
static int watchdog_start(const train_opts *o, dp_comm *c, bool say)
{
    const float t = o->run.step_timeout;
    if (t == 0.0f) {
        return DP_OK;
    }
    const dp_watchdog_cfg wc = {.timeout_s = t > 0.0f ? t : 0.0, .min_s = 60.0, .factor = 100.0,
                                .exit_code = DP_EXIT_STUCK};
    int status = dp_cli_agree(c, dp_watchdog_start(c, &wc), "");
    if (status == DP_OK && say) {
        if (t > 0.0f) {
            printf("watchdog: a rank waiting %g s in a collective ends the job\n", (double)t);
        } else {
            printf("watchdog: a rank waiting max(60 s, 100 x the median step) in a collective "
                   "ends the job (--step-timeout)\n");
        }
        fflush(stdout);
    }
    return status;
}

static void print_done(const dp_run_result *r)
{
    const dp_train_result *res = &r->train;
    printf("done: %d epochs, %ld steps, %.0f samples/s", res->epochs_done, res->steps_done,
           res->samples_per_s);
    if (res->best_epoch > 0) {
        printf(", %sbest validation loss at epoch %d (weights kept)",
               res->stopped_early ? "stopped early; " : "", res->best_epoch);
    }
    if (res->val.n > 0) {
        printf(", val loss %.4f", res->val.loss);
    }
    if (res->test.n > 0) {
        printf(", test loss %.4f", res->test.loss);
        if (res->test.accuracy == res->test.accuracy) {
            printf(", test accuracy %.4f", res->test.accuracy);
        }
    }
    printf("; model: %s\n", r->model);
    fflush(stdout);
}

int dp_cmd_train(int argc, char **argv)
{
    int status = DP_OK;
    dp_comm *c = NULL;
    train_opts o;
    config_ctx cfgctx = {.n = 0};
    char **cfg_argv = NULL;
    progress_view pv = {.out = stdout, .tty_fd = -1};
    FILE *plog = NULL; /* the log stream while a progress line is drawn */
    dp_run_result res = {.failed_rank = -1};

    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    const int rank = dp_comm_rank(c), size = dp_comm_size(c);
    const bool root = (rank == 0);
    install_stop_handlers();

    /* Options: every rank parses the same argv and reaches the same verdict. */
    status = parse_all(argc, argv, NULL, &o, &cfgctx, &cfg_argv);
    if (status != DP_OK || o.help) {
        if (root && status == DP_OK) {
            help(stdout);
            help_optim_defaults(stdout);
        } else if (root) {
            dp_cli_error(dp_errmsg());
        }
        goto out;
    }
    int threads = o.run.threads > 0 ? o.run.threads : dp_cli_auto_threads(dp_comm_local_size(c));
    dp_blas_set_threads(threads);
    if (root && !o.quiet) {
        const char *fallback = getenv("DPTRAIN_BLAS_REEXEC");
        printf("dptrain %s: %d rank%s (%d on this node), OpenBLAS %s kernels", DPTRAIN_VERSION,
               size, size == 1 ? "" : "s", dp_comm_local_size(c), dp_blas_corename());
        if (fallback) {
            printf(" (set by dptrain; OpenBLAS had chosen %s)", fallback);
        }
        printf(", %d BLAS thread%s per rank\n", threads, threads == 1 ? "" : "s");
        fflush(stdout);
    }
    dp_run_hooks hooks = {.stop = &g_stop, .version = DPTRAIN_VERSION};
    dp_cli_test_hooks(&hooks.test);
    if (root) {
        plog = progress_start(&o, &pv, &hooks);
        hooks.log = o.quiet ? NULL : (plog ? plog : stdout);
        hooks.notice = plog ? plog : stdout;
    }
    if ((status = watchdog_start(&o, c, root && !o.quiet)) != DP_OK) {
        goto out;
    }
    g_comm = c;
    status = dp_run_job(&o.run, c, &hooks, &res);
    g_comm = NULL;
    dp_watchdog_stop(c);
    if (plog) {
        fflush(plog);
    }
    progress_clear(&pv);
    g_progress_on_terminal = 0;
    if (status == DP_ESTOPPED) {
        /* Not an error: every rank stopped at the same step and the checkpoint is written. */
        if (root) {
            printf("stopped by a signal at epoch %d, step %ld; checkpoint: %s; continue with "
                   "the same command and --resume auto\n", res.epoch, res.step, res.checkpoint);
            fflush(stdout);
        }
    } else if (status != DP_OK && res.failed_rank == rank) {
        if (size > 1) {
            fprintf(stderr, "dptrain: rank %d: error: %s\n", rank, dp_errmsg());
        } else {
            fprintf(stderr, "dptrain: error: %s\n", dp_errmsg());
        }
        fflush(stderr);
    } else if (status == DP_OK && root) {
        print_done(&res);
    }
out:
    if (plog) {
        fclose(plog);
    }
    if (pv.tty_fd > STDERR_FILENO) {
        close(pv.tty_fd);
    }
    dp_comm_free(&c);
    dp_dist_finalize();
    config_free(&cfgctx, cfg_argv);
    return dp_cli_exit_code(status);
}
