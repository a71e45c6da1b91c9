/* cmd_use.c: `dptrain eval`, `dptrain predict` and `dptrain info`: using a trained model file
 * or a checkpoint: its loss and accuracy on a dataset split, its outputs for every row of a
 * split (HDF5 or CSV), and what the file holds. The options, the help and the printing; the
 * work is the library's (dptrain/use.h: dp_eval_job, dp_predict_job, dp_describe_file).
 * Each runs alone or under mpirun: rank 0 prints, errors are printed once. */
#define _GNU_SOURCE
#include "cli.h"

#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/use.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * eval and predict */

static void use_help(FILE *f, bool predict)
{
    if (predict) {
        fprintf(f,
"usage: [mpirun -np N] dptrain predict --checkpoint FILE --data D.h5|D.csv --output P\n"
"                                      [--split test|train|val] [options]\n"
"\n"
"Writes the model's outputs for every row of the data, in row order, to P. The data need\n"
"no labels: an HDF5 dataset (a split's x, with or without y: /test/x, /train/x), an HDF5\n"
"file with its rows at the root (/x [n, ...], optional /y; no --split), or a CSV file of\n"
"feature rows (name ending in .csv or .csv.gz; every column a feature, numbers separated\n"
"by commas, an optional header line, as dptrain convert csv reads them; no --split).\n"
"Layouts: datasets/README.md.\n"
"Classification: probabilities (softmax for cross-entropy and categorical-cross-entropy,\n"
"sigmoid for binary-cross-entropy; binary-cross-entropy-probs outputs them already) and\n"
"the predicted class; regression (mse, rmse, mae): the raw outputs.\n"
"P ending in .csv: a header line, then one line per row: predicted,p0,p1,...\n"
"(classification; predicted = the class with the largest probability), predicted,p1 (one\n"
"binary output; predicted = p1 > 0.5), p0,p1,... (several binary outputs), y0,y1,...\n"
"(regression); a last column true_label (the data's y) when the data has class labels.\n"
"Otherwise HDF5: /predictions float32 [n, k], /labels int32 [n] (the predicted class),\n"
"/true_labels int32 [n] (the data's class labels, when it has them), /rows int64 [n] (the\n"
"row of the data each prediction is for), and string attributes model, data, split (test,\n"
"train, val, /x or csv), loss, outputs. Written atomically (P.tmp.PID, renamed).\n"
"Under mpirun each rank computes a contiguous share of whole blocks of --eval-batch\n"
"rows (blocks start at multiples of --eval-batch) with one BLAS thread; rank 0 writes.\n"
"So every row goes through the same matrix products at any rank count and the output\n"
"is the same bytes for any N (BLAS results depend on a row's place in the block and on\n"
"the thread count).\n"
"\n");
    } else {
        fprintf(f,
"usage: [mpirun -np N] dptrain eval --checkpoint FILE --data D.h5 [--split test|train|val]\n"
"                                   [options]\n"
"\n"
"Mean loss (and accuracy, for classification losses) of a model file or a checkpoint on\n"
"one split of a dataset (or the rows /x, /y at the root of the file), each row counted\n"
"once over the ranks. It needs the true labels or targets (y); predict does not. Prints:\n"
"  eval: FILE on D.h5 /test (10000 rows): loss 0.2985 accuracy 0.8942\n"
"\n");
    }
    fprintf(f,
"  --checkpoint FILE  model file (model.h5) or checkpoint; --model is the same  (required)\n"
"  --data D           dataset; the model's inputs and outputs must fit it       (required)\n");
    if (predict) {
        fprintf(f,
"  --output P         the file to write: P.csv for CSV, anything else HDF5     (required)\n");
    }
    fprintf(f,
"  --split S          test: /test; train: /train without the validation hold-out of the\n"
"                     training run; val: that hold-out, re-created from the saved\n"
"                     config's seed and val_fraction                           [test]\n"
"  --loss NAME        %s: cross-entropy,\n"
"                     categorical-cross-entropy, binary-cross-entropy,\n"
"                     binary-cross-entropy-probs, mse, rmse, mae  [the saved config's]\n"
"  --eval-batch N     rows per forward pass, per rank                          [%d]\n",
            predict ? "the loss the model was trained for (how outputs are read)"
                    : "the loss to report (and how outputs are read)",
            DP_USE_EVAL_BATCH_DEFAULT);
    if (!predict) {
        fprintf(f,
"  --json             print one JSON object instead of the line\n");
    }
    fprintf(f,
"  -h, --help         this text\n"
"\n"
"exit status: 0 done, 1 run-time error (missing or damaged file, a file with no rows\n"
"             to run on, I/O, MPI), 2 usage error (bad option, a model that does not fit\n"
"             the data%s).\n", predict ? ", --split on data without splits" : ", data without y");
}

