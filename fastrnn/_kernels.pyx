# cython: language_level=3
"""Bindings of the C kernels in csrc/.

Fills the BLAS table from scipy.linalg.cython_blas (nothing links BLAS at
build time), checks dtypes, shapes and contiguity once per call, and releases
the GIL around every kernel. Callers are the engine modules (fastrnn.layers);
users do not call these functions directly.
"""
import _signal  # signal.getsignal without its enum conversion (~1 us per kernel call)
import signal
import threading

import numpy as np
cimport numpy as cnp
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport sgemm, dgemm

from fastrnn._kernels cimport *

cnp.import_array()

cdef fr_blas BLAS
BLAS.sgemm = <fr_sgemm_fn>sgemm
BLAS.dgemm = <fr_dgemm_fn>dgemm

cdef extern from *:
    """
    #ifndef FASTRNN_COMPILE_ARGS
    #define FASTRNN_COMPILE_ARGS "unknown"
    #endif
    """
    const char *FASTRNN_COMPILE_ARGS

# Ctrl-C during a kernel. The kernels run with the GIL released, and Python
# runs its signal handlers only when the main thread takes the GIL back, so a
# long call would ignore Ctrl-C until it ends. For the duration of a call on
# the main thread, a C SIGINT handler asks the kernel to stop
# (fr_request_stop: the kernel checks once per time step and returns
# FR_STOPPED) and passes the signal on to the handler it replaced (Python's,
# which then raises KeyboardInterrupt when the binding holds the GIL again).
cdef extern from *:
    """
    #if defined(__unix__) || defined(__APPLE__)
    #include <signal.h>
    #include <string.h>
    static struct sigaction fr_replaced_sigint;
    static void fr_on_sigint(int sig, siginfo_t *info, void *context)
    {
        fr_request_stop();
        if (fr_replaced_sigint.sa_flags & SA_SIGINFO)
            fr_replaced_sigint.sa_sigaction(sig, info, context);
        else if (fr_replaced_sigint.sa_handler != SIG_DFL &&
                 fr_replaced_sigint.sa_handler != SIG_IGN)
            fr_replaced_sigint.sa_handler(sig);
    }
    static int fr_sigint_begin(void) /* 1: installed (undo with fr_sigint_end) */
    {
        struct sigaction sa;
        if (sigaction(SIGINT, NULL, &fr_replaced_sigint) != 0) return 0;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = fr_on_sigint;
        sa.sa_flags = SA_SIGINFO | (fr_replaced_sigint.sa_flags & SA_ONSTACK);
        sigemptyset(&sa.sa_mask);
        fr_clear_stop();
        if (sigaction(SIGINT, &sa, NULL) != 0) return 0;
        fr_watch_stop(1);
        return 1;
    }
    static void fr_sigint_end(void)
    {
        fr_watch_stop(0);
        sigaction(SIGINT, &fr_replaced_sigint, NULL);
        fr_clear_stop();
    }
    #else /* no sigaction: kernels run to their end */
    static int fr_sigint_begin(void) { return 0; }
    static void fr_sigint_end(void) {}
    #endif
    """
    int fr_sigint_begin() nogil
    void fr_sigint_end() nogil


cdef int _stop_on_ctrl_c() except -1:
    """Start watching Ctrl-C for one kernel call (1: watching): only on the
    main thread (the only one KeyboardInterrupt reaches) and while SIGINT
    raises it. A Ctrl-C that came just before, which Python has not acted on
    yet, raises here rather than after the kernel."""
    if threading.get_ident() != threading.main_thread().ident:
        return 0
    if _signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return 0
    if not fr_sigint_begin():
        return 0
    try:
        PyErr_CheckSignals()
    except BaseException:
        fr_sigint_end()
        raise
    return 1


cdef void _stop_watching(bint watching):
    if watching:
        fr_sigint_end()


CELLS = {"lstm": FR_LSTM, "gru": FR_GRU, "rnn_tanh": FR_RNN_TANH, "rnn_relu": FR_RNN_RELU}


def compile_args():
    """Compiler flags the extension was built with."""
    return FASTRNN_COMPILE_ARGS.decode()


def openmp_enabled():
    return bool(fr_openmp_enabled())


def max_threads():
    return fr_max_threads()


def fork_child():
    """Run every later kernel call on the calling thread (see fr_fork_child);
    fastrnn._threads calls it in the child of every fork."""
    fr_fork_child()


def request_stop():
    """What a Ctrl-C during a kernel does (for tests): kernels watching the
    stop flag return FR_STOPPED at their next step."""
    fr_request_stop()


def packed_enabled():
    """True when the recurrent steps use the packed W_hh micro-kernels (else BLAS)."""
    return bool(fr_packed_enabled())


def _force_portable(bint on):
    """Tests and before/after timings only: True turns the batch-1 fast paths
    and the AVX-512 LSTM gate pass off (every call then runs the portable
    code, whose results are the same bit for bit), False turns them back on.
    Process-wide."""
    fr_force_portable(on)


def _isa_cap(int level):
    """Tests only: the widest instruction set the float kernels may use, 0
    (baseline: BLAS steps, plain C gate passes), 1 (AVX2 + FMA) or 2 (AVX-512,
    the default); returns the previous cap. Process-wide: with 1, an AVX-512
    CPU runs the AVX2 kernels."""
    return fr_set_isa_cap(level)


def _isa_level():
    """The instruction set the float kernels use now: 0, 1 or 2 (_isa_cap)."""
    return fr_isa_level()


def _lstm_gate_pass_avx512():
    """Whether float LSTM steps run the AVX-512 gate pass here (tests)."""
    return bool(fr_lstm_gate_pass_avx512())


def _decode_small_rows(int64_t rows):
    """Tests and timings only: decoder steps with at most `rows` live rows
    run on weights packed once per decode call, larger ones call BLAS (0:
    BLAS always; the default is 512). Process-wide; returns the previous
    setting."""
    return fr_decode_set_small_rows(rows)


def gates(cell):
    """Gates per hidden unit of a cell: 4 (LSTM), 3 (GRU), 1 (RNN); the one count
    the kernels use. cell: a name of CELLS or its code."""
    cdef int g = fr_gates(CELLS[cell] if isinstance(cell, str) else cell)
    if g == 0:
        raise ValueError(f"unknown cell {cell!r}")
    return g


STATUS = {"ok": FR_OK, "invalid": FR_ERR_ARG, "too_large": FR_ERR_TOO_LARGE,
          "no_memory": FR_ERR_NOMEM, "stopped": FR_STOPPED}


def raise_for_status(int rc, str what):
    """Raise the Python error a kernel's status code stands for (nothing for FR_OK)."""
    _raise(rc, what)


cdef int _raise(int rc, str what) except -1:
    if rc == FR_STOPPED:  # Ctrl-C: Python's handler raises; any other handler, we do
        PyErr_CheckSignals()
        raise KeyboardInterrupt
    if rc == FR_ERR_NOMEM:
        raise MemoryError(f"{what}: the kernel could not allocate its scratch memory")
    if rc == FR_ERR_TOO_LARGE:
        raise ValueError(f"{what}: sizes too large for BLAS's 32-bit integer arguments "
                         "(batch*timesteps, timesteps*gates*hidden, and with lengths "
                         "batch*gates*hidden must stay below 2**31)")
    if rc != FR_OK:
        raise ValueError(f"{what}: invalid arguments (code {rc})")
    return 0


