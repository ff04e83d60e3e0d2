"""The nine scikit-learn estimators over recurrent networks.

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

The nine classes share one base with one explicit __init__
(fastrnn._base.BaseFastRNN: parameters and their constraints, the training
loop, prediction, the fitted state persistence stores); each class sets its
cell and task. Input and target preparation lives in fastrnn._data. See
ARCHITECTURE.md.
"""
import errno
import os

from fastrnn import persistence
from fastrnn._base import (BaseFastRNN, FastAutoTaskMixin,  # noqa: F401
                           FastClassifierMixin, FastRegressorMixin, TrainingDivergedError)

# Training options that wrappers (SequenceGenerator, Forecaster) pass on to the
# estimator they train.
TRAINING_OPTIONS = ("solver", "learning_rate_init", "batch_size", "max_iter", "alpha",
                    "clip_norm", "early_stopping", "n_iter_no_change", "tol", "random_state",
                    "verbose", "n_threads", "dtype")


def training_options(owner):
    """The TRAINING_OPTIONS that owner has, as keyword arguments."""
    return {name: getattr(owner, name) for name in TRAINING_OPTIONS if hasattr(owner, name)}


def check_wrapped_estimator(owner, estimator, task, shaping):
    """A loaded wrapper's estimator is one the wrapper would train: the class
    of owner.cell and task, and the parameters named in ``shaping`` equal to
    owner's. Raises ValueError (persistence turns it into ModelFileError)."""
    expected = estimator_class(owner.cell, task)
    if type(estimator) is not expected:
        raise ValueError(f"{type(owner).__name__} with cell={owner.cell!r} trains a "
                         f"{expected.__name__}, the file holds a {type(estimator).__name__}")
    wrong = [name for name in shaping if getattr(estimator, name) != getattr(owner, name)]
    if wrong:
        raise ValueError(f"the parameters {wrong} disagree with the estimator's")


