/* run_opts.c: the run configuration by option name: the program's flags, INI files and
 * sweeps record options here; dp_run_opts_apply turns them into edits of a base
 * configuration. Plain numbers and paths go through run_cfg.c's field table (the same types
 * and ranges as the JSON reader); the rest (the optimizer and its hyperparameters, the layer
 * spec and the per-layer lists, values with words in them) are handled below. */
#define _GNU_SOURCE
#include "run_internal.h"

#include "dptrain/err.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* How an option is applied. */
typedef enum {
    O_FIELD,     /* a field of the table in run_cfg.c (section, key) */
    O_LAYERS, O_ACTIVATION, O_INIT, O_BIAS_INIT, O_DROPOUT, O_BATCHNORM, O_BN_MOMENTUM,
    O_BN_EPS, O_OPTIMIZER, O_NESTEROV, O_CENTERED, O_AMSGRAD, O_MILESTONES, O_LR_SCALING,
    O_BATCH, O_STEP_TIMEOUT, O_RESUME, O_OVERWRITE,
    O_HP,        /* an optimizer hyperparameter (dp_optim_fields) */
} okind;

typedef struct {
    const char *name;
    okind kind;
    const char *section, *key; /* O_FIELD */
    bool is_switch;
} option;

static const option options[] = {
    {"data", O_FIELD, "data", "path", false},
    {"val-fraction", O_FIELD, "data", "val_fraction", false},
    {"layers", O_LAYERS, NULL, NULL, false},
    {"activation", O_ACTIVATION, NULL, NULL, false},
    {"loss", O_FIELD, "training", "loss", false},
    {"init", O_INIT, NULL, NULL, false},
    {"bias-init", O_BIAS_INIT, NULL, NULL, false},
    {"dropout", O_DROPOUT, NULL, NULL, false},
    {"batchnorm", O_BATCHNORM, NULL, NULL, false},
    {"bn-momentum", O_BN_MOMENTUM, NULL, NULL, false},
    {"bn-eps", O_BN_EPS, NULL, NULL, false},
    {"optimizer", O_OPTIMIZER, NULL, NULL, false},
    {"nesterov", O_NESTEROV, NULL, NULL, true},
    {"centered", O_CENTERED, NULL, NULL, true},
    {"amsgrad", O_AMSGRAD, NULL, NULL, true},
    {"lr-schedule", O_FIELD, "schedule", "kind", false},
    {"gamma", O_FIELD, "schedule", "gamma", false},
    {"step-size", O_FIELD, "schedule", "step_size", false},
    {"milestones", O_MILESTONES, NULL, NULL, false},
    {"warmup-steps", O_FIELD, "schedule", "warmup_steps", false},
    {"warmup-start-factor", O_FIELD, "schedule", "warmup_start_factor", false},
    {"plateau-factor", O_FIELD, "schedule", "plateau_factor", false},
    {"plateau-patience", O_FIELD, "schedule", "plateau_patience", false},
    {"lr-scaling", O_LR_SCALING, NULL, NULL, false},
    {"batch", O_BATCH, NULL, NULL, false},
    {"drop-last", O_FIELD, "training", "drop_last", true},
    {"epochs", O_FIELD, "training", "epochs", false},
    {"seed", O_FIELD, "training", "seed", false},
    {"accumulate", O_FIELD, "training", "accumulate", false},
    {"clip-norm", O_FIELD, "training", "clip_norm", false},
    {"patience", O_FIELD, "training", "patience", false},
    {"min-delta", O_FIELD, "training", "min_delta", false},
    {"eval-batch", O_FIELD, "training", "eval_batch", false},
    {"deterministic", O_FIELD, "training", "deterministic", true},
    {"shards", O_FIELD, "training", "shards", false},
    {"shuffle", O_FIELD, "training", "shuffle", false},
    {"checkpoint-every", O_FIELD, "checkpoints", "every", false},
    {"checkpoint-epochs", O_FIELD, "checkpoints", "epochs", false},
    {"keep-last", O_FIELD, "checkpoints", "keep_last", false},
    {"resume", O_RESUME, NULL, NULL, false},
    {"init-from", O_FIELD, "checkpoints", "init_from", false},
    {"overwrite", O_OVERWRITE, NULL, NULL, true},
    {"out", O_FIELD, "output", "out", false},
    {"threads", O_FIELD, "runtime", "threads", false},
    {"flush-subnormals", O_FIELD, "runtime", "flush_subnormals", true},
    {"allreduce", O_FIELD, "runtime", "allreduce", false},
    {"bucket-kb", O_FIELD, "runtime", "bucket_kb", false},
    {"data-memory", O_FIELD, "runtime", "data_memory", false},
    {"step-timeout", O_STEP_TIMEOUT, NULL, NULL, false},
};
#define N_OPTIONS (sizeof options / sizeof options[0])
#define MAX_HP 16
#define N_SLOTS (N_OPTIONS + MAX_HP)

