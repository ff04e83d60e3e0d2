"""Data-parallel training and prediction on a Dask cluster (``pip install fastrnn[dask]``).

    >>> from distributed import Client, LocalCluster           # doctest: +SKIP
    >>> import dask.array as da, fastrnn.dask
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    >>> dX = da.from_array(X, chunks=(500, -1, -1))            # (n, T, F), chunked by samples
    >>> dy = da.from_array(y, chunks=500)
    >>> clf = fastrnn.dask.fit(FastLSTMClassifier(batch_size=128), dX, dy)
    >>> fastrnn.dask.predict(clf, dX).compute()

Training (``fit``)
------------------
The chunks of X, y (and sample_weight) are persisted on the workers and stay
there: one Dask actor per worker (``_ShardWorker``) is created on the worker
that holds its chunks, with the chunks as arguments, so no sample passes
through the client. (A worker holding more than its share of the samples
hands chunks to the least loaded workers, worker to worker, once.) The client keeps the model and the optimizer, like a parameter
server. Every step it draws the global batch exactly as ``estimator.fit`` does
(same random generator, same permutation per epoch); each actor computes the
summed loss and gradient of its samples of that batch with the C kernels; the
client adds the gradients (in worker order) and takes one optimizer step.
This is single-process training with the same global batch, up to the order
of the floating-point sums. Per step each worker receives the parameters and
sends a gradient: 2 * 4 bytes * n_params (float32).

``sync_every=k > 1`` is local SGD: each actor takes k steps on its share of k
global batches with its own optimizer, then the client averages the actors'
parameters (weighted by samples). Communication falls k-fold; the result is no
longer the single-process one. The fitted estimator's optimizer state is then
a fresh one (the actors' moments are not gathered).

Classes, target scaling, vocabulary size and 'balanced' class weights are
computed once over all chunks (small per-chunk summaries), so every worker
encodes its shard the same way. ``loss_curve_``, ``n_iter_``, ``best_loss_``,
``t_``, learning-rate schedules, ``n_iter_no_change`` on the training loss and
the ConvergenceWarning follow ``fit``. Not supported: ``early_stopping`` (the
validation set would have to be scored on the cluster), conditioned networks.
Dropout masks differ from a single process (one generator per worker).

A worker lost mid-fit is survived: the round it broke is discarded, the
actors are rebuilt on the remaining (or restarted) workers from the chunks
(Dask recomputes the lost ones from their graph) and the round runs again from
the last synchronized parameters, so synchronous training still gives the
uninterrupted result (local SGD loses the actors' optimizer moments). After
MAX_RECOVERIES lost workers, or when an actor fails for another reason, fit
raises ``ClusterTrainingError`` and the estimator keeps the weights of its last
finished epoch (``n_iter_`` and ``loss_curve_`` match them), so ``fit`` can be
called again with ``warm_start=True``.

Prediction (``predict``, ``predict_proba``)
-------------------------------------------
Lazy ``map_blocks`` over blocks of whole samples, with the output's meta and
chunks given, so Dask never probes the estimator with a made-up 2-D array::

    est = dask.delayed(clf, pure=True)          # one copy in the graph
    dX = dX.rechunk({1: -1, 2: -1})             # blocks of whole sequences
    labels = da.map_blocks(lambda e, x: e.predict(x), est, dX, drop_axis=[1, 2],
                           chunks=(dX.chunks[0],), meta=np.empty((0,), clf.classes_.dtype))

Adapter to estimator internals
------------------------------
Every use of the estimator's private methods is in the functions below the
line "adapter": ``_begin`` and ``_finish_setup`` (fit's first-call set-up),
``_prepare`` (a shard as a training set), ``_loss_and_grad`` (one batch's summed
loss and flat gradient: ``_batch_loss_and_grad``), ``_reseed_dropout``,
``_l2_loss``, ``_new_optimizer``, ``_apply_update`` (the estimator's optimizer
step, ``_apply_gradient``), ``_check_divergence``, ``_epoch_plan`` (learning
rate from the optimizer's schedule and the batches of an epoch) and
``_end_epoch`` (the estimator's own: curves, no-improvement count, schedule).
The rest of this module reads only fitted attributes (``model_.flat_params``,
``task_``, ``classes_``, ...), so a change of the estimator's training
internals is met there.
"""
import copy
import time
import warnings

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.delayed import Delayed
    from distributed import default_client, futures_of, wait
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError("fastrnn.dask needs dask[array] and distributed: "
                      "pip install 'fastrnn[dask]'") from error
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from fastrnn import _quantize
from fastrnn._base import _TrainingSet
from fastrnn._threads import resolve_n_threads, single_threaded_blas
from fastrnn.losses import LOSSES

