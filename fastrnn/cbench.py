"""C-level benchmark: the kernels timed in C, and what the Python layer adds.

``fastrnn cbench`` (or ``python -m fastrnn.cbench``) runs, for every cell
(LSTM, GRU, Elman RNN with tanh and relu) over a grid of sizes, dense and
ragged batches and thread counts:

- forward (training), backward and forward (inference) of one layer, each
  timed by a loop in C (``csrc/bench.c``: best of ``reps``, no Python between
  the calls), with GFLOP/s and the share of this machine's SGEMM rate measured
  in the same run (same BLAS, same thread count);
- the same passes through the Python layer API (``fastrnn.layers``), so the
  cost of validation, allocation and the binding shows as a percentage on top
  of the C time;
- the generation loop (2-layer LSTM, batch 1; the whole loop is one C call) in
  microseconds per token.

Nothing needs compiling: the timing loops are part of the extension. The
standalone program ``bench/c_bench`` (``bash bench/build_c_bench.sh``) runs the
same loops with no Python at all.

Example
-------
>>> from fastrnn.cbench import run_case
>>> row = run_case("lstm", dict(B=4, T=5, I=3, H=8), threads=1, reps=1)
>>> sorted(row["c_seconds"])
['backward', 'forward_infer', 'forward_train']
"""
import argparse
import json
import platform
import sys

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from fastrnn import _kernels

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
SIZES = {
    "tiny": dict(B=4, T=8, I=4, H=16),
    "small": dict(B=32, T=50, I=8, H=64),
    "medium": dict(B=64, T=100, I=128, H=256),
    "large": dict(B=64, T=25, I=512, H=512),
}
PASSES = ("forward_train", "backward", "forward_infer")


def ragged_lengths(batch, steps, seed=0):
    """Log-normal lengths around steps/4, clipped to [1, steps]: about 30% of
    the padded batch is real work (the ragged case of issue 9's benchmark)."""
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(np.log(steps / 4), 0.6, size=batch).round()
    return np.clip(lengths, 1, steps).astype(np.int32)


def _flops(cell, shape, valid_steps):
    """Forward FLOPs: the input and recurrent products over the valid steps."""
    G = _kernels.gates(cell)
    return 2.0 * G * shape["H"] * (shape["I"] + shape["H"]) * valid_steps


def _time_python(cell, shape, lengths, threads, reps):
    """Best-of-reps seconds of the same passes through fastrnn.layers."""
    from time import perf_counter

    from fastrnn.layers import GRU, LSTM, RNN
    kind = cell.split("_")[0]
    kw = {"nonlinearity": cell.split("_")[1]} if kind == "rnn" else {}
    stack = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[kind](shape["I"], shape["H"],
                                                         n_threads=threads, **kw)
    rng = np.random.default_rng(0)
    X = rng.uniform(-0.1, 0.1, (shape["B"], shape["T"], shape["I"])).astype(np.float32)
    dY = rng.uniform(-0.1, 0.1, (shape["B"], shape["T"], shape["H"])).astype(np.float32)
    best = dict.fromkeys(PASSES, np.inf)
    for _ in range(reps):
        t0 = perf_counter()
        stack.forward(X, lengths=lengths, training=True)
        t1 = perf_counter()
        stack.backward(dY)
        t2 = perf_counter()
        stack.forward(X, lengths=lengths)
        t3 = perf_counter()
        for name, seconds in zip(PASSES, (t1 - t0, t2 - t1, t3 - t2)):
            best[name] = min(best[name], seconds)
    return best


def sgemm_gflops(threads, n=1024, reps=3):
    """This machine's SGEMM rate (GFLOP/s) through the kernels' BLAS."""
    with threadpool_limits(threads, user_api="blas"):
        return 2.0 * n ** 3 / _kernels.bench_sgemm(n=n, reps=reps) / 1e9


