/* Sequence-to-sequence decoding in C: greedy and beam search over an
 * attention decoder (fastrnn.Seq2Seq), batched over samples.
 *
 * Per step, for every live hypothesis of every sample: embed the last token,
 * one cell step per decoder layer (PyTorch's LSTM/GRU equations and gate
 * order), attention over the sample's encoder memory (masked past its source
 * length), the combine layer tanh([context; h] W_c^T + b_c), the head and a
 * log-softmax. Then per sample the beam_width best expansions by summed
 * log-probability are kept; expansions ending in EOS finish with the score
 * log-probability / token count (EOS counted; a hypothesis cut at max_len
 * counts max_len). A sample stops once no live hypothesis can beat its best
 * finished one (a live log-probability L can at best end at L / max_len).
 * beam_width 1 is greedy decoding. Samples are split among the threads in
 * contiguous blocks, each decoded on its own: results do not depend on the
 * thread count.
 */
#ifndef FASTRNN_DECODE_H
#define FASTRNN_DECODE_H

#include "fastrnn.h"

#ifdef __cplusplus
extern "C" {
#endif

enum fr_attention { FR_ATTN_NONE = 0, FR_ATTN_LUONG = 1, FR_ATTN_BAHDANAU = 2 };

/* The decoder's weights (pointers to `real` of the call's precision). */
typedef struct {
    int cell;                         /* FR_LSTM or FR_GRU */
    int attention;                    /* enum fr_attention */
    int64_t num_layers, hidden, embed_dim;
    int64_t n_outputs;                /* V: target tokens and EOS */
    int64_t mem_dim;                  /* encoder memory width (D*H) */
    int32_t bos, eos;                 /* bos indexes the embedding only */
    const void *embedding;            /* (V + 1, E) */
    const void *const *W_ih;          /* per layer (G*H, E or H) */
    const void *const *W_hh;          /* per layer (G*H, H) */
    const void *const *b_ih;
    const void *const *b_hh;
    const void *query_W;              /* Bahdanau W_q (H, H); else unused */
    const void *attn_v;               /* Bahdanau v (H); else unused */
    const void *combine_W;            /* (H, mem_dim + H), with attention */
    const void *combine_b;            /* (H) */
    const void *head_W;               /* (V, H) */
    const void *head_b;               /* (V) */
} fr_decoder;

/* One batch of encoded sources. */
typedef struct {
    int64_t n_samples, src_steps;
    const void *memory;               /* (n, S, mem_dim) encoder outputs */
    const void *keys;                 /* (n, S, H): Luong M W_a^T, Bahdanau M W_k^T */
    const int32_t *src_lengths;       /* (n), each in [1, S] */
    const void *h0, *c0;              /* (L, n, H); c0 for LSTM only */
} fr_encoded;

/* tokens (n, max_len) receive each sample's best output (EOS not included),
 * lengths (n) its token count, scores (n) its normalised log-probability. */
int fr_decode_f32(const fr_blas *blas, const fr_decoder *d, const fr_encoded *e,
                  int64_t beam_width, int64_t max_len, int32_t *tokens, int32_t *lengths,
                  double *scores, int n_threads);
int fr_decode_f64(const fr_blas *blas, const fr_decoder *d, const fr_encoded *e,
                  int64_t beam_width, int64_t max_len, int32_t *tokens, int32_t *lengths,
                  double *scores, int n_threads);

/* Steps with at most this many live rows (default 512) run their products on
 * weights packed once per call (fr_small_apply, from rnn.c); larger steps
 * call BLAS. 0: BLAS always (tests compare the two paths). Returns the
 * previous setting. Process-wide. */
int64_t fr_decode_set_small_rows(int64_t rows);

/* Internal to the library: W (N, K) packed into panels of size
 * fr_small_panels_size (0: unavailable), then C (M, N) (+)= A (M, K) W^T.
 * Panels run faster from an address on a cache line of FR_PANEL_ALIGN bytes
 * (a 64-byte load from anywhere else spans two lines); every size is a whole
 * number of lines. */
#define FR_PANEL_ALIGN 64
/* Bytes from address `at` to the next line (0 on one). */
static inline size_t fr_to_line(uintptr_t at)
{
    return (FR_PANEL_ALIGN - at % FR_PANEL_ALIGN) % FR_PANEL_ALIGN;
}
int64_t fr_small_panels_size_f32(int64_t N, int64_t K);
void fr_small_pack_f32(const float *W, int64_t N, int64_t K, float *P);
void fr_small_apply_f32(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *P, float *C, int accumulate);
int64_t fr_small_panels_size_f64(int64_t N, int64_t K);
void fr_small_pack_f64(const double *W, int64_t N, int64_t K, double *P);
void fr_small_apply_f64(int64_t M, int64_t N, int64_t K, const double *A, int64_t lda,
                        const double *P, double *C, int accumulate);

#ifdef __cplusplus
}
#endif

#endif
