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

from fastrnn import _quantize
from fastrnn.layers import STACKS, as_float_dtype, load_into


NORMS = (None, "layer", "batch")
NORM_EPS = 1e-5  # PyTorch's LayerNorm / BatchNorm1d default
BATCH_NORM_MOMENTUM = 0.1  # running = (1 - m) * running + m * batch statistic (PyTorch's)


def norm_shapes(norm, layer, features):
    """[(name, shape)] of the normalization after recurrent layer ``layer``:
    gain and bias, and for batch norm the running mean and (unbiased) variance."""
    names = {None: (), "layer": ("weight", "bias"),
             "batch": ("weight", "bias", "running_mean", "running_var")}[norm]
    return [(f"norm_l{layer}.{name}", (features,)) for name in names]


class LayerOutput:
    """What follows one recurrent layer, in this order: the residual
    connection (the layer's input added when its size matches, GNMT style),
    the normalization ("layer": per step over features; "batch": per feature
    over the batch and the valid steps, running statistics for inference),
    and dropout (training only). Steps past a sample's length stay 0.

    ``params`` / ``grads`` hold the norm_l{k}.* views of the network's flat
    buffers; running statistics live there too (their gradient stays 0 and
    they have no weight decay), so every copy and save of the weights carries
    them."""

    def __init__(self, layer, norm, residual, dropout, params, grads, stack):
        # dropout draws from stack.rng at the time of drawing (an owner may reseed it)
        self.norm, self.residual, self.dropout, self.stack = norm, residual, dropout, stack
        prefix = f"norm_l{layer}."
        self.p = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        self.g = {k[len(prefix):]: v for k, v in grads.items() if k.startswith(prefix)}
        self._cache = None

    def forward(self, Y, X, valid, training, keep=False):
        """Y (B, T, F): the layer's output; X its input; valid (B, T) bool or
        None (every step valid). keep: what backward needs is kept without
        training (the inference function's gradients, for attributions)."""
        add_input = self.residual and X.shape[2] == Y.shape[2]
        Z = Y + X if add_input else Y
        xhat = inv_std = None
        if self.norm is not None:
            xhat, inv_std = self._normalize(Z, valid, training)
            Z = xhat * self.p["weight"] + self.p["bias"]
        mask = None
        if training and self.dropout > 0:
            keep = 1.0 - self.dropout
            mask = (self.stack.rng.random(Z.shape) < keep).astype(Z.dtype) / keep
            Z = Z * mask
        if valid is not None:
            Z = Z * valid[:, :, None]
        if training or keep:
            self._cache = (add_input, xhat, inv_std, mask, valid, training)
        return np.ascontiguousarray(Z, dtype=Y.dtype)

    def _normalize(self, Z, valid, training):
        if self.norm == "layer":
            mean = Z.mean(axis=2, keepdims=True)
            var = Z.var(axis=2, keepdims=True)
        elif training:
            rows = Z.reshape(-1, Z.shape[2]) if valid is None else Z[valid]
            mean, var = rows.mean(axis=0), rows.var(axis=0)
            m, n = BATCH_NORM_MOMENTUM, len(rows)
            self.p["running_mean"][:] = (1 - m) * self.p["running_mean"] + m * mean
            unbiased = var * n / (n - 1) if n > 1 else var
            self.p["running_var"][:] = (1 - m) * self.p["running_var"] + m * unbiased
        else:
            mean, var = self.p["running_mean"], self.p["running_var"]
        inv_std = 1.0 / np.sqrt(var + NORM_EPS)
        return (Z - mean) * inv_std, inv_std

    def backward(self, dZ, input_grad_only=False):
        """d(loss)/d(Y) and the residual's d(loss)/d(X) (None without one);
        accumulates the norm's gain and bias gradients (not when
        input_grad_only)."""
        add_input, xhat, inv_std, mask, valid, training = self._cache
        self._cache = None
        if valid is not None:
            dZ = dZ * valid[:, :, None]
        if mask is not None:
            dZ = dZ * mask
        if self.norm is not None:
            dZ = self._normalize_backward(dZ, xhat, inv_std, valid, training, input_grad_only)
        dZ = np.ascontiguousarray(dZ)
        return dZ, (dZ if add_input else None)

    def _normalize_backward(self, dout, xhat, inv_std, valid, batch_statistics,
                            input_grad_only):
        if not input_grad_only:
            self.g["weight"] += (dout * xhat).sum(axis=(0, 1))
            self.g["bias"] += dout.sum(axis=(0, 1))
        dxhat = dout * self.p["weight"]
        if self.norm == "layer":
            return inv_std * (dxhat - dxhat.mean(axis=2, keepdims=True)
                              - xhat * (dxhat * xhat).mean(axis=2, keepdims=True))
        if not batch_statistics:  # inference: the running statistics are constants
            dZ = dxhat * inv_std
            return dZ if valid is None else dZ * valid[:, :, None]
        n = dout.shape[0] * dout.shape[1] if valid is None else int(valid.sum())
        # padding has dout = 0, so sums over every step are sums over valid ones
        mean_dxhat = dxhat.sum(axis=(0, 1)) / n
        mean_dxhat_xhat = (dxhat * xhat).sum(axis=(0, 1)) / n
        dZ = inv_std * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)
        return dZ if valid is None else dZ * valid[:, :, None]


