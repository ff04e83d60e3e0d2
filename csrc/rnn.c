/* Shared helpers, then the kernels instantiated for float and double from
 * rnn_impl.h. */
#include "fastrnn.h"
#include "sampling.h"
#include "decode.h" /* fr_small_* below */
#include "dispatch.h"

#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* A layer call runs on one thread unless a step has at least this many
 * multiply-adds, or its recurrent weights are too big for one core's L2 (then
 * every thread keeps its slice of W_hh in its own L2: the batch-1 latency case
 * runs 2.2x faster on 2 threads). Below that a barrier per step costs more
 * than the split saves (small LSTM: 2 threads slower than 1). */
#define FR_PAR_MIN_MACS (1 << 22)
#define FR_PAR_MIN_WEIGHT_BYTES (512 << 10)
/* Thread slices of the hidden units start at multiples of this: the packed
 * recurrent GEMM's panel width for float (32), a multiple of double's (16). */
#define FR_UNIT_ALIGN 32

/* The per-step recurrent GEMMs run on W_hh packed once per layer call into
 * column panels, with register-blocked kernels in GCC vector extensions:
 * 64-byte vectors (one zmm) on AVX-512 CPUs, 32-byte ones (ymm) in the AVX2
 * kernels (rnn_impl.h's *_avx2). BLAS would repack W_hh at every step.
 * Without AVX2 and FMA or GCC's extensions the steps call BLAS instead. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FR_HAVE_PACKED 1
#include <immintrin.h>
typedef float fr_vec_f32 __attribute__((vector_size(64), aligned(4)));
typedef double fr_vec_f64 __attribute__((vector_size(64), aligned(8)));
/* The widest instruction set the kernels may use (fr_set_isa_cap): tests run
 * the AVX2 kernels on AVX-512 CPUs through it. */
static volatile int fr_isa_cap = FR_ISA_AVX512;
static int fr_packed_supported(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached && fr_isa_cap >= FR_ISA_AVX2;
}
static int fr_avx512_supported(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f");
    }
    return cached && fr_isa_cap >= FR_ISA_AVX512;
}
#else
#define FR_HAVE_PACKED 0
static volatile int fr_isa_cap = FR_ISA_AVX512;
static int fr_packed_supported(void) { return 0; }
static int fr_avx512_supported(void) { return 0; }
#endif
#define FR_MR 4 /* rows of the micro-kernel */

int fr_isa_level(void)
{
#if FR_ISA_DISPATCH
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f")                                 ? FR_ISA_AVX512
               : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? FR_ISA_AVX2
                                                                                   : FR_ISA_BASE;
    }
    return cached < fr_isa_cap ? cached : fr_isa_cap;
#else
    return FR_ISA_BASE;
#endif
}

int fr_set_isa_cap(int level)
{
    const int was = fr_isa_cap;
    fr_isa_cap = level < FR_ISA_BASE ? FR_ISA_BASE : level > FR_ISA_AVX512 ? FR_ISA_AVX512 : level;
    return was;
}

/* How packed_apply (rnn_impl.h) reads its panels: pack_forward's layout (row
 * blocks through panel_kernel), or the row layout, panel groups first to
 * last or last to first. */
enum { FR_PANELS_BLOCKED = 0, FR_PANELS_ROWS = 1, FR_PANELS_ROWS_BACKWARDS = 2 };

/* Set by fr_force_portable: the batch-1 paths below and the AVX-512 LSTM gate
 * pass are off (tests compare them with the portable code, bit for bit). */
static volatile int fr_portable_forced;

/* Whether a call whose steps have at most max_rows rows packs its weights in
 * the row layout and runs them through rows_apply (rnn_impl.h): the batch-1
 * path. Up to 3 rows (measured on AVX-512: 1.1-1.4x the block kernels'
 * leftover loop there, 0.3-0.9x from 4 rows on, where the 4- and 8-row
 * blocks start). On a Zen 3 core (AVX2) batch-1 LSTM I=H=256 T=150 went from
 * 7.5-8.4 ms (blocked, projection fused) to 4.5-5.5 ms. */
#ifndef FR_ROW_LAYOUT_MAX_ROWS
#define FR_ROW_LAYOUT_MAX_ROWS (FR_MR - 1)
#endif
static int fr_row_layout(int64_t max_rows)
{
    return FR_HAVE_PACKED && max_rows <= FR_ROW_LAYOUT_MAX_ROWS && fr_packed_supported() &&
           !fr_portable_forced;
}

void fr_force_portable(int on)
{
    fr_portable_forced = on;
}

int fr_lstm_gate_pass_avx512(void)
{
    return FR_HAVE_PACKED && fr_avx512_supported() && !fr_portable_forced;
}

/* Whether generation projects every token's embedding through layer 0's W_ih
 * once (a (vocab, G*H) table of `bytes`) instead of once per step: when there
 * are at least as many steps as tokens in the vocabulary (the table costs a
 * GEMM of vocab rows, it saves a matrix-vector product per step) and the
 * table stays small. */
#define FR_TABLE_MAX_BYTES (32 << 20)
static int fr_embed_table(int64_t vocab, int64_t tokens, int64_t bytes)
{
    return !fr_portable_forced && vocab <= tokens && bytes <= FR_TABLE_MAX_BYTES;
}

int fr_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fr_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int fr_packed_enabled(void)
{
    return fr_packed_supported();
}

