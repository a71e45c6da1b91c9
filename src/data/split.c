/* split.c: rows of an in-memory split into the batch buffers of the training step (and the
 * prefetch of the next batch's rows). No HDF5 here: the simulation build (launch/simulate.sh)
 * compiles this file with smpicc. */
#include "dptrain/data.h"

#include <string.h>

int dp_split_gather(const dp_split *s, const size_t *idx, int n_idx, float *x, int32_t *labels,
                    float *values)
{
    if (s->src) {
        return s->src->gather(s->src, idx, n_idx, x, labels, values);
    }
    size_t nf = s->n_features > 0 ? (size_t)s->n_features : 0;
    size_t nt = s->n_targets > 0 ? (size_t)s->n_targets : 0;
    const float scale = s->x_scale, offset = s->x_offset; /* not reloaded per element */
    for (int i = 0; i < n_idx; i++) {
        size_t r = idx[i];
        float *xo = x ? x + (size_t)i * nf : NULL;
        if (xo && s->x_u8) {
            const uint8_t *xi = s->x_u8 + r * nf;
            for (size_t j = 0; j < nf; j++) {
                xo[j] = (float)xi[j] * scale + offset;
            }
        } else if (xo && s->x_f32) {
            const float *xi = s->x_f32 + r * nf;
            for (size_t j = 0; j < nf; j++) {
                xo[j] = xi[j] * scale + offset;
            }
        }
        if (labels && s->labels) {
            labels[i] = s->labels[r];
        }
        if (values && s->values) {
            memcpy(values + (size_t)i * nt, s->values + r * nt, nt * sizeof *values);
        }
    }
    return 0;
}

void dp_split_prefetch(const dp_split *s, const size_t *idx, int n_idx)
{
    if (s->src) {
        s->src->prefetch(s->src, idx, n_idx);
        return;
    }
    const size_t nf = s->n_features > 0 ? (size_t)s->n_features : 0;
    const size_t row_bytes = nf * (s->x_u8 ? 1 : sizeof(float));
    const char *base = s->x_u8 ? (const char *)s->x_u8 : (const char *)s->x_f32;
    for (int i = 0; i < n_idx && base; i++) {
        const char *row = base + idx[i] * row_bytes;
        for (size_t o = 0; o < row_bytes; o += 64) {
            __builtin_prefetch(row + o, 0, 3);
        }
        __builtin_prefetch(row + row_bytes - 1, 0, 3);
    }
}
