/* main.c: the dptrain program: picks OpenBLAS kernels before anything loads work onto
 * them, then dispatches to a subcommand. */
#include "cli.h"

#include "dptrain/blas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef DPTRAIN_VERSION
#define DPTRAIN_VERSION "dev"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "dptrain %s: data-parallel neural-network training (MPI + OpenBLAS + HDF5)\n"
            "\n"
            "usage: mpirun -np N dptrain train --data FILE.h5 --layers 784,256,128,10 [options]\n"
            "       dptrain <command> [options]\n"
            "\n"
            "commands:\n"
            "  train     train an MLP, data-parallel over the MPI ranks (run under mpirun)\n"
            "  convert   turn IDX (MNIST-style) or CSV files into a dptrain HDF5 dataset\n"
            "  synth     write a synthetic dataset (spirals, line, blobs) for tests and demos\n"
            "  compare   compare the parameters of two model files within a tolerance\n"
            "  eval      loss and accuracy of a model or checkpoint on a dataset split\n"
            "  predict   write a model's predictions for a dataset split (HDF5 or CSV)\n"
            "  info      what a model file or checkpoint holds\n"
            "  bench     time the training step (samples/s, phases, ceiling, allreduce)\n"
            "  plot      draw runs' training curves (metrics.jsonl) into a PNG with gnuplot\n"
            "  sweep     train many configurations in groups of ranks; rank by validation\n"
            "  lr-find   the learning-rate range test: loss against an exponentially growing\n"
            "            rate, and the rate to train with\n"
            "\n"
            "'dptrain <command> --help' lists a command's options with their defaults.\n"
            "\n"
            "environment:\n"
            "  DPTRAIN_BLAS_CORETYPE=auto|off|NAME  OpenBLAS kernel choice (default auto: if\n"
            "      OpenBLAS fell back to slower kernels than this CPU supports, dptrain sets\n"
            "      OPENBLAS_CORETYPE and restarts itself once; off: leave it; NAME: use it).\n"
            "      An OPENBLAS_CORETYPE already set by the user is always respected.\n"
            "  DPTRAIN_MPI_LOCAL=auto|off  Open MPI transport (default auto: a job whose\n"
            "      ranks mpirun placed on one node, or a process started alone, uses Open\n"
            "      MPI's ob1 over shared memory, skipping UCX's 0.2 s probe of network devices;\n"
            "      off: leave Open MPI's choice). A pml chosen by the user (--mca pml X) is\n"
            "      always respected.\n"
            "  DPTRAIN_GEMM=auto|onednn|openblas  the dense layers' matrix products (default\n"
            "      auto: oneDNN's matmul from 2^20 multiply-adds when built with oneDNN,\n"
            "      OpenBLAS below; the choice is by shape, so runs repeat bit for bit)\n"
            "  DPTRAIN_CONV=auto|onednn|im2col  the convolutions (default auto: oneDNN's\n"
            "      blocked-layout kernels when built with it, else im2col + OpenBLAS)\n"
            "  A resume must run with the same kernels to give the same bits.\n",
            DPTRAIN_VERSION);
}

/* The program's name as the user started it (argv[0]'s last component), for the process
 * name after a re-exec. */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Executes this program again with the same arguments, through its real path so that the
 * process keeps its name (execv("/proc/self/exe") would name every rank "exe" in ps, top and
 * pgrep); /proc/self/exe only when the real path cannot be read. Returns only on failure. */
static void reexec_self(char **argv)
{
    char path[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", path, sizeof path - 1);
    if (len > 0) {
        path[len] = '\0';
        execv(path, argv);
    }
    execv("/proc/self/exe", argv);
}

/* After a re-exec the kernel names the process after the file executed; give it back the
 * name it was started with (what ps -o comm, top and pgrep show), in case the real path's
 * file name differs (a symlink, or the /proc/self/exe fallback). */
static void keep_name(char **argv)
{
    if (getenv("DPTRAIN_BLAS_REEXEC") && argv[0] && argv[0][0] != '\0') {
        prctl(PR_SET_NAME, base_name(argv[0]), 0, 0, 0); /* truncated to 15 bytes, as exec does */
    }
}

/* OpenBLAS reads OPENBLAS_CORETYPE only when it loads, so choosing better kernels means
 * setting it and executing ourselves again, before MPI starts. Runs at most once.
 * DPTRAIN_TEST_REEXEC=1 (a test hook) restarts once even when the kernels need no change,
 * keeping them as they are, so the whole test suite can run through the re-exec path on
 * any CPU. */
static void blas_preflight(char **argv)
{
    const char *mode = getenv("DPTRAIN_BLAS_CORETYPE");
    const char *test = getenv("DPTRAIN_TEST_REEXEC");
    const char *current = dp_blas_corename();
    const char *want = NULL;
    if (getenv("DPTRAIN_BLAS_REEXEC")) {
        return;
    }
    if (getenv("OPENBLAS_CORETYPE") || (mode && strcmp(mode, "off") == 0)) {
        want = NULL;
    } else if (!mode || strcmp(mode, "auto") == 0 || mode[0] == '\0') {
        want = dp_blas_better_coretype(current, dp_cpu_detect());
    } else if (strcmp(mode, current) != 0) {
        want = mode;
    }
    if (!want && test && strcmp(test, "1") == 0) {
        want = getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : current;
    }
    if (!want) {
        return;
    }
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("DPTRAIN_BLAS_REEXEC", current, 1); /* remembers what OpenBLAS chose itself */
    reexec_self(argv);
    /* exec failed: go on with the slow kernels rather than not at all, and say so. */
    fprintf(stderr, "dptrain: warning: could not restart with OPENBLAS_CORETYPE=%s; "
                    "running on OpenBLAS's %s kernels\n", want, current);
    unsetenv("OPENBLAS_CORETYPE");
}

int main(int argc, char **argv)
{
    keep_name(argv);
    blas_preflight(argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return argc < 2 ? DP_EXIT_USAGE : DP_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("dptrain %s\n", DPTRAIN_VERSION);
        return DP_EXIT_OK;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"train", dp_cmd_train},
        {"convert", dp_cmd_convert},
        {"synth", dp_cmd_synth},
        {"compare", dp_cmd_compare},
        {"eval", dp_cmd_eval},
        {"predict", dp_cmd_predict},
        {"info", dp_cmd_info},
        {"bench", dp_cmd_bench},
        {"plot", dp_cmd_plot},
        {"sweep", dp_cmd_sweep},
        {"lr-find", dp_cmd_lr_find},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name) == 0) {
            return cmds[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "dptrain: error: unknown command '%s' (commands: train, convert, synth, "
                    "compare, eval, predict, info, bench, plot, sweep, lr-find; see dptrain --help)\n",
            argv[1]);
    return DP_EXIT_USAGE;
}
