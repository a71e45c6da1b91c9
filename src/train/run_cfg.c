/* run_cfg.c: the run configuration: its defaults, its JSON form (jansson) and the comparison
 * a resume makes. One table of fields drives writing, reading and comparing, so the three
 * cannot drift; the model's per-layer arrays and the optimizer's hyperparameters (whose set
 * depends on the optimizer) are written and read by the functions below the table. */
#include "dptrain/run.h"
#include "run_internal.h"

#include "dptrain/err.h"
#include "dptrain/exact.h"
#include "dptrain/state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void dp_run_defaults(dp_run_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->out, sizeof cfg->out, "runs/dptrain");
    dp_model_cfg *mc = &cfg->model;
    mc->init = DP_INIT_HE_NORMAL;
    mc->bn_momentum = DP_BN_MOMENTUM_DEFAULT;
    mc->bn_eps = DP_BN_EPS_DEFAULT;
    dp_train_cfg *t = &cfg->train;
    t->loss = DP_LOSS_CROSS_ENTROPY;
    t->epochs = 10;
    t->batch = 128;
    t->seed = 1;
    dp_optim_defaults(DP_OPT_SGD, &t->opt);
    t->sched = (dp_sched_cfg){.kind = DP_SCHED_COSINE, .gamma = 0.1f, .step_size = 30,
                              .warmup_start_factor = 1.0f / 3.0f};
    t->eval_batch = 1000;
    t->accumulate = 1;
    t->plateau_patience = 10;
    t->checkpoint_epochs = 1;
    t->shards = DP_SHARDS_DEFAULT;
    t->shuffle = DP_SHUFFLE_FEISTEL;
    t->reduce = DP_REDUCE_BLOCKING;
    t->bucket_bytes = DP_BUCKET_KB_DEFAULT * 1024;
    cfg->keep_last = 3;
    cfg->step_timeout = -1.0f;
}

/* --- the table -------------------------------------------------------------------------- */

typedef enum { F_INT, F_LONG, F_SIZE, F_U64, F_FLOAT, F_BOOL, F_STR, F_ENUM, F_KB } ftype;

