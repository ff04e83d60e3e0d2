/* Layer-normalized LSTM / GRU kernels for one real type; included by lnrnn.c
 * with real, LN_(name) and LN_GEMM defined; no include guard on purpose.
 *
 * Forward, per thread's batch rows [lo, hi):
 *   xh = LN-normalize(X W_ih^T)                  one GEMM, then per row
 *   per step: hh[t] = (m * h) W_hh^T             one GEMM for the rows
 *             fused row pass: normalize hh, affine, bias, activations,
 *             cell update (LSTM: normalize c'), h', Y
 * Backward, per step: the fused row pass back to the recurrent projection's
 * gradient, one GEMM for dh; after the loop the parameter sums (split by
 * columns), the input-side norm backward (by rows) and the dW_ih, dW_hh, dX
 * GEMMs.
 */

/* Row-major C = op(A) op(B) through column-major gemm: C^T = op(B)^T op(A)^T. */
static void LN_(gemm_rm)(const fr_blas *blas, int trans_a, int trans_b, int64_t M, int64_t N,
                         int64_t K, real beta, const real *A, int64_t lda, const real *B,
                         int64_t ldb, real *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    int m = (int)N, n = (int)M, k = (int)K, la = (int)lda, lb = (int)ldb, lc = (int)ldc;
    real alpha = 1;
    blas->LN_GEMM(&tb, &ta, &m, &n, &k, &alpha, (real *)B, &lb, (real *)A, &la, &beta, C, &lc);
}

typedef struct { real *xh, *hh, *gates, *h, *c, *aux, *rstd, *state, *hm; } LN_(forward_ws);
typedef struct { real *dpx, *dph, *dgh, *dcn, *hmall, *dstate, *dhm; } LN_(backward_ws);

static void LN_(point_forward_ws)(const fr_shape *s, real *ws, LN_(forward_ws) *f)
{
    int64_t sizes[LN_FORWARD_REGIONS];
    real *p[LN_FORWARD_REGIONS];
    ln_forward_sizes(s, sizes);
    for (int i = 0; i < LN_FORWARD_REGIONS; i++) {
        p[i] = sizes[i] ? ws : NULL;
        ws += sizes[i];
    }
    *f = (LN_(forward_ws)){p[LN_XH], p[LN_HH], p[LN_GATES], p[LN_H], p[LN_C], p[LN_AUX],
                           p[LN_RSTD], p[LN_STATE], p[LN_HM]};
}

static void LN_(point_backward_ws)(const fr_shape *s, real *ws, LN_(backward_ws) *b)
{
    int64_t sizes[LN_BACKWARD_REGIONS];
    real *p[LN_BACKWARD_REGIONS];
    ln_backward_sizes(s, sizes);
    for (int i = 0; i < LN_BACKWARD_REGIONS; i++) {
        p[i] = sizes[i] ? ws : NULL;
        ws += sizes[i];
    }
    *b = (LN_(backward_ws)){p[LN_DPX], p[LN_DPH], p[LN_DGH], p[LN_DCN], p[LN_HMALL],
                            p[LN_DSTATE], p[LN_DHM]};
}

/* v (n) -> (v - mean) / sqrt(var + eps) in place; returns 1 / sqrt(var + eps).
 * on == 0: the identity (returns 1). */
FR_DISPATCHED(real, LN_(normalize),
              (real *v, int64_t n, int on),
              (v, n, on))
{
    if (!on) return 1;
    double mean = 0, var = 0;
    for (int64_t j = 0; j < n; j++) mean += v[j];
    mean /= (double)n;
    for (int64_t j = 0; j < n; j++) var += ((double)v[j] - mean) * ((double)v[j] - mean);
    real rstd = (real)(1.0 / sqrt(var / (double)n + FR_LN_EPS));
    for (int64_t j = 0; j < n; j++) v[j] = (real)((v[j] - mean) * rstd);
    return rstd;
}

/* d (n): the gradient w.r.t. normalize's output -> w.r.t. its input, in place. */
FR_DISPATCHED(void, LN_(normalize_backward),
              (real *d, const real *vhat, int64_t n, real rstd, int on),
              (d, vhat, n, rstd, on))
{
    if (!on) return;
    double md = 0, mdv = 0;
    for (int64_t j = 0; j < n; j++) {
        md += d[j];
        mdv += (double)d[j] * vhat[j];
    }
    md /= (double)n;
    mdv /= (double)n;
    for (int64_t j = 0; j < n; j++) d[j] = (real)(rstd * (d[j] - md - vhat[j] * mdv));
}

