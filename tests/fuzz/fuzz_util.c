/* fuzz_util.c: the scratch directory, input-to-file helpers and after-input checks shared
 * by the libFuzzer targets (see fuzz_util.h). */
#define _GNU_SOURCE
#include "fuzz_util.h"

#include "dptrain/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char scratch[4096];

static void remove_scratch(void)
{
    DIR *d = opendir(scratch);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            char p[8192];
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", scratch, de->d_name);
                unlink(p);
            }
        }
        closedir(d);
    }
    rmdir(scratch);
}

void fz_init(void)
{
    const char *base = getenv("DPTRAIN_FUZZ_TMPDIR");
    if (!base || !*base) {
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    }
    snprintf(scratch, sizeof scratch, "%s/dptrain-fuzz-XXXXXX", base);
    if (!mkdtemp(scratch)) {
        fprintf(stderr, "fuzz: cannot create a scratch directory under %s (%s)\n", base,
                strerror(errno));
        abort();
    }
    atexit(remove_scratch);
    /* HDF5 would print its error stack for every malformed file. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

char *fz_path(char *buf, size_t cap, const char *name)
{
    if ((size_t)snprintf(buf, cap, "%s/%s", scratch, name) >= cap) {
        fprintf(stderr, "fuzz: path too long\n");
        abort();
    }
    return buf;
}

void fz_write(const char *path, const uint8_t *data, size_t n)
{
    static int plant = -1;
    if (plant < 0) {
        const char *v = getenv("DPTRAIN_FUZZ_PLANT_BUG");
        plant = v && strcmp(v, "1") == 0;
    }
    if (plant && n >= 4) {
        /* A deliberate bug for tests/fuzz/fuzz.sh, which checks that a bug in the code
         * under the fuzzer is found and reported: reads one byte past the input. */
        volatile uint8_t past = data[n];
        (void)past;
    }
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fuzz: cannot create %s (%s)\n", path, strerror(errno));
        abort();
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, data + off, n - off);
        if (w <= 0) {
            fprintf(stderr, "fuzz: cannot write %s (%s)\n", path, strerror(errno));
            abort();
        }
        off += (size_t)w;
    }
    close(fd);
}

void fz_write_gz(const char *path, const uint8_t *data, size_t n)
{
    z_stream z = {0};
    uLong cap = compressBound((uLong)n) + 64;
    uint8_t *out = malloc(cap);
    if (!out || deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        fprintf(stderr, "fuzz: zlib setup failed\n");
        abort();
    }
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
        fprintf(stderr, "fuzz: deflate failed\n");
        abort();
    }
    fz_write(path, out, z.total_out);
    deflateEnd(&z);
    free(out);
}

void fz_split(const uint8_t *data, size_t n, int k, const uint8_t **parts, size_t *lens)
{
    for (int i = 0; i < k - 1; i++) {
        size_t len = 0;
        if (n >= 2) {
            len = (size_t)data[0] | (size_t)data[1] << 8;
            data += 2;
            n -= 2;
        } else {
            data += n;
            n = 0;
        }
        len = len < n ? len : n;
        parts[i] = data;
        lens[i] = len;
        data += len;
        n -= len;
    }
    parts[k - 1] = data;
    lens[k - 1] = n;
}

int fz_note(const char *call, int rc)
{
    static int verbose = -1;
    if (verbose < 0) {
        const char *v = getenv("DPTRAIN_FUZZ_VERBOSE");
        verbose = v && *v && strcmp(v, "0") != 0;
    }
    if (verbose) {
        if (rc == DP_OK) {
            fprintf(stderr, "fuzz-result %s ok\n", call);
        } else {
            fprintf(stderr, "fuzz-result %s failed: %s\n", call, dp_errmsg());
        }
    }
    return rc;
}

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n==fuzz== BROKEN PROMISE at %s:%d: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

void fz_check_no_open_hdf5(const char *what)
{
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n > 0) {
        hid_t ids[16];
        ssize_t got = H5Fget_obj_ids(H5F_OBJ_ALL, H5F_OBJ_ALL, 16, ids);
        fprintf(stderr, "\n==fuzz== %s left %zd HDF5 object(s) open:", what, n);
        for (ssize_t i = 0; i < got; i++) {
            char name[256] = "?";
            H5Iget_name(ids[i], name, sizeof name);
            fprintf(stderr, " [type %d %s]", (int)H5Iget_type(ids[i]), name);
        }
        fprintf(stderr, "\n");
        abort();
    }
}

