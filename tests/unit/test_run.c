/* test_run.c: the run configuration: its defaults, its JSON round trip (strings that JSON
 * must escape, long paths, non-ASCII, numbers that must come back exactly), the refusals of
 * its reader and the comparison a resume makes. */
#include "dptrain/err.h"
#include "dptrain/run.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A configuration whose every section differs from the defaults. */
static void busy_cfg(dp_run_cfg *c)
{
    dp_run_defaults(c);
    snprintf(c->data, sizeof c->data, "data/fmnist.h5");
    dp_model_cfg *m = &c->model;
    m->n_layers = 3;
    const int sizes[] = {784, 256, 128, 10};
    memcpy(m->sizes, sizes, sizeof sizes);
    m->act[0] = DP_ACT_TANH;
    m->act[1] = DP_ACT_GELU;
    m->act[2] = DP_ACT_IDENTITY;
    m->dropout[0] = 0.2f;
    m->dropout[1] = 0.1f;
    m->batchnorm[1] = true;
    m->bn_momentum = 0.05f;
    m->bn_eps = 1e-3f;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(dp_init_spec_parse(i == 0 ? "uniform:-0.5:0.25" : i == 1 ? "normal:0:0.01"
                                                                              : "xavier-uniform",
                                        &m->weight_init[i]), DP_OK);
    }
    m->init = m->weight_init[0].kind;
    cr_assert_eq(dp_init_spec_parse("constant:0.1", &m->bias_init[1]), DP_OK);
    dp_train_cfg *t = &c->train;
    t->loss = DP_LOSS_CCE;
    t->epochs = 30;
    t->batch = 0;
    t->drop_last = true;
    t->seed = 18446744073709551557ull; /* above INT64_MAX: JSON integers stop there */
    dp_optim_defaults(DP_OPT_ADAM, &t->opt);
    t->opt.lr = 1.0f / 3.0f;
    t->opt.beta2 = 0.95f;
    t->opt.amsgrad = true;
    t->sched.kind = DP_SCHED_MULTISTEP;
    t->sched.gamma = 0.3f;
    t->sched.n_milestones = 3;
    t->sched.milestones[0] = 5;
    t->sched.milestones[1] = 10;
    t->sched.milestones[2] = 25;
    t->sched.warmup_steps = 123456789012L;
    t->sched.warmup_start_factor = 0.1f;
    t->val_fraction = 0.15f;
    t->patience = 4;
    t->min_delta = 1e-4f;
    t->clip_norm = 2.5f;
    t->accumulate = 3;
    t->plateau_factor = 0.5f;
    t->plateau_patience = 2;
    t->eval_batch = 512;
    t->reduce = DP_REDUCE_OVERLAP;
    t->bucket_bytes = 64 * 1024;
    t->checkpoint_every = 100;
    t->checkpoint_epochs = 2;
    c->lr_scaling = 256;
    c->keep_last = 7;
    snprintf(c->init_from, sizeof c->init_from, "runs/pre/model.h5");
    snprintf(c->out, sizeof c->out, "runs/busy");
    c->threads = 3;
    c->flush_subnormals = true;
    c->step_timeout = 90.5f;
}

/* to_json, then from_json over the defaults: the same struct, and valid JSON. */
static void round_trip(const dp_run_cfg *c, dp_run_cfg *back)
{
    char *s = dp_run_cfg_to_json(c, "test");
    cr_assert(s, "to_json failed");
    json_error_t err;
    json_t *parsed = json_loads(s, JSON_REJECT_DUPLICATES, &err);
    cr_assert(parsed, "not valid JSON: %s: %s", err.text, s);
    json_decref(parsed);
    dp_run_defaults(back);
    int rc = dp_run_cfg_from_json(s, "t", back);
    cr_assert_eq(rc, DP_OK, "from_json: %s", dp_errmsg());
    free(s);
}

