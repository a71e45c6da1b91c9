/* gemm_bench.c: measures dp_gemm (the real one, src/core/gemm.c: oneDNN's matmul or OpenBLAS
 * by shape, as a run computes its dense products) for a list of product shapes and writes the
 * table the simulation build injects (sim/blas_sim.c).
 *
 * usage: gemm_bench SHAPES OUT [THREADS]
 *   SHAPES  lines "ta tb M N K" (as recorded by a simulation run, duplicates allowed)
 *   OUT     lines "ta tb M N K seconds": the median of 31 timed calls after 5 untimed ones
 *   THREADS OpenBLAS threads (default 1: one rank per core)
 * Uses the kernels dptrain would use: if OpenBLAS chose slower kernels than the CPU allows
 * and OPENBLAS_CORETYPE is unset, sets it and re-executes itself, as dptrain does.
 * Local, single process; run one copy per core at once to measure under full load. */
#define _POSIX_C_SOURCE 200809L
#include "dptrain/blas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { N_WARM = 5, N_TIMED = 31, MAX_SHAPES = 256 };

typedef struct {
    int ta, tb, M, N, K;
} shape;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds of one product of shape s; A, B, C hold at least the elements it needs. */
static double time_shape(const shape *s, const float *A, const float *B, float *C)
{
    double t[N_TIMED];
    for (int i = 0; i < N_WARM + N_TIMED; i++) {
        double t0 = now();
        dp_gemm(s->ta, s->tb, s->M, s->N, s->K, A, B, false, C);
        if (i >= N_WARM) {
            t[i - N_WARM] = now() - t0;
        }
    }
    qsort(t, N_TIMED, sizeof t[0], cmp_double);
    return t[N_TIMED / 2];
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s SHAPES OUT [THREADS]\n", argv[0]);
        return 2;
    }
    const char *better = dp_blas_better_coretype(dp_blas_corename(), dp_cpu_detect());
    if (better && !getenv("OPENBLAS_CORETYPE")) {
        if (setenv("OPENBLAS_CORETYPE", better, 1) != 0) {
            perror("setenv");
            return 1;
        }
        execv("/proc/self/exe", argv);
        perror("execv /proc/self/exe"); /* keep going with the slower kernels */
    }
    dp_blas_set_threads(argc == 4 ? atoi(argv[3]) : 1);

    shape sh[MAX_SHAPES];
    int n = 0;
    size_t max_a = 1, max_b = 1, max_c = 1;
    FILE *in = fopen(argv[1], "r");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    shape s;
    while (fscanf(in, "%d %d %d %d %d", &s.ta, &s.tb, &s.M, &s.N, &s.K) == 5) {
        int dup = 0;
        for (int i = 0; i < n; i++) {
            dup |= memcmp(&sh[i], &s, sizeof s) == 0;
        }
        if (dup) {
            continue;
        }
        if (n == MAX_SHAPES || s.M < 1 || s.N < 1 || s.K < 1) {
            fprintf(stderr, "%s: too many shapes or a bad one (%d %d %d)\n", argv[1], s.M, s.N,
                    s.K);
            fclose(in);
            return 1;
        }
        sh[n++] = s;
        size_t a = (size_t)s.M * s.K, b = (size_t)s.K * s.N, c = (size_t)s.M * s.N;
        max_a = a > max_a ? a : max_a;
        max_b = b > max_b ? b : max_b;
        max_c = c > max_c ? c : max_c;
    }
    fclose(in);

    float *A = malloc(max_a * sizeof *A), *B = malloc(max_b * sizeof *B);
    float *C = malloc(max_c * sizeof *C);
    if (!A || !B || !C) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < max_a; i++) {
        A[i] = (float)(i % 17) * 0.01f;
    }
    for (size_t i = 0; i < max_b; i++) {
        B[i] = (float)(i % 13) * 0.01f;
    }
    FILE *out = fopen(argv[2], "w");
    if (!out) {
        perror(argv[2]);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        double sec = time_shape(&sh[i], A, B, C);
        fprintf(out, "%d %d %d %d %d %.9g\n", sh[i].ta, sh[i].tb, sh[i].M, sh[i].N, sh[i].K, sec);
    }
    if (fclose(out) != 0) {
        perror(argv[2]);
        return 1;
    }
    fprintf(stderr, "gemm_bench: %d shapes, kernels %s, %d thread(s)\n", n, dp_blas_corename(),
            dp_blas_get_threads());
    free(A);
    free(B);
    free(C);
    return 0;
}
