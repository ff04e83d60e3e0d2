"""fastrnn.losses: values against scikit-learn's metrics, gradients against
finite differences, weights, and no overflow for large logits."""
import numpy as np
import pytest
from sklearn.metrics import log_loss, mean_squared_error

from fastrnn.losses import LOSSES, binary_cross_entropy, softmax_cross_entropy, squared_error


def finite_difference(loss_fn, out, target, weight, eps=1e-6):
    grad = np.zeros_like(out)
    for idx in np.ndindex(out.shape):
        plus, minus = out.copy(), out.copy()
        plus[idx] += eps
        minus[idx] -= eps
        delta = loss_fn(plus, target, weight)[0] - loss_fn(minus, target, weight)[0]
        grad[idx] = delta / (2 * eps)
    return grad


@pytest.fixture
def weights(rng):
    return rng.uniform(0.5, 2.0, size=7)


def test_softmax_cross_entropy_is_weighted_log_loss(rng, weights):
    logits = rng.normal(size=(7, 4))
    target = np.array([0, 1, 2, 3, 1, 2, 0])
    loss, grad = softmax_cross_entropy(logits, target, weights)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = log_loss(target, proba, sample_weight=weights, normalize=False, labels=range(4))
    assert loss == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(grad, finite_difference(softmax_cross_entropy, logits, target,
                                                       weights), rtol=1e-6, atol=1e-8)


def test_binary_cross_entropy_is_weighted_log_loss(rng, weights):
    logits = rng.normal(size=(7, 1))
    target = np.array([0, 1, 1, 0, 1, 0, 0])
    loss, grad = binary_cross_entropy(logits, target, weights)
    p1 = 1 / (1 + np.exp(-logits[:, 0]))
    expected = log_loss(target, np.stack([1 - p1, p1], axis=1), sample_weight=weights,
                        normalize=False)
    assert loss == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(grad, finite_difference(binary_cross_entropy, logits, target,
                                                       weights), rtol=1e-6, atol=1e-8)


def test_squared_error_is_half_weighted_sum_of_squares(rng, weights):
    pred, target = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    loss, grad = squared_error(pred, target, weights)
    # mean_squared_error averages over outputs and normalises by the weights
    expected = 0.5 * 3 * weights.sum() * mean_squared_error(target, pred, sample_weight=weights)
    assert loss == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(grad, finite_difference(squared_error, pred, target, weights),
                               rtol=1e-6, atol=1e-8)


def test_large_logits_do_not_overflow():
    big = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    loss, grad = softmax_cross_entropy(big, np.array([0, 0]), np.ones(2))
    assert loss == pytest.approx(2000.0) and np.all(np.isfinite(grad))
    loss, grad = binary_cross_entropy(np.array([[800.0], [-800.0]]), np.array([0, 0]),
                                      np.ones(2))
    assert loss == pytest.approx(800.0) and np.all(np.isfinite(grad))


def test_registry_names():
    assert LOSSES == {"cross_entropy": softmax_cross_entropy,
                      "binary_cross_entropy": binary_cross_entropy,
                      "squared_error": squared_error}
