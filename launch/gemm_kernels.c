/* gemm_kernels.c: oneDNN's matmul against OpenBLAS's sgemm, one product shape
 * at a time, for the dense layers of a network at a batch
 * (launch/gemm_kernels.sh builds and runs it): the forward y = x w^T, the
 * weight gradient dw = dy^T x and the data gradient dx = dy w of every layer
 * (no data gradient for the first), each timed as 200 calls, the median of 9
 * repeats after 3, the two libraries alternating; prints both times, their
 * ratio, the largest difference between the two results and oneDNN's
 * implementation. Single thread unless OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
 * say otherwise. gemm_kernels ROWS LAYERS      e.g. gemm_kernels 64
 * 784,256,128,10 */
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
#define CK(x)                                                                                      \
    do {                                                                                           \
        dnnl_status_t s_ = (x);                                                                    \
        if (s_ != dnnl_success) {                                                                  \
            fprintf(stderr, "%s: %d\n", #x, s_);                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
static int cmpd(const void *a, const void *b)
{
    double x = *(double *)a, y = *(double *)b;
    return x < y ? -1 : x > y;
}
/* C(M,N) = A(M,K) * B(K,N), A transposed if ta (stored K x M), B transposed if
 * tb (stored N x K) */
static void run(dnnl_engine_t eng, dnnl_stream_t st, int M, int N, int K, int ta, int tb, int reps)
{
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N),
          *C = malloc(sizeof(float) * M * N), *C2 = malloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; i++)
        A[i] = (rand() % 100 - 50) / 50.f;
    for (int i = 0; i < K * N; i++)
        B[i] = (rand() % 100 - 50) / 50.f;
    dnnl_dims_t ad = {M, K}, bd = {K, N}, cd = {M, N};
    dnnl_dims_t as = {ta ? 1 : K, ta ? M : 1}, bs = {tb ? 1 : N, tb ? K : 1}, cs = {N, 1};
    dnnl_memory_desc_t amd, bmd, cmd;
    CK(dnnl_memory_desc_init_by_strides(&amd, 2, ad, dnnl_f32, as));
    CK(dnnl_memory_desc_init_by_strides(&bmd, 2, bd, dnnl_f32, bs));
    CK(dnnl_memory_desc_init_by_strides(&cmd, 2, cd, dnnl_f32, cs));
    dnnl_matmul_desc_t md;
    CK(dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd));
    dnnl_primitive_desc_t pd;
    CK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
    const char *impl;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    dnnl_primitive_t p;
    CK(dnnl_primitive_create(&p, pd));
    dnnl_memory_t am, bm, cm;
    CK(dnnl_memory_create(&am, &amd, eng, A));
    CK(dnnl_memory_create(&bm, &bmd, eng, B));
    CK(dnnl_memory_create(&cm, &cmd, eng, C));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    double td[50], tb_[50];
    int inner = 200;
    for (int r = -3; r < reps; r++) {
        double t0 = now();
        for (int i = 0; i < inner; i++) {
            CK(dnnl_primitive_execute(p, st, 3, args));
        }
        CK(dnnl_stream_wait(st));
        double t1 = now();
        for (int i = 0; i < inner; i++)
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                        tb ? CblasTrans : CblasNoTrans, M, N, K, 1.f, A, ta ? M : K, B, tb ? K : N,
                        0.f, C2, N);
        double t2 = now();
        if (r >= 0) {
            td[r] = (t1 - t0) / inner * 1e6;
            tb_[r] = (t2 - t1) / inner * 1e6;
        }
    }
    qsort(td, reps, sizeof(double), cmpd);
    qsort(tb_, reps, sizeof(double), cmpd);
    double md_ = 0;
    for (int i = 0; i < M * N; i++) {
        double d = C[i] - C2[i];
        if (d < 0)
            d = -d;
        if (d > md_)
            md_ = d;
    }
    printf("M%4d N%4d K%4d ta%d tb%d  openblas %7.2f us  onednn %7.2f us  ratio "
           "%.2f  maxdiff %.1e  %s\n",
           M, N, K, ta, tb, tb_[reps / 2], td[reps / 2], tb_[reps / 2] / td[reps / 2], md_, impl);
    dnnl_primitive_destroy(p);
    dnnl_primitive_desc_destroy(pd);
    free(A);
    free(B);
    free(C);
    free(C2);
}
int main(int argc, char **argv)
{
    int Bt = argc > 1 ? atoi(argv[1]) : 128;
    int L[16], n = 0;
    for (const char *p = argc > 2 ? argv[2] : "784,256,128,10"; *p && n < 16;) {
        L[n++] = atoi(p);
        p += strcspn(p, ",");
        p += *p == ',';
    }
    if (Bt < 1 || n < 2) {
        fprintf(stderr, "usage: gemm_kernels ROWS LAYERS (e.g. 64 784,256,128,10)\n");
        return 2;
    }
    dnnl_engine_t eng;
    CK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    dnnl_stream_t st;
    CK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    for (int l = 0; l + 1 < n; l++) {
        int in = L[l], out = L[l + 1];
        run(eng, st, Bt, out, in, 0, 1, 9); /* forward: y (B,out) = x (B,in) w^T */
        run(eng, st, out, in, Bt, 1, 0, 9); /* weight gradient: dw (out,in) = dy^T x */
        if (l > 0) {
            run(eng, st, Bt, in, out, 0, 0, 9); /* data gradient: dx (B,in) = dy w */
        }
    }
    return 0;
}