struct dp_run_opts {
    char *value[N_SLOTS]; /* given: the text ("true" for a switch); NULL: not given */
};

/* The slot of key: an option's index, or N_OPTIONS + the hyperparameter's; -1 if unknown. */
static int slot_of(const char *key)
{
    char k[64];
    if (!key || snprintf(k, sizeof k, "%s", key) >= (int)sizeof k) {
        return -1;
    }
    for (char *p = k; *p; p++) {
        *p = *p == '_' ? '-' : *p;
    }
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (strcmp(options[i].name, k) == 0) {
            return (int)i;
        }
    }
    int n = 0;
    const dp_optim_field *hp = dp_optim_fields(&n);
    for (int i = 0; i < n && i < MAX_HP; i++) {
        if (strcmp(hp[i].flag, k) == 0) {
            return (int)N_OPTIONS + i;
        }
    }
    return -1;
}

static const option *option_at(int slot)
{
    static const option hp_option = {NULL, O_HP, NULL, NULL, false};
    return slot < (int)N_OPTIONS ? &options[slot] : &hp_option;
}

/* "--name" of a slot. */
static void flag_of(int slot, char *buf, size_t cap)
{
    int n = 0;
    const dp_optim_field *hp = dp_optim_fields(&n);
    snprintf(buf, cap, "--%s", slot < (int)N_OPTIONS ? options[slot].name
                                                     : hp[slot - (int)N_OPTIONS].flag);
}

int dp_run_option_kind(const char *key)
{
    int s = slot_of(key);
    return s < 0 ? -1 : option_at(s)->is_switch ? 1 : 0;
}

int dp_run_opts_create(dp_run_opts **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? DP_OK : dp_err(DP_ENOMEM, "out of memory (options)");
}

void dp_run_opts_free(dp_run_opts **o)
{
    if (o && *o) {
        for (size_t i = 0; i < N_SLOTS; i++) {
            free((*o)->value[i]);
        }
        free(*o);
        *o = NULL;
    }
}

int dp_run_opts_copy(const dp_run_opts *src, dp_run_opts **out)
{
    int rc = dp_run_opts_create(out);
    for (size_t i = 0; rc == DP_OK && i < N_SLOTS; i++) {
        if (src->value[i] && !((*out)->value[i] = strdup(src->value[i]))) {
            dp_run_opts_free(out);
            rc = dp_err(DP_ENOMEM, "out of memory (options)");
        }
    }
    return rc;
}

const char *dp_run_opts_get(const dp_run_opts *o, const char *key)
{
    int s = slot_of(key);
    return s < 0 ? NULL : o->value[s];
}

/* --- the model's options ----------------------------------------------------------------- */

