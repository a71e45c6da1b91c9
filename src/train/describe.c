/* describe.c: dp_describe_file: what a model file or checkpoint holds, as text lines and as
 * one JSON object (through jansson): the format, the layers, the parameter count, the saved
 * configuration and, for a checkpoint, the training state and where it came from. */
#define _GNU_SOURCE
#include "dptrain/use.h"

#include "dptrain/ckpt.h"
#include "dptrain/err.h"
#include "dptrain/io.h"

#include <jansson.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What a file holds: the model, its configuration and, for a checkpoint, the state. */
typedef struct {
    const char *path;
    bool is_ckpt;
    int format_version;
    dp_model *m;
    char *config;      /* a model file's saved configuration ("" if none) */
    dp_train_state st; /* a checkpoint's */
    dp_ckpt_meta meta; /* a checkpoint's */
} file_info;

static int info_load(file_info *x)
{
    int rc = DP_OK;
    x->is_ckpt = dp_ckpt_is_checkpoint(x->path);
    if (x->is_ckpt) {
        DP_TRY(dp_ckpt_load(x->path, 1, &x->m, &x->st, &x->meta));
    } else {
        DP_TRY(dp_model_load(x->path, 1, &x->m, &x->config));
    }
    x->format_version = dp_model_format_version(x->path);
done:
    return rc;
}

static void info_free(file_info *x)
{
    dp_model_free(&x->m);
    free(x->config);
    dp_train_state_free(&x->st);
    dp_ckpt_meta_free(&x->meta);
}

static const char *saved_config(const file_info *x)
{
    return x->is_ckpt ? x->meta.config_json : x->config;
}

/* torch's name of optimizer slot i, or "slot<i>" if the state's optimizer has no such slot. */
static const char *slot_name(const file_info *x, int i, char *buf, size_t cap)
{
    const char *s = dp_optim_n_slots(&x->st.opt) == x->st.n_slots
                        ? dp_optim_slot_name(&x->st.opt, i) : NULL;
    if (!s) {
        snprintf(buf, cap, "slot%d", i);
        s = buf;
    }
    return s;
}

/* --- text ------------------------------------------------------------------------------- */

static void time_text(int64_t t, char *buf, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0) {
        snprintf(buf, cap, "%lld", (long long)t);
    }
}

/* " train loss 0.1234" when the figure is finite. */
static void print_figure(FILE *f, const char *name, double v)
{
    if (isfinite(v)) {
        fprintf(f, " %s %.4f", name, v);
    }
}