cdef fr_shape _shape(int cell, int64_t B, int64_t T, int64_t I, int64_t H, bint reverse,
                     object lengths) except *:
    cdef fr_shape s
    s.cell = cell
    s.batch = B
    s.steps = T
    s.inputs = I
    s.hidden = H
    s.reverse = reverse
    s.lengths = <const int32_t *>_data(lengths, np.int32, (B,), "lengths", True)
    return s


def check_shape(*, int cell, int64_t B, int64_t T, int64_t I, int64_t H):
    """Raise ValueError when the kernels cannot take this shape."""
    cdef fr_shape s = _shape(cell, B, T, I, H, False, None)
    _raise(fr_check_shape(&s, H), "recurrent layer")


def workspace_size(*, int cell, int64_t B, int64_t T, int64_t I, int64_t H, bint training,
                   lengths=None):
    """Elements of scratch a forward pass needs (training: kept for backward).
    With lengths (int32, (B,)) it covers only the valid steps: pass the same
    lengths as to forward."""
    cdef fr_shape s = _shape(cell, B, T, I, H, False, lengths)
    _raise(fr_check_shape(&s, H), "recurrent layer")
    return fr_forward_workspace(&s, training)


def backward_workspace_size(*, int cell, int64_t B, int64_t T, int64_t I, int64_t H,
                            lengths=None):
    """Elements of scratch a backward pass needs besides the forward workspace
    (lengths as for workspace_size)."""
    cdef fr_shape s = _shape(cell, B, T, I, H, False, lengths)
    _raise(fr_check_shape(&s, H), "recurrent layer")
    return fr_backward_workspace(&s)


cdef char *_data(object a, object dtype, tuple shape, str name, bint optional) except? NULL:
    """Pointer to a's data after checking it; NULL for an optional None."""
    if a is None:
        if optional:
            return NULL
        raise ValueError(f"{name} is required")
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if arr.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    return <char *>cnp.PyArray_DATA(arr)


cdef char *_out(object a, object dtype, tuple shape, str name, bint optional) except? NULL:
    if a is not None and not (<cnp.ndarray?>a).flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return _data(a, dtype, shape, name, optional)


cdef char *_workspace(object ws, object dtype, int64_t n, str name) except NULL:
    cdef char *p = _out(ws, dtype, None, name, False)
    if ws.ndim != 1 or ws.shape[0] < n:
        raise ValueError(f"{name} must be 1-D with at least {n} elements")
    return p


cdef fr_shape _pack_shape(int cell, int64_t B, int64_t I, W_hh) except *:
    if not isinstance(W_hh, np.ndarray) or W_hh.ndim != 2:
        raise ValueError("W_hh must be a 2-D NumPy array")
    if W_hh.dtype != np.float32 and W_hh.dtype != np.float64:
        raise ValueError(f"W_hh must be float32 or float64, got {W_hh.dtype}")
    cdef fr_shape s = _shape(cell, B, 1, I, W_hh.shape[1], False, None)
    _raise(fr_check_shape(&s, W_hh.shape[1]), "pack_recurrent")
    return s


def _row_split(bint on):
    """Tests and before/after timings only: False keeps every layer call's
    team on the unit split (the split before small layers split by rows) and
    a reduced-weight layer's small steps on one thread, True (the default)
    lets small layers split by rows. Process-wide; returns the previous
    setting. Results are the same bit for bit."""
    return bool(fr_set_row_split(on))


def _fused_projection(bint on):
    """Tests and before/after timings only: False makes every layer call
    project its inputs before the step loop (True, the default, lets LSTM and
    RNN calls of 4 rows or more project inside each step's kernel).
    Process-wide; returns the previous setting. Results are the same bit for
    bit."""
    return bool(fr_set_fused_projection(on))


def _fused(*, int cell, int64_t B, int64_t I, int64_t H, dtype=np.float32):
    """Tests only: whether a layer call of this shape projects its inputs
    inside each step's kernel (see _fused_projection)."""
    cdef fr_shape s = _shape(cell, B, 1, I, H, False, None)
    cdef int fused = fr_fused_projection_of(&s, np.dtype(dtype).itemsize)
    _raise(-1 if fused < 0 else 0, "_fused")
    return bool(fused)


def _weight_grad_kernel(*, int cell, int64_t I, int64_t H, dtype=np.float32):
    """Tests only: whether a backward of this shape computes its weight
    gradients in fastrnn's kernel (float32 on AVX-512 CPUs, gradients of up to
    4 MiB) rather than BLAS."""
    cdef fr_shape s = _shape(cell, 1, 1, I, H, False, None)
    cdef int used = fr_weight_grad_kernel_of(&s, np.dtype(dtype).itemsize)
    _raise(-1 if used < 0 else 0, "_weight_grad_kernel")
    return bool(used)


def _unit_slices_cap(int cap):
    """Tests only: at most cap slices of hidden units per layer team (0: no
    cap), so that two threads can run the row groups a team of more threads
    than slices runs (each slice's units shared by several threads, each with
    its own blocks of rows). Process-wide; returns the previous cap."""
    return fr_set_unit_slices_cap(cap)


def _layer_team(*, int cell, int64_t B, int64_t T, int64_t I, int64_t H, int n_threads,
                dtype=np.float32, slices=False):
    """Tests and timings only: (threads, split) a layer call of this shape on
    n_threads runs with; split is "rows" (each thread owns blocks of samples,
    no barrier per step: small W_hh) or "units" (each owns a slice of the
    hidden units, shared with threads/slices - 1 others, each with its own
    blocks of rows); with slices=True also the number of unit slices."""
    cdef fr_shape s = _shape(cell, B, T, I, H, False, None)
    cdef int by_rows = 0, n_slices = 0
    cdef int nth = fr_layer_team_of(&s, n_threads, np.dtype(dtype).itemsize, &by_rows,
                                    &n_slices)
    _raise(-1 if nth < 0 else 0, "_layer_team")
    team = (nth, "rows" if by_rows else "units")
    return team + (n_slices,) if slices else team


def pack_key(*, int cell, int64_t B, int64_t I, W_hh, int n_threads):
    """Equal for two inference calls (batch B, I inputs) exactly when one
    pack_recurrent pack of a direction's weights serves both."""
    cdef fr_shape s = _pack_shape(cell, B, I, W_hh)
    if W_hh.dtype == np.float32:
        return fr_pack_recurrent_key_f32(&s, n_threads)
    return fr_pack_recurrent_key_f64(&s, n_threads)


