/* dataset.c: dp_dataset in memory and in HDF5 files (layout version 1, datasets/README.md):
 * load with full validation, atomic save, free, row gather and fingerprint. Files are
 * opened serially (default property lists) by whichever process calls. Every HDF5 call goes
 * through the project's one HDF5 layer, io/h5util.h (checked calls, handles, attributes,
 * the atomic write); this file keeps only the layout's own rules. */
#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data_internal.h"
#include "dptrain/err.h"
#include "io/h5util.h"

#define DP_FORMAT_NAME "dptrain-dataset"
enum { DP_FORMAT_VERSION = 1 };

/* What y of a split holds (Y_NONE: there is no y, which only dp_dataset_load_inputs takes). */
enum y_kind { Y_NONE = 0, Y_LABELS = 1, Y_VALUES = 2 };

/* --- loading ------------------------------------------------------------------------------ */

/* Where the arrays of a load go: malloc (al NULL), nowhere (probe: their sizes recorded,
 * nothing read), or the caller's memory (placed: dp_dataset_load_at). Slots: train x,
 * train y, test x, test y. */
enum { DA_PROBE = 1, DA_PLACED = 2, DA_STREAM = 3 };
typedef struct {
    int mode;
    size_t bytes[4]; /* probe: each array's size; placed: the room at dst */
    void *dst[4];
    dp_raw_split raw[2]; /* stream: where each split's arrays are in the file, and how stored */
} data_alloc;

/* Whether this load reads no rows (a probe, or a streamed dataset's metadata). */
static bool reads_nothing(const data_alloc *al)
{
    return al && (al->mode == DA_PROBE || al->mode == DA_STREAM);
}

/* --data-memory stream reads the arrays as the file stores them: where dataset ds (called
 * name) starts and its element type, which must be contiguous and little-endian integer or
 * IEEE float (floats of 4 or 8 bytes). */
static int raw_layout(const char *path, hid_t ds, const char *name, size_t n_elem, uint64_t *off,
                      dp_raw_type *t)
{
    int rc = DP_OK;
    hid_t type = H5I_INVALID_HID;
    H5T_class_t cls;
    DP_H5CHK(type = H5Dget_type(ds), "reading the type of %s", name);
    DP_H5CHK(cls = H5Tget_class(type), "reading the type of %s", name);
    t->size = (int)H5Tget_size(type);
    t->cls = cls == H5T_FLOAT ? 'f' : H5Tget_sign(type) == H5T_SGN_NONE ? 'u' : 'i';
    const bool le = H5Tget_order(type) == H5T_ORDER_LE;
    const bool ok = le && (cls == H5T_FLOAT ? (t->size == 4 || t->size == 8)
                                            : (t->size == 1 || t->size == 2 || t->size == 4 ||
                                               t->size == 8));
    if (cls == H5T_FLOAT && ok && (H5Tequal(type, H5T_IEEE_F32LE) <= 0 &&
                                   H5Tequal(type, H5T_IEEE_F64LE) <= 0)) {
        DP_FAIL(DP_EFORMAT, "%s: %s is stored as a non-IEEE float type: --data-memory stream "
                "reads only IEEE float32/float64 (use --data-memory node)", path, name);
    }
    if (!ok) {
        DP_FAIL(DP_EFORMAT, "%s: %s is stored as a %s%d-byte %s type: --data-memory stream "
                "reads the file as stored and takes little-endian integers of 1, 2, 4 or 8 "
                "bytes and IEEE floats of 4 or 8 (use --data-memory node, or rewrite the file)",
                path, name, le ? "" : "big-endian ", t->size,
                cls == H5T_FLOAT ? "float" : "integer");
    }
    *off = 0;
    if (n_elem > 0) {
        haddr_t a = H5Dget_offset(ds);
        if (a == HADDR_UNDEF) {
            DP_FAIL(DP_EFORMAT, "%s: %s is stored in chunks (perhaps compressed): --data-memory "
                    "stream reads rows where a contiguous layout puts them (rewrite it with "
                    "h5repack -l CONTI, or use --data-memory node)", path, name);
        }
        *off = (uint64_t)a;
    }
done:
    return dp_h5_close(&type, rc, path);
}

/* What read_split learnt beyond the dp_split itself, for the cross-split checks; and where
 * its arrays go. */
typedef struct {
    enum y_kind kind;
    char x_shape[128]; /* "[n, d1, ...]" */
    data_alloc *al;    /* NULL: malloc */
    int slot;          /* the split's x slot in al (its y: slot + 1) */
} split_info;

/* Allocates n_bytes (zeroed) for the data of dataset name of shape `shape`; on failure
 * records a message naming the file and the object (a damaged header can promise absurd
 * sizes) and returns NULL. */
static void *alloc_data(const char *path, const char *name, const char *shape, size_t n_bytes)
{
    void *p = calloc(n_bytes ? n_bytes : 1, 1);
    if (!p) {
        dp_err(DP_ENOMEM, "%s: %s has shape %s: cannot allocate %zu bytes to read it", path,
               name, shape, n_bytes);
    }
    return p;
}

/* Allocates dst with alloc_data, or places it in al's slot (DA_PLACED; refused if the room
 * there is short: the file changed since it was probed), or goes to done with DP_ENOMEM. */
#define ALLOC_DATA(out_, name_, shape_, bytes_, al_, slot_)                                 \
    do {                                                                                    \
        if ((al_) && (al_)->mode == DA_PLACED) {                                            \
            if ((bytes_) > (al_)->bytes[slot_]) {                                           \
                DP_FAIL(DP_EFORMAT, "%s: %s has shape %s now: it changed while being read", \
                        path, (name_), (shape_));                                           \
            }                                                                               \
            (out_) = (al_)->dst[slot_];                                                     \
        } else if (!((out_) = alloc_data(path, (name_), (shape_), (bytes_)))) {             \
            rc = DP_ENOMEM;                                                                 \
            goto done;                                                                      \
        }                                                                                   \
    } while (0)

/* Reads n integer class labels of any integer type into int32. HDF5 would clip a value out
 * of int32's range on the way (2^40 becomes 2147483647), so they are read as 64-bit
 * integers and a value that does not fit is refused with the value stored in the file. */
static int read_labels(const char *path, const char *yname, hid_t yds, hid_t type, size_t n,
                       int32_t *labels)
{
    int rc = DP_OK;
    const bool is_unsigned = H5Tget_sign(type) == H5T_SGN_NONE;
    int64_t *wide = malloc(n * sizeof *wide);
    if (!wide) {
        return dp_err(DP_ENOMEM, "%s: out of memory for the %zu labels of %s", path, n, yname);
    }
    DP_H5CHK(H5Dread(yds, is_unsigned ? H5T_NATIVE_UINT64 : H5T_NATIVE_INT64, H5S_ALL, H5S_ALL,
                     H5P_DEFAULT, wide),
             "reading %s", yname);
    for (size_t i = 0; i < n; i++) {
        const uint64_t u = (uint64_t)wide[i];
        if (is_unsigned ? u > (uint64_t)INT32_MAX : (wide[i] < INT32_MIN || wide[i] > INT32_MAX)) {
            if (is_unsigned) {
                DP_FAIL(DP_ERANGE, "%s: %s: label %" PRIu64 " at row %zu is too large (a class "
                        "index is at most %d)", path, yname, u, i, INT32_MAX);
            }
            DP_FAIL(DP_ERANGE, "%s: %s: label %" PRId64 " at row %zu is %s (a class index is in "
                    "[0, %d])", path, yname, wide[i], i, wide[i] < 0 ? "negative" : "too large",
                    INT32_MAX);
        }
        labels[i] = (int32_t)wide[i];
    }
done:
    free(wide);
    return rc;
}

