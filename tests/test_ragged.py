"""Ragged batches (lengths): the kernels skip the padding, and their results
are those of PyTorch's packed sequences and of every sample run alone."""
import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import GRU, LSTM, RNN

CELLS = [("lstm", LSTM, {}), ("gru", GRU, {}), ("rnn_tanh", RNN, {}),
         ("rnn_relu", RNN, {"nonlinearity": "relu"})]
CELL_IDS = [c[0] for c in CELLS]
T = 8
LENGTHS = {  # odd mixes; T = 8
    "ones": [1, 1, 1, 1, 1],
    "with_ones": [3, 1, 8, 1, 5],
    "all_equal_short": [5, 5, 5, 5, 5],
    "one_long": [1, 2, 8, 1, 2],
    "unsorted_ties": [4, 6, 4, 6, 2],
}


def _torch_module(torch, cell, I, H, num_layers, dtype):
    kinds = {"lstm": (torch.nn.LSTM, {}), "gru": (torch.nn.GRU, {}),
             "rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}),
             "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"})}
    cls, kw = kinds[cell]
    module = cls(I, H, num_layers=num_layers, bidirectional=True, batch_first=True, **kw)
    return module.to(torch.float64 if dtype == np.float64 else torch.float32)


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", sorted(LENGTHS))
def test_ragged_bidirectional_2layers_matches_pytorch_packed(torch, cell, cls, kw, dtype, case,
                                                             rng):
    _check_against_packed(torch, cell, cls, kw, dtype, np.array(LENGTHS[case]), T, 3, 5, rng)


# I=320, H=96: every sample's own projection is past OpenBLAS's small-matrix
# bound (length * I * G*H > 1e6), so the first layer projects X's valid rows
# gathered, in one GEMM (fr_gathered_projection); the second layer (I = 2H)
# does so for LSTM and GRU, one GEMM per sample for RNN
WIDE = dict(T=40, I=320, H=96, lengths=[40, 34, 37, 35, 40, 34, 39, 36])


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_wide_ragged_input_projected_in_one_gemm_matches_pytorch_packed(torch, cell, cls, kw,
                                                                        dtype, rng):
    _check_against_packed(torch, cell, cls, kw, dtype, np.array(WIDE["lengths"]), WIDE["T"],
                          WIDE["I"], WIDE["H"], rng)


@pytest.mark.parametrize("training", [False, True])
def test_a_ragged_projection_sizes_its_gates_by_the_valid_steps(training):
    cell, B, T, I, H = _kernels.CELLS["lstm"], 4, 100, 512, 128
    short = np.array([17, 100, 20, 16], np.int32)  # 17 * 512 * 512 > 1e6
    tiny = np.array([1, 100, 20, 16], np.int32)    # 1 * 512 * 512 < 1e6
    size = {name: _kernels.workspace_size(cell=cell, B=B, T=T, I=I, H=H, training=training,
                                          lengths=lens) for name, lens in
            (("short", short), ("tiny", tiny))}
    # gathered: gates for the valid rows (153 and 137, + their X rows at
    # inference); one BLAS GEMM per sample: the time-major grid, B * longest =
    # 400 rows. The packed kernel's rows never depend on the GEMM's shape, so
    # it always gathers; BLAS only when each sample's GEMM is past OpenBLAS's
    # small-matrix bound (the tiny sample's is not).
    if _kernels.packed_enabled():
        per_row = 4 * H + I + (3 * H if training else 0)  # gates, X; training: h, c, tanh(c)
        assert size["short"] - size["tiny"] == (153 - 137) * per_row
    else:
        assert size["tiny"] - size["short"] >= (400 - 153) * 4 * H - 153 * I