/* gain * v + bias, or v without a norm. */
static inline real LN_(affine)(const real *gain, const real *bias, int64_t j, real v)
{
    return gain ? v * gain[j] + bias[j] : v;
}

typedef struct { /* the typed weights */
    const real *W_ih, *W_hh, *b_ih, *b_hh, *ih_w, *ih_b, *hh_w, *hh_b, *c_w, *c_b;
} LN_(weights);

typedef struct { /* one forward call, shared by the threads */
    const fr_blas *blas;
    const fr_shape *s;
    LN_(weights) w;
    const real *X, *h0, *c0, *mask;
    real *Y, *hN, *cN;
    int64_t ldy;
    LN_(forward_ws) f;
} LN_(forward_call);

static LN_(weights) LN_(typed)(const fr_ln_weights *w)
{
    return (LN_(weights)){w->W_ih, w->W_hh, w->b_ih, w->b_hh, w->ln_ih_w, w->ln_ih_b,
                          w->ln_hh_w, w->ln_hh_b, w->ln_c_w, w->ln_c_b};
}

static int LN_(active)(const fr_shape *s, int64_t b, int64_t t)
{
    return !s->lengths || t < s->lengths[b];
}

/* LSTM, one row r = (b, t) of an active step: hs/cs the row's running h, c. */
FR_DISPATCHED(void, LN_(lstm_row),
              (const LN_(forward_call) *c, int64_t r, real *hs, real *cs, real *y),
              (c, r, hs, cs, y))
{
    const LN_(weights) *w = &c->w;
    int64_t H = c->s->hidden, GH = 4 * H;
    int on = w->ih_w != NULL;
    real *xh = c->f.xh + r * GH, *hh = c->f.hh + r * GH, *g = c->f.gates + r * GH;
    real *cn = c->f.aux + r * H, *rstd = c->f.rstd + r * 3;
    rstd[1] = LN_(normalize)(hh, GH, on);
    for (int64_t j = 0; j < GH; j++)
        g[j] = LN_(affine)(w->ih_w, w->ih_b, j, xh[j]) + LN_(affine)(w->hh_w, w->hh_b, j, hh[j]) +
               w->b_ih[j] + w->b_hh[j];
    LN_(ln_sigmoid)(g, g, 2 * H);
    LN_(ln_tanh)(g + 2 * H, g + 2 * H, H);
    LN_(ln_sigmoid)(g + 3 * H, g + 3 * H, H);
    for (int64_t j = 0; j < H; j++) {
        cs[j] = g[H + j] * cs[j] + g[j] * g[2 * H + j];
        cn[j] = cs[j];
    }
    rstd[2] = LN_(normalize)(cn, H, on);
    for (int64_t j = 0; j < H; j++) hs[j] = LN_(affine)(w->c_w, w->c_b, j, cn[j]);
    LN_(ln_tanh)(hs, hs, H);
    for (int64_t j = 0; j < H; j++) {
        hs[j] *= g[3 * H + j];
        y[j] = hs[j];
    }
}

/* GRU, one row r = (b, t) of an active step. aux keeps ah_n for backward. */
FR_DISPATCHED(void, LN_(gru_row),
              (const LN_(forward_call) *c, int64_t r, real *hs, real *y),
              (c, r, hs, y))
{
    const LN_(weights) *w = &c->w;
    int64_t H = c->s->hidden, GH = 3 * H;
    int on = w->ih_w != NULL;
    real *xh = c->f.xh + r * GH, *hh = c->f.hh + r * GH, *g = c->f.gates + r * GH;
    real *ahn = c->f.aux + r * H;
    c->f.rstd[r * 3 + 1] = LN_(normalize)(hh, GH, on);
    for (int64_t j = 0; j < GH; j++) {
        real ax = LN_(affine)(w->ih_w, w->ih_b, j, xh[j]) + w->b_ih[j];
        real ah = LN_(affine)(w->hh_w, w->hh_b, j, hh[j]) + w->b_hh[j];
        if (j < 2 * H)
            g[j] = ax + ah;
        else {
            g[j] = ax;
            ahn[j - 2 * H] = ah;
        }
    }
    LN_(ln_sigmoid)(g, g, 2 * H);
    for (int64_t j = 0; j < H; j++) g[2 * H + j] += g[j] * ahn[j];
    LN_(ln_tanh)(g + 2 * H, g + 2 * H, H);
    for (int64_t j = 0; j < H; j++) {
        real z = g[H + j], n = g[2 * H + j];
        hs[j] = (1 - z) * n + z * hs[j];
        y[j] = hs[j];
    }
}

