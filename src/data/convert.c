/* convert.c: converters from IDX (MNIST / Fashion-MNIST) and CSV files, gzipped or plain,
 * into dataset files in the documented HDF5 layout. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data_internal.h"
#include "dptrain/err.h"

enum {
    IDX_MAGIC_LABELS = 0x00000801, /* unsigned bytes, 1 dimension */
    IDX_MAGIC_IMAGES = 0x00000803, /* unsigned bytes, 3 dimensions */
};

#define IO_CHUNK_BYTES ((size_t)1 << 24) /* first buffer size and largest single gzread */

/* Opens path with zlib (gzipped or plain, detected by content). */
static int gz_open(const char *path, gzFile *gz)
{
    errno = 0;
    *gz = gzopen(path, "rb");
    if (!*gz) {
        return dp_err(DP_EIO, "%s: cannot open (%s)", path,
                      errno ? strerror(errno) : "out of memory in zlib");
    }
    return DP_OK;
}

/* Closes *gz if open. A failed close becomes the status only if nothing failed before. */
static int gz_close(gzFile *gz, int rc, const char *path)
{
    int st;
    if (!*gz) {
        return rc;
    }
    st = gzclose(*gz);
    *gz = NULL;
    if (st != Z_OK && rc == DP_OK) {
        rc = dp_err(DP_EIO, "%s: read error on close (zlib status %d): truncated or corrupt file",
                    path, st);
    }
    return rc;
}

/* The message of a failed gzread / gzgets. */
static int gz_fail(gzFile gz, const char *path, size_t at_byte)
{
    int errnum = Z_OK;
    const char *msg = gzerror(gz, &errnum);
    return dp_err(DP_EIO, "%s: read error after %zu bytes (%s): truncated or corrupt file", path,
                  at_byte, errnum == Z_ERRNO ? strerror(errno) : (msg ? msg : "zlib error"));
}

/* Reads up to n_bytes into buf; *got is how many arrived (less only at end of file). */
static int gz_read_upto(gzFile gz, const char *path, size_t at_byte, void *buf, size_t n_bytes,
                        size_t *got)
{
    unsigned char *p = buf;
    *got = 0;
    while (*got < n_bytes) {
        size_t want = n_bytes - *got < IO_CHUNK_BYTES ? n_bytes - *got : IO_CHUNK_BYTES;
        int r = gzread(gz, p + *got, (unsigned)want);
        if (r < 0) {
            return gz_fail(gz, path, at_byte + *got);
        }
        if (r == 0) {
            break;
        }
        *got += (size_t)r;
    }
    return DP_OK;
}

/* --- IDX ---------------------------------------------------------------------------------- */

typedef struct {
    size_t n, rows, cols; /* rows = cols = 1 for labels */
    uint8_t *data;        /* n * rows * cols bytes */
} idx_file;

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Reads an IDX file of unsigned bytes: images ([n, rows, cols]) or labels ([n]). The data
 * buffer grows as bytes arrive, so a header that promises more than the file holds is
 * reported as truncation, not as a huge allocation. */
