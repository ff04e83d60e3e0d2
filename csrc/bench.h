/* C-level benchmark of the kernels: the timing loops run in C, so what they
 * measure is the kernels alone, with no Python in between. Compiled into the
 * extension (fastrnn.cbench, `fastrnn cbench`) and into the standalone
 * bench/c_bench program from the same source. */
#ifndef FASTRNN_BENCH_H
#define FASTRNN_BENCH_H

#include "fastrnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Best-of-reps seconds of each pass of one layer (float32, random weights). */
typedef struct {
    double forward_train, backward, forward_infer;
} fr_layer_times;

/* Times forward (training), backward and forward (inference) of the layer s
 * describes (s->lengths may be set: a ragged batch), reps times each, keeping
 * the best. BLAS must be single-threaded meanwhile (as for fr_forward). */
int fr_bench_layer(const fr_blas *blas, const fr_shape *s, int n_threads, int reps,
                   fr_layer_times *out);

/* Best-of-reps seconds of one n x n x n SGEMM through the table: the machine's
 * GEMM rate with whatever BLAS threads the caller allows. */
int fr_bench_sgemm(const fr_blas *blas, int64_t n, int reps, double *seconds);

/* Best-of-reps seconds to read a buffer of `bytes` (summing it with wide
 * vectors, after one pass to bring it into cache): the bound on anything that
 * streams that many bytes of weights per step (batch-1 steps, generation). */
int fr_bench_read(int64_t bytes, int reps, double *seconds);

#ifdef __cplusplus
}
#endif
#endif
