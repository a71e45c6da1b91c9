/* cmd_data.c: `dptrain convert` (IDX, CSV -> HDF5) and `dptrain synth` (generated data).
 * Both run in one process, without MPI. */
#include "cli.h"

#include "dptrain/data.h"
#include "dptrain/err.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void convert_help(FILE *f)
{
    fprintf(f,
"usage: dptrain convert idx --train-images F --train-labels F\n"
"                           [--test-images F --test-labels F] --out FILE.h5\n"
"       dptrain convert idx --dir DIR --out FILE.h5\n"
"       dptrain convert csv --train F.csv [--test F.csv] [--label-col N | --targets K]\n"
"                           --out FILE.h5\n"
"\n"
"idx: MNIST-style IDX files, gzipped or not. --dir DIR takes the four standard names\n"
"     (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...) from DIR,\n"
"     e.g. /usr/share/datasets/fashion-mnist. Pixels stay uint8 with scale 1/255.\n"
"csv: one sample per line, numbers separated by commas, an optional header line.\n"
"     --label-col N   column of the integer class label, 0-based, -1 = last   [0]\n"
"     --targets K     instead: the last K columns are float regression targets\n"
"The layout written is documented in datasets/README.md.\n");
}

/* Finds DIR/name or DIR/name.gz. */
static const char *pick(const char *dir, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s.gz", dir, name);
    FILE *f = fopen(buf, "rb");
    if (!f) {
        snprintf(buf, cap, "%s/%s", dir, name);
        f = fopen(buf, "rb");
    }
    if (f) {
        fclose(f);
    }
    return buf;
}

int dp_cmd_convert(int argc, char **argv)
{
    enum { O_TRI = 256, O_TRL, O_TEI, O_TEL, O_DIR, O_OUT, O_TRAIN, O_TEST, O_LCOL, O_TGT };
    static const struct option lo[] = {
        {"train-images", required_argument, 0, O_TRI}, {"train-labels", required_argument, 0, O_TRL},
        {"test-images", required_argument, 0, O_TEI},  {"test-labels", required_argument, 0, O_TEL},
        {"dir", required_argument, 0, O_DIR},          {"out", required_argument, 0, O_OUT},
        {"train", required_argument, 0, O_TRAIN},      {"test", required_argument, 0, O_TEST},
        {"label-col", required_argument, 0, O_LCOL},   {"targets", required_argument, 0, O_TGT},
        {"help", no_argument, 0, 'h'},                 {0, 0, 0, 0},
    };
    const char *tri = NULL, *trl = NULL, *tei = NULL, *tel = NULL, *dir = NULL, *out = NULL;
    const char *train = NULL, *test = NULL;
    char b1[4096], b2[4096], b3[4096], b4[4096];
    long label_col = 0, targets = 0;
    int rc = DP_OK, c;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        convert_help(stdout);
        return argc < 2 ? DP_EXIT_USAGE : DP_EXIT_OK;
    }
    const char *kind = argv[1];
    if (strcmp(kind, "idx") != 0 && strcmp(kind, "csv") != 0) {
        DP_FAIL(DP_EINVAL, "convert: unknown format '%s' (idx or csv)", kind);
    }
    opterr = 0;
    optind = 0; /* glibc: 0 also resets getopt's state from an earlier parse (1 does not) */
    while ((c = getopt_long(argc - 1, argv + 1, ":h", lo, NULL)) != -1) {
        switch (c) {
        case O_TRI: tri = optarg; break;
        case O_TRL: trl = optarg; break;
        case O_TEI: tei = optarg; break;
        case O_TEL: tel = optarg; break;
        case O_DIR: dir = optarg; break;
        case O_OUT: out = optarg; break;
        case O_TRAIN: train = optarg; break;
        case O_TEST: test = optarg; break;
        case O_LCOL: DP_TRY(dp_parse_int("--label-col", optarg, -1, 1 << 20, &label_col)); break;
        case O_TGT: DP_TRY(dp_parse_int("--targets", optarg, 1, 1 << 20, &targets)); break;
        case 'h': convert_help(stdout); return DP_EXIT_OK;
        case ':': DP_FAIL(DP_EINVAL, "option '%s' needs a value", argv[optind]);
        default: DP_FAIL(DP_EINVAL, "convert: unknown option '%s' (see dptrain convert --help)", argv[optind]);
        }
    }
    if (optind < argc - 1) {
        DP_FAIL(DP_EINVAL, "convert: unexpected argument '%s'", argv[optind + 1]);
    }
    if (!out) {
        DP_FAIL(DP_EINVAL, "convert: --out FILE.h5 is required");
    }
    if (strcmp(kind, "idx") == 0) {
        if (dir) {
            tri = pick(dir, "train-images-idx3-ubyte", b1, sizeof b1);
            trl = pick(dir, "train-labels-idx1-ubyte", b2, sizeof b2);
            tei = pick(dir, "t10k-images-idx3-ubyte", b3, sizeof b3);
            tel = pick(dir, "t10k-labels-idx1-ubyte", b4, sizeof b4);
        }
        if (!tri || !trl) {
            DP_FAIL(DP_EINVAL, "convert idx: give --dir DIR, or --train-images and --train-labels");
        }
        if (!tei != !tel) {
            DP_FAIL(DP_EINVAL, "convert idx: give both --test-images and --test-labels, or neither");
        }
        DP_TRY(dp_convert_idx(tri, trl, tei, tel, out));
    } else {
        if (!train) {
            DP_FAIL(DP_EINVAL, "convert csv: --train F.csv is required");
        }
        DP_TRY(dp_convert_csv(train, test, (int)label_col, (int)targets, out));
    }
    printf("wrote %s\n", out);
