"""SequenceGenerator and Forecaster: save/load in the safe .npz format (through
fastrnn.persistence and its checks), and Forecaster.score in GridSearchCV
(issue 12, item 8)."""
import json
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit

import fastrnn
from fastrnn import Forecaster, ModelFileError, SequenceGenerator, persistence
from fastrnn.datasets import mackey_glass

TEXT = "the cat sat on the mat. the dog sat on the log. " * 4


def quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(*args, **kwargs)


@pytest.fixture(scope="module")
def generator():
    return quiet_fit(SequenceGenerator(hidden_size=8, embedding_dim=4, seq_len=16, max_iter=2,
                                       random_state=0), TEXT)


@pytest.fixture(scope="module")
def series():
    return mackey_glass(300)


@pytest.fixture(scope="module")
def forecaster(series):
    return quiet_fit(Forecaster(lookback=8, horizon=3, hidden_size=6, max_iter=3,
                                random_state=0), series)


def rewrite(path, out, edit_meta=None, edit_arrays=None):
    """Copy a model file with its metadata or arrays changed."""
    with np.load(path, allow_pickle=False) as archive:
        files = {name: archive[name] for name in archive.files}
    meta = json.loads(str(files.pop("metadata")))
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(files)
    with open(out, "wb") as f:
        np.savez(f, metadata=np.array(json.dumps(meta)), **files)
    return out


# ----- SequenceGenerator -----------------------------------------------------------------

def test_generator_round_trip_generates_the_same_text(generator, tmp_path):
    path = tmp_path / "gen.npz"
    generator.save(path)
    loaded = fastrnn.load(path)
    assert type(loaded) is SequenceGenerator
    assert loaded.get_params() == generator.get_params()
    assert loaded.vocabulary_ == generator.vocabulary_ and loaded.text_ is True
    for seed in (0, 1):
        assert loaded.generate(30, prompt="the ", random_state=seed) == \
            generator.generate(30, prompt="the ", random_state=seed)
    assert loaded.score(TEXT[:40]) == pytest.approx(generator.score(TEXT[:40]), rel=1e-6)
    assert loaded.loss_curve_ == pytest.approx(generator.loss_curve_)


def test_token_id_generator_with_conditions_round_trips(tmp_path):
    docs = [[5, 7, 9, 7], [9, 5, 5], [7, 7, 9, 5, 9]]
    conditions = np.eye(3)
    gen = quiet_fit(SequenceGenerator(hidden_size=6, embedding_dim=3, max_iter=2,
                                      random_state=0), docs, conditions)
    gen.save(tmp_path / "tokens.npz")
    loaded = fastrnn.load(tmp_path / "tokens.npz")
    assert loaded.vocabulary_ == [5, 7, 9] and loaded.n_condition_features_ == 3
    for a, b in zip(loaded.generate(8, condition=conditions[1], random_state=3),
                    gen.generate(8, condition=conditions[1], random_state=3)):
        np.testing.assert_array_equal(a, b)


def test_generator_file_holds_no_pickle(generator, tmp_path):
    generator.save(tmp_path / "gen.npz")
    with zipfile.ZipFile(tmp_path / "gen.npz") as zf:
        names = sorted(zf.namelist())
    assert names == ["classes_.npy", "flat_params.npy", "metadata.npy"]
    with np.load(tmp_path / "gen.npz", allow_pickle=False) as archive:
        meta = json.loads(str(archive["metadata"]))
    assert meta["class"] == "FastLSTMClassifier" and meta["wrapper"]["class"] == "SequenceGenerator"


@pytest.mark.parametrize("edit", [
    lambda m: m["wrapper"]["fitted"].update(vocabulary_=["z", "a"]),        # not sorted
    lambda m: m["wrapper"]["fitted"].update(vocabulary_=["ab", "c"]),       # not characters
    lambda m: m["wrapper"]["fitted"].update(vocabulary_=[]),
    lambda m: m["wrapper"]["fitted"].update(text_="yes"),
    lambda m: m["wrapper"]["fitted"].update(n_condition_features_=4),       # network has none
    lambda m: m["wrapper"]["fitted"].update(secret_=1),
    lambda m: m["wrapper"]["params"].update(hidden_size=9),                 # != the network
    lambda m: m["wrapper"]["params"].update(cell="gru"),                    # != the classifier
    lambda m: m["wrapper"]["params"].update(evil="x"),
    lambda m: m["wrapper"].update({"class": "os.system"}),
    lambda m: m.update(wrapper=["SequenceGenerator"]),
])
def test_damaged_generator_files_raise_model_file_error(generator, tmp_path, edit):
    generator.save(tmp_path / "gen.npz")
    bad = rewrite(tmp_path / "gen.npz", tmp_path / "bad.npz", edit_meta=edit)
    with pytest.raises(ModelFileError):
        fastrnn.load(bad)


