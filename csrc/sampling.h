/* Internal to the C kernels (not part of fastrnn.h's API): the token
 * sampling of fr_generate (rnn.c), shared by the reduced-precision
 * generation loop (quant.c), and the order ragged batches run in. */
#ifndef FASTRNN_SAMPLING_H
#define FASTRNN_SAMPLING_H

#include "fastrnn.h"

/* xoshiro256** seeded through splitmix64: small, fast, reproducible. */
typedef struct { uint64_t s[4]; } fr_rng;
typedef struct { double p; int64_t index; } fr_prob;

/* Stream `stream` (a sample's index) of seed. */
void fr_rng_seed(fr_rng *r, uint64_t seed, uint64_t stream);

/* One sample's output index drawn from the head's outputs z (n_out of them,
 * before the bias hb): temperature, top-k / top-p as opt says; a head with one
 * output is binary, its logits (0, z + b). probs: max(n_out, 2) pairs and
 * logits: as many doubles of scratch. */
int64_t fr_draw_f32(const float *z, const float *hb, int64_t n_out, const fr_sampling *opt,
                    fr_rng *rng, fr_prob *probs, double *logits);
int64_t fr_draw_f64(const double *z, const double *hb, int64_t n_out, const fr_sampling *opt,
                    fr_rng *rng, fr_prob *probs, double *logits);

/* order (B): the samples by length (clamped to [0, T]), longest first, ties in
 * batch order, so that the samples active at any step are a prefix; count:
 * T + 1 scratch. rnn.c's plan and quant.c's reduced layer both run in it. */
void fr_order_by_length(const fr_shape *s, int64_t *order, int64_t *count);

#endif