static int fr_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int fr_team(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Set in a fork child (fr_fork_child): no OpenMP team may start there. */
static volatile int fr_serial_only;

void fr_fork_child(void)
{
    fr_serial_only = 1;
}

int fr_threads(int n_threads)
{
#ifdef _OPENMP
    if (fr_serial_only) return 1;
    int n = n_threads > 0 ? n_threads : omp_get_max_threads();
    int cap = omp_get_num_procs(); /* the CPUs of this process's affinity mask */
    n = n < cap ? n : cap;
    return n > 1 ? n : 1;
#else
    (void)n_threads;
    return 1;
#endif
}

/* Threads for one layer call: fr_threads(n_threads), one when the work is
 * too small to share (see FR_PAR_MIN_MACS), never more than there are unit
 * slices. */
static int fr_team_size(int n_threads, int64_t B, int64_t H, int64_t G, int64_t I,
                        size_t real_size)
{
    int n = fr_threads(n_threads);
    int64_t macs = B * G * H * (H + I);
    if (macs < FR_PAR_MIN_MACS && (size_t)(G * H * H) * real_size < FR_PAR_MIN_WEIGHT_BYTES)
        return 1;
    int64_t slices = (H + FR_UNIT_ALIGN - 1) / FR_UNIT_ALIGN;
    return n > slices ? (int)slices : n;
}

/* Recurrent weights no bigger than FR_PAR_MIN_WEIGHT_BYTES fit in one
 * core's L2, so a team splits such a call by batch rows instead: each thread
 * runs every step for its blocks of FR_ROW_BLOCK samples (dealt round robin,
 * so a ragged batch sorted by length shares its long samples) on all units,
 * with no barrier per step (rows do not meet inside a layer). The unit split
 * waits at a barrier per ~10-20 us step at these sizes, which is why it was
 * not used for them (see FR_PAR_MIN_MACS). A call of fewer than
 * FR_ROW_SPLIT_MIN_MACS multiply-adds in all is not worth waking a team. */
#define FR_ROW_BLOCK 8
#define FR_ROW_SPLIT_MIN_MACS (1 << 20)

/* Larger weights split by rows too when every thread gets this many rows: each
 * thread then streams its panels from L3 once a step for 32 rows or more
 * (~6 GB/s a thread at the medium size), cheaper than the unit split's barrier
 * per step. 2 Zen 4 threads, mins of alternating runs: LSTM B=64 T=100 I=128
 * H=256 inference 30.4 -> 25.0 ms, training 101.7 -> 97.2; B=64 T=25 I=H=512
 * inference 37.5 -> 33.8, training even (bench/NOTES.md, ninth session). With
 * fewer rows a thread (4+ threads at B=64) the unit split keeps each slice in
 * its core's L2 (Emerald Rapids, 16 cores). */
#define FR_ROW_SPLIT_STREAM_ROWS 32

/* How one layer call shares its work: nth threads, by rows (W_hh packed
 * whole) or by unit slices (W_hh packed in `slices` slices). A team of more
 * threads than slices gives each slice nth / slices threads, each with its
 * own share of the batch rows (fr_team_rows): H=256 has 8 slices of 32 units,
 * and a 16-thread team used to stop at 8 (LSTM B=64 T=100 I=128 inference
 * on 16 Emerald Rapids cores: 13.5 ms on 8 threads, 15.5 ms on 16). */
typedef struct {
    int nth;
    int by_rows;
    int slices;
} fr_layer_team;

/* Cleared by fr_set_row_split(0) (timings and tests): no team splits rows. */
static volatile int fr_row_split_on = 1;

int fr_set_row_split(int on)
{
    const int was = fr_row_split_on;
    fr_row_split_on = on;
    return was;
}

int fr_row_split_enabled(void) { return fr_row_split_on; }

static volatile int fr_unit_slices_cap;

int fr_set_unit_slices_cap(int cap)
{
    const int was = fr_unit_slices_cap;
    fr_unit_slices_cap = cap > 0 ? cap : 0;
    return was;
}

static fr_layer_team fr_team_for(int n_threads, const fr_shape *s, size_t real_size)
{
    const int64_t B = s->batch, H = s->hidden, G = fr_gates(s->cell), I = s->inputs;
    const int64_t blocks = B / FR_ROW_BLOCK, macs = B * s->steps * G * H * (H + I);
    const int n = fr_threads(n_threads);
    const int wanted = fr_team_size(n_threads, B, H, G, I, real_size);
    const int cap = fr_unit_slices_cap, slices = cap && wanted > cap ? cap : wanted;
    fr_layer_team team = {slices, 0, slices};
    const int fits_l2 = (size_t)(G * H * H) * real_size <= FR_PAR_MIN_WEIGHT_BYTES;
    if (fr_row_split_on && n > 1 && blocks > 1 && macs >= FR_ROW_SPLIT_MIN_MACS &&
        (fits_l2 || B >= (int64_t)n * FR_ROW_SPLIT_STREAM_ROWS)) {
        team.nth = n < blocks ? n : (int)blocks;
        team.by_rows = 1;
        team.slices = 1;
    } else if (wanted > 1 && n >= 2 * slices) { /* row groups: a block of rows each at least */
        const int64_t most = (B + FR_ROW_BLOCK - 1) / FR_ROW_BLOCK;
        team.nth = slices * (int)(n / slices < most ? n / slices : most);
    }
    return team;
}

/* Unit slices W_hh is packed in for this team. */
static int fr_team_slices(fr_layer_team team)
{
    return team.slices;
}

int fr_layer_team_of(const fr_shape *s, int n_threads, int real_size, int *by_rows,
                     int *slices)
{
    if (fr_check_shape(s, s ? s->hidden : 0) != FR_OK || real_size <= 0) return -1;
    const fr_layer_team team = fr_team_for(n_threads, s, (size_t)real_size);
    if (by_rows) *by_rows = team.by_rows;
    if (slices) *slices = team.slices;
    return team.nth;
}

/* Stop requests: a flag a signal handler may set, obeyed only by kernels
 * called from a thread that watches it (the binding watches on Python's main
 * thread, where Ctrl-C raises KeyboardInterrupt). */
#if defined(_MSC_VER)
#define FR_THREAD_LOCAL __declspec(thread)
#else
#define FR_THREAD_LOCAL __thread
#endif
static volatile sig_atomic_t fr_stop_flag;
static FR_THREAD_LOCAL int fr_watching;

void fr_request_stop(void) { fr_stop_flag = 1; }
void fr_clear_stop(void) { fr_stop_flag = 0; }
void fr_watch_stop(int on) { fr_watching = on; }
int fr_should_stop(void) { return fr_watching && fr_stop_flag; }
int fr_stop_watched(void) { return fr_watching; }
int fr_stop_requested(void) { return fr_stop_flag; }

/* Whether a team leaves its step loop before step `step`. Every thread must
 * agree (one leaving alone would strand the others at the next barrier), so
 * thread 0, the kernel's caller, samples the request into slot (step+1) % 2
 * and all read slot step % 2, written a barrier ago: with one barrier or more
 * between consecutive calls, no slot is written while another thread reads it. */
static int fr_team_stop(volatile int *slots, int64_t step)
{
    if (fr_thread_id() == 0) slots[(step + 1) & 1] = fr_should_stop();
    return slots[step & 1];
}

/* fr_team_stop for a team without barriers between steps (by rows): every
 * thread reads the request itself, given whether the caller watches
 * (fr_watching is the caller's own). Thread 0 alone could have finished its
 * rows and be waiting for the others when the request comes; no thread waits
 * on another inside the loop, so leaving at different steps is safe. */
static int fr_rows_stop(int watched)
{
    return watched && fr_stop_flag;
}

/* [lo, hi) of n items for thread tid of nt, slice starts aligned to align. */
static void fr_split(int64_t n, int nt, int tid, int64_t align, int64_t *lo, int64_t *hi)
{
    int64_t chunk = (n + nt - 1) / nt;
    chunk = (chunk + align - 1) / align * align;
    int64_t a = chunk * tid, b = a + chunk;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

/* [lo, hi) of n rows for thread tid of nt, in shares of at least `least`
 * rows: a shorter tail joins the share before it. */
static void fr_split_at_least(int64_t n, int nt, int tid, int64_t least, int64_t *lo,
                              int64_t *hi)
{
    int64_t chunk = (n + nt - 1) / nt;
    chunk = chunk > least ? chunk : least;
    int64_t a = chunk * tid, b = a + chunk;
    if (a > 0 && n - a < least) a = n;
    if (n - b < least) b = n;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
    if (*hi < *lo) *hi = *lo;
}

/* [j0, j1): the units of the W_hh slice thread tid packs (empty for a thread
 * past the team's slices). */
static void fr_team_slice(fr_layer_team team, int tid, int64_t H, int64_t *j0, int64_t *j1)
{
    const int slices = fr_team_slices(team);
    fr_split(H, slices, tid < slices ? tid : slices, FR_UNIT_ALIGN, j0, j1);
}

/* Split by units: the units thread tid computes (its slice; threads
 * tid, tid + slices, ... share one). */
static void fr_team_units(fr_layer_team team, int tid, int64_t H, int64_t *j0, int64_t *j1)
{
    fr_split(H, team.slices, tid % team.slices, FR_UNIT_ALIGN, j0, j1);
}

/* ... and its rows: with row groups, group tid / slices takes the blocks of
 * FR_ROW_BLOCK rows numbered group, group + groups, ... (fr_team_blocks),
 * so a row stays with the same threads at every step (backward carries dh
 * and dc of its units from step to step) and a ragged batch's long samples
 * are shared; a single group takes all rows in one block. */
typedef struct {
    int64_t first, size, stride;
} fr_team_blocks;

static fr_team_blocks fr_team_rows(fr_layer_team team, int tid)
{
    const int groups = team.nth / team.slices;
    fr_team_blocks r = {0, INT64_MAX / 2, INT64_MAX / 2};
    if (groups > 1) {
        r.size = FR_ROW_BLOCK;
        r.first = (int64_t)(tid / team.slices) * FR_ROW_BLOCK;
        r.stride = (int64_t)groups * FR_ROW_BLOCK;
    }
    return r;
}

/* The end of the block of `size` rows starting at i0 among `active` rows. */
static int64_t fr_block_end(int64_t i0, int64_t size, int64_t active)
{
    return active - i0 < size ? active : i0 + size;
}

int fr_gates(int cell)
{
    switch (cell) {
    case FR_LSTM: return 4;
    case FR_GRU: return 3;
    case FR_RNN_TANH:
    case FR_RNN_RELU: return 1;
    default: return 0;
    }
}

static int fr_fits(int64_t a, int64_t b) /* a * b <= INT_MAX, for a, b >= 1 */
{
    return a <= INT_MAX / b;
}

static int fr_is_ragged(const fr_shape *s);

int fr_check_shape(const fr_shape *s, int64_t ldy)
{
    if (!s) return FR_ERR_ARG;
    int64_t G = fr_gates(s->cell);
    if (G == 0 || s->batch < 1 || s->steps < 1 || s->inputs < 1 || s->hidden < 1 || ldy < s->hidden)
        return FR_ERR_ARG;
    /* The int arguments handed to gemm: B*T rows (projection, weight
     * gradients), G*H*T and H*T leading dimensions of the per-step GEMMs;
     * ragged, G*H*B: the leading dimension of the time-major gate grid. */
    if (!fr_fits(s->batch, s->steps) || !fr_fits(s->hidden, G) || !fr_fits(G * s->hidden, s->steps) ||
        s->inputs > INT_MAX)
        return FR_ERR_TOO_LARGE;
    if (fr_is_ragged(s) && !fr_fits(G * s->hidden, s->batch)) return FR_ERR_TOO_LARGE;
    return FR_OK;
}

/* The order a layer call walks its (sample, step) rows in, shared by forward
 * and backward. Dense (no lengths, or every length T): every sample at every
 * step, the workspace batch-first like X (row b*T + t). Ragged: the samples
 * sorted by length (stable, descending) so that those with a valid step at
 * time t are a prefix; step s runs time s forward, longest-1-s reverse (a
 * sample joins the reverse pass at its own last valid step, from h0). The
 * states entering each step, aux and the gate gradients hold the valid rows
 * only, step-major (step s's rows from state_row[s], one per active sample).
 * The gates too when the projection is one GEMM over X's gathered valid rows
 * (fr_gathered_projection); otherwise they live on a time-major grid (row
 * t*B + i for sorted sample i) so that each sample's projection is one GEMM
 * shaped as if it ran alone (batch invariance, see fr_gathered_projection). */
typedef struct {
    int64_t n_steps;      /* steps with an active sample: T dense, the longest length ragged */
    int64_t n_rows;       /* valid (sample, step) rows */
    int64_t sample_rows;  /* state rows between sorted samples i and i+1 of a step: T / 1 */
    int64_t gate_sample;  /* gate rows between sorted samples i and i+1 of a step: T / 1 */
    int gathered;         /* ragged: one projection GEMM over X's valid rows, gates step-major */
    int fused;            /* the projection runs inside each step (fr_fused_projection);
                             inference then reuses the first B gate rows at every step */
    int64_t *active;      /* n_steps: how many samples (a prefix) step s runs */
    int64_t *state_row;   /* n_steps: the state row of sorted sample 0 at step s */
    int64_t *gate_row;    /* n_steps: its gate row (state_row, or t*B on the grid) */
    int64_t *order;       /* B: sorted position -> sample; NULL when dense (identity) */
    int64_t *x_row;       /* n_rows: the X row (b*T + t) of each state row; NULL when dense */
    void *mem;
} fr_plan;

static int64_t fr_clamped_length(const fr_shape *s, int64_t b)
{
    if (!s->lengths) return s->steps;
    int64_t n = s->lengths[b];
    return n < 0 ? 0 : n > s->steps ? s->steps : n;
}

static int64_t fr_longest(const fr_shape *s)
{
    int64_t longest = 0;
    for (int64_t b = 0; b < s->batch; b++) {
        const int64_t n = fr_clamped_length(s, b);
        longest = n > longest ? n : longest;
    }
    return longest;
}

/* Ragged: some sample is shorter than T (the kernels then skip the padding). */
static int fr_is_ragged(const fr_shape *s)
{
    for (int64_t b = 0; s->lengths && b < s->batch; b++)
        if (fr_clamped_length(s, b) < s->steps) return 1;
    return 0;
}

static int64_t fr_valid_rows(const fr_shape *s)
{
    int64_t n = 0;
    for (int64_t b = 0; b < s->batch; b++) n += fr_clamped_length(s, b);
    return n;
}

/* OpenBLAS's small-matrix kernels take GEMMs of up to 100^3 multiply-adds
 * (its sgemm_small_kernel_permit for SkylakeX and later cores) and sum in
 * another order than its blocked kernels, so below that bound a row's result
 * depends on the GEMM's shape; above it, not on how many rows share the call.
 * Measured through the layers (LSTM, GRU, RNN; I 32-2100, H 16-512, 1
 * thread): a ragged batch projected in one GEMM gave every sample the bits
 * of its own dense call whenever each sample's GEMM was past the bound. */
#define FR_SMALL_GEMM_MACS 1000000.0

/* The fewest rows of W_ih's product past that bound: the smallest share of
 * a projection split among threads, so that a sample's rows are the same
 * whichever thread count and batch-mates it runs with (batch invariance). */
static int64_t fr_projection_rows_least(const fr_shape *s)
{
    const double row_macs = (double)s->inputs * (double)(fr_gates(s->cell) * s->hidden);
    return (int64_t)(FR_SMALL_GEMM_MACS / row_macs) + 1;
}

/* The shortest length among samples with a step (T when none is shorter). */
static int64_t fr_shortest(const fr_shape *s)
{
    int64_t shortest = s->steps;
    for (int64_t b = 0; b < s->batch; b++) {
        const int64_t n = fr_clamped_length(s, b);
        shortest = n > 0 && n < shortest ? n : shortest;
    }
    return shortest;
}

/* Whether a ragged call projects X's valid rows gathered, in one GEMM, or
 * each sample in a GEMM of its own (shaped as if it ran alone, so a sample's
 * rows match a dense call of it: batch invariance). One GEMM per sample
 * repacks W_ih each time: with I=512, H=512 (4 MB of W_ih) and 64 samples
 * that packing was 32% of an LSTM's ragged inference and made it slower than
 * the padded call (LSTM B=64 T=25, fill 0.30, one Emerald Rapids core:
 * 88 ms against 61 ms). Gathered when even the shortest sample's own GEMM
 * is past OpenBLAS's small-matrix bound, where the shapes no longer change a
 * row's result; smaller layers keep the per-sample GEMMs, whose packing costs
 * little (W_ih fits in L2). */
static int fr_gathered_projection(const fr_shape *s)
{
    if (!fr_is_ragged(s)) return 0;
    /* The packed kernel's rows never depend on the shape (rnn_impl.h's
     * panel_rows): one GEMM over the gathered rows always. */
    return fr_packed_supported() || fr_shortest(s) >= fr_projection_rows_least(s);
}

/* Cleared by fr_set_fused_projection(0) (tests and timings): every call
 * projects X before its step loop. */
static volatile int fr_fused_on = 1;

int fr_set_fused_projection(int on)
{
    const int was = fr_fused_on;
    fr_fused_on = on;
    return was;
}

/* The fused projection re-reads W_ih at every step: past this many bytes of
 * W_ih and W_hh together (L2-sized: 1-2 MiB per core) it lost to one
 * projection up front, measured through the layers, 1 thread, AMD EPYC Zen 4:
 * LSTM B=64 T=25 I=H=512 (8 MiB) inference 0.985x, B=16 I=H=1024 (32 MiB)
 * 0.94x dense, 0.81x ragged; I=H=256 (2 MiB) B=4 1.09x, I=128 H=256 B=64
 * 1.16x. */
#define FR_FUSED_MAX_WEIGHT_BYTES (2 << 20)

/* Whether each step's packed kernel computes x_t W_ih^T + h W_hh^T itself,
 * instead of adding h W_hh^T to gates projected before the step loop. The
 * sums are the same bit for bit (one FMA chain per output, over x_t's terms,
 * then h's: panel_rows), but the gates never go through memory (26 MB of
 * them for LSTM B=64 T=100 H=256, read back step by step from L3 or DRAM)
 * and W_ih's product runs in the packed kernel, not in OpenBLAS. Medium LSTM
 * inference, 1 thread, AMD EPYC Zen 4: 56.1 -> 50.4 ms. Not GRU (its W_hh
 * product stays apart for the reset gate), not the row layout (batch-1 steps
 * stream their weights: W_ih there is better read once, in the projection). */
static int fr_fused_projection(const fr_shape *s, size_t real_size)
{
    const int64_t weights = fr_gates(s->cell) * s->hidden * (s->inputs + s->hidden);
    return fr_fused_on && s->cell != FR_GRU && fr_packed_supported() &&
           !fr_row_layout(s->batch) &&
           (double)weights * (double)real_size <= (double)FR_FUSED_MAX_WEIGHT_BYTES;
}

int fr_fused_projection_of(const fr_shape *s, int real_size)
{
    if (fr_check_shape(s, s ? s->hidden : 0) != FR_OK || real_size <= 0) return -1;
    return fr_fused_projection(s, (size_t)real_size);
}

/* Rows of the gates: B*T dense, the valid rows gathered, B*longest on the
 * ragged grid. */
static int64_t fr_gate_rows(const fr_shape *s)
{
    if (!fr_is_ragged(s)) return s->batch * s->steps;
    return fr_gathered_projection(s) ? fr_valid_rows(s) : s->batch * fr_longest(s);
}

static inline int64_t fr_plan_sample(const fr_plan *p, int64_t i)
{
    return p->order ? p->order[i] : i;
}

/* The time of step `step` (the same for every sample). */
static inline int64_t fr_plan_time(const fr_shape *s, const fr_plan *p, int64_t step)
{
    return s->reverse ? p->n_steps - 1 - step : step;
}

static inline int64_t fr_plan_state_row(const fr_plan *p, int64_t step, int64_t i)
{
    return p->state_row[step] + i * p->sample_rows;
}

static inline int64_t fr_plan_gate_row(const fr_plan *p, int64_t step, int64_t i)
{
    return p->gate_row[step] + i * p->gate_sample;
}

/* The first and the last step sample b (of length n) runs. */
static inline int64_t fr_plan_first_step(const fr_shape *s, const fr_plan *p, int64_t n)
{
    return s->reverse ? p->n_steps - n : 0;
}

static inline int64_t fr_plan_last_step(const fr_shape *s, const fr_plan *p, int64_t n)
{
    return s->reverse ? p->n_steps - 1 : n - 1;
}

static void fr_plan_dense(const fr_shape *s, fr_plan *p)
{
    const int64_t T = s->steps;
    p->n_steps = T;
    p->n_rows = s->batch * T;
    p->sample_rows = p->gate_sample = T;
    p->gathered = 0;
    for (int64_t step = 0; step < T; step++) {
        p->active[step] = s->batch;
        p->state_row[step] = p->gate_row[step] = fr_plan_time(s, p, step);
    }
}

/* Counting sort by length, longest first, ties in batch order (sampling.h). */
void fr_order_by_length(const fr_shape *s, int64_t *order, int64_t *count)
{
    const int64_t B = s->batch, T = s->steps;
    for (int64_t n = 0; n <= T; n++) count[n] = 0;
    for (int64_t b = 0; b < B; b++) count[fr_clamped_length(s, b)]++;
    int64_t start = 0;
    for (int64_t n = T; n >= 0; n--) { /* count[n] becomes the first position of length n */
        const int64_t c = count[n];
        count[n] = start;
        start += c;
    }
    for (int64_t b = 0; b < B; b++) order[count[fr_clamped_length(s, b)]++] = b;
}

/* The sorted order, then the active counts, state rows and X rows per step. */
static void fr_plan_ragged(const fr_shape *s, fr_plan *p, int64_t *count)
{
    const int64_t B = s->batch, T = s->steps;
    fr_order_by_length(s, p->order, count);
    p->n_steps = fr_longest(s);
    p->sample_rows = p->gate_sample = 1;
    p->gathered = fr_gathered_projection(s);
    int64_t row = 0, n_active = 0;
    for (int64_t step = 0; step < p->n_steps; step++) {
        const int64_t t = fr_plan_time(s, p, step);
        while (n_active < B && fr_clamped_length(s, p->order[n_active]) > t) n_active++;
        while (n_active > 0 && fr_clamped_length(s, p->order[n_active - 1]) <= t) n_active--;
        p->active[step] = n_active;
        p->state_row[step] = row;
        p->gate_row[step] = p->gathered ? row : t * B;
        for (int64_t i = 0; i < n_active; i++, row++) p->x_row[row] = p->order[i] * T + t;
    }
    p->n_rows = row;
}

/* malloc's block aligned to a cache line (FR_PANEL_ALIGN, decode.h): a 64-byte
 * load from a panel at malloc's usual 16-byte offset spans two lines
 * (measured: the batch-1 step 3-8% slower, bench/NOTES.md row 23). C99 has no
 * aligned_alloc; the block's own address sits just before the result, for
 * fr_aligned_free. */
static void *fr_aligned_malloc(size_t bytes)
{
    char *raw = (char *)malloc(bytes + FR_PANEL_ALIGN + sizeof(void *));
    if (!raw) return NULL;
    char *at = raw + sizeof(void *);
    at += fr_to_line((uintptr_t)at);
    memcpy(at - sizeof(void *), &raw, sizeof raw);
    return at;
}

static void fr_aligned_free(void *p)
{
    char *raw;
    if (!p) return;
    memcpy(&raw, (char *)p - sizeof(void *), sizeof raw);
    free(raw);
}

/* One malloc per call (freed by fr_plan_free); FR_ERR_NOMEM when it fails. */
static int fr_plan_make(const fr_shape *s, int training, size_t real_size, fr_plan *p)
{
    const int64_t B = s->batch, T = s->steps;
    const int ragged = fr_is_ragged(s);
    const int64_t n_rows = ragged ? fr_valid_rows(s) : 0;
    size_t n = (size_t)(3 * T + (ragged ? B + n_rows + T + 1 : 0));
    p->mem = malloc(n * sizeof(int64_t));
    if (!p->mem) return FR_ERR_NOMEM;
    p->active = (int64_t *)p->mem;
    p->state_row = p->active + T;
    p->gate_row = p->state_row + T;
    p->order = ragged ? p->gate_row + T : NULL;
    p->x_row = ragged ? p->order + B : NULL;
    if (ragged)
        fr_plan_ragged(s, p, p->x_row + n_rows);
    else
        fr_plan_dense(s, p);
    p->fused = fr_fused_projection(s, real_size);
    if (p->fused && !training) { /* one step's gates at a time, in L2 */
        p->gate_sample = 1;
        for (int64_t step = 0; step < p->n_steps; step++) p->gate_row[step] = 0;
    }
    return FR_OK;
}

static void fr_plan_free(fr_plan *p)
{
    free(p->mem);
    p->mem = NULL;
}

/* Workspace layouts, llm.c style: one function per mode lists the sizes of
 * its named regions in order; the size functions add them up and the kernels
 * point their structs of named pointers at them (point_*_ws in rnn_impl.h),
 * so no offset is computed anywhere else. A region of size 0 is absent.
 * Row counts are the plan's: B*T dense, the valid rows ragged. */
enum { FR_FWD_GATES, FR_FWD_H, FR_FWD_C, FR_FWD_AUX, FR_FWD_GH, FR_FWD_X, FR_FORWARD_REGIONS };
enum { FR_BWD_DGX, FR_BWD_DGH, FR_BWD_DX, FR_BWD_DH, FR_BWD_DC, FR_BWD_XH, FR_BWD_DW,
       FR_BACKWARD_REGIONS };
enum { FR_GEN_H, FR_GEN_C, FR_GEN_GATES, FR_GEN_GH, FR_GEN_X, FR_GEN_LOGITS, FR_GENERATE_REGIONS };

/* Training forward: every row is kept for backward. Ragged calls also keep X's
 * valid rows gathered in state-row order (dW_ih's input). */
static void fr_train_forward_sizes(const fr_shape *s, int64_t sizes[FR_FORWARD_REGIONS])
{
    const int ragged = fr_is_ragged(s);
    int64_t N = fr_valid_rows(s), H = s->hidden, G = fr_gates(s->cell);
    int lstm = s->cell == FR_LSTM, gru = s->cell == FR_GRU;
    sizes[FR_FWD_GATES] = fr_gate_rows(s) * G * H;
    sizes[FR_FWD_H] = N * H;                       /* state entering each step */
    sizes[FR_FWD_C] = lstm ? N * H : 0;            /* cell state entering each step */
    sizes[FR_FWD_AUX] = (lstm || gru) ? N * H : 0; /* LSTM tanh(c_t), GRU W_hn h + b_hn */
    sizes[FR_FWD_GH] = gru ? s->batch * 3 * H : 0; /* GRU: W_hh h of one step */
    sizes[FR_FWD_X] = ragged ? N * s->inputs : 0;
}

/* Inference forward: the gates (the projection), then two (B, H)
 * state buffers swapped each step and one step's aux; a gathered projection
 * (fr_gathered_projection) X's valid rows. */
static void fr_infer_forward_sizes(const fr_shape *s, int64_t sizes[FR_FORWARD_REGIONS])
{
    int64_t B = s->batch, H = s->hidden, G = fr_gates(s->cell);
    int lstm = s->cell == FR_LSTM, gru = s->cell == FR_GRU;
    sizes[FR_FWD_GATES] = fr_gate_rows(s) * G * H;
    sizes[FR_FWD_H] = 2 * B * H;
    sizes[FR_FWD_C] = lstm ? 2 * B * H : 0;
    sizes[FR_FWD_AUX] = (lstm || gru) ? B * H : 0;
    sizes[FR_FWD_GH] = gru ? B * 3 * H : 0;
    sizes[FR_FWD_X] = fr_gathered_projection(s) ? fr_valid_rows(s) * s->inputs : 0;
}

static void fr_forward_sizes(const fr_shape *s, int training, int64_t sizes[FR_FORWARD_REGIONS])
{
    if (training)
        fr_train_forward_sizes(s, sizes);
    else
        fr_infer_forward_sizes(s, sizes);
}

/* LSTM and RNN layers (one dG for W_ih and W_hh) with I + H up to this many
 * columns take both weight gradients from one GEMM, dG^T [X | h], over a copy
 * of X and h side by side: OpenBLAS then packs dG once instead of twice (its
 * transposing copy, sgemm_otcopy, was 14% of a small LSTM's training step).
 * The small LSTM's shapes timed with scipy's sgemm (N = B*T = 1600, I=8,
 * H=64, G*H=256, 1 thread): two GEMMs 0.92-1.03 ms, the copy and one GEMM
 * 0.76-0.88 ms. Wider layers spend more on the products than on the packs. */
#define FR_JOINT_DW_MAX_COLS 256

static int fr_joint_dw(const fr_shape *s)
{
    return s->cell != FR_GRU && s->inputs + s->hidden <= FR_JOINT_DW_MAX_COLS;
}

/* Backward: the gate gradients per row fed to W_ih; GRU's reset gate makes
 * those fed to W_hh differ, LSTM and RNN share one buffer. Ragged calls add
 * dX's valid rows (scattered afterwards) and the running dh, dc in sorted
 * order (dense ones run them in dh0, dc0); a joint weight gradient
 * (fr_joint_dw) its [X | h] rows and its (G*H, I + H) result. */
static void fr_backward_sizes(const fr_shape *s, int64_t sizes[FR_BACKWARD_REGIONS])
{
    const int ragged = fr_is_ragged(s);
    int64_t N = fr_valid_rows(s), BH = s->batch * s->hidden;
    int64_t n = N * fr_gates(s->cell) * s->hidden;
    sizes[FR_BWD_DGX] = n;
    sizes[FR_BWD_DGH] = s->cell == FR_GRU ? n : 0;
    sizes[FR_BWD_DX] = ragged ? N * s->inputs : 0;
    sizes[FR_BWD_DH] = ragged ? BH : 0;
    sizes[FR_BWD_DC] = ragged && s->cell == FR_LSTM ? BH : 0;
    const int64_t joint = fr_joint_dw(s), cols = s->inputs + s->hidden;
    sizes[FR_BWD_XH] = joint ? N * cols : 0;
    sizes[FR_BWD_DW] = joint ? fr_gates(s->cell) * s->hidden * cols : 0;
}

/* Generation: per layer two state buffers (current, next) for h and c, one
 * step's gates and GRU W_hh h, the embedded tokens and the head's outputs. */
static void fr_generate_sizes(const fr_generator *g, int64_t n, int64_t sizes[FR_GENERATE_REGIONS])
{
    int64_t G = fr_gates(g->cell), H = g->hidden, L = g->num_layers;
    sizes[FR_GEN_H] = 2 * L * n * H;
    sizes[FR_GEN_C] = 2 * L * n * H;
    sizes[FR_GEN_GATES] = n * G * H;
    sizes[FR_GEN_GH] = n * 3 * H;
    sizes[FR_GEN_X] = n * g->embed_dim;
    sizes[FR_GEN_LOGITS] = n * (g->n_outputs > 1 ? g->n_outputs : 2);
}

static int64_t fr_sum(const int64_t *sizes, int n)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    return total;
}

int64_t fr_forward_workspace(const fr_shape *s, int training)
{
    if (fr_check_shape(s, s ? s->hidden : 0) != FR_OK) return -1;
    int64_t sizes[FR_FORWARD_REGIONS];
    fr_forward_sizes(s, training, sizes);
    return fr_sum(sizes, FR_FORWARD_REGIONS);
}

int64_t fr_backward_workspace(const fr_shape *s)
{
    if (fr_check_shape(s, s ? s->hidden : 0) != FR_OK) return -1;
    int64_t sizes[FR_BACKWARD_REGIONS];
    fr_backward_sizes(s, sizes);
    return fr_sum(sizes, FR_BACKWARD_REGIONS);
}

int64_t fr_generate_workspace(const fr_generator *g, int64_t n)
{
    int64_t sizes[FR_GENERATE_REGIONS];
    fr_generate_sizes(g, n, sizes);
    return fr_sum(sizes, FR_GENERATE_REGIONS);
}

/* float activations. Every sigmoid and tanh needs 1 + e^x: x is clamped to
 * [-87.3, 88] (no finite x gives inf or NaN; NaN stays NaN: the clamps keep
 * it and it runs through r), reduced to x = n ln2 + r (|r| <= ln2/2, ln2 in
 * two parts), e^r from a degree-5 polynomial fitted for the least relative
 * error on that interval (9.2e-8), and 2^n written straight into the
 * exponent bits: t's low mantissa bits hold n, since t = x log2(e) + 1.5 * 2^23
 * rounds x log2(e) to an integer. Sigmoid is within 3.6 ulp of the exact
 * value, tanh within 4 ulp where |tanh| >= 0.5 and 3e-7 nearer 0, where
 * 1 - 2 / (1 + e^2x) cancels (bench/NOTES.md, eighth session, and
 * tests/test_gate_pass.py). The scalar form below and
 * the AVX-512 one (fr_one_plus_exp16) perform the same roundings in the same
 * order, so they give the same bits: the fused multiply-adds are written out
 * (fmaf), not left to the compiler's contraction, which -O1 does not do (the
 * sanitizer build's results differed). Without FMA hardware fmaf is libm's
 * exact software one: slower, the same bits. */
#define FR_EXP_MAGIC 12582912.0f /* 1.5 * 2^23 */
static const float fr_exp_poly[5] = {8.290272206e-03f, 4.189816117e-02f, 1.666763872e-01f,
                                     4.999914765e-01f, 9.999997020e-01f};
static inline float fr_one_plus_expf(float x)
{
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = fmaf(x, 1.44269504088896341f, FR_EXP_MAGIC);
    float n = t - FR_EXP_MAGIC;
    float r = fmaf(-n, 0.693359375f, x);
    r = fmaf(-n, -2.12194440e-4f, r);
    /* Horner written out: with a loop here gcc 12 leaves the callers' loops
     * unvectorised (it does not unroll a loop of fmaf calls before it
     * vectorises; GRU inference ran 2.7x slower). */
    float p = fmaf(fr_exp_poly[0], r, fr_exp_poly[1]);
    p = fmaf(p, r, fr_exp_poly[2]);
    p = fmaf(p, r, fr_exp_poly[3]);
    p = fmaf(p, r, fr_exp_poly[4]);
    p = fmaf(p, r, 1.0f);
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return fmaf(p, scale, 1.0f);
}

static inline float fr_sigmoidf(float x) { return 1.0f / fr_one_plus_expf(-x); }
static inline float fr_tanhf(float x) { return 1.0f - 2.0f / fr_one_plus_expf(x + x); }
#if FR_HAVE_PACKED
/* The same activations on 16 lanes, and the float LSTM gate pass built on
 * them: gcc turns the scalar clamps above into three compares and two blends
 * each when it vectorises them, AVX-512's min/max take one instruction with the
 * same NaN rule (the second operand wins). Bench/NOTES.md (eighth session):
 * the pass went from 2.48 to 1.58 ns per unit on a Zen 4 core (a C harness). */
#define FR_AVX512 __attribute__((target("avx512f"))) static inline

FR_AVX512 __m512 fr_one_plus_exp16(__m512 x)
{
    const __m512 magic = _mm512_set1_ps(FR_EXP_MAGIC);
    x = _mm512_max_ps(_mm512_set1_ps(-87.3f), x);
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic);
    __m512 n = _mm512_sub_ps(t, magic);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(fr_exp_poly[0]);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(fr_exp_poly[1]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(fr_exp_poly[2]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(fr_exp_poly[3]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(fr_exp_poly[4]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512i bits = _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127));
    __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 23));
    return _mm512_fmadd_ps(p, scale, _mm512_set1_ps(1.0f));
}

