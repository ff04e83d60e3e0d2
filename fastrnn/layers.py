"""Recurrent stacks over NumPy arrays: LSTM, GRU and RNN.

Each stack mirrors ``torch.nn.LSTM/GRU/RNN(batch_first=True)``: the same
parameter names, shapes and gate order, so PyTorch weights load as they are::

    >>> import numpy as np
    >>> from fastrnn.layers import LSTM
    >>> lstm = LSTM(input_size=3, hidden_size=5, num_layers=2, random_state=0)
    >>> X = np.random.default_rng(0).normal(size=(4, 7, 3)).astype(np.float32)
    >>> Y, (h, c) = lstm.forward(X, lengths=[7, 5, 3, 1], training=True)
    >>> Y.shape, h.shape
    ((4, 7, 5), (2, 4, 5))
    >>> dX, (dh0, dc0) = lstm.backward(np.ones_like(Y))
    >>> sorted(lstm.grads)[:2]
    ['bias_hh_l0', 'bias_hh_l1']

Every cell returns its state as ``State(h, c)`` (c is None but for LSTM). The
time loop runs in C (csrc/rnn_impl.h) with the GIL released. Parameters and
their gradients are views into two flat buffers, ``flat_params`` and
``flat_grads``, which an owner (a network, an optimizer) may provide;
``stack.direction(layer, reverse)`` gathers one layer and direction's views.
"""
import functools
from typing import NamedTuple

import numpy as np

from fastrnn import _kernels, _packed
from fastrnn._kernels import Workspaces  # the pool a stack reuses its workspaces from
from fastrnn._threads import resolve_n_threads, single_threaded_blas



class State(NamedTuple):
    """A stack's state: h (and c for LSTM; None otherwise), each
    (num_layers * num_directions, B, H). Unpacks as ``h, c = state``."""
    h: np.ndarray
    c: np.ndarray = None


class Direction(NamedTuple):
    """One layer and direction of a stack: its row in the state arrays, its
    weights and their gradients (views into flat_params / flat_grads)."""
    layer: int
    reverse: bool
    index: int  # row of h0/hN/dh0 (layer * num_directions + reverse)
    W_ih: np.ndarray
    W_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    dW_ih: np.ndarray
    dW_hh: np.ndarray
    db_ih: np.ndarray
    db_hh: np.ndarray


def param_name(kind, layer, reverse=False):
    """PyTorch's name of a stack parameter, e.g. ("weight_ih", 1, True) ->
    'weight_ih_l1_reverse'."""
    return f"{kind}_l{layer}{'_reverse' if reverse else ''}"


