/* use.c: dp_eval_job and dp_predict_job: a trained model (model file or checkpoint) run on
 * the rows of a split of a dataset. Reads like the jobs: load the model and its saved
 * configuration, choose the loss, load the data, choose the rows, check the model fits
 * them; then evaluate, or compute this rank's share of the outputs, sum the shares and
 * write them on rank 0. Every part ends in an agreement over the ranks. */
#define _GNU_SOURCE
#include "dptrain/use.h"
#include "job_internal.h"

#include "dptrain/blas.h"
#include "dptrain/ckpt.h"
#include "dptrain/err.h"
#include "dptrain/io.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const split_names[] = {"test", "train", "val"};

const char *dp_use_split_name(dp_use_split s)
{
    return (s >= DP_USE_TEST && s <= DP_USE_VAL) ? split_names[s] : "?";
}

int dp_use_split_parse(const char *s)
{
    for (int i = 0; i <= DP_USE_VAL; i++) {
        if (strcmp(s, split_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

void dp_use_defaults(dp_use_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->split = DP_USE_TEST;
    cfg->loss = DP_USE_LOSS_SAVED;
    cfg->eval_batch = DP_USE_EVAL_BATCH_DEFAULT;
}

/* --- reading a model's outputs ----------------------------------------------------------- */

dp_pred_kind dp_pred_kind_of(dp_loss l)
{
    switch (l) {
    case DP_LOSS_CROSS_ENTROPY:
    case DP_LOSS_SPARSE_CCE:
    case DP_LOSS_CCE: return DP_PRED_SOFTMAX;
    case DP_LOSS_BCE_LOGITS: return DP_PRED_SIGMOID;
    case DP_LOSS_BCE_PROBS: return DP_PRED_PROBS;
    default: return DP_PRED_VALUES;
    }
}

const char *dp_pred_kind_name(dp_pred_kind kind)
{
    switch (kind) {
    case DP_PRED_SOFTMAX: return "softmax probabilities";
    case DP_PRED_SIGMOID: return "sigmoid probabilities";
    case DP_PRED_PROBS: return "probabilities (sigmoid output layer)";
    default: return "raw outputs";
    }
}

bool dp_pred_has_labels(dp_pred_kind kind, int k)
{
    return kind == DP_PRED_SOFTMAX || ((kind == DP_PRED_SIGMOID || kind == DP_PRED_PROBS) && k == 1);
}

int32_t dp_pred_transform(dp_pred_kind kind, const float *o, int k, float *p)
{
    int32_t label = -1;
    if (kind == DP_PRED_SOFTMAX) {
        int arg = 0; /* the first maximum, as the loss counts it */
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
    } else if (kind == DP_PRED_SIGMOID) {
        for (int j = 0; j < k; j++) {
            double x = o[j], e = exp(-fabs(x));
            p[j] = (float)(x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e));
        }
        label = k == 1 ? (o[0] > 0.0f) : -1;
    } else {
        memcpy(p, o, (size_t)k * sizeof *p);
        label = (kind == DP_PRED_PROBS && k == 1) ? (o[0] > 0.5f) : -1;
    }
    return label;
}

/* --- the saved configuration and the rows of a split ------------------------------------ */

bool dp_use_saved_cfg(const char *config, dp_run_cfg *run)
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

int dp_use_train_rows(const dp_use_cfg *cfg, const dp_run_cfg *saved, size_t n_train,
                      bool file_order, size_t **rows, size_t *n_rows)
{
    int rc = DP_OK;
    size_t *train_rows = NULL, *val_rows = NULL;
    char *mark = NULL;
    const bool val = cfg->split == DP_USE_VAL;
    const double vf = saved ? saved->train.val_fraction : 0.0;
    *rows = NULL;
    *n_rows = 0;
    if (cfg->split != DP_USE_TRAIN && !val) {
        DP_FAIL(DP_EINVAL, "dp_use_train_rows: split %s is not a part of /train",
                dp_use_split_name(cfg->split));
    }
    if (val && (!saved || vf <= 0.0)) {
        DP_FAIL(DP_EINVAL, "%s: --split val needs the training run's validation hold-out, but "
                           "the saved config %s (trained without --val-fraction)", cfg->model,
                saved ? "has val_fraction 0" : "has no val_fraction");
    }
    if (!saved || vf <= 0.0) {
        *n_rows = n_train; /* no hold-out: every row */
        return DP_OK;
    }
    if (!(vf < 1.0)) {
        DP_FAIL(DP_EFORMAT, "%s: the saved config has val_fraction %g, outside [0, 1)",
                cfg->model, vf);
    }
    const size_t nv = dp_val_count(n_train, (float)vf);
    if (nv == 0 || nv == n_train) {
        DP_FAIL(DP_EINVAL, "%s: val_fraction %g of the %zu rows of %s /train leaves %s",
                cfg->model, vf, n_train, cfg->data,
                nv == 0 ? "no validation row" : "no training row");
    }
    DP_CALLOC(train_rows, n_train);
    DP_CALLOC(val_rows, nv);
    dp_val_split(n_train, (float)vf, saved->train.seed, train_rows, val_rows);
    if (val && file_order) {
        /* the hold-out comes in permutation order */
        size_t j = 0;
        DP_CALLOC(mark, n_train);
        for (size_t i = 0; i < nv; i++) {
            mark[val_rows[i]] = 1;
        }
        for (size_t r = 0; r < n_train; r++) {
            if (mark[r]) {
                val_rows[j++] = r;
            }
        }
    }
    if (val) {
        *rows = val_rows;
        val_rows = NULL;
        *n_rows = nv;
    } else {
        *rows = train_rows;
        train_rows = NULL;
        *n_rows = n_train - nv;
    }
done:
    free(mark);
    free(train_rows);
    free(val_rows);
    return rc;
}

/* --- loading: the model, the loss, the data, the rows ------------------------------------ */

/* A model, a dataset and the rows of one split to run the model on. */
typedef struct {
    const dp_use_cfg *cfg;
    const dp_comm *c;
    int rank;
    dp_use_result *res;
    dp_model *m;
    char *config;        /* the saved configuration ("" if none) */
    dp_ckpt_meta meta;   /* a checkpoint's metadata (zeroed for a model file) */
    dp_run_cfg run;      /* the saved configuration, read (defaults if !has_run) */
    bool has_run;
    dp_dataset *d;
    dp_input_kind input; /* where the rows are: splits, a root /x, a CSV file */
    const dp_split *s;   /* d->train or d->test */
    const char *sname;   /* its group for messages: "/test", "/train", "" (root) */
    size_t *rows;        /* rows of s, or NULL for all of them */
} use_job;

static void use_job_free(use_job *u)
{
    dp_model_free(&u->m);
    dp_dataset_free(&u->d);
    free(u->config);
    dp_ckpt_meta_free(&u->meta);
    free(u->rows);
}

/* Agrees on rc over the ranks. The lowest rank with an error of its own (not DP_EPEER)
 * keeps its message; the others record that it failed. Collective. */
static int agree(use_job *u, int rc)
{
    return dp_job_agree(u->c, rc, NULL, &u->res->failed_rank);
}

/* Loads a model file, or the weights and metadata of a checkpoint (dp_ckpt_load verifies
 * its checksum first); both loaders refuse NaN or infinite values: dptrain never writes
 * them, so they mean a damaged file. */
static int load_model(use_job *u)
{
    int rc = DP_OK;
    const char *path = u->cfg->model;
    if (dp_ckpt_is_checkpoint(path)) {
        DP_TRY(dp_ckpt_load(path, u->cfg->eval_batch, &u->m, NULL, &u->meta));
        if (!(u->config = strdup(u->meta.config_json ? u->meta.config_json : ""))) {
            DP_FAIL(DP_ENOMEM, "out of memory");
        }
    } else {
        DP_TRY(dp_model_load(path, u->cfg->eval_batch, &u->m, &u->config));
    }
    u->has_run = dp_use_saved_cfg(u->config, &u->run);
done:
    return rc;
}

/* The loss: cfg->loss, else the saved config's; the model's output layer must be the one
 * that loss reads. */
static int pick_loss(use_job *u)
{
    const char *from = "--loss";
    dp_loss l;
    if (u->cfg->loss != DP_USE_LOSS_SAVED) {
        if (u->cfg->loss < 0 || u->cfg->loss >= DP_LOSS_COUNT) {
            return dp_err(DP_EINVAL, "loss %d: not a loss", u->cfg->loss);
        }
        l = (dp_loss)u->cfg->loss;
    } else if (u->has_run) {
        l = u->run.train.loss;
        from = "the saved config's \"loss\"";
    } else {
        return dp_err(DP_EINVAL, "%s: the saved config names no loss (a file without \"loss\" "
                                 "in its config attribute): give --loss", u->cfg->model);
    }
    const dp_model_cfg *mc = dp_model_config(u->m);
    dp_act want = dp_loss_output_act(l), have = mc->act[mc->n_layers - 1];
    if (want != have) {
        return dp_err(DP_EINVAL, "%s: %s %s reads a %s output layer, but the model's last "
                                 "layer is %s", u->cfg->model, from, dp_loss_name(l),
                      dp_act_name(want), dp_act_name(have));
    }
    u->res->loss = l;
    return DP_OK;
}

/* The rows of the split: all of /test; /train without the hold-out; the hold-out. */
static int pick_rows(use_job *u, bool file_order)
{
    int rc = DP_OK;
    const dp_use_cfg *cfg = u->cfg;
    const dp_split *tr = &u->d->train;
    dp_use_result *res = u->res;
    if (u->input != DP_INPUT_SPLITS) {
        /* One set of rows, no splits: the root's /x, or a CSV file. */
        const bool csv = u->input == DP_INPUT_CSV;
        if (cfg->split != DP_USE_TEST) {
            DP_FAIL(DP_EINVAL, "--split %s: %s %s, not /train and /test splits: leave --split "
                               "out", dp_use_split_name(cfg->split), cfg->data,
                    csv ? "is a CSV file of feature rows" : "holds its rows at the root (/x)");
        }
        u->s = &u->d->test;
        u->sname = "";
        res->n_rows = u->d->test.n;
        snprintf(res->where, sizeof res->where, "%s (%zu rows)", csv ? "CSV" : "/x", res->n_rows);
        return DP_OK;
    }
    if (cfg->split == DP_USE_TEST) {
        if (u->d->test.n == 0) {
            DP_FAIL(DP_EINVAL, "%s has no /test split (use --split train or val)", cfg->data);
        }
        u->s = &u->d->test;
        u->sname = "/test";
        res->n_rows = u->d->test.n;
        snprintf(res->where, sizeof res->where, "/test (%zu rows)", res->n_rows);
        return DP_OK;
    }
    const char *sn = dp_use_split_name(cfg->split);
    if (tr->n == 0) {
        DP_FAIL(DP_EINVAL, "%s has no /train split (--split %s needs it; use --split test)",
                cfg->data, sn);
    }
    u->s = tr;
    u->sname = "/train";
    if (u->meta.train_fingerprint && !dp_split_fingerprint_matches(tr, u->meta.train_fingerprint)) {
        DP_FAIL(DP_EINVAL, "%s /train is not the data %s was trained on (%s: %llu rows, "
                           "fingerprint %016llx): --split %s would not be the training run's "
                           "rows", cfg->data, cfg->model,
                u->meta.data_path ? u->meta.data_path : "?",
                (unsigned long long)u->meta.train_rows,
                (unsigned long long)u->meta.train_fingerprint, sn);
    }
    DP_TRY(dp_use_train_rows(cfg, u->has_run ? &u->run : NULL, tr->n, file_order, &u->rows,
                             &res->n_rows));
    if (!u->rows) {
        snprintf(res->where, sizeof res->where, "/train (%zu rows)", res->n_rows);
    } else if (cfg->split == DP_USE_VAL) {
        snprintf(res->where, sizeof res->where, "/train validation hold-out (%zu rows; "
                 "val_fraction %g, seed %llu)", res->n_rows, (double)u->run.train.val_fraction,
                 (unsigned long long)u->run.train.seed);
    } else {
        snprintf(res->where, sizeof res->where, "/train without the validation hold-out "
                 "(%zu rows)", res->n_rows);
    }
done:
    return rc;
}

/* Checks that the model's inputs and outputs fit the rows u->s of the data; data without
 * y fits predict (features only) and not eval. */
static int check_fit(const use_job *u, bool predict)
{
    const dp_model_cfg *mc = dp_model_config(u->m);
    const dp_split *s = u->s;
    const char *model = u->cfg->model, *data = u->cfg->data, *sname = u->sname;
    const dp_loss l = u->res->loss;
    const char *ln = dp_loss_name(l);
    const int k = mc->sizes[mc->n_layers], n_classes = u->d->n_classes;
    const int inputs = dp_model_cfg_inputs(mc);
    if (inputs != s->n_features && u->input == DP_INPUT_CSV) {
        return dp_err(DP_EINVAL, "%s takes %d inputs but %s has %d columns (features) per row",
                      model, inputs, data, s->n_features);
    }
    if (inputs != s->n_features) {
        return dp_err(DP_EINVAL, "%s takes %d inputs but %s %s/x has %d features per row",
                      model, inputs, data, sname, s->n_features);
    }
    if (!s->labels && !s->values) {
        if (predict) {
            return DP_OK; /* features only: nothing to check the outputs against */
        }
        if (u->input == DP_INPUT_CSV) {
            return dp_err(DP_EINVAL, "eval needs true labels or targets, but %s is a CSV file "
                                     "of feature rows (dptrain predict runs on features alone)",
                          data);
        }
        return dp_err(DP_EINVAL, "eval needs true labels or targets, but %s has %s/x and no "
                                 "%s/y (dptrain predict runs on features alone)", data, sname,
                      sname);
    }
    if (dp_loss_needs_labels(l) && !s->labels) {
        return dp_err(DP_EINVAL, "loss %s needs integer class labels, but %s %s/y holds float "
                                 "targets", ln, data, sname);
    }
    if (dp_loss_needs_values(l) && !s->values) {
        return dp_err(DP_EINVAL, "loss %s needs float targets, but %s %s/y holds integer class "
                                 "labels", ln, data, sname);
    }
    if (s->labels && dp_loss_needs_labels(l) && k != n_classes) {
        return dp_err(DP_EINVAL, "%s has %d outputs but %s has %d classes", model, k, data,
                      n_classes);
    }
    if (!dp_loss_needs_labels(l) && !dp_loss_needs_values(l) && s->labels &&
        (k != 1 || n_classes != 2)) {
        return dp_err(DP_EINVAL, "loss %s on integer labels needs 0/1 labels and a model with "
                                 "1 output, but %s has %d classes and %s has %d outputs", ln,
                      data, n_classes, model, k);
    }
    if (s->values && k != s->n_targets) {
        return dp_err(DP_EINVAL, "%s has %d outputs but %s %s/y has %d targets per row", model,
                      k, data, sname, s->n_targets);
    }
    return DP_OK;
}

/* Everything eval and predict need, on every rank; the outcome is agreed. Collective. */
static int use_load(use_job *u, bool predict)
{
    const dp_use_cfg *cfg = u->cfg;
    int rc = DP_OK;
    if (!cfg->model || !cfg->data || (predict && !cfg->output) || cfg->eval_batch < 1) {
        rc = dp_err(DP_EINVAL, "%s: the model, the data%s and an eval batch >= 1 are required",
                    predict ? "predict" : "eval", predict ? ", the output" : "");
    }
    if (rc == DP_OK) {
        rc = load_model(u);
    }
    if (rc == DP_OK) {
        rc = pick_loss(u);
    }
    if (rc == DP_OK) {
        rc = dp_dataset_load_inputs(cfg->data, &u->d, &u->input);
    }
    if (rc == DP_OK) {
        rc = pick_rows(u, predict);
    }
    if (rc == DP_OK) {
        rc = check_fit(u, predict);
    }
    if (rc == DP_OK) {
        const dp_model_cfg *mc = dp_model_config(u->m);
        u->res->n_outputs = mc->sizes[mc->n_layers];
        u->res->outputs = dp_pred_kind_of(u->res->loss);
    }
    return agree(u, rc);
}

static void use_begin(use_job *u, const dp_use_cfg *cfg, const dp_comm *c, dp_use_result *res)
{
    memset(u, 0, sizeof *u);
    memset(res, 0, sizeof *res);
    res->failed_rank = -1;
    res->eval.accuracy = NAN;
    u->cfg = cfg;
    u->c = c;
    u->rank = dp_comm_rank(c);
    u->res = res;
}

/* --- eval ----------------------------------------------------------------------------- */

int dp_eval_job(const dp_use_cfg *cfg, const dp_comm *c, dp_use_result *res)
{
    use_job u;
    use_begin(&u, cfg, c, res);
    int rc = use_load(&u, false);
    if (rc == DP_OK) {
        rc = dp_evaluate(u.m, res->loss, u.s, u.rows, res->n_rows, cfg->eval_batch, c,
                         &res->eval);
        rc = agree(&u, rc);
    }
    use_job_free(&u);
    return rc;
}

/* A number, or null if it is NaN or infinite; at most 10 significant digits (dumped with
 * JSON_REAL_PRECISION(10)). */
static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

char *dp_eval_json(const dp_use_cfg *cfg, const dp_use_result *res)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:o, s:o}", "model", cfg->model, "data",
                          cfg->data, "split", dp_use_split_name(cfg->split), "rows",
                          (json_int_t)res->eval.n, "loss_name", dp_loss_name(res->loss), "loss",
                          jnum(res->eval.loss), "accuracy", jnum(res->eval.accuracy));
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(o);
    return s;
}

