"""bench/ragged_fit.py (issue 9's end-to-end fit benchmark) runs at its --small
size and reports what it promises: fit time per epoch, prediction time and
held-out accuracy for every contender, and the speed ratios. No timing is
checked (timings belong in benchmarks)."""
import importlib.util
import os

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "bench",
                      "ragged_fit.py")


@pytest.fixture(scope="module")
def ragged_fit():
    if not os.path.exists(SCRIPT):
        pytest.skip("bench/ is not beside tests/ (installed tests without it)")
    spec = importlib.util.spec_from_file_location("ragged_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_labels_follow_the_marker_counts(ragged_fit):
    seqs, labels = ragged_fit.make_task(300, 5, 40, np.random.default_rng(0))
    lengths = np.array([len(s) for s in seqs])
    assert lengths.min() >= 5 and lengths.max() <= 40 and len(set(lengths)) > 10
    a = np.array([np.sum(s == ragged_fit.MARKER_A) for s in seqs])
    b = np.array([np.sum(s == ragged_fit.MARKER_B) for s in seqs])
    assert np.all(a != b)
    np.testing.assert_array_equal(labels, (a > b).astype(int))
    assert 0.35 < labels.mean() < 0.65
    assert all(s.min() >= 0 and s.max() < ragged_fit.VOCAB for s in seqs)


def test_bucketed_batches_cover_every_sample_once_with_similar_lengths(ragged_fit):
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 400, 2000)
    batches = ragged_fit.bucketed_batches(lengths, 8, rng)  # 16 buckets
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(2000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b])
                             for b in ragged_fit.random_batches(lengths, 8, rng)])
    assert spread < random_spread / 5


def test_small_run_reports_every_contender(ragged_fit, torch, capsys):
    contenders = ["fastrnn", "pytorch_packed", "pytorch_naive", "pytorch_packed_fastrnn_init"]
    results = ragged_fit.main(["--small", "--epochs", "2", "--contenders", *contenders])
    assert set(results) == set(contenders)
    for r in results.values():
        assert len(r["epochs"]) == 2 and r["fit"] > 0 and r["predict"] > 0
        assert 0.0 <= r["accuracy"] <= 1.0
    out = capsys.readouterr().out
    assert "faster to fit than pytorch_packed" in out
    assert "held-out accuracy" in out


def test_the_pytorch_model_is_fastrnns_model(ragged_fit, torch):
    # started from fastrnn's weights, the PyTorch loop's model computes the
    # logits of fastrnn's network: the benchmark compares the same model
    from fastrnn.network import Network
    seqs, _ = ragged_fit.make_task(7, 1, 12, np.random.default_rng(2))
    model = ragged_fit.TorchTokenClassifier(torch, seed=3, init="fastrnn")
    net = Network("lstm", input_size=ragged_fit.EMBED, hidden_size=ragged_fit.HIDDEN,
                  output_size=1, vocab_size=ragged_fit.VOCAB,
                  random_state=np.random.default_rng(3))
    lengths = np.array([len(s) for s in seqs])
    padded = np.zeros((len(seqs), lengths.max()), np.int64)
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    expected = net.forward(padded, lengths=lengths)[:, 0]
    with torch.no_grad():
        logits = model.logits(seqs, np.arange(len(seqs))).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
