"""LSTM and RNN calls of 4 rows or more whose weights fit in L2 project their
inputs inside each step's packed kernel (csrc/rnn.c fr_fused_projection):
the same bits as projecting before the step loop, in every mode, and so as
a sample run alone (whose batch-1 call projects first)."""
import os

import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import GRU, LSTM, RNN

CELLS = [("lstm", LSTM, {}), ("gru", GRU, {}), ("rnn_tanh", RNN, {}),
         ("rnn_relu", RNN, {"nonlinearity": "relu"})]
CELL_IDS = [c[0] for c in CELLS]
packed = pytest.mark.skipif(not _kernels.packed_enabled(),
                            reason="no packed kernels on this CPU: every call uses BLAS")


def _fused(cell, B, I, H, dtype=np.float32):
    return _kernels._fused(cell=_kernels.CELLS[cell], B=B, I=I, H=H, dtype=dtype)


@packed
def test_which_calls_fuse_their_projection():
    assert _fused("lstm", 64, 128, 256)  # 1.5 MiB of W_ih and W_hh
    assert _fused("rnn_tanh", 4, 8, 64) and _fused("rnn_relu", 4, 8, 64)
    assert not _fused("gru", 64, 128, 256)  # its W_hh product stays apart (reset gate)
    assert not _fused("lstm", 3, 128, 256)  # batch-1 layout: W_ih read once, up front
    assert not _fused("lstm", 64, 512, 512)  # 8 MiB: re-read every step, it lost
    assert not _fused("lstm", 64, 128, 256, dtype=np.float64)  # 3 MiB in float64
    previous = _kernels._fused_projection(False)
    try:
        assert not _fused("lstm", 64, 128, 256)
    finally:
        _kernels._fused_projection(previous)


def _train_and_infer(cls, kw, X, lengths, dtype, n_threads, fused):
    previous = _kernels._fused_projection(fused)
    try:
        # H=40: a full panel of 32 units and a partial one of 8 per gate
        stack = cls(X.shape[2], 40, num_layers=2, bidirectional=True, dtype=dtype,
                    random_state=0, n_threads=n_threads, **kw)
        Y, state = stack.forward(X, lengths=lengths, training=True)
        dX, dstate = stack.backward(np.cos(Y), state.h)
        Y_infer, state_infer = stack.forward(X, lengths=lengths)
        kept = cls(X.shape[2], 40, num_layers=2, bidirectional=True, dtype=dtype,
                   random_state=0, n_threads=n_threads, **kw)
        kept.keep_packed_weights()
        Y_kept = [kept.forward(X, lengths=lengths)[0] for _ in range(2)]  # packing, reusing
        return [Y, state.h, dX, dstate.h, stack.flat_grads.copy(), Y_infer, state_infer.h,
                *Y_kept]
    finally:
        _kernels._fused_projection(previous)


@packed
@pytest.mark.parametrize("cell,cls,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_fused_and_projected_first_agree_bit_for_bit(cell, cls, kw, ragged, dtype, n_threads,
                                                     rng):
    if n_threads > len(os.sched_getaffinity(0)):
        pytest.skip("a team of two needs two CPUs in this process's mask")
    # B=19: two blocks of 8 rows and 3 more (the 8- and 4-row kernels, and
    # leftover rows); ragged lengths drop samples out of the blocks step by step
    B, T, I = 19, 9, 5
    X = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B) if ragged else None
    assert _fused(cell, B, I, 40, dtype) == (cell != "gru")
    fused = _train_and_infer(cls, kw, X, lengths, dtype, n_threads, True)
    first = _train_and_infer(cls, kw, X, lengths, dtype, n_threads, False)
    names = ["Y", "hN", "dX", "dh0", "grads", "Y inference", "hN inference", "Y packing",
             "Y kept pack"]
    for name, a, b in zip(names, fused, first):
        np.testing.assert_array_equal(a, b, err_msg=name)


@packed
@pytest.mark.parametrize("cell,cls,kw", [c for c in CELLS if c[0] != "gru"],
                         ids=[c for c in CELL_IDS if c != "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_a_sample_alone_equals_it_in_a_fused_batch(cell, cls, kw, dtype, rng):
    B, T, I, H = 12, 7, 6, 40
    X = rng.normal(size=(B, T, I)).astype(dtype)
    stack = cls(I, H, num_layers=2, dtype=dtype, random_state=0, n_threads=1, **kw)
    assert _fused(cell, B, I, H, dtype) and not _fused(cell, 1, I, H, dtype)
    Y, state = stack.forward(X)
    for b in (0, 5, 11):
        Y_b, state_b = stack.forward(X[b:b + 1])
        np.testing.assert_array_equal(Y_b[0], Y[b])
        np.testing.assert_array_equal(state_b.h[:, 0], state.h[:, b])
