"""The binding surface of fastrnn._kernels and the stack views built on it:
keyword-only calls, one (layer, direction) view, one state shape, the
generation arguments, gate counts and the status -> exception mapping."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastrnn import _kernels
from fastrnn.layers import GRU, LSTM, RNN, State, generation_args

STACKS = [(LSTM, {}), (GRU, {}), (RNN, {}), (RNN, {"nonlinearity": "relu"})]
STACK_IDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def _forward_args(H=4, B=2, T=3, I=4):
    """A valid keyword set for _kernels.forward (LSTM, float32)."""
    G = _kernels.gates("lstm")
    f32 = np.float32
    ws = np.zeros(_kernels.workspace_size(cell=_kernels.CELLS["lstm"], B=B, T=T, I=I, H=H,
                                          training=True), f32)
    return dict(cell=_kernels.CELLS["lstm"], X=np.zeros((B, T, I), f32),
                W_ih=np.zeros((G * H, I), f32), W_hh=np.zeros((G * H, H), f32),
                b_ih=np.zeros(G * H, f32), b_hh=np.zeros(G * H, f32), h0=None, c0=None,
                Y=np.zeros((B, T, H), f32), y_col=0, hN=np.zeros((B, H), f32),
                cN=np.zeros((B, H), f32), lengths=None, reverse=False, ws=ws, training=True,
                n_threads=1)


# ---------------------------------------------------------------------------------------------
# keyword-only bindings


def _assert_keyword_only(fn, kwargs):
    """fn accepts kwargs by name but not the same values by position (kwargs
    listed in the signature's order, so a positional fn would accept them)."""
    fn(**kwargs)
    with pytest.raises(TypeError):
        fn(*kwargs.values())


def test_forward_and_backward_take_keywords_only():
    args = _forward_args()
    _assert_keyword_only(_kernels.forward, args)
    B, T, I, H = 2, 3, 4, 4
    G, f32 = _kernels.gates("lstm"), np.float32
    bws = np.zeros(_kernels.backward_workspace_size(cell=args["cell"], B=B, T=T, I=I, H=H), f32)
    _assert_keyword_only(_kernels.backward, dict(
        cell=args["cell"], X=args["X"], W_ih=args["W_ih"], W_hh=args["W_hh"], ws=args["ws"],
        dY=np.ones((B, T, H), f32), y_col=0, dhN=None, dcN=None, dX=np.zeros((B, T, I), f32),
        accumulate_dx=False, dW_ih=np.zeros((G * H, I), f32), dW_hh=np.zeros((G * H, H), f32),
        db_ih=np.zeros(G * H, f32), db_hh=np.zeros(G * H, f32), dh0=np.zeros((B, H), f32),
        dc0=np.zeros((B, H), f32), lengths=None, reverse=False, bws=bws, n_threads=1))


def test_size_functions_take_keywords_only():
    shape = dict(cell=_kernels.CELLS["gru"], B=2, T=3, I=4, H=5)
    _assert_keyword_only(_kernels.check_shape, shape)
    _assert_keyword_only(_kernels.workspace_size, {**shape, "training": True})
    _assert_keyword_only(_kernels.backward_workspace_size, shape)


def test_optimizer_bindings_take_keywords_only():
    w = np.ones(6, np.float32)
    _assert_keyword_only(_kernels.sumsq, dict(x=w, n_threads=1))
    _assert_keyword_only(_kernels.optim_step, dict(
        solver="adam", w=w, g=np.ones(6, np.float32), m=np.zeros(6, np.float32),
        v=np.zeros(6, np.float32), decay_mask=None, lr=0.1, l2=0.0, grad_scale=1.0,
        momentum=0.9, nesterov=True, rho=0.9, beta1=0.9, beta2=0.999, eps=1e-8, step=1,
        n_threads=1))


def test_generate_takes_keywords_only():
    stack = RNN(3, 4)
    args = generation_args(stack, np.zeros((5, 3), np.float32), np.zeros((5, 4), np.float32),
                           np.zeros(5, np.float32), np.arange(5))
    args.update(prompt=np.zeros((1, 2), np.int32), h0=None, c0=None, n_new=3)
    order = ["cell", "embedding", "W_ih", "W_hh", "b_ih", "b_hh", "head_W", "head_b",
             "out_tokens", "prompt", "h0", "c0", "n_new", "temperature", "top_k", "top_p",
             "seed"]
    _assert_keyword_only(_kernels.generate, {k: args[k] for k in order})


# ---------------------------------------------------------------------------------------------
# gate counts come from the kernels


@pytest.mark.parametrize("cls,kw", STACKS, ids=STACK_IDS)
def test_stack_gate_count_is_the_kernels(cls, kw):
    stack = cls(3, 5, **kw)
    G = _kernels.gates(stack.cell)
    assert stack.n_gates == G
    assert stack.params["weight_hh_l0"].shape == (G * 5, 5)


def test_gate_counts_follow_pytorch_and_refuse_unknown_cells():
    assert [_kernels.gates(c) for c in ("lstm", "gru", "rnn_tanh", "rnn_relu")] == [4, 3, 1, 1]
    assert _kernels.gates(_kernels.CELLS["gru"]) == 3
    with pytest.raises(ValueError, match="unknown cell"):
        _kernels.gates(99)


# ---------------------------------------------------------------------------------------------
# one (layer, direction) view


def test_direction_view_holds_the_named_parameters_and_gradients():
    stack = LSTM(3, 4, num_layers=2, bidirectional=True)
    view = stack.direction(1, reverse=True)
    assert (view.layer, view.reverse, view.index) == (1, True, 3)
    for field, name in [("W_ih", "weight_ih"), ("W_hh", "weight_hh"), ("b_ih", "bias_ih"),
                        ("b_hh", "bias_hh")]:
        assert getattr(view, field) is not None
        assert np.shares_memory(getattr(view, field), stack.flat_params)
        np.testing.assert_array_equal(getattr(view, field),
                                      stack.params[f"{name}_l1_reverse"])
        assert np.shares_memory(getattr(view, "d" + field), stack.flat_grads)
        assert getattr(view, "d" + field).shape == getattr(view, field).shape
    view.W_hh[0, 0] = 7.0  # a view, not a copy
    assert stack.params["weight_hh_l1_reverse"][0, 0] == 7.0


def test_direction_view_refuses_missing_layers():
    stack = GRU(3, 4, num_layers=2)
    with pytest.raises(IndexError):
        stack.direction(2)
    with pytest.raises(IndexError):
        stack.direction(0, reverse=True)


# ---------------------------------------------------------------------------------------------
# one state shape


@pytest.mark.parametrize("cls,kw", STACKS, ids=STACK_IDS)
def test_every_cell_returns_state_h_c(cls, kw, rng):
    stack = cls(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, **kw)
    X = rng.normal(size=(5, 6, 3))
    Y, state = stack.forward(X, training=True)
    assert isinstance(state, State)
    h, c = state
    assert h.shape == (4, 5, 4)
    np.testing.assert_array_equal(h[-2], Y[:, -1, :4])  # last layer, forward direction
    assert (c is None) == (stack.cell != "lstm")
    dX, dstate = stack.backward(np.ones_like(Y))
    assert isinstance(dstate, State) and dstate.h.shape == (4, 5, 4)
    assert (dstate.c is None) == (stack.cell != "lstm")
    if c is not None:
        assert c.shape == h.shape and dstate.c.shape == h.shape


# ---------------------------------------------------------------------------------------------
# generation arguments, built in one place


def test_generation_args_pass_the_stack_weights_and_sampling_options():
    stack = GRU(6, 8, num_layers=2, random_state=0)
    emb, head_W, head_b = np.zeros((5, 6), np.float32), np.zeros((5, 8), np.float32), \
        np.zeros(5, np.float32)
    args = generation_args(stack, emb, head_W, head_b, np.arange(5), top_k=3)
    assert args["cell"] == _kernels.CELLS["gru"]
    for k in range(2):
        assert args["W_hh"][k] is stack.direction(k).W_hh
        assert args["b_ih"][k] is stack.direction(k).b_ih
    assert args["out_tokens"].dtype == np.int32
    assert (args["top_k"], args["top_p"], args["temperature"]) == (3, 1.0, 1.0)


def test_generation_args_drive_the_kernel_greedily_like_the_stack(rng):
    """Greedy tokens from the C loop equal the argmax of the head over the
    stack's own forward pass on the prompt (one sampled token)."""
    stack = LSTM(6, 8, num_layers=2, dtype=np.float64, random_state=1)
    emb = rng.normal(size=(5, 6))
    head_W, head_b = rng.normal(size=(5, 8)), rng.normal(size=5)
    prompt = np.array([[1, 4, 2], [3, 0, 0]], np.int32)
    args = generation_args(stack, emb, head_W, head_b, np.arange(5), temperature=0)
    tokens = _kernels.generate(**args, prompt=prompt, h0=None, c0=None, n_new=1, n_threads=1)
    _, state = stack.forward(emb[prompt])
    expected = np.argmax(state.h[-1] @ head_W.T + head_b, axis=1)
    np.testing.assert_array_equal(tokens[:, 0], expected)


def test_generation_args_refuse_a_bidirectional_stack():
    stack = LSTM(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="unidirectional"):
        generation_args(stack, np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2), [0, 1])


