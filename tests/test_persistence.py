"""fastrnn.persistence: pickle, joblib and the .npz format; the estimator
owns what is stored (_get_fitted_state / _set_fitted_state)."""
import ast
import inspect
import json
import pickle
import time

import joblib
import numpy as np
import pytest
from sklearn.base import clone

import fastrnn
from fastrnn import FastGRUClassifier, FastLSTMRegressor, FastRNN, persistence

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def fitted(small_task):
    X, y = small_task
    labels = np.where(y == 1, "pos", "neg")
    clf = FastGRUClassifier(max_iter=2, bidirectional=True,
                            class_weight={"pos": 2.0, "neg": 1.0}, random_state=0)
    return clf.fit(X, labels), X, labels


def test_pickle_joblib_and_save_load_round_trip(fitted, tmp_path):
    clf, X, _ = fitted
    expected = clf.predict_proba(X)
    for restored in (pickle.loads(pickle.dumps(clf)),
                     joblib.load(joblib.dump(clf, tmp_path / "m.joblib")[0])):
        np.testing.assert_array_equal(restored.predict_proba(X), expected)
    path = tmp_path / "model.npz"
    clf.save(path)
    loaded = fastrnn.load(path)
    assert type(loaded) is FastGRUClassifier
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.get_params() == clf.get_params()
    assert loaded.loss_curve_ == clf.loss_curve_
    for name in clf._FITTED_SCALARS:
        assert getattr(loaded, name, None) == getattr(clf, name, None), name


def test_regression_per_step_and_token_models_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5, 2))
    reg = FastLSTMRegressor(max_iter=2, early_stopping=True, random_state=0).fit(
        X, 10 + 3 * np.cumsum(X, axis=1))
    seqs = [rng.integers(0, 4, size=n) for n in rng.integers(2, 7, size=30)]
    tagger = FastRNN(embedding_dim=3, max_iter=2, random_state=0).fit(
        seqs, [s % 2 for s in seqs])
    for est, data in ((reg, X), (tagger, seqs)):
        est.save(tmp_path / "m.npz")
        loaded = fastrnn.load(tmp_path / "m.npz")
        for a, b in zip(est.predict(data), loaded.predict(data)):
            np.testing.assert_array_equal(a, b)
    assert loaded.validation_scores_ is None
    reg.save(tmp_path / "r.npz")
    assert fastrnn.load(tmp_path / "r.npz").validation_scores_ == reg.validation_scores_
    assert len(reg.validation_scores_) == reg.n_iter_


def test_the_estimator_restores_its_own_state(fitted, tmp_path):
    clf, X, labels = fitted
    attributes, arrays, model = clf._get_fitted_state()
    assert set(arrays) == {"classes_"} and "loss_curve_" in attributes
    fresh = clone(clf)._set_fitted_state(attributes, arrays, model)
    np.testing.assert_array_equal(fresh.predict_proba(X), clf.predict_proba(X))
    fresh.set_params(warm_start=True, max_iter=1).fit(X, labels)  # training goes on
    assert fresh.n_iter_ == clf.n_iter_ + 1
    with pytest.raises(ValueError, match="unknown fitted attributes"):
        clone(clf)._set_fitted_state(dict(attributes, secret_=1), arrays, model)


def _rewrite_metadata(path, change):
    with np.load(path) as archive:
        files = {name: archive[name] for name in archive.files}
    meta = json.loads(str(files.pop("metadata")))
    change(meta)
    np.savez(path, metadata=np.array(json.dumps(meta)), **files)


def test_files_of_the_first_layout_and_unknown_classes(fitted, tmp_path):
    clf, X, _ = fitted
    path = tmp_path / "old.npz"
    clf.save(path)

    def first_layout(meta):  # fastrnn 0.1.0 kept the curves beside "fitted"
        meta["loss_curve_"] = meta["fitted"].pop("loss_curve_")
        meta["validation_scores_"] = meta["fitted"].pop("validation_scores_")
    _rewrite_metadata(path, first_layout)
    old = fastrnn.load(path)
    assert old.loss_curve_ == clf.loss_curve_
    np.testing.assert_array_equal(old.predict_proba(X), clf.predict_proba(X))
    _rewrite_metadata(path, lambda meta: meta.update({"class": "os.system"}))
    with pytest.raises(ValueError, match="unknown estimator class"):
        fastrnn.load(path)


