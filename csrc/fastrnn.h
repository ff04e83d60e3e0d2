/* fastrnn C kernels: recurrent forward / backpropagation through time.
 *
 * Plain C99 + OpenMP. BLAS is reached only through fr_blas, a table of
 * Fortran-ABI gemm pointers that the caller fills (the Cython bindings take
 * them from scipy.linalg.cython_blas), so nothing links BLAS at build time.
 *
 * Layouts: every matrix is row-major. Sequences are batch-first,
 * X (B, T, I), Y (B, T, ldy) with the direction's H columns at the pointer
 * given. Weights follow PyTorch: W_ih (G*H, I), W_hh (G*H, H), biases (G*H).
 */
#ifndef FASTRNN_H
#define FASTRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*fr_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                            float *alpha, float *a, int *lda, float *b, int *ldb,
                            float *beta, float *c, int *ldc);
typedef void (*fr_dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                            double *alpha, double *a, int *lda, double *b, int *ldb,
                            double *beta, double *c, int *ldc);

typedef struct {
    fr_sgemm_fn sgemm;
    fr_dgemm_fn dgemm;
} fr_blas;

enum fr_cell { FR_LSTM = 0, FR_GRU = 1, FR_RNN_TANH = 2, FR_RNN_RELU = 3 };

enum fr_status {
    FR_OK = 0,
    FR_ERR_ARG = -1,      /* a null pointer, unknown cell or non-positive size */
    FR_ERR_TOO_LARGE = -2, /* a GEMM argument would not fit BLAS's 32-bit int */
    FR_ERR_NOMEM = -3,     /* the kernel's own scratch (packed weights) could not be allocated */
    FR_STOPPED = -4        /* fr_request_stop() ended the call early; its outputs are not valid */
};

/* One layer, one direction. lengths (B) may be NULL (every sample has T steps);
 * a sample b is active at step t when t < lengths[b] (lengths are clamped to
 * [0, T]). Y is 0 past a sample's length, its final state is the one after its
 * last valid step, and a reverse direction starts there (from h0). The kernels
 * compute only the valid steps: with lengths, the workspaces are sized for
 * them, so the same lengths must reach the size functions and the kernels. */
typedef struct {
    int cell;
    int64_t batch, steps, inputs, hidden;
    int reverse;
    const int32_t *lengths;
} fr_shape;

int fr_gates(int cell); /* G: 4 for LSTM, 3 for GRU, 1 for RNN */
int fr_check_shape(const fr_shape *s, int64_t ldy);

/* Elements of workspace the forward pass needs (s->lengths included). A
 * training workspace holds what backward reads and must be passed to it
 * unchanged. */
int64_t fr_forward_workspace(const fr_shape *s, int training);
/* Elements of scratch the backward pass needs (besides the forward workspace). */
int64_t fr_backward_workspace(const fr_shape *s);

/* Forward. h0/c0 (B, H) may be NULL (zeros); c0/cN only for LSTM. hN/cN (B, H)
 * receive the final state. ws holds fr_forward_workspace(s, training) elements. */
int fr_forward_f32(const fr_blas *blas, const fr_shape *s, const float *X,
                   const float *W_ih, const float *W_hh, const float *b_ih, const float *b_hh,
                   const float *h0, const float *c0, float *Y, int64_t ldy,
                   float *hN, float *cN, float *ws, int training, int n_threads);
int fr_forward_f64(const fr_blas *blas, const fr_shape *s, const double *X,
                   const double *W_ih, const double *W_hh, const double *b_ih, const double *b_hh,
                   const double *h0, const double *c0, double *Y, int64_t ldy,
                   double *hN, double *cN, double *ws, int training, int n_threads);

/* A direction's W_ih and W_hh packed once for inference calls of s's cell, batch,
 * inputs and hidden size on n_threads (lengths, steps, reverse: any), into
 * a caller-owned buffer of fr_pack_recurrent_size(s, n_threads) elements
 * (-1: a bad shape). fr_forward_packed_* with training 0 reads it instead of
 * packing per call while it holds a pack of those same weight arrays for that
 * same layout and team (a header records them); any other buffer is ignored
 * (the call packs as fr_forward_*). Repack after the weights change: the
 * header records their addresses, not their values. */
int64_t fr_pack_recurrent_size_f32(const fr_shape *s, int n_threads);
int64_t fr_pack_recurrent_size_f64(const fr_shape *s, int n_threads);
/* The team a layer call of shape s on n_threads runs with, for weights of
 * real_size bytes: its thread count, in *by_rows whether the threads split
 * the batch rows (small W_hh) or the hidden units, and in *slices how many
 * slices of units (fewer than threads: each slice's threads share its rows)
 * (-1: a bad shape). */
int fr_layer_team_of(const fr_shape *s, int n_threads, int real_size, int *by_rows,
                     int *slices);
/* Timings and tests: 0 keeps every team on the unit split (reduced-weight
 * steps on one thread where they would split rows); returns the previous
 * setting (1 by default). Process-wide. */
