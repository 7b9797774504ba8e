"""Fold a QONNX / ONNX graph of a binarized network into bnnhw's layer kinds.

The graph is cleaned with qonnx's own ``cleanup_model`` (shape inference, constant folding,
unique names; quantizers kept), then walked from its input to its output as a chain. The
walk keeps one of three states for the tensor it has reached:

``Raw``
    the network's input, ``x = u / divisor`` for unsigned ``input_bits``-bit integers ``u``
    (or ``u * q`` after an input Quant that keeps every ``u``), with elementwise nodes waiting
    for a quantizer;
``Bits``
    a binary tensor whose values are ``v0`` (bit 0) or ``v1`` (bit 1), ONNX shape ``(C, H,
    W)`` or flattened;
``Acc``
    a linear node's output (MatMul, Gemm, Conv), ``base + slope * a`` per channel for an
    integer ``a``, with elementwise nodes waiting for a quantizer (a hidden layer) or the end
    of the graph (the output layer).

Quantizers close layers: their integer thresholds come from the executor itself
(:mod:`bnnhw.importer.chain`). Anything else is refused with one line naming the node, its op
type and what is supported.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, artifact
from ..kinds import (BinarizeLayer, ConvLayer, DenseLayer, FirstConvLayer, FirstLayer,
                     MaxPoolLayer, OutputLayer)
from .chain import Chain, ImportRefused, fit_scores, fit_thresholds

__all__ = ["SUPPORTED", "Imported", "Tap", "read_model", "import_model"]

SUPPORTED = ("BipolarQuant, 1-bit Quant, one-threshold MultiThreshold, MatMul, Gemm, Conv, "
             "BatchNormalization, MaxPool, Reshape, Flatten, Mul, Add, Sub, Div, Identity, "
             "Dropout, and a final ArgMax or TopK")
_ELEMENTWISE = {"Mul", "Add", "Sub", "Div", "BatchNormalization", "Identity", "Dropout"}
_QUANTIZERS = {"BipolarQuant", "Quant", "MultiThreshold"}
_LINEAR = {"MatMul", "Gemm", "Conv"}
_SHAPING = {"Reshape", "Flatten"}
_FINAL = {"ArgMax", "TopK"}


@dataclass(frozen=True)
class Tap:
    """Where layer ``layer``'s output bits are in the graph: tensor ``name``, bit 1 where it
    equals ``high``; ``shape`` the ``(C, H, W)`` whose ONNX order (C, H, W) maps to bnnhw's
    stream order."""
    layer: int
    name: str
    high: float
    shape: tuple


@dataclass
class Imported:
    """An imported network and what checking it against the graph needs."""
    network: object
    model: object            # the cleaned qonnx ModelWrapper
    input_name: str
    input_shape: tuple       # ONNX shape of the input, batch included
    divisor: int
    taps: list
    classes_output: bool    # the graph's output holds class indices (ArgMax, TopK)
    output_name: str
    scores_name: str = ""    # the graph's float class scores
    float_ties: int = 0      # popcounts of one class that float scores round together
    notes: list = field(default_factory=list)


def _name(node):
    return node.name or (node.output[0] if node.output else node.op_type)


def read_model(path):
    """The model at ``path``, cleaned by qonnx; :class:`ImportRefused` if it cannot be read."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model
    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    try:
        proto = onnx.load(str(path))
    except Exception as error:
        raise ImportRefused(f"{path}: not an ONNX model ({_line(error)})") from None
    if not proto.graph.node:
        raise ImportRefused(f"{path}: the graph has no nodes")
    for node in proto.graph.node:
        if node.op_type in _QUANTIZERS | {"Trunc"} and node.domain in ("", "onnx.brevitas"):
            node.domain = "qonnx.custom_op.general"
    try:
        model = cleanup_model(ModelWrapper(proto))
        _shape_outputs(model)
    except Exception as error:
        raise ImportRefused(f"{path}: qonnx cannot clean the graph up ({_line(error)})") from None
    for node in model.graph.node:
        for name in node.output:
            if name and model.get_tensor_shape(name) is None:
                raise ImportRefused(f"{path}: node {_name(node)} ({node.op_type}): shape "
                                    f"inference gives its output no shape (a type or shape "
                                    f"error in the graph, here or before)")
    return model


