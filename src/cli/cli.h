/* cli.h: what the dptrain subcommands share: strict value parsing and messages. */
#ifndef DPTRAIN_CLI_H
#define DPTRAIN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dptrain/dist.h"
#include "dptrain/run.h"
#include "dptrain/train.h"

/* Exit codes of the program (documented in README.md). */
enum {
    DP_EXIT_OK = 0,
    DP_EXIT_ERROR = 1,    /* data, I/O, MPI or other run-time failure */
    DP_EXIT_USAGE = 2,    /* bad command line or a configuration that cannot work */
    DP_EXIT_STOPPED = 3,  /* stopped by SIGTERM/SIGUSR1/SIGINT; a checkpoint was written */
    DP_EXIT_DIVERGED = 4, /* the loss became NaN or infinite, or exploded */
    DP_EXIT_STUCK = 5,    /* the watchdog: a rank waited too long for another */
};

/* Option values are parsed strictly by dp_parse_int, dp_parse_float, dp_parse_u64 and
 * dp_parse_size (dptrain/run.h). */

/* Prints "dptrain: error: <msg>" to stderr. */
void dp_cli_error(const char *msg);

/* Agrees on rc over the ranks; the lowest failing rank prints its message, prefixed with
 * ctx (may be ""). Returns the agreed status. Collective. */
int dp_cli_agree(const dp_comm *c, int rc, const char *ctx);
/* The exit code for a status (the table above). */
int dp_cli_exit_code(int status);
/* BLAS threads per rank: the CPUs this rank may run on, shared by the ranks of the node. */
int dp_cli_auto_threads(int local_ranks);
/* The test hooks the DPTRAIN_TEST_* variables ask for (README "Tests": FAULT=skip-allreduce,
 * STOP_AT=STEP[:RANK], HOLD_AT=STEP, CKPT_PAUSE=K). Local. */
void dp_cli_test_hooks(dp_test_hooks *h);
/* Starts MPI and makes the world communicator; prints and returns non-zero on failure. */
int dp_cli_start(int *argc, char ***argv, dp_comm **c);

/* The options of a run, as dptrain train reads them (a --config file, the command line,
 * the layer spec), for commands that run the training step without training a model. */
typedef struct {
    dp_run_cfg run;
    char layers[1024]; /* the layer spec in force */
    bool help;
} dp_cli_run;
/* Parses argv (argv[0] is the command) with every dptrain train option; --data is optional
 * and default_layers stands in for a missing --layers. Options the caller handles itself
 * must be removed first. Local. */
int dp_cli_parse_run(int argc, char **argv, const char *default_layers, dp_cli_run *out);

/* An INI section that dptrain train does not read ([sweep], [space]): one key. */
typedef int (*dp_cli_ini_fn)(void *ctx, const char *section, const char *key, const char *value);
/* argv's run options as dptrain train reads them, not yet applied: *base is the defaults or
 * a --config config.json, *opts the options (an INI file's, then the command line's; free it
 * with dp_run_opts_free); extra takes the INI sections [sweep] and [space]. Local. */
int dp_cli_parse_run_opts(int argc, char **argv, dp_cli_ini_fn extra, void *extra_ctx,
                          dp_run_cfg *base, dp_run_opts **opts, bool *help);

/* A command's own options, taken out of argv before the run's options are parsed: each
 * "--name VALUE" or "--name=VALUE" (a switch: "--name" alone) found in argv is removed and
 * given to take(ctx, its index in opts, its value or NULL); the rest of argv keeps its order
 * (argv[*argc] = NULL). -h and --help stay and set *help. Stops at take's first error; an
 * option without its value is refused. Local. */
typedef struct {
    const char *name; /* "--steps" */
    bool value;       /* takes a value */
} dp_cli_opt;
int dp_cli_take_opts(int *argc, char **argv, const dp_cli_opt *opts, int n_opts,
                     int (*take)(void *ctx, int which, const char *value), void *ctx,
                     bool *help);
/* After a command's options are parsed: on rank 0, the help text (rc DP_OK: --help was
 * asked for) or "dptrain: error: <message>". Local. */
void dp_cli_help_or_error(int rank, int rc, void (*help)(FILE *));
/* SIGTERM, SIGUSR1 and SIGINT call handler (SA_RESTART): a stop request. Local. */
void dp_cli_on_stop_signals(void (*handler)(int));

/* Runs gnuplot on dir/plot.gp with dir as its working directory and waits for it; a missing
 * gnuplot is named with the package to install. Local. */
int dp_cli_run_gnuplot(const char *dir);
/* Copies src to dst under a temporary name (dst.tmp.PID), fsyncs, then renames it. Local. */
int dp_cli_copy_atomic(const char *src, const char *dst);

int dp_cmd_lr_find(int argc, char **argv);
int dp_cmd_sweep(int argc, char **argv);
int dp_cmd_train(int argc, char **argv);
int dp_cmd_bench(int argc, char **argv);
int dp_cmd_convert(int argc, char **argv);
int dp_cmd_synth(int argc, char **argv);
int dp_cmd_compare(int argc, char **argv);
int dp_cmd_eval(int argc, char **argv);
int dp_cmd_predict(int argc, char **argv);
int dp_cmd_info(int argc, char **argv);
int dp_cmd_plot(int argc, char **argv);

#endif
