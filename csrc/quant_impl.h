/* The AVX-512 kernels of one reduced kind. Included by quant.c with
 * FRQ_(name), FRQ_TARGET, FRQ_ACC (the accumulator vector), FRQ_ZERO(),
 * FRQ_DOT(acc, x, w) (x, w: __m512i), FRQ_ACT and FRQ_W (activation and
 * weight elements), FRQ_GROUP (elements per 32-bit lane), FRQ_INTEGER (int32
 * sums to scale) and FRQ_ZERO_POINT (int8's activation zero point) defined,
 * which it undefines at its end; no include guard on purpose. */

/* Panel p's outputs of row m from its accumulator, as fr_qint_store /
 * fr_float_store compute them element by element (the same operations in
 * the same order, so the same bits), in vector registers: the scalar stores
 * took 37% of a small LSTM's int8 inference (perf, B=32 H=64). */
__attribute__((target(FRQ_TARGET))) static inline void FRQ_(store)(
    const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p, FRQ_ACC acc, float *c,
    int accumulate)
{
    const int64_t n0 = p * FR_Q_PANEL;
    const __mmask16 k = (__mmask16)((1u << fr_qpanel_width(w, p)) - 1u);
#if FRQ_INTEGER
#if FRQ_ZERO_POINT
    acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(r->zp[m]),
                                                   _mm512_maskz_loadu_epi32(k, w->row_sum + n0)));
#endif
    const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(r->sa[m]),
                                       _mm512_maskz_loadu_ps(k, w->scale + n0));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
#else
    (void)r;
    (void)m;
    __m512 v = acc;
#endif
    /* a masked add is a builtin, not a vector `+` that -ffp-contract=fast could
     * fuse with the product above (the portable path has no fused multiply-add;
     * fr_qint_store inlined here did fuse, and accumulating calls differed) */
    if (accumulate) v = _mm512_maskz_add_ps(k, _mm512_maskz_loadu_ps(k, c + n0), v);
    _mm512_mask_storeu_ps(c + n0, k, v);
}

/* Rows m..m+3 against panels p and p + 1 (np = 2) or p alone (np = 1: the
 * second 4 chains repeat it and are dropped): 8 accumulators, so that the
 * chains cover the dot instruction's latency (4 left each waiting on it), and
 * 2 weight vectors per 4 broadcasts. */