/* The whole time loop for batch rows [lo, hi). */
static void LN_(forward_rows)(const LN_(forward_call) *c, int64_t lo, int64_t hi)
{
    const fr_shape *s = c->s;
    int64_t T = s->steps, I = s->inputs, H = s->hidden, GH = fr_gates(s->cell) * H;
    int lstm = s->cell == FR_LSTM, on = c->w.ih_w != NULL;
    if (hi <= lo) return;
    LN_(gemm_rm)(c->blas, 0, 1, (hi - lo) * T, GH, I, 0, c->X + lo * T * I, I, c->w.W_ih, I,
                 c->f.xh + lo * T * GH, GH);
    for (int64_t r = lo * T; r < hi * T; r++)
        c->f.rstd[r * 3] = LN_(normalize)(c->f.xh + r * GH, GH, on);
    for (int64_t b = lo; b < hi; b++) {
        real *hs = c->f.state + b * 2 * H, *cs = hs + H;
        for (int64_t j = 0; j < H; j++) {
            hs[j] = c->h0 ? c->h0[b * H + j] : 0;
            cs[j] = c->c0 ? c->c0[b * H + j] : 0;
        }
    }
    for (int64_t step = 0; step < T; step++) {
        int64_t t = s->reverse ? T - 1 - step : step;
        for (int64_t b = lo; b < hi; b++) {
            const real *hs = c->f.state + b * 2 * H;
            int64_t r = b * T + t;
            memcpy(c->f.h + r * H, hs, (size_t)H * sizeof(real));
            if (lstm) memcpy(c->f.c + r * H, hs + H, (size_t)H * sizeof(real));
            for (int64_t j = 0; j < H; j++)
                c->f.hm[b * H + j] = c->mask ? hs[j] * c->mask[b * H + j] : hs[j];
        }
        LN_(gemm_rm)(c->blas, 0, 1, hi - lo, GH, H, 0, c->f.hm + lo * H, H, c->w.W_hh, H,
                     c->f.hh + (lo * T + t) * GH, T * GH);
        for (int64_t b = lo; b < hi; b++) {
            real *hs = c->f.state + b * 2 * H, *y = c->Y + (b * T + t) * c->ldy;
            if (!LN_(active)(s, b, t))
                memset(y, 0, (size_t)H * sizeof(real));
            else if (lstm)
                LN_(lstm_row)(c, b * T + t, hs, hs + H, y);
            else
                LN_(gru_row)(c, b * T + t, hs, y);
        }
    }
    for (int64_t b = lo; b < hi; b++) {
        memcpy(c->hN + b * H, c->f.state + b * 2 * H, (size_t)H * sizeof(real));
        if (lstm) memcpy(c->cN + b * H, c->f.state + b * 2 * H + H, (size_t)H * sizeof(real));
    }
}

/* Null pointers and a half-given norm are argument errors. */
static int LN_(check_weights)(const fr_shape *s, const fr_ln_weights *w)
{
    if (!w || !w->W_ih || !w->W_hh || !w->b_ih || !w->b_hh) return FR_ERR_ARG;
    int on = w->ln_ih_w != NULL;
    if (!w->ln_ih_b != !on || !w->ln_hh_w != !on || !w->ln_hh_b != !on) return FR_ERR_ARG;
    int cell_norm = on && s->cell == FR_LSTM;
    if (!w->ln_c_w != !cell_norm || !w->ln_c_b != !cell_norm) return FR_ERR_ARG;
    return FR_OK;
}

int LN_(fr_ln_forward)(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                       const real *X, const real *h0, const real *c0, const real *mask,
                       real *Y, int64_t ldy, real *hN, real *cN, real *ws, int n_threads)
{
    int rc = ln_check(s, ldy);
    if (rc != FR_OK) return rc;
    if (!blas || !blas->LN_GEMM || !X || !Y || !hN || !ws || (s->cell == FR_LSTM && !cN) ||
        LN_(check_weights)(s, w) != FR_OK)
        return FR_ERR_ARG;
    LN_(forward_call) c = {blas, s, LN_(typed)(w), X, h0, c0, mask, Y, hN, cN, ldy, {0}};
    LN_(point_forward_ws)(s, ws, &c.f);
    int64_t GH = fr_gates(s->cell) * s->hidden;
    int nt = ln_team_size(n_threads, s->batch, GH, s->hidden, s->inputs);
#pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        ln_split(s->batch, ln_team(), ln_thread_id(), &lo, &hi);
        LN_(forward_rows)(&c, lo, hi);
    }
    return FR_OK;
}

