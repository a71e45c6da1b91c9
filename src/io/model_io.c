/* model_io.c: trained model files (HDF5): atomic save, validated load. The model part is
 * shared with checkpoints (ckpt.c), which add their training state to the same layout. */
#include "dptrain/io.h"

#include "dptrain/err.h"
#include "h5util.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DP_MODEL_FORMAT "dptrain-model"
#define DP_MODEL_FORMAT_VERSION 3 /* 2 added dropout and batch normalization, 3 the image
                                   * stage (convolution and pooling) */

int dp_io_check_finite(const float *v, size_t n, const char *path, dp_io_dir dir,
                       const char *what)
{
    for (size_t i = 0; v && i < n; i++) {
        if (!isfinite(v[i])) {
            return dir == DP_IO_WRITING
                       ? dp_err(DP_ENONFINITE, "%s: not written: %s %zu is %g", path, what, i,
                                v[i])
                       : dp_err(DP_EFORMAT,
                                "%s: %s %zu is %g: dptrain never writes non-finite values, so "
                                "the file is damaged",
                                path, what, i, v[i]);
        }
    }
    return DP_OK;
}

int dp_io_model_check_finite(const dp_model *m, const char *path, dp_io_dir dir)
{
    int rc = dp_io_check_finite(dp_model_params((dp_model *)m), dp_model_n_params(m), path,
                                dir, "parameter");
    if (rc == DP_OK) {
        rc = dp_io_check_finite(dp_model_buffers((dp_model *)m), dp_model_n_buffers(m), path,
                                dir, "batch-norm statistic");
    }
    return rc;
}

/* The image stage: attributes input_shape (C, H, W), stages (the layer tokens with their
 * settings, comma-separated, as --layers writes them) and stage_end ("flatten" or "gap");
 * group /conv/<j> per conv layer j (0-based among the stages) with weight (out_c, in_c, kh,
 * kw), bias (out_c) and, with batch norm, bn_gamma, bn_beta, bn_running_mean and
 * bn_running_var (out_c). */
