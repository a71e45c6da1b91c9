/* conv.c: the image kernels (NCHW): 2-D convolution by im2col and sgemm, max and average
 * pooling; the image-stage tokens of the layer spec and the shapes they give. Local. */
#include "dptrain/blas.h"
#include "dptrain/err.h"
#include "dptrain/nn.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The unfolded input of a chunk is at most this many floats (1 MB), unless one sample alone
 * needs more: small enough to stay in the core's L2 cache between the unfolding and the
 * sgemm that reads it. Measured on the Fashion-MNIST CNN (dptrain bench, 1 rank, batch 64,
 * SkylakeX kernels, medians of 3 runs): 2^16 to 2^18 floats 3,450 to 3,520 samples/s, 2^20
 * 2,900, 2^22 2,590. */
#define DP_CONV_COL_FLOATS (1L << 18)

static size_t col_rows(const dp_conv *c) { return (size_t)c->in_c * c->kh * c->kw; }
static size_t out_plane(const dp_conv *c) { return (size_t)c->out_h * c->out_w; }

int dp_conv_chunk(const dp_conv *c)
{
    size_t per = col_rows(c) * out_plane(c);
    long k = per > 0 ? (long)(DP_CONV_COL_FLOATS / per) : 1;
    return k < 1 ? 1 : (k > INT_MAX ? INT_MAX : (int)k);
}
size_t dp_conv_col_floats(const dp_conv *c)
{
    return (size_t)dp_conv_chunk(c) * col_rows(c) * out_plane(c);
}
size_t dp_conv_tmp_floats(const dp_conv *c)
{
    /* the product, then a row of ones for the bias gradient's sums */
    return (size_t)dp_conv_chunk(c) * ((size_t)c->out_c + 1) * out_plane(c);
}

/* GCC would turn the short copy loops below back into memcpy and memset calls. */
#if defined(__GNUC__) && !defined(__clang__)
#define DP_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define DP_NO_LIBCALLS
#endif

/* col (K, nb*P), K = in_c*kh*kw rows in (c, i, j) order, column n*P + oh*out_w + ow:
 * x[n][c][oh*sh - ph + i][ow*sw - pw + j], 0 outside the image. */
DP_NO_LIBCALLS static void im2col(const dp_conv *c, float *col, const float *x, int nb)
{
    const int H = c->in_h, W = c->in_w, Ho = c->out_h, Wo = c->out_w;
    const size_t P = out_plane(c), ld = (size_t)nb * P, plane = (size_t)H * W;
    for (int ch = 0; ch < c->in_c; ch++) {
        for (int i = 0; i < c->kh; i++) {
            for (int j = 0; j < c->kw; j++) {
                float *row = col + ((size_t)(ch * c->kh + i) * c->kw + j) * ld;
                for (int n = 0; n < nb; n++) {
                    const float *xp = x + ((size_t)n * c->in_c + ch) * plane;
                    float *dst = row + (size_t)n * P;
                    for (int oh = 0; oh < Ho; oh++) {
                        const int ih = oh * c->sh - c->ph + i;
                        float *d = dst + (size_t)oh * Wo;
                        if (ih < 0 || ih >= H) {
                            memset(d, 0, (size_t)Wo * sizeof *d);
                            continue;
                        }
                        const float *src = xp + (size_t)ih * W;
                        if (c->sw == 1) {
                            /* columns ow with 0 <= ow - pw + j < W are a contiguous run */
                            int lo = c->pw - j, hi = W + c->pw - j; /* [lo, hi) */
                            lo = lo < 0 ? 0 : (lo > Wo ? Wo : lo);
                            hi = hi < lo ? lo : (hi > Wo ? Wo : hi);
                            /* loops, not memcpy: the runs are short (a row of the
                             * output), where a library call costs more than the copy */
                            const float *sp = src - c->pw + j;
                            for (int ow = 0; ow < lo; ow++) {
                                d[ow] = 0.0f;
                            }
                            for (int ow = lo; ow < hi; ow++) {
                                d[ow] = sp[ow];
                            }
                            for (int ow = hi; ow < Wo; ow++) {
                                d[ow] = 0.0f;
                            }
                        } else {
                            for (int ow = 0; ow < Wo; ow++) {
                                const int iw = ow * c->sw - c->pw + j;
                                d[ow] = (iw >= 0 && iw < W) ? src[iw] : 0.0f;
                            }
                        }
                    }
                }
            }
        }
    }
}