typedef struct { /* one backward call, shared by the threads */
    const fr_blas *blas;
    const fr_shape *s;
    LN_(weights) w;
    const real *X, *mask, *dY, *dhN, *dcN;
    int64_t ldy;
    LN_(forward_ws) f; /* the training forward's, read only */
    LN_(backward_ws) d;
} LN_(backward_call);

/* LSTM, active row r: dh (already + dY) and dc of the row in; out: the gate
 * gradients dpx (= dph), d of the normalized cell's affine output (dcn),
 * dc of the previous step, and dh's direct part (0: all through W_hh). */
FR_DISPATCHED(void, LN_(lstm_row_backward),
              (const LN_(backward_call) *c, int64_t r, real *dh, real *dc),
              (c, r, dh, dc))
{
    const LN_(weights) *w = &c->w;
    int64_t H = c->s->hidden, GH = 4 * H;
    int on = w->ih_w != NULL;
    const real *g = c->f.gates + r * GH, *cn = c->f.aux + r * H, *cp = c->f.c + r * H;
    real *dp = c->d.dpx + r * GH, *dcn = c->d.dcn + r * H, *tmp = c->d.dgh + r * GH;
    for (int64_t j = 0; j < H; j++) dcn[j] = LN_(affine)(w->c_w, w->c_b, j, cn[j]);
    LN_(ln_tanh)(dcn, dcn, H);
    for (int64_t j = 0; j < H; j++) {
        real tc = dcn[j], o = g[3 * H + j];
        dp[3 * H + j] = dh[j] * tc * o * (1 - o);
        dcn[j] = dh[j] * o * (1 - tc * tc);
        tmp[j] = w->c_w ? dcn[j] * w->c_w[j] : dcn[j];
    }
    LN_(normalize_backward)(tmp, cn, H, c->f.rstd[r * 3 + 2], on);
    for (int64_t j = 0; j < H; j++) {
        real i = g[j], f = g[H + j], gg = g[2 * H + j], dct = tmp[j] + dc[j];
        dp[j] = dct * gg * i * (1 - i);
        dp[H + j] = dct * cp[j] * f * (1 - f);
        dp[2 * H + j] = dct * i * (1 - gg * gg);
        dc[j] = dct * f;
        dh[j] = 0;
    }
    memcpy(c->d.dph + r * GH, dp, (size_t)GH * sizeof(real));
}

/* GRU, active row r: dh (already + dY) in; out: dpx, dph and dh's direct part z dh. */
FR_DISPATCHED(void, LN_(gru_row_backward),
              (const LN_(backward_call) *c, int64_t r, real *dh),
              (c, r, dh))
{
    int64_t H = c->s->hidden, GH = 3 * H;
    const real *g = c->f.gates + r * GH, *ahn = c->f.aux + r * H, *hp = c->f.h + r * H;
    real *dpx = c->d.dpx + r * GH, *dph = c->d.dph + r * GH;
    for (int64_t j = 0; j < H; j++) {
        real rr = g[j], z = g[H + j], n = g[2 * H + j];
        real dnp = dh[j] * (1 - z) * (1 - n * n);
        dpx[j] = dph[j] = dnp * ahn[j] * rr * (1 - rr);
        dpx[H + j] = dph[H + j] = dh[j] * (hp[j] - n) * z * (1 - z);
        dpx[2 * H + j] = dnp;
        dph[2 * H + j] = dnp * rr;
        dh[j] *= z;
    }
}

/* The recurrent side's norm backward: dgh = d(loss)/d(hm W_hh^T) of row r. */
static void LN_(recurrent_grad)(const LN_(backward_call) *c, int64_t r)
{
    int64_t GH = fr_gates(c->s->cell) * c->s->hidden;
    const real *dph = c->d.dph + r * GH, *gain = c->w.hh_w;
    real *dgh = c->d.dgh + r * GH;
    for (int64_t j = 0; j < GH; j++) dgh[j] = gain ? dph[j] * gain[j] : dph[j];
    LN_(normalize_backward)(dgh, c->f.hh + r * GH, GH, c->f.rstd[r * 3 + 1], gain != NULL);
}

