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


def test_onnx_model_declares_the_oldest_ir_version_of_its_opset():
    # onnx writes its newest IR version by default, which older onnxruntime
    # releases refuse: the model must not depend on the onnx package's age
    onnx = pytest.importorskip("onnx", reason="onnx is an optional benchmark rival")
    from fastrnn import _onnx
    model = _onnx.rnn_model("gru", random_weights(_case("gru")), 8)
    assert model.ir_version == onnx.helper.find_min_ir_version_for(model.opset_import)
    assert model.ir_version < onnx.IR_VERSION


def test_a_contender_that_fails_to_build_becomes_a_note(monkeypatch):
    import multiprocessing
    import threading

    from fastrnn import benchmark

    def broken(case, threads, weights, X):
        raise RuntimeError("Unsupported model IR version: 14\nsecond line")

    monkeypatch.setitem(benchmark.CONTENDERS, "onnxruntime", broken)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the worker sets it; restored after
    parent, child = multiprocessing.Pipe()
    worker = threading.Thread(target=benchmark._worker, args=(child, "onnxruntime", 1))
    worker.start()
    parent.send(("build", _case("lstm")))
    answer = parent.recv()
    parent.send(None)
    worker.join(timeout=30)
    assert answer == ("onnxruntime: failed to build "
                      "(RuntimeError: Unsupported model IR version: 14)")
    assert not worker.is_alive()


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


def test_a_run_stopped_part_way_keeps_the_cases_it_measured(tmp_path, monkeypatch):
    import json

    from fastrnn import benchmark
    real_run_case, calls = benchmark.run_case, []

    def stopped_at_the_second_case(*args):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_case(*args)

    monkeypatch.setattr(benchmark, "run_case", stopped_at_the_second_case)
    with pytest.raises(KeyboardInterrupt):
        bench_main(["--threads", "1", "--case", "gru,2,3,2,8", "--case", "rnn,2,3,2,8",
                    "--contenders", "fastrnn", "--reps", "1", "--min-seconds", "0.01",
                    "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["complete"] is False
    assert {r["cell"] for r in saved["rows"]} == {"gru"}
    assert {r["mode"] for r in saved["rows"]} == {"training", "inference"}
