"""``abc``: a multi-base (ABC-Net) fully connected layer with N-bit multi-threshold outputs.

Input: a tensor of any shape, taken as a vector of F values in stream order, either

- ``bipolar`` with ``K = bits`` activation bases: base ``n`` of value ``i`` is bit ``n`` of it
  (1 encodes +1), so ``x_ni`` is in {-1, +1}; or
- ``unsigned`` integers (the network's input pixels): ``K = 1`` and ``x_0i`` is the value.

Arrays:

``weights`` ``(M, out, F)`` 0/1
    M weight bases, each a binary ``(out, F)`` matrix ``B_m`` (bit 1 encodes +1).
``coefficients`` ``(M, K)`` integers in ``1 .. 2**16``
    ``c_mn``, the product ``alpha_m * beta_n`` of the weight base's and the activation base's
    scales, as an integer (fixed point with the fraction bits the exporter chose; powers of two
    make them shifts). One set per layer.
``thresholds`` ``(out, N)`` integers in ``-Z .. Z + 1``
    ``N`` thresholds per neuron, ``Z = F * (2**bits - 1 if unsigned else 1) * sum(c)``.

Semantics: one integer pre-activation per neuron ``j``,

    z_j = sum_m sum_n c_mn * d_mnj,   d_mnj = sum_i B_mji * x_ni

(for bipolar inputs ``d_mnj = 2 * popcount(XNOR(base_n(x), B_m[j])) - F``), and an output value
of N bits (N activation bases of the next layer): bit ``n`` is ``z_j >= thresholds[j, n]``
(``-Z``: always 1, ``Z + 1``: never). Each bit is a monotone function of ``z_j``; the thresholds
need not be sorted (each activation base has its own shift). BatchNorm, bias, the activation
shifts ``v_n`` and the scales fold into the thresholds as for single-base layers; a neuron whose
BatchNorm gamma was negative is stored with all M of its weight rows inverted and its
thresholds negated (``z <= t`` becomes ``-z >= -t``), so every neuron uses ``>=``.

With ``M = K = N = 1`` and ``c = 1`` this is the ``dense`` layer with ``z = 2p - F``
(``p >= T`` iff ``z >= 2T - F``), or the ``first`` layer for unsigned inputs.

FINN-style quantized networks are special cases. An unsigned A-bit activation made by a
multi-threshold (``a`` = how many of ``2**A - 1`` sorted thresholds ``z`` reaches) is
``N = 2**A - 1`` output bases in thermometer code, and the next layer sees it exactly through
equal coefficients: ``sum_n x_n = 2a - N`` per value, so ``sum_i w_i a_i = (sum_n d_n + N *
sum_i w_i) / 2``. (Weighting bases by ``2**n`` instead would need binary-coded bits, which are
not monotone in ``z``: N bases from N thresholds carry at most N + 1 levels.) Odd-level
weights ``w`` in ``{-3, -1, 1, 3}`` (2 bits) are M = 2 bases with ``alpha = (1, 2)``. So W1A2
is ``M = 1, N = 3`` and W2A2 ``M = 2, N = 3``, coefficients ``c_mn = alpha_m``.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..bits import base_bits, bipolar_dot, pack_bits, packed_xnor_popcount
from ..gateware.plan import multibase_plan, signed_width
from ..tensor import Tensor
from .matrix import MatrixLayer

__all__ = ["MultiBaseLayer", "MultiBaseMatrix", "check_bases", "preactivation",
           "preactivation_logic", "matrix_preactivation", "matrix_preactivation_logic",
           "multibase_logic", "COEFFICIENT_LIMIT", "MAX_BASES"]

# Largest coefficient c_mn (17 bits unsigned).
COEFFICIENT_LIMIT = 1 << 16
# Most weight bases and output (activation) bases a layer may have.
MAX_BASES = 16


def input_bases(tensor):
    """``K``: activation bases of a bipolar tensor, 1 for unsigned values."""
    return tensor.bits if tensor.encoding == "bipolar" else 1


def value_bound(tensor):
    """Largest ``|x_ni|``: 1 for bases, ``2**bits - 1`` for unsigned values."""
    return 1 if tensor.encoding == "bipolar" else (1 << tensor.bits) - 1


def check_bases(layer, tensor, check):
    """Check ``weights`` ``(M, out, F)`` and ``coefficients`` ``(M, K)`` of a multi-base layer
    against the ``tensor`` it takes; return ``(M, out, F, K)``."""
    weights = layer.weights
    check(hasattr(weights, "ndim") and weights.ndim == 3,
          f"expected a 3-D (weight bases, out, in) array, not shape "
          f"{getattr(weights, 'shape', type(weights).__name__)}", ".weights")
    bases, out, width = weights.shape
    check(1 <= bases <= MAX_BASES, f"{bases} weight bases; expected 1..{MAX_BASES}", ".weights")
    check(out >= 1, "the layer has no outputs", ".weights")
    check(width == tensor.size, f"fan-in {width} does not match the {tensor.size} values of "
                                f"the tensor it takes ({tensor.describe()})", ".weights")
    check.array("weights", weights, weights.shape, binary=True)
    k = input_bases(tensor)
    check.array("coefficients", layer.coefficients, (bases, k))
    check.range("coefficients", layer.coefficients, 1, COEFFICIENT_LIMIT)
    return bases, out, width, k


def multibase_logic(plan, tensor, fold, stages=1):
    """The datapath sizes of a multi-base engine's ``plan`` for the fit estimate."""
    # Per cycle: pe * simd * M * K XNORs (or add/subtract terms of unsigned values), and
    # the constant-coefficient sums of the M * K trees.
    logic = ({"adder_bits": plan.terms * plan.elem_width}
             if tensor.encoding == "unsigned" else {"xnor": plan.terms})
    if plan.products > 1:
        logic["product_bits"] = (
            fold.pe * plan.products * signed_width(*plan.acc_bounds))
    logic["stages"] = stages
    return logic


