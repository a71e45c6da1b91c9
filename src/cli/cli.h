/* cli.h: what the dptrain subcommands share: strict value parsing and messages. */
#ifndef DPTRAIN_CLI_H
#define DPTRAIN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes of the program (documented in README.md). */
enum {
    DP_EXIT_OK = 0,
    DP_EXIT_ERROR = 1,    /* data, I/O, MPI or other run-time failure */
    DP_EXIT_USAGE = 2,    /* bad command line or a configuration that cannot work */
    DP_EXIT_DIVERGED = 4, /* the loss became NaN or infinite */
};

/* Each parser accepts the whole string or records "--opt: 'text' is not ..." and fails. */
int dp_cli_int(const char *opt, const char *s, long lo, long hi, long *out);
int dp_cli_size(const char *opt, const char *s, size_t *out);
int dp_cli_u64(const char *opt, const char *s, uint64_t *out);
int dp_cli_float(const char *opt, const char *s, double lo, double hi, float *out);

/* Prints "dptrain: error: <msg>" to stderr. */
void dp_cli_error(const char *msg);

int dp_cmd_train(int argc, char **argv);
int dp_cmd_convert(int argc, char **argv);
int dp_cmd_synth(int argc, char **argv);
int dp_cmd_compare(int argc, char **argv);

#endif
