/* test_ckpt.c: checkpoint files: every field of the training state and the metadata survives
 * a save and a load unchanged; damaged, truncated and future files are refused before HDF5
 * reads them; listing sorts by step; pruning keeps the newest and removes stale temporary
 * files. */
#include "dptrain/ckpt.h"
#include "dptrain/err.h"
#include "dptrain/io.h"
#include "testutil.h"
#include "io/h5util.h"

#include <criterion/criterion.h>
#include <hdf5.h>
#include <zlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static dp_model *small_model(bool bn)
{
    dp_model_cfg mc = {.n_layers = 2, .sizes = {3, 4, 2}, .act = {DP_ACT_TANH, DP_ACT_IDENTITY},
                       .init = DP_INIT_XAVIER_UNIFORM, .seed = 7, .max_batch = 4};
    mc.batchnorm[0] = bn;
    mc.dropout[0] = 0.25f;
    dp_model *m = NULL;
    cr_assert_eq(dp_model_create(&mc, &m), DP_OK, "%s", dp_errmsg());
    tfill(dp_model_params(m), dp_model_n_params(m), -1.0f, 1.0f, 11);
    tfill(dp_model_buffers(m), dp_model_n_buffers(m), 0.5f, 1.5f, 12);
    return m;
}

/* A state with a distinct value in every field. */
static void odd_state(dp_train_state *st, const dp_model *m)
{
    dp_optim_cfg opt;
    dp_optim_defaults(DP_OPT_ADAM, &opt);
    opt.amsgrad = true;
    opt.lr = 0.0123f;
    opt.weight_decay = 0.001f;
    cr_assert_eq(dp_train_state_init(st, &opt, dp_model_n_params(m), dp_model_n_buffers(m),
                                     0xfeedbeefcafe1234ULL, 5, true), DP_OK);
    cr_assert_eq(st->n_slots, 3);
    for (int s = 0; s < st->n_slots; s++) {
        tfill(st->slots[s], st->n_params, 0.0f, 2.0f, 100 + (uint64_t)s);
    }
    tfill(st->best_params, st->n_params, -3.0f, 3.0f, 200);
    tfill(st->best_buffers, st->n_buffers, 0.0f, 1.0f, 201);
    st->epoch = 3;
    st->next_batch = 7;
    st->step = 3 * 11 + 7;
    st->loss_sum = 12.345678901234567;
    st->correct_sum = 321.0;
    st->epoch_seconds = 0.75;
    st->seen = 350;
    st->train_seconds = 9.5;
    st->lr = 0.00987654f;
    st->lr_factor = 0.25f;
    st->plateau_best = 0.4321;
    st->plateau_bad = 2;
    st->best_val = 0.55;
    st->bad_epochs = 1;
    st->best_epoch = 2;
    st->opt_scalar = 0.123456789;
    st->loss_ref = 2.718281828459045;
    for (int i = 0; i < 3; i++) {
        st->history[i] = (dp_epoch_record){.epoch = i + 1, .step = 11L * (i + 1), .lr = 0.01 / (i + 1),
                                           .train_loss = 1.0 / (i + 2), .train_accuracy = 0.5 + 0.1 * i,
                                           .val_loss = 0.9 - 0.1 * i, .val_accuracy = NAN,
                                           .test_loss = NAN, .test_accuracy = NAN,
                                           .samples_per_s = 1000.0 + i, .seconds = 0.5 + i};
    }
    st->n_history = 3;
}

static dp_ckpt_meta odd_meta(void)
{
    return (dp_ckpt_meta){.config_json = "{\"lr\":0.0123,\"seed\":1}", .data_path = "d.h5",
                          .train_fingerprint = 0x0123456789abcdefULL,
                          .test_fingerprint = 0xfedcba9876543210ULL, .train_rows = 400,
                          .test_rows = 50, .n_features = 3, .n_ranks = 3,
                          .program_version = "test"};
}

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/ckpt_%ld_%s", DP_TEST_TMPDIR, (long)getpid(), name);
}