__attribute__((target(FRQ_TARGET))) static void FRQ_(rows4x2)(
    const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p, int np, float *C,
    int64_t ldc, int accumulate)
{
    const int64_t groups = r->kp / FRQ_GROUP, panel = groups * FR_Q_PANEL * FRQ_GROUP;
    const int64_t stride = np > 1 ? panel : 0;
    const FRQ_W *P = (const FRQ_W *)w->packed + p * panel;
    const FRQ_ACT *a = (const FRQ_ACT *)r->rows + m * r->kp;
    const int64_t lda = r->kp;
    FRQ_ACC acc0 = FRQ_ZERO(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    FRQ_ACC acc4 = acc0, acc5 = acc0, acc6 = acc0, acc7 = acc0;
    for (int64_t g = 0; g < groups; g++) {
        const FRQ_W *pg = P + g * FR_Q_PANEL * FRQ_GROUP;
        const __m512i w0 = _mm512_loadu_si512((const void *)pg);
        const __m512i w1 = _mm512_loadu_si512((const void *)(pg + stride));
        int32_t x[4];
        memcpy(&x[0], a + FRQ_GROUP * g, sizeof x[0]);
        memcpy(&x[1], a + lda + FRQ_GROUP * g, sizeof x[1]);
        memcpy(&x[2], a + 2 * lda + FRQ_GROUP * g, sizeof x[2]);
        memcpy(&x[3], a + 3 * lda + FRQ_GROUP * g, sizeof x[3]);
        const __m512i x0 = _mm512_set1_epi32(x[0]), x1 = _mm512_set1_epi32(x[1]);
        const __m512i x2 = _mm512_set1_epi32(x[2]), x3 = _mm512_set1_epi32(x[3]);
        acc0 = FRQ_DOT(acc0, x0, w0);
        acc1 = FRQ_DOT(acc1, x1, w0);
        acc2 = FRQ_DOT(acc2, x2, w0);
        acc3 = FRQ_DOT(acc3, x3, w0);
        acc4 = FRQ_DOT(acc4, x0, w1);
        acc5 = FRQ_DOT(acc5, x1, w1);
        acc6 = FRQ_DOT(acc6, x2, w1);
        acc7 = FRQ_DOT(acc7, x3, w1);
    }
    FRQ_(store)(w, r, m, p, acc0, C + m * ldc, accumulate);
    FRQ_(store)(w, r, m + 1, p, acc1, C + (m + 1) * ldc, accumulate);
    FRQ_(store)(w, r, m + 2, p, acc2, C + (m + 2) * ldc, accumulate);
    FRQ_(store)(w, r, m + 3, p, acc3, C + (m + 3) * ldc, accumulate);
    if (np < 2) return;
    FRQ_(store)(w, r, m, p + 1, acc4, C + m * ldc, accumulate);
    FRQ_(store)(w, r, m + 1, p + 1, acc5, C + (m + 1) * ldc, accumulate);
    FRQ_(store)(w, r, m + 2, p + 1, acc6, C + (m + 2) * ldc, accumulate);
    FRQ_(store)(w, r, m + 3, p + 1, acc7, C + (m + 3) * ldc, accumulate);
}

/* Row m against panels p0..p0+np-1 (np <= 8) at once: 8 independent
 * accumulator chains (a single row, batch-1 inference's recurrent step,
 * would otherwise wait on each instruction's latency); with np < 8 the spare
 * ones repeat the last panel and are dropped. */
__attribute__((target(FRQ_TARGET))) static void FRQ_(row)(
    const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p0, int64_t np, float *c,
    int accumulate)
{
    const int64_t groups = r->kp / FRQ_GROUP, stride = groups * FR_Q_PANEL * FRQ_GROUP;
    const FRQ_W *P = (const FRQ_W *)w->packed + p0 * stride;
    int64_t at[8];
    for (int i = 0; i < 8; i++) at[i] = (i < np ? i : np - 1) * stride;
    const FRQ_ACT *a = (const FRQ_ACT *)r->rows + m * r->kp;
    FRQ_ACC acc0 = FRQ_ZERO(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    FRQ_ACC acc4 = acc0, acc5 = acc0, acc6 = acc0, acc7 = acc0;
    for (int64_t g = 0; g < groups; g++) {
        int32_t lane;
        memcpy(&lane, a + FRQ_GROUP * g, sizeof lane);
        const __m512i x = _mm512_set1_epi32(lane);
        const FRQ_W *pg = P + g * FR_Q_PANEL * FRQ_GROUP;
        acc0 = FRQ_DOT(acc0, x, _mm512_loadu_si512((const void *)(pg + at[0])));
        acc1 = FRQ_DOT(acc1, x, _mm512_loadu_si512((const void *)(pg + at[1])));
        acc2 = FRQ_DOT(acc2, x, _mm512_loadu_si512((const void *)(pg + at[2])));
        acc3 = FRQ_DOT(acc3, x, _mm512_loadu_si512((const void *)(pg + at[3])));
        acc4 = FRQ_DOT(acc4, x, _mm512_loadu_si512((const void *)(pg + at[4])));
        acc5 = FRQ_DOT(acc5, x, _mm512_loadu_si512((const void *)(pg + at[5])));
        acc6 = FRQ_DOT(acc6, x, _mm512_loadu_si512((const void *)(pg + at[6])));
        acc7 = FRQ_DOT(acc7, x, _mm512_loadu_si512((const void *)(pg + at[7])));
    }
    FRQ_(store)(w, r, m, p0, acc0, c, accumulate);
    if (np > 1) FRQ_(store)(w, r, m, p0 + 1, acc1, c, accumulate);
    if (np > 2) FRQ_(store)(w, r, m, p0 + 2, acc2, c, accumulate);
    if (np > 3) FRQ_(store)(w, r, m, p0 + 3, acc3, c, accumulate);
    if (np > 4) FRQ_(store)(w, r, m, p0 + 4, acc4, c, accumulate);
    if (np > 5) FRQ_(store)(w, r, m, p0 + 5, acc5, c, accumulate);
    if (np > 6) FRQ_(store)(w, r, m, p0 + 6, acc6, c, accumulate);
    if (np > 7) FRQ_(store)(w, r, m, p0 + 7, acc7, c, accumulate);
}

/* Panels [p0, p1) (p1 - p0 <= 8) for M rows: blocks of 4 rows two panels at
 * a time (an odd last panel alone), then the rows left over (all of them at
 * batch 1) one at a time. */
static void FRQ_(panels)(const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p0,
                         int64_t p1, float *C, int64_t ldc, int accumulate)
{
    const int64_t M4 = M / 4 * 4;
    for (int64_t p = p0; p < p1; p += 2) {
        const int np = p + 1 < p1 ? 2 : 1;
        for (int64_t m = 0; m < M4; m += 4) FRQ_(rows4x2)(w, r, m, p, np, C, ldc, accumulate);
    }
    for (int64_t m = M4; m < M; m++) FRQ_(row)(w, r, m, p0, p1 - p0, C + m * ldc, accumulate);
}

#undef FRQ_
#undef FRQ_TARGET
#undef FRQ_ACC
#undef FRQ_ZERO
#undef FRQ_DOT
#undef FRQ_ACT
#undef FRQ_W
#undef FRQ_GROUP
#undef FRQ_INTEGER
#undef FRQ_ZERO_POINT
