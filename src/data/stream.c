/* stream.c: --data-memory stream. A streamed split holds no rows: dp_split_gather reads the
 * rows it is asked for from the file, as the file stores them (one pread per run of
 * adjacent rows, x and y), and dp_split_prefetch hands the next batch's reads to the split's
 * reader thread, so that they run during this batch's backward pass and the next gather
 * only waits for what is not done. A rank's memory for data is then a few batches of rows,
 * whatever the size of the file.
 *
 * Why POSIX reads in a thread and not MPI-IO (measured here, one 2-epoch run each,
 * Fashion-MNIST, 784-256-128-10, batch 128, 2 ranks, samples/s; the whole-copy run 133k):
 * MPI_File_iread_at over a file view of the batch's rows, Open MPI 4.1's OMPIO 39.5k (each
 * range becomes a POSIX aio request), ROMIO 108k; blocking MPI_File_read_at 112k (OMPIO),
 * 117k (ROMIO); blocking pread 120k.
 * Scattered reads of single rows gain nothing from MPI-IO's collective buffering or data
 * sieving (which would read the whole span between a batch's rows), and a thread that calls
 * MPI would need MPI_THREAD_MULTIPLE for the whole job.
 *
 * The rows a gather hands out are bit for bit those of an in-memory load: the stored values
 * are converted as HDF5 converts them when it loads the file (integers and doubles to float
 * by the C conversions, labels to int32), into a small split of the batch's rows, and that
 * split goes through the in-memory gather (the same scale and offset arithmetic). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data_internal.h"
#include "dptrain/err.h"

typedef struct {
    size_t row;
    int pos;
} row_pos;

/* The reader thread's one job at a time: reads ranges off[0..n) of len bytes into buf. */
enum { JOB_IDLE = 0, JOB_ASKED, JOB_DONE };

typedef struct {
    dp_rowsrc base; /* first: the split's src points here */
    char path[512];
    int fd;
    dp_raw_split raw;
    dp_split shape;  /* n_features, n_targets, x_scale, x_offset */
    int cap;         /* rows the buffers below hold */
    unsigned char *stage;          /* a read's bytes, in file order */
    uint64_t *off;                 /* its ranges, adjacent rows merged: 2 x cap */
    uint32_t *len;
    int n_ranges;
    row_pos *ord;                  /* the rows asked for, sorted */
    size_t *slot;                  /* position i of the request -> its row's place in stage */
    float *x;                      /* the rows as a load would hold them (x not uint8) */
    int32_t *labels;
    float *values;
    size_t *pend;                  /* the rows of the read started (in flight or done) */
    int n_pend, n_uniq;
    bool pending;
    /* The reader thread (started by the first prefetch) and its job. */
    pthread_t th;
    bool has_thread, quit;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int job;                       /* JOB_*: under mu */
    int job_rc;                    /* the job's status; its message in job_msg */
    char job_msg[1024];
} stream_src;

static int cmp_row(const void *a, const void *b)
{
    const row_pos *p = a, *q = b;
    return p->row < q->row ? -1 : p->row > q->row ? 1 : p->pos - q->pos;
}

/* Room for n rows in every buffer (grown, never shrunk: nothing is allocated once the
 * largest batch has been seen). */
static int reserve(stream_src *s, int n)
{
    if (n <= s->cap) {
        return DP_OK;
    }
    const size_t N = (size_t)n, nf = (size_t)s->shape.n_features;
    const size_t nt = s->shape.n_targets > 0 ? (size_t)s->shape.n_targets : 1;
    void *p[9] = {
        realloc(s->stage, N * (s->raw.x_row + s->raw.y_row) + 64),
        realloc(s->off, 2 * N * sizeof *s->off), realloc(s->len, 2 * N * sizeof *s->len),
        realloc(s->ord, N * sizeof *s->ord), realloc(s->slot, N * sizeof *s->slot),
        realloc(s->x, N * nf * sizeof *s->x), realloc(s->labels, N * sizeof *s->labels),
        realloc(s->values, N * nt * sizeof *s->values), realloc(s->pend, N * sizeof *s->pend)};
    s->stage = p[0] ? p[0] : s->stage;
    s->off = p[1] ? p[1] : s->off;
    s->len = p[2] ? p[2] : s->len;
    s->ord = p[3] ? p[3] : s->ord;
    s->slot = p[4] ? p[4] : s->slot;
    s->x = p[5] ? p[5] : s->x;
    s->labels = p[6] ? p[6] : s->labels;
    s->values = p[7] ? p[7] : s->values;
    s->pend = p[8] ? p[8] : s->pend;
    for (int i = 0; i < 9; i++) {
        if (!p[i]) {
            return dp_err(DP_ENOMEM, "%s: out of memory for a batch of %d streamed rows",
                          s->path, n);
        }
    }
    s->cap = n;
    return DP_OK;
}

