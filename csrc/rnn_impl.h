/* Recurrent kernels for one precision. Included by rnn.c with `real`, FR_(),
 * FR_GEMM, FR_SIGMOID and FR_TANH defined; no include guard on purpose.
 *
 * Forward, per layer and direction:
 *   gates = X W_ih^T                      one GEMM over all B*T rows
 *   for each step t (reversed for the backward direction):
 *     gates[t] += h_prev W_hh^T           one GEMM (GRU: into its own buffer)
 *     one fused pass: biases, activations, cell update, outputs, and what
 *     backward reads, stored in place
 * Backward walks the steps in the opposite order with one fused pass and one
 * GEMM for dh per step; dW_ih, dW_hh, dX and the bias sums come after the loop.
 *
 * Training workspace, all batch-first (B, T, .):
 *   gates (G*H) activated gates (LSTM i,f,g,o; GRU r,z,n; RNN h)
 *   h_prev (H)  state entering step t
 *   LSTM: c_prev (H), tanh(c_t) (H);   GRU: W_hn h_prev + b_hn (H)
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

FR_CLONES static void FR_(lstm_forward_row)(int64_t n, int64_t H, real *restrict g,
                                            const real *restrict bi, const real *restrict bh,
                                            const real *restrict cp, real *restrict hn,
                                            real *restrict cn, real *restrict y,
                                            real *restrict tc)
{
    real *restrict gi = g, *restrict gf = g + H, *restrict gg = g + 2 * H, *restrict go = g + 3 * H;
    for (int64_t j = 0; j < n; j++) {
        real i = FR_SIGMOID(gi[j] + bi[j] + bh[j]);
        real f = FR_SIGMOID(gf[j] + bi[H + j] + bh[H + j]);
        real c_in = FR_TANH(gg[j] + bi[2 * H + j] + bh[2 * H + j]);
        real o = FR_SIGMOID(go[j] + bi[3 * H + j] + bh[3 * H + j]);
        real c = f * cp[j] + i * c_in;
        real t = FR_TANH(c);
        real h = o * t;
        gi[j] = i;
        gf[j] = f;
        gg[j] = c_in;
        go[j] = o;
        cn[j] = c;
        tc[j] = t;
        hn[j] = h;
        y[j] = h;
    }
}

FR_CLONES static void FR_(gru_forward_row)(int64_t n, int64_t H, real *restrict g,
                                           const real *restrict gh, const real *restrict bi,
                                           const real *restrict bh, const real *restrict hp,
                                           real *restrict hn, real *restrict y,
                                           real *restrict a)
{
    real *restrict gr = g, *restrict gz = g + H, *restrict gn = g + 2 * H;
    for (int64_t j = 0; j < n; j++) {
        real r = FR_SIGMOID(gr[j] + bi[j] + gh[j] + bh[j]);
        real z = FR_SIGMOID(gz[j] + bi[H + j] + gh[H + j] + bh[H + j]);
        real hh = gh[2 * H + j] + bh[2 * H + j];
        real nn = FR_TANH(gn[j] + bi[2 * H + j] + r * hh);
        real h = (1 - z) * nn + z * hp[j];
        gr[j] = r;
        gz[j] = z;
        gn[j] = nn;
        a[j] = hh;
        hn[j] = h;
        y[j] = h;
    }
}

FR_CLONES static void FR_(rnn_forward_row)(int64_t n, int relu, real *restrict g,
                                           const real *restrict bi, const real *restrict bh,
                                           real *restrict hn, real *restrict y)
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

FR_CLONES static void FR_(lstm_backward_row)(int64_t n, int64_t H, const real *restrict g,
                                             const real *restrict tc, const real *restrict cp,
                                             real *restrict dh, real *restrict dc,
                                             real *restrict dg)
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

FR_CLONES static void FR_(gru_backward_row)(int64_t n, int64_t H, const real *restrict g,
                                            const real *restrict a, const real *restrict hp,
                                            real *restrict dh, real *restrict dgx,
                                            real *restrict dgh)
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

FR_CLONES static void FR_(rnn_backward_row)(int64_t n, int relu, const real *restrict g,
                                            real *restrict dh, real *restrict dg)
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

static inline void FR_(store_row)(real *c, const FR_VEC *v0, const FR_VEC *v1, int64_t w,
                                  int accumulate)
{
    real tmp[2 * sizeof(FR_VEC) / sizeof(real)];
    memcpy(tmp, v0, sizeof *v0);
    memcpy(tmp + FR_VL, v1, sizeof *v1);
    if (accumulate)
        for (int64_t j = 0; j < w; j++) c[j] += tmp[j];
    else
        for (int64_t j = 0; j < w; j++) c[j] = tmp[j];
}

/* C[0:M, 0:w] (+)= A[0:M, 0:K] P for one packed panel P (K rows of FR_NR):
 * FR_MR rows at a time (8 accumulator vectors: what 16 ymm registers hold). */
