"""What this build of fastrnn is running on."""
import platform

from threadpoolctl import threadpool_info

from fastrnn import _kernels


def build_info():
    """Version, OpenMP, BLAS (library, kernel, threads) and compiler flags, as a dict."""
    import fastrnn
    from fastrnn._threads import available_cpus, resolve_n_threads

    blas = [
        {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                  "threading_layer", "filepath")}
        for info in threadpool_info() if info["user_api"] == "blas"
    ]
    return {
        "version": fastrnn.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpus_available": available_cpus(),
        "openmp": _kernels.openmp_enabled(),
        "openmp_max_threads": _kernels.max_threads(),
        "default_n_threads": resolve_n_threads(None),
        "blas": blas,
        "compile_args": _kernels.compile_args(),
    }


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def show_config(file=None):
    """Print build_info() in a readable form."""
    info = build_info()
    lines = [f"fastrnn {info['version']} (Python {info['python']}, {info['machine']})",
             f"processor: {info['processor']}, {info['cpus_available']} CPUs available",
             f"OpenMP: {'on' if info['openmp'] else 'off (serial build)'}, "
             f"max threads {info['openmp_max_threads']}, default n_threads "
             f"{info['default_n_threads']}",
             f"compiler flags: {info['compile_args']}"]
    for b in info["blas"]:
        lines.append(f"BLAS: {b['internal_api']} {b['version']}, kernel {b['architecture']}, "
                     f"{b['num_threads']} threads ({b['filepath']})")
    if not info["blas"]:
        lines.append("BLAS: not loaded yet")
    print("\n".join(lines), file=file)
