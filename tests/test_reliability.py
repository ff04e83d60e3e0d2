"""Nothing crashes, hangs or lies: thread counts, fork, Ctrl-C, training and
inference side by side, NaN in the kernels (issue 10)."""
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager

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
            "assert _kernels.sumsq(x=w, n_threads=100000) == w.size\n"
            "z = np.zeros_like(w)\n"
            "_kernels.optim_step(solver='adam', w=w, g=w.copy(), m=z.copy(), v=z.copy(),"
            " decay_mask=None, lr=0.1, l2=0.0, grad_scale=1.0, momentum=0.0, nesterov=False,"
            " rho=0.9, beta1=0.9, beta2=0.999, eps=1e-8, step=1, n_threads=100000)\n"
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
    _kernels.sumsq(x=np.ones(1 << 17, np.float32), n_threads=2)  # the OpenMP pool has run
    expected = clf.predict_proba(X)
    _FORKED_MODEL = clf
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            parts = pool.map_async(_predict_in_child, np.array_split(X, 4)).get(timeout=120)
    finally:
        _FORKED_MODEL = None
    np.testing.assert_allclose(np.concatenate(parts), expected, rtol=1e-5, atol=1e-6)


# ----- Ctrl-C ------------------------------------------------------------------------------

def _sigint_after(seconds, sent):
    """A started timer that sends this process SIGINT after `seconds` and
    puts the time it did under sent["at"]."""
    def fire():
        sent["at"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, fire)
    timer.start()
    return timer


@contextmanager
def _sigint_during_fit(monkeypatch, after_epoch, seconds):
    """SIGINT `seconds` after the epoch loop of the fit in the block starts
    epoch after_epoch + 1: the timer starts there, not before fit, so however
    slow the machine, the signal finds fit in its epochs (with no early stop
    and enough epochs left). Yields the dict _sigint_after fills."""
    from fastrnn._base import BaseFastRNN
    original, sent, timers = BaseFastRNN._train_epoch, {}, []

    def train_epoch(self, *args):
        if self.n_iter_ == after_epoch and not timers:
            timers.append(_sigint_after(seconds, sent))
        return original(self, *args)

    monkeypatch.setattr(BaseFastRNN, "_train_epoch", train_epoch)
    try:
        yield sent
    finally:
        monkeypatch.setattr(BaseFastRNN, "_train_epoch", original)
        for timer in timers:
            timer.cancel()
            timer.join()


