#!/usr/bin/env bash
# Build the extension with AddressSanitizer + UndefinedBehaviorSanitizer and run
# a fast part of the suite (kernels, layers, persistence with its fuzz tests,
# reliability, properties, row splits, reduced weights, ragged batches, the
# kernels of each instruction set) under it; any report fails the run. Then the leak check (RSS over 300
# fit/predict/generate/save/load cycles) on a normal build.
#
# The sanitized build happens in a temporary copy of the working tree, so the
# in-place build stays as it was. Usage: tools/sanitize.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python}
cc=${CC:-gcc}

if ! "$python" -c "import Cython, setuptools, numpy" 2>/dev/null; then
    echo "tools/sanitize.sh builds in place: pip install 'cython>=3.0' 'setuptools>=77' numpy" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$work"

# setup.py puts its own flags (-O3) after CFLAGS, so a compiler wrapper appends
# ours last: -O1 wins, and UB is fatal at the first report.
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g"
printf '#!/bin/sh\nexec %s "$@" %s\n' "$cc" "$sanitize" > "$work/cc"
chmod +x "$work/cc"
(cd "$work" && CC="$work/cc" LDSHARED="$work/cc -shared" "$python" setup.py build_ext --inplace -q)

libasan=$("$cc" -print-file-name=libasan.so)
# detect_leaks=0: the interpreter keeps its own objects alive at exit, which
# LeakSanitizer would report; the leak check below measures our leaks instead.
# allocator_may_return_null=1: tests of huge sizes expect MemoryError, not an abort.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
(cd "$work" && LD_PRELOAD="$libasan" "$python" -m pytest -q -x -p no:cacheprovider \
    tests/test_kernels.py tests/test_layers.py tests/test_persistence.py \
    tests/test_reliability.py tests/test_properties.py tests/test_batch1.py \
    tests/test_row_split.py tests/test_quantize.py tests/test_ragged.py \
    tests/test_fused_projection.py tests/test_packed.py tests/test_gate_pass.py \
    tests/test_weight_grads.py tests/test_isa_levels.py "$@")

# The leak check, on the regular build (ASan's quarantine would grow RSS itself).
(cd "$work" && "$python" setup.py build_ext --inplace -q --force)
(cd "$work" && FASTRNN_LEAK_CHECK=1 "$python" -m pytest -q -p no:cacheprovider \
    tests/test_reliability.py -k leak)