static int write_stage(hid_t f, const char *path, const dp_model *m)
{
    int rc = DP_OK;
    const dp_model_cfg *mc = dp_model_config(m);
    hid_t g = H5I_INVALID_HID, lg = H5I_INVALID_HID;
    char toks[DP_MAX_STAGES * 128] = "", tok[128], name[32];
    const int in[3] = {mc->in_c, mc->in_h, mc->in_w};
    for (int j = 0; j < mc->n_stages; j++) {
        dp_stage_format(&mc->stage[j], true, tok, sizeof tok);
        strcat(toks, j ? "," : "");
        strcat(toks, tok);
    }
    DP_TRY(dp_h5_put_int_attr(f, path, "input_shape", in, 3));
    DP_TRY(dp_h5_put_str_attr(f, path, "stages", toks));
    DP_TRY(dp_h5_put_str_attr(f, path, "stage_end", mc->gap ? "gap" : "flatten"));
    DP_H5CHK(g = H5Gcreate2(f, "conv", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "creating group /conv");
    for (int j = 0; j < mc->n_stages; j++) {
        const dp_conv *c = dp_model_conv_const(m, j);
        if (!c) {
            continue;
        }
        hsize_t wd[4] = {(hsize_t)c->out_c, (hsize_t)c->in_c, (hsize_t)c->kh, (hsize_t)c->kw};
        hsize_t bd[1] = {(hsize_t)c->out_c};
        snprintf(name, sizeof name, "%d", j);
        DP_H5CHK(lg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 "creating group /conv/%s", name);
        DP_TRY(dp_h5_write_f32(lg, path, "weight", c->w, 4, wd));
        DP_TRY(dp_h5_write_f32(lg, path, "bias", c->b, 1, bd));
        float *t[4];
        if (dp_model_stage_bn(m, j, &t[0], &t[1], &t[2], &t[3])) {
            DP_TRY(dp_h5_write_f32(lg, path, "bn_gamma", t[0], 1, bd));
            DP_TRY(dp_h5_write_f32(lg, path, "bn_beta", t[1], 1, bd));
            DP_TRY(dp_h5_write_f32(lg, path, "bn_running_mean", t[2], 1, bd));
            DP_TRY(dp_h5_write_f32(lg, path, "bn_running_var", t[3], 1, bd));
        }
        DP_TRY(dp_h5_close(&lg, DP_OK, path));
    }
done:
    rc = dp_h5_close(&lg, rc, path);
    rc = dp_h5_close(&g, rc, path);
    return rc;
}

int dp_io_model_write(hid_t f, const char *path, const dp_model *m, const char *config_json,
                      const char *format)
{
    int rc = DP_OK;
    const dp_model_cfg *mc = dp_model_config(m);
    hid_t g = H5I_INVALID_HID, lg = H5I_INVALID_HID;
    char acts[DP_MAX_LAYERS * 16] = "", name[32];
    for (int i = 0; i < mc->n_layers; i++) {
        strcat(acts, i ? "," : "");
        strcat(acts, dp_act_name(mc->act[i]));
    }
    int nl = mc->n_layers, version = DP_MODEL_FORMAT_VERSION;
    DP_TRY(dp_h5_put_str_attr(f, path, "format", format));
    DP_TRY(dp_h5_put_int_attr(f, path, "format_version", &version, 1));
    DP_TRY(dp_h5_put_int_attr(f, path, "n_layers", &nl, 1));
    DP_TRY(dp_h5_put_int_attr(f, path, "sizes", mc->sizes, (hsize_t)nl + 1));
    DP_TRY(dp_h5_put_str_attr(f, path, "activations", acts));
    DP_TRY(dp_h5_put_str_attr(f, path, "init", dp_init_name(mc->init)));
    DP_TRY(dp_h5_put_str_attr(f, path, "config", config_json ? config_json : ""));
    int bn[DP_MAX_LAYERS];
    for (int i = 0; i < nl; i++) {
        bn[i] = mc->batchnorm[i];
    }
    DP_TRY(dp_h5_put_f32_attr(f, path, "dropout", mc->dropout, (hsize_t)nl));
    DP_TRY(dp_h5_put_int_attr(f, path, "batchnorm", bn, (hsize_t)nl));
    DP_TRY(dp_h5_put_f32_attr(f, path, "bn_momentum", &mc->bn_momentum, 1));
    DP_TRY(dp_h5_put_f32_attr(f, path, "bn_eps", &mc->bn_eps, 1));
    if (mc->n_stages > 0) {
        DP_TRY(write_stage(f, path, m));
    }
    DP_H5CHK(g = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "creating group /layers");
    for (int i = 0; i < nl; i++) {
        const dp_dense *l = dp_model_layer_const(m, i);
        hsize_t wd[2] = {(hsize_t)l->out, (hsize_t)l->in}, bd[1] = {(hsize_t)l->out};
        snprintf(name, sizeof name, "%d", i);
        DP_H5CHK(lg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 "creating group /layers/%s", name);
        DP_TRY(dp_h5_write_f32(lg, path, "weight", l->w, 2, wd));
        DP_TRY(dp_h5_write_f32(lg, path, "bias", l->b, 1, bd));
        DP_TRY(dp_h5_put_str_attr(lg, path, "activation", dp_act_name(l->act)));
        float *gamma, *beta, *rmean, *rvar;
        if (dp_model_bn_layer(m, i, &gamma, &beta, &rmean, &rvar)) {
            DP_TRY(dp_h5_write_f32(lg, path, "bn_gamma", gamma, 1, bd));
            DP_TRY(dp_h5_write_f32(lg, path, "bn_beta", beta, 1, bd));
            DP_TRY(dp_h5_write_f32(lg, path, "bn_running_mean", rmean, 1, bd));
            DP_TRY(dp_h5_write_f32(lg, path, "bn_running_var", rvar, 1, bd));
        }
        DP_TRY(dp_h5_close(&lg, DP_OK, path));
    }
done:
    rc = dp_h5_close(&lg, rc, path);
    rc = dp_h5_close(&g, rc, path);
    return rc;
}

int dp_model_save(const dp_model *m, const char *path, const char *config_json)
{
    int rc = DP_OK;
    dp_h5_atomic a = DP_H5_ATOMIC_INIT;
    DP_TRY(dp_io_model_check_finite(m, path, DP_IO_WRITING));
    DP_TRY(dp_h5_atomic_create(&a, path, 0));
    DP_TRY(dp_io_model_write(a.f, path, m, config_json, DP_MODEL_FORMAT));
    rc = dp_h5_atomic_commit(&a, NULL, NULL);
done:
    if (rc != DP_OK) {
        dp_h5_atomic_abort(&a);
    }
    return rc;
}

/* The image stage's attributes (write_stage) into mc; checks the shapes they give. */
static int read_stage_cfg(hid_t f, const char *path, dp_model_cfg *mc)
{
    int rc = DP_OK, in[3] = {0, 0, 0}, feat = 0;
    int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1];
    char *toks = NULL, *end = NULL, *save = NULL;
    DP_TRY(dp_h5_get_int_attr(f, path, "input_shape", in, 3));
    DP_TRY(dp_h5_get_str_attr(f, path, "stages", &toks));
    DP_TRY(dp_h5_get_str_attr(f, path, "stage_end", &end));
    mc->in_c = in[0];
    mc->in_h = in[1];
    mc->in_w = in[2];
    mc->n_stages = 0;
    for (char *t = strtok_r(toks, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (mc->n_stages == DP_MAX_STAGES ||
            dp_stage_parse(t, DP_ACT_IDENTITY, &mc->stage[mc->n_stages]) != DP_OK) {
            DP_FAIL(DP_EFORMAT, "%s: stages: layer %d ('%s') is not one this dptrain reads "
                                "(at most %d)", path, mc->n_stages + 1, t, DP_MAX_STAGES);
        }
        mc->n_stages++;
    }
    if (mc->n_stages == 0 || (strcmp(end, "flatten") && strcmp(end, "gap"))) {
        DP_FAIL(DP_EFORMAT, "%s: stages '%s', stage_end '%s': want layers and flatten or gap",
                path, toks, end);
    }
    mc->gap = strcmp(end, "gap") == 0;
    if (dp_model_cfg_shapes(mc, c, h, w, &feat) != DP_OK || feat != mc->sizes[0]) {
        DP_FAIL(DP_EFORMAT, "%s: the image stage (input %dx%dx%d, %s) does not give the %d "
                            "inputs of the first dense layer", path, in[0], in[1], in[2], toks,
                mc->sizes[0]);
    }
done:
    free(toks);
    free(end);
    return rc;
}

/* The architecture a model file's attributes describe (formats 1 and 2; a checkpoint is a
 * model file with training state added: its weights load the same). */
static int read_model_cfg(hid_t f, const char *path, dp_model_cfg *mc)
{
    int rc = DP_OK, version = 0;
    char *format = NULL, *acts = NULL, *init = NULL;
    DP_TRY(dp_h5_get_str_attr(f, path, "format", &format));
    if (strcmp(format, DP_MODEL_FORMAT) != 0 && strcmp(format, "dptrain-checkpoint") != 0) {
        DP_FAIL(DP_EFORMAT, "%s: format is '%s', not '%s' or 'dptrain-checkpoint'", path,
                format, DP_MODEL_FORMAT);
    }
    DP_TRY(dp_h5_get_int_attr(f, path, "format_version", &version, 1));
    if (version < 1 || version > DP_MODEL_FORMAT_VERSION) {
        DP_FAIL(DP_EFORMAT, "%s: format version %d; this dptrain reads version %d", path,
                version, DP_MODEL_FORMAT_VERSION);
    }
    DP_TRY(dp_h5_get_int_attr(f, path, "n_layers", &mc->n_layers, 1));
    if (mc->n_layers < 1 || mc->n_layers > DP_MAX_LAYERS) {
        DP_FAIL(DP_EFORMAT, "%s: n_layers is %d", path, mc->n_layers);
    }
    DP_TRY(dp_h5_get_int_attr(f, path, "sizes", mc->sizes, (hsize_t)mc->n_layers + 1));
    DP_TRY(dp_h5_get_str_attr(f, path, "activations", &acts));
    char *save = NULL, *tok = strtok_r(acts, ",", &save);
    for (int i = 0; i < mc->n_layers; i++, tok = strtok_r(NULL, ",", &save)) {
        int a = tok ? dp_act_parse(tok) : -1;
        if (a < 0) {
            DP_FAIL(DP_EFORMAT, "%s: activation of layer %d is '%s'", path, i, tok ? tok : "");
        }
        mc->act[i] = (dp_act)a;
    }
    DP_TRY(dp_h5_get_str_attr(f, path, "init", &init));
    mc->init = dp_init_parse(init) < 0 ? DP_INIT_ZERO : (dp_init)dp_init_parse(init);
    if (version >= 2) {
        int bn[DP_MAX_LAYERS];
        DP_TRY(dp_h5_get_f32_attr(f, path, "dropout", mc->dropout, (hsize_t)mc->n_layers));
        DP_TRY(dp_h5_get_int_attr(f, path, "batchnorm", bn, (hsize_t)mc->n_layers));
        for (int i = 0; i < mc->n_layers; i++) {
            mc->batchnorm[i] = bn[i] != 0;
        }
        DP_TRY(dp_h5_get_f32_attr(f, path, "bn_momentum", &mc->bn_momentum, 1));
        DP_TRY(dp_h5_get_f32_attr(f, path, "bn_eps", &mc->bn_eps, 1));
    }
    bool has_stage = false;
    if (version >= 3) {
        DP_TRY(dp_h5_has_attr(f, path, "stages", &has_stage));
    }
    if (has_stage) {
        DP_TRY(read_stage_cfg(f, path, mc));
    }
done:
    free(format);
    free(acts);
    free(init);
    return rc;
}

/* The tensors the attributes promise, checked in the file before the model is built. */
static int check_tensors(hid_t f, const char *path, const dp_model_cfg *mc)
{
    int rc = DP_OK;
    char name[64];
    double n_params = 0.0;
    for (int i = 0; i < mc->n_layers; i++) {
        if (mc->sizes[i] < 1 || mc->sizes[i + 1] < 1) {
            DP_FAIL(DP_EFORMAT, "%s: layer sizes %d, %d", path, mc->sizes[i], mc->sizes[i + 1]);
        }
        hsize_t wd[2] = {(hsize_t)mc->sizes[i + 1], (hsize_t)mc->sizes[i]}, bd[1] = {wd[0]};
        snprintf(name, sizeof name, "/layers/%d/weight", i);
        DP_TRY(dp_h5_read_f32(f, path, name, NULL, 2, wd)); /* checks only */
        snprintf(name, sizeof name, "/layers/%d/bias", i);
        DP_TRY(dp_h5_read_f32(f, path, name, NULL, 1, bd));
        n_params += ((double)wd[1] + 1.0 + (mc->batchnorm[i] ? 2.0 : 0.0)) * (double)wd[0];
    }
    if (mc->n_stages > 0) {
        int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], feat;
        (void)dp_model_cfg_shapes(mc, c, h, w, &feat); /* checked by read_stage_cfg */
        for (int j = 0; j < mc->n_stages; j++) {
            const dp_stage_cfg *st = &mc->stage[j];
            if (st->kind != DP_STAGE_CONV) {
                continue;
            }
            hsize_t wd[4] = {(hsize_t)st->out_c, (hsize_t)c[j], (hsize_t)st->kh, (hsize_t)st->kw};
            hsize_t bd[1] = {wd[0]};
            snprintf(name, sizeof name, "/conv/%d/weight", j);
            DP_TRY(dp_h5_read_f32(f, path, name, NULL, 4, wd));
            snprintf(name, sizeof name, "/conv/%d/bias", j);
            DP_TRY(dp_h5_read_f32(f, path, name, NULL, 1, bd));
            n_params += (double)wd[0] * ((double)wd[1] * wd[2] * wd[3] + 1.0);
        }
    }
    if (n_params > (double)(SIZE_MAX / 4 / sizeof(float))) {
        DP_FAIL(DP_EFORMAT, "%s: %g parameters: too many for memory", path, n_params);
    }
done:
    return rc;
}

