# One binding call per layer of a stack (fastrnn.layers): every direction of the
# layer through the plain kernels, its workspaces sized here and taken from the
# stack's pool, each direction checked as forward() / backward() check it. Included by
# _kernels.pyx. A small layer call is ~0.1 ms of kernel, and the Python around it
# runs cache-cold after the kernel: one call per layer instead of a Python method,
# two size queries and a keyword call per direction.


cdef class Workspaces:
    """Scratch buffers a stack reuses across its calls, so that the batches of
    a fit and the predict calls of a fitted model do not each allocate, fault
    in and free their workspaces (a fresh multi-megabyte buffer costs its page
    faults on first touch, and its munmap when freed).

    ``take(n)`` hands out a 1-D buffer of at least n elements that no other
    call holds: two threads calling the same stack at once (a predict while a
    fit runs) get different buffers. ``give(*buffers)`` returns them. A free
    buffer serves a request of at least half its size; at most ``keep`` free
    buffers stay, the most recently returned, so a change of shape lets the
    old ones go. New buffers get 1/8 headroom (pages never touched cost
    nothing), so the slightly longer batches of a ragged fit reuse them too.
    Kernels never read a workspace before writing it: reused contents are as
    good as fresh ones. Pickles and copies start empty. In Cython so that a
    layer call takes and gives without a Python frame."""
    cdef readonly object dtype
    cdef readonly Py_ssize_t keep
    cdef public list _free
    cdef object _lock

    def __init__(self, dtype, keep):
        self.dtype, self.keep = np.dtype(dtype), int(keep)
        self._free = []
        self._lock = threading.Lock()

    cpdef cnp.ndarray take(self, int64_t n):
        cdef Py_ssize_t i
        cdef int64_t size
        with self._lock:  # the most recently returned first: still in cache
            for i in range(len(self._free) - 1, -1, -1):
                size = (<cnp.ndarray>self._free[i]).size
                if n <= size <= 2 * n:
                    return self._free.pop(i)
        return np.empty(n + n // 8, self.dtype)

    def give(self, *buffers):
        with self._lock:
            self._free.extend(buffers)
            del self._free[:-self.keep]

    def clear(self):
        with self._lock:
            self._free = []

    def __reduce__(self):
        return Workspaces, (self.dtype, self.keep)


cdef object _row(object states, Py_ssize_t index):
    """states[index], or None when there are no states."""
    return None if states is None else states[index]


cdef object _scratch(list scratch, Workspaces pool, int64_t n):
    """scratch[0], first replaced by a buffer of at least n elements from
    pool when it is missing or smaller (one buffer serves a call's layers)."""
    if not scratch or (<cnp.ndarray>scratch[0]).shape[0] < n:
        scratch[:] = [pool.take(n)]
    return scratch[0]


cdef fr_shape _layer_shape(int cell, X, W_hh, bint reverse, lengths) except *:
    """The kernel shape of one direction, checked (workspace_size's checks)."""
    if not isinstance(X, np.ndarray) or X.ndim != 3:
        raise ValueError("X must be a 3-D NumPy array (batch, time, features)")
    if not isinstance(W_hh, np.ndarray) or W_hh.ndim != 2:
        raise ValueError("W_hh must be a 2-D NumPy array")
    cdef int64_t H = W_hh.shape[1]
    cdef fr_shape s = _shape(cell, X.shape[0], X.shape[1], X.shape[2], H, reverse, lengths)
    _raise(fr_check_shape(&s, H), "recurrent layer")
    return s


def layer_forward(int cell, X, tuple views, h0, c0, Y, hN, cN, lengths, Workspaces pool,
                  list scratch, bint training, int n_threads, kept=None, flat=None):
    """Every direction of one layer (views: its fastrnn.layers.Direction
    tuples) through the plain kernel, into Y's columns view.reverse * H on;
    h0, c0, hN, cN: the stack's state arrays (rows view.index). Training: one
    workspace per direction from pool (its take), returned in a list for
    backward. Inference: scratch[0] (see _scratch) and, with kept (a
    fastrnn._packed.PackedWeights of flat's weights), W_hh's kept pack."""
    cdef fr_shape s
    cdef int64_t H
    workspaces = []
    for view in views:
        W_hh = view.W_hh
        s = _layer_shape(cell, X, W_hh, view.reverse, lengths)
        H = s.hidden
        if training:
            ws = pool.take(fr_forward_workspace(&s, True))
            workspaces.append(ws)
        else:
            ws = _scratch(scratch, pool, fr_forward_workspace(&s, False))
        packed = None if training or kept is None else kept.get(flat, view, cell, s.batch,
                                                                 s.inputs, n_threads)
        index = view.index
        _forward(cell, X, view.W_ih, W_hh, view.b_ih, view.b_hh, _row(h0, index),
                 _row(c0, index), Y, view.reverse * H, hN[index], _row(cN, index), lengths,
                 view.reverse, ws, training, n_threads, packed)
    return workspaces


def layer_backward(int cell, X, tuple views, list workspaces, dY, dhN, dcN, dX, dh0, dc0,
                   lengths, Workspaces pool, list scratch, bint input_grad_only,
                   int n_threads):
    """Backward of layer_forward(training=True) over the same views and its
    workspaces: dX written by the forward direction and accumulated by the
    reverse one; each view's gradients accumulated unless input_grad_only.
    The backward scratch is scratch[0] (see _scratch)."""
    cdef fr_shape s
    for view, ws in zip(views, workspaces):
        W_hh = view.W_hh
        s = _layer_shape(cell, X, W_hh, view.reverse, lengths)
        bws = _scratch(scratch, pool, fr_backward_workspace(&s))
        index = view.index
        if input_grad_only:
            dW_ih = dW_hh = db_ih = db_hh = None
        else:
            dW_ih, dW_hh, db_ih, db_hh = view.dW_ih, view.dW_hh, view.db_ih, view.db_hh
        _backward(cell, X, view.W_ih, W_hh, ws, dY, view.reverse * s.hidden, _row(dhN, index),
                  _row(dcN, index), dX, view.reverse, dW_ih, dW_hh, db_ih, db_hh, dh0[index],
                  _row(dc0, index), lengths, view.reverse, bws, n_threads)
