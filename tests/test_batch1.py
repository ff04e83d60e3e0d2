"""The batch-1 fast path (AVX-512 row kernel over row-layout panels, the
generation loop's projected-embedding table) against the portable packed
kernels it replaces, PyTorch, and itself in a bigger batch. The fast path is
on by default; _kernels._force_portable(True) turns it off."""
import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import GRU, LSTM, RNN, generation_args

STACKS = [(LSTM, {}), (GRU, {}), (RNN, {}), (RNN, {"nonlinearity": "relu"})]
STACK_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def _stack(cls, kw, I, H, dtype, n_threads=1, seed=0, **more):
    stack = cls(I, H, dtype=dtype, n_threads=n_threads, **kw, **more)
    rng = np.random.default_rng(seed)
    stack.load_state_dict({k: rng.uniform(-0.3, 0.3, v.shape).astype(dtype)
                           for k, v in stack.state_dict().items()})
    return stack


def _outputs(stack, X, lengths=None):
    Y, state = stack.forward(X, lengths=lengths)
    parts = state if isinstance(state, tuple) else (state,)
    return [Y] + [np.asarray(s) for s in parts if s is not None]


@pytest.mark.parametrize("cls,kw", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 2, 3])
def test_fast_forward_equals_portable_bit_for_bit(cls, kw, dtype, B, portable):
    # H=70: a partial panel and a partial group of panels; bidirectional: the
    # reverse direction; two layers: a hidden-size input
    stack = _stack(cls, kw, 9, 70, dtype, num_layers=2, bidirectional=True)
    X = np.random.default_rng(1).standard_normal((B, 7, 9)).astype(dtype)
    lengths = np.array([7, 3, 5][:B], np.int32) if B > 1 else None
    fast = _outputs(stack, X, lengths)
    slow = portable(lambda: _outputs(stack, X, lengths))
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls,kw", STACKS[:2], ids=STACK_IDS[:2])
def test_fast_forward_two_threads_equals_portable(cls, kw, portable):
    # W_hh over 512 KB: two threads, each with its slice of the gate rows
    stack = _stack(cls, kw, 5, 224, np.float32, n_threads=2)
    X = np.random.default_rng(2).standard_normal((1, 6, 5)).astype(np.float32)
    fast = _outputs(stack, X)
    slow = portable(lambda: _outputs(stack, X))
    one = _outputs(_stack(cls, kw, 5, 224, np.float32, n_threads=1), X)
    for a, b, c in zip(fast, slow, one):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls,kw", STACKS, ids=STACK_IDS)
def test_sample_alone_equals_sample_in_a_batch(cls, kw):
    # alone: the row kernel; in a batch of 9: the 8-row block kernel
    stack = _stack(cls, kw, 6, 40, np.float32)
    X = np.random.default_rng(3).standard_normal((9, 5, 6)).astype(np.float32)
    batch = _outputs(stack, X)
    for i in (0, 8):
        alone = _outputs(stack, X[i:i + 1])
        np.testing.assert_array_equal(alone[0][0], batch[0][i])  # Y (B, T, H)
        for a, b in zip(alone[1:], batch[1:]):  # states (layers, B, H)
            np.testing.assert_array_equal(a[:, 0], b[:, i])


def test_batch1_lstm_matches_torch(torch):
    stack = _stack(LSTM, {}, 11, 70, np.float32, num_layers=2)
    module = torch.nn.LSTM(11, 70, num_layers=2, batch_first=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in stack.state_dict().items()})
    X = np.random.default_rng(4).standard_normal((1, 13, 11)).astype(np.float32)
    with torch.no_grad():
        expected, (h, c) = module(torch.from_numpy(X))
    Y, (hN, cN) = stack.forward(X)
    np.testing.assert_allclose(Y, expected.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hN, h.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(cN, c.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls,kw", STACKS[:2], ids=STACK_IDS[:2])
def test_block_kernel_full_and_partial_panels_match_torch(cls, kw, torch):
    # B=17: two 8-row blocks and a leftover row; H=48: a whole panel of 32
    # units (stored straight from the registers) and a partial one of 16 (stored
    # through a copy) per gate; T=40 steps of gate rows prefetched before use
    stack = _stack(cls, kw, 12, 48, np.float32)
    module = getattr(torch.nn, cls.__name__)(12, 48, batch_first=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in stack.state_dict().items()})
    X = np.random.default_rng(6).standard_normal((17, 40, 12)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(X))[0].numpy()
    Y = _outputs(stack, X)[0]
    np.testing.assert_allclose(Y, expected, rtol=0, atol=2e-5)
    for i in (0, 16):
        np.testing.assert_array_equal(_outputs(stack, X[i:i + 1])[0][0], Y[i])


def _generate(cls, kw, dtype, H, n, n_threads, V=23, E=7, n_new=40):
    stack = _stack(cls, kw, E, H, dtype, num_layers=2)
    rng = np.random.default_rng(5)
    args = generation_args(stack, rng.standard_normal((V, E)).astype(dtype),
                           (0.3 * rng.standard_normal((V, H))).astype(dtype),
                           rng.standard_normal(V).astype(dtype), np.arange(V), seed=3)
    prompt = rng.integers(0, V, (n, 4)).astype(np.int32)
    return lambda: _kernels.generate(**args, prompt=prompt, h0=None, c0=None, n_new=n_new,
                                     n_threads=n_threads)


@pytest.mark.parametrize("cls,kw", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_fast_generation_equals_portable(cls, kw, dtype, n, portable):
    # 40 new tokens, vocabulary 23: the embedding table is on (fast path only)
    run = _generate(cls, kw, dtype, 40, n, 1)
    np.testing.assert_array_equal(run(), portable(run))


@pytest.mark.parametrize("cls,kw", STACKS[:2], ids=STACK_IDS[:2])
def test_fast_generation_two_threads(cls, kw, portable):
    run2 = _generate(cls, kw, np.float32, 224, 1, 2)
    tokens = run2()
    np.testing.assert_array_equal(tokens, portable(run2))
    np.testing.assert_array_equal(tokens, _generate(cls, kw, np.float32, 224, 1, 1)())


def test_generation_without_table_when_vocab_exceeds_steps(portable):
    # 3 new tokens from a 23-token vocabulary: no table, the row kernel alone
    run = _generate(LSTM, {}, np.float32, 40, 1, 1, n_new=3)
    np.testing.assert_array_equal(run(), portable(run))


def test_bench_read_times_a_buffer():
    small = _kernels.bench_read(n_bytes=1 << 16, reps=3)
    large = _kernels.bench_read(n_bytes=1 << 24, reps=3)
    assert 0 < small < large
    with pytest.raises(ValueError):
        _kernels.bench_read(n_bytes=0)


@pytest.mark.parametrize("cls,kw", STACKS[:2], ids=STACK_IDS[:2])
def test_fast_training_forward_and_gradients_equal_portable(cls, kw, portable):
    # a training forward at batch 1 runs the row kernel too; backward reads what it stored
    stack = _stack(cls, kw, 6, 40, np.float64, num_layers=2)
    X = np.random.default_rng(6).standard_normal((1, 5, 6))
    dY = np.random.default_rng(7).standard_normal((1, 5, 40))

    def run():
        stack.zero_grad()
        Y, _ = stack.forward(X, training=True)
        dX = stack.backward(dY)
        dX = dX[0] if isinstance(dX, tuple) else dX
        return Y.copy(), np.array(dX), stack.flat_grads.copy()

    for a, b in zip(run(), portable(run)):
        np.testing.assert_array_equal(a, b)