FR_AVX512 __m512 fr_sigmoid16(__m512 x)
{
    __m512i minus_x = _mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT_MIN));
    return _mm512_div_ps(_mm512_set1_ps(1.0f), fr_one_plus_exp16(_mm512_castsi512_ps(minus_x)));
}

FR_AVX512 __m512 fr_tanh16(__m512 x)
{
    __m512 q = _mm512_div_ps(_mm512_set1_ps(2.0f), fr_one_plus_exp16(_mm512_add_ps(x, x)));
    return _mm512_sub_ps(_mm512_set1_ps(1.0f), q);
}

/* The lanes of the n - j0 units left from j0 (all 16, some or none). */
static inline __mmask16 fr_lanes16(int64_t n, int64_t j0)
{
    return n - j0 >= 16 ? (__mmask16)0xFFFF : n <= j0 ? 0 : (__mmask16)((1u << (n - j0)) - 1);
}

/* gates + b_ih + b_hh for the 16 units from `at` (a gate's offset plus the
 * unit; the same two additions as the scalar pass); masked-off lanes are 0. */
FR_AVX512 __m512 fr_preactivation16(const float *g, const float *bi, const float *bh,
                                    int64_t at, __mmask16 m)
{
    __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, g + at), _mm512_maskz_loadu_ps(m, bi + at));
    return _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bh + at));
}

