/* metrics.c: one line of metrics.jsonl per epoch, through jansson. */
#include "loop.h"

#include <jansson.h>
#include <math.h>

/* A number, or null when it is NaN or infinite (JSON has neither). */
static json_t *number(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

void dp_metrics_write(FILE *f, const dp_epoch_record *r)
{
    if (!f) {
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "epoch", json_integer(r->epoch));
    json_object_set_new(o, "step", json_integer(r->step));
    json_object_set_new(o, "lr", number(r->lr));
    json_object_set_new(o, "train_loss", number(r->train_loss));
    json_object_set_new(o, "train_accuracy", number(r->train_accuracy));
    if (!isnan(r->val_loss)) { /* the fields a run has: no val_* without a validation split */
        json_object_set_new(o, "val_loss", number(r->val_loss));
        json_object_set_new(o, "val_accuracy", number(r->val_accuracy));
    }
    if (!isnan(r->test_loss)) {
        json_object_set_new(o, "test_loss", number(r->test_loss));
        json_object_set_new(o, "test_accuracy", number(r->test_accuracy));
    }
    json_object_set_new(o, "samples_per_s", number(r->samples_per_s));
    json_object_set_new(o, "seconds", number(r->seconds));
    if (json_dumpf(o, f, JSON_COMPACT | JSON_REAL_PRECISION(9)) == 0) {
        fputc('\n', f);
    }
    fflush(f);
    json_decref(o);
}
