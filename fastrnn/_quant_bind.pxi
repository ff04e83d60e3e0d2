# Bindings of csrc/quant.h (reduced-precision inference), included by
# _kernels.pyx. A reduced weight is any object with the attributes kind
# (a key of QKINDS), rows, cols, packed (int8 or uint16 panels), scale
# (float32, rows) and row_sum (int32, rows): fastrnn._quantize.ReducedWeight.

cdef extern from "quant.h" nogil:
    enum:
        FR_Q_BF16, FR_Q_INT8, FR_Q_PANEL

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
    int fr_qforward(const fr_qlayer *L, const fr_shape *s, const float *X, const float *h0,
                    const float *c0, float *Y, int64_t ldy, float *hN, float *cN, void *ws,
                    int n_threads)
    int fr_qfast_available(int kind)
    void fr_qforce_portable(int on)


QKINDS = {"bfloat16": FR_Q_BF16, "int8": FR_Q_INT8}
Q_PANEL = FR_Q_PANEL


def qgroup(str kind):
    """k per 32-bit lane of a packed reduced weight: 4 (int8) or 2 (bfloat16)."""
    return fr_qgroup(QKINDS[kind])


def qfast_available(str kind):
    """Whether this CPU has the AVX-512 kernel of kind (VNNI for int8, BF16)."""
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
    packed_dtype = np.int8 if q.kind == FR_Q_INT8 else np.uint16
    q.packed = <const void *>_data(w.packed, packed_dtype, (n_packed,), name + ".packed", False)
    cdef bint int8 = q.kind == FR_Q_INT8
    q.scale = <const float *>_data(w.scale, np.float32, (q.rows,), name + ".scale", not int8)
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