static int idx_read(const char *path, bool images, idx_file *out)
{
    int rc = DP_OK;
    gzFile gz = NULL;
    unsigned char hdr[16], extra;
    uint32_t magic, expect = images ? IDX_MAGIC_IMAGES : IDX_MAGIC_LABELS;
    size_t ndims = images ? 3 : 1, got, total, len = 0, cap;
    uint8_t *buf = NULL;

    memset(out, 0, sizeof *out);
    DP_TRY(gz_open(path, &gz));
    DP_TRY(gz_read_upto(gz, path, 0, hdr, 4, &got));
    if (got < 4) {
        DP_FAIL(DP_EFORMAT, "%s: truncated: %zu bytes, shorter than the 4-byte IDX magic", path,
                got);
    }
    magic = be32(hdr);
    if (magic != expect) {
        DP_FAIL(DP_EFORMAT, "%s: bad magic 0x%08x (expected 0x%08x for %s)", path, magic, expect,
                images ? "images" : "labels");
    }
    DP_TRY(gz_read_upto(gz, path, 4, hdr + 4, 4 * ndims, &got));
    if (got < 4 * ndims) {
        DP_FAIL(DP_EFORMAT, "%s: truncated header: %zu of %zu dimension bytes", path, got,
                4 * ndims);
    }
    out->n = be32(hdr + 4);
    out->rows = images ? be32(hdr + 8) : 1;
    out->cols = images ? be32(hdr + 12) : 1;
    if (out->n == 0 || out->rows == 0 || out->cols == 0) {
        DP_FAIL(DP_EFORMAT, "%s: header gives an empty shape [%zu, %zu, %zu]", path, out->n,
                out->rows, out->cols);
    }
    if (out->rows * out->cols > (size_t)INT_MAX || out->n > SIZE_MAX / (out->rows * out->cols)) {
        DP_FAIL(DP_EFORMAT, "%s: header gives an impossible shape [%zu, %zu, %zu]", path, out->n,
                out->rows, out->cols);
    }
    total = out->n * out->rows * out->cols;
    cap = total < IO_CHUNK_BYTES ? total : IO_CHUNK_BYTES;
    DP_CALLOC(buf, cap);
    for (;;) {
        DP_TRY(gz_read_upto(gz, path, 4 + 4 * ndims + len, buf + len, cap - len, &got));
        len += got;
        if (len < cap || len == total) {
            break;
        }
        {
            size_t ncap = cap > total / 2 ? total : cap * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                DP_FAIL(DP_ENOMEM, "%s: out of memory growing the read buffer to %zu bytes",
                        path, ncap);
            }
            buf = nb;
            cap = ncap;
        }
    }
    if (len < total) {
        if (images) {
            DP_FAIL(DP_EFORMAT,
                    "%s: truncated: the header promises %zu images of %zux%zu (%zu bytes) but "
                    "the file holds %zu",
                    path, out->n, out->rows, out->cols, total, len);
        }
        DP_FAIL(DP_EFORMAT, "%s: truncated: the header promises %zu labels but the file holds %zu",
                path, out->n, len);
    }
    DP_TRY(gz_read_upto(gz, path, 4 + 4 * ndims + len, &extra, 1, &got));
    if (got != 0) {
        DP_FAIL(DP_EFORMAT, "%s: data continues after the %zu %s the header promises", path,
                out->n, images ? "images" : "labels");
    }
    out->data = buf;
    buf = NULL;
done:
    rc = gz_close(&gz, rc, path);
    if (rc != DP_OK) {
        free(out->data);
        out->data = NULL;
    }
    free(buf);
    return rc;
}

/* Reads an images/labels pair into split s (uint8 x scaled by 1/255, int labels). */
static int idx_read_split(const char *images_path, const char *labels_path, dp_split *s,
                          idx_file *img)
{
    int rc = DP_OK;
    idx_file lab = {0};
    DP_TRY(idx_read(images_path, true, img));
    DP_TRY(idx_read(labels_path, false, &lab));
    if (lab.n != img->n) {
        DP_FAIL(DP_EFORMAT, "%s: %zu labels but %s has %zu images", labels_path, lab.n,
                images_path, img->n);
    }
    DP_CALLOC(s->labels, lab.n);
    for (size_t i = 0; i < lab.n; i++) {
        s->labels[i] = lab.data[i];
    }
    s->n = img->n;
    s->n_features = (int)(img->rows * img->cols);
    s->x_u8 = img->data;
    img->data = NULL;
    s->x_scale = 1.0f / 255.0f;
    s->x_offset = 0.0f;
done:
    free(lab.data);
    return rc;
}

int dp_convert_idx(const char *train_images, const char *train_labels, const char *test_images,
                   const char *test_labels, const char *out_path)
{
    int rc = DP_OK;
    dp_dataset d = {0};
    idx_file tr = {0}, te = {0};
    int32_t mx = 0;
    size_t dims[2];

    if (!train_images || !train_labels || !out_path) {
        return dp_err(DP_EINVAL, "convert idx: the train images, train labels and output file "
                                 "are required");
    }
    if ((test_images == NULL) != (test_labels == NULL)) {
        return dp_err(DP_EINVAL, "convert idx: test images and test labels go together");
    }
    DP_TRY(idx_read_split(train_images, train_labels, &d.train, &tr));
    if (test_images) {
        DP_TRY(idx_read_split(test_images, test_labels, &d.test, &te));
        if (te.rows != tr.rows || te.cols != tr.cols) {
            DP_FAIL(DP_EFORMAT, "%s: images are %zux%zu but %s has %zux%zu", test_images,
                    te.rows, te.cols, train_images, tr.rows, tr.cols);
        }
    }
    for (size_t i = 0; i < d.train.n; i++) {
        mx = d.train.labels[i] > mx ? d.train.labels[i] : mx;
    }
    for (size_t i = 0; i < d.test.n; i++) {
        mx = d.test.labels[i] > mx ? d.test.labels[i] : mx;
    }
    d.n_classes = (int)mx + 1;
    dims[0] = tr.rows;
    dims[1] = tr.cols;
    DP_TRY(dp_dataset_save_shaped(out_path, &d, 2, dims));
done:
    free(tr.data);
    free(te.data);
    dp_split_clear(&d.train);
    dp_split_clear(&d.test);
    return rc;
}