/* Optional number attribute name of dataset ds (called dsname) read as a float; *val keeps
 * its default when the attribute is absent. Must be finite. */
static int read_opt_float(const char *path, hid_t ds, const char *dsname, const char *name,
                          float *val)
{
    int rc = DP_OK;
    bool present = false;
    double v = 0.0;
    DP_TRY(dp_h5_has_attr(ds, path, name, &present));
    if (!present) {
        goto done;
    }
    DP_TRY(dp_h5_get_f64_attr(ds, path, name, &v, 1));
    if (!isfinite(v) || !isfinite((float)v)) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s is %g, expected a finite float", path, name,
                dsname, v);
    }
    *val = (float)v;
done:
    return rc;
}

/* Reads /<name>/x and /<name>/y of file into s (name "": /x and /y at the root). Without
 * y_optional a missing y is an error; with it, s has no labels and no values. */
static int read_split(const char *path, hid_t file, const char *name, bool y_optional,
                      dp_split *s, split_info *info)
{
    int rc = DP_OK;
    hid_t grp = H5I_INVALID_HID, xds = H5I_INVALID_HID, yds = H5I_INVALID_HID;
    hid_t type = H5I_INVALID_HID;
    char xname[32], yname[32], y_shape[128];
    hsize_t xdims[H5S_MAX_RANK], ydims[H5S_MAX_RANK];
    int xrank, yrank;
    H5T_class_t cls;
    size_t n, n_elem, feat = 1;
    bool is_u8 = false;

    snprintf(xname, sizeof xname, "%s%s/x", name[0] ? "/" : "", name);
    snprintf(yname, sizeof yname, "%s%s/y", name[0] ? "/" : "", name);
    DP_H5CHK(grp = H5Gopen2(file, name[0] ? name : "/", H5P_DEFAULT),
             "opening group /%s (is it a group?)", name);

    /* x: shape, type, attributes, data */
    DP_TRY(dp_h5_open_dataset(file, path, xname, &xds, &xrank, xdims));
    dp_h5_fmt_dims(info->x_shape, sizeof info->x_shape, xrank, xdims);
    if (xrank < 2) {
        DP_FAIL(DP_EFORMAT, "%s: %s has shape %s: x must be [n, features...]", path, xname,
                info->x_shape);
    }
    for (int i = 1; i < xrank; i++) {
        if (xdims[i] == 0 || xdims[i] > (hsize_t)INT_MAX || feat > (size_t)INT_MAX / xdims[i]) {
            DP_FAIL(DP_EFORMAT, "%s: %s has shape %s: the number of features must be in [1, %d]",
                    path, xname, info->x_shape, INT_MAX);
        }
        feat *= (size_t)xdims[i];
    }
    if (xdims[0] > (hsize_t)(SIZE_MAX / sizeof(float) / feat)) {
        DP_FAIL(DP_ERANGE, "%s: %s has shape %s: too large for memory", path, xname,
                info->x_shape);
    }
    n = (size_t)xdims[0];
    n_elem = n * feat;
    s->n = n;
    s->n_features = (int)feat;
    s->x_scale = 1.0f;
    s->x_offset = 0.0f;

    DP_H5CHK(type = H5Dget_type(xds), "reading the type of %s", xname);
    DP_H5CHK(cls = H5Tget_class(type), "reading the type of %s", xname);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        DP_FAIL(DP_EFORMAT, "%s: %s has %s type; expected integer or float", path, xname,
                dp_h5_class_name(cls));
    }
    if (cls == H5T_INTEGER) {
        H5T_sign_t sign;
        size_t size = H5Tget_size(type);
        DP_H5CHK(sign = H5Tget_sign(type), "reading the type of %s", xname);
        if (size == 0) {
            rc = dp_h5_fail(path, "reading the type of %s", xname);
            goto done;
        }
        is_u8 = size == 1 && sign == H5T_SGN_NONE;
    }
    rc = dp_h5_close(&type, rc, path);
    if (rc != DP_OK) {
        goto done;
    }
    DP_TRY(read_opt_float(path, xds, xname, "scale", &s->x_scale));
    DP_TRY(read_opt_float(path, xds, xname, "offset", &s->x_offset));
    DP_TRY(dp_h5_check_stored(xds, path, xname, info->x_shape, n_elem));
    if (info->al && info->al->mode == DA_STREAM) {
        dp_raw_split *raw = &info->al->raw[info->slot / 2];
        raw->n = n;
        DP_TRY(raw_layout(path, xds, xname, n_elem, &raw->x_off, &raw->x));
        raw->x_row = feat * (size_t)raw->x.size;
    }
    if (reads_nothing(info->al)) {
        info->al->bytes[info->slot] = is_u8 ? n_elem : n_elem * sizeof(float);
    } else if (is_u8) {
        ALLOC_DATA(s->x_u8, xname, info->x_shape, n_elem, info->al, info->slot);
        if (n_elem > 0) {
            DP_H5CHK(H5Dread(xds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->x_u8),
                     "reading %s", xname);
        }
    } else {
        ALLOC_DATA(s->x_f32, xname, info->x_shape, n_elem * sizeof(float), info->al,
                   info->slot);
        if (n_elem > 0) {
            DP_H5CHK(H5Dread(xds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->x_f32),
                     "reading %s", xname);
        }
        for (size_t i = 0; i < n_elem; i++) {
            if (!isfinite(s->x_f32[i])) {
                DP_FAIL(DP_EFORMAT, "%s: %s: value %g at row %zu, feature %zu is not finite",
                        path, xname, (double)s->x_f32[i], i / feat, i % feat);
            }
        }
    }

    /* y: labels or targets, with as many rows as x */
    info->kind = Y_NONE;
    if (y_optional) {
        htri_t ex;
        DP_H5CHK(ex = H5Lexists(grp, "y", H5P_DEFAULT), "looking for %s", yname);
        if (ex == 0) {
            goto done;
        }
    }
    DP_TRY(dp_h5_open_dataset(file, path, yname, &yds, &yrank, ydims));
    dp_h5_fmt_dims(y_shape, sizeof y_shape, yrank, ydims);
    DP_H5CHK(type = H5Dget_type(yds), "reading the type of %s", yname);
    DP_H5CHK(cls = H5Tget_class(type), "reading the type of %s", yname);
    if (cls == H5T_INTEGER) {
        if (yrank != 1) {
            DP_FAIL(DP_EFORMAT, "%s: %s has shape %s: integer y (class labels) must be [n]",
                    path, yname, y_shape);
        }
    } else if (cls == H5T_FLOAT) {
        if (yrank != 1 && yrank != 2) {
            DP_FAIL(DP_EFORMAT,
                    "%s: %s has shape %s: float y (regression targets) must be [n] or [n, k]",
                    path, yname, y_shape);
        }
        if (yrank == 2 && (ydims[1] == 0 || ydims[1] > (hsize_t)INT_MAX)) {
            DP_FAIL(DP_EFORMAT, "%s: %s has shape %s: the number of targets must be in [1, %d]",
                    path, yname, y_shape, INT_MAX);
        }
    } else {
        DP_FAIL(DP_EFORMAT,
                "%s: %s has %s type; expected integer (class labels) or float (regression "
                "targets)",
                path, yname, dp_h5_class_name(cls));
    }
    if (ydims[0] != xdims[0]) {
        DP_FAIL(DP_EFORMAT, "%s: %s has %d dimensions %s but %s has %llu rows", path, xname,
                xrank, info->x_shape, yname, (unsigned long long)ydims[0]);
    }
    if (cls == H5T_INTEGER) {
        info->kind = Y_LABELS;
        DP_TRY(dp_h5_check_stored(yds, path, yname, y_shape, n));
        if (info->al && info->al->mode == DA_STREAM) {
            dp_raw_split *raw = &info->al->raw[info->slot / 2];
            DP_TRY(raw_layout(path, yds, yname, n, &raw->y_off, &raw->y));
            raw->y_row = (size_t)raw->y.size;
        }
        if (reads_nothing(info->al)) {
            info->al->bytes[info->slot + 1] = n * sizeof(int32_t);
            goto done;
        }
        ALLOC_DATA(s->labels, yname, y_shape, n * sizeof(int32_t), info->al, info->slot + 1);
        if (n > 0) {
            DP_TRY(read_labels(path, yname, yds, type, n, s->labels));
        }
    } else {
        int k = yrank == 2 ? (int)ydims[1] : 1;
        if (n > SIZE_MAX / sizeof(float) / (size_t)k) {
            DP_FAIL(DP_ERANGE, "%s: %s has shape %s: too large for memory", path, yname,
                    y_shape);
        }
        info->kind = Y_VALUES;
        s->n_targets = k;
        DP_TRY(dp_h5_check_stored(yds, path, yname, y_shape, n * (size_t)k));
        if (info->al && info->al->mode == DA_STREAM) {
            dp_raw_split *raw = &info->al->raw[info->slot / 2];
            DP_TRY(raw_layout(path, yds, yname, n * (size_t)k, &raw->y_off, &raw->y));
            raw->y_row = (size_t)k * (size_t)raw->y.size;
        }
        if (reads_nothing(info->al)) {
            info->al->bytes[info->slot + 1] = n * (size_t)k * sizeof(float);
            goto done;
        }
        ALLOC_DATA(s->values, yname, y_shape, n * (size_t)k * sizeof(float), info->al,
                   info->slot + 1);
        if (n > 0) {
            DP_H5CHK(H5Dread(yds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->values),
                     "reading %s", yname);
        }
        for (size_t i = 0; i < n * (size_t)k; i++) {
            if (!isfinite(s->values[i])) {
                DP_FAIL(DP_EFORMAT, "%s: %s: value %g at row %zu is not finite", path, yname,
                        (double)s->values[i], i / (size_t)k);
            }
        }
    }
