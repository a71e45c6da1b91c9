/* data_mem.c: where a job's dataset lives (--data-memory). replicate: every rank reads the
 * file (dp_dataset_load). node: the node's first rank reads it, with every check of
 * dp_dataset_load, straight into a node-shared segment that the node's other ranks map
 * instead of reading: one copy per node. stream: no copy; the job's first rank reads the
 * file through once for the checks and the fingerprints, and every rank then reads only the
 * rows it is asked for (src/data/stream.c). The dataset the job sees is the same struct
 * in every mode, so nothing downstream knows the difference; the rows it hands out are the
 * file's bits in every mode, so the run is the same. */
#define _GNU_SOURCE
#include "job_internal.h"

#include "dptrain/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

static const char *const mem_names[DP_DATA_MEMORY_COUNT] = {"auto", "replicate", "node",
                                                             "stream"};

const char *dp_data_memory_name(dp_data_memory m)
{
    return m >= 0 && m < DP_DATA_MEMORY_COUNT ? mem_names[m] : "?";
}

int dp_data_memory_parse(const char *s)
{
    for (int i = 0; s && i < DP_DATA_MEMORY_COUNT; i++) {
        if (strcmp(s, mem_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* The shape of one split, sent from the node's first rank to the others. */
typedef struct {
    uint64_t n;
    int32_t n_features, n_targets;
    int32_t x_kind; /* 0: no rows' features, 1: uint8, 2: float */
    int32_t has_labels, has_values;
    float x_scale, x_offset;
} split_shape;

typedef struct {
    split_shape s[2]; /* train, test */
    int32_t n_classes;
} data_shape;

#define ALIGN 64

static size_t align_up(size_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

static split_shape shape_of(const dp_split *s)
{
    return (split_shape){.n = s->n, .n_features = s->n_features, .n_targets = s->n_targets,
                         .x_kind = s->x_u8 ? 1 : s->x_f32 ? 2 : 0,
                         .has_labels = s->labels != NULL, .has_values = s->values != NULL,
                         .x_scale = s->x_scale, .x_offset = s->x_offset};
}

/* The segment's layout: the four arrays of dp_dataset_probe (train x, train y, test x,
 * test y), each from a 64-byte boundary. Returns the total. */
static size_t layout(const size_t bytes[4], size_t off[4])
{
    size_t t = 0;
    for (int i = 0; i < 4; i++) {
        off[i] = t;
        t += align_up(bytes[i] ? bytes[i] : 1);
    }
    return t;
}

/* A split whose arrays are in the segment: x at slot 2k, y at 2k + 1. */
static void place_split(const split_shape *sh, char *base, const size_t off[4], int k,
                        dp_split *dst)
{
    *dst = (dp_split){.n = sh->n, .n_features = sh->n_features, .n_targets = sh->n_targets,
                      .x_scale = sh->x_scale, .x_offset = sh->x_offset};
    char *x = base + off[2 * k], *y = base + off[2 * k + 1];
    dst->x_u8 = sh->x_kind == 1 ? (uint8_t *)x : NULL;
    dst->x_f32 = sh->x_kind == 2 ? (float *)x : NULL;
    dst->labels = sh->has_labels ? (int32_t *)y : NULL;
    dst->values = sh->has_values ? (float *)y : NULL;
}

/* The "KEY: N kB" line of a /proc file (KEY with its colon, as in "MemAvailable:") in
 * bytes, or 0 if absent. */
static size_t proc_kb(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    char line[256];
    const size_t k = strlen(key);
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, key, k) == 0 && sscanf(line + k, "%llu kB", &kb) == 1) {
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return (size_t)kb * 1024;
}

/* A number from a one-line file (cgroup files), or 0 if absent or not a number ("max"). */
static size_t read_size_file(const char *path)
{
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (f) {
        if (fscanf(f, "%llu", &v) != 1) {
            v = 0;
        }
        fclose(f);
    }
    return (size_t)v;
}

/* What a copy of the data may take here, and what limits it: the node's available memory,
 * what the cgroup (memory.max) leaves, and what the address-space limit (ulimit -v, prlimit
 * --as) leaves this process. */
typedef struct {
    size_t node;       /* bytes a node-wide copy may take (0: unknown) */
    const char *node_why;
    size_t process;    /* bytes this process may still map (SIZE_MAX: no limit) */
} mem_budget;

static mem_budget budget(void)
{
    mem_budget b = {.node = proc_kb("/proc/meminfo", "MemAvailable:"),
                    .node_why = "available memory",
                    .process = SIZE_MAX};
    const size_t cmax = read_size_file("/sys/fs/cgroup/memory.max");
    const size_t ccur = read_size_file("/sys/fs/cgroup/memory.current");
    if (cmax > 0 && cmax > ccur && (b.node == 0 || cmax - ccur < b.node)) {
        b.node = cmax - ccur;
        b.node_why = "the cgroup's memory.max";
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        const size_t used = proc_kb("/proc/self/status", "VmSize:");
        b.process = (size_t)rl.rlim_cur > used ? (size_t)rl.rlim_cur - used : 0;
    }
    return b;
}

/* stream: the job's first rank opens the file and reads it through once (the checks, the
 * class count and the fingerprints), the others open it knowing those; each then reads only
 * its rows. */
static int load_stream(const char *path, const dp_comm *c, dp_job_data *jd, int *failed_rank)
{
    dp_stream_info si;
    memset(&si, 0, sizeof si);
    const bool first = dp_comm_rank(c) == 0;
    int rc = first ? dp_dataset_open_stream(path, true, NULL, &jd->d, &si) : DP_OK;
    if ((rc = dp_job_agree(c, rc, "", failed_rank)) != DP_OK) {
        return rc;
    }
    rc = dp_comm_bcast_bytes(c, &si, sizeof si, 0);
    if (rc == DP_OK && !first) {
        rc = dp_dataset_open_stream(path, false, &si, &jd->d, NULL);
    }
    return dp_job_agree(c, rc, "", failed_rank);
}

/* Has the kernel allocate the pages of [p, p + n) in one call before the file is read into
 * them: one fault per 4 KB page of the node's segment took 0.16 s of reading Fashion-MNIST's
 * 55 MB into it here, 0.08 s with this (Linux 5.14's MADV_POPULATE_WRITE). Only a hint: on
 * an older kernel the read faults the pages in as before. */
static void prefault(void *p, size_t n)
{
#ifdef MADV_POPULATE_WRITE
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)p + page - 1) / page * page, b = (uintptr_t)p + n;
    if (b > a) {
        (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
    }
#else
    (void)p;
    (void)n;
#endif
}

/* node: the first rank sizes the arrays (dp_dataset_probe), the node's segment is made, and
 * the first rank reads the file straight into it with every check of dp_dataset_load: one
 * copy per node, never two. */
static int load_node(const char *path, const dp_comm *c, dp_job_data *jd, int *failed_rank)
{
    const bool first = dp_comm_local_rank(c) == 0;
    size_t bytes[4] = {0}, off[4];
    int rc = first ? dp_dataset_probe(path, bytes) : DP_OK;
    if ((rc = dp_job_agree(c, rc, "", failed_rank)) != DP_OK) {
        return rc;
    }
    rc = dp_comm_node_bcast(c, bytes, sizeof bytes);
    const size_t total = layout(bytes, off);
    if (rc == DP_OK) {
        rc = dp_shared_create(c, total, &jd->shm);
        if (rc != DP_OK) {
            rc = dp_err(rc, "--data-memory node: no node-shared segment of %.1f MB for %s (%s); "
                            "--data-memory replicate gives each rank its own copy",
                        (double)total / 1e6, path, dp_errmsg());
        }
    }
    if ((rc = dp_job_agree(c, rc, "", failed_rank)) != DP_OK) {
        dp_shared_free(&jd->shm);
        return rc;
    }
    char *base = dp_shared_base(jd->shm);
    data_shape ds = {0};
    dp_dataset *d = NULL;
    if (first) {
        prefault(base, total);
        void *dst[4];
        for (int i = 0; i < 4; i++) {
            dst[i] = base + off[i];
        }
        rc = dp_dataset_load_at(path, dst, bytes, &d);
        if (rc == DP_OK) {
            ds.s[0] = shape_of(&d->train);
            ds.s[1] = shape_of(&d->test);
            ds.n_classes = d->n_classes;
        }
    }
    if ((rc = dp_job_agree(c, rc, "", failed_rank)) == DP_OK) {
        rc = dp_comm_node_bcast(c, &ds, sizeof ds);
    }
    if (rc == DP_OK && !first) {
        d = calloc(1, sizeof *d);
        rc = d ? DP_OK : dp_err(DP_ENOMEM, "out of memory (dataset)");
        if (d) {
            place_split(&ds.s[0], base, off, 0, &d->train);
            place_split(&ds.s[1], base, off, 1, &d->test);
            d->n_classes = ds.n_classes;
            d->shared = true;
        }
    }
    if (rc == DP_OK) {
        rc = dp_shared_sync(jd->shm, c);
    }
    jd->d = d;
    jd->bytes = total;
    return dp_job_agree(c, rc, "", failed_rank);
}

int dp_job_data_load(const char *path, dp_data_memory mode, const dp_comm *c, dp_job_data *jd,
                     int *failed_rank)
{
    memset(jd, 0, sizeof *jd);
    const int local = dp_comm_local_size(c);
    struct stat sb;
    const size_t file = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
    const mem_budget b = budget();
    const double MB = 1e6;
    int rc = DP_OK;
    if (mode == DP_DATA_AUTO) {
        /* A copy must leave room to spare: half of what it may take. */
        if (b.node > 0 && file > b.node / 2) {
            mode = DP_DATA_STREAM;
            snprintf(jd->why, sizeof jd->why, "auto: the file's %.0f MB exceed half of the "
                     "%.0f MB of %s", (double)file / MB, (double)b.node / MB, b.node_why);
        } else if (file > b.process / 2) {
            mode = DP_DATA_STREAM;
            snprintf(jd->why, sizeof jd->why, "auto: the file's %.0f MB exceed half of the "
                     "%.0f MB the address-space limit leaves", (double)file / MB,
                     (double)b.process / MB);
        } else {
            mode = local > 1 ? DP_DATA_NODE : DP_DATA_REPLICATE;
            snprintf(jd->why, sizeof jd->why, "auto: %d rank%s of this job on this node", local,
                     local == 1 ? "" : "s");
        }
    } else {
        snprintf(jd->why, sizeof jd->why, "as asked");
    }
    /* Refused up front rather than killed by the kernel: the file's size stands for the
     * arrays' (the layout stores them uncompressed). */
    const size_t copies = mode == DP_DATA_REPLICATE ? (size_t)local : 1;
    if (mode != DP_DATA_STREAM && b.node > 0 && file * copies > b.node) {
        char need[96] = "";
        if (copies > 1) {
            snprintf(need, sizeof need, ", a copy for each of this node's %zu ranks: %.0f MB,",
                     copies, (double)(file * copies) / MB);
        }
        rc = dp_err(DP_ENOMEM, "--data-memory %s: %s (%.0f MB%s) does not fit the %.0f MB that "
                               "%s leaves on this node; %s--data-memory stream reads only "
                               "each rank's rows", dp_data_memory_name(mode), path,
                    (double)file / MB, need, (double)b.node / MB, b.node_why,
                    copies > 1 ? "--data-memory node keeps one copy per node, " : "");
    } else if (mode != DP_DATA_STREAM && file > b.process) {
        rc = dp_err(DP_ENOMEM, "--data-memory %s: %s (%.0f MB) does not fit the %.0f MB that "
                               "this process's address-space limit (ulimit -v) leaves; "
                               "--data-memory stream reads only each rank's rows",
                    dp_data_memory_name(mode), path, (double)file / MB,
                    (double)b.process / MB);
    }
    if ((rc = dp_job_agree(c, rc, "", failed_rank)) != DP_OK) {
        return rc;
    }
    jd->mode = mode;
    if (mode == DP_DATA_NODE) {
        return load_node(path, c, jd, failed_rank);
    }
    if (mode == DP_DATA_STREAM) {
        return load_stream(path, c, jd, failed_rank);
    }
    rc = dp_dataset_load(path, &jd->d);
    return dp_job_agree(c, rc, "", failed_rank);
}

void dp_job_data_describe(const dp_job_data *jd, const dp_comm *c, char *buf, size_t cap)
{
    const int local = dp_comm_local_size(c);
    if (jd->mode == DP_DATA_NODE) {
        snprintf(buf, cap, "node (%s): one copy of %.1f MB per node, shared by the %d rank%s "
                           "on this node", jd->why, (double)jd->bytes / 1e6, local,
                 local == 1 ? "" : "s");
    } else if (jd->mode == DP_DATA_STREAM) {
        snprintf(buf, cap, "stream (%s): no copy; each rank reads its rows of each batch from "
                           "the file (the next batch read ahead by a thread)", jd->why);
    } else {
        snprintf(buf, cap, "replicate (%s): every rank holds the whole dataset", jd->why);
    }
}

void dp_job_data_free(dp_job_data *jd)
{
    dp_dataset_free(&jd->d);
    dp_shared_free(&jd->shm);
}
