/* test_data.c: unit tests of src/data: shard and batch arithmetic, the epoch permutation,
 * HDF5 round trips and rejections, IDX and CSV converters, synthetic generators.
 * Fixture files are written under DP_TEST_TMPDIR with names unique to each test and process. */
#include <criterion/criterion.h>
#include <sys/stat.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "dptrain/data.h"
#include "data/data_internal.h"
#include "dptrain/err.h"
#include "dptrain/rng.h"

/* --- helpers ------------------------------------------------------------------------------ */

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/data_%ld_%s", DP_TEST_TMPDIR, (long)getpid(), name);
}

static void expect_msg(const char *needle)
{
    cr_assert(strstr(dp_errmsg(), needle) != NULL, "message \"%s\" lacks \"%s\"", dp_errmsg(),
              needle);
}

/* Asserts a failed status whose message names the file and a key word. */
static void expect_fail(int rc, const char *path, const char *word)
{
    cr_assert_neq(rc, DP_OK, "expected a failure mentioning \"%s\"", word);
    expect_msg(path);
    expect_msg(word);
}

static void write_file(const char *path, const void *data, size_t n_bytes, bool gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(gzwrite(f, data, (unsigned)n_bytes), (int)n_bytes);
        cr_assert_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(data, 1, n_bytes, f), n_bytes);
        cr_assert_eq(fclose(f), 0);
    }
}

static void write_text(const char *path, const char *text, bool gz)
{
    write_file(path, text, strlen(text), gz);
}

static unsigned char *read_whole(const char *path, size_t *n_bytes)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(1 << 20);
    cr_assert_not_null(f);
    cr_assert_not_null(buf);
    *n_bytes = fread(buf, 1, 1 << 20, f);
    cr_assert_eq(fclose(f), 0);
    return buf;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX images file of n images rows x cols, pixel (i, r, c) = (i * 31 + r * 7 + c * 3) % 256;
 * only the first n_data_bytes of pixel data are written (truncation), unless SIZE_MAX. */
static void write_idx_images(const char *path, uint32_t magic, size_t n, size_t rows, size_t cols,
                             size_t n_data_bytes, bool gz)
{
    size_t total = n * rows * cols;
    unsigned char *buf = malloc(16 + total + 1);
    cr_assert_not_null(buf);
    put_be32(buf, magic);
    put_be32(buf + 4, (uint32_t)n);
    put_be32(buf + 8, (uint32_t)rows);
    put_be32(buf + 12, (uint32_t)cols);
    for (size_t i = 0; i < n; i++) {
        for (size_t r = 0; r < rows; r++) {
            for (size_t c = 0; c < cols; c++) {
                buf[16 + (i * rows + r) * cols + c] = (unsigned char)((i * 31 + r * 7 + c * 3) % 256);
            }
        }
    }
    write_file(path, buf, 16 + (n_data_bytes < total ? n_data_bytes : total), gz);
    free(buf);
}

static uint8_t idx_pixel(size_t i, size_t r, size_t c, size_t rows, size_t cols)
{
    (void)rows;
    (void)cols;
    return (uint8_t)((i * 31 + r * 7 + c * 3) % 256);
}

/* IDX labels file: label i = (i * 3) % 10. */
static void write_idx_labels(const char *path, size_t n, bool gz)
{
    unsigned char *buf = malloc(8 + n);
    cr_assert_not_null(buf);
    put_be32(buf, 0x00000801);
    put_be32(buf + 4, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        buf[8 + i] = (unsigned char)((i * 3) % 10);
    }
    write_file(path, buf, 8 + n, gz);
    free(buf);
}

/* HDF5 fixture writers (assert every call). */
static hid_t h5_create(const char *path)
{
    hid_t f;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    return f;
}

static void h5_group(hid_t f, const char *name)
{
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(g, 0);
    cr_assert_geq(H5Gclose(g), 0);
}

static void h5_array(hid_t f, const char *name, hid_t ftype, hid_t mtype, int rank,
                     const hsize_t *dims, const void *buf)
{
    hid_t s = H5Screate_simple(rank, dims, NULL), d;
    cr_assert_geq(s, 0);
    d = H5Dcreate2(f, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    cr_assert_geq(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    cr_assert_geq(H5Dclose(d), 0);
    cr_assert_geq(H5Sclose(s), 0);
}

static void h5_attr_int(hid_t obj, const char *name, long long v)
{
    hid_t s = H5Screate(H5S_SCALAR), a;
    cr_assert_geq(s, 0);
    a = H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0);
    cr_assert_geq(H5Awrite(a, H5T_NATIVE_LLONG, &v), 0);
    cr_assert_geq(H5Aclose(a), 0);
    cr_assert_geq(H5Sclose(s), 0);
}

static void h5_attr_vlen_string(hid_t obj, const char *name, const char *v)
{
    hid_t s = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1), a;
    cr_assert_geq(s, 0);
    cr_assert_geq(t, 0);
    cr_assert_geq(H5Tset_size(t, H5T_VARIABLE), 0);
    cr_assert_geq(H5Tset_cset(t, H5T_CSET_UTF8), 0);
    a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0);
    cr_assert_geq(H5Awrite(a, t, &v), 0);
    cr_assert_geq(H5Aclose(a), 0);
    cr_assert_geq(H5Tclose(t), 0);
    cr_assert_geq(H5Sclose(s), 0);
}

/* A small valid classification file: /train/x float [n, 2], /train/y int [n]. */
static void h5_simple_split(hid_t f, const char *grp, size_t n, size_t nf, size_t ny,
                            const int *labels)
{
    char name[64];
    hsize_t xd[2] = {n, nf}, yd[1] = {ny};
    float *x = calloc(n * nf + 1, sizeof *x);
    int *y = calloc(ny + 1, sizeof *y);
    cr_assert_not_null(x);
    cr_assert_not_null(y);
    for (size_t i = 0; i < n * nf; i++) {
        x[i] = (float)i * 0.5f;
    }
    for (size_t i = 0; i < ny; i++) {
        y[i] = labels ? labels[i] : (int)(i % 3);
    }
    h5_group(f, grp);
    snprintf(name, sizeof name, "%s/x", grp);
    h5_array(f, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x);
    snprintf(name, sizeof name, "%s/y", grp);
    h5_array(f, name, H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y);
    free(x);
    free(y);
}

static void h5_dims(const char *path, const char *name, int *rank, hsize_t *dims)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), d, s;
    cr_assert_geq(f, 0);
    d = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    s = H5Dget_space(d);
    cr_assert_geq(s, 0);
    *rank = H5Sget_simple_extent_ndims(s);
    cr_assert_geq(H5Sget_simple_extent_dims(s, dims, NULL), 0);
    cr_assert_geq(H5Sclose(s), 0);
    cr_assert_geq(H5Dclose(d), 0);
    cr_assert_geq(H5Fclose(f), 0);
}

static bool file_exists(const char *path) { return access(path, F_OK) == 0; }

/* --- shard and batch arithmetic ----------------------------------------------------------- */

Test(data_shard, batch_128_over_3_ranks)
{
    size_t lo, hi;
    size_t want_lo[3] = {0, 43, 86}, want_hi[3] = {43, 86, 128};
    for (int r = 0; r < 3; r++) {
        dp_shard_rows(128, r, 3, &lo, &hi);
        cr_assert_eq(lo, want_lo[r], "rank %d lo %zu", r, lo);
        cr_assert_eq(hi, want_hi[r], "rank %d hi %zu", r, hi);
    }
}

Test(data_shard, contiguous_cover_for_many_sizes)
{
    size_t ns[] = {0, 1, 2, 3, 5, 7, 8, 63, 64, 100, 127, 128, 129, 1000, 60000};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        for (int size = 1; size <= 17; size++) {
            size_t n = ns[a], prev_hi = 0, q = n / (size_t)size;
            for (int r = 0; r < size; r++) {
                size_t lo, hi;
                dp_shard_rows(n, r, size, &lo, &hi);
                cr_assert_eq(lo, prev_hi, "n=%zu size=%d rank %d: gap or overlap", n, size, r);
                cr_assert_geq(hi, lo);
                /* the first n % size ranks take one more */
                cr_assert_eq(hi - lo, q + ((size_t)r < n % (size_t)size ? 1 : 0),
                             "n=%zu size=%d rank %d has %zu rows", n, size, r, hi - lo);
                prev_hi = hi;
            }
            cr_assert_eq(prev_hi, n, "n=%zu size=%d does not end at n", n, size);
        }
    }
}

Test(data_shard, fewer_rows_than_ranks)
{
    size_t lo, hi;
    dp_shard_rows(2, 0, 5, &lo, &hi);
    cr_assert(lo == 0 && hi == 1);
    dp_shard_rows(2, 1, 5, &lo, &hi);
    cr_assert(lo == 1 && hi == 2);
    for (int r = 2; r < 5; r++) {
        dp_shard_rows(2, r, 5, &lo, &hi);
        cr_assert_eq(hi - lo, 0, "rank %d should be empty", r);
        cr_assert_eq(lo, 2);
    }
}