/* dx (nb, in_c, H, W) += the columns of col folded back (the adjoint of im2col). */
static void col2im(const dp_conv *c, float *dx, const float *col, int nb)
{
    const int H = c->in_h, W = c->in_w, Ho = c->out_h, Wo = c->out_w;
    const size_t P = out_plane(c), ld = (size_t)nb * P, plane = (size_t)H * W;
    for (int ch = 0; ch < c->in_c; ch++) {
        for (int i = 0; i < c->kh; i++) {
            for (int j = 0; j < c->kw; j++) {
                const float *row = col + ((size_t)(ch * c->kh + i) * c->kw + j) * ld;
                for (int n = 0; n < nb; n++) {
                    float *xp = dx + ((size_t)n * c->in_c + ch) * plane;
                    const float *s = row + (size_t)n * P;
                    for (int oh = 0; oh < Ho; oh++) {
                        const int ih = oh * c->sh - c->ph + i;
                        if (ih < 0 || ih >= H) {
                            continue;
                        }
                        float *d = xp + (size_t)ih * W;
                        const float *sr = s + (size_t)oh * Wo;
                        if (c->sw == 1) {
                            int lo = c->pw - j, hi = W + c->pw - j; /* as in im2col */
                            lo = lo < 0 ? 0 : (lo > Wo ? Wo : lo);
                            hi = hi < lo ? lo : (hi > Wo ? Wo : hi);
                            float *dd = d - c->pw + j;
                            for (int ow = lo; ow < hi; ow++) {
                                dd[ow] += sr[ow];
                            }
                            continue;
                        }
                        for (int ow = 0; ow < Wo; ow++) {
                            const int iw = ow * c->sw - c->pw + j;
                            if (iw >= 0 && iw < W) {
                                d[iw] += sr[ow];
                            }
                        }
                    }
                }
            }
        }
    }
}

void dp_conv_forward(const dp_conv *c, float *y, const float *x, int B, float *col, float *tmp)
{
    const int chunk = dp_conv_chunk(c), K = (int)col_rows(c);
    const size_t P = out_plane(c), in_s = (size_t)c->in_c * c->in_h * c->in_w;
    for (int n0 = 0; n0 < B; n0 += chunk) {
        const int nb = B - n0 < chunk ? B - n0 : chunk;
        im2col(c, col, x + (size_t)n0 * in_s, nb);
        /* tmp (out_c, nb*P) = w (out_c, K) col (K, nb*P) */
        dp_sgemm(false, false, c->out_c, nb * (int)P, K, 1.0f, c->w, col, 0.0f, tmp);
        for (int n = 0; n < nb; n++) {
            for (int o = 0; o < c->out_c; o++) {
                float *d = y + ((size_t)(n0 + n) * c->out_c + o) * P;
                const float *s = tmp + (size_t)o * nb * P + (size_t)n * P, bo = c->b[o];
                for (size_t p = 0; p < P; p++) {
                    d[p] = s[p] + bo;
                }
            }
        }
    }
}

