"""fastrnn.benchmark's rivals compute what fastrnn computes (same weights), so
the timings compare like with like."""
import numpy as np
import pytest

from fastrnn.benchmark import (CONTENDERS, INFERENCE_ONLY, PEERS, main as bench_main,
                               random_weights)
from fastrnn.layers import STACKS


def _case(cell):
    return dict(cell=cell, B=3, T=5, I=4, H=8)


def _fastrnn_output(case, weights, X):
    stack = STACKS[case["cell"]](case["I"], case["H"])
    stack.load_state_dict(weights)
    return stack.forward(X)[0]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_onnx_model_equals_fastrnn_on_the_same_weights(cell):
    pytest.importorskip("onnxruntime", reason="onnxruntime is an optional benchmark rival")
    from fastrnn import _onnx
    case = _case(cell)
    weights = random_weights(case)
    X = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
    sess = _onnx.session(_onnx.rnn_model(cell, weights, case["H"]), threads=1)
    Y = sess.run(None, {"X": X})[0]
    np.testing.assert_allclose(Y, _fastrnn_output(case, weights, X), atol=1e-5)


def test_int8_rivals_stay_close_to_float32(torch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is an optional benchmark rival")
    from fastrnn import _onnx
    case = _case("lstm")
    weights = random_weights(case)
    X = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
    expected = _fastrnn_output(case, weights, X)
    sess = _onnx.session(_onnx.rnn_model("lstm", weights, case["H"]), 1, quantize=True)
    assert np.abs(sess.run(None, {"X": X})[0] - expected).max() < 0.05
    made = CONTENDERS["pytorch-int8"](case, 1, weights, X)
    assert set(made) == {"inference"}
    # reasons, not crashes, where a library has no int8 kernel
    assert isinstance(CONTENDERS["onnxruntime-int8"](_case("gru"), 1, weights, X), str)
    assert isinstance(CONTENDERS["pytorch-int8"](_case("rnn"), 1, weights, X), str)


def test_inference_only_contenders_are_not_float32_peers_twice():
    assert set(INFERENCE_ONLY) <= set(CONTENDERS)
    assert "onnxruntime" in PEERS and "pytorch-int8" not in PEERS


def test_bench_with_onnxruntime_contender(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is an optional benchmark rival")
    assert bench_main(["--threads", "1", "--case", "lstm,2,3,2,8", "--contenders", "fastrnn",
                       "onnxruntime", "--reps", "1", "--min-seconds", "0.01",
                       "--out", str(tmp_path)]) == 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "onnxruntime" in report


def test_a_worker_lets_its_thread_pools_spin_down_before_it_replies(monkeypatch):
    # the parent times the next contender as soon as a reply comes: a worker
    # that slept after replying left its spinning pools running meanwhile
    from fastrnn import benchmark

    events = []

    class Conn:
        def __init__(self, messages):
            self.messages = list(messages)

        def recv(self):
            return self.messages.pop(0)

        def send(self, answer):
            events.append(("send", answer))

    monkeypatch.setattr(benchmark.time, "sleep", lambda s: events.append(("sleep", s)))
    monkeypatch.setattr(benchmark, "time_once", lambda fn, min_seconds: 0.25)
    case = dict(cell="rnn", B=2, T=3, I=4, H=8)
    benchmark._worker(Conn([("build", case), ("time", "inference", 0.0), None]), "fastrnn", 1)
    assert events[0] == ("send", ["inference", "training"])
    assert events[1:] == [("sleep", benchmark.SPIN_DOWN_SECONDS), ("send", 0.25)]
    assert benchmark.SPIN_DOWN_SECONDS > 0


def test_results_warn_when_a_thread_count_did_not_get_its_cores():
    from fastrnn import benchmark

    def results(two_before, two_after):
        return {"sgemm_peak": {"1": 100.0, "2": two_before},
                "sgemm_peak_after": {"1": 100.0, "2": two_after}}

    assert benchmark.core_shortfalls(results(190.0, 185.0)) == []
    (warning,) = benchmark.core_shortfalls(results(108.5, 190.0))
    assert "1.08x" in warning and "2-thread rows are not reliable" in warning
    assert len(benchmark.core_shortfalls(results(190.0, 120.0))) == 1
    assert benchmark.core_shortfalls({"sgemm_peak": {"1": 100.0}}) == []