/* --- CSV ---------------------------------------------------------------------------------- */

/* csv_read's label_col for rows of features alone. */
#define CSV_NO_LABEL (-2)

typedef struct {
    gzFile gz;
    const char *path;
    char *buf;
    size_t cap;
    long line;      /* number of the line last returned, from 1 */
    size_t n_bytes; /* bytes consumed so far, for messages */
} csv_reader;

/* Next line into r->buf without its line ending; *eof when there is none. */
static int csv_next_line(csv_reader *r, bool *eof)
{
    int rc = DP_OK;
    size_t len = 0;
    *eof = false;
    for (;;) {
        char *got;
        if (r->cap - len < 2) {
            size_t ncap = r->cap * 2;
            char *nb = ncap > (size_t)INT_MAX ? NULL : realloc(r->buf, ncap);
            if (!nb) {
                DP_FAIL(DP_ENOMEM, "%s:%ld: line too long for memory", r->path, r->line + 1);
            }
            r->buf = nb;
            r->cap = ncap;
        }
        got = gzgets(r->gz, r->buf + len, (int)(r->cap - len));
        if (!got) {
            int errnum = Z_OK;
            (void)gzerror(r->gz, &errnum);
            if (errnum != Z_OK) {
                DP_TRY(gz_fail(r->gz, r->path, r->n_bytes + len));
            }
            if (len == 0) {
                *eof = true;
                goto done;
            }
            break;
        }
        size_t n = strlen(r->buf + len);
        /* gzgets stops at a newline, the end of the file or a full buffer: stopping short of
         * all three means a NUL byte, which no text file holds. */
        if (n + 1 < r->cap - len && (n == 0 || r->buf[len + n - 1] != '\n') && !gzeof(r->gz)) {
            DP_FAIL(DP_EFORMAT, "%s:%ld: a NUL byte at byte %zu: not a text CSV file", r->path,
                    r->line + 1, r->n_bytes + len + n);
        }
        len += n;
        if (len > 0 && r->buf[len - 1] == '\n') {
            break;
        }
    }
    r->n_bytes += len;
    r->line++;
    while (len > 0 && (r->buf[len - 1] == '\n' || r->buf[len - 1] == '\r')) {
        r->buf[--len] = '\0';
    }
    for (size_t i = 0; i < len; i++) {
        const unsigned char ch = (unsigned char)r->buf[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            DP_FAIL(DP_EFORMAT, "%s:%ld: control byte 0x%02x at column %zu: not a text CSV file",
                    r->path, r->line, ch, i + 1);
        }
    }
done:
    return rc;
}

/* field as printable text for a message: at most 40 bytes, anything but printable ASCII
 * as '?' (a binary file's bytes could hold terminal control sequences). */
static const char *printable(const char *field, char out[41])
{
    size_t i = 0;
    for (; field[i] && i < 40; i++) {
        const unsigned char ch = (unsigned char)field[i];
        out[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[i] = '\0';
    return out;
}

/* Splits line in place at commas into fields (trimmed of blanks); *n_fields may exceed
 * max_fields, in which case only the first max_fields are stored. */
static void csv_split(char *line, char **fields, int max_fields, int *n_fields)
{
    int n = 0;
    char *p = line;
    for (;;) {
        char *end = strchr(p, ',');
        char *e = end ? end : p + strlen(p);
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) {
            e--;
        }
        if (n < max_fields) {
            fields[n] = p;
        }
        n++;
        if (!end) {
            *e = '\0';
            break;
        }
        *e = '\0';
        p = end + 1;
    }
    *n_fields = n;
}

static int csv_count_fields(const char *line)
{
    int n = 1;
    for (const char *p = line; *p; p++) {
        n += *p == ',';
    }
    return n;
}

static bool csv_blank(const char *line)
{
    for (const char *p = line; *p; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r') {
            return false;
        }
    }
    return true;
}

