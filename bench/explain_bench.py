"""Integrated gradients (n_steps=50, zero baseline, toward the predicted class)
for 1000 digit sequences: fastrnn's FastLSTMClassifier(hidden_size=64).explain
vs captum's IntegratedGradients on the same network rebuilt in PyTorch
(nn.LSTM + nn.Linear loaded from fastrnn's weights), same thread count,
interleaved repeats, median times. The two results are compared too.

captum's riemann_trapezoid on n + 1 points weighs its gradients 1/(n + 1)
(ends halved) where fastrnn's trapezoid over n intervals weighs them 1/n: its
attributions are scaled by (n + 1) / n before the comparison; both evaluate
n + 1 gradients per sample.

    python bench/explain_bench.py --threads 1 2 --repeats 3
"""
import argparse
import json
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

N_SAMPLES, N_STEPS, HIDDEN = 1000, 50, 64


def fitted_classifier():
    from fastrnn import FastLSTMClassifier
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8).astype(np.float32)
    clf = FastLSTMClassifier(hidden_size=HIDDEN, max_iter=10, learning_rate_init=0.005,
                             random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return clf, X[:N_SAMPLES]


def torch_lstm_classifier(torch, net):
    """fastrnn's LSTM + head as PyTorch modules, from its state dict."""
    state = {k: torch.from_numpy(v) for k, v in net.state_dict().items()}
    lstm = torch.nn.LSTM(net.config["input_size"], HIDDEN, batch_first=True)
    lstm.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    head = torch.nn.Linear(HIDDEN, net.config["output_size"])
    head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    return lambda x: head(lstm(x)[1][0][-1])


def time_fastrnn(clf, X, threads):
    clf.model_.stack.n_threads = threads  # the fitted stack's kernel threads
    start = time.perf_counter()
    A = clf.explain(X, "integrated_gradients", n_steps=N_STEPS)
    return time.perf_counter() - start, A


def time_captum(model, X, target, threads):
    import torch
    from captum.attr import IntegratedGradients
    torch.set_num_threads(threads)
    x = torch.from_numpy(X)
    start = time.perf_counter()
    A = IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=torch.from_numpy(target),
        n_steps=N_STEPS + 1, method="riemann_trapezoid")
    return time.perf_counter() - start, A.detach().numpy() * (N_STEPS + 1) / N_STEPS


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    import torch
    clf, X = fitted_classifier()
    target = np.searchsorted(clf.classes_, clf.predict(X))
    model = torch_lstm_classifier(torch, clf.model_)
    results = []
    for threads in args.threads:
        times = {"fastrnn": [], "captum": []}
        for _ in range(args.repeats):  # interleaved
            t_fast, A_fast = time_fastrnn(clf, X, threads)
            t_captum, A_captum = time_captum(model, X, target, threads)
            times["fastrnn"].append(t_fast)
            times["captum"].append(t_captum)
        diff = float(np.abs(A_fast - A_captum).max() / np.abs(A_captum).max())
        row = {"threads": threads, "fastrnn_s": float(np.median(times["fastrnn"])),
               "captum_s": float(np.median(times["captum"])), "max_rel_diff": diff}
        row["speedup"] = row["captum_s"] / row["fastrnn_s"]
        results.append(row)
        print(f"threads {threads}: fastrnn {row['fastrnn_s']:.3f} s, captum "
              f"{row['captum_s']:.3f} s, speed-up {row['speedup']:.1f}x, max |diff| / max |A| "
              f"{diff:.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n_samples": N_SAMPLES, "n_steps": N_STEPS, "hidden_size": HIDDEN,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
