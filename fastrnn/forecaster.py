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

from fastrnn import persistence
from fastrnn._data import fit_scaling
from fastrnn.estimators import check_wrapped_estimator, estimator_class, training_options


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

    The series is cut into windows of ``lookback`` steps (make_windows) and a
    recurrent regressor learns the steps that follow each window. The series
    (and exogenous inputs) are standardised per column inside; predictions
    come back in the original units.

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn"}, default="lstm"
        The recurrent cell.

    lookback : int, default=24
        Past steps the network reads.

    horizon : int, default=1
        Steps predicted at once by the "direct" strategy (and the training
        target length for it); also the held-out tail of ``score``.

    strategy : {"recursive", "direct"}, default="recursive"
        "recursive": learn one step ahead and feed predictions back;
        "direct": learn all ``horizon`` steps at once (predict(steps) then
        chains blocks of ``horizon``).

    missing : {"raise", "interpolate"}, default="raise"
        NaN in the series (or exogenous inputs) raises, or is filled by linear
        interpolation (nearest value at the ends).

    hidden_size : int, default=64
        Units per recurrent layer.

    num_layers : int, default=1
        Recurrent layers stacked on each other.

    learning_rate_init : float, default=0.005
        The initial learning rate (Adam).

    batch_size : int or "auto", default="auto"
        Windows per mini-batch; "auto": min(64, n_windows).

    max_iter : int, default=100
        Epochs.

    alpha : float, default=1e-4
        L2 penalty on weights.

    clip_norm : float or None, default=5.0
        Clip the gradient to this global norm; None: no clipping.

    early_stopping : bool, default=False
        Hold out part of the windows and stop when their score stops
        improving, as in FastLSTMRegressor.

    n_iter_no_change : int, default=10
        Epochs without an improvement of more than tol before training stops.

    tol : float, default=1e-4
        Improvement that counts.

    random_state : int, RandomState, Generator or None, default=None
        Makes a fit reproducible.

    verbose : bool or int, default=False
        Progress per epoch.

    n_threads : int or None, default=None
        None: what OpenMP allows; -1: every CPU.

    inference_dtype : {"float32", "bfloat16", "int8"} or None, default=None
        Precision of the weights in predict and score (None or "float32":
        the fitted weights), as the estimators' inference_dtype: int8 or bfloat16
        weights converted once (the recurrent ones in 16-bit fixed point with
        either), float32 activations; settable after fit.

    Attributes
    ----------
    univariate_ : bool
        Whether fit saw a (T,) series (predict then returns (steps,)).

    n_series_ : int
        Columns k of the series.

    n_exog_ : int
        Columns m of the exogenous inputs X (0 without).

    mean_, scale_ : ndarray of shape (n_series_,)
        The series' standardisation.

    exog_mean_, exog_scale_ : ndarray of shape (n_exog_,)
        The exogenous inputs' standardisation (only when fitted with X).

    history_ : ndarray of shape (lookback, n_series_ + n_exog_)
        The last standardised window of the training data: predict's context
        when no series is passed.

    regressor_ : FastLSTMRegressor, FastGRURegressor or FastRNNRegressor
        The trained window regressor.

    loss_curve_ : list of float
        Training loss of every epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from fastrnn import Forecaster
    >>> series = np.sin(np.arange(200) / 6)
    >>> fc = Forecaster(lookback=12, horizon=3, hidden_size=8, max_iter=3,
    ...                 random_state=0).fit(series[:150])
    >>> fc.predict(5).shape
    (5,)
    >>> fc.predict(3, series=series[:170]).shape     # continue another stretch
    (3,)
    >>> bool(fc.score(series[150:]) <= 0)            # minus the MSE of the last 3 steps
    True
    """

    def __init__(self, cell="lstm", lookback=24, horizon=1, strategy="recursive",
                 missing="raise", hidden_size=64, num_layers=1, learning_rate_init=0.005,
                 batch_size="auto", max_iter=100, alpha=1e-4, clip_norm=5.0,
                 early_stopping=False, n_iter_no_change=10, tol=1e-4, random_state=None,
                 verbose=False, n_threads=None, inference_dtype=None):
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
        self.inference_dtype = inference_dtype

    def _check_params(self):
        """The parameters the forecaster itself uses (the estimator checks the rest)."""
        if self.strategy not in ("recursive", "direct"):
            raise ValueError(f"strategy must be 'recursive' or 'direct', got {self.strategy!r}")
        if self.missing not in ("raise", "interpolate"):
            raise ValueError(f"missing must be 'raise' or 'interpolate', got {self.missing!r}")
        estimator_class(self.cell)  # checks the cell name before any work
        for name in ("lookback", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

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
        self._check_params()
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

    def _context(self, series, X):
        """The scaled inputs (series columns, then exogenous ones) the next
        forecast reads from: the training history, or ``series`` and X."""
        if series is None:
            return self.history_
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
        return self._inputs(values, exog)

    def explain(self, series=None, X=None, method="integrated_gradients", target=0,
                n_steps=50, *, window=1):
        """Attribute the next forecast to the past ``lookback`` steps of every
        series column and exogenous column.

        series, X : the context, as in predict (default: the end of the
            training series).
        method, n_steps, window : as in the estimators' explain.
        target : int, default=0
            Which forecast value: step h (of the direct strategy's horizon)
            of column j is h * n_columns + j; 0 is the next value of the
            first column.

        The baseline is the series' mean (and the exogenous columns' means).
        Returns (lookback, n_columns + n_exog) attributions in the target
        column's units: with integrated gradients they sum to the forecast
        minus the forecast from the all-mean window.

        >>> from fastrnn import Forecaster
        >>> from fastrnn.datasets import mackey_glass
        >>> fc = Forecaster(lookback=16, max_iter=3, random_state=0).fit(mackey_glass(300))
        >>> fc.explain().shape
        (16, 1)
        """
        check_is_fitted(self, "regressor_")
        context = self._context(series, X)
        if len(context) < self.lookback:
            raise ValueError(f"need at least lookback={self.lookback} steps of context")
        recent = np.asarray(context[-int(self.lookback):])[None]
        column = int(target) % self.n_series_
        scaled = self.regressor_.explain(recent, method, target=target, n_steps=n_steps,
                                         window=window)
        return scaled[0] * self.scale_[column]

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
        context = self._context(series, X)
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
        self.regressor_.set_params(inference_dtype=self.inference_dtype)
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

    # ----- evaluation --------------------------------------------------------------------
    def score(self, series, X=None):
        """Negative mean squared error of a held-out forecast (higher is
        better), so that GridSearchCV and cross_val_score can rank forecasters.

        The last ``horizon`` steps of ``series`` are held out and forecast
        with ``predict(horizon, series=<the steps before them>)``; the score
        is minus the mean of the squared errors over those steps and every
        column, in the series' units. ``X``: exogenous inputs aligned with
        ``series`` (its last ``horizon`` rows serve as X_future). The series
        needs at least ``lookback + horizon`` steps. With GridSearchCV, pass
        ``cv=TimeSeriesSplit(...)`` so that every fold is fitted on the past
        and scored on the steps that follow it.
        """
        check_is_fitted(self, "regressor_")
        values = self._check_series(series, "series")
        h = int(self.horizon)
        if len(values) < self.lookback + h:
            raise ValueError(f"score needs at least lookback + horizon = {self.lookback + h} "
                             f"steps, series has {len(values)}")
        past_X = future_X = None
        if X is not None:
            X = np.asarray(X)
            past_X, future_X = X[:-h], X[-h:]
        forecast = self.predict(h, series=values[:-h], X=past_X, X_future=future_X)
        errors = np.reshape(forecast, (h, -1)) - values[-h:]
        return -float(np.mean(errors ** 2))

    # ----- persistence -------------------------------------------------------------------
    _FITTED_NAMES = ("univariate_", "n_series_", "n_exog_")
    _FITTED_ARRAYS = ("mean_", "scale_", "history_")
    _EXOG_ARRAYS = ("exog_mean_", "exog_scale_")

    def save(self, path):
        """Write the fitted forecaster to ``path``: a .npz without pickle (the
        regressor's file plus the scaling and the context predict() reads),
        read back with ``fastrnn.load(path)``, which checks the whole file
        first."""
        persistence.save_wrapper(self, path)

    def _get_fitted_state(self):
        """(attributes, arrays, estimator) for persistence: the series' shape
        as JSON values, the scaling and context arrays, and the regressor."""
        check_is_fitted(self, "regressor_")
        names = self._FITTED_ARRAYS + (self._EXOG_ARRAYS if self.n_exog_ else ())
        return ({name: getattr(self, name) for name in self._FITTED_NAMES},
                {name: getattr(self, name) for name in names}, self.regressor_)

    def _set_fitted_state(self, attributes, arrays, estimator):
        """Restore what _get_fitted_state gave, after checking it against the
        regressor (which persistence has checked against its network);
        anything inconsistent raises ValueError."""
        self._check_params()
        if set(attributes) != set(self._FITTED_NAMES):
            raise ValueError(f"a Forecaster stores exactly {list(self._FITTED_NAMES)}")
        univariate, k, m = (attributes[name] for name in self._FITTED_NAMES)
        if not isinstance(univariate, bool) or any(
                isinstance(v, bool) or not isinstance(v, int) for v in (k, m)) or \
                k < 1 or m < 0 or (univariate and k != 1):
            raise ValueError("univariate_ must be a bool, n_series_ >= 1 and n_exog_ >= 0 ints")
        shapes = {"mean_": (k,), "scale_": (k,), "history_": (self.lookback, k + m)}
        if m:
            shapes.update(exog_mean_=(m,), exog_scale_=(m,))
        self._check_arrays(arrays, shapes)
        check_wrapped_estimator(self, estimator, "regression", ("hidden_size", "num_layers"))
        steps = 1 if self.strategy == "recursive" else self.horizon
        if estimator.input_kind_ != "3d" or estimator.n_features_in_ != k + m or \
                estimator.n_outputs_ != k * steps:
            raise ValueError("the regressor's inputs or outputs disagree with the series")
        self.univariate_, self.n_series_, self.n_exog_ = univariate, k, m
        for name, value in arrays.items():
            setattr(self, name, value.astype(np.float64))
        self.regressor_ = estimator
        self.loss_curve_ = estimator.loss_curve_
        return self

    @staticmethod
    def _check_arrays(arrays, shapes):
        """Exactly the arrays in ``shapes``, finite floats of those shapes;
        scales positive."""
        if set(arrays) != set(shapes):
            raise ValueError(f"a Forecaster stores exactly the arrays {sorted(shapes)}")
        for name, shape in shapes.items():
            value = arrays[name]
            if value.shape != shape or value.dtype.kind != "f" or \
                    not np.all(np.isfinite(value)):
                raise ValueError(f"{name} must hold finite floats of shape {shape}")
            if name.endswith("scale_") and not np.all(value > 0):
                raise ValueError(f"{name} must be positive")
