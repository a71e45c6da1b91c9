/* data_mem.c: where a job's dataset lives (--data-memory). replicate: every rank reads the
 * file (dp_dataset_load). node: the node's first rank reads it, with every check of
 * dp_dataset_load, and copies its arrays into a node-shared segment that the node's other
 * ranks map instead of reading: one copy per node. The dataset the job sees is the same
 * struct either way, so nothing downstream knows the difference; its bits are the file's in
 * both modes, so the run is the same. */
#define _GNU_SOURCE
#include "job_internal.h"

#include "dptrain/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const mem_names[DP_DATA_MEMORY_COUNT] = {"auto", "replicate", "node"};

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
    int32_t status;   /* the first rank's load status: DP_OK or not */
} data_shape;

#define ALIGN 64

static size_t align_up(size_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

/* The bytes of each array of a split: x, labels, values. */
static void split_bytes(const split_shape *sh, size_t b[3])
{
    const size_t n = (size_t)sh->n;
    b[0] = sh->x_kind == 1   ? n * (size_t)sh->n_features
           : sh->x_kind == 2 ? n * (size_t)sh->n_features * sizeof(float) : 0;
    b[1] = sh->has_labels ? n * sizeof(int32_t) : 0;
    b[2] = sh->has_values ? n * (size_t)sh->n_targets * sizeof(float) : 0;
}

static split_shape shape_of(const dp_split *s)
{
    return (split_shape){.n = s->n, .n_features = s->n_features, .n_targets = s->n_targets,
                         .x_kind = s->x_u8 ? 1 : s->x_f32 ? 2 : 0,
                         .has_labels = s->labels != NULL, .has_values = s->values != NULL,
                         .x_scale = s->x_scale, .x_offset = s->x_offset};
}

/* The split's arrays at *off in the segment (copied from src on the first rank). */
static void place_split(const split_shape *sh, char *base, size_t *off, const dp_split *src,
                        dp_split *dst)
{
    size_t b[3];
    split_bytes(sh, b);
    *dst = (dp_split){.n = sh->n, .n_features = sh->n_features, .n_targets = sh->n_targets,
                      .x_scale = sh->x_scale, .x_offset = sh->x_offset};
    const bool present[3] = {sh->x_kind != 0, sh->has_labels != 0, sh->has_values != 0};
    void *p[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3; k++) {
        /* Every array has its place (total_bytes counts the same), used or not. */
        p[k] = present[k] ? base + *off : NULL;
        *off += align_up(b[k] ? b[k] : 1);
    }
    if (sh->x_kind == 1) {
        dst->x_u8 = p[0];
    } else if (sh->x_kind == 2) {
        dst->x_f32 = p[0];
    }
    dst->labels = p[1];
    dst->values = p[2];
    if (src) {
        const void *from[3] = {src->x_u8 ? (const void *)src->x_u8 : (const void *)src->x_f32,
                               src->labels, src->values};
        for (int k = 0; k < 3; k++) {
            if (p[k] && b[k]) {
                memcpy(p[k], from[k], b[k]);
            }
        }
    }
}

static size_t total_bytes(const data_shape *ds)
{
    size_t t = 0;
    for (int i = 0; i < 2; i++) {
        size_t b[3];
        split_bytes(&ds->s[i], b);
        t += align_up(b[0] ? b[0] : 1) + align_up(b[1] ? b[1] : 1) + align_up(b[2] ? b[2] : 1);
    }
    return t;
}

/* MemAvailable of /proc/meminfo in bytes, or 0 if unknown. */
static size_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return (size_t)kb * 1024;
}

