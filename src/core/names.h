/* names.h: name <-> enum lookup shared by the core's parsers (private to src/core). */
#ifndef DPTRAIN_NAMES_H
#define DPTRAIN_NAMES_H

/* Index of s in names[0..n), or -1 if absent (or s is NULL). Local. */
int dp_name_index(const char *const *names, int n, const char *s);

#endif
