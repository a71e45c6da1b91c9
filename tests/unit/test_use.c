/* test_use.c: using a trained model, the single-process parts: the prediction transform of
 * each output kind against values computed here, the rows of --split train and val against
 * dp_val_split's, the saved configuration (typed and the flat one of earlier files), eval's
 * JSON, and the description of a model file and a checkpoint written here. */
#include "dptrain/ckpt.h"
#include "dptrain/err.h"
#include "dptrain/io.h"
#include "dptrain/use.h"

#include "testutil.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- the prediction transform ------------------------------------------------------------ */

Test(use, kind_of_each_loss)
{
    cr_assert_eq(dp_pred_kind_of(DP_LOSS_CROSS_ENTROPY), DP_PRED_SOFTMAX);
    cr_assert_eq(dp_pred_kind_of(DP_LOSS_SPARSE_CCE), DP_PRED_SOFTMAX);
    cr_assert_eq(dp_pred_kind_of(DP_LOSS_CCE), DP_PRED_SOFTMAX);
    cr_assert_eq(dp_pred_kind_of(DP_LOSS_BCE_LOGITS), DP_PRED_SIGMOID);
    cr_assert_eq(dp_pred_kind_of(DP_LOSS_BCE_PROBS), DP_PRED_PROBS);
    cr_assert_eq(dp_pred_kind_of(DP_LOSS_MSE), DP_PRED_VALUES);
    cr_assert_eq(dp_pred_kind_of(DP_LOSS_RMSE), DP_PRED_VALUES);
    cr_assert_eq(dp_pred_kind_of(DP_LOSS_MAE), DP_PRED_VALUES);
    cr_assert(dp_pred_has_labels(DP_PRED_SOFTMAX, 1));
    cr_assert(dp_pred_has_labels(DP_PRED_SOFTMAX, 5));
    cr_assert(dp_pred_has_labels(DP_PRED_SIGMOID, 1));
    cr_assert_not(dp_pred_has_labels(DP_PRED_SIGMOID, 3));
    cr_assert(dp_pred_has_labels(DP_PRED_PROBS, 1));
    cr_assert_not(dp_pred_has_labels(DP_PRED_PROBS, 2));
    cr_assert_not(dp_pred_has_labels(DP_PRED_VALUES, 1));
    cr_assert_str_eq(dp_pred_kind_name(DP_PRED_SOFTMAX), "softmax probabilities");
    cr_assert_str_eq(dp_pred_kind_name(DP_PRED_VALUES), "raw outputs");
}

Test(use, softmax_probabilities_and_first_maximum)
{
    const float o[4] = {1.0f, 3.0f, -2.5f, 3.0f};
    float p[4];
    cr_assert_eq(dp_pred_transform(DP_PRED_SOFTMAX, o, 4, p), 1, "the first of two maxima");
    double z = 0.0;
    for (int j = 0; j < 4; j++) {
        z += exp((double)o[j]);
    }
    double sum = 0.0;
    for (int j = 0; j < 4; j++) {
        cr_assert_float_eq(p[j], exp((double)o[j]) / z, 1e-7, "p[%d] = %g", j, p[j]);
        sum += p[j];
    }
    cr_assert_float_eq(sum, 1.0, 1e-6);
    /* Large logits: no overflow, no NaN. */
    const float big[3] = {1000.0f, -1000.0f, 999.0f};
    cr_assert_eq(dp_pred_transform(DP_PRED_SOFTMAX, big, 3, p), 0);
    cr_assert_float_eq(p[0], 1.0 / (1.0 + exp(-1.0)), 1e-7);
    cr_assert_float_eq(p[2], exp(-1.0) / (1.0 + exp(-1.0)), 1e-7);
    cr_assert_eq(p[1], 0.0f);
}

