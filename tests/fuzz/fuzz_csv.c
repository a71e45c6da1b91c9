/* fuzz_csv.c: libFuzzer target for the CSV readers: dp_convert_csv (dptrain convert csv) and
 * the CSV branch of dp_dataset_load_inputs (dptrain predict/eval --data FILE.csv).
 *
 * The first input byte holds the options, the rest the file(s):
 *   bits 0-1  label column: 0, -1 (last), 1, 2
 *   bits 2-3  regression targets: 0, 0, 1, 2 (0: a class label column)
 *   bit 4     gzip the train file (the harness compresses; a raw input may itself be gzip)
 *   bit 5     gzip the test file
 *   bit 6     there is a test file: the rest is split by a 2-byte little-endian length
 *             prefix into train and test
 * A file the converter accepts must load back with dp_dataset_load (the converter's output
 * is a dataset like any other) and keep the loaders' promises. */
#include "dptrain/data.h"
#include "dptrain/err.h"
#include "fuzz_util.h"

#include <stdlib.h>

static char train_path[4096], test_path[4096], out_path[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    fz_path(train_path, sizeof train_path, "train.csv");
    fz_path(test_path, sizeof test_path, "test.csv");
    fz_path(out_path, sizeof out_path, "out.h5");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int label_cols[4] = {0, -1, 1, 2}, targets[4] = {0, 0, 1, 2};
    const uint8_t *part[2];
    size_t len[2];
    dp_dataset *d = NULL;
    dp_input_kind kind;
    if (size < 1) {
        return 0;
    }
    const uint8_t flags = data[0];
    const int label_col = label_cols[flags & 3], n_targets = targets[(flags >> 2) & 3];
    const bool has_test = flags & 0x40;
    fz_split(data + 1, size - 1, has_test ? 2 : 1, part, len);
    (flags & 0x10 ? fz_write_gz : fz_write)(train_path, part[0], len[0]);
    if (has_test) {
        (flags & 0x20 ? fz_write_gz : fz_write)(test_path, part[1], len[1]);
    }

    dp_err_clear();
    if (fz_note("dp_convert_csv", dp_convert_csv(train_path, has_test ? test_path : NULL,
                                                 label_col, n_targets, out_path)) == DP_OK) {
        dp_err_clear();
        int rc = dp_dataset_load(out_path, &d);
        FZ_ASSERT(rc == DP_OK, "dp_convert_csv wrote a file dp_dataset_load refuses: %s",
                  dp_errmsg());
        fz_check_dataset(d, true);
        FZ_ASSERT(n_targets > 0 ? d->train.n_targets == n_targets : d->train.labels != NULL,
                  "converted with %d targets, loaded %d", n_targets, d->train.n_targets);
        FZ_ASSERT(has_test ? d->test.n > 0 : d->test.n == 0, "test split: %zu rows", d->test.n);
        dp_dataset_free(&d);
    } else {
        FZ_ASSERT(dp_errmsg()[0] != '\0', "dp_convert_csv failed without a message");
    }
    fz_check_no_open_hdf5("dp_convert_csv");

    dp_err_clear();
    if (fz_note("dp_dataset_load_inputs", dp_dataset_load_inputs(train_path, &d, &kind)) ==
        DP_OK) {
        FZ_ASSERT(kind == DP_INPUT_CSV, "kind %d for a .csv file", (int)kind);
        FZ_ASSERT(d->train.n == 0 && d->test.n > 0, "CSV rows in the wrong split");
        fz_check_dataset(d, false);
    } else {
        FZ_ASSERT(d == NULL, "dp_dataset_load_inputs failed but returned a dataset");
        FZ_ASSERT(dp_errmsg()[0] != '\0', "dp_dataset_load_inputs failed without a message");
    }
    dp_dataset_free(&d);
    fz_check_no_open_hdf5("dp_dataset_load_inputs");
    return 0;
}
