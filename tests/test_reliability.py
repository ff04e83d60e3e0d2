"""Nothing crashes, hangs or lies: thread counts, fork, Ctrl-C, training and
inference side by side, NaN in the kernels (issue 10)."""
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastrnn import FastLSTMClassifier, FastLSTMRegressor, SequenceGenerator, _kernels
from fastrnn._threads import available_cpus, resolve_n_threads
from fastrnn.layers import LSTM

# Python's Ctrl-C handling needs POSIX signals and a main thread we run on.
posix_only = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix",
                                reason="needs POSIX signals")


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def task():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    return X, y


# ----- thread counts -----------------------------------------------------------------------

@pytest.mark.parametrize("n_threads", [100_000, 2**40])
def test_huge_thread_counts_are_clamped_to_the_cpus(task, n_threads):
    X, y = task
    assert resolve_n_threads(n_threads) == available_cpus()
    clf = quiet(FastLSTMClassifier(hidden_size=8, max_iter=2, n_threads=n_threads,
                                   random_state=0).fit, X, y)
    reference = quiet(FastLSTMClassifier(hidden_size=8, max_iter=2, n_threads=available_cpus(),
                                         random_state=0).fit, X, y)
    np.testing.assert_array_equal(clf.model_.flat_params, reference.model_.flat_params)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "4", True, [2]])
def test_invalid_thread_counts_raise_value_error(task, bad):
    X, y = task
    with pytest.raises(ValueError, match="n_threads"):
        resolve_n_threads(bad)
    with pytest.raises(ValueError, match="n_threads"):
        FastLSTMClassifier(hidden_size=4, max_iter=1, n_threads=bad).fit(X, y)


def test_kernels_clamp_thread_counts_themselves():
    # The bindings pass n_threads on unchecked: the C side caps it (fr_threads).
    # In a subprocess: without the cap libgomp aborts or the interpreter crashes.
    code = ("import numpy as np\n"
            "from fastrnn import _kernels\n"
            "w = np.ones(1 << 17, np.float32)\n"
            "assert _kernels.sumsq(w, 100000) == w.size\n"
            "z = np.zeros_like(w)\n"
            "_kernels.optim_step('adam', w, w.copy(), z.copy(), z.copy(), None, 0.1, 0.0, 1.0,"
            " 0.0, False, 0.9, 0.9, 0.999, 1e-8, 1, 100000)\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ----- fork ------------------------------------------------------------------------------

_FORKED_MODEL = None


def _predict_in_child(X):
    return _FORKED_MODEL.predict_proba(X)


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="needs fork")
def test_fork_child_predicts_after_a_multithreaded_fit(task):
    global _FORKED_MODEL
    X, y = task
    # hidden_size 256: W_hh is large enough for the kernels to use a team of
    # threads, in the parent (the pool starts) and, unless forbidden, in the child.
    clf = quiet(FastLSTMClassifier(hidden_size=256, max_iter=1, n_threads=2, random_state=0).fit,
                X, y)
    _kernels.sumsq(np.ones(1 << 17, np.float32), 2)  # the OpenMP pool has run for sure
    expected = clf.predict_proba(X)
    _FORKED_MODEL = clf
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            parts = pool.map_async(_predict_in_child, np.array_split(X, 4)).get(timeout=120)
    finally:
        _FORKED_MODEL = None
    np.testing.assert_allclose(np.concatenate(parts), expected, rtol=1e-5, atol=1e-6)


# ----- Ctrl-C ------------------------------------------------------------------------------

def _sigint_after(seconds):
    """Send this process SIGINT after `seconds`; returns a dict that gets the
    time it was sent under "at"."""
    sent = {}

    def fire():
        sent["at"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, fire)
    timer.start()
    return sent, timer


@pytest.fixture(scope="module")
def tiny_generator():
    return quiet(SequenceGenerator(hidden_size=8, embedding_dim=4, max_iter=1, seq_len=8,
                                   random_state=0).fit, "hello world, hello there")


