# Bindings of csrc/quant.h (reduced-precision inference), included by
# _kernels.pyx. A reduced weight is any object with the attributes kind
# (a key of QKINDS), rows, cols, packed (int8, int16, uint16 or float32 panels),
# scale (float32, rows) and row_sum (int32, rows): fastrnn._quantize.ReducedWeight.

cdef extern from "quant.h" nogil:
    enum:
        FR_Q_BF16, FR_Q_INT8, FR_Q_F32, FR_Q_INT16, FR_Q_PANEL

    ctypedef struct fr_qweight:
        int kind
        int64_t rows, cols
        const void *packed
        const float *scale
        const int32_t *row_sum

    ctypedef struct fr_qlayer:
        fr_qweight W_ih, W_hh
        const float *b_ih
        const float *b_hh

    int fr_qgroup(int kind)
    int64_t fr_qgemm_scratch(const fr_qweight *w, int64_t M)
    int fr_qgemm(const fr_qweight *w, int64_t M, const float *A, int64_t lda, float *C,
                 int64_t ldc, int accumulate, void *scratch, int n_threads)
    int64_t fr_qforward_workspace(const fr_qlayer *L, const fr_shape *s)
    int fr_qstep_team_of(const fr_qlayer *L, const fr_shape *s, int n_threads, int *by_rows)
    int fr_qforward(const fr_qlayer *L, const fr_shape *s, const float *X, const float *h0,
                    const float *c0, float *Y, int64_t ldy, float *hN, float *cN, void *ws,
                    int n_threads)
    ctypedef struct fr_qgenerator:
        int cell
        int64_t num_layers, hidden, embed_dim, vocab, n_outputs
        const float *embedding
        const fr_qweight *W_ih
        const fr_qweight *W_hh
        const float *const *b_ih
        const float *const *b_hh
        fr_qweight head_W
        const float *head_b
        const int32_t *out_tokens

    int fr_qgenerate(const fr_qgenerator *g, const fr_sampling *opt, int64_t n,
                     const int32_t *prompt, int64_t n_prompt, const float *h0, const float *c0,
                     int64_t n_new, int32_t *out, float *logits, int n_threads)
    int fr_qfast_available(int kind)
    void fr_qforce_portable(int on)


QKINDS = {"bfloat16": FR_Q_BF16, "int8": FR_Q_INT8, "float32": FR_Q_F32, "int16": FR_Q_INT16}
Q_PANEL = FR_Q_PANEL


def qgroup(str kind):
    """k per 32-bit lane of a packed reduced weight: 4 (int8), 2 (bfloat16, int16),
    1 (float32)."""
    return fr_qgroup(QKINDS[kind])


def qfast_available(str kind):
    """Whether this CPU has the AVX-512 kernel of kind (VNNI for int8 and int16, BF16)."""
    return bool(fr_qfast_available(QKINDS[kind]))


def qforce_portable(bint on):
    """Make every reduced-precision call take the portable C path (tests)."""
    fr_qforce_portable(on)


