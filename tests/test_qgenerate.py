"""Generation with reduced weights (fr_qgenerate, SequenceGenerator.generate
with inference_dtype): the C loop against a NumPy reference of the same
quantized arithmetic step by step, the AVX-512 path against the portable one,
seeds, batching, errors, and the text quality of a trained generator."""
import numpy as np
import pytest

from fastrnn import SequenceGenerator, _kernels, _quantize, reference
from fastrnn.datasets import load_text
from fastrnn.generator import BOUNDARY

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

KINDS = ("int8", "bfloat16")
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def _tiny_model(cell, kind, vocab=7, E=3, H=5, L=2, n_out=None, seed=0):
    """Random float32 weights of a tiny generator and their reduced copies
    (W_hh in recurrent_kind's kind, as a reduced network keeps it)."""
    rng = np.random.default_rng(seed)
    G, n_out = _kernels.gates(cell), n_out or vocab
    model = dict(cell=cell, embedding=rng.normal(size=(vocab, E)).astype(np.float32),
                 head_b=rng.normal(size=n_out).astype(np.float32) * 0.1,
                 out_tokens=np.arange(max(n_out, 2), dtype=np.int32) % vocab)
    W_head = rng.normal(size=(n_out, H)).astype(np.float32)
    model["W_ih"] = [rng.normal(size=(G * H, E if l == 0 else H)).astype(np.float32)
                     for l in range(L)]
    model["W_hh"] = [rng.normal(size=(G * H, H)).astype(np.float32) * 0.5 for _ in range(L)]
    model["b_ih"] = [rng.normal(size=G * H).astype(np.float32) * 0.1 for _ in range(L)]
    model["b_hh"] = [rng.normal(size=G * H).astype(np.float32) * 0.1 for _ in range(L)]
    reduced = dict(model, head_W=_quantize.ReducedWeight(W_head, kind),
                   W_ih=[_quantize.ReducedWeight(w, kind) for w in model["W_ih"]],
                   W_hh=[_quantize.ReducedWeight(w, _quantize.recurrent_kind(w, kind))
                         for w in model["W_hh"]])
    return reduced


def _qgenerate(m, prompt, n_new, temperature=0.0, top_k=0, top_p=1.0, seed=0, h0=None,
               c0=None, n_threads=1):
    """(tokens, logits) of _kernels.qgenerate with the model dict m."""
    n_out = m["head_W"].rows
    logits = np.full((len(prompt), n_new, n_out), np.nan, np.float32)
    args = {k: v for k, v in m.items() if k != "cell"}
    out = _kernels.qgenerate(cell=_kernels.CELLS[m["cell"]], **args, prompt=prompt, h0=h0,
                             c0=c0, n_new=n_new, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed, n_threads=n_threads, logits=logits)
    return out, logits


def _reference_greedy(m, prompt, n_new, h0, c0):
    """The same arithmetic in NumPy, one step at a time: reduced products
    (reference_matmul) with float32 gate math, head, greedy pick."""
    L = len(m["W_hh"])
    h = [h0[l].copy() for l in range(L)]
    c = [c0[l].copy() for l in range(L)] if m["cell"] == "lstm" else [None] * L
    feed, tokens, logits = prompt[:, 0], [], []
    for step in range(prompt.shape[1] - 1 + n_new):
        x = m["embedding"][feed]
        for l in range(L):
            h[l], c[l] = reference.cell_step(m["cell"], x, h[l], c[l], m["W_ih"][l],
                                             m["W_hh"][l], m["b_ih"][l], m["b_hh"][l],
                                             matmul=_quantize.reference_matmul)
            h[l] = h[l].astype(np.float32)
            c[l] = None if c[l] is None else c[l].astype(np.float32)
            x = h[l]
        if step + 1 < prompt.shape[1]:
            feed = prompt[:, step + 1]
            continue
        z = _quantize.reference_matmul(x, m["head_W"]) + m["head_b"]
        feed = m["out_tokens"][np.argmax(z, axis=1)]
        tokens.append(feed)
        logits.append(z)
    return np.stack(tokens, axis=1), np.stack(logits, axis=1)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_samples, n_new", [(1, 3), (2, 9)])  # no table / table
