"""Losses over the rows of a head's output.

Each returns (weighted loss summed over rows, gradient of that sum w.r.t. the
output). Rows are samples, or valid time steps for per-step targets; the
trainer divides by the row count.
"""
import numpy as np


def softmax_cross_entropy(logits, target, weight):
    """logits (N, K), target class indices (N,), weight (N,)."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p = z - log_norm
    rows = np.arange(len(target))
    loss = -np.sum(weight * log_p[rows, target])
    grad = np.exp(log_p)
    grad[rows, target] -= 1
    grad *= weight[:, None]
    return float(loss), grad


def binary_cross_entropy(logits, target, weight):
    """logits (N, 1) for class 1, target in {0, 1} (N,), weight (N,)."""
    x = logits[:, 0]
    # log(1 + exp(-|x|)) form: no overflow for large |x|
    loss = np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x)))
    p = 0.5 * (1 + np.tanh(0.5 * x))  # sigmoid without overflow
    grad = (weight * (p - target))[:, None]
    return float(np.sum(weight * loss)), grad.astype(logits.dtype, copy=False)


def squared_error(pred, target, weight):
    """Half squared error, summed over outputs: pred, target (N, K), weight (N,)."""
    diff = pred - target
    loss = 0.5 * np.sum(weight[:, None] * diff * diff)
    return float(loss), weight[:, None] * diff


LOSSES = {"cross_entropy": softmax_cross_entropy, "binary_cross_entropy": binary_cross_entropy,
          "squared_error": squared_error}
