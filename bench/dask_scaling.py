"""Data-parallel training on a Dask cluster: measured steps/s for 1 and 2
workers on this machine, and a projection to 8 and 32 machines.

Medium LSTM: global batch B=256, T=100, I=128, H=256, 10 classes, float32, one
thread per worker. What is measured:

- steps/s of fastrnn.dask.fit (sync_every=1 and 4) on a LocalCluster of 1 and 2
  worker processes (each step: parameters to every worker, gradients back);
- communication per synchronisation = round time - slowest worker's compute
  (fastrnn.dask's dask_fit_stats_), i.e. serialisation, transfer over
  loopback, scheduling and the client's sum and optimizer step;
- compute of one worker's share, B/W samples, for W = 1, 2, 8, 32 (loss and
  gradient in this process: small per-worker batches use the cores less well,
  so compute does not fall as 1/W).

Projection to W machines (synchronous, the client is the parameter server):
    step(W) = compute(B/W) + overhead + W * 2 * param_bytes / link
with link = 10 Gb/s and overhead = the measured per-round cost that is not
bandwidth (from the 2-worker run). With sync_every=k the last two terms are
paid once per k steps.

    python bench/dask_scaling.py [--epochs 3] [--samples 1024]

(from a source checkout with an in-place build: PYTHONPATH=. so that the
worker processes import the same fastrnn)
"""
import argparse
import json
import time
import warnings

import numpy as np

B, T, I, H, CLASSES = 256, 100, 128, 256, 10
LINK_BYTES_PER_S = 10e9 / 8
ALL_WORKERS = (1, 2, 4, 8, 16, 32, 64)  # machine counts whose share compute is measured


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, I)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=n)
    return X, y


def estimator(epochs):
    from fastrnn import FastLSTMClassifier
    return FastLSTMClassifier(hidden_size=H, batch_size=B, max_iter=epochs,
                              n_iter_no_change=epochs + 1, n_threads=1, random_state=0)


def measure_cluster(n_workers, sync_every, X, y, epochs):
    import dask.array as da
    from distributed import Client, LocalCluster
    import fastrnn.dask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        with cluster, Client(cluster) as client:
            chunk = -(-len(X) // n_workers)
            dX = da.from_array(X, chunks=(chunk, -1, -1))
            dy = da.from_array(y, chunks=chunk)
            clf = fastrnn.dask.fit(estimator(epochs), dX, dy, client=client,
                                   sync_every=sync_every)
    stats = clf.dask_fit_stats_
    rounds = np.array(stats["step_seconds"][1:])  # the first round warms up
    compute = np.array(stats["compute_seconds"][1:])
    return {"workers": stats["n_workers"], "sync_every": sync_every,
            "steps_per_s": sync_every / float(np.median(rounds)),
            "round_s": float(np.median(rounds)), "compute_s": float(np.median(compute)),
            "comm_per_round_s": float(np.median(rounds - compute))}


def measure_share_compute(X, y, shares, repeats=3):
    """Seconds of loss + gradient of a batch of `share` samples, in this process."""
    from fastrnn._threads import single_threaded_blas
    from fastrnn.dask import _loss_and_grad, _prepare
    clf = estimator(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.set_params(max_iter=1).fit(X[:B], y[:B])
    shard = _prepare(clf, X[:B], y[:B], None)
    out = {}
    with single_threaded_blas():
        for share in shares:
            idx = np.arange(share)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                _loss_and_grad(clf, shard, idx)
                times.append(time.perf_counter() - started)
            out[share] = min(times)
    return out, clf.model_.flat_params.size * 4


def project(share_compute, param_bytes, overhead_s, workers, sync_every):
    compute = share_compute[B // workers]
    comm = overhead_s + workers * 2 * param_bytes / LINK_BYTES_PER_S
    return compute + comm / sync_every, compute, comm


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args()
    X, y = make_data(args.samples)
    runs = [measure_cluster(w, k, X, y, args.epochs) for w, k in ((1, 1), (2, 1), (2, 4))]
    share_compute, param_bytes = measure_share_compute(X, y, [B // w for w in ALL_WORKERS])
    two = next(r for r in runs if r["workers"] == 2 and r["sync_every"] == 1)
    overhead = max(0.0, two["comm_per_round_s"] - 2 * 2 * param_bytes / LINK_BYTES_PER_S)

    print(f"medium LSTM B={B} T={T} I={I} H={H}: {param_bytes / 1e6:.2f} MB of parameters; "
          "measured on a shared 2-core machine")
    print("\n| workers | sync_every | steps/s | round (s) | slowest compute (s) | "
          "communication per round (s) |\n|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['workers']} | {r['sync_every']} | {r['steps_per_s']:.2f} | "
              f"{r['round_s']:.3f} | {r['compute_s']:.3f} | {r['comm_per_round_s']:.3f} |")
    print("\ncompute of one worker's share (s): " + ", ".join(
        f"B/{B // s}={s}: {t:.3f}" for s, t in share_compute.items()))
    print(f"per-round overhead beyond bandwidth (from 2 workers): {overhead * 1e3:.1f} ms")
    print("\nprojection, 10 Gb/s link, client as parameter server\n"
          "| machines | sync_every | compute (s) | communication (s) | steps/s | "
          "speed-up over one process |\n"
          "|---|---|---|---|---|---|")
    base = share_compute[B]
    projection = []
    for workers in (1, 2, 8, 32):
        for k in ((1,) if workers == 1 else (1, 4, 16)):
            step, compute, comm = project(share_compute, param_bytes, overhead, workers, k)
            projection.append(dict(workers=workers, sync_every=k, step_s=step))
            print(f"| {workers} | {k} | {compute:.3f} | {comm:.3f} | {1 / step:.2f} | "
                  f"{base / step:.1f}x |")
    for k in (1, 4, 16):
        rates = {w: 1 / project(share_compute, param_bytes, overhead, w, k)[0]
                 for w in ALL_WORKERS}
        peak = max(rates, key=rates.get)
        print(f"sync_every={k}: steps/s peaks at {peak} machines ({rates[peak]:.1f} steps/s, "
              f"{base * rates[peak]:.1f}x); at 64: {rates[64]:.1f} steps/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(runs=runs, share_compute={str(k): v for k, v in share_compute.items()},
                           param_bytes=param_bytes, overhead_s=overhead,
                           projection=projection), f, indent=1)


if __name__ == "__main__":
    main()