def pack_recurrent(*, int cell, int64_t B, int64_t I, W_ih, W_hh, int n_threads):
    """W_ih (G*H, I) and W_hh (G*H, H) packed for inference forwards of batch
    B on n_threads: pass it as forward's packed= while the weights are
    unchanged (the kernel checks it was packed for the call's layout and
    team, and for these weight arrays, else packs per call as without it)."""
    cdef fr_shape s = _pack_shape(cell, B, I, W_hh)
    cdef int64_t G = gates(cell), H = W_hh.shape[1]
    cdef char *whh = _data(W_hh, W_hh.dtype, (G * H, H), "weight_hh", False)
    cdef char *wih = _data(W_ih, W_hh.dtype, (G * H, I), "weight_ih", False)
    cdef int64_t n
    cdef int rc
    if W_hh.dtype == np.float32:
        n = fr_pack_recurrent_size_f32(&s, n_threads)
        pack = np.empty(n, np.float32)
        rc = fr_pack_recurrent_f32(&s, <float *>wih, <float *>whh,
                                   <float *>cnp.PyArray_DATA(pack), n, n_threads)
    else:
        n = fr_pack_recurrent_size_f64(&s, n_threads)
        pack = np.empty(n, np.float64)
        rc = fr_pack_recurrent_f64(&s, <double *>wih, <double *>whh,
                                   <double *>cnp.PyArray_DATA(pack), n, n_threads)
    _raise(rc, "pack_recurrent")
    return pack


def forward(*, int cell, X, W_ih, W_hh, b_ih, b_hh, h0, c0, Y, int64_t y_col, hN, cN,
            lengths, bint reverse, ws, bint training, int n_threads, packed=None):
    """One layer, one direction. X (B, T, I); Y (B, T, ldy) receives H columns
    from y_col; hN/cN (B, H) the final state; ws from workspace_size. packed:
    pack_recurrent's pack of W_ih and W_hh (inference; ignored unless made
    for this call's weight arrays, layout and team)."""
    _forward(cell, X, W_ih, W_hh, b_ih, b_hh, h0, c0, Y, y_col, hN, cN, lengths, reverse, ws,
             training, n_threads, packed)


cdef int _forward(int cell, X, W_ih, W_hh, b_ih, b_hh, h0, c0, Y, int64_t y_col, hN, cN,
                  lengths, bint reverse, ws, bint training, int n_threads,
                  packed) except -1:
    if not isinstance(X, np.ndarray) or X.ndim != 3:
        raise ValueError("X must be a 3-D NumPy array (batch, time, features)")
    if not isinstance(W_hh, np.ndarray) or W_hh.ndim != 2:
        raise ValueError("W_hh must be a 2-D NumPy array")
    dtype = X.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise ValueError(f"X must be float32 or float64, got {dtype}")
    cdef int64_t B = X.shape[0], T = X.shape[1], I = X.shape[2], H = W_hh.shape[1]
    cdef int64_t G = gates(cell)
    if not isinstance(Y, np.ndarray) or Y.ndim != 3:
        raise ValueError("Y must be a 3-D NumPy array")
    cdef int64_t ldy = Y.shape[2]
    if y_col < 0 or y_col + H > ldy:
        raise ValueError("Y has too few columns for this direction")
    cdef fr_shape s = _shape(cell, B, T, I, H, reverse, lengths)
    _raise(fr_check_shape(&s, ldy), "forward")
    cdef int64_t need = fr_forward_workspace(&s, training)
    cdef char *x = _data(X, dtype, (B, T, I), "X", False)
    cdef char *wih = _data(W_ih, dtype, (G * H, I), "weight_ih", False)
    cdef char *whh = _data(W_hh, dtype, (G * H, H), "weight_hh", False)
    cdef char *bih = _data(b_ih, dtype, (G * H,), "bias_ih", False)
    cdef char *bhh = _data(b_hh, dtype, (G * H,), "bias_hh", False)
    cdef char *ph0 = _data(h0, dtype, (B, H), "h0", True)
    cdef char *pc0 = _data(c0, dtype, (B, H), "c0", True)
    cdef char *y = _out(Y, dtype, (B, T, ldy), "Y", False)
    cdef char *phN = _out(hN, dtype, (B, H), "hN", False)
    cdef char *pcN = _out(cN, dtype, (B, H), "cN", cell != FR_LSTM)
    cdef char *w = _workspace(ws, dtype, need, "workspace")
    cdef char *pk = _data(packed, dtype, None, "packed", True)
    cdef int64_t n_pack = 0 if packed is None else packed.size
    cdef int rc
    cdef bint watching = _stop_on_ctrl_c()
    try:
        if dtype == np.float32:
            with nogil:
                rc = fr_forward_packed_f32(&BLAS, &s, <float *>x, <float *>wih, <float *>whh,
                                           <float *>bih, <float *>bhh, <float *>ph0,
                                           <float *>pc0, (<float *>y) + y_col, ldy,
                                           <float *>phN, <float *>pcN, <float *>w, training,
                                           n_threads, <float *>pk, n_pack)
        else:
            with nogil:
                rc = fr_forward_packed_f64(&BLAS, &s, <double *>x, <double *>wih,
                                           <double *>whh, <double *>bih, <double *>bhh,
                                           <double *>ph0, <double *>pc0,
                                           (<double *>y) + y_col, ldy, <double *>phN,
                                           <double *>pcN, <double *>w, training, n_threads,
                                           <double *>pk, n_pack)
    finally:
        _stop_watching(watching)
    return _raise(rc, "forward")



cdef int64_t _dY_columns(dY, int64_t y_col, int64_t H) except -1:
    """dY's row stride (its columns), checked to hold this direction's H
    columns at y_col; H when dY is None."""
    if dY is None:
        return H
    if not isinstance(dY, np.ndarray) or dY.ndim != 3:
        raise ValueError("dY must be a 3-D NumPy array")
    if y_col < 0 or y_col + H > dY.shape[2]:
        raise ValueError("dY has too few columns for this direction")
    return dY.shape[2]

def backward(*, int cell, X, W_ih, W_hh, ws, dY, int64_t y_col, dhN, dcN, dX,
             bint accumulate_dx, dW_ih, dW_hh, db_ih, db_hh, dh0, dc0, lengths, bint reverse,
             bws, int n_threads):
    """Backward through one layer/direction after forward(..., training=True).
    Weight and bias gradients are accumulated; dX is written (or accumulated).
    dW_ih, dW_hh, db_ih, db_hh all None: dX only, no weight gradient computed."""
    _backward(cell, X, W_ih, W_hh, ws, dY, y_col, dhN, dcN, dX, accumulate_dx, dW_ih, dW_hh,
              db_ih, db_hh, dh0, dc0, lengths, reverse, bws, n_threads)


