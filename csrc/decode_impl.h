/* Greedy and beam-search decoding for one precision (see decode.h). Included
 * by decode.c with `real`, FR_() and FR_GEMM defined; no include guard on
 * purpose.
 *
 * A block of nb samples has room for R = nb * W rows (W = beam width) but
 * computes only the rows of live hypotheses of unfinished samples, packed at
 * the front: sample b's live hypotheses are rows row_start[b] .. + live[b] - 1
 * (row_sample maps a row back). Per step every such row takes one decoder step
 * (decode_step), then every sample picks its next hypotheses (select_sample)
 * and the rows are repacked with the states they follow (follow_hypotheses).
 * Per-sample bookkeeping (log-probabilities, token histories) stays indexed
 * b * W + k. A row's result does not depend on which rows share the step.
 */

/* C (M, N) = A (M, K) W (N, K)^T + beta C, row-major, through column-major gemm. */
static void FR_(gemm_nt)(const fr_blas *blas, int64_t M, int64_t N, int64_t K, const real *A,
                         int64_t lda, const real *W, real beta, real *C)
{
    if (M <= 0 || N <= 0) return;
    char ta = 'T', tb = 'N';
    int m = (int)N, n = (int)M, k = (int)K, lw = (int)K, la = (int)lda, lc = (int)N;
    real one = 1;
    blas->FR_GEMM(&ta, &tb, &m, &n, &k, &one, (real *)W, &lw, (real *)A, &la, &beta, C, &lc);
}

/* The decoder's weights packed once per call for the panel kernel
 * (fr_small_apply): every product of a step with at most
 * fr_decode_small_rows rows runs on these, where BLAS would repack the
 * weights at every step (64% of a width-5 beam search at batch 1). */
typedef struct {
    real **ih, **hh;              /* per layer; NULL (and mem NULL): BLAS only */
    real *query, *combine, *head;
    void *mem;
} FR_(dec_panels);

static void FR_(panels_free)(FR_(dec_panels) *p)
{
    free(p->mem);
}

static int FR_(panels_alloc)(FR_(dec_panels) *p, const fr_decoder *d)
{
    int64_t L = d->num_layers, H = d->hidden, GH = fr_gates(d->cell) * H, F = d->mem_dim + H;
    int64_t sizes[3] = {FR_(fr_small_panels_size)(H, H),
                        d->attention != FR_ATTN_NONE ? FR_(fr_small_panels_size)(H, F) : 0,
                        FR_(fr_small_panels_size)(d->n_outputs, H)};
    int64_t n = sizes[0] + sizes[1] + sizes[2];
    for (int64_t l = 0; l < L; l++)
        n += FR_(fr_small_panels_size)(GH, l ? H : d->embed_dim) + FR_(fr_small_panels_size)(GH, H);
    memset(p, 0, sizeof *p);
    if (fr_decode_small_rows <= 0 || sizes[2] == 0) return FR_OK;
    p->mem = malloc((size_t)(2 * L) * sizeof(real *) + FR_PANEL_ALIGN + (size_t)n * sizeof(real));
    if (!p->mem) return FR_ERR_NOMEM;
    p->ih = (real **)p->mem;
    p->hh = p->ih + L;
    /* the panels from the first cache line on (decode.h) */
    real *r = (real *)((char *)(p->hh + L) + fr_to_line((uintptr_t)(p->hh + L)));
    for (int64_t l = 0; l < L; l++) {
        int64_t I = l ? H : d->embed_dim;
        p->ih[l] = r; r += FR_(fr_small_panels_size)(GH, I);
        p->hh[l] = r; r += FR_(fr_small_panels_size)(GH, H);
        FR_(fr_small_pack)(d->W_ih[l], GH, I, p->ih[l]);
        FR_(fr_small_pack)(d->W_hh[l], GH, H, p->hh[l]);
    }
    p->head = r; r += sizes[2];
    FR_(fr_small_pack)(d->head_W, d->n_outputs, H, p->head);
    if (d->attention != FR_ATTN_NONE) {
        p->combine = r; r += sizes[1];
        FR_(fr_small_pack)(d->combine_W, H, F, p->combine);
    }
    if (d->attention == FR_ATTN_BAHDANAU) {
        p->query = r;
        FR_(fr_small_pack)(d->query_W, H, H, p->query);
    }
    return FR_OK;
}