def z_bound(layer, tensor=None):
    """Largest ``|z|`` any input can produce, a Python integer."""
    tensor = layer.input if tensor is None else tensor
    return (layer.weights.shape[2] * value_bound(tensor)
            * sum(int(c) for c in np.ravel(layer.coefficients)))


def preactivation(layer, x):
    """``z`` of every neuron for frames ``x`` ``(B, F)`` of the layer's input: ``(B, out)``
    int64, exact."""
    return matrix_preactivation(layer.weights, layer.coefficients, layer.input, x)


def matrix_preactivation(weights, coefficients, tensor, x):
    """``z`` for rows ``x`` ``(B, F)`` of values of ``tensor``'s format, weights ``(M, out,
    F)``: ``(B, out)`` int64, exact."""
    x = np.asarray(x)
    bases, out, width = weights.shape
    z = np.zeros((len(x), out), np.int64)
    if tensor.encoding == "unsigned":
        for m in range(bases):
            z += int(coefficients[m, 0]) * bipolar_dot(x, weights[m])
        return z
    packed = [pack_bits(w) for w in weights]
    for n in range(tensor.bits):
        xn = pack_bits(base_bits(x, n))
        for m in range(bases):
            p = packed_xnor_popcount(xn, packed[m], width)
            z += int(coefficients[m, n]) * (2 * p - width)
    return z


def preactivation_logic(layer, values):
    """``z`` of every neuron as plain Amaranth arithmetic on the input ``values`` (stream
    order; unsigned values or K-bit base values)."""
    return matrix_preactivation_logic(layer.weights, layer.coefficients, layer.input, values)


def matrix_preactivation_logic(weights, coefficients, tensor, values):
    """:func:`matrix_preactivation` of one row of ``values`` as plain Amaranth arithmetic."""
    bases, out, width = weights.shape
    sums = []
    for j in range(out):
        z = 0
        for m in range(bases):
            row = weights[m, j]
            if tensor.encoding == "unsigned":
                d = sum((x if w else -x) for x, w in zip(values, row))
                z = z + int(coefficients[m, 0]) * d
                continue
            for n in range(tensor.bits):
                p = sum((x[n] if w else ~x[n]) for x, w in zip(values, row))
                z = z + int(coefficients[m, n]) * (2 * p - width)
        sums.append(z)
    return sums


