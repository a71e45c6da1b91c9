/* testutil.c: test-data helpers shared by the unit tests (see testutil.h). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

uint64_t tgen_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void tfill(float *v, size_t n, float lo, float hi, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        double u = (double)(tgen_next(&s) >> 11) * 0x1.0p-53;
        v[i] = (float)(lo + (hi - lo) * u);
    }
}

float *talloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    cr_assert_not_null(p, "out of memory allocating %zu floats", n);
    return p;
}

void tfill_nan(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        v[i] = NAN;
    }
}

double gradcheck_vec(float *v, size_t n, const float *analytic, double scale, float h,
                     gc_loss_fn f, void *ctx)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        float v0 = v[i], vp = v0 + h, vm = v0 - h;
        v[i] = vp;
        double fp = f(ctx);
        v[i] = vm;
        double fm = f(ctx);
        v[i] = v0;
        double num = scale * (fp - fm) / ((double)vp - (double)vm);
        double a = analytic[i];
        double err = fabs(a - num) / fmax(1e-3, fabs(a) + fabs(num));
        if (!(err <= worst)) { /* also catches NaN */
            worst = isnan(err) ? INFINITY : err;
        }
    }
    return worst;
}
