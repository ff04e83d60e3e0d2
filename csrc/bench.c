/* C-level benchmark loops (see bench.h). */
#define _POSIX_C_SOURCE 200112L /* clock_gettime */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _WIN32
#include <windows.h>
#endif

static double fr_now(void)
{
#ifdef _WIN32
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

/* Uniform values in [-0.1, 0.1) from a fixed LCG: the same data every run. */
static void fr_fill(float *x, int64_t n, uint32_t *state)
{
    for (int64_t i = 0; i < n; i++) {
        *state = *state * 1664525u + 1013904223u;
        x[i] = (float)(*state >> 8) * (0.2f / 16777216.0f) - 0.1f;
    }
}

/* Every buffer of one layer's forward and backward, carved from one block. */
typedef struct {
    float *X, *W_ih, *W_hh, *b_ih, *b_hh, *Y, *dY, *hN, *cN, *dX;
    float *dW_ih, *dW_hh, *db_ih, *db_hh, *dh0, *dc0, *ws, *ws_infer, *bws;
} fr_layer_buffers;

static float *fr_layer_carve(const fr_shape *s, fr_layer_buffers *b)
{
    const int64_t B = s->batch, T = s->steps, I = s->inputs, H = s->hidden;
    const int64_t GH = fr_gates(s->cell) * H;
    const int64_t sizes[] = {B * T * I, GH * I, GH * H, GH, GH, B * T * H, B * T * H, B * H,
                             B * H, B * T * I, GH * I, GH * H, GH, GH, B * H, B * H,
                             fr_forward_workspace(s, 1), fr_forward_workspace(s, 0),
                             fr_backward_workspace(s)};
    enum { N = sizeof sizes / sizeof sizes[0] };
    int64_t total = 0;
    for (int i = 0; i < N; i++) total += sizes[i];
    float *block = (float *)calloc((size_t)total, sizeof(float));
    if (!block) return NULL;
    float **slot[N] = {&b->X, &b->W_ih, &b->W_hh, &b->b_ih, &b->b_hh, &b->Y, &b->dY,
                       &b->hN, &b->cN, &b->dX, &b->dW_ih, &b->dW_hh, &b->db_ih, &b->db_hh,
                       &b->dh0, &b->dc0, &b->ws, &b->ws_infer, &b->bws};
    float *p = block;
    for (int i = 0; i < N; i++) {
        *slot[i] = p;
        p += sizes[i];
    }
    uint32_t state = 12345u;
    fr_fill(b->X, sizes[0], &state);
    fr_fill(b->W_ih, sizes[1] + sizes[2] + sizes[3] + sizes[4], &state); /* weights, biases */
    fr_fill(b->dY, sizes[6], &state);
    return block;
}

static void fr_keep_best(double *best, double seconds)
{
    if (seconds < *best) *best = seconds;
}

int fr_bench_layer(const fr_blas *blas, const fr_shape *s, int n_threads, int reps,
                   fr_layer_times *out)
{
    int rc = fr_check_shape(s, s ? s->hidden : 0);
    if (rc != FR_OK) return rc;
    if (!blas || !out || reps < 1) return FR_ERR_ARG;
    fr_layer_buffers b;
    float *block = fr_layer_carve(s, &b);
    if (!block) return FR_ERR_NOMEM;
    const int64_t H = s->hidden;
    out->forward_train = out->backward = out->forward_infer = 1e300;
    for (int r = 0; r < reps && rc == FR_OK; r++) {
        double t0 = fr_now();
        rc = fr_forward_f32(blas, s, b.X, b.W_ih, b.W_hh, b.b_ih, b.b_hh, NULL, NULL, b.Y, H,
                            b.hN, b.cN, b.ws, 1, n_threads);
        double t1 = fr_now();
        if (rc == FR_OK)
            rc = fr_backward_f32(blas, s, b.X, b.W_ih, b.W_hh, b.ws, b.dY, H, NULL, NULL, b.dX,
                                 0, b.dW_ih, b.dW_hh, b.db_ih, b.db_hh, b.dh0, b.dc0, b.bws,
                                 n_threads);
        double t2 = fr_now();
        if (rc == FR_OK)
            rc = fr_forward_f32(blas, s, b.X, b.W_ih, b.W_hh, b.b_ih, b.b_hh, NULL, NULL, b.Y,
                                H, b.hN, b.cN, b.ws_infer, 0, n_threads);
        double t3 = fr_now();
        fr_keep_best(&out->forward_train, t1 - t0);
        fr_keep_best(&out->backward, t2 - t1);
        fr_keep_best(&out->forward_infer, t3 - t2);
    }
    free(block);
    return rc;
}

int fr_bench_sgemm(const fr_blas *blas, int64_t n, int reps, double *seconds)
{
    if (!blas || !blas->sgemm || !seconds || n < 1 || reps < 1) return FR_ERR_ARG;
    if (n > 46340) return FR_ERR_TOO_LARGE; /* n*n must fit BLAS's int */
    float *a = (float *)malloc((size_t)(2 * n * n) * sizeof(float));
    if (!a) return FR_ERR_NOMEM;
    float *c = a + n * n, one = 1, zero = 0;
    uint32_t state = 7u;
    fr_fill(a, n * n, &state);
    int m = (int)n;
    char no = 'N';
    *seconds = 1e300;
    for (int r = 0; r < reps; r++) {
        double t0 = fr_now();
        blas->sgemm(&no, &no, &m, &m, &m, &one, a, &m, a, &m, &zero, c, &m);
        fr_keep_best(seconds, fr_now() - t0);
    }
    free(a);
    return FR_OK;
}

/* Sum of n floats (n a multiple of 64) in eight independent vector chains:
 * as many loads in flight as the core allows. Wider vectors where the CPU
 * has them (the loader picks the clone). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static float fr_read_sum(const float *x, int64_t n)
{
    float acc[64] = {0};
    for (int64_t i = 0; i < n; i += 64)
        for (int j = 0; j < 64; j++) acc[j] += x[i + j];
    float total = 0;
    for (int j = 0; j < 64; j++) total += acc[j];
    return total;
}

int fr_bench_read(int64_t bytes, int reps, double *seconds)
{
    if (!seconds || bytes < 1 || reps < 1) return FR_ERR_ARG;
    const int64_t n = (bytes / (int64_t)sizeof(float) + 63) / 64 * 64;
    float *x = (float *)malloc((size_t)n * sizeof(float));
    if (!x) return FR_ERR_NOMEM;
    uint32_t state = 3u;
    fr_fill(x, n, &state);
    volatile float sink = fr_read_sum(x, n); /* warm: the weights a step reads stay cached */
    *seconds = 1e300;
    for (int r = 0; r < reps; r++) {
        double t0 = fr_now();
        sink += fr_read_sum(x, n);
        fr_keep_best(seconds, fr_now() - t0);
    }
    (void)sink;
    free(x);
    return FR_OK;
}
