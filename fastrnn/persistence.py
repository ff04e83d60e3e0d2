"""Saving and loading fitted estimators without pickle.

The file is a NumPy .npz read with allow_pickle=False: the flat parameter
buffer, fitted arrays, and one JSON document with the class name, the
hyper-parameters, the network configuration and the fastrnn version. Loading
executes no code from the file; a class is only ever taken from the mapping
the caller passes (fastrnn.load: the nine estimators). The estimator owns what
is stored: ``_get_fitted_state()`` / ``_set_fitted_state()``.
"""
import json
import zipfile

import numpy as np

from fastrnn.network import Network

FORMAT = "fastrnn-estimator"
FORMAT_VERSION = 1


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
    """Write a fitted estimator to ``path`` (see the module docstring).

    The estimator describes itself: ``get_params()`` and
    ``_get_fitted_state()`` -> (fitted attributes, fitted arrays, network)."""
    import fastrnn
    attributes, arrays, net = estimator._get_fitted_state()
    params = estimator.get_params()
    if not isinstance(params.get("random_state"), (int, type(None))):
        params["random_state"] = None  # a Generator or RandomState is not data
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "fastrnn_version": fastrnn.__version__,
        "class": type(estimator).__name__,
        "params": {k: _jsonable(v) for k, v in params.items()},
        "network": net.config, "dtype": net.dtype.name,
        "fitted": {k: _jsonable(v) for k, v in attributes.items()},
    }
    arrays = {name: value.astype(str) if value.dtype == object else value
              for name, value in arrays.items()}
    with open(path, "wb") as f:
        np.savez(f, metadata=np.array(json.dumps(meta)), flat_params=net.flat_params, **arrays)


def _read_archive(path):
    """The metadata document and the arrays of a model file."""
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
    return meta, files


def _network(meta, flat, n_threads):
    net = Network(dtype=meta["dtype"], n_threads=n_threads, **meta["network"])
    if flat.shape != net.flat_params.shape:
        raise ValueError(f"parameter buffer has {flat.size} values, the network "
                         f"{net.flat_params.size}")
    if not np.all(np.isfinite(flat)):
        raise ValueError("parameters hold NaN or inf")
    net.flat_params[:] = flat
    return net


def load(path, classes):
    """Read an estimator written by ``save``; ``classes`` maps the class names
    a file may name to the classes (fastrnn.load passes the nine estimators)."""
    meta, files = _read_archive(path)
    cls = classes.get(meta.get("class"))
    if cls is None:
        raise ValueError(f"{path} names an unknown estimator class {meta.get('class')!r}")
    try:
        est = cls(**{k: _from_json(v) for k, v in meta["params"].items()})
        attributes = dict(meta["fitted"])
        for name in ("loss_curve_", "validation_scores_"):  # files of fastrnn 0.1.0
            if name in meta:
                attributes.setdefault(name, meta[name])
        flat = files.pop("flat_params")
        est._set_fitted_state(attributes, files, _network(meta, flat, est.n_threads))
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{path} is a damaged fastrnn model file ({exc})") from exc
    return est
