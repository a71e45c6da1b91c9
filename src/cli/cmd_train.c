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

/* --progress: the in-epoch progress line of rank 0 (a display option: not part of the
 * run's configuration, so it may change on resume). */
enum { PROGRESS_AUTO = 0, PROGRESS_ON, PROGRESS_OFF };
static const char *const progress_names[] = {"auto", "on", "off"};

/* The command line: the run's configuration and what only the program has. */
typedef struct {
    dp_run_cfg run;
    bool quiet;
    int progress; /* PROGRESS_AUTO, PROGRESS_ON or PROGRESS_OFF */
    bool help;
    dp_cli_ini_fn extra; /* the INI sections [sweep] and [space] (dptrain sweep), or NULL */
    void *extra_ctx;
} train_opts;

static void defaults(train_opts *o)
{
    memset(o, 0, sizeof *o);
    dp_run_defaults(&o->run);
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
        const dp_optim_field *hp = dp_optim_fields(&n_hp);
        for (int i = 0; i < n_hp; i++) {
            if (hp[i].optims & (1u << k)) {
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
"                      a CNN starts with the image CxHxW, then convolutions\n"
"                      (convCkK[sS][pP], e.g. conv32k3p1:bn; k5x3 for 5x3) and\n"
"                      poolings (maxpoolK[sS], avgpoolK[sS]), then flatten or gap\n"
"                      (global average pooling), then the dense sizes:\n"
"                      1x28x28,conv32k3p1:bn,maxpool2,flatten,128,10 (NCHW;\n"
"                      README.md, \"Convolutional networks\")\n"
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
"  --shuffle HOW       the epoch's visiting order: feistel (each rank computes only\n"
"                      its own rows' places) or fisher-yates (a permutation of every\n"
"                      row on every rank: the order of runs whose config.json has no\n"
"                      training.shuffle, which is read as fisher-yates)  [feistel]\n"
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
"  --threads N         OpenBLAS threads per rank; 0 = cores / ranks on the node,\n"
"                      1 with --deterministic                             [auto]\n"
"  --deterministic     the same bits for any number of ranks from 1 to --shards:\n"
"                      parameters, optimizer state, batch-norm statistics and\n"
"                      every metric; a checkpoint resumes bit-identically at any\n"
"                      such N. Each global batch is cut into --shards virtual\n"
"                      shards computed one by one and summed exactly. Costs\n"
"                      speed at small batches (README \"Deterministic mode\");\n"
"                      one BLAS thread per rank, blocking allreduce       [off]\n"
"  --shards V          deterministic: virtual shards per global batch, the most\n"
"                      ranks the run can use; the bits depend on V        [%d]\n"
"  --allreduce MODE    blocking: one allreduce of all gradients after the\n"
"                      backward pass; overlap: buckets of layers (last first),\n"
"                      each summed with a non-blocking allreduce while the\n"
"                      layers below compute (same result up to float summation\n"
"                      order; dptrain bench measures which is faster);\n"
"                      sharded (ZeRO-1): a reduce-scatter of the gradients, each\n"
"                      rank updates its slice of the parameters and keeps only\n"
"                      that slice's optimizer state (1/N of it), an allgather of\n"
"                      the parameters; checkpoints are the same files   [blocking]\n"
"  --bucket-kb N       overlap: gradient KiB per bucket (whole layers)        [%d]\n"
"  --flush-subnormals  treat subnormal floats (below 1.2e-38) as zero (CPU FTZ/DAZ):\n"
"                      avoids the CPU's slow path for them, which long runs meet\n"
"                      in the optimizer state; changes results below that scale.\n"
"                      Recorded in the config (a resume must use the same) [off]\n"
"  --data-memory MODE  where the dataset lives: replicate: every rank reads the file\n"
"                      into its own memory; node: one copy per node in shared memory\n"
"                      (MPI-3), read by the node's first rank, mapped by the others;\n"
"                      stream: no copy, each rank reads only its rows of each batch\n"
"                      from the file (pread, the next batch read ahead; the file\n"
"                      stored contiguous, as dptrain convert writes it); auto:\n"
"                      stream when the file exceeds half the memory a copy may take,\n"
"                      else node when a node runs more than one rank, else\n"
"                      replicate. The same run in every mode. May differ on\n"
"                      --resume                                            [auto]\n"
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
            dp_act_name(DP_ACT_RELU), dp_loss_name(d.run.train.loss), "he-normal",
            dp_sched_name(d.run.train.sched.kind), d.run.train.sched.gamma, d.run.train.sched.step_size,
            d.run.train.sched.warmup_start_factor, d.run.train.plateau_patience, d.run.train.batch, d.run.train.epochs, (unsigned long long)d.run.train.seed,
            d.run.train.accumulate, d.run.train.clip_norm, d.run.train.val_fraction, d.run.train.patience, d.run.train.min_delta,
            d.run.train.checkpoint_epochs, d.run.keep_last, d.run.out, d.run.train.eval_batch, d.run.train.shards,
            DP_BUCKET_KB_DEFAULT,
            progress_names[d.progress]);
}

/* The options only the program has (not part of a run's configuration): --quiet,
 * --progress. *taken says whether key was one (else the caller passes it on); returns the
 * status of its value. */
static int program_option(const char *key, const char *value, train_opts *o, bool *taken)
{
    *taken = true;
    if (strcmp(key, "quiet") == 0) {
        o->quiet = !value || strcmp(value, "true") == 0;
        return value && strcmp(value, "true") && strcmp(value, "false")
                   ? dp_err(DP_EINVAL, "quiet = '%s': must be true or false", value) : DP_OK;
    }
    if (strcmp(key, "progress") == 0) {
        int v = 0;
        while (v < 3 && value && strcmp(value, progress_names[v]) != 0) {
            v++;
        }
        if (!value || v == 3) {
            return dp_err(DP_EINVAL, "--progress: unknown value '%s' (auto, on or off)",
                          value ? value : "");
        }
        o->progress = v;
        return DP_OK;
    }
    *taken = false;
    return DP_OK;
}

/* --config FILE.ini: every key is an option of the run (or --quiet, --progress), checked with
 * its line. The file's options come before the command line's, which override them. */
typedef struct {
    train_opts *o;
    dp_run_opts *ro;
    char msg[512];
} ini_ctx;

static int ini_key(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx *cx = user;
    static const char *const sections[] = {"", "data", "model", "optimizer", "training", "output"};
    bool known = false, taken = false;
    if (strcmp(section, "sweep") == 0 || strcmp(section, "space") == 0) {
        if (!cx->o->extra) {
            snprintf(cx->msg, sizeof cx->msg, "section [%s] is for dptrain sweep", section);
            return 0;
        }
        if (cx->o->extra(cx->o->extra_ctx, section, name, value) != DP_OK) {
            snprintf(cx->msg, sizeof cx->msg, "%s", dp_errmsg());
            return 0;
        }
        return 1;
    }
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        known = known || strcmp(sections[i], section) == 0;
    }
    if (!known) {
        snprintf(cx->msg, sizeof cx->msg, "unknown section [%s] (sections: data, model, "
                 "optimizer, training, output)", section);
        return 0;
    }
    if (strcmp(name, "config") == 0 || strcmp(name, "help") == 0) {
        snprintf(cx->msg, sizeof cx->msg, "key '%s' is not allowed in a config file", name);
        return 0;
    }
    int rc = program_option(name, value, cx->o, &taken);
    if (!taken && dp_run_option_kind(name) < 0) {
        snprintf(cx->msg, sizeof cx->msg, "unknown key '%.40s' in [%s] (keys are the options of "
                 "dptrain train --help)", name, section);
        return 0;
    }
    if (!taken) {
        rc = dp_run_opts_set(cx->ro, name, value);
    }
    if (rc != DP_OK) {
        snprintf(cx->msg, sizeof cx->msg, "%s", dp_errmsg());
        return 0;
    }
    return 1;
}