def _shape_outputs(model):
    """Give graph outputs saved without a shape the shape inference finds for them (the
    executor and a change of batch size need it)."""
    from onnx import TensorProto, helper
    from qonnx.transformation.infer_shapes import InferShapes
    graph = model.graph
    missing = [o for o in graph.output if not o.type.tensor_type.shape.dim]
    if not missing:
        return
    names = [o.name for o in missing]
    for output in missing:
        graph.output.remove(output)
    model = model.transform(InferShapes())
    for name in names:
        shape = model.get_tensor_shape(name)
        for info in list(graph.value_info):
            if info.name == name:
                graph.value_info.remove(info)
        # ArgMax and TopK indices are int64; everything else float.
        producer = model.find_producer(name)
        elem = (TensorProto.INT64 if producer is not None and producer.op_type in _FINAL
                else TensorProto.FLOAT)
        graph.output.append(helper.make_tensor_value_info(name, elem, shape))


def _line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


@dataclass
class _Raw:
    name: str
    shape: tuple              # ONNX shape without the batch
    image: tuple              # (C, H, W) of the input
    values: object            # u (int array) -> float32 values the graph sees
    pending: list = field(default_factory=list)
    chain_input: str = ""


@dataclass
class _Bits:
    name: str
    shape: tuple
    image: tuple
    v0: float
    v1: float


@dataclass
class _Acc:
    name: str
    shape: tuple
    build: object             # (thresholds, flipped) -> layer, or (scales, offsets, flipped)
    base: np.ndarray
    slope: np.ndarray
    lo: int
    hi: int
    rank: int
    image: tuple              # (C, H, W) the output has in bnnhw
    scores: bool              # an output layer is possible (binary input)
    source: str = ""          # the linear node's output, where the chain starts
    pending: list = field(default_factory=list)


def _stream_perm(image):
    """For a ``(C, H, W)`` tensor: the stream index of each value in ONNX (C, H, W) order."""
    c, h, w = image
    hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    perm = np.empty((c, h, w), np.int64)
    perm[cc, hh, ww] = (hh * w + ww) * c + cc
    return perm.ravel()