/* Field by field (the struct's padding is not compared). */
static void assert_same(const dp_run_cfg *a, const dp_run_cfg *b)
{
    cr_assert_str_eq(a->data, b->data);
    cr_assert_str_eq(a->out, b->out);
    cr_assert_str_eq(a->init_from, b->init_from);
    cr_assert_eq(a->model.n_layers, b->model.n_layers);
    cr_assert_eq(memcmp(a->model.sizes, b->model.sizes, sizeof a->model.sizes), 0);
    const dp_model_cfg *ma = &a->model, *mb = &b->model;
    for (int i = 0; i < ma->n_layers; i++) {
        cr_assert_eq(ma->act[i], mb->act[i], "act[%d]", i);
        cr_assert_eq(ma->dropout[i], mb->dropout[i], "dropout[%d]", i);
        cr_assert_eq(ma->batchnorm[i], mb->batchnorm[i], "batchnorm[%d]", i);
        cr_assert_eq(ma->weight_init[i].kind, mb->weight_init[i].kind, "init[%d]", i);
        cr_assert_eq(ma->weight_init[i].a, mb->weight_init[i].a, "init[%d].a", i);
        cr_assert_eq(ma->weight_init[i].b, mb->weight_init[i].b, "init[%d].b", i);
        cr_assert_eq(ma->bias_init[i].set ? ma->bias_init[i].kind : DP_INIT_ZERO,
                     mb->bias_init[i].set ? mb->bias_init[i].kind : DP_INIT_ZERO, "bias[%d]", i);
        cr_assert_eq(ma->bias_init[i].a, mb->bias_init[i].a, "bias[%d].a", i);
    }
    cr_assert_eq(ma->bn_momentum, mb->bn_momentum);
    cr_assert_eq(ma->bn_eps, mb->bn_eps);
    const dp_train_cfg *ta = &a->train, *tb = &b->train;
    cr_assert_eq(memcmp(&ta->opt, &tb->opt, sizeof ta->opt), 0, "optimizer");
    cr_assert_eq(memcmp(&ta->sched, &tb->sched, sizeof ta->sched), 0, "schedule");
    cr_assert_eq(ta->loss, tb->loss);
    cr_assert_eq(ta->epochs, tb->epochs);
    cr_assert_eq(ta->batch, tb->batch);
    cr_assert_eq(ta->drop_last, tb->drop_last);
    cr_assert_eq(ta->seed, tb->seed, "seed %llu vs %llu", (unsigned long long)ta->seed,
                 (unsigned long long)tb->seed);
    cr_assert_eq(ta->val_fraction, tb->val_fraction);
    cr_assert_eq(ta->patience, tb->patience);
    cr_assert_eq(ta->min_delta, tb->min_delta);
    cr_assert_eq(ta->clip_norm, tb->clip_norm);
    cr_assert_eq(ta->accumulate, tb->accumulate);
    cr_assert_eq(ta->plateau_factor, tb->plateau_factor);
    cr_assert_eq(ta->plateau_patience, tb->plateau_patience);
    cr_assert_eq(ta->eval_batch, tb->eval_batch);
    cr_assert_eq(ta->reduce, tb->reduce);
    cr_assert_eq(ta->bucket_bytes, tb->bucket_bytes);
    cr_assert_eq(ta->checkpoint_every, tb->checkpoint_every);
    cr_assert_eq(ta->checkpoint_epochs, tb->checkpoint_epochs);
    cr_assert_eq(a->lr_scaling, b->lr_scaling);
    cr_assert_eq(a->keep_last, b->keep_last);
    cr_assert_eq(a->threads, b->threads);
    cr_assert_eq(a->flush_subnormals, b->flush_subnormals);
    cr_assert_eq(a->step_timeout, b->step_timeout);
}

Test(run_cfg, defaults_in_one_place)
{
    dp_run_cfg c;
    dp_run_defaults(&c);
    cr_assert_str_eq(c.out, "runs/dptrain");
    cr_assert_eq(c.train.loss, DP_LOSS_CROSS_ENTROPY);
    cr_assert_eq(c.train.epochs, 10);
    cr_assert_eq(c.train.batch, 128);
    cr_assert_eq(c.train.seed, 1);
    cr_assert_eq(c.train.opt.kind, DP_OPT_SGD);
    cr_assert_float_eq(c.train.opt.lr, 1e-3f, 0.0f); /* torch.optim.SGD's */
    cr_assert_eq(c.train.sched.kind, DP_SCHED_COSINE);
    cr_assert_eq(c.train.eval_batch, 1000);
    cr_assert_eq(c.train.accumulate, 1);
    cr_assert_eq(c.train.checkpoint_epochs, 1);
    cr_assert_eq(c.keep_last, 3);
    cr_assert_eq(c.train.bucket_bytes, DP_BUCKET_KB_DEFAULT * 1024);
    cr_assert_lt(c.step_timeout, 0.0f); /* auto */
    cr_assert_eq(c.model.bn_momentum, DP_BN_MOMENTUM_DEFAULT);
    cr_assert_eq(c.resume[0], '\0');
}

Test(run_cfg, json_round_trip_of_every_field)
{
    dp_run_cfg c, back;
    busy_cfg(&c);
    round_trip(&c, &back);
    assert_same(&c, &back);
    char diff[1024];
    cr_assert_eq(dp_run_cfg_diff(&c, &back, diff, sizeof diff), 0, "%s", diff);
}