/* Plans the read of rows idx[0..n): each distinct row once, in file order, x then y (or y
 * then x, as the file has them), adjacent rows merged into one range. Local. */
static int plan_read(stream_src *s, const size_t *idx, int n)
{
    int rc = reserve(s, n);
    if (rc != DP_OK) {
        return rc;
    }
    for (int i = 0; i < n; i++) {
        if (idx[i] >= s->raw.n) {
            return dp_err(DP_EINVAL, "%s: row %zu of %zu asked for", s->path, idx[i], s->raw.n);
        }
        s->ord[i] = (row_pos){idx[i], i};
    }
    qsort(s->ord, (size_t)n, sizeof *s->ord, cmp_row);
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || s->ord[i].row != s->ord[i - 1].row) {
            s->ord[m].row = s->ord[i].row; /* the distinct rows, ascending (m <= i) */
            m++;
        }
        s->slot[s->ord[i].pos] = (size_t)(m - 1);
    }
    const bool y_first = s->raw.y_row > 0 && s->raw.y_off < s->raw.x_off;
    int k = 0;
    for (int g = 0; g < 2; g++) {
        const bool is_x = (g == 0) != y_first;
        const size_t rb = is_x ? s->raw.x_row : s->raw.y_row;
        const uint64_t base = is_x ? s->raw.x_off : s->raw.y_off;
        for (int j = 0; j < m && rb > 0; j++) {
            const uint64_t o = base + (uint64_t)s->ord[j].row * rb;
            if (k > 0 && s->off[k - 1] + s->len[k - 1] == o && s->len[k - 1] <= (1u << 30)) {
                s->len[k - 1] += (uint32_t)rb;
            } else {
                s->off[k] = o;
                s->len[k++] = (uint32_t)rb;
            }
        }
    }
    memcpy(s->pend, idx, (size_t)n * sizeof *idx);
    s->n_pend = n;
    s->n_uniq = m;
    s->n_ranges = k;
    return DP_OK;
}

/* Reads the planned ranges into stage. Any thread: a failure is described in msg (not in
 * the thread's dp_err message). */
static int do_reads(stream_src *s, char *msg, size_t cap)
{
    unsigned char *p = s->stage;
    for (int k = 0; k < s->n_ranges; k++) {
        size_t got = 0;
        while (got < s->len[k]) {
            ssize_t r = pread(s->fd, p + got, s->len[k] - got, (off_t)(s->off[k] + got));
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r < 0) {
                snprintf(msg, cap, "%s: reading %u bytes at offset %llu: %s", s->path,
                         s->len[k], (unsigned long long)s->off[k], strerror(errno));
                return DP_EIO;
            }
            if (r == 0) {
                snprintf(msg, cap, "%s: reading %u bytes at offset %llu: the file ends at "
                         "byte %llu or before: it is shorter than its header says (truncated "
                         "or replaced while the run was reading it)", s->path, s->len[k],
                         (unsigned long long)s->off[k], (unsigned long long)(s->off[k] + got));
                return DP_EIO;
            }
            got += (size_t)r;
        }
        p += s->len[k];
    }
    return DP_OK;
}

static void *reader(void *arg)
{
    stream_src *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->job != JOB_ASKED && !s->quit) {
            pthread_cond_wait(&s->cv, &s->mu);
        }
        if (s->quit) {
            break;
        }
        pthread_mutex_unlock(&s->mu);
        char msg[sizeof s->job_msg];
        const int rc = do_reads(s, msg, sizeof msg);
        pthread_mutex_lock(&s->mu);
        s->job_rc = rc;
        if (rc != DP_OK) {
            memcpy(s->job_msg, msg, sizeof msg);
        }
        s->job = JOB_DONE;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Waits for the reader's job; its status, with its message. */