done:
    rc = dp_h5_close(&type, rc, path);
    rc = dp_h5_close(&yds, rc, path);
    rc = dp_h5_close(&xds, rc, path);
    rc = dp_h5_close(&grp, rc, path);
    return rc;
}

/* Checks every label of split name ("" for the root) is in [0, n_classes). */
static int check_labels(const char *path, const char *name, const dp_split *s, int n_classes)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->labels[i] < 0 || s->labels[i] >= n_classes) {
            return dp_err(DP_ERANGE, "%s: %s%s/y: label %d at row %zu is outside [0, %d)", path,
                          name[0] ? "/" : "", name, (int)s->labels[i], i, n_classes);
        }
    }
    return DP_OK;
}

/* Optional integer attribute name of obj (through the HDF5 layer): *present tells whether
 * it exists, *val its value. */
static int read_opt_int(const char *path, hid_t obj, const char *name, bool *present,
                        long long *val)
{
    int rc = DP_OK;
    int64_t v = 0;
    DP_TRY(dp_h5_has_attr(obj, path, name, present));
    if (*present) {
        DP_TRY(dp_h5_get_i64_attr(obj, path, name, &v, 1));
        *val = (long long)v;
    }
done:
    return rc;
}

/* Validates the root attributes of an open root group. */
static int read_root_attrs(const char *path, hid_t root, bool *has_nc, long long *nc)
{
    int rc = DP_OK;
    char *fmt = NULL;
    bool present = false;
    long long version = 0;
    DP_TRY(dp_h5_has_attr(root, path, "format", &present));
    if (present) {
        DP_TRY(dp_h5_get_str_attr(root, path, "format", &fmt));
        size_t len = strlen(fmt);
        while (len > 0 && fmt[len - 1] == ' ') { /* space-padded strings of other tools */
            fmt[--len] = '\0';
        }
        if (strcmp(fmt, DP_FORMAT_NAME) != 0) {
            DP_FAIL(DP_EFORMAT, "%s: attribute format is '%.100s', expected '%s'", path, fmt,
                    DP_FORMAT_NAME);
        }
    }
    DP_TRY(read_opt_int(path, root, "format_version", &present, &version));
    if (present && version > DP_FORMAT_VERSION) {
        DP_FAIL(DP_EFORMAT,
                "%s: format_version %lld is newer than this dptrain reads (%d); upgrade dptrain",
                path, version, DP_FORMAT_VERSION);
    }
    if (present && version < 1) {
        DP_FAIL(DP_EFORMAT, "%s: format_version %lld is not valid (expected %d)", path, version,
                DP_FORMAT_VERSION);
    }
    DP_TRY(read_opt_int(path, root, "num_classes", has_nc, nc));
    if (*has_nc && (*nc < 0 || *nc > INT_MAX)) {
        DP_FAIL(DP_EFORMAT, "%s: attribute num_classes is %lld, expected 0 (regression) or a "
                "positive class count", path, *nc);
    }
done:
    free(fmt);
    return rc;
}

/* Opens path (checking first that it can be opened at all, for a plain message) as an HDF5
 * dataset file and reads the root attributes. The caller closes *file and *root. */
static int open_dataset_file(const char *path, hid_t *file, hid_t *root, bool *has_nc,
                             long long *nc_attr)
{
    int rc = DP_OK;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        DP_FAIL(DP_EIO, "%s: is a directory; expected a dataset file (HDF5)", path);
    }
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        DP_FAIL(DP_EIO, "%s: cannot open (%s)", path, strerror(errno));
    }
    if (fclose(probe) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot close after probing (%s)", path, strerror(errno));
    }
    DP_TRY(dp_h5_open_ro(path, "cannot open as an HDF5 file (not HDF5, or damaged)", file));
    DP_H5CHK(*root = H5Gopen2(*file, "/", H5P_DEFAULT), "opening the root group");
    DP_TRY(read_root_attrs(path, *root, has_nc, nc_attr));
done:
    return rc;
}

/* dp_dataset_load with the arrays where al says (NULL: malloc). A probe checks the shapes
 * and types, records the sizes in al and returns no dataset. */
