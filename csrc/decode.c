/* Sequence-to-sequence decoding (decode.h): argument checks shared by both
 * precisions, then decode_impl.h instantiated for float and double (the
 * activations are fastrnn.h's row functions, vectorised for float). */
#include "decode.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int fr_dec_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Measured (bench/NOTES.md, LSTM H=256 E=64 V=60 with Luong attention, one
 * Zen 4 core): the packed products beat OpenBLAS at every row count up to
 * 320, the largest measured (2.2x the step at 5 rows, 1.1x at 320). */
static volatile int64_t fr_decode_small_rows = 512;

int64_t fr_decode_set_small_rows(int64_t rows)
{
    int64_t previous = fr_decode_small_rows;
    fr_decode_small_rows = rows;
    return previous;
}

static int fr_dec_fits(int64_t a, int64_t b) /* a * b <= INT_MAX, for a, b >= 1 */
{
    return a <= INT_MAX / b;
}

static int fr_decode_check(const fr_blas *blas, const fr_decoder *d, const fr_encoded *e,
                           int64_t W, int64_t max_len, const int32_t *tokens,
                           const int32_t *lengths, const double *scores)
{
    if (!blas || !d || !e || !tokens || !lengths || !scores) return FR_ERR_ARG;
    if (d->cell != FR_LSTM && d->cell != FR_GRU) return FR_ERR_ARG;
    if (d->num_layers < 1 || d->hidden < 1 || d->embed_dim < 1 || d->n_outputs < 1
        || W < 1 || max_len < 1 || e->n_samples < 1 || e->src_steps < 1)
        return FR_ERR_ARG;
    if (d->eos < 0 || d->eos >= d->n_outputs || d->bos < 0 || d->bos > d->n_outputs)
        return FR_ERR_ARG;
    if (!d->embedding || !d->W_ih || !d->W_hh || !d->b_ih || !d->b_hh || !d->head_W
        || !d->head_b || !e->h0 || (d->cell == FR_LSTM && !e->c0))
        return FR_ERR_ARG;
    for (int64_t l = 0; l < d->num_layers; l++)
        if (!d->W_ih[l] || !d->W_hh[l] || !d->b_ih[l] || !d->b_hh[l]) return FR_ERR_ARG;
    if (d->attention != FR_ATTN_NONE) {
        if (d->attention != FR_ATTN_LUONG && d->attention != FR_ATTN_BAHDANAU) return FR_ERR_ARG;
        if (!e->memory || !e->keys || !e->src_lengths || !d->combine_W || !d->combine_b
            || d->mem_dim < 1)
            return FR_ERR_ARG;
        if (d->attention == FR_ATTN_BAHDANAU && (!d->query_W || !d->attn_v)) return FR_ERR_ARG;
        for (int64_t s = 0; s < e->n_samples; s++)
            if (e->src_lengths[s] < 1 || e->src_lengths[s] > e->src_steps) return FR_ERR_ARG;
    }
    /* gemm's int arguments: rows R = n * W (at most), columns G*H, V, mem_dim + H */
    int64_t R = e->n_samples * W;
    if (!fr_dec_fits(e->n_samples, W) || !fr_dec_fits(R, 4 * d->hidden)
        || !fr_dec_fits(R, d->n_outputs) || !fr_dec_fits(R, d->mem_dim + d->hidden)
        || !fr_dec_fits(R, max_len))
        return FR_ERR_TOO_LARGE;
    return FR_OK;
}

#define real float
#define FR_(name) name##_f32
#define FR_GEMM sgemm
#include "decode_impl.h"
#undef real
#undef FR_
#undef FR_GEMM

#define real double
#define FR_(name) name##_f64
#define FR_GEMM dgemm
#include "decode_impl.h"
#undef real
#undef FR_
#undef FR_GEMM