static const char *reduce_name(int k)
{
    return k == DP_REDUCE_OVERLAP ? "overlap" : k == DP_REDUCE_SHARDED ? "sharded" : "blocking";
}
static int reduce_parse(const char *s)
{
    return strcmp(s, "blocking") == 0  ? DP_REDUCE_BLOCKING
           : strcmp(s, "overlap") == 0 ? DP_REDUCE_OVERLAP
           : strcmp(s, "sharded") == 0 ? DP_REDUCE_SHARDED : -1;
}
static const char *const shuffle_names[DP_SHUFFLE_COUNT] = {"fisher-yates", "feistel"};
static const char *shuffle_name(int k)
{
    return k >= 0 && k < DP_SHUFFLE_COUNT ? shuffle_names[k] : "?";
}
static int shuffle_parse(const char *s)
{
    for (int i = 0; s && i < DP_SHUFFLE_COUNT; i++) {
        if (strcmp(s, shuffle_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}
static const char *mem_name(int k) { return dp_data_memory_name((dp_data_memory)k); }
static const char *loss_name(int k) { return dp_loss_name((dp_loss)k); }
static const char *sched_name(int k) { return dp_sched_name((dp_sched)k); }

typedef struct {
    const char *section, *key;
    ftype type;
    size_t offset, size; /* size: of a string buffer */
    double lo, hi;       /* accepted range of numbers */
    const char *(*name)(int); /* F_ENUM */
    int (*parse)(const char *);
    bool compared;       /* changes the trajectory: a resume must have the same */
    const char *choices; /* F_ENUM: the names, for a message ("blocking or overlap"), or NULL */
} field;

#define AT(member) offsetof(dp_run_cfg, member)
#define NUM(s, k, t, m, lo, hi, cmp) {s, k, t, AT(m), 0, lo, hi, NULL, NULL, cmp, NULL}
#define STR(s, k, m, cmp) {s, k, F_STR, AT(m), sizeof(((dp_run_cfg *)0)->m), 0, 0, NULL, NULL, cmp, NULL}
#define ENUM(s, k, m, nm, ps, cmp, ch) {s, k, F_ENUM, AT(m), 0, 0, 0, nm, ps, cmp, ch}

static const field fields[] = {
    STR("data", "path", data, false),
    NUM("data", "val_fraction", F_FLOAT, train.val_fraction, 0.0, 0.99, true),
    ENUM("training", "loss", train.loss, loss_name, dp_loss_parse, true, NULL),
    NUM("training", "epochs", F_INT, train.epochs, 0, DP_MAX_EPOCHS, true),
    NUM("training", "batch", F_SIZE, train.batch, 0, 1L << 30, true),
    NUM("training", "drop_last", F_BOOL, train.drop_last, 0, 1, true),
    NUM("training", "seed", F_U64, train.seed, 0, 0, true),
    NUM("training", "accumulate", F_INT, train.accumulate, 1, 1 << 20, true),
    NUM("training", "clip_norm", F_FLOAT, train.clip_norm, 0.0, 1e30, true),
    NUM("training", "patience", F_INT, train.patience, 0, 1 << 20, true),
    NUM("training", "min_delta", F_FLOAT, train.min_delta, 0.0, 1e30, true),
    NUM("training", "lr_scaling", F_INT, lr_scaling, 0, 1L << 30, true),
    NUM("training", "eval_batch", F_INT, train.eval_batch, 1, 1 << 24, false),
    NUM("training", "deterministic", F_BOOL, train.deterministic, 0, 1, true),
    NUM("training", "shards", F_INT, train.shards, 1, DP_FIXED_MAX_TERMS, true),
    ENUM("training", "shuffle", train.shuffle, shuffle_name, shuffle_parse, true,
         "feistel or fisher-yates"),
    NUM("optimizer", "nesterov", F_BOOL, train.opt.nesterov, 0, 1, true),
    NUM("optimizer", "centered", F_BOOL, train.opt.centered, 0, 1, true),
    NUM("optimizer", "amsgrad", F_BOOL, train.opt.amsgrad, 0, 1, true),
    ENUM("schedule", "kind", train.sched.kind, sched_name, dp_sched_parse, true, NULL),
    NUM("schedule", "gamma", F_FLOAT, train.sched.gamma, 0.0, 1e6, true),
    NUM("schedule", "step_size", F_INT, train.sched.step_size, 1, 1000000, true),
    NUM("schedule", "warmup_steps", F_LONG, train.sched.warmup_steps, 0, 1L << 40, true),
    NUM("schedule", "warmup_start_factor", F_FLOAT, train.sched.warmup_start_factor, 0, 1, true),
    NUM("schedule", "plateau_factor", F_FLOAT, train.plateau_factor, 0.0, 0.999999, true),
    NUM("schedule", "plateau_patience", F_INT, train.plateau_patience, 0, 1000000, true),
    NUM("checkpoints", "every", F_LONG, train.checkpoint_every, 0, 1L << 40, false),
    NUM("checkpoints", "epochs", F_INT, train.checkpoint_epochs, 0, 1000000, false),
    NUM("checkpoints", "keep_last", F_INT, keep_last, 1, 1000000, false),
    STR("checkpoints", "init_from", init_from, false),
    STR("output", "out", out, false),
    NUM("runtime", "threads", F_INT, threads, 0, 4096, false),
    NUM("runtime", "flush_subnormals", F_BOOL, flush_subnormals, 0, 1, true),
    ENUM("runtime", "allreduce", train.reduce, reduce_name, reduce_parse, false,
         "blocking, overlap or sharded"),
    NUM("runtime", "bucket_kb", F_KB, train.bucket_bytes, 0, 1L << 30, false),
    ENUM("runtime", "data_memory", data_memory, mem_name, dp_data_memory_parse, false,
         "auto, replicate, node or stream"),
    NUM("runtime", "step_timeout", F_FLOAT, step_timeout, -1.0, 1e9, false),
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static const char *const sections[] = {"data", "model", "training", "optimizer", "schedule",
                                       "checkpoints", "output", "runtime"};
#define N_SECTIONS (sizeof sections / sizeof sections[0])

/* --- writing ---------------------------------------------------------------------------- */

/* A float as the JSON number with the fewest digits that reads back as the same float
 * (0.1f is written 0.1, not 0.100000001). */
static json_t *jfloat(float f)
{
    char buf[32];
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) {
            break;
        }
    }
    return json_real(strtod(buf, NULL));
}

static json_t *field_value(const field *f, const dp_run_cfg *cfg)
{
    const char *p = (const char *)cfg + f->offset;
    switch (f->type) {
    case F_INT: return json_integer(*(const int *)p);
    case F_LONG: return json_integer(*(const long *)p);
    case F_SIZE: return json_integer((json_int_t) * (const size_t *)p);
    case F_KB: return json_integer((json_int_t)(*(const size_t *)p / 1024));
    case F_U64: {
        uint64_t v = *(const uint64_t *)p;
        if (v <= (uint64_t)INT64_MAX) {
            return json_integer((json_int_t)v);
        }
        char buf[32]; /* beyond JSON integers that readers keep exact: a decimal string */
        snprintf(buf, sizeof buf, "%" PRIu64, v);
        return json_string(buf);
    }
    case F_FLOAT: return jfloat(*(const float *)p);
    case F_BOOL: return json_boolean(*(const bool *)p);
    case F_STR: return json_string(p); /* NULL if not UTF-8: see below */
    case F_ENUM: return json_string(f->name(*(const int *)p));
    }
    return NULL;
}

/* "he-normal", "constant:0.1", "uniform:-0.5:0.5": what dp_init_spec_parse reads back. */
static void init_text(const dp_init_spec *s, char *buf, size_t cap)
{
    const char *name = dp_init_name(s->kind);
    if (s->kind == DP_INIT_CONSTANT) {
        snprintf(buf, cap, "%s:%.9g", name, (double)s->a);
    } else if (s->kind == DP_INIT_UNIFORM || s->kind == DP_INIT_NORMAL) {
        snprintf(buf, cap, "%s:%.9g:%.9g", name, (double)s->a, (double)s->b);
    } else {
        snprintf(buf, cap, "%s", name);
    }
}

/* The spec a layer's weights get (unset: the model's initializer with its default
 * parameters, as dp_model_create resolves it); biases: unset is zero. */
static dp_init_spec resolved_weight(const dp_model_cfg *mc, int i)
{
    if (mc->weight_init[i].set) {
        return mc->weight_init[i];
    }
    return (dp_init_spec){.set = true, .kind = mc->init,
                          .b = (mc->init == DP_INIT_UNIFORM || mc->init == DP_INIT_NORMAL) ? 1.0f : 0.0f};
}

static json_t *model_json(const dp_model_cfg *mc)
{
    json_t *o = json_object(), *sizes = json_array(), *act = json_array(), *drop = json_array(),
           *bn = json_array(), *wi = json_array(), *bi = json_array();
    for (int i = 0; i <= mc->n_layers; i++) {
        json_array_append_new(sizes, json_integer(mc->sizes[i]));
    }
    for (int i = 0; i < mc->n_layers; i++) {
        char buf[96];
        json_array_append_new(act, json_string(dp_act_name(mc->act[i])));
        json_array_append_new(drop, jfloat(mc->dropout[i]));
        json_array_append_new(bn, json_boolean(mc->batchnorm[i]));
        dp_init_spec w = resolved_weight(mc, i);
        init_text(&w, buf, sizeof buf);
        json_array_append_new(wi, json_string(buf));
        if (mc->bias_init[i].set) {
            init_text(&mc->bias_init[i], buf, sizeof buf);
        } else {
            snprintf(buf, sizeof buf, "zero");
        }
        json_array_append_new(bi, json_string(buf));
    }
    json_object_set_new(o, "layers", sizes);
    json_object_set_new(o, "activations", act);
    json_object_set_new(o, "dropout", drop);
    json_object_set_new(o, "batchnorm", bn);
    json_object_set_new(o, "bn_momentum", jfloat(mc->bn_momentum));
    json_object_set_new(o, "bn_eps", jfloat(mc->bn_eps));
    json_object_set_new(o, "init", wi);
    json_object_set_new(o, "bias_init", bi);
    if (mc->n_stages > 0) {
        json_t *img = json_object(), *in = json_array(), *st = json_array();
        json_array_append_new(in, json_integer(mc->in_c));
        json_array_append_new(in, json_integer(mc->in_h));
        json_array_append_new(in, json_integer(mc->in_w));
        for (int j = 0; j < mc->n_stages; j++) {
            char tok[128];
            dp_stage_format(&mc->stage[j], true, tok, sizeof tok);
            json_array_append_new(st, json_string(tok));
        }
        json_object_set_new(img, "input", in);
        json_object_set_new(img, "layers", st);
        json_object_set_new(img, "end", json_string(mc->gap ? "gap" : "flatten"));
        json_object_set_new(o, "image", img);
    }
    return o;
}

/* model.image: {"input": [C, H, W], "layers": ["conv32k3p1:relu", ...], "end": "flatten"}. */
static int read_image(const json_t *img, const char *what, dp_model_cfg *m)
{
    const json_t *in = json_object_get(img, "input"), *st = json_object_get(img, "layers");
    const char *end = json_string_value(json_object_get(img, "end"));
    if (!json_is_object(img) || !json_is_array(in) || json_array_size(in) != 3 ||
        !json_is_array(st) || json_array_size(st) < 1 ||
        json_array_size(st) > DP_MAX_STAGES || !end ||
        (strcmp(end, "flatten") && strcmp(end, "gap"))) {
        return dp_err(DP_EINVAL, "%s: model.image: want {\"input\": [C, H, W], \"layers\": "
                                 "[1 to %d layer tokens], \"end\": \"flatten\" or \"gap\"}",
                      what, DP_MAX_STAGES);
    }
    int *dims[3] = {&m->in_c, &m->in_h, &m->in_w};
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_array_get(in, i);
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > (1 << 24)) {
            return dp_err(DP_EINVAL, "%s: model.image.input[%zu]: want a size from 1", what, i);
        }
        *dims[i] = (int)json_integer_value(v);
    }
    m->n_stages = (int)json_array_size(st);
    for (int j = 0; j < m->n_stages; j++) {
        const char *tok = json_string_value(json_array_get(st, (size_t)j));
        if (!tok || dp_stage_parse(tok, DP_ACT_IDENTITY, &m->stage[j]) != DP_OK) {
            return dp_err(DP_EINVAL, "%s: model.image.layers[%d]: %s", what, j,
                          tok ? dp_errmsg() : "want a layer token");
        }
    }
    m->gap = strcmp(end, "gap") == 0;
    return DP_OK;
}

