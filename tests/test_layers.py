"""The recurrent stacks: C kernels vs the NumPy reference, finite differences,
the PyTorch oracle, thread counts and input checks."""
import numpy as np
import pytest

from fastrnn import _kernels, reference
from fastrnn.reference import numeric_grad
from fastrnn.layers import GRU, LSTM, RNN

CELLS = [("lstm", LSTM, {}), ("gru", GRU, {}), ("rnn_tanh", RNN, {}),
         ("rnn_relu", RNN, {"nonlinearity": "relu"})]
CELL_IDS = [c[0] for c in CELLS]


def make_stack(cls, kw, input_size=3, hidden_size=4, dtype=np.float64, seed=0, **more):
    return cls(input_size, hidden_size, dtype=dtype, random_state=seed, **kw, **more)


# ---------------------------------------------------------------------------------------------
# activations


def test_float32_activations_are_accurate_and_nan_safe():
    x = np.concatenate([np.linspace(-100, 100, 200001), [-1e30, 1e30, -np.inf, np.inf, 0.0,
                                                          -0.0, 1e-30, -1e-30]])
    x = x.astype(np.float32)
    exact = x.astype(np.float64)
    sig, tanh = _kernels.sigmoid_f32(x), _kernels.tanh_f32(x)
    assert np.all(np.isfinite(sig)) and np.all(np.isfinite(tanh))
    with np.errstate(over="ignore"):
        assert np.max(np.abs(sig - 1 / (1 + np.exp(-exact)))) <= 1e-6
    assert np.max(np.abs(tanh - np.tanh(exact))) <= 1e-6
    assert np.isnan(_kernels.sigmoid_f32(np.array([np.nan], np.float32)))[0]
    assert np.isnan(_kernels.tanh_f32(np.array([np.nan], np.float32)))[0]


# ---------------------------------------------------------------------------------------------
# kernels against the NumPy reference (float64, 1e-10)


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_forward_matches_numpy_reference(cell, cls, kw, bidirectional, with_lengths, rng):
    stack = make_stack(cls, kw, num_layers=2, bidirectional=bidirectional)
    X = rng.normal(size=(5, 7, 3))
    lengths = np.array([7, 1, 4, 7, 2]) if with_lengths else None
    L = 2 * stack.num_directions
    h0 = rng.normal(size=(L, 5, 4))
    c0 = rng.normal(size=(L, 5, 4)) if cell == "lstm" else None
    for training in (False, True):
        Y, state = stack.forward(X, lengths=lengths, h0=h0, c0=c0, training=training)
        Y_ref, h_ref, c_ref = reference.stack_forward(cell, stack.params, X, 2, bidirectional,
                                                      lengths, h0, c0)
        np.testing.assert_allclose(Y, Y_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(state.h, h_ref, rtol=0, atol=1e-10)
        if cell == "lstm":
            np.testing.assert_allclose(state.c, c_ref, rtol=0, atol=1e-10)
        if with_lengths:
            for b, n in enumerate(lengths):
                assert np.all(Y[b, n:] == 0)


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
def test_float32_forward_close_to_reference(cell, cls, kw, rng):
    stack = make_stack(cls, kw, input_size=6, hidden_size=16, dtype=np.float32)
    X = rng.normal(size=(8, 20, 6)).astype(np.float32)
    Y, _ = stack.forward(X)
    Y_ref, _, _ = reference.stack_forward(cell, stack.params, X)
    np.testing.assert_allclose(Y, Y_ref, rtol=1e-5, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# gradients by central differences (float64)


def _loss_and_grads(stack, X, lengths, h0, c0, weights):
    """loss = <Y, wY> + <hN, wh> (+ <cN, wc>) and its analytic gradients."""
    stack.zero_grad()
    Y, state = stack.forward(X, lengths=lengths, h0=h0, c0=c0, training=True)
    hN, cN = state
    lstm = cN is not None
    loss = np.sum(Y * weights["Y"]) + np.sum(hN * weights["h"])
    if lstm:
        loss += np.sum(cN * weights["c"])
    dX, dstate = stack.backward(weights["Y"], weights["h"], weights["c"] if lstm else None)
    return loss, dX, dstate


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("config", ["plain", "lengths", "bidirectional_2layers"])
def test_gradients_match_finite_differences(cell, cls, kw, config, rng):
    bidirectional = config == "bidirectional_2layers"
    num_layers = 2 if bidirectional else 1
    stack = make_stack(cls, kw, num_layers=num_layers, bidirectional=bidirectional)
    B, T = 3, 5
    X = rng.normal(size=(B, T, 3))
    lengths = np.array([5, 2, 4]) if config != "plain" else None
    L = num_layers * stack.num_directions
    h0 = rng.normal(size=(L, B, 4)) * 0.5
    c0 = rng.normal(size=(L, B, 4)) * 0.5 if cell == "lstm" else None
    D = stack.num_directions
    weights = {"Y": rng.normal(size=(B, T, D * 4)), "h": rng.normal(size=(L, B, 4)),
               "c": rng.normal(size=(L, B, 4))}
    if cell == "rnn_relu":  # keep pre-activations away from the kink at 0
        stack.flat_params[:] = np.abs(stack.flat_params) + 0.05
        X, h0 = np.abs(X), np.abs(h0)
    _, dX, dstate = _loss_and_grads(stack, X, lengths, h0, c0, weights)
    grads = {k: v.copy() for k, v in stack.grads.items()}

    def loss():
        return _loss_and_grads(stack, X, lengths, h0, c0, weights)[0]

    for name, param in stack.params.items():
        np.testing.assert_allclose(grads[name], numeric_grad(loss, param), rtol=1e-5,
                                   atol=1e-7, err_msg=name)
    np.testing.assert_allclose(dX, numeric_grad(loss, X), rtol=1e-5, atol=1e-7)
    dh0 = dstate.h
    np.testing.assert_allclose(dh0, numeric_grad(loss, h0), rtol=1e-5, atol=1e-7)
    if cell == "lstm":
        np.testing.assert_allclose(dstate.c, numeric_grad(loss, c0), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# PyTorch oracle


def _torch_module(torch, cell, input_size, hidden_size, num_layers, bidirectional, dtype):
    kinds = {"lstm": (torch.nn.LSTM, {}), "gru": (torch.nn.GRU, {}),
             "rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}),
             "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"})}
    cls, kw = kinds[cell]
    module = cls(input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                 batch_first=True, **kw)
    return module.to(torch.float64 if dtype == np.float64 else torch.float32)


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", ["1layer", "2layers", "bidirectional", "lengths",
                                    "bidirectional_2layers_lengths", "wide_lengths"])
