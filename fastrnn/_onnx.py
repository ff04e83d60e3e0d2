"""ONNX models of one recurrent layer, for the inference rivals of the benchmark.

ONNX Runtime is the runtime people serve recurrent models with; its contenders
in ``fastrnn bench`` run the same weights as fastrnn and PyTorch. The graph is
written with ``onnx.helper`` directly (no exporter): Transpose to time-major,
one ONNX LSTM/GRU/RNN node, Squeeze of the direction axis, Transpose back,
which is what PyTorch's exporter emits for ``batch_first=True``.

Gate orders differ: PyTorch keeps LSTM gates as (i, f, g, o) and GRU gates as
(r, z, n); ONNX wants (i, o, f, c) and (z, r, h). GRU uses
``linear_before_reset=1``, PyTorch's (and fastrnn's) reset-after form.
"""
import numpy as np

# rows of PyTorch's gate blocks, in the order ONNX stacks them
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}
ONNX_OP = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
OPSET = 17


def _reorder(block, cell, hidden):
    gates = [block[k * hidden:(k + 1) * hidden] for k in range(len(ONNX_GATE_ORDER[cell]))]
    return np.concatenate([gates[k] for k in ONNX_GATE_ORDER[cell]])[None]


def rnn_model(cell, weights, hidden):
    """ModelProto of one unidirectional layer: X (B, T, I) float32 -> Y (B, T, H).

    weights: PyTorch's names for layer 0 (weight_ih_l0, weight_hh_l0,
    bias_ih_l0, bias_hh_l0) as float32 arrays.
    """
    from onnx import TensorProto, helper, numpy_helper
    W = _reorder(weights["weight_ih_l0"], cell, hidden)
    R = _reorder(weights["weight_hh_l0"], cell, hidden)
    bias = np.concatenate([_reorder(weights["bias_ih_l0"], cell, hidden),
                           _reorder(weights["bias_hh_l0"], cell, hidden)], axis=1)
    inits = [numpy_helper.from_array(a.astype(np.float32), name)
             for a, name in ((W, "W"), (R, "R"), (bias, "B"))]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "direction_axis"))
    attrs = {"hidden_size": hidden}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    nodes = [
        helper.make_node("Transpose", ["X"], ["X_tbi"], perm=[1, 0, 2]),
        helper.make_node(ONNX_OP[cell], ["X_tbi", "W", "R", "B"], ["Y_tdbh"], **attrs),
        helper.make_node("Squeeze", ["Y_tdbh", "direction_axis"], ["Y_tbh"]),
        helper.make_node("Transpose", ["Y_tbh"], ["Y"], perm=[1, 0, 2]),
    ]
    n_in = weights["weight_ih_l0"].shape[1]
    graph = helper.make_graph(
        nodes, f"fastrnn_{cell}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", "time", n_in])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", "time", hidden])],
        initializer=inits)
    # the oldest IR version that carries OPSET, not the onnx package's newest:
    # onnx 1.23 writes IR 14, which onnxruntime 1.30 refuses ("max supported
    # IR version: 13")
    opsets = [helper.make_opsetid("", OPSET)]
    return helper.make_model(graph, opset_imports=opsets,
                             ir_version=helper.find_min_ir_version_for(opsets))


def session(model, threads, quantize=False):
    """An ONNX Runtime session of model with `threads` intra-op threads;
    quantize=True first applies ONNX Runtime's dynamic int8 quantization."""
    import onnxruntime as ort
    data = model.SerializeToString()
    if quantize:
        data = _quantized(data)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _quantized(data):
    """ONNX Runtime's dynamic int8 model of data. Without VNNI its u8 x s8
    kernel adds pairs of products in saturating 16-bit lanes (vpmaddubsw):
    on a Zen 3 core the LSTM test model's outputs moved by 0.31. ONNX
    Runtime's documentation prescribes 7-bit weights there (reduce_range),
    which brought it to 0.004; CPUs with AVX512-VNNI keep 8 bits."""
    import os
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from . import _kernels
    reduce_range = not _kernels.qfast_available("int8")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(data)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, reduce_range=reduce_range)
        with open(dst, "rb") as f:
            return f.read()
