/* Layer-normalized LSTM / GRU cells (Ba, Kiros & Hinton 2016) with optional
 * recurrent dropout (one mask on h per sequence, Gal & Ghahramani 2016).
 *
 * Separate from fr_forward/fr_backward: a simpler design (a BLAS GEMM per step
 * and one fused pass per row that needs the whole gate row for the layer-norm
 * statistics), so the work is split by batch rows across OpenMP threads; a
 * row's recurrence never reads another row, so the threads need no barrier.
 *
 * LSTM: a = LN_ih(W_ih x) + LN_hh(W_hh (m*h)) + b_ih + b_hh, gates i,f,g,o as
 *       PyTorch; c' = sig(f) c + sig(i) tanh(g); h' = sig(o) tanh(LN_c(c')).
 * GRU:  ax = LN_ih(W_ih x) + b_ih, ah = LN_hh(W_hh (m*h)) + b_hh;
 *       r, z = sig(ax + ah) (their parts); n = tanh(ax_n + r ah_n);
 *       h' = (1 - z) n + z h.
 * LN(v) = (v - mean(v)) / sqrt(var(v) + FR_LN_EPS) * gain + bias over a whole
 * row (4H or 3H; H for the cell). With the ln_* pointers NULL the norms are
 * the identity (plain cells: recurrent dropout alone). m (B, H) may be NULL.
 */
#ifndef FASTRNN_LNRNN_H
#define FASTRNN_LNRNN_H

#include "fastrnn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FR_LN_EPS 1e-5

typedef struct {
    const void *W_ih, *W_hh, *b_ih, *b_hh;          /* as fr_forward */
    const void *ln_ih_w, *ln_ih_b, *ln_hh_w, *ln_hh_b; /* (G*H); all NULL: no norm */
    const void *ln_c_w, *ln_c_b;                     /* (H), LSTM with norm */
} fr_ln_weights;

typedef struct { /* accumulated (+=); the ln_* ones NULL when the weights' are */
    void *dW_ih, *dW_hh, *db_ih, *db_hh;
    void *dln_ih_w, *dln_ih_b, *dln_hh_w, *dln_hh_b, *dln_c_w, *dln_c_b;
} fr_ln_grads;

/* Elements of the forward workspace (kept for backward) and of backward's scratch. */
int64_t fr_ln_workspace(const fr_shape *s);
int64_t fr_ln_backward_workspace(const fr_shape *s);

int fr_ln_forward_f32(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                      const float *X, const float *h0, const float *c0, const float *mask,
                      float *Y, int64_t ldy, float *hN, float *cN, float *ws, int n_threads);
int fr_ln_forward_f64(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                      const double *X, const double *h0, const double *c0, const double *mask,
                      double *Y, int64_t ldy, double *hN, double *cN, double *ws, int n_threads);
int fr_ln_backward_f32(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                       const float *X, const float *mask, const float *ws, const float *dY,
                       int64_t ldy, const float *dhN, const float *dcN, float *dX,
                       int accumulate_dx, const fr_ln_grads *g, float *dh0, float *dc0,
                       float *bws, int n_threads);
int fr_ln_backward_f64(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                       const double *X, const double *mask, const double *ws, const double *dY,
                       int64_t ldy, const double *dhN, const double *dcN, double *dX,
                       int accumulate_dx, const fr_ln_grads *g, double *dh0, double *dc0,
                       double *bws, int n_threads);

#ifdef __cplusplus
}
#endif
#endif
