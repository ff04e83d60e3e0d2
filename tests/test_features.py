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
    params = net.flat_params
    for name, start, shape in trainable:
        for i in range(start, start + int(np.prod(shape))):
            saved = params[i]
            params[i] = saved + eps
            up = loss()
            params[i] = saved - eps
            down = loss()
            params[i] = saved
            assert analytic[i] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7), \
                name


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


def test_residual_without_a_matching_layer_warns():
    X, y = np.zeros((8, 4, 3)), np.arange(8.0)
    with pytest.warns(UserWarning, match="residual=True has no effect"):
        quiet_fit(FastLSTMRegressor(hidden_size=4, max_iter=1, residual=True), X, y)