typedef struct {
    dp_use_cfg cfg;
    bool json;
    bool help;
} use_opts;

static int parse_use(int argc, char **argv, bool predict, use_opts *o)
{
    enum { O_CKPT = 256, O_DATA, O_OUTPUT, O_SPLIT, O_LOSS, O_EVAL_BATCH, O_JSON };
    static const struct option eval_opts[] = {
        {"checkpoint", required_argument, 0, O_CKPT}, {"model", required_argument, 0, O_CKPT},
        {"data", required_argument, 0, O_DATA},       {"split", required_argument, 0, O_SPLIT},
        {"loss", required_argument, 0, O_LOSS},
        {"eval-batch", required_argument, 0, O_EVAL_BATCH},
        {"json", no_argument, 0, O_JSON},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const struct option predict_opts[] = {
        {"checkpoint", required_argument, 0, O_CKPT}, {"model", required_argument, 0, O_CKPT},
        {"data", required_argument, 0, O_DATA},       {"output", required_argument, 0, O_OUTPUT},
        {"split", required_argument, 0, O_SPLIT},     {"loss", required_argument, 0, O_LOSS},
        {"eval-batch", required_argument, 0, O_EVAL_BATCH},
        {"help", no_argument, 0, 'h'},                {0, 0, 0, 0},
    };
    const char *cmd = predict ? "predict" : "eval";
    dp_use_cfg *u = &o->cfg;
    const char *loss = NULL;
    int rc = DP_OK, c, v;
    long n = 0;
    memset(o, 0, sizeof *o);
    dp_use_defaults(u);
    opterr = 0;
    optind = 0; /* glibc: 0 also resets getopt's state from an earlier parse (1 does not) */
    while ((c = getopt_long(argc, argv, ":h", predict ? predict_opts : eval_opts, NULL)) != -1) {
        switch (c) {
        case O_CKPT: u->model = optarg; break;
        case O_DATA: u->data = optarg; break;
        case O_OUTPUT: u->output = optarg; break;
        case O_JSON: o->json = true; break;
        case O_LOSS: loss = optarg; break;
        case O_SPLIT:
            if ((v = dp_use_split_parse(optarg)) < 0) {
                DP_FAIL(DP_EINVAL, "--split: unknown split '%s' (test, train or val)", optarg);
            }
            u->split = (dp_use_split)v;
            break;
        case O_EVAL_BATCH:
            DP_TRY(dp_parse_int("--eval-batch", optarg, 1, 1L << 20, &n));
            u->eval_batch = (int)n;
            break;
        case 'h': o->help = true; return DP_OK;
        case ':': DP_FAIL(DP_EINVAL, "option '%s' needs a value", argv[optind - 1]);
        default:
            DP_FAIL(DP_EINVAL, "%s: unknown option '%s' (see dptrain %s --help)", cmd,
                    argv[optind - 1], cmd);
        }
    }
    if (optind < argc) {
        DP_FAIL(DP_EINVAL, "%s: unexpected argument '%s' (see dptrain %s --help)", cmd,
                argv[optind], cmd);
    }
    if (!u->model) {
        DP_FAIL(DP_EINVAL, "%s: --checkpoint FILE is required (see dptrain %s --help)", cmd, cmd);
    }
    if (!u->data) {
        DP_FAIL(DP_EINVAL, "%s: --data FILE is required (see dptrain %s --help)", cmd, cmd);
    }
    if (predict && !u->output) {
        DP_FAIL(DP_EINVAL, "predict: --output FILE is required (see dptrain predict --help)");
    }
    if (loss && (u->loss = dp_loss_parse(loss)) < 0) {
        DP_FAIL(DP_EINVAL, "--loss: unknown loss '%s' (see dptrain %s --help)", loss, cmd);
    }
done:
    return rc;
}

/* The failing rank's message, printed once (by res->failed_rank); the exit code. */
static int finish(const dp_comm *c, int status, const dp_use_result *res)
{
    if (status != DP_OK && res->failed_rank == dp_comm_rank(c)) {
        if (dp_comm_size(c) > 1) {
            fprintf(stderr, "dptrain: rank %d: error: %s\n", dp_comm_rank(c), dp_errmsg());
        } else {
            dp_cli_error(dp_errmsg());
        }
        fflush(stderr);
    }
    return dp_cli_exit_code(status);
}

/* eval or predict: MPI, BLAS threads, the options (rank 0 prints the help or the usage
 * error), the job, then rank 0 prints its line. */
static int use_cmd(int argc, char **argv, bool predict)
{
    dp_comm *c = NULL;
    use_opts o;
    dp_use_result res = {.failed_rank = -1};
    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    const bool root = dp_comm_rank(c) == 0;
    dp_blas_set_threads(dp_cli_auto_threads(dp_comm_local_size(c)));
    int status = parse_use(argc, argv, predict, &o);
    if (status != DP_OK || o.help) {
        if (root && status == DP_OK) {
            use_help(stdout, predict);
        } else if (root) {
            dp_cli_error(dp_errmsg());
        }
        goto out;
    }
    status = predict ? dp_predict_job(&o.cfg, c, &res) : dp_eval_job(&o.cfg, c, &res);
    if (status != DP_OK || !root) {
        goto out;
    }
    if (predict) {
        printf("predict: wrote %zu rows x %d to %s\n", res.n_rows, res.n_outputs, o.cfg.output);
    } else if (o.json) {
        char *s = dp_eval_json(&o.cfg, &res);
        if (s) {
            printf("%s\n", s);
        } else {
            dp_cli_error("out of memory (eval --json)");
            status = DP_ENOMEM;
        }
        free(s);
    } else {
        printf("eval: %s on %s %s: loss %.4f", o.cfg.model, o.cfg.data, res.where,
               res.eval.loss);
        if (isfinite(res.eval.accuracy)) {
            printf(" accuracy %.4f", res.eval.accuracy);
        }
        printf("\n");
    }
    fflush(stdout);
out:
    status = finish(c, status, &res);
    dp_comm_free(&c);
    dp_dist_finalize();
    return status;
}

int dp_cmd_eval(int argc, char **argv) { return use_cmd(argc, argv, false); }

int dp_cmd_predict(int argc, char **argv) { return use_cmd(argc, argv, true); }

/* ---------------------------------------------------------------------------------------
 * info */

static void info_help(FILE *f)
{
    fprintf(f,
"usage: [mpirun -np N] dptrain info FILE [--json]\n"
"\n"
"What a model file or a checkpoint holds: its format, the layers (sizes, activation,\n"
"dropout, batch norm), the parameter count and the saved configuration. For a checkpoint\n"
"(its checksum is verified first) also: the checkpoint format, the dptrain version and\n"
"the number of ranks that wrote it and when, the position in the run (epoch, step, next\n"
"batch), the optimizer and its state arrays, early-stopping and reduce-on-plateau state,\n"
"the dataset it was trained on (path, rows, features, fingerprints) and the metrics of\n"
"every finished epoch. Under mpirun rank 0 prints.\n"
"  --json      print one JSON object instead of text\n"
"  -h, --help  this text\n"
"\n"
"exit status: 0 done, 1 missing or damaged file, 2 usage error.\n");
}

int dp_cmd_info(int argc, char **argv)
{
    static const struct option lo[] = {
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int rc = DP_OK, status = DP_OK, ch;
    dp_comm *c = NULL;
    bool json = false, help = false;
    char *js = NULL;
    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    dp_blas_set_threads(dp_cli_auto_threads(dp_comm_local_size(c)));
    const bool root = dp_comm_rank(c) == 0;
    opterr = 0;
    optind = 0; /* glibc: 0 also resets getopt's state from an earlier parse (1 does not) */
    while (rc == DP_OK && !help && (ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        switch (ch) {
        case 'j': json = true; break;
        case 'h': help = true; break;
        case ':': rc = dp_err(DP_EINVAL, "option '%s' needs a value", argv[optind - 1]); break;
        default:
            rc = dp_err(DP_EINVAL, "info: unknown option '%s' (see dptrain info --help)",
                        argv[optind - 1]);
        }
    }
    if (rc == DP_OK && !help && argc - optind != 1) {
        rc = dp_err(DP_EINVAL, "info: give one model file or checkpoint (see dptrain info "
                               "--help)");
    }
    if (rc != DP_OK || help) {
        if (root && rc == DP_OK) {
            info_help(stdout);
        } else if (root) {
            dp_cli_error(dp_errmsg());
        }
        status = rc;
        goto out;
    }
    /* Rank 0 reads and prints; the others learn whether it could. */
    rc = root ? dp_describe_file(argv[optind], json ? NULL : stdout, json ? &js : NULL) : DP_OK;
    if ((status = dp_cli_agree(c, rc, "")) == DP_OK && root && json) {
        printf("%s\n", js);
    }
    fflush(stdout);
out:
    free(js);
    dp_comm_free(&c);
    dp_dist_finalize();
    return dp_cli_exit_code(status);
}
