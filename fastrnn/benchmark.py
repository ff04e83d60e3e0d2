"""Head-to-head benchmark: fastrnn vs PyTorch vs Keras (optional) vs plain NumPy.

Run it with OpenBLAS's slow-kernel overrides unset, as every contender should:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE fastrnn bench --threads 1 2

(or ``python bench/compare.py``; PyTorch and TensorFlow are optional contenders).
The ragged group alone (variable lengths: fastrnn with and without lengths,
PyTorch with PackedSequence and padded, Keras with masking):

    fastrnn bench --cases ragged --threads 1 2

Per case it times training (forward + backward) and inference (forward) with
the same weights and thread count. Each contender runs in its own process (so
one library's spinning thread pools cannot slow another), and the parent
interleaves their timings over several repetitions and reports medians, GFLOP/s (forward 2*G*H*(I+H) per sample-step,
training 3x that), the share of this machine's SGEMM peak measured in the same
run, and the ratio to PyTorch and to the best peer. Writes JSON, a Markdown
table and (with matplotlib) a PNG chart to --out.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

GRID = {
    "small": [dict(cell=c, B=32, T=50, I=8, H=64) for c in ("lstm", "gru", "rnn")],
    "medium": [dict(cell=c, B=64, T=100, I=128, H=256) for c in ("lstm", "gru", "rnn")],
    "large": [dict(cell=c, B=64, T=25, I=512, H=512) for c in ("lstm", "gru")]
    + [dict(cell=c, B=16, T=25, I=1024, H=1024) for c in ("lstm", "gru")],
    "latency": [dict(cell="lstm", B=1, T=150, I=256, H=256, modes=("inference",))],
    "generation": [],  # see GENERATION
    # variable lengths: log-normal around T/4 (fill about 0.3), uniform in [T/2, T] (0.75)
    "ragged": [dict(cell=c, B=64, T=200, I=64, H=256, lengths=d)
               for c in ("lstm", "gru") for d in ("lognormal", "uniform")],
}


def case_lengths(case):
    """The per-sample lengths of a ragged case (fixed seed), or None."""
    kind, B, T = case.get("lengths"), case["B"], case["T"]
    if kind is None:
        return None
    rng = np.random.default_rng(2)
    if kind == "lognormal":
        n = np.round(T / 4 * rng.lognormal(0.0, 0.6, B))
    elif kind == "uniform":
        n = rng.integers(T // 2, T + 1, B)
    else:
        raise ValueError(f"unknown lengths {kind!r}: lognormal or uniform")
    return np.clip(n, 1, T).astype(np.int32)


def valid_steps(case):
    lengths = case_lengths(case)
    return case["B"] * case["T"] if lengths is None else int(lengths.sum())


def _gates(cell):
    from fastrnn.layers import STACKS
    return STACKS[cell].n_gates


def case_name(case):
    name = f"{case['cell'].upper()} B={case['B']} T={case['T']} I={case['I']} H={case['H']}"
    if case.get("lengths"):
        name += f" {case['lengths']} fill={valid_steps(case) / (case['B'] * case['T']):.2f}"
    return name


def forward_flops(case):
    """Of the valid steps (every step of a dense case)."""
    G = _gates(case["cell"])
    return 2.0 * G * case["H"] * (case["I"] + case["H"]) * valid_steps(case)


# ----- contenders: each returns {"training": fn, "inference": fn} or None with a reason ----------


def _fastrnn_stack(case, threads, weights):
    from fastrnn.layers import STACKS
    stack = STACKS[case["cell"]](case["I"], case["H"], n_threads=threads)
    stack.load_state_dict(weights)
    return stack


def make_fastrnn(case, threads, weights, X, lengths="case"):
    stack = _fastrnn_stack(case, threads, weights)
    stack.keep_packed_weights()  # as a fitted estimator's predict does
    dY = np.ones((case["B"], case["T"], case["H"]), np.float32)
    lengths = case_lengths(case) if lengths == "case" else lengths

    def training():
        stack.zero_grad()
        stack.forward(X, lengths=lengths, training=True)
        stack.backward(dY)

    return {"training": training, "inference": lambda: stack.forward(X, lengths=lengths)}


def make_fastrnn_portable(case, threads, weights, X):
    """fastrnn with its batch-1 fast paths off (this worker process only): the
    before/after of that path, measured interleaved in one run."""
    from fastrnn import _kernels
    _kernels._force_portable(True)
    return make_fastrnn(case, threads, weights, X)


def make_fastrnn_padded(case, threads, weights, X):
    """A ragged case computed over the padding (no lengths): the cost the
    lengths should save."""
    if case.get("lengths") is None:
        return "ragged cases only"
    return make_fastrnn(case, threads, weights, X, lengths=None)


def _torch_packed(torch, module, Xt, lengths):
    """PyTorch's answer to ragged batches: PackedSequence (packing included)."""
    pack = torch.nn.utils.rnn.pack_padded_sequence
    lengths = torch.from_numpy(lengths.astype(np.int64))

    def training():
        module.zero_grad()
        out, _ = module(pack(Xt, lengths, batch_first=True, enforce_sorted=False))
        out.data.sum().backward()

    def inference():
        with torch.inference_mode():
            module(pack(Xt, lengths, batch_first=True, enforce_sorted=False))

    return {"training": training, "inference": inference}


