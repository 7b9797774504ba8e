"""``abc_output``: a multi-base (ABC-Net) output layer: integer class scores and their argmax.

Input: a bipolar tensor of ``K = bits`` activation bases, taken as a vector of F values.
Arrays: ``weights`` ``(M, classes, F)`` 0/1 and ``coefficients`` ``(M, K)`` in ``1 .. 2**16``,
as in :mod:`bnnhw.kinds.abc`; ``offsets`` ``(classes,)`` and positive ``scales``
``(classes,)``. Scores: ``score_c = scales[c] * z_c + offsets[c]`` with
``z_c = sum_mn c_mn * (2 * popcount(XNOR(base_n(x), B_m[c])) - F)``; the network's class is
their argmax, ties going to the lowest class index. With ``M = K = 1`` and ``c = 1`` this is
the ``output`` layer.
"""

from dataclasses import dataclass

import numpy as np

from ..gateware.plan import signed_width
from ..tensor import Tensor
from .abc import MultiBaseMatrix, check_bases, preactivation, preactivation_logic
from .output import ARGMAX_DEPTH

__all__ = ["MultiBaseOutputLayer"]


@dataclass(frozen=True, eq=False)
class MultiBaseOutputLayer(MultiBaseMatrix):
    """Multi-base output layer: class scores from M x K XNOR-popcounts, then argmax."""
    KIND = "abc_output"
    ARRAYS = {"weights": "bits", "coefficients": "int", "offsets": "int", "scales": "int"}
    PRODUCES_SCORES = True

    weights: np.ndarray        # (M, classes, F) uint8
    coefficients: np.ndarray   # (M, K) int64, 1..2**16
    offsets: np.ndarray        # (classes,) int64
    scales: np.ndarray         # (classes,) int64, positive

    @property
    def classes(self):
        return self.weights.shape[1]

    @property
    def weighted_fan_in(self):
        """``F * sum(c)``: the largest ``|z|``."""
        return self.fan_in * sum(int(c) for c in np.ravel(self.coefficients))

    @property
    def score_bounds(self):
        """Smallest and largest score any input can produce, as Python integers."""
        n = self.weighted_fan_in
        lo = min(-int(s) * n + int(o) for s, o in zip(self.scales, self.offsets))
        hi = max(int(s) * n + int(o) for s, o in zip(self.scales, self.offsets))
        return lo, hi

    def default_input(self):
        return Tensor.vector(self.weights.shape[2], bits=self.coefficients.shape[1])

    def check(self, tensor, check):
        check(tensor.encoding == "bipolar",
              f"an {self.KIND} layer takes binary bases, not {tensor.describe()}")
        _, out, _, _ = check_bases(self, tensor, check)
        check.array("offsets", self.offsets, (out,))
        check.array("scales", self.scales, (out,))
        check(bool((self.scales >= 1).all()), "values below 1 (scales must be positive)",
              ".scales")
        return None

    def golden(self, x):
        return self.scales * preactivation(self, x) + self.offsets

    def logic(self, values):
        return [int(s) * z + int(o) for z, s, o in
                zip(preactivation_logic(self, values), self.scales, self.offsets)]

    def acc_bits(self):
        return signed_width(*self.score_bounds)

    def plan(self, fold, memory="block"):
        return self.multibase_plan(fold, memory)

    def figures(self, fold, memory="block"):
        plan = self.plan(fold, memory)
        # As the output layer's: the argmax unit looks at one class per cycle.
        depth = plan.depth + ARGMAX_DEPTH
        return self.multibase_figures(fold, memory, output=None,
                                      cycles=max(plan.cycles, self.classes + 1), depth=depth,
                                      latency=plan.cycles + depth + 1 + fold.pe + 2,
                                      out_count=1)

    def engine(self, fold, memory="block"):
        from ..gateware.argmax import ArgmaxUnit
        from ..gateware.glue import Pipeline
        fold = self.check_fold(fold)
        engine = self.matrix_engine(fold, memory)
        # The engine's accumulator is sum_mn c_mn p_mn, so z = 2 acc - F * sum(c): the
        # argmax unit's popcount over a fan-in of F * sum(c).
        argmax = ArgmaxUnit(scales=self.scales, offsets=self.offsets,
                            fan_in=self.weighted_fan_in, lanes=fold.pe,
                            pop_width=engine.plan.result_width)
        return Pipeline([engine, argmax])

    def notes(self):
        return (f"W{self.bases} on {self.input.bits} bases, "
                + ("scales all 1" if (self.scales == 1).all() else "per-class scales"))