/* Appends a formatted line to buf (cap) at *len. */
static void add_line(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add_line(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    if (*len >= cap) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    *len += n > 0 ? (size_t)n : 0;
}

void dp_model_table(const dp_model_cfg *mc, const char *indent, char *buf, size_t cap)
{
    int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], feat = 0;
    size_t len = 0;
    buf[0] = '\0';
    add_line(buf, cap, &len, "%s%-4s %-18s %-12s %12s\n", indent, "", "layer", "output",
             "parameters");
    if (mc->n_stages > 0 && dp_model_cfg_shapes(mc, c, h, w, &feat) == DP_OK) {
        char shape[48];
        snprintf(shape, sizeof shape, "%dx%dx%d", c[0], h[0], w[0]);
        add_line(buf, cap, &len, "%s%-4s %-18s %s\n", indent, "", "input", shape);
        for (int j = 0; j < mc->n_stages; j++) {
            const dp_stage_cfg *st = &mc->stage[j];
            char tok[96];
            long np = 0;
            dp_stage_format(st, false, tok, sizeof tok);
            snprintf(shape, sizeof shape, "%dx%dx%d", c[j + 1], h[j + 1], w[j + 1]);
            if (st->kind == DP_STAGE_CONV) {
                np = (long)st->out_c * c[j] * st->kh * st->kw + st->out_c +
                     (st->batchnorm ? 2L * st->out_c : 0);
            }
            add_line(buf, cap, &len, "%s%-4d %-18s %-12s %12ld", indent, j + 1, tok, shape, np);
            if (st->kind == DP_STAGE_CONV) {
                add_line(buf, cap, &len, "  %s%s", dp_act_name(st->act),
                         st->batchnorm ? " batchnorm" : "");
            }
            if (st->dropout > 0.0f) {
                add_line(buf, cap, &len, " dropout %g", st->dropout);
            }
            add_line(buf, cap, &len, "\n");
        }
        snprintf(shape, sizeof shape, "%d", feat);
        add_line(buf, cap, &len, "%s%-4s %-18s %s\n", indent, "",
                 mc->gap ? "global avg pool" : "flatten", shape);
    } else {
        add_line(buf, cap, &len, "%s%-4s %-18s %d\n", indent, "", "input", mc->sizes[0]);
    }
    for (int i = 0; i < mc->n_layers; i++) {
        const long in = mc->sizes[i], out = mc->sizes[i + 1];
        char shape[24];
        snprintf(shape, sizeof shape, "%ld", out);
        add_line(buf, cap, &len, "%s%-4d %-18s %-12s %12ld  %s%s", indent,
                 mc->n_stages + i + 1, "dense", shape,
                 out * in + out + (mc->batchnorm[i] ? 2 * out : 0), dp_act_name(mc->act[i]),
                 mc->batchnorm[i] ? " batchnorm" : "");
        if (mc->dropout[i] > 0.0f) {
            add_line(buf, cap, &len, " dropout %g", mc->dropout[i]);
        }
        add_line(buf, cap, &len, "\n");
    }
}

void dp_model_conv_kernels(const dp_model *m, char *buf, size_t cap)
{
    const int L = dp_model_config(m)->n_stages;
    bool done[DP_MAX_STAGES] = {false};
    size_t len = 0;
    buf[0] = '\0';
    for (int j = 0; j < L; j++) {
        const char *name = dp_model_conv_kernel(m, j);
        if (!name[0] || done[j]) {
            continue;
        }
        add_line(buf, cap, &len, "%s%s: layer", len ? "; " : "", name);
        const char *sep = " ";
        for (int k = j; k < L; k++) {
            if (!done[k] && strcmp(dp_model_conv_kernel(m, k), name) == 0) {
                done[k] = true;
                add_line(buf, cap, &len, "%s%d", sep, k + 1);
                sep = ", ";
            }
        }
    }
}

static void text_model(FILE *f, const file_info *x)
{
    const dp_model_cfg *mc = dp_model_config(x->m);
    const char *cfg = saved_config(x);
    bool any_bn = false;
    fprintf(f, "file: %s\n", x->path);
    fprintf(f, "format: %s, layout version %d\n",
            x->is_ckpt ? "dptrain-checkpoint" : "dptrain-model", x->format_version);
    char spec[2048], table[8192];
    dp_model_cfg_text(mc, spec, sizeof spec);
    dp_model_table(mc, "  ", table, sizeof table);
    fprintf(f, "layers: %s (%d layer%s, %zu parameters)\n%s", spec, mc->n_stages + mc->n_layers,
            mc->n_stages + mc->n_layers == 1 ? "" : "s", dp_model_n_params(x->m), table);
    for (int i = 0; i < mc->n_layers; i++) {
        any_bn = any_bn || mc->batchnorm[i];
    }
    for (int j = 0; j < mc->n_stages; j++) {
        any_bn = any_bn || mc->stage[j].batchnorm;
    }
    if (any_bn) {
        fprintf(f, "batchnorm: momentum %g, eps %g\n", mc->bn_momentum, mc->bn_eps);
    }
    fprintf(f, "config: %s\n", cfg && cfg[0] ? cfg : "(none)");
}

