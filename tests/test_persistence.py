"""fastrnn.persistence: pickle, joblib and the .npz format; the estimator
owns what is stored (_get_fitted_state / _set_fitted_state)."""
import ast
import inspect
import json
import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone

import fastrnn
from fastrnn import FastGRUClassifier, FastLSTMRegressor, FastRNN, persistence

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def fitted(small_task):
    X, y = small_task
    labels = np.where(y == 1, "pos", "neg")
    clf = FastGRUClassifier(max_iter=2, bidirectional=True,
                            class_weight={"pos": 2.0, "neg": 1.0}, random_state=0)
    return clf.fit(X, labels), X, labels


def test_pickle_joblib_and_save_load_round_trip(fitted, tmp_path):
    clf, X, _ = fitted
    expected = clf.predict_proba(X)
    for restored in (pickle.loads(pickle.dumps(clf)),
                     joblib.load(joblib.dump(clf, tmp_path / "m.joblib")[0])):
        np.testing.assert_array_equal(restored.predict_proba(X), expected)
    path = tmp_path / "model.npz"
    clf.save(path)
    loaded = fastrnn.load(path)
    assert type(loaded) is FastGRUClassifier
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.get_params() == clf.get_params()
    assert loaded.loss_curve_ == clf.loss_curve_
    for name in clf._FITTED_SCALARS:
        assert getattr(loaded, name, None) == getattr(clf, name, None), name


def test_regression_per_step_and_token_models_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5, 2))
    reg = FastLSTMRegressor(max_iter=2, early_stopping=True, random_state=0).fit(
        X, 10 + 3 * np.cumsum(X, axis=1))
    seqs = [rng.integers(0, 4, size=n) for n in rng.integers(2, 7, size=30)]
    tagger = FastRNN(embedding_dim=3, max_iter=2, random_state=0).fit(
        seqs, [s % 2 for s in seqs])
    for est, data in ((reg, X), (tagger, seqs)):
        est.save(tmp_path / "m.npz")
        loaded = fastrnn.load(tmp_path / "m.npz")
        for a, b in zip(est.predict(data), loaded.predict(data)):
            np.testing.assert_array_equal(a, b)
    assert loaded.validation_scores_ is None
    reg.save(tmp_path / "r.npz")
    assert fastrnn.load(tmp_path / "r.npz").validation_scores_ == reg.validation_scores_
    assert len(reg.validation_scores_) == reg.n_iter_


def test_the_estimator_restores_its_own_state(fitted, tmp_path):
    clf, X, labels = fitted
    attributes, arrays, model = clf._get_fitted_state()
    assert set(arrays) == {"classes_"} and "loss_curve_" in attributes
    fresh = clone(clf)._set_fitted_state(attributes, arrays, model)
    np.testing.assert_array_equal(fresh.predict_proba(X), clf.predict_proba(X))
    fresh.set_params(warm_start=True, max_iter=1).fit(X, labels)  # training goes on
    assert fresh.n_iter_ == clf.n_iter_ + 1
    with pytest.raises(ValueError, match="unknown fitted attributes"):
        clone(clf)._set_fitted_state(dict(attributes, secret_=1), arrays, model)


def _rewrite_metadata(path, change):
    with np.load(path) as archive:
        files = {name: archive[name] for name in archive.files}
    meta = json.loads(str(files.pop("metadata")))
    change(meta)
    np.savez(path, metadata=np.array(json.dumps(meta)), **files)


def test_files_of_the_first_layout_and_unknown_classes(fitted, tmp_path):
    clf, X, _ = fitted
    path = tmp_path / "old.npz"
    clf.save(path)

    def first_layout(meta):  # fastrnn 0.1.0 kept the curves beside "fitted"
        meta["loss_curve_"] = meta["fitted"].pop("loss_curve_")
        meta["validation_scores_"] = meta["fitted"].pop("validation_scores_")
    _rewrite_metadata(path, first_layout)
    old = fastrnn.load(path)
    assert old.loss_curve_ == clf.loss_curve_
    np.testing.assert_array_equal(old.predict_proba(X), clf.predict_proba(X))
    _rewrite_metadata(path, lambda meta: meta.update({"class": "os.system"}))
    with pytest.raises(ValueError, match="unknown estimator class"):
        fastrnn.load(path)


def test_load_refuses_corrupt_and_foreign_files(small_task, tmp_path):
    X, y = small_task
    good = tmp_path / "good.npz"
    FastLSTMRegressor(max_iter=1).fit(X, X[:, 0, 0]).save(good)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(good.read_bytes()[:200])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"evil": 1}))
    for path in (corrupt, foreign, pickled, tmp_path / "missing.npz"):
        with pytest.raises(ValueError, match="fastrnn model file"):
            fastrnn.load(path)
    nan_weights = tmp_path / "nan.npz"
    nan_weights.write_bytes(good.read_bytes())
    with np.load(nan_weights) as archive:
        files = {name: archive[name] for name in archive.files}
    files["flat_params"][:] = np.nan
    np.savez(nan_weights, **files)
    with pytest.raises(ValueError, match="damaged.*NaN"):
        fastrnn.load(nan_weights)


def test_persistence_does_not_import_the_estimators():
    """Imports point one way: estimators -> persistence -> network."""
    tree = ast.parse(inspect.getsource(persistence))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not imported & {"fastrnn.estimators", "fastrnn._base"}