static int finish_read(stream_src *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->job == JOB_ASKED) {
        pthread_cond_wait(&s->cv, &s->mu);
    }
    const int rc = s->job_rc;
    s->job = JOB_IDLE;
    pthread_mutex_unlock(&s->mu);
    s->pending = false;
    return rc == DP_OK ? DP_OK : dp_err(rc, "%s", s->job_msg);
}

/* Reads rows idx[0..n) now, in the calling thread. */
static int read_now(stream_src *s, const size_t *idx, int n)
{
    int rc = plan_read(s, idx, n);
    if (rc == DP_OK) {
        char msg[sizeof s->job_msg];
        rc = do_reads(s, msg, sizeof msg);
        if (rc != DP_OK) {
            dp_err(rc, "%s", msg);
        }
    }
    return rc;
}

/* The value of a stored element p of type t, as HDF5 converts it to a float or an int. */
static double raw_f64(const unsigned char *p, dp_raw_type t)
{
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
        float f32;
        double f64;
    } v;
    memcpy(&v, p, (size_t)t.size);
    switch (t.cls) {
    case 'f': return t.size == 4 ? (double)v.f32 : v.f64;
    case 'u': return t.size == 1 ? v.u8 : t.size == 2 ? v.u16 : t.size == 4 ? v.u32 : (double)v.u64;
    default: return t.size == 1 ? v.i8 : t.size == 2 ? v.i16 : t.size == 4 ? v.i32 : (double)v.i64;
    }
}

static float raw_f32(const unsigned char *p, dp_raw_type t)
{
    if (t.cls == 'f' && t.size == 4) {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    if (t.cls == 'i' && t.size == 8) {
        int64_t v;
        memcpy(&v, p, sizeof v);
        return (float)v; /* one rounding, as HDF5's conversion */
    }
    if (t.cls == 'u' && t.size == 8) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return (float)v;
    }
    return (float)raw_f64(p, t);
}

/* The read's rows as a small in-memory split (row j = the j-th distinct row) into tmp. */
static void as_split(stream_src *s, dp_split *tmp)
{
    const int m = s->n_uniq;
    const size_t nf = (size_t)s->shape.n_features, nt = (size_t)s->shape.n_targets;
    const bool y_first = s->raw.y_row > 0 && s->raw.y_off < s->raw.x_off;
    const unsigned char *xs = s->stage + (y_first ? (size_t)m * s->raw.y_row : 0);
    const unsigned char *ys = s->stage + (y_first ? 0 : (size_t)m * s->raw.x_row);
    *tmp = (dp_split){.n = (size_t)m, .n_features = s->shape.n_features,
                      .x_scale = s->shape.x_scale, .x_offset = s->shape.x_offset,
                      .n_targets = s->shape.n_targets};
    if (s->raw.x.cls == 'u' && s->raw.x.size == 1) {
        tmp->x_u8 = (uint8_t *)xs;
    } else {
        for (size_t e = 0; e < (size_t)m * nf; e++) {
            s->x[e] = raw_f32(xs + e * (size_t)s->raw.x.size, s->raw.x);
        }
        tmp->x_f32 = s->x;
    }
    if (s->base.labels) {
        for (int j = 0; j < m; j++) {
            s->labels[j] = (int32_t)raw_f64(ys + (size_t)j * s->raw.y_row, s->raw.y);
        }
        tmp->labels = s->labels;
    } else if (s->base.values) {
        for (size_t e = 0; e < (size_t)m * nt; e++) {
            s->values[e] = raw_f32(ys + e * (size_t)s->raw.y.size, s->raw.y);
        }
        tmp->values = s->values;
    }
}

static bool same_rows(const stream_src *s, const size_t *idx, int n)
{
    return s->pending && s->n_pend == n && memcmp(s->pend, idx, (size_t)n * sizeof *idx) == 0;
}