FR_CLONES static void FR_(panel_kernel_mr4)(int64_t M, int64_t K, const real *A, int64_t lda,
                                            const real *P, real *C, int64_t ldc, int64_t w,
                                            int accumulate)
{
    int64_t r = 0;
    for (; r + FR_MR <= M; r += FR_MR) {
        const real *a0 = A + r * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        FR_VEC c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0};
        FR_VEC c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
        for (int64_t k = 0; k < K; k++) {
            const FR_VEC b0 = *(const FR_VEC *)(P + k * FR_NR);
            const FR_VEC b1 = *(const FR_VEC *)(P + k * FR_NR + FR_VL);
            const real x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
            c00 += x0 * b0; c01 += x0 * b1;
            c10 += x1 * b0; c11 += x1 * b1;
            c20 += x2 * b0; c21 += x2 * b1;
            c30 += x3 * b0; c31 += x3 * b1;
        }
        FR_(store_row)(C + r * ldc, &c00, &c01, w, accumulate);
        FR_(store_row)(C + (r + 1) * ldc, &c10, &c11, w, accumulate);
        FR_(store_row)(C + (r + 2) * ldc, &c20, &c21, w, accumulate);
        FR_(store_row)(C + (r + 3) * ldc, &c30, &c31, w, accumulate);
    }
    for (; r < M; r++) {
        /* k in the same order as the wider kernels: a row's result must not
         * depend on how many rows share its call (predictions would change
         * with the batch around them) */
        const real *a0 = A + r * lda;
        FR_VEC c00 = {0}, c01 = {0};
        for (int64_t k = 0; k < K; k++) {
            c00 += a0[k] * *(const FR_VEC *)(P + k * FR_NR);
            c01 += a0[k] * *(const FR_VEC *)(P + k * FR_NR + FR_VL);
        }
        FR_(store_row)(C + r * ldc, &c00, &c01, w, accumulate);
    }
}

/* The same with 8 rows (16 accumulators) for AVX-512's 32 registers: about
 * 1.3x the 4-row kernel's rate on a Cascade Lake core. */
__attribute__((target("avx512f"))) static void FR_(panel_kernel_mr8)(
    int64_t M, int64_t K, const real *A, int64_t lda, const real *P, real *C, int64_t ldc,
    int64_t w, int accumulate)
{
    int64_t r = 0;
    for (; r + 8 <= M; r += 8) {
        FR_VEC acc[8][2];
        memset(acc, 0, sizeof acc);
        for (int64_t k = 0; k < K; k++) {
            const FR_VEC b0 = *(const FR_VEC *)(P + k * FR_NR);
            const FR_VEC b1 = *(const FR_VEC *)(P + k * FR_NR + FR_VL);
            for (int i = 0; i < 8; i++) {
                const real x = A[(r + i) * lda + k];
                acc[i][0] += x * b0;
                acc[i][1] += x * b1;
            }
        }
        for (int i = 0; i < 8; i++)
            FR_(store_row)(C + (r + i) * ldc, &acc[i][0], &acc[i][1], w, accumulate);
    }
    if (r < M) FR_(panel_kernel_mr4)(M - r, K, A + r * lda, lda, P, C + r * ldc, ldc, w, accumulate);
}