/* The time loop backwards for batch rows [lo, hi). */
static void LN_(backward_rows)(const LN_(backward_call) *c, int64_t lo, int64_t hi)
{
    const fr_shape *s = c->s;
    int64_t T = s->steps, H = s->hidden, GH = fr_gates(s->cell) * H;
    int lstm = s->cell == FR_LSTM;
    if (hi <= lo) return;
    for (int64_t b = lo; b < hi; b++) {
        real *dh = c->d.dstate + b * 2 * H, *dc = dh + H;
        for (int64_t j = 0; j < H; j++) {
            dh[j] = c->dhN ? c->dhN[b * H + j] : 0;
            dc[j] = c->dcN ? c->dcN[b * H + j] : 0;
        }
    }
    for (int64_t step = T - 1; step >= 0; step--) {
        int64_t t = s->reverse ? T - 1 - step : step;
        for (int64_t b = lo; b < hi; b++) {
            int64_t r = b * T + t;
            real *dh = c->d.dstate + b * 2 * H;
            for (int64_t j = 0; j < H; j++)
                c->d.hmall[r * H + j] = c->f.h[r * H + j] * (c->mask ? c->mask[b * H + j] : 1);
            if (!LN_(active)(s, b, t)) { /* no gradient here; dh, dc pass through */
                memset(c->d.dpx + r * GH, 0, (size_t)GH * sizeof(real));
                memset(c->d.dph + r * GH, 0, (size_t)GH * sizeof(real));
                memset(c->d.dgh + r * GH, 0, (size_t)GH * sizeof(real));
                memset(c->d.dcn + r * H, 0, (size_t)H * sizeof(real));
                continue;
            }
            if (c->dY)
                for (int64_t j = 0; j < H; j++) dh[j] += c->dY[r * c->ldy + j];
            if (lstm)
                LN_(lstm_row_backward)(c, r, dh, dh + H);
            else
                LN_(gru_row_backward)(c, r, dh);
            LN_(recurrent_grad)(c, r);
        }
        LN_(gemm_rm)(c->blas, 0, 0, hi - lo, H, GH, 0, c->d.dgh + (lo * T + t) * GH, T * GH,
                     c->w.W_hh, H, c->d.dhm + lo * H, H);
        for (int64_t b = lo; b < hi; b++) {
            if (!LN_(active)(s, b, t)) continue;
            real *dh = c->d.dstate + b * 2 * H;
            for (int64_t j = 0; j < H; j++)
                dh[j] += c->d.dhm[b * H + j] * (c->mask ? c->mask[b * H + j] : 1);
        }
    }
}

/* Columns [q0, q1) of the sums over all B*T rows: biases and norm parameters. */
FR_DISPATCHED(void, LN_(parameter_sums),
              (const LN_(backward_call) *c, const fr_ln_grads *g, int64_t q0, int64_t q1),
              (c, g, q0, q1))
{
    int64_t BT = c->s->batch * c->s->steps, H = c->s->hidden, GH = fr_gates(c->s->cell) * H;
    real *db_ih = g->db_ih, *db_hh = g->db_hh, *dih_w = g->dln_ih_w, *dih_b = g->dln_ih_b;
    real *dhh_w = g->dln_hh_w, *dhh_b = g->dln_hh_b, *dc_w = g->dln_c_w, *dc_b = g->dln_c_b;
    for (int64_t r = 0; r < BT; r++) {
        const real *dpx = c->d.dpx + r * GH, *dph = c->d.dph + r * GH;
        const real *xh = c->f.xh + r * GH, *hh = c->f.hh + r * GH;
        for (int64_t j = q0; j < q1; j++) {
            db_ih[j] += dpx[j];
            db_hh[j] += dph[j];
            if (!dih_w) continue;
            dih_w[j] += dpx[j] * xh[j];
            dih_b[j] += dpx[j];
            dhh_w[j] += dph[j] * hh[j];
            dhh_b[j] += dph[j];
        }
        if (!dc_w) continue;
        for (int64_t j = q0; j < q1 && j < H; j++) {
            dc_w[j] += c->d.dcn[r * H + j] * c->f.aux[r * H + j];
            dc_b[j] += c->d.dcn[r * H + j];
        }
    }
}

