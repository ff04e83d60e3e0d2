/* Recurrent kernels for one precision. Included by rnn.c with `real`, FR_(),
 * FR_GEMM, FR_SIGMOID, FR_TANH and FR_FMA defined; no include guard on purpose.
 *
 * Forward, per layer and direction:
 *   gates = X W_ih^T                      one GEMM over all B*T rows (ragged:
 *                                         X's valid rows gathered, or through
 *                                         BLAS one GEMM per sample)
 *   for each step t (reversed for the backward direction):
 *     gates[t] += h_prev W_hh^T           one GEMM (GRU: into its own buffer);
 *                                         the fused projection (rnn.c) computes
 *                                         x_t W_ih^T + h_prev W_hh^T here instead
 *     one fused pass: biases, activations, cell update, outputs, and what
 *     backward reads, stored in place
 * Backward walks the steps in the opposite order with one fused pass and one
 * GEMM for dh per step; dW_ih, dW_hh, dX and the bias sums come after the loop.
 * With lengths, every step runs only the samples still active there: the
 * call's plan (fr_plan in rnn.c) sorts them by length so they are a prefix.
 *
 * Workspaces: the regions of each mode are listed once, with their sizes, in
 * rnn.c (fr_*_sizes); point_*_ws below gives them names (forward_ws,
 * backward_ws, generate_ws). The training forward keeps the activated gates
 * (LSTM i,f,g,o; GRU r,z,n; RNN h) and the state entering every step for
 * backward.
 */

/* Row-major C = op(A) op(B) through column-major gemm: C^T = op(B)^T op(A)^T. */
static void FR_(gemm_rm)(const fr_blas *blas, int trans_a, int trans_b, int64_t M, int64_t N,
                         int64_t K, real alpha, const real *A, int64_t lda, const real *B,
                         int64_t ldb, real beta, real *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    int m = (int)N, n = (int)M, k = (int)K, la = (int)lda, lb = (int)ldb, lc = (int)ldc;
    blas->FR_GEMM(&tb, &ta, &m, &n, &k, &alpha, (real *)B, &lb, (real *)A, &la, &beta, C, &lc);
}

FR_DISPATCHED(void, FR_(lstm_forward_row_portable),
              (int64_t n, int64_t H, real *restrict g, const real *restrict bi,
               const real *restrict bh, const real *restrict cp, real *restrict hn,
               real *restrict cn, real *restrict y, real *restrict tc),
              (n, H, g, bi, bh, cp, hn, cn, y, tc))
{
    real *restrict gi = g, *restrict gf = g + H, *restrict gg = g + 2 * H, *restrict go = g + 3 * H;
    for (int64_t j = 0; j < n; j++) {
        real i = FR_SIGMOID(gi[j] + bi[j] + bh[j]);
        real f = FR_SIGMOID(gf[j] + bi[H + j] + bh[H + j]);
        real c_in = FR_TANH(gg[j] + bi[2 * H + j] + bh[2 * H + j]);
        real o = FR_SIGMOID(go[j] + bi[3 * H + j] + bh[3 * H + j]);
        real c = FR_FMA(f, cp[j], i * c_in);
        real t = FR_TANH(c);
        real h = o * t;
        if (tc) { /* training keeps the activations for backward */
            gi[j] = i;
            gf[j] = f;
            gg[j] = c_in;
            go[j] = o;
            tc[j] = t;
        }
        cn[j] = c;
        hn[j] = h;
        y[j] = h;
    }
}

/* The LSTM step's pass over units [0, n) of one row (tc NULL: inference, the
 * activated gates and tanh(c) not kept): float on AVX-512 CPUs runs
 * rnn.c's intrinsics version (the same roundings, so the same bits). */
static void FR_(lstm_forward_row)(int64_t n, int64_t H, real *g, const real *bi, const real *bh,
                                  const real *cp, real *hn, real *cn, real *y, real *tc)
{
#ifdef FR_LSTM_ROW_AVX512
    if (fr_lstm_gate_pass_avx512()) {
        FR_LSTM_ROW_AVX512(n, H, g, bi, bh, cp, hn, cn, y, tc);
        return;
    }
#endif
    FR_(lstm_forward_row_portable)(n, H, g, bi, bh, cp, hn, cn, y, tc);
}

FR_DISPATCHED(void, FR_(gru_forward_row),
              (int64_t n, int64_t H, real *restrict g, const real *restrict gh,
               const real *restrict bi, const real *restrict bh, const real *restrict hp,
               real *restrict hn, real *restrict y, real *restrict a),
              (n, H, g, gh, bi, bh, hp, hn, y, a))
{
    real *restrict gr = g, *restrict gz = g + H, *restrict gn = g + 2 * H;
    for (int64_t j = 0; j < n; j++) {
        real r = FR_SIGMOID(gr[j] + bi[j] + gh[j] + bh[j]);
        real z = FR_SIGMOID(gz[j] + bi[H + j] + gh[H + j] + bh[H + j]);
        real hh = gh[2 * H + j] + bh[2 * H + j];
        real nn = FR_TANH(gn[j] + bi[2 * H + j] + r * hh);
        real h = (1 - z) * nn + z * hp[j];
        if (a) { /* training keeps the activations for backward */
            gr[j] = r;
            gz[j] = z;
            gn[j] = nn;
            a[j] = hh;
        }
        hn[j] = h;
        y[j] = h;
    }
}

FR_DISPATCHED(void, FR_(rnn_forward_row),
              (int64_t n, int relu, real *restrict g, const real *restrict bi,
               const real *restrict bh, real *restrict hn, real *restrict y),
              (n, relu, g, bi, bh, hn, y))
{
    if (relu) {
        for (int64_t j = 0; j < n; j++) {
            real v = g[j] + bi[j] + bh[j];
            real h = v > 0 ? v : 0;
            g[j] = h;
            hn[j] = h;
            y[j] = h;
        }
    } else {
        for (int64_t j = 0; j < n; j++) {
            real h = FR_TANH(g[j] + bi[j] + bh[j]);
            g[j] = h;
            hn[j] = h;
            y[j] = h;
        }
    }
}

FR_DISPATCHED(void, FR_(lstm_backward_row),
              (int64_t n, int64_t H, const real *restrict g, const real *restrict tc,
               const real *restrict cp, real *restrict dh, real *restrict dc, real *restrict dg),
              (n, H, g, tc, cp, dh, dc, dg))
{
    const real *restrict gi = g, *restrict gf = g + H, *restrict gg = g + 2 * H,
                         *restrict go = g + 3 * H;
    for (int64_t j = 0; j < n; j++) {
        real i = gi[j], f = gf[j], c_in = gg[j], o = go[j], t = tc[j];
        real d_h = dh[j];
        real d_c = dc[j] + d_h * o * (1 - t * t);
        dg[j] = d_c * c_in * i * (1 - i);
        dg[H + j] = d_c * cp[j] * f * (1 - f);
        dg[2 * H + j] = d_c * i * (1 - c_in * c_in);
        dg[3 * H + j] = d_h * t * o * (1 - o);
        dc[j] = d_c * f;
        dh[j] = 0; /* the GEMM with W_hh adds the rest */
    }
}

FR_DISPATCHED(void, FR_(gru_backward_row),
              (int64_t n, int64_t H, const real *restrict g, const real *restrict a,
               const real *restrict hp, real *restrict dh, real *restrict dgx,
               real *restrict dgh),
              (n, H, g, a, hp, dh, dgx, dgh))
{
    const real *restrict gr = g, *restrict gz = g + H, *restrict gn = g + 2 * H;
    for (int64_t j = 0; j < n; j++) {
        real r = gr[j], z = gz[j], nn = gn[j];
        real d_h = dh[j];
        real d_n = d_h * (1 - z) * (1 - nn * nn);
        real d_r = d_n * a[j] * r * (1 - r);
        real d_z = d_h * (hp[j] - nn) * z * (1 - z);
        dgx[j] = d_r;
        dgx[H + j] = d_z;
        dgx[2 * H + j] = d_n;
        dgh[j] = d_r;
        dgh[H + j] = d_z;
        dgh[2 * H + j] = d_n * r;
        dh[j] = d_h * z;
    }
}

FR_DISPATCHED(void, FR_(rnn_backward_row),
              (int64_t n, int relu, const real *restrict g, real *restrict dh, real *restrict dg),
              (n, relu, g, dh, dg))
{
    if (relu) {
        for (int64_t j = 0; j < n; j++) {
            dg[j] = g[j] > 0 ? dh[j] : 0;
            dh[j] = 0;
        }
    } else {
        for (int64_t j = 0; j < n; j++) {
            real h = g[j];
            dg[j] = dh[j] * (1 - h * h);
            dh[j] = 0;
        }
    }
}

/* out[j] += sum over rows of A[r, j] for j in [j0, j1): blocks of rows are
 * summed in `real` (vectorised), the block sums in double. out2, when not
 * NULL, receives the same sums (LSTM and RNN share one gate gradient for
 * both bias vectors). */
static void FR_(colsum_add)(const real *A, int64_t rows, int64_t cols, int64_t j0, int64_t j1,
                            real *out, real *out2)
{
    enum { WIDTH = 64, ROWS = 256 };
    for (int64_t k0 = j0; k0 < j1; k0 += WIDTH) {
        double total[WIDTH] = {0};
        int64_t w = j1 - k0 < WIDTH ? j1 - k0 : WIDTH;
        for (int64_t r0 = 0; r0 < rows; r0 += ROWS) {
            real part[WIDTH] = {0};
            int64_t r1 = rows - r0 < ROWS ? rows : r0 + ROWS;
            for (int64_t r = r0; r < r1; r++) {
                const real *a = A + r * cols + k0;
                for (int64_t j = 0; j < w; j++) part[j] += a[j];
            }
            for (int64_t j = 0; j < w; j++) total[j] += part[j];
        }
        for (int64_t j = 0; j < w; j++) {
            out[k0 + j] += (real)total[j];
            if (out2) out2[k0 + j] += (real)total[j];
        }
    }
}

static void FR_(copy_rows)(real *dst, int64_t s_dst, const real *src, int64_t B, int64_t H)
{
    for (int64_t b = 0; b < B; b++) {
        if (src)
            memcpy(dst + b * s_dst, src + b * H, (size_t)H * sizeof(real));
        else
            memset(dst + b * s_dst, 0, (size_t)H * sizeof(real));
    }
}

#if FR_HAVE_PACKED
#define FR_VL ((int64_t)(sizeof(FR_VEC) / sizeof(real)))
#define FR_NR (2 * FR_VL) /* panel width: two vectors */

/* Row c's w (<= FR_NR) values into two vectors, zeros beyond w. */
static inline void FR_(load_row)(const real *c, FR_VEC *v0, FR_VEC *v1, int64_t w)
{
    if (w == FR_NR) {
        const FR_VEC *cv = (const FR_VEC *)c;
        *v0 = cv[0];
        *v1 = cv[1];
        return;
    }
    real tmp[2 * sizeof(FR_VEC) / sizeof(real)] = {0};
    memcpy(tmp, c, (size_t)w * sizeof(real));
    memcpy(v0, tmp, sizeof *v0);
    memcpy(v1, tmp + FR_VL, sizeof *v1);
}

static inline void FR_(store_row)(real *c, const FR_VEC *v0, const FR_VEC *v1, int64_t w)
{
    if (w == FR_NR) { /* a whole panel: straight from the registers, no copy through memory */
        FR_VEC *cv = (FR_VEC *)c;
        cv[0] = *v0;
        cv[1] = *v1;
        return;
    }
    real tmp[2 * sizeof(FR_VEC) / sizeof(real)];
    memcpy(tmp, v0, sizeof *v0);
    memcpy(tmp + FR_VL, v1, sizeof *v1);
    memcpy(c, tmp, (size_t)w * sizeof(real));
}

/* One term of a panel product: rows of A (lda apart, K columns) times the
 * K rows of a panel P. A step's product has one term (h W_hh^T), or two when
 * the input projection runs inside it (fr_fused_projection: x_t W_ih^T, then
 * h W_hh^T). */
typedef struct {
    int64_t K;
    const real *A;
    int64_t lda;
    const real *P;
} FR_(term);

/* Rows [r, r + n) of C = (C if accumulate, else 0) + the terms, for one panel;
 * C points at row r. n <= 8 known where this is inlined: n independent
 * chains per vector hide the FMA latency. Every output is one FMA chain: it
 * starts from C's value (accumulate) or 0 and adds the terms' products in
 * order, k by k, whatever n is. So a row's result does not depend on how many
 * rows share its call (predictions must not change with the batch around
 * them), and a projection stored in C and continued by a later call gives the
 * bits of one call over both terms (the fused projection). */
