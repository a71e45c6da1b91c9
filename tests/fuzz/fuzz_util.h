/* fuzz_util.h: what the libFuzzer targets in tests/fuzz share: a private scratch directory
 * per fuzzing process (on tmpfs when there is one), writing the input bytes to a file there,
 * splitting one input into several files, gzip, and the checks that hold after every input
 * (no HDF5 object left open). Test code only: built by launch/fuzz.sh, never installed. */
#ifndef DPTRAIN_FUZZ_UTIL_H
#define DPTRAIN_FUZZ_UTIL_H

#include "dptrain/data.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Once per process (from LLVMFuzzerInitialize): creates the scratch directory
 * ($DPTRAIN_FUZZ_TMPDIR, else /dev/shm, else /tmp: dptrain-fuzz-XXXXXX), removed at exit,
 * and switches off HDF5's printing of its error stack. */
void fz_init(void);

/* "<scratch>/<name>" into buf (cap bytes); returns buf. */
char *fz_path(char *buf, size_t cap, const char *name);

/* Writes n bytes to the file path (removed first, so every input gets a fresh inode and
 * HDF5 never mistakes it for a file it saw before). Aborts on a write error: the harness,
 * not the code under test, has failed. With DPTRAIN_FUZZ_PLANT_BUG=1 it has a bug on
 * purpose, for tests/fuzz/fuzz.sh to show that a bug is found and reported: given 4 bytes
 * or more, it reads one byte past them (past the input when they end it). */
void fz_write(const char *path, const uint8_t *data, size_t n);

/* The same, gzip-compressed (zlib, level 1). */
void fz_write_gz(const char *path, const uint8_t *data, size_t n);

/* Cuts the input into k parts: each part but the last is preceded by a 2-byte little-endian
 * length (clipped to what remains); the last part is the rest. parts[i], lens[i] point into
 * data. */
void fz_split(const uint8_t *data, size_t n, int k, const uint8_t **parts, size_t *lens);

/* With DPTRAIN_FUZZ_VERBOSE set: prints "fuzz-result CALL ok" or "fuzz-result CALL failed:
 * MESSAGE" to stderr (tests/fuzz/fuzz.sh checks that the valid seeds load). Returns rc. */
int fz_note(const char *call, int rc);

/* Aborts (a finding) if any HDF5 object is still open: every loader must close every file,
 * group, dataset, attribute, dataspace and type on every path. what names the call. */
void fz_check_no_open_hdf5(const char *what);

/* Aborts with msg (a finding: a loader broke one of its promises) unless cond. */
#define FZ_ASSERT(cond, ...)                                              \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);              \
        }                                                                 \
    } while (0)
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Checks the promises of a dataset the loaders accepted: shapes, exactly one of x_u8 /
 * x_f32, finite floats, labels in [0, n_classes), targets finite; then gathers rows the
 * way the trainer does (dp_split_gather, dp_split_prefetch) and fingerprints each split.
 * labels_required: labelled or regression y must be present (dp_dataset_load). */
void fz_check_dataset(const dp_dataset *d, bool labels_required);

#endif
