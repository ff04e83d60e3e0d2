"""The base of the nine estimators: parameters, the training loop in small
steps, prediction, and the fitted state persistence reads.

fit -> _fit: prepare X and y (fastrnn._data), build the Network and the
Optimizer on the first fit, then _run_epochs: per epoch _train_epoch (per
mini-batch _train_batch: forward, loss, divergence guard, backward, optimizer
step) and _end_epoch (curves, validation score, early stopping counter, the
learning-rate schedule).
"""
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils import ClassifierTags, RegressorTags, check_array
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from tqdm.auto import tqdm

from fastrnn import _data, _kernels, _quantize, persistence
from fastrnn._threads import resolve_n_threads, single_threaded_blas
from fastrnn.explain import explain as explain_estimator
from fastrnn.layers import as_float_dtype
from fastrnn.losses import LOSSES
from fastrnn.network import Network
from fastrnn.optim import SCHEDULES, SOLVERS, LearningRateSchedule, Optimizer

PREDICT_BATCH = 1024  # samples per forward pass in predict: bounded memory on large X
# ... and at most about this many floats in one layer's padded output (samples x steps x
# width): 1024 sequences of 400 steps at H=128 made 210 MB of fresh pages per layer, whose
# clearing cost more than the recurrence itself (bench/NOTES.md, ragged predict)
PREDICT_ELEMENTS = 1 << 22
# An epoch whose mean loss is this many times the loss of a constant prediction
# (uniform class probabilities, or the mean of the standardised targets) has
# diverged, even while every number is still finite.
DIVERGED_LOSS_FACTOR = 100


class TrainingDivergedError(FloatingPointError):
    """Training diverged: the loss, the gradient or the weights became NaN or
    inf (or the epoch loss blew up). The estimator keeps the weights and
    optimizer state of the last finished epoch; the message suggests what to
    change (learning_rate_init, clip_norm, the scale of X)."""


class _RealInterval(Interval):
    """A real Interval without NaN (scikit-learn's lets NaN through: every
    comparison with NaN is False)."""

    def __contains__(self, val):
        return not (isinstance(val, Real) and np.isnan(val)) and super().__contains__(val)


@contextmanager
def _ctrl_c_deferred():
    """Ctrl-C held back inside the block and delivered to SIGINT's Python
    handler when the block ends (on the main thread, where Python runs signal
    handlers; elsewhere Ctrl-C does not reach us). Blocking the signal would
    not do: a process-directed SIGINT goes to any thread that does not block
    it (OpenMP's, a timer's), and Python runs the handler on the main thread
    all the same, so the block swaps in a handler that only records it."""
    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(handler):
        yield
        return
    held = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
    if held:
        handler(signal.SIGINT, None)


def _positive_int(optional=False):
    return [Interval(Integral, 1, None, closed="left")] + ([None] if optional else [])


class _TrainingSet:
    """One fit call's prepared data: X (SequenceData), target rows, the row ->
    sample map, per-row weights, and the loss and thread count to train with."""

    def __init__(self, data, target, rows, weights, loss_fn, n_threads, constant_loss=None):
        self.data, self.target, self.rows, self.weights = data, target, rows, weights
        self.loss_fn, self.n_threads = loss_fn, n_threads
        # per row, of a constant prediction (None: no blow-up check of the epoch loss)
        self.constant_loss = constant_loss


class _ValidationSet:
    """What an epoch is scored on: samples idx of a prepared set (held-out
    samples of the training data, or all of X_val)."""

    def __init__(self, prepared, idx, score_weights=None):
        self.prepared, self.idx = prepared, idx
        self.score_weights = score_weights  # per output row; None: an unweighted score


