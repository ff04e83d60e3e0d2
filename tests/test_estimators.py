"""fastrnn.estimators and fastrnn._base: API conformance, parameters and
docstrings, input forms, the training loop, and learning on real data
(persistence: test_persistence.py; input preparation: test_data.py)."""
import doctest
import inspect
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastrnn import (FastGRU, FastGRUClassifier, FastGRURegressor, FastLSTM, FastLSTMClassifier,
                     FastLSTMRegressor, FastRNN, FastRNNClassifier, FastRNNRegressor,
                     TrainingDivergedError)
from fastrnn import _base
from fastrnn.estimators import ESTIMATORS, estimator_class
from fastrnn.network import Network

FIXED = [FastLSTMClassifier, FastLSTMRegressor, FastGRUClassifier, FastGRURegressor,
         FastRNNClassifier, FastRNNRegressor]
SAMPLE_WEIGHT_REASON = (
    "shuffled mini-batch training: repeating a sample changes the batches and the number of "
    "updates, so integer weights and repetitions give different (equally valid) fits")


def _expected_failures(estimator):
    return {"check_sample_weight_equivalence_on_dense_data": SAMPLE_WEIGHT_REASON}


@parametrize_with_checks([cls(hidden_size=32, max_iter=100, learning_rate_init=0.01,
                              random_state=0) for cls in FIXED],
                         expected_failed_checks=_expected_failures)
def test_scikit_learn_conformance(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8)  # 8 rows of 8 pixels: an 8-step sequence
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def quiet_fit(est, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kw)


# ----- learning on real tasks -----------------------------------------------------------------


def test_digits_classification_reaches_95_percent(digits):
    Xtr, Xte, ytr, yte = digits
    clf = quiet_fit(FastLSTMClassifier(hidden_size=64, max_iter=40, learning_rate_init=0.005,
                                       random_state=0), Xtr, ytr)
    assert clf.score(Xte, yte) >= 0.95
    proba = clf.predict_proba(Xte)
    assert proba.shape == (len(Xte), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(Xte))


def _noisy_sine_windows(n=600, lookback=20, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n + lookback + 1)
    series = np.sin(0.2 * t) + 0.5 * np.sin(0.031 * t) + 0.05 * rng.normal(size=t.size)
    X = np.stack([series[i:i + lookback] for i in range(n)])
    y = series[lookback:lookback + n]
    return X, y


def test_sine_forecast_beats_naive_last_value():
    X, y = _noisy_sine_windows()
    Xtr, Xte, ytr, yte = X[:500], X[500:], y[:500], y[500:]
    reg = quiet_fit(FastGRURegressor(hidden_size=32, max_iter=60, learning_rate_init=0.01,
                                     random_state=0), Xtr, ytr)
    mse = np.mean((reg.predict(Xte) - yte) ** 2)
    naive = np.mean((Xte[:, -1] - yte) ** 2)
    assert mse < 0.3 * naive, (mse, naive)


def test_token_classifier_learns_order():
    """Label: does token 1 come before token 2? Needs order, not counts."""
    rng = np.random.default_rng(0)
    n, T = 1200, 10
    X = rng.integers(3, 10, size=(n, T))
    y = rng.integers(0, 2, size=n)
    for i in range(n):
        a, b = sorted(rng.choice(T, 2, replace=False))
        X[i, a], X[i, b] = (1, 2) if y[i] else (2, 1)
    clf = quiet_fit(FastLSTMClassifier(embedding_dim=8, hidden_size=32, max_iter=30,
                                       learning_rate_init=0.01, random_state=0),
                    X[:1000], y[:1000])
    assert clf.score(X[1000:], y[1000:]) >= 0.9
    assert "embedding.weight" in clf.model_.state_dict()


# ----- input and target forms -----------------------------------------------------------------


def test_task_is_inferred_from_y():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5, 2))
    labels = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    values = X[:, :, 0].sum(axis=1)
    assert quiet_fit(FastLSTM(max_iter=2), X, labels).task_ == "classification"
    assert quiet_fit(FastGRU(max_iter=2), X, values).task_ == "regression"
    assert quiet_fit(FastRNN(max_iter=2), X, np.where(labels, "yes", "no")).task_ == \
        "classification"
    assert quiet_fit(FastLSTM(max_iter=2, task="regression"), X, labels).task_ == "regression"
    reg = quiet_fit(FastLSTM(max_iter=2), X, values)
    assert not hasattr(reg, "predict_proba")
    with pytest.raises(ValueError, match="task"):
        FastLSTM(task="clustering").fit(X, labels)


