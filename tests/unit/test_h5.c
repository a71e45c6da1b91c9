/* test_h5.c: the HDF5 layer (src/io/h5util.h) that src/data and src/io share: a failed call's
 * message names the file, the object and HDF5's own reason; no handle stays open on an error
 * path; attributes refuse what they cannot read; the atomic write leaves the old file or the
 * new one, never a part and never a temporary file. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "dptrain/data.h"
#include "dptrain/err.h"
#include "io/h5util.h"

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/h5_%ld_%s", DP_TEST_TMPDIR, (long)getpid(), name);
}

static void expect_msg(const char *needle)
{
    cr_assert(strstr(dp_errmsg(), needle) != NULL, "message \"%s\" lacks \"%s\"", dp_errmsg(),
              needle);
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Open HDF5 objects of any file in this process (Criterion runs each test in its own). */
static ssize_t open_objects(void)
{
    return H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
}

/* A file written through the atomic path with one int attribute "v" = v. */
static int write_v(const char *path, int v)
{
    int rc = DP_OK;
    dp_h5_atomic a = DP_H5_ATOMIC_INIT;
    DP_TRY(dp_h5_atomic_create(&a, path, 0));
    DP_TRY(dp_h5_put_int_attr(a.f, path, "v", &v, 1));
    rc = dp_h5_atomic_commit(&a, NULL, NULL);
done:
    if (rc != DP_OK) {
        dp_h5_atomic_abort(&a);
    }
    return rc;
}

static int read_v(const char *path)
{
    hid_t f = H5I_INVALID_HID;
    int v = -1;
    cr_assert_eq(dp_h5_open_ro(path, "cannot open", &f), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_h5_get_int_attr(f, path, "v", &v, 1), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_h5_close(&f, DP_OK, path), DP_OK);
    return v;
}

Test(h5, open_failure_names_the_file_and_hdf5s_reason)
{
    char path[512];
    hid_t f = H5I_INVALID_HID;
    tmp_path(path, sizeof path, "text.h5");
    FILE *t = fopen(path, "w");
    cr_assert_not_null(t);
    fputs("this is not HDF5\n", t);
    fclose(t);
    cr_assert_eq(dp_h5_open_ro(path, "not an HDF5 file", &f), DP_EFORMAT);
    expect_msg(path);
    expect_msg("not an HDF5 file");
    expect_msg("file signature not found"); /* the innermost entry of HDF5's stack */
    cr_assert(f < 0);
}

Test(h5, a_failed_call_names_file_attribute_and_reason)
{
    char path[512];
    int v = 1;
    tmp_path(path, sizeof path, "twice.h5");
    dp_h5_quiet();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    cr_assert_eq(dp_h5_put_int_attr(f, path, "n_layers", &v, 1), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_h5_put_int_attr(f, path, "n_layers", &v, 1), DP_EIO);
    expect_msg(path);
    expect_msg("writing attribute n_layers of /");
    expect_msg("attribute already exists");
    cr_assert_eq(dp_h5_close(&f, DP_OK, path), DP_OK);
    cr_assert(f < 0, "dp_h5_close invalidates the handle");
    cr_assert_eq(open_objects(), 0);
}

