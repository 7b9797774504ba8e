"""``first``: a layer on unsigned multi-bit inputs (pixels) with binary weights.

Input: an unsigned tensor of ``in_bits``-bit values (the network's input), as a vector of N
values in stream order. Arrays: ``weights`` ``(out, N)`` 0/1 and ``thresholds`` ``(out,)`` in
``-A .. A + 1`` with ``A = N * (2**in_bits - 1)``. Output: ``(out, 1, 1)`` binary, bit ``j`` set
iff ``acc_j = sum_i w_ji x_i >= thresholds[j]`` with ``w`` in {-1, +1}. Input normalisation
(``x / 255``, mean/std) is linear and folds into the thresholds too.
"""

from dataclasses import dataclass

import numpy as np

from ..bits import bipolar_dot
from ..gateware.plan import signed_width
from ..tensor import Tensor
from .matrix import MatrixLayer, plan_for

__all__ = ["FirstLayer"]


@dataclass(frozen=True, eq=False)
class FirstLayer(MatrixLayer):
    """First layer: unsigned ``in_bits``-bit inputs, binary weights, integer thresholds."""
    KIND = "first"
    ARRAYS = {"weights": "bits", "thresholds": "int"}
    PARAMS = ("in_bits",)

    weights: np.ndarray      # (out, in) uint8, 1 = +1
    thresholds: np.ndarray   # (out,) int64
    in_bits: int

    @property
    def acc_bound(self):
        """Largest ``|acc|`` the layer can produce: ``fan_in * (2**in_bits - 1)``."""
        return self.fan_in * ((1 << self.in_bits) - 1)

    def default_input(self):
        return Tensor.vector(self.weights.shape[1], bits=self.in_bits, encoding="unsigned")

    def check(self, tensor, check):
        check(tensor.encoding == "unsigned",
              f"a first layer takes unsigned values, not {tensor.describe()}")
        check(isinstance(self.in_bits, int) and not isinstance(self.in_bits, bool)
              and self.in_bits == tensor.bits,
              f"{self.in_bits!r} differs from the {tensor.bits} bits of the values it takes",
              ".in_bits")
        out, width = self.check_weights(tensor, check)
        check.array("thresholds", self.thresholds, (out,))
        bound = width * ((1 << tensor.bits) - 1)
        check.range("thresholds", self.thresholds, -bound, bound + 1)
        return Tensor.vector(out)

    def golden(self, x):
        return (bipolar_dot(x, self.weights) >= self.thresholds).astype(np.uint8)

    def logic(self, values):
        return [sum((x if w else -x) for x, w in zip(values, row)) >= int(t)
                for row, t in zip(self.weights, self.thresholds)]

    def acc_bits(self):
        return signed_width(-self.acc_bound, self.acc_bound + 1)

    def notes(self):
        return f"{self.in_bits}-bit inputs"

    def plan(self, fold, memory="block"):
        return plan_for(self, fold, memory, in_bits=self.in_bits, thresholds=self.thresholds,
                        weight_ones=self.weights.sum(axis=1, dtype=np.int64))

    def figures(self, fold, memory="block"):
        return self.matrix_figures(fold, memory, output=self.output)

    def engine_options(self, fold, memory):
        return dict(weights=self.weights, thresholds=self.thresholds, in_bits=self.in_bits,
                    pe=fold.pe, simd=fold.simd, memory=memory)

    def engine(self, fold, memory="block"):
        return self.matrix_engine(self.check_fold(fold), memory)
