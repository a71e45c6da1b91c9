/* model_io.c: trained model files (HDF5): atomic save, validated load. */
#include "dptrain/io.h"

#include "dptrain/err.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DP_MODEL_FORMAT "dptrain-model"
#define DP_MODEL_FORMAT_VERSION 2 /* 2 added dropout and batch normalization */

#define DP_H5(call)                                                                     \
    do {                                                                                \
        if ((call) < 0) {                                                               \
            rc = dp_err(DP_EIO, "%s: HDF5 call failed: %s (%s:%d)", path, #call, __FILE__, \
                        __LINE__);                                                      \
            goto done;                                                                  \
        }                                                                               \
    } while (0)

static int put_str_attr(hid_t obj, const char *path, const char *name, const char *value)
{
    int rc = DP_OK;
    hid_t t = H5I_INVALID_HID, sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    DP_H5(t = H5Tcopy(H5T_C_S1));
    DP_H5(H5Tset_size(t, strlen(value) + 1));
    DP_H5(H5Tset_strpad(t, H5T_STR_NULLTERM));
    DP_H5(sp = H5Screate(H5S_SCALAR));
    DP_H5(a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT));
    DP_H5(H5Awrite(a, t, value));
done:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return rc;
}

/* Reads a string attribute (fixed or variable length) into a malloc'd buffer. */
static int get_str_attr(hid_t obj, const char *path, const char *name, char **out)
{
    int rc = DP_OK;
    hid_t a = H5I_INVALID_HID, ft = H5I_INVALID_HID, mt = H5I_INVALID_HID;
    char *buf = NULL;
    *out = NULL;
    if (H5Aexists(obj, name) <= 0) {
        DP_FAIL(DP_EFORMAT, "%s: attribute '%s' is missing", path, name);
    }
    DP_H5(a = H5Aopen(obj, name, H5P_DEFAULT));
    DP_H5(ft = H5Aget_type(a));
    if (H5Tget_class(ft) != H5T_STRING) {
        DP_FAIL(DP_EFORMAT, "%s: attribute '%s' is not a string", path, name);
    }
    if (H5Tis_variable_str(ft) > 0) {
        char *vs = NULL;
        DP_H5(mt = H5Tcopy(H5T_C_S1));
        DP_H5(H5Tset_size(mt, H5T_VARIABLE));
        DP_H5(H5Aread(a, mt, &vs));
        buf = strdup(vs ? vs : "");
        H5free_memory(vs);
    } else {
        size_t len = H5Tget_size(ft);
        DP_CALLOC(buf, len + 1);
        DP_H5(mt = H5Tcopy(H5T_C_S1));
        DP_H5(H5Tset_size(mt, len + 1));
        DP_H5(H5Aread(a, mt, buf));
    }
    if (!buf) {
        DP_FAIL(DP_ENOMEM, "out of memory reading attribute %s", name);
    }
    *out = buf;
    buf = NULL;
done:
    free(buf);
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    return rc;
}

/* Writes n values of memory type mt as a scalar (n == 1) or 1-D attribute of file type ft. */
static int put_num_attr(hid_t obj, const char *path, const char *name, hid_t ft, hid_t mt,
                        const void *v, hsize_t n)
{
    int rc = DP_OK;
    hid_t sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    DP_H5(sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL));
    DP_H5(a = H5Acreate2(obj, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT));
    DP_H5(H5Awrite(a, mt, v));
done:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

/* Reads a numeric attribute of exactly n elements as memory type mt. */
static int get_num_attr(hid_t obj, const char *path, const char *name, hid_t mt, void *v,
                        hsize_t n)
{
    int rc = DP_OK;
    hid_t a = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    if (H5Aexists(obj, name) <= 0) {
        DP_FAIL(DP_EFORMAT, "%s: attribute '%s' is missing", path, name);
    }
    DP_H5(a = H5Aopen(obj, name, H5P_DEFAULT));
    DP_H5(sp = H5Aget_space(a));
    hssize_t have = H5Sget_simple_extent_npoints(sp);
    if (have != (hssize_t)n) {
        DP_FAIL(DP_EFORMAT, "%s: attribute '%s' has %lld values, expected %llu", path, name,
                (long long)have, (unsigned long long)n);
    }
    DP_H5(H5Aread(a, mt, v));
done:
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    return rc;
}

