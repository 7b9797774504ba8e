"""What the graph walk of :mod:`bnnhw.importer.graph` keeps and checks: the states of the
tensor it has reached, and the checks and helpers on nodes (refusals, constants, attributes,
quantizers, reshapes)."""

from dataclasses import dataclass, field

import numpy as np

from .chain import Chain, ImportRefused

__all__ = ["Tap"]

_QUANTIZERS = {"BipolarQuant", "Quant", "MultiThreshold"}


@dataclass(frozen=True)
class Tap:
    """Where layer ``layer``'s output bits are in the graph: tensor ``name``, bit 1 where it
    equals ``high``; ``shape`` the ``(C, H, W)`` whose ONNX order (C, H, W) maps to bnnhw's
    stream order; ``pre`` the quantizer's input, if a quantizer made the bits."""
    layer: int
    name: str
    high: float
    shape: tuple
    pre: str = ""


def _name(node):
    return node.name or (node.output[0] if node.output else node.op_type)


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
    affine: tuple             # (scale, base, slope, bias): scale * (base + slope * a) + bias
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


class _Nodes:
    """Refusals, constants, attributes, quantizers and reshapes of the walk."""

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

    def add_layer(self, layer, name, high, shape, pre=""):
        index = len(self.layers)
        self.layers.append(layer)
        if name is not None:
            self.taps.append(Tap(index, name, high, shape, pre))
