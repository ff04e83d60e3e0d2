"""W_ih and W_hh packed once and kept between inference calls (csrc fr_pack_recurrent,
fastrnn._packed): the same results as packing per call, dropped whenever the
weights change, and a pack made for anything else is never used."""
import threading

import numpy as np
import pytest

from fastrnn import _kernels, _packed, _quantize
from fastrnn.estimators import FastLSTMRegressor
from fastrnn.layers import GRU, LSTM, RNN
from fastrnn.optim import Optimizer

CELL = _kernels.CELLS["lstm"]
HEADER = 10 * 8 // 4  # fr_pack_header: ten int64 fields, in float32 elements
W_IH = {}  # input width -> the W_ih every call of that width uses (packs name its address)


def _w_ih(H, I):
    if (H, I) not in W_IH:
        W_IH[H, I] = np.random.default_rng(0).standard_normal((4 * H, I)).astype(np.float32) * 0.3
    return W_IH[H, I]


def _pack(W_hh, B, I, n_threads, W_ih=None):
    W_ih = _w_ih(W_hh.shape[1], I) if W_ih is None else W_ih
    return _kernels.pack_recurrent(cell=CELL, B=B, I=I, W_ih=W_ih, W_hh=W_hh,
                                   n_threads=n_threads)


def _direction_call(W_hh, X, n_threads, packed, seed=0):
    """One LSTM direction through _kernels.forward (inference); returns Y."""
    rng = np.random.default_rng(seed)
    B, T, I = X.shape
    H = W_hh.shape[1]
    W_ih = _w_ih(H, I)
    b = rng.standard_normal(4 * H).astype(np.float32) * 0.1
    Y = np.zeros((B, T, H), np.float32)
    hN, cN = np.zeros((B, H), np.float32), np.zeros((B, H), np.float32)
    ws = np.zeros(_kernels.workspace_size(cell=CELL, B=B, T=T, I=I, H=H, training=False),
                  np.float32)
    _kernels.forward(cell=CELL, X=X, W_ih=W_ih, W_hh=W_hh, b_ih=b, b_hh=b, h0=None, c0=None,
                     Y=Y, y_col=0, hN=hN, cN=cN, lengths=None, reverse=False, ws=ws,
                     training=False, n_threads=n_threads, packed=packed)
    return Y


def _weights(B, H=64, I=8, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((4 * H, H)).astype(np.float32) * 0.2,
            rng.standard_normal((B, 5, I)).astype(np.float32))


@pytest.mark.parametrize("B", [1, 8])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_kernel_reads_the_pack_it_is_given(B, n_threads):
    W_hh, X = _weights(B)
    pack = _pack(W_hh, B, 8, n_threads)
    before = _direction_call(W_hh, X, n_threads, None)
    assert np.array_equal(_direction_call(W_hh, X, n_threads, pack), before)
    # the pack, not W_hh, is read (where the packed kernels run): a changed W_hh
    # behind an old pack gives the old results, which is why the stacks drop theirs
    W_hh *= 0.5
    changed = _direction_call(W_hh, X, n_threads, None)
    with_old_pack = _direction_call(W_hh, X, n_threads, pack)
    if pack.size > HEADER:  # panels present: the packed kernels run on this CPU
        assert np.array_equal(with_old_pack, before) and not np.array_equal(before, changed)
    else:
        assert np.array_equal(with_old_pack, changed)


@pytest.mark.parametrize("spoil", ["header", "other_weights", "other_input_weights",
                                   "other_batch", "short", "other_threads"])
