"""Attributions (fastrnn.explain) and the kernels' dX-only backward they run on."""
import importlib.util
import os
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import fastrnn.explain
from fastrnn import (FastGRUClassifier, FastGRURegressor, FastLSTMClassifier,
                     FastLSTMRegressor, FastRNNRegressor, Forecaster, SequenceGenerator,
                     _kernels)
from fastrnn.explain import explained_output
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


# ---------------------------------------------------------------------------------------------
# fitted models shared by the attribution tests (tiny, a few epochs)


def _fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


@pytest.fixture(scope="module")
def classifier():
    """A 3-class LSTM classifier on 3-D X."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 6, 3)).astype(np.float32)
    y = np.digitize(X[:, 2, 0] + X[:, 4, 1], [-0.7, 0.7])
    return _fit(FastLSTMClassifier(hidden_size=8, max_iter=15, learning_rate_init=0.02,
                                   random_state=0), X, y), X


@pytest.fixture(scope="module")
def regressor():
    """A two-layer bidirectional GRU with two outputs."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 5, 2)).astype(np.float32)
    y = np.stack([X[:, 1, 0] * 3 + 10, X[:, 3, 1] - X[:, 0, 0]], axis=1)
    return _fit(FastGRURegressor(hidden_size=6, num_layers=2, bidirectional=True, max_iter=15,
                                 learning_rate_init=0.02, random_state=0), X, y), X


def _fraction(mass, where):
    """The share of |attribution| mass summed over samples that lies at where."""
    mass = np.abs(mass).sum(axis=0)
    return mass[where].sum() / mass.sum()


# ---------------------------------------------------------------------------------------------
# forms of input and output


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients",
                                    "occlusion"])
def test_attributions_have_the_shape_of_X(classifier, method):
    clf, X = classifier
    A = clf.explain(X[:7], method=method, n_steps=8)
    assert A.shape == (7, 6, 3) and A.dtype == np.float64 and np.all(np.isfinite(A))


def test_ragged_lists_give_one_array_per_sequence(rng):
    X = [rng.normal(size=(T, 2)) for T in (4, 7, 2, 7, 5) * 8]
    y = np.array([x[:, 0].sum() for x in X])
    reg = _fit(FastRNNRegressor(hidden_size=5, max_iter=3, random_state=0), X, y)
    for method in ("integrated_gradients", "occlusion"):
        A = reg.explain(X[:5], method=method, n_steps=8, window=2)
        assert [a.shape for a in A] == [x.shape for x in X[:5]]
    # a sequence's attributions do not depend on the padding around it
    alone = reg.explain([X[2]], method="integrated_gradients", n_steps=8)
    together = reg.explain(X[:5], method="integrated_gradients", n_steps=8)
    np.testing.assert_allclose(together[2], alone[0], rtol=1e-5, atol=1e-7)


def test_univariate_2d_X_gives_n_by_T(rng):
    X = rng.normal(size=(60, 6))
    reg = _fit(FastLSTMRegressor(hidden_size=4, max_iter=2, random_state=0), X, X[:, 3])
    A = reg.explain(X[:4], baseline=X[:4].mean(axis=0))
    assert A.shape == (4, 6)


def test_token_input_gives_n_by_T_and_keeps_completeness(rng):
    X = rng.integers(0, 12, size=(80, 7))
    y = (X[:, 3] > 5).astype(int)
    clf = _fit(FastGRUClassifier(hidden_size=8, embedding_dim=4, max_iter=10,
                                 learning_rate_init=0.02, random_state=0), X, y)
    A = clf.explain(X[:10], n_steps=64)
    assert A.shape == (10, 7)
    delta = explained_output(clf, X[:10]) - explained_output(clf, X[:10], baseline=None)
    np.testing.assert_allclose(A.sum(axis=1), delta, rtol=0.01, atol=1e-3 * np.abs(delta).max())


def test_bad_arguments_raise_clear_errors(classifier, regressor):
    clf, X = classifier
    with pytest.raises(ValueError, match="method must be one of"):
        clf.explain(X[:2], method="gradcam")
    with pytest.raises(ValueError, match="not one of the classes"):
        clf.explain(X[:2], target=7)
    with pytest.raises(ValueError, match="step is only for per-step models"):
        clf.explain(X[:2], step=1)
    with pytest.raises(ValueError, match="n_steps must be a positive int"):
        clf.explain(X[:2], n_steps=0)
    with pytest.raises(ValueError, match="does not broadcast"):
        clf.explain(X[:2], baseline=np.zeros(5))
    reg, X = regressor
    with pytest.raises(ValueError, match="2 outputs: pass target"):
        reg.explain(X[:2])
    with pytest.raises(ValueError, match="only for classifiers"):
        reg.explain(X[:2], target=0, output="probability")