def test_string_labels_and_binary_output():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4, 3))
    y = np.where(X[:, :, 0].mean(axis=1) > 0, "up", "down")
    clf = quiet_fit(FastGRUClassifier(max_iter=30, learning_rate_init=0.02, random_state=0),
                    X, y)
    assert set(clf.predict(X)) <= {"up", "down"}
    assert clf.model_.config["output_size"] == 1  # binary: one sigmoid output
    assert clf.score(X, y) > 0.8


def test_ragged_list_input_matches_padded_with_lengths():
    rng = np.random.default_rng(2)
    seqs = [rng.normal(size=(L, 3)) for L in rng.integers(2, 9, size=50)]
    y = np.array([s[:, 0].sum() > 0 for s in seqs]).astype(int)
    clf = quiet_fit(FastLSTMClassifier(max_iter=3, random_state=0), seqs, y)
    proba = clf.predict_proba(seqs)
    # the same sequences padded with garbage after their end give the same answer
    T = max(len(s) for s in seqs)
    padded = [np.vstack([s, np.full((T - len(s), 3), 7.0)]) for s in seqs]
    lengths_matter = clf.predict_proba(padded)
    assert not np.allclose(proba, lengths_matter)
    one_by_one = np.vstack([clf.predict_proba(s[None]) for s in seqs])
    np.testing.assert_allclose(proba, one_by_one, rtol=1e-5, atol=1e-6)


def test_per_step_tagging_masks_padding():
    rng = np.random.default_rng(3)
    seqs = [rng.integers(0, 4, size=L) for L in rng.integers(3, 12, size=300)]
    tags = [(s >= 2).astype(int) for s in seqs]  # tag depends on the token itself
    clf = quiet_fit(FastGRUClassifier(embedding_dim=4, hidden_size=16, max_iter=15,
                                      learning_rate_init=0.02, random_state=0), seqs, tags)
    assert clf.per_step_
    pred = clf.predict(seqs)
    assert [len(p) for p in pred] == [len(s) for s in seqs]
    assert clf.score(seqs, tags) > 0.95
    proba = clf.predict_proba(seqs[:2])
    assert proba[0].shape == (len(seqs[0]), 2)


def test_many_to_many_and_multi_output_regression():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(80, 6, 2))
    y_steps = np.cumsum(X, axis=1)  # (n, T, 2): running sums
    reg = quiet_fit(FastLSTMRegressor(max_iter=40, learning_rate_init=0.02, random_state=0),
                    X, y_steps)
    assert reg.per_step_ and reg.predict(X).shape == (80, 6, 2)
    assert reg.score(X, y_steps) > 0.8
    y_multi = X.sum(axis=1)  # (n, 2)
    reg2 = quiet_fit(FastGRURegressor(max_iter=40, learning_rate_init=0.02, random_state=0),
                     X, y_multi)
    assert not reg2.per_step_ and reg2.predict(X).shape == (80, 2)


