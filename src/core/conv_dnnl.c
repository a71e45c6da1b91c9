/* conv_dnnl.c: convolutions by oneDNN in its blocked layouts, NCHW at the edges (see
 * conv_dnnl.h). */
#include "conv_dnnl.h"

#include "dptrain/err.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DPTRAIN_HAVE_DNNL

#include "dnnl_util.h"

/* The tensors in the primitives' layouts that need memory of their own (sized at creation
 * for max_batch): the input kept from the forward for the weight gradient, the output in the
 * forward and dL/d(output) in the backward (never both at once), dL/d(input), the weights
 * for the forward and the data gradient and the weight gradient; and, when the gradients'
 * kernels want another layout than the forward's, the input for the weight gradient and
 * dL/d(output) for the data gradient. */
enum { B_SRC, B_OUT, B_DSRC, B_WF, B_WB, B_DW, B_SRC_W, B_DY_D, N_BUF };

/* One tensor: the caller's plain memory (its data handle set at each call) and, when the
 * primitive wants another layout, that layout's memory in buf[which] and the reorder
 * between them (plain -> primitive for inputs, back for outputs). */
typedef struct {
    dnnl_memory_t plain, prim; /* prim == plain when the layouts agree */
    dnnl_primitive_t reorder;  /* NULL when they agree */
    bool out;
} dn_tensor;

/* The primitives of one batch size. */
typedef struct {
    int mb;              /* 0: free slot */
    unsigned long used;  /* the handle's clock at its last use */
    dnnl_primitive_desc_t pd[3];
    dnnl_primitive_t fwd, bwd_d, bwd_w;
    dn_tensor x, y, w_f, b;             /* forward */
    dn_tensor x_w, dy, dw, db;          /* weight gradient (x_w: x's view if x's layout) */
    dn_tensor dy_d, w_b, dx;            /* data gradient (dy_d: dy's view if dy's layout) */
    bool x_w_view, dy_d_view;
    bool ref;                           /* a pass runs oneDNN's reference (slow) kernel */
} dn_set;

struct dp_conv_dnnl {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    int max_batch;
    bool need_dx;
    unsigned long clock;
    dn_set set[DP_CONV_DNNL_SIZES];
    void *buf[N_BUF];
    size_t cap[N_BUF];
    float *dw, *db; /* the weight gradient in torch's layout before the add into c->dw */
    char impl[72]; /* "oneDNN " and the forward's implementation name */
};

bool dp_conv_dnnl_available(void) { return true; }

static void tensor_free(dn_tensor *t)
{
    if (t->reorder) {
        dnnl_primitive_destroy(t->reorder);
        dnnl_memory_destroy(t->prim);
    }
    dnnl_memory_destroy(t->plain);
    memset(t, 0, sizeof *t);
}

static void set_free(dn_set *s)
{
    dn_tensor *ts[] = {&s->x, &s->y, &s->w_f, &s->b, &s->dy, &s->w_b, &s->dx, &s->dw, &s->db};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        tensor_free(ts[i]);
    }
    if (!s->x_w_view) {
        tensor_free(&s->x_w);
    }
    if (!s->dy_d_view) {
        tensor_free(&s->dy_d);
    }
    dnnl_primitive_destroy(s->fwd);
    dnnl_primitive_destroy(s->bwd_d);
    dnnl_primitive_destroy(s->bwd_w);
    for (int i = 0; i < 3; i++) {
        dnnl_primitive_desc_destroy(s->pd[i]);
    }
    memset(s, 0, sizeof *s);
}

/* Makes tensor t: plain memory of plain_md, and if the primitive's want differs, memory of
 * that layout in e->buf[which] (set_make has made room) and the reorder. */
