"""``abc_conv``: a multi-base (ABC-Net) convolution with N-bit multi-threshold outputs.

Input: a tensor ``(C, H, W)`` of K-base bipolar values, or unsigned values (K = 1), as for
:mod:`bnnhw.kinds.abc`. Arrays: ``weights`` ``(M, O, kh, kw, C)`` 0/1 (M weight bases, each a
convolution's weights with a window's values in stream order: rows, columns, channels),
``coefficients`` ``(M, K)`` in ``1 .. 2**16`` and ``thresholds`` ``(O, N)`` in ``-Z .. Z + 1``,
``Z = kh * kw * C * (2**bits - 1 if unsigned else 1) * sum(c)``. Stride 1, no padding.
Output: ``(O, H - kh + 1, W - kw + 1)`` values of N bases; value ``(o, y, x)`` has bit ``n`` set
iff ``z >= thresholds[o, n]``, where ``z`` is the :mod:`~bnnhw.kinds.abc` pre-activation of
output channel ``o`` over ``window(y, x)`` (as for ``conv``). Each bit is monotone in ``z``, so
a max-pool of the bits (OR per base) is the bits of the largest ``z`` in the window.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..gateware.plan import multibase_plan, signed_width, window_plan
from ..tensor import Tensor
from .abc import (COEFFICIENT_LIMIT, MAX_BASES, input_bases, matrix_preactivation,
                  matrix_preactivation_logic, multibase_logic, value_bound)
from .conv import ConvLayer, windows

__all__ = ["MultiBaseConvLayer"]


@dataclass(frozen=True, eq=False)
class MultiBaseConvLayer(ConvLayer):
    """Multi-base convolution: M weight bases, K input bases, N output bases."""
    KIND = "abc_conv"
    ARRAYS = {"weights": "bits", "coefficients": "int", "thresholds": "int"}

    weights: np.ndarray        # (M, O, kh, kw, C) uint8, 1 = +1
    coefficients: np.ndarray   # (M, K) int64
    thresholds: np.ndarray     # (O, N) int64

    @property
    def bases(self):
        return self.weights.shape[0]

    @property
    def out_channels(self):
        return self.weights.shape[1]

    @property
    def kernel(self):
        return self.weights.shape[2:4]

    @property
    def fan_in(self):
        return int(np.prod(self.weights.shape[2:]))

    @property
    def matrix(self):
        """The weights as ``(M, O, kh * kw * C)`` matrices over a window's values."""
        return self.weights.reshape(self.bases, self.out_channels, -1)

    @property
    def out_bases(self):
        return self.thresholds.shape[1]

    def z_bound(self, tensor=None):
        tensor = self.input if tensor is None else tensor
        return (self.fan_in * value_bound(tensor)
                * sum(int(c) for c in np.ravel(self.coefficients)))

    def check(self, tensor, check):
        weights = self.weights
        check(hasattr(weights, "ndim") and weights.ndim == 5,
              f"expected a 5-D (weight bases, out channels, kernel rows, kernel columns, in "
              f"channels) array, not shape {getattr(weights, 'shape', type(weights).__name__)}",
              ".weights")
        bases, out, kh, kw, channels = weights.shape
        check(1 <= bases <= MAX_BASES, f"{bases} weight bases; expected 1..{MAX_BASES}",
              ".weights")
        check(out >= 1 and kh >= 1 and kw >= 1, f"shape {weights.shape} has an empty axis",
              ".weights")
        check(channels == tensor.channels, f"{channels} input channels, but the tensor it "
                                           f"takes ({tensor.describe()}) has "
                                           f"{tensor.channels}", ".weights")
        check(kh <= tensor.height and kw <= tensor.width,
              f"a {kh}x{kw} kernel does not fit the {tensor.height}x{tensor.width} input",
              ".weights")
        check.array("weights", weights, weights.shape, binary=True)
        check.array("coefficients", self.coefficients, (bases, input_bases(tensor)))
        check.range("coefficients", self.coefficients, 1, COEFFICIENT_LIMIT)
        t = self.thresholds
        check(hasattr(t, "ndim") and t.ndim == 2 and t.shape[0] == out
              and 1 <= t.shape[1] <= MAX_BASES,
              f"shape {getattr(t, 'shape', type(t).__name__)} does not match the expected "
              f"({out}, N) with N output bases in 1..{MAX_BASES}", ".thresholds")
        check.array("thresholds", t, t.shape)
        bound = self.z_bound(tensor)
        check.range("thresholds", t, -bound, bound + 1)
        return Tensor(out, tensor.height - kh + 1, tensor.width - kw + 1, t.shape[1])

    def golden(self, x):
        c, h, w = self.input.shape
        kh, kw = self.kernel
        values = np.empty((len(x), (h - kh + 1) * (w - kw + 1) * self.out_channels),
                          np.uint8 if self.out_bases <= 8 else np.uint16)
        shifts = np.arange(self.out_bases)
        for start, stop, rows in windows(x, self.input, kh, kw):
            z = matrix_preactivation(self.matrix, self.coefficients, self.input, rows)
            bits = (z[:, :, None] >= self.thresholds[None]).astype(np.int64)
            values[start:stop] = (bits << shifts).sum(axis=-1).reshape(stop - start, -1)
        return values

    def logic(self, values):
        from amaranth import Cat
        return [Cat(*(z >= int(t) for t in row))
                for window in self.window_logic(values)
                for z, row in zip(matrix_preactivation_logic(self.matrix, self.coefficients,
                                                             self.input, window),
                                  self.thresholds)]

    def acc_bits(self):
        bound = self.z_bound()
        return signed_width(-bound, bound)

    def notes(self):
        kh, kw = self.kernel
        return f"{kh}x{kw} kernel, W{self.bases}A{self.out_bases}"

    # ---- hardware ------------------------------------------------------------------------

    def engine_options(self, fold, memory):
        tensor = self.input
        return dict(weights=self.matrix, coefficients=self.coefficients,
                    thresholds=self.thresholds, pe=fold.pe, simd=fold.simd, memory=memory,
                    in_bits=tensor.bits if tensor.encoding == "unsigned" else None)

    def memory_words(self, fold, name):
        from ..gateware.weights import multibase_words
        if name != "weights":
            raise ValueError(f"a {self.KIND} layer has no memory {name!r} with words to load")
        return multibase_words(self.matrix, fold.pe, fold.simd)

    def plans(self, fold, memory="block"):
        c, h, w = self.input.shape
        kh, kw = self.kernel
        tensor = self.input
        window = window_plan(height=h, width=w, channels=c, kh=kh, kw=kw, simd=fold.simd,
                             bits=tensor.bits, memory=memory)
        unsigned = tensor.encoding == "unsigned"
        matrix = multibase_plan(
            mh=self.out_channels, mw=self.fan_in, pe=fold.pe, simd=fold.simd,
            coefficients=self.coefficients, in_bits=tensor.bits if unsigned else None,
            thresholds=self.thresholds, memory=memory,
            weight_zeros=self.fan_in - self.matrix.sum(axis=2) if unsigned else None)
        return window, matrix

    def figures(self, fold, memory="block"):
        figures = super().figures(fold, memory)
        _, matrix = self.plans(figures.fold, memory)
        return dataclasses.replace(figures, logic=multibase_logic(matrix, self.input,
                                                                  figures.fold, stages=2))