@posix_only
def test_ctrl_c_stops_a_long_generation_at_once(tiny_generator):
    # generate(3_000_000) takes seconds on this model; the C loop checks the
    # stop flag every step, so Ctrl-C returns in well under 0.2 s (the bound
    # asserted is loose: a loaded machine may deschedule us).
    sent, timer = _sigint_after(0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            tiny_generator.generate(3_000_000, random_state=0)
        stopped = time.perf_counter()
    finally:
        timer.cancel()
    assert stopped - sent["at"] < 1.0
    # the next call runs normally: the stop request does not linger
    assert tiny_generator.generate(5, random_state=0) == tiny_generator.generate(
        5, random_state=0)


@posix_only
def test_ctrl_c_stops_a_long_forward_pass():
    # Long enough in its step loop (about 2 s here), short on memory: the
    # projection before the loop is one GEMM that no flag interrupts.
    lstm = LSTM(input_size=1, hidden_size=512, random_state=0, n_threads=1)
    X = np.zeros((1, 10_000, 1), np.float32)
    sent, timer = _sigint_after(0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            lstm.forward(X)
        stopped = time.perf_counter()
    finally:
        timer.cancel()
    assert stopped - sent["at"] < 1.0
    Y, _ = lstm.forward(X[:, :10])
    assert np.all(np.isfinite(Y))


def test_stop_requests_outside_a_watched_call_are_ignored(tiny_generator):
    # A request left over from before a call (or made for another thread's
    # call) does not stop the next one.
    _kernels.request_stop()
    assert len(tiny_generator.generate(50, random_state=0)) == 1
    done = []
    worker = threading.Thread(target=lambda: done.append(
        tiny_generator.generate(20, random_state=0)))
    worker.start()
    _kernels.request_stop()
    worker.join()
    assert done == [tiny_generator.generate(20, random_state=0)]


@posix_only
def test_ctrl_c_during_fit_keeps_the_last_finished_epoch(task):
    X, y = task
    X = np.repeat(X, 10, axis=0)
    y = np.repeat(y, 10)
    clf = FastLSTMClassifier(hidden_size=16, max_iter=10_000, batch_size=16, random_state=0)
    sent, timer = _sigint_after(1.5)
    try:
        with pytest.warns(RuntimeWarning, match="interrupted"):
            clf.fit(X, y)
    finally:
        timer.cancel()
    assert "at" in sent
    assert clf.n_iter_ == len(clf.loss_curve_) >= 1
    assert np.all(np.isfinite(clf.model_.flat_params))
    assert clf.predict(X[:5]).shape == (5,)


# ----- training and inference side by side ---------------------------------------------

def test_inference_keeps_the_training_cache():
    lstm = LSTM(input_size=3, hidden_size=5, random_state=0)
    X = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    Y, _ = lstm.forward(X, training=True)
    lstm.forward(X[:2])  # e.g. predict in another thread
    lstm.zero_grad()
    lstm.backward(np.ones_like(Y))
    with_predict = lstm.flat_grads.copy()
    lstm.forward(X, training=True)
    lstm.zero_grad()
    lstm.backward(np.ones_like(Y))
    np.testing.assert_array_equal(with_predict, lstm.flat_grads)


def test_warm_start_fit_while_another_thread_predicts(task):
    X, y = task
    reg = quiet(FastLSTMRegressor(hidden_size=8, max_iter=1, batch_size=8, warm_start=True,
                                  random_state=0).fit, X, y.astype(float))
    errors, stop = [], threading.Event()

    def predict_loop():
        try:
            while not stop.is_set():
                assert np.all(np.isfinite(reg.predict(X[:7])))
        except Exception as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=predict_loop)
    reader.start()
    try:
        for _ in range(3):
            quiet(reg.fit, X, y.astype(float))
    finally:
        stop.set()
        reader.join()
    assert not errors, errors
    assert reg.n_iter_ == 4 and np.all(np.isfinite(reg.model_.flat_params))


# ----- NaN in the kernels ----------------------------------------------------------------

def test_activations_propagate_nan_and_saturate_at_infinity():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30], np.float32)
    sig, tanh = _kernels.sigmoid_f32(x), _kernels.tanh_f32(x)
    assert np.isnan(sig[0]) and np.isnan(tanh[0])
    np.testing.assert_allclose(sig[1:], [1, 0, 0.5, 1, 0], rtol=0, atol=1e-30)
    np.testing.assert_allclose(tanh[1:], [1, -1, 0, 1, -1], rtol=0, atol=1e-30)


def test_generate_rejects_a_nan_condition():
    gen = quiet(SequenceGenerator(hidden_size=8, embedding_dim=4, max_iter=1,
                                  random_state=0).fit, ["ab", "ba"],
                conditions=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        gen.generate(5, condition=[np.nan, 0.0])
    with pytest.raises(ValueError, match="infinity"):
        gen.generate(5, condition=[np.inf, 0.0])
    assert len(gen.generate(5, condition=[1.0, 0.0], n_samples=3)) == 3
