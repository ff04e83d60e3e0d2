"""Fit time of the README's digits classifier vs the same model trained by a
plain PyTorch loop: LSTM(8 -> 64) + linear head, Adam (lr 0.005), 40 epochs,
batch 64, shuffled, same thread count, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/digits_fit.py --threads 1 2
"""
import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

EPOCHS, BATCH, LR, HIDDEN = 40, 64, 0.005, 64


def data():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def fit_fastrnn(threads, Xtr, Xte, ytr, yte):
    from fastrnn import FastLSTMClassifier
    clf = FastLSTMClassifier(hidden_size=HIDDEN, max_iter=EPOCHS, batch_size=BATCH,
                             learning_rate_init=LR, n_iter_no_change=EPOCHS, alpha=0.0,
                             clip_norm=None, random_state=0, n_threads=threads)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xtr, ytr)
    return time.perf_counter() - start, clf.score(Xte, yte)


def fit_torch(threads, Xtr, Xte, ytr, yte):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, HIDDEN, batch_first=True)
    head = torch.nn.Linear(HIDDEN, 10)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=LR)
    X, y = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        order = torch.randperm(len(X))
        for b in range(0, len(X), BATCH):
            idx = order[b:b + BATCH]
            _, (h, _) = lstm(X[idx])
            loss = torch.nn.functional.cross_entropy(head(h[-1]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        _, (h, _) = lstm(torch.from_numpy(Xte))
        acc = (head(h[-1]).argmax(1).numpy() == yte).mean()
    return seconds, acc


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    Xtr, Xte, ytr, yte = data()
    for threads in args.threads:
        results = {"fastrnn": [], "pytorch": []}
        for _ in range(args.reps):  # interleaved
            results["fastrnn"].append(fit_fastrnn(threads, Xtr, Xte, ytr, yte))
            results["pytorch"].append(fit_torch(threads, Xtr, Xte, ytr, yte))
        med = {k: float(np.median([t for t, _ in v])) for k, v in results.items()}
        acc = {k: v[-1][1] for k, v in results.items()}
        print(f"{threads} thread(s): fastrnn {med['fastrnn']:.2f}s (test accuracy "
              f"{acc['fastrnn']:.3f}), PyTorch {med['pytorch']:.2f}s (test accuracy "
              f"{acc['pytorch']:.3f}): fastrnn {med['pytorch'] / med['fastrnn']:.1f}x faster")


if __name__ == "__main__":
    main()
