"""fastrnn.generator: the C sampling loop against the Python forward pass,
sampling options, token sequences, captioning, pickling."""
import pickle

import numpy as np
import pytest

from fastrnn import SequenceGenerator
from fastrnn.datasets import load_digits_sequences, load_text
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


def test_generator_pickle(text_model):
    restored = pickle.loads(pickle.dumps(text_model))
    assert restored.generate(30, random_state=2) == text_model.generate(30, random_state=2)


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
    with pytest.raises(ValueError, match="fitted with conditions"):
        cap.generate(5)
    with pytest.raises(ValueError, match="features, expected 64"):
        cap.generate(5, condition=np.zeros(3))
    with pytest.raises(ValueError, match="3 conditions for n_samples=2"):
        cap.generate(5, condition=features[:3], n_samples=2)
