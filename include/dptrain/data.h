/* dptrain/data.h: datasets in memory and on disk (HDF5), converters from IDX and CSV,
 * synthetic generators, and the permutation and shard arithmetic of data-parallel training.
 * No MPI here: shard functions take plain ints so one process can play every rank.
 * Every function is Local. The HDF5 layout is documented in datasets/README.md. */
#ifndef DPTRAIN_DATA_H
#define DPTRAIN_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where the rows of a streamed split come from (--data-memory stream, src/data/stream.c):
 * read from the file when dp_split_gather asks for them, the next batch's started early by
 * dp_split_prefetch. What y holds is said here, since the split's arrays are NULL. */
typedef struct dp_rowsrc dp_rowsrc;
struct dp_rowsrc {
    int (*gather)(dp_rowsrc *r, const size_t *idx, int n_idx, float *x, int32_t *labels,
                  float *values);
    void (*prefetch)(dp_rowsrc *r, const size_t *idx, int n_idx);
    bool labels, values;  /* y holds class labels / regression targets */
    uint64_t fingerprint; /* dp_split_fingerprint of the split, as if it were in memory */
};

/* One split (train or test) held in memory. Exactly one of x_u8 / x_f32 is set;
 * feature j of row i is x_u8[i*n_features + j] * x_scale + x_offset (or the same of x_f32).
 * Classification: labels (n) in [0, n_classes). Regression: values (n, n_targets).
 * A streamed split has src set and no arrays: its rows are read on demand. */
typedef struct {
    size_t n;           /* rows */
    int n_features;     /* product of x's dimensions after the first */
    uint8_t *x_u8;      /* raw bytes, or NULL */
    float *x_f32;       /* floats, or NULL */
    float x_scale;      /* 1 unless the file says otherwise (Fashion-MNIST: 1/255) */
    float x_offset;     /* 0 unless the file says otherwise */
    int32_t *labels;    /* classification, or NULL */
    float *values;      /* regression, or NULL */
    int n_targets;      /* regression: columns of values (1 if y is 1-D); else 0 */
    dp_rowsrc *src;     /* streamed: the rows' source (the arrays above are NULL); else NULL */
} dp_split;

/* Whether y of s holds class labels / regression targets (in memory or streamed). */
static inline bool dp_split_has_labels(const dp_split *s)
{
    return s->labels || (s->src && s->src->labels);
}
static inline bool dp_split_has_values(const dp_split *s)
{
    return s->values || (s->src && s->src->values);
}

typedef struct {
    dp_split train;
    dp_split test;      /* n == 0 when the file has no /test group */
    int n_classes;      /* > 0 classification; 0 regression */
    bool shared;        /* the splits' arrays are not this struct's (a node-shared segment
                         * holds them): dp_dataset_free frees the struct only */
} dp_dataset;

/* Reads path: /train/x, /train/y and, if present, /test/x, /test/y, with their attributes.
 * x may be any integer or float type of rank >= 2 ([n, ...]); 8-bit unsigned data stays
 * uint8 in memory, anything else is read as float. y is [n] integer (classification) or
 * [n] / [n, k] float (regression). Checks every shape, type, attribute and label; the
 * message names the file, the object and the offending value or row. */
int dp_dataset_load(const char *path, dp_dataset **out);

/* What dp_dataset_load would allocate for path, without reading the arrays: the bytes of
 * /train/x, /train/y, /test/x, /test/y (0 for one that is absent), after the same checks of
 * shapes and types. */
int dp_dataset_probe(const char *path, size_t bytes[4]);
/* dp_dataset_load with the four arrays read into the caller's memory: dst[i] with room[i]
 * bytes (as dp_dataset_probe gave them; a file grown since is refused), each aligned for
 * floats. The dataset is marked
 * shared: dp_dataset_free leaves the arrays. */
int dp_dataset_load_at(const char *path, void *const dst[4], const size_t room[4],
                       dp_dataset **out);