Test(data_shard, n_batches)
{
    cr_assert_eq(dp_n_batches(60000, 128, false), 469);
    cr_assert_eq(dp_n_batches(60000, 128, true), 468);
    cr_assert_eq(dp_n_batches(256, 128, false), 2);
    cr_assert_eq(dp_n_batches(256, 128, true), 2);
    cr_assert_eq(dp_n_batches(1, 128, false), 1);
    cr_assert_eq(dp_n_batches(1, 128, true), 0);
    cr_assert_eq(dp_n_batches(0, 128, false), 0);
    cr_assert_eq(dp_n_batches(100, 0, false), 0);
    cr_assert_eq(dp_n_batches(10000, 1, true), 10000);
}

/* --- permutation -------------------------------------------------------------------------- */

Test(data_perm, is_a_permutation)
{
    size_t n = 1000, *p = malloc(n * sizeof *p);
    char *seen = calloc(n, 1);
    size_t fixed = 0;
    cr_assert(p && seen);
    dp_permutation(p, n, 42, 3);
    for (size_t i = 0; i < n; i++) {
        cr_assert_lt(p[i], n);
        cr_assert_eq(seen[p[i]], 0, "%zu appears twice", p[i]);
        seen[p[i]] = 1;
        fixed += p[i] == i;
    }
    cr_assert_lt(fixed, 20, "%zu fixed points: not shuffled", fixed);
    free(p);
    free(seen);
}

Test(data_perm, fisher_yates_over_rng_below)
{
    /* the exact algorithm every rank must share: perm[i] = i, then for i = n-1..1 swap with
     * j = dp_rng_below(r, i + 1), r = dp_rng_make(seed, epoch) */
    size_t n = 257, got[257], want[257];
    dp_rng r = dp_rng_make(7, 11);
    for (size_t i = 0; i < n; i++) {
        want[i] = i;
    }
    for (size_t i = n - 1; i >= 1; i--) {
        size_t j = (size_t)dp_rng_below(&r, i + 1), t = want[i];
        want[i] = want[j];
        want[j] = t;
    }
    dp_permutation(got, n, 7, 11);
    cr_assert_arr_eq(got, want, sizeof got);
}

Test(data_perm, deterministic_in_seed_and_epoch)
{
    size_t n = 500, a[500], b[500], c[500], e[500];
    dp_permutation(a, n, 1, 0);
    dp_permutation(b, n, 1, 0);
    dp_permutation(c, n, 1, 1);
    dp_permutation(e, n, 2, 0);
    cr_assert_arr_eq(a, b, sizeof a);
    cr_assert_neq(memcmp(a, c, sizeof a), 0, "epoch did not change the permutation");
    cr_assert_neq(memcmp(a, e, sizeof a), 0, "seed did not change the permutation");
}

Test(data_perm, tiny)
{
    size_t one = 99;
    dp_permutation(&one, 1, 5, 5);
    cr_assert_eq(one, 0);
    dp_permutation(NULL, 0, 5, 5); /* no crash */
}

/* The Feistel permutation: a bijection of [0, n) for sizes around powers of two and primes. */
Test(data_perm, feistel_is_a_bijection)
{
    const size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 127, 128, 129, 255, 256, 257,
                            1000, 4095, 4096, 4097, 65535, 65536, 65537, 100003, 1 << 20,
                            (1 << 20) + 7};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const size_t n = sizes[k];
        char *seen = calloc(n, 1);
        cr_assert(seen);
        dp_feistel f;
        dp_feistel_init(&f, n, 9, k);
        size_t fixed = 0;
        for (size_t i = 0; i < n; i++) {
            const size_t v = dp_feistel_at(&f, i);
            cr_assert_lt(v, n, "n %zu: position %zu gives %zu", n, i, v);
            cr_assert_eq(seen[v], 0, "n %zu: %zu appears twice", n, v);
            seen[v] = 1;
            fixed += v == i;
        }
        if (n >= 1000) {
            cr_assert_lt(fixed, n / 100 + 10, "n %zu: %zu fixed points", n, fixed);
        }
        free(seen);
    }
}

Test(data_perm, feistel_keyed_by_seed_and_epoch)
{
    const size_t n = 5000;
    dp_feistel a, b, c, e;
    dp_feistel_init(&a, n, 1, 0);
    dp_feistel_init(&b, n, 1, 0);
    dp_feistel_init(&c, n, 1, 1);
    dp_feistel_init(&e, n, 2, 0);
    size_t same_b = 0, same_c = 0, same_e = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t v = dp_feistel_at(&a, i);
        same_b += v == dp_feistel_at(&b, i);
        same_c += v == dp_feistel_at(&c, i);
        same_e += v == dp_feistel_at(&e, i);
    }
    cr_assert_eq(same_b, n);
    cr_assert_lt(same_c, 50, "epoch did not change the order (%zu the same)", same_c);
    cr_assert_lt(same_e, 50, "seed did not change the order (%zu the same)", same_e);
}

/* Where element 0 lands over many epochs, for n = 10: each position about 1/10 of the time
 * (chi-square with 9 degrees of freedom below 30, p about 0.0005), and the positions of two
 * neighbours independent enough that they are adjacent about 2/10 of the time. */
Test(data_perm, feistel_spreads)
{
    const size_t n = 10, trials = 20000;
    size_t count[10] = {0}, adjacent = 0;
    for (size_t e = 0; e < trials; e++) {
        dp_feistel f;
        dp_feistel_init(&f, n, 3, e);
        size_t p0 = 0, p1 = 0;
        for (size_t i = 0; i < n; i++) {
            const size_t v = dp_feistel_at(&f, i);
            p0 = v == 0 ? i : p0;
            p1 = v == 1 ? i : p1;
        }
        count[p0]++;
        adjacent += p0 + 1 == p1 || p1 + 1 == p0;
    }
    double chi2 = 0.0;
    const double want = (double)trials / (double)n;
    for (size_t i = 0; i < n; i++) {
        chi2 += ((double)count[i] - want) * ((double)count[i] - want) / want;
    }
    cr_assert_lt(chi2, 30.0, "chi-square %.1f", chi2);
    const double adj = (double)adjacent / (double)trials;
    cr_assert(adj > 0.17 && adj < 0.23, "neighbours adjacent %.3f of the time (0.2 expected)", adj);
}

/* --- HDF5 round trips --------------------------------------------------------------------- */

static void expect_split_equal(const dp_split *a, const dp_split *b)
{
    size_t nf = (size_t)a->n_features;
    cr_assert_eq(a->n, b->n);
    cr_assert_eq(a->n_features, b->n_features);
    cr_assert_eq(a->x_scale, b->x_scale);
    cr_assert_eq(a->x_offset, b->x_offset);
    cr_assert_eq(a->x_u8 != NULL, b->x_u8 != NULL);
    cr_assert_eq(a->x_f32 != NULL, b->x_f32 != NULL);
    if (a->x_u8) {
        cr_assert_arr_eq(a->x_u8, b->x_u8, a->n * nf);
    } else {
        cr_assert_arr_eq(a->x_f32, b->x_f32, a->n * nf * sizeof(float));
    }
    cr_assert_eq(a->labels != NULL, b->labels != NULL);
    if (a->labels) {
        cr_assert_arr_eq(a->labels, b->labels, a->n * sizeof(int32_t));
    }
    cr_assert_eq(a->values != NULL, b->values != NULL);
    if (a->values) {
        cr_assert_eq(a->n_targets, b->n_targets);
        cr_assert_arr_eq(a->values, b->values, a->n * (size_t)a->n_targets * sizeof(float));
    }
    cr_assert_eq(dp_split_fingerprint(a), dp_split_fingerprint(b));
}

Test(data_h5, roundtrip_u8_labels_and_gather)
{
    char path[512];
    uint8_t xtr[5 * 6], xte[3 * 6];
    int32_t ltr[5] = {0, 3, 1, 2, 3}, lte[3] = {2, 0, 1};
    dp_dataset d = {0}, *got = NULL;
    size_t idx[3] = {4, 0, 2};
    float gx[3 * 6];
    int32_t gl[3];
    tmp_path(path, sizeof path, "rt_u8.h5");
    for (int i = 0; i < 30; i++) {
        xtr[i] = (uint8_t)(i * 8 + 1);
    }
    for (int i = 0; i < 18; i++) {
        xte[i] = (uint8_t)(250 - i);
    }
    d.n_classes = 4;
    d.train = (dp_split){.n = 5, .n_features = 6, .x_u8 = xtr, .x_scale = 1.0f / 255.0f,
                         .x_offset = 0.5f, .labels = ltr};
    d.test = (dp_split){.n = 3, .n_features = 6, .x_u8 = xte, .x_scale = 1.0f / 255.0f,
                        .x_offset = 0.5f, .labels = lte};
    cr_assert_eq(dp_dataset_save(path, &d), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->n_classes, 4);
    expect_split_equal(&d.train, &got->train);
    expect_split_equal(&d.test, &got->test);

    dp_split_gather(&got->train, idx, 3, gx, gl, NULL);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(gl[i], ltr[idx[i]]);
        for (int j = 0; j < 6; j++) {
            float want = (float)xtr[idx[i] * 6 + (size_t)j] * (1.0f / 255.0f) + 0.5f;
            cr_assert_float_eq(gx[i * 6 + j], want, 1e-6f, "row %d col %d", i, j);
        }
    }
    dp_dataset_free(&got);
    cr_assert_null(got);
    dp_dataset_free(&got); /* NULL-safe */
}

