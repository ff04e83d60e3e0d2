"""Scaling for sequence data, in the forms the estimators take.

    >>> import numpy as np
    >>> from fastrnn.preprocessing import SequenceScaler
    >>> X = np.array([[[1.0, 10.0], [3.0, 30.0], [0.0, 0.0]]])   # one sequence, padded
    >>> scaler = SequenceScaler().fit(X, lengths=[2])             # the padding step is ignored
    >>> scaler.mean_.tolist(), scaler.scale_.tolist()
    ([2.0, 20.0], [1.0, 10.0])
    >>> scaler.transform(X, lengths=[2])[0].tolist()
    [[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]
"""
import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


def _as_sequences(X):
    """(list of (T_i, F) float arrays, form) where form says how to give X back."""
    if scipy.sparse.issparse(X):
        raise TypeError("SequenceScaler does not accept sparse input; pass a dense array")
    parts = X if isinstance(X, (list, tuple)) else [X]
    if any(np.asarray(part).dtype.kind == "c" for part in parts):
        raise ValueError("Complex data not supported")
    if isinstance(X, (list, tuple)) and len(X) and (
            all(isinstance(x, np.ndarray) for x in X) or len({np.shape(x) for x in X}) > 1):
        seqs = [np.asarray(x, dtype=np.float64) for x in X]
        seqs = [s[:, None] if s.ndim == 1 else s for s in seqs]
        if any(s.ndim != 2 for s in seqs):
            raise ValueError("a ragged X is a list of (T_i,) or (T_i, F) arrays")
        return seqs, "ragged"
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 2:
        return X[:, :, None], "2d"
    if X.ndim == 3:
        return X, "3d"
    raise ValueError(f"X must be 2-D (n_samples, n_timesteps), 3-D (n_samples, n_timesteps, "
                     f"n_features) or a list of (T_i, F) arrays; got {X.ndim}-D. Reshape "
                     "your data.")


def _check_finite(values):
    if not np.all(np.isfinite(values)):
        raise ValueError("Input X contains NaN or infinity")


def _valid_mask(n_samples, n_timesteps, lengths):
    """(n, T) bool: which steps are real (True everywhere without lengths)."""
    if lengths is None:
        return np.ones((n_samples, n_timesteps), dtype=bool)
    lengths = np.asarray(lengths)
    if lengths.shape != (n_samples,) or np.any(lengths < 0) or np.any(lengths > n_timesteps):
        raise ValueError(f"lengths must hold one length in [0, {n_timesteps}] per sample "
                         f"({n_samples}); got shape {lengths.shape}")
    return np.arange(n_timesteps)[None, :] < lengths[:, None]


class SequenceScaler(TransformerMixin, BaseEstimator):
    """Standardize each feature of sequence data over all valid time steps.

    Every step of every sequence is one observation of the F features: the
    mean and standard deviation are taken over those, so the scaling is the
    same at every time step. Padding past ``lengths`` is neither counted nor
    changed (it stays as given, so masks built from zeros still work); every
    step of a ragged list is valid.

    Parameters
    ----------
    with_mean : bool, default=True
        Subtract each feature's mean.
    with_std : bool, default=True
        Divide by each feature's standard deviation (1 where it is 0).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Per-feature mean over the valid steps (0 when ``with_mean=False``).
    scale_ : ndarray of shape (n_features,)
        Per-feature standard deviation (1 when ``with_std=False``).
    n_features_in_ : int
        F: features per step (1 for 2-D univariate X).
    n_steps_seen_ : int
        Valid steps the statistics were computed from.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from fastrnn import FastLSTMClassifier, SequenceScaler
    >>> pipe = make_pipeline(SequenceScaler(), FastLSTMClassifier(max_iter=2))
    """

    _parameter_constraints = {"with_mean": ["boolean"], "with_std": ["boolean"]}

    def __init__(self, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X, y=None, lengths=None):
        """Learn the per-feature mean and scale from the valid steps of X."""
        self._validate_params()
        seqs, form = _as_sequences(X)
        if form == "ragged":
            steps = np.concatenate(seqs)
        else:
            steps = seqs[_valid_mask(len(seqs), seqs.shape[1], lengths)]
        if steps.size == 0:
            raise ValueError(f"X has no valid time steps to fit on (shape={steps.shape}) "
                             "while a minimum of 1 is required.")
        _check_finite(steps)
        self.n_features_in_ = steps.shape[1]
        self.n_steps_seen_ = len(steps)
        self.mean_ = steps.mean(axis=0) if self.with_mean else np.zeros(steps.shape[1])
        std = steps.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0) if self.with_std else np.ones(steps.shape[1])
        return self

    def transform(self, X, lengths=None):
        """(X - mean_) / scale_ on the valid steps; X keeps its form and padding."""
        return self._apply(X, lengths, lambda s: (s - self.mean_) / self.scale_)

    def inverse_transform(self, X, lengths=None):
        """Undo transform: X * scale_ + mean_ on the valid steps."""
        return self._apply(X, lengths, lambda s: s * self.scale_ + self.mean_)

    def _apply(self, X, lengths, step_map):
        check_is_fitted(self)
        seqs, form = _as_sequences(X)
        features = seqs[0].shape[-1] if len(seqs) else self.n_features_in_
        if features != self.n_features_in_:
            raise ValueError(f"X has {features} features per step, but SequenceScaler was "
                             f"fitted with {self.n_features_in_}")
        for s in seqs:
            _check_finite(s)
        if form == "ragged":
            return [step_map(s) for s in seqs]
        out = seqs.copy()
        mask = _valid_mask(len(seqs), seqs.shape[1], lengths)
        out[mask] = step_map(seqs[mask])
        return out[:, :, 0] if form == "2d" else out
