/* dataset.c: dp_dataset in memory and in HDF5 files (layout version 1, datasets/README.md):
 * load with full validation, atomic save, free, row gather and fingerprint. Files are
 * opened serially (default property lists) by whichever process calls. */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data_internal.h"
#include "dptrain/err.h"

#define DP_FORMAT_NAME "dptrain-dataset"
enum { DP_FORMAT_VERSION = 1 };

/* What y of a split holds (Y_NONE: there is no y, which only dp_dataset_load_inputs takes). */
enum y_kind { Y_NONE = 0, Y_LABELS = 1, Y_VALUES = 2 };

/* --- HDF5 helpers ----------------------------------------------------------------------- */

/* Switches off HDF5's automatic printing of its error stack (for the calling thread, and it
 * stays off): failures are reported once, as our own message. It is not switched back on,
 * because HDF5 1.10 prints "infinite loop closing library" at exit after a failed open of a
 * malformed file whenever printing is on (HDFGroup/hdf5 issues 3790, 6531). */
static void h5_quiet(void)
{
    /* cannot fail for H5E_DEFAULT; if it did, HDF5 would merely print its stack as well */
    (void)H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* First (outermost, API-level) description on HDF5's current error stack. */
#define H5_WHY_CAP 160
static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    char *buf = data;
    (void)n;
    if (buf[0] == '\0' && e->desc && e->desc[0]) {
        snprintf(buf, H5_WHY_CAP, "%s", e->desc);
    }
    return 0;
}

/* Records "<path>: <what> failed (<HDF5's reason>)" and returns DP_EIO. */
static int h5_fail(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int h5_fail(const char *path, const char *fmt, ...)
{
    char what[512], why[H5_WHY_CAP] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5_walk_cb, why) < 0) {
        why[0] = '\0';
    }
    return dp_err(DP_EIO, "%s: %s failed (%s)", path, what, why[0] ? why : "HDF5 error");
}

/* Checks an HDF5 call (negative = failure) and goes to done with the message. */
#define H5CHK(call, ...)                               \
    do {                                               \
        if ((call) < 0) {                              \
            rc = h5_fail(path, __VA_ARGS__);           \
            goto done;                                 \
        }                                              \
    } while (0)

/* Closes *id (any kind of HDF5 object we open) if valid; sets it invalid. A failed close
 * becomes the status only if nothing failed before. */
static int h5_close(hid_t *id, int rc, const char *path)
{
    herr_t st = 0;
    if (*id < 0) {
        return rc;
    }
    switch (H5Iget_type(*id)) {
    case H5I_FILE: st = H5Fclose(*id); break;
    case H5I_GROUP: st = H5Gclose(*id); break;
    case H5I_DATASET: st = H5Dclose(*id); break;
    case H5I_DATASPACE: st = H5Sclose(*id); break;
    case H5I_DATATYPE: st = H5Tclose(*id); break;
    case H5I_ATTR: st = H5Aclose(*id); break;
    default: st = -1; break;
    }
    *id = H5I_INVALID_HID;
    if (st < 0 && rc == DP_OK) {
        rc = h5_fail(path, "closing an HDF5 object");
    }
    return rc;
}

static const char *h5_class_name(H5T_class_t c)
{
    switch (c) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_STRING: return "string";
    case H5T_BITFIELD: return "bitfield";
    case H5T_OPAQUE: return "opaque";
    case H5T_COMPOUND: return "compound";
    case H5T_REFERENCE: return "reference";
    case H5T_ENUM: return "enum";
    case H5T_VLEN: return "variable-length";
    case H5T_ARRAY: return "array";
    default: return "unknown";
    }
}

/* "[60000, 28, 28]" */
static void fmt_dims(char *buf, size_t cap, int rank, const hsize_t *dims)
{
    size_t len = 0;
    int w = snprintf(buf, cap, "[");
    len = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < rank && len < cap; i++) {
        w = snprintf(buf + len, cap - len, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
        len += w > 0 ? (size_t)w : 0;
    }
    if (len < cap) {
        snprintf(buf + len, cap - len, "]");
    }
}

