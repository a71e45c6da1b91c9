/* test_stream.c: --data-memory stream's datasets (src/data/stream.c). A streamed split must
 * hand out exactly the rows, labels and targets an in-memory load does, for every stored type
 * it takes (uint8, int16 and float64 x; int64, uint8 labels; float32 targets stored before
 * x in the file), through a read ahead or without one, with repeated and unsorted rows; its
 * class count and fingerprints must be the load's (a checkpoint resumes across modes); files
 * it cannot read as stored are refused by name; a file truncated under it fails the gather
 * with a message and zeros, never garbage. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "dptrain/data.h"
#include "dptrain/err.h"
#include "testutil.h"

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/stream_%s", DP_TEST_TMPDIR, name);
}

/* Writes dataset name of file f: ftype on disk from mtype in memory; chunked if chunk > 0
 * (rows per chunk). */
static void put(hid_t f, const char *name, hid_t ftype, hid_t mtype, int rank,
                const hsize_t *dims, const void *buf, hsize_t chunk)
{
    hid_t s = H5Screate_simple(rank, dims, NULL), p = H5Pcreate(H5P_DATASET_CREATE);
    cr_assert_geq(s, 0);
    if (chunk > 0) {
        hsize_t cd[8];
        for (int i = 0; i < rank; i++) {
            cd[i] = i == 0 ? chunk : dims[i];
        }
        cr_assert_geq(H5Pset_chunk(p, rank, cd), 0);
    }
    hid_t d = H5Dcreate2(f, name, ftype, s, H5P_DEFAULT, p, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    cr_assert_geq(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    cr_assert_geq(H5Dclose(d), 0);
    cr_assert_geq(H5Pclose(p), 0);
    cr_assert_geq(H5Sclose(s), 0);
}

static void put_f64_attr(hid_t f, const char *obj, const char *name, double v)
{
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT), s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0);
    cr_assert_geq(H5Awrite(a, H5T_NATIVE_DOUBLE, &v), 0);
    H5Aclose(a);
    H5Sclose(s);
    H5Oclose(o);
}

static hid_t create(const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    return f;
}

static void group(hid_t f, const char *name)
{
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(g, 0);
    H5Gclose(g);
}

enum { N = 97, NT = 13 };

/* uint8 x [n, 3, 4] with scale and offset, int64 labels (classes inferred), a test split. */
static void write_u8(const char *path)
{
    static uint8_t x[N * 12], xt[NT * 12];
    static long long y[N], yt[NT];
    uint64_t g = 5;
    for (size_t i = 0; i < sizeof x; i++) {
        x[i] = (uint8_t)tgen_next(&g);
    }
    for (size_t i = 0; i < sizeof xt; i++) {
        xt[i] = (uint8_t)tgen_next(&g);
    }
    for (int i = 0; i < N; i++) {
        y[i] = (long long)(tgen_next(&g) % 6);
    }
    for (int i = 0; i < NT; i++) {
        yt[i] = (long long)(tgen_next(&g) % 7); /* the largest label is in the test split */
    }
    yt[3] = 6;
    hid_t f = create(path);
    group(f, "/train");
    group(f, "/test");
    hsize_t xd[3] = {N, 3, 4}, yd[1] = {N}, xtd[3] = {NT, 3, 4}, ytd[1] = {NT};
    put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 3, xd, x, 0);
    put(f, "/train/y", H5T_STD_I64LE, H5T_NATIVE_LLONG, 1, yd, y, 0);
    put(f, "/test/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 3, xtd, xt, 0);
    put(f, "/test/y", H5T_STD_I64LE, H5T_NATIVE_LLONG, 1, ytd, yt, 0);
    put_f64_attr(f, "/train/x", "scale", 1.0 / 255.0);
    put_f64_attr(f, "/train/x", "offset", -0.25);
    put_f64_attr(f, "/test/x", "scale", 1.0 / 255.0);
    put_f64_attr(f, "/test/x", "offset", -0.25);
    cr_assert_geq(H5Fclose(f), 0);
}

