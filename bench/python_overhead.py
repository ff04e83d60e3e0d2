"""What the Python layer adds on top of the kernel call, measured so that a
loaded, shared machine still gives usable ratios.

For each shape, dense and ragged (fastrnn.cbench's log-normal lengths, fill
about 0.3), and each pass (forward-train, backward, forward-infer) of a
one-layer stack on one thread:

- the bare binding call: ``_kernels.forward`` / ``_kernels.backward`` on
  preallocated, warm buffers, inside one BLAS limit (what fastrnn.layers
  wraps; it includes the binding's own checks, a few microseconds);
- the layer call: ``LSTM.forward`` / ``LSTM.backward`` as a user makes it
  (checks, allocation, workspaces, the BLAS limit).

Both are timed with the calling thread's CPU time (time.thread_time: time
spent waiting for a core shared with other processes is not counted, page
faults are), interleaved round by round with the order alternating. The
report gives the median over rounds of (layer / bare) - 1, and the ratio of
the minima.

    python bench/python_overhead.py --sizes small medium --cells lstm gru --rounds 30
"""
import argparse
import json
import time
from contextlib import nullcontext

import numpy as np

from fastrnn import _kernels
from fastrnn._threads import single_threaded_blas
from fastrnn.cbench import SIZES, ragged_lengths
from fastrnn.layers import STACKS

SHAPES = dict(SIZES, issue9=dict(B=64, T=200, I=64, H=256))
PASSES = ("forward_train", "backward", "forward_infer")


def bare_calls(stack, X, dY, lengths):
    """The three passes as bare binding calls on preallocated buffers."""
    B, T, I = X.shape
    H, cell, d = stack.hidden_size, _kernels.CELLS[stack.cell], stack.direction(0)
    lstm = stack.cell == "lstm"
    f32 = np.float32
    Y, hN = np.zeros((B, T, H), f32), np.zeros((B, H), f32)
    cN = np.zeros((B, H), f32) if lstm else None
    size = dict(cell=cell, B=B, T=T, I=I, H=H, lengths=lengths)
    ws_train = np.zeros(_kernels.workspace_size(training=True, **size), f32)
    ws_infer = np.zeros(_kernels.workspace_size(training=False, **size), f32)
    bws = np.zeros(_kernels.backward_workspace_size(**size), f32)
    dX, dh0 = np.zeros_like(X), np.zeros((B, H), f32)
    dc0 = np.zeros((B, H), f32) if lstm else None
    grads = [np.zeros_like(a) for a in (d.W_ih, d.W_hh, d.b_ih, d.b_hh)]

    def forward(ws, training):
        _kernels.forward(cell=cell, X=X, W_ih=d.W_ih, W_hh=d.W_hh, b_ih=d.b_ih, b_hh=d.b_hh,
                         h0=None, c0=None, Y=Y, y_col=0, hN=hN, cN=cN, lengths=lengths,
                         reverse=False, ws=ws, training=training, n_threads=1)

    def backward():
        _kernels.backward(cell=cell, X=X, W_ih=d.W_ih, W_hh=d.W_hh, ws=ws_train, dY=dY,
                          y_col=0, dhN=None, dcN=None, dX=dX, accumulate_dx=False,
                          dW_ih=grads[0], dW_hh=grads[1], db_ih=grads[2], db_hh=grads[3],
                          dh0=dh0, dc0=dc0, lengths=lengths, reverse=False, bws=bws,
                          n_threads=1)

    return {"forward_train": lambda: forward(ws_train, True), "backward": backward,
            "forward_infer": lambda: forward(ws_infer, False)}


def layer_calls(stack, X, dY, lengths):
    return {"forward_train": lambda: stack.forward(X, lengths=lengths, training=True),
            "backward": lambda: stack.backward(dY),
            "forward_infer": lambda: stack.forward(X, lengths=lengths)}


def measure(cell, shape, ragged, rounds):
    """{pass: (min bare s, min layer s, median of layer/bare - 1)}."""
    B, T, I, H = shape["B"], shape["T"], shape["I"], shape["H"]
    lengths = ragged_lengths(B, T) if ragged else None
    stack = STACKS[cell](I, H, n_threads=1, random_state=0)
    rng = np.random.default_rng(0)
    X = rng.uniform(-0.1, 0.1, (B, T, I)).astype(np.float32)
    dY = rng.uniform(-0.1, 0.1, (B, T, H)).astype(np.float32)
    bare, layer = bare_calls(stack, X, dY, lengths), layer_calls(stack, X, dY, lengths)
    times = {p: ([], []) for p in PASSES}
    clock = time.thread_time
    for r in range(rounds + 1):  # round 0 warms up
        for p in PASSES:  # the bare backward reads the bare training forward's workspace
            order = ((0, bare[p]), (1, layer[p]))[::1 if r % 2 else -1]
            for which, call in order:
                with single_threaded_blas() if which == 0 else nullcontext():
                    t0 = clock()
                    call()
                    elapsed = clock() - t0
                if r:
                    times[p][which].append(elapsed)
    return {p: (min(b), min(l), float(np.median(np.array(l) / np.array(b))) - 1)
            for p, (b, l) in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SHAPES), default=["small"])
    parser.add_argument("--cells", nargs="+", choices=sorted(STACKS), default=["lstm"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    report = []
    for cell in args.cells:
        for size in args.sizes:
            for ragged in (False, True):
                res = measure(cell, SHAPES[size], ragged, args.rounds)
                report.append(dict(cell=cell, size=size, ragged=ragged, **SHAPES[size],
                                   passes=res))
                print(f"{cell:4s} {size:7s} {'ragged' if ragged else 'dense':6s} " + "  ".join(
                    f"{p} {1e3 * b:8.3f} ms {100 * m:+5.1f}%" for p, (b, _, m) in res.items()),
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
