"""fastrnn: LSTM, GRU and RNN training and inference on CPUs, fast, with a
scikit-learn API. See README.md."""
__version__ = "0.1.0"

from fastrnn import plot  # noqa: E402  (fastrnn.plot.attributions; matplotlib on first use)
from fastrnn._config import build_info, show_config  # noqa: E402
from fastrnn.estimators import (  # noqa: E402
    FastGRU, FastGRUClassifier, FastGRURegressor, FastLSTM, FastLSTMClassifier,
    FastLSTMRegressor, FastRNN, FastRNNClassifier, FastRNNRegressor, TrainingDivergedError, load)
from fastrnn.forecaster import Forecaster, make_windows  # noqa: E402
from fastrnn.generator import SequenceGenerator  # noqa: E402
from fastrnn.layers import GRU, LSTM, RNN  # noqa: E402
from fastrnn.persistence import ModelFileError  # noqa: E402
from fastrnn.preprocessing import SequenceScaler  # noqa: E402
from fastrnn.seq2seq import Seq2Seq  # noqa: E402

__all__ = [
    "__version__", "show_config", "build_info", "load", "LSTM", "GRU", "RNN",
    "FastLSTM", "FastGRU", "FastRNN", "FastLSTMClassifier", "FastLSTMRegressor",
    "FastGRUClassifier", "FastGRURegressor", "FastRNNClassifier", "FastRNNRegressor",
    "TrainingDivergedError", "ModelFileError", "SequenceGenerator", "Forecaster",
    "make_windows", "SequenceScaler", "Seq2Seq",
]