@functools.lru_cache(maxsize=None)
def _direction_names(layer, reverse):
    """The four weight names of one layer and direction (computed once: the
    names are built on every layer call)."""
    return tuple(param_name(kind, layer, reverse)
                 for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def generation_args(stack, embedding, head_weight, head_bias, out_tokens, *, temperature=1.0,
                    top_k=None, top_p=None, seed=0):
    """Keyword arguments of ``_kernels.generate`` (the C fr_generator and
    fr_sampling) for an embedding, a unidirectional stack and a dense head:
    everything but prompt, h0, c0, n_new and n_threads. top_k / top_p None: off."""
    if stack.bidirectional:
        raise ValueError("generation needs a unidirectional stack")
    layers = [stack.direction(k) for k in range(stack.num_layers)]
    return dict(cell=_kernels.CELLS[stack.cell], embedding=embedding,
                W_ih=[d.W_ih for d in layers], W_hh=[d.W_hh for d in layers],
                b_ih=[d.b_ih for d in layers], b_hh=[d.b_hh for d in layers],
                head_W=head_weight, head_b=head_bias,
                out_tokens=np.ascontiguousarray(out_tokens, dtype=np.int32),
                temperature=float(temperature), top_k=0 if top_k is None else int(top_k),
                top_p=1.0 if top_p is None else float(top_p), seed=int(seed))


def as_float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def check_lengths(lengths, n_samples, n_steps):
    """int32 lengths in [1, n_steps], or None when every sample is full length."""
    if lengths is None:
        return None
    lengths = np.asarray(lengths)
    if lengths.shape != (n_samples,):
        raise ValueError(f"lengths must have shape ({n_samples},), got {lengths.shape}")
    if lengths.dtype.kind not in "iu":
        if lengths.dtype.kind != "f" or not np.all(lengths == np.round(lengths)):
            raise ValueError("lengths must be integers")
    shortest, longest = _kernels.int_range(lengths) or (lengths.min(), lengths.max())
    if shortest < 1 or longest > n_steps:
        raise ValueError(f"lengths must lie in [1, {n_steps}], got min {shortest} "
                         f"and max {longest}")
    if shortest == n_steps:
        return None
    return np.ascontiguousarray(lengths, dtype=np.int32)


def load_into(views, state, owner):
    """Copy state[name] into views[name] for every parameter, after checking
    that the names match exactly and every array has the right shape and is
    finite; nothing is written unless all of it is valid."""
    missing = sorted(set(views) - set(state))
    unexpected = sorted(set(state) - set(views))
    if missing or unexpected:
        raise ValueError(f"state dict does not match this {owner}: missing {missing}, "
                         f"unexpected {unexpected}")
    arrays = {}
    for name, view in views.items():
        value = np.asarray(state[name])
        if value.shape != view.shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {view.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} holds NaN or inf")
        arrays[name] = value
    for name, value in arrays.items():
        views[name][...] = value


def valid_steps(lengths, n_samples, n_steps):
    """(B, T) bool of the steps inside each sample's length, or None when all are."""
    if lengths is None:
        return None
    return np.arange(n_steps)[None, :] < np.asarray(lengths)[:, None]


class _DirectionViews:
    """A stack's Direction tuples for one params / grads dict. Not pickled: an
    unpickled stack's arrays are new ones, so it builds its own."""

    def __init__(self, stack):
        self.params, self.grads = p, g = stack.params, stack.grads
        self.layers = []
        for layer in range(stack.num_layers):
            views = []
            for reverse in range(stack.num_directions):
                names = _direction_names(layer, bool(reverse))
                views.append(Direction(layer, bool(reverse),
                                       layer * stack.num_directions + reverse,
                                       *(p[n] for n in names), *(g[n] for n in names)))
            self.layers.append(tuple(views))

    def __reduce__(self):
        return _no_views, ()


def _no_views():
    return None


def _row(states, index):
    """states[index], or None when there are no states."""
    return None if states is None else states[index]


class RecurrentStack:
    """A stack of recurrent layers (base of LSTM, GRU, RNN).

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int, default 1
    bidirectional : bool, default False
        The reverse direction's outputs follow the forward ones on the last axis.
    dropout : float, default 0
        Dropout on the outputs of every layer but the last, in training only.
    dtype : float32 (default) or float64
    n_threads : int or None
        None: what OpenMP allows; -1: every CPU; else that many.
    random_state : int, Generator or None
        Seeds PyTorch's default initialisation U(-1/sqrt(H), 1/sqrt(H)) and dropout.
    flat_params, flat_grads : 1-D arrays of ``n_params(...)`` elements, optional
        Buffers to place parameters and gradients in (views are taken).
    layer_norm : bool, default False
        Layer-normalized cells (LSTM and GRU; Ba, Kiros & Hinton 2016): the
        input and recurrent pre-activations, and LSTM's cell state before its
        tanh, each normalized with a gain and bias (``ln_ih_weight_l0``,
        ``ln_ih_bias_l0``, ``ln_hh_weight_l0``, ``ln_hh_bias_l0``,
        ``ln_c_weight_l0``, ``ln_c_bias_l0``, suffix ``_reverse``), in C
        (csrc/lnrnn.h).
    recurrent_dropout : float, default 0
        Dropout on h where it enters the recurrent projection, one mask per
        sequence and layer direction, the same at every step (Gal & Ghahramani
        2016, Keras's ``recurrent_dropout``); training only; LSTM and GRU.
    """

    cell = None  # kernel cell name (a key of _kernels.CELLS), set by subclasses
    n_gates = None  # from the kernels' count, set by subclasses
    # None, or one object per layer with forward(Y, X, valid, training) -> Y' and
    # backward(dY') -> (dY, dX share or None), applied to every layer's output (the
    # last included): a Network's residual / norm / dropout (network.LayerOutput)
    layer_outputs = None

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False,
                 dropout=0.0, dtype=np.float32, n_threads=None, random_state=None,
                 flat_params=None, flat_grads=None, layer_norm=False, recurrent_dropout=0.0):
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if not 0.0 <= float(recurrent_dropout) < 1.0:
            raise ValueError(f"recurrent_dropout must lie in [0, 1), got {recurrent_dropout!r}")
        if (layer_norm or recurrent_dropout) and self.cell not in ("lstm", "gru"):
            raise ValueError("layer_norm and recurrent_dropout need an LSTM or GRU cell")
        self.layer_norm = bool(layer_norm)
        self.recurrent_dropout = float(recurrent_dropout)
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.dropout = float(dropout)
        self.dtype = as_float_dtype(dtype)
        self.n_threads = n_threads
        self.rng = np.random.default_rng(random_state)
        n = self.n_params(self.input_size, self.hidden_size, self.num_layers,
                          self.bidirectional, self.layer_norm)
        self.flat_params = self._buffer(flat_params, n, "flat_params")
        self.flat_grads = self._buffer(flat_grads, n, "flat_grads")
        self.params = self._views(self.flat_params)
        self.grads = self._views(self.flat_grads)
        if flat_params is None:
            self.reset_parameters()
        self._cache = None
        self._workspaces = self._new_workspaces()
        self._packed = None  # a _packed.PackedWeights after keep_packed_weights()

    def _new_workspaces(self):
        """The stack's Workspaces: room for a training forward's buffers (one
        per layer and direction) and a backward's or an inference's scratch."""
        return Workspaces(self.dtype, keep=2 * self.num_layers * self.num_directions + 2)

    @property
    def workspaces(self):
        """The scratch buffers this stack reuses across calls (see Workspaces);
        ``stack.workspaces.clear()`` frees them."""
        pool = self.__dict__.get("_workspaces")
        if pool is None:  # a stack pickled before the pool existed
            pool = self._workspaces = self._new_workspaces()
        return pool

    # ----- parameters -------------------------------------------------------------------
    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def direction(self, layer, reverse=False):
        """The weights and gradients of one layer and direction."""
        if not 0 <= layer < self.num_layers or (reverse and not self.bidirectional):
            raise IndexError(f"no layer {layer}{' reverse' if reverse else ''} in this stack")
        return self._directions()[layer][int(reverse)]

    def _directions(self):
        """Every layer's tuple of Directions, made once per params / grads dict
        (a layer call reads them; building them costs microseconds)."""
        kept = getattr(self, "_direction_views", None)  # absent in older pickles
        if kept is None or kept.params is not self.params or kept.grads is not self.grads:
            kept = self._direction_views = _DirectionViews(self)
        return kept.layers

    @classmethod
    def param_shapes(cls, input_size, hidden_size, num_layers=1, bidirectional=False,
                     layer_norm=False):
        """[(name, shape)] in PyTorch's order and names (then, per layer and
        direction, the layer-norm gains and biases)."""
        G, H = cls.n_gates, hidden_size
        D = 2 if bidirectional else 1
        shapes = []
        for k in range(num_layers):
            layer_in = input_size if k == 0 else H * D
            for d in range(D):
                shapes += [(param_name("weight_ih", k, d), (G * H, layer_in)),
                           (param_name("weight_hh", k, d), (G * H, H)),
                           (param_name("bias_ih", k, d), (G * H,)),
                           (param_name("bias_hh", k, d), (G * H,))]
                if layer_norm:
                    shapes += [(param_name(kind, k, d), (H if "_c_" in kind else G * H,))
                               for kind in cls.ln_names()]
        return shapes

    @classmethod
    def ln_names(cls):
        """The layer-norm parameter kinds of this cell (the cell norm: LSTM only)."""
        return [kind for kind in _kernels.LN_NAMES if cls.cell == "lstm" or "_c_" not in kind]

    @classmethod
    def n_params(cls, input_size, hidden_size, num_layers=1, bidirectional=False,
                 layer_norm=False):
        return sum(int(np.prod(s)) for _, s in cls.param_shapes(
            input_size, hidden_size, num_layers, bidirectional, layer_norm))

    def _buffer(self, buf, n, name):
        if buf is None:
            return np.zeros(n, dtype=self.dtype)
        if (not isinstance(buf, np.ndarray) or buf.shape != (n,) or buf.dtype != self.dtype
                or not buf.flags.c_contiguous):
            raise ValueError(f"{name} must be a contiguous 1-D {self.dtype} array of {n} "
                             "elements")
        return buf

    def _views(self, flat):
        views, offset = {}, 0
        for name, shape in self.param_shapes(self.input_size, self.hidden_size,
                                             self.num_layers, self.bidirectional,
                                             self.layer_norm):
            size = int(np.prod(shape))
            views[name] = flat[offset:offset + size].reshape(shape)
            offset += size
        return views

    def keep_packed_weights(self, on=True):
        """Keep each direction's W_hh packed for the recurrent kernels between
        inference calls instead of packing it per call (fastrnn._packed). The
        packs follow this package's writes to the parameters (an optimizer
        step, load_state_dict, reset_parameters, a training forward); after
        writing into params or flat_params directly, call
        ``fastrnn._packed.written(stack.flat_params)``. Calling it again while
        on keeps the packs made so far."""
        if not on:
            self._packed = None
        elif self._packed is None:
            self._packed = _packed.PackedWeights()

    def reset_parameters(self):
        """PyTorch's default: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)); layer-norm
        gains 1 and biases 0 (LayerNorm's)."""
        bound = 1.0 / np.sqrt(self.hidden_size)
        _packed.written(self.flat_params)
        self.flat_params[:] = self.rng.uniform(-bound, bound, self.flat_params.size)
        for name, view in self.params.items():
            if name.startswith("ln_"):
                view[:] = 1.0 if "_weight_" in name else 0.0

    def norms(self, layer, reverse=False):
        """The layer-norm parameters of one layer and direction and their
        gradients: two dicts keyed by _kernels.LN_NAMES (empty without layer_norm)."""
        if not self.layer_norm:
            return {}, {}
        names = {kind: param_name(kind, layer, reverse) for kind in self.ln_names()}
        return ({kind: self.params[n] for kind, n in names.items()},
                {kind: self.grads[n] for kind, n in names.items()})

    def _ln_kernel(self, training):
        """Whether the layer-norm / recurrent-dropout kernels (csrc/lnrnn.h) run."""
        return self.layer_norm or (training and self.recurrent_dropout > 0)

    def zero_grad(self):
        self.flat_grads[:] = 0

    def state_dict(self):
        """Copies of the parameters, keyed by PyTorch's names."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state):
        """Load parameters from a dict of arrays named as in PyTorch (any float dtype,
        e.g. ``{k: v.numpy() for k, v in torch_lstm.state_dict().items()}``)."""
        load_into(self.params, state, type(self).__name__)
        _packed.written(self.flat_params)

    # ----- forward / backward ---------------------------------------------------------------
    def _check_input(self, X, validated=False):
        if not (isinstance(X, np.ndarray) and X.dtype == self.dtype):
            X = np.asarray(X)
        if X.ndim != 3:
            raise ValueError(f"X must be 3-D (batch, time, features), got shape {X.shape}")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X is empty: shape {X.shape}")
        if X.shape[2] != self.input_size:
            raise ValueError(f"X has {X.shape[2]} features, this layer expects "
                             f"{self.input_size}")
        if X.dtype.kind not in "fiub":
            raise ValueError(f"X must hold numbers, got dtype {X.dtype}")
        if not (X.dtype == self.dtype and X.flags.c_contiguous):
            X = np.ascontiguousarray(X, dtype=self.dtype)
        if not validated and not _kernels.all_finite(X):
            raise ValueError("X holds NaN or inf")
        return X

    def _check_state(self, state, B, name):
        """A given initial / final state (or its gradient) as a checked array."""
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        state = np.ascontiguousarray(state, dtype=self.dtype)
        if state.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ValueError(f"{name} holds NaN or inf")
        return state

    def forward(self, X, lengths=None, h0=None, c0=None, training=False,
                keep_for_backward=False, reduced=None, validated=False):
        """Run the stack over batch-first X (B, T, input_size).

        lengths : (B,) ints, right padding; outputs past a length are 0 and the
            final state is the one at the last valid step.
        h0 (and c0 for LSTM) : (num_layers * num_directions, B, H), default zeros.
        training : keep what backward needs (and apply dropout).
        keep_for_backward : keep what backward needs without dropout: the
            inference function's gradients (attributions).
        reduced : a fastrnn._quantize.ReducedNetwork (inference only): the
            directions it holds run with its int8 / bfloat16 weights.
        validated : X was checked already (a 3-D array of finite numbers with
            input_size features; an estimator checks its data once per fit or
            predict): skip the scan for NaN and inf.

        Returns Y (B, T, num_directions * H) and State(hN, cN) (cN None but for LSTM).
        """
        X = self._check_input(X, validated)
        B, T, _ = X.shape
        lengths = check_lengths(lengths, B, T)
        lstm = self.cell == "lstm"
        if h0 is not None:
            h0 = self._check_state(h0, B, "h0")
        if c0 is not None:
            if not lstm:
                raise ValueError(f"c0 is the LSTM's cell state; a {self.cell} stack has none "
                                 "(pass h0 only)")
            c0 = self._check_state(c0, B, "c0")
        H, D = self.hidden_size, self.num_directions
        for_backward = training or keep_for_backward
        if training:  # the weights are about to change
            _packed.written(self.flat_params)
        n_threads = resolve_n_threads(self.n_threads)
        hN = np.empty((self.num_layers * D, B, H), self.dtype)
        cN = np.empty_like(hN) if lstm else None
        cache, scratch, taken = [], [], []  # taken: every layer's workspaces, in one list
        layer_in = X
        cell, pool = _kernels.CELLS[self.cell], self.workspaces
        kept = None if for_backward else getattr(self, "_packed", None)  # None: pickled before
        ln_kernel = self._ln_kernel(training)
        with single_threaded_blas():
            for k, views in enumerate(self._directions()):
                Y = np.empty((B, T, D * H), self.dtype)
                workspaces, h_masks = [], []
                if ln_kernel:
                    for view in views:
                        ws, h_mask = self._ln_forward(view, layer_in, h0, c0, Y, hN, cN,
                                                      lengths, training, n_threads)
                        workspaces.append(ws)
                        h_masks.append(h_mask)
                else:
                    if reduced is not None and not for_backward:
                        views = self._reduced_forward(reduced, views, layer_in, h0, c0, Y, hN,
                                                      cN, lengths, n_threads)
                    workspaces = _kernels.layer_forward(cell, layer_in, views, h0, c0, Y, hN,
                                                        cN, lengths, pool, scratch,
                                                        for_backward, n_threads, kept,
                                                        self.flat_params)
                mask = None
                if training and self.dropout > 0 and k < self.num_layers - 1:
                    keep = 1.0 - self.dropout
                    mask = (self.rng.random(Y.shape) < keep).astype(self.dtype) / keep
                cache.append((layer_in, workspaces, mask, h_masks))
                taken += workspaces
                if self.layer_outputs is not None:  # a network's residual / norm / dropout
                    Y = self.layer_outputs[k].forward(Y, layer_in, valid_steps(lengths, B, T),
                                                      training, keep=for_backward)
                layer_in = Y if mask is None else Y * mask
        if for_backward:  # inference leaves the training cache alone: a fit in another
            self._cache = (cache, lengths, B, T)  # thread may be between forward and backward
        else:
            pool.give(*scratch, *taken)
        return layer_in, State(hN, cN)

    def _reduced_forward(self, reduced, views, X, h0, c0, Y, hN, cN, lengths, n_threads):
        """Run the directions of one layer that the reduced network holds with its
        weights (inference); returns the other views, for the plain kernel."""
        rest = []
        for view in views:
            if not reduced.runs(view):
                rest.append(view)
                continue
            reduced.forward_direction(self, view, X, _row(h0, view.index),
                                      _row(c0, view.index), Y, view.reverse * self.hidden_size,
                                      hN[view.index], _row(cN, view.index), lengths, n_threads)
        return tuple(rest)

    def _ln_forward(self, view, X, h0, c0, Y, hN, cN, lengths, training, n_threads):
        """One layer direction through the layer-norm / recurrent-dropout kernel;
        returns its workspace and the recurrent dropout mask (B, H) or None."""
        B, T, I = X.shape
        H, cell = self.hidden_size, _kernels.CELLS[self.cell]
        h_mask = None
        if training and self.recurrent_dropout > 0:  # one mask per sequence
            keep = 1.0 - self.recurrent_dropout
            h_mask = (self.rng.random((B, H)) < keep).astype(self.dtype) / keep
        ws = self.workspaces.take(_kernels.ln_workspace_size(cell=cell, B=B, T=T, I=I, H=H))
        if lengths is not None:  # backward multiplies the padded rows' zero gradients by
            ws.fill(0)  # their unwritten aux / rstd: a reused buffer's NaN must not reach them
        _kernels.ln_forward(cell=cell, X=X, W_ih=view.W_ih, W_hh=view.W_hh, b_ih=view.b_ih,
                            b_hh=view.b_hh, norms=self.norms(view.layer, view.reverse)[0],
                            h0=_row(h0, view.index), c0=_row(c0, view.index), mask=h_mask,
                            Y=Y, y_col=view.reverse * H, hN=hN[view.index],
                            cN=_row(cN, view.index), lengths=lengths, reverse=view.reverse,
                            ws=ws, n_threads=n_threads)
        return ws, h_mask

    def _ln_backward(self, view, X, ws, h_mask, dY, dhN, dcN, dX, dh0, dc0, lengths,
                     n_threads, input_grad_only=False):
        """Backward of _ln_forward; dX accumulates for the reverse direction.
        input_grad_only: the parameter gradients go to scratch (grads stay)."""
        B, T, I = X.shape
        H, cell = self.hidden_size, _kernels.CELLS[self.cell]
        norms, norm_grads = self.norms(view.layer, view.reverse)
        grads = dict(weight_ih=view.dW_ih, weight_hh=view.dW_hh, bias_ih=view.db_ih,
                     bias_hh=view.db_hh, **norm_grads)
        if input_grad_only:
            grads = {name: np.zeros_like(g) for name, g in grads.items()}
        bws = self.workspaces.take(
            _kernels.ln_backward_workspace_size(cell=cell, B=B, T=T, I=I, H=H))
        _kernels.ln_backward(cell=cell, X=X, W_ih=view.W_ih, W_hh=view.W_hh, b_ih=view.b_ih,
                             b_hh=view.b_hh, norms=norms, mask=h_mask, ws=ws, dY=dY,
                             y_col=view.reverse * H, dhN=_row(dhN, view.index),
                             dcN=_row(dcN, view.index), dX=dX, accumulate_dx=view.reverse,
                             grads=grads, dh0=dh0[view.index], dc0=_row(dc0, view.index),
                             lengths=lengths, reverse=view.reverse, bws=bws,
                             n_threads=n_threads)
        self.workspaces.give(bws)

    def backward(self, dY, dhN=None, dcN=None, input_grad=True, input_grad_only=False):
        """Backpropagate through the last training (or keep_for_backward) forward.

        dY : gradient of the loss w.r.t. Y (or None); dhN/dcN w.r.t. the final
        states. Parameter gradients are accumulated into ``grads``, unless
        input_grad_only: then the kernels compute dX alone and ``grads`` is
        left as it is.
        Returns dX (None when input_grad is False) and State(dh0, dc0) (dc0 None
        but for LSTM).
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        cache, lengths, B, T = self._cache
        H, D = self.hidden_size, self.num_directions
        lstm = self.cell == "lstm"
        shape = (B, T, D * H)
        if dY is not None:
            dY = np.ascontiguousarray(dY, dtype=self.dtype)
            if dY.shape != shape:
                raise ValueError(f"dY must have shape {shape}, got {dY.shape}")
        if dhN is not None:
            dhN = self._check_state(dhN, B, "dhN")
        if dcN is not None:
            dcN = self._check_state(dcN, B, "dcN") if lstm else None
        n_threads = resolve_n_threads(self.n_threads)
        dh0 = np.empty((self.num_layers * D, B, H), self.dtype)
        dc0 = np.empty_like(dh0) if lstm else None
        scratch, taken, cell, pool = [], [], _kernels.CELLS[self.cell], self.workspaces
        directions = self._directions()
        with single_threaded_blas():
            for k in range(self.num_layers - 1, -1, -1):
                layer_in, workspaces, _, h_masks = cache[k]
                taken += workspaces
                d_input = None  # the residual connection's share of dX
                if self.layer_outputs is not None:
                    dY, d_input = self.layer_outputs[k].backward(dY, input_grad_only)
                need_dx = k > 0 or input_grad or input_grad_only
                dX = np.empty(layer_in.shape, self.dtype) if need_dx else None
                if h_masks:
                    for view, ws, h_mask in zip(directions[k], workspaces, h_masks):
                        self._ln_backward(view, layer_in, ws, h_mask, dY, dhN, dcN, dX, dh0,
                                          dc0, lengths, n_threads, input_grad_only)
                else:
                    _kernels.layer_backward(cell, layer_in, directions[k], workspaces, dY, dhN,
                                            dcN, dX, dh0, dc0, lengths, pool, scratch,
                                            input_grad_only, n_threads)
                if d_input is not None and dX is not None:
                    dX += d_input
                if k > 0:
                    prev_mask = cache[k - 1][2]
                    dY = dX if prev_mask is None else dX * prev_mask
                else:
                    dY = dX
        self._cache = None
        pool.give(*scratch, *taken)
        return dY, State(dh0, dc0)


