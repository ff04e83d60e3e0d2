"""Input and target preparation for the estimators: the X forms, task and
per-step inference, target encoding, and the SequenceData container.

Nothing here keeps state: the estimator calls these functions and stores the
fitted facts they return (input form, classes, target scaling) on itself.

X forms (``input_kind``): "2d" (n, T) univariate sequences; "3d" (n, T, F);
"list" of (T_i, F) or (T_i,) arrays of different lengths (right-padded, with
per-sample lengths); "tokens" (n, T) integer ids and "tokens_list" of 1-D id
arrays when the estimator has an embedding.
"""
import warnings

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.utils import check_array
from sklearn.utils.multiclass import check_classification_targets

FLOAT_DTYPES = [np.float64, np.float32]

# input kinds that predict accepts after fit on a given kind
_COMPATIBLE_KINDS = {"list": ("list", "3d"), "3d": ("list", "3d"), "2d": ("2d",),
                     "tokens": ("tokens", "tokens_list"),
                     "tokens_list": ("tokens", "tokens_list")}


def is_ragged(X):
    """A list or tuple of arrays that do not all have the same shape."""
    return isinstance(X, (list, tuple)) and len(X) > 0 and not all(
        np.shape(x) == np.shape(X[0]) for x in X)


class SequenceData:
    """X as arrays the network takes: values (n, T, F) float or (n, T) token
    ids, lengths (n,) or None, and conditions (n, d) or None (conditioned
    generation)."""

    def __init__(self, values, lengths, conditions=None):
        self.values, self.lengths, self.conditions = values, lengths, conditions

    def __len__(self):
        return self.values.shape[0]

    @property
    def n_steps(self):
        return self.values.shape[1]

    def subset(self, idx):
        return SequenceData(self.values[idx],
                            None if self.lengths is None else self.lengths[idx],
                            None if self.conditions is None else self.conditions[idx])

    def batch(self, idx):
        """values (trimmed to the batch's longest sequence), lengths, conditions."""
        lengths = None if self.lengths is None else self.lengths[idx]
        T = self.values.shape[1] if lengths is None else int(lengths.max())
        conditions = None if self.conditions is None else self.conditions[idx]
        return self.values[idx, :T], lengths, conditions

    def step_mask(self):
        """(n, T) True at the valid steps."""
        return step_mask(self.lengths, len(self), self.n_steps)


def step_mask(lengths, n, T):
    """(n, T) True at the valid steps."""
    if lengths is None:
        return np.ones((n, T), bool)
    return np.arange(T)[None, :] < lengths[:, None]


BUCKET_BATCHES = 8  # mini-batches per length bucket


def length_batches(idx, lengths, batch, rng=None):
    """Mini-batches of the samples idx (lengths: theirs) grouped by length: the
    samples sorted by length (ties in random order), cut into buckets of
    BUCKET_BATCHES batches; each bucket shuffled and cut into batches; the
    batches shuffled. rng None: no shuffling (shortest first)."""
    order = np.arange(len(idx)) if rng is None else rng.permutation(len(idx))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches, size = [], batch * BUCKET_BATCHES
    for start in range(0, len(order), size):
        bucket = order[start:start + size]
        bucket = bucket if rng is None else rng.permutation(bucket)
        batches += [idx[bucket[b:b + batch]] for b in range(0, len(bucket), batch)]
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


def target_rows(idx, rows, lengths, T, per_step):
    """Target rows of the samples idx, in the order the network emits them
    (rows maps every target row to its sample)."""
    if not per_step:
        return idx
    lens = lengths[idx] if lengths is not None else np.full(len(idx), T)
    starts = np.searchsorted(rows, idx)
    # starts[i] + 0..lens[i]-1 for every sample, without a Python loop
    return np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(lens.sum())


# ----- inputs ------------------------------------------------------------------------------
def input_kind(X, tokens):
    """Which of the X forms X is (see the module docstring)."""
    if isinstance(X, (list, tuple)) and len(X) > 0 and not np.isscalar(X[0]) and is_ragged(X):
        return "tokens_list" if tokens else "list"
    check_dimensions(X, tokens)
    if tokens:
        return "tokens"
    return "3d" if np.asarray(X).ndim == 3 else "2d"


# the X forms in words, for error messages
_FLOAT_FORMS = ("2-D (n_samples, n_timesteps) univariate sequences, 3-D (n_samples, "
                "n_timesteps, n_features), or a list of (n_timesteps_i, n_features) arrays")
_TOKEN_FORMS = ("2-D (n_samples, n_timesteps) integer token ids, or a list of 1-D token id "
                "arrays")