/* node: the first rank loads the file, the node's segment receives its arrays. */
static int load_node(const char *path, const dp_comm *c, dp_job_data *jd, int *failed_rank)
{
    const bool first = dp_comm_local_rank(c) == 0;
    dp_dataset *priv = NULL;
    data_shape ds = {0};
    int rc = DP_OK;
    if (first) {
        rc = dp_dataset_load(path, &priv);
        if (rc == DP_OK) {
            ds.s[0] = shape_of(&priv->train);
            ds.s[1] = shape_of(&priv->test);
            ds.n_classes = priv->n_classes;
        }
        ds.status = rc;
    }
    if ((rc = dp_job_agree(c, rc, "", failed_rank)) != DP_OK) {
        dp_dataset_free(&priv);
        return rc;
    }
    rc = dp_comm_node_bcast(c, &ds, sizeof ds);
    const size_t bytes = total_bytes(&ds);
    if (rc == DP_OK) {
        rc = dp_shared_create(c, bytes, &jd->shm);
        if (rc != DP_OK) {
            rc = dp_err(rc, "--data-memory node: no node-shared segment of %.1f MB for %s (%s); "
                            "--data-memory replicate gives each rank its own copy",
                        (double)bytes / 1e6, path, dp_errmsg());
        }
    }
    if ((rc = dp_job_agree(c, rc, "", failed_rank)) != DP_OK) {
        dp_shared_free(&jd->shm);
        dp_dataset_free(&priv);
        return rc;
    }
    char *base = dp_shared_base(jd->shm);
    dp_dataset *d = calloc(1, sizeof *d);
    rc = d ? DP_OK : dp_err(DP_ENOMEM, "out of memory (dataset)");
    if (d) {
        size_t off = 0;
        place_split(&ds.s[0], base, &off, first ? &priv->train : NULL, &d->train);
        place_split(&ds.s[1], base, &off, first ? &priv->test : NULL, &d->test);
        d->n_classes = ds.n_classes;
        d->shared = true;
    }
    dp_dataset_free(&priv); /* the first rank's private copy: the segment holds it now */
    int sync = dp_shared_sync(jd->shm, c);
    rc = rc == DP_OK ? sync : rc;
    jd->d = d;
    jd->bytes = bytes;
    return dp_job_agree(c, rc, "", failed_rank);
}

int dp_job_data_load(const char *path, dp_data_memory mode, const dp_comm *c, dp_job_data *jd,
                     int *failed_rank)
{
    memset(jd, 0, sizeof *jd);
    const int local = dp_comm_local_size(c);
    struct stat sb;
    const size_t file = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
    const size_t avail = mem_available();
    int rc = DP_OK;
    if (mode == DP_DATA_AUTO) {
        mode = local > 1 ? DP_DATA_NODE : DP_DATA_REPLICATE;
        snprintf(jd->why, sizeof jd->why, "auto: %d rank%s of this job on this node", local,
                 local == 1 ? "" : "s");
    } else {
        snprintf(jd->why, sizeof jd->why, "as asked");
    }
    /* Refused up front rather than killed by the kernel: the file's size stands for the
     * arrays' (the layout stores them uncompressed). */
    if (mode == DP_DATA_REPLICATE && local > 1 && avail > 0 && file * (size_t)local > avail) {
        rc = dp_err(DP_ENOMEM, "--data-memory replicate: %d ranks on this node would each hold "
                               "%s (%.0f MB, %.0f MB in all) but the node has %.0f MB "
                               "available; --data-memory node keeps one copy per node",
                    local, path, (double)file / 1e6, (double)file * local / 1e6,
                    (double)avail / 1e6);
    } else if (mode == DP_DATA_NODE && avail > 0 && 2 * file > avail) {
        rc = dp_err(DP_ENOMEM, "--data-memory node: %s (%.0f MB) does not fit this node's "
                               "%.0f MB available with room for the copy made while loading",
                    path, (double)file / 1e6, (double)avail / 1e6);
    }
    if ((rc = dp_job_agree(c, rc, "", failed_rank)) != DP_OK) {
        return rc;
    }
    jd->mode = mode;
    if (mode == DP_DATA_NODE) {
        return load_node(path, c, jd, failed_rank);
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
    } else {
        snprintf(buf, cap, "replicate (%s): every rank holds the whole dataset", jd->why);
    }
}

void dp_job_data_free(dp_job_data *jd)
{
    dp_dataset_free(&jd->d);
    dp_shared_free(&jd->shm);
}