/* After the loop, on every thread: parameter sums by columns, the input-side
 * norm backward by rows, then dW_ih, dW_hh (by rows of the weights) and dX. */
static void LN_(backward_weights)(const LN_(backward_call) *c, const fr_ln_grads *g, real *dX,
                                  int accumulate_dx)
{
    const fr_shape *s = c->s;
    int64_t BT = s->batch * s->steps, I = s->inputs, H = s->hidden, GH = fr_gates(s->cell) * H;
    int nt = ln_team(), tid = ln_thread_id(), on = c->w.ih_w != NULL;
    int64_t q0, q1, r0, r1;
    ln_split(GH, nt, tid, &q0, &q1);
    ln_split(BT, nt, tid, &r0, &r1);
    LN_(parameter_sums)(c, g, q0, q1);
#pragma omp barrier
    for (int64_t r = r0; r < r1 && on; r++) {
        real *dpx = c->d.dpx + r * GH;
        for (int64_t j = 0; j < GH; j++) dpx[j] *= c->w.ih_w[j];
        LN_(normalize_backward)(dpx, c->f.xh + r * GH, GH, c->f.rstd[r * 3], on);
    }
#pragma omp barrier
    LN_(gemm_rm)(c->blas, 1, 0, q1 - q0, I, BT, 1, c->d.dpx + q0, GH, c->X, I,
                 (real *)g->dW_ih + q0 * I, I);
    LN_(gemm_rm)(c->blas, 1, 0, q1 - q0, H, BT, 1, c->d.dgh + q0, GH, c->d.hmall, H,
                 (real *)g->dW_hh + q0 * H, H);
    if (dX)
        LN_(gemm_rm)(c->blas, 0, 0, r1 - r0, I, GH, accumulate_dx ? 1 : 0, c->d.dpx + r0 * GH,
                     GH, c->w.W_ih, I, dX + r0 * I, I);
}

static int LN_(check_grads)(const fr_ln_weights *w, const fr_ln_grads *g)
{
    if (!g || !g->dW_ih || !g->dW_hh || !g->db_ih || !g->db_hh) return FR_ERR_ARG;
    if (!g->dln_ih_w != !w->ln_ih_w || !g->dln_ih_b != !w->ln_ih_b ||
        !g->dln_hh_w != !w->ln_hh_w || !g->dln_hh_b != !w->ln_hh_b ||
        !g->dln_c_w != !w->ln_c_w || !g->dln_c_b != !w->ln_c_b)
        return FR_ERR_ARG;
    return FR_OK;
}

int LN_(fr_ln_backward)(const fr_blas *blas, const fr_shape *s, const fr_ln_weights *w,
                        const real *X, const real *mask, const real *ws, const real *dY,
                        int64_t ldy, const real *dhN, const real *dcN, real *dX,
                        int accumulate_dx, const fr_ln_grads *g, real *dh0, real *dc0,
                        real *bws, int n_threads)
{
    int rc = ln_check(s, ldy);
    if (rc != FR_OK) return rc;
    if (!blas || !blas->LN_GEMM || !X || !ws || !bws || !dh0 ||
        (s->cell == FR_LSTM && !dc0) || LN_(check_weights)(s, w) != FR_OK ||
        LN_(check_grads)(w, g) != FR_OK)
        return FR_ERR_ARG;
    LN_(backward_call) c = {blas, s, LN_(typed)(w), X, mask, dY, dhN, dcN, ldy, {0}, {0}};
    LN_(point_forward_ws)(s, (real *)ws, &c.f);
    LN_(point_backward_ws)(s, bws, &c.d);
    int64_t B = s->batch, H = s->hidden;
    int nt = ln_team_size(n_threads, B, fr_gates(s->cell) * H, H, s->inputs);
#pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        ln_split(B, ln_team(), ln_thread_id(), &lo, &hi);
        LN_(backward_rows)(&c, lo, hi);
#pragma omp barrier
        LN_(backward_weights)(&c, g, dX, accumulate_dx);
    }
    for (int64_t b = 0; b < B; b++) {
        memcpy(dh0 + b * H, c.d.dstate + b * 2 * H, (size_t)H * sizeof(real));
        if (s->cell == FR_LSTM)
            memcpy(dc0 + b * H, c.d.dstate + b * 2 * H + H, (size_t)H * sizeof(real));
    }
    return FR_OK;
}