def _check_against_packed(torch, cell, cls, kw, dtype, lengths, T, I, H, rng):
    torch.manual_seed(0)
    B = len(lengths)
    module = _torch_module(torch, cell, I, H, 2, dtype)
    stack = cls(I, H, num_layers=2, bidirectional=True, dtype=dtype, **kw)
    stack.load_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})
    X = rng.normal(size=(B, T, I)).astype(dtype)
    h0 = (rng.normal(size=(4, B, H)) * 0.5).astype(dtype)
    c0 = (rng.normal(size=(4, B, H)) * 0.5).astype(dtype)
    lstm = cell == "lstm"
    Y, state = stack.forward(X, lengths=lengths, h0=h0, c0=c0 if lstm else None, training=True)

    Xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (X, h0, c0))
    packed = torch.nn.utils.rnn.pack_padded_sequence(Xt, torch.tensor(lengths),
                                                     batch_first=True, enforce_sorted=False)
    out, state_t = module(packed, (h0t, c0t) if lstm else h0t)
    Yt, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    hN_t = state_t[0] if lstm else state_t
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(Y, Yt.detach().numpy(), **tol)
    np.testing.assert_allclose(state.h, hN_t.detach().numpy(), **tol)
    if lstm:
        np.testing.assert_allclose(state.c, state_t[1].detach().numpy(), **tol)

    wY = rng.normal(size=Y.shape).astype(dtype)
    wh = rng.normal(size=state.h.shape).astype(dtype)
    loss_t = (Yt * torch.tensor(wY)).sum() + (hN_t * torch.tensor(wh)).sum()
    if lstm:
        loss_t = loss_t + (state_t[1] * torch.tensor(wh)).sum()
    loss_t.backward()
    dX, dstate = stack.backward(wY, wh, wh if lstm else None)
    gtol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
    for name, p in module.named_parameters():
        expected = p.grad.numpy()
        # a weight gradient sums a product over every valid step: its float32
        # rounding grows with the terms' size (wide layers: |grad| up to ~20)
        atol = gtol["atol"] * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(stack.grads[name], expected, err_msg=name,
                                   rtol=gtol["rtol"], atol=atol)
    np.testing.assert_allclose(dX, Xt.grad.numpy(), **gtol)
    np.testing.assert_allclose(dstate.h, h0t.grad.numpy(), **gtol)
    if lstm:
        np.testing.assert_allclose(dstate.c, c0t.grad.numpy(), **gtol)
    for b, n in enumerate(lengths):  # padding: exactly 0 out, exactly 0 back
        assert np.all(Y[b, n:] == 0) and np.all(dX[b, n:] == 0)


def _alone(stack, X, lengths, h0, c0, wY, wh):
    """Every sample alone, cut to its length: outputs, states, gradients summed."""
    Ys, hs, cs, dXs, dhs, dcs = [], [], [], [], [], []
    grads = np.zeros_like(stack.flat_grads)
    for b, n in enumerate(lengths):
        stack.zero_grad()
        Y, state = stack.forward(X[b:b + 1, :n], h0=h0[:, b:b + 1],
                                 c0=None if c0 is None else c0[:, b:b + 1], training=True)
        dX, dstate = stack.backward(wY[b:b + 1, :n], wh[:, b:b + 1],
                                    None if c0 is None else wh[:, b:b + 1])
        grads += stack.flat_grads
        pad = ((0, 0), (0, X.shape[1] - n), (0, 0))
        Ys.append(np.pad(Y, pad))
        dXs.append(np.pad(dX, pad))
        hs.append(state.h), dhs.append(dstate.h)
        cs.append(state.c), dcs.append(dstate.c)
    cat = (lambda parts, axis: None if parts[0] is None else np.concatenate(parts, axis))
    return (cat(Ys, 0), cat(hs, 1), cat(cs, 1), cat(dXs, 0), cat(dhs, 1), cat(dcs, 1), grads)


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_a_ragged_batch_gives_each_sample_its_result_alone(cell, cls, kw, n_threads, dtype, rng):
    # B=64 with H=96: large enough for two threads; the odd lengths put samples
    # at every row position of the 8/4/1-row kernels as shorter ones drop out
    B, T_max = 64, 11
    lengths = np.concatenate([[T_max], rng.integers(1, T_max + 1, B - 1)])
    _check_alone(cls, kw, lengths, T_max, 6, 96, n_threads, dtype, rng)


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_a_wide_ragged_batch_projected_in_one_gemm_gives_each_sample_its_result_alone(
        cell, cls, kw, n_threads, rng):
    _check_alone(cls, kw, np.array(WIDE["lengths"]), WIDE["T"], WIDE["I"], WIDE["H"], n_threads,
                 np.float32, rng)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("H", [64, 256])
