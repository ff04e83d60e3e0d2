"""End-to-end fit on ragged token sequences (issue 9 item 5): fastrnn's token
classifier against the same model trained by a PyTorch loop with
PackedSequence, in one run.

The task: 20k sequences of 5-400 tokens (log-uniform lengths) over a
50-token vocabulary; two marker tokens are scattered among random filler
tokens and the label says which marker appears more often. A recurrent model
has to count over the whole sequence to learn it; chance is 50%.

The model, the same on both sides: embedding 32, LSTM 128, linear head with
one logit (binary cross-entropy), Adam (lr 0.005), batch 64, gradient norm
clipped at 5, no weight decay, 3 epochs. PyTorch trains in two ways:

- ``pytorch_packed``: what a competent PyTorch user writes: batches drawn
  from length buckets (the samples sorted by length, cut into buckets of 16
  batches, buckets shuffled within and the batches shuffled, the same scheme
  as fastrnn's length_bucketing), each batch padded to its own longest
  sequence and packed with pack_padded_sequence.
- ``pytorch_naive``: shuffled random batches, padded and packed the same way.

Each library starts from its own default initialisation (PyTorch: embedding
N(0, 1), uniform(+-1/sqrt(H)) elsewhere; fastrnn: embedding U(-0.05, 0.05),
Glorot, orthogonal recurrent weights, forget-gate bias 1);
``--contenders ... pytorch_packed_fastrnn_init`` adds the PyTorch loop started
from fastrnn's scheme, which separates the engines from the initialisations.

Fit time is wall time from the model's construction to the last step (for
fastrnn: ``fit``, input checks included; its epochs are reported as the
mean), with the process's CPU time beside it: at 1 thread the CPU-time ratio
holds up better on a loaded machine. Held-out accuracy is on 2k further sequences of the same task; prediction
time is reported too. Contenders run interleaved, one after the other, in
this process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/ragged_fit.py --threads 1
    python bench/ragged_fit.py --small          # seconds: the test's size
"""
import argparse
import time
import warnings

import numpy as np

VOCAB, EMBED, HIDDEN, LR, BATCH, CLIP = 50, 32, 128, 0.005, 64, 5.0
MARKER_A, MARKER_B = 1, 2
BUCKET_BATCHES = 16


def make_task(n, min_len, max_len, rng):
    """n token sequences (lengths log-uniform in [min_len, max_len]) and their
    labels: 1 where MARKER_A appears more often than MARKER_B, else 0 (never
    a tie). Filler tokens are uniform over the other ids."""
    lengths = np.exp(rng.uniform(np.log(min_len), np.log(max_len + 1), n)).astype(int)
    lengths = np.clip(lengths, min_len, max_len)
    seqs, labels = [], rng.integers(0, 2, n)
    for length, label in zip(lengths, labels):
        seq = rng.integers(MARKER_B + 1, VOCAB, length)
        n_more = rng.integers(1, min(4, length) + 1)  # the winner's count
        n_less = rng.integers(0, min(n_more - 1, length - n_more) + 1)
        places = rng.choice(length, n_more + n_less, replace=False)
        more, less = (MARKER_A, MARKER_B) if label else (MARKER_B, MARKER_A)
        seq[places[:n_more]] = more
        seq[places[n_more:]] = less
        seqs.append(seq.astype(np.int64))
    return seqs, labels


def bucketed_batches(lengths, batch, rng):
    """Sample indices in batches of similar length: sorted by length (ties
    random), buckets of BUCKET_BATCHES batches shuffled within, then all
    batches shuffled."""
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    size = batch * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), size):
        bucket = rng.permutation(order[start:start + size])
        batches += [bucket[b:b + batch] for b in range(0, len(bucket), batch)]
    return [batches[k] for k in rng.permutation(len(batches))]


def random_batches(lengths, batch, rng):
    order = rng.permutation(len(lengths))
    return [order[b:b + batch] for b in range(0, len(order), batch)]