static inline __attribute__((always_inline)) void FR_(panel_rows)(
    int n, const FR_(term) *terms, int n_terms, int64_t r, real *C, int64_t ldc, int64_t w,
    int accumulate)
{
    FR_VEC acc[8][2];
    for (int i = 0; i < n; i++) {
        if (accumulate)
            FR_(load_row)(C + i * ldc, &acc[i][0], &acc[i][1], w);
        else
            acc[i][0] = acc[i][1] = (FR_VEC){0};
    }
    for (int t = 0; t < n_terms; t++) {
        const real *A = terms[t].A + r * terms[t].lda, *P = terms[t].P;
        const int64_t lda = terms[t].lda;
        for (int64_t k = 0; k < terms[t].K; k++) {
            const FR_VEC b0 = *(const FR_VEC *)(P + k * FR_NR);
            const FR_VEC b1 = *(const FR_VEC *)(P + k * FR_NR + FR_VL);
            for (int i = 0; i < n; i++) {
                const real x = A[i * lda + k];
                acc[i][0] += x * b0;
                acc[i][1] += x * b1;
            }
        }
    }
    for (int i = 0; i < n; i++) FR_(store_row)(C + i * ldc, &acc[i][0], &acc[i][1], w);
}

/* C[0:M, 0:w] = (C or 0) + the terms' products for one packed panel:
 * FR_MR rows at a time, then the last M % FR_MR rows in one pass (a step
 * whose active samples are not a multiple of 4 runs them at the full rate,
 * not one latency-bound row at a time). AVX-512 only: panel_kernel_mr8's
 * leftover rows. */
__attribute__((target("avx512f"))) static void FR_(panel_kernel_mr4)(
    int64_t M, const FR_(term) *terms, int n_terms, int64_t r, real *C, int64_t ldc, int64_t w,
    int accumulate)
{
    for (; r + FR_MR <= M; r += FR_MR)
        FR_(panel_rows)(FR_MR, terms, n_terms, r, C + r * ldc, ldc, w, accumulate);
    switch (M - r) { /* constant row counts: the inlined loops unroll */
    case 3: FR_(panel_rows)(3, terms, n_terms, r, C + r * ldc, ldc, w, accumulate); break;
    case 2: FR_(panel_rows)(2, terms, n_terms, r, C + r * ldc, ldc, w, accumulate); break;
    case 1: FR_(panel_rows)(1, terms, n_terms, r, C + r * ldc, ldc, w, accumulate); break;
    default: break;
    }
}

/* AVX2 has 16 ymm registers, and a 64-byte FR_VEC is two of them: the 4-row
 * kernel's 8 accumulator vectors alone fill all 16, and gcc spilled them to
 * the stack at every k (its fma clone took 76% of a small LSTM's inference,
 * 40 ms against PyTorch's 2.7, on a Zen 3 core). Here a panel runs as two
 * halves of FR_VL columns (one FR_VEC each, two ymm), 6 rows at a time:
 * 12 accumulators, 2 weight vectors and a broadcast. Each output is still
 * one FMA chain from C's value or 0 over the terms' k in order, so the
 * results do not depend on the rows sharing a call. */
typedef real FR_(ymm) __attribute__((vector_size(32), aligned(sizeof(real))));
#define FR_YL ((int64_t)(32 / sizeof(real))) /* reals per ymm */
#define FR_AVX2_ROWS 6

/* Rows [r, r + n) (n <= FR_AVX2_ROWS), columns [off, off + hw) of the panel
 * (off: 0 or FR_VL, hw <= FR_VL valid ones); C points at row r. */
