"""Generation (the C sampling loop), captioning, forecasting, data sets, CLI."""
import numpy as np
import pytest

from fastrnn import Forecaster, SequenceGenerator, make_windows
from fastrnn.cli import main as cli_main
from fastrnn.datasets import load_digits_sequences, load_text, mackey_glass
from fastrnn.generator import BOUNDARY

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def text_model():
    text = load_text(max_chars=30000)
    return SequenceGenerator(hidden_size=48, max_iter=3, learning_rate_init=0.01,
                             random_state=0).fit(text)


def _next_token_proba(gen, ids):
    """Probabilities over the classifier's classes after the id sequence, from
    the Python-side network (the C loop must agree with it)."""
    clf = gen.classifier_
    proba = clf.predict_proba(np.asarray(ids)[None])
    return proba[0, -1]


def _generated_ids(gen, prompt, text):
    return [BOUNDARY] + list(gen._encode(prompt)) + list(gen._encode(text))


def test_same_seed_same_text_and_batched_samples(text_model):
    a = text_model.generate(80, prompt="The ", random_state=3)
    b = text_model.generate(80, prompt="The ", random_state=3)
    c = text_model.generate(80, prompt="The ", random_state=4)
    assert a == b and a != c
    many = text_model.generate(40, n_samples=5, random_state=1)
    assert len(many) == 5 and len(set(many)) > 1
    assert all(isinstance(s, str) and len(s) <= 40 for s in many)


def test_generated_text_does_not_depend_on_thread_count():
    gen = SequenceGenerator(hidden_size=96, num_layers=2, max_iter=1, random_state=0)
    gen.fit(load_text(max_chars=10000))
    outputs = []
    for n_threads in (1, 2):
        gen.n_threads = n_threads
        outputs.append(gen.generate(100, n_samples=3, random_state=5))
    assert outputs[0] == outputs[1]


def _assert_greedy_follows_python(gen, prompt, n_tokens=25):
    text = gen.generate(n_tokens, prompt=prompt, temperature=0)[0]
    ids = _generated_ids(gen, prompt, text)
    classes = gen.classifier_.classes_
    for i in range(1 + len(prompt), len(ids)):
        proba = _next_token_proba(gen, ids[:i])
        assert classes[np.argmax(proba)] == ids[i]
    return text


def test_greedy_generation_follows_the_python_forward_pass(text_model):
    text = _assert_greedy_follows_python(text_model, "def ")
    assert text == text_model.generate(25, prompt="def ", top_k=1, random_state=9)[0]


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_greedy_generation_of_other_cells_and_two_layers(cell):
    gen = SequenceGenerator(cell=cell, hidden_size=40, num_layers=2, max_iter=2,
                            learning_rate_init=0.01, random_state=0)
    gen.fit(load_text(max_chars=8000))
    _assert_greedy_follows_python(gen, "The ", n_tokens=20)


@pytest.mark.parametrize("top_k,top_p", [(3, None), (None, 0.5)])
def test_top_k_and_top_p_limit_the_choices(text_model, top_k, top_p):
    prompt = "The "
    classes = text_model.classifier_.classes_
    for seed in range(3):
        text = text_model.generate(20, prompt=prompt, temperature=1.0, top_k=top_k,
                                   top_p=top_p, random_state=seed)[0]
        ids = _generated_ids(text_model, prompt, text)
        for i in range(1 + len(prompt), len(ids)):
            proba = _next_token_proba(text_model, ids[:i])
            order = np.argsort(-proba, kind="stable")
            if top_k is not None:
                allowed = order[:top_k]
            else:  # smallest prefix holding top_p of the mass (float32 slack)
                cum = np.cumsum(proba[order])
                allowed = order[:np.searchsorted(cum, top_p - 1e-4) + 2]
            assert np.searchsorted(classes, ids[i]) in allowed


def test_token_id_sequences_and_perplexity(text_model):
    rng = np.random.default_rng(0)
    pattern = np.array([5, 6, 7, 8, 9])
    seqs = [np.tile(pattern, 6)[rng.integers(0, 5):][:20] for _ in range(60)]
    gen = SequenceGenerator(cell="gru", hidden_size=32, max_iter=30, learning_rate_init=0.02,
                            random_state=0).fit(seqs)
    out = gen.generate(10, prompt=[5, 6], temperature=0)[0]
    assert list(out[:5]) == [7, 8, 9, 5, 6]
    assert gen.perplexity(seqs[:5]) < 1.5
    held_out = load_text()[300000:303000]
    shuffled = "".join(np.random.default_rng(0).permutation(list(held_out)))
    assert text_model.perplexity(held_out) < text_model.perplexity(shuffled)
    assert text_model.perplexity(held_out) < len(text_model.vocabulary_)
    with pytest.raises(ValueError, match="vocabulary"):
        text_model.generate(5, prompt="\x00\x01")


def test_generator_and_forecaster_pickle(text_model):
    import pickle
    restored = pickle.loads(pickle.dumps(text_model))
    assert restored.generate(30, random_state=2) == text_model.generate(30, random_state=2)
    fc = Forecaster(lookback=8, max_iter=2, random_state=0).fit(mackey_glass(200))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fc)).predict(5), fc.predict(5))


