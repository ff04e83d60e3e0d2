#!/usr/bin/env bash
# Build bench/bin/c_bench: csrc/bench.c's timing loops (the ones `fastrnn cbench`
# runs inside the extension, which needs nothing extra) as a program with no
# Python, against the OpenBLAS of the scipy-openblas32 wheel. Same flags as setup.py.
#   pip install ".[bench]" && bash bench/build_c_bench.sh && bench/bin/c_bench lstm 64 100 128 256 1
set -euo pipefail
cd "$(dirname "$0")/.."
if ! libdir=$(python -c "import scipy_openblas32 as s; print(s.get_lib_dir())" 2>/dev/null); then
    echo "bench/build_c_bench.sh needs the scipy-openblas32 wheel: pip install \".[bench]\"" \
         "(or pip install scipy-openblas32). 'fastrnn cbench' needs nothing extra." >&2
    exit 1
fi
mkdir -p bench/bin
flags=$(python -c "import ast,re; src=open('setup.py').read(); \
print(' '.join(ast.literal_eval(re.search(r'UNIX_FLAGS = (\[.*?\])', src, re.S).group(1))))")
gcc $flags -fopenmp -Icsrc bench/c_bench.c csrc/bench.c csrc/rnn.c csrc/optim.c \
    -o bench/bin/c_bench -L"$libdir" -lscipy_openblas -Wl,-rpath,"$libdir" -lm
echo "built bench/bin/c_bench"
