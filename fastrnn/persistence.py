"""Saving and loading fitted estimators without pickle.

The file is a NumPy .npz read with allow_pickle=False: the flat parameter
buffer, fitted arrays, and one JSON document with the class name, the
hyper-parameters, the network configuration and the fastrnn version. Loading
executes no code from the file; a class is only ever taken from the mapping
the caller passes (fastrnn.load: the nine estimators and Seq2Seq). The
estimator owns what is stored: ``_get_fitted_state()`` /
``_set_fitted_state()``. The network's class comes from NETWORKS below, keyed
by the name the estimator class declares (``_network_class``); each entry
knows how to check a configuration against the parameters present and how to
check the estimator's fitted state against its network.

``load`` checks the whole file before it allocates or computes anything: the
types and ranges of every field, every size against the parameters actually
present, and the consistency of classes, head, vocabulary and inputs. Its work
and memory are bounded by the file's size, and every problem with the file
raises ModelFileError (a ValueError).
"""
import json
import os
import zipfile
from numbers import Real

import numpy as np

from fastrnn.network import Network
from fastrnn.seq2seq_network import ATTENTIONS, Seq2SeqNetwork

FORMAT = "fastrnn-estimator"
FORMAT_VERSION = 1
# An archive member may not expand to more than this many times the file's
# size (np.savez stores without compression: the ratio is 1 in our files).
_MAX_EXPANSION = 16
_NETWORK_KEYS = {"cell", "input_size", "hidden_size", "output_size", "num_layers",
                 "bidirectional", "dropout", "nonlinearity", "vocab_size", "per_step",
                 "condition_size"}
# options added later: a file written before them has none of them (their defaults)
_NETWORK_OPTIONS = {"norm": None, "residual": False, "layer_norm": False,
                    "recurrent_dropout": 0.0}
_ARRAY_NAMES = {"flat_params", "classes_", "y_mean_", "y_scale_"}
# A wrapper's (SequenceGenerator, Forecaster) own arrays, stored as
# "wrapper.<name>" beside the arrays of the estimator it trained.
WRAPPER_PREFIX = "wrapper."
_WRAPPER_ARRAY_NAMES = {WRAPPER_PREFIX + name for name in
                        ("mean_", "scale_", "exog_mean_", "exog_scale_", "history_")}
_INPUT_KINDS = {"2d", "3d", "list", "tokens", "tokens_list"}


# The types a skops file (skops.io.dump) of a fastrnn estimator, SequenceGenerator
# or Forecaster holds beyond skops' defaults: pass them as
# skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES). See docs/skops.md.
SKOPS_TRUSTED_TYPES = tuple(
    [f"fastrnn.estimators.Fast{cell}{task}" for cell in ("LSTM", "GRU", "RNN")
     for task in ("", "Classifier", "Regressor")]
    + ["fastrnn.generator.SequenceGenerator", "fastrnn.forecaster.Forecaster",
       "fastrnn.seq2seq.Seq2Seq", "fastrnn.seq2seq_network.Seq2SeqNetwork",
       "fastrnn.network.Network", "fastrnn.optim.Optimizer",
       "fastrnn.optim.LearningRateSchedule", "numpy.dtype"])


class ModelFileError(ValueError):
    """The file is not a fastrnn model file, or a damaged or inconsistent one:
    the one error ``fastrnn.load`` raises for anything in a file."""


class ModelFileNotFoundError(FileNotFoundError, ModelFileError):
    """``fastrnn.load`` of a path that does not exist: a FileNotFoundError, and
    a ModelFileError like every other problem with a model file."""


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):  # e.g. class_weight with non-string labels
        return {"__dict__": [[_jsonable(k), _jsonable(v)] for k, v in value.items()]}
    return value


def _from_json(value):
    if isinstance(value, dict) and "__dict__" in value:
        pairs = value["__dict__"]
        if not (isinstance(pairs, list) and all(
                isinstance(p, list) and len(p) == 2 and _is_scalar(p[0]) and _is_scalar(p[1])
                for p in pairs)):
            raise ValueError("a dict parameter must be a list of [key, value] scalar pairs")
        return {k: v for k, v in pairs}
    return value


def _params_document(owner):
    """get_params() as JSON values."""
    params = owner.get_params()
    if not isinstance(params.get("random_state"), (int, type(None))):
        params["random_state"] = None  # a Generator or RandomState is not data
    return {k: _jsonable(v) for k, v in params.items()}