cdef int _backward(int cell, X, W_ih, W_hh, ws, dY, int64_t y_col, dhN, dcN, dX,
                   bint accumulate_dx, dW_ih, dW_hh, db_ih, db_hh, dh0, dc0, lengths,
                   bint reverse, bws, int n_threads) except -1:
    if not isinstance(X, np.ndarray) or X.ndim != 3:
        raise ValueError("X must be a 3-D NumPy array (batch, time, features)")
    if not isinstance(W_hh, np.ndarray) or W_hh.ndim != 2:
        raise ValueError("W_hh must be a 2-D NumPy array")
    dtype = X.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise ValueError(f"X must be float32 or float64, got {dtype}")
    cdef int64_t B = X.shape[0], T = X.shape[1], I = X.shape[2], H = W_hh.shape[1]
    cdef int64_t G = gates(cell)
    cdef int64_t ldy = _dY_columns(dY, y_col, H)
    cdef fr_shape s = _shape(cell, B, T, I, H, reverse, lengths)
    _raise(fr_check_shape(&s, ldy), "backward")
    cdef char *x = _data(X, dtype, (B, T, I), "X", False)
    cdef char *wih = _data(W_ih, dtype, (G * H, I), "weight_ih", False)
    cdef char *whh = _data(W_hh, dtype, (G * H, H), "weight_hh", False)
    cdef char *w = _workspace(ws, dtype, fr_forward_workspace(&s, True), "workspace")
    cdef char *dy = _data(dY, dtype, (B, T, ldy), "dY", True)
    cdef char *dhn = _data(dhN, dtype, (B, H), "dhN", True)
    cdef char *dcn = _data(dcN, dtype, (B, H), "dcN", True)
    cdef char *dx = _out(dX, dtype, (B, T, I), "dX", True)
    cdef bint input_grad_only = dW_ih is None
    if any((g is None) != input_grad_only for g in (dW_hh, db_ih, db_hh)):
        raise ValueError("dW_ih, dW_hh, db_ih and db_hh are all given or all None (dX only)")
    cdef char *dwih = _out(dW_ih, dtype, (G * H, I), "grad weight_ih", input_grad_only)
    cdef char *dwhh = _out(dW_hh, dtype, (G * H, H), "grad weight_hh", input_grad_only)
    cdef char *dbih = _out(db_ih, dtype, (G * H,), "grad bias_ih", input_grad_only)
    cdef char *dbhh = _out(db_hh, dtype, (G * H,), "grad bias_hh", input_grad_only)
    cdef char *dh = _out(dh0, dtype, (B, H), "dh0", False)
    cdef char *dc = _out(dc0, dtype, (B, H), "dc0", cell != FR_LSTM)
    cdef char *bw = _workspace(bws, dtype, fr_backward_workspace(&s), "backward workspace")
    cdef int rc
    cdef bint watching = _stop_on_ctrl_c()
    try:
        if dtype == np.float32:
            with nogil:
                rc = fr_backward_f32(&BLAS, &s, <float *>x, <float *>wih, <float *>whh,
                                     <float *>w, (<float *>dy) + (y_col if dy != NULL else 0), ldy,
                                     <float *>dhn, <float *>dcn, <float *>dx, accumulate_dx,
                                     <float *>dwih, <float *>dwhh, <float *>dbih, <float *>dbhh,
                                     <float *>dh, <float *>dc, <float *>bw, n_threads)
        else:
            with nogil:
                rc = fr_backward_f64(&BLAS, &s, <double *>x, <double *>wih, <double *>whh,
                                     <double *>w, (<double *>dy) + (y_col if dy != NULL else 0), ldy,
                                     <double *>dhn, <double *>dcn, <double *>dx, accumulate_dx,
                                     <double *>dwih, <double *>dwhh, <double *>dbih, <double *>dbhh,
                                     <double *>dh, <double *>dc, <double *>bw, n_threads)
    finally:
        _stop_watching(watching)
    return _raise(rc, "backward")


# A float is inf or NaN when its exponent bits are all ones: adding one to the
# exponent field then carries into the sign bit. And, add and or only, so the
# loop vectorizes with the baseline instruction set.
ctypedef fused _float_bits:
    uint32_t
    uint64_t


cdef bint _finite_bits(const _float_bits *x, int64_t n, _float_bits exponent,
                       _float_bits exponent_one) noexcept nogil:
    cdef _float_bits carries = 0
    cdef int64_t i
    for i in range(n):
        carries |= (x[i] & exponent) + exponent_one
    return (carries >> (8 * sizeof(_float_bits) - 1)) == 0


def all_finite(cnp.ndarray X):
    """np.isfinite(X).all() for a C-contiguous float32 or float64 array, in one
    pass over the exponent bits without a temporary (a layer call checks its
    input with it)."""
    if not X.flags.c_contiguous or (X.dtype != np.float32 and X.dtype != np.float64):
        raise ValueError("all_finite takes a C-contiguous float32 or float64 array")
    cdef int64_t n = X.size
    cdef const void *p = cnp.PyArray_DATA(X)
    cdef bint ok, single = X.itemsize == 4
    with nogil:
        if single:
            ok = _finite_bits(<const uint32_t *>p, n, <uint32_t>0x7f800000u,
                              <uint32_t>0x00800000u)
        else:
            ok = _finite_bits(<const uint64_t *>p, n, <uint64_t>0x7ff0000000000000u,
                              <uint64_t>0x0010000000000000u)
    return ok


ctypedef fused _length:
    int32_t
    int64_t


cdef tuple _range(const _length *x, int64_t n):
    cdef int64_t i, lo = x[0], hi = x[0]
    for i in range(1, n):
        lo, hi = min(lo, <int64_t>x[i]), max(hi, <int64_t>x[i])
    return lo, hi


def int_range(cnp.ndarray a):
    """(min, max) of a non-empty 1-D int32 or int64 array, in one pass (None
    for other arrays: the caller reduces them with NumPy)."""
    if a.ndim != 1 or a.shape[0] == 0 or not a.flags.c_contiguous:
        return None
    if a.dtype == np.int32:
        return _range(<const int32_t *>cnp.PyArray_DATA(a), a.shape[0])
    if a.dtype == np.int64:
        return _range(<const int64_t *>cnp.PyArray_DATA(a), a.shape[0])
    return None


def sigmoid_f32(const float[::1] x):
    """The kernels' float32 sigmoid, for accuracy tests."""
    out = np.empty(x.shape[0], np.float32)
    cdef float[::1] y = out
    with nogil:
        fr_sigmoid_f32(&x[0], &y[0], x.shape[0])
    return out


def tanh_f32(const float[::1] x):
    """The kernels' float32 tanh, for accuracy tests."""
    out = np.empty(x.shape[0], np.float32)
    cdef float[::1] y = out
    with nogil:
        fr_tanh_f32(&x[0], &y[0], x.shape[0])
    return out


SOLVERS = {"sgd": FR_SGD, "rmsprop": FR_RMSPROP, "adagrad": FR_ADAGRAD, "adam": FR_ADAM}


def sumsq(*, x, int n_threads=1):
    """Sum of squares of a contiguous float array, accumulated in double."""
    dtype = x.dtype
    cdef char *p = _data(x, dtype, None, "x", False)
    cdef int64_t n = x.size
    cdef double total
    if dtype == np.float32:
        with nogil:
            total = fr_sumsq_f32(<float *>p, n, n_threads)
    elif dtype == np.float64:
        with nogil:
            total = fr_sumsq_f64(<double *>p, n, n_threads)
    else:
        raise ValueError(f"x must be float32 or float64, got {dtype}")
    return total