/* Stores what lstm_forward_row_f32 stores for 16 units: c and h = o tanh(c)
 * twice (state and output), and for training (keep) the activated gates and
 * tanh(c). */
FR_AVX512 void fr_lstm_store16(__m512 i, __m512 f, __m512 c_in, __m512 o, __m512 c, __m512 t,
                               float *g, int64_t H, float *cn, float *hn, float *y, float *tc,
                               int64_t at, __mmask16 m, int keep)
{
    __m512 h = _mm512_mul_ps(o, t);
    if (keep) {
        _mm512_mask_storeu_ps(g + at, m, i);
        _mm512_mask_storeu_ps(g + H + at, m, f);
        _mm512_mask_storeu_ps(g + 2 * H + at, m, c_in);
        _mm512_mask_storeu_ps(g + 3 * H + at, m, o);
        _mm512_mask_storeu_ps(tc + at, m, t);
    }
    _mm512_mask_storeu_ps(cn + at, m, c);
    _mm512_mask_storeu_ps(hn + at, m, h);
    _mm512_mask_storeu_ps(y + at, m, h);
}

/* 32 units of lstm_forward_row_f32 (rnn_impl.h) from ja, as two vectors a
 * and b whose activations alternate: one vector at a time left the core
 * waiting on each activation's chain (in a C harness on a Zen 4 core: 1.69 ns
 * per unit against 1.45). Named variables, not arrays: gcc kept a [4][2] array
 * on the stack. */
