"""The command line as a newcomer meets it: --version, --quiet, CSV without
pandas (header detected or --no-header), no progress bars in a log."""
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.cli import main as cli_main, read_csv


def write_csv(path, header, rows, labels):
    lines = ([",".join(header)] if header else []) + [
        ",".join(f"{v:.4f}" for v in r) + f",{lab}" for r, lab in zip(rows, labels)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def labelled_rows():
    rows = np.random.default_rng(0).normal(size=(60, 5))
    return rows, (rows.sum(axis=1) > 0).astype(int)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastrnn {fastrnn.__version__}"


def test_every_option_has_help():
    from fastrnn.cli import build_parser
    subparsers = build_parser()._subparsers._group_actions[0].choices
    for name in ("demo", "generate", "train"):
        for action in subparsers[name]._actions:
            assert action.help, f"fastrnn {name} {action.option_strings or action.dest}"


def test_read_csv_detects_header(tmp_path, labelled_rows):
    rows, labels = labelled_rows
    path = tmp_path / "with_header.csv"
    write_csv(path, [f"t{i}" for i in range(5)] + ["label"], rows, labels)
    names, data = read_csv(path)
    assert names[-1] == "label" and len(data) == len(rows)


def test_headerless_csv_keeps_its_first_row(tmp_path, labelled_rows):
    rows, labels = labelled_rows
    path = tmp_path / "no_header.csv"
    write_csv(path, None, rows, labels)
    names, data = read_csv(path)
    assert names == [str(i) for i in range(6)] and len(data) == len(rows)
    assert float(data[0][0]) == pytest.approx(rows[0, 0], abs=1e-4)
    # --no-header: a first row that looks like a header is still data
    labelled = tmp_path / "text_first_row.csv"
    labelled.write_text("a,b,x\n1,2,y\n")
    assert len(read_csv(labelled, header=False)[1]) == 2
    assert len(read_csv(labelled)[1]) == 1


BLOCK_PANDAS = """
import sys
class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ImportError("pandas is not installed")
sys.meta_path.insert(0, NoPandas())
from fastrnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_headerless_without_pandas(tmp_path, labelled_rows):
    rows, labels = labelled_rows
    path = tmp_path / "no_header.csv"
    write_csv(path, None, rows, labels)
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_PANDAS, "train", str(path), "--no-header", "--epochs",
         "2", "--hidden-size", "8", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "classification on 60 sequences of 5 steps" in result.stdout


def test_quiet_prints_results_only(tmp_path, capsys, labelled_rows):
    rows, labels = labelled_rows
    path = tmp_path / "data.csv"
    write_csv(path, None, rows, labels)
    assert cli_main(["train", str(path), "--epochs", "2", "--hidden-size", "8"]) == 0
    assert "epoch 2: loss" in capsys.readouterr().out
    assert cli_main(["train", str(path), "--epochs", "2", "--hidden-size", "8", "-q"]) == 0
    out = capsys.readouterr().out
    assert "epoch" not in out and "held-out accuracy" in out


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 40)
    result = subprocess.run(
        [sys.executable, "-m", "fastrnn.cli", "generate", str(corpus), "--epochs", "2",
         "--hidden-size", "8", "--n-tokens", "10"],
        capture_output=True, text=True, check=True)
    assert "epoch 2: loss" in result.stdout
    assert "\r" not in result.stderr and "batch/s" not in result.stderr + result.stdout