int fr_set_row_split(int on);
/* Timings and tests: 0 makes every layer call project its inputs before the
 * step loop, as calls the fused projection does not serve (GRU, batches of
 * up to 3 rows) do; returns the previous setting (1 by default). Results are
 * the same bit for bit. Process-wide. */
int fr_set_fused_projection(int on);
/* Whether a layer call of shape s with weights of real_size bytes projects
 * its inputs inside each step (-1: a bad shape). */
int fr_fused_projection_of(const fr_shape *s, int real_size);
/* Whether a backward of shape s with weights of real_size bytes computes its
 * weight gradients in fastrnn's kernel rather than BLAS (-1: a bad shape). */
int fr_weight_grad_kernel_of(const fr_shape *s, int real_size);
/* Tests only: at most `cap` unit slices per layer team (0: no cap), so that a
 * 2-thread team can run row groups; returns the previous cap. */
int fr_set_unit_slices_cap(int cap);
int fr_row_split_enabled(void);
/* Equal for two shapes exactly when one pack serves both (-1: a bad shape). */
int64_t fr_pack_recurrent_key_f32(const fr_shape *s, int n_threads);
int64_t fr_pack_recurrent_key_f64(const fr_shape *s, int n_threads);
int fr_pack_recurrent_f32(const fr_shape *s, const float *W_ih, const float *W_hh, float *pack,
                          int64_t n_pack, int n_threads);
int fr_pack_recurrent_f64(const fr_shape *s, const double *W_ih, const double *W_hh,
                          double *pack, int64_t n_pack, int n_threads);
int fr_forward_packed_f32(const fr_blas *blas, const fr_shape *s, const float *X,
                          const float *W_ih, const float *W_hh, const float *b_ih,
                          const float *b_hh, const float *h0, const float *c0, float *Y,
                          int64_t ldy, float *hN, float *cN, float *ws, int training,
                          int n_threads, const float *pack, int64_t n_pack);
int fr_forward_packed_f64(const fr_blas *blas, const fr_shape *s, const double *X,
                          const double *W_ih, const double *W_hh, const double *b_ih,
                          const double *b_hh, const double *h0, const double *c0, double *Y,
                          int64_t ldy, double *hN, double *cN, double *ws, int training,
                          int n_threads, const double *pack, int64_t n_pack);

/* Backward through one layer/direction after a training forward with the same
 * arguments. dY (with ldy), dhN, dcN may be NULL (zero). Weight and bias
 * gradients are accumulated (+=); all four NULL: the dX-only mode, no weight
 * gradient is computed. dX (B, T, I) is overwritten, or accumulated
 * when accumulate_dx, and may be NULL. dh0/dc0 (B, H) are always written
 * (dc0 only for LSTM). bws holds fr_backward_workspace(s) elements. */
int fr_backward_f32(const fr_blas *blas, const fr_shape *s, const float *X,
                    const float *W_ih, const float *W_hh, const float *ws,
                    const float *dY, int64_t ldy, const float *dhN, const float *dcN,
                    float *dX, int accumulate_dx, float *dW_ih, float *dW_hh,
                    float *db_ih, float *db_hh, float *dh0, float *dc0,
                    float *bws, int n_threads);
int fr_backward_f64(const fr_blas *blas, const fr_shape *s, const double *X,
                    const double *W_ih, const double *W_hh, const double *ws,
                    const double *dY, int64_t ldy, const double *dhN, const double *dcN,
                    double *dX, int accumulate_dx, double *dW_ih, double *dW_hh,
                    double *db_ih, double *db_hh, double *dh0, double *dc0,
                    double *bws, int n_threads);

/* Optimizers: one fused pass over a flat parameter buffer. The gradient used
 * is grad_scale * g + l2 * decay_mask * w (decay_mask may be NULL: decay
 * everything; grad_scale carries clipping and loss normalisation).
 * m and v are the optimizer's state buffers (as many elements as w; unused
 * ones may be NULL). step counts from 1 (Adam's bias correction). */
enum fr_solver { FR_SGD = 0, FR_RMSPROP = 1, FR_ADAGRAD = 2, FR_ADAM = 3 };

typedef struct {
    int solver;
    double lr, l2, grad_scale;
    double momentum; int nesterov;  /* sgd */
    double rho;                     /* rmsprop */
    double beta1, beta2, eps;       /* adam (eps also rmsprop, adagrad) */
    int64_t step;
} fr_optim;

int fr_optim_step_f32(const fr_optim *o, int64_t n, float *w, const float *g, float *m,
                      float *v, const float *decay_mask, int n_threads);
int fr_optim_step_f64(const fr_optim *o, int64_t n, double *w, const double *g, double *m,
                      double *v, const double *decay_mask, int n_threads);
/* Sum of squares, accumulated in double (for clipping by global norm). */
double fr_sumsq_f32(const float *x, int64_t n, int n_threads);
double fr_sumsq_f64(const double *x, int64_t n, int n_threads);