/* Per-hidden-layer values: "X" for every hidden layer or "X1,X2,..." one each. */
static int parse_per_layer(const char *opt, const char *spec, int n_hidden, double lo, double hi,
                           double *out)
{
    int n = 0;
    const char *p = spec;
    while (*p) {
        char *end = NULL;
        double v = strtod(p, &end);
        if (end == p || (*end && *end != ',') || !(v >= lo && v <= hi) || n == DP_MAX_LAYERS) {
            return dp_err(DP_EINVAL, "%s '%s': give one value in [%g, %g], or one per hidden "
                                     "layer separated by commas", opt, spec, lo, hi);
        }
        out[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n == 1) {
        for (int i = 1; i < n_hidden; i++) {
            out[i] = out[0];
        }
    } else if (n != n_hidden) {
        return dp_err(DP_EINVAL, "%s '%s': %d values for %d hidden layers", opt, spec, n,
                      n_hidden);
    }
    return DP_OK;
}

/* "SPEC" for every layer or "SPEC1,SPEC2,..." one per layer. */
static int parse_inits(const char *opt, const char *list, int n_layers, dp_init_spec *out)
{
    char buf[1024], *save = NULL;
    int n = 0;
    if (snprintf(buf, sizeof buf, "%s", list) >= (int)sizeof buf) {
        return dp_err(DP_EINVAL, "%s: too long", opt);
    }
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == n_layers) {
            return dp_err(DP_EINVAL, "%s '%s': more initializers than the %d layers", opt, list,
                          n_layers);
        }
        if (dp_init_spec_parse(tok, &out[n++]) != DP_OK) {
            char why[512]; /* dp_errmsg() is the buffer dp_err writes into */
            snprintf(why, sizeof why, "%s", dp_errmsg());
            return dp_err(DP_EINVAL, "%s: %s", opt, why);
        }
    }
    if (n == 1) {
        for (int i = 1; i < n_layers; i++) {
            out[i] = out[0];
        }
    } else if (n != n_layers) {
        return dp_err(DP_EINVAL, "%s '%s': %d initializers for %d layers (give one, or one per "
                                 "layer)", opt, list, n, n_layers);
    }
    return DP_OK;
}

/* --dropout and --batchnorm into the model configuration (hidden layers only). */
static int parse_regularizers(const char *dropout, const char *batchnorm, dp_model_cfg *mc)
{
    int rc = DP_OK, hidden = mc->n_layers - 1;
    double v[DP_MAX_LAYERS] = {0};
    if (dropout) {
        if (hidden == 0) {
            return dp_err(DP_EINVAL, "--dropout: the model has no hidden layer");
        }
        DP_TRY(parse_per_layer("--dropout", dropout, hidden, 0.0, 0.99, v));
        for (int i = 0; i < hidden; i++) {
            mc->dropout[i] = (float)v[i];
        }
    }
    if (batchnorm && strcmp(batchnorm, "off") == 0) {
        memset(mc->batchnorm, 0, sizeof mc->batchnorm);
    } else if (batchnorm) {
        if (hidden == 0) {
            return dp_err(DP_EINVAL, "--batchnorm: the model has no hidden layer");
        }
        if (strcmp(batchnorm, "on") == 0) {
            for (int i = 0; i < hidden; i++) {
                v[i] = 1.0;
            }
        } else {
            DP_TRY(parse_per_layer("--batchnorm", batchnorm, hidden, 0.0, 1.0, v));
        }
        for (int i = 0; i < hidden; i++) {
            if (v[i] != 0.0 && v[i] != 1.0) {
                return dp_err(DP_EINVAL, "--batchnorm '%s': use on, off, or 0/1 per hidden "
                                         "layer", batchnorm);
            }
            mc->batchnorm[i] = v[i] == 1.0;
        }
    }
done:
    return rc;
}

/* Per-layer settings written in the --layers spec ("256:tanh:dropout=0.2:bn"). */
typedef struct {
    int act[DP_MAX_LAYERS];       /* -1: not given */
    float dropout[DP_MAX_LAYERS]; /* < 0: not given */
    bool bn[DP_MAX_LAYERS];
} layer_tokens;

static void no_tokens(layer_tokens *lt)
{
    for (int i = 0; i < DP_MAX_LAYERS; i++) {
        lt->act[i] = -1;
        lt->dropout[i] = -1.0f;
        lt->bn[i] = false;
    }
}

static int parse_token(const char *spec, const char *tok, int layer, layer_tokens *lt)
{
    int a = dp_act_parse(tok);
    if (a >= 0) {
        if (!dp_act_trainable((dp_act)a) || a == DP_ACT_SOFTMAX) {
            return dp_err(DP_EINVAL, "--layers '%s': %s cannot be a hidden activation", spec, tok);
        }
        lt->act[layer] = a;
    } else if (strcmp(tok, "bn") == 0) {
        lt->bn[layer] = true;
    } else if (strncmp(tok, "dropout=", 8) == 0) {
        char *end = NULL;
        double p = strtod(tok + 8, &end);
        if (end == tok + 8 || *end || !(p >= 0.0 && p < 1.0)) {
            return dp_err(DP_EINVAL, "--layers '%s': %s: the probability must be in [0, 1)",
                          spec, tok);
        }
        lt->dropout[layer] = (float)p;
    } else {
        return dp_err(DP_EINVAL, "--layers '%s': unknown layer setting '%s' (an activation, "
                                 "dropout=P or bn)", spec, tok);
    }
    return DP_OK;
}