Test(h5, attributes_round_trip_and_refuse_what_they_cannot_read)
{
    char path[512];
    tmp_path(path, sizeof path, "attrs.h5");
    dp_h5_quiet();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    const int64_t i64[2] = {-((int64_t)1 << 40), 7};
    const uint64_t u64 = 18446744073709551615ULL;
    const double f64 = 0.1;
    cr_assert_eq(dp_h5_put_str_attr(f, path, "s", "hello"), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_h5_put_i64_attr(f, path, "i", i64, 2), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_h5_put_u64_attr(f, path, "u", &u64, 1), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_h5_put_f64_attr(f, path, "d", &f64, 1), DP_OK, "%s", dp_errmsg());

    char *s = NULL;
    int64_t gi[2] = {0, 0};
    uint64_t gu = 0;
    double gd = 0.0;
    int n = 0;
    bool present = false;
    cr_assert_eq(dp_h5_get_str_attr(f, path, "s", &s), DP_OK, "%s", dp_errmsg());
    cr_assert_str_eq(s, "hello");
    free(s);
    cr_assert_eq(dp_h5_get_i64_attr(f, path, "i", gi, 2), DP_OK, "%s", dp_errmsg());
    cr_assert(gi[0] == i64[0] && gi[1] == i64[1]);
    cr_assert_eq(dp_h5_get_u64_attr(f, path, "u", &gu, 1), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(gu, u64);
    cr_assert_eq(dp_h5_get_f64_attr(f, path, "d", &gd, 1), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(gd, f64);
    cr_assert_eq(dp_h5_has_attr(f, path, "d", &present), DP_OK);
    cr_assert(present);
    cr_assert_eq(dp_h5_has_attr(f, path, "nope", &present), DP_OK);
    cr_assert(!present);

    cr_assert_eq(dp_h5_get_int_attr(f, path, "nope", &n, 1), DP_EFORMAT);
    expect_msg("attribute nope of / is missing");
    cr_assert_eq(dp_h5_get_int_attr(f, path, "s", &n, 1), DP_EFORMAT);
    expect_msg("attribute s of / is string, expected an integer");
    cr_assert_eq(dp_h5_get_int_attr(f, path, "d", &n, 1), DP_EFORMAT);
    expect_msg("expected an integer");
    cr_assert_eq(dp_h5_get_int_attr(f, path, "i", &n, 1), DP_EFORMAT);
    expect_msg("attribute i of / has 2 values, expected 1");
    cr_assert_eq(dp_h5_get_str_attr(f, path, "d", &s), DP_EFORMAT);
    expect_msg("expected a string");
    cr_assert_null(s);
    cr_assert_eq(open_objects(), 1, "only the file itself is open");
    cr_assert_eq(dp_h5_close(&f, DP_OK, path), DP_OK);
}

/* Loading a malformed dataset file fails with a message and leaves no HDF5 object open. */
Test(h5, no_handle_stays_open_on_an_error_path)
{
    char path[512];
    dp_dataset *got = NULL;
    tmp_path(path, sizeof path, "bad.h5");
    dp_h5_quiet();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "/train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t d[2] = {2, 2};
    float x[4] = {1, 2, 3, 4};
    cr_assert_eq(dp_h5_write_f32(f, path, "/train/x", x, 2, d), DP_OK, "%s", dp_errmsg());
    const char *str = "not a number";
    hid_t xds = H5Dopen2(f, "/train/x", H5P_DEFAULT);
    cr_assert_eq(dp_h5_put_str_attr(xds, path, "scale", str), DP_OK, "%s", dp_errmsg());
    H5Dclose(xds);
    H5Gclose(g);
    cr_assert_geq(H5Fclose(f), 0);
    cr_assert_eq(open_objects(), 0);
    cr_assert_neq(dp_dataset_load(path, &got), DP_OK);
    expect_msg(path);
    expect_msg("attribute scale of /train/x is string, expected a number");
    cr_assert_null(got);
    cr_assert_eq(open_objects(), 0, "an HDF5 handle leaked on the error path");
}

Test(h5, atomic_write_leaves_the_old_file_or_the_new_one)
{
    char path[512], tmp[600];
    tmp_path(path, sizeof path, "atomic.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    cr_assert_eq(write_v(path, 1), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(read_v(path), 1);
    cr_assert(!file_exists(tmp));

    /* abandoned half-way: the old file stays, the temporary one goes */
    dp_h5_atomic a = DP_H5_ATOMIC_INIT;
    int v = 2;
    cr_assert_eq(dp_h5_atomic_create(&a, path, 0), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_h5_put_int_attr(a.f, path, "v", &v, 1), DP_OK);
    cr_assert(file_exists(tmp), "the temporary name is taken on disk at create");
    dp_h5_atomic_abort(&a);
    cr_assert(!file_exists(tmp));
    cr_assert_eq(read_v(path), 1);
    dp_h5_atomic_abort(&a); /* twice is harmless */

    /* committed: the new one */
    cr_assert_eq(write_v(path, 3), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(read_v(path), 3);
    cr_assert(!file_exists(tmp));
    cr_assert_eq(open_objects(), 0);

    /* abort before create touches nothing (not even file descriptor 0) */
    dp_h5_atomic b = DP_H5_ATOMIC_INIT;
    dp_h5_atomic_abort(&b);
    cr_assert_neq(fcntl(0, F_GETFD), -1, "fd 0 still open");
}

/* A write that the disk refuses (here a file size limit, as a full disk would) is an error
 * naming the file and the reason; the old file is intact and no temporary file is left. */
Test(h5, a_refused_write_is_reported_and_keeps_the_old_file)
{
    char path[512], tmp[600];
    tmp_path(path, sizeof path, "limit.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    cr_assert_eq(write_v(path, 1), DP_OK, "%s", dp_errmsg());

    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = 1024, .rlim_max = RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    dp_h5_atomic a = DP_H5_ATOMIC_INIT;
    int rc = dp_h5_atomic_create(&a, path, 0);
    static float big[4096];
    hsize_t n = 4096;
    if (rc == DP_OK) {
        rc = dp_h5_write_f32(a.f, path, "big", big, 1, &n);
    }
    if (rc == DP_OK) {
        rc = dp_h5_atomic_commit(&a, NULL, NULL);
    } else {
        dp_h5_atomic_abort(&a);
    }
    rl.rlim_cur = RLIM_INFINITY;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    cr_assert_eq(rc, DP_EIO, "%s", dp_errmsg());
    expect_msg(path);
    expect_msg("cannot write byte");
    expect_msg(strerror(EFBIG));
    cr_assert(!file_exists(tmp), "temporary file left behind");
    cr_assert_eq(read_v(path), 1);
}

/* dp_dataset_save writes through the same atomic path: a refused write keeps the old file. */
Test(h5, dataset_save_uses_the_atomic_write)
{
    char path[512], tmp[600];
    tmp_path(path, sizeof path, "ds.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    static float x[20000];
    static int32_t y[10000];
    dp_dataset d = {.n_classes = 2};
    d.train = (dp_split){.n = 2, .n_features = 2, .x_f32 = x, .x_scale = 1.0f, .labels = y};
    dp_dataset *got = NULL;
    cr_assert_eq(dp_dataset_save(path, &d), DP_OK, "%s", dp_errmsg());
    cr_assert(!file_exists(tmp));

    d.train.n = 10000;
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = 16384, .rlim_max = RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    int rc = dp_dataset_save(path, &d);
    rl.rlim_cur = RLIM_INFINITY;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    cr_assert_eq(rc, DP_EIO, "%s", dp_errmsg());
    expect_msg(path);
    expect_msg(strerror(EFBIG));
    cr_assert(!file_exists(tmp), "temporary file left behind");
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->train.n, 2, "the old file is intact");
    dp_dataset_free(&got);
    cr_assert_eq(open_objects(), 0);
}