def optim_step(*, str solver, w, g, m, v, decay_mask, double lr, double l2, double grad_scale,
               double momentum, bint nesterov, double rho, double beta1, double beta2,
               double eps, int64_t step, int n_threads):
    """One fused update of the flat buffer w from gradient g (see csrc/fastrnn.h)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}")
    cdef fr_optim o
    o.solver = SOLVERS[solver]
    o.lr = lr
    o.l2 = l2
    o.grad_scale = grad_scale
    o.momentum = momentum
    o.nesterov = nesterov
    o.rho = rho
    o.beta1 = beta1
    o.beta2 = beta2
    o.eps = eps
    o.step = step
    if not isinstance(w, np.ndarray) or w.ndim != 1:
        raise ValueError("w must be a 1-D NumPy array")
    dtype = w.dtype
    cdef int64_t n = w.shape[0]
    cdef tuple shape = (n,)
    cdef char *pw = _out(w, dtype, shape, "w", False)
    cdef char *pg = _data(g, dtype, shape, "g", False)
    cdef char *pm = _out(m, dtype, shape, "m", True)
    cdef char *pv = _out(v, dtype, shape, "v", True)
    cdef char *pmask = _data(decay_mask, dtype, shape, "decay_mask", True)
    cdef int rc
    if dtype == np.float32:
        with nogil:
            rc = fr_optim_step_f32(&o, n, <float *>pw, <float *>pg, <float *>pm, <float *>pv,
                                   <float *>pmask, n_threads)
    elif dtype == np.float64:
        with nogil:
            rc = fr_optim_step_f64(&o, n, <double *>pw, <double *>pg, <double *>pm,
                                   <double *>pv, <double *>pmask, n_threads)
    else:
        raise ValueError(f"w must be float32 or float64, got {dtype}")
    _raise(rc, "optimizer step")


cdef int _fill_generator(fr_generator *g, const void **ptrs, int cell, object embedding,
                         list W_ih, list W_hh, list b_ih, list b_hh, object head_W,
                         object head_b, object out_tokens) except -1:
    """Check the model's arrays and point g at them; ptrs holds 4 per layer."""
    dtype = embedding.dtype
    cdef int64_t L = len(W_hh), G = gates(cell)
    cdef int64_t H = W_hh[0].shape[1], V = embedding.shape[0], E = embedding.shape[1]
    cdef int64_t n_out = head_W.shape[0]
    for l in range(L):
        in_dim = E if l == 0 else H
        ptrs[l] = _data(W_ih[l], dtype, (G * H, in_dim), f"weight_ih_l{l}", False)
        ptrs[L + l] = _data(W_hh[l], dtype, (G * H, H), f"weight_hh_l{l}", False)
        ptrs[2 * L + l] = _data(b_ih[l], dtype, (G * H,), f"bias_ih_l{l}", False)
        ptrs[3 * L + l] = _data(b_hh[l], dtype, (G * H,), f"bias_hh_l{l}", False)
    g.cell = cell
    g.num_layers = L
    g.hidden = H
    g.embed_dim = E
    g.vocab = V
    g.n_outputs = n_out
    g.embedding = _data(embedding, dtype, (V, E), "embedding", False)
    g.W_ih = ptrs
    g.W_hh = ptrs + L
    g.b_ih = ptrs + 2 * L
    g.b_hh = ptrs + 3 * L
    g.head_W = _data(head_W, dtype, (n_out, H), "head weight", False)
    g.head_b = _data(head_b, dtype, (n_out,), "head bias", False)
    g.out_tokens = <const int32_t *>_data(out_tokens, np.int32, (max(n_out, 2),), "out_tokens",
                                          False)
    return 0


def generate(*, int cell, embedding, list W_ih, list W_hh, list b_ih, list b_hh, head_W,
             head_b, out_tokens, prompt, h0, c0, int64_t n_new, double temperature,
             int64_t top_k, double top_p, uint64_t seed, int n_threads=1):
    """Sample n_new tokens after each prompt row (see fr_generate in csrc/fastrnn.h).
    Returns an int32 array (n_samples, n_new). fastrnn.layers.generation_args
    builds every argument but the prompt, initial state, n_new and n_threads."""
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 2:
        raise ValueError("embedding must be a 2-D NumPy array")
    dtype = embedding.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise ValueError(f"embedding must be float32 or float64, got {dtype}")
    cdef int64_t L = len(W_hh)
    if L < 1 or not (len(W_ih) == len(b_ih) == len(b_hh) == L):
        raise ValueError("one W_ih, W_hh, b_ih, b_hh per layer")
    if not isinstance(prompt, np.ndarray) or prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError("prompt must be a 2-D int32 array with at least one column")
    cdef int64_t n = prompt.shape[0], n_prompt = prompt.shape[1]
    cdef fr_generator g
    cdef fr_sampling opt
    opt.temperature = temperature
    opt.top_k = top_k
    opt.top_p = top_p
    opt.seed = seed
    cdef const void **ptrs = <const void **>malloc(4 * L * sizeof(void *))
    if ptrs == NULL:
        raise MemoryError()
    try:
        _fill_generator(&g, ptrs, cell, embedding, W_ih, W_hh, b_ih, b_hh, head_W, head_b,
                        out_tokens)
        p_prompt = _data(prompt, np.int32, None, "prompt", False)
        p_h0 = _data(h0, dtype, (L, n, g.hidden), "h0", True)
        p_c0 = _data(c0, dtype, (L, n, g.hidden), "c0", True)
        out = np.zeros((n, n_new), np.int32)
        ws = np.empty(fr_generate_workspace(&g, n), dtype)
        p_out = <int32_t *>cnp.PyArray_DATA(out)
        p_ws = <char *>cnp.PyArray_DATA(ws)
        watching = _stop_on_ctrl_c()
        try:
            if dtype == np.float32:
                with nogil:
                    rc = fr_generate_f32(&BLAS, &g, &opt, n, <const int32_t *>p_prompt, n_prompt,
                                         <const float *>p_h0, <const float *>p_c0, n_new, p_out,
                                         <float *>p_ws, n_threads)
            else:
                with nogil:
                    rc = fr_generate_f64(&BLAS, &g, &opt, n, <const int32_t *>p_prompt, n_prompt,
                                         <const double *>p_h0, <const double *>p_c0, n_new, p_out,
                                         <double *>p_ws, n_threads)
        finally:
            _stop_watching(watching)
        _raise(rc, "generate")
    finally:
        free(ptrs)
    return out


ATTENTIONS = {None: FR_ATTN_NONE, "luong": FR_ATTN_LUONG, "bahdanau": FR_ATTN_BAHDANAU}


cdef int _fill_decoder(fr_decoder *d, const void **ptrs, int cell, object attention,
                       object embedding, list W_ih, list W_hh, list b_ih, list b_hh,
                       object query_W, object attn_v, object combine_W, object combine_b,
                       object head_W, object head_b, int64_t mem_dim, int bos,
                       int eos) except -1:
    """Check the decoder's arrays and point d at them; ptrs holds 4 per layer."""
    dtype = embedding.dtype
    cdef int64_t L = len(W_hh), G = gates(cell)
    if L < 1 or not (len(W_ih) == len(b_ih) == len(b_hh) == L):
        raise ValueError("one W_ih, W_hh, b_ih, b_hh per layer")
    cdef int64_t H = W_hh[0].shape[1], E = embedding.shape[1], V = head_W.shape[0]
    for l in range(L):
        ptrs[l] = _data(W_ih[l], dtype, (G * H, E if l == 0 else H), f"weight_ih_l{l}", False)
        ptrs[L + l] = _data(W_hh[l], dtype, (G * H, H), f"weight_hh_l{l}", False)
        ptrs[2 * L + l] = _data(b_ih[l], dtype, (G * H,), f"bias_ih_l{l}", False)
        ptrs[3 * L + l] = _data(b_hh[l], dtype, (G * H,), f"bias_hh_l{l}", False)
    d.cell = cell
    d.attention = ATTENTIONS[attention]
    d.num_layers, d.hidden, d.embed_dim, d.n_outputs, d.mem_dim = L, H, E, V, mem_dim
    d.bos, d.eos = bos, eos
    d.embedding = _data(embedding, dtype, (V + 1, E), "embedding", False)
    d.W_ih, d.W_hh, d.b_ih, d.b_hh = ptrs, ptrs + L, ptrs + 2 * L, ptrs + 3 * L
    bahdanau = attention == "bahdanau"
    d.query_W = _data(query_W, dtype, (H, H), "query weight", not bahdanau)
    d.attn_v = _data(attn_v, dtype, (H,), "attention v", not bahdanau)
    d.combine_W = _data(combine_W, dtype, (H, mem_dim + H), "combine weight",
                        attention is None)
    d.combine_b = _data(combine_b, dtype, (H,), "combine bias", attention is None)
    d.head_W = _data(head_W, dtype, (V, H), "head weight", False)
    d.head_b = _data(head_b, dtype, (V,), "head bias", False)
    return 0