static void check_split(const dp_split *s, const char *name, int n_classes, bool y_required)
{
    const size_t nf = (size_t)s->n_features;
    if (s->n == 0) {
        FZ_ASSERT(!s->x_u8 && !s->x_f32 && !s->labels && !s->values,
                  "%s: no rows but arrays are set", name);
        return;
    }
    FZ_ASSERT(s->n_features > 0, "%s: n_features %d", name, s->n_features);
    FZ_ASSERT((s->x_u8 != NULL) != (s->x_f32 != NULL), "%s: not exactly one of x_u8, x_f32",
              name);
    FZ_ASSERT(isfinite(s->x_scale) && isfinite(s->x_offset), "%s: scale %g offset %g", name,
              (double)s->x_scale, (double)s->x_offset);
    FZ_ASSERT(!(s->labels && s->values), "%s: both labels and values", name);
    if (y_required) {
        FZ_ASSERT(s->labels || s->values, "%s: neither labels nor values", name);
    }
    if (s->labels) {
        FZ_ASSERT(n_classes > 0, "%s: labels but n_classes %d", name, n_classes);
        FZ_ASSERT(s->n_targets == 0, "%s: labels and n_targets %d", name, s->n_targets);
    }
    if (s->values) {
        FZ_ASSERT(s->n_targets > 0, "%s: values but n_targets %d", name, s->n_targets);
    }
    /* Every element the loader returned is read here: ASan sees any array shorter than
     * n * n_features (or n * n_targets). */
    for (size_t i = 0; i < s->n; i++) {
        if (s->labels) {
            FZ_ASSERT(s->labels[i] >= 0 && s->labels[i] < n_classes,
                      "%s: label %d at row %zu outside [0, %d)", name, (int)s->labels[i], i,
                      n_classes);
        }
        for (size_t j = 0; s->x_f32 && j < nf; j++) {
            FZ_ASSERT(isfinite(s->x_f32[i * nf + j]), "%s: x[%zu, %zu] is not finite", name, i,
                      j);
        }
        for (size_t j = 0; s->x_u8 && j < nf; j++) {
            volatile uint8_t v = s->x_u8[i * nf + j];
            (void)v;
        }
        for (int t = 0; s->values && t < s->n_targets; t++) {
            FZ_ASSERT(isfinite(s->values[i * (size_t)s->n_targets + (size_t)t]),
                      "%s: y[%zu, %d] is not finite", name, i, t);
        }
    }
    /* The trainer's way in: a batch of rows gathered into floats (first and last rows, a
     * few at a time; bounded so that a large valid file stays fast). */
    enum { BATCH = 4 };
    size_t idx[BATCH];
    int nb = s->n < BATCH ? (int)s->n : BATCH;
    /* at most 4 times the memory the split already holds */
    float *x = malloc((size_t)nb * nf * sizeof *x);
    float *v = malloc((size_t)nb * (size_t)(s->n_targets > 0 ? s->n_targets : 1) * sizeof *v);
    int32_t lab[BATCH];
    FZ_ASSERT(x && v, "%s: no memory for a batch of %d rows of %zu features", name, nb, nf);
    for (int k = 0; k < nb; k++) {
        idx[k] = k % 2 ? s->n - 1 - (size_t)k / 2 : (size_t)k / 2;
    }
    dp_split_prefetch(s, idx, nb);
    dp_split_gather(s, idx, nb, x, lab, v);
    free(x);
    free(v);
    (void)dp_split_fingerprint(s);
}

void fz_check_dataset(const dp_dataset *d, bool labels_required)
{
    FZ_ASSERT(d != NULL, "loader returned DP_OK and no dataset");
    FZ_ASSERT(d->n_classes >= 0, "n_classes %d", d->n_classes);
    check_split(&d->train, "train", d->n_classes, labels_required);
    check_split(&d->test, "test", d->n_classes, labels_required);
    if (d->train.n > 0 && d->test.n > 0) {
        FZ_ASSERT(d->train.n_features == d->test.n_features, "train %d features, test %d",
                  d->train.n_features, d->test.n_features);
    }
}
