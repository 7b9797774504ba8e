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
    a linear node's output (MatMul, Gemm, Conv), ``m (base + slope a) + bias`` per channel for an
    integer ``a``, with elementwise nodes waiting for a quantizer (a hidden layer) or the end
    of the graph (the output layer).

Quantizers close layers: their integer thresholds come from the executor itself
(:mod:`bnnhw.importer.chain`). The states and node checks are in :mod:`.nodes`, the linear
nodes in :mod:`.linear`. Anything else is refused with one line naming the node, its op
type and what is supported.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, artifact
from ..kinds import BinarizeLayer, MaxPoolLayer
from .chain import ImportRefused, fit_scores, fit_thresholds, quiet_onnxruntime
from .linear import _Linear
from .nodes import Tap, _Acc, _Bits, _Nodes, _Raw, _name

__all__ = ["SUPPORTED", "Imported", "Tap", "read_model", "import_model"]

SUPPORTED = ("BipolarQuant, 1-bit Quant, one-threshold MultiThreshold, MatMul, Gemm, Conv, "
             "BatchNormalization, MaxPool, Reshape, Flatten, Mul, Add, Sub, Div, Identity, "
             "Dropout, and a final ArgMax or TopK")
_ELEMENTWISE = {"Mul", "Add", "Sub", "Div", "BatchNormalization", "Identity", "Dropout"}
_QUANTIZERS = {"BipolarQuant", "Quant", "MultiThreshold"}
_LINEAR = {"MatMul", "Gemm", "Conv"}
_SHAPING = {"Reshape", "Flatten"}
_FINAL = {"ArgMax", "TopK"}


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


class _Walker(_Nodes, _Linear):
    def __init__(self, model, path, input_bits, divisor):
        self.model, self.path = model, path
        self.input_bits, self.divisor = input_bits, divisor
        graph = model.graph
        self.constants = {init.name: model.get_initializer(init.name)
                          for init in graph.initializer}
        self.opsets = {o.domain: o.version for o in model.model.opset_import}
        self.opsets.setdefault("qonnx.custom_op.general", 1)
        self.layers, self.taps = [], []
        self.float_ties = 0

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
        quiet_onnxruntime()
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
                           state.image, node.input[0])
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
                self.taps[-1] = Tap(last.layer, node.output[0], v1, last.shape, last.pre)
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

    # ---- linear outputs: quantizers close hidden layers, the end closes the output one ----

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
            thresholds, flipped = fit_thresholds(chain, affine=state.affine,
                                                 lo=state.lo, hi=state.hi, high=v1)
            layer = state.build[0](thresholds, flipped)
            self.add_layer(layer, node.output[0], v1, state.image, node.input[0])
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
        scales, offsets, flipped, ties = fit_scores(chain, affine=state.affine,
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
                    float_ties=walker.float_ties)