void dp_conv_backward(dp_conv *c, float *dx, const float *dy, const float *x, int B,
                      bool accumulate, float *col, float *tmp)
{
    const int chunk = dp_conv_chunk(c), K = (int)col_rows(c);
    const size_t P = out_plane(c), in_s = (size_t)c->in_c * c->in_h * c->in_w;
    if (!accumulate) {
        memset(c->dw, 0, (size_t)c->out_c * K * sizeof *c->dw);
        memset(c->db, 0, (size_t)c->out_c * sizeof *c->db);
    }
    for (int n0 = 0; n0 < B; n0 += chunk) {
        const int nb = B - n0 < chunk ? B - n0 : chunk;
        /* tmp (out_c, nb*P) = dy of the chunk, channel-major; db += its row sums, as a
         * product with a row of ones (summed like dw, in sgemm's order) */
        float *ones = tmp + (size_t)c->out_c * nb * P;
        for (int o = 0; o < c->out_c; o++) {
            float *d = tmp + (size_t)o * nb * P;
            for (int n = 0; n < nb; n++) {
                memcpy(d + (size_t)n * P, dy + ((size_t)(n0 + n) * c->out_c + o) * P,
                       P * sizeof *d);
            }
        }
        for (size_t k = 0; k < (size_t)nb * P; k++) {
            ones[k] = 1.0f;
        }
        dp_sgemm(false, false, c->out_c, 1, nb * (int)P, 1.0f, tmp, ones, 1.0f, c->db);
        im2col(c, col, x + (size_t)n0 * in_s, nb);
        /* dw (out_c, K) += tmp (out_c, nb*P) col^T (nb*P, K) */
        dp_sgemm(false, true, c->out_c, K, nb * (int)P, 1.0f, tmp, col, 1.0f, c->dw);
        if (dx) {
            /* col (K, nb*P) = w^T (K, out_c) tmp (out_c, nb*P), folded into dx */
            float *dxc = dx + (size_t)n0 * in_s;
            dp_sgemm(true, false, K, nb * (int)P, c->out_c, 1.0f, c->w, tmp, 0.0f, col);
            memset(dxc, 0, (size_t)nb * in_s * sizeof *dxc);
            col2im(c, dxc, col, nb);
        }
    }
}

/* --- pooling ------------------------------------------------------------------------------ */

/* Whether v replaces the maximum so far bv: larger, or NaN (torch's CPU rule, so that a NaN
 * is never hidden by a pooling). */
static inline int max_takes(float v, float bv) { return (v > bv) | (v != v); }

#if defined(__SSE2__)
/* m = t ? v : m, as bit masks. */
static inline __m128 pick_ps(__m128 t, __m128 v, __m128 m)
{
    return _mm_or_ps(_mm_and_ps(t, v), _mm_andnot_ps(t, m));
}
static inline __m128i pick_epi32(__m128i t, __m128i v, __m128i m)
{
    return _mm_or_si128(_mm_and_si128(t, v), _mm_andnot_si128(t, m));
}

/* Four 2x2 windows at once (outputs ow..ow+3 of rows r0, r1): max_takes element by element,
 * in the same order as the scalar loop. SSE2, so every x86-64 runs it. */
static inline void maxpool_2x2_x4(const float *r0, const float *r1, int ow, int W, int32_t base,
                                  float *y, int32_t *a)
{
    const __m128 a0 = _mm_loadu_ps(r0 + 2 * ow), a1 = _mm_loadu_ps(r0 + 2 * ow + 4);
    const __m128 b0 = _mm_loadu_ps(r1 + 2 * ow), b1 = _mm_loadu_ps(r1 + 2 * ow + 4);
    const __m128 v[4] = {_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)),
                         _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1))};
    const __m128i off[4] = {_mm_setzero_si128(), _mm_set1_epi32(1), _mm_set1_epi32(W),
                            _mm_set1_epi32(W + 1)};
    __m128 m = v[0];
    __m128i k = off[0];
    for (int q = 1; q < 4; q++) {
        const __m128 t = _mm_or_ps(_mm_cmpgt_ps(v[q], m), _mm_cmpunord_ps(v[q], v[q]));
        m = pick_ps(t, v[q], m);
        k = pick_epi32(_mm_castps_si128(t), off[q], k);
    }
    const __m128i col = _mm_add_epi32(_mm_set1_epi32(base + 2 * ow), _mm_set_epi32(6, 4, 2, 0));
    _mm_storeu_ps(y + ow, m);
    _mm_storeu_si128((__m128i *)(void *)(a + ow), _mm_add_epi32(col, k));
}
#endif