def test_chunked_calls_give_the_one_call_result(classifier, monkeypatch):
    clf, X = classifier
    whole = clf.explain(X[:9], n_steps=10)
    monkeypatch.setattr(fastrnn.explain, "CALL_BYTES", 1)  # one row per kernel call
    np.testing.assert_allclose(clf.explain(X[:9], n_steps=10), whole, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# integrated gradients' completeness: attributions sum to f(x) - f(baseline)


def _assert_complete(A, delta):
    """Within 1% of f(x) - f(baseline) for every sample (and 1e-3 of the
    largest difference, for samples whose difference is near 0)."""
    sums = A.reshape(len(delta), -1).sum(axis=1)
    np.testing.assert_allclose(sums, delta, rtol=0.01, atol=1e-3 * np.abs(delta).max())


@pytest.mark.parametrize("output", ["logit", "probability"])
def test_integrated_gradients_sum_to_the_classifiers_output_difference(classifier, output):
    clf, X = classifier
    baseline = np.full(X.shape[1:], 0.3, np.float32)
    A = clf.explain(X[:30], baseline=baseline, n_steps=64, output=output)
    delta = (explained_output(clf, X[:30], output=output)
             - explained_output(clf, X[:30], output=output, baseline=baseline))
    _assert_complete(A, delta)


def test_integrated_gradients_sum_to_the_prediction_difference_of_a_regressor(regressor):
    reg, X = regressor
    A = reg.explain(X[:30], target=1, n_steps=64)
    zeros = np.zeros_like(X[:30])
    delta = reg.predict(X[:30])[:, 1] - reg.predict(zeros)[:, 1]  # in y's units
    _assert_complete(A, delta)


def test_integrated_gradients_of_a_per_step_model_at_a_chosen_step(rng):
    X = rng.normal(size=(60, 6, 2))
    y = np.cumsum(X[:, :, :1], axis=1)  # (n, T, 1): one target per step
    reg = _fit(FastLSTMRegressor(hidden_size=6, max_iter=10, random_state=0), X, y)
    A = reg.explain(X[:20], step=2, n_steps=64)
    delta = reg.predict(X[:20])[:, 2] - reg.predict(np.zeros_like(X[:20]))[:, 2]
    _assert_complete(A, delta)
    # the output at step 2 of a unidirectional stack cannot depend on later steps
    assert np.all(A[:, 3:] == 0)
    last = reg.explain(X[:20], method="saliency")
    np.testing.assert_array_equal(last, reg.explain(X[:20], method="saliency", step=-1))
    with pytest.raises(ValueError, match="outside a sequence"):
        reg.explain(X[:2], step=6)


# ---------------------------------------------------------------------------------------------
# the oracle: captum on the same network rebuilt in PyTorch


def import_captum():
    """captum (with torch) is the attribution oracle: skipped for users
    without it, a failure when CI requires the oracles."""
    try:
        import captum.attr
        import torch
    except ImportError:
        if "1" in (os.environ.get("FASTRNN_REQUIRE_TORCH"),
                   os.environ.get("FASTRNN_REQUIRE_CAPTUM")):
            pytest.fail("FASTRNN_REQUIRE_TORCH/CAPTUM=1 but torch or captum cannot be imported")
        pytest.skip("captum is not installed; the attribution oracle tests need it")
    return torch, captum.attr


def torch_model(torch, net, output_scale=1.0):
    """fastrnn's network as torch.nn.LSTM/GRU (PyTorch's parameter names) and
    a Linear head on the last layer's final states, times output_scale."""
    c = net.config
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[c["cell"]](
        c["input_size"], c["hidden_size"], num_layers=c["num_layers"],
        bidirectional=c["bidirectional"], batch_first=True)
    D = 2 if c["bidirectional"] else 1
    head = torch.nn.Linear(D * c["hidden_size"], c["output_size"])
    state = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in net.state_dict().items()}
    rnn.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})

    def forward(x):
        _, h = rnn(x)
        h = h[0] if c["cell"] == "lstm" else h
        return head(torch.cat(list(h[-D:]), dim=1)) * output_scale
    return forward


