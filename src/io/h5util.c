/* h5util.c: the project's one HDF5 layer (see h5util.h): checked calls with HDF5's reason,
 * handle closing, attributes, datasets and the atomic write of a whole file. */
#include "h5util.h"

#include "core/proc.h"

#include "dptrain/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- checked calls ---------------------------------------------------------------------- */

void dp_h5_quiet(void)
{
    /* cannot fail for H5E_DEFAULT; if it did, HDF5 would merely print its stack as well */
    (void)H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

typedef struct {
    char *buf;
    size_t cap;
} reason_buf;

/* Walking upward, the first entry with a description is the innermost: HDF5's own reason
 * ("file signature not found"), where the outer ones only say "unable to open file". */
static herr_t reason_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    reason_buf *r = data;
    (void)n;
    if (r->buf[0] == '\0' && e->desc && e->desc[0]) {
        snprintf(r->buf, r->cap, "%s", e->desc);
        for (char *c = r->buf; *c; c++) {
            if (*c == '\n' || *c == '\r') {
                *c = ' '; /* some descriptions hold a line break */
            }
        }
    }
    return 0;
}

void dp_h5_reason(char *buf, size_t cap)
{
    reason_buf r = {buf, cap};
    if (cap == 0) {
        return;
    }
    buf[0] = '\0';
    if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, reason_cb, &r) < 0 || buf[0] == '\0') {
        snprintf(buf, cap, "HDF5 error");
    }
}

int dp_h5_fail(const char *path, const char *fmt, ...)
{
    char what[512], why[256];
    dp_h5_reason(why, sizeof why); /* first: anything else may clear HDF5's stack */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return dp_err(DP_EIO, "%s: %s failed (%s)", path, what, why);
}

int dp_h5_close(hid_t *id, int rc, const char *path)
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
    case H5I_GENPROP_LST: st = H5Pclose(*id); break;
    default: st = -1; break;
    }
    *id = H5I_INVALID_HID;
    if (st < 0 && rc == DP_OK) {
        rc = dp_h5_fail(path, "closing an HDF5 object");
    }
    return rc;
}

/* --- files ------------------------------------------------------------------------------ */

int dp_h5_open_ro(const char *path, const char *what, hid_t *f)
{
    char why[256];
    dp_h5_quiet();
    *f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*f < 0) {
        dp_h5_reason(why, sizeof why);
        return dp_err(DP_EFORMAT, "%s: %s (HDF5: %s)", path, what, why);
    }
    return DP_OK;
}

/* --- names and shapes ------------------------------------------------------------------- */

const char *dp_h5_class_name(H5T_class_t c)
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

void dp_h5_fmt_dims(char *buf, size_t cap, int rank, const hsize_t *dims)
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

void dp_h5_obj_name(hid_t obj, char *buf, size_t cap)
{
    ssize_t n = H5Iget_name(obj, buf, cap);
    if (n <= 0) {
        snprintf(buf, cap, "?");
    }
}

/* --- attributes ------------------------------------------------------------------------- */

int dp_h5_has_attr(hid_t obj, const char *path, const char *name, bool *present)
{
    int rc = DP_OK;
    htri_t ex = 0;
    char on[256];
    dp_h5_obj_name(obj, on, sizeof on);
    *present = false;
    DP_H5CHK(ex = H5Aexists(obj, name), "looking for attribute %s of %s", name, on);
    *present = ex > 0;
done:
    return rc;
}

int dp_h5_put_str_attr(hid_t obj, const char *path, const char *name, const char *value)
{
    int rc = DP_OK;
    hid_t t = H5I_INVALID_HID, sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    char on[256];
    dp_h5_obj_name(obj, on, sizeof on);
    DP_H5CHK(t = H5Tcopy(H5T_C_S1), "writing attribute %s of %s", name, on);
    DP_H5CHK(H5Tset_size(t, strlen(value) + 1), "writing attribute %s of %s", name, on);
    DP_H5CHK(H5Tset_strpad(t, H5T_STR_NULLTERM), "writing attribute %s of %s", name, on);
    DP_H5CHK(H5Tset_cset(t, H5T_CSET_ASCII), "writing attribute %s of %s", name, on);
    DP_H5CHK(sp = H5Screate(H5S_SCALAR), "writing attribute %s of %s", name, on);
    DP_H5CHK(a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT),
             "writing attribute %s of %s", name, on);
    DP_H5CHK(H5Awrite(a, t, value), "writing attribute %s of %s", name, on);
