/* Luong attention forward and backward (attention.h): shape checks shared by
 * both precisions, then attention_impl.h instantiated for float and double. */
#include "attention.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int fr_attn_fits(int64_t a, int64_t b) /* a * b <= INT_MAX, for a, b >= 1 */
{
    return a <= INT_MAX / b;
}

static int fr_attn_check(const fr_blas *blas, const fr_attn_shape *s)
{
    if (!blas || !s || !s->src_lengths) return FR_ERR_ARG;
    if (s->batch < 1 || s->steps < 1 || s->src_steps < 1 || s->hidden < 1 || s->mem_dim < 1)
        return FR_ERR_ARG;
    for (int64_t b = 0; b < s->batch; b++)
        if (s->src_lengths[b] < 1 || s->src_lengths[b] > s->src_steps) return FR_ERR_ARG;
    /* gemm's int arguments: B*T rows, leading dimensions up to F + H */
    int64_t BT = s->batch * s->steps;
    if (!fr_attn_fits(s->batch, s->steps) || !fr_attn_fits(BT, s->mem_dim + s->hidden)
        || !fr_attn_fits(BT, s->src_steps) || !fr_attn_fits(s->src_steps, s->mem_dim))
        return FR_ERR_TOO_LARGE;
    return FR_OK;
}

/* Below this many multiply-adds a call runs on one thread: forking a team
 * costs more than the split saves (decoding calls it for one step). */
#define FR_ATTN_PAR_MIN_MACS (1 << 21)

/* Threads for a call: as asked (or OpenMP's default), at most one per sample,
 * one for small work. */
static int fr_attn_threads(int n_threads, const fr_attn_shape *s)
{
    int64_t F = s->mem_dim, H = s->hidden;
    int64_t macs = s->batch * s->steps * (H * F + 2 * s->src_steps * F + (F + H) * H);
    if (macs < FR_ATTN_PAR_MIN_MACS) return 1;
#ifdef _OPENMP
    int nt = n_threads > 0 ? n_threads : omp_get_max_threads();
#else
    int nt = 1;
    (void)n_threads;
#endif
    return nt > s->batch ? (int)s->batch : nt;
}

#define real float
#define FR_(name) name##_f32
#define FR_GEMM sgemm
#include "attention_impl.h"
#undef real
#undef FR_
#undef FR_GEMM

#define real double
#define FR_(name) name##_f64
#define FR_GEMM dgemm
#include "attention_impl.h"
#undef real
#undef FR_
#undef FR_GEMM
