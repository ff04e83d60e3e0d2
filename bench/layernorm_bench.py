"""Layer-normalized LSTM: fastrnn's C kernel against the plain fastrnn LSTM,
a PyTorch Python-loop LN-LSTM (the usual way PyTorch users write one) and the
same loop under TorchScript. Issue 11's targets: an LN-LSTM step costs at most
1.3x the plain one, and is at least 3x faster than the PyTorch loop.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/layernorm_bench.py \\
        --threads 1 --repeats 7

Times training (forward + backward) and inference (forward) at the issue's
shape (B=64 T=100 I=128 H=256 by default) with the same weights, median of
--repeats after three warm-ups, and prints a table plus the ratios. Run it on a
quiet machine; every contender uses --threads threads.
"""
import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits


def ln_weights(I, H, seed=0):
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)
    w = {"weight_ih_l0": rng.uniform(-k, k, (4 * H, I)), "weight_hh_l0": rng.uniform(-k, k, (4 * H, H)),
         "bias_ih_l0": rng.uniform(-k, k, 4 * H), "bias_hh_l0": rng.uniform(-k, k, 4 * H)}
    for name, n in (("ih", 4 * H), ("hh", 4 * H), ("c", H)):
        w[f"ln_{name}_weight_l0"] = np.ones(n)
        w[f"ln_{name}_bias_l0"] = np.zeros(n)
    return {k: v.astype(np.float32) for k, v in w.items()}


def fastrnn_runner(weights, X, threads, layer_norm):
    from fastrnn.layers import LSTM
    B, T, I = X.shape
    H = weights["weight_hh_l0"].shape[1]
    stack = LSTM(I, H, layer_norm=layer_norm, n_threads=threads)
    stack.load_state_dict({k: v for k, v in weights.items() if layer_norm or "ln_" not in k})
    dY = np.ones((B, T, H), np.float32)

    def train():
        stack.forward(X, training=True)
        stack.backward(dY)
    return train, lambda: stack.forward(X)


def torch_cell(torch):
    F = torch.nn.functional

    def ln_lstm(X, p: dict[str, "torch.Tensor"]):
        B, T, _ = X.shape
        H = p["weight_hh_l0"].shape[1]
        h = torch.zeros(B, H)
        c = torch.zeros(B, H)
        gx_all = X @ p["weight_ih_l0"].t()
        ys = []
        for t in range(T):
            gx = F.layer_norm(gx_all[:, t], [4 * H], p["ln_ih_weight_l0"], p["ln_ih_bias_l0"])
            gh = F.layer_norm(h @ p["weight_hh_l0"].t(), [4 * H], p["ln_hh_weight_l0"],
                              p["ln_hh_bias_l0"])
            gates = gx + gh + p["bias_ih_l0"] + p["bias_hh_l0"]
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, [H], p["ln_c_weight_l0"],
                                                           p["ln_c_bias_l0"]))
            ys.append(h)
        return torch.stack(ys, 1)
    return ln_lstm


def torch_runner(weights, X, threads, script):
    import torch
    torch.set_num_threads(threads)
    fn = torch_cell(torch)
    if script:
        fn = torch.jit.script(fn)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
    tX = torch.tensor(X)

    def train():
        fn(tX, p).sum().backward()

    def infer():
        with torch.no_grad():
            fn(tX, p)
    return train, infer


def median_seconds(fn, repeats, warmups=3):
    for _ in range(warmups):  # TorchScript optimizes over its first runs
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=64)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--I", type=int, default=128)
    parser.add_argument("--H", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    weights = ln_weights(args.I, args.H)
    X = np.random.default_rng(1).normal(size=(args.B, args.T, args.I)).astype(np.float32)
    runners = {"fastrnn LN-LSTM": lambda: fastrnn_runner(weights, X, args.threads, True),
               "fastrnn LSTM (plain)": lambda: fastrnn_runner(weights, X, args.threads, False)}
    try:
        import torch  # noqa: F401
        runners["PyTorch loop LN-LSTM"] = lambda: torch_runner(weights, X, args.threads, False)
        runners["TorchScript LN-LSTM"] = lambda: torch_runner(weights, X, args.threads, True)
    except ImportError:
        print("PyTorch is not installed: fastrnn only")
    results = {}
    with threadpool_limits(args.threads):
        for name, make in runners.items():
            try:
                train, infer = make()
                results[name] = (median_seconds(train, args.repeats),
                                 median_seconds(infer, args.repeats))
            except Exception as exc:  # e.g. TorchScript unavailable: report, go on
                print(f"{name}: not run ({type(exc).__name__}: {exc})")
    print(f"B={args.B} T={args.T} I={args.I} H={args.H}, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"{'contender':24s} {'training ms':>12s} {'inference ms':>13s}")
    for name, (train, infer) in results.items():
        print(f"{name:24s} {train * 1e3:12.2f} {infer * 1e3:13.2f}")
    ln = results.get("fastrnn LN-LSTM")
    for name, (train, infer) in results.items():
        if ln and name != "fastrnn LN-LSTM":
            print(f"{name} / LN-LSTM: training {train / ln[0]:.2f}x, inference "
                  f"{infer / ln[1]:.2f}x")


if __name__ == "__main__":
    main()