static int put_int_attr(hid_t obj, const char *path, const char *name, const int *v, hsize_t n)
{
    return put_num_attr(obj, path, name, H5T_STD_I32LE, H5T_NATIVE_INT, v, n);
}

static int get_int_attr(hid_t obj, const char *path, const char *name, int *v, hsize_t n)
{
    return get_num_attr(obj, path, name, H5T_NATIVE_INT, v, n);
}

static int put_f32_attr(hid_t obj, const char *path, const char *name, const float *v, hsize_t n)
{
    return put_num_attr(obj, path, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v, n);
}

static int get_f32_attr(hid_t obj, const char *path, const char *name, float *v, hsize_t n)
{
    return get_num_attr(obj, path, name, H5T_NATIVE_FLOAT, v, n);
}

static int write_f32(hid_t loc, const char *path, const char *name, const float *v, int rank,
                     const hsize_t *dims)
{
    int rc = DP_OK;
    hid_t sp = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    DP_H5(sp = H5Screate_simple(rank, dims, NULL));
    DP_H5(ds = H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    DP_H5(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
done:
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

/* Reads dataset name, which must have exactly the given shape, as floats. */
static int read_f32(hid_t loc, const char *path, const char *name, float *v, int rank,
                    const hsize_t *dims)
{
    int rc = DP_OK;
    hid_t ds = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    hsize_t have[H5S_MAX_RANK];
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) {
        DP_FAIL(DP_EFORMAT, "%s: dataset %s is missing", path, name);
    }
    DP_H5(ds = H5Dopen2(loc, name, H5P_DEFAULT));
    DP_H5(sp = H5Dget_space(ds));
    int r = H5Sget_simple_extent_ndims(sp);
    bool same = (r == rank);
    if (same) {
        H5Sget_simple_extent_dims(sp, have, NULL);
        for (int i = 0; i < rank; i++) {
            same = same && have[i] == dims[i];
        }
    }
    if (!same) {
        DP_FAIL(DP_EFORMAT, "%s: dataset %s does not have the shape the architecture needs "
                            "([%llu%s])", path, name, (unsigned long long)dims[0],
                rank > 1 ? ", ..." : "");
    }
    DP_H5(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
done:
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    return rc;
}

/* fsync a file or directory by name. */
static int sync_path(const char *p, int flags)
{
    int fd = open(p, flags);
    if (fd < 0) {
        return dp_err(DP_EIO, "%s: cannot open for sync (%s)", p, strerror(errno));
    }
    int r = fsync(fd);
    close(fd);
    return r == 0 ? DP_OK : dp_err(DP_EIO, "%s: fsync failed (%s)", p, strerror(errno));
}

int dp_model_save(const dp_model *m, const char *path, const char *config_json)
{
    int rc = DP_OK;
    const dp_model_cfg *mc = dp_model_config(m);
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID, lg = H5I_INVALID_HID;
    char tmp[4096], acts[DP_MAX_LAYERS * 16] = "", name[32], *dir = NULL;
    const float *p = dp_model_params((dp_model *)m);
    bool created = false;
    for (size_t i = 0; i < dp_model_n_params(m); i++) {
        if (!isfinite(p[i])) {
            return dp_err(DP_ENONFINITE, "%s: not written: parameter %zu is %g", path, i, p[i]);
        }
    }
    const float *buf = dp_model_buffers((dp_model *)m);
    for (size_t i = 0; i < dp_model_n_buffers(m); i++) {
        if (!isfinite(buf[i])) {
            return dp_err(DP_ENONFINITE, "%s: not written: batch-norm statistic %zu is %g", path,
                          i, buf[i]);
        }
    }
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        return dp_err(DP_EINVAL, "%s: path too long", path);
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        DP_FAIL(DP_EIO, "%s: cannot create (check that the directory exists and is writable)",
                tmp);
    }
    created = true;
    for (int i = 0; i < mc->n_layers; i++) {
        strcat(acts, i ? "," : "");
        strcat(acts, dp_act_name(mc->act[i]));
    }
    int nl = mc->n_layers, version = DP_MODEL_FORMAT_VERSION;
    DP_TRY(put_str_attr(f, path, "format", DP_MODEL_FORMAT));
    DP_TRY(put_int_attr(f, path, "format_version", &version, 1));
    DP_TRY(put_int_attr(f, path, "n_layers", &nl, 1));
    DP_TRY(put_int_attr(f, path, "sizes", mc->sizes, (hsize_t)nl + 1));
    DP_TRY(put_str_attr(f, path, "activations", acts));
    DP_TRY(put_str_attr(f, path, "init", dp_init_name(mc->init)));
    DP_TRY(put_str_attr(f, path, "config", config_json ? config_json : ""));
    int bn[DP_MAX_LAYERS];
    for (int i = 0; i < nl; i++) {
        bn[i] = mc->batchnorm[i];
    }
    DP_TRY(put_f32_attr(f, path, "dropout", mc->dropout, (hsize_t)nl));
    DP_TRY(put_int_attr(f, path, "batchnorm", bn, (hsize_t)nl));
    DP_TRY(put_f32_attr(f, path, "bn_momentum", &mc->bn_momentum, 1));
    DP_TRY(put_f32_attr(f, path, "bn_eps", &mc->bn_eps, 1));
    DP_H5(g = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (int i = 0; i < nl; i++) {
        const dp_dense *l = dp_model_layer_const(m, i);
        hsize_t wd[2] = {(hsize_t)l->out, (hsize_t)l->in}, bd[1] = {(hsize_t)l->out};
        snprintf(name, sizeof name, "%d", i);
        DP_H5(lg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        DP_TRY(write_f32(lg, path, "weight", l->w, 2, wd));
        DP_TRY(write_f32(lg, path, "bias", l->b, 1, bd));
        DP_TRY(put_str_attr(lg, path, "activation", dp_act_name(l->act)));
        float *gamma, *beta, *rmean, *rvar;
        if (dp_model_bn_layer(m, i, &gamma, &beta, &rmean, &rvar)) {
            DP_TRY(write_f32(lg, path, "bn_gamma", gamma, 1, bd));
            DP_TRY(write_f32(lg, path, "bn_beta", beta, 1, bd));
            DP_TRY(write_f32(lg, path, "bn_running_mean", rmean, 1, bd));
            DP_TRY(write_f32(lg, path, "bn_running_var", rvar, 1, bd));
        }
        H5Gclose(lg);
        lg = H5I_INVALID_HID;
    }
    H5Gclose(g);
    g = H5I_INVALID_HID;
    DP_H5(H5Fflush(f, H5F_SCOPE_GLOBAL));
    herr_t cr = H5Fclose(f);
    f = H5I_INVALID_HID;
    if (cr < 0) {
        DP_FAIL(DP_EIO, "%s: closing the file failed (disk full?)", tmp);
    }
    DP_TRY(sync_path(tmp, O_RDONLY));
    if (rename(tmp, path) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot rename %s onto it (%s)", path, tmp, strerror(errno));
    }
    created = false;
    if (!(dir = strdup(path))) {
        DP_FAIL(DP_ENOMEM, "out of memory");
    }
    DP_TRY(sync_path(dirname(dir), O_RDONLY | O_DIRECTORY));
done:
    if (lg >= 0) H5Gclose(lg);
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    if (created) {
        remove(tmp);
    }
    free(dir);
    return rc;
}

int dp_model_load(const char *path, int max_batch, dp_model **out, char **config_json)
{
    int rc = DP_OK;
    hid_t f = H5I_INVALID_HID;
    char *format = NULL, *acts = NULL, *init = NULL, *cfgtext = NULL, name[64];
    dp_model *m = NULL;
    dp_model_cfg mc = {0};
    int version = 0;
    *out = NULL;
    if (config_json) {
        *config_json = NULL;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (access(path, R_OK) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot open (%s)", path, strerror(errno));
    }
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        DP_FAIL(DP_EFORMAT, "%s: not an HDF5 file, or a damaged one", path);
    }
    DP_TRY(get_str_attr(f, path, "format", &format));
    if (strcmp(format, DP_MODEL_FORMAT) != 0) {
        DP_FAIL(DP_EFORMAT, "%s: format is '%s', not '%s'", path, format, DP_MODEL_FORMAT);
    }
    DP_TRY(get_int_attr(f, path, "format_version", &version, 1));
    if (version < 1 || version > DP_MODEL_FORMAT_VERSION) {
        DP_FAIL(DP_EFORMAT, "%s: format version %d; this dptrain reads version %d", path,
                version, DP_MODEL_FORMAT_VERSION);
    }
    DP_TRY(get_int_attr(f, path, "n_layers", &mc.n_layers, 1));
    if (mc.n_layers < 1 || mc.n_layers > DP_MAX_LAYERS) {
        DP_FAIL(DP_EFORMAT, "%s: n_layers is %d", path, mc.n_layers);
    }
    DP_TRY(get_int_attr(f, path, "sizes", mc.sizes, (hsize_t)mc.n_layers + 1));
    DP_TRY(get_str_attr(f, path, "activations", &acts));
    char *save = NULL, *tok = strtok_r(acts, ",", &save);
    for (int i = 0; i < mc.n_layers; i++, tok = strtok_r(NULL, ",", &save)) {
        int a = tok ? dp_act_parse(tok) : -1;
        if (a < 0) {
            DP_FAIL(DP_EFORMAT, "%s: activation of layer %d is '%s'", path, i, tok ? tok : "");
        }
        mc.act[i] = (dp_act)a;
    }
    DP_TRY(get_str_attr(f, path, "init", &init));
    mc.init = dp_init_parse(init) < 0 ? DP_INIT_ZERO : (dp_init)dp_init_parse(init);
    if (version >= 2) {
        int bn[DP_MAX_LAYERS];
        DP_TRY(get_f32_attr(f, path, "dropout", mc.dropout, (hsize_t)mc.n_layers));
        DP_TRY(get_int_attr(f, path, "batchnorm", bn, (hsize_t)mc.n_layers));
        for (int i = 0; i < mc.n_layers; i++) {
            mc.batchnorm[i] = bn[i] != 0;
        }
        DP_TRY(get_f32_attr(f, path, "bn_momentum", &mc.bn_momentum, 1));
        DP_TRY(get_f32_attr(f, path, "bn_eps", &mc.bn_eps, 1));
    }
    mc.max_batch = max_batch;
    DP_TRY(dp_model_create(&mc, &m));
    for (int i = 0; i < mc.n_layers; i++) {
        dp_dense *l = dp_model_layer(m, i);
        hsize_t wd[2] = {(hsize_t)l->out, (hsize_t)l->in}, bd[1] = {(hsize_t)l->out};
        snprintf(name, sizeof name, "/layers/%d/weight", i);
        DP_TRY(read_f32(f, path, name, l->w, 2, wd));
        snprintf(name, sizeof name, "/layers/%d/bias", i);
        DP_TRY(read_f32(f, path, name, l->b, 1, bd));
        float *bnt[4];
        static const char *const bn_names[4] = {"bn_gamma", "bn_beta", "bn_running_mean",
                                                "bn_running_var"};
        if (dp_model_bn_layer(m, i, &bnt[0], &bnt[1], &bnt[2], &bnt[3])) {
            for (int t = 0; t < 4; t++) {
                snprintf(name, sizeof name, "/layers/%d/%s", i, bn_names[t]);
                DP_TRY(read_f32(f, path, name, bnt[t], 1, bd));
            }
        }
    }
    if (config_json) {
        if (H5Aexists(f, "config") > 0) {
            DP_TRY(get_str_attr(f, path, "config", &cfgtext));
        } else if (!(cfgtext = strdup(""))) {
            DP_FAIL(DP_ENOMEM, "out of memory");
        }
        *config_json = cfgtext;
        cfgtext = NULL;
    }
    *out = m;
    m = NULL;
done:
    if (f >= 0) H5Fclose(f);
    dp_model_free(&m);
    free(format);
    free(acts);
    free(init);
    free(cfgtext);
    return rc;
}