static int tensor_make(dp_conv_dnnl *e, dn_tensor *t, const dnnl_memory_desc_t *plain_md,
                       const dnnl_memory_desc_t *want, int which, bool out)
{
    int rc = DP_OK;
    dnnl_primitive_desc_t rpd = NULL;
    t->out = out;
    DN(dnnl_memory_create(&t->plain, plain_md, e->eng, DNNL_MEMORY_NONE));
    t->prim = t->plain;
    if (dnnl_memory_desc_equal(plain_md, want)) {
        goto done;
    }
    DN(dnnl_memory_create(&t->prim, want, e->eng, e->buf[which]));
    DN(dnnl_reorder_primitive_desc_create(&rpd, out ? want : plain_md, e->eng,
                                          out ? plain_md : want, e->eng, NULL));
    DN(dnnl_primitive_create(&t->reorder, rpd));
done:
    if (rpd) {
        dnnl_primitive_desc_destroy(rpd);
    }
    return rc;
}

/* Tensor v for a primitive that reads what base holds, in layout want: a view of base when
 * base has that layout (the weight gradient reading the forward's x, the data gradient the
 * weight gradient's dy), else a tensor of its own, from the same plain data. */
static int tensor_make_or_view(dp_conv_dnnl *e, dn_tensor *v, bool *is_view,
                               const dn_tensor *base, const dnnl_memory_desc_t *plain_md,
                               const dnnl_memory_desc_t *want, int which)
{
    const dnnl_memory_desc_t *have;
    int rc = DP_OK;
    DN(dnnl_memory_get_memory_desc(base->prim, &have));
    *is_view = dnnl_memory_desc_equal(have, want);
    if (*is_view) {
        *v = (dn_tensor){.plain = base->plain, .prim = base->prim, .reorder = NULL, .out = false};
    } else {
        rc = tensor_make(e, v, plain_md, want, which, false);
    }
done:
    return rc;
}

/* Whether pd runs oneDNN's reference implementation ("ref:any"), a plain loop nest. */
static int run2(dp_conv_dnnl *e, dnnl_primitive_t p, int a0, dnnl_memory_t m0, int a1,
                dnnl_memory_t m1)
{
    int rc = DP_OK;
    const dnnl_exec_arg_t args[2] = {{a0, m0}, {a1, m1}};
    DN(dnnl_primitive_execute(p, e->stream, 2, args));
done:
    return rc;
}

/* Moves a tensor between the caller's layout and the primitive's (nothing if they agree). */
static int tensor_sync(dp_conv_dnnl *e, const dn_tensor *t)
{
    if (!t->reorder) {
        return DP_OK;
    }
    return t->out ? run2(e, t->reorder, DNNL_ARG_FROM, t->prim, DNNL_ARG_TO, t->plain)
                  : run2(e, t->reorder, DNNL_ARG_FROM, t->plain, DNNL_ARG_TO, t->prim);
}

/* Points m (if any: a pass without a data gradient has no dy_d) at p. */
static int set_handle(dnnl_memory_t m, const void *p)
{
    int rc = DP_OK;
    if (!m) {
        return DP_OK;
    }
    DN(dnnl_memory_set_data_handle(m, (void *)(uintptr_t)p));
done:
    return rc;
}

/* Raises need[which] to the bytes of layout want when it is not the plain layout (a
 * tensor of that layout lives in buffer which). */
static void want_room(size_t *need, int which, const dnnl_memory_desc_t *plain,
                      const dnnl_memory_desc_t *want)
{
    if (!dnnl_memory_desc_equal(plain, want)) {
        const size_t n = dnnl_memory_desc_get_size(want);
        need[which] = n > need[which] ? n : need[which];
    }
}

/* Makes the primitives of batch size mb in slot s: first the three primitive descriptors,
 * then the room their layouts need in the buffers (grown if sizing; else DP_ERANGE, without a
 * message, when a buffer is too small: set_for then makes room), then the tensors. */