/* C (M, N) (+)= A W^T: on W's panels P at small M, else through BLAS. */
static void FR_(product)(const fr_blas *blas, int64_t M, int64_t N, int64_t K, const real *A,
                         int64_t lda, const real *W, const real *P, int accumulate, real *C)
{
    if (P && M <= fr_decode_small_rows)
        FR_(fr_small_apply)(M, N, K, A, lda, P, C, accumulate);
    else
        FR_(gemm_nt)(blas, M, N, K, A, lda, W, accumulate ? 1 : 0, C);
}

/* One block's buffers, carved from three allocations in block_alloc. */
typedef struct {
    real *h, *c, *hn, *cn;    /* (L, R, H): states entering / leaving the step */
    real *x;                  /* (R, E) embedded last tokens */
    real *gates, *gh;         /* (R, G*H); gh for GRU only */
    real *scores;             /* (R, S) alignments */
    real *feat;               /* (R, mem_dim + H): [context; h] */
    real *q;                  /* (R, H) Bahdanau query */
    real *out;                /* (R, H) attentional hidden state */
    real *logits;             /* (R, V) */
    double *logp;             /* (R, V) log-softmax */
    double *live_logp, *next_logp;    /* (nb, W) summed log-probabilities */
    double *sel_val;                  /* (W) one sample's best expansions */
    int32_t *hist, *next_hist;        /* (nb, W, max_len) tokens so far */
    int32_t *last;                    /* (R) last token of every row */
    int32_t *live, *done, *from;      /* (nb), (nb), (R): row a live hypothesis came from */
    int32_t *row_sample, *row_start;  /* (R): a row's sample in the block; (nb) */
    int64_t *sel_idx;                 /* (W) */
    void *mem[3];
} FR_(block_ws);

static int FR_(block_alloc)(FR_(block_ws) *w, const fr_decoder *d, int64_t S, int64_t nb,
                            int64_t W, int64_t max_len)
{
    int64_t L = d->num_layers, H = d->hidden, G = fr_gates(d->cell), V = d->n_outputs;
    int64_t R = nb * W, F = d->mem_dim + H;
    int64_t n_real = 4 * L * R * H + R * d->embed_dim + 2 * R * G * H + R * S + R * F
                     + 2 * R * H + R * V;
    int64_t n_double = R * V + 2 * R + W;
    int64_t n_int = 2 * R * max_len + R + 2 * nb + R + R + nb;
    real *r = w->mem[0] = malloc((size_t)n_real * sizeof(real));
    double *dd = w->mem[1] = malloc((size_t)n_double * sizeof(double));
    int32_t *ii = w->mem[2] = malloc((size_t)n_int * sizeof(int32_t) + (size_t)W * sizeof(int64_t));
    if (!r || !dd || !ii) {
        free(r); free(dd); free(ii);
        return FR_ERR_NOMEM;
    }
    w->h = r; r += L * R * H;
    w->c = r; r += L * R * H;
    w->hn = r; r += L * R * H;
    w->cn = r; r += L * R * H;
    w->x = r; r += R * d->embed_dim;
    w->gates = r; r += R * G * H;
    w->gh = r; r += R * G * H;
    w->scores = r; r += R * S;
    w->feat = r; r += R * F;
    w->q = r; r += R * H;
    w->out = r; r += R * H;
    w->logits = r;
    w->logp = dd; dd += R * V;
    w->live_logp = dd; dd += R;
    w->next_logp = dd; dd += R;
    w->sel_val = dd;
    w->sel_idx = (int64_t *)ii; ii += 2 * W;
    w->hist = ii; ii += R * max_len;
    w->next_hist = ii; ii += R * max_len;
    w->last = ii; ii += R;
    w->live = ii; ii += nb;
    w->done = ii; ii += nb;
    w->from = ii; ii += R;
    w->row_sample = ii; ii += R;
    w->row_start = ii;
    return FR_OK;
}

static void FR_(block_free)(FR_(block_ws) *w)
{
    for (int i = 0; i < 3; i++) free(w->mem[i]);
}