__all__ = ["fit", "predict", "predict_proba", "ClusterTrainingError", "FlatSequences"]

HEAD_SAMPLES = 2  # samples fetched to the client to learn the input and target forms
MAX_RECOVERIES = 3  # lost workers a fit survives before it gives up


class ClusterTrainingError(RuntimeError):
    """A worker (or its actor) failed during fastrnn.dask.fit."""


# ===== adapter: every use of estimator internals ============================================
def _begin(est, X_head, y_head):
    """Validate parameters and learn the forms of X and y from a few samples;
    returns (first, data_head): first is False for a warm start."""
    est._validate_params()
    if est.early_stopping:
        raise ValueError("fastrnn.dask.fit does not support early_stopping: hold out "
                         "validation data and score it with fastrnn.dask.predict")
    first = not (hasattr(est, "model_") and est.warm_start)
    if first:
        est._forget_fit()
    data = est._prepare_X(X_head, reset=first)
    if first:
        est._learn_task(y_head, data, classes=None)
    return first, data


def _finish_setup(est, first, data_head, y_head, stats):
    """Set the encodings from the global stats and build the network and the
    optimizer (as fit's first call does)."""
    if first:
        if est.task_ == "classification":
            est._prepare_y(y_head, data_head, reset=True, classes=stats["classes"])
        else:
            est._prepare_y(y_head, data_head, reset=True)
            est.y_mean_, est.y_scale_ = stats["y_mean"], stats["y_scale"]
        if est.embedding_dim is not None and est.vocab_size is None:
            est.n_tokens_ = stats["n_tokens"]
        est._build_model(data_head)
        est._start_curves()
    if est._optimizer is None:
        est._optimizer = est._new_optimizer()
    est._optimizer.schedule.configure(est.learning_rate, est.learning_rate_init,
                                      est.lr_decay, est.lr_decay_every, est.tol)
    est._no_improvement_count = 0


def _prepare(est, X, y, sample_weight):
    """A worker's shard as the training loop takes it (a _TrainingSet)."""
    data = est._prepare_X(X, reset=False)
    target, rows = est._prepare_y(y, data, reset=False)
    weights = est._sample_weights(sample_weight, target, rows, len(data))
    return _TrainingSet(data, target, rows, weights, LOSSES[est._loss_name()],
                        resolve_n_threads(est.n_threads))


def _loss_and_grad(est, shard, idx):
    """(summed loss, number of loss rows, summed gradient) of samples idx of the shard;
    the gradient is the network's flat gradient buffer."""
    loss_sum, n_rows = est._batch_loss_and_grad(shard, idx)
    return loss_sum, n_rows, est.model_.flat_grads


def _reseed_dropout(est, seed):
    net = est.model_
    net.rng = net.stack.rng = np.random.default_rng(seed)


def _l2_loss(est, n_samples):
    return est._l2_penalty(n_samples)


def _new_optimizer(est):
    """A fresh optimizer (a local-SGD actor's own moments)."""
    est._optimizer = est._new_optimizer()


