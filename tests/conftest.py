import os

import numpy as np
import pytest


def import_torch():
    """PyTorch is the oracle: skipped for users without it, a failure in CI
    (FASTRNN_REQUIRE_TORCH=1)."""
    try:
        import torch
    except ImportError:
        if os.environ.get("FASTRNN_REQUIRE_TORCH") == "1":
            pytest.fail("FASTRNN_REQUIRE_TORCH=1 but torch cannot be imported")
        pytest.skip("PyTorch is not installed; the oracle tests need it")
    return torch


@pytest.fixture
def torch():
    return import_torch()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
