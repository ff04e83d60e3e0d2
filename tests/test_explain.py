"""Attributions (fastrnn.explain) and the kernels' dX-only backward they run on."""
import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import GRU, LSTM, RNN
from fastrnn.network import Network

STACKS = [(LSTM, {}), (GRU, {}), (RNN, {}), (RNN, {"nonlinearity": "relu"})]
STACK_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


# ---------------------------------------------------------------------------------------------
# the dX-only backward: no weight gradient computed, dX unchanged


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", STACKS, ids=STACK_IDS)
def test_input_grad_only_gives_the_full_backwards_dx_and_leaves_grads(cls, kw, dtype, rng):
    stack = cls(3, 5, num_layers=2, bidirectional=True, dtype=dtype, n_threads=2,
                random_state=0, **kw)
    X = rng.normal(size=(6, 7, 3))
    lengths = [7, 5, 1, 7, 3, 2]
    dY = rng.normal(size=(6, 7, 10))
    dhN = rng.normal(size=(4, 6, 5))
    stack.forward(X, lengths=lengths, training=True)
    dX_full, dstate_full = stack.backward(dY, dhN)

    stack.flat_grads[:] = rng.normal(size=stack.flat_grads.size)
    before = stack.flat_grads.copy()
    stack.forward(X, lengths=lengths, keep_for_backward=True)
    dX, dstate = stack.backward(dY, dhN, input_grad_only=True)
    np.testing.assert_array_equal(dX, dX_full)
    np.testing.assert_array_equal(dstate.h, dstate_full.h)
    np.testing.assert_array_equal(stack.flat_grads, before)


def test_keep_for_backward_applies_no_dropout(rng):
    stack = LSTM(3, 4, num_layers=3, dropout=0.5, random_state=0)
    X = rng.normal(size=(4, 5, 3)).astype(np.float32)
    Y_infer, _ = stack.forward(X)
    Y_kept, _ = stack.forward(X, keep_for_backward=True)
    np.testing.assert_array_equal(Y_kept, Y_infer)


def test_network_input_gradient_matches_a_finite_difference(rng):
    net = Network("gru", input_size=2, hidden_size=4, output_size=3, num_layers=2,
                  bidirectional=True, dtype=np.float64, random_state=0)
    X = rng.normal(size=(3, 5, 2))
    d_out = rng.normal(size=(3, 3))
    net.forward(X, keep_for_backward=True)
    before = net.flat_grads.copy()
    grad = net.input_gradient(d_out)
    np.testing.assert_array_equal(net.flat_grads, before)
    eps, i = 1e-6, (1, 2, 0)
    X_plus, X_minus = X.copy(), X.copy()
    X_plus[i] += eps
    X_minus[i] -= eps
    numeric = ((net.forward(X_plus) - net.forward(X_minus)) * d_out).sum() / (2 * eps)
    np.testing.assert_allclose(grad[i], numeric, rtol=1e-6)


def test_backward_binding_takes_all_weight_gradients_or_none():
    B, T, I, H = 2, 3, 4, 4
    G, f32, cell = _kernels.gates("lstm"), np.float32, _kernels.CELLS["lstm"]
    ws = np.zeros(_kernels.workspace_size(cell=cell, B=B, T=T, I=I, H=H, training=True), f32)
    bws = np.zeros(_kernels.backward_workspace_size(cell=cell, B=B, T=T, I=I, H=H), f32)
    W_ih, W_hh = np.zeros((G * H, I), f32), np.zeros((G * H, H), f32)
    _kernels.forward(cell=cell, X=np.zeros((B, T, I), f32), W_ih=W_ih, W_hh=W_hh,
                     b_ih=np.zeros(G * H, f32), b_hh=np.zeros(G * H, f32), h0=None, c0=None,
                     Y=np.zeros((B, T, H), f32), y_col=0, hN=np.zeros((B, H), f32),
                     cN=np.zeros((B, H), f32), lengths=None, reverse=False, ws=ws,
                     training=True, n_threads=1)
    with pytest.raises(ValueError, match="all given or all None"):
        _kernels.backward(cell=cell, X=np.zeros((B, T, I), f32), W_ih=W_ih, W_hh=W_hh, ws=ws,
                          dY=np.ones((B, T, H), f32), y_col=0, dhN=None, dcN=None,
                          dX=np.zeros((B, T, I), f32), accumulate_dx=False,
                          dW_ih=np.zeros_like(W_ih), dW_hh=None, db_ih=None, db_hh=None,
                          dh0=np.zeros((B, H), f32), dc0=np.zeros((B, H), f32), lengths=None,
                          reverse=False, bws=bws, n_threads=1)
