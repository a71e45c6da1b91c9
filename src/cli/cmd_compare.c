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

/* Prints one line per tensor of GROUP/i (weight, bias and, if n_t == 6, the batch-norm
 * tensors): the largest difference and how many elements are outside atol + rtol |b|.
 * Returns the number of tensors with any. */
static int compare_tensors(const char *group, int i, float *const *ta, float *const *tb,
                           const size_t *n, int n_t, float atol, float rtol)
{
    static const char *const names[6] = {"weight", "bias", "bn_gamma", "bn_beta",
                                         "bn_running_mean", "bn_running_var"};
    int mismatched = 0;
    for (int t = 0; t < n_t; t++) {
        double worst = 0.0;
        size_t bad = 0;
        for (size_t j = 0; j < n[t]; j++) {
            double diff = fabs((double)ta[t][j] - tb[t][j]);
            worst = diff > worst ? diff : worst;
            bad += !(diff <= atol + rtol * fabs((double)tb[t][j]));
        }
        printf("%s/%d/%-15s max |a-b| %.3e  %zu of %zu outside tolerance\n", group, i, names[t],
               worst, bad, n[t]);
        mismatched += bad > 0;
    }
    return mismatched;
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
    char sa[2048], sb[2048];
    dp_model_cfg_text(ca, sa, sizeof sa);
    dp_model_cfg_text(cb, sb, sizeof sb);
    if (dp_model_n_params(a) != dp_model_n_params(b) || dp_model_n_buffers(a) != dp_model_n_buffers(b) ||
        ca->n_stages != cb->n_stages || ca->n_layers != cb->n_layers) {
        DP_FAIL(DP_EINVAL, "compare: %s and %s have different architectures (%s and %s)", pa,
                pb, sa, sb);
    }
    for (int j = 0; j < ca->n_stages; j++) {
        const dp_conv *la = dp_model_conv_const(a, j), *lb = dp_model_conv_const(b, j);
        if (!la || !lb) {
            continue;
        }
        float *ta[6] = {la->w, la->b}, *tb[6] = {lb->w, lb->b};
        size_t n[6] = {(size_t)la->out_c * la->in_c * la->kh * la->kw, (size_t)la->out_c};
        const int bn = dp_model_stage_bn(a, j, &ta[2], &ta[3], &ta[4], &ta[5]);
        (void)dp_model_stage_bn(b, j, &tb[2], &tb[3], &tb[4], &tb[5]);
        n[2] = n[3] = n[4] = n[5] = (size_t)la->out_c;
        mismatched += compare_tensors("conv", j, ta, tb, n, bn ? 6 : 2, atol, rtol);
    }
    for (int i = 0; i < ca->n_layers; i++) {
        const dp_dense *la = dp_model_layer_const(a, i), *lb = dp_model_layer_const(b, i);
        float *ta[6] = {la->w, la->b}, *tb[6] = {lb->w, lb->b};
        size_t n[6] = {(size_t)la->out * la->in, (size_t)la->out};
        int bn_a = dp_model_bn_layer(a, i, &ta[2], &ta[3], &ta[4], &ta[5]);
        if (bn_a != dp_model_bn_layer(b, i, &tb[2], &tb[3], &tb[4], &tb[5]) ||
            la->in != lb->in || la->out != lb->out) {
            DP_FAIL(DP_EINVAL, "compare: %s and %s have different architectures (%s and %s)",
                    pa, pb, sa, sb);
        }
        n[2] = n[3] = n[4] = n[5] = (size_t)la->out;
        mismatched += compare_tensors("layers", i, ta, tb, n, bn_a ? 6 : 2, atol, rtol);
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
