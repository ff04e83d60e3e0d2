"""Thread counts. Our C kernels parallelise with OpenMP over slices of the
hidden units and call BLAS from inside those threads, so BLAS itself must run
single-threaded meanwhile: one pool of threads, never two oversubscribing."""
import os
import threading
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

from fastrnn import _kernels

_lock = threading.Lock()
_depth = 0
_limiter = None
_controller = None


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_n_threads(n_threads):
    """None: what OpenMP would use (OMP_NUM_THREADS, affinity); -1: every CPU
    this process may run on; a positive int: that many."""
    if n_threads is None:
        return max(1, min(_kernels.max_threads(), available_cpus()))
    if isinstance(n_threads, bool) or not hasattr(n_threads, "__index__"):
        raise ValueError(f"n_threads must be None, -1 or a positive int, got {n_threads!r}")
    n = int(n_threads)
    if n == -1:
        return available_cpus()
    if n < 1:
        raise ValueError(f"n_threads must be None, -1 or a positive int, got {n_threads!r}")
    return n


@contextmanager
def single_threaded_blas():
    """BLAS on one thread inside the block. Re-entrant and thread-safe: nested
    or concurrent blocks share one limit, restored when the last one leaves, so
    a training loop pays for threadpoolctl once, not per call."""
    global _depth, _limiter, _controller
    with _lock:
        if _depth == 0:
            if _controller is None:
                _controller = ThreadpoolController()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None