/* Every layer's weights, bias and batch-norm tensors into m. */
static int read_tensors(hid_t f, const char *path, dp_model *m)
{
    int rc = DP_OK;
    char name[64];
    static const char *const bn_names[4] = {"bn_gamma", "bn_beta", "bn_running_mean",
                                            "bn_running_var"};
    for (int j = 0; j < dp_model_config(m)->n_stages; j++) {
        dp_conv *c = dp_model_conv(m, j);
        if (!c) {
            continue;
        }
        hsize_t wd[4] = {(hsize_t)c->out_c, (hsize_t)c->in_c, (hsize_t)c->kh, (hsize_t)c->kw};
        hsize_t bd[1] = {(hsize_t)c->out_c};
        snprintf(name, sizeof name, "/conv/%d/weight", j);
        DP_TRY(dp_h5_read_f32(f, path, name, c->w, 4, wd));
        snprintf(name, sizeof name, "/conv/%d/bias", j);
        DP_TRY(dp_h5_read_f32(f, path, name, c->b, 1, bd));
        float *bnt[4];
        if (dp_model_stage_bn(m, j, &bnt[0], &bnt[1], &bnt[2], &bnt[3])) {
            for (int t = 0; t < 4; t++) {
                snprintf(name, sizeof name, "/conv/%d/%s", j, bn_names[t]);
                DP_TRY(dp_h5_read_f32(f, path, name, bnt[t], 1, bd));
            }
        }
    }
    for (int i = 0; i < dp_model_config(m)->n_layers; i++) {
        dp_dense *l = dp_model_layer(m, i);
        hsize_t wd[2] = {(hsize_t)l->out, (hsize_t)l->in}, bd[1] = {(hsize_t)l->out};
        snprintf(name, sizeof name, "/layers/%d/weight", i);
        DP_TRY(dp_h5_read_f32(f, path, name, l->w, 2, wd));
        snprintf(name, sizeof name, "/layers/%d/bias", i);
        DP_TRY(dp_h5_read_f32(f, path, name, l->b, 1, bd));
        float *bnt[4];
        if (dp_model_bn_layer(m, i, &bnt[0], &bnt[1], &bnt[2], &bnt[3])) {
            for (int t = 0; t < 4; t++) {
                snprintf(name, sizeof name, "/layers/%d/%s", i, bn_names[t]);
                DP_TRY(dp_h5_read_f32(f, path, name, bnt[t], 1, bd));
            }
        }
    }
done:
    return rc;
}

