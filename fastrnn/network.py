"""The network an estimator trains: optional Embedding -> recurrent stack ->
Dense head, with every parameter and gradient in one flat buffer.

    >>> import numpy as np
    >>> from fastrnn.network import Network
    >>> net = Network("lstm", input_size=3, hidden_size=8, output_size=2, random_state=0)
    >>> X = np.zeros((4, 5, 3), np.float32)
    >>> net.forward(X).shape            # one output per sequence
    (4, 2)
    >>> net.flat_params.size == sum(v.size for v in net.state_dict().values())
    True
"""
import numpy as np

from fastrnn.layers import STACKS, as_float_dtype, load_into


def glorot_uniform(rng, fan_out, fan_in):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_out, fan_in))


def orthogonal(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


class Network:
    """Embedding (when ``vocab_size``) -> recurrent stack -> Dense head.

    per_step=False: the head reads the final state of the last layer (both
    directions concatenated) and gives (B, output_size). per_step=True: the head
    reads every step's output and gives (B, T, output_size).

    Parameters named ``embedding.weight``, ``head.weight``, ``head.bias`` and
    the stack's PyTorch names (``weight_ih_l0``, ...).
    """

    def __init__(self, cell, input_size, hidden_size, output_size, num_layers=1,
                 bidirectional=False, dropout=0.0, nonlinearity="tanh", vocab_size=None,
                 per_step=False, condition_size=None, dtype=np.float32, n_threads=None,
                 random_state=None):
        if cell not in STACKS:
            raise ValueError(f"cell must be one of {sorted(STACKS)}, got {cell!r}")
        self.config = dict(cell=cell, input_size=int(input_size), hidden_size=int(hidden_size),
                           output_size=int(output_size), num_layers=int(num_layers),
                           bidirectional=bool(bidirectional), dropout=float(dropout),
                           nonlinearity=nonlinearity,
                           vocab_size=None if vocab_size is None else int(vocab_size),
                           per_step=bool(per_step),
                           condition_size=None if condition_size is None else int(condition_size))
        self.dtype = as_float_dtype(dtype)
        self.n_threads = n_threads
        self.rng = np.random.default_rng(random_state)
        self._build()
        self.reset_parameters()

    # ----- structure ----------------------------------------------------------------------
    def _shapes(self):
        c = self.config
        D = 2 if c["bidirectional"] else 1
        shapes = []
        if c["vocab_size"] is not None:
            shapes.append(("embedding.weight", (c["vocab_size"], c["input_size"])))
        shapes.append(("stack", (self._stack_class().n_params(
            c["input_size"], c["hidden_size"], c["num_layers"], c["bidirectional"]),)))
        if c["condition_size"] is not None:  # features -> initial state of every layer
            n_states = c["num_layers"] * D * c["hidden_size"]
            shapes.append(("condition.weight", (n_states, c["condition_size"])))
            shapes.append(("condition.bias", (n_states,)))
        shapes.append(("head.weight", (c["output_size"], D * c["hidden_size"])))
        shapes.append(("head.bias", (c["output_size"],)))
        return shapes

    def _stack_class(self):
        return STACKS[self.config["cell"]]

    def _build(self):
        c = self.config
        sizes = [int(np.prod(s)) for _, s in self._shapes()]
        self.flat_params = np.zeros(sum(sizes), self.dtype)
        self.flat_grads = np.zeros(sum(sizes), self.dtype)
        self.params, self.grads = {}, {}
        self.layout = []  # (name, offset, shape) of every parameter in the flat buffer
        offset = 0
        kw = dict(num_layers=c["num_layers"], bidirectional=c["bidirectional"],
                  dropout=c["dropout"], dtype=self.dtype, n_threads=self.n_threads)
        if c["cell"] == "rnn":
            kw["nonlinearity"] = c["nonlinearity"]
        for (name, shape), size in zip(self._shapes(), sizes):
            p = self.flat_params[offset:offset + size]
            g = self.flat_grads[offset:offset + size]
            if name == "stack":
                self.stack = self._stack_class()(c["input_size"], c["hidden_size"],
                                                 flat_params=p, flat_grads=g, **kw)
                self.stack.rng = self.rng
                inner = offset
                for stack_name, stack_shape in self.stack.param_shapes(
                        c["input_size"], c["hidden_size"], c["num_layers"], c["bidirectional"]):
                    self.layout.append((stack_name, inner, stack_shape))
                    inner += int(np.prod(stack_shape))
            else:
                self.params[name] = p.reshape(shape)
                self.grads[name] = g.reshape(shape)
                self.layout.append((name, offset, shape))
            offset += size
        self.decay_mask = np.ones_like(self.flat_params)  # L2 on weights, not biases
        for name, start, shape in self.layout:
            if "bias" in name:
                self.decay_mask[start:start + int(np.prod(shape))] = 0
        self._cache = None

    def named_params(self):
        """(name, view) of every parameter, in flat-buffer order."""
        return [(name, self.flat_params[start:start + int(np.prod(shape))].reshape(shape))
                for name, start, shape in self.layout]

    def reset_parameters(self):
        """Glorot-uniform input and head weights, orthogonal recurrent weights (per
        gate), zero biases but a forget-gate bias of 1 for LSTM."""
        c, rng = self.config, self.rng
        H, G = c["hidden_size"], self.stack.n_gates
        if "embedding.weight" in self.params:
            self.params["embedding.weight"][:] = rng.uniform(
                -0.05, 0.05, self.params["embedding.weight"].shape)
        for name, view in self.stack.params.items():
            if name.startswith("weight_ih"):
                view[:] = glorot_uniform(rng, G * H, view.shape[1])
            elif name.startswith("weight_hh"):
                view[:] = np.concatenate([orthogonal(rng, H) for _ in range(G)])
            else:
                view[:] = 0
                if c["cell"] == "lstm" and name.startswith("bias_ih"):
                    view[H:2 * H] = 1.0
        for name in ("head", "condition"):
            if f"{name}.weight" in self.params:
                self.params[f"{name}.weight"][:] = glorot_uniform(
                    rng, *self.params[f"{name}.weight"].shape)
                self.params[f"{name}.bias"][:] = 0

    def state_dict(self):
        return {name: view.copy() for name, view in self.named_params()}

    def load_state_dict(self, state):
        load_into(dict(self.named_params()), state, "network")

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("flat_grads", "params", "grads", "stack", "layout", "decay_mask", "_cache"):
            state.pop(key)
        return state

    @classmethod
    def from_flat(cls, config, dtype, flat_params, n_threads=None):
        """A network with the given configuration and parameters, built without
        initialising anything (flat_params: n_params(config) values)."""
        net = cls.__new__(cls)
        net.__setstate__({"config": dict(config), "dtype": as_float_dtype(dtype),
                          "n_threads": n_threads, "rng": np.random.default_rng(),
                          "flat_params": flat_params})
        return net

    def __setstate__(self, state):
        flat = state.pop("flat_params")
        self.__dict__.update(state)
        self._build()
        self.flat_params[:] = flat

    # ----- forward / backward ------------------------------------------------------------
    def initial_state(self, conditions):
        """h0 (num_layers * D, B, H) = tanh(conditions W^T + b) for a
        conditioned network (features of shape (B, condition_size))."""
        c = self.config
        conditions = np.asarray(conditions, self.dtype)
        flat = np.tanh(conditions @ self.params["condition.weight"].T
                       + self.params["condition.bias"])
        B = conditions.shape[0]
        return np.ascontiguousarray(flat.reshape(B, -1, c["hidden_size"]).transpose(1, 0, 2))

    def forward(self, X, lengths=None, h0=None, conditions=None, training=False):
        """X: (B, T, input_size) floats, or (B, T) token ids when an embedding is
        used. h0: optional initial hidden state of the stack, or conditions
        (B, condition_size) for a conditioned network. Returns the head's output:
        (B, output_size), or (B, T, output_size) when per_step."""
        c = self.config
        if (conditions is None) != (c["condition_size"] is None):
            raise ValueError("conditions are required exactly when the network has "
                             "condition_size")
        if conditions is not None:
            h0 = self.initial_state(conditions)
        tokens = None
        if c["vocab_size"] is not None:
            tokens = np.asarray(X)
            X = self.params["embedding.weight"][tokens]
        Y, state = self.stack.forward(X, lengths=lengths, h0=h0, training=training)
        hN = state.h
        H, D = c["hidden_size"], self.stack.num_directions
        if c["per_step"]:
            features = Y.reshape(-1, D * H)
        else:  # last layer, both directions: (B, D*H)
            features = np.concatenate(list(hN[-D:]), axis=1)
        out = features @ self.params["head.weight"].T + self.params["head.bias"]
        if training:
            self._cache = (tokens, features, Y.shape, state, conditions, h0)
        if c["per_step"]:
            out = out.reshape(Y.shape[0], Y.shape[1], -1)
        return out

    def backward(self, d_out):
        """Accumulate parameter gradients from d(loss)/d(output); returns
        d(loss)/d(h0) of the stack."""
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        tokens, features, y_shape, state, conditions, h0 = self._cache
        self._cache = None
        c = self.config
        H, D = c["hidden_size"], self.stack.num_directions
        d_out = np.asarray(d_out, self.dtype).reshape(features.shape[0], -1)
        self.grads["head.weight"] += d_out.T @ features
        self.grads["head.bias"] += d_out.sum(axis=0)
        d_features = d_out @ self.params["head.weight"]
        if c["per_step"]:
            dY, dhN = d_features.reshape(y_shape), None
        else:
            dY = None
            dhN = np.zeros_like(state.h)
            for d in range(D):
                dhN[-D + d] = d_features[:, d * H:(d + 1) * H]
        need_dx = tokens is not None
        dX, dstate = self.stack.backward(dY, dhN, input_grad=need_dx)
        if need_dx:
            np.add.at(self.grads["embedding.weight"], tokens.reshape(-1),
                      dX.reshape(-1, dX.shape[-1]))
        dh0 = dstate.h
        if conditions is not None:
            d_pre = (dh0 * (1 - h0 * h0)).transpose(1, 0, 2).reshape(len(conditions), -1)
            self.grads["condition.weight"] += d_pre.T @ np.asarray(conditions, self.dtype)
            self.grads["condition.bias"] += d_pre.sum(axis=0)
        return dh0

    def zero_grad(self):
        self.flat_grads[:] = 0
