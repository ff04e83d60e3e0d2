/* fastrnn reduced-precision inference: int8 and bfloat16 weights.
 *
 * Weights are converted once (by the caller) and packed in panels of
 * FR_Q_PANEL output rows; activations stay float32 and are converted per
 * call, per row of the GEMM's input; accumulation is int32 (int8) or float32
 * (bf16), and every GEMM's result is float32 before the usual gate math.
 *
 * int8: symmetric weights, one scale per output row (w = scale[n] * q[n, k],
 * q in [-127, 127]); activations asymmetric u8 per input row (x = sa * (u -
 * zp), u in [0, 255]) since VNNI's vpdpbusd multiplies u8 by s8. Then
 *   sum_k x[k] w[n, k] = sa * scale[n] * (sum_k u[k] q[n, k] - zp * row_sum[n]).
 * int16 (an int8 or bf16 network's recurrent weights, fastrnn._quantize.recurrent_kind):
 * symmetric weights per output row (w = scale[n] * q[n, k]) and symmetric
 * activations per input row (x = sa * a, |a| <= FR_Q16_ACT_MAX, 12 bits), so
 *   sum_k x[k] w[n, k] = sa * scale[n] * sum_k a[k] q[n, k],
 * an int32 sum (VNNI's vpdpwssd) that is exact because the caller bounds |q|:
 * cols (padded to 2) * FR_Q16_ACT_MAX * max|q| < 2^31 (13 bits up to 256 cols).
 * bf16: weights and activations rounded to bfloat16 (nearest even); pairs of
 * products added to a float32 accumulator as vdpbf16ps does.
 *
 * Panel layout (rows padded to FR_Q_PANEL, K padded to the group size with
 * zeros): for panel p, group g of FR_Q_GROUP consecutive k, the FR_Q_PANEL
 * rows' groups follow each other: packed[((p * groups + g) * FR_Q_PANEL + r)
 * * group + q] = W[p * FR_Q_PANEL + r, g * group + q]. group is 4 (int8) or
 * 2 (bf16, int16): one 32-bit lane of a 512-bit register per row.
 *
 * Kernels: AVX512-VNNI / AVX512-BF16 where the CPU has them (chosen at run
 * time), a portable C path otherwise; both give the same int8 results bit
 * for bit, and bf16 results equal up to float rounding of denormals.
 */
#ifndef FASTRNN_QUANT_H
#define FASTRNN_QUANT_H

#include "fastrnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FR_Q_F32: a weight kept float32 in a reduced network (fastrnn._quantize's
 * REDUCED_MIN_DIM: a GEMM with a tiny K or N gains nothing from reduction),
 * packed in the same panels with a group of 1; portable C only. */
enum fr_qkind { FR_Q_BF16 = 1, FR_Q_INT8 = 2, FR_Q_F32 = 3, FR_Q_INT16 = 4 };
#define FR_Q_PANEL 16
#define FR_Q16_ACT_MAX 2047

/* One (rows, cols) weight in reduced precision, packed as above. */
typedef struct {
    int kind;
    int64_t rows, cols;
    const void *packed;     /* int8_t (int8), int16_t (int16), uint16_t bf16 bits or float */
    const float *scale;     /* int8, int16: rows */
    const int32_t *row_sum; /* int8: rows, sum over k of q[n, k] */
} fr_qweight;

/* k per 32-bit lane: 4 (int8), 2 (bf16, int16) or 1 (f32); 0 for an unknown kind. */
int fr_qgroup(int kind);
/* Bytes of scratch fr_qgemm needs for M rows of input. */
int64_t fr_qgemm_scratch(const fr_qweight *w, int64_t M);
/* C[M, rows] (+)= A[M, cols] W^T; A with leading dimension lda, C ldc. */
int fr_qgemm(const fr_qweight *w, int64_t M, const float *A, int64_t lda, float *C, int64_t ldc,
             int accumulate, void *scratch, int n_threads);

/* One recurrent layer and direction with reduced weights (inference only):
 * W_ih (G*H, I) and W_hh (G*H, H) reduced, biases float32. Shapes, lengths,
 * h0/c0, Y/ldy, hN/cN as fr_forward_f32. ws: fr_qforward_workspace bytes. */
typedef struct {
    fr_qweight W_ih, W_hh;
    const float *b_ih, *b_hh;
} fr_qlayer;

int64_t fr_qforward_workspace(const fr_qlayer *L, const fr_shape *s);
/* Tests: the threads fr_qforward's steps run on for this call (by_rows: 1 when
 * each thread owns blocks of samples, 0 when slices of units); -1: bad call. */
int fr_qstep_team_of(const fr_qlayer *L, const fr_shape *s, int n_threads, int *by_rows);
int fr_qforward(const fr_qlayer *L, const fr_shape *s, const float *X, const float *h0,
                const float *c0, float *Y, int64_t ldy, float *hN, float *cN, void *ws,
                int n_threads);

/* Token generation with reduced weights: fr_generate_f32's loop (fastrnn.h:
 * prompt, sampling, seeded streams, out) with every layer's W_ih and W_hh and
 * the head reduced; the embedding, biases, states, gate math and sampling
 * float32 (logits double, as fr_generate's). Layer 0's input projection of a
 * token is the same per-row product whether a step computes it or a table of
 * the vocabulary holds it, so the tokens do not depend on the table; nor on
 * n_threads (the GEMMs share panels, never a sum). logits: NULL, or (n,
 * n_new, n_outputs) float32 receiving the head's outputs (bias added) each
 * token was drawn from. Allocates its buffers once per call. */
typedef struct {
    int cell;
    int64_t num_layers, hidden, embed_dim, vocab, n_outputs;
    const float *embedding;          /* (vocab, embed_dim) */
    const fr_qweight *W_ih, *W_hh;   /* num_layers each: (G*H, in), (G*H, H) */
    const float *const *b_ih, *const *b_hh;
    fr_qweight head_W;               /* (n_outputs, H) */
    const float *head_b;             /* (n_outputs) */
    const int32_t *out_tokens;       /* n_outputs, or 2 for a binary head */
} fr_qgenerator;

int fr_qgenerate(const fr_qgenerator *g, const fr_sampling *opt, int64_t n,
                 const int32_t *prompt, int64_t n_prompt, const float *h0, const float *c0,
                 int64_t n_new, int32_t *out, float *logits, int n_threads);

/* Run-time dispatch: 1 when this CPU runs kind's fast (AVX-512) kernel.
 * fr_qforce_portable(1) makes every call take the portable path (tests
 * compare the two; FASTRNN_QUANT_PORTABLE=1 in the environment does the same). */
int fr_qfast_available(int kind);
void fr_qforce_portable(int on);

#ifdef __cplusplus
}
#endif
#endif
