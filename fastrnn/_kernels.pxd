# C declarations of csrc/fastrnn.h, shared by the Cython modules.
from libc.stdint cimport int32_t, int64_t, uint64_t

cdef extern from "fastrnn.h" nogil:
    ctypedef void (*fr_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *,
                                 int *, float *, int *, float *, float *, int *)
    ctypedef void (*fr_dgemm_fn)(char *, char *, int *, int *, int *, double *, double *,
                                 int *, double *, int *, double *, double *, int *)
    ctypedef struct fr_blas:
        fr_sgemm_fn sgemm
        fr_dgemm_fn dgemm

    enum:
        FR_LSTM, FR_GRU, FR_RNN_TANH, FR_RNN_RELU
        FR_OK, FR_ERR_ARG, FR_ERR_TOO_LARGE, FR_ERR_NOMEM, FR_STOPPED

    ctypedef struct fr_shape:
        int cell
        int64_t batch, steps, inputs, hidden
        int reverse
        const int32_t *lengths

    int fr_gates(int cell)
    int fr_check_shape(const fr_shape *s, int64_t ldy)
    int64_t fr_forward_workspace(const fr_shape *s, int training)
    int64_t fr_backward_workspace(const fr_shape *s)

    int fr_forward_f32(const fr_blas *blas, const fr_shape *s, const float *X,
                       const float *W_ih, const float *W_hh, const float *b_ih,
                       const float *b_hh, const float *h0, const float *c0, float *Y,
                       int64_t ldy, float *hN, float *cN, float *ws, int training,
                       int n_threads)
    int fr_forward_f64(const fr_blas *blas, const fr_shape *s, const double *X,
                       const double *W_ih, const double *W_hh, const double *b_ih,
                       const double *b_hh, const double *h0, const double *c0, double *Y,
                       int64_t ldy, double *hN, double *cN, double *ws, int training,
                       int n_threads)
    int64_t fr_pack_recurrent_size_f32(const fr_shape *s, int n_threads)
    int64_t fr_pack_recurrent_size_f64(const fr_shape *s, int n_threads)
    int fr_layer_team_of(const fr_shape *s, int n_threads, int real_size, int *by_rows,
                         int *slices)
    int fr_set_row_split(int on)
    int fr_set_fused_projection(int on)
    int fr_fused_projection_of(const fr_shape *s, int real_size)
    int fr_weight_grad_kernel_of(const fr_shape *s, int real_size)
    int fr_set_unit_slices_cap(int cap)
    int64_t fr_pack_recurrent_key_f32(const fr_shape *s, int n_threads)
    int64_t fr_pack_recurrent_key_f64(const fr_shape *s, int n_threads)
    int fr_pack_recurrent_f32(const fr_shape *s, const float *W_ih, const float *W_hh,
                              float *pack, int64_t n_pack, int n_threads)
    int fr_pack_recurrent_f64(const fr_shape *s, const double *W_ih, const double *W_hh,
                              double *pack, int64_t n_pack, int n_threads)
    int fr_forward_packed_f32(const fr_blas *blas, const fr_shape *s, const float *X,
                              const float *W_ih, const float *W_hh, const float *b_ih,
                              const float *b_hh, const float *h0, const float *c0, float *Y,
                              int64_t ldy, float *hN, float *cN, float *ws, int training,
                              int n_threads, const float *pack, int64_t n_pack)
    int fr_forward_packed_f64(const fr_blas *blas, const fr_shape *s, const double *X,
                              const double *W_ih, const double *W_hh, const double *b_ih,
                              const double *b_hh, const double *h0, const double *c0,
                              double *Y, int64_t ldy, double *hN, double *cN, double *ws,
                              int training, int n_threads, const double *pack,
                              int64_t n_pack)
    int fr_backward_f32(const fr_blas *blas, const fr_shape *s, const float *X,
                        const float *W_ih, const float *W_hh, const float *ws,
                        const float *dY, int64_t ldy, const float *dhN, const float *dcN,
                        float *dX, int accumulate_dx, float *dW_ih, float *dW_hh,
                        float *db_ih, float *db_hh, float *dh0, float *dc0,
                        float *bws, int n_threads)
    int fr_backward_f64(const fr_blas *blas, const fr_shape *s, const double *X,
                        const double *W_ih, const double *W_hh, const double *ws,
                        const double *dY, int64_t ldy, const double *dhN, const double *dcN,
                        double *dX, int accumulate_dx, double *dW_ih, double *dW_hh,
                        double *db_ih, double *db_hh, double *dh0, double *dc0,
                        double *bws, int n_threads)

    void fr_sigmoid_f32(const float *x, float *y, int64_t n)
    void fr_tanh_f32(const float *x, float *y, int64_t n)
    int fr_openmp_enabled()
    int fr_packed_enabled()
    void fr_force_portable(int on)
    int fr_set_isa_cap(int level)
    int fr_isa_level()
    int fr_lstm_gate_pass_avx512()
    int fr_max_threads()
    int fr_threads(int n_threads)
    void fr_fork_child()
    void fr_request_stop()
    void fr_clear_stop()
    void fr_watch_stop(int on)
    int fr_should_stop()

    enum:
        FR_SGD, FR_RMSPROP, FR_ADAGRAD, FR_ADAM

    ctypedef struct fr_optim:
        int solver
        double lr, l2, grad_scale
        double momentum
        int nesterov
        double rho
        double beta1, beta2, eps
        int64_t step

    int fr_optim_step_f32(const fr_optim *o, int64_t n, float *w, const float *g, float *m,
                          float *v, const float *decay_mask, int n_threads)
    int fr_optim_step_f64(const fr_optim *o, int64_t n, double *w, const double *g, double *m,
                          double *v, const double *decay_mask, int n_threads)
    double fr_sumsq_f32(const float *x, int64_t n, int n_threads)
    double fr_sumsq_f64(const double *x, int64_t n, int n_threads)

    ctypedef struct fr_generator:
        int cell
        int64_t num_layers, hidden, embed_dim, vocab, n_outputs
        const void *embedding
        const void *const *W_ih
        const void *const *W_hh
        const void *const *b_ih
        const void *const *b_hh
        const void *head_W
        const void *head_b
        const int32_t *out_tokens

    ctypedef struct fr_sampling:
        double temperature
        int64_t top_k
        double top_p
        uint64_t seed

    int64_t fr_generate_workspace(const fr_generator *g, int64_t n_samples)
    int fr_generate_f32(const fr_blas *blas, const fr_generator *g, const fr_sampling *opt,
                        int64_t n_samples, const int32_t *prompt, int64_t n_prompt,
                        const float *h0, const float *c0, int64_t n_new, int32_t *out,
                        float *ws, int n_threads)
    int fr_generate_f64(const fr_blas *blas, const fr_generator *g, const fr_sampling *opt,
                        int64_t n_samples, const int32_t *prompt, int64_t n_prompt,
                        const double *h0, const double *c0, int64_t n_new, int32_t *out,
                        double *ws, int n_threads)

