"""``dense``: a binary fully connected layer (XNOR, popcount, threshold).

Input: a binary tensor of any shape, taken as a vector of N values in stream order
(:mod:`bnnhw.tensor`). Arrays: ``weights`` ``(out, N)`` 0/1 and ``thresholds`` ``(out,)`` in
``0 .. N + 1``. Output: ``(out, 1, 1)`` binary, bit ``j`` set iff
``popcount(XNOR(x, weights[j])) >= thresholds[j]`` (0: always 1, ``N + 1``: never). BatchNorm,
bias, the XNOR-Net scale and ``sign`` fold into the threshold; a neuron whose BatchNorm gamma
was negative is stored with its weight row inverted, so every neuron uses ``>=``.
"""

from dataclasses import dataclass

import numpy as np

from ..bits import xnor_popcount
from ..tensor import Tensor
from .matrix import MatrixLayer, plan_for

__all__ = ["DenseLayer"]


@dataclass(frozen=True, eq=False)
class DenseLayer(MatrixLayer):
    """Binary dense layer: XNOR, popcount, compare with a per-neuron threshold."""
    KIND = "dense"
    ARRAYS = {"weights": "bits", "thresholds": "int"}

    weights: np.ndarray      # (out, in) uint8, 1 = +1
    thresholds: np.ndarray   # (out,) int64, 0..in+1

    def default_input(self):
        return Tensor.vector(self.weights.shape[1])

    def check(self, tensor, check):
        self.check_binary_input(tensor, check)
        out, width = self.check_weights(tensor, check)
        check.array("thresholds", self.thresholds, (out,))
        check.range("thresholds", self.thresholds, 0, width + 1)
        return Tensor.vector(out)

    def golden(self, x):
        return (xnor_popcount(x, self.weights) >= self.thresholds).astype(np.uint8)

    def logic(self, values):
        return [sum((b if w else ~b) for b, w in zip(values, row)) >= int(t)
                for row, t in zip(self.weights, self.thresholds)]

    def acc_bits(self):
        return (self.fan_in + 1).bit_length()

    def notes(self):
        t = self.thresholds
        return f"{int((t == 0).sum() + (t > self.fan_in).sum())} constant neurons"

    def plan(self, fold, memory="block"):
        return plan_for(self, fold, memory, thresholds=self.thresholds)

    def figures(self, fold, memory="block"):
        return self.matrix_figures(fold, memory, output=self.output)

    def engine_options(self, fold, memory):
        return dict(weights=self.weights, thresholds=self.thresholds, pe=fold.pe,
                    simd=fold.simd, memory=memory)

    def engine(self, fold, memory="block"):
        return self.matrix_engine(self.check_fold(fold), memory)