def _sigint_handler_address():
    """The address of the C function that SIGINT runs now: Python's, or the
    bindings' while a kernel watches for Ctrl-C (it comes first in struct
    sigaction on Linux and macOS; the buffer outsizes the struct)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    action = ctypes.create_string_buffer(512)
    if libc.sigaction(signal.SIGINT, None, action) != 0:
        raise OSError(ctypes.get_errno(), "sigaction")
    return ctypes.c_void_p.from_buffer(action).value


@contextmanager
def _sigint_in_a_kernel(after):
    """SIGINT `after` seconds into the first kernel call of the block that
    watches for Ctrl-C (its C handler replaced Python's): timed from the
    call's start, not the block's, so however fast or slow the machine, the
    signal lands in that call if it runs longer. Yields the dict that gets the
    time it was sent under "at" (none if the call ended first)."""
    pythons, sent, done = _sigint_handler_address(), {}, threading.Event()

    def watching():
        return _sigint_handler_address() != pythons

    def watch():
        while not done.is_set() and not watching():
            time.sleep(0.0005)
        started = time.perf_counter()
        while not done.is_set() and watching():
            if time.perf_counter() - started >= after:
                sent["at"] = time.perf_counter()
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield sent
    finally:
        done.set()
        watcher.join()


@pytest.fixture(scope="module")
def tiny_generator():
    return quiet(SequenceGenerator(hidden_size=8, embedding_dim=4, max_iter=1, seq_len=8,
                                   random_state=0).fit, "hello world, hello there")


@posix_only
def test_ctrl_c_stops_a_long_generation_at_once(tiny_generator):
    # generate(3_000_000) takes seconds on this model; the C loop checks the
    # stop flag every step, so Ctrl-C returns in well under 0.2 s (the bound
    # asserted is loose: a loaded machine may deschedule us).
    with _sigint_in_a_kernel(after=0.1) as sent:
        with pytest.raises(KeyboardInterrupt):
            tiny_generator.generate(3_000_000, random_state=0)
        stopped = time.perf_counter()
    assert stopped - sent["at"] < 1.0
    # the next call runs normally: the stop request does not linger
    assert tiny_generator.generate(5, random_state=0) == tiny_generator.generate(
        5, random_state=0)


@posix_only
@pytest.mark.parametrize("batch,hidden,steps,n_threads", [
    (1, 512, 10_000, 1),
    (16, 176, 8_000, 2),  # two threads splitting the rows: no barrier between steps
], ids=["one-thread", "row-split"])
def test_ctrl_c_stops_a_long_forward_pass(batch, hidden, steps, n_threads):
    # Long in its step loop (half a second or more), short on memory: the
    # projection before the loop is one GEMM that no flag interrupts, so the
    # signal comes well after the call's start.
    if n_threads > 1:
        if len(os.sched_getaffinity(0)) < 2:
            pytest.skip("a team of two needs two CPUs in this process's mask")
        assert _kernels._layer_team(cell=0, B=batch, T=steps, I=1, H=hidden,
                                    n_threads=n_threads) == (2, "rows")
    lstm = LSTM(input_size=1, hidden_size=hidden, random_state=0, n_threads=n_threads)
    X = np.zeros((batch, steps, 1), np.float32)
    # a first whole call leaves its scratch (the projected gates: 0.5 GB in
    # the row-split case) in the stack's pool, faulted in; else the second
    # call would spend its first second faulting pages before its loop
    lstm.forward(X)
    started = time.perf_counter()
    lstm.forward(X[:, :100])  # what comes before the step loop (packing W_hh), and a bit
    before_the_loop = time.perf_counter() - started
    with _sigint_in_a_kernel(after=0.1 + 2 * before_the_loop) as sent:
        with pytest.raises(KeyboardInterrupt):
            lstm.forward(X)
        stopped = time.perf_counter()
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
def test_ctrl_c_during_fit_keeps_the_last_finished_epoch(task, monkeypatch):
    # A real SIGINT a little after epoch 2 (in a kernel, most likely: they take
    # most of an epoch); the fit cannot end before it comes (no early stop, and
    # 2000 epochs of this take tens of seconds on a fast machine).
    X, y = task
    X = np.repeat(X, 10, axis=0)
    y = np.repeat(y, 10)
    clf = FastLSTMClassifier(hidden_size=16, max_iter=2000, n_iter_no_change=2000,
                             batch_size=16, random_state=0)
    with _sigint_during_fit(monkeypatch, after_epoch=2, seconds=0.1) as sent:
        with pytest.warns(RuntimeWarning, match="interrupted"):
            clf.fit(X, y)
    assert "at" in sent
    assert clf.n_iter_ == len(clf.loss_curve_) >= 2
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


# ----- interrupted or diverging fits -------------------------------------------------------

def test_ctrl_c_in_validation_scoring_keeps_the_last_finished_epoch(task, monkeypatch):
    from fastrnn._base import BaseFastRNN
    X, y = task
    clf = FastLSTMClassifier(hidden_size=8, max_iter=10, early_stopping=True, random_state=0)
    calls = {"n": 0}
    original = BaseFastRNN._validate

    def interrupted_on_the_third(self, val):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, val)

    monkeypatch.setattr(BaseFastRNN, "_validate", interrupted_on_the_third)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        clf.fit(X, y)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2 and len(clf.validation_scores_) == 2
    monkeypatch.undo()
    two_epochs = quiet(FastLSTMClassifier(hidden_size=8, max_iter=2, early_stopping=True,
                                          n_iter_no_change=100, random_state=0).fit, X, y)
    # the weights at the end of epoch 2 (not the best validation ones: fit did not finish)
    assert clf.t_ == two_epochs.t_
    assert clf._optimizer.t == two_epochs._optimizer.t


@posix_only
def test_ctrl_c_at_any_moment_of_an_early_stopping_fit_never_escapes(task, monkeypatch):
    # Half the data is validation, so a good share of the signals land in
    # validation scoring or between epochs, where fit used to let them escape.
    # The fit cannot end first: no early stop, and far more epochs than fit in
    # 0.6 s on any machine.
    X, y = task
    delays = np.random.default_rng(1).uniform(0.05, 0.6, size=12)
    for delay in delays:
        clf = FastLSTMClassifier(hidden_size=8, max_iter=100_000, early_stopping=True,
                                 validation_fraction=0.5, n_iter_no_change=100_000,
                                 random_state=0)
        with _sigint_during_fit(monkeypatch, after_epoch=0, seconds=delay) as sent:
            with pytest.warns(RuntimeWarning, match="interrupted"):
                clf.fit(X, y)
        assert "at" in sent
        assert clf.n_iter_ == len(clf.loss_curve_) == len(clf.validation_scores_)
        assert np.all(np.isfinite(clf.model_.flat_params))


@posix_only
def test_ctrl_c_while_an_epoch_is_recorded_keeps_that_epoch_whole(task, monkeypatch):
    # A process-directed SIGINT goes to any thread that does not block it (an
    # OpenMP worker, a timer: here a thread that just waits), and Python then
    # raises KeyboardInterrupt on the main thread all the same. One sent while
    # epoch 3 is recorded must still wait until it is recorded whole.
    from fastrnn._base import BaseFastRNN
    X, y = task
    original = BaseFastRNN._update_no_improvement_count

    def interrupted_in_the_third(self, *args):
        original(self, *args)
        if self.n_iter_ == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # long enough for any thread to take the signal

    monkeypatch.setattr(BaseFastRNN, "_update_no_improvement_count", interrupted_in_the_third)
    clf = FastLSTMClassifier(hidden_size=8, max_iter=10, n_iter_no_change=100, random_state=0)
    released = threading.Event()
    bystander = threading.Thread(target=released.wait)
    bystander.start()
    try:
        with pytest.warns(RuntimeWarning, match="interrupted in epoch 4"):
            clf.fit(X, y)
    finally:
        released.set()
        bystander.join()
    monkeypatch.undo()
    three_epochs = quiet(FastLSTMClassifier(hidden_size=8, max_iter=3, n_iter_no_change=100,
                                            random_state=0).fit, X, y)
    assert clf.n_iter_ == len(clf.loss_curve_) == 3
    assert clf.t_ == three_epochs.t_ and clf._optimizer.t == three_epochs._optimizer.t
    np.testing.assert_array_equal(clf.model_.flat_params, three_epochs.model_.flat_params)


@pytest.mark.parametrize("solver", ["adam", "sgd", "rmsprop", "adagrad"])
@pytest.mark.parametrize("clip_norm", [5.0, None])
def test_divergence_is_reported_and_restores_weights_and_optimizer_state(task, solver,
                                                                         clip_norm):
    from fastrnn import TrainingDivergedError
    X, y = task
    clf = quiet(FastLSTMClassifier(hidden_size=8, max_iter=1, solver=solver, warm_start=True,
                                   batch_size=8, clip_norm=clip_norm, random_state=0).fit, X, y)
    opt = clf._optimizer
    before = (clf.model_.flat_params.copy(), opt.t, clf.t_,
              None if opt.m is None else opt.m.copy(), None if opt.v is None else opt.v.copy())
    clf.set_params(learning_rate_init=1e3)
    with pytest.raises(TrainingDivergedError, match="diverged"):
        clf.fit(X * 100, y)
    np.testing.assert_array_equal(clf.model_.flat_params, before[0])
    assert (opt.t, clf.t_) == before[1:3]
    for now, then in zip((opt.m, opt.v), before[3:]):
        if then is not None:
            np.testing.assert_array_equal(now, then)
    assert clf.n_iter_ == 1


def test_a_diverging_regressor_is_reported(task):
    from fastrnn import TrainingDivergedError
    X, _ = task
    reg = FastLSTMRegressor(hidden_size=8, learning_rate_init=1e3, max_iter=20, random_state=0)
    with pytest.raises(TrainingDivergedError):
        reg.fit(X, X[:, :, 0].sum(axis=1))
    assert np.all(np.isfinite(reg.model_.flat_params))


# ----- silent nonsense ---------------------------------------------------------------------

@pytest.mark.parametrize("params", [dict(alpha=np.nan), dict(tol=np.nan),
                                    dict(learning_rate_init=np.nan), dict(clip_norm=np.nan),
                                    dict(dropout=np.nan), dict(momentum=np.nan)])
def test_nan_hyper_parameters_are_rejected(task, params):
    X, y = task
    with pytest.raises(ValueError, match=list(params)[0]):
        FastLSTMClassifier(hidden_size=4, max_iter=1, **params).fit(X, y)


def test_negative_sample_weights_are_rejected(task):
    X, y = task
    weights = np.ones(len(X))
    weights[3] = -1
    with pytest.raises(ValueError, match="Negative"):
        FastLSTMClassifier(hidden_size=4, max_iter=1).fit(X, y, sample_weight=weights)


def test_regressor_on_huge_targets_predicts_finite_values_in_their_units(task):
    X, _ = task
    y = X[:, :, 0].sum(axis=1).astype(np.float64)
    small = quiet(FastLSTMRegressor(hidden_size=8, max_iter=3, random_state=0).fit, X, y)
    huge = quiet(FastLSTMRegressor(hidden_size=8, max_iter=3, random_state=0).fit, X, y * 1e300)
    pred = huge.predict(X)
    assert np.all(np.isfinite(pred))
    np.testing.assert_allclose(pred / 1e300, small.predict(X), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("change", [dict(hidden_size=9), dict(dtype="float64"),
                                    dict(bidirectional=True), dict(num_layers=2)])
def test_warm_start_with_a_changed_network_is_an_error(task, change):
    X, y = task
    clf = quiet(FastLSTMClassifier(hidden_size=8, max_iter=1, warm_start=True).fit, X, y)
    params = clf.model_.flat_params.copy()
    with pytest.raises(ValueError, match=f"{list(change)[0]} changed"):
        clf.set_params(**change).fit(X, y)
    np.testing.assert_array_equal(clf.model_.flat_params, params)


def test_forecaster_checks_its_parameters_and_exogenous_inputs():
    from fastrnn import Forecaster
    series = np.sin(np.arange(200) / 5)
    with pytest.raises(ValueError, match="lookback"):
        Forecaster(lookback=5.5, max_iter=1).fit(series)
    with pytest.raises(ValueError, match="horizon"):
        Forecaster(horizon=0, strategy="direct", max_iter=1).fit(series)
    plain = quiet(Forecaster(lookback=8, max_iter=1, random_state=0).fit, series)
    with pytest.raises(ValueError, match="without exogenous"):
        plain.predict(3, X_future=np.ones((3, 1)))
    exog = quiet(Forecaster(lookback=8, max_iter=1, random_state=0).fit, series,
                 X=np.ones((200, 2)))
    with pytest.raises(ValueError, match="X_future has 1 columns"):
        exog.predict(3, X_future=np.ones((3, 1)))
    with pytest.raises(ValueError, match="X_future has 2 steps"):
        exog.predict(3, X_future=np.ones((2, 2)))
    assert exog.predict(3, X_future=np.ones((3, 2))).shape == (3,)


def test_forecaster_on_a_huge_series_forecasts_in_its_units():
    from fastrnn import Forecaster
    series = np.sin(np.arange(200) / 5)
    small = quiet(Forecaster(lookback=8, max_iter=3, random_state=0).fit, series)
    huge = quiet(Forecaster(lookback=8, max_iter=3, random_state=0).fit, series * 1e300)
    forecast = huge.predict(4)
    assert np.all(np.isfinite(forecast))
    np.testing.assert_allclose(forecast / 1e300, small.predict(4), rtol=1e-4, atol=1e-6)


# ----- leaks ---------------------------------------------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(os.environ.get("FASTRNN_LEAK_CHECK") != "1" or
                    not os.path.exists("/proc/self/statm"),
                    reason="slow (about a minute): run by tools/sanitize.sh, or set "
                           "FASTRNN_LEAK_CHECK=1")
def test_leak_check_rss_stays_flat_over_300_cycles(task, tmp_path):
    import fastrnn
    X, y = task
    X, y = X[:24], y[:24]
    generator = quiet(SequenceGenerator(hidden_size=8, embedding_dim=4, max_iter=1, seq_len=8,
                                        random_state=0).fit, "hello world")

    def cycle(i):
        clf = quiet(FastLSTMClassifier(hidden_size=8, max_iter=1, random_state=i).fit, X, y)
        clf.predict_proba(X)
        clf.save(tmp_path / "m.npz")
        fastrnn.load(tmp_path / "m.npz").predict(X)
        generator.generate(20, n_samples=3, random_state=i)

    for i in range(50):  # warm up: allocator pools, caches, lazy imports
        cycle(i)
    before = _rss_bytes()
    for i in range(300):
        cycle(i)
    grown = _rss_bytes() - before
    # a leak of one parameter buffer (about 1.5 KB) per cycle would add ~0.5 MB;
    # allocator noise stays well under the bound
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 300 cycles"


def test_per_sequence_predictions_on_ragged_lists_stay_whole():
    # found by tests/test_properties.py: a per-sequence model cut every
    # sample's prediction to its length ("pos"[:1] == "p")
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(n, 2)) for n in (1, 3, 2, 1, 4, 2)]
    labels = ["pos", "neg"] * 3
    clf = quiet(FastLSTMClassifier(hidden_size=4, max_iter=1, random_state=0).fit, X, labels)
    assert clf.per_step_ is False
    assert set(clf.predict(X)) <= {"pos", "neg"} and len(clf.predict(X)) == 6
    assert clf.predict_proba(X).shape == (6, 2)