/* Opens attribute name of obj if it exists: *attr is invalid when it does not. */
static int attr_open(const char *path, hid_t obj, const char *objname, const char *name,
                     hid_t *attr)
{
    int rc = DP_OK;
    htri_t ex;
    *attr = H5I_INVALID_HID;
    H5CHK(ex = H5Aexists(obj, name), "looking for attribute %s of %s", name, objname);
    if (ex > 0) {
        H5CHK(*attr = H5Aopen(obj, name, H5P_DEFAULT), "opening attribute %s of %s", name,
              objname);
    }
done:
    return rc;
}

/* Checks that attribute attr (named name on objname) holds exactly one element; returns its
 * type class in *cls. */
static int attr_check_scalar(const char *path, hid_t attr, const char *objname, const char *name,
                             H5T_class_t *cls)
{
    int rc = DP_OK;
    hid_t space = H5I_INVALID_HID, type = H5I_INVALID_HID;
    hssize_t npoints;
    H5CHK(space = H5Aget_space(attr), "reading attribute %s of %s", name, objname);
    H5CHK(npoints = H5Sget_simple_extent_npoints(space), "reading attribute %s of %s", name,
          objname);
    if (npoints != 1) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s has %lld elements, expected one", path, name,
                objname, (long long)npoints);
    }
    H5CHK(type = H5Aget_type(attr), "reading attribute %s of %s", name, objname);
    H5CHK(*cls = H5Tget_class(type), "reading attribute %s of %s", name, objname);
done:
    rc = h5_close(&type, rc, path);
    rc = h5_close(&space, rc, path);
    return rc;
}

/* Optional integer attribute: *present tells whether it exists; *val its value. */
static int attr_read_int(const char *path, hid_t obj, const char *objname, const char *name,
                         bool *present, long long *val)
{
    int rc = DP_OK;
    hid_t attr = H5I_INVALID_HID;
    H5T_class_t cls;
    *present = false;
    DP_TRY(attr_open(path, obj, objname, name, &attr));
    if (attr < 0) {
        goto done;
    }
    DP_TRY(attr_check_scalar(path, attr, objname, name, &cls));
    if (cls != H5T_INTEGER) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s is %s, expected an integer", path, name,
                objname, h5_class_name(cls));
    }
    H5CHK(H5Aread(attr, H5T_NATIVE_LLONG, val), "reading attribute %s of %s", name, objname);
    *present = true;
done:
    rc = h5_close(&attr, rc, path);
    return rc;
}

/* Optional number attribute (integer or float) read as float; *val keeps its default when
 * the attribute is absent. Must be finite. */
static int attr_read_float(const char *path, hid_t obj, const char *objname, const char *name,
                           float *val)
{
    int rc = DP_OK;
    hid_t attr = H5I_INVALID_HID;
    H5T_class_t cls;
    double v;
    DP_TRY(attr_open(path, obj, objname, name, &attr));
    if (attr < 0) {
        goto done;
    }
    DP_TRY(attr_check_scalar(path, attr, objname, name, &cls));
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s is %s, expected a number", path, name,
                objname, h5_class_name(cls));
    }
    H5CHK(H5Aread(attr, H5T_NATIVE_DOUBLE, &v), "reading attribute %s of %s", name, objname);
    if (!isfinite(v) || !isfinite((float)v)) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s is %g, expected a finite float", path, name,
                objname, v);
    }
    *val = (float)v;
done:
    rc = h5_close(&attr, rc, path);
    return rc;
}

/* Optional string attribute (fixed or variable length) into buf (cap bytes, truncated,
 * trailing NULs and spaces removed); *present tells whether it exists. */