done:
    if (rc != DP_OK) {
        dp_cli_error(dp_errmsg());
        return rc == DP_EINVAL ? DP_EXIT_USAGE : DP_EXIT_ERROR;
    }
    return DP_EXIT_OK;
}

static void synth_help(FILE *f)
{
    fprintf(f,
"usage: dptrain synth spirals|line|blobs --out FILE.h5 [options]\n"
"\n"
"  spirals   K interleaved 2-D spirals, integer labels (classification)\n"
"  line      y = slope * x + intercept + noise, x in [-1, 1] (regression)\n"
"  blobs     K Gaussian blobs in D dimensions, integer labels (classification)\n"
"\n"
"  --n-train N      training rows                              [1000]\n"
"  --n-test N       test rows                                  [200]\n"
"  --classes K      spirals, blobs: classes                    [2 / 3]\n"
"  --features D     blobs: dimensions                          [4]\n"
"  --noise S        standard deviation of the noise            [0.1 spirals/blobs, 0.1 line]\n"
"  --slope A        line: slope                                [2]\n"
"  --intercept B    line: intercept                            [1]\n"
"  --seed N         generator seed                             [1]\n");
}

int dp_cmd_synth(int argc, char **argv)
{
    enum { O_OUT = 256, O_NTR, O_NTE, O_CLS, O_FEAT, O_NOISE, O_SLOPE, O_ICPT, O_SEED };
    static const struct option lo[] = {
        {"out", required_argument, 0, O_OUT},         {"n-train", required_argument, 0, O_NTR},
        {"n-test", required_argument, 0, O_NTE},      {"classes", required_argument, 0, O_CLS},
        {"features", required_argument, 0, O_FEAT},   {"noise", required_argument, 0, O_NOISE},
        {"slope", required_argument, 0, O_SLOPE},     {"intercept", required_argument, 0, O_ICPT},
        {"seed", required_argument, 0, O_SEED},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *out = NULL;
    size_t n_train = 1000, n_test = 200;
    long classes = 0, features = 4;
    float noise = 0.1f, slope = 2.0f, intercept = 1.0f;
    uint64_t seed = 1;
    dp_dataset *d = NULL;
    int rc = DP_OK, c;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        synth_help(stdout);
        return argc < 2 ? DP_EXIT_USAGE : DP_EXIT_OK;
    }
    const char *kind = argv[1];
    opterr = 0;
    optind = 0; /* glibc: 0 also resets getopt's state from an earlier parse (1 does not) */
    while ((c = getopt_long(argc - 1, argv + 1, ":h", lo, NULL)) != -1) {
        switch (c) {
        case O_OUT: out = optarg; break;
        case O_NTR: DP_TRY(dp_parse_size("--n-train", optarg, &n_train)); break;
        case O_NTE: DP_TRY(dp_parse_size("--n-test", optarg, &n_test)); break;
        case O_CLS: DP_TRY(dp_parse_int("--classes", optarg, 2, 1 << 16, &classes)); break;
        case O_FEAT: DP_TRY(dp_parse_int("--features", optarg, 1, 1 << 20, &features)); break;
        case O_NOISE: DP_TRY(dp_parse_float("--noise", optarg, 0.0, 1e6, &noise)); break;
        case O_SLOPE: DP_TRY(dp_parse_float("--slope", optarg, -1e6, 1e6, &slope)); break;
        case O_ICPT: DP_TRY(dp_parse_float("--intercept", optarg, -1e6, 1e6, &intercept)); break;
        case O_SEED: DP_TRY(dp_parse_u64("--seed", optarg, &seed)); break;
        case 'h': synth_help(stdout); return DP_EXIT_OK;
        case ':': DP_FAIL(DP_EINVAL, "option '%s' needs a value", argv[optind]);
        default: DP_FAIL(DP_EINVAL, "synth: unknown option '%s' (see dptrain synth --help)", argv[optind]);
        }
    }
    if (optind < argc - 1) {
        DP_FAIL(DP_EINVAL, "synth: unexpected argument '%s'", argv[optind + 1]);
    }
    if (!out) {
        DP_FAIL(DP_EINVAL, "synth: --out FILE.h5 is required");
    }
    if (n_train == 0) {
        DP_FAIL(DP_EINVAL, "synth: --n-train must be at least 1");
    }
    if (strcmp(kind, "spirals") == 0) {
        DP_TRY(dp_synth_spirals(n_train, n_test, classes ? (int)classes : 2, noise, seed, &d));
    } else if (strcmp(kind, "line") == 0) {
        DP_TRY(dp_synth_line(n_train, n_test, slope, intercept, noise, seed, &d));
    } else if (strcmp(kind, "blobs") == 0) {
        DP_TRY(dp_synth_blobs(n_train, n_test, (int)features, classes ? (int)classes : 3, noise,
                              seed, &d));
    } else {
        DP_FAIL(DP_EINVAL, "synth: unknown generator '%s' (spirals, line or blobs)", kind);
    }
    DP_TRY(dp_dataset_save(out, d));
    printf("wrote %s: %s, %zu train rows, %zu test rows\n", out, kind, n_train, n_test);
done:
    dp_dataset_free(&d);
    if (rc != DP_OK) {
        dp_cli_error(dp_errmsg());
        return rc == DP_EINVAL ? DP_EXIT_USAGE : DP_EXIT_ERROR;
    }
    return DP_EXIT_OK;
}