def fit_fastrnn(train, test, epochs, threads, seed):
    from sklearn.exceptions import ConvergenceWarning

    from fastrnn import FastLSTMClassifier
    clf = FastLSTMClassifier(embedding_dim=EMBED, vocab_size=VOCAB, hidden_size=HIDDEN,
                             learning_rate_init=LR, batch_size=BATCH, max_iter=epochs,
                             n_iter_no_change=epochs, alpha=0.0, clip_norm=CLIP,
                             random_state=seed, n_threads=threads)
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(*train)
    fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    predicted = clf.predict(test[0])
    predict_seconds = time.perf_counter() - start
    return {"fit": fit_seconds, "fit_cpu": fit_cpu, "epochs": [fit_seconds / epochs] * epochs,
            "predict": predict_seconds, "accuracy": float(np.mean(predicted == test[1]))}


def fastrnn_initial_weights(seed):
    """The initial weights fastrnn's classifier draws for this model (its
    scheme: embedding U(-0.05, 0.05), Glorot input and head weights,
    orthogonal recurrent weights, forget-gate bias 1), named as in PyTorch."""
    from fastrnn.network import Network
    net = Network("lstm", input_size=EMBED, hidden_size=HIDDEN, output_size=1,
                  vocab_size=VOCAB, random_state=np.random.default_rng(seed))
    state = net.state_dict()
    return {"embed": {"weight": state.pop("embedding.weight")},
            "head": {"weight": state.pop("head.weight"), "bias": state.pop("head.bias")},
            "lstm": state}