/* --config FILE: a saved config.json (first non-blank character '{') becomes o->run, the
 * base the options edit; an INI file's keys are recorded as options. */
static int read_config(const char *file, train_opts *o, dp_run_opts *ro)
{
    int rc = DP_OK, ch;
    char *text = NULL;
    size_t len = 0;
    FILE *f = fopen(file, "r");
    if (!f) {
        return dp_err(DP_EINVAL, "--config %s: cannot open (%s)", file, strerror(errno));
    }
    while ((ch = getc(f)) == ' ' || ch == '\n' || ch == '\t' || ch == '\r') {
    }
    rewind(f);
    if (ch != '{') {
        ini_ctx cx = {.o = o, .ro = ro};
        int line = ini_parse_file(f, ini_key, &cx);
        if (line != 0) {
            DP_FAIL(DP_EINVAL, "%s:%d: %s", file, line,
                    cx.msg[0] ? cx.msg : "not a valid INI line (expected key = value)");
        }
        goto done;
    }
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
done:
    fclose(f);
    free(text);
    return rc;
}

/* The command line: --config first (wherever it stands), then every option in order;
 * "--name value" and "--name=value" alike. */
static int parse_argv(int argc, char **argv, train_opts *o, dp_run_opts *ro)
{
    int rc = DP_OK;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            DP_TRY(read_config(argv[++i], o, ro));
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            DP_TRY(read_config(argv[i] + 9, o, ro));
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        char key[64];
        bool taken = false;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            o->help = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
            DP_FAIL(DP_EINVAL, "unexpected argument '%s' (see dptrain train --help)", arg);
        }
        const char *eq = strchr(arg, '=');
        size_t klen = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        if (klen >= sizeof key) {
            DP_FAIL(DP_EINVAL, "unknown option '%s' (see dptrain train --help)", arg);
        }
        memcpy(key, arg + 2, klen);
        key[klen] = '\0';
        const int kind = strcmp(key, "config") == 0 || strcmp(key, "progress") == 0 ? 0
                         : strcmp(key, "quiet") == 0 ? 1 : dp_run_option_kind(key);
        if (kind < 0) {
            DP_FAIL(DP_EINVAL, "unknown option '%s' (see dptrain train --help)", arg);
        }
        const char *value = eq ? eq + 1 : NULL;
        if (kind == 1 && value) {
            DP_FAIL(DP_EINVAL, "option '--%s' takes no value", key);
        }
        if (kind == 0 && !value) {
            if (i + 1 >= argc) {
                DP_FAIL(DP_EINVAL, "option '%s' needs a value", arg);
            }
            value = argv[++i];
        }
        if (strcmp(key, "config") == 0) {
            continue; /* read above */
        }
        DP_TRY(program_option(key, value, o, &taken));
        if (!taken) {
            DP_TRY(dp_run_opts_set(ro, key, value));
        }
    }