Test(data_h5, roundtrip_float_values)
{
    char path[512], tmp[600];
    float xtr[4 * 3], vtr[4 * 2], xte[2 * 3], vte[2 * 2];
    dp_dataset d = {0}, *got = NULL;
    size_t idx[2] = {3, 1};
    float gx[2 * 3], gv[2 * 2];
    int rank;
    hsize_t dims[4];
    tmp_path(path, sizeof path, "rt_f32.h5");
    for (int i = 0; i < 12; i++) {
        xtr[i] = (float)i * 0.25f - 1.0f;
    }
    for (int i = 0; i < 8; i++) {
        vtr[i] = (float)i * 1.5f;
    }
    for (int i = 0; i < 6; i++) {
        xte[i] = -(float)i;
    }
    for (int i = 0; i < 4; i++) {
        vte[i] = (float)i + 0.125f;
    }
    d.train = (dp_split){.n = 4, .n_features = 3, .x_f32 = xtr, .x_scale = 2.0f,
                         .x_offset = -1.0f, .values = vtr, .n_targets = 2};
    d.test = (dp_split){.n = 2, .n_features = 3, .x_f32 = xte, .x_scale = 2.0f,
                        .x_offset = -1.0f, .values = vte, .n_targets = 2};
    cr_assert_eq(dp_dataset_save(path, &d), DP_OK, "%s", dp_errmsg());
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    cr_assert(!file_exists(tmp), "temporary file left behind");
    h5_dims(path, "/train/y", &rank, dims);
    cr_assert(rank == 2 && dims[0] == 4 && dims[1] == 2);
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->n_classes, 0);
    expect_split_equal(&d.train, &got->train);
    expect_split_equal(&d.test, &got->test);
    dp_split_gather(&got->train, idx, 2, gx, NULL, gv);
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 3; j++) {
            cr_assert_float_eq(gx[i * 3 + j], xtr[idx[i] * 3 + (size_t)j] * 2.0f - 1.0f, 1e-6f);
        }
        cr_assert_eq(gv[i * 2], vtr[idx[i] * 2]);
        cr_assert_eq(gv[i * 2 + 1], vtr[idx[i] * 2 + 1]);
    }
    dp_dataset_free(&got);
}

Test(data_h5, one_target_is_1d_and_no_test)
{
    char path[512];
    float x[3] = {1, 2, 3}, v[3] = {4, 5, 6};
    dp_dataset d = {0}, *got = NULL;
    int rank;
    hsize_t dims[4];
    tmp_path(path, sizeof path, "rt_1t.h5");
    d.train = (dp_split){.n = 3, .n_features = 1, .x_f32 = x, .x_scale = 1.0f, .values = v,
                         .n_targets = 1};
    cr_assert_eq(dp_dataset_save(path, &d), DP_OK, "%s", dp_errmsg());
    h5_dims(path, "/train/y", &rank, dims);
    cr_assert(rank == 1 && dims[0] == 3);
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->train.n_targets, 1);
    cr_assert_eq(got->test.n, 0);
    cr_assert_null(got->test.x_f32);
    expect_split_equal(&d.train, &got->train);
    dp_dataset_free(&got);
}

Test(data_h5, failed_save_keeps_old_file)
{
    char path[512];
    float x[2] = {1, 2};
    int32_t good[2] = {0, 1}, bad[2] = {0, 9};
    dp_dataset d = {0}, *got = NULL;
    tmp_path(path, sizeof path, "keep.h5");
    d.n_classes = 2;
    d.train = (dp_split){.n = 2, .n_features = 1, .x_f32 = x, .x_scale = 1.0f, .labels = good};
    cr_assert_eq(dp_dataset_save(path, &d), DP_OK, "%s", dp_errmsg());
    d.train.labels = bad;
    expect_fail(dp_dataset_save(path, &d), path, "label 9 at row 1");
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->train.labels[1], 1);
    dp_dataset_free(&got);
}

Test(data_h5, fingerprint_sees_every_field)
{
    uint8_t x[4] = {1, 2, 3, 4};
    int32_t l[4] = {0, 1, 0, 0}; /* room for the reshaped n = 4 below */
    dp_split s = {.n = 2, .n_features = 2, .x_u8 = x, .x_scale = 1.0f, .labels = l};
    uint64_t h0 = dp_split_fingerprint(&s), h;
    cr_assert_eq(dp_split_fingerprint(&s), h0);
    x[3] = 5;
    cr_assert_neq((h = dp_split_fingerprint(&s)), h0);
    x[3] = 4;
    s.x_scale = 0.5f;
    cr_assert_neq(dp_split_fingerprint(&s), h0);
    s.x_scale = 1.0f;
    l[1] = 2;
    cr_assert_neq(dp_split_fingerprint(&s), h0);
    l[1] = 1;
    s.n_features = 1;
    s.n = 4;
    cr_assert_neq(dp_split_fingerprint(&s), h0, "shape change must change the fingerprint");
    (void)h;
}

/* XXH64 against values printed by xxhsum -H1 (xxHash 0.8.1, Debian's package xxhash), the
 * reference implementation: the empty input, 1 and 3 bytes (the tail rules), 39 bytes (one
 * 32-byte stripe and a tail), and 1 MB of a pattern. (Fed in pieces: test_stream compares a
 * streamed split's fingerprint, hashed block by block as it is read, with the loaded one's.) */
Test(data_h5, fingerprint_hash_is_xxh64)
{
    cr_assert_eq(dp_xxh64("", 0), 0xef46db3751d8e999ULL);
    cr_assert_eq(dp_xxh64("a", 1), 0xd24ec4f1a98c6e5bULL);
    cr_assert_eq(dp_xxh64("abc", 3), 0x44bc2cf5ad770999ULL);
    const char *s = "Nobody inspects the spammish repetition";
    cr_assert_eq(dp_xxh64(s, strlen(s)), 0xfbcea83c8a378bf1ULL);
    const size_t n = 1u << 20;
    uint8_t *b = malloc(n);
    cr_assert_not_null(b);
    for (size_t i = 0; i < n; i++) {
        b[i] = (uint8_t)(i * 7 + i / 13);
    }
    /* printf pattern | xxhsum -H1, the pattern written by a 3-line C program */
    cr_assert_eq(dp_xxh64(b, n), 0xbbafa1afcfc365cfULL, "1 MB: %016llx",
                 (unsigned long long)dp_xxh64(b, n));
    free(b);
}

/* The fingerprint dptrain wrote before 2026-12, 64-bit FNV-1a over the same bytes, computed
 * here byte by byte: a checkpoint holding it still matches its data; another value does not. */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ULL;
    }
    return h;
}

Test(data_h5, fingerprint_accepts_the_older_kind)
{
    uint8_t x[6] = {1, 2, 3, 4, 5, 6};
    int32_t l[3] = {0, 1, 2};
    dp_split s = {.n = 3, .n_features = 2, .x_u8 = x, .x_scale = 0.5f, .labels = l};
    const uint64_t shape[2] = {3, 2}; /* little-endian host: the 8 bytes as dptrain feeds them */
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, shape, sizeof shape);
    h = fnv1a(h, x, sizeof x);
    h = fnv1a(h, &s.x_scale, sizeof s.x_scale);
    h = fnv1a(h, &s.x_offset, sizeof s.x_offset);
    h = fnv1a(h, l, sizeof l);
    cr_assert_neq(dp_split_fingerprint(&s), h, "the current kind is not FNV-1a");
    cr_assert(dp_split_fingerprint_matches(&s, dp_split_fingerprint(&s)));
    cr_assert(dp_split_fingerprint_matches(&s, h), "the older kind must match");
    cr_assert_not(dp_split_fingerprint_matches(&s, h ^ 1));
    x[5] = 7;
    cr_assert_not(dp_split_fingerprint_matches(&s, h), "other data must not match");
}