def test_load_refuses_corrupt_and_foreign_files(small_task, tmp_path):
    X, y = small_task
    good = tmp_path / "good.npz"
    FastLSTMRegressor(max_iter=1).fit(X, X[:, 0, 0]).save(good)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(good.read_bytes()[:200])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"evil": 1}))
    for path in (corrupt, foreign, pickled, tmp_path / "missing.npz"):
        with pytest.raises(ValueError, match="fastrnn model file"):
            fastrnn.load(path)
    nan_weights = tmp_path / "nan.npz"
    nan_weights.write_bytes(good.read_bytes())
    with np.load(nan_weights) as archive:
        files = {name: archive[name] for name in archive.files}
    files["flat_params"][:] = np.nan
    np.savez(nan_weights, **files)
    with pytest.raises(ValueError, match="damaged.*NaN"):
        fastrnn.load(nan_weights)


def test_persistence_does_not_import_the_estimators():
    """Imports point one way: estimators -> persistence -> network."""
    tree = ast.parse(inspect.getsource(persistence))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not imported & {"fastrnn.estimators", "fastrnn._base"}


# ----- hostile files: one error type, bounded work ------------------------------------------

def _files(path):
    with np.load(path) as archive:
        files = {name: archive[name] for name in archive.files}
    return json.loads(str(files.pop("metadata"))), files


def _write(path, meta, files):
    with open(path, "wb") as f:
        np.savez(f, metadata=np.array(json.dumps(meta)), **files)


@pytest.fixture(scope="module")
def model_files(small_task, tmp_path_factory):
    """Valid files of a string-label classifier, a regressor, a token model
    and a Seq2Seq, with data each one predicts on."""
    X, y = small_task
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 5, size=(40, 6))
    words = ["ab", "ba", "abb", "b"] * 5
    models = [
        (FastGRUClassifier(hidden_size=4, max_iter=1, class_weight={"a": 2.0, "b": 1.0},
                           random_state=0).fit(X, np.where(y == 1, "a", "b")), X),
        (FastLSTMRegressor(hidden_size=4, max_iter=1, random_state=0).fit(X, X[:, :, :2].sum(1)),
         X),
        (FastRNN(hidden_size=4, embedding_dim=3, max_iter=1, random_state=0).fit(
            tokens, tokens[:, 0] % 2), tokens),
        (fastrnn.Seq2Seq(hidden_size=4, embedding_dim=3, max_iter=1, random_state=0).fit(
            words, [w[::-1] for w in words]), words),
    ]
    folder = tmp_path_factory.mktemp("models")
    out = []
    for i, (est, data) in enumerate(models):
        est.save(folder / f"{i}.npz")
        out.append((folder / f"{i}.npz", data))
    return out