static int load_with(const char *path, data_alloc *al, dp_dataset **out)
{
    int rc = DP_OK;
    dp_dataset *d = NULL;
    hid_t file = H5I_INVALID_HID, root = H5I_INVALID_HID;
    bool has_nc = false, has_test = false;
    long long nc_attr = 0;
    htri_t ex;
    split_info tri = {.al = al, .slot = 0}, tei = {.al = al, .slot = 2};

    if (!out) {
        return dp_err(DP_EINVAL, "dp_dataset_load: out is NULL");
    }
    *out = NULL;
    if (!path) {
        return dp_err(DP_EINVAL, "dp_dataset_load: path is NULL");
    }
    DP_TRY(open_dataset_file(path, &file, &root, &has_nc, &nc_attr));

    DP_H5CHK(ex = H5Lexists(root, "train", H5P_DEFAULT), "looking for /train");
    if (ex == 0) {
        DP_FAIL(DP_EFORMAT,
                "%s: no /train group (a dataset needs /train/x and /train/y; see "
                "datasets/README.md)",
                path);
    }
    DP_H5CHK(ex = H5Lexists(root, "test", H5P_DEFAULT), "looking for /test");
    has_test = ex > 0;

    DP_CALLOC(d, 1);
    d->shared = al && al->mode == DA_PLACED; /* placed arrays are the caller's */
    DP_TRY(read_split(path, file, "train", false, &d->train, &tri));
    if (d->train.n == 0) {
        DP_FAIL(DP_EFORMAT, "%s: /train/x has shape %s: no rows", path, tri.x_shape);
    }
    if (has_test) {
        DP_TRY(read_split(path, file, "test", false, &d->test, &tei));
        if (d->test.n_features != d->train.n_features) {
            DP_FAIL(DP_EFORMAT,
                    "%s: /test/x has shape %s (%d features) but /train/x has shape %s (%d "
                    "features)",
                    path, tei.x_shape, d->test.n_features, tri.x_shape, d->train.n_features);
        }
        if (tei.kind != tri.kind) {
            DP_FAIL(DP_EFORMAT, "%s: /train/y holds %s but /test/y holds %s", path,
                    tri.kind == Y_LABELS ? "integer class labels" : "float regression targets",
                    tei.kind == Y_LABELS ? "integer class labels" : "float regression targets");
        }
        if (tei.kind == Y_VALUES && d->test.n_targets != d->train.n_targets) {
            DP_FAIL(DP_EFORMAT, "%s: /train/y has %d targets per row but /test/y has %d", path,
                    d->train.n_targets, d->test.n_targets);
        }
    }

    if (al && al->mode == DA_PROBE) {
        goto done; /* sizes recorded; nothing read */
    }
    if (al && al->mode == DA_STREAM) {
        if (tri.kind == Y_LABELS && has_nc && nc_attr == 0) {
            DP_FAIL(DP_EFORMAT,
                    "%s: num_classes is 0 (regression) but /train/y holds integer class labels",
                    path);
        }
        if (tri.kind != Y_LABELS && has_nc && nc_attr != 0) {
            DP_FAIL(DP_EFORMAT, "%s: num_classes is %lld but /train/y holds float regression "
                    "targets (store class labels as integers)", path, nc_attr);
        }
        /* The labels decide it unless the file says: a scan (dp_dataset_stream_scan). */
        d->n_classes = tri.kind != Y_LABELS ? 0 : has_nc ? (int)nc_attr : -1;
        *out = d;
        d = NULL;
        goto done;
    }
    if (tri.kind == Y_LABELS) {
        if (has_nc && nc_attr == 0) {
            DP_FAIL(DP_EFORMAT,
                    "%s: num_classes is 0 (regression) but /train/y holds integer class labels",
                    path);
        }
        if (has_nc) {
            d->n_classes = (int)nc_attr;
        } else {
            /* infer max label + 1 over both splits, negatives are errors */
            int32_t mx = 0;
            const dp_split *sp[2] = {&d->train, &d->test};
            const char *nm[2] = {"train", "test"};
            for (int k = 0; k < 2; k++) {
                for (size_t i = 0; i < sp[k]->n; i++) {
                    if (sp[k]->labels[i] < 0) {
                        DP_FAIL(DP_ERANGE, "%s: /%s/y: label %d at row %zu is negative", path,
                                nm[k], (int)sp[k]->labels[i], i);
                    }
                    if (sp[k]->labels[i] > mx) {
                        mx = sp[k]->labels[i];
                    }
                }
            }
            if (mx == INT32_MAX) {
                DP_FAIL(DP_ERANGE, "%s: largest label %d is too large", path, (int)mx);
            }
            d->n_classes = (int)mx + 1;
        }
        DP_TRY(check_labels(path, "train", &d->train, d->n_classes));
        if (has_test) {
            DP_TRY(check_labels(path, "test", &d->test, d->n_classes));
        }
    } else {
        if (has_nc && nc_attr != 0) {
            DP_FAIL(DP_EFORMAT,
                    "%s: num_classes is %lld but /train/y holds float regression targets (store "
                    "class labels as integers)",
                    path, nc_attr);
        }
        d->n_classes = 0;
    }
    *out = d;
    d = NULL;
done:
    rc = dp_h5_close(&root, rc, path);
    rc = dp_h5_close(&file, rc, path);
    if (rc != DP_OK && *out) {
        dp_dataset_free(out); /* a failed close after a successful read */
    }
    dp_dataset_free(&d);
    return rc;
}

int dp_dataset_load(const char *path, dp_dataset **out) { return load_with(path, NULL, out); }

int dp_dataset_layout(const char *path, dp_dataset **out, dp_raw_split raw[2])
{
    data_alloc al = {.mode = DA_STREAM};
    int rc = load_with(path, &al, out);
    raw[0] = al.raw[0];
    raw[1] = al.raw[1];
    return rc;
}

/* --- the scan of a streamed dataset ------------------------------------------------------- */

/* The fingerprint's hash, fed in pieces (defined with dp_split_fingerprint below). */
typedef struct {
    uint64_t v[4], total;
    unsigned char buf[32];
    size_t n_buf;
} fp_hash;
static void fp_init(fp_hash *f);
static void fp_bytes(fp_hash *f, const void *p, size_t n_bytes);
static void fp_u64(fp_hash *f, uint64_t v);
static uint64_t fp_final(const fp_hash *f);

/* Rows [r0, r0 + nr) of dataset ds (rank, dims) read as memory type mt into buf. */
static int read_rows(const char *path, const char *name, hid_t ds, int rank, const hsize_t *dims,
                     size_t r0, size_t nr, hid_t mt, void *buf)
{
    int rc = DP_OK;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        count[i] = dims[i];
    }
    start[0] = r0;
    count[0] = nr;
    DP_H5CHK(fs = H5Dget_space(ds), "reading the shape of %s", name);
    DP_H5CHK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL),
             "selecting rows of %s", name);
    DP_H5CHK(ms = H5Screate_simple(rank, count, NULL), "selecting rows of %s", name);
    DP_H5CHK(H5Dread(ds, mt, ms, fs, H5P_DEFAULT, buf), "reading rows %zu to %zu of %s", r0,
             r0 + nr - 1, name);
done:
    rc = dp_h5_close(&ms, rc, path);
    return dp_h5_close(&fs, rc, path);
}

/* Extremes of a split's labels and where they are. */
typedef struct {
    int32_t lo, hi;
    size_t lo_row, hi_row;
} label_range;

/* Reads split `name` of file in blocks of rows, as dp_dataset_load would (the same types and
 * conversions), for its fingerprint (that of dp_split_fingerprint) and the checks of a load:
 * x finite, labels fit int32 (their extremes into lr), targets finite. */