static void same_floats(const float *a, const float *b, size_t n, const char *what)
{
    cr_assert(memcmp(a, b, n * sizeof *a) == 0, "%s differs after a round trip", what);
}

Test(ckpt, round_trip_keeps_every_field)
{
    char path[512];
    tmp_path(path, sizeof path, "rt.h5");
    dp_model *m = small_model(true), *m2 = NULL;
    dp_train_state st, back;
    dp_ckpt_meta meta = odd_meta(), mb;
    odd_state(&st, m);
    cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_OK, "%s", dp_errmsg());
    cr_assert(dp_ckpt_is_checkpoint(path));
    cr_assert_eq(dp_ckpt_verify(path), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(dp_ckpt_load(path, 4, &m2, &back, &mb), DP_OK, "%s", dp_errmsg());

    same_floats(dp_model_params(m), dp_model_params(m2), dp_model_n_params(m), "params");
    same_floats(dp_model_buffers(m), dp_model_buffers(m2), dp_model_n_buffers(m), "buffers");
    cr_assert_eq(dp_model_config(m2)->batchnorm[0], true);
    cr_assert_eq(dp_model_config(m2)->dropout[0], 0.25f);
    cr_assert_eq(back.seed, st.seed);
    cr_assert_eq(back.epoch, 3);
    cr_assert_eq(back.next_batch, 7);
    cr_assert_eq(back.step, 40);
    cr_assert_eq(back.finished, false);
    cr_assert_eq(back.loss_sum, st.loss_sum);
    cr_assert_eq(back.correct_sum, st.correct_sum);
    cr_assert_eq(back.epoch_seconds, st.epoch_seconds);
    cr_assert_eq(back.seen, st.seen);
    cr_assert_eq(back.train_seconds, st.train_seconds);
    cr_assert_eq(back.lr, st.lr);
    cr_assert_eq(back.lr_factor, st.lr_factor);
    cr_assert_eq(back.plateau_best, st.plateau_best);
    cr_assert_eq(back.plateau_bad, st.plateau_bad);
    cr_assert_eq(back.best_val, st.best_val);
    cr_assert_eq(back.bad_epochs, st.bad_epochs);
    cr_assert_eq(back.best_epoch, st.best_epoch);
    cr_assert_eq(back.stopped_early, st.stopped_early);
    cr_assert_eq(back.opt_scalar, st.opt_scalar);
    cr_assert_eq(back.loss_ref, st.loss_ref);
    cr_assert_eq(back.opt.kind, DP_OPT_ADAM);
    cr_assert_eq(back.opt.amsgrad, true);
    cr_assert_eq(back.opt.lr, 0.0123f);
    cr_assert_eq(back.opt.weight_decay, 0.001f);
    cr_assert_eq(back.opt.beta2, st.opt.beta2);
    cr_assert_eq(back.n_slots, 3);
    for (int s = 0; s < 3; s++) {
        same_floats(st.slots[s], back.slots[s], st.n_params, dp_optim_slot_name(&st.opt, s));
    }
    cr_assert_not_null(back.best_params);
    same_floats(st.best_params, back.best_params, st.n_params, "best_params");
    same_floats(st.best_buffers, back.best_buffers, st.n_buffers, "best_buffers");
    cr_assert_eq(back.n_history, 3);
    for (int i = 0; i < 3; i++) {
        const dp_epoch_record *a = &st.history[i], *b = &back.history[i];
        cr_assert(a->epoch == b->epoch && a->step == b->step && a->lr == b->lr &&
                  a->train_loss == b->train_loss && a->train_accuracy == b->train_accuracy &&
                  a->val_loss == b->val_loss && isnan(b->val_accuracy) && isnan(b->test_loss) &&
                  a->samples_per_s == b->samples_per_s && a->seconds == b->seconds,
                  "history row %d differs", i);
    }
    cr_assert_str_eq(mb.config_json, meta.config_json);
    cr_assert_str_eq(mb.data_path, "d.h5");
    cr_assert_str_eq(mb.program_version, "test");
    cr_assert_eq(mb.train_fingerprint, meta.train_fingerprint);
    cr_assert_eq(mb.test_fingerprint, meta.test_fingerprint);
    cr_assert_eq(mb.train_rows, 400);
    cr_assert_eq(mb.test_rows, 50);
    cr_assert_eq(mb.n_features, 3);
    cr_assert_eq(mb.n_ranks, 3);
    cr_assert_eq(mb.format_version, DP_CKPT_FORMAT_VERSION);
    cr_assert_gt(mb.written_unix, 1700000000);

    /* The weights load as a model file too. */
    dp_model *m3 = NULL;
    cr_assert_eq(dp_model_load(path, 2, &m3, NULL), DP_OK, "%s", dp_errmsg());
    same_floats(dp_model_params(m), dp_model_params(m3), dp_model_n_params(m), "model view");
    dp_model_free(&m3);
    dp_model_free(&m2);
    dp_model_free(&m);
    dp_train_state_free(&st);
    dp_train_state_free(&back);
    dp_ckpt_meta_free(&mb);
    remove(path);
}