static void FR_(panel_kernel)(int64_t M, int64_t K, const real *A, int64_t lda, const real *P,
                              real *C, int64_t ldc, int64_t w, int accumulate)
{
    if (fr_avx512_supported())
        FR_(panel_kernel_mr8)(M, K, A, lda, P, C, ldc, w, accumulate);
    else
        FR_(panel_kernel_mr4)(M, K, A, lda, P, C, ldc, w, accumulate);
}

/* Forward panels of a (G*H, K) weight: for gate k and units [jj, jj+w) of
 * [j0, j1), panel row kk holds W[k*H + jj + q, kk] for q < w (zeros beyond). */
static void FR_(pack_forward)(const real *W, int64_t K, int64_t H, int64_t G, int64_t j0,
                              int64_t j1, real *P)
{
    for (int64_t k = 0; k < G; k++)
        for (int64_t jj = j0; jj < j1; jj += FR_NR, P += K * FR_NR)
            for (int64_t q = 0; q < FR_NR; q++) {
                const real *row = jj + q < j1 ? W + (k * H + jj + q) * K : NULL;
                for (int64_t kk = 0; kk < K; kk++) P[kk * FR_NR + q] = row ? row[kk] : 0;
            }
}

/* C[:, k*H + j] (+)= A W^T for units [j0, j1) of every gate, from the panels
 * pack_forward made for that range. */