__attribute__((target("avx512f"), always_inline)) static inline void fr_lstm_units32(
    int64_t ja, __mmask16 ma, __mmask16 mb, int64_t H, float *restrict g,
    const float *restrict bi, const float *restrict bh, const float *restrict cp,
    float *restrict hn, float *restrict cn, float *restrict y, float *restrict tc, int keep)
{
    const int64_t jb = ja + 16;
    __m512 ia = fr_sigmoid16(fr_preactivation16(g, bi, bh, ja, ma));
    __m512 ib = fr_sigmoid16(fr_preactivation16(g, bi, bh, jb, mb));
    __m512 fa = fr_sigmoid16(fr_preactivation16(g, bi, bh, H + ja, ma));
    __m512 fb = fr_sigmoid16(fr_preactivation16(g, bi, bh, H + jb, mb));
    __m512 ga = fr_tanh16(fr_preactivation16(g, bi, bh, 2 * H + ja, ma));
    __m512 gb = fr_tanh16(fr_preactivation16(g, bi, bh, 2 * H + jb, mb));
    __m512 oa = fr_sigmoid16(fr_preactivation16(g, bi, bh, 3 * H + ja, ma));
    __m512 ob = fr_sigmoid16(fr_preactivation16(g, bi, bh, 3 * H + jb, mb));
    __m512 ca = _mm512_fmadd_ps(fa, _mm512_maskz_loadu_ps(ma, cp + ja), _mm512_mul_ps(ia, ga));
    __m512 cb = _mm512_fmadd_ps(fb, _mm512_maskz_loadu_ps(mb, cp + jb), _mm512_mul_ps(ib, gb));
    __m512 ta = fr_tanh16(ca), tb = fr_tanh16(cb);
    fr_lstm_store16(ia, fa, ga, oa, ca, ta, g, H, cn, hn, y, tc, ja, ma, keep);
    fr_lstm_store16(ib, fb, gb, ob, cb, tb, g, H, cn, hn, y, tc, jb, mb, keep);
}