/* Numbers a checkpoint stores are range-checked before anything computes with them. */
Test(ckpt, an_impossible_position_is_refused)
{
    char path[512];
    tmp_path(path, sizeof path, "pos.h5");
    for (int k = 0; k < 4; k++) {
        dp_model *m = small_model(false), *m2 = NULL;
        dp_train_state st, back;
        dp_ckpt_meta meta = odd_meta();
        odd_state(&st, m);
        const char *want = NULL;
        if (k == 0) {
            st.epoch = 2147483647;
            want = "/state epoch is 2147483647, impossible";
        } else if (k == 1) {
            st.next_batch = 401; /* odd_meta: 400 training rows */
            want = "/state next_batch is 401, impossible";
        } else if (k == 2) {
            st.step = 4L * 400 + 1; /* epoch 3: at most 4 x 400 steps */
            want = "/state step is 1601, impossible";
        } else {
            st.best_epoch = -3;
            want = "/state best_epoch is -3, impossible";
        }
        cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_OK, "%s", dp_errmsg());
        cr_assert_eq(dp_ckpt_load(path, 1, &m2, &back, NULL), DP_EFORMAT, "case %d", k);
        cr_assert(strstr(dp_errmsg(), want), "case %d: %s", k, dp_errmsg());
        cr_assert_null(m2);
        dp_model_free(&m);
        dp_train_state_free(&st);
    }
    remove(path);
}

Test(ckpt, refuses_non_finite_state)
{
    char path[512];
    tmp_path(path, sizeof path, "nan.h5");
    dp_model *m = small_model(false);
    dp_train_state st;
    dp_ckpt_meta meta = odd_meta();
    odd_state(&st, m);
    st.slots[1][3] = NAN;
    cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_ENONFINITE);
    cr_assert(access(path, F_OK) != 0, "nothing may be written");
    dp_model_free(&m);
    dp_train_state_free(&st);
}

/* A sharded run's slice of the optimizer state: dp_train_state_keep_slice keeps exactly the
 * parameters asked for (values checked against the whole arrays), refuses a slice it does
 * not hold, and a checkpoint of a slice is refused (the loop gathers the slices first). */
