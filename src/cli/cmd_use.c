/* cmd_use.c: `dptrain eval`, `dptrain predict` and `dptrain info`: using a trained model file
 * or a checkpoint: its loss and accuracy on a dataset split, its outputs for every row of a
 * split (HDF5 or CSV), and what the file holds. Each runs alone or under mpirun: every rank
 * does its share, rank 0 prints and writes, errors are agreed and printed once. */
#define _GNU_SOURCE
#include "cli.h"

#include "dptrain/blas.h"
#include "dptrain/ckpt.h"
#include "dptrain/err.h"
#include "dptrain/io.h"
#include "dptrain/train.h"

#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define EVAL_BATCH_DEFAULT 1000

/* ---------------------------------------------------------------------------------------
 * Shared: MPI start-up, agreement on errors, the saved configuration. */

/* The saved run configuration of a model or checkpoint (its "config" attribute, written by
 * dp_run_cfg_to_json) into *run; false if there is none or it cannot be read (then *run
 * holds the defaults). Files of dptrain before the typed configuration hold a flat object:
 * its "loss", "val_fraction", "seed" and "plateau_factor" are taken from it. */
static bool saved_run(const char *config, dp_run_cfg *run)
{
    dp_run_defaults(run);
    if (!config || !config[0]) {
        return false;
    }
    if (dp_run_cfg_from_json(config, "config", run) == DP_OK) {
        return true;
    }
    dp_run_defaults(run);
    json_t *o = json_loads(config, 0, NULL);
    const char *loss = json_string_value(json_object_get(o, "loss"));
    json_t *vf = json_object_get(o, "val_fraction"), *seed = json_object_get(o, "seed"),
           *pf = json_object_get(o, "plateau_factor");
    bool ok = loss && dp_loss_parse(loss) >= 0 && json_is_number(vf) && json_is_integer(seed);
    if (ok) {
        run->train.loss = (dp_loss)dp_loss_parse(loss);
        run->train.val_fraction = (float)json_number_value(vf);
        run->train.seed = (uint64_t)json_integer_value(seed);
        run->train.plateau_factor = json_is_number(pf) ? (float)json_number_value(pf) : 0.0f;
    }
    json_decref(o);
    return ok;
}