/* Regression: float64 x [n, 5], float32 targets [n, 2] written before x (lower offset). */
static void write_f64(const char *path)
{
    static double x[N * 5];
    static float y[N * 2];
    uint64_t g = 9;
    for (size_t i = 0; i < N * 5; i++) {
        x[i] = ((double)(tgen_next(&g) >> 11) / 9007199254740992.0 - 0.5) * 1e3;
    }
    for (size_t i = 0; i < N * 2; i++) {
        y[i] = (float)i * 0.37f - 3.0f;
    }
    hid_t f = create(path);
    group(f, "/train");
    hsize_t xd[2] = {N, 5}, yd[2] = {N, 2};
    put(f, "/train/y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, yd, y, 0);
    put(f, "/train/x", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, xd, x, 0);
    cr_assert_geq(H5Fclose(f), 0);
}

/* int16 x [n, 3], uint8 labels. */
static void write_i16(const char *path)
{
    static short x[N * 3];
    static uint8_t y[N];
    for (int i = 0; i < N * 3; i++) {
        x[i] = (short)(i * 331 - 16000);
    }
    for (int i = 0; i < N; i++) {
        y[i] = (uint8_t)(i % 4);
    }
    hid_t f = create(path);
    group(f, "/train");
    hsize_t xd[2] = {N, 3}, yd[1] = {N};
    put(f, "/train/x", H5T_STD_I16LE, H5T_NATIVE_SHORT, 2, xd, x, 0);
    put(f, "/train/y", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, yd, y, 0);
    cr_assert_geq(H5Fclose(f), 0);
}

/* Gathers idx from both splits and compares every bit. */
static void expect_same_gather(const dp_split *mem, const dp_split *st, const size_t *idx, int n,
                               const char *what)
{
    const size_t nf = (size_t)mem->n_features, nt = (size_t)(mem->n_targets ? mem->n_targets : 1);
    float *xa = talloc((size_t)n * nf), *xb = talloc((size_t)n * nf);
    float *va = talloc((size_t)n * nt), *vb = talloc((size_t)n * nt);
    int32_t *la = calloc((size_t)n, sizeof *la), *lb = calloc((size_t)n, sizeof *lb);
    cr_assert(la && lb);
    cr_assert_eq(dp_split_gather(mem, idx, n, xa, la, va), DP_OK);
    cr_assert_eq(dp_split_gather(st, idx, n, xb, lb, vb), DP_OK, "%s: %s", what, dp_errmsg());
    cr_assert_eq(memcmp(xa, xb, (size_t)n * nf * sizeof *xa), 0, "%s: x differs", what);
    if (mem->labels) {
        cr_assert_eq(memcmp(la, lb, (size_t)n * sizeof *la), 0, "%s: labels differ", what);
    } else {
        cr_assert_eq(memcmp(va, vb, (size_t)n * nt * sizeof *va), 0, "%s: targets differ", what);
    }
    free(xa);
    free(xb);
    free(va);
    free(vb);
    free(la);
    free(lb);
}

static void check_file(const char *path)
{
    dp_dataset *mem = NULL, *st = NULL, *st2 = NULL;
    dp_stream_info si;
    cr_assert_eq(dp_dataset_load(path, &mem), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_open_stream(path, true, NULL, &st, &si), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_open_stream(path, false, &si, &st2, NULL), DP_OK, "%s",
                 dp_errmsg());
    cr_assert_eq(st->n_classes, mem->n_classes, "%s: classes %d, load %d", path, st->n_classes,
                 mem->n_classes);
    cr_assert_eq(st2->n_classes, mem->n_classes);
    const dp_split *ms[2] = {&mem->train, &mem->test}, *ss[2] = {&st->train, &st->test};
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(ss[k]->n, ms[k]->n);
        cr_assert_eq(ss[k]->n_features, ms[k]->n_features);
        cr_assert_eq(ss[k]->n_targets, ms[k]->n_targets);
        cr_assert_eq(dp_split_has_labels(ss[k]), ms[k]->n > 0 && ms[k]->labels != NULL);
        cr_assert_eq(dp_split_has_values(ss[k]), ms[k]->n > 0 && ms[k]->values != NULL);
        if (ms[k]->n) {
            cr_assert_null(ss[k]->x_u8);
            cr_assert_null(ss[k]->x_f32);
            cr_assert_eq(dp_split_fingerprint(ss[k]), dp_split_fingerprint(ms[k]),
                         "%s: split %d fingerprint", path, k);
        }
    }
    /* Unsorted, repeated, the first and the last row. */
    size_t a[7] = {N - 1, 3, 0, 3, 50, 49, 51}, b[5] = {10, 9, 8, 96, 1}, c[3] = {2, 4, 6};
    expect_same_gather(&mem->train, &st->train, a, 7, "no read ahead");
    dp_split_prefetch(&st->train, b, 5);
    expect_same_gather(&mem->train, &st->train, b, 5, "read ahead");
    dp_split_prefetch(&st->train, a, 7);
    expect_same_gather(&mem->train, &st->train, c, 3, "read ahead of other rows");
    expect_same_gather(&mem->train, &st2->train, a, 7, "opened with the scan's figures");
    size_t all[N];
    for (size_t i = 0; i < N; i++) {
        all[i] = (i * 37) % N;
    }
    dp_split_prefetch(&st->train, all, N);
    expect_same_gather(&mem->train, &st->train, all, N, "every row, read ahead");
    if (mem->test.n) {
        size_t t[4] = {NT - 1, 0, 3, 3};
        expect_same_gather(&mem->test, &st->test, t, 4, "test split");
    }
    dp_dataset_free(&mem);
    dp_dataset_free(&st);
    dp_dataset_free(&st2);
}

