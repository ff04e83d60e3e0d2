"""Multi-step time-series forecasting with recurrent networks.

    >>> from fastrnn import Forecaster
    >>> from fastrnn.datasets import mackey_glass
    >>> series = mackey_glass(1000)
    >>> fc = Forecaster(lookback=32, horizon=10, max_iter=5, random_state=0).fit(series[:900])
    >>> fc.predict(10).shape
    (10,)
"""
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from fastrnn._data import fit_scaling
from fastrnn.estimators import estimator_class, training_options


def make_windows(series, lookback, horizon=1):
    """Slide over a (T,) or (T, k) series: inputs (n, lookback, k) and the
    following ``horizon`` values (n, horizon, k), n = T - lookback - horizon + 1.

    >>> X, Y = make_windows(np.arange(10.0), lookback=3, horizon=2)
    >>> X.shape, Y.shape, X[0, :, 0].tolist(), Y[0, :, 0].tolist()
    ((6, 3, 1), (6, 2, 1), [0.0, 1.0, 2.0], [3.0, 4.0])
    """
    series = np.asarray(series, dtype=np.float64)
    if series.ndim == 1:
        series = series[:, None]
    if series.ndim != 2:
        raise ValueError(f"series must be (T,) or (T, k), got shape {series.shape}")
    lookback, horizon = int(lookback), int(horizon)
    if lookback < 1 or horizon < 1:
        raise ValueError("lookback and horizon must be >= 1")
    n = len(series) - lookback - horizon + 1
    if n < 1:
        raise ValueError(f"a series of {len(series)} steps is too short for lookback={lookback}"
                         f" and horizon={horizon}")
    idx = np.arange(n)[:, None]
    X = series[idx + np.arange(lookback)]
    Y = series[idx + lookback + np.arange(horizon)]
    return X, Y


def _fill_missing(values):
    """Linear interpolation over NaNs per column, nearest value at the ends."""
    values = values.copy()
    t = np.arange(len(values))
    for j in range(values.shape[1]):
        col = values[:, j]
        ok = np.isfinite(col)
        if not ok.any():
            raise ValueError(f"column {j} has no finite values")
        col[~ok] = np.interp(t[~ok], t[ok], col[ok])
    return values


