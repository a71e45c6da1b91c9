/* proc.c: reading /proc/PID/stat with async-signal-safe calls only. */
#include "proc.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

bool dp_proc_stat(long pid, char *state, long *ppid)
{
    char path[40] = "/proc/", digits[24], buf[512];
    size_t len = strlen(path);
    int n = 0;
    if (pid <= 0) {
        return false;
    }
    for (unsigned long u = (unsigned long)pid; u && n < (int)sizeof digits; u /= 10) {
        digits[n++] = (char)('0' + u % 10);
    }
    while (n > 0) {
        path[len++] = digits[--n];
    }
    memcpy(path + len, "/stat", 6);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0) {
        return false;
    }
    buf[got] = '\0';
    /* "pid (comm) state ppid ...": comm may hold anything, so parse after the last ')'. */
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2] || p[3] != ' ') {
        return false;
    }
    if (state) {
        *state = p[2];
    }
    if (ppid) {
        long v = 0;
        const char *q = p + 4;
        bool neg = *q == '-';
        q += neg;
        if (*q < '0' || *q > '9') {
            return false;
        }
        for (; *q >= '0' && *q <= '9'; q++) {
            v = v * 10 + (*q - '0');
        }
        *ppid = neg ? -v : v;
    }
    return true;
}