/* s as a JSON string, quoted and escaped. */
static void json_print_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            fprintf(f, "\\%c", *p);
        } else if (*p < 0x20) {
            fprintf(f, "\\u%04x", *p);
        } else {
            fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* A number, or null if it is NaN or infinite. */
static void json_print_num(FILE *f, double v)
{
    if (isfinite(v)) {
        fprintf(f, "%.10g", v);
    } else {
        fprintf(f, "null");
    }
}

/* Loads a model file, or the weights and metadata of a checkpoint (dp_ckpt_load verifies
 * its checksum first; *meta is filled for a checkpoint, zeroed otherwise); both loaders
 * refuse NaN or infinite values: dptrain never writes them, so they mean a damaged file. *config
 * receives the saved configuration ("" if none). Local. */
static int load_model(const char *path, int max_batch, dp_model **m, char **config,
                      dp_ckpt_meta *meta)
{
    int rc = DP_OK;
    memset(meta, 0, sizeof *meta);
    if (dp_ckpt_is_checkpoint(path)) {
        DP_TRY(dp_ckpt_load(path, max_batch, m, NULL, meta));
        if (!(*config = strdup(meta->config_json ? meta->config_json : ""))) {
            DP_FAIL(DP_ENOMEM, "out of memory");
        }
    } else {
        DP_TRY(dp_model_load(path, max_batch, m, config));
    }
done:
    if (rc != DP_OK) {
        dp_model_free(m);
        free(*config);
        *config = NULL;
        dp_ckpt_meta_free(meta);
        memset(meta, 0, sizeof *meta);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * eval and predict: options, and the rows of a split the model is run on. */

typedef enum { SPLIT_TEST = 0, SPLIT_TRAIN, SPLIT_VAL } split_kind;
static const char *const split_names[] = {"test", "train", "val"};

typedef struct {
    const char *model, *data, *output, *loss;
    split_kind split;
    int eval_batch;
    bool json;
    bool help;
} use_opts;

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
            EVAL_BATCH_DEFAULT);
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
    int rc = DP_OK, c;
    long v = 0;
    memset(o, 0, sizeof *o);
    o->eval_batch = EVAL_BATCH_DEFAULT;
    opterr = 0;
    optind = 0; /* glibc: 0 also resets getopt's state from an earlier parse (1 does not) */
    while ((c = getopt_long(argc, argv, ":h", predict ? predict_opts : eval_opts, NULL)) != -1) {
        switch (c) {
        case O_CKPT: o->model = optarg; break;
        case O_DATA: o->data = optarg; break;
        case O_OUTPUT: o->output = optarg; break;
        case O_LOSS: o->loss = optarg; break;
        case O_JSON: o->json = true; break;
        case O_SPLIT:
            if (strcmp(optarg, "test") == 0) {
                o->split = SPLIT_TEST;
            } else if (strcmp(optarg, "train") == 0) {
                o->split = SPLIT_TRAIN;
            } else if (strcmp(optarg, "val") == 0) {
                o->split = SPLIT_VAL;
            } else {
                DP_FAIL(DP_EINVAL, "--split: unknown split '%s' (test, train or val)", optarg);
            }
            break;
        case O_EVAL_BATCH:
            DP_TRY(dp_parse_int("--eval-batch", optarg, 1, 1L << 20, &v));
            o->eval_batch = (int)v;
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
    if (!o->model) {
        DP_FAIL(DP_EINVAL, "%s: --checkpoint FILE is required (see dptrain %s --help)", cmd, cmd);
    }
    if (!o->data) {
        DP_FAIL(DP_EINVAL, "%s: --data FILE is required (see dptrain %s --help)", cmd, cmd);
    }
    if (predict && !o->output) {
        DP_FAIL(DP_EINVAL, "predict: --output FILE is required (see dptrain predict --help)");
    }
    if (o->loss && dp_loss_parse(o->loss) < 0) {
        DP_FAIL(DP_EINVAL, "--loss: unknown loss '%s' (see dptrain %s --help)", o->loss, cmd);
    }
done:
    return rc;
}

/* A model, a dataset and the rows of one split to run the model on. */
typedef struct {
    dp_model *m;
    char *config;      /* the saved configuration ("" if none) */
    dp_ckpt_meta meta; /* a checkpoint's metadata (zeroed for a model file) */
    dp_dataset *d;
    dp_input_kind input; /* where the rows are: splits, a root /x, a CSV file */
    dp_loss loss;
    const dp_split *s; /* d->train or d->test */
    const char *sname; /* its group for messages: "/test", "/train", "" (root) */
    size_t *rows;      /* rows of s, or NULL for all of them */
    size_t n_rows;
    char where[200];   /* "/test (10000 rows)", "/train validation hold-out (...)" */
    dp_run_cfg run;    /* the saved configuration, read (defaults if !has_run) */
    bool has_run;
} use_ctx;

static void use_ctx_free(use_ctx *u)
{
    dp_model_free(&u->m);
    dp_dataset_free(&u->d);
    free(u->config);
    dp_ckpt_meta_free(&u->meta);
    free(u->rows);
    memset(u, 0, sizeof *u);
}

/* The loss: --loss, else the saved config's; and the model's output layer must be the one
 * that loss reads. */
static int pick_loss(const use_opts *o, use_ctx *u)
{
    char name[64];
    const char *from = "--loss";
    int l = -1;
    if (o->loss) {
        l = dp_loss_parse(o->loss);
        snprintf(name, sizeof name, "%s", o->loss);
    } else if (u->has_run) {
        l = (int)u->run.train.loss;
        snprintf(name, sizeof name, "%s", dp_loss_name(u->run.train.loss));
        from = "the saved config's \"loss\"";
    } else {
        return dp_err(DP_EINVAL, "%s: the saved config names no loss (a file without \"loss\" "
                                 "in its config attribute): give --loss", o->model);
    }
    const dp_model_cfg *mc = dp_model_config(u->m);
    dp_act want = dp_loss_output_act((dp_loss)l), have = mc->act[mc->n_layers - 1];
    if (want != have) {
        return dp_err(DP_EINVAL, "%s: %s %s reads a %s output layer, but the model's last "
                                 "layer is %s", o->model, from, name, dp_act_name(want),
                      dp_act_name(have));
    }
    u->loss = (dp_loss)l;
    return DP_OK;
}

/* Checks that the model's inputs and outputs fit the rows u->s of the data; data without
 * y fits predict (features only) and not eval. */
static int check_fit(const use_opts *o, const use_ctx *u, bool predict)
{
    const dp_model_cfg *mc = dp_model_config(u->m);
    const dp_split *s = u->s;
    const char *sname = u->sname;
    const dp_loss l = u->loss;
    const char *ln = dp_loss_name(l);
    int k = mc->sizes[mc->n_layers];
    if (mc->sizes[0] != s->n_features && u->input == DP_INPUT_CSV) {
        return dp_err(DP_EINVAL, "%s takes %d inputs but %s has %d columns (features) per row",
                      o->model, mc->sizes[0], o->data, s->n_features);
    }
    if (mc->sizes[0] != s->n_features) {
        return dp_err(DP_EINVAL, "%s takes %d inputs but %s %s/x has %d features per row",
                      o->model, mc->sizes[0], o->data, sname, s->n_features);
    }
    if (!s->labels && !s->values) {
        if (predict) {
            return DP_OK; /* features only: nothing to check the outputs against */
        }
        if (u->input == DP_INPUT_CSV) {
            return dp_err(DP_EINVAL, "eval needs true labels or targets, but %s is a CSV file "
                                     "of feature rows (dptrain predict runs on features alone)",
                          o->data);
        }
        return dp_err(DP_EINVAL, "eval needs true labels or targets, but %s has %s/x and no "
                                 "%s/y (dptrain predict runs on features alone)", o->data,
                      sname, sname);
    }
    if (dp_loss_needs_labels(l) && !s->labels) {
        return dp_err(DP_EINVAL, "loss %s needs integer class labels, but %s %s/y holds float "
                                 "targets", ln, o->data, sname);
    }
    if (dp_loss_needs_values(l) && !s->values) {
        return dp_err(DP_EINVAL, "loss %s needs float targets, but %s %s/y holds integer class "
                                 "labels", ln, o->data, sname);
    }
    if (s->labels && dp_loss_needs_labels(l) && k != u->d->n_classes) {
        return dp_err(DP_EINVAL, "%s has %d outputs but %s has %d classes", o->model, k,
                      o->data, u->d->n_classes);
    }
    if (!dp_loss_needs_labels(l) && !dp_loss_needs_values(l) && s->labels &&
        (k != 1 || u->d->n_classes != 2)) {
        return dp_err(DP_EINVAL, "loss %s on integer labels needs 0/1 labels and a model with "
                                 "1 output, but %s has %d classes and %s has %d outputs", ln,
                      o->data, u->d->n_classes, o->model, k);
    }
    if (s->values && k != s->n_targets) {
        return dp_err(DP_EINVAL, "%s has %d outputs but %s %s/y has %d targets per row",
                      o->model, k, o->data, sname, s->n_targets);
    }
    return DP_OK;
}

/* The rows of the split: all of /test; /train without the hold-out; the hold-out. The
 * hold-out is the training run's: dp_val_split with the saved seed and val_fraction. */
static int pick_rows(const use_opts *o, use_ctx *u, bool sorted)
{
    int rc = DP_OK;
    size_t *train_rows = NULL, *val_rows = NULL;
    double vf = 0.0;
    const dp_split *tr = &u->d->train;
    if (u->input != DP_INPUT_SPLITS) {
        /* One set of rows, no splits: the root's /x, or a CSV file. */
        const bool csv = u->input == DP_INPUT_CSV;
        if (o->split != SPLIT_TEST) {
            DP_FAIL(DP_EINVAL, "--split %s: %s %s, not /train and /test splits: leave --split "
                               "out", split_names[o->split], o->data,
                    csv ? "is a CSV file of feature rows" : "holds its rows at the root (/x)");
        }
        u->s = &u->d->test;
        u->sname = "";
        u->n_rows = u->d->test.n;
        snprintf(u->where, sizeof u->where, "%s (%zu rows)", csv ? "CSV" : "/x", u->n_rows);
        return DP_OK;
    }
    if (o->split == SPLIT_TEST) {
        if (u->d->test.n == 0) {
            DP_FAIL(DP_EINVAL, "%s has no /test split (use --split train or val)", o->data);
        }
        u->s = &u->d->test;
        u->sname = "/test";
        u->n_rows = u->d->test.n;
        snprintf(u->where, sizeof u->where, "/test (%zu rows)", u->n_rows);
        return DP_OK;
    }
    if (tr->n == 0) {
        DP_FAIL(DP_EINVAL, "%s has no /train split (--split %s needs it; use --split test)",
                o->data, split_names[o->split]);
    }
    u->s = tr;
    u->sname = "/train";
    if (u->meta.train_fingerprint && u->meta.train_fingerprint != dp_split_fingerprint(tr)) {
        DP_FAIL(DP_EINVAL, "%s /train is not the data %s was trained on (%s: %llu rows, "
                           "fingerprint %016llx): --split %s would not be the training run's "
                           "rows", o->data, o->model, u->meta.data_path ? u->meta.data_path : "?",
                (unsigned long long)u->meta.train_rows,
                (unsigned long long)u->meta.train_fingerprint, split_names[o->split]);
    }
    const bool has_vf = u->has_run;
    vf = u->run.train.val_fraction;
    if (o->split == SPLIT_VAL && (!has_vf || vf <= 0.0)) {
        DP_FAIL(DP_EINVAL, "%s: --split val needs the training run's validation hold-out, but "
                           "the saved config %s (trained without --val-fraction)", o->model,
                has_vf ? "has val_fraction 0" : "has no val_fraction");
    }
    if (!has_vf || vf <= 0.0) {
        u->n_rows = tr->n;
        snprintf(u->where, sizeof u->where, "/train (%zu rows)", u->n_rows);
        return DP_OK;
    }
    if (!(vf < 1.0)) {
        DP_FAIL(DP_EFORMAT, "%s: the saved config has val_fraction %g, outside [0, 1)", o->model,
                vf);
    }
    const uint64_t seed_u = u->run.train.seed;
    size_t nv = dp_val_count(tr->n, (float)vf);
    if (nv == 0 || nv == tr->n) {
        DP_FAIL(DP_EINVAL, "%s: val_fraction %g of the %zu rows of %s /train leaves %s", o->model,
                vf, tr->n, o->data, nv == 0 ? "no validation row" : "no training row");
    }
    DP_CALLOC(train_rows, tr->n);
    DP_CALLOC(val_rows, nv);
    dp_val_split(tr->n, (float)vf, seed_u, train_rows, val_rows);
    if (o->split == SPLIT_VAL) {
        u->rows = val_rows;
        val_rows = NULL;
        u->n_rows = nv;
        snprintf(u->where, sizeof u->where, "/train validation hold-out (%zu rows; "
                 "val_fraction %g, seed %llu)", nv, vf, (unsigned long long)seed_u);
    } else {
        u->rows = train_rows;
        train_rows = NULL;
        u->n_rows = tr->n - nv;
        snprintf(u->where, sizeof u->where, "/train without the validation hold-out (%zu rows)",
                 u->n_rows);
    }
    if (sorted && o->split == SPLIT_VAL) {
        /* predict writes rows in file order; the hold-out comes in permutation order. */
        char *mark = NULL;
        size_t j = 0;
        DP_CALLOC(mark, tr->n);
        for (size_t i = 0; i < u->n_rows; i++) {
            mark[u->rows[i]] = 1;
        }
        for (size_t r = 0; r < tr->n; r++) {
            if (mark[r]) {
                u->rows[j++] = r;
            }
        }
        free(mark);
    }
done:
    free(train_rows);
    free(val_rows);
    return rc;
}

/* Everything eval and predict need, on every rank; the outcome is agreed. Collective. */
static int use_load(const use_opts *o, use_ctx *u, bool predict, const dp_comm *c)
{
    int rc = load_model(o->model, o->eval_batch, &u->m, &u->config, &u->meta);
    u->has_run = rc == DP_OK && saved_run(u->config, &u->run);
    if (rc == DP_OK) {
        rc = pick_loss(o, u);
    }
    if (rc == DP_OK) {
        rc = dp_dataset_load_inputs(o->data, &u->d, &u->input);
    }
    if (rc == DP_OK) {
        rc = pick_rows(o, u, predict);
    }
    if (rc == DP_OK) {
        rc = check_fit(o, u, predict);
    }
    return dp_cli_agree(c, rc, "");
}

/* What eval and predict begin with, after MPI is up: BLAS threads, the options (printing
 * the help or the usage error on rank 0), then the model, the data and the rows. Returns
 * the agreed status; o->help set means the help was printed. Collective. */
static int use_begin(int argc, char **argv, bool predict, const dp_comm *c, use_opts *o,
                     use_ctx *u)
{
    dp_blas_set_threads(dp_cli_auto_threads(dp_comm_local_size(c)));
    int rc = parse_use(argc, argv, predict, o);
    if (rc != DP_OK || o->help) {
        if (dp_comm_rank(c) == 0) {
            if (rc == DP_OK) {
                use_help(stdout, predict);
            } else {
                dp_cli_error(dp_errmsg());
            }
        }
        return rc;
    }
    return use_load(o, u, predict, c);
}

int dp_cmd_eval(int argc, char **argv)
{
    int rc = DP_OK, status = DP_OK;
    dp_comm *c = NULL;
    use_opts o;
    use_ctx u;
    dp_eval_result res;
    memset(&u, 0, sizeof u);
    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    const bool root = dp_comm_rank(c) == 0;
    if ((status = use_begin(argc, argv, false, c, &o, &u)) != DP_OK || o.help) {
        goto out;
    }
    rc = dp_evaluate(u.m, u.loss, u.s, u.rows, u.n_rows, o.eval_batch, c, &res);
    if ((status = dp_cli_agree(c, rc, "")) != DP_OK) {
        goto out;
    }
    if (root) {
        if (o.json) {
            printf("{\"model\":");
            json_print_str(stdout, o.model);
            printf(",\"data\":");
            json_print_str(stdout, o.data);
            printf(",\"split\":\"%s\",\"rows\":%zu,\"loss_name\":\"%s\",\"loss\":",
                   split_names[o.split], res.n, dp_loss_name(u.loss));
            json_print_num(stdout, res.loss);
            printf(",\"accuracy\":");
            json_print_num(stdout, res.accuracy);
            printf("}\n");
        } else {
            printf("eval: %s on %s %s: loss %.4f", o.model, o.data, u.where, res.loss);
            if (isfinite(res.accuracy)) {
                printf(" accuracy %.4f", res.accuracy);
            }
            printf("\n");
        }
        fflush(stdout);
    }
out:
    use_ctx_free(&u);
    dp_comm_free(&c);
    dp_dist_finalize();
    return dp_cli_exit_code(status);
}

/* ---------------------------------------------------------------------------------------
 * predict */

typedef enum { OUT_SOFTMAX, OUT_SIGMOID, OUT_PROBS, OUT_VALUES } out_kind;

static out_kind output_kind(dp_loss l)
{
    switch (l) {
    case DP_LOSS_CROSS_ENTROPY:
    case DP_LOSS_SPARSE_CCE:
    case DP_LOSS_CCE: return OUT_SOFTMAX;
    case DP_LOSS_BCE_LOGITS: return OUT_SIGMOID;
    case DP_LOSS_BCE_PROBS: return OUT_PROBS;
    default: return OUT_VALUES;
    }
}

/* Row r (k outputs) of the model into probabilities (or values) p (k) and its label
 * (-1 if none): argmax of the outputs for softmax losses (the first maximum, as the loss
 * counts it), output > 0 (logits) or > 0.5 (probabilities) for one binary output. */
static int32_t transform_row(out_kind kind, const float *o, int k, float *p)
{
    int32_t label = -1;
    if (kind == OUT_SOFTMAX) {
        int arg = 0;
        for (int j = 1; j < k; j++) {
            arg = o[j] > o[arg] ? j : arg;
        }
        double sum = 0.0;
        for (int j = 0; j < k; j++) {
            sum += exp((double)o[j] - o[arg]);
        }
        for (int j = 0; j < k; j++) {
            p[j] = (float)(exp((double)o[j] - o[arg]) / sum);
        }
        label = arg;
    } else if (kind == OUT_SIGMOID) {
        for (int j = 0; j < k; j++) {
            double x = o[j], e = exp(-fabs(x));
            p[j] = (float)(x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e));
        }
        label = k == 1 ? (o[0] > 0.0f) : -1;
    } else {
        memcpy(p, o, (size_t)k * sizeof *p);
        label = (kind == OUT_PROBS && k == 1) ? (o[0] > 0.5f) : -1;
    }
    return label;
}

static const char *out_kind_name(out_kind kind)
{
    switch (kind) {
    case OUT_SOFTMAX: return "softmax probabilities";
    case OUT_SIGMOID: return "sigmoid probabilities";
    case OUT_PROBS: return "probabilities (sigmoid output layer)";
    default: return "raw outputs";
    }
}

/* What the HDF5 file's split attribute says the rows are. */
static const char *split_attr(const use_opts *o, const use_ctx *u)
{
    switch (u->input) {
    case DP_INPUT_ROOT: return "/x";
    case DP_INPUT_CSV: return "csv";
    default: return split_names[o->split];
    }
}

/* Writes pred (n, k), the predicted labels (n, or NULL), the data's true labels when it has
 * them and there are predicted ones, and the row numbers to o->output (CSV or HDF5,
 * atomically). Local (rank 0). */
static int write_predictions(const use_opts *o, const use_ctx *u, out_kind kind, size_t n,
                             int k, const float *pred, const int32_t *labels)
{
    int rc = DP_OK;
    int64_t *rows = NULL;
    int32_t *truth = NULL;
    DP_CALLOC(rows, n);
    for (size_t i = 0; i < n; i++) {
        rows[i] = (int64_t)(u->rows ? u->rows[i] : i);
    }
    if (labels && u->s->labels) {
        DP_CALLOC(truth, n);
        for (size_t i = 0; i < n; i++) {
            truth[i] = u->s->labels[rows[i]];
        }
    }
    dp_predictions p = {.values = pred, .n = n, .k = k, .labels = labels, .rows = rows,
                        .true_labels = truth,
                        .column = kind == OUT_VALUES ? "y" : "p",
                        .first_column = (labels && k == 1) ? 1 : 0, /* p1 = P(class 1) */
                        .attrs = {{"model", o->model}, {"data", o->data},
                                  {"split", split_attr(o, u)},
                                  {"loss", dp_loss_name(u->loss)},
                                  {"outputs", out_kind_name(kind)}},
                        .n_attrs = 5};
    rc = dp_predictions_save(o->output, &p);
done:
    free(rows);
    free(truth);
    return rc;
}

/* This rank's contiguous share of the rows through the model, into buf: probabilities
 * (or values) at buf[row * k] and the label (as a float: exact below 2^24) at
 * buf[n * k + row]; everything else stays zero, so the sum over the ranks is the whole.
 * The share is whole blocks of eb rows starting at multiples of eb, and the caller runs
 * one BLAS thread: OpenBLAS's result for a row depends on the row's place in the matrix
 * product and on the thread count (measured: Haswell and SkylakeX kernels), so only the
 * same blocks on the same thread count give the same bytes at any N. */
static int predict_share(const use_opts *o, const use_ctx *u, out_kind kind, float *buf,
                         const dp_comm *c)
{
    int rc = DP_OK;
    const dp_model_cfg *mc = dp_model_config(u->m);
    const int k = mc->sizes[mc->n_layers], eb = o->eval_batch;
    const size_t n = u->n_rows;
    size_t lo = 0, hi = 0, *idx = NULL;
    float *x = NULL;
    dp_shard_rows((n + (size_t)eb - 1) / (size_t)eb, dp_comm_rank(c), dp_comm_size(c), &lo, &hi);
    lo *= (size_t)eb;
    hi = hi * (size_t)eb < n ? hi * (size_t)eb : n;
    DP_CALLOC(idx, eb);
    DP_CALLOC(x, (size_t)eb * u->s->n_features);
    for (size_t r0 = lo; r0 < hi; r0 += (size_t)eb) {
        int nb = (int)(hi - r0 < (size_t)eb ? hi - r0 : (size_t)eb);
        for (int i = 0; i < nb; i++) {
            idx[i] = u->rows ? u->rows[r0 + (size_t)i] : r0 + (size_t)i;
        }
        dp_split_gather(u->s, idx, nb, x, NULL, NULL);
        const float *out = dp_model_forward(u->m, x, nb);
        for (int i = 0; i < nb; i++) {
            size_t r = r0 + (size_t)i;
            int32_t label = transform_row(kind, out + (size_t)i * k, k, buf + r * (size_t)k);
            buf[n * (size_t)k + r] = (float)label;
        }
    }
done:
    free(idx);
    free(x);
    return rc;
}

int dp_cmd_predict(int argc, char **argv)
{
    int rc = DP_OK, status = DP_OK;
    dp_comm *c = NULL;
    use_opts o;
    use_ctx u;
    float *buf = NULL;
    int32_t *labels = NULL;
    memset(&u, 0, sizeof u);
    if (dp_cli_start(&argc, &argv, &c) != DP_OK) {
        return DP_EXIT_ERROR;
    }
    const bool root = dp_comm_rank(c) == 0;
    if ((status = use_begin(argc, argv, true, c, &o, &u)) != DP_OK || o.help) {
        goto out;
    }
    const dp_model_cfg *mc = dp_model_config(u.m);
    const int k = mc->sizes[mc->n_layers];
    const size_t n = u.n_rows;
    const out_kind kind = output_kind(u.loss);
    const bool has_labels = kind == OUT_SOFTMAX || ((kind == OUT_SIGMOID || kind == OUT_PROBS) && k == 1);
    /* Every rank holds the whole (n, k) array plus n labels; a failure is agreed before the
     * sum, so no rank is left in it. */
    buf = calloc(n * (size_t)k + n, sizeof *buf);
    rc = buf ? DP_OK
             : dp_err(DP_ENOMEM, "out of memory for %zu x %d predictions (%zu bytes)", n, k,
                      (n * (size_t)k + n) * sizeof *buf);
    if (rc == DP_OK) {
        dp_blas_set_threads(1); /* see predict_share */
        rc = predict_share(&o, &u, kind, buf, c);
    }
    if ((status = dp_cli_agree(c, rc, "")) != DP_OK) {
        goto out;
    }
    rc = dp_comm_allreduce_sum_f32(c, buf, n * (size_t)k + n);
    if ((status = dp_cli_agree(c, rc, "")) != DP_OK) {
        goto out;
    }
    rc = DP_OK;
    if (root) {
        if (has_labels) {
            labels = malloc((n ? n : 1) * sizeof *labels);
            if (!labels) {
                rc = dp_err(DP_ENOMEM, "out of memory for %zu labels", n);
            }
            for (size_t i = 0; labels && i < n; i++) {
                labels[i] = (int32_t)buf[n * (size_t)k + i];
            }
        }
        if (rc == DP_OK) {
            rc = write_predictions(&o, &u, kind, n, k, buf, labels);
        }
    }
    if ((status = dp_cli_agree(c, rc, "")) != DP_OK) {
        goto out;
    }
    if (root) {
        printf("predict: wrote %zu rows x %d to %s\n", n, k, o.output);
        fflush(stdout);
    }
out:
    free(buf);
    free(labels);
    use_ctx_free(&u);
    dp_comm_free(&c);
    dp_dist_finalize();
    return dp_cli_exit_code(status);
}

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

/* What info reports: the model, its configuration and, for a checkpoint, the state. */
typedef struct {
    const char *path;
    bool is_ckpt;
    int format_version;
    dp_model *m;
    char *config;      /* owned unless it is meta.config_json */
    dp_train_state st;
    dp_ckpt_meta meta;
} info_ctx;

static int info_load(info_ctx *x)
{
    int rc = DP_OK;
    x->is_ckpt = dp_ckpt_is_checkpoint(x->path);
    if (x->is_ckpt) {
        DP_TRY(dp_ckpt_load(x->path, 1, &x->m, &x->st, &x->meta));
    } else {
        DP_TRY(load_model(x->path, 1, &x->m, &x->config, &x->meta));
    }
    x->format_version = dp_model_format_version(x->path);
done:
    return rc;
}

static void info_free(info_ctx *x)
{
    dp_model_free(&x->m);
    free(x->config);
    dp_train_state_free(&x->st);
    dp_ckpt_meta_free(&x->meta);
}

/* torch's name of optimizer slot i, or "slot<i>" if the state's optimizer has no such slot. */
static const char *slot_name(const info_ctx *x, int i, char *buf, size_t cap)
{
    const char *s = dp_optim_n_slots(&x->st.opt) == x->st.n_slots
                        ? dp_optim_slot_name(&x->st.opt, i) : NULL;
    if (!s) {
        snprintf(buf, cap, "slot%d", i);
        s = buf;
    }
    return s;
}

static void time_text(int64_t t, char *buf, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0) {
        snprintf(buf, cap, "%lld", (long long)t);
    }
}

/* " train loss 0.1234 acc 0.9" for the finite fields of one metrics record. */
static void print_figure(FILE *f, const char *name, double v)
{
    if (isfinite(v)) {
        fprintf(f, " %s %.4f", name, v);
    }
}

static void info_text(FILE *f, const info_ctx *x)
{
    const dp_model_cfg *mc = dp_model_config(x->m);
    const char *cfg = x->is_ckpt ? x->meta.config_json : x->config;
    bool any_bn = false;
    fprintf(f, "file: %s\n", x->path);
    fprintf(f, "format: %s, layout version %d\n",
            x->is_ckpt ? "dptrain-checkpoint" : "dptrain-model", x->format_version);
    fprintf(f, "layers: ");
    for (int i = 0; i <= mc->n_layers; i++) {
        fprintf(f, "%s%d", i ? " -> " : "", mc->sizes[i]);
    }
    fprintf(f, " (%d dense layer%s, %zu parameters)\n", mc->n_layers, mc->n_layers == 1 ? "" : "s",
            dp_model_n_params(x->m));
    for (int i = 0; i < mc->n_layers; i++) {
        fprintf(f, "  layer %d: %d -> %d  %s", i + 1, mc->sizes[i], mc->sizes[i + 1],
                dp_act_name(mc->act[i]));
        if (mc->dropout[i] > 0.0f) {
            fprintf(f, "  dropout %g", mc->dropout[i]);
        }
        if (mc->batchnorm[i]) {
            fprintf(f, "  batchnorm");
            any_bn = true;
        }
        fprintf(f, "\n");
    }
    if (any_bn) {
        fprintf(f, "batchnorm: momentum %g, eps %g\n", mc->bn_momentum, mc->bn_eps);
    }
    fprintf(f, "config: %s\n", cfg && cfg[0] ? cfg : "(none)");
    if (!x->is_ckpt) {
        return;
    }
    const dp_train_state *s = &x->st;
    const dp_ckpt_meta *me = &x->meta;
    char when[64], nb[32];
    time_text(me->written_unix, when, sizeof when);
    fprintf(f, "checkpoint: format version %d, written by dptrain %s on %d rank%s, %s\n",
            me->format_version, me->program_version ? me->program_version : "?", me->n_ranks,
            me->n_ranks == 1 ? "" : "s", when);
    fprintf(f, "position: %d epoch%s done, next batch %zu of epoch %d, step %ld, %s\n", s->epoch,
            s->epoch == 1 ? "" : "s", s->next_batch, s->epoch + 1, s->step,
            s->finished ? "finished" : "not finished");
    if (s->seen > 0) {
        fprintf(f, "current epoch: %zu rows seen, running loss %.4f\n", s->seen,
                s->loss_sum / (double)s->seen);
    }
    fprintf(f, "seed: %llu; last learning rate %g\n", (unsigned long long)s->seed, s->lr);
    fprintf(f, "optimizer: %s, %d state array%s of %zu floats", dp_optim_name(s->opt.kind),
            s->n_slots, s->n_slots == 1 ? "" : "s", s->n_params);
    for (int i = 0; i < s->n_slots; i++) {
        fprintf(f, "%s%s", i ? ", " : ": ", slot_name(x, i, nb, sizeof nb));
    }
    if (s->opt.kind == DP_OPT_NADAM) {
        fprintf(f, "; mu_product %.9g", s->opt_scalar);
    }
    fprintf(f, "\n");
    if (!s->best_params) {
        fprintf(f, "early stopping: off\n");
    } else if (s->best_epoch == 0) {
        fprintf(f, "early stopping: no validation loss yet\n");
    } else {
        fprintf(f, "early stopping: best validation loss %.4f at epoch %d (its weights kept), "
                   "%d epoch%s without improvement, %s\n", s->best_val, s->best_epoch,
                s->bad_epochs, s->bad_epochs == 1 ? "" : "s",
                s->stopped_early ? "stopped early" : "not stopped");
    }
    dp_run_cfg run;
    const double pf = saved_run(cfg, &run) ? run.train.plateau_factor : 0.0;
    if (pf == 0.0) {
        fprintf(f, "reduce-on-plateau: off\n");
    } else {
        fprintf(f, "reduce-on-plateau: factor %g, lr factor now %g, best watched loss %.4f, "
                   "%d epoch%s without improvement\n", pf, s->lr_factor, s->plateau_best,
                s->plateau_bad, s->plateau_bad == 1 ? "" : "s");
    }
    fprintf(f, "data: %s: %llu features, train %llu rows (fingerprint %016llx), test %llu "
               "rows (fingerprint %016llx)\n", me->data_path ? me->data_path : "?",
            (unsigned long long)me->n_features, (unsigned long long)me->train_rows,
            (unsigned long long)me->train_fingerprint, (unsigned long long)me->test_rows,
            (unsigned long long)me->test_fingerprint);
    fprintf(f, "history: %d epoch%s\n", s->n_history, s->n_history == 1 ? "" : "s");
    for (int i = 0; i < s->n_history; i++) {
        const dp_epoch_record *r = &s->history[i];
        fprintf(f, "  epoch %d step %ld lr %g", r->epoch, r->step, r->lr);
        print_figure(f, "train loss", r->train_loss);
        print_figure(f, "acc", r->train_accuracy);
        print_figure(f, "val loss", r->val_loss);
        print_figure(f, "acc", r->val_accuracy);
        print_figure(f, "test loss", r->test_loss);
        print_figure(f, "acc", r->test_accuracy);
        fprintf(f, "\n");
    }
}

static void json_key_num(FILE *f, const char *key, double v)
{
    fprintf(f, ",\"%s\":", key);
    json_print_num(f, v);
}

static void info_json(FILE *f, const info_ctx *x)
{
    const dp_model_cfg *mc = dp_model_config(x->m);
    const char *cfg = x->is_ckpt ? x->meta.config_json : x->config;
    fprintf(f, "{\"file\":");
    json_print_str(f, x->path);
    fprintf(f, ",\"format\":\"%s\",\"format_version\":%d,\"sizes\":[",
            x->is_ckpt ? "dptrain-checkpoint" : "dptrain-model", x->format_version);
    for (int i = 0; i <= mc->n_layers; i++) {
        fprintf(f, "%s%d", i ? "," : "", mc->sizes[i]);
    }
    fprintf(f, "],\"layers\":[");
    for (int i = 0; i < mc->n_layers; i++) {
        fprintf(f, "%s{\"in\":%d,\"out\":%d,\"activation\":\"%s\",\"dropout\":%g,"
                   "\"batchnorm\":%s}", i ? "," : "", mc->sizes[i], mc->sizes[i + 1],
                dp_act_name(mc->act[i]), mc->dropout[i], mc->batchnorm[i] ? "true" : "false");
    }
    fprintf(f, "],\"n_params\":%zu,\"bn_momentum\":%g,\"bn_eps\":%g,\"config\":",
            dp_model_n_params(x->m), mc->bn_momentum, mc->bn_eps);
    size_t cl = cfg ? strlen(cfg) : 0;
    if (cl >= 2 && cfg[0] == '{' && cfg[cl - 1] == '}') {
        fputs(cfg, f); /* the saved configuration is already a JSON object */
    } else if (cl > 0) {
        json_print_str(f, cfg);
    } else {
        fputs("null", f);
    }
    if (x->is_ckpt) {
        const dp_train_state *s = &x->st;
        const dp_ckpt_meta *me = &x->meta;
        char nb[32];
        fprintf(f, ",\"checkpoint\":{\"format_version\":%d,\"program_version\":",
                me->format_version);
        json_print_str(f, me->program_version ? me->program_version : "");
        fprintf(f, ",\"n_ranks\":%d,\"written_unix\":%lld,\"seed\":%llu,\"epoch\":%d,"
                   "\"next_batch\":%zu,\"step\":%ld,\"finished\":%s,\"seen\":%zu",
                me->n_ranks, (long long)me->written_unix, (unsigned long long)s->seed, s->epoch,
                s->next_batch, s->step, s->finished ? "true" : "false", s->seen);
        json_key_num(f, "lr", s->lr);
        json_key_num(f, "lr_factor", s->lr_factor);
        fprintf(f, ",\"optimizer\":\"%s\",\"slots\":[", dp_optim_name(s->opt.kind));
        for (int i = 0; i < s->n_slots; i++) {
            fprintf(f, "%s\"%s\"", i ? "," : "", slot_name(x, i, nb, sizeof nb));
        }
        fprintf(f, "]");
        json_key_num(f, "opt_scalar", s->opt_scalar);
        json_key_num(f, "best_val", s->best_val);
        fprintf(f, ",\"best_epoch\":%d,\"bad_epochs\":%d,\"stopped_early\":%s,"
                   "\"best_weights_kept\":%s", s->best_epoch, s->bad_epochs,
                s->stopped_early ? "true" : "false", s->best_params ? "true" : "false");
        json_key_num(f, "plateau_best", s->plateau_best);
        fprintf(f, ",\"plateau_bad\":%d,\"data\":{\"path\":", s->plateau_bad);
        json_print_str(f, me->data_path ? me->data_path : "");
        fprintf(f, ",\"n_features\":%llu,\"train_rows\":%llu,\"test_rows\":%llu,"
                   "\"train_fingerprint\":\"%016llx\",\"test_fingerprint\":\"%016llx\"},"
                   "\"history\":[", (unsigned long long)me->n_features,
                (unsigned long long)me->train_rows, (unsigned long long)me->test_rows,
                (unsigned long long)me->train_fingerprint,
                (unsigned long long)me->test_fingerprint);
        for (int i = 0; i < s->n_history; i++) {
            const dp_epoch_record *r = &s->history[i];
            fprintf(f, "%s{\"epoch\":%d,\"step\":%ld", i ? "," : "", r->epoch, r->step);
            json_key_num(f, "lr", r->lr);
            json_key_num(f, "train_loss", r->train_loss);
            json_key_num(f, "train_accuracy", r->train_accuracy);
            json_key_num(f, "val_loss", r->val_loss);
            json_key_num(f, "val_accuracy", r->val_accuracy);
            json_key_num(f, "test_loss", r->test_loss);
            json_key_num(f, "test_accuracy", r->test_accuracy);
            json_key_num(f, "samples_per_s", r->samples_per_s);
            json_key_num(f, "seconds", r->seconds);
            fprintf(f, "}");
        }
        fprintf(f, "]}");
    }
    fprintf(f, "}\n");
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
    info_ctx x;
    memset(&x, 0, sizeof x);
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
        if (root) {
            if (rc == DP_OK) {
                info_help(stdout);
            } else {
                dp_cli_error(dp_errmsg());
            }
        }
        status = rc;
        goto out;
    }
    /* Rank 0 reads and prints; the others learn whether it could. */
    x.path = argv[optind];
    rc = root ? info_load(&x) : DP_OK;
    if ((status = dp_cli_agree(c, rc, "")) != DP_OK) {
        goto out;
    }
    if (root) {
        if (json) {
            info_json(stdout, &x);
        } else {
            info_text(stdout, &x);
        }
        fflush(stdout);
    }
out:
    info_free(&x);
    dp_comm_free(&c);
    dp_dist_finalize();
    return dp_cli_exit_code(status);
}
