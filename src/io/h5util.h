/* h5util.h: small HDF5 helpers shared by the model and checkpoint files (src/io only).
 * Each returns a dp status and records a message naming path and the object. */
#ifndef DPTRAIN_IO_H5UTIL_H
#define DPTRAIN_IO_H5UTIL_H

#include "dptrain/nn.h"

#include <hdf5.h>

#define DP_H5(call)                                                                     \
    do {                                                                                \
        if ((call) < 0) {                                                               \
            rc = dp_err(DP_EIO, "%s: HDF5 call failed: %s (%s:%d)", path, #call, __FILE__, \
                        __LINE__);                                                      \
            goto done;                                                                  \
        }                                                                               \
    } while (0)


int dp_h5_put_str_attr(hid_t obj, const char *path, const char *name, const char *value);
/* Reads a string attribute (fixed or variable length) into a malloc'd buffer. */
int dp_h5_get_str_attr(hid_t obj, const char *path, const char *name, char **out);
/* Writes n values of memory type mt as a scalar (n == 1) or 1-D attribute of file type ft. */
int dp_h5_put_num_attr(hid_t obj, const char *path, const char *name, hid_t ft, hid_t mt,
                       const void *v, hsize_t n);
/* Reads a numeric attribute of exactly n elements as memory type mt. */
int dp_h5_get_num_attr(hid_t obj, const char *path, const char *name, hid_t mt, void *v,
                       hsize_t n);
int dp_h5_put_int_attr(hid_t obj, const char *path, const char *name, const int *v, hsize_t n);
int dp_h5_get_int_attr(hid_t obj, const char *path, const char *name, int *v, hsize_t n);
int dp_h5_put_f32_attr(hid_t obj, const char *path, const char *name, const float *v, hsize_t n);
int dp_h5_get_f32_attr(hid_t obj, const char *path, const char *name, float *v, hsize_t n);
/* A dataset of the given shape: file type file_type, memory type mem_type. */
int dp_h5_write(hid_t loc, const char *path, const char *name, hid_t file_type,
                hid_t mem_type, int rank, const hsize_t *dims, const void *v);
/* A float32 dataset of the given shape. */
int dp_h5_write_f32(hid_t loc, const char *path, const char *name, const float *v, int rank,
                    const hsize_t *dims);
/* Reads dataset name, which must have exactly the given shape and stored data (not only a
 * fill value), as floats; v NULL: only checks that. */
int dp_h5_read_f32(hid_t loc, const char *path, const char *name, float *v, int rank,
                   const hsize_t *dims);
/* fsync a file or directory by name (flags: O_RDONLY, | O_DIRECTORY for a directory). */
int dp_h5_sync_path(const char *p, int flags);
/* fsync the directory holding path. */
int dp_h5_sync_dir_of(const char *path);

/* DP_OK if path names a readable regular file (or a link to one); else a message that says
 * what it is instead: missing, unreadable, or a directory where a WHAT file is expected.
 * Local. */
int dp_io_check_file(const char *path, const char *what);

/* True if name (a directory entry) is "<target>.tmp.<pid>" (target = any name when NULL)
 * left by a writer that is gone: pid is not this process and no process of that pid runs
 * on this host. Local. */
bool dp_io_tmp_is_stale(const char *name, const char *target);
/* Removes the temporary files "<path>.tmp.<pid>" of writers of path that are gone (a crash or
 * kill -9 while it was being written). Local. */
void dp_io_remove_stale_tmp(const char *path);

/* Atomic file creation: an HDF5 file created under "<path>.tmp.<pid>" (with a user block of
 * userblock bytes, 0 for none), after removing the temporaries of earlier writers of path
 * that are gone; commit closes it, calls finish(tmp, ctx) if not NULL (to
 * write into the closed file, e.g. a checksum header), fsyncs it, renames it onto path and
 * fsyncs the directory; on any failure the temporary file is removed and path is untouched.
 * abort closes and removes it. */
typedef struct {
    hid_t f;
    int fd;            /* the temporary file, written at commit */
    hsize_t userblock; /* bytes before the HDF5 image (zeros until finish fills them) */
    char tmp[4096];
    char path[4096];
} dp_h5_atomic;

int dp_h5_atomic_create(dp_h5_atomic *a, const char *path, hsize_t userblock);
int dp_h5_atomic_commit(dp_h5_atomic *a, int (*finish)(const char *tmp, void *ctx), void *ctx);
void dp_h5_atomic_abort(dp_h5_atomic *a);

/* What a non-finite value stops: a write ("not written") or a read of a file dptrain
 * wrote, where it can only mean damage. */
typedef enum { DP_IO_WRITING, DP_IO_READING } dp_io_dir;
/* DP_ENONFINITE naming the first NaN or infinite value of v[0..n) (v may be NULL), as
 * "PATH: not written: WHAT I is nan" or "PATH: WHAT I is nan: ... damaged". Local. */
int dp_io_check_finite(const float *v, size_t n, const char *path, dp_io_dir dir,
                       const char *what);
/* The same for every parameter and batch-norm statistic of a model. Local. */
int dp_io_model_check_finite(const dp_model *m, const char *path, dp_io_dir dir);

/* The model part of a model file or checkpoint (root attributes and /layers), written into
 * an open file with the given format name; and read back into a new model. */
int dp_io_model_write(hid_t f, const char *path, const dp_model *m, const char *config_json,
                      const char *format);
int dp_io_model_read(hid_t f, const char *path, int max_batch, dp_model **out,
                     char **config_json);

#endif