/* The optimizer's name and the hyperparameters it uses (the others are not written). */
static void optim_json(json_t *o, const dp_optim_cfg *c)
{
    int n = 0;
    const dp_optim_field *hp = dp_optim_fields(&n);
    json_object_set_new(o, "name", json_string(dp_optim_name(c->kind)));
    for (int i = 0; i < n; i++) {
        if (hp[i].optims & (1u << c->kind)) {
            json_object_set_new(o, hp[i].name,
                                jfloat(*(const float *)((const char *)c + hp[i].offset)));
        }
    }
}

static json_t *cfg_json(const dp_run_cfg *cfg, const char *version)
{
    json_t *root = json_object();
    json_object_set_new(root, "version", json_string(version ? version : "?"));
    for (size_t s = 0; s < N_SECTIONS; s++) {
        json_object_set_new(root, sections[s],
                            strcmp(sections[s], "model") == 0 ? model_json(&cfg->model)
                                                              : json_object());
    }
    optim_json(json_object_get(root, "optimizer"), &cfg->train.opt);
    json_t *ms = json_array();
    for (int i = 0; i < cfg->train.sched.n_milestones; i++) {
        json_array_append_new(ms, json_integer(cfg->train.sched.milestones[i]));
    }
    json_object_set_new(json_object_get(root, "schedule"), "milestones", ms);
    for (size_t i = 0; i < N_FIELDS; i++) {
        json_t *v = field_value(&fields[i], cfg);
        if (!v) {
            /* A path that is not UTF-8 (JSON strings are): its bytes read as latin-1, so
             * the JSON stays valid and shows the path; reading it back gives the UTF-8
             * bytes of those characters, another path. */
            const unsigned char *p = (const unsigned char *)cfg + fields[i].offset;
            char buf[DP_PATH_MAX * 2];
            size_t k = 0;
            for (; *p && k + 2 < sizeof buf; p++) {
                if (*p < 0x80) {
                    buf[k++] = (char)*p;
                } else {
                    buf[k++] = (char)(0xC0 | (*p >> 6));
                    buf[k++] = (char)(0x80 | (*p & 0x3F));
                }
            }
            buf[k] = '\0';
            v = json_string(buf);
        }
        json_object_set_new(json_object_get(root, fields[i].section), fields[i].key, v);
    }
    return root;
}