/* --data-memory stream: opens path with every check of dp_dataset_load but reads no rows;
 * each split gets a row source (src) that reads the rows asked for from the file (pread of
 * the runs of adjacent rows), and reads the rows of a dp_split_prefetch ahead in its own
 * thread (one read in flight; the thread makes no MPI or HDF5 call). The arrays must be stored
 * contiguously, x as uint8, float32 or float64 and y as integers, float32 or float64, all
 * little-endian (what dptrain's converters and h5py's defaults write); another layout is
 * refused, naming the dataset. scan: also reads every row once, in blocks, for what the
 * checks and the split fingerprints need (labels in range, x finite, the class count from
 * the labels): without it n_classes and the fingerprints are those of info (from a scan
 * elsewhere: the job's first rank scans and sends them). Local. */
typedef struct {
    int n_classes;
    uint64_t fingerprint[2]; /* train, test */
} dp_stream_info;
int dp_dataset_open_stream(const char *path, bool scan, const dp_stream_info *info,
                           dp_dataset **out, dp_stream_info *scanned);

/* Where dp_dataset_load_inputs found the rows. */
typedef enum {
    DP_INPUT_SPLITS, /* /train and/or /test groups: d->train, d->test */
    DP_INPUT_ROOT,   /* /x (and /y if present) at the root of the file: d->test */
    DP_INPUT_CSV,    /* a CSV file of feature rows: d->test */
} dp_input_kind;

/* Reads the rows to run a trained model on (predict, eval). Like dp_dataset_load, with the
 * same checks and messages, except that: y is optional in every split (a split without y
 * has labels == values == NULL and n_targets 0; n_classes is then num_classes if the file
 * has it, else 0); /train is optional; a file with neither /train nor /test may hold its
 * rows at the root, /x [n, ...] with an optional /y, loaded as d->test; a file with none
 * of these is refused (DP_EFORMAT). A path ending in .csv or .csv.gz (any case) is a CSV
 * file of feature rows instead, loaded as float d->test: the conventions of
 * dp_convert_csv (a first line that is not all numbers is a header; blank lines skipped;
 * gzipped or not) but every column is a feature; errors name the file, line and column.
 * *kind tells which. */
int dp_dataset_load_inputs(const char *path, dp_dataset **out, dp_input_kind *kind);
/* Writes d to path in the documented layout, under a temporary name renamed at the end.
 * Both splits are written (test only if test.n > 0). */
int dp_dataset_save(const char *path, const dp_dataset *d);
void dp_dataset_free(dp_dataset **d); /* NULL-safe; sets *d = NULL; frees every array */

/* Copies rows idx[0..n_idx) of s as floats into x (n_idx, n_features), and their labels
 * into labels (n_idx) or their values into values (n_idx, n_targets); the output pointer
 * that does not apply to s may be NULL. In memory it cannot fail; a streamed split reads
 * the rows from its file (DP_EIO naming the file when that fails; the outputs are then
 * zeros, so a caller can finish a collective step before it stops). */
int dp_split_gather(const dp_split *s, const size_t *idx, int n_idx, float *x, int32_t *labels,
                    float *values);

/* Asks the CPU to start loading rows idx[0..n_idx) of s (features and targets) into its
 * caches, without waiting: the trainer calls it for the next batch before the current
 * batch's backward pass, so that the next dp_split_gather finds the rows in cache. A
 * streamed split starts reading those rows from its file (the read ahead); a gather of the
 * same rows waits for that read, a gather of others reads its own. */
void dp_split_prefetch(const dp_split *s, const size_t *idx, int n_idx);

/* XXH64 over the split's raw arrays and shapes: identical data, identical value. */
uint64_t dp_split_fingerprint(const dp_split *s);

/* Whether fp (a checkpoint's or model file's) is s's fingerprint: dp_split_fingerprint's, or
 * the FNV-1a value that dptrain wrote before 2026-12 (computed only then, and only for a split
 * in memory: a streamed split matches the current kind alone). */