static int scan_split(const char *path, hid_t file, const char *name, const dp_split *s,
                      bool x_u8, uint64_t *fp, label_range *lr)
{
    int rc = DP_OK;
    char xname[32], yname[32];
    hid_t xds = H5I_INVALID_HID, yds = H5I_INVALID_HID;
    int xrank = 0, yrank = 0;
    hsize_t xdims[H5S_MAX_RANK], ydims[H5S_MAX_RANK];
    const size_t nf = (size_t)s->n_features, nt = (size_t)s->n_targets;
    const size_t row = nf * (x_u8 ? 1 : sizeof(float));
    const size_t R = row >= ((size_t)4 << 20) ? 1 : ((size_t)4 << 20) / row;
    void *buf = NULL;
    int64_t *wide = NULL;
    int32_t *lab = NULL;
    snprintf(xname, sizeof xname, "/%s/x", name);
    snprintf(yname, sizeof yname, "/%s/y", name);
    DP_TRY(dp_h5_open_dataset(file, path, xname, &xds, &xrank, xdims));
    DP_TRY(dp_h5_open_dataset(file, path, yname, &yds, &yrank, ydims));
    buf = malloc(R * row > R * nt * sizeof(float) ? R * row : R * nt * sizeof(float));
    wide = malloc(R * sizeof *wide);
    lab = malloc(R * sizeof *lab);
    if (!buf || !wide || !lab) {
        DP_FAIL(DP_ENOMEM, "%s: out of memory for a block of %zu rows of /%s", path, R, name);
    }
    fp_hash h;
    fp_init(&h);
    fp_u64(&h, (uint64_t)s->n);
    fp_u64(&h, (uint64_t)nf);
    for (size_t r0 = 0; r0 < s->n; r0 += R) {
        const size_t nr = s->n - r0 < R ? s->n - r0 : R;
        DP_TRY(read_rows(path, xname, xds, xrank, xdims, r0, nr,
                         x_u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, buf));
        for (size_t i = 0; !x_u8 && i < nr * nf; i++) {
            const float v = ((const float *)buf)[i];
            if (!isfinite(v)) {
                DP_FAIL(DP_EFORMAT, "%s: %s: value %g at row %zu, feature %zu is not finite",
                        path, xname, (double)v, r0 + i / nf, i % nf);
            }
        }
        fp_bytes(&h, buf, nr * row);
    }
    fp_bytes(&h, &s->x_scale, sizeof s->x_scale);
    fp_bytes(&h, &s->x_offset, sizeof s->x_offset);
    *lr = (label_range){.lo = INT32_MAX, .hi = INT32_MIN};
    hid_t type = H5I_INVALID_HID;
    bool is_unsigned = false;
    if (!nt) {
        DP_H5CHK(type = H5Dget_type(yds), "reading the type of %s", yname);
        is_unsigned = H5Tget_sign(type) == H5T_SGN_NONE;
        DP_TRY(dp_h5_close(&type, rc, path));
    } else {
        fp_u64(&h, (uint64_t)nt);
    }
    for (size_t r0 = 0; r0 < s->n; r0 += R) {
        const size_t nr = s->n - r0 < R ? s->n - r0 : R;
        if (nt) {
            float *v = buf;
            DP_TRY(read_rows(path, yname, yds, yrank, ydims, r0, nr, H5T_NATIVE_FLOAT, v));
            for (size_t i = 0; i < nr * nt; i++) {
                if (!isfinite(v[i])) {
                    DP_FAIL(DP_EFORMAT, "%s: %s: value %g at row %zu is not finite", path, yname,
                            (double)v[i], r0 + i / nt);
                }
            }
            fp_bytes(&h, v, nr * nt * sizeof *v);
            continue;
        }
        DP_TRY(read_rows(path, yname, yds, yrank, ydims, r0, nr,
                         is_unsigned ? H5T_NATIVE_UINT64 : H5T_NATIVE_INT64, wide));
        for (size_t i = 0; i < nr; i++) {
            const uint64_t u = (uint64_t)wide[i];
            if (is_unsigned ? u > (uint64_t)INT32_MAX
                            : (wide[i] < INT32_MIN || wide[i] > INT32_MAX)) {
                DP_FAIL(DP_ERANGE, "%s: %s: label %" PRId64 " at row %zu does not fit a class "
                        "index (at most %d)", path, yname, wide[i], r0 + i, INT32_MAX);
            }
            lab[i] = (int32_t)wide[i];
            if (lab[i] < lr->lo) {
                lr->lo = lab[i];
                lr->lo_row = r0 + i;
            }
            if (lab[i] > lr->hi) {
                lr->hi = lab[i];
                lr->hi_row = r0 + i;
            }
        }
        fp_bytes(&h, lab, nr * sizeof *lab);
    }
    *fp = fp_final(&h);
done:
    free(buf);
    free(wide);
    free(lab);
    rc = dp_h5_close(&yds, rc, path);
    return dp_h5_close(&xds, rc, path);
}

int dp_dataset_stream_scan(const char *path, const dp_dataset *d, const dp_raw_split raw[2],
                           dp_stream_info *out)
{
    int rc = DP_OK;
    hid_t file = H5I_INVALID_HID;
    const dp_split *sp[2] = {&d->train, &d->test};
    const char *nm[2] = {"train", "test"};
    label_range lr[2];
    memset(out, 0, sizeof *out);
    DP_TRY(dp_h5_open_ro(path, "cannot open as an HDF5 file (not HDF5, or damaged)", &file));
    for (int k = 0; k < 2; k++) {
        lr[k] = (label_range){.lo = INT32_MAX, .hi = INT32_MIN};
        if (sp[k]->n > 0) {
            const bool u8 = raw[k].x.cls == 'u' && raw[k].x.size == 1;
            DP_TRY(scan_split(path, file, nm[k], sp[k], u8, &out->fingerprint[k], &lr[k]));
        }
    }
    out->n_classes = d->n_classes;
    if (raw[0].y.cls == 'f') {
        goto done; /* regression targets */
    }
    if (out->n_classes < 0) { /* the largest label + 1, as a load infers it */
        int32_t mx = lr[0].hi > lr[1].hi ? lr[0].hi : lr[1].hi;
        if (mx == INT32_MAX) {
            DP_FAIL(DP_ERANGE, "%s: largest label %d is too large", path, (int)mx);
        }
        out->n_classes = mx < 0 ? 1 : (int)mx + 1;
    }
    for (int k = 0; k < 2; k++) {
        if (sp[k]->n > 0 && lr[k].lo < 0) {
            DP_FAIL(DP_ERANGE, "%s: /%s/y: label %d at row %zu is outside [0, %d)", path, nm[k],
                    (int)lr[k].lo, lr[k].lo_row, out->n_classes);
        }
        if (sp[k]->n > 0 && lr[k].hi >= out->n_classes) {
            DP_FAIL(DP_ERANGE, "%s: /%s/y: label %d at row %zu is outside [0, %d)", path, nm[k],
                    (int)lr[k].hi, lr[k].hi_row, out->n_classes);
        }
    }
done:
    return dp_h5_close(&file, rc, path);
}

int dp_dataset_probe(const char *path, size_t bytes[4])
{
    data_alloc al = {.mode = DA_PROBE};
    dp_dataset *none = NULL;
    int rc = load_with(path, &al, &none);
    dp_dataset_free(&none);
    for (int i = 0; i < 4; i++) {
        bytes[i] = rc == DP_OK ? al.bytes[i] : 0;
    }
    return rc;
}