char *dp_run_cfg_to_json(const dp_run_cfg *cfg, const char *version)
{
    json_t *root = cfg_json(cfg, version);
    char *s = root ? json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(root);
    return s;
}

/* --- reading ---------------------------------------------------------------------------- */

static int bad(const char *what, const char *sec, const char *key, const char *why)
{
    return dp_err(DP_EINVAL, "%s: %s.%s: %s", what, sec, key, why);
}

static int read_number(const json_t *v, const char *what, const field *f, double *out)
{
    if (!json_is_number(v)) {
        return bad(what, f->section, f->key, "must be a number");
    }
    double x = json_number_value(v);
    if (!(x >= f->lo && x <= f->hi)) {
        return dp_err(DP_EINVAL, "%s: %s.%s: %g is outside [%g, %g]", what, f->section, f->key,
                      x, f->lo, f->hi);
    }
    if (f->type != F_FLOAT && (!json_is_integer(v) || x != floor(x))) {
        return bad(what, f->section, f->key, "must be an integer");
    }
    *out = x;
    return DP_OK;
}

static int read_field(const field *f, const json_t *v, const char *what, dp_run_cfg *cfg)
{
    char *p = (char *)cfg + f->offset;
    double x = 0.0;
    switch (f->type) {
    case F_BOOL:
        if (!json_is_boolean(v)) {
            return bad(what, f->section, f->key, "must be true or false");
        }
        *(bool *)p = json_is_true(v);
        return DP_OK;
    case F_STR: {
        if (!json_is_string(v)) {
            return bad(what, f->section, f->key, "must be a string");
        }
        size_t len = json_string_length(v);
        if (len >= f->size || strlen(json_string_value(v)) != len) {
            return bad(what, f->section, f->key, len >= f->size ? "too long" : "holds a NUL");
        }
        memcpy(p, json_string_value(v), len + 1);
        return DP_OK;
    }
    case F_ENUM: {
        int k = json_is_string(v) ? f->parse(json_string_value(v)) : -1;
        if (k < 0) {
            return bad(what, f->section, f->key, "unknown name");
        }
        *(int *)p = k;
        return DP_OK;
    }
    case F_U64:
        if (json_is_string(v)) {
            char *end = NULL;
            const char *s = json_string_value(v);
            unsigned long long u = strtoull(s, &end, 10);
            if (!*s || *end || s[0] == '-') {
                return bad(what, f->section, f->key, "must be an unsigned integer");
            }
            *(uint64_t *)p = u;
            return DP_OK;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            return bad(what, f->section, f->key, "must be an unsigned integer");
        }
        *(uint64_t *)p = (uint64_t)json_integer_value(v);
        return DP_OK;
    default:
        break;
    }
    int rc = read_number(v, what, f, &x);
    if (rc != DP_OK) {
        return rc;
    }
    switch (f->type) {
    case F_INT: *(int *)p = (int)x; break;
    case F_LONG: *(long *)p = (long)json_integer_value(v); break;
    case F_SIZE: *(size_t *)p = (size_t)json_integer_value(v); break;
    case F_KB: *(size_t *)p = (size_t)json_integer_value(v) * 1024; break;
    case F_FLOAT: *(float *)p = (float)x; break;
    default: break;
    }
    return DP_OK;
}

