"""Reduced-precision inference (int8, bfloat16): the C kernels against the
NumPy reference of the same arithmetic (fastrnn._quantize.reference_matmul,
fastrnn.reference.layer_forward with it), the AVX-512 path against the
portable one, the estimators' inference_dtype, and the accuracy bar of
issue 15 (digits, the pydoc text generator, the Mackey-Glass forecaster)."""
import os

import numpy as np
import pytest

from fastrnn import (FastGRUClassifier, FastLSTMClassifier, FastRNNRegressor, Forecaster,
                     SequenceGenerator, _kernels, _quantize, reference)
from fastrnn.datasets import load_digits_sequences, load_text, mackey_glass
from fastrnn.network import Network

# short fits on purpose: the accuracy bar compares precisions of one model
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

KINDS = ("int8", "bfloat16")  # inference dtypes
# the kernels' weight kinds: int16 is an int8 or bfloat16 network's W_hh (recurrent_kind)
WEIGHT_KINDS = ("int8", "int16", "bfloat16")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")

two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                              reason="a team of two needs two CPUs in this process's mask")


def _qgemm(w, A):
    C = np.empty((A.shape[0], w.rows), np.float32)
    _kernels.qgemm(w=w, A=A, C=C)
    return C


@pytest.mark.parametrize("kind", WEIGHT_KINDS)
@pytest.mark.parametrize("M, N, K", [(1, 5, 3), (7, 37, 29), (70, 64, 100), (3, 48, 257),
                                     (1, 80, 40)])
def test_qgemm_equals_reference_arithmetic(kind, M, N, K, quant_path):
    rng = np.random.default_rng(M + N + K)
    w = _quantize.ReducedWeight(rng.normal(size=(N, K)), kind)
    A = rng.normal(size=(M, K)).astype(np.float32) * 3
    A[0, :2] = 0  # rows with zeros and a one-signed row: the zero point's edges
    A[-1] = np.abs(A[-1])
    np.testing.assert_array_equal(_qgemm(w, A), _quantize.reference_matmul(A, w))