class _Walker:
    def __init__(self, model, path, input_bits, divisor):
        self.model, self.path = model, path
        self.input_bits, self.divisor = input_bits, divisor
        graph = model.graph
        self.constants = {init.name: model.get_initializer(init.name)
                          for init in graph.initializer}
        self.opsets = {o.domain: o.version for o in model.model.opset_import}
        self.opsets.setdefault("qonnx.custom_op.general", 1)
        self.layers, self.taps, self.notes = [], [], []
        self.float_ties = 0

    # ---- refusals -------------------------------------------------------------------------

    def refuse(self, node, message):
        raise ImportRefused(f"{self.path}: node {_name(node)} ({node.op_type}): {message}")

    def const(self, node, index, what):
        name = node.input[index] if index < len(node.input) else ""
        if not name or name not in self.constants:
            self.refuse(node, f"its {what} (input {index}) is not a constant; supported: "
                              f"constant weights and parameters")
        return np.asarray(self.constants[name])

    def attr(self, node, name, default=None):
        from onnx import helper
        for a in node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def chain(self, nodes, tensor, rank):
        return Chain(nodes=nodes, tensor=tensor, rank=rank, constants=self.constants,
                     opsets=self.opsets, where=str(self.path))

    # ---- the walk -------------------------------------------------------------------------

    def run(self):
        model, graph = self.model, self.model.graph
        inputs = [i for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise ImportRefused(f"{self.path}: the graph has {len(inputs)} inputs; supported: "
                                f"one input (the image)")
        if len(graph.output) != 1:
            raise ImportRefused(f"{self.path}: the graph has {len(graph.output)} outputs; "
                                f"supported: one (class scores or the class)")
        self.input_name = inputs[0].name
        shape = model.get_tensor_shape(self.input_name)
        if (not shape or len(shape) not in (2, 3, 4) or shape[0] != 1
                or not all(isinstance(d, int) and d > 0 for d in shape)):
            raise ImportRefused(f"{self.path}: input {self.input_name} has shape {shape}; "
                                f"supported: (1, N), (1, H, W) or (1, C, H, W)")
        self.input_shape = tuple(shape)
        image = ((shape[1], 1, 1) if len(shape) == 2 else
                 (1,) + tuple(shape[1:]) if len(shape) == 3 else tuple(shape[1:]))
        divisor = self.divisor
        state = _Raw(name=self.input_name, shape=tuple(shape[1:]), image=image,
                     values=lambda u: np.asarray(u, np.float32) / np.float32(divisor))
        self.image = image
        self.output_name = graph.output[0].name
        self.classes_output = False
        done = False
        for node in graph.node:
            computed = [name for name in node.input if name and name not in self.constants]
            if not computed:                       # constants only: fold them here
                self.fold_constant(node)
                continue
            if done:
                self.refuse(node, "follows the class output; supported: nothing after a "
                                  "final ArgMax or TopK")
            if len(computed) > 1 or computed[0] != state.name:
                self.refuse(node, "takes a tensor other than the chain's current one (a branch "
                                  "or a skip connection); supported: a chain of layers")
            if len(model.find_consumers(state.name) or []) > 1:
                self.refuse(node, f"its input {state.name} also feeds other nodes (a branch); "
                                  f"supported: a chain of layers")
            if node.op_type not in _ELEMENTWISE | _QUANTIZERS | _LINEAR | _SHAPING | _FINAL \
                    | {"MaxPool"}:
                self.refuse(node, f"op type not supported; supported: {SUPPORTED}")
            state, done = self.step(node, state)
        if not done:
            self.finish(state, graph.node[-1])
        return self

    def fold_constant(self, node):
        from qonnx.core.onnx_exec import execute_node
        context = {name: self.constants[name] for name in node.input if name}
        for name in node.output:
            context[name] = None
        try:
            execute_node(node, context, self.model.graph,
                         self.opsets.get(node.domain, self.opsets.get("", 11)))
        except Exception as error:
            self.refuse(node, f"cannot be evaluated on its constants ({_line(error)})")
        for name in node.output:
            if name:
                self.constants[name] = np.asarray(context[name])

    def step(self, node, state):
        op = node.op_type
        if op in _FINAL:
            if not isinstance(state, _Acc):
                self.refuse(node, "takes no class scores; supported: ArgMax or TopK after the "
                                  "last MatMul, Gemm or Conv and its scalar scales and offsets")
            self.check_final(node)
            self.finish(state, node)
            return state, True
        if isinstance(state, _Raw):
            return self.step_raw(node, state), False
        if isinstance(state, _Bits):
            return self.step_bits(node, state), False
        return self.step_acc(node, state), False

    # ---- the input ------------------------------------------------------------------------

    def step_raw(self, node, state):
        op = node.op_type
        if op in _ELEMENTWISE:
            if not state.pending:
                state.chain_input = state.name
            state.pending.append(node)
            state.name = node.output[0]
            return state
        if op in _SHAPING:
            if state.pending:
                self.refuse(node, "reshapes the input between elementwise nodes and their "
                                  "quantizer; supported: Reshape or Flatten before or after")
            state.shape = self.reshaped(node, state.shape)
            state.name = node.output[0]
            return state
        if op in _QUANTIZERS:
            return self.quantize_input(node, state)
        if op in _LINEAR:
            if state.pending:
                self.refuse(node, f"takes the input after {state.pending[-1].op_type} nodes "
                                  f"without a quantizer; supported: the pixels as they are, a "
                                  f"Quant that keeps them, or a binarizing quantizer")
            scale = float(state.values(np.array([1]))[0])
            return self.linear(node, state, binary=None, raw_scale=scale)
        self.refuse(node, f"cannot take the unquantized input; supported there: elementwise "
                          f"nodes and a quantizer, Reshape, Flatten, MatMul, Gemm, Conv")

    def quantize_input(self, node, state):
        self.check_quantizer(node, binary_only=False)
        nodes = state.pending + [node]
        first = state.chain_input if state.pending else state.name
        rank = len(state.shape) + 1
        channels = state.shape[0]
        u = np.arange(1 << self.input_bits)
        chain = self.chain(nodes, first, rank)
        x = np.repeat(state.values(u)[:, None], channels, axis=1)
        out = chain.run(x)
        levels = self.levels(node, rank, channels)
        if levels is not None:
            # A binarizing quantizer: one threshold per pixel value channel.
            v0, v1 = levels
            bits = out == v1
            ok = bits.sum(axis=0)
            thresholds = (len(u) - ok).astype(np.int64)
            want = u[:, None] >= thresholds[None, :]
            bad = np.flatnonzero((want != bits).any(axis=0))
            if bad.size:
                self.refuse(node, f"the binarized input is not 1 from a threshold up (value "
                                  f"channel {int(bad[0])}); supported: x >= t")
            thresholds = self.per_image_channel(node, thresholds, state)
            self.add_layer(BinarizeLayer(thresholds=thresholds), node.output[0], v1,
                           state.image)
            return _Bits(name=node.output[0], shape=state.shape, image=state.image, v0=v0, v1=v1)
        # A multi-bit quantizer on the input must keep every value: x = u * q.
        q = out[1, 0] if len(u) > 1 else 1.0
        if not (q > 0 and (out == (u.astype(np.float64) * q)[:, None].astype(
                np.float32).astype(np.float64)).all()):
            self.refuse(node, f"quantizes the {self.input_bits}-bit input to other values; "
                              f"supported: an input Quant that keeps every value (u * scale) "
                              f"or a binarizing one")
        scale = np.float32(q)
        return _Raw(name=node.output[0], shape=state.shape, image=state.image,
                    values=lambda v: np.asarray(v, np.float32) * scale)

    def per_image_channel(self, node, thresholds, state):
        c, h, w = state.image
        if len(thresholds) == c:
            return thresholds
        # A flattened input: every value of a channel must share its threshold.
        per_value = thresholds.reshape(c, h * w)
        if not (per_value == per_value[:, :1]).all():
            self.refuse(node, "binarizes the input with a threshold per pixel; supported: one "
                              "threshold per channel")
        return per_value[:, 0].copy()

    # ---- binary tensors -------------------------------------------------------------------

    def step_bits(self, node, state):
        op = node.op_type
        if op in _SHAPING:
            state.shape = self.reshaped(node, state.shape)
            state.name = node.output[0]
            return state
        if op in ("Identity", "Dropout"):
            state.name = node.output[0]
            return state
        if op in _ELEMENTWISE or op in _QUANTIZERS:
            if op in _QUANTIZERS:
                self.check_quantizer(node, binary_only=True)
            # A scalar scale or offset (or a quantizer) maps both values.
            out = self.chain([node], state.name, 2).run(np.array([[state.v0], [state.v1]]))
            v0, v1 = float(out[0, 0]), float(out[1, 0])
            if v0 == v1:
                self.refuse(node, "maps both binary values to one; supported: scalar scales "
                                  "and offsets of binary activations")
            for index, name in enumerate(node.input[1:], 1):
                if name and np.asarray(self.constants.get(name, 0)).size > 1 \
                        and op not in _QUANTIZERS:
                    self.refuse(node, f"input {index} is not a scalar; supported: scalar "
                                      f"scales and offsets of binary activations")
            if op in _QUANTIZERS and self.taps and self.taps[-1].name == state.name:
                last = self.taps[-1]
                self.taps[-1] = Tap(last.layer, node.output[0], v1, last.shape)
            return _Bits(name=node.output[0], shape=state.shape, image=state.image, v0=v0, v1=v1)
        if op == "MaxPool":
            return self.maxpool(node, state)
        if op in _LINEAR:
            return self.linear(node, state, binary=(state.v0, state.v1), raw_scale=None)
        self.refuse(node, f"cannot take binary values; supported: {SUPPORTED}")

    def maxpool(self, node, state):
        if len(state.shape) != 3:
            self.refuse(node, f"pools a tensor of shape {state.shape}; supported: (C, H, W)")
        kernel = list(self.attr(node, "kernel_shape", []))
        strides = list(self.attr(node, "strides", [1] * len(kernel)))
        pads = list(self.attr(node, "pads", [0] * 4))
        dilations = list(self.attr(node, "dilations", [1] * len(kernel)))
        if (len(kernel) != 2 or kernel[0] != kernel[1] or strides != kernel or any(pads)
                or any(d != 1 for d in dilations) or self.attr(node, "ceil_mode", 0)
                or self.attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")
                or len(node.output) > 1 and node.output[1]):
            self.refuse(node, f"kernel {kernel}, strides {strides}, pads {pads}; supported: "
                              f"square kernels, stride equal to the kernel, no padding")
        if not state.v1 > state.v0:
            self.refuse(node, "pools binary values whose bit 1 is the smaller; supported: "
                              "max-pooling where bit 1 is the larger value (an OR)")
        c, h, w = state.shape
        size = kernel[0]
        if size > h or size > w:
            self.refuse(node, f"a {size}x{size} pool does not fit the {h}x{w} input")
        self.add_layer(MaxPoolLayer(size=size), node.output[0], state.v1,
                       (c, h // size, w // size))
        shape = (c, h // size, w // size)
        return _Bits(name=node.output[0], shape=shape, image=shape, v0=state.v0, v1=state.v1)

    # ---- linear nodes ---------------------------------------------------------------------

    def binary_weights(self, node, w, axis):
        """Sign bits and magnitude of each output's weights: ``w`` with outputs along
        ``axis`` must be ``+-m`` per output."""
        w = np.moveaxis(np.asarray(w, np.float64), axis, 0).reshape(w.shape[axis], -1)
        m = np.abs(w).max(axis=1)
        bad = np.flatnonzero((m == 0) | (np.abs(w) != m[:, None]).any(axis=1))
        if bad.size:
            self.refuse(node, f"output {int(bad[0])}'s weights are not binary (values "
                              f"{np.unique(w[bad[0]])[:4].tolist()}); supported: +-m per output, "
                              f"as BipolarQuant or a 1-bit Quant makes them")
        return (w > 0).astype(np.uint8), m

    def linear(self, node, state, *, binary, raw_scale):
        op = node.op_type
        if node.input[0] != state.name:
            self.refuse(node, "takes the data as its second operand; supported: data first, "
                              "constant weights second")
        bias = 0.0
        if op == "Conv":
            if len(state.shape) != 3:
                self.refuse(node, f"convolves a tensor of shape {state.shape}; supported: "
                                  f"(C, H, W)")
            w = self.const(node, 1, "weights")
            group = self.attr(node, "group", 1)
            kernel = list(w.shape[2:])
            strides = list(self.attr(node, "strides", [1, 1]))
            pads = list(self.attr(node, "pads", [0, 0, 0, 0]))
            dilations = list(self.attr(node, "dilations", [1, 1]))
            if (w.ndim != 4 or group != 1 or strides != [1, 1] or any(pads)
                    or dilations != [1, 1]
                    or self.attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")):
                self.refuse(node, f"group {group}, strides {strides}, pads {pads}, dilations "
                                  f"{dilations}; supported: 2-D convolution, stride 1, no "
                                  f"padding, one group")
            if len(node.input) > 2 and node.input[2]:
                bias = self.const(node, 2, "bias").astype(np.float64)
            c, h, wd = state.shape
            o, ci, kh, kw = w.shape
            if ci != c or kh > h or kw > wd:
                self.refuse(node, f"weights of shape {w.shape} do not fit the input {state.shape}")
            bits, m = self.binary_weights(node, w, 0)
            bits = bits.reshape(o, ci, kh, kw).transpose(0, 2, 3, 1)      # (O, kh, kw, C)
            fan_in = c * kh * kw
            out_shape = (o, h - kh + 1, wd - kw + 1)
            rank = 4
            image = out_shape
        else:
            c, h, wd = state.image
            if len(state.shape) != 1 and not (len(state.shape) == 3 and state.shape[1:] == (1, 1)):
                self.refuse(node, f"multiplies a tensor of shape {state.shape}; supported: a "
                                  f"flattened (1, N) input")
            w = self.const(node, 1, "weights")
            if op == "Gemm":
                if self.attr(node, "transA", 0):
                    self.refuse(node, "transA is set; supported: transA 0")
                if self.attr(node, "transB", 0):
                    w = w.T
                alpha = float(self.attr(node, "alpha", 1.0))
                w = w * alpha
                if len(node.input) > 2 and node.input[2]:
                    bias = (self.const(node, 2, "bias").astype(np.float64)
                            * float(self.attr(node, "beta", 1.0)))
            if w.ndim != 2 or w.shape[0] != c * h * wd:
                self.refuse(node, f"weights of shape {w.shape} do not fit the {c * h * wd} "
                                  f"input values")
            sign, m = self.binary_weights(node, w, 1)
            bits = np.empty_like(sign)
            bits[:, _stream_perm(state.image)] = sign
            o = bits.shape[0]
            fan_in = bits.shape[1]
            out_shape = (o,)
            rank = 2
            image = (o, 1, 1)
        bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (o,)) \
            if np.size(bias) in (1, o) else None
        if bias is None:
            self.refuse(node, f"its bias does not have one value per output ({o})")
        ones = bits.reshape(o, -1).sum(axis=1).astype(np.float64)
        signs_sum = 2 * ones - fan_in                                     # sum of +-1 weights
        if binary is None:
            # Unsigned inputs x = u * scale: the value is m * scale * acc + bias.
            bound = fan_in * ((1 << self.input_bits) - 1)
            base, slope, lo, hi = bias.copy(), m * raw_scale, -bound, bound
            kinds = (FirstLayer, dict(in_bits=self.input_bits)) if op != "Conv" else (
                FirstConvLayer, dict(in_bits=self.input_bits))
            scores = False
        else:
            v0, v1 = binary
            mid, half = (v0 + v1) / 2, (v1 - v0) / 2
            # x_i = mid + half s_i: the value is m (mid S + half (2 p - N)) + bias.
            base = m * (mid * signs_sum - half * fan_in) + bias
            slope, lo, hi = 2 * m * half, 0, fan_in
            kinds = (DenseLayer, {}) if op != "Conv" else (ConvLayer, {})
            scores = op != "Conv"
        kind, extra = kinds

        def build(thresholds, flipped):
            flip = flipped.reshape((-1,) + (1,) * (bits.ndim - 1))
            weights = np.where(flip, 1 - bits, bits).astype(np.uint8)
            return kind(weights=weights, thresholds=thresholds, **extra)

        def build_output(scales, offsets, flipped):
            weights = np.where(flipped[:, None], 1 - bits, bits).astype(np.uint8)
            return OutputLayer(weights=weights, offsets=offsets, scales=scales)

        return _Acc(name=node.output[0], source=node.output[0], shape=out_shape,
                    build=(build, build_output),
                    base=base, slope=np.broadcast_to(slope, (o,)).astype(np.float64), lo=lo,
                    hi=hi, rank=rank, image=image, scores=scores)

    # ---- linear outputs -------------------------------------------------------------------

    def step_acc(self, node, state):
        op = node.op_type
        if op in _ELEMENTWISE:
            state.pending.append(node)
            state.name = node.output[0]
            return state
        if op in _QUANTIZERS:
            self.check_quantizer(node, binary_only=True)
            channels = state.shape[0]
            levels = self.levels(node, state.rank, channels)
            v0, v1 = levels
            chain = self.chain(state.pending + [node], state.source, state.rank)
            thresholds, flipped = fit_thresholds(chain, base=state.base, slope=state.slope,
                                                 lo=state.lo, hi=state.hi, high=v1)
            layer = state.build[0](thresholds, flipped)
            self.add_layer(layer, node.output[0], v1, state.image)
            return _Bits(name=node.output[0], shape=state.shape, image=state.image, v0=v0, v1=v1)
        if op == "MaxPool":
            self.refuse(node, "pools before the quantizer (a pool of integers, not of bits); "
                              "supported: MaxPool after the quantizer")
        self.refuse(node, "not supported between a MatMul, Gemm or Conv and its quantizer; "
                          "supported there: Mul, Add, Sub, Div, BatchNormalization, then a "
                          "quantizer, or the end of the graph")

    def finish(self, state, node):
        if not isinstance(state, _Acc):
            raise ImportRefused(f"{self.path}: the graph ends in binary values or the input "
                                f"(after node {_name(node)}, {node.op_type}); supported: class "
                                f"scores from a last MatMul or Gemm")
        if not state.scores:
            raise ImportRefused(f"{self.path}: node {_name(node)} ({node.op_type}): the class "
                                f"scores come from a Conv or straight from the input; "
                                f"supported: a last MatMul or Gemm on binary values")
        chain = self.chain(state.pending or [], state.source, state.rank)
        if not state.pending:
            chain = _Identity(chain)
        scales, offsets, flipped, ties = fit_scores(chain, base=state.base, slope=state.slope,
                                                    n=state.hi)
        self.float_ties = ties
        self.scores_name = state.name
        self.add_layer(state.build[1](scales, offsets, flipped), None, None, None)

    def check_final(self, node):
        op = node.op_type
        if op == "ArgMax":
            axis = self.attr(node, "axis", 0)
            if axis not in (1, -1) or self.attr(node, "select_last_index", 0):
                self.refuse(node, f"axis {axis}, select_last_index "
                                  f"{self.attr(node, 'select_last_index', 0)}; supported: "
                                  f"axis 1 (the classes), ties to the first index")
            out = node.output[0]
        else:
            k = self.constants.get(node.input[1]) if len(node.input) > 1 else None
            axis, largest = self.attr(node, "axis", -1), self.attr(node, "largest", 1)
            if k is None or np.asarray(k).reshape(-1).tolist() != [1] or axis not in (1, -1) \
                    or not largest:
                self.refuse(node, f"k {None if k is None else np.asarray(k).tolist()}, axis "
                                  f"{axis}, largest {largest}; supported: k 1 along the "
                                  f"classes, largest")
            if node.output[0] == self.output_name:
                self.refuse(node, "the graph outputs its values; supported: its indices")
            out = node.output[1] if len(node.output) > 1 else ""
        if out != self.output_name:
            self.refuse(node, f"its output {out} is not the graph's output "
                              f"{self.output_name}; supported: the class as the output")
        self.classes_output = True

    # ---- helpers --------------------------------------------------------------------------

    def check_quantizer(self, node, *, binary_only):
        op = node.op_type
        if op == "Quant":
            bits = self.const(node, 3, "bit width")
            if bits.size != 1 or (binary_only and float(bits.reshape(-1)[0]) != 1):
                self.refuse(node, f"bit width {bits.reshape(-1).tolist()}; supported: 1-bit "
                                  f"activations (and multi-bit only on the input)")
            for index, what in ((1, "scale"), (2, "zero point")):
                value = self.const(node, index, what)
                if value.size != 1:
                    self.refuse(node, f"its {what} has {value.size} values; supported: one "
                                      f"per tensor")
        elif op == "MultiThreshold":
            t = self.const(node, 1, "thresholds")
            if t.ndim != 2 or t.shape[1] != 1:
                self.refuse(node, f"thresholds of shape {t.shape}; supported: one threshold "
                                  f"per channel (C, 1) or (1, 1)")
            layout = self.attr(node, "data_layout", "")
            if layout and layout.find("C") != 1:
                self.refuse(node, f"data layout {layout}; supported: channels first (NC, "
                                  f"NCHW), as Brevitas exports")
        elif op == "BipolarQuant":
            scale = self.const(node, 1, "scale")
            if scale.size != 1 or not float(scale.reshape(-1)[0]) > 0:
                self.refuse(node, f"scale {scale.reshape(-1).tolist()[:4]}; supported: one "
                                  f"positive scale per tensor")

    def levels(self, node, rank, channels):
        """The two output values of a 1-bit quantizer, or None for a multi-bit one."""
        if node.op_type == "Quant" and float(self.const(node, 3, "bit width")
                                             .reshape(-1)[0]) != 1:
            return None
        chain = self.chain([node], node.input[0], rank)
        extreme = np.float32(3e38)
        out = chain.run(np.array([[-extreme] * channels, [extreme] * channels], np.float64))
        v0, v1 = np.unique(out[0]), np.unique(out[1])
        if v0.size != 1 or v1.size != 1 or v0[0] == v1[0]:
            self.refuse(node, f"its two output values differ between channels or coincide "
                              f"({out[0][:3].tolist()}, {out[1][:3].tolist()}); supported: "
                              f"two values per tensor")
        return float(v0[0]), float(v1[0])

    def reshaped(self, node, shape):
        if node.op_type == "Flatten":
            if self.attr(node, "axis", 1) != 1:
                self.refuse(node, "axis is not 1; supported: Flatten with axis 1")
            return (int(np.prod(shape)),)
        target = self.const(node, 1, "shape").reshape(-1).tolist()
        size = int(np.prod(shape))
        if target and target[0] in (1, -1, 0) and len(target) == 2 and target[1] in (
                -1, size):
            return (size,)
        if [1] + list(shape) == target or target == [-1] + list(shape):
            return tuple(shape)
        self.refuse(node, f"reshapes {tuple(shape)} to {target}; supported: flattening to "
                          f"(1, N)")

    def add_layer(self, layer, name, high, shape):
        index = len(self.layers)
        self.layers.append(layer)
        if name is not None:
            self.taps.append(Tap(index, name, high, shape))


class _Identity:
    """A chain of no nodes: the values themselves."""

    def __init__(self, chain):
        self.where = chain.where

    def run(self, values):
        return np.asarray(values, np.float32).astype(np.float64)


def import_model(path, *, input_bits=8, divisor=None):
    """Fold the QONNX / ONNX model at ``path`` into a bnnhw network.

    The model takes ``x = u / divisor`` for unsigned ``input_bits``-bit pixels ``u``
    (``divisor`` defaults to ``2**input_bits - 1``, torchvision's ``ToTensor``). Returns an
    :class:`Imported`; raises :class:`ImportRefused` (one line) for graphs it cannot fold.
    """
    path = Path(path)
    if not isinstance(input_bits, int) or not 1 <= input_bits <= 16:
        raise ImportRefused(f"input bits must be an integer in 1..16, not {input_bits!r}")
    divisor = (1 << input_bits) - 1 if divisor is None else divisor
    if not isinstance(divisor, int) or divisor <= 0:
        raise ImportRefused(f"input divisor must be a positive integer, not {divisor!r}")
    model = read_model(path)
    walker = _Walker(model, path, input_bits, divisor).run()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        net = artifact.network(
            input_shape=walker.image, input_bits=input_bits, layers=walker.layers,
            provenance={"source": "bnnhw import", "model": path.name, "model_sha256": digest,
                        "input": f"x = u / {divisor}", "bnnhw": __version__})
    except artifact.ArtifactError as error:
        raise ImportRefused(f"{path}: the folded layers do not form a network: {error}") from None
    return Imported(network=net, model=model, input_name=walker.input_name,
                    input_shape=walker.input_shape, divisor=divisor, taps=walker.taps,
                    classes_output=walker.classes_output, output_name=walker.output_name,
                    scores_name=walker.scores_name,
                    float_ties=walker.float_ties, notes=walker.notes)
