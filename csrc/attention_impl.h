/* Luong attention for one precision (see attention.h). Included by
 * attention.c with `real`, FR_() and FR_GEMM defined; no include guard on
 * purpose. */

/* Row-major C (M, N) = op(A) op(B) + beta C through column-major gemm. */
static void FR_(attn_gemm)(const fr_blas *blas, int trans_a, int trans_b, int64_t M, int64_t N,
                           int64_t K, const real *A, int64_t lda, const real *B, int64_t ldb,
                           real beta, real *C, int64_t ldc)
{
    if (M <= 0 || N <= 0 || K <= 0) return;
    char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    int m = (int)N, n = (int)M, k = (int)K, la = (int)lda, lb = (int)ldb, lc = (int)ldc;
    real one = 1;
    blas->FR_GEMM(&tb, &ta, &m, &n, &k, &one, (real *)B, &lb, (real *)A, &la, &beta, C, &lc);
}

/* Rows (T, S) of one sample: softmax over the first n columns, 0 after. */
static void FR_(masked_softmax)(real *a, int64_t T, int64_t S, int64_t n)
{
    for (int64_t t = 0; t < T; t++) {
        real *row = a + t * S, top = row[0];
        for (int64_t j = 1; j < n; j++) top = row[j] > top ? row[j] : top;
        double total = 0;
        for (int64_t j = 0; j < n; j++) {
            row[j] = (real)exp(row[j] - top);
            total += row[j];
        }
        for (int64_t j = 0; j < n; j++) row[j] = (real)(row[j] / total);
        for (int64_t j = n; j < S; j++) row[j] = 0;
    }
}

/* Samples [b0, b1): their rows of every step of the forward. */
static void FR_(luong_forward_samples)(const fr_blas *blas, const fr_attn_shape *s,
                                       int64_t b0, int64_t b1, const real *Hd, const real *M,
                                       const real *W_a, const real *W_c, const real *b_c,
                                       real *Q, real *feat, real *A, real *out)
{
    int64_t T = s->steps, S = s->src_steps, H = s->hidden, F = s->mem_dim, FH = F + H;
    int64_t rows = (b1 - b0) * T, r0 = b0 * T;
    FR_(attn_gemm)(blas, 0, 0, rows, F, H, Hd + r0 * H, H, W_a, F, 0, Q + r0 * F, F);
    for (int64_t b = b0; b < b1; b++) {
        const real *Mb = M + b * S * F;
        real *Ab = A + b * T * S;
        FR_(attn_gemm)(blas, 0, 1, T, S, F, Q + b * T * F, F, Mb, F, 0, Ab, S);
        FR_(masked_softmax)(Ab, T, S, s->src_lengths[b]);
        FR_(attn_gemm)(blas, 0, 0, T, F, S, Ab, S, Mb, F, 0, feat + b * T * FH, FH);
        for (int64_t t = 0; t < T; t++)
            memcpy(feat + (b * T + t) * FH + F, Hd + (b * T + t) * H, (size_t)H * sizeof(real));
    }
    FR_(attn_gemm)(blas, 0, 1, rows, H, FH, feat + r0 * FH, FH, W_c, FH, 0, out + r0 * H, H);
    for (int64_t r = r0; r < r0 + rows; r++)
        for (int64_t j = 0; j < H; j++)
            out[r * H + j] = (real)tanh(out[r * H + j] + b_c[j]);
}

int FR_(fr_luong_forward)(const fr_blas *blas, const fr_attn_shape *s, const real *Hd,
                          const real *M, const real *W_a, const real *W_c, const real *b_c,
                          real *Q, real *feat, real *A, real *out, int n_threads)
{
    int rc = fr_attn_check(blas, s);
    if (rc != FR_OK) return rc;
    if (!Hd || !M || !W_a || !W_c || !b_c || !Q || !feat || !A || !out) return FR_ERR_ARG;
    int nt = fr_attn_threads(n_threads, s);
    #pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int i = 0; i < nt; i++)
        FR_(luong_forward_samples)(blas, s, s->batch * i / nt, s->batch * (i + 1) / nt, Hd, M,
                                   W_a, W_c, b_c, Q, feat, A, out);
    return FR_OK;
}