def test_matches_pytorch(torch, cell, cls, kw, dtype, config, rng):
    # "wide": I + H above FR_JOINT_DW_MAX_COLS (256), so LSTM and RNN take
    # dW_ih and dW_hh from a GEMM each, not one joint GEMM as the others
    torch.manual_seed(0)
    num_layers = 2 if "2layers" in config else 1
    bidirectional = "bidirectional" in config
    B, T, I, H = (6, 9, 60, 200) if "wide" in config else (6, 9, 5, 8)
    module = _torch_module(torch, cell, I, H, num_layers, bidirectional, dtype)
    stack = cls(I, H, num_layers=num_layers, bidirectional=bidirectional, dtype=dtype, **kw)
    stack.load_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})

    X = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = np.array([9, 3, 7, 1, 9, 5]) if "lengths" in config else None
    L = num_layers * stack.num_directions
    h0 = (rng.normal(size=(L, B, H)) * 0.5).astype(dtype)
    c0 = (rng.normal(size=(L, B, H)) * 0.5).astype(dtype)
    Y, state = stack.forward(X, lengths=lengths, h0=h0, c0=c0 if cell == "lstm" else None,
                             training=True)

    Xt = torch.tensor(X, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    init = (h0t, c0t) if cell == "lstm" else h0t
    if lengths is None:
        Yt, state_t = module(Xt, init)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            Xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        out, state_t = module(packed, init)
        Yt, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)

    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(Y, Yt.detach().numpy(), **tol)
    hN_t = state_t[0] if cell == "lstm" else state_t
    np.testing.assert_allclose(state.h, hN_t.detach().numpy(), **tol)
    if cell == "lstm":
        np.testing.assert_allclose(state.c, state_t[1].detach().numpy(), **tol)

    wY = rng.normal(size=Y.shape).astype(dtype)
    wh = rng.normal(size=(L, B, H)).astype(dtype)
    loss_t = (Yt * torch.tensor(wY)).sum() + (hN_t * torch.tensor(wh)).sum()
    if cell == "lstm":
        loss_t = loss_t + (state_t[1] * torch.tensor(wh)).sum()
    loss_t.backward()
    dX, dstate = stack.backward(wY, wh, wh if cell == "lstm" else None)
    gtol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(stack.grads[name], p.grad.numpy(), err_msg=name, **gtol)
    np.testing.assert_allclose(dX, Xt.grad.numpy(), **gtol)
    np.testing.assert_allclose(dstate.h, h0t.grad.numpy(), **gtol)
    if cell == "lstm":
        np.testing.assert_allclose(dstate.c, c0t.grad.numpy(), **gtol)