/* The largest layer --layers takes: 2^24 units, beyond any memory for a dense layer's
 * weights, and small enough that sizes and their products stay within the model's int and
 * size_t arithmetic. */
#define DP_MAX_LAYER_SIZE (1L << 24)

/* The image part of "1x28x28,conv32k3p1:relu:bn,maxpool2,...,flatten,128,10": the input
 * shape and the stages into mc; *rest points at the dense part after flatten (or gap), and
 * *features is what the stages give the first dense layer. Returns DP_OK with *rest = spec
 * if the spec does not start with an image shape. */
static int parse_image_stage(const char *spec, dp_act act, dp_model_cfg *mc, const char **rest,
                             int *features)
{
    int c = 0, h = 0, w = 0, used = 0;
    *rest = spec;
    if (sscanf(spec, "%d x %d x %d%n", &c, &h, &w, &used) != 3 || used < 5 ||
        (spec[used] != ',' && spec[used] != '\0') || strchr(spec, 'x') > spec + used) {
        return DP_OK;
    }
    if (c < 1 || h < 1 || w < 1) {
        return dp_err(DP_EINVAL, "--layers '%s': the input image %dx%dx%d must have channels, "
                                 "height and width >= 1", spec, c, h, w);
    }
    mc->in_c = c;
    mc->in_h = h;
    mc->in_w = w;
    const char *p = spec + used;
    bool ended = false;
    while (*p == ',' && !ended) {
        char tok[128];
        size_t len = strcspn(++p, ",");
        if (len == 0 || len >= sizeof tok) {
            return dp_err(DP_EINVAL, "--layers '%s': empty or overlong layer", spec);
        }
        memcpy(tok, p, len);
        tok[len] = '\0';
        p += len;
        if (strcmp(tok, "flatten") == 0 || strcmp(tok, "gap") == 0) {
            mc->gap = tok[0] == 'g';
            ended = true;
        } else if (mc->n_stages == DP_MAX_STAGES) {
            return dp_err(DP_EINVAL, "--layers '%s': at most %d convolution and pooling layers",
                          spec, DP_MAX_STAGES);
        } else if (isdigit((unsigned char)tok[0])) {
            return dp_err(DP_EINVAL, "--layers '%s': dense size %s before flatten or gap (an "
                                     "image input takes convolution or pooling layers, then "
                                     "flatten or gap, then the dense sizes)", spec, tok);
        } else if (dp_stage_parse(tok, act, &mc->stage[mc->n_stages++]) != DP_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", dp_errmsg());
            return dp_err(DP_EINVAL, "--layers '%s': %s", spec, why);
        }
    }
    if (!ended || mc->n_stages == 0 || *p != ',') {
        return dp_err(DP_EINVAL, "--layers '%s': an image input takes convolution or pooling "
                                 "layers, then flatten or gap, then the dense sizes, e.g. "
                                 "1x28x28,conv32k3p1,maxpool2,flatten,128,10", spec);
    }
    int sc[DP_MAX_STAGES + 1], sh[DP_MAX_STAGES + 1], sw[DP_MAX_STAGES + 1];
    if (dp_model_cfg_shapes(mc, sc, sh, sw, features) != DP_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", dp_errmsg());
        return dp_err(DP_EINVAL, "--layers '%s': %s", spec, why);
    }
    *rest = p + 1;
    return DP_OK;
}

/* "784,256,128,10" -> sizes; hidden layers get act, the output layer the activation the
 * loss needs (identity where the loss fuses softmax or sigmoid). An image spec
 * ("1x28x28,conv...,flatten,128,10") sets the stage and sizes[0] from it. */