def make_torch_padded(case, threads, weights, X):
    """A ragged case run over the padding: fast, but its final states are wrong."""
    if case.get("lengths") is None:
        return "ragged cases only"
    return make_torch(case, threads, weights, X, padded=True)


def make_torch(case, threads, weights, X, padded=False):
    try:
        import torch
    except ImportError:
        return "torch not installed"
    torch.set_num_threads(threads)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[case["cell"]]
    module = cls(case["I"], case["H"], batch_first=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    Xt = torch.from_numpy(X)
    if case.get("lengths") is not None and not padded:
        return _torch_packed(torch, module, Xt, case_lengths(case))

    def training():
        module.zero_grad()
        Y, _ = module(Xt)
        Y.sum().backward()

    def inference():
        with torch.inference_mode():
            module(Xt)

    return {"training": training, "inference": inference}


def make_keras(case, threads, weights, X):
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
    except ImportError:
        return "tensorflow not installed (pip install tensorflow-cpu)"
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    layer = {"lstm": tf.keras.layers.LSTM, "gru": tf.keras.layers.GRU,
             "rnn": tf.keras.layers.SimpleRNN}[case["cell"]]
    kw = {"reset_after": True} if case["cell"] == "gru" else {}
    model = layer(case["H"], return_sequences=True, **kw)
    Xt = tf.constant(X)
    lengths = case_lengths(case)  # ragged: Keras' masking
    mask = None if lengths is None else tf.constant(np.arange(case["T"]) < lengths[:, None])
    model(Xt, mask=mask)  # build; Keras' own initial weights: timing does not depend on values

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(Xt, mask=mask))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def infer():
        return model(Xt, mask=mask)

    return {"training": lambda: train_step(), "inference": lambda: infer()}


def make_numpy(case, threads, weights, X):
    """Plain NumPy float32 forward: one input GEMM, then a GEMM and NumPy
    elementwise ops per step. No training (no autograd). Dense cases only."""
    if case.get("lengths") is not None:
        return "dense cases only"
    W_ih, W_hh = weights["weight_ih_l0"], weights["weight_hh_l0"]
    bias = weights["bias_ih_l0"] + weights["bias_hh_l0"]
    cell, H = case["cell"], case["H"]

    def sigmoid(x):
        return 0.5 * (1 + np.tanh(0.5 * x))

    def inference():
        with threadpool_limits(threads, user_api="blas"):
            B, T, _ = X.shape
            gx = (X.reshape(B * T, -1) @ W_ih.T).reshape(B, T, -1)
            h = np.zeros((B, H), np.float32)
            c = np.zeros((B, H), np.float32)
            for t in range(T):
                if cell == "gru":
                    gh = h @ W_hh.T + weights["bias_hh_l0"]
                    g = gx[:, t] + weights["bias_ih_l0"]
                    r, z = sigmoid(g[:, :H] + gh[:, :H]), sigmoid(g[:, H:2 * H] + gh[:, H:2 * H])
                    n = np.tanh(g[:, 2 * H:] + r * gh[:, 2 * H:])
                    h = (1 - z) * n + z * h
                    continue
                g = gx[:, t] + h @ W_hh.T + bias
                if cell == "rnn":
                    h = np.tanh(g)
                else:
                    i, f, gg, o = sigmoid(g[:, :H]), sigmoid(g[:, H:2 * H]), \
                        np.tanh(g[:, 2 * H:3 * H]), sigmoid(g[:, 3 * H:])
                    c = f * c + i * gg
                    h = o * np.tanh(c)

    return {"inference": inference}