def test_greedy_generation_equals_reference_arithmetic(cell, kind, n_samples, n_new,
                                                      quant_path):
    m = _tiny_model(cell, kind, seed=CELLS.index(cell))
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, 7, size=(n_samples, 3)).astype(np.int32)
    h0 = rng.normal(size=(2, n_samples, 5)).astype(np.float32)
    c0 = rng.normal(size=(2, n_samples, 5)).astype(np.float32)
    tokens, logits = _qgenerate(m, prompt, n_new, h0=h0, c0=c0)
    ref_tokens, ref_logits = _reference_greedy(m, prompt, n_new, h0, c0)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_binary_head_and_token_map(kind):
    """A one-output head is a sigmoid head over out_tokens[0], out_tokens[1]."""
    m = _tiny_model("gru", kind, n_out=1)
    m["out_tokens"] = np.array([4, 2], np.int32)
    prompt = np.array([[1, 3]], np.int32)
    h0 = np.zeros((2, 1, 5), np.float32)
    tokens, logits = _qgenerate(m, prompt, 6, h0=h0)
    assert set(tokens.ravel()) <= {2, 4}
    np.testing.assert_array_equal(tokens[0], np.where(logits[0, :, 0] > 0, 2, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_dimension_weights_stay_float32_in_generation(kind):
    """REDUCED_MIN_DIM in the C loop: layer 0's W_ih with E=3 columns and a
    3-token head run float32 beside the reduced W_hh, as the reference."""
    m = _tiny_model("lstm", kind, vocab=3)
    W_head = m["head_W"].dequantized()
    m = dict(m, head_W=_quantize.ReducedWeight(W_head, _quantize.weight_kind(W_head, kind)))
    m["W_ih"] = [_quantize.ReducedWeight(w.dequantized(), _quantize.weight_kind(w.values, kind))
                 for w in m["W_ih"]]
    assert [w.kind for w in m["W_ih"]] == ["float32", kind] and m["head_W"].kind == "float32"
    prompt = np.array([[1, 2, 0]], np.int32)
    h0 = c0 = np.zeros((2, 1, 5), np.float32)
    tokens, logits = _qgenerate(m, prompt, 5, h0=h0, c0=c0)
    ref_tokens, ref_logits = _reference_greedy(m, prompt, 5, h0, c0)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)


def _medium_model(kind):
    return _tiny_model("lstm", kind, vocab=40, E=24, H=70, L=2, seed=3)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_equals_portable_path(kind, isa_cap):
    m = _medium_model(kind)
    prompt = np.array([[0, 5, 9], [1, 2, 3], [7, 7, 7]], np.int32)
    fast = _qgenerate(m, prompt, 30, temperature=1.0, seed=4)
    _kernels.qforce_portable(True)
    try:
        portable = _qgenerate(m, prompt, 30, temperature=1.0, seed=4)
    finally:
        _kernels.qforce_portable(False)
    np.testing.assert_array_equal(fast[0], portable[0])
    np.testing.assert_array_equal(fast[1], portable[1])


@pytest.mark.parametrize("kind", KINDS)
def test_seeds_batches_and_threads(kind):
    m = _medium_model(kind)
    prompt = np.tile(np.array([[0, 5]], np.int32), (4, 1))
    a, _ = _qgenerate(m, prompt, 50, temperature=1.0, top_k=10, top_p=0.9, seed=11)
    b, _ = _qgenerate(m, prompt, 50, temperature=1.0, top_k=10, top_p=0.9, seed=11,
                      n_threads=2)
    c, _ = _qgenerate(m, prompt, 50, temperature=1.0, top_k=10, top_p=0.9, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(row) for row in a}) > 1  # each sample has its own stream
    alone, _ = _qgenerate(m, prompt[:1], 50, temperature=1.0, top_k=10, top_p=0.9, seed=11)
    np.testing.assert_array_equal(alone[0], a[0])  # a sample does not see the others


def test_top_k_one_is_greedy():
    m = _medium_model("int8")
    prompt = np.array([[3, 1]], np.int32)
    greedy, _ = _qgenerate(m, prompt, 40)
    top1, _ = _qgenerate(m, prompt, 40, temperature=2.0, top_k=1, seed=5)
    np.testing.assert_array_equal(greedy, top1)


def test_qgenerate_argument_errors():
    m = _tiny_model("lstm", "int8")
    prompt = np.array([[1, 2]], np.int32)
    with pytest.raises(ValueError, match="float32 model"):
        _qgenerate(dict(m, embedding=m["embedding"].astype(np.float64)), prompt, 3)
    wrong = _quantize.ReducedWeight(np.ones((20, 4), np.float32), "int8")
    with pytest.raises(ValueError, match="layer 0"):
        _qgenerate(dict(m, W_ih=[wrong, m["W_ih"][1]]), prompt, 3)
    with pytest.raises(ValueError):
        _qgenerate(m, np.array([[1, 9]], np.int32), 3)  # token outside the vocabulary
    with pytest.raises(ValueError, match="logits"):
        _kernels.qgenerate(cell=_kernels.CELLS["lstm"],
                           **{k: v for k, v in m.items() if k != "cell"}, prompt=prompt,
                           h0=None, c0=None, n_new=3, temperature=0.0, top_k=0, top_p=1.0,
                           seed=0, logits=np.zeros((1, 2, 7), np.float32))


