"""SequenceScaler: per-feature standardisation of 3-D, 2-D and ragged X."""
import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastrnn import FastLSTMClassifier, SequenceScaler


def test_statistics_come_from_valid_steps_only(rng):
    X = rng.normal(loc=3.0, scale=2.0, size=(6, 5, 3))
    lengths = np.array([5, 4, 3, 5, 1, 2])
    X[np.arange(5)[None, :] >= lengths[:, None]] = 1e6  # padding that must not count
    scaler = SequenceScaler().fit(X, lengths=lengths)
    valid = np.concatenate([X[i, :n] for i, n in enumerate(lengths)])
    np.testing.assert_allclose(scaler.mean_, valid.mean(axis=0))
    np.testing.assert_allclose(scaler.scale_, valid.std(axis=0))
    assert scaler.n_steps_seen_ == lengths.sum()
    Z = scaler.transform(X, lengths=lengths)
    scaled = np.concatenate([Z[i, :n] for i, n in enumerate(lengths)])
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(scaled.std(axis=0), 1)
    assert np.all(Z[X == 1e6] == 1e6)  # padding left as it was


def test_ragged_every_step_counts_and_round_trips(rng):
    X = [rng.normal(size=(t, 2)) * [1.0, 50.0] + [0.0, 7.0] for t in (3, 8, 5)]
    scaler = SequenceScaler().fit(X)
    steps = np.concatenate(X)
    np.testing.assert_allclose(scaler.mean_, steps.mean(axis=0))
    Z = scaler.transform(X)
    assert isinstance(Z, list) and [z.shape for z in Z] == [x.shape for x in X]
    back = scaler.inverse_transform(Z)
    for x, b in zip(X, back):
        np.testing.assert_allclose(b, x)


def test_2d_is_univariate_and_constant_feature_keeps_scale_one(rng):
    X = rng.normal(size=(4, 7))
    scaler = SequenceScaler().fit(X)
    assert scaler.n_features_in_ == 1 and scaler.transform(X).shape == X.shape
    constant = np.ones((3, 4, 2))
    np.testing.assert_array_equal(SequenceScaler().fit(constant).scale_, [1.0, 1.0])


def test_clear_errors(rng):
    with pytest.raises(ValueError, match="2-D .* 3-D"):
        SequenceScaler().fit(np.zeros((2, 3, 4, 5)))
    scaler = SequenceScaler().fit(rng.normal(size=(3, 4, 2)))
    with pytest.raises(ValueError, match="fitted with 2"):
        scaler.transform(rng.normal(size=(3, 4, 5)))
    with pytest.raises(ValueError, match="lengths"):
        SequenceScaler().fit(rng.normal(size=(3, 4, 2)), lengths=[1, 9, 2])


def test_pipeline_with_a_classifier(rng):
    X = rng.normal(size=(80, 6, 2)) * [1.0, 1000.0] + [0.0, 500.0]
    y = (X[:, :, 1].mean(axis=1) > 500).astype(int)
    pipe = make_pipeline(SequenceScaler(), FastLSTMClassifier(hidden_size=8, max_iter=30,
                                                              learning_rate_init=0.02,
                                                              random_state=0))
    pipe.fit(X, y)
    assert pipe.score(X, y) > 0.8


# scikit-learn's checks feed 2-D (n_samples, n_features) tables; fastrnn reads a
# 2-D X as n_samples univariate sequences, so a check that counts columns as
# features does not apply.
EXPECTED_FAILURES = {
    "check_n_features_in_after_fitting": "2-D X is (n, T) univariate: n_features_in_ is 1",
    "check_transformer_general": "2-D X is (n, T) univariate; columns are time steps",
    "check_n_features_in": "2-D X is (n, T) univariate: n_features_in_ is 1",
    "check_estimators_empty_data_messages": "2-D X of shape (n, 0) has no time steps, "
                                            "not zero features",
}


@parametrize_with_checks([SequenceScaler()],
                         expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_compatible(estimator, check):
    check(estimator)