def _json_paths(node, prefix=()):
    """Every (path, value) of a JSON tree, containers included."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _json_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):
            yield from _json_paths(value, prefix + (i,))


_HOSTILE_VALUES = [None, True, -1, 0, 2.5, 8000, 10**6, 2**70, 1e300, float("nan"),
                   "x", "os.system", [], {}, {"__dict__": 7}, [[[[[[[[[[1]]]]]]]]]]]


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    if value is _DELETE:
        del tree[path[-1]]
    else:
        tree[path[-1]] = value


_DELETE = object()


def _metadata_mutations(meta, rng):
    """Changed values, deleted and extra keys, at random places of the document."""
    paths = [p for p, _ in _json_paths(meta) if p]
    for i in rng.choice(len(paths), size=min(len(paths), 40), replace=False):
        path = paths[i]
        for value in rng.choice(len(_HOSTILE_VALUES), size=3, replace=False):
            yield path, _HOSTILE_VALUES[value]
        yield path, _DELETE
    for container in ((), ("params",), ("network",), ("fitted",)):
        yield container + ("predict",), 1  # an extra key (a method name) anywhere


def _array_mutations(files, dtype):
    flat = files["flat_params"]
    yield "flat_params", np.full(flat.shape, 1e300)  # overflows float32
    yield "flat_params", flat[:-1]
    yield "flat_params", np.concatenate([flat, flat])
    yield "flat_params", flat.astype(np.int64)
    yield "flat_params", flat.reshape(1, -1)
    yield "flat_params", np.array("evil")
    yield "evil", np.zeros(3)
    for name in ("classes_", "y_mean_", "y_scale_"):
        if name in files:
            yield name, files[name][:1]
            yield name, np.array([np.nan, 1.0])
            yield name, np.zeros((2, 2))


def _assert_clean(path, data):
    """load raises ModelFileError, or gives a model that predicts (or refuses
    data of another shape with a ValueError): in well under a second."""
    started = time.perf_counter()
    try:
        est = fastrnn.load(path)
    except fastrnn.ModelFileError:
        pass
    else:
        try:
            est.predict(data)
        except ValueError:
            pass
    assert time.perf_counter() - started < 1.0


def test_load_survives_mutated_files(model_files, tmp_path):
    rng = np.random.default_rng(0)
    target = tmp_path / "mutated.npz"
    for path, data in model_files:
        raw = path.read_bytes()
        for cut in rng.integers(0, len(raw), size=8):  # truncated
            target.write_bytes(raw[:cut])
            _assert_clean(target, data)
        for at in rng.integers(0, len(raw), size=8):  # a flipped byte
            target.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
            _assert_clean(target, data)
        meta, files = _files(path)
        for key, value in _metadata_mutations(meta, rng):
            changed = json.loads(json.dumps(meta))
            _set(changed, key, value)
            _write(target, changed, files)
            _assert_clean(target, data)
        for name, value in _array_mutations(files, meta["dtype"]):
            _write(target, meta, {**files, name: value})
            _assert_clean(target, data)


def test_load_rejects_what_it_cannot_trust(model_files, tmp_path):
    path, _ = model_files[0]
    meta, files = _files(path)
    target = tmp_path / "bad.npz"
    cases = {
        "hidden_size 8000 with the parameters of 4": ("network", "hidden_size", 8000),
        "a million layers": ("network", "num_layers", 10**6),
        "a method replaced": ("fitted", "predict", 1),
        "classes the head cannot have": None,
        "float64 weights of 1e300 in a float32 model": None,
    }
    for what, change in cases.items():
        changed, changed_files = json.loads(json.dumps(meta)), dict(files)
        if change is not None:
            _set(changed, change[:-1], change[-1])
        elif what.startswith("classes"):
            changed_files["classes_"] = np.array(["a", "b", "c"])
        else:
            changed_files["flat_params"] = np.full(files["flat_params"].shape, 1e300)
        _write(target, changed, changed_files)
        started = time.perf_counter()
        with pytest.raises(fastrnn.ModelFileError):
            fastrnn.load(target)
        assert time.perf_counter() - started < 1.0, what
    assert issubclass(fastrnn.ModelFileError, ValueError)


def test_the_size_check_matches_the_network_layout():
    from fastrnn.network import Network
    for config in (dict(cell="lstm", input_size=3, hidden_size=5, output_size=2),
                   dict(cell="gru", input_size=2, hidden_size=3, output_size=1, num_layers=3,
                        bidirectional=True, vocab_size=7),
                   dict(cell="rnn", input_size=1, hidden_size=4, output_size=3, num_layers=2,
                        condition_size=5)):
        net = Network(**config)
        assert persistence._n_params(net.config) == net.flat_params.size


def test_a_huge_thread_count_in_a_file_is_clamped(model_files, tmp_path):
    from fastrnn._threads import available_cpus
    path, data = model_files[1]
    meta, files = _files(path)
    for n_threads in (100_000, 2**40):
        meta["params"]["n_threads"] = n_threads
        _write(tmp_path / "threads.npz", meta, files)
        loaded = fastrnn.load(tmp_path / "threads.npz")
        assert loaded.n_threads == n_threads
        np.testing.assert_array_equal(loaded.predict(data), fastrnn.load(path).predict(data))
    assert available_cpus() >= 1


# ----- Seq2Seq files ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def seq2seq_file(model_files):
    path, _ = model_files[3]
    assert _files(path)[0]["class"] == "Seq2Seq"
    return path


@pytest.mark.parametrize("change", [
    ("network", "hidden_size", 33), ("network", "attention", "bahdanau"),
    ("network", "attention", "os.system"), ("network", "source_vocab", 10**9),
    ("network", "input_size", 3), ("network", "source_features", 3),
    ("network_class", "Network"), ("network_class", "Evil"),
    ("class", "FastLSTM"), ("params", "hidden_size", 16), ("params", "attention", None),
    ("fitted", "source_vocab_", ["c", "b", "a"]), ("fitted", "target_vocab_", ["b", "a"]),
    ("fitted", "n_target_tokens_", 4), ("fitted", "source_kind_", "tokens"),
    ("fitted", "max_target_length_", 2**40), ("fitted", "max_target_length_", -1),
    ("fitted", "n_iter_", "x"), ("fitted", "loss_curve_", None), ("fitted", "predict", 1),
    ("fitted", "best_loss_", "low"),
])
def test_a_tampered_file_raises_model_file_error(seq2seq_file, tmp_path, change):
    meta, files = _files(seq2seq_file)
    node = meta
    for key in change[:-2]:
        node = node[key]
    node[change[-2]] = change[-1]
    _write(tmp_path / "bad.npz", meta, files)
    with pytest.raises(fastrnn.ModelFileError):
        fastrnn.load(tmp_path / "bad.npz")


def test_truncated_or_damaged_files_raise_model_file_error(seq2seq_file, tmp_path, rng):
    raw = seq2seq_file.read_bytes()
    target = tmp_path / "cut.npz"
    for cut in rng.integers(0, len(raw), size=10):
        target.write_bytes(raw[:cut])
        with pytest.raises(fastrnn.ModelFileError):
            fastrnn.load(target)
    meta, files = _files(seq2seq_file)
    flat = files["flat_params"]
    for bad in (flat[:-1], np.concatenate([flat, flat]), np.full(flat.shape, np.nan)):
        _write(target, meta, {**files, "flat_params": bad})
        with pytest.raises(fastrnn.ModelFileError):
            fastrnn.load(target)
    _write(target, meta, {**files, "classes_": np.array([0, 1])})
    with pytest.raises(fastrnn.ModelFileError):
        fastrnn.load(target)


def test_an_estimator_file_cannot_become_a_seq2seq(model_files, tmp_path):
    meta, files = _files(model_files[1][0])
    assert meta["network_class"] == "Network"
    meta["class"], meta["params"] = "Seq2Seq", {}  # Seq2Seq's defaults: valid parameters
    _write(tmp_path / "regressor.npz", meta, files)
    with pytest.raises(fastrnn.ModelFileError, match="Seq2SeqNetwork"):
        fastrnn.load(tmp_path / "regressor.npz")


@pytest.mark.parametrize("cell, attention, bidirectional, num_layers", [
    ("lstm", "luong", True, 1), ("gru", "bahdanau", False, 2), ("lstm", None, True, 3),
    ("gru", "luong", False, 1)])
def test_the_size_check_matches_the_seq2seq_layout(cell, attention, bidirectional, num_layers):
    from fastrnn.seq2seq_network import Seq2SeqNetwork
    net = Seq2SeqNetwork(cell, 7, 5, 3, 4, num_layers, bidirectional, attention)
    assert persistence._n_seq2seq_params(net.config) == net.flat_params.size


