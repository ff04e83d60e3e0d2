"""Thread counts: one number for OpenMP (our elementwise passes) and BLAS."""
import os
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

from fastrnn import _kernels

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
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int,)) and not hasattr(
            n_threads, "__index__"):
        raise ValueError(f"n_threads must be None, -1 or a positive int, got {n_threads!r}")
    n = int(n_threads)
    if n == -1:
        return available_cpus()
    if n < 1:
        raise ValueError(f"n_threads must be None, -1 or a positive int, got {n_threads!r}")
    return n


@contextmanager
def blas_threads(n):
    """Run BLAS with n threads inside the block, so that BLAS and our OpenMP
    loops (which run one after the other) never oversubscribe."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    blas = _controller.select(user_api="blas")
    if all(info["num_threads"] == n for info in blas.info()):
        yield
        return
    with blas.limit(limits=n):
        yield
