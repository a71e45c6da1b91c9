/* predict_io.c: predictions files (CSV or HDF5), written atomically. */
#include "dptrain/io.h"

#include "dptrain/err.h"
#include "h5util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static bool ends_with_csv(const char *p)
{
    size_t n = strlen(p);
    return n >= 4 && strcasecmp(p + n - 4, ".csv") == 0;
}

static int save_csv(const char *path, const dp_predictions *p)
{
    int rc = DP_OK;
    char tmp[4096];
    FILE *csv = NULL;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        return dp_err(DP_EINVAL, "%s: path too long", path);
    }
    dp_io_remove_stale_tmp(path);
    if (!(csv = fopen(tmp, "w"))) {
        return dp_err(DP_EIO, "%s: cannot create (%s)", tmp, strerror(errno));
    }
    /* predicted class, the outputs, then the true class when the data has one */
    const bool lab = p->labels != NULL, truth = lab && p->true_labels != NULL;
    if (lab) {
        fprintf(csv, "predicted");
    }
    for (int j = 0; j < p->k; j++) {
        fprintf(csv, "%s%s%d", (lab || j) ? "," : "", p->column, j + p->first_column);
    }
    fprintf(csv, "%s\n", truth ? ",true_label" : "");
    for (size_t i = 0; i < p->n; i++) {
        if (lab) {
            fprintf(csv, "%d", (int)p->labels[i]);
        }
        for (int j = 0; j < p->k; j++) {
            fprintf(csv, "%s%.9g", (lab || j) ? "," : "", p->values[i * (size_t)p->k + j]);
        }
        if (truth) {
            fprintf(csv, ",%d", (int)p->true_labels[i]);
        }
        fputc('\n', csv);
    }
    if (fflush(csv) != 0 || ferror(csv) || fsync(fileno(csv)) != 0) {
        DP_FAIL(DP_EIO, "%s: writing failed (%s)", tmp, strerror(errno));
    }
    int cr = fclose(csv);
    csv = NULL;
    if (cr != 0) {
        DP_FAIL(DP_EIO, "%s: closing failed (%s)", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        DP_FAIL(DP_EIO, "%s: cannot rename %s onto it (%s)", path, tmp, strerror(errno));
    }
    tmp[0] = '\0';
    rc = dp_h5_sync_dir_of(path);
done:
    if (csv) {
        fclose(csv);
    }
    if (tmp[0]) {
        remove(tmp);
    }
    return rc;
}

int dp_predictions_save(const char *path, const dp_predictions *p)
{
    int rc = DP_OK;
    dp_h5_atomic a = DP_H5_ATOMIC_INIT;
    hsize_t dims[2] = {(hsize_t)p->n, (hsize_t)p->k};
    if (ends_with_csv(path)) {
        return save_csv(path, p);
    }
    DP_TRY(dp_h5_atomic_create(&a, path, 0));
    DP_TRY(dp_h5_write(a.f, path, "predictions", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims,
                       p->values));
    if (p->labels) {
        DP_TRY(dp_h5_write(a.f, path, "labels", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dims,
                           p->labels));
        if (p->true_labels) {
            DP_TRY(dp_h5_write(a.f, path, "true_labels", H5T_STD_I32LE, H5T_NATIVE_INT32, 1,
                               dims, p->true_labels));
        }
    }
    DP_TRY(dp_h5_write(a.f, path, "rows", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, dims, p->rows));
    for (int i = 0; i < p->n_attrs; i++) {
        DP_TRY(dp_h5_put_str_attr(a.f, path, p->attrs[i][0], p->attrs[i][1]));
    }
    rc = dp_h5_atomic_commit(&a, NULL, NULL);
done:
    if (rc != DP_OK) {
        dp_h5_atomic_abort(&a);
    }
    return rc;
}