def _apply_update(est, grad, n_rows, n_samples, lr):
    """One step of the estimator's optimizer with the gradient summed over
    n_rows loss rows of n_samples."""
    net = est.model_
    if grad is not net.flat_grads:
        net.flat_grads[:] = grad
    est._apply_gradient(lr, n_rows, n_samples, resolve_n_threads(est.n_threads))


def _check_divergence(est, loss, snapshot):
    """NaN or inf: the weights and optimizer state of the last finished epoch
    back (snapshot: est._checkpoint()), TrainingDivergedError."""
    est._check_divergence("loss", loss, snapshot)


def _epoch_plan(est, n, lengths=None):
    """(learning rate, global batches as arrays of sample indices) of the next
    epoch, drawn as fit draws them (length buckets for ragged data)."""
    batches = est._epoch_batches(np.arange(n), lengths)
    return est._optimizer.schedule.rate(est.n_iter_), batches


def _end_epoch(est, epoch_loss, started):
    """Record the epoch as fit does without validation data (curves, the
    no-improvement count, the schedule); returns whether to stop early."""
    est._end_epoch(epoch_loss, None, started)
    return est._no_improvement_count >= est.n_iter_no_change
# ===== end of the adapter ===================================================================


def _concat(parts):
    """Chunks of one worker as one input: arrays concatenated, lists of ragged
    sequences joined."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    return [s for p in parts for s in p]


def _flat_targets(y, n_outputs=None):
    """Every target row of a chunk: labels (rows,) or values (rows, n_outputs)."""
    if isinstance(y, list) and y and np.ndim(y[0]) > 0:  # per-step targets of ragged sequences
        flat = np.concatenate([np.asarray(v) for v in y])
    else:
        flat = np.asarray(y)
    if n_outputs is None:
        return flat.ravel()
    return flat.reshape(-1, n_outputs).astype(np.float64)


def _n_outputs(y_head, per_step):
    flat = np.asarray(y_head[0])
    return int(np.prod(flat.shape[1:] if per_step else flat.shape)) or 1


def _chunk_stats(X, y, task, n_outputs, tokens):
    """Small summary of one chunk, computed where it lives."""
    stats = {"n": len(X), "lengths": np.array([len(x) for x in X]) if isinstance(X, list)
             else np.full(len(X), np.shape(X)[1])}
    if task == "classification":
        stats["labels"] = np.unique(_flat_targets(y), return_counts=True)
    else:
        rows = _flat_targets(y, n_outputs)
        mean = rows.mean(axis=0)
        stats["moments"] = (len(rows), mean, ((rows - mean) ** 2).sum(axis=0))
    if tokens:
        stats["max_token"] = int(max(np.max(x) for x in X) if isinstance(X, list) else np.max(X))
    return stats


def _combine_stats(chunk_stats, task):
    """Global classes and counts, or mean and scale (Chan's pairwise moments)."""
    out = {"n_chunks": [s["n"] for s in chunk_stats]}
    lengths = np.concatenate([s["lengths"] for s in chunk_stats])
    out["lengths"] = lengths if np.any(lengths != lengths[0]) else None  # None: not ragged
    if task == "classification":
        labels = np.concatenate([s["labels"][0] for s in chunk_stats])
        counts = np.concatenate([s["labels"][1] for s in chunk_stats])
        out["classes"], where = np.unique(labels, return_inverse=True)
        out["counts"] = np.bincount(where, weights=counts)
    else:
        n, mean, m2 = chunk_stats[0]["moments"]
        for s in chunk_stats[1:]:
            nb, mb, m2b = s["moments"]
            delta = mb - mean
            mean = mean + delta * nb / (n + nb)
            m2 = m2 + m2b + delta ** 2 * n * nb / (n + nb)
            n += nb
        scale = np.sqrt(m2 / n)
        out["y_mean"], out["y_scale"] = mean, np.where(scale > 0, scale, 1.0)
    if "max_token" in chunk_stats[0]:
        out["n_tokens"] = max(s["max_token"] for s in chunk_stats) + 1
    return out


def _balanced_as_dict(est, stats):
    """class_weight='balanced' from the global class counts (a shard's own
    counts would weight each worker differently)."""
    if est.task_ != "classification" or getattr(est, "class_weight", None) != "balanced":
        return None
    counts = stats["counts"]
    weights = counts.sum() / (len(counts) * counts)
    return dict(zip(est.classes_.tolist(), weights.tolist()))


class _ShardWorker:
    """A Dask actor on the worker that holds its chunks: a replica of the
    network and this worker's samples, prepared once."""

    def __init__(self, template, rank, X_parts, y_parts, w_parts):
        self.est = copy.deepcopy(template)  # in-process workers would share the client's
        _new_optimizer(self.est)  # local SGD: this actor's own moments
        _reseed_dropout(self.est, [int(rank), 7919])  # each worker its own dropout masks
        sw = None if w_parts is None else np.concatenate([np.ravel(w) for w in w_parts])
        with single_threaded_blas():
            self.shard = _prepare(self.est, _concat(X_parts), _concat(y_parts), sw)

    def gradient(self, params, idx):
        """(loss sum, rows, gradient, seconds) of local samples idx at params."""
        started = time.perf_counter()
        self.est.model_.flat_params[:] = params
        with single_threaded_blas():
            loss_sum, n_rows, grad = _loss_and_grad(self.est, self.shard, idx)
        return loss_sum, n_rows, grad.copy(), time.perf_counter() - started

    def local_steps(self, params, batches, lr):
        """Local SGD: one step per batch of local indices from params; returns
        (params, sum of loss * samples, samples, seconds)."""
        started = time.perf_counter()
        est = self.est
        est.model_.flat_params[:] = params
        total, count = 0.0, 0
        with single_threaded_blas():
            for idx in batches:
                l2 = _l2_loss(est, len(idx))
                loss_sum, n_rows, grad = _loss_and_grad(est, self.shard, idx)
                total += (loss_sum / n_rows + l2) * len(idx)
                count += len(idx)
                _apply_update(est, grad, n_rows, len(idx), lr)
        return est.model_.flat_params.copy(), total, count, time.perf_counter() - started


def _as_chunks(client, X, y, sample_weight):
    """Persist the inputs on the cluster; returns aligned lists of futures (one
    per chunk of samples) for X, y and sample_weight (or None)."""
    if isinstance(X, da.Array):
        if X.ndim not in (2, 3):
            raise ValueError(f"X must be a 2-D or 3-D dask array, got {X.ndim} dimensions")
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError("X has unknown chunk sizes: call X.compute_chunk_sizes() first")
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
        arrays = [X]
        for a, name in ((y, "y"), (sample_weight, "sample_weight")):
            if a is None:
                continue
            if not isinstance(a, da.Array):
                raise TypeError(f"X is a dask array, so {name} must be one too, got "
                                f"{type(a).__name__}")
            if a.shape[0] != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} samples but {name} has {a.shape[0]}")
            arrays.append(a.rechunk({0: X.chunks[0], **{i: -1 for i in range(1, a.ndim)}}))
        persisted = client.persist(arrays)
        chunks = []
        for a in persisted:
            by_key = {f.key: f for f in futures_of(a)}
            chunks.append([by_key[k] for k in dask.core.flatten(a.__dask_keys__())])
    elif isinstance(X, (list, tuple)) and X and all(isinstance(x, Delayed) for x in X):
        parts = [X, y] + ([] if sample_weight is None else [sample_weight])
        for p, name in zip(parts[1:], ("y", "sample_weight")):
            if not (isinstance(p, (list, tuple)) and len(p) == len(X)):
                raise ValueError(f"X is a list of {len(X)} delayed chunks, so {name} must be "
                                 "a list of as many")
        futures = client.compute([d for p in parts for d in p])
        chunks = [futures[i:i + len(X)] for i in range(0, len(futures), len(X))]
    else:
        raise TypeError("X must be a dask array chunked along samples or a list of "
                        f"dask.delayed chunks, got {type(X).__name__}")
    if sample_weight is None:
        chunks.append(None)
    wait([f for c in chunks if c is not None for f in c])
    return chunks


