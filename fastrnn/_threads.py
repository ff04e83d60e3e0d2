"""Thread counts. Our C kernels parallelise with OpenMP over slices of the
hidden units and call BLAS from inside those threads, so BLAS itself must run
single-threaded meanwhile: one pool of threads, never two oversubscribing.

Every thread count fastrnn uses comes from resolve_n_threads: never more than
available_cpus() (the C kernels clamp once more, to OpenMP's processor count,
for callers of the bindings), and 1 in the child of a fork (see
_after_fork_in_child).
"""
import functools
import math
import os
import threading
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

from fastrnn import _kernels

_lock = threading.Lock()
_depth = 0
_limiter = None
_controller = None
_in_fork_child = False


@functools.lru_cache(maxsize=None)
def _cgroup_cpu_limit():
    """CPUs the cgroup's CPU quota allows (rounded up), or None without a quota."""
    candidates = (("/sys/fs/cgroup/cpu.max", None),  # cgroup v2: "quota period" or "max ..."
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    for quota_path, period_path in candidates:
        try:
            with open(quota_path) as f:
                fields = f.read().split()
            if period_path is not None:
                with open(period_path) as f:
                    fields.append(f.read().strip())
            quota, period = fields[0], fields[1]
            if quota in ("max", "-1"):
                return None
            return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
    return None


def available_cpus():
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU
    quota (containers), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    return max(1, min(n, quota) if quota else n)


def resolve_n_threads(n_threads):
    """None: what OpenMP would use (OMP_NUM_THREADS, affinity); -1: every
    available CPU; a positive int: that many. Always clamped to
    available_cpus() (a larger team only oversubscribes, and libgomp fails to
    create thousands of threads); 1 in a fork child."""
    if n_threads is not None and (isinstance(n_threads, bool)
                                  or not hasattr(n_threads, "__index__")
                                  or (n_threads != -1 and n_threads < 1)):
        raise ValueError(f"n_threads must be None, -1 or a positive int, got {n_threads!r}")
    if _in_fork_child:
        return 1
    cpus = available_cpus()
    if n_threads is None:
        return max(1, min(_kernels.max_threads(), cpus))
    if n_threads == -1:
        return cpus
    return min(int(n_threads), cpus)


def _after_fork_in_child():
    """GNU libgomp's thread pool does not survive fork: a parallel region in the
    child would wait forever for the parent's threads. So the child runs every
    kernel on its one thread. Its single_threaded_blas lock is a new one (another
    thread of the parent may have held the old one at the fork)."""
    global _in_fork_child, _lock
    _in_fork_child = True
    _lock = threading.Lock()
    _kernels.fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded when first
    asked (the kernels' BLAS, scipy's, is loaded with fastrnn._kernels)."""
    global _controller
    if _controller is None:
        _controller = [lib for lib in ThreadpoolController().lib_controllers
                       if lib.user_api == "blas"]
    return _controller


@contextmanager
def single_threaded_blas():
    """BLAS on one thread inside the block. Re-entrant and thread-safe: nested
    or concurrent blocks share one limit, restored when the last one leaves, so
    a training loop pays for it once, not per call. A layer call on its own
    pays a few microseconds: the libraries' controllers are found once, and
    each block only reads and sets their thread counts (threadpoolctl's
    limit() would inspect every library again, about 30 us per call)."""
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            _limiter = [(lib, lib.num_threads) for lib in _blas_libraries()]
            for lib, n in _limiter:
                if n != 1:
                    lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, n in _limiter:
                    if n != 1:
                        lib.set_num_threads(n)
                _limiter = None