class Forecaster(BaseEstimator):
    """Forecast a univariate or multivariate series several steps ahead.

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn"}, default="lstm"
    lookback : int, default=24
        Past steps the network reads.
    horizon : int, default=1
        Steps predicted at once by the "direct" strategy (and the training
        target length for it).
    strategy : {"recursive", "direct"}, default="recursive"
        "recursive": learn one step ahead and feed predictions back;
        "direct": learn all ``horizon`` steps at once (predict(steps) then
        chains blocks of ``horizon``).
    missing : {"raise", "interpolate"}, default="raise"
        NaN in the series (or exogenous inputs) raises, or is filled by linear
        interpolation (nearest value at the ends).
    hidden_size, num_layers, learning_rate_init, batch_size, max_iter, alpha,
    clip_norm, early_stopping, n_iter_no_change, tol, random_state, verbose,
    n_threads : as in the estimators.

    The series is standardised per column inside and predictions are returned
    in the original units.
    """

    def __init__(self, cell="lstm", lookback=24, horizon=1, strategy="recursive",
                 missing="raise", hidden_size=64, num_layers=1, learning_rate_init=0.005,
                 batch_size="auto", max_iter=100, alpha=1e-4, clip_norm=5.0,
                 early_stopping=False, n_iter_no_change=10, tol=1e-4, random_state=None,
                 verbose=False, n_threads=None):
        self.cell = cell
        self.lookback = lookback
        self.horizon = horizon
        self.strategy = strategy
        self.missing = missing
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.alpha = alpha
        self.clip_norm = clip_norm
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads

    def _check_series(self, values, name):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.size == 0:
            raise ValueError(f"{name} must be a non-empty (T,) or (T, k) array, got shape "
                             f"{values.shape}")
        if np.isinf(values).any():
            raise ValueError(f"{name} holds inf")
        if np.isnan(values).any():
            if self.missing == "raise":
                raise ValueError(f"{name} holds NaN: fill the gaps, or pass "
                                 "missing='interpolate'")
            values = _fill_missing(values)
        return values

    def _check_exog(self, values, name, steps, exact=False):
        """Exogenous inputs at predict time: the fitted column count, and
        `steps` rows (at least, unless exact)."""
        values = self._check_series(values, name)
        if values.shape[1] != self.n_exog_:
            raise ValueError(f"{name} has {values.shape[1]} columns, fitted with {self.n_exog_}")
        if len(values) < steps or (exact and len(values) != steps):
            raise ValueError(f"{name} has {len(values)} steps, need {steps}")
        return values

    def _inputs(self, scaled, exog_scaled):
        return scaled if exog_scaled is None else np.hstack([scaled, exog_scaled])

    def fit(self, series, X=None):
        """Learn from a (T,) or (T, k) series; X (T, m): optional exogenous
        inputs known in advance (calendar, prices), aligned with the series."""
        if self.strategy not in ("recursive", "direct"):
            raise ValueError(f"strategy must be 'recursive' or 'direct', got {self.strategy!r}")
        if self.missing not in ("raise", "interpolate"):
            raise ValueError(f"missing must be 'raise' or 'interpolate', got {self.missing!r}")
        estimator_class(self.cell)  # checks the cell name before any work
        for name in ("lookback", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        values = self._check_series(series, "series")
        self.univariate_ = np.ndim(series) == 1
        self.n_series_ = values.shape[1]
        self.mean_, self.scale_ = fit_scaling(values)
        scaled = (values - self.mean_) / self.scale_
        exog = None
        if X is not None:
            exog = self._check_series(X, "X")
            if len(exog) != len(values):
                raise ValueError(f"X has {len(exog)} steps, the series {len(values)}")
            self.exog_mean_, self.exog_scale_ = fit_scaling(exog)
            exog = (exog - self.exog_mean_) / self.exog_scale_
        self.n_exog_ = 0 if exog is None else exog.shape[1]
        steps = 1 if self.strategy == "recursive" else int(self.horizon)
        inputs = self._inputs(scaled, exog)
        windows, _ = make_windows(inputs, self.lookback, steps)
        _, targets = make_windows(scaled, self.lookback, steps)
        regressor = estimator_class(self.cell, "regression")
        self.regressor_ = regressor(hidden_size=self.hidden_size, num_layers=self.num_layers,
                                    per_step=False, **training_options(self))
        self.regressor_.fit(windows, targets.reshape(len(targets), -1))
        self.history_ = inputs[-int(self.lookback):]  # context for predict()
        self.loss_curve_ = self.regressor_.loss_curve_
        return self

    def predict(self, steps, series=None, X=None, X_future=None):
        """Forecast ``steps`` values after the training series (or after
        ``series``, whose last ``lookback`` steps are read, with X its
        exogenous inputs). X_future (steps, m): exogenous inputs of the
        forecast period, required when fitted with X. Returns (steps,) for a
        univariate series, else (steps, k), in the series' units."""
        check_is_fitted(self, "regressor_")
        steps = int(steps)
        if steps < 1:
            raise ValueError("steps must be >= 1")
        context = self.history_
        if series is not None:
            values = (self._check_series(series, "series") - self.mean_) / self.scale_
            if values.shape[1] != self.n_series_:
                raise ValueError(f"series has {values.shape[1]} columns, fitted on "
                                 f"{self.n_series_}")
            exog = None
            if self.n_exog_:
                if X is None:
                    raise ValueError("pass X, the exogenous inputs aligned with series")
                exog = (self._check_exog(X, "X", len(values), exact=True) - self.exog_mean_) \
                    / self.exog_scale_
            elif X is not None:
                raise ValueError("X given, but this forecaster was fitted without exogenous "
                                 "inputs")
            context = self._inputs(values, exog)
        if len(context) < self.lookback:
            raise ValueError(f"need at least lookback={self.lookback} steps of context")
        future = None
        if self.n_exog_:
            if X_future is None:
                raise ValueError(f"pass X_future with the exogenous inputs of all {steps} steps")
            future = (self._check_exog(X_future, "X_future", steps)[:steps] - self.exog_mean_) \
                / self.exog_scale_
        elif X_future is not None:
            raise ValueError("X_future given, but this forecaster was fitted without exogenous "
                             "inputs (fit(series, X))")
        window = np.array(context[-int(self.lookback):])
        block = 1 if self.strategy == "recursive" else int(self.horizon)
        out = []
        while len(out) < steps:
            pred = np.asarray(self.regressor_.predict(window[None])).reshape(block,
                                                                            self.n_series_)
            for i in range(block):
                if len(out) == steps:
                    break
                row = pred[i] if future is None else np.concatenate([pred[i], future[len(out)]])
                out.append(pred[i])
                window = np.vstack([window[1:], row])
        result = np.asarray(out) * self.scale_ + self.mean_
        return result[:, 0] if self.univariate_ else result
