/* The AVX-512 kernels of one reduced kind. Included by quant.c with
 * FRQ_(name), FRQ_TARGET, FRQ_ACC (the accumulator vector), FRQ_ZERO(),
 * FRQ_DOT(acc, x, w) (x, w: __m512i), FRQ_STOREV(out, acc), FRQ_OUT (an
 * accumulator lane), FRQ_ACT and FRQ_W (activation and weight elements),
 * FRQ_GROUP (elements per 32-bit lane) and FRQ_STORE (fr_q8_store or
 * fr_bf16_store) defined, which it undefines at its end; no include guard on
 * purpose. */

/* Rows m..m+3 against panel p: 4 accumulators share each weight vector
 * (named, so that they stay in registers). */
__attribute__((target(FRQ_TARGET))) static void FRQ_(rows4)(
    const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p, float *C, int64_t ldc,
    int accumulate)
{
    const int64_t groups = r->kp / FRQ_GROUP;
    const FRQ_W *P = (const FRQ_W *)w->packed + p * groups * FR_Q_PANEL * FRQ_GROUP;
    const FRQ_ACT *a = (const FRQ_ACT *)r->rows + m * r->kp;
    const int64_t lda = r->kp;
    FRQ_ACC acc0 = FRQ_ZERO(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t g = 0; g < groups; g++) {
        const __m512i wv = _mm512_loadu_si512((const void *)(P + g * FR_Q_PANEL * FRQ_GROUP));
        int32_t x[4];
        memcpy(&x[0], a + FRQ_GROUP * g, sizeof x[0]);
        memcpy(&x[1], a + lda + FRQ_GROUP * g, sizeof x[1]);
        memcpy(&x[2], a + 2 * lda + FRQ_GROUP * g, sizeof x[2]);
        memcpy(&x[3], a + 3 * lda + FRQ_GROUP * g, sizeof x[3]);
        acc0 = FRQ_DOT(acc0, _mm512_set1_epi32(x[0]), wv);
        acc1 = FRQ_DOT(acc1, _mm512_set1_epi32(x[1]), wv);
        acc2 = FRQ_DOT(acc2, _mm512_set1_epi32(x[2]), wv);
        acc3 = FRQ_DOT(acc3, _mm512_set1_epi32(x[3]), wv);
    }
    FRQ_OUT out[4][FR_Q_PANEL];
    FRQ_STOREV(out[0], acc0);
    FRQ_STOREV(out[1], acc1);
    FRQ_STOREV(out[2], acc2);
    FRQ_STOREV(out[3], acc3);
    for (int i = 0; i < 4; i++)
        FRQ_STORE(w, r, m + i, p, out[i], C + (m + i) * ldc, accumulate);
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
    FRQ_OUT out[8][FR_Q_PANEL];
    FRQ_STOREV(out[0], acc0);
    FRQ_STOREV(out[1], acc1);
    FRQ_STOREV(out[2], acc2);
    FRQ_STOREV(out[3], acc3);
    FRQ_STOREV(out[4], acc4);
    FRQ_STOREV(out[5], acc5);
    FRQ_STOREV(out[6], acc6);
    FRQ_STOREV(out[7], acc7);
    for (int64_t i = 0; i < np; i++) FRQ_STORE(w, r, m, p0 + i, out[i], c, accumulate);
}

/* Panels [p0, p1) (p1 - p0 <= 8) for M rows: blocks of 4 rows one panel at
 * a time, then the rows left over (all of them at batch 1) one at a time. */
static void FRQ_(panels)(const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p0,
                         int64_t p1, float *C, int64_t ldc, int accumulate)
{
    const int64_t M4 = M / 4 * 4;
    for (int64_t p = p0; p < p1; p++)
        for (int64_t m = 0; m < M4; m += 4) FRQ_(rows4)(w, r, m, p, C, ldc, accumulate);
    for (int64_t m = M4; m < M; m++) FRQ_(row)(w, r, m, p0, p1 - p0, C + m * ldc, accumulate);
}

#undef FRQ_
#undef FRQ_TARGET
#undef FRQ_ACC
#undef FRQ_ZERO
#undef FRQ_DOT
#undef FRQ_STOREV
#undef FRQ_OUT
#undef FRQ_ACT
#undef FRQ_W
#undef FRQ_GROUP
#undef FRQ_STORE
