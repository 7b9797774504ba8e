"""``binarize``: an input stage that turns unsigned values (pixels) into bits by thresholds.

Input: an unsigned tensor ``(C, H, W)`` of ``bits``-bit values (the network's input). Array:
``thresholds`` ``(C,)`` in ``0 .. 2**bits`` (``0``: always 1, ``2**bits``: never). Output: the
binary tensor of the same shape, value ``(c, y, x)`` 1 (+1) iff the input value ``(c, y, x)``
is ``>= thresholds[c]``. This is how FINN's and Brevitas's TFC, SFC and LFC binarize their
pixels before the first binary layer (``sign(2 x - 1)`` on ``x`` in ``[0, 1]``, or a
standalone Thresholding node on the input): the float comparison folds into an integer
threshold on the pixel, one per channel.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import FoldingError
from ..gateware.plan import is_patchable
from ..tensor import Tensor
from .base import Figures, Layer

__all__ = ["BinarizeLayer"]


@dataclass(frozen=True, eq=False)
class BinarizeLayer(Layer):
    """Input stage: bit ``x >= thresholds[channel]`` for each unsigned value ``x``."""
    KIND = "binarize"
    ARRAYS = {"thresholds": "int"}
    FOLDING = ("simd",)

    thresholds: np.ndarray   # (C,) int64, 0..2**bits

    def check(self, tensor, check):
        check(tensor.encoding == "unsigned",
              f"a binarize layer takes unsigned values, not {tensor.describe()}")
        check.array("thresholds", self.thresholds, (tensor.channels,))
        check.range("thresholds", self.thresholds, 0, tensor.limit)
        return Tensor(*tensor.shape)

    def golden(self, x):
        x = np.asarray(x)
        channels = self.input.channels
        t = np.tile(np.asarray(self.thresholds, dtype=np.int64), x.shape[1] // channels)
        return (x >= t).astype(np.uint8)

    def logic(self, values):
        channels = self.input.channels
        return [value >= int(self.thresholds[n % channels]) for n, value in enumerate(values)]

    def notes(self):
        t = self.thresholds
        shown = ", ".join(map(str, t[:4])) + (", ..." if len(t) > 4 else "")
        return f"{self.input.bits}-bit values >= {shown}"

    def fold_dims(self):
        return {"simd": (self.input.size, "values")}

    def figures(self, fold, memory="block"):
        fold = self.check_fold(fold)
        if is_patchable(memory):
            raise FoldingError("a binarize layer compares with constants in the logic: it "
                               "cannot be built patchable")
        cycles = self.input.size // fold.simd
        # One comparison with a constant per value per beat.
        return Figures(kind=self.KIND, input=self.input, output=self.output, fold=fold,
                       cycles=cycles, depth=1, latency=1, in_count=fold.simd,
                       out_count=fold.simd,
                       logic={"adder_bits": fold.simd * self.input.bits, "stages": 1},
                       stream=lambda first_in, last_in: (first_in + 1, last_in + 1))

    def engine(self, fold, memory="block"):
        from ..gateware.binarize import Binarize
        fold = self.check_fold(fold)
        return Binarize(thresholds=[int(t) for t in self.thresholds], bits=self.input.bits,
                        simd=fold.simd)