static int stream_gather(dp_rowsrc *r, const size_t *idx, int n, float *x, int32_t *labels,
                         float *values)
{
    stream_src *s = (stream_src *)r;
    int rc = DP_OK;
    if (n <= 0) {
        return DP_OK;
    }
    if (same_rows(s, idx, n)) {
        rc = finish_read(s); /* read ahead: wait for what is not done */
    } else {
        if (s->pending) {
            (void)finish_read(s); /* read ahead rows that were not asked for after all */
        }
        rc = read_now(s, idx, n);
    }
    if (rc != DP_OK) {
        const size_t nf = (size_t)s->shape.n_features;
        const size_t nt = (size_t)(s->shape.n_targets > 0 ? s->shape.n_targets : 0);
        if (x) {
            memset(x, 0, (size_t)n * nf * sizeof *x);
        }
        if (labels && s->base.labels) {
            memset(labels, 0, (size_t)n * sizeof *labels);
        }
        if (values && s->base.values) {
            memset(values, 0, (size_t)n * nt * sizeof *values);
        }
        return rc;
    }
    dp_split tmp;
    as_split(s, &tmp);
    return dp_split_gather(&tmp, s->slot, n, x, labels, values);
}

static void stream_prefetch(dp_rowsrc *r, const size_t *idx, int n)
{
    stream_src *s = (stream_src *)r;
    if (n <= 0 || same_rows(s, idx, n)) {
        return;
    }
    if (s->pending) {
        (void)finish_read(s);
    }
    if (!s->has_thread) {
        s->has_thread = pthread_create(&s->th, NULL, reader, s) == 0;
        if (!s->has_thread) {
            return; /* no thread: the gather reads the rows itself */
        }
    }
    if (plan_read(s, idx, n) != DP_OK) {
        return; /* the gather of these rows meets the same error and reports it */
    }
    pthread_mutex_lock(&s->mu);
    s->job = JOB_ASKED;
    s->job_rc = DP_OK;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    s->pending = true;
}

void dp_stream_free(dp_rowsrc *r)
{
    stream_src *s = (stream_src *)r;
    if (!s) {
        return;
    }
    if (s->has_thread) {
        pthread_mutex_lock(&s->mu);
        while (s->job == JOB_ASKED) {
            pthread_cond_wait(&s->cv, &s->mu);
        }
        s->quit = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    if (s->fd >= 0) {
        close(s->fd);
    }
    free(s->stage);
    free(s->off);
    free(s->len);
    free(s->ord);
    free(s->slot);
    free(s->x);
    free(s->labels);
    free(s->values);
    free(s->pend);
    free(s);
}

/* A row source for split sp (raw: where its arrays are) of path. */
static int make_src(const char *path, dp_split *sp, const dp_raw_split *raw, bool labels,
                    uint64_t fingerprint)
{
    stream_src *s = calloc(1, sizeof *s);
    if (!s) {
        return dp_err(DP_ENOMEM, "out of memory (streamed split)");
    }
    snprintf(s->path, sizeof s->path, "%s", path);
    s->raw = *raw;
    s->shape = *sp;
    s->base = (dp_rowsrc){.gather = stream_gather, .prefetch = stream_prefetch,
                          .labels = labels, .values = !labels && raw->y_row > 0,
                          .fingerprint = fingerprint};
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        const int e = errno;
        dp_stream_free(&s->base);
        return dp_err(DP_EIO, "%s: cannot open for reading rows (%s)", path, strerror(e));
    }
    sp->src = &s->base;
    return DP_OK;
}

int dp_dataset_open_stream(const char *path, bool scan, const dp_stream_info *info,
                           dp_dataset **out, dp_stream_info *scanned)
{
    int rc = DP_OK;
    dp_dataset *d = NULL;
    dp_raw_split raw[2];
    dp_stream_info si = {0};
    *out = NULL;
    DP_TRY(dp_dataset_layout(path, &d, raw));
    if (scan) {
        DP_TRY(dp_dataset_stream_scan(path, d, raw, &si));
        if (scanned) {
            *scanned = si;
        }
    } else {
        si = *info;
    }
    d->n_classes = si.n_classes;
    const bool labels = raw[0].y.cls != 'f';
    DP_TRY(make_src(path, &d->train, &raw[0], labels, si.fingerprint[0]));
    if (d->test.n > 0) {
        DP_TRY(make_src(path, &d->test, &raw[1], labels, si.fingerprint[1]));
    }
    *out = d;
    d = NULL;
done:
    dp_dataset_free(&d);
    return rc;
}