Test(use, sigmoid_probabilities_and_threshold)
{
    const float o[5] = {-2.0f, 0.0f, 0.75f, 40.0f, -200.0f};
    float p[5];
    cr_assert_eq(dp_pred_transform(DP_PRED_SIGMOID, o, 5, p), -1, "several outputs: no class");
    for (int j = 0; j < 5; j++) {
        double want = 1.0 / (1.0 + exp(-(double)o[j]));
        cr_assert_float_eq(p[j], want, 1e-7, "p[%d] = %g, want %g", j, p[j], want);
        cr_assert(isfinite(p[j]));
    }
    float one;
    cr_assert_eq(dp_pred_transform(DP_PRED_SIGMOID, &o[0], 1, &one), 0);
    cr_assert_eq(dp_pred_transform(DP_PRED_SIGMOID, &o[1], 1, &one), 0, "0 is not > 0");
    cr_assert_float_eq(one, 0.5, 1e-7);
    cr_assert_eq(dp_pred_transform(DP_PRED_SIGMOID, &o[2], 1, &one), 1);
}

Test(use, probabilities_and_values_are_copied)
{
    const float o[3] = {0.7f, 0.5f, -3.25f};
    float p[3];
    cr_assert_eq(dp_pred_transform(DP_PRED_PROBS, &o[0], 1, p), 1);
    cr_assert_eq(p[0], 0.7f);
    cr_assert_eq(dp_pred_transform(DP_PRED_PROBS, &o[1], 1, p), 0, "0.5 is not > 0.5");
    cr_assert_eq(dp_pred_transform(DP_PRED_PROBS, o, 2, p), -1);
    cr_assert_eq(dp_pred_transform(DP_PRED_VALUES, o, 3, p), -1);
    cr_assert_eq(memcmp(p, o, sizeof o), 0);
}

/* --- the saved configuration and the rows of a split ------------------------------------- */

Test(use, split_names)
{
    cr_assert_eq(dp_use_split_parse("test"), DP_USE_TEST);
    cr_assert_eq(dp_use_split_parse("train"), DP_USE_TRAIN);
    cr_assert_eq(dp_use_split_parse("val"), DP_USE_VAL);
    cr_assert_eq(dp_use_split_parse("dev"), -1);
    cr_assert_str_eq(dp_use_split_name(DP_USE_VAL), "val");
}

static dp_run_cfg saved_with(float vf, uint64_t seed)
{
    dp_run_cfg r;
    dp_run_defaults(&r);
    r.model.n_layers = 2; /* the model of small_model below */
    r.model.sizes[0] = 3;
    r.model.sizes[1] = 4;
    r.model.sizes[2] = 2;
    r.model.act[0] = DP_ACT_TANH;
    r.model.act[1] = DP_ACT_IDENTITY;
    r.train.val_fraction = vf;
    r.train.seed = seed;
    return r;
}

static dp_use_cfg use_cfg(dp_use_split split)
{
    dp_use_cfg c;
    dp_use_defaults(&c);
    c.model = "m.h5";
    c.data = "d.h5";
    c.split = split;
    return c;
}