static void FR_(packed_apply)(int64_t M, int64_t K, const real *A, int64_t lda, const real *P,
                              int64_t G, int64_t H, int64_t j0, int64_t j1, real *C, int64_t ldc,
                              int accumulate)
{
    for (int64_t k = 0; k < G; k++)
        for (int64_t jj = j0; jj < j1; jj += FR_NR, P += K * FR_NR)
            FR_(panel_kernel)(M, K, A, lda, P, C + k * H + jj, ldc,
                              j1 - jj < FR_NR ? j1 - jj : FR_NR, accumulate);
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

/* Panels a layer call needs: every thread's slice rounded up to whole panels. */
static int64_t FR_(n_panels)(int64_t H, int nth)
{
    return H / FR_NR + nth;
}
#endif

/* Threads: one OpenMP region spans the whole time loop. Each thread owns a
 * slice of the hidden units (all gates of those units), runs its own
 * single-threaded GEMMs for that slice and its part of the fused pass, and
 * waits at one barrier per step. BLAS must be single-threaded meanwhile (the
 * Python layer sees to it): one pool of threads, no fork per step. */

int FR_(fr_forward)(const fr_blas *blas, const fr_shape *s, const real *X, const real *W_ih,
                    const real *W_hh, const real *b_ih, const real *b_hh, const real *h0,
                    const real *c0, real *Y, int64_t ldy, real *hN, real *cN, real *ws,
                    int training, int n_threads)
{
    int rc = fr_check_shape(s, ldy);
    if (rc != FR_OK) return rc;
    const int cell = s->cell, lstm = cell == FR_LSTM, gru = cell == FR_GRU;
    const int relu = cell == FR_RNN_RELU;
    if (!blas || !blas->FR_GEMM || !X || !W_ih || !W_hh || !b_ih || !b_hh || !Y || !hN || !ws ||
        (lstm && !cN))
        return FR_ERR_ARG;
    const int64_t B = s->batch, T = s->steps, I = s->inputs, H = s->hidden;
    const int64_t G = fr_gates(cell), GH = G * H, BT = B * T;
    const int32_t *len = s->lengths;
    const int nth = fr_team_size(n_threads, B, H, G, I, sizeof(real));

    real *gates = ws, *p = ws + BT * GH;
    real *hbuf, *cbuf = NULL, *aux = NULL, *gh = NULL;
    int64_t s_buf;
    if (training) { /* per-step state lives in the (B, T, H) arrays */
        hbuf = p; p += BT * H;
        if (lstm) { cbuf = p; p += BT * H; }
        if (lstm || gru) { aux = p; p += BT * H; }
        s_buf = T * H;
    } else { /* two (B, H) state buffers, swapped each step */
        hbuf = p; p += 2 * B * H;
        if (lstm) { cbuf = p; p += 2 * B * H; }
        if (lstm || gru) { aux = p; p += B * H; }
        s_buf = H;
    }
    if (gru) gh = p;

    const int64_t t_first = s->reverse ? T - 1 : 0;
    FR_(copy_rows)(training ? hbuf + t_first * H : hbuf, s_buf, h0, B, H);
    if (lstm) FR_(copy_rows)(training ? cbuf + t_first * H : cbuf, s_buf, c0, B, H);

    real *packed = NULL; /* W_hh in panels, once per call, outside the time loop */
#if FR_HAVE_PACKED
    if (fr_packed_supported()) {
        packed = (real *)malloc((size_t)(G * FR_(n_panels)(H, nth) * H * FR_NR) * sizeof(real));
        if (!packed) return FR_ERR_ARG;
    }
#endif

#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const int tid = fr_thread_id(), nt = fr_team();
        int64_t r0, r1, j0, j1;
        fr_split(BT, nt, tid, 1, &r0, &r1);
        FR_(gemm_rm)(blas, 0, 1, r1 - r0, GH, I, 1, X + r0 * I, I, W_ih, I, 0, gates + r0 * GH,
                     GH);
        fr_split(H, nt, tid, FR_UNIT_ALIGN, &j0, &j1);
        const int64_t nj = j1 - j0;
#if FR_HAVE_PACKED
        real *my_panels = packed ? packed + G * (j0 / FR_NR) * H * FR_NR : NULL;
        if (my_panels) FR_(pack_forward)(W_hh, H, H, G, j0, j1, my_panels);
#endif
        real *hp = training ? hbuf + t_first * H : hbuf;
        real *cp = lstm ? (training ? cbuf + t_first * H : cbuf) : NULL;
        int64_t s_hp = s_buf;
#pragma omp barrier
        for (int64_t step = 0; step < T; step++) {
            const int64_t t = s->reverse ? T - 1 - step : step;
            real *hn, *cn = NULL;
            int64_t s_hn;
            if (step == T - 1) {
                hn = hN; cn = cN; s_hn = H;
            } else if (training) {
                int64_t tn = s->reverse ? t - 1 : t + 1;
                hn = hbuf + tn * H; s_hn = T * H;
                if (lstm) cn = cbuf + tn * H;
            } else {
                int64_t slot = (step + 1) & 1;
                hn = hbuf + slot * B * H; s_hn = H;
                if (lstm) cn = cbuf + slot * B * H;
            }
            real *g_t = gates + t * GH;
            real *aux_t = aux ? (training ? aux + t * H : aux) : NULL;
            const int64_t s_aux = training ? T * H : H;
            if (nj > 0) {
                /* gates[t][:, own units] += h_prev W_hh^T (GRU: its own buffer) */
                real *c_base = gru ? gh : g_t;
                const int64_t ldc = gru ? GH : T * GH;
#if FR_HAVE_PACKED
                if (my_panels)
                    FR_(packed_apply)(B, H, hp, s_hp, my_panels, G, H, j0, j1, c_base, ldc, !gru);
                else
#endif
                for (int64_t k = 0; k < G; k++)
                    FR_(gemm_rm)(blas, 0, 1, B, nj, H, 1, hp, s_hp, W_hh + (k * H + j0) * H, H,
                                 gru ? 0 : 1, c_base + k * H + j0, ldc);
                for (int64_t b = 0; b < B; b++) {
                    real *g = g_t + b * T * GH + j0, *y = Y + (b * T + t) * ldy + j0;
                    const real *hpb = hp + b * s_hp + j0;
                    real *hnb = hn + b * s_hn + j0;
                    real *cpb = lstm ? cp + b * s_hp + j0 : NULL;
                    real *cnb = lstm ? cn + b * s_hn + j0 : NULL;
                    real *auxb = aux_t ? aux_t + b * s_aux + j0 : NULL;
                    if (len && t >= len[b]) { /* past this sample's end: keep the state */
                        memcpy(hnb, hpb, (size_t)nj * sizeof(real));
                        if (lstm) memcpy(cnb, cpb, (size_t)nj * sizeof(real));
                        memset(y, 0, (size_t)nj * sizeof(real));
                    } else if (lstm) {
                        FR_(lstm_forward_row)(nj, H, g, b_ih + j0, b_hh + j0, cpb, hnb, cnb, y,
                                              auxb);
                    } else if (gru) {
                        FR_(gru_forward_row)(nj, H, g, gh + b * GH + j0, b_ih + j0, b_hh + j0,
                                             hpb, hnb, y, auxb);
                    } else {
                        FR_(rnn_forward_row)(nj, relu, g, b_ih + j0, b_hh + j0, hnb, y);
                    }
                }
            }
            hp = hn; cp = cn; s_hp = s_hn;
#pragma omp barrier
        }
    }
    free(packed);
    return FR_OK;
}

