/* ckpt.c: checkpoints: a model file plus the training state, behind a checksummed user
 * block; atomic save, verify-then-load, listing and pruning of a checkpoint directory. */
#define _GNU_SOURCE
#include "dptrain/ckpt.h"

#include "dptrain/err.h"
#include "h5util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define CKPT_FORMAT "dptrain-checkpoint"
#define CKPT_USERBLOCK 512
#define CKPT_MAGIC "dptrain-checkpoint\n"

static const char *const history_columns =
    "epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,"
    "samples_per_s,seconds";

void dp_ckpt_meta_free(dp_ckpt_meta *meta)
{
    if (!meta) {
        return;
    }
    free(meta->config_json);
    free(meta->data_path);
    free(meta->program_version);
    meta->config_json = meta->data_path = meta->program_version = NULL;
}

/* --- the checksummed header ------------------------------------------------------------ */

/* CRC-32 (zlib) of bytes [from, to) of fd. */
static int crc_range(int fd, const char *path, off_t from, off_t to, uint32_t *out)
{
    static unsigned char buf[1 << 20];
    uLong crc = crc32(0L, Z_NULL, 0);
    for (off_t at = from; at < to;) {
        size_t want = (size_t)(to - at) < sizeof buf ? (size_t)(to - at) : sizeof buf;
        ssize_t got = pread(fd, buf, want, at);
        if (got <= 0) {
            return dp_err(DP_EIO, "%s: read failed at byte %lld (%s)", path, (long long)at,
                          got < 0 ? strerror(errno) : "unexpected end of file");
        }
        crc = crc32(crc, buf, (uInt)got);
        at += got;
    }
    *out = (uint32_t)crc;
    return DP_OK;
}