Test(use, val_rows_are_dp_val_split_rows)
{
    const size_t n = 103;
    const dp_run_cfg saved = saved_with(0.2f, 77);
    const size_t nv = dp_val_count(n, 0.2f);
    size_t *tr = calloc(n, sizeof *tr), *va = calloc(n, sizeof *va);
    cr_assert(tr && va);
    size_t *rows = NULL, n_rows = 0;
    dp_val_split(n, 0.2f, 77, tr, va);

    dp_use_cfg c = use_cfg(DP_USE_VAL);
    cr_assert_eq(dp_use_train_rows(&c, &saved, n, false, &rows, &n_rows), DP_OK, "%s",
                 dp_errmsg());
    cr_assert_eq(n_rows, nv);
    cr_assert_eq(memcmp(rows, va, nv * sizeof *rows), 0, "the hold-out, in dp_val_split's order");
    free(rows);

    /* In file order: the same set, ascending. */
    cr_assert_eq(dp_use_train_rows(&c, &saved, n, true, &rows, &n_rows), DP_OK);
    cr_assert_eq(n_rows, nv);
    for (size_t i = 0; i < nv; i++) {
        cr_assert(i == 0 || rows[i] > rows[i - 1], "ascending at %zu", i);
        bool found = false;
        for (size_t j = 0; j < nv; j++) {
            found = found || va[j] == rows[i];
        }
        cr_assert(found, "row %zu is not in the hold-out", rows[i]);
    }
    free(rows);

    c.split = DP_USE_TRAIN;
    cr_assert_eq(dp_use_train_rows(&c, &saved, n, true, &rows, &n_rows), DP_OK);
    cr_assert_eq(n_rows, n - nv);
    cr_assert_eq(memcmp(rows, tr, (n - nv) * sizeof *rows), 0, "the training rows");
    free(rows);

    /* Another seed, another hold-out. */
    const dp_run_cfg other = saved_with(0.2f, 78);
    c.split = DP_USE_VAL;
    cr_assert_eq(dp_use_train_rows(&c, &other, n, false, &rows, &n_rows), DP_OK);
    cr_assert_neq(memcmp(rows, va, nv * sizeof *rows), 0);
    free(rows);
    free(tr);
    free(va);
}

Test(use, train_rows_without_a_hold_out_and_refusals)
{
    size_t *rows = (size_t *)1, n_rows = 0;
    dp_use_cfg c = use_cfg(DP_USE_TRAIN);
    const dp_run_cfg none = saved_with(0.0f, 1);
    cr_assert_eq(dp_use_train_rows(&c, NULL, 50, false, &rows, &n_rows), DP_OK);
    cr_assert_null(rows, "every row");
    cr_assert_eq(n_rows, 50);
    cr_assert_eq(dp_use_train_rows(&c, &none, 50, false, &rows, &n_rows), DP_OK);
    cr_assert_null(rows);

    c.split = DP_USE_VAL;
    cr_assert_eq(dp_use_train_rows(&c, NULL, 50, false, &rows, &n_rows), DP_EINVAL);
    cr_assert(strstr(dp_errmsg(), "m.h5: --split val needs") &&
              strstr(dp_errmsg(), "has no val_fraction"), "%s", dp_errmsg());
    cr_assert_eq(dp_use_train_rows(&c, &none, 50, false, &rows, &n_rows), DP_EINVAL);
    cr_assert(strstr(dp_errmsg(), "has val_fraction 0"), "%s", dp_errmsg());
    const dp_run_cfg whole = saved_with(1.0f, 1);
    cr_assert_eq(dp_use_train_rows(&c, &whole, 50, false, &rows, &n_rows), DP_EFORMAT);
    cr_assert(strstr(dp_errmsg(), "outside [0, 1)"), "%s", dp_errmsg());
    const dp_run_cfg tiny = saved_with(0.001f, 1);
    cr_assert_eq(dp_use_train_rows(&c, &tiny, 50, false, &rows, &n_rows), DP_EINVAL);
    cr_assert(strstr(dp_errmsg(), "of the 50 rows of d.h5 /train leaves no validation row"), "%s",
              dp_errmsg());
    c.split = DP_USE_TEST;
    cr_assert_eq(dp_use_train_rows(&c, &tiny, 50, false, &rows, &n_rows), DP_EINVAL);
}