int FR_(fr_backward)(const fr_blas *blas, const fr_shape *s, const real *X, const real *W_ih,
                     const real *W_hh, const real *ws, const real *dY, int64_t ldy,
                     const real *dhN, const real *dcN, real *dX, int accumulate_dx,
                     real *dW_ih, real *dW_hh, real *db_ih, real *db_hh, real *dh0, real *dc0,
                     real *bws, int n_threads)
{
    int rc = fr_check_shape(s, dY ? ldy : s ? s->hidden : 0);
    if (rc != FR_OK) return rc;
    const int cell = s->cell, lstm = cell == FR_LSTM, gru = cell == FR_GRU;
    const int relu = cell == FR_RNN_RELU;
    if (!blas || !blas->FR_GEMM || !X || !W_ih || !W_hh || !ws || !dW_ih || !dW_hh || !db_ih ||
        !db_hh || !dh0 || !bws || (lstm && !dc0))
        return FR_ERR_ARG;
    const int64_t B = s->batch, T = s->steps, I = s->inputs, H = s->hidden;
    const int64_t G = fr_gates(cell), GH = G * H, BT = B * T;
    const int32_t *len = s->lengths;
    const int nth = fr_team_size(n_threads, B, H, G, I, sizeof(real));

    const real *gates = ws, *hprev = ws + BT * GH;
    const real *cprev = lstm ? hprev + BT * H : NULL;
    const real *aux = lstm ? cprev + BT * H : gru ? hprev + BT * H : NULL;
    real *dgx = bws, *dgh = gru ? bws + BT * GH : bws;

    /* dh0 / dc0 carry the running gradient of the state through the loop. */
    FR_(copy_rows)(dh0, H, dhN, B, H);
    if (lstm) FR_(copy_rows)(dc0, H, dcN, B, H);

    real *packed = NULL;
#if FR_HAVE_PACKED
    if (fr_packed_supported()) {
        packed = (real *)malloc((size_t)(FR_(n_panels)(H, nth) * GH * FR_NR) * sizeof(real));
        if (!packed) return FR_ERR_ARG;
    }
#endif

#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const int tid = fr_thread_id(), nt = fr_team();
        int64_t j0, j1, q0, q1, r0, r1;
        fr_split(H, nt, tid, FR_UNIT_ALIGN, &j0, &j1);
        const int64_t nj = j1 - j0;
#if FR_HAVE_PACKED
        real *my_panels = packed ? packed + (j0 / FR_NR) * GH * FR_NR : NULL;
        if (my_panels) FR_(pack_backward)(W_hh, H, GH, j0, j1, my_panels);
#endif
        for (int64_t step = T - 1; step >= 0; step--) {
            const int64_t t = s->reverse ? T - 1 - step : step;
            for (int64_t b = 0; b < B && nj > 0; b++) {
                const int64_t row = b * T + t;
                real *dh = dh0 + b * H + j0;
                real *dgx_b = dgx + row * GH + j0, *dgh_b = dgh + row * GH + j0;
                if (len && t >= len[b]) { /* Y was 0 here and the state passed through */
                    for (int64_t k = 0; k < G; k++) {
                        memset(dgx_b + k * H, 0, (size_t)nj * sizeof(real));
                        if (gru) memset(dgh_b + k * H, 0, (size_t)nj * sizeof(real));
                    }
                    continue;
                }
                if (dY) {
                    const real *dy = dY + row * ldy + j0;
                    for (int64_t j = 0; j < nj; j++) dh[j] += dy[j];
                }
                const real *g = gates + row * GH + j0;
                if (lstm)
                    FR_(lstm_backward_row)(nj, H, g, aux + row * H + j0, cprev + row * H + j0,
                                           dh, dc0 + b * H + j0, dgx_b);
                else if (gru)
                    FR_(gru_backward_row)(nj, H, g, aux + row * H + j0, hprev + row * H + j0,
                                          dh, dgx_b, dgh_b);
                else
                    FR_(rnn_backward_row)(nj, relu, g, dh, dgx_b);
            }
#pragma omp barrier
            /* dh[:, j0:j1] += dG_t W_hh[:, j0:j1]: reads every unit's dG_t */
#if FR_HAVE_PACKED
            if (my_panels) {
                const real *P = my_panels;
                for (int64_t jj = j0; jj < j1; jj += FR_NR, P += GH * FR_NR)
                    FR_(panel_kernel)(B, GH, dgh + t * GH, T * GH, P, dh0 + jj, H,
                                      j1 - jj < FR_NR ? j1 - jj : FR_NR, 1);
            } else
#endif
            FR_(gemm_rm)(blas, 0, 0, B, nj, GH, 1, dgh + t * GH, T * GH, W_hh + j0, H, 1,
                         dh0 + j0, H);
        }
#pragma omp barrier
        /* weight gradients split by output rows, dX by input rows */
        fr_split(GH, nt, tid, FR_UNIT_ALIGN, &q0, &q1);
        FR_(gemm_rm)(blas, 1, 0, q1 - q0, I, BT, 1, dgx + q0, GH, X, I, 1, dW_ih + q0 * I, I);
        FR_(gemm_rm)(blas, 1, 0, q1 - q0, H, BT, 1, dgh + q0, GH, hprev, H, 1, dW_hh + q0 * H,
                     H);
        if (gru) {
            FR_(colsum_add)(dgx, BT, GH, q0, q1, db_ih, NULL);
            FR_(colsum_add)(dgh, BT, GH, q0, q1, db_hh, NULL);
        } else {
            FR_(colsum_add)(dgx, BT, GH, q0, q1, db_ih, db_hh);
        }
        fr_split(BT, nt, tid, 1, &r0, &r1);
        if (dX)
            FR_(gemm_rm)(blas, 0, 0, r1 - r0, I, GH, 1, dgx + r0 * GH, GH, W_ih, I,
                         accumulate_dx ? 1 : 0, dX + r0 * I, I);
    }
    free(packed);
    return FR_OK;
}

