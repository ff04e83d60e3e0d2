/* Layer-normalized (and recurrent-dropout) LSTM / GRU: the workspace layout
 * in one place, then the kernels instantiated for float and double from
 * lnrnn_impl.h. See lnrnn.h for the equations. */
#include "lnrnn.h"
#include "dispatch.h"

#include <limits.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Regions of the forward workspace, batch-first (B, T, .), all kept for
 * backward: the normalized input and recurrent projections (raw without
 * norm), the activated gates (LSTM i,f,g,o; GRU r,z,n), the h and (LSTM) c
 * entering every step, LSTM's normalized new cell (GRU: ah_n, the recurrent
 * n pre-activation), the reciprocal standard deviations of the three norms,
 * and per row the running state and the masked h the step GEMM reads. */
enum { LN_XH, LN_HH, LN_GATES, LN_H, LN_C, LN_AUX, LN_RSTD, LN_STATE, LN_HM, LN_FORWARD_REGIONS };
/* Backward: gate gradients of the input side (pre-norm after the loop) and of
 * the recurrent side (before and after its norm), d of the normalized cell,
 * the masked h of every step (dW_hh), and per row dh, dc and dh from W_hh. */
enum { LN_DPX, LN_DPH, LN_DGH, LN_DCN, LN_HMALL, LN_DSTATE, LN_DHM, LN_BACKWARD_REGIONS };

static void ln_forward_sizes(const fr_shape *s, int64_t sizes[LN_FORWARD_REGIONS])
{
    int64_t B = s->batch, BT = B * s->steps, H = s->hidden, GH = fr_gates(s->cell) * H;
    sizes[LN_XH] = BT * GH;
    sizes[LN_HH] = BT * GH;
    sizes[LN_GATES] = BT * GH;
    sizes[LN_H] = BT * H;
    sizes[LN_C] = s->cell == FR_LSTM ? BT * H : 0;
    sizes[LN_AUX] = BT * H;
    sizes[LN_RSTD] = BT * 3;
    sizes[LN_STATE] = B * 2 * H;
    sizes[LN_HM] = B * H;
}

static void ln_backward_sizes(const fr_shape *s, int64_t sizes[LN_BACKWARD_REGIONS])
{
    int64_t B = s->batch, BT = B * s->steps, H = s->hidden, GH = fr_gates(s->cell) * H;
    sizes[LN_DPX] = BT * GH;
    sizes[LN_DPH] = BT * GH;
    sizes[LN_DGH] = BT * GH;
    sizes[LN_DCN] = BT * H;
    sizes[LN_HMALL] = BT * H;
    sizes[LN_DSTATE] = B * 2 * H;
    sizes[LN_DHM] = B * H;
}

static int ln_check(const fr_shape *s, int64_t ldy)
{
    if (!s || (s->cell != FR_LSTM && s->cell != FR_GRU)) return FR_ERR_ARG;
    return fr_check_shape(s, ldy);
}

static int64_t ln_sum(const int64_t *sizes, int n)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    return total;
}

int64_t fr_ln_workspace(const fr_shape *s)
{
    if (ln_check(s, s ? s->hidden : 0) != FR_OK) return -1;
    int64_t sizes[LN_FORWARD_REGIONS];
    ln_forward_sizes(s, sizes);
    return ln_sum(sizes, LN_FORWARD_REGIONS);
}

int64_t fr_ln_backward_workspace(const fr_shape *s)
{
    if (ln_check(s, s ? s->hidden : 0) != FR_OK) return -1;
    int64_t sizes[LN_BACKWARD_REGIONS];
    ln_backward_sizes(s, sizes);
    return ln_sum(sizes, LN_BACKWARD_REGIONS);
}

static int ln_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int ln_team(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* [lo, hi) of n items for thread tid of nt. */
static void ln_split(int64_t n, int nt, int tid, int64_t *lo, int64_t *hi)
{
    int64_t chunk = (n + nt - 1) / nt, a = chunk * tid, b = a + chunk;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

/* Threads: as asked (or OpenMP's default), never more than rows, one for small work. */
static int ln_team_size(int n_threads, int64_t B, int64_t GH, int64_t H, int64_t I)
{
#ifdef _OPENMP
    int n = n_threads > 0 ? n_threads : omp_get_max_threads();
#else
    int n = 1; (void)n_threads;
#endif
    if (B * GH * (H + I) < (1 << 18)) return 1;
    return n > B ? (int)B : n;
}

/* Sigmoid and tanh: the float ones are fastrnn's vectorised, accurate ones
 * (fr_sigmoid_f32 / fr_tanh_f32 over a row); double uses libm. */
static void ln_sigmoid_f32(const float *x, float *y, int64_t n) { fr_sigmoid_f32(x, y, n); }
static void ln_tanh_f32(const float *x, float *y, int64_t n) { fr_tanh_f32(x, y, n); }
static void ln_sigmoid_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = 1.0 / (1.0 + exp(-x[i]));
}
static void ln_tanh_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = tanh(x[i]);
}

#define real float
#define LN_(name) name##_f32
#define LN_GEMM sgemm
#include "lnrnn_impl.h"
#undef real
#undef LN_
#undef LN_GEMM

#define real double
#define LN_(name) name##_f64
#define LN_GEMM dgemm
#include "lnrnn_impl.h"
#undef real
#undef LN_
#undef LN_GEMM