/* One cell step of layer l for R rows: in (R, I) -> hn, cn from h, c. */
static void FR_(cell_step)(const fr_blas *blas, const fr_decoder *d, const FR_(dec_panels) *p,
                           int64_t l, int64_t R, const real *in, int64_t I, const real *h,
                           const real *c, real *hn, real *cn, real *gates, real *gh)
{
    int64_t H = d->hidden, G = fr_gates(d->cell);
    const real *b_ih = d->b_ih[l], *b_hh = d->b_hh[l];
    int lstm = d->cell == FR_LSTM;
    FR_(product)(blas, R, G * H, I, in, I, d->W_ih[l], p->ih ? p->ih[l] : NULL, 0, gates);
    FR_(product)(blas, R, G * H, H, h, H, d->W_hh[l], p->hh ? p->hh[l] : NULL, lstm,
                 lstm ? gates : gh);
    for (int64_t r = 0; r < R; r++) {
        real *g = gates + r * G * H, *ho = hn + r * H;
        const real *hp = h + r * H;
        if (lstm) {  /* g: i, f, g, o pre-activations -> activations, in place */
            const real *cp = c + r * H;
            real *co = cn + r * H;
            for (int64_t j = 0; j < G * H; j++) g[j] += b_ih[j] + b_hh[j];
            FR_(fr_sigmoid)(g, g, 2 * H);
            FR_(fr_tanh)(g + 2 * H, g + 2 * H, H);
            FR_(fr_sigmoid)(g + 3 * H, g + 3 * H, H);
            for (int64_t j = 0; j < H; j++) co[j] = g[H + j] * cp[j] + g[j] * g[2 * H + j];
            FR_(fr_tanh)(co, ho, H);
            for (int64_t j = 0; j < H; j++) ho[j] *= g[3 * H + j];
        } else {     /* g: r, z, n input parts; gr: the recurrent parts */
            const real *gr = gh + r * G * H;
            for (int64_t j = 0; j < 2 * H; j++) g[j] += b_ih[j] + gr[j] + b_hh[j];
            FR_(fr_sigmoid)(g, g, 2 * H);
            for (int64_t j = 0; j < H; j++)
                g[2 * H + j] += b_ih[2 * H + j] + g[j] * (gr[2 * H + j] + b_hh[2 * H + j]);
            FR_(fr_tanh)(g + 2 * H, g + 2 * H, H);
            for (int64_t j = 0; j < H; j++)
                ho[j] = (1 - g[H + j]) * g[2 * H + j] + g[H + j] * hp[j];
        }
    }
}

/* feat[r] = [context; h] for row r of sample s (global index): masked softmax
 * of the scores over the sample's valid source steps, then the context.
 * scratch: H values (Bahdanau's tanh terms). */
static void FR_(attend_row)(const fr_decoder *d, const fr_encoded *e, int64_t s, const real *h,
                            const real *q, real *scores, real *feat, real *scratch)
{
    int64_t S = e->src_steps, H = d->hidden, DH = d->mem_dim, n = e->src_lengths[s];
    const real *keys = (const real *)e->keys + s * S * H;
    const real *mem = (const real *)e->memory + s * S * DH;
    const real *v = d->attn_v;
    real top = -INFINITY;
    for (int64_t t = 0; t < n; t++) {
        const real *k = keys + t * H;
        real acc = 0;
        if (d->attention == FR_ATTN_LUONG) {
            #pragma omp simd reduction(+:acc)
            for (int64_t j = 0; j < H; j++) acc += k[j] * h[j];
        } else {
            for (int64_t j = 0; j < H; j++) scratch[j] = q[j] + k[j];
            FR_(fr_tanh)(scratch, scratch, H);
            #pragma omp simd reduction(+:acc)
            for (int64_t j = 0; j < H; j++) acc += v[j] * scratch[j];
        }
        scores[t] = acc;
        if (acc > top) top = acc;
    }
    double total = 0;
    for (int64_t t = 0; t < n; t++) {
        scores[t] = (real)exp(scores[t] - top);
        total += scores[t];
    }
    for (int64_t j = 0; j < DH; j++) feat[j] = 0;
    for (int64_t t = 0; t < n; t++) {
        real a = scores[t] = (real)(scores[t] / total);
        const real *m = mem + t * DH;
        for (int64_t j = 0; j < DH; j++) feat[j] += a * m[j];
    }
    for (int64_t j = 0; j < H; j++) feat[DH + j] = h[j];
}

/* The first `rows` rows one decoder step: log-probabilities of the next token
 * in w->logp. R: the rows' stride between layers in the state buffers. */