int dp_dataset_load_at(const char *path, void *const dst[4], const size_t room[4],
                       dp_dataset **out)
{
    data_alloc al = {.mode = DA_PLACED};
    for (int i = 0; i < 4; i++) {
        al.dst[i] = dst[i];
        al.bytes[i] = room[i];
    }
    return load_with(path, &al, out);
}

/* --- inputs of a trained model: y optional, a root /x, CSV feature rows ----------------- */

/* Whether path ends in suffix, ignoring case. */
static bool ends_with(const char *path, const char *suffix)
{
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && strcasecmp(path + n - k, suffix) == 0;
}

/* The class count of the labelled splits sp[0..n) (names nm) and the checks of their
 * labels: num_classes if the file has it, else the largest label + 1. */
static int infer_classes(const char *path, bool has_nc, long long nc_attr, const dp_split **sp,
                         const char **nm, int n, int *n_classes)
{
    int rc = DP_OK;
    if (has_nc && nc_attr == 0) {
        DP_FAIL(DP_EFORMAT, "%s: num_classes is 0 (regression) but %s%s/y holds integer class "
                "labels", path, nm[0][0] ? "/" : "", nm[0]);
    }
    if (has_nc) {
        *n_classes = (int)nc_attr;
    } else {
        int32_t mx = 0;
        for (int k = 0; k < n; k++) {
            for (size_t i = 0; i < sp[k]->n; i++) {
                if (sp[k]->labels[i] < 0) {
                    DP_FAIL(DP_ERANGE, "%s: %s%s/y: label %d at row %zu is negative", path,
                            nm[k][0] ? "/" : "", nm[k], (int)sp[k]->labels[i], i);
                }
                mx = sp[k]->labels[i] > mx ? sp[k]->labels[i] : mx;
            }
        }
        if (mx == INT32_MAX) {
            DP_FAIL(DP_ERANGE, "%s: largest label %d is too large", path, (int)mx);
        }
        *n_classes = (int)mx + 1;
    }
    for (int k = 0; k < n; k++) {
        DP_TRY(check_labels(path, nm[k], sp[k], *n_classes));
    }
done:
    return rc;
}

int dp_dataset_load_inputs(const char *path, dp_dataset **out, dp_input_kind *kind)
{
    int rc = DP_OK;
    dp_dataset *d = NULL;
    hid_t file = H5I_INVALID_HID, root = H5I_INVALID_HID;
    bool has_nc = false, has[2] = {false, false};
    long long nc_attr = 0;
    htri_t ex;
    split_info info[2] = {{0}, {0}};
    const char *names[2] = {"train", "test"};

    if (!out || !path) {
        return dp_err(DP_EINVAL, "dp_dataset_load_inputs: NULL argument");
    }
    *out = NULL;
    DP_CALLOC(d, 1);
    if (ends_with(path, ".csv") || ends_with(path, ".csv.gz")) {
        DP_TRY(dp_csv_read_features(path, &d->test));
        *kind = DP_INPUT_CSV;
        goto loaded;
    }
    DP_TRY(open_dataset_file(path, &file, &root, &has_nc, &nc_attr));
    dp_split *sp[2] = {&d->train, &d->test};
    for (int k = 0; k < 2; k++) {
        DP_H5CHK(ex = H5Lexists(root, names[k], H5P_DEFAULT), "looking for /%s", names[k]);
        has[k] = ex > 0;
    }
    if (!has[0] && !has[1]) {
        DP_H5CHK(ex = H5Lexists(root, "x", H5P_DEFAULT), "looking for /x");
        if (ex == 0) {
            DP_FAIL(DP_EFORMAT, "%s: no rows to run a model on: none of /test/x, /train/x, /x "
                    "(see datasets/README.md)", path);
        }
        DP_TRY(read_split(path, file, "", true, &d->test, &info[1]));
        if (d->test.n == 0) {
            DP_FAIL(DP_EFORMAT, "%s: /x has shape %s: no rows", path, info[1].x_shape);
        }
        *kind = DP_INPUT_ROOT;
        if (info[1].kind == Y_LABELS) {
            const dp_split *one[1] = {&d->test};
            const char *nm[1] = {""};
            DP_TRY(infer_classes(path, has_nc, nc_attr, one, nm, 1, &d->n_classes));
        } else if (info[1].kind == Y_VALUES && has_nc && nc_attr != 0) {
            DP_FAIL(DP_EFORMAT, "%s: num_classes is %lld but /y holds float regression targets",
                    path, nc_attr);
        } else {
            d->n_classes = info[1].kind == Y_NONE && has_nc ? (int)nc_attr : 0;
        }
        goto loaded;
    }
    *kind = DP_INPUT_SPLITS;
    const dp_split *lab[2];
    const char *lab_names[2];
    int n_lab = 0, n_val = 0;
    for (int k = 0; k < 2; k++) {
        if (!has[k]) {
            continue;
        }
        DP_TRY(read_split(path, file, names[k], true, sp[k], &info[k]));
        if (sp[k]->n == 0) {
            DP_FAIL(DP_EFORMAT, "%s: /%s/x has shape %s: no rows", path, names[k],
                    info[k].x_shape);
        }
        if (info[k].kind == Y_LABELS) {
            lab[n_lab] = sp[k];
            lab_names[n_lab++] = names[k];
        }
        n_val += info[k].kind == Y_VALUES;
    }
    if (has[0] && has[1]) {
        if (d->test.n_features != d->train.n_features) {
            DP_FAIL(DP_EFORMAT, "%s: /test/x has shape %s (%d features) but /train/x has shape "
                    "%s (%d features)", path, info[1].x_shape, d->test.n_features,
                    info[0].x_shape, d->train.n_features);
        }
        if (n_lab == 1 && n_val == 1) {
            DP_FAIL(DP_EFORMAT, "%s: /train/y holds %s but /test/y holds %s", path,
                    info[0].kind == Y_LABELS ? "integer class labels" : "float regression targets",
                    info[1].kind == Y_LABELS ? "integer class labels" : "float regression targets");
        }
        if (n_val == 2 && d->test.n_targets != d->train.n_targets) {
            DP_FAIL(DP_EFORMAT, "%s: /train/y has %d targets per row but /test/y has %d", path,
                    d->train.n_targets, d->test.n_targets);
        }
    }
    if (n_lab > 0) {
        DP_TRY(infer_classes(path, has_nc, nc_attr, lab, lab_names, n_lab, &d->n_classes));
    } else if (n_val > 0 && has_nc && nc_attr != 0) {
        DP_FAIL(DP_EFORMAT, "%s: num_classes is %lld but y holds float regression targets "
                "(store class labels as integers)", path, nc_attr);
    } else {
        d->n_classes = n_val == 0 && has_nc ? (int)nc_attr : 0;
    }
loaded:
    *out = d;
    d = NULL;
done:
    rc = dp_h5_close(&root, rc, path);
    rc = dp_h5_close(&file, rc, path);
    if (rc != DP_OK && *out) {
        dp_dataset_free(out);
    }
    dp_dataset_free(&d);
    return rc;
}

/* --- saving ------------------------------------------------------------------------------- */