done:
    rc = dp_h5_close(&a, rc, path);
    rc = dp_h5_close(&sp, rc, path);
    rc = dp_h5_close(&t, rc, path);
    return rc;
}

/* Opens attribute name of obj (called on in messages), which must exist and hold exactly
 * n values, and returns its type class in *cls. The caller closes *a. */
static int attr_open(hid_t obj, const char *path, const char *on, const char *name, hsize_t n,
                     hid_t *a, H5T_class_t *cls)
{
    int rc = DP_OK;
    hid_t sp = H5I_INVALID_HID, t = H5I_INVALID_HID;
    htri_t ex = 0;
    hssize_t have = 0;
    *a = H5I_INVALID_HID;
    DP_H5CHK(ex = H5Aexists(obj, name), "looking for attribute %s of %s", name, on);
    if (ex == 0) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s is missing", path, name, on);
    }
    DP_H5CHK(*a = H5Aopen(obj, name, H5P_DEFAULT), "opening attribute %s of %s", name, on);
    DP_H5CHK(sp = H5Aget_space(*a), "reading attribute %s of %s", name, on);
    DP_H5CHK(have = H5Sget_simple_extent_npoints(sp), "reading attribute %s of %s", name, on);
    if (have != (hssize_t)n) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s has %lld values, expected %llu", path, name,
                on, (long long)have, (unsigned long long)n);
    }
    DP_H5CHK(t = H5Aget_type(*a), "reading attribute %s of %s", name, on);
    DP_H5CHK(*cls = H5Tget_class(t), "reading attribute %s of %s", name, on);
done:
    rc = dp_h5_close(&t, rc, path);
    rc = dp_h5_close(&sp, rc, path);
    return rc;
}

int dp_h5_get_str_attr(hid_t obj, const char *path, const char *name, char **out)
{
    int rc = DP_OK;
    hid_t a = H5I_INVALID_HID, ft = H5I_INVALID_HID, mt = H5I_INVALID_HID;
    H5T_class_t cls = H5T_NO_CLASS;
    H5T_cset_t cset = H5T_CSET_ASCII;
    htri_t is_var = 0;
    char *buf = NULL, *vs = NULL, on[256];
    dp_h5_obj_name(obj, on, sizeof on);
    *out = NULL;
    DP_TRY(attr_open(obj, path, on, name, 1, &a, &cls));
    if (cls != H5T_STRING) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s is %s, expected a string", path, name, on,
                dp_h5_class_name(cls));
    }
    DP_H5CHK(ft = H5Aget_type(a), "reading attribute %s of %s", name, on);
    DP_H5CHK(is_var = H5Tis_variable_str(ft), "reading attribute %s of %s", name, on);
    DP_H5CHK(cset = H5Tget_cset(ft), "reading attribute %s of %s", name, on);
    DP_H5CHK(mt = H5Tcopy(H5T_C_S1), "reading attribute %s of %s", name, on);
    DP_H5CHK(H5Tset_cset(mt, cset), "reading attribute %s of %s", name, on);
    if (is_var > 0) {
        DP_H5CHK(H5Tset_size(mt, H5T_VARIABLE), "reading attribute %s of %s", name, on);
        DP_H5CHK(H5Aread(a, mt, &vs), "reading attribute %s of %s", name, on);
        buf = strdup(vs ? vs : "");
    } else {
        size_t len = H5Tget_size(ft);
        if (len == 0) {
            rc = dp_h5_fail(path, "reading attribute %s of %s", name, on);
            goto done;
        }
        DP_CALLOC(buf, len + 1);
        DP_H5CHK(H5Tset_size(mt, len + 1), "reading attribute %s of %s", name, on);
        DP_H5CHK(H5Tset_strpad(mt, H5T_STR_NULLTERM), "reading attribute %s of %s", name, on);
        DP_H5CHK(H5Aread(a, mt, buf), "reading attribute %s of %s", name, on);
    }
    if (!buf) {
        DP_FAIL(DP_ENOMEM, "%s: out of memory reading attribute %s of %s", path, name, on);
    }
    *out = buf;
    buf = NULL;