static int parse_layers(const char *spec, dp_act act, dp_loss loss, dp_model_cfg *mc,
                        layer_tokens *lt)
{
    int n = 0, features = 0;
    const char *p = spec;
    no_tokens(lt);
    int rc = parse_image_stage(spec, act, mc, &p, &features);
    if (rc != DP_OK) {
        return rc;
    }
    if (p != spec) {
        mc->sizes[n++] = features;
    }
    while (*p) {
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',' && *end != ':') || (!errno && v < 1)) {
            return dp_err(DP_EINVAL, "--layers '%s': sizes must be positive integers separated "
                                     "by commas, e.g. 784,256,128,10", spec);
        }
        if (errno || v > DP_MAX_LAYER_SIZE) {
            return dp_err(DP_EINVAL, "--layers '%s': size %.*s is too large: a layer has at most "
                                     "%ld units", spec, (int)(end - p), p, DP_MAX_LAYER_SIZE);
        }
        if (n > DP_MAX_LAYERS) {
            return dp_err(DP_EINVAL, "--layers '%s': at most %d layers", spec, DP_MAX_LAYERS);
        }
        mc->sizes[n++] = (int)v;
        while (*end == ':') {
            char tok[64];
            size_t len = strcspn(end + 1, ":,");
            if (len == 0 || len >= sizeof tok) {
                return dp_err(DP_EINVAL, "--layers '%s': empty or overlong layer setting", spec);
            }
            memcpy(tok, end + 1, len);
            tok[len] = '\0';
            if (n == 1) {
                return dp_err(DP_EINVAL, "--layers '%s': the input size takes no settings", spec);
            }
            int rc = parse_token(spec, tok, n - 2, lt);
            if (rc != DP_OK) {
                return rc;
            }
            end += 1 + len;
        }
        p = *end ? end + 1 : end;
    }
    if (n < 2) {
        return dp_err(DP_EINVAL, "--layers '%s': give at least the input and output sizes",
                      spec);
    }
    mc->n_layers = n - 1;
    for (int i = 0; i < mc->n_layers; i++) {
        mc->act[i] = (i == mc->n_layers - 1) ? dp_loss_output_act(loss) : act;
    }
    int last = mc->n_layers - 1;
    if (lt->act[last] >= 0 || lt->dropout[last] >= 0.0f || lt->bn[last]) {
        return dp_err(DP_EINVAL, "--layers '%s': the output size takes no settings (its "
                                 "activation comes from --loss)", spec);
    }
    return DP_OK;
}

static int parse_activation(const char *s, dp_act *out)
{
    int v = dp_act_parse(s);
    if (v < 0) {
        return dp_err(DP_EINVAL, "--activation: unknown value '%s' (see dptrain train --help)", s);
    }
    if (v == DP_ACT_SOFTMAX) {
        return dp_err(DP_EINVAL, "--activation softmax: softmax is only an output (it is part "
                                 "of --loss cross-entropy)");
    }
    if (!dp_act_trainable((dp_act)v)) {
        return dp_err(DP_EINVAL, "--activation %s: its gradient is zero almost everywhere, so "
                                 "the network cannot be trained", s);
    }
    *out = (dp_act)v;
    return DP_OK;
}

/* The model: a new one from --layers (hidden activation: --activation, else the base's, else
 * relu), or the base's with --activation over its hidden layers; then the output activation
 * the loss needs, --dropout, --batchnorm, the initializers, and the settings in the spec. */
