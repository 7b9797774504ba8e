"""``maxpool``: max-pooling of binary values, an OR over each window.

Input: a binary tensor ``(C, H, W)``. Parameter ``size`` (``p``): windows of ``p x p``, stride
``p``; rows and columns beyond the last whole window are dropped (torch's floor mode). Output:
``(C, H // p, W // p)`` binary, value ``(c, y, x)`` the maximum (the OR of the bits, as bit 1
is +1) of the input's rows ``p y .. p y + p - 1``, columns ``p x .. p x + p - 1``, channel
``c``. This is the pool of FINN's CNV, after the threshold: a pool before BatchNorm and sign
is a different operation (a channel with negative gamma would turn max into min) and is not
this kind.

Values of several bases (``bits = K``, from multi-base layers) are pooled base by base: bit
``n`` of the output is the OR of bit ``n`` over the window. As every base of a multi-base layer
is a monotone threshold of one pre-activation ``z``, these are the bases of the largest ``z``.
"""

from dataclasses import dataclass

import numpy as np

from ..gateware.plan import pool_plan
from ..tensor import Tensor
from .base import Figures, Layer

__all__ = ["MaxPoolLayer"]


@dataclass(frozen=True, eq=False)
class MaxPoolLayer(Layer):
    """Binary max-pool: OR over ``size x size`` windows, stride ``size``."""
    KIND = "maxpool"
    PARAMS = ("size",)
    FOLDING = ("simd",)

    size: int

    def check(self, tensor, check):
        check(tensor.encoding == "bipolar",
              f"a maxpool layer takes binary values, not {tensor.describe()}")
        size = self.size
        check(isinstance(size, int) and not isinstance(size, bool) and size >= 1,
              f"expected a positive integer, not {size!r}", ".size")
        check(size <= tensor.height and size <= tensor.width,
              f"a {size}x{size} pool does not fit the {tensor.height}x{tensor.width} input",
              ".size")
        return Tensor(tensor.channels, tensor.height // size, tensor.width // size, tensor.bits)

    def golden(self, x):
        c, h, w = self.input.shape
        p = self.size
        oh, ow = h // p, w // p
        x = np.asarray(x).reshape(len(x), h, w, c)[:, :oh * p, :ow * p]
        windows = x.reshape(len(x), oh, p, ow, p, c)
        if self.input.bits == 1:
            pooled = windows.max(axis=(2, 4))
        else:           # base by base: the OR of each bit
            pooled = np.bitwise_or.reduce(np.bitwise_or.reduce(windows, axis=4), axis=2)
        return pooled.reshape(len(x), -1).astype(np.asarray(x).dtype if self.input.bits > 1
                                                 else np.uint8)

    def logic(self, values):
        from amaranth import Cat
        c, h, w = self.input.shape
        p = self.size
        at = lambda y, x, ch: values[(y * w + x) * c + ch]
        bits = self.input.bits
        return [Cat(*(Cat(*(at(y * p + dy, x * p + dx, ch)[n] for dy in range(p)
                            for dx in range(p))).any() for n in range(bits)))
                for y in range(h // p) for x in range(w // p) for ch in range(c)]

    def notes(self):
        return f"{self.size}x{self.size} windows, stride {self.size}"

    def fold_dims(self):
        return {"simd": (self.input.channels, "channels")}

    def plan(self, fold):
        c, h, w = self.input.shape
        # Bases pool independently: a value of K bases is K channels of bits to the unit.
        bits = self.input.bits
        return pool_plan(height=h, width=w, channels=c * bits, size=self.size,
                         simd=fold.simd * bits, bits=1)

    def figures(self, fold, memory="block"):
        fold = self.check_fold(fold)
        plan = self.plan(fold)
        def stream(first_in, last_in):
            # A window's output leaves a cycle after its last input beat.
            row_time = (last_in - first_in) / plan.height
            return first_in + self.size * row_time + 1, last_in + 1

        return Figures(kind=self.KIND, input=self.input, output=self.output, fold=fold,
                       cycles=plan.reads, depth=1, latency=plan.reads + 1,
                       in_count=fold.simd, out_count=fold.simd, memories=plan.memories,
                       logic={"stages": 1}, stream=stream)

    def engine(self, fold, memory="block"):
        from ..gateware.pool import MaxPool
        fold = self.check_fold(fold)
        c, h, w = self.input.shape
        bits = self.input.bits
        return MaxPool(height=h, width=w, channels=c * bits, size=self.size,
                       simd=fold.simd * bits)