cdef extern from "decode.h" nogil:
    enum:
        FR_ATTN_NONE, FR_ATTN_LUONG, FR_ATTN_BAHDANAU

    ctypedef struct fr_decoder:
        int cell
        int attention
        int64_t num_layers, hidden, embed_dim, n_outputs, mem_dim
        int32_t bos, eos
        const void *embedding
        const void *const *W_ih
        const void *const *W_hh
        const void *const *b_ih
        const void *const *b_hh
        const void *query_W
        const void *attn_v
        const void *combine_W
        const void *combine_b
        const void *head_W
        const void *head_b

    ctypedef struct fr_encoded:
        int64_t n_samples, src_steps
        const void *memory
        const void *keys
        const int32_t *src_lengths
        const void *h0
        const void *c0

    int fr_decode_f32(const fr_blas *blas, const fr_decoder *d, const fr_encoded *e,
                      int64_t beam_width, int64_t max_len, int32_t *tokens, int32_t *lengths,
                      double *scores, int n_threads)
    int fr_decode_f64(const fr_blas *blas, const fr_decoder *d, const fr_encoded *e,
                      int64_t beam_width, int64_t max_len, int32_t *tokens, int32_t *lengths,
                      double *scores, int n_threads)
    int64_t fr_decode_set_small_rows(int64_t rows)