static int attr_read_string(const char *path, hid_t obj, const char *objname, const char *name,
                            bool *present, char *buf, size_t cap)
{
    int rc = DP_OK;
    hid_t attr = H5I_INVALID_HID, ftype = H5I_INVALID_HID, mtype = H5I_INVALID_HID;
    H5T_class_t cls;
    H5T_cset_t cset;
    htri_t is_var;
    char *vstr = NULL, *fstr = NULL;
    size_t size, len;
    *present = false;
    buf[0] = '\0';
    DP_TRY(attr_open(path, obj, objname, name, &attr));
    if (attr < 0) {
        goto done;
    }
    DP_TRY(attr_check_scalar(path, attr, objname, name, &cls));
    if (cls != H5T_STRING) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s is %s, expected a string", path, name,
                objname, h5_class_name(cls));
    }
    H5CHK(ftype = H5Aget_type(attr), "reading attribute %s of %s", name, objname);
    H5CHK(is_var = H5Tis_variable_str(ftype), "reading attribute %s of %s", name, objname);
    H5CHK(cset = H5Tget_cset(ftype), "reading attribute %s of %s", name, objname);
    H5CHK(mtype = H5Tcopy(H5T_C_S1), "reading attribute %s of %s", name, objname);
    H5CHK(H5Tset_cset(mtype, cset), "reading attribute %s of %s", name, objname);
    if (is_var > 0) {
        H5CHK(H5Tset_size(mtype, H5T_VARIABLE), "reading attribute %s of %s", name, objname);
        H5CHK(H5Aread(attr, mtype, &vstr), "reading attribute %s of %s", name, objname);
        snprintf(buf, cap, "%s", vstr ? vstr : "");
    } else {
        size = H5Tget_size(ftype);
        if (size == 0) {
            rc = h5_fail(path, "reading attribute %s of %s", name, objname);
            goto done;
        }
        DP_CALLOC(fstr, size + 1);
        H5CHK(H5Tset_size(mtype, size + 1), "reading attribute %s of %s", name, objname);
        H5CHK(H5Tset_strpad(mtype, H5T_STR_NULLTERM), "reading attribute %s of %s", name,
              objname);
        H5CHK(H5Aread(attr, mtype, fstr), "reading attribute %s of %s", name, objname);
        snprintf(buf, cap, "%s", fstr);
    }
    len = strlen(buf);
    while (len > 0 && buf[len - 1] == ' ') {
        buf[--len] = '\0';
    }
    *present = true;
done:
    if (vstr && H5free_memory(vstr) < 0 && rc == DP_OK) {
        rc = h5_fail(path, "freeing attribute %s of %s", name, objname);
    }
    free(fstr);
    rc = h5_close(&mtype, rc, path);
    rc = h5_close(&ftype, rc, path);
    rc = h5_close(&attr, rc, path);
    return rc;
}

/* --- loading ------------------------------------------------------------------------------ */