def _assign_chunks(client, X_chunks, n_chunks):
    """{worker: chunk ids}: each chunk stays on a worker that holds it, unless
    that worker already has its share of the samples; then it goes to the
    least loaded worker (a worker-to-worker copy), since every synchronous
    step waits for the slowest worker."""
    who_has = client.who_has(X_chunks)
    workers = sorted(client.scheduler_info()["workers"])
    fair = sum(n_chunks) / len(workers)
    load = dict.fromkeys(workers, 0)
    by_worker = {}
    for c, future in enumerate(X_chunks):
        holders = [w for w in who_has.get(future.key, ()) if w in load]
        home = min(holders, key=load.get) if holders else None
        if home is None or load[home] >= fair:
            home = min(workers, key=load.get)
        load[home] += n_chunks[c]
        by_worker.setdefault(home, []).append(c)
    return by_worker


class _Cluster:
    """The actors of one fit and where each sample lives: sample i on actor
    owner[i] at position local[i]. A round that loses a worker is run again
    on actors rebuilt from the chunks (Dask recomputes the lost ones)."""

    def __init__(self, client, template, chunks, n_chunks):
        self.client, self.template, self.chunks, self.n_chunks = client, template, chunks, n_chunks
        self.recoveries = 0
        self._place()

    def _place(self):
        X_chunks, y_chunks, w_chunks = self.chunks
        by_worker = _assign_chunks(self.client, X_chunks, self.n_chunks)
        starts = np.concatenate([[0], np.cumsum(self.n_chunks)])
        self.owner = np.empty(starts[-1], np.int64)
        self.local = np.empty(starts[-1], np.int64)
        futures = []
        for rank, (address, chunk_ids) in enumerate(sorted(by_worker.items())):
            position = 0
            for c in chunk_ids:
                self.owner[starts[c]:starts[c + 1]] = rank
                self.local[starts[c]:starts[c + 1]] = position + np.arange(self.n_chunks[c])
                position += self.n_chunks[c]
            mine = [None if chunks is None else [chunks[c] for c in chunk_ids]
                    for chunks in self.chunks]
            futures.append(self.client.submit(
                _ShardWorker, self.template, rank, *mine, actor=True, workers=[address],
                allow_other_workers=False, pure=False))
        self.actors = [f.result() for f in futures]

    def shares(self, batch):
        """Local indices of each actor's samples of a global batch of sample indices."""
        return [self.local[batch[self.owner[batch] == a]] for a in range(len(self.actors))]

    def run(self, calls, what):
        """Results of calls(actors) (a list of actor calls); on a lost worker,
        up to MAX_RECOVERIES times: rebuild the actors and call again."""
        while True:
            try:
                return [call.result() for call in calls(self.actors)]
            except Exception as error:
                if self.recoveries >= MAX_RECOVERIES or not self._lost_a_worker():
                    raise ClusterTrainingError(f"a worker failed during {what}: {error!r}") \
                        from error
            self.recoveries += 1
            warnings.warn(f"a worker was lost during {what}; resuming from the last "
                          "synchronized parameters on the remaining workers", RuntimeWarning)
            wait([f for chunks in self.chunks if chunks is not None for f in chunks])
            self._place()

    def _lost_a_worker(self, patience_s=30.0):
        """Whether a worker of an actor has left the cluster (the scheduler can
        take a moment to notice)."""
        addresses = {actor._address for actor in self.actors}
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            if addresses - set(self.client.scheduler_info()["workers"]):
                return True
            time.sleep(0.2)
        return False