Test(use, saved_config_typed_and_flat)
{
    dp_run_cfg want = saved_with(0.3f, 12345), got;
    want.train.loss = DP_LOSS_MAE;
    want.train.plateau_factor = 0.5f;
    char *js = dp_run_cfg_to_json(&want, "test");
    cr_assert_not_null(js);
    cr_assert(dp_use_saved_cfg(js, &got));
    cr_assert_eq(got.train.loss, DP_LOSS_MAE);
    cr_assert_eq(got.train.val_fraction, 0.3f);
    cr_assert_eq(got.train.seed, 12345);
    cr_assert_eq(got.train.plateau_factor, 0.5f);
    free(js);

    /* The flat object of files written before the typed configuration. */
    cr_assert(dp_use_saved_cfg("{\"loss\":\"mse\",\"val_fraction\":0.25,\"seed\":9,"
                               "\"plateau_factor\":0.5,\"lr\":0.1}", &got));
    cr_assert_eq(got.train.loss, DP_LOSS_MSE);
    cr_assert_eq(got.train.val_fraction, 0.25f);
    cr_assert_eq(got.train.seed, 9);
    cr_assert_eq(got.train.plateau_factor, 0.5f);

    dp_run_cfg def;
    dp_run_defaults(&def);
    cr_assert_not(dp_use_saved_cfg("", &got));
    cr_assert_not(dp_use_saved_cfg(NULL, &got));
    cr_assert_not(dp_use_saved_cfg("{\"loss\":\"nope\",\"val_fraction\":0.2,\"seed\":1}", &got));
    cr_assert_not(dp_use_saved_cfg("not json", &got));
    cr_assert_eq(got.train.val_fraction, def.train.val_fraction, "the defaults");
    cr_assert_eq(got.train.loss, def.train.loss);
}

/* --- eval's JSON ------------------------------------------------------------------------- */

Test(use, eval_json)
{
    dp_use_cfg c = use_cfg(DP_USE_VAL);
    c.model = "runs/a \"quoted\"\\model.h5";
    dp_use_result r = {.failed_rank = -1, .loss = DP_LOSS_CROSS_ENTROPY,
                       .eval = {.loss = 0.123456789012, .accuracy = 0.875, .n = 120}};
    char *s = dp_eval_json(&c, &r);
    cr_assert_not_null(s);
    cr_assert_null(strchr(s, '\n'));
    cr_assert(strncmp(s, "{\"model\":", 9) == 0, "%s", s);
    json_error_t err;
    json_t *o = json_loads(s, 0, &err);
    cr_assert_not_null(o, "%s: %s", s, err.text);
    cr_assert_str_eq(json_string_value(json_object_get(o, "model")), c.model);
    cr_assert_str_eq(json_string_value(json_object_get(o, "data")), "d.h5");
    cr_assert_str_eq(json_string_value(json_object_get(o, "split")), "val");
    cr_assert_eq(json_integer_value(json_object_get(o, "rows")), 120);
    cr_assert_str_eq(json_string_value(json_object_get(o, "loss_name")), "cross-entropy");
    cr_assert_eq(json_real_value(json_object_get(o, "loss")), 0.123456789, "10 digits: %s", s);
    cr_assert_eq(json_real_value(json_object_get(o, "accuracy")), 0.875);
    json_decref(o);
    free(s);

    r.eval.accuracy = NAN; /* regression */
    s = dp_eval_json(&c, &r);
    o = json_loads(s, 0, &err);
    cr_assert_not_null(o, "%s", s);
    cr_assert(json_is_null(json_object_get(o, "accuracy")), "%s", s);
    json_decref(o);
    free(s);
}

/* --- describing a file ------------------------------------------------------------------- */

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/use_%ld_%s", DP_TEST_TMPDIR, (long)getpid(), name);
}

static dp_model *small_model(void)
{
    dp_model_cfg mc = {.n_layers = 2, .sizes = {3, 4, 2}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY},
                       .init = DP_INIT_XAVIER_UNIFORM, .seed = 7, .max_batch = 4};
    mc.dropout[0] = 0.25f;
    mc.batchnorm[0] = true;
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&mc, &m), DP_OK, "%s", dp_errmsg());
    tfill(dp_model_params(m), dp_model_n_params(m), -1.0f, 1.0f, 11);
    return m;
}