class BaseFastRNN(BaseEstimator):
    """Shared by every estimator; use the nine public classes in
    fastrnn.estimators (their docstrings document the parameters). One
    signature for all nine; subclasses set ``_cell`` ("lstm", "gru", "rnn")
    and ``_fixed_task`` ("classification", "regression", or None to infer
    from y)."""

    _cell = None
    _fixed_task = None

    _parameter_constraints = {
        "hidden_size": _positive_int(), "num_layers": _positive_int(),
        "bidirectional": ["boolean"], "dropout": [_RealInterval(Real, 0, 1, closed="left")],
        "embedding_dim": _positive_int(optional=True),
        "vocab_size": _positive_int(optional=True),
        "per_step": [StrOptions({"auto"}), "boolean"],
        "solver": [StrOptions(set(SOLVERS))], "learning_rate": [StrOptions(set(SCHEDULES))],
        "learning_rate_init": [_RealInterval(Real, 0, None, closed="neither")],
        "lr_decay": [_RealInterval(Real, 0, None, closed="neither")],
        "lr_decay_every": _positive_int(),
        "momentum": [_RealInterval(Real, 0, 1, closed="both")], "nesterovs_momentum": ["boolean"],
        "beta_1": [_RealInterval(Real, 0, 1, closed="left")],
        "beta_2": [_RealInterval(Real, 0, 1, closed="left")],
        "epsilon": [_RealInterval(Real, 0, None, closed="neither")],
        "rho": [_RealInterval(Real, 0, 1, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": _positive_int(), "shuffle": ["boolean"], "length_bucketing": ["boolean"],
        "alpha": [_RealInterval(Real, 0, None, closed="left")],
        "clip_norm": [_RealInterval(Real, 0, None, closed="neither"), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [_RealInterval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": _positive_int(), "tol": [_RealInterval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"], "random_state": ["random_state", np.random.Generator],
        "verbose": ["verbose"],
        "n_threads": [None, Options(Integral, {-1}), Interval(Integral, 1, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"}), type, np.dtype],
        "task": [StrOptions({"auto", "classification", "regression"})],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "nonlinearity": [StrOptions({"tanh", "relu"})],
        "norm": [StrOptions({"layer", "batch"}), None], "residual": ["boolean"],
        "layer_norm": ["boolean"],
        "recurrent_dropout": [Interval(Real, 0, 1, closed="left")],
        "inference_dtype": [StrOptions({"float32", "bfloat16", "int8"}), None],
    }

    # fitted attributes persistence stores (besides model_ and the two curves)
    _FITTED_SCALARS = ("n_features_in_", "n_iter_", "t_", "input_kind_", "task_", "per_step_",
                       "n_outputs_", "n_tokens_", "best_loss_", "best_validation_score_")
    _FITTED_ARRAYS = ("classes_", "y_mean_", "y_scale_")
    _CURVES = ("loss_curve_", "validation_scores_", "validation_loss_curve_")

    def __init__(self, *, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0,
                 embedding_dim=None, vocab_size=None, per_step="auto", solver="adam",
                 learning_rate="constant", learning_rate_init=0.001, lr_decay=0.5,
                 lr_decay_every=10, momentum=0.9, nesterovs_momentum=True, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, rho=0.9, batch_size="auto", max_iter=200,
                 shuffle=True, length_bucketing=True, alpha=1e-4, clip_norm=5.0,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, warm_start=False,
                 random_state=None, verbose=False, n_threads=None, dtype="float32",
                 task="auto", class_weight=None, nonlinearity="tanh", norm=None,
                 residual=False, layer_norm=False, recurrent_dropout=0.0,
                 inference_dtype=None):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.embedding_dim = embedding_dim
        self.vocab_size = vocab_size
        self.per_step = per_step
        self.solver = solver
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.rho = rho
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.length_bucketing = length_bucketing
        self.alpha = alpha
        self.clip_norm = clip_norm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads
        self.dtype = dtype
        self.task = task
        self.class_weight = class_weight
        self.nonlinearity = nonlinearity
        self.norm = norm
        self.residual = residual
        self.layer_norm = layer_norm
        self.recurrent_dropout = recurrent_dropout
        self.inference_dtype = inference_dtype

    # ----- inputs ------------------------------------------------------------------------
    def _prepare_X(self, X, reset):
        """Validate X; on reset remember its form. Returns SequenceData."""
        tokens = self.embedding_dim is not None
        dtype = as_float_dtype(self.dtype)
        kind = _data.input_kind(X, tokens)
        if not reset:  # the form first: a 2-D X after a 3-D fit is no feature-count problem
            _data.check_same_kind(kind, self.input_kind_, getattr(self, "n_features_in_", None),
                                  type(self).__name__)
        if kind == "2d":  # scikit-learn's checks (n_features_in_, feature names)
            values = validate_data(self, X, reset=reset, dtype=_data.FLOAT_DTYPES)[:, :, None]
            lengths = None
        else:
            values, lengths = _data.read_sequences(X, kind, dtype)
        if reset:
            self._remember_input_form(kind, values)
        else:
            _data.check_same_form(kind, values, self.input_kind_,
                                  getattr(self, "n_features_in_", None), type(self).__name__)
        if tokens and values.max() >= self.n_tokens_:
            raise ValueError(f"token id {values.max()} is outside the vocabulary of "
                             f"{self.n_tokens_} ids seen in fit (set vocab_size)")
        if not tokens:
            values = _data.as_model_dtype(values, dtype)
        return _data.SequenceData(values, lengths)

    def _remember_input_form(self, kind, values):
        self.input_kind_ = kind
        if kind in ("3d", "list"):
            self.n_features_in_ = values.shape[2]
        elif kind == "tokens":
            self.n_features_in_ = values.shape[1]
        if self.embedding_dim is not None:
            self.n_tokens_ = (int(values.max()) + 1 if self.vocab_size is None
                              else int(self.vocab_size))

    # ----- targets -----------------------------------------------------------------------
    def _learn_task(self, y, data, classes):
        """task_ and per_step_ from y (first fit)."""
        task = self._fixed_task or self.task
        self.task_ = _data.infer_task(y, task)
        if classes is not None and self.task_ != "classification":
            raise ValueError("classes is only for classification")
        self.per_step_ = _data.detect_per_step(y, self.per_step, self.task_, data)

    def _prepare_y(self, y, data, reset, classes=None):
        """Targets as rows matching the network's output rows, plus the row ->
        sample index (for sample weights). Classification: class indices;
        classes (partial_fit's first call) fixes classes_ instead of y.
        Regression: standardised values (y_mean_, y_scale_ learned on reset)."""
        classification = self.task_ == "classification"
        flat, rows = _data.flatten_targets(y, data, self.per_step_, classification)
        if classification:
            if reset:
                _data.check_labels(flat, self.per_step_)
                self.classes_ = _data.fit_classes(flat, classes)
            elif flat.dtype.kind == "f" and not np.all(np.isfinite(flat)):
                raise ValueError("Input y contains NaN or infinity.")
            return _data.encode_labels(flat, self.classes_), rows
        values = _data.as_value_rows(flat)
        if reset:
            self.n_outputs_ = values.shape[1]
            self.y_mean_, self.y_scale_ = _data.fit_scaling(values)
        elif values.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {values.shape[1]} outputs, the model {self.n_outputs_}")
        return (values - self.y_mean_) / self.y_scale_, rows

    def _sample_weights(self, sample_weight, target, rows, n):
        sw = _check_sample_weight(sample_weight, np.empty((n, 1)), dtype=np.float64,
                                  ensure_non_negative=True)
        if self.task_ == "classification" and self.class_weight is not None:
            per_row = compute_sample_weight(self.class_weight, self.classes_[target])
            return sw[rows] * per_row
        return sw[rows]

    # ----- model -------------------------------------------------------------------------
    def _loss_name(self):
        if self.task_ == "regression":
            return "squared_error"
        return "binary_cross_entropy" if len(self.classes_) == 2 else "cross_entropy"

    def _output_size(self):
        if self.task_ == "regression":
            return self.n_outputs_
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _build_model(self, data):
        tokens = self.embedding_dim is not None
        input_size = self.embedding_dim if tokens else data.values.shape[2]
        self._warn_unused_options(input_size)
        self.model_ = Network(
            self._cell, input_size=input_size,
            hidden_size=self.hidden_size, output_size=self._output_size(),
            num_layers=self.num_layers, bidirectional=self.bidirectional, dropout=self.dropout,
            nonlinearity=self.nonlinearity if self._cell == "rnn" else "tanh",
            vocab_size=self.n_tokens_ if tokens else None, per_step=self.per_step_,
            condition_size=None if data.conditions is None else data.conditions.shape[1],
            dtype=as_float_dtype(self.dtype), n_threads=self.n_threads,
            random_state=self._rng, norm=self.norm, residual=self.residual,
            layer_norm=self.layer_norm, recurrent_dropout=self.recurrent_dropout)
        self._optimizer = None

    def _warn_unused_options(self, input_size):
        """A warning for each model option that this configuration ignores; an
        error for the cell options the Elman cell does not have."""
        if self._cell == "rnn" and (self.layer_norm or self.recurrent_dropout):
            raise ValueError("layer_norm and recurrent_dropout are options of the LSTM and "
                             "GRU cells, not of the Elman RNN")
        layer_width = self.hidden_size * (2 if self.bidirectional else 1)
        if self.residual and self.num_layers == 1 and input_size != layer_width:
            warnings.warn(f"residual=True has no effect: the one layer's input size "
                          f"({input_size}) differs from its output size ({layer_width})",
                          UserWarning)

    def _new_optimizer(self):
        schedule = LearningRateSchedule(self.learning_rate, self.learning_rate_init,
                                        self.lr_decay, self.lr_decay_every, self.tol)
        return Optimizer(self.solver, self.model_.flat_params.size, self.model_.dtype,
                         momentum=self.momentum, nesterov=self.nesterovs_momentum,
                         beta1=self.beta_1, beta2=self.beta_2, epsilon=self.epsilon,
                         rho=self.rho, schedule=schedule)

    # ----- fit ---------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None, sample_weight_val=None):
        """Train on X, y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_timesteps) or (n_samples, n_timesteps, \
n_features), or list of (T_i, n_features) arrays
            Sequences; integer token ids when ``embedding_dim`` is set.
        y : array-like of shape (n_samples,), (n_samples, n_outputs), (n_samples, \
n_timesteps[, n_outputs]) or list of (T_i, ...) arrays
            Labels or values, per sequence or per step.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of every sample in the loss.
        X_val : array-like or list, default=None
            Validation sequences in any form X may take (as in scikit-learn's
            HistGradientBoosting). Scored after every epoch into
            ``validation_scores_`` and ``validation_loss_curve_``; with
            early_stopping they replace the held-out validation_fraction.
        y_val : array-like or list, default=None
            Targets of X_val; required with X_val.
        sample_weight_val : array-like of shape (n_val_samples,), default=None
            Weights of the validation samples in the validation loss and score.

        Returns
        -------
        self : the fitted estimator.
        """
        if X_val is None and (y_val is not None or sample_weight_val is not None):
            raise ValueError("y_val and sample_weight_val need X_val")
        if X_val is not None and y_val is None:
            raise ValueError("X_val needs y_val")
        validation = None if X_val is None else (X_val, y_val, sample_weight_val)
        return self._fit(X, y, sample_weight, incremental=False, validation=validation)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X, y, continuing from the current weights.

        classes : all class labels; required on the first call for classifiers
        (as in MLPClassifier), since a batch may not show every class.
        """
        fitted = hasattr(self, "model_")
        if not fitted and self._fixed_task == "classification" and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if fitted and classes is not None and hasattr(self, "classes_") and \
                not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes {_data.short_repr(classes)} differ from the first "
                             f"call's {_data.short_repr(self.classes_)}")
        return self._fit(X, y, sample_weight, incremental=True,
                         classes=None if fitted else classes)

    def _fit_conditioned(self, X, y, conditions):
        """fit, with per-sequence ``conditions`` (n_samples, d) or None:
        features a learned projection turns into the initial state of every
        layer. Protected API of SequenceGenerator (captioning)."""
        self._validate_params()
        return self._fit(X, y, None, incremental=False, conditions=conditions)

    def _fit(self, X, y, sample_weight, incremental, classes=None, conditions=None,
             validation=None):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        first = not (hasattr(self, "model_") and (incremental or self.warm_start))
        if first:
            self._forget_fit()
        else:
            self._check_same_network()
        data = self._prepare_X(X, reset=first)
        if conditions is not None:
            data.conditions = self._check_conditions(conditions, len(data))
        if first:
            self._learn_task(y, data, classes)
        target, rows = self._prepare_y(y, data, reset=first, classes=classes)
        weights = self._sample_weights(sample_weight, target, rows, len(data))
        if first:
            self._build_model(data)
            self._start_curves()
        if self._optimizer is None:
            self._optimizer = self._new_optimizer()
        self._optimizer.schedule.configure(self.learning_rate, self.learning_rate_init,
                                           self.lr_decay, self.lr_decay_every, self.tol)
        train = _TrainingSet(data, target, rows, weights, LOSSES[self._loss_name()],
                             resolve_n_threads(self.n_threads),
                             self._constant_prediction_loss(weights))
        train_idx, val = np.arange(len(data)), None
        if validation is not None:
            val = self._validation_set(*validation, train)
        elif self.early_stopping and not incremental:
            train_idx, val_idx = self._validation_split(len(data), target)
            val = _ValidationSet(train, val_idx)
        if val is not None and self.validation_scores_ is None:  # the first with validation
            self._start_validation_curves()
        self._run_epochs(train, train_idx, val, 1 if incremental else self.max_iter,
                         incremental)
        _quantize.forget(self.model_)  # e.g. the best weights were restored
        return self

    def _check_same_network(self):
        """warm_start and partial_fit continue the fitted network: a parameter
        that shapes it must not have changed since it was built."""
        config, tokens = self.model_.config, self.embedding_dim is not None
        wanted = {"hidden_size": self.hidden_size, "num_layers": self.num_layers,
                  "bidirectional": bool(self.bidirectional),
                  "nonlinearity": self.nonlinearity if self._cell == "rnn" else "tanh",
                  "norm": self.norm, "residual": bool(self.residual),
                  "layer_norm": bool(self.layer_norm)}
        changed = [name for name, value in wanted.items() if config[name] != value]
        if as_float_dtype(self.dtype) != self.model_.dtype:
            changed.append("dtype")
        if tokens != (config["vocab_size"] is not None) or (
                tokens and config["input_size"] != self.embedding_dim):
            changed.append("embedding_dim")
        if changed:
            raise ValueError(f"{', '.join(changed)} changed since the network was fitted: "
                             "warm_start and partial_fit continue that network; set "
                             "warm_start=False (or fit a new estimator) to train a new one")

    def _validation_set(self, X_val, y_val, sample_weight_val, train):
        """X_val, y_val prepared as the training data was (the fitted form,
        classes and target scaling)."""
        data = self._prepare_X(X_val, reset=False)
        target, rows = self._prepare_y(y_val, data, reset=False)
        weights = self._sample_weights(sample_weight_val, target, rows, len(data))
        prepared = _TrainingSet(data, target, rows, weights, train.loss_fn, train.n_threads)
        score_weights = (None if sample_weight_val is None else
                         _check_sample_weight(sample_weight_val, np.empty((len(data), 1)),
                                              dtype=np.float64)[rows])
        return _ValidationSet(prepared, np.arange(len(data)), score_weights)

    def _forget_fit(self):
        self._rng = np.random.default_rng(self.random_state)
        for attr in ("loss_curve_", "validation_scores_", "validation_loss_curve_",
                     "best_loss_", "best_validation_score_"):
            if hasattr(self, attr):
                delattr(self, attr)

    @staticmethod
    def _check_conditions(conditions, n):
        conditions = check_array(conditions, dtype=np.float64)
        if len(conditions) != n:
            raise ValueError(f"conditions has {len(conditions)} rows, X {n}")
        return conditions

    def _start_curves(self):
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.t_ = 0
        self.validation_scores_ = None  # lists from the first fit with validation data
        self.validation_loss_curve_ = None
        self.best_validation_score_ = None
        self.best_loss_ = np.inf

    def _start_validation_curves(self):
        self.validation_scores_ = []
        self.validation_loss_curve_ = []
        self.best_validation_score_ = -np.inf

    def _validation_split(self, n, target):
        """Sorted train and validation sample indices (stratified for labels
        when every class has two samples)."""
        stratify = None
        if self.task_ == "classification" and not self.per_step_:
            counts = np.bincount(target, minlength=len(self.classes_))
            if counts.min() >= 2:
                stratify = target
        n_val = max(1, int(round(self.validation_fraction * n)))
        if n - n_val < 1:
            raise ValueError("too few samples to hold out a validation set; set "
                             "early_stopping=False")
        if stratify is not None:
            from sklearn.model_selection import train_test_split
            train_idx, val_idx = train_test_split(
                np.arange(n), test_size=n_val, stratify=stratify,
                random_state=int(self._rng.integers(2**31 - 1)))
            return np.sort(train_idx), np.sort(val_idx)
        perm = self._rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _batch_size(self, n):
        return min(64, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    # ----- the training loop -------------------------------------------------------------
    def _run_epochs(self, train, train_idx, val, epochs, incremental):
        self._no_improvement_count = 0
        self.__dict__.pop("_best_params", None)  # an interrupted fit's best is not this one's
        try:
            with single_threaded_blas():
                stopped_early = self._epoch_loop(train, train_idx, val, epochs, incremental)
        finally:  # a fitted model does not keep its training buffers (partial_fit reuses them)
            if not incremental:
                self.model_.stack.workspaces.clear()
        if stopped_early is None:  # interrupted: the last finished epoch stays
            return
        if hasattr(self, "_best_params"):
            self.model_.flat_params[:] = self._best_params
            del self._best_params
        if not incremental and not stopped_early and epochs == self.max_iter:
            warnings.warn(f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning)

    def _epoch_loop(self, train, train_idx, val, epochs, incremental):
        """The epochs; returns whether early stopping ended them, or None after
        a Ctrl-C, wherever it came (training, validation scoring, between
        epochs): an epoch under way is undone, a finished one is kept whole."""
        checkpoint = None  # while an epoch is under way: what a Ctrl-C returns to
        try:
            for _ in range(epochs):
                started = time.perf_counter()
                checkpoint = self._checkpoint()
                epoch_loss = self._train_epoch(train, train_idx, checkpoint)
                val_result = None if val is None else self._validate(val)
                with _ctrl_c_deferred():  # the epoch is recorded whole, or not at all
                    self._end_epoch(epoch_loss, val_result, started)
                    checkpoint = None
                if not incremental and self._no_improvement_count >= self.n_iter_no_change:
                    if self.verbose:
                        print(f"no improvement of more than tol={self.tol} for "
                              f"{self.n_iter_no_change} epochs: stopping")
                    return True
            return False
        except KeyboardInterrupt:
            if checkpoint is not None:
                self._restore(checkpoint)
            warnings.warn(f"fit interrupted in epoch {self.n_iter_ + 1}; keeping the weights "
                          "of the last finished epoch", RuntimeWarning)
            return None

    def _checkpoint(self):
        """What a Ctrl-C or a divergence returns to: the weights, the optimizer's
        state and the step count of the last finished epoch."""
        return self.model_.flat_params.copy(), self._optimizer.state(), self.t_

    def _restore(self, checkpoint):
        params, optimizer_state, self.t_ = checkpoint
        self.model_.flat_params[:] = params
        _quantize.forget(self.model_)  # reduced and packed copies of the old weights
        self._optimizer.restore(optimizer_state)

    def _train_epoch(self, train, train_idx, checkpoint):
        """One pass over train_idx in mini-batches; the mean loss."""
        lr = self._optimizer.schedule.rate(self.n_iter_)
        batches = self._epoch_batches(train_idx, train.data.lengths)
        total, count = 0.0, 0
        bar = tqdm(total=len(batches), desc=f"epoch {self.n_iter_ + 1}", leave=False,
                   disable=not self.verbose, unit="batch")
        try:
            for idx in batches:
                loss = self._train_batch(train, idx, lr, checkpoint)
                total += loss * len(idx)
                count += len(idx)
                bar.update()
                bar.set_postfix(loss=f"{total / count:.4g}")
        finally:
            bar.close()
        epoch_loss = total / count
        if train.constant_loss is not None:
            self._check_divergence("epoch loss", epoch_loss, checkpoint,
                                   limit=DIVERGED_LOSS_FACTOR * train.constant_loss)
        return epoch_loss

    def _epoch_batches(self, train_idx, lengths):
        """The mini-batches of one epoch (arrays of sample indices) over
        train_idx; lengths: of every sample, or None. Ragged data with
        length_bucketing: samples of similar length together, so a batch costs
        about its real length (see _data.length_batches); else slices of the
        (shuffled) samples. fastrnn.dask plans its global batches here too."""
        batch = self._batch_size(len(train_idx))
        rng = self._rng if self.shuffle else None
        if self.length_bucketing and lengths is not None:
            return _data.length_batches(train_idx, lengths[train_idx], batch, rng)
        order = rng.permutation(train_idx) if rng is not None else train_idx
        return [order[start:start + batch] for start in range(0, len(order), batch)]

    def _constant_prediction_loss(self, weights):
        """The loss per row of uniform class probabilities, or of predicting
        the mean of the standardised targets (variance 1 per output)."""
        per_row = (np.log(len(self.classes_)) if self.task_ == "classification"
                   else 0.5 * self.n_outputs_)
        return per_row * float(np.mean(weights))

    def _train_batch(self, train, idx, lr, checkpoint):
        """Forward, loss, backward and one optimizer step on samples idx;
        returns the batch loss (mean over rows, plus the L2 penalty)."""
        loss_sum, n_rows = self._batch_loss_and_grad(train, idx)
        loss = loss_sum / n_rows + self._l2_penalty(len(idx))
        self._check_divergence("loss", loss, checkpoint)
        norm = self._apply_gradient(lr, n_rows, len(idx), train.n_threads)
        self._check_step(norm, checkpoint, train.n_threads)
        return loss

    def _batch_loss_and_grad(self, train, idx):
        """Forward, loss and backward on samples idx, no step: returns (the
        loss summed over the batch's output rows, the number of rows); the
        gradient of that sum is in model_.flat_grads (zero when the sum is
        not finite: the caller's divergence guard raises). fastrnn.dask sums
        these over workers."""
        net = self.model_
        values, lengths, conditions = train.data.batch(idx)
        out = net.forward(values, lengths=lengths, conditions=conditions, training=True,
                          validated=True)
        rows = _data.target_rows(idx, train.rows, train.data.lengths, train.data.n_steps,
                                 self.per_step_)
        out_rows = out.reshape(-1, out.shape[-1])
        mask = None
        if self.per_step_:
            mask = _data.step_mask(lengths, *values.shape[:2]).reshape(-1)
            out_rows = out_rows[mask]
        loss_sum, d_rows = train.loss_fn(out_rows.astype(np.float64), train.target[rows],
                                         train.weights[rows])
        net.zero_grad()
        if np.isfinite(loss_sum):  # backward refuses NaN and inf
            net.backward(self._output_grad(d_rows, mask, out.shape))
        return loss_sum, len(rows)

    def _apply_gradient(self, lr, n_rows, batch_size, n_threads):
        """One step of _optimizer with model_.flat_grads, the gradient of a
        loss summed over n_rows rows of batch_size samples; returns the
        gradient's norm (for _check_step)."""
        net = self.model_
        self.t_ += 1
        return self._optimizer.step(net.flat_params, net.flat_grads, lr,
                                    l2=self.alpha / batch_size, grad_scale=1.0 / n_rows,
                                    clip_norm=self.clip_norm, decay_mask=net.decay_mask,
                                    n_threads=n_threads)

    def _check_step(self, grad_norm, checkpoint, n_threads):
        """The divergence guard after an optimizer step: the gradient norm and
        the weights must be finite."""
        self._check_divergence("gradient norm", grad_norm, checkpoint)
        self._check_divergence("sum of squared weights",
                               _kernels.sumsq(x=self.model_.flat_params, n_threads=n_threads),
                               checkpoint)

    def _l2_penalty(self, batch_size):
        if not self.alpha:
            return 0.0
        w = self.model_.flat_params
        return 0.5 * self.alpha * float(np.dot(w * self.model_.decay_mask, w)) / batch_size

    def _output_grad(self, d_rows, mask, out_shape):
        """d(loss)/d(output) in the network's output shape (zeros at padding)."""
        if mask is None:
            return d_rows
        d_out = np.zeros((mask.size, d_rows.shape[1]), self.model_.dtype)
        d_out[mask] = d_rows
        return d_out.reshape(out_shape)

    def _check_divergence(self, what, value, checkpoint, limit=np.inf):
        """The divergence guard: a NaN or inf loss, gradient or weight (or an
        epoch loss above limit) restores the checkpoint (the weights and
        optimizer state of the last finished epoch) and raises
        TrainingDivergedError."""
        if np.isfinite(value) and value <= limit:
            return
        self._restore(checkpoint)
        raise TrainingDivergedError(
            f"the training {what} became {value} in epoch {self.n_iter_ + 1}: "
            "training diverged. Lower learning_rate_init (now "
            f"{self.learning_rate_init}), set clip_norm (now "
            f"{self.clip_norm}), or scale X; the model keeps the weights "
            "of the last finished epoch.")

    def _end_epoch(self, epoch_loss, val_result, started):
        """Curves, validation score and loss, early-stopping count, the
        schedule, and the verbose line of a finished epoch (val_result: the
        (score, loss) of _validate, or None without validation data)."""
        self.loss_curve_.append(epoch_loss)
        self.n_iter_ += 1
        message = f"epoch {self.n_iter_}: loss {epoch_loss:.6g}"
        val_score = None
        if val_result is not None:
            val_score, val_loss = val_result
            self.validation_scores_.append(val_score)
            self.validation_loss_curve_.append(val_loss)
            message += f", validation loss {val_loss:.6g}, validation score {val_score:.6g}"
        stopping_score = val_score if self.early_stopping else None
        self._update_no_improvement_count(epoch_loss, stopping_score)
        self._optimizer.schedule.end_epoch(epoch_loss if stopping_score is None
                                           else -stopping_score)
        if self.verbose:
            print(f"{message} ({time.perf_counter() - started:.2f}s)")

    def _update_no_improvement_count(self, epoch_loss, val_score):
        """Count epochs without an improvement of more than tol (of the
        validation score when early stopping on one, else of the training
        loss); keep the best validation weights."""
        if val_score is not None:
            if val_score > self.best_validation_score_ + self.tol:
                self._no_improvement_count = 0
            else:
                self._no_improvement_count += 1
            if val_score > self.best_validation_score_:
                self.best_validation_score_ = val_score
                self._best_params = self.model_.flat_params.copy()
        elif epoch_loss > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        self.best_loss_ = min(self.best_loss_, epoch_loss)

    def _validate(self, val):
        """(score, loss) on a validation set: accuracy or R^2 (weighted by
        sample_weight_val when given), and the mean loss per output row
        weighted as in training (sample and class weights), without the L2
        penalty."""
        data, idx = val.prepared.data, val.idx
        sub = data.subset(idx)
        out = self._forward(sub)
        rows = _data.target_rows(idx, val.prepared.rows, data.lengths, data.n_steps,
                                 self.per_step_)
        out = out.reshape(-1, out.shape[-1])
        if self.per_step_:
            out = out[sub.step_mask().reshape(-1)]
        target, weights = val.prepared.target[rows], val.prepared.weights[rows]
        loss_sum, _ = val.prepared.loss_fn(out.astype(np.float64), target, weights)
        score_weights = val.score_weights
        if self.task_ == "classification":
            score = accuracy_score(target, np.argmax(self._proba_from_logits(out), axis=-1),
                                   sample_weight=score_weights)
        else:
            score = r2_score(target, out, sample_weight=score_weights)
        return float(score), float(loss_sum / len(rows))

    # ----- prediction --------------------------------------------------------------------
    def _forward(self, data, inference_dtype=None):
        """Head outputs for every sample, in X's order, PREDICT_BATCH samples at
        a time (ragged data with length_bucketing: batches of similar length);
        inference_dtype: reduced weights (predictions, not validation)."""
        net = self.model_
        # W_hh stays packed between predict calls: every write to the weights
        # (optimizer, restores, loads, dask) invalidates the packs (_packed.written)
        net.stack.keep_packed_weights()
        order = np.arange(len(data))
        if self.length_bucketing and data.lengths is not None:
            order = np.argsort(data.lengths, kind="stable")
        outputs = None
        rows = self._predict_rows(data.n_steps)
        with single_threaded_blas():
            for start in range(0, len(data), rows):
                idx = order[start:start + rows]
                values, lengths, conditions = data.batch(idx)
                out = net.forward(values, lengths=lengths, conditions=conditions,
                                  inference_dtype=inference_dtype,
                                  validated=True)
                if outputs is None:
                    steps = (data.n_steps,) if self.per_step_ else ()
                    outputs = np.zeros((len(data),) + steps + out.shape[-1:], out.dtype)
                if self.per_step_:
                    outputs[idx, :out.shape[1]] = out
                else:
                    outputs[idx] = out
        return outputs

    def _predict_rows(self, n_steps):
        """Samples per predict batch: PREDICT_BATCH, fewer for long sequences
        (PREDICT_ELEMENTS floats per layer output), at least 64."""
        c = self.model_.config
        width = max(c["input_size"], c["hidden_size"] * self.model_.stack.num_directions)
        return int(np.clip(PREDICT_ELEMENTS // max(1, n_steps * width), 64, PREDICT_BATCH))

    def _decision(self, X, conditions=None):
        check_is_fitted(self, "model_")
        data = self._prepare_X(X, reset=False)
        if conditions is not None:
            data.conditions = check_array(conditions, dtype=np.float64)
        return self._forward(data, self.inference_dtype), data

    def _proba_from_logits(self, logits):
        logits = logits.astype(np.float64)
        if len(self.classes_) == 2:
            p1 = 0.5 * (1 + np.tanh(0.5 * logits[..., 0]))
            return np.stack([1 - p1, p1], axis=-1)
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def _unpad(self, values, data, X):
        """Per-step predictions: a list of per-sample arrays when X was a list
        of different lengths, else the padded array. Per-sequence predictions
        stay one row per sequence."""
        if self.per_step_ and data.lengths is not None and _data.is_ragged(X):
            return [v[:L] for v, L in zip(values, data.lengths)]
        return values

    def _predict_proba_conditioned(self, X, conditions=None):
        """Class probabilities of X, optionally with per-sequence conditions
        (a conditioned network). Protected API of SequenceGenerator."""
        out, data = self._decision(X, conditions)
        return self._unpad(self._proba_from_logits(out), data, X)

    def predict(self, X):
        """Class labels or values: (n,), (n, k), or per step (n, T[, k])."""
        out, data = self._decision(X)
        if self.task_ == "classification":
            pred = self.classes_[np.argmax(self._proba_from_logits(out), axis=-1)]
        else:
            pred = out.astype(np.float64) * self.y_scale_ + self.y_mean_
            if self.n_outputs_ == 1:
                pred = pred[..., 0]
        return self._unpad(pred, data, X)

    def score(self, X, y, sample_weight=None):
        """Accuracy (classification) or R^2 (regression), over valid steps for
        per-step targets (where sample_weight is ignored)."""
        pred = self.predict(X)
        if self.per_step_:
            data = self._prepare_X(X, reset=False)
            if isinstance(pred, list):
                pred = np.concatenate(pred)
                y = np.concatenate([np.asarray(v) for v in y])
            else:
                mask = data.step_mask()
                pred, y = np.asarray(pred)[mask], np.asarray(y)[mask]
            sample_weight = None
        if self.task_ == "classification":
            return accuracy_score(y, pred, sample_weight=sample_weight)
        return r2_score(y, pred, sample_weight=sample_weight)

    # ----- attributions ------------------------------------------------------------------
    def explain(self, X, method="integrated_gradients", target=None, baseline=None, n_steps=50,
                *, step=None, window=1, output="logit"):
        """Attribute each prediction to the steps and features of X.

        Parameters
        ----------
        X : array-like or list of arrays
            Sequences in the form given to fit.
        method : {"integrated_gradients", "saliency", "input_x_gradient", \
"occlusion"}, default="integrated_gradients"
        target : class label or output index (or one per sample), default=None
            Classifiers: the class whose logit is explained (None: the
            predicted class). Regressors: the output (None: output 0).
        baseline : array-like or None, default=None
            The reference input of integrated gradients and occlusion (None:
            zeros; token input: zero embeddings, or baseline token ids).
        n_steps : int, default=50
            Intervals of integrated gradients' trapezoid rule.
        step : int or None, default=None
            Per-step models: the step whose prediction is explained (None:
            each sequence's last step; negative: counted back from it).
        window : int, default=1
            Consecutive steps occluded together.
        output : {"logit", "probability"}, default="logit"
            Classifiers: what is explained.

        Returns
        -------
        attributions : ndarray of X's shape ((n, T, F); (n, T) for 2-D X or
            token ids), or a list of (T_i, F) arrays for ragged X. Integrated
            gradients' attributions of a sample sum to the explained output at
            X minus that at the baseline (fastrnn.explain.explained_output).

        Examples
        --------
        >>> import numpy as np
        >>> from fastrnn import FastGRURegressor
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 5, 2))
        >>> y = X[:, 1, 0]                      # only step 1, feature 0 matters
        >>> reg = FastGRURegressor(hidden_size=8, max_iter=20, random_state=0).fit(X, y)
        >>> A = reg.explain(X[:3], n_steps=32)
        >>> A.shape
        (3, 5, 2)
        """
        return explain_estimator(self, X, method, target, baseline, n_steps, step=step,
                                 window=window, output=output)

    # ----- persistence -------------------------------------------------------------------
    def save(self, path):
        """Write the fitted estimator to path (.npz, loaded with fastrnn.load)."""
        persistence.save(self, path)

    def _get_fitted_state(self):
        """The fitted state, for persistence: (attributes, arrays, model).
        attributes holds JSON-able fitted scalars and the loss and validation
        curves, arrays the fitted NumPy arrays, model the Network."""
        check_is_fitted(self, "model_")
        attributes = {name: getattr(self, name) for name in self._FITTED_SCALARS
                      if hasattr(self, name)}
        for name in self._CURVES:
            curve = getattr(self, name, None)
            attributes[name] = None if curve is None else [float(v) for v in curve]
        arrays = {name: np.asarray(getattr(self, name)) for name in self._FITTED_ARRAYS
                  if hasattr(self, name)}
        return attributes, arrays, self.model_

    def _set_fitted_state(self, attributes, arrays, model):
        """Restore what _get_fitted_state gave; training state (optimizer
        moments, schedule, random generator) starts afresh."""
        unknown = set(attributes) - set(self._FITTED_SCALARS) - set(self._CURVES)
        unknown |= set(arrays) - set(self._FITTED_ARRAYS)
        if unknown:
            raise ValueError(f"unknown fitted attributes {sorted(unknown)}")
        for name, value in {**attributes, **arrays}.items():
            setattr(self, name, value)
        self.loss_curve_ = list(attributes["loss_curve_"])
        for name in self._CURVES[1:]:  # None when there was no validation data
            setattr(self, name, None if attributes.get(name) is None else list(attributes[name]))
        self.model_ = model
        self._optimizer = None
        self._rng = np.random.default_rng(self.random_state)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True
        return tags


class FastClassifierMixin(ClassifierMixin):
    """predict_proba, per-step aware accuracy and classifier tags."""

    def predict_proba(self, X):
        """Class probabilities, (n, n_classes) or per step (n, T, n_classes)."""
        return self._predict_proba_conditioned(X)

    def predict_log_proba(self, X):
        """Logarithm of predict_proba."""
        proba = self.predict_proba(X)
        if isinstance(proba, list):
            return [np.log(p) for p in proba]
        return np.log(proba)

    def score(self, X, y, sample_weight=None):
        """Accuracy, over valid steps for per-step targets."""
        return BaseFastRNN.score(self, X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags = ClassifierTags(multi_class=True, multi_label=False)
        return tags


class FastRegressorMixin(RegressorMixin):
    """Per-step aware R^2 and multi-output regressor tags."""

    def score(self, X, y, sample_weight=None):
        """R^2, over valid steps for per-step targets."""
        return BaseFastRNN.score(self, X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags = RegressorTags()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _predicts_classes(estimator):
    return getattr(estimator, "task_", "classification") == "classification"


class FastAutoTaskMixin:
    """predict_proba for the estimators that infer their task from y: there
    only when the task is (or, before fit, may be) classification."""

    @available_if(_predicts_classes)
    def predict_proba(self, X):
        """Class probabilities, (n, n_classes) or per step (n, T, n_classes);
        only when the task is classification."""
        return self._predict_proba_conditioned(X)