_PARAMETERS = """Parameters
    ----------
    hidden_size : int, default=64
        Units per recurrent layer (and direction).

    num_layers : int, default=1
        Recurrent layers stacked on each other.

    bidirectional : bool, default=False
        Run every layer forwards and backwards and concatenate the two.

    dropout : float, default=0.0
        Dropout on the outputs of every recurrent layer, the last included
        (Keras's ``Dropout`` after each ``LSTM`` layer); training only.

    embedding_dim : int or None, default=None
        When set, X holds integer token ids and an embedding of this size is
        learned with the rest.

    vocab_size : int or None, default=None
        Token ids lie in [0, vocab_size); None: the largest id seen in fit + 1.
        Only used when embedding_dim is set.

    per_step : "auto" or bool, default="auto"
        One prediction per time step instead of per sequence. "auto": y of
        shape (n, T, k), or (n, T) class labels, or a list of per-sample arrays.

    solver : {"adam", "sgd", "rmsprop", "adagrad"}, default="adam"
        The optimizer (fastrnn.optim; the update runs fused in C).

    learning_rate : {"constant", "exponential", "step", "plateau"}, default="constant"
        The schedule: learning_rate_init; learning_rate_init * lr_decay**epoch;
        learning_rate_init * lr_decay**(epoch // lr_decay_every); or the rate
        times lr_decay after lr_decay_every epochs without improvement.

    learning_rate_init : float, default=0.001
        The initial learning rate.

    lr_decay : float, default=0.5
        Decay factor; only used when learning_rate is not "constant".

    lr_decay_every : int, default=10
        Epochs per decay step; only used when learning_rate is "step" or
        "plateau".

    momentum : float, default=0.9
        Momentum; only used when solver="sgd".

    nesterovs_momentum : bool, default=True
        Nesterov's momentum; only used when solver="sgd" and momentum > 0.

    beta_1 : float, default=0.9
        Decay of the first moment; only used when solver="adam".

    beta_2 : float, default=0.999
        Decay of the second moment; only used when solver="adam".

    epsilon : float, default=1e-8
        Numerical stability; only used when solver is "adam", "rmsprop" or
        "adagrad".

    rho : float, default=0.9
        Decay of the squared-gradient average; only used when solver="rmsprop".

    batch_size : int or "auto", default="auto"
        Samples per mini-batch; "auto": min(64, n_samples).

    max_iter : int, default=200
        Epochs (passes over the training data).

    shuffle : bool, default=True
        Shuffle the samples every epoch.

    length_bucketing : bool, default=True
        With sequences of different lengths, draw each mini-batch from
        samples of similar length (buckets of a few batches, shuffled, then
        the batches shuffled), so an epoch costs about the total length of
        the data rather than batches x longest sequence; predict batches by
        length too (results stay in X's order). False: batches of shuffled
        samples regardless of length.

    alpha : float, default=1e-4
        L2 penalty on weights (not biases), as in MLPClassifier.

    clip_norm : float or None, default=5.0
        Clip the gradient to this global norm; None: no clipping.

    early_stopping : bool, default=False
        Hold out validation_fraction of the data (or use ``X_val``, ``y_val``
        when fit is given them), stop when its score stops improving for
        n_iter_no_change epochs, and keep the best weights.

    validation_fraction : float, default=0.1
        Share of the samples held out; only used when early_stopping is True.

    n_iter_no_change : int, default=10
        Epochs without an improvement of more than tol before training stops.

    tol : float, default=1e-4
        Improvement of the loss (or validation score) that counts.

    warm_start : bool, default=False
        Continue from the previous fit's weights.

    random_state : int, RandomState, Generator or None, default=None
        Makes a fit reproducible bit for bit for a given thread count.

    verbose : bool or int, default=False
        A progress bar per epoch and one line of loss / validation score.

    n_threads : int or None, default=None
        None: what OpenMP allows; -1: every CPU.

    dtype : {"float32", "float64"}, default="float32"
        Precision of the network's parameters and computations.

    task : {"auto", "classification", "regression"}, default="auto"
        "auto": integer, bool or string labels -> classification, floats ->
        regression. Only used by FastLSTM, FastGRU and FastRNN (the
        Classifier and Regressor classes have their task fixed).

    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss. Only used for classification.

    nonlinearity : {"tanh", "relu"}, default="tanh"
        The Elman cell's activation. Only used by FastRNN,
        FastRNNClassifier and FastRNNRegressor.

    norm : {"layer", "batch"} or None, default=None
        Normalization of every recurrent layer's output sequence, per feature
        with a learned gain and bias: "layer" over the features of each step,
        "batch" over the batch and the valid steps (running statistics at
        inference, as BatchNorm1d).

    residual : bool, default=False
        Add each recurrent layer's input to its output where their sizes match
        (every layer after the first; the first when its input has
        hidden_size * directions features), before the norm and dropout.

    layer_norm : bool, default=False
        Layer-normalized LSTM / GRU cells (Ba, Kiros & Hinton 2016): the input
        and recurrent pre-activations (and LSTM's cell state before its tanh)
        normalized inside the C time loop, each with a learned gain and bias.
        Not for the Elman RNN.

    recurrent_dropout : float, default=0.0
        Dropout on the hidden state entering the recurrent weights, one mask
        per sequence kept at every step (Keras's ``recurrent_dropout``, Gal &
        Ghahramani 2016); training only. Not for the Elman RNN.

    inference_dtype : {"float32", "bfloat16", "int8"} or None, default=None
        Precision of the weights in predict, predict_proba and score; None or
        "float32": the fitted weights. "bfloat16" / "int8": the weights of
        the input projections and head converted once (int8: per output row
        scales, activations quantized per row; bfloat16: rounded to nearest
        even), and with either the recurrent weights in 16-bit fixed point per
        row (their rounding feeds back at every step), activations float32
        between the products; AVX-512
        VNNI / BF16 kernels where the CPU has them, AVX2 ones elsewhere
        (batch-1 latency gains most; small batches can be slower than
        float32 there). Settable after fit with
        set_params; training, validation and explain stay float32, and so do
        layer_norm cells. Needs dtype="float32" (a float64 model raises
        ValueError at predict).
"""