/* dp_describe_file's text (malloc'd) and JSON (parsed). */
static char *describe(const char *path, json_t **js)
{
    char *text = NULL, *json = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cr_assert_eq(dp_describe_file(path, f, NULL), DP_OK, "%s", dp_errmsg());
    fclose(f);
    cr_assert_eq(dp_describe_file(path, NULL, &json), DP_OK, "%s", dp_errmsg());
    cr_assert_not_null(json);
    json_error_t err;
    *js = json_loads(json, 0, &err);
    cr_assert_not_null(*js, "%s: %s", json, err.text);
    free(json);
    return text;
}

Test(use, describe_model_file)
{
    char path[512], line[160];
    tmp_path(path, sizeof path, "model.h5");
    dp_model *m = small_model();
    const size_t np = dp_model_n_params(m);
    dp_run_cfg run = saved_with(0.2f, 5);
    char *cfg = dp_run_cfg_to_json(&run, "test");
    cr_assert_eq(dp_model_save(m, path, cfg), DP_OK, "%s", dp_errmsg());

    json_t *js = NULL;
    char *text = describe(path, &js);
    cr_assert(strstr(text, "format: dptrain-model"), "%s", text);
    snprintf(line, sizeof line,
             "layers: 3,4:tanh:dropout=0.25:bn,2:identity (2 layers, %zu parameters)\n", np);
    cr_assert(strstr(text, line), "%s", text);
    /* 3*4 + 4 + 2*4 (gamma, beta) = 24; 4*2 + 2 = 10 */
    cr_assert(strstr(text, "  1    dense              4                      24  tanh batchnorm "
                           "dropout 0.25\n"), "%s", text);
    cr_assert(strstr(text, "  2    dense              2                      10  identity\n"),
              "%s", text);
    cr_assert(strstr(text, "batchnorm: momentum 0.1, eps 1e-05\n"), "%s", text);
    cr_assert(strstr(text, "\"val_fraction\":0.2"), "%s", text);
    cr_assert_null(strstr(text, "checkpoint:"), "a model file has no training state");

    cr_assert_str_eq(json_string_value(json_object_get(js, "file")), path);
    cr_assert_str_eq(json_string_value(json_object_get(js, "format")), "dptrain-model");
    json_t *sizes = json_object_get(js, "sizes");
    cr_assert_eq(json_array_size(sizes), 3);
    cr_assert_eq(json_integer_value(json_array_get(sizes, 0)), 3);
    cr_assert_eq(json_integer_value(json_array_get(sizes, 2)), 2);
    cr_assert_eq((size_t)json_integer_value(json_object_get(js, "n_params")), np);
    json_t *l0 = json_array_get(json_object_get(js, "layers"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(l0, "activation")), "tanh");
    cr_assert_eq(json_real_value(json_object_get(l0, "dropout")), 0.25);
    cr_assert(json_is_true(json_object_get(l0, "batchnorm")));
    cr_assert_eq(json_real_value(json_object_get(js, "bn_momentum")), 0.1, "shortest: 0.1");
    /* The saved configuration is an object, the one that was saved. */
    json_t *c = json_object_get(js, "config");
    cr_assert(json_is_object(c));
    json_t *saved = json_loads(cfg, 0, NULL);
    cr_assert(json_equal(c, saved), "the saved configuration comes back unchanged");
    cr_assert_null(json_object_get(js, "checkpoint"));
    json_decref(saved);
    json_decref(js);
    free(text);

    /* No configuration: null; one that is not a JSON object: a string. */
    cr_assert_eq(dp_model_save(m, path, NULL), DP_OK, "%s", dp_errmsg());
    text = describe(path, &js);
    cr_assert(strstr(text, "config: (none)\n"), "%s", text);
    cr_assert(json_is_null(json_object_get(js, "config")));
    json_decref(js);
    free(text);
    cr_assert_eq(dp_model_save(m, path, "lr=0.1"), DP_OK, "%s", dp_errmsg());
    text = describe(path, &js);
    cr_assert_str_eq(json_string_value(json_object_get(js, "config")), "lr=0.1");
    json_decref(js);
    free(text);

    free(cfg);
    dp_model_free(&m);
    unlink(path);
}