static int set_make(dp_conv_dnnl *e, const dp_conv *c, int mb, dn_set *s, bool sizing)
{
    int rc = DP_OK;
    const dnnl_dims_t d_x = {mb, c->in_c, c->in_h, c->in_w};
    const dnnl_dims_t d_y = {mb, c->out_c, c->out_h, c->out_w};
    const dnnl_dims_t d_w = {c->out_c, c->in_c, c->kh, c->kw}, d_b = {c->out_c};
    const dnnl_dims_t strides = {c->sh, c->sw}, pad = {c->ph, c->pw};
    dnnl_memory_desc_t p_x, p_y, p_w, p_b, a_x, a_y, a_w;
    dnnl_convolution_desc_t cd;
    const dnnl_memory_desc_t *d_dx = NULL, *d_wb = NULL, *d_dy = NULL;
    size_t need[N_BUF] = {0};
    memset(s, 0, sizeof *s);
    s->mb = mb;
    DN(dnnl_memory_desc_init_by_tag(&p_x, 4, d_x, dnnl_f32, dnnl_nchw));
    DN(dnnl_memory_desc_init_by_tag(&p_y, 4, d_y, dnnl_f32, dnnl_nchw));
    DN(dnnl_memory_desc_init_by_tag(&p_w, 4, d_w, dnnl_f32, dnnl_oihw));
    DN(dnnl_memory_desc_init_by_tag(&p_b, 1, d_b, dnnl_f32, dnnl_x));
    DN(dnnl_memory_desc_init_by_tag(&a_x, 4, d_x, dnnl_f32, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&a_y, 4, d_y, dnnl_f32, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&a_w, 4, d_w, dnnl_f32, dnnl_format_tag_any));

    /* forward (training: the same kernels for the training and the evaluation passes) */
    DN(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct,
                                          &a_x, &a_w, &p_b, &a_y, strides, pad, pad));
    DN(dnnl_primitive_desc_create(&s->pd[0], &cd, NULL, e->eng, NULL));
    const dnnl_memory_desc_t *f_x = dnnl_primitive_desc_query_md(s->pd[0], dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *f_y = dnnl_primitive_desc_query_md(s->pd[0], dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *f_w =
        dnnl_primitive_desc_query_md(s->pd[0], dnnl_query_weights_md, 0);
    /* weight gradient; its layouts are chosen apart from the forward's (oneDNN 2.6 has only
     * its reference kernel for some forced combinations), x and dy reordered as needed */
    DN(dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &a_x, &a_w, &p_b,
                                                   &a_y, strides, pad, pad));
    DN(dnnl_primitive_desc_create(&s->pd[1], &cd, NULL, e->eng, s->pd[0]));
    const dnnl_memory_desc_t *w_x = dnnl_primitive_desc_query_md(s->pd[1], dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *w_dy =
        dnnl_primitive_desc_query_md(s->pd[1], dnnl_query_diff_dst_md, 0);
    const dnnl_memory_desc_t *w_dw =
        dnnl_primitive_desc_query_md(s->pd[1], dnnl_query_diff_weights_md, 0);
    /* data gradient */
    if (e->need_dx) {
        DN(dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &a_x, &a_w, &a_y,
                                                    strides, pad, pad));
        DN(dnnl_primitive_desc_create(&s->pd[2], &cd, NULL, e->eng, s->pd[0]));
        d_dx = dnnl_primitive_desc_query_md(s->pd[2], dnnl_query_diff_src_md, 0);
        d_wb = dnnl_primitive_desc_query_md(s->pd[2], dnnl_query_weights_md, 0);
        d_dy = dnnl_primitive_desc_query_md(s->pd[2], dnnl_query_diff_dst_md, 0);
    }

    /* room: x (kept for the weight gradient) and y/dy (one at a time) share nothing else */
    want_room(need, B_SRC, &p_x, f_x);
    want_room(need, B_OUT, &p_y, f_y);
    want_room(need, B_WF, &p_w, f_w);
    want_room(need, B_OUT, &p_y, w_dy);
    want_room(need, B_DW, &p_w, w_dw);
    if (!dnnl_memory_desc_equal(dnnl_memory_desc_equal(&p_x, f_x) ? &p_x : f_x, w_x)) {
        want_room(need, B_SRC_W, &p_x, w_x);
    }
    if (d_dx) {
        if (!dnnl_memory_desc_equal(dnnl_memory_desc_equal(&p_y, w_dy) ? &p_y : w_dy, d_dy)) {
            want_room(need, B_DY_D, &p_y, d_dy);
        }
        want_room(need, B_WB, &p_w, d_wb);
        want_room(need, B_DSRC, &p_x, d_dx);
    }
    for (int i = 0; i < N_BUF; i++) {
        if (need[i] <= e->cap[i]) {
            continue;
        }
        if (!sizing) {
            rc = DP_ERANGE; /* no message: set_for makes room */
            goto done;
        }
        free(e->buf[i]);
        e->cap[i] = 0;
        e->buf[i] = aligned_alloc(64, (need[i] + 63) / 64 * 64);
        if (!e->buf[i]) {
            DP_FAIL(DP_ENOMEM, "out of memory allocating %zu bytes for a convolution's oneDNN "
                               "layout", need[i]);
        }
        e->cap[i] = need[i];
    }

    DN(dnnl_primitive_create(&s->fwd, s->pd[0]));
    DP_TRY(tensor_make(e, &s->x, &p_x, f_x, B_SRC, false));
    DP_TRY(tensor_make(e, &s->y, &p_y, f_y, B_OUT, true));
    DP_TRY(tensor_make(e, &s->w_f, &p_w, f_w, B_WF, false));
    DP_TRY(tensor_make(e, &s->b, &p_b, &p_b, 0, false));
    if (!e->impl[0]) {
        const char *impl = NULL;
        DN(dnnl_primitive_desc_query(s->pd[0], dnnl_query_impl_info_str, 0, &impl));
        snprintf(e->impl, sizeof e->impl, "oneDNN %s", impl ? impl : "?");
    }
    DN(dnnl_primitive_create(&s->bwd_w, s->pd[1]));
    DP_TRY(tensor_make_or_view(e, &s->x_w, &s->x_w_view, &s->x, &p_x, w_x, B_SRC_W));
    DP_TRY(tensor_make(e, &s->dy, &p_y, w_dy, B_OUT, false));
    DP_TRY(tensor_make(e, &s->dw, &p_w, w_dw, B_DW, true));
    DP_TRY(tensor_make(e, &s->db, &p_b, &p_b, 0, true));
    s->ref = dn_is_ref(s->pd[0]) || dn_is_ref(s->pd[1]);
    s->dy_d_view = true;
    if (d_dx) {
        DN(dnnl_primitive_create(&s->bwd_d, s->pd[2]));
        DP_TRY(tensor_make_or_view(e, &s->dy_d, &s->dy_d_view, &s->dy, &p_y, d_dy, B_DY_D));
        DP_TRY(tensor_make(e, &s->w_b, &p_w, d_wb, B_WB, false));
        DP_TRY(tensor_make(e, &s->dx, &p_x, d_dx, B_DSRC, true));
        s->ref = s->ref || dn_is_ref(s->pd[2]);
    }
done:
    if (rc != DP_OK) {
        set_free(s);
    }
    return rc;
}