/* The 2x2 window at stride 2, the common case: four windows at a time where SSE2 is there
 * (the comparisons of activations are unpredictable branches otherwise), the rest one by
 * one; the same maxima and indices either way. */
static void maxpool_2x2(const dp_pool *p, float *yp, int32_t *ap, const float *xp)
{
    const int W = p->in_w;
    for (int oh = 0; oh < p->out_h; oh++) {
        const float *r0 = xp + (size_t)(2 * oh) * W, *r1 = r0 + W;
        float *y = yp + (size_t)oh * p->out_w;
        int32_t *a = ap + (size_t)oh * p->out_w;
        const int32_t base = 2 * oh * W;
        int ow = 0;
#if defined(__SSE2__)
        for (; ow + 4 <= p->out_w; ow += 4) {
            maxpool_2x2_x4(r0, r1, ow, W, base, y, a);
        }
#endif
        for (; ow < p->out_w; ow++) {
            const int w0 = 2 * ow;
            const float v[4] = {r0[w0], r0[w0 + 1], r1[w0], r1[w0 + 1]};
            const int32_t off[4] = {0, 1, W, W + 1};
            float bv = v[0];
            int32_t best = 0;
            for (int q = 1; q < 4; q++) {
                if (max_takes(v[q], bv)) {
                    bv = v[q];
                    best = off[q];
                }
            }
            y[ow] = bv;
            a[ow] = base + w0 + best;
        }
    }
}

void dp_maxpool_forward(const dp_pool *p, float *y, int32_t *arg, const float *x, int B)
{
    const size_t in_pl = (size_t)p->in_h * p->in_w, out_pl = (size_t)p->out_h * p->out_w;
    const bool two = p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2;
    for (size_t q = 0; q < (size_t)B * p->c; q++) {
        const float *xp = x + q * in_pl;
        float *yp = y + q * out_pl;
        int32_t *ap = arg + q * out_pl;
        if (two) {
            maxpool_2x2(p, yp, ap, xp);
            continue;
        }
        for (int oh = 0; oh < p->out_h; oh++) {
            for (int ow = 0; ow < p->out_w; ow++) {
                const int h0 = oh * p->sh, w0 = ow * p->sw;
                int32_t best = h0 * p->in_w + w0;
                float bv = xp[best];
                for (int i = 0; i < p->kh; i++) {
                    const float *r = xp + (size_t)(h0 + i) * p->in_w + w0;
                    for (int j = 0; j < p->kw; j++) {
                        if ((i || j) && max_takes(r[j], bv)) {
                            bv = r[j];
                            best = (h0 + i) * p->in_w + w0 + j;
                        }
                    }
                }
                yp[oh * p->out_w + ow] = bv;
                ap[oh * p->out_w + ow] = best;
            }
        }
    }
}

void dp_maxpool_backward(const dp_pool *p, float *dx, const float *dy, const int32_t *arg, int B)
{
    const size_t in_pl = (size_t)p->in_h * p->in_w, out_pl = (size_t)p->out_h * p->out_w;
    memset(dx, 0, (size_t)B * p->c * in_pl * sizeof *dx);
    for (size_t q = 0; q < (size_t)B * p->c; q++) {
        float *dxp = dx + q * in_pl;
        const float *dyp = dy + q * out_pl;
        const int32_t *ap = arg + q * out_pl;
        for (size_t k = 0; k < out_pl; k++) {
            dxp[ap[k]] += dyp[k];
        }
    }
}

