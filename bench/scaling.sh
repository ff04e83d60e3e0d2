#!/usr/bin/env bash
# Thread-scaling run for a many-core machine: builds the extension in place,
# then runs the named parts, each step with its own time limit, writing into
# OUTDIR as it goes (fastrnn bench saves its JSON after every case), so a run
# cut short keeps what it finished.
#   bash bench/scaling.sh OUTDIR PART...        THREADS="1 2 4 8 16" by default
# Parts:
#   check    the CPU (lscpu), versions, and the kernel tests against PyTorch
#   cbench   the C kernels, LSTM and GRU, medium and large, ragged and dense
#   dense    fastrnn bench latency, medium and large: fastrnn, PyTorch, ONNX Runtime
#   ragged   fastrnn bench ragged: with and without lengths, PyTorch packed and padded
#   small    fastrnn bench small
#   serving  batch-1 latency with int8 and bfloat16 weights against the int8 rivals
#   generation  tokens/s, fp32, int8 and bf16 against PyTorch's sampling loop
set -uo pipefail
out=${1:?output directory}
shift
mkdir -p "$out"
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
py=${PYTHON:-python3}
fr="$py -m fastrnn.cli"
threads=${THREADS:-"1 2 4 8 $( [ "$(nproc)" -ge 16 ] && echo 16 )"}
limit=${LIMIT:-180}  # seconds per step
stamp() { echo "== $(date +%T) $*"; }
bench() {  # name, then fastrnn bench arguments
    local name=$1; shift
    stamp "bench $name: $*"
    timeout "$limit" env PYTHONUNBUFFERED=1 $fr bench "$@" --reps 3 --out "$out/$name" \
        > "$out/$name.txt" 2>&1
    echo "rc=$?"
}

stamp build
$py setup.py build_ext --inplace -q -j "$(nproc)" > "$out/build.log" 2>&1 \
    || { tail -30 "$out/build.log"; exit 1; }
for part in "$@"; do
    case $part in
    check)
        { lscpu; echo; gcc --version | head -1; $py --version;
          $py -c "import numpy, scipy; print('numpy', numpy.__version__, 'scipy', scipy.__version__)";
          $py -c "import torch; print('torch', torch.__version__)";
          $py -c "import onnxruntime; print('onnxruntime', onnxruntime.__version__)";
          $fr info; } > "$out/env.txt" 2>&1
        grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node|L2|L3" "$out/env.txt"
        stamp tests
        timeout "$limit" $py -m pytest -q -x -p no:cacheprovider tests/test_kernels.py \
            tests/test_ragged.py tests/test_quantize.py tests/test_row_split.py \
            > "$out/tests.log" 2>&1
        echo "rc=$?"; tail -1 "$out/tests.log" ;;
    cbench)
        stamp cbench
        timeout "$limit" env PYTHONUNBUFFERED=1 $fr cbench --cells lstm gru \
            --sizes medium large --threads $threads --reps 3 --no-generation \
            --json "$out/cbench.json" > "$out/cbench.txt" 2>&1
        echo "rc=$?" ;;
    dense) bench dense --cases latency medium large --threads $threads \
            --contenders fastrnn pytorch onnxruntime ;;
    ragged) bench ragged --cases ragged --threads $threads \
            --contenders fastrnn fastrnn_padded pytorch pytorch_padded ;;
    small) bench small --cases small --threads $threads \
            --contenders fastrnn pytorch onnxruntime ;;
    serving) bench serving --cases latency --threads $threads --contenders fastrnn \
            fastrnn-int8 fastrnn-bf16 onnxruntime onnxruntime-int8 pytorch-int8 ;;
    generation) bench generation --cases generation --threads $threads \
            --contenders fastrnn fastrnn-int8 fastrnn-bf16 pytorch ;;
    *) echo "unknown part $part"; exit 2 ;;
    esac
done
stamp done