/* lstm_forward_row_f32 on AVX-512: whole rounds of 32 units, then the rest
 * masked (masked loads and stores in every round cost 1.83 ns per unit
 * against 1.58, same harness); `keep` a constant in each inlined copy. */
__attribute__((target("avx512f"), always_inline)) static inline void fr_lstm_units(
    int64_t n, int64_t H, float *restrict g, const float *restrict bi, const float *restrict bh,
    const float *restrict cp, float *restrict hn, float *restrict cn, float *restrict y,
    float *restrict tc, int keep)
{
    const __mmask16 all = 0xFFFF;
    int64_t j = 0;
    for (; j + 32 <= n; j += 32)
        fr_lstm_units32(j, all, all, H, g, bi, bh, cp, hn, cn, y, tc, keep);
    if (j < n)
        fr_lstm_units32(j, fr_lanes16(n, j), fr_lanes16(n, j + 16), H, g, bi, bh, cp, hn, cn, y,
                        tc, keep);
}

/* tc NULL: inference, nothing kept for backward (lstm_forward_row_f32). */
__attribute__((target("avx512f"))) static void fr_lstm_forward_row_avx512(
    int64_t n, int64_t H, float *restrict g, const float *restrict bi, const float *restrict bh,
    const float *restrict cp, float *restrict hn, float *restrict cn, float *restrict y,
    float *restrict tc)
{
    if (tc)
        fr_lstm_units(n, H, g, bi, bh, cp, hn, cn, y, tc, 1);
    else
        fr_lstm_units(n, H, g, bi, bh, cp, hn, cn, y, NULL, 0);
}

