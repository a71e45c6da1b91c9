/* fuzz_ckpt.c: libFuzzer target for the checkpoint and model-file loaders.
 *
 * The first input byte picks the mode, the rest is the file:
 *   even: the rest is the HDF5 part of a checkpoint (everything after its 512-byte user
 *         block); the harness puts in front of it a header with the right length and CRC-32,
 *         as dp_ckpt_save writes it, so that the fuzzer's mutations reach HDF5 and our
 *         readers instead of dying at the checksum. dp_ckpt_verify must accept it.
 *   odd:  the rest is the whole file, header included, as it is: this fuzzes the header
 *         parser (and dp_model_load on files with or without a user block).
 * Then: dp_ckpt_is_checkpoint, dp_ckpt_verify, dp_ckpt_load (model, state, metadata),
 * dp_model_load and dp_model_format_version on the file. Whatever loads must keep the
 * loaders' promises (finite parameters, state sized like the model) and run one forward
 * pass, as dptrain predict and a resumed run would. */
#include "dptrain/ckpt.h"
#include "dptrain/err.h"
#include "dptrain/io.h"
#include "dptrain/nn.h"
#include "dptrain/optim.h"
#include "fuzz_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define USERBLOCK 512 /* CKPT_USERBLOCK in src/io/ckpt.c */
#define MAX_BATCH 4

static char path[4096];
static uint8_t *buf;
static size_t buf_cap;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    fz_path(path, sizeof path, "ckpt-0000000001.h5");
    return 0;
}

/* Reads every float of v (ASan checks the array is as long as promised); all finite. */
static void check_floats(const float *v, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        FZ_ASSERT(isfinite(v[i]), "%s %zu is %g", what, i, (double)v[i]);
    }
}

/* One forward pass of MAX_BATCH rows of zeros: what predict and eval do first. */
static void forward(dp_model *m)
{
    const dp_model_cfg *mc = dp_model_config(m);
    const int in = mc->sizes[0];
    if ((double)in * MAX_BATCH > 1e8) {
        return;
    }
    float *x = calloc((size_t)in * MAX_BATCH, sizeof *x);
    FZ_ASSERT(x != NULL, "no memory for a batch of %d inputs", in);
    const float *out = dp_model_forward(m, x, MAX_BATCH);
    FZ_ASSERT(out != NULL, "forward failed: %s", dp_errmsg());
    for (int i = 0; i < MAX_BATCH * mc->sizes[mc->n_layers]; i++) {
        volatile float o = out[i];
        (void)o;
    }
    free(x);
}

static void check_model(dp_model *m)
{
    FZ_ASSERT(m != NULL, "loaded without a model");
    check_floats(dp_model_params(m), dp_model_n_params(m), "parameter");
    check_floats(dp_model_buffers(m), dp_model_n_buffers(m), "batch-norm statistic");
    forward(m);
}

static void check_state(const dp_model *m, const dp_train_state *st)
{
    FZ_ASSERT(st->n_params == dp_model_n_params(m), "state %zu params, model %zu",
              st->n_params, dp_model_n_params(m));
    FZ_ASSERT(st->n_buffers == dp_model_n_buffers(m), "state %zu buffers, model %zu",
              st->n_buffers, dp_model_n_buffers(m));
    FZ_ASSERT(st->n_slots == dp_optim_n_slots(&st->opt), "%d slots, optimizer has %d",
              st->n_slots, dp_optim_n_slots(&st->opt));
    for (int s = 0; s < st->n_slots; s++) {
        FZ_ASSERT(st->slots[s] != NULL, "slot %d is NULL", s);
        check_floats(st->slots[s], st->n_params, "optimizer state");
    }
    if (st->best_params) {
        check_floats(st->best_params, st->n_params, "best_params");
        FZ_ASSERT(st->n_buffers == 0 || st->best_buffers, "best_buffers is NULL");
        check_floats(st->best_buffers, st->n_buffers, "best_buffers");
    }
    FZ_ASSERT(st->n_history >= 0 && st->n_history <= st->cap_history, "history %d of %d",
              st->n_history, st->cap_history);
    for (int i = 0; i < st->n_history; i++) {
        volatile double v = st->history[i].seconds;
        (void)v;
    }
    FZ_ASSERT(st->epoch >= 0 && st->step >= 0, "epoch %d step %ld", st->epoch, st->step);
}

