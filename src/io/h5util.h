/* h5util.h: the project's one HDF5 layer, used by src/data (dataset files) and src/io (model,
 * checkpoint and prediction files); nothing else calls HDF5 for them by its own rules.
 * It owns: checked calls whose message names the file, the object (dataset or attribute)
 * and HDF5's own reason (the innermost entry of HDF5's error stack), with HDF5's automatic
 * error printing off; closing any handle on every path; attributes of every type the files
 * use; datasets (write, open with shape, stored-data checks, float reads); and the atomic
 * write of a whole file (built in memory, checked write, fsync, rename, directory fsync).
 * Every function returns a dp status and records one message, unless it says otherwise.
 * All functions are Local (serial HDF5 on whatever process calls). Internal: not installed.
 *
 * Convention: a function with a `path` argument uses it only in messages (the file being
 * read or written); the macros below expect `int rc`, `const char *path` and a `done:`
 * label in the calling function (STYLE.md #7). */
#ifndef DPTRAIN_IO_H5UTIL_H
#define DPTRAIN_IO_H5UTIL_H

#include "dptrain/nn.h"

#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- checked calls ---------------------------------------------------------------------- */

/* Switches off HDF5's automatic printing of its error stack for the calling thread; it
 * stays off: failures are reported once, as our own message. (It is never switched back
 * on: HDF5 1.10 prints "infinite loop closing library" at exit after a failed open of a
 * malformed file whenever printing is on; HDFGroup/hdf5 issues 3790, 6531.) */
void dp_h5_quiet(void);
/* Copies into buf (cap bytes) HDF5's reason for the last failed call of this thread: the
 * innermost description on its error stack, e.g. "file signature not found", or
 * "HDF5 error" when the stack is empty. Call it before any other HDF5 call. */
void dp_h5_reason(char *buf, size_t cap);
/* Records "PATH: WHAT failed (REASON)", WHAT from fmt and REASON from dp_h5_reason, and
 * returns DP_EIO. Call it right after the failing HDF5 call; its arguments must not call
 * HDF5 (that would clear the error stack). */