cdef extern from "attention.h" nogil:
    ctypedef struct fr_attn_shape:
        int64_t batch, steps, src_steps, hidden, mem_dim
        const int32_t *src_lengths

    int fr_luong_forward_f32(const fr_blas *blas, const fr_attn_shape *s, const float *Hd,
                             const float *M, const float *W_a, const float *W_c,
                             const float *b_c, float *Q, float *feat, float *A, float *out,
                             int n_threads)
    int fr_luong_forward_f64(const fr_blas *blas, const fr_attn_shape *s, const double *Hd,
                             const double *M, const double *W_a, const double *W_c,
                             const double *b_c, double *Q, double *feat, double *A,
                             double *out, int n_threads)
    int fr_luong_backward_f32(const fr_blas *blas, const fr_attn_shape *s, const float *Hd,
                              const float *M, const float *W_a, const float *W_c,
                              const float *Q, const float *feat, const float *A,
                              const float *out, const float *d_out, float *dHd, float *dM,
                              float *dW_a, float *dW_c, float *db_c, float *d_pre,
                              float *d_feat, float *dQ, float *dS, int n_threads)
    int fr_luong_backward_f64(const fr_blas *blas, const fr_attn_shape *s, const double *Hd,
                              const double *M, const double *W_a, const double *W_c,
                              const double *Q, const double *feat, const double *A,
                              const double *out, const double *d_out, double *dHd,
                              double *dM, double *dW_a, double *dW_c, double *db_c,
                              double *d_pre, double *d_feat, double *dQ, double *dS,
                              int n_threads)

cdef extern from "bench.h" nogil:
    ctypedef struct fr_layer_times:
        double forward_train, backward, forward_infer

    int fr_bench_layer(const fr_blas *blas, const fr_shape *s, int n_threads, int reps,
                       fr_layer_times *out)
    int fr_bench_sgemm(const fr_blas *blas, int64_t n, int reps, double *seconds)
    int fr_bench_read(int64_t n_bytes, int reps, double *seconds)


# csrc/lnrnn.h: layer-normalized LSTM / GRU with a recurrent dropout mask.
cdef extern from "lnrnn.h" nogil:
    ctypedef struct fr_ln_weights:
        const void *W_ih
        const void *W_hh
        const void *b_ih
        const void *b_hh
        const void *ln_ih_w
        const void *ln_ih_b
        const void *ln_hh_w
        const void *ln_hh_b
        const void *ln_c_w
        const void *ln_c_b

    ctypedef struct fr_ln_grads:
        void *dW_ih
        void *dW_hh
        void *db_ih
        void *db_hh
        void *dln_ih_w
        void *dln_ih_b
        void *dln_hh_w
        void *dln_hh_b
        void *dln_c_w
        void *dln_c_b

    int64_t fr_ln_workspace(const fr_shape *s)
    int64_t fr_ln_backward_workspace(const fr_shape *s)
    int fr_ln_forward_f32(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                          const float *X, const float *h0, const float *c0, const float *mask,
                          float *Y, int64_t ldy, float *hN, float *cN, float *ws, int n_threads)
    int fr_ln_forward_f64(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                          const double *X, const double *h0, const double *c0,
                          const double *mask, double *Y, int64_t ldy, double *hN, double *cN,
                          double *ws, int n_threads)
    int fr_ln_backward_f32(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                           const float *X, const float *mask, const float *ws, const float *dY,
                           int64_t ldy, const float *dhN, const float *dcN, float *dX,
                           int accumulate_dx, const fr_ln_grads *g, float *dh0, float *dc0,
                           float *bws, int n_threads)
    int fr_ln_backward_f64(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                           const double *X, const double *mask, const double *ws,
                           const double *dY, int64_t ldy, const double *dhN, const double *dcN,
                           double *dX, int accumulate_dx, const fr_ln_grads *g, double *dh0,
                           double *dc0, double *bws, int n_threads)
