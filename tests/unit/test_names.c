/* test_names.c: unit tests of the names of activations, losses and initializers: parse and
 * name round trip, the documented spellings, unknown names refused. Suite core_names. */
#include <criterion/criterion.h>

#include "dptrain/nn.h"

TestSuite(core_names);

Test(core_names, round_trip)
{
    for (int a = 0; a < DP_ACT_COUNT; a++) {
        cr_assert_eq(dp_act_parse(dp_act_name(a)), a, "act %d (%s)", a, dp_act_name(a));
    }
    for (int l = 0; l < DP_LOSS_COUNT; l++) {
        cr_assert_eq(dp_loss_parse(dp_loss_name(l)), l, "loss %d (%s)", l, dp_loss_name(l));
    }
    for (int i = 0; i < DP_INIT_COUNT; i++) {
        cr_assert_eq(dp_init_parse(dp_init_name(i)), i, "init %d (%s)", i, dp_init_name(i));
    }
}

Test(core_names, documented_spellings)
{
    cr_assert_eq(dp_act_parse("identity"), DP_ACT_IDENTITY);
    cr_assert_eq(dp_act_parse("relu"), DP_ACT_RELU);
    cr_assert_eq(dp_act_parse("sigmoid"), DP_ACT_SIGMOID);
    cr_assert_eq(dp_act_parse("tanh"), DP_ACT_TANH);
    cr_assert_eq(dp_act_parse("softmax"), DP_ACT_SOFTMAX);
    cr_assert_eq(dp_loss_parse("cross-entropy"), DP_LOSS_CROSS_ENTROPY);
    cr_assert_eq(dp_loss_parse("mse"), DP_LOSS_MSE);
    cr_assert_eq(dp_act_parse("step"), DP_ACT_STEP);
    cr_assert_eq(dp_act_parse("leaky-relu"), DP_ACT_LEAKY_RELU);
    cr_assert_eq(dp_act_parse("elu"), DP_ACT_ELU);
    cr_assert_eq(dp_act_parse("gelu"), DP_ACT_GELU);
    cr_assert_eq(dp_loss_parse("sparse-categorical-cross-entropy"), DP_LOSS_SPARSE_CCE);
    cr_assert_eq(dp_loss_parse("categorical-cross-entropy"), DP_LOSS_CCE);
    cr_assert_eq(dp_loss_parse("binary-cross-entropy"), DP_LOSS_BCE_LOGITS);
    cr_assert_eq(dp_loss_parse("binary-cross-entropy-probs"), DP_LOSS_BCE_PROBS);
    cr_assert_eq(dp_loss_parse("mae"), DP_LOSS_MAE);
    cr_assert_eq(dp_loss_parse("rmse"), DP_LOSS_RMSE);
    cr_assert_eq(dp_init_parse("he-normal"), DP_INIT_HE_NORMAL);
    cr_assert_eq(dp_init_parse("zero"), DP_INIT_ZERO);
}

Test(core_names, unknown_names)
{
    cr_assert_eq(dp_act_parse("selu"), -1);
    cr_assert_eq(dp_act_parse("leaky_relu"), -1);
    cr_assert_eq(dp_act_parse(""), -1);
    cr_assert_eq(dp_act_parse("relu "), -1);
    cr_assert_eq(dp_loss_parse("hinge"), -1);
    cr_assert_eq(dp_loss_parse(""), -1);
    cr_assert_eq(dp_init_parse("orthogonal"), -1);
    cr_assert_eq(dp_init_parse(""), -1);
}