int dp_h5_fail(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checks an HDF5 call (negative = failure): on failure records dp_h5_fail(path, WHAT...)
 * and goes to done. WHAT names the object, e.g. "writing attribute %s of %s". */
#define DP_H5CHK(call, ...)                         \
    do {                                            \
        if ((call) < 0) {                           \
            rc = dp_h5_fail(path, __VA_ARGS__);     \
            goto done;                              \
        }                                           \
    } while (0)
/* The same with the call's text and place as WHAT (the call text names the object). */
#define DP_H5(call) DP_H5CHK(call, "HDF5 call %s (%s:%d)", #call, __FILE__, __LINE__)

/* Closes *id (file, group, dataset, dataspace, datatype, attribute or property list) if it
 * is valid and sets it invalid. Returns rc, or a dp_h5_fail status when the close failed
 * and rc was DP_OK (so a close failure is never lost and never hides the first error). */
int dp_h5_close(hid_t *id, int rc, const char *path);

/* --- files ------------------------------------------------------------------------------ */

/* Opens path read-only into *f (quiet). On failure DP_EFORMAT "PATH: WHAT (HDF5: REASON)",
 * WHAT saying what the caller concludes, e.g. "not an HDF5 file, or a damaged one". */
int dp_h5_open_ro(const char *path, const char *what, hid_t *f);

/* --- names and shapes ------------------------------------------------------------------- */

/* "integer", "float", "string", ... */
const char *dp_h5_class_name(H5T_class_t c);
/* The shape as "[60000, 28, 28]" into buf (cap bytes, truncated). */
void dp_h5_fmt_dims(char *buf, size_t cap, int rank, const hsize_t *dims);
/* The path of obj inside its file ("/", "/train/x") into buf; "?" if HDF5 cannot say. */
void dp_h5_obj_name(hid_t obj, char *buf, size_t cap);

/* --- attributes ------------------------------------------------------------------------- */
/* Messages name the attribute and the object it is on: "f.h5: attribute scale of /train/x
 * is missing". A getter refuses (DP_EFORMAT) a missing attribute, one of another number of
 * values, and one of the wrong class (a string for a number; a float for an integer). */

/* Whether obj has attribute name. */
int dp_h5_has_attr(hid_t obj, const char *path, const char *name, bool *present);
/* A scalar fixed-length ASCII string attribute. */
int dp_h5_put_str_attr(hid_t obj, const char *path, const char *name, const char *value);
/* Reads a scalar string attribute (fixed or variable length) into a malloc'd buffer. */
int dp_h5_get_str_attr(hid_t obj, const char *path, const char *name, char **out);
/* Writes n values of memory type mt as a scalar (n == 1) or 1-D attribute of file type ft. */
int dp_h5_put_num_attr(hid_t obj, const char *path, const char *name, hid_t ft, hid_t mt,
                       const void *v, hsize_t n);
/* Reads a numeric attribute of exactly n elements as memory type mt (integer or float). */
int dp_h5_get_num_attr(hid_t obj, const char *path, const char *name, hid_t mt, void *v,
                       hsize_t n);
/* Typed forms of the two above: n values, stored as int32, int64, uint64, float32, float64. */
int dp_h5_put_int_attr(hid_t obj, const char *path, const char *name, const int *v, hsize_t n);
int dp_h5_get_int_attr(hid_t obj, const char *path, const char *name, int *v, hsize_t n);
int dp_h5_put_i64_attr(hid_t obj, const char *path, const char *name, const int64_t *v,
                       hsize_t n);
int dp_h5_get_i64_attr(hid_t obj, const char *path, const char *name, int64_t *v, hsize_t n);
int dp_h5_put_u64_attr(hid_t obj, const char *path, const char *name, const uint64_t *v,
                       hsize_t n);
int dp_h5_get_u64_attr(hid_t obj, const char *path, const char *name, uint64_t *v, hsize_t n);
int dp_h5_put_f32_attr(hid_t obj, const char *path, const char *name, const float *v, hsize_t n);
int dp_h5_get_f32_attr(hid_t obj, const char *path, const char *name, float *v, hsize_t n);
int dp_h5_put_f64_attr(hid_t obj, const char *path, const char *name, const double *v,
                       hsize_t n);
int dp_h5_get_f64_attr(hid_t obj, const char *path, const char *name, double *v, hsize_t n);

/* --- datasets --------------------------------------------------------------------------- */

/* A dataset of the given shape: file type file_type, memory type mem_type. */
int dp_h5_write(hid_t loc, const char *path, const char *name, hid_t file_type,
                hid_t mem_type, int rank, const hsize_t *dims, const void *v);
/* A float32 dataset of the given shape. */
int dp_h5_write_f32(hid_t loc, const char *path, const char *name, const float *v, int rank,
                    const hsize_t *dims);
/* Opens dataset name of loc (DP_EFORMAT "PATH: dataset NAME is missing" if there is none)
 * into *ds, refuses one compressed with a filter this HDF5 library lacks (by the filter's
 * name, with how to rewrite the file), and reads its shape into *rank and dims (room for
 * H5S_MAX_RANK). The caller closes *ds (also when this fails). */
int dp_h5_open_dataset(hid_t loc, const char *path, const char *name, hid_t *ds, int *rank,
                       hsize_t *dims);
/* Refuses dataset ds (called name, of shape `shape`, n_elem elements) when the file does
 * not store the data its shape promises, before anything is allocated for it: HDF5 hands
 * out the fill value for data never written, and a damaged header can promise far more
 * than the file holds. Contiguous and compact data must store every byte, inside the file;
 * chunked data (perhaps compressed) every chunk. */
int dp_h5_check_stored(hid_t ds, const char *path, const char *name, const char *shape,
                       size_t n_elem);
/* Reads dataset name, which must have exactly the given shape and stored data (not only a
 * fill value), as floats; v NULL: only checks that. */
int dp_h5_read_f32(hid_t loc, const char *path, const char *name, float *v, int rank,
                   const hsize_t *dims);

/* --- whole files ------------------------------------------------------------------------ */

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

/* The one atomic write of an HDF5 file, for datasets, models, checkpoints and predictions.
 * create: "<path>.tmp.<pid>" is taken on disk (after removing the temporaries of earlier
 * writers of path that are gone) and an HDF5 file (with a user block of userblock bytes, 0
 * for none) is created in memory (core driver) for the caller to fill through a.f.
 * commit: flushes it, writes its image to the temporary file with checked write()s (a full
 * disk is an error naming the file, never a truncated file), calls finish(tmp, ctx) if not
 * NULL (to write into the closed file, e.g. a checksum header), fsyncs it, renames it onto
 * path and fsyncs the directory. On any failure of create or commit the temporary file is
 * removed and path is untouched: readers see the old file or the new one, never a part.
 * abort closes and removes it; it is safe on a dp_h5_atomic set to DP_H5_ATOMIC_INIT (and
 * after a failed create, or a commit of either outcome). The whole file is in memory until
 * commit (about twice its size at the peak). */
typedef struct {
    hid_t f;
    int fd;            /* the temporary file, written at commit */
    hsize_t userblock; /* bytes before the HDF5 image (zeros until finish fills them) */
    char tmp[4096];
    char path[4096];
} dp_h5_atomic;

#define DP_H5_ATOMIC_INIT {.f = H5I_INVALID_HID, .fd = -1}

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