/* --- predict -------------------------------------------------------------------------- */

/* This rank's contiguous share of the rows through the model, into buf: probabilities
 * (or values) at buf[row * k] and the label (as a float: exact below 2^24) at
 * buf[n * k + row]; everything else stays zero, so the sum over the ranks is the whole.
 * The share is whole blocks of eb rows starting at multiples of eb, and the caller runs
 * one BLAS thread: OpenBLAS's result for a row depends on the row's place in the matrix
 * product and on the thread count (measured: Haswell and SkylakeX kernels), so only the
 * same blocks on the same thread count give the same bytes at any N. */
static int predict_share(const use_job *u, float *buf)
{
    int rc = DP_OK;
    const int k = u->res->n_outputs, eb = u->cfg->eval_batch;
    const dp_pred_kind kind = u->res->outputs;
    const size_t n = u->res->n_rows;
    size_t lo = 0, hi = 0, *idx = NULL;
    float *x = NULL;
    dp_shard_rows((n + (size_t)eb - 1) / (size_t)eb, u->rank, dp_comm_size(u->c), &lo, &hi);
    lo *= (size_t)eb;
    hi = hi * (size_t)eb < n ? hi * (size_t)eb : n;
    DP_CALLOC(idx, eb);
    DP_CALLOC(x, (size_t)eb * u->s->n_features);
    for (size_t r0 = lo; r0 < hi; r0 += (size_t)eb) {
        int nb = (int)(hi - r0 < (size_t)eb ? hi - r0 : (size_t)eb);
        for (int i = 0; i < nb; i++) {
            idx[i] = u->rows ? u->rows[r0 + (size_t)i] : r0 + (size_t)i;
        }
        DP_TRY(dp_split_gather(u->s, idx, nb, x, NULL, NULL));
        const float *out = dp_model_forward(u->m, x, nb);
        if (!out) {
            DP_FAIL(DP_EINVAL, "predict: %s", dp_errmsg());
        }
        for (int i = 0; i < nb; i++) {
            size_t r = r0 + (size_t)i;
            int32_t label = dp_pred_transform(kind, out + (size_t)i * k, k, buf + r * (size_t)k);
            buf[n * (size_t)k + r] = (float)label;
        }
    }
done:
    free(idx);
    free(x);
    return rc;
}

