/* shm_shim.c: an LD_PRELOAD library for smpirun that puts SMPI's shared-malloc file in
 * /dev/shm (tmpfs) instead of /tmp. SimGrid 3.32 makes that file with
 * mkstemp("/tmp/simgrid-shmalloc-XXXXXX"), a fixed path; on a disk file system the kernel
 * writes its dirty pages back and write-protects them again in every mapping, and a rank's
 * next write then waits in the page-fault path (seen at 1024 ranks of 784-2048-2048-10 on
 * ext4: the simulation spent minutes in D state in ext4_page_mkwrite). tmpfs pages are never
 * written back. Only that template is redirected; every other mkstemp goes to libc.
 * Built and used by launch/simulate.sh when /dev/shm is writable. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHMALLOC_TEMPLATE "/tmp/simgrid-shmalloc-"

typedef int (*mkstemp_fn)(char *);

/* The file in /dev/shm, already unlinked (SimGrid unlinks the name it gets back, which stays
 * the /tmp template with its X's filled in: no such file, so that unlink does nothing). */
static int shm_file(char *tmpl, const char *real_name)
{
    mkstemp_fn real = (mkstemp_fn)dlsym(RTLD_NEXT, real_name);
    if (!real) {
        return -1;
    }
    if (strncmp(tmpl, SHMALLOC_TEMPLATE, strlen(SHMALLOC_TEMPLATE)) != 0) {
        return real(tmpl);
    }
    char path[] = "/dev/shm/simgrid-shmalloc-XXXXXX";
    int fd = real(path);
    if (fd < 0) {
        return real(tmpl);
    }
    unlink(path);
    memcpy(tmpl + strlen(tmpl) - 6, path + strlen(path) - 6, 6);
    return fd;
}

int mkstemp(char *tmpl) { return shm_file(tmpl, "mkstemp"); }
int mkstemp64(char *tmpl) { return shm_file(tmpl, "mkstemp64"); }
