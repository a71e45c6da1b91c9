/* gemm_dnnl.c: matrix products by oneDNN's matmul (see gemm_dnnl.h). */
#include "gemm_dnnl.h"

#include <stdio.h>
#include <string.h>

#ifdef DPTRAIN_HAVE_DNNL

#include "dnnl_util.h"

#include <pthread.h>
#include <stdint.h>

/* One shape's primitive and its three memories (data handles set at each call). */
typedef struct {
    int M, N, K;
    bool ta, tb, acc;
    bool ref;           /* oneDNN has only its reference kernel: leave the shape to OpenBLAS */
    unsigned long used; /* the table's clock at the last use; 0: free */
    dnnl_primitive_t p;
    dnnl_memory_t a, b, c;
} mm_entry;

static struct {
    pthread_mutex_t lock;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    bool broken; /* a call failed: OpenBLAS from then on */
    unsigned long clock;
    mm_entry e[DP_GEMM_DNNL_SHAPES];
} G = {.lock = PTHREAD_MUTEX_INITIALIZER};

bool dp_gemm_dnnl_available(void) { return true; }

static void entry_free(mm_entry *x)
{
    dnnl_primitive_destroy(x->p);
    dnnl_memory_destroy(x->a);
    dnnl_memory_destroy(x->b);
    dnnl_memory_destroy(x->c);
    memset(x, 0, sizeof *x);
}

/* The memory descriptors of op(A) (M,K), op(B) (K,N) and C (M,N), row-major, a transposed
 * operand described by its strides. */
static int descs(bool ta, bool tb, int M, int N, int K, dnnl_memory_desc_t md[3])
{
    int rc = 0;
    const dnnl_dims_t ad = {M, K}, bd = {K, N}, cd = {M, N};
    const dnnl_dims_t as = {ta ? 1 : K, ta ? M : 1}, bs = {tb ? 1 : N, tb ? K : 1},
                      cs = {N, 1};
    DN(dnnl_memory_desc_init_by_strides(&md[0], 2, ad, dnnl_f32, as));
    DN(dnnl_memory_desc_init_by_strides(&md[1], 2, bd, dnnl_f32, bs));
    DN(dnnl_memory_desc_init_by_strides(&md[2], 2, cd, dnnl_f32, cs));
done:
    return rc;
}

static int engine(void)
{
    int rc = 0;
    if (!G.eng) {
        DN(dnnl_engine_create(&G.eng, dnnl_cpu, 0));
        DN(dnnl_stream_create(&G.stream, G.eng, dnnl_stream_default_flags));
    }
done:
    return rc;
}

/* The primitive descriptor of the product, with a sum post-op when it adds into C. */
static int make_pd(bool ta, bool tb, int M, int N, int K, bool acc, dnnl_primitive_desc_t *pd,
                   dnnl_memory_desc_t md[3])
{
    int rc = 0;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_matmul_desc_t mm;
    if ((rc = engine()) != 0 || (rc = descs(ta, tb, M, N, K, md)) != 0) {
        goto done;
    }
    DN(dnnl_matmul_desc_init(&mm, &md[0], &md[1], NULL, &md[2]));
    if (acc) {
        DN(dnnl_post_ops_create(&po));
        DN(dnnl_post_ops_append_sum(po, 1.0f));
        DN(dnnl_primitive_attr_create(&attr));
        DN(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    DN(dnnl_primitive_desc_create(pd, &mm, attr, G.eng, NULL));
done:
    dnnl_primitive_attr_destroy(attr);
    dnnl_post_ops_destroy(po);
    return rc;
}

/* The table's entry for the shape: found, else made in the least recently used slot. */
static int lookup(bool ta, bool tb, int M, int N, int K, bool acc, mm_entry **out)
{
    int rc = 0;
    mm_entry *x = NULL, *lru = &G.e[0];
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t md[3];
    for (int i = 0; i < DP_GEMM_DNNL_SHAPES; i++) {
        mm_entry *y = &G.e[i];
        if (y->used && y->M == M && y->N == N && y->K == K && y->ta == ta && y->tb == tb &&
            y->acc == acc) {
            x = y;
            break;
        }
        lru = y->used < lru->used ? y : lru;
    }
    if (!x) {
        x = lru;
        if (x->used) {
            entry_free(x);
        }
        *x = (mm_entry){.M = M, .N = N, .K = K, .ta = ta, .tb = tb, .acc = acc};
        if ((rc = make_pd(ta, tb, M, N, K, acc, &pd, md)) != 0) {
            goto done;
        }
        x->ref = dn_is_ref(pd);
        DN(dnnl_primitive_create(&x->p, pd));
        DN(dnnl_memory_create(&x->a, &md[0], G.eng, DNNL_MEMORY_NONE));
        DN(dnnl_memory_create(&x->b, &md[1], G.eng, DNNL_MEMORY_NONE));
        DN(dnnl_memory_create(&x->c, &md[2], G.eng, DNNL_MEMORY_NONE));
    }
    x->used = ++G.clock;
    *out = x;
done:
    dnnl_primitive_desc_destroy(pd);
    if (rc != 0 && x) {
        entry_free(x);
    }
    return rc;
}

bool dp_gemm_dnnl(bool ta, bool tb, int M, int N, int K, const float *A, const float *B,
                  bool acc, float *C)
{
    int rc = 0;
    bool done_here = false;
    mm_entry *x = NULL;
    pthread_mutex_lock(&G.lock);
    if (G.broken || M <= 0 || N <= 0 || K <= 0) {
        goto done;
    }
    if ((rc = lookup(ta, tb, M, N, K, acc, &x)) != 0 || x->ref) {
        goto done;
    }
    DN(dnnl_memory_set_data_handle(x->a, (void *)(uintptr_t)A));
    DN(dnnl_memory_set_data_handle(x->b, (void *)(uintptr_t)B));
    DN(dnnl_memory_set_data_handle(x->c, C));
    const dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, x->a}, {DNNL_ARG_WEIGHTS, x->b}, {DNNL_ARG_DST, x->c}};
    DN(dnnl_primitive_execute(x->p, G.stream, 3, args));
    DN(dnnl_stream_wait(G.stream));
    done_here = true;
done:
    if (rc != 0) {
        G.broken = true;
    }
    pthread_mutex_unlock(&G.lock);
    return done_here;
}

void dp_gemm_dnnl_impl(int M, int N, int K, char *out, size_t cap)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t md[3];
    const char *impl = NULL;
    out[0] = '\0';
    pthread_mutex_lock(&G.lock);
    if (make_pd(false, true, M, N, K, false, &pd, md) == 0 &&
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl) {
        snprintf(out, cap, "%s", impl);
    }
    dnnl_primitive_desc_destroy(pd);
    pthread_mutex_unlock(&G.lock);
}

#else /* no oneDNN */

bool dp_gemm_dnnl_available(void) { return false; }

bool dp_gemm_dnnl(bool ta, bool tb, int M, int N, int K, const float *A, const float *B,
                  bool acc, float *C)
{
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)A, (void)B, (void)acc, (void)C;
    return false;
}

void dp_gemm_dnnl_impl(int M, int N, int K, char *out, size_t cap)
{
    (void)M, (void)N, (void)K;
    if (cap > 0) {
        out[0] = '\0';
    }
}

#endif