cdef fr_qweight _qweight(object w, str name) except *:
    cdef fr_qweight q
    q.kind = QKINDS[w.kind]
    q.rows = w.rows
    q.cols = w.cols
    cdef int64_t group = fr_qgroup(q.kind)
    cdef int64_t n_packed = ((q.rows + FR_Q_PANEL - 1) // FR_Q_PANEL * FR_Q_PANEL
                             * ((q.cols + group - 1) // group * group))
    packed_dtype = {FR_Q_INT8: np.int8, FR_Q_INT16: np.int16, FR_Q_BF16: np.uint16,
                    FR_Q_F32: np.float32}[q.kind]
    q.packed = <const void *>_data(w.packed, packed_dtype, (n_packed,), name + ".packed", False)
    cdef bint int8 = q.kind == FR_Q_INT8, scaled = int8 or q.kind == FR_Q_INT16
    q.scale = <const float *>_data(w.scale, np.float32, (q.rows,), name + ".scale", not scaled)
    q.row_sum = <const int32_t *>_data(w.row_sum, np.int32, (q.rows,), name + ".row_sum",
                                       not int8)
    return q


def qgemm(*, w, A, C, bint accumulate=False, int n_threads=1):
    """C (M, w.rows) (+)= A (M, w.cols) W^T with the reduced weight w."""
    cdef fr_qweight q = _qweight(w, "w")
    if not isinstance(A, np.ndarray) or A.ndim != 2:
        raise ValueError("A must be a 2-D NumPy array")
    cdef int64_t M = A.shape[0]
    cdef const float *a = <const float *>_data(A, np.float32, (M, q.cols), "A", False)
    cdef float *c = <float *>_out(C, np.float32, (M, q.rows), "C", False)
    scratch = np.empty(max(fr_qgemm_scratch(&q, M), 1), np.uint8)
    cdef void *s = <void *>_data(scratch, np.uint8, None, "scratch", False)
    cdef int rc
    with nogil:
        rc = fr_qgemm(&q, M, a, q.cols, c, q.rows, accumulate, s, n_threads)
    _raise(rc, "qgemm")


def qforward(*, int cell, W_ih, W_hh, b_ih, b_hh, X, h0, c0, Y, int64_t y_col, hN, cN,
             lengths, bint reverse, int n_threads):
    """One layer, one direction with reduced weights (inference): as forward
    for float32, W_ih and W_hh reduced weights; allocates its own workspace."""
    cdef fr_qlayer L
    L.W_ih = _qweight(W_ih, "weight_ih")
    L.W_hh = _qweight(W_hh, "weight_hh")
    if not isinstance(X, np.ndarray) or X.ndim != 3:
        raise ValueError("X must be a 3-D NumPy array (batch, time, features)")
    if not isinstance(Y, np.ndarray) or Y.ndim != 3:
        raise ValueError("Y must be a 3-D NumPy array")
    cdef int64_t B = X.shape[0], T = X.shape[1], I = X.shape[2], H = L.W_hh.cols
    cdef int64_t G = gates(cell), ldy = Y.shape[2]
    if L.W_ih.rows != G * H or L.W_hh.rows != G * H or L.W_ih.cols != I:
        raise ValueError("the reduced weights do not match the cell and X")
    if y_col < 0 or y_col + H > ldy:
        raise ValueError("Y has too few columns for this direction")
    L.b_ih = <const float *>_data(b_ih, np.float32, (G * H,), "bias_ih", False)
    L.b_hh = <const float *>_data(b_hh, np.float32, (G * H,), "bias_hh", False)
    cdef fr_shape s = _shape(cell, B, T, I, H, reverse, lengths)
    _raise(fr_check_shape(&s, ldy), "qforward")
    cdef const float *x = <const float *>_data(X, np.float32, (B, T, I), "X", False)
    cdef const float *ph0 = <const float *>_data(h0, np.float32, (B, H), "h0", True)
    cdef const float *pc0 = <const float *>_data(c0, np.float32, (B, H), "c0", True)
    cdef float *y = <float *>_out(Y, np.float32, (B, T, ldy), "Y", False)
    cdef float *phN = <float *>_out(hN, np.float32, (B, H), "hN", False)
    cdef float *pcN = <float *>_out(cN, np.float32, (B, H), "cN", cell != FR_LSTM)
    ws = np.empty(fr_qforward_workspace(&L, &s), np.uint8)
    cdef void *w = <void *>_data(ws, np.uint8, None, "workspace", False)
    cdef int rc
    cdef bint watching = _stop_on_ctrl_c()
    try:
        with nogil:
            rc = fr_qforward(&L, &s, x, ph0, pc0, y + y_col, ldy, phN, pcN, w, n_threads)
    finally:
        _stop_watching(watching)
    _raise(rc, "qforward")


cdef int _fill_qgenerator(fr_qgenerator *g, fr_qweight *weights, const float **biases,
                          int cell, object embedding, list W_ih, list W_hh, list b_ih,
                          list b_hh, object head_W, object head_b, object out_tokens) except -1:
    """Check the reduced model's arrays and point g at them; weights holds 2
    per layer (W_ih, then W_hh), biases 2 per layer (b_ih, then b_hh)."""
    cdef int64_t L = len(W_hh), G = gates(cell)
    cdef int64_t H = W_hh[0].cols, V = embedding.shape[0], E = embedding.shape[1]
    for l in range(L):
        weights[l] = _qweight(W_ih[l], f"weight_ih_l{l}")
        weights[L + l] = _qweight(W_hh[l], f"weight_hh_l{l}")
        if (weights[l].rows != G * H or weights[l].cols != (E if l == 0 else H)
                or weights[L + l].rows != G * H or weights[L + l].cols != H):
            raise ValueError(f"the reduced weights of layer {l} do not match the cell, "
                             f"the embedding and the hidden size")
        biases[l] = <const float *>_data(b_ih[l], np.float32, (G * H,), f"bias_ih_l{l}", False)
        biases[L + l] = <const float *>_data(b_hh[l], np.float32, (G * H,), f"bias_hh_l{l}",
                                             False)
    g.cell = cell
    g.num_layers = L
    g.hidden = H
    g.embed_dim = E
    g.vocab = V
    g.head_W = _qweight(head_W, "head weight")
    g.n_outputs = g.head_W.rows
    if g.head_W.cols != H:
        raise ValueError("the reduced head weight does not match the hidden size")
    g.embedding = <const float *>_data(embedding, np.float32, (V, E), "embedding", False)
    g.W_ih = weights
    g.W_hh = weights + L
    g.b_ih = biases
    g.b_hh = biases + L
    g.head_b = <const float *>_data(head_b, np.float32, (g.n_outputs,), "head bias", False)
    g.out_tokens = <const int32_t *>_data(out_tokens, np.int32, (max(g.n_outputs, 2),),
                                          "out_tokens", False)
    return 0


def qgenerate(*, int cell, embedding, list W_ih, list W_hh, list b_ih, list b_hh, head_W,
              head_b, out_tokens, prompt, h0, c0, int64_t n_new, double temperature,
              int64_t top_k, double top_p, uint64_t seed, int n_threads=1, logits=None):
    """generate with reduced weights (fr_qgenerate in csrc/quant.h): W_ih,
    W_hh (per layer) and head_W reduced weights, everything else float32.
    logits: None or a float32 (n_samples, n_new, n_outputs) array receiving
    the head's outputs each token was drawn from. Returns (n_samples, n_new) int32."""
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 2:
        raise ValueError("embedding must be a 2-D NumPy array")
    if embedding.dtype != np.float32:
        raise ValueError(f"reduced generation needs a float32 model, got {embedding.dtype}")
    cdef int64_t L = len(W_hh)
    if L < 1 or not (len(W_ih) == len(b_ih) == len(b_hh) == L):
        raise ValueError("one W_ih, W_hh, b_ih, b_hh per layer")
    if not isinstance(prompt, np.ndarray) or prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError("prompt must be a 2-D int32 array with at least one column")
    cdef int64_t n = prompt.shape[0], n_prompt = prompt.shape[1]
    cdef fr_qgenerator g
    cdef fr_sampling opt
    opt.temperature = temperature
    opt.top_k = top_k
    opt.top_p = top_p
    opt.seed = seed
    cdef fr_qweight *weights = <fr_qweight *>malloc(2 * L * sizeof(fr_qweight))
    cdef const float **biases = <const float **>malloc(2 * L * sizeof(float *))
    cdef const int32_t *p_prompt
    cdef const float *p_h0
    cdef const float *p_c0
    cdef float *p_logits
    cdef int32_t *p_out
    cdef int rc
    try:
        if weights == NULL or biases == NULL:
            raise MemoryError()
        _fill_qgenerator(&g, weights, biases, cell, embedding, W_ih, W_hh, b_ih, b_hh, head_W,
                         head_b, out_tokens)
        p_prompt = <const int32_t *>_data(prompt, np.int32, None, "prompt", False)
        p_h0 = <const float *>_data(h0, np.float32, (L, n, g.hidden), "h0", True)
        p_c0 = <const float *>_data(c0, np.float32, (L, n, g.hidden), "c0", True)
        p_logits = <float *>_out(logits, np.float32, (n, n_new, g.n_outputs), "logits", True)
        out = np.zeros((n, n_new), np.int32)
        p_out = <int32_t *>cnp.PyArray_DATA(out)
        watching = _stop_on_ctrl_c()
        try:
            with nogil:
                rc = fr_qgenerate(&g, &opt, n, p_prompt, n_prompt, p_h0, p_c0, n_new, p_out,
                                  p_logits, n_threads)
        finally:
            _stop_watching(watching)
        _raise(rc, "qgenerate")
    finally:
        free(weights)
        free(biases)
    return out


def _qstep_team(*, int cell, W_hh, int64_t B, int64_t T, int n_threads):
    """Tests and timings only: (threads, split) the steps of a reduced layer
    call with recurrent weight W_hh, batch B and T steps run with on n_threads;
    split is "rows" (each thread owns blocks of samples, no barrier per step:
    a small W_hh) or "units" (each owns whole panels of every gate's units)."""
    cdef fr_qlayer L
    L.W_hh = _qweight(W_hh, "weight_hh")
    L.W_ih = L.W_hh
    cdef fr_shape s = _shape(cell, B, T, L.W_hh.cols, L.W_hh.cols, False, None)
    cdef int by_rows = 0
    cdef int nth = fr_qstep_team_of(&L, &s, n_threads, &by_rows)
    _raise(-1 if nth < 0 else 0, "_qstep_team")
    return nth, "rows" if by_rows else "units"