def _sync_epoch(est, cluster, batches, lr, snapshot, timings):
    """One epoch of synchronous data-parallel SGD; returns (loss * samples, samples)."""
    net = est.model_
    total, count = 0.0, 0
    for step, batch in enumerate(batches):
        started = time.perf_counter()
        results = cluster.run(  # shares taken per try: a rebuild moves samples
            lambda actors: [a.gradient(net.flat_params, idx)
                            for a, idx in zip(actors, cluster.shares(batch)) if len(idx)],
            f"step {step + 1} of epoch {est.n_iter_ + 1}")
        loss_sum = sum(r[0] for r in results)
        n_rows = sum(r[1] for r in results)
        grad = results[0][2].copy()  # received buffers may be read-only
        for r in results[1:]:
            grad += r[2]
        loss = loss_sum / n_rows + _l2_loss(est, len(batch))
        _check_divergence(est, loss, snapshot)
        _apply_update(est, grad, n_rows, len(batch), lr)
        total += loss * len(batch)
        count += len(batch)
        timings.append((time.perf_counter() - started, max(r[3] for r in results)))
    return total, count


def _local_calls(cluster, batches, params, lr):
    """The local_steps call of every actor with samples in batches."""
    def calls(actors):
        rounds = [cluster.shares(b) for b in batches]  # per try: a rebuild moves samples
        mine = [[shares[a] for shares in rounds if len(shares[a])] for a in range(len(actors))]
        return [actor.local_steps(params, m, lr) for actor, m in zip(actors, mine) if m]
    return calls