Test(run_cfg, json_is_valid_whatever_the_strings_hold)
{
    static const char *const paths[] = {
        "with \"quotes\" and \\backslashes\\ and a tab\there",
        "new\nline and \x01 control",
        "données/réseau ✓ 数据.h5", /* UTF-8 */
        "C:\\Users\\x\\\"q\".h5",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        dp_run_cfg c, back;
        busy_cfg(&c);
        snprintf(c.data, sizeof c.data, "%s", paths[i]);
        snprintf(c.out, sizeof c.out, "%s/out", paths[i]);
        round_trip(&c, &back);
        cr_assert_str_eq(back.data, paths[i]);
        assert_same(&c, &back);
    }
}

Test(run_cfg, long_paths_are_not_truncated)
{
    dp_run_cfg c, back;
    busy_cfg(&c);
    memset(c.out, 'a', DP_PATH_MAX - 1);
    c.out[DP_PATH_MAX - 1] = '\0';
    for (int i = 100; i < DP_PATH_MAX - 1; i += 100) {
        c.out[i] = '"'; /* each needs an escape: the JSON is longer than the path */
    }
    memset(c.data, '\\', DP_PATH_MAX - 1);
    c.data[DP_PATH_MAX - 1] = '\0';
    round_trip(&c, &back);
    cr_assert_eq(strlen(back.out), DP_PATH_MAX - 1);
    cr_assert_str_eq(back.out, c.out);
    cr_assert_str_eq(back.data, c.data);
}

Test(run_cfg, floats_are_written_short_and_read_back_exactly)
{
    dp_run_cfg c, back;
    dp_run_defaults(&c);
    c.model.n_layers = 1;
    c.model.sizes[0] = 2;
    c.model.sizes[1] = 1;
    c.train.opt.lr = 0.1f;
    char *s = dp_run_cfg_to_json(&c, "v");
    cr_assert(strstr(s, "\"lr\":0.1,"), "0.1f should be written 0.1: %s", s);
    free(s);
    const float hard[] = {1.0f / 3.0f, 1e-30f, 3.4028235e38f, 1.17549435e-38f, 0.7f};
    for (size_t i = 0; i < sizeof hard / sizeof hard[0]; i++) {
        c.train.opt.lr = hard[i];
        c.train.min_delta = hard[i] <= 1e30f ? hard[i] : 0.0f; /* its range ends at 1e30 */
        round_trip(&c, &back);
        cr_assert_eq(back.train.opt.lr, hard[i], "%.9g came back %.9g", hard[i],
                     back.train.opt.lr);
        cr_assert_eq(back.train.min_delta, c.train.min_delta);
    }
}

/* The reader refuses what it cannot take and names where. */
static void refused(const char *json, const char *want)
{
    dp_run_cfg c;
    dp_run_defaults(&c);
    cr_assert_neq(dp_run_cfg_from_json(json, "cfg.json", &c), DP_OK, "accepted: %s", json);
    cr_assert(strstr(dp_errmsg(), want), "message '%s' lacks '%s'", dp_errmsg(), want);
    cr_assert(strstr(dp_errmsg(), "cfg.json"), "message '%s' does not name the file",
              dp_errmsg());
}

Test(run_cfg, reader_refusals_name_the_field)
{
    refused("{\"training\":{\"epochs\":\"ten\"}}", "training.epochs");
    refused("{\"training\":{\"epochs\":-1}}", "training.epochs: -1 is outside");
    refused("{\"training\":{\"epochs\":2.5}}", "must be an integer");
    refused("{\"training\":{\"epoch\":2}}", "training.epoch: unknown key");
    refused("{\"optimiser\":{}}", "unknown section \"optimiser\"");
    refused("{\"optimizer\":{\"name\":\"sgd\",\"beta1\":0.9}}", "optimizer.beta1 does not apply");
    refused("{\"optimizer\":{\"name\":\"lion\"}}", "optimizer.name");
    refused("{\"model\":{\"layers\":[4,0,2]}}", "model.layers[1]");
    refused("{\"model\":{\"layers\":[4,8,2],\"dropout\":[0.1]}}", "model.dropout");
    refused("{\"model\":{\"layers\":[4,8,2],\"init\":[\"he\",\"zero\"]}}", "model.init[0]");
    refused("{\"schedule\":{\"milestones\":[3,\"x\"]}}", "schedule.milestones[1]");
    refused("{\"training\":{\"epochs\":1,\"epochs\":2}}", "not a JSON object");
    refused("{\"data\":{\"path\":\"x\"}", "not a JSON object");
    refused("[1,2]", "not a JSON object");
    refused("{\"runtime\":{\"allreduce\":\"ring\"}}", "runtime.allreduce: unknown name");
}