void dp_avgpool_forward(const dp_pool *p, float *y, const float *x, int B)
{
    const size_t in_pl = (size_t)p->in_h * p->in_w, out_pl = (size_t)p->out_h * p->out_w;
    const float inv = 1.0f / (float)(p->kh * p->kw);
    for (size_t q = 0; q < (size_t)B * p->c; q++) {
        const float *xp = x + q * in_pl;
        float *yp = y + q * out_pl;
        for (int oh = 0; oh < p->out_h; oh++) {
            for (int ow = 0; ow < p->out_w; ow++) {
                float s = 0.0f;
                for (int i = 0; i < p->kh; i++) {
                    const float *r = xp + (size_t)(oh * p->sh + i) * p->in_w + ow * p->sw;
                    for (int j = 0; j < p->kw; j++) {
                        s += r[j];
                    }
                }
                yp[oh * p->out_w + ow] = s * inv;
            }
        }
    }
}

void dp_avgpool_backward(const dp_pool *p, float *dx, const float *dy, int B)
{
    const size_t in_pl = (size_t)p->in_h * p->in_w, out_pl = (size_t)p->out_h * p->out_w;
    const float inv = 1.0f / (float)(p->kh * p->kw);
    memset(dx, 0, (size_t)B * p->c * in_pl * sizeof *dx);
    for (size_t q = 0; q < (size_t)B * p->c; q++) {
        float *dxp = dx + q * in_pl;
        const float *dyp = dy + q * out_pl;
        for (int oh = 0; oh < p->out_h; oh++) {
            for (int ow = 0; ow < p->out_w; ow++) {
                const float g = dyp[oh * p->out_w + ow] * inv;
                for (int i = 0; i < p->kh; i++) {
                    float *r = dxp + (size_t)(oh * p->sh + i) * p->in_w + ow * p->sw;
                    for (int j = 0; j < p->kw; j++) {
                        r[j] += g;
                    }
                }
            }
        }
    }
}

/* --- the layer-spec tokens and the shapes ------------------------------------------------- */

static const char *const kind_names[DP_STAGE_COUNT] = {"conv", "maxpool", "avgpool"};

const char *dp_stage_kind_name(dp_stage_kind k)
{
    return (k >= 0 && k < DP_STAGE_COUNT) ? kind_names[k] : "?";
}

/* "N" or "NxM" at *p (each in [lo, 4096]) into a, b; advances *p. */
static bool pair(const char **p, int lo, int *a, int *b)
{
    char *end = NULL;
    errno = 0;
    if (!isdigit((unsigned char)**p)) {
        return false;
    }
    long v = strtol(*p, &end, 10), w = v;
    if (errno || v < lo || v > 4096) {
        return false;
    }
    if (*end == 'x') {
        const char *q = end + 1;
        if (!isdigit((unsigned char)*q)) {
            return false;
        }
        w = strtol(q, &end, 10);
        if (errno || w < lo || w > 4096) {
            return false;
        }
    }
    *a = (int)v;
    *b = (int)w;
    *p = end;
    return true;
}

/* One setting of a conv layer ("relu", "bn", "dropout=0.3") into s. */
static bool stage_setting(const char *set, dp_stage_cfg *s)
{
    int a = dp_act_parse(set);
    if (a >= 0) {
        s->act = (dp_act)a;
        return dp_act_trainable((dp_act)a) && a != DP_ACT_SOFTMAX;
    }
    if (strcmp(set, "bn") == 0) {
        s->batchnorm = true;
        return true;
    }
    if (strncmp(set, "dropout=", 8) == 0) {
        char *end = NULL;
        double p = strtod(set + 8, &end);
        s->dropout = (float)p;
        return isdigit((unsigned char)set[8]) && end != set + 8 && !*end && p >= 0.0 &&
               p < 1.0 && !strchr(set, 'x');
    }
    return false;
}

