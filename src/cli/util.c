/* util.c: what the subcommands share: error printing and
 * agreement over the ranks, exit codes, MPI start-up and the BLAS thread policy. */
#define _GNU_SOURCE
#include "cli.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"

#include <errno.h>
#include <stdbool.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void dp_cli_error(const char *msg) { fprintf(stderr, "dptrain: error: %s\n", msg); }

int dp_cli_agree(const dp_comm *c, int rc, const char *ctx)
{
    int all = dp_comm_agree(c, rc);
    if (all != DP_OK && dp_comm_first_failed(c, rc) == dp_comm_rank(c)) {
        if (dp_comm_size(c) > 1) {
            fprintf(stderr, "dptrain: rank %d: error: %s%s\n", dp_comm_rank(c), ctx, dp_errmsg());
        } else {
            fprintf(stderr, "dptrain: error: %s%s\n", ctx, dp_errmsg());
        }
        fflush(stderr);
    }
    return all;
}

int dp_cli_exit_code(int status)
{
    switch (status) {
    case DP_OK: return DP_EXIT_OK;
    case DP_EINVAL: return DP_EXIT_USAGE;
    case DP_ESTOPPED: return DP_EXIT_STOPPED;
    case DP_ENONFINITE: return DP_EXIT_DIVERGED;
    default: return DP_EXIT_ERROR;
    }
}

int dp_cli_auto_threads(int local_ranks)
{
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int mine = (sched_getaffinity(0, sizeof set, &set) == 0) ? CPU_COUNT(&set) : (int)online;
    int share = (int)(online / (local_ranks > 0 ? local_ranks : 1));
    int t = mine < share ? mine : share;
    return t < 1 ? 1 : t;
}

/* Open MPI picks its UCX transport whenever UCX is built in, and UCX's start-up probes the
 * machine's network devices: 0.2 s of every MPI_Init here (0.43 s against 0.22 s for
 * mpirun -np 2 of an empty program), for nothing when every rank is on this node, where
 * Open MPI's own ob1 over shared memory (vader) carries the messages. So, before MPI_Init,
 * for a job that mpirun placed on one node (it says so in OMPI_MCA_orte_num_nodes and
 * OMPI_COMM_WORLD_LOCAL_SIZE) or a process started without a launcher, dptrain asks for ob1,
 * unless the user chose a pml (mpirun --mca pml X reaches us as OMPI_MCA_pml) or set
 * DPTRAIN_MPI_LOCAL=off. Every rank of a job sees the same variables, so all choose alike;
 * a job over several nodes, or one under srun, is left as it is. The transport does not
 * change a reduction's arithmetic (Open MPI's collective algorithms are chosen apart from
 * it), so runs are bit-identical either way. Returns DP_EINVAL for an unknown setting. */
static int choose_local_pml(void)
{
    const char *mode = getenv("DPTRAIN_MPI_LOCAL");
    if (mode && strcmp(mode, "off") == 0) {
        return DP_OK;
    }
    if (mode && *mode && strcmp(mode, "auto") != 0) {
        fprintf(stderr, "dptrain: error: DPTRAIN_MPI_LOCAL='%s': use auto or off\n", mode);
        return DP_EINVAL;
    }
    if (getenv("OMPI_MCA_pml")) {
        return DP_OK;
    }
    const char *nodes = getenv("OMPI_MCA_orte_num_nodes");
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const bool one_node = nodes && strcmp(nodes, "1") == 0 && size && local &&
                          strcmp(size, local) == 0;
    const bool alone = !size && !getenv("PMIX_RANK") && !getenv("PMI_RANK");
    if (one_node || alone) {
        setenv("OMPI_MCA_pml", "ob1", 0);
    }
    return DP_OK;
}

int dp_cli_start(int *argc, char ***argv, dp_comm **c)
{
    if (choose_local_pml() != DP_OK) {
        return DP_EINVAL;
    }
    if (dp_dist_init(argc, argv) != DP_OK) {
        fprintf(stderr, "dptrain: error: cannot start MPI: %s\n", dp_errmsg());
        return DP_EMPI;
    }
    if (dp_comm_world(c) != DP_OK) {
        fprintf(stderr, "dptrain: error: %s\n", dp_errmsg());
        dp_dist_abort(DP_EXIT_ERROR);
    }
    return DP_OK;
}

void dp_cli_test_hooks(dp_test_hooks *h)
{
    const char *fault = getenv("DPTRAIN_TEST_FAULT");
    const char *stop = getenv("DPTRAIN_TEST_STOP_AT");
    const char *hold = getenv("DPTRAIN_TEST_HOLD_AT");
    const char *pause = getenv("DPTRAIN_TEST_CKPT_PAUSE");
    memset(h, 0, sizeof *h);
    h->skip_allreduce = fault && strcmp(fault, "skip-allreduce") == 0;
    if (stop && sscanf(stop, "%ld:%d", &h->stop_at, &h->stop_rank) < 1) {
        h->stop_at = 0;
    }
    h->hold_at = hold ? atol(hold) : 0;
    h->hold_until = getenv("DPTRAIN_TEST_HOLD_UNTIL");
    h->ckpt_pause = pause ? atoi(pause) : 0;
}

int dp_cli_take_opts(int *argc, char **argv, const dp_cli_opt *opts, int n_opts,
                     int (*take)(void *ctx, int which, const char *value), void *ctx,
                     bool *help)
{
    int k = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i], *val = NULL;
        int which = -1;
        for (int j = 0; j < n_opts && which < 0; j++) {
            const size_t n = strlen(opts[j].name);
            if (strncmp(a, opts[j].name, n) != 0 || (a[n] != '\0' && a[n] != '=')) {
                continue;
            }
            which = j;
            if (!opts[j].value) {
                if (a[n] == '=') {
                    return dp_err(DP_EINVAL, "option '%s' takes no value", opts[j].name);
                }
            } else if (a[n] == '=') {
                val = a + n + 1;
            } else if (i + 1 < *argc) {
                val = argv[++i];
            } else {
                return dp_err(DP_EINVAL, "option '%s' needs a value", a);
            }
        }
        if (which < 0) {
            *help = *help || strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
            argv[k++] = argv[i];
            continue;
        }
        int rc = take(ctx, which, val);
        if (rc != DP_OK) {
            return rc;
        }
    }
    *argc = k;
    argv[k] = NULL;
    return DP_OK;
}

void dp_cli_on_stop_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

void dp_cli_help_or_error(int rank, int rc, void (*help)(FILE *))
{
    if (rank != 0) {
        return;
    }
    if (rc == DP_OK) {
        help(stdout);
    } else {
        dp_cli_error(dp_errmsg());
    }
}