def _estimator_document(estimator):
    """(metadata, arrays, network) of a fitted estimator, described by its
    ``get_params()`` and ``_get_fitted_state()``."""
    import fastrnn
    attributes, arrays, net = estimator._get_fitted_state()
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "fastrnn_version": fastrnn.__version__,
        "class": type(estimator).__name__,
        "params": _params_document(estimator),
        "network_class": type(net).__name__, "network": net.config, "dtype": net.dtype.name,
        "fitted": {k: _jsonable(v) for k, v in attributes.items()},
    }
    arrays = {name: value.astype(str) if value.dtype == object else value
              for name, value in arrays.items()}
    return meta, arrays, net


def _write(path, meta, net, arrays):
    with open(path, "wb") as f:
        np.savez(f, metadata=np.array(json.dumps(meta)), flat_params=net.flat_params, **arrays)


def save(estimator, path):
    """Write a fitted estimator to ``path`` (see the module docstring).

    The estimator describes itself: ``get_params()`` and
    ``_get_fitted_state()`` -> (fitted attributes, fitted arrays, network)."""
    meta, arrays, net = _estimator_document(estimator)
    _write(path, meta, net, arrays)


def save_wrapper(wrapper, path):
    """Write a fitted SequenceGenerator or Forecaster to ``path``: the file of
    the estimator it trained, plus a "wrapper" entry in the metadata (class,
    params, fitted attributes) and the wrapper's arrays as "wrapper.<name>".

    The wrapper describes itself: ``get_params()`` and
    ``_get_fitted_state()`` -> (fitted attributes, fitted arrays, estimator)."""
    attributes, arrays, estimator = wrapper._get_fitted_state()
    meta, estimator_arrays, net = _estimator_document(estimator)
    meta["wrapper"] = {"class": type(wrapper).__name__, "params": _params_document(wrapper),
                       "fitted": {k: _jsonable(v) for k, v in attributes.items()}}
    own = {WRAPPER_PREFIX + name: np.asarray(value) for name, value in arrays.items()}
    _write(path, meta, net, {**estimator_arrays, **own})


# ----- reading --------------------------------------------------------------------------

def _read_archive(path):
    """The metadata document and the arrays of a model file, after checking
    the archive's members (names, expanded sizes) before reading any."""
    try:
        file_size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
        names = {m.filename[:-4] if m.filename.endswith(".npy") else m.filename
                 for m in members}
        if "metadata" not in names or "flat_params" not in names:
            raise ValueError("no metadata or parameters")
        unknown = names - _ARRAY_NAMES - _WRAPPER_ARRAY_NAMES - {"metadata"}
        if unknown or len(names) != len(members):
            raise ValueError(f"unexpected members {sorted(unknown)}")
        limit = _MAX_EXPANSION * file_size + 4096
        if any(m.file_size > limit for m in members):
            raise ValueError("a member expands far beyond the file's size")
        with np.load(path, allow_pickle=False) as archive:
            files = {name: archive[name] for name in archive.files}
        metadata = files.pop("metadata")
        if metadata.dtype.kind != "U" or metadata.ndim != 0:
            raise ValueError("metadata is not a string")
        meta = json.loads(str(metadata))
    except (OSError, ValueError, KeyError, EOFError, RecursionError, MemoryError,
            zipfile.BadZipFile, NotImplementedError) as exc:
        raise ModelFileError(f"{path} is not a fastrnn model file ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a fastrnn model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path} has format version {meta.get('format_version')!r}; "
                             f"this fastrnn reads version {FORMAT_VERSION}")
    return meta, files


def _is_scalar(value):
    return value is None or isinstance(value, (bool, int, float, str))


def _count(value, name, most, optional=False):
    """A positive int no larger than `most` (or None when optional)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an int in [1, {most}], got {value!r}")


def _one_of(value, name, options):
    if not any(value is o or (type(value) is type(o) and value == o) for o in options):
        raise ValueError(f"{name} must be one of {sorted(map(repr, options))}, got {value!r}")


def _stack_params(cell, I, H, L, D):
    """Parameters of a recurrent stack (without layer norm), in closed form."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    return D * G * H * ((I + H + 2) + (L - 1) * (D * H + H + 2))