int dp_io_model_read(hid_t f, const char *path, int max_batch, dp_model **out,
                     char **config_json)
{
    int rc = DP_OK;
    char *cfgtext = NULL;
    dp_model *m = NULL;
    dp_model_cfg mc = {0};
    *out = NULL;
    if (config_json) {
        *config_json = NULL;
    }
    DP_TRY(read_model_cfg(f, path, &mc));
    DP_TRY(check_tensors(f, path, &mc));
    mc.max_batch = max_batch;
    DP_TRY(dp_model_create(&mc, &m));
    DP_TRY(read_tensors(f, path, m));
    if (config_json) {
        bool has_config = false;
        DP_TRY(dp_h5_has_attr(f, path, "config", &has_config));
        if (has_config) {
            DP_TRY(dp_h5_get_str_attr(f, path, "config", &cfgtext));
        } else if (!(cfgtext = strdup(""))) {
            DP_FAIL(DP_ENOMEM, "out of memory");
        }
        *config_json = cfgtext;
        cfgtext = NULL;
    }
    *out = m;
    m = NULL;
done:
    dp_model_free(&m);
    free(cfgtext);
    return rc;
}

int dp_model_load(const char *path, int max_batch, dp_model **out, char **config_json)
{
    int rc = DP_OK;
    hid_t f = H5I_INVALID_HID;
    *out = NULL;
    if (config_json) {
        *config_json = NULL;
    }
    DP_TRY(dp_io_check_file(path, "model"));
    DP_TRY(dp_h5_open_ro(path, "not an HDF5 file, or a damaged one", &f));
    DP_TRY(dp_io_model_read(f, path, max_batch, out, config_json));
    DP_TRY(dp_io_model_check_finite(*out, path, DP_IO_READING));
done:
    rc = dp_h5_close(&f, rc, path);
    if (rc != DP_OK) {
        dp_model_free(out);
        if (config_json) {
            free(*config_json);
            *config_json = NULL;
        }
    }
    return rc;
}

int dp_model_format_version(const char *path)
{
    int v = 0;
    dp_h5_quiet();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); /* no message: 0 says it */
    if (f >= 0) {
        if (dp_h5_get_int_attr(f, path, "format_version", &v, 1) != DP_OK) {
            v = 0;
        }
        (void)dp_h5_close(&f, DP_OK, path);
    }
    return v;
}
