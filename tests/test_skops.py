"""skops.io round trips: a fitted estimator (or wrapper) loads trusting only
fastrnn's own types and NumPy's (issue 12, item 9; docs/skops.md)."""
import warnings

import numpy as np
import pytest

from fastrnn import (FastGRU, FastGRUClassifier, FastLSTMClassifier, FastLSTMRegressor,
                     FastRNNRegressor, Forecaster, Seq2Seq, SequenceGenerator)
from fastrnn.persistence import SKOPS_TRUSTED_TYPES

sio = pytest.importorskip("skops.io")

RNG = np.random.default_rng(3)
X = RNG.normal(size=(24, 5, 2))
LABELS = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
VALUES = X.sum(axis=(1, 2))
TOKENS = RNG.integers(0, 6, size=(24, 5))


def fitted(est, *args, method="fit", **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(est, method)(*args, **kwargs)


CASES = {
    "lstm-classifier-strings": (
        lambda: fitted(FastLSTMClassifier(hidden_size=4, max_iter=2, random_state=0), X, LABELS),
        lambda est: est.predict_proba(X)),
    "gru-auto-early-stopping": (
        lambda: fitted(FastGRU(hidden_size=4, max_iter=3, early_stopping=True,
                               validation_fraction=0.25, random_state=1), X, VALUES),
        lambda est: est.predict(X)),
    "rnn-regressor-bidirectional-two-layers": (
        lambda: fitted(FastRNNRegressor(hidden_size=3, num_layers=2, bidirectional=True,
                                        nonlinearity="relu", max_iter=2, random_state=0),
                       X, np.column_stack([VALUES, -VALUES])),
        lambda est: est.predict(X)),
    "gru-tokens-per-step-class-weight": (
        lambda: fitted(FastGRUClassifier(embedding_dim=3, hidden_size=4, max_iter=2,
                                         class_weight={0: 2.0, 1: 1.0}, random_state=0),
                       TOKENS, TOKENS % 2),
        lambda est: est.predict_proba(TOKENS)),
    "lstm-regressor-partial-fit-ragged": (
        lambda: fitted(FastLSTMRegressor(hidden_size=4, random_state=0),
                       [X[i, :2 + i % 3] for i in range(24)], VALUES, method="partial_fit"),
        lambda est: est.predict([X[i, :2 + i % 3] for i in range(24)])),
    "forecaster": (
        lambda: fitted(Forecaster(lookback=6, hidden_size=4, max_iter=2, random_state=0),
                       np.sin(np.arange(80.0) / 4)),
        lambda est: est.predict(5)),
    "sequence-generator": (
        lambda: fitted(SequenceGenerator(hidden_size=6, embedding_dim=3, seq_len=8, max_iter=1,
                                         random_state=0), "abcabd abd abcab " * 3),
        lambda est: np.array(est.generate(20, random_state=0))),
    "seq2seq-strings-attention": (
        lambda: fitted(Seq2Seq(hidden_size=6, embedding_dim=3, max_iter=2, random_state=0),
                       ["abc", "ba", "cab", "a"] * 4, ["cba", "ab", "bac", "a"] * 4),
        lambda est: np.array(est.predict(["abc", "cc"], beam_width=2)
                             + list(est.score_samples(["abc"], ["cba"])), dtype=object)),
}


def is_fastrnn_numpy_or_builtin(name):
    return name.split(".")[0] in ("fastrnn", "numpy", "builtins")


@pytest.mark.parametrize("case", sorted(CASES))
def test_skops_round_trip_trusting_only_fastrnn_and_numpy_types(case):
    make, outputs = CASES[case]
    est = make()
    data = sio.dumps(est)
    untrusted = sio.get_untrusted_types(data=data)
    assert untrusted and all(is_fastrnn_numpy_or_builtin(name) for name in untrusted), untrusted
    assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES), set(untrusted) - set(SKOPS_TRUSTED_TYPES)
    assert f"{type(est).__module__}.{type(est).__name__}" in untrusted
    loaded = sio.loads(data, trusted=untrusted)
    np.testing.assert_array_equal(outputs(loaded), outputs(est))
    again = sio.loads(data, trusted=list(SKOPS_TRUSTED_TYPES))
    np.testing.assert_array_equal(outputs(again), outputs(est))


def test_skops_refuses_to_load_without_trusting_the_types():
    est, _ = CASES["lstm-classifier-strings"]
    data = sio.dumps(est())
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        sio.loads(data, trusted=["numpy.dtype"])


def test_trusted_list_names_only_fastrnn_and_numpy_types():
    assert all(is_fastrnn_numpy_or_builtin(name) for name in SKOPS_TRUSTED_TYPES)
    assert len(set(SKOPS_TRUSTED_TYPES)) == len(SKOPS_TRUSTED_TYPES)


def test_a_loaded_estimator_keeps_training(tmp_path):
    est, _ = CASES["lstm-classifier-strings"]
    path = tmp_path / "model.skops"
    sio.dump(est(), path)
    loaded = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    loaded.set_params(warm_start=True, max_iter=1)
    fitted(loaded, X, LABELS)
    assert loaded.n_iter_ == 3 and set(loaded.predict(X)) <= {"up", "down"}