done:
    if (vs && H5free_memory(vs) < 0 && rc == DP_OK) {
        rc = dp_h5_fail(path, "freeing attribute %s of %s", name, on);
    }
    free(buf);
    rc = dp_h5_close(&mt, rc, path);
    rc = dp_h5_close(&ft, rc, path);
    rc = dp_h5_close(&a, rc, path);
    return rc;
}

int dp_h5_put_num_attr(hid_t obj, const char *path, const char *name, hid_t ft, hid_t mt,
                       const void *v, hsize_t n)
{
    int rc = DP_OK;
    hid_t sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    char on[256];
    dp_h5_obj_name(obj, on, sizeof on);
    DP_H5CHK(sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL),
             "writing attribute %s of %s", name, on);
    DP_H5CHK(a = H5Acreate2(obj, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT),
             "writing attribute %s of %s", name, on);
    DP_H5CHK(H5Awrite(a, mt, v), "writing attribute %s of %s", name, on);
done:
    rc = dp_h5_close(&a, rc, path);
    rc = dp_h5_close(&sp, rc, path);
    return rc;
}

int dp_h5_get_num_attr(hid_t obj, const char *path, const char *name, hid_t mt, void *v,
                       hsize_t n)
{
    int rc = DP_OK;
    hid_t a = H5I_INVALID_HID;
    H5T_class_t cls = H5T_NO_CLASS;
    const bool want_int = H5Tget_class(mt) == H5T_INTEGER;
    char on[256];
    dp_h5_obj_name(obj, on, sizeof on);
    DP_TRY(attr_open(obj, path, on, name, n, &a, &cls));
    if (cls != H5T_INTEGER && (want_int || cls != H5T_FLOAT)) {
        DP_FAIL(DP_EFORMAT, "%s: attribute %s of %s is %s, expected %s", path, name, on,
                dp_h5_class_name(cls), want_int ? "an integer" : "a number");
    }
    DP_H5CHK(H5Aread(a, mt, v), "reading attribute %s of %s", name, on);
done:
    rc = dp_h5_close(&a, rc, path);
    return rc;
}

int dp_h5_put_int_attr(hid_t obj, const char *path, const char *name, const int *v, hsize_t n)
{
    return dp_h5_put_num_attr(obj, path, name, H5T_STD_I32LE, H5T_NATIVE_INT, v, n);
}

int dp_h5_get_int_attr(hid_t obj, const char *path, const char *name, int *v, hsize_t n)
{
    return dp_h5_get_num_attr(obj, path, name, H5T_NATIVE_INT, v, n);
}

int dp_h5_put_i64_attr(hid_t obj, const char *path, const char *name, const int64_t *v,
                       hsize_t n)
{
    return dp_h5_put_num_attr(obj, path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, v, n);
}

int dp_h5_get_i64_attr(hid_t obj, const char *path, const char *name, int64_t *v, hsize_t n)
{
    return dp_h5_get_num_attr(obj, path, name, H5T_NATIVE_INT64, v, n);
}

int dp_h5_put_u64_attr(hid_t obj, const char *path, const char *name, const uint64_t *v,
                       hsize_t n)
{
    return dp_h5_put_num_attr(obj, path, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, v, n);
}

int dp_h5_get_u64_attr(hid_t obj, const char *path, const char *name, uint64_t *v, hsize_t n)
{
    return dp_h5_get_num_attr(obj, path, name, H5T_NATIVE_UINT64, v, n);
}

int dp_h5_put_f32_attr(hid_t obj, const char *path, const char *name, const float *v, hsize_t n)
{
    return dp_h5_put_num_attr(obj, path, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v, n);
}

int dp_h5_get_f32_attr(hid_t obj, const char *path, const char *name, float *v, hsize_t n)
{
    return dp_h5_get_num_attr(obj, path, name, H5T_NATIVE_FLOAT, v, n);
}

int dp_h5_put_f64_attr(hid_t obj, const char *path, const char *name, const double *v,
                       hsize_t n)
{
    return dp_h5_put_num_attr(obj, path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v, n);
}

