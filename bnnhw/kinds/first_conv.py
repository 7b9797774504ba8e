"""``first_conv``: a convolution on unsigned multi-bit inputs (pixels) with binary weights.

Input: an unsigned tensor ``(C, H, W)`` of ``in_bits``-bit values (the network's input image).
Arrays as for ``conv``: ``weights`` ``(O, kh, kw, C)`` 0/1 and ``thresholds`` ``(O,)``, here
in ``-A .. A + 1`` with ``A = kh * kw * C * (2**in_bits - 1)``. Stride 1, no padding. Output:
``(O, H - kh + 1, W - kw + 1)`` binary; value ``(o, y, x)`` is 1 iff
``sum_i w_oi v_i >= thresholds[o]`` over the window's values ``v`` with ``w`` in {-1, +1}.
"""

from dataclasses import dataclass

import numpy as np

from ..bits import bipolar_dot
from ..gateware.plan import signed_width
from .conv import ConvLayer, windows

__all__ = ["FirstConvLayer"]


@dataclass(frozen=True, eq=False)
class FirstConvLayer(ConvLayer):
    """Convolution over unsigned ``in_bits``-bit inputs, binary weights, integer thresholds."""
    KIND = "first_conv"
    PARAMS = ("in_bits",)

    weights: np.ndarray      # (O, kh, kw, C) uint8, 1 = +1
    thresholds: np.ndarray   # (O,) int64
    in_bits: int

    @property
    def acc_bound(self):
        """Largest ``|acc|`` the layer can produce: ``kh * kw * C * (2**in_bits - 1)``."""
        return self.fan_in * ((1 << self.in_bits) - 1)

    def check_input(self, tensor, check):
        check(tensor.encoding == "unsigned",
              f"a {self.KIND} layer takes unsigned values, not {tensor.describe()}")
        check(isinstance(self.in_bits, int) and not isinstance(self.in_bits, bool)
              and self.in_bits == tensor.bits,
              f"{self.in_bits!r} differs from the {tensor.bits} bits of the values it takes",
              ".in_bits")

    def threshold_range(self, tensor):
        bound = self.fan_in * ((1 << tensor.bits) - 1)
        return -bound, bound + 1

    def window_rows(self, x):
        kh, kw = self.kernel
        return windows(x, self.input, kh, kw)

    def dot(self, rows):
        return bipolar_dot(rows, self.matrix)

    def logic(self, values):
        return [sum((v if wt else -v) for v, wt in zip(window, row)) >= int(t)
                for window in self.window_logic(values)
                for row, t in zip(self.matrix, self.thresholds)]

    def acc_bits(self):
        return signed_width(-self.acc_bound, self.acc_bound + 1)

    def engine_options(self, fold, memory):
        return dict(weights=self.matrix, thresholds=self.thresholds, in_bits=self.in_bits,
                    pe=fold.pe, simd=fold.simd, memory=memory)