_ATTRIBUTES = """Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels; only for classification.

    n_features_in_ : int
        Features per time step seen in fit (steps for 2-D X and token ids).

    loss_curve_ : list of float
        Training loss (mean over samples, plus the L2 penalty) of every epoch.

    validation_scores_ : list of float or None
        Accuracy or R^2 on the validation data per epoch (``X_val`` given to
        fit, else the held-out set of early_stopping); None without
        validation data.

    validation_loss_curve_ : list of float or None
        Loss on the validation data per epoch (mean over samples, without the
        L2 penalty); None without validation data.

    best_loss_ : float
        Lowest training loss reached.

    n_iter_ : int
        Epochs run (over all fits when warm_start, or partial_fit calls).

    model_ : fastrnn.network.Network
        The network; ``model_.state_dict()`` gives PyTorch-named arrays.
"""

def _docstring(summary, examples):
    """A numpydoc class docstring: the class's summary and examples around the
    Parameters and Attributes sections the nine classes share."""
    return (f"{summary}\n\n    {_PARAMETERS}\n    {_ATTRIBUTES}\n"
            f"    Examples\n    --------\n{examples}")


class FastLSTM(FastAutoTaskMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastLSTM: an LSTM (long short-term memory) of sequences, classifier or
    regressor as y says.

    Integer, bool or string labels make it a classifier (with
    predict_proba), floats a regressor; ``task`` overrides.""", """\
    >>> import numpy as np
    >>> from fastrnn import FastLSTM
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> labels = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    >>> est = FastLSTM(hidden_size=8, max_iter=2, random_state=0).fit(X, labels)
    >>> est.task_, est.predict(X[:3]).shape
    ('classification', (3,))
    >>> est.fit(X, X.sum(axis=(1, 2))).task_
    'regression'
""")
    _cell = "lstm"
    _fixed_task = None


class FastGRU(FastAutoTaskMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastGRU: a GRU (gated recurrent unit) of sequences, classifier or
    regressor as y says.

    Integer, bool or string labels make it a classifier (with
    predict_proba), floats a regressor; ``task`` overrides.""", """\
    >>> import numpy as np
    >>> from fastrnn import FastGRU
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> labels = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    >>> est = FastGRU(hidden_size=8, max_iter=2, random_state=0).fit(X, labels)
    >>> est.task_, est.predict(X[:3]).shape
    ('classification', (3,))
    >>> est.fit(X, X.sum(axis=(1, 2))).task_
    'regression'
""")
    _cell = "gru"
    _fixed_task = None


class FastRNN(FastAutoTaskMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastRNN: an Elman RNN (tanh or relu) of sequences, classifier or
    regressor as y says.

    Integer, bool or string labels make it a classifier (with
    predict_proba), floats a regressor; ``task`` overrides.""", """\
    >>> import numpy as np
    >>> from fastrnn import FastRNN
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> labels = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    >>> est = FastRNN(hidden_size=8, max_iter=2, random_state=0).fit(X, labels)
    >>> est.task_, est.predict(X[:3]).shape
    ('classification', (3,))
    >>> est.fit(X, X.sum(axis=(1, 2))).task_
    'regression'
""")
    _cell = "rnn"
    _fixed_task = None


class FastLSTMClassifier(FastClassifierMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastLSTMClassifier: an LSTM (long short-term memory) classifier of sequences.

    One label per sequence, or one per step (per_step).""", """\
    >>> import numpy as np
    >>> from fastrnn import FastLSTMClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    >>> clf = FastLSTMClassifier(hidden_size=8, max_iter=2, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape, clf.predict_proba(X[:3]).shape
    ((3,), (3, 2))
""")
    _cell = "lstm"
    _fixed_task = "classification"