def decode(*, int cell, attention, embedding, list W_ih, list W_hh, list b_ih, list b_hh,
           query_W, attn_v, combine_W, combine_b, head_W, head_b, int bos, int eos, memory,
           keys, src_lengths, h0, c0, int64_t beam_width, int64_t max_len, int n_threads=1):
    """Greedy (beam_width 1) or beam-search decoding of a batch of encoded
    sources (see csrc/decode.h). memory (n, S, mem_dim) and keys (n, S, H)
    are required with attention. Returns tokens (n, max_len) int32, lengths
    (n,) int32 and scores (n,) float64 (log-probability over token count)."""
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 2:
        raise ValueError("embedding must be a 2-D NumPy array")
    dtype = embedding.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise ValueError(f"embedding must be float32 or float64, got {dtype}")
    if not isinstance(h0, np.ndarray) or h0.ndim != 3:
        raise ValueError("h0 must be a 3-D array (layers, samples, hidden)")
    if beam_width < 1 or max_len < 1:
        raise ValueError("beam_width and max_len must be positive")
    cdef int64_t L = len(W_hh), n = h0.shape[1], S = 1, mem_dim = 0
    cdef fr_decoder d
    cdef fr_encoded e
    if attention is not None:
        if not isinstance(memory, np.ndarray) or memory.ndim != 3:
            raise ValueError("memory must be a 3-D array (samples, steps, features)")
        S, mem_dim = memory.shape[1], memory.shape[2]
    cdef const void **ptrs = <const void **>malloc(4 * L * sizeof(void *))
    if ptrs == NULL:
        raise MemoryError()
    try:
        _fill_decoder(&d, ptrs, cell, attention, embedding, W_ih, W_hh, b_ih, b_hh, query_W,
                      attn_v, combine_W, combine_b, head_W, head_b, mem_dim, bos, eos)
        e.n_samples, e.src_steps = n, S
        e.h0 = _data(h0, dtype, (L, n, d.hidden), "h0", False)
        e.c0 = _data(c0, dtype, (L, n, d.hidden), "c0", cell != FR_LSTM)
        e.memory = _data(memory, dtype, (n, S, mem_dim), "memory", attention is None)
        e.keys = _data(keys, dtype, (n, S, d.hidden), "keys", attention is None)
        e.src_lengths = <const int32_t *>_data(src_lengths, np.int32, (n,), "src_lengths",
                                               attention is None)
        tokens = np.zeros((n, max_len), np.int32)
        lengths = np.zeros(n, np.int32)
        scores = np.zeros(n, np.float64)
        p_tokens = <int32_t *>cnp.PyArray_DATA(tokens)
        p_lengths = <int32_t *>cnp.PyArray_DATA(lengths)
        p_scores = <double *>cnp.PyArray_DATA(scores)
        if dtype == np.float32:
            with nogil:
                rc = fr_decode_f32(&BLAS, &d, &e, beam_width, max_len, p_tokens, p_lengths,
                                   p_scores, n_threads)
        else:
            with nogil:
                rc = fr_decode_f64(&BLAS, &d, &e, beam_width, max_len, p_tokens, p_lengths,
                                   p_scores, n_threads)
        _raise(rc, "decode")
    finally:
        free(ptrs)
    return tokens, lengths, scores


cdef fr_attn_shape _attn_shape(object Hd, object M, object src_lengths) except *:
    if not isinstance(Hd, np.ndarray) or Hd.ndim != 3:
        raise ValueError("Hd must be a 3-D array (batch, steps, hidden)")
    if not isinstance(M, np.ndarray) or M.ndim != 3:
        raise ValueError("M must be a 3-D array (batch, source steps, features)")
    cdef fr_attn_shape s
    s.batch, s.steps, s.hidden = Hd.shape[0], Hd.shape[1], Hd.shape[2]
    s.src_steps, s.mem_dim = M.shape[1], M.shape[2]
    s.src_lengths = <const int32_t *>_data(src_lengths, np.int32, (s.batch,), "src_lengths",
                                           False)
    return s


def luong_forward(*, Hd, M, W_a, W_c, b_c, src_lengths, Q, feat, A, out, int n_threads=1):
    """Luong attention over all samples and decoder steps (csrc/attention.h):
    writes Q (B, T, F) and feat (B, T, F + H), kept for backward, the
    alignments A (B, T, S) and out (B, T, H)."""
    cdef fr_attn_shape s = _attn_shape(Hd, M, src_lengths)
    dtype = Hd.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise ValueError(f"Hd must be float32 or float64, got {dtype}")
    cdef int64_t B = s.batch, T = s.steps, S = s.src_steps, H = s.hidden, F = s.mem_dim
    cdef char *c[9]
    c[0] = _data(Hd, dtype, (B, T, H), "Hd", False)
    c[1] = _data(M, dtype, (B, S, F), "M", False)
    c[2] = _data(W_a, dtype, (H, F), "W_a", False)
    c[3] = _data(W_c, dtype, (H, F + H), "W_c", False)
    c[4] = _data(b_c, dtype, (H,), "b_c", False)
    c[5] = _out(Q, dtype, (B, T, F), "Q", False)
    c[6] = _out(feat, dtype, (B, T, F + H), "feat", False)
    c[7] = _out(A, dtype, (B, T, S), "A", False)
    c[8] = _out(out, dtype, (B, T, H), "out", False)
    if dtype == np.float32:
        with nogil:
            rc = fr_luong_forward_f32(&BLAS, &s, <float *>c[0], <float *>c[1], <float *>c[2],
                                      <float *>c[3], <float *>c[4], <float *>c[5],
                                      <float *>c[6], <float *>c[7], <float *>c[8], n_threads)
    else:
        with nogil:
            rc = fr_luong_forward_f64(&BLAS, &s, <double *>c[0], <double *>c[1],
                                      <double *>c[2], <double *>c[3], <double *>c[4],
                                      <double *>c[5], <double *>c[6], <double *>c[7],
                                      <double *>c[8], n_threads)
    _raise(rc, "luong_forward")


