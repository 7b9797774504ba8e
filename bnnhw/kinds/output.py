"""``output``: binary inputs, integer class scores, and their argmax.

Input: a binary tensor taken as a vector of N values. Arrays: ``weights`` ``(classes, N)``
0/1, ``offsets`` ``(classes,)`` and positive ``scales`` ``(classes,)``. Scores:
``score_c = scales[c] * (2 * p_c - N) + offsets[c]`` with ``p_c = popcount(XNOR(x,
weights[c]))``; the network's class is their argmax, ties going to the lowest class index.
"""

from dataclasses import dataclass, replace

import numpy as np

from ..bits import xnor_popcount
from ..gateware.plan import (KEY_DEPTH, PATCHABLE_SCORE_WIDTH, is_patchable, MemoryPlan,
                              signed_width, tree_levels)
from ..tensor import Tensor
from .matrix import MatrixLayer, plan_for

__all__ = ["OutputLayer"]

# The argmax unit's stages: score, compare, update, combine, result.
ARGMAX_DEPTH = 5


@dataclass(frozen=True, eq=False)
class OutputLayer(MatrixLayer):
    """Output layer: integer class scores from XNOR-popcount, then argmax."""
    KIND = "output"
    ARRAYS = {"weights": "bits", "offsets": "int", "scales": "int"}
    PRODUCES_SCORES = True

    weights: np.ndarray      # (classes, in) uint8
    offsets: np.ndarray      # (classes,) int64
    scales: np.ndarray       # (classes,) int64, positive

    @property
    def classes(self):
        return self.fan_out

    @property
    def score_bounds(self):
        """Smallest and largest score any input can produce, as Python integers."""
        n = self.fan_in
        lo = min(-int(s) * n + int(o) for s, o in zip(self.scales, self.offsets))
        hi = max(int(s) * n + int(o) for s, o in zip(self.scales, self.offsets))
        return lo, hi

    def default_input(self):
        return Tensor.vector(self.weights.shape[1])

    def check(self, tensor, check):
        self.check_binary_input(tensor, check)
        out, _ = self.check_weights(tensor, check)
        check.array("offsets", self.offsets, (out,))
        check.array("scales", self.scales, (out,))
        check(bool((self.scales >= 1).all()), "values below 1 (scales must be positive)",
              ".scales")
        return None

    def golden(self, x):
        p = xnor_popcount(x, self.weights)
        return self.scales * (2 * p - self.fan_in) + self.offsets

    def logic(self, values):
        n = self.fan_in
        return [int(scale) * (2 * sum((b if w else ~b) for b, w in zip(values, row)) - n)
                + int(offset) for row, scale, offset in zip(self.weights, self.scales,
                                                            self.offsets)]

    def acc_bits(self):
        return signed_width(*self.score_bounds)

    def notes(self):
        return "scales all 1" if (self.scales == 1).all() else "per-class scales"

    def plan(self, fold, memory="block"):
        return plan_for(self, fold, memory)

    def figures(self, fold, memory="block"):
        plan = self.plan(fold, memory)
        # The argmax unit looks at one class per cycle, and hands each result over in a cycle.
        depth = tree_levels(fold.simd) + 3 + ARGMAX_DEPTH
        figures = self.matrix_figures(fold, memory, output=None,
                                      cycles=max(plan.cycles, self.classes + 1), depth=depth,
                                      latency=plan.cycles + depth + 1 + fold.pe + 2,
                                      out_count=1)
        if is_patchable(memory):
            # The argmax unit's class biases, in block RAM too.
            biases = MemoryPlan("biases", "thresholds", PATCHABLE_SCORE_WIDTH,
                                max(self.classes, KEY_DEPTH), "block", rom=True)
            figures = replace(figures, memories=figures.memories + (biases,))
        return figures

    def engine_options(self, fold, memory):
        return dict(weights=self.weights, pe=fold.pe, simd=fold.simd, memory=memory)

    def engine(self, fold, memory="block"):
        from ..gateware.argmax import ArgmaxUnit
        from ..gateware.glue import Pipeline
        fold = self.check_fold(fold)
        engine = self.matrix_engine(fold, memory)
        argmax = ArgmaxUnit(scales=self.scales, offsets=self.offsets, fan_in=self.fan_in,
                            lanes=fold.pe, pop_width=engine.plan.result_width,
                            patchable=is_patchable(memory))
        return Pipeline([engine, argmax])