/* Whole field is one number (strtod syntax). */
static bool csv_number(const char *field, double *v)
{
    char *end;
    if (!*field) {
        return false;
    }
    *v = strtod(field, &end);
    return *end == '\0';
}

/* Reads one CSV file into s. label_col: the label's column (-1: the last), or CSV_NO_LABEL
 * for feature rows alone (n_targets 0). n_cols: in, the expected column count (0: take the
 * first data row's) and out, the count found; like_path names the file that fixed the
 * count. */
static int csv_read(const char *path, int label_col, int n_targets, int *n_cols,
                    const char *like_path, dp_split *s)
{
    int rc = DP_OK;
    csv_reader r = {0};
    char **fields = NULL;
    double *row = NULL;
    size_t cap_rows = 0;
    bool eof, first = true;
    int nc = *n_cols, nf = 0, lc = 0, got;

    r.path = path;
    r.cap = 4096;
    DP_CALLOC(r.buf, r.cap);
    DP_TRY(gz_open(path, &r.gz));
    for (;;) {
        DP_TRY(csv_next_line(&r, &eof));
        if (eof) {
            break;
        }
        if (csv_blank(r.buf)) {
            continue;
        }
        got = csv_count_fields(r.buf);
        if (first) {
            /* a first line that is not all numbers is a header */
            bool header = false;
            char *copy = NULL;
            double v;
            int n_split;
            char **f = NULL;
            size_t blen = strlen(r.buf) + 1;
            DP_CALLOC(copy, blen);
            memcpy(copy, r.buf, blen);
            f = calloc((size_t)got, sizeof *f);
            if (!f) {
                free(copy);
                DP_FAIL(DP_ENOMEM, "%s: out of memory splitting line %ld", path, r.line);
            }
            csv_split(copy, f, got, &n_split);
            for (int j = 0; j < n_split && !header; j++) {
                header = !csv_number(f[j], &v);
            }
            free(f);
            free(copy);
            first = false;
            if (header) {
                continue;
            }
        }
        if (!fields) {
            /* the first data row fixes the columns (for test: train's count is expected) */
            if (nc == 0) {
                nc = got;
            }
            if (label_col == CSV_NO_LABEL ? nc < 1 : n_targets > 0 ? nc <= n_targets : nc < 2) {
                DP_FAIL(DP_EFORMAT,
                        "%s:%ld: %d columns: need at least one feature column besides %s",
                        path, r.line, nc, n_targets > 0 ? "the targets" : "the label");
            }
            if (n_targets == 0 && label_col != CSV_NO_LABEL && label_col >= nc) {
                DP_FAIL(DP_EINVAL, "%s:%ld: label column %d does not exist (rows have %d "
                        "columns, counted from 0)", path, r.line, label_col, nc);
            }
            lc = label_col == CSV_NO_LABEL ? -1 : label_col < 0 ? nc - 1 : label_col;
            nf = label_col == CSV_NO_LABEL ? nc : n_targets > 0 ? nc - n_targets : nc - 1;
            DP_CALLOC(fields, nc);
            DP_CALLOC(row, nc);
        }
        if (got != nc) {
            DP_FAIL(DP_EFORMAT, "%s:%ld: %d columns, expected %d%s%s%s", path, r.line, got, nc,
                    like_path ? " (as in " : "", like_path ? like_path : "",
                    like_path ? ")" : "");
        }
        csv_split(r.buf, fields, nc, &got);
        for (int j = 0; j < nc; j++) {
            if (!csv_number(fields[j], &row[j])) {
                char pr[41];
                DP_FAIL(DP_EFORMAT, "%s:%ld: column %d: '%s' is not a number", path, r.line,
                        j + 1, printable(fields[j], pr));
            }
            if (!isfinite(row[j]) || !isfinite((float)row[j])) {
                char pr[41];
                DP_FAIL(DP_EFORMAT, "%s:%ld: column %d: '%s' is not a finite float", path,
                        r.line, j + 1, printable(fields[j], pr));
            }
        }
        if (s->n == cap_rows) {
            size_t ncap = cap_rows ? cap_rows * 2 : 1024;
            float *nx = NULL, *nv = NULL;
            int32_t *nl = NULL;
            if (ncap > SIZE_MAX / sizeof(float) / (size_t)nc) {
                DP_FAIL(DP_ENOMEM, "%s:%ld: too many rows for memory", path, r.line);
            }
            nx = realloc(s->x_f32, ncap * (size_t)nf * sizeof *nx);
            if (!nx) {
                DP_FAIL(DP_ENOMEM, "%s:%ld: out of memory for %zu rows", path, r.line, ncap);
            }
            s->x_f32 = nx;
            if (n_targets > 0) {
                nv = realloc(s->values, ncap * (size_t)n_targets * sizeof *nv);
                if (!nv) {
                    DP_FAIL(DP_ENOMEM, "%s:%ld: out of memory for %zu rows", path, r.line, ncap);
                }
                s->values = nv;
            } else if (lc >= 0) {
                nl = realloc(s->labels, ncap * sizeof *nl);
                if (!nl) {
                    DP_FAIL(DP_ENOMEM, "%s:%ld: out of memory for %zu rows", path, r.line, ncap);
                }
                s->labels = nl;
            }
            cap_rows = ncap;
        }
        {
            float *xo = s->x_f32 + s->n * (size_t)nf;
            if (n_targets > 0) {
                for (int j = 0; j < nf; j++) {
                    xo[j] = (float)row[j];
                }
                for (int t = 0; t < n_targets; t++) {
                    s->values[s->n * (size_t)n_targets + (size_t)t] = (float)row[nf + t];
                }
            } else if (lc < 0) {
                for (int j = 0; j < nf; j++) {
                    xo[j] = (float)row[j];
                }
            } else {
                double v = row[lc];
                if (v < 0 || v > (double)INT32_MAX - 1 || v != floor(v)) {
                    char pr[41];
                    DP_FAIL(DP_EFORMAT,
                            "%s:%ld: column %d: label '%s' is not a non-negative integer",
                            path, r.line, lc + 1, printable(fields[lc], pr));
                }
                s->labels[s->n] = (int32_t)v;
                for (int j = 0, o = 0; j < nc; j++) {
                    if (j != lc) {
                        xo[o++] = (float)row[j];
                    }
                }
            }
        }
        s->n++;
    }
    if (s->n == 0) {
        DP_FAIL(DP_EFORMAT, "%s: no data rows", path);
    }
    s->n_features = nf;
    s->n_targets = n_targets > 0 ? n_targets : 0;
    s->x_scale = 1.0f;
    s->x_offset = 0.0f;
    *n_cols = nc;
done:
    rc = gz_close(&r.gz, rc, path);
    free(r.buf);
    free(fields);
    free(row);
    return rc;
}

