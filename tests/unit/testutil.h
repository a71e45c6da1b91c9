/* testutil.h: test-data helpers shared by the unit tests: a private generator (splitmix64),
 * independent of the dp_rng under test, and checked allocation. */
#ifndef DPTRAIN_TESTUTIL_H
#define DPTRAIN_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

uint64_t tgen_next(uint64_t *s);
/* n floats uniform in [lo, hi), from seed. */
void tfill(float *v, size_t n, float lo, float hi, uint64_t seed);
/* n zeroed floats; fails the test if memory runs out. */
float *talloc(size_t n);
void tfill_nan(float *v, size_t n);

/* A scalar loss evaluated over the current values of whatever is being probed. */
typedef double (*gc_loss_fn)(void *ctx);

/* Finite-difference gradient checks (test_dense.c, test_act.c, test_loss.c,
 * test_gradcheck_model.c, test_dropout_batchnorm.c): the loss is evaluated by the float code
 * under test and summed by the test in double.
 * gradcheck_vec: max relative error between analytic[i] and scale * dL/dv[i] by central
 * differences (f(v+h) - f(v-h)) / ((v+h) - (v-h)) with the float steps actually taken in the
 * denominator, over the n entries of v (each restored after its probe). Error, as in kann's
 * check: max_i |a_i - n_i| / max(1e-3, |a_i| + |n_i|); a NaN anywhere gives INFINITY. */
double gradcheck_vec(float *v, size_t n, const float *analytic, double scale, float h,
                     gc_loss_fn f, void *ctx);

#endif
