"""The second-round model features (issue 11): explicit validation data,
Keras-style and recurrent dropout, residual stacks, normalization between
layers, layer-normalized cells."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss

import fastrnn
from fastrnn import FastGRURegressor, FastLSTMClassifier
from fastrnn.reference import numeric_grad  # central finite differences, in place


def quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


@pytest.fixture(scope="module")
def split_task():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(160, 6, 3))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    return X[:120], y[:120], X[120:], y[120:]


# ----- item 5: explicit validation data ----------------------------------------------------
def test_validation_data_scored_every_epoch_without_early_stopping(split_task):
    X, y, X_val, y_val = split_task
    clf = quiet_fit(FastLSTMClassifier(hidden_size=8, max_iter=4, random_state=0), X, y,
                    X_val=X_val, y_val=y_val)
    assert clf.n_iter_ == 4
    assert len(clf.validation_scores_) == len(clf.validation_loss_curve_) == 4
    # the last epoch's numbers are those of the final weights
    assert clf.validation_scores_[-1] == pytest.approx(clf.score(X_val, y_val))
    expected = log_loss(y_val, clf.predict_proba(X_val), labels=clf.classes_)
    assert clf.validation_loss_curve_[-1] == pytest.approx(expected, rel=1e-5)


def test_training_without_validation_data_is_unchanged(split_task):
    X, y, X_val, y_val = split_task
    kw = dict(hidden_size=8, max_iter=3, random_state=0)
    plain = quiet_fit(FastLSTMClassifier(**kw), X, y)
    scored = quiet_fit(FastLSTMClassifier(**kw), X, y, X_val=X_val, y_val=y_val)
    assert plain.validation_scores_ is None and plain.validation_loss_curve_ is None
    np.testing.assert_array_equal(plain.loss_curve_, scored.loss_curve_)


def test_early_stopping_uses_the_given_validation_data(split_task):
    X, y, X_val, y_val = split_task
    clf = quiet_fit(FastLSTMClassifier(hidden_size=8, max_iter=30, early_stopping=True,
                                       n_iter_no_change=3, learning_rate_init=0.05,
                                       random_state=0), X, y, X_val=X_val, y_val=y_val)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # the best weights are restored, and they were scored on X_val (not a split of X)
    assert clf.score(X_val, y_val) == pytest.approx(clf.best_validation_score_)


def test_validation_sample_weights_weight_the_score():
    rng = np.random.default_rng(1)
    X, X_val = rng.normal(size=(60, 5, 2)), rng.normal(size=(30, 5, 2))
    y, y_val = X.sum(axis=(1, 2)), X_val.sum(axis=(1, 2))
    w = rng.uniform(0.1, 2.0, size=30)
    reg = quiet_fit(FastGRURegressor(hidden_size=8, max_iter=3, random_state=0), X, y,
                    X_val=X_val, y_val=y_val, sample_weight_val=w)
    assert reg.validation_scores_[-1] == pytest.approx(reg.score(X_val, y_val, sample_weight=w))
    assert reg.validation_scores_[-1] != pytest.approx(reg.score(X_val, y_val))


@pytest.mark.parametrize("kwargs, message", [
    (dict(y_val=np.zeros(3)), "need X_val"), (dict(X_val=np.zeros((3, 6, 3))), "needs y_val"),
    (dict(X_val=np.zeros((3, 6, 2)), y_val=np.zeros(3, int)), "features"),
])
def test_bad_validation_data_is_refused(split_task, kwargs, message):
    X, y, _, _ = split_task
    with pytest.raises(ValueError, match=message):
        FastLSTMClassifier(max_iter=1).fit(X, y, **kwargs)


def test_verbose_shows_the_validation_loss(split_task, capsys):
    X, y, X_val, y_val = split_task
    quiet_fit(FastLSTMClassifier(hidden_size=4, max_iter=1, verbose=True, random_state=0),
              X, y, X_val=X_val, y_val=y_val)
    assert "validation loss" in capsys.readouterr().out


def test_validation_curves_save_and_load(split_task, tmp_path):
    X, y, X_val, y_val = split_task
    clf = quiet_fit(FastLSTMClassifier(hidden_size=4, max_iter=2, random_state=0), X, y,
                    X_val=X_val, y_val=y_val)
    clf.save(tmp_path / "m.npz")
    for loaded in (fastrnn.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(clf))):
        assert loaded.validation_loss_curve_ == clf.validation_loss_curve_
        assert loaded.validation_scores_ == clf.validation_scores_


# ----- items 2, 3, 4: residual, norm and dropout after every recurrent layer ------------------
from fastrnn import FastLSTMRegressor, reference  # noqa: E402
from fastrnn.network import LayerOutput, Network  # noqa: E402


def make_net(**kw):
    options = dict(cell="lstm", input_size=4, hidden_size=2, output_size=2, num_layers=2,
                   bidirectional=True, dtype=np.float64, random_state=0, n_threads=1)
    options.update(kw)
    return Network(**options)


def randomize_norms(net, rng):
    for name, view in net.named_params():
        if name.startswith("norm_") and not name.endswith("running_var"):
            view[:] = rng.normal(size=view.shape)
        elif name.endswith("running_var"):
            view[:] = rng.uniform(0.5, 2.0, size=view.shape)


@pytest.mark.parametrize("norm", [None, "layer", "batch"])
@pytest.mark.parametrize("per_step", [False, True])
def test_residual_and_norm_forward_is_the_reference(norm, per_step, rng):
    net = make_net(norm=norm, residual=True, per_step=per_step)
    randomize_norms(net, rng)
    X = rng.normal(size=(3, 5, 4))
    lengths = np.array([5, 2, 4])
    p = net.params
    for training in (True, False):
        running = {k: (p[f"norm_l{k}.running_mean"].copy(), p[f"norm_l{k}.running_var"].copy())
                   for k in range(2)} if norm == "batch" and not training else {}

        def between(k, Y, layer_in):
            return reference.layer_output(
                Y, layer_in, lengths, norm, True, p.get(f"norm_l{k}.weight"),
                p.get(f"norm_l{k}.bias"), running.get(k))
        Y, _, _ = reference.stack_forward("lstm", net.stack.params, X, 2, True, lengths,
                                          between=between)
        if per_step:
            features = Y
        else:  # forward direction at the last valid step, reverse at step 0
            features = np.concatenate([Y[np.arange(3), lengths - 1, :2], Y[:, 0, 2:]], axis=1)
        expected = features @ p["head.weight"].T + p["head.bias"]
        np.testing.assert_allclose(net.forward(X, lengths=lengths, training=training),
                                   expected, rtol=1e-10, atol=1e-12)


def check_gradients(net, X, lengths, rng, eps=1e-6):
    """Network.backward against central finite differences of sum(out * R),
    with the same dropout masks in every forward pass."""
    seed_state = net.rng.bit_generator.state
    trainable = [(n, s, sh) for n, s, sh in net.layout if "running" not in n]

    def loss():
        net.rng.bit_generator.state = seed_state
        out = net.forward(X, lengths=lengths, training=True)
        net._cache = None
        return float((out * R).sum())
    net.rng.bit_generator.state = seed_state
    out = net.forward(X, lengths=lengths, training=True)
    R = rng.normal(size=out.shape)
    net.zero_grad()
    net.backward(R)
    analytic = net.flat_grads.copy()
    numeric = numeric_grad(loss, net.flat_params, eps)
    for name, start, shape in trainable:
        part = slice(start, start + int(np.prod(shape)))
        np.testing.assert_allclose(analytic[part], numeric[part], rtol=1e-5, atol=1e-7,
                                   err_msg=name)


@pytest.mark.parametrize("options", [
    dict(residual=True), dict(norm="layer"), dict(norm="batch", residual=True),
    dict(norm="layer", residual=True, dropout=0.3, per_step=True),
    dict(dropout=0.4, num_layers=1, cell="gru")])
def test_layer_output_gradients_match_finite_differences(options, rng):
    net = make_net(**options)
    randomize_norms(net, rng)
    X = rng.normal(size=(3, 5, 4))
    check_gradients(net, X, np.array([5, 2, 4]), rng)


def layer_output_and_grads(norm, Y, lengths, weight, bias, dZ, training=True):
    params = {f"norm_l0.{k}": v for k, v in dict(
        weight=weight.copy(), bias=bias.copy(), running_mean=np.zeros_like(weight),
        running_var=np.ones_like(weight)).items()}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    out = LayerOutput(0, norm, False, 0.0, params, grads, None)
    valid = np.arange(Y.shape[1])[None, :] < lengths[:, None]
    Z = out.forward(Y, Y, valid, training)
    dY, _ = out.backward(dZ)
    return Z, dY, grads, params, valid


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_norms_match_pytorch(norm, torch, rng):
    B, T, F = 4, 6, 5
    Y, dZ = rng.normal(size=(B, T, F)) * 3 + 1, rng.normal(size=(B, T, F))
    weight, bias = rng.normal(size=F), rng.normal(size=F)
    lengths = np.array([6, 3, 5, 1])
    Z, dY, grads, params, valid = layer_output_and_grads(norm, Y, lengths, weight, bias, dZ)
    module = (torch.nn.LayerNorm(F) if norm == "layer" else torch.nn.BatchNorm1d(F)).double()
    with torch.no_grad():
        module.weight[:] = torch.from_numpy(weight)
        module.bias[:] = torch.from_numpy(bias)
    rows = torch.tensor(Y[valid], requires_grad=True)  # padding is left out, as in packing
    out = module(rows)
    out.backward(torch.from_numpy(dZ[valid]))
    np.testing.assert_allclose(Z[valid], out.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert not Z[~valid].any() and not dY[~valid].any()
    np.testing.assert_allclose(dY[valid], rows.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grads["norm_l0.weight"], module.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grads["norm_l0.bias"], module.bias.grad.numpy(), rtol=1e-10)
    if norm == "batch":  # running statistics, then inference with them
        np.testing.assert_allclose(params["norm_l0.running_mean"],
                                   module.running_mean.numpy(), rtol=1e-10)
        np.testing.assert_allclose(params["norm_l0.running_var"],
                                   module.running_var.numpy(), rtol=1e-10)
        inference = LayerOutput(0, norm, False, 0.0, params, grads, None)
        module.eval()
        np.testing.assert_allclose(inference.forward(Y, Y, valid, False)[valid],
                                   module(torch.from_numpy(Y[valid])).detach().numpy(),
                                   rtol=1e-10, atol=1e-12)


def test_dropout_acts_with_one_layer_and_never_at_inference(split_task):
    X, y, _, _ = split_task
    kw = dict(hidden_size=8, max_iter=3, random_state=0)
    plain = quiet_fit(FastLSTMClassifier(**kw), X, y)
    dropped = quiet_fit(FastLSTMClassifier(dropout=0.5, **kw), X, y)
    again = quiet_fit(FastLSTMClassifier(dropout=0.5, **kw), X, y)
    assert dropped.loss_curve_ != plain.loss_curve_  # issue 11: one layer ignored dropout
    assert dropped.loss_curve_ == again.loss_curve_  # deterministic for a random_state
    np.testing.assert_array_equal(dropped.predict_proba(X), dropped.predict_proba(X))
    # inference is the same network without dropout
    net = dropped.model_
    twin = Network("lstm", input_size=3, hidden_size=8, output_size=1, dropout=0.0)
    twin.load_state_dict(net.state_dict())
    np.testing.assert_allclose(net.forward(X.astype(np.float32)),
                               twin.forward(X.astype(np.float32)), rtol=1e-6)


def test_dropout_masks_scale_kept_units():
    net = make_net(dropout=0.25, num_layers=1, bidirectional=False, input_size=2,
                   per_step=True)
    X = np.random.default_rng(0).normal(size=(64, 30, 2))
    net.forward(X, training=True)
    mask = net.stack.layer_outputs[0]._cache[3]
    assert set(np.unique(mask)) == {0.0, 1 / 0.75}
    assert abs((mask == 0).mean() - 0.25) < 0.02


def test_dropout_follows_a_reseeded_stack_generator():
    """fastrnn.dask reseeds net.rng and net.stack.rng per worker; the masks follow."""
    net = make_net(dropout=0.5, per_step=True)
    X = np.random.default_rng(0).normal(size=(2, 5, 4))
    outs = []
    for _ in range(2):
        net.rng = net.stack.rng = np.random.default_rng(5)
        outs.append(net.forward(X, training=True))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_residual_without_a_matching_layer_warns():
    X, y = np.zeros((8, 4, 3)), np.arange(8.0)
    with pytest.warns(UserWarning, match="residual=True has no effect"):
        quiet_fit(FastLSTMRegressor(hidden_size=4, max_iter=1, residual=True), X, y)


# ----- items 1 and 4: layer-normalized cells and recurrent dropout in C ------------------------
from fastrnn import _kernels, FastGRUClassifier  # noqa: E402
from fastrnn.layers import GRU, LSTM, param_name  # noqa: E402


def ln_stack(cls, rng, layer_norm=True, recurrent_dropout=0.0, dtype=np.float64, **kw):
    options = dict(num_layers=2, bidirectional=True)
    options.update(kw)
    stack = cls(3, 4, dtype=dtype, random_state=0, layer_norm=layer_norm,
                recurrent_dropout=recurrent_dropout, **options)
    for name, view in stack.params.items():  # gains and biases away from 1 and 0
        if name.startswith("ln_"):
            view[:] = rng.normal(size=view.shape)
    return stack


def reference_stack(stack, X, lengths):
    """The stack through reference.layer_forward with its norms, layer by layer (no dropout)."""
    layer_in = X
    for k in range(stack.num_layers):
        outs = []
        for d in range(stack.num_directions):
            p = {kind: stack.params[param_name(kind, k, d)]
                 for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            Y, _, _ = reference.layer_forward(
                stack.cell, layer_in, p["weight_ih"], p["weight_hh"], p["bias_ih"],
                p["bias_hh"], lengths=lengths, reverse=bool(d), norms=stack.norms(k, d)[0])
            outs.append(Y)
        layer_in = np.concatenate(outs, axis=2)
    return layer_in


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_layer_norm_cells_are_the_reference(cls, rng):
    stack = ln_stack(cls, rng)
    assert {"ln_ih_weight_l0", "ln_hh_bias_l1_reverse"} <= set(stack.params)
    assert ("ln_c_weight_l0" in stack.params) == (cls is LSTM)
    X, lengths = rng.normal(size=(3, 6, 3)), np.array([6, 2, 5])
    for training in (False, True):
        Y, _ = stack.forward(X, lengths=lengths, training=training)
        np.testing.assert_allclose(Y, reference_stack(stack, X, lengths), rtol=1e-10,
                                   atol=1e-12)


def check_stack_gradients(stack, X, lengths, rng, eps=1e-6):
    """Stack.backward (parameters and X) against central finite differences of
    sum(Y * R) + sum(hN * S), with the same dropout masks in every pass."""
    seed_state = stack.rng.bit_generator.state

    def run():
        stack.rng.bit_generator.state = seed_state
        return stack.forward(X, lengths=lengths, training=True)
    Y, (hN, _) = run()
    R, S = rng.normal(size=Y.shape), rng.normal(size=hN.shape)

    def loss():
        Y, (hN, _) = run()
        stack._cache = None
        return float((Y * R).sum() + (hN * S).sum())
    run()
    stack.zero_grad()
    dX, _ = stack.backward(R, S)
    analytic = stack.flat_grads.copy()
    for values, grads in ((stack.flat_params, analytic), (X.reshape(-1), dX.reshape(-1))):
        np.testing.assert_allclose(grads, numeric_grad(loss, values, eps), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("layer_norm, recurrent_dropout", [(True, 0.0), (True, 0.4),
                                                           (False, 0.4)])
def test_layer_norm_and_recurrent_dropout_gradients(cls, layer_norm, recurrent_dropout, rng):
    stack = ln_stack(cls, rng, layer_norm, recurrent_dropout)
    X = rng.normal(size=(3, 5, 3))
    check_stack_gradients(stack, X, np.array([5, 2, 4]), rng)


def torch_ln_layer(torch, cell, X, p, reverse, mask=None):
    """A layer-normalized cell as PyTorch users write it: a Python loop over steps."""
    F = torch.nn.functional
    B, T, _ = X.shape
    H = p["weight_hh"].shape[1]
    h, c = torch.zeros(B, H, dtype=X.dtype), torch.zeros(B, H, dtype=X.dtype)
    ys = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        hm = h if mask is None else h * mask
        gx = F.layer_norm(X[:, t] @ p["weight_ih"].T, (p["weight_ih"].shape[0],),
                          p["ln_ih_weight"], p["ln_ih_bias"]) + p["bias_ih"]
        gh = F.layer_norm(hm @ p["weight_hh"].T, (p["weight_hh"].shape[0],),
                          p["ln_hh_weight"], p["ln_hh_bias"]) + p["bias_hh"]
        if cell == "lstm":
            i, f, g, o = (gx + gh).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), p["ln_c_weight"],
                                                           p["ln_c_bias"]))
        else:
            xr, xz, xn = gx.chunk(3, dim=1)
            hr, hz, hn = gh.chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        ys[t] = h
    return torch.stack(ys, dim=1)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_layer_norm_cells_match_a_pytorch_autograd_loop(cls, torch, rng):
    stack = ln_stack(cls, rng, dtype=np.float32, num_layers=1)
    X = rng.normal(size=(4, 7, 3)).astype(np.float32)
    Y, _ = stack.forward(X, training=True)
    R = rng.normal(size=Y.shape).astype(np.float32)
    stack.zero_grad()
    dX, _ = stack.backward(R)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in stack.params.items()}
    tX = torch.tensor(X, requires_grad=True)
    outs = [torch_ln_layer(torch, stack.cell, tX, {k[:-len(sfx) - 3]: v for k, v in tp.items()
                                                   if k.endswith("_l0" + sfx)}, bool(sfx))
            for sfx in ("", "_reverse")]
    tY = torch.cat(outs, dim=2)
    (tY * torch.from_numpy(R)).sum().backward()
    np.testing.assert_allclose(Y, tY.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dX, tX.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name, value in tp.items():
        np.testing.assert_allclose(stack.grads[name], value.grad.numpy(), rtol=1e-4,
                                   atol=1e-4, err_msg=name)


def test_layer_norm_float32_follows_float64_and_threads_agree(rng):
    stack64 = ln_stack(LSTM, rng)
    stack32 = LSTM(3, 4, num_layers=2, bidirectional=True, layer_norm=True, n_threads=2)
    stack32.load_state_dict(stack64.state_dict())
    X, lengths = rng.normal(size=(40, 6, 3)), rng.integers(1, 7, size=40)
    Y32 = stack32.forward(X.astype(np.float32), lengths=lengths)[0]
    np.testing.assert_allclose(Y32, stack64.forward(X, lengths=lengths)[0], atol=2e-5)
    stack32.n_threads = 1
    np.testing.assert_allclose(stack32.forward(X.astype(np.float32), lengths=lengths)[0],
                               Y32, atol=1e-6)


def test_recurrent_dropout_mask_is_one_per_sequence_and_only_in_training(rng):
    stack = ln_stack(GRU, rng, layer_norm=False, recurrent_dropout=0.5, num_layers=1,
                     bidirectional=False)
    X = rng.normal(size=(3, 6, 3))
    state = stack.rng.bit_generator.state
    Y, _ = stack.forward(X, training=True)
    stack.rng.bit_generator.state = state  # the same draw: one (B, H) mask
    keep = 0.5
    mask = (stack.rng.random((3, 4)) < keep) / keep
    p = stack.params
    expected, _, _ = reference.layer_forward("gru", X, p["weight_ih_l0"], p["weight_hh_l0"],
                                             p["bias_ih_l0"], p["bias_hh_l0"], mask=mask)
    np.testing.assert_allclose(Y, expected, rtol=1e-10, atol=1e-12)
    plain, _, _ = reference.layer_forward("gru", X, p["weight_ih_l0"], p["weight_hh_l0"],
                                          p["bias_ih_l0"], p["bias_hh_l0"])
    np.testing.assert_allclose(stack.forward(X)[0], plain, rtol=1e-10, atol=1e-12)


def test_layer_norm_kernel_refuses_bad_arguments(rng):
    X = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="LSTM and GRU"):
        _kernels.ln_workspace_size(cell=_kernels.CELLS["rnn_tanh"], B=2, T=3, I=3, H=4)
    stack = ln_stack(LSTM, rng, num_layers=1, bidirectional=False)
    view = stack.direction(0)
    norms = dict(stack.norms(0)[0])
    del norms["ln_c_bias"]
    with pytest.raises(ValueError, match="ln_c_bias is required"):
        _kernels.ln_forward(cell=0, X=X, W_ih=view.W_ih, W_hh=view.W_hh, b_ih=view.b_ih,
                            b_hh=view.b_hh, norms=norms, h0=None, c0=None, mask=None,
                            Y=np.zeros((2, 3, 4)), y_col=0, hN=np.zeros((2, 4)),
                            cN=np.zeros((2, 4)), lengths=None, reverse=False,
                            ws=np.zeros(10 ** 4), n_threads=1)
    from fastrnn import FastRNNClassifier
    with pytest.raises(ValueError, match="not of the Elman RNN"):
        FastRNNClassifier(layer_norm=True, max_iter=1).fit(X, [0, 1])


@pytest.mark.parametrize("options", [dict(layer_norm=True), dict(recurrent_dropout=0.3)])
def test_cell_options_train_and_predict_deterministically(options, split_task):
    X, y, X_val, y_val = split_task
    kw = dict(hidden_size=8, max_iter=3, random_state=0, **options)
    a = quiet_fit(FastGRUClassifier(**kw), X, y)
    b = quiet_fit(FastGRUClassifier(**kw), X, y)
    assert a.loss_curve_ == b.loss_curve_
    plain = quiet_fit(FastGRUClassifier(hidden_size=8, max_iter=3, random_state=0), X, y)
    assert a.loss_curve_ != plain.loss_curve_
    np.testing.assert_array_equal(a.predict_proba(X_val), b.predict_proba(X_val))


# ----- item 7: scikit-learn conformance, persistence with every option on ----------------------
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastrnn import FastGRURegressor as _GRUReg, FastLSTMClassifier as _LSTMClf  # noqa: E402

ALL_OPTIONS = dict(num_layers=2, layer_norm=True, recurrent_dropout=0.1, norm="layer",
                   residual=True, dropout=0.1)


def _expected_failures(estimator):
    return {"check_sample_weight_equivalence_on_dense_data": (
        "shuffled mini-batch training: repeating a sample changes the batches and the "
        "number of updates (as for the plain estimators in test_estimators.py)")}


# float64: the checks compare predictions on subsets at atol=1e-7, below the float32
# rounding of a two-layer network (about 1e-7 for the plain one, 3e-7 with residual)
@parametrize_with_checks(
    [_LSTMClf(hidden_size=32, max_iter=100, learning_rate_init=0.01, random_state=0,
              dtype="float64", **ALL_OPTIONS),
     _GRUReg(hidden_size=32, max_iter=100, learning_rate_init=0.01, random_state=0,
             dtype="float64", num_layers=2, layer_norm=True, norm="batch", residual=True)],
    expected_failed_checks=_expected_failures)
def test_scikit_learn_conformance_with_the_new_options(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_every_option_saves_and_loads(norm, split_task, tmp_path):
    X, y, X_val, y_val = split_task
    clf = quiet_fit(FastLSTMClassifier(hidden_size=6, max_iter=2, random_state=0,
                                       bidirectional=True, **{**ALL_OPTIONS, "norm": norm}),
                    X, y, X_val=X_val, y_val=y_val)
    names = set(clf.model_.state_dict())
    assert {"ln_c_weight_l1_reverse", "norm_l1.weight"} <= names
    assert (norm == "batch") == ("norm_l0.running_var" in names)
    clf.save(tmp_path / "m.npz")
    for loaded in (fastrnn.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(clf))):
        np.testing.assert_array_equal(loaded.predict_proba(X_val), clf.predict_proba(X_val))
        assert loaded.get_params() == clf.get_params()
        assert loaded.validation_loss_curve_ == clf.validation_loss_curve_


# ----- item 6: each option helps where it should (fixed seeds, a margin) -----------------------
@pytest.fixture(scope="module")
def sign_task():
    """Is the first feature's sum over 12 steps positive: 400 training, 200 validation."""
    rng = np.random.default_rng(0)
    X, X_val = rng.normal(size=(400, 12, 4)), rng.normal(size=(200, 12, 4))
    return X, (X[:, :, 0].sum(1) > 0).astype(int), X_val, (X_val[:, :, 0].sum(1) > 0).astype(int)