Test(ckpt, a_slice_of_the_state_is_kept_and_never_saved)
{
    char path[512];
    tmp_path(path, sizeof path, "slice.h5");
    dp_model *m = small_model(false);
    dp_train_state st;
    dp_ckpt_meta meta = odd_meta();
    odd_state(&st, m);
    const size_t n = st.n_params, off = n / 3, len = n / 2;
    float *whole[3];
    for (int s = 0; s < st.n_slots; s++) {
        whole[s] = malloc(n * sizeof(float));
        cr_assert_not_null(whole[s]);
        memcpy(whole[s], st.slots[s], n * sizeof(float));
    }
    cr_assert_eq(st.slot_off, 0);
    cr_assert_eq(st.slot_n, n);
    cr_assert_eq(dp_train_state_keep_slice(&st, off, len), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(st.slot_off, off);
    cr_assert_eq(st.slot_n, len);
    for (int s = 0; s < st.n_slots; s++) {
        cr_assert(memcmp(st.slots[s], whole[s] + off, len * sizeof(float)) == 0, "slot %d", s);
    }
    cr_assert_eq(dp_train_state_keep_slice(&st, off + 1, len), DP_EINVAL, "beyond the slice");
    cr_assert_eq(dp_train_state_keep_slice(&st, 0, 1), DP_EINVAL, "before the slice");
    cr_assert_eq(dp_train_state_keep_slice(&st, off + 2, 3), DP_OK, "%s", dp_errmsg());
    for (int s = 0; s < st.n_slots; s++) {
        cr_assert(memcmp(st.slots[s], whole[s] + off + 2, 3 * sizeof(float)) == 0, "slot %d", s);
    }
    cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_EINVAL);
    cr_assert(strstr(dp_errmsg(), "a shard"), "%s", dp_errmsg());
    cr_assert(access(path, F_OK) != 0, "nothing may be written");
    for (int s = 0; s < st.n_slots; s++) {
        free(whole[s]);
    }
    dp_model_free(&m);
    dp_train_state_free(&st);
}

static long file_size(const char *p)
{
    struct stat s;
    return stat(p, &s) == 0 ? (long)s.st_size : -1;
}

static void copy_file(const char *from, const char *to, long n)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    cr_assert(a && b);
    for (long i = 0; i < n; i++) {
        int ch = fgetc(a);
        cr_assert(ch != EOF);
        fputc(ch, b);
    }
    fclose(a);
    fclose(b);
}

