"""Property-based tests (hypothesis): random shapes, dtypes, memory layouts,
lengths, ragged lists, token ids and thread counts. Each example either raises
a documented error (ValueError) or matches the NumPy reference
(fastrnn/reference.py). Few examples each, so the file runs in seconds."""
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastrnn import (FastGRURegressor, FastLSTMClassifier, FastRNN, Forecaster,  # noqa: E402
                     SequenceGenerator)
from fastrnn.layers import STACKS  # noqa: E402
from fastrnn.reference import stack_forward  # noqa: E402

FEW = settings(max_examples=15, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def _layout(X, kind):
    """The same values in another memory layout."""
    if kind == "fortran":
        return np.asfortranarray(X)
    if kind == "reversed":  # negative strides
        return np.ascontiguousarray(X[::-1, ::-1])[::-1, ::-1]
    if kind == "read_only":
        X = X.copy()
        X.flags.writeable = False
        return X
    return X


@st.composite
def stack_cases(draw):
    cell = draw(st.sampled_from(["lstm", "gru", "rnn"]))
    B, T = draw(st.integers(1, 5)), draw(st.integers(1, 7))
    I, H = draw(st.integers(1, 4)), draw(st.integers(1, 9))
    lengths = draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B))
    return dict(cell=cell, B=B, T=T, I=I, H=H, lengths=lengths,
                num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                layout=draw(st.sampled_from(["c", "fortran", "reversed", "read_only"])),
                n_threads=draw(st.sampled_from([None, -1, 1, 2, 3, 10**6])),
                seed=draw(st.integers(0, 2**16)))


@FEW
@given(stack_cases())
def test_stacks_match_the_numpy_reference(case):
    rng = np.random.default_rng(case["seed"])
    kwargs = dict(num_layers=case["num_layers"], bidirectional=case["bidirectional"],
                  dtype=case["dtype"], n_threads=case["n_threads"], random_state=case["seed"])
    if case["cell"] == "rnn":
        kwargs["nonlinearity"] = rng.choice(["tanh", "relu"])
    stack = STACKS[case["cell"]](case["I"], case["H"], **kwargs)
    X = rng.normal(size=(case["B"], case["T"], case["I"])).astype(case["dtype"])
    Y, state = stack.forward(_layout(X, case["layout"]), lengths=case["lengths"])
    Y_ref, h_ref, c_ref = stack_forward(stack.cell, stack.state_dict(), X,
                                        case["num_layers"], case["bidirectional"],
                                        lengths=case["lengths"])
    tol = TOLERANCE[case["dtype"]]
    np.testing.assert_allclose(Y, Y_ref, **tol)
    np.testing.assert_allclose(state.h, h_ref, **tol)
    if case["cell"] == "lstm":
        np.testing.assert_allclose(state.c, c_ref, **tol)


@FEW
@given(st.integers(0, 4), st.integers(0, 4), st.integers(0, 3),
       st.sampled_from([np.float32, np.int64, np.complex64, object]))
def test_stacks_refuse_bad_inputs_with_value_errors(B, T, I, dtype):
    stack = STACKS["lstm"](2, 3)
    X = np.ones((B, T, I), dtype=dtype)
    if B and T and I == 2 and dtype in (np.float32, np.int64):
        assert stack.forward(X)[0].shape == (B, T, 3)
    else:
        with pytest.raises(ValueError):
            stack.forward(X)


@st.composite
def ragged_tasks(draw):
    n = draw(st.integers(4, 12))
    F = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    X = [rng.normal(size=(L, F)) for L in lengths]
    return X, rng


@FEW
@given(ragged_tasks(), st.sampled_from(["float32", "float64"]), st.sampled_from([1, 2, 10**6]))
def test_estimators_on_ragged_lists_predict_like_one_sample_at_a_time(task, dtype, n_threads):
    X, rng = task
    y = np.arange(len(X)) % 2
    clf = quiet(FastLSTMClassifier(hidden_size=5, max_iter=1, dtype=dtype, n_threads=n_threads,
                                   random_state=0).fit, X, y)
    together = clf.predict_proba(X)
    alone = np.concatenate([clf.predict_proba([x]) for x in X])
    np.testing.assert_allclose(together, alone, **TOLERANCE[np.dtype(dtype).type])
    assert np.all(np.isfinite(together)) and together.shape == (len(X), 2)
    reg = quiet(FastGRURegressor(hidden_size=4, max_iter=1, dtype=dtype,
                                 random_state=0).fit, X, rng.normal(size=len(X)))
    assert np.all(np.isfinite(reg.predict(X)))


@FEW
@given(st.lists(st.lists(st.integers(-3, 12), min_size=1, max_size=6), min_size=3,
                max_size=8))
def test_token_models_accept_ids_in_range_and_refuse_others(sequences):
    fit_seqs = [np.arange(5), np.arange(5)[::-1], np.array([1, 2, 3])]
    model = quiet(FastRNN(hidden_size=4, embedding_dim=3, max_iter=1, random_state=0).fit,
                  fit_seqs, [0, 1, 0])
    valid = all(0 <= t < 5 for s in sequences for t in s)
    seqs = [np.asarray(s) for s in sequences]
    if valid:
        assert len(model.predict(seqs)) == len(seqs)
    else:
        with pytest.raises(ValueError):
            model.predict(seqs)


@pytest.fixture(scope="module")
def generator():
    return quiet(SequenceGenerator(hidden_size=8, embedding_dim=4, max_iter=1, seq_len=8,
                                   random_state=0).fit, "the cat sat on the mat")


@FEW
@given(n_tokens=st.integers(0, 12), n_samples=st.integers(1, 5),
       temperature=st.sampled_from([0.0, 0.5, 1.0]), top_k=st.sampled_from([None, 1, 3]),
       n_threads=st.sampled_from([1, 2, 10**6]), seed=st.integers(0, 2**31))
def test_generation_is_reproducible_and_in_the_vocabulary(generator, n_tokens, n_samples,
                                                          temperature, top_k, n_threads, seed):
    generator.set_params(n_threads=n_threads)
    texts = generator.generate(n_tokens, prompt="the ", temperature=temperature, top_k=top_k,
                               n_samples=n_samples, random_state=seed)
    generator.set_params(n_threads=1)
    again = generator.generate(n_tokens, prompt="the ", temperature=temperature, top_k=top_k,
                               n_samples=n_samples, random_state=seed)
    assert texts == again and len(texts) == n_samples
    assert all(len(t) <= n_tokens and set(t) <= set(generator.vocabulary_) for t in texts)


@FEW
@given(lookback=st.one_of(st.integers(-1, 6), st.floats(0.5, 6.5), st.just("3")),
       scale=st.sampled_from([1e-300, 1.0, 1e300]), columns=st.integers(1, 2))
def test_forecasts_are_finite_or_refused(lookback, scale, columns):
    series = np.sin(np.arange(60)[:, None] / 4 + np.arange(columns)) * scale
    fc = Forecaster(lookback=lookback, max_iter=1, hidden_size=4, random_state=0)
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 1:
        with pytest.raises(ValueError, match="lookback"):
            fc.fit(series)
        return
    forecast = quiet(fc.fit, series).predict(3)
    assert forecast.shape == (3, columns) and np.all(np.isfinite(forecast))
    assert np.all(np.abs(forecast) <= 10 * np.abs(series).max())
