/* blas_sim.c: dp_sgemm for the SimGrid/SMPI build. Replaces src/core/blas.c (the only cblas
 * user): a product is not computed, its time is injected into the simulation instead.
 *
 * The time of each product shape (ta, tb, M, N, K) comes from a table measured on real
 * hardware by sim/gemm_bench.c (file named by DPTRAIN_SIM_GEMM_TABLE; lines
 * "ta tb M N K seconds"). A shape missing from the table costs 2 M N K / rate, with rate
 * DPTRAIN_SIM_GFLOPS (GFLOP/s, default 30), and is appended once to the file named by
 * DPTRAIN_SIM_GEMM_SHAPES if that is set, so that a first run can list the shapes to measure.
 *
 * C is left as it is (buffers hold zeros or bias rows, so the model stays finite and the
 * non-GEMM kernels do their usual work on real numbers). All functions are Local. The table
 * is shared by every simulated rank: ranks run one at a time in one OS thread and the table
 * is read-only once loaded. */
#include "dptrain/blas.h"

#include <smpi/smpi.h>
#include <stdio.h>
#include <stdlib.h>

/* One measured (or recorded) product shape. */
typedef struct {
    int ta, tb, M, N, K;
    double seconds; /* < 0: not measured (recorded as missing) */
} gemm_entry;

typedef struct {
    int loaded;
    int n, cap;
    gemm_entry *e;
    double gflops; /* fallback rate for shapes not in the table */
} gemm_table;

static gemm_table g_table;

/* Appends an entry; on allocation failure the shape simply stays unknown (fallback rate). */
static gemm_entry *table_add(gemm_table *t, gemm_entry e)
{
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 64;
        gemm_entry *p = realloc(t->e, (size_t)cap * sizeof *p);
        if (!p) {
            return NULL;
        }
        t->e = p;
        t->cap = cap;
    }
    t->e[t->n] = e;
    return &t->e[t->n++];
}

/* Reads the table once (on the first product of any rank). A missing or unreadable file is
 * fatal: a simulation without measured times would silently predict nonsense. */
static void table_load(gemm_table *t)
{
    t->loaded = 1;
    const char *g = getenv("DPTRAIN_SIM_GFLOPS");
    t->gflops = g ? atof(g) : 30.0;
    if (!(t->gflops > 0.0)) {
        fprintf(stderr, "dptrain-sim: DPTRAIN_SIM_GFLOPS=%s: must be > 0\n", g);
        exit(2);
    }
    const char *path = getenv("DPTRAIN_SIM_GEMM_TABLE");
    if (!path || !*path) {
        return;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    gemm_entry e;
    int got;
    while ((got = fscanf(f, "%d %d %d %d %d %lf", &e.ta, &e.tb, &e.M, &e.N, &e.K, &e.seconds)) ==
           6) {
        if (!table_add(t, e)) {
            fprintf(stderr, "dptrain-sim: out of memory reading %s\n", path);
            exit(2);
        }
    }
    if (got != EOF || ferror(f)) {
        fprintf(stderr, "dptrain-sim: %s: malformed line %d (want: ta tb M N K seconds)\n", path,
                t->n + 1);
        exit(2);
    }
    fclose(f);
}

/* Seconds for one product of this shape: the table's, else 2MNK at the fallback rate (and
 * the shape is recorded). */
static double gemm_seconds(bool ta, bool tb, int M, int N, int K)
{
    gemm_table *t = &g_table;
    if (!t->loaded) {
        table_load(t);
    }
    for (int i = 0; i < t->n; i++) {
        const gemm_entry *e = &t->e[i];
        if (e->ta == ta && e->tb == tb && e->M == M && e->N == N && e->K == K) {
            if (e->seconds >= 0.0) {
                return e->seconds;
            }
            return 2.0 * M * N * (double)K / (t->gflops * 1e9);
        }
    }
    gemm_entry e = {ta, tb, M, N, K, -1.0};
    table_add(t, e);
    const char *rec = getenv("DPTRAIN_SIM_GEMM_SHAPES");
    if (rec && *rec) {
        FILE *f = fopen(rec, "a");
        if (f) {
            fprintf(f, "%d %d %d %d %d\n", (int)ta, (int)tb, M, N, K);
            fclose(f);
        }
    }
    return 2.0 * M * N * (double)K / (t->gflops * 1e9);
}

void dp_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
              const float *B, float beta, float *C)
{
    (void)alpha;
    (void)A;
    (void)B;
    (void)beta;
    (void)C;
    if (M == 0 || N == 0) {
        return;
    }
    /* Stops SMPI's benchmark timer (the code before this call is injected as measured), runs
     * the product's time on this rank's host, and restarts the timer. */
    smpi_execute_benched(gemm_seconds(ta, tb, M, N, K));
}

/* The banner's kernel name (src/core/gemm.c's dp_gemm_describe asks for it). */
const char *dp_blas_corename(void) { return "simulated"; }