def test_bad_inputs_raise_clear_errors():
    X = np.zeros((10, 4, 2))
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match="NaN"):
        FastLSTMClassifier().fit(np.full((10, 4, 2), np.nan), y)
    with pytest.raises(ValueError, match="samples"):
        FastLSTMClassifier().fit(X, y[:5])
    with pytest.raises(ValueError, match="2 classes"):
        FastLSTMClassifier().fit(X, np.zeros(10))
    with pytest.raises(ValueError, match="hidden_size"):
        FastLSTMClassifier(hidden_size=0).fit(X, y)
    with pytest.raises(ValueError, match="solver"):
        FastLSTMClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="token"):
        FastLSTMClassifier(embedding_dim=4).fit(np.full((10, 4), 0.5), y)
    clf = quiet_fit(FastLSTMClassifier(max_iter=1), X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(np.zeros((3, 4, 5)))
    tok = quiet_fit(FastLSTMClassifier(max_iter=1, embedding_dim=3), np.arange(40).reshape(10, 4)
                    % 5, y)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.predict(np.full((2, 4), 9))


# ----- training loop -------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["sgd", "rmsprop", "adagrad", "adam"])
@pytest.mark.parametrize("schedule", ["constant", "exponential", "step", "plateau"])
def test_every_solver_and_schedule_learns(solver, schedule, small_task):
    X, y = small_task
    lr = {"sgd": 0.1, "rmsprop": 0.01, "adagrad": 0.1, "adam": 0.01}[solver]
    clf = quiet_fit(FastGRUClassifier(solver=solver, learning_rate=schedule,
                                      learning_rate_init=lr, lr_decay=0.9, lr_decay_every=3,
                                      max_iter=25, hidden_size=16, random_state=0), X, y)
    assert clf.loss_curve_[-1] < 0.6 * clf.loss_curve_[0]
    assert clf.score(X, y) > 0.85


def test_fit_is_reproducible_bit_for_bit(small_task):
    X, y = small_task
    a = quiet_fit(FastLSTMClassifier(max_iter=3, dropout=0.3, num_layers=2, random_state=7),
                  X, y)
    b = quiet_fit(FastLSTMClassifier(max_iter=3, dropout=0.3, num_layers=2, random_state=7),
                  X, y)
    np.testing.assert_array_equal(a.model_.flat_params, b.model_.flat_params)
    c = quiet_fit(FastLSTMClassifier(max_iter=3, dropout=0.3, num_layers=2, random_state=8),
                  X, y)
    assert not np.array_equal(a.model_.flat_params, c.model_.flat_params)


def test_early_stopping_keeps_best_weights(small_task):
    X, y = small_task
    clf = quiet_fit(FastLSTMClassifier(early_stopping=True, n_iter_no_change=3, max_iter=100,
                                       learning_rate_init=0.02, random_state=0), X, y)
    assert clf.n_iter_ < 100
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_class_weight_and_sample_weight_shift_predictions(small_task):
    X, y = small_task
    base = quiet_fit(FastGRUClassifier(max_iter=10, random_state=0), X, y)
    heavy = quiet_fit(FastGRUClassifier(max_iter=10, random_state=0, class_weight={0: 1, 1: 20}),
                      X, y)
    assert heavy.predict_proba(X)[:, 1].mean() > base.predict_proba(X)[:, 1].mean()
    # "balanced" is the same fit as per-sample weights n / (n_classes * count)
    balanced = quiet_fit(FastGRUClassifier(max_iter=2, class_weight="balanced",
                                           random_state=0), X, y)
    counts = np.bincount(y)
    by_hand = quiet_fit(FastGRUClassifier(max_iter=2, random_state=0), X, y,
                        sample_weight=len(y) / (2 * counts[y]))
    np.testing.assert_array_equal(balanced.model_.flat_params, by_hand.model_.flat_params)
    assert not np.array_equal(balanced.model_.flat_params,
                              quiet_fit(FastGRUClassifier(max_iter=2, random_state=0), X, y)
                              .model_.flat_params)  # the weights do change the fit
    sw = np.where(y == 1, 20.0, 1.0)
    weighted = quiet_fit(FastGRUClassifier(max_iter=10, random_state=0), X, y, sample_weight=sw)
    assert weighted.predict_proba(X)[:, 1].mean() > base.predict_proba(X)[:, 1].mean()


def test_warm_start_and_partial_fit_continue(small_task):
    X, y = small_task
    clf = quiet_fit(FastLSTMClassifier(max_iter=2, warm_start=True, learning_rate="plateau",
                                       lr_decay_every=1, random_state=0), X, y)
    quiet_fit(clf, X, y)
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4
    # two warm fits of 2 epochs continue exactly where the first stopped:
    # weights, optimizer moments, schedule and shuffling as one fit of 4 epochs
    once = quiet_fit(FastLSTMClassifier(max_iter=4, learning_rate="plateau", lr_decay_every=1,
                                        random_state=0), X, y)
    np.testing.assert_array_equal(clf.model_.flat_params, once.model_.flat_params)
    assert clf.loss_curve_ == once.loss_curve_
    cold = quiet_fit(clf.set_params(warm_start=False), X, y)
    assert cold.n_iter_ == 2 and cold.loss_curve_ == once.loss_curve_[:2]
    with pytest.raises(ValueError, match="classes"):
        FastLSTMClassifier().partial_fit(X, y)
    inc = FastLSTMClassifier(random_state=0)
    inc.partial_fit(X[:10], y[:10], classes=[0, 1, 2])
    first = inc.model_.flat_params.copy()
    inc.partial_fit(X, y)
    assert inc.n_iter_ == 2 and list(inc.classes_) == [0, 1, 2]
    assert not np.array_equal(first, inc.model_.flat_params)
    assert inc.predict_proba(X).shape == (len(X), 3)
    with pytest.raises(ValueError, match="differ"):
        inc.partial_fit(X, y, classes=[0, 1])


def test_divergence_stops_with_clear_error_and_finite_weights(small_task):
    X, y = small_task
    reg = FastRNNRegressor(solver="sgd", learning_rate_init=1e6, momentum=0.0, clip_norm=None,
                           nonlinearity="relu", max_iter=50, random_state=0)
    with pytest.raises(TrainingDivergedError, match="learning_rate_init"):
        reg.fit(X * 100, X[:, :, 0].sum(axis=1) * 1e3)
    assert np.all(np.isfinite(reg.model_.flat_params))


def test_ctrl_c_keeps_last_finished_epoch(small_task, monkeypatch):
    X, y = small_task
    clf = FastLSTMClassifier(max_iter=10, batch_size=30, random_state=0)
    calls = {"n": 0}
    original = Network.backward

    def interrupting_backward(self, d_out):
        calls["n"] += 1
        if calls["n"] == 2 * 4 + 2:  # in the middle of epoch 3 (4 batches an epoch)
            raise KeyboardInterrupt
        return original(self, d_out)

    monkeypatch.setattr(Network, "backward", interrupting_backward)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        clf.fit(X, y)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    monkeypatch.undo()
    two_epochs = quiet_fit(FastLSTMClassifier(max_iter=2, batch_size=30, random_state=0), X, y)
    np.testing.assert_array_equal(clf.model_.flat_params, two_epochs.model_.flat_params)


def test_verbose_prints_epoch_lines(small_task, capsys):
    X, y = small_task
    quiet_fit(FastGRUClassifier(max_iter=2, verbose=True), X, y)
    out = capsys.readouterr().out
    assert "epoch 1: loss" in out and "epoch 2: loss" in out


# ----- prediction -------------------------------------------------------------------------------


def test_predict_in_batches_and_from_threads(small_task, monkeypatch):
    X, y = small_task
    clf = quiet_fit(FastLSTMClassifier(max_iter=3, random_state=0), X, y)
    whole = clf.predict_proba(X)
    monkeypatch.setattr(_base, "PREDICT_BATCH", 7)
    np.testing.assert_allclose(clf.predict_proba(X), whole, rtol=1e-6, atol=1e-7)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(clf.predict_proba, [X] * 8))
    for r in results:
        np.testing.assert_allclose(r, whole, rtol=1e-6, atol=1e-7)