def _local_epoch(est, cluster, batches, lr, sync_every, snapshot, timings):
    """One epoch of local SGD: rounds of sync_every local steps, then parameter
    averaging weighted by samples."""
    net = est.model_
    total, count = 0.0, 0
    for start in range(0, len(batches), sync_every):
        started = time.perf_counter()
        chunk = batches[start:start + sync_every]
        results = cluster.run(_local_calls(cluster, chunk, net.flat_params, lr),
                              f"steps {start + 1}-{start + len(chunk)} of epoch "
                              f"{est.n_iter_ + 1}")
        samples = np.array([r[2] for r in results], np.float64)
        averaged = sum(r[0].astype(np.float64) * s for r, s in zip(results, samples))
        loss = sum(r[1] for r in results)
        _check_divergence(est, loss if np.all(np.isfinite(averaged)) else np.nan, snapshot)
        net.flat_params[:] = averaged / samples.sum()
        est.t_ += len(chunk)
        total += loss
        count += int(samples.sum())
        timings.append((time.perf_counter() - started, max(r[3] for r in results)))
    return total, count


def _fetch_head(client, X_chunk, y_chunk):
    """The first samples of X and y, to learn their forms on the client."""
    return client.submit(lambda x, y: (x[:HEAD_SAMPLES], y[:HEAD_SAMPLES]),
                         X_chunk, y_chunk, pure=False).result()


