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


@pytest.fixture(params=["fast", "avx2", "portable"])
def quant_path(request):
    """Run a reduced-precision test on the CPU's fastest kernels (AVX512-VNNI
    / BF16, or AVX2's), on the AVX2 kernels (the cap
    _kernels._isa_cap(1): an AVX-512 CPU runs them too; skipped without
    AVX2) and on the portable C path."""
    from fastrnn import _kernels
    if request.param == "avx2" and _kernels._isa_level() < 1:
        pytest.skip("no AVX2 and FMA on this CPU")
    previous = _kernels._isa_cap(1) if request.param == "avx2" else None
    _kernels.qforce_portable(request.param == "portable")
    yield request.param
    _kernels.qforce_portable(False)
    if previous is not None:
        _kernels._isa_cap(previous)


@pytest.fixture(params=[2, 1], ids=["fastest", "avx2"])
def isa_cap(request):
    """Run a test with the kernels' instruction set capped at AVX-512 (so the
    CPU's best) and at AVX2 (_kernels._isa_cap: an AVX-512 CPU runs the AVX2
    kernels); skipped where the cap leaves only the portable C (no AVX2)."""
    from fastrnn import _kernels
    previous = _kernels._isa_cap(request.param)
    try:
        if _kernels._isa_level() < 1:
            pytest.skip("no AVX2 under this CPU and cap: only the portable path runs")
        yield request.param
    finally:
        _kernels._isa_cap(previous)


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
