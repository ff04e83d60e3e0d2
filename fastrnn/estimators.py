"""scikit-learn estimators over recurrent networks.

    >>> from sklearn.datasets import load_digits
    >>> from fastrnn import FastLSTMClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.reshape(-1, 8, 8) / 16          # 8 rows of 8 pixels: an 8-step sequence
    >>> clf = FastLSTMClassifier(hidden_size=32, max_iter=5, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape
    (3,)

Inputs X: 2-D (n, T) univariate sequences; 3-D (n, T, F); a list of (T_i, F)
or (T_i,) arrays of different lengths (handled with per-sample lengths, never
padded into the loss); integer token sequences (2-D or a list) when
``embedding_dim`` is set. Targets y: (n,) labels or values, (n, k) multi-output
regression, or per-step targets (n, T) / (n, T, k) / a list of (T_i,...) arrays.
"""
import inspect
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils import check_array
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from tqdm.auto import tqdm

from fastrnn._threads import resolve_n_threads, single_threaded_blas
from fastrnn.layers import as_float_dtype
from fastrnn.losses import LOSSES
from fastrnn.network import Network
from fastrnn.optim import SOLVERS, Optimizer

PREDICT_BATCH = 1024  # samples per forward pass in predict: bounded memory on large X


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or inf."""


# Hyper-parameters shared by every estimator, in signature order, with defaults.
COMMON_PARAMS = dict(
    hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0, embedding_dim=None,
    vocab_size=None, per_step="auto", solver="adam", learning_rate="constant", learning_rate_init=0.001,
    lr_decay=0.5, lr_decay_every=10, momentum=0.9, nesterovs_momentum=True, beta_1=0.9,
    beta_2=0.999, epsilon=1e-8, rho=0.9, batch_size="auto", max_iter=200, shuffle=True,
    alpha=1e-4, clip_norm=5.0, early_stopping=False, validation_fraction=0.1,
    n_iter_no_change=10, tol=1e-4, warm_start=False, random_state=None, verbose=False,
    n_threads=None, dtype="float32",
)

# Training options that wrappers (SequenceGenerator, Forecaster) pass on to the
# estimator they train.
TRAINING_OPTIONS = ("solver", "learning_rate_init", "batch_size", "max_iter", "alpha",
                    "clip_norm", "early_stopping", "n_iter_no_change", "tol", "random_state",
                    "verbose", "n_threads", "dtype")


def training_options(owner):
    """The TRAINING_OPTIONS that owner has, as keyword arguments."""
    return {name: getattr(owner, name) for name in TRAINING_OPTIONS if hasattr(owner, name)}


PARAMS_DOC = """
    Parameters
    ----------
    hidden_size : int, default=64
        Units per recurrent layer (and direction).
    num_layers : int, default=1
    bidirectional : bool, default=False
    dropout : float, default=0
        Dropout between recurrent layers (needs num_layers > 1).
    embedding_dim : int or None, default=None
        When set, X holds integer token ids and an embedding of this size is
        learned with the rest.
    vocab_size : int or None, default=None
        Token ids lie in [0, vocab_size); None: the largest id seen in fit + 1.
    per_step : "auto" or bool, default="auto"
        One prediction per time step instead of per sequence. "auto": y of
        shape (n, T, k), or (n, T) class labels, or a list of per-sample arrays.
    solver : {"adam", "sgd", "rmsprop", "adagrad"}, default="adam"
    learning_rate : {"constant", "exponential", "step", "plateau"}, default="constant"
        Schedule: lr * lr_decay**epoch, lr * lr_decay**(epoch // lr_decay_every),
        or lr times lr_decay after lr_decay_every epochs without improvement.
    learning_rate_init : float, default=0.001
    lr_decay : float, default=0.5
    lr_decay_every : int, default=10
    momentum, nesterovs_momentum : SGD's momentum, default 0.9 and True.
    beta_1, beta_2, epsilon : Adam's constants (epsilon also RMSprop's, Adagrad's).
    rho : float, default=0.9
        RMSprop's decay.
    batch_size : int or "auto", default="auto"
        "auto": min(64, n_samples).
    max_iter : int, default=200
        Epochs.
    shuffle : bool, default=True
    alpha : float, default=1e-4
        L2 penalty on weights (not biases), as in MLPClassifier.
    clip_norm : float or None, default=5.0
        Clip the gradient to this global norm.
    early_stopping : bool, default=False
        Hold out validation_fraction of the data, stop when its score stops
        improving for n_iter_no_change epochs, and keep the best weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    tol : float, default=1e-4
        Improvement of the loss (or validation score) that counts.
    warm_start : bool, default=False
        Continue from the previous fit's weights.
    random_state : int or None
        Makes a fit reproducible bit for bit for a given thread count.
    verbose : bool or int, default=False
        A progress bar per epoch and one line of loss / validation score.
    n_threads : int or None
        None: what OpenMP allows; -1: every CPU.
    dtype : "float32" or "float64", default="float32"
"""


def _make_init(extra_params):
    """An __init__ that stores its keyword arguments, with an explicit signature
    (what scikit-learn's get_params/clone read)."""
    defaults = dict(COMMON_PARAMS, **extra_params)

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected parameters {unknown}")
        for name, default in defaults.items():
            setattr(self, name, kwargs.get(name, default))

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, default in defaults.items()]
    __init__.__signature__ = inspect.Signature(params)
    return __init__


def _is_ragged(X):
    return isinstance(X, (list, tuple)) and len(X) > 0 and not all(
        np.shape(x) == np.shape(X[0]) for x in X)


class _SequenceData:
    """X as arrays the network takes: values (n, T, F) float or (n, T) token
    ids, lengths (n,) or None, and conditions (n, d) or None (conditioned
    generation)."""

    def __init__(self, values, lengths, conditions=None):
        self.values, self.lengths, self.conditions = values, lengths, conditions

    def __len__(self):
        return self.values.shape[0]

    def subset(self, idx):
        return _SequenceData(self.values[idx],
                             None if self.lengths is None else self.lengths[idx],
                             None if self.conditions is None else self.conditions[idx])

    def batch(self, idx):
        """values (trimmed to the batch's longest sequence), lengths, conditions."""
        lengths = None if self.lengths is None else self.lengths[idx]
        T = self.values.shape[1] if lengths is None else int(lengths.max())
        conditions = None if self.conditions is None else self.conditions[idx]
        return self.values[idx, :T], lengths, conditions


def _pad(seqs, dtype):
    """Right-pad a list of arrays (T_i, ...) into (n, max T, ...) plus lengths."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int32)
    if lengths.min() < 1:
        raise ValueError("every sequence needs at least one time step")
    out = np.zeros((len(seqs), lengths.max()) + seqs[0].shape[1:], dtype)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, lengths


class _BaseFastRNN(BaseEstimator):
    _cell = None      # "lstm", "gru" or "rnn"
    _fixed_task = None  # "classification" / "regression", or None to infer from y

    # ----- parameters --------------------------------------------------------------------
    def _validate_params(self):
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("hidden_size", "num_layers", "max_iter", "n_iter_no_change",
                     "lr_decay_every"):
            positive_int(name)
        if self.embedding_dim is not None:
            positive_int("embedding_dim")
        if self.vocab_size is not None:
            positive_int("vocab_size")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.learning_rate not in ("constant", "exponential", "step", "plateau"):
            raise ValueError("learning_rate must be 'constant', 'exponential', 'step' or "
                             f"'plateau', got {self.learning_rate!r}")
        if not self.learning_rate_init > 0:
            raise ValueError(f"learning_rate_init must be > 0, got {self.learning_rate_init}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must lie in (0, 1), got "
                             f"{self.validation_fraction}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be None or > 0, got {self.clip_norm}")
        if self.batch_size != "auto":
            positive_int("batch_size")
        if self.per_step not in ("auto", True, False):
            raise ValueError(f"per_step must be 'auto', True or False, got {self.per_step!r}")
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        as_float_dtype(self.dtype)
        resolve_n_threads(self.n_threads)

    # ----- inputs ------------------------------------------------------------------------
    def _prepare_X(self, X, reset):
        """Validate X; on reset remember its form. Returns _SequenceData."""
        tokens = self.embedding_dim is not None
        dtype = as_float_dtype(self.dtype)
        if isinstance(X, (list, tuple)) and len(X) > 0 and not np.isscalar(X[0]) and \
                _is_ragged(X):
            seqs = [self._check_sequence(x, tokens) for x in X]
            kind = "tokens_list" if tokens else "list"
            if not tokens:
                n_features = seqs[0].shape[1]
                if any(s.shape[1] != n_features for s in seqs):
                    raise ValueError("every sequence must have the same number of features")
            values, lengths = _pad(seqs, np.int64 if tokens else dtype)
        else:
            if tokens:
                values = check_array(X, dtype=None, ensure_2d=True)
                kind = "tokens"
                values = self._check_tokens(values)
                if reset:
                    self.n_features_in_ = values.shape[1]
            elif np.asarray(X).ndim == 3:
                values = check_array(X, dtype=[np.float64, np.float32], allow_nd=True)
                kind = "3d"
            else:
                values = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])
                values = values[:, :, None]
                kind = "2d"
            lengths = None
        if reset:
            self.input_kind_ = kind
            if kind in ("3d", "list"):
                self.n_features_in_ = values.shape[2]
            if tokens:
                self.n_tokens_ = (int(values.max()) + 1 if self.vocab_size is None
                                  else int(self.vocab_size))
        else:
            self._check_same_form(kind, values)
        if tokens and values.max() >= self.n_tokens_:
            raise ValueError(f"token id {values.max()} is outside the vocabulary of "
                             f"{self.n_tokens_} ids seen in fit (set vocab_size)")
        if not tokens:
            values = values.astype(dtype, copy=False)
        return _SequenceData(values, lengths)

    @staticmethod
    def _check_sequence(x, tokens):
        x = np.asarray(x)
        if tokens:
            if x.ndim != 1 or x.dtype.kind not in "iu":
                raise ValueError("with embedding_dim, each sequence must be a 1-D sequence of "
                                 "integer token ids")
            if x.size and x.min() < 0:
                raise ValueError("token ids must be >= 0")
            return x
        x = check_array(x.reshape(-1, 1) if x.ndim == 1 else x,
                        dtype=[np.float64, np.float32])
        return x

    @staticmethod
    def _check_tokens(values):
        if values.dtype.kind not in "iu":
            if values.dtype.kind == "f" and np.all(values == np.round(values)):
                values = values.astype(np.int64)
            else:
                raise ValueError("with embedding_dim, X must hold integer token ids, got "
                                 f"dtype {values.dtype}")
        if values.min() < 0:
            raise ValueError("token ids must be >= 0")
        return values

    def _check_same_form(self, kind, values):
        fitted = self.input_kind_
        same = {"list": ("list", "3d"), "3d": ("list", "3d"), "2d": ("2d",),
                "tokens": ("tokens", "tokens_list"), "tokens_list": ("tokens", "tokens_list")}
        if kind not in same[fitted]:
            raise ValueError(f"X was a {fitted} input in fit, got {kind} now")
        if kind in ("3d", "list") and values.shape[2] != self.n_features_in_:
            raise ValueError(f"X has {values.shape[2]} features, but {type(self).__name__} "
                             f"is expecting {self.n_features_in_} features as input")

    # ----- targets -----------------------------------------------------------------------
    def _infer_task(self, y):
        if self._fixed_task is not None:
            return self._fixed_task
        task = getattr(self, "task", "auto")
        if task in ("classification", "regression"):
            return task
        if task != "auto":
            raise ValueError(f"task must be 'auto', 'classification' or 'regression', got "
                             f"{task!r}")
        sample = np.concatenate([np.ravel(v) for v in y]) if _is_ragged(y) else np.asarray(y)
        return "regression" if sample.dtype.kind in "fc" else "classification"

    def _per_step(self, y, data):
        if self.per_step != "auto":
            return bool(self.per_step)
        if _is_ragged(y) or (isinstance(y, (list, tuple)) and data.lengths is not None):
            return True
        y = np.asarray(y)
        if y.ndim == 3:
            return True
        # (n, T) labels are per step; an (n, 1) column is one label per sequence
        return (y.ndim == 2 and self.task_ == "classification"
                and y.shape[1] == data.values.shape[1] and y.shape[1] > 1)

    def _prepare_y(self, y, data, reset, classes=None):
        """Targets as rows matching the network's output rows, plus the row ->
        sample index (for sample weights). Classification: class indices;
        classes (partial_fit's first call) fixes classes_ instead of y."""
        n, T = data.values.shape[0], data.values.shape[1]
        if self.per_step_:
            if isinstance(y, (list, tuple)):
                seqs = [np.asarray(v) for v in y]
                if len(seqs) != n:
                    raise ValueError(f"y has {len(seqs)} sequences, X has {n}")
                lengths = data.lengths if data.lengths is not None else np.full(n, T)
                for s, L in zip(seqs, lengths):
                    if len(s) != L:
                        raise ValueError("each per-step target must have its sequence's length")
                flat = np.concatenate(seqs)
            else:
                y = np.asarray(y)
                if y.shape[:2] != (n, T):
                    raise ValueError(f"per-step y must have shape ({n}, {T}, ...), got "
                                     f"{y.shape}")
                mask = self._step_mask(data.lengths, n, T)
                flat = y[mask]
            rows = np.repeat(np.arange(n), data.lengths if data.lengths is not None else T)
        else:
            if self.task_ == "classification":
                flat = np.asarray(y)
                if flat.ndim == 2 and flat.shape[1] == 1:
                    warnings.warn("A column-vector y was passed when a 1d array was expected.",
                                  DataConversionWarning)
                    flat = flat.ravel()
                if flat.ndim != 1:
                    raise ValueError(f"y must be 1-D class labels, got shape {flat.shape}")
            else:
                flat = np.asarray(y)
                if flat.ndim not in (1, 2):
                    raise ValueError(f"y must be 1-D or 2-D, got shape {flat.shape}")
            if flat.shape[0] != n:
                raise ValueError(f"X has {n} samples but y has {flat.shape[0]}")
            rows = np.arange(n)
        if self.task_ == "classification":
            if flat.dtype.kind == "f" and not np.all(np.isfinite(flat)):
                raise ValueError("Input y contains NaN or infinity.")
            if reset and not self.per_step_:
                check_classification_targets(flat)
            if reset:
                self.classes_ = np.unique(flat) if classes is None else np.unique(classes)
                if len(self.classes_) < 2:
                    raise ValueError("Classifier needs samples of at least 2 classes in the "
                                     f"data, got 1 class: {self.classes_[0]!r}")
            index = np.searchsorted(self.classes_, flat)
            index = np.clip(index, 0, len(self.classes_) - 1)
            if not np.all(self.classes_[index] == flat):
                unseen = np.setdiff1d(flat, self.classes_)
                raise ValueError(f"y holds labels not in classes_: {unseen[:5]}")
            return index, rows
        flat = check_array(flat.reshape(len(flat), -1), dtype=np.float64)
        if reset:
            self.n_outputs_ = flat.shape[1]
            self.y_mean_ = flat.mean(axis=0)
            scale = flat.std(axis=0)
            self.y_scale_ = np.where(scale > 0, scale, 1.0)
        elif flat.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {flat.shape[1]} outputs, the model {self.n_outputs_}")
        return (flat - self.y_mean_) / self.y_scale_, rows

    @staticmethod
    def _step_mask(lengths, n, T):
        """(n, T) True at the valid steps."""
        if lengths is None:
            return np.ones((n, T), bool)
        return np.arange(T)[None, :] < lengths[:, None]

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
        self.model_ = Network(
            self._cell, input_size=self.embedding_dim if tokens else data.values.shape[2],
            hidden_size=self.hidden_size, output_size=self._output_size(),
            num_layers=self.num_layers, bidirectional=self.bidirectional, dropout=self.dropout,
            nonlinearity=getattr(self, "nonlinearity", "tanh"),
            vocab_size=self.n_tokens_ if tokens else None, per_step=self.per_step_,
            condition_size=None if data.conditions is None else data.conditions.shape[1],
            dtype=as_float_dtype(self.dtype), n_threads=self.n_threads,
            random_state=self._rng)
        self._optimizer = None

    def _new_optimizer(self):
        return Optimizer(self.solver, self.model_.flat_params.size, self.model_.dtype,
                         momentum=self.momentum, nesterov=self.nesterovs_momentum,
                         beta1=self.beta_1, beta2=self.beta_2, epsilon=self.epsilon,
                         rho=self.rho)

    # ----- training ----------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Train on X, y (see the module docstring for their forms).

        sample_weight : (n,) per-sample weights, optional.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None, conditions=None):
        self._validate_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        first = not (hasattr(self, "model_") and (incremental or self.warm_start))
        if first:
            self._rng = np.random.default_rng(self.random_state)
            for attr in ("loss_curve_", "validation_scores_", "best_loss_", "best_validation_score_"):
                if hasattr(self, attr):
                    delattr(self, attr)
        data = self._prepare_X(X, reset=first)
        if conditions is not None:
            data.conditions = check_array(conditions, dtype=np.float64)
            if len(data.conditions) != len(data):
                raise ValueError(f"conditions has {len(data.conditions)} rows, X {len(data)}")
        if first:
            self.task_ = self._infer_task(y)
            if classes is not None and self.task_ != "classification":
                raise ValueError("classes is only for classification")
            self.per_step_ = self._per_step(y, data)
        target, rows = self._prepare_y(y, data, reset=first, classes=classes)
        n = len(data)
        weights = self._sample_weights(sample_weight, target, rows, n)
        if first:
            self._build_model(data)
            self.loss_curve_ = []
            self.n_iter_ = 0
            self.t_ = 0
            self._lr = float(self.learning_rate_init)
            self._plateau = (np.inf, 0)
            if self.early_stopping and not incremental:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
            else:
                self.validation_scores_ = None
                self.best_validation_score_ = None
            self.best_loss_ = np.inf
        if self._optimizer is None:
            self._optimizer = self._new_optimizer()

        train_idx, val_idx = np.arange(n), None
        if self.early_stopping and not incremental:
            train_idx, val_idx = self._validation_split(n, target, rows)
        epochs = 1 if incremental else self.max_iter
        self._run_epochs(data, target, rows, weights, train_idx, val_idx, epochs, incremental)
        return self

    def _sample_weights(self, sample_weight, target, rows, n):
        sw = _check_sample_weight(sample_weight, np.empty((n, 1)), dtype=np.float64)
        if self.task_ == "classification" and getattr(self, "class_weight", None) is not None:
            labels = self.classes_[target]
            per_row = compute_sample_weight(self.class_weight, labels)
            return sw[rows] * per_row
        return sw[rows]

    def _validation_split(self, n, target, rows):
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

    def _epoch_lr(self, epoch):
        lr0 = float(self.learning_rate_init)
        if self.learning_rate == "exponential":
            return lr0 * self.lr_decay ** epoch
        if self.learning_rate == "step":
            return lr0 * self.lr_decay ** (epoch // self.lr_decay_every)
        return self._lr  # constant, or plateau (changed on plateaus)

    def _rows_of(self, idx, rows, lengths, T):
        """Target rows of the samples idx, in the order the network emits them."""
        if not self.per_step_:
            return idx
        lens = lengths[idx] if lengths is not None else np.full(len(idx), T)
        starts = np.searchsorted(rows, idx)
        # starts[i] + 0..lens[i]-1 for every sample, without a Python loop
        return np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(lens.sum())

    def _run_epochs(self, data, target, rows, weights, train_idx, val_idx, epochs, incremental):
        net = self.model_
        loss_fn = LOSSES[self._loss_name()]
        n_threads = resolve_n_threads(self.n_threads)
        batch = self._batch_size(len(train_idx))
        n_batches = -(-len(train_idx) // batch)
        T = data.values.shape[1]
        no_improve = 0
        stopped_early = False
        with single_threaded_blas():
            for epoch in range(epochs):
                snapshot = net.flat_params.copy()  # the weights of the last finished epoch
                lr = self._epoch_lr(self.n_iter_)
                order = self._rng.permutation(train_idx) if self.shuffle else train_idx
                total, count = 0.0, 0
                started = time.perf_counter()
                bar = tqdm(total=n_batches, desc=f"epoch {self.n_iter_ + 1}", leave=False,
                           disable=not self.verbose, unit="batch")
                try:
                    for b in range(n_batches):
                        idx = order[b * batch:(b + 1) * batch]
                        values, lengths, conditions = data.batch(idx)
                        out = net.forward(values, lengths=lengths, conditions=conditions,
                                          training=True)
                        r = self._rows_of(idx, rows, data.lengths, T)
                        out_rows = out.reshape(-1, out.shape[-1])
                        if self.per_step_:
                            mask = self._step_mask(lengths, *values.shape[:2]).reshape(-1)
                            out_rows = out_rows[mask]
                        loss_sum, d_rows = loss_fn(out_rows.astype(np.float64), target[r],
                                                   weights[r])
                        norm = len(idx)
                        w = net.flat_params
                        l2 = (0.5 * self.alpha * float(np.dot(w * net.decay_mask, w)) / norm
                              if self.alpha else 0.0)
                        loss = loss_sum / len(r) + l2
                        if not np.isfinite(loss):
                            net.flat_params[:] = snapshot
                            raise TrainingDivergedError(
                                f"the training loss became {loss} in epoch {self.n_iter_ + 1}: "
                                "training diverged. Lower learning_rate_init (now "
                                f"{self.learning_rate_init}), set clip_norm (now "
                                f"{self.clip_norm}), or scale X; the model keeps the weights "
                                "of the last finished epoch.")
                        if self.per_step_:
                            d_out = np.zeros((mask.size, d_rows.shape[1]), net.dtype)
                            d_out[mask] = d_rows
                            d_out = d_out.reshape(out.shape)
                        else:
                            d_out = d_rows
                        net.zero_grad()
                        net.backward(d_out)
                        self.t_ += 1
                        self._optimizer.step(net.flat_params, net.flat_grads, lr,
                                             l2=self.alpha / norm, grad_scale=1.0 / len(r),
                                             clip_norm=self.clip_norm,
                                             decay_mask=net.decay_mask, n_threads=n_threads)
                        total += loss * len(idx)
                        count += len(idx)
                        bar.update()
                        bar.set_postfix(loss=f"{total / count:.4g}")
                except KeyboardInterrupt:
                    bar.close()
                    net.flat_params[:] = snapshot
                    warnings.warn(f"fit interrupted in epoch {self.n_iter_ + 1}; keeping the "
                                  "weights of the last finished epoch", RuntimeWarning)
                    return
                bar.close()
                epoch_loss = total / count
                self.loss_curve_.append(epoch_loss)
                self.n_iter_ += 1
                message = f"epoch {self.n_iter_}: loss {epoch_loss:.6g}"
                if val_idx is not None:
                    score = self._score_data(data, target, rows, val_idx)
                    self.validation_scores_.append(score)
                    message += f", validation score {score:.6g}"
                    if score > self.best_validation_score_ + self.tol:
                        no_improve = 0
                    else:
                        no_improve += 1
                    if score > self.best_validation_score_:
                        self.best_validation_score_ = score
                        self._best_params = net.flat_params.copy()
                    monitored = -score
                else:
                    if epoch_loss > self.best_loss_ - self.tol:
                        no_improve += 1
                    else:
                        no_improve = 0
                    monitored = epoch_loss
                self.best_loss_ = min(self.best_loss_, epoch_loss)
                if self.learning_rate == "plateau":
                    best, waited = self._plateau
                    if monitored < best - self.tol:
                        self._plateau = (monitored, 0)
                    elif waited + 1 >= self.lr_decay_every:
                        self._lr *= self.lr_decay
                        self._plateau = (best, 0)
                    else:
                        self._plateau = (best, waited + 1)
                if self.verbose:
                    print(f"{message} ({time.perf_counter() - started:.2f}s)")
                if not incremental and no_improve >= self.n_iter_no_change:
                    stopped_early = True
                    if self.verbose:
                        print(f"no improvement of more than tol={self.tol} for "
                              f"{self.n_iter_no_change} epochs: stopping")
                    break
        if val_idx is not None and hasattr(self, "_best_params"):
            net.flat_params[:] = self._best_params
            del self._best_params
        if not incremental and not stopped_early and epochs == self.max_iter:
            warnings.warn(f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X, y, continuing from the current weights.

        classes : all class labels; required on the first call for classifiers
        (as in MLPClassifier), since a batch may not show every class.
        """
        if not hasattr(self, "model_") and self._fixed_task == "classification" and \
                classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if hasattr(self, "model_") and classes is not None and hasattr(self, "classes_") and \
                not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes {classes} differ from the first call's {self.classes_}")
        return self._fit(X, y, sample_weight, incremental=True,
                         classes=None if hasattr(self, "model_") else classes)

    # ----- prediction --------------------------------------------------------------------
    def _forward(self, data):
        """Head outputs for every sample, PREDICT_BATCH samples at a time."""
        net = self.model_
        outputs = []
        with single_threaded_blas():
            for start in range(0, len(data), PREDICT_BATCH):
                idx = np.arange(start, min(start + PREDICT_BATCH, len(data)))
                values, lengths, conditions = data.batch(idx)
                out = net.forward(values, lengths=lengths, conditions=conditions)
                if self.per_step_:
                    padded = np.zeros((len(idx), data.values.shape[1], out.shape[2]), out.dtype)
                    padded[:, :out.shape[1]] = out
                    out = padded
                outputs.append(out)
        return np.concatenate(outputs)

    def _decision(self, X):
        check_is_fitted(self, "model_")
        data = self._prepare_X(X, reset=False)
        return self._forward(data), data

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
        of different lengths, else the padded array."""
        if data.lengths is not None and _is_ragged(X):
            return [v[:L] for v, L in zip(values, data.lengths)]
        return values

    def _predict_values(self, X):
        out, data = self._decision(X)
        if self.task_ == "classification":
            proba = self._proba_from_logits(out)
            pred = self.classes_[np.argmax(proba, axis=-1)]
        else:
            pred = out.astype(np.float64) * self.y_scale_ + self.y_mean_
            if self.n_outputs_ == 1:
                pred = pred[..., 0]
        return self._unpad(pred, data, X)

    def predict(self, X):
        """Class labels or values: (n,), (n, k), or per step (n, T[, k])."""
        return self._predict_values(X)

    def _score_data(self, data, target, rows, idx):
        """Accuracy or R^2 on samples idx of prepared data (validation)."""
        sub = data.subset(idx)
        out = self._forward(sub)
        r = self._rows_of(idx, rows, data.lengths, data.values.shape[1])
        out = out.reshape(-1, out.shape[-1])
        if self.per_step_:
            out = out[self._step_mask(sub.lengths, *sub.values.shape[:2]).reshape(-1)]
        if self.task_ == "classification":
            return accuracy_score(target[r], np.argmax(self._proba_from_logits(out), axis=-1))
        return r2_score(target[r], out)

    def score(self, X, y, sample_weight=None):
        """Accuracy (classification) or R^2 (regression), over valid steps for
        per-step targets."""
        pred = self.predict(X)
        if self.per_step_:
            data = self._prepare_X(X, reset=False)
            mask = self._step_mask(data.lengths, *data.values.shape[:2])
            if isinstance(pred, list):
                pred = np.concatenate(pred)
                y = np.concatenate([np.asarray(v) for v in y])
            else:
                pred, y = np.asarray(pred)[mask], np.asarray(y)[mask]
            sample_weight = None
        if self.task_ == "classification":
            return accuracy_score(y, pred, sample_weight=sample_weight)
        return r2_score(y, pred, sample_weight=sample_weight)

    def save(self, path):
        """Write the fitted estimator to path (.npz, loaded with fastrnn.load)."""
        from fastrnn.persistence import save
        save(self, path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True
        return tags


class _ClassifierMixin(ClassifierMixin):
    score = _BaseFastRNN.score  # per-step aware; ClassifierMixin's would come first
    def predict_proba(self, X):
        """Class probabilities, (n, n_classes) or per step (n, T, n_classes)."""
        out, data = self._decision(X)
        return self._unpad(self._proba_from_logits(out), data, X)

    def predict_log_proba(self, X):
        proba = self.predict_proba(X)
        if isinstance(proba, list):
            return [np.log(p) for p in proba]
        return np.log(proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags = ClassifierTags(multi_class=True, multi_label=False)
        return tags


class _RegressorMixin(RegressorMixin):
    score = _BaseFastRNN.score
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags = RegressorTags()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _auto_predict_proba(self, X):
    if self.task_ != "classification":
        raise AttributeError("predict_proba is only available for classification")
    return _ClassifierMixin.predict_proba(self, X)


_EXTRA = {
    "auto": dict(task="auto", class_weight=None),
    "classification": dict(class_weight=None),
    "regression": dict(),
}


def _estimator_class(cell, task, name, cell_doc):
    extra = dict(_EXTRA[task or "auto"])
    if cell == "rnn":
        extra["nonlinearity"] = "tanh"
    bases = {"classification": (_ClassifierMixin, _BaseFastRNN),
             "regression": (_RegressorMixin, _BaseFastRNN), None: (_BaseFastRNN,)}[task]
    what = {"classification": "classifier", "regression": "regressor",
            None: "estimator (classification or regression, inferred from y)"}[task]
    doc = f"{cell_doc} {what} with the scikit-learn API.\n"
    if task is None:
        doc += ("\n    task : {'auto', 'classification', 'regression'}, default='auto'\n"
                "        'auto': integer, bool or string labels -> classification, floats ->"
                " regression.\n")
    if task != "regression":
        doc += ("    class_weight : dict, 'balanced' or None\n"
                "        Weights of classes in the loss (classification).\n")
    if cell == "rnn":
        doc += "    nonlinearity : {'tanh', 'relu'}, default='tanh'\n"
    namespace = {"__init__": _make_init(extra), "_cell": cell, "_fixed_task": task,
                 "__doc__": doc + PARAMS_DOC, "__module__": __name__, "__qualname__": name}
    if task is None:
        namespace["predict_proba"] = available_if(
            lambda est: getattr(est, "task_", "classification") == "classification")(
            _auto_predict_proba)
    return type(name, bases, namespace)


_CELL_DOCS = {"lstm": "LSTM", "gru": "GRU", "rnn": "Elman RNN"}

FastLSTM = _estimator_class("lstm", None, "FastLSTM", _CELL_DOCS["lstm"])
FastGRU = _estimator_class("gru", None, "FastGRU", _CELL_DOCS["gru"])
FastRNN = _estimator_class("rnn", None, "FastRNN", _CELL_DOCS["rnn"])
FastLSTMClassifier = _estimator_class("lstm", "classification", "FastLSTMClassifier", "LSTM")
FastLSTMRegressor = _estimator_class("lstm", "regression", "FastLSTMRegressor", "LSTM")
FastGRUClassifier = _estimator_class("gru", "classification", "FastGRUClassifier", "GRU")
FastGRURegressor = _estimator_class("gru", "regression", "FastGRURegressor", "GRU")
FastRNNClassifier = _estimator_class("rnn", "classification", "FastRNNClassifier", "Elman RNN")
FastRNNRegressor = _estimator_class("rnn", "regression", "FastRNNRegressor", "Elman RNN")

def estimator_class(cell, task=None):
    """The estimator for cell ("lstm", "gru", "rnn") and task (None: inferred
    from y, "classification" or "regression")."""
    if cell not in _CELL_DOCS:
        raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn', got {cell!r}")
    suffix = {None: "", "classification": "Classifier", "regression": "Regressor"}[task]
    return ESTIMATORS[f"Fast{cell.upper()}{suffix}"]


ESTIMATORS = {cls.__name__: cls for cls in (
    FastLSTM, FastGRU, FastRNN, FastLSTMClassifier, FastLSTMRegressor, FastGRUClassifier,
    FastGRURegressor, FastRNNClassifier, FastRNNRegressor)}
