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