int dp_csv_read_features(const char *path, dp_split *s)
{
    int n_cols = 0;
    return csv_read(path, CSV_NO_LABEL, 0, &n_cols, NULL, s);
}

int dp_convert_csv(const char *train_csv, const char *test_csv, int label_col, int n_targets,
                   const char *out_path)
{
    int rc = DP_OK, n_cols = 0;
    dp_dataset d = {0};

    if (!train_csv || !out_path) {
        return dp_err(DP_EINVAL, "convert csv: the train file and the output file are required");
    }
    if (n_targets < 0 || label_col < -1) {
        return dp_err(DP_EINVAL,
                      "convert csv: label column %d / targets %d: the label column counts from "
                      "0 (-1: last), targets must be >= 0",
                      label_col, n_targets);
    }
    DP_TRY(csv_read(train_csv, label_col, n_targets, &n_cols, NULL, &d.train));
    if (test_csv) {
        DP_TRY(csv_read(test_csv, label_col, n_targets, &n_cols, train_csv, &d.test));
    }
    if (n_targets == 0) {
        int32_t mx = 0;
        for (size_t i = 0; i < d.train.n; i++) {
            mx = d.train.labels[i] > mx ? d.train.labels[i] : mx;
        }
        for (size_t i = 0; i < d.test.n; i++) {
            mx = d.test.labels[i] > mx ? d.test.labels[i] : mx;
        }
        d.n_classes = (int)mx + 1;
    }
    DP_TRY(dp_dataset_save(out_path, &d));
done:
    dp_split_clear(&d.train);
    dp_split_clear(&d.test);
    return rc;
}