static inline __attribute__((always_inline)) void FR_(half_panel_rows)(
    int n, const FR_(term) *terms, int n_terms, int64_t r, int64_t off, real *C, int64_t ldc,
    int64_t hw, int accumulate)
{
    FR_(ymm) acc[FR_AVX2_ROWS][2];
    for (int i = 0; i < n; i++) {
        const real *c = C + i * ldc + off;
        if (accumulate && hw == FR_VL) { /* whole: straight into the registers */
            acc[i][0] = *(const FR_(ymm) *)c;
            acc[i][1] = *(const FR_(ymm) *)(c + FR_YL);
            continue;
        }
        real row[FR_VL];
        for (int64_t q = 0; q < FR_VL; q++) row[q] = accumulate && q < hw ? c[q] : 0;
        memcpy(&acc[i][0], row, sizeof acc[i][0]);
        memcpy(&acc[i][1], row + FR_YL, sizeof acc[i][1]);
    }
    for (int t = 0; t < n_terms; t++) {
        const real *A = terms[t].A + r * terms[t].lda, *P = terms[t].P + off;
        const int64_t lda = terms[t].lda;
        for (int64_t k = 0; k < terms[t].K; k++) {
            const FR_(ymm) b0 = *(const FR_(ymm) *)(P + k * FR_NR);
            const FR_(ymm) b1 = *(const FR_(ymm) *)(P + k * FR_NR + FR_YL);
            for (int i = 0; i < n; i++) {
                const real x = A[i * lda + k];
                acc[i][0] += x * b0;
                acc[i][1] += x * b1;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        real *c = C + i * ldc + off;
        if (hw == FR_VL) {
            *(FR_(ymm) *)c = acc[i][0];
            *(FR_(ymm) *)(c + FR_YL) = acc[i][1];
            continue;
        }
        real row[FR_VL];
        memcpy(row, &acc[i][0], sizeof acc[i][0]);
        memcpy(row + FR_YL, &acc[i][1], sizeof acc[i][1]);
        for (int64_t q = 0; q < hw; q++) c[q] = row[q];
    }
}

__attribute__((target("avx2,fma"))) static void FR_(panel_kernel_avx2)(
    int64_t M, const FR_(term) *terms, int n_terms, real *C, int64_t ldc, int64_t w,
    int accumulate)
{
    for (int64_t off = 0; off < w; off += FR_VL) {
        const int64_t hw = w - off < FR_VL ? w - off : FR_VL;
        int64_t r = 0;
        for (; r + FR_AVX2_ROWS <= M; r += FR_AVX2_ROWS)
            FR_(half_panel_rows)(FR_AVX2_ROWS, terms, n_terms, r, off, C + r * ldc, ldc, hw,
                                 accumulate);
#define FR_HALF_CASE(n)                                                                       \
    case n:                                                                                   \
        FR_(half_panel_rows)(n, terms, n_terms, r, off, C + r * ldc, ldc, hw, accumulate);    \
        break;
        switch (M - r) { /* constant row counts: the inlined loops unroll */
            FR_HALF_CASE(5)
            FR_HALF_CASE(4)
            FR_HALF_CASE(3)
            FR_HALF_CASE(2)
            FR_HALF_CASE(1)
        default: break;
        }
#undef FR_HALF_CASE
    }
}
#undef FR_YL

/* The same with 8 rows (16 accumulators) for AVX-512's 32 registers: about
 * 1.3x the 4-row kernel's rate on a Cascade Lake core. */
__attribute__((target("avx512f"))) static void FR_(panel_kernel_mr8)(
    int64_t M, const FR_(term) *terms, int n_terms, real *C, int64_t ldc, int64_t w,
    int accumulate)
{
    int64_t r = 0;
    for (; r + 8 <= M; r += 8) {
        /* Rows of C: gate rows the input projection wrote long before (in L3
         * or memory, one page apart in a dense call) that the sums start
         * from, or rows this kernel writes. The next block's are fetched
         * now, while this block's k loop runs (a panel's first block waits). */
        for (int64_t i = r ? r + 8 : 0; i < r + 16 && i < M; i++) {
            __builtin_prefetch(C + i * ldc, 1, 3);
            __builtin_prefetch(C + i * ldc + FR_VL, 1, 3);
            __builtin_prefetch(C + i * ldc + w - 1, 1, 3);
        }
        FR_(panel_rows)(8, terms, n_terms, r, C + r * ldc, ldc, w, accumulate);
    }
    if (r < M) FR_(panel_kernel_mr4)(M, terms, n_terms, r, C, ldc, w, accumulate);
}

static void FR_(panel_kernel)(int64_t M, const FR_(term) *terms, int n_terms, real *C,
                              int64_t ldc, int64_t w, int accumulate)
{
    if (fr_avx512_supported())
        FR_(panel_kernel_mr8)(M, terms, n_terms, C, ldc, w, accumulate);
    else /* the packed kernels run only where AVX2 and FMA do */
        FR_(panel_kernel_avx2)(M, terms, n_terms, C, ldc, w, accumulate);
}

/* The row layout: calls whose every row is a leftover row (batch < FR_MR:
 * batch-1 inference, generation) pack each thread's panels in groups of
 * FR_ROW_PANELS interleaved by k, so a step streams its weights in one
 * sequential pass; a last partial group stays panel by panel. Element (kk, q)
 * of panel p (of n_panels): */
#define FR_ROW_PANELS 4
static inline int64_t FR_(panel_at)(int64_t p, int64_t n_panels, int64_t K, int64_t kk,
                                    int row_layout)
{
    const int64_t g0 = p - p % FR_ROW_PANELS;
    if (!row_layout || g0 + FR_ROW_PANELS > n_panels) return (p * K + kk) * FR_NR;
    return (g0 * K + kk * FR_ROW_PANELS + p % FR_ROW_PANELS) * FR_NR;
}

/* Forward panels of a (G*H, K) weight: for gate k and units [jj, jj+w) of
 * [j0, j1), panel row kk holds W[k*H + jj + q, kk] for q < w (zeros beyond),
 * panel after panel or in the row layout. */
static void FR_(pack_forward)(const real *W, int64_t K, int64_t H, int64_t G, int64_t j0,
                              int64_t j1, real *P, int row_layout)
{
    const int64_t per_gate = (j1 - j0 + FR_NR - 1) / FR_NR;
    for (int64_t p = 0; p < G * per_gate; p++) {
        const int64_t jj = j0 + (p % per_gate) * FR_NR, w = j1 - jj < FR_NR ? j1 - jj : FR_NR;
        const real *rows = W + ((p / per_gate) * H + jj) * K;
        for (int64_t kk = 0; kk < K; kk++) {
            real *dst = P + FR_(panel_at)(p, G * per_gate, K, kk, row_layout);
            for (int64_t q = 0; q < w; q++) dst[q] = rows[q * K + kk];
            for (int64_t q = w; q < FR_NR; q++) dst[q] = 0;
        }
    }
}

/* R rows (R < FR_MR) against a group of NP panels in the row layout. Every
 * output is one FMA chain from C's value (accumulate) or 0 over k in order,
 * as panel_kernel's rows are, so a row's result is bit-identical whichever kernel computes it
 * (batch invariance); NP panels give 2*NP*R independent chains where one
 * panel leaves a batch-1 step waiting on the FMA latency of two. Inlined with
 * constant R and NP so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void FR_(rows_panels)(
    const int R, const int NP, int64_t K, const real *A, int64_t lda, const real *P,
    real *const *C, const int64_t *w, int64_t ldc, int accumulate)
{
    FR_VEC acc[FR_MR - 1][FR_ROW_PANELS][2];
    for (int r = 0; r < R; r++)
        for (int p = 0; p < NP; p++) {
            if (accumulate)
                FR_(load_row)(C[p] + r * ldc, &acc[r][p][0], &acc[r][p][1], w[p]);
            else
                acc[r][p][0] = acc[r][p][1] = (FR_VEC){0};
        }
    for (int64_t k = 0; k < K; k++)
        for (int p = 0; p < NP; p++) {
            const FR_VEC b0 = *(const FR_VEC *)(P + (k * NP + p) * FR_NR);
            const FR_VEC b1 = *(const FR_VEC *)(P + (k * NP + p) * FR_NR + FR_VL);
            for (int r = 0; r < R; r++) {
                const real x = A[r * lda + k];
                acc[r][p][0] += x * b0;
                acc[r][p][1] += x * b1;
            }
        }
    for (int r = 0; r < R; r++)
        for (int p = 0; p < NP; p++)
            FR_(store_row)(C[p] + r * ldc, &acc[r][p][0], &acc[r][p][1], w[p]);
}

/* rows_panels for AVX2's 16 registers: a panel is 4 ymm per row, so R rows
 * against NP panels (R * NP <= 3: 12 accumulators) of a group whose k-rows
 * hold `stride` panels. A group of FR_ROW_PANELS runs in passes over parts of
 * it (rows_group_avx2): each pass reads its own cache lines of every k-row,
 * so the group is still streamed once. The same FMA chains as rows_panels. */
static inline __attribute__((always_inline)) void FR_(rows_panels_avx2)(
    const int R, const int NP, int64_t K, const real *A, int64_t lda, const real *P, int stride,
    real *const *C, const int64_t *w, int64_t ldc, int accumulate)
{
    const int64_t yl = 32 / (int64_t)sizeof(real); /* reals per ymm */
    FR_(ymm) acc[3][2][4];
    for (int r = 0; r < R; r++)
        for (int p = 0; p < NP; p++) {
            real row[FR_NR];
            for (int64_t q = 0; q < FR_NR; q++)
                row[q] = accumulate && q < w[p] ? C[p][r * ldc + q] : 0;
            memcpy(acc[r][p], row, sizeof acc[r][p]);
        }
    for (int64_t k = 0; k < K; k++)
        for (int p = 0; p < NP; p++) {
            const real *b = P + (k * stride + p) * FR_NR;
            const FR_(ymm) b0 = *(const FR_(ymm) *)b, b1 = *(const FR_(ymm) *)(b + yl);
            const FR_(ymm) b2 = *(const FR_(ymm) *)(b + 2 * yl);
            const FR_(ymm) b3 = *(const FR_(ymm) *)(b + 3 * yl);
            for (int r = 0; r < R; r++) {
                const real x = A[r * lda + k];
                acc[r][p][0] += x * b0;
                acc[r][p][1] += x * b1;
                acc[r][p][2] += x * b2;
                acc[r][p][3] += x * b3;
            }
        }
    for (int r = 0; r < R; r++)
        for (int p = 0; p < NP; p++) {
            real row[FR_NR];
            memcpy(row, acc[r][p], sizeof acc[r][p]);
            for (int64_t q = 0; q < w[p]; q++) C[p][r * ldc + q] = row[q];
        }
}

/* R rows (R < FR_MR) against a group of np panels (FR_ROW_PANELS or 1), in
 * passes of as many panels as AVX2's registers take. */
static inline __attribute__((always_inline)) void FR_(rows_group_avx2)(
    int64_t R, int np, int64_t K, const real *A, int64_t lda, const real *panels,
    real *const *c, const int64_t *w, int64_t ldc, int accumulate)
{
    for (int p = 0; p < np;) {
        const real *P = panels + p * FR_NR;
        if (R == 1 && np - p >= 2) {
            FR_(rows_panels_avx2)(1, 2, K, A, lda, P, np, c + p, w + p, ldc, accumulate);
            p += 2;
            continue;
        }
        if (R == 1)
            FR_(rows_panels_avx2)(1, 1, K, A, lda, P, np, c + p, w + p, ldc, accumulate);
        else if (R == 2)
            FR_(rows_panels_avx2)(2, 1, K, A, lda, P, np, c + p, w + p, ldc, accumulate);
        else
            FR_(rows_panels_avx2)(3, 1, K, A, lda, P, np, c + p, w + p, ldc, accumulate);
        p++;
    }
}

/* C[0:R, panels] = (C or 0) + A[0:R] W^T over row-layout panels, FR_MR - 1 rows at a time
 * (24 of AVX-512's 32 registers at R = 3), for units [j0, j1) of every gate.
 * backwards: the panel groups in reverse order; alternating the direction
 * step by step finds the weights read last (still in L2) first. avx2: each
 * group through rows_group_avx2 (the body is inlined into one function per
 * instruction set). */
static inline __attribute__((always_inline)) void FR_(rows_apply_body)(
    int64_t R, int64_t K, const real *A, int64_t lda, const real *P, int64_t G, int64_t H,
    int64_t j0, int64_t j1, real *C, int64_t ldc, int accumulate, int backwards, const int avx2)
{
    const int64_t per_gate = (j1 - j0 + FR_NR - 1) / FR_NR, n_panels = G * per_gate;
    const int64_t n_full = n_panels / FR_ROW_PANELS, n_groups = n_full + n_panels % FR_ROW_PANELS;
    for (int64_t i = 0; i < n_groups; i++) {
        const int64_t group = backwards ? n_groups - 1 - i : i;
        const int64_t p0 = group < n_full ? group * FR_ROW_PANELS /* then single panels */
                                          : n_full * (FR_ROW_PANELS - 1) + group;
        const int np = group < n_full ? FR_ROW_PANELS : 1;
        real *c[FR_ROW_PANELS];
        int64_t w[FR_ROW_PANELS];
        for (int p = 0; p < np; p++) {
            const int64_t jj = j0 + ((p0 + p) % per_gate) * FR_NR;
            c[p] = C + ((p0 + p) / per_gate) * H + jj;
            w[p] = j1 - jj < FR_NR ? j1 - jj : FR_NR;
        }
        const real *panels = P + p0 * K * FR_NR;
        /* The outputs this group adds into (a row of the gates the input
         * projection wrote at the call's start: long gone from L1 and L2)
         * start their way now, not after the group's ~1 us of weights:
         * measured 1.01-1.04x at batch 1 and 3, neutral at 2 and in
         * generation (bench/NOTES.md row 27). */
        for (int p = 0; accumulate && p < np; p++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < w[p]; j += 64 / (int64_t)sizeof(real))
                    __builtin_prefetch(c[p] + r * ldc + j, 1, 3);
        if (avx2) {
            FR_(rows_group_avx2)(R, np, K, A, lda, panels, c, w, ldc, accumulate);
            continue;
        }
#define FR_ROWS_CASE(r, n)                                                                    \
    case (r) * 8 + (n):                                                                       \
        FR_(rows_panels)(r, n, K, A, lda, panels, c, w, ldc, accumulate);                     \
        break;
        switch (R * 8 + np) {
            FR_ROWS_CASE(1, FR_ROW_PANELS)
            FR_ROWS_CASE(2, FR_ROW_PANELS)
            FR_ROWS_CASE(3, FR_ROW_PANELS)
            FR_ROWS_CASE(1, 1)
            FR_ROWS_CASE(2, 1)
        default: FR_(rows_panels)(3, 1, K, A, lda, panels, c, w, ldc, accumulate); break;
        }
#undef FR_ROWS_CASE
    }
}

__attribute__((target("avx512f"))) static void FR_(rows_apply_avx512)(
    int64_t R, int64_t K, const real *A, int64_t lda, const real *P, int64_t G, int64_t H,
    int64_t j0, int64_t j1, real *C, int64_t ldc, int accumulate, int backwards)
{
    FR_(rows_apply_body)(R, K, A, lda, P, G, H, j0, j1, C, ldc, accumulate, backwards, 0);
}

__attribute__((target("avx2,fma"))) static void FR_(rows_apply_avx2)(
    int64_t R, int64_t K, const real *A, int64_t lda, const real *P, int64_t G, int64_t H,
    int64_t j0, int64_t j1, real *C, int64_t ldc, int accumulate, int backwards)
{
    FR_(rows_apply_body)(R, K, A, lda, P, G, H, j0, j1, C, ldc, accumulate, backwards, 1);
}

/* More than FR_MR - 1 rows: FR_MR - 1 at a time. */
static void FR_(rows_apply)(int64_t R, int64_t K, const real *A, int64_t lda, const real *P,
                            int64_t G, int64_t H, int64_t j0, int64_t j1, real *C, int64_t ldc,
                            int accumulate, int backwards)
{
    for (int64_t r = 0; r < R; r += FR_MR - 1) {
        const int64_t n = R - r < FR_MR - 1 ? R - r : FR_MR - 1;
        if (fr_avx512_supported())
            FR_(rows_apply_avx512)(n, K, A + r * lda, lda, P, G, H, j0, j1, C + r * ldc, ldc,
                                   accumulate, backwards);
        else
            FR_(rows_apply_avx2)(n, K, A + r * lda, lda, P, G, H, j0, j1, C + r * ldc, ldc,
                                 accumulate, backwards);
    }
}

/* C[:, k*H + j] = (C or 0) + the terms' products for units [j0, j1) of every
 * gate, from the panels pack_forward made for that range (blocked layout):
 * each term's panels follow one another, K of its rows each. */
static void FR_(terms_apply)(int64_t M, const FR_(term) *terms, int n_terms, int64_t G,
                             int64_t H, int64_t j0, int64_t j1, real *C, int64_t ldc,
                             int accumulate)
{
    FR_(term) at[2]; /* at most two terms (x_t W_ih^T, h W_hh^T) */
    int64_t panel = 0;
    for (int64_t k = 0; k < G; k++)
        for (int64_t jj = j0; jj < j1; jj += FR_NR, panel++) {
            for (int t = 0; t < n_terms; t++) {
                at[t] = terms[t];
                at[t].P = terms[t].P + panel * terms[t].K * FR_NR;
            }
            FR_(panel_kernel)(M, at, n_terms, C + k * H + jj, ldc,
                              j1 - jj < FR_NR ? j1 - jj : FR_NR, accumulate);
        }
}

/* C[:, k*H + j] = (C or 0) + A W^T for units [j0, j1) of every gate, from the
 * panels pack_forward made for that range (row_layout = how != FR_PANELS_BLOCKED). */
static void FR_(packed_apply)(int64_t M, int64_t K, const real *A, int64_t lda, const real *P,
                              int64_t G, int64_t H, int64_t j0, int64_t j1, real *C, int64_t ldc,
                              int accumulate, int how)
{
    if (how != FR_PANELS_BLOCKED) {
        FR_(rows_apply)(M, K, A, lda, P, G, H, j0, j1, C, ldc, accumulate,
                        how == FR_PANELS_ROWS_BACKWARDS);
        return;
    }
    const FR_(term) term = {K, A, lda, P};
    FR_(terms_apply)(M, &term, 1, G, H, j0, j1, C, ldc, accumulate);
}

/* Backward panels: for units [jj, jj+w) of [j0, j1), panel row k (of G*H)
 * holds W_hh[k, jj + q]. */
static void FR_(pack_backward)(const real *W_hh, int64_t H, int64_t GH, int64_t j0, int64_t j1,
                               real *P)
{
    for (int64_t jj = j0; jj < j1; jj += FR_NR, P += GH * FR_NR) {
        int64_t w = j1 - jj < FR_NR ? j1 - jj : FR_NR;
        for (int64_t k = 0; k < GH; k++) {
            for (int64_t q = 0; q < w; q++) P[k * FR_NR + q] = W_hh[k * H + jj + q];
            for (int64_t q = w; q < FR_NR; q++) P[k * FR_NR + q] = 0;
        }
    }
}

/* Elements of the panels of a (G*units, K) weight packed by gate and unit
 * slice: every thread's slice rounded up to whole panels. */
static int64_t FR_(panels_size)(int64_t G, int64_t units, int64_t K, int nth)
{
    return G * (units / FR_NR + nth) * K * FR_NR;
}

/* Where the panels of the slice starting at unit j0 begin (NULL: none). */
static real *FR_(own_panels)(real *packed, int64_t G, int64_t K, int64_t j0)
{
    return packed ? packed + G * (j0 / FR_NR) * K * FR_NR : NULL;
}
#else
static int64_t FR_(panels_size)(int64_t G, int64_t units, int64_t K, int nth)
{
    (void)G; (void)units; (void)K; (void)nth;
    return 0;
}
static real *FR_(own_panels)(real *packed, int64_t G, int64_t K, int64_t j0)
{
    (void)packed; (void)G; (void)K; (void)j0;
    return NULL;
}
#endif

/* Packed weights of one call, allocated once outside the parallel region
 * (freed by fr_aligned_free); NULL where the packed kernels are unavailable
 * (the steps call BLAS). */
static int FR_(alloc_panels)(int64_t n_elems, real **packed)
{
    *packed = NULL;
    if (!fr_packed_supported() || n_elems <= 0) return FR_OK;
    *packed = (real *)fr_aligned_malloc((size_t)n_elems * sizeof(real));
    return *packed ? FR_OK : FR_ERR_NOMEM;
}

/* Point each named region at its slice of ws, in the order its sizes list. */
static void FR_(point_regions)(real **const *regions, const int64_t *sizes, int n, real *ws)
{
    for (int r = 0; r < n; r++) {
        *regions[r] = sizes[r] ? ws : NULL;
        ws += sizes[r];
    }
}


/* Threads: one OpenMP region spans the whole time loop. Each thread owns a
 * slice of the hidden units (all gates of those units), runs its own
 * single-threaded GEMMs for that slice and its part of the fused pass, and
 * waits at one barrier per step. BLAS must be single-threaded meanwhile (the
 * Python layer sees to it): one pool of threads, no fork per step. The
 * *_team functions below are the bodies of those regions (their barriers
 * bind to the caller's region). */

/* ----- forward ------------------------------------------------------------------- */

/* The forward workspace's named regions (sizes: fr_forward_sizes). Rows are
 * the plan's (fr_plan in rnn.c): gate rows and state rows. */
typedef struct {
    real *gates; /* (gate rows, G*H): projected, then activated gates */
    real *h, *c; /* state entering each step (training: per state row), or two (B, H) buffers */
    real *aux;   /* LSTM tanh(c_t), GRU W_hn h + b_hn: per state row, or one step's */
    real *gh;    /* GRU: (B, G*H) W_hh h of the current step */
    real *x;     /* ragged training: X's valid rows in state-row order, for dW_ih */
} FR_(forward_ws);

static void FR_(point_forward_ws)(FR_(forward_ws) *w, const fr_shape *s, int training, real *ws)
{
    int64_t sizes[FR_FORWARD_REGIONS];
    fr_forward_sizes(s, training, sizes);
    real **const regions[FR_FORWARD_REGIONS] = {&w->gates, &w->h, &w->c, &w->aux, &w->gh,
                                                &w->x};
    FR_(point_regions)(regions, sizes, FR_FORWARD_REGIONS, ws);
}

/* One forward layer call: its arguments, plan, workspace and packed W_hh. */
typedef struct {
    const fr_blas *blas;
    const fr_shape *s;
    const real *X, *W_ih, *W_hh, *b_ih, *b_hh;
    real *Y, *hN, *cN;
    int64_t ldy;
    int training;
    fr_plan plan;
    FR_(forward_ws) w;
    real *packed;   /* W_hh in panels, or NULL: the steps call BLAS */
    real *packed_ih; /* W_ih in panels (blocked layout, the same slices), after W_hh's */
    int row_layout; /* packed in the row layout (fr_row_layout) */
    int prepacked;  /* packed is the caller's (fr_pack_recurrent): pack nothing, free nothing */
    fr_layer_team team;
    volatile int *stop; /* fr_team_stop's slots */
    int watched;        /* the caller watches for stop requests (by rows: fr_rows_stop) */
} FR_(forward_call);

static int FR_(forward_check)(const fr_blas *blas, const fr_shape *s, const real *X,
                              const real *W_ih, const real *W_hh, const real *b_ih,
                              const real *b_hh, const real *Y, int64_t ldy, const real *hN,
                              const real *cN, const real *ws)
{
    int rc = fr_check_shape(s, ldy);
    if (rc != FR_OK) return rc;
    if (!blas || !blas->FR_GEMM || !X || !W_ih || !W_hh || !b_ih || !b_hh || !Y || !hN || !ws ||
        (s->cell == FR_LSTM && !cN))
        return FR_ERR_ARG;
    return FR_OK;
}

/* The state entering step `step` for sorted sample 0 (c: the cell state),
 * and the stride between samples; NULL past the last step (every sample's
 * final state goes to hN, cN). */
static real *FR_(forward_state)(const FR_(forward_call) *f, int64_t step, real **c,
                                int64_t *stride)
{
    const int64_t H = f->s->hidden;
    *c = NULL;
    if (step >= f->plan.n_steps) return NULL;
    const int64_t at = f->training ? fr_plan_state_row(&f->plan, step, 0) * H
                                   : (step & 1) * f->s->batch * H;
    *stride = f->training ? f->plan.sample_rows * H : H;
    *c = f->w.c ? f->w.c + at : NULL;
    return f->w.h + at;
}

/* h0/c0 -> the state entering each sample's first step; a sample with no
 * step keeps it as its final state. */
static void FR_(forward_init_state)(const FR_(forward_call) *f, const real *h0, const real *c0)
{
    const fr_shape *s = f->s;
    const int64_t H = s->hidden;
    for (int64_t i = 0; i < s->batch; i++) {
        const int64_t b = fr_plan_sample(&f->plan, i), n = fr_clamped_length(s, b);
        real *h = f->hN + b * H, *c = f->cN ? f->cN + b * H : NULL;
        int64_t stride = 0;
        if (n > 0) {
            h = FR_(forward_state)(f, fr_plan_first_step(s, &f->plan, n), &c, &stride);
            h += i * stride;
            c = c ? c + i * stride : NULL;
        }
        FR_(copy_rows)(h, H, h0 ? h0 + b * H : NULL, 1, H);
        if (s->cell == FR_LSTM) FR_(copy_rows)(c, H, c0 ? c0 + b * H : NULL, 1, H);
    }
}

/* Rows of the input projection a call's packed kernel takes at a time: 64
 * rows of X (32 KiB at I=128) stay in L1/L2 while every panel of W_ih passes. */
#define FR_PROJECT_ROWS 64

/* C (M, G*H) = A W_ih^T: on W_ih's panels, slice by slice (the sums a fused
 * step continues, rnn.c's fr_fused_projection), or through BLAS. */
static void FR_(project_rows)(const FR_(forward_call) *f, int64_t M, const real *A, real *C,
                              int64_t ldc)
{
    const fr_shape *s = f->s;
    const int64_t I = s->inputs, H = s->hidden, G = fr_gates(s->cell);
#if FR_HAVE_PACKED
    if (f->packed_ih) {
        for (int64_t r = 0; r < M; r += FR_PROJECT_ROWS)
            for (int sl = 0; sl < f->team.slices; sl++) {
                int64_t j0, j1;
                fr_split(H, f->team.slices, sl, FR_UNIT_ALIGN, &j0, &j1);
                const FR_(term) term = {I, A + r * I, I, FR_(own_panels)(f->packed_ih, G, I, j0)};
                if (j1 > j0)
                    FR_(terms_apply)(M - r < FR_PROJECT_ROWS ? M - r : FR_PROJECT_ROWS, &term, 1,
                                     G, H, j0, j1, C + r * ldc, ldc, 0);
            }
        return;
    }
#endif
    FR_(gemm_rm)(f->blas, 0, 1, M, G * H, I, 1, A, I, f->W_ih, I, 0, C, ldc);
}

/* gates = X W_ih^T for this thread's share of the rows. Ragged: X's valid
 * rows gathered in state-row order (a training call keeps them for dW_ih, a
 * fused projection reads them step by step), then either one GEMM over them
 * onto step-major gates or, through BLAS, one GEMM per sample over its valid
 * steps (shaped as if it ran alone) onto the gate grid
 * (fr_gathered_projection). A fused call projects nothing here. */
static void FR_(forward_project)(const FR_(forward_call) *f, int tid, int nt)
{
    const fr_shape *s = f->s;
    const int64_t I = s->inputs, GH = fr_gates(s->cell) * s->hidden, T = s->steps;
    int64_t r0, r1;
    fr_split_at_least(f->plan.n_rows, nt, tid, fr_projection_rows_least(s), &r0, &r1);
    for (int64_t r = r0; f->plan.order && f->w.x && r < r1; r++)
        memcpy(f->w.x + r * I, f->X + f->plan.x_row[r] * I, (size_t)I * sizeof(real));
    if (f->plan.fused) return;
    if (!f->plan.order || f->plan.gathered) {
        const real *X = f->plan.order ? f->w.x : f->X;
        FR_(project_rows)(f, r1 - r0, X + r0 * I, f->w.gates + r0 * GH, GH);
        return;
    }
    for (int64_t i = tid; i < s->batch; i += nt) { /* sorted by length: deal them round */
        const int64_t b = f->plan.order[i];
        FR_(gemm_rm)(f->blas, 0, 1, fr_clamped_length(s, b), GH, I, 1, f->X + b * T * I, I,
                     f->W_ih, I, 0, f->w.gates + i * GH, s->batch * GH);
    }
}

/* Y's padding rows (past each sample's length) are 0: units [j0, j1). */
static void FR_(forward_zero_padding)(const FR_(forward_call) *f, int64_t j0, int64_t j1)
{
    const fr_shape *s = f->s;
    for (int64_t b = 0; f->plan.order && b < s->batch; b++)
        for (int64_t t = fr_clamped_length(s, b); t < s->steps; t++)
            memset(f->Y + (b * s->steps + t) * f->ldy + j0, 0, (size_t)(j1 - j0) * sizeof(real));
}

/* Sorted sample i's input row at `step`, and the stride to sample i + 1's. */
static const real *FR_(forward_x)(const FR_(forward_call) *f, int64_t step, int64_t i,
                                  int64_t *stride)
{
    const fr_shape *s = f->s;
    const int64_t I = s->inputs;
    if (f->plan.order) { /* gathered in state-row order: the step's rows follow one another */
        *stride = I;
        return f->w.x + fr_plan_state_row(&f->plan, step, i) * I;
    }
    *stride = s->steps * I;
    return f->X + (i * s->steps + fr_plan_time(s, &f->plan, step)) * I;
}

/* gates[step][rows i0..i1, units j0..j1] += h_prev W_hh^T (GRU: into w.gh,
 * overwritten); a fused call's gates = x_t W_ih^T + h_prev W_hh^T. hp is row
 * i0's state; panels (W_hh's) and panels_ih are this slice's. */
static void FR_(forward_recurrent)(const FR_(forward_call) *f, int64_t step, const real *hp,
                                   int64_t s_hp, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                                   const real *panels, const real *panels_ih)
{
    const fr_shape *s = f->s;
    const int gru = s->cell == FR_GRU;
    const int64_t M = i1 - i0, H = s->hidden, G = fr_gates(s->cell), GH = G * H;
    const int64_t ldc = gru ? GH : f->plan.gate_sample * GH;
    real *c_base = (gru ? f->w.gh : f->w.gates + fr_plan_gate_row(&f->plan, step, 0) * GH) +
                   i0 * ldc;
#if FR_HAVE_PACKED
    if (f->plan.fused) {
        int64_t s_x;
        const real *x = FR_(forward_x)(f, step, i0, &s_x);
        const FR_(term) terms[2] = {{s->inputs, x, s_x, panels_ih}, {H, hp, s_hp, panels}};
        FR_(terms_apply)(M, terms, 2, G, H, j0, j1, c_base, ldc, 0);
        return;
    }
    if (panels) {
        const int how = !f->row_layout ? FR_PANELS_BLOCKED
                        : step & 1     ? FR_PANELS_ROWS_BACKWARDS : FR_PANELS_ROWS;
        FR_(packed_apply)(M, H, hp, s_hp, panels, G, H, j0, j1, c_base, ldc, !gru, how);
        return;
    }
#else
    (void)panels; (void)panels_ih;
#endif
    for (int64_t k = 0; k < G; k++)
        FR_(gemm_rm)(f->blas, 0, 1, M, j1 - j0, H, 1, hp, s_hp, f->W_hh + (k * H + j0) * H, H,
                     gru ? 0 : 1, c_base + k * H + j0, ldc);
}

/* The fused pass of sorted sample i at `step`, units [j0, j1): the next state
 * goes to the next step's row, or to hN/cN at the sample's last step. */
static void FR_(forward_row)(const FR_(forward_call) *f, int64_t step, int64_t i,
                             const real *hp, const real *cp, real *hn, real *cn, int64_t j0,
                             int64_t j1)
{
    const fr_shape *s = f->s;
    const int lstm = s->cell == FR_LSTM, gru = s->cell == FR_GRU, relu = s->cell == FR_RNN_RELU;
    const int64_t H = s->hidden, GH = fr_gates(s->cell) * H, nj = j1 - j0;
    const int64_t b = fr_plan_sample(&f->plan, i), t = fr_plan_time(s, &f->plan, step);
    const int64_t row = fr_plan_state_row(&f->plan, step, i);
    real *g = f->w.gates + fr_plan_gate_row(&f->plan, step, i) * GH + j0;
    real *y = f->Y + (b * s->steps + t) * f->ldy + j0;
    real *aux = f->w.aux ? f->w.aux + (f->training ? row : i) * H + j0 : NULL;
    if (step == fr_plan_last_step(s, &f->plan, fr_clamped_length(s, b))) {
        hn = f->hN + b * H;
        cn = lstm ? f->cN + b * H : NULL;
    }
    if (lstm) /* inference keeps neither the activated gates nor tanh(c) (GRU: nor a) */
        FR_(lstm_forward_row)(nj, H, g, f->b_ih + j0, f->b_hh + j0, cp + j0, hn + j0, cn + j0, y,
                              f->training ? aux : NULL);
    else if (gru)
        FR_(gru_forward_row)(nj, H, g, f->w.gh + i * GH + j0, f->b_ih + j0, f->b_hh + j0, hp + j0,
                             hn + j0, y, f->training ? aux : NULL);
    else
        FR_(rnn_forward_row)(nj, relu, g, f->b_ih + j0, f->b_hh + j0, hn + j0, y);
}

/* One step for active sorted samples [i0, i1) and units [j0, j1): the
 * recurrent GEMM, then the fused pass. */
static void FR_(forward_step)(const FR_(forward_call) *f, int64_t step, int64_t i0, int64_t i1,
                              int64_t j0, int64_t j1, const real *panels, const real *panels_ih)
{
    const int lstm = f->s->cell == FR_LSTM;
    real *cp, *cn;
    int64_t s_hp = 0, s_hn = 0;
    const real *hp = FR_(forward_state)(f, step, &cp, &s_hp);
    real *hn = FR_(forward_state)(f, step + 1, &cn, &s_hn);
    if (j1 <= j0 || i1 <= i0) return;
    FR_(forward_recurrent)(f, step, hp + i0 * s_hp, s_hp, i0, i1, j0, j1, panels, panels_ih);
    for (int64_t i = i0; i < i1; i++)
        FR_(forward_row)(f, step, i, hp + i * s_hp, lstm ? cp + i * s_hp : NULL,
                         hn ? hn + i * s_hn : NULL, cn ? cn + i * s_hn : NULL, j0, j1);
}

/* Split by units: every step, this thread's slice of units for its rows
 * (every active sample, or its group's blocks: fr_team_rows), then a barrier
 * (the next step reads every unit of h). */
static void FR_(forward_by_units)(const FR_(forward_call) *f, int tid, int64_t j0, int64_t j1,
                                  const real *panels, const real *panels_ih)
{
    const fr_team_blocks rows = fr_team_rows(f->team, tid);
    for (int64_t step = 0; step < f->plan.n_steps; step++) {
        if (fr_team_stop(f->stop, step)) break;
        const int64_t active = f->plan.active[step];
        for (int64_t i0 = rows.first; i0 < active; i0 += rows.stride)
            FR_(forward_step)(f, step, i0, fr_block_end(i0, rows.size, active), j0, j1, panels,
                              panels_ih);
#pragma omp barrier
    }
}

/* Split by rows (fr_team_for): this thread's blocks of samples, all units,
 * no barrier. */
static void FR_(forward_by_rows)(const FR_(forward_call) *f, int tid, int nt)
{
    const int64_t H = f->s->hidden, stride = (int64_t)nt * FR_ROW_BLOCK;
    for (int64_t step = 0; step < f->plan.n_steps; step++) {
        if (fr_rows_stop(f->watched)) break;
        const int64_t active = f->plan.active[step];
        for (int64_t i0 = tid * FR_ROW_BLOCK; i0 < active; i0 += stride)
            FR_(forward_step)(f, step, i0, fr_block_end(i0, FR_ROW_BLOCK, active), 0, H, f->packed,
                              f->packed_ih);
    }
}

/* The parallel region: pack W_ih and W_hh (each slice by one thread), project
 * (each thread its rows, every slice's panels), step loop. */
static void FR_(forward_team)(const FR_(forward_call) *f)
{
    const fr_shape *s = f->s;
    const int64_t G = fr_gates(s->cell), H = s->hidden, I = s->inputs;
    const int tid = fr_thread_id(), nt = fr_team();
    int64_t j0, j1;
    fr_split(H, nt, tid, FR_UNIT_ALIGN, &j0, &j1);
    FR_(forward_zero_padding)(f, j0, j1);
    fr_team_slice(f->team, tid, H, &j0, &j1);
#if FR_HAVE_PACKED
    if (f->packed && !f->prepacked && j1 > j0) {
        FR_(pack_forward)(f->W_hh, H, H, G, j0, j1, FR_(own_panels)(f->packed, G, H, j0),
                          f->row_layout);
        FR_(pack_forward)(f->W_ih, I, H, G, j0, j1, FR_(own_panels)(f->packed_ih, G, I, j0), 0);
    }
#pragma omp barrier
#endif
    FR_(forward_project)(f, tid, nt);
#pragma omp barrier
    if (f->team.by_rows) {
        FR_(forward_by_rows)(f, tid, nt);
        return;
    }
    fr_team_units(f->team, tid, H, &j0, &j1);
    FR_(forward_by_units)(f, tid, j0, j1, FR_(own_panels)(f->packed, G, H, j0),
                          FR_(own_panels)(f->packed_ih, G, I, j0));
}

/* Elements of a pack's header (fr_pack_header, rounded up), and of the gap
 * after it that lets the panels start on a cache line. */
#define FR_PACK_HEADER_REALS ((int64_t)((sizeof(fr_pack_header) + sizeof(real) - 1) / sizeof(real)))
#define FR_PACK_GAP_REALS ((int64_t)(FR_PANEL_ALIGN / sizeof(real)))

/* Where the panels of a pack at `pack` start: the first cache line after its
 * header (a pack without panels has no gap). */
static int64_t FR_(pack_panels_at)(const real *pack)
{
    return FR_PACK_HEADER_REALS +
           (int64_t)(fr_to_line((uintptr_t)(pack + FR_PACK_HEADER_REALS)) / sizeof(real));
}

/* Elements of W_hh's panels in a call's panels (W_ih's follow them). */
static int64_t FR_(hh_panels_size)(const fr_shape *s, int slices)
{
    return FR_(panels_size)(fr_gates(s->cell), s->hidden, s->hidden, slices);
}

/* What a pack of W_ih and W_hh for calls of shape s on n_threads holds (the
 * team size and layout the forward would choose). */
static void FR_(pack_header)(const fr_shape *s, const real *W_ih, const real *W_hh,
                             int n_threads, fr_pack_header *h)
{
    const int64_t G = fr_gates(s->cell), H = s->hidden;
    memset(h, 0, sizeof *h);
    h->magic = FR_PACK_MAGIC;
    h->real_size = sizeof(real);
    h->cell = s->cell;
    h->hidden = H;
    h->row_layout = fr_row_layout(s->batch);
    h->slices = fr_team_slices(fr_team_for(n_threads, s, sizeof(real)));
    h->n_elems = fr_packed_supported() ? FR_(hh_panels_size)(s, (int)h->slices) +
                                             FR_(panels_size)(G, H, s->inputs, (int)h->slices)
                                       : 0;
    h->weights = (int64_t)(intptr_t)W_hh;
    h->weights_ih = (int64_t)(intptr_t)W_ih;
}

int64_t FR_(fr_pack_recurrent_size)(const fr_shape *s, int n_threads)
{
    if (fr_check_shape(s, s ? s->hidden : 0) != FR_OK) return -1;
    fr_pack_header h;
    FR_(pack_header)(s, NULL, NULL, n_threads, &h);
    return FR_PACK_HEADER_REALS + (h.n_elems ? FR_PACK_GAP_REALS : 0) + h.n_elems;
}

int64_t FR_(fr_pack_recurrent_key)(const fr_shape *s, int n_threads)
{
    if (fr_check_shape(s, s ? s->hidden : 0) != FR_OK) return -1;
    fr_pack_header h;
    FR_(pack_header)(s, NULL, NULL, n_threads, &h);
    return 2 * h.slices + h.row_layout;
}

int FR_(fr_pack_recurrent)(const fr_shape *s, const real *W_ih, const real *W_hh, real *pack,
                           int64_t n_pack, int n_threads)
{
    int rc = fr_check_shape(s, s ? s->hidden : 0);
    if (rc != FR_OK) return rc;
    if (!W_ih || !W_hh || !pack) return FR_ERR_ARG;
    fr_pack_header h;
    FR_(pack_header)(s, W_ih, W_hh, n_threads, &h);
    h.panels_at = h.n_elems ? FR_(pack_panels_at)(pack) : FR_PACK_HEADER_REALS;
    if (n_pack < h.panels_at + h.n_elems) return FR_ERR_ARG;
#if FR_HAVE_PACKED
    const int64_t G = fr_gates(s->cell), H = s->hidden, I = s->inputs;
    real *ih = pack + h.panels_at + FR_(hh_panels_size)(s, (int)h.slices);
    for (int tid = 0; tid < h.slices && h.n_elems; tid++) {
        int64_t j0, j1;
        fr_split(H, (int)h.slices, tid, FR_UNIT_ALIGN, &j0, &j1);
        if (j1 <= j0) continue;
        FR_(pack_forward)(W_hh, H, H, G, j0, j1, FR_(own_panels)(pack + h.panels_at, G, H, j0),
                          h.row_layout);
        FR_(pack_forward)(W_ih, I, H, G, j0, j1, FR_(own_panels)(ih, G, I, j0), 0);
    }
#endif
    memcpy(pack, &h, sizeof h);
    return FR_OK;
}

/* f's panels: the caller's pack when it was made for this very call (see
 * fr_pack_header), else a buffer of its own to pack into. */
static int FR_(forward_panels)(FR_(forward_call) *f, const real *pack, int64_t n_pack,
                               int n_threads)
{
    fr_pack_header want, have;
    FR_(pack_header)(f->s, f->W_ih, f->W_hh, n_threads, &want);
    int rc = FR_OK;
    if (pack && !f->training && n_pack >= FR_PACK_HEADER_REALS) {
        memcpy(&have, pack, sizeof have);
        want.panels_at = have.panels_at; /* wherever they start (checked next) */
        if (!memcmp(&have, &want, sizeof want) && have.panels_at >= FR_PACK_HEADER_REALS &&
            n_pack >= have.panels_at + want.n_elems) {
            f->prepacked = 1;
            f->packed = want.n_elems ? (real *)pack + have.panels_at : NULL;
        }
    }
    if (!f->prepacked) rc = FR_(alloc_panels)(want.n_elems, &f->packed);
    if (f->packed) f->packed_ih = f->packed + FR_(hh_panels_size)(f->s, (int)want.slices);
    return rc;
}

int FR_(fr_forward_packed)(const fr_blas *blas, const fr_shape *s, const real *X,
                           const real *W_ih, const real *W_hh, const real *b_ih,
                           const real *b_hh, const real *h0, const real *c0, real *Y,
                           int64_t ldy, real *hN, real *cN, real *ws, int training,
                           int n_threads, const real *pack, int64_t n_pack)
{
    int rc = FR_(forward_check)(blas, s, X, W_ih, W_hh, b_ih, b_hh, Y, ldy, hN, cN, ws);
    if (rc != FR_OK) return rc;
    FR_(forward_call) f = {blas, s, X, W_ih, W_hh, b_ih, b_hh, Y, hN, cN, ldy, training};
    volatile int stop[2] = {0, 0};
    f.stop = stop;
    f.watched = fr_watching;
    FR_(point_forward_ws)(&f.w, s, training, ws);
    f.team = fr_team_for(n_threads, s, sizeof(real));
    f.row_layout = fr_row_layout(s->batch);
    if ((rc = fr_plan_make(s, training, sizeof(real), &f.plan)) != FR_OK) return rc;
    FR_(forward_init_state)(&f, h0, c0);
    rc = FR_(forward_panels)(&f, pack, n_pack, n_threads);
    if (rc == FR_OK) {
#pragma omp parallel num_threads(f.team.nth) if (f.team.nth > 1)
        FR_(forward_team)(&f);
    }
    if (!f.prepacked) fr_aligned_free(f.packed);
    fr_plan_free(&f.plan);
    if (rc != FR_OK) return rc;
    return fr_should_stop() ? FR_STOPPED : FR_OK;
}

int FR_(fr_forward)(const fr_blas *blas, const fr_shape *s, const real *X, const real *W_ih,
                    const real *W_hh, const real *b_ih, const real *b_hh, const real *h0,
                    const real *c0, real *Y, int64_t ldy, real *hN, real *cN, real *ws,
                    int training, int n_threads)
{
    return FR_(fr_forward_packed)(blas, s, X, W_ih, W_hh, b_ih, b_hh, h0, c0, Y, ldy, hN, cN,
                                  ws, training, n_threads, NULL, 0);
}

/* ----- backward ------------------------------------------------------------------ */

/* The backward scratch's named regions (sizes: fr_backward_sizes). */
typedef struct {
    real *dgx;    /* (rows, G*H) gate gradients fed to W_ih, X and b_ih */
    real *dgh;    /* the same fed to W_hh, h and b_hh (GRU only; else dgx itself) */
    real *dx;     /* ragged: dX's valid rows in row order, before the scatter */
    real *dh, *dc; /* ragged: the running dh, dc (B, H) in sorted order */
    real *xh, *dw; /* fr_joint_dw: rows [X | h] (rows, I+H), and dG^T [X | h] (G*H, I+H) */
} FR_(backward_ws);

static void FR_(point_backward_ws)(FR_(backward_ws) *w, const fr_shape *s, real *bws)
{
    int64_t sizes[FR_BACKWARD_REGIONS];
    fr_backward_sizes(s, sizes);
    real **const regions[FR_BACKWARD_REGIONS] = {&w->dgx, &w->dgh, &w->dx, &w->dh, &w->dc,
                                                 &w->xh, &w->dw};
    FR_(point_regions)(regions, sizes, FR_BACKWARD_REGIONS, bws);
    if (!w->dgh) w->dgh = w->dgx; /* LSTM and RNN: one gate gradient for both */
}

/* One backward layer call. dh, dc (B, H) carry the running gradient of the
 * state through the loop in the plan's order (dense: they are dh0, dc0). */
typedef struct {
    const fr_blas *blas;
    const fr_shape *s;
    const real *X, *W_ih, *W_hh, *dY;
    int64_t ldy;
    real *dX;
    int accumulate_dx;
    real *dW_ih, *dW_hh, *db_ih, *db_hh, *dh0, *dc0;
    real *dh, *dc;
    fr_plan plan;
    FR_(forward_ws) fw; /* the training forward's regions, read only */
    FR_(backward_ws) w;
    real *packed;       /* W_hh in backward panels, or NULL: BLAS */
    fr_layer_team team;
    volatile int *stop; /* fr_team_stop's slots */
    int watched;        /* the caller watches for stop requests (by rows: fr_rows_stop) */
} FR_(backward_call);

static int FR_(backward_check)(const fr_blas *blas, const fr_shape *s, const real *X,
                               const real *W_ih, const real *W_hh, const real *ws,
                               const real *dY, int64_t ldy, const real *dW_ih,
                               const real *dW_hh, const real *db_ih, const real *db_hh,
                               const real *dh0, const real *dc0, const real *bws)
{
    int rc = fr_check_shape(s, dY ? ldy : s ? s->hidden : 0);
    if (rc != FR_OK) return rc;
    if (!blas || !blas->FR_GEMM || !X || !W_ih || !W_hh || !ws || !dh0 || !bws ||
        (s->cell == FR_LSTM && !dc0))
        return FR_ERR_ARG;
    /* the weight and bias gradients come all together or not at all (dX only) */
    const int n_grads = !!dW_ih + !!dW_hh + !!db_ih + !!db_hh;
    return n_grads == 0 || n_grads == 4 ? FR_OK : FR_ERR_ARG;
}

/* dst row i = src row order[i] (gather) or dst row order[i] = src row i
 * (scatter), (B, H) each; a NULL src reads zeros. */
static void FR_(permute_rows)(real *dst, const real *src, const int64_t *order, int64_t B,
                              int64_t H, int scatter)
{
    for (int64_t i = 0; i < B; i++) {
        const int64_t d = scatter ? order[i] : i, r = scatter ? i : order[i];
        FR_(copy_rows)(dst + d * H, H, src ? src + r * H : NULL, 1, H);
    }
}

/* dh, dc start as dhN, dcN (in the plan's order). */
static void FR_(backward_init_state)(FR_(backward_call) *bc, const real *dhN, const real *dcN)
{
    const int64_t B = bc->s->batch, H = bc->s->hidden;
    const int lstm = bc->s->cell == FR_LSTM;
    bc->dh = bc->plan.order ? bc->w.dh : bc->dh0;
    bc->dc = bc->plan.order ? bc->w.dc : bc->dc0;
    if (!bc->plan.order) {
        FR_(copy_rows)(bc->dh, H, dhN, B, H);
        if (lstm) FR_(copy_rows)(bc->dc, H, dcN, B, H);
        return;
    }
    FR_(permute_rows)(bc->dh, dhN, bc->plan.order, B, H, 0);
    if (lstm) FR_(permute_rows)(bc->dc, dcN, bc->plan.order, B, H, 0);
}

/* Sorted sample i at `step`, units [j0, j1): add dY, then the fused pass
 * writes the gate gradients and the part of dh (dc) that does not go through
 * W_hh. */
static void FR_(backward_row)(const FR_(backward_call) *bc, int64_t step, int64_t i, int64_t j0,
                              int64_t j1)
{
    const fr_shape *s = bc->s;
    const int lstm = s->cell == FR_LSTM, gru = s->cell == FR_GRU, relu = s->cell == FR_RNN_RELU;
    const int64_t H = s->hidden, G = fr_gates(s->cell), GH = G * H, nj = j1 - j0;
    const int64_t b = fr_plan_sample(&bc->plan, i), row = fr_plan_state_row(&bc->plan, step, i);
    real *dh = bc->dh + i * H + j0;
    real *dgx_b = bc->w.dgx + row * GH + j0, *dgh_b = bc->w.dgh + row * GH + j0;
    if (bc->dY) {
        const int64_t t = fr_plan_time(s, &bc->plan, step);
        const real *dy = bc->dY + (b * s->steps + t) * bc->ldy + j0;
        for (int64_t j = 0; j < nj; j++) dh[j] += dy[j];
    }
    const real *g = bc->fw.gates + fr_plan_gate_row(&bc->plan, step, i) * GH + j0;
    const real *aux = bc->fw.aux ? bc->fw.aux + row * H + j0 : NULL;
    if (lstm)
        FR_(lstm_backward_row)(nj, H, g, aux, bc->fw.c + row * H + j0, dh, bc->dc + i * H + j0,
                               dgx_b);
    else if (gru)
        FR_(gru_backward_row)(nj, H, g, aux, bc->fw.h + row * H + j0, dh, dgx_b, dgh_b);
    else
        FR_(rnn_backward_row)(nj, relu, g, dh, dgx_b);
}

/* dh[i0:i1, j0:j1] += dG_step[i0:i1] W_hh[:, j0:j1]: reads every unit's dG. */
static void FR_(backward_recurrent)(const FR_(backward_call) *bc, int64_t step, int64_t i0,
                                    int64_t i1, int64_t j0, int64_t j1, const real *panels)
{
    const fr_shape *s = bc->s;
    const int64_t M = i1 - i0, H = s->hidden, GH = fr_gates(s->cell) * H;
    const int64_t ld = bc->plan.sample_rows * GH;
    const real *dg = bc->w.dgh + fr_plan_state_row(&bc->plan, step, 0) * GH + i0 * ld;
    real *dh = bc->dh + i0 * H;
    if (M <= 0) return;
#if FR_HAVE_PACKED
    if (panels) {
        FR_(term) term = {GH, dg, ld, panels};
        for (int64_t jj = j0; jj < j1; jj += FR_NR, term.P += GH * FR_NR)
            FR_(panel_kernel)(M, &term, 1, dh + jj, H, j1 - jj < FR_NR ? j1 - jj : FR_NR, 1);
        return;
    }
#else
    (void)panels;
#endif
    FR_(gemm_rm)(bc->blas, 0, 0, M, j1 - j0, GH, 1, dg, ld, bc->W_hh + j0, H, 1, dh + j0, H);
}

/* dX = dG W_ih for this thread's rows; ragged: computed in row order, then
 * scattered to (sample, time), the padding rows set to 0 (or left alone when
 * accumulating). */
static void FR_(backward_dx)(const FR_(backward_call) *bc, int tid, int nt)
{
    const fr_shape *s = bc->s;
    const int64_t I = s->inputs, GH = fr_gates(s->cell) * s->hidden, T = s->steps;
    const int64_t *x_row = bc->plan.x_row;
    const size_t bytes = (size_t)I * sizeof(real);
    int64_t r0, r1, b0, b1;
    fr_split(bc->plan.n_rows, nt, tid, 1, &r0, &r1);
    real *dx = x_row ? bc->w.dx : bc->dX;
    FR_(gemm_rm)(bc->blas, 0, 0, r1 - r0, I, GH, 1, bc->w.dgx + r0 * GH, GH, bc->W_ih, I,
                 bc->accumulate_dx && !x_row ? 1 : 0, dx + r0 * I, I);
    if (!x_row) return;
    for (int64_t r = r0; r < r1; r++) {
        real *d = bc->dX + x_row[r] * I;
        const real *v = dx + r * I;
        if (bc->accumulate_dx)
            for (int64_t k = 0; k < I; k++) d[k] += v[k];
        else
            memcpy(d, v, bytes);
    }
    fr_split(s->batch, nt, tid, 1, &b0, &b1);
    for (int64_t b = b0; b < b1 && !bc->accumulate_dx; b++)
        for (int64_t t = fr_clamped_length(s, b); t < T; t++) memset(bc->dX + (b * T + t) * I, 0, bytes);
}

/* Rows [r0, r1) of [X | h] (fr_joint_dw): dW_ih's and dW_hh's inputs side by side. */
static void FR_(join_inputs)(const FR_(backward_call) *bc, int64_t r0, int64_t r1)
{
    const int64_t I = bc->s->inputs, H = bc->s->hidden, cols = I + H;
    const real *X = bc->fw.x ? bc->fw.x : bc->X;
    for (int64_t r = r0; r < r1; r++) {
        memcpy(bc->w.xh + r * cols, X + r * I, (size_t)I * sizeof(real));
        memcpy(bc->w.xh + r * cols + I, bc->fw.h + r * H, (size_t)H * sizeof(real));
    }
}

/* Whether rnn.c's weight-gradient kernel runs: float on AVX-512 CPUs, for
 * gradients of up to FR_WG_MAX_BYTES. Measured on a Zen 4 core against
 * OpenBLAS (bench/NOTES.md, ninth session): faster up to the medium LSTM's
 * (1.5 MiB), even at H=512 (8 MiB), slower at H=1024 (32 MiB: 84 GFLOP/s
 * against ~110, where rows of dG lie 16 KiB apart). */
#define FR_WG_MAX_BYTES (4 << 20)
static int FR_(weight_grad_kernel)(const fr_shape *s)
{
#ifdef FR_WEIGHT_GRAD_AVX512
    const int64_t GH = fr_gates(s->cell) * s->hidden;
    return fr_avx512_supported() &&
           GH * (s->inputs + s->hidden) * (int64_t)sizeof(real) <= FR_WG_MAX_BYTES;
#else
    (void)s;
    return 0;
#endif
}

/* dW_ih and dW_hh rows [q0, q1) (+)= dG^T X and dG^T h: in rnn.c's kernel
 * (weight_grad_kernel), reading X and h where they lie; else one GEMM over [X | h]
 * (fr_joint_dw), its result then added to both, or one GEMM each. */
static void FR_(weight_products)(const FR_(backward_call) *bc, int64_t q0, int64_t q1)
{
    const int64_t I = bc->s->inputs, H = bc->s->hidden, GH = fr_gates(bc->s->cell) * H;
    const int64_t N = bc->plan.n_rows, cols = I + H;
    const real *X = bc->fw.x ? bc->fw.x : bc->X;
#ifdef FR_WEIGHT_GRAD_AVX512
    if (FR_(weight_grad_kernel)(bc->s)) {
        FR_WEIGHT_GRAD_AVX512(N, bc->w.dgx, GH, q0, q1, X, I, I, bc->dW_ih, I);
        FR_WEIGHT_GRAD_AVX512(N, bc->w.dgh, GH, q0, q1, bc->fw.h, H, H, bc->dW_hh, H);
        return;
    }
#endif
    if (!bc->w.xh) {
        FR_(gemm_rm)(bc->blas, 1, 0, q1 - q0, I, N, 1, bc->w.dgx + q0, GH, X, I, 1,
                     bc->dW_ih + q0 * I, I);
        FR_(gemm_rm)(bc->blas, 1, 0, q1 - q0, H, N, 1, bc->w.dgh + q0, GH, bc->fw.h, H, 1,
                     bc->dW_hh + q0 * H, H);
        return;
    }
    FR_(gemm_rm)(bc->blas, 1, 0, q1 - q0, cols, N, 1, bc->w.dgx + q0, GH, bc->w.xh, cols, 0,
                 bc->w.dw + q0 * cols, cols);
    for (int64_t q = q0; q < q1; q++) {
        const real *d = bc->w.dw + q * cols;
        for (int64_t k = 0; k < I; k++) bc->dW_ih[q * I + k] += d[k];
        for (int64_t k = 0; k < H; k++) bc->dW_hh[q * H + k] += d[I + k];
    }
}

/* dW_ih, dW_hh, db_ih, db_hh rows [q0, q1) from the gate gradients. */
static void FR_(weight_grads)(const FR_(backward_call) *bc, int64_t q0, int64_t q1)
{
    const fr_shape *s = bc->s;
    const int64_t GH = fr_gates(s->cell) * s->hidden, N = bc->plan.n_rows;
    const real *dgx = bc->w.dgx, *dgh = bc->w.dgh;
    FR_(weight_products)(bc, q0, q1);
    if (s->cell == FR_GRU) {
        FR_(colsum_add)(dgx, N, GH, q0, q1, bc->db_ih, NULL);
        FR_(colsum_add)(dgh, N, GH, q0, q1, bc->db_hh, NULL);
    } else {
        FR_(colsum_add)(dgx, N, GH, q0, q1, bc->db_ih, bc->db_hh);
    }
}

/* After the loop: weight gradients split by output rows (skipped in dX-only
 * mode: dW_ih NULL; a joint one's [X | h] first, split by rows, every thread
 * reading all of it), then dX over the valid rows. */
static void FR_(backward_weights)(const FR_(backward_call) *bc, int tid, int nt)
{
    const int64_t GH = fr_gates(bc->s->cell) * bc->s->hidden;
    int64_t q0, q1, r0, r1;
    if (bc->dW_ih && bc->w.xh && !FR_(weight_grad_kernel)(bc->s)) {
        fr_split(bc->plan.n_rows, nt, tid, 1, &r0, &r1);
        FR_(join_inputs)(bc, r0, r1);
#pragma omp barrier
    }
    fr_split(GH, nt, tid, FR_UNIT_ALIGN, &q0, &q1);
    if (bc->dW_ih) FR_(weight_grads)(bc, q0, q1);
    if (bc->dX) FR_(backward_dx)(bc, tid, nt);
}

/* Split by units: every step, the fused pass for this thread's units and
 * rows (fr_team_rows), a barrier (the recurrent product reads every unit's
 * dG), then dh for them. */
static void FR_(backward_by_units)(const FR_(backward_call) *bc, int tid, int64_t j0,
                                   int64_t j1, const real *panels)
{
    const fr_team_blocks rows = fr_team_rows(bc->team, tid);
    for (int64_t step = bc->plan.n_steps - 1; step >= 0; step--) {
        if (fr_team_stop(bc->stop, step)) break;
        const int64_t active = bc->plan.active[step];
        for (int64_t i0 = rows.first; i0 < active && j1 > j0; i0 += rows.stride)
            for (int64_t i = i0; i < fr_block_end(i0, rows.size, active); i++)
                FR_(backward_row)(bc, step, i, j0, j1);
#pragma omp barrier
        for (int64_t i0 = rows.first; i0 < active; i0 += rows.stride)
            FR_(backward_recurrent)(bc, step, i0, fr_block_end(i0, rows.size, active), j0, j1,
                                    panels);
    }
}

/* Split by rows (fr_team_for): this thread's blocks of samples, all units,
 * no barrier. */
static void FR_(backward_by_rows)(const FR_(backward_call) *bc, int tid, int nt)
{
    const int64_t H = bc->s->hidden, stride = (int64_t)nt * FR_ROW_BLOCK;
    for (int64_t step = bc->plan.n_steps - 1; step >= 0; step--) {
        if (fr_rows_stop(bc->watched)) break;
        const int64_t active = bc->plan.active[step];
        for (int64_t i0 = tid * FR_ROW_BLOCK; i0 < active; i0 += stride) {
            const int64_t i1 = fr_block_end(i0, FR_ROW_BLOCK, active);
            for (int64_t i = i0; i < i1; i++) FR_(backward_row)(bc, step, i, 0, H);
            FR_(backward_recurrent)(bc, step, i0, i1, 0, H, bc->packed);
        }
    }
}

/* The parallel region: pack W_hh (each thread its slice), steps in reverse,
 * then the weight gradients and dX on every thread. */
static void FR_(backward_team)(const FR_(backward_call) *bc)
{
    const fr_shape *s = bc->s;
    const int64_t H = s->hidden, GH = fr_gates(s->cell) * H;
    const int tid = fr_thread_id(), nt = fr_team();
    int64_t j0, j1;
    fr_team_slice(bc->team, tid, H, &j0, &j1);
    real *panels = FR_(own_panels)(bc->packed, 1, GH, j0);
#if FR_HAVE_PACKED
    if (panels && j1 > j0) FR_(pack_backward)(bc->W_hh, H, GH, j0, j1, panels);
#endif
    if (bc->team.by_rows) {
#pragma omp barrier
        FR_(backward_by_rows)(bc, tid, nt);
    } else {
        fr_team_units(bc->team, tid, H, &j0, &j1);
        FR_(backward_by_units)(bc, tid, j0, j1, FR_(own_panels)(bc->packed, 1, GH, j0));
    }
#pragma omp barrier
    FR_(backward_weights)(bc, tid, nt);
}

int FR_(fr_backward)(const fr_blas *blas, const fr_shape *s, const real *X, const real *W_ih,
                     const real *W_hh, const real *ws, const real *dY, int64_t ldy,
                     const real *dhN, const real *dcN, real *dX, int accumulate_dx,
                     real *dW_ih, real *dW_hh, real *db_ih, real *db_hh, real *dh0, real *dc0,
                     real *bws, int n_threads)
{
    int rc = FR_(backward_check)(blas, s, X, W_ih, W_hh, ws, dY, ldy, dW_ih, dW_hh, db_ih,
                                 db_hh, dh0, dc0, bws);
    if (rc != FR_OK) return rc;
    const int64_t G = fr_gates(s->cell), H = s->hidden;
    FR_(backward_call) bc = {blas, s, X, W_ih, W_hh, dY, ldy, dX, accumulate_dx,
                             dW_ih, dW_hh, db_ih, db_hh, dh0, dc0};
    volatile int stop[2] = {0, 0};
    bc.stop = stop;
    bc.watched = fr_watching;
    /* the forward regions are only read; one pointer type serves both passes */
    FR_(point_forward_ws)(&bc.fw, s, 1, (real *)ws);
    FR_(point_backward_ws)(&bc.w, s, bws);
    bc.team = fr_team_for(n_threads, s, sizeof(real));
    if ((rc = fr_plan_make(s, 1, sizeof(real), &bc.plan)) != FR_OK) return rc;
    FR_(backward_init_state)(&bc, dhN, dcN);
    rc = FR_(alloc_panels)(FR_(panels_size)(1, H, G * H, fr_team_slices(bc.team)), &bc.packed);
    if (rc == FR_OK) {
#pragma omp parallel num_threads(bc.team.nth) if (bc.team.nth > 1)
        FR_(backward_team)(&bc);
    }
    if (rc == FR_OK && bc.plan.order) {
        FR_(permute_rows)(dh0, bc.dh, bc.plan.order, s->batch, H, 1);
        if (s->cell == FR_LSTM) FR_(permute_rows)(dc0, bc.dc, bc.plan.order, s->batch, H, 1);
    }
    fr_aligned_free(bc.packed);
    fr_plan_free(&bc.plan);
    if (rc != FR_OK) return rc;
    return fr_should_stop() ? FR_STOPPED : FR_OK;
}

/* ----- generation ---------------------------------------------------------------- */

/* The generation workspace's named regions (sizes: fr_generate_sizes). */
typedef struct {
    real *h, *c;   /* (2, L, n, H): current and next state of every layer */
    real *gates;   /* (n, G*H) one layer's gates */
    real *gh;      /* (n, 3*H) GRU's W_hh h */
    real *x;       /* (n, E) the embedded tokens */
    real *logits;  /* (n, n_outputs) the head's outputs */
} FR_(generate_ws);

static void FR_(point_generate_ws)(FR_(generate_ws) *w, const fr_generator *g, int64_t n,
                                   real *ws)
{
    int64_t sizes[FR_GENERATE_REGIONS];
    fr_generate_sizes(g, n, sizes);
    real **const regions[FR_GENERATE_REGIONS] = {&w->h, &w->c, &w->gates, &w->gh, &w->x,
                                                 &w->logits};
    FR_(point_regions)(regions, sizes, FR_GENERATE_REGIONS, ws);
}

/* Scratch that is not `real` or is per thread: one malloc per call. */
typedef struct {
    fr_prob *probs;    /* V pairs for sampling */
    fr_rng *rngs;      /* one stream per sample */
    double *logits;    /* V: one sample's logits in double */
    real *thread_rows; /* the y and aux rows of each thread */
    int32_t *token;    /* n: the tokens just sampled */
    void *mem;
} FR_(generate_scratch);

static int FR_(alloc_generate_scratch)(FR_(generate_scratch) *sc, int64_t V, int64_t n,
                                       int nth, int64_t H)
{
    sc->mem = malloc((size_t)V * (sizeof(fr_prob) + sizeof(double)) + (size_t)n * sizeof(fr_rng) +
                     (size_t)nth * 2 * H * sizeof(real) + (size_t)n * sizeof(int32_t));
    if (!sc->mem) return FR_ERR_NOMEM;
    sc->probs = (fr_prob *)sc->mem;
    sc->rngs = (fr_rng *)(sc->probs + V);
    sc->logits = (double *)(sc->rngs + n);
    sc->thread_rows = (real *)(void *)(sc->logits + V);
    sc->token = (int32_t *)(void *)(sc->thread_rows + nth * 2 * H);
    return FR_OK;
}

/* One generation call. Every weight is packed once, before the loop (batch-1
 * steps stream the weights; BLAS's small-matrix path would repack them): per
 * layer W_ih then W_hh (layer_stride apart), then the head. */
typedef struct {
    const fr_blas *blas;
    const fr_generator *g;
    const fr_sampling *opt;
    int64_t n, n_prompt, n_new;
    const int32_t *prompt;
    int32_t *out;
    FR_(generate_ws) w;
    FR_(generate_scratch) sc;
    real *packed;
    real *table;    /* (vocab, G*H): each token's layer-0 input projection, or NULL */
    int64_t ih_size, layer_stride;
    int row_layout; /* the weights are packed in the row layout (fr_row_layout) */
    int nth;
    volatile int *stop; /* fr_team_stop's slots */
} FR_(generate_call);

static int FR_(generate_check)(const fr_blas *blas, const fr_generator *g,
                               const fr_sampling *opt, int64_t n, const int32_t *prompt,
                               int64_t n_prompt, int64_t n_new, const int32_t *out,
                               const real *ws)
{
    if (!blas || !blas->FR_GEMM || !g || !opt || !out || !ws || n < 1 || n_new < 0 ||
        n_prompt < 1 || !prompt || !g->out_tokens || fr_gates(g->cell) == 0 ||
        g->num_layers < 1 || g->hidden < 1 || g->embed_dim < 1 || g->vocab < 1 ||
        g->n_outputs < 1)
        return FR_ERR_ARG;
    const int64_t GH = fr_gates(g->cell) * g->hidden, V = g->n_outputs > 1 ? g->n_outputs : 2;
    if (!fr_fits(n, GH) || !fr_fits(n, V) || !fr_fits(n, g->embed_dim)) return FR_ERR_TOO_LARGE;
    for (int64_t i = 0; i < n * n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= g->vocab) return FR_ERR_ARG;
    for (int64_t o = 0; o < V; o++) /* every sampled token must have an embedding */
        if (g->out_tokens[o] < 0 || g->out_tokens[o] >= g->vocab) return FR_ERR_ARG;
    return FR_OK;
}

static int FR_(alloc_generate_panels)(FR_(generate_call) *gc)
{
    const fr_generator *g = gc->g;
    const int64_t G = fr_gates(g->cell), H = g->hidden, E = g->embed_dim;
    gc->ih_size = FR_(panels_size)(G, H, E > H ? E : H, gc->nth);
    gc->layer_stride = gc->ih_size + FR_(panels_size)(G, H, H, gc->nth);
    int rc = FR_(alloc_panels)(g->num_layers * gc->layer_stride +
                                   FR_(panels_size)(1, g->n_outputs, H, gc->nth),
                               &gc->packed);
    const int64_t tokens = gc->n * (gc->n_prompt - 1 + gc->n_new);
    const int64_t table_bytes = g->vocab * G * H * (int64_t)sizeof(real);
    if (rc == FR_OK && gc->packed && fr_embed_table(g->vocab, tokens, table_bytes)) {
        gc->table = (real *)malloc((size_t)(g->vocab * G * H) * sizeof(real));
        rc = gc->table ? FR_OK : FR_ERR_NOMEM;
    }
    return rc;
}

#if FR_HAVE_PACKED
/* This thread's panels of layer l's W_ih (hh = 0) or W_hh (hh = 1). */
static real *FR_(layer_panels)(const FR_(generate_call) *gc, int64_t l, int hh, int64_t j0)
{
    real *base = gc->packed + l * gc->layer_stride + (hh ? gc->ih_size : 0);
    int64_t K = hh || l ? gc->g->hidden : gc->g->embed_dim;
    return FR_(own_panels)(base, fr_gates(gc->g->cell), K, j0);
}
#endif

/* Pack this thread's slices of every weight; returns its head panels. */
static real *FR_(generate_pack)(const FR_(generate_call) *gc, int64_t j0, int64_t j1,
                                int64_t o0, int64_t o1)
{
    if (!gc->packed) return NULL;
    const fr_generator *g = gc->g;
    const int64_t H = g->hidden, L = g->num_layers;
    real *head = FR_(own_panels)(gc->packed + L * gc->layer_stride, 1, H, o0);
#if FR_HAVE_PACKED
    const int64_t G = fr_gates(g->cell);
    for (int64_t l = 0; l < L; l++) {
        FR_(pack_forward)((const real *)g->W_ih[l], l ? H : g->embed_dim, H, G, j0, j1,
                          FR_(layer_panels)(gc, l, 0, j0), gc->row_layout);
        FR_(pack_forward)((const real *)g->W_hh[l], H, H, G, j0, j1,
                          FR_(layer_panels)(gc, l, 1, j0), gc->row_layout);
    }
    FR_(pack_forward)((const real *)g->head_W, H, g->n_outputs, 1, o0, o1, head,
                      gc->row_layout);
    if (gc->table) /* the same kernel as a step's: the same sums, bit for bit */
        FR_(packed_apply)(g->vocab, g->embed_dim, (const real *)g->embedding, g->embed_dim,
                          FR_(layer_panels)(gc, 0, 0, j0), G, H, j0, j1, gc->table, G * H, 0,
                          gc->row_layout);
#else
    (void)j1; (void)o1;
#endif
    return head;
}

/* Layer l's state buffer (h or c) at the start (next = 0) or the end of
 * `step`: the two buffers swap roles every step. */
static real *FR_(layer_state)(const FR_(generate_call) *gc, real *buf, int64_t step, int next,
                              int64_t l)
{
    const int64_t which = (step + next) & 1;
    return buf + (which * gc->g->num_layers + l) * gc->n * gc->g->hidden;
}

static void FR_(generate_init)(FR_(generate_call) *gc, const real *h0, const real *c0)
{
    const int64_t n = gc->n, H = gc->g->hidden;
    for (int64_t i = 0; i < n; i++) fr_rng_seed(&gc->sc.rngs[i], gc->opt->seed, (uint64_t)i);
    for (int64_t l = 0; l < gc->g->num_layers; l++) {
        FR_(copy_rows)(gc->w.h + l * n * H, H, h0 ? h0 + l * n * H : NULL, n, H);
        FR_(copy_rows)(gc->w.c + l * n * H, H, c0 ? c0 + l * n * H : NULL, n, H);
    }
}

/* Sample i's input token at this step (prompt, then sampled). */
static int64_t FR_(step_token)(const FR_(generate_call) *gc, int64_t step, int64_t i)
{
    return step < gc->n_prompt ? gc->prompt[i * gc->n_prompt + step] : gc->sc.token[i];
}

/* x = the embeddings of this step's input tokens (generation without a table). */
static void FR_(generate_embed)(const FR_(generate_call) *gc, int64_t step)
{
    const int64_t E = gc->g->embed_dim;
    const real *emb = (const real *)gc->g->embedding;
    for (int64_t i = 0; i < gc->n; i++)
        memcpy(gc->w.x + i * E, emb + FR_(step_token)(gc, step, i) * E,
               (size_t)E * sizeof(real));
}

/* Layer 0's gates, units [j0, j1) of every gate, from the table rows of the
 * step's tokens. */
static void FR_(table_gates)(const FR_(generate_call) *gc, int64_t step, int64_t j0, int64_t j1)
{
    const int64_t H = gc->g->hidden, GH = fr_gates(gc->g->cell) * H;
    for (int64_t i = 0; i < gc->n; i++) {
        const real *row = gc->table + FR_(step_token)(gc, step, i) * GH;
        for (int64_t k = 0; k < GH; k += H)
            memcpy(gc->w.gates + i * GH + k + j0, row + k + j0, (size_t)(j1 - j0) * sizeof(real));
    }
}

/* Layer l, units [j0, j1): both GEMMs (layer 0's first one: table rows),
 * then the fused pass per sample. */
static void FR_(generate_layer)(const FR_(generate_call) *gc, int64_t step, int64_t l,
                                const real *in, int64_t in_dim, int64_t j0, int64_t j1,
                                real *my_y, real *my_aux)
{
    const fr_generator *g = gc->g;
    const int lstm = g->cell == FR_LSTM, gru = g->cell == FR_GRU, relu = g->cell == FR_RNN_RELU;
    const int64_t n = gc->n, H = g->hidden, G = fr_gates(g->cell), GH = G * H;
    real *hp = FR_(layer_state)(gc, gc->w.h, step, 0, l);
    real *hn = FR_(layer_state)(gc, gc->w.h, step, 1, l);
    real *cp = FR_(layer_state)(gc, gc->w.c, step, 0, l);
    real *cn = FR_(layer_state)(gc, gc->w.c, step, 1, l);
    const real *bi = (const real *)g->b_ih[l], *bh = (const real *)g->b_hh[l];
    real *gates = gc->w.gates, *gh = gc->w.gh;
#if FR_HAVE_PACKED
    if (gc->packed) {
        if (l == 0 && gc->table)
            FR_(table_gates)(gc, step, j0, j1);
        else
            FR_(packed_apply)(n, in_dim, in, in_dim, FR_(layer_panels)(gc, l, 0, j0), G, H, j0,
                              j1, gates, GH, 0, gc->row_layout);
        FR_(packed_apply)(n, H, hp, H, FR_(layer_panels)(gc, l, 1, j0), G, H, j0, j1,
                          gru ? gh : gates, GH, !gru, gc->row_layout);
    } else
#endif
    for (int64_t k = 0; k < G && j1 > j0; k++) {
        const real *Wih = (const real *)g->W_ih[l], *Whh = (const real *)g->W_hh[l];
        FR_(gemm_rm)(gc->blas, 0, 1, n, j1 - j0, in_dim, 1, in, in_dim,
                     Wih + (k * H + j0) * in_dim, in_dim, 0, gates + k * H + j0, GH);
        FR_(gemm_rm)(gc->blas, 0, 1, n, j1 - j0, H, 1, hp, H, Whh + (k * H + j0) * H, H,
                     gru ? 0 : 1, (gru ? gh : gates) + k * H + j0, GH);
    }
    for (int64_t i = 0; i < n && j1 > j0; i++) {
        real *gi = gates + i * GH + j0, *hni = hn + i * H + j0;
        if (lstm)
            FR_(lstm_forward_row)(j1 - j0, H, gi, bi + j0, bh + j0, cp + i * H + j0, hni,
                                  cn + i * H + j0, my_y, my_aux);
        else if (gru)
            FR_(gru_forward_row)(j1 - j0, H, gi, gh + i * GH + j0, bi + j0, bh + j0,
                                 hp + i * H + j0, hni, my_y, my_aux);
        else
            FR_(rnn_forward_row)(j1 - j0, relu, gi, bi + j0, bh + j0, hni, my_y);
    }
}

/* The head's outputs [o0, o1) for every sample from the top layer's new state. */
static void FR_(generate_head)(const FR_(generate_call) *gc, int64_t step, int64_t o0,
                               int64_t o1, const real *head_panels)
{
    const fr_generator *g = gc->g;
    const int64_t n = gc->n, H = g->hidden, n_out = g->n_outputs;
    const real *top = FR_(layer_state)(gc, gc->w.h, step, 1, g->num_layers - 1);
#if FR_HAVE_PACKED
    if (head_panels) {
        FR_(packed_apply)(n, H, top, H, head_panels, 1, n_out, o0, o1, gc->w.logits, n_out, 0,
                          gc->row_layout);
        return;
    }
#else
    (void)head_panels;
#endif
    FR_(gemm_rm)(gc->blas, 0, 1, n, o1 - o0, H, 1, top, H, (const real *)g->head_W + o0 * H, H,
                 0, gc->w.logits + o0, n_out);
}

/* One sample's output index from its head outputs z (sampling.h). */
int64_t FR_(fr_draw)(const real *z, const real *hb, int64_t n_out, const fr_sampling *opt,
                     fr_rng *rng, fr_prob *probs, double *logits)
{
    if (n_out == 1) { /* binary head: logits (0, z) */
        logits[0] = 0;
        logits[1] = (double)z[0] + (double)hb[0];
    } else {
        for (int64_t v = 0; v < n_out; v++) logits[v] = (double)z[v] + (double)hb[v];
    }
    return fr_sample(logits, n_out > 1 ? n_out : 2, opt, rng, probs);
}

/* Draw every sample's next token from the head's outputs (one thread). */
static void FR_(sample_tokens)(const FR_(generate_call) *gc, int64_t step)
{
    const fr_generator *g = gc->g;
    const int64_t n_out = g->n_outputs;
    for (int64_t i = 0; i < gc->n; i++) {
        int64_t o = FR_(fr_draw)(gc->w.logits + i * n_out, (const real *)g->head_b, n_out,
                                 gc->opt, &gc->sc.rngs[i], gc->sc.probs, gc->sc.logits);
        gc->sc.token[i] = g->out_tokens[o];
        gc->out[i * gc->n_new + (step - (gc->n_prompt - 1))] = gc->sc.token[i];
    }
}

/* The parallel region: each thread owns a slice of every layer's units and
 * of the head's outputs; one thread embeds (without a table) and samples.
 * The barrier after the last layer ends every step: nothing of a step is
 * read after it, so the state buffers can swap without another. */
static void FR_(generate_team)(FR_(generate_call) *gc)
{
    const fr_generator *g = gc->g;
    const int64_t H = g->hidden;
    const int tid = fr_thread_id(), nt = fr_team();
    int64_t j0, j1, o0, o1;
    fr_split(H, nt, tid, FR_UNIT_ALIGN, &j0, &j1);
    fr_split(g->n_outputs, nt, tid, FR_UNIT_ALIGN, &o0, &o1);
    real *my_y = gc->sc.thread_rows + tid * 2 * H, *my_aux = my_y + H;
    const real *head_panels = FR_(generate_pack)(gc, j0, j1, o0, o1);
    for (int64_t step = 0; step < gc->n_prompt - 1 + gc->n_new; step++) {
        if (fr_team_stop(gc->stop, step)) break;
        if (!gc->table) {
#pragma omp single
            FR_(generate_embed)(gc, step);
        }
        const real *layer_in = gc->w.x;
        for (int64_t l = 0; l < g->num_layers; l++) {
            FR_(generate_layer)(gc, step, l, layer_in, l ? H : g->embed_dim, j0, j1, my_y,
                                my_aux);
            layer_in = FR_(layer_state)(gc, gc->w.h, step, 1, l);
#pragma omp barrier
        }
        if (step >= gc->n_prompt - 1) { /* past the prompt: sample the next tokens */
            FR_(generate_head)(gc, step, o0, o1, head_panels);
#pragma omp barrier
#pragma omp single
            FR_(sample_tokens)(gc, step);
        }
    }
}

int FR_(fr_generate)(const fr_blas *blas, const fr_generator *g, const fr_sampling *opt,
                     int64_t n, const int32_t *prompt, int64_t n_prompt, const real *h0,
                     const real *c0, int64_t n_new, int32_t *out, real *ws, int n_threads)
{
    int rc = FR_(generate_check)(blas, g, opt, n, prompt, n_prompt, n_new, out, ws);
    if (rc != FR_OK) return rc;
    const int64_t H = g->hidden, V = g->n_outputs > 1 ? g->n_outputs : 2;
    FR_(generate_call) gc = {blas, g, opt, n, n_prompt, n_new, prompt, out};
    volatile int stop[2] = {0, 0};
    gc.stop = stop;
    FR_(point_generate_ws)(&gc.w, g, n, ws);
    gc.nth = fr_team_size(n_threads, n, H, fr_gates(g->cell), g->embed_dim, sizeof(real));
    gc.row_layout = fr_row_layout(n);
    if ((rc = FR_(alloc_generate_scratch)(&gc.sc, V, n, gc.nth, H)) != FR_OK) return rc;
    if ((rc = FR_(alloc_generate_panels)(&gc)) != FR_OK) {
        free(gc.sc.mem);
        fr_aligned_free(gc.packed);
        return rc;
    }
    FR_(generate_init)(&gc, h0, c0);
#pragma omp parallel num_threads(gc.nth) if (gc.nth > 1)
    FR_(generate_team)(&gc);
    free(gc.sc.mem);
    fr_aligned_free(gc.packed);
    free(gc.table);
    return fr_should_stop() ? FR_STOPPED : FR_OK;
}