def fit(estimator, X, y, client=None, sync_every=1, **fit_params):
    """Train estimator data-parallel on a Dask cluster; returns the estimator.

    X, y : dask arrays chunked along samples (X (n, T, F) or (n, T)), or lists
        of dask.delayed chunks (each a 3-D array or a list of (T_i, F)
        sequences, with the matching targets).
    client : distributed.Client; None: the default client.
    sync_every : 1: gradients summed every step (equal to single-process
        training with the same global batch); k > 1: local SGD, parameters
        averaged every k local steps.
    fit_params : sample_weight only, in the form of y.

    Sets ``dask_fit_stats_``: n_workers, recoveries (lost workers survived),
    and per synchronisation the seconds
    of the whole round (step_seconds) and of the slowest worker's compute
    (compute_seconds); their difference is communication and waiting.
    """
    unknown = sorted(set(fit_params) - {"sample_weight"})
    if unknown:
        raise TypeError(f"fastrnn.dask.fit got unexpected fit parameters {unknown}")
    if isinstance(sync_every, bool) or not isinstance(sync_every, (int, np.integer)) or \
            sync_every < 1:
        raise ValueError(f"sync_every must be a positive int, got {sync_every!r}")
    if y is None:
        raise ValueError("fastrnn.dask.fit requires y")
    if client is None:
        client = default_client()
    X_chunks, y_chunks, w_chunks = _as_chunks(client, X, y, fit_params.get("sample_weight"))
    X_head, y_head = _fetch_head(client, X_chunks[0], y_chunks[0])
    first, data_head = _begin(estimator, X_head, y_head)
    n_outputs = None if estimator.task_ == "classification" else \
        _n_outputs(y_head, estimator.per_step_)
    chunk_stats = client.gather(client.map(
        _chunk_stats, X_chunks, y_chunks, task=estimator.task_, n_outputs=n_outputs,
        tokens=estimator.embedding_dim is not None, pure=False))
    stats = _combine_stats(chunk_stats, estimator.task_)
    _finish_setup(estimator, first, data_head, y_head, stats)
    template = estimator
    balanced = _balanced_as_dict(estimator, stats)
    if balanced is not None:  # the workers' copies weigh classes by the global counts
        template = copy.copy(estimator)
        template.class_weight = balanced
    cluster = _Cluster(client, template, (X_chunks, y_chunks, w_chunks), stats["n_chunks"])
    _run_epochs(estimator, cluster, sync_every, stats["lengths"])
    _quantize.forget(estimator.model_)  # the averaged weights replaced the fitted ones
    return estimator


def _run_epochs(est, cluster, sync_every, lengths):
    n = len(cluster.owner)
    timings = []
    stopped_early = False
    for _ in range(est.max_iter):
        started = time.perf_counter()
        snapshot = est._checkpoint()  # weights and optimizer state of the last finished epoch
        lr, batches = _epoch_plan(est, n, lengths)
        try:
            if sync_every == 1:
                total, count = _sync_epoch(est, cluster, batches, lr, snapshot, timings)
            else:
                total, count = _local_epoch(est, cluster, batches, lr, sync_every, snapshot,
                                            timings)
        except ClusterTrainingError as error:
            est._restore(snapshot)
            raise ClusterTrainingError(f"{error}; the estimator keeps the weights of its last "
                                       f"finished epoch (n_iter_={est.n_iter_}); fit again "
                                       "with warm_start=True to continue") from error
        stopped_early = _end_epoch(est, total / count, started)
        est.dask_fit_stats_ = {"n_workers": len(cluster.actors),
                               "recoveries": cluster.recoveries,
                               "step_seconds": [t[0] for t in timings],
                               "compute_seconds": [t[1] for t in timings]}
        if stopped_early:
            break
    if not stopped_early:
        warnings.warn(f"Stochastic optimizer: maximum iterations ({est.max_iter}) reached "
                      "and the optimization hasn't converged yet.", ConvergenceWarning)


# ----- prediction --------------------------------------------------------------------------
def _output_tail(est, X, method):
    """Shape after the sample axis and dtype of est.<method>(X)."""
    per_step = (X.shape[1],) if est.per_step_ else ()
    if method == "predict_proba":
        return per_step + (len(est.classes_),), np.dtype(np.float64)
    if est.task_ == "classification":
        return per_step, est.classes_.dtype
    return per_step + ((est.n_outputs_,) if est.n_outputs_ > 1 else ()), np.dtype(np.float64)


def _call(est, X, method):
    return getattr(est, method)(X)


def _map_blocks(est, X, method):
    check_is_fitted(est, "model_")
    if method == "predict_proba" and est.task_ != "classification":
        raise AttributeError("predict_proba is only available for classification")
    X = da.asarray(X)
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be a 2-D or 3-D array, got {X.ndim} dimensions")
    X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    tail, dtype = _output_tail(est, X, method)
    out_ndim = 1 + len(tail)
    return da.map_blocks(
        _call, dask.delayed(est, pure=True), X, method,
        chunks=(X.chunks[0],) + tuple((s,) for s in tail),
        drop_axis=list(range(out_ndim, X.ndim)) or None,
        new_axis=list(range(X.ndim, out_ndim)) or None,
        meta=np.empty((0,) * out_ndim, dtype), dtype=dtype)


