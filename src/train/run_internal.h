/* run_internal.h: what run_opts.c takes from run_cfg.c: a field of the run configuration set
 * from an option's text, with the field's type and range (one table for options and JSON).
 * Internal. */
#ifndef DPTRAIN_TRAIN_RUN_INTERNAL_H
#define DPTRAIN_TRAIN_RUN_INTERNAL_H

#include "dptrain/run.h"

/* Parses text as field section.key (its JSON name) into cfg; a switch (a bool field) is set
 * true; messages name opt ("--epochs: 'x' is not an integer"). Local. */
int dp_run_field_from_text(dp_run_cfg *cfg, const char *section, const char *key,
                           const char *text, const char *opt);

#endif