class FastGRUClassifier(FastClassifierMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastGRUClassifier: a GRU (gated recurrent unit) classifier of sequences.

    One label per sequence, or one per step (per_step).""", """\
    >>> import numpy as np
    >>> from fastrnn import FastGRUClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    >>> clf = FastGRUClassifier(hidden_size=8, max_iter=2, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape, clf.predict_proba(X[:3]).shape
    ((3,), (3, 2))
""")
    _cell = "gru"
    _fixed_task = "classification"


class FastRNNClassifier(FastClassifierMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastRNNClassifier: an Elman RNN (tanh or relu) classifier of sequences.

    One label per sequence, or one per step (per_step).""", """\
    >>> import numpy as np
    >>> from fastrnn import FastRNNClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    >>> clf = FastRNNClassifier(hidden_size=8, max_iter=2, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape, clf.predict_proba(X[:3]).shape
    ((3,), (3, 2))
""")
    _cell = "rnn"
    _fixed_task = "classification"


class FastLSTMRegressor(FastRegressorMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastLSTMRegressor: an LSTM (long short-term memory) regressor of sequences.

    One value (or k outputs) per sequence, or per step (per_step);
    targets are standardised inside, predictions in y's units.""", """\
    >>> import numpy as np
    >>> from fastrnn import FastLSTMRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> y = X[:, :, 0].sum(axis=1)
    >>> reg = FastLSTMRegressor(hidden_size=8, max_iter=2, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
""")
    _cell = "lstm"
    _fixed_task = "regression"


class FastGRURegressor(FastRegressorMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastGRURegressor: a GRU (gated recurrent unit) regressor of sequences.

    One value (or k outputs) per sequence, or per step (per_step);
    targets are standardised inside, predictions in y's units.""", """\
    >>> import numpy as np
    >>> from fastrnn import FastGRURegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> y = X[:, :, 0].sum(axis=1)
    >>> reg = FastGRURegressor(hidden_size=8, max_iter=2, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
""")
    _cell = "gru"
    _fixed_task = "regression"


class FastRNNRegressor(FastRegressorMixin, BaseFastRNN):
    __doc__ = _docstring(
        """FastRNNRegressor: an Elman RNN (tanh or relu) regressor of sequences.

    One value (or k outputs) per sequence, or per step (per_step);
    targets are standardised inside, predictions in y's units.""", """\
    >>> import numpy as np
    >>> from fastrnn import FastRNNRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 2))      # 40 sequences of 6 steps, 2 features
    >>> y = X[:, :, 0].sum(axis=1)
    >>> reg = FastRNNRegressor(hidden_size=8, max_iter=2, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
""")
    _cell = "rnn"
    _fixed_task = "regression"


ESTIMATORS = {cls.__name__: cls for cls in (
    FastLSTM, FastGRU, FastRNN, FastLSTMClassifier, FastLSTMRegressor, FastGRUClassifier,
    FastGRURegressor, FastRNNClassifier, FastRNNRegressor)}


def estimator_class(cell, task=None):
    """The estimator for cell ("lstm", "gru", "rnn") and task (None: inferred
    from y, "classification" or "regression")."""
    if cell not in ("lstm", "gru", "rnn"):
        raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn', got {cell!r}")
    suffix = {None: "", "classification": "Classifier", "regression": "Regressor"}[task]
    return ESTIMATORS[f"Fast{cell.upper()}{suffix}"]


def load(path):
    """Read an estimator written by ``est.save(path)`` (the nine classes
    above, or Seq2Seq), or a SequenceGenerator or Forecaster written by its
    ``save``; only those classes can come out of a file. Anything wrong with
    the file raises fastrnn.ModelFileError (a ValueError); see SECURITY.md. A path that does
    not exist raises a FileNotFoundError (which is also a ModelFileError)."""
    if not os.path.exists(path):
        raise persistence.ModelFileNotFoundError(errno.ENOENT, "no such fastrnn model file",
                                                 os.fspath(path))
    from fastrnn.forecaster import Forecaster  # the wrappers import this module
    from fastrnn.generator import SequenceGenerator
    from fastrnn.seq2seq import Seq2Seq
    return persistence.load(path, {**ESTIMATORS, "Seq2Seq": Seq2Seq}, wrappers={
        cls.__name__: cls for cls in (SequenceGenerator, Forecaster)})