# ---------------------------------------------------------------------------------------------
# kernel status codes


def test_statuses_map_to_their_exceptions():
    _kernels.raise_for_status(_kernels.STATUS["ok"], "x")
    with pytest.raises(MemoryError):
        _kernels.raise_for_status(_kernels.STATUS["no_memory"], "x")
    with pytest.raises(ValueError, match="32-bit"):
        _kernels.raise_for_status(_kernels.STATUS["too_large"], "x")
    with pytest.raises(ValueError, match="invalid"):
        _kernels.raise_for_status(_kernels.STATUS["invalid"], "x")


_NOMEM_SCRIPT = textwrap.dedent("""
    import resource
    import numpy as np
    from fastrnn import _kernels
    H, G = 1024, 4
    f32 = np.float32
    ws = np.zeros(_kernels.workspace_size(cell=0, B=1, T=1, I=4, H=H, training=False), f32)
    args = dict(cell=0, X=np.zeros((1, 1, 4), f32), W_ih=np.zeros((G * H, 4), f32),
                W_hh=np.zeros((G * H, H), f32), b_ih=np.zeros(G * H, f32),
                b_hh=np.zeros(G * H, f32), h0=None, c0=None, Y=np.zeros((1, 1, H), f32),
                y_col=0, hN=np.zeros((1, H), f32), cN=np.zeros((1, H), f32), lengths=None,
                reverse=False, ws=ws, training=False, n_threads=1)
    _kernels.forward(**args)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    # room for Python, not for the 17 MB of packed W_hh the kernel mallocs
    resource.setrlimit(resource.RLIMIT_AS, ((vm + 4096) * 1024, resource.RLIM_INFINITY))
    try:
        _kernels.forward(**args)
    except MemoryError:
        print("MemoryError")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS and /proc")
@pytest.mark.skipif(not _kernels.packed_enabled(),
                    reason="the BLAS path allocates nothing in the kernel")
def test_allocation_failure_in_the_kernel_raises_memory_error():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", _NOMEM_SCRIPT], capture_output=True, text=True,
                         env=env, cwd=root, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "MemoryError"
