/* The AVX-512 kernels of one reduced kind. Included by quant.c with
 * FRQ_(name), FRQ_TARGET, FRQ_ACC (the accumulator vector), FRQ_ZERO(),
 * FRQ_DOT(acc, x, w) (x, w: __m512i), FRQ_STOREV(out, acc), FRQ_OUT (an
 * accumulator lane), FRQ_ACT and FRQ_W (activation and weight elements),
 * FRQ_GROUP (elements per 32-bit lane) and FRQ_STORE (fr_q8_store or
 * fr_bf16_store) defined, which it undefines at its end; no include guard on
 * purpose. */

/* 4 rows at a time share each weight vector: one panel's 16 rows, a
 * broadcast lane of each row's activations. */
__attribute__((target(FRQ_TARGET))) static void FRQ_(panel)(
    const fr_qweight *w, const fr_qrows *r, int64_t M, int64_t p, float *C, int64_t ldc,
    int accumulate)
{
    const int64_t groups = r->kp / FRQ_GROUP;
    const FRQ_W *P = (const FRQ_W *)w->packed + p * groups * FR_Q_PANEL * FRQ_GROUP;
    for (int64_t m = 0; m < M; m += 4) {
        const int64_t rows = M - m < 4 ? M - m : 4;
        const FRQ_ACT *a = (const FRQ_ACT *)r->rows + m * r->kp;
        FRQ_ACC acc[4] = {FRQ_ZERO(), FRQ_ZERO(), FRQ_ZERO(), FRQ_ZERO()};
        for (int64_t g = 0; g < groups; g++) {
            const __m512i wv =
                _mm512_loadu_si512((const void *)(P + g * FR_Q_PANEL * FRQ_GROUP));
            for (int64_t i = 0; i < rows; i++) {
                int32_t lane;
                memcpy(&lane, a + i * r->kp + FRQ_GROUP * g, sizeof lane);
                acc[i] = FRQ_DOT(acc[i], _mm512_set1_epi32(lane), wv);
            }
        }
        for (int64_t i = 0; i < rows; i++) {
            FRQ_OUT out[FR_Q_PANEL];
            FRQ_STOREV(out, acc[i]);
            FRQ_STORE(w, r, m + i, p, out, C + (m + i) * ldc, accumulate);
        }
    }
}

/* Row m against 4 panels at once (4 independent accumulators: a single row,
 * batch-1 inference's recurrent step, would otherwise wait on one chain). */
__attribute__((target(FRQ_TARGET))) static void FRQ_(row)(
    const fr_qweight *w, const fr_qrows *r, int64_t m, int64_t p0, float *c, int accumulate)
{
    const int64_t groups = r->kp / FRQ_GROUP, stride = groups * FR_Q_PANEL * FRQ_GROUP;
    const FRQ_W *P = (const FRQ_W *)w->packed + p0 * stride;
    const FRQ_ACT *a = (const FRQ_ACT *)r->rows + m * r->kp;
    FRQ_ACC acc0 = FRQ_ZERO(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t g = 0; g < groups; g++) {
        int32_t lane;
        memcpy(&lane, a + FRQ_GROUP * g, sizeof lane);
        const __m512i x = _mm512_set1_epi32(lane);
        const FRQ_W *pg = P + g * FR_Q_PANEL * FRQ_GROUP;
        acc0 = FRQ_DOT(acc0, x, _mm512_loadu_si512((const void *)pg));
        acc1 = FRQ_DOT(acc1, x, _mm512_loadu_si512((const void *)(pg + stride)));
        acc2 = FRQ_DOT(acc2, x, _mm512_loadu_si512((const void *)(pg + 2 * stride)));
        acc3 = FRQ_DOT(acc3, x, _mm512_loadu_si512((const void *)(pg + 3 * stride)));
    }
    FRQ_OUT out[4][FR_Q_PANEL];
    FRQ_STOREV(out[0], acc0);
    FRQ_STOREV(out[1], acc1);
    FRQ_STOREV(out[2], acc2);
    FRQ_STOREV(out[3], acc3);
    for (int i = 0; i < 4; i++) FRQ_STORE(w, r, m, p0 + i, out[i], c, accumulate);
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