/* The set of batch size mb, made (in the least recently used slot) if there is none. */
static int set_for(dp_conv_dnnl *e, const dp_conv *c, int mb, dn_set **out)
{
    int rc = DP_OK, lru = 0;
    e->clock++;
    for (int i = 0; i < DP_CONV_DNNL_SIZES; i++) {
        if (e->set[i].mb == mb) {
            e->set[i].used = e->clock;
            *out = &e->set[i];
            return DP_OK;
        }
        if (e->set[i].used < e->set[lru].used) {
            lru = i;
        }
    }
    set_free(&e->set[lru]);
    rc = set_make(e, c, mb, &e->set[lru], false);
    if (rc == DP_ERANGE) {
        /* This size wants a layout larger than the buffers made for max_batch (oneDNN may
         * choose other layouts for other batch sizes): free every set, whose memories point
         * into the buffers, and make this one with room; the others come back when used. */
        for (int i = 0; i < DP_CONV_DNNL_SIZES; i++) {
            set_free(&e->set[i]);
        }
        lru = 0;
        rc = set_make(e, c, mb, &e->set[lru], true);
    }
    DP_TRY(rc);
    e->set[lru].used = e->clock;
    *out = &e->set[lru];
done:
    return rc;
}

int dp_conv_dnnl_create(const dp_conv *c, int max_batch, bool need_dx, dp_conv_dnnl **out)
{
    int rc = DP_OK;
    dp_conv_dnnl *e = NULL;
    *out = NULL;
    if (max_batch < 1) {
        DP_FAIL(DP_EINVAL, "oneDNN convolution: max_batch %d < 1", max_batch);
    }
    DP_CALLOC(e, 1);
    e->max_batch = max_batch;
    e->need_dx = need_dx;
    DN(dnnl_engine_create(&e->eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&e->stream, e->eng, dnnl_stream_default_flags));
    DP_CALLOC(e->dw, (size_t)c->out_c * c->in_c * c->kh * c->kw);
    DP_CALLOC(e->db, c->out_c);
    DP_TRY(set_make(e, c, max_batch, &e->set[0], true));
    e->set[0].used = ++e->clock;
    *out = e;
    e = NULL;
done:
    dp_conv_dnnl_free(&e);
    return rc;
}

