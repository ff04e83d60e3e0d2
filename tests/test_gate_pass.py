"""The float activations (csrc/rnn.c fr_one_plus_expf) and the LSTM gate pass
built on them: AVX-512 CPUs run fr_lstm_forward_row_avx512, which performs the
portable pass's roundings in the same order and so gives the same bits;
_kernels._force_portable(True) turns it off for the comparison."""
import os

import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import LSTM

avx512 = pytest.mark.skipif(not _kernels._lstm_gate_pass_avx512(),
                            reason="no AVX-512 here: every LSTM step runs the portable pass")


def _ulps(got, exact):
    """|got - exact| in units in the last place of exact rounded to float32."""
    ref = exact.astype(np.float32)
    ulp = np.spacing(np.abs(ref)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / ulp


def test_float_sigmoid_is_within_4_ulp_wherever_it_is_a_normal_number():
    # every 97th float32 in [-80, 80] (sigmoid(-80) = 1.8e-35 is still normal)
    magnitudes = np.arange(0, int(np.float32(80).view(np.int32)), 97).astype(np.int32)
    x = magnitudes.view(np.float32)
    x = np.concatenate([x, -x])
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.max(_ulps(_kernels.sigmoid_f32(x), exact)) <= 4


def test_float_tanh_is_within_4_ulp_away_from_zero_and_3e_7_near_it():
    x = np.linspace(-20, 20, 400001).astype(np.float32)
    exact, got = np.tanh(x.astype(np.float64)), _kernels.tanh_f32(x)
    far = np.abs(x) >= 0.55  # |tanh| >= 0.5: 1 - 2 / (1 + e^2x) loses nothing
    assert np.max(_ulps(got[far], exact[far])) <= 4
    assert np.max(np.abs(got - exact)) <= 3e-7  # near 0 the subtraction's rounding


def _lstm_outputs(H, X, lengths, n_threads):
    stack = LSTM(X.shape[2], H, dtype=np.float32, random_state=0, n_threads=n_threads)
    # weights up to ~5: preactivations past the clamps (|x| > 88) as well as near 0
    stack.load_state_dict({k: v * 30 for k, v in stack.state_dict().items()})
    Y, state = stack.forward(X, lengths=lengths, training=True)
    dX, dstate = stack.backward(np.cos(Y), state.h)
    Y_infer, state_infer = stack.forward(X, lengths=lengths)
    return {"Y": Y, "hN": state.h, "cN": state.c, "dX": dX, "dh0": dstate.h,
            "grads": stack.flat_grads.copy(), "Y inference": Y_infer,
            "cN inference": state_infer.c}


@avx512
# H=16: one masked vector; 37: a round of 32 and 5 units left; 64: two whole
# rounds; 80: two rounds and a last one whose second vector has no lanes
@pytest.mark.parametrize("H", [16, 37, 64, 80])
@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_avx512_gate_pass_equals_the_portable_one_bit_for_bit(H, ragged, n_threads, portable,
                                                              rng):
    if n_threads > len(os.sched_getaffinity(0)):
        pytest.skip("a team of two needs two CPUs in this process's mask")
    # B=9: the 8-row block kernel and a leftover row; inputs up to ~20
    X = (rng.normal(size=(9, 6, 7)) * 5).astype(np.float32)
    lengths = rng.integers(1, 7, 9) if ragged else None
    fast = _lstm_outputs(H, X, lengths, n_threads)
    slow = portable(lambda: _lstm_outputs(H, X, lengths, n_threads))
    assert np.any(np.abs(fast["Y"]) > 0.999)  # some units saturated
    for name in fast:
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
