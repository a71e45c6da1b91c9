/* h5util.c: small HDF5 helpers shared by the model and checkpoint files. */
#include "h5util.h"

#include "core/proc.h"

#include "dptrain/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dp_h5_put_str_attr(hid_t obj, const char *path, const char *name, const char *value)
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
int dp_h5_get_str_attr(hid_t obj, const char *path, const char *name, char **out)
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
int dp_h5_put_num_attr(hid_t obj, const char *path, const char *name, hid_t ft, hid_t mt,
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
int dp_h5_get_num_attr(hid_t obj, const char *path, const char *name, hid_t mt, void *v,
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

int dp_h5_put_int_attr(hid_t obj, const char *path, const char *name, const int *v, hsize_t n)
{
    return dp_h5_put_num_attr(obj, path, name, H5T_STD_I32LE, H5T_NATIVE_INT, v, n);
}

int dp_h5_get_int_attr(hid_t obj, const char *path, const char *name, int *v, hsize_t n)
{
    return dp_h5_get_num_attr(obj, path, name, H5T_NATIVE_INT, v, n);
}

int dp_h5_put_f32_attr(hid_t obj, const char *path, const char *name, const float *v, hsize_t n)
{
    return dp_h5_put_num_attr(obj, path, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v, n);
}

int dp_h5_get_f32_attr(hid_t obj, const char *path, const char *name, float *v, hsize_t n)
{
    return dp_h5_get_num_attr(obj, path, name, H5T_NATIVE_FLOAT, v, n);
}

int dp_h5_write(hid_t loc, const char *path, const char *name, hid_t file_type,
                hid_t mem_type, int rank, const hsize_t *dims, const void *v)
{
    int rc = DP_OK;
    hid_t sp = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    DP_H5(sp = H5Screate_simple(rank, dims, NULL));
    DP_H5(ds = H5Dcreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    DP_H5(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
done:
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

int dp_h5_write_f32(hid_t loc, const char *path, const char *name, const float *v, int rank,
                    const hsize_t *dims)
{
    return dp_h5_write(loc, path, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rank, dims, v);
}

/* Reads dataset name, which must have exactly the given shape and stored data (not only a
 * fill value), as floats; v NULL: only checks. */
int dp_h5_read_f32(hid_t loc, const char *path, const char *name, float *v, int rank,
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
    hsize_t n_elem = 1;
    for (int i = 0; i < rank; i++) {
        n_elem *= dims[i];
    }
    if (n_elem > 0 && H5Dget_storage_size(ds) == 0) {
        DP_FAIL(DP_EFORMAT, "%s: dataset %s holds no data", path, name);
    }
    if (v) {
        DP_H5(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
    }
done:
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    return rc;
}

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
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    DP_H5(fcpl = H5Pcreate(H5P_FILE_CREATE));
    if (userblock > 0) {
        DP_H5(H5Pset_userblock(fcpl, userblock));
    }
    DP_H5(fapl = H5Pcreate(H5P_FILE_ACCESS));
    DP_H5(H5Pset_fapl_core(fapl, (size_t)1 << 20, 0));
    a->f = H5Fcreate(a->tmp, H5F_ACC_TRUNC, fcpl, fapl);
    if (a->f < 0) {
        DP_FAIL(DP_EIO, "%s: HDF5 cannot create the file in memory", a->tmp);
    }
done:
    if (fcpl >= 0) H5Pclose(fcpl);
    if (fapl >= 0) H5Pclose(fapl);
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
    DP_H5(H5Fflush(a->f, H5F_SCOPE_GLOBAL));
    ssize_t n = H5Fget_file_image(a->f, NULL, 0);
    if (n <= 0) {
        DP_FAIL(DP_EIO, "%s: HDF5 cannot give the file's image", a->tmp);
    }
    if (!(image = malloc((size_t)n))) {
        DP_FAIL(DP_ENOMEM, "%s: out of memory for the file's %zd bytes", a->tmp, n);
    }
    if (H5Fget_file_image(a->f, image, (size_t)n) != n) {
        DP_FAIL(DP_EIO, "%s: HDF5 cannot give the file's image", a->tmp);
    }
    herr_t cr = H5Fclose(a->f);
    a->f = H5I_INVALID_HID;
    if (cr < 0) {
        DP_FAIL(DP_EIO, "%s: HDF5 cannot close the file in memory", a->tmp);
    }
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
        H5Fclose(a->f);
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