# ----- inside scikit-learn ---------------------------------------------------------------------


def test_pipeline_grid_search_cross_val_and_clone():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(90, 8))  # 2-D: univariate sequences of 8 steps
    y = (X[:, :4].sum(axis=1) > X[:, 4:].sum(axis=1)).astype(int)
    pipe = make_pipeline(StandardScaler(), FunctionTransformer(lambda Z: Z[:, :, None]),
                         FastGRUClassifier(max_iter=10, random_state=0))
    quiet_fit(pipe, X, y)
    assert pipe.predict(X).shape == (90,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # one thread: the processes' fits equal the ones made here bit for bit
        grid = GridSearchCV(FastRNNClassifier(max_iter=5, random_state=0, n_threads=1),
                            {"hidden_size": [2, 16]}, cv=2, n_jobs=2).fit(X, y)
        by_hand = [cross_val_score(FastRNNClassifier(hidden_size=h, max_iter=5, random_state=0,
                                                     n_threads=1), X, y, cv=2).mean()
                   for h in (2, 16)]
    np.testing.assert_allclose(grid.cv_results_["mean_test_score"], by_hand)
    assert by_hand[0] != by_hand[1]
    assert grid.best_params_["hidden_size"] == (2, 16)[int(np.argmax(by_hand))]
    assert grid.best_estimator_.model_.config["hidden_size"] == grid.best_params_["hidden_size"]
    fresh = clone(FastGRUClassifier(hidden_size=12, dropout=0.1))
    assert fresh.get_params()["hidden_size"] == 12 and not hasattr(fresh, "model_")


# ----- the classes themselves ------------------------------------------------------------------


def test_the_nine_classes_share_one_signature_and_validate_it():
    signature = inspect.signature(_base.BaseFastRNN.__init__)
    params = set(signature.parameters) - {"self"}
    assert {"task", "class_weight", "nonlinearity"} <= params
    assert all(p.kind is p.KEYWORD_ONLY for n, p in signature.parameters.items() if n != "self")
    assert set(_base.BaseFastRNN._parameter_constraints) == params
    assert "_validate_params" not in vars(_base.BaseFastRNN)  # scikit-learn's is the one
    for name, cls in ESTIMATORS.items():
        assert inspect.signature(cls.__init__) == signature, name
        assert set(cls().get_params()) == params, name
        assert estimator_class(cls._cell, cls._fixed_task) is cls, name


@pytest.mark.parametrize("params,match", [
    (dict(hidden_size=0), "hidden_size"), (dict(solver="lbfgs"), "solver"),
    (dict(learning_rate="cosine"), "learning_rate"), (dict(dropout=1.0), "dropout"),
    (dict(validation_fraction=0.0), "validation_fraction"), (dict(clip_norm=0), "clip_norm"),
    (dict(batch_size=0), "batch_size"), (dict(per_step="sometimes"), "per_step"),
    (dict(n_threads=0), "n_threads"), (dict(dtype="float16"), "dtype"),
    (dict(nonlinearity="sigmoid"), "nonlinearity"), (dict(task="clustering"), "task"),
])
def test_bad_parameters_raise_through_scikit_learn(params, match, small_task):
    from sklearn.utils._param_validation import InvalidParameterError
    X, y = small_task
    with pytest.raises(InvalidParameterError, match=match):
        FastRNN(**params).fit(X, y)


def test_estimator_class_maps_cell_and_task():
    assert len(ESTIMATORS) == 9
    assert estimator_class("lstm") is FastLSTM
    assert estimator_class("gru", "classification") is FastGRUClassifier
    assert estimator_class("rnn", "regression") is FastRNNRegressor
    with pytest.raises(ValueError, match="cell"):
        estimator_class("transformer")


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_docstrings_document_every_parameter_and_their_examples_run(name):
    cls = ESTIMATORS[name]
    doc = inspect.getdoc(cls)
    for section in ("Parameters\n----------", "Attributes\n----------",
                    "Examples\n--------"):
        assert section in doc, section
    for param in inspect.signature(cls).parameters:
        assert f"\n{param} : " in doc, param
    for attribute in ("classes_", "n_features_in_", "loss_curve_", "validation_scores_",
                      "best_loss_", "n_iter_", "model_"):
        assert f"\n{attribute} : " in doc, attribute
    examples = doctest.DocTestFinder().find(cls, name, globs={})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = doctest.DocTestRunner().run(examples)
    assert result.attempted > 3 and result.failed == 0


def test_max_iter_without_convergence_warns_and_early_stop_does_not(small_task):
    X, y = small_task
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        FastGRUClassifier(max_iter=2, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = FastGRUClassifier(max_iter=500, tol=10.0, n_iter_no_change=2,
                                random_state=0).fit(X, y)
    # the first epoch improves on no loss at all; the next two not by tol=10
    assert clf.n_iter_ == 3


def test_auto_task_estimators_offer_predict_proba_only_for_classes(small_task):
    X, y = small_task
    reg = quiet_fit(FastGRU(max_iter=1), X, X[:, 0, 0])
    assert not hasattr(reg, "predict_proba")
    clf = quiet_fit(FastGRU(max_iter=1), X, y)
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1, rtol=1e-6)
