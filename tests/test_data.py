"""fastrnn._data: the X forms, task and per-step inference, target encoding."""

import numpy as np
import pytest
from sklearn.exceptions import DataConversionWarning

from fastrnn import _data
from fastrnn._data import SequenceData


def test_input_kinds():
    ragged = [np.zeros((3, 2)), np.zeros((5, 2))]
    assert _data.input_kind(np.zeros((4, 6)), tokens=False) == "2d"
    assert _data.input_kind(np.zeros((4, 6, 2)), tokens=False) == "3d"
    assert _data.input_kind(ragged, tokens=False) == "list"
    assert _data.input_kind([np.zeros(3), np.zeros(5)], tokens=True) == "tokens_list"
    assert _data.input_kind(np.zeros((4, 6), int), tokens=True) == "tokens"
    # equal-length lists are arrays, not ragged lists
    assert _data.input_kind([np.zeros((3, 2))] * 2, tokens=False) == "3d"


def test_ragged_lists_are_right_padded_with_lengths():
    seqs = [np.arange(3.0), np.arange(5.0)]  # (T_i,) -> one feature
    values, lengths = _data.read_sequences(seqs, "list", np.float32)
    assert values.shape == (2, 5, 1) and values.dtype == np.float32
    np.testing.assert_array_equal(lengths, [3, 5])
    np.testing.assert_array_equal(values[0, :, 0], [0, 1, 2, 0, 0])
    with pytest.raises(ValueError, match="same number of features"):
        _data.read_sequences([np.zeros((3, 2)), np.zeros((4, 3))], "list", np.float64)
    with pytest.raises(ValueError, match="at least one time step"):
        _data.pad([np.zeros((0, 2)), np.zeros((2, 2))], np.float64)


def test_token_ids_are_checked():
    np.testing.assert_array_equal(_data.check_tokens(np.array([[1.0, 2.0]])), [[1, 2]])
    with pytest.raises(ValueError, match="integer token ids"):
        _data.check_tokens(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=">= 0"):
        _data.read_sequences([np.array([1, -1]), np.array([2])], "tokens_list", np.float32)
    with pytest.raises(ValueError, match="1-D sequence of integer"):
        _data.check_sequence(np.zeros((2, 2)), tokens=True)


def test_predict_time_form_must_match_fit():
    _data.check_same_form("3d", np.zeros((2, 4, 3)), "list", 3, "Est")  # list and 3d mix
    with pytest.raises(ValueError, match="was a 2d input in fit"):
        _data.check_same_form("3d", np.zeros((2, 4, 3)), "2d", 4, "Est")
    with pytest.raises(ValueError, match="Est is expecting 3 features"):
        _data.check_same_form("3d", np.zeros((2, 4, 5)), "3d", 3, "Est")


def test_task_inference():
    assert _data.infer_task(np.array([0, 1]), "auto") == "classification"
    assert _data.infer_task(np.array(["a", "b"]), "auto") == "classification"
    assert _data.infer_task(np.array([True, False]), "auto") == "classification"
    assert _data.infer_task(np.array([0.5, 1.0]), "auto") == "regression"
    assert _data.infer_task([np.array([0.5]), np.array([1.0, 2.0])], "auto") == "regression"
    assert _data.infer_task(np.array([0.5, 1.0]), "classification") == "classification"
    with pytest.raises(ValueError, match="task"):
        _data.infer_task(np.array([1]), "clustering")


def test_per_step_detection():
    full = SequenceData(np.zeros((4, 6, 1)), None)
    ragged = SequenceData(np.zeros((2, 6, 1)), np.array([3, 6]))
    assert _data.detect_per_step(np.zeros((4, 6), int), "auto", "classification", full)
    assert not _data.detect_per_step(np.zeros((4, 6)), "auto", "regression", full)  # multi-output
    assert not _data.detect_per_step(np.zeros((4, 1), int), "auto", "classification", full)
    assert _data.detect_per_step(np.zeros((4, 6, 2)), "auto", "regression", full)
    assert _data.detect_per_step([np.zeros(3), np.zeros(6)], "auto", "regression", ragged)
    assert not _data.detect_per_step(np.zeros((4, 6, 2)), False, "regression", full)


def test_per_step_targets_become_rows_of_valid_steps():
    data = SequenceData(np.zeros((2, 4, 1)), np.array([2, 4], np.int32))
    y = np.arange(8).reshape(2, 4)
    flat, rows = _data.flatten_targets(y, data, per_step=True, classification=True)
    np.testing.assert_array_equal(flat, [0, 1, 4, 5, 6, 7])
    np.testing.assert_array_equal(rows, [0, 0, 1, 1, 1, 1])
    flat_list, _ = _data.flatten_targets([y[0, :2], y[1]], data, True, True)
    np.testing.assert_array_equal(flat_list, flat)
    with pytest.raises(ValueError, match="its sequence's length"):
        _data.flatten_targets([y[0], y[1]], data, True, True)
    # target rows of samples [1, 0] in the order the network emits them
    np.testing.assert_array_equal(_data.target_rows(np.array([1, 0]), rows, data.lengths, 4,
                                                    per_step=True), [2, 3, 4, 5, 0, 1])


def test_target_rows_agree_with_a_loop(rng):
    lengths = rng.integers(1, 7, size=20).astype(np.int32)
    rows = np.repeat(np.arange(20), lengths)
    idx = rng.permutation(20)[:9]
    loop = np.concatenate([np.flatnonzero(rows == i) for i in idx])
    np.testing.assert_array_equal(_data.target_rows(idx, rows, lengths, 6, True), loop)


def test_sequence_targets_and_label_encoding():
    data = SequenceData(np.zeros((3, 4, 1)), None)
    with pytest.warns(DataConversionWarning):
        flat, rows = _data.flatten_targets(np.array([[1], [2], [1]]), data, False, True)
    np.testing.assert_array_equal(flat, [1, 2, 1])
    with pytest.raises(ValueError, match="3 samples but y has 2"):
        _data.flatten_targets(np.zeros(2), data, False, False)
    classes = _data.fit_classes(np.array(["b", "a", "b"]))
    np.testing.assert_array_equal(classes, ["a", "b"])
    np.testing.assert_array_equal(_data.encode_labels(np.array(["b", "a"]), classes), [1, 0])
    with pytest.raises(ValueError, match="not in classes_"):
        _data.encode_labels(np.array(["c"]), classes)
    with pytest.raises(ValueError, match="at least 2 classes"):
        _data.fit_classes(np.array([1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        _data.check_labels(np.array([0.0, np.nan]), per_step=False)


def test_regression_scaling():
    values = _data.as_value_rows(np.array([1.0, 3.0, 5.0]))
    assert values.shape == (3, 1)
    mean, scale = _data.fit_scaling(np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_array_equal(mean, [2.0, 2.0])
    np.testing.assert_array_equal(scale, [1.0, 1.0])  # constant column: scale 1, not 0


def test_sequence_data_batches_trim_to_the_longest():
    data = SequenceData(np.arange(24.0).reshape(3, 8, 1), np.array([2, 8, 3], np.int32),
                        conditions=np.eye(3))
    values, lengths, conditions = data.batch(np.array([0, 2]))
    assert values.shape == (2, 3, 1)
    np.testing.assert_array_equal(lengths, [2, 3])
    np.testing.assert_array_equal(conditions, np.eye(3)[[0, 2]])
    sub = data.subset(np.array([1]))
    assert len(sub) == 1 and sub.step_mask().sum() == 8
    np.testing.assert_array_equal(data.step_mask().sum(axis=1), [2, 8, 3])