Test(use, describe_checkpoint)
{
    char path[512], line[200];
    tmp_path(path, sizeof path, "ckpt.h5");
    dp_model *m = small_model();
    dp_optim_cfg opt;
    dp_optim_defaults(DP_OPT_ADAM, &opt);
    dp_train_state st;
    cr_assert_eq(dp_train_state_init(&st, &opt, dp_model_n_params(m), dp_model_n_buffers(m), 42,
                                     5, false), DP_OK, "%s", dp_errmsg());
    st.epoch = 2;
    st.step = 10;
    st.history[0] = (dp_epoch_record){.epoch = 1, .step = 5, .lr = 0.001, .train_loss = 0.5,
                                      .train_accuracy = 0.75, .val_loss = NAN,
                                      .val_accuracy = NAN, .test_loss = 0.625,
                                      .test_accuracy = 0.5, .samples_per_s = 100, .seconds = 1};
    st.n_history = 1;
    dp_run_cfg run = saved_with(0.0f, 42);
    char *cfg = dp_run_cfg_to_json(&run, "test");
    dp_ckpt_meta meta = {.config_json = cfg, .data_path = "data.h5", .train_fingerprint = 0xabc,
                         .test_fingerprint = 0xdef, .train_rows = 80, .test_rows = 20,
                         .n_features = 3, .n_ranks = 3, .program_version = "9.9.9"};
    cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_OK, "%s", dp_errmsg());

    json_t *js = NULL;
    char *text = describe(path, &js);
    cr_assert(strstr(text, "format: dptrain-checkpoint"), "%s", text);
    cr_assert(strstr(text, "checkpoint: format version 1, written by dptrain 9.9.9 on 3 ranks"),
              "%s", text);
    cr_assert(strstr(text, "position: 2 epochs done, next batch 0 of epoch 3, step 10, not "
                           "finished\n"), "%s", text);
    snprintf(line, sizeof line, "optimizer: adam, 2 state arrays of %zu floats: %s, %s\n",
             dp_model_n_params(m), dp_optim_slot_name(&opt, 0), dp_optim_slot_name(&opt, 1));
    cr_assert(strstr(text, line), "want '%s' in %s", line, text);
    cr_assert(strstr(text, "data: data.h5: 3 features, train 80 rows (fingerprint "
                           "0000000000000abc), test 20 rows"), "%s", text);
    cr_assert(strstr(text, "  epoch 1 step 5 lr 0.001 train loss 0.5000 acc 0.7500 test loss "
                           "0.6250 acc 0.5000\n"), "%s", text);

    json_t *ck = json_object_get(js, "checkpoint");
    cr_assert(json_is_object(ck));
    cr_assert_eq(json_integer_value(json_object_get(ck, "n_ranks")), 3);
    cr_assert_eq(json_integer_value(json_object_get(ck, "step")), 10);
    cr_assert_eq(json_integer_value(json_object_get(ck, "seed")), 42);
    cr_assert_eq(json_array_size(json_object_get(ck, "slots")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ck, "data"),
                                                       "train_fingerprint")), "0000000000000abc");
    json_t *h = json_array_get(json_object_get(ck, "history"), 0);
    cr_assert_eq(json_real_value(json_object_get(h, "test_loss")), 0.625);
    cr_assert(json_is_null(json_object_get(h, "val_loss")), "NaN is null");
    json_decref(js);
    free(text);

    /* A damaged file is refused, and nothing is written. */
    char *json = (char *)1;
    cr_assert_neq(dp_describe_file("/nonexistent/x.h5", NULL, &json), DP_OK);
    cr_assert(strstr(dp_errmsg(), "/nonexistent/x.h5"), "%s", dp_errmsg());
    cr_assert_null(json);

    free(cfg);
    dp_train_state_free(&st);
    dp_model_free(&m);
    unlink(path);
}