int dp_h5_get_f64_attr(hid_t obj, const char *path, const char *name, double *v, hsize_t n)
{
    return dp_h5_get_num_attr(obj, path, name, H5T_NATIVE_DOUBLE, v, n);
}

/* --- datasets --------------------------------------------------------------------------- */

int dp_h5_write(hid_t loc, const char *path, const char *name, hid_t file_type,
                hid_t mem_type, int rank, const hsize_t *dims, const void *v)
{
    int rc = DP_OK;
    hid_t sp = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    DP_H5CHK(sp = H5Screate_simple(rank, dims, NULL), "creating the shape of dataset %s", name);
    DP_H5CHK(ds = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "creating dataset %s", name);
    DP_H5CHK(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), "writing dataset %s",
             name);
done:
    rc = dp_h5_close(&ds, rc, path);
    rc = dp_h5_close(&sp, rc, path);
    return rc;
}

int dp_h5_write_f32(hid_t loc, const char *path, const char *name, const float *v, int rank,
                    const hsize_t *dims)
{
    return dp_h5_write(loc, path, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rank, dims, v);
}

/* Refuses a dataset compressed with a filter this HDF5 library lacks (h5py's lzf, blosc, ...)
 * by name, before a read fails with HDF5's bare "can't read data". */
static int check_filters(hid_t ds, const char *path, const char *name)
{
    int rc = DP_OK;
    hid_t dcpl = H5I_INVALID_HID;
    int n = 0;
    DP_H5CHK(dcpl = H5Dget_create_plist(ds), "reading the storage of %s", name);
    DP_H5CHK(n = H5Pget_nfilters(dcpl), "reading the filters of %s", name);
    for (int i = 0; i < n; i++) {
        char fname[64] = "";
        unsigned flags = 0, cd[8];
        size_t n_cd = sizeof cd / sizeof cd[0];
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &n_cd, cd, sizeof fname,
                                         fname, NULL);
        if (id < 0) {
            DP_FAIL(DP_EFORMAT, "%s: %s: cannot read its filter %d", path, name, i);
        }
        if (H5Zfilter_avail(id) <= 0) {
            DP_FAIL(DP_EFORMAT,
                    "%s: %s is compressed with filter '%s' (HDF5 filter id %d), which this "
                    "HDF5 library does not have; rewrite the file with gzip, e.g. "
                    "h5repack -f GZIP=4 %s OUT.h5 where that filter is installed, or in h5py "
                    "with compression=\"gzip\"",
                    path, name, fname[0] ? fname : (id == 32000 ? "lzf" : "unknown"), (int)id,
                    path);
        }
    }
done:
    rc = dp_h5_close(&dcpl, rc, path);
    return rc;
}

int dp_h5_open_dataset(hid_t loc, const char *path, const char *name, hid_t *ds, int *rank,
                       hsize_t *dims)
{
    int rc = DP_OK;
    hid_t space = H5I_INVALID_HID;
    htri_t ex = 0;
    DP_H5CHK(ex = H5Lexists(loc, name, H5P_DEFAULT), "looking for %s", name);
    if (ex == 0) {
        DP_FAIL(DP_EFORMAT, "%s: dataset %s is missing", path, name);
    }
    DP_H5CHK(*ds = H5Dopen2(loc, name, H5P_DEFAULT), "opening dataset %s", name);
    DP_TRY(check_filters(*ds, path, name));
    DP_H5CHK(space = H5Dget_space(*ds), "reading the shape of %s", name);
    DP_H5CHK(*rank = H5Sget_simple_extent_ndims(space), "reading the shape of %s", name);
    if (*rank > H5S_MAX_RANK) {
        DP_FAIL(DP_EFORMAT, "%s: %s has %d dimensions, too many", path, name, *rank);
    }
    DP_H5CHK(H5Sget_simple_extent_dims(space, dims, NULL), "reading the shape of %s", name);
done:
    return dp_h5_close(&space, rc, path);
}