@dataclass(frozen=True, eq=False)
class MultiBaseMatrix(MatrixLayer):
    """What the multi-base kinds share: ``weights`` ``(M, out, F)`` and ``coefficients``
    ``(M, K)``, folded by ``pe`` neurons and ``simd`` inputs per cycle onto a multi-base
    :class:`~bnnhw.gateware.engine.MatrixEngine` (all M * K products of a beat in parallel).
    Not a kind itself."""

    @property
    def bases(self):
        """M, the weight bases."""
        return self.weights.shape[0]

    @property
    def fan_in(self):
        return self.weights.shape[2]

    @property
    def fan_out(self):
        return self.weights.shape[1]

    def multibase_plan(self, fold, memory, thresholds=None):
        tensor = self.input
        unsigned = tensor.encoding == "unsigned"
        zeros = self.fan_in - self.weights.sum(axis=2) if unsigned else None
        return multibase_plan(mh=self.fan_out, mw=self.fan_in, pe=fold.pe, simd=fold.simd,
                              coefficients=self.coefficients,
                              in_bits=tensor.bits if unsigned else None,
                              thresholds=thresholds, weight_zeros=zeros, memory=memory)

    def multibase_figures(self, fold, memory, **options):
        figures = self.matrix_figures(fold, memory, **options)
        logic = multibase_logic(self.plan(fold, memory), self.input, fold)
        return dataclasses.replace(figures, logic=logic)

    def memory_words(self, fold, name):
        from ..gateware.weights import multibase_words
        if name != "weights":
            raise ValueError(f"a {self.KIND} layer has no memory {name!r} with words to load")
        return multibase_words(self.weights, fold.pe, fold.simd)

    def engine_options(self, fold, memory):
        tensor = self.input
        return dict(weights=self.weights, coefficients=self.coefficients, pe=fold.pe,
                    simd=fold.simd, memory=memory,
                    in_bits=tensor.bits if tensor.encoding == "unsigned" else None)


@dataclass(frozen=True, eq=False)
class MultiBaseLayer(MultiBaseMatrix):
    """Multi-base (ABC-Net) dense layer: M weight bases, K input bases, N output bases."""
    KIND = "abc"
    ARRAYS = {"weights": "bits", "coefficients": "int", "thresholds": "int"}

    weights: np.ndarray        # (M, out, F) uint8, 1 = +1
    coefficients: np.ndarray   # (M, K) int64, 1..2**16
    thresholds: np.ndarray     # (out, N) int64

    @property
    def out_bases(self):
        """N, the output's activation bases (bits per output value)."""
        return self.thresholds.shape[1]

    def default_input(self):
        return Tensor.vector(self.weights.shape[2], bits=self.coefficients.shape[1])

    def check(self, tensor, check):
        _, out, _, _ = check_bases(self, tensor, check)
        t = self.thresholds
        check(hasattr(t, "ndim") and t.ndim == 2 and t.shape[0] == out
              and 1 <= t.shape[1] <= MAX_BASES,
              f"shape {getattr(t, 'shape', type(t).__name__)} does not match the expected "
              f"({out}, N) with N output bases in 1..{MAX_BASES}", ".thresholds")
        check.array("thresholds", t, t.shape)
        bound = z_bound(self, tensor)
        check.range("thresholds", t, -bound, bound + 1)
        return Tensor.vector(out, bits=t.shape[1])

    def golden(self, x):
        z = preactivation(self, x)
        bits = z[:, :, None] >= self.thresholds[None, :, :]
        values = (bits.astype(np.int64) << np.arange(self.out_bases)).sum(axis=-1)
        return values.astype(np.uint8 if self.out_bases <= 8 else np.uint16)

    def logic(self, values):
        from amaranth import Cat
        return [Cat(*(z >= int(t) for t in row))
                for z, row in zip(preactivation_logic(self, values), self.thresholds)]

    def acc_bits(self):
        bound = z_bound(self)
        return signed_width(-bound, bound)

    def plan(self, fold, memory="block"):
        return self.multibase_plan(fold, memory, thresholds=self.thresholds)

    def figures(self, fold, memory="block"):
        return self.multibase_figures(fold, memory, output=self.output)

    def engine_options(self, fold, memory):
        return dict(super().engine_options(fold, memory), thresholds=self.thresholds)

    def engine(self, fold, memory="block"):
        return self.matrix_engine(self.check_fold(fold), memory)

    def notes(self):
        bound = z_bound(self)
        t = self.thresholds
        constant = int(((t <= -bound) | (t > bound)).all(axis=1).sum())
        return (f"W{self.bases}A{self.out_bases}, {constant} constant neurons"
                if self.input.encoding == "unsigned" else
                f"W{self.bases}A{self.out_bases} on {input_bases(self.input)} bases, "
                f"{constant} constant neurons")