_STACK_PARAMETERS = """Parameters
    ----------
    input_size : int
        Features per time step of X.

    hidden_size : int
        Units per layer and direction (H).

    num_layers : int, default=1
        Layers stacked on each other; layer k > 0 reads layer k-1's outputs.
{extra}
    bidirectional : bool, default=False
        Also run every layer backwards; the reverse direction's outputs follow
        the forward ones on the last axis, parameters get the suffix
        ``_reverse``.

    dropout : float, default=0.0
        Dropout on the outputs of every layer but the last, in training only.

    dtype : float32 or float64, default=float32
        Precision of parameters and computations.

    n_threads : int or None, default=None
        None: what OpenMP allows; -1: every CPU; else that many.

    random_state : int, Generator or None, default=None
        Seeds PyTorch's default initialisation U(-1/sqrt(H), 1/sqrt(H)) and
        dropout.

    flat_params, flat_grads : ndarray of shape (n_params,), default=None
        Buffers to place parameters and gradients in (views are taken), e.g.
        a network's; None: the stack allocates its own.

    layer_norm : bool, default=False
        Layer-normalized cells (Ba, Kiros & Hinton 2016; LSTM and GRU only):
        the input and recurrent pre-activations, and an LSTM's cell state,
        are normalized with their own gain and bias (``ln_ih_weight_l0``, ...).

    recurrent_dropout : float, default=0.0
        Dropout on h with one mask per sequence, the same at every step (Gal &
        Ghahramani 2016, Keras's ``recurrent_dropout``); training only; LSTM
        and GRU only.

    Attributes
    ----------
    flat_params, flat_grads : ndarray of shape (n_params,)
        Every parameter and gradient, in PyTorch's order.

    params, grads : dict of str to ndarray
        Views into the flat buffers under PyTorch's names, e.g.
        ``weight_ih_l0`` ({G}*H, input_size), ``weight_hh_l0`` ({G}*H, H),
        ``bias_ih_l0`` and ``bias_hh_l0`` ({G}*H,).

    n_gates : int
        Gate blocks per weight matrix ({G}: {gates}).

    num_directions : int
        2 when bidirectional, else 1.
"""