static int apply_model(const dp_run_opts *o, dp_run_cfg *cfg)
{
    int rc = DP_OK;
    dp_model_cfg *mc = &cfg->model;
    const char *layers = dp_run_opts_get(o, "layers"), *act_s = dp_run_opts_get(o, "activation");
    const char *init = dp_run_opts_get(o, "init");
    dp_act act = mc->n_layers > 1 ? mc->act[0] : DP_ACT_RELU;
    layer_tokens lt;
    no_tokens(&lt);
    if (act_s) {
        DP_TRY(parse_activation(act_s, &act));
    }
    if (layers) {
        /* A new layer spec: a new model (the batch-norm constants stay). */
        const dp_model_cfg fresh = {.bn_momentum = mc->bn_momentum, .bn_eps = mc->bn_eps,
                                    .init = DP_INIT_HE_NORMAL};
        *mc = fresh;
        DP_TRY(parse_layers(layers, act, cfg->train.loss, mc, &lt));
        init = init ? init : "he-normal";
    } else if (act_s) {
        for (int i = 0; i < mc->n_layers - 1; i++) {
            mc->act[i] = act;
        }
    }
    if (mc->n_layers == 0) {
        goto done; /* no model yet: the program says --layers is required */
    }
    mc->act[mc->n_layers - 1] = dp_loss_output_act(cfg->train.loss);
    DP_TRY(parse_regularizers(dp_run_opts_get(o, "dropout"), dp_run_opts_get(o, "batchnorm"), mc));
    if (init) {
        DP_TRY(parse_inits("--init", init, mc->n_layers, mc->weight_init));
        mc->init = mc->weight_init[0].kind;
    }
    if (dp_run_opts_get(o, "bias-init")) {
        DP_TRY(parse_inits("--bias-init", dp_run_opts_get(o, "bias-init"), mc->n_layers,
                           mc->bias_init));
    }
    for (int i = 0; i < mc->n_layers - 1; i++) {
        mc->act[i] = lt.act[i] >= 0 ? (dp_act)lt.act[i] : mc->act[i];
        mc->dropout[i] = lt.dropout[i] >= 0.0f ? lt.dropout[i] : mc->dropout[i];
        mc->batchnorm[i] = mc->batchnorm[i] || lt.bn[i];
    }
done:
    return rc;
}

/* --- the rest ----------------------------------------------------------------------------- */

