"""fastrnn: LSTM, GRU and RNN training and inference on CPUs, fast, with a
scikit-learn API. See README.md."""
__version__ = "0.1.0"

from fastrnn._config import show_config, build_info  # noqa: E402
from fastrnn.layers import GRU, LSTM, RNN  # noqa: E402

__all__ = ["__version__", "show_config", "build_info", "LSTM", "GRU", "RNN"]
