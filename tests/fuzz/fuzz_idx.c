/* fuzz_idx.c: libFuzzer target for the IDX converter, dp_convert_idx (dptrain convert idx).
 *
 * The first input byte holds the options, the rest the files:
 *   bit 0  gzip the train images (the harness compresses; a raw part may itself be gzip,
 *          whole or damaged, which zlib detects by content)
 *   bit 1  gzip the train labels
 *   bit 2  there is a test pair
 *   bit 3  gzip the test images
 *   bit 4  gzip the test labels
 * The rest is split by 2-byte little-endian length prefixes into train images, train labels
 * and, with a test pair, test images and test labels. A pair the converter accepts must
 * load back with dp_dataset_load and keep the loaders' promises. */
#include "dptrain/data.h"
#include "dptrain/err.h"
#include "fuzz_util.h"

#include <stdlib.h>

static char paths[4][4096], out_path[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    (void)argc;
    (void)argv;
    fz_init();
    for (int i = 0; i < 4; i++) {
        fz_path(paths[i], sizeof paths[i], names[i]);
    }
    fz_path(out_path, sizeof out_path, "out.h5");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t gz_bit[4] = {0x01, 0x02, 0x08, 0x10};
    const uint8_t *part[4];
    size_t len[4];
    dp_dataset *d = NULL;
    if (size < 1) {
        return 0;
    }
    const uint8_t flags = data[0];
    const bool has_test = flags & 0x04;
    const int n_parts = has_test ? 4 : 2;
    fz_split(data + 1, size - 1, n_parts, part, len);
    for (int i = 0; i < n_parts; i++) {
        (flags & gz_bit[i] ? fz_write_gz : fz_write)(paths[i], part[i], len[i]);
    }

    dp_err_clear();
    if (fz_note("dp_convert_idx",
                dp_convert_idx(paths[0], paths[1], has_test ? paths[2] : NULL,
                               has_test ? paths[3] : NULL, out_path)) == DP_OK) {
        dp_err_clear();
        int rc = dp_dataset_load(out_path, &d);
        FZ_ASSERT(rc == DP_OK, "dp_convert_idx wrote a file dp_dataset_load refuses: %s",
                  dp_errmsg());
        fz_check_dataset(d, true);
        FZ_ASSERT(d->train.x_u8 && d->train.labels, "IDX data not loaded as uint8 + labels");
        FZ_ASSERT(has_test ? d->test.n > 0 : d->test.n == 0, "test split: %zu rows", d->test.n);
        dp_dataset_free(&d);
    } else {
        FZ_ASSERT(dp_errmsg()[0] != '\0', "dp_convert_idx failed without a message");
    }
    fz_check_no_open_hdf5("dp_convert_idx");
    return 0;
}
