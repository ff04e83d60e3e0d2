"""Build the C kernels and their Cython bindings.

OpenMP is probed, not assumed: when the compiler cannot build and link a
small OpenMP program, the extension is built serial and a warning says so.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# Portable flags only: no tuning for the build machine's CPU (wider SIMD comes
# from target_clones in csrc/rnn.c) and no fast-math. -fno-trapping-math lets
# the activation loops vectorise (their clamps are selects) and changes no
# result; -ffp-contract=fast allows fused multiply-adds (ISO C mode turns them
# off), which round once instead of twice.
BASE_FLAGS = ["-O3", "-std=c99", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=fast"]
OPENMP_FLAGS = ["-fopenmp"]

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def compiler_has_openmp():
    if os.environ.get("FASTRNN_NO_OPENMP"):
        return False
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        out = os.path.join(tmp, "probe")
        result = subprocess.run(cc + OPENMP_FLAGS + [src, "-o", out],
                                capture_output=True)
        return result.returncode == 0 and subprocess.run([out]).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


use_openmp = compiler_has_openmp()
if not use_openmp:
    warnings.warn("fastrnn: the compiler does not support OpenMP; building a serial extension")

compile_args = BASE_FLAGS + (OPENMP_FLAGS if use_openmp else ["-Wno-unknown-pragmas"])
link_args = OPENMP_FLAGS if use_openmp else []
config_macros = [
    ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
    ("FASTRNN_COMPILE_ARGS", '"%s"' % " ".join(compile_args)),
]

extensions = [
    Extension(
        "fastrnn._kernels",
        sources=["fastrnn/_kernels.pyx", "csrc/rnn.c", "csrc/optim.c",
                 "csrc/decode.c", "csrc/attention.c"],
        depends=["csrc/fastrnn.h", "csrc/rnn_impl.h", "csrc/optim_impl.h",
                 "csrc/decode.h", "csrc/decode_impl.h", "csrc/attention.h",
                 "csrc/attention_impl.h",
                 "fastrnn/_kernels.pxd"],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=config_macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
]

setup(ext_modules=cythonize(extensions, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False}))