_FORM_NAMES = {"2d": "2-D (n_samples, n_timesteps)",
               "3d": "3-D (n_samples, n_timesteps, n_features)",
               "list": "a list of (n_timesteps_i, n_features) arrays",
               "tokens": "2-D token ids (n_samples, n_timesteps)",
               "tokens_list": "a list of 1-D token id arrays"}


def check_dimensions(X, tokens):
    """An array X (not a ragged list) has a number of dimensions the
    estimators accept; the message names the accepted shapes. A 1-D X keeps
    scikit-learn's "Reshape your data" wording, without the array itself."""
    ndim = X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim  # sparse: scikit-learn's error
    accepted = (2,) if tokens else (2, 3)
    if ndim in accepted or ndim == 0:
        return
    shape = X.shape if hasattr(X, "shape") else np.shape(X)
    forms = _TOKEN_FORMS if tokens else _FLOAT_FORMS
    if ndim == 1:
        raise ValueError(f"Expected 2D array, got 1D array instead (shape {shape}). Reshape "
                         "your data: X.reshape(1, -1) if it is one sequence. Accepted: "
                         f"{forms}.")
    raise ValueError(f"X has {ndim} dimensions (shape {shape}); accepted: {forms}.")


def short_repr(values, most=5):
    """The first `most` of an array's values, and how many there are, for
    error messages (never the whole array)."""
    values = np.ravel(np.asarray(values))
    shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in values[:most])
    more = f", ... ({values.size} values)" if values.size > most else ""
    return f"[{shown}{more}]"


def pad(seqs, dtype):
    """Right-pad a list of arrays (T_i, ...) into (n, max T, ...) plus lengths."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int32)
    if lengths.min() < 1:
        raise ValueError("every sequence needs at least one time step")
    out = np.zeros((len(seqs), lengths.max()) + seqs[0].shape[1:], dtype)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, lengths


def check_sequence(x, tokens):
    """One sequence of a ragged list: 1-D token ids, or (T_i, F) floats."""
    x = np.asarray(x)
    if tokens:
        if x.ndim != 1 or x.dtype.kind not in "iu":
            raise ValueError("with embedding_dim, each sequence must be a 1-D sequence of "
                             "integer token ids")
        if x.size and x.min() < 0:
            raise ValueError("token ids must be >= 0")
        return x
    return check_array(x.reshape(-1, 1) if x.ndim == 1 else x, dtype=FLOAT_DTYPES)


def check_tokens(values):
    """(n, T) token ids: integers (or floats holding integers), all >= 0."""
    if values.dtype.kind not in "iu":
        if values.dtype.kind == "f" and np.all(values == np.round(values)):
            values = values.astype(np.int64)
        else:
            raise ValueError("with embedding_dim, X must hold integer token ids, got "
                             f"dtype {values.dtype}")
    if values.min() < 0:
        raise ValueError("token ids must be >= 0")
    return values


def read_sequences(X, kind, dtype):
    """values and lengths of X in any form but "2d" (which the estimator
    validates itself, to keep scikit-learn's feature checks)."""
    tokens = kind in ("tokens", "tokens_list")
    if kind in ("list", "tokens_list"):
        seqs = [check_sequence(x, tokens) for x in X]
        if not tokens:
            n_features = seqs[0].shape[1]
            if any(s.shape[1] != n_features for s in seqs):
                raise ValueError("every sequence must have the same number of features")
        return pad(seqs, np.int64 if tokens else dtype)
    if kind == "tokens":
        return check_tokens(check_array(X, dtype=None, ensure_2d=True)), None
    return check_array(X, dtype=FLOAT_DTYPES, allow_nd=True), None


def as_model_dtype(values, dtype):
    """Float values (checked finite) in the model's dtype, checked once more
    where the conversion narrows (1e300 is finite in float64, inf in float32):
    the network then trusts them batch after batch (forward's validated)."""
    narrowed = values.dtype.itemsize > np.dtype(dtype).itemsize
    values = values.astype(dtype, copy=False)
    if narrowed and not np.all(np.isfinite(values)):
        raise ValueError("X holds NaN or inf")
    return values


def check_same_form(kind, values, fitted_kind, n_features, name):
    """X at predict time has a form compatible with the one seen in fit."""
    check_same_kind(kind, fitted_kind, n_features, name)
    if kind in ("3d", "list") and values.shape[2] != n_features:
        raise ValueError(f"X has {values.shape[2]} features, but {name} "
                         f"is expecting {n_features} features as input")


def check_same_kind(kind, fitted_kind, n_features, name):
    """The form of X (2-D, 3-D, list, tokens) fits the one seen in fit; the
    message says both."""
    if kind not in _COMPATIBLE_KINDS[fitted_kind]:
        raise ValueError(f"X was a {fitted_kind} input in fit, got {kind} now: {name} was "
                         f"fitted on {_FORM_NAMES[fitted_kind]} X"
                         + (f" with {n_features} features" if fitted_kind == "3d" else "")
                         + f", and X is {_FORM_NAMES[kind]}. Pass X in the form seen in fit.")


# ----- targets -----------------------------------------------------------------------------
def infer_task(y, task):
    """"classification" or "regression": task when given, else from y's dtype
    (integer, bool or string labels -> classification, floats -> regression)."""
    if task in ("classification", "regression"):
        return task
    if task != "auto":
        raise ValueError(f"task must be 'auto', 'classification' or 'regression', got "
                         f"{task!r}")
    sample = np.concatenate([np.ravel(v) for v in y]) if is_ragged(y) else np.asarray(y)
    return "regression" if sample.dtype.kind in "fc" else "classification"


def detect_per_step(y, per_step, task, data):
    """Whether y holds one target per time step (per_step="auto") or as set."""
    if per_step != "auto":
        return bool(per_step)
    if is_ragged(y) or (isinstance(y, (list, tuple)) and data.lengths is not None
                        and len(y) > 0 and np.ndim(y[0]) > 0):  # a list of sequences
        return True
    y = np.asarray(y)
    if y.ndim == 3:
        return True
    # (n, T) labels are per step; an (n, 1) column is one label per sequence
    return (y.ndim == 2 and task == "classification"
            and y.shape[1] == data.n_steps and y.shape[1] > 1)


def flatten_targets(y, data, per_step, classification):
    """y as rows matching the network's output rows (samples, or valid steps),
    and rows (the sample of every row)."""
    if per_step:
        return _flatten_per_step(y, data)
    flat = np.asarray(y)
    if classification:
        if flat.ndim == 2 and flat.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected.",
                          DataConversionWarning)
            flat = flat.ravel()
        if flat.ndim != 1:
            raise ValueError(f"y must be 1-D class labels, got shape {flat.shape}")
    elif flat.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got shape {flat.shape}")
    if flat.shape[0] != len(data):
        raise ValueError(f"X has {len(data)} samples but y has {flat.shape[0]}")
    return flat, np.arange(len(data))