/* Samples [b0, b1) of the backward, all but the weight gradients; d_pre
 * holds d(pre-tanh) of every row. */
static void FR_(luong_backward_samples)(const fr_blas *blas, const fr_attn_shape *s,
                                        int64_t b0, int64_t b1, const real *M,
                                        const real *W_a, const real *W_c, const real *Q,
                                        const real *A, const real *d_pre, real *dHd,
                                        real *dM, real *d_feat, real *dQ, real *dS)
{
    int64_t T = s->steps, S = s->src_steps, H = s->hidden, F = s->mem_dim, FH = F + H;
    int64_t rows = (b1 - b0) * T, r0 = b0 * T;
    FR_(attn_gemm)(blas, 0, 0, rows, FH, H, d_pre + r0 * H, H, W_c, FH, 0, d_feat + r0 * FH,
                   FH);
    for (int64_t b = b0; b < b1; b++) {
        const real *Mb = M + b * S * F, *Ab = A + b * T * S, *dC = d_feat + b * T * FH;
        real *dMb = dM + b * S * F, *dSb = dS + b * T * S;
        FR_(attn_gemm)(blas, 1, 0, S, F, T, Ab, S, dC, FH, 0, dMb, F);        /* A^T dC */
        FR_(attn_gemm)(blas, 0, 1, T, S, F, dC, FH, Mb, F, 0, dSb, S);        /* dA */
        for (int64_t t = 0; t < T; t++) {                                     /* softmax */
            const real *a = Ab + t * S;
            real *d = dSb + t * S;
            double dot = 0;
            for (int64_t j = 0; j < S; j++) dot += d[j] * a[j];
            for (int64_t j = 0; j < S; j++) d[j] = a[j] * (d[j] - (real)dot);
        }
        FR_(attn_gemm)(blas, 0, 0, T, F, S, dSb, S, Mb, F, 0, dQ + b * T * F, F);
        FR_(attn_gemm)(blas, 1, 0, S, F, T, dSb, S, Q + b * T * F, F, 1, dMb, F);
    }
    for (int64_t r = r0; r < r0 + rows; r++)
        memcpy(dHd + r * H, d_feat + r * FH + F, (size_t)H * sizeof(real));
    FR_(attn_gemm)(blas, 0, 1, rows, H, F, dQ + r0 * F, F, W_a, F, 1, dHd + r0 * H, H);
}

int FR_(fr_luong_backward)(const fr_blas *blas, const fr_attn_shape *s, const real *Hd,
                           const real *M, const real *W_a, const real *W_c, const real *Q,
                           const real *feat, const real *A, const real *out,
                           const real *d_out, real *dHd, real *dM, real *dW_a, real *dW_c,
                           real *db_c, real *d_pre, real *d_feat, real *dQ, real *dS,
                           int n_threads)
{
    int rc = fr_attn_check(blas, s);
    if (rc != FR_OK) return rc;
    if (!Hd || !M || !W_a || !W_c || !Q || !feat || !A || !out || !d_out || !dHd || !dM
        || !dW_a || !dW_c || !db_c || !d_pre || !d_feat || !dQ || !dS)
        return FR_ERR_ARG;
    int64_t BT = s->batch * s->steps, H = s->hidden, F = s->mem_dim, FH = F + H;
    for (int64_t i = 0; i < BT * H; i++) d_pre[i] = d_out[i] * (1 - out[i] * out[i]);
    int nt = fr_attn_threads(n_threads, s);
    #pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int i = 0; i < nt; i++)
        FR_(luong_backward_samples)(blas, s, s->batch * i / nt, s->batch * (i + 1) / nt, M,
                                    W_a, W_c, Q, A, d_pre, dHd, dM, d_feat, dQ, dS);
    FR_(attn_gemm)(blas, 1, 0, H, FH, BT, d_pre, H, feat, FH, 1, dW_c, FH);
    FR_(attn_gemm)(blas, 1, 0, H, F, BT, Hd, H, dQ, F, 1, dW_a, F);
    for (int64_t r = 0; r < BT; r++)
        for (int64_t j = 0; j < H; j++) db_c[j] += d_pre[r * H + j];
    return FR_OK;
}