def _captum_pair(model, target_index, X, n_steps):
    """captum's saliency and integrated gradients of model(x)[target]. captum's
    riemann_trapezoid on n_steps + 1 points weighs them 1/(n_steps + 1) (ends
    halved), fastrnn's trapezoid 1/n_steps: the same sum up to that factor."""
    torch, attr = import_captum()
    x = torch.from_numpy(np.ascontiguousarray(X, np.float32)).requires_grad_()
    target = torch.from_numpy(np.asarray(target_index))
    saliency = attr.Saliency(model).attribute(x, target=target, abs=True)
    ig = attr.IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=n_steps + 1,
        method="riemann_trapezoid")
    return saliency.detach().numpy(), ig.detach().numpy() * (n_steps + 1) / n_steps


def test_saliency_and_integrated_gradients_equal_captums_for_a_classifier(classifier):
    torch, _ = import_captum()
    clf, X = classifier
    target = np.arange(20) % 3  # every class, not only the predicted one
    saliency, ig = _captum_pair(torch_model(torch, clf.model_), target, X[:20], 50)
    labels = clf.classes_[target]
    np.testing.assert_allclose(clf.explain(X[:20], "saliency", target=labels), saliency,
                               rtol=1e-4, atol=1e-4 * np.abs(saliency).max())
    np.testing.assert_allclose(clf.explain(X[:20], target=labels, n_steps=50), ig,
                               rtol=1e-4, atol=1e-4 * np.abs(ig).max())


def test_saliency_and_integrated_gradients_equal_captums_for_a_regressor(regressor):
    torch, _ = import_captum()
    reg, X = regressor
    scale = torch.from_numpy(np.asarray(reg.y_scale_, np.float32))
    saliency, ig = _captum_pair(torch_model(torch, reg.model_, scale), np.ones(20, int),
                                X[:20], 16)
    np.testing.assert_allclose(reg.explain(X[:20], "saliency", target=1), saliency,
                               rtol=1e-4, atol=1e-4 * np.abs(saliency).max())
    np.testing.assert_allclose(reg.explain(X[:20], target=1, n_steps=16), ig,
                               rtol=1e-4, atol=1e-4 * np.abs(ig).max())


# ---------------------------------------------------------------------------------------------
# known answers: only some steps / features carry the label


def test_attributions_land_on_the_cells_a_regression_target_is_made_of():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 6, 2))
    y = 2 * X[:, 1, 0] - X[:, 3, 1]
    reg = _fit(FastLSTMRegressor(hidden_size=8, max_iter=60, learning_rate_init=0.02,
                                 random_state=0), X, y)
    cells = (np.array([1, 3]), np.array([0, 1]))
    assert _fraction(reg.explain(X[:50], n_steps=32), cells) >= 0.8
    assert _fraction(reg.explain(X[:50], "occlusion"), np.array([1, 3])) >= 0.8


def test_attributions_land_on_the_step_that_carries_the_label():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 6, 3))
    y = (X[:, 2].sum(axis=1) > 0).astype(int)
    clf = _fit(FastGRUClassifier(hidden_size=8, max_iter=60, learning_rate_init=0.02,
                                 random_state=0), X, y)
    assert _fraction(clf.explain(X[:50], n_steps=32), 2) >= 0.8
    assert _fraction(clf.explain(X[:50], "occlusion"), 2) >= 0.8


def test_attributions_land_on_the_feature_that_carries_the_label():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 6, 3))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    clf = _fit(FastLSTMClassifier(hidden_size=8, max_iter=60, learning_rate_init=0.02,
                                  random_state=0), X, y)
    assert _fraction(clf.explain(X[:50], n_steps=32), (slice(None), 0)) >= 0.8


# ---------------------------------------------------------------------------------------------
# Forecaster and SequenceGenerator