int FR_(fr_generate)(const fr_blas *blas, const fr_generator *g, const fr_sampling *opt,
                     int64_t n, const int32_t *prompt, int64_t n_prompt, const real *h0,
                     const real *c0, int64_t n_new, int32_t *out, real *ws, int n_threads)
{
    if (!blas || !blas->FR_GEMM || !g || !opt || !out || !ws || n < 1 || n_new < 0 ||
        n_prompt < 1 || !prompt || fr_gates(g->cell) == 0 || g->num_layers < 1 ||
        g->hidden < 1 || g->embed_dim < 1 || g->vocab < 1 || g->n_outputs < 1)
        return FR_ERR_ARG;
    const int cell = g->cell, lstm = cell == FR_LSTM, gru = cell == FR_GRU;
    const int relu = cell == FR_RNN_RELU;
    const int64_t L = g->num_layers, H = g->hidden, E = g->embed_dim, G = fr_gates(cell);
    const int64_t GH = G * H, V = g->n_outputs > 1 ? g->n_outputs : 2, n_out = g->n_outputs;
    if (!fr_fits(n, GH) || !fr_fits(n, V) || !fr_fits(n, E)) return FR_ERR_TOO_LARGE;
    for (int64_t i = 0; i < n * n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= g->vocab) return FR_ERR_ARG;
    for (int64_t o = 0; o < V; o++) /* every sampled token must have an embedding */
        if (g->out_tokens[o] < 0 || g->out_tokens[o] >= g->vocab) return FR_ERR_ARG;
    const int nth = fr_team_size(n_threads, n, H, G, E, sizeof(real));

    real *h = ws, *c = h + 2 * L * n * H, *gates = c + 2 * L * n * H, *gh = gates + n * GH;
    real *x = gh + n * 3 * H, *logits_r = x + n * E;
    /* the non-`real` scratch and per-thread rows, allocated once before the loop */
    void *mem = malloc((size_t)V * (sizeof(double) + sizeof(fr_prob)) +
                       (size_t)n * (sizeof(fr_rng) + sizeof(int32_t)) +
                       (size_t)nth * 2 * H * sizeof(real));
    if (!mem) return FR_ERR_ARG;
    fr_prob *probs = (fr_prob *)mem;
    fr_rng *rngs = (fr_rng *)(probs + V);
    double *logits = (double *)(rngs + n);
    int32_t *token = (int32_t *)(logits + V);
    real *thread_rows = (real *)(void *)(token + n); /* y and aux rows of each thread */
    for (int64_t i = 0; i < n; i++) fr_rng_seed(&rngs[i], opt->seed, (uint64_t)i);
    for (int64_t l = 0; l < L; l++) {
        FR_(copy_rows)(h + l * n * H, H, h0 ? h0 + l * n * H : NULL, n, H);
        FR_(copy_rows)(c + l * n * H, H, c0 ? c0 + l * n * H : NULL, n, H);
    }
    /* every weight in panels once, before the loop (batch-1 steps stream the
     * weights; BLAS's small-matrix path would repack them): per layer W_ih and
     * W_hh, then the head, each laid out thread slice by thread slice */
    real *packed = NULL;
    int64_t layer_stride = 0, ih_size = 0;
#if FR_HAVE_PACKED
    if (fr_packed_supported()) {
        int64_t slices = FR_(n_panels)(H, nth);
        ih_size = G * slices * (E > H ? E : H) * FR_NR;
        layer_stride = ih_size + G * slices * H * FR_NR;
        int64_t total = L * layer_stride + FR_(n_panels)(n_out, nth) * H * FR_NR;
        packed = (real *)malloc((size_t)total * sizeof(real));
        if (!packed) { free(mem); return FR_ERR_ARG; }
    }
#endif
    const real *emb = (const real *)g->embedding, *hb = (const real *)g->head_b;
    int cur = 0; /* which of the two state buffers holds the current state */

#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const int tid = fr_thread_id(), nt = fr_team();
        int64_t j0, j1, o0, o1;
        fr_split(H, nt, tid, FR_UNIT_ALIGN, &j0, &j1);
        fr_split(n_out, nt, tid, FR_UNIT_ALIGN, &o0, &o1);
        real *my_y = thread_rows + tid * 2 * H, *my_aux = my_y + H;
#if FR_HAVE_PACKED
        real *head_panels = NULL;
        if (packed) {
            for (int64_t l = 0; l < L; l++) {
                real *base = packed + l * layer_stride;
                FR_(pack_forward)((const real *)g->W_ih[l], l ? H : E, H, G, j0, j1,
                                  base + G * (j0 / FR_NR) * (l ? H : E) * FR_NR);
                FR_(pack_forward)((const real *)g->W_hh[l], H, H, G, j0, j1,
                                  base + ih_size + G * (j0 / FR_NR) * H * FR_NR);
            }
            head_panels = packed + L * layer_stride + (o0 / FR_NR) * H * FR_NR;
            FR_(pack_forward)((const real *)g->head_W, H, n_out, 1, o0, o1, head_panels);
        }
#endif
        for (int64_t step = 0; step < n_prompt - 1 + n_new; step++) {
#pragma omp single
            for (int64_t i = 0; i < n; i++) {
                int32_t tok = step < n_prompt ? prompt[i * n_prompt + step] : token[i];
                memcpy(x + i * E, emb + (int64_t)tok * E, (size_t)E * sizeof(real));
            }
            const real *layer_in = x;
            int64_t in_dim = E;
            for (int64_t l = 0; l < L; l++) {
                real *hp = h + (cur * L + l) * n * H, *hn = h + ((1 - cur) * L + l) * n * H;
                real *cp = c + (cur * L + l) * n * H, *cn = c + ((1 - cur) * L + l) * n * H;
                const real *bi = (const real *)g->b_ih[l], *bh = (const real *)g->b_hh[l];
#if FR_HAVE_PACKED
                if (packed) {
                    real *base = packed + l * layer_stride;
                    FR_(packed_apply)(n, in_dim, layer_in, in_dim,
                                      base + G * (j0 / FR_NR) * in_dim * FR_NR, G, H, j0, j1,
                                      gates, GH, 0);
                    FR_(packed_apply)(n, H, hp, H, base + ih_size + G * (j0 / FR_NR) * H * FR_NR,
                                      G, H, j0, j1, gru ? gh : gates, GH, !gru);
                } else
#endif
                for (int64_t k = 0; k < G && j1 > j0; k++) {
                    const real *Wih = (const real *)g->W_ih[l], *Whh = (const real *)g->W_hh[l];
                    FR_(gemm_rm)(blas, 0, 1, n, j1 - j0, in_dim, 1, layer_in, in_dim,
                                 Wih + (k * H + j0) * in_dim, in_dim, 0, gates + k * H + j0, GH);
                    FR_(gemm_rm)(blas, 0, 1, n, j1 - j0, H, 1, hp, H, Whh + (k * H + j0) * H, H,
                                 gru ? 0 : 1, (gru ? gh : gates) + k * H + j0, GH);
                }
                for (int64_t i = 0; i < n && j1 > j0; i++) {
                    real *gi = gates + i * GH + j0, *hni = hn + i * H + j0;
                    if (lstm)
                        FR_(lstm_forward_row)(j1 - j0, H, gi, bi + j0, bh + j0, cp + i * H + j0,
                                              hni, cn + i * H + j0, my_y, my_aux);
                    else if (gru)
                        FR_(gru_forward_row)(j1 - j0, H, gi, gh + i * GH + j0, bi + j0, bh + j0,
                                             hp + i * H + j0, hni, my_y, my_aux);
                    else
                        FR_(rnn_forward_row)(j1 - j0, relu, gi, bi + j0, bh + j0, hni, my_y);
                }
                layer_in = hn;
                in_dim = H;
#pragma omp barrier
            }
            if (step >= n_prompt - 1) { /* past the prompt: sample the next tokens */
                const real *top = h + ((1 - cur) * L + L - 1) * n * H;
#if FR_HAVE_PACKED
                if (packed)
                    FR_(packed_apply)(n, H, top, H, head_panels, 1, n_out, o0, o1, logits_r,
                                      n_out, 0);
                else
#endif
                FR_(gemm_rm)(blas, 0, 1, n, o1 - o0, H, 1, top, H,
                             (const real *)g->head_W + o0 * H, H, 0, logits_r + o0, n_out);
#pragma omp barrier
#pragma omp single
                for (int64_t i = 0; i < n; i++) {
                    const real *z = logits_r + i * n_out;
                    if (n_out == 1) { /* binary head: logits (0, z) */
                        logits[0] = 0;
                        logits[1] = (double)z[0] + (double)hb[0];
                    } else {
                        for (int64_t v = 0; v < V; v++) logits[v] = (double)z[v] + (double)hb[v];
                    }
                    int64_t o = fr_sample(logits, V, opt, &rngs[i], probs);
                    token[i] = g->out_tokens[o];
                    out[i * n_new + (step - (n_prompt - 1))] = token[i];
                }
            }
#pragma omp single
            cur = 1 - cur;
        }
    }
    free(mem);
    free(packed);
    return FR_OK;
}
