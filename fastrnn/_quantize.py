"""Reduced-precision weights for inference: ``inference_dtype="bfloat16"`` or
``"int8"`` on fitted estimators, SequenceGenerator and Forecaster.

The weights of a fitted float32 network are converted once (per network and
kind, cached here until the weights change: a training forward, a load, or
``forget``) and packed for the C kernels of csrc/quant.h; activations and
accumulation stay float32 (int8: int32 accumulation, dequantized to float32)
and the gate math is the usual one. What runs reduced: the input projection
and the recurrent W_hh product of every recurrent layer and direction (C,
one call per layer and direction) and the dense head; in generation
(SequenceGenerator.generate) the same products inside the C sampling loop
(fr_qgenerate). What stays float32:
any weight with fewer than REDUCED_MIN_DIM rows or columns (below), the
embedding lookup, layer-normalized cells (``layer_norm=True``: their
layers run the float32 kernels), the norms and residuals between layers, and
every training, explain and validation pass. float64 models are refused: a
reduced copy of float64 weights would be a different model, fit it with
dtype="float32".

int8: weights symmetric per output row, q = round(w / s) with s = max|w| /
127; activations asymmetric u8 per row of each GEMM's input (the range
always holds 0), so that VNNI's ``vpdpbusd`` (u8 x s8) applies; the zero
point is taken out with the weights' row sums. bfloat16: weights and
activations rounded to nearest even; ``vdpbf16ps`` where the CPU has
AVX512_BF16. Both keep the recurrent weights W_hh in the "int16" kind
(recurrent_kind, below): 16-bit fixed point, weights symmetric per row with
up to 13 bits (int16_weight_max), activations symmetric per row with 12 bits
(INT16_ACTIVATION_MAX), exact int32 sums (VNNI's ``vpdpwssd``). So
"bfloat16" means 16-bit weights: bfloat16 W_ih and head, 16-bit fixed point
W_hh. ``reference_matmul`` is the same arithmetic in NumPy (the tests'
oracle).
"""
import weakref

import numpy as np

from fastrnn import _kernels, _packed

INFERENCE_DTYPES = (None, "float32", "bfloat16", "int8")

# A weight with fewer rows or columns than this stays float32 in a reduced
# network: a GEMM with a tiny K (a univariate series' input projection, I=1)
# or a tiny N (a regressor's one-output head) streams a few hundred bytes of
# weights and costs as much to convert its activation rows as to multiply,
# so reduction buys no speed, while its rounding is not averaged over a long
# dot product (bfloat16 rounds a one-feature input to 8 bits) and a tiny
# head's lands on the prediction itself. 4 is one int8 lane group. Applied
# per weight, so fr_qforward, head_forward and fr_qgenerate all follow it.
REDUCED_MIN_DIM = 4


# The int16 kind (an int8 or bfloat16 network's W_hh): activations x ~ sa * a with |a| <=
# INT16_ACTIVATION_MAX (12 bits); weights w ~ scale * q with |q| <=
# int16_weight_max(cols) (13 bits up to 256 columns, fewer beyond), so that
# every int32 sum of a row is exact: cols * 2047 * max|q| < 2**31. Why W_hh
# needs it: its per-row int8 rounding moved a well-fitted Mackey-Glass
# forecaster's MSE by -10.8% .. +20% (hidden 64, seeds 0-7), bfloat16 by
# -3.1% .. +2.2%, 13-bit weights and 12-bit activations by under 0.6%; int8
# with a scale per group of 8 columns still moved it by up to 14%
# (bench/NOTES.md). It runs at bfloat16's speed (2 bytes per weight, both).
# W_ih and the head keep the network's kind: their rounding moved it far less
# (a 2-layer model: layer 1's int8 W_ih alone under 0.7%, the whole bfloat16
# model with int16 W_hh under 0.4%), and W_ih's product runs once for all steps.
INT16_ACTIVATION_MAX = 2047
INT16_WEIGHT_MAX = 4095
INT16_MAX_COLS = (2**31 - 1) // (INT16_ACTIVATION_MAX * 127)  # past it: no finer than int8