/* The weight gradients' products, C[q, n] += sum over k of A[k, q] Z[k, n]
 * (A: the gate gradients, one row per state row; Z: that row's input or
 * previous h; C: dW_ih or dW_hh), without BLAS. OpenBLAS packs both
 * operands of such a product, long in k (every row of the batch) and short
 * in q and n, and its copies took a third of the GEMM's time (perf, RNN
 * B=64 T=100 I=128 H=256 training: kernel 14.4 ms, copies 7.3). Here rows
 * of Z are read where they lie (masked past ncols), 8 rows of C by 32
 * columns held in 16 registers, k in chunks of FR_WG_KC so that a chunk's
 * A (8 columns) and Z stay in L1 and L2 while all of C's panels pass over
 * them, and C's columns in blocks of FR_WG_NC so that the chunk of Z they
 * read (128 KiB) stays in L2 while every row block passes over it. Every
 * output is one FMA chain over k in order, whatever the split. */
#define FR_WG_KC 128
#define FR_WG_NC 256
#define FR_WG_AHEAD 8
__attribute__((target("avx512f"), always_inline)) static inline void fr_weight_grad_rows(
    const int rows, int64_t k0, int64_t k1, const float *A, int64_t lda, const float *Z,
    int64_t ldz, __mmask16 m0, __mmask16 m1, float *C, int64_t ldc)
{
    __m512 acc[8][2];
    for (int r = 0; r < rows; r++) {
        acc[r][0] = _mm512_maskz_loadu_ps(m0, C + r * ldc);
        acc[r][1] = _mm512_maskz_loadu_ps(m1, C + r * ldc + 16);
    }
    for (int64_t k = k0; k < k1; k++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, Z + k * ldz);
        const __m512 b1 = _mm512_maskz_loadu_ps(m1, Z + k * ldz + 16);
        const float *a = A + k * lda;
        if (k + FR_WG_AHEAD < k1) /* rows of A lie lda apart: past the prefetchers */
            _mm_prefetch((const char *)(a + FR_WG_AHEAD * lda), _MM_HINT_T0);
        for (int r = 0; r < rows; r++) {
            const __m512 x = _mm512_set1_ps(a[r]);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) {
        _mm512_mask_storeu_ps(C + r * ldc, m0, acc[r][0]);
        _mm512_mask_storeu_ps(C + r * ldc + 16, m1, acc[r][1]);
    }
}

/* `rows` (<= 8) rows of C, columns [n0, n1) of ncols, k in [k0, k1). */
__attribute__((target("avx512f"))) static void fr_weight_grad_block(
    int rows, int64_t k0, int64_t k1, const float *a, int64_t lda, const float *Z, int64_t ldz,
    int64_t n0, int64_t n1, int64_t ncols, float *c, int64_t ldc)
{
    for (int64_t n = n0; n < n1; n += 32) {
        const __mmask16 m0 = fr_lanes16(ncols, n), m1 = fr_lanes16(ncols, n + 16);
        switch (rows) { /* constant row counts: the loops unroll */
        case 8: fr_weight_grad_rows(8, k0, k1, a, lda, Z + n, ldz, m0, m1, c + n, ldc); break;
        case 7: fr_weight_grad_rows(7, k0, k1, a, lda, Z + n, ldz, m0, m1, c + n, ldc); break;
        case 6: fr_weight_grad_rows(6, k0, k1, a, lda, Z + n, ldz, m0, m1, c + n, ldc); break;
        case 5: fr_weight_grad_rows(5, k0, k1, a, lda, Z + n, ldz, m0, m1, c + n, ldc); break;
        case 4: fr_weight_grad_rows(4, k0, k1, a, lda, Z + n, ldz, m0, m1, c + n, ldc); break;
        case 3: fr_weight_grad_rows(3, k0, k1, a, lda, Z + n, ldz, m0, m1, c + n, ldc); break;
        case 2: fr_weight_grad_rows(2, k0, k1, a, lda, Z + n, ldz, m0, m1, c + n, ldc); break;
        default: fr_weight_grad_rows(1, k0, k1, a, lda, Z + n, ldz, m0, m1, c + n, ldc); break;
        }
    }
}

/* Rows [q0, q1) of C, all ncols columns, k in [0, K). */
__attribute__((target("avx512f"))) static void fr_weight_grad_avx512(
    int64_t K, const float *A, int64_t lda, int64_t q0, int64_t q1, const float *Z, int64_t ldz,
    int64_t ncols, float *C, int64_t ldc)
{
    for (int64_t k0 = 0; k0 < K; k0 += FR_WG_KC) {
        const int64_t k1 = K - k0 < FR_WG_KC ? K : k0 + FR_WG_KC;
        for (int64_t n0 = 0; n0 < ncols; n0 += FR_WG_NC) {
            const int64_t n1 = ncols - n0 < FR_WG_NC ? ncols : n0 + FR_WG_NC;
            for (int64_t q = q0; q < q1; q += 8)
                fr_weight_grad_block(q1 - q < 8 ? (int)(q1 - q) : 8, k0, k1, A + q, lda, Z, ldz,
                                     n0, n1, ncols, C + q * ldc, ldc);
        }
    }
}
#endif

