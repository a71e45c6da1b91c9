/* cmd_compare.c: `dptrain compare A.h5 B.h5`: parameter-wise comparison of two models. */
#include "cli.h"

#include "dptrain/err.h"
#include "dptrain/io.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static void compare_help(FILE *f)
{
    fprintf(f,
"usage: dptrain compare A.h5 B.h5 [--atol X] [--rtol Y]\n"
"\n"
"Compares the parameters of two model files of the same architecture, tensor by tensor.\n"
"Elements a, b match when |a - b| <= atol + rtol * |b|. Prints the largest difference of\n"
"each tensor; exits 0 if every element matches, 1 if any does not, 2 on a usage error.\n"
"  --atol X   absolute tolerance   [0]\n"
"  --rtol Y   relative tolerance   [0]  (0 and 0: bit-identical)\n");
}

int dp_cmd_compare(int argc, char **argv)
{
    static const struct option lo[] = {
        {"atol", required_argument, 0, 'a'},
        {"rtol", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    float atol = 0.0f, rtol = 0.0f;
    dp_model *a = NULL, *b = NULL;
    int rc = DP_OK, c, mismatched = 0;
    opterr = 0;
    optind = 0; /* glibc: 0 also resets getopt's state from an earlier parse (1 does not) */
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        switch (c) {
        case 'a': DP_TRY(dp_parse_float("--atol", optarg, 0.0, 1e30, &atol)); break;
        case 'r': DP_TRY(dp_parse_float("--rtol", optarg, 0.0, 1e30, &rtol)); break;
        case 'h': compare_help(stdout); return DP_EXIT_OK;
        case ':': DP_FAIL(DP_EINVAL, "option '%s' needs a value", argv[optind - 1]);
        default: DP_FAIL(DP_EINVAL, "compare: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2) {
        DP_FAIL(DP_EINVAL, "compare: give two model files (see dptrain compare --help)");
    }
    const char *pa = argv[optind], *pb = argv[optind + 1];
    DP_TRY(dp_model_load(pa, 1, &a, NULL));
    DP_TRY(dp_model_load(pb, 1, &b, NULL));
    const dp_model_cfg *ca = dp_model_config(a), *cb = dp_model_config(b);
    bool same = ca->n_layers == cb->n_layers;
    for (int i = 0; same && i <= ca->n_layers; i++) {
        same = ca->sizes[i] == cb->sizes[i];
    }
    if (!same) {
        DP_FAIL(DP_EINVAL, "compare: %s and %s have different architectures", pa, pb);
    }
    for (int i = 0; i < ca->n_layers; i++) {
        const dp_dense *la = dp_model_layer_const(a, i), *lb = dp_model_layer_const(b, i);
        static const char *const names[6] = {"weight", "bias", "bn_gamma", "bn_beta",
                                             "bn_running_mean", "bn_running_var"};
        float *ta[6] = {la->w, la->b}, *tb[6] = {lb->w, lb->b};
        size_t n[6] = {(size_t)la->out * la->in, (size_t)la->out};
        int n_t = 2, bn_a = dp_model_bn_layer(a, i, &ta[2], &ta[3], &ta[4], &ta[5]);
        if (bn_a != dp_model_bn_layer(b, i, &tb[2], &tb[3], &tb[4], &tb[5])) {
            DP_FAIL(DP_EINVAL, "compare: layer %d has batch normalization in only one file", i);
        }
        if (bn_a) {
            n_t = 6;
            n[2] = n[3] = n[4] = n[5] = (size_t)la->out;
        }
        for (int t = 0; t < n_t; t++) {
            double worst = 0.0;
            size_t bad = 0;
            for (size_t j = 0; j < n[t]; j++) {
                double diff = fabs((double)ta[t][j] - tb[t][j]);
                worst = diff > worst ? diff : worst;
                bad += !(diff <= atol + rtol * fabs((double)tb[t][j]));
            }
            printf("layers/%d/%-15s max |a-b| %.3e  %zu of %zu outside tolerance\n", i,
                   names[t], worst, bad, n[t]);
            mismatched += bad > 0;
        }
    }
    printf("%s\n", mismatched ? "DIFFERENT" : "MATCH");
done:
    dp_model_free(&a);
    dp_model_free(&b);
    if (rc != DP_OK) {
        dp_cli_error(dp_errmsg());
        return rc == DP_EINVAL ? DP_EXIT_USAGE : DP_EXIT_ERROR;
    }
    return mismatched ? DP_EXIT_ERROR : DP_EXIT_OK;
}