int dp_h5_check_stored(hid_t ds, const char *path, const char *name, const char *shape,
                       size_t n_elem)
{
    int rc = DP_OK;
    hid_t dcpl = H5I_INVALID_HID, type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    hid_t fid = H5I_INVALID_HID;
    hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK], have = 0;
    H5D_layout_t layout = H5D_LAYOUT_ERROR;
    double need = 1.0;
    int rank = 0;
    if (n_elem == 0) {
        return DP_OK;
    }
    DP_H5CHK(dcpl = H5Dget_create_plist(ds), "reading the storage of %s", name);
    DP_H5CHK(layout = H5Pget_layout(dcpl), "reading the storage of %s", name);
    if (layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) {
        DP_H5CHK(type = H5Dget_type(ds), "reading the type of %s", name);
        const size_t type_size = H5Tget_size(type);
        if (type_size == 0 || H5Dget_storage_size(ds) / type_size < n_elem) {
            DP_FAIL(DP_EFORMAT, "%s: %s has shape %s but the file stores %llu bytes of it: "
                    "never written, or a damaged file", path, name, shape,
                    (unsigned long long)H5Dget_storage_size(ds));
        }
        /* A damaged header can also claim storage the file does not have: contiguous data
         * must lie inside the file. */
        if (layout == H5D_CONTIGUOUS) {
            hsize_t file_size = 0;
            const haddr_t at = H5Dget_offset(ds);
            fid = H5Iget_file_id(ds);
            const herr_t got = fid >= 0 ? H5Fget_filesize(fid, &file_size) : -1;
            if (got < 0 || at == HADDR_UNDEF || at > file_size ||
                (hsize_t)n_elem * type_size > file_size - at) {
                DP_FAIL(DP_EFORMAT, "%s: %s has shape %s, which does not fit in the file "
                        "(%llu bytes): a damaged file", path, name, shape,
                        (unsigned long long)file_size);
            }
        }
    } else if (layout == H5D_CHUNKED) {
        DP_H5CHK(space = H5Dget_space(ds), "reading the shape of %s", name);
        DP_H5CHK(rank = H5Sget_simple_extent_dims(space, dims, NULL), "reading the shape of %s",
                 name);
        DP_H5CHK(H5Pget_chunk(dcpl, rank, chunk) != rank ? -1 : 0, "reading the chunks of %s",
                 name);
        for (int i = 0; i < rank; i++) {
            need *= chunk[i] ? ceil((double)dims[i] / (double)chunk[i]) : 0.0;
        }
        DP_H5CHK(H5Dget_num_chunks(ds, space, &have), "reading the chunks of %s", name);
        if ((double)have < need) {
            DP_FAIL(DP_EFORMAT, "%s: %s has shape %s but the file stores %llu of its %.0f "
                    "chunks: never written, or a damaged file", path, name, shape,
                    (unsigned long long)have, need);
        }
    }
done:
    rc = dp_h5_close(&fid, rc, path);
    rc = dp_h5_close(&space, rc, path);
    rc = dp_h5_close(&type, rc, path);
    rc = dp_h5_close(&dcpl, rc, path);
    return rc;
}

int dp_h5_read_f32(hid_t loc, const char *path, const char *name, float *v, int rank,
                   const hsize_t *dims)
{
    int rc = DP_OK;
    hid_t ds = H5I_INVALID_HID;
    hsize_t have[H5S_MAX_RANK];
    int r = 0;
    char shape[128];
    DP_TRY(dp_h5_open_dataset(loc, path, name, &ds, &r, have));
    bool same = (r == rank);
    for (int i = 0; same && i < rank; i++) {
        same = have[i] == dims[i];
    }
    if (!same) {
        DP_FAIL(DP_EFORMAT, "%s: dataset %s does not have the shape the architecture needs "
                            "([%llu%s])", path, name, (unsigned long long)dims[0],
                rank > 1 ? ", ..." : "");
    }
    hsize_t n_elem = 1;
    for (int i = 0; i < rank; i++) {
        n_elem *= dims[i];
    }
    if (n_elem > 0 && H5Dget_storage_size(ds) == 0) {
        DP_FAIL(DP_EFORMAT, "%s: dataset %s holds no data", path, name);
    }
    dp_h5_fmt_dims(shape, sizeof shape, rank, dims);
    DP_TRY(dp_h5_check_stored(ds, path, name, shape, (size_t)n_elem));
    if (v) {
        DP_H5CHK(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v),
                 "reading dataset %s", name);
    }
