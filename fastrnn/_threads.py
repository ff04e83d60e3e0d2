"""Thread counts. Our C kernels parallelise with OpenMP over slices of the
hidden units and call BLAS from inside those threads, so BLAS itself must run
single-threaded meanwhile: one pool of threads, never two oversubscribing.

Every thread count fastrnn uses comes from resolve_n_threads: never more than
available_cpus() (the C kernels clamp once more, to OpenMP's processor count,
for callers of the bindings), and 1 in the child of a fork (see
_after_fork_in_child).
"""
import ctypes
import functools
import math
import os

from threadpoolctl import ThreadpoolController

from fastrnn import _kernels

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
    if _in_fork_child or n_threads == 1:  # 1 needs no look at the CPUs (a syscall)
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
    global _in_fork_child
    _in_fork_child = True
    single_threaded_blas.after_fork()
    _kernels.fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _add_blas_libraries(limit):
    """Add the BLAS libraries loaded now (the kernels' BLAS, scipy's, is loaded
    with fastrnn._kernels) to limit: OpenBLAS with its own threads by the
    addresses of its C functions (threadpoolctl's methods cost ~1 us a call,
    and leave the limit alone in a thread other than the one that first set
    it, while the limit's lock already keeps threads from fighting); other
    libraries through threadpoolctl's methods."""
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api != "blas":
            continue
        addresses = _c_thread_functions(lib)
        if addresses is not None:
            limit.add_c_library(*addresses)
        else:
            limit.add_python_library(lambda lib=lib: lib.num_threads, lib.set_num_threads)


def _c_thread_functions(lib):
    """Addresses of an OpenBLAS's get/set thread-count functions when it runs
    its own threads (with OpenMP threads threadpoolctl sets OpenMP's count),
    else None."""
    get_symbol = getattr(lib, "_get_symbol", None)
    if lib.internal_api != "openblas" or lib.threading_layer == "openmp" or get_symbol is None:
        return None
    functions = [get_symbol(f"openblas_{verb}_num_threads") for verb in ("get", "set")]
    if None in functions:
        return None
    return [ctypes.cast(f, ctypes.c_void_p).value for f in functions]


# single_threaded_blas(): BLAS on one thread inside the block. Re-entrant and
# thread-safe: nested or concurrent blocks share one limit, restored when the
# last one leaves, so a training loop pays for it once, not per call. A layer
# call on its own pays well under a microsecond: the libraries are found once,
# and each block reads their thread counts and sets those that are not 1
# through their C functions (threadpoolctl's limit() would inspect every
# library again, about 30 us). Calling it returns the one _kernels.BlasLimit
# itself (no Python frame).
single_threaded_blas = _kernels.BlasLimit(_add_blas_libraries)