def mean_final_validation_score(sign_task, scale=1.0, seeds=(0, 1), **options):
    X, y, X_val, y_val = sign_task
    scores = [quiet_fit(FastLSTMClassifier(hidden_size=16, max_iter=8, random_state=seed,
                                           **options),
                        X * scale, y, X_val=X_val * scale, y_val=y_val).validation_scores_[-1]
              for seed in seeds]
    return np.mean(scores)


def test_residual_and_norm_train_a_deep_stack_better(sign_task):
    """Four stacked layers, the same budget: residual connections with layer
    norm between layers reach a clearly better validation accuracy (measured:
    0.94 against 0.82)."""
    deep = dict(num_layers=4, learning_rate_init=0.003)
    plain = mean_final_validation_score(sign_task, **deep)
    helped = mean_final_validation_score(sign_task, residual=True, norm="layer", **deep)
    assert helped >= plain + 0.08, (plain, helped)


def test_layer_norm_cells_cope_with_badly_scaled_inputs(sign_task):
    """Inputs 30x too large saturate a plain LSTM's gates; the layer-normalized
    cell normalizes its pre-activations (measured: 0.82 against 0.66)."""
    options = dict(scale=30.0, learning_rate_init=0.01)
    plain = mean_final_validation_score(sign_task, **options)
    helped = mean_final_validation_score(sign_task, layer_norm=True, **options)
    assert helped >= plain + 0.08, (plain, helped)


def test_the_cli_loss_chart_draws_training_and_validation_curves(split_task):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fastrnn.cli import _draw_loss_curves
    X, y, X_val, y_val = split_task
    clf = quiet_fit(FastLSTMClassifier(hidden_size=4, max_iter=3, random_state=0), X, y,
                    X_val=X_val, y_val=y_val)
    fig, ax = plt.subplots()
    _draw_loss_curves(ax, clf, "title")
    drawn = [line.get_ydata().tolist() for line in ax.get_lines()]
    plt.close(fig)
    assert drawn == [clf.loss_curve_, clf.validation_loss_curve_]