def test_short_samples_of_a_wide_layer_keep_their_own_projection_gemms(n_threads, H, rng):
    # I=520 > 384 (two of OpenBLAS's K blocks) and samples of 1-4 steps:
    # alone, such a sample's projection (at most 4 * 4H * 520 multiply-adds)
    # may run in OpenBLAS's small-matrix kernel, which rounds otherwise than
    # one GEMM over the whole batch would; the per-sample GEMMs keep it
    # identical, and the dense call alone keeps it in one thread's GEMM
    # rather than splitting it below the bound (H=256, 2 threads: it did)
    _check_alone(LSTM, {}, np.array([1, 6, 2, 9, 4, 3, 9, 1]), 9, 520, H, n_threads,
                 np.float32, rng)


def _check_alone(cls, kw, lengths, T_max, I, H, n_threads, dtype, rng):
    cell = cls.__name__.lower()
    B = len(lengths)
    stack = cls(I, H, num_layers=2, bidirectional=True, dtype=dtype, random_state=0,
                n_threads=n_threads, **kw)
    X = rng.normal(size=(B, T_max, I)).astype(dtype)
    h0 = (rng.normal(size=(4, B, H)) * 0.5).astype(dtype)
    c0 = (rng.normal(size=(4, B, H)) * 0.5).astype(dtype) if cell == "lstm" else None
    wY = rng.normal(size=(B, T_max, 2 * H)).astype(dtype)
    wh = rng.normal(size=(4, B, H)).astype(dtype)
    stack.zero_grad()
    Y, state = stack.forward(X, lengths=lengths, h0=h0, c0=c0, training=True)
    dX, dstate = stack.backward(wY, wh, None if c0 is None else wh)
    grads = stack.flat_grads.copy()
    Y1, h1, c1, dX1, dh1, dc1, grads1 = _alone(stack, X, lengths, h0, c0, wY, wh)
    if dtype == np.float32:
        # bit for bit (batch invariance): OpenBLAS's sgemm rows do not depend on
        # their neighbours; its dgemm's can, in the last bit (float64 below)
        np.testing.assert_array_equal(Y, Y1)
        np.testing.assert_array_equal(state.h, h1)
        if c0 is not None:
            np.testing.assert_array_equal(state.c, c1)
        tol = dict(rtol=1e-4, atol=1e-5)  # gradients: sums in another order
    else:
        np.testing.assert_allclose(Y, Y1, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(state.h, h1, rtol=1e-13, atol=1e-13)
        if c0 is not None:
            np.testing.assert_allclose(state.c, c1, rtol=1e-13, atol=1e-13)
        tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dX, dX1, **tol)
    np.testing.assert_allclose(dstate.h, dh1, **tol)
    if c0 is not None:
        np.testing.assert_allclose(dstate.c, dc1, **tol)
    np.testing.assert_allclose(grads, grads1, **tol)


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("T,I,H,lengths", [(7, 4, 40, [7, 1, 3, 7, 2, 1, 5]),
                                           tuple(WIDE.values())], ids=["narrow", "wide"])
def test_ragged_inference_equals_training_forward_in_float32(cell, cls, kw, T, I, H, lengths,
                                                             rng):
    lengths = np.array(lengths)
    stack = cls(I, H, num_layers=2, bidirectional=True, random_state=0, **kw)
    X = rng.normal(size=(len(lengths), T, I)).astype(np.float32)
    Y_inf, s_inf = stack.forward(X, lengths=lengths)
    Y_tr, s_tr = stack.forward(X, lengths=lengths, training=True)
    np.testing.assert_array_equal(Y_inf, Y_tr)
    np.testing.assert_array_equal(s_inf.h, s_tr.h)


@pytest.mark.parametrize("training", [False, True])
def test_ragged_workspaces_grow_with_the_steps_run_not_the_padding(training):
    cell, B, T, I, H = _kernels.CELLS["lstm"], 4, 100, 8, 16
    lengths = np.array([10, 5, 1, 4], np.int32)  # 20 of 400 steps, the longest 10
    dense = _kernels.workspace_size(cell=cell, B=B, T=T, I=I, H=H, training=training)
    ragged = _kernels.workspace_size(cell=cell, B=B, T=T, I=I, H=H, training=training,
                                     lengths=lengths)
    assert ragged < dense * 0.12
    full = np.full(B, T, np.int32)  # every sample full length: the dense layout
    assert _kernels.workspace_size(cell=cell, B=B, T=T, I=I, H=H, training=training,
                                   lengths=full) == dense
    dense_b = _kernels.backward_workspace_size(cell=cell, B=B, T=T, I=I, H=H)
    assert _kernels.backward_workspace_size(cell=cell, B=B, T=T, I=I, H=H,
                                            lengths=lengths) < dense_b / 10