static void text_checkpoint(FILE *f, const file_info *x)
{
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
    const double pf = dp_use_saved_cfg(saved_config(x), &run) ? run.train.plateau_factor : 0.0;
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

/* --- JSON --------------------------------------------------------------------------------
 * Built with jansson and dumped with JSON_REAL_PRECISION(10): figures keep 10 significant
 * digits, and the saved configuration (written with 9) comes out as it went in. */

/* A figure, or null if it is NaN or infinite. */
static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* A float as the number with the fewest digits that reads back as the same float (0.1f is
 * 0.1, not 0.100000001). */
static json_t *jfloat(float f)
{
    char buf[32];
    if (!isfinite(f)) {
        return json_null();
    }
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) {
            break;
        }
    }
    return json_real(strtod(buf, NULL));
}

static json_t *jhex(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
    return json_string(buf);
}

/* The saved configuration: the object it holds, the text itself if it is not a JSON object,
 * or null if there is none. */
static json_t *jconfig(const char *cfg)
{
    if (!cfg || !cfg[0]) {
        return json_null();
    }
    json_t *o = json_loads(cfg, 0, NULL);
    if (json_is_object(o)) {
        return o;
    }
    json_decref(o);
    return json_string(cfg);
}

/* json_object_set_new, keeping the first failure (NULL value or out of memory) in *ok. */
static void put(json_t *o, const char *key, json_t *v, bool *ok)
{
    if (!v || json_object_set_new(o, key, v) != 0) {
        *ok = false;
    }
}

static void append(json_t *a, json_t *v, bool *ok)
{
    if (!v || json_array_append_new(a, v) != 0) {
        *ok = false;
    }
}

static json_t *json_model(const file_info *x, bool *ok)
{
    const dp_model_cfg *mc = dp_model_config(x->m);
    json_t *o = json_object(), *sizes = json_array(), *layers = json_array();
    put(o, "file", json_string(x->path), ok);
    put(o, "format", json_string(x->is_ckpt ? "dptrain-checkpoint" : "dptrain-model"), ok);
    put(o, "format_version", json_integer(x->format_version), ok);
    for (int i = 0; i <= mc->n_layers; i++) {
        append(sizes, json_integer(mc->sizes[i]), ok);
    }
    put(o, "sizes", sizes, ok);
    for (int i = 0; i < mc->n_layers; i++) {
        json_t *l = json_object();
        put(l, "in", json_integer(mc->sizes[i]), ok);
        put(l, "out", json_integer(mc->sizes[i + 1]), ok);
        put(l, "activation", json_string(dp_act_name(mc->act[i])), ok);
        put(l, "dropout", jfloat(mc->dropout[i]), ok);
        put(l, "batchnorm", json_boolean(mc->batchnorm[i]), ok);
        append(layers, l, ok);
    }
    put(o, "layers", layers, ok);
    if (mc->n_stages > 0) {
        json_t *img = json_object(), *in = json_array(), *st = json_array();
        append(in, json_integer(mc->in_c), ok);
        append(in, json_integer(mc->in_h), ok);
        append(in, json_integer(mc->in_w), ok);
        for (int j = 0; j < mc->n_stages; j++) {
            char tok[128];
            dp_stage_format(&mc->stage[j], true, tok, sizeof tok);
            append(st, json_string(tok), ok);
        }
        put(img, "input", in, ok);
        put(img, "layers", st, ok);
        put(img, "end", json_string(mc->gap ? "gap" : "flatten"), ok);
        put(o, "image", img, ok);
    }
    put(o, "n_params", json_integer((json_int_t)dp_model_n_params(x->m)), ok);
    put(o, "bn_momentum", jfloat(mc->bn_momentum), ok);
    put(o, "bn_eps", jfloat(mc->bn_eps), ok);
    put(o, "config", jconfig(saved_config(x)), ok);
    return o;
}

