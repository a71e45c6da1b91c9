/* synth.c: synthetic datasets (spirals, line, blobs), deterministic in the seed. Row i of a
 * split draws from its own counter-based stream keyed by (seed, generator, split, i), so a
 * row does not depend on how many rows are generated, and test rows never repeat train's. */
#include <math.h>
#include <stdlib.h>

#include "data_internal.h"
#include "dptrain/err.h"
#include "dptrain/rng.h"

/* Purpose tags that key the streams of each generator. */
#define TAG_SPIRALS UINT64_C(0x7370697261) /* "spira" */
#define TAG_LINE UINT64_C(0x6c696e65)      /* "line" */
#define TAG_BLOBS UINT64_C(0x626c6f6273)   /* "blobs" */
#define TAG_BLOB_CENTRES UINT64_C(0x63656e74726573) /* "centres" */
enum synth_split { SPLIT_TRAIN = 1, SPLIT_TEST = 2 };

#define SYNTH_TWO_PI 6.283185307179586
#define SPIRAL_TURN_RADIANS 4.0 /* angle swept from the centre to the rim of each arm */

static dp_rng row_rng(uint64_t seed, uint64_t tag, enum synth_split split, size_t i)
{
    return dp_rng_make(dp_rng_hash(dp_rng_hash(seed, tag), (uint64_t)split), (uint64_t)i);
}

/* Allocates s for n rows of n_features floats with labels or (n_targets) values. */
static int split_alloc(const char *what, dp_split *s, size_t n, int n_features, bool labels,
                       int n_targets)
{
    int rc = DP_OK;
    s->n = n;
    s->n_features = n_features;
    s->x_scale = 1.0f;
    s->x_offset = 0.0f;
    if (n == 0) {
        goto done;
    }
    if (n > SIZE_MAX / sizeof(float) / (size_t)n_features) {
        DP_FAIL(DP_EINVAL, "%s: %zu rows of %d features do not fit in memory", what, n,
                n_features);
    }
    DP_CALLOC(s->x_f32, n * (size_t)n_features);
    if (labels) {
        DP_CALLOC(s->labels, n);
    } else {
        s->n_targets = n_targets;
        DP_CALLOC(s->values, n * (size_t)n_targets);
    }
done:
    return rc;
}

static int check_common(const char *what, size_t n_train, float noise)
{
    if (n_train == 0) {
        return dp_err(DP_EINVAL, "%s: the train split needs at least one row", what);
    }
    if (!isfinite(noise) || noise < 0) {
        return dp_err(DP_EINVAL, "%s: noise must be a finite number >= 0, got %g", what,
                      (double)noise);
    }
    return DP_OK;
}

static void spirals_fill(dp_split *s, int n_classes, float noise, uint64_t seed,
                         enum synth_split split)
{
    for (size_t i = 0; i < s->n; i++) {
        dp_rng r = row_rng(seed, TAG_SPIRALS, split, i);
        int c = (int)(i % (size_t)n_classes);
        double t = dp_rng_uniform(&r);
        double theta = c * SYNTH_TWO_PI / n_classes + SPIRAL_TURN_RADIANS * t;
        double n0 = dp_rng_normal(&r), n1 = dp_rng_normal(&r);
        s->x_f32[2 * i] = (float)(t * sin(theta) + noise * n0);
        s->x_f32[2 * i + 1] = (float)(t * cos(theta) + noise * n1);
        s->labels[i] = c;
    }
}

int dp_synth_spirals(size_t n_train, size_t n_test, int n_classes, float noise, uint64_t seed,
                     dp_dataset **out)
{
    int rc = DP_OK;
    dp_dataset *d = NULL;
    if (!out) {
        return dp_err(DP_EINVAL, "spirals: out is NULL");
    }
    *out = NULL;
    DP_TRY(check_common("spirals", n_train, noise));
    if (n_classes < 2) {
        DP_FAIL(DP_EINVAL, "spirals: need at least 2 classes, got %d", n_classes);
    }
    DP_CALLOC(d, 1);
    d->n_classes = n_classes;
    DP_TRY(split_alloc("spirals", &d->train, n_train, 2, true, 0));
    DP_TRY(split_alloc("spirals", &d->test, n_test, 2, true, 0));
    spirals_fill(&d->train, n_classes, noise, seed, SPLIT_TRAIN);
    spirals_fill(&d->test, n_classes, noise, seed, SPLIT_TEST);
    *out = d;
    d = NULL;
done:
    dp_dataset_free(&d);
    return rc;
}