static inline double fr_sigmoidd(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double fr_tanhd(double x) { return tanh(x); }

static uint64_t fr_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void fr_rng_seed(fr_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ULL);
    for (int i = 0; i < 4; i++) r->s[i] = fr_splitmix64(&x);
}

static uint64_t fr_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static double fr_rng_uniform(fr_rng *r) /* [0, 1) */
{
    uint64_t *s = r->s;
    uint64_t result = fr_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = fr_rotl(s[3], 45);
    return (double)(result >> 11) * 0x1.0p-53;
}

static int fr_prob_desc(const void *a, const void *b)
{
    double pa = ((const fr_prob *)a)->p, pb = ((const fr_prob *)b)->p;
    if (pa != pb) return pa < pb ? 1 : -1;
    int64_t ia = ((const fr_prob *)a)->index, ib = ((const fr_prob *)b)->index;
    return ia < ib ? -1 : ia > ib;
}

/* Draw an output index from logits (double, V of them). probs holds V pairs. */
static int64_t fr_sample(const double *logits, int64_t V, const fr_sampling *opt, fr_rng *rng,
                         fr_prob *probs)
{
    int64_t best = 0;
    for (int64_t v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (opt->temperature <= 0) return best;
    double total = 0;
    for (int64_t v = 0; v < V; v++) {
        probs[v].p = exp((logits[v] - logits[best]) / opt->temperature);
        probs[v].index = v;
        total += probs[v].p;
    }
    int64_t keep = V;
    if ((opt->top_k > 0 && opt->top_k < V) || opt->top_p < 1) {
        qsort(probs, (size_t)V, sizeof *probs, fr_prob_desc);
        if (opt->top_k > 0 && opt->top_k < V) keep = opt->top_k;
        if (opt->top_p < 1) { /* smallest prefix holding top_p of the mass */
            double mass = 0;
            for (int64_t v = 0; v < keep; v++) {
                mass += probs[v].p / total;
                if (mass >= opt->top_p) { keep = v + 1; break; }
            }
        }
        total = 0;
        for (int64_t v = 0; v < keep; v++) total += probs[v].p;
    }
    double u = fr_rng_uniform(rng) * total, acc = 0;
    for (int64_t v = 0; v < keep; v++) {
        acc += probs[v].p;
        if (u < acc) return probs[v].index;
    }
    return probs[keep - 1].index;
}

FR_DISPATCHED(void, sigmoid_f32, (const float *x, float *y, int64_t n), (x, y, n))
{
    for (int64_t i = 0; i < n; i++) y[i] = fr_sigmoidf(x[i]);
}

FR_DISPATCHED(void, tanh_f32, (const float *x, float *y, int64_t n), (x, y, n))
{
    for (int64_t i = 0; i < n; i++) y[i] = fr_tanhf(x[i]);
}

void fr_sigmoid_f32(const float *x, float *y, int64_t n) { sigmoid_f32(x, y, n); }
void fr_tanh_f32(const float *x, float *y, int64_t n) { tanh_f32(x, y, n); }

void fr_sigmoid_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = fr_sigmoidd(x[i]);
}

void fr_tanh_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = fr_tanhd(x[i]);
}

/* The header fr_pack_recurrent_* writes before a direction's packed W_hh and
 * W_ih: what they were packed for. A forward given the pack uses it only when every
 * field but panels_at equals the call's own (else it packs as without one),
 * so a stale or foreign pack costs a pack, never a wrong result. */
#define FR_PACK_MAGIC 0x4b434150524e5246LL /* "FRNRPACK" */
typedef struct {
    int64_t magic, real_size, cell, hidden, row_layout, slices, n_elems;
    int64_t weights;   /* the address of the W_hh it was packed from */
    int64_t weights_ih; /* and of the W_ih (its panels follow W_hh's) */
    int64_t panels_at; /* elements from the pack's start to its panels (the first
                          cache line after the header; a moved copy keeps it) */
} fr_pack_header;

#define real float
#define FR_(name) name##_f32
#define FR_GEMM sgemm
#define FR_SIGMOID fr_sigmoidf
#define FR_TANH fr_tanhf
#define FR_FMA fmaf /* written out: the AVX-512 LSTM pass rounds the same way */
#define FR_VEC fr_vec_f32
#if FR_HAVE_PACKED
#define FR_LSTM_ROW_AVX512 fr_lstm_forward_row_avx512
#define FR_WEIGHT_GRAD_AVX512 fr_weight_grad_avx512
#endif
#include "rnn_impl.h"
#undef FR_LSTM_ROW_AVX512
#undef FR_WEIGHT_GRAD_AVX512
#undef real
#undef FR_
#undef FR_GEMM
#undef FR_SIGMOID
#undef FR_TANH
#undef FR_FMA
#undef FR_VEC

#define real double
#define FR_(name) name##_f64
#define FR_GEMM dgemm
#define FR_SIGMOID fr_sigmoidd
#define FR_TANH fr_tanhd
#define FR_FMA(a, b, c) ((a) * (b) + (c))
#define FR_VEC fr_vec_f64
#include "rnn_impl.h"
#undef real
#undef FR_
#undef FR_GEMM
#undef FR_SIGMOID
#undef FR_TANH
#undef FR_FMA
#undef FR_VEC

int fr_weight_grad_kernel_of(const fr_shape *s, int real_size)
{
    if (fr_check_shape(s, s ? s->hidden : 0) != FR_OK || real_size <= 0) return -1;
    return real_size == (int)sizeof(float) ? weight_grad_kernel_f32(s) : weight_grad_kernel_f64(s);
}

/* Small-row products for decode.c (see decode.h): W (N, K) packed once into
 * pack_forward's panels, then C (M, N) (+)= A W^T through packed_apply's
 * block kernels, without the per-call repacking BLAS does. A size of 0: the
 * packed kernels are unavailable here (the caller keeps BLAS). */
#if FR_HAVE_PACKED
#define FR_SMALL_PRODUCT(real, sfx)                                                           \
    int64_t fr_small_panels_size_##sfx(int64_t N, int64_t K)                                  \
    {                                                                                         \
        return fr_packed_supported() ? panels_size_##sfx(1, N, K, 1) : 0;                     \
    }                                                                                         \
    void fr_small_pack_##sfx(const real *W, int64_t N, int64_t K, real *P)                    \
    {                                                                                         \
        pack_forward_##sfx(W, K, N, 1, 0, N, P, 0);                                           \
    }                                                                                         \
    void fr_small_apply_##sfx(int64_t M, int64_t N, int64_t K, const real *A, int64_t lda,    \
                              const real *P, real *C, int accumulate)                         \
    {                                                                                         \
        packed_apply_##sfx(M, K, A, lda, P, 1, N, 0, N, C, N, accumulate, FR_PANELS_BLOCKED); \
    }
#else
#define FR_SMALL_PRODUCT(real, sfx)                                                           \
    int64_t fr_small_panels_size_##sfx(int64_t N, int64_t K)                                  \
    {                                                                                         \
        (void)N; (void)K;                                                                     \
        return 0;                                                                             \
    }                                                                                         \
    void fr_small_pack_##sfx(const real *W, int64_t N, int64_t K, real *P)                    \
    {                                                                                         \
        (void)W; (void)N; (void)K; (void)P;                                                   \
    }                                                                                         \
    void fr_small_apply_##sfx(int64_t M, int64_t N, int64_t K, const real *A, int64_t lda,    \
                              const real *P, real *C, int accumulate)                         \
    {                                                                                         \
        (void)M; (void)N; (void)K; (void)A; (void)lda; (void)P; (void)C; (void)accumulate;    \
    }
#endif
FR_SMALL_PRODUCT(float, f32)
FR_SMALL_PRODUCT(double, f64)
#undef FR_SMALL_PRODUCT