/* What read_split learnt beyond the dp_split itself, for the cross-split checks. */
typedef struct {
    enum y_kind kind;
    char x_shape[128]; /* "[n, d1, ...]" */
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

/* Allocates dst with alloc_data or goes to done with DP_ENOMEM. */
#define ALLOC_DATA(dst, name, shape, n_bytes)                          \
    do {                                                               \
        if (!((dst) = alloc_data(path, (name), (shape), (n_bytes)))) { \
            rc = DP_ENOMEM;                                            \
            goto done;                                                 \
        }                                                              \
    } while (0)

/* Opens dataset `leaf` of group grp (called `full` in messages) into *ds and reads its
 * shape into *rank, dims. The caller closes *ds. */
/* Refuses a dataset compressed with a filter this HDF5 library lacks (h5py's lzf, blosc, ...)
 * by name, before a read fails with HDF5's bare "can't read data". */
static int check_filters(const char *path, hid_t ds, const char *full)
{
    int rc = DP_OK;
    hid_t dcpl = H5I_INVALID_HID;
    int n = 0;
    H5CHK(dcpl = H5Dget_create_plist(ds), "reading the storage of %s", full);
    H5CHK(n = H5Pget_nfilters(dcpl), "reading the filters of %s", full);
    for (int i = 0; i < n; i++) {
        char name[64] = "";
        unsigned flags = 0, cd[8];
        size_t n_cd = sizeof cd / sizeof cd[0];
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &n_cd, cd, sizeof name,
                                         name, NULL);
        if (id < 0) {
            DP_FAIL(DP_EFORMAT, "%s: %s: cannot read its filter %d", path, full, i);
        }
        if (H5Zfilter_avail(id) <= 0) {
            DP_FAIL(DP_EFORMAT,
                    "%s: %s is compressed with filter '%s' (HDF5 filter id %d), which this "
                    "HDF5 library does not have; rewrite the file with gzip, e.g. "
                    "h5repack -f GZIP=4 %s OUT.h5 where that filter is installed, or in h5py "
                    "with compression=\"gzip\"",
                    path, full, name[0] ? name : (id == 32000 ? "lzf" : "unknown"), (int)id,
                    path);
        }
    }
done:
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

static int open_with_shape(const char *path, hid_t grp, const char *leaf, const char *full,
                           hid_t *ds, int *rank, hsize_t *dims)
{
    int rc = DP_OK;
    hid_t space = H5I_INVALID_HID;
    htri_t ex;
    H5CHK(ex = H5Lexists(grp, leaf, H5P_DEFAULT), "looking for %s", full);
    if (ex == 0) {
        DP_FAIL(DP_EFORMAT, "%s: %s is missing", path, full);
    }
    H5CHK(*ds = H5Dopen2(grp, leaf, H5P_DEFAULT), "opening dataset %s", full);
    DP_TRY(check_filters(path, *ds, full));
    H5CHK(space = H5Dget_space(*ds), "reading the shape of %s", full);
    H5CHK(*rank = H5Sget_simple_extent_ndims(space), "reading the shape of %s", full);
    if (*rank > H5S_MAX_RANK) {
        DP_FAIL(DP_EFORMAT, "%s: %s has %d dimensions, too many", path, full, *rank);
    }
    H5CHK(H5Sget_simple_extent_dims(space, dims, NULL), "reading the shape of %s", full);
done:
    return h5_close(&space, rc, path);
}

/* Refuses dataset ds (full, of shape `shape`, n_elem elements) when the file does not store
 * the data its shape promises, before anything is allocated for it: HDF5 hands out the fill
 * value for data never written, so a 3 KB file declaring x [2e8, 3] made dptrain train fill
 * gigabytes; and a damaged contiguous header can promise far more than it stores. Contiguous
 * and compact data must store every byte; chunked data (perhaps compressed) every chunk. */
static int check_stored(const char *path, hid_t ds, const char *full, const char *shape,
                        size_t n_elem)
{
    int rc = DP_OK;
    hid_t dcpl = H5I_INVALID_HID, type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK], have = 0;
    H5D_layout_t layout;
    double need = 1.0;
    int rank;
    if (n_elem == 0) {
        return DP_OK;
    }
    H5CHK(dcpl = H5Dget_create_plist(ds), "reading the storage of %s", full);
    H5CHK(layout = H5Pget_layout(dcpl), "reading the storage of %s", full);
    if (layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) {
        H5CHK(type = H5Dget_type(ds), "reading the type of %s", full);
        const size_t type_size = H5Tget_size(type);
        if (type_size == 0 || H5Dget_storage_size(ds) / type_size < n_elem) {
            DP_FAIL(DP_EFORMAT, "%s: %s has shape %s but the file stores %llu bytes of it: "
                    "never written, or a damaged file", path, full, shape,
                    (unsigned long long)H5Dget_storage_size(ds));
        }
        /* A damaged header can also claim storage the file does not have: contiguous data
         * must lie inside the file. */
        if (layout == H5D_CONTIGUOUS) {
            hid_t fid = H5Iget_file_id(ds);
            hsize_t file_size = 0;
            const haddr_t at = H5Dget_offset(ds);
            const herr_t got = fid >= 0 ? H5Fget_filesize(fid, &file_size) : -1;
            if (fid >= 0) {
                H5Fclose(fid);
            }
            if (got < 0 || at == HADDR_UNDEF || at > file_size ||
                (hsize_t)n_elem * type_size > file_size - at) {
                DP_FAIL(DP_EFORMAT, "%s: %s has shape %s, which does not fit in the file "
                        "(%llu bytes): a damaged file", path, full, shape,
                        (unsigned long long)file_size);
            }
        }
    } else if (layout == H5D_CHUNKED) {
        H5CHK(space = H5Dget_space(ds), "reading the shape of %s", full);
        H5CHK(rank = H5Sget_simple_extent_dims(space, dims, NULL), "reading the shape of %s",
              full);
        if (H5Pget_chunk(dcpl, rank, chunk) != rank) {
            rc = h5_fail(path, "reading the chunks of %s", full);
            goto done;
        }
        for (int i = 0; i < rank; i++) {
            need *= chunk[i] ? ceil((double)dims[i] / (double)chunk[i]) : 0.0;
        }
        H5CHK(H5Dget_num_chunks(ds, space, &have), "reading the chunks of %s", full);
        if ((double)have < need) {
            DP_FAIL(DP_EFORMAT, "%s: %s has shape %s but the file stores %llu of its %.0f "
                    "chunks: never written, or a damaged file", path, full, shape,
                    (unsigned long long)have, need);
        }
    }
done:
    rc = h5_close(&space, rc, path);
    rc = h5_close(&type, rc, path);
    if (dcpl >= 0 && H5Pclose(dcpl) < 0 && rc == DP_OK) {
        rc = h5_fail(path, "closing an HDF5 object");
    }
    return rc;
}

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
    H5CHK(H5Dread(yds, is_unsigned ? H5T_NATIVE_UINT64 : H5T_NATIVE_INT64, H5S_ALL, H5S_ALL,
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

/* Reads /<name>/x and /<name>/y of file into s (name "": /x and /y at the root). Without
 * y_optional a missing y is an error; with it, s has no labels and no values. */
static int read_split(const char *path, hid_t file, const char *name, bool y_optional,
                      dp_split *s, split_info *info)
{
    int rc = DP_OK;
    hid_t grp = H5I_INVALID_HID, xds = H5I_INVALID_HID, yds = H5I_INVALID_HID;
    hid_t space = H5I_INVALID_HID, type = H5I_INVALID_HID;
    char xname[32], yname[32], y_shape[128];
    hsize_t xdims[H5S_MAX_RANK], ydims[H5S_MAX_RANK];
    int xrank, yrank;
    H5T_class_t cls;
    size_t n, n_elem, feat = 1;
    bool is_u8 = false;

    snprintf(xname, sizeof xname, "%s%s/x", name[0] ? "/" : "", name);
    snprintf(yname, sizeof yname, "%s%s/y", name[0] ? "/" : "", name);
    H5CHK(grp = H5Gopen2(file, name[0] ? name : "/", H5P_DEFAULT),
          "opening group /%s (is it a group?)", name);

    /* x: shape, type, attributes, data */
    DP_TRY(open_with_shape(path, grp, "x", xname, &xds, &xrank, xdims));
    fmt_dims(info->x_shape, sizeof info->x_shape, xrank, xdims);
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

    H5CHK(type = H5Dget_type(xds), "reading the type of %s", xname);
    H5CHK(cls = H5Tget_class(type), "reading the type of %s", xname);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        DP_FAIL(DP_EFORMAT, "%s: %s has %s type; expected integer or float", path, xname,
                h5_class_name(cls));
    }
    if (cls == H5T_INTEGER) {
        H5T_sign_t sign;
        size_t size = H5Tget_size(type);
        H5CHK(sign = H5Tget_sign(type), "reading the type of %s", xname);
        if (size == 0) {
            rc = h5_fail(path, "reading the type of %s", xname);
            goto done;
        }
        is_u8 = size == 1 && sign == H5T_SGN_NONE;
    }
    rc = h5_close(&type, rc, path);
    if (rc != DP_OK) {
        goto done;
    }
    DP_TRY(attr_read_float(path, xds, xname, "scale", &s->x_scale));
    DP_TRY(attr_read_float(path, xds, xname, "offset", &s->x_offset));
    DP_TRY(check_stored(path, xds, xname, info->x_shape, n_elem));
    if (is_u8) {
        ALLOC_DATA(s->x_u8, xname, info->x_shape, n_elem);
        if (n_elem > 0) {
            H5CHK(H5Dread(xds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->x_u8),
                  "reading %s", xname);
        }
    } else {
        ALLOC_DATA(s->x_f32, xname, info->x_shape, n_elem * sizeof(float));
        if (n_elem > 0) {
            H5CHK(H5Dread(xds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->x_f32),
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
        H5CHK(ex = H5Lexists(grp, "y", H5P_DEFAULT), "looking for %s", yname);
        if (ex == 0) {
            goto done;
        }
    }
    DP_TRY(open_with_shape(path, grp, "y", yname, &yds, &yrank, ydims));
    fmt_dims(y_shape, sizeof y_shape, yrank, ydims);
    H5CHK(type = H5Dget_type(yds), "reading the type of %s", yname);
    H5CHK(cls = H5Tget_class(type), "reading the type of %s", yname);
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
                path, yname, h5_class_name(cls));
    }
    if (ydims[0] != xdims[0]) {
        DP_FAIL(DP_EFORMAT, "%s: %s has %d dimensions %s but %s has %llu rows", path, xname,
                xrank, info->x_shape, yname, (unsigned long long)ydims[0]);
    }
    if (cls == H5T_INTEGER) {
        info->kind = Y_LABELS;
        DP_TRY(check_stored(path, yds, yname, y_shape, n));
        ALLOC_DATA(s->labels, yname, y_shape, n * sizeof(int32_t));
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
        DP_TRY(check_stored(path, yds, yname, y_shape, n * (size_t)k));
        ALLOC_DATA(s->values, yname, y_shape, n * (size_t)k * sizeof(float));
        if (n > 0) {
            H5CHK(H5Dread(yds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->values),
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
    rc = h5_close(&type, rc, path);
    rc = h5_close(&space, rc, path);
    rc = h5_close(&yds, rc, path);
    rc = h5_close(&xds, rc, path);
    rc = h5_close(&grp, rc, path);
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

/* Validates the root attributes of an open root group. */
static int read_root_attrs(const char *path, hid_t root, bool *has_nc, long long *nc)
{
    int rc = DP_OK;
    char fmt[128];
    bool present;
    long long version;
    DP_TRY(attr_read_string(path, root, "/", "format", &present, fmt, sizeof fmt));
    if (present && strcmp(fmt, DP_FORMAT_NAME) != 0) {
        DP_FAIL(DP_EFORMAT, "%s: attribute format is '%s', expected '%s'", path, fmt,
                DP_FORMAT_NAME);
    }
    DP_TRY(attr_read_int(path, root, "/", "format_version", &present, &version));
    if (present && version > DP_FORMAT_VERSION) {
        DP_FAIL(DP_EFORMAT,
                "%s: format_version %lld is newer than this dptrain reads (%d); upgrade dptrain",
                path, version, DP_FORMAT_VERSION);
    }
    if (present && version < 1) {
        DP_FAIL(DP_EFORMAT, "%s: format_version %lld is not valid (expected %d)", path, version,
                DP_FORMAT_VERSION);
    }
    DP_TRY(attr_read_int(path, root, "/", "num_classes", has_nc, nc));
    if (*has_nc && (*nc < 0 || *nc > INT_MAX)) {
        DP_FAIL(DP_EFORMAT, "%s: attribute num_classes is %lld, expected 0 (regression) or a "
                "positive class count", path, *nc);
    }
done:
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
    h5_quiet();
    *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*file < 0) {
        DP_FAIL(DP_EFORMAT, "%s: cannot open as an HDF5 file (not HDF5, or damaged)", path);
    }
    H5CHK(*root = H5Gopen2(*file, "/", H5P_DEFAULT), "opening the root group");
    DP_TRY(read_root_attrs(path, *root, has_nc, nc_attr));
done:
    return rc;
}

int dp_dataset_load(const char *path, dp_dataset **out)
{
    int rc = DP_OK;
    dp_dataset *d = NULL;
    hid_t file = H5I_INVALID_HID, root = H5I_INVALID_HID;
    bool has_nc = false, has_test = false;
    long long nc_attr = 0;
    htri_t ex;
    split_info tri = {0}, tei = {0};

    if (!out) {
        return dp_err(DP_EINVAL, "dp_dataset_load: out is NULL");
    }
    *out = NULL;
    if (!path) {
        return dp_err(DP_EINVAL, "dp_dataset_load: path is NULL");
    }
    DP_TRY(open_dataset_file(path, &file, &root, &has_nc, &nc_attr));

    H5CHK(ex = H5Lexists(root, "train", H5P_DEFAULT), "looking for /train");
    if (ex == 0) {
        DP_FAIL(DP_EFORMAT,
                "%s: no /train group (a dataset needs /train/x and /train/y; see "
                "datasets/README.md)",
                path);
    }
    H5CHK(ex = H5Lexists(root, "test", H5P_DEFAULT), "looking for /test");
    has_test = ex > 0;

    DP_CALLOC(d, 1);
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
    rc = h5_close(&root, rc, path);
    rc = h5_close(&file, rc, path);
    if (rc != DP_OK && *out) {
        dp_dataset_free(out); /* a failed close after a successful read */
    }
    dp_dataset_free(&d);
    return rc;
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
        H5CHK(ex = H5Lexists(root, names[k], H5P_DEFAULT), "looking for /%s", names[k]);
        has[k] = ex > 0;
    }
    if (!has[0] && !has[1]) {
        H5CHK(ex = H5Lexists(root, "x", H5P_DEFAULT), "looking for /x");
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
    rc = h5_close(&root, rc, path);
    rc = h5_close(&file, rc, path);
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

/* Writes a scalar attribute name = *buf on obj, stored as ftype, given in memory as mtype. */
static int write_attr(const char *path, hid_t obj, const char *objname, const char *name,
                      hid_t ftype, hid_t mtype, const void *buf)
{
    int rc = DP_OK;
    hid_t space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
    H5CHK(space = H5Screate(H5S_SCALAR), "writing attribute %s of %s", name, objname);
    H5CHK(attr = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT),
          "writing attribute %s of %s", name, objname);
    H5CHK(H5Awrite(attr, mtype, buf), "writing attribute %s of %s", name, objname);
done:
    rc = h5_close(&attr, rc, path);
    rc = h5_close(&space, rc, path);
    return rc;
}

/* Writes dataset name of loc with the given shape; returns it open in *ds. */
static int write_array(const char *path, hid_t loc, const char *name, hid_t ftype, hid_t mtype,
                       int rank, const hsize_t *dims, const void *buf, hid_t *ds)
{
    int rc = DP_OK;
    hid_t space = H5I_INVALID_HID;
    H5CHK(space = H5Screate_simple(rank, dims, NULL), "creating the shape of %s", name);
    H5CHK(*ds = H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "creating dataset %s", name);
    H5CHK(H5Dwrite(*ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), "writing dataset %s", name);
done:
    rc = h5_close(&space, rc, path);
    return rc;
}

static int write_split(const char *path, hid_t file, const char *name, const dp_split *s,
                       int n_classes, int n_feat_dims, const size_t *feat_dims)
{
    int rc = DP_OK;
    hid_t grp = H5I_INVALID_HID, xds = H5I_INVALID_HID, yds = H5I_INVALID_HID;
    hsize_t dims[DP_DATA_MAX_FEATURE_DIMS + 1];
    char gname[16], xname[32], yname[32];
    snprintf(gname, sizeof gname, "/%s", name);
    snprintf(xname, sizeof xname, "/%s/x", name);
    snprintf(yname, sizeof yname, "/%s/y", name);
    H5CHK(grp = H5Gcreate2(file, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "creating group %s", gname);
    dims[0] = (hsize_t)s->n;
    for (int i = 0; i < n_feat_dims; i++) {
        dims[i + 1] = (hsize_t)feat_dims[i];
    }
    if (s->x_u8) {
        DP_TRY(write_array(path, file, xname, H5T_STD_U8LE, H5T_NATIVE_UINT8, n_feat_dims + 1,
                           dims, s->x_u8, &xds));
    } else {
        DP_TRY(write_array(path, file, xname, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, n_feat_dims + 1,
                           dims, s->x_f32, &xds));
    }
    DP_TRY(write_attr(path, xds, xname, "scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &s->x_scale));
    DP_TRY(write_attr(path, xds, xname, "offset", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                      &s->x_offset));
    if (n_classes > 0) {
        DP_TRY(write_array(path, file, yname, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dims,
                           s->labels, &yds));
    } else {
        hsize_t ydims[2] = {(hsize_t)s->n, (hsize_t)s->n_targets};
        DP_TRY(write_array(path, file, yname, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                           s->n_targets == 1 ? 1 : 2, ydims, s->values, &yds));
    }
done:
    rc = h5_close(&yds, rc, path);
    rc = h5_close(&xds, rc, path);
    rc = h5_close(&grp, rc, path);
    return rc;
}

/* Flushes the finished file tmp to stable storage before it is renamed into place. */
static int sync_file(const char *path, const char *tmp)
{
    int fd = open(tmp, O_RDONLY);
    if (fd < 0) {
        return dp_err(DP_EIO, "%s: cannot reopen %s to sync it (%s)", path, tmp, strerror(errno));
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return dp_err(DP_EIO, "%s: cannot sync %s (%s)", path, tmp, strerror(e));
    }
    if (close(fd) != 0) {
        return dp_err(DP_EIO, "%s: cannot close %s (%s)", path, tmp, strerror(errno));
    }
    return DP_OK;
}

int dp_dataset_save_shaped(const char *path, const dp_dataset *d, int n_feat_dims,
                           const size_t *feat_dims)
{
    int rc = DP_OK;
    hid_t file = H5I_INVALID_HID, root = H5I_INVALID_HID, strtype = H5I_INVALID_HID;
    bool created = false;
    char *tmp = NULL;
    size_t prod = 1, tmp_len;
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

    tmp_len = strlen(path) + 32;
    DP_CALLOC(tmp, tmp_len);
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());

    h5_quiet();
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        DP_FAIL(DP_EIO, "%s: cannot create temporary file %s (is the directory writable?)", path,
                tmp);
    }
    created = true;
    H5CHK(root = H5Gopen2(file, "/", H5P_DEFAULT), "opening the root group");
    H5CHK(strtype = H5Tcopy(H5T_C_S1), "creating the string type");
    H5CHK(H5Tset_size(strtype, sizeof DP_FORMAT_NAME), "creating the string type");
    H5CHK(H5Tset_strpad(strtype, H5T_STR_NULLTERM), "creating the string type");
    H5CHK(H5Tset_cset(strtype, H5T_CSET_ASCII), "creating the string type");
    DP_TRY(write_attr(path, root, "/", "format", strtype, strtype, DP_FORMAT_NAME));
    DP_TRY(write_attr(path, root, "/", "format_version", H5T_STD_I32LE, H5T_NATIVE_INT,
                      &version));
    nc = d->n_classes;
    DP_TRY(write_attr(path, root, "/", "num_classes", H5T_STD_I32LE, H5T_NATIVE_INT, &nc));
    DP_TRY(write_split(path, file, "train", &d->train, d->n_classes, n_feat_dims, feat_dims));
    if (d->test.n > 0) {
        DP_TRY(write_split(path, file, "test", &d->test, d->n_classes, n_feat_dims, feat_dims));
    }
    rc = h5_close(&strtype, rc, path);
    rc = h5_close(&root, rc, path);
    rc = h5_close(&file, rc, path);
    if (rc != DP_OK) {
        goto done;
    }
    DP_TRY(sync_file(path, tmp));
    if (rename(tmp, path) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot rename %s onto it (%s)", path, tmp, strerror(errno));
    }
    created = false;
done:
    rc = h5_close(&strtype, rc, path);
    rc = h5_close(&root, rc, path);
    rc = h5_close(&file, rc, path);
    if (created && remove(tmp) != 0 && errno != ENOENT) {
        char first[768];
        snprintf(first, sizeof first, "%s", dp_errmsg());
        rc = dp_err(rc, "%s (and the temporary file could not be removed: %s)", first,
                    strerror(errno));
    }
    free(tmp);
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
    dp_split_clear(&(*d)->train);
    dp_split_clear(&(*d)->test);
    free(*d);
    *d = NULL;
}

/* --- fingerprint -------------------------------------------------------------------------- */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n_bytes)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n_bytes; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* A 64-bit integer hashed as 8 little-endian bytes, the same on every host. */
static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(v >> (8 * i));
    }
    return fnv_bytes(h, b, sizeof b);
}

uint64_t dp_split_fingerprint(const dp_split *s)
{
    uint64_t h = FNV_OFFSET;
    size_t nf = s->n_features > 0 ? (size_t)s->n_features : 0;
    size_t nt = s->n_targets > 0 ? (size_t)s->n_targets : 0;
    h = fnv_u64(h, (uint64_t)s->n);
    h = fnv_u64(h, (uint64_t)nf);
    if (s->x_u8) {
        h = fnv_bytes(h, s->x_u8, s->n * nf);
    } else if (s->x_f32) {
        h = fnv_bytes(h, s->x_f32, s->n * nf * sizeof(float));
    }
    h = fnv_bytes(h, &s->x_scale, sizeof s->x_scale);
    h = fnv_bytes(h, &s->x_offset, sizeof s->x_offset);
    if (s->labels) {
        h = fnv_bytes(h, s->labels, s->n * sizeof(int32_t));
    }
    if (s->values) {
        h = fnv_u64(h, (uint64_t)nt);
        h = fnv_bytes(h, s->values, s->n * nt * sizeof(float));
    }
    return h;
}