void dp_conv_dnnl_free(dp_conv_dnnl **ep)
{
    dp_conv_dnnl *e = ep ? *ep : NULL;
    if (!e) {
        return;
    }
    for (int i = 0; i < DP_CONV_DNNL_SIZES; i++) {
        set_free(&e->set[i]);
    }
    for (int i = 0; i < N_BUF; i++) {
        free(e->buf[i]);
    }
    if (e->stream) {
        dnnl_stream_destroy(e->stream);
    }
    if (e->eng) {
        dnnl_engine_destroy(e->eng);
    }
    free(e->dw);
    free(e->db);
    free(e);
    *ep = NULL;
}

size_t dp_conv_dnnl_bytes(const dp_conv_dnnl *e)
{
    size_t n = 0;
    for (int i = 0; e && i < N_BUF; i++) {
        n += e->cap[i];
    }
    return n;
}

const char *dp_conv_dnnl_impl(const dp_conv_dnnl *e) { return e ? e->impl : ""; }

bool dp_conv_dnnl_is_ref(const dp_conv_dnnl *e) { return e && e->set[0].ref; }

int dp_conv_dnnl_forward(dp_conv_dnnl *e, const dp_conv *c, float *y, const float *x, int B)
{
    int rc = DP_OK;
    dn_set *s = NULL;
    if (B <= 0) {
        return DP_OK;
    }
    if (B > e->max_batch) {
        DP_FAIL(DP_EINVAL, "oneDNN convolution: batch %d > max_batch %d", B, e->max_batch);
    }
    DP_TRY(set_for(e, c, B, &s));
    DP_TRY(set_handle(s->x.plain, x));
    DP_TRY(set_handle(s->y.plain, y));
    DP_TRY(set_handle(s->w_f.plain, c->w));
    DP_TRY(set_handle(s->b.plain, c->b));
    DP_TRY(tensor_sync(e, &s->w_f));
    DP_TRY(tensor_sync(e, &s->x));
    const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, s->x.prim},
                                     {DNNL_ARG_WEIGHTS, s->w_f.prim},
                                     {DNNL_ARG_BIAS, s->b.prim},
                                     {DNNL_ARG_DST, s->y.prim}};
    DN(dnnl_primitive_execute(s->fwd, e->stream, 4, args));
    DP_TRY(tensor_sync(e, &s->y));
    DN(dnnl_stream_wait(e->stream));
done:
    return rc;
}

