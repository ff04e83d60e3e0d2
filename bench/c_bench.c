/* Standalone C-level benchmark: the timing loops of csrc/bench.c (the same
 * ones `fastrnn cbench` runs inside the extension) in a program with no Python
 * at all, linked against the OpenBLAS of the scipy-openblas32 wheel (the
 * library family SciPy uses). Built by bench/build_c_bench.sh.
 *
 *   bench/bin/c_bench [cell B T I H threads reps]   cell: lstm gru rnn_tanh rnn_relu
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

void scipy_sgemm_(char *, char *, int *, int *, int *, float *, float *, int *, float *, int *,
                  float *, float *, int *);
void scipy_dgemm_(char *, char *, int *, int *, int *, double *, double *, int *, double *,
                  int *, double *, double *, int *);
void scipy_openblas_set_num_threads(int);
char *scipy_openblas_get_corename(void);

static int cell_code(const char *name)
{
    const char *names[] = {"lstm", "gru", "rnn_tanh", "rnn_relu"};
    const int codes[] = {FR_LSTM, FR_GRU, FR_RNN_TANH, FR_RNN_RELU};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) return codes[i];
    return !strcmp(name, "rnn") ? FR_RNN_TANH : -1;
}

static void check(int rc, const char *what)
{
    if (rc == FR_OK) return;
    fprintf(stderr, "%s failed: %s (status %d)\n", what,
            rc == FR_ERR_NOMEM ? "out of memory" : rc == FR_ERR_TOO_LARGE ? "sizes too large"
                                                                          : "invalid arguments",
            rc);
    exit(1);
}

static void report(const char *pass, double seconds, double flops, double peak)
{
    double gflops = flops / seconds / 1e9;
    printf("  %-14s %8.3f ms  %6.1f GFLOP/s  %3.0f%% of SGEMM\n", pass, seconds * 1e3, gflops,
           100 * gflops / peak);
}

int main(int argc, char **argv)
{
    const char *cell_name = argc > 1 ? argv[1] : "lstm";
    int64_t B = argc > 2 ? atol(argv[2]) : 64, T = argc > 3 ? atol(argv[3]) : 100;
    int64_t I = argc > 4 ? atol(argv[4]) : 128, H = argc > 5 ? atol(argv[5]) : 256;
    int threads = argc > 6 ? atoi(argv[6]) : 1, reps = argc > 7 ? atoi(argv[7]) : 10;
    int cell = cell_code(cell_name);
    if (cell < 0) {
        fprintf(stderr, "unknown cell %s (lstm, gru, rnn_tanh, rnn_relu)\n", cell_name);
        return 2;
    }
    fr_blas blas = {scipy_sgemm_, scipy_dgemm_};
    fr_shape s = {cell, B, T, I, H, 0, NULL};
    fr_layer_times t;
    double gemm_seconds;
    scipy_openblas_set_num_threads(1); /* the kernels call BLAS from their own threads */
    check(fr_bench_layer(&blas, &s, threads, reps, &t), "layer");
    scipy_openblas_set_num_threads(threads); /* the GEMM rate at the same thread count */
    check(fr_bench_sgemm(&blas, 2048, 3, &gemm_seconds), "sgemm");
    double peak = 2.0 * 2048 * 2048 * 2048 / gemm_seconds / 1e9;
    double flops = 2.0 * fr_gates(cell) * H * (I + H) * B * T;
    printf("%s B=%ld T=%ld I=%ld H=%ld threads=%d (OpenBLAS %s, SGEMM %.1f GFLOP/s)\n",
           cell_name, (long)B, (long)T, (long)I, (long)H, threads,
           scipy_openblas_get_corename(), peak);
    report("forward-train", t.forward_train, flops, peak);
    report("backward", t.backward, 2 * flops, peak);
    report("forward-infer", t.forward_infer, flops, peak);
    return 0;
}