def test_kernel_ignores_a_pack_made_for_something_else(spoil):
    W_hh, X = _weights(1, H=256, I=256)
    pack = _pack(W_hh, 1, 256, 2)
    if spoil == "header":
        pack[2] += 1  # the header's first fields: corrupted
    elif spoil == "other_weights":  # a pack of equal values, but another array
        pack = _pack(W_hh.copy(), 1, 256, 2)
    elif spoil == "other_input_weights":
        pack = _pack(W_hh, 1, 256, 2, W_ih=_w_ih(256, 256).copy())
    elif spoil == "other_batch":
        X = np.concatenate([X] * 8)  # 8 rows: not the 1-row layout, nor its team
    elif spoil == "short":
        pack = pack[:pack.size // 2].copy()
    else:
        pack = _pack(W_hh, 1, 256, 1)
    truth = _direction_call(W_hh, X, 2, None)
    pack_of_zeros = pack.copy()
    pack_of_zeros[HEADER:] = 0  # the panels zeroed: used, they would change every output
    assert np.array_equal(_direction_call(W_hh, X, 2, pack_of_zeros), truth)


def test_pack_rejects_bad_arguments():
    W_hh, _ = _weights(1)
    with pytest.raises(ValueError):
        _pack(W_hh[:, :10].copy(), 1, 8, 1)
    with pytest.raises(ValueError):
        _pack(W_hh.astype(np.float16), 1, 8, 1)
    with pytest.raises(ValueError, match="weight_ih has shape"):
        _pack(W_hh, 1, 8, 1, W_ih=_w_ih(64, 9))
    pack = _pack(W_hh, 1, 8, 1)
    with pytest.raises(ValueError, match="packed must have dtype"):
        _direction_call(W_hh, _weights(1)[1], 1, pack.astype(np.float64))


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("B", [1, 8])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("ragged", [False, True])
def test_kept_packs_give_the_same_results(cls, B, n_threads, bidirectional, ragged):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((B, 6, 5)).astype(np.float32)
    lengths = rng.integers(1, 7, B) if ragged else None
    plain = cls(5, 48, num_layers=2, bidirectional=bidirectional, n_threads=n_threads,
                random_state=0)
    kept = cls(5, 48, num_layers=2, bidirectional=bidirectional, n_threads=n_threads,
               random_state=0)
    kept.keep_packed_weights()
    want = plain.forward(X, lengths=lengths)
    for _ in range(2):  # packing, then reusing the packs
        got = kept.forward(X, lengths=lengths)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1].h, want[1].h)
    assert len(kept._packed.packs) == 2 * plain.num_directions


def _changed_weights_are_used(stack, change):
    """After change(stack), a stack keeping its packs answers as one that does not."""
    X = np.random.default_rng(4).standard_normal((1, 7, stack.input_size)).astype(np.float32)
    stack.keep_packed_weights()
    before = stack.forward(X)[0]
    change(stack)
    after = stack.forward(X)[0]
    stack.keep_packed_weights(False)
    assert np.array_equal(after, stack.forward(X)[0])
    assert not np.array_equal(before, after)


def test_packs_follow_an_optimizer_step():
    def step(stack):
        stack.forward(np.ones((1, 3, stack.input_size), np.float32), training=True)
        stack.grads["weight_hh_l0"][:] = 1.0
        stack.forward(np.ones((1, 3, stack.input_size), np.float32))  # packs between
        Optimizer("sgd", stack.flat_params.size, np.float32, momentum=0.0).step(
            stack.flat_params, stack.flat_grads, lr=0.1)
    _changed_weights_are_used(LSTM(4, 40, random_state=0), step)


def test_packs_follow_load_reset_and_an_announced_write():
    other = LSTM(4, 40, random_state=9).state_dict()
    _changed_weights_are_used(LSTM(4, 40, random_state=0), lambda s: s.load_state_dict(other))
    _changed_weights_are_used(LSTM(4, 40, random_state=0), lambda s: s.reset_parameters())

    def write(stack):
        stack.params["weight_hh_l0"][:] *= 0.5
        _packed.written(stack.flat_params)
    _changed_weights_are_used(LSTM(4, 40, random_state=0), write)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_network_packs_follow_a_fit_and_forget():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((16, 6, 3)).astype(np.float32)
    y = rng.standard_normal(16).astype(np.float32)
    est = FastLSTMRegressor(hidden_size=32, max_iter=2, batch_size=8, random_state=0,
                            dtype="float32").fit(X, y)
    est.model_.stack.keep_packed_weights()
    before = est.predict(X[:1])
    est.partial_fit(X, y)  # its training forwards and steps write the network's buffer
    after = est.predict(X[:1])
    est.model_.stack.keep_packed_weights(False)
    assert np.array_equal(after, est.predict(X[:1])) and not np.array_equal(before, after)
    version = _packed.version(est.model_.stack.flat_params)
    _quantize.forget(est.model_)  # e.g. best weights restored, averaged weights loaded
    assert _packed.version(est.model_.stack.flat_params) == version + 1