def test_forward_refuses_a_workspace_sized_for_fewer_steps(rng):
    cell, B, T, I, H = _kernels.CELLS["gru"], 3, 6, 2, 4
    f32 = np.float32
    short = np.array([1, 1, 1], np.int32)
    ws = np.zeros(_kernels.workspace_size(cell=cell, B=B, T=T, I=I, H=H, training=True,
                                          lengths=short), f32)
    W = rng.normal(size=(3 * H, I)).astype(f32)
    U = rng.normal(size=(3 * H, H)).astype(f32)
    b = np.zeros(3 * H, f32)
    with pytest.raises(ValueError, match="workspace"):
        _kernels.forward(cell=cell, X=np.zeros((B, T, I), f32), W_ih=W, W_hh=U, b_ih=b, b_hh=b,
                         h0=None, c0=None, Y=np.zeros((B, T, H), f32), y_col=0,
                         hN=np.zeros((B, H), f32), cN=None, lengths=np.array([6, 1, 1], np.int32),
                         reverse=False, ws=ws, training=True, n_threads=1)


def test_benchmark_ragged_cases_have_the_fills_issue_9_names():
    from fastrnn.benchmark import GRID, case_lengths, valid_steps
    fills = {}
    for case in GRID["ragged"]:
        lengths = case_lengths(case)
        assert lengths.shape == (case["B"],) and 1 <= lengths.min() <= lengths.max() <= case["T"]
        fills[case["lengths"]] = valid_steps(case) / (case["B"] * case["T"])
    assert 0.25 <= fills["lognormal"] <= 0.35 and 0.7 <= fills["uniform"] <= 0.8


# ---------------------------------------------------------------------------------------------
# estimators on lists of sequences of different lengths (issue 9 items 1 and 3)

def _ragged_task(rng, tokens, n=24, n_classes=2):
    lengths = np.concatenate([[1, 1, 9], rng.integers(1, 10, n - 3)])
    if tokens:
        X = [rng.integers(0, 6, L) for L in lengths]
        signal = [x.sum() for x in X]
    else:
        X = [rng.normal(size=(L, 2)) for L in lengths]
        signal = [x[:, 0].sum() for x in X]
    labels = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1]))
    return X, labels, np.asarray(signal, dtype=float)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("task,n_classes", [("classifier", 2), ("classifier", 5),
                                            ("regressor", 1)])