/* Checks that split s (name "train"/"test") of a dataset with n_classes can be written. */
static int check_split_for_save(const char *path, const char *name, const dp_split *s,
                                int n_classes)
{
    int rc = DP_OK;
    if (s->n_features <= 0) {
        DP_FAIL(DP_EINVAL, "%s: cannot save: /%s has n_features %d", path, name, s->n_features);
    }
    if ((s->x_u8 != NULL) == (s->x_f32 != NULL)) {
        DP_FAIL(DP_EINVAL, "%s: cannot save: /%s must have exactly one of x_u8 and x_f32", path,
                name);
    }
    if (!isfinite(s->x_scale) || !isfinite(s->x_offset)) {
        DP_FAIL(DP_EINVAL, "%s: cannot save: /%s has a non-finite x_scale or x_offset", path,
                name);
    }
    if (n_classes > 0) {
        if (!s->labels) {
            DP_FAIL(DP_EINVAL, "%s: cannot save: n_classes is %d but /%s has no labels", path,
                    n_classes, name);
        }
        DP_TRY(check_labels(path, name, s, n_classes));
    } else {
        if (!s->values || s->n_targets <= 0) {
            DP_FAIL(DP_EINVAL,
                    "%s: cannot save: n_classes is 0 (regression) but /%s has no values", path,
                    name);
        }
    }
done:
    return rc;
}