/* Token generation: the whole sampling loop in C. A unidirectional stack of
 * num_layers layers over embedded tokens, a dense head, then per token:
 * temperature softmax, top-k / top-p filtering, and a draw from a seeded
 * xoshiro256** stream per sample (sample i's stream depends only on seed and
 * i). The head's output o means token out_tokens[o]; a head with one output is
 * a binary (sigmoid) head whose two classes are out_tokens[0], out_tokens[1]. */
typedef struct {
    int cell;
    int64_t num_layers, hidden, embed_dim, vocab, n_outputs;
    const void *embedding;     /* (vocab, embed_dim) */
    const void *const *W_ih;   /* per layer (G*H, in) */
    const void *const *W_hh;   /* per layer (G*H, H) */
    const void *const *b_ih, *const *b_hh;
    const void *head_W;        /* (n_outputs, H) */
    const void *head_b;        /* (n_outputs) */
    const int32_t *out_tokens; /* n_outputs, or 2 for a binary head */
} fr_generator;

typedef struct {
    double temperature; /* <= 0: greedy */
    int64_t top_k;      /* <= 0: off */
    double top_p;       /* >= 1: off */
    uint64_t seed;
} fr_sampling;

/* Feeds prompt (n_samples, n_prompt) token by token, then samples n_new
 * tokens into out (n_samples, n_new). h0/c0 (num_layers, n_samples, H) may be
 * NULL. ws: fr_generate_workspace elements. Threads share the units of each
 * layer (and the head's outputs); the tokens do not depend on their number. */
int64_t fr_generate_workspace(const fr_generator *g, int64_t n_samples);
int fr_generate_f32(const fr_blas *blas, const fr_generator *g, const fr_sampling *opt,
                    int64_t n_samples, const int32_t *prompt, int64_t n_prompt,
                    const float *h0, const float *c0, int64_t n_new, int32_t *out, float *ws,
                    int n_threads);
int fr_generate_f64(const fr_blas *blas, const fr_generator *g, const fr_sampling *opt,
                    int64_t n_samples, const int32_t *prompt, int64_t n_prompt,
                    const double *h0, const double *c0, int64_t n_new, int32_t *out,
                    double *ws, int n_threads);

/* Activations over a row (y may be x): float vectorisable, exposed for the
 * accuracy tests; double through libm. The decoding kernel uses them as
 * FR_(fr_sigmoid) / FR_(fr_tanh). */
void fr_sigmoid_f32(const float *x, float *y, int64_t n);
void fr_tanh_f32(const float *x, float *y, int64_t n);
void fr_sigmoid_f64(const double *x, double *y, int64_t n);
void fr_tanh_f64(const double *x, double *y, int64_t n);

/* 1 when built with OpenMP, and the thread count OpenMP would use. */
int fr_openmp_enabled(void);
int fr_max_threads(void);
/* The thread count every kernel's OpenMP region starts from: n_threads
 * (<= 0: OpenMP's default) clamped to [1, the processors this process may
 * run on], and 1 after fr_fork_child(). */
int fr_threads(int n_threads);
/* Call in the child of a fork: GNU libgomp's thread pool does not survive
 * fork (a parallel region would wait forever for the parent's threads), so
 * every later kernel call in this process runs on the calling thread alone. */
void fr_fork_child(void);

/* Stopping a long call (Ctrl-C). fr_request_stop() is async-signal-safe: a
 * signal handler may call it. A kernel called from a thread that has called
 * fr_watch_stop(1) checks the request once per time step and returns
 * FR_STOPPED; kernels on other threads ignore it. fr_clear_stop() withdraws
 * the request. */
void fr_request_stop(void);
void fr_clear_stop(void);
void fr_watch_stop(int on);
int fr_should_stop(void);
/* The two halves of fr_should_stop, for a team without barriers between
 * steps, whose every thread polls the request: whether the calling thread
 * watches (read before the team starts) and whether a request came. */
int fr_stop_watched(void);
int fr_stop_requested(void);
/* 1 when the recurrent steps run the packed W_hh micro-kernels, 0: BLAS. */
int fr_packed_enabled(void);
/* For tests and before/after timings: 1 turns the batch-1 fast paths off
 * (AVX-512 multi-panel rows, generation's projected-embedding table) and the
 * AVX-512 float LSTM gate pass, so every call runs the portable code (their
 * results are the same bit for bit); 0 (the default) turns them back on.
 * Process-wide. */
void fr_force_portable(int on);

/* Tests only: the widest instruction set the float kernels may use, 0
 * (baseline: BLAS steps), 1 (AVX2 + FMA) or 2 (AVX-512, the default), capped
 * by what the CPU has; returns the previous cap. Process-wide. */
int fr_set_isa_cap(int level);
/* The instruction set the kernels use now (the CPU's, within the cap). */
int fr_isa_level(void);
/* 1 when float LSTM steps run the AVX-512 gate pass (CPU has it, not forced off). */
int fr_lstm_gate_pass_avx512(void);

#ifdef __cplusplus
}
#endif
#endif
