"""The weight gradients' product (dW += dG^T [X | h]): float32 runs fastrnn's
own kernel on AVX-512 CPUs (csrc/rnn.c fr_weight_grad_avx512) for gradients
of up to 4 MiB, float64 and larger ones BLAS. Checked against the same stack
in float64 (BLAS's dgemm) at shapes that reach every edge of the kernel: row
blocks of C short of 8 (G*H not a multiple of 8), columns short of a vector
and of a panel, more rows than one chunk of k (128), more columns than one
block of C (256), ragged batches, and two threads splitting C's rows."""
import os

import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import GRU, LSTM, RNN

CELLS = [("lstm", LSTM), ("gru", GRU), ("rnn_tanh", RNN)]
# (B, T, I, H): G*H of 20 / 15 / 5 rows (blocks of 8 and a remainder); I=300
# crosses a 256-column block and ends mid-vector; B*T = 315 > 2 chunks of k
SHAPES = [(7, 45, 300, 5), (3, 50, 17, 37), (9, 4, 1, 40)]


def _grads(cls, X, lengths, dtype, n_threads, state):
    stack = cls(X.shape[2], state["H"], dtype=dtype, n_threads=n_threads)
    stack.load_state_dict(state["weights"])
    Y, _ = stack.forward(X.astype(dtype), lengths=lengths, training=True)
    stack.zero_grad()
    stack.backward(np.cos(Y.astype(np.float64)).astype(dtype))
    return {name: g.astype(np.float64) for name, g in stack.grads.items()}


@pytest.mark.parametrize("cell,cls", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("shape", SHAPES, ids=["tails", "odd", "tiny"])
@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_float32_weight_grads_match_float64_blas(cell, cls, shape, ragged, n_threads, rng):
    if n_threads == 2 and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("a team of two needs two CPUs in this process's mask")
    B, T, I, H = shape
    X = rng.normal(size=(B, T, I))
    lengths = rng.integers(1, T + 1, B) if ragged else None
    weights = cls(I, H, random_state=0).state_dict()
    state = {"H": H, "weights": weights}
    got = _grads(cls, X, lengths, np.float32, n_threads, state)
    want = _grads(cls, X, lengths, np.float64, 1, state)
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        scale = np.abs(want[name]).max() + 1e-12
        np.testing.assert_allclose(got[name] / scale, want[name] / scale, atol=2e-5,
                                   err_msg=name)


def _cpu_has_avx512f():
    from numpy._core._multiarray_umath import __cpu_features__
    return __cpu_features__.get("AVX512F", False)


def test_the_kernel_runs_for_float32_up_to_4_mib():
    lstm = _kernels.CELLS["lstm"]
    if not _cpu_has_avx512f():
        assert not _kernels._weight_grad_kernel(cell=lstm, I=8, H=64)
        pytest.skip("no AVX-512 here: BLAS computes every weight gradient")
    assert _kernels._weight_grad_kernel(cell=lstm, I=300, H=5)
    assert _kernels._weight_grad_kernel(cell=lstm, I=128, H=256)  # 1.5 MiB
    assert not _kernels._weight_grad_kernel(cell=lstm, I=512, H=512)  # 8 MiB
    assert not _kernels._weight_grad_kernel(cell=lstm, I=8, H=64, dtype=np.float64)