/* What the HDF5 file's split attribute says the rows are. */
static const char *split_attr(const use_job *u)
{
    switch (u->input) {
    case DP_INPUT_ROOT: return "/x";
    case DP_INPUT_CSV: return "csv";
    default: return dp_use_split_name(u->cfg->split);
    }
}

/* Writes the summed buf (see predict_share) to cfg->output: the outputs, the predicted
 * labels when there are any, the data's true labels when it has them and there are
 * predicted ones, and the row numbers (CSV or HDF5, atomically). Local (rank 0). */
static int write_predictions(const use_job *u, const float *buf)
{
    int rc = DP_OK;
    const dp_use_result *res = u->res;
    const size_t n = res->n_rows;
    const int k = res->n_outputs;
    const bool has_labels = dp_pred_has_labels(res->outputs, k);
    int64_t *rows = NULL;
    int32_t *labels = NULL, *truth = NULL;
    DP_CALLOC(rows, n);
    for (size_t i = 0; i < n; i++) {
        rows[i] = (int64_t)(u->rows ? u->rows[i] : i);
    }
    if (has_labels) {
        DP_CALLOC(labels, n);
        for (size_t i = 0; i < n; i++) {
            labels[i] = (int32_t)buf[n * (size_t)k + i];
        }
    }
    if (has_labels && u->s->labels) {
        DP_CALLOC(truth, n);
        for (size_t i = 0; i < n; i++) {
            truth[i] = u->s->labels[rows[i]];
        }
    }
    dp_predictions p = {.values = buf, .n = n, .k = k, .labels = labels, .rows = rows,
                        .true_labels = truth,
                        .column = res->outputs == DP_PRED_VALUES ? "y" : "p",
                        .first_column = (has_labels && k == 1) ? 1 : 0, /* p1 = P(class 1) */
                        .attrs = {{"model", u->cfg->model}, {"data", u->cfg->data},
                                  {"split", split_attr(u)}, {"loss", dp_loss_name(res->loss)},
                                  {"outputs", dp_pred_kind_name(res->outputs)}},
                        .n_attrs = 5};
    rc = dp_predictions_save(u->cfg->output, &p);
done:
    free(rows);
    free(labels);
    free(truth);
    return rc;
}