/* After HDF5 has closed the file: the header with the length and CRC of the rest. */
static int write_header(const char *tmp, void *ctx)
{
    (void)ctx;
    int rc = DP_OK;
    char hdr[CKPT_USERBLOCK];
    struct stat st;
    uint32_t crc = 0;
    int fd = open(tmp, O_RDWR);
    if (fd < 0) {
        return dp_err(DP_EIO, "%s: cannot reopen to write the checksum (%s)", tmp,
                      strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        DP_FAIL(DP_EIO, "%s: stat failed (%s)", tmp, strerror(errno));
    }
    DP_TRY(crc_range(fd, tmp, CKPT_USERBLOCK, st.st_size, &crc));
    memset(hdr, 0, sizeof hdr);
    snprintf(hdr, sizeof hdr,
             CKPT_MAGIC "format_version %d\nlength %lld\ncrc32 %08" PRIx32 "\n"
             "(the CRC-32 is zlib's, of bytes %d..length-1; the HDF5 file starts at byte %d)\n",
             DP_CKPT_FORMAT_VERSION, (long long)st.st_size, crc, CKPT_USERBLOCK,
             CKPT_USERBLOCK);
    if (pwrite(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
        DP_FAIL(DP_EIO, "%s: cannot write the checksum header (%s)", tmp, strerror(errno));
    }
done:
    close(fd);
    return rc;
}

bool dp_ckpt_is_checkpoint(const char *path)
{
    char hdr[sizeof CKPT_MAGIC];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return false;
    }
    ssize_t got = pread(fd, hdr, sizeof hdr - 1, 0);
    close(fd);
    return got == (ssize_t)sizeof hdr - 1 && memcmp(hdr, CKPT_MAGIC, sizeof hdr - 1) == 0;
}

int dp_ckpt_verify(const char *path)
{
    int rc = DP_OK;
    char hdr[CKPT_USERBLOCK + 1];
    struct stat st;
    int version = 0;
    long long length = 0;
    uint32_t want = 0, have = 0;
    if ((rc = dp_io_check_file(path, "checkpoint")) != DP_OK) {
        return rc;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return dp_err(DP_EIO, "%s: cannot open (%s)", path, strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        DP_FAIL(DP_EIO, "%s: stat failed (%s)", path, strerror(errno));
    }
    ssize_t got = pread(fd, hdr, CKPT_USERBLOCK, 0);
    if (got < (ssize_t)strlen(CKPT_MAGIC) || memcmp(hdr, CKPT_MAGIC, strlen(CKPT_MAGIC)) != 0) {
        DP_FAIL(DP_EFORMAT, "%s: not a dptrain checkpoint (no checkpoint header)", path);
    }
    hdr[got] = '\0';
    const char *p = hdr + strlen(CKPT_MAGIC);
    if (sscanf(p, "format_version %d\nlength %lld\ncrc32 %" SCNx32, &version, &length,
               &want) != 3) {
        DP_FAIL(DP_EFORMAT, "%s: damaged checkpoint header", path);
    }
    if (version > DP_CKPT_FORMAT_VERSION || version < 1) {
        DP_FAIL(DP_EFORMAT, "%s: checkpoint format version %d; this dptrain reads version %d "
                            "(written by a newer dptrain?)", path, version,
                DP_CKPT_FORMAT_VERSION);
    }
    if ((long long)st.st_size != length) {
        DP_FAIL(DP_EFORMAT, "%s: truncated or damaged checkpoint: %lld bytes, its header says "
                            "%lld", path, (long long)st.st_size, length);
    }
    DP_TRY(crc_range(fd, path, CKPT_USERBLOCK, st.st_size, &have));
    if (have != want) {
        DP_FAIL(DP_EFORMAT, "%s: damaged checkpoint: CRC-32 of the content is %08" PRIx32
                            ", its header says %08" PRIx32, path, have, want);
    }
done:
    close(fd);
    return rc;
}

/* --- attributes (typed get/put: the HDF5 layer, h5util.h) -------------------------------- */

static int put_int(hid_t o, const char *path, const char *name, int v)
{
    return dp_h5_put_int_attr(o, path, name, &v, 1);
}

static int get_bool(hid_t o, const char *path, const char *name, bool *v)
{
    int i = 0, rc = dp_h5_get_int_attr(o, path, name, &i, 1);
    *v = i != 0;
    return rc;
}


/* The scalar attributes of /state, with the C type of their dp_train_state field and the
 * file type it is stored as; one table for writing and reading, so they cannot drift. */
typedef enum { SF_U64, SF_SIZE, SF_LONG, SF_INT, SF_BOOL, SF_F64, SF_F32 } state_ftype;
#define SF(field, type) \
    {#field, type, offsetof(dp_train_state, field), sizeof(((dp_train_state *)0)->field), false}
/* A field added after format version 1's first files: absent in those, it keeps its fresh
 * state's value (loss_ref 0: the rule takes the first step after the resume). */
#define SF_ADDED(field, type) \
    {#field, type, offsetof(dp_train_state, field), sizeof(((dp_train_state *)0)->field), true}
static const struct {
    const char *name;
    state_ftype type;
    size_t offset, size;
    bool added;
} state_fields[] = {
    SF(seed, SF_U64),          SF(epoch, SF_INT),        SF(next_batch, SF_SIZE),
    SF(step, SF_LONG),         SF(finished, SF_BOOL),    SF(loss_sum, SF_F64),
    SF(correct_sum, SF_F64),   SF(epoch_seconds, SF_F64), SF(seen, SF_SIZE),
    SF(train_seconds, SF_F64), SF(lr, SF_F32),           SF(lr_factor, SF_F32),
    SF(plateau_best, SF_F64),  SF(plateau_bad, SF_INT),  SF(best_val, SF_F64),
    SF(bad_epochs, SF_INT),    SF(best_epoch, SF_INT),   SF(stopped_early, SF_BOOL),
    SF(n_params, SF_SIZE),     SF(n_buffers, SF_SIZE),   SF_ADDED(loss_ref, SF_F64),
};
#undef SF
#undef SF_ADDED
#define N_STATE_FIELDS (sizeof state_fields / sizeof state_fields[0])

/* Writes field i of st as its attribute: uint64 for seed and sizes, int64 for the step,
 * int32 for ints and flags, float64 / float32 for the rest. */
static int put_state_field(hid_t g, const char *path, size_t i, const dp_train_state *st)
{
    const void *f = (const char *)st + state_fields[i].offset;
    const char *name = state_fields[i].name;
    const uint64_t u = state_fields[i].type == SF_SIZE ? (uint64_t)*(const size_t *)f : 0;
    const int64_t l = state_fields[i].type == SF_LONG ? (int64_t)*(const long *)f : 0;
    switch (state_fields[i].type) {
    case SF_U64: return dp_h5_put_u64_attr(g, path, name, (const uint64_t *)f, 1);
    case SF_SIZE: return dp_h5_put_u64_attr(g, path, name, &u, 1);
    case SF_LONG: return dp_h5_put_i64_attr(g, path, name, &l, 1);
    case SF_INT: return dp_h5_put_int_attr(g, path, name, (const int *)f, 1);
    case SF_BOOL: return put_int(g, path, name, *(const bool *)f);
    case SF_F64: return dp_h5_put_f64_attr(g, path, name, (const double *)f, 1);
    default: return dp_h5_put_f32_attr(g, path, name, (const float *)f, 1);
    }
}

static int get_state_field(hid_t g, const char *path, size_t i, dp_train_state *st)
{
    void *f = (char *)st + state_fields[i].offset;
    const char *name = state_fields[i].name;
    uint64_t u = 0;
    int64_t l = 0;
    int rc = DP_OK;
    bool present = true;
    if (state_fields[i].added && (rc = dp_h5_has_attr(g, path, name, &present)) != DP_OK) {
        return rc;
    }
    if (!present) {
        return DP_OK;
    }
    switch (state_fields[i].type) {
    case SF_U64: return dp_h5_get_u64_attr(g, path, name, (uint64_t *)f, 1);
    case SF_SIZE:
        rc = dp_h5_get_u64_attr(g, path, name, &u, 1);
        *(size_t *)f = (size_t)u;
        return rc;
    case SF_LONG:
        rc = dp_h5_get_i64_attr(g, path, name, &l, 1);
        *(long *)f = (long)l;
        return rc;
    case SF_INT: return dp_h5_get_int_attr(g, path, name, (int *)f, 1);
    case SF_BOOL: return get_bool(g, path, name, (bool *)f);
    case SF_F64: return dp_h5_get_f64_attr(g, path, name, (double *)f, 1);
    default: return dp_h5_get_f32_attr(g, path, name, (float *)f, 1);
    }
}

/* --- save ------------------------------------------------------------------------------ */

static int write_state(hid_t f, const char *path, const dp_train_state *st)
{
    int rc = DP_OK;
    hid_t g = H5I_INVALID_HID, og = H5I_INVALID_HID, sp = H5I_INVALID_HID,
          ds = H5I_INVALID_HID;
    hsize_t np = st->n_params, nbuf = st->n_buffers;
    double *hist = NULL;
    DP_H5CHK(g = H5Gcreate2(f, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "creating group /state");
    for (size_t i = 0; i < N_STATE_FIELDS; i++) {
        DP_TRY(put_state_field(g, path, i, st));
    }

    /* Optimizer: name, every hyperparameter, scalar state and one dataset per slot, each
     * laid out like the flat parameter array. */
    DP_H5CHK(og = H5Gcreate2(g, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "creating group /state/optimizer");
    DP_TRY(dp_h5_put_str_attr(og, path, "name", dp_optim_name(st->opt.kind)));
    int n_hp = 0;
    const dp_optim_field *hp = dp_optim_fields(&n_hp);
    for (int i = 0; i < n_hp; i++) {
        const float *v = (const float *)((const char *)&st->opt + hp[i].offset);
        DP_TRY(dp_h5_put_f32_attr(og, path, hp[i].name, v, 1));
    }
    DP_TRY(put_int(og, path, "nesterov", st->opt.nesterov));
    DP_TRY(put_int(og, path, "centered", st->opt.centered));
    DP_TRY(put_int(og, path, "amsgrad", st->opt.amsgrad));
    DP_TRY(dp_h5_put_f64_attr(og, path, "scalar_state", &st->opt_scalar, 1));
    DP_TRY(put_int(og, path, "n_slots", st->n_slots));
    for (int s = 0; s < st->n_slots; s++) {
        const char *name = dp_optim_slot_name(&st->opt, s);
        DP_TRY(dp_h5_write_f32(og, path, name ? name : "slot", st->slots[s], 1, &np));
    }
    if (st->best_params) {
        DP_TRY(dp_h5_write_f32(g, path, "best_params", st->best_params, 1, &np));
        DP_TRY(dp_h5_write_f32(g, path, "best_buffers", st->best_buffers, 1, &nbuf));
    }

    /* The metrics log so far, one row per finished epoch. */
    hsize_t hd[2] = {(hsize_t)st->n_history, DP_EPOCH_RECORD_FIELDS};
    DP_CALLOC(hist, (size_t)st->n_history * DP_EPOCH_RECORD_FIELDS + 1);
    for (int i = 0; i < st->n_history; i++) {
        const dp_epoch_record *r = &st->history[i];
        double *row = hist + (size_t)i * DP_EPOCH_RECORD_FIELDS;
        row[0] = r->epoch;
        row[1] = (double)r->step;
        row[2] = r->lr;
        row[3] = r->train_loss;
        row[4] = r->train_accuracy;
        row[5] = r->val_loss;
        row[6] = r->val_accuracy;
        row[7] = r->test_loss;
        row[8] = r->test_accuracy;
        row[9] = r->samples_per_s;
        row[10] = r->seconds;
    }
    DP_H5CHK(sp = H5Screate_simple(2, hd, NULL), "creating the shape of /state/history");
    DP_H5CHK(ds = H5Dcreate2(g, "history", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT),
             "creating dataset /state/history");
    if (st->n_history > 0) {
        DP_H5CHK(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, hist),
                 "writing dataset /state/history");
    }
    DP_TRY(dp_h5_put_str_attr(ds, path, "columns", history_columns));
done:
    free(hist);
    rc = dp_h5_close(&ds, rc, path);
    rc = dp_h5_close(&sp, rc, path);
    rc = dp_h5_close(&og, rc, path);
    rc = dp_h5_close(&g, rc, path);
    return rc;
}

static int write_meta(hid_t f, const char *path, const dp_ckpt_meta *meta, int64_t now)
{
    int rc = DP_OK;
    hid_t g = H5I_INVALID_HID;
    DP_TRY(put_int(f, path, "checkpoint_format_version", DP_CKPT_FORMAT_VERSION));
    DP_TRY(dp_h5_put_str_attr(f, path, "program_version",
                              meta->program_version ? meta->program_version : "?"));
    DP_TRY(put_int(f, path, "n_ranks", meta->n_ranks));
    DP_TRY(dp_h5_put_i64_attr(f, path, "written_unix", &now, 1));
    DP_H5CHK(g = H5Gcreate2(f, "data", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             "creating group /data");
    DP_TRY(dp_h5_put_str_attr(g, path, "path", meta->data_path ? meta->data_path : ""));
    DP_TRY(dp_h5_put_u64_attr(g, path, "train_rows", &meta->train_rows, 1));
    DP_TRY(dp_h5_put_u64_attr(g, path, "test_rows", &meta->test_rows, 1));
    DP_TRY(dp_h5_put_u64_attr(g, path, "n_features", &meta->n_features, 1));
    DP_TRY(dp_h5_put_u64_attr(g, path, "train_fingerprint", &meta->train_fingerprint, 1));
    DP_TRY(dp_h5_put_u64_attr(g, path, "test_fingerprint", &meta->test_fingerprint, 1));
done:
    rc = dp_h5_close(&g, rc, path);
    return rc;
}

/* Test hook (dp_ckpt_test_pause): the K-th checkpoint write of this process stops half-way
 * (the model written, the state not) for an hour, so that a test can kill the job while a
 * write is in progress. */
static int g_pause_at = 0;

void dp_ckpt_test_pause(int k)
{
    g_pause_at = k;
}

static void test_pause(const char *tmp)
{
    static int writes = 0;
    writes++;
    if (g_pause_at > 0 && g_pause_at == writes) {
        fprintf(stderr, "dptrain: test hook: pausing inside the write of %s\n", tmp);
        fflush(stderr);
        sleep(3600);
    }
}

/* Every tensor a checkpoint holds is finite: parameters, batch-norm statistics, each
 * optimizer slot and the early-stopping copies. */
static int check_finite(const dp_model *m, const dp_train_state *st, const char *path,
                        dp_io_dir dir)
{
    int rc = DP_OK;
    DP_TRY(dp_io_model_check_finite(m, path, dir));
    for (int s = 0; s < st->n_slots; s++) {
        DP_TRY(dp_io_check_finite(st->slots[s], st->n_params, path, dir, "optimizer state"));
    }
    DP_TRY(dp_io_check_finite(st->best_params, st->n_params, path, dir, "best_params"));
    DP_TRY(dp_io_check_finite(st->best_buffers, st->n_buffers, path, dir, "best_buffers"));
done:
    return rc;
}

int dp_ckpt_save(const char *path, const dp_model *m, const dp_train_state *st,
                 const dp_ckpt_meta *meta)
{
    int rc = DP_OK;
    dp_h5_atomic a = DP_H5_ATOMIC_INIT; /* abort is safe before create */
    if (st->slot_off != 0 || st->slot_n != st->n_params) {
        /* Before anything reads the slots as whole arrays. */
        DP_FAIL(DP_EINVAL, "%s: the optimizer state holds parameters [%zu, %zu) of %zu only "
                           "(a shard): gather it first", path, st->slot_off,
                st->slot_off + st->slot_n, st->n_params);
    }
    DP_TRY(check_finite(m, st, path, DP_IO_WRITING));
    DP_TRY(dp_h5_atomic_create(&a, path, CKPT_USERBLOCK));
    DP_TRY(dp_io_model_write(a.f, path, m, meta->config_json, CKPT_FORMAT));
    DP_H5CHK(H5Fflush(a.f, H5F_SCOPE_GLOBAL), "flushing %s in memory", a.tmp);
    test_pause(a.tmp);
    DP_TRY(write_meta(a.f, path, meta, (int64_t)time(NULL)));
    DP_TRY(write_state(a.f, path, st));
    rc = dp_h5_atomic_commit(&a, write_header, NULL);
done:
    if (rc != DP_OK) {
        dp_h5_atomic_abort(&a);
    }
    return rc;
}

/* --- load ------------------------------------------------------------------------------ */

/* /state/optimizer's hyperparameters, switches and slot count, for optimizer `name`. */
static int read_optim(hid_t og, const char *path, const char *name, dp_optim_cfg *opt, int *ns)
{
    int rc = DP_OK, n_hp = 0, kind = dp_optim_parse(name);
    if (kind < 0) {
        return dp_err(DP_EFORMAT, "%s: /state/optimizer name '%s' is unknown", path, name);
    }
    opt->kind = (dp_optim_kind)kind;
    const dp_optim_field *hp = dp_optim_fields(&n_hp);
    for (int i = 0; i < n_hp; i++) {
        DP_TRY(dp_h5_get_f32_attr(og, path, hp[i].name, (float *)((char *)opt + hp[i].offset), 1));
    }
    DP_TRY(get_bool(og, path, "nesterov", &opt->nesterov));
    DP_TRY(get_bool(og, path, "centered", &opt->centered));
    DP_TRY(get_bool(og, path, "amsgrad", &opt->amsgrad));
    DP_TRY(dp_h5_get_int_attr(og, path, "n_slots", ns, 1));
done:
    return rc;
}

/* The metrics history: n rows of DP_EPOCH_RECORD_FIELDS doubles into st->history. */
static int history_from_rows(const double *hist, size_t n, const char *path, dp_train_state *st)
{
    for (size_t i = 0; i < n; i++) {
        const double *row = hist + i * DP_EPOCH_RECORD_FIELDS;
        /* epoch and step become integers: out of their range the conversion is undefined */
        if (!(row[0] >= 0.0 && row[0] <= INT_MAX) ||
            !(row[1] >= 0.0 && row[1] < (double)LONG_MAX)) {
            return dp_err(DP_EFORMAT, "%s: /state/history row %zu has epoch %g and step %g: "
                                      "not counts", path, i, row[0], row[1]);
        }
        st->history[i] = (dp_epoch_record){
            .epoch = (int)row[0], .step = (long)row[1], .lr = row[2],
            .train_loss = row[3], .train_accuracy = row[4],
            .val_loss = row[5], .val_accuracy = row[6],
            .test_loss = row[7], .test_accuracy = row[8],
            .samples_per_s = row[9], .seconds = row[10]};
    }
    st->n_history = (int)n;
    return DP_OK;
}

static int read_state(hid_t f, const char *path, const dp_model *m, dp_train_state *st)
{
    int rc = DP_OK;
    hid_t g = H5I_INVALID_HID, og = H5I_INVALID_HID, ds = H5I_INVALID_HID;
    char *name = NULL;
    double *hist = NULL;
    dp_optim_cfg opt = {0};
    dp_train_state sc = {0}; /* the scalar fields, read before the arrays are allocated */
    int ns = 0;
    if (H5Lexists(f, "state", H5P_DEFAULT) <= 0) {
        DP_FAIL(DP_EFORMAT, "%s: group /state is missing", path);
    }
    DP_H5CHK(g = H5Gopen2(f, "state", H5P_DEFAULT), "opening group /state");
    DP_H5CHK(og = H5Gopen2(g, "optimizer", H5P_DEFAULT), "opening group /state/optimizer");
    DP_TRY(dp_h5_get_str_attr(og, path, "name", &name));
    DP_TRY(read_optim(og, path, name, &opt, &ns));
    for (size_t i = 0; i < N_STATE_FIELDS; i++) {
        DP_TRY(get_state_field(g, path, i, &sc));
    }
    const size_t np = sc.n_params, nbuf = sc.n_buffers;
    if (m && (np != dp_model_n_params(m) || nbuf != dp_model_n_buffers(m))) {
        DP_FAIL(DP_EFORMAT, "%s: /state has %llu parameters and %llu buffers, the model %zu "
                            "and %zu", path, (unsigned long long)np, (unsigned long long)nbuf,
                dp_model_n_params(m), dp_model_n_buffers(m));
    }
    if (ns != dp_optim_n_slots(&opt)) {
        DP_FAIL(DP_EFORMAT, "%s: /state/optimizer has %d slots; %s with these settings has %d",
                path, ns, name, dp_optim_n_slots(&opt));
    }
    bool early = H5Lexists(g, "best_params", H5P_DEFAULT) > 0;
    hsize_t hd[H5S_MAX_RANK] = {0, 0};
    int hrank = 0;
    char hshape[64];
    DP_TRY(dp_h5_open_dataset(f, path, "/state/history", &ds, &hrank, hd));
    if (hrank != 2) {
        DP_FAIL(DP_EFORMAT, "%s: /state/history is not 2-D", path);
    }
    if (hd[1] != DP_EPOCH_RECORD_FIELDS || hd[0] > 100000000) {
        DP_FAIL(DP_EFORMAT, "%s: /state/history has shape [%llu, %llu], expected [n, %d]", path,
                (unsigned long long)hd[0], (unsigned long long)hd[1], DP_EPOCH_RECORD_FIELDS);
    }
    dp_h5_fmt_dims(hshape, sizeof hshape, hrank, hd);
    DP_TRY(dp_h5_check_stored(ds, path, "/state/history", hshape,
                              (size_t)hd[0] * DP_EPOCH_RECORD_FIELDS));
    DP_TRY(dp_train_state_init(st, &opt, np, nbuf, sc.seed, (int)hd[0], early));
    for (size_t i = 0; i < N_STATE_FIELDS; i++) {
        memcpy((char *)st + state_fields[i].offset, (const char *)&sc + state_fields[i].offset,
               state_fields[i].size);
    }
    DP_CALLOC(hist, (size_t)hd[0] * DP_EPOCH_RECORD_FIELDS + 1);
    if (hd[0] > 0) {
        DP_H5CHK(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, hist),
                 "reading dataset /state/history");
    }
    DP_TRY(history_from_rows(hist, (size_t)hd[0], path, st));
    for (int s = 0; s < ns; s++) {
        const char *sn = dp_optim_slot_name(&opt, s);
        hsize_t d1 = np;
        DP_TRY(dp_h5_read_f32(og, path, sn ? sn : "slot", st->slots[s], 1, &d1));
    }
    DP_TRY(dp_h5_get_f64_attr(og, path, "scalar_state", &st->opt_scalar, 1));
    if (early) {
        hsize_t d1 = np, d2 = nbuf;
        DP_TRY(dp_h5_read_f32(g, path, "best_params", st->best_params, 1, &d1));
        DP_TRY(dp_h5_read_f32(g, path, "best_buffers", st->best_buffers, 1, &d2));
    }
done:
    if (rc != DP_OK) {
        dp_train_state_free(st);
    }
    free(name);
    free(hist);
    rc = dp_h5_close(&ds, rc, path);
    rc = dp_h5_close(&og, rc, path);
    rc = dp_h5_close(&g, rc, path);
    return rc;
}

static int read_meta(hid_t f, const char *path, dp_ckpt_meta *meta)
{
    int rc = DP_OK;
    hid_t g = H5I_INVALID_HID;
    int64_t t = 0;
    memset(meta, 0, sizeof *meta);
    DP_TRY(dp_h5_get_int_attr(f, path, "checkpoint_format_version", &meta->format_version, 1));
    if (meta->format_version < 1 || meta->format_version > DP_CKPT_FORMAT_VERSION) {
        DP_FAIL(DP_EFORMAT, "%s: checkpoint format version %d; this dptrain reads version %d",
                path, meta->format_version, DP_CKPT_FORMAT_VERSION);
    }
    DP_TRY(dp_h5_get_str_attr(f, path, "program_version", &meta->program_version));
    DP_TRY(dp_h5_get_int_attr(f, path, "n_ranks", &meta->n_ranks, 1));
    DP_TRY(dp_h5_get_i64_attr(f, path, "written_unix", &t, 1));
    meta->written_unix = t;
    DP_TRY(dp_h5_get_str_attr(f, path, "config", &meta->config_json));
    if (H5Lexists(f, "data", H5P_DEFAULT) <= 0) {
        DP_FAIL(DP_EFORMAT, "%s: group /data is missing", path);
    }
    DP_H5CHK(g = H5Gopen2(f, "data", H5P_DEFAULT), "opening group /data");
    DP_TRY(dp_h5_get_str_attr(g, path, "path", &meta->data_path));
    DP_TRY(dp_h5_get_u64_attr(g, path, "train_rows", &meta->train_rows, 1));
    DP_TRY(dp_h5_get_u64_attr(g, path, "test_rows", &meta->test_rows, 1));
    DP_TRY(dp_h5_get_u64_attr(g, path, "n_features", &meta->n_features, 1));
    DP_TRY(dp_h5_get_u64_attr(g, path, "train_fingerprint", &meta->train_fingerprint, 1));
    DP_TRY(dp_h5_get_u64_attr(g, path, "test_fingerprint", &meta->test_fingerprint, 1));
done:
    rc = dp_h5_close(&g, rc, path);
    if (rc != DP_OK) {
        dp_ckpt_meta_free(meta);
    }
    return rc;
}

/* The position a checkpoint stores must be possible before anything computes with it: an epoch
 * within --epochs' range, a batch and a row count within the training rows, a step count
 * within what those epochs can hold, counters of epochs within the epochs. */
static int check_position(const char *path, const dp_train_state *s, const dp_ckpt_meta *mt)
{
    const uint64_t rows = mt->train_rows > 0 ? mt->train_rows : 1;
    const char *what = NULL;
    long long v = 0, hi = 0;
    if (mt->train_rows > ((uint64_t)1 << 40)) {
        return dp_err(DP_EFORMAT, "%s: /data train_rows is %llu, impossible (at most 2^40): a "
                                  "damaged file", path, (unsigned long long)mt->train_rows);
    }
    if (s->epoch < 0 || s->epoch > DP_MAX_EPOCHS) {
        what = "epoch", v = s->epoch, hi = DP_MAX_EPOCHS;
    } else if (s->next_batch > rows) {
        what = "next_batch", v = (long long)s->next_batch, hi = (long long)rows;
    } else if (s->seen > rows) {
        what = "seen", v = (long long)s->seen, hi = (long long)rows;
    } else if (s->step < 0 || (uint64_t)s->step > (uint64_t)(s->epoch + 1) * rows) {
        what = "step", v = s->step, hi = (long long)((uint64_t)(s->epoch + 1) * rows);
    } else if (s->n_history > s->epoch + 1) {
        what = "history rows", v = s->n_history, hi = s->epoch + 1;
    } else if (s->best_epoch < 0 || s->best_epoch > s->epoch) {
        what = "best_epoch", v = s->best_epoch, hi = s->epoch;
    } else if (s->bad_epochs < 0 || s->bad_epochs > s->epoch + 1) {
        what = "bad_epochs", v = s->bad_epochs, hi = s->epoch + 1;
    } else if (s->plateau_bad < 0 || s->plateau_bad > s->epoch + 1) {
        what = "plateau_bad", v = s->plateau_bad, hi = s->epoch + 1;
    }
    if (what) {
        return dp_err(DP_EFORMAT, "%s: /state %s is %lld, impossible for this checkpoint (0 to "
                                  "%lld for epoch %d of %llu training rows): a damaged file",
                      path, what, v, hi, s->epoch, (unsigned long long)mt->train_rows);
    }
    return DP_OK;
}

int dp_ckpt_load(const char *path, int max_batch, dp_model **m, dp_train_state *st,
                 dp_ckpt_meta *meta)
{
    int rc = DP_OK;
    hid_t f = H5I_INVALID_HID;
    dp_model *model = NULL;
    dp_ckpt_meta mt = {0};
    dp_train_state s = {0};
    DP_TRY(dp_ckpt_verify(path));
    DP_TRY(dp_h5_open_ro(path, "the checkpoint's checksum is right but HDF5 cannot open it",
                         &f));
    DP_TRY(dp_io_model_read(f, path, max_batch > 0 ? max_batch : 1, &model, NULL));
    DP_TRY(read_meta(f, path, &mt));
    DP_TRY(read_state(f, path, model, &s));
    DP_TRY(check_position(path, &s, &mt));
    DP_TRY(check_finite(model, &s, path, DP_IO_READING));
    DP_TRY(dp_h5_close(&f, DP_OK, path)); /* before anything is handed out */
    if (m) {
        *m = model;
        model = NULL;
    }
    if (st) {
        *st = s;
        memset(&s, 0, sizeof s);
    }
    if (meta) {
        *meta = mt;
        memset(&mt, 0, sizeof mt);
    }
done:
    rc = dp_h5_close(&f, rc, path);
    dp_model_free(&model);
    dp_train_state_free(&s);
    dp_ckpt_meta_free(&mt);
    return rc;
}

/* --- the checkpoint directory ---------------------------------------------------------- */

int dp_ckpt_path(const char *dir, long step, char *buf, size_t cap)
{
    if ((size_t)snprintf(buf, cap, "%s/ckpt-%010ld.h5", dir, step) >= cap) {
        return dp_err(DP_EINVAL, "%s: checkpoint path too long", dir);
    }
    return DP_OK;
}

/* The step of a name "ckpt-<10 digits>.h5", or -1. */
static long name_step(const char *name)
{
    if (strlen(name) != 18 || strncmp(name, "ckpt-", 5) != 0 || strcmp(name + 15, ".h5") != 0) {
        return -1;
    }
    long v = 0;
    for (int i = 5; i < 15; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return -1;
        }
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

typedef struct {
    long step;
    char *path;
} entry;

static int by_step(const void *a, const void *b)
{
    long x = ((const entry *)a)->step, y = ((const entry *)b)->step;
    return (x > y) - (x < y);
}

int dp_ckpt_list(const char *dir, char ***paths, long **steps, int *n)
{
    int rc = DP_OK, cnt = 0, cap = 0;
    entry *e = NULL;
    *n = 0;
    if (paths) *paths = NULL;
    if (steps) *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        return errno == ENOENT ? DP_OK : dp_err(DP_EIO, "%s: cannot list (%s)", dir,
                                                strerror(errno));
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        long s = name_step(de->d_name);
        if (s < 0) {
            continue;
        }
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            entry *ne = realloc(e, (size_t)cap * sizeof *e);
            if (!ne) {
                DP_FAIL(DP_ENOMEM, "out of memory listing %s", dir);
            }
            e = ne;
        }
        if (asprintf(&e[cnt].path, "%s/%s", dir, de->d_name) < 0) {
            DP_FAIL(DP_ENOMEM, "out of memory listing %s", dir);
        }
        e[cnt++].step = s;
    }
    qsort(e, (size_t)cnt, sizeof *e, by_step);
    if (paths) DP_CALLOC(*paths, cnt);
    if (steps) DP_CALLOC(*steps, cnt);
    for (int i = 0; i < cnt; i++) {
        if (steps) (*steps)[i] = e[i].step;
        if (paths) {
            (*paths)[i] = e[i].path;
            e[i].path = NULL;
        }
    }
    *n = cnt;
done:
    closedir(d);
    for (int i = 0; i < cnt; i++) {
        free(e[i].path);
    }
    free(e);
    if (rc != DP_OK) {
        if (paths) { free(*paths); *paths = NULL; }
        if (steps) { free(*steps); *steps = NULL; }
        *n = 0;
    }
    return rc;
}

void dp_ckpt_list_free(char **paths, long *steps, int n)
{
    for (int i = 0; paths && i < n; i++) {
        free(paths[i]);
    }
    free(paths);
    free(steps);
}

int dp_ckpt_prune(const char *dir, int keep)
{
    int rc = DP_OK, n = 0;
    char **paths = NULL;
    DP_TRY(dp_ckpt_list(dir, &paths, NULL, &n));
    for (int i = 0; i < n - (keep > 0 ? keep : 1); i++) {
        if (remove(paths[i]) != 0 && errno != ENOENT) {
            DP_FAIL(DP_EIO, "%s: cannot delete an old checkpoint (%s)", paths[i],
                    strerror(errno));
        }
    }
    /* Temporary files of writes that never finished (a crash, kill -9) by a writer that is
     * gone. */
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strncmp(de->d_name, "ckpt-", 5) == 0 && strstr(de->d_name, ".h5.tmp.") &&
                dp_io_tmp_is_stale(de->d_name, NULL)) {
                char p[4096];
                snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
                remove(p);
            }
        }
        closedir(d);
    }
done:
    dp_ckpt_list_free(paths, NULL, n);
    return rc;
}
