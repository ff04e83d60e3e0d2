"""The float kernels come in one version per instruction set: the packed
recurrent kernels (AVX-512: panel_kernel_mr8, rows_apply_avx512; AVX2 + FMA:
panel_kernel_avx2, rows_apply_avx2) and the gate passes (csrc/dispatch.h's
FR_DISPATCHED, and rnn.c's AVX-512 LSTM pass). `_kernels._isa_cap` runs a
narrower version than the CPU's, so one machine checks them all: every
output is the same FMA chain in each version, so the forward gives the same
bits, and the baseline (BLAS steps, plain C passes) agrees to rounding."""
import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import GRU, LSTM, RNN

CELLS = [("lstm", LSTM, {}), ("gru", GRU, {}), ("rnn_tanh", RNN, {}),
         ("rnn_relu", RNN, {"nonlinearity": "relu"})]
CELL_IDS = [c[0] for c in CELLS]
BASE, AVX2, AVX512 = 0, 1, 2
CPU_LEVEL = _kernels._isa_level()


def _run(cls, kw, X, lengths, dtype, level):
    previous = _kernels._isa_cap(level)
    try:
        assert _kernels._isa_level() == min(level, CPU_LEVEL)
        # H=40: a full panel of 32 units and a partial one of 8 per gate
        stack = cls(X.shape[2], 40, num_layers=2, bidirectional=True, dtype=dtype,
                    random_state=0, n_threads=1, **kw)
        Y, state = stack.forward(X, lengths=lengths, training=True)
        dX, dstate = stack.backward(np.cos(Y), state.h)
        Y_infer, state_infer = stack.forward(X, lengths=lengths)
        forward = [Y, state.h, Y_infer, state_infer.h]
        return forward, [dX, dstate.h, stack.flat_grads.copy()]
    finally:
        _kernels._isa_cap(previous)


def _inputs(B, dtype, ragged, rng):
    X = rng.normal(size=(B, 7, 5)).astype(dtype)
    lengths = rng.integers(1, 8, B) if ragged else None
    return X, lengths


# B=1..3: the row layout (rows_apply); 5 and 37: blocks of rows and leftovers
SIZES = [1, 2, 3, 5, 37]


@pytest.mark.skipif(CPU_LEVEL < AVX512,
                    reason="no AVX-512 here: the AVX2 kernels are what every other test runs")
@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("B", SIZES)
def test_avx2_kernels_give_the_avx512_ones_bits(cell, cls, kw, dtype, B, rng):
    X, lengths = _inputs(B, dtype, ragged=B > 3, rng=rng)
    forward_512, backward_512 = _run(cls, kw, X, lengths, dtype, AVX512)
    forward_2, backward_2 = _run(cls, kw, X, lengths, dtype, AVX2)
    for name, a, b in zip(["Y", "hN", "Y inference", "hN inference"], forward_2, forward_512):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # the weight gradients: fastrnn's AVX-512 kernel against OpenBLAS (float32)
    for name, a, b in zip(["dX", "dh0", "grads"], backward_2, backward_512):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(), err_msg=name)


@pytest.mark.skipif(CPU_LEVEL < AVX2, reason="no AVX2 and FMA here: only the baseline runs")
@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("B", SIZES)
def test_avx2_kernels_agree_with_the_baseline(cell, cls, kw, dtype, ragged, B, rng):
    X, lengths = _inputs(B, dtype, ragged, rng)
    base = _run(cls, kw, X, lengths, dtype, BASE)
    avx2 = _run(cls, kw, X, lengths, dtype, AVX2)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for a, b in zip(avx2[0] + avx2[1][:2], base[0] + base[1][:2]):
        np.testing.assert_allclose(a, b, **tol)
    grads_tol = dict(tol, atol=tol["atol"] * max(1.0, np.abs(base[1][2]).max()))
    np.testing.assert_allclose(avx2[1][2], base[1][2], **grads_tol)


def test_the_cap_is_clamped_and_restored():
    previous = _kernels._isa_cap(-5)
    try:
        assert _kernels._isa_level() == BASE and not _kernels.packed_enabled()
        assert _kernels._isa_cap(99) == BASE
        assert _kernels._isa_level() == CPU_LEVEL
    finally:
        _kernels._isa_cap(previous)
    assert _kernels._isa_level() == CPU_LEVEL