static void poke(const char *p, long at, const char *bytes, size_t n)
{
    FILE *f = fopen(p, "r+b");
    cr_assert_not_null(f);
    fseek(f, at, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

Test(ckpt, damage_is_refused_before_hdf5_reads_it)
{
    char path[512], bad[512];
    tmp_path(path, sizeof path, "good.h5");
    tmp_path(bad, sizeof bad, "bad.h5");
    dp_model *m = small_model(false), *m2 = NULL;
    dp_train_state st, back;
    dp_ckpt_meta meta = odd_meta();
    odd_state(&st, m);
    cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_OK, "%s", dp_errmsg());
    long n = file_size(path);

    /* Every single flipped byte after the header changes the CRC. */
    for (long at = 512; at < n; at += n / 37) {
        copy_file(path, bad, n);
        FILE *f = fopen(bad, "r+b");
        fseek(f, at, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, at, SEEK_SET);
        fputc(ch ^ 0x5a, f);
        fclose(f);
        cr_assert_eq(dp_ckpt_load(bad, 1, &m2, &back, NULL), DP_EFORMAT, "byte %ld", at);
        cr_assert(strstr(dp_errmsg(), "CRC-32"), "%s", dp_errmsg());
    }
    copy_file(path, bad, n - 1);
    cr_assert_eq(dp_ckpt_verify(bad), DP_EFORMAT);
    cr_assert(strstr(dp_errmsg(), "truncated"), "%s", dp_errmsg());
    copy_file(path, bad, n);
    poke(bad, 19, "format_version 7", 16);
    cr_assert_eq(dp_ckpt_verify(bad), DP_EFORMAT);
    cr_assert(strstr(dp_errmsg(), "format version 7"), "%s", dp_errmsg());
    copy_file(path, bad, n);
    poke(bad, 0, "xptrain", 7);
    cr_assert(!dp_ckpt_is_checkpoint(bad));
    cr_assert_eq(dp_ckpt_verify(bad), DP_EFORMAT);
    cr_assert(strstr(dp_errmsg(), "not a dptrain checkpoint"), "%s", dp_errmsg());
    cr_assert_eq(dp_ckpt_verify(path), DP_OK, "the original is untouched");
    dp_model_free(&m);
    dp_train_state_free(&st);
    remove(path);
    remove(bad);
}

/* Puts a NaN at element i of a float dataset of a checkpoint, through HDF5, then writes the
 * header again as the checkpoint format documents it (length and zlib CRC-32 of the bytes
 * after the 512-byte header), so that only the NaN is wrong with the file. */
static void reseal(const char *p);

static void nan_into(const char *p, const char *dataset, size_t i)
{
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    hid_t ds = H5Dopen2(f, dataset, H5P_DEFAULT);
    cr_assert_geq(ds, 0, "no dataset %s", dataset);
    hid_t sp = H5Dget_space(ds);
    size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
    cr_assert_lt(i, n);
    float *v = malloc(n * sizeof *v);
    cr_assert_geq(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    v[i] = NAN;
    cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    free(v);
    H5Sclose(sp);
    H5Dclose(ds);
    cr_assert_geq(H5Fclose(f), 0);
    reseal(p);
}

/* Writes the checkpoint header again for the file as it now is (length, CRC-32 of the bytes
 * after the 512-byte header), as the checkpoint format documents it. */
static void reseal(const char *p)
{
    long len = file_size(p);
    FILE *fp = fopen(p, "rb");
    unsigned char *bytes = malloc((size_t)len);
    cr_assert_eq(fread(bytes, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    uLong crc = crc32(crc32(0L, Z_NULL, 0), bytes + 512, (uInt)(len - 512));
    free(bytes);
    char hdr[512] = {0};
    snprintf(hdr, sizeof hdr,
             "dptrain-checkpoint\nformat_version 1\nlength %ld\ncrc32 %08lx\n", len,
             (unsigned long)crc);
    poke(p, 0, hdr, sizeof hdr);
    cr_assert_eq(dp_ckpt_verify(p), DP_OK, "the resealed file must pass its checksum: %s",
                 dp_errmsg());
}

Test(ckpt, non_finite_tensors_with_a_valid_checksum_are_refused_at_load)
{
    static const struct {
        const char *dataset, *what;
        size_t i;
    } cases[] = {
        {"/layers/0/weight", "parameter 5 is nan", 5},
        {"/layers/1/bias", "parameter 33 is nan", 1}, /* 12 + 4, bn 8, 8 weights, bias 1 */
        {"/layers/0/bn_running_var", "batch-norm statistic", 2},
        {"/state/optimizer/exp_avg_sq", "optimizer state 3 is nan", 3},
        {"/state/best_params", "best_params 0 is nan", 0},
    };
    char path[512];
    tmp_path(path, sizeof path, "nanload.h5");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        dp_model *m = small_model(true), *m2 = NULL;
        dp_train_state st, back;
        dp_ckpt_meta meta = odd_meta();
        odd_state(&st, m);
        cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_OK, "%s", dp_errmsg());
        nan_into(path, cases[k].dataset, cases[k].i);
        cr_assert_eq(dp_ckpt_load(path, 1, &m2, &back, NULL), DP_EFORMAT, "%s", cases[k].dataset);
        cr_assert(strstr(dp_errmsg(), cases[k].what) && strstr(dp_errmsg(), "damaged"),
                  "%s: %s", cases[k].dataset, dp_errmsg());
        cr_assert_null(m2, "no model is handed out");
        dp_model_free(&m);
        dp_train_state_free(&st);
    }
    remove(path);
}

/* Temporary files of writers that are gone go; the ones of live writers, of this process
 * and of other targets stay. */
Test(ckpt, stale_temporaries_of_model_files_are_removed)
{
    char dir[512], p[700];
    snprintf(dir, sizeof dir, "%s/stale_%ld", DP_TEST_TMPDIR, (long)getpid());
    cr_assert_eq(mkdir(dir, 0755), 0);
    const char *names[] = {"model.h5.tmp.999999", "model.h5.tmp.1", "model.h5", "other.h5.tmp.999999",
                           "model.h5.tmp.x", NULL};
    for (int i = 0; names[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        FILE *f = fopen(p, "w");
        cr_assert_not_null(f);
        fclose(f);
    }
    char mine[64];
    snprintf(mine, sizeof mine, "model.h5.tmp.%ld", (long)getpid());
    snprintf(p, sizeof p, "%s/%s", dir, mine);
    fclose(fopen(p, "w"));
    cr_assert(dp_io_tmp_is_stale("model.h5.tmp.999999", "model.h5"));
    cr_assert(dp_io_tmp_is_stale("a.tmp.b.h5.tmp.999999", "a.tmp.b.h5"));
    cr_assert(!dp_io_tmp_is_stale("model.h5.tmp.1", "model.h5"), "pid 1 runs");
    cr_assert(!dp_io_tmp_is_stale(mine, "model.h5"), "this process is alive");
    cr_assert(!dp_io_tmp_is_stale("model.h5.tmp.999999", "model"), "another target");
    cr_assert(!dp_io_tmp_is_stale("model.h5.tmp.9x", NULL));
    snprintf(p, sizeof p, "%s/model.h5", dir);
    dp_io_remove_stale_tmp(p);
    const bool want[] = {false, true, true, true, true};
    for (int i = 0; names[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        cr_assert_eq(access(p, F_OK) == 0, want[i], "%s", names[i]);
        remove(p);
    }
    snprintf(p, sizeof p, "%s/%s", dir, mine);
    cr_assert_eq(access(p, F_OK), 0, "this process's own temporary stays");
    remove(p);
    rmdir(dir);
}

/* A checkpoint from before loss_ref existed (no such attribute) loads with loss_ref 0: the
 * explosion rule then takes its reference from the first step after the resume. */
Test(ckpt, a_checkpoint_without_loss_ref_loads)
{
    char path[512];
    tmp_path(path, sizeof path, "noref.h5");
    dp_model *m = small_model(false), *m2 = NULL;
    dp_train_state st, back;
    dp_ckpt_meta meta = odd_meta();
    odd_state(&st, m);
    cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_OK, "%s", dp_errmsg());
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    hid_t g = H5Gopen2(f, "/state", H5P_DEFAULT);
    cr_assert_geq(H5Adelete(g, "loss_ref"), 0);
    H5Gclose(g);
    H5Fclose(f);
    reseal(path);
    cr_assert_eq(dp_ckpt_load(path, 1, &m2, &back, NULL), DP_OK, "%s", dp_errmsg());
    cr_assert_eq(back.loss_ref, 0.0);
    cr_assert_eq(back.step, st.step);
    dp_model_free(&m);
    dp_model_free(&m2);
    dp_train_state_free(&st);
    dp_train_state_free(&back);
    remove(path);
}

Test(ckpt, list_sorts_by_step_and_prune_keeps_the_newest)
{
    char dir[512], p[1024];
    snprintf(dir, sizeof dir, "%s/ckdir_%ld", DP_TEST_TMPDIR, (long)getpid());
    mkdir(dir, 0777);
    const long steps[] = {40, 5, 1000, 120};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(dp_ckpt_path(dir, steps[i], p, sizeof p), DP_OK);
        FILE *f = fopen(p, "w");
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/ckpt-0000000007.h5.tmp.999999", dir); /* a dead writer's */
    fclose(fopen(p, "w"));
    snprintf(p, sizeof p, "%s/ckpt-12.h5", dir); /* not ours: wrong width */
    fclose(fopen(p, "w"));
    char **paths = NULL;
    long *got = NULL;
    int n = 0;
    cr_assert_eq(dp_ckpt_list(dir, &paths, &got, &n), DP_OK);
    cr_assert_eq(n, 4);
    cr_assert(got[0] == 5 && got[1] == 40 && got[2] == 120 && got[3] == 1000);
    cr_assert(strstr(paths[3], "ckpt-0000001000.h5"));
    dp_ckpt_list_free(paths, got, n);
    cr_assert_eq(dp_ckpt_prune(dir, 2), DP_OK);
    cr_assert_eq(dp_ckpt_list(dir, &paths, &got, &n), DP_OK);
    cr_assert(n == 2 && got[0] == 120 && got[1] == 1000);
    dp_ckpt_list_free(paths, got, n);
    snprintf(p, sizeof p, "%s/ckpt-0000000007.h5.tmp.999999", dir);
    cr_assert(access(p, F_OK) != 0, "stale temporary file removed");
    snprintf(p, sizeof p, "%s/ckpt-12.h5", dir);
    cr_assert(access(p, F_OK) == 0, "other files left alone");
    cr_assert_eq(dp_ckpt_list("/nonexistent/dir", &paths, &got, &n), DP_OK);
    cr_assert_eq(n, 0);
    dp_ckpt_list_free(paths, got, n);
}

/* A model file whose attributes promise a model far larger than its datasets hold (found by
 * tests/fuzz/fuzz_ckpt.c: 17 KB made dptrain info allocate and initialize 16 GB before it
 * found /layers/0/weight missing) is refused before the model is built; and a weight tensor
 * with no data stored in the file is refused rather than read as fill values. */
Test(ckpt, a_model_file_is_checked_against_its_datasets_before_it_is_built)
{
    char path[512];
    tmp_path(path, sizeof path, "promise.h5");
    dp_model *m = small_model(false), *m2 = NULL;
    cr_assert_eq(dp_model_save(m, path, NULL), DP_OK, "%s", dp_errmsg());
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    const int huge[3] = {3, 2000000000, 2}; /* 1.2e10 parameters: 48 GB */
    cr_assert_geq(H5Adelete(f, "sizes"), 0);
    cr_assert_eq(dp_h5_put_int_attr(f, path, "sizes", huge, 3), DP_OK);
    cr_assert_geq(H5Fclose(f), 0);
    cr_assert_eq(dp_model_load(path, 1, &m2, NULL), DP_EFORMAT, "%s", dp_errmsg());
    cr_assert(strstr(dp_errmsg(), "/layers/0/weight does not have the shape"), "%s",
              dp_errmsg());
    cr_assert_null(m2);

    cr_assert_eq(dp_model_save(m, path, NULL), DP_OK, "%s", dp_errmsg());
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    cr_assert_geq(H5Ldelete(f, "/layers/0/weight", H5P_DEFAULT), 0);
    hsize_t wd[2] = {4, 3};
    hid_t sp = H5Screate_simple(2, wd, NULL);
    hid_t ds = H5Dcreate2(f, "/layers/0/weight", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                          H5P_DEFAULT); /* never written: no storage */
    cr_assert_geq(ds, 0);
    H5Dclose(ds);
    H5Sclose(sp);
    cr_assert_geq(H5Fclose(f), 0);
    cr_assert_eq(dp_model_load(path, 1, &m2, NULL), DP_EFORMAT, "%s", dp_errmsg());
    cr_assert(strstr(dp_errmsg(), "/layers/0/weight holds no data"), "%s", dp_errmsg());
    cr_assert_null(m2);
    dp_model_free(&m);
    remove(path);
}

/* An epoch or step in /state/history outside the range of its integer field is refused (found
 * by tests/fuzz/fuzz_ckpt.c: epoch 2.2e307 was converted to int, undefined behaviour). */
Test(ckpt, a_history_row_out_of_range_is_refused)
{
    char path[512];
    tmp_path(path, sizeof path, "history.h5");
    dp_model *m = small_model(false), *m2 = NULL;
    dp_train_state st, back;
    dp_ckpt_meta meta = odd_meta();
    odd_state(&st, m);
    cr_assert_eq(dp_ckpt_save(path, m, &st, &meta), DP_OK, "%s", dp_errmsg());
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    hid_t ds = H5Dopen2(f, "/state/history", H5P_DEFAULT);
    cr_assert_geq(ds, 0);
    double rows[3][DP_EPOCH_RECORD_FIELDS];
    cr_assert_geq(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows), 0);
    rows[1][0] = 2.2e307; /* epoch */
    cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows), 0);
    H5Dclose(ds);
    cr_assert_geq(H5Fclose(f), 0);
    reseal(path);
    cr_assert_eq(dp_ckpt_load(path, 1, &m2, &back, NULL), DP_EFORMAT, "%s", dp_errmsg());
    cr_assert(strstr(dp_errmsg(), "/state/history row 1 has epoch 2.2e+307"), "%s",
              dp_errmsg());
    cr_assert_null(m2);
    dp_model_free(&m);
    dp_train_state_free(&st);
    remove(path);
}
