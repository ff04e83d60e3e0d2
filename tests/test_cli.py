"""fastrnn.cli: the commands, end to end on small inputs."""
import numpy as np
import pytest

from fastrnn.cli import main as cli_main

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


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
