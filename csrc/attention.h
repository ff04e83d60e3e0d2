/* Luong ("general") attention of a decoder over an encoder memory, forward and
 * backward, batched over samples and every decoder step (teacher forcing gives
 * every step's decoder output from one stack call):
 *
 *   Q = Hd W_a                       (B*T, H) x (H, F)       one GEMM
 *   scores_b = Q_b M_b^T             per sample (T, S)
 *   A_b = softmax(scores_b)          masked past the sample's source length
 *   feat = [A_b M_b ; Hd]            (B*T, F + H)
 *   out = tanh(feat W_c^T + b_c)     (B*T, H)                one GEMM
 *
 * Hd (B, T, H) decoder outputs, M (B, S, F) encoder memory (F = D*H), W_a
 * (H, F), W_c (H, F + H), b_c (H). Q and feat are kept for backward. Samples
 * are split among the threads; weight gradients are single GEMMs after.
 */
#ifndef FASTRNN_ATTENTION_H
#define FASTRNN_ATTENTION_H

#include "fastrnn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t batch, steps, src_steps, hidden, mem_dim; /* B, T, S, H, F */
    const int32_t *src_lengths;                       /* (B), each in [1, S] */
} fr_attn_shape;

int fr_luong_forward_f32(const fr_blas *blas, const fr_attn_shape *s, const float *Hd,
                         const float *M, const float *W_a, const float *W_c,
                         const float *b_c, float *Q, float *feat, float *A, float *out,
                         int n_threads);
int fr_luong_forward_f64(const fr_blas *blas, const fr_attn_shape *s, const double *Hd,
                         const double *M, const double *W_a, const double *W_c,
                         const double *b_c, double *Q, double *feat, double *A, double *out,
                         int n_threads);

/* d_out (B, T, H) in; dHd (B, T, H) and dM (B, S, F) written; dW_a, dW_c, db_c
 * accumulated. d_pre (B, T, H), d_feat (B, T, F + H), dQ (B, T, F) and dS
 * (B, T, S) are scratch. Reads Q, feat, A and out of the forward. */
int fr_luong_backward_f32(const fr_blas *blas, const fr_attn_shape *s, const float *Hd,
                          const float *M, const float *W_a, const float *W_c,
                          const float *Q, const float *feat, const float *A,
                          const float *out, const float *d_out, float *dHd, float *dM,
                          float *dW_a, float *dW_c, float *db_c, float *d_pre,
                          float *d_feat, float *dQ, float *dS, int n_threads);
int fr_luong_backward_f64(const fr_blas *blas, const fr_attn_shape *s, const double *Hd,
                          const double *M, const double *W_a, const double *W_c,
                          const double *Q, const double *feat, const double *A,
                          const double *out, const double *d_out, double *dHd, double *dM,
                          double *dW_a, double *dW_c, double *db_c, double *d_pre,
                          double *d_feat, double *dQ, double *dS, int n_threads);

#ifdef __cplusplus
}
#endif

#endif