bool dp_split_fingerprint_matches(const dp_split *s, uint64_t fp);

/* XXH64 (seed 0) of n bytes: the fingerprint's hash, for its tests. */
uint64_t dp_xxh64(const void *p, size_t n);

/* --- converters: each writes a dataset file with dp_dataset_save ---------------------- */

/* IDX files as distributed for MNIST / Fashion-MNIST, gzipped or not (detected by content).
 * Images become uint8 x [n, rows, cols] with x_scale 1/255; labels int y [n].
 * test_images/test_labels may be NULL. n_classes = max label + 1 over both splits. */
int dp_convert_idx(const char *train_images, const char *train_labels, const char *test_images,
                   const char *test_labels, const char *out_path);

/* CSV files (gzipped or not): one row per sample, comma-separated numbers; a first line
 * that is not numeric is taken as a header and skipped. Column label_col (0-based; -1 means
 * the last) holds the integer class label, unless n_targets > 0: then the last n_targets
 * columns are float regression targets. Every other column is a float feature.
 * test_csv may be NULL. Errors name the file, line and column. */
int dp_convert_csv(const char *train_csv, const char *test_csv, int label_col, int n_targets,
                   const char *out_path);

/* --- synthetic generators (deterministic in seed) ------------------------------------- */

/* n_classes interleaved spirals in 2-D, x float [n, 2], integer labels; Gaussian noise of
 * standard deviation `noise` on each coordinate. */
int dp_synth_spirals(size_t n_train, size_t n_test, int n_classes, float noise, uint64_t seed,
                     dp_dataset **out);
/* y = slope * x + intercept + N(0, noise^2), x uniform in [-1, 1]; x float [n, 1],
 * values float [n, 1]. */
int dp_synth_line(size_t n_train, size_t n_test, float slope, float intercept, float noise,
                  uint64_t seed, dp_dataset **out);
/* Gaussian blobs: n_classes centres drawn in [-1,1]^n_features, points with standard
 * deviation `noise` around them; x float [n, n_features], integer labels. */
int dp_synth_blobs(size_t n_train, size_t n_test, int n_features, int n_classes, float noise,
                   uint64_t seed, dp_dataset **out);

/* --- permutation and shards ----------------------------------------------------------- */

/* perm (n) = the permutation of 0..n-1 for this (seed, epoch): Fisher-Yates driven by
 * dp_rng_make(seed, epoch). The same on every rank. */
void dp_permutation(size_t *perm, size_t n, uint64_t seed, uint64_t epoch);

/* A keyed bijection of [0, n) computed one index at a time (a balanced Feistel network of
 * DP_FEISTEL_ROUNDS rounds on the smallest 4^h >= n, with cycle walking back into [0, n)):
 * the epoch's visiting order without an O(n) array, so a rank computes only the indices of
 * its own slices. Keyed by (seed, epoch); the same on every rank. */
#define DP_FEISTEL_ROUNDS 6
typedef struct {
    uint64_t n;
    uint64_t key;
    int half;          /* bits of each half of the network's domain */
    uint64_t mask;     /* (1 << half) - 1 */
} dp_feistel;

void dp_feistel_init(dp_feistel *f, size_t n, uint64_t seed, uint64_t epoch);
/* The position-i element of the permutation, i < n. */
size_t dp_feistel_at(const dp_feistel *f, size_t i);

/* Rows [*lo, *hi) of n_rows that rank `rank` of `size` takes: contiguous, in rank order,
 * the first n_rows % size ranks get one more (128 on 3 ranks: 43, 43, 42). */
void dp_shard_rows(size_t n_rows, int rank, int size, size_t *lo, size_t *hi);

/* Number of batches of `batch` rows in an epoch of n rows; a last partial batch counts
 * unless drop_last. */
size_t dp_n_batches(size_t n, size_t batch, bool drop_last);

#endif