/* Writes /<name>/x (with its scale and offset attributes) and /<name>/y of split s. */
static int write_split(const char *path, hid_t file, const char *name, const dp_split *s,
                       int n_classes, int n_feat_dims, const size_t *feat_dims)
{
    int rc = DP_OK;
    hid_t grp = H5I_INVALID_HID, xds = H5I_INVALID_HID;
    hsize_t dims[DP_DATA_MAX_FEATURE_DIMS + 1];
    char gname[16], xname[32], yname[32];
    snprintf(gname, sizeof gname, "/%s", name);
    snprintf(xname, sizeof xname, "/%s/x", name);
    snprintf(yname, sizeof yname, "/%s/y", name);
    DP_H5CHK(grp = H5Gcreate2(file, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "creating group %s", gname);
    dims[0] = (hsize_t)s->n;
    for (int i = 0; i < n_feat_dims; i++) {
        dims[i + 1] = (hsize_t)feat_dims[i];
    }
    if (s->x_u8) {
        DP_TRY(dp_h5_write(file, path, xname, H5T_STD_U8LE, H5T_NATIVE_UINT8, n_feat_dims + 1,
                           dims, s->x_u8));
    } else {
        DP_TRY(dp_h5_write(file, path, xname, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                           n_feat_dims + 1, dims, s->x_f32));
    }
    DP_H5CHK(xds = H5Dopen2(file, xname, H5P_DEFAULT), "opening dataset %s", xname);
    DP_TRY(dp_h5_put_f32_attr(xds, path, "scale", &s->x_scale, 1));
    DP_TRY(dp_h5_put_f32_attr(xds, path, "offset", &s->x_offset, 1));
    if (n_classes > 0) {
        DP_TRY(dp_h5_write(file, path, yname, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dims,
                           s->labels));
    } else {
        hsize_t ydims[2] = {(hsize_t)s->n, (hsize_t)s->n_targets};
        DP_TRY(dp_h5_write(file, path, yname, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                           s->n_targets == 1 ? 1 : 2, ydims, s->values));
    }
done:
    rc = dp_h5_close(&xds, rc, path);
    rc = dp_h5_close(&grp, rc, path);
    return rc;
}

int dp_dataset_save_shaped(const char *path, const dp_dataset *d, int n_feat_dims,
                           const size_t *feat_dims)
{
    int rc = DP_OK;
    dp_h5_atomic a = DP_H5_ATOMIC_INIT;
    size_t prod = 1;
    int version = DP_FORMAT_VERSION, nc;

    if (!path || !d || !feat_dims) {
        return dp_err(DP_EINVAL, "dp_dataset_save: NULL argument");
    }
    if (n_feat_dims < 1 || n_feat_dims > DP_DATA_MAX_FEATURE_DIMS) {
        return dp_err(DP_EINVAL, "%s: cannot save: %d feature dimensions (1 to %d allowed)",
                      path, n_feat_dims, DP_DATA_MAX_FEATURE_DIMS);
    }
    for (int i = 0; i < n_feat_dims; i++) {
        prod = feat_dims[i] != 0 && prod <= SIZE_MAX / feat_dims[i] ? prod * feat_dims[i] : 0;
    }
    if (d->n_classes < 0) {
        return dp_err(DP_EINVAL, "%s: cannot save: n_classes is %d", path, d->n_classes);
    }
    if (d->train.n == 0) {
        return dp_err(DP_EINVAL, "%s: cannot save: the train split has no rows", path);
    }
    DP_TRY(check_split_for_save(path, "train", &d->train, d->n_classes));
    if (prod != (size_t)d->train.n_features) {
        DP_FAIL(DP_EINVAL, "%s: cannot save: feature shape does not multiply to n_features %d",
                path, d->train.n_features);
    }
    if (d->test.n > 0) {
        DP_TRY(check_split_for_save(path, "test", &d->test, d->n_classes));
        if (d->test.n_features != d->train.n_features ||
            (d->n_classes == 0 && d->test.n_targets != d->train.n_targets)) {
            DP_FAIL(DP_EINVAL,
                    "%s: cannot save: test split has %d features / %d targets, train %d / %d",
                    path, d->test.n_features, d->test.n_targets, d->train.n_features,
                    d->train.n_targets);
        }
    }

    /* Built in memory and written by the one atomic write of the HDF5 layer (io/h5util.h):
     * a full disk is an error, and readers see the old file or the new one. */
    DP_TRY(dp_h5_atomic_create(&a, path, 0));
    DP_TRY(dp_h5_put_str_attr(a.f, path, "format", DP_FORMAT_NAME));
    DP_TRY(dp_h5_put_int_attr(a.f, path, "format_version", &version, 1));
    nc = d->n_classes;
    DP_TRY(dp_h5_put_int_attr(a.f, path, "num_classes", &nc, 1));
    DP_TRY(write_split(path, a.f, "train", &d->train, d->n_classes, n_feat_dims, feat_dims));
    if (d->test.n > 0) {
        DP_TRY(write_split(path, a.f, "test", &d->test, d->n_classes, n_feat_dims, feat_dims));
    }
    rc = dp_h5_atomic_commit(&a, NULL, NULL);
done:
    if (rc != DP_OK) {
        dp_h5_atomic_abort(&a);
    }
    return rc;
}

int dp_dataset_save(const char *path, const dp_dataset *d)
{
    size_t dim;
    if (!path || !d) {
        return dp_err(DP_EINVAL, "dp_dataset_save: NULL argument");
    }
    dim = d->train.n_features > 0 ? (size_t)d->train.n_features : 0;
    return dp_dataset_save_shaped(path, d, 1, &dim);
}

/* --- memory ------------------------------------------------------------------------------- */

void dp_split_clear(dp_split *s)
{
    dp_stream_free(s->src);
    free(s->x_u8);
    free(s->x_f32);
    free(s->labels);
    free(s->values);
    memset(s, 0, sizeof *s);
}

void dp_dataset_free(dp_dataset **d)
{
    if (!d || !*d) {
        return;
    }
    if (!(*d)->shared) {
        dp_split_clear(&(*d)->train);
        dp_split_clear(&(*d)->test);
    }
    free(*d);
    *d = NULL;
}

/* --- fingerprint -------------------------------------------------------------------------- */

/* The split's bytes in a fixed order (rows, features as 8 little-endian bytes each; x; x's
 * scale and offset; labels; or the target count and targets), hashed with XXH64 (seed 0), the
 * 64-bit hash of xxHash (Yann Collet; the algorithm as its specification,
 * github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md, gives it): four independent lanes
 * over 32-byte stripes, 55 MB in 10 ms here. Until 2026-12 the same bytes went through 64-bit
 * FNV-1a, whose one multiply per byte in a chain took 0.13 s of every start on Fashion-MNIST;
 * dp_split_fingerprint_matches still accepts that older value, so checkpoints written before
 * resume. */

#define XXH_P1 0x9E3779B185EBCA87ULL
#define XXH_P2 0xC2B2AE3D27D4EB4FULL
#define XXH_P3 0x165667B19E3779F9ULL
#define XXH_P4 0x85EBCA77C2B2AE63ULL
#define XXH_P5 0x27D4EB2F165667C5ULL

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* Little-endian loads: one instruction each on a little-endian host. */
static uint64_t le64(const unsigned char *b)
{
    uint64_t v;
    memcpy(&v, b, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static uint64_t le32(const unsigned char *b)
{
    uint32_t v;
    memcpy(&v, b, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static uint64_t xxh_round(uint64_t acc, uint64_t input)
{
    return rotl64(acc + input * XXH_P2, 31) * XXH_P1;
}

static uint64_t xxh_merge(uint64_t acc, uint64_t v)
{
    return (acc ^ xxh_round(0, v)) * XXH_P1 + XXH_P4;
}

static void fp_init(fp_hash *f)
{
    memset(f, 0, sizeof *f);
    f->v[0] = XXH_P1 + XXH_P2;
    f->v[1] = XXH_P2;
    f->v[2] = 0;
    f->v[3] = 0 - XXH_P1;
}

static void fp_stripe(fp_hash *f, const unsigned char *p)
{
    for (int k = 0; k < 4; k++) {
        f->v[k] = xxh_round(f->v[k], le64(p + 8 * k));
    }
}

static void fp_bytes(fp_hash *f, const void *data, size_t n)
{
    const unsigned char *p = data;
    f->total += n;
    if (f->n_buf > 0) {
        size_t take = 32 - f->n_buf < n ? 32 - f->n_buf : n;
        memcpy(f->buf + f->n_buf, p, take);
        f->n_buf += take;
        p += take;
        n -= take;
        if (f->n_buf < 32) {
            return;
        }
        fp_stripe(f, f->buf);
        f->n_buf = 0;
    }
    /* Four lanes in registers: the compiler keeps f->v out of memory in this loop. */
    uint64_t v0 = f->v[0], v1 = f->v[1], v2 = f->v[2], v3 = f->v[3];
    for (; n >= 32; p += 32, n -= 32) {
        v0 = xxh_round(v0, le64(p));
        v1 = xxh_round(v1, le64(p + 8));
        v2 = xxh_round(v2, le64(p + 16));
        v3 = xxh_round(v3, le64(p + 24));
    }
    f->v[0] = v0;
    f->v[1] = v1;
    f->v[2] = v2;
    f->v[3] = v3;
    memcpy(f->buf, p, n);
    f->n_buf = n;
}

/* A 64-bit integer as 8 little-endian bytes, the same on every host. */
static void fp_u64(fp_hash *f, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(v >> (8 * i));
    }
    fp_bytes(f, b, sizeof b);
}

static uint64_t fp_final(const fp_hash *f)
{
    uint64_t h;
    if (f->total >= 32) {
        h = rotl64(f->v[0], 1) + rotl64(f->v[1], 7) + rotl64(f->v[2], 12) + rotl64(f->v[3], 18);
        for (int k = 0; k < 4; k++) {
            h = xxh_merge(h, f->v[k]);
        }
    } else {
        h = XXH_P5; /* seed 0: v[2] is the seed */
    }
    h += f->total;
    const unsigned char *p = f->buf;
    size_t n = f->n_buf;
    for (; n >= 8; p += 8, n -= 8) {
        h = rotl64(h ^ xxh_round(0, le64(p)), 27) * XXH_P1 + XXH_P4;
    }
    if (n >= 4) {
        h = rotl64(h ^ le32(p) * XXH_P1, 23) * XXH_P2 + XXH_P3;
        p += 4;
        n -= 4;
    }
    for (; n > 0; p++, n--) {
        h = rotl64(h ^ *p * XXH_P5, 11) * XXH_P1;
    }
    h ^= h >> 33;
    h *= XXH_P2;
    h ^= h >> 29;
    h *= XXH_P3;
    h ^= h >> 32;
    return h;
}

uint64_t dp_xxh64(const void *p, size_t n)
{
    fp_hash f;
    fp_init(&f);
    fp_bytes(&f, p, n);
    return fp_final(&f);
}

#define FNV_PRIME 0x100000001b3ULL

static void feed(fp_hash *f, uint64_t *fnv, const void *p, size_t n)
{
    if (!fnv) {
        fp_bytes(f, p, n);
        return;
    }
    const unsigned char *b = p;
    uint64_t h = *fnv;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * FNV_PRIME;
    }
    *fnv = h;
}

static void feed_u64(fp_hash *f, uint64_t *fnv, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(v >> (8 * i));
    }
    feed(f, fnv, b, sizeof b);
}

/* The split's bytes, in the order above, into f (dp_split_fingerprint) or through FNV-1a
 * (fnv != NULL: the older fingerprint). */
static void split_bytes(const dp_split *s, fp_hash *f, uint64_t *fnv)
{
    size_t nf = s->n_features > 0 ? (size_t)s->n_features : 0;
    size_t nt = s->n_targets > 0 ? (size_t)s->n_targets : 0;
    feed_u64(f, fnv, (uint64_t)s->n);
    feed_u64(f, fnv, (uint64_t)nf);
    if (s->x_u8) {
        feed(f, fnv, s->x_u8, s->n * nf);
    } else if (s->x_f32) {
        feed(f, fnv, s->x_f32, s->n * nf * sizeof(float));
    }
    feed(f, fnv, &s->x_scale, sizeof s->x_scale);
    feed(f, fnv, &s->x_offset, sizeof s->x_offset);
    if (s->labels) {
        feed(f, fnv, s->labels, s->n * sizeof(int32_t));
    }
    if (s->values) {
        feed_u64(f, fnv, (uint64_t)nt);
        feed(f, fnv, s->values, s->n * nt * sizeof(float));
    }
}

uint64_t dp_split_fingerprint(const dp_split *s)
{
    if (s->src) {
        return s->src->fingerprint; /* a streamed split's, from the scan of its file */
    }
    fp_hash f;
    fp_init(&f);
    split_bytes(s, &f, NULL);
    return fp_final(&f);
}

bool dp_split_fingerprint_matches(const dp_split *s, uint64_t fp)
{
    if (fp == dp_split_fingerprint(s)) {
        return true;
    }
    if (s->src) {
        return false; /* the older kind would need another pass over the file */
    }
    uint64_t fnv = 0xcbf29ce484222325ULL;
    split_bytes(s, NULL, &fnv);
    return fp == fnv;
}