static void FR_(decode_step)(const fr_blas *blas, const fr_decoder *d, const FR_(dec_panels) *p,
                             const fr_encoded *e, int64_t s0, int64_t R, int64_t rows,
                             FR_(block_ws) *w)
{
    int64_t L = d->num_layers, H = d->hidden, E = d->embed_dim, V = d->n_outputs;
    const real *emb = d->embedding;
    for (int64_t r = 0; r < rows; r++)
        memcpy(w->x + r * E, emb + (int64_t)w->last[r] * E, (size_t)E * sizeof(real));
    for (int64_t l = 0; l < L; l++) {
        const real *in = l == 0 ? w->x : w->hn + (l - 1) * R * H;
        FR_(cell_step)(blas, d, p, l, rows, in, l == 0 ? E : H, w->h + l * R * H, w->c + l * R * H,
                       w->hn + l * R * H, w->cn + l * R * H, w->gates, w->gh);
    }
    const real *top = w->hn + (L - 1) * R * H, *out = top;
    if (d->attention != FR_ATTN_NONE) {
        int64_t F = d->mem_dim + H, S = e->src_steps;
        if (d->attention == FR_ATTN_BAHDANAU)
            FR_(product)(blas, rows, H, H, top, H, d->query_W, p->query, 0, w->q);
        for (int64_t r = 0; r < rows; r++)  /* w->out is free until the combine GEMM */
            FR_(attend_row)(d, e, s0 + w->row_sample[r], top + r * H, w->q + r * H, w->scores + r * S,
                            w->feat + r * F, w->out + r * H);
        FR_(product)(blas, rows, H, F, w->feat, F, d->combine_W, p->combine, 0, w->out);
        const real *cb = d->combine_b;
        for (int64_t r = 0; r < rows; r++) {
            real *o = w->out + r * H;
            for (int64_t j = 0; j < H; j++) o[j] += cb[j];
            FR_(fr_tanh)(o, o, H);
        }
        out = w->out;
    }
    FR_(product)(blas, rows, V, H, out, H, d->head_W, p->head, 0, w->logits);
    const real *hb = d->head_b;
    for (int64_t r = 0; r < rows; r++) {
        const real *z = w->logits + r * V;
        double *lp = w->logp + r * V, top_z = -INFINITY, total = 0;
        for (int64_t k = 0; k < V; k++) {
            lp[k] = (double)(z[k] + hb[k]);
            if (lp[k] > top_z) top_z = lp[k];
        }
        for (int64_t k = 0; k < V; k++) total += exp(lp[k] - top_z);
        double norm = top_z + log(total);
        for (int64_t k = 0; k < V; k++) lp[k] -= norm;
    }
}

/* Sample b at step t: its W best expansions (summed log-probability down,
 * then flat index up), which finish or become the next live hypotheses. */