/* An array of n entries of the given JSON type, or a message. */
static int want_array(const json_t *a, size_t n, const char *what, const char *key)
{
    if (!json_is_array(a) || json_array_size(a) != n) {
        return dp_err(DP_EINVAL, "%s: model.%s: want an array of %zu entries (one per %s)", what,
                      key, n, strcmp(key, "layers") == 0 ? "size" : "layer");
    }
    return DP_OK;
}

static int read_model(const json_t *o, const char *what, dp_model_cfg *mc)
{
    int rc = DP_OK;
    const json_t *sizes = json_object_get(o, "layers");
    const char *key = NULL;
    json_t *v;
    if (!json_is_array(sizes) || json_array_size(sizes) < 2 ||
        json_array_size(sizes) > DP_MAX_LAYERS + 1) {
        DP_FAIL(DP_EINVAL, "%s: model.layers: want an array of 2 to %d sizes", what,
                DP_MAX_LAYERS + 1);
    }
    dp_model_cfg m = *mc;
    m.n_stages = 0; /* no "image" key: a dense model */
    m.in_c = m.in_h = m.in_w = 0;
    m.gap = false;
    m.n_layers = (int)json_array_size(sizes) - 1;
    for (int i = 0; i <= m.n_layers; i++) {
        v = json_array_get(sizes, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 24)) {
            DP_FAIL(DP_EINVAL, "%s: model.layers[%d]: want a size from 1 to %d", what, i, 1 << 24);
        }
        m.sizes[i] = (int)json_integer_value(v);
    }
    const size_t L = (size_t)m.n_layers;
    m.init = DP_INIT_HE_NORMAL;
    json_object_foreach((json_t *)o, key, v)
    {
        if (strcmp(key, "layers") == 0) {
            continue;
        }
        if (strcmp(key, "image") == 0) {
            DP_TRY(read_image(v, what, &m));
            continue;
        }
        if (strcmp(key, "bn_momentum") == 0 || strcmp(key, "bn_eps") == 0) {
            double x = json_number_value(v);
            if (!json_is_number(v) || !(x > 0.0 && x <= 1.0)) {
                DP_FAIL(DP_EINVAL, "%s: model.%s: want a number in (0, 1]", what, key);
            }
            *(key[3] == 'm' ? &m.bn_momentum : &m.bn_eps) = (float)x;
            continue;
        }
        if (strcmp(key, "activations") && strcmp(key, "dropout") && strcmp(key, "batchnorm") &&
            strcmp(key, "init") && strcmp(key, "bias_init")) {
            DP_FAIL(DP_EINVAL, "%s: model.%s: unknown key (layers, activations, dropout, "
                               "batchnorm, bn_momentum, bn_eps, init, bias_init, image)", what, key);
        }
        DP_TRY(want_array(v, L, what, key));
        for (size_t i = 0; i < L; i++) {
            const json_t *e = json_array_get(v, i);
            const char *s = json_string_value(e);
            if (strcmp(key, "activations") == 0) {
                int a = s ? dp_act_parse(s) : -1;
                if (a < 0) {
                    DP_FAIL(DP_EINVAL, "%s: model.activations[%zu]: unknown activation", what, i);
                }
                m.act[i] = (dp_act)a;
            } else if (strcmp(key, "dropout") == 0) {
                double x = json_number_value(e);
                if (!json_is_number(e) || !(x >= 0.0 && x < 1.0)) {
                    DP_FAIL(DP_EINVAL, "%s: model.dropout[%zu]: want a number in [0, 1)", what, i);
                }
                m.dropout[i] = (float)x;
            } else if (strcmp(key, "batchnorm") == 0) {
                if (!json_is_boolean(e)) {
                    DP_FAIL(DP_EINVAL, "%s: model.batchnorm[%zu]: want true or false", what, i);
                }
                m.batchnorm[i] = json_is_true(e);
            } else {
                dp_init_spec *sp = key[0] == 'i' ? &m.weight_init[i] : &m.bias_init[i];
                if (!s || dp_init_spec_parse(s, sp) != DP_OK) {
                    DP_FAIL(DP_EINVAL, "%s: model.%s[%zu]: %s", what, key, i,
                            s ? dp_errmsg() : "want an initializer name");
                }
                if (key[0] == 'i' && i == 0) {
                    m.init = sp->kind;
                }
            }
        }
    }
    *mc = m;