def _n_params(config):
    """Parameters of a network with this configuration, in closed form (no
    allocation, no loop over layers); Network lays them out."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[config["cell"]]
    H, L, D = config["hidden_size"], config["num_layers"], 2 if config["bidirectional"] else 1
    I, O = config["input_size"], config["output_size"]
    stack = _stack_params(config["cell"], I, H, L, D)
    if config["layer_norm"]:  # gain and bias of both pre-activations (and an LSTM's cell)
        stack += L * D * (4 * G * H + (2 * H if config["cell"] == "lstm" else 0))
    norms = L * D * H * {None: 0, "layer": 2, "batch": 4}[config["norm"]]
    embedding = 0 if config["vocab_size"] is None else config["vocab_size"] * I
    C = config["condition_size"]
    condition = 0 if C is None else L * D * H * (C + 1)
    return embedding + stack + norms + condition + O * (D * H + 1)


def _check_network(config, flat):
    """The network's configuration, each size bounded by the parameters present
    (every unit, layer, input, output and token owns at least one), then the
    exact count."""
    options = set(config) - _NETWORK_KEYS if isinstance(config, dict) else None
    if options is None or set(config) - options != _NETWORK_KEYS or (
            options and options != set(_NETWORK_OPTIONS)):
        raise ValueError(f"the network must be described by exactly {sorted(_NETWORK_KEYS)}"
                         f" (and, in newer files, {sorted(_NETWORK_OPTIONS)})")
    config.update({k: v for k, v in _NETWORK_OPTIONS.items() if k not in config})
    most = max(1, flat.size)
    _one_of(config["cell"], "cell", ("lstm", "gru", "rnn"))
    for name in ("input_size", "hidden_size", "output_size", "num_layers"):
        _count(config[name], name, most)
    for name in ("vocab_size", "condition_size"):
        _count(config[name], name, most, optional=True)
    _one_of(config["bidirectional"], "bidirectional", (True, False))
    _one_of(config["per_step"], "per_step", (True, False))
    _one_of(config["nonlinearity"], "nonlinearity", ("tanh", "relu"))
    for name in ("dropout", "recurrent_dropout"):
        if not (isinstance(config[name], Real) and 0 <= config[name] < 1):
            raise ValueError(f"{name} must lie in [0, 1), got {config[name]!r}")
    _one_of(config["norm"], "norm", (None, "layer", "batch"))
    _one_of(config["residual"], "residual", (True, False))
    _one_of(config["layer_norm"], "layer_norm", (True, False))
    if config["cell"] == "rnn" and (config["layer_norm"] or config["recurrent_dropout"]):
        raise ValueError("layer_norm and recurrent_dropout need an LSTM or GRU cell")
    if flat.size != _n_params(config):
        raise ValueError(f"the parameter buffer has {flat.size} values, the network "
                         f"{_n_params(config)}")


_SEQ2SEQ_KEYS = {"cell", "source_vocab", "target_vocab", "embedding_dim", "hidden_size",
                 "num_layers", "bidirectional", "attention", "source_features"}


def _n_seq2seq_params(config):
    """Parameters of a Seq2SeqNetwork, in closed form (it lays them out)."""
    E, H, L = config["embedding_dim"], config["hidden_size"], config["num_layers"]
    D, V = 2 if config["bidirectional"] else 1, config["target_vocab"]
    F = config["source_features"]
    if F is None:  # a source embedding before the encoder
        n = config["source_vocab"] * E + _stack_params(config["cell"], E, H, L, D)
    else:
        n = _stack_params(config["cell"], F, H, L, D)
    n += (V + 2) * E + _stack_params(config["cell"], E, H, L, 1)
    n += {"luong": H * D * H, "bahdanau": H * H + H * D * H + H, None: 0}[config["attention"]]
    if config["attention"] is not None:
        n += H * (D * H + H) + H  # the combine layer
    return n + (V + 1) * (H + 1)


def _check_seq2seq_network(config, flat):
    """A Seq2SeqNetwork's configuration: its keys, each size bounded by the
    parameters present, then the exact count."""
    if not isinstance(config, dict) or set(config) != _SEQ2SEQ_KEYS:
        raise ValueError(f"the network must be described by exactly {sorted(_SEQ2SEQ_KEYS)}")
    most = max(1, flat.size)
    _one_of(config["cell"], "cell", ("lstm", "gru"))
    for name in ("target_vocab", "embedding_dim", "hidden_size", "num_layers"):
        _count(config[name], name, most)
    for name in ("source_vocab", "source_features"):
        _count(config[name], name, most, optional=True)
    if (config["source_vocab"] is None) == (config["source_features"] is None):
        raise ValueError("a source has either a vocabulary or features")
    _one_of(config["bidirectional"], "bidirectional", (True, False))
    _one_of(config["attention"], "attention", ATTENTIONS)
    if flat.size != _n_seq2seq_params(config):
        raise ValueError(f"the parameter buffer has {flat.size} values, the network "
                         f"{_n_seq2seq_params(config)}")


def _check_parameters(flat, dtype):
    if flat.ndim != 1 or flat.dtype.kind != "f":
        raise ValueError("flat_params must be a 1-D float array")
    if not np.all(np.isfinite(flat)):
        raise ValueError("parameters hold NaN or inf")
    if flat.size and np.max(np.abs(flat)) > np.finfo(dtype).max:
        raise ValueError(f"parameters overflow {np.dtype(dtype).name}")


def _check_training_record(fitted, curves):
    """Epochs and steps (non-negative ints), the curves (lists of numbers;
    all but loss_curve_ may be null) and the best scores (numbers or null)."""
    for name in ("loss_curve_", "n_iter_", "t_"):
        if name not in fitted:
            raise ValueError(f"fitted attribute {name} is missing")
    for name in ("n_iter_", "t_"):
        _natural(fitted[name], name)
    for name in curves:
        curve = fitted.get(name)
        if not (curve is None and name != "loss_curve_") and not (
                isinstance(curve, list) and all(isinstance(v, Real) and not isinstance(v, bool)
                                                for v in curve)):
            raise ValueError(f"{name} must be a list of numbers")
    for name in ("best_loss_", "best_validation_score_"):
        value = fitted.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
            raise ValueError(f"{name} must be a number or null")


def _natural(value, name, most=2**62):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < most:
        raise ValueError(f"{name} must be an int in [0, {most})")


def _check_fitted(fitted, arrays, config, est):
    """Types and ranges of the fitted attributes, and their agreement with the
    network: classes and head, outputs and scaling, inputs and vocabulary."""
    if not isinstance(fitted, dict) or not all(isinstance(k, str) for k in fitted):
        raise ValueError("fitted must be a mapping of names")
    known = set(est._FITTED_SCALARS) | set(est._CURVES)
    if set(fitted) - known:
        raise ValueError(f"unknown fitted attributes {sorted(set(fitted) - known)}")
    for name in ("task_", "input_kind_", "per_step_"):
        if name not in fitted:
            raise ValueError(f"fitted attribute {name} is missing")
    _check_training_record(fitted, est._CURVES)
    _one_of(fitted["task_"], "task_", ("classification", "regression"))
    _one_of(fitted["input_kind_"], "input_kind_", tuple(_INPUT_KINDS))
    _one_of(fitted["per_step_"], "per_step_", (True, False))
    if fitted["per_step_"] != config["per_step"]:
        raise ValueError("per_step_ disagrees with the network")
    fixed = est._fixed_task
    if fixed is not None and fitted["task_"] != fixed:
        raise ValueError(f"task_ {fitted['task_']!r} in a {type(est).__name__}")
    _check_outputs(fitted, arrays, config)
    _check_inputs(fitted, config, est)


def _check_outputs(fitted, arrays, config):
    O = config["output_size"]
    if fitted["task_"] == "classification":
        classes = arrays.get("classes_")
        if classes is None or classes.ndim != 1 or classes.dtype.kind not in "biufU" or \
                len(classes) < 2 or len(np.unique(classes)) != len(classes):
            raise ValueError("classes_ must hold two or more distinct labels")
        if classes.dtype.kind == "f" and not np.all(np.isfinite(classes)):
            raise ValueError("classes_ hold NaN or inf")
        if O != (1 if len(classes) == 2 else len(classes)):
            raise ValueError(f"{len(classes)} classes, but the head has {O} outputs")
        if set(arrays) - {"classes_"}:
            raise ValueError("a classifier stores no target scaling")
        return
    _count(fitted.get("n_outputs_"), "n_outputs_", O)
    if fitted["n_outputs_"] != O:
        raise ValueError(f"n_outputs_ {fitted['n_outputs_']}, but the head has {O} outputs")
    for name in ("y_mean_", "y_scale_"):
        value = arrays.get(name)
        if value is None or value.shape != (O,) or value.dtype.kind != "f" or \
                not np.all(np.isfinite(value)):
            raise ValueError(f"{name} must hold {O} finite floats")
    if not np.all(arrays["y_scale_"] > 0):
        raise ValueError("y_scale_ must be positive")
    if "classes_" in arrays:
        raise ValueError("a regressor stores no classes")


def _check_inputs(fitted, config, est):
    kind, tokens = fitted["input_kind_"], config["vocab_size"] is not None
    if tokens != kind.startswith("tokens"):
        raise ValueError(f"input_kind_ {kind!r} disagrees with the network's embedding")
    if tokens:
        if fitted.get("n_tokens_") != config["vocab_size"] or \
                est.embedding_dim != config["input_size"]:
            raise ValueError("the vocabulary (n_tokens_, embedding_dim) disagrees with the "
                             "embedding")
        return
    if est.embedding_dim is not None:
        raise ValueError("embedding_dim is set, but the network has no embedding")
    n_features = fitted.get("n_features_in_")
    _count(n_features, "n_features_in_", 2**62)
    if kind == "2d" and config["input_size"] != 1 or \
            kind in ("3d", "list") and n_features != config["input_size"]:
        raise ValueError("n_features_in_ disagrees with the network's inputs")


def _check_estimator(est, config, dtype):
    """The hyper-parameters (scikit-learn's constraints), and those that shape
    the network agree with it."""
    est._validate_params()
    cell = type(est)._cell
    wanted = {"cell": cell, "hidden_size": est.hidden_size, "num_layers": est.num_layers,
              "bidirectional": est.bidirectional,
              "nonlinearity": est.nonlinearity if cell == "rnn" else "tanh"}
    wrong = [name for name, value in wanted.items() if config[name] != value]
    if np.dtype(est.dtype) != np.dtype(dtype):
        wrong.append("dtype")
    if wrong:
        raise ValueError(f"the parameters {wrong} disagree with the network")


# The longest target a Seq2Seq file may claim: predict decodes up to twice it.
_MAX_TARGET_LENGTH = 2**16


def _check_seq2seq_estimator(est, fitted, arrays, config, dtype):
    """A Seq2Seq's hyper-parameters, vocabularies and training record, and
    their agreement with its network."""
    est._validate_params()
    wrong = [name for name in ("cell", "hidden_size", "num_layers", "bidirectional",
                               "embedding_dim", "attention") if config[name] != getattr(est, name)]
    if np.dtype(est.dtype) != np.dtype(dtype):
        wrong.append("dtype")
    if wrong:
        raise ValueError(f"the parameters {wrong} disagree with the network")
    if not isinstance(fitted, dict) or set(fitted) != set(est._FITTED_NAMES) or arrays:
        raise ValueError(f"a Seq2Seq stores exactly {list(est._FITTED_NAMES)}")
    _check_training_record(fitted, ("loss_curve_", "validation_scores_"))
    _natural(fitted["max_target_length_"], "max_target_length_", _MAX_TARGET_LENGTH)
    features = fitted["n_source_features_"]
    _count(features, "n_source_features_", 2**62, optional=True)
    if features != config["source_features"] or \
            (features is None) == (fitted["source_kind_"] == "features"):
        raise ValueError("n_source_features_ disagrees with the network")
    for side, size in (("source", config["source_vocab"]), ("target", config["target_vocab"])):
        kind, vocab = fitted[f"{side}_kind_"], fitted[f"{side}_vocab_"]
        _one_of(kind, f"{side}_kind_", ("str", "tokens", "features") if side == "source"
                else ("str", "tokens"))
        if kind == "str" and not (
                isinstance(vocab, list) and all(isinstance(c, str) and len(c) == 1
                                                for c in vocab)
                and sorted(set(vocab)) == vocab and size == max(1, len(vocab))):
            raise ValueError(f"{side}_vocab_ must hold the {size} sorted distinct characters "
                             "of the network's vocabulary")
        if kind != "str" and vocab is not None:
            raise ValueError(f"{side}_vocab_ of token ids or features must be null")
        if fitted[f"n_{side}_tokens_"] != size:
            raise ValueError(f"n_{side}_tokens_ disagrees with the network")


def _check_rnn_estimator(est, fitted, arrays, config, dtype):
    """An estimator of fastrnn.estimators and its Network."""
    _check_estimator(est, config, dtype)
    _check_fitted(fitted, arrays, config, est)


# network class name -> (class, check of a configuration against the flat
# parameters, check of the estimator's parameters and fitted state against the
# configuration). An estimator class names its network in _network_class
# (default "Network"); files before Seq2Seq have no "network_class" entry.
NETWORKS = {
    "Network": (Network, _check_network, _check_rnn_estimator),
    "Seq2SeqNetwork": (Seq2SeqNetwork, _check_seq2seq_network, _check_seq2seq_estimator),
}


def _network_entry(meta, cls):
    name = getattr(cls, "_network_class", "Network")
    if meta.get("network_class", "Network") != name:
        raise ValueError(f"a {cls.__name__} has a {name}, the file describes "
                         f"{meta.get('network_class')!r}")
    return NETWORKS[name]


def load(path, classes, wrappers=None):
    """Read an estimator written by ``save``; ``classes`` maps the class names
    a file may name to the classes (fastrnn.load passes the nine estimators
    and Seq2Seq).
    A file written by ``save_wrapper`` needs its wrapper's class in
    ``wrappers`` (fastrnn.load: SequenceGenerator, Forecaster) and gives the
    wrapper. Raises ModelFileError for anything wrong with the file."""
    meta, files = _read_archive(path)
    wrapper = _wrapper_entry(path, meta, files, wrappers or {})
    name = meta.get("class")
    cls = classes.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ModelFileError(f"{path} names an unknown estimator class {name!r}")
    try:
        params, fitted = meta.get("params"), meta.get("fitted")
        dtype = meta.get("dtype")
        _one_of(dtype, "dtype", ("float32", "float64"))
        if not isinstance(params, dict) or not set(params) <= set(cls().get_params()):
            raise ValueError(f"params must name parameters of {cls.__name__}")
        if not all(_is_scalar(v) or isinstance(v, dict) for v in params.values()):
            raise ValueError("every parameter must be a JSON scalar")
        if isinstance(fitted, dict):  # files of fastrnn 0.1.0 kept the curves beside it
            fitted = dict(fitted)
            for curve in ("loss_curve_", "validation_scores_"):
                if curve in meta:
                    fitted.setdefault(curve, meta[curve])
        flat = files.pop("flat_params")
        _check_parameters(flat, dtype)
        network, check_network, check_estimator = _network_entry(meta, cls)
        config = meta.get("network")
        check_network(config, flat)
        est = cls(**{k: _from_json(v) for k, v in params.items()})
        check_estimator(est, fitted, files, config, dtype)
        net = network.from_flat(config, dtype, flat.astype(dtype), n_threads=est.n_threads)
        est._set_fitted_state(fitted, files, net)
    except (TypeError, KeyError, ValueError, OverflowError, RecursionError) as exc:
        raise ModelFileError(f"{path} is a damaged fastrnn model file ({exc})") from exc
    return est if wrapper is None else _load_wrapper(path, wrapper, est)


# ----- wrappers (SequenceGenerator, Forecaster) -----------------------------------------

def _wrapper_entry(path, meta, files, wrappers):
    """(class, metadata entry, arrays) of the wrapper a file holds, or None;
    the wrapper's arrays leave ``files`` (which keeps the estimator's)."""
    entry = meta.get("wrapper")
    own = {name[len(WRAPPER_PREFIX):]: files.pop(name) for name in list(files)
           if name.startswith(WRAPPER_PREFIX)}
    if entry is None:
        if own:
            raise ModelFileError(f"{path} holds wrapper arrays but no wrapper")
        return None
    name = entry.get("class") if isinstance(entry, dict) else None
    cls = wrappers.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ModelFileError(f"{path} names an unknown wrapper class {name!r}")
    return cls, entry, own


def _load_wrapper(path, wrapper, estimator):
    """The wrapper around a loaded estimator: its parameters (JSON scalars it
    has), then its own checks of its fitted state against the estimator
    (``_set_fitted_state`` raises ValueError for anything inconsistent)."""
    cls, entry, arrays = wrapper
    try:
        params, fitted = entry.get("params"), entry.get("fitted")
        if not isinstance(params, dict) or not set(params) <= set(cls().get_params()):
            raise ValueError(f"params must name parameters of {cls.__name__}")
        if not all(_is_scalar(v) for v in params.values()):
            raise ValueError("every parameter must be a JSON scalar")
        if not isinstance(fitted, dict) or not all(isinstance(k, str) for k in fitted):
            raise ValueError("fitted must be a mapping of names")
        return cls(**params)._set_fitted_state(fitted, arrays, estimator)
    except (TypeError, KeyError, ValueError, OverflowError, RecursionError) as exc:
        raise ModelFileError(f"{path} is a damaged fastrnn model file ({exc})") from exc

