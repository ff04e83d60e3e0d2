"""Errors a newcomer understands: each message says what was wrong and what is
accepted, and none prints a whole array (issue 12, item 7)."""
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import FastLSTM, FastLSTMClassifier, FastLSTMRegressor

SHORT = 400  # characters: more than any message needs, far less than an array dump


@pytest.fixture(scope="module")
def fitted_3d():
    X = np.random.default_rng(0).normal(size=(12, 5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FastLSTMRegressor(hidden_size=4, max_iter=1, random_state=0).fit(X, X.sum((1, 2)))


def message(excinfo):
    text = str(excinfo.value)
    assert len(text) < SHORT, text
    return text


@pytest.mark.parametrize("shape", [(6, 5, 3, 2), (6, 5, 3, 2, 1)])
def test_too_many_dimensions_name_the_accepted_shapes(shape):
    X = np.zeros(shape)
    with pytest.raises(ValueError) as excinfo:
        FastLSTMRegressor(max_iter=1).fit(X, np.zeros(shape[0]))
    text = message(excinfo)
    assert f"{len(shape)} dimensions" in text and str(shape) in text
    assert "3-D (n_samples, n_timesteps, n_features)" in text and "list of" in text
    assert "dim <= 2" not in text


def test_token_input_with_three_dimensions_names_token_forms():
    with pytest.raises(ValueError) as excinfo:
        FastLSTMClassifier(embedding_dim=4, max_iter=1).fit(np.zeros((4, 5, 2), int), [0, 1] * 2)
    assert "integer token ids" in message(excinfo)


def test_one_dimensional_X_keeps_the_reshape_hint_without_the_array():
    X = np.arange(5000.0)
    with pytest.raises(ValueError, match="Reshape your data") as excinfo:
        FastLSTMRegressor(max_iter=1).fit(X, np.zeros(5000))
    text = message(excinfo)
    assert "(5000,)" in text and "4999" not in text


def test_2d_X_after_a_3d_fit_says_so(fitted_3d):
    with pytest.raises(ValueError) as excinfo:
        fitted_3d.predict(np.zeros((2, 5)))
    text = message(excinfo)
    assert "fitted on 3-D" in text and "with 3 features" in text and "X is 2-D" in text
    assert "expecting 3 features" not in text  # not a feature-count problem


def test_feature_count_message_is_unchanged_for_3d(fitted_3d):
    with pytest.raises(ValueError, match="X has 7 features, but FastLSTMRegressor is expecting 3"):
        fitted_3d.predict(np.zeros((2, 5, 7)))


@pytest.mark.parametrize("y", [np.array(["a", "b"] * 3), ["a", "b"] * 3,
                               np.array(["a", "b"] * 3, dtype=object)])
def test_string_targets_for_a_regressor_say_so(y):
    with pytest.raises(ValueError) as excinfo:
        FastLSTMRegressor(max_iter=1).fit(np.zeros((6, 4, 2)), y)
    text = message(excinfo)
    assert "strings" in text and "regressor" in text and "classifier" in text


def test_string_targets_with_task_regression_say_so():
    with pytest.raises(ValueError, match="a regressor needs numeric targets"):
        FastLSTM(task="regression", max_iter=1).fit(np.zeros((6, 4, 2)), ["x", "y"] * 3)


def test_numeric_strings_still_count_as_values():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = FastLSTMRegressor(hidden_size=4, max_iter=1).fit(
            np.zeros((4, 3, 1)), np.array(["1.5", "2", "3", "4"], dtype=object))
    assert reg.n_outputs_ == 1


def test_load_of_a_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "no_such_model.npz"
    with pytest.raises(FileNotFoundError) as excinfo:
        fastrnn.load(path)
    assert str(path) in str(excinfo.value) and excinfo.value.filename == str(path)
    assert isinstance(excinfo.value, fastrnn.ModelFileError)  # still the one error of load


def test_class_mismatch_in_partial_fit_truncates_the_labels():
    X, y = np.zeros((6, 3, 1)), np.array([0, 1, 2] * 2)
    clf = FastLSTMClassifier(hidden_size=4).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="differ from the first call") as excinfo:
        clf.partial_fit(X, y, classes=np.arange(1000))
    text = message(excinfo)
    assert "(1000 values)" in text and "999" not in text


@pytest.mark.parametrize("make_error", [
    lambda: FastLSTMRegressor(max_iter=1).fit(np.zeros((3000, 2, 1)), np.zeros(2999)),
    lambda: FastLSTMRegressor(max_iter=1).fit(np.arange(3000.0), np.zeros(3000)),
    lambda: FastLSTMRegressor(max_iter=1).fit(np.zeros((3000, 2, 1)), ["s"] * 3000),
    lambda: FastLSTMClassifier(max_iter=1).fit(np.zeros((3000, 2, 1)), np.zeros(3000)),
])
def test_no_message_dumps_a_large_array(make_error):
    with pytest.raises(ValueError) as excinfo:
        make_error()
    message(excinfo)