/* The header dp_ckpt_save writes (write_header in src/io/ckpt.c) for a file of `length`
 * bytes whose bytes from USERBLOCK on have CRC-32 crc. */
static void make_header(uint8_t *hdr, long long length, uint32_t crc)
{
    memset(hdr, 0, USERBLOCK);
    snprintf((char *)hdr, USERBLOCK,
             "dptrain-checkpoint\nformat_version %d\nlength %lld\ncrc32 %08" PRIx32 "\n"
             "(the CRC-32 is zlib's, of bytes %d..length-1; the HDF5 file starts at byte %d)\n",
             DP_CKPT_FORMAT_VERSION, length, crc, USERBLOCK, USERBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const bool rebuild = (data[0] & 1) == 0;
    data++;
    size--;
    if (rebuild) {
        if (buf_cap < size + USERBLOCK) {
            free(buf);
            buf_cap = size + USERBLOCK;
            buf = malloc(buf_cap);
            FZ_ASSERT(buf != NULL, "out of memory");
        }
        memcpy(buf + USERBLOCK, data, size);
        make_header(buf, (long long)(size + USERBLOCK),
                    (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)size));
        fz_write(path, buf, size + USERBLOCK);
    } else {
        fz_write(path, data, size);
    }

    (void)dp_ckpt_is_checkpoint(path);
    dp_err_clear();
    int vrc = fz_note("dp_ckpt_verify", dp_ckpt_verify(path));
    if (rebuild) {
        FZ_ASSERT(vrc == DP_OK, "a correct header was refused: %s", dp_errmsg());
    }

    dp_model *m = NULL;
    dp_train_state st = {0};
    dp_ckpt_meta meta = {0};
    dp_err_clear();
    int rc = fz_note("dp_ckpt_load", dp_ckpt_load(path, MAX_BATCH, &m, &st, &meta));
    if (rc == DP_OK) {
        FZ_ASSERT(vrc == DP_OK, "dp_ckpt_load took a file dp_ckpt_verify refused");
        check_model(m);
        check_state(m, &st);
        FZ_ASSERT(meta.format_version == DP_CKPT_FORMAT_VERSION, "format_version %d",
                  meta.format_version);
        FZ_ASSERT(meta.config_json && meta.data_path && meta.program_version,
                  "metadata strings missing");
        (void)strlen(meta.config_json);
        (void)strlen(meta.data_path);
        (void)strlen(meta.program_version);
    } else {
        FZ_ASSERT(m == NULL, "dp_ckpt_load failed but returned a model");
        FZ_ASSERT(dp_errmsg()[0] != '\0', "dp_ckpt_load failed without a message");
    }
    dp_model_free(&m);
    dp_train_state_free(&st);
    dp_ckpt_meta_free(&meta);
    fz_check_no_open_hdf5("dp_ckpt_load");

    char *config = NULL;
    dp_err_clear();
    if (fz_note("dp_model_load", dp_model_load(path, MAX_BATCH, &m, &config)) == DP_OK) {
        check_model(m);
        FZ_ASSERT(config != NULL, "no config text");
        (void)strlen(config);
    } else {
        FZ_ASSERT(m == NULL && config == NULL, "dp_model_load failed but returned something");
        FZ_ASSERT(dp_errmsg()[0] != '\0', "dp_model_load failed without a message");
    }
    dp_model_free(&m);
    free(config);
    fz_check_no_open_hdf5("dp_model_load");

    (void)dp_model_format_version(path);
    fz_check_no_open_hdf5("dp_model_format_version");
    return 0;
}