def luong_backward(*, Hd, M, W_a, W_c, Q, feat, A, out, d_out, src_lengths, dHd, dM, dW_a,
                   dW_c, db_c, int n_threads=1):
    """Gradients of luong_forward: writes dHd (B, T, H) and dM (B, S, F),
    accumulates dW_a, dW_c and db_c."""
    cdef fr_attn_shape s = _attn_shape(Hd, M, src_lengths)
    dtype = Hd.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise ValueError(f"Hd must be float32 or float64, got {dtype}")
    cdef int64_t B = s.batch, T = s.steps, S = s.src_steps, H = s.hidden, F = s.mem_dim
    scratch = [np.empty((B, T, H), dtype), np.empty((B, T, F + H), dtype),
               np.empty((B, T, F), dtype), np.empty((B, T, S), dtype)]
    cdef char *c[18]
    c[0] = _data(Hd, dtype, (B, T, H), "Hd", False)
    c[1] = _data(M, dtype, (B, S, F), "M", False)
    c[2] = _data(W_a, dtype, (H, F), "W_a", False)
    c[3] = _data(W_c, dtype, (H, F + H), "W_c", False)
    c[4] = _data(Q, dtype, (B, T, F), "Q", False)
    c[5] = _data(feat, dtype, (B, T, F + H), "feat", False)
    c[6] = _data(A, dtype, (B, T, S), "A", False)
    c[7] = _data(out, dtype, (B, T, H), "out", False)
    c[8] = _data(d_out, dtype, (B, T, H), "d_out", False)
    c[9] = _out(dHd, dtype, (B, T, H), "dHd", False)
    c[10] = _out(dM, dtype, (B, S, F), "dM", False)
    c[11] = _out(dW_a, dtype, (H, F), "dW_a", False)
    c[12] = _out(dW_c, dtype, (H, F + H), "dW_c", False)
    c[13] = _out(db_c, dtype, (H,), "db_c", False)
    for i in range(4):
        c[14 + i] = <char *>cnp.PyArray_DATA(<cnp.ndarray>scratch[i])
    if dtype == np.float32:
        with nogil:
            rc = fr_luong_backward_f32(
                &BLAS, &s, <float *>c[0], <float *>c[1], <float *>c[2], <float *>c[3],
                <float *>c[4], <float *>c[5], <float *>c[6], <float *>c[7], <float *>c[8],
                <float *>c[9], <float *>c[10], <float *>c[11], <float *>c[12], <float *>c[13],
                <float *>c[14], <float *>c[15], <float *>c[16], <float *>c[17], n_threads)
    else:
        with nogil:
            rc = fr_luong_backward_f64(
                &BLAS, &s, <double *>c[0], <double *>c[1], <double *>c[2], <double *>c[3],
                <double *>c[4], <double *>c[5], <double *>c[6], <double *>c[7], <double *>c[8],
                <double *>c[9], <double *>c[10], <double *>c[11], <double *>c[12],
                <double *>c[13], <double *>c[14], <double *>c[15], <double *>c[16],
                <double *>c[17], n_threads)
    _raise(rc, "luong_backward")


def bench_layer(*, int cell, int64_t B, int64_t T, int64_t I, int64_t H, lengths=None,
                int n_threads=1, int reps=5):
    """Best-of-reps seconds of forward (training), backward and forward
    (inference) of one float32 layer, timed in C (fastrnn.cbench)."""
    if reps < 1:
        raise ValueError("reps must be >= 1")
    if lengths is not None and (len(lengths) != B or np.min(lengths) < 1
                                or np.max(lengths) > T):
        raise ValueError(f"lengths must be B={B} values in [1, T={T}]")
    cdef fr_shape s = _shape(cell, B, T, I, H, False, lengths)
    cdef fr_layer_times t
    cdef int rc
    with nogil:
        rc = fr_bench_layer(&BLAS, &s, n_threads, reps, &t)
    _raise(rc, "bench_layer")
    return {"forward_train": t.forward_train, "backward": t.backward,
            "forward_infer": t.forward_infer}


def bench_sgemm(*, int64_t n=1024, int reps=3):
    """Best-of-reps seconds of one n x n x n SGEMM through the same BLAS the
    kernels use, with the BLAS threads the caller allows."""
    cdef double seconds
    cdef int rc
    with nogil:
        rc = fr_bench_sgemm(&BLAS, n, reps, &seconds)
    _raise(rc, "bench_sgemm")
    return seconds


def bench_read(*, int64_t n_bytes, int reps=20):
    """Best-of-reps seconds to read a buffer of n_bytes from cache (one
    thread): the memory bound of a loop that streams that many bytes."""
    cdef double seconds
    cdef int rc
    with nogil:
        rc = fr_bench_read(n_bytes, reps, &seconds)
    _raise(rc, "bench_read")
    return seconds


# ----- layer-normalized LSTM / GRU, recurrent dropout (csrc/lnrnn.h) ----------------------
LN_NAMES = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight",
            "ln_c_bias")


def ln_workspace_size(*, int cell, int64_t B, int64_t T, int64_t I, int64_t H):
    """Elements of an ln_forward workspace (what ln_backward reads)."""
    cdef fr_shape s = _shape(cell, B, T, I, H, False, None)
    cdef int64_t n = fr_ln_workspace(&s)
    if n < 0:
        _raise(fr_check_shape(&s, H), "layer-normalized layer")
        raise ValueError("layer-normalized cells are LSTM and GRU")
    return n


def ln_backward_workspace_size(*, int cell, int64_t B, int64_t T, int64_t I, int64_t H):
    """Elements of ln_backward's scratch besides the forward workspace."""
    ln_workspace_size(cell=cell, B=B, T=T, I=I, H=H)
    cdef fr_shape s = _shape(cell, B, T, I, H, False, None)
    return fr_ln_backward_workspace(&s)


cdef fr_ln_weights _ln_weights(int cell, W_ih, W_hh, b_ih, b_hh, dict norms, object dtype,
                               int64_t I, int64_t H, str prefix) except *:
    """The weight table; norms maps LN_NAMES to arrays, or is empty (no norm)."""
    cdef int64_t GH = gates(cell) * H
    cdef fr_ln_weights w
    w.W_ih = _data(W_ih, dtype, (GH, I), prefix + "weight_ih", False)
    w.W_hh = _data(W_hh, dtype, (GH, H), prefix + "weight_hh", False)
    w.b_ih = _data(b_ih, dtype, (GH,), prefix + "bias_ih", False)
    w.b_hh = _data(b_hh, dtype, (GH,), prefix + "bias_hh", False)
    cdef bint on = bool(norms)
    cdef bint cell_norm = on and cell == FR_LSTM
    w.ln_ih_w = _data(norms.get("ln_ih_weight"), dtype, (GH,), prefix + "ln_ih_weight", not on)
    w.ln_ih_b = _data(norms.get("ln_ih_bias"), dtype, (GH,), prefix + "ln_ih_bias", not on)
    w.ln_hh_w = _data(norms.get("ln_hh_weight"), dtype, (GH,), prefix + "ln_hh_weight", not on)
    w.ln_hh_b = _data(norms.get("ln_hh_bias"), dtype, (GH,), prefix + "ln_hh_bias", not on)
    w.ln_c_w = _data(norms.get("ln_c_weight"), dtype, (H,), prefix + "ln_c_weight",
                     not cell_norm)
    w.ln_c_b = _data(norms.get("ln_c_bias"), dtype, (H,), prefix + "ln_c_bias", not cell_norm)
    return w


