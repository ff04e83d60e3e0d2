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


@pytest.fixture(params=["fast", "portable"])
def quant_path(request):
    """Run a reduced-precision test on the AVX-512 kernels (where the CPU has
    them) and on the portable C path."""
    from fastrnn import _kernels
    _kernels.qforce_portable(request.param == "portable")
    yield request.param
    _kernels.qforce_portable(False)


@pytest.fixture
def portable():
    """A function running fn() with the AVX-512 fast paths off
    (_kernels._force_portable); restores them after the test."""
    from fastrnn import _kernels

    def run(fn):
        _kernels._force_portable(True)
        try:
            return fn()
        finally:
            _kernels._force_portable(False)
    yield run
    _kernels._force_portable(False)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def small_task():
    """120 sequences of 6 steps, 3 features; label: is the first feature's sum > 0."""
    X = np.random.default_rng(5).normal(size=(120, 6, 3))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    return X, y