@pytest.mark.parametrize("tokens", [False, True], ids=["float", "tokens"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_sequence_predictions_on_a_ragged_list_equal_each_sequence_alone(
        cell, task, n_classes, tokens, bidirectional, rng):
    import warnings

    import fastrnn
    X, labels, signal = _ragged_task(rng, tokens, n_classes=n_classes)
    y = labels if task == "classifier" else signal
    est = getattr(fastrnn, f"Fast{cell}{task.capitalize()}")(
        hidden_size=3, max_iter=2, bidirectional=bidirectional, random_state=0,
        embedding_dim=3 if tokens else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    methods = ["predict"] + (["predict_proba", "predict_log_proba"] if task == "classifier"
                             else [])
    for method in methods:
        together = getattr(est, method)(X)
        alone = np.concatenate([getattr(est, method)([x]) for x in X])
        expected_shape = (len(X), n_classes) if method != "predict" else (len(X),)
        assert np.shape(together) == expected_shape, method
        if method == "predict" and task == "classifier":
            np.testing.assert_array_equal(together, alone)
        else:
            np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-6, err_msg=method)
    expected = (np.mean(est.predict(X) == y) if task == "classifier"
                else fastrnn._base.r2_score(y, est.predict(X)))
    assert est.score(X, y) == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("per_step", [False, True], ids=["sequence", "per-step"])
def test_long_sequences_predict_in_smaller_batches_with_the_same_result(per_step, rng,
                                                                        monkeypatch):
    import fastrnn
    X = [rng.normal(size=(L, 2)) for L in rng.integers(1, 40, 150)]
    y = ([rng.integers(0, 2, len(x)) for x in X] if per_step
         else rng.integers(0, 3, len(X)))
    clf = fastrnn.FastGRUClassifier(hidden_size=4, max_iter=1, random_state=0).fit(X, y)
    one_batch = clf.predict_proba(X)
    monkeypatch.setattr(fastrnn._base, "PREDICT_ELEMENTS", 64 * 39 * 4)
    assert clf._predict_rows(39) == 64  # 150 sequences now take 3 batches
    monkeypatch.setattr(fastrnn._base, "PREDICT_ELEMENTS", 1)
    assert clf._predict_rows(39) == 64  # never fewer than 64 samples
    monkeypatch.setattr(fastrnn._base, "PREDICT_ELEMENTS", 1 << 40)
    assert clf._predict_rows(39) == fastrnn._base.PREDICT_BATCH
    monkeypatch.setattr(fastrnn._base, "PREDICT_ELEMENTS", 64 * 39 * 4)
    batched = clf.predict_proba(X)
    for a, b in zip(batched, one_batch):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_generator_scores_a_list_as_its_sequences_alone():
    from fastrnn import SequenceGenerator
    docs = ["abcabc", "ab", "cabbacab", "a"]
    gen = SequenceGenerator(hidden_size=8, embedding_dim=4, seq_len=5, max_iter=2,
                            random_state=0).fit(docs)
    alone = [gen.score([d]) for d in docs]
    tokens = np.array([len(d) + 1 for d in docs])  # each with its end marker
    assert gen.score(docs) == pytest.approx(np.dot(alone, tokens) / tokens.sum(), rel=1e-6)


def test_length_batches_group_similar_lengths_and_cover_every_sample_once():
    from fastrnn import _data
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 400, 1000)
    idx = np.arange(1000) * 2  # sample indices need not be positions
    batches = _data.length_batches(idx, lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == idx.tolist()
    assert max(len(b) for b in batches) == 32
    by_index = dict(zip(idx, lengths))
    spread = np.mean([np.ptp([by_index[i] for i in b]) for b in batches])
    assert spread < 120  # buckets of 8 batches: about 100; random batches: about 370
    again = _data.length_batches(idx, lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    fixed = _data.length_batches(idx, lengths, 32, None)  # no shuffling: shortest first
    assert np.all(np.diff([by_index[b[0]] for b in fixed]) >= 0)


def test_length_bucketing_trains_as_well_as_random_batches_and_reproducibly():
    import warnings

    from fastrnn import FastGRUClassifier
    rng = np.random.default_rng(3)
    lengths = rng.integers(2, 40, 300)
    X = [rng.normal(size=(L, 1)) for L in lengths]
    y = np.array([int(x[0, 0] > 0) for x in X])  # the first step decides
    scores, curves = {}, {}
    for bucketing in (True, True, False):
        est = FastGRUClassifier(hidden_size=8, max_iter=25, batch_size=16,
                                learning_rate_init=0.02, length_bucketing=bucketing,
                                bidirectional=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X[:200], y[:200])
        if bucketing in curves:  # random_state reproduces the fit
            assert est.loss_curve_ == curves[bucketing]
        curves[bucketing] = est.loss_curve_
        scores[bucketing] = est.score(X[200:], y[200:])
    assert curves[True] != curves[False]  # the batches did differ
    assert min(scores.values()) >= 0.9 and abs(scores[True] - scores[False]) <= 0.05


def test_length_bucketing_is_a_documented_constructor_parameter():
    from fastrnn import FastLSTMClassifier
    est = FastLSTMClassifier()
    assert est.get_params()["length_bucketing"] is True
    assert "length_bucketing : bool, default=True" in FastLSTMClassifier.__doc__
    with pytest.raises(ValueError, match="length_bucketing"):
        FastLSTMClassifier(length_bucketing="yes").fit([np.ones((2, 1)), np.ones((3, 1))],
                                                       [0, 1])


def test_ragged_shapes_whose_gate_grid_overflows_blas_ints_are_refused():
    cell, B, T, H = _kernels.CELLS["lstm"], 2 ** 20, 2, 1024  # B*4*H = 2**32
    assert _kernels.workspace_size(cell=cell, B=B, T=T, I=1, H=H, training=False) > 0
    lengths = np.full(B, T, np.int32)
    lengths[0] = 1
    with pytest.raises(ValueError, match="32-bit"):
        _kernels.workspace_size(cell=cell, B=B, T=T, I=1, H=H, training=False, lengths=lengths)