Test(data_stream, uint8_x_int64_labels_with_a_test_split)
{
    char path[512];
    tmp_path(path, sizeof path, "u8.h5");
    write_u8(path);
    check_file(path);
}

Test(data_stream, float64_x_and_targets_stored_before_x)
{
    char path[512];
    tmp_path(path, sizeof path, "f64.h5");
    write_f64(path);
    check_file(path);
}

Test(data_stream, int16_x_uint8_labels)
{
    char path[512];
    tmp_path(path, sizeof path, "i16.h5");
    write_i16(path);
    check_file(path);
}

/* The files dptrain writes itself stream too. */
Test(data_stream, a_saved_dataset)
{
    char path[512];
    dp_dataset *d = NULL;
    tmp_path(path, sizeof path, "saved.h5");
    cr_assert_eq(dp_synth_blobs(N, NT, 6, 3, 0.5f, 3, &d), DP_OK);
    cr_assert_eq(dp_dataset_save(path, d), DP_OK, "%s", dp_errmsg());
    dp_dataset_free(&d);
    check_file(path);
}

static void expect_refused(const char *path, int want_rc, const char *word)
{
    dp_dataset *st = NULL;
    dp_stream_info si;
    int rc = dp_dataset_open_stream(path, true, NULL, &st, &si);
    cr_assert_eq(rc, want_rc, "%s: rc %d (%s)", path, rc, dp_errmsg());
    cr_assert_null(st);
    cr_assert(strstr(dp_errmsg(), word), "message '%s' lacks '%s'", dp_errmsg(), word);
    cr_assert(strstr(dp_errmsg(), path), "message '%s' does not name the file", dp_errmsg());
}

Test(data_stream, files_it_cannot_read_as_stored_are_refused_by_name)
{
    char path[512];
    static float x[N * 2];
    static int y[N];
    hsize_t xd[2] = {N, 2}, yd[1] = {N};
    for (int i = 0; i < N; i++) {
        y[i] = i % 2;
    }
    tmp_path(path, sizeof path, "chunked.h5");
    hid_t f = create(path);
    group(f, "/train");
    put(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 16);
    put(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y, 0);
    H5Fclose(f);
    expect_refused(path, DP_EFORMAT, "/train/x is stored in chunks");

    tmp_path(path, sizeof path, "bigendian.h5");
    f = create(path);
    group(f, "/train");
    put(f, "/train/x", H5T_IEEE_F32BE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    put(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y, 0);
    H5Fclose(f);
    expect_refused(path, DP_EFORMAT, "big-endian");

    /* The scan makes the checks of a load that need the rows. */
    x[2 * 40 + 1] = NAN;
    tmp_path(path, sizeof path, "nan.h5");
    f = create(path);
    group(f, "/train");
    put(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    put(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y, 0);
    H5Fclose(f);
    expect_refused(path, DP_EFORMAT, "row 40, feature 1 is not finite");

    x[2 * 40 + 1] = 0.0f;
    y[61] = -2;
    tmp_path(path, sizeof path, "neglabel.h5");
    f = create(path);
    group(f, "/train");
    put(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x, 0);
    put(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y, 0);
    H5Fclose(f);
    expect_refused(path, DP_ERANGE, "label -2 at row 61");
}

/* A file cut short under the run: the gather fails with a message naming the file, and the
 * outputs hold zeros, not what was there before; with a read ahead too. */
Test(data_stream, a_truncated_file_fails_the_gather_with_zeros)
{
    char path[512];
    dp_dataset *st = NULL;
    dp_stream_info si;
    tmp_path(path, sizeof path, "trunc.h5");
    write_i16(path);
    cr_assert_eq(dp_dataset_open_stream(path, true, NULL, &st, &si), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(truncate(path, 2048), 0);
    size_t idx[3] = {N - 1, 5, N - 2};
    float x[9];
    int32_t lab[3];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 9; i++) {
            x[i] = 7.0f;
        }
        lab[0] = lab[1] = lab[2] = 7;
        if (pass == 1) {
            dp_split_prefetch(&st->train, idx, 3);
        }
        int rc = dp_split_gather(&st->train, idx, 3, x, lab, NULL);
        cr_assert_eq(rc, DP_EIO, "pass %d: rc %d", pass, rc);
        cr_assert(strstr(dp_errmsg(), path) && strstr(dp_errmsg(), "shorter than its header"),
                  "pass %d: %s", pass, dp_errmsg());
        for (int i = 0; i < 9; i++) {
            cr_assert_eq(x[i], 0.0f);
        }
        cr_assert(lab[0] == 0 && lab[1] == 0 && lab[2] == 0);
    }
    dp_dataset_free(&st);
}