@pytest.mark.parametrize("kind", WEIGHT_KINDS)
def test_fast_path_equals_portable_path(kind, isa_cap):
    # 200 outputs: a partial last panel; 33 rows: blocks of 4 and a single
    # row; accumulating into C: the kernels' stores add as the portable ones
    rng = np.random.default_rng(0)
    w = _quantize.ReducedWeight(rng.normal(size=(200, 130)), kind)
    A = rng.normal(size=(33, 130)).astype(np.float32)
    C0 = rng.normal(size=(33, 200)).astype(np.float32)

    def products():
        out = [_qgemm(w, A), _qgemm(w, A[:1]), C0.copy()]
        _kernels.qgemm(w=w, A=A, C=out[2], accumulate=True)
        return out

    fast = products()
    _kernels.qforce_portable(True)
    try:
        portable = products()
    finally:
        _kernels.qforce_portable(False)
    for a, b in zip(fast, portable):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(fast[2], C0 + fast[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS + ("float32",))
def test_packed_panels_start_on_a_cache_line_and_run_anywhere(kind):
    rng = np.random.default_rng(2)
    A = rng.normal(size=(3, 70)).astype(np.float32)
    for rows in (16, 37, 64, 100):
        w = _quantize.ReducedWeight(rng.normal(size=(rows, 70)).astype(np.float32), kind)
        assert w.packed.ctypes.data % 64 == 0
        aligned = _qgemm(w, A)
        # a copy elsewhere (a loaded model's arrays): the same results
        buf = np.empty(w.packed.nbytes + 64, np.uint8)
        moved = buf[4:4 + w.packed.nbytes].view(w.packed.dtype)
        moved[:], w.packed = w.packed, moved
        np.testing.assert_array_equal(_qgemm(w, A), aligned)


@pytest.mark.parametrize("kind", WEIGHT_KINDS)
def test_reduced_weights_are_close_to_the_weights(kind):
    W = np.random.default_rng(1).normal(size=(20, 30)).astype(np.float32)
    w = _quantize.ReducedWeight(W, kind)
    # half a step: of the row scale (int8, int16), of 8 significant bits (bfloat16)
    levels = {"int8": 127, "int16": _quantize.int16_weight_max(30)}.get(kind)
    step = np.abs(W).max(axis=1, keepdims=True) / levels if levels else np.abs(W) / 128
    assert np.all(np.abs(w.dequantized() - W) <= step / 2 + 1e-7)
    bits = _quantize.bfloat16_bits(np.float32([1 + 2**-8, 1 + 3 * 2**-8, -2.5]))
    np.testing.assert_array_equal(_quantize.bfloat16_values(bits), [1, 1 + 2**-6, -2.5])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kind", WEIGHT_KINDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_qforward_matches_reference_layer(cell, kind, reverse, quant_path):
    rng = np.random.default_rng(CELLS.index(cell))
    B, T, I, H, G = 3, 6, 5, 7, _kernels.gates(cell)
    W_ih, W_hh = (rng.normal(size=(G * H, n)).astype(np.float32) * 0.5 for n in (I, H))
    b_ih, b_hh = (rng.normal(size=G * H).astype(np.float32) for _ in range(2))
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    c0 = rng.normal(size=(B, H)).astype(np.float32) if cell == "lstm" else None
    lengths = np.array([6, 2, 4], np.int32)
    w_ih, w_hh = _quantize.ReducedWeight(W_ih, kind), _quantize.ReducedWeight(W_hh, kind)
    Y = np.full((B, T, 2 * H), 7, np.float32)  # this direction writes the second half
    hN = np.empty((B, H), np.float32)
    cN = np.empty((B, H), np.float32) if cell == "lstm" else None
    _kernels.qforward(cell=_kernels.CELLS[cell], W_ih=w_ih, W_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                      X=X, h0=h0, c0=c0, Y=Y, y_col=H, hN=hN, cN=cN, lengths=lengths,
                      reverse=reverse, n_threads=1)
    Y_ref, h_ref, c_ref = reference.layer_forward(cell, X, w_ih, w_hh, b_ih, b_hh, h0, c0,
                                                  lengths, reverse,
                                                  matmul=_quantize.reference_matmul)
    np.testing.assert_allclose(Y[:, :, H:], Y_ref, atol=1e-5)
    np.testing.assert_allclose(hN, h_ref, atol=1e-5)
    if cell == "lstm":
        np.testing.assert_allclose(cN, c_ref, atol=1e-5)
    assert np.all(Y[:, :, :H] == 7)
    Y_fp32, _, _ = reference.layer_forward(cell, X, W_ih, W_hh, b_ih, b_hh, h0, c0, lengths,
                                           reverse)
    assert np.abs(Y[:, :, H:] - Y_fp32).max() < 0.1  # and it is still the same layer


def _qforward_threads(cell, kind, reverse, n_threads):
    """A layer direction of H = 256 (16 panels of 16 units; B * G*H*H above
    FR_QSTEP_PAR_MIN_MACS and W_hh at least FR_QSTEP_PAR_MIN_BYTES for every
    cell and kind, so two threads split the steps) run with n_threads: Y, hN, cN."""
    rng = np.random.default_rng(7 + CELLS.index(cell))
    B, T, I, H, G = 3, 5, 6, 256, _kernels.gates(cell)
    W_ih, W_hh = (rng.normal(size=(G * H, n)).astype(np.float32) * n**-0.5 for n in (I, H))
    b_ih, b_hh = (rng.normal(size=G * H).astype(np.float32) for _ in range(2))
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    c0 = rng.normal(size=(B, H)).astype(np.float32) if cell == "lstm" else None
    Y = np.full((B, T, H), 7, np.float32)
    hN = np.empty((B, H), np.float32)
    cN = np.empty((B, H), np.float32) if cell == "lstm" else None
    _kernels.qforward(cell=_kernels.CELLS[cell], W_ih=_quantize.ReducedWeight(W_ih, kind),
                      W_hh=_quantize.ReducedWeight(W_hh, kind), b_ih=b_ih, b_hh=b_hh, X=X,
                      h0=h0, c0=c0, Y=Y, y_col=0, hN=hN, cN=cN,
                      lengths=np.array([5, 2, 4], np.int32), reverse=reverse,
                      n_threads=n_threads)
    return Y, hN, cN


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kind", WEIGHT_KINDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_qforward_split_steps_equal_one_thread(cell, kind, reverse, quant_path):
    # the team owns slices of every gate's units: each output sums as on one thread
    one = _qforward_threads(cell, kind, reverse, 1)
    two = _qforward_threads(cell, kind, reverse, 2)
    assert np.all(one[0][1, 2:] == 0) and np.isfinite(one[0]).all()
    for a, b in zip(one, two):
        if a is not None:
            np.testing.assert_array_equal(a, b)




@pytest.mark.parametrize("kind", WEIGHT_KINDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_qforward_ragged_batch_equals_each_sample_alone(kind, reverse, quant_path):
    # a ragged call projects and steps only valid rows, gathered per step (70
    # samples: more than one 64-row chunk); every sample's rows are its own
    rng = np.random.default_rng(3)
    B, T, I, H, G = 70, 7, 5, 16, 4
    W_ih, W_hh = (rng.normal(size=(G * H, n)).astype(np.float32) * n**-0.5 for n in (I, H))
    b_ih, b_hh = (rng.normal(size=G * H).astype(np.float32) for _ in range(2))
    w_ih, w_hh = _quantize.ReducedWeight(W_ih, kind), _quantize.ReducedWeight(W_hh, kind)
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    h0, c0 = (rng.normal(size=(B, H)).astype(np.float32) for _ in range(2))
    lengths = rng.integers(0, T + 1, size=B).astype(np.int32)
    lengths[:3] = [0, T, 1]

    def run(rows):
        n = len(rows)
        Y, hN, cN = (np.full((n, T, H), 7, np.float32), np.empty((n, H), np.float32),
                     np.empty((n, H), np.float32))
        _kernels.qforward(cell=_kernels.CELLS["lstm"], W_ih=w_ih, W_hh=w_hh, b_ih=b_ih,
                          b_hh=b_hh, X=X[rows], h0=h0[rows], c0=c0[rows], Y=Y, y_col=0,
                          hN=hN, cN=cN, lengths=lengths[rows], reverse=reverse, n_threads=1)
        return Y, hN, cN

    batch = run(np.arange(B))
    for b in (0, 1, 2, 33, 69):
        for whole, alone in zip(batch, run(np.array([b]))):
            np.testing.assert_array_equal(whole[b], alone[0])
    assert np.all(batch[0][0] == 0) and np.all(batch[1][0] == h0[0])
    assert np.all(batch[0][2, 1:] == 0) and np.all(batch[0][1] != 7)
def _qstep_team(kind, H, B, T=50, n_threads=2, cell="lstm"):
    G = _kernels.gates(cell)
    W_hh = _quantize.ReducedWeight(np.zeros((G * H, H), np.float32), kind)
    return _kernels._qstep_team(cell=_kernels.CELLS[cell], W_hh=W_hh, B=B, T=T,
                                n_threads=n_threads)


@two_cpus
def test_small_reduced_steps_split_rows_and_larger_ones_units():
    # under FR_QSTEP_PAR_MIN_BYTES (64 KiB) of W_hh: blocks of 8 samples per thread
    assert _qstep_team("int16", 64, 32) == (2, "rows")  # 32 KiB
    assert _qstep_team("int8", 64, 16, n_threads=8) == (2, "rows")  # no more than blocks
    assert _qstep_team("int16", 256, 32) == (2, "units")  # 512 KiB
    assert _qstep_team("int16", 256, 1) == (2, "units")
    # one block of rows, too little work, one thread asked for: one thread
    assert _qstep_team("int16", 64, 15) == (1, "units")
    assert _qstep_team("int16", 16, 16, T=4) == (1, "units")
    assert _qstep_team("int16", 64, 32, n_threads=1) == (1, "units")
    previous = _kernels._row_split(False)
    try:
        assert _qstep_team("int16", 64, 32) == (1, "units")
    finally:
        _kernels._row_split(previous)


@two_cpus
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kind", WEIGHT_KINDS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("ragged", [False, True])
def test_qforward_row_split_equals_one_thread(cell, kind, reverse, ragged, quant_path):
    # 21 samples: blocks of 8, 8 and 5, dealt to 2 threads; the ragged
    # batch's samples are sorted longest first, so blocks keep their samples
    rng = np.random.default_rng(11 + CELLS.index(cell))
    B, T, I, H, G = 21, 60, 6, 32, _kernels.gates(cell)
    assert _qstep_team(kind, H, B, T=T, cell=cell) == (2, "rows")
    W_ih, W_hh = (rng.normal(size=(G * H, n)).astype(np.float32) * n**-0.5 for n in (I, H))
    b_ih, b_hh = (rng.normal(size=G * H).astype(np.float32) for _ in range(2))
    w_ih, w_hh = _quantize.ReducedWeight(W_ih, kind), _quantize.ReducedWeight(W_hh, kind)
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    h0, c0 = (rng.normal(size=(B, H)).astype(np.float32) for _ in range(2))
    lengths = rng.integers(0, T + 1, size=B).astype(np.int32) if ragged else None
    out = []
    for n_threads in (1, 2):
        Y, hN, cN = (np.full((B, T, H), 7, np.float32), np.empty((B, H), np.float32),
                     np.empty((B, H), np.float32))
        _kernels.qforward(cell=_kernels.CELLS[cell], W_ih=w_ih, W_hh=w_hh, b_ih=b_ih,
                          b_hh=b_hh, X=X, h0=h0, c0=c0 if cell == "lstm" else None, Y=Y,
                          y_col=0, hN=hN, cN=cN if cell == "lstm" else None, lengths=lengths,
                          reverse=reverse, n_threads=n_threads)
        out.append((Y, hN, cN) if cell == "lstm" else (Y, hN))
    for one, two in zip(*out):
        np.testing.assert_array_equal(one, two)
    assert np.all(out[0][0] != 7)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("kind", KINDS)
def test_network_forward_runs_reduced_stack_and_head(cell, kind):
    net = Network(cell, input_size=4, hidden_size=9, output_size=3, num_layers=2,
                  bidirectional=True, random_state=0)
    X = np.random.default_rng(0).normal(size=(5, 6, 4)).astype(np.float32)
    lengths = np.array([6, 1, 3, 6, 2])
    out = net.forward(X, lengths=lengths, inference_dtype=kind)
    fp32 = net.forward(X, lengths=lengths)
    assert 0 < np.abs(out - fp32).max() < 0.05
    assert len(_quantize.reduced_network(net, kind).directions) == 4
    np.testing.assert_array_equal(out, net.forward(X, lengths=lengths, inference_dtype=kind))


def test_weights_with_a_tiny_dimension_stay_float32():
    """REDUCED_MIN_DIM: a univariate series' input projection (K=1) and a
    one-output head (N=1) keep their float32 weights; the rest is reduced."""
    assert _quantize.weight_kind(np.zeros((40, 3)), "int8") == "float32"
    assert _quantize.weight_kind(np.zeros((3, 40)), "bfloat16") == "float32"
    assert _quantize.weight_kind(np.zeros((4, 4)), "int8") == "int8"
    net = Network("lstm", input_size=1, hidden_size=9, output_size=1, random_state=0)
    X = np.random.default_rng(0).normal(size=(5, 6, 1)).astype(np.float32)
    for kind in KINDS:
        reduced = _quantize.reduced_network(net, kind)
        view = net.stack.direction(0, 0)
        W_ih, W_hh = reduced.directions[view.index]
        assert (W_ih.kind, W_hh.kind, reduced.head.kind) == ("float32", "int16", "float32")
        np.testing.assert_array_equal(W_ih.dequantized(), view.W_ih)
        _, h, _ = reference.layer_forward("lstm", X, W_ih, W_hh, view.b_ih, view.b_hh,
                                          matmul=_quantize.reference_matmul)
        expected = h @ net.params["head.weight"].T.astype(np.float64) + net.params["head.bias"]
        np.testing.assert_allclose(net.forward(X, inference_dtype=kind), expected, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_reduced_networks_keep_recurrent_weights_in_int16(kind):
    """An int8 or bfloat16 network's W_hh runs in the int16 kind (12-bit
    activations, up to 13-bit weights): its rounding feeds back at every step
    (the Mackey-Glass test below). W_ih and the head keep the network's kind.
    Past INT16_FINER_FROM's columns an int16 weight would be no finer than the
    kind's own (int8: INT16_MAX_COLS; bfloat16: 2,048), so W_hh keeps it there."""
    net = Network("gru", input_size=6, hidden_size=8, output_size=5, num_layers=2,
                  random_state=0)
    reduced = _quantize.reduced_network(net, kind)
    kinds = {(w_ih.kind, w_hh.kind) for w_ih, w_hh in reduced.directions.values()}
    assert kinds == {(kind, "int16")} and reduced.head.kind == kind
    assert _quantize.recurrent_kind(np.zeros((8, 3)), kind) == "float32"
    widest = {"int8": _quantize.INT16_MAX_COLS, "bfloat16": 2048}[kind]
    assert _quantize.recurrent_kind(np.zeros((4, widest)), kind) == "int16"
    assert _quantize.recurrent_kind(np.zeros((4, widest + 2)), kind) == kind


def test_int16_weights_are_limited_to_exact_sums():
    wide = np.zeros((4, _quantize.INT16_MAX_COLS + 1))
    with pytest.raises(ValueError, match="int16 weight takes at most"):
        _quantize.ReducedWeight(wide, "int16")


@pytest.mark.parametrize("K", [255, 256, 257, 3001])
def test_int16_sums_are_exact_at_their_bound(K, quant_path):
    """The largest sum an int16 row can reach (every activation and weight at
    its bound, one sign) fits an int32: a wrapped sum would flip its sign."""
    qmax = _quantize.int16_weight_max(K)
    assert (K + K % 2) * _quantize.INT16_ACTIVATION_MAX * qmax < 2**31
    assert (qmax == _quantize.INT16_WEIGHT_MAX) == (K <= 256)
    W = np.ones((3, K), np.float32)
    W[1] = -1
    A = np.ones((2, K), np.float32)
    w = _quantize.ReducedWeight(W, "int16")
    assert np.abs(w.values).max() == qmax
    np.testing.assert_array_equal(_qgemm(w, A), _quantize.reference_matmul(A, w))
    np.testing.assert_allclose(_qgemm(w, A), A @ W.T, rtol=1e-5)


@pytest.mark.parametrize("M, N, K", [(5, 40, 1), (70, 37, 3), (2, 1, 30)])
def test_float32_kind_qgemm_equals_float32_product(M, N, K, quant_path):
    rng = np.random.default_rng(K)
    w = _quantize.ReducedWeight(rng.normal(size=(N, K)), "float32")
    A = rng.normal(size=(M, K)).astype(np.float32)
    # the same float32 sum in k order (no fused multiply-add in either)
    np.testing.assert_allclose(_qgemm(w, A), _quantize.reference_matmul(A, w), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(_qgemm(w, A), A @ w.values.T, rtol=1e-5, atol=1e-5)


def test_cache_follows_the_weights():
    X, y, _ = load_digits_sequences()
    clf = FastGRUClassifier(hidden_size=8, max_iter=1, random_state=0).fit(X[:200], y[:200])
    clf.set_params(inference_dtype="int8")
    first = clf.predict_proba(X[:50])
    cached = _quantize.reduced_network(clf.model_, "int8")
    assert _quantize.reduced_network(clf.model_, "int8") is cached  # converted once
    clf.partial_fit(X[:200], y[:200])
    assert _quantize.reduced_network(clf.model_, "int8") is not cached
    assert not np.array_equal(first, clf.predict_proba(X[:50]))
    state = clf.model_.state_dict()
    clf.model_.load_state_dict({k: v * 0 for k, v in state.items()})
    np.testing.assert_allclose(clf.predict_proba(X[:5]), 0.1, atol=1e-6)


def test_inference_dtype_errors():
    X = np.random.default_rng(0).normal(size=(30, 4, 2))
    reg = FastRNNRegressor(hidden_size=4, max_iter=1, dtype="float64", random_state=0)
    reg.fit(X, X.sum(axis=(1, 2)))
    reg.set_params(inference_dtype="int8")
    with pytest.raises(ValueError, match="needs a float32 model"):
        reg.predict(X)
    reg.set_params(inference_dtype="int4")
    with pytest.raises(ValueError, match="inference_dtype must be one of"):
        reg.predict(X)
    with pytest.raises(ValueError, match="inference_dtype"):
        FastRNNRegressor(inference_dtype="int4").fit(X, X.sum(axis=(1, 2)))
    reg.set_params(inference_dtype="float32")
    assert reg.predict(X).dtype == np.float64


# ----- the accuracy bar (issue 15 item 3) ------------------------------------------------


def _scores(set_dtype, score):
    out = {}
    for dtype in (None, "int8", "bfloat16"):
        set_dtype(dtype)
        out[dtype] = score()
    return out


def test_digits_accuracy_moves_at_most_half_a_point():
    X, y, _ = load_digits_sequences()
    clf = FastLSTMClassifier(hidden_size=32, max_iter=8, random_state=0).fit(X, y)
    acc = _scores(lambda d: clf.set_params(inference_dtype=d), lambda: clf.score(X, y))
    assert acc[None] > 0.7  # it has learned digits
    for kind in KINDS:
        assert abs(acc[kind] - acc[None]) <= 0.005, acc


def test_text_generator_perplexity_moves_at_most_two_percent():
    text = load_text(max_chars=20000)
    gen = SequenceGenerator(hidden_size=64, max_iter=4, random_state=0).fit(text[:16000])
    held_out = "".join(ch for ch in text[16000:] if ch in gen.token_index_)
    ppl = _scores(lambda d: gen.set_params(inference_dtype=d),
                  lambda: gen.perplexity(held_out))
    assert ppl[None] < len(gen.vocabulary_) / 2  # it has learned text
    for kind in KINDS:
        assert abs(ppl[kind] / ppl[None] - 1) <= 0.02, ppl


# (lookback, hidden, epochs): the test's first setting, then README's better-fitted model
@pytest.mark.parametrize("lookback, hidden, epochs", [(24, 32, 15), (32, 64, 40)])
def test_mackey_glass_forecast_mse_moves_at_most_two_percent(lookback, hidden, epochs):
    """One-step-ahead forecasts over 200 held-out steps; the issue's bar is 2%
    relative MSE. This model's input projection (I=1) and head (one output)
    stay float32 (REDUCED_MIN_DIM); what is left is the rounding of W_hh,
    which feeds back at every step. Both kinds keep W_hh in the int16 kind
    (recurrent_kind), so here they run the same arithmetic. Measured over
    random_state 0..7 (float32 MSE 1e-4 .. 2e-4 on the first setting, 1e-5 ..
    1.5e-4 on the second): -0.13% .. +0.06% and -0.12% .. +0.53%; W_hh in
    per-row int8 moved it by -2.9% .. +4.1% and -10.8% .. +20%, in bfloat16
    by -0.6% .. +0.6% and -3.1% .. +2.2% (bench/NOTES.md)."""
    series = mackey_glass(800)
    fc = Forecaster(lookback=lookback, hidden_size=hidden, max_iter=epochs, random_state=0)
    fc.fit(series[:600])

    def mse():
        pred = [fc.predict(1, series=series[:t])[0] for t in range(600, 800)]
        return float(np.mean((np.asarray(pred) - series[600:800]) ** 2))

    errors = _scores(lambda d: fc.set_params(inference_dtype=d), mse)
    for kind in KINDS:
        assert abs(errors[kind] / errors[None] - 1) <= 0.02, errors


@pytest.mark.parametrize("name", ["fastrnn-int8", "fastrnn-bf16"])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_benchmark_contenders_with_reduced_weights(name, cell):
    from fastrnn.benchmark import CONTENDERS, INFERENCE_ONLY, random_weights
    case = dict(cell=cell, B=3, T=5, I=4, H=8)
    weights = random_weights(case)
    X = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
    reduced = CONTENDERS[name](case, 1, weights, X)
    assert set(reduced) == {"inference"} and name in INFERENCE_ONLY
    Y = reduced["inference"]()[0]
    Y_fp32 = CONTENDERS["fastrnn"](case, 1, weights, X)["inference"]()[0]
    assert 0 < np.abs(Y - Y_fp32).max() < 0.05


def test_inference_dtype_saves_and_loads(tmp_path):
    import fastrnn
    X, y, _ = load_digits_sequences()
    clf = FastGRUClassifier(hidden_size=8, max_iter=1, random_state=0,
                            inference_dtype="bfloat16").fit(X[:100], y[:100])
    clf.save(tmp_path / "clf.npz")
    loaded = fastrnn.load(tmp_path / "clf.npz")
    assert loaded.inference_dtype == "bfloat16"
    np.testing.assert_array_equal(loaded.predict_proba(X[:20]), clf.predict_proba(X[:20]))
    assert not np.array_equal(loaded.set_params(inference_dtype=None).predict_proba(X[:20]),
                              clf.predict_proba(X[:20]))