def predict(estimator, X):
    """Lazy estimator.predict over blocks of samples of a dask array X (2-D or
    3-D, chunked along samples); returns a dask array."""
    return _map_blocks(estimator, X, "predict")


def predict_proba(estimator, X):
    """Lazy estimator.predict_proba over blocks of samples; returns a dask array."""
    return _map_blocks(estimator, X, "predict_proba")


# ----- dask-ml ---------------------------------------------------------------------------
class FlatSequences(MetaEstimatorMixin, BaseEstimator):
    """A fastrnn estimator fed one flat row per sequence, for dask-ml.

    dask-ml's ``Incremental`` and ``ParallelPostFit`` handle 2-D arrays only:
    Incremental addresses blocks as (i, 0) and ParallelPostFit maps predict
    with ``drop_axis=1`` and predict_proba with chunks (n, n_classes), after
    probing predict with a (1, n_columns) array. Give them X reshaped to
    (n, T * F) and wrap the estimator: each row is reshaped back to (T, F)
    before the estimator sees it.

        >>> from dask_ml.wrappers import Incremental              # doctest: +SKIP
        >>> inc = Incremental(FlatSequences(FastLSTMClassifier(), n_features=F))  # doctest: +SKIP
        >>> inc.fit(dX.reshape(n, T * F), dy, classes=[0, 1])      # doctest: +SKIP

    Sequence-level outputs only (per-step outputs have a shape dask-ml does not
    declare). An already fitted estimator can be wrapped as is (for
    ParallelPostFit); fit and partial_fit train a clone in ``estimator_``.

    Parameters
    ----------
    estimator : a fastrnn estimator
        Fitted or not; sees X reshaped to (n, T, n_features).

    n_features : int
        Features per step F; X has T * F columns.

    Attributes
    ----------
    estimator_ : a fastrnn estimator
        The clone fit / partial_fit trained (absent until then: the wrapped
        estimator predicts).

    classes_ : ndarray of shape (n_classes,)
        The (trained) estimator's classes.

    Examples
    --------
    Without dask-ml, on NumPy arrays:

    >>> import numpy as np
    >>> from fastrnn import FastLSTMClassifier
    >>> X = np.random.default_rng(0).normal(size=(20, 4, 2))
    >>> y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    >>> flat = FlatSequences(FastLSTMClassifier(hidden_size=4, max_iter=1), n_features=2)
    >>> flat.fit(X.reshape(20, 8), y).predict(X.reshape(20, 8)[:3]).shape
    (3,)
    """

    def __init__(self, estimator, n_features):
        self.estimator = estimator
        self.n_features = n_features

    def _sequences(self, X):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] % self.n_features:
            raise ValueError(f"X must be 2-D with T * n_features columns (n_features="
                             f"{self.n_features}), got shape {X.shape}")
        return X.reshape(X.shape[0], -1, self.n_features)

    def _fitted(self):
        return getattr(self, "estimator_", self.estimator)

    def fit(self, X, y, **fit_params):
        self.estimator_ = clone(self.estimator).fit(self._sequences(X), y, **fit_params)
        return self

    def partial_fit(self, X, y, **fit_params):
        if not hasattr(self, "estimator_"):
            self.estimator_ = clone(self.estimator)
        self.estimator_.partial_fit(self._sequences(X), y, **fit_params)
        return self

    @property
    def classes_(self):
        return self._fitted().classes_

    def predict(self, X):
        return self._fitted().predict(self._sequences(X))

    @available_if(lambda self: hasattr(self._fitted(), "predict_proba"))
    def predict_proba(self, X):
        return self._fitted().predict_proba(self._sequences(X))

    def score(self, X, y, sample_weight=None):
        return self._fitted().score(self._sequences(X), y, sample_weight=sample_weight)