# ----- SequenceGenerator ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pydoc_model():
    text = load_text(max_chars=20000)
    gen = SequenceGenerator(hidden_size=64, num_layers=2, max_iter=4, random_state=0)
    return gen.fit(text[:16000]), text[16000:]


def _greedy_next_from_forward(gen, ids, condition=None):
    proba = gen.classifier_._predict_proba_conditioned(np.asarray(ids)[None], condition)
    return gen.classifier_.classes_[np.argmax(proba[0][-1])]


def _assert_follows_reduced_forward(gen, kind, prompt, text, condition=None):
    gen.classifier_.set_params(inference_dtype=kind)
    try:
        ids = [BOUNDARY] + list(gen._encode(prompt + text))
        for i in range(1 + len(prompt), len(ids)):
            assert _greedy_next_from_forward(gen, ids[:i], condition) == ids[i]
    finally:
        gen.classifier_.set_params(inference_dtype=None)


@pytest.mark.parametrize("kind", KINDS)
def test_reduced_generation_follows_the_reduced_forward_pass(pydoc_model, kind):
    """Per-row quantization makes each token's products independent of how the
    sequence is batched: the C loop's greedy text is the reduced network's
    argmax chain."""
    gen, _ = pydoc_model
    text = gen.set_params(inference_dtype=kind).generate(20, prompt="def ", temperature=0)[0]
    gen.set_params(inference_dtype=None)
    _assert_follows_reduced_forward(gen, kind, "def ", text)


@pytest.mark.parametrize("kind", KINDS)
def test_conditioned_reduced_generation(kind):
    """Captioning: the condition's initial state feeds the reduced loop."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 4))
    captions = ["pos" if f[0] > 0 else "neg" for f in features]
    cap = SequenceGenerator(hidden_size=16, embedding_dim=8, max_iter=5,
                            learning_rate_init=0.02, random_state=0, inference_dtype=kind)
    cap.fit(captions, conditions=features)
    single = [cap.generate(5, condition=f, temperature=0)[0] for f in features[:4]]
    assert cap.generate(5, condition=features[:4], n_samples=4, temperature=0) == single
    for f, text in zip(features[:4], single):
        _assert_follows_reduced_forward(cap, kind, "", text, condition=f[None])


def test_reduced_generation_keeps_the_text_quality(pydoc_model):
    """The next character picked greedily after held-out prompts: the reduced
    generators pick fp32's choice almost always; sampled text stays seeded."""
    gen, held_out = pydoc_model
    held_out = "".join(ch for ch in held_out if ch in gen.token_index_)
    prompts = [held_out[i:i + 24] for i in range(0, 24 * 40, 24)]
    picks = {}
    for dtype in (None,) + KINDS:
        gen.set_params(inference_dtype=dtype)
        picks[dtype] = [gen.generate(1, prompt=p, temperature=0)[0] for p in prompts]
        again = gen.generate(60, prompt="The ", random_state=2)
        assert again == gen.generate(60, prompt="The ", random_state=2)
    gen.set_params(inference_dtype=None)
    for kind in KINDS:
        agree = np.mean([a == b for a, b in zip(picks[kind], picks[None])])
        assert agree >= 0.9, (kind, agree)


def test_generator_refuses_reduced_float64_and_unknown_dtypes():
    gen = SequenceGenerator(hidden_size=8, embedding_dim=4, seq_len=8, max_iter=1,
                            dtype="float64", random_state=0).fit("abcabcabd " * 5)
    gen.generate(5, prompt="ab", random_state=0)
    for kind in KINDS:
        gen.set_params(inference_dtype=kind)
        with pytest.raises(ValueError, match="float32 model"):
            gen.generate(5, prompt="ab", random_state=0)
    gen.set_params(inference_dtype="int4")
    with pytest.raises(ValueError, match="inference_dtype"):
        gen.generate(5, prompt="ab", random_state=0)


def test_benchmark_generation_contenders_with_reduced_weights():
    from fastrnn.benchmark import generation_fastrnn, generation_fastrnn_reduced
    fp32 = generation_fastrnn(1)()
    for kind in KINDS:
        tokens = generation_fastrnn_reduced(1, kind)()
        assert tokens.shape == fp32.shape and tokens.min() >= 0