done:
    return rc;
}

/* Every option of a run: a --config file (a config.json is the base; an INI file's keys come
 * before the command line), then the command line, applied over the base (dp_run_opts_apply).
 * default_layers NULL: --data and --layers must be given (or come from a config.json); else
 * --data is optional and default_layers stands in for a missing --layers. Local. */
static int parse_all(int argc, char **argv, const char *default_layers, train_opts *o)
{
    int rc = DP_OK;
    dp_run_opts *ro = NULL;
    defaults(o);
    DP_TRY(dp_run_opts_create(&ro));
    DP_TRY(parse_argv(argc, argv, o, ro));
    if (o->help) {
        goto done;
    }
    if (default_layers && !dp_run_opts_get(ro, "layers") && o->run.model.n_layers == 0) {
        DP_TRY(dp_run_opts_set(ro, "layers", default_layers));
    }
    DP_TRY(dp_run_opts_apply(ro, &o->run));
    if (!default_layers && !o->run.data[0]) {
        DP_FAIL(DP_EINVAL, "--data FILE is required (see dptrain train --help)");
    }
    if (o->run.model.n_layers == 0) {
        DP_FAIL(DP_EINVAL, "--layers is required, e.g. --layers 784,256,128,10");
    }
done:
    dp_run_opts_free(&ro);
    return rc;
}

int dp_cli_parse_run_opts(int argc, char **argv, dp_cli_ini_fn extra, void *extra_ctx,
                          dp_run_cfg *base, dp_run_opts **opts, bool *help)
{
    train_opts o;
    defaults(&o);
    o.extra = extra;
    o.extra_ctx = extra_ctx;
    int rc = dp_run_opts_create(opts);
    if (rc == DP_OK) {
        rc = parse_argv(argc, argv, &o, *opts);
    }
    *base = o.run;
    *help = o.help;
    return rc;
}

int dp_cli_parse_run(int argc, char **argv, const char *default_layers, dp_cli_run *out)
{
    train_opts o;
    memset(out, 0, sizeof *out);
    int rc = parse_all(argc, argv, default_layers, &o);
    if (rc == DP_OK) {
        out->run = o.run;
        out->help = o.help;
        dp_model_cfg_text(&o.run.model, out->layers, sizeof out->layers);
    }
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
    progress_view pv = {.out = stdout, .tty_fd = -1};
    FILE *plog = NULL; /* the log stream while a progress line is drawn */
    dp_run_result res = {.failed_rank = -1};

    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    const int rank = dp_comm_rank(c), size = dp_comm_size(c);
    const bool root = (rank == 0);
    dp_cli_on_stop_signals(on_stop_signal);

    /* Options: every rank parses the same argv and reaches the same verdict. */
    status = parse_all(argc, argv, NULL, &o);
    if (status != DP_OK || o.help) {
        if (root && status == DP_OK) {
            help(stdout);
            help_optim_defaults(stdout);
        } else if (root) {
            dp_cli_error(dp_errmsg());
        }
        goto out;
    }
    int threads = o.run.threads > 0          ? o.run.threads
                  : o.run.train.deterministic ? 1
                                              : dp_cli_auto_threads(dp_comm_local_size(c));
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
    return dp_cli_exit_code(status);
}