int dp_stage_parse(const char *tok, dp_act act, dp_stage_cfg *st)
{
    dp_stage_cfg s = {.act = DP_ACT_IDENTITY};
    char head[64];
    const size_t hl = strcspn(tok, ":");
    if (hl >= sizeof head) {
        return dp_err(DP_EINVAL, "layer '%s': too long", tok);
    }
    memcpy(head, tok, hl);
    head[hl] = '\0';
    const char *p = head;
    int k;
    for (k = 0; k < DP_STAGE_COUNT; k++) {
        size_t n = strlen(kind_names[k]);
        if (strncmp(head, kind_names[k], n) == 0) {
            p = head + n;
            break;
        }
    }
    s.kind = (dp_stage_kind)k;
    bool ok = k < DP_STAGE_COUNT;
    if (ok && k == DP_STAGE_CONV) {
        int c2;
        ok = p[strspn(p, "0123456789")] == 'k' && pair(&p, 1, &s.out_c, &c2) && *p++ == 'k' &&
             pair(&p, 1, &s.kh, &s.kw);
        s.sh = s.sw = 1;
        s.act = act;
    } else if (ok) {
        ok = pair(&p, 1, &s.kh, &s.kw);
        s.sh = s.kh;
        s.sw = s.kw;
    }
    while (ok && *p) {
        char what = *p++;
        if (what == 's') {
            ok = pair(&p, 1, &s.sh, &s.sw);
        } else if (what == 'p' && k == DP_STAGE_CONV) {
            ok = pair(&p, 0, &s.ph, &s.pw);
        } else {
            ok = false;
        }
    }
    if (!ok) {
        return dp_err(DP_EINVAL,
                      "layer '%s': not a convolution or pooling (write convCkK[sS][pP], e.g. "
                      "conv32k3p1 or conv16k5x3s2p2x1, maxpoolK[sS] or avgpoolK[sS], e.g. "
                      "maxpool2 or avgpool3s2; numbers 1 to 4096, padding from 0)", head);
    }
    for (const char *q = tok + hl; *q == ':';) {
        char set[64];
        const size_t len = strcspn(q + 1, ":");
        if (k != DP_STAGE_CONV) {
            return dp_err(DP_EINVAL, "layer '%s': a pooling takes no settings", tok);
        }
        if (len == 0 || len >= sizeof set) {
            return dp_err(DP_EINVAL, "layer '%s': empty or overlong setting", tok);
        }
        memcpy(set, q + 1, len);
        set[len] = '\0';
        if (!stage_setting(set, &s)) {
            return dp_err(DP_EINVAL, "layer '%s': setting '%s' is not a hidden activation, bn "
                                     "or dropout=P with P in [0, 1)", tok, set);
        }
        q += 1 + len;
    }
    *st = s;
    return DP_OK;
}

/* "<tag>N" or "<tag>NxM" into buf (32 bytes). */
static void put_pair(char *buf, const char *tag, int a, int b)
{
    if (a == b) {
        snprintf(buf, 32, "%s%d", tag, a);
    } else {
        snprintf(buf, 32, "%s%dx%d", tag, a, b);
    }
}

int dp_stage_format(const dp_stage_cfg *st, bool settings, char *buf, size_t cap)
{
    const bool conv = st->kind == DP_STAGE_CONV;
    char head[32] = "", k[32] = "", s[32] = "", p[32] = "", set[64] = "";
    if (conv) {
        snprintf(head, sizeof head, "conv%d", st->out_c);
    } else {
        snprintf(head, sizeof head, "%s", dp_stage_kind_name(st->kind));
    }
    put_pair(k, conv ? "k" : "", st->kh, st->kw);
    if (conv ? (st->sh != 1 || st->sw != 1) : (st->sh != st->kh || st->sw != st->kw)) {
        put_pair(s, "s", st->sh, st->sw);
    }
    if (conv && (st->ph || st->pw)) {
        put_pair(p, "p", st->ph, st->pw);
    }
    if (conv && settings) {
        char drop[32] = "";
        if (st->dropout > 0.0f) {
            snprintf(drop, sizeof drop, ":dropout=%g", st->dropout);
        }
        snprintf(set, sizeof set, ":%s%s%s", dp_act_name(st->act), st->batchnorm ? ":bn" : "",
                 drop);
    }
    return snprintf(buf, cap, "%s%s%s%s%s", head, k, s, p, set);
}

int dp_model_cfg_inputs(const dp_model_cfg *c)
{
    if (c->n_stages <= 0) {
        return c->sizes[0];
    }
    long n = (long)c->in_c * c->in_h * c->in_w;
    return n > 0 && n <= INT_MAX ? (int)n : -1;
}