done:
    return rc;
}

/* The optimizer section: name first (its torch defaults), then the hyperparameters it uses;
 * one it does not use is refused. The switches are table fields. */
static int read_optim(const json_t *o, const char *what, dp_optim_cfg *c)
{
    const json_t *name = json_object_get(o, "name");
    if (name) {
        int k = json_is_string(name) ? dp_optim_parse(json_string_value(name)) : -1;
        if (k < 0) {
            return dp_err(DP_EINVAL, "%s: optimizer.name: unknown optimizer", what);
        }
        const dp_optim_cfg keep = *c;
        dp_optim_defaults((dp_optim_kind)k, c);
        c->nesterov = keep.nesterov;
        c->centered = keep.centered;
        c->amsgrad = keep.amsgrad;
    }
    int n = 0;
    const dp_optim_field *hp = dp_optim_fields(&n);
    for (int i = 0; i < n; i++) {
        const json_t *v = json_object_get(o, hp[i].name);
        if (!v) {
            continue;
        }
        if (!(hp[i].optims & (1u << c->kind))) {
            return dp_err(DP_EINVAL, "%s: optimizer.%s does not apply to optimizer %s", what,
                          hp[i].name, dp_optim_name(c->kind));
        }
        if (!json_is_number(v) || !isfinite(json_number_value(v))) {
            return dp_err(DP_EINVAL, "%s: optimizer.%s: must be a number", what, hp[i].name);
        }
        *(float *)((char *)c + hp[i].offset) = (float)json_number_value(v);
    }
    return DP_OK;
}

static bool is_optim_key(const char *key)
{
    int n = 0;
    const dp_optim_field *hp = dp_optim_fields(&n);
    for (int i = 0; i < n; i++) {
        if (strcmp(hp[i].name, key) == 0) {
            return true;
        }
    }
    return strcmp(key, "name") == 0;
}