# ---------------------------------------------------------------------------------------------
# threads, state dict, input checks


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
def test_one_and_two_threads_agree(cell, cls, kw, rng):
    # large enough that every cell really runs on two threads (FR_PAR_MIN_MACS)
    X = rng.normal(size=(64, 6, 10)).astype(np.float32)
    results = []
    for n_threads in (1, 2):
        stack = make_stack(cls, kw, input_size=10, hidden_size=300, dtype=np.float32,
                           n_threads=n_threads, bidirectional=True)
        Y, _ = stack.forward(X, lengths=np.arange(64) % 6 + 1, training=True)
        dX, _ = stack.backward(np.ones_like(Y))
        results.append((Y, dX, stack.flat_grads.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
def test_a_sample_gives_the_same_output_alone_or_in_a_batch(cell, cls, kw, rng):
    # 13 rows run through the 8-row, 4-row and 1-row kernel paths
    stack = make_stack(cls, kw, input_size=10, hidden_size=96, dtype=np.float32)
    X = rng.normal(size=(13, 7, 10)).astype(np.float32)
    Y, _ = stack.forward(X)
    alone = np.concatenate([stack.forward(X[i:i + 1])[0] for i in range(len(X))])
    np.testing.assert_array_equal(Y, alone)


def test_state_dict_round_trip_and_names():
    lstm = LSTM(3, 4, num_layers=2, bidirectional=True, random_state=1)
    state = lstm.state_dict()
    assert sorted(state) == sorted(
        f"{w}_l{k}{s}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for k in (0, 1) for s in ("", "_reverse"))
    assert state["weight_ih_l1_reverse"].shape == (16, 8)
    other = LSTM(3, 4, num_layers=2, bidirectional=True, random_state=2)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.flat_params, lstm.flat_params)
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if k != "bias_hh_l0"})
    bad = dict(state, weight_hh_l0=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(bad)
    with pytest.raises(ValueError, match="NaN"):
        other.load_state_dict(dict(state, bias_ih_l0=np.full(16, np.nan)))


def test_bad_input_raises_clear_errors():
    lstm = LSTM(3, 4)
    good = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="3-D"):
        lstm.forward(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="features"):
        lstm.forward(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="empty"):
        lstm.forward(np.zeros((0, 5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        lstm.forward(np.full((2, 5, 3), np.nan))
    with pytest.raises(ValueError, match="dtype"):
        lstm.forward(np.array([[["a", "b", "c"]]]))
    with pytest.raises(ValueError, match="lengths"):
        lstm.forward(good, lengths=[5, 6])
    with pytest.raises(ValueError, match="lengths"):
        lstm.forward(good, lengths=[0, 5])
    with pytest.raises(ValueError, match="h0"):
        lstm.forward(good, h0=np.zeros((1, 3, 4)))
    with pytest.raises(RuntimeError, match="training"):
        lstm.backward(np.zeros((2, 5, 4)))
    lstm.forward(good, training=True)
    with pytest.raises(ValueError, match="dY"):
        lstm.backward(np.zeros((2, 5, 5)))
    with pytest.raises(ValueError):
        LSTM(3, 0)
    with pytest.raises(ValueError):
        LSTM(3, 4, dropout=1.0)
    with pytest.raises(ValueError):
        LSTM(3, 4, dtype=np.int32)
    with pytest.raises(ValueError):
        RNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("cell,cls,kw", CELLS[1:], ids=CELL_IDS[1:])
def test_a_cell_state_for_a_stack_without_one_is_refused(cell, cls, kw):
    stack = make_stack(cls, kw, dtype=np.float32)
    X = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="c0 is the LSTM's cell state"):
        stack.forward(X, c0=np.zeros((1, 2, 4), np.float32))
    Y, state = stack.forward(X, h0=np.zeros((1, 2, 4), np.float32))
    assert state.c is None and Y.shape == (2, 3, 4)


def test_bindings_refuse_wrong_buffers():
    X = np.zeros((2, 3, 4), np.float32)
    W_ih, W_hh = np.zeros((16, 4), np.float32), np.zeros((16, 4), np.float32)
    b = np.zeros(16, np.float32)
    Y, hN, cN = np.zeros((2, 3, 4), np.float32), np.zeros((2, 4), np.float32), \
        np.zeros((2, 4), np.float32)
    ws = np.zeros(_kernels.workspace_size(cell=_kernels.CELLS["lstm"], B=2, T=3, I=4, H=4,
                                          training=True), np.float32)
    args = dict(cell=0, X=X, W_ih=W_ih, W_hh=W_hh, b_ih=b, b_hh=b, h0=None, c0=None, Y=Y,
                y_col=0, hN=hN, cN=cN, lengths=None, reverse=False, ws=ws, training=True,
                n_threads=1)
    _kernels.forward(**args)  # the good call works
    for name, bad, match in [("W_ih", W_ih.astype(np.float64), "dtype"),
                             ("W_ih", np.zeros((4, 16), np.float32).T, "contiguous"),
                             ("W_hh", np.zeros((12, 4), np.float32), "shape"),
                             ("ws", ws[:5], "workspace"),
                             ("cN", None, "required")]:
        with pytest.raises(ValueError, match=match):
            _kernels.forward(**{**args, name: bad})


@pytest.mark.parametrize("B,T,H", [(2**16, 2**15 + 1, 8), (4, 2**20, 2**10), (1, 1, 2**30)])
def test_sizes_overflowing_blas_ints_are_refused(B, T, H):
    with pytest.raises(ValueError, match="32-bit"):
        _kernels.check_shape(cell=_kernels.CELLS["lstm"], B=B, T=T, I=8, H=H)
    with pytest.raises(ValueError, match="32-bit"):
        _kernels.workspace_size(cell=_kernels.CELLS["lstm"], B=B, T=T, I=8, H=H, training=True)
