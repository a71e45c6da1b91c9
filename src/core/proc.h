/* proc.h: what /proc says of a process (Linux), for the watchdog, the removal of stale
 * temporary files and the terminal lookup. Internal: not installed. */
#ifndef DPTRAIN_CORE_PROC_H
#define DPTRAIN_CORE_PROC_H

#include <stdbool.h>

/* The state letter ('R', 'S', 'D', 'T', 'Z', ...) and parent PID of process pid, from
 * /proc/PID/stat; false if that cannot be read (no such process). Either output may be
 * NULL. Async-signal-safe: open, read and close only. Local. */
bool dp_proc_stat(long pid, char *state, long *ppid);

#endif