done:
    rc = dp_h5_close(&ds, rc, path);
    return rc;
}

/* --- whole files ------------------------------------------------------------------------ */

/* fsync a file or directory by name. */
int dp_h5_sync_path(const char *p, int flags)
{
    int fd = open(p, flags);
    if (fd < 0) {
        return dp_err(DP_EIO, "%s: cannot open for sync (%s)", p, strerror(errno));
    }
    int r = fsync(fd);
    close(fd);
    return r == 0 ? DP_OK : dp_err(DP_EIO, "%s: fsync failed (%s)", p, strerror(errno));
}

int dp_h5_sync_dir_of(const char *path)
{
    char *dir = strdup(path);
    if (!dir) {
        return dp_err(DP_ENOMEM, "out of memory");
    }
    int rc = dp_h5_sync_path(dirname(dir), O_RDONLY | O_DIRECTORY);
    free(dir);
    return rc;
}

int dp_io_check_file(const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        return dp_err(DP_EIO, "%s: cannot open (%s)", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        return dp_err(DP_EIO, "%s: is a directory; expected a %s file", path, what);
    }
    if (!S_ISREG(st.st_mode)) {
        return dp_err(DP_EIO, "%s: is not a regular file; expected a %s file", path, what);
    }
    if (access(path, R_OK) != 0) {
        return dp_err(DP_EIO, "%s: cannot read (%s)", path, strerror(errno));
    }
    return DP_OK;
}

bool dp_io_tmp_is_stale(const char *name, const char *target)
{
    const char *t = strstr(name, ".tmp.");
    while (t && strstr(t + 1, ".tmp.")) {
        t = strstr(t + 1, ".tmp."); /* the last one: targets may hold ".tmp." themselves */
    }
    if (!t || (target && ((size_t)(t - name) != strlen(target) ||
                          strncmp(name, target, (size_t)(t - name)) != 0))) {
        return false;
    }
    char *end = NULL;
    errno = 0;
    long pid = strtol(t + 5, &end, 10);
    if (errno || end == t + 5 || *end || pid <= 0 || pid == (long)getpid()) {
        return false;
    }
    if (kill((pid_t)pid, 0) != 0) {
        return errno == ESRCH;
    }
    /* A writer killed a moment ago can still be a zombie (its parent died with it and
     * nobody has reaped it yet): it writes nothing any more. */
    char st = '?';
    return !dp_proc_stat(pid, &st, NULL) || st == 'Z' || st == 'X';
}

void dp_io_remove_stale_tmp(const char *path)
{
    char *d = strdup(path), *b = strdup(path);
    DIR *dir = d && b ? opendir(dirname(d)) : NULL;
    if (dir) {
        const char *target = basename(b);
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            char p[4096];
            if (dp_io_tmp_is_stale(de->d_name, target) &&
                (size_t)snprintf(p, sizeof p, "%s/%s", d, de->d_name) < sizeof p) {
                remove(p);
            }
        }
        closedir(dir);
    }
    free(d);
    free(b);
}

int dp_h5_atomic_create(dp_h5_atomic *a, const char *path, hsize_t userblock)
{
    int rc = DP_OK;
    hid_t fcpl = H5I_INVALID_HID, fapl = H5I_INVALID_HID;
    a->f = H5I_INVALID_HID;
    a->fd = -1;
    a->userblock = userblock;
    a->tmp[0] = '\0';
    if ((size_t)snprintf(a->path, sizeof a->path, "%s", path) >= sizeof a->path ||
        (size_t)snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid()) >=
            sizeof a->tmp) {
        a->tmp[0] = '\0';
        return dp_err(DP_EINVAL, "%s: path too long", path);
    }
    dp_io_remove_stale_tmp(path);
    /* The temporary name is taken on disk now, so a crash while the file is built leaves a
     * (stale, empty) temporary file and never a partial file under path. */
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (a->fd < 0) {
        int e = errno;
        a->tmp[0] = '\0';
        DP_FAIL(DP_EIO, "%s.tmp.%ld: cannot create (%s)", path, (long)getpid(), strerror(e));
    }
    dp_h5_quiet();
    DP_H5CHK(fcpl = H5Pcreate(H5P_FILE_CREATE), "setting up %s", a->tmp);
    if (userblock > 0) {
        DP_H5CHK(H5Pset_userblock(fcpl, userblock), "setting up %s", a->tmp);
    }
    DP_H5CHK(fapl = H5Pcreate(H5P_FILE_ACCESS), "setting up %s", a->tmp);
    DP_H5CHK(H5Pset_fapl_core(fapl, (size_t)1 << 20, 0), "setting up %s", a->tmp);
    DP_H5CHK(a->f = H5Fcreate(a->tmp, H5F_ACC_TRUNC, fcpl, fapl),
             "creating %s in memory", a->tmp);