static int read_milestones(const json_t *v, const char *what, dp_sched_cfg *s)
{
    if (!json_is_array(v) || json_array_size(v) > DP_SCHED_MAX_MILESTONES) {
        return dp_err(DP_EINVAL, "%s: schedule.milestones: want an array of up to %d epochs",
                      what, DP_SCHED_MAX_MILESTONES);
    }
    s->n_milestones = (int)json_array_size(v);
    for (int i = 0; i < s->n_milestones; i++) {
        const json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > 1000000) {
            return dp_err(DP_EINVAL, "%s: schedule.milestones[%d]: want an epoch from 1 to "
                                     "1000000", what, i);
        }
        s->milestones[i] = (int)json_integer_value(e);
    }
    return DP_OK;
}

static int read_section(const char *sec, json_t *o, const char *what, dp_run_cfg *cfg)
{
    int rc = DP_OK;
    const char *key;
    json_t *v;
    if (!json_is_object(o)) {
        return dp_err(DP_EINVAL, "%s: \"%s\" must be an object", what, sec);
    }
    if (strcmp(sec, "model") == 0) {
        return read_model(o, what, &cfg->model);
    }
    if (strcmp(sec, "optimizer") == 0) {
        DP_TRY(read_optim(o, what, &cfg->train.opt));
    }
    json_object_foreach(o, key, v)
    {
        size_t i = 0;
        while (i < N_FIELDS && (strcmp(fields[i].section, sec) || strcmp(fields[i].key, key))) {
            i++;
        }
        if (i < N_FIELDS) {
            DP_TRY(read_field(&fields[i], v, what, cfg));
        } else if (strcmp(sec, "schedule") == 0 && strcmp(key, "milestones") == 0) {
            DP_TRY(read_milestones(v, what, &cfg->train.sched));
        } else if (!(strcmp(sec, "optimizer") == 0 && is_optim_key(key))) {
            DP_FAIL(DP_EINVAL, "%s: %s.%s: unknown key", what, sec, key);
        }
    }
done:
    return rc;
}

int dp_run_cfg_from_json(const char *json, const char *what, dp_run_cfg *cfg)
{
    int rc = DP_OK;
    json_error_t err;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &err);
    dp_run_cfg c = *cfg;
    if (!root || !json_is_object(root)) {
        DP_FAIL(DP_EINVAL, "%s: not a JSON object%s%s (line %d)", what, root ? "" : ": ",
                root ? "" : err.text, root ? 0 : err.line);
    }
    /* A configuration written before --shuffle existed is of a run that visited its rows in
     * Fisher-Yates order: read so, it reruns and resumes exactly as before. */
    const json_t *tr = json_object_get(root, "training");
    if (!json_is_object(tr) || !json_object_get(tr, "shuffle")) {
        c.train.shuffle = DP_SHUFFLE_FISHER_YATES;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        size_t s = 0;
        while (s < N_SECTIONS && strcmp(sections[s], key) != 0) {
            s++;
        }
        if (strcmp(key, "version") == 0) {
            continue;
        }
        if (s == N_SECTIONS) {
            DP_FAIL(DP_EINVAL, "%s: unknown section \"%s\" (data, model, training, optimizer, "
                               "schedule, checkpoints, output, runtime)", what, key);
        }
        DP_TRY(read_section(key, v, what, &c));
    }
    *cfg = c;
done:
    json_decref(root);
    return rc;
}

/* --- comparing -------------------------------------------------------------------------- */

/* Appends "name A (now B)" to buf; the values in their JSON form. */
static void add_diff(char *buf, size_t cap, int n, const char *name, const json_t *a,
                     const json_t *b)
{
    char *sa = a ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9)) : NULL;
    char *sb = b ? json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9)) : NULL;
    size_t len = strlen(buf);
    if (len < cap) {
        snprintf(buf + len, cap - len, "%s%s %s (now %s)", n ? ", " : "", name,
                 sa ? sa : "not set", sb ? sb : "not set");
    }
    free(sa);
    free(sb);
}

static bool compared(const char *sec, const char *key)
{
    if (strcmp(sec, "model") == 0 || strcmp(sec, "optimizer") == 0 ||
        strcmp(sec, "schedule") == 0) {
        return true;
    }
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (strcmp(fields[i].section, sec) == 0 && strcmp(fields[i].key, key) == 0) {
            return fields[i].compared;
        }
    }
    return false;
}