class TorchTokenClassifier:
    """Embedding -> LSTM -> linear head on the last valid step's state.
    init "torch": PyTorch's default initialisation; "fastrnn": fastrnn's
    scheme (fastrnn_initial_weights)."""

    def __init__(self, torch, seed, init="torch"):
        torch.manual_seed(seed)
        self.torch = torch
        self.embed = torch.nn.Embedding(VOCAB, EMBED)
        self.lstm = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.head = torch.nn.Linear(HIDDEN, 1)
        if init == "fastrnn":
            for name, state in fastrnn_initial_weights(seed).items():
                getattr(self, name).load_state_dict(
                    {k: torch.from_numpy(v) for k, v in state.items()})
        self.params = [p for m in (self.embed, self.lstm, self.head) for p in m.parameters()]

    def logits(self, seqs, idx):
        """The head's logit for the samples idx: padded to the batch's longest,
        packed (enforce_sorted=False sorts inside)."""
        torch, rnn = self.torch, self.torch.nn.utils.rnn
        batch = [torch.from_numpy(seqs[i]) for i in idx]
        lengths = torch.tensor([len(s) for s in batch])
        padded = rnn.pad_sequence(batch, batch_first=True)
        packed = rnn.pack_padded_sequence(self.embed(padded), lengths, batch_first=True,
                                          enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.head(h[-1]).squeeze(1)


def fit_torch(train, test, epochs, threads, seed, batches, init="torch"):
    import torch
    torch.set_num_threads(threads)
    (seqs, labels), (test_seqs, test_labels) = train, test
    lengths = np.array([len(s) for s in seqs])
    rng = np.random.default_rng(seed)
    start, cpu = time.perf_counter(), time.process_time()
    model = TorchTokenClassifier(torch, seed, init)
    opt = torch.optim.Adam(model.params, lr=LR)
    targets = torch.from_numpy(labels.astype(np.float32))
    epoch_seconds = []
    for _ in range(epochs):
        epoch_start = time.perf_counter()
        for idx in batches(lengths, BATCH, rng):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model.logits(seqs, idx), targets[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.params, CLIP)
            opt.step()
        epoch_seconds.append(time.perf_counter() - epoch_start)
    fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    order = np.argsort([len(s) for s in test_seqs], kind="stable")
    predicted = np.empty(len(test_seqs), dtype=int)
    with torch.no_grad():
        for b in range(0, len(order), 512):
            idx = order[b:b + 512]
            predicted[idx] = (model.logits(test_seqs, idx) > 0).numpy()
    predict_seconds = time.perf_counter() - start
    return {"fit": fit_seconds, "fit_cpu": fit_cpu, "epochs": epoch_seconds,
            "predict": predict_seconds,
            "accuracy": float(np.mean(predicted == test_labels))}


CONTENDERS = {
    "fastrnn": fit_fastrnn,
    "pytorch_packed": lambda *a: fit_torch(*a, batches=bucketed_batches),
    "pytorch_naive": lambda *a: fit_torch(*a, batches=random_batches),
    "pytorch_packed_fastrnn_init": lambda *a: fit_torch(*a, batches=bucketed_batches,
                                                        init="fastrnn"),
}
DEFAULT_CONTENDERS = ("fastrnn", "pytorch_packed", "pytorch_naive")


def run(train, test, epochs, threads, contenders, seed=0, progress=None):
    """Train every contender on the same data: {name: result dict};
    progress(name, result) after each."""
    warm_up = (train[0][:BATCH], train[1][:BATCH])
    for name in contenders:  # first-call costs (imports, thread pools) are not the fit's
        CONTENDERS[name](warm_up, warm_up, 1, threads, seed)
    results = {}
    for name in contenders:
        results[name] = CONTENDERS[name](train, test, epochs, threads, seed)
        if progress:
            progress(name, results[name])
    return results


def result_line(name, r, n_tokens):
    per_epoch = " ".join(f"{s:.2f}" for s in r["epochs"])
    return (f"{name:27s} fit {r['fit']:7.2f} s ({r['fit_cpu']:7.2f} s CPU; epochs {per_epoch} s), "
            f"{n_tokens / np.mean(r['epochs']) / 1e3:6.1f} k tokens/s, predict "
            f"{r['predict']:6.2f} s, held-out accuracy {r['accuracy']:.4f}")


def report(results, n_tokens):
    """A line per contender, then fastrnn's speed ratios (wall and CPU time:
    the CPU ratio holds up better on a loaded machine at 1 thread)."""
    lines = [result_line(name, r, n_tokens) for name, r in results.items()]
    ours = results.get("fastrnn")
    for name, r in results.items():
        if ours and name != "fastrnn":
            lines.append(f"fastrnn is {r['fit'] / ours['fit']:.2f}x faster to fit than {name} "
                         f"({r['fit_cpu'] / ours['fit_cpu']:.2f}x in CPU time; accuracy "
                         f"{ours['accuracy'] - r['accuracy']:+.4f}), "
                         f"{r['predict'] / ours['predict']:.2f}x to predict")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--small", action="store_true",
                        help="a tiny version (seconds) that checks the script runs")
    parser.add_argument("--contenders", nargs="+", default=list(DEFAULT_CONTENDERS),
                        choices=list(CONTENDERS),
                        help="pytorch_packed_fastrnn_init: pytorch_packed started from "
                             "fastrnn's initialisation scheme (separates the engines from "
                             "the two libraries' default initialisations)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=20000)
    args = parser.parse_args(argv)
    n_train, n_test, min_len, max_len = ((100, 40, 3, 20) if args.small
                                         else (args.n_train, 2000, 5, 400))
    rng = np.random.default_rng(args.seed)
    train = make_task(n_train, min_len, max_len, rng)
    test = make_task(n_test, min_len, max_len, rng)
    n_tokens = sum(len(s) for s in train[0])
    print(f"{n_train} training sequences of {min_len}-{max_len} tokens ({n_tokens} tokens, "
          f"fill {n_tokens / (n_train * max_len):.2f} of padding to the longest), "
          f"{args.epochs} epochs, {args.threads} thread(s)", flush=True)
    results = run(train, test, args.epochs, args.threads, args.contenders, args.seed,
                  progress=lambda name, r: print(result_line(name, r, n_tokens), flush=True))
    print(report(results, n_tokens))
    return results


if __name__ == "__main__":
    main()