static void line_fill(dp_split *s, float slope, float intercept, float noise, uint64_t seed,
                      enum synth_split split)
{
    for (size_t i = 0; i < s->n; i++) {
        dp_rng r = row_rng(seed, TAG_LINE, split, i);
        double x = 2.0 * dp_rng_uniform(&r) - 1.0;
        double e = dp_rng_normal(&r);
        s->x_f32[i] = (float)x;
        s->values[i] = (float)((double)slope * x + (double)intercept + (double)noise * e);
    }
}

int dp_synth_line(size_t n_train, size_t n_test, float slope, float intercept, float noise,
                  uint64_t seed, dp_dataset **out)
{
    int rc = DP_OK;
    dp_dataset *d = NULL;
    if (!out) {
        return dp_err(DP_EINVAL, "line: out is NULL");
    }
    *out = NULL;
    DP_TRY(check_common("line", n_train, noise));
    if (!isfinite(slope) || !isfinite(intercept)) {
        DP_FAIL(DP_EINVAL, "line: slope and intercept must be finite, got %g and %g",
                (double)slope, (double)intercept);
    }
    DP_CALLOC(d, 1);
    d->n_classes = 0;
    DP_TRY(split_alloc("line", &d->train, n_train, 1, false, 1));
    DP_TRY(split_alloc("line", &d->test, n_test, 1, false, 1));
    line_fill(&d->train, slope, intercept, noise, seed, SPLIT_TRAIN);
    line_fill(&d->test, slope, intercept, noise, seed, SPLIT_TEST);
    *out = d;
    d = NULL;
done:
    dp_dataset_free(&d);
    return rc;
}

static void blobs_fill(dp_split *s, const float *centres, int n_classes, float noise,
                       uint64_t seed, enum synth_split split)
{
    size_t nf = (size_t)s->n_features;
    for (size_t i = 0; i < s->n; i++) {
        dp_rng r = row_rng(seed, TAG_BLOBS, split, i);
        int c = (int)(i % (size_t)n_classes);
        for (size_t j = 0; j < nf; j++) {
            s->x_f32[i * nf + j] =
                (float)(centres[(size_t)c * nf + j] + (double)noise * dp_rng_normal(&r));
        }
        s->labels[i] = c;
    }
}

int dp_synth_blobs(size_t n_train, size_t n_test, int n_features, int n_classes, float noise,
                   uint64_t seed, dp_dataset **out)
{
    int rc = DP_OK;
    dp_dataset *d = NULL;
    float *centres = NULL;
    dp_rng r;
    if (!out) {
        return dp_err(DP_EINVAL, "blobs: out is NULL");
    }
    *out = NULL;
    DP_TRY(check_common("blobs", n_train, noise));
    if (n_classes < 2) {
        DP_FAIL(DP_EINVAL, "blobs: need at least 2 classes, got %d", n_classes);
    }
    if (n_features < 1) {
        DP_FAIL(DP_EINVAL, "blobs: need at least 1 feature, got %d", n_features);
    }
    if ((size_t)n_classes > SIZE_MAX / sizeof(float) / (size_t)n_features) {
        DP_FAIL(DP_EINVAL, "blobs: %d classes of %d features do not fit in memory", n_classes,
                n_features);
    }
    DP_CALLOC(centres, (size_t)n_classes * (size_t)n_features);
    r = dp_rng_make(dp_rng_hash(seed, TAG_BLOB_CENTRES), 0);
    for (size_t k = 0; k < (size_t)n_classes * (size_t)n_features; k++) {
        centres[k] = 2.0f * dp_rng_uniform(&r) - 1.0f;
    }
    DP_CALLOC(d, 1);
    d->n_classes = n_classes;
    DP_TRY(split_alloc("blobs", &d->train, n_train, n_features, true, 0));
    DP_TRY(split_alloc("blobs", &d->test, n_test, n_features, true, 0));
    blobs_fill(&d->train, centres, n_classes, noise, seed, SPLIT_TRAIN);
    blobs_fill(&d->test, centres, n_classes, noise, seed, SPLIT_TEST);
    *out = d;
    d = NULL;
done:
    free(centres);
    dp_dataset_free(&d);
    return rc;
}
