/* allreduce_bench.c: times MPI_Allreduce (sum of floats, in place) on the real machine, to
 * calibrate the simulated platform of this machine (launch/simulate.sh's self-check).
 *
 * usage: mpirun -np 2 allreduce_bench COUNT...
 * Rank 0 prints one line per COUNT: "COUNT SECONDS", the median over 51 calls (after 10
 * untimed ones) of the slowest rank's time. Collective over MPI_COMM_WORLD. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

enum { N_WARM = 10, N_TIMED = 51 };

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, rc = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    for (int a = 1; a < argc && rc == 0; a++) {
        long n = atol(argv[a]);
        float *buf = calloc(n > 0 ? (size_t)n : 1, sizeof *buf);
        double t[N_TIMED];
        if (n < 1 || !buf) {
            fprintf(stderr, "allreduce_bench: bad count %s or out of memory\n", argv[a]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        for (int i = 0; i < N_WARM + N_TIMED; i++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            if (MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) !=
                MPI_SUCCESS) {
                rc = 1;
            }
            double dt = MPI_Wtime() - t0, mx = 0.0;
            MPI_Reduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
            if (i >= N_WARM) {
                t[i - N_WARM] = mx;
            }
        }
        if (rank == 0) {
            qsort(t, N_TIMED, sizeof t[0], cmp_double);
            printf("%ld %.9g\n", n, t[N_TIMED / 2]);
        }
        free(buf);
    }
    MPI_Finalize();
    return rc;
}