done:
    rc = dp_h5_close(&fcpl, rc, path);
    rc = dp_h5_close(&fapl, rc, path);
    if (rc != DP_OK) {
        dp_h5_atomic_abort(a);
    }
    return rc;
}

/* Writes n bytes to fd, all of them or an error naming path and the reason (a full disk). */
static int write_all(int fd, const char *path, const unsigned char *buf, size_t n)
{
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, buf + off, n - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return dp_err(DP_EIO, "%s: cannot write byte %zu of %zu (%s)", path, off, n,
                          w < 0 ? strerror(errno) : "no progress");
        }
        off += (size_t)w;
    }
    return DP_OK;
}

int dp_h5_atomic_commit(dp_h5_atomic *a, int (*finish)(const char *tmp, void *ctx), void *ctx)
{
    int rc = DP_OK;
    const char *path = a->path;
    unsigned char *image = NULL;
    /* HDF5 built the whole file in memory; the disk sees only our checked writes, so a full
     * disk is an error message here and never a failure inside HDF5's own close. */
    ssize_t n = 0;
    DP_H5CHK(H5Fflush(a->f, H5F_SCOPE_GLOBAL), "flushing %s in memory", a->tmp);
    DP_H5CHK((n = H5Fget_file_image(a->f, NULL, 0)) <= 0 ? -1 : 0,
             "taking the image of %s from memory", a->tmp);
    if (!(image = malloc((size_t)n))) {
        DP_FAIL(DP_ENOMEM, "%s: out of memory for the file's %zd bytes", a->tmp, n);
    }
    DP_H5CHK(H5Fget_file_image(a->f, image, (size_t)n) != n ? -1 : 0,
             "taking the image of %s from memory", a->tmp);
    DP_TRY(dp_h5_close(&a->f, DP_OK, a->tmp));
    /* The image starts at the superblock: the user block before it is ours to write. */
    if (a->userblock > 0 && ftruncate(a->fd, (off_t)a->userblock) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot write the user block (%s)", a->tmp, strerror(errno));
    }
    if (lseek(a->fd, (off_t)a->userblock, SEEK_SET) < 0) {
        DP_FAIL(DP_EIO, "%s: seek failed (%s)", a->tmp, strerror(errno));
    }
    DP_TRY(write_all(a->fd, a->tmp, image, (size_t)n));
    if (fsync(a->fd) != 0) {
        DP_FAIL(DP_EIO, "%s: fsync failed (%s)", a->tmp, strerror(errno));
    }
    int fd = a->fd;
    a->fd = -1;
    if (close(fd) != 0) {
        DP_FAIL(DP_EIO, "%s: closing failed (%s)", a->tmp, strerror(errno));
    }
    if (finish) {
        DP_TRY(finish(a->tmp, ctx));
    }
    DP_TRY(dp_h5_sync_path(a->tmp, O_RDONLY));
    if (rename(a->tmp, a->path) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot rename %s onto it (%s)", a->path, a->tmp, strerror(errno));
    }
    a->tmp[0] = '\0';
    rc = dp_h5_sync_dir_of(a->path);
done:
    free(image);
    if (rc != DP_OK) {
        dp_h5_atomic_abort(a);
    }
    return rc;
}

void dp_h5_atomic_abort(dp_h5_atomic *a)
{
    if (a->f >= 0) {
        (void)H5Fclose(a->f); /* not dp_h5_close: the first failure's message stays */
        a->f = H5I_INVALID_HID;
    }
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
    if (a->tmp[0]) {
        remove(a->tmp);
        a->tmp[0] = '\0';
    }
}
