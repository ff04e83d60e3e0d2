"""fastrnn.cbench: the C timing loops run, and the report is what it says."""
import json

import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.cbench import CELLS, ragged_lengths, run_case
from fastrnn.cli import main as cli_main


def test_c_timing_loop_times_every_pass_of_every_cell():
    for cell in CELLS:
        t = _kernels.bench_layer(cell=_kernels.CELLS[cell], B=3, T=4, I=2, H=8, reps=2)
        assert set(t) == {"forward_train", "backward", "forward_infer"}
        assert all(0 < v < 10 for v in t.values()), t


def test_c_timing_loop_refuses_bad_arguments():
    with pytest.raises(ValueError):
        _kernels.bench_layer(cell=0, B=0, T=4, I=2, H=8)
    with pytest.raises(ValueError):
        _kernels.bench_layer(cell=0, B=2, T=4, I=2, H=8, reps=0)
    with pytest.raises(ValueError):  # a length past T
        _kernels.bench_layer(cell=0, B=2, T=4, I=2, H=8, lengths=np.array([5, 1], np.int32))
    with pytest.raises(ValueError):
        _kernels.bench_sgemm(n=0)


def test_ragged_lengths_fill_about_a_third():
    lengths = ragged_lengths(64, 200)
    assert lengths.min() >= 1 and lengths.max() <= 200
    assert 0.2 < lengths.sum() / (64 * 200) < 0.45


def test_run_case_reports_flops_over_valid_steps_only():
    shape = dict(B=6, T=10, I=3, H=8)
    dense = run_case("gru", shape, reps=1, peak=100.0)
    ragged = run_case("gru", shape, reps=1, ragged=True, peak=100.0)
    assert dense["fill"] == 1 and ragged["fill"] == pytest.approx(
        ragged_lengths(6, 10).sum() / 60)
    for row in (dense, ragged):
        flops = 2 * 3 * 8 * (3 + 8) * 60 * row["fill"]
        fwd = row["c_seconds"]["forward_train"]
        assert row["gflops"]["forward_train"] == pytest.approx(flops / fwd / 1e9)
        assert row["share_of_sgemm"]["backward"] == pytest.approx(
            row["gflops"]["backward"] / 100.0)
        assert row["python_overhead"]["forward_infer"] == pytest.approx(
            row["python_seconds"]["forward_infer"] / row["c_seconds"]["forward_infer"] - 1)


def test_cli_cbench_smoke_with_json(tmp_path, capsys):
    out = tmp_path / "cbench.json"
    cli_main(["cbench", "--sizes", "tiny", "--cells", "lstm", "rnn_relu", "--reps", "1",
              "--threads", "1", "2", "--no-generation", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "SGEMM" in printed and "forward_train" in printed and "ragged fill" in printed
    report = json.loads(out.read_text())
    assert [(c["cell"], c["threads"], c["ragged"]) for c in report["cases"]] == [
        (cell, t, r) for t in (1, 2) for cell in ("lstm", "rnn_relu") for r in (False, True)]
    assert all(c["sgemm_gflops"] > 0 for c in report["cases"])
