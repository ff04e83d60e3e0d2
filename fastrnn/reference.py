"""Plain NumPy recurrent layers: the slow, obvious version of every kernel.

Kept beside the C kernels and tested against them; also handy to read. One
step loop per layer and direction, no workspace, no tricks.
"""
import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(v, gain, bias, eps=1e-5):
    """Per row over the last axis; gain None: the identity."""
    if gain is None:
        return v
    return (v - v.mean(axis=-1, keepdims=True)) / np.sqrt(v.var(axis=-1, keepdims=True)
                                                          + eps) * gain + bias


def _matmul_t(x, W):
    return x @ W.T


def cell_step(cell, x, h, c, W_ih, W_hh, b_ih, b_hh, norms=None, mask=None, matmul=None):
    """One step of one cell for a batch: returns (h', c') (c' is None but for LSTM).

    norms (LSTM, GRU): a dict of ln_ih_weight, ln_ih_bias, ln_hh_weight,
    ln_hh_bias (and ln_c_weight, ln_c_bias for LSTM) for the layer-normalized
    cell (Ba, Kiros & Hinton 2016; csrc/lnrnn.h); mask: recurrent dropout on h.
    matmul(x, W): x W^T (default), or the reduced-precision product of
    fastrnn._quantize.reference_matmul with W_ih, W_hh reduced weights."""
    n = norms or {}
    matmul = matmul or _matmul_t
    hm = h if mask is None else h * mask
    gx = layer_norm(matmul(x, W_ih), n.get("ln_ih_weight"), n.get("ln_ih_bias")) + b_ih
    gh = layer_norm(matmul(hm, W_hh), n.get("ln_hh_weight"), n.get("ln_hh_bias")) + b_hh
    if cell == "lstm":
        i, f, g, o = np.split(gx + gh, 4, axis=1)
        c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        cn = layer_norm(c_new, n.get("ln_c_weight"), n.get("ln_c_bias"))
        return _sigmoid(o) * np.tanh(cn), c_new
    if cell == "gru":
        xr, xz, xn = np.split(gx, 3, axis=1)
        hr, hz, hn = np.split(gh, 3, axis=1)
        r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
        n_ = np.tanh(xn + r * hn)
        return (1 - z) * n_ + z * h, None
    if cell == "rnn_tanh":
        return np.tanh(gx + gh), None
    if cell == "rnn_relu":
        return np.maximum(gx + gh, 0), None
    raise ValueError(f"unknown cell {cell!r}")


def layer_forward(cell, X, W_ih, W_hh, b_ih, b_hh, h0=None, c0=None, lengths=None,
                  reverse=False, norms=None, mask=None, matmul=None):
    """One layer, one direction over batch-first X (B, T, I) (norms, mask,
    matmul: as cell_step). Returns Y (B, T, H) with zeros past each length,
    and the final (h, c)."""
    B, T, _ = X.shape
    H = W_hh.shape[1]
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    h = np.zeros((B, H)) if h0 is None else np.array(h0, dtype=np.float64)
    c = np.zeros((B, H)) if c0 is None else np.array(c0, dtype=np.float64)
    Y = np.zeros((B, T, H))
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new, c_new = cell_step(cell, X[:, t], h, c, W_ih, W_hh, b_ih, b_hh, norms, mask,
                                 matmul)
        active = (t < lengths)[:, None]
        h = np.where(active, h_new, h)
        if c_new is not None:
            c = np.where(active, c_new, c)
        Y[:, t] = np.where(active, h_new, 0.0)
    return Y, h, c


def layer_output(Y, X, lengths=None, norm=None, residual=False, weight=None, bias=None,
                 running=None, eps=1e-5):
    """What follows a recurrent layer (network.LayerOutput, no dropout):
    Y + X when residual and the sizes match, then the norm: "layer" per step
    over features; "batch" per feature over the valid steps of the batch, or
    with running = (mean, var) the inference form. Zeros past each length."""
    B, T, F = Y.shape
    valid = np.ones((B, T), bool) if lengths is None else \
        np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    Z = Y + X if residual and X.shape[2] == F else Y.copy()
    if norm == "layer":
        mean, var = Z.mean(axis=2, keepdims=True), Z.var(axis=2, keepdims=True)
    elif norm == "batch":
        mean, var = running if running is not None else (Z[valid].mean(0), Z[valid].var(0))
    if norm is not None:
        Z = (Z - mean) / np.sqrt(var + eps) * weight + bias
    return Z * valid[:, :, None]


def stack_forward(cell, params, X, num_layers=1, bidirectional=False, lengths=None,
                  h0=None, c0=None, between=None):
    """A whole stack from a PyTorch-named parameter dict. Returns (Y, hN, cN)
    with hN/cN shaped (num_layers * num_directions, B, H). between(k, Y, X),
    when given, turns layer k's output Y (input X) into what the next layer
    reads and the stack returns (e.g. a layer_output)."""
    X = np.asarray(X, dtype=np.float64)
    dirs = ("", "_reverse") if bidirectional else ("",)
    hs, cs = [], []
    layer_in = X
    for k in range(num_layers):
        outs = []
        for d, sfx in enumerate(dirs):
            idx = k * len(dirs) + d
            p = {n: np.asarray(params[f"{n}_l{k}{sfx}"], dtype=np.float64)
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            Y, h, c = layer_forward(cell, layer_in, p["weight_ih"], p["weight_hh"],
                                    p["bias_ih"], p["bias_hh"],
                                    None if h0 is None else h0[idx],
                                    None if c0 is None else c0[idx], lengths, reverse=d == 1)
            outs.append(Y)
            hs.append(h)
            cs.append(c)
        Y = np.concatenate(outs, axis=2)
        layer_in = Y if between is None else between(k, Y, layer_in)
    return layer_in, np.stack(hs), np.stack(cs)


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar f() with respect to x, which
    is perturbed in place (one element at a time) and restored: the oracle of
    every analytic gradient in the tests."""
    grad = np.empty_like(x)
    flat, g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        up = f()
        flat[i] = orig - eps
        down = f()
        flat[i] = orig
        g[i] = (up - down) / (2 * eps)
    return grad