def test_forecaster_attributes_the_next_value_to_past_steps_and_exogenous_columns():
    rng = np.random.default_rng(0)
    t = np.arange(400)
    exog = rng.normal(size=(400, 1))
    series = np.sin(t / 5.0) + 0.5 * np.roll(exog[:, 0], 1)
    fc = Forecaster(lookback=8, hidden_size=8, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fc.fit(series[:300], X=exog[:300])
    A = fc.explain(series[:300], X=exog[:300], n_steps=64)
    assert A.shape == (8, 2)
    # integrated gradients from the all-mean window, in the series' units
    forecast = fc.predict(1, series[:300], X=exog[:300], X_future=exog[300:301])
    at_mean = fc.predict(1, np.full(8, fc.mean_[0]), X=np.full((8, 1), fc.exog_mean_[0]),
                         X_future=exog[300:301])
    np.testing.assert_allclose(A.sum(), (forecast - at_mean)[0], rtol=0.01)


def test_generator_attributes_the_next_token_to_the_prompt_tokens():
    gen = SequenceGenerator(hidden_size=16, embedding_dim=8, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gen.fit("abcd abce abcf " * 30)
    A = gen.explain("ab", target="c", output="probability")
    assert A.shape == (2,) and np.all(np.isfinite(A))
    np.testing.assert_array_equal(gen.explain("ab", method="occlusion", target="c").shape, (2,))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        gen.explain("ab", target="z")


# ---------------------------------------------------------------------------------------------
# pictures


def test_plot_writes_heatmaps_and_token_pictures(tmp_path, classifier):
    pytest.importorskip("matplotlib")
    from fastrnn.plot import attributions
    clf, X = classifier
    A = clf.explain(X[:1])[0]
    for name, kwargs in [("heatmap.png", {}), ("with_inputs.png", {"inputs": X[0]}),
                         ("tokens.png", {"tokens": list("abcdef")})]:
        values = A.sum(axis=1) if "tokens" in kwargs else A
        path = attributions(values, tmp_path / name, title=name, **kwargs)
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="one sample"):
        attributions(A[None], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="one per token"):
        attributions(A, tmp_path / "bad.png", tokens=list("ab"))


def test_explain_leaves_parameters_and_their_gradients_as_they_are(classifier):
    clf, X = classifier
    params, grads = clf.model_.flat_params.copy(), clf.model_.flat_grads.copy()
    for method in ("saliency", "integrated_gradients", "occlusion"):
        clf.explain(X[:5], method=method, n_steps=4)
    np.testing.assert_array_equal(clf.model_.flat_params, params)
    np.testing.assert_array_equal(clf.model_.flat_grads, grads)


# ---------------------------------------------------------------------------------------------
# command line: fastrnn explain MODEL DATA.csv --plot DIR


def test_cli_explains_a_saved_model_on_a_training_csv(tmp_path, capsys, rng):
    from fastrnn.cli import main
    X = rng.normal(size=(80, 6))
    y = np.where(X[:, 2] > 0, "up", "down")
    est = _fit(FastLSTMClassifier(hidden_size=4, max_iter=3, random_state=0), X, y)
    est.save(tmp_path / "model.npz")
    lines = [",".join([f"t{i}" for i in range(6)] + ["label"])]
    lines += [",".join([f"{v:.6f}" for v in row] + [label]) for row, label in zip(X, y)]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    argv = ["explain", str(tmp_path / "model.npz"), str(tmp_path / "data.csv"), "--n-plots", "2"]
    assert main(argv + (["--plot", str(tmp_path / "pictures")] if has_matplotlib else [])) == 0
    out = capsys.readouterr().out
    first = est.explain(X[:1])[0]
    assert f"sequence 0: prediction {est.predict(X[:1])[0]}; strongest steps " \
           f"{np.argmax(np.abs(first))} ({first[np.argmax(np.abs(first))]:+.3g})" in out
    if has_matplotlib:
        assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == \
            ["explain_0.png", "explain_1.png"]
    assert main(["explain", str(tmp_path / "model.npz"), str(tmp_path / "missing.csv")]) == 2


@pytest.mark.parametrize("options", [dict(norm="batch", residual=True, num_layers=2),
                                     dict(norm="layer", layer_norm=True, bidirectional=True),
                                     dict(layer_norm=True, recurrent_dropout=0.2, dropout=0.2)])
def test_input_gradient_of_normalized_residual_models_matches_finite_differences(rng, options):
    """Attributions see the whole inference function: the between-layer norms
    (batch norm with its running statistics), residual connections and
    layer-normalized cells, without dropout; parameters and gradients stay."""
    X = rng.normal(size=(60, 5, 3))
    y = (X[:, 2, 0] > 0).astype(int)
    clf = _fit(FastLSTMClassifier(hidden_size=6, max_iter=3, random_state=0, dtype="float64",
                                  **options), X, y)
    net, x = clf.model_, X[:4]
    params, grads = net.flat_params.copy(), net.flat_grads.copy()
    net.forward(x, keep_for_backward=True)
    d_out = rng.normal(size=(4, 1))
    analytic = net.input_gradient(d_out)
    numeric = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        for sign in (1, -1):
            xp = x.copy()
            xp[idx] += sign * 1e-6
            numeric[idx] += sign * float((net.forward(xp) * d_out).sum()) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(net.flat_params, params)
    np.testing.assert_array_equal(net.flat_grads, grads)