def test_generation_arguments_are_checked(text_model):
    for kwargs in (dict(temperature=-1), dict(top_k=0), dict(top_p=1.5), dict(n_samples=0)):
        with pytest.raises(ValueError):
            text_model.generate(5, **kwargs)
    with pytest.raises(ValueError, match="without conditions"):
        text_model.generate(5, condition=np.zeros(3))


def test_captions_of_digit_images():
    X, _, captions = load_digits_sequences()
    features = X.reshape(len(X), -1)
    cap = SequenceGenerator(hidden_size=64, embedding_dim=16, max_iter=30,
                            learning_rate_init=0.01, batch_size=32,
                            random_state=0).fit(captions[:1400], conditions=features[:1400])
    predicted = [cap.generate(12, condition=f, temperature=0)[0] for f in features[1400:]]
    accuracy = np.mean([p == t for p, t in zip(predicted, captions[1400:])])
    assert accuracy >= 0.9
    batch = cap.generate(12, condition=features[1400:1404], n_samples=4, temperature=0)
    assert batch == predicted[:4]
    with pytest.raises(ValueError, match="condition"):
        cap.generate(5)


# ----- forecasting ----------------------------------------------------------------------------


def test_make_windows():
    X, Y = make_windows(np.arange(12.0).reshape(6, 2), lookback=2, horizon=3)
    assert X.shape == (2, 2, 2) and Y.shape == (2, 3, 2)
    np.testing.assert_array_equal(Y[1, 0], [6, 7])
    with pytest.raises(ValueError, match="too short"):
        make_windows(np.arange(3.0), lookback=3)


@pytest.mark.parametrize("strategy,horizon", [("recursive", 1), ("direct", 10)])
def test_mackey_glass_forecast_beats_naive(strategy, horizon):
    series = mackey_glass(1100)
    train, test = series[:1000], series[1000:1030]
    fc = Forecaster(lookback=24, horizon=horizon, strategy=strategy, max_iter=30,
                    hidden_size=32, random_state=0).fit(train)
    pred = fc.predict(len(test))
    assert pred.shape == test.shape
    mse = np.mean((pred - test) ** 2)
    naive = np.mean((train[-1] - test) ** 2)
    assert mse < 0.05 * naive, (mse, naive)


def test_forecaster_missing_values_multivariate_and_exogenous():
    series = mackey_glass(400)
    gappy = series.copy()
    gappy[::13] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Forecaster(lookback=8, max_iter=1).fit(gappy)
    fc = Forecaster(lookback=8, max_iter=2, missing="interpolate", random_state=0).fit(gappy)
    assert np.all(np.isfinite(fc.predict(3)))
    both = np.stack([series, np.roll(series, 5)], axis=1)
    exog = np.arange(400.0)[:, None]
    mv = Forecaster(lookback=8, max_iter=2, random_state=0).fit(both, X=exog)
    assert mv.predict(4, X_future=np.arange(400.0, 404.0)[:, None]).shape == (4, 2)
    with pytest.raises(ValueError, match="X_future"):
        mv.predict(4)
    assert mv.predict(2, series=both[:50], X=exog[:50],
                      X_future=np.zeros((2, 1))).shape == (2, 2)


# ----- data sets and the command ----------------------------------------------------------------


def test_embedded_datasets():
    X, y, captions = load_digits_sequences()
    assert X.shape == (1797, 8, 8) and 0 <= X.min() and X.max() <= 1
    assert captions[0] == "zero" and len(set(captions)) == 10
    text = load_text()
    assert len(text) > 100000 and "if" in text
    series = mackey_glass(500)
    assert series.shape == (500,) and 0.2 < series.min() < series.max() < 1.5
    assert not np.allclose(mackey_glass(200, seed=1), mackey_glass(200, seed=2))


def test_cli_info_and_demo(capsys, tmp_path):
    assert cli_main(["info"]) == 0
    assert "OpenMP" in capsys.readouterr().out
    assert cli_main(["demo", "--task", "classify"]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_cli_generate_and_train_on_user_files(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world. " * 200)
    assert cli_main(["generate", str(corpus), "--epochs", "2", "--hidden-size", "16",
                     "--n-tokens", "20", "--prompt", "hel"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2: loss" in out and "\nhel" in out
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(80, 6))
    csv = tmp_path / "data.csv"
    labels = np.where(rows.sum(axis=1) > 0, "pos", "neg")
    csv.write_text("\n".join([",".join(f"t{i}" for i in range(6)) + ",label"]
                             + [",".join(f"{v:.4f}" for v in r) + f",{lab}"
                                for r, lab in zip(rows, labels)]))
    model = tmp_path / "model.npz"
    assert cli_main(["train", str(csv), "--epochs", "3", "--save", str(model)]) == 0
    assert "classification" in capsys.readouterr().out and model.exists()


def test_cli_bench_smoke(tmp_path, capsys):
    assert cli_main(["bench", "--threads", "1", "--case", "gru,3,4,2,8", "--contenders",
                     "fastrnn", "numpy", "--reps", "1", "--min-seconds", "0.01",
                     "--out", str(tmp_path)]) == 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "GRU B=3 T=4 I=2 H=8" in report and "SGEMM" in report
    assert (tmp_path / "results.json").exists()