def ln_forward(*, int cell, X, W_ih, W_hh, b_ih, b_hh, norms, h0, c0, mask, Y,
               int64_t y_col, hN, cN, lengths, bint reverse, ws, int n_threads):
    """One layer, one direction of the layer-normalized cell (norms: a dict of
    LN_NAMES arrays; empty: a plain cell) with an optional recurrent dropout
    mask (B, H). Arguments otherwise as forward; ws from ln_workspace_size."""
    if not isinstance(X, np.ndarray) or X.ndim != 3 or not isinstance(W_hh, np.ndarray) \
            or W_hh.ndim != 2 or not isinstance(Y, np.ndarray) or Y.ndim != 3:
        raise ValueError("X and Y must be 3-D, W_hh 2-D NumPy arrays")
    dtype = X.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise ValueError(f"X must be float32 or float64, got {dtype}")
    cdef int64_t B = X.shape[0], T = X.shape[1], I = X.shape[2], H = W_hh.shape[1]
    cdef int64_t ldy = Y.shape[2]
    if y_col < 0 or y_col + H > ldy:
        raise ValueError("Y has too few columns for this direction")
    cdef int64_t need = ln_workspace_size(cell=cell, B=B, T=T, I=I, H=H)
    cdef fr_shape s = _shape(cell, B, T, I, H, reverse, lengths)
    cdef fr_ln_weights w = _ln_weights(cell, W_ih, W_hh, b_ih, b_hh, dict(norms), dtype, I, H,
                                       "")
    cdef char *x = _data(X, dtype, (B, T, I), "X", False)
    cdef char *ph0 = _data(h0, dtype, (B, H), "h0", True)
    cdef char *pc0 = _data(c0, dtype, (B, H), "c0", True)
    cdef char *pm = _data(mask, dtype, (B, H), "mask", True)
    cdef char *y = _out(Y, dtype, (B, T, ldy), "Y", False)
    cdef char *phN = _out(hN, dtype, (B, H), "hN", False)
    cdef char *pcN = _out(cN, dtype, (B, H), "cN", cell != FR_LSTM)
    cdef char *pw = _workspace(ws, dtype, need, "workspace")
    cdef int rc
    if dtype == np.float32:
        with nogil:
            rc = fr_ln_forward_f32(&BLAS, &s, &w, <float *>x, <float *>ph0, <float *>pc0,
                                   <float *>pm, (<float *>y) + y_col, ldy, <float *>phN,
                                   <float *>pcN, <float *>pw, n_threads)
    else:
        with nogil:
            rc = fr_ln_forward_f64(&BLAS, &s, &w, <double *>x, <double *>ph0, <double *>pc0,
                                   <double *>pm, (<double *>y) + y_col, ldy, <double *>phN,
                                   <double *>pcN, <double *>pw, n_threads)
    _raise(rc, "ln_forward")


def ln_backward(*, int cell, X, W_ih, W_hh, b_ih, b_hh, norms, mask, ws, dY, int64_t y_col,
                dhN, dcN, dX, bint accumulate_dx, grads, dh0, dc0, lengths, bint reverse, bws,
                int n_threads):
    """Backward after ln_forward with the same arguments. grads: a dict with
    weight_ih, weight_hh, bias_ih, bias_hh and (with norms) the LN_NAMES
    gradients, all accumulated; dX written (or accumulated), may be None."""
    if not isinstance(X, np.ndarray) or X.ndim != 3 or not isinstance(W_hh, np.ndarray) \
            or W_hh.ndim != 2:
        raise ValueError("X must be 3-D, W_hh 2-D NumPy arrays")
    dtype = X.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise ValueError(f"X must be float32 or float64, got {dtype}")
    cdef int64_t B = X.shape[0], T = X.shape[1], I = X.shape[2], H = W_hh.shape[1]
    cdef int64_t ldy = _dY_columns(dY, y_col, H)
    cdef int64_t need = ln_workspace_size(cell=cell, B=B, T=T, I=I, H=H)
    cdef int64_t need_b = ln_backward_workspace_size(cell=cell, B=B, T=T, I=I, H=H)
    cdef fr_shape s = _shape(cell, B, T, I, H, reverse, lengths)
    norms = dict(norms)
    cdef fr_ln_weights w = _ln_weights(cell, W_ih, W_hh, b_ih, b_hh, norms, dtype, I, H, "")
    grads = dict(grads)
    for name in LN_NAMES:
        if (name in norms) != (name in grads):
            raise ValueError(f"grads must hold {name} exactly when norms does")
    for name in grads:
        _out(grads[name], dtype, None, "grad " + name, False)
    cdef fr_ln_weights gw = _ln_weights(cell, grads.get("weight_ih"), grads.get("weight_hh"),
                                        grads.get("bias_ih"), grads.get("bias_hh"),
                                        {k: grads[k] for k in LN_NAMES if k in grads}, dtype,
                                        I, H, "grad ")
    cdef fr_ln_grads g
    g.dW_ih, g.dW_hh, g.db_ih, g.db_hh = <void *>gw.W_ih, <void *>gw.W_hh, <void *>gw.b_ih, \
        <void *>gw.b_hh
    g.dln_ih_w, g.dln_ih_b = <void *>gw.ln_ih_w, <void *>gw.ln_ih_b
    g.dln_hh_w, g.dln_hh_b = <void *>gw.ln_hh_w, <void *>gw.ln_hh_b
    g.dln_c_w, g.dln_c_b = <void *>gw.ln_c_w, <void *>gw.ln_c_b
    cdef char *x = _data(X, dtype, (B, T, I), "X", False)
    cdef char *pm = _data(mask, dtype, (B, H), "mask", True)
    cdef char *pw = _workspace(ws, dtype, need, "workspace")
    cdef char *dy = _data(dY, dtype, (B, T, ldy), "dY", True)
    cdef char *dhn = _data(dhN, dtype, (B, H), "dhN", True)
    cdef char *dcn = _data(dcN, dtype, (B, H), "dcN", True)
    cdef char *dx = _out(dX, dtype, (B, T, I), "dX", True)
    cdef char *dh = _out(dh0, dtype, (B, H), "dh0", False)
    cdef char *dc = _out(dc0, dtype, (B, H), "dc0", cell != FR_LSTM)
    cdef char *bw = _workspace(bws, dtype, need_b, "backward workspace")
    cdef int64_t col = y_col if dy != NULL else 0
    cdef int rc
    if dtype == np.float32:
        with nogil:
            rc = fr_ln_backward_f32(&BLAS, &s, &w, <float *>x, <float *>pm, <float *>pw,
                                    (<float *>dy) + col, ldy, <float *>dhn, <float *>dcn,
                                    <float *>dx, accumulate_dx, &g, <float *>dh, <float *>dc,
                                    <float *>bw, n_threads)
    else:
        with nogil:
            rc = fr_ln_backward_f64(&BLAS, &s, &w, <double *>x, <double *>pm, <double *>pw,
                                    (<double *>dy) + col, ldy, <double *>dhn, <double *>dcn,
                                    <double *>dx, accumulate_dx, &g, <double *>dh,
                                    <double *>dc, <double *>bw, n_threads)
    _raise(rc, "ln_backward")
include "_quant_bind.pxi"
include "_blas_limit.pxi"
include "_layer_bind.pxi"