static int parse_milestones(const char *s, dp_sched_cfg *sc)
{
    const char *p = s;
    sc->n_milestones = 0;
    while (*p) {
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 1 || v > 1000000 ||
            sc->n_milestones == DP_SCHED_MAX_MILESTONES) {
            return dp_err(DP_EINVAL, "--milestones '%s': give up to %d epochs separated by "
                                     "commas, e.g. 30,60", s, DP_SCHED_MAX_MILESTONES);
        }
        sc->milestones[sc->n_milestones++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return DP_OK;
}

/* One option that needs no other: into cfg (a scratch one when only checking it). */
static int apply_one(int slot, const char *v, dp_run_cfg *cfg)
{
    const option *op = option_at(slot);
    char flag[80];
    long l = 0;
    int k;
    flag_of(slot, flag, sizeof flag);
    switch (op->kind) {
    case O_FIELD: return dp_run_field_from_text(cfg, op->section, op->key, v, flag);
    case O_OPTIMIZER:
        if ((k = dp_optim_parse(v)) < 0) {
            return dp_err(DP_EINVAL, "--optimizer: unknown value '%s' (see dptrain train --help)", v);
        }
        dp_optim_defaults((dp_optim_kind)k, &cfg->train.opt);
        return DP_OK;
    case O_NESTEROV: cfg->train.opt.nesterov = true; return DP_OK;
    case O_CENTERED: cfg->train.opt.centered = true; return DP_OK;
    case O_AMSGRAD: cfg->train.opt.amsgrad = true; return DP_OK;
    case O_MILESTONES: return parse_milestones(v, &cfg->train.sched);
    case O_BN_MOMENTUM: return dp_parse_float(flag, v, 0.0, 1.0, &cfg->model.bn_momentum);
    case O_BN_EPS: return dp_parse_float(flag, v, 1e-30, 1.0, &cfg->model.bn_eps);
    case O_LR_SCALING:
        if (strcmp(v, "none") == 0) {
            cfg->lr_scaling = 0;
        } else if (strncmp(v, "linear", 6) == 0 && (v[6] == '\0' || v[6] == ':')) {
            cfg->lr_scaling = 256;
            if (v[6] == ':') {
                int rc = dp_parse_int("--lr-scaling linear:BASE", v + 7, 1, 1L << 30, &l);
                cfg->lr_scaling = (int)l;
                return rc;
            }
        } else {
            return dp_err(DP_EINVAL, "--lr-scaling: unknown value '%s' (none, linear or "
                                     "linear:BASE_BATCH)", v);
        }
        return DP_OK;
    case O_BATCH:
        if (strcmp(v, "full") == 0) {
            cfg->train.batch = 0;
            return DP_OK;
        }
        k = dp_parse_int("--batch", v, 1, 1L << 30, &l);
        cfg->train.batch = (size_t)l;
        return k;
    case O_STEP_TIMEOUT:
        if (strcmp(v, "auto") == 0) {
            cfg->step_timeout = -1.0f;
        } else if (dp_parse_float(flag, v, 0.0, 1e9, &cfg->step_timeout) != DP_OK) {
            return dp_err(DP_EINVAL, "--step-timeout: '%s' is not auto or a number of seconds "
                                     "(0 for no watchdog)", v);
        }
        return DP_OK;
    case O_RESUME:
        if ((size_t)snprintf(cfg->resume, sizeof cfg->resume, "%s", v) >= sizeof cfg->resume) {
            return dp_err(DP_EINVAL, "--resume: the path is longer than %zu bytes",
                          sizeof cfg->resume - 1);
        }
        return DP_OK;
    case O_OVERWRITE: cfg->overwrite = true; return DP_OK;
    case O_ACTIVATION: {
        dp_act a;
        return parse_activation(v, &a);
    }
    case O_HP: {
        int n = 0;
        const dp_optim_field *hp = dp_optim_fields(&n);
        return dp_parse_float(flag, v, -1e30, 1e30,
                              (float *)((char *)&cfg->train.opt + hp[slot - (int)N_OPTIONS].offset));
    }
    default: return DP_OK; /* the model's lists: checked when applied, against the layers */
    }
}

int dp_run_opts_set(dp_run_opts *o, const char *key, const char *value)
{
    const int slot = slot_of(key);
    char flag[80];
    if (slot < 0) {
        return dp_err(DP_EINVAL, "unknown option '--%s' (see dptrain train --help)", key);
    }
    flag_of(slot, flag, sizeof flag);
    if (option_at(slot)->is_switch) {
        if (value && strcmp(value, "true") != 0 && strcmp(value, "false") != 0) {
            return dp_err(DP_EINVAL, "%s = '%s': must be true or false", key, value);
        }
        free(o->value[slot]);
        o->value[slot] = NULL;
        if (value && strcmp(value, "false") == 0) {
            return DP_OK; /* a switch set false is not given */
        }
        value = "true";
    } else {
        if (!value) {
            return dp_err(DP_EINVAL, "option '%s' needs a value", flag);
        }
        dp_run_cfg scratch;
        dp_run_defaults(&scratch);
        int rc = apply_one(slot, value, &scratch);
        if (rc != DP_OK) {
            return rc;
        }
        free(o->value[slot]);
    }
    o->value[slot] = strdup(value);
    return o->value[slot] ? DP_OK : dp_err(DP_ENOMEM, "out of memory (options)");
}

int dp_run_opts_apply(const dp_run_opts *o, dp_run_cfg *cfg)
{
    int rc = DP_OK;
    dp_run_cfg c = *cfg;
    /* The optimizer first (its defaults), the hyperparameters after every other option. */
    const int order_first = slot_of("optimizer");
    if (o->value[order_first]) {
        DP_TRY(apply_one(order_first, o->value[order_first], &c));
    }
    for (int s = 0; s < (int)N_SLOTS; s++) {
        if (o->value[s] && s != order_first && option_at(s)->kind != O_HP) {
            DP_TRY(apply_one(s, o->value[s], &c));
        }
    }
    int n = 0;
    const dp_optim_field *hp = dp_optim_fields(&n);
    for (int i = 0; i < n && i < MAX_HP; i++) {
        const char *v = o->value[N_OPTIONS + (size_t)i];
        if (v && !(hp[i].optims & (1u << c.train.opt.kind))) {
            DP_FAIL(DP_EINVAL, "--%s does not apply to --optimizer %s", hp[i].flag,
                    dp_optim_name(c.train.opt.kind));
        }
        if (v) {
            DP_TRY(apply_one((int)N_OPTIONS + i, v, &c));
        }
    }
    DP_TRY(apply_model(o, &c));
    if (c.overwrite && c.resume[0]) {
        DP_FAIL(DP_EINVAL, "--overwrite starts a new run in place of the old one; --resume "
                           "continues the old one: give one of them");
    }
    *cfg = c;
done:
    return rc;
}
