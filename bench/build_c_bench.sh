#!/usr/bin/env bash
# Build bench/bin/c_bench against csrc/ and the scipy-openblas32 wheel's OpenBLAS
# (pip install scipy-openblas32). Same flags as setup.py.
set -euo pipefail
cd "$(dirname "$0")/.."
libdir=$(python -c "import scipy_openblas32 as s; print(s.get_lib_dir())")
mkdir -p bench/bin
flags=$(python -c "import ast,re; src=open('setup.py').read(); \
print(' '.join(ast.literal_eval(re.search(r'BASE_FLAGS = (\[.*?\])', src).group(1))))")
gcc $flags -fopenmp -Icsrc bench/c_bench.c csrc/rnn.c csrc/optim.c -o bench/bin/c_bench \
    -L"$libdir" -lscipy_openblas -Wl,-rpath,"$libdir" -lm
echo "built bench/bin/c_bench"