_STACK_EXAMPLES = """
    Examples
    --------
    >>> import numpy as np
    >>> from fastrnn import {name}
    >>> stack = {name}(input_size=3, hidden_size=4, bidirectional=True, random_state=0)
    >>> X = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    >>> Y, state = stack.forward(X, lengths=[5, 2])
    >>> Y.shape, state.h.shape, stack.params["weight_ih_l0"].shape
    ((2, 5, 8), (2, 2, 4), ({G4}, 3))
    >>> bool(np.all(Y[1, 2:] == 0))        # outputs past a sample's length are 0
    True
"""


def _stack_docstring(summary, name, gates, G, extra=""):
    """A numpydoc docstring of one stack class: its summary and example around
    the Parameters and Attributes the three stacks share."""
    return (f"{summary}\n\n    "
            + _STACK_PARAMETERS.format(extra=extra, G=G, gates=gates)
            + _STACK_EXAMPLES.format(name=name, G4=G * 4))


class LSTM(RecurrentStack):
    __doc__ = _stack_docstring(
        """LSTM stack (long short-term memory), as ``torch.nn.LSTM(batch_first=True)``.

    Gates i, f, g, o; ``forward`` returns Y and ``State(h, c)`` of the last
    step of every sample; ``backward`` returns dX and ``State(dh0, dc0)``.""",
        "LSTM", "i, f, g, o", 4)
    cell = "lstm"
    n_gates = _kernels.gates("lstm")


class GRU(RecurrentStack):
    __doc__ = _stack_docstring(
        """GRU stack (gated recurrent unit), as ``torch.nn.GRU(batch_first=True)``.

    Gates r, z, n with n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) and
    h' = (1 - z) * n + z * h; ``forward`` returns Y and ``State(h, None)``.""",
        "GRU", "r, z, n", 3)
    cell = "gru"
    n_gates = _kernels.gates("gru")


class RNN(RecurrentStack):
    __doc__ = _stack_docstring(
        """Elman RNN stack, as ``torch.nn.RNN(batch_first=True)``.

    h' = nonlinearity(W_ih x + b_ih + W_hh h + b_hh); ``forward`` returns Y
    and ``State(h, None)``.""",
        "RNN", "a single block", 1, extra="""
    nonlinearity : {"tanh", "relu"}, default="tanh"
        The activation.
""")
    n_gates = _kernels.gates("rnn_tanh")

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.cell = "rnn_" + nonlinearity
        super().__init__(input_size, hidden_size, num_layers, **kwargs)


STACKS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