def test_generator_vocabulary_must_match_the_embedding(generator, tmp_path):
    generator.save(tmp_path / "gen.npz")
    bad = rewrite(tmp_path / "gen.npz", tmp_path / "bad.npz",
                  edit_meta=lambda m: m["wrapper"]["fitted"]["vocabulary_"].append("~"))
    with pytest.raises(ModelFileError, match="next-token model of the vocabulary"):
        fastrnn.load(bad)


def test_generator_vocabulary_must_cover_the_classes(generator, tmp_path):
    generator.save(tmp_path / "gen.npz")
    bad = rewrite(tmp_path / "gen.npz", tmp_path / "bad.npz",
                  edit_arrays=lambda f: f.update(classes_=f["classes_"] + 1000))
    with pytest.raises(ModelFileError):
        fastrnn.load(bad)


# ----- Forecaster ------------------------------------------------------------------------

def test_forecaster_round_trip_predicts_the_same(forecaster, series, tmp_path):
    forecaster.save(tmp_path / "fc.npz")
    loaded = fastrnn.load(tmp_path / "fc.npz")
    assert type(loaded) is Forecaster and loaded.get_params() == forecaster.get_params()
    np.testing.assert_array_equal(loaded.predict(7), forecaster.predict(7))
    np.testing.assert_array_equal(loaded.predict(4, series=series[:50]),
                                  forecaster.predict(4, series=series[:50]))
    assert loaded.score(series[-40:]) == forecaster.score(series[-40:])


def test_multivariate_direct_forecaster_with_exogenous_inputs_round_trips(tmp_path):
    t = np.arange(120.0)
    values = np.column_stack([np.sin(t / 5), np.cos(t / 7)])
    exog = (t % 12)[:, None]
    fc = quiet_fit(Forecaster(lookback=6, horizon=2, strategy="direct", hidden_size=5,
                              max_iter=2, random_state=0), values, exog)
    fc.save(tmp_path / "fc.npz")
    loaded = fastrnn.load(tmp_path / "fc.npz")
    future = (np.arange(120, 125) % 12)[:, None]
    np.testing.assert_array_equal(loaded.predict(5, X_future=future),
                                  fc.predict(5, X_future=future))
    assert loaded.n_exog_ == 1 and loaded.predict(5, X_future=future).shape == (5, 2)


def test_forecaster_refit_without_exog_saves_no_stale_exog_scaling(series, tmp_path):
    fc = Forecaster(lookback=5, hidden_size=4, max_iter=1, random_state=0)
    quiet_fit(fc, series[:80], np.arange(80.0)[:, None])
    quiet_fit(fc, series[:80])
    fc.save(tmp_path / "fc.npz")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "fc.npz").predict(3), fc.predict(3))


@pytest.mark.parametrize("edit_meta, edit_arrays", [
    (lambda m: m["wrapper"]["params"].update(lookback=9), None),     # history_ has 8 rows
    (lambda m: m["wrapper"]["params"].update(strategy="sideways"), None),
    (lambda m: m["wrapper"]["params"].update(horizon=0), None),
    (lambda m: m["wrapper"]["params"].update(strategy="direct"), None),  # 1 output, not 3
    (lambda m: m["wrapper"]["fitted"].update(n_series_=2), None),
    (lambda m: m["wrapper"]["fitted"].update(n_exog_=True), None),
    (lambda m: m["wrapper"]["fitted"].pop("univariate_"), None),
    (None, lambda f: f.update({"wrapper.scale_": np.zeros(1)})),
    (None, lambda f: f.update({"wrapper.history_": np.full((8, 1), np.nan)})),
    (None, lambda f: f.pop("wrapper.mean_")),
    (None, lambda f: f.update({"wrapper.exog_mean_": np.zeros(1)})),
    (lambda m: m.pop("wrapper"), None),                               # arrays without a wrapper
])
def test_damaged_forecaster_files_raise_model_file_error(forecaster, tmp_path, edit_meta,
                                                         edit_arrays):
    forecaster.save(tmp_path / "fc.npz")
    bad = rewrite(tmp_path / "fc.npz", tmp_path / "bad.npz", edit_meta, edit_arrays)
    with pytest.raises(ModelFileError):
        fastrnn.load(bad)


