"""Saving and loading fitted estimators without pickle.

The file is a NumPy .npz read with allow_pickle=False: the flat parameter
buffer, fitted arrays, and one JSON document with the class name, the
hyper-parameters, the network configuration and the fastrnn version. Loading
executes no code from the file; a class is only ever taken from fastrnn's own
list of estimators.
"""
import json
import zipfile

import numpy as np

FORMAT = "fastrnn-estimator"
FORMAT_VERSION = 1
_ARRAYS = ("classes_", "y_mean_", "y_scale_")
_SCALARS = ("n_features_in_", "n_iter_", "t_", "input_kind_", "task_", "per_step_",
            "n_outputs_", "n_tokens_", "best_loss_", "best_validation_score_")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):  # e.g. class_weight with non-string labels
        return {"__dict__": [[_jsonable(k), _jsonable(v)] for k, v in value.items()]}
    return value


def _from_json(value):
    if isinstance(value, dict) and "__dict__" in value:
        return {k: v for k, v in value["__dict__"]}
    return value


def save(estimator, path):
    """Write a fitted estimator to ``path`` (see the module docstring)."""
    import fastrnn
    from sklearn.utils.validation import check_is_fitted
    check_is_fitted(estimator, "model_")
    params = estimator.get_params()
    if not isinstance(params.get("random_state"), (int, type(None))):
        params["random_state"] = None  # a Generator or RandomState is not data
    net = estimator.model_
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "fastrnn_version": fastrnn.__version__,
        "class": type(estimator).__name__,
        "params": {k: _jsonable(v) for k, v in params.items()},
        "network": net.config, "dtype": net.dtype.name,
        "fitted": {k: _jsonable(getattr(estimator, k)) for k in _SCALARS
                   if hasattr(estimator, k)},
        "loss_curve_": [float(v) for v in estimator.loss_curve_],
        "validation_scores_": (None if estimator.validation_scores_ is None
                               else [float(v) for v in estimator.validation_scores_]),
    }
    arrays = {"flat_params": net.flat_params}
    for name in _ARRAYS:
        if hasattr(estimator, name):
            value = np.asarray(getattr(estimator, name))
            if value.dtype == object:
                value = value.astype(str)
            arrays[name] = value
    with open(path, "wb") as f:
        np.savez(f, metadata=np.array(json.dumps(meta)), **arrays)


def load(path):
    """Read an estimator written by ``save`` (or ``est.save(path)``)."""
    from fastrnn.estimators import ESTIMATORS
    from fastrnn.network import Network
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a plain .npy array
            raise ValueError("not an .npz archive")
        with archive:
            files = {name: archive[name] for name in archive.files}
        meta = json.loads(str(files.pop("metadata")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a fastrnn model file ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastrnn model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {meta.get('format_version')}; this "
                         f"fastrnn reads version {FORMAT_VERSION}")
    cls = ESTIMATORS.get(meta.get("class"))
    if cls is None:
        raise ValueError(f"{path} names an unknown estimator class {meta.get('class')!r}")
    try:
        est = cls(**{k: _from_json(v) for k, v in meta["params"].items()})
        for name, value in meta["fitted"].items():
            setattr(est, name, value)
        for name in _ARRAYS:
            if name in files:
                setattr(est, name, files[name])
        est.loss_curve_ = list(meta["loss_curve_"])
        est.validation_scores_ = meta["validation_scores_"]
        net = Network(dtype=meta["dtype"], n_threads=est.n_threads, **meta["network"])
        flat = files["flat_params"]
        if flat.shape != net.flat_params.shape:
            raise ValueError(f"parameter buffer has {flat.size} values, the network "
                             f"{net.flat_params.size}")
        if not np.all(np.isfinite(flat)):
            raise ValueError("parameters hold NaN or inf")
        net.flat_params[:] = flat
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{path} is a damaged fastrnn model file ({exc})") from exc
    est.model_ = net
    est._optimizer = None
    est._rng = np.random.default_rng(est.random_state)
    est._lr = float(est.learning_rate_init)
    est._plateau = (np.inf, 0)
    return est