def make_onnxruntime(case, threads, weights, X, quantize=False):
    """ONNX Runtime on the same weights (inference only): the serving rival.
    quantize=True: its dynamic int8 quantization (an int8 kernel exists for
    LSTM only; GRU and RNN would stay float32, so they are not offered)."""
    try:
        import onnxruntime  # noqa: F401
        from fastrnn import _onnx
    except ImportError:
        return "onnxruntime/onnx not installed (pip install onnxruntime onnx)"
    if case.get("lengths") is not None:
        return "dense cases only"
    if quantize and case["cell"] != "lstm":
        return "ONNX Runtime quantizes only LSTM nodes dynamically"
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice
    sess = _onnx.session(_onnx.rnn_model(case["cell"], weights, case["H"]), threads, quantize)
    return {"inference": lambda: sess.run(None, {"X": X})}


def make_onnxruntime_int8(case, threads, weights, X):
    return make_onnxruntime(case, threads, weights, X, quantize=True)


def make_torch_int8(case, threads, weights, X):
    """PyTorch's dynamic int8 quantization (quantize_dynamic) of the same layer:
    int8 weights, float activations; inference only."""
    if case["cell"] == "rnn":
        return "quantize_dynamic has no int8 kernel for nn.RNN"
    if case.get("lengths") is not None:
        return "dense cases only"
    made = make_torch(case, threads, weights, X)  # torch present, threads set
    if isinstance(made, str):
        return made
    import torch
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[case["cell"]]
    module = cls(case["I"], case["H"], batch_first=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    quantized = torch.ao.quantization.quantize_dynamic(module, {cls}, dtype=torch.qint8)
    Xt = torch.from_numpy(X)

    def inference():
        with torch.inference_mode():
            quantized(Xt)

    return {"inference": inference}


def make_fastrnn_reduced(case, threads, weights, X, kind):
    """fastrnn's inference with reduced weights (inference_dtype): int8 or
    bfloat16 weights converted once, float32 activations."""
    from fastrnn._quantize import ReducedNetwork
    stack = _fastrnn_stack(case, threads, weights)
    reduced = ReducedNetwork(stack, kind)
    lengths = case_lengths(case)
    return {"inference": lambda: stack.forward(X, lengths=lengths, reduced=reduced)}


def make_fastrnn_int8(case, threads, weights, X):
    return make_fastrnn_reduced(case, threads, weights, X, "int8")


def make_fastrnn_bf16(case, threads, weights, X):
    return make_fastrnn_reduced(case, threads, weights, X, "bfloat16")


CONTENDERS = {"fastrnn": make_fastrnn, "fastrnn_padded": make_fastrnn_padded,
              "fastrnn-portable": make_fastrnn_portable,
              "pytorch": make_torch, "pytorch_padded": make_torch_padded, "keras": make_keras,
              "onnxruntime": make_onnxruntime, "numpy": make_numpy,
              "pytorch-int8": make_torch_int8, "onnxruntime-int8": make_onnxruntime_int8,
              "fastrnn-int8": make_fastrnn_int8, "fastrnn-bf16": make_fastrnn_bf16}
# float32 rivals; the int8 contenders are reference points for reduced precision
PEERS = ("pytorch", "pytorch_padded", "keras", "onnxruntime")
INFERENCE_ONLY = ("numpy", "onnxruntime", "pytorch-int8", "onnxruntime-int8", "fastrnn-int8",
                  "fastrnn-bf16")

# ----- generation: tokens per second of a sampling loop -------------------------------------------

GENERATION = dict(vocab=65, embed=64, hidden=256, layers=2, tokens=300)


def _generation_weights(seed=0):
    g = GENERATION
    rng = np.random.default_rng(seed)
    w = {"embedding.weight": rng.normal(0, 0.5, (g["vocab"], g["embed"])),
         "head.weight": rng.normal(0, 0.1, (g["vocab"], g["hidden"])),
         "head.bias": np.zeros(g["vocab"])}
    for k in range(g["layers"]):
        n_in = g["embed"] if k == 0 else g["hidden"]
        b = 1 / np.sqrt(g["hidden"])
        w[f"weight_ih_l{k}"] = rng.uniform(-b, b, (4 * g["hidden"], n_in))
        w[f"weight_hh_l{k}"] = rng.uniform(-b, b, (4 * g["hidden"], g["hidden"]))
        w[f"bias_ih_l{k}"] = rng.uniform(-b, b, 4 * g["hidden"])
        w[f"bias_hh_l{k}"] = rng.uniform(-b, b, 4 * g["hidden"])
    return {k: v.astype(np.float32) for k, v in w.items()}


def _generation_model():
    """(stack, weights, generation_args) of the benchmark's generator."""
    from fastrnn.layers import LSTM, generation_args
    g, w = GENERATION, _generation_weights()
    stack = LSTM(g["embed"], g["hidden"], num_layers=g["layers"])
    stack.load_state_dict({k: v for k, v in w.items() if "_l" in k})
    args = generation_args(stack, w["embedding.weight"], w["head.weight"], w["head.bias"],
                           np.arange(g["vocab"]))
    return stack, w, args


def generation_fastrnn(threads):
    from fastrnn import _kernels
    _, _, args = _generation_model()
    prompt = np.zeros((1, 1), np.int32)
    return lambda: _kernels.generate(**args, prompt=prompt, h0=None, c0=None,
                                     n_new=GENERATION["tokens"], n_threads=threads)


def generation_fastrnn_reduced(threads, kind):
    """The same loop with inference_dtype=kind: int8 or bfloat16 recurrent and
    head weights (fr_qgenerate)."""
    from fastrnn import _kernels, _quantize
    stack, w, args = _generation_model()
    reduced = _quantize.ReducedNetwork(stack, kind, w["head.weight"])
    args = _quantize.reduced_generation_args(args, stack, reduced)
    prompt = np.zeros((1, 1), np.int32)
    return lambda: _kernels.qgenerate(**args, prompt=prompt, h0=None, c0=None,
                                      n_new=GENERATION["tokens"], n_threads=threads)


def generation_fastrnn_portable(threads):
    from fastrnn import _kernels
    _kernels._force_portable(True)
    return generation_fastrnn(threads)


def generation_torch(threads):
    try:
        import torch
    except ImportError:
        return "torch not installed"
    torch.set_num_threads(threads)
    g, w = GENERATION, _generation_weights()
    emb = torch.nn.Embedding(g["vocab"], g["embed"])
    lstm = torch.nn.LSTM(g["embed"], g["hidden"], num_layers=g["layers"], batch_first=True)
    head = torch.nn.Linear(g["hidden"], g["vocab"])
    emb.weight.data = torch.from_numpy(w["embedding.weight"])
    lstm.load_state_dict({k: torch.from_numpy(v) for k, v in w.items() if "_l" in k})
    head.weight.data, head.bias.data = (torch.from_numpy(w["head.weight"]),
                                        torch.from_numpy(w["head.bias"]))
    generator = torch.Generator().manual_seed(0)

    def run():  # the usual Python loop: one token per iteration
        with torch.inference_mode():
            token, state = torch.zeros((1, 1), dtype=torch.long), None
            for _ in range(g["tokens"]):
                out, state = lstm(emb(token), state)
                probs = torch.softmax(head(out[:, -1]), dim=-1)
                token = torch.multinomial(probs, 1, generator=generator)

    return run


GENERATION_WEIGHT_BYTES = {"fastrnn-int8": 1, "fastrnn-bf16": 2}  # the others: float32


def generation_streamed_bytes(weight_bytes=4):
    """Bytes one token streams: every layer's W_hh, the upper layers' W_ih and
    the head at weight_bytes per weight (float32 4, bfloat16 2, int8 1; the
    int8 row scales left out), and one float32 row of layer 0's
    projected-embedding table (the generation loop looks layer 0's input
    projection up per token)."""
    g = GENERATION
    G, H, L = 4, g["hidden"], g["layers"]
    n = L * G * H * H + (L - 1) * G * H * H + g["vocab"] * H
    return weight_bytes * n + 4 * G * H


def generation_memory_bound(weight_bytes=4):
    """(tokens/s, GB/s): one thread reading generation_streamed_bytes() from
    cache as fast as this machine does (fastrnn.bench_read, measured now)."""
    from fastrnn import _kernels
    n = generation_streamed_bytes(weight_bytes)
    seconds = _kernels.bench_read(n_bytes=n, reps=50)
    return 1 / seconds, n / seconds / 1e9


def run_generation(threads, workers, reps, min_seconds):
    available, notes = [], {}
    for name in workers.conns:
        answer = workers.ask(name, "generation")
        if isinstance(answer, str):
            notes[f"{name} generation"] = answer
        else:
            available.append(name)
    times = {name: [] for name in available}
    for _ in range(reps):
        for name in available:
            times[name].append(workers.ask(name, "time", "tokens/s", min_seconds))
    g = GENERATION
    label = (f"generation: {g['layers']}-layer LSTM H={g['hidden']} emb={g['embed']} "
             f"vocab={g['vocab']}, batch 1")
    med = {name: float(np.median(t)) for name, t in times.items()}
    weight_bytes = {name: GENERATION_WEIGHT_BYTES.get(name, 4) for name in med}
    bounds = {b: generation_memory_bound(b) for b in set(weight_bytes.values())}
    rows = [dict(case=label, cell="lstm", mode="tokens/s", threads=threads, contender=name,
                 seconds=sec / g["tokens"], tokens_per_second=g["tokens"] / sec,
                 memory_bound_tokens_per_second=bounds[weight_bytes[name]][0],
                 read_gbps=bounds[weight_bytes[name]][1],
                 streamed_bytes=generation_streamed_bytes(weight_bytes[name]),
                 gflops=float("nan"),
                 vs_pytorch=med["pytorch"] / sec if "pytorch" in med else None,
                 vs_best_peer=med["pytorch"] / sec if "pytorch" in med else None)
            for name, sec in med.items()]
    return rows, notes


# ----- measurement ---------------------------------------------------------------------------------


def time_once(fn, min_seconds):
    """Seconds per call, over as many calls as fill min_seconds."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n


def sgemm_peak(threads, n=2048, repeats=5):
    from scipy.linalg.blas import sgemm
    a = np.asfortranarray(np.random.default_rng(0).random((n, n), np.float32))
    best = np.inf
    with threadpool_limits(threads, user_api="blas"):
        sgemm(1.0, a, a)
        for _ in range(repeats):
            t = time.perf_counter()
            sgemm(1.0, a, a)
            best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def random_weights(case, seed=0):
    rng = np.random.default_rng(seed)
    G, H, I = _gates(case["cell"]), case["H"], case["I"]
    bound = 1 / np.sqrt(H)
    shapes = {"weight_ih_l0": (G * H, I), "weight_hh_l0": (G * H, H), "bias_ih_l0": (G * H,),
              "bias_hh_l0": (G * H,)}
    return {k: rng.uniform(-bound, bound, s).astype(np.float32) for k, s in shapes.items()}


SPIN_DOWN_SECONDS = 0.3


def _or_reason(name, make, *args):
    """make(*args), or the reason it failed as a note: one contender that
    cannot build (a library too old or too new for its model) must not end
    the whole run."""
    try:
        return make(*args)
    except Exception as exc:  # noqa: BLE001 -- any failure becomes a note
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        return f"{name}: failed to build ({type(exc).__name__}: {first_line})"


def _worker(conn, name, threads):
    """One contender in its own process: libraries that keep threads spinning
    (TensorFlow's pools, OpenMP runtimes) cannot slow the others down.
    Commands: ("build", case) -> available modes or a reason; ("time", mode,
    min_seconds) -> seconds per call; None -> exit."""
    if name != "keras":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    built = None
    while True:
        msg = conn.recv()
        if msg is None:
            return
        if msg[0] == "build":
            case = msg[1]
            weights = random_weights(case)
            X = np.random.default_rng(1).normal(
                size=(case["B"], case["T"], case["I"])).astype(np.float32)
            made = _or_reason(name, CONTENDERS[name], case, threads, weights, X)
            if isinstance(made, str):
                built = None
                conn.send(made)
            else:
                built = made
                for fn in built.values():  # warm up
                    fn()
                conn.send(sorted(built))
        elif msg[0] == "generation":
            made = {"fastrnn": generation_fastrnn, "fastrnn-portable": generation_fastrnn_portable,
                    "pytorch": generation_torch,
                    "fastrnn-int8": lambda t: generation_fastrnn_reduced(t, "int8"),
                    "fastrnn-bf16": lambda t: generation_fastrnn_reduced(t, "bfloat16")
                    }.get(name)
            made = _or_reason(name, made, threads) if made else f"{name}: no generation loop"
            if isinstance(made, str):
                built = None
                conn.send(made)
            else:
                made()
                built = {"tokens/s": made}
                conn.send(["tokens/s"])
        else:
            seconds = time_once(built[msg[1]], msg[2])
            # let this process's thread pools stop spinning before the parent
            # times the next contender: slept after replying, ONNX Runtime's
            # spinning threads took a core from fastrnn-int8's next timing
            # (2 threads, medium LSTM: 29.4 ms after it, 24.5 alone)
            time.sleep(SPIN_DOWN_SECONDS)
            conn.send(seconds)


class Workers:
    """A process per contender for one thread count."""

    def __init__(self, names, threads):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.conns = {}
        self.procs = []
        for name in names:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, name, threads), daemon=True)
            proc.start()
            self.conns[name] = parent
            self.procs.append(proc)

    def ask(self, name, *msg):
        self.conns[name].send(msg)
        return self.conns[name].recv()

    def close(self):
        for conn in self.conns.values():
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=30)


def run_case(case, threads, workers, reps, min_seconds):
    notes, available = {}, {}
    for name in workers.conns:
        answer = workers.ask(name, "build", case)
        if isinstance(answer, str):
            notes[name] = answer
        else:
            available[name] = answer
    modes = case.get("modes", ("training", "inference"))
    times = {(name, mode): [] for name in available for mode in modes if mode in available[name]}
    for _ in range(reps):  # interleaved: drift hits every contender alike
        for (name, mode) in times:
            times[(name, mode)].append(workers.ask(name, "time", mode, min_seconds))
    rows = []
    for mode in modes:
        flops = forward_flops(case) * (3 if mode == "training" else 1)
        medians = {name: float(np.median(times[(name, m)])) for (name, m) in times if m == mode}
        peers = [medians[p] for p in PEERS if p in medians]
        for name, seconds in medians.items():
            rows.append(dict(case=case_name(case), cell=case["cell"], mode=mode, threads=threads,
                             contender=name, seconds=seconds, gflops=flops / seconds / 1e9,
                             fill=valid_steps(case) / (case["B"] * case["T"]),
                             us_per_valid_step=seconds / valid_steps(case) * 1e6,
                             vs_pytorch=(medians["pytorch"] / seconds
                                         if "pytorch" in medians else None),
                             vs_best_peer=(min(peers) / seconds if peers else None)))
    return rows, notes


def _rss_peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def peak_memory_probe(contender, case_json):
    """Run in a child process: how far one training step raises the resident
    set above what it was just before (bytes). The kernel's high-water mark is
    reset first (/proc/self/clear_refs), so imports do not hide the step."""
    case = json.loads(case_json)
    weights = random_weights(case)
    X = np.random.default_rng(1).normal(size=(case["B"], case["T"], case["I"])).astype(
        np.float32)
    made = CONTENDERS[contender](case, 1, weights, X)
    if isinstance(made, str):  # not a contender for this case
        return
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _rss_peak_kib()
    made["training"]()
    print(json.dumps({"peak_growth_bytes": (_rss_peak_kib() - before) * 1024}))


def measure_memory(case, contenders):
    out = {}
    for name in contenders:
        if name in INFERENCE_ONLY:  # the probe times one training step
            continue
        proc = subprocess.run([sys.executable, "-m", "fastrnn.benchmark", "--memory-probe", name,
                               json.dumps(case)], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_growth_bytes"]
    return out


# ----- report ---------------------------------------------------------------------------------------


def environment():
    import fastrnn
    info = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "fastrnn": fastrnn.__version__, "numpy": np.__version__,
            "cpu": fastrnn.build_info()["processor"], "cpus": os.cpu_count(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)")}
    info["blas"] = [f"{b['internal_api']} {b['version']} {b.get('architecture')}"
                    for b in threadpool_info() if b["user_api"] == "blas"]
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def _peak_after(results):
    after = results.get("sgemm_peak_after")
    if not after:
        return ""
    return "; after the thread count's cases: " + ", ".join(
        f"{t} thread(s) {p:.1f} GFLOP/s" for t, p in after.items())


def core_shortfalls(results, share=0.8):
    """Warnings for thread counts whose SGEMM rate, before or after their
    cases, fell below share x threads x one thread's: a shared machine (a
    cloud guest) that did not give the run that many full cores, so those
    rows compare timings taken on less."""
    peaks = results["sgemm_peak"]
    one = peaks.get("1")
    if not one:
        return []
    out = []
    for t, before in peaks.items():
        rates = [before, results.get("sgemm_peak_after", {}).get(t, before)]
        if int(t) > 1 and min(rates) < share * int(t) * one:
            out.append(f"{t} threads reached only {min(rates) / one:.2f}x one thread's SGEMM "
                       f"rate ({' / '.join(f'{r:.0f}' for r in rates)} GFLOP/s before / after "
                       f"their cases): this machine did not give the run {t} full cores "
                       f"throughout, so the {t}-thread rows are not reliable.")
    return out


def markdown(results):
    env = results["environment"]
    lines = ["# fastrnn benchmark results", "",
             f"Date {env['date']}; CPU {env['cpu']} ({env['cpus']} CPUs); Python "
             f"{env['python']}; fastrnn {env['fastrnn']}; PyTorch {env['torch']}; NumPy "
             f"{env['numpy']}; BLAS {', '.join(env['blas'])}; OPENBLAS_CORETYPE="
             f"{env['OPENBLAS_CORETYPE']}, OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}.",
             "", "Measured SGEMM peak (2048^3, scipy's OpenBLAS): " + ", ".join(
                 f"{t} thread(s) {p:.1f} GFLOP/s" for t, p in results["sgemm_peak"].items())
             + _peak_after(results), ""]
    lines += [f"**Warning: {w}**" for w in core_shortfalls(results)]
    lines += ["", "Times are medians of interleaved repetitions. x PyTorch and x best peer are "
              "throughput ratios (above 1: fastrnn is faster).", ""]
    lines += ["| case | mode | threads | contender | ms | GFLOP/s | % peak | x PyTorch | "
              "x best peer |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        peak = results["sgemm_peak"][str(r["threads"])]
        vs = "" if r["vs_pytorch"] is None else f"{r['vs_pytorch']:.2f}"
        vb = "" if r["vs_best_peer"] is None else f"{r['vs_best_peer']:.2f}"
        if "tokens_per_second" in r:
            lines.append(f"| {r['case']} | {r['tokens_per_second']:.0f} tokens/s | "
                         f"{r['threads']} | {r['contender']} | {r['seconds'] * 1e3:.3f} per token "
                         f"| | | {vs} | {vb} |")
            if "memory_bound_tokens_per_second" in r and r["contender"] in (
                    "fastrnn", *GENERATION_WEIGHT_BYTES):
                streamed = r.get("streamed_bytes", generation_streamed_bytes())
                lines.append(f"| ({r['contender']}'s memory bound: {streamed / 2**20:.2f} MiB "
                             f"of weights per token read at {r['read_gbps']:.0f} GB/s on one "
                             f"thread) | {r['memory_bound_tokens_per_second']:.0f} tokens/s | "
                             f"| | | | | | |")
            continue
        lines.append(f"| {r['case']} | {r['mode']} | {r['threads']} | {r['contender']} | "
                     f"{r['seconds'] * 1e3:.2f} | {r['gflops']:.1f} | "
                     f"{100 * r['gflops'] / peak:.0f}% | {vs} | {vb} |")
    lines += ragged_markdown(results["rows"])
    if results.get("memory"):
        lines += ["", "Peak memory growth of one training step (a child process per contender; "
                  "its high-water mark reset just before the step):", ""]
        for case, mem in results["memory"].items():
            lines.append(f"- {case}: " + ", ".join(f"{k} {v / 2**20:.1f} MiB"
                                                  for k, v in mem.items()))
    if results["notes"]:
        lines += ["", "Not measured:", ""] + [f"- {k}: {v}" for k, v in results["notes"].items()]
    return "\n".join(lines) + "\n"


def ragged_markdown(rows):
    """The ragged cases side by side: fastrnn with lengths against itself padded
    (target: ragged <= 1.2 x fill x padded) and PyTorch packed / padded."""
    med = {(r["case"], r["mode"], r["threads"], r["contender"]): r for r in rows if "fill" in r}
    keys = sorted({k[:3] for k, r in med.items() if r["fill"] < 1 and k[3] == "fastrnn"})
    if not keys:
        return []
    lines = ["", "Ragged batches (time per valid step; ragged / (fill x padded) is the cost of "
             "the padding left, 1.0 = none; x: throughput ratios, above 1 fastrnn is faster):",
             "", "| case | mode | threads | fill | fastrnn us/valid step | ragged / (fill x "
             "padded) | x fastrnn padded | x PyTorch packed | x PyTorch padded | x Keras masked |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for case, mode, threads in keys:
        mine = med[(case, mode, threads, "fastrnn")]
        other = {name: med.get((case, mode, threads, name))
                 for name in ("fastrnn_padded", "pytorch", "pytorch_padded", "keras")}
        ratio = {name: "" if r is None else f"{r['seconds'] / mine['seconds']:.2f}"
                 for name, r in other.items()}
        padded = other["fastrnn_padded"]
        left = ("" if padded is None
                else f"{mine['seconds'] / (mine['fill'] * padded['seconds']):.2f}")
        lines.append(f"| {case} | {mode} | {threads} | {mine['fill']:.2f} | "
                     f"{mine['us_per_valid_step']:.2f} | {left} | {ratio['fastrnn_padded']} | "
                     f"{ratio['pytorch']} | {ratio['pytorch_padded']} | {ratio['keras']} |")
    return lines


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in results["rows"]
            if r["contender"] != "numpy" and "tokens_per_second" not in r]
    labels = sorted({(r["case"], r["mode"], r["threads"]) for r in rows})
    names = sorted({r["contender"] for r in rows})
    fig, ax = plt.subplots(figsize=(12, 0.35 * len(labels) + 2))
    for k, name in enumerate(names):
        vals = [next((r["gflops"] for r in rows if (r["case"], r["mode"], r["threads"]) == lab
                      and r["contender"] == name), 0) for lab in labels]
        ax.barh(np.arange(len(labels)) + k * 0.8 / len(names), vals, 0.8 / len(names),
                label=name)
    ax.set_yticks(np.arange(len(labels)) + 0.4)
    ax.set_yticklabels([f"{c} {m} {t}t" for c, m, t in labels], fontsize=7)
    ax.set_xlabel("GFLOP/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastrnn bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", nargs="+", default=None, choices=list(GRID),
                        help="groups of the grid (default: all, or none when --case is given)")
    parser.add_argument("--case", action="append", default=[], metavar="CELL,B,T,I,H[,LENGTHS]",
                        help="an extra case, e.g. lstm,64,50,512,512 or, ragged, "
                        "gru,8,40,8,16,lognormal (lognormal or uniform; repeatable)")
    parser.add_argument("--contenders", nargs="+",
                        default=[c for c in CONTENDERS if c != "fastrnn-portable"],
                        choices=list(CONTENDERS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.2)
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak training memory of the medium LSTM")
    parser.add_argument("--out", default="bench_out", help="where the reports go")
    parser.add_argument("--memory-probe", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        peak_memory_probe(*args.memory_probe)
        return 0

    os.makedirs(args.out, exist_ok=True)
    results = {"environment": environment(), "rows": [], "notes": {}, "memory": {},
               "sgemm_peak": {}, "sgemm_peak_after": {}}
    extra = []
    for spec in args.case:
        cell, *dims = spec.split(",")
        case = dict(cell=cell, **dict(zip("BTIH", map(int, dims[:4]))))
        extra.append(dict(case, lengths=dims[4]) if len(dims) > 4 else case)
    if args.cases is None:
        args.cases = [] if extra else list(GRID)
    groups = [GRID[g] for g in args.cases] + ([extra] if extra else [])
    for threads in args.threads:  # the SGEMM rate just before and after each thread count
        results["sgemm_peak"][str(threads)] = sgemm_peak(threads)
        workers = Workers(args.contenders, threads)
        try:
            run_thread_count(results, args, groups, threads, workers)
        finally:
            workers.close()
        results["sgemm_peak_after"][str(threads)] = sgemm_peak(threads)
    if args.memory:
        case = GRID["medium"][0]
        results["memory"][case_name(case)] = measure_memory(case, args.contenders)
    _save_json(results, args.out, complete=True)
    with open(os.path.join(args.out, "RESULTS.md"), "w") as f:
        f.write(markdown(results))
    chart(results, os.path.join(args.out, "results.png"))
    print(f"wrote {args.out}/results.json, RESULTS.md" + ", results.png")
    return 0


def run_thread_count(results, args, groups, threads, workers):
    """Every case (and generation) at one thread count, into results; the
    JSON is saved after each."""
    if "generation" in args.cases:
        rows = _record(results, args.out,
                       *run_generation(threads, workers, args.reps, args.min_seconds))
        for r in rows:
            print(f"{r['case']} {threads}t {r['contender']:<8} "
                  f"{r['tokens_per_second']:9.0f} tokens/s "
                  f"{r['seconds'] * 1e6:7.1f} us/token (one-thread memory bound "
                  f"{r['memory_bound_tokens_per_second']:.0f} tokens/s at "
                  f"{r['read_gbps']:.0f} GB/s)", flush=True)
    for group in groups:
        for case in group:
            rows = _record(results, args.out,
                           *run_case(case, threads, workers, args.reps, args.min_seconds))
            for r in rows:
                print(f"{r['case']:<34} {r['mode']:<9} {threads}t {r['contender']:<8} "
                      f"{r['seconds'] * 1e3:9.2f} ms {r['gflops']:7.1f} GFLOP/s"
                      + ("" if r["vs_pytorch"] is None else
                         f"  x{r['vs_pytorch']:.2f} vs PyTorch"), flush=True)


def _record(results, out, rows, notes):
    """rows and notes into results, saved at once; returns rows."""
    results["rows"] += rows
    results["notes"].update(notes)
    _save_json(results, out, complete=False)
    return rows


def _save_json(results, out, complete):
    """results.json, rewritten after every case: a run stopped part way (a
    time limit, Ctrl-C) keeps what it measured, marked incomplete."""
    path = os.path.join(out, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(dict(results, complete=complete), f, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