static void FR_(select_sample)(const fr_decoder *d, int64_t b, int64_t t, int64_t W,
                               int64_t max_len, FR_(block_ws) *w, int32_t *best,
                               int32_t *best_len, double *best_score)
{
    int64_t V = d->n_outputs, n = 0, live = 0;
    for (int64_t j = 0; j < w->live[b]; j++) {
        const double *lp = w->logp + (w->row_start[b] + j) * V;
        double base = w->live_logp[b * W + j];
        for (int64_t k = 0; k < V; k++) {
            double val = base + lp[k];
            if (n == W && !(val > w->sel_val[n - 1])) continue;
            int64_t p = n < W ? n++ : W - 1;
            while (p > 0 && val > w->sel_val[p - 1]) {
                w->sel_val[p] = w->sel_val[p - 1];
                w->sel_idx[p] = w->sel_idx[p - 1];
                p--;
            }
            w->sel_val[p] = val;
            w->sel_idx[p] = j * V + k;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t j = w->sel_idx[i] / V, tok = w->sel_idx[i] % V;
        const int32_t *seq = w->hist + (b * W + j) * max_len;
        double val = w->sel_val[i];
        if (tok == d->eos || t == max_len) {
            int64_t count = tok == d->eos ? t - 1 : t;
            double score = val / (double)t;
            if (score > *best_score) {
                *best_score = score;
                *best_len = (int32_t)count;
                memcpy(best, seq, (size_t)(t - 1) * sizeof(int32_t));
                if (count == t) best[t - 1] = (int32_t)tok;
            }
            continue;
        }
        int32_t *next = w->next_hist + (b * W + live) * max_len;
        memcpy(next, seq, (size_t)(t - 1) * sizeof(int32_t));
        next[t - 1] = (int32_t)tok;
        w->next_logp[b * W + live] = val;
        w->from[b * W + live] = w->row_start[b] + (int32_t)j;
        live++;
    }
    w->live[b] = (int32_t)live;
    /* the first live hypothesis has the highest log-probability */
    if (live == 0 || *best_score >= w->next_logp[b * W] / (double)max_len)
        w->done[b] = 1;
}

/* Repack the rows: the live hypotheses of unfinished samples, in sample
 * order, take the state of the row they came from. Returns the row count. */
static int64_t FR_(follow_hypotheses)(const fr_decoder *d, int64_t nb, int64_t W, int64_t t,
                                      int64_t max_len, FR_(block_ws) *w)
{
    int64_t L = d->num_layers, H = d->hidden, R = nb * W, rows = 0;
    size_t row = (size_t)H * sizeof(real);
    for (int64_t b = 0; b < nb; b++) {
        if (w->done[b]) continue;
        w->row_start[b] = (int32_t)rows;
        for (int64_t k = 0; k < w->live[b]; k++) {
            int64_t i = b * W + k, src = w->from[i], r = rows++;
            for (int64_t l = 0; l < L; l++) {
                memcpy(w->h + (l * R + r) * H, w->hn + (l * R + src) * H, row);
                if (d->cell == FR_LSTM)
                    memcpy(w->c + (l * R + r) * H, w->cn + (l * R + src) * H, row);
            }
            w->row_sample[r] = (int32_t)b;
            w->live_logp[i] = w->next_logp[i];
            w->last[r] = w->next_hist[i * max_len + t - 1];
            memcpy(w->hist + i * max_len, w->next_hist + i * max_len,
                   (size_t)t * sizeof(int32_t));
        }
    }
    return rows;
}

/* Decode samples [s0, s0 + nb). */
static int FR_(decode_block)(const fr_blas *blas, const fr_decoder *d,
                             const FR_(dec_panels) *p, const fr_encoded *e,
                             int64_t s0, int64_t nb, int64_t W, int64_t max_len,
                             int32_t *tokens, int32_t *lengths, double *scores)
{
    FR_(block_ws) w;
    int rc = FR_(block_alloc)(&w, d, e->src_steps, nb, W, max_len);
    if (rc != FR_OK) return rc;
    int64_t L = d->num_layers, H = d->hidden, R = nb * W, n = e->n_samples, rows = nb;
    for (int64_t l = 0; l < L; l++)  /* one row (the empty hypothesis) per sample */
        for (int64_t r = 0; r < nb; r++) {
            const real *c0 = d->cell == FR_LSTM ? e->c0 : NULL;
            memcpy(w.h + (l * R + r) * H, (const real *)e->h0 + (l * n + s0 + r) * H,
                   (size_t)H * sizeof(real));
            if (c0)
                memcpy(w.c + (l * R + r) * H, c0 + (l * n + s0 + r) * H,
                       (size_t)H * sizeof(real));
        }
    for (int64_t b = 0; b < nb; b++) {
        w.row_sample[b] = w.row_start[b] = (int32_t)b;
        w.last[b] = d->bos;
        w.live[b] = 1;
        w.done[b] = 0;
        w.live_logp[b * W] = 0;
        scores[s0 + b] = -INFINITY;
        lengths[s0 + b] = 0;
    }
    for (int64_t t = 1; t <= max_len && rows > 0; t++) {
        FR_(decode_step)(blas, d, p, e, s0, R, rows, &w);
        for (int64_t b = 0; b < nb; b++)
            if (!w.done[b])
                FR_(select_sample)(d, b, t, W, max_len, &w, tokens + (s0 + b) * max_len,
                                   lengths + s0 + b, scores + s0 + b);
        rows = FR_(follow_hypotheses)(d, nb, W, t, max_len, &w);
    }
    FR_(block_free)(&w);
    return FR_OK;
}

int FR_(fr_decode)(const fr_blas *blas, const fr_decoder *d, const fr_encoded *e,
                   int64_t beam_width, int64_t max_len, int32_t *tokens, int32_t *lengths,
                   double *scores, int n_threads)
{
    int rc = fr_decode_check(blas, d, e, beam_width, max_len, tokens, lengths, scores);
    if (rc != FR_OK) return rc;
    FR_(dec_panels) panels;
    rc = FR_(panels_alloc)(&panels, d);
    if (rc != FR_OK) return rc;
    int64_t n = e->n_samples;
    int nt = n_threads > 0 ? n_threads : fr_dec_max_threads();
    if (nt > n) nt = (int)n;
    int status = FR_OK;
    #pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int i = 0; i < nt; i++) {
        int64_t lo = n * i / nt, hi = n * (i + 1) / nt;
        int block_rc = FR_(decode_block)(blas, d, &panels, e, lo, hi - lo, beam_width, max_len,
                                         tokens, lengths, scores);
        if (block_rc != FR_OK) {
            #pragma omp critical(fr_decode_status)
            status = block_rc;
        }
    }
    FR_(panels_free)(&panels);
    return status;
}
