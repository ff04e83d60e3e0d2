"""What the Python layer keeps between calls to cost less per call: the
stacks' reused workspaces (layers.Workspaces), the BLAS thread limit, and the
estimators' checking X once per fit / predict. Each must leave every result
as it was: bit for bit where the arithmetic is the same."""
import copy
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fastrnn import FastLSTMClassifier, FastLSTMRegressor
from fastrnn._threads import single_threaded_blas
from fastrnn.layers import GRU, LSTM, RNN, Workspaces

STACKS = [(LSTM, {}), (GRU, {}), (RNN, {}), (LSTM, {"layer_norm": True})]
STACK_IDS = ["lstm", "gru", "rnn", "lstm-layer-norm"]


def make(cls, kw, seed=0, **more):
    return cls(3, 5, num_layers=2, bidirectional=True, random_state=seed, n_threads=1,
               **kw, **more)


def inputs(rng, B=6, T=7):
    X = rng.normal(size=(B, T, 3)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    dY = rng.normal(size=(B, T, 10)).astype(np.float32)
    return X, lengths, dY


def train_step(stack, X, lengths, dY):
    stack.zero_grad()
    Y, state = stack.forward(X, lengths=lengths, training=True)
    dX, dstate = stack.backward(dY)
    return [Y, state.h, dX, dstate.h, stack.flat_grads.copy()]


def poison(stack):
    """Fill every free buffer of the stack's pool with NaN: a kernel that read
    a workspace before writing it would spread them."""
    for buf in stack.workspaces._free:
        buf[:] = np.nan


@pytest.mark.parametrize("ragged", [True, False], ids=["ragged", "dense"])
@pytest.mark.parametrize("cls, kw", STACKS, ids=STACK_IDS)
def test_reused_workspaces_give_the_results_of_fresh_ones(cls, kw, ragged, rng):
    X, lengths, dY = inputs(rng)
    lengths = lengths if ragged else None
    fresh = train_step(make(cls, kw), X, lengths, dY)
    stack = make(cls, kw)
    for lens in (lengths, X[:, 0, 0] * 0 + 1, lengths):  # then another shape, then again
        train_step(stack, X, lens, dY)
        stack.forward(X, lengths=lens)
    assert stack.workspaces._free, "nothing was kept for reuse"
    poison(stack)
    for got, want in zip(train_step(stack, X, lengths, dY), fresh):
        np.testing.assert_array_equal(got, want)
    poison(stack)
    Y, state = stack.forward(X, lengths=lengths)
    np.testing.assert_array_equal(Y, make(cls, kw).forward(X, lengths=lengths)[0])
    assert np.all(np.isfinite(state.h))


def test_outputs_are_never_reused_buffers(rng):
    X, lengths, _ = inputs(rng)
    stack = make(LSTM, {})
    first, state = stack.forward(X, lengths=lengths)
    kept = first.copy(), state.h.copy()
    stack.forward(2 * X, lengths=lengths)
    stack.forward(X, lengths=None, training=True)
    np.testing.assert_array_equal(first, kept[0])
    np.testing.assert_array_equal(state.h, kept[1])


def test_a_pool_hands_a_buffer_to_one_caller_at_a_time_and_drops_old_shapes():
    pool = Workspaces(np.float32, keep=2)
    a, b = pool.take(100), pool.take(100)
    assert a.size >= 100 and b.size >= 100 and not np.shares_memory(a, b)
    pool.give(a)
    assert pool.take(90) is a  # reused for a request of at least half its size
    assert pool.take(100) is not a  # taken: never handed out twice
    pool.give(a, b)
    assert pool.take(10) is not a and pool.take(10) is not b  # far smaller: a new one
    pool.give(pool.take(1000), pool.take(1000))  # a new shape: the old buffers go
    assert all(buf.size >= 1000 for buf in pool._free) and len(pool._free) == 2
    pool.clear()
    assert pool._free == []


def test_pickles_and_copies_of_a_stack_start_with_an_empty_pool(rng):
    X, lengths, dY = inputs(rng)
    stack = make(LSTM, {})
    train_step(stack, X, lengths, dY)
    for other in (pickle.loads(pickle.dumps(stack)), copy.deepcopy(stack)):
        assert other.workspaces._free == [] and other.workspaces is not stack.workspaces
        np.testing.assert_array_equal(other.forward(X, lengths=lengths)[0],
                                      stack.forward(X, lengths=lengths)[0])


def test_inference_in_another_thread_between_forward_and_backward_changes_nothing(rng):
    """A predict in one thread while a fit in another is between its training
    forward and backward: the pool gives them different buffers."""
    X, lengths, dY = inputs(rng)
    want = train_step(make(LSTM, {}), X, lengths, dY)
    want_infer = make(LSTM, {}).forward(2 * X)[0]
    stack = make(LSTM, {})
    train_step(stack, X, lengths, dY)  # the pool holds buffers now
    stack.zero_grad()
    Y, state = stack.forward(X, lengths=lengths, training=True)
    with ThreadPoolExecutor(2) as pool:
        inferred = list(pool.map(lambda _: stack.forward(2 * X)[0], range(6)))
    dX, dstate = stack.backward(dY)
    for got, expected in zip([Y, state.h, dX, dstate.h, stack.flat_grads], want):
        np.testing.assert_array_equal(got, expected)
    for got in inferred:
        np.testing.assert_array_equal(got, want_infer)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_concurrent_predictions_of_a_fitted_estimator_match_sequential_ones(rng):
    X = rng.normal(size=(40, 9, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    clf = FastLSTMClassifier(hidden_size=8, max_iter=2, random_state=0).fit(X, y)
    X_other = [x[:n] for x, n in zip(X, rng.integers(1, 10, size=40))]
    want = clf.predict_proba(X), clf.predict_proba(X_other)
    barrier = threading.Barrier(4)

    def predict(i):
        barrier.wait()
        return clf.predict_proba(X if i % 2 == 0 else X_other)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(predict, range(4)))
    for i, result in enumerate(got):
        np.testing.assert_array_equal(result, want[i % 2])


def test_predict_after_partial_fit_uses_the_updated_weights(rng):
    X = rng.normal(size=(30, 6, 2))
    y = X[:, :, 0].sum(axis=1)
    reg = FastLSTMRegressor(hidden_size=8, random_state=0).partial_fit(X, y)
    before = reg.predict(X)
    reg.partial_fit(X, y)
    after = reg.predict(X)
    assert not np.array_equal(before, after)
    twin = copy.deepcopy(reg)  # a fresh pool, the same weights
    np.testing.assert_array_equal(after, twin.predict(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_fitted_estimator_keeps_no_training_buffers_but_partial_fit_does(rng):
    X = rng.normal(size=(30, 6, 2))
    y = X[:, :, 0].sum(axis=1)
    reg = FastLSTMRegressor(hidden_size=8, max_iter=2, random_state=0).fit(X, y)
    assert reg.model_.stack.workspaces._free == []
    reg.predict(X)
    assert len(reg.model_.stack.workspaces._free) == 1  # one inference scratch buffer
    reg.partial_fit(X, y)
    assert len(reg.model_.stack.workspaces._free) >= 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_an_estimator_still_refuses_float64_values_that_overflow_float32(rng):
    X = rng.normal(size=(20, 5, 2))
    y = (X[:, 0, 0] > 0).astype(int)
    clf = FastLSTMClassifier(hidden_size=4, max_iter=1, random_state=0)
    X[3, 2, 1] = 1e300  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="NaN or inf"):
        clf.fit(X, y)
    X[3, 2, 1] = 0
    clf.fit(X, y)
    X[3, 2, 1] = -1e300
    with pytest.raises(ValueError, match="NaN or inf"):
        clf.predict(X)


def test_a_stack_called_alone_still_checks_its_input(rng):
    X, lengths, _ = inputs(rng)
    X[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        make(LSTM, {}).forward(X, lengths=lengths)


def _blas_threads():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_the_blas_limit_holds_inside_nested_blocks_and_is_restored_after():
    outside = _blas_threads()
    with single_threaded_blas():
        assert all(n == 1 for n in _blas_threads())
        with single_threaded_blas():
            assert all(n == 1 for n in _blas_threads())
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == outside
