"""Build the C kernels and their Cython bindings.

Flags are chosen per compiler when the build starts (GCC/Clang on Linux,
Apple Clang with Homebrew's libomp on macOS, MSVC on Windows). OpenMP is
probed, not assumed: when the compiler cannot build and link a small OpenMP
program, the extension is built serial and a warning says so.

Environment: FASTRNN_NO_OPENMP=1 forces a serial build; LIBOMP_PREFIX points
at a libomp install on macOS (default: Homebrew's).
"""
import os
import shutil
import sys
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Portable flags only: no tuning for the build machine's CPU (wider SIMD comes
# from target_clones in csrc/rnn.c) and no fast-math. -fno-trapping-math lets
# the activation loops vectorise (their clamps are selects) and changes no
# result; -ffp-contract=fast allows fused multiply-adds (ISO C mode turns them
# off), which round once instead of twice. -g0 overrides the -g that Python's
# own CFLAGS add: a release .so carries no debug info.
UNIX_FLAGS = ["-O3", "-std=c99", "-g0", "-fno-trapping-math", "-fno-math-errno",
              "-ffp-contract=fast"]
MSVC_FLAGS = ["/O2"]

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def macos_libomp_prefix():
    """Where libomp lives on macOS (Apple Clang has no OpenMP runtime of its own)."""
    candidates = [os.environ.get("LIBOMP_PREFIX"), "/opt/homebrew/opt/libomp",
                  "/usr/local/opt/libomp"]
    for prefix in candidates:
        if prefix and os.path.exists(os.path.join(prefix, "include", "omp.h")):
            return prefix
    return None


def openmp_flags(compiler_type):
    """(compile args, link args, include dirs, library dirs) that turn OpenMP on."""
    if compiler_type == "msvc":
        return ["/openmp"], [], [], []
    if sys.platform == "darwin":
        prefix = macos_libomp_prefix()
        if prefix is None:
            return None
        return (["-Xpreprocessor", "-fopenmp"], ["-lomp"],
                [os.path.join(prefix, "include")], [os.path.join(prefix, "lib")])
    return ["-fopenmp"], ["-fopenmp"], [], []


def compiler_builds(compiler, flags):
    """Whether this compiler compiles and links the OpenMP probe with these flags."""
    compile_args, link_args, include_dirs, library_dirs = flags
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile([src], output_dir=tmp, include_dirs=include_dirs,
                                   extra_postargs=compile_args)
        compiler.link_executable(objects, "probe", output_dir=tmp,
                                 library_dirs=library_dirs, extra_postargs=link_args)
        return True
    except Exception:  # any compile or link error means: no usable OpenMP
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """build_ext that picks flags for the compiler it actually got."""

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        compile_args = list(MSVC_FLAGS if msvc else UNIX_FLAGS)
        link_args, include_dirs, library_dirs = [], [], []
        flags = None if os.environ.get("FASTRNN_NO_OPENMP") else openmp_flags(
            self.compiler.compiler_type)
        if flags is not None and compiler_builds(self.compiler, flags):
            compile_args += flags[0]
            link_args, include_dirs, library_dirs = flags[1], flags[2], flags[3]
        else:
            warnings.warn("fastrnn: the compiler does not support OpenMP; "
                          "building a serial extension")
            if not msvc:
                compile_args.append("-Wno-unknown-pragmas")
        for ext in self.extensions:
            ext.extra_compile_args = compile_args
            ext.extra_link_args = link_args
            ext.include_dirs += include_dirs
            ext.library_dirs += library_dirs
            ext.define_macros.append(("FASTRNN_COMPILE_ARGS", '"%s"' % " ".join(compile_args)))
        super().build_extensions()


extensions = [
    Extension(
        "fastrnn._kernels",
        sources=["fastrnn/_kernels.pyx", "csrc/rnn.c", "csrc/optim.c", "csrc/bench.c",
                 "csrc/lnrnn.c", "csrc/decode.c", "csrc/attention.c", "csrc/quant.c"],
        depends=["csrc/fastrnn.h", "csrc/rnn_impl.h", "csrc/optim_impl.h", "csrc/bench.h",
                 "csrc/lnrnn.h", "csrc/lnrnn_impl.h", "csrc/decode.h", "csrc/decode_impl.h",
                 "csrc/attention.h", "csrc/attention_impl.h", "csrc/quant.h", "csrc/quant_impl.h",
                 "csrc/sampling.h", "fastrnn/_quant_bind.pxi", "fastrnn/_blas_limit.pxi",
                 "fastrnn/_layer_bind.pxi",
                 "fastrnn/_kernels.pxd"],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(ext_modules=cythonize(extensions, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False}),
      cmdclass={"build_ext": BuildExt})