# An int8 or bfloat16 network keeps W_hh in the int16 kind while its weight
# range (int16_weight_max, which falls as columns grow) is at least this: from
# there its rounding of a W_hh product is at least as fine as the kind's own.
# int8: its 127 levels (up to INT16_MAX_COLS columns). bfloat16: 8 significant
# bits, which 512 levels match (up to 2,048 columns): rms relative error of a
# product with normal weights and tanh-like activations, int16 vs bfloat16,
# 4.1e-4 vs 2.3e-3 at 256 columns, 1.1e-3 vs 2.4e-3 at 1,024, 2.0e-3 vs 2.2e-3
# at 2,048, 4.5e-3 vs 2.3e-3 at 4,096 (bench/NOTES.md).
INT16_FINER_FROM = {"int8": 127, "bfloat16": 512}


def int16_weight_max(cols):
    """The largest |q| of an int16 weight of cols columns (padded to the
    kernels' pairs): its products with 12-bit activations sum exactly in int32."""
    padded = cols + cols % 2
    return min(INT16_WEIGHT_MAX, (2**31 - 1) // (INT16_ACTIVATION_MAX * padded))


def inference_kind(inference_dtype):
    """"bfloat16" or "int8", or None for full precision (None / "float32")."""
    if inference_dtype not in INFERENCE_DTYPES:
        raise ValueError(f"inference_dtype must be one of {INFERENCE_DTYPES}, got "
                         f"{inference_dtype!r}")
    return None if inference_dtype in (None, "float32") else inference_dtype


def bfloat16_bits(x):
    """The bfloat16 bits (uint16) of finite float32 values, rounded to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)


def bfloat16_values(bits):
    """float32 values of bfloat16 bits."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def weight_kind(W, kind):
    """The kind a reduced network keeps W in: kind, or "float32" for a weight
    with a dimension below REDUCED_MIN_DIM."""
    return kind if min(np.shape(W)) >= REDUCED_MIN_DIM else "float32"


def recurrent_kind(W_hh, kind):
    """The kind a reduced network keeps a recurrent weight W_hh in: "int16"
    while that rounds at least as finely as the network's kind
    (INT16_FINER_FROM), else weight_kind's."""
    kind = weight_kind(W_hh, kind)
    finer_from = INT16_FINER_FROM.get(kind)
    if finer_from is not None and int16_weight_max(np.shape(W_hh)[1]) >= finer_from:
        return "int16"
    return kind


def _on_a_cache_line(a):
    """a's elements, 1-D, in a new array that starts on a 64-byte cache line:
    the kernels' vector loads of its panels then never span two lines (NumPy
    puts large arrays 0 or 32 bytes past one; measured at B=1 T=150 I=256 H=256,
    +32 bytes: int8 inference 1.04x, bfloat16 1.06x slower; bench/NOTES.md)."""
    buf = np.empty(a.nbytes + 64, np.uint8)
    skip = -buf.ctypes.data % 64
    out = buf[skip:skip + a.nbytes].view(a.dtype)
    out[:] = a.reshape(-1)
    return out


class ReducedWeight:
    """A (rows, cols) weight in reduced precision, packed for csrc/quant.h.

    values : int8 q (int8), int16 q (int16), bfloat16 bits (bfloat16) or the
        float32 weight (float32: a weight weight_kind keeps), (rows, cols)
    scale : float32 (rows,), int8 and int16: w ~ scale[n] * q[n, k]
    row_sum : int32 (rows,), int8 only: sum over k of q[n, k]
    packed : the panels of quant.h's layout (1-D)
    """

    def __init__(self, W, kind):
        W = np.ascontiguousarray(W, dtype=np.float32)
        if W.ndim != 2 or not np.all(np.isfinite(W)):
            raise ValueError("a reduced weight needs a finite 2-D matrix")
        self.kind = kind
        self.rows, self.cols = W.shape
        self.scale = self.row_sum = None
        if kind == "int8":
            self.scale, self.values = _symmetric_rows(W, 127, np.int8)
            self.row_sum = self.values.sum(axis=1, dtype=np.int32)
        elif kind == "int16":
            if self.cols > INT16_MAX_COLS:
                raise ValueError(f"an int16 weight takes at most {INT16_MAX_COLS} columns")
            self.scale, self.values = _symmetric_rows(W, int16_weight_max(self.cols), np.int16)
        elif kind == "bfloat16":
            self.values = bfloat16_bits(W)
        elif kind == "float32":
            self.values = W
        else:
            raise ValueError(f"unknown reduced kind {kind!r}")
        self.packed = self._pack(self.values)

    @property
    def shape(self):
        return (self.rows, self.cols)

    def _pack(self, values):
        group, panel = _kernels.qgroup(self.kind), _kernels.Q_PANEL
        rows = -(-self.rows // panel) * panel
        cols = -(-self.cols // group) * group
        padded = np.zeros((rows, cols), values.dtype)
        padded[:self.rows, :self.cols] = values
        panels = padded.reshape(rows // panel, panel, cols // group, group)
        return _on_a_cache_line(panels.transpose(0, 2, 1, 3))

    def dequantized(self):
        """The float32 weight this one stands for."""
        if self.kind in ("int8", "int16"):
            return self.values.astype(np.float32) * self.scale[:, None]
        if self.kind == "float32":
            return self.values
        return bfloat16_values(self.values)


def _symmetric_rows(W, qmax, dtype):
    """(scale (rows,), q) with W ~ scale[:, None] * q, |q| <= qmax, per row."""
    amax = np.abs(W).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(qmax), 1).astype(np.float32)
    return scale, np.clip(np.rint(W / scale[:, None]), -qmax, qmax).astype(dtype)


def _quantize_rows_s16(A):
    """The kernels' per-row symmetric activations of the int16 kind: (a, scale)."""
    amax = np.abs(A).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(INT16_ACTIVATION_MAX), 1).astype(np.float32)
    inv = (np.float32(1) / scale)[:, None]
    a = np.clip(np.rint(A * inv), -INT16_ACTIVATION_MAX, INT16_ACTIVATION_MAX)
    return a.astype(np.int64), scale


def _quantize_rows_u8(A):
    """The kernels' per-row asymmetric u8 activations: (u, scale, zero point)."""
    lo = np.minimum(A.min(axis=1), 0)
    hi = np.maximum(A.max(axis=1), 0)
    scale = (hi - lo) / np.float32(255)
    scale = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / scale)[:, None]
    zp = np.clip(np.rint(-lo[:, None] * inv), 0, 255)
    u = np.clip(np.rint(A * inv) + zp, 0, 255)
    return u.astype(np.int64), scale, zp[:, 0].astype(np.int64)


def reference_matmul(A, w):
    """A (M, cols) W^T in NumPy with the kernels' arithmetic (the oracle of
    _kernels.qgemm): int8 and int16 exact integer sums, bfloat16 the pairwise
    float32 accumulation of vdpbf16ps (each pair: the odd element's product
    first), float32 the float32 sum in k order."""
    A = np.ascontiguousarray(A, dtype=np.float32)
    if w.kind == "float32":
        acc = np.zeros((A.shape[0], w.rows), np.float32)
        for k in range(w.cols):
            acc += A[:, k, None] * w.values[None, :, k]
        return acc
    if w.kind == "int8":
        u, sa, zp = _quantize_rows_u8(A)
        acc = u @ w.values.T.astype(np.int64) - zp[:, None] * w.row_sum[None, :]
        return acc.astype(np.float32) * (sa[:, None] * w.scale[None, :])
    if w.kind == "int16":
        a, sa = _quantize_rows_s16(A)
        acc = a @ w.values.T.astype(np.int64)
        return acc.astype(np.float32) * (sa[:, None] * w.scale[None, :])
    a = bfloat16_values(bfloat16_bits(A))
    wv = bfloat16_values(w.values)
    if w.cols % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        wv = np.pad(wv, ((0, 0), (0, 1)))
    acc = np.zeros((A.shape[0], w.rows), np.float32)
    for k in range(0, a.shape[1], 2):
        acc += a[:, k + 1, None] * wv[None, :, k + 1]
        acc += a[:, k, None] * wv[None, :, k]
    return acc


def _reduced(W, kind):
    return ReducedWeight(W, weight_kind(W, kind))


def _reduced_recurrent(W_hh, kind):
    return ReducedWeight(W_hh, recurrent_kind(W_hh, kind))


class ReducedNetwork:
    """A stack's weights in one reduced kind: per direction index (W_ih, W_hh)
    (none for layer-normalized stacks, which stay float32), and a network's
    head (head_weight; None: no head), each in weight_kind's kind (W_hh in
    recurrent_kind's). Passed to RecurrentStack.forward."""

    def __init__(self, stack, kind, head_weight=None):
        self.kind = kind
        self.directions = {}
        if not stack.layer_norm:
            for k in range(stack.num_layers):
                for d in range(stack.num_directions):
                    view = stack.direction(k, d)
                    self.directions[view.index] = (_reduced(view.W_ih, kind),
                                                   _reduced_recurrent(view.W_hh, kind))
        self.head = None if head_weight is None else _reduced(head_weight, kind)

    def runs(self, view):
        """Whether this stack direction runs with reduced weights."""
        return view.index in self.directions

    def forward_direction(self, stack, view, X, h0, c0, Y, y_col, hN, cN, lengths, n_threads):
        """One layer direction of stack (arguments as _kernels.forward's)."""
        W_ih, W_hh = self.directions[view.index]
        _kernels.qforward(cell=_kernels.CELLS[stack.cell], W_ih=W_ih, W_hh=W_hh,
                          b_ih=view.b_ih, b_hh=view.b_hh, X=X, h0=h0, c0=c0, Y=Y, y_col=y_col,
                          hN=hN, cN=cN, lengths=lengths, reverse=view.reverse,
                          n_threads=n_threads)

    def head_forward(self, features, bias, n_threads=1):
        """features W_head^T + bias, (M, outputs) float32."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        out = np.empty((features.shape[0], self.head.rows), np.float32)
        _kernels.qgemm(w=self.head, A=features, C=out, n_threads=n_threads)
        out += bias
        return out


def reduced_generation_args(args, stack, reduced):
    """fastrnn.layers.generation_args' keyword arguments for _kernels.qgenerate:
    the recurrent weights and the head of ``reduced`` (the ReducedNetwork of
    the same stack and head) in place of the float32 ones."""
    layers = [stack.direction(k) for k in range(stack.num_layers)]
    if not all(reduced.runs(view) for view in layers) or reduced.head is None:
        raise ValueError("reduced generation needs reduced weights for every layer and the "
                         "head (layer-normalized stacks generate in float32 only)")
    pairs = [reduced.directions[view.index] for view in layers]
    return dict(args, W_ih=[ih for ih, _ in pairs], W_hh=[hh for _, hh in pairs],
                head_W=reduced.head)


_CACHE = weakref.WeakKeyDictionary()  # network -> {kind: ReducedNetwork}


def reduced_network(net, inference_dtype):
    """The cached ReducedNetwork of net for inference_dtype (converted on first
    use), or None for full precision. Raises ValueError for a float64 network."""
    kind = inference_kind(inference_dtype)
    if kind is None:
        return None
    if net.dtype != np.float32:
        raise ValueError(f"inference_dtype={inference_dtype!r} needs a float32 model; this "
                         f"one is {net.dtype} (fit it with dtype='float32')")
    kinds = _CACHE.setdefault(net, {})
    if kind not in kinds:
        kinds[kind] = ReducedNetwork(net.stack, kind, net.params["head.weight"])
    return kinds[kind]


def forget(net):
    """Drop net's reduced weights (and its stack's packed ones): its weights
    have changed."""
    _CACHE.pop(net, None)
    _packed.written(net.flat_params)
