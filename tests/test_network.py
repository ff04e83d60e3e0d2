"""fastrnn.network: the flat parameter buffer, initialisation, forward against
the NumPy reference, backward against finite differences."""
import pickle

import numpy as np
import pytest

from fastrnn import reference
from fastrnn.network import Network


def make_net(**kw):
    options = dict(cell="gru", input_size=3, hidden_size=4, output_size=2, dtype=np.float64,
                   random_state=0, n_threads=1)
    options.update(kw)
    return Network(**options)


def test_every_parameter_is_a_view_of_the_flat_buffer():
    net = make_net(cell="lstm", vocab_size=6, condition_size=2, bidirectional=True,
                   num_layers=2)
    named = dict(net.named_params())
    assert net.flat_params.size == sum(v.size for v in named.values())
    assert list(named)[0] == "embedding.weight" and list(named)[-2:] == ["head.weight",
                                                                        "head.bias"]
    assert {"weight_ih_l1_reverse", "condition.weight"} <= set(named)
    for name, view in named.items():
        assert np.shares_memory(view, net.flat_params), name
    for name, start, shape in net.layout:  # L2 on weights only
        size = int(np.prod(shape))
        assert np.all(net.decay_mask[start:start + size] == (0 if "bias" in name else 1)), name


def test_initialisation():
    net = make_net(cell="lstm", hidden_size=5)
    H = 5
    state = net.state_dict()
    np.testing.assert_array_equal(state["bias_ih_l0"][H:2 * H], 1.0)  # forget gate
    assert not state["bias_ih_l0"][:H].any() and not state["bias_hh_l0"].any()
    for gate in range(4):
        block = state["weight_hh_l0"][gate * H:(gate + 1) * H]
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12)
    same = make_net(cell="lstm", hidden_size=5)
    np.testing.assert_array_equal(same.flat_params, net.flat_params)


def test_state_dict_and_pickle_round_trips():
    net = make_net(bidirectional=True)
    other = make_net(bidirectional=True, random_state=1)
    assert not np.array_equal(other.flat_params, net.flat_params)
    other.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(other.flat_params, net.flat_params)
    X = np.random.default_rng(0).normal(size=(2, 5, 3))
    restored = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(restored.forward(X), net.forward(X))
    with pytest.raises((KeyError, ValueError)):
        other.load_state_dict({"head.weight": np.zeros((2, 8))})


@pytest.mark.parametrize("per_step", [False, True])
def test_forward_is_the_reference_stack_and_a_dense_head(per_step, rng):
    net = make_net(cell="lstm", num_layers=2, bidirectional=True, per_step=per_step)
    X = rng.normal(size=(3, 6, 3))
    lengths = np.array([6, 2, 4], np.int32)
    Y, hN, _ = reference.stack_forward("lstm", net.stack.params, X, 2, True, lengths)
    features = Y if per_step else np.concatenate([hN[-2], hN[-1]], axis=1)
    expected = features @ net.params["head.weight"].T + net.params["head.bias"]
    out = net.forward(X, lengths=lengths)
    assert out.shape == ((3, 6, 2) if per_step else (3, 2))
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_embedding_is_a_lookup_before_the_stack(rng):
    net = make_net(vocab_size=7, input_size=3)
    plain = make_net(input_size=3)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k != "embedding.weight"})
    tokens = rng.integers(0, 7, size=(4, 5))
    np.testing.assert_allclose(net.forward(tokens),
                               plain.forward(net.params["embedding.weight"][tokens]), rtol=1e-12)


def numeric_gradient(net, forward, weights, eps=1e-6):
    grad = np.zeros_like(net.flat_params)
    for i in range(net.flat_params.size):
        saved = net.flat_params[i]
        net.flat_params[i] = saved + eps
        plus = np.sum(forward() * weights)
        net.flat_params[i] = saved - eps
        minus = np.sum(forward() * weights)
        net.flat_params[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("config", [
    dict(cell="lstm", bidirectional=True),
    dict(cell="gru", vocab_size=5, per_step=True),
    dict(cell="rnn", num_layers=2, condition_size=2),
])
def test_backward_matches_finite_differences(config, rng):
    net = make_net(hidden_size=3, **config)
    B, T = 2, 4
    X = rng.integers(0, 5, size=(B, T)) if "vocab_size" in config else rng.normal(size=(B, T, 3))
    lengths = np.array([4, 3], np.int32)
    conditions = rng.normal(size=(B, 2)) if "condition_size" in config else None
    out = net.forward(X, lengths=lengths, conditions=conditions, training=True)
    weights = rng.normal(size=out.shape)
    if config.get("per_step"):
        weights[1, 3:] = 0  # nothing flows from padding
    net.zero_grad()
    net.backward(weights)
    expected = numeric_gradient(
        net, lambda: net.forward(X, lengths=lengths, conditions=conditions), weights)
    np.testing.assert_allclose(net.flat_grads, expected, rtol=1e-5, atol=1e-7)


def test_misuse_raises_clear_errors(rng):
    net = make_net()
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="conditions"):
        net.forward(rng.normal(size=(2, 3, 3)), conditions=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="cell"):
        make_net(cell="transformer")