static json_t *json_checkpoint(const file_info *x, bool *ok)
{
    const dp_train_state *s = &x->st;
    const dp_ckpt_meta *me = &x->meta;
    char nb[32];
    json_t *o = json_object(), *slots = json_array(), *data = json_object(),
           *history = json_array();
    put(o, "format_version", json_integer(me->format_version), ok);
    put(o, "program_version", json_string(me->program_version ? me->program_version : ""), ok);
    put(o, "n_ranks", json_integer(me->n_ranks), ok);
    put(o, "written_unix", json_integer(me->written_unix), ok);
    put(o, "seed", json_integer((json_int_t)s->seed), ok);
    put(o, "epoch", json_integer(s->epoch), ok);
    put(o, "next_batch", json_integer((json_int_t)s->next_batch), ok);
    put(o, "step", json_integer(s->step), ok);
    put(o, "finished", json_boolean(s->finished), ok);
    put(o, "seen", json_integer((json_int_t)s->seen), ok);
    put(o, "lr", jnum(s->lr), ok);
    put(o, "lr_factor", jnum(s->lr_factor), ok);
    put(o, "optimizer", json_string(dp_optim_name(s->opt.kind)), ok);
    for (int i = 0; i < s->n_slots; i++) {
        append(slots, json_string(slot_name(x, i, nb, sizeof nb)), ok);
    }
    put(o, "slots", slots, ok);
    put(o, "opt_scalar", jnum(s->opt_scalar), ok);
    put(o, "best_val", jnum(s->best_val), ok);
    put(o, "best_epoch", json_integer(s->best_epoch), ok);
    put(o, "bad_epochs", json_integer(s->bad_epochs), ok);
    put(o, "stopped_early", json_boolean(s->stopped_early), ok);
    put(o, "best_weights_kept", json_boolean(s->best_params != NULL), ok);
    put(o, "plateau_best", jnum(s->plateau_best), ok);
    put(o, "plateau_bad", json_integer(s->plateau_bad), ok);
    put(data, "path", json_string(me->data_path ? me->data_path : ""), ok);
    put(data, "n_features", json_integer((json_int_t)me->n_features), ok);
    put(data, "train_rows", json_integer((json_int_t)me->train_rows), ok);
    put(data, "test_rows", json_integer((json_int_t)me->test_rows), ok);
    put(data, "train_fingerprint", jhex(me->train_fingerprint), ok);
    put(data, "test_fingerprint", jhex(me->test_fingerprint), ok);
    put(o, "data", data, ok);
    for (int i = 0; i < s->n_history; i++) {
        const dp_epoch_record *r = &s->history[i];
        json_t *e = json_object();
        put(e, "epoch", json_integer(r->epoch), ok);
        put(e, "step", json_integer(r->step), ok);
        put(e, "lr", jnum(r->lr), ok);
        put(e, "train_loss", jnum(r->train_loss), ok);
        put(e, "train_accuracy", jnum(r->train_accuracy), ok);
        put(e, "val_loss", jnum(r->val_loss), ok);
        put(e, "val_accuracy", jnum(r->val_accuracy), ok);
        put(e, "test_loss", jnum(r->test_loss), ok);
        put(e, "test_accuracy", jnum(r->test_accuracy), ok);
        put(e, "samples_per_s", jnum(r->samples_per_s), ok);
        put(e, "seconds", jnum(r->seconds), ok);
        append(history, e, ok);
    }
    put(o, "history", history, ok);
    return o;
}

static int info_json(const file_info *x, char **out)
{
    bool ok = true;
    json_t *o = json_model(x, &ok);
    if (x->is_ckpt) {
        put(o, "checkpoint", json_checkpoint(x, &ok), &ok);
    }
    *out = ok ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(o);
    return *out ? DP_OK : dp_err(DP_ENOMEM, "%s: out of memory describing it as JSON", x->path);
}

int dp_describe_file(const char *path, FILE *text, char **json)
{
    file_info x = {.path = path};
    if (json) {
        *json = NULL;
    }
    int rc = info_load(&x);
    if (rc == DP_OK && json) {
        rc = info_json(&x, json);
    }
    if (rc == DP_OK && text) {
        text_model(text, &x);
        if (x.is_ckpt) {
            text_checkpoint(text, &x);
        }
    }
    info_free(&x);
    return rc;
}