int dp_model_cfg_shapes(const dp_model_cfg *cfg, int *c, int *h, int *w, int *features)
{
    if (cfg->n_stages <= 0) {
        *features = cfg->sizes[0];
        return DP_OK;
    }
    if (cfg->n_stages > DP_MAX_STAGES) {
        return dp_err(DP_EINVAL, "model: %d convolution and pooling layers (at most %d)",
                      cfg->n_stages, DP_MAX_STAGES);
    }
    c[0] = cfg->in_c;
    h[0] = cfg->in_h;
    w[0] = cfg->in_w;
    if (c[0] < 1 || h[0] < 1 || w[0] < 1 || (long)c[0] * h[0] * w[0] > (1L << 28)) {
        return dp_err(DP_EINVAL, "model: input image %dx%dx%d (each >= 1, at most 2^28 values)",
                      c[0], h[0], w[0]);
    }
    for (int j = 0; j < cfg->n_stages; j++) {
        const dp_stage_cfg *s = &cfg->stage[j];
        char tok[96];
        dp_stage_format(s, false, tok, sizeof tok);
        if (s->kind < 0 || s->kind >= DP_STAGE_COUNT || s->kh < 1 || s->kw < 1 || s->sh < 1 ||
            s->sw < 1 || s->ph < 0 || s->pw < 0 || (s->kind == DP_STAGE_CONV && s->out_c < 1)) {
            return dp_err(DP_EINVAL, "model: layer %d (%s): a size, stride or padding out of "
                                     "range", j + 1, tok);
        }
        const int ph = s->kind == DP_STAGE_CONV ? s->ph : 0;
        const int pw = s->kind == DP_STAGE_CONV ? s->pw : 0;
        const long eh = (long)h[j] + 2L * ph, ew = (long)w[j] + 2L * pw;
        if (s->kh > eh || s->kw > ew) {
            return dp_err(DP_EINVAL, "model: layer %d (%s): its %dx%d window does not fit the "
                                     "input %dx%dx%d%s", j + 1, tok, s->kh, s->kw, c[j], h[j],
                          w[j], ph || pw ? " with its padding" : "");
        }
        c[j + 1] = s->kind == DP_STAGE_CONV ? s->out_c : c[j];
        h[j + 1] = (int)((eh - s->kh) / s->sh + 1);
        w[j + 1] = (int)((ew - s->kw) / s->sw + 1);
        if ((long)c[j + 1] * h[j + 1] * w[j + 1] > (1L << 28)) {
            return dp_err(DP_EINVAL, "model: layer %d (%s): output %dx%dx%d is too large (at "
                                     "most 2^28 values a sample)", j + 1, tok, c[j + 1],
                          h[j + 1], w[j + 1]);
        }
    }
    const int L = cfg->n_stages;
    *features = cfg->gap ? c[L] : c[L] * h[L] * w[L];
    return DP_OK;
}

double dp_model_cfg_train_flops(const dp_model_cfg *cfg)
{
    int c[DP_MAX_STAGES + 1], h[DP_MAX_STAGES + 1], w[DP_MAX_STAGES + 1], feat = 0;
    double flops = 0.0;
    if (dp_model_cfg_shapes(cfg, c, h, w, &feat) != DP_OK) {
        return 0.0;
    }
    for (int j = 0; j < cfg->n_stages; j++) {
        const dp_stage_cfg *s = &cfg->stage[j];
        if (s->kind == DP_STAGE_CONV) {
            const double macs = (double)s->out_c * c[j] * s->kh * s->kw * h[j + 1] * w[j + 1];
            flops += 2.0 * macs * (j > 0 ? 3.0 : 2.0);
        }
    }
    for (int i = 0; i < cfg->n_layers; i++) {
        flops += 6.0 * ((double)cfg->sizes[i] + 1.0) * (double)cfg->sizes[i + 1];
    }
    return flops;
}