Test(run_cfg, a_refused_read_changes_nothing)
{
    dp_run_cfg c, before;
    busy_cfg(&c);
    before = c;
    cr_assert_neq(dp_run_cfg_from_json("{\"training\":{\"epochs\":5,\"batch\":-2}}", "x", &c),
                  DP_OK);
    cr_assert_eq(memcmp(&c, &before, sizeof c), 0);
}

Test(run_cfg, diff_names_each_difference_that_changes_the_run)
{
    dp_run_cfg a, b;
    char diff[2048];
    busy_cfg(&a);
    b = a;
    /* Not part of the trajectory: none of these is a difference. */
    snprintf(b.data, sizeof b.data, "elsewhere/fmnist.h5");
    snprintf(b.out, sizeof b.out, "runs/other");
    snprintf(b.init_from, sizeof b.init_from, "x.h5");
    b.train.eval_batch = 100;
    b.threads = 1;
    b.keep_last = 1;
    b.train.checkpoint_every = 0;
    b.train.reduce = DP_REDUCE_BLOCKING;
    b.step_timeout = 0.0f;
    cr_assert_eq(dp_run_cfg_diff(&a, &b, diff, sizeof diff), 0, "%s", diff);
    /* Each of these is, and is named with both values. */
    b.train.epochs = 31;
    b.train.opt.lr = 0.05f;
    b.model.dropout[1] = 0.0f;
    b.flush_subnormals = false;
    b.train.sched.n_milestones = 2;
    cr_assert_eq(dp_run_cfg_diff(&a, &b, diff, sizeof diff), 5, "%s", diff);
    cr_assert(strstr(diff, "training.epochs 30 (now 31)"), "%s", diff);
    cr_assert(strstr(diff, "optimizer.lr 0.333333343 (now 0.05)") ||
                  strstr(diff, "optimizer.lr 0.33333334 (now 0.05)"), "%s", diff);
    cr_assert(strstr(diff, "model.dropout [0.2,0.1,0.0] (now [0.2,0.0,0.0])"), "%s", diff);
    cr_assert(strstr(diff, "runtime.flush_subnormals true (now false)"), "%s", diff);
    cr_assert(strstr(diff, "schedule.milestones [5,10,25] (now [5,10])"), "%s", diff);
}

Test(run_cfg, diff_names_a_changed_optimizer_and_its_fields)
{
    dp_run_cfg a, b;
    char diff[2048];
    dp_run_defaults(&a);
    a.model.n_layers = 1;
    a.model.sizes[0] = 3;
    a.model.sizes[1] = 2;
    b = a;
    dp_optim_defaults(DP_OPT_ADAMW, &b.train.opt);
    int n = dp_run_cfg_diff(&a, &b, diff, sizeof diff);
    cr_assert_geq(n, 3, "%s", diff);
    cr_assert(strstr(diff, "optimizer.name \"sgd\" (now \"adamw\")"), "%s", diff);
    cr_assert(strstr(diff, "optimizer.momentum 0.0 (now not set)"), "%s", diff);
    cr_assert(strstr(diff, "optimizer.beta1 not set (now 0.9)"), "%s", diff);
}

Test(run_cfg, optimizer_field_table_covers_the_struct)
{
    int n = 0;
    const dp_optim_field *f = dp_optim_fields(&n);
    cr_assert_eq(n, 12);
    for (int i = 0; i < n; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "%s", f[i].name);
        for (char *p = flag; *p; p++) {
            *p = *p == '_' ? '-' : *p;
        }
        cr_assert_str_eq(flag, f[i].flag, "option of %s", f[i].name);
        cr_assert_lt(f[i].offset + sizeof(float), sizeof(dp_optim_cfg) + 1);
        for (int j = 0; j < i; j++) {
            cr_assert_neq(f[i].offset, f[j].offset, "%s and %s share a field", f[i].name,
                          f[j].name);
        }
        for (int k = 0; k < DP_OPT_COUNT; k++) {
            dp_optim_cfg d;
            dp_optim_defaults((dp_optim_kind)k, &d);
            const float v = *(const float *)((const char *)&d + f[i].offset);
            if (!(f[i].optims & (1u << k))) {
                /* weight_decay and lr apply to all; a field an optimizer lacks stays 0 */
                cr_assert_eq(v, 0.0f, "%s of %s", f[i].name, dp_optim_name((dp_optim_kind)k));
            }
        }
    }
    dp_optim_cfg adam;
    dp_optim_defaults(DP_OPT_ADAM, &adam);
    for (int i = 0; i < n; i++) {
        if (strcmp(f[i].name, "beta2") == 0) {
            cr_assert_float_eq(*(const float *)((const char *)&adam + f[i].offset), 0.999f, 0.0f);
        }
    }
}
