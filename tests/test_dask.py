"""fastrnn.dask on a real cluster: two worker processes (LocalCluster)."""
import os
import threading
import time
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
fdask = pytest.importorskip("fastrnn.dask")

from fastrnn import FastGRURegressor, FastLSTMClassifier  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        yield client


def _on_two_workers(client, X, y, chunk):
    """Dask arrays whose chunks are spread over both workers."""
    dX, dy = da.from_array(X, chunks=(chunk, -1, -1)), da.from_array(y, chunks=chunk)
    client.wait_for_workers(2)
    return dX, dy


def _sequences(n=96, T=6, F=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int) + (X[:, -1, 1] > 0.5)
    return X, y


@pytest.mark.parametrize("make, target", [
    (lambda: FastLSTMClassifier(hidden_size=8, batch_size=32, max_iter=3, alpha=1e-3,
                                learning_rate_init=0.01, random_state=0), "labels"),
    (lambda: FastGRURegressor(hidden_size=8, batch_size=24, max_iter=3, solver="sgd",
                              learning_rate="exponential", random_state=1), "values"),
    # tol=1: no epoch after the first improves enough, so the plateau schedule halves the
    # rate every epoch and the no-improvement count stops the fit after 3 of 6 epochs
    (lambda: FastLSTMClassifier(hidden_size=8, batch_size=32, max_iter=6, tol=1.0,
                                n_iter_no_change=2, learning_rate="plateau", lr_decay_every=1,
                                learning_rate_init=0.05, random_state=2), "labels"),
])
def test_sync_training_equals_single_process(client, make, target):
    X, labels = _sequences()
    y = labels if target == "labels" else X[:, :, 2].mean(axis=1) * 3 + 1
    dX, dy = _on_two_workers(client, X, y, chunk=40)  # 40 + 40 + 16 over two workers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        local = make().fit(X, y)
        remote = fdask.fit(make(), dX, dy, client=client)
    assert type(remote) is type(local)
    assert remote.n_iter_ == local.n_iter_ == 3 and remote.t_ == local.t_
    np.testing.assert_allclose(remote.loss_curve_, local.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(remote.model_.flat_params, local.model_.flat_params,
                               rtol=1e-4, atol=1e-5)
    assert remote.dask_fit_stats_["n_workers"] == 2  # one worker would be a trivial pass


def test_balanced_class_weights_and_sample_weights_use_global_counts(client):
    X, labels = _sequences(n=120)
    order = np.argsort(labels, kind="stable")  # chunks with very different class mixes
    X, y = X[order], labels[order]
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    dX, dy = _on_two_workers(client, X, y, chunk=40)
    make = lambda: FastLSTMClassifier(hidden_size=8, batch_size=16, max_iter=2,  # noqa: E731
                                      class_weight="balanced", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        remote = fdask.fit(make(), dX, dy, client=client,
                           sample_weight=da.from_array(w, chunks=40))
        local = make().fit(X, y, sample_weight=w)
    assert remote.class_weight == "balanced"  # the parameter is left as given
    np.testing.assert_allclose(remote.loss_curve_, local.loss_curve_, rtol=1e-5)
    np.testing.assert_allclose(remote.model_.flat_params, local.model_.flat_params,
                               rtol=1e-4, atol=1e-5)


def test_ragged_delayed_chunks(client):
    rng = np.random.default_rng(3)
    seqs = [rng.normal(size=(int(rng.integers(3, 9)), 2)).astype(np.float32) for _ in range(60)]
    labels = np.array(["up" if s[:, 0].sum() > 0 else "down" for s in seqs])
    X_chunks = [dask.delayed(seqs[i:i + 20]) for i in range(0, 60, 20)]
    y_chunks = [dask.delayed(labels[i:i + 20]) for i in range(0, 60, 20)]
    make = lambda: FastLSTMClassifier(hidden_size=6, batch_size=16, max_iter=2,  # noqa: E731
                                      learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        remote = fdask.fit(make(), X_chunks, y_chunks, client=client)
        local = make().fit(seqs, labels)
    assert list(remote.classes_) == ["down", "up"]
    np.testing.assert_allclose(remote.model_.flat_params, local.model_.flat_params,
                               rtol=1e-4, atol=1e-5)


def test_local_sgd_learns_digits(client):
    X, y = load_digits(return_X_y=True)
    X = (X.reshape(-1, 8, 8) / 16).astype(np.float32)
    dX, dy = _on_two_workers(client, X, y, chunk=450)
    clf = FastLSTMClassifier(hidden_size=32, batch_size=64, max_iter=12,
                             learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fdask.fit(clf, dX, dy, client=client, sync_every=4)
    assert clf.n_iter_ == 12 == len(clf.loss_curve_)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.score(X, y) >= 0.93


def test_predict_on_dask_arrays_equals_in_memory(client):
    X, y = _sequences(n=50)
    clf = FastLSTMClassifier(hidden_size=8, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    dX = da.from_array(X, chunks=(16, -1, -1))
    labels, proba = fdask.predict(clf, dX), fdask.predict_proba(clf, dX)
    assert isinstance(labels, da.Array) and labels.shape == (50,)
    assert proba.shape == (50, len(clf.classes_)) and proba.chunks[0] == dX.chunks[0]
    np.testing.assert_array_equal(labels.compute(), clf.predict(X))
    np.testing.assert_allclose(proba.compute(), clf.predict_proba(X), rtol=1e-6)


def test_per_step_regression_predict_shape(client):
    X, _ = _sequences(n=30)
    y = np.cumsum(X[:, :, :2], axis=1)  # (n, T, 2) per-step targets
    reg = FastGRURegressor(hidden_size=8, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, y)
    pred = fdask.predict(reg, da.from_array(X, chunks=(7, -1, -1)))
    assert pred.shape == (30, 6, 2)
    np.testing.assert_allclose(pred.compute(), reg.predict(X), rtol=1e-6)


def test_dask_ml_wrappers_on_flat_sequences(client):
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X, y = _sequences(n=60, T=5, F=3)
    flat = da.from_array(X.reshape(60, 15), chunks=(20, -1))
    dy = da.from_array(y, chunks=20)
    inc = wrappers.Incremental(fdask.FlatSequences(
        FastLSTMClassifier(hidden_size=4, random_state=0), n_features=3))
    inc.fit(flat, dy, classes=[0, 1, 2])
    trained = inc.estimator_.estimator_
    assert trained.n_iter_ == 3  # one partial_fit per block
    np.testing.assert_array_equal(inc.predict(flat).compute(), trained.predict(X))
    ppf = wrappers.ParallelPostFit(fdask.FlatSequences(trained, n_features=3))
    np.testing.assert_array_equal(ppf.predict(flat).compute(), trained.predict(X))
    np.testing.assert_allclose(ppf.predict_proba(flat).compute(), trained.predict_proba(X))
    with pytest.raises(ValueError, match="n_features=3"):
        fdask.FlatSequences(trained, n_features=3).predict(X.reshape(60, 15)[:, :14])


def test_bad_input_is_refused(client):
    X, y = _sequences(n=20)
    with pytest.raises(TypeError, match="dask array"):
        fdask.fit(FastLSTMClassifier(), X, y, client=client)
    with pytest.raises(ValueError, match="sync_every"):
        fdask.fit(FastLSTMClassifier(), da.from_array(X), da.from_array(y), client=client,
                  sync_every=0)
    with pytest.raises(ValueError, match="early_stopping"):
        fdask.fit(FastLSTMClassifier(early_stopping=True), da.from_array(X, chunks=10),
                  da.from_array(y, chunks=10), client=client)


def _fit_and_kill_a_worker(client, clf, dX, dy):
    """Run fastrnn.dask.fit in a thread, kill a worker process after the first
    epoch; returns what fit raised (None if nothing)."""
    errors = []

    def train():
        try:
            fdask.fit(clf, dX, dy, client=client)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            errors.append(error)

    thread = threading.Thread(target=train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thread.start()
        deadline = time.time() + 30
        while getattr(clf, "n_iter_", 0) < 1 and time.time() < deadline:
            time.sleep(0.02)
        assert thread.is_alive(), "fit ended before a worker could be killed"
        victim = sorted(client.scheduler_info()["workers"])[0]
        try:
            client.run(os._exit, 1, workers=[victim])
        except Exception:  # noqa: BLE001 - the connection dies with the worker
            pass
        thread.join(timeout=90)
    assert not thread.is_alive()
    client.wait_for_workers(2, timeout=60)
    return errors[0] if errors else None


def _killable_setup(client):
    X, y = _sequences(n=160, T=8)
    dX, dy = _on_two_workers(client, X, y, chunk=80)
    make = lambda: FastLSTMClassifier(hidden_size=12, batch_size=8, max_iter=8,  # noqa: E731
                                      random_state=0)
    return X, y, dX, dy, make


def test_worker_killed_mid_fit_resumes_from_last_synchronized_step(client):
    X, y, dX, dy, make = _killable_setup(client)
    clf = make()
    assert _fit_and_kill_a_worker(client, clf, dX, dy) is None
    assert clf.dask_fit_stats_["recoveries"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        uninterrupted = make().fit(X, y)
    assert clf.n_iter_ == 8 == len(clf.loss_curve_)
    np.testing.assert_allclose(clf.model_.flat_params, uninterrupted.model_.flat_params,
                               rtol=1e-3, atol=1e-4)


def test_worker_killed_without_recoveries_left_raises_and_keeps_last_epoch(client,
                                                                           monkeypatch):
    monkeypatch.setattr(fdask, "MAX_RECOVERIES", 0)
    X, y, dX, dy, make = _killable_setup(client)
    clf = make()
    error = _fit_and_kill_a_worker(client, clf, dX, dy)
    assert isinstance(error, fdask.ClusterTrainingError)
    assert "last finished epoch" in str(error)
    assert 1 <= clf.n_iter_ == len(clf.loss_curve_) < 8
    assert np.all(np.isfinite(clf.model_.flat_params))
    assert clf.predict(X).shape == (160,)
