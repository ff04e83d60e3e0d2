"""Layer calls whose W_hh fits one core's L2, or that give every thread 32
rows or more, split the batch rows among the threads (no barrier per step)
instead of the hidden units: the team each shape gets, and that both splits
and one thread give the same results."""
import os

import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import GRU, LSTM, RNN

CELLS = [("lstm", LSTM, {}), ("gru", GRU, {}), ("rnn_tanh", RNN, {}),
         ("rnn_relu", RNN, {"nonlinearity": "relu"})]
CELL_IDS = [c[0] for c in CELLS]

two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                              reason="a team of two needs two CPUs in this process's mask")


def _team(cell, B, T, I, H, n_threads=2, dtype=np.float32):
    return _kernels._layer_team(cell=_kernels.CELLS[cell], B=B, T=T, I=I, H=H,
                                n_threads=n_threads, dtype=dtype)


@two_cpus
def test_small_weights_split_rows_and_large_ones_split_units():
    assert _team("lstm", 32, 50, 8, 64) == (2, "rows")  # W_hh 64 KiB
    assert _team("lstm", 64, 100, 128, 128) == (2, "rows")  # 256 KiB
    assert _team("lstm", 48, 100, 128, 256) == (2, "units")  # 1 MiB: a slice per core's L2
    # ... unless every thread gets 32 rows or more (weights streamed from L3)
    assert _team("lstm", 64, 100, 128, 256) == (2, "rows")
    assert _team("lstm", 1, 150, 256, 256) == (2, "units")
    # float64 weights are twice the bytes: H=176 LSTM fits in float32 only
    assert _team("lstm", 48, 100, 8, 176)[1] == "rows"
    assert _team("lstm", 48, 100, 8, 176, dtype=np.float64)[1] == "units"
    # one block of rows, or too little work in all: one thread
    assert _team("lstm", 15, 100, 8, 64) == (1, "units")
    assert _team("lstm", 16, 4, 8, 16) == (1, "units")
    assert _team("lstm", 32, 50, 8, 64, n_threads=1) == (1, "units")
    # never more threads than blocks of rows
    assert _team("gru", 16, 200, 8, 64, n_threads=8) == (2, "rows")
    previous = _kernels._row_split(False)
    try:
        assert _team("lstm", 32, 50, 8, 64) == (1, "units")
    finally:
        _kernels._row_split(previous)


def _tolerance(name, expected, dtype):
    """float32 weight gradients are sums over every row of the batch, in the
    order of the GEMM that makes them: OpenBLAS's blocking changes with the
    rows each thread has (AVX2 CPUs; on AVX-512 fastrnn's own kernel keeps one
    order), so they differ in rounding, relative to the largest of them."""
    if dtype == np.float64:
        return dict(rtol=1e-12, atol=1e-12)
    if name == "grads":
        return dict(rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    return dict(rtol=1e-5, atol=1e-6)


def _train_and_infer(cls, kw, X, lengths, dtype, n_threads, row_split, H=64):
    previous = _kernels._row_split(row_split)
    try:
        stack = cls(X.shape[2], H, num_layers=2, bidirectional=True, dtype=dtype,
                    random_state=0, n_threads=n_threads, **kw)
        Y, state = stack.forward(X, lengths=lengths, training=True)
        dX, dstate = stack.backward(np.cos(Y), state.h)
        Y_infer, _ = stack.forward(X, lengths=lengths)
        return [Y, state.h, dX, dstate.h, stack.flat_grads.copy(), Y_infer]
    finally:
        _kernels._row_split(previous)


@two_cpus
@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_rows_units_and_one_thread_agree(cell, cls, kw, ragged, dtype, rng):
    # B=37: four full blocks of 8 rows and a partial one, dealt to 2 threads;
    # ragged lengths drop samples out of blocks step by step
    B, T, I = 37, 12, 5
    X = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B) if ragged else None
    assert _team(cell, B, T, 2 * 64, 64, dtype=dtype) == (2, "rows")  # layer 1's shape
    rows = _train_and_infer(cls, kw, X, lengths, dtype, 2, True)
    units = _train_and_infer(cls, kw, X, lengths, dtype, 2, False)  # one thread at this size
    one = _train_and_infer(cls, kw, X, lengths, dtype, 1, True)
    names = ["Y", "hN", "dX", "dh0", "grads", "Y inference"]
    for name, a, b, c in zip(names, rows, units, one):
        if dtype == np.float32 and name in ("Y", "hN", "Y inference"):
            np.testing.assert_array_equal(a, c, err_msg=name)  # every row sums in one order
        np.testing.assert_allclose(a, b, err_msg=name, **_tolerance(name, b, dtype))
        np.testing.assert_allclose(a, c, err_msg=name, **_tolerance(name, c, dtype))


@two_cpus
@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_row_groups_of_a_unit_split_agree_with_one_thread(cell, cls, kw, ragged, dtype, rng):
    # A team of more threads than unit slices (16 threads, H=256: 8 slices of
    # 32 units) shares each slice among threads with their own blocks of rows.
    # Capped at one slice, a team of two runs that way here: B=70 is eight
    # full blocks of 8 rows and a partial one, dealt round robin; ragged
    # lengths drop samples out of blocks step by step.
    B, T, I, H = 70, 6, 5, 256
    X = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B) if ragged else None
    previous_cap, previous_split = _kernels._unit_slices_cap(1), _kernels._row_split(False)
    try:
        assert _team(cell, B, T, I, H, dtype=dtype) == (2, "units")
        assert _kernels._layer_team(cell=_kernels.CELLS[cell], B=B, T=T, I=I, H=H, n_threads=2,
                                    dtype=dtype, slices=True)[2] == 1
        grouped = _train_and_infer(cls, kw, X, lengths, dtype, 2, False, H)
    finally:
        _kernels._unit_slices_cap(previous_cap)
        _kernels._row_split(previous_split)
    one = _train_and_infer(cls, kw, X, lengths, dtype, 1, True, H)
    names = ["Y", "hN", "dX", "dh0", "grads", "Y inference"]
    for name, a, c in zip(names, grouped, one):
        if dtype == np.float32 and name in ("Y", "hN", "Y inference"):
            np.testing.assert_array_equal(a, c, err_msg=name)  # every row sums in one order
        np.testing.assert_allclose(a, c, err_msg=name, **_tolerance(name, c, dtype))

