"""What a layer call keeps to cost less: each stack's Direction views (made
once per params dict), the kept packs found by the call's shape, the BLAS
limit set through C functions, the one binding call per layer, and the C
scans of X and lengths. Each must leave every result and error as it was."""
import copy
import pickle
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fastrnn import _kernels, _packed
from fastrnn._threads import single_threaded_blas
from fastrnn.layers import GRU, LSTM, RNN

SHAPES = [(4, 6, None), (2, 9, [9, 3]), (4, 6, [6, 1, 4, 2]), (1, 5, None), (4, 6, None)]


def make(cls=LSTM, **kw):
    return cls(3, 5, num_layers=2, bidirectional=True, random_state=0, n_threads=1, **kw)


def run(stack, B, T, lengths, training, seed=0):
    X = np.random.default_rng(seed).normal(size=(B, T, 3)).astype(np.float32)
    if not training:
        Y, state = stack.forward(X, lengths=lengths)
        return [Y, state.h]
    stack.zero_grad()
    Y, state = stack.forward(X, lengths=lengths, training=True)
    dX, dstate = stack.backward(np.ones_like(Y))
    return [Y, state.h, dX, dstate.h, stack.flat_grads.copy()]


@pytest.mark.parametrize("keep_packs", [False, True], ids=["plain", "packs"])
@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_calls_of_changing_shapes_lengths_and_weights_match_a_fresh_stack(cls, keep_packs):
    """One stack called with shapes, lengths and passes in turn (its views,
    pool and packs reused), its weights changed between: each answer is a
    fresh stack's with the same weights, bit for bit."""
    stack = make(cls)
    if keep_packs:
        stack.keep_packed_weights()
    for step, (B, T, lengths) in enumerate(SHAPES * 2):
        if step == len(SHAPES):  # an optimizer-like write, announced as the package does
            stack.flat_params *= 0.5
            _packed.written(stack.flat_params)
        for training in (False, True, False):
            fresh = make(cls)
            fresh.flat_params[:] = stack.flat_params
            for got, want in zip(run(stack, B, T, lengths, training),
                                 run(fresh, B, T, lengths, training)):
                np.testing.assert_array_equal(got, want)


def test_a_copy_or_unpickled_stack_runs_on_its_own_weights():
    """The Direction views are not copied with a stack: a copy reads its own
    parameters, and the original keeps reading its own."""
    stack = make()
    before = run(stack, 4, 6, [6, 1, 4, 2], False)
    for other in (copy.deepcopy(stack), pickle.loads(pickle.dumps(stack))):
        run(other, 4, 6, None, True)  # views made before the change below
        other.load_state_dict({k: 2 * v for k, v in other.state_dict().items()})
        doubled = make()
        doubled.load_state_dict(other.state_dict())
        np.testing.assert_array_equal(run(other, 4, 6, [6, 1, 4, 2], False)[0],
                                      run(doubled, 4, 6, [6, 1, 4, 2], False)[0])
        np.testing.assert_array_equal(run(stack, 4, 6, [6, 1, 4, 2], False)[0], before[0])


def test_direction_views_are_made_once_and_follow_a_new_params_dict():
    stack = make()
    assert stack.direction(1, True) is stack.direction(1, True)
    view = stack.direction(1, True)
    assert view.W_hh is stack.params["weight_hh_l1_reverse"]
    assert view.dW_ih is stack.grads["weight_ih_l1_reverse"]
    assert view.index == 3 and view.reverse and view.layer == 1
    stack.params = stack._views(stack.flat_params)  # a new dict of new views
    assert stack.direction(1, True).W_hh is stack.params["weight_hh_l1_reverse"]
    with pytest.raises(IndexError, match="no layer 2"):
        stack.direction(2)
    with pytest.raises(IndexError, match="no layer 0 reverse"):
        LSTM(3, 5).direction(0, True)


def test_kept_packs_are_found_again_by_the_call_and_dropped_after_a_write():
    stack = make()
    stack.keep_packed_weights()
    X = np.ones((1, 4, 3), np.float32)
    stack.forward(X)
    packs = dict(stack._packed.packs)
    stack.forward(X)
    assert stack._packed.packs == packs  # the same pack objects, none made again
    stack.load_state_dict(stack.state_dict())
    stack.forward(X)
    assert all(new is not old for new, old in zip(stack._packed.packs.values(),
                                                   packs.values()))


def _blas_threads():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_the_blas_limit_is_shared_by_threads_and_restored_when_the_last_leaves():
    outside = _blas_threads()
    inside, entered, release = [], threading.Barrier(3), threading.Event()

    def hold():
        with single_threaded_blas():
            entered.wait()
            inside.append(_blas_threads())
            release.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    entered.wait()
    with single_threaded_blas():
        pass  # a standalone block leaving while the others hold the limit
    assert all(n == 1 for n in _blas_threads())
    release.set()
    for t in threads:
        t.join()
    assert all(n == 1 for counts in inside for n in counts)
    assert _blas_threads() == outside


def test_the_blas_limit_is_restored_when_the_block_raises():
    outside = _blas_threads()
    with pytest.raises(KeyError):
        with single_threaded_blas():
            raise KeyError
    assert _blas_threads() == outside


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_finite_scan_finds_any_nan_or_inf(dtype, bad):
    X = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(dtype)
    assert _kernels.all_finite(X)
    extremes = np.array([np.finfo(dtype).max, -np.finfo(dtype).max, np.finfo(dtype).tiny,
                         np.finfo(dtype).smallest_subnormal, -0.0], dtype)
    assert _kernels.all_finite(extremes)
    for index in [(0, 0, 0), (1, 2, 3), (2, 3, 4)]:
        Y = X.copy()
        Y[index] = bad
        assert not _kernels.all_finite(Y)
        with pytest.raises(ValueError, match="X holds NaN or inf"):
            LSTM(5, 2, dtype=dtype).forward(Y)
    with pytest.raises(ValueError, match="C-contiguous float32 or float64"):
        _kernels.all_finite(X[:, ::2])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float64])
def test_lengths_of_any_integer_dtype_give_the_same_answer_and_errors(dtype):
    X = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    want = make().forward(X, lengths=[6, 1, 4, 2])[0]
    np.testing.assert_array_equal(make().forward(X, lengths=np.array([6, 1, 4, 2], dtype))[0],
                                  want)
    for bad, message in (([0, 1, 4, 2], r"got min 0(\.0)? and max 4(\.0)?$"),
                         ([6, 1, 7, 2], r"got min 1(\.0)? and max 7(\.0)?$")):
        with pytest.raises(ValueError, match=message):
            make().forward(X, lengths=np.array(bad, dtype))
    assert _kernels.int_range(np.array([5, -3, 9], np.int64)) == (-3, 9)
    assert _kernels.int_range(np.array([7], np.int32)) == (7, 7)
    assert _kernels.int_range(np.array([1.0])) is None
