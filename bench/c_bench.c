/* C-level benchmark of the recurrent kernels: no Python in the timing.
 *
 * Built against csrc/ and the OpenBLAS of the scipy-openblas32 wheel (the
 * same library family SciPy uses) by bench/build_c_bench.sh. Times
 * forward-train, backward and forward-inference of one layer, and the
 * machine's SGEMM rate, and prints GFLOP/s (forward 2*G*H*(I+H) per
 * sample-step, backward 2x that).
 *
 *   bench/bin/c_bench [cell B T I H threads reps lengths]
 *     cell: lstm gru rnn; lengths: full (default), lognormal (median T/4, fill
 *     about 0.3) or uniform (in [T/2, T], fill about 0.75); GFLOP/s count the
 *     valid steps only, and a `full` run of the same shape is the padded time.
 */
#define _POSIX_C_SOURCE 200112L /* clock_gettime, rand_r */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

#include "fastrnn.h"

void scipy_sgemm_(char *, char *, int *, int *, int *, float *, float *, int *, float *, int *,
                  float *, float *, int *);
void scipy_dgemm_(char *, char *, int *, int *, int *, double *, double *, int *, double *,
                  int *, double *, double *, int *);
void scipy_openblas_set_num_threads(int);
char *scipy_openblas_get_corename(void);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *randn(size_t n, unsigned *seed)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)rand_r(seed) / RAND_MAX * 0.2f - 0.1f;
    return x;
}

/* Per-sample lengths of one of the benchmark's distributions (fixed seed). */
static int32_t *make_lengths(const char *kind, int64_t B, int64_t T, unsigned *seed)
{
    int32_t *len = malloc(B * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++) {
        double u1 = (rand_r(seed) + 1.0) / (RAND_MAX + 2.0), u2 = rand_r(seed) / (RAND_MAX + 1.0);
        double n = !strcmp(kind, "lognormal")
                       ? T / 4.0 * exp(0.6 * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2))
                       : T / 2.0 + u2 * (T / 2.0 + 1);
        len[b] = n < 1 ? 1 : n > T ? (int32_t)T : (int32_t)n;
    }
    return len;
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

int main(int argc, char **argv)
{
    const char *cell_name = argc > 1 ? argv[1] : "lstm";
    int64_t B = argc > 2 ? atol(argv[2]) : 64, T = argc > 3 ? atol(argv[3]) : 100;
    int64_t I = argc > 4 ? atol(argv[4]) : 128, H = argc > 5 ? atol(argv[5]) : 256;
    int threads = argc > 6 ? atoi(argv[6]) : 1, reps = argc > 7 ? atoi(argv[7]) : 10;
    const char *lengths_kind = argc > 8 ? argv[8] : "full";
    int cell = !strcmp(cell_name, "gru") ? FR_GRU : !strcmp(cell_name, "rnn") ? FR_RNN_TANH
                                                                             : FR_LSTM;
    int64_t G = fr_gates(cell);
    /* our kernels call BLAS from inside their own OpenMP threads */
    scipy_openblas_set_num_threads(1);

    fr_blas blas = {scipy_sgemm_, scipy_dgemm_};
    unsigned seed = 1;
    int32_t *lengths = strcmp(lengths_kind, "full") ? make_lengths(lengths_kind, B, T, &seed) : NULL;
    fr_shape s = {cell, B, T, I, H, 0, lengths};
    int64_t valid = 0;
    for (int64_t b = 0; b < B; b++) valid += lengths ? lengths[b] : T;
    float *X = randn(B * T * I, &seed), *W_ih = randn(G * H * I, &seed);
    float *W_hh = randn(G * H * H, &seed), *b_ih = randn(G * H, &seed), *b_hh = randn(G * H, &seed);
    float *Y = calloc(B * T * H, sizeof(float)), *dY = randn(B * T * H, &seed);
    float *hN = calloc(B * H, sizeof(float)), *cN = calloc(B * H, sizeof(float));
    float *dX = calloc(B * T * I, sizeof(float)), *dW_ih = calloc(G * H * I, sizeof(float));
    float *dW_hh = calloc(G * H * H, sizeof(float)), *db_ih = calloc(G * H, sizeof(float));
    float *db_hh = calloc(G * H, sizeof(float)), *dh0 = calloc(B * H, sizeof(float));
    float *dc0 = calloc(B * H, sizeof(float));
    float *ws = malloc(fr_forward_workspace(&s, 1) * sizeof(float));
    float *ws_inf = malloc(fr_forward_workspace(&s, 0) * sizeof(float));
    float *bws = malloc(fr_backward_workspace(&s) * sizeof(float));

    double flops = 2.0 * G * H * (I + H) * valid;
    double best_train = 1e30, best_back = 1e30, best_inf = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        check(fr_forward_f32(&blas, &s, X, W_ih, W_hh, b_ih, b_hh, NULL, NULL, Y, H, hN, cN, ws,
                             1, threads), "forward (training)");
        double t1 = now();
        check(fr_backward_f32(&blas, &s, X, W_ih, W_hh, ws, dY, H, NULL, NULL, dX, 0, dW_ih,
                              dW_hh, db_ih, db_hh, dh0, dc0, bws, threads), "backward");
        double t2 = now();
        check(fr_forward_f32(&blas, &s, X, W_ih, W_hh, b_ih, b_hh, NULL, NULL, Y, H, hN, cN,
                             ws_inf, 0, threads), "forward (inference)");
        double t3 = now();
        if (t1 - t0 < best_train) best_train = t1 - t0;
        if (t2 - t1 < best_back) best_back = t2 - t1;
        if (t3 - t2 < best_inf) best_inf = t3 - t2;
    }
    /* the machine's SGEMM rate on one large product, same thread count */
    int n = 2048;
    float *a = randn((size_t)n * n, &seed), *c = calloc((size_t)n * n, sizeof(float));
    float one = 1, zero = 0;
    scipy_openblas_set_num_threads(threads);
    double best_gemm = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        scipy_sgemm_("N", "N", &n, &n, &n, &one, a, &n, a, &n, &zero, c, &n);
        if (now() - t0 < best_gemm) best_gemm = now() - t0;
    }
    double peak = 2.0 * n * n * n / best_gemm / 1e9;
    printf("%s B=%ld T=%ld I=%ld H=%ld threads=%d lengths=%s fill=%.3f (OpenBLAS %s, SGEMM "
           "%.1f GFLOP/s)\n", cell_name, (long)B, (long)T, (long)I, (long)H, threads,
           lengths_kind, (double)valid / (B * T), scipy_openblas_get_corename(), peak);
    printf("  forward-train  %8.3f ms  %6.1f GFLOP/s  %3.0f%% of SGEMM\n", best_train * 1e3,
           flops / best_train / 1e9, 100 * flops / best_train / 1e9 / peak);
    printf("  backward       %8.3f ms  %6.1f GFLOP/s  %3.0f%% of SGEMM\n", best_back * 1e3,
           2 * flops / best_back / 1e9, 100 * 2 * flops / best_back / 1e9 / peak);
    printf("  forward-infer  %8.3f ms  %6.1f GFLOP/s  %3.0f%% of SGEMM\n", best_inf * 1e3,
           flops / best_inf / 1e9, 100 * flops / best_inf / 1e9 / peak);
    return 0;
}