def test_wrapper_array_names_are_the_ones_the_loader_admits():
    stored = Forecaster._FITTED_ARRAYS + Forecaster._EXOG_ARRAYS
    assert {persistence.WRAPPER_PREFIX + n for n in stored} == persistence._WRAPPER_ARRAY_NAMES


def test_an_estimator_loader_without_wrappers_refuses_a_wrapper_file(forecaster, tmp_path):
    forecaster.save(tmp_path / "fc.npz")
    with pytest.raises(ModelFileError, match="unknown wrapper class"):
        persistence.load(tmp_path / "fc.npz", fastrnn.estimators.ESTIMATORS)


# ----- Forecaster.score ------------------------------------------------------------------

def test_score_is_minus_the_mse_of_forecasting_the_last_horizon_steps(forecaster, series):
    tail = series[-50:]
    expected = -np.mean((forecaster.predict(3, series=tail[:-3]) - tail[-3:]) ** 2)
    assert forecaster.score(tail) == pytest.approx(expected)
    assert forecaster.score(tail) <= 0


def test_score_with_exogenous_inputs_uses_their_tail_as_the_future():
    t = np.arange(100.0)
    exog = np.sin(t / 3)[:, None]
    values = np.cos(t / 4) + exog[:, 0]
    fc = quiet_fit(Forecaster(lookback=6, horizon=2, hidden_size=4, max_iter=2,
                              random_state=0), values, exog)
    expected = -np.mean((fc.predict(2, series=values[:-2], X=exog[:-2], X_future=exog[-2:])
                         - values[-2:]) ** 2)
    assert fc.score(values, exog) == pytest.approx(expected)


def test_score_needs_lookback_plus_horizon_steps(forecaster, series):
    with pytest.raises(ValueError, match="lookback \\+ horizon = 11"):
        forecaster.score(series[:10])


def test_grid_search_ranks_forecasters_by_score(series):
    search = GridSearchCV(Forecaster(lookback=8, horizon=2, max_iter=3, random_state=0),
                          {"hidden_size": [2, 8]}, cv=TimeSeriesSplit(n_splits=2))
    quiet_fit(search, series[:200])
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all(scores <= 0)
    assert search.best_params_["hidden_size"] == [2, 8][int(np.argmax(scores))]
    assert search.best_estimator_.predict(2).shape == (2,)


# ----- any change to a wrapper file: ModelFileError, or a wrapper that works --------------

HOSTILE = [None, True, -1, 0, 2.5, 10**6, 2**70, float("nan"), "x", "os.system", [], {},
           ["a", 1], [[1]]]


def works_or_refuses(path, use):
    """load raises ModelFileError, or gives a wrapper whose use() works (or
    refuses its input with a ValueError)."""
    try:
        loaded = fastrnn.load(path)
    except ModelFileError:
        return
    try:
        use(loaded)
    except ValueError:
        pass


@pytest.mark.parametrize("which", ["generator", "forecaster"])
def test_mutated_wrapper_entries_never_escape_model_file_error(which, generator, forecaster,
                                                               tmp_path):
    wrapper, use = {
        "generator": (generator, lambda g: g.generate(5, prompt="the", random_state=0)),
        "forecaster": (forecaster, lambda f: f.predict(4)),
    }[which]
    wrapper.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz", allow_pickle=False) as archive:
        entry = json.loads(str(archive["metadata"]))["wrapper"]
    keys = [("class",)] + [(part, name) for part in ("params", "fitted")
                           for name in entry[part]]
    for i, key in enumerate(keys):
        for j, value in enumerate(HOSTILE):
            def edit(meta, key=key, value=value):
                node = meta["wrapper"]
                for part in key[:-1]:
                    node = node[part]
                node[key[-1]] = value
            bad = rewrite(tmp_path / "good.npz", tmp_path / f"bad{i}_{j}.npz", edit_meta=edit)
            works_or_refuses(bad, use)
    with np.load(tmp_path / "good.npz", allow_pickle=False) as archive:
        names = [n for n in archive.files if n.startswith(persistence.WRAPPER_PREFIX)]
    for name in names:
        for value in (np.zeros(0), np.zeros((2, 2, 2)), np.array(["x"]), np.array([np.inf])):
            bad = rewrite(tmp_path / "good.npz", tmp_path / "bad_array.npz",
                          edit_arrays=lambda f, name=name, value=value: f.update({name: value}))
            works_or_refuses(bad, use)