int dp_conv_dnnl_backward(dp_conv_dnnl *e, dp_conv *c, float *dx, const float *dy,
                          const float *x, int B, bool accumulate)
{
    int rc = DP_OK;
    dn_set *s = NULL;
    const size_t nw = (size_t)c->out_c * c->in_c * c->kh * c->kw;
    if (B <= 0) {
        if (!accumulate) {
            memset(c->dw, 0, nw * sizeof(float));
            memset(c->db, 0, (size_t)c->out_c * sizeof(float));
        }
        return DP_OK;
    }
    if (B > e->max_batch || (dx && !e->need_dx)) {
        DP_FAIL(DP_EINVAL, "oneDNN convolution: backward of %d samples (max_batch %d)%s", B,
                e->max_batch, dx && !e->need_dx ? " with dx, made without" : "");
    }
    DP_TRY(set_for(e, c, B, &s));
    /* x: the forward's, already in s->x.prim when that is a layout of its own */
    DP_TRY(set_handle(s->x.plain, x));
    DP_TRY(set_handle(s->x_w.plain, x));
    DP_TRY(set_handle(s->dy.plain, dy));
    DP_TRY(set_handle(s->dy_d.plain, dy));
    DP_TRY(set_handle(s->dw.plain, e->dw));
    DP_TRY(set_handle(s->db.plain, e->db));
    DP_TRY(tensor_sync(e, &s->dy));
    DP_TRY(tensor_sync(e, &s->x_w)); /* nothing when it views the forward's x */
    const dnnl_exec_arg_t wargs[4] = {{DNNL_ARG_SRC, s->x_w.prim},
                                      {DNNL_ARG_DIFF_DST, s->dy.prim},
                                      {DNNL_ARG_DIFF_WEIGHTS, s->dw.prim},
                                      {DNNL_ARG_DIFF_BIAS, s->db.prim}};
    DN(dnnl_primitive_execute(s->bwd_w, e->stream, 4, wargs));
    DP_TRY(tensor_sync(e, &s->dw));
    if (dx) {
        DP_TRY(set_handle(s->w_b.plain, c->w));
        DP_TRY(set_handle(s->dx.plain, dx));
        DP_TRY(tensor_sync(e, &s->w_b));
        DP_TRY(tensor_sync(e, &s->dy_d));
        const dnnl_exec_arg_t dargs[3] = {{DNNL_ARG_DIFF_DST, s->dy_d.prim},
                                          {DNNL_ARG_WEIGHTS, s->w_b.prim},
                                          {DNNL_ARG_DIFF_SRC, s->dx.prim}};
        DN(dnnl_primitive_execute(s->bwd_d, e->stream, 3, dargs));
        DP_TRY(tensor_sync(e, &s->dx));
    }
    DN(dnnl_stream_wait(e->stream));
    if (accumulate) {
        for (size_t i = 0; i < nw; i++) {
            c->dw[i] += e->dw[i];
        }
        for (int i = 0; i < c->out_c; i++) {
            c->db[i] += e->db[i];
        }
    } else {
        memcpy(c->dw, e->dw, nw * sizeof(float));
        memcpy(c->db, e->db, (size_t)c->out_c * sizeof(float));
    }
done:
    return rc;
}

#else /* without oneDNN */

bool dp_conv_dnnl_available(void) { return false; }

int dp_conv_dnnl_create(const dp_conv *c, int max_batch, bool need_dx, dp_conv_dnnl **out)
{
    (void)c;
    (void)max_batch;
    (void)need_dx;
    *out = NULL;
    return dp_err(DP_EINVAL, "this dptrain was built without oneDNN (libdnnl-dev): set "
                             "DPTRAIN_CONV=im2col or rebuild with it");
}

void dp_conv_dnnl_free(dp_conv_dnnl **e)
{
    if (e) {
        *e = NULL;
    }
}

size_t dp_conv_dnnl_bytes(const dp_conv_dnnl *e)
{
    (void)e;
    return 0;
}

const char *dp_conv_dnnl_impl(const dp_conv_dnnl *e)
{
    (void)e;
    return "";
}

bool dp_conv_dnnl_is_ref(const dp_conv_dnnl *e)
{
    (void)e;
    return false;
}

int dp_conv_dnnl_forward(dp_conv_dnnl *e, const dp_conv *c, float *y, const float *x, int B)
{
    (void)e, (void)c, (void)y, (void)x, (void)B;
    return dp_err(DP_EINVAL, "this dptrain was built without oneDNN");
}

int dp_conv_dnnl_backward(dp_conv_dnnl *e, dp_conv *c, float *dx, const float *dy,
                          const float *x, int B, bool accumulate)
{
    (void)e, (void)c, (void)dx, (void)dy, (void)x, (void)B, (void)accumulate;
    return dp_err(DP_EINVAL, "this dptrain was built without oneDNN");
}

#endif