def test_two_threads_share_a_stacks_packs():
    stack = LSTM(6, 64, bidirectional=True, n_threads=1, random_state=0)
    rng = np.random.default_rng(6)
    inputs = [rng.standard_normal((B, 9, 6)).astype(np.float32) for B in (1, 2, 8, 1)]
    want = [stack.forward(X)[0] for X in inputs]
    stack.keep_packed_weights()
    errors = []

    def predict(order):
        for _ in range(20):
            for i in order:
                if not np.array_equal(stack.forward(inputs[i])[0], want[i]):
                    errors.append(i)

    threads = [threading.Thread(target=predict, args=(o,)) for o in ([0, 1, 2, 3], [3, 2, 1, 0])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_copy_starts_without_packs():
    import pickle
    stack = LSTM(4, 40, random_state=0)
    stack.keep_packed_weights()
    X = np.ones((1, 5, 4), np.float32)
    want = stack.forward(X)[0]
    copy = pickle.loads(pickle.dumps(stack))
    assert copy._packed.packs == {}
    assert np.array_equal(copy.forward(X)[0], want) and len(copy._packed.packs) == 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_predictions_keep_packs_and_follow_every_write(rng):
    """predict turns the packs on; a warm-start fit, the best-weights restore of
    early stopping and a checkpoint restore each change the weights behind
    them, and predict must follow (H=64: the packed kernels run)."""
    X = rng.normal(size=(40, 6, 3)).astype(np.float32)
    y = X.sum(axis=(1, 2))
    est = FastLSTMRegressor(hidden_size=64, max_iter=2, random_state=0).fit(X, y)
    first = est.predict(X)
    assert est.model_.stack._packed is not None  # predict keeps the packs
    np.testing.assert_array_equal(est.predict(X), first)
    checkpoint = est._checkpoint()
    est.set_params(warm_start=True).fit(X, y)
    second = est.predict(X)
    assert not np.array_equal(second, first)
    est.model_.stack.keep_packed_weights(False)  # predict packs afresh
    np.testing.assert_array_equal(est.predict(X), second)
    est._restore(checkpoint)  # what Ctrl-C or a divergence does
    np.testing.assert_array_equal(est.predict(X), first)
    stopped = FastLSTMRegressor(hidden_size=64, max_iter=6, early_stopping=True,
                                n_iter_no_change=1, tol=10.0, random_state=0).fit(X, y)
    after = stopped.predict(X)
    stopped.model_.stack.keep_packed_weights(False)
    np.testing.assert_array_equal(stopped.predict(X), after)


def _panels_at(pack):
    """fr_pack_header's panels_at: its tenth int64 field."""
    return int(pack[:HEADER].view(np.int64)[9])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_pack_panels_start_on_a_cache_line(n_threads):
    W_hh, _ = _weights(1, H=256)
    for _ in range(4):  # np.empty's address varies: 16 or 48 bytes past a line here
        pack = _pack(W_hh, 1, 8, n_threads)
        if pack.size == HEADER:
            pytest.skip("no packed kernels on this CPU: a pack holds no panels")
        at = _panels_at(pack)
        assert HEADER <= at < HEADER + 16 and (pack.ctypes.data + 4 * at) % 64 == 0


def test_a_moved_pack_reads_its_panels_where_they_were_written():
    # a copy at another offset from a cache line keeps panels_at: the panels are
    # read where pack_recurrent put them (aligned or not), never shifted
    W_hh, X = _weights(1, H=256, I=8)
    pack = _pack(W_hh, 1, 8, 1)
    truth = _direction_call(W_hh, X, 1, None)
    for shift in (1, 4, 9):
        buf = np.zeros(pack.size + 16, np.float32)
        moved = buf[shift:shift + pack.size]
        moved[:] = pack
        assert np.array_equal(_direction_call(W_hh, X, 1, moved), truth)
        if pack.size > HEADER:  # and it is read: zeroed panels change the result
            moved[_panels_at(moved):] = 0
            assert not np.array_equal(_direction_call(W_hh, X, 1, moved), truth)