Test(data_h5, loads_foreign_file)
{
    /* written as another tool would: no format attributes, double x of shape [4, 2, 3],
     * int64 labels (num_classes inferred), a variable-length UTF-8 format string */
    char path[512];
    double x[24];
    long long y[4] = {0, 4, 1, 2};
    hsize_t xd[3] = {4, 2, 3}, yd[1] = {4};
    dp_dataset *got = NULL;
    hid_t f;
    tmp_path(path, sizeof path, "foreign.h5");
    for (int i = 0; i < 24; i++) {
        x[i] = i * 0.5 - 3.0;
    }
    f = h5_create(path);
    h5_attr_vlen_string(f, "format", "dptrain-dataset");
    h5_group(f, "/train");
    h5_array(f, "/train/x", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 3, xd, x);
    h5_array(f, "/train/y", H5T_STD_I64LE, H5T_NATIVE_LLONG, 1, yd, y);
    cr_assert_geq(H5Fclose(f), 0);
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->n_classes, 5);
    cr_assert_eq(got->train.n, 4);
    cr_assert_eq(got->train.n_features, 6);
    cr_assert_null(got->train.x_u8);
    cr_assert_not_null(got->train.x_f32);
    cr_assert_eq(got->train.x_scale, 1.0f);
    cr_assert_eq(got->train.x_offset, 0.0f);
    for (int i = 0; i < 24; i++) {
        cr_assert_eq(got->train.x_f32[i], (float)x[i]);
    }
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(got->train.labels[i], (int32_t)y[i]);
    }
    cr_assert_eq(got->test.n, 0);
    dp_dataset_free(&got);
}

Test(data_h5, int16_x_becomes_float)
{
    char path[512];
    short x[6] = {-300, 2, 3, 4, 5, 1000};
    int y[3] = {1, 0, 1};
    hsize_t xd[2] = {3, 2}, yd[1] = {3};
    dp_dataset *got = NULL;
    hid_t f;
    tmp_path(path, sizeof path, "i16.h5");
    f = h5_create(path);
    h5_attr_int(f, "num_classes", 2);
    h5_group(f, "/train");
    h5_array(f, "/train/x", H5T_STD_I16LE, H5T_NATIVE_SHORT, 2, xd, x);
    h5_array(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y);
    cr_assert_geq(H5Fclose(f), 0);
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_not_null(got->train.x_f32);
    cr_assert_eq(got->train.x_f32[0], -300.0f);
    cr_assert_eq(got->train.x_f32[5], 1000.0f);
    cr_assert_eq(got->n_classes, 2);
    dp_dataset_free(&got);
}

/* --- HDF5 rejections ---------------------------------------------------------------------- */

Test(data_reject, missing_file)
{
    char path[512];
    dp_dataset *got = NULL;
    tmp_path(path, sizeof path, "does_not_exist.h5");
    expect_fail(dp_dataset_load(path, &got), path, "No such file");
    cr_assert_null(got);
}

Test(data_reject, not_hdf5)
{
    char path[512];
    dp_dataset *got = NULL;
    tmp_path(path, sizeof path, "text.h5");
    write_text(path, "this is not an HDF5 file\n", false);
    expect_fail(dp_dataset_load(path, &got), path, "HDF5");
    cr_assert_null(got);
}

Test(data_reject, no_train_group)
{
    char path[512];
    dp_dataset *got = NULL;
    hid_t f;
    tmp_path(path, sizeof path, "notrain.h5");
    f = h5_create(path);
    h5_simple_split(f, "/test", 4, 2, 4, NULL);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "/train");
    cr_assert_null(got);
}

Test(data_reject, xy_row_mismatch)
{
    char path[512];
    dp_dataset *got = NULL;
    hid_t f;
    tmp_path(path, sizeof path, "rows.h5");
    f = h5_create(path);
    h5_simple_split(f, "/train", 6, 2, 5, NULL);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "/train/x has 2 dimensions [6, 2]");
    expect_msg("/train/y has 5 rows");
    cr_assert_null(got);
}

Test(data_reject, label_out_of_range)
{
    char path[512];
    dp_dataset *got = NULL;
    int labels[5] = {0, 1, 7, 2, 1};
    hid_t f;
    tmp_path(path, sizeof path, "range.h5");
    f = h5_create(path);
    h5_attr_int(f, "num_classes", 3);
    h5_simple_split(f, "/train", 5, 2, 5, labels);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "/train/y: label 7 at row 2 is outside [0, 3)");
    cr_assert_null(got);
}

/* Labels stored as 64-bit integers beyond int32: the message shows the stored value (HDF5
 * alone would clip 2^40 to 2147483647 on the way to int32). */
Test(data_reject, huge_int64_and_uint64_labels_shown_as_stored)
{
    char path[512];
    dp_dataset *got = NULL;
    float x[6] = {0, 1, 2, 3, 4, 5};
    hsize_t xd[2] = {3, 2}, yd[1] = {3};
    int64_t y[3] = {0, 1, (int64_t)1 << 40};
    uint64_t yu[3] = {0, 18446744073709551615ULL, 1};
    int64_t yn[3] = {0, -((int64_t)1 << 35), 1};
    int64_t ok[3] = {2, 0, 1};
    tmp_path(path, sizeof path, "huge.h5");
    for (int k = 0; k < 4; k++) {
        hid_t f = h5_create(path);
        h5_group(f, "/train");
        h5_array(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x);
        if (k == 1) {
            h5_array(f, "/train/y", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, yd, yu);
        } else {
            h5_array(f, "/train/y", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, yd,
                     k == 0 ? y : k == 2 ? yn : ok);
        }
        cr_assert_geq(H5Fclose(f), 0);
        if (k == 0) {
            expect_fail(dp_dataset_load(path, &got), path,
                        "/train/y: label 1099511627776 at row 2 is too large");
        } else if (k == 1) {
            expect_fail(dp_dataset_load(path, &got), path,
                        "/train/y: label 18446744073709551615 at row 1 is too large");
        } else if (k == 2) {
            expect_fail(dp_dataset_load(path, &got), path,
                        "/train/y: label -34359738368 at row 1 is negative");
        } else {
            cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
            cr_assert_eq(got->train.labels[0], 2);
            cr_assert_eq(got->n_classes, 3);
            dp_dataset_free(&got);
        }
        cr_assert_null(got);
    }
}

/* A dataset compressed with a filter this HDF5 lacks (h5py's lzf, id 32000) is named with
 * the filter and how to rewrite the file, not HDF5's bare "can't read data". The file is
 * made as h5py would: the filter in the pipeline (optional here, so HDF5 lets us create it
 * without the filter) and a chunk written as if already filtered. */
Test(data_reject, a_missing_compression_filter_is_named)
{
    char path[512];
    dp_dataset *got = NULL;
    tmp_path(path, sizeof path, "lzf.h5");
    hid_t f = h5_create(path);
    h5_group(f, "/train");
    hsize_t xd[2] = {4, 2}, yd[1] = {4};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    cr_assert_geq(H5Pset_chunk(dcpl, 2, xd), 0);
    cr_assert_geq(H5Pset_filter(dcpl, 32000, H5Z_FLAG_OPTIONAL, 0, NULL), 0);
    hid_t sx = H5Screate_simple(2, xd, NULL);
    hid_t dx = H5Dcreate2(f, "/train/x", H5T_IEEE_F32LE, sx, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(dx, 0);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    hsize_t off[2] = {0, 0};
    cr_assert_geq(H5Dwrite_chunk(dx, H5P_DEFAULT, 0, off, sizeof x, x), 0);
    H5Dclose(dx);
    H5Sclose(sx);
    H5Pclose(dcpl);
    int y[4] = {0, 1, 0, 1};
    h5_array(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path,
                "/train/x is compressed with filter 'lzf' (HDF5 filter id 32000), which this "
                "HDF5 library does not have; rewrite the file with gzip");
    cr_assert_null(got);
}

Test(data_reject, a_directory_is_called_a_directory)
{
    char path[512];
    dp_dataset *got = NULL;
    tmp_path(path, sizeof path, "adir.h5");
    cr_assert_eq(mkdir(path, 0755), 0);
    expect_fail(dp_dataset_load(path, &got), path, "is a directory; expected a dataset file");
    cr_assert_null(got);
    rmdir(path);
}

Test(data_reject, negative_label_when_inferring)
{
    char path[512];
    dp_dataset *got = NULL;
    int ltr[3] = {0, 1, 1}, lte[3] = {1, -2, 0};
    hid_t f;
    tmp_path(path, sizeof path, "neg.h5");
    f = h5_create(path);
    h5_simple_split(f, "/train", 3, 2, 3, ltr);
    h5_simple_split(f, "/test", 3, 2, 3, lte);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "/test/y: label -2 at row 1");
}

Test(data_reject, one_dimensional_x)
{
    char path[512];
    dp_dataset *got = NULL;
    float x[4] = {1, 2, 3, 4};
    int y[4] = {0, 1, 0, 1};
    hsize_t d[1] = {4};
    hid_t f;
    tmp_path(path, sizeof path, "x1d.h5");
    f = h5_create(path);
    h5_group(f, "/train");
    h5_array(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, d, x);
    h5_array(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, d, y);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "x must be [n, features...]");
}