def run_case(cell, shape, *, threads=1, reps=5, ragged=False, peak=None):
    """Time one case in C and through Python; returns a dict (see module doc)."""
    lengths = ragged_lengths(shape["B"], shape["T"]) if ragged else None
    valid = int(lengths.sum()) if ragged else shape["B"] * shape["T"]
    code = _kernels.CELLS[cell]
    with threadpool_limits(1, user_api="blas"):  # the kernels' own threads call BLAS
        c_seconds = _kernels.bench_layer(cell=code, **shape, lengths=lengths,
                                         n_threads=threads, reps=reps)
    py_seconds = _time_python(cell, shape, lengths, threads, reps)
    flops = _flops(code, shape, valid)
    work = {"forward_train": flops, "backward": 2 * flops, "forward_infer": flops}
    gflops = {p: work[p] / c_seconds[p] / 1e9 for p in PASSES}
    return {
        "cell": cell, **shape, "threads": threads, "ragged": ragged,
        "fill": valid / (shape["B"] * shape["T"]),
        "c_seconds": c_seconds, "python_seconds": py_seconds, "gflops": gflops,
        "share_of_sgemm": {p: gflops[p] / peak for p in PASSES} if peak else None,
        "python_overhead": {p: py_seconds[p] / c_seconds[p] - 1 for p in PASSES},
    }


def time_generation(threads, reps=3):
    """Microseconds per token of the C generation loop (benchmark.GENERATION's
    2-layer LSTM, batch 1)."""
    from time import perf_counter

    from fastrnn.benchmark import GENERATION, generation_fastrnn
    run = generation_fastrnn(threads)
    best = np.inf
    with threadpool_limits(1, user_api="blas"):
        for _ in range(reps):
            t0 = perf_counter()
            run()
            best = min(best, perf_counter() - t0)
    return {"threads": threads, "tokens": GENERATION["tokens"],
            "us_per_token": 1e6 * best / GENERATION["tokens"]}


def _line(row):
    shape = f"B={row['B']} T={row['T']} I={row['I']} H={row['H']}"
    fill = f" ragged fill {row['fill']:.2f}" if row["ragged"] else ""
    parts = []
    for p in PASSES:
        share = f" {100 * row['share_of_sgemm'][p]:3.0f}%" if row["share_of_sgemm"] else ""
        parts.append(f"{p:14s}{1e3 * row['c_seconds'][p]:9.3f} ms {row['gflops'][p]:6.1f} GF/s"
                     f"{share} py +{100 * row['python_overhead'][p]:.0f}%")
    return f"{row['cell']:8s} {shape}{fill} threads={row['threads']}\n    " + "\n    ".join(parts)


def blas_description():
    libs = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} "
            f"({i.get('filepath', '').rsplit('/', 1)[-1]})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(libs) or "unknown BLAS"


def run(cells=CELLS, sizes=("small", "medium"), threads=(1,), reps=5, ragged=True,
        generation=True, out=None):
    """The whole grid; prints a line per case (to out, default stdout) and
    returns the report."""
    out = out or sys.stdout
    report = {"machine": platform.processor() or platform.machine(),
              "blas": blas_description(), "cases": [], "generation": []}
    print(f"fastrnn C-level benchmark; BLAS: {report['blas']}", file=out)
    for n_threads in threads:
        peak = sgemm_gflops(n_threads)
        print(f"threads={n_threads}: SGEMM {peak:.1f} GFLOP/s", file=out)
        for size in sizes:
            for cell in cells:
                for is_ragged in ((False, True) if ragged else (False,)):
                    row = run_case(cell, SIZES[size], threads=n_threads, reps=reps,
                                   ragged=is_ragged, peak=peak)
                    row["size"], row["sgemm_gflops"] = size, peak
                    report["cases"].append(row)
                    print(_line(row), file=out, flush=True)
        if generation:
            gen = time_generation(n_threads)
            report["generation"].append(gen)
            print(f"generation (2-layer LSTM H=256, batch 1) threads={n_threads}: "
                  f"{gen['us_per_token']:.1f} us/token", file=out)
    return report


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(prog="fastrnn cbench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS),
                        help="cells to time")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "medium"],
                        help="shapes: " + ", ".join(f"{k} {v}" for k, v in SIZES.items()))
    parser.add_argument("--threads", nargs="+", type=int, default=[1], help="thread counts")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (best is kept)")
    parser.add_argument("--no-ragged", action="store_true", help="skip the ragged batches")
    parser.add_argument("--no-generation", action="store_true", help="skip generation")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def main(argv=None, args=None):
    args = args or build_parser().parse_args(argv)
    if args.reps < 1 or min(args.threads) < 1:
        raise SystemExit("--reps and --threads must be >= 1")
    report = run(args.cells, args.sizes, args.threads, args.reps, not args.no_ragged,
                 not args.no_generation)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