def final_outputs(Y, lengths, hidden_size, num_directions):
    """The outputs at each sample's final step, (B, D*H): the forward
    direction's at its last valid step, the reverse direction's at step 0
    (where the final states hN come from)."""
    B, T, _ = Y.shape
    last = np.full(B, T - 1) if lengths is None else np.asarray(lengths) - 1
    features = Y[np.arange(B), last].copy()
    if num_directions == 2:
        features[:, hidden_size:] = Y[:, 0, hidden_size:]
    return features


def scatter_final_outputs(d_features, shape, lengths, hidden_size, num_directions):
    """The gradient of final_outputs: d_features placed back into a zero (B, T, D*H)."""
    B, T, _ = shape
    dY = np.zeros(shape, d_features.dtype)
    last = np.full(B, T - 1) if lengths is None else np.asarray(lengths) - 1
    dY[np.arange(B), last, :hidden_size] = d_features[:, :hidden_size]
    if num_directions == 2:
        dY[:, 0, hidden_size:] += d_features[:, hidden_size:]
    return dY


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
    reads every step's output and gives (B, T, output_size). An estimator's
    ``model_`` is a Network.

    Every recurrent layer's output, the last included, passes through a
    LayerOutput when ``residual``, ``norm`` or ``dropout`` asks for one
    (Keras-style dropout after every layer); the head then reads the last
    layer's transformed outputs at each sample's final step.

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn"}
        The recurrent stack (fastrnn.LSTM, GRU or RNN).

    input_size : int
        Features per step (the embedding size when vocab_size is set).

    hidden_size : int
        Units per layer and direction.

    output_size : int
        Outputs of the Dense head.

    num_layers, bidirectional, dropout, nonlinearity :
        The stack's (nonlinearity only for "rnn"); defaults 1, False, 0.0, "tanh".

    vocab_size : int or None, default=None
        Token ids in [0, vocab_size) pass through a learned embedding first.

    per_step : bool, default=False
        One head output per step instead of per sequence.

    condition_size : int or None, default=None
        Features of per-sequence conditions whose projection (tanh) is the
        initial state of every layer.

    dtype : float32 or float64, default=float32
        Precision.

    n_threads : int or None, default=None
        None: what OpenMP allows; -1: every CPU.

    random_state : int, Generator or None, default=None
        Seeds the initialisation and dropout.

    norm : {None, "layer", "batch"}, default=None
        Normalization of every recurrent layer's output sequence, per feature
        (batch norm over the batch and valid steps, running statistics at
        inference).

    residual : bool, default=False
        Add each layer's input to its output where their sizes match.

    layer_norm : bool, default=False
        Layer-normalized LSTM/GRU cells (fused in C).

    recurrent_dropout : float, default=0.0
        One dropout mask on h per sequence, the same at every step (LSTM/GRU).

    Attributes
    ----------
    config : dict
        The constructor's arguments but dtype, n_threads and random_state.

    flat_params, flat_grads : ndarray of shape (n_params,)
        Every parameter and gradient in one buffer each.

    params, grads : dict of str to ndarray
        Views into the buffers: ``embedding.weight``, ``condition.weight``,
        ``condition.bias``, the stack's PyTorch names (``weight_ih_l0``, ...,
        ``ln_ih_weight_l0``, ...), ``norm_l{k}.weight`` / ``.bias`` (/
        ``.running_mean`` / ``.running_var``), ``head.weight``, ``head.bias``.

    stack : fastrnn.LSTM, fastrnn.GRU or fastrnn.RNN
        The recurrent stack (its parameters are views into flat_params).

    layout : list of (name, offset, shape)
        Where every parameter lies in flat_params.

    decay_mask : ndarray of shape (n_params,)
        1 on weights, 0 on biases (the L2 penalty's mask).

    Examples
    --------
    >>> import numpy as np
    >>> from fastrnn.network import Network
    >>> net = Network("gru", input_size=3, hidden_size=4, output_size=2, random_state=0)
    >>> X = np.zeros((5, 7, 3), np.float32)
    >>> net.forward(X).shape, net.params["head.weight"].shape
    ((5, 2), (2, 4))
    >>> sorted(net.state_dict())[:3]
    ['bias_hh_l0', 'bias_ih_l0', 'head.bias']
    """

    def __init__(self, cell, input_size, hidden_size, output_size, num_layers=1,
                 bidirectional=False, dropout=0.0, nonlinearity="tanh", vocab_size=None,
                 per_step=False, condition_size=None, dtype=np.float32, n_threads=None,
                 random_state=None, norm=None, residual=False, layer_norm=False,
                 recurrent_dropout=0.0):
        if cell not in STACKS:
            raise ValueError(f"cell must be one of {sorted(STACKS)}, got {cell!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.config = dict(cell=cell, input_size=int(input_size), hidden_size=int(hidden_size),
                           output_size=int(output_size), num_layers=int(num_layers),
                           bidirectional=bool(bidirectional), dropout=float(dropout),
                           nonlinearity=nonlinearity,
                           vocab_size=None if vocab_size is None else int(vocab_size),
                           per_step=bool(per_step),
                           condition_size=None if condition_size is None else int(condition_size),
                           norm=norm, residual=bool(residual), layer_norm=bool(layer_norm),
                           recurrent_dropout=float(recurrent_dropout))
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
            c["input_size"], c["hidden_size"], c["num_layers"], c["bidirectional"],
            c["layer_norm"]),)))
        for k in range(c["num_layers"]):
            shapes += norm_shapes(c["norm"], k, D * c["hidden_size"])
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
        transformed = self._has_layer_outputs()
        kw = dict(num_layers=c["num_layers"], bidirectional=c["bidirectional"],
                  dropout=0.0 if transformed else c["dropout"], dtype=self.dtype,
                  n_threads=self.n_threads, layer_norm=c["layer_norm"],
                  recurrent_dropout=c["recurrent_dropout"])
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
                        c["input_size"], c["hidden_size"], c["num_layers"], c["bidirectional"],
                        c["layer_norm"]):
                    self.layout.append((stack_name, inner, stack_shape))
                    inner += int(np.prod(stack_shape))
            else:
                self.params[name] = p.reshape(shape)
                self.grads[name] = g.reshape(shape)
                self.layout.append((name, offset, shape))
            offset += size
        self.decay_mask = np.ones_like(self.flat_params)  # L2 on weights, not biases
        for name, start, shape in self.layout:  # nor on norm gains and running statistics
            if "bias" in name or name.startswith(("norm_", "ln_")):
                self.decay_mask[start:start + int(np.prod(shape))] = 0
        self.stack.layer_outputs = None
        if transformed:
            self.stack.layer_outputs = [
                LayerOutput(k, c["norm"], c["residual"], c["dropout"], self.params,
                            self.grads, self.stack) for k in range(c["num_layers"])]
        self._cache = None

    def _has_layer_outputs(self):
        c = self.config
        return c["norm"] is not None or c["residual"] or c["dropout"] > 0

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
            if name.startswith("ln_"):  # layer-norm gains 1, biases 0
                view[:] = 1.0 if "_weight_" in name else 0.0
            elif name.startswith("weight_ih"):
                view[:] = glorot_uniform(rng, G * H, view.shape[1])
            elif name.startswith("weight_hh"):
                view[:] = np.concatenate([orthogonal(rng, H) for _ in range(G)])
            else:
                view[:] = 0
                if c["cell"] == "lstm" and name.startswith("bias_ih"):
                    view[H:2 * H] = 1.0
        for name, view in self.params.items():
            if name.startswith("norm_"):
                view[:] = 1.0 if name.endswith(("weight", "running_var")) else 0.0
        for name in ("head", "condition"):
            if f"{name}.weight" in self.params:
                self.params[f"{name}.weight"][:] = glorot_uniform(
                    rng, *self.params[f"{name}.weight"].shape)
                self.params[f"{name}.bias"][:] = 0

    def state_dict(self):
        return {name: view.copy() for name, view in self.named_params()}

    def load_state_dict(self, state):
        load_into(dict(self.named_params()), state, "network")
        _quantize.forget(self)

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

    def forward(self, X, lengths=None, h0=None, conditions=None, training=False,
                keep_for_backward=False, embedded=False, inference_dtype=None,
                validated=False):
        """X: (B, T, input_size) floats, or (B, T) token ids when an embedding is
        used (embedded=True: X holds the embedded tokens, (B, T, input_size)).
        h0: optional initial hidden state of the stack, or conditions
        (B, condition_size) for a conditioned network. keep_for_backward: keep
        what backward / input_gradient need, without dropout. inference_dtype
        "bfloat16" / "int8": an inference pass with reduced weights
        (fastrnn._quantize; converted once, until a training pass or a load).
        validated: float X was checked already (finite, the network's dtype;
        see RecurrentStack.forward). Returns the head's output: (B, output_size),
        or (B, T, output_size) when per_step."""
        c = self.config
        if (conditions is None) != (c["condition_size"] is None):
            raise ValueError("conditions are required exactly when the network has "
                             "condition_size")
        if conditions is not None:
            h0 = self.initial_state(conditions)
        reduced = None
        if training:  # the weights are about to change
            _quantize.forget(self)
        elif not keep_for_backward:
            reduced = _quantize.reduced_network(self, inference_dtype)
        tokens = None
        if c["vocab_size"] is not None and not embedded:
            tokens = np.asarray(X)
            X = self.params["embedding.weight"][tokens]
        Y, state = self.stack.forward(X, lengths=lengths, h0=h0, training=training,
                                      keep_for_backward=keep_for_backward, reduced=reduced,
                                      validated=validated and tokens is None)
        hN = state.h
        H, D = c["hidden_size"], self.stack.num_directions
        if c["per_step"]:
            features = Y.reshape(-1, D * H)
        elif self._has_layer_outputs():  # the transformed outputs at the final steps
            features = final_outputs(Y, lengths, H, D)
        else:  # last layer, both directions: (B, D*H)
            features = np.concatenate(list(hN[-D:]), axis=1)
        if reduced is None:
            out = features @ self.params["head.weight"].T + self.params["head.bias"]
        else:
            out = reduced.head_forward(features, self.params["head.bias"])
        if training or keep_for_backward:
            self._cache = (tokens, features, Y.shape, state, conditions, h0, lengths)
        if c["per_step"]:
            out = out.reshape(Y.shape[0], Y.shape[1], -1)
        return out

    def backward(self, d_out):
        """Accumulate parameter gradients from d(loss)/d(output); returns
        d(loss)/d(h0) of the stack."""
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        tokens, features, y_shape, state, conditions, h0, lengths = self._cache
        self._cache = None
        d_out = np.asarray(d_out, self.dtype).reshape(features.shape[0], -1)
        self.grads["head.weight"] += d_out.T @ features
        self.grads["head.bias"] += d_out.sum(axis=0)
        dY, dhN = self._stack_output_grads(d_out, y_shape, state, lengths)
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

    def _stack_output_grads(self, d_out, y_shape, state, lengths):
        """dY, dhN of the stack from d(loss)/d(head output) (rows of d_out)."""
        H, D = self.config["hidden_size"], self.stack.num_directions
        d_features = d_out @ self.params["head.weight"]
        if self.config["per_step"]:
            return d_features.reshape(y_shape), None
        if self._has_layer_outputs():  # the head read the transformed final outputs
            return scatter_final_outputs(d_features, y_shape, lengths, H, D), None
        dhN = np.zeros_like(state.h)
        for d in range(D):
            dhN[-D + d] = d_features[:, d * H:(d + 1) * H]
        return None, dhN

    def input_gradient(self, d_out):
        """After forward(..., keep_for_backward=True): the gradient of
        sum(output * d_out) with respect to the stack's input, (B, T,
        input_size): X itself, or the embedded tokens. Only dX is computed
        (the kernels' dX-only mode); no parameter gradient is touched."""
        if self._cache is None:
            raise RuntimeError("input_gradient() needs a preceding forward(..., "
                               "keep_for_backward=True)")
        _, features, y_shape, state, _, _, lengths = self._cache
        self._cache = None
        d_out = np.asarray(d_out, self.dtype).reshape(features.shape[0], -1)
        dY, dhN = self._stack_output_grads(d_out, y_shape, state, lengths)
        dX, _ = self.stack.backward(dY, dhN, input_grad_only=True)
        return dX

    def zero_grad(self):
        self.flat_grads[:] = 0