int dp_run_cfg_diff(const dp_run_cfg *saved, const dp_run_cfg *now, char *buf, size_t cap)
{
    json_t *a = cfg_json(saved, NULL), *b = cfg_json(now, NULL);
    int n = 0;
    buf[0] = '\0';
    for (size_t s = 0; s < N_SECTIONS; s++) {
        json_t *sa = json_object_get(a, sections[s]), *sb = json_object_get(b, sections[s]);
        const char *key;
        json_t *va;
        char name[128];
        json_object_foreach(sa, key, va)
        {
            json_t *vb = json_object_get(sb, key);
            if (compared(sections[s], key) && !(vb && json_equal(va, vb))) {
                snprintf(name, sizeof name, "%s.%s", sections[s], key);
                add_diff(buf, cap, n++, name, va, vb);
            }
        }
        json_object_foreach(sb, key, va)
        {
            if (compared(sections[s], key) && !json_object_get(sa, key)) {
                snprintf(name, sizeof name, "%s.%s", sections[s], key);
                add_diff(buf, cap, n++, name, NULL, va);
            }
        }
    }
    json_decref(a);
    json_decref(b);
    return n;
}

/* --- options: a field from text ---------------------------------------------------------- */

int dp_run_field_from_text(dp_run_cfg *cfg, const char *section, const char *key,
                           const char *text, const char *opt)
{
    const field *f = NULL;
    for (size_t i = 0; i < N_FIELDS && !f; i++) {
        if (strcmp(fields[i].section, section) == 0 && strcmp(fields[i].key, key) == 0) {
            f = &fields[i];
        }
    }
    if (!f) {
        return dp_err(DP_EINVAL, "%s: no such field %s.%s", opt, section, key);
    }
    char *p = (char *)cfg + f->offset;
    long l = 0;
    float x = 0.0f;
    int rc = DP_OK, k;
    switch (f->type) {
    case F_INT:
    case F_LONG:
    case F_SIZE:
    case F_KB:
        rc = dp_parse_int(opt, text, (long)f->lo, (long)f->hi, &l);
        if (rc == DP_OK) {
            if (f->type == F_INT) {
                *(int *)p = (int)l;
            } else if (f->type == F_LONG) {
                *(long *)p = l;
            } else {
                *(size_t *)p = (size_t)l * (f->type == F_KB ? 1024 : 1);
            }
        }
        return rc;
    case F_U64: return dp_parse_u64(opt, text, (uint64_t *)p);
    case F_FLOAT:
        rc = dp_parse_float(opt, text, f->lo, f->hi, &x);
        if (rc == DP_OK) {
            *(float *)p = x;
        }
        return rc;
    case F_BOOL: *(bool *)p = true; return DP_OK; /* a switch */
    case F_STR:
        if ((size_t)snprintf(p, f->size, "%s", text) >= f->size) {
            return dp_err(DP_EINVAL, "%s: the path is longer than %zu bytes", opt, f->size - 1);
        }
        return DP_OK;
    case F_ENUM:
        k = f->parse(text);
        if (k < 0) {
            return dp_err(DP_EINVAL, "%s: unknown value '%s' (%s)", opt, text,
                          f->choices ? f->choices : "see dptrain train --help");
        }
        *(int *)p = k;
        return DP_OK;
    }
    return DP_OK;
}

/* --- strict value parsing ---------------------------------------------------------------- */

int dp_parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) {
        return dp_err(DP_EINVAL, "%s: '%s' is not an integer", opt, s);
    }
    if (v < lo || v > hi) {
        return dp_err(DP_EINVAL, "%s: %ld is outside [%ld, %ld]", opt, v, lo, hi);
    }
    *out = v;
    return DP_OK;
}

int dp_parse_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        return dp_err(DP_EINVAL, "%s: '%s' is not a non-negative integer", opt, s);
    }
    *out = (uint64_t)v;
    return DP_OK;
}

int dp_parse_size(const char *opt, const char *s, size_t *out)
{
    uint64_t v = 0;
    int rc = dp_parse_u64(opt, s, &v);
    if (rc == DP_OK && v > (uint64_t)SIZE_MAX / 2) {
        rc = dp_err(DP_EINVAL, "%s: %s is too large", opt, s);
    }
    *out = (size_t)v;
    return rc;
}

int dp_parse_float(const char *opt, const char *s, double lo, double hi, float *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        return dp_err(DP_EINVAL, "%s: '%s' is not a number", opt, s);
    }
    if (v < lo || v > hi) {
        return dp_err(DP_EINVAL, "%s: %g is outside [%g, %g]", opt, v, lo, hi);
    }
    *out = (float)v;
    return DP_OK;
}