int dp_predict_job(const dp_use_cfg *cfg, const dp_comm *c, dp_use_result *res)
{
    use_job u;
    float *buf = NULL;
    use_begin(&u, cfg, c, res);
    const int threads = dp_blas_get_threads();
    int rc = use_load(&u, true);
    if (rc == DP_OK) {
        /* Every rank holds the whole (n, k) array plus n labels; a failure is agreed before
         * the sum, so no rank is left in it. */
        const size_t n = res->n_rows, nk = n * (size_t)res->n_outputs;
        buf = calloc(nk + n ? nk + n : 1, sizeof *buf);
        rc = buf ? DP_OK
                 : dp_err(DP_ENOMEM, "out of memory for %zu x %d predictions (%zu bytes)", n,
                          res->n_outputs, (nk + n) * sizeof *buf);
        if (rc == DP_OK) {
            dp_blas_set_threads(1); /* see predict_share */
            rc = predict_share(&u, buf);
            dp_blas_set_threads(threads);
        }
        rc = agree(&u, rc);
        if (rc == DP_OK) {
            rc = agree(&u, dp_comm_allreduce_sum_f32(c, buf, nk + n));
        }
    }
    if (rc == DP_OK) {
        rc = agree(&u, u.rank == 0 ? write_predictions(&u, buf) : DP_OK);
    }
    free(buf);
    use_job_free(&u);
    return rc;
}