Test(data_reject, format_version_2)
{
    char path[512];
    dp_dataset *got = NULL;
    hid_t f;
    tmp_path(path, sizeof path, "v2.h5");
    f = h5_create(path);
    h5_attr_int(f, "format_version", 2);
    h5_simple_split(f, "/train", 3, 2, 3, NULL);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "format_version 2");
}

Test(data_reject, wrong_format_string)
{
    char path[512];
    dp_dataset *got = NULL;
    hid_t f;
    tmp_path(path, sizeof path, "fmt.h5");
    f = h5_create(path);
    h5_attr_vlen_string(f, "format", "dptrain-checkpoint");
    h5_simple_split(f, "/train", 3, 2, 3, NULL);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "dptrain-checkpoint");
}

Test(data_reject, train_test_feature_mismatch)
{
    char path[512];
    dp_dataset *got = NULL;
    hid_t f;
    tmp_path(path, sizeof path, "feat.h5");
    f = h5_create(path);
    h5_simple_split(f, "/train", 3, 2, 3, NULL);
    h5_simple_split(f, "/test", 3, 4, 3, NULL);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "/test/x has shape [3, 4]");
}

Test(data_reject, classes_with_float_y)
{
    char path[512];
    dp_dataset *got = NULL;
    float x[4] = {1, 2, 3, 4}, y[2] = {0.5f, 1.5f};
    hsize_t xd[2] = {2, 2}, yd[1] = {2};
    hid_t f;
    tmp_path(path, sizeof path, "ncfloat.h5");
    f = h5_create(path);
    h5_attr_int(f, "num_classes", 3);
    h5_group(f, "/train");
    h5_array(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x);
    h5_array(f, "/train/y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, yd, y);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "num_classes is 3");
}

Test(data_reject, nan_in_x)
{
    char path[512];
    dp_dataset *got = NULL;
    float x[4] = {1, 2, NAN, 4};
    int y[2] = {0, 1};
    hsize_t xd[2] = {2, 2}, yd[1] = {2};
    hid_t f;
    tmp_path(path, sizeof path, "nan.h5");
    f = h5_create(path);
    h5_group(f, "/train");
    h5_array(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, xd, x);
    h5_array(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "row 1, feature 0 is not finite");
}

/* Data a file declares but never stored is refused before anything is allocated (HDF5 would
 * hand out fill values: found by tests/fuzz/fuzz_dataset.c; a 3 KB file declaring x
 * [2e8, 3] made dptrain train fill gigabytes): contiguous data never written, chunked data
 * with chunks missing, and a y never written. */
Test(data_reject, declared_but_never_stored)
{
    char path[512];
    dp_dataset *got = NULL;
    float x[30] = {0}, x8[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int y[4] = {0, 1, 0, 1};
    hsize_t xd[2] = {1000, 3}, yd[1] = {1000}, cd[2] = {10, 3}, x4[2] = {4, 2}, y4[1] = {4};
    hsize_t start[2] = {0, 0};
    hid_t f, s, d, dcpl, ms;
    tmp_path(path, sizeof path, "unstored.h5");

    f = h5_create(path); /* contiguous, never written */
    h5_group(f, "/train");
    s = H5Screate_simple(2, xd, NULL);
    d = H5Dcreate2(f, "/train/x", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    H5Dclose(d);
    H5Sclose(s);
    s = H5Screate_simple(1, yd, NULL);
    d = H5Dcreate2(f, "/train/y", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(s);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path,
                "/train/x has shape [1000, 3] but the file stores 0 bytes");
    cr_assert_null(got);

    f = h5_create(path); /* chunked: 1 of 100 chunks written */
    h5_group(f, "/train");
    s = H5Screate_simple(2, xd, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    cr_assert_geq(H5Pset_chunk(dcpl, 2, cd), 0);
    d = H5Dcreate2(f, "/train/x", H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    ms = H5Screate_simple(2, cd, NULL);
    cr_assert_geq(H5Sselect_hyperslab(s, H5S_SELECT_SET, start, NULL, cd, NULL), 0);
    cr_assert_geq(H5Dwrite(d, H5T_NATIVE_FLOAT, ms, s, H5P_DEFAULT, x), 0);
    H5Sclose(ms);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(s);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "the file stores 1 of its 100 chunks");
    cr_assert_null(got);

    f = h5_create(path); /* x fine, y never written */
    h5_group(f, "/train");
    h5_array(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, x4, x8);
    s = H5Screate_simple(1, y4, NULL);
    d = H5Dcreate2(f, "/train/y", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(s);
    cr_assert_geq(H5Fclose(f), 0);
    expect_fail(dp_dataset_load(path, &got), path, "/train/y has shape [4] but the file stores 0");
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT); /* written: it loads */
    d = H5Dopen2(f, "/train/y", H5P_DEFAULT);
    cr_assert_geq(H5Dwrite(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, y), 0);
    H5Dclose(d);
    cr_assert_geq(H5Fclose(f), 0);
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    dp_dataset_free(&got);
    remove(path);
}

/* --- IDX ---------------------------------------------------------------------------------- */

static void idx_roundtrip(bool gz, const char *tag)
{
    char ti[512], tl[512], ei[512], el[512], out[512], name[64];
    dp_dataset *got = NULL;
    int rank;
    hsize_t dims[4];
    const size_t ntr = 7, nte = 4, rows = 3, cols = 5;
    snprintf(name, sizeof name, "%s_ti", tag);
    tmp_path(ti, sizeof ti, name);
    snprintf(name, sizeof name, "%s_tl", tag);
    tmp_path(tl, sizeof tl, name);
    snprintf(name, sizeof name, "%s_ei", tag);
    tmp_path(ei, sizeof ei, name);
    snprintf(name, sizeof name, "%s_el", tag);
    tmp_path(el, sizeof el, name);
    snprintf(name, sizeof name, "%s.h5", tag);
    tmp_path(out, sizeof out, name);
    write_idx_images(ti, 0x803, ntr, rows, cols, SIZE_MAX, gz);
    write_idx_labels(tl, ntr, gz);
    write_idx_images(ei, 0x803, nte, rows, cols, SIZE_MAX, gz);
    write_idx_labels(el, nte, gz);
    cr_assert_eq(dp_convert_idx(ti, tl, ei, el, out), DP_OK, "%s", dp_errmsg());

    h5_dims(out, "/train/x", &rank, dims);
    cr_assert(rank == 3 && dims[0] == ntr && dims[1] == rows && dims[2] == cols,
              "x stored as rank %d", rank);
    h5_dims(out, "/test/x", &rank, dims);
    cr_assert(rank == 3 && dims[0] == nte && dims[1] == rows && dims[2] == cols);

    cr_assert_eq(dp_dataset_load(out, &got), DP_OK, "%s", dp_errmsg());
    /* train labels (i*3)%10 for i<7: 0,3,6,9,2,5,8 -> 10 classes */
    cr_assert_eq(got->n_classes, 10);
    cr_assert_eq(got->train.n, ntr);
    cr_assert_eq(got->test.n, nte);
    cr_assert_eq(got->train.n_features, (int)(rows * cols));
    cr_assert_not_null(got->train.x_u8);
    cr_assert_float_eq(got->train.x_scale, 1.0f / 255.0f, 1e-9f);
    cr_assert_eq(got->train.x_offset, 0.0f);
    for (size_t i = 0; i < ntr; i++) {
        cr_assert_eq(got->train.labels[i], (int32_t)((i * 3) % 10));
        for (size_t r = 0; r < rows; r++) {
            for (size_t c = 0; c < cols; c++) {
                cr_assert_eq(got->train.x_u8[(i * rows + r) * cols + c],
                             idx_pixel(i, r, c, rows, cols), "pixel %zu,%zu,%zu", i, r, c);
            }
        }
    }
    for (size_t i = 0; i < nte; i++) {
        cr_assert_eq(got->test.labels[i], (int32_t)((i * 3) % 10));
        cr_assert_eq(got->test.x_u8[i * rows * cols + cols + 2], idx_pixel(i, 1, 2, rows, cols));
    }
    dp_dataset_free(&got);
}

Test(data_idx, roundtrip_plain) { idx_roundtrip(false, "idxplain"); }

Test(data_idx, roundtrip_gzip) { idx_roundtrip(true, "idxgz"); }

Test(data_idx, train_only_infers_classes)
{
    char ti[512], tl[512], out[512];
    dp_dataset *got = NULL;
    tmp_path(ti, sizeof ti, "only_ti");
    tmp_path(tl, sizeof tl, "only_tl");
    tmp_path(out, sizeof out, "only.h5");
    write_idx_images(ti, 0x803, 3, 2, 2, SIZE_MAX, false);
    write_idx_labels(tl, 3, false); /* labels 0, 3, 6 */
    cr_assert_eq(dp_convert_idx(ti, tl, NULL, NULL, out), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_load(out, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->n_classes, 7);
    cr_assert_eq(got->test.n, 0);
    dp_dataset_free(&got);
}

Test(data_idx, truncated_images)
{
    char ti[512], tl[512], out[512];
    tmp_path(ti, sizeof ti, "trunc_ti");
    tmp_path(tl, sizeof tl, "trunc_tl");
    tmp_path(out, sizeof out, "trunc.h5");
    write_idx_images(ti, 0x803, 7, 3, 5, 7 * 15 - 8, false);
    write_idx_labels(tl, 7, false);
    expect_fail(dp_convert_idx(ti, tl, NULL, NULL, out), ti, "truncated");
    cr_assert(!file_exists(out), "no output on failure");
}

Test(data_idx, truncated_gzip_stream)
{
    char ti[512], tl[512], out[512];
    size_t n_bytes;
    unsigned char *bytes;
    tmp_path(ti, sizeof ti, "truncgz_ti");
    tmp_path(tl, sizeof tl, "truncgz_tl");
    tmp_path(out, sizeof out, "truncgz.h5");
    write_idx_images(ti, 0x803, 50, 10, 10, SIZE_MAX, true);
    bytes = read_whole(ti, &n_bytes);
    write_file(ti, bytes, n_bytes / 2, false); /* cut the compressed stream in half */
    free(bytes);
    write_idx_labels(tl, 50, false);
    expect_fail(dp_convert_idx(ti, tl, NULL, NULL, out), ti, "truncated");
}

Test(data_idx, truncated_header)
{
    char ti[512], tl[512], out[512];
    unsigned char hdr[10] = {0, 0, 8, 3, 0, 0, 0, 7, 0, 0};
    tmp_path(ti, sizeof ti, "trunch_ti");
    tmp_path(tl, sizeof tl, "trunch_tl");
    tmp_path(out, sizeof out, "trunch.h5");
    write_file(ti, hdr, sizeof hdr, false);
    write_idx_labels(tl, 7, false);
    expect_fail(dp_convert_idx(ti, tl, NULL, NULL, out), ti, "truncated header");
}

Test(data_idx, bad_magic)
{
    char ti[512], tl[512], out[512];
    tmp_path(ti, sizeof ti, "magic_ti");
    tmp_path(tl, sizeof tl, "magic_tl");
    tmp_path(out, sizeof out, "magic.h5");
    write_idx_images(ti, 0x00000000, 2, 2, 2, SIZE_MAX, false);
    write_idx_labels(tl, 2, false);
    expect_fail(dp_convert_idx(ti, tl, NULL, NULL, out), ti,
                "bad magic 0x00000000 (expected 0x00000803 for images)");
    /* labels given where images are expected */
    expect_fail(dp_convert_idx(tl, tl, NULL, NULL, out), tl, "bad magic 0x00000801");
    /* images given where labels are expected */
    write_idx_images(ti, 0x803, 2, 2, 2, SIZE_MAX, false);
    expect_fail(dp_convert_idx(ti, ti, NULL, NULL, out), ti,
                "bad magic 0x00000803 (expected 0x00000801 for labels)");
}

Test(data_idx, count_mismatch)
{
    char ti[512], tl[512], out[512];
    tmp_path(ti, sizeof ti, "count_ti");
    tmp_path(tl, sizeof tl, "count_tl");
    tmp_path(out, sizeof out, "count.h5");
    write_idx_images(ti, 0x803, 7, 2, 2, SIZE_MAX, false);
    write_idx_labels(tl, 6, false);
    expect_fail(dp_convert_idx(ti, tl, NULL, NULL, out), tl, "6 labels");
    expect_msg("7 images");
}

Test(data_idx, trailing_data)
{
    char tl[512], ti[512], out[512];
    unsigned char lab[8 + 4] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3, 4};
    tmp_path(ti, sizeof ti, "trail_ti");
    tmp_path(tl, sizeof tl, "trail_tl");
    tmp_path(out, sizeof out, "trail.h5");
    write_idx_images(ti, 0x803, 3, 2, 2, SIZE_MAX, false);
    write_file(tl, lab, sizeof lab, false);
    expect_fail(dp_convert_idx(ti, tl, NULL, NULL, out), tl, "continues after");
}

Test(data_idx, missing_file_and_half_test_pair)
{
    char ti[512], tl[512], out[512];
    tmp_path(ti, sizeof ti, "nofile_ti");
    tmp_path(tl, sizeof tl, "nofile_tl");
    tmp_path(out, sizeof out, "nofile.h5");
    write_idx_labels(tl, 3, false);
    expect_fail(dp_convert_idx(ti, tl, NULL, NULL, out), ti, "No such file");
    cr_assert_eq(dp_convert_idx(ti, tl, ti, NULL, out), DP_EINVAL);
    expect_msg("together");
}

/* --- CSV ---------------------------------------------------------------------------------- */

Test(data_csv, header_and_label_last)
{
    char in[512], out[512];
    dp_dataset *got = NULL;
    float want_x[3][3] = {{1.5f, 2, 3}, {-4, 5e-1f, 6}, {7, 8, 9.25f}};
    int want_l[3] = {2, 0, 1};
    tmp_path(in, sizeof in, "last.csv");
    tmp_path(out, sizeof out, "last.h5");
    write_text(in, "a,b,c,label\n1.5,2,3,2\n-4, 5e-1 ,6,0\r\n\n7,8,9.25,1\n", false);
    cr_assert_eq(dp_convert_csv(in, NULL, -1, 0, out), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_load(out, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->n_classes, 3);
    cr_assert_eq(got->train.n, 3);
    cr_assert_eq(got->train.n_features, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(got->train.labels[i], want_l[i]);
        for (int j = 0; j < 3; j++) {
            cr_assert_eq(got->train.x_f32[i * 3 + j], want_x[i][j], "row %d col %d", i, j);
        }
    }
    dp_dataset_free(&got);
}

Test(data_csv, label_first_no_header_with_test)
{
    char tr[512], te[512], out[512];
    dp_dataset *got = NULL;
    tmp_path(tr, sizeof tr, "first_tr.csv");
    tmp_path(te, sizeof te, "first_te.csv");
    tmp_path(out, sizeof out, "first.h5");
    write_text(tr, "1,10,20\n0,30,40\n", false);
    write_text(te, "label,f1,f2\n4,50,60\n", false);
    cr_assert_eq(dp_convert_csv(tr, te, 0, 0, out), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_load(out, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->n_classes, 5);
    cr_assert_eq(got->train.n, 2);
    cr_assert_eq(got->test.n, 1);
    cr_assert_eq(got->train.labels[0], 1);
    cr_assert_eq(got->train.labels[1], 0);
    cr_assert_eq(got->train.x_f32[0], 10.0f);
    cr_assert_eq(got->train.x_f32[3], 40.0f);
    cr_assert_eq(got->test.labels[0], 4);
    cr_assert_eq(got->test.x_f32[0], 50.0f);
    cr_assert_eq(got->test.x_f32[1], 60.0f);
    dp_dataset_free(&got);
}

Test(data_csv, regression_targets_gzip)
{
    char in[512], out[512];
    dp_dataset *got = NULL;
    tmp_path(in, sizeof in, "reg.csv.gz");
    tmp_path(out, sizeof out, "reg.h5");
    write_text(in, "x1,x2,y1,y2\n1,2,0.5,-0.5\n3,4,1.5,-1.5\n5,6,2.5,-2.5", true);
    cr_assert_eq(dp_convert_csv(in, NULL, -1, 2, out), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_load(out, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->n_classes, 0);
    cr_assert_eq(got->train.n, 3);
    cr_assert_eq(got->train.n_features, 2);
    cr_assert_eq(got->train.n_targets, 2);
    cr_assert_null(got->train.labels);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(got->train.x_f32[i * 2], (float)(2 * i + 1));
        cr_assert_eq(got->train.x_f32[i * 2 + 1], (float)(2 * i + 2));
        cr_assert_eq(got->train.values[i * 2], 0.5f + (float)i);
        cr_assert_eq(got->train.values[i * 2 + 1], -0.5f - (float)i);
    }
    dp_dataset_free(&got);
}

Test(data_csv, long_line)
{
    /* 3000 features: a line far longer than the reader's first buffer */
    char in[512], out[512];
    dp_dataset *got = NULL;
    size_t cap = 2 * 3001 * 8 + 16, len = 0;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    tmp_path(in, sizeof in, "long.csv");
    tmp_path(out, sizeof out, "long.h5");
    for (int row = 0; row < 2; row++) {
        for (int j = 0; j < 3000; j++) {
            len += (size_t)snprintf(text + len, cap - len, "%d,", j + row);
        }
        len += (size_t)snprintf(text + len, cap - len, "%d\n", row);
    }
    write_text(in, text, false);
    free(text);
    cr_assert_eq(dp_convert_csv(in, NULL, -1, 0, out), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_load(out, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->train.n_features, 3000);
    cr_assert_eq(got->train.x_f32[3000 + 2999], 3000.0f);
    cr_assert_eq(got->train.labels[1], 1);
    dp_dataset_free(&got);
}

/* Binary bytes are refused as not text, with the line and the byte, gzipped too; a field
 * quoted in a message never carries raw bytes (they could be terminal escapes). */
Test(data_csv, binary_bytes_are_not_text)
{
    char path[512], out[512];
    tmp_path(path, sizeof path, "bin.csv");
    tmp_path(out, sizeof out, "bin.h5");
    static const char nul[] = "1,2,3\n4,5,6\n7,8\0,9\n";
    write_file(path, nul, sizeof nul - 1, false);
    expect_fail(dp_convert_csv(path, NULL, -1, 0, out), path, ":3: a NUL byte at byte 15: not a text CSV file");
    write_file(path, nul, sizeof nul - 1, true);
    expect_fail(dp_convert_csv(path, NULL, -1, 0, out), path, ":3: a NUL byte");
    write_text(path, "1,2,3\n4,\x1b[2J5,6\n", false);
    expect_fail(dp_convert_csv(path, NULL, -1, 0, out), path, ":2: control byte 0x1b at column 3: not a text CSV file");
    write_text(path, "1,2,3\n4,\xc3\xa9x\xff,6\n", false);
    expect_fail(dp_convert_csv(path, NULL, -1, 0, out), path, ":2: column 2: '??x?' is not a number");
    cr_assert_neq(access(out, F_OK), 0, "nothing is written");
}

/* Feature rows alone (predict's CSV input): every column a feature, header optional. */
Test(data_csv, feature_rows)
{
    char path[512];
    dp_split s = {0};
    tmp_path(path, sizeof path, "feat.csv");
    write_text(path, "a,b,c\n1,2,3\n4,5,6.5\n", false);
    cr_assert_eq(dp_csv_read_features(path, &s), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(s.n, 2);
    cr_assert_eq(s.n_features, 3);
    cr_assert_null(s.labels);
    cr_assert_eq(s.x_f32[5], 6.5f);
    dp_split_clear(&s);
    write_text(path, "1\n2\n", false);
    cr_assert_eq(dp_csv_read_features(path, &s), DP_OK, "one column is a feature: %s", dp_errmsg());
    cr_assert_eq(s.n_features, 1);
    dp_split_clear(&s);
}

Test(data_csv, ragged_row)
{
    char in[512], out[512];
    tmp_path(in, sizeof in, "ragged.csv");
    tmp_path(out, sizeof out, "ragged.h5");
    write_text(in, "f1,f2,label\n1,2,0\n3,4,1\n5,6,7,1\n", false);
    expect_fail(dp_convert_csv(in, NULL, -1, 0, out), in, ":4: 4 columns, expected 3");
    cr_assert(!file_exists(out));
}

Test(data_csv, not_a_number)
{
    char in[512], out[512];
    tmp_path(in, sizeof in, "nan.csv");
    tmp_path(out, sizeof out, "nan.h5");
    write_text(in, "1,2,0\n3,abc,1\n", false);
    expect_fail(dp_convert_csv(in, NULL, -1, 0, out), in, ":2: column 2: 'abc' is not a number");
}

Test(data_csv, label_not_an_integer)
{
    char in[512], out[512];
    tmp_path(in, sizeof in, "lab.csv");
    tmp_path(out, sizeof out, "lab.h5");
    write_text(in, "1,2,0\n3,4,2.5\n", false);
    expect_fail(dp_convert_csv(in, NULL, -1, 0, out), in, "'2.5' is not a non-negative integer");
    write_text(in, "1,2,0\n3,4,-1\n", false);
    expect_fail(dp_convert_csv(in, NULL, -1, 0, out), in, "'-1' is not a non-negative integer");
}

Test(data_csv, test_columns_differ)
{
    char tr[512], te[512], out[512];
    tmp_path(tr, sizeof tr, "cols_tr.csv");
    tmp_path(te, sizeof te, "cols_te.csv");
    tmp_path(out, sizeof out, "cols.h5");
    write_text(tr, "1,2,0\n", false);
    write_text(te, "1,2,3,0\n", false);
    expect_fail(dp_convert_csv(tr, te, -1, 0, out), te, "4 columns, expected 3");
}

Test(data_csv, empty_and_missing)
{
    char in[512], out[512];
    tmp_path(in, sizeof in, "empty.csv");
    tmp_path(out, sizeof out, "empty.h5");
    write_text(in, "a,b,c\n\n", false);
    expect_fail(dp_convert_csv(in, NULL, -1, 0, out), in, "no data rows");
    tmp_path(in, sizeof in, "missing.csv");
    expect_fail(dp_convert_csv(in, NULL, -1, 0, out), in, "No such file");
}

Test(data_csv, label_col_out_of_range)
{
    char in[512], out[512];
    tmp_path(in, sizeof in, "lc.csv");
    tmp_path(out, sizeof out, "lc.h5");
    write_text(in, "1,2,0\n", false);
    expect_fail(dp_convert_csv(in, NULL, 3, 0, out), in, "label column 3");
}

/* --- synthetic generators ----------------------------------------------------------------- */

Test(data_synth, spirals_shape_balance_determinism)
{
    dp_dataset *a = NULL, *b = NULL, *c = NULL;
    int counts[3] = {0};
    cr_assert_eq(dp_synth_spirals(300, 90, 3, 0.0f, 5, &a), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(a->n_classes, 3);
    cr_assert_eq(a->train.n, 300);
    cr_assert_eq(a->test.n, 90);
    cr_assert_eq(a->train.n_features, 2);
    cr_assert_not_null(a->train.x_f32);
    cr_assert_not_null(a->train.labels);
    cr_assert_null(a->train.values);
    for (size_t i = 0; i < 300; i++) {
        float x0 = a->train.x_f32[2 * i], x1 = a->train.x_f32[2 * i + 1];
        float r = sqrtf(x0 * x0 + x1 * x1);
        cr_assert_eq(a->train.labels[i], (int)(i % 3));
        counts[a->train.labels[i]]++;
        cr_assert_leq(r, 1.0001f, "noise 0: radius %g beyond 1", (double)r);
        /* noise 0: the point lies on its arm: angle = c * 2pi/3 + 4 r (mod 2pi) */
        {
            double want = a->train.labels[i] * 2.0 * M_PI / 3.0 + 4.0 * r;
            double px = r * sin(want), py = r * cos(want);
            cr_assert_lt(fabs(px - x0) + fabs(py - x1), 1e-4, "row %zu off its arm", i);
        }
    }
    cr_assert(counts[0] == 100 && counts[1] == 100 && counts[2] == 100);
    cr_assert_eq(dp_synth_spirals(300, 90, 3, 0.0f, 5, &b), DP_OK);
    cr_assert_eq(dp_split_fingerprint(&a->train), dp_split_fingerprint(&b->train));
    cr_assert_eq(dp_split_fingerprint(&a->test), dp_split_fingerprint(&b->test));
    cr_assert_neq(memcmp(a->train.x_f32, a->test.x_f32, 90 * 2 * sizeof(float)), 0,
                  "test rows repeat train rows");
    cr_assert_eq(dp_synth_spirals(300, 90, 3, 0.0f, 6, &c), DP_OK);
    cr_assert_neq(dp_split_fingerprint(&a->train), dp_split_fingerprint(&c->train));
    dp_dataset_free(&a);
    dp_dataset_free(&b);
    dp_dataset_free(&c);
}

Test(data_synth, spirals_noise_has_right_spread)
{
    dp_dataset *a = NULL, *z = NULL;
    double ss = 0;
    cr_assert_eq(dp_synth_spirals(4000, 0, 4, 0.1f, 9, &a), DP_OK);
    cr_assert_eq(dp_synth_spirals(4000, 0, 4, 0.0f, 9, &z), DP_OK);
    for (size_t i = 0; i < 8000; i++) {
        double e = a->train.x_f32[i] - z->train.x_f32[i];
        ss += e * e;
    }
    cr_assert_float_eq(sqrt(ss / 8000), 0.1, 0.01);
    dp_dataset_free(&a);
    dp_dataset_free(&z);
}

Test(data_synth, line_fits_slope_and_intercept)
{
    dp_dataset *d = NULL;
    double sx = 0, sy = 0, sxx = 0, sxy = 0, n, slope, icpt, ss = 0;
    cr_assert_eq(dp_synth_line(5000, 100, 2.5f, -0.75f, 0.1f, 3, &d), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(d->n_classes, 0);
    cr_assert_eq(d->train.n_features, 1);
    cr_assert_eq(d->train.n_targets, 1);
    cr_assert_null(d->train.labels);
    cr_assert_eq(d->test.n, 100);
    n = (double)d->train.n;
    for (size_t i = 0; i < d->train.n; i++) {
        double x = d->train.x_f32[i], y = d->train.values[i];
        cr_assert(x >= -1.0 && x <= 1.0);
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
    icpt = (sy - slope * sx) / n;
    cr_assert_float_eq(slope, 2.5, 0.02, "slope %g", slope);
    cr_assert_float_eq(icpt, -0.75, 0.01, "intercept %g", icpt);
    for (size_t i = 0; i < d->train.n; i++) {
        double e = d->train.values[i] - (slope * d->train.x_f32[i] + icpt);
        ss += e * e;
    }
    cr_assert_float_eq(sqrt(ss / n), 0.1, 0.01, "residual std %g", sqrt(ss / n));
    dp_dataset_free(&d);
}

Test(data_synth, line_without_noise_is_exact)
{
    dp_dataset *d = NULL;
    cr_assert_eq(dp_synth_line(50, 0, -1.0f, 0.5f, 0.0f, 1, &d), DP_OK);
    for (size_t i = 0; i < 50; i++) {
        cr_assert_float_eq(d->train.values[i], -d->train.x_f32[i] + 0.5f, 1e-6f);
    }
    cr_assert_eq(d->test.n, 0);
    dp_dataset_free(&d);
}

Test(data_synth, blobs_cluster_around_centres)
{
    dp_dataset *d = NULL, *e = NULL, *f = NULL;
    const int nf = 5, k = 4;
    double mean[4][5] = {{0}};
    int counts[4] = {0};
    cr_assert_eq(dp_synth_blobs(400, 40, nf, k, 0.01f, 11, &d), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(d->n_classes, k);
    cr_assert_eq(d->train.n_features, nf);
    cr_assert_eq(d->test.n, 40);
    for (size_t i = 0; i < 400; i++) {
        int c = d->train.labels[i];
        cr_assert_eq(c, (int)(i % (size_t)k));
        counts[c]++;
        for (int j = 0; j < nf; j++) {
            mean[c][j] += d->train.x_f32[i * (size_t)nf + (size_t)j] / 100.0;
        }
    }
    for (int c = 0; c < k; c++) {
        cr_assert_eq(counts[c], 100);
        for (int j = 0; j < nf; j++) {
            cr_assert(mean[c][j] > -1.01 && mean[c][j] < 1.01, "centre outside [-1,1]");
        }
    }
    /* every train and test point is within 0.1 of its class mean (noise 0.01 in 5-D) */
    for (int s = 0; s < 2; s++) {
        const dp_split *sp = s ? &d->test : &d->train;
        for (size_t i = 0; i < sp->n; i++) {
            double dist = 0;
            for (int j = 0; j < nf; j++) {
                double t = sp->x_f32[i * (size_t)nf + (size_t)j] - mean[sp->labels[i]][j];
                dist += t * t;
            }
            cr_assert_lt(sqrt(dist), 0.1, "split %d row %zu far from its centre", s, i);
        }
    }
    cr_assert_eq(dp_synth_blobs(400, 40, nf, k, 0.01f, 11, &e), DP_OK);
    cr_assert_eq(dp_split_fingerprint(&d->train), dp_split_fingerprint(&e->train));
    cr_assert_eq(dp_synth_blobs(400, 40, nf, k, 0.01f, 12, &f), DP_OK);
    cr_assert_neq(dp_split_fingerprint(&d->train), dp_split_fingerprint(&f->train));
    dp_dataset_free(&d);
    dp_dataset_free(&e);
    dp_dataset_free(&f);
}

Test(data_synth, saved_and_loaded_unchanged)
{
    char path[512];
    dp_dataset *d = NULL, *got = NULL;
    tmp_path(path, sizeof path, "synth.h5");
    cr_assert_eq(dp_synth_blobs(64, 16, 3, 3, 0.5f, 1, &d), DP_OK);
    cr_assert_eq(dp_dataset_save(path, d), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_dataset_load(path, &got), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(got->n_classes, 3);
    expect_split_equal(&d->train, &got->train);
    expect_split_equal(&d->test, &got->test);
    dp_dataset_free(&d);
    dp_dataset_free(&got);
}

Test(data_synth, bad_arguments)
{
    dp_dataset *d = NULL;
    cr_assert_eq(dp_synth_spirals(10, 0, 1, 0.1f, 1, &d), DP_EINVAL);
    expect_msg("classes");
    cr_assert_null(d);
    cr_assert_eq(dp_synth_blobs(10, 0, 0, 2, 0.1f, 1, &d), DP_EINVAL);
    expect_msg("feature");
    cr_assert_eq(dp_synth_line(0, 0, 1, 0, 0.1f, 1, &d), DP_EINVAL);
    expect_msg("row");
    cr_assert_eq(dp_synth_line(10, 0, 1, 0, -1.0f, 1, &d), DP_EINVAL);
    expect_msg("noise");
    cr_assert_null(d);
}

/* dp_dataset_probe gives the bytes dp_dataset_load allocates; dp_dataset_load_at reads the
 * same data into the caller's memory and leaves it there on free; too little room is
 * refused. Classification (uint8 x, labels) with a test split, and regression (float x, 2
 * targets) without one. */
Test(data_h5, probe_and_load_at_the_callers_memory)
{
    char path[512];
    dp_dataset *blobs = NULL, *line = NULL;
    cr_assert_eq(dp_synth_blobs(300, 40, 5, 3, 0.5f, 2, &blobs), DP_OK);
    cr_assert_eq(dp_synth_line(120, 0, 2.0f, 1.0f, 0.1f, 4, &line), DP_OK);
    const dp_dataset *ds[2] = {blobs, line};
    for (int k = 0; k < 2; k++) {
        tmp_path(path, sizeof path, k ? "probe_line.h5" : "probe_blobs.h5");
        cr_assert_eq(dp_dataset_save(path, ds[k]), DP_OK, "%s", dp_errmsg());
        dp_dataset *ref = NULL, *at = NULL;
        cr_assert_eq(dp_dataset_load(path, &ref), DP_OK, "%s", dp_errmsg());
        size_t bytes[4];
        cr_assert_eq(dp_dataset_probe(path, bytes), DP_OK, "%s", dp_errmsg());
        const dp_split *sp[2] = {&ref->train, &ref->test};
        for (int s = 0; s < 2; s++) {
            const size_t xb = sp[s]->x_u8 ? sp[s]->n * (size_t)sp[s]->n_features
                                          : sp[s]->n * (size_t)sp[s]->n_features * sizeof(float);
            const size_t yb = sp[s]->labels ? sp[s]->n * sizeof(int32_t)
                                            : sp[s]->n * (size_t)sp[s]->n_targets * sizeof(float);
            cr_assert_eq(bytes[2 * s], sp[s]->n ? xb : 0, "dataset %d split %d x", k, s);
            cr_assert_eq(bytes[2 * s + 1], sp[s]->n ? yb : 0, "dataset %d split %d y", k, s);
        }
        void *dst[4];
        char *mem = malloc(bytes[0] + bytes[1] + bytes[2] + bytes[3] + 4 * 64);
        cr_assert(mem);
        size_t o = 0;
        for (int i = 0; i < 4; i++) {
            dst[i] = mem + o; /* aligned for the arrays' types, apart from each other */
            o += (bytes[i] / 64 + 1) * 64;
        }
        cr_assert_eq(dp_dataset_load_at(path, dst, bytes, &at), DP_OK, "%s", dp_errmsg());
        cr_assert(at->shared);
        cr_assert_eq(at->n_classes, ref->n_classes);
        const dp_split *ap[2] = {&at->train, &at->test};
        for (int s = 0; s < 2; s++) {
            cr_assert_eq(ap[s]->n, sp[s]->n);
            if (!sp[s]->n) {
                continue;
            }
            const void *ax = ap[s]->x_u8 ? (const void *)ap[s]->x_u8 : (const void *)ap[s]->x_f32;
            const void *ay = ap[s]->labels ? (const void *)ap[s]->labels : (const void *)ap[s]->values;
            const void *rx = sp[s]->x_u8 ? (const void *)sp[s]->x_u8 : (const void *)sp[s]->x_f32;
            const void *ry = sp[s]->labels ? (const void *)sp[s]->labels : (const void *)sp[s]->values;
            cr_assert_eq(ax, dst[2 * s], "x read elsewhere");
            cr_assert_eq(ay, dst[2 * s + 1], "y read elsewhere");
            cr_assert_eq(memcmp(ax, rx, bytes[2 * s]), 0);
            cr_assert_eq(memcmp(ay, ry, bytes[2 * s + 1]), 0);
        }
        dp_dataset_free(&at); /* the arrays are the caller's: freeing mem below is the test */
        size_t small[4] = {bytes[0] - 1, bytes[1], bytes[2], bytes[3]};
        cr_assert_neq(dp_dataset_load_at(path, dst, small, &at), DP_OK);
        cr_assert(strstr(dp_errmsg(), "changed while being read"), "%s", dp_errmsg());
        cr_assert_null(at);
        free(mem);
        dp_dataset_free(&ref);
    }
    dp_dataset_free(&blobs);
    dp_dataset_free(&line);
}