def _flatten_per_step(y, data):
    n, T = len(data), data.n_steps
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
            raise ValueError(f"per-step y must have shape ({n}, {T}, ...), got {y.shape}")
        flat = y[data.step_mask()]
    rows = np.repeat(np.arange(n), data.lengths if data.lengths is not None else T)
    return flat, rows


def check_labels(flat, per_step):
    """Class labels are finite and (per sequence) of a classification type."""
    if flat.dtype.kind == "f" and not np.all(np.isfinite(flat)):
        raise ValueError("Input y contains NaN or infinity.")
    if not per_step:
        check_classification_targets(flat)


def fit_classes(flat, classes=None):
    """The sorted class labels: of y, or the given ones (partial_fit)."""
    found = np.unique(flat) if classes is None else np.unique(classes)
    if len(found) < 2:
        raise ValueError("Classifier needs samples of at least 2 classes in the "
                         f"data, got 1 class: {found[0]!r}")
    return found


def encode_labels(flat, classes):
    """Indices of the labels in classes; unknown labels raise."""
    index = np.searchsorted(classes, flat)
    index = np.clip(index, 0, len(classes) - 1)
    if not np.all(classes[index] == flat):
        unseen = np.setdiff1d(flat, classes)
        raise ValueError(f"y holds labels not in classes_: {unseen[:5]}")
    return index


def as_value_rows(flat):
    """Regression targets as float64 (rows, n_outputs); strings are labels,
    not values, and say so."""
    rows = flat.reshape(len(flat), -1)
    if flat.dtype.kind not in "USO":
        return check_array(rows, dtype=np.float64)
    try:
        return check_array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"y holds strings such as {short_repr(flat, 3)}, but a regressor "
                         "needs numeric targets. For class labels use a classifier "
                         "(e.g. FastLSTMClassifier, or task='classification').") from None


def fit_scaling(values):
    """Per-column mean and scale (standard deviation, 1 where constant) of
    finite values (rows, columns). Values near the float64 limit (1e300)
    overflow the plain sums: those columns are computed in units of their
    largest magnitude."""
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        mean, scale = values.mean(axis=0), values.std(axis=0)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))):
        peak = np.max(np.abs(values), axis=0)
        peak = np.where(peak > 0, peak, 1.0)
        mean, scale = (values / peak).mean(axis=0) * peak, (values / peak).std(axis=0) * peak
    return mean, np.where(scale > 0, scale, 1.0)
